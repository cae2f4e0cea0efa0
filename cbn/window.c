/* Closed windows: layout, lookup, and the versioned binary encoding.
 *
 * A window lives in one block: the struct, then the service, metric and
 * edge arrays, then the strings. That makes freeing trivial and decoding
 * bounded: the decoder sizes the block from counts it has already checked
 * against the input length.
 *
 * Encoding ("WIN" 0x01, little-endian):
 *   start u64 | end u64 | qos_latency f64 | qos_target f64 | qos_pct f64 |
 *   violated u8 | late_spans v | late_points v |
 *   n_strings v | n_strings x (len v | bytes) |
 *   n_services v | per service: name v | requests v | errors v |
 *       latency 8 x f32 | n_metrics v | per metric: name v | peer v |
 *       resource u8 | samples v | pct 8 x f32 |
 *   n_edges v | per edge: caller v | callee v | inferred u8 | calls v |
 *       paired v | client 8 x f32 | server 8 x f32 | network 8 x f32
 * where v is a LEB128 varint and names are indexes into the string table. */
#include <stdalign.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/err.h"
#include "cbn/cbn.h"
#include "cbn/internal.h"

/* Where the string area and the metric cursor of a window block are. The
 * header sits in front of the public struct inside the same block. */
struct block
{
    struct cbn_window w;
    struct cbn_window_metric *next_metric;
    char *next_string;
    char *strings_end;
};

static size_t align_up(size_t n, size_t a)
{
    return (n + a - 1) / a * a;
}

struct cbn_window *cbn__window_alloc(size_t n_services,
                                     size_t n_metrics,
                                     size_t n_edges,
                                     size_t string_bytes)
{
    const size_t limit = SIZE_MAX / 4;
    if (n_services > limit / sizeof(struct cbn_window_service) ||
        n_metrics > limit / sizeof(struct cbn_window_metric) ||
        n_edges > limit / sizeof(struct cbn_window_edge) ||
        string_bytes > limit) {
        return NULL;
    }
    size_t off_services = align_up(sizeof(struct block), alignof(max_align_t));
    size_t off_metrics =
        align_up(off_services + n_services * sizeof(struct cbn_window_service),
                 alignof(max_align_t));
    size_t off_edges =
        align_up(off_metrics + n_metrics * sizeof(struct cbn_window_metric),
                 alignof(max_align_t));
    size_t off_strings = off_edges + n_edges * sizeof(struct cbn_window_edge);
    uint8_t *mem = sm_calloc(1, off_strings + string_bytes);
    if (mem == NULL) {
        return NULL;
    }
    struct block *b = (struct block *)mem;
    b->w.services = (struct cbn_window_service *)(mem + off_services);
    b->w.n_services = (uint32_t)n_services;
    b->w.edges = (struct cbn_window_edge *)(mem + off_edges);
    b->w.n_edges = (uint32_t)n_edges;
    b->next_metric = (struct cbn_window_metric *)(mem + off_metrics);
    b->next_string = (char *)(mem + off_strings);
    b->strings_end = b->next_string + string_bytes;
    return &b->w;
}

struct cbn_window_metric *cbn__window_take_metrics(struct cbn_window *w,
                                                   size_t n)
{
    struct block *b = (struct block *)w;
    struct cbn_window_metric *m = b->next_metric;
    b->next_metric += n;
    return m;
}

const char *cbn__window_add_string(struct cbn_window *w, const char *s)
{
    struct block *b = (struct block *)w;
    size_t n = strlen(s) + 1;
    SM_ASSERT((size_t)(b->strings_end - b->next_string) >= n);
    char *copy = b->next_string;
    memcpy(copy, s, n);
    b->next_string += n;
    return copy;
}

void cbn_window_free(struct cbn_window *w)
{
    sm_free(w); /* the public struct is the start of the block */
}

static int cmp_service(const void *a, const void *b)
{
    return strcmp(((const struct cbn_window_service *)a)->name,
                  ((const struct cbn_window_service *)b)->name);
}

static int cmp_metric(const void *a, const void *b)
{
    const struct cbn_window_metric *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c != 0 ? c : strcmp(x->peer, y->peer);
}

static int cmp_edge(const void *a, const void *b)
{
    const struct cbn_window_edge *x = a, *y = b;
    int c = strcmp(x->caller, y->caller);
    return c != 0 ? c : strcmp(x->callee, y->callee);
}

void cbn__window_sort(struct cbn_window *w)
{
    qsort(w->services, w->n_services, sizeof *w->services, cmp_service);
    for (uint32_t i = 0; i < w->n_services; i++) {
        qsort(w->services[i].metrics, w->services[i].n_metrics,
              sizeof *w->services[i].metrics, cmp_metric);
    }
    qsort(w->edges, w->n_edges, sizeof *w->edges, cmp_edge);
}

const struct cbn_window_service *cbn_window_service(const struct cbn_window *w,
                                                    const char *name)
{
    struct cbn_window_service key = {.name = name};
    return bsearch(&key, w->services, w->n_services, sizeof key, cmp_service);
}

const struct cbn_window_edge *cbn_window_edge(const struct cbn_window *w,
                                              const char *caller,
                                              const char *callee)
{
    struct cbn_window_edge key = {.caller = caller, .callee = callee};
    return bsearch(&key, w->edges, w->n_edges, sizeof key, cmp_edge);
}

/* ---- Encoding ------------------------------------------------------------ */

#define MAGIC   "WIN"
#define VERSION 1

/* Appends the CBN_N_PCT floats of @f as little-endian f32 bits. */
static void put_f32s(struct cbn__out *o, const float *f)
{
    uint8_t b[4 * CBN_N_PCT];
    for (int i = 0; i < CBN_N_PCT; i++) {
        uint32_t u;
        memcpy(&u, &f[i], 4);
        for (int k = 0; k < 4; k++) {
            b[4 * i + k] = (uint8_t)(u >> (8 * k));
        }
    }
    cbn__out_bytes(o, b, sizeof b);
}

/* The encoding's string table: every distinct name once, in first-use
 * order, found through a strtab. */
static int collect_strings(const struct cbn_window *w, struct cbn__strtab *t)
{
    uint32_t id;
    int rv = cbn__strtab_intern(t, "", &id);
    for (uint32_t i = 0; rv == SM_OK && i < w->n_services; i++) {
        const struct cbn_window_service *s = &w->services[i];
        rv = cbn__strtab_intern(t, s->name, &id);
        for (uint32_t k = 0; rv == SM_OK && k < s->n_metrics; k++) {
            rv = cbn__strtab_intern(t, s->metrics[k].name, &id);
            if (rv == SM_OK) {
                rv = cbn__strtab_intern(t, s->metrics[k].peer, &id);
            }
        }
    }
    for (uint32_t i = 0; rv == SM_OK && i < w->n_edges; i++) {
        rv = cbn__strtab_intern(t, w->edges[i].caller, &id);
        if (rv == SM_OK) {
            rv = cbn__strtab_intern(t, w->edges[i].callee, &id);
        }
    }
    return rv;
}

int cbn_window_encode(const struct cbn_window *w, uint8_t **buf, size_t *len)
{
    struct cbn__strtab t;
    cbn__strtab_init(&t, 0x5eed);
    if (collect_strings(w, &t) != SM_OK) {
        cbn__strtab_free(&t);
        return SM_ENOMEM;
    }
    struct cbn__out o;
    cbn__out_init(&o, 4096);
    cbn__out_bytes(&o, MAGIC, 3);
    cbn__out_u8(&o, VERSION);
    cbn__out_u64(&o, w->start_ns);
    cbn__out_u64(&o, w->end_ns);
    cbn__out_f64(&o, w->qos_latency_ms);
    cbn__out_f64(&o, w->qos_target_ms);
    cbn__out_f64(&o, w->qos_percentile);
    cbn__out_u8(&o, w->qos_violated ? 1 : 0);
    cbn__out_v(&o, w->late_spans);
    cbn__out_v(&o, w->late_points);
    cbn__out_v(&o, t.count);
    for (size_t i = 0; i < t.count; i++) {
        size_t n = strlen(t.strings[i]);
        cbn__out_v(&o, n);
        cbn__out_bytes(&o, t.strings[i], n);
    }
    cbn__out_v(&o, w->n_services);
    for (uint32_t i = 0; i < w->n_services; i++) {
        const struct cbn_window_service *s = &w->services[i];
        cbn__out_v(&o, cbn__strtab_find(&t, s->name));
        cbn__out_v(&o, s->requests);
        cbn__out_v(&o, s->errors);
        put_f32s(&o, s->latency_ms);
        cbn__out_v(&o, s->n_metrics);
        for (uint32_t k = 0; k < s->n_metrics; k++) {
            const struct cbn_window_metric *m = &s->metrics[k];
            cbn__out_v(&o, cbn__strtab_find(&t, m->name));
            cbn__out_v(&o, cbn__strtab_find(&t, m->peer));
            cbn__out_u8(&o, (uint8_t)m->resource);
            cbn__out_v(&o, m->samples);
            put_f32s(&o, m->pct);
        }
    }
    cbn__out_v(&o, w->n_edges);
    for (uint32_t i = 0; i < w->n_edges; i++) {
        const struct cbn_window_edge *e = &w->edges[i];
        cbn__out_v(&o, cbn__strtab_find(&t, e->caller));
        cbn__out_v(&o, cbn__strtab_find(&t, e->callee));
        cbn__out_u8(&o, e->inferred ? 1 : 0);
        cbn__out_v(&o, e->calls);
        cbn__out_v(&o, e->paired);
        put_f32s(&o, e->client_ms);
        put_f32s(&o, e->server_ms);
        put_f32s(&o, e->network_ms);
    }
    cbn__strtab_free(&t);
    return cbn__out_finish(&o, buf, len);
}

/* ---- Decoding ------------------------------------------------------------ */

/* Reads CBN_N_PCT floats into @f (zeros once @bad is latched). */
static void get_f32s(struct cbn__in *r, float *f)
{
    const uint8_t *p = cbn__in_bytes(r, 4 * CBN_N_PCT);
    for (int i = 0; i < CBN_N_PCT; i++) {
        uint32_t u = 0;
        for (int k = 0; p != NULL && k < 4; k++) {
            u |= (uint32_t)p[4 * i + k] << (8 * k);
        }
        memcpy(&f[i], &u, 4);
    }
}

/* Reads a string index and checks it against the table size. */
static uint32_t get_index(struct cbn__in *r, uint64_t n_strings)
{
    uint64_t i = cbn__in_v(r);
    if (i >= n_strings) {
        r->bad = true;
        return 0;
    }
    return (uint32_t)i;
}

/* Smallest encoded sizes, used to bound counts by the input length. */
#define MIN_SERVICE (3 + 4 * CBN_N_PCT + 1)
#define MIN_METRIC  (2 + 1 + 1 + 4 * CBN_N_PCT)
#define MIN_EDGE    (2 + 1 + 2 + 3 * 4 * CBN_N_PCT)

/* First pass: validates structure and counts, without allocating. */
struct shape
{
    uint64_t n_strings, string_bytes, n_services, n_metrics, n_edges;
};

static int scan(struct cbn__in r, struct shape *sh)
{
    cbn__in_bytes(&r, 4 + 8 * 5 + 1);
    cbn__in_v(&r);
    cbn__in_v(&r);
    sh->n_strings = cbn__in_v(&r);
    if (r.bad || sh->n_strings > r.left || sh->n_strings == 0) {
        return SM_EMALFORMED;
    }
    sh->string_bytes = 0;
    for (uint64_t i = 0; i < sh->n_strings && !r.bad; i++) {
        uint64_t n = cbn__in_v(&r);
        if (n > r.left || memchr(r.p, 0, n) != NULL) {
            return SM_EMALFORMED;
        }
        cbn__in_bytes(&r, n);
        sh->string_bytes += n + 1;
    }
    sh->n_services = cbn__in_v(&r);
    if (r.bad || sh->n_services > r.left / MIN_SERVICE) {
        return SM_EMALFORMED;
    }
    sh->n_metrics = 0;
    for (uint64_t i = 0; i < sh->n_services && !r.bad; i++) {
        get_index(&r, sh->n_strings);
        cbn__in_v(&r);
        cbn__in_v(&r);
        cbn__in_bytes(&r, 4 * CBN_N_PCT);
        uint64_t m = cbn__in_v(&r);
        if (m > r.left / MIN_METRIC) {
            return SM_EMALFORMED;
        }
        sh->n_metrics += m;
        for (uint64_t k = 0; k < m && !r.bad; k++) {
            get_index(&r, sh->n_strings);
            get_index(&r, sh->n_strings);
            if (cbn__in_u8(&r) >= CBN_RES_COUNT) {
                return SM_EMALFORMED;
            }
            if (cbn__in_v(&r) > UINT32_MAX) {
                return SM_EMALFORMED;
            }
            cbn__in_bytes(&r, 4 * CBN_N_PCT);
        }
    }
    sh->n_edges = cbn__in_v(&r);
    if (r.bad || sh->n_edges > r.left / MIN_EDGE) {
        return SM_EMALFORMED;
    }
    for (uint64_t i = 0; i < sh->n_edges && !r.bad; i++) {
        get_index(&r, sh->n_strings);
        get_index(&r, sh->n_strings);
        if (cbn__in_u8(&r) > 1) {
            return SM_EMALFORMED;
        }
        cbn__in_v(&r);
        cbn__in_v(&r);
        cbn__in_bytes(&r, 3 * 4 * CBN_N_PCT);
    }
    return r.bad || r.left != 0 ? SM_EMALFORMED : SM_OK;
}

/* Checks that names are unique where lookups rely on it. */
static int check_unique(const struct cbn_window *w)
{
    for (uint32_t i = 1; i < w->n_services; i++) {
        if (strcmp(w->services[i - 1].name, w->services[i].name) == 0) {
            return SM_EMALFORMED;
        }
    }
    for (uint32_t i = 1; i < w->n_edges; i++) {
        if (strcmp(w->edges[i - 1].caller, w->edges[i].caller) == 0 &&
            strcmp(w->edges[i - 1].callee, w->edges[i].callee) == 0) {
            return SM_EMALFORMED;
        }
    }
    return SM_OK;
}

int cbn_window_decode(const uint8_t *buf, size_t len, struct cbn_window **out)
{
    if (len < 4 || memcmp(buf, MAGIC, 3) != 0) {
        return SM_EMALFORMED;
    }
    if (buf[3] != VERSION) {
        return SM_EUNSUPPORTED;
    }
    struct cbn__in r = {buf, len, false};
    struct shape sh;
    int rv = scan(r, &sh);
    if (rv != SM_OK) {
        return rv;
    }
    struct cbn_window *w = cbn__window_alloc(sh.n_services, sh.n_metrics,
                                             sh.n_edges, sh.string_bytes);
    const char **strings = sm_calloc(sh.n_strings, sizeof *strings);
    if (w == NULL || strings == NULL) {
        cbn_window_free(w);
        sm_free(strings);
        return SM_ENOMEM;
    }
    cbn__in_bytes(&r, 4);
    w->start_ns = cbn__in_u64(&r);
    w->end_ns = cbn__in_u64(&r);
    w->qos_latency_ms = cbn__in_f64(&r);
    w->qos_target_ms = cbn__in_f64(&r);
    w->qos_percentile = cbn__in_f64(&r);
    w->qos_violated = cbn__in_u8(&r);
    w->late_spans = cbn__in_v(&r);
    w->late_points = cbn__in_v(&r);
    cbn__in_v(&r);
    for (uint64_t i = 0; i < sh.n_strings; i++) {
        size_t n = (size_t)cbn__in_v(&r);
        const uint8_t *p = cbn__in_bytes(&r, n);
        /* Strings are not NUL-terminated in the input: copy them into the
         * string area and terminate them there. */
        struct block *b = (struct block *)w;
        memcpy(b->next_string, p, n);
        b->next_string[n] = '\0';
        strings[i] = b->next_string;
        b->next_string += n + 1;
    }
    cbn__in_v(&r);
    for (uint32_t i = 0; i < w->n_services; i++) {
        struct cbn_window_service *s = &w->services[i];
        s->name = strings[cbn__in_v(&r)];
        s->requests = cbn__in_v(&r);
        s->errors = cbn__in_v(&r);
        get_f32s(&r, s->latency_ms);
        s->n_metrics = (uint32_t)cbn__in_v(&r);
        s->metrics = cbn__window_take_metrics(w, s->n_metrics);
        for (uint32_t k = 0; k < s->n_metrics; k++) {
            struct cbn_window_metric *m = &s->metrics[k];
            m->name = strings[cbn__in_v(&r)];
            m->peer = strings[cbn__in_v(&r)];
            m->resource = (enum cbn_resource)cbn__in_u8(&r);
            m->samples = (uint32_t)cbn__in_v(&r);
            get_f32s(&r, m->pct);
        }
    }
    cbn__in_v(&r);
    for (uint32_t i = 0; i < w->n_edges; i++) {
        struct cbn_window_edge *e = &w->edges[i];
        e->caller = strings[cbn__in_v(&r)];
        e->callee = strings[cbn__in_v(&r)];
        e->inferred = cbn__in_u8(&r);
        e->calls = cbn__in_v(&r);
        e->paired = cbn__in_v(&r);
        get_f32s(&r, e->client_ms);
        get_f32s(&r, e->server_ms);
        get_f32s(&r, e->network_ms);
    }
    sm_free(strings);
    SM_ASSERT(!r.bad && r.left == 0); /* scan() accepted exactly this */
    cbn__window_sort(w);
    if (check_unique(w) != SM_OK) {
        cbn_window_free(w);
        return SM_EMALFORMED;
    }
    *out = w;
    return SM_OK;
}
