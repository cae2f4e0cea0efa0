/* `sagemesh demo`: the main job, end to end, on one machine.
 *
 * Starts a real peer as a child process (this same binary), streams an
 * hour of the simulator's `social` application to it over OTLP/HTTP (event
 * time, so the hour takes seconds), lets it train its model, injects a CPU
 * hog into one service, and shows the diagnoses the way an operator sees
 * them, with the commands an operator would type. It checks the answer
 * against the injected ground truth: exit 0 only when the culprit service
 * and resource are right. The peer is stopped at the end (SIGTERM, then
 * SIGKILL if it does not stop); its data and log are kept. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base/arena.h"
#include "node/cli.h"
#include "node/cli_client.h"
#include "node/client.h"
#include "node/json.h"
#include "node/node.h"
#include "node/sim.h"

extern char **environ;

#define DEMO_START_S 1700028000 /* the simulator's default start */
#define CLEAN_S      3600       /* normal traffic before the fault */
#define FAULT_RUN_S  660        /* the second run, holding the fault */
#define FAULT_AT_S   240        /* into the second run */
#define FAULT_FOR_S  300
#define TRAIN_AFTER  120 /* windows of 30 s: the clean hour */
#define CULPRIT      "compose-post"
#define CULPRIT_RES  "cpu"
#define MAGNITUDE    "1.5"
#define WAIT_MODEL_S 240
#define WAIT_DIAG_S  60
#define STOP_GRACE_S 10

struct demo
{
    char dir[256];
    char peer[64]; /* 127.0.0.1:PORT */
    char secret[300], log[300], data[300];
    pid_t pid;
    FILE *out, *err;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void nap_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Starts `sagemesh peer` (this executable) in the background. */
static int start_peer(struct demo *d)
{
    char *argv[] = {
        "sagemesh",
        "peer",
        "--id",
        "demo-1",
        "--listen-http",
        "127.0.0.1:0",
        "--listen-peer",
        "127.0.0.1:0",
        "--data-dir",
        d->data,
        "--secret-file",
        d->secret,
        "--qos-service",
        "nginx-web",
        "--qos-target-ms",
        "100",
        "--train-after",
        "120",
        "--retrain-every",
        "0",
        "--log-file",
        d->log,
        NULL,
    };
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY,
                                     0);
    posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null", O_WRONLY,
                                     0);
    int rv = posix_spawn(&d->pid, "/proc/self/exe", &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rv != 0) {
        fprintf(d->err, "sagemesh demo: cannot start the peer: %s\n",
                strerror(rv));
        d->pid = 0;
        return -1;
    }
    /* The peer logs the port it bound ("http_port=N") once it serves. */
    for (double end = now_s() + 15; now_s() < end;) {
        FILE *f = fopen(d->log, "r");
        char line[2048];
        int port = 0;
        while (f != NULL && fgets(line, sizeof line, f) != NULL) {
            const char *at = strstr(line, "http_port=");
            if (at != NULL && strstr(line, "id=demo-1") != NULL) {
                port = atoi(at + 10);
            }
        }
        if (f != NULL) {
            fclose(f);
        }
        if (port > 0) {
            snprintf(d->peer, sizeof d->peer, "127.0.0.1:%d", port);
            return 0;
        }
        int status;
        if (waitpid(d->pid, &status, WNOHANG) == d->pid) {
            d->pid = 0;
            fprintf(d->err, "sagemesh demo: the peer exited at start; see %s\n",
                    d->log);
            return -1;
        }
        nap_ms(50);
    }
    fprintf(d->err, "sagemesh demo: the peer did not start in 15 s; see %s\n",
            d->log);
    return -1;
}

/* Stops the peer: SIGTERM, then SIGKILL after STOP_GRACE_S. Returns 0
 * when it exited 0 on SIGTERM, as it must. */
static int stop_peer(struct demo *d)
{
    if (d->pid <= 0) {
        return 0;
    }
    kill(d->pid, SIGTERM);
    double t0 = now_s();
    int status = 0, killed = 0;
    while (waitpid(d->pid, &status, WNOHANG) == 0) {
        if (now_s() - t0 > STOP_GRACE_S) {
            kill(d->pid, SIGKILL);
            waitpid(d->pid, &status, 0);
            killed = 1;
            break;
        }
        nap_ms(20);
    }
    d->pid = 0;
    if (killed) {
        fprintf(d->err,
                "sagemesh demo: the peer did not stop within %d s of "
                "SIGTERM; killed it\n",
                STOP_GRACE_S);
        return -1;
    }
    if (WIFSIGNALED(status) || WEXITSTATUS(status) != 0) {
        fprintf(d->err,
                "sagemesh demo: the peer ended badly on SIGTERM (%s %d); "
                "see %s\n",
                WIFSIGNALED(status) ? "signal" : "exit status",
                WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status),
                d->log);
        return -1;
    }
    fprintf(d->out, "Stopped the peer with SIGTERM in %.1f s (exit 0).\n",
            now_s() - t0);
    return 0;
}

/* Figures of GET /v1/status the demo waits on. */
struct figures
{
    uint64_t windows_stored, model_version, rounds_finished;
    uint64_t diagnoses_stored, diagnoses_pending;
    double last_round_s;
    uint64_t last_round_windows;
    int last_round_ok;
};

static uint64_t u64_at(const struct node_json *obj, const char *key)
{
    uint64_t v = 0;
    node_json_u64(node_json_get(obj, key), &v);
    return v;
}

static int get_figures(struct demo *d, struct figures *f)
{
    struct node_client_response r = {0, NULL, 0};
    char msg[SM_ERRMSG_SIZE];
    if (node_client_request(d->peer, "GET", "/v1/status", NULL, NULL, 0, 5, &r,
                            msg) != SM_OK) {
        fprintf(d->err, "sagemesh demo: %s\n", msg);
        return -1;
    }
    struct sm_arena arena;
    sm_arena_init(&arena, 16u << 20);
    const struct node_json *root;
    int rv = r.status == 200 ? node_json_parse((const uint8_t *)r.body, r.len,
                                               &arena, &root, msg)
                             : SM_EMALFORMED;
    free(r.body);
    if (rv != SM_OK) {
        sm_arena_free(&arena);
        fprintf(d->err, "sagemesh demo: bad /v1/status answer\n");
        return -1;
    }
    const struct node_json *model = node_json_get(root, "model");
    const struct node_json *diags = node_json_get(root, "diagnoses");
    const struct node_json *last = node_json_get(model, "last_round");
    memset(f, 0, sizeof *f);
    f->windows_stored = u64_at(node_json_get(root, "windows"), "stored");
    f->model_version = u64_at(model, "version");
    f->rounds_finished = u64_at(model, "rounds_finished");
    f->diagnoses_stored = u64_at(diags, "stored");
    f->diagnoses_pending = u64_at(diags, "pending");
    const struct node_json *ok = node_json_get(last, "ok");
    f->last_round_ok = ok != NULL && ok->type == NODE_JSON_BOOL && ok->boolean;
    node_json_double(node_json_get(last, "seconds"), &f->last_round_s);
    f->last_round_windows = u64_at(last, "windows");
    sm_arena_free(&arena);
    return 0;
}

/* Streams @duration_s of simulated time from @start_s, with @faults. */
static int stream(struct demo *d,
                  uint64_t start_s,
                  unsigned duration_s,
                  const char *faults,
                  FILE *quiet)
{
    char start[32], duration[32];
    snprintf(start, sizeof start, "%" PRIu64, start_s);
    snprintf(duration, sizeof duration, "%u", duration_s);
    char *argv[] = {"sim",    "--topology", "social",       "--duration",
                    duration, "--start",    start,          "--sampling",
                    "0.1",    "--faults",   (char *)faults, "--peer",
                    d->peer,  "--timeout",  "30",           NULL};
    return node__cmd_sim(15, argv, quiet, d->err);
}

static int flush(struct demo *d, FILE *quiet)
{
    char *argv[] = {"flush",   "--peer",    d->peer, "--secret-file",
                    d->secret, "--timeout", "30",    NULL};
    return node__cmd_flush(7, argv, quiet, d->err);
}

/* Counts the diagnoses naming @service/@resource first, over @n. */
static int check_diagnoses(struct demo *d, size_t *right, size_t *n)
{
    struct node_client_response r = {0, NULL, 0};
    char msg[SM_ERRMSG_SIZE];
    *right = *n = 0;
    if (node_client_request(d->peer, "GET", "/v1/diagnoses?limit=1000", NULL,
                            NULL, 0, 5, &r, msg) != SM_OK) {
        fprintf(d->err, "sagemesh demo: %s\n", msg);
        return -1;
    }
    struct sm_arena arena;
    sm_arena_init(&arena, 64u << 20);
    const struct node_json *root;
    int rv =
        node_json_parse((const uint8_t *)r.body, r.len, &arena, &root, msg);
    free(r.body);
    const struct node_json *list =
        rv == SM_OK ? node_json_get(root, "diagnoses") : NULL;
    for (size_t i = 0; list != NULL && i < list->n; i++) {
        const struct node_json *c = node_json_get(&list->items[i], "culprits");
        const char *svc = NULL, *res = NULL;
        if (c != NULL && c->type == NODE_JSON_ARRAY && c->n > 0) {
            svc = node_json_str(node_json_get(&c->items[0], "service"));
            res = node_json_str(node_json_get(&c->items[0], "resource"));
        }
        (*n)++;
        *right += svc != NULL && res != NULL && strcmp(svc, CULPRIT) == 0 &&
                  strcmp(res, CULPRIT_RES) == 0;
    }
    sm_arena_free(&arena);
    return list != NULL ? 0 : -1;
}

/* Whether @dir holds nothing but . and .. (unreadable counts as not). */
static int is_empty_dir(const char *dir)
{
    DIR *dp = opendir(dir);
    if (dp == NULL) {
        return 0;
    }
    struct dirent *e;
    int empty = 1;
    while (empty && (e = readdir(dp)) != NULL) {
        empty = strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0;
    }
    closedir(dp);
    return empty;
}

static int make_dirs(struct demo *d, const char *dir)
{
    if (dir != NULL) {
        if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
            fprintf(d->err, "sagemesh demo: cannot create %s: %s\n", dir,
                    strerror(errno));
            return -1;
        }
        snprintf(d->dir, sizeof d->dir, "%s", dir);
        if (!is_empty_dir(dir)) {
            fprintf(d->err,
                    "sagemesh demo: --dir %s is not empty (a previous "
                    "demo?); remove it or choose another\n",
                    dir);
            return -1;
        }
    } else {
        const char *tmp = getenv("TMPDIR");
        snprintf(d->dir, sizeof d->dir, "%s/sagemesh-demo-XXXXXX",
                 tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp");
        if (mkdtemp(d->dir) == NULL) {
            fprintf(d->err, "sagemesh demo: cannot create %s: %s\n", d->dir,
                    strerror(errno));
            return -1;
        }
    }
    snprintf(d->secret, sizeof d->secret, "%s/secret", d->dir);
    snprintf(d->log, sizeof d->log, "%s/peer.log", d->dir);
    snprintf(d->data, sizeof d->data, "%s/data", d->dir);
    return 0;
}

static int wait_model(struct demo *d, struct figures *f)
{
    double t0 = now_s();
    while (now_s() - t0 < WAIT_MODEL_S) {
        if (get_figures(d, f) != 0) {
            return -1;
        }
        if (f->model_version > 0) {
            return 0;
        }
        if (f->rounds_finished > 0) {
            fprintf(d->err, "sagemesh demo: training failed; see %s\n", d->log);
            return -1;
        }
        nap_ms(200);
    }
    fprintf(d->err, "sagemesh demo: no model after %d s; see %s\n",
            WAIT_MODEL_S, d->log);
    return -1;
}

static int wait_diagnoses(struct demo *d, struct figures *f)
{
    double t0 = now_s();
    while (now_s() - t0 < WAIT_DIAG_S) {
        if (get_figures(d, f) != 0) {
            return -1;
        }
        if (f->diagnoses_pending == 0) {
            return 0;
        }
        nap_ms(100);
    }
    fprintf(d->err, "sagemesh demo: diagnoses still pending after %d s\n",
            WAIT_DIAG_S);
    return -1;
}

static int run(struct demo *d, FILE *quiet)
{
    FILE *out = d->out;
    double t0 = now_s();
    char *keygen[] = {"keygen", "--out", d->secret, NULL};
    if (node__cmd_keygen(3, keygen, quiet, quiet) != NODE_EXIT_OK) {
        fprintf(d->err, "sagemesh demo: cannot write a secret to %s\n",
                d->secret);
        return NODE_EXIT_FAILED;
    }
    if (start_peer(d) != 0) {
        return NODE_EXIT_FAILED;
    }
    fprintf(out,
            "[1/5] Started a peer on %s (pid %d): QoS is the p99 latency of "
            "nginx-web,\n      target 100 ms, windows of 30 s.\n",
            d->peer, (int)d->pid);
    fprintf(out,
            "[2/5] Streaming 1 h of normal traffic of the simulated 'social' "
            "application\n      (28 services, ~200 requests/s, 10%% of traces "
            "sampled, cAdvisor and\n      blackbox metrics) as OTLP/HTTP JSON "
            "in event time...\n");
    fflush(out);
    struct figures f;
    if (stream(d, DEMO_START_S, CLEAN_S, "none", quiet) != NODE_EXIT_OK ||
        flush(d, quiet) != NODE_EXIT_OK || get_figures(d, &f) != 0) {
        return NODE_EXIT_FAILED;
    }
    fprintf(out, "      %" PRIu64 " windows stored (%.0f s so far).\n",
            f.windows_stored, now_s() - t0);
    fprintf(out,
            "[3/5] Training the model (one conditional VAE per service, "
            "automatically once\n      %d windows are held)...\n",
            TRAIN_AFTER);
    fflush(out);
    if (wait_model(d, &f) != 0) {
        return NODE_EXIT_FAILED;
    }
    fprintf(out,
            "      model v%" PRIu64 " trained on %" PRIu64
            " windows in %.1f s.\n",
            f.model_version, f.last_round_windows, f.last_round_s);
    char faults[320];
    snprintf(faults, sizeof faults, "%s/faults.txt", d->dir);
    FILE *ff = fopen(faults, "w");
    if (ff == NULL) {
        fprintf(d->err, "sagemesh demo: cannot write %s: %s\n", faults,
                strerror(errno));
        return NODE_EXIT_FAILED;
    }
    fprintf(ff, "at=%d for=%d kind=cpu service=%s magnitude=%s\n", FAULT_AT_S,
            FAULT_FOR_S, CULPRIT, MAGNITUDE);
    fclose(ff);
    uint64_t fault_start = DEMO_START_S + CLEAN_S + FAULT_AT_S;
    char when[64];
    time_t ft = (time_t)fault_start;
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", gmtime(&ft));
    fprintf(out,
            "[4/5] Injecting a fault: a CPU hog next to %s (its requests "
            "compute %.1fx\n      longer) from %s for %d min, and "
            "streaming 11 more minutes...\n",
            CULPRIT, 1 + atof(MAGNITUDE), when, FAULT_FOR_S / 60);
    fflush(out);
    if (stream(d, DEMO_START_S + CLEAN_S, FAULT_RUN_S, faults, quiet) !=
            NODE_EXIT_OK ||
        flush(d, quiet) != NODE_EXIT_OK || wait_diagnoses(d, &f) != 0) {
        return NODE_EXIT_FAILED;
    }
    fprintf(out,
            "[5/5] What the operator sees:\n\n$ sagemesh diagnoses --peer %s "
            "--limit 5\n",
            d->peer);
    fflush(out);
    char *diag[] = {"diagnoses", "--peer", d->peer, "--limit", "5", NULL};
    int rv = node__cmd_diagnoses(5, diag, out, d->err);
    fflush(out);
    size_t right = 0, n = 0;
    if (rv != NODE_EXIT_OK || check_diagnoses(d, &right, &n) != 0) {
        return NODE_EXIT_FAILED;
    }
    fprintf(out,
            "\nGround truth: %s, %s, from %s for %d min. %zu of %zu "
            "diagnoses name it first.\n",
            CULPRIT, CULPRIT_RES, when, FAULT_FOR_S / 60, right, n);
    fprintf(out,
            "The whole demo took %.0f s. The peer logged every step to "
            "%s;\nits windows, model and diagnoses are in %s (they survive a "
            "restart:\n'sagemesh peer --data-dir %s ...' picks them up).\n",
            now_s() - t0, d->log, d->data, d->data);
    /* Most violated windows must be diagnosed right; the first and last
     * ones of a fault are partly normal and may be ambiguous. */
    if (n == 0 || right * 2 < n) {
        fprintf(d->err,
                "sagemesh demo: the diagnoses do not name the injected "
                "fault\n");
        return NODE_EXIT_FAILED;
    }
    return NODE_EXIT_OK;
}

int node__cmd_demo(int argc, char **argv, FILE *out, FILE *err)
{
    static const struct option options[] = {
        {"dir", required_argument, NULL, 'd'},
        {NULL, 0, NULL, 0},
    };
    const char *dir = NULL;
    optind = 0;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "", options, NULL)) != -1) {
        if (c == 'd') {
            dir = optarg;
        } else {
            fprintf(err,
                    "sagemesh demo: unknown or incomplete option '%s'; see "
                    "'sagemesh demo --help'\n",
                    argv[optind - 1]);
            return NODE_EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(err, "sagemesh demo: unexpected argument '%s'\n", argv[optind]);
        return NODE_EXIT_USAGE;
    }
    struct demo d = {.out = out, .err = err};
    if (make_dirs(&d, dir) != 0) {
        return NODE_EXIT_FAILED;
    }
    fprintf(out,
            "sagemesh demo: a peer, a simulated microservice application and "
            "an injected\nfault, end to end. Data and logs go to %s.\n\n",
            d.dir);
    FILE *quiet = fopen("/dev/null", "w");
    if (quiet == NULL) {
        fprintf(err, "sagemesh demo: cannot open /dev/null\n");
        return NODE_EXIT_FAILED;
    }
    int rv = run(&d, quiet);
    if (stop_peer(&d) != 0) {
        rv = NODE_EXIT_FAILED;
    }
    fclose(quiet);
    if (rv != NODE_EXIT_OK) {
        fprintf(err, "sagemesh demo: failed; the peer's log is %s\n", d.log);
    }
    return rv;
}
