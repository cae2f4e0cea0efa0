/* The seeded multi-peer workload that tests/unit/cbn/test_partial.c checks
 * and gen_partial_corpus.c takes fuzz_partial_decode's corpus from.
 *
 * A frontend calls cart, catalog and user, and cart calls db. There are
 * errors, servers sampled out (the client names its callee: an inferred twin
 * of a paired edge), calls to an uninstrumented cache (inferred edges only),
 * clients that name no peer (no edge), requests straddling a window's end,
 * QoS spans (the frontend's "GET /checkout" among other operations), metric
 * points (gauges, cumulative counters with resets, per-link and per-CPU
 * series) and late spans and points.
 *
 * It is fed in phases, one per window, to aggregators that see everything
 * and to PW_PARTS aggregators that each see a part, as peers of the mesh
 * do: spans by a hash of their trace id, metric points by service (each
 * host scrapes its own). At the end of a phase every aggregator's event time
 * is moved past the window's end plus the lateness, so that all close the
 * same windows at the same time, as peers following the wall clock do. The
 * fixture allocates with the C library, so fault injection only hits the
 * code under test. */
#ifndef SM_TEST_FUZZ_PARTIAL_FIXTURE_H
#define SM_TEST_FUZZ_PARTIAL_FIXTURE_H

#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "base/rng.h"
#include "cbn/cbn.h"

#define PW_S        1000000000ull
#define PW_MS       1000000ull
#define PW_US       1000ull
#define PW_T0       (1795421730ull * PW_S) /* a multiple of 30 s */
#define PW_WINDOW   (30 * PW_S)
#define PW_LATENESS (5 * PW_S)
#define PW_PARTS    3
#define PW_SERVICES 5

static const char *const pw_services[PW_SERVICES] = {"frontend", "cart",
                                                     "catalog", "user", "db"};

/* The configuration of every aggregator of the workload. */
static inline struct cbn_agg_config pw_config(uint64_t hash_seed)
{
    struct cbn_agg_config c = {
        .window_ns = PW_WINDOW,
        .lateness_ns = PW_LATENESS,
        .qos_service = "frontend",
        .qos_operation = "GET /checkout",
        .qos_percentile = 95,
        .qos_target_ms = 120,
        .hash_seed = hash_seed,
    };
    return c;
}

struct pw
{
    struct sm_rng rng;
    unsigned requests;                  /* per phase, about */
    double counters[PW_SERVICES][2][3]; /* cumulative series' values */
    struct cbn_span *spans;
    size_t n_spans, cap_spans, n_main_spans; /* late ones follow the main */
    struct cbn_metric_point *points;
    size_t n_points, cap_points, n_main_points;
    struct cbn_span *scratch_spans;
    struct cbn_metric_point *scratch_points;
};

static inline void pw_init(struct pw *w, uint64_t seed, unsigned requests)
{
    memset(w, 0, sizeof *w);
    sm_rng_seed(&w->rng, seed);
    w->requests = requests;
}

static inline void pw_free(struct pw *w)
{
    free(w->spans);
    free(w->points);
    free(w->scratch_spans);
    free(w->scratch_points);
}

/* Appends a span; aborts when out of memory (a broken test machine). */
static inline void pw_span(struct pw *w,
                           const uint8_t trace[16],
                           const uint8_t id[8],
                           const uint8_t parent[8],
                           enum cbn_span_kind kind,
                           const char *service,
                           const char *operation,
                           const char *peer,
                           uint64_t start,
                           uint64_t dur,
                           int error)
{
    if (w->n_spans == w->cap_spans) {
        w->cap_spans = w->cap_spans ? 2 * w->cap_spans : 256;
        w->spans = realloc(w->spans, w->cap_spans * sizeof *w->spans);
        SM_ASSERT(w->spans != NULL);
    }
    struct cbn_span *s = &w->spans[w->n_spans++];
    memset(s, 0, sizeof *s);
    memcpy(s->trace_id, trace, 16);
    memcpy(s->span_id, id, 8);
    if (parent != NULL) {
        memcpy(s->parent_id, parent, 8);
    }
    s->start_ns = start;
    s->end_ns = start + dur;
    s->kind = kind;
    s->error = error;
    s->service = service;
    s->instance = "";
    s->operation = operation;
    s->peer = peer;
}

static inline void pw_point(struct pw *w,
                            const char *service,
                            const char *instance,
                            const char *name,
                            const char *labels,
                            const char *peer,
                            uint64_t t,
                            double value,
                            int cumulative)
{
    if (w->n_points == w->cap_points) {
        w->cap_points = w->cap_points ? 2 * w->cap_points : 256;
        w->points = realloc(w->points, w->cap_points * sizeof *w->points);
        SM_ASSERT(w->points != NULL);
    }
    w->points[w->n_points++] = (struct cbn_metric_point){
        service, instance, name, labels, peer, t, value, cumulative};
}

static inline void pw_id(struct pw *w, uint8_t *id, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        id[i] = (uint8_t)sm_rng_u64(&w->rng);
    }
    id[0] |= 1; /* never all zero */
}

/* One request starting at @t: the frontend's SERVER span and 1-3 calls. */
static inline void pw_request(struct pw *w, uint64_t t)
{
    uint8_t trace[16], root[8];
    pw_id(w, trace, 16);
    pw_id(w, root, 8);
    const char *op = sm_rng_below(&w->rng, 2) ? "GET /checkout" : "GET /home";
    uint64_t at = t + 200 * PW_US;
    unsigned calls = 1 + (unsigned)sm_rng_below(&w->rng, 3);
    for (unsigned c = 0; c < calls; c++) {
        const char *callee = pw_services[1 + sm_rng_below(&w->rng, 3)];
        uint64_t net = (100 + sm_rng_below(&w->rng, 3000)) * PW_US;
        uint64_t server = (1 + sm_rng_below(&w->rng, 40000)) * PW_US;
        uint64_t db = 0;
        int nested = strcmp(callee, "cart") == 0 && sm_rng_below(&w->rng, 2);
        if (nested) {
            db = (50 + sm_rng_below(&w->rng, 20000)) * PW_US;
            server += db + 2 * 300 * PW_US;
        }
        unsigned fate = (unsigned)sm_rng_below(&w->rng, 20);
        const char *peer = fate == 2 ? "redis:6379" : fate == 3 ? "" : callee;
        uint8_t client[8], srv[8];
        pw_id(w, client, 8);
        pw_id(w, srv, 8);
        pw_span(w, trace, client, root, CBN_SPAN_CLIENT, "frontend", op, peer,
                at, server + net, 0);
        if (fate >= 4) { /* else sampled out, or not instrumented */
            uint64_t s0 = at + net / 2;
            pw_span(w, trace, srv, client, CBN_SPAN_SERVER, callee, "GET /", "",
                    s0, server, sm_rng_below(&w->rng, 8) == 0);
            if (nested) {
                uint8_t dc[8], ds[8];
                pw_id(w, dc, 8);
                pw_id(w, ds, 8);
                pw_span(w, trace, dc, srv, CBN_SPAN_CLIENT, "cart", "query",
                        "db", s0 + 100 * PW_US, db + 300 * PW_US, 0);
                pw_span(w, trace, ds, dc, CBN_SPAN_SERVER, "db", "query", "",
                        s0 + 250 * PW_US, db, 0);
            }
        }
        at += server + net + 100 * PW_US;
    }
    pw_span(w, trace, root, NULL, CBN_SPAN_SERVER, "frontend", op, "", t,
            at - t + 300 * PW_US, sm_rng_below(&w->rng, 25) == 0);
}

/* The metric points of window @k: every 5 s per service and replica, a CPU
 * counter (reset now and then), a memory gauge, a per-link probe from cart
 * to db and the frontend's per-CPU counters. */
static inline void pw_metrics(struct pw *w, int k)
{
    static const char *const inst[2] = {"i1", "i2"};
    static const char *const cpu_labels[2] = {"cpu=0", "cpu=1"};
    uint64_t start = PW_T0 + (uint64_t)k * PW_WINDOW;
    for (int j = 0; j < 6; j++) {
        for (int s = 0; s < PW_SERVICES; s++) {
            for (int r = 0; r < 2; r++) {
                uint64_t t = start + PW_S + (uint64_t)j * 5 * PW_S +
                             (uint64_t)r * 100 * PW_MS;
                double *ctr = w->counters[s][r];
                ctr[0] += 5 * (0.2 + 0.1 * s + 0.05 * sm_rng_double(&w->rng));
                if (sm_rng_below(&w->rng, 40) == 0) {
                    ctr[0] = sm_rng_double(&w->rng);
                }
                pw_point(w, pw_services[s], inst[r],
                         "container_cpu_usage_seconds_total", "", "", t, ctr[0],
                         1);
                pw_point(w, pw_services[s], inst[r],
                         "container_memory_working_set_bytes", "", "", t,
                         1e8 * (1 + s) + (double)sm_rng_below(&w->rng, 1000000),
                         0);
                if (s == 1) {
                    pw_point(w, "cart", inst[r], "probe_duration_seconds", "",
                             "db", t,
                             0.001 * (1 + (double)sm_rng_below(&w->rng, 9)), 0);
                }
                for (int c = 0; s == 0 && c < 2; c++) {
                    ctr[1 + c] += 5 * sm_rng_double(&w->rng);
                    pw_point(w, "frontend", inst[r], "node_cpu_seconds_total",
                             cpu_labels[c], "", t, ctr[1 + c], 1);
                }
            }
        }
    }
}

/* Generates phase @k: window k's requests (shuffled, some ending in the next
 * window) and points, then late spans and points for window k - 1. */
static inline void pw_generate(struct pw *w, int k)
{
    w->n_spans = w->n_points = 0;
    uint64_t start = PW_T0 + (uint64_t)k * PW_WINDOW;
    unsigned n = w->requests + (unsigned)sm_rng_below(&w->rng, w->requests + 1);
    for (unsigned r = 0; r < n; r++) {
        /* The first request surely ends in the next window, a tenth of the
         * others may. */
        uint64_t t =
            r == 0 ? start + PW_WINDOW - 500 * PW_US
            : sm_rng_below(&w->rng, 10) == 0
                ? start + 29900 * PW_MS + sm_rng_below(&w->rng, 150 * PW_MS)
                : start + sm_rng_below(&w->rng, 27 * PW_S);
        pw_request(w, t);
    }
    for (size_t i = w->n_spans; i > 1; i--) {
        size_t j = (size_t)sm_rng_below(&w->rng, i);
        struct cbn_span tmp = w->spans[i - 1];
        w->spans[i - 1] = w->spans[j];
        w->spans[j] = tmp;
    }
    pw_metrics(w, k);
    w->n_main_spans = w->n_spans;
    w->n_main_points = w->n_points;
    if (k == 0) {
        return;
    }
    uint64_t prev = start - PW_WINDOW;
    unsigned late = 3 + (unsigned)sm_rng_below(&w->rng, 4);
    for (unsigned i = 0; i < late; i++) {
        uint8_t trace[16], id[8];
        pw_id(w, trace, 16);
        pw_id(w, id, 8);
        pw_span(w, trace, id, NULL, CBN_SPAN_SERVER,
                pw_services[sm_rng_below(&w->rng, PW_SERVICES)], "GET /", "",
                prev + sm_rng_below(&w->rng, 20 * PW_S), 5 * PW_MS, 0);
        pw_point(w, pw_services[sm_rng_below(&w->rng, PW_SERVICES)], "i1",
                 "container_memory_working_set_bytes", "", "",
                 prev + sm_rng_below(&w->rng, 29 * PW_S), 1e8, 0);
    }
}

/* The part a span's trace goes to: FNV-1a of its trace id. */
static inline unsigned pw_part_of_trace(const uint8_t trace[16])
{
    uint64_t h = 0xcbf29ce484222325u;
    for (int i = 0; i < 16; i++) {
        h = (h ^ trace[i]) * 0x100000001b3u;
    }
    return (unsigned)(h % PW_PARTS);
}

/* The part that scrapes @service. */
static inline unsigned pw_part_of_service(const char *service)
{
    for (unsigned i = 0; i < PW_SERVICES; i++) {
        if (strcmp(service, pw_services[i]) == 0) {
            return i % PW_PARTS;
        }
    }
    return 0;
}

static inline int pw_add_spans(struct pw *w,
                               const struct cbn_span *s,
                               size_t n,
                               struct cbn_agg *const *full,
                               size_t n_full,
                               struct cbn_agg *const *parts)
{
    for (size_t i = 0; i < n_full; i++) {
        int rv = cbn_agg_add_spans(full[i], s, n);
        if (rv != SM_OK) {
            return rv;
        }
    }
    for (unsigned p = 0; parts != NULL && p < PW_PARTS; p++) {
        size_t m = 0;
        for (size_t i = 0; i < n; i++) {
            if (pw_part_of_trace(s[i].trace_id) == p) {
                w->scratch_spans[m++] = s[i];
            }
        }
        int rv = cbn_agg_add_spans(parts[p], w->scratch_spans, m);
        if (rv != SM_OK) {
            return rv;
        }
    }
    return SM_OK;
}

static inline int pw_add_points(struct pw *w,
                                const struct cbn_metric_point *pt,
                                size_t n,
                                struct cbn_agg *const *full,
                                size_t n_full,
                                struct cbn_agg *const *parts)
{
    for (size_t i = 0; i < n_full; i++) {
        int rv = cbn_agg_add_metrics(full[i], pt, n);
        if (rv != SM_OK) {
            return rv;
        }
    }
    for (unsigned p = 0; parts != NULL && p < PW_PARTS; p++) {
        size_t m = 0;
        for (size_t i = 0; i < n; i++) {
            if (pw_part_of_service(pt[i].service) == p) {
                w->scratch_points[m++] = pt[i];
            }
        }
        int rv = cbn_agg_add_metrics(parts[p], w->scratch_points, m);
        if (rv != SM_OK) {
            return rv;
        }
    }
    return SM_OK;
}

/* Feeds phase @k in batches of random sizes to the @n_full aggregators of
 * @full, which see everything, and to the PW_PARTS aggregators of @parts
 * (NULL: none), then moves every aggregator's event time to the end of
 * window k plus the lateness. The caller closes the windows. Returns SM_OK
 * or the first error of the aggregators. */
static inline int pw_feed(struct pw *w,
                          int k,
                          struct cbn_agg *const *full,
                          size_t n_full,
                          struct cbn_agg *const *parts)
{
    pw_generate(w, k);
    free(w->scratch_spans);
    free(w->scratch_points);
    w->scratch_spans = malloc((w->n_spans + 1) * sizeof *w->scratch_spans);
    w->scratch_points = malloc((w->n_points + 1) * sizeof *w->scratch_points);
    SM_ASSERT(w->scratch_spans != NULL && w->scratch_points != NULL);
    /* The window's data, then the late data for the one before. */
    size_t span_ends[2] = {w->n_main_spans, w->n_spans};
    size_t point_ends[2] = {w->n_main_points, w->n_points};
    size_t s = 0, p = 0;
    for (int part = 0; part < 2; part++) {
        while (s < span_ends[part] || p < point_ends[part]) {
            size_t ns = 1 + (size_t)sm_rng_below(&w->rng, 64);
            size_t np = 1 + (size_t)sm_rng_below(&w->rng, 48);
            ns = ns < span_ends[part] - s ? ns : span_ends[part] - s;
            np = np < point_ends[part] - p ? np : point_ends[part] - p;
            int rv = pw_add_spans(w, w->spans + s, ns, full, n_full, parts);
            if (rv == SM_OK) {
                rv = pw_add_points(w, w->points + p, np, full, n_full, parts);
            }
            if (rv != SM_OK) {
                return rv;
            }
            s += ns;
            p += np;
        }
    }
    uint64_t now = PW_T0 + (uint64_t)(k + 1) * PW_WINDOW + PW_LATENESS;
    for (size_t i = 0; i < n_full; i++) {
        cbn_agg_advance(full[i], now);
    }
    for (unsigned i = 0; parts != NULL && i < PW_PARTS; i++) {
        cbn_agg_advance(parts[i], now);
    }
    return SM_OK;
}

#endif /* SM_TEST_FUZZ_PARTIAL_FIXTURE_H */
