/* Fuzz target: node_zipkin_spans, then the aggregator with what it
 * accepted. */
#include <stdint.h>
#include <string.h>

#include "cbn/cbn.h"
#include "node/ingest.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void discard(void *arg, struct cbn_window *w)
{
    (void)arg;
    cbn_window_free(w);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct node_spans batch;
    char err[SM_ERRMSG_SIZE] = "";
    node_spans_init(&batch, 8u << 20);
    if (node_zipkin_spans(data, size, &batch, err) == SM_OK) {
        /* Accepted spans are whole: a service, times in order. */
        for (size_t i = 0; i < batch.n; i++) {
            const struct cbn_span *s = &batch.v[i];
            SM_ASSERT(s->service != NULL && s->service[0] != '\0');
            SM_ASSERT(s->end_ns >= s->start_ns);
            SM_ASSERT(s->operation != NULL && s->peer != NULL &&
                      s->instance != NULL);
        }
        struct cbn_agg_config c = {.window_ns = 30000000000u,
                                   .qos_service = "frontend",
                                   .qos_target_ms = 100};
        struct cbn_agg *agg;
        if (cbn_agg_new(&c, &agg) == SM_OK) {
            (void)cbn_agg_add_spans(agg, batch.v, batch.n);
            (void)cbn_agg_flush(agg, discard, NULL);
            cbn_agg_free(agg);
        }
    } else {
        SM_ASSERT(memchr(err, '\0', sizeof err) != NULL && err[0] != '\0');
    }
    node_spans_free(&batch);
    return 0;
}
