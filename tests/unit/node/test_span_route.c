/* Tests for trace ownership (rendezvous hashing) and the span batch codec:
 * determinism, balance and movement of owners; round trips, canonical
 * bytes, every truncation, hand-made malformed batches, limits and
 * allocation failures. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/err.h"
#include "base/le.h"
#include "base/rng.h"
#include "check.h"
#include "node/span_route.h"

/* ---- Ownership ------------------------------------------------------------
 */

#define TRACES 100000
#define ID_LEN 32

static void random_trace(struct sm_rng *rng, uint8_t id[16])
{
    sm_put_le64(id, sm_rng_u64(rng));
    sm_put_le64(id + 8, sm_rng_u64(rng));
}

/* Fills @ids with @n peer ids of 32 hex digits. */
static void random_members(struct sm_rng *rng,
                           char ids[][ID_LEN + 1],
                           const char **members,
                           size_t n)
{
    for (size_t i = 0; i < n; i++) {
        snprintf(ids[i], ID_LEN + 1, "%016llx%016llx",
                 (unsigned long long)sm_rng_u64(rng),
                 (unsigned long long)sm_rng_u64(rng));
        members[i] = ids[i];
    }
}

static void test_owner_fixed(void)
{
    const uint8_t trace[16] = {0xdd, 0xd3, 0x2a, 0xe4, 0x91, 0x5f, 0x57, 0x0f,
                               0xf3, 0xb6, 0x07, 0x7e, 0xe2, 0x30, 0x53, 0x01};
    const char *members[] = {"9c1e4f0a7b3d", "a1b2c3d4e5f6", "0f0e0d0c0b0a",
                             "5e5e5e5e5e5e", "7d2c9b1a0f3e"};
    CHECK_EQ(node_route_owner(trace, members, 0), SIZE_MAX);
    CHECK_EQ(node_route_owner(trace, members, 1), 0);
    /* The weights are part of the protocol: these owners must never change
     * (peers of different versions have to agree). They were computed by an
     * independent implementation of the weights described in span_route.c
     * (FNV-1a, splitmix64's finaliser, little-endian halves). */
    CHECK_STR(members[node_route_owner(trace, members, 5)], "5e5e5e5e5e5e");
    CHECK_STR(members[node_route_owner(trace, members, 2)], "a1b2c3d4e5f6");
    const uint8_t zero[16] = {0};
    CHECK_STR(members[node_route_owner(zero, members, 5)], "a1b2c3d4e5f6");
    uint8_t jaeger[16] = {0}; /* a 64-bit id, left-padded */
    sm_put_le64(jaeger + 8, 0x1122334455667788u);
    CHECK_STR(members[node_route_owner(jaeger, members, 5)], "5e5e5e5e5e5e");
    static const char *const repeated[12] = {
        "a1b2c3d4e5f6", "a1b2c3d4e5f6", "7d2c9b1a0f3e", "5e5e5e5e5e5e",
        "9c1e4f0a7b3d", "5e5e5e5e5e5e", "9c1e4f0a7b3d", "0f0e0d0c0b0a",
        "9c1e4f0a7b3d", "0f0e0d0c0b0a", "a1b2c3d4e5f6", "a1b2c3d4e5f6"};
    for (int b = 0; b < 12; b++) {
        uint8_t same[16]; /* sixteen bytes of value b */
        memset(same, b, sizeof same);
        CHECK_STR(members[node_route_owner(same, members, 5)], repeated[b]);
    }
    /* Same inputs, same owner. */
    for (int k = 0; k < 3; k++) {
        CHECK_STR(members[node_route_owner(trace, members, 5)], "5e5e5e5e5e5e");
    }
    /* Equal ids: the first of them, whatever the order. */
    const char *twice[] = {"b", "a", "a"}, *other[] = {"a", "a", "b"};
    size_t o = node_route_owner(trace, twice, 3);
    size_t p = node_route_owner(trace, other, 3);
    CHECK(o == 0 || o == 1);
    CHECK(p == 0 || p == 2);
    CHECK((o == 1) == (p == 0));
}

static void test_owner_permutation(void)
{
    struct sm_rng rng;
    sm_rng_seed(&rng, check_seed());
    char ids[8][ID_LEN + 1];
    const char *members[8], *shuffled[8];
    random_members(&rng, ids, members, 8);
    for (int t = 0; t < 2000; t++) {
        uint8_t trace[16];
        random_trace(&rng, trace);
        size_t n = 1 + (size_t)sm_rng_below(&rng, 8);
        const char *owner = members[node_route_owner(trace, members, n)];
        memcpy(shuffled, members, n * sizeof *members);
        for (int round = 0; round < 4; round++) {
            for (size_t i = n; i > 1; i--) {
                size_t j = (size_t)sm_rng_below(&rng, i);
                const char *x = shuffled[i - 1];
                shuffled[i - 1] = shuffled[j];
                shuffled[j] = x;
            }
            REQUIRE(shuffled[node_route_owner(trace, shuffled, n)] == owner);
        }
    }
}

/* Counts owners of TRACES random traces among @members; returns the largest
 * relative deviation of a share from 1/n. */
static double balance(struct sm_rng *rng, const char **members, size_t n)
{
    long count[8] = {0};
    for (int t = 0; t < TRACES; t++) {
        uint8_t trace[16];
        random_trace(rng, trace);
        count[node_route_owner(trace, members, n)]++;
    }
    double worst = 0;
    printf("# %zu members:", n);
    for (size_t i = 0; i < n; i++) {
        double share = (double)count[i] / TRACES;
        double dev = share * (double)n - 1;
        worst = dev < 0 ? (-dev > worst ? -dev : worst)
                        : (dev > worst ? dev : worst);
        printf(" %.4f", share);
    }
    printf(" (worst %.2f%% off 1/n)\n", 100 * worst);
    return worst;
}

static void test_balance(void)
{
    struct sm_rng rng;
    sm_rng_seed(&rng, check_seed());
    char ids[5][ID_LEN + 1];
    const char *members[5];
    for (size_t n = 3; n <= 5; n += 2) {
        random_members(&rng, ids, members, n);
        CHECK(balance(&rng, members, n) < 0.03);
    }
    /* Ids that differ in one character spread as well. */
    const char *alike[] = {"peer-1", "peer-2", "peer-3", "peer-4", "peer-5"};
    CHECK(balance(&rng, alike, 3) < 0.03);
    CHECK(balance(&rng, alike, 5) < 0.03);
}

static void test_leave(void)
{
    struct sm_rng rng;
    sm_rng_seed(&rng, check_seed());
    char ids[5][ID_LEN + 1];
    const char *members[5];
    random_members(&rng, ids, members, 5);
    for (size_t gone = 0; gone < 5; gone++) {
        const char *rest[4];
        for (size_t i = 0, k = 0; i < 5; i++) {
            if (i != gone) {
                rest[k++] = members[i];
            }
        }
        long moved = 0, stayed_wrong = 0, to[4] = {0};
        for (int t = 0; t < TRACES; t++) {
            uint8_t trace[16];
            random_trace(&rng, trace);
            const char *before = members[node_route_owner(trace, members, 5)];
            size_t after = node_route_owner(trace, rest, 4);
            if (before == members[gone]) {
                moved++;
                to[after]++;
            } else if (rest[after] != before) {
                stayed_wrong++;
            }
        }
        /* Only the leaving member's traces move, evenly over the rest. */
        CHECK_EQ(stayed_wrong, 0);
        CHECK_NEAR((double)moved / TRACES, 0.2, 0.2 * 0.03);
        for (int k = 0; k < 4; k++) {
            CHECK_NEAR((double)to[k] / (double)moved, 0.25, 0.25 * 0.08);
        }
        if (gone == 0) {
            printf(
                "# leave 5 -> 4: %.4f of traces moved, to each other "
                "member %.3f %.3f %.3f %.3f of them\n",
                (double)moved / TRACES, (double)to[0] / (double)moved,
                (double)to[1] / (double)moved, (double)to[2] / (double)moved,
                (double)to[3] / (double)moved);
        }
    }
}

static void test_join(void)
{
    struct sm_rng rng;
    sm_rng_seed(&rng, check_seed());
    for (size_t n = 3; n <= 5; n += 2) {
        char ids[6][ID_LEN + 1];
        const char *members[6];
        random_members(&rng, ids, members, n + 1); /* the last one joins */
        long moved = 0, elsewhere = 0, from[5] = {0};
        for (int t = 0; t < TRACES; t++) {
            uint8_t trace[16];
            random_trace(&rng, trace);
            size_t before = node_route_owner(trace, members, n);
            size_t after = node_route_owner(trace, members, n + 1);
            if (after != before) {
                moved++;
                from[before]++;
                elsewhere += after != n;
            }
        }
        /* Moved traces all go to the new member, ~1/(n+1) of them, taken
         * from every member alike. */
        CHECK_EQ(elsewhere, 0);
        double expect = 1.0 / (double)(n + 1);
        CHECK_NEAR((double)moved / TRACES, expect, expect * 0.03);
        for (size_t k = 0; k < n; k++) {
            CHECK_NEAR((double)from[k] / (double)moved, 1.0 / (double)n,
                       0.08 / (double)n);
        }
        printf(
            "# join %zu -> %zu: %.4f of traces moved (1/%zu = %.4f), all "
            "to the new member\n",
            n, n + 1, (double)moved / TRACES, n + 1, expect);
    }
}

/* ---- Span batches ---------------------------------------------------------
 */

static const char *const pool[] = {"frontend", "cart",          "checkout",
                                   "",         "GET /api/cart", "10.0.0.7:8080",
                                   "redis",    "pod-a",         "pod-b",
                                   "/api/:id", "Cart/Add"};
#define POOL_N (sizeof pool / sizeof pool[0])

/* Random spans with strings kept in @store (at least 4 * n * 24 bytes). */
static void random_spans(struct sm_rng *rng,
                         struct cbn_span *v,
                         size_t n,
                         char *store)
{
    for (size_t i = 0; i < n; i++) {
        struct cbn_span *s = &v[i];
        memset(s, 0, sizeof *s);
        random_trace(rng, s->trace_id);
        sm_put_le64(s->span_id, sm_rng_u64(rng));
        if (sm_rng_below(rng, 4) != 0) {
            sm_put_le64(s->parent_id, sm_rng_u64(rng));
        }
        s->start_ns = sm_rng_u64(rng) >> (sm_rng_below(rng, 64));
        uint64_t d = sm_rng_u64(rng) >> (sm_rng_below(rng, 64));
        s->end_ns = s->start_ns + (d > UINT64_MAX - s->start_ns ? 0 : d);
        s->kind = (enum cbn_span_kind)sm_rng_below(rng, 6);
        s->error = (int)sm_rng_below(rng, 2);
        const char **fields[4] = {&s->service, &s->instance, &s->operation,
                                  &s->peer};
        for (int f = 0; f < 4; f++) {
            char *mine = store + (4 * i + (size_t)f) * 24;
            if (sm_rng_below(rng, 3) == 0) {
                /* A fresh string, sometimes long enough for a two-byte
                 * length. */
                size_t len = 1 + (size_t)sm_rng_below(rng, 22);
                for (size_t k = 0; k < len; k++) {
                    mine[k] = (char)(0x20 + sm_rng_below(rng, 0xdf));
                }
                mine[len] = '\0';
                *fields[f] = mine;
            } else {
                *fields[f] = pool[sm_rng_below(rng, POOL_N)];
            }
        }
        if (s->service[0] == '\0') {
            s->service = "svc";
        }
    }
}

static void check_same(const struct cbn_span *a, const struct cbn_span *b)
{
    CHECK(memcmp(a->trace_id, b->trace_id, 16) == 0);
    CHECK(memcmp(a->span_id, b->span_id, 8) == 0);
    CHECK(memcmp(a->parent_id, b->parent_id, 8) == 0);
    CHECK(a->start_ns == b->start_ns);
    CHECK(a->end_ns == b->end_ns);
    CHECK_EQ(a->kind, b->kind);
    CHECK_EQ(a->error, b->error);
    CHECK_STR(a->service, b->service);
    CHECK_STR(a->instance, b->instance);
    CHECK_STR(a->operation, b->operation);
    CHECK_STR(a->peer, b->peer);
}

/* Encodes @v[0..n) through an array of pointers. */
static int encode(const struct cbn_span *v,
                  size_t n,
                  uint8_t **buf,
                  size_t *len)
{
    const struct cbn_span **p = malloc((n ? n : 1) * sizeof *p);
    SM_ASSERT(p != NULL);
    for (size_t i = 0; i < n; i++) {
        p[i] = &v[i];
    }
    int rv = node_span_batch_encode(p, n, buf, len);
    free(p);
    return rv;
}

static void test_round_trip(void)
{
    struct sm_rng rng;
    sm_rng_seed(&rng, check_seed());
    enum { MAX_N = 300 };
    struct cbn_span *v = malloc(MAX_N * sizeof *v);
    char *store = malloc(MAX_N * 4 * 24);
    REQUIRE(v != NULL && store != NULL);
    struct node_spans out;
    node_spans_init(&out, 0);
    char err[SM_ERRMSG_SIZE] = "";
    for (int round = 0; round < 200; round++) {
        size_t n = round < 3 ? (size_t)round : sm_rng_below(&rng, MAX_N + 1);
        random_spans(&rng, v, n, store);
        uint8_t *buf;
        size_t len;
        REQUIRE_OK(encode(v, n, &buf, &len));
        size_t n0 = out.n;
        int rv = node_span_batch_decode(buf, len, &out, err);
        if (rv != SM_OK) {
            printf("# %s\n", err);
        }
        REQUIRE_OK(rv);
        REQUIRE_EQ(out.n, n0 + n);
        for (size_t i = 0; i < n; i++) {
            check_same(&out.v[n0 + i], &v[i]);
        }
        /* Canonical: the decoded spans encode to the same bytes. */
        uint8_t *again;
        size_t again_len;
        REQUIRE_OK(encode(out.v + n0, n, &again, &again_len));
        CHECK(again_len == len && memcmp(again, buf, len) == 0);
        sm_free(again);
        sm_free(buf);
        if (out.n > 2000) {
            node_spans_reset(&out);
        }
    }
    node_spans_free(&out);
    free(store);
    free(v);
}

static void test_error_flag(void)
{
    struct cbn_span s = {.service = "a",
                         .instance = "",
                         .operation = "op",
                         .peer = "",
                         .error = 7,
                         .kind = CBN_SPAN_CLIENT};
    uint8_t *buf;
    size_t len;
    REQUIRE_OK(encode(&s, 1, &buf, &len));
    struct node_spans out;
    node_spans_init(&out, 0);
    char err[SM_ERRMSG_SIZE];
    REQUIRE_OK(node_span_batch_decode(buf, len, &out, err));
    CHECK_EQ(out.v[0].error, 1); /* a flag */
    CHECK_EQ(out.v[0].kind, CBN_SPAN_CLIENT);
    node_spans_free(&out);
    sm_free(buf);
}

static void test_strings_once(void)
{
    struct cbn_span v[100];
    for (int i = 0; i < 100; i++) {
        v[i] = (struct cbn_span){.service = i % 2 ? "frontend" : "cart",
                                 .instance = "",
                                 .operation = "GET /api/cart",
                                 .peer = i % 2 ? "cart" : "",
                                 .start_ns = 10,
                                 .end_ns = 20};
    }
    uint8_t *buf;
    size_t len;
    REQUIRE_OK(encode(v, 100, &buf, &len));
    /* "SPB" 1 | 100 | 4 strings | "frontend" "" "GET /api/cart" "cart". */
    REQUIRE(len > 6);
    CHECK(memcmp(buf, "SPB\x01", 4) == 0);
    CHECK_EQ(buf[4], 100);
    CHECK_EQ(buf[5], 4);
    CHECK(memcmp(buf + 6,
                 "\x04"
                 "cart\x00\x0dGET /api/cart\x08"
                 "frontend",
                 5 + 1 + 14 + 9) == 0);
    CHECK_EQ(len, 6 + 29 + 100 * 54);
    sm_free(buf);
}

/* A batch with spans in @out, to check that failures leave it alone. */
static void prefill(struct node_spans *out, struct cbn_span *v, char *store)
{
    struct sm_rng rng;
    sm_rng_seed(&rng, 7);
    random_spans(&rng, v, 3, store);
    uint8_t *buf;
    size_t len;
    char err[SM_ERRMSG_SIZE];
    SM_ASSERT(encode(v, 3, &buf, &len) == SM_OK);
    SM_ASSERT(node_span_batch_decode(buf, len, out, err) == SM_OK);
    sm_free(buf);
}

static void check_prefill(const struct node_spans *out,
                          const struct cbn_span *v)
{
    REQUIRE_EQ(out->n, 3);
    for (size_t i = 0; i < 3; i++) {
        check_same(&out->v[i], &v[i]);
    }
}

static void test_truncations(void)
{
    struct sm_rng rng;
    sm_rng_seed(&rng, check_seed());
    struct cbn_span v[40], pre[3];
    static char store[40 * 4 * 24], pre_store[3 * 4 * 24];
    random_spans(&rng, v, 40, store);
    uint8_t *buf;
    size_t len;
    REQUIRE_OK(encode(v, 40, &buf, &len));
    struct node_spans out;
    node_spans_init(&out, 0);
    prefill(&out, pre, pre_store);
    char err[SM_ERRMSG_SIZE];
    for (size_t cut = 0; cut < len; cut++) {
        err[0] = '\0';
        /* An exact-size copy, so ASan sees any read past the end. */
        uint8_t *part = malloc(cut ? cut : 1);
        REQUIRE(part != NULL);
        memcpy(part, buf, cut);
        int rv = node_span_batch_decode(part, cut, &out, err);
        free(part);
        if (rv != SM_EMALFORMED) {
            check__fail(__FILE__, __LINE__, 1, "cut at %zu of %zu: %s", cut,
                        len, sm_errname(rv));
        }
        CHECK(strncmp(err, "span batch: ", 12) == 0);
        REQUIRE_EQ(out.n, 3);
    }
    check_prefill(&out, pre);
    /* One byte more is as wrong as one less. */
    uint8_t *longer = malloc(len + 1);
    REQUIRE(longer != NULL);
    memcpy(longer, buf, len);
    longer[len] = 0;
    CHECK_EQ(node_span_batch_decode(longer, len + 1, &out, err), SM_EMALFORMED);
    CHECK_STR(err, "span batch: 1 trailing bytes");
    CHECK_OK(node_span_batch_decode(longer, len, &out, err));
    CHECK_EQ(out.n, 43);
    free(longer);
    node_spans_free(&out);
    sm_free(buf);
}

/* Builds a one-span batch by hand: @table holds @n_strings strings of the
 * given lengths, the span its four string ids. */
struct hand
{
    uint8_t b[512];
    size_t len;
};

static void hand_put(struct hand *h, const void *p, size_t n)
{
    SM_ASSERT(h->len + n <= sizeof h->b);
    memcpy(h->b + h->len, p, n);
    h->len += n;
}

static void hand_byte(struct hand *h, uint8_t v)
{
    hand_put(h, &v, 1);
}

/* "SPB" 1 | 1 span | the strings | a span (start 5, end @end, @kind,
 * @error) | the ids. */
static void hand_batch(struct hand *h,
                       const char *const *strings,
                       const size_t *lens,
                       size_t n_strings,
                       uint64_t end,
                       uint8_t kind,
                       uint8_t error,
                       const uint8_t ids[4])
{
    h->len = 0;
    hand_put(h, "SPB\x01", 4);
    hand_byte(h, 1);
    hand_byte(h, (uint8_t)n_strings);
    for (size_t i = 0; i < n_strings; i++) {
        hand_byte(h, (uint8_t)lens[i]);
        hand_put(h, strings[i], lens[i]);
    }
    uint8_t fixed[50] = {1}; /* trace id 01 00 ... */
    sm_put_le64(fixed + 32, 5);
    sm_put_le64(fixed + 40, end);
    fixed[48] = kind;
    fixed[49] = error;
    hand_put(h, fixed, sizeof fixed);
    hand_put(h, ids, 4);
}

static int hand_decode(const struct hand *h, char *err)
{
    struct node_spans out;
    node_spans_init(&out, 0);
    int rv = node_span_batch_decode(h->b, h->len, &out, err);
    SM_ASSERT(rv == SM_OK ? out.n == 1 : out.n == 0);
    node_spans_free(&out);
    return rv;
}

static void test_malformed(void)
{
    struct hand h;
    char err[SM_ERRMSG_SIZE];
    const char *ab[] = {"a", "b"};
    const size_t ones[] = {1, 1};
    const uint8_t z[4] = {0, 0, 0, 0}, zb[4] = {0, 1, 0, 0};

    /* The hand-made batch itself is valid. */
    hand_batch(&h, ab, ones, 2, 9, CBN_SPAN_SERVER, 1, zb);
    CHECK_OK(hand_decode(&h, err));
    hand_batch(&h, ab, ones, 1, 5, CBN_SPAN_CONSUMER, 0, z);
    CHECK_OK(hand_decode(&h, err));

    hand_batch(&h, ab, ones, 1, 4, CBN_SPAN_SERVER, 0, z);
    CHECK_EQ(hand_decode(&h, err), SM_EMALFORMED);
    CHECK_STR(err, "span batch: span 0 ends before it starts");
    hand_batch(&h, ab, ones, 1, 9, 6, 0, z);
    CHECK_EQ(hand_decode(&h, err), SM_EMALFORMED);
    CHECK_STR(err, "span batch: span 0: unknown kind 6");
    hand_batch(&h, ab, ones, 1, 9, 0, 2, z);
    CHECK_EQ(hand_decode(&h, err), SM_EMALFORMED);

    /* Strings: empty service, NUL, repeats, order, unused, past the end. */
    const char *e[] = {"", "a"};
    const size_t e_lens[] = {0, 1};
    hand_batch(&h, e, e_lens, 2, 9, 0, 0, zb);
    CHECK_EQ(hand_decode(&h, err), SM_EMALFORMED);
    CHECK_STR(err, "span batch: span 0: empty service");
    const uint8_t bz[4] = {1, 0, 0, 0};
    const char *e2[] = {"a", ""};
    hand_batch(&h, e2, e_lens + 1, 1, 9, 0, 0, z);
    CHECK_OK(hand_decode(&h, err));
    const size_t lens_a_empty[] = {1, 0};
    hand_batch(&h, e2, lens_a_empty, 2, 9, 0, 0, zb); /* instance "" */
    CHECK_OK(hand_decode(&h, err));
    const char *nul[] = {"a\0b"};
    const size_t three[] = {3};
    hand_batch(&h, nul, three, 1, 9, 0, 0, z);
    CHECK_EQ(hand_decode(&h, err), SM_EMALFORMED);
    CHECK_STR(err, "span batch: string 0 holds a NUL byte");
    const char *aa[] = {"a", "a"};
    hand_batch(&h, aa, ones, 2, 9, 0, 0, zb);
    CHECK_EQ(hand_decode(&h, err), SM_EMALFORMED);
    CHECK_STR(err, "span batch: string 1 is a repeat");
    hand_batch(&h, ab, ones, 2, 9, 0, 0, bz);
    CHECK_EQ(hand_decode(&h, err), SM_EMALFORMED);
    hand_batch(&h, ab, ones, 2, 9, 0, 0, z);
    CHECK_EQ(hand_decode(&h, err), SM_EMALFORMED);
    CHECK_STR(err, "span batch: 1 unused strings");
    const uint8_t past[4] = {0, 1, 2, 0};
    hand_batch(&h, ab, ones, 2, 9, 0, 0, past);
    CHECK_EQ(hand_decode(&h, err), SM_EMALFORMED);
    /* Five strings cannot serve one span. */
    const char *five[] = {"a", "b", "c", "d", "e"};
    const size_t five_lens[] = {1, 1, 1, 1, 1};
    const uint8_t ids4[4] = {0, 1, 2, 3};
    hand_batch(&h, five, five_lens, 5, 9, 0, 0, ids4);
    CHECK_EQ(hand_decode(&h, err), SM_EMALFORMED);

    /* Varints: one byte too many, and counts the bytes cannot hold. */
    hand_batch(&h, ab, ones, 1, 9, 0, 0, z);
    struct hand o = {.len = 0};
    hand_put(&o, h.b, 4);
    hand_put(&o, "\x81\x00", 2); /* 1 in two bytes */
    hand_put(&o, h.b + 5, h.len - 5);
    CHECK_EQ(hand_decode(&o, err), SM_EMALFORMED);
    CHECK_STR(err, "span batch: bad span count");
    o.len = 0;
    hand_put(&o, h.b, h.len - 1);
    hand_put(&o, "\x80\x00", 2); /* the last id, 0, in two bytes */
    CHECK_EQ(hand_decode(&o, err), SM_EMALFORMED);
    o.len = 0;
    hand_put(&o, "SPB\x01\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01\x00", 15);
    CHECK_EQ(hand_decode(&o, err), SM_EMALFORMED); /* 2^63 spans */
    o.len = 0;
    hand_put(&o, "SPB\x01\x80\x80\x80\x80\x80\x80\x80\x80\x80\x02", 14);
    CHECK_EQ(hand_decode(&o, err), SM_EMALFORMED); /* past 64 bits */
    o.len = 0;
    hand_put(&o, "SPB\x01\x02\x01\x01x", 8);
    CHECK_EQ(hand_decode(&o, err), SM_EMALFORMED);
    CHECK_STR(err, "span batch: 2 spans cannot fit in 3 bytes");

    /* Magic and version. */
    o = h;
    o.b[0] = 'X';
    CHECK_EQ(hand_decode(&o, err), SM_EMALFORMED);
    CHECK_STR(err, "span batch: not a span batch");
    o = h;
    o.b[3] = 2;
    CHECK_EQ(hand_decode(&o, err), SM_EUNSUPPORTED);
    CHECK_STR(err, "span batch: version 2 (this peer reads 1)");
    o.b[3] = 0;
    CHECK_EQ(hand_decode(&o, err), SM_EUNSUPPORTED);
}

static void test_limits(void)
{
    char err[SM_ERRMSG_SIZE];
    struct node_spans out;
    node_spans_init(&out, 0);
    /* NODE_SPAN_BATCH_MAX + 1 spans, with the bytes to hold them. */
    size_t len = 4 + 3 + 1 + (NODE_SPAN_BATCH_MAX + 1) * 54u;
    uint8_t *buf = calloc(len, 1);
    REQUIRE(buf != NULL);
    memcpy(buf, "SPB\x01\x81\x80\x04", 7);
    CHECK_EQ(node_span_batch_decode(buf, len, &out, err), SM_ETOOBIG);
    CHECK_STR(err, "span batch: 65537 spans (at most 65536)");
    /* A string of NODE_SPAN_STRING_MAX + 1 bytes. */
    memcpy(buf, "SPB\x01\x01\x01\x80\x80\x04", 9);
    memset(buf + 9, 'x', NODE_SPAN_STRING_MAX + 1);
    CHECK_EQ(node_span_batch_decode(buf, 9 + NODE_SPAN_STRING_MAX + 1 + 54,
                                    &out, err),
             SM_ETOOBIG);
    CHECK_STR(err, "span batch: string 0 has 65536 bytes");
    CHECK_EQ(out.n, 0);

    /* The encoder refuses the same. */
    struct cbn_span s = {
        .service = "a", .instance = "", .operation = "", .peer = ""};
    const struct cbn_span **many =
        malloc((NODE_SPAN_BATCH_MAX + 1) * sizeof *many);
    REQUIRE(many != NULL);
    for (size_t i = 0; i <= NODE_SPAN_BATCH_MAX; i++) {
        many[i] = &s;
    }
    uint8_t *enc = NULL;
    size_t enc_len = 0;
    CHECK_EQ(
        node_span_batch_encode(many, NODE_SPAN_BATCH_MAX + 1, &enc, &enc_len),
        SM_ETOOBIG);
    /* Exactly the limit is fine, and decodes. */
    REQUIRE_OK(
        node_span_batch_encode(many, NODE_SPAN_BATCH_MAX, &enc, &enc_len));
    CHECK_OK(node_span_batch_decode(enc, enc_len, &out, err));
    CHECK_EQ(out.n, NODE_SPAN_BATCH_MAX);
    sm_free(enc);
    enc = NULL;
    memset(buf, 'y', NODE_SPAN_STRING_MAX + 1);
    buf[NODE_SPAN_STRING_MAX + 1] = '\0';
    s.operation = (const char *)buf;
    CHECK_EQ(node_span_batch_encode(many, 1, &enc, &enc_len), SM_ETOOBIG);
    buf[NODE_SPAN_STRING_MAX] = '\0';
    REQUIRE_OK(node_span_batch_encode(many, 1, &enc, &enc_len));
    node_spans_reset(&out);
    CHECK_OK(node_span_batch_decode(enc, enc_len, &out, err));
    CHECK_EQ(strlen(out.v[0].operation), NODE_SPAN_STRING_MAX);
    sm_free(enc);
    enc = NULL;

    /* Spans that are not whole. */
    struct cbn_span bad = s;
    bad.operation = "op";
    bad.service = "";
    many[0] = &bad;
    CHECK_EQ(node_span_batch_encode(many, 1, &enc, &enc_len), SM_EINVAL);
    bad.service = "a";
    bad.peer = NULL;
    CHECK_EQ(node_span_batch_encode(many, 1, &enc, &enc_len), SM_EINVAL);
    bad.peer = "";
    bad.start_ns = 2;
    bad.end_ns = 1;
    CHECK_EQ(node_span_batch_encode(many, 1, &enc, &enc_len), SM_EINVAL);
    bad.end_ns = 2;
    bad.kind = (enum cbn_span_kind)6;
    CHECK_EQ(node_span_batch_encode(many, 1, &enc, &enc_len), SM_EINVAL);
    CHECK(enc == NULL);
    free(many);
    free(buf);
    node_spans_free(&out);
}

static void test_arena_limit(void)
{
    static char big[4001];
    memset(big, 'q', 4000);
    struct cbn_span v[2] = {
        {.service = "a", .instance = "", .operation = "x", .peer = ""},
        {.service = "b", .instance = "", .operation = big, .peer = ""}};
    uint8_t *buf;
    size_t len;
    REQUIRE_OK(encode(v, 2, &buf, &len));
    struct node_spans out;
    node_spans_init(&out, 2048);
    char err[SM_ERRMSG_SIZE];
    CHECK_EQ(node_span_batch_decode(buf, 4 + 1 + 1, &out, err), SM_EMALFORMED);
    CHECK_EQ(node_span_batch_decode(buf, len, &out, err), SM_ETOOBIG);
    CHECK_STR(err, "span batch: over the batch's byte limit");
    CHECK_EQ(out.n, 0);
    node_spans_free(&out);
    sm_free(buf);
}

static void test_out_of_memory(void)
{
    struct sm_rng rng;
    sm_rng_seed(&rng, check_seed());
    enum { N = 600 }; /* past the first growth of the span array (256) */
    static struct cbn_span v[N];
    static char store[N * 4 * 24];
    random_spans(&rng, v, N, store);
    uint8_t *ref;
    size_t ref_len;
    REQUIRE_OK(encode(v, N, &ref, &ref_len));
    for (int repeat = 1; repeat >= -1; repeat -= 2) {
        int k = 0;
        for (;; k++) {
            REQUIRE(k < 100);
            check_heap_install();
            check_heap_fault(k, repeat);
            uint8_t *buf = NULL;
            size_t len = 0;
            const struct cbn_span *p[N];
            for (size_t i = 0; i < N; i++) {
                p[i] = &v[i];
            }
            int rv = node_span_batch_encode(p, N, &buf, &len);
            if (rv == SM_OK) {
                CHECK(len == ref_len && memcmp(buf, ref, len) == 0);
                sm_free(buf);
            } else {
                CHECK_EQ(rv, SM_ENOMEM);
                CHECK(buf == NULL);
            }
            long calls = check_heap_calls();
            check_heap_uninstall();
            if (rv == SM_OK) {
                CHECK(calls == k);
                break;
            }
        }
        CHECK(k >= 3);
        for (k = 0;; k++) {
            REQUIRE(k < 100);
            check_heap_install();
            struct node_spans out;
            node_spans_init(&out, 0);
            check_heap_fault(k, repeat);
            char err[SM_ERRMSG_SIZE];
            int rv = node_span_batch_decode(ref, ref_len, &out, err);
            if (rv == SM_OK) {
                CHECK_EQ(out.n, N);
                check_same(&out.v[N - 1], &v[N - 1]);
            } else {
                CHECK_EQ(rv, SM_ENOMEM);
                CHECK_STR(err, "span batch: out of memory");
                CHECK_EQ(out.n, 0);
            }
            long calls = check_heap_calls();
            node_spans_free(&out);
            check_heap_uninstall();
            if (rv == SM_OK) {
                CHECK(calls == k);
                break;
            }
        }
        CHECK(k >= 4); /* table, ids, arena chunks, span array growth */
    }
    sm_free(ref);
}

/* The seed corpus of fuzz_span_batch is written by an independent
 * implementation of the format (tests/fuzz/gen_span_batch_corpus.py). */
static void test_seed_corpus(void)
{
    static const struct
    {
        const char *name;
        int rv;
        size_t n;
    } files[] = {
        {"one", SM_OK, 1},
        {"many", SM_OK, 5},
        {"empty", SM_OK, 0},
        {"bad-version", SM_EUNSUPPORTED, 0},
        {"truncated", SM_EMALFORMED, 0},
        {"trailing", SM_EMALFORMED, 0},
        {"bad-kind", SM_EMALFORMED, 0},
        {"repeat-string", SM_EMALFORMED, 0},
        {"huge-count", SM_EMALFORMED, 0},
    };
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/tests/fuzz/corpus/span_batch/%s",
                 SM_SOURCE_ROOT, files[i].name);
        FILE *f = fopen(path, "rb");
        REQUIRE(f != NULL);
        static uint8_t buf[4096];
        size_t len = fread(buf, 1, sizeof buf, f);
        fclose(f);
        struct node_spans out;
        node_spans_init(&out, 0);
        char err[SM_ERRMSG_SIZE] = "";
        int rv = node_span_batch_decode(buf, len, &out, err);
        if (rv != files[i].rv) {
            check__fail(__FILE__, __LINE__, 0, "%s: %s (%s)", files[i].name,
                        sm_errname(rv), err);
        }
        CHECK_EQ(out.n, files[i].n);
        if (rv == SM_OK) {
            uint8_t *again;
            size_t again_len;
            REQUIRE_OK(encode(out.v, out.n, &again, &again_len));
            CHECK(again_len == len && memcmp(again, buf, len) == 0);
            sm_free(again);
        }
        if (strcmp(files[i].name, "one") == 0) {
            const struct cbn_span *s = &out.v[0];
            CHECK_STR(s->service, "frontend");
            CHECK_STR(s->instance, "pod-a");
            CHECK_STR(s->operation, "GET /api/cart");
            CHECK_STR(s->peer, "cart");
            CHECK_EQ(s->kind, CBN_SPAN_CLIENT);
            CHECK_EQ(s->error, 1);
            CHECK(s->start_ns == 1700000000000000000u);
            CHECK(s->end_ns == 1700000000012500000u);
            CHECK_EQ(s->trace_id[0], 0xdd);
            CHECK_EQ(s->span_id[7], 0x08);
            CHECK_EQ(s->parent_id[0], 0);
        }
        node_spans_free(&out);
    }
}

static const struct check_test tests[] = {
    {"owner: fixed owners, empty and one member", test_owner_fixed},
    {"owner: same for any order of the members", test_owner_permutation},
    {"owner: even shares over 3 and 5 members", test_balance},
    {"owner: a member leaves, only its traces move", test_leave},
    {"owner: a member joins, 1/(n+1) move to it", test_join},
    {"batch: random batches round-trip, canonical", test_round_trip},
    {"batch: error is a flag", test_error_flag},
    {"batch: each string stored once, first-use order", test_strings_once},
    {"batch: every truncation and a trailing byte refused", test_truncations},
    {"batch: malformed batches refused with a reason", test_malformed},
    {"batch: span and string limits", test_limits},
    {"batch: the arena's limit", test_arena_limit},
    {"batch: out of memory at every allocation", test_out_of_memory},
    {"batch: the seed corpus", test_seed_corpus},
};

CHECK_MAIN(tests, NULL, NULL)
