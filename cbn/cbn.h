/* cbn: windows, sketches, RPC graph and the Causal Bayesian Network. */
#ifndef SM_CBN_H
#define SM_CBN_H

#include <stddef.h>
#include <stdint.h>

/* ---- Quantile sketch --------------------------------------------------
 *
 * A mergeable relative-error quantile sketch (DDSketch, Masson et al., VLDB
 * 2019). Values are counted in logarithmic buckets of ratio
 * gamma = (1 + a) / (1 - a), so any quantile it returns is within relative
 * error a of the exact value of that rank, whatever the distribution, and two
 * sketches of the same accuracy merge by adding bucket counts: replicas and
 * peers merge latency and metric distributions without shipping samples.
 *
 * Quantile convention: quantile(q) estimates the element of rank
 * floor(q * (n - 1)) (0-based) of the sorted input.
 *
 * Memory is bounded by max_bins buckets per sign. When a sketch would need
 * more, the buckets of the smallest magnitudes are collapsed into one, so
 * the high quantiles (the tail we care about) stay accurate and only the
 * lowest ones lose precision. With a = 0.01 and 2048 bins a sketch spans 17
 * decades, e.g. 1 ns to 10^8 s, without collapsing.
 *
 * Values of magnitude below CBN_SKETCH_MIN_VALUE count as zero. NaN and
 * infinities are rejected. A sketch is not thread-safe. */
struct cbn_sketch;

#define CBN_SKETCH_MIN_VALUE        1e-9
#define CBN_SKETCH_DEFAULT_ACCURACY 0.01
#define CBN_SKETCH_DEFAULT_MAX_BINS 2048u

/* Creates an empty sketch with relative accuracy @accuracy (0 < a < 1, e.g.
 * 0.01 for 1%) and at most @max_bins buckets per sign (>= 16). On success
 * stores a sketch owned by the caller (cbn_sketch_free) in @out and returns
 * SM_OK; returns SM_EINVAL for bad parameters or SM_ENOMEM, leaving @out
 * untouched. */
int cbn_sketch_new(double accuracy, uint32_t max_bins, struct cbn_sketch **out);

/* Frees @sketch; NULL is a no-op. */
void cbn_sketch_free(struct cbn_sketch *sketch);

/* Counts @value @count times. Returns SM_OK, SM_EINVAL for a non-finite value
 * or a zero count, SM_ERANGE if the total count would overflow, or
 * SM_ENOMEM; on error the sketch is unchanged. */
int cbn_sketch_add(struct cbn_sketch *sketch, double value, uint64_t count);

/* Adds every value counted in @src to @dst. Both must have the same accuracy
 * (SM_EINVAL otherwise). Returns SM_OK, SM_ERANGE on count overflow, or
 * SM_ENOMEM; on error @dst is unchanged. @src is not modified. */
int cbn_sketch_merge(struct cbn_sketch *dst, const struct cbn_sketch *src);

/* Empties @sketch, keeping its parameters and buffers. */
void cbn_sketch_clear(struct cbn_sketch *sketch);

/* Returns the number of values counted. */
uint64_t cbn_sketch_count(const struct cbn_sketch *sketch);

/* Returns the estimate of quantile @q (clamped to [0, 1]), or NaN when the
 * sketch is empty. Exact for q = 0 and q = 1 (the minimum and maximum are
 * tracked exactly). */
double cbn_sketch_quantile(const struct cbn_sketch *sketch, double q);

/* Returns the exact sum of the values counted (NaN when empty). */
double cbn_sketch_sum(const struct cbn_sketch *sketch);

/* Returns the accuracy the sketch was created with. */
double cbn_sketch_accuracy(const struct cbn_sketch *sketch);

/* Serialises @sketch into a new buffer owned by the caller (sm_free),
 * storing it in @buf and its length in @len. Returns SM_OK or SM_ENOMEM
 * (outputs untouched). The format is versioned, little-endian and
 * platform-independent. */
int cbn_sketch_encode(const struct cbn_sketch *sketch,
                      uint8_t **buf,
                      size_t *len);

/* Parses @len bytes at @buf (borrowed) into a new sketch owned by the caller,
 * refusing more than @max_bins buckets per sign. Returns SM_OK,
 * SM_EMALFORMED for anything that is not exactly one valid encoding
 * (truncated, trailing bytes, bad counts, bad parameters),
 * SM_EUNSUPPORTED for an unknown version, SM_ETOOBIG past @max_bins, or
 * SM_ENOMEM. Allocation is bounded by @len: a small hostile input cannot
 * make it allocate much. */
int cbn_sketch_decode(const uint8_t *buf,
                      size_t len,
                      uint32_t max_bins,
                      struct cbn_sketch **out);

#endif /* SM_CBN_H */
