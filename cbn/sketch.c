/* DDSketch: a mergeable relative-error quantile sketch.
 *
 * A positive value v falls in bucket i = ceil(log(v) / log(gamma)), that is
 * gamma^(i-1) < v <= gamma^i, and bucket i stands for the value
 * 2 gamma^i / (gamma + 1), which is within relative error
 * a = (gamma - 1) / (gamma + 1) of every value of the bucket. Negative values
 * use a mirrored store; magnitudes below CBN_SKETCH_MIN_VALUE are counted as
 * zero.
 *
 * Each store is a dense array of counts over a window [base, base + cap) of
 * bucket indices, of which [lo, hi] are in use. The window grows by
 * reallocation (always to a new array first, so a failed allocation changes
 * nothing) and never spans more than max_bins indices: past that, the lowest
 * buckets fold into the lowest kept one. */
#include <math.h>
#include <string.h>

#include "base/alloc.h"
#include "base/err.h"
#include "base/le.h"
#include "cbn/cbn.h"
#include "cbn/internal.h"

/* Bucket indices beyond this magnitude cannot come from finite doubles at
 * any accuracy we accept; the decoder rejects them. */
#define INDEX_LIMIT (1 << 24)

struct store
{
    uint64_t *counts; /* counts[k] is the count of bucket base + k */
    int32_t base;     /* index of counts[0] */
    uint32_t cap;     /* allocated length of counts */
    int32_t lo, hi;   /* used span, valid only when total > 0 */
    uint64_t total;
};

struct cbn_sketch
{
    double accuracy;
    double gamma;
    double inv_log_gamma;
    double log_gamma;
    uint32_t max_bins;
    struct store pos, neg;
    uint64_t zero;
    double min, max, sum;
};

static void store_clear(struct store *st)
{
    if (st->counts != NULL) {
        memset(st->counts, 0, st->cap * sizeof st->counts[0]);
    }
    st->total = 0;
}

/* Makes @st's array cover [new_lo, new_hi] (at most max_bins wide), folding
 * the counts of buckets below new_lo into new_lo. Returns SM_OK or SM_ENOMEM
 * with @st unchanged. */
static int store_reshape(struct store *st,
                         int32_t new_lo,
                         int32_t new_hi,
                         uint32_t max_bins)
{
    uint32_t span = (uint32_t)(new_hi - new_lo) + 1;
    if (st->counts != NULL && new_lo >= st->base &&
        (int64_t)new_hi < (int64_t)st->base + st->cap &&
        (st->total == 0 || st->lo >= new_lo)) {
        return SM_OK; /* fits, and nothing to fold */
    }
    /* Leave room to grow on both sides so that a drifting distribution does
     * not reallocate on every new bucket. */
    uint32_t cap = span < 32 ? 64 : span * 2;
    if (cap > max_bins) {
        cap = max_bins;
    }
    uint64_t *counts = sm_calloc(cap, sizeof *counts);
    if (counts == NULL) {
        return SM_ENOMEM;
    }
    int64_t base = (int64_t)new_lo - (int64_t)(cap - span) / 2;
    if (base > new_lo) {
        base = new_lo;
    }
    if (st->total > 0) {
        for (int32_t i = st->lo; i <= st->hi; i++) {
            int32_t to = i < new_lo ? new_lo : i;
            counts[to - base] += st->counts[i - st->base];
        }
    }
    sm_free(st->counts);
    st->counts = counts;
    st->base = (int32_t)base;
    st->cap = cap;
    if (st->total > 0) {
        st->lo = st->lo < new_lo ? new_lo : st->lo;
    }
    return SM_OK;
}

/* The span [lo, hi] that @st needs to also hold [add_lo, add_hi], trimmed
 * from below to max_bins. */
static void store_target(const struct store *st,
                         int32_t add_lo,
                         int32_t add_hi,
                         uint32_t max_bins,
                         int32_t *lo,
                         int32_t *hi)
{
    *lo = add_lo;
    *hi = add_hi;
    if (st->total > 0) {
        *lo = st->lo < *lo ? st->lo : *lo;
        *hi = st->hi > *hi ? st->hi : *hi;
    }
    if ((int64_t)*hi - *lo + 1 > (int64_t)max_bins) {
        *lo = *hi - (int32_t)max_bins + 1;
    }
}

/* Adds @count at bucket @index (folded into the lowest kept bucket when
 * collapsed). The caller has checked for overflow. */
static int store_add(struct store *st,
                     int32_t index,
                     uint64_t count,
                     uint32_t max_bins)
{
    int32_t lo, hi;
    store_target(st, index, index, max_bins, &lo, &hi);
    int rv = store_reshape(st, lo, hi, max_bins);
    if (rv != SM_OK) {
        return rv;
    }
    int32_t at = index < lo ? lo : index;
    st->counts[at - st->base] += count;
    if (st->total == 0) {
        st->lo = st->hi = at;
    } else {
        st->lo = at < st->lo ? at : st->lo;
        st->hi = at > st->hi ? at : st->hi;
    }
    st->total += count;
    return SM_OK;
}

static int store_merge(struct store *dst,
                       const struct store *src,
                       uint32_t max_bins)
{
    if (src->total == 0) {
        return SM_OK;
    }
    int32_t lo, hi;
    store_target(dst, src->lo, src->hi, max_bins, &lo, &hi);
    int rv = store_reshape(dst, lo, hi, max_bins);
    if (rv != SM_OK) {
        return rv;
    }
    for (int32_t i = src->lo; i <= src->hi; i++) {
        uint64_t c = src->counts[i - src->base];
        if (c != 0) {
            int32_t at = i < lo ? lo : i;
            dst->counts[at - dst->base] += c;
        }
    }
    int32_t src_lo = src->lo < lo ? lo : src->lo;
    if (dst->total == 0) {
        dst->lo = src_lo;
        dst->hi = src->hi;
    } else {
        dst->lo = src_lo < dst->lo ? src_lo : dst->lo;
        dst->hi = src->hi > dst->hi ? src->hi : dst->hi;
    }
    dst->total += src->total;
    return SM_OK;
}

static int set_params(struct cbn_sketch *sk, double accuracy, uint32_t max_bins)
{
    if (!(accuracy > 0.0 && accuracy < 1.0) || max_bins < 16 ||
        max_bins > INDEX_LIMIT) {
        return SM_EINVAL;
    }
    sk->accuracy = accuracy;
    sk->gamma = (1.0 + accuracy) / (1.0 - accuracy);
    sk->log_gamma = log(sk->gamma);
    sk->inv_log_gamma = 1.0 / sk->log_gamma;
    sk->max_bins = max_bins;
    return SM_OK;
}

int cbn_sketch_new(double accuracy, uint32_t max_bins, struct cbn_sketch **out)
{
    struct cbn_sketch params;
    if (set_params(&params, accuracy, max_bins) != SM_OK) {
        return SM_EINVAL;
    }
    struct cbn_sketch *sk = sm_calloc(1, sizeof *sk);
    if (sk == NULL) {
        return SM_ENOMEM;
    }
    *sk = params;
    memset(&sk->pos, 0, sizeof sk->pos);
    memset(&sk->neg, 0, sizeof sk->neg);
    cbn_sketch_clear(sk);
    *out = sk;
    return SM_OK;
}

void cbn_sketch_free(struct cbn_sketch *sketch)
{
    if (sketch != NULL) {
        sm_free(sketch->pos.counts);
        sm_free(sketch->neg.counts);
        sm_free(sketch);
    }
}

void cbn_sketch_clear(struct cbn_sketch *sketch)
{
    store_clear(&sketch->pos);
    store_clear(&sketch->neg);
    sketch->zero = 0;
    sketch->min = INFINITY;
    sketch->max = -INFINITY;
    sketch->sum = 0.0;
}

uint64_t cbn_sketch_count(const struct cbn_sketch *sketch)
{
    return sketch->zero + sketch->pos.total + sketch->neg.total;
}

double cbn_sketch_accuracy(const struct cbn_sketch *sketch)
{
    return sketch->accuracy;
}

double cbn_sketch_sum(const struct cbn_sketch *sketch)
{
    return cbn_sketch_count(sketch) == 0 ? NAN : sketch->sum;
}

static int32_t bucket_index(const struct cbn_sketch *sk, double magnitude)
{
    return (int32_t)ceil(log(magnitude) * sk->inv_log_gamma);
}

static double bucket_value(const struct cbn_sketch *sk, int32_t index)
{
    return exp((double)index * sk->log_gamma) * 2.0 / (sk->gamma + 1.0);
}

int cbn_sketch_add(struct cbn_sketch *sketch, double value, uint64_t count)
{
    if (!isfinite(value) || count == 0) {
        return SM_EINVAL;
    }
    if (count > UINT64_MAX - cbn_sketch_count(sketch)) {
        return SM_ERANGE;
    }
    int rv = SM_OK;
    if (value >= CBN_SKETCH_MIN_VALUE) {
        rv = store_add(&sketch->pos, bucket_index(sketch, value), count,
                       sketch->max_bins);
    } else if (value <= -CBN_SKETCH_MIN_VALUE) {
        rv = store_add(&sketch->neg, bucket_index(sketch, -value), count,
                       sketch->max_bins);
    } else {
        sketch->zero += count;
    }
    if (rv != SM_OK) {
        return rv;
    }
    sketch->min = value < sketch->min ? value : sketch->min;
    sketch->max = value > sketch->max ? value : sketch->max;
    sketch->sum += value * (double)count;
    return SM_OK;
}

int cbn_sketch_merge(struct cbn_sketch *dst, const struct cbn_sketch *src)
{
    if (dst->accuracy != src->accuracy) {
        return SM_EINVAL;
    }
    uint64_t n = cbn_sketch_count(src);
    if (n > UINT64_MAX - cbn_sketch_count(dst)) {
        return SM_ERANGE;
    }
    /* Reserve both stores before changing either, so that an allocation
     * failure leaves @dst as it was. */
    int32_t lo, hi;
    if (src->pos.total > 0) {
        store_target(&dst->pos, src->pos.lo, src->pos.hi, dst->max_bins, &lo,
                     &hi);
        if (store_reshape(&dst->pos, lo, hi, dst->max_bins) != SM_OK) {
            return SM_ENOMEM;
        }
    }
    if (src->neg.total > 0) {
        store_target(&dst->neg, src->neg.lo, src->neg.hi, dst->max_bins, &lo,
                     &hi);
        if (store_reshape(&dst->neg, lo, hi, dst->max_bins) != SM_OK) {
            return SM_ENOMEM;
        }
    }
    /* Both reshapes are now no-ops, so these cannot fail. */
    SM_ASSERT(store_merge(&dst->pos, &src->pos, dst->max_bins) == SM_OK);
    SM_ASSERT(store_merge(&dst->neg, &src->neg, dst->max_bins) == SM_OK);
    dst->zero += src->zero;
    if (n > 0) {
        dst->min = src->min < dst->min ? src->min : dst->min;
        dst->max = src->max > dst->max ? src->max : dst->max;
        dst->sum += src->sum;
    }
    return SM_OK;
}

static double clamp(const struct cbn_sketch *sk, double v)
{
    return v < sk->min ? sk->min : (v > sk->max ? sk->max : v);
}

double cbn_sketch_quantile(const struct cbn_sketch *sketch, double q)
{
    uint64_t n = cbn_sketch_count(sketch);
    if (n == 0) {
        return NAN;
    }
    if (!(q > 0.0)) {
        return sketch->min;
    }
    if (q >= 1.0) {
        return sketch->max;
    }
    uint64_t rank = (uint64_t)(q * (double)(n - 1));
    uint64_t seen = 0;
    const struct store *neg = &sketch->neg;
    if (neg->total > 0) {
        for (int32_t i = neg->hi; i >= neg->lo; i--) {
            seen += neg->counts[i - neg->base];
            if (seen > rank) {
                return clamp(sketch, -bucket_value(sketch, i));
            }
        }
    }
    seen += sketch->zero;
    if (seen > rank) {
        return clamp(sketch, 0.0);
    }
    const struct store *pos = &sketch->pos;
    for (int32_t i = pos->lo; pos->total > 0 && i <= pos->hi; i++) {
        seen += pos->counts[i - pos->base];
        if (seen > rank) {
            return clamp(sketch, bucket_value(sketch, i));
        }
    }
    return sketch->max; /* unreachable while counts add up to n */
}

/* ---- Encoding --------------------------------------------------------
 *
 * "DDS" 0x01 | accuracy f64 | min f64 | max f64 | sum f64 | zero varint |
 * positive store | negative store, where a store is
 * lo (zigzag varint) | bins (varint) | bins x count (varint).
 * f64 are IEEE-754 little-endian; varints are LEB128. */

#define MAGIC      "DDS"
#define VERSION    1
#define HEADER_LEN (4 + 4 * 8)

static size_t put_f64(uint8_t *p, double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    sm_put_le64(p, u);
    return 8;
}

static size_t store_encode(const struct store *st, uint8_t *p)
{
    size_t n = 0;
    if (st->total == 0) {
        n += cbn__varint_put(p + n, 0);
        n += cbn__varint_put(p + n, 0);
        return n;
    }
    int64_t lo = st->lo;
    n +=
        cbn__varint_put(p + n, ((uint64_t)lo << 1) ^ (lo < 0 ? UINT64_MAX : 0));
    n += cbn__varint_put(p + n, (uint64_t)(st->hi - st->lo) + 1);
    for (int32_t i = st->lo; i <= st->hi; i++) {
        n += cbn__varint_put(p + n, st->counts[i - st->base]);
    }
    return n;
}

static size_t store_bins(const struct store *st)
{
    return st->total == 0 ? 0 : (size_t)(st->hi - st->lo) + 1;
}

int cbn_sketch_encode(const struct cbn_sketch *sketch,
                      uint8_t **buf,
                      size_t *len)
{
    size_t bound =
        HEADER_LEN + CBN__VARINT_MAX * (1 + 4 + store_bins(&sketch->pos) +
                                        store_bins(&sketch->neg));
    uint8_t *p = sm_malloc(bound);
    if (p == NULL) {
        return SM_ENOMEM;
    }
    size_t n = 0;
    memcpy(p, MAGIC, 3);
    p[3] = VERSION;
    n = 4;
    n += put_f64(p + n, sketch->accuracy);
    n += put_f64(p + n, sketch->min);
    n += put_f64(p + n, sketch->max);
    n += put_f64(p + n, sketch->sum);
    n += cbn__varint_put(p + n, sketch->zero);
    n += store_encode(&sketch->pos, p + n);
    n += store_encode(&sketch->neg, p + n);
    *buf = p;
    *len = n;
    return SM_OK;
}

static int store_decode(struct cbn__in *r, struct store *st, uint32_t max_bins)
{
    uint64_t zz = cbn__in_v(r);
    uint64_t bins = cbn__in_v(r);
    if (r->bad) {
        return SM_EMALFORMED;
    }
    int64_t lo = (int64_t)(zz >> 1) ^ -(int64_t)(zz & 1);
    if (bins == 0) {
        return zz == 0 ? SM_OK : SM_EMALFORMED;
    }
    if (bins > max_bins) {
        return SM_ETOOBIG;
    }
    /* Every count takes at least one byte: this bounds the allocation by
     * the input length. */
    if (bins > r->left || lo < -INDEX_LIMIT || lo > INDEX_LIMIT ||
        lo + (int64_t)bins > INDEX_LIMIT) {
        return SM_EMALFORMED;
    }
    int rv = store_reshape(st, (int32_t)lo, (int32_t)(lo + (int64_t)bins - 1),
                           max_bins);
    if (rv != SM_OK) {
        return rv;
    }
    uint64_t total = 0;
    int32_t first = 0, last = 0;
    for (uint64_t k = 0; k < bins; k++) {
        uint64_t c = cbn__in_v(r);
        if (r->bad || c > UINT64_MAX - total) {
            return SM_EMALFORMED;
        }
        int32_t index = (int32_t)(lo + (int64_t)k);
        st->counts[index - st->base] = c;
        if (c != 0) {
            if (total == 0) {
                first = index;
            }
            last = index;
        }
        total += c;
    }
    if (total == 0) {
        return SM_EMALFORMED; /* a store with bins must count something */
    }
    st->lo = first;
    st->hi = last;
    st->total = total;
    return SM_OK;
}

int cbn_sketch_decode(const uint8_t *buf,
                      size_t len,
                      uint32_t max_bins,
                      struct cbn_sketch **out)
{
    if (len < HEADER_LEN || memcmp(buf, MAGIC, 3) != 0) {
        return SM_EMALFORMED;
    }
    if (buf[3] != VERSION) {
        return SM_EUNSUPPORTED;
    }
    struct cbn__in r = {buf + 4, len - 4, false};
    double accuracy = cbn__in_f64(&r); /* within HEADER_LEN, checked */
    double min = cbn__in_f64(&r), max = cbn__in_f64(&r);
    double sum = cbn__in_f64(&r);
    struct cbn_sketch *sk;
    int rv = cbn_sketch_new(accuracy, max_bins, &sk);
    if (rv != SM_OK) {
        return rv == SM_EINVAL ? SM_EMALFORMED : rv;
    }
    uint64_t zero = cbn__in_v(&r);
    if (r.bad) {
        rv = SM_EMALFORMED;
    }
    if (rv == SM_OK) {
        rv = store_decode(&r, &sk->pos, max_bins);
    }
    if (rv == SM_OK) {
        rv = store_decode(&r, &sk->neg, max_bins);
    }
    if (rv == SM_OK && r.left != 0) {
        rv = SM_EMALFORMED; /* trailing bytes */
    }
    if (rv == SM_OK) {
        sk->zero = zero;
        uint64_t n = sk->pos.total;
        if (sk->neg.total > UINT64_MAX - n ||
            zero > UINT64_MAX - n - sk->neg.total) {
            rv = SM_EMALFORMED;
        } else if (n + sk->neg.total + zero > 0 &&
                   !(isfinite(min) && isfinite(max) && min <= max &&
                     isfinite(sum))) {
            rv = SM_EMALFORMED;
        }
    }
    if (rv != SM_OK) {
        cbn_sketch_free(sk);
        return rv;
    }
    if (cbn_sketch_count(sk) > 0) {
        sk->min = min;
        sk->max = max;
        sk->sum = sum;
    }
    *out = sk;
    return SM_OK;
}

/* ---- cbn-internal helpers ------------------------------------------------ */

const double cbn_percentiles[CBN_N_PCT] = {10, 25, 50, 75, 90, 95, 99, 99.9};

static int store_reserve(struct store *st, int32_t index, uint32_t max_bins)
{
    int64_t lo = index, hi = index;
    if (st->counts != NULL) {
        lo = st->base < lo ? st->base : lo;
        hi = (int64_t)st->base + st->cap - 1 > hi
                 ? (int64_t)st->base + st->cap - 1
                 : hi;
    }
    if (st->total > 0) {
        lo = st->lo < lo ? st->lo : lo;
        hi = st->hi > hi ? st->hi : hi;
    }
    if (hi - lo + 1 > (int64_t)max_bins) {
        /* The add will collapse buckets, which may reallocate; that is
         * rare enough (17 decades at 1%) to leave to the add itself. */
        return SM_OK;
    }
    if (st->counts != NULL && lo >= st->base &&
        hi < (int64_t)st->base + st->cap) {
        return SM_OK;
    }
    return store_reshape(st, (int32_t)lo, (int32_t)hi, max_bins);
}

int cbn__sketch_reserve(struct cbn_sketch *sketch, double value)
{
    if (!isfinite(value)) {
        return SM_OK;
    }
    if (value >= CBN_SKETCH_MIN_VALUE) {
        return store_reserve(&sketch->pos, bucket_index(sketch, value),
                             sketch->max_bins);
    }
    if (value <= -CBN_SKETCH_MIN_VALUE) {
        return store_reserve(&sketch->neg, bucket_index(sketch, -value),
                             sketch->max_bins);
    }
    return SM_OK;
}

void cbn__sketch_pct(const struct cbn_sketch *sketch,
                     double scale,
                     float out[CBN_N_PCT])
{
    for (int i = 0; i < CBN_N_PCT; i++) {
        out[i] =
            (float)(cbn_sketch_quantile(sketch, cbn_percentiles[i] / 100.0) *
                    scale);
    }
}
