/* Tests for partial windows: a workload split across three aggregators and
 * merged in any order (also through the encoding) gives byte for byte the
 * window of one aggregator fed everything; merges refuse parts of different
 * windows or configurations and never overflow a count; decoding is strict;
 * every allocation failure leaves things as they were. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/err.h"
#include "base/rng.h"
#include "cbn/cbn.h"
#include "check.h"
#include "tests/fuzz/partial_fixture.h"

#define PHASES  4
#define MAX_OUT 16

/* What the callbacks of the aggregators collect. */
struct outs
{
    struct cbn_window *w[MAX_OUT];
    struct cbn_partial *p[MAX_OUT];
    size_t n_w, n_p;
};

static void on_window(void *arg, struct cbn_window *w)
{
    struct outs *o = arg;
    SM_ASSERT(o->n_w < MAX_OUT);
    o->w[o->n_w++] = w;
}

static void on_partial(void *arg, struct cbn_partial *p)
{
    struct outs *o = arg;
    SM_ASSERT(o->n_p < MAX_OUT);
    o->p[o->n_p++] = p;
}

static void outs_free(struct outs *o)
{
    for (size_t i = 0; i < o->n_w; i++) {
        cbn_window_free(o->w[i]);
    }
    for (size_t i = 0; i < o->n_p; i++) {
        cbn_partial_free(o->p[i]);
    }
    memset(o, 0, sizeof *o);
}

static struct cbn_agg *new_agg(uint64_t hash_seed)
{
    struct cbn_agg_config c = pw_config(hash_seed);
    struct cbn_agg *agg;
    REQUIRE_OK(cbn_agg_new(&c, &agg));
    return agg;
}

/* An encoded buffer from the C library (not the fault heap), so that tests
 * can hold it across heap switches. */
struct bytes
{
    uint8_t *b;
    size_t n;
};

static struct bytes to_bytes(uint8_t *sm_buf, size_t n)
{
    struct bytes out = {malloc(n ? n : 1), n};
    SM_ASSERT(out.b != NULL);
    memcpy(out.b, sm_buf, n);
    sm_free(sm_buf);
    return out;
}

static struct bytes encode_partial(const struct cbn_partial *p)
{
    uint8_t *b;
    size_t n;
    SM_ASSERT(cbn_partial_encode(p, &b, &n) == SM_OK);
    return to_bytes(b, n);
}

static struct bytes encode_window(const struct cbn_window *w)
{
    uint8_t *b;
    size_t n;
    SM_ASSERT(cbn_window_encode(w, &b, &n) == SM_OK);
    return to_bytes(b, n);
}

static int same_bytes(struct bytes a, struct bytes b)
{
    return a.n == b.n && memcmp(a.b, b.b, a.n) == 0;
}

static struct bytes finish_encoded(const struct cbn_partial *p)
{
    struct cbn_window *w;
    SM_ASSERT(cbn_partial_finish(p, &w) == SM_OK);
    struct bytes b = encode_window(w);
    cbn_window_free(w);
    return b;
}

/* A copy of @p through its encoding (which must be canonical). */
static struct cbn_partial *clone(const struct cbn_partial *p)
{
    struct bytes b = encode_partial(p);
    struct cbn_partial *c = NULL;
    CHECK_OK(cbn_partial_decode(b.b, b.n, &c));
    SM_ASSERT(c != NULL);
    struct bytes again = encode_partial(c);
    CHECK(same_bytes(b, again));
    free(b.b);
    free(again.b);
    return c;
}

/* ---- The workload, one aggregator and three ------------------------------ */

struct run
{
    struct outs single; /* windows of the aggregator fed everything */
    struct outs whole;  /* partials of another fed everything */
    struct outs part[PW_PARTS];
};

static void run_workload(struct run *r, uint64_t seed, unsigned requests)
{
    memset(r, 0, sizeof *r);
    struct pw w;
    pw_init(&w, seed, requests);
    struct cbn_agg *full[2] = {new_agg(seed), new_agg(seed ^ 0x5a5a)};
    struct cbn_agg *parts[PW_PARTS];
    for (int i = 0; i < PW_PARTS; i++) {
        parts[i] = new_agg(seed + 17 * (uint64_t)(i + 1)); /* own seeds */
    }
    for (int k = 0; k < PHASES; k++) {
        REQUIRE_OK(pw_feed(&w, k, full, 2, parts));
        REQUIRE_OK(cbn_agg_close_ready(full[0], on_window, &r->single));
        REQUIRE_OK(cbn_agg_close_ready_partial(full[1], on_partial, &r->whole));
        for (int i = 0; i < PW_PARTS; i++) {
            REQUIRE_OK(
                cbn_agg_close_ready_partial(parts[i], on_partial, &r->part[i]));
        }
        REQUIRE_EQ(r->single.n_w, (size_t)k + 1);
    }
    REQUIRE_OK(cbn_agg_flush(full[0], on_window, &r->single));
    REQUIRE_OK(cbn_agg_flush_partial(full[1], on_partial, &r->whole));
    for (int i = 0; i < PW_PARTS; i++) {
        REQUIRE_OK(cbn_agg_flush_partial(parts[i], on_partial, &r->part[i]));
        cbn_agg_free(parts[i]);
    }
    cbn_agg_free(full[0]);
    cbn_agg_free(full[1]);
    pw_free(&w);
}

static void run_free(struct run *r)
{
    outs_free(&r->single);
    outs_free(&r->whole);
    for (int i = 0; i < PW_PARTS; i++) {
        outs_free(&r->part[i]);
    }
}

/* The parts of the window starting at @start, at most one per aggregator. */
static size_t parts_of(struct run *r, uint64_t start, struct cbn_partial **out)
{
    size_t n = 0;
    for (int i = 0; i < PW_PARTS; i++) {
        for (size_t k = 0; k < r->part[i].n_p; k++) {
            if (cbn_partial_start(r->part[i].p[k]) == start) {
                out[n++] = r->part[i].p[k];
            }
        }
    }
    return n;
}

static void check_window(const struct cbn_partial *merged,
                         struct bytes ref,
                         const char *how,
                         size_t win)
{
    struct bytes got = finish_encoded(merged);
    if (!same_bytes(got, ref)) {
        check__fail(__FILE__, __LINE__, 0,
                    "window %zu merged %s differs from the single "
                    "aggregator's (%zu vs %zu bytes)",
                    win, how, got.n, ref.n);
    }
    free(got.b);
}

static void test_exact(void)
{
    struct run r;
    run_workload(&r, check_seed(), 40);
    REQUIRE(r.single.n_w >= PHASES);
    REQUIRE_EQ(r.whole.n_p, r.single.n_w);
    int folded = 0, inferred = 0, errors = 0, late_spans = 0, late_points = 0;
    int qos = 0, straddled = 0;
    for (size_t i = 0; i < r.single.n_w; i++) {
        const struct cbn_window *w = r.single.w[i];
        struct bytes ref = encode_window(w);
        /* The single-host partial path gives the window path's window. */
        CHECK_EQ(cbn_partial_start(r.whole.p[i]), w->start_ns);
        CHECK_EQ(cbn_partial_end(r.whole.p[i]), w->end_ns);
        check_window(r.whole.p[i], ref, "(one aggregator)", i);

        struct cbn_partial *p[PW_PARTS];
        size_t n = parts_of(&r, w->start_ns, p);
        REQUIRE(n >= 1);
        CHECK(n == PW_PARTS || i == PHASES); /* every part has every phase */
        straddled += i == PHASES;

        /* In order, in reverse order, as a tree, and decoded. */
        struct cbn_partial *m = clone(p[0]);
        for (size_t k = 1; k < n; k++) {
            REQUIRE_OK(cbn_partial_merge(m, p[k]));
        }
        check_window(m, ref, "in order", i);
        struct cbn_partial *again = clone(m);
        check_window(again, ref, "in order, re-decoded", i);
        cbn_partial_free(again);
        cbn_partial_free(m);

        m = clone(p[n - 1]);
        for (size_t k = n - 1; k-- > 0;) {
            REQUIRE_OK(cbn_partial_merge(m, p[k]));
        }
        check_window(m, ref, "in reverse", i);
        cbn_partial_free(m);

        if (n == 3) {
            struct cbn_partial *t = clone(p[1]);
            REQUIRE_OK(cbn_partial_merge(t, p[2]));
            m = clone(p[0]);
            REQUIRE_OK(cbn_partial_merge(m, t));
            check_window(m, ref, "as a tree", i);
            cbn_partial_free(m);
            cbn_partial_free(t);
        }

        /* The originals themselves, last, as they are changed. */
        for (size_t k = 1; k < n; k++) {
            REQUIRE_OK(cbn_partial_merge(p[0], p[k]));
        }
        check_window(p[0], ref, "into the original", i);

        for (uint32_t e = 0; e < w->n_edges; e++) {
            folded +=
                !w->edges[e].inferred && w->edges[e].calls > w->edges[e].paired;
            inferred += w->edges[e].inferred;
        }
        for (uint32_t s = 0; s < w->n_services; s++) {
            errors += w->services[s].errors > 0;
        }
        late_spans += w->late_spans > 0;
        late_points += w->late_points > 0;
        qos += !isnan(w->qos_latency_ms);
        free(ref.b);
    }
    /* The workload exercises what it is meant to. */
    printf(
        "# %zu windows: %d folded edges, %d inferred, %d with late spans, "
        "%d with late points\n",
        r.single.n_w, folded, inferred, late_spans, late_points);
    CHECK(folded > 0);
    CHECK(inferred > 0);
    CHECK(errors > 0);
    CHECK(late_spans > 0 && late_points > 0);
    CHECK(qos >= PHASES);
    CHECK_EQ(straddled, 1);
    const struct cbn_window *w0 = r.single.w[0];
    CHECK(cbn_window_edge(w0, "frontend", "redis:6379") != NULL);
    CHECK(cbn_window_edge(w0, "cart", "db") != NULL);
    const struct cbn_window_service *cart = cbn_window_service(w0, "cart");
    REQUIRE(cart != NULL);
    CHECK_EQ(cart->n_metrics, 3); /* cpu, memory, probe to db */
    run_free(&r);
}

/* Merging is commutative in every count and quantile. */
static void test_merge_commutes(void)
{
    struct run r;
    run_workload(&r, check_seed() + 1, 10);
    struct cbn_partial *p[PW_PARTS];
    size_t n = parts_of(&r, r.single.w[1]->start_ns, p);
    REQUIRE_EQ(n, PW_PARTS);
    struct cbn_partial *ab = clone(p[0]), *ba = clone(p[1]);
    REQUIRE_OK(cbn_partial_merge(ab, p[1]));
    REQUIRE_OK(cbn_partial_merge(ba, p[0]));
    struct bytes x = finish_encoded(ab), y = finish_encoded(ba);
    CHECK(same_bytes(x, y));
    free(x.b);
    free(y.b);
    cbn_partial_free(ab);
    cbn_partial_free(ba);
    run_free(&r);
}

/* ---- Refusals and overflow ----------------------------------------------- */

/* A partial of one small window closed by an aggregator of config @c: with
 * @full, one request of the workload and a metric point of cart; else one
 * QoS span of the frontend, so that every count is 1. */
static struct cbn_partial *small_partial(const struct cbn_agg_config *c,
                                         uint64_t start,
                                         int full)
{
    struct cbn_agg *agg;
    REQUIRE_OK(cbn_agg_new(c, &agg));
    struct pw w;
    pw_init(&w, 3, 1);
    if (full) {
        pw_request(&w, start + PW_S);
    } else {
        uint8_t id[16] = {1};
        pw_span(&w, id, id, NULL, CBN_SPAN_SERVER, "frontend", "GET /checkout",
                "", start + PW_S, 3 * PW_MS, 1);
    }
    REQUIRE_OK(cbn_agg_add_spans(agg, w.spans, w.n_spans));
    if (full) {
        struct cbn_metric_point pt = {
            "cart", "i1", "container_memory_working_set_bytes",
            "",     "",   start + PW_S,
            1e8,    0};
        REQUIRE_OK(cbn_agg_add_metrics(agg, &pt, 1));
    }
    struct outs o = {0};
    REQUIRE_OK(cbn_agg_flush_partial(agg, on_partial, &o));
    REQUIRE_EQ(o.n_p, 1);
    cbn_agg_free(agg);
    pw_free(&w);
    return o.p[0];
}

static void check_refused(struct cbn_partial *dst,
                          const struct cbn_partial *src,
                          int want)
{
    struct bytes before = encode_partial(dst);
    CHECK_EQ(cbn_partial_merge(dst, src), want);
    struct bytes after = encode_partial(dst);
    CHECK(same_bytes(before, after));
    free(before.b);
    free(after.b);
}

static void test_merge_refusals(void)
{
    struct cbn_agg_config c = pw_config(1);
    struct cbn_partial *a = small_partial(&c, PW_T0, 1);
    struct cbn_partial *later = small_partial(&c, PW_T0 + PW_WINDOW, 1);
    check_refused(a, later, SM_EINVAL);
    /* Same start, another length. */
    struct cbn_agg_config longer = c;
    longer.window_ns = 2 * PW_WINDOW;
    struct cbn_partial *x = small_partial(&longer, PW_T0 + PW_WINDOW, 1);
    CHECK_EQ(cbn_partial_start(x), cbn_partial_start(later));
    check_refused(later, x, SM_EINVAL);
    cbn_partial_free(x);

    struct cbn_agg_config target = c, pct = c, none = c, classes = c;
    target.qos_target_ms = 121;
    pct.qos_percentile = 99;
    none.qos_service = NULL;
    struct cbn_resource_rule rule = {"container_memory", CBN_RES_CPU};
    classes.resource_overrides = &rule;
    classes.n_resource_overrides = 1;
    const struct cbn_agg_config *bad[] = {&target, &pct, &none, &classes};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        x = small_partial(bad[i], PW_T0, 1);
        check_refused(a, x, SM_EINVAL);
        check_refused(x, a, SM_EINVAL);
        cbn_partial_free(x);
    }
    /* A QoS operation filter is not part of the check: only the spans
     * counted differ. */
    struct cbn_agg_config op = c;
    op.qos_operation = NULL;
    x = small_partial(&op, PW_T0, 1);
    CHECK_OK(cbn_partial_merge(x, a));
    cbn_partial_free(x);
    cbn_partial_free(a);
    cbn_partial_free(later);
}

/* Counts never wrap: merging a partial into itself doubles everything,
 * until a count would overflow, which is refused with nothing changed. */
static void test_overflow(void)
{
    struct cbn_agg_config c = pw_config(1);
    /* 32-bit metric samples: 1 sample, doubled 31 times, then refused. */
    struct cbn_partial *p = small_partial(&c, PW_T0, 1);
    for (int i = 0; i < 31; i++) {
        REQUIRE_OK(cbn_partial_merge(p, p));
    }
    struct cbn_window *w;
    REQUIRE_OK(cbn_partial_finish(p, &w));
    const struct cbn_window_service *cart = cbn_window_service(w, "cart");
    REQUIRE(cart != NULL && cart->n_metrics == 1);
    CHECK_EQ(cart->metrics[0].samples, 1u << 31);
    cbn_window_free(w);
    check_refused(p, p, SM_ERANGE);
    cbn_partial_free(p);

    /* 64-bit counts (and sketch counts): 2^63 requests, errors and QoS
     * latencies, then refused. */
    p = small_partial(&c, PW_T0, 0);
    int merges = 0;
    int rv;
    while ((rv = cbn_partial_merge(p, p)) == SM_OK) {
        merges++;
        REQUIRE(merges < 100);
    }
    CHECK_EQ(rv, SM_ERANGE);
    REQUIRE_OK(cbn_partial_finish(p, &w));
    const struct cbn_window_service *fe = cbn_window_service(w, "frontend");
    REQUIRE(fe != NULL);
    CHECK(fe->requests == 1ull << 63); /* one request, doubled 63 times */
    CHECK_EQ(merges, 63);
    cbn_window_free(w);
    check_refused(p, p, SM_ERANGE);
    cbn_partial_free(p);
}

/* ---- Decoding ------------------------------------------------------------ */

static void test_decode_truncations(void)
{
    struct run r;
    run_workload(&r, check_seed() + 2, 6);
    /* The smallest part of each window: every truncation; others: many. */
    for (size_t i = 0; i < r.part[2].n_p; i++) {
        struct bytes b = encode_partial(r.part[2].p[i]);
        size_t stride = i == 0 ? 1 : 1 + b.n / 512;
        int n = 0;
        for (size_t cut = 0; cut < b.n; cut += stride) {
            struct cbn_partial *bad = NULL;
            int rv = cbn_partial_decode(b.b, cut, &bad);
            if (rv != SM_EMALFORMED) {
                check__fail(__FILE__, __LINE__, 0,
                            "truncated at %zu of %zu: %s", cut, b.n,
                            sm_errname(rv));
                cbn_partial_free(bad);
            }
            n++;
        }
        /* A trailing byte. */
        uint8_t *longer = malloc(b.n + 1);
        memcpy(longer, b.b, b.n);
        longer[b.n] = 0;
        struct cbn_partial *bad = NULL;
        CHECK_EQ(cbn_partial_decode(longer, b.n + 1, &bad), SM_EMALFORMED);
        /* Another version. */
        longer[3] = 2;
        CHECK_EQ(cbn_partial_decode(longer, b.n, &bad), SM_EUNSUPPORTED);
        free(longer);
        if (i == 0) {
            printf("# %d truncations of %zu bytes refused\n", n, b.n);
        }
        free(b.b);
    }
    run_free(&r);
}

/* Flipped bytes never crash, and what still decodes is canonical: it
 * encodes back to the very bytes, and it can be finished and merged. */
static void test_decode_flips(void)
{
    struct run r;
    run_workload(&r, check_seed() + 3, 4);
    struct bytes b = encode_partial(r.part[0].p[0]);
    static const uint8_t masks[] = {0x01, 0x02, 0x10, 0x80, 0xff};
    int accepted = 0, refused = 0;
    for (size_t i = 0; i < b.n; i++) {
        for (size_t k = 0; k < sizeof masks; k++) {
            b.b[i] ^= masks[k];
            struct cbn_partial *p = NULL;
            int rv = cbn_partial_decode(b.b, b.n, &p);
            if (rv == SM_OK) {
                accepted++;
                struct bytes again = encode_partial(p);
                if (!same_bytes(again, b)) {
                    check__fail(__FILE__, __LINE__, 0,
                                "byte %zu ^ 0x%02x decodes but is not "
                                "canonical",
                                i, masks[k]);
                }
                free(again.b);
                struct cbn_window *w;
                CHECK_OK(cbn_partial_finish(p, &w));
                cbn_window_free(w);
                rv = cbn_partial_merge(p, p);
                CHECK(rv == SM_OK || rv == SM_ERANGE);
                cbn_partial_free(p);
            } else {
                refused++;
                CHECK(rv == SM_EMALFORMED || rv == SM_EUNSUPPORTED ||
                      rv == SM_ETOOBIG);
            }
            b.b[i] ^= masks[k];
        }
    }
    printf(
        "# %zu bytes: %d flips accepted (sketch sums, counts), %d "
        "refused\n",
        b.n, accepted, refused);
    CHECK(refused > accepted);
    free(b.b);
    run_free(&r);
}

/* Hand-made encodings (the format is in cbn/partial.c), one defect each. */
struct craft
{
    uint8_t b[8192];
    size_t n;
};

static void c_bytes(struct craft *c, const void *p, size_t n)
{
    SM_ASSERT(c->n + n <= sizeof c->b);
    memcpy(c->b + c->n, p, n);
    c->n += n;
}

static void c_v(struct craft *c, uint64_t v)
{
    do {
        uint8_t b = (uint8_t)(v & 0x7f);
        v >>= 7;
        b |= v ? 0x80 : 0;
        c_bytes(c, &b, 1);
    } while (v);
}

static void c_u8(struct craft *c, uint8_t v)
{
    c_bytes(c, &v, 1);
}

static void c_u64(struct craft *c, uint64_t v)
{
    for (int i = 0; i < 8; i++) {
        c_u8(c, (uint8_t)(v >> (8 * i)));
    }
}

static void c_f64(struct craft *c, double d)
{
    uint64_t u;
    memcpy(&u, &d, 8);
    c_u64(c, u);
}

/* A sketch of @n values @v (accuracy @a), or the empty one's encoding. */
static void c_sketch(struct craft *c, double a, int n, double v)
{
    struct cbn_sketch *sk;
    SM_ASSERT(cbn_sketch_new(a, CBN_SKETCH_DEFAULT_MAX_BINS, &sk) == SM_OK);
    if (n > 0) {
        SM_ASSERT(cbn_sketch_add(sk, v, (uint64_t)n) == SM_OK);
    }
    uint8_t *b;
    size_t len;
    SM_ASSERT(cbn_sketch_encode(sk, &b, &len) == SM_OK);
    c_v(c, len);
    c_bytes(c, b, len);
    sm_free(b);
    cbn_sketch_free(sk);
}

enum defect {
    D_NONE,
    D_SERVICES_UNSORTED,
    D_SERVICE_TWICE,
    D_STRING_UNUSED,
    D_STRINGS_UNSORTED,
    D_STRING_TWICE,
    D_ERRORS_ABOVE_REQUESTS,
    D_NO_REQUESTS,
    D_EMPTY_SKETCH_BYTES,
    D_PADDED_VARINT,
    D_OTHER_ACCURACY,
    D_SKETCH_ABOVE_COUNT,
    D_PAIRED_ABOVE_CALLS,
    D_INFERRED_PAIRED,
    D_EDGES_UNSORTED,
    D_BAD_RESOURCE,
    D_NO_SAMPLES,
    D_QOS_WITHOUT_SERVICE,
    D_QOS_NO_TARGET,
    D_EMPTY_WINDOW,
    D_EMPTY_SERVICE_NAME,
    D_TOO_MANY_BINS,
    D_COUNT,
};

/* Strings: "" a b m. Services a (2 requests, 1 error) and b; a metric
 * (b, m, ""); edges a -> b paired and a -> b inferred. */
static void craft(struct craft *c, enum defect d)
{
    const double acc = CBN_SKETCH_DEFAULT_ACCURACY;
    c->n = 0;
    c_bytes(c, "CBP\x01", 4);
    c_u64(c, PW_T0);
    c_u64(c, d == D_EMPTY_WINDOW ? PW_T0 : PW_T0 + PW_WINDOW);
    c_v(c, 1); /* late spans */
    c_v(c, 0);
    c_u8(c, d == D_QOS_NO_TARGET ? 1 : 0);
    c_f64(c, 0);
    c_f64(c, 99);
    if (d == D_QOS_WITHOUT_SERVICE) {
        c_sketch(c, acc, 1, 5e6);
    } else {
        c_v(c, 0);
    }
    if (d == D_STRINGS_UNSORTED) {
        c_v(c, 4);
        const char *t[] = {"", "b", "a", "m"};
        for (int i = 0; i < 4; i++) {
            c_v(c, strlen(t[i]));
            c_bytes(c, t[i], strlen(t[i]));
        }
    } else {
        int extra = d == D_STRING_UNUSED || d == D_STRING_TWICE;
        c_v(c, 4 + (uint64_t)extra);
        const char *t[] = {"", "a", "b", "m"};
        for (int i = 0; i < 4; i++) {
            c_v(c, strlen(t[i]));
            c_bytes(c, t[i], strlen(t[i]));
            if (i == 3 && extra) {
                const char *x = d == D_STRING_UNUSED ? "z" : "m";
                c_v(c, 1);
                c_bytes(c, x, 1);
            }
        }
    }
    /* Services. */
    uint64_t first = d == D_SERVICES_UNSORTED ? 2 : 1;
    if (d == D_EMPTY_SERVICE_NAME) {
        first = 0;
    }
    uint64_t second = d == D_SERVICES_UNSORTED || d == D_SERVICE_TWICE ? 1 : 2;
    c_v(c, 2);
    c_v(c, first);
    if (d == D_PADDED_VARINT) {
        c_u8(c, 0x82);
        c_u8(c, 0x00);
    } else {
        c_v(c, d == D_NO_REQUESTS ? 0 : 2);
    }
    c_v(c, d == D_ERRORS_ABOVE_REQUESTS ? 3 : 1);
    if (d == D_EMPTY_SKETCH_BYTES) {
        c_sketch(c, acc, 0, 0);
    } else if (d == D_OTHER_ACCURACY) {
        c_sketch(c, 0.02, 2, 5e6);
    } else if (d == D_TOO_MANY_BINS) {
        /* "DDS" 1, accuracy, min, max, sum, zero; 3000 positive bins. */
        struct craft s = {.n = 0};
        c_bytes(&s, "DDS\x01", 4);
        c_f64(&s, acc);
        c_f64(&s, 1);
        c_f64(&s, 1e20);
        c_f64(&s, 1e21);
        c_v(&s, 0);
        c_v(&s, 0);
        c_v(&s, 3000);
        for (int i = 0; i < 3000; i++) {
            c_v(&s, 1);
        }
        c_v(&s, 0);
        c_v(&s, 0);
        c_v(c, s.n);
        c_bytes(c, s.b, s.n);
    } else {
        c_sketch(c, acc, d == D_SKETCH_ABOVE_COUNT ? 3 : 2, 5e6);
    }
    c_v(c, second);
    c_v(c, 1);
    c_v(c, 0);
    c_sketch(c, acc, 1, 7e6);
    /* Metrics. */
    c_v(c, 1);
    c_v(c, 2);
    c_v(c, 3);
    c_v(c, 0);
    c_u8(c, d == D_BAD_RESOURCE ? CBN_RES_COUNT : CBN_RES_MEMORY);
    c_v(c, d == D_NO_SAMPLES ? 0 : 1);
    c_sketch(c, acc, 1, 1e8);
    /* Edges. */
    c_v(c, 2);
    for (int e = 0; e < 2; e++) {
        int inferred = d == D_EDGES_UNSORTED ? 1 - e : e;
        c_v(c, 1);
        c_v(c, 2);
        c_u8(c, (uint8_t)inferred);
        c_v(c, 1);
        c_v(c, inferred ? (d == D_INFERRED_PAIRED)
                        : 1 + (d == D_PAIRED_ABOVE_CALLS));
        c_sketch(c, acc, 1, 4e6);
        if (inferred) {
            c_v(c, 0);
            c_v(c, 0);
        } else {
            c_sketch(c, acc, 1, 3e6);
            c_sketch(c, acc, 1, 1e6);
        }
    }
}

static void test_decode_crafted(void)
{
    struct craft c;
    for (int d = 0; d < D_COUNT; d++) {
        craft(&c, (enum defect)d);
        struct cbn_partial *p = NULL;
        int rv = cbn_partial_decode(c.b, c.n, &p);
        int want = d == D_NONE            ? SM_OK
                   : d == D_TOO_MANY_BINS ? SM_ETOOBIG
                                          : SM_EMALFORMED;
        if (rv != want) {
            check__fail(__FILE__, __LINE__, 0, "defect %d: %s, not %s", d,
                        sm_errname(rv), sm_errname(want));
        }
        if (rv == SM_OK) {
            uint8_t *b;
            size_t n;
            REQUIRE_OK(cbn_partial_encode(p, &b, &n));
            CHECK(n == c.n && memcmp(b, c.b, n) == 0);
            sm_free(b);
            struct cbn_window *w;
            REQUIRE_OK(cbn_partial_finish(p, &w));
            /* The inferred call is folded into the paired edge. */
            REQUIRE_EQ(w->n_edges, 1);
            CHECK_EQ(w->edges[0].calls, 2);
            CHECK_EQ(w->edges[0].paired, 1);
            CHECK_EQ(w->late_spans, 1);
            CHECK(isnan(w->qos_latency_ms));
            const struct cbn_window_service *a = cbn_window_service(w, "a");
            REQUIRE(a != NULL);
            CHECK_EQ(a->errors, 1);
            CHECK_NEAR(a->latency_ms[2], 5, 0.05);
            const struct cbn_window_service *b2 = cbn_window_service(w, "b");
            REQUIRE(b2 != NULL && b2->n_metrics == 1);
            CHECK_STR(b2->metrics[0].name, "m");
            CHECK_STR(b2->metrics[0].peer, "");
            cbn_window_free(w);
            cbn_partial_free(p);
        }
    }
    CHECK_EQ(cbn_partial_decode((const uint8_t *)"CBP", 3, NULL),
             SM_EMALFORMED);
}

/* ---- Allocation failures ------------------------------------------------- */

/* Runs @op with the allocation number @k failing, for k = 0, 1, ... until
 * it succeeds without reaching the fault, and @verify (may be NULL) on its
 * result after each run; @op must leave everything as it was when it fails.
 * Returns the number of failed runs. */
static int each_fault(int (*op)(void *arg),
                      void (*verify)(void *arg, int rv),
                      void *arg)
{
    int failures = 0;
    for (int k = 0; k < 100000; k++) {
        long before = check_heap_calls();
        check_heap_fault(k, 1);
        int rv = op(arg);
        check_heap_fault(-1, 0);
        long calls = check_heap_calls() - before;
        if (verify != NULL) {
            verify(arg, rv);
        }
        if (rv == SM_OK) {
            if (calls <= k) {
                return failures;
            }
            continue; /* the fault hit a path that recovers */
        }
        CHECK_EQ(rv, SM_ENOMEM);
        failures++;
    }
    check__fail(__FILE__, __LINE__, 1, "never succeeded");
    return failures;
}

struct fault_case
{
    struct bytes enc[PW_PARTS]; /* the parts of one window */
    struct bytes window;        /* and its window */
    struct cbn_partial *p[PW_PARTS];
    struct cbn_partial *dst; /* a copy of p[0] that p[1] is merged into */
    struct cbn_partial *all; /* all three merged */
    struct cbn_window *w;    /* what op_finish made */
};

static int op_decode(void *arg)
{
    struct fault_case *f = arg;
    struct cbn_partial *p = NULL;
    int rv = cbn_partial_decode(f->enc[0].b, f->enc[0].n, &p);
    cbn_partial_free(p);
    return rv;
}

static int op_encode(void *arg)
{
    struct fault_case *f = arg;
    uint8_t *b = NULL;
    size_t n;
    int rv = cbn_partial_encode(f->p[0], &b, &n);
    if (rv == SM_OK) {
        CHECK(n == f->enc[0].n && memcmp(b, f->enc[0].b, n) == 0);
    }
    sm_free(b);
    return rv;
}

static int op_merge(void *arg)
{
    struct fault_case *f = arg;
    return cbn_partial_merge(f->dst, f->p[1]);
}

static void verify_merge(void *arg, int rv)
{
    struct fault_case *f = arg;
    if (rv != SM_OK) {
        struct bytes now = encode_partial(f->dst);
        CHECK(same_bytes(now, f->enc[0]));
        free(now.b);
    }
}

static int op_finish(void *arg)
{
    struct fault_case *f = arg;
    f->w = NULL;
    return cbn_partial_finish(f->all, &f->w);
}

static void verify_finish(void *arg, int rv)
{
    struct fault_case *f = arg;
    if (rv == SM_OK) {
        struct bytes got = encode_window(f->w);
        CHECK(same_bytes(got, f->window));
        free(got.b);
    } else {
        CHECK(f->w == NULL);
    }
    cbn_window_free(f->w);
}

static void test_partial_oom(void)
{
    struct run r;
    run_workload(&r, check_seed() + 4, 8);
    struct fault_case f;
    struct cbn_partial *p[PW_PARTS];
    REQUIRE_EQ(parts_of(&r, r.single.w[1]->start_ns, p), PW_PARTS);
    for (int i = 0; i < PW_PARTS; i++) {
        f.enc[i] = encode_partial(p[i]);
    }
    f.window = encode_window(r.single.w[1]);
    run_free(&r);

    check_heap_install();
    for (int i = 0; i < PW_PARTS; i++) {
        REQUIRE_OK(cbn_partial_decode(f.enc[i].b, f.enc[i].n, &f.p[i]));
    }
    REQUIRE_OK(cbn_partial_decode(f.enc[0].b, f.enc[0].n, &f.dst));
    REQUIRE_OK(cbn_partial_decode(f.enc[0].b, f.enc[0].n, &f.all));
    REQUIRE_OK(cbn_partial_merge(f.all, f.p[1]));
    REQUIRE_OK(cbn_partial_merge(f.all, f.p[2]));
    int failures = each_fault(op_decode, NULL, &f);
    failures += each_fault(op_encode, NULL, &f);
    int merge_failures = each_fault(op_merge, verify_merge, &f);
    failures += merge_failures + each_fault(op_finish, verify_finish, &f);
    printf("# %d runs failed with SM_ENOMEM (merge: %d)\n", failures,
           merge_failures);
    CHECK(merge_failures > 10);
    for (int i = 0; i < PW_PARTS; i++) {
        cbn_partial_free(f.p[i]);
    }
    cbn_partial_free(f.dst);
    cbn_partial_free(f.all);
    CHECK_EQ(check_heap_outstanding(), 0);
    check_heap_uninstall();
    for (int i = 0; i < PW_PARTS; i++) {
        free(f.enc[i].b);
    }
    free(f.window.b);
}

/* Closing under allocation failures: a window that fails to close stays
 * open and closes identically on the retry, on both paths. */
struct close_case
{
    int partial; /* close to partials, else to windows */
    struct bytes ref[MAX_OUT];
    size_t n_ref;
};

static void close_all(struct close_case *cc, int fault_at, struct outs *o)
{
    struct pw w;
    pw_init(&w, 11, 6);
    struct cbn_agg *agg = new_agg(5);
    struct cbn_agg *full[1] = {agg};
    for (int k = 0; k < 2; k++) {
        REQUIRE_OK(pw_feed(&w, k, full, 1, NULL));
        for (int tries = 0;; tries++) {
            REQUIRE(tries < 2);
            if (fault_at >= 0 && tries == 0) {
                check_heap_fault(fault_at, 1);
            }
            int rv = cc->partial
                         ? cbn_agg_close_ready_partial(agg, on_partial, o)
                         : cbn_agg_close_ready(agg, on_window, o);
            check_heap_fault(-1, 0);
            if (rv == SM_OK) {
                break;
            }
            CHECK_EQ(rv, SM_ENOMEM);
        }
    }
    REQUIRE_OK(cc->partial ? cbn_agg_flush_partial(agg, on_partial, o)
                           : cbn_agg_flush(agg, on_window, o));
    cbn_agg_free(agg);
    pw_free(&w);
}

static void test_close_oom(void)
{
    for (int partial = 0; partial < 2; partial++) {
        struct close_case cc = {.partial = partial, .n_ref = 0};
        check_heap_install();
        struct outs o = {0};
        close_all(&cc, -1, &o);
        cc.n_ref = partial ? o.n_p : o.n_w;
        for (size_t i = 0; i < cc.n_ref; i++) {
            cc.ref[i] =
                partial ? encode_partial(o.p[i]) : encode_window(o.w[i]);
        }
        outs_free(&o);
        for (int k = 0; k < 60; k++) {
            close_all(&cc, k, &o);
            size_t n = partial ? o.n_p : o.n_w;
            CHECK_EQ(n, cc.n_ref);
            for (size_t i = 0; i < n && i < cc.n_ref; i++) {
                struct bytes b =
                    partial ? encode_partial(o.p[i]) : encode_window(o.w[i]);
                if (!same_bytes(b, cc.ref[i])) {
                    check__fail(__FILE__, __LINE__, 0,
                                "fault at %d changed %s %zu", k,
                                partial ? "partial" : "window", i);
                }
                free(b.b);
            }
            outs_free(&o);
        }
        CHECK_EQ(check_heap_outstanding(), 0);
        check_heap_uninstall();
        for (size_t i = 0; i < cc.n_ref; i++) {
            free(cc.ref[i].b);
        }
    }
}

/* ---- The fuzz corpus ----------------------------------------------------- */

/* The committed corpus (gen_partial_corpus) is still in the current format:
 * its valid inputs decode and re-encode to themselves. */
static void test_corpus(void)
{
    static const char *const files[] = {"part0-w0",  "part1-w0", "part2-w0",
                                        "merged-w1", "straddle", "no-qos"};
    for (size_t k = 0; k < sizeof files / sizeof files[0]; k++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/tests/fuzz/corpus/partial_decode/%s",
                 SM_SOURCE_ROOT, files[k]);
        FILE *fp = fopen(path, "rb");
        if (fp == NULL) {
            check__fail(__FILE__, __LINE__, 0, "cannot open %s", path);
            continue;
        }
        static uint8_t buf[1 << 20];
        size_t n = fread(buf, 1, sizeof buf, fp);
        fclose(fp);
        struct cbn_partial *p = NULL;
        int rv = cbn_partial_decode(buf, n, &p);
        if (rv != SM_OK) {
            check__fail(__FILE__, __LINE__, 0, "%s: %s", files[k],
                        sm_errname(rv));
            continue;
        }
        struct bytes again = encode_partial(p);
        CHECK(again.n == n && memcmp(again.b, buf, n) == 0);
        free(again.b);
        cbn_partial_free(p);
    }
}

static const struct check_test tests[] = {
    {"three aggregators merged give the one aggregator's windows", test_exact},
    {"merging commutes", test_merge_commutes},
    {"merges refuse other windows and configurations", test_merge_refusals},
    {"counts never overflow", test_overflow},
    {"every truncation is refused", test_decode_truncations},
    {"flipped bytes: refused, or canonical", test_decode_flips},
    {"hand-made defects are refused", test_decode_crafted},
    {"decode, encode, merge, finish under out-of-memory", test_partial_oom},
    {"closing under out-of-memory", test_close_oom},
    {"the fuzz corpus decodes", test_corpus},
};

CHECK_MAIN(tests, NULL, NULL)
