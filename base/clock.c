/* The real clock (clock_gettime) and the fake clock for tests. */
#include "base/clock.h"

#include <time.h>

static uint64_t timespec_ns(clockid_t id)
{
    struct timespec ts;
    if (clock_gettime(id, &ts) != 0) {
        return 0; /* only fails for an invalid clock id */
    }
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t real_wall_ns(const struct sm_clock *clock)
{
    (void)clock;
    return timespec_ns(CLOCK_REALTIME);
}

static uint64_t real_mono_ns(const struct sm_clock *clock)
{
    (void)clock;
    return timespec_ns(CLOCK_MONOTONIC);
}

static const struct sm_clock real_clock = {
    .wall_ns = real_wall_ns,
    .mono_ns = real_mono_ns,
};

const struct sm_clock *sm_clock_real(void)
{
    return &real_clock;
}

static uint64_t fake_wall_ns(const struct sm_clock *clock)
{
    return ((const struct sm_fake_clock *)clock)->wall_ns;
}

static uint64_t fake_mono_ns(const struct sm_clock *clock)
{
    return ((const struct sm_fake_clock *)clock)->mono_ns;
}

void sm_fake_clock_init(struct sm_fake_clock *fake, uint64_t wall_ns)
{
    fake->clock.wall_ns = fake_wall_ns;
    fake->clock.mono_ns = fake_mono_ns;
    fake->wall_ns = wall_ns;
    fake->mono_ns = 0;
}

void sm_fake_clock_advance(struct sm_fake_clock *fake, uint64_t ns)
{
    fake->wall_ns += ns;
    fake->mono_ns += ns;
}
