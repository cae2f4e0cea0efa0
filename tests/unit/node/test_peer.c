/* The peer on one loop, end to end: OTLP bodies over real HTTP on
 * 127.0.0.1, windows closing, the window log, restart and replay. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "base/clock.h"
#include "base/log.h"
#include "check.h"
#include "node/config.h"
#include "node/http.h"
#include "node/peer.h"
#include "transport/transport.h"

static uv_loop_t loop;
static struct sm_fake_clock fake;
static struct node_config cfg;
static struct node_peer *peer;
static size_t windows_seen;
static int edge_seen;

static void on_window(void *arg, const struct cbn_window *w)
{
    (void)arg;
    windows_seen++;
    const struct cbn_window_edge *e = cbn_window_edge(w, "frontend", "middle");
    edge_seen |= e != NULL && e->paired > 0;
}

static const char *secret_path;
static const char *auth_header; /* sent by http() when set */

static void start_peer(const char *dir)
{
    char err[SM_ERRMSG_SIZE];
    node_config_init(&cfg);
    if (secret_path != NULL) {
        REQUIRE_OK(node_config_set(&cfg, "secret-file", secret_path, err));
    }
    REQUIRE_OK(node_config_set(&cfg, "listen-http", "127.0.0.1:0", err));
    REQUIRE_OK(node_config_set(&cfg, "listen-peer", "127.0.0.1:0", err));
    REQUIRE_OK(node_config_set(&cfg, "data-dir", dir, err));
    REQUIRE_OK(node_config_set(&cfg, "qos-service", "frontend", err));
    REQUIRE_OK(node_config_set(&cfg, "qos-target-ms", "40", err));
    REQUIRE_OK(node_config_set(&cfg, "window", "10", err));
    REQUIRE_OK(node_config_set(&cfg, "id", "test-1", err));
    REQUIRE_OK(node_config_validate(&cfg, err));
    int rv = node_peer_start(&loop, &cfg, &fake.clock, 7, &peer, err);
    if (rv != SM_OK) {
        check__fail(__FILE__, __LINE__, 1, "start: %s", err);
    }
    node_peer_on_window(peer, on_window, NULL);
}

static void stop_peer(void)
{
    node_peer_stop(peer);
    /* UV_RUN_ONCE waits for the remaining handles (a scrape in flight is
     * bounded by its timeout); it returns at once when none is left. */
    for (int i = 0; i < 100 && !node_peer_stopped(peer); i++) {
        uv_run(&loop, UV_RUN_ONCE);
    }
    REQUIRE(node_peer_stopped(peer));
    node_peer_free(peer);
    peer = NULL;
    node_config_free(&cfg);
}

static void setup(void)
{
    sm_log_set_sink(check_log_discard, NULL);
    sm_fake_clock_init(&fake, 1795421760000000000u);
    REQUIRE(uv_loop_init(&loop) == 0);
    windows_seen = 0;
    edge_seen = 0;
}

static void teardown(void)
{
    if (peer != NULL) {
        stop_peer();
    }
    uv_run(&loop, UV_RUN_NOWAIT);
    uv_loop_close(&loop);
    sm_log_set_sink(NULL, NULL);
}

/* Sends one HTTP request to the peer and returns the status code, with the
 * response in @resp. The loop runs while waiting; bounded in iterations. */
static int http(const char *method,
                const char *path,
                const char *body,
                size_t len,
                char *resp,
                size_t cap)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd >= 0);
    struct sockaddr_in a = {
        .sin_family = AF_INET,
        .sin_port = htons((uint16_t)node_peer_http_port(peer))};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(connect(fd, (struct sockaddr *)&a, sizeof a) == 0);
    char head[256];
    int hn =
        snprintf(head, sizeof head,
                 "%s %s HTTP/1.1\r\nHost: x\r\nContent-Type: "
                 "application/json\r\nContent-Length: %zu\r\n"
                 "%s%s%sConnection: close\r\n\r\n",
                 method, path, len, auth_header ? "Authorization: " : "",
                 auth_header ? auth_header : "", auth_header ? "\r\n" : "");
    /* Write while letting the server read: the body may exceed the
     * socket buffer. */
    size_t sent = 0, total = (size_t)hn + len;
    size_t got = 0;
    for (int i = 0; i < 200000; i++) {
        if (sent < total) {
            const char *p =
                sent < (size_t)hn ? head + sent : body + (sent - (size_t)hn);
            size_t n = sent < (size_t)hn ? (size_t)hn - sent : total - sent;
            ssize_t w = send(fd, p, n, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (w > 0) {
                sent += (size_t)w;
            }
        }
        uv_run(&loop, UV_RUN_NOWAIT);
        ssize_t r = recv(fd, resp + got, cap - 1 - got, MSG_DONTWAIT);
        if (r > 0) {
            got += (size_t)r;
        } else if (r == 0) {
            break; /* the server closed: response complete */
        } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
            break;
        }
    }
    close(fd);
    resp[got] = '\0';
    int status = 0;
    sscanf(resp, "HTTP/1.1 %d", &status);
    return status;
}

static int post_sample(const char *name)
{
    size_t len;
    char *body = check_read_sample(name, &len);
    static char resp[1 << 16];
    int status = http("POST", "/v1/traces", body, len, resp, sizeof resp);
    free(body);
    return status;
}

static void test_ingest_store_and_replay(void)
{
    const char *dir = check_tmpdir();
    start_peer(dir);
    static char resp[1 << 16];
    CHECK_EQ(http("GET", "/readyz", "", 0, resp, sizeof resp), 200);
    CHECK_EQ(post_sample("otlp-sample.json"), 200);
    CHECK_EQ(post_sample("otlp-sample-middle.json"), 200);
    CHECK_EQ(post_sample("otlp-sample-backend.json"), 200);
    CHECK_EQ(post_sample("otlp-sample-cache.json"), 200);
    /* Malformed and unsupported bodies are refused whole. */
    CHECK_EQ(http("POST", "/v1/traces", "{\"resourceSpans\":[", 18, resp,
                  sizeof resp),
             400);
    CHECK(strstr(resp, "\"error\"") != NULL);
    CHECK_EQ(http("GET", "/nope", "", 0, resp, sizeof resp), 404);
    CHECK_EQ(http("GET", "/metrics", "", 0, resp, sizeof resp), 200);
    CHECK(strstr(resp, "sagemesh_spans_total{outcome=\"accepted\"}") != NULL);
    CHECK(strstr(resp, "sagemesh_batches_rejected_total 1") != NULL);
    CHECK_EQ(windows_seen, 0); /* nothing closed yet: same event time */
    /* Stopping stores the open windows. */
    stop_peer();
    CHECK(windows_seen >= 1);
    CHECK(edge_seen);
    size_t stored = windows_seen;

    /* A new peer on the same directory replays them. */
    windows_seen = 0;
    edge_seen = 0;
    start_peer(dir);
    CHECK_EQ(http("GET", "/v1/status", "", 0, resp, sizeof resp), 200);
    char replayed[64];
    snprintf(replayed, sizeof replayed, "\"replayed\":%zu", stored);
    CHECK(strstr(resp, replayed) != NULL);
    /* The CBN rebuilt from the log: callees before callers. */
    const char *backend = strstr(resp, "\"name\":\"backend\"");
    const char *middle = strstr(resp, "\"name\":\"middle\"");
    const char *frontend = strstr(resp, "\"name\":\"frontend\"");
    CHECK(backend != NULL && middle != NULL && frontend != NULL);
    CHECK(backend < middle && middle < frontend);
    /* Data for a window already stored is late, and counted. */
    CHECK_EQ(post_sample("otlp-sample.json"), 200);
    CHECK_EQ(http("GET", "/metrics", "", 0, resp, sizeof resp), 200);
    CHECK(strstr(resp, "sagemesh_spans_total{outcome=\"late\"} 0") == NULL);
}

static void test_bad_start(void)
{
    char err[SM_ERRMSG_SIZE];
    node_config_init(&cfg);
    REQUIRE_OK(node_config_set(&cfg, "data-dir", "/proc/nope/x", err));
    REQUIRE_OK(node_config_set(&cfg, "listen-http", "127.0.0.1:0", err));
    CHECK(node_peer_start(&loop, &cfg, &fake.clock, 1, &peer, err) != SM_OK);
    CHECK(strstr(err, "/proc/nope/x") != NULL);
    CHECK(peer == NULL);
    node_config_free(&cfg);
}

/* Starts a peer with a new cluster secret in a fresh directory; the
 * secret goes to @secret (wipe it). */
static void start_peer_with_secret(struct tp_secret *secret)
{
    const char *dir = check_tmpdir();
    char path[600], data[600];
    snprintf(path, sizeof path, "%s/secret", dir);
    snprintf(data, sizeof data, "%s/data", dir);
    REQUIRE_OK(tp_init());
    tp_secret_generate(secret);
    char text[TP_SECRET_HEX_SIZE];
    tp_secret_format(secret, text);
    FILE *f = fopen(path, "w");
    REQUIRE(f != NULL);
    fputs(text, f);
    fclose(f);
    REQUIRE(chmod(path, 0600) == 0);
    secret_path = path;
    start_peer(data);
    secret_path = NULL;
}

static void test_flush_needs_the_secret(void)
{
    struct tp_secret secret;
    start_peer_with_secret(&secret);
    static char resp[1 << 16];
    CHECK_EQ(post_sample("otlp-sample.json"), 200);
    /* No credential, a bad one, then a good one used twice. */
    CHECK_EQ(http("POST", "/v1/flush", "", 0, resp, sizeof resp), 401);
    auth_header = "SagemeshHMAC ts=1,mac=00";
    CHECK_EQ(http("POST", "/v1/flush", "", 0, resp, sizeof resp), 401);
    char header[TP_AUTH_HEADER_MAX];
    tp_credential_sign(&secret, "POST", "/v1/flush",
                       sm_clock_wall_ns(&fake.clock) / 1000000000u, "", 0,
                       header);
    auth_header = header;
    CHECK_EQ(windows_seen, 0);
    CHECK_EQ(http("POST", "/v1/flush", "", 0, resp, sizeof resp), 200);
    CHECK(strstr(resp, "\"windows_closed\":1") != NULL);
    CHECK_EQ(windows_seen, 1);
    CHECK_EQ(http("POST", "/v1/flush", "", 0, resp, sizeof resp), 401);
    CHECK(strstr(resp, "already used") != NULL);
    auth_header = NULL;
    tp_secret_wipe(&secret);
}

/* Signs @method @path with @secret at the fake clock's time into @header
 * and makes http() send it. */
static void sign(const struct tp_secret *secret,
                 const char *method,
                 const char *path,
                 const char *body,
                 char header[TP_AUTH_HEADER_MAX])
{
    tp_credential_sign(secret, method, path,
                       sm_clock_wall_ns(&fake.clock) / 1000000000u, body,
                       strlen(body), header);
    auth_header = header;
}

/* The model and diagnosis endpoints before any model exists: empty
 * answers, clear refusals, and nothing changes without a credential. */
static void test_model_api_without_model(void)
{
    struct tp_secret secret;
    start_peer_with_secret(&secret);
    static char resp[1 << 16];
    char header[TP_AUTH_HEADER_MAX];

    CHECK_EQ(http("GET", "/v1/diagnoses", "", 0, resp, sizeof resp), 200);
    CHECK(strstr(resp, "{\"diagnoses\":[]}") != NULL);
    CHECK_EQ(http("GET", "/v1/diagnoses?limit=1000", "", 0, resp, sizeof resp),
             200);
    const char *bad_limits[] = {"0", "1001", "abc", "-1", "", "5x"};
    for (size_t i = 0; i < sizeof bad_limits / sizeof bad_limits[0]; i++) {
        char q[64];
        snprintf(q, sizeof q, "/v1/diagnoses?limit=%s", bad_limits[i]);
        CHECK_EQ(http("GET", q, "", 0, resp, sizeof resp), 400);
    }
    CHECK_EQ(http("PUT", "/v1/diagnoses", "", 0, resp, sizeof resp), 405);
    CHECK_EQ(http("GET", "/v1/train", "", 0, resp, sizeof resp), 405);

    /* Training: refused without a credential, then too few windows. */
    CHECK_EQ(http("POST", "/v1/train", "", 0, resp, sizeof resp), 401);
    sign(&secret, "POST", "/v1/train", "", header);
    CHECK_EQ(http("POST", "/v1/train", "", 0, resp, sizeof resp), 409);
    CHECK(strstr(resp, "training needs at least 8") != NULL);
    auth_header = NULL;

    /* Services come from the CBN: frontend calls middle. */
    CHECK_EQ(post_sample("otlp-sample.json"), 200);
    CHECK_EQ(post_sample("otlp-sample-middle.json"), 200);
    sign(&secret, "POST", "/v1/flush", "", header);
    CHECK_EQ(http("POST", "/v1/flush", "", 0, resp, sizeof resp), 200);
    auth_header = NULL;
    CHECK_EQ(http("GET", "/v1/services", "", 0, resp, sizeof resp), 200);
    CHECK(strstr(resp,
                 "\"name\":\"frontend\",\"node\":\"frontend\","
                 "\"inferred\":false,\"callers\":[],\"callees\":["
                 "\"middle\"") != NULL);
    CHECK(strstr(resp, "\"name\":\"middle\"") != NULL);

    /* Diagnose: bad bodies, then no model yet. */
    const char *bad = "{\"from_unix_nano\":5}";
    CHECK_EQ(http("POST", "/v1/diagnose", bad, strlen(bad), resp, sizeof resp),
             400);
    CHECK(strstr(resp, "to_unix_nano") != NULL);
    const char *good =
        "{\"from_unix_nano\":0,\"to_unix_nano\":"
        "\"2000000000000000000\"}";
    CHECK_EQ(
        http("POST", "/v1/diagnose", good, strlen(good), resp, sizeof resp),
        409);
    CHECK(strstr(resp, "no model yet") != NULL);
    CHECK_EQ(http("GET", "/v1/diagnose", "", 0, resp, sizeof resp), 400);
    CHECK_EQ(http("GET", "/v1/diagnose?request=7", "", 0, resp, sizeof resp),
             404);

    /* Status, readiness and metrics say where the model stands. */
    CHECK_EQ(http("GET", "/v1/status", "", 0, resp, sizeof resp), 200);
    CHECK(strstr(resp, "\"model\":{\"version\":0,") != NULL);
    CHECK(strstr(resp, "\"rounds_finished\":0,") != NULL);
    CHECK(strstr(resp, "\"last_round\":null") != NULL);
    CHECK(strstr(resp, "\"diagnoses\":{\"stored\":0,") != NULL);
    CHECK_EQ(http("GET", "/readyz?verbose", "", 0, resp, sizeof resp), 200);
    CHECK(strstr(resp, "[+] diagnosis store loaded (0 diagnoses)") != NULL);
    CHECK(strstr(resp, "[+] model manager running") != NULL);
    CHECK_EQ(http("GET", "/metrics", "", 0, resp, sizeof resp), 200);
    CHECK(strstr(resp, "\nsagemesh_model_version 0\n") != NULL);
    CHECK(strstr(resp,
                 "sagemesh_diagnosis_latency_seconds_bucket{le=\"+Inf\"}"
                 " 0\n") != NULL);
    CHECK(strstr(resp, "sagemesh_http_responses_total{code=\"409\"} 2\n") !=
          NULL);
    tp_secret_wipe(&secret);
}

/* A Prometheus exporter on the same loop, serving a captured sample. */
static char *exporter_text;
static size_t exporter_len;
static int exporter_hits;

static void exporter(void *arg,
                     const struct node_http_request *req,
                     struct node_http_response *res)
{
    (void)arg;
    (void)req;
    exporter_hits++;
    res->status = 200;
    res->content_type = "text/plain; version=0.0.4";
    res->body = exporter_text;
    res->body_len = exporter_len;
}

static void test_scrape(void)
{
    exporter_text =
        check_read_sample("process-exporter-sample.txt", &exporter_len);
    struct node_http_server *srv;
    char err[SM_ERRMSG_SIZE];
    REQUIRE_OK(node_http_server_start(&loop, "127.0.0.1", 0, NULL, exporter,
                                      NULL, &srv, err));
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/metrics#service=host",
             node_http_server_port(srv));
    node_config_init(&cfg);
    REQUIRE_OK(node_config_set(&cfg, "listen-http", "127.0.0.1:0", err));
    REQUIRE_OK(node_config_set(&cfg, "data-dir", check_tmpdir(), err));
    REQUIRE_OK(node_config_set(&cfg, "scrape", url, err));
    REQUIRE_OK(node_config_set(&cfg, "scrape-interval", "1", err));
    REQUIRE_OK(node_config_validate(&cfg, err));
    REQUIRE_OK(node_peer_start(&loop, &cfg, &fake.clock, 3, &peer, err));
    node_peer_on_window(peer, on_window, NULL);
    /* The first scrape starts 10 ms after start: let the loop wait for
     * its timer (the peer's repeating timers bound each wait to 1 s), a
     * bounded number of times. */
    static char resp[1 << 16];
    for (int i = 0; i < 50 && exporter_hits == 0; i++) {
        uv_run(&loop, UV_RUN_ONCE);
    }
    REQUIRE(exporter_hits > 0);
    const char *kept = NULL;
    for (int i = 0; i < 400 && kept == NULL; i++) {
        uv_run(&loop, UV_RUN_NOWAIT);
        REQUIRE_EQ(http("GET", "/metrics", "", 0, resp, sizeof resp), 200);
        kept = strstr(resp, "sagemesh_scrape_samples_total{outcome=\"kept\"} ");
        if (kept != NULL && atoi(kept + 47) == 0) {
            kept = NULL;
        }
    }
    REQUIRE(kept != NULL);
    CHECK(strstr(resp, "sagemesh_scrapes_total{outcome=\"ok\"} 1") != NULL);
    /* The scraped process groups became services with cpu metrics. */
    stop_peer();
    node_http_server_close(srv, NULL, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
    free(exporter_text);
    CHECK(windows_seen >= 1);
}

static const struct check_test tests[] = {
    {"scrape a Prometheus exporter", test_scrape},
    {"flush needs the secret", test_flush_needs_the_secret},
    {"ingest, store and replay", test_ingest_store_and_replay},
    {"bad data directory", test_bad_start},
    {"model API without a model", test_model_api_without_model},
};

CHECK_MAIN(tests, setup, teardown)
