/* Tests for the Zipkin v2 and Jaeger JSON parsers: the captured samples,
 * the Jaeger sample against the same traces read as OTLP, and edge cases
 * (shared spans, ids, times, references, processes, bad input). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cbn/cbn.h"
#include "check.h"
#include "node/ingest.h"

#define US 1000ull /* one microsecond in ns */

static struct node_spans spans;
static char err[SM_ERRMSG_SIZE];

static void setup(void)
{
    node_spans_init(&spans, 64u << 20);
    err[0] = '\0';
}

static void free_windows(void);

static void teardown(void)
{
    free_windows();
    node_spans_free(&spans);
}

static int zipkin(const char *json)
{
    node_spans_reset(&spans);
    err[0] = '\0';
    return node_zipkin_spans((const uint8_t *)json, strlen(json), &spans, err);
}

static int jaeger(const char *json)
{
    node_spans_reset(&spans);
    err[0] = '\0';
    return node_jaeger_traces((const uint8_t *)json, strlen(json), &spans, err);
}

typedef int (*parser_fn)(const uint8_t *,
                         size_t,
                         struct node_spans *,
                         char[SM_ERRMSG_SIZE]);

/* Parses the sample @name with @parse, appending to @out. */
static void parse_sample(parser_fn parse,
                         const char *name,
                         struct node_spans *out)
{
    size_t len;
    char *body = check_read_sample(name, &len);
    int rv = parse((const uint8_t *)body, len, out, err);
    free(body);
    if (rv != SM_OK) {
        check__fail(__FILE__, __LINE__, 1, "%s: %s (%s)", name, sm_errname(rv),
                    err);
    }
}

/* The span of the batch with span id @hex, or NULL. */
static const struct cbn_span *find(const struct node_spans *b, const char *hex)
{
    uint8_t id[8];
    if (node_decode_id(hex, strlen(hex), id, 8) != SM_OK) {
        return NULL;
    }
    for (size_t i = 0; i < b->n; i++) {
        if (memcmp(b->v[i].span_id, id, 8) == 0) {
            return &b->v[i];
        }
    }
    return NULL;
}

static int id_is(const uint8_t *id, const char *hex)
{
    uint8_t want[8];
    return node_decode_id(hex, strlen(hex), want, 8) == SM_OK &&
           memcmp(id, want, 8) == 0;
}

/* ---- Aggregation ---------------------------------------------------------
 */

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

static void free_windows(void)
{
    for (size_t i = 0; i < n_windows; i++) {
        cbn_window_free(windows[i]);
    }
    n_windows = 0;
}

/* Feeds @n batches to a new aggregator and flushes it into windows[]. */
static void aggregate(struct node_spans *const *batches, size_t n)
{
    free_windows();
    struct cbn_agg_config c = {.window_ns = 30000000000u,
                               .hash_seed = check_seed()};
    struct cbn_agg *agg;
    REQUIRE_OK(cbn_agg_new(&c, &agg));
    for (size_t i = 0; i < n; i++) {
        CHECK_OK(cbn_agg_add_spans(agg, batches[i]->v, batches[i]->n));
    }
    CHECK_OK(cbn_agg_flush(agg, keep, NULL));
    struct cbn_agg_stats st;
    cbn_agg_stats(agg, &st);
    CHECK_EQ(st.spans_late + st.spans_rejected, 0);
    cbn_agg_free(agg);
}

/* An edge summed over the windows: calls and paired. */
static void edge(const char *caller,
                 const char *callee,
                 uint64_t *calls,
                 uint64_t *paired,
                 int *inferred)
{
    *calls = *paired = 0;
    *inferred = -1;
    for (size_t i = 0; i < n_windows; i++) {
        const struct cbn_window_edge *e =
            cbn_window_edge(windows[i], caller, callee);
        if (e != NULL) {
            *calls += e->calls;
            *paired += e->paired;
            *inferred = e->inferred;
        }
    }
}

/* ---- Statistics for comparing formats ------------------------------------
 *
 * One sorted line per fact: per span of each service its kind, operation,
 * peer, instance, duration in whole microseconds (Jaeger's unit) and error;
 * per window service its requests and errors; per edge its calls and
 * pairings. Two readings of the same traces must give the same lines. */

struct lines
{
    char **v;
    size_t n, cap;
};

static void add_line(struct lines *l, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void add_line(struct lines *l, const char *fmt, ...)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 64;
        l->v = realloc(l->v, l->cap * sizeof *l->v);
        REQUIRE(l->v != NULL);
    }
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    l->v[l->n] = strdup(buf);
    REQUIRE(l->v[l->n] != NULL);
    l->n++;
}

static int line_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void free_lines(struct lines *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free(l->v[i]);
    }
    free(l->v);
    memset(l, 0, sizeof *l);
}

static void describe(struct node_spans *const *batches,
                     size_t n,
                     struct lines *l)
{
    static const char *const kinds[] = {"unspecified", "internal", "server",
                                        "client",      "producer", "consumer"};
    for (size_t b = 0; b < n; b++) {
        for (size_t i = 0; i < batches[b]->n; i++) {
            const struct cbn_span *s = &batches[b]->v[i];
            add_line(
                l, "span %s %s op=%s peer=%s instance=%s %lluus error=%d",
                s->service, kinds[s->kind], s->operation, s->peer, s->instance,
                (unsigned long long)((s->end_ns - s->start_ns) / US), s->error);
        }
    }
    aggregate(batches, n);
    for (size_t w = 0; w < n_windows; w++) {
        const struct cbn_window *win = windows[w];
        for (uint32_t i = 0; i < win->n_services; i++) {
            add_line(l, "service %s requests=%llu errors=%llu",
                     win->services[i].name,
                     (unsigned long long)win->services[i].requests,
                     (unsigned long long)win->services[i].errors);
        }
        for (uint32_t i = 0; i < win->n_edges; i++) {
            const struct cbn_window_edge *e = &win->edges[i];
            add_line(l, "edge %s->%s calls=%llu paired=%llu inferred=%d",
                     e->caller, e->callee, (unsigned long long)e->calls,
                     (unsigned long long)e->paired, e->inferred);
        }
    }
    free_windows();
    qsort(l->v, l->n, sizeof *l->v, line_cmp);
}

/* ---- The captured samples ------------------------------------------------
 */

static void test_zipkin_sample(void)
{
    /* Captured from @opentelemetry/exporter-zipkin: the frontend only, two
     * traces (/api/home and /api/fail), 8 spans. */
    parse_sample(node_zipkin_spans, "zipkin-v2-sample.json", &spans);
    REQUIRE_EQ(spans.n, 8);
    int server = 0, client = 0, internal = 0;
    for (size_t i = 0; i < spans.n; i++) {
        const struct cbn_span *s = &spans.v[i];
        CHECK_STR(s->service, "frontend");
        CHECK_STR(s->instance, "156d7b90-3395-42bf-8f55-daddbed3227e");
        server += s->kind == CBN_SPAN_SERVER;
        client += s->kind == CBN_SPAN_CLIENT;
        internal += s->kind == CBN_SPAN_INTERNAL;
        if (s->kind == CBN_SPAN_CLIENT) {
            CHECK(strcmp(s->peer, "127.0.0.1:7002") == 0 ||
                  strcmp(s->peer, "127.0.0.1:7004") == 0);
        }
    }
    CHECK_EQ(server, 2);
    CHECK_EQ(client, 4);
    CHECK_EQ(internal, 2);
    /* Microseconds to nanoseconds, operation from url.path. */
    const struct cbn_span *home = find(&spans, "018c103e74d0ca93");
    REQUIRE(home != NULL);
    CHECK(home->start_ns == 1795422576828000ull * US);
    CHECK(home->end_ns == home->start_ns + 46351 * US);
    CHECK_STR(home->operation, "/api/home");
    CHECK_EQ(home->error, 0);
    const struct cbn_span *call = find(&spans, "dddebfd56b7912be");
    REQUIRE(call != NULL);
    CHECK(id_is(call->parent_id, "018c103e74d0ca93"));
    CHECK_STR(call->peer, "127.0.0.1:7002");
    CHECK_STR(call->operation, "GET");
    /* otel.status_code=ERROR on the failing server span and its call. */
    const struct cbn_span *fail = find(&spans, "c20d6dfd34a2f8a8");
    REQUIRE(fail != NULL);
    CHECK_STR(fail->operation, "/api/fail");
    CHECK_EQ(fail->error, 1);
    CHECK(id_is(fail->parent_id, "0000000000000000"));
    const struct cbn_span *failed_call = find(&spans, "1c9153dfa484fd6d");
    REQUIRE(failed_call != NULL);
    CHECK_EQ(failed_call->error, 1);

    /* Without the callees' spans the calls make inferred edges to the
     * addresses the frontend called. */
    struct node_spans *b = &spans;
    aggregate(&b, 1);
    REQUIRE_EQ(n_windows, 1);
    const struct cbn_window_service *fe =
        cbn_window_service(windows[0], "frontend");
    REQUIRE(fe != NULL);
    CHECK_EQ(fe->requests, 2);
    CHECK_EQ(fe->errors, 1);
    CHECK_EQ(windows[0]->n_services, 1);
    CHECK_EQ(windows[0]->n_edges, 2);
    uint64_t calls, paired;
    int inferred;
    edge("frontend", "127.0.0.1:7002", &calls, &paired, &inferred);
    CHECK_EQ(calls, 2);
    CHECK_EQ(paired, 0);
    CHECK_EQ(inferred, 1);
    edge("frontend", "127.0.0.1:7004", &calls, &paired, &inferred);
    CHECK_EQ(calls, 2);
    CHECK_EQ(inferred, 1);
    free_windows();
}

static void test_jaeger_sample(void)
{
    /* Derived from the four OTLP captures: two traces over frontend,
     * middle, cache and backend, 22 spans. */
    parse_sample(node_jaeger_traces, "jaeger-api-traces.derived.json", &spans);
    REQUIRE_EQ(spans.n, 22);
    const char *services[] = {"backend", "cache", "frontend", "middle"};
    for (size_t k = 0; k < 4; k++) {
        int n = 0, servers = 0;
        for (size_t i = 0; i < spans.n; i++) {
            if (strcmp(spans.v[i].service, services[k]) == 0) {
                n++;
                servers += spans.v[i].kind == CBN_SPAN_SERVER;
            }
        }
        CHECK(n > 0);
        CHECK_EQ(servers, 2);
    }
    const struct cbn_span *root = find(&spans, "64fd5fc4cb3116d9");
    REQUIRE(root != NULL);
    CHECK_STR(root->service, "frontend");
    CHECK_STR(root->instance, "acb6d06b-b083-4538-b996-02f3e2fa6afa");
    CHECK_STR(root->operation, "/api/home");
    CHECK_EQ(root->kind, CBN_SPAN_SERVER);
    CHECK(id_is(root->parent_id, "0"));
    CHECK(root->start_ns == 1795421747430000ull * US);
    CHECK(root->end_ns == root->start_ns + 57229 * US);
    const struct cbn_span *call = find(&spans, "ad3be4514e41502b");
    REQUIRE(call != NULL);
    CHECK_EQ(call->kind, CBN_SPAN_CLIENT);
    CHECK_EQ(call->error, 1);                /* error=true (bool) */
    CHECK_STR(call->peer, "127.0.0.1:7002"); /* server.port is an int64 */
    CHECK(id_is(call->parent_id, "185908103ed9f024"));
    const struct cbn_span *compute = find(&spans, "88ebd932111bacf7");
    REQUIRE(compute != NULL);
    CHECK_EQ(compute->kind, CBN_SPAN_INTERNAL);
    CHECK_STR(compute->operation, "compute");

    struct node_spans *b = &spans;
    aggregate(&b, 1);
    REQUIRE_EQ(n_windows, 1);
    const struct cbn_window *w = windows[0];
    CHECK_EQ(w->n_services, 4);
    CHECK_EQ(w->n_edges, 3);
    const char *pairs[][2] = {
        {"frontend", "middle"}, {"frontend", "cache"}, {"middle", "backend"}};
    for (size_t k = 0; k < 3; k++) {
        uint64_t calls, paired;
        int inferred;
        edge(pairs[k][0], pairs[k][1], &calls, &paired, &inferred);
        CHECK_EQ(calls, 2);
        CHECK_EQ(paired, 2);
        CHECK_EQ(inferred, 0);
    }
    const struct cbn_window_service *fe = cbn_window_service(w, "frontend");
    REQUIRE(fe != NULL);
    CHECK_EQ(fe->errors, 1);
    const struct cbn_window_service *cache = cbn_window_service(w, "cache");
    REQUIRE(cache != NULL);
    CHECK_EQ(cache->errors, 0);
    free_windows();
}

static void test_jaeger_equals_otlp(void)
{
    /* The Jaeger sample is the four OTLP captures converted: every
     * statistic must come out the same, durations to the microsecond
     * (Jaeger's unit; the OTLP end times carry nanoseconds). */
    parse_sample(node_jaeger_traces, "jaeger-api-traces.derived.json", &spans);
    struct node_spans otlp;
    node_spans_init(&otlp, 64u << 20);
    parse_sample(node_otlp_traces, "otlp-sample.json", &otlp);
    parse_sample(node_otlp_traces, "otlp-sample-middle.json", &otlp);
    parse_sample(node_otlp_traces, "otlp-sample-cache.json", &otlp);
    parse_sample(node_otlp_traces, "otlp-sample-backend.json", &otlp);
    struct lines from_jaeger = {0}, from_otlp = {0};
    struct node_spans *b = &spans;
    describe(&b, 1, &from_jaeger);
    b = &otlp;
    describe(&b, 1, &from_otlp);
    CHECK_EQ(from_jaeger.n, from_otlp.n);
    CHECK_EQ(from_jaeger.n, 22 + 4 + 3);
    for (size_t i = 0; i < from_jaeger.n && i < from_otlp.n; i++) {
        CHECK_STR(from_jaeger.v[i], from_otlp.v[i]);
    }
    free_lines(&from_jaeger);
    free_lines(&from_otlp);
    node_spans_free(&otlp);
}

/* ---- Zipkin edge cases ---------------------------------------------------
 */

#define ZK_TRACE "\"traceId\":\"be730f96bb5e88e353dea0ad4bbcc346\""

static void test_zipkin_microseconds(void)
{
    REQUIRE_OK(zipkin("[{" ZK_TRACE ",\"id\":\"0000000000000001\","
                      "\"timestamp\":1795422576828000,\"duration\":46351},"
                      "{" ZK_TRACE ",\"id\":\"0000000000000002\","
                      "\"timestamp\":\"1795422576828001\"}]"));
    REQUIRE_EQ(spans.n, 2);
    CHECK(spans.v[0].start_ns == 1795422576828000000ull);
    CHECK(spans.v[0].end_ns == 1795422576828000000ull + 46351000ull);
    /* A string timestamp; no duration: an instant. */
    CHECK(spans.v[1].start_ns == 1795422576828001000ull);
    CHECK(spans.v[1].end_ns == spans.v[1].start_ns);
    /* 16-hex trace ids are left-padded. */
    REQUIRE_OK(
        zipkin("[{\"traceId\":\"53dea0ad4bbcc346\",\"id\":\"1\","
               "\"timestamp\":1}]"));
    REQUIRE_EQ(spans.n, 1);
    CHECK_EQ(spans.v[0].trace_id[0], 0);
    CHECK_EQ(spans.v[0].trace_id[8], 0x53);
    CHECK_EQ(spans.v[0].trace_id[15], 0x46);
}

static void test_zipkin_shared_spans_pair(void)
{
    /* B3 shared span: client (frontend) and server (backend) both report
     * id 00000000000000aa; the server side is marked shared. */
    REQUIRE_OK(
        zipkin(
            "[{" ZK_TRACE ",\"id\":\"00000000000000aa\",\"parentId\":"
            "\"0000000000000001\",\"kind\":\"CLIENT\",\"name\":\"get\","
            "\"timestamp\":1795422576828000,\"duration\":3000,"
            "\"localEndpoint\":{\"serviceName\":\"frontend\"}},"
            "{" ZK_TRACE ",\"id\":\"00000000000000aa\",\"parentId\":"
            "\"0000000000000001\",\"kind\":\"SERVER\",\"shared\":true,"
            "\"name\":\"get\",\"timestamp\":1795422576829000,\"duration\":1000,"
            "\"localEndpoint\":{\"serviceName\":\"backend\"}}]"));
    REQUIRE_EQ(spans.n, 2);
    const struct cbn_span *server = &spans.v[1];
    CHECK(id_is(server->parent_id, "00000000000000aa"));
    CHECK(!id_is(server->span_id, "00000000000000aa"));
    CHECK(id_is(spans.v[0].span_id, "00000000000000aa"));
    struct node_spans *b = &spans;
    aggregate(&b, 1);
    uint64_t calls, paired;
    int inferred;
    edge("frontend", "backend", &calls, &paired, &inferred);
    CHECK_EQ(calls, 1);
    CHECK_EQ(paired, 1);
    CHECK_EQ(inferred, 0);
    free_windows();
}

static void test_zipkin_missing_local_endpoint(void)
{
    REQUIRE_OK(zipkin("[{" ZK_TRACE ",\"id\":\"0000000000000001\","
                      "\"name\":\"compute\",\"timestamp\":1,\"duration\":2},"
                      "{" ZK_TRACE ",\"id\":\"0000000000000002\","
                      "\"localEndpoint\":{\"serviceName\":\"\"},"
                      "\"timestamp\":1}]"));
    REQUIRE_EQ(spans.n, 2);
    CHECK_STR(spans.v[0].service, "unknown_service");
    CHECK_EQ(spans.v[0].kind, CBN_SPAN_INTERNAL);
    CHECK_STR(spans.v[0].operation, "compute");
    CHECK_STR(spans.v[0].instance, "");
    CHECK_STR(spans.v[1].service, "unknown_service");
    CHECK_STR(spans.v[1].operation, "");
}

static void test_zipkin_peers_and_tags(void)
{
    REQUIRE_OK(zipkin(
        "[{" ZK_TRACE
        ",\"id\":\"1\",\"kind\":\"CLIENT\",\"timestamp\":1,"
        "\"remoteEndpoint\":{\"serviceName\":\"db\",\"ipv4\":\"10.0.0.7\"}},"
        "{" ZK_TRACE
        ",\"id\":\"2\",\"kind\":\"CLIENT\",\"timestamp\":1,"
        "\"remoteEndpoint\":{\"ipv4\":\"10.0.0.7\",\"port\":5432}},"
        "{" ZK_TRACE
        ",\"id\":\"3\",\"kind\":\"CLIENT\",\"timestamp\":1,"
        "\"remoteEndpoint\":{\"serviceName\":\"db\"},"
        "\"tags\":{\"server.address\":\"cache.local\","
        "\"server.port\":\"6379\"}},"
        "{" ZK_TRACE
        ",\"id\":\"4\",\"kind\":\"CLIENT\",\"timestamp\":1,"
        "\"remoteEndpoint\":{\"ipv6\":\"::1\",\"port\":80}},"
        "{" ZK_TRACE
        ",\"id\":\"5\",\"kind\":\"SERVER\",\"timestamp\":1,"
        "\"name\":\"get /x\",\"tags\":{\"http.path\":\"/x/1\","
        "\"error\":\"boom\"}},"
        "{" ZK_TRACE
        ",\"id\":\"6\",\"kind\":\"PRODUCER\",\"timestamp\":1,"
        "\"tags\":{\"http.route\":\"/r/:id\",\"url.path\":\"/r/1\","
        "\"otel.status_code\":\"ERROR\",\"n\":7,\"b\":true,\"o\":{}}},"
        "{" ZK_TRACE ",\"id\":\"7\",\"kind\":\"CONSUMER\",\"timestamp\":1}]"));
    REQUIRE_EQ(spans.n, 7);
    CHECK_STR(spans.v[0].peer, "db");
    CHECK_STR(spans.v[1].peer, "10.0.0.7:5432");
    CHECK_STR(spans.v[2].peer, "cache.local:6379"); /* tags first */
    CHECK_STR(spans.v[3].peer, "[::1]:80");
    CHECK_EQ(spans.v[0].error, 0);
    CHECK_STR(spans.v[4].operation, "/x/1"); /* Brave's http.path */
    CHECK_STR(spans.v[4].peer, "");
    CHECK_EQ(spans.v[4].error, 1); /* any error tag */
    CHECK_EQ(spans.v[5].kind, CBN_SPAN_PRODUCER);
    CHECK_STR(spans.v[5].operation, "/r/:id");
    CHECK_EQ(spans.v[5].error, 1);
    CHECK_EQ(spans.v[6].kind, CBN_SPAN_CONSUMER);
}

static void test_zipkin_empty(void)
{
    CHECK_OK(zipkin("[]"));
    CHECK_EQ(spans.n, 0);
    CHECK_OK(zipkin(" [ ]\n"));
    CHECK_EQ(spans.n, 0);
}

static void expect_error(int rv, int code, const char *message)
{
    CHECK_EQ(rv, code);
    if (strstr(err, message) == NULL) {
        check__fail(__FILE__, __LINE__, 0, "message \"%s\" lacks \"%s\"", err,
                    message);
    }
}

static void test_zipkin_bad_input(void)
{
    static const struct
    {
        const char *json, *message;
    } cases[] = {
        {"[{\"traceId\":\"zz\",\"id\":\"1\",\"timestamp\":1}]",
         "span 0: traceId is not 16 or 32 hex digits"},
        {"[{" ZK_TRACE ",\"id\":\"1\",\"timestamp\":1},"
         "{" ZK_TRACE ",\"id\":\"xyz\",\"timestamp\":1}]",
         "span 1: id is not 16 hex digits"},
        {"[{" ZK_TRACE ",\"id\":\"00112233445566778\",\"timestamp\":1}]",
         "span 0: id is not 16 hex digits"},
        {"[{" ZK_TRACE ",\"timestamp\":1}]", "span 0: id is missing"},
        {"[{" ZK_TRACE ",\"id\":\"1\",\"parentId\":7,\"timestamp\":1}]",
         "span 0: parentId is not 16 hex digits"},
        {"[{" ZK_TRACE ",\"id\":\"1\"}]", "span 0: timestamp is missing"},
        {"[{" ZK_TRACE ",\"id\":\"1\",\"timestamp\":-5}]",
         "span 0: timestamp is not a non-negative integer"},
        {"[{" ZK_TRACE ",\"id\":\"1\",\"timestamp\":1,\"duration\":1.5}]",
         "span 0: duration is not a non-negative integer"},
        {"[{" ZK_TRACE ",\"id\":\"1\",\"timestamp\":18446744073709552}]",
         "span 0: timestamp or duration out of range"},
        {"[{" ZK_TRACE ",\"id\":\"1\",\"timestamp\":1,\"kind\":\"client\"}]",
         "span 0: kind is not CLIENT"},
        {"[{" ZK_TRACE ",\"id\":\"1\",\"timestamp\":1,"
         "\"localEndpoint\":\"frontend\"}]",
         "span 0: an endpoint is not an object"},
        {"[1]", "span 0: not an object"},
        {"{\"spans\":[]}", "expected a JSON array"},
        {"[{" ZK_TRACE ",\"id\":\"1\",\"timestamp\":1", "invalid JSON"},
        {"[{}] x", "invalid JSON"},
        {"", "invalid JSON"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        expect_error(zipkin(cases[i].json), SM_EMALFORMED, cases[i].message);
    }
}

static void test_limits(void)
{
    /* The batch limit bounds the tree and the batch. */
    node_spans_free(&spans);
    node_spans_init(&spans, 4096);
    size_t len;
    char *body = check_read_sample("zipkin-v2-sample.json", &len);
    CHECK_EQ(node_zipkin_spans((const uint8_t *)body, len, &spans, err),
             SM_ETOOBIG);
    free(body);
    node_spans_reset(&spans);
    body = check_read_sample("jaeger-api-traces.derived.json", &len);
    CHECK_EQ(node_jaeger_traces((const uint8_t *)body, len, &spans, err),
             SM_ETOOBIG);
    free(body);
    /* Small bodies still fit. */
    CHECK_OK(zipkin("[{" ZK_TRACE ",\"id\":\"1\",\"timestamp\":1}]"));
    CHECK_EQ(spans.n, 1);
}

/* ---- Jaeger edge cases ---------------------------------------------------
 */

static void test_jaeger_short_ids_and_times(void)
{
    /* Jaeger's own fixtures use ids like "2"; spans before processes. */
    REQUIRE_OK(jaeger(
        "{\"data\":[{\"traceID\":\"1\",\"spans\":[{\"traceID\":\"1\","
        "\"spanID\":\"2\",\"operationName\":\"op\",\"references\":"
        "[{\"refType\":\"CHILD_OF\",\"traceID\":\"1\",\"spanID\":\"a\"}],"
        "\"startTime\":1795421747501000,\"duration\":14064,"
        "\"processID\":\"p1\",\"tags\":[]}],"
        "\"processes\":{\"p1\":{\"serviceName\":\"svc\",\"tags\":["
        "{\"key\":\"hostname\",\"type\":\"string\",\"value\":\"h1\"}]}}}],"
        "\"total\":0,\"limit\":0,\"offset\":0,\"errors\":null}"));
    REQUIRE_EQ(spans.n, 1);
    const struct cbn_span *s = &spans.v[0];
    CHECK_EQ(s->trace_id[15], 1);
    CHECK_EQ(s->trace_id[0], 0);
    CHECK(id_is(s->span_id, "0000000000000002"));
    CHECK(id_is(s->parent_id, "000000000000000a"));
    CHECK(s->start_ns == 1795421747501000000ull);
    CHECK(s->end_ns == s->start_ns + 14064000ull);
    CHECK_STR(s->service, "svc");
    CHECK_STR(s->instance, "h1"); /* hostname when no service.instance.id */
    CHECK_STR(s->operation, "op");
    CHECK_EQ(s->kind, CBN_SPAN_UNSPECIFIED);
}

static void test_jaeger_references(void)
{
    REQUIRE_OK(jaeger(
        "[{\"traceID\":\"1\",\"processes\":{},\"spans\":["
        /* FOLLOWS_FROM is skipped for the CHILD_OF after it. */
        "{\"spanID\":\"3\",\"startTime\":1,\"references\":["
        "{\"refType\":\"FOLLOWS_FROM\",\"traceID\":\"1\",\"spanID\":\"1\"},"
        "{\"refType\":\"CHILD_OF\",\"traceID\":\"1\",\"spanID\":\"2\"}]},"
        /* Only FOLLOWS_FROM: a root. */
        "{\"spanID\":\"4\",\"startTime\":1,\"references\":["
        "{\"refType\":\"FOLLOWS_FROM\",\"traceID\":\"1\",\"spanID\":\"3\"}]},"
        /* A CHILD_OF into another trace does not count. */
        "{\"spanID\":\"5\",\"startTime\":1,\"references\":["
        "{\"refType\":\"CHILD_OF\",\"traceID\":\"9\",\"spanID\":\"3\"},"
        "{\"refType\":\"CHILD_OF\",\"spanID\":\"4\"}]},"
        /* The first CHILD_OF wins. */
        "{\"spanID\":\"6\",\"startTime\":1,\"references\":["
        "{\"refType\":\"CHILD_OF\",\"spanID\":\"5\"},"
        "{\"refType\":\"CHILD_OF\",\"spanID\":\"4\"}]},"
        /* The deprecated parentSpanID field. */
        "{\"spanID\":\"7\",\"startTime\":1,\"parentSpanID\":\"6\"}]}]"));
    REQUIRE_EQ(spans.n, 5);
    CHECK(id_is(spans.v[0].parent_id, "2"));
    CHECK(id_is(spans.v[1].parent_id, "0"));
    CHECK(id_is(spans.v[2].parent_id, "4"));
    CHECK(id_is(spans.v[3].parent_id, "5"));
    CHECK(id_is(spans.v[4].parent_id, "6"));
    /* Trace-level traceID stands in for the spans'. */
    CHECK_EQ(spans.v[0].trace_id[15], 1);
    /* No processID, no process: unknown_service. */
    CHECK_STR(spans.v[0].service, "unknown_service");
}

static void test_jaeger_tags_and_shapes(void)
{
    /* A single trace object (UI export), typed tags, embedded process. */
    REQUIRE_OK(jaeger(
        "{\"traceID\":\"ab\",\"spans\":["
        "{\"spanID\":\"1\",\"startTime\":1,\"duration\":5,\"processID\":\"p\","
        "\"operationName\":\"GET\",\"tags\":["
        "{\"key\":\"span.kind\",\"type\":\"string\",\"value\":\"client\"},"
        "{\"key\":\"server.address\",\"type\":\"string\",\"value\":\"h\"},"
        "{\"key\":\"server.port\",\"type\":\"int64\",\"value\":7004},"
        "{\"key\":\"error\",\"type\":\"bool\",\"value\":true},"
        "{\"key\":\"ratio\",\"type\":\"float64\",\"value\":0.5},"
        "{\"key\":\"blob\",\"type\":\"binary\",\"value\":\"AAE=\"},"
        "{\"type\":\"string\",\"value\":\"no key\"},"
        "{\"key\":\"nothing\",\"type\":\"string\",\"value\":null}]},"
        "{\"spanID\":\"2\",\"startTime\":1,\"operationName\":\"GET\","
        "\"process\":{\"serviceName\":\"embedded\",\"tags\":["
        "{\"key\":\"service.instance.id\",\"value\":\"i-9\"}]},\"tags\":["
        "{\"key\":\"span.kind\",\"value\":\"server\"},"
        "{\"key\":\"error\",\"type\":\"bool\",\"value\":false},"
        "{\"key\":\"http.route\",\"value\":\"/api/:id\"}]},"
        "{\"spanID\":\"3\",\"startTime\":1,\"processID\":\"p\",\"tags\":["
        "{\"key\":\"span.kind\",\"value\":\"producer\"},"
        "{\"key\":\"service.instance.id\",\"value\":\"own\"},"
        "{\"key\":\"otel.status_code\",\"value\":\"ERROR\"}]},"
        "{\"spanID\":\"4\",\"startTime\":1,\"processID\":\"p\",\"tags\":["
        "{\"key\":\"span.kind\",\"value\":\"consumer\"}]},"
        "{\"spanID\":\"5\",\"startTime\":1,\"processID\":\"p\",\"tags\":["
        "{\"key\":\"span.kind\",\"value\":\"sideways\"}]}],"
        "\"processes\":{\"p\":{\"serviceName\":\"old\"},"
        "\"p\":{\"serviceName\":\"front\",\"tags\":["
        "{\"key\":\"service.instance.id\",\"value\":\"i-1\"},"
        "{\"key\":\"hostname\",\"value\":\"h1\"}]}}}"));
    REQUIRE_EQ(spans.n, 5);
    const struct cbn_span *c = &spans.v[0];
    CHECK_EQ(c->kind, CBN_SPAN_CLIENT);
    CHECK_STR(c->service, "front"); /* the last of repeated keys */
    CHECK_STR(c->instance, "i-1");
    CHECK_STR(c->peer, "h:7004");
    CHECK_EQ(c->error, 1);
    CHECK(c->end_ns == c->start_ns + 5 * US);
    const struct cbn_span *s = &spans.v[1];
    CHECK_EQ(s->kind, CBN_SPAN_SERVER);
    CHECK_STR(s->service, "embedded");
    CHECK_STR(s->instance, "i-9");
    CHECK_STR(s->operation, "/api/:id");
    CHECK_EQ(s->error, 0);
    CHECK_EQ(spans.v[2].kind, CBN_SPAN_PRODUCER);
    CHECK_STR(spans.v[2].instance, "own");
    CHECK_EQ(spans.v[2].error, 1);
    CHECK_EQ(spans.v[3].kind, CBN_SPAN_CONSUMER);
    CHECK_EQ(spans.v[4].kind, CBN_SPAN_UNSPECIFIED);

    CHECK_OK(jaeger("{\"data\":null,\"errors\":null}"));
    CHECK_EQ(spans.n, 0);
    CHECK_OK(jaeger("{\"data\":[]}"));
    CHECK_EQ(spans.n, 0);
    CHECK_OK(jaeger("[]"));
    CHECK_EQ(spans.n, 0);
}

static void test_jaeger_bad_input(void)
{
    static const struct
    {
        const char *json, *message;
    } cases[] = {
        {"{\"data\":[{\"spans\":[{\"traceID\":\"1\",\"spanID\":\"zz\","
         "\"startTime\":1}]}]}",
         "trace 0, span 0: spanID is not a hex id"},
        {"{\"data\":[{\"spans\":[]},{\"spans\":[{\"traceID\":\"1\","
         "\"startTime\":1},{}]}]}",
         "trace 1, span 0: spanID is missing"},
        {"[{\"spans\":[{\"spanID\":\"1\",\"startTime\":1}]}]",
         "trace 0, span 0: traceID is missing"},
        {"[{\"traceID\":\"1\",\"spans\":[{\"spanID\":\"1\"}]}]",
         "trace 0, span 0: startTime is missing"},
        {"[{\"traceID\":\"1\",\"spans\":[{\"spanID\":\"1\",\"startTime\":1,"
         "\"duration\":-1}]}]",
         "trace 0, span 0: duration is not a non-negative integer"},
        {"[{\"traceID\":\"1\",\"spans\":[{\"spanID\":\"1\",\"startTime\":1,"
         "\"processID\":\"p2\"}],\"processes\":{\"p1\":{}}}]",
         "trace 0, span 0: processID \"p2\" is not in processes"},
        {"[{\"traceID\":\"1\",\"spans\":[{\"spanID\":\"1\",\"startTime\":1,"
         "\"references\":[{\"refType\":\"CHILD_OF\",\"spanID\":\"q\"}]}]}]",
         "trace 0, span 0: references[].spanID is not a hex id"},
        {"[{\"traceID\":\"1\",\"spans\":[{\"spanID\":\"1\",\"startTime\":1,"
         "\"references\":{}}]}]",
         "trace 0, span 0: references is not an array"},
        {"[{\"traceID\":\"1\",\"spans\":[],\"processes\":[]}]",
         "trace 0: processes is not an object"},
        {"[{\"traceID\":\"1\",\"spans\":[],\"processes\":{\"p\":7}}]",
         "trace 0: process \"p\" is not an object"},
        {"[{\"traceID\":\"1\"}]", "trace 0: spans is not an array"},
        {"[7]", "trace 0: not an object"},
        {"[{\"spans\":[7]}]", "trace 0, span 0: not an object"},
        {"{\"data\":{}}", "data is not an array"},
        {"{\"result\":{}}", "expected {\"data\":[traces]}"},
        {"{\"data\":[{\"traceID\":\"1\",\"spans\":[", "invalid JSON"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        expect_error(jaeger(cases[i].json), SM_EMALFORMED, cases[i].message);
    }
}

static const struct check_test tests[] = {
    {"zipkin sample: frontend spans, inferred edges", test_zipkin_sample},
    {"jaeger sample: four services, paired edges", test_jaeger_sample},
    {"jaeger sample gives the statistics of the same OTLP traces",
     test_jaeger_equals_otlp},
    {"zipkin times are microseconds", test_zipkin_microseconds},
    {"zipkin shared span ids pair client and server",
     test_zipkin_shared_spans_pair},
    {"zipkin without localEndpoint is unknown_service",
     test_zipkin_missing_local_endpoint},
    {"zipkin peers, kinds, tags and errors", test_zipkin_peers_and_tags},
    {"zipkin empty array is no spans", test_zipkin_empty},
    {"zipkin bad input is refused with its place", test_zipkin_bad_input},
    {"batch limit gives SM_ETOOBIG", test_limits},
    {"jaeger short ids, microseconds, processes after spans",
     test_jaeger_short_ids_and_times},
    {"jaeger first CHILD_OF in the trace is the parent",
     test_jaeger_references},
    {"jaeger typed tags, kinds and document shapes",
     test_jaeger_tags_and_shapes},
    {"jaeger bad input is refused with its place", test_jaeger_bad_input},
};

CHECK_MAIN(tests, setup, teardown)
