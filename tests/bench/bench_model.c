/* Benchmarks of the model on simulated telemetry (not tests: they assert
 * nothing about time). The simulator's application runs through the real
 * aggregator into windows; the model trains on the first part, with faults
 * only on a "training" half of the services, and is judged on the rest of
 * the run, where faults hit only the other, held-out half:
 *
 *   train     full training time and GFLOP/s on the training windows,
 *             against the same machine's large-sgemm rate (1 and all
 *             threads) measured in the same run;
 *   quality   R^2 and RMSE of generated against observed latencies on
 *             held-out fault-free windows (teacher-forced and generated);
 *   sweep     time per diagnosis (service + resource level), median/p90;
 *   partial   retraining after one leaf service changed (it gained a
 *             metric) against a full retrain of the same windows;
 *   accuracy  AC@1, AC@3, Avg@5, resource accuracy and false positives on
 *             the violated held-out windows, for every abduction and
 *             ranking variant side by side.
 *   remote    with BENCH_REMOTE_OWNERS=N set, only this: the default
 *             diagnosis of the violated held-out windows with the nodes'
 *             passes split over N in-process owners (gvae_diagnose_remote):
 *             rows, requests, levels and bytes per diagnosis, and its time
 *             against gvae_diagnose (the cost of splitting, no network).
 *
 * Usage: bench_model [--topology social] [--windows 2000] [--test 720]
 *                    [--sampling 0.1] [--seed 1] [--samples 64]
 *                    [--epochs N] [--skip-partial] */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/err.h"
#include "base/rng.h"
#include "baselines.h"
#include "bench_util.h"
#include "cbn/cbn.h"
#include "gvae/gvae.h"
#include "gvae/mat.h"
#include "node/sim.h"

#define S_NS      1000000000ull
#define WINDOW_NS (30 * S_NS)
#define MAX_TRUTH 8

struct opts
{
    const char *topology;
    size_t windows, test;
    double sampling;
    uint64_t seed;
    unsigned samples, epochs, hidden;
    int skip_partial;
};

/* ---- windows from the simulator ------------------------------------------ */

struct run
{
    struct cbn_agg *agg;
    struct cbn_window **w;
    size_t n, cap;
    int rc;
};

static void on_window(void *arg, struct cbn_window *w)
{
    struct run *r = arg;
    if (r->n == r->cap) {
        size_t cap = r->cap ? 2 * r->cap : 1024;
        struct cbn_window **v = realloc(r->w, cap * sizeof *v);
        if (v == NULL) {
            r->rc = SM_ENOMEM;
            cbn_window_free(w);
            return;
        }
        r->w = v;
        r->cap = cap;
    }
    r->w[r->n++] = w;
}

static int on_spans(void *arg, const struct cbn_span *s, size_t n)
{
    struct run *r = arg;
    int rc = cbn_agg_add_spans(r->agg, s, n);
    if (rc == SM_OK) {
        rc = cbn_agg_close_ready(r->agg, on_window, r);
    }
    return rc != SM_OK ? rc : r->rc;
}

static int on_points(void *arg, const struct cbn_metric_point *p, size_t n)
{
    struct run *r = arg;
    int rc = cbn_agg_add_metrics(r->agg, p, n);
    if (rc == SM_OK) {
        rc = cbn_agg_close_ready(r->agg, on_window, r);
    }
    return rc != SM_OK ? rc : r->rc;
}

static uint64_t name_hash(const char *svc, uint64_t seed)
{
    uint64_t h = 1469598103934665603ULL ^ (seed * 0x9E3779B97F4A7C15ULL);
    for (const char *c = svc; *c; c++) {
        h = (h ^ (uint8_t)*c) * 1099511628211ULL;
    }
    return h;
}

/* Whether @svc is in the held-out half: the services but the frontend,
 * ordered by a seeded hash of their names, every other one. */
static int held_out(const struct node_sim_topology *topo,
                    const char *svc,
                    uint64_t seed)
{
    const char *front = node_sim_topology_frontend(topo);
    if (svc == NULL || strcmp(svc, front) == 0) {
        return 0;
    }
    uint64_t h = name_hash(svc, seed);
    size_t rank = 0;
    for (size_t i = 0; i < node_sim_topology_services(topo); i++) {
        const char *o = node_sim_topology_service(topo, i);
        uint64_t ho = name_hash(o, seed);
        rank += strcmp(o, front) != 0 &&
                (ho < h || (ho == h && strcmp(o, svc) < 0));
    }
    return rank % 2 == 1;
}

/* ---- scoring ------------------------------------------------------------- */

struct score
{
    double ac1, ac3, avg5, res_ok;
    size_t cases, res_cases, fp, fp_cases;
    double ms, ms_p90;
    unsigned confusion[CBN_RES_COUNT][CBN_RES_COUNT]; /* truth, predicted */
    size_t wrong;            /* named a culprit that is not one */
    double det_sum;          /* detection latency, windows, over detected */
    size_t det_n, det_total; /* faults detected, faults violating */
};

static int in_truth(const char *svc, const char *const *truth, size_t nt)
{
    for (size_t k = 0; k < nt; k++) {
        /* a metanode "a+b" names each of its members */
        const char *p = strstr(svc, truth[k]);
        size_t len = strlen(truth[k]);
        if (p != NULL && (p == svc || p[-1] == '+') &&
            (p[len] == '\0' || p[len] == '+')) {
            return 1;
        }
    }
    return 0;
}

/* The culprits of window @w by the ground truth: services (and their
 * resources) of the faults active in it; load spikes name none. */
static size_t window_truth(const struct node_sim *sim,
                           const struct cbn_window *w,
                           const char **truth,
                           enum cbn_resource *tres)
{
    const struct node_sim_fault *f[MAX_TRUTH];
    size_t nf =
        node_sim_active_faults(sim, w->start_ns, w->end_ns, f, MAX_TRUTH);
    size_t nt = 0;
    for (size_t k = 0; k < nf && k < MAX_TRUTH; k++) {
        if (f[k]->service != NULL) {
            truth[nt] = f[k]->service;
            tres[nt++] = f[k]->resource;
        }
    }
    return nt;
}

/* Scores one ranking of a violated window with @nt true culprits. */
static void score_ranking(struct score *s,
                          const char *const *ranked,
                          size_t n_ranked,
                          int named,
                          const char *culprit,
                          enum cbn_resource culprit_res,
                          const char *const *truth,
                          const enum cbn_resource *tres,
                          size_t nt)
{
    if (nt == 0) {
        s->fp_cases++;
        s->fp += named != 0;
        return;
    }
    double ac[6] = {0};
    for (size_t k = 1; k <= 5; k++) {
        size_t hit = 0;
        for (size_t t = 0; t < nt; t++) {
            const char *one[1] = {truth[t]};
            for (size_t i = 0; i < k && i < n_ranked; i++) {
                if (in_truth(ranked[i], one, 1)) {
                    hit++;
                    break;
                }
            }
        }
        ac[k] = (double)hit / (double)nt;
    }
    s->wrong += named && culprit != NULL && !in_truth(culprit, truth, nt);
    s->ac1 += ac[1];
    s->ac3 += ac[3];
    s->avg5 += (ac[1] + ac[2] + ac[3] + ac[4] + ac[5]) / 5;
    s->cases++;
    if (culprit == NULL || !in_truth(culprit, truth, nt)) {
        return;
    }
    s->res_cases++;
    for (size_t k = 0; k < nt; k++) {
        const char *one[1] = {truth[k]};
        if (in_truth(culprit, one, 1)) {
            s->confusion[tres[k]][culprit_res]++;
            s->res_ok += culprit_res == tres[k];
            break;
        }
    }
}

struct evalctx
{
    const struct gvae_model *model;
    const struct cbn_normals *normals;
    const struct node_sim *sim;
    const struct cbn_window *const *win;
    size_t from, to;
    double *times;
    uint8_t *correct; /* per window: violated and top-1 a true culprit */
};

/* Detection latency: for every fault of the held-out range that violated
 * QoS, the windows from its start to the first window whose top-ranked
 * service is a true culprit. */
static void detection(const struct evalctx *cx, struct score *s)
{
    for (size_t f = 0; f < node_sim_fault_count(cx->sim); f++) {
        const struct node_sim_fault *ft = node_sim_fault(cx->sim, f);
        if (ft->service == NULL) {
            continue;
        }
        size_t first = SIZE_MAX, hit = SIZE_MAX;
        int violated = 0;
        for (size_t i = cx->from; i < cx->to; i++) {
            const struct cbn_window *w = cx->win[i];
            if (w->end_ns <= ft->start_ns || w->start_ns >= ft->end_ns) {
                continue;
            }
            first = first == SIZE_MAX ? i : first;
            violated |= w->qos_violated;
            if (cx->correct[i] && hit == SIZE_MAX) {
                hit = i;
            }
        }
        if (first == SIZE_MAX || !violated) {
            continue;
        }
        s->det_total++;
        if (hit != SIZE_MAX) {
            s->det_n++;
            s->det_sum += (double)(hit - first);
        }
    }
}

static void mark(const struct evalctx *cx,
                 size_t i,
                 const char *top,
                 const char *const *truth,
                 size_t nt)
{
    cx->correct[i] = top != NULL && nt > 0 && in_truth(top, truth, nt);
}

static void eval_variant(struct evalctx *cx,
                         const struct gvae_sweep_config *sw,
                         struct score *s)
{
    memset(s, 0, sizeof *s);
    size_t nt_times = 0;
    char err[SM_ERRMSG_SIZE];
    for (size_t i = cx->from; i < cx->to; i++) {
        const struct cbn_window *w = cx->win[i];
        cx->correct[i] = 0;
        if (!w->qos_violated) {
            continue;
        }
        const char *truth[MAX_TRUTH];
        enum cbn_resource tres[MAX_TRUTH];
        size_t nt = window_truth(cx->sim, w, truth, tres);
        struct gvae_diagnosis *d = NULL;
        double ts = bench_now_s();
        if (gvae_diagnose(cx->model, w, cx->normals, sw, &d, err) != SM_OK) {
            fprintf(stderr, "diagnose: %s\n", err);
            continue;
        }
        cx->times[nt_times++] = (bench_now_s() - ts) * 1e3;
        const char *ranked[256];
        size_t nr = d->n_ranking < 256 ? d->n_ranking : 256;
        for (size_t k = 0; k < nr; k++) {
            ranked[k] = d->ranking[k].service;
        }
        score_ranking(s, ranked, nr, d->n_culprits > 0,
                      d->n_culprits ? d->culprits[0].service : NULL,
                      d->n_culprits ? d->culprits[0].resource : CBN_RES_UNKNOWN,
                      truth, tres, nt);
        mark(cx, i, nr ? ranked[0] : NULL, truth, nt);
        gvae_diagnosis_free(d);
    }
    detection(cx, s);
    s->ms = nt_times ? bench_median(cx->times, (int)nt_times) : NAN;
    s->ms_p90 =
        nt_times ? cx->times[(size_t)(0.9 * (double)(nt_times - 1))] : NAN;
}

static void print_score(const char *a, const char *b, const struct score *s)
{
    double n = s->cases ? (double)s->cases : 1;
    printf(
        "%-12s %-18s %6.3f %6.3f %6.3f %6.3f %4zu/%-4zu %5zu %5.2f "
        "%3zu/%-3zu %8.2f\n",
        a, b, s->ac1 / n, s->ac3 / n, s->avg5 / n,
        s->res_cases ? s->res_ok / (double)s->res_cases : NAN, s->fp,
        s->fp_cases, s->wrong, s->det_n ? s->det_sum / (double)s->det_n : NAN,
        s->det_n, s->det_total, s->ms);
}

/* ---- passes across peers (BENCH_REMOTE_OWNERS=N) ------------------------ */

struct bench_mesh
{
    struct gvae_pass_server *srv[17]; /* by owner, 1..n */
    unsigned n;
};

static unsigned bench_owner(void *arg, size_t node)
{
    const struct bench_mesh *ms = arg;
    return 1 + (unsigned)(node % ms->n);
}

/* In-process: each owner's server answers at once, one after the other. */
static void bench_exchange(void *arg,
                           size_t n,
                           const unsigned *owners,
                           const uint8_t *const *reqs,
                           const size_t *lens,
                           uint8_t **reps,
                           size_t *rep_lens)
{
    struct bench_mesh *ms = arg;
    for (size_t k = 0; k < n; k++) {
        if (gvae_pass_serve(ms->srv[owners[k]], reqs[k], lens[k], &reps[k],
                            &rep_lens[k]) != SM_OK) {
            reps[k] = NULL;
        }
    }
}

static int bench_same(const struct gvae_diagnosis *a,
                      const struct gvae_diagnosis *b)
{
    int ok = a->n_culprits == b->n_culprits && a->n_ranking == b->n_ranking &&
             a->rows == b->rows && a->n_path == b->n_path;
    for (size_t k = 0; ok && k < a->n_culprits; k++) {
        ok = strcmp(a->culprits[k].service, b->culprits[k].service) == 0 &&
             a->culprits[k].resource == b->culprits[k].resource &&
             a->culprits[k].p_qos_met == b->culprits[k].p_qos_met &&
             a->culprits[k].effect_ms == b->culprits[k].effect_ms &&
             a->culprits[k].resource_effect_ms ==
                 b->culprits[k].resource_effect_ms;
    }
    for (size_t k = 0; ok && k < a->n_ranking; k++) {
        ok = strcmp(a->ranking[k].service, b->ranking[k].service) == 0 &&
             a->ranking[k].score == b->ranking[k].score &&
             a->ranking[k].effect_ms == b->ranking[k].effect_ms &&
             a->ranking[k].p_qos_met == b->ranking[k].p_qos_met;
    }
    return ok;
}

/* The default diagnosis of every violated held-out window, here and with
 * the nodes spread round-robin over @owners in-process owners: what a
 * diagnosis sends, and what splitting costs without a network. */
static void bench_remote(const struct evalctx *cx,
                         const struct gvae_sweep_config *sw,
                         unsigned owners)
{
    size_t nw = 0, differ = 0;
    double *t_local = calloc(cx->to - cx->from + 1, sizeof(double));
    double *t_remote = calloc(cx->to - cx->from + 1, sizeof(double));
    double *t_servers = calloc(cx->to - cx->from + 1, sizeof(double));
    struct gvae_remote_stats sum = {0};
    double rows = 0;
    char err[SM_ERRMSG_SIZE];
    for (size_t i = cx->from; i < cx->to; i++) {
        const struct cbn_window *w = cx->win[i];
        if (!w->qos_violated) {
            continue;
        }
        struct bench_mesh ms = {.n = owners};
        double ts = bench_now_s();
        int ok = 1;
        for (unsigned o = 1; o <= owners; o++) {
            ok &= gvae_pass_server_new(cx->model, w, cx->normals, sw,
                                       &ms.srv[o], err) == SM_OK;
        }
        t_servers[nw] = (bench_now_s() - ts) * 1e3 / owners;
        struct gvae_diagnosis *a = NULL, *b = NULL;
        struct gvae_remote remote = {&ms, bench_owner, bench_exchange};
        struct gvae_remote_stats st;
        ts = bench_now_s();
        ok &= gvae_diagnose(cx->model, w, cx->normals, sw, &a, err) == SM_OK;
        t_local[nw] = (bench_now_s() - ts) * 1e3;
        ts = bench_now_s();
        ok &= ok && gvae_diagnose_remote(cx->model, w, cx->normals, sw, &remote,
                                         &st, &b, err) == SM_OK;
        t_remote[nw] = (bench_now_s() - ts) * 1e3;
        if (ok) {
            differ += !bench_same(a, b);
            rows += (double)b->rows;
            sum.passes += st.passes;
            sum.levels += st.levels;
            sum.requests += st.requests;
            sum.fallbacks += st.fallbacks;
            sum.bytes_out += st.bytes_out;
            sum.bytes_in += st.bytes_in;
            nw++;
        } else {
            fprintf(stderr, "bench_model: remote: %s\n", err);
        }
        gvae_diagnosis_free(a);
        gvae_diagnosis_free(b);
        for (unsigned o = 1; o <= owners; o++) {
            gvae_pass_server_free(ms.srv[o]);
        }
    }
    double n = nw ? (double)nw : 1;
    printf(
        "\n== passes across peers (%u owners, round-robin; %zu violated "
        "held-out windows) ==\n",
        owners, nw);
    printf(
        "per diagnosis: %.0f decoder rows, %.1f passes, %.1f levels with "
        "requests, %.1f requests, %.1f KiB out, %.1f KiB in, %.2f "
        "fallbacks\n",
        rows / n, (double)sum.passes / n, (double)sum.levels / n,
        (double)sum.requests / n, (double)sum.bytes_out / n / 1024,
        (double)sum.bytes_in / n / 1024, (double)sum.fallbacks / n);
    printf(
        "gvae_diagnose %.2f ms, gvae_diagnose_remote in-process %.2f ms "
        "(medians; owners' abduction %.2f ms each, not included); %zu "
        "diagnoses differ\n",
        bench_median(t_local, (int)nw), bench_median(t_remote, (int)nw),
        bench_median(t_servers, (int)nw), differ);
    free(t_local);
    free(t_remote);
    free(t_servers);
}

/* The default sweep for the benchmark's frontend and target. */
static void bench_sweep(struct gvae_sweep_config *sw,
                        const char *front,
                        double target,
                        unsigned samples)
{
    gvae_sweep_config_default(sw);
    sw->qos_service = front;
    sw->qos_target_ms = target;
    sw->samples = samples;
}

int main(int argc, char **argv)
{
    struct opts o = {"social", 2000, 720, 0.1, 1, 64, 0, 0, 0};
    static const struct option lo[] = {
        {"topology", required_argument, NULL, 't'},
        {"windows", required_argument, NULL, 'w'},
        {"test", required_argument, NULL, 'T'},
        {"sampling", required_argument, NULL, 's'},
        {"seed", required_argument, NULL, 'S'},
        {"samples", required_argument, NULL, 'n'},
        {"epochs", required_argument, NULL, 'e'},
        {"skip-partial", no_argument, NULL, 'p'},
        {"hidden", required_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (c) {
            case 't':
                o.topology = optarg;
                break;
            case 'w':
                o.windows = strtoul(optarg, NULL, 10);
                break;
            case 'T':
                o.test = strtoul(optarg, NULL, 10);
                break;
            case 's':
                o.sampling = strtod(optarg, NULL);
                break;
            case 'S':
                o.seed = strtoull(optarg, NULL, 10);
                break;
            case 'n':
                o.samples = (unsigned)strtoul(optarg, NULL, 10);
                break;
            case 'e':
                o.epochs = (unsigned)strtoul(optarg, NULL, 10);
                break;
            case 'p':
                o.skip_partial = 1;
                break;
            case 'h':
                o.hidden = (unsigned)strtoul(optarg, NULL, 10);
                break;
            default:
                fprintf(stderr,
                        "usage: see the comment at the top of "
                        "tests/bench/bench_model.c\n");
                return 2;
        }
    }
    char err[SM_ERRMSG_SIZE];
    struct node_sim_topology *topo = NULL;
    if (node_sim_topology_builtin(o.topology, &topo) != SM_OK &&
        node_sim_topology_load(o.topology, &topo, err) != SM_OK) {
        fprintf(stderr, "bench_model: topology %s: %s\n", o.topology, err);
        return 1;
    }
    const char *front = node_sim_topology_frontend(topo);
    double target = node_sim_topology_qos_target_ms(topo);

    /* The run: training windows, then held-out windows. */
    struct node_sim_config sc;
    node_sim_config_init(&sc, topo);
    sc.seed = o.seed;
    sc.sampling = o.sampling;
    if (sc.start_ns == 0) {
        sc.start_ns = 1700028000ull * S_NS; /* the simulator's default */
    }
    sc.duration_ns = (uint64_t)(o.windows + o.test + 1) * WINDOW_NS;
    uint64_t split_ns = sc.start_ns + (uint64_t)o.windows * WINDOW_NS;
    struct node_sim_schedule sch = {
        .seed = o.seed,
        .start_ns = sc.start_ns,
        .duration_ns = sc.duration_ns,
        .clean_ns = 0,
        .p_minor = -1,
        .p_multi = -1,
        .p_spike = -1,
        .load = sc.load,
    };
    struct node_sim_fault *all = NULL, *kept;
    size_t n_all = 0, n_kept = 0;
    if (node_sim_schedule_generate(topo, &sch, &all, &n_all) != SM_OK) {
        fprintf(stderr, "bench_model: schedule failed\n");
        return 1;
    }
    kept = calloc(n_all + 1, sizeof *kept);
    /* Training faults only on training services, test faults only on
     * held-out ones; spikes on both sides. Whole groups go together. */
    for (size_t i = 0; i < n_all; i++) {
        int test_side = all[i].start_ns >= split_ns;
        int ok = 1;
        for (size_t j = 0; j < n_all; j++) {
            if (all[j].group != all[i].group || all[j].service == NULL) {
                continue;
            }
            int ho = held_out(topo, all[j].service, o.seed);
            ok &= test_side ? ho : !ho;
        }
        /* faults straddling the split would leak into training */
        if (!test_side && all[i].end_ns > split_ns) {
            ok = 0;
        }
        if (ok) {
            kept[n_kept++] = all[i];
        }
    }
    sc.faults = kept;
    sc.n_faults = n_kept;
    struct node_sim *sim = NULL;
    if (node_sim_new(&sc, &sim, err) != SM_OK) {
        fprintf(stderr, "bench_model: %s\n", err);
        return 1;
    }
    struct cbn_agg_config ac = {
        .window_ns = WINDOW_NS,
        .lateness_ns = 5 * S_NS,
        .qos_service = front,
        .qos_percentile = 99,
        .qos_target_ms = target,
        .hash_seed = o.seed,
    };
    struct run run = {0};
    if (cbn_agg_new(&ac, &run.agg) != SM_OK) {
        return 1;
    }
    double t0 = bench_now_s();
    int rc = node_sim_run(sim, UINT64_MAX, on_spans, on_points, &run);
    if (rc == SM_OK) {
        rc = cbn_agg_flush(run.agg, on_window, &run);
    }
    double t_sim = bench_now_s() - t0;
    if (rc != SM_OK || run.n < o.windows + 10) {
        fprintf(stderr, "bench_model: simulation failed (%s, %zu windows)\n",
                sm_strerror(rc), run.n);
        return 1;
    }
    struct node_sim_stats ss;
    node_sim_stats(sim, &ss);
    size_t n_train = 0;
    while (n_train < run.n && run.w[n_train]->end_ns <= split_ns) {
        n_train++;
    }
    const struct cbn_window **win = (const struct cbn_window **)run.w;
    size_t viol_train = 0;
    for (size_t i = 0; i < n_train; i++) {
        viol_train += run.w[i]->qos_violated != 0;
    }
    printf("topology %s (%zu services), seed %llu, sampling %.3g\n", o.topology,
           node_sim_topology_services(topo), (unsigned long long)o.seed,
           o.sampling);
    printf(
        "simulated %.1f h in %.1f s: %llu requests, %llu spans, %zu "
        "windows (%zu training, %zu violated; %zu held-out), %zu faults "
        "kept of %zu\n",
        (double)sc.duration_ns / 3.6e12, t_sim, (unsigned long long)ss.requests,
        (unsigned long long)ss.spans, run.n, n_train, viol_train,
        run.n - n_train, n_kept, n_all);

    /* ---- CBN and normals from the training windows ---- */
    struct cbn_graph *graph = NULL;
    struct cbn_normals *normals = NULL;
    cbn_graph_new(&(struct cbn_graph_config){.age_out_windows = 100000},
                  &graph);
    cbn_normals_new(&normals);
    for (size_t i = 0; i < n_train; i++) {
        int changed;
        cbn_graph_observe(graph, win[i], &changed);
        cbn_normals_observe(normals, win[i]);
    }
    printf("CBN: %zu nodes, %zu links, version %llu\n",
           cbn_graph_node_count(graph), cbn_graph_link_count(graph),
           (unsigned long long)cbn_graph_version(graph));

    /* ---- peak: large sgemm through the model's own path ---- */
    printf("\n== train ==\n");
    {
        size_t n = 1024;
        float *a = malloc(n * n * sizeof *a), *b = malloc(n * n * sizeof *b);
        float *cm = malloc(n * n * sizeof *cm);
        for (size_t i = 0; i < n * n; i++) {
            a[i] = (float)(i % 7) * 0.1f;
            b[i] = (float)(i % 5) * 0.1f;
        }
        for (int th = 1; th <= 2; th++) {
            gvae_blas_set_threads(th);
            double best[5];
            for (int k = 0; k < 5; k++) {
                double ts = bench_now_s();
                gvae__gemm(false, false, n, n, n, 1, a, b, 0, cm);
                best[k] = 2.0 * n * n * n / (bench_now_s() - ts) / 1e9;
            }
            printf("sgemm 1024^3 on %d thread%s: %.1f GFLOP/s (median of 5)\n",
                   th, th > 1 ? "s" : "", bench_median(best, 5));
        }
        gvae_blas_set_threads(1);
        free(a);
        free(b);
        free(cm);
    }
    struct gvae_config cfg;
    gvae_config_default(&cfg);
    cfg.seed = o.seed;
    if (o.epochs) {
        cfg.max_epochs = o.epochs;
    }
    if (o.hidden) {
        cfg.hidden_max = o.hidden;
        cfg.hidden_min = o.hidden < cfg.hidden_min ? o.hidden : cfg.hidden_min;
    }
    struct gvae_model *model = NULL;
    struct gvae_train_report rep;
    if (gvae_train(&cfg, graph, win, n_train, 0, NULL, GVAE_RETRAIN_FULL,
                   &model, &rep, err) != SM_OK) {
        fprintf(stderr, "bench_model: train: %s\n", err);
        return 1;
    }
    printf(
        "full training: %.1f s on %u workers, %zu nodes, %zu params, "
        "%llu steps, %.1f GFLOP, %.2f GFLOP/s, val loss %.3f\n",
        rep.seconds, rep.workers, rep.nodes, gvae_model_params(model),
        (unsigned long long)rep.steps, rep.flops / 1e9,
        rep.flops / rep.seconds / 1e9, rep.val_loss);

    /* ---- quality on held-out fault-free windows ---- */
    const struct cbn_window **calm = calloc(run.n, sizeof *calm);
    size_t n_calm = 0;
    for (size_t i = n_train; i < run.n; i++) {
        const struct node_sim_fault *f[MAX_TRUTH];
        if (node_sim_active_faults(sim, win[i]->start_ns, win[i]->end_ns, f,
                                   MAX_TRUTH) == 0) {
            calm[n_calm++] = win[i];
        }
    }
    struct gvae_eval ev, ev_all;
    gvae_evaluate(model, calm, n_calm, front, &ev);
    gvae_evaluate(model, win + n_train, run.n - n_train, front, &ev_all);
    printf(
        "\n== quality (%zu held-out fault-free windows, %zu latency "
        "features) ==\nteacher-forced R2 %.3f RMSE %.2f ms; generated R2 "
        "%.3f RMSE %.2f ms; frontend p99 R2 %.3f\n",
        n_calm, ev.features, ev.r2_forced, ev.rmse_forced_ms, ev.r2_generated,
        ev.rmse_generated_ms, ev.r2_frontend);
    printf(
        "all %zu held-out windows (faults included): teacher-forced R2 "
        "%.3f RMSE %.2f ms; generated R2 %.3f RMSE %.2f ms; frontend p99 "
        "R2 %.3f\n",
        ev_all.windows, ev_all.r2_forced, ev_all.rmse_forced_ms,
        ev_all.r2_generated, ev_all.rmse_generated_ms, ev_all.r2_frontend);

    /* ---- accuracy, every variant ---- */
    enum gvae_abduction abd[3] = {GVAE_ABDUCT_POSTERIOR,
                                  GVAE_ABDUCT_POSTERIOR_X, GVAE_ABDUCT_PRIOR};
    enum gvae_rank rk[4] = {GVAE_RANK_GATED_EVIDENCE, GVAE_RANK_EFFECT_EVIDENCE,
                            GVAE_RANK_EFFECT, GVAE_RANK_EVIDENCE};
    struct evalctx cx = {
        .model = model,
        .normals = normals,
        .sim = sim,
        .win = win,
        .from = n_train,
        .to = run.n,
        .times = calloc(run.n + 1, sizeof(double)),
        .correct = calloc(run.n + 1, 1),
    };
    if (getenv("BENCH_REMOTE_OWNERS") != NULL) {
        /* only the split passes' figures, then stop */
        struct gvae_sweep_config sw;
        bench_sweep(&sw, front, target, o.samples);
        unsigned owners =
            (unsigned)strtoul(getenv("BENCH_REMOTE_OWNERS"), NULL, 10);
        bench_remote(&cx, &sw, owners < 1 ? 1 : owners > 16 ? 16 : owners);
        return 0;
    }
    if (getenv("BENCH_PROFILE_SWEEP") != NULL) {
        /* repeat the default diagnosis so a profiler sees mostly sweeps */
        struct gvae_sweep_config sw;
        bench_sweep(&sw, front, target, o.samples);
        for (int k = 0; k < 20; k++) {
            struct score sc0;
            eval_variant(&cx, &sw, &sc0);
            if (k == 19) {
                printf("profile: %.2f ms median over %zu diagnoses\n", sc0.ms,
                       sc0.cases + sc0.fp_cases);
            }
        }
        return 0;
    }
    printf("\n== accuracy on held-out faults (held-out services) ==\n");
    printf("%-12s %-18s %6s %6s %6s %6s %9s %5s %5s %7s %8s\n", "abduction",
           "ranking", "AC@1", "AC@3", "Avg@5", "res", "FP", "wrong", "det",
           "found", "ms/diag");
    for (int a = 0; a < 3; a++) {
        for (int r = 0; r < 4; r++) {
            if (a > 0 && r == 3) {
                continue; /* evidence alone does not use the model */
            }
            struct gvae_sweep_config sw;
            bench_sweep(&sw, front, target, o.samples);
            sw.abduction = abd[a];
            sw.rank = rk[r];
            struct score sc0;
            eval_variant(&cx, &sw, &sc0);
            print_score(gvae_abduction_name(abd[a]), gvae_rank_name(rk[r]),
                        &sc0);
            if (abd[a] == GVAE_ABDUCT_PRIOR &&
                rk[r] == GVAE_RANK_EFFECT_EVIDENCE) {
                printf(
                    "  (%zu violated windows with a culprit, %zu without; "
                    "sweep median %.2f ms, p90 %.2f ms)\n",
                    sc0.cases, sc0.fp_cases, sc0.ms, sc0.ms_p90);
            }
        }
    }
    /* The baselines, on the same windows. */
    for (int k = 0; k < BASELINE_KINDS; k++) {
        struct baseline *bl = NULL;
        if (baseline_train((enum baseline_kind)k, win, n_train, &bl) != 0) {
            fprintf(stderr, "bench_model: baseline %d failed\n", k);
            continue;
        }
        for (size_t sv = 0; sv < node_sim_topology_services(topo); sv++) {
            /* an autoscaler knows its pods' CPU requests */
            baseline_set_capacity(bl, node_sim_topology_service(topo, sv),
                                  node_sim_topology_service_cores(topo, sv));
        }
        if (k == BASELINE_ORACLE) {
            /* tuned on every held-out window with its labels: an upper
             * bound for per-tier thresholds, not a fair competitor */
            size_t cap = (run.n - n_train) * MAX_TRUTH + 1, nl = 0;
            const struct cbn_window **lw = calloc(cap, sizeof *lw);
            const char **lt = calloc(cap, sizeof *lt);
            for (size_t i = n_train; i < run.n; i++) {
                const char *truth[MAX_TRUTH];
                enum cbn_resource tres[MAX_TRUTH];
                size_t nt = window_truth(sim, win[i], truth, tres);
                for (size_t t = 0; t == 0 || t < nt; t++) {
                    lw[nl] = win[i];
                    lt[nl++] = nt ? truth[t] : NULL;
                }
            }
            baseline_tune_oracle(bl, lw, lt, nl);
            free(lw);
            free(lt);
        }
        struct score sb;
        memset(&sb, 0, sizeof sb);
        for (size_t i = n_train; i < run.n; i++) {
            const struct cbn_window *w = win[i];
            cx.correct[i] = 0;
            if (!w->qos_violated) {
                continue;
            }
            const char *truth[MAX_TRUTH];
            enum cbn_resource tres[MAX_TRUTH];
            size_t nt = window_truth(sim, w, truth, tres);
            const char *ranked[256];
            int named = 0;
            size_t nr = baseline_rank(bl, w, ranked, 256, &named);
            enum cbn_resource res = nr && named
                                        ? baseline_resource(bl, w, ranked[0])
                                        : CBN_RES_UNKNOWN;
            score_ranking(&sb, ranked, nr, named,
                          nr && named ? ranked[0] : NULL, res, truth, tres, nt);
            mark(&cx, i, nr ? ranked[0] : NULL, truth, nt);
        }
        detection(&cx, &sb);
        sb.ms = NAN;
        print_score("baseline", baseline_name((enum baseline_kind)k), &sb);
        baseline_free(bl);
    }

    printf("\n== gate (defaults: prior, effect-x-evidence) ==\n");
    double gates[4] = {0.02, 0.05, 0.1, 0.2};
    for (int k = 0; k < 4; k++) {
        struct gvae_sweep_config sw;
        bench_sweep(&sw, front, target, o.samples);
        sw.gate = gates[k];
        struct score sc0;
        eval_variant(&cx, &sw, &sc0);
        char label[32];
        snprintf(label, sizeof label, "gate %.2f", gates[k]);
        print_score("default", label, &sc0);
    }

    printf("\n== resource level (defaults) ==\n");
    enum gvae_resource_rank rr[3] = {GVAE_RES_GATED_EVIDENCE, GVAE_RES_EFFECT,
                                     GVAE_RES_EVIDENCE};
    for (int k = 0; k < 3; k++) {
        struct gvae_sweep_config sw;
        bench_sweep(&sw, front, target, o.samples);
        sw.resource_rank = rr[k];
        struct score sc0;
        eval_variant(&cx, &sw, &sc0);
        printf("%-16s accuracy %.3f of %zu; truth: predicted\n",
               gvae_resource_rank_name(rr[k]),
               sc0.res_cases ? sc0.res_ok / (double)sc0.res_cases : NAN,
               sc0.res_cases);
        for (int t = 0; t < CBN_RES_COUNT; t++) {
            unsigned row = 0;
            for (int q = 0; q < CBN_RES_COUNT; q++) {
                row += sc0.confusion[t][q];
            }
            if (row == 0) {
                continue;
            }
            printf("    %-8s", cbn_resource_name((enum cbn_resource)t));
            for (int q = 0; q < CBN_RES_COUNT; q++) {
                if (sc0.confusion[t][q] > 0) {
                    printf(" %s=%u", cbn_resource_name((enum cbn_resource)q),
                           sc0.confusion[t][q]);
                }
            }
            printf("\n");
        }
    }
    free(cx.times);
    free(cx.correct);

    /* ---- partial retraining after a changed leaf ---- */
    if (!o.skip_partial) {
        /* The leaf: the first node (callees come first); its first metric
         * is hidden from the "previous" model's windows. */
        const struct cbn_graph_node *leaf = cbn_graph_node(graph, 0);
        const char *leaf_svc = leaf->members[0];
        struct cbn_window *copies = calloc(n_train, sizeof *copies);
        struct cbn_window_service *svs = NULL;
        size_t total_sv = 0;
        for (size_t i = 0; i < n_train; i++) {
            total_sv += win[i]->n_services;
        }
        svs = calloc(total_sv + 1, sizeof *svs);
        const struct cbn_window **prev_w = calloc(n_train, sizeof *prev_w);
        size_t at = 0;
        for (size_t i = 0; i < n_train; i++) {
            copies[i] = *win[i];
            memcpy(svs + at, win[i]->services,
                   win[i]->n_services * sizeof *svs);
            copies[i].services = svs + at;
            for (uint32_t k = 0; k < win[i]->n_services; k++) {
                struct cbn_window_service *sv = &svs[at + k];
                if (strcmp(sv->name, leaf_svc) == 0 && sv->n_metrics > 0) {
                    sv->metrics++; /* drop the first (sorted) metric */
                    sv->n_metrics--;
                }
            }
            at += win[i]->n_services;
            prev_w[i] = &copies[i];
        }
        struct gvae_model *prev = NULL, *part = NULL, *full = NULL;
        struct gvae_train_report rp, rpart, rfull;
        gvae_train(&cfg, graph, prev_w, n_train, 0, NULL, GVAE_RETRAIN_FULL,
                   &prev, &rp, err);
        gvae_train(&cfg, graph, win, n_train, 0, prev, GVAE_RETRAIN_PARTIAL,
                   &part, &rpart, err);
        gvae_train(&cfg, graph, win, n_train, 0, NULL, GVAE_RETRAIN_FULL, &full,
                   &rfull, err);
        printf("\n== partial retraining (leaf %s gained a metric) ==\n",
               leaf_svc);
        printf(
            "partial: %.2f s (%zu trained, %zu fine-tuned, %zu kept, %llu "
            "steps); full: %.2f s (%llu steps); speed-up %.1fx\n",
            rpart.seconds, rpart.nodes_trained, rpart.nodes_finetuned,
            rpart.nodes_kept, (unsigned long long)rpart.steps, rfull.seconds,
            (unsigned long long)rfull.steps, rfull.seconds / rpart.seconds);
        gvae_model_free(prev);
        gvae_model_free(part);
        gvae_model_free(full);
        free(copies);
        free(svs);
        free(prev_w);
    }

    gvae_model_free(model);
    cbn_graph_free(graph);
    cbn_normals_free(normals);
    for (size_t i = 0; i < run.n; i++) {
        cbn_window_free(run.w[i]);
    }
    free(run.w);
    free(calm);
    free(kept);
    free(all);
    cbn_agg_free(run.agg);
    node_sim_free(sim);
    node_sim_topology_free(topo);
    return 0;
}
