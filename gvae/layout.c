/* Model layout: which values of a window feed which node's CVAE, their
 * transforms and their training statistics. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "gvae/internal.h"

char *gvae__strdup(const char *s)
{
    size_t len = strlen(s);
    char *d = sm_malloc(len + 1);
    if (d != NULL) {
        memcpy(d, s, len + 1);
    }
    return d;
}

unsigned gvae__group_pct(const struct gvae_group *g, unsigned k)
{
    static const unsigned metric_pcts[GVAE_METRIC_PCTS] = {2, 4, 6};
    return g->kind == GVAE_METRIC ? metric_pcts[k] : k;
}

float gvae__transform(enum gvae_kind kind, double v)
{
    if (isnan(v)) {
        return NAN;
    }
    switch (kind) {
        case GVAE_LATENCY:
        case GVAE_CLIENT:
        case GVAE_LOAD:
            return (float)log1p(v > 0 ? v : 0);
        case GVAE_NETWORK:
        case GVAE_METRIC:
        default:
            return (float)(v < 0 ? -log1p(-v) : log1p(v));
    }
}

double gvae__untransform(enum gvae_kind kind, float t)
{
    if (kind == GVAE_NETWORK || kind == GVAE_METRIC) {
        return t < 0 ? -expm1(-(double)t) : expm1((double)t);
    }
    return expm1((double)t);
}

/* ---- building the groups ------------------------------------------------ */

/* A growable list of groups; keys unique. */
struct glist
{
    struct gvae_group *v;
    size_t n, cap;
};

static struct gvae_group *glist_find(struct glist *l, const char *key)
{
    for (size_t i = 0; i < l->n; i++) {
        if (strcmp(l->v[i].key, key) == 0) {
            return &l->v[i];
        }
    }
    return NULL;
}

/* The group's unique key, e.g. "lat:user" or "met:user|name|peer". */
static void group_key(char *key,
                      size_t size,
                      enum gvae_kind kind,
                      const char *service,
                      const char *caller,
                      const char *metric,
                      const char *peer)
{
    switch (kind) {
        case GVAE_LATENCY:
            snprintf(key, size, "lat:%s", service);
            break;
        case GVAE_CLIENT:
            snprintf(key, size, "cli:%s>%s", caller, service);
            break;
        case GVAE_NETWORK:
            snprintf(key, size, "net:%s>%s", caller, service);
            break;
        case GVAE_METRIC:
            snprintf(key, size, "met:%s|%s|%s", service, metric, peer);
            break;
        case GVAE_LOAD:
        default:
            snprintf(key, size, "load:%s", service);
            break;
    }
}

int gvae__group_set(struct gvae_group *g,
                    enum gvae_kind kind,
                    enum cbn_resource res,
                    const char *service,
                    const char *caller,
                    const char *metric,
                    const char *peer)
{
    char key[1024];
    group_key(key, sizeof key, kind, service, caller, metric, peer);
    memset(g, 0, sizeof *g);
    g->kind = kind;
    g->res = res;
    g->width = kind == GVAE_LOAD     ? 1
               : kind == GVAE_METRIC ? GVAE_METRIC_PCTS
                                     : CBN_N_PCT;
    g->key = gvae__strdup(key);
    g->service = gvae__strdup(service);
    g->caller = gvae__strdup(caller);
    g->metric = gvae__strdup(metric);
    g->peer = gvae__strdup(peer);
    if (!g->key || !g->service || !g->caller || !g->metric || !g->peer) {
        return SM_ENOMEM; /* the caller frees the group */
    }
    return SM_OK;
}

static int glist_add(struct glist *l,
                     enum gvae_kind kind,
                     enum cbn_resource res,
                     const char *service,
                     const char *caller,
                     const char *metric,
                     const char *peer)
{
    /* most calls find the group already there: look before allocating */
    char key[1024];
    group_key(key, sizeof key, kind, service, caller, metric, peer);
    if (glist_find(l, key) != NULL) {
        return SM_OK;
    }
    struct gvae_group g;
    int rc = gvae__group_set(&g, kind, res, service, caller, metric, peer);
    if (rc == SM_OK && l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 8;
        struct gvae_group *v = sm_realloc(l->v, cap * sizeof *v);
        if (v == NULL) {
            rc = SM_ENOMEM;
        } else {
            l->v = v;
            l->cap = cap;
        }
    }
    if (rc != SM_OK) {
        gvae__group_free(&g);
        return rc;
    }
    l->v[l->n++] = g;
    return SM_OK;
}

void gvae__group_free(struct gvae_group *g)
{
    sm_free(g->key);
    sm_free(g->service);
    sm_free(g->caller);
    sm_free(g->metric);
    sm_free(g->peer);
}

static int group_cmp(const void *a, const void *b)
{
    return strcmp(((const struct gvae_group *)a)->key,
                  ((const struct gvae_group *)b)->key);
}

/* Sorts the list by key, assigns offsets, moves it into *out. */
static size_t glist_finish(struct glist *l,
                           struct gvae_group **out,
                           size_t *n_out)
{
    if (l->n > 0) {
        qsort(l->v, l->n, sizeof *l->v, group_cmp);
    }
    size_t off = 0;
    for (size_t i = 0; i < l->n; i++) {
        l->v[i].offset = off;
        off += l->v[i].width;
    }
    *out = l->v;
    *n_out = l->n;
    l->v = NULL;
    l->n = l->cap = 0;
    return off;
}

static void glist_free(struct glist *l)
{
    for (size_t i = 0; i < l->n; i++) {
        gvae__group_free(&l->v[i]);
    }
    sm_free(l->v);
    l->v = NULL;
    l->n = l->cap = 0;
}

static int vec_has_data(const float *v)
{
    for (int k = 0; k < CBN_N_PCT; k++) {
        if (!isnan(v[k])) {
            return 1;
        }
    }
    return 0;
}

static int is_parent(const struct cbn_graph_node *gn, size_t j)
{
    for (size_t k = 0; k < gn->n_parents; k++) {
        if (gn->parents[k] == j) {
            return 1;
        }
    }
    return 0;
}

int gvae__layout(struct gvae_model *m,
                 const struct cbn_graph *graph,
                 const struct cbn_window *const *windows,
                 size_t n)
{
    size_t nn = cbn_graph_node_count(graph);
    m->nodes = sm_calloc(nn, sizeof *m->nodes);
    if (m->nodes == NULL) {
        return SM_ENOMEM;
    }
    m->n_nodes = nn;
    m->graph_version = cbn_graph_version(graph);
    struct glist *xl = sm_calloc(nn, sizeof *xl);
    struct glist *yl = sm_calloc(nn, sizeof *yl);
    struct glist *pl = sm_calloc(nn, sizeof *pl);
    int rc = (xl && yl && pl) ? SM_OK : SM_ENOMEM;

    for (size_t i = 0; rc == SM_OK && i < nn; i++) {
        const struct cbn_graph_node *gn = cbn_graph_node(graph, i);
        struct gvae_node *node = &m->nodes[i];
        node->name = gvae__strdup(gn->name);
        node->members =
            sm_calloc(gn->n_members ? gn->n_members : 1, sizeof *node->members);
        node->parents =
            sm_calloc(gn->n_parents ? gn->n_parents : 1, sizeof *node->parents);
        if (!node->name || !node->members || !node->parents) {
            rc = SM_ENOMEM;
            break;
        }
        node->n_members = gn->n_members;
        for (size_t k = 0; k < gn->n_members; k++) {
            node->members[k] = gvae__strdup(gn->members[k]);
            if (node->members[k] == NULL) {
                rc = SM_ENOMEM;
            }
            /* Load is always an input: a node has at least one. */
            if (rc == SM_OK) {
                rc = glist_add(&xl[i], GVAE_LOAD, CBN_RES_UNKNOWN,
                               gn->members[k], "", "", "");
            }
        }
        node->n_parents = gn->n_parents;
        memcpy(node->parents, gn->parents,
               gn->n_parents * sizeof *node->parents);
    }

    for (size_t t = 0; rc == SM_OK && t < n; t++) {
        const struct cbn_window *w = windows[t];
        for (uint32_t s = 0; rc == SM_OK && s < w->n_services; s++) {
            const struct cbn_window_service *sv = &w->services[s];
            size_t i = cbn_graph_find(graph, sv->name);
            if (i == SIZE_MAX) {
                continue;
            }
            if (vec_has_data(sv->latency_ms)) {
                rc = glist_add(&yl[i], GVAE_LATENCY, CBN_RES_UNKNOWN, sv->name,
                               "", "", "");
            }
            for (uint32_t k = 0; rc == SM_OK && k < sv->n_metrics; k++) {
                const struct cbn_window_metric *mt = &sv->metrics[k];
                rc = glist_add(&xl[i], GVAE_METRIC, mt->resource, sv->name, "",
                               mt->name, mt->peer);
            }
        }
        for (uint32_t e = 0; rc == SM_OK && e < w->n_edges; e++) {
            const struct cbn_window_edge *ed = &w->edges[e];
            size_t a = cbn_graph_find(graph, ed->caller);
            size_t b = cbn_graph_find(graph, ed->callee);
            if (a == SIZE_MAX || b == SIZE_MAX) {
                continue;
            }
            /* The callee owns its incoming edges: their client latency is
             * its output, their network delay its input. */
            rc = glist_add(&yl[b], GVAE_CLIENT, CBN_RES_UNKNOWN, ed->callee,
                           ed->caller, "", "");
            if (rc == SM_OK && vec_has_data(ed->network_ms)) {
                rc = glist_add(&xl[b], GVAE_NETWORK, CBN_RES_NETWORK,
                               ed->callee, ed->caller, "", "");
            }
            if (rc == SM_OK && a != b &&
                is_parent(cbn_graph_node(graph, a), b)) {
                rc = glist_add(&pl[a], GVAE_CLIENT, CBN_RES_UNKNOWN, ed->callee,
                               ed->caller, "", "");
                if (rc == SM_OK && vec_has_data(ed->server_ms)) {
                    rc = glist_add(&pl[a], GVAE_LATENCY, CBN_RES_UNKNOWN,
                                   ed->callee, "", "", "");
                }
            }
        }
    }

    for (size_t i = 0; rc == SM_OK && i < nn; i++) {
        struct gvae_node *node = &m->nodes[i];
        node->nx = glist_finish(&xl[i], &node->xg, &node->n_xg);
        node->ny = glist_finish(&yl[i], &node->yg, &node->n_yg);
        node->np = glist_finish(&pl[i], &node->pg, &node->n_pg);
    }
    /* Resolve each Y_parent group to the callee node's Y group; a parent
     * group whose source never produced that output is dropped. */
    for (size_t i = 0; rc == SM_OK && i < nn; i++) {
        struct gvae_node *node = &m->nodes[i];
        size_t keep = 0, off = 0;
        for (size_t g = 0; g < node->n_pg; g++) {
            struct gvae_group *pg = &node->pg[g];
            size_t src = cbn_graph_find(graph, pg->service);
            const struct gvae_node *sn = &m->nodes[src];
            const struct gvae_group *found = NULL;
            for (size_t k = 0; k < sn->n_yg; k++) {
                if (strcmp(sn->yg[k].key, pg->key) == 0) {
                    found = &sn->yg[k];
                }
            }
            if (found == NULL) {
                gvae__group_free(pg);
                continue;
            }
            pg->src_node = src;
            pg->src_offset = found->offset;
            pg->offset = off;
            off += pg->width;
            node->pg[keep++] = *pg;
        }
        node->n_pg = keep;
        node->np = off;
        node->xs = sm_calloc(node->nx ? node->nx : 1, sizeof *node->xs);
        node->ys = sm_calloc(node->ny ? node->ny : 1, sizeof *node->ys);
        node->ps = sm_calloc(node->np ? node->np : 1, sizeof *node->ps);
        if (!node->xs || !node->ys || !node->ps) {
            rc = SM_ENOMEM;
        }
    }
    for (size_t i = 0; i < nn && xl && yl && pl; i++) {
        glist_free(&xl[i]);
        glist_free(&yl[i]);
        glist_free(&pl[i]);
    }
    sm_free(xl);
    sm_free(yl);
    sm_free(pl);
    return rc;
}

/* ---- reading windows ------------------------------------------------------
 */

static const struct cbn_window_metric *find_metric(
    const struct cbn_window_service *sv,
    const char *name,
    const char *peer)
{
    size_t lo = 0, hi = sv->n_metrics;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const struct cbn_window_metric *mt = &sv->metrics[mid];
        int c = strcmp(mt->name, name);
        if (c == 0) {
            c = strcmp(mt->peer, peer);
        }
        if (c == 0) {
            return mt;
        }
        if (c < 0) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return NULL;
}

static void read_vec(enum gvae_kind kind, const float *src, float *out)
{
    for (int k = 0; k < CBN_N_PCT; k++) {
        out[k] = src ? gvae__transform(kind, src[k]) : NAN;
    }
}

void gvae__read_group(const struct gvae_group *g,
                      const struct cbn_window *w,
                      float *out)
{
    const struct cbn_window_service *sv;
    const struct cbn_window_edge *ed;
    switch (g->kind) {
        case GVAE_LATENCY:
            sv = cbn_window_service(w, g->service);
            read_vec(g->kind, sv ? sv->latency_ms : NULL, out);
            return;
        case GVAE_CLIENT:
            ed = cbn_window_edge(w, g->caller, g->service);
            read_vec(g->kind, ed ? ed->client_ms : NULL, out);
            return;
        case GVAE_NETWORK:
            ed = cbn_window_edge(w, g->caller, g->service);
            read_vec(g->kind, ed ? ed->network_ms : NULL, out);
            return;
        case GVAE_METRIC: {
            sv = cbn_window_service(w, g->service);
            const struct cbn_window_metric *mt =
                sv ? find_metric(sv, g->metric, g->peer) : NULL;
            for (unsigned k = 0; k < g->width; k++) {
                out[k] = mt ? gvae__transform(g->kind,
                                              mt->pct[gvae__group_pct(g, k)])
                            : NAN;
            }
            return;
        }
        case GVAE_LOAD:
        default: {
            /* Requests per second; a service with no SERVER spans (known
             * only from its callers) counts the calls into it. Absence
             * means no traffic, not missing data. */
            double secs = (double)(w->end_ns - w->start_ns) / 1e9;
            double req = 0;
            sv = cbn_window_service(w, g->service);
            if (sv != NULL && sv->requests > 0) {
                req = (double)sv->requests;
            } else {
                for (uint32_t e = 0; e < w->n_edges; e++) {
                    if (strcmp(w->edges[e].callee, g->service) == 0) {
                        req += (double)w->edges[e].calls;
                    }
                }
            }
            out[0] = gvae__transform(g->kind, secs > 0 ? req / secs : req);
            return;
        }
    }
}

/* ---- statistics ------------------------------------------------------------
 */

static int float_cmp(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

static float quantile_sorted(const float *v, size_t n, double q)
{
    if (n == 0) {
        return NAN;
    }
    double pos = q * (double)(n - 1);
    size_t i = (size_t)pos;
    double f = pos - (double)i;
    if (i + 1 >= n) {
        return v[n - 1];
    }
    return (float)(v[i] * (1 - f) + v[i + 1] * f);
}

/* Smallest scale a feature is standardised by, in log units (about 5%):
 * a value that never varied in training must not turn noise into huge
 * inputs. */
#define STAT_SCALE_FLOOR 0.05f

static void groups_stats(const struct gvae_group *groups,
                         size_t n_groups,
                         struct gvae_stat *stats,
                         const struct cbn_window *const *windows,
                         size_t n,
                         const uint8_t *use,
                         float *vals,
                         float *okv)
{
    /* vals and okv hold CBN_N_PCT columns of n values each: every group is
     * read once per window, all its percentiles at a time */
    float buf[CBN_N_PCT];
    size_t nv[CBN_N_PCT], nok[CBN_N_PCT];
    double sum[CBN_N_PCT], sum2[CBN_N_PCT];
    for (size_t g = 0; g < n_groups; g++) {
        const struct gvae_group *gr = &groups[g];
        for (unsigned k = 0; k < gr->width; k++) {
            nv[k] = nok[k] = 0;
            sum[k] = sum2[k] = 0;
        }
        for (size_t t = 0; t < n; t++) {
            if (use != NULL && !use[t]) {
                continue;
            }
            gvae__read_group(gr, windows[t], buf);
            for (unsigned k = 0; k < gr->width; k++) {
                float v = buf[k];
                if (isnan(v)) {
                    continue;
                }
                vals[k * n + nv[k]++] = v;
                sum[k] += v;
                sum2[k] += (double)v * v;
                if (!windows[t]->qos_violated) {
                    okv[k * n + nok[k]++] = v;
                }
            }
        }
        for (unsigned k = 0; k < gr->width; k++) {
            struct gvae_stat *st = &stats[gr->offset + k];
            float *vk = vals + k * n, *ok = okv + k * n;
            if (nv[k] == 0) {
                *st = (struct gvae_stat){0, 1, 0, 0, 0, 1, 0};
                continue;
            }
            double mean = sum[k] / (double)nv[k];
            double var = sum2[k] / (double)nv[k] - mean * mean;
            qsort(vk, nv[k], sizeof *vk, float_cmp);
            st->mean = (float)mean;
            st->std = (float)sqrt(var > 0 ? var : 0);
            if (st->std < STAT_SCALE_FLOOR) {
                st->std = STAT_SCALE_FLOOR;
            }
            st->lo = vk[0];
            st->hi = vk[nv[k] - 1];
            st->median = quantile_sorted(vk, nv[k], 0.5);
            st->iqr = quantile_sorted(vk, nv[k], 0.75) -
                      quantile_sorted(vk, nv[k], 0.25);
            if (st->iqr < STAT_SCALE_FLOOR) {
                st->iqr = STAT_SCALE_FLOOR;
            }
            if (nok[k] > 0) {
                qsort(ok, nok[k], sizeof *ok, float_cmp);
                st->normal = quantile_sorted(ok, nok[k], 0.5);
            } else {
                st->normal = st->median;
            }
        }
    }
}

void gvae__node_parent_stats(struct gvae_model *m, size_t i)
{
    struct gvae_node *node = &m->nodes[i];
    for (size_t g = 0; g < node->n_pg; g++) {
        const struct gvae_group *pg = &node->pg[g];
        const struct gvae_node *src = &m->nodes[pg->src_node];
        memcpy(&node->ps[pg->offset], &src->ys[pg->src_offset],
               pg->width * sizeof *node->ps);
    }
}

void gvae__node_stats(struct gvae_model *m,
                      size_t i,
                      const struct cbn_window *const *windows,
                      size_t n,
                      const uint8_t *use)
{
    struct gvae_node *node = &m->nodes[i];
    float *vals = sm_malloc((n ? n : 1) * CBN_N_PCT * sizeof *vals);
    float *okv = sm_malloc((n ? n : 1) * CBN_N_PCT * sizeof *okv);
    if (vals != NULL && okv != NULL) {
        groups_stats(node->xg, node->n_xg, node->xs, windows, n, use, vals,
                     okv);
        groups_stats(node->yg, node->n_yg, node->ys, windows, n, use, vals,
                     okv);
    } else {
        /* Out of memory: identity standardisation keeps the model usable. */
        for (size_t k = 0; k < node->nx; k++) {
            node->xs[k] = (struct gvae_stat){0, 1, 0, 0, 0, 1, 0};
        }
        for (size_t k = 0; k < node->ny; k++) {
            node->ys[k] = (struct gvae_stat){0, 1, 0, 0, 0, 1, 0};
        }
    }
    sm_free(vals);
    sm_free(okv);
    gvae__node_parent_stats(m, i);
}

static void standardise(const struct gvae_group *groups,
                        size_t n_groups,
                        const struct gvae_stat *stats,
                        const struct cbn_window *w,
                        float *out,
                        float *mask)
{
    float buf[CBN_N_PCT];
    for (size_t g = 0; g < n_groups; g++) {
        const struct gvae_group *gr = &groups[g];
        gvae__read_group(gr, w, buf);
        for (unsigned k = 0; k < gr->width; k++) {
            size_t f = gr->offset + k;
            int ok = !isnan(buf[k]);
            out[f] = ok ? (buf[k] - stats[f].mean) / stats[f].std : 0.0f;
            if (mask != NULL) {
                mask[f] = ok ? 1.0f : 0.0f;
            }
        }
    }
}

void gvae__node_vectors(const struct gvae_node *node,
                        const struct cbn_window *w,
                        float *x,
                        float *y,
                        float *ymask,
                        float *p)
{
    if (x != NULL) {
        standardise(node->xg, node->n_xg, node->xs, w, x, NULL);
    }
    if (y != NULL) {
        standardise(node->yg, node->n_yg, node->ys, w, y, ymask);
    }
    if (p != NULL) {
        standardise(node->pg, node->n_pg, node->ps, w, p, NULL);
    }
}

static int same_keys(const struct gvae_group *a,
                     size_t na,
                     const struct gvae_group *b,
                     size_t nb)
{
    if (na != nb) {
        return 0;
    }
    for (size_t i = 0; i < na; i++) {
        if (strcmp(a[i].key, b[i].key) != 0) {
            return 0;
        }
    }
    return 1;
}

int gvae__same_layout(const struct gvae_node *a, const struct gvae_node *b)
{
    return strcmp(a->name, b->name) == 0 &&
           same_keys(a->xg, a->n_xg, b->xg, b->n_xg) &&
           same_keys(a->yg, a->n_yg, b->yg, b->n_yg) &&
           same_keys(a->pg, a->n_pg, b->pg, b->n_pg);
}

void gvae__node_clear(struct gvae_node *node)
{
    sm_free(node->name);
    for (size_t k = 0; node->members && k < node->n_members; k++) {
        sm_free(node->members[k]);
    }
    sm_free(node->members);
    sm_free(node->parents);
    for (size_t g = 0; node->xg && g < node->n_xg; g++) {
        gvae__group_free(&node->xg[g]);
    }
    for (size_t g = 0; node->yg && g < node->n_yg; g++) {
        gvae__group_free(&node->yg[g]);
    }
    for (size_t g = 0; node->pg && g < node->n_pg; g++) {
        gvae__group_free(&node->pg[g]);
    }
    sm_free(node->xg);
    sm_free(node->yg);
    sm_free(node->pg);
    sm_free(node->xs);
    sm_free(node->ys);
    sm_free(node->ps);
    gvae__cvae_destroy(&node->cvae);
    memset(node, 0, sizeof *node);
}
