/* xoshiro256** with splitmix64 seeding, plus derived distributions. */
#include "base/rng.h"

#include <math.h>

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

void sm_rng_seed(struct sm_rng *rng, uint64_t seed)
{
    /* splitmix64 never yields four zero words, the one forbidden state. */
    for (int i = 0; i < 4; i++) {
        rng->s[i] = splitmix64(&seed);
    }
}

uint64_t sm_rng_u64(struct sm_rng *rng)
{
    uint64_t *s = rng->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

uint64_t sm_rng_below(struct sm_rng *rng, uint64_t bound)
{
    if (bound == 0) {
        return 0;
    }
    /* Rejection of the short top interval: 2^64 mod bound values would be
     * over-represented otherwise. */
    uint64_t threshold = -bound % bound;
    for (;;) {
        uint64_t r = sm_rng_u64(rng);
        if (r >= threshold) {
            return r % bound;
        }
    }
}

double sm_rng_double(struct sm_rng *rng)
{
    return (double)(sm_rng_u64(rng) >> 11) * 0x1.0p-53;
}

double sm_rng_normal(struct sm_rng *rng)
{
    for (;;) {
        double u = 2.0 * sm_rng_double(rng) - 1.0;
        double v = 2.0 * sm_rng_double(rng) - 1.0;
        double s = u * u + v * v;
        if (s > 0.0 && s < 1.0) {
            /* The polar method yields two variates; using one keeps the
             * generator stateless beyond its four words. */
            return u * sqrt(-2.0 * log(s) / s);
        }
    }
}

void sm_rng_split(struct sm_rng *parent, struct sm_rng *child)
{
    sm_rng_seed(child, sm_rng_u64(parent));
}
