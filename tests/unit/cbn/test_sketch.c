/* Tests for the DDSketch: relative accuracy on skewed and bimodal data,
 * exact merging, collapsing, encoding, hostile input, out-of-memory paths. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/err.h"
#include "base/rng.h"
#include "cbn/cbn.h"
#include "check.h"

#define ALPHA    0.01
#define N_VALUES 100000

static const double quantiles[] = {0.0, 0.01, 0.1,  0.25,  0.5,    0.75,
                                   0.9, 0.95, 0.99, 0.999, 0.9999, 1.0};
#define N_QUANTILES (sizeof quantiles / sizeof quantiles[0])

static double values[N_VALUES];

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Checks every quantile of @sk against the exact order statistic of the
 * first @n entries of values[] (which this sorts). */
static void check_accuracy(const struct cbn_sketch *sk,
                           size_t n,
                           double accuracy,
                           const char *what)
{
    qsort(values, n, sizeof values[0], cmp_double);
    for (size_t i = 0; i < N_QUANTILES; i++) {
        double q = quantiles[i];
        double exact = values[(size_t)(q * (double)(n - 1))];
        double got = cbn_sketch_quantile(sk, q);
        double tol = accuracy * fabs(exact) * (1 + 1e-9) + 1e-12;
        if (!(fabs(got - exact) <= tol)) {
            check__fail(__FILE__, __LINE__, 0,
                        "%s: q=%g exact=%.9g sketch=%.9g rel.err=%.3g", what, q,
                        exact, got, fabs(got - exact) / fabs(exact));
        }
    }
}

static struct cbn_sketch *fill(size_t n)
{
    struct cbn_sketch *sk;
    REQUIRE_OK(cbn_sketch_new(ALPHA, CBN_SKETCH_DEFAULT_MAX_BINS, &sk));
    for (size_t i = 0; i < n; i++) {
        REQUIRE_OK(cbn_sketch_add(sk, values[i], 1));
    }
    return sk;
}

static void test_empty(void)
{
    struct cbn_sketch *sk = fill(0);
    CHECK_EQ(cbn_sketch_count(sk), 0);
    CHECK(isnan(cbn_sketch_quantile(sk, 0.5)));
    CHECK(isnan(cbn_sketch_sum(sk)));
    cbn_sketch_free(sk);
}

static void test_lognormal(void)
{
    /* Latency-like: lognormal around 5 ms with a heavy right tail. */
    struct sm_rng r;
    sm_rng_seed(&r, check_seed());
    for (size_t i = 0; i < N_VALUES; i++) {
        values[i] = 5e6 * exp(1.2 * sm_rng_normal(&r));
    }
    struct cbn_sketch *sk = fill(N_VALUES);
    CHECK_EQ(cbn_sketch_count(sk), N_VALUES);
    check_accuracy(sk, N_VALUES, ALPHA, "lognormal");
    cbn_sketch_free(sk);
}

static void test_pareto(void)
{
    /* Extremely skewed: Pareto with shape 1.1 spans many decades. */
    struct sm_rng r;
    sm_rng_seed(&r, check_seed() + 1);
    for (size_t i = 0; i < N_VALUES; i++) {
        values[i] = 1e-3 / pow(1.0 - sm_rng_double(&r), 1.0 / 1.1);
    }
    struct cbn_sketch *sk = fill(N_VALUES);
    check_accuracy(sk, N_VALUES, ALPHA, "pareto");
    cbn_sketch_free(sk);
}

static void test_bimodal(void)
{
    /* A cache hit/miss mix: 90% around 0.2 ms, 10% around 40 ms. */
    struct sm_rng r;
    sm_rng_seed(&r, check_seed() + 2);
    for (size_t i = 0; i < N_VALUES; i++) {
        int miss = sm_rng_double(&r) < 0.1;
        double mean = miss ? 40.0 : 0.2, sd = miss ? 8.0 : 0.03;
        double v = mean + sd * sm_rng_normal(&r);
        values[i] = v > 0.01 ? v : 0.01;
    }
    struct cbn_sketch *sk = fill(N_VALUES);
    check_accuracy(sk, N_VALUES, ALPHA, "bimodal");
    cbn_sketch_free(sk);
}

static void test_merge(void)
{
    /* Values spread over 16 replicas' sketches, merged, must be as accurate
     * as one sketch of everything, and in fact identical to it. */
    struct sm_rng r;
    sm_rng_seed(&r, check_seed() + 3);
    enum { PARTS = 16 };
    struct cbn_sketch *parts[PARTS];
    for (int p = 0; p < PARTS; p++) {
        REQUIRE_OK(
            cbn_sketch_new(ALPHA, CBN_SKETCH_DEFAULT_MAX_BINS, &parts[p]));
    }
    for (size_t i = 0; i < N_VALUES; i++) {
        /* Replicas differ: replica p is (p + 1) times slower. */
        int p = (int)sm_rng_below(&r, PARTS);
        values[i] = (p + 1) * 1e5 * exp(0.8 * sm_rng_normal(&r));
        REQUIRE_OK(cbn_sketch_add(parts[p], values[i], 1));
    }
    struct cbn_sketch *merged = fill(0);
    for (int p = 0; p < PARTS; p++) {
        REQUIRE_OK(cbn_sketch_merge(merged, parts[p]));
    }
    struct cbn_sketch *whole = fill(N_VALUES);
    CHECK_EQ(cbn_sketch_count(merged), N_VALUES);
    for (size_t i = 0; i < N_QUANTILES; i++) {
        CHECK(cbn_sketch_quantile(merged, quantiles[i]) ==
              cbn_sketch_quantile(whole, quantiles[i]));
    }
    CHECK_NEAR(cbn_sketch_sum(merged), cbn_sketch_sum(whole),
               1e-9 * cbn_sketch_sum(whole));
    check_accuracy(merged, N_VALUES, ALPHA, "merged");
    for (int p = 0; p < PARTS; p++) {
        cbn_sketch_free(parts[p]);
    }
    cbn_sketch_free(merged);
    cbn_sketch_free(whole);
}

static void test_signs_and_zero(void)
{
    struct sm_rng r;
    sm_rng_seed(&r, check_seed() + 4);
    for (size_t i = 0; i < N_VALUES; i++) {
        double u = sm_rng_double(&r);
        values[i] = u < 0.2 ? 0.0
                            : (u < 0.5 ? -exp(sm_rng_normal(&r))
                                       : exp(2 * sm_rng_normal(&r)));
    }
    struct cbn_sketch *sk = fill(N_VALUES);
    check_accuracy(sk, N_VALUES, ALPHA, "mixed signs");
    cbn_sketch_free(sk);
}

static void test_collapse_keeps_tail(void)
{
    /* 64 buckets cannot hold 12 decades at 1%: the low end collapses, the
     * tail stays accurate, and memory stays bounded. */
    struct cbn_sketch *sk;
    REQUIRE_OK(cbn_sketch_new(ALPHA, 64, &sk));
    struct sm_rng r;
    sm_rng_seed(&r, check_seed() + 5);
    for (size_t i = 0; i < N_VALUES; i++) {
        values[i] = pow(10.0, -6 + 12 * sm_rng_double(&r));
        REQUIRE_OK(cbn_sketch_add(sk, values[i], 1));
    }
    qsort(values, N_VALUES, sizeof values[0], cmp_double);
    for (double q = 0.995; q < 1.0; q += 0.001) {
        double exact = values[(size_t)(q * (N_VALUES - 1))];
        CHECK_NEAR(cbn_sketch_quantile(sk, q), exact, ALPHA * exact * 1.0001);
    }
    /* Collapsed quantiles are over-estimates, never below the truth. */
    CHECK(cbn_sketch_quantile(sk, 0.5) >= values[N_VALUES / 2]);
    uint8_t *buf;
    size_t len;
    REQUIRE_OK(cbn_sketch_encode(sk, &buf, &len));
    CHECK(len < 64 * 4 + 64);
    sm_free(buf);
    cbn_sketch_free(sk);
}

static void test_invalid(void)
{
    struct cbn_sketch *sk = NULL, *other;
    CHECK_EQ(cbn_sketch_new(0.0, 2048, &sk), SM_EINVAL);
    CHECK_EQ(cbn_sketch_new(1.0, 2048, &sk), SM_EINVAL);
    CHECK_EQ(cbn_sketch_new(NAN, 2048, &sk), SM_EINVAL);
    CHECK_EQ(cbn_sketch_new(0.01, 4, &sk), SM_EINVAL);
    CHECK(sk == NULL);
    sk = fill(0);
    CHECK_EQ(cbn_sketch_add(sk, NAN, 1), SM_EINVAL);
    CHECK_EQ(cbn_sketch_add(sk, INFINITY, 1), SM_EINVAL);
    CHECK_EQ(cbn_sketch_add(sk, 1.0, 0), SM_EINVAL);
    CHECK_OK(cbn_sketch_add(sk, 1.0, UINT64_MAX));
    CHECK_EQ(cbn_sketch_add(sk, 1.0, 1), SM_ERANGE);
    CHECK_EQ(cbn_sketch_count(sk), UINT64_MAX);
    REQUIRE_OK(cbn_sketch_new(0.02, 2048, &other));
    CHECK_EQ(cbn_sketch_merge(sk, other), SM_EINVAL);
    cbn_sketch_free(other);
    cbn_sketch_clear(sk);
    CHECK_EQ(cbn_sketch_count(sk), 0);
    CHECK_OK(cbn_sketch_add(sk, 3.0, 2));
    CHECK_NEAR(cbn_sketch_quantile(sk, 0.5), 3.0, 0.03);
    CHECK(cbn_sketch_quantile(sk, 0.0) == 3.0);
    CHECK(cbn_sketch_quantile(sk, -1.0) == 3.0);
    CHECK(cbn_sketch_quantile(sk, 7.0) == 3.0);
    cbn_sketch_free(sk);
}

static void test_encode_roundtrip(void)
{
    struct sm_rng r;
    sm_rng_seed(&r, check_seed() + 6);
    for (size_t i = 0; i < 5000; i++) {
        values[i] =
            (sm_rng_double(&r) < 0.1 ? -1 : 1) * exp(3 * sm_rng_normal(&r));
    }
    values[0] = 0.0;
    struct cbn_sketch *sk = fill(5000), *back;
    uint8_t *buf;
    size_t len;
    REQUIRE_OK(cbn_sketch_encode(sk, &buf, &len));
    REQUIRE_OK(cbn_sketch_decode(buf, len, 4096, &back));
    CHECK_EQ(cbn_sketch_count(back), 5000);
    for (size_t i = 0; i < N_QUANTILES; i++) {
        CHECK(cbn_sketch_quantile(back, quantiles[i]) ==
              cbn_sketch_quantile(sk, quantiles[i]));
    }
    CHECK(cbn_sketch_sum(back) == cbn_sketch_sum(sk));
    cbn_sketch_free(back);

    /* Every truncation, an extra byte, a wrong magic or version, and a
     * bucket limit below what the input holds are all refused. */
    for (size_t cut = 0; cut < len; cut++) {
        struct cbn_sketch *bad = NULL;
        int rv = cbn_sketch_decode(buf, cut, 4096, &bad);
        CHECK(rv == SM_EMALFORMED);
        CHECK(bad == NULL);
    }
    uint8_t *longer = malloc(len + 1);
    REQUIRE(longer != NULL);
    memcpy(longer, buf, len);
    longer[len] = 0;
    CHECK_EQ(cbn_sketch_decode(longer, len + 1, 4096, &back), SM_EMALFORMED);
    longer[3] = 9;
    CHECK_EQ(cbn_sketch_decode(longer, len, 4096, &back), SM_EUNSUPPORTED);
    longer[0] = 'X';
    CHECK_EQ(cbn_sketch_decode(longer, len, 4096, &back), SM_EMALFORMED);
    CHECK_EQ(cbn_sketch_decode(buf, len, 16, &back), SM_ETOOBIG);
    free(longer);

    struct cbn_sketch *empty = fill(0);
    uint8_t *ebuf;
    size_t elen;
    REQUIRE_OK(cbn_sketch_encode(empty, &ebuf, &elen));
    REQUIRE_OK(cbn_sketch_decode(ebuf, elen, 4096, &back));
    CHECK_EQ(cbn_sketch_count(back), 0);
    cbn_sketch_free(back);
    sm_free(ebuf);
    cbn_sketch_free(empty);
    sm_free(buf);
    cbn_sketch_free(sk);
}

static void test_hostile_counts(void)
{
    /* A header claiming 2^40 buckets in a few bytes must not allocate. */
    uint8_t msg[64] = {'D', 'D', 'S', 1};
    size_t n = 4;
    double f[4] = {0.01, 1.0, 2.0, 3.0};
    memcpy(msg + n, f, sizeof f); /* little-endian host */
    n += sizeof f;
    msg[n++] = 0; /* zero count */
    msg[n++] = 2; /* lo = 1 */
    const uint8_t huge[] = {0x80, 0x80, 0x80, 0x80, 0x80, 0x20};
    memcpy(msg + n, huge, sizeof huge);
    n += sizeof huge;
    struct cbn_sketch *sk;
    check_heap_install();
    CHECK_EQ(cbn_sketch_decode(msg, n, 1u << 24, &sk), SM_ETOOBIG);
    CHECK_EQ(cbn_sketch_decode(msg, n, 4096, &sk), SM_ETOOBIG);
    /* 3 buckets claimed, 1 present. */
    msg[n - sizeof huge] = 3;
    msg[n - sizeof huge + 1] = 1;
    CHECK_EQ(cbn_sketch_decode(msg, n - sizeof huge + 2, 4096, &sk),
             SM_EMALFORMED);
    check_heap_uninstall();
}

static void test_out_of_memory(void)
{
    struct sm_rng r;
    sm_rng_seed(&r, check_seed() + 7);
    for (size_t i = 0; i < 2000; i++) {
        values[i] = exp(4 * sm_rng_normal(&r));
    }
    /* Fail the k-th allocation for every k until an operation sequence
     * completes: each failure must be SM_ENOMEM, leave the sketch usable and
     * unchanged, and leak nothing. */
    for (int k = 0; k < 200; k++) {
        check_heap_install();
        check_heap_fault(k, 1);
        struct cbn_sketch *a = NULL, *b = NULL, *c = NULL;
        int rv = cbn_sketch_new(ALPHA, 256, &a);
        int done = 0;
        if (rv == SM_OK) {
            rv = cbn_sketch_new(ALPHA, 256, &b);
        }
        for (size_t i = 0; rv == SM_OK && i < 2000; i++) {
            uint64_t before = cbn_sketch_count(a);
            rv = cbn_sketch_add(i % 2 ? a : b, values[i], 1);
            if (rv != SM_OK) {
                CHECK_EQ(cbn_sketch_count(a), before);
            }
        }
        uint8_t *buf = NULL;
        size_t len = 0;
        if (rv == SM_OK) {
            uint64_t before = cbn_sketch_count(a);
            double p99 = cbn_sketch_quantile(a, 0.99);
            rv = cbn_sketch_merge(a, b);
            if (rv != SM_OK) {
                CHECK_EQ(cbn_sketch_count(a), before);
                CHECK(cbn_sketch_quantile(a, 0.99) == p99);
            }
        }
        if (rv == SM_OK) {
            rv = cbn_sketch_encode(a, &buf, &len);
        }
        if (rv == SM_OK) {
            rv = cbn_sketch_decode(buf, len, 256, &c);
        }
        if (rv == SM_OK) {
            CHECK_EQ(cbn_sketch_count(c), 2000);
            done = 1;
        } else {
            CHECK_EQ(rv, SM_ENOMEM);
        }
        sm_free(buf);
        cbn_sketch_free(a);
        cbn_sketch_free(b);
        cbn_sketch_free(c);
        CHECK_EQ(check_heap_outstanding(), 0);
        check_heap_uninstall();
        if (done) {
            CHECK(k > 3); /* the sequence allocates at least this often */
            return;
        }
    }
    check__fail(__FILE__, __LINE__, 0, "never completed without a fault");
}

static const struct check_test tests[] = {
    {"empty", test_empty},
    {"lognormal accuracy", test_lognormal},
    {"pareto accuracy", test_pareto},
    {"bimodal accuracy", test_bimodal},
    {"merge is exact", test_merge},
    {"signs and zero", test_signs_and_zero},
    {"collapse keeps the tail", test_collapse_keeps_tail},
    {"invalid arguments", test_invalid},
    {"encode roundtrip and malformed input", test_encode_roundtrip},
    {"hostile counts", test_hostile_counts},
    {"out of memory", test_out_of_memory},
};

CHECK_MAIN(tests, NULL, NULL)
