/* Tests for base/clock: the fake clock moves only when told; the real one
 * moves forward. */
#include "base/clock.h"
#include "check.h"

static void test_fake(void)
{
    struct sm_fake_clock fake;
    sm_fake_clock_init(&fake, 1700000000000000000u);
    const struct sm_clock *c = &fake.clock;
    CHECK_EQ(sm_clock_wall_ns(c), 1700000000000000000u);
    CHECK_EQ(sm_clock_mono_ns(c), 0);
    sm_fake_clock_advance(&fake, 30000000000u);
    CHECK_EQ(sm_clock_wall_ns(c), 1700000030000000000u);
    CHECK_EQ(sm_clock_mono_ns(c), 30000000000u);
}

static void test_real(void)
{
    const struct sm_clock *c = sm_clock_real();
    uint64_t a = sm_clock_mono_ns(c), b = sm_clock_mono_ns(c);
    CHECK(b >= a);
    /* Later than 2020-01-01: the wall clock is the Unix epoch in ns. */
    CHECK(sm_clock_wall_ns(c) > 1577836800000000000u);
}

static const struct check_test tests[] = {
    {"fake clock", test_fake},
    {"real clock", test_real},
};

CHECK_MAIN(tests, NULL, NULL)
