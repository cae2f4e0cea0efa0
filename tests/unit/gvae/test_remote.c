/* Tests for counterfactual passes across peers: gvae_diagnose_remote() with
 * in-process owners (pass servers behind the exchange callback) gives
 * exactly gvae_diagnose()'s diagnosis whatever the owners, when owners fail
 * or answer garbage, and under allocation failures; pass requests are
 * decoded strictly. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/rng.h"
#include "check.h"
#include "gvae/gvae.h"
#include "synth.h"
#include "tests/fuzz/gvae_pass_fixture.h"

#define TARGET_MS 45.0
#define N_TRAIN   240
#define MAX_OWN   4

/* ---- a small trained model, shared -------------------------------------- */

static struct syn_window *train_sw;
static const struct cbn_window **train_w;
static struct cbn_graph *graph;
static struct gvae_model *model;

static const struct gvae_model *shared_model(void)
{
    if (model != NULL) {
        return model;
    }
    struct sm_rng r;
    sm_rng_seed(&r, 21);
    train_sw = sm_calloc(N_TRAIN, sizeof *train_sw);
    train_w = sm_calloc(N_TRAIN, sizeof *train_w);
    REQUIRE(train_sw != NULL && train_w != NULL);
    REQUIRE_OK(cbn_graph_new(NULL, &graph));
    for (size_t t = 0; t < N_TRAIN; t++) {
        enum syn_fault f = SYN_NONE;
        int where = 0;
        double mag = 0;
        if (t % 8 == 7) {
            f = (enum syn_fault)(1 + sm_rng_below(&r, 3));
            where = (int)sm_rng_below(&r, SYN_SERVICES);
            mag = 0.2 + 0.8 * sm_rng_double(&r);
        }
        syn_make(&train_sw[t], &r, t, f, where, mag, TARGET_MS);
        train_w[t] = &train_sw[t].w;
        int changed;
        REQUIRE_OK(cbn_graph_observe(graph, train_w[t], &changed));
    }
    struct gvae_config c;
    gvae_config_default(&c);
    c.max_epochs = 25;
    c.batch = 32;
    c.threads = 2;
    c.seed = 4;
    char err[SM_ERRMSG_SIZE];
    int rc = gvae_train(&c, graph, train_w, N_TRAIN, 0, NULL, GVAE_RETRAIN_FULL,
                        &model, NULL, err);
    if (rc != SM_OK) {
        printf("# train: %s\n", err);
    }
    REQUIRE_OK(rc);
    return model;
}

/* Held-out windows: one per fault kind and service, strong, and two
 * healthy ones. */
enum { N_CASES = 3 * SYN_SERVICES + 2 };

static void make_case(struct syn_window *out, size_t c)
{
    struct sm_rng r;
    sm_rng_seed(&r, 1000 + c);
    uint64_t t = 5000 + c;
    if (c < 3 * SYN_SERVICES) {
        syn_make(out, &r, t, (enum syn_fault)(1 + c / SYN_SERVICES),
                 (int)(c % SYN_SERVICES), 1.0, TARGET_MS);
    } else {
        syn_make(out, &r, t, SYN_NONE, 0, 0, TARGET_MS);
    }
}

static void sweep_config(struct gvae_sweep_config *s, enum gvae_abduction a)
{
    gvae_sweep_config_default(s);
    s->qos_service = "a-front";
    s->qos_target_ms = TARGET_MS;
    s->samples = 16;
    s->abduction = a;
}

/* ---- in-process owners --------------------------------------------------- */

enum assign { ASSIGN_ROUND_ROBIN, ASSIGN_RANDOM, ASSIGN_HERE };
enum failure { FAIL_NONE, FAIL_DOWN, FAIL_GARBAGE };

struct mesh
{
    struct gvae_pass_server *srv[MAX_OWN]; /* by owner, 1.. */
    unsigned n_owners;
    enum assign assign;
    uint64_t seed;
    unsigned bad_owner; /* fails as @failure */
    enum failure failure;
    unsigned garbage_kind;
    /* what the node layer saw */
    uint64_t exchanges, requests, bytes_out, bytes_in, failed;
    uint8_t *largest; /* the largest request, for the decoding tests */
    size_t largest_len;
    unsigned largest_owner;
};

static unsigned mesh_owner(void *arg, size_t node)
{
    struct mesh *ms = arg;
    switch (ms->assign) {
        case ASSIGN_ROUND_ROBIN:
            return 1 + (unsigned)(node % ms->n_owners);
        case ASSIGN_RANDOM: {
            struct sm_rng r;
            sm_rng_seed(&r, ms->seed * 131 + node);
            /* 0 included: some nodes stay with the coordinator */
            return (unsigned)sm_rng_below(&r, ms->n_owners + 1);
        }
        case ASSIGN_HERE:
        default:
            return 0;
    }
}

/* Turns a real reply into one of several kinds of garbage. */
static void spoil(struct mesh *ms, uint8_t **rep, size_t *len)
{
    unsigned kind = ms->garbage_kind++ % 5;
    uint8_t *b = *rep;
    switch (kind) {
        case 0: /* random bytes, the reply's length */
            for (size_t k = 0; k < *len; k++) {
                b[k] = (uint8_t)(k * 37 + 11);
            }
            break;
        case 1: /* truncated */
            *len -= 1;
            break;
        case 2: { /* a trailing byte */
            uint8_t *more = sm_realloc(b, *len + 1);
            REQUIRE(more != NULL);
            more[*len] = 0;
            *rep = more;
            *len += 1;
            break;
        }
        case 3: /* another pass number */
            b[16] ^= 1;
            break;
        default: /* the first node's first affected flag flipped */
            b[36 + 4] ^= 1;
            break;
    }
}

static void mesh_exchange(void *arg,
                          size_t n,
                          const unsigned *owners,
                          const uint8_t *const *reqs,
                          const size_t *lens,
                          uint8_t **reps,
                          size_t *rep_lens)
{
    struct mesh *ms = arg;
    ms->exchanges++;
    for (size_t k = 0; k < n; k++) {
        unsigned o = owners[k];
        CHECK(o >= 1 && o <= ms->n_owners);
        for (size_t q = 0; q < k; q++) {
            CHECK(owners[q] != o); /* one request per owner */
        }
        ms->requests++;
        ms->bytes_out += lens[k];
        if (lens[k] > ms->largest_len) {
            free(ms->largest); /* not sm_*: the fault heap must not hit it */
            ms->largest = malloc(lens[k]);
            REQUIRE(ms->largest != NULL);
            memcpy(ms->largest, reqs[k], lens[k]);
            ms->largest_len = lens[k];
            ms->largest_owner = o;
        }
        if (ms->failure == FAIL_DOWN && o == ms->bad_owner) {
            ms->failed++;
            continue;
        }
        int rc = gvae_pass_serve(ms->srv[o], reqs[k], lens[k], &reps[k],
                                 &rep_lens[k]);
        if (rc != SM_OK) {
            /* only when allocations are made to fail */
            CHECK_EQ(rc, SM_ENOMEM);
            reps[k] = NULL;
            ms->failed++;
            continue;
        }
        if (ms->failure == FAIL_GARBAGE && o == ms->bad_owner) {
            spoil(ms, &reps[k], &rep_lens[k]);
            ms->failed++;
        }
        ms->bytes_in += rep_lens[k];
    }
}

static void mesh_open(struct mesh *ms,
                      unsigned n_owners,
                      enum assign assign,
                      const struct cbn_window *w,
                      const struct gvae_sweep_config *sc)
{
    memset(ms, 0, sizeof *ms);
    ms->n_owners = n_owners;
    ms->assign = assign;
    for (unsigned o = 1; o <= n_owners; o++) {
        char err[SM_ERRMSG_SIZE];
        int rc =
            gvae_pass_server_new(shared_model(), w, NULL, sc, &ms->srv[o], err);
        if (rc != SM_OK) {
            printf("# pass server: %s\n", err);
        }
        REQUIRE_OK(rc);
    }
}

static void mesh_close(struct mesh *ms)
{
    for (unsigned o = 0; o < MAX_OWN; o++) {
        gvae_pass_server_free(ms->srv[o]);
    }
    free(ms->largest);
    memset(ms, 0, sizeof *ms);
}

/* ---- comparing diagnoses, field by field ------------------------------- */

static int same_diagnosis(const struct gvae_diagnosis *a,
                          const struct gvae_diagnosis *b)
{
    int ok = a->latency_ms == b->latency_ms && a->target_ms == b->target_ms &&
             a->violated == b->violated && a->n_culprits == b->n_culprits &&
             a->n_ranking == b->n_ranking && a->n_path == b->n_path &&
             a->n_unseen == b->n_unseen && a->rows == b->rows;
    for (size_t k = 0; ok && k < a->n_culprits; k++) {
        const struct gvae_culprit *x = &a->culprits[k], *y = &b->culprits[k];
        ok = strcmp(x->service, y->service) == 0 &&
             x->resource == y->resource && x->p_qos_met == y->p_qos_met &&
             x->effect_ms == y->effect_ms &&
             x->resource_effect_ms == y->resource_effect_ms;
    }
    for (size_t k = 0; ok && k < a->n_ranking; k++) {
        const struct gvae_candidate *x = &a->ranking[k], *y = &b->ranking[k];
        ok = strcmp(x->service, y->service) == 0 && x->score == y->score &&
             x->effect_ms == y->effect_ms && x->p_qos_met == y->p_qos_met &&
             x->evidence == y->evidence && x->out_of_range == y->out_of_range;
    }
    for (size_t k = 0; ok && k < a->n_path; k++) {
        ok = strcmp(a->path[k], b->path[k]) == 0;
    }
    for (size_t k = 0; ok && k < a->n_unseen; k++) {
        ok = strcmp(a->unseen[k], b->unseen[k]) == 0;
    }
    if (!ok) {
        printf(
            "# differ: rows %zu/%zu, culprits %zu/%zu, top %s %.17g / %s "
            "%.17g\n",
            a->rows, b->rows, a->n_culprits, b->n_culprits,
            a->n_ranking ? a->ranking[0].service : "-",
            a->n_ranking ? a->ranking[0].score : 0,
            b->n_ranking ? b->ranking[0].service : "-",
            b->n_ranking ? b->ranking[0].score : 0);
    }
    return ok;
}

static struct gvae_diagnosis *local_diagnosis(const struct cbn_window *w,
                                              const struct gvae_sweep_config *s)
{
    struct gvae_diagnosis *d = NULL;
    char err[SM_ERRMSG_SIZE];
    REQUIRE_OK(gvae_diagnose(shared_model(), w, NULL, s, &d, err));
    return d;
}

/* Diagnoses through @ms and checks it against @want and the counts. */
static void check_remote(struct mesh *ms,
                         const struct cbn_window *w,
                         const struct gvae_sweep_config *s,
                         const struct gvae_diagnosis *want,
                         struct gvae_remote_stats *st)
{
    struct gvae_remote remote = {ms, mesh_owner, mesh_exchange};
    struct gvae_diagnosis *d = NULL;
    char err[SM_ERRMSG_SIZE];
    REQUIRE_OK(
        gvae_diagnose_remote(shared_model(), w, NULL, s, &remote, st, &d, err));
    CHECK(same_diagnosis(want, d));
    CHECK_EQ(st->levels, ms->exchanges);
    CHECK_EQ(st->requests, ms->requests);
    CHECK_EQ(st->bytes_out, ms->bytes_out);
    CHECK_EQ(st->bytes_in, ms->bytes_in);
    CHECK(st->passes >= 2);
    gvae_diagnosis_free(d);
}

/* ---- tests ----------------------------------------------------------------
 */

static void test_equal(void)
{
    const enum gvae_abduction modes[3] = {
        GVAE_ABDUCT_PRIOR, GVAE_ABDUCT_POSTERIOR, GVAE_ABDUCT_POSTERIOR_X};
    size_t compared = 0, culprits = 0, multi = 0, violated = 0;
    uint64_t requests = 0, bytes = 0;
    for (int a = 0; a < 4; a++) {
        struct gvae_sweep_config sc;
        sweep_config(&sc, modes[a % 3]);
        if (a == 3) {
            /* greedy culprit sets up to the limit: interventions on
             * several nodes at once */
            sc.gate = 0;
            sc.p_threshold = 2;
        }
        for (size_t c = 0; c < N_CASES; c++) {
            struct syn_window sw;
            make_case(&sw, c);
            struct gvae_diagnosis *want = local_diagnosis(&sw.w, &sc);
            violated += want->violated != 0;
            culprits += want->n_culprits > 0;
            multi += want->n_culprits > 1;
            for (unsigned n = 2; n <= 3; n++) {
                for (int as = ASSIGN_ROUND_ROBIN; as <= ASSIGN_RANDOM; as++) {
                    struct mesh ms;
                    mesh_open(&ms, n, (enum assign)as, &sw.w, &sc);
                    ms.seed = c * 7 + n;
                    struct gvae_remote_stats st;
                    check_remote(&ms, &sw.w, &sc, want, &st);
                    CHECK_EQ(st.fallbacks, 0);
                    if (as == ASSIGN_ROUND_ROBIN) {
                        /* every node is remote: each pass sends something */
                        CHECK(st.requests >= st.passes);
                    }
                    requests += st.requests;
                    bytes += st.bytes_out + st.bytes_in;
                    compared++;
                    mesh_close(&ms);
                }
            }
            gvae_diagnosis_free(want);
        }
    }
    printf(
        "# %zu remote diagnoses equal to local ones (%zu violated "
        "windows, %zu with culprits, %zu with several); %llu requests, "
        "%llu bytes\n",
        compared, violated, culprits, multi, (unsigned long long)requests,
        (unsigned long long)bytes);
    CHECK_EQ(compared, 4 * N_CASES * 4);
    CHECK(culprits > 0);
    CHECK(multi > 0);
}

static void test_here_only(void)
{
    struct gvae_sweep_config sc;
    sweep_config(&sc, GVAE_ABDUCT_PRIOR);
    struct syn_window sw;
    make_case(&sw, 1);
    struct gvae_diagnosis *want = local_diagnosis(&sw.w, &sc);
    struct mesh ms;
    mesh_open(&ms, 2, ASSIGN_HERE, &sw.w, &sc);
    struct gvae_remote_stats st;
    check_remote(&ms, &sw.w, &sc, want, &st);
    CHECK_EQ(st.requests, 0);
    CHECK_EQ(st.levels, 0);
    CHECK_EQ(st.bytes_out, 0);
    /* and stats may be NULL */
    struct gvae_remote remote = {&ms, mesh_owner, mesh_exchange};
    struct gvae_diagnosis *d = NULL;
    char err[SM_ERRMSG_SIZE];
    REQUIRE_OK(gvae_diagnose_remote(shared_model(), &sw.w, NULL, &sc, &remote,
                                    NULL, &d, err));
    CHECK(same_diagnosis(want, d));
    gvae_diagnosis_free(d);
    mesh_close(&ms);
    gvae_diagnosis_free(want);
}

static void test_fallback(void)
{
    const enum gvae_abduction modes[2] = {GVAE_ABDUCT_PRIOR,
                                          GVAE_ABDUCT_POSTERIOR};
    for (int a = 0; a < 2; a++) {
        struct gvae_sweep_config sc;
        sweep_config(&sc, modes[a]);
        for (size_t c = 0; c < N_CASES; c += 3) {
            struct syn_window sw;
            make_case(&sw, c);
            struct gvae_diagnosis *want = local_diagnosis(&sw.w, &sc);
            for (int f = FAIL_DOWN; f <= FAIL_GARBAGE; f++) {
                struct mesh ms;
                mesh_open(&ms, 3, ASSIGN_ROUND_ROBIN, &sw.w, &sc);
                ms.failure = (enum failure)f;
                ms.bad_owner = 2;
                struct gvae_remote_stats st;
                check_remote(&ms, &sw.w, &sc, want, &st);
                /* owner 2 has node 1 (round-robin): some of its replies
                 * failed, and each failed reply's nodes fell back */
                CHECK(ms.failed > 0);
                CHECK(st.fallbacks >= ms.failed);
                mesh_close(&ms);
            }
            gvae_diagnosis_free(want);
        }
    }
}

/* The request the decoding tests spoil: the largest of a posterior
 * diagnosis of a violated window, and the server that answered it. */
struct captured
{
    struct mesh ms;
    struct gvae_sweep_config sc;
    struct syn_window sw;
    uint8_t *req;
    size_t len;
    struct gvae_pass_server *srv;
};

static void capture(struct captured *cp)
{
    sweep_config(&cp->sc, GVAE_ABDUCT_POSTERIOR);
    make_case(&cp->sw, 0);
    mesh_open(&cp->ms, 2, ASSIGN_ROUND_ROBIN, &cp->sw.w, &cp->sc);
    struct gvae_diagnosis *want = local_diagnosis(&cp->sw.w, &cp->sc);
    struct gvae_remote_stats st;
    check_remote(&cp->ms, &cp->sw.w, &cp->sc, want, &st);
    gvae_diagnosis_free(want);
    cp->req = cp->ms.largest;
    cp->len = cp->ms.largest_len;
    cp->srv = cp->ms.srv[cp->ms.largest_owner];
    REQUIRE(cp->req != NULL);
}

static int serve(struct gvae_pass_server *srv, const uint8_t *req, size_t len)
{
    uint8_t *rep = NULL;
    size_t rep_len = 0;
    int rc = gvae_pass_serve(srv, req, len, &rep, &rep_len);
    CHECK(rc == SM_OK || rep == NULL);
    sm_free(rep);
    return rc;
}

/* Serves @cp's request with @len bytes of it changed by @edit at @at. */
static int serve_edited(struct captured *cp,
                        size_t at,
                        const uint8_t *edit,
                        size_t n)
{
    uint8_t *b = sm_malloc(cp->len);
    REQUIRE(b != NULL);
    memcpy(b, cp->req, cp->len);
    memcpy(b + at, edit, n);
    int rc = serve(cp->srv, b, cp->len);
    sm_free(b);
    return rc;
}

static void put32(uint8_t *p, uint32_t v)
{
    for (int k = 0; k < 4; k++) {
        p[k] = (uint8_t)(v >> (8 * k));
    }
}

static void test_request_decoding(void)
{
    struct captured cp;
    capture(&cp);
    const struct gvae_model *m = shared_model();
    struct gvae_pass_header h;
    REQUIRE_OK(gvae_pass_peek(cp.req, cp.len, &h));
    CHECK_EQ(h.format, GVAE_PASS_FORMAT);
    CHECK_EQ(h.graph_version, gvae_model_graph_version(m));
    CHECK_EQ(h.n_nodes, gvae_model_node_count(m));
    CHECK_EQ(h.config_samples, 16);
    CHECK_EQ(h.window_start_ns, cp.sw.w.start_ns);
    CHECK_EQ(h.abduction, GVAE_ABDUCT_POSTERIOR);
    CHECK(h.level > 0); /* it carries parent rows */
    printf("# request: pass %u, level %u, S %u, K %u, N %u, %zu bytes\n",
           h.pass, h.level, h.samples, h.interventions, h.nodes, cp.len);

    /* the same request twice: the same reply */
    uint8_t *r1 = NULL, *r2 = NULL;
    size_t l1 = 0, l2 = 0;
    REQUIRE_OK(gvae_pass_serve(cp.srv, cp.req, cp.len, &r1, &l1));
    REQUIRE_OK(gvae_pass_serve(cp.srv, cp.req, cp.len, &r2, &l2));
    CHECK(l1 == l2 && memcmp(r1, r2, l1) == 0);
    sm_free(r1);
    sm_free(r2);

    /* every truncation, and a trailing byte */
    size_t bad = 0;
    for (size_t n = 0; n < cp.len; n++) {
        bad += serve(cp.srv, cp.req, n) == SM_EMALFORMED;
    }
    CHECK_EQ(bad, cp.len);
    uint8_t *longer = sm_malloc(cp.len + 1);
    REQUIRE(longer != NULL);
    memcpy(longer, cp.req, cp.len);
    longer[cp.len] = 0;
    CHECK_EQ(serve(cp.srv, longer, cp.len + 1), SM_EMALFORMED);
    CHECK_EQ(gvae_pass_peek(longer, cp.len + 1, &h), SM_OK);
    sm_free(longer);

    /* header fields */
    uint8_t v[8];
    put32(v, (uint32_t)h.graph_version + 1);
    CHECK_EQ(serve_edited(&cp, 8, v, 4), SM_EINVAL);
    put32(v, h.n_nodes + 1);
    CHECK_EQ(serve_edited(&cp, 16, v, 4), SM_EINVAL);
    put32(v, (uint32_t)cp.sw.w.start_ns + 1);
    CHECK_EQ(serve_edited(&cp, 24, v, 4), SM_EINVAL);
    v[0] = GVAE_ABDUCT_PRIOR;
    CHECK_EQ(serve_edited(&cp, 6, v, 1), SM_EINVAL);
    v[0] = 9;
    CHECK_EQ(serve_edited(&cp, 6, v, 1), SM_EMALFORMED);
    v[0] = 2;
    CHECK_EQ(serve_edited(&cp, 4, v, 1), SM_EUNSUPPORTED);
    CHECK_EQ(serve_edited(&cp, 0, (const uint8_t *)"SMPR", 4), SM_EMALFORMED);
    put32(v, 3); /* S neither 1 nor the config's */
    CHECK_EQ(serve_edited(&cp, 48, v, 4), SM_EMALFORMED);
    put32(v, 0); /* no interventions */
    CHECK_EQ(serve_edited(&cp, 52, v, 4), SM_EMALFORMED);
    put32(v, 0xFFFFFFFFu); /* more than the model allows */
    CHECK_EQ(serve_edited(&cp, 52, v, 4), SM_EMALFORMED);
    put32(v, h.interventions + 1); /* more than the bytes hold */
    CHECK_EQ(serve_edited(&cp, 52, v, 4), SM_EMALFORMED);
    put32(v, 0);
    CHECK_EQ(serve_edited(&cp, 56, v, 4), SM_EMALFORMED);
    put32(v, h.n_nodes + 1);
    CHECK_EQ(serve_edited(&cp, 56, v, 4), SM_EMALFORMED);

    /* interventions: the first one's node and fields */
    size_t at = 60;
    put32(v, h.n_nodes); /* out of range */
    CHECK_EQ(serve_edited(&cp, at + 2, v, 4), SM_EMALFORMED);
    v[0] = 0;
    v[1] = 0; /* no classes */
    CHECK_EQ(serve_edited(&cp, at + 6, v, 2), SM_EMALFORMED);
    v[0] = 9; /* more than GVAE_SET_MAX nodes */
    CHECK_EQ(serve_edited(&cp, at, v, 1), SM_EMALFORMED);
    v[0] = 2; /* own neither 0 nor 1 */
    CHECK_EQ(serve_edited(&cp, at + 1, v, 1), SM_EMALFORMED);

    /* the first requested node: out of range, and a padding bit */
    for (size_t k = 0; k < h.interventions; k++) {
        at += 2 + 6 * (size_t)cp.req[at];
    }
    put32(v, h.n_nodes);
    CHECK_EQ(serve_edited(&cp, at, v, 4), SM_EMALFORMED);
    put32(v, (uint32_t)gvae_model_node_count(m) + 100);
    CHECK_EQ(serve_edited(&cp, at, v, 4), SM_EMALFORMED);
    if (h.interventions % 8 != 0) {
        v[0] = (uint8_t)(cp.req[at + 4] | 0x80);
        CHECK_EQ(serve_edited(&cp, at + 4, v, 1), SM_EMALFORMED);
    }
    /* a parent flag flipped changes how many rows follow */
    v[0] = (uint8_t)(cp.req[at + 4] ^ 1);
    CHECK_EQ(serve_edited(&cp, at + 4, v, 1), SM_EMALFORMED);

    /* and the original is still served */
    CHECK_OK(serve(cp.srv, cp.req, cp.len));
    mesh_close(&cp.ms);
}

/* Every allocation of a remote diagnosis (coordinator and owners) failing
 * in turn: SM_ENOMEM or, when only an owner failed, the same diagnosis;
 * nothing leaks. */
static void test_out_of_memory(void)
{
    struct gvae_sweep_config sc;
    sweep_config(&sc, GVAE_ABDUCT_POSTERIOR);
    sc.samples = 4;
    struct syn_window sw;
    make_case(&sw, 5);
    struct gvae_diagnosis *want = local_diagnosis(&sw.w, &sc);
    struct mesh ms;
    mesh_open(&ms, 2, ASSIGN_ROUND_ROBIN, &sw.w, &sc);
    struct gvae_remote remote = {&ms, mesh_owner, mesh_exchange};
    /* once before: the servers keep per-node buffers between requests */
    struct gvae_remote_stats st;
    check_remote(&ms, &sw.w, &sc, want, &st);
    check_heap_install();
    int done = 0, nomem = 0, same = 0;
    for (int delay = 0; !done && delay < 100000; delay++) {
        long before = check_heap_calls();
        check_heap_fault(delay, 1);
        struct gvae_diagnosis *d = NULL;
        char err[SM_ERRMSG_SIZE];
        int rc = gvae_diagnose_remote(shared_model(), &sw.w, NULL, &sc, &remote,
                                      NULL, &d, err);
        if (rc == SM_OK) {
            /* the fault hit an owner (its nodes fell back) or nothing */
            CHECK(same_diagnosis(want, d));
            same++;
            gvae_diagnosis_free(d);
            done = check_heap_calls() - before <= delay;
        } else {
            CHECK_EQ(rc, SM_ENOMEM);
            nomem++;
        }
    }
    check_heap_fault(-1, 0);
    check_heap_uninstall();
    printf("# %d runs ended in SM_ENOMEM, %d succeeded unchanged\n", nomem,
           same);
    CHECK(done);
    CHECK(nomem > 0);
    mesh_close(&ms);
    gvae_diagnosis_free(want);
}

/* The fuzz corpus holds requests the fixture's servers accept. */
static void test_corpus(void)
{
    struct pass_fix fix;
    pass_fix_init(&fix);
    struct gvae_pass_server *srv[PASS_FIX_MODES] = {NULL};
    char err[SM_ERRMSG_SIZE];
    for (int a = 0; a < PASS_FIX_MODES; a++) {
        REQUIRE_OK(gvae_pass_server_new(fix.model, &fix.bad.w, NULL,
                                        &fix.sweep[a], &srv[a], err));
    }
    static const char *const files[] = {
        "prior-p0-l0-o1.bin",     "prior-p0-l1-o1.bin",
        "prior-largest.bin",      "posterior-p0-l0-o2.bin",
        "posterior-largest.bin",  "posterior-x-p0-l1-o1.bin",
        "posterior-x-largest.bin"};
    for (size_t k = 0; k < sizeof files / sizeof files[0]; k++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/tests/fuzz/corpus/gvae_pass/%s",
                 SM_SOURCE_ROOT, files[k]);
        FILE *f = fopen(path, "rb");
        REQUIRE(f != NULL);
        uint8_t buf[1 << 16];
        size_t n = fread(buf, 1, sizeof buf, f);
        fclose(f);
        struct gvae_pass_header h;
        REQUIRE_OK(gvae_pass_peek(buf, n, &h));
        CHECK_OK(serve(srv[h.abduction], buf, n));
    }
    for (int a = 0; a < PASS_FIX_MODES; a++) {
        gvae_pass_server_free(srv[a]);
    }
    pass_fix_free(&fix);
}

static void test_server_errors(void)
{
    struct gvae_sweep_config sc;
    sweep_config(&sc, GVAE_ABDUCT_PRIOR);
    struct syn_window sw;
    make_case(&sw, 0);
    struct gvae_pass_server *srv = NULL;
    char err[SM_ERRMSG_SIZE];
    sc.samples = 0;
    CHECK_EQ(gvae_pass_server_new(shared_model(), &sw.w, NULL, &sc, &srv, err),
             SM_EINVAL);
    CHECK(srv == NULL && err[0] != '\0');
    sweep_config(&sc, GVAE_ABDUCT_PRIOR);
    sc.qos_service = "nobody";
    CHECK_EQ(gvae_pass_server_new(shared_model(), &sw.w, NULL, &sc, &srv, err),
             SM_ENOTFOUND);
    CHECK(srv == NULL);
    gvae_pass_server_free(NULL);
}

static void test_release(void)
{
    gvae_model_free(model);
    cbn_graph_free(graph);
    sm_free(train_sw);
    sm_free(train_w);
    model = NULL;
}

static const struct check_test tests[] = {
    {"remote diagnoses equal local ones (2, 3 owners; round-robin, random)",
     test_equal},
    {"all nodes at the coordinator: no requests", test_here_only},
    {"a failed owner and garbage replies fall back", test_fallback},
    {"pass requests are decoded strictly", test_request_decoding},
    {"out of memory in coordinator and owners", test_out_of_memory},
    {"the fuzz corpus is served", test_corpus},
    {"pass server errors", test_server_errors},
    {"release the shared model", test_release},
};

CHECK_MAIN(tests, NULL, NULL)
