/* Time as an input: a clock interface with a real and a fake implementation. */
#ifndef SM_BASE_CLOCK_H
#define SM_BASE_CLOCK_H

#include <stdint.h>

/* Nothing below node/ reads the system clock: it is handed a struct sm_clock
 * (or just a timestamp) so that tests and the simulator can drive time.
 *
 * wall_ns: nanoseconds since the Unix epoch (event time, log stamps).
 * mono_ns: nanoseconds on a clock that never goes backwards (timeouts). */
struct sm_clock
{
    uint64_t (*wall_ns)(const struct sm_clock *clock);
    uint64_t (*mono_ns)(const struct sm_clock *clock);
};

/* Returns the process-wide real clock (CLOCK_REALTIME, CLOCK_MONOTONIC). The
 * object is static: never free it. Thread-safe. */
const struct sm_clock *sm_clock_real(void);

/* Reads the wall clock of @clock. */
static inline uint64_t sm_clock_wall_ns(const struct sm_clock *clock)
{
    return clock->wall_ns(clock);
}

/* Reads the monotonic clock of @clock. */
static inline uint64_t sm_clock_mono_ns(const struct sm_clock *clock)
{
    return clock->mono_ns(clock);
}

/* A clock that moves only when told to. The embedded `clock` member is what
 * code under test receives (&fake.clock). Caller-allocated, no teardown. */
struct sm_fake_clock
{
    struct sm_clock clock; /* must stay the first member */
    uint64_t wall_ns;      /* current wall time */
    uint64_t mono_ns;      /* current monotonic time */
};

/* Starts @fake at wall time @wall_ns and monotonic time 0. */
void sm_fake_clock_init(struct sm_fake_clock *fake, uint64_t wall_ns);

/* Moves both of @fake's clocks forward by @ns. */
void sm_fake_clock_advance(struct sm_fake_clock *fake, uint64_t ns);

#endif /* SM_BASE_CLOCK_H */
