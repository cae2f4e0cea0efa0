/* Partial windows: a window's accumulators in sketch form, merged exactly
 * across peers and finished into the struct cbn_window.
 *
 * Layout. A partial is a small struct plus one block holding three arrays of
 * entries (services, metrics, edges), each sorted by key, and the strings the
 * entries name. Keys compare with strcmp field by field (the inferred flag
 * last for edges, so an edge's inferred twin sits right after it). Only
 * entries that counted something are kept, so equal contents have equal
 * arrays and the encoding can be canonical. A NULL sketch stands for an
 * empty one.
 *
 * Merging. The result is built aside: a sorted merge of the two entry arrays
 * into a new block, with new sketches where both sides have values (a copy
 * of @dst's merged with @src's) and @dst's own sketches where only @dst has
 * values. Only when everything succeeded are the superseded sketches and the
 * old block freed and the new one swapped in, so a failure (overflow, out of
 * memory) leaves @dst as it was. @src is only read, so it may be @dst.
 *
 * Finishing. The rules of the aggregator's window: a service is reported
 * when it had requests or metric samples, an edge when it had calls; an
 * inferred edge whose paired twin has calls is folded into the twin (its
 * calls add up and the client-side latencies are merged); the QoS latency
 * is the QoS sketch's quantile at the configured percentile.
 *
 * Encoding ("CBP" 0x01, little-endian):
 *   start u64 | end u64 | late_spans v | late_points v |
 *   has_qos u8 | qos_target f64 | qos_percentile f64 | qos S |
 *   n_strings v | n_strings x (len v | bytes) |
 *   n_services v | per service: name v | requests v | errors v | latency S |
 *   n_metrics v | per metric: service v | name v | peer v | resource u8 |
 *       samples v | values S |
 *   n_edges v | per edge: caller v | callee v | inferred u8 | calls v |
 *       paired v | client S | server S | network S
 * where v is a minimal LEB128 varint, names are indexes into the string
 * table, and S is a sketch: len v | cbn_sketch_encode() bytes, len 0 for an
 * empty sketch. The string table is strictly increasing (so index order is
 * string order, and entry keys compare as index tuples) and every string in
 * it is used. Everything else that makes an encoding canonical is checked
 * by the decoder: keys strictly increasing, counts consistent, sketches of
 * the default accuracy that re-encode to their own bytes. */
#include <math.h>
#include <stdalign.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/err.h"
#include "cbn/cbn.h"
#include "cbn/internal.h"

#define NS_PER_MS 1e-6

/* ---- Layout -------------------------------------------------------------- */

static size_t align_up(size_t n, size_t a)
{
    return (n + a - 1) / a * a;
}

int cbn__partial_init(struct cbn_partial *p,
                      size_t n_services,
                      size_t n_metrics,
                      size_t n_edges,
                      size_t string_bytes,
                      bool borrowed)
{
    memset(p, 0, sizeof *p);
    const size_t limit = SIZE_MAX / 4;
    if (n_services > limit / sizeof *p->services ||
        n_metrics > limit / sizeof *p->metrics ||
        n_edges > limit / sizeof *p->edges || string_bytes > limit) {
        return SM_ENOMEM;
    }
    size_t a = alignof(max_align_t);
    size_t off_metrics = align_up(n_services * sizeof *p->services, a);
    size_t off_edges =
        align_up(off_metrics + n_metrics * sizeof *p->metrics, a);
    size_t off_strings = off_edges + n_edges * sizeof *p->edges;
    size_t size = off_strings + string_bytes;
    uint8_t *mem = sm_calloc(1, size > 0 ? size : 1);
    if (mem == NULL) {
        return SM_ENOMEM;
    }
    p->block = mem;
    p->services = (struct cbn__part_service *)mem;
    p->metrics = (struct cbn__part_metric *)(mem + off_metrics);
    p->edges = (struct cbn__part_edge *)(mem + off_edges);
    p->n_services = n_services;
    p->n_metrics = n_metrics;
    p->n_edges = n_edges;
    p->next_string = (char *)(mem + off_strings);
    p->strings_end = p->next_string + string_bytes;
    p->borrowed = borrowed;
    return SM_OK;
}

const char *cbn__partial_add_string(struct cbn_partial *p, const char *s)
{
    size_t n = strlen(s) + 1;
    SM_ASSERT((size_t)(p->strings_end - p->next_string) >= n);
    char *copy = p->next_string;
    memcpy(copy, s, n);
    p->next_string += n;
    return copy;
}

static int cmp_service(const void *a, const void *b)
{
    return strcmp(((const struct cbn__part_service *)a)->name,
                  ((const struct cbn__part_service *)b)->name);
}

static int cmp_metric(const void *a, const void *b)
{
    const struct cbn__part_metric *x = a, *y = b;
    int c = strcmp(x->service, y->service);
    if (c == 0) {
        c = strcmp(x->name, y->name);
    }
    return c != 0 ? c : strcmp(x->peer, y->peer);
}

static int cmp_edge(const void *a, const void *b)
{
    const struct cbn__part_edge *x = a, *y = b;
    int c = strcmp(x->caller, y->caller);
    if (c == 0) {
        c = strcmp(x->callee, y->callee);
    }
    return c != 0 ? c
                  : (x->inferred > y->inferred) - (x->inferred < y->inferred);
}

void cbn__partial_sort(struct cbn_partial *p)
{
    qsort(p->services, p->n_services, sizeof *p->services, cmp_service);
    qsort(p->metrics, p->n_metrics, sizeof *p->metrics, cmp_metric);
    qsort(p->edges, p->n_edges, sizeof *p->edges, cmp_edge);
}

void cbn__partial_release(struct cbn_partial *p)
{
    if (!p->borrowed) {
        for (size_t i = 0; i < p->n_services; i++) {
            cbn_sketch_free(p->services[i].latency);
        }
        for (size_t i = 0; i < p->n_metrics; i++) {
            cbn_sketch_free(p->metrics[i].values);
        }
        for (size_t i = 0; i < p->n_edges; i++) {
            cbn_sketch_free(p->edges[i].client);
            cbn_sketch_free(p->edges[i].server);
            cbn_sketch_free(p->edges[i].network);
        }
        cbn_sketch_free(p->qos);
    }
    sm_free(p->block);
    memset(p, 0, sizeof *p);
}

void cbn_partial_free(struct cbn_partial *p)
{
    if (p != NULL) {
        SM_ASSERT(!p->borrowed);
        cbn__partial_release(p);
        sm_free(p);
    }
}

uint64_t cbn_partial_start(const struct cbn_partial *p)
{
    return p->start_ns;
}

uint64_t cbn_partial_end(const struct cbn_partial *p)
{
    return p->end_ns;
}

void cbn_partial_qos(const struct cbn_partial *p,
                     int *configured,
                     double *target_ms,
                     double *percentile)
{
    *configured = p->has_qos != 0;
    *target_ms = p->qos_target_ms;
    *percentile = p->qos_percentile;
}

static uint64_t count_of(const struct cbn_sketch *sk)
{
    return sk != NULL ? cbn_sketch_count(sk) : 0;
}

/* ---- Finishing ----------------------------------------------------------- */

static void fill_nan(float *v)
{
    for (int i = 0; i < CBN_N_PCT; i++) {
        v[i] = NAN;
    }
}

static void pct(const struct cbn_sketch *sk, double scale, float *out)
{
    if (sk == NULL) {
        fill_nan(out);
    } else {
        cbn__sketch_pct(sk, scale, out);
    }
}

/* What the window needs, for one allocation. */
struct sizes
{
    size_t services, metrics, edges, strings;
};

/* Walks the reported services in name order: the union of the service
 * entries with requests and the services of metrics with samples. Counts
 * them into @sz when @cw is NULL, else fills @cw's services. */
static void walk_services(const struct cbn_partial *p,
                          struct cbn_window *cw,
                          const char *empty,
                          struct sizes *sz)
{
    size_t i = 0, m = 0, at = 0;
    while (i < p->n_services || m < p->n_metrics) {
        const char *name;
        if (m == p->n_metrics) {
            name = p->services[i].name;
        } else if (i == p->n_services) {
            name = p->metrics[m].service;
        } else {
            name = strcmp(p->services[i].name, p->metrics[m].service) <= 0
                       ? p->services[i].name
                       : p->metrics[m].service;
        }
        const struct cbn__part_service *ps = NULL;
        if (i < p->n_services && strcmp(p->services[i].name, name) == 0) {
            ps = &p->services[i++];
        }
        size_t first = m, nm = 0;
        while (m < p->n_metrics && strcmp(p->metrics[m].service, name) == 0) {
            nm += p->metrics[m].samples > 0;
            m++;
        }
        int has_requests = ps != NULL && ps->requests > 0;
        if (!has_requests && nm == 0) {
            continue;
        }
        if (cw == NULL) {
            sz->services++;
            sz->metrics += nm;
            sz->strings += strlen(name) + 1;
            for (size_t k = first; k < m; k++) {
                const struct cbn__part_metric *pm = &p->metrics[k];
                if (pm->samples > 0) {
                    sz->strings += strlen(pm->name) + 1;
                    sz->strings += pm->peer[0] ? strlen(pm->peer) + 1 : 0;
                }
            }
            continue;
        }
        struct cbn_window_service *s = &cw->services[at++];
        s->name = cbn__window_add_string(cw, name);
        fill_nan(s->latency_ms);
        if (has_requests) {
            s->requests = ps->requests;
            s->errors = ps->errors;
            pct(ps->latency, NS_PER_MS, s->latency_ms);
        }
        s->n_metrics = (uint32_t)nm;
        s->metrics = cbn__window_take_metrics(cw, nm);
        size_t k = 0;
        for (size_t j = first; j < m; j++) {
            const struct cbn__part_metric *pm = &p->metrics[j];
            if (pm->samples == 0) {
                continue;
            }
            struct cbn_window_metric *cm = &s->metrics[k++];
            cm->name = cbn__window_add_string(cw, pm->name);
            cm->peer =
                pm->peer[0] ? cbn__window_add_string(cw, pm->peer) : empty;
            cm->resource = pm->resource;
            cm->samples = pm->samples;
            pct(pm->values, 1.0, cm->pct);
        }
    }
}

static int same_names(const struct cbn__part_edge *a,
                      const struct cbn__part_edge *b)
{
    return strcmp(a->caller, b->caller) == 0 &&
           strcmp(a->callee, b->callee) == 0;
}

/* The edge reported in place of edge @i, folded into it, or NULL. For a
 * paired edge: its inferred twin with calls (sorted right after it). For an
 * inferred edge: its paired twin with calls, which it is folded into. */
static const struct cbn__part_edge *twin(const struct cbn_partial *p, size_t i)
{
    const struct cbn__part_edge *e = &p->edges[i];
    const struct cbn__part_edge *t = NULL;
    if (!e->inferred && i + 1 < p->n_edges) {
        t = &p->edges[i + 1];
    } else if (e->inferred && i > 0) {
        t = &p->edges[i - 1];
    }
    if (t == NULL || t->inferred == e->inferred || t->calls == 0 ||
        !same_names(e, t)) {
        return NULL;
    }
    return t;
}

static int reported_edge(const struct cbn_partial *p, size_t i)
{
    const struct cbn__part_edge *e = &p->edges[i];
    return e->calls > 0 && !(e->inferred && twin(p, i) != NULL);
}

static int fill_edge(const struct cbn_partial *p,
                     size_t i,
                     struct cbn_window *cw,
                     struct cbn_window_edge *ce)
{
    const struct cbn__part_edge *e = &p->edges[i];
    ce->caller = cbn__window_add_string(cw, e->caller);
    ce->callee = cbn__window_add_string(cw, e->callee);
    ce->inferred = e->inferred;
    ce->calls = e->calls;
    ce->paired = e->paired;
    fill_nan(ce->server_ms);
    fill_nan(ce->network_ms);
    pct(e->client, NS_PER_MS, ce->client_ms);
    if (e->paired > 0) {
        pct(e->server, NS_PER_MS, ce->server_ms);
        pct(e->network, NS_PER_MS, ce->network_ms);
    }
    /* Inferred calls under a paired edge's names: the client side is known,
     * the server side was not seen. */
    const struct cbn__part_edge *inf = e->inferred ? NULL : twin(p, i);
    if (inf == NULL) {
        return SM_OK;
    }
    struct cbn_sketch *client;
    if (cbn_sketch_new(CBN_SKETCH_DEFAULT_ACCURACY, CBN_SKETCH_DEFAULT_MAX_BINS,
                       &client) != SM_OK) {
        return SM_ENOMEM;
    }
    int rv = SM_OK;
    if (e->client != NULL) {
        rv = cbn_sketch_merge(client, e->client);
    }
    if (rv == SM_OK && inf->client != NULL) {
        rv = cbn_sketch_merge(client, inf->client);
    }
    if (rv == SM_OK) {
        ce->calls += inf->calls;
        cbn__sketch_pct(client, NS_PER_MS, ce->client_ms);
    }
    cbn_sketch_free(client);
    return rv == SM_OK ? SM_OK : SM_ENOMEM;
}

int cbn_partial_finish(const struct cbn_partial *p, struct cbn_window **out)
{
    struct sizes sz = {0, 0, 0, 1}; /* the shared "" */
    walk_services(p, NULL, NULL, &sz);
    for (size_t i = 0; i < p->n_edges; i++) {
        if (reported_edge(p, i)) {
            sz.edges++;
            sz.strings += strlen(p->edges[i].caller) + 1;
            sz.strings += strlen(p->edges[i].callee) + 1;
        }
    }
    struct cbn_window *cw =
        cbn__window_alloc(sz.services, sz.metrics, sz.edges, sz.strings);
    if (cw == NULL) {
        return SM_ENOMEM;
    }
    const char *empty = cbn__window_add_string(cw, "");
    cw->start_ns = p->start_ns;
    cw->end_ns = p->end_ns;
    walk_services(p, cw, empty, NULL);
    size_t at = 0;
    for (size_t i = 0; i < p->n_edges; i++) {
        if (reported_edge(p, i) &&
            fill_edge(p, i, cw, &cw->edges[at++]) != SM_OK) {
            cbn_window_free(cw);
            return SM_ENOMEM;
        }
    }
    cw->qos_target_ms = p->qos_target_ms;
    cw->qos_percentile = p->qos_percentile;
    cw->qos_latency_ms = NAN;
    if (count_of(p->qos) > 0) {
        cw->qos_latency_ms =
            cbn_sketch_quantile(p->qos, p->qos_percentile / 100.0) * NS_PER_MS;
        cw->qos_violated = cw->qos_latency_ms > p->qos_target_ms;
    }
    cw->late_spans = p->late_spans;
    cw->late_points = p->late_points;
    cbn__window_sort(cw);
    *out = cw;
    return SM_OK;
}

/* ---- Merging ------------------------------------------------------------- */

/* The sketches a merge makes (freed if it fails) and the ones of @dst it
 * supersedes (freed if it succeeds). */
struct merge
{
    struct cbn_sketch **fresh, **replaced;
    size_t n_fresh, n_replaced;
};

/* Stores in @out the sum of @a (of @dst) and @b (of @src): @a itself when
 * @b is empty, else a new sketch. */
static int merge_sketch(struct merge *mg,
                        struct cbn_sketch *a,
                        const struct cbn_sketch *b,
                        struct cbn_sketch **out)
{
    uint64_t na = count_of(a), nb = count_of(b);
    if (nb == 0) {
        *out = a;
        return SM_OK;
    }
    if (nb > UINT64_MAX - na) {
        return SM_ERANGE;
    }
    struct cbn_sketch *s;
    int rv =
        cbn_sketch_new(cbn_sketch_accuracy(b), CBN_SKETCH_DEFAULT_MAX_BINS, &s);
    if (rv != SM_OK) {
        return rv;
    }
    mg->fresh[mg->n_fresh++] = s;
    if (na > 0) {
        rv = cbn_sketch_merge(s, a);
    }
    if (rv == SM_OK) {
        rv = cbn_sketch_merge(s, b);
    }
    if (rv != SM_OK) {
        return rv;
    }
    if (a != NULL) {
        mg->replaced[mg->n_replaced++] = a;
    }
    *out = s;
    return SM_OK;
}

static int add_u64(uint64_t a, uint64_t b, uint64_t *sum)
{
    if (b > UINT64_MAX - a) {
        return SM_ERANGE;
    }
    *sum = a + b;
    return SM_OK;
}

static size_t service_bytes(const void *e)
{
    return strlen(((const struct cbn__part_service *)e)->name) + 1;
}

static size_t metric_bytes(const void *e)
{
    const struct cbn__part_metric *m = e;
    return strlen(m->service) + strlen(m->name) + strlen(m->peer) + 3;
}

static size_t edge_bytes(const void *e)
{
    const struct cbn__part_edge *x = e;
    return strlen(x->caller) + strlen(x->callee) + 2;
}

/* Counts the entries of the sorted union of @a and @b (arrays of @size-byte
 * entries) into *@n and their strings into *@bytes. */
static void union_size(const void *a,
                       size_t na,
                       const void *b,
                       size_t nb,
                       size_t size,
                       int (*cmp)(const void *, const void *),
                       size_t (*strings)(const void *),
                       size_t *n,
                       size_t *bytes)
{
    const uint8_t *x = a, *y = b;
    size_t i = 0, j = 0;
    *n = 0;
    while (i < na || j < nb) {
        int c = i == na ? 1 : j == nb ? -1 : cmp(x + i * size, y + j * size);
        *bytes += strings(c <= 0 ? x + i * size : y + j * size);
        (*n)++;
        i += c <= 0;
        j += c >= 0;
    }
}

static int merge_services(struct merge *mg,
                          struct cbn_partial *r,
                          const struct cbn_partial *dst,
                          const struct cbn_partial *src)
{
    size_t i = 0, j = 0, at = 0;
    const struct cbn__part_service *d = dst->services, *s = src->services;
    while (i < dst->n_services || j < src->n_services) {
        /* < 0: only in @dst, > 0: only in @src, 0: in both. */
        int c = i == dst->n_services   ? 1
                : j == src->n_services ? -1
                                       : cmp_service(&d[i], &s[j]);
        struct cbn__part_service *o = &r->services[at++];
        const struct cbn__part_service *e = c <= 0 ? &d[i] : &s[j];
        o->name = cbn__partial_add_string(r, e->name);
        o->requests = e->requests;
        o->errors = e->errors;
        int rv = SM_OK;
        if (c == 0) {
            rv = add_u64(d[i].requests, s[j].requests, &o->requests);
            if (rv == SM_OK) {
                rv = add_u64(d[i].errors, s[j].errors, &o->errors);
            }
        }
        if (rv == SM_OK) {
            rv = merge_sketch(mg, c <= 0 ? d[i].latency : NULL,
                              c >= 0 ? s[j].latency : NULL, &o->latency);
        }
        if (rv != SM_OK) {
            return rv;
        }
        i += c <= 0;
        j += c >= 0;
    }
    return SM_OK;
}

static int merge_metrics(struct merge *mg,
                         struct cbn_partial *r,
                         const struct cbn_partial *dst,
                         const struct cbn_partial *src)
{
    size_t i = 0, j = 0, at = 0;
    const struct cbn__part_metric *d = dst->metrics, *s = src->metrics;
    while (i < dst->n_metrics || j < src->n_metrics) {
        int c = i == dst->n_metrics   ? 1
                : j == src->n_metrics ? -1
                                      : cmp_metric(&d[i], &s[j]);
        struct cbn__part_metric *o = &r->metrics[at++];
        const struct cbn__part_metric *e = c <= 0 ? &d[i] : &s[j];
        o->service = cbn__partial_add_string(r, e->service);
        o->name = cbn__partial_add_string(r, e->name);
        o->peer = cbn__partial_add_string(r, e->peer);
        o->resource = e->resource;
        o->samples = e->samples;
        if (c == 0) {
            if (d[i].resource != s[j].resource) {
                return SM_EINVAL;
            }
            if (s[j].samples > UINT32_MAX - d[i].samples) {
                return SM_ERANGE;
            }
            o->samples = d[i].samples + s[j].samples;
        }
        int rv = merge_sketch(mg, c <= 0 ? d[i].values : NULL,
                              c >= 0 ? s[j].values : NULL, &o->values);
        if (rv != SM_OK) {
            return rv;
        }
        i += c <= 0;
        j += c >= 0;
    }
    return SM_OK;
}

static int merge_edges(struct merge *mg,
                       struct cbn_partial *r,
                       const struct cbn_partial *dst,
                       const struct cbn_partial *src)
{
    size_t i = 0, j = 0, at = 0;
    const struct cbn__part_edge *d = dst->edges, *s = src->edges;
    while (i < dst->n_edges || j < src->n_edges) {
        int c = i == dst->n_edges   ? 1
                : j == src->n_edges ? -1
                                    : cmp_edge(&d[i], &s[j]);
        struct cbn__part_edge *o = &r->edges[at++];
        const struct cbn__part_edge *e = c <= 0 ? &d[i] : &s[j];
        o->caller = cbn__partial_add_string(r, e->caller);
        o->callee = cbn__partial_add_string(r, e->callee);
        o->inferred = e->inferred;
        o->calls = e->calls;
        o->paired = e->paired;
        int rv = SM_OK;
        if (c == 0) {
            rv = add_u64(d[i].calls, s[j].calls, &o->calls);
            if (rv == SM_OK) {
                rv = add_u64(d[i].paired, s[j].paired, &o->paired);
            }
        }
        const struct cbn__part_edge *a = c <= 0 ? &d[i] : NULL;
        const struct cbn__part_edge *b = c >= 0 ? &s[j] : NULL;
        if (rv == SM_OK) {
            rv = merge_sketch(mg, a ? a->client : NULL, b ? b->client : NULL,
                              &o->client);
        }
        if (rv == SM_OK) {
            rv = merge_sketch(mg, a ? a->server : NULL, b ? b->server : NULL,
                              &o->server);
        }
        if (rv == SM_OK) {
            rv = merge_sketch(mg, a ? a->network : NULL, b ? b->network : NULL,
                              &o->network);
        }
        if (rv != SM_OK) {
            return rv;
        }
        i += c <= 0;
        j += c >= 0;
    }
    return SM_OK;
}

static int same_bits(double a, double b)
{
    return memcmp(&a, &b, sizeof a) == 0;
}

int cbn_partial_merge(struct cbn_partial *dst, const struct cbn_partial *src)
{
    SM_ASSERT(!dst->borrowed);
    if (dst->start_ns != src->start_ns || dst->end_ns != src->end_ns ||
        dst->has_qos != src->has_qos ||
        !same_bits(dst->qos_target_ms, src->qos_target_ms) ||
        !same_bits(dst->qos_percentile, src->qos_percentile)) {
        return SM_EINVAL;
    }
    uint64_t late_spans, late_points;
    if (add_u64(dst->late_spans, src->late_spans, &late_spans) != SM_OK ||
        add_u64(dst->late_points, src->late_points, &late_points) != SM_OK) {
        return SM_ERANGE;
    }
    size_t ns, nm, ne, bytes = 0;
    union_size(dst->services, dst->n_services, src->services, src->n_services,
               sizeof *dst->services, cmp_service, service_bytes, &ns, &bytes);
    union_size(dst->metrics, dst->n_metrics, src->metrics, src->n_metrics,
               sizeof *dst->metrics, cmp_metric, metric_bytes, &nm, &bytes);
    union_size(dst->edges, dst->n_edges, src->edges, src->n_edges,
               sizeof *dst->edges, cmp_edge, edge_bytes, &ne, &bytes);
    if (ns > UINT32_MAX || nm > UINT32_MAX || ne > UINT32_MAX) {
        return SM_ERANGE; /* a window counts them in 32 bits */
    }
    size_t slots = ns + nm + 3 * ne + 1;
    struct merge mg = {NULL, NULL, 0, 0};
    mg.fresh = sm_calloc(2 * slots, sizeof *mg.fresh);
    if (mg.fresh == NULL) {
        return SM_ENOMEM;
    }
    mg.replaced = mg.fresh + slots;
    struct cbn_partial r;
    int rv = cbn__partial_init(&r, ns, nm, ne, bytes, false);
    if (rv == SM_OK) {
        rv = merge_services(&mg, &r, dst, src);
    }
    if (rv == SM_OK) {
        rv = merge_metrics(&mg, &r, dst, src);
    }
    if (rv == SM_OK) {
        rv = merge_edges(&mg, &r, dst, src);
    }
    struct cbn_sketch *qos = NULL;
    if (rv == SM_OK) {
        rv = merge_sketch(&mg, dst->qos, src->qos, &qos);
    }
    if (rv != SM_OK) {
        for (size_t i = 0; i < mg.n_fresh; i++) {
            cbn_sketch_free(mg.fresh[i]);
        }
        sm_free(r.block);
        sm_free(mg.fresh);
        return rv;
    }
    for (size_t i = 0; i < mg.n_replaced; i++) {
        cbn_sketch_free(mg.replaced[i]);
    }
    sm_free(mg.fresh);
    sm_free(dst->block);
    r.start_ns = dst->start_ns;
    r.end_ns = dst->end_ns;
    r.has_qos = dst->has_qos;
    r.qos_target_ms = dst->qos_target_ms;
    r.qos_percentile = dst->qos_percentile;
    r.late_spans = late_spans;
    r.late_points = late_points;
    r.qos = qos;
    *dst = r;
    return SM_OK;
}

/* ---- Encoding ------------------------------------------------------------ */

#define MAGIC   "CBP"
#define VERSION 1

static void put_sketch(struct cbn__out *o, const struct cbn_sketch *sk)
{
    if (count_of(sk) == 0) {
        cbn__out_v(o, 0);
        return;
    }
    uint8_t *b;
    size_t n;
    if (o->failed || cbn_sketch_encode(sk, &b, &n) != SM_OK) {
        o->failed = true;
        return;
    }
    cbn__out_v(o, n);
    cbn__out_bytes(o, b, n);
    sm_free(b);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The index of @s in the sorted table @t of @n strings. */
static size_t str_index(const char **t, size_t n, const char *s)
{
    const char **hit = bsearch(&s, t, n, sizeof *t, cmp_str);
    SM_ASSERT(hit != NULL);
    return (size_t)(hit - t);
}

int cbn_partial_encode(const struct cbn_partial *p, uint8_t **buf, size_t *len)
{
    /* The string table: every name once, sorted. */
    size_t n = p->n_services + 3 * p->n_metrics + 2 * p->n_edges;
    const char **t = sm_calloc(n > 0 ? n : 1, sizeof *t);
    if (t == NULL) {
        return SM_ENOMEM;
    }
    size_t k = 0;
    for (size_t i = 0; i < p->n_services; i++) {
        t[k++] = p->services[i].name;
    }
    for (size_t i = 0; i < p->n_metrics; i++) {
        t[k++] = p->metrics[i].service;
        t[k++] = p->metrics[i].name;
        t[k++] = p->metrics[i].peer;
    }
    for (size_t i = 0; i < p->n_edges; i++) {
        t[k++] = p->edges[i].caller;
        t[k++] = p->edges[i].callee;
    }
    qsort(t, n, sizeof *t, cmp_str);
    size_t nt = 0;
    for (size_t i = 0; i < n; i++) {
        if (nt == 0 || strcmp(t[nt - 1], t[i]) != 0) {
            t[nt++] = t[i];
        }
    }

    struct cbn__out o;
    cbn__out_init(&o, 1024);
    cbn__out_bytes(&o, MAGIC, 3);
    cbn__out_u8(&o, VERSION);
    cbn__out_u64(&o, p->start_ns);
    cbn__out_u64(&o, p->end_ns);
    cbn__out_v(&o, p->late_spans);
    cbn__out_v(&o, p->late_points);
    cbn__out_u8(&o, p->has_qos ? 1 : 0);
    cbn__out_f64(&o, p->qos_target_ms);
    cbn__out_f64(&o, p->qos_percentile);
    put_sketch(&o, p->qos);
    cbn__out_v(&o, nt);
    for (size_t i = 0; i < nt; i++) {
        size_t sl = strlen(t[i]);
        cbn__out_v(&o, sl);
        cbn__out_bytes(&o, t[i], sl);
    }
    cbn__out_v(&o, p->n_services);
    for (size_t i = 0; i < p->n_services; i++) {
        const struct cbn__part_service *s = &p->services[i];
        cbn__out_v(&o, str_index(t, nt, s->name));
        cbn__out_v(&o, s->requests);
        cbn__out_v(&o, s->errors);
        put_sketch(&o, s->latency);
    }
    cbn__out_v(&o, p->n_metrics);
    for (size_t i = 0; i < p->n_metrics; i++) {
        const struct cbn__part_metric *m = &p->metrics[i];
        cbn__out_v(&o, str_index(t, nt, m->service));
        cbn__out_v(&o, str_index(t, nt, m->name));
        cbn__out_v(&o, str_index(t, nt, m->peer));
        cbn__out_u8(&o, (uint8_t)m->resource);
        cbn__out_v(&o, m->samples);
        put_sketch(&o, m->values);
    }
    cbn__out_v(&o, p->n_edges);
    for (size_t i = 0; i < p->n_edges; i++) {
        const struct cbn__part_edge *e = &p->edges[i];
        cbn__out_v(&o, str_index(t, nt, e->caller));
        cbn__out_v(&o, str_index(t, nt, e->callee));
        cbn__out_u8(&o, e->inferred ? 1 : 0);
        cbn__out_v(&o, e->calls);
        cbn__out_v(&o, e->paired);
        put_sketch(&o, e->client);
        put_sketch(&o, e->server);
        put_sketch(&o, e->network);
    }
    sm_free(t);
    return cbn__out_finish(&o, buf, len);
}

/* ---- Decoding ------------------------------------------------------------ */

/* Skips a sketch (the first pass). */
static void skip_sketch(struct cbn__in *r)
{
    uint64_t n = cbn__in_v_min(r);
    if (n > r->left) {
        r->bad = true;
        return;
    }
    cbn__in_bytes(r, (size_t)n);
}

/* Decodes a sketch into *@out (NULL when empty). Returns SM_OK,
 * SM_EMALFORMED (also when not in its one canonical form), or what
 * cbn_sketch_decode() returns. */
static int get_sketch(struct cbn__in *r, struct cbn_sketch **out)
{
    *out = NULL;
    uint64_t n = cbn__in_v_min(r);
    if (r->bad || n > r->left) {
        return SM_EMALFORMED;
    }
    if (n == 0) {
        return SM_OK;
    }
    const uint8_t *b = cbn__in_bytes(r, (size_t)n);
    struct cbn_sketch *sk;
    int rv = cbn_sketch_decode(b, (size_t)n, CBN_SKETCH_DEFAULT_MAX_BINS, &sk);
    if (rv != SM_OK) {
        return rv;
    }
    if (cbn_sketch_count(sk) == 0 ||
        cbn_sketch_accuracy(sk) != CBN_SKETCH_DEFAULT_ACCURACY) {
        cbn_sketch_free(sk);
        return SM_EMALFORMED;
    }
    uint8_t *again;
    size_t len;
    rv = cbn_sketch_encode(sk, &again, &len);
    if (rv == SM_OK) {
        if (len != n || memcmp(again, b, len) != 0) {
            rv = SM_EMALFORMED;
        }
        sm_free(again);
    }
    if (rv != SM_OK) {
        cbn_sketch_free(sk);
        return rv;
    }
    *out = sk;
    return SM_OK;
}

/* The first pass: the sizes of the arrays and strings, without allocating.
 * Full validation is the second pass's. */
struct shape
{
    uint64_t n_strings, string_bytes, n_services, n_metrics, n_edges;
};

static int scan(struct cbn__in r, struct shape *sh)
{
    cbn__in_bytes(&r, 8 + 8);
    cbn__in_v_min(&r);
    cbn__in_v_min(&r);
    cbn__in_bytes(&r, 1 + 8 + 8);
    skip_sketch(&r);
    sh->n_strings = cbn__in_v_min(&r);
    sh->string_bytes = 0;
    for (uint64_t i = 0; i < sh->n_strings && !r.bad; i++) {
        uint64_t n = cbn__in_v_min(&r);
        if (n > r.left) {
            return SM_EMALFORMED;
        }
        cbn__in_bytes(&r, (size_t)n);
        sh->string_bytes += n + 1;
    }
    sh->n_services = cbn__in_v_min(&r);
    for (uint64_t i = 0; i < sh->n_services && !r.bad; i++) {
        cbn__in_v_min(&r);
        cbn__in_v_min(&r);
        cbn__in_v_min(&r);
        skip_sketch(&r);
    }
    sh->n_metrics = cbn__in_v_min(&r);
    for (uint64_t i = 0; i < sh->n_metrics && !r.bad; i++) {
        cbn__in_v_min(&r);
        cbn__in_v_min(&r);
        cbn__in_v_min(&r);
        cbn__in_u8(&r);
        cbn__in_v_min(&r);
        skip_sketch(&r);
    }
    sh->n_edges = cbn__in_v_min(&r);
    for (uint64_t i = 0; i < sh->n_edges && !r.bad; i++) {
        cbn__in_v_min(&r);
        cbn__in_v_min(&r);
        cbn__in_u8(&r);
        cbn__in_v_min(&r);
        cbn__in_v_min(&r);
        skip_sketch(&r);
        skip_sketch(&r);
        skip_sketch(&r);
    }
    if (r.bad || r.left != 0) {
        return SM_EMALFORMED;
    }
    /* Every entry took at least a byte, so the counts are bounded by the
     * input; a window counts them in 32 bits. */
    if (sh->n_services > UINT32_MAX || sh->n_metrics > UINT32_MAX ||
        sh->n_edges > UINT32_MAX) {
        return SM_ETOOBIG;
    }
    return SM_OK;
}

/* The second pass's state: the string table, and which strings are used. */
struct table
{
    const char **strings;
    uint8_t *used;
    uint64_t n;
};

/* Reads a string index; @nonempty refuses "". */
static uint64_t get_index(struct cbn__in *r, struct table *t, int nonempty)
{
    uint64_t i = cbn__in_v_min(r);
    if (r->bad || i >= t->n || (nonempty && t->strings[i][0] == '\0')) {
        r->bad = true;
        return 0;
    }
    t->used[i] = 1;
    return i;
}

/* Lexicographic order of index tuples, which is the key order because the
 * table is sorted. */
static int cmp_tuple(const uint64_t *a, const uint64_t *b, int n)
{
    for (int i = 0; i < n; i++) {
        if (a[i] != b[i]) {
            return a[i] < b[i] ? -1 : 1;
        }
    }
    return 0;
}

static int read_header(struct cbn__in *r, struct cbn_partial *p)
{
    cbn__in_bytes(r, 4);
    p->start_ns = cbn__in_u64(r);
    p->end_ns = cbn__in_u64(r);
    p->late_spans = cbn__in_v_min(r);
    p->late_points = cbn__in_v_min(r);
    uint8_t has_qos = cbn__in_u8(r);
    p->has_qos = has_qos;
    p->qos_target_ms = cbn__in_f64(r);
    p->qos_percentile = cbn__in_f64(r);
    if (r->bad || p->end_ns <= p->start_ns || has_qos > 1 ||
        !(p->qos_percentile > 0 && p->qos_percentile < 100) ||
        (has_qos && !(p->qos_target_ms > 0 && isfinite(p->qos_target_ms)))) {
        return SM_EMALFORMED;
    }
    int rv = get_sketch(r, &p->qos);
    if (rv == SM_OK && !has_qos && p->qos != NULL) {
        rv = SM_EMALFORMED; /* QoS latencies without a QoS service */
    }
    return rv;
}

static int read_strings(struct cbn__in *r,
                        struct cbn_partial *p,
                        struct table *t)
{
    t->n = cbn__in_v_min(r);
    for (uint64_t i = 0; i < t->n; i++) {
        size_t n = (size_t)cbn__in_v_min(r);
        const uint8_t *b = cbn__in_bytes(r, n);
        if (b == NULL || memchr(b, 0, n) != NULL) {
            return SM_EMALFORMED;
        }
        char *s = p->next_string;
        memcpy(s, b, n);
        s[n] = '\0';
        p->next_string += n + 1;
        if (i > 0 && strcmp(t->strings[i - 1], s) >= 0) {
            return SM_EMALFORMED; /* unsorted or duplicate */
        }
        t->strings[i] = s;
    }
    return SM_OK;
}

static int read_services(struct cbn__in *r,
                         struct cbn_partial *p,
                         struct table *t)
{
    cbn__in_v_min(r);
    uint64_t prev = 0;
    for (size_t i = 0; i < p->n_services; i++) {
        struct cbn__part_service *s = &p->services[i];
        uint64_t key = get_index(r, t, 1);
        s->name = t->strings[key];
        s->requests = cbn__in_v_min(r);
        s->errors = cbn__in_v_min(r);
        if (r->bad || (i > 0 && key <= prev) || s->requests == 0 ||
            s->errors > s->requests) {
            return SM_EMALFORMED;
        }
        prev = key;
        int rv = get_sketch(r, &s->latency);
        if (rv != SM_OK) {
            return rv;
        }
        if (count_of(s->latency) > s->requests) {
            return SM_EMALFORMED;
        }
    }
    return SM_OK;
}

static int read_metrics(struct cbn__in *r,
                        struct cbn_partial *p,
                        struct table *t)
{
    cbn__in_v_min(r);
    uint64_t prev[3] = {0, 0, 0};
    for (size_t i = 0; i < p->n_metrics; i++) {
        struct cbn__part_metric *m = &p->metrics[i];
        uint64_t key[3];
        key[0] = get_index(r, t, 1);
        key[1] = get_index(r, t, 1);
        key[2] = get_index(r, t, 0);
        m->service = t->strings[key[0]];
        m->name = t->strings[key[1]];
        m->peer = t->strings[key[2]];
        uint8_t resource = cbn__in_u8(r);
        uint64_t samples = cbn__in_v_min(r);
        if (r->bad || (i > 0 && cmp_tuple(prev, key, 3) >= 0) ||
            resource >= CBN_RES_COUNT || samples == 0 || samples > UINT32_MAX) {
            return SM_EMALFORMED;
        }
        memcpy(prev, key, sizeof prev);
        m->resource = (enum cbn_resource)resource;
        m->samples = (uint32_t)samples;
        int rv = get_sketch(r, &m->values);
        if (rv != SM_OK) {
            return rv;
        }
        if (count_of(m->values) > m->samples) {
            return SM_EMALFORMED;
        }
    }
    return SM_OK;
}

static int read_edges(struct cbn__in *r, struct cbn_partial *p, struct table *t)
{
    cbn__in_v_min(r);
    uint64_t prev[3] = {0, 0, 0};
    for (size_t i = 0; i < p->n_edges; i++) {
        struct cbn__part_edge *e = &p->edges[i];
        uint64_t key[3];
        key[0] = get_index(r, t, 1);
        key[1] = get_index(r, t, 1);
        key[2] = cbn__in_u8(r);
        e->caller = t->strings[key[0]];
        e->callee = t->strings[key[1]];
        e->inferred = (int)key[2];
        e->calls = cbn__in_v_min(r);
        e->paired = cbn__in_v_min(r);
        if (r->bad || (i > 0 && cmp_tuple(prev, key, 3) >= 0) || key[2] > 1 ||
            e->calls == 0 || e->paired > e->calls ||
            (e->inferred && e->paired != 0)) {
            return SM_EMALFORMED;
        }
        memcpy(prev, key, sizeof prev);
        int rv = get_sketch(r, &e->client);
        if (rv == SM_OK) {
            rv = get_sketch(r, &e->server);
        }
        if (rv == SM_OK) {
            rv = get_sketch(r, &e->network);
        }
        if (rv != SM_OK) {
            return rv;
        }
        if (count_of(e->client) > e->calls || count_of(e->server) > e->paired ||
            count_of(e->network) > e->paired) {
            return SM_EMALFORMED;
        }
    }
    return SM_OK;
}

int cbn_partial_decode(const uint8_t *buf, size_t len, struct cbn_partial **out)
{
    if (len < 4 || memcmp(buf, MAGIC, 3) != 0) {
        return SM_EMALFORMED;
    }
    if (buf[3] != VERSION) {
        return SM_EUNSUPPORTED;
    }
    struct cbn__in r = {buf + 4, len - 4, false};
    struct shape sh;
    int rv = scan(r, &sh);
    if (rv != SM_OK) {
        return rv;
    }
    struct cbn_partial *p = sm_calloc(1, sizeof *p);
    if (p == NULL) {
        return SM_ENOMEM;
    }
    rv = cbn__partial_init(p, (size_t)sh.n_services, (size_t)sh.n_metrics,
                           (size_t)sh.n_edges, (size_t)sh.string_bytes, false);
    size_t nt = (size_t)sh.n_strings;
    struct table t = {NULL, NULL, 0};
    if (rv == SM_OK) {
        t.strings = sm_calloc(nt > 0 ? nt : 1, sizeof *t.strings);
        t.used = sm_calloc(nt > 0 ? nt : 1, 1);
        if (t.strings == NULL || t.used == NULL) {
            rv = SM_ENOMEM;
        }
    }
    r.p = buf;
    r.left = len;
    if (rv == SM_OK) {
        rv = read_header(&r, p);
    }
    if (rv == SM_OK) {
        rv = read_strings(&r, p, &t);
    }
    if (rv == SM_OK) {
        rv = read_services(&r, p, &t);
    }
    if (rv == SM_OK) {
        rv = read_metrics(&r, p, &t);
    }
    if (rv == SM_OK) {
        rv = read_edges(&r, p, &t);
    }
    for (size_t i = 0; rv == SM_OK && i < nt; i++) {
        if (!t.used[i]) {
            rv = SM_EMALFORMED; /* a string no entry names */
        }
    }
    sm_free(t.strings);
    sm_free(t.used);
    if (rv != SM_OK) {
        cbn_partial_free(p);
        return rv;
    }
    SM_ASSERT(!r.bad && r.left == 0); /* scan() accepted exactly this */
    *out = p;
    return SM_OK;
}
