/* Seeded pseudo-random numbers: randomness as an explicit input. */
#ifndef SM_BASE_RNG_H
#define SM_BASE_RNG_H

#include <stdint.h>

/* xoshiro256** (Blackman and Vigna), seeded through splitmix64. Fast, 256 bits
 * of state, good statistical quality; NOT cryptographic (keys and nonces come
 * from libsodium in transport/). The same seed gives the same sequence on
 * every platform, which is what deterministic tests and the simulator need.
 *
 * Caller-allocated value type; no teardown. Not thread-safe: give each thread
 * its own generator (sm_rng_split). */
struct sm_rng
{
    uint64_t s[4];
};

/* Seeds @rng from @seed. Any seed, including 0, gives a valid state. */
void sm_rng_seed(struct sm_rng *rng, uint64_t seed);

/* Returns the next 64 uniformly distributed bits. */
uint64_t sm_rng_u64(struct sm_rng *rng);

/* Returns a uniform integer in [0, bound), without modulo bias. @bound must
 * be non-zero (a zero bound returns 0). */
uint64_t sm_rng_below(struct sm_rng *rng, uint64_t bound);

/* Returns a uniform double in [0, 1) with 53 random bits. */
double sm_rng_double(struct sm_rng *rng);

/* Returns a standard normal variate (mean 0, variance 1), Marsaglia's polar
 * method. Consumes a variable number of draws. */
double sm_rng_normal(struct sm_rng *rng);

/* Seeds @child from @parent's next output, giving an independent stream
 * (e.g. one per thread or per simulated replica) and advancing @parent. */
void sm_rng_split(struct sm_rng *parent, struct sm_rng *child);

#endif /* SM_BASE_RNG_H */
