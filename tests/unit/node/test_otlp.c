/* Tests for the OTLP/HTTP JSON parsers against the real captured samples
 * and hand-made edge cases. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cbn/cbn.h"
#include "check.h"
#include "node/ingest.h"

static struct node_spans spans;
static struct node_points points;
static char err[SM_ERRMSG_SIZE];

static void setup(void)
{
    node_spans_init(&spans, 64u << 20);
    node_points_init(&points, 64u << 20);
    err[0] = '\0';
}

static void teardown(void)
{
    node_spans_free(&spans);
    node_points_free(&points);
}

static int parse_text(const char *json)
{
    return node_otlp_traces((const uint8_t *)json, strlen(json), &spans, err);
}

static void parse_sample(const char *name)
{
    size_t len;
    char *body = check_read_sample(name, &len);
    int rv = node_otlp_traces((const uint8_t *)body, len, &spans, err);
    free(body);
    if (rv != SM_OK) {
        check__fail(__FILE__, __LINE__, 1, "%s: %s (%s)", name, sm_errname(rv),
                    err);
    }
}

static struct cbn_window *windows[8];
static size_t n_windows;

static void keep(void *arg, struct cbn_window *w)
{
    (void)arg;
    if (n_windows < 8) {
        windows[n_windows++] = w;
    } else {
        cbn_window_free(w);
    }
}

static void test_samples_make_the_known_graph(void)
{
    /* One trace set captured from four services, one file each. */
    parse_sample("otlp-sample.json");
    size_t frontend = spans.n;
    CHECK(frontend > 0);
    for (size_t i = 0; i < spans.n; i++) {
        CHECK_STR(spans.v[i].service, "frontend");
        CHECK_STR(spans.v[i].instance, "acb6d06b-b083-4538-b996-02f3e2fa6afa");
    }
    parse_sample("otlp-sample-middle.json");
    parse_sample("otlp-sample-backend.json");
    parse_sample("otlp-sample-cache.json");
    /* The frontend's client calls name their callee by address. */
    int clients = 0;
    for (size_t i = 0; i < frontend; i++) {
        if (spans.v[i].kind == CBN_SPAN_CLIENT) {
            clients++;
            CHECK(strncmp(spans.v[i].peer, "127.0.0.1:700", 13) == 0);
        }
        if (spans.v[i].kind == CBN_SPAN_SERVER) {
            CHECK(strncmp(spans.v[i].operation, "/api/", 5) == 0);
        }
    }
    CHECK(clients >= 2);

    struct cbn_agg_config c = {.window_ns = 3600000000000ull,
                               .qos_service = "frontend",
                               .qos_target_ms = 1000};
    struct cbn_agg *agg;
    REQUIRE_OK(cbn_agg_new(&c, &agg));
    REQUIRE_OK(cbn_agg_add_spans(agg, spans.v, spans.n));
    REQUIRE_OK(cbn_agg_flush(agg, keep, NULL));
    cbn_agg_free(agg);
    REQUIRE(n_windows >= 1);
    const struct cbn_window *w = windows[n_windows - 1];
    static const char *const edges[][2] = {
        {"frontend", "middle"}, {"frontend", "cache"}, {"middle", "backend"}};
    for (size_t i = 0; i < 3; i++) {
        const struct cbn_window_edge *e = NULL;
        for (size_t k = 0; k < n_windows && e == NULL; k++) {
            e = cbn_window_edge(windows[k], edges[i][0], edges[i][1]);
        }
        if (e == NULL || e->paired == 0) {
            check__fail(__FILE__, __LINE__, 0, "edge %s -> %s missing",
                        edges[i][0], edges[i][1]);
            continue;
        }
        CHECK(e->client_ms[2] >= e->server_ms[2]);
    }
    CHECK(cbn_window_service(w, "frontend") != NULL ||
          cbn_window_service(windows[0], "frontend") != NULL);
    for (size_t i = 0; i < n_windows; i++) {
        cbn_window_free(windows[i]);
    }
    n_windows = 0;
}

static void test_quirks(void)
{
    /* Numbers as strings or numbers, base64 ids, unknown fields, old
     * attribute names, string enums, resource after scopeSpans, the old
     * instrumentationLibrarySpans key. */
    const char *json =
        "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":["
        "{\"traceId\":\"3dMq5JFfVw/ztgd+4jBTAQ==\",\"spanId\":\"ZP1fxMsxFtk=\","
        "\"name\":\"GET\",\"kind\":\"SPAN_KIND_SERVER\","
        "\"startTimeUnixNano\":1795421747430000000,"
        "\"endTimeUnixNano\":\"1795421747487229664\","
        "\"attributes\":[{\"value\":{\"stringValue\":\"/old?q=1\"},"
        "\"key\":\"http.target\"},{\"key\":\"x\",\"value\":{\"arrayValue\":"
        "{\"values\":[{\"intValue\":1}]}}}],"
        "\"status\":{\"code\":2},\"future\":{\"a\":[1,2,{}]}}]}],"
        "\"resource\":{\"attributes\":[{\"key\":\"service.name\","
        "\"value\":{\"stringValue\":\"web\"}}]}},"
        "{\"instrumentationLibrarySpans\":[{\"spans\":[{\"traceId\":"
        "\"00000000000000000000000000000001\",\"spanId\":\"0000000000000002\","
        "\"kind\":3,\"startTimeUnixNano\":\"5\",\"endTimeUnixNano\":\"9\","
        "\"attributes\":[{\"key\":\"net.peer.name\",\"value\":{\"stringValue\":"
        "\"db\"}},{\"key\":\"net.peer.port\",\"value\":{\"intValue\":5432}}]}]}"
        "]}"
        "]}";
    REQUIRE_OK(parse_text(json));
    REQUIRE_EQ(spans.n, 2);
    const struct cbn_span *s = &spans.v[0];
    CHECK_STR(s->service, "web");
    CHECK_EQ(s->kind, CBN_SPAN_SERVER);
    CHECK_EQ(s->trace_id[0], 0xdd);
    CHECK_EQ(s->span_id[7], 0xd9);
    CHECK(s->start_ns == 1795421747430000000u);
    CHECK(s->end_ns == 1795421747487229664u);
    CHECK_STR(s->operation, "/old");
    CHECK(s->error);
    const struct cbn_span *t = &spans.v[1];
    CHECK_STR(t->service, "unknown_service");
    CHECK_STR(t->peer, "db:5432");
    CHECK_STR(t->operation, "");
}

static void test_malformed(void)
{
    static const char *const bad[] = {
        "",
        "[]",
        "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[{\"spanId\":"
        "\"0000000000000002\",\"startTimeUnixNano\":\"1\","
        "\"endTimeUnixNano\":\"2\"}]}]}]}",
        "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[{\"traceId\":\"zz\","
        "\"spanId\":\"0000000000000002\"}]}]}]}",
        "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[{\"traceId\":"
        "\"00000000000000000000000000000001\",\"spanId\":\"0000000000000002\","
        "\"startTimeUnixNano\":\"9\",\"endTimeUnixNano\":\"5\"}]}]}]}",
        "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[{\"traceId\":"
        "\"00000000000000000000000000000001\",\"spanId\":\"0000000000000002\","
        "\"startTimeUnixNano\":\"-1\",\"endTimeUnixNano\":\"5\"}]}]}]}",
        "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[{\"kind\":9}]}]}]}",
        "{\"resourceSpans\":[",
        "{\"resourceSpans\":[]} trailing",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        node_spans_reset(&spans);
        err[0] = '\0';
        int rv = parse_text(bad[i]);
        if (rv != SM_EMALFORMED || err[0] == '\0') {
            check__fail(__FILE__, __LINE__, 0, "case %zu: %s with message '%s'",
                        i, sm_errname(rv), err);
        }
    }
    node_spans_reset(&spans);
    CHECK_OK(parse_text("{}"));
    CHECK_EQ(spans.n, 0);
    /* The message says where. */
    parse_text(bad[4]);
    CHECK(strstr(err, "spans[0]") != NULL);
    CHECK(strstr(err, "ends before it starts") != NULL);
}

static void test_deep_nesting_and_limit(void)
{
    char deep[4096];
    size_t n = 0;
    n += (size_t)snprintf(deep, sizeof deep, "{\"x\":");
    for (int i = 0; i < 200; i++) {
        deep[n++] = '[';
    }
    deep[n] = '\0';
    CHECK_EQ(parse_text(deep), SM_EMALFORMED);
    /* A batch over the arena limit is too big, not out of memory. */
    struct node_spans small;
    node_spans_init(&small, 128);
    size_t len;
    char *body = check_read_sample("otlp-sample.json", &len);
    CHECK_EQ(node_otlp_traces((const uint8_t *)body, len, &small, err),
             SM_ETOOBIG);
    free(body);
    node_spans_free(&small);
}

static void test_metrics_sample(void)
{
    size_t len;
    char *body = check_read_sample("otlp-metrics-sample.json", &len);
    int rv = node_otlp_metrics((const uint8_t *)body, len, &points, err);
    free(body);
    REQUIRE_OK(rv);
    REQUIRE(points.n > 0);
    int duration_sum = 0;
    for (size_t i = 0; i < points.n; i++) {
        const struct cbn_metric_point *p = &points.v[i];
        CHECK(p->service[0] != '\0');
        CHECK(p->time_ns > 1700000000000000000u);
        if (strcmp(p->name, "http.server.request.duration_sum") == 0) {
            duration_sum++;
            CHECK(p->cumulative);
        }
    }
    CHECK(duration_sum > 0);
}

static void test_metrics_kinds(void)
{
    const char *json =
        "{\"resourceMetrics\":[{\"resource\":{\"attributes\":[{\"key\":"
        "\"service.name\",\"value\":{\"stringValue\":\"cart\"}}]},"
        "\"scopeMetrics\":[{\"metrics\":["
        "{\"name\":\"queue\",\"gauge\":{\"dataPoints\":[{\"timeUnixNano\":"
        "\"2000000000\",\"asInt\":\"7\",\"attributes\":[{\"key\":\"peer."
        "service\","
        "\"value\":{\"stringValue\":\"db\"}},{\"key\":\"a\",\"value\":"
        "{\"intValue\":1}}]}]}},"
        "{\"name\":\"reqs\",\"sum\":{\"aggregationTemporality\":1,"
        "\"dataPoints\":[{\"startTimeUnixNano\":\"1000000000\","
        "\"timeUnixNano\":"
        "\"3000000000\",\"asDouble\":10}]}},"
        "{\"name\":\"cpu\",\"sum\":{\"aggregationTemporality\":2,"
        "\"dataPoints\":[{\"timeUnixNano\":\"3000000000\",\"asDouble\":1.5}]}}"
        "]}]}]}";
    REQUIRE_OK(
        node_otlp_metrics((const uint8_t *)json, strlen(json), &points, err));
    REQUIRE_EQ(points.n, 3);
    CHECK_STR(points.v[0].service, "cart");
    CHECK_STR(points.v[0].peer, "db");
    CHECK_STR(points.v[0].labels, "a=1,peer.service=db");
    CHECK(points.v[0].value == 7);
    CHECK(!points.v[0].cumulative);
    CHECK(points.v[1].value == 5); /* 10 over 2 s */
    CHECK(points.v[2].cumulative);
    node_points_reset(&points);
    const char *bad =
        "{\"resourceMetrics\":[{\"scopeMetrics\":[{\"metrics\":"
        "[{\"gauge\":{}}]}]}]}";
    CHECK_EQ(node_otlp_metrics((const uint8_t *)bad, strlen(bad), &points, err),
             SM_EMALFORMED);
    CHECK(strstr(err, "name is required") != NULL);
}

static const struct check_test tests[] = {
    {"samples make the known graph", test_samples_make_the_known_graph},
    {"OTLP JSON quirks", test_quirks},
    {"malformed bodies", test_malformed},
    {"deep nesting and the size limit", test_deep_nesting_and_limit},
    {"metrics sample", test_metrics_sample},
    {"metric kinds", test_metrics_kinds},
};

CHECK_MAIN(tests, setup, teardown)
