/* Baselines for the accuracy benchmark: see baselines.h. */
#include "baselines.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"

#define CPU_METRIC "container_cpu_usage_seconds_total"
#define P99        6 /* index of 99 in cbn_percentiles */
#define Z_CAP      1e6

struct feat
{
    char *name, *peer; /* the metric */
    enum cbn_resource res;
    double med[CBN_N_PCT], scale[CBN_N_PCT]; /* med NaN: never seen */
};

struct svc
{
    char *name;
    double cap;              /* cores per replica; NaN when unknown */
    double lat_mean, lat_sd; /* of the p99 latency */
    double thr;              /* oracle threshold on p99; NaN: untuned */
    double lat_med[CBN_N_PCT], lat_scale[CBN_N_PCT];
    size_t n_feat;
    struct feat *feat;
};

struct baseline
{
    enum baseline_kind kind;
    size_t n_svc;
    struct svc *svc; /* sorted by name */
};

const char *baseline_name(enum baseline_kind kind)
{
    switch (kind) {
        case BASELINE_AUTOSCALE_STRICT:
            return "autoscale-strict";
        case BASELINE_AUTOSCALE_RELAX:
            return "autoscale-relax";
        case BASELINE_NSIGMA:
            return "n-sigma";
        case BASELINE_ROBUST:
            return "robust-iqr";
        case BASELINE_ORACLE:
            return "oracle-threshold";
    }
    return "?";
}

/* ---- helpers --------------------------------------------------------------
 */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int cmp_metric(const void *a, const void *b)
{
    const struct cbn_window_metric *x =
        *(const struct cbn_window_metric *const *)a;
    const struct cbn_window_metric *y =
        *(const struct cbn_window_metric *const *)b;
    int c = strcmp(x->name, y->name);
    return c ? c : strcmp(x->peer, y->peer);
}

/* Quantile @q of the @n sorted values @v, linearly interpolated. */
static double quantile(const double *v, size_t n, double q)
{
    double pos = q * (double)(n - 1);
    size_t i = (size_t)pos;
    if (i + 1 >= n) {
        return v[n - 1];
    }
    return v[i] + (pos - (double)i) * (v[i + 1] - v[i]);
}

/* Median and robust scale of the @n finite values @v (sorted in place):
 * IQR / 1.349, else the standard deviation, else 0.1% of |median|, else
 * 1e-9. NaN median for n = 0. */
static void robust_stats(double *v, size_t n, double *med, double *scale)
{
    if (n == 0) {
        *med = *scale = NAN;
        return;
    }
    qsort(v, n, sizeof *v, cmp_double);
    *med = quantile(v, n, 0.5);
    double s = (quantile(v, n, 0.75) - quantile(v, n, 0.25)) / 1.349;
    if (!(s > 0)) {
        double m = 0, ss = 0;
        for (size_t i = 0; i < n; i++) {
            m += v[i];
        }
        m /= (double)n;
        for (size_t i = 0; i < n; i++) {
            ss += (v[i] - m) * (v[i] - m);
        }
        s = sqrt(ss / (double)n);
    }
    if (!(s > 0)) {
        s = 1e-3 * fabs(*med);
    }
    *scale = s > 0 ? s : 1e-9;
}

static const struct svc *find_svc(const struct baseline *b, const char *name)
{
    size_t lo = 0, hi = b->n_svc;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(name, b->svc[mid].name);
        if (c == 0) {
            return &b->svc[mid];
        }
        if (c < 0) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    return NULL;
}

static const struct cbn_window_metric *find_metric(
    const struct cbn_window_service *sv,
    const char *name,
    const char *peer)
{
    for (uint32_t j = 0; j < sv->n_metrics; j++) {
        if (strcmp(sv->metrics[j].name, name) == 0 &&
            strcmp(sv->metrics[j].peer, peer) == 0) {
            return &sv->metrics[j];
        }
    }
    return NULL;
}

/* The mean of a distribution given at cbn_percentiles[] (the integral of
 * its quantile function, taken flat below p10 and above p99.9); NaN when a
 * percentile is missing. */
static double mean_of_pct(const float *p)
{
    double m = 0.1 * p[0] + 0.001 * p[CBN_N_PCT - 1];
    for (int k = 0; k + 1 < CBN_N_PCT; k++) {
        double dq = (cbn_percentiles[k + 1] - cbn_percentiles[k]) / 100;
        m += dq * ((double)p[k] + (double)p[k + 1]) / 2;
    }
    return m;
}

/* ---- training -------------------------------------------------------------
 */

static int train_svc(struct svc *s,
                     const struct cbn_window *const *w,
                     size_t n,
                     double *buf /* CBN_N_PCT * n */)
{
    s->cap = s->thr = NAN;
    /* The metrics it ever had, by (name, peer). */
    size_t nk = 0, cap = 16;
    const struct cbn_window_metric **keys = malloc(cap * sizeof *keys);
    if (keys == NULL) {
        return SM_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        const struct cbn_window_service *sv = cbn_window_service(w[i], s->name);
        for (uint32_t j = 0; sv != NULL && j < sv->n_metrics; j++) {
            if (nk == cap) {
                const struct cbn_window_metric **k2 =
                    realloc(keys, 2 * cap * sizeof *keys);
                if (k2 == NULL) {
                    free(keys);
                    return SM_ENOMEM;
                }
                keys = k2;
                cap *= 2;
            }
            keys[nk++] = &sv->metrics[j];
        }
    }
    qsort(keys, nk, sizeof *keys, cmp_metric);
    s->feat = calloc(nk + 1, sizeof *s->feat);
    if (s->feat == NULL) {
        free(keys);
        return SM_ENOMEM;
    }
    for (size_t i = 0; i < nk; i++) {
        if (s->n_feat > 0 && cmp_metric(&keys[i], &keys[i - 1]) == 0) {
            continue;
        }
        struct feat *f = &s->feat[s->n_feat++];
        f->name = strdup(keys[i]->name);
        f->peer = strdup(keys[i]->peer);
        f->res = keys[i]->resource;
        if (f->name == NULL || f->peer == NULL) {
            free(keys);
            return SM_ENOMEM;
        }
    }
    free(keys);
    /* Per feature (-1: latency) and percentile, the training values. */
    for (size_t fi = 0; fi <= s->n_feat; fi++) {
        struct feat *f = fi < s->n_feat ? &s->feat[fi] : NULL;
        size_t cnt[CBN_N_PCT] = {0};
        double cpu_max = NAN;
        for (size_t i = 0; i < n; i++) {
            const struct cbn_window_service *sv =
                cbn_window_service(w[i], s->name);
            const struct cbn_window_metric *m =
                sv && f ? find_metric(sv, f->name, f->peer) : NULL;
            const float *p =
                f ? (m ? m->pct : NULL) : (sv ? sv->latency_ms : NULL);
            for (int k = 0; p != NULL && k < CBN_N_PCT; k++) {
                if (isfinite(p[k])) {
                    buf[(size_t)k * n + cnt[k]++] = p[k];
                }
            }
            if (f && m && strcmp(f->name, CPU_METRIC) == 0 && f->peer[0] == 0 &&
                isfinite(m->pct[CBN_N_PCT - 1]) &&
                !(m->pct[CBN_N_PCT - 1] <= cpu_max)) {
                cpu_max = m->pct[CBN_N_PCT - 1];
            }
        }
        if (cpu_max > 0) {
            s->cap = cpu_max;
        }
        if (f == NULL && cnt[P99] > 0) {
            /* n-sigma: mean and sd of p99 (before sorting) */
            const double *v = buf + (size_t)P99 * n;
            double m = 0, ss = 0;
            for (size_t i = 0; i < cnt[P99]; i++) {
                m += v[i];
            }
            m /= (double)cnt[P99];
            for (size_t i = 0; i < cnt[P99]; i++) {
                ss += (v[i] - m) * (v[i] - m);
            }
            double sd = cnt[P99] > 1 ? sqrt(ss / (double)(cnt[P99] - 1)) : 0;
            s->lat_mean = m;
            s->lat_sd = fmax(sd, fmax(1e-3 * fabs(m), 1e-9));
        } else if (f == NULL) {
            s->lat_mean = s->lat_sd = NAN;
        }
        for (int k = 0; k < CBN_N_PCT; k++) {
            robust_stats(buf + (size_t)k * n, cnt[k],
                         f ? &f->med[k] : &s->lat_med[k],
                         f ? &f->scale[k] : &s->lat_scale[k]);
        }
    }
    return SM_OK;
}

int baseline_train(enum baseline_kind kind,
                   const struct cbn_window *const *w,
                   size_t n,
                   struct baseline **out)
{
    if ((unsigned)kind >= BASELINE_KINDS) {
        return SM_EINVAL;
    }
    struct baseline *b = calloc(1, sizeof *b);
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        total += w[i]->n_services;
    }
    const char **names = malloc((total + 1) * sizeof *names);
    double *buf = malloc((CBN_N_PCT * n + 1) * sizeof *buf);
    int rc = b && names && buf ? SM_OK : SM_ENOMEM;
    if (rc == SM_OK) {
        b->kind = kind;
        size_t nn = 0;
        for (size_t i = 0; i < n; i++) {
            for (uint32_t j = 0; j < w[i]->n_services; j++) {
                names[nn++] = w[i]->services[j].name;
            }
        }
        qsort(names, nn, sizeof *names, cmp_str);
        b->svc = calloc(nn + 1, sizeof *b->svc);
        rc = b->svc ? SM_OK : SM_ENOMEM;
        for (size_t i = 0; rc == SM_OK && i < nn; i++) {
            if (i > 0 && strcmp(names[i], names[i - 1]) == 0) {
                continue;
            }
            struct svc *s = &b->svc[b->n_svc++];
            s->name = strdup(names[i]);
            rc = s->name ? train_svc(s, w, n, buf) : SM_ENOMEM;
        }
    }
    free(names);
    free(buf);
    if (rc != SM_OK) {
        baseline_free(b);
        return rc;
    }
    *out = b;
    return SM_OK;
}

int baseline_set_capacity(struct baseline *b, const char *service, double cores)
{
    if (!(cores > 0)) {
        return SM_EINVAL;
    }
    struct svc *s = (struct svc *)find_svc(b, service);
    if (s == NULL) {
        return SM_ENOTFOUND;
    }
    s->cap = cores;
    return SM_OK;
}

/* ---- the oracle -----------------------------------------------------------
 */

static int cmp_ptr(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t) * (const void *const *)a;
    uintptr_t y = (uintptr_t) * (const void *const *)b;
    return (x > y) - (x < y);
}

struct xy
{
    double x;
    int y;
};

static int cmp_xy_desc(const void *a, const void *b)
{
    const struct xy *p = a, *q = b;
    return (p->x < q->x) - (p->x > q->x);
}

int baseline_tune_oracle(struct baseline *b,
                         const struct cbn_window *const *w,
                         const char *const *truth,
                         size_t n)
{
    if (b->kind != BASELINE_ORACLE) {
        return SM_EINVAL;
    }
    const struct cbn_window **u = malloc((n + 1) * sizeof *u);
    unsigned char *pos = calloc(b->n_svc * n + 1, 1);
    struct xy *v = malloc((n + 1) * sizeof *v);
    if (u == NULL || pos == NULL || v == NULL) {
        free(u);
        free(pos);
        free(v);
        return SM_ENOMEM;
    }
    /* The distinct windows, and which services are culprits of each. */
    memcpy(u, w, n * sizeof *u);
    qsort(u, n, sizeof *u, cmp_ptr);
    size_t nu = 0;
    for (size_t i = 0; i < n; i++) {
        if (nu == 0 || u[nu - 1] != u[i]) {
            u[nu++] = u[i];
        }
    }
    for (size_t i = 0; i < n; i++) {
        const struct svc *s = truth[i] ? find_svc(b, truth[i]) : NULL;
        if (s != NULL) {
            const struct cbn_window **at =
                bsearch(&w[i], u, nu, sizeof *u, cmp_ptr);
            pos[(size_t)(s - b->svc) * n + (size_t)(at - u)] = 1;
        }
    }
    for (size_t si = 0; si < b->n_svc; si++) {
        struct svc *s = &b->svc[si];
        size_t m = 0, np = 0;
        for (size_t k = 0; k < nu; k++) {
            const struct cbn_window_service *sv =
                cbn_window_service(u[k], s->name);
            int y = pos[si * n + k];
            np += (size_t)y;
            if (sv != NULL && isfinite(sv->latency_ms[P99])) {
                v[m++] = (struct xy){sv->latency_ms[P99], y};
            }
        }
        s->thr = NAN;
        if (m == 0) {
            continue;
        }
        qsort(v, m, sizeof *v, cmp_xy_desc);
        /* Flag the top k: F1 = 2 TP / (k + P); the smallest best k. */
        double best = 0;
        size_t best_k = 0, tp = 0;
        for (size_t k = 1; k <= m; k++) {
            tp += (size_t)v[k - 1].y;
            if (k < m && v[k].x == v[k - 1].x) {
                continue; /* no threshold separates them */
            }
            double f1 = 2.0 * (double)tp / (double)(k + np);
            if (f1 > best) {
                best = f1;
                best_k = k;
            }
        }
        if (best_k == 0) {
            s->thr = v[0].x * (1 + 1e-6); /* never a culprit: never flag */
        } else if (best_k < m) {
            s->thr = (v[best_k - 1].x + v[best_k].x) / 2;
        } else {
            s->thr = v[m - 1].x * (1 - 1e-6);
        }
        s->thr = fmax(s->thr, 1e-9);
    }
    free(u);
    free(pos);
    free(v);
    return SM_OK;
}

/* ---- scoring --------------------------------------------------------------
 */

/* The score of service @sv (@s its training, NULL if none): NaN without
 * data. Sets *flag and *res. */
static double score(const struct baseline *b,
                    const struct svc *s,
                    const struct cbn_window_service *sv,
                    int *flag,
                    enum cbn_resource *res)
{
    *flag = 0;
    *res = CBN_RES_UNKNOWN;
    if (s == NULL || sv == NULL) {
        return NAN;
    }
    double x = sv->latency_ms[P99], z = NAN;
    switch (b->kind) {
        case BASELINE_AUTOSCALE_STRICT:
        case BASELINE_AUTOSCALE_RELAX: {
            const struct cbn_window_metric *m = find_metric(sv, CPU_METRIC, "");
            *res = CBN_RES_CPU;
            z = m ? mean_of_pct(m->pct) / s->cap : NAN;
            *flag = z > (b->kind == BASELINE_AUTOSCALE_STRICT ? 0.5 : 0.7);
            break;
        }
        case BASELINE_NSIGMA:
            z = (x - s->lat_mean) / s->lat_sd;
            *flag = z > 3;
            break;
        case BASELINE_ORACLE:
            z = x / s->thr;
            *flag = z > 1;
            break;
        case BASELINE_ROBUST: {
            double top = 0;
            for (size_t fi = 0; fi <= s->n_feat; fi++) {
                const struct feat *f = fi < s->n_feat ? &s->feat[fi] : NULL;
                const struct cbn_window_metric *m =
                    f ? find_metric(sv, f->name, f->peer) : NULL;
                const float *p = f ? (m ? m->pct : NULL) : sv->latency_ms;
                const double *med = f ? f->med : s->lat_med;
                const double *sc = f ? f->scale : s->lat_scale;
                for (int k = 0; p != NULL && k < CBN_N_PCT; k++) {
                    double d = ((double)p[k] - med[k]) / sc[k];
                    if (!isfinite(p[k]) || isnan(d)) {
                        continue;
                    }
                    d = fmax(-Z_CAP, fmin(Z_CAP, d));
                    if (!(fabs(d) <= z)) {
                        z = fabs(d);
                    }
                    if (f != NULL && d > top) {
                        top = d;
                        *res = f->res;
                    }
                }
            }
            *flag = z > BASELINE_ROBUST_NAMED_Z;
            break;
        }
    }
    return isnan(z) ? NAN : z;
}

struct ranked
{
    double s;
    const char *name;
};

static int cmp_ranked(const void *a, const void *b)
{
    const struct ranked *p = a, *q = b;
    int pn = isnan(p->s), qn = isnan(q->s);
    if (pn != qn) {
        return pn - qn;
    }
    if (!pn && p->s != q->s) {
        return p->s < q->s ? 1 : -1;
    }
    return strcmp(p->name, q->name);
}

size_t baseline_rank(const struct baseline *b,
                     const struct cbn_window *w,
                     const char **ranked,
                     size_t max,
                     int *named)
{
    int any = 0;
    struct ranked *r = malloc((w->n_services + 1) * sizeof *r);
    if (named != NULL) {
        *named = 0;
    }
    if (r == NULL) {
        return 0;
    }
    for (uint32_t i = 0; i < w->n_services; i++) {
        const struct cbn_window_service *sv = &w->services[i];
        int flag;
        enum cbn_resource res;
        r[i].s = score(b, find_svc(b, sv->name), sv, &flag, &res);
        r[i].name = sv->name;
        any |= flag;
    }
    qsort(r, w->n_services, sizeof *r, cmp_ranked);
    size_t k = 0;
    for (; k < max && k < w->n_services; k++) {
        ranked[k] = r[k].name;
    }
    free(r);
    if (named != NULL) {
        *named = any;
    }
    return k;
}

double baseline_score(const struct baseline *b,
                      const struct cbn_window *w,
                      const char *service)
{
    int flag;
    enum cbn_resource res;
    return score(b, find_svc(b, service), cbn_window_service(w, service), &flag,
                 &res);
}

enum cbn_resource baseline_resource(const struct baseline *b,
                                    const struct cbn_window *w,
                                    const char *service)
{
    int flag;
    enum cbn_resource res;
    score(b, find_svc(b, service), cbn_window_service(w, service), &flag, &res);
    return res;
}

void baseline_free(struct baseline *b)
{
    if (b == NULL) {
        return;
    }
    for (size_t i = 0; i < b->n_svc; i++) {
        for (size_t j = 0; j < b->svc[i].n_feat; j++) {
            free(b->svc[i].feat[j].name);
            free(b->svc[i].feat[j].peer);
        }
        free(b->svc[i].feat);
        free(b->svc[i].name);
    }
    free(b->svc);
    free(b);
}

/* ---- self-check -----------------------------------------------------------
 */

#define SC_SVC   3
#define SC_TRAIN 60
#define SC_TEST  12

struct sc_window
{
    struct cbn_window w;
    struct cbn_window_service sv[SC_SVC];
    struct cbn_window_metric m[SC_SVC][2];
};

static void sc_fill(float *pct, double v)
{
    for (int k = 0; k < CBN_N_PCT; k++) {
        pct[k] = (float)(v * (0.8 + 0.05 * k));
    }
}

/* Services a, b, c with CPU (cores of 1), memory (MB) and p99 latency (ms)
 * around 0.2, 100 and 10, times @f[service][0..2]. */
static void sc_make(struct sc_window *s, unsigned seed, double f[SC_SVC][3])
{
    static const char *const names[SC_SVC] = {"a", "b", "c"};
    memset(s, 0, sizeof *s);
    for (int i = 0; i < SC_SVC; i++) {
        seed = seed * 1103515245u + 12345u;
        double noise = 1 + 0.1 * ((double)(seed >> 16 & 0x7fff) / 32768 - 0.5);
        struct cbn_window_metric *m = s->m[i];
        m[0] = (struct cbn_window_metric){CPU_METRIC, "", CBN_RES_CPU, 4, {0}};
        m[1] = (struct cbn_window_metric){
            "container_memory_working_set_bytes", "", CBN_RES_MEMORY, 4, {0}};
        sc_fill(m[0].pct, 0.2 * noise * f[i][0]);
        sc_fill(m[1].pct, 100 * noise * f[i][1]);
        s->sv[i] = (struct cbn_window_service){names[i], 100, 0, {0}, 2, m};
        sc_fill(s->sv[i].latency_ms, 10 / 0.8 / 1.3 * noise * f[i][2]);
    }
    s->w.n_services = SC_SVC;
    s->w.services = s->sv;
}

static int sc_fail(const char *what, enum baseline_kind kind)
{
    fprintf(stderr, "baseline_selfcheck: %s: %s\n", baseline_name(kind), what);
    return 1;
}

int baseline_selfcheck(void)
{
    static struct sc_window train[SC_TRAIN], test[SC_TEST];
    const struct cbn_window *tw[SC_TRAIN], *xw[SC_TEST];
    const char *truth[SC_TEST];
    for (unsigned i = 0; i < SC_TRAIN; i++) {
        double f[SC_SVC][3] = {{1, 1, 1}, {1, 1, 1}, {1, 1, 1}};
        sc_make(&train[i], i + 1, f);
        tw[i] = &train[i].w;
    }
    /* Test: even windows calm, odd ones a CPU fault on c (every third of
     * them a memory fault on b instead). */
    for (unsigned i = 0; i < SC_TEST; i++) {
        double f[SC_SVC][3] = {{1, 1, 1}, {1, 1, 1}, {1, 1, 1}};
        truth[i] = NULL;
        if (i % 2 == 1 && i % 3 == 0) {
            f[1][1] = 3;
            f[1][2] = 4;
            truth[i] = "b";
        } else if (i % 2 == 1) {
            f[2][0] = 5;
            f[2][2] = 5;
            truth[i] = "c";
        }
        sc_make(&test[i], 1000 + i, f);
        xw[i] = &test[i].w;
    }
    int bad = 0;
    for (int kind = 0; kind < BASELINE_KINDS; kind++) {
        struct baseline *b = NULL;
        if (baseline_train((enum baseline_kind)kind, tw, SC_TRAIN, &b) !=
            SM_OK) {
            return sc_fail("train failed", (enum baseline_kind)kind);
        }
        if (kind == BASELINE_ORACLE &&
            baseline_tune_oracle(b, xw, truth, SC_TEST) != SM_OK) {
            baseline_free(b);
            return sc_fail("tune failed", (enum baseline_kind)kind);
        }
        for (int i = 0; i < SC_SVC; i++) {
            static const char *const names[SC_SVC] = {"a", "b", "c"};
            baseline_set_capacity(b, names[i], 1.0);
        }
        for (unsigned i = 0; i < SC_TEST; i++) {
            const char *r[SC_SVC];
            int named;
            size_t nr = baseline_rank(b, xw[i], r, SC_SVC, &named);
            int cpu_only = kind <= BASELINE_AUTOSCALE_RELAX;
            if (nr != SC_SVC) {
                bad |= sc_fail("short ranking", (enum baseline_kind)kind);
            } else if (truth[i] == NULL && named) {
                bad |=
                    sc_fail("alarm on a calm window", (enum baseline_kind)kind);
            } else if (truth[i] != NULL && (!cpu_only || *truth[i] == 'c') &&
                       (!named || strcmp(r[0], truth[i]) != 0)) {
                bad |= sc_fail("missed the culprit", (enum baseline_kind)kind);
            } else if (truth[i] != NULL && kind == BASELINE_ROBUST &&
                       baseline_resource(b, xw[i], r[0]) !=
                           (*truth[i] == 'c' ? CBN_RES_CPU : CBN_RES_MEMORY)) {
                bad |= sc_fail("wrong resource", (enum baseline_kind)kind);
            }
        }
        baseline_free(b);
    }
    return bad;
}
