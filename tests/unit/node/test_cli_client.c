/* Tests for the client commands against a canned peer: an HTTP server on
 * 127.0.0.1 (its own thread and loop) that answers fixed bodies per path
 * and checks the credentials of mutating calls. Covers a peer that is
 * down, 401, table and JSON output, train --wait and diagnose polling, and
 * usage errors. The only sleeps are the commands' own bounded polls. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "check.h"
#include "node/cli_client.h"
#include "node/client.h"
#include "node/http.h"
#include "node/node.h"
#include "transport/transport.h"

/* ---- The canned peer --------------------------------------------------- */

#define MAX_ROUTES 16
#define MAX_BODIES 4

/* Answers @method @target (path and query) with @status and the bodies in
 * turn, repeating the last one. */
struct route
{
    const char *method;
    const char *target;
    int status;
    const char *bodies[MAX_BODIES];
    int hits;
};

static uv_mutex_t mu; /* guards everything below, shared with the server */
static struct route routes[MAX_ROUTES];
static int n_routes;
static struct tp_secret secret;
static int auth_ok, auth_bad; /* credentials checked */
static char posted[512];      /* the last POST body */

static uv_loop_t loop;
static uv_async_t stop_async;
static uv_thread_t thread;
static struct node_http_server *server;
static char peer[32]; /* "127.0.0.1:PORT" */

static void add_route(const char *method,
                      const char *target,
                      int status,
                      const char *b0,
                      const char *b1)
{
    uv_mutex_lock(&mu);
    REQUIRE(n_routes < MAX_ROUTES);
    routes[n_routes++] = (struct route){method, target, status, {b0, b1}, 0};
    uv_mutex_unlock(&mu);
}

static int hits(const char *target)
{
    uv_mutex_lock(&mu);
    int n = 0;
    for (int i = 0; i < n_routes; i++) {
        if (strcmp(routes[i].target, target) == 0) {
            n += routes[i].hits;
        }
    }
    uv_mutex_unlock(&mu);
    return n;
}

static void handle(void *arg,
                   const struct node_http_request *req,
                   struct node_http_response *res)
{
    (void)arg;
    char target[256];
    snprintf(target, sizeof target, "%s%s%s", req->path,
             req->query[0] ? "?" : "", req->query);
    uv_mutex_lock(&mu);
    res->status = 404;
    res->body = "{\"error\":\"no such route\"}";
    if (strcmp(req->method, "POST") == 0) {
        snprintf(posted, sizeof posted, "%.*s", (int)req->body_len,
                 req->body ? (const char *)req->body : "");
    }
    if (strcmp(req->method, "POST") == 0 &&
        (strcmp(req->path, "/v1/train") == 0 ||
         strcmp(req->path, "/v1/flush") == 0)) {
        uint8_t mac[TP_MAC_SIZE];
        const char *why = "";
        if (tp_credential_verify(&secret, req->method, req->path,
                                 req->authorization, (uint64_t)time(NULL), 60,
                                 req->body, req->body_len, mac,
                                 &why) != SM_OK) {
            auth_bad++;
            res->status = 401;
            res->body = "{\"error\":\"credential refused\"}";
            res->body_len = strlen(res->body);
            uv_mutex_unlock(&mu);
            return;
        }
        auth_ok++;
    }
    for (int i = 0; i < n_routes; i++) {
        struct route *r = &routes[i];
        if (strcmp(r->method, req->method) == 0 &&
            strcmp(r->target, target) == 0) {
            int k = r->hits < MAX_BODIES ? r->hits : MAX_BODIES - 1;
            while (k > 0 && r->bodies[k] == NULL) {
                k--;
            }
            r->hits++;
            res->status = r->status;
            res->body = r->bodies[k];
            break;
        }
    }
    res->body_len = strlen(res->body);
    uv_mutex_unlock(&mu);
}

static void on_server_closed(void *arg)
{
    (void)arg;
    uv_close((uv_handle_t *)&stop_async, NULL);
}

static void on_stop(uv_async_t *async)
{
    (void)async;
    node_http_server_close(server, on_server_closed, NULL);
}

static void serve(void *arg)
{
    (void)arg;
    uv_run(&loop, UV_RUN_DEFAULT);
}

/* Writes a secret file (mode 0600) and returns its path (static buffer
 * per @name). */
static const char *secret_file(const char *name, const struct tp_secret *s)
{
    static char paths[2][512];
    char *path = paths[strcmp(name, "good") == 0 ? 0 : 1];
    snprintf(path, 512, "%s/%s", check_tmpdir(), name);
    char hex[TP_SECRET_HEX_SIZE];
    tp_secret_format(s, hex);
    FILE *f = fopen(path, "w");
    REQUIRE(f != NULL);
    fputs(hex, f);
    fclose(f);
    chmod(path, 0600);
    return path;
}

static const char *good_secret, *wrong_secret;

static void setup(void)
{
    unsetenv("SAGEMESH_PEER");
    unsetenv("SAGEMESH_SECRET_FILE");
    REQUIRE_OK(tp_init());
    REQUIRE(uv_mutex_init(&mu) == 0);
    n_routes = 0;
    auth_ok = auth_bad = 0;
    posted[0] = '\0';
    tp_secret_generate(&secret);
    good_secret = secret_file("good", &secret);
    struct tp_secret other;
    tp_secret_generate(&other);
    wrong_secret = secret_file("wrong", &other);

    REQUIRE(uv_loop_init(&loop) == 0);
    REQUIRE(uv_async_init(&loop, &stop_async, on_stop) == 0);
    char err[SM_ERRMSG_SIZE];
    REQUIRE_OK(node_http_server_start(&loop, "127.0.0.1", 0, NULL, handle, NULL,
                                      &server, err));
    snprintf(peer, sizeof peer, "127.0.0.1:%d", node_http_server_port(server));
    REQUIRE(uv_thread_create(&thread, serve, NULL) == 0);
}

static char *out_text, *err_text;

static void teardown(void)
{
    uv_async_send(&stop_async);
    uv_thread_join(&thread);
    CHECK_EQ(uv_loop_close(&loop), 0);
    uv_mutex_destroy(&mu);
    free(out_text);
    free(err_text);
    out_text = err_text = NULL;
    unsetenv("SAGEMESH_PEER");
    unsetenv("SAGEMESH_SECRET_FILE");
}

/* ---- Running commands -------------------------------------------------- */

typedef int (*command_fn)(int argc, char **argv, FILE *out, FILE *err);

/* Runs @cmd with the arguments after it (NULL-terminated), capturing its
 * output and diagnostics. */
static int run(command_fn cmd, const char *first, ...)
{
    char *argv[24];
    int argc = 0;
    va_list ap;
    va_start(ap, first);
    for (const char *a = first; a != NULL && argc < 23;
         a = va_arg(ap, const char *)) {
        argv[argc++] = (char *)a;
    }
    va_end(ap);
    argv[argc] = NULL;
    free(out_text);
    free(err_text);
    size_t out_len, err_len;
    FILE *out = open_memstream(&out_text, &out_len);
    FILE *err = open_memstream(&err_text, &err_len);
    REQUIRE(out != NULL && err != NULL);
    int rc = cmd(argc, argv, out, err);
    fclose(out);
    fclose(err);
    return rc;
}

static int has(const char *text, const char *needle)
{
    if (strstr(text, needle) != NULL) {
        return 1;
    }
    printf("# no \"%s\" in:\n# %s\n", needle, text);
    return 0;
}

/* ---- Bodies ------------------------------------------------------------ */

#define STATUS_HEAD                                                        \
    "{\"id\":\"web-1\", \"version\":\"0.1.0\", \"ready\":%s, "             \
    "\"role\":\"standalone\", \"windows\":{\"open\":2, \"closed\":310, "   \
    "\"stored\":310, \"replayed\":0, "                                     \
    "\"newest_end_unix_nano\":\"1700037300000000000\"}, "                  \
    "\"qos\":{\"service\":\"nginx-web\", \"operation\":null, "             \
    "\"percentile\":99, \"target_ms\":200, \"last_latency_ms\":151.2, "    \
    "\"last_violated\":false}, \"cbn\":{\"version\":3, \"nodes\":[]}, "    \
    "\"model\":{\"version\":%d, \"params\":709760, \"loaded\":false, "     \
    "\"training\":%s, \"rounds_ok\":%d, \"rounds_failed\":%d, "            \
    "\"rounds_finished\":%d, \"windows\":310, \"windows_new\":70, "        \
    "\"train_after\":240, \"retrain_every\":240, \"last_round\":%s}, "     \
    "\"diagnoses\":{\"stored\":4, \"ok\":4, \"failed\":0, \"dropped\":0, " \
    "\"pending\":0}}"

static char status_v2[2048], status_running[2048], status_v3[2048],
    status_failed[2048], status_unready[2048];

static void make_status_bodies(void)
{
    const char *round2 =
        "{\"ok\":true, \"error\":null, \"mode\":\"incremental\", "
        "\"seconds\":6.2, \"windows\":310, \"val_loss\":1.9, "
        "\"model_version\":2}";
    const char *round3 =
        "{\"ok\":true, \"error\":null, \"mode\":\"full\", "
        "\"seconds\":12.5, \"windows\":320, \"val_loss\":1.7, "
        "\"model_version\":3}";
    const char *failed =
        "{\"ok\":false, \"error\":\"too few windows for a full round\", "
        "\"mode\":\"full\", \"seconds\":0.5, \"windows\":null, "
        "\"val_loss\":null, \"model_version\":null}";
    snprintf(status_v2, sizeof status_v2, STATUS_HEAD, "true", 2, "false", 2, 0,
             2, round2);
    snprintf(status_running, sizeof status_running, STATUS_HEAD, "true", 2,
             "true", 2, 0, 2, round2);
    snprintf(status_v3, sizeof status_v3, STATUS_HEAD, "true", 3, "false", 3, 0,
             3, round3);
    snprintf(status_failed, sizeof status_failed, STATUS_HEAD, "true", 2,
             "false", 2, 1, 3, failed);
    snprintf(status_unready, sizeof status_unready, STATUS_HEAD, "false", 0,
             "false", 0, 0, 0, "null");
}

static const char diagnoses_body[] =
    "{\"diagnoses\":[{\"id\":\"0000018bd2a9e6c0\", "
    "\"window_start_unix_nano\":\"1700037270000000000\", "
    "\"window_end_unix_nano\":\"1700037300000000000\", "
    "\"service\":\"nginx-web\", \"operation\":null, \"percentile\":99, "
    "\"latency_ms\":512.3, \"target_ms\":200.0, \"violated\":true, "
    "\"culprits\":[{\"service\":\"user-mongodb\", \"resource\":\"cpu\", "
    "\"p_qos_met\":0.97, \"effect_ms\":301.5}], "
    "\"ranking\":[{\"service\":\"user-mongodb\", \"score\":0.97, "
    "\"effect_ms\":301.5, \"p_qos_met\":0.97, \"evidence\":8.1}], "
    "\"path\":[\"user-mongodb\", \"user-service\", \"nginx-web\"], "
    "\"unseen\":[], \"model_version\":12, \"decided_by\":\"web-1\", "
    "\"decided_unix_nano\":\"1700037301000000000\", \"diagnosis_ms\":4.2, "
    "\"action\":null}]}";

static const char services_body[] =
    "{\"cbn_version\":3, \"services\":[{\"name\":\"user-mongodb\", "
    "\"node\":\"user-mongodb\", \"inferred\":false, "
    "\"callers\":[\"user-service\"], \"callees\":[]}]}\n";

/* ---- Tests ------------------------------------------------------------- */

static void test_peer_down(void)
{
    /* A bound socket that does not listen: connecting is refused. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    REQUIRE(bind(fd, (struct sockaddr *)&a, sizeof a) == 0);
    REQUIRE(getsockname(fd, (struct sockaddr *)&a, &len) == 0);
    char down[32], expect[160];
    snprintf(down, sizeof down, "127.0.0.1:%d", ntohs(a.sin_port));
    snprintf(expect, sizeof expect,
             "sagemesh status: cannot reach the peer at %s: connection "
             "refused (is 'sagemesh peer' running? set --peer or "
             "SAGEMESH_PEER)\n",
             down);
    CHECK_EQ(run(node__cmd_status, "status", "--peer", down, NULL),
             NODE_EXIT_FAILED);
    CHECK_STR(err_text, expect);
    CHECK_STR(out_text, "");
    CHECK_EQ(run(node__cmd_diagnoses, "diagnoses", "--peer", down, NULL),
             NODE_EXIT_FAILED);
    CHECK(has(err_text, "sagemesh diagnoses: cannot reach the peer at"));
    CHECK_EQ(run(node__cmd_train, "train", "--wait", "--peer", down,
                 "--secret-file", good_secret, NULL),
             NODE_EXIT_FAILED);
    CHECK(has(err_text, "connection refused"));
    /* The same through SAGEMESH_PEER. */
    setenv("SAGEMESH_PEER", down, 1);
    CHECK_EQ(run(node__cmd_services, "services", "list", NULL),
             NODE_EXIT_FAILED);
    CHECK(has(err_text, down));
    close(fd);
}

static void test_status(void)
{
    make_status_bodies();
    add_route("GET", "/v1/status", 200, status_v2, NULL);
    CHECK_EQ(run(node__cmd_status, "status", "--peer", peer, NULL),
             NODE_EXIT_OK);
    CHECK(has(out_text, "peer        web-1 (sagemesh 0.1.0, standalone)\n"));
    CHECK(has(out_text, "next round  after 170 more windows\n"));
    CHECK_STR(err_text, "");

    /* JSON: the body as received, newline-terminated. */
    CHECK_EQ(
        run(node__cmd_status, "status", "--peer", peer, "-o", "json", NULL),
        NODE_EXIT_OK);
    char expect[2100];
    snprintf(expect, sizeof expect, "%s\n", status_v2);
    CHECK_STR(out_text, expect);
    CHECK_EQ(run(node__cmd_status, "status", "-ojson", "--peer", peer, NULL),
             NODE_EXIT_OK);
    CHECK_STR(out_text, expect);

    /* SAGEMESH_PEER is the default; --output is -o. */
    setenv("SAGEMESH_PEER", peer, 1);
    CHECK_EQ(run(node__cmd_status, "status", "--output", "table", NULL),
             NODE_EXIT_OK);
    CHECK(has(out_text, "ready       yes\n"));
    CHECK_EQ(hits("/v1/status"), 4);
}

static void test_status_unready_and_broken(void)
{
    make_status_bodies();
    add_route("GET", "/v1/status", 200, status_unready, "{\"id\":5}");
    CHECK_EQ(run(node__cmd_status, "status", "--peer", peer, NULL),
             NODE_EXIT_FAILED);
    CHECK(has(out_text, "ready       no"));
    CHECK(has(err_text, "is not ready"));
    /* A body that breaks the contract: an error, not a crash. */
    CHECK_EQ(run(node__cmd_status, "status", "--peer", peer, NULL),
             NODE_EXIT_FAILED);
    CHECK_STR(out_text, "");
    CHECK(has(err_text,
              "does not understand: id: expected a string, got a "
              "number (see it with -o json)"));
}

static void test_services_and_diagnoses(void)
{
    add_route("GET", "/v1/services", 200, services_body, NULL);
    add_route("GET", "/v1/diagnoses", 200, diagnoses_body, NULL);
    add_route("GET", "/v1/diagnoses?limit=5", 200, "{\"diagnoses\":[]}", NULL);
    CHECK_EQ(run(node__cmd_services, "services", "list", "--peer", peer, NULL),
             NODE_EXIT_OK);
    CHECK(has(out_text,
              "SERVICE       NODE          CALLERS       CALLEES\n"
              "user-mongodb  user-mongodb  user-service  -\n"));
    CHECK_EQ(run(node__cmd_services, "services", "--peer", peer, "list", "-o",
                 "json", NULL),
             NODE_EXIT_OK);
    CHECK_STR(out_text, services_body); /* already ends in a newline */

    CHECK_EQ(run(node__cmd_diagnoses, "diagnoses", "--peer", peer, NULL),
             NODE_EXIT_OK);
    CHECK(has(out_text,
              "2023-11-15T08:35:00Z  user-mongodb  cpu       0.97  "
              "      512.3 / 200 ms    12     user-mongodb -> "
              "user-service -> nginx-web\n"));
    CHECK_EQ(run(node__cmd_diagnoses, "diagnoses", "--limit", "5", "--peer",
                 peer, NULL),
             NODE_EXIT_OK);
    CHECK(has(out_text, "no diagnoses yet"));
    CHECK_EQ(hits("/v1/diagnoses?limit=5"), 1);
    CHECK_EQ(run(node__cmd_diagnoses, "diagnoses", "--peer", peer, "-o", "json",
                 NULL),
             NODE_EXIT_OK);
    CHECK(strncmp(out_text, diagnoses_body, strlen(diagnoses_body)) == 0);
    CHECK_STR(out_text + strlen(diagnoses_body), "\n");

    /* Through the command table. */
    char *argv[] = {"sagemesh", "services", "list", "--peer", peer, NULL};
    FILE *null_out = fopen("/dev/null", "w");
    REQUIRE(null_out != NULL);
    CHECK_EQ(node_main(5, argv, null_out, null_out), NODE_EXIT_OK);
    fclose(null_out);
}

static void test_http_errors(void)
{
    add_route("GET", "/v1/status", 401, "{\"error\":\"who are you\"}", NULL);
    add_route("GET", "/v1/diagnoses", 503, "Service Unavailable", NULL);
    CHECK_EQ(run(node__cmd_status, "status", "--peer", peer, NULL),
             NODE_EXIT_FAILED);
    CHECK(has(err_text, "(401: who are you): the cluster secret is missing"));
    CHECK_EQ(run(node__cmd_diagnoses, "diagnoses", "--peer", peer, NULL),
             NODE_EXIT_FAILED);
    CHECK(has(err_text,
              "answered 503 to GET /v1/diagnoses: Service "
              "Unavailable\n"));
    /* No route: 404 from the canned peer. */
    CHECK_EQ(run(node__cmd_services, "services", "list", "--peer", peer, NULL),
             NODE_EXIT_FAILED);
    CHECK(has(err_text,
              "does not serve GET /v1/services (404: no such "
              "route)"));
}

static void test_train(void)
{
    make_status_bodies();
    add_route("POST", "/v1/train", 202,
              "{\"model_version\":2, \"wait_for_rounds\":3}", NULL);
    CHECK_EQ(run(node__cmd_train, "train", "--peer", peer, "--secret-file",
                 good_secret, NULL),
             NODE_EXIT_OK);
    CHECK_STR(out_text, "training round requested (model version 2 now)\n");
    CHECK_EQ(auth_ok, 1);
    CHECK_EQ(hits("/v1/status"), 0);

    setenv("SAGEMESH_SECRET_FILE", good_secret, 1);
    CHECK_EQ(run(node__cmd_train, "train", "--peer", peer, "-o", "json", NULL),
             NODE_EXIT_OK);
    CHECK_STR(out_text, "{\"model_version\":2, \"wait_for_rounds\":3}\n");
    CHECK_EQ(auth_ok, 2);

    /* A wrong secret: 401, and the message says what to check. */
    CHECK_EQ(run(node__cmd_train, "train", "--peer", peer, "--secret-file",
                 wrong_secret, NULL),
             NODE_EXIT_FAILED);
    CHECK_EQ(auth_bad, 1);
    CHECK(has(err_text,
              "refused the credential for POST /v1/train (401: "
              "credential refused): the cluster secret in "));
    CHECK(has(err_text, wrong_secret));
    CHECK_STR(out_text, "");
}

static void test_train_wait(void)
{
    make_status_bodies();
    add_route("POST", "/v1/train", 202,
              "{\"model_version\":2, \"wait_for_rounds\":3}", NULL);
    add_route("GET", "/v1/status", 200, status_running, status_v3);
    CHECK_EQ(run(node__cmd_train, "train", "--wait", "--peer", peer,
                 "--secret-file", good_secret, NULL),
             NODE_EXIT_OK);
    CHECK_STR(out_text,
              "training round finished: model version 3 (full, 12.5 s, 320 "
              "windows, validation loss 1.7)\n");
    CHECK_STR(err_text, "");
    CHECK_EQ(hits("/v1/status"), 2);

    /* JSON: the final status as received. */
    CHECK_EQ(run(node__cmd_train, "train", "--wait", "-o", "json", "--peer",
                 peer, "--secret-file", good_secret, NULL),
             NODE_EXIT_OK);
    char expect[2100];
    snprintf(expect, sizeof expect, "%s\n", status_v3);
    CHECK_STR(out_text, expect);
}

static void test_train_wait_failure_and_timeout(void)
{
    make_status_bodies();
    add_route("POST", "/v1/train", 202,
              "{\"model_version\":2, \"wait_for_rounds\":3}", NULL);
    add_route("GET", "/v1/status", 200, status_failed, NULL);
    CHECK_EQ(run(node__cmd_train, "train", "--wait", "--peer", peer,
                 "--secret-file", good_secret, NULL),
             NODE_EXIT_FAILED);
    CHECK_STR(out_text,
              "training round failed after 0.5 s: too few windows for a full "
              "round\n");

    /* The round never finishes: --timeout bounds the wait. */
    uv_mutex_lock(&mu);
    routes[1].bodies[0] = status_running;
    uv_mutex_unlock(&mu);
    CHECK_EQ(run(node__cmd_train, "train", "--wait", "--timeout", "0.4",
                 "--peer", peer, "--secret-file", good_secret, NULL),
             NODE_EXIT_FAILED);
    CHECK(has(err_text,
              "the round has not finished within --timeout 0.4 s "
              "(2 of 3 rounds finished)"));
    CHECK(hits("/v1/status") >= 2);

    /* 409: too few windows. */
    uv_mutex_lock(&mu);
    routes[0].status = 409;
    routes[0].bodies[0] = "{\"error\":\"too few windows (3 < 8)\"}";
    uv_mutex_unlock(&mu);
    CHECK_EQ(run(node__cmd_train, "train", "--peer", peer, "--secret-file",
                 good_secret, NULL),
             NODE_EXIT_FAILED);
    CHECK(has(err_text, "cannot train yet (409: too few windows (3 < 8))"));
}

static void test_diagnose(void)
{
    char done[4096];
    snprintf(done, sizeof done,
             "{\"request\":\"q-1\", \"done\":true, \"diagnoses\":%s",
             strchr(diagnoses_body, '['));
    add_route("POST", "/v1/diagnose", 202,
              "{\"request\":\"q-1\", \"windows\":1}", NULL);
    add_route("GET", "/v1/diagnose?request=q-1", 200,
              "{\"request\":\"q-1\", \"done\":false, \"diagnoses\":[]}", done);
    CHECK_EQ(run(node__cmd_diagnose, "diagnose", "--from",
                 "2023-11-15T09:34:00+01:00", "--to", "1700037300", "--peer",
                 peer, NULL),
             NODE_EXIT_OK);
    CHECK_STR(posted,
              "{\"from_unix_nano\":\"1700037240000000000\","
              "\"to_unix_nano\":\"1700037300000000000\"}");
    CHECK_STR(out_text,
              "window 2023-11-15T08:34:30Z to 2023-11-15T08:35:00Z: nginx-web "
              "p99 512.3 / 200 ms, violated (model 12)\n"
              "RANK  SERVICE       SCORE  EFFECT_MS  P(QOS MET)  EVIDENCE\n"
              "1     user-mongodb  0.97   301.5      0.97        8.1\n"
              "culprit: user-mongodb (cpu, P(QoS met) 0.97 if fixed); path "
              "user-mongodb -> user-service -> nginx-web\n");
    CHECK_EQ(hits("/v1/diagnose?request=q-1"), 2);

    CHECK_EQ(run(node__cmd_diagnose, "diagnose", "--from", "1700037240", "--to",
                 "1700037300", "--peer", peer, "-o", "json", NULL),
             NODE_EXIT_OK);
    char expect[4200];
    snprintf(expect, sizeof expect, "%s\n", done);
    CHECK_STR(out_text, expect);
}

static void test_diagnose_refusals(void)
{
    add_route("POST", "/v1/diagnose", 404,
              "{\"error\":\"no stored window in the range\"}", NULL);
    CHECK_EQ(run(node__cmd_diagnose, "diagnose", "--from", "1700037240", "--to",
                 "1700037300", "--peer", peer, NULL),
             NODE_EXIT_FAILED);
    CHECK(has(err_text,
              "holds no window ending in (2023-11-15T08:34:00Z, "
              "2023-11-15T08:35:00Z]"));
    uv_mutex_lock(&mu);
    routes[0].status = 409;
    routes[0].bodies[0] = "{\"error\":\"no model yet\"}";
    uv_mutex_unlock(&mu);
    CHECK_EQ(run(node__cmd_diagnose, "diagnose", "--from", "1700037240", "--to",
                 "1700037300", "--peer", peer, NULL),
             NODE_EXIT_FAILED);
    CHECK(has(err_text, "cannot diagnose yet (409: no model yet)"));

    /* A request the peer forgot, and one that never finishes. */
    uv_mutex_lock(&mu);
    routes[0].status = 202;
    routes[0].bodies[0] = "{\"request\":\"q-2\", \"windows\":4}";
    uv_mutex_unlock(&mu);
    CHECK_EQ(run(node__cmd_diagnose, "diagnose", "--from", "1700037240", "--to",
                 "1700037300", "--peer", peer, NULL),
             NODE_EXIT_FAILED);
    CHECK(has(err_text, "no longer holds request q-2"));
    add_route("GET", "/v1/diagnose?request=q-2", 200,
              "{\"request\":\"q-2\", \"done\":false, \"diagnoses\":[]}", NULL);
    CHECK_EQ(run(node__cmd_diagnose, "diagnose", "--from", "1700037240", "--to",
                 "1700037300", "--timeout", "0.3", "--peer", peer, NULL),
             NODE_EXIT_FAILED);
    CHECK(has(err_text,
              "has not finished the 4 windows of request q-2 "
              "within --timeout 0.3 s"));

    /* Done, but the peer could not diagnose a window: exit 1. */
    uv_mutex_lock(&mu);
    routes[0].bodies[0] = "{\"request\":\"q-3\", \"windows\":1}";
    uv_mutex_unlock(&mu);
    add_route("GET", "/v1/diagnose?request=q-3", 200,
              "{\"request\":\"q-3\", \"done\":true, \"diagnoses\":["
              "{\"window_end_unix_nano\":\"1700037300000000000\", "
              "\"error\":\"the model has no latency for nginx-web\"}]}",
              NULL);
    CHECK_EQ(run(node__cmd_diagnose, "diagnose", "--from", "1700037240", "--to",
                 "1700037300", "--peer", peer, NULL),
             NODE_EXIT_FAILED);
    CHECK_STR(out_text,
              "window ending 2023-11-15T08:35:00Z: not diagnosed: the model "
              "has no latency for nginx-web\n");
    CHECK(has(err_text, "could not diagnose 1 of the 1 windows"));
    CHECK_EQ(run(node__cmd_diagnose, "diagnose", "--from", "1700037240", "--to",
                 "1700037300", "--peer", peer, "-o", "json", NULL),
             NODE_EXIT_FAILED);
    CHECK(has(out_text, "\"error\":\"the model has no latency"));
}

static void test_flush(void)
{
    add_route("POST", "/v1/flush", 200, "{\"closed\":2}", NULL);
    CHECK_EQ(run(node__cmd_flush, "flush", "--peer", peer, "--secret-file",
                 good_secret, NULL),
             NODE_EXIT_OK);
    CHECK_STR(out_text, "{\"closed\":2}\n");
    CHECK_EQ(auth_ok, 1);
    CHECK_EQ(run(node__cmd_flush, "flush", "--peer", peer, NULL),
             NODE_EXIT_USAGE);
    CHECK(has(err_text, "needs the cluster secret"));
    CHECK_EQ(run(node__cmd_flush, "flush", "--peer", peer, "extra", NULL),
             NODE_EXIT_USAGE);
    CHECK_STR(err_text,
              "sagemesh flush: usage: sagemesh flush [--peer HOST:PORT] "
              "[--secret-file FILE] [--timeout SECONDS]\n");
    CHECK_EQ(run(node__cmd_flush, "flush", "-o", "json", NULL),
             NODE_EXIT_USAGE);
    CHECK(has(err_text, "unknown or incomplete option '-o'"));
}

static void test_usage_errors(void)
{
    static const struct
    {
        command_fn cmd;
        const char *args[6];
        const char *why;
    } cases[] = {
        {node__cmd_status, {"status", "extra"}, "unexpected argument 'extra'"},
        {node__cmd_status, {"status", "-o", "yaml"}, "-o wants table or json"},
        {node__cmd_status, {"status", "-o"}, "incomplete option '-o'"},
        {node__cmd_status, {"status", "--bogus"}, "unknown or incomplete"},
        {node__cmd_status, {"status", "--timeout", "0"}, "--timeout wants"},
        {node__cmd_status, {"status", "--timeout", "5s"}, "--timeout wants"},
        {node__cmd_status, {"status", "--timeout", "nan"}, "--timeout wants"},
        {node__cmd_status,
         {"status", "--peer", "localhost:4318"},
         "--peer 'localhost:4318' is not a numeric HOST:PORT"},
        {node__cmd_services, {"services"}, "expected 'list'"},
        {node__cmd_services, {"services", "show"}, "expected 'list' alone"},
        {node__cmd_diagnoses, {"diagnoses", "--limit", "0"}, "--limit wants"},
        {node__cmd_diagnoses, {"diagnoses", "--limit", "1001"}, "--limit"},
        {node__cmd_diagnoses, {"diagnoses", "--limit", "ten"}, "--limit"},
        {node__cmd_diagnose,
         {"diagnose", "--from", "1700037240"},
         "needs both --from and --to"},
        {node__cmd_diagnose,
         {"diagnose", "--from", "1700037300", "--to", "1700037240"},
         "--from must be before --to"},
        {node__cmd_diagnose,
         {"diagnose", "--from", "now", "--to", "1"},
         "--from 'now' is not a time"},
        {node__cmd_diagnose,
         {"diagnose", "--from", "1", "--to", "3000-01-01"},
         "--to '3000-01-01' is not a time"},
        {node__cmd_diagnose,
         {"diagnose", "--from", "1", "--to", "2600-01-01T00:00:00Z"},
         "out of range"},
        {node__cmd_train, {"train"}, "needs the cluster secret"},
        {node__cmd_train, {"train", "--wait=yes"}, "unknown or incomplete"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *const *a = cases[i].args;
        int rc = run(cases[i].cmd, a[0], a[1], a[2], a[3], a[4], a[5]);
        if (rc != NODE_EXIT_USAGE || strstr(err_text, cases[i].why) == NULL) {
            check__fail(__FILE__, __LINE__, 0, "case %zu: exit %d, \"%s\"", i,
                        rc, err_text);
        }
        CHECK_STR(out_text, "");
    }
    /* A bad SAGEMESH_PEER is named as such. */
    setenv("SAGEMESH_PEER", "peer.example:4318", 1);
    CHECK_EQ(run(node__cmd_status, "status", NULL), NODE_EXIT_USAGE);
    CHECK(has(err_text, "SAGEMESH_PEER 'peer.example:4318' is not a numeric"));
    CHECK(has(err_text, "sagemesh status: usage: sagemesh status"));
    /* Nothing reached the peer. */
    CHECK_EQ(auth_ok + auth_bad, 0);
    CHECK_STR(posted, "");
}

static const struct check_test tests[] = {
    {"peer down", test_peer_down},
    {"status", test_status},
    {"status unready or broken", test_status_unready_and_broken},
    {"services and diagnoses", test_services_and_diagnoses},
    {"HTTP errors", test_http_errors},
    {"train", test_train},
    {"train --wait", test_train_wait},
    {"train --wait failure and timeout", test_train_wait_failure_and_timeout},
    {"diagnose", test_diagnose},
    {"diagnose refused", test_diagnose_refusals},
    {"flush", test_flush},
    {"usage errors", test_usage_errors},
};

CHECK_MAIN(tests, setup, teardown)
