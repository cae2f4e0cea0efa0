/* Normal values: per-metric medians over QoS-meeting windows, and the
 * zero-load network delay of each RPC link. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/err.h"
#include "cbn/cbn.h"
#include "cbn/internal.h"

/* Per-window samples kept per link for the zero-load calibration. */
#define LINK_HISTORY     256
#define LINK_MIN_WINDOWS 3

struct metric_normal
{
    struct cbn_sketch *pct[CBN_N_PCT]; /* distribution of each percentile */
    uint32_t windows;
};

struct link_history
{
    uint32_t n, next; /* ring of the last LINK_HISTORY windows */
    uint64_t calls[LINK_HISTORY];
    float p50_ms[LINK_HISTORY];
};

struct cbn_normals
{
    struct cbn__strtab keys;  /* "service\x1fmetric\x1fpeer", "a\x1fb" */
    struct cbn__hmap metrics; /* key id -> struct metric_normal */
    struct cbn__hmap links;   /* key id -> struct link_history * */
};

int cbn_normals_new(struct cbn_normals **out)
{
    struct cbn_normals *n = sm_calloc(1, sizeof *n);
    if (n == NULL) {
        return SM_ENOMEM;
    }
    cbn__strtab_init(&n->keys, 0x40b);
    cbn__hmap_init(&n->metrics, sizeof(uint32_t), sizeof(struct metric_normal),
                   0x40c);
    cbn__hmap_init(&n->links, sizeof(uint32_t), sizeof(struct link_history *),
                   0x40d);
    *out = n;
    return SM_OK;
}

void cbn_normals_free(struct cbn_normals *normals)
{
    if (normals == NULL) {
        return;
    }
    for (size_t i = 0; i < normals->metrics.cap; i++) {
        if (cbn__hmap_slot_used(&normals->metrics, i)) {
            struct metric_normal *m = cbn__hmap_slot_val(&normals->metrics, i);
            for (int k = 0; k < CBN_N_PCT; k++) {
                cbn_sketch_free(m->pct[k]);
            }
        }
    }
    for (size_t i = 0; i < normals->links.cap; i++) {
        if (cbn__hmap_slot_used(&normals->links, i)) {
            sm_free(*(struct link_history **)cbn__hmap_slot_val(&normals->links,
                                                                i));
        }
    }
    cbn__strtab_free(&normals->keys);
    cbn__hmap_free(&normals->metrics);
    cbn__hmap_free(&normals->links);
    sm_free(normals);
}

/* Builds "a\x1fb[\x1fc]" into @buf (size @cap); returns 0 if it does not
 * fit. */
static int make_key(char *buf,
                    size_t cap,
                    const char *a,
                    const char *b,
                    const char *c)
{
    int n = c != NULL ? snprintf(buf, cap, "%s\x1f%s\x1f%s", a, b, c)
                      : snprintf(buf, cap, "%s\x1f%s", a, b);
    return n >= 0 && (size_t)n < cap;
}

#define KEY_MAX 1024

static int window_met_qos(const struct cbn_window *w)
{
    if (!(w->qos_target_ms > 0)) {
        return 1; /* no QoS check configured: every window is normal */
    }
    return !isnan(w->qos_latency_ms) && !w->qos_violated;
}

/* Finds or creates the entry of a metric, with its sketches reserved for
 * @pct. */
static int prepare_metric(struct cbn_normals *n,
                          const char *key,
                          const float pct[CBN_N_PCT])
{
    uint32_t id;
    bool inserted;
    if (cbn__strtab_intern(&n->keys, key, &id) != SM_OK) {
        return SM_ENOMEM;
    }
    struct metric_normal *m = cbn__hmap_get_or_add(&n->metrics, &id, &inserted);
    if (m == NULL) {
        return SM_ENOMEM;
    }
    for (int k = 0; k < CBN_N_PCT; k++) {
        if (m->pct[k] == NULL &&
            cbn_sketch_new(0.005, CBN_SKETCH_DEFAULT_MAX_BINS, &m->pct[k]) !=
                SM_OK) {
            return SM_ENOMEM;
        }
        if (cbn__sketch_reserve(m->pct[k], pct[k]) != SM_OK) {
            return SM_ENOMEM;
        }
    }
    return SM_OK;
}

static int prepare_link(struct cbn_normals *n, const char *key)
{
    uint32_t id;
    bool inserted;
    if (cbn__strtab_intern(&n->keys, key, &id) != SM_OK) {
        return SM_ENOMEM;
    }
    struct link_history **h = cbn__hmap_get_or_add(&n->links, &id, &inserted);
    if (h == NULL) {
        return SM_ENOMEM;
    }
    if (*h == NULL) {
        *h = sm_calloc(1, sizeof **h);
    }
    return *h != NULL ? SM_OK : SM_ENOMEM;
}

int cbn_normals_observe(struct cbn_normals *normals, const struct cbn_window *w)
{
    char key[KEY_MAX];
    int met = window_met_qos(w);
    /* Prepare everything (entries, sketch room) before changing counts. */
    for (uint32_t i = 0; met && i < w->n_services; i++) {
        const struct cbn_window_service *s = &w->services[i];
        for (uint32_t k = 0; k < s->n_metrics; k++) {
            const struct cbn_window_metric *m = &s->metrics[k];
            if (make_key(key, sizeof key, s->name, m->name, m->peer) &&
                prepare_metric(normals, key, m->pct) != SM_OK) {
                return SM_ENOMEM;
            }
        }
    }
    for (uint32_t i = 0; i < w->n_edges; i++) {
        const struct cbn_window_edge *e = &w->edges[i];
        if (e->paired > 0 && !isnan(e->network_ms[2]) &&
            make_key(key, sizeof key, e->caller, e->callee, NULL) &&
            prepare_link(normals, key) != SM_OK) {
            return SM_ENOMEM;
        }
    }
    for (uint32_t i = 0; met && i < w->n_services; i++) {
        const struct cbn_window_service *s = &w->services[i];
        for (uint32_t k = 0; k < s->n_metrics; k++) {
            const struct cbn_window_metric *m = &s->metrics[k];
            if (!make_key(key, sizeof key, s->name, m->name, m->peer)) {
                continue;
            }
            uint32_t id = cbn__strtab_find(&normals->keys, key);
            struct metric_normal *mn = cbn__hmap_find(&normals->metrics, &id);
            for (int p = 0; p < CBN_N_PCT; p++) {
                if (isfinite(m->pct[p])) {
                    (void)cbn_sketch_add(mn->pct[p], m->pct[p], 1);
                }
            }
            mn->windows++;
        }
    }
    for (uint32_t i = 0; i < w->n_edges; i++) {
        const struct cbn_window_edge *e = &w->edges[i];
        if (e->paired == 0 || isnan(e->network_ms[2]) ||
            !make_key(key, sizeof key, e->caller, e->callee, NULL)) {
            continue;
        }
        uint32_t id = cbn__strtab_find(&normals->keys, key);
        struct link_history *h =
            *(struct link_history **)cbn__hmap_find(&normals->links, &id);
        h->calls[h->next] = e->paired;
        h->p50_ms[h->next] = e->network_ms[2];
        h->next = (h->next + 1) % LINK_HISTORY;
        h->n += h->n < LINK_HISTORY;
    }
    return SM_OK;
}

int cbn_normals_metric(const struct cbn_normals *normals,
                       const char *service,
                       const char *metric,
                       const char *peer,
                       float pct[CBN_N_PCT],
                       uint32_t *windows)
{
    char key[KEY_MAX];
    if (!make_key(key, sizeof key, service, metric, peer ? peer : "")) {
        return SM_ENOTFOUND;
    }
    uint32_t id = cbn__strtab_find(&normals->keys, key);
    const struct metric_normal *m =
        id == UINT32_MAX ? NULL : cbn__hmap_find(&normals->metrics, &id);
    if (m == NULL || m->windows == 0) {
        return SM_ENOTFOUND;
    }
    for (int p = 0; p < CBN_N_PCT; p++) {
        pct[p] = (float)cbn_sketch_quantile(m->pct[p], 0.5);
    }
    if (windows != NULL) {
        *windows = m->windows;
    }
    return SM_OK;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

int cbn_normals_link_delay(const struct cbn_normals *normals,
                           const char *caller,
                           const char *callee,
                           double *ms)
{
    char key[KEY_MAX];
    if (!make_key(key, sizeof key, caller, callee, NULL)) {
        return SM_ENOTFOUND;
    }
    uint32_t id = cbn__strtab_find(&normals->keys, key);
    struct link_history *const *hp =
        id == UINT32_MAX ? NULL : cbn__hmap_find(&normals->links, &id);
    if (hp == NULL || (*hp)->n < LINK_MIN_WINDOWS) {
        return SM_ENOTFOUND;
    }
    const struct link_history *h = *hp;
    uint64_t calls[LINK_HISTORY];
    memcpy(calls, h->calls, h->n * sizeof calls[0]);
    qsort(calls, h->n, sizeof calls[0], cmp_u64);
    uint64_t low_load = calls[(h->n - 1) / 4];
    float low[LINK_HISTORY];
    size_t n_low = 0;
    for (uint32_t i = 0; i < h->n; i++) {
        if (h->calls[i] <= low_load) {
            low[n_low++] = h->p50_ms[i];
        }
    }
    qsort(low, n_low, sizeof low[0], cmp_float);
    *ms = n_low % 2 ? low[n_low / 2]
                    : 0.5 * ((double)low[n_low / 2 - 1] + low[n_low / 2]);
    return SM_OK;
}
