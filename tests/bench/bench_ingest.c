/* Benchmark of OTLP/HTTP JSON trace ingest on one core (not a test: it
 * asserts nothing about time). Builds realistic request bodies (1,000 spans
 * from 10 services, the attributes the JS SDK sends), then reports, as
 * medians over several runs:
 *
 *   parse      spans/s through node_otlp_traces alone;
 *   ingest     spans/s through parse + cbn_agg_add_spans (what a request
 *              costs the peer, HTTP aside);
 *   reference  memcpy of the same bodies, in MB/s, measured in the same run;
 *   memory     heap held per span waiting for its RPC partner, from a
 *              counting heap.
 *
 * Usage: bench_ingest [runs]   (default 7) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <yajl/yajl_parse.h>
#include "base/alloc.h"
#include "base/rng.h"
#include "bench_util.h"
#include "cbn/cbn.h"
#include "node/ingest.h"

#define SPANS_PER_BODY 1000
#define N_BODIES       20
#define N_SERVICES     10

/* Appends to a growing body. */
struct body
{
    char *s;
    size_t len, cap;
};

static void put(struct body *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#include <stdarg.h>
static void put(struct body *b, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->s + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        b->cap = b->cap ? b->cap * 2 : 1 << 20;
        b->s = realloc(b->s, b->cap);
    }
}

static uint64_t trace_counter;

/* One ExportTraceServiceRequest: N_SERVICES resources, each with its
 * SERVER spans and, for callers, CLIENT spans naming their callee, as the
 * OpenTelemetry JS SDK writes them. */
static void make_body(struct body *b, struct sm_rng *rng, uint64_t t0)
{
    b->len = 0;
    put(b, "{\"resourceSpans\":[");
    int per = SPANS_PER_BODY / N_SERVICES;
    for (int s = 0; s < N_SERVICES; s++) {
        put(b,
            "%s{\"resource\":{\"attributes\":[{\"key\":\"service.name\","
            "\"value\":{\"stringValue\":\"svc-%d\"}},{\"key\":"
            "\"service.instance.id\",\"value\":{\"stringValue\":"
            "\"acb6d06b-b083-4538-b996-02f3e2fa%04d\"}},{\"key\":"
            "\"telemetry.sdk.language\",\"value\":{\"stringValue\":"
            "\"nodejs\"}}]},\"scopeSpans\":[{\"scope\":{\"name\":"
            "\"@opentelemetry/instrumentation-http\",\"version\":"
            "\"0.223.0\"},\"spans\":[",
            s ? "," : "", s, s);
        for (int k = 0; k < per; k++) {
            uint64_t start = t0 + sm_rng_below(rng, 1000000000);
            uint64_t dur = 100000 + sm_rng_below(rng, 50000000);
            int client = k % 2 == 1;
            put(b,
                "%s{\"traceId\":\"%016llx%016llx\",\"spanId\":\"%016llx\","
                "\"parentSpanId\":\"%016llx\",\"name\":\"GET\",\"kind\":%d,"
                "\"startTimeUnixNano\":\"%llu\",\"endTimeUnixNano\":\"%llu\","
                "\"attributes\":[{\"key\":\"http.request.method\",\"value\":"
                "{\"stringValue\":\"GET\"}},",
                k ? "," : "", (unsigned long long)trace_counter,
                (unsigned long long)(trace_counter * 7),
                (unsigned long long)sm_rng_u64(rng),
                (unsigned long long)sm_rng_u64(rng), client ? 3 : 2,
                (unsigned long long)start, (unsigned long long)(start + dur));
            if (client) {
                put(b,
                    "{\"key\":\"server.address\",\"value\":{\"stringValue\":"
                    "\"127.0.0.1\"}},{\"key\":\"server.port\",\"value\":"
                    "{\"intValue\":%d}},{\"key\":\"url.full\",\"value\":"
                    "{\"stringValue\":\"http://127.0.0.1:%d/api/home\"}},",
                    7000 + s, 7000 + s);
            } else {
                put(b,
                    "{\"key\":\"url.path\",\"value\":{\"stringValue\":"
                    "\"/api/home\"}},{\"key\":\"http.route\",\"value\":"
                    "{\"stringValue\":\"/api/home\"}},");
            }
            put(b,
                "{\"key\":\"http.response.status_code\",\"value\":"
                "{\"intValue\":200}},{\"key\":\"network.peer.address\","
                "\"value\":{\"stringValue\":\"127.0.0.1\"}}],"
                "\"droppedAttributesCount\":0,\"events\":[],"
                "\"droppedEventsCount\":0,\"status\":{\"code\":0},"
                "\"links\":[],\"droppedLinksCount\":0,\"flags\":257}");
            trace_counter++;
        }
        put(b, "]}]}");
    }
    put(b, "]}");
}

/* The floor for any yajl-based parser: yajl with callbacks that do nothing.
 */
static int nop(void *c)
{
    (void)c;
    return 1;
}
static int nop_bool(void *c, int b)
{
    (void)c;
    (void)b;
    return 1;
}
static int nop_num(void *c, const char *s, size_t n)
{
    (void)c;
    (void)s;
    (void)n;
    return 1;
}
static int nop_str(void *c, const unsigned char *s, size_t n)
{
    (void)c;
    (void)s;
    (void)n;
    return 1;
}
static const yajl_callbacks nop_callbacks = {
    nop, nop_bool, NULL, NULL, nop_num, nop_str, nop, nop_str, nop, nop, nop};

static void yajl_only(const struct body *b)
{
    yajl_handle h = yajl_alloc(&nop_callbacks, NULL, NULL);
    yajl_parse(h, (const unsigned char *)b->s, b->len);
    yajl_complete_parse(h);
    yajl_free(h);
}

static void discard(void *arg, struct cbn_window *w)
{
    (void)arg;
    cbn_window_free(w);
}

int main(int argc, char **argv)
{
    int runs = argc > 1 ? atoi(argv[1]) : 7;
    if (runs < 1 || runs > 100) {
        runs = 7;
    }
    struct sm_rng rng;
    sm_rng_seed(&rng, 3);
    struct body bodies[N_BODIES];
    memset(bodies, 0, sizeof bodies);
    size_t bytes = 0;
    for (int i = 0; i < N_BODIES; i++) {
        make_body(&bodies[i], &rng,
                  1795421730000000000ull + (uint64_t)i * 1000000000ull);
        bytes += bodies[i].len;
    }
    struct node_spans batch;
    node_spans_init(&batch, 256u << 20);
    char err[SM_ERRMSG_SIZE];
    char *copy = malloc(bodies[0].cap);
    double parse[100], ingest[100], ref[100], yajl[100];
    for (int r = 0; r < runs; r++) {
        double t0 = bench_now_s();
        for (int i = 0; i < N_BODIES; i++) {
            memcpy(copy, bodies[i].s, bodies[i].len);
        }
        ref[r] = (double)bytes / (bench_now_s() - t0) / 1e6;
        t0 = bench_now_s();
        for (int i = 0; i < N_BODIES; i++) {
            yajl_only(&bodies[i]);
        }
        yajl[r] = (double)(N_BODIES * SPANS_PER_BODY) / (bench_now_s() - t0);
        t0 = bench_now_s();
        for (int i = 0; i < N_BODIES; i++) {
            node_spans_reset(&batch);
            if (node_otlp_traces((const uint8_t *)bodies[i].s, bodies[i].len,
                                 &batch, err) != SM_OK) {
                fprintf(stderr, "parse failed: %s\n", err);
                return 1;
            }
        }
        parse[r] = (double)(N_BODIES * SPANS_PER_BODY) / (bench_now_s() - t0);
        struct cbn_agg_config c = {.window_ns = 30000000000ull,
                                   .lateness_ns = 5000000000ull,
                                   .qos_service = "svc-0",
                                   .qos_target_ms = 40,
                                   .hash_seed = 1};
        struct cbn_agg *agg;
        cbn_agg_new(&c, &agg);
        t0 = bench_now_s();
        for (int i = 0; i < N_BODIES; i++) {
            node_spans_reset(&batch);
            if (node_otlp_traces((const uint8_t *)bodies[i].s, bodies[i].len,
                                 &batch, err) != SM_OK ||
                cbn_agg_add_spans(agg, batch.v, batch.n) != SM_OK) {
                fprintf(stderr, "ingest failed\n");
                return 1;
            }
            cbn_agg_close_ready(agg, discard, NULL);
        }
        ingest[r] = (double)(N_BODIES * SPANS_PER_BODY) / (bench_now_s() - t0);
        cbn_agg_free(agg);
    }
    printf("body: %zu spans, %.0f bytes per span\n", (size_t)SPANS_PER_BODY,
           (double)bytes / (N_BODIES * SPANS_PER_BODY));
    double pm = bench_median(parse, runs), im = bench_median(ingest, runs),
           rm = bench_median(ref, runs);
    printf("parse: %.0f spans/s, %.1f MB/s (median of %d)\n", pm,
           pm * (double)bytes / (N_BODIES * SPANS_PER_BODY) / 1e6, runs);
    printf("ingest (parse + aggregate): %.0f spans/s (median of %d)\n", im,
           runs);
    double ym = bench_median(yajl, runs);
    printf(
        "reference yajl with empty callbacks: %.0f spans/s; parse runs at "
        "%.2f of it\n",
        ym, pm / ym);
    printf("reference memcpy: %.0f MB/s; parse runs at %.4f of it\n", rm,
           pm * (double)bytes / (N_BODIES * SPANS_PER_BODY) / 1e6 / rm);

    /* Memory: one window's worth of these spans, aggregator only. */
    node_spans_free(&batch);
    count_heap_install(1);
    node_spans_init(&batch, 256u << 20);
    struct cbn_agg_config c = {.window_ns = 3600000000000ull, .hash_seed = 1};
    struct cbn_agg *agg;
    cbn_agg_new(&c, &agg);
    size_t before = count_heap_live();
    for (int i = 0; i < N_BODIES; i++) {
        node_spans_reset(&batch);
        node_otlp_traces((const uint8_t *)bodies[i].s, bodies[i].len, &batch,
                         err);
        cbn_agg_add_spans(agg, batch.v, batch.n);
    }
    struct cbn_agg_stats st;
    cbn_agg_stats(agg, &st);
    size_t held = count_heap_live() - before;
    /* These bodies hold no CLIENT/SERVER pairs (parent ids are random), so
     * every span waits in the pairing table: this measures its cost per
     * waiting span (bench_cbn measures a window of paired traffic). */
    printf(
        "memory: %llu spans waiting for their RPC partner hold %.1f KiB "
        "with their window: %.0f B per waiting span\n",
        (unsigned long long)st.pending_spans, (double)held / 1024,
        (double)held / (double)(st.pending_spans ? st.pending_spans : 1));
    cbn_agg_free(agg);
    node_spans_free(&batch);
    count_heap_install(0);
    for (int i = 0; i < N_BODIES; i++) {
        free(bodies[i].s);
    }
    free(copy);
    return 0;
}
