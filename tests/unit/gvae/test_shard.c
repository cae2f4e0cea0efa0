/* Tests for distributed training (gvae.h, "Shards"): nodes trained on two
 * "peers" (separate gvae_train_nodes() calls), exported, imported and
 * assembled give exactly the model of one gvae_train(); missing,
 * duplicated, foreign and damaged shards are refused with clear errors. */
#include <stdio.h>
#include <string.h>

#include "base/alloc.h"
#include "base/crc32c.h"
#include "base/rng.h"
#include "check.h"
#include "gvae/gvae.h"
#include "synth.h"

#define TARGET_MS 45.0
#define N_WIN     200

/* Graph order of the synthetic CBN: callees first, the frontend last. */
enum { N_NODES = SYN_SERVICES };

struct data
{
    struct syn_window *sw;
    const struct cbn_window **w;
    size_t n;
    struct cbn_graph *graph;
};

/* @n windows, every 8th with a random fault (as test_gvae.c). */
static void data_make(struct data *d, size_t n, uint64_t seed)
{
    struct sm_rng r;
    sm_rng_seed(&r, seed);
    d->sw = sm_calloc(n, sizeof *d->sw);
    d->w = sm_calloc(n, sizeof *d->w);
    REQUIRE(d->sw != NULL && d->w != NULL);
    d->n = n;
    REQUIRE_OK(cbn_graph_new(NULL, &d->graph));
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
        REQUIRE_OK(cbn_graph_observe(d->graph, d->w[t], &changed));
    }
    REQUIRE_EQ(cbn_graph_node_count(d->graph), N_NODES);
}

static void data_free(struct data *d)
{
    cbn_graph_free(d->graph);
    sm_free(d->sw);
    sm_free(d->w);
}

static void config(struct gvae_config *c, unsigned epochs)
{
    gvae_config_default(c);
    c->max_epochs = epochs;
    c->batch = 32;
    c->threads = 1;
    c->seed = 17;
}

static size_t node_index(const struct cbn_graph *g, const char *name)
{
    for (size_t i = 0; i < cbn_graph_node_count(g); i++) {
        if (strcmp(cbn_graph_node(g, i)->name, name) == 0) {
            return i;
        }
    }
    REQUIRE(!"node not in the CBN");
    return 0;
}

/* Trains the nodes with @own set, on the first @n windows. */
static struct gvae_model *train_side(const struct data *d,
                                     const struct gvae_config *c,
                                     const bool *own,
                                     size_t n,
                                     struct gvae_train_report *rep)
{
    struct gvae_model *m = NULL;
    char err[SM_ERRMSG_SIZE];
    int rc = gvae_train_nodes(c, d->graph, d->w, n, 0, NULL, GVAE_RETRAIN_FULL,
                              own, &m, rep, err);
    if (rc != SM_OK) {
        printf("# train_nodes: %s\n", err);
    }
    REQUIRE_OK(rc);
    return m;
}

/* Exports node @i of @m and imports it for @g. */
static struct gvae_shard *roundtrip(const struct gvae_model *m,
                                    size_t i,
                                    const struct cbn_graph *g)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    REQUIRE_OK(gvae_shard_export(m, i, &buf, &len));
    struct gvae_shard *s = NULL;
    char err[SM_ERRMSG_SIZE];
    int rc = gvae_shard_import(buf, len, g, &s, err);
    if (rc != SM_OK) {
        printf("# import: %s\n", err);
    }
    REQUIRE_OK(rc);
    CHECK_STR(gvae_shard_node_name(s), gvae_model_node_name(m, i));
    CHECK_EQ(gvae_shard_graph_version(s), gvae_model_graph_version(m));
    sm_free(buf);
    return s;
}

static void save(const struct gvae_model *m, uint8_t **buf, size_t *len)
{
    REQUIRE_OK(gvae_model_save(m, buf, len));
}

static struct gvae_diagnosis *diagnose(const struct gvae_model *m,
                                       const struct cbn_window *w)
{
    struct gvae_sweep_config sc;
    gvae_sweep_config_default(&sc);
    sc.qos_service = "a-front";
    sc.qos_target_ms = TARGET_MS;
    sc.samples = 16;
    struct gvae_diagnosis *dg = NULL;
    char err[SM_ERRMSG_SIZE];
    REQUIRE_OK(gvae_diagnose(m, w, NULL, &sc, &dg, err));
    return dg;
}

/* Peer 1 trains a-front, peer 2 the rest; the assembled model is bit for
 * bit the one-call model, and diagnoses the same. */
static void test_two_peers_equal_whole(void)
{
    struct data d;
    data_make(&d, N_WIN, 11);
    struct gvae_config c;
    config(&c, 25);
    struct gvae_train_report r1, r2, rw;
    bool own1[N_NODES] = {0}, own2[N_NODES];
    own1[node_index(d.graph, "a-front")] = true;
    for (size_t i = 0; i < N_NODES; i++) {
        own2[i] = !own1[i];
    }
    struct gvae_model *p1 = train_side(&d, &c, own1, d.n, &r1);
    struct gvae_model *p2 = train_side(&d, &c, own2, d.n, &r2);
    struct gvae_model *whole = NULL;
    char err[SM_ERRMSG_SIZE];
    REQUIRE_OK(gvae_train(&c, d.graph, d.w, d.n, 0, NULL, GVAE_RETRAIN_FULL,
                          &whole, &rw, err));
    printf(
        "# peer 1: %zu node(s) %.2f s, peer 2: %zu nodes %.2f s, "
        "whole: %zu nodes %.2f s (threads 1)\n",
        r1.nodes_trained, r1.seconds, r2.nodes_trained, r2.seconds,
        rw.nodes_trained, rw.seconds);
    CHECK_EQ(r1.nodes, N_NODES);
    CHECK_EQ(r1.nodes_trained, 1);
    CHECK_EQ(r2.nodes_trained, N_NODES - 1);
    CHECK_EQ(r1.windows_train, rw.windows_train);
    CHECK_EQ(r1.steps + r2.steps, rw.steps);

    /* each peer exports what it trained, and only that */
    struct gvae_shard *shards[N_NODES];
    for (size_t i = 0; i < N_NODES; i++) {
        const struct gvae_model *mine = own1[i] ? p1 : p2;
        const struct gvae_model *other = own1[i] ? p2 : p1;
        CHECK(gvae_model_node_trained(mine, i));
        CHECK(!gvae_model_node_trained(other, i));
        uint8_t *buf = NULL;
        size_t len = 0;
        CHECK_EQ(gvae_shard_export(other, i, &buf, &len), SM_ENOTFOUND);
        CHECK(buf == NULL);
        /* in reverse order: assembly takes them in any order */
        shards[N_NODES - 1 - i] = roundtrip(mine, i, d.graph);
    }
    CHECK_EQ(gvae_shard_export(p1, N_NODES, &(uint8_t *){NULL}, &(size_t){0}),
             SM_EINVAL);
    struct gvae_model *as = NULL;
    REQUIRE_OK(gvae_model_assemble(d.graph, &c,
                                   (const struct gvae_shard *const *)shards,
                                   N_NODES, &as, err));
    CHECK_EQ(gvae_model_params(as), gvae_model_params(whole));

    /* the whole model, checkpoint bytes included, is the same */
    uint8_t *a = NULL, *b = NULL;
    size_t la = 0, lb = 0;
    save(as, &a, &la);
    save(whole, &b, &lb);
    CHECK(la == lb && memcmp(a, b, la) == 0);
    sm_free(a);
    sm_free(b);

    /* and so is the diagnosis of a held-out fault */
    struct sm_rng r;
    sm_rng_seed(&r, 99);
    struct syn_window sw;
    syn_make(&sw, &r, 5000, SYN_CPU, 2, 1.2, TARGET_MS);
    struct gvae_diagnosis *da = diagnose(as, &sw.w);
    struct gvae_diagnosis *dw = diagnose(whole, &sw.w);
    REQUIRE_EQ(da->n_ranking, dw->n_ranking);
    for (size_t k = 0; k < da->n_ranking; k++) {
        CHECK_STR(da->ranking[k].service, dw->ranking[k].service);
        CHECK(da->ranking[k].effect_ms == dw->ranking[k].effect_ms);
        CHECK(da->ranking[k].score == dw->ranking[k].score);
    }
    CHECK_EQ(da->n_culprits, dw->n_culprits);
    gvae_diagnosis_free(da);
    gvae_diagnosis_free(dw);

    for (size_t i = 0; i < N_NODES; i++) {
        gvae_shard_free(shards[i]);
    }
    gvae_model_free(as);
    gvae_model_free(whole);
    gvae_model_free(p1);
    gvae_model_free(p2);
    data_free(&d);
}

/* Training with several threads makes the same model: a node's result does
 * not depend on which worker trains it, or when. The models' configs differ
 * in the thread count, so the three-thread model's shards are assembled
 * under the one-thread config before comparing checkpoints. */
static void test_threads_do_not_matter(void)
{
    struct data d;
    data_make(&d, 96, 5);
    struct gvae_config c;
    config(&c, 4);
    struct gvae_model *m1 = NULL, *m3 = NULL, *as = NULL;
    char err[SM_ERRMSG_SIZE];
    REQUIRE_OK(gvae_train(&c, d.graph, d.w, d.n, 0, NULL, GVAE_RETRAIN_FULL,
                          &m1, NULL, err));
    struct gvae_config c3 = c;
    c3.threads = 3;
    REQUIRE_OK(gvae_train(&c3, d.graph, d.w, d.n, 0, NULL, GVAE_RETRAIN_FULL,
                          &m3, NULL, err));
    struct gvae_shard *s[N_NODES];
    for (size_t i = 0; i < N_NODES; i++) {
        s[i] = roundtrip(m3, i, d.graph);
    }
    REQUIRE_OK(gvae_model_assemble(
        d.graph, &c, (const struct gvae_shard *const *)s, N_NODES, &as, err));
    uint8_t *a = NULL, *b = NULL;
    size_t la = 0, lb = 0;
    save(m1, &a, &la);
    save(as, &b, &lb);
    CHECK(la == lb && memcmp(a, b, la) == 0);
    sm_free(a);
    sm_free(b);
    for (size_t i = 0; i < N_NODES; i++) {
        gvae_shard_free(s[i]);
    }
    gvae_model_free(as);
    gvae_model_free(m1);
    gvae_model_free(m3);
    data_free(&d);
}

/* Shards of a quickly trained model (every node on one peer). */
struct quick
{
    struct data d;
    struct gvae_config c;
    struct gvae_model *m;
    uint8_t *buf[N_NODES];
    size_t len[N_NODES];
};

static void quick_make(struct quick *q)
{
    data_make(&q->d, 64, 3);
    config(&q->c, 2);
    q->c.hidden_min = q->c.hidden_max = 8;
    q->c.latent = 2;
    bool all[N_NODES];
    memset(all, 1, sizeof all);
    q->m = train_side(&q->d, &q->c, all, q->d.n, NULL);
    for (size_t i = 0; i < N_NODES; i++) {
        REQUIRE_OK(gvae_shard_export(q->m, i, &q->buf[i], &q->len[i]));
    }
}

static void quick_free(struct quick *q)
{
    for (size_t i = 0; i < N_NODES; i++) {
        sm_free(q->buf[i]);
    }
    gvae_model_free(q->m);
    data_free(&q->d);
}

static void import_all(struct quick *q, struct gvae_shard **s)
{
    char err[SM_ERRMSG_SIZE];
    for (size_t i = 0; i < N_NODES; i++) {
        REQUIRE_OK(
            gvae_shard_import(q->buf[i], q->len[i], q->d.graph, &s[i], err));
    }
}

static void free_all(struct gvae_shard **s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        gvae_shard_free(s[i]);
    }
}

static void test_missing_and_duplicate(void)
{
    struct quick q;
    quick_make(&q);
    struct gvae_shard *s[N_NODES + 1];
    import_all(&q, s);
    const struct gvae_shard *const *cs = (const struct gvae_shard *const *)s;
    struct gvae_model *m = NULL;
    char err[SM_ERRMSG_SIZE];
    /* leave out b-mid */
    size_t mid = node_index(q.d.graph, "b-mid");
    const struct gvae_shard *some[N_NODES];
    size_t n = 0;
    for (size_t i = 0; i < N_NODES; i++) {
        if (i != mid) {
            some[n++] = s[i];
        }
    }
    CHECK_EQ(gvae_model_assemble(q.d.graph, &q.c, some, n, &m, err),
             SM_ENOTFOUND);
    CHECK(strstr(err, "no shard for node b-mid") != NULL);
    printf("# %s\n", err);
    CHECK_EQ(gvae_model_assemble(q.d.graph, &q.c, cs, 0, &m, err),
             SM_ENOTFOUND);
    /* two shards for one node */
    s[N_NODES] = s[mid];
    CHECK_EQ(gvae_model_assemble(q.d.graph, &q.c, cs, N_NODES + 1, &m, err),
             SM_EINVAL);
    CHECK(strstr(err, "b-mid") != NULL && strstr(err, "two shards") != NULL);
    /* trained with another config */
    struct gvae_config other = q.c;
    other.seed++;
    CHECK_EQ(gvae_model_assemble(q.d.graph, &other, cs, N_NODES, &m, err),
             SM_EINVAL);
    CHECK(strstr(err, "another config: seed") != NULL);
    printf("# %s\n", err);
    other = q.c;
    other.threads = 7; /* how fast, not what: accepted */
    REQUIRE_OK(gvae_model_assemble(q.d.graph, &other, cs, N_NODES, &m, err));
    CHECK(m != NULL);
    gvae_model_free(m);
    free_all(s, N_NODES);
    quick_free(&q);
}

/* A CBN with one more service has another version: shards of the old one
 * are refused, by import and by assembly. */
static void test_other_graph_version(void)
{
    struct quick q;
    quick_make(&q);
    struct cbn_graph *g2 = NULL;
    REQUIRE_OK(cbn_graph_new(NULL, &g2));
    int changed;
    for (size_t t = 0; t < q.d.n; t++) {
        REQUIRE_OK(cbn_graph_observe(g2, q.d.w[t], &changed));
    }
    /* b-mid calls a new e-log */
    struct syn_window sw = q.d.sw[0];
    struct cbn_window_service sv[SYN_SERVICES + 1];
    struct cbn_window_edge ed[SYN_EDGES + 1];
    memcpy(sv, sw.sv, sizeof sw.sv);
    memcpy(ed, sw.ed, sizeof sw.ed);
    sv[SYN_SERVICES] = sv[3];
    sv[SYN_SERVICES].name = "e-log";
    ed[SYN_EDGES] = ed[2];
    ed[SYN_EDGES].callee = "e-log";
    sw.w.services = sv;
    sw.w.n_services = SYN_SERVICES + 1;
    sw.w.edges = ed;
    sw.w.n_edges = SYN_EDGES + 1;
    REQUIRE_OK(cbn_graph_observe(g2, &sw.w, &changed));
    REQUIRE(cbn_graph_version(g2) != cbn_graph_version(q.d.graph));
    struct gvae_shard *s = NULL;
    char err[SM_ERRMSG_SIZE];
    for (size_t i = 0; i < N_NODES; i++) {
        CHECK_EQ(gvae_shard_import(q.buf[i], q.len[i], g2, &s, err), SM_EINVAL);
        CHECK(strstr(err, "CBN version") != NULL);
    }
    printf("# %s\n", err);
    CHECK(s == NULL);
    /* imported for the old CBN, assembled for the new one */
    struct gvae_shard *all[N_NODES];
    import_all(&q, all);
    struct gvae_model *m = NULL;
    CHECK_EQ(
        gvae_model_assemble(g2, &q.c, (const struct gvae_shard *const *)all,
                            N_NODES, &m, err),
        SM_EINVAL);
    CHECK(strstr(err, "another CBN") != NULL);
    CHECK(m == NULL);
    free_all(all, N_NODES);
    cbn_graph_free(g2);
    quick_free(&q);
}

/* A peer that trained on other windows computed other statistics: the
 * child of a node it trained refuses its parent's shard. */
static void test_parent_statistics_differ(void)
{
    struct quick q;
    quick_make(&q);
    size_t mid = node_index(q.d.graph, "b-mid");
    bool own[N_NODES] = {0};
    own[mid] = true;
    struct gvae_model *odd = train_side(&q.d, &q.c, own, q.d.n - 16, NULL);
    struct gvae_shard *s[N_NODES];
    import_all(&q, s);
    struct gvae_shard *replaced = s[mid];
    char err[SM_ERRMSG_SIZE];
    s[mid] = NULL;
    uint8_t *buf = NULL;
    size_t len = 0;
    REQUIRE_OK(gvae_shard_export(odd, mid, &buf, &len));
    REQUIRE_OK(gvae_shard_import(buf, len, q.d.graph, &s[mid], err));
    struct gvae_model *m = NULL;
    CHECK_EQ(gvae_model_assemble(q.d.graph, &q.c,
                                 (const struct gvae_shard *const *)s, N_NODES,
                                 &m, err),
             SM_EINVAL);
    CHECK(strstr(err, "statistics") != NULL);
    printf("# %s\n", err);
    CHECK(m == NULL);
    sm_free(buf);
    gvae_shard_free(replaced);
    free_all(s, N_NODES);
    gvae_model_free(odd);
    quick_free(&q);
}

static void put_crc(uint8_t *doc, size_t doc_len)
{
    uint32_t crc = sm_crc32c(0, doc, doc_len);
    for (int k = 0; k < 4; k++) {
        doc[doc_len + (size_t)k] = (uint8_t)(crc >> (8 * k));
    }
}

/* Every truncation, a trailing byte, flipped bits, a wrong magic or
 * version, and a whole checkpoint dressed as a shard are all refused. */
static void test_damaged_shards(void)
{
    struct quick q;
    quick_make(&q);
    size_t front = node_index(q.d.graph, "a-front");
    const uint8_t *good = q.buf[front];
    size_t len = q.len[front];
    printf("# shard of a-front: %zu bytes\n", len);
    struct gvae_shard *s = NULL;
    char err[SM_ERRMSG_SIZE];
    size_t refused = 0;
    for (size_t cut = 0; cut < len; cut++) {
        int rc = gvae_shard_import(good, cut, q.d.graph, &s, err);
        refused += rc == SM_EMALFORMED || rc == SM_ECORRUPT;
    }
    CHECK_EQ(refused, len);
    uint8_t *b = sm_malloc(len + 64);
    REQUIRE(b != NULL);
    memcpy(b, good, len);
    b[len] = 0;
    CHECK_EQ(gvae_shard_import(b, len + 1, q.d.graph, &s, err), SM_ECORRUPT);
    for (size_t k = 0; k < len; k += len / 61 + 1) {
        b[k] ^= 0x04;
        int rc = gvae_shard_import(b, len, q.d.graph, &s, err);
        CHECK(rc == SM_ECORRUPT || rc == SM_EMALFORMED ||
              rc == SM_EUNSUPPORTED);
        b[k] ^= 0x04;
    }
    b[0] = 'X';
    CHECK_EQ(gvae_shard_import(b, len, q.d.graph, &s, err), SM_EMALFORMED);
    CHECK(strstr(err, "not a sagemesh model shard") != NULL);
    b[0] = good[0];
    b[8] = 2;
    CHECK_EQ(gvae_shard_import(b, len, q.d.graph, &s, err), SM_EUNSUPPORTED);
    sm_free(b);
    /* the whole model's checkpoint behind a shard header: a checkpoint,
     * but not of the frontend's parents and the frontend */
    uint8_t *ck = NULL;
    size_t ck_len = 0;
    save(q.m, &ck, &ck_len);
    b = sm_malloc(12 + ck_len);
    REQUIRE(b != NULL);
    memcpy(b, good, 12);
    memcpy(b + 12, ck, ck_len);
    CHECK_EQ(gvae_shard_import(b, 12 + ck_len, q.d.graph, &s, err), SM_EINVAL);
    CHECK(strstr(err, "parents") != NULL);
    printf("# %s\n", err);
    sm_free(b);
    sm_free(ck);
    /* an array claiming 4 billion elements behind a valid header and CRC */
    uint8_t huge[12 + 5 + 4];
    memcpy(huge, good, 12);
    memcpy(huge + 12, (uint8_t[]){0xdd, 0xff, 0xff, 0xff, 0xff}, 5);
    put_crc(huge + 12, 5);
    CHECK_EQ(gvae_shard_import(huge, sizeof huge, q.d.graph, &s, err),
             SM_EMALFORMED);
    CHECK(s == NULL);
    quick_free(&q);
}

static void test_train_nodes_errors(void)
{
    struct data d;
    data_make(&d, 20, 3);
    struct gvae_config c;
    config(&c, 1);
    struct gvae_model *m = NULL;
    char err[SM_ERRMSG_SIZE];
    CHECK_EQ(gvae_train_nodes(&c, d.graph, d.w, d.n, 0, NULL, GVAE_RETRAIN_FULL,
                              NULL, &m, NULL, err),
             SM_EINVAL);
    bool own[N_NODES] = {true};
    CHECK_EQ(gvae_train_nodes(&c, d.graph, d.w, 4, 0, NULL, GVAE_RETRAIN_FULL,
                              own, &m, NULL, err),
             SM_EINVAL);
    CHECK(strstr(err, "at least 8") != NULL);
    CHECK(m == NULL);
    /* no node owned: a model of layouts and statistics only */
    bool none[N_NODES] = {false};
    struct gvae_train_report rep;
    REQUIRE_OK(gvae_train_nodes(&c, d.graph, d.w, d.n, 0, NULL,
                                GVAE_RETRAIN_FULL, none, &m, &rep, err));
    CHECK_EQ(rep.nodes_trained, 0);
    CHECK_EQ(rep.steps, 0);
    CHECK_EQ(gvae_model_params(m), 0);
    CHECK(!gvae_model_node_trained(m, 0));
    CHECK(!gvae_model_node_trained(m, N_NODES));
    gvae_model_free(m);
    data_free(&d);
}

static const struct check_test tests[] = {
    {"two peers' shards assemble into the one-call model",
     test_two_peers_equal_whole},
    {"thread count does not change the model", test_threads_do_not_matter},
    {"missing, duplicated and misconfigured shards",
     test_missing_and_duplicate},
    {"shards of another CBN version", test_other_graph_version},
    {"parent statistics from other windows", test_parent_statistics_differ},
    {"damaged shards: truncation, bits, magic, version", test_damaged_shards},
    {"training a subset refuses bad input", test_train_nodes_errors},
};

CHECK_MAIN(tests, NULL, NULL)
