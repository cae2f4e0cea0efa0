/* Tests for the window aggregator: windows and watermarks, RPC pairing in
 * any order, fallback edges, late data, metrics and rates, all-or-nothing
 * batches, and the window encoding. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/err.h"
#include "base/rng.h"
#include "cbn/cbn.h"
#include "check.h"

#define S  1000000000ull /* one second in ns */
#define MS 1000000ull
#define T0 (1795421730ull * S) /* a multiple of 30 s */

static struct cbn_window *closed[64];
static size_t n_closed;

static void collect(void *arg, struct cbn_window *w)
{
    (void)arg;
    REQUIRE(n_closed < 64);
    closed[n_closed++] = w;
}

static void teardown(void)
{
    for (size_t i = 0; i < n_closed; i++) {
        cbn_window_free(closed[i]);
    }
    n_closed = 0;
}

static struct cbn_agg *new_agg(void)
{
    struct cbn_agg_config c = {
        .window_ns = 30 * S,
        .lateness_ns = 5 * S,
        .qos_service = "frontend",
        .qos_target_ms = 50,
        .qos_percentile = 99,
        .hash_seed = check_seed(),
    };
    struct cbn_agg *agg;
    REQUIRE_OK(cbn_agg_new(&c, &agg));
    return agg;
}

/* A span with ids derived from small integers. */
static struct cbn_span span(int trace,
                            int id,
                            int parent,
                            int kind,
                            const char *service,
                            uint64_t start,
                            uint64_t dur)
{
    struct cbn_span s = {
        .start_ns = start,
        .end_ns = start + dur,
        .kind = (enum cbn_span_kind)kind,
        .service = service,
        .instance = "",
        .operation = "GET /",
        .peer = "",
    };
    memset(s.trace_id, 0, 16);
    memcpy(s.trace_id, &trace, sizeof trace);
    memset(s.span_id, 0, 8);
    memcpy(s.span_id, &id, sizeof id);
    memset(s.parent_id, 0, 8);
    memcpy(s.parent_id, &parent, sizeof parent);
    return s;
}

/* One request: frontend SERVER (id 1) -> frontend CLIENT (id 2) ->
 * backend SERVER (id 3, parent 2). Latencies in ms. */
static void request(struct cbn_span out[3],
                    int trace,
                    uint64_t start,
                    uint64_t front_ms,
                    uint64_t client_ms,
                    uint64_t back_ms)
{
    int base = trace * 10;
    out[0] = span(trace, base + 1, 0, CBN_SPAN_SERVER, "frontend", start,
                  front_ms * MS);
    out[1] = span(trace, base + 2, base + 1, CBN_SPAN_CLIENT, "frontend",
                  start + MS, client_ms * MS);
    out[2] = span(trace, base + 3, base + 2, CBN_SPAN_SERVER, "backend",
                  start + MS + (client_ms - back_ms) * MS / 2, back_ms * MS);
}

static void test_window_closes_on_watermark(void)
{
    struct cbn_agg *agg = new_agg();
    struct cbn_span s[3];
    request(s, 1, T0 + 1 * S, 20, 12, 10);
    REQUIRE_OK(cbn_agg_add_spans(agg, s, 3));
    REQUIRE_OK(cbn_agg_close_ready(agg, collect, NULL));
    CHECK_EQ(n_closed, 0);
    /* 34 s: watermark 29 s, the first window [0, 30) still open. */
    request(s, 2, T0 + 33 * S, 20, 12, 10);
    REQUIRE_OK(cbn_agg_add_spans(agg, s, 3));
    REQUIRE_OK(cbn_agg_close_ready(agg, collect, NULL));
    CHECK_EQ(n_closed, 0);
    request(s, 3, T0 + 35 * S, 20, 12, 10);
    REQUIRE_OK(cbn_agg_add_spans(agg, s, 3));
    REQUIRE_OK(cbn_agg_close_ready(agg, collect, NULL));
    REQUIRE_EQ(n_closed, 1);
    const struct cbn_window *w = closed[0];
    CHECK_EQ(w->start_ns, T0);
    CHECK_EQ(w->end_ns, T0 + 30 * S);
    REQUIRE_EQ(w->n_services, 2);
    const struct cbn_window_service *fe = cbn_window_service(w, "frontend");
    REQUIRE(fe != NULL);
    CHECK_EQ(fe->requests, 1);
    CHECK_NEAR(fe->latency_ms[2], 20, 0.2);
    const struct cbn_window_edge *e = cbn_window_edge(w, "frontend", "backend");
    REQUIRE(e != NULL);
    CHECK_EQ(e->calls, 1);
    CHECK_EQ(e->paired, 1);
    CHECK(!e->inferred);
    CHECK_NEAR(e->client_ms[2], 12, 0.12);
    CHECK_NEAR(e->server_ms[2], 10, 0.1);
    CHECK_NEAR(e->network_ms[2], 2, 0.02);
    CHECK_NEAR(w->qos_latency_ms, 20, 0.2);
    CHECK(!w->qos_violated);
    /* Flush closes the rest; later data for them is late. */
    REQUIRE_OK(cbn_agg_flush(agg, collect, NULL));
    CHECK_EQ(n_closed, 2);
    request(s, 4, T0 + 40 * S, 20, 12, 10);
    REQUIRE_OK(cbn_agg_add_spans(agg, s, 3));
    struct cbn_agg_stats st;
    cbn_agg_stats(agg, &st);
    CHECK_EQ(st.spans_late, 3);
    CHECK_EQ(st.spans_accepted, 9);
    CHECK_EQ(st.windows_closed, 2);
    cbn_agg_free(agg);
}

static void test_pairing_any_order(void)
{
    /* Each request's three spans arrive in a different order and split
     * over batches. */
    struct cbn_agg *agg = new_agg();
    static const int orders[6][3] = {{0, 1, 2}, {0, 2, 1}, {1, 0, 2},
                                     {1, 2, 0}, {2, 0, 1}, {2, 1, 0}};
    for (int r = 0; r < 6; r++) {
        struct cbn_span s[3];
        request(s, 100 + r, T0 + (uint64_t)r * S, 30, 20, 15);
        for (int k = 0; k < 3; k++) {
            REQUIRE_OK(cbn_agg_add_spans(agg, &s[orders[r][k]], 1));
        }
    }
    /* And six more, each as one shuffled batch. */
    struct sm_rng rng;
    sm_rng_seed(&rng, check_seed());
    for (int r = 0; r < 6; r++) {
        struct cbn_span s[3];
        request(s, 200 + r, T0 + (uint64_t)r * S, 30, 20, 15);
        for (int k = 2; k > 0; k--) {
            int j = (int)sm_rng_below(&rng, (uint64_t)k + 1);
            struct cbn_span t = s[k];
            s[k] = s[j];
            s[j] = t;
        }
        REQUIRE_OK(cbn_agg_add_spans(agg, s, 3));
    }
    REQUIRE_OK(cbn_agg_flush(agg, collect, NULL));
    REQUIRE_EQ(n_closed, 1);
    const struct cbn_window_edge *e =
        cbn_window_edge(closed[0], "frontend", "backend");
    REQUIRE(e != NULL);
    CHECK_EQ(e->calls, 12);
    CHECK_EQ(e->paired, 12);
    CHECK_EQ(cbn_window_service(closed[0], "backend")->requests, 12);
    struct cbn_agg_stats st;
    cbn_agg_stats(agg, &st);
    CHECK_EQ(st.pending_spans, 0);
    cbn_agg_free(agg);
}

static void test_fallback_edge(void)
{
    /* The backend is uninstrumented: the client span names it. A client
     * with no peer counts for no edge. */
    struct cbn_agg *agg = new_agg();
    struct cbn_span s[3];
    s[0] = span(7, 1, 0, CBN_SPAN_SERVER, "frontend", T0 + S, 30 * MS);
    s[1] = span(7, 2, 1, CBN_SPAN_CLIENT, "frontend", T0 + S + MS, 25 * MS);
    s[1].peer = "redis:6379";
    s[2] = span(7, 3, 1, CBN_SPAN_CLIENT, "frontend", T0 + S + MS, 5 * MS);
    REQUIRE_OK(cbn_agg_add_spans(agg, s, 3));
    REQUIRE_OK(cbn_agg_flush(agg, collect, NULL));
    REQUIRE_EQ(n_closed, 1);
    const struct cbn_window *w = closed[0];
    CHECK_EQ(w->n_edges, 1);
    const struct cbn_window_edge *e =
        cbn_window_edge(w, "frontend", "redis:6379");
    REQUIRE(e != NULL);
    CHECK(e->inferred);
    CHECK_EQ(e->calls, 1);
    CHECK_EQ(e->paired, 0);
    CHECK_NEAR(e->client_ms[3], 25, 0.25);
    CHECK(isnan(e->server_ms[3]));
    struct cbn_agg_stats st;
    cbn_agg_stats(agg, &st);
    CHECK_EQ(st.pending_spans, 0);
    cbn_agg_free(agg);
}

static void test_late_server_after_close_is_forgotten(void)
{
    /* A SERVER whose caller never shows up waits one extra window, then is
     * forgotten; its own latency counted all along. */
    struct cbn_agg *agg = new_agg();
    struct cbn_span s =
        span(9, 3, 2, CBN_SPAN_SERVER, "backend", T0 + S, 10 * MS);
    REQUIRE_OK(cbn_agg_add_spans(agg, &s, 1));
    for (int k = 1; k <= 3; k++) {
        struct cbn_span tick = span(10 + k, 1, 0, CBN_SPAN_SERVER, "frontend",
                                    T0 + (uint64_t)k * 30 * S + 10 * S, MS);
        REQUIRE_OK(cbn_agg_add_spans(agg, &tick, 1));
        REQUIRE_OK(cbn_agg_close_ready(agg, collect, NULL));
    }
    struct cbn_agg_stats st;
    cbn_agg_stats(agg, &st);
    CHECK_EQ(n_closed, 3);
    CHECK_EQ(st.pending_spans, 0);
    CHECK_EQ(cbn_window_service(closed[0], "backend")->requests, 1);
    cbn_agg_free(agg);
}

static void test_malformed_batch_changes_nothing(void)
{
    struct cbn_agg *agg = new_agg();
    struct cbn_span s[4];
    request(s, 1, T0 + S, 20, 12, 10);
    s[3] = span(1, 99, 0, CBN_SPAN_SERVER, "", T0 + S, MS); /* no service */
    CHECK_EQ(cbn_agg_add_spans(agg, s, 4), SM_EMALFORMED);
    s[3] = span(1, 99, 0, CBN_SPAN_SERVER, "x", T0 + S, MS);
    s[3].end_ns = s[3].start_ns - 1;
    CHECK_EQ(cbn_agg_add_spans(agg, s, 4), SM_EMALFORMED);
    struct cbn_agg_stats st;
    cbn_agg_stats(agg, &st);
    CHECK_EQ(st.spans_accepted, 0);
    CHECK_EQ(st.windows_open, 0);
    CHECK_EQ(st.pending_spans, 0);
    REQUIRE_OK(cbn_agg_flush(agg, collect, NULL));
    CHECK_EQ(n_closed, 0);
    cbn_agg_free(agg);
}

static void test_back_pressure(void)
{
    struct cbn_agg_config c = {.window_ns = 30 * S, .max_pending = 4};
    struct cbn_agg *agg;
    REQUIRE_OK(cbn_agg_new(&c, &agg));
    struct cbn_span s[5];
    for (int i = 0; i < 5; i++) {
        s[i] = span(i, 2, 1, CBN_SPAN_CLIENT, "a", T0 + S, MS);
    }
    CHECK_EQ(cbn_agg_add_spans(agg, s, 5), SM_EAGAIN);
    CHECK_OK(cbn_agg_add_spans(agg, s, 4));
    CHECK_EQ(cbn_agg_add_spans(agg, &s[4], 1), SM_EAGAIN);
    cbn_agg_free(agg);
}

static void test_far_future_rejected(void)
{
    /* One span from a broken clock must not close every window. */
    struct cbn_agg *agg = new_agg();
    struct cbn_span s = span(1, 1, 0, CBN_SPAN_SERVER, "frontend", T0 + S, MS);
    REQUIRE_OK(cbn_agg_add_spans(agg, &s, 1));
    struct cbn_span bad =
        span(2, 1, 0, CBN_SPAN_SERVER, "frontend", T0 + 400000 * S, MS);
    REQUIRE_OK(cbn_agg_add_spans(agg, &bad, 1));
    REQUIRE_OK(cbn_agg_close_ready(agg, collect, NULL));
    CHECK_EQ(n_closed, 0);
    struct cbn_agg_stats st;
    cbn_agg_stats(agg, &st);
    CHECK_EQ(st.spans_rejected, 1);
    cbn_agg_free(agg);
}

static struct cbn_metric_point point(const char *svc,
                                     const char *inst,
                                     const char *name,
                                     uint64_t t,
                                     double v,
                                     int cumulative)
{
    struct cbn_metric_point p = {svc, inst, name, "", "", t, v, cumulative};
    return p;
}

static void test_metrics_and_rates(void)
{
    struct cbn_agg *agg = new_agg();
    /* Two replicas' CPU counters scraped every 5 s: replica a burns 0.5
     * core, b burns 1.5 cores; memory gauges; a counter reset on b. */
    struct cbn_metric_point pts[32];
    size_t n = 0;
    for (int k = 0; k < 6; k++) {
        uint64_t t = T0 + (uint64_t)k * 5 * S;
        pts[n++] = point("cart", "a", "container_cpu_usage_seconds_total", t,
                         100 + 2.5 * k, 1);
        double b = k < 3 ? 50 + 7.5 * k : 7.5 * (k - 3) + 7.5;
        pts[n++] =
            point("cart", "b", "container_cpu_usage_seconds_total", t, b, 1);
        pts[n++] =
            point("cart", "a", "container_memory_working_set_bytes", t, 1e8, 0);
        pts[n++] =
            point("cart", "b", "container_memory_working_set_bytes", t, 3e8, 0);
    }
    REQUIRE_OK(cbn_agg_add_metrics(agg, pts, n));
    REQUIRE_OK(cbn_agg_flush(agg, collect, NULL));
    REQUIRE_EQ(n_closed, 1);
    const struct cbn_window_service *svc =
        cbn_window_service(closed[0], "cart");
    REQUIRE(svc != NULL);
    CHECK_EQ(svc->requests, 0);
    REQUIRE_EQ(svc->n_metrics, 2);
    const struct cbn_window_metric *cpu = &svc->metrics[0];
    CHECK_STR(cpu->name, "container_cpu_usage_seconds_total");
    CHECK_EQ(cpu->resource, CBN_RES_CPU);
    CHECK_EQ(cpu->samples, 10);         /* 5 rates per replica */
    CHECK_NEAR(cpu->pct[0], 0.5, 0.01); /* p10: replica a */
    CHECK_NEAR(cpu->pct[6], 1.5, 0.02); /* p99: replica b, reset included */
    const struct cbn_window_metric *mem = &svc->metrics[1];
    CHECK_EQ(mem->resource, CBN_RES_MEMORY);
    CHECK_EQ(mem->samples, 12);
    CHECK_NEAR(mem->pct[2], 1e8, 1e6);
    CHECK_NEAR(mem->pct[6], 3e8, 3e6);
    cbn_agg_free(agg);
}

static void test_resource_classes(void)
{
    CHECK_EQ(cbn_resource_classify("container_fs_reads_bytes_total", NULL, 0),
             CBN_RES_DISK);
    CHECK_EQ(cbn_resource_classify("node_network_receive_bytes_total", NULL, 0),
             CBN_RES_NETWORK);
    CHECK_EQ(cbn_resource_classify("probe_duration_seconds", NULL, 0),
             CBN_RES_NETWORK);
    CHECK_EQ(cbn_resource_classify("my_queue_depth", NULL, 0), CBN_RES_OTHER);
    struct cbn_resource_rule o[] = {{"my_", CBN_RES_CPU},
                                    {"node_network_receive", CBN_RES_OTHER}};
    CHECK_EQ(cbn_resource_classify("my_queue_depth", o, 2), CBN_RES_CPU);
    CHECK_EQ(cbn_resource_classify("node_network_receive_bytes_total", o, 2),
             CBN_RES_OTHER);
    enum cbn_resource r;
    CHECK_OK(cbn_resource_parse("llc", &r));
    CHECK_EQ(r, CBN_RES_LLC);
    CHECK_EQ(cbn_resource_parse("gpu", &r), SM_EINVAL);
    CHECK_STR(cbn_resource_name(CBN_RES_UNKNOWN), "unknown");
}

/* A workload with many services, edges, replicas and metrics, used by the
 * encoding and fault-injection tests: 20 batches of 30 spans and 8 points. */
#define N_BATCHES 20
static struct cbn_span wl_spans[N_BATCHES][30];
static struct cbn_metric_point wl_points[N_BATCHES][8];

static void make_workload(uint64_t seed)
{
    static const char *const svcs[] = {"frontend", "cart", "user", "db"};
    struct sm_rng rng;
    sm_rng_seed(&rng, seed);
    for (int b = 0; b < N_BATCHES; b++) {
        struct cbn_span *s = wl_spans[b];
        for (int r = 0; r < 10; r++) {
            int callee = 1 + (int)sm_rng_below(&rng, 3);
            uint64_t t = T0 + (uint64_t)b * 3 * S + (uint64_t)r * 100 * MS;
            uint64_t back = 1 + sm_rng_below(&rng, 40);
            int trace = b * 100 + r;
            s[3 * r] = span(trace, 1, 0, CBN_SPAN_SERVER, "frontend", t,
                            (back + 10) * MS);
            s[3 * r + 1] = span(trace, 2, 1, CBN_SPAN_CLIENT, "frontend",
                                t + MS, (back + 3) * MS);
            s[3 * r + 1].peer = svcs[callee];
            s[3 * r + 2] = span(trace, 3, 2, CBN_SPAN_SERVER, svcs[callee],
                                t + 2 * MS, back * MS);
            s[3 * r + 2].error = r == 3;
        }
        struct cbn_metric_point *p = wl_points[b];
        for (int k = 0; k < 4; k++) {
            p[2 * k] = point(svcs[k], "i1", "container_cpu_usage_seconds_total",
                             T0 + (uint64_t)b * 3 * S, 10.0 * b + k, 1);
            p[2 * k + 1] =
                point(svcs[k], "i1", "probe_duration_seconds",
                      T0 + (uint64_t)b * 3 * S,
                      0.001 * (1 + (double)sm_rng_below(&rng, 9)), 0);
            p[2 * k + 1].peer = "db";
        }
    }
    /* Every fourth request's server span arrives a batch later (and the
     * later batch's one a batch earlier): pairing across batches. */
    for (int b = 0; b + 1 < N_BATCHES; b += 2) {
        for (int r = 0; r < 10; r += 4) {
            struct cbn_span t = wl_spans[b][3 * r + 2];
            wl_spans[b][3 * r + 2] = wl_spans[b + 1][3 * r + 2];
            wl_spans[b + 1][3 * r + 2] = t;
        }
    }
}

/* Applies the workload. With @fault_at >= 0, each batch's first attempt
 * fails at its allocation number @fault_at; a batch that fails must have
 * changed nothing visible, and its retry must succeed. Returns the number
 * of failed attempts. */
static int run_workload(struct cbn_agg *agg, int fault_at)
{
    int failures = 0;
    for (int b = 0; b < N_BATCHES; b++) {
        for (int kind = 0; kind < 2; kind++) {
            struct cbn_agg_stats before, after;
            cbn_agg_stats(agg, &before);
            if (fault_at >= 0) {
                check_heap_fault(fault_at, 1);
            }
            int rv = kind == 0 ? cbn_agg_add_spans(agg, wl_spans[b], 30)
                               : cbn_agg_add_metrics(agg, wl_points[b], 8);
            if (fault_at >= 0) {
                check_heap_fault(-1, 0);
            }
            if (rv == SM_ENOMEM) {
                failures++;
                cbn_agg_stats(agg, &after);
                CHECK_EQ(after.spans_accepted, before.spans_accepted);
                CHECK_EQ(after.points_accepted, before.points_accepted);
                CHECK_EQ(after.pending_spans, before.pending_spans);
                rv = kind == 0 ? cbn_agg_add_spans(agg, wl_spans[b], 30)
                               : cbn_agg_add_metrics(agg, wl_points[b], 8);
            }
            REQUIRE_OK(rv);
        }
    }
    return failures;
}

static void test_window_encoding(void)
{
    make_workload(5);
    struct cbn_agg *agg = new_agg();
    run_workload(agg, -1);
    REQUIRE_OK(cbn_agg_flush(agg, collect, NULL));
    REQUIRE(n_closed >= 2);
    for (size_t i = 0; i < n_closed; i++) {
        uint8_t *buf, *again;
        size_t len, len2;
        REQUIRE_OK(cbn_window_encode(closed[i], &buf, &len));
        struct cbn_window *w;
        REQUIRE_OK(cbn_window_decode(buf, len, &w));
        REQUIRE_OK(cbn_window_encode(w, &again, &len2));
        CHECK(len == len2 && memcmp(buf, again, len) == 0);
        CHECK_EQ(w->n_services, closed[i]->n_services);
        CHECK_EQ(w->n_edges, closed[i]->n_edges);
        for (size_t cut = 0; cut < len; cut += 1 + cut / 16) {
            struct cbn_window *bad = NULL;
            CHECK_EQ(cbn_window_decode(buf, cut, &bad), SM_EMALFORMED);
        }
        cbn_window_free(w);
        sm_free(buf);
        sm_free(again);
    }
    cbn_agg_free(agg);
}

/* A failed batch that changed anything would be counted twice by its
 * retry, so the windows would differ from the fault-free run's: compare
 * them byte for byte, for failures at many allocation points. */
static void test_all_or_nothing_under_oom(void)
{
    make_workload(9);
    struct cbn_agg *ref = new_agg();
    run_workload(ref, -1);
    REQUIRE_OK(cbn_agg_flush(ref, collect, NULL));
    size_t n_ref = n_closed;
    REQUIRE(n_ref >= 2 && n_ref <= 8);
    uint8_t *ref_buf[8];
    size_t ref_len[8];
    for (size_t i = 0; i < n_ref; i++) {
        REQUIRE_OK(cbn_window_encode(closed[i], &ref_buf[i], &ref_len[i]));
    }
    cbn_agg_free(ref);
    teardown();

    int failures = 0;
    for (int k = 0; k < 400; k += 3) {
        check_heap_install();
        struct cbn_agg *agg = new_agg();
        failures += run_workload(agg, k);
        REQUIRE_OK(cbn_agg_flush(agg, collect, NULL));
        REQUIRE_EQ(n_closed, n_ref);
        for (size_t i = 0; i < n_ref; i++) {
            uint8_t *buf;
            size_t len;
            REQUIRE_OK(cbn_window_encode(closed[i], &buf, &len));
            if (len != ref_len[i] || memcmp(buf, ref_buf[i], len) != 0) {
                check__fail(__FILE__, __LINE__, 0,
                            "fault at allocation %d changed window %zu", k, i);
            }
            sm_free(buf);
        }
        teardown();
        cbn_agg_free(agg);
        CHECK_EQ(check_heap_outstanding(), 0);
        check_heap_uninstall();
    }
    printf("# %d batches failed and were retried\n", failures);
    CHECK(failures > 100);
    for (size_t i = 0; i < n_ref; i++) {
        sm_free(ref_buf[i]);
    }
}

static const struct check_test tests[] = {
    {"window closes on the watermark", test_window_closes_on_watermark},
    {"pairing in any order and batch", test_pairing_any_order},
    {"fallback edge from the client side", test_fallback_edge},
    {"unpaired server spans are forgotten",
     test_late_server_after_close_is_forgotten},
    {"malformed batch changes nothing", test_malformed_batch_changes_nothing},
    {"back-pressure", test_back_pressure},
    {"far-future data is rejected", test_far_future_rejected},
    {"metrics, rates and resets", test_metrics_and_rates},
    {"resource classes", test_resource_classes},
    {"window encoding", test_window_encoding},
    {"all or nothing under out-of-memory", test_all_or_nothing_under_oom},
};

CHECK_MAIN(tests, NULL, teardown)
