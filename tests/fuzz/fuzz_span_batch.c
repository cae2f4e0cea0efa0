/* Fuzz target: node_span_batch_decode, and the canonical encoding. */
#include <stdint.h>
#include <string.h>

#include "base/alloc.h"
#include "base/err.h"
#include "node/ingest.h"
#include "node/span_route.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct node_spans batch;
    char err[SM_ERRMSG_SIZE] = "";
    node_spans_init(&batch, 8u << 20);
    int rv = node_span_batch_decode(data, size, &batch, err);
    if (rv != SM_OK) {
        /* A refusal says why and appends nothing. */
        SM_ASSERT(batch.n == 0);
        SM_ASSERT(memchr(err, '\0', sizeof err) != NULL && err[0] != '\0');
        node_spans_free(&batch);
        return 0;
    }
    /* Accepted spans are whole, and there is exactly one encoding: the
     * spans encode back to the very same bytes. */
    const struct cbn_span **spans =
        sm_calloc(batch.n ? batch.n : 1, sizeof *spans);
    if (spans != NULL) {
        for (size_t i = 0; i < batch.n; i++) {
            const struct cbn_span *s = &batch.v[i];
            SM_ASSERT(s->service != NULL && s->service[0] != '\0');
            SM_ASSERT(s->end_ns >= s->start_ns);
            SM_ASSERT(s->instance != NULL && s->operation != NULL &&
                      s->peer != NULL);
            spans[i] = s;
        }
        uint8_t *buf;
        size_t len;
        rv = node_span_batch_encode(spans, batch.n, &buf, &len);
        SM_ASSERT(rv == SM_OK || rv == SM_ENOMEM);
        if (rv == SM_OK) {
            SM_ASSERT(len == size && memcmp(buf, data, size) == 0);
            sm_free(buf);
        }
        sm_free(spans);
    }
    /* Every trace has an owner. */
    static const char *const members[] = {"a1b2c3", "d4e5f6", "0a0b0c"};
    for (size_t i = 0; i < batch.n; i++) {
        SM_ASSERT(node_route_owner(batch.v[i].trace_id, members, 3) < 3);
    }
    node_spans_free(&batch);
    return 0;
}
