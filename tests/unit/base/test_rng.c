/* Tests for base/rng: determinism, ranges and distribution moments. */
#include <math.h>

#include "base/rng.h"
#include "check.h"

static void test_deterministic(void)
{
    struct sm_rng a, b;
    sm_rng_seed(&a, 42);
    sm_rng_seed(&b, 42);
    for (int i = 0; i < 1000; i++) {
        REQUIRE(sm_rng_u64(&a) == sm_rng_u64(&b));
    }
    sm_rng_seed(&b, 43);
    int same = 0;
    for (int i = 0; i < 1000; i++) {
        same += sm_rng_u64(&a) == sm_rng_u64(&b);
    }
    CHECK(same < 2);
}

static void test_known_sequence(void)
{
    /* Pinned outputs: a change of algorithm or seeding would silently
     * change every simulation and test that depends on a seed. */
    struct sm_rng r;
    sm_rng_seed(&r, 0);
    uint64_t first = sm_rng_u64(&r);
    sm_rng_seed(&r, 0);
    CHECK(first == sm_rng_u64(&r));
    CHECK(r.s[0] != 0 || r.s[1] != 0 || r.s[2] != 0 || r.s[3] != 0);
    sm_rng_seed(&r, 1);
    CHECK(sm_rng_u64(&r) == 0xb3f2af6d0fc710c5u);
}

static void test_below(void)
{
    struct sm_rng r;
    sm_rng_seed(&r, check_seed());
    int hist[7] = {0};
    for (int i = 0; i < 70000; i++) {
        uint64_t v = sm_rng_below(&r, 7);
        REQUIRE(v < 7);
        hist[v]++;
    }
    for (int i = 0; i < 7; i++) {
        CHECK(hist[i] > 9400 && hist[i] < 10600); /* > 6 sigma */
    }
    CHECK_EQ(sm_rng_below(&r, 0), 0);
    CHECK_EQ(sm_rng_below(&r, 1), 0);
}

static void test_moments(void)
{
    struct sm_rng r;
    sm_rng_seed(&r, check_seed());
    const int n = 200000;
    double su = 0, sn = 0, sn2 = 0;
    for (int i = 0; i < n; i++) {
        double u = sm_rng_double(&r);
        REQUIRE(u >= 0.0 && u < 1.0);
        su += u;
        double z = sm_rng_normal(&r);
        sn += z;
        sn2 += z * z;
    }
    CHECK_NEAR(su / n, 0.5, 0.005);
    CHECK_NEAR(sn / n, 0.0, 0.01);
    CHECK_NEAR(sn2 / n, 1.0, 0.02);
}

static void test_split(void)
{
    struct sm_rng parent, a, b;
    sm_rng_seed(&parent, 7);
    sm_rng_split(&parent, &a);
    sm_rng_split(&parent, &b);
    CHECK(sm_rng_u64(&a) != sm_rng_u64(&b));
}

static const struct check_test tests[] = {
    {"deterministic", test_deterministic},
    {"known sequence", test_known_sequence},
    {"below is uniform", test_below},
    {"moments", test_moments},
    {"split", test_split},
};

CHECK_MAIN(tests, NULL, NULL)
