/* `sagemesh demo`: the main job, end to end, on one machine.
 *
 * Starts a mesh of three real peers as child processes (this same binary,
 * one cluster secret): the first bootstraps the mesh, the other two join
 * it, and the demo waits until the three are voters with one leader and
 * shows `sagemesh members list`. It then streams an hour of the
 * simulator's `social` application over OTLP/HTTP (event time, so the hour
 * takes seconds), each simulated host's telemetry to a peer of its own
 * (--ingest routed): spans go to the peer owning their trace, the leader
 * merges every peer's part of each window and replicates the window; the
 * leader runs a training round over the shard owners and every peer
 * installs the committed model;
 * injects a CPU hog into one service, and shows the diagnoses the way an
 * operator sees them, as served by a different peer: diagnoses are
 * committed through the mesh's raft log and every peer serves the same
 * list. It checks the answer against the injected ground truth: exit 0
 * only when the culprit service and resource are right and the three
 * peers stop with exit 0 on SIGTERM (each is killed if it does not stop).
 * Their data and logs are kept. */
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

#define DEMO_START_S  1700028000 /* the simulator's default start */
#define CLEAN_S       3600       /* normal traffic before the fault */
#define FAULT_RUN_S   660        /* the second run, holding the fault */
#define FAULT_AT_S    240        /* into the second run */
#define FAULT_FOR_S   300
#define TRAIN_AFTER   120 /* windows of 30 s: the clean hour */
#define STR_(x)       #x
#define STR(x)        STR_(x)
#define TRAIN_AFTER_S STR(TRAIN_AFTER)
#define CULPRIT       "compose-post"
#define CULPRIT_RES   "cpu"
#define MAGNITUDE     "1.5"
#define WAIT_MODEL_S  240
#define WAIT_DIAG_S   60
#define STOP_GRACE_S  10
#define WAIT_MESH_S   20
#define WAIT_COPY_S   10
#define PEERS         3

struct demo_peer
{
    char id[16];   /* demo-N */
    char http[64]; /* 127.0.0.1:PORT */
    int mesh_port;
    char log[300], data[300];
    pid_t pid;
};

struct demo
{
    char dir[256];
    char secret[300];
    struct demo_peer p[PEERS];
    int leader; /* index in p[]: it merges windows and diagnoses them */
    int shown;  /* a follower, whose diagnoses are shown */
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

/* The value of "KEY=" on @line as a number, 0 when absent. */
static int field(const char *line, const char *key)
{
    const char *at = strstr(line, key);
    return at != NULL ? atoi(at + strlen(key)) : 0;
}

/* Starts `sagemesh peer` (this executable) in the background as peer @i;
 * peers after the first join the first one's mesh port. */
static int start_peer(struct demo *d, int i)
{
    struct demo_peer *p = &d->p[i];
    char join[64];
    snprintf(join, sizeof join, "127.0.0.1:%d", d->p[0].mesh_port);
    char *argv[] = {
        "sagemesh",
        "peer",
        "--id",
        p->id,
        "--listen-http",
        "127.0.0.1:0",
        "--listen-peer",
        "127.0.0.1:0",
        "--data-dir",
        p->data,
        "--secret-file",
        d->secret,
        "--qos-service",
        "nginx-web",
        "--qos-target-ms",
        "100",
        "--train-after",
        TRAIN_AFTER_S,
        "--retrain-every",
        "0",
        "--ingest",
        "routed",
        "--log-file",
        p->log,
        i > 0 ? "--join" : NULL,
        join,
        NULL,
    };
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY,
                                     0);
    posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null", O_WRONLY,
                                     0);
    int rv = posix_spawn(&p->pid, "/proc/self/exe", &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rv != 0) {
        fprintf(d->err, "sagemesh demo: cannot start %s: %s\n", p->id,
                strerror(rv));
        p->pid = 0;
        return -1;
    }
    /* The peer logs the ports it bound once it serves ("peer started ...
     * id=ID ... http_port=N peer_port=M"). */
    char tag[32];
    snprintf(tag, sizeof tag, "id=%s ", p->id);
    for (double end = now_s() + 15; now_s() < end;) {
        FILE *f = fopen(p->log, "r");
        char line[2048];
        int port = 0, mesh_port = 0;
        while (f != NULL && fgets(line, sizeof line, f) != NULL) {
            if (strstr(line, "msg=\"peer started\"") != NULL &&
                strstr(line, tag) != NULL) {
                port = field(line, "http_port=");
                mesh_port = field(line, "peer_port=");
            }
        }
        if (f != NULL) {
            fclose(f);
        }
        if (port > 0 && mesh_port > 0) {
            snprintf(p->http, sizeof p->http, "127.0.0.1:%d", port);
            p->mesh_port = mesh_port;
            return 0;
        }
        int status;
        if (waitpid(p->pid, &status, WNOHANG) == p->pid) {
            p->pid = 0;
            fprintf(d->err, "sagemesh demo: %s exited at start; see %s\n",
                    p->id, p->log);
            return -1;
        }
        nap_ms(50);
    }
    fprintf(d->err, "sagemesh demo: %s did not start in 15 s; see %s\n", p->id,
            p->log);
    return -1;
}

/* Stops every peer started: SIGTERM to all, then each must exit 0 within
 * STOP_GRACE_S (else SIGKILL). Returns 0 when all exited 0, as they must. */
static int stop_peers(struct demo *d)
{
    double t0 = now_s();
    for (int i = 0; i < PEERS; i++) {
        if (d->p[i].pid > 0) {
            kill(d->p[i].pid, SIGTERM);
        }
    }
    int bad = 0, stopped = 0;
    for (int i = 0; i < PEERS; i++) {
        struct demo_peer *p = &d->p[i];
        if (p->pid <= 0) {
            continue;
        }
        int status = 0, killed = 0;
        while (waitpid(p->pid, &status, WNOHANG) == 0) {
            if (now_s() - t0 > STOP_GRACE_S) {
                kill(p->pid, SIGKILL);
                waitpid(p->pid, &status, 0);
                killed = 1;
                break;
            }
            nap_ms(20);
        }
        p->pid = 0;
        if (killed) {
            fprintf(d->err,
                    "sagemesh demo: %s did not stop within %d s of SIGTERM; "
                    "killed it\n",
                    p->id, STOP_GRACE_S);
            bad = 1;
        } else if (WIFSIGNALED(status) || WEXITSTATUS(status) != 0) {
            fprintf(
                d->err,
                "sagemesh demo: %s ended badly on SIGTERM (%s %d); see "
                "%s\n",
                p->id, WIFSIGNALED(status) ? "signal" : "exit status",
                WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status),
                p->log);
            bad = 1;
        } else {
            stopped++;
        }
    }
    if (stopped > 0 && !bad) {
        fprintf(d->out,
                "Stopped the %d peers with SIGTERM in %.1f s (each exited "
                "0).\n",
                stopped, now_s() - t0);
    }
    return bad ? -1 : 0;
}

/* Figures of GET /v1/status the demo waits on. */
struct figures
{
    uint64_t windows_stored, model_version, rounds_finished;
    uint64_t diagnoses_stored, diagnoses_pending;
    double last_round_s;
    uint64_t last_round_windows;
    int last_round_ok;
    uint64_t windows_merged, spans_out; /* --ingest routed */
    /* The mesh. */
    char role[16], leader[32];
    size_t members, voters;
};

static uint64_t u64_at(const struct node_json *obj, const char *key)
{
    uint64_t v = 0;
    node_json_u64(node_json_get(obj, key), &v);
    return v;
}

static void str_at(const struct node_json *obj,
                   const char *key,
                   char *out,
                   size_t cap)
{
    const char *v = node_json_str(node_json_get(obj, key));
    snprintf(out, cap, "%s", v != NULL ? v : "");
}

/* GET /v1/status of @p into @f. */
static int get_figures(struct demo *d,
                       const struct demo_peer *p,
                       struct figures *f)
{
    struct node_client_response r = {0, NULL, 0};
    char msg[SM_ERRMSG_SIZE];
    if (node_client_request(p->http, "GET", "/v1/status", NULL, NULL, 0, 5, &r,
                            msg) != SM_OK) {
        fprintf(d->err, "sagemesh demo: %s: %s\n", p->id, msg);
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
        fprintf(d->err, "sagemesh demo: bad /v1/status answer from %s\n",
                p->id);
        return -1;
    }
    const struct node_json *model = node_json_get(root, "model");
    const struct node_json *diags = node_json_get(root, "diagnoses");
    const struct node_json *last = node_json_get(model, "last_round");
    memset(f, 0, sizeof *f);
    f->windows_stored = u64_at(node_json_get(root, "windows"), "stored");
    f->windows_merged = u64_at(node_json_get(root, "merge"), "windows_merged");
    f->spans_out = u64_at(node_json_get(root, "routing"), "spans_out");
    f->model_version = u64_at(model, "version");
    f->rounds_finished = u64_at(model, "rounds_finished");
    f->diagnoses_stored = u64_at(diags, "stored");
    f->diagnoses_pending = u64_at(diags, "pending");
    const struct node_json *ok = node_json_get(last, "ok");
    f->last_round_ok = ok != NULL && ok->type == NODE_JSON_BOOL && ok->boolean;
    node_json_double(node_json_get(last, "seconds"), &f->last_round_s);
    f->last_round_windows = u64_at(last, "windows");
    str_at(root, "role", f->role, sizeof f->role);
    str_at(root, "leader", f->leader, sizeof f->leader);
    const struct node_json *members =
        node_json_get(node_json_get(root, "mesh"), "members");
    for (size_t i = 0;
         members != NULL && members->type == NODE_JSON_ARRAY && i < members->n;
         i++) {
        const char *role =
            node_json_str(node_json_get(&members->items[i], "role"));
        f->members++;
        f->voters += role != NULL && strcmp(role, "voter") == 0;
    }
    sm_arena_free(&arena);
    return 0;
}

/* Streams @duration_s of simulated time from @start_s, with @faults, each
 * simulated host's telemetry to one of the peers (host N to peer N mod 3),
 * as each host's collector would send it to the peer on its host. */
static int stream(struct demo *d,
                  uint64_t start_s,
                  unsigned duration_s,
                  const char *faults,
                  FILE *quiet)
{
    char start[32], duration[32];
    snprintf(start, sizeof start, "%" PRIu64, start_s);
    snprintf(duration, sizeof duration, "%u", duration_s);
    char *argv[] = {"sim",        "--topology", "social",       "--duration",
                    duration,     "--start",    start,          "--sampling",
                    "0.1",        "--faults",   (char *)faults, "--peer",
                    d->p[0].http, "--peer",     d->p[1].http,   "--peer",
                    d->p[2].http, "--timeout",  "30",           NULL};
    return node__cmd_sim(19, argv, quiet, d->err);
}

/* `sagemesh flush` against a follower: every peer closes its open windows
 * and the leader merges them. */
static int flush(struct demo *d, FILE *quiet)
{
    char *argv[] = {"flush",
                    "--peer",
                    d->p[d->shown].http,
                    "--secret-file",
                    d->secret,
                    "--timeout",
                    "30",
                    NULL};
    return node__cmd_flush(7, argv, quiet, d->err);
}

/* Counts the diagnoses @p serves naming @service/@resource first, over @n. */
static int check_diagnoses(struct demo *d,
                           const struct demo_peer *p,
                           size_t *right,
                           size_t *n)
{
    struct node_client_response r = {0, NULL, 0};
    char msg[SM_ERRMSG_SIZE];
    *right = *n = 0;
    if (node_client_request(p->http, "GET", "/v1/diagnoses?limit=1000", NULL,
                            NULL, 0, 5, &r, msg) != SM_OK) {
        fprintf(d->err, "sagemesh demo: %s: %s\n", p->id, msg);
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
    for (int i = 0; i < PEERS; i++) {
        struct demo_peer *p = &d->p[i];
        snprintf(p->id, sizeof p->id, "demo-%d", i + 1);
        snprintf(p->log, sizeof p->log, "%s/demo-%d.log", d->dir, i + 1);
        snprintf(p->data, sizeof p->data, "%s/demo-%d", d->dir, i + 1);
    }
    return 0;
}

/* Waits until each of the three peers sees three voters and one leader
 * that all of them name; sets d->leader and d->shown (a follower: it has
 * the diagnoses only through the replicated log). */
static int wait_mesh(struct demo *d)
{
    double t0 = now_s();
    while (now_s() - t0 < WAIT_MESH_S) {
        struct figures f[PEERS];
        int ok = 1, leaders = 0, leader = -1;
        for (int i = 0; i < PEERS && ok; i++) {
            ok = get_figures(d, &d->p[i], &f[i]) == 0;
        }
        if (!ok) {
            return -1;
        }
        for (int i = 0; i < PEERS; i++) {
            ok &= f[i].members == PEERS && f[i].voters == PEERS &&
                  f[i].leader[0] != '\0' &&
                  strcmp(f[i].leader, f[0].leader) == 0;
            if (strcmp(f[i].role, "leader") == 0) {
                leaders++;
                leader = i;
            } else {
                ok &= strcmp(f[i].role, "follower") == 0;
            }
        }
        if (ok && leaders == 1 && strcmp(f[0].leader, d->p[leader].id) == 0) {
            d->leader = leader;
            d->shown = leader == 0 ? 1 : 0;
            return 0;
        }
        nap_ms(100);
    }
    fprintf(d->err,
            "sagemesh demo: the peers did not become 3 voters with one "
            "leader in %d s; see %s/demo-*.log\n",
            WAIT_MESH_S, d->dir);
    return -1;
}

/* Until the leader has merged @windows windows in all: the parts of the
 * last ones cross the network after the flush. */
static int wait_merged(struct demo *d, uint64_t windows, struct figures *f)
{
    double t0 = now_s();
    while (now_s() - t0 < WAIT_DIAG_S) {
        if (get_figures(d, &d->p[d->leader], f) != 0) {
            return -1;
        }
        if (f->windows_merged >= windows) {
            return 0;
        }
        nap_ms(100);
    }
    fprintf(d->err,
            "sagemesh demo: %s merged %" PRIu64 " windows of %" PRIu64
            " after %d s; see %s\n",
            d->p[d->leader].id, f->windows_merged, windows, WAIT_DIAG_S,
            d->p[d->leader].log);
    return -1;
}

static int wait_model(struct demo *d, struct figures *f)
{
    const struct demo_peer *p = &d->p[d->leader];
    double t0 = now_s();
    while (now_s() - t0 < WAIT_MODEL_S) {
        if (get_figures(d, p, f) != 0) {
            return -1;
        }
        if (f->model_version > 0) {
            return 0;
        }
        if (f->rounds_finished > 0) {
            fprintf(d->err, "sagemesh demo: training failed; see %s\n", p->log);
            return -1;
        }
        nap_ms(200);
    }
    fprintf(d->err, "sagemesh demo: no model after %d s; see %s\n",
            WAIT_MODEL_S, p->log);
    return -1;
}

/* Until the leader has no diagnosis pending: each is diagnosed and seen in
 * its copy of the mesh's log. */
static int wait_diagnoses(struct demo *d, struct figures *f)
{
    double t0 = now_s();
    while (now_s() - t0 < WAIT_DIAG_S) {
        if (get_figures(d, &d->p[d->leader], f) != 0) {
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

/* Until the shown peer serves as many diagnoses as the leader made
 * (replication reaches a follower with the next heartbeat). */
static int wait_copied(struct demo *d, size_t made, size_t *right, size_t *n)
{
    double t0 = now_s();
    while (now_s() - t0 < WAIT_COPY_S) {
        if (check_diagnoses(d, &d->p[d->shown], right, n) != 0) {
            return -1;
        }
        if (*n >= made) {
            return 0;
        }
        nap_ms(100);
    }
    fprintf(d->err,
            "sagemesh demo: %s serves %zu diagnoses, %s made %zu, after "
            "%d s\n",
            d->p[d->shown].id, *n, d->p[d->leader].id, made, WAIT_COPY_S);
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
    for (int i = 0; i < PEERS; i++) {
        if (start_peer(d, i) != 0) {
            return NODE_EXIT_FAILED;
        }
    }
    if (wait_mesh(d) != 0) {
        return NODE_EXIT_FAILED;
    }
    const struct demo_peer *lp = &d->p[d->leader], *sp = &d->p[d->shown];
    fprintf(out,
            "[1/6] Started a mesh of three peers (pids %d, %d, %d; one "
            "cluster secret):\n      %s bootstrapped it, %s and %s joined "
            "it;\n      %s is the leader (%.1f s). QoS is the p99 latency "
            "of nginx-web,\n      target 100 ms, windows of 30 s.\n\n"
            "$ sagemesh members list --peer %s\n",
            (int)d->p[0].pid, (int)d->p[1].pid, (int)d->p[2].pid, d->p[0].id,
            d->p[1].id, d->p[2].id, d->p[d->leader].id, now_s() - t0,
            d->p[d->leader].http);
    fflush(out);
    char *members[] = {"members", "list", "--peer", d->p[d->leader].http, NULL};
    if (node__cmd_members(4, members, out, d->err) != NODE_EXIT_OK) {
        return NODE_EXIT_FAILED;
    }
    fprintf(out,
            "\n[2/6] Streaming 1 h of normal traffic of the simulated "
            "'social' application\n      (28 services on 4 hosts, ~200 "
            "requests/s, 10%% of traces sampled,\n      cAdvisor and blackbox "
            "metrics) as OTLP/HTTP JSON in event time, each\n      host's "
            "telemetry to a peer of its own (--ingest routed): spans go to\n"
            "      the peer owning their trace, and the leader %s merges the "
            "three\n      peers' parts of each window...\n",
            lp->id);
    fflush(out);
    struct figures f;
    uint64_t spans_out = 0;
    if (stream(d, DEMO_START_S, CLEAN_S, "none", quiet) != NODE_EXIT_OK ||
        flush(d, quiet) != NODE_EXIT_OK ||
        wait_merged(d, CLEAN_S / 30, &f) != 0) {
        return NODE_EXIT_FAILED;
    }
    for (int i = 0; i < PEERS; i++) {
        struct figures pf;
        if (get_figures(d, &d->p[i], &pf) != 0) {
            return NODE_EXIT_FAILED;
        }
        spans_out += pf.spans_out;
    }
    fprintf(out,
            "      %" PRIu64 " windows merged and stored on %s; %" PRIu64
            " spans crossed to\n      the peer owning their trace (%.0f s "
            "so far).\n",
            f.windows_merged, lp->id, spans_out, now_s() - t0);
    fprintf(out,
            "[3/6] Training the model (one conditional VAE per service): "
            "once %d windows\n      are held, the leader runs a round, "
            "each peer trains the shards it owns,\n      and every peer "
            "installs the model version the leader commits...\n",
            TRAIN_AFTER);
    fflush(out);
    if (wait_model(d, &f) != 0) {
        return NODE_EXIT_FAILED;
    }
    fprintf(out,
            "      model v%" PRIu64 " on %s, trained on %" PRIu64 " windows.\n",
            f.model_version, lp->id, f.last_round_windows);
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
            "[4/6] Injecting a fault: a CPU hog next to %s (its requests "
            "compute %.1fx\n      longer) from %s for %d min, and "
            "streaming 11 more\n      minutes, host by host...\n",
            CULPRIT, 1 + atof(MAGNITUDE), when, FAULT_FOR_S / 60);
    fflush(out);
    if (stream(d, DEMO_START_S + CLEAN_S, FAULT_RUN_S, faults, quiet) !=
            NODE_EXIT_OK ||
        flush(d, quiet) != NODE_EXIT_OK ||
        wait_merged(d, (CLEAN_S + FAULT_RUN_S) / 30, &f) != 0 ||
        wait_diagnoses(d, &f) != 0) {
        return NODE_EXIT_FAILED;
    }
    size_t right = 0, n = 0;
    if (wait_copied(d, f.diagnoses_stored, &right, &n) != 0) {
        return NODE_EXIT_FAILED;
    }
    fprintf(out,
            "[5/6] %s, the leader, diagnosed %" PRIu64
            " violated windows and committed "
            "them to the mesh's log.\n[6/6] What the operator sees, asking "
            "another peer (%s):\n\n$ sagemesh diagnoses --peer %s --limit "
            "5\n",
            lp->id, f.diagnoses_stored, sp->id, sp->http);
    fflush(out);
    char *diag[] = {"diagnoses", "--peer", (char *)sp->http,
                    "--limit",   "5",      NULL};
    int rv = node__cmd_diagnoses(5, diag, out, d->err);
    fflush(out);
    if (rv != NODE_EXIT_OK) {
        return NODE_EXIT_FAILED;
    }
    fprintf(out,
            "\nGround truth: %s, %s, from %s for %d min. %zu of the %zu "
            "diagnoses %s serves\nname it first.\n",
            CULPRIT, CULPRIT_RES, when, FAULT_FOR_S / 60, right, n, sp->id);
    fprintf(out,
            "The whole demo took %.0f s. The peers logged every step to "
            "%s/demo-N.log;\ntheir windows, models, raft logs and diagnoses "
            "are in %s/demo-N.\n",
            now_s() - t0, d->dir, d->dir);
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
            "sagemesh demo: a mesh of three peers, a simulated microservice "
            "application and\nan injected fault, end to end. Data and logs "
            "go to %s.\n\n",
            d.dir);
    FILE *quiet = fopen("/dev/null", "w");
    if (quiet == NULL) {
        fprintf(err, "sagemesh demo: cannot open /dev/null\n");
        return NODE_EXIT_FAILED;
    }
    int rv = run(&d, quiet);
    if (stop_peers(&d) != 0) {
        rv = NODE_EXIT_FAILED;
    }
    fclose(quiet);
    if (rv != NODE_EXIT_OK) {
        fprintf(err,
                "sagemesh demo: failed; the peers' logs are %s/demo-N.log\n",
                d.dir);
    }
    return rv;
}
