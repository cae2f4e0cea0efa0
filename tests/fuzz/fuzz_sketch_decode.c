/* Fuzz target: cbn_sketch_decode, and what a decoded sketch allows. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/err.h"
#include "cbn/cbn.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct cbn_sketch *sk;
    if (cbn_sketch_decode(data, size, 4096, &sk) != SM_OK) {
        return 0;
    }
    /* Anything accepted must behave: quantiles ordered, re-encoding
     * round-trips to an equal sketch, merging into itself works. */
    double prev = -INFINITY;
    for (int i = 0; i <= 20 && cbn_sketch_count(sk) > 0; i++) {
        double v = cbn_sketch_quantile(sk, i / 20.0);
        SM_ASSERT(isnan(v) == (cbn_sketch_count(sk) == 0));
        SM_ASSERT(v >= prev);
        prev = v;
    }
    uint8_t *buf;
    size_t len;
    if (cbn_sketch_encode(sk, &buf, &len) == SM_OK) {
        struct cbn_sketch *again;
        SM_ASSERT(cbn_sketch_decode(buf, len, 4096, &again) == SM_OK);
        SM_ASSERT(cbn_sketch_count(again) == cbn_sketch_count(sk));
        double a = cbn_sketch_quantile(again, 0.99);
        double b = cbn_sketch_quantile(sk, 0.99);
        SM_ASSERT(a == b || (isnan(a) && isnan(b)));
        cbn_sketch_free(again);
        sm_free(buf);
    }
    struct cbn_sketch *sum;
    if (cbn_sketch_new(cbn_sketch_accuracy(sk), 4096, &sum) == SM_OK) {
        int rv = cbn_sketch_merge(sum, sk);
        SM_ASSERT(rv == SM_OK || rv == SM_ENOMEM);
        cbn_sketch_free(sum);
    }
    cbn_sketch_free(sk);
    return 0;
}
