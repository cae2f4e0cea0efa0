/* Tests for the GVAE: training on a small synthetic application, counterfactual
 * diagnoses of held-out faults, determinism, reconstruction quality, partial
 * retraining and checkpoints. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "base/alloc.h"
#include "base/crc32c.h"
#include "base/rng.h"
#include "check.h"
#include "gvae/gvae.h"
#include "gvae/internal.h"
#include "synth.h"

#define TARGET_MS 45.0
#define N_TRAIN   360

struct data
{
    struct syn_window *sw;
    const struct cbn_window **w;
    size_t n;
    struct cbn_graph *graph;
};

/* @n windows: mostly normal, every 8th with a random fault of random
 * strength, so that the model sees its inputs vary. */
static void data_make(struct data *d, size_t n, uint64_t seed)
{
    struct sm_rng r;
    sm_rng_seed(&r, seed);
    d->sw = sm_calloc(n, sizeof *d->sw);
    d->w = sm_calloc(n, sizeof *d->w);
    REQUIRE(d->sw != NULL && d->w != NULL);
    d->n = n;
    REQUIRE(cbn_graph_new(NULL, &d->graph) == SM_OK);
    for (size_t t = 0; t < n; t++) {
        enum syn_fault f = SYN_NONE;
        int where = 0;
        double mag = 0;
        if (t % 8 == 7) {
            f = (enum syn_fault)(1 + sm_rng_below(&r, 3));
            where = (int)sm_rng_below(&r, SYN_SERVICES);
            mag = 0.2 + 0.8 * sm_rng_double(&r);
        }
        syn_make(&d->sw[t], &r, t, f, where, mag, TARGET_MS);
        d->w[t] = &d->sw[t].w;
        int changed;
        REQUIRE(cbn_graph_observe(d->graph, d->w[t], &changed) == SM_OK);
    }
}

static void data_free(struct data *d)
{
    cbn_graph_free(d->graph);
    sm_free(d->sw);
    sm_free(d->w);
}

static void small_config(struct gvae_config *c)
{
    gvae_config_default(c);
    c->max_epochs = 60;
    c->batch = 32;
    c->threads = 2;
}

static struct gvae_model *train(struct data *d,
                                uint64_t seed,
                                struct gvae_train_report *rep)
{
    struct gvae_config c;
    small_config(&c);
    c.seed = seed;
    struct gvae_model *m = NULL;
    char err[SM_ERRMSG_SIZE];
    int rc = gvae_train(&c, d->graph, d->w, d->n, 0, NULL, GVAE_RETRAIN_FULL,
                        &m, rep, err);
    if (rc != SM_OK) {
        printf("# train: %s\n", err);
    }
    REQUIRE(rc == SM_OK);
    return m;
}

static struct gvae_diagnosis *diagnose(const struct gvae_model *m,
                                       const struct cbn_window *w,
                                       enum gvae_rank rank)
{
    struct gvae_sweep_config sc;
    gvae_sweep_config_default(&sc);
    sc.qos_service = "a-front";
    sc.qos_target_ms = TARGET_MS;
    sc.samples = 16;
    sc.rank = rank;
    struct gvae_diagnosis *dg = NULL;
    char err[SM_ERRMSG_SIZE];
    int rc = gvae_diagnose(m, w, NULL, &sc, &dg, err);
    if (rc != SM_OK) {
        printf("# diagnose: %s\n", err);
    }
    REQUIRE(rc == SM_OK);
    return dg;
}

static struct gvae_model *shared_model;
static struct data shared_data;

static struct gvae_model *model(void)
{
    if (shared_model == NULL) {
        struct gvae_train_report rep;
        data_make(&shared_data, N_TRAIN, 11);
        shared_model = train(&shared_data, 5, &rep);
        printf(
            "# trained %zu nodes, %zu params, %llu steps, %.2f s, "
            "%.2f GFLOP/s, val loss %.3f\n",
            rep.nodes, gvae_model_params(shared_model),
            (unsigned long long)rep.steps, rep.seconds,
            rep.flops / rep.seconds / 1e9, rep.val_loss);
    }
    return shared_model;
}

static void test_train_report(void)
{
    struct gvae_model *m = model();
    CHECK_EQ(gvae_model_node_count(m), 4);
    CHECK_EQ(gvae_model_graph_version(m), cbn_graph_version(shared_data.graph));
    /* callees first, the frontend last */
    CHECK_STR(gvae_model_node_name(m, 3), "a-front");
    CHECK(gvae_model_params(m) > 1000);
}

/* Held-out faults, one of each kind, at services chosen for each. */
static void test_diagnose_faults(void)
{
    struct gvae_model *m = model();
    struct
    {
        enum syn_fault f;
        int where;
        double mag;
        const char *service;
        enum cbn_resource res;
    } cases[] = {
        {SYN_CPU, 2, 1.2, "c-db", CBN_RES_CPU},
        {SYN_MEMORY, 1, 2.5, "b-mid", CBN_RES_MEMORY},
        {SYN_NETWORK, 3, 2.5, "d-cache", CBN_RES_NETWORK},
        {SYN_CPU, 0, 1.2, "a-front", CBN_RES_CPU},
    };
    struct sm_rng r;
    sm_rng_seed(&r, 99);
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        struct syn_window sw;
        syn_make(&sw, &r, 5000 + k, cases[k].f, cases[k].where, cases[k].mag,
                 TARGET_MS);
        printf("# case %zu: frontend p99 %.1f ms\n", k, sw.w.qos_latency_ms);
        REQUIRE(sw.w.qos_violated);
        struct gvae_diagnosis *d = diagnose(m, &sw.w, GVAE_RANK_GATED_EVIDENCE);
        printf(
            "# case %zu: latency %.1f ms; top %s (score %.3f, effect %.1f "
            "ms, p %.2f), culprits %zu\n",
            k, d->latency_ms, d->ranking[0].service, d->ranking[0].score,
            d->ranking[0].effect_ms, d->ranking[0].p_qos_met, d->n_culprits);
        CHECK_EQ(d->n_ranking, 4);
        CHECK_STR(d->ranking[0].service, cases[k].service);
        REQUIRE(d->n_culprits >= 1);
        CHECK_STR(d->culprits[0].service, cases[k].service);
        CHECK_STR(cbn_resource_name(d->culprits[0].resource),
                  cbn_resource_name(cases[k].res));
        CHECK(d->culprits[0].effect_ms > 0);
        /* the path runs from the culprit up to the frontend */
        REQUIRE(d->n_path >= 1);
        CHECK_STR(d->path[0], cases[k].service);
        CHECK_STR(d->path[d->n_path - 1], "a-front");
        gvae_diagnosis_free(d);
    }
}

/* A window that meets QoS names no culprit but still ranks everyone. */
static void test_diagnose_healthy(void)
{
    struct gvae_model *m = model();
    struct sm_rng r;
    sm_rng_seed(&r, 7);
    struct syn_window sw;
    syn_make(&sw, &r, 7000, SYN_NONE, 0, 0, TARGET_MS);
    REQUIRE(!sw.w.qos_violated);
    struct gvae_diagnosis *d = diagnose(m, &sw.w, GVAE_RANK_EFFECT);
    CHECK_EQ(d->n_culprits, 0);
    CHECK_EQ(d->n_ranking, 4);
    CHECK(!d->violated);
    for (size_t k = 0; k < d->n_ranking; k++) {
        /* restoring normal values changes little in a normal window */
        CHECK(fabs(d->ranking[k].effect_ms) < 0.25 * d->latency_ms);
    }
    gvae_diagnosis_free(d);
}

/* The literal sweep (Z from the prior) is available and runs. */
static void test_prior_variant(void)
{
    struct gvae_model *m = model();
    struct sm_rng r;
    sm_rng_seed(&r, 3);
    struct syn_window sw;
    syn_make(&sw, &r, 8000, SYN_CPU, 2, 1.0, TARGET_MS);
    struct gvae_sweep_config sc;
    gvae_sweep_config_default(&sc);
    sc.qos_service = "a-front";
    sc.qos_target_ms = TARGET_MS;
    sc.samples = 8;
    sc.abduction = GVAE_ABDUCT_PRIOR;
    struct gvae_diagnosis *d = NULL;
    char err[SM_ERRMSG_SIZE];
    REQUIRE(gvae_diagnose(m, &sw.w, NULL, &sc, &d, err) == SM_OK);
    CHECK_EQ(d->n_ranking, 4);
    CHECK(d->rows > 0);
    gvae_diagnosis_free(d);
    /* bad configs are refused with a message */
    sc.qos_target_ms = 0;
    CHECK_EQ(gvae_diagnose(m, &sw.w, NULL, &sc, &d, err), SM_EINVAL);
    CHECK(strlen(err) > 0);
    sc.qos_target_ms = TARGET_MS;
    sc.qos_service = "nope";
    CHECK_EQ(gvae_diagnose(m, &sw.w, NULL, &sc, &d, err), SM_ENOTFOUND);
}

static void test_determinism(void)
{
    struct data d;
    data_make(&d, 120, 21);
    struct gvae_model *a = train(&d, 9, NULL);
    struct gvae_model *b = train(&d, 9, NULL);
    struct sm_rng r;
    sm_rng_seed(&r, 1);
    struct syn_window sw;
    syn_make(&sw, &r, 9000, SYN_CPU, 2, 1.0, TARGET_MS);
    struct gvae_diagnosis *da = diagnose(a, &sw.w, GVAE_RANK_EFFECT);
    struct gvae_diagnosis *db = diagnose(b, &sw.w, GVAE_RANK_EFFECT);
    REQUIRE(da->n_ranking == db->n_ranking);
    for (size_t k = 0; k < da->n_ranking; k++) {
        CHECK_STR(da->ranking[k].service, db->ranking[k].service);
        CHECK(da->ranking[k].effect_ms == db->ranking[k].effect_ms);
    }
    gvae_diagnosis_free(da);
    gvae_diagnosis_free(db);
    gvae_model_free(a);
    gvae_model_free(b);
    data_free(&d);
}

static void test_evaluate(void)
{
    struct gvae_model *m = model();
    struct data held;
    data_make(&held, 80, 1234);
    struct gvae_eval ev;
    REQUIRE(gvae_evaluate(m, held.w, held.n, "a-front", &ev) == SM_OK);
    printf(
        "# held-out R2 forced %.3f (RMSE %.2f ms), generated %.3f (RMSE "
        "%.2f ms), frontend p99 R2 %.3f over %zu features\n",
        ev.r2_forced, ev.rmse_forced_ms, ev.r2_generated, ev.rmse_generated_ms,
        ev.r2_frontend, ev.features);
    CHECK_EQ(ev.windows, 80);
    CHECK(ev.r2_forced > 0.5);
    CHECK(ev.r2_generated > 0.3);
    data_free(&held);
}

static int stop_now(void *arg)
{
    int *polls = arg;
    return ++*polls >= 3;
}

static void test_train_errors(void)
{
    struct data d;
    data_make(&d, 20, 3);
    struct gvae_config c;
    small_config(&c);
    struct gvae_model *m = NULL;
    char err[SM_ERRMSG_SIZE];
    CHECK_EQ(gvae_train(&c, d.graph, d.w, 5, 0, NULL, GVAE_RETRAIN_FULL, &m,
                        NULL, err),
             SM_EINVAL);
    CHECK(strstr(err, "at least 8") != NULL);
    c.hidden_layers = 7;
    CHECK_EQ(gvae_train(&c, d.graph, d.w, d.n, 0, NULL, GVAE_RETRAIN_FULL, &m,
                        NULL, err),
             SM_EINVAL);
    CHECK(m == NULL);
    /* a stop request ends training early, with nothing returned */
    small_config(&c);
    int polls = 0;
    c.should_stop = stop_now;
    c.stop_arg = &polls;
    c.threads = 1;
    CHECK_EQ(gvae_train(&c, d.graph, d.w, d.n, 0, NULL, GVAE_RETRAIN_FULL, &m,
                        NULL, err),
             SM_ECLOSED);
    CHECK(m == NULL);
    CHECK(strstr(err, "stopped") != NULL);
    CHECK(polls >= 3 && polls < 10);
    data_free(&d);
}

static void test_checkpoint_roundtrip(void)
{
    struct gvae_model *m = model();
    uint8_t *buf = NULL;
    size_t len = 0;
    REQUIRE(gvae_model_save(m, &buf, &len) == SM_OK);
    printf("# checkpoint: %zu bytes for %zu parameters\n", len,
           gvae_model_params(m));
    struct gvae_model *l = NULL;
    char err[SM_ERRMSG_SIZE];
    REQUIRE_OK(gvae_model_load(buf, len, gvae_model_graph_version(m), &l, err));
    CHECK_EQ(gvae_model_node_count(l), gvae_model_node_count(m));
    CHECK_EQ(gvae_model_params(l), gvae_model_params(m));
    /* the loaded model diagnoses exactly like the original */
    struct sm_rng r;
    sm_rng_seed(&r, 42);
    struct syn_window sw;
    syn_make(&sw, &r, 6000, SYN_CPU, 2, 1.2, TARGET_MS);
    struct gvae_diagnosis *a = diagnose(m, &sw.w, GVAE_RANK_EFFECT);
    struct gvae_diagnosis *b = diagnose(l, &sw.w, GVAE_RANK_EFFECT);
    REQUIRE(a->n_ranking == b->n_ranking);
    for (size_t k = 0; k < a->n_ranking; k++) {
        CHECK_STR(a->ranking[k].service, b->ranking[k].service);
        CHECK(a->ranking[k].effect_ms == b->ranking[k].effect_ms);
    }
    gvae_diagnosis_free(a);
    gvae_diagnosis_free(b);
    /* saving the loaded model gives the same bytes */
    uint8_t *buf2 = NULL;
    size_t len2 = 0;
    REQUIRE(gvae_model_save(l, &buf2, &len2) == SM_OK);
    CHECK(len2 == len && memcmp(buf, buf2, len) == 0);
    sm_free(buf2);
    gvae_model_free(l);

    /* a model for another CBN version is refused */
    l = NULL;
    CHECK_EQ(
        gvae_model_load(buf, len, gvae_model_graph_version(m) + 1, &l, err),
        SM_EINVAL);
    CHECK(strstr(err, "CBN version") != NULL);
    /* any flipped bit is caught by the checksum */
    for (size_t k = 0; k < len; k += len / 97 + 1) {
        buf[k] ^= 0x10;
        CHECK_EQ(gvae_model_load(buf, len, 0, &l, err), SM_ECORRUPT);
        buf[k] ^= 0x10;
    }
    /* every truncation is refused */
    for (size_t cut = 0; cut < len; cut += len / 53 + 1) {
        int rc = gvae_model_load(buf, cut, 0, &l, err);
        CHECK(rc == SM_ECORRUPT || rc == SM_EMALFORMED);
    }
    CHECK(l == NULL);
    sm_free(buf);
}

/* A valid checksum over a document that is not a model is malformed, and
 * a newer format version is unsupported. */
static void test_checkpoint_foreign(void)
{
    /* {"format": "sagemesh-gvae", "version": 2} + CRC */
    static const uint8_t doc[] = {0x82, 0xa6, 'f', 'o', 'r', 'm', 'a',  't',
                                  0xad, 's',  'a', 'g', 'e', 'm', 'e',  's',
                                  'h',  '-',  'g', 'v', 'a', 'e', 0xa7, 'v',
                                  'e',  'r',  's', 'i', 'o', 'n', 0x02};
    uint8_t buf[sizeof doc + 4];
    memcpy(buf, doc, sizeof doc);
    uint32_t crc = sm_crc32c(0, doc, sizeof doc);
    for (int k = 0; k < 4; k++) {
        buf[sizeof doc + (size_t)k] = (uint8_t)(crc >> (8 * k));
    }
    struct gvae_model *m = NULL;
    char err[SM_ERRMSG_SIZE];
    CHECK_EQ(gvae_model_load(buf, sizeof buf, 0, &m, err), SM_EUNSUPPORTED);
    buf[sizeof doc - 1] = 0x01; /* version 1 but nothing else */
    crc = sm_crc32c(0, buf, sizeof doc);
    for (int k = 0; k < 4; k++) {
        buf[sizeof doc + (size_t)k] = (uint8_t)(crc >> (8 * k));
    }
    CHECK_EQ(gvae_model_load(buf, sizeof buf, 0, &m, err), SM_EMALFORMED);
    /* an array header claiming 4 billion elements, with a valid CRC */
    uint8_t huge[] = {0xdd, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0};
    crc = sm_crc32c(0, huge, 5);
    for (int k = 0; k < 4; k++) {
        huge[5 + k] = (uint8_t)(crc >> (8 * k));
    }
    CHECK_EQ(gvae_model_load(huge, sizeof huge, 0, &m, err), SM_EMALFORMED);
    CHECK(m == NULL);
}

/* A new leaf service: only it and the nodes above it are retrained. */
static void test_partial_retrain(void)
{
    struct gvae_model *m = model();
    /* the same application plus e-log, called by b-mid */
    size_t n = 200;
    struct data d;
    data_make(&d, n, 77);
    struct syn_window *ws = d.sw;
    struct cbn_window_service *svs =
        sm_calloc(n * (SYN_SERVICES + 1), sizeof *svs);
    struct cbn_window_edge *eds = sm_calloc(n * (SYN_EDGES + 1), sizeof *eds);
    REQUIRE(svs != NULL && eds != NULL);
    struct cbn_graph *g = NULL;
    REQUIRE_OK(cbn_graph_new(NULL, &g));
    for (size_t t = 0; t < n; t++) {
        struct cbn_window *w = &ws[t].w;
        struct cbn_window_service *sv = svs + t * (SYN_SERVICES + 1);
        memcpy(sv, w->services, SYN_SERVICES * sizeof *sv);
        sv[SYN_SERVICES] = sv[3];
        sv[SYN_SERVICES].name = "e-log";
        struct cbn_window_edge *ed = eds + t * (SYN_EDGES + 1);
        memcpy(ed, w->edges, SYN_EDGES * sizeof *ed);
        ed[SYN_EDGES] = ed[2];
        ed[SYN_EDGES].callee = "e-log";
        w->services = sv;
        w->n_services = SYN_SERVICES + 1;
        w->edges = ed;
        w->n_edges = SYN_EDGES + 1;
        int changed;
        REQUIRE_OK(cbn_graph_observe(g, w, &changed));
    }
    struct gvae_config c;
    small_config(&c);
    struct gvae_train_report part, full;
    struct gvae_model *p = NULL, *f = NULL;
    char err[SM_ERRMSG_SIZE];
    REQUIRE_OK(
        gvae_train(&c, g, d.w, n, n, m, GVAE_RETRAIN_PARTIAL, &p, &part, err));
    REQUIRE_OK(
        gvae_train(&c, g, d.w, n, 0, NULL, GVAE_RETRAIN_FULL, &f, &full, err));
    printf(
        "# partial: %zu trained, %zu fine-tuned, %zu kept, %llu steps, "
        "%.2f s; full: %zu trained, %llu steps, %.2f s\n",
        part.nodes_trained, part.nodes_finetuned, part.nodes_kept,
        (unsigned long long)part.steps, part.seconds, full.nodes_trained,
        (unsigned long long)full.steps, full.seconds);
    CHECK_EQ(part.nodes, 5);
    /* e-log is new and b-mid gained an input: both trained; a-front kept
     * its shape but is above them: fine-tuned; c-db and d-cache kept */
    CHECK_EQ(part.nodes_trained, 2);
    CHECK_EQ(part.nodes_finetuned, 1);
    CHECK_EQ(part.nodes_kept, 2);
    CHECK_EQ(full.nodes_trained, 5);
    CHECK(part.steps < full.steps);
    gvae_model_free(p);
    gvae_model_free(f);
    cbn_graph_free(g);
    sm_free(svs);
    sm_free(eds);
    data_free(&d);
}

/* New windows on an unchanged CBN: every node is fine-tuned from the
 * previous model on batches mixing new and old windows. */
static void test_incremental(void)
{
    struct gvae_model *m = model();
    struct data d;
    data_make(&d, 160, 4242);
    struct gvae_config c;
    small_config(&c);
    struct gvae_train_report rep;
    struct gvae_model *inc = NULL;
    char err[SM_ERRMSG_SIZE];
    REQUIRE_OK(gvae_train(&c, shared_data.graph, d.w, d.n, 40, m,
                          GVAE_RETRAIN_INCREMENTAL, &inc, &rep, err));
    CHECK_EQ(rep.nodes_finetuned, 4);
    CHECK_EQ(rep.nodes_trained + rep.nodes_kept, 0);
    CHECK(rep.steps > 0);
    /* it still finds a held-out fault */
    struct sm_rng r;
    sm_rng_seed(&r, 8);
    struct syn_window sw;
    syn_make(&sw, &r, 9100, SYN_CPU, 2, 1.2, TARGET_MS);
    struct gvae_diagnosis *dg = diagnose(inc, &sw.w, GVAE_RANK_GATED_EVIDENCE);
    CHECK_STR(dg->ranking[0].service, "c-db");
    gvae_diagnosis_free(dg);
    gvae_model_free(inc);
    data_free(&d);
}

/* The decoder's skip (mean += Yp A): forward against a naive loop, the
 * gradient of A against central finite differences. */
static void test_decoder_skip(void)
{
    struct gvae_cvae c;
    memset(&c, 0, sizeof c);
    enum { N = 5, NP = 4, NY = 3 };
    float skip[NP * NY], gskip[NP * NY] = {0}, p[N * NP], out[N * 2 * NY];
    float tmp[N * NY], r[N * NY], base[N * 2 * NY];
    struct sm_rng rng;
    sm_rng_seed(&rng, check_seed());
    for (int k = 0; k < NP * NY; k++) {
        skip[k] = (float)sm_rng_double(&rng);
    }
    for (int k = 0; k < N * NP; k++) {
        p[k] = (float)sm_rng_normal(&rng);
    }
    for (int k = 0; k < N * 2 * NY; k++) {
        base[k] = (float)sm_rng_normal(&rng);
    }
    for (int k = 0; k < N * NY; k++) {
        r[k] = (float)sm_rng_normal(&rng);
    }
    c.np = NP;
    c.ny = NY;
    c.skip = skip;
    c.gskip = gskip;
    memcpy(out, base, sizeof out);
    gvae__dec_skip(&c, N, p, out, tmp);
    for (int i = 0; i < N; i++) {
        for (int j = 0; j < 2 * NY; j++) {
            double want = base[i * 2 * NY + j];
            for (int q = 0; j < NY && q < NP; q++) {
                want += (double)p[i * NP + q] * skip[q * NY + j];
            }
            CHECK(fabs(out[i * 2 * NY + j] - want) < 1e-4);
        }
    }
    /* loss = sum over rows and outputs of r * mean */
    gvae__dec_skip_backward(&c, N, p, r);
    for (int k = 0; k < NP * NY; k++) {
        double l[2];
        float keep = skip[k];
        for (int side = 0; side < 2; side++) {
            skip[k] = keep + (side ? 1e-2f : -1e-2f);
            memcpy(out, base, sizeof out);
            gvae__dec_skip(&c, N, p, out, tmp);
            l[side] = 0;
            for (int i = 0; i < N; i++) {
                for (int j = 0; j < NY; j++) {
                    l[side] += (double)r[i * NY + j] * out[i * 2 * NY + j];
                }
            }
        }
        skip[k] = keep;
        double fd = (l[1] - l[0]) / 2e-2;
        CHECK(fabs(fd - gskip[k]) < 1e-2 * (1 + fabs(fd)));
    }
}

/* Last: frees the model the tests above shared. */
static void test_release_shared(void)
{
    gvae_model_free(shared_model);
    if (shared_model != NULL) {
        data_free(&shared_data);
    }
    shared_model = NULL;
}

static const struct check_test tests[] = {
    {"training refuses bad input", test_train_errors},
    {"training report and node order", test_train_report},
    {"held-out faults: culprit, resource, path", test_diagnose_faults},
    {"a healthy window names no culprit", test_diagnose_healthy},
    {"prior-sampled sweep and config errors", test_prior_variant},
    {"same seed, same model", test_determinism},
    {"reconstruction quality on held-out windows", test_evaluate},
    {"checkpoint round trip, corruption, truncation",
     test_checkpoint_roundtrip},
    {"checkpoint of another format or version", test_checkpoint_foreign},
    {"partial retraining after a new leaf", test_partial_retrain},
    {"incremental training on new windows", test_incremental},
    {"decoder skip: forward and gradient", test_decoder_skip},
    {"release the shared model", test_release_shared},
};

CHECK_MAIN(tests, NULL, NULL)
