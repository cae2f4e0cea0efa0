/* Fuzz target: node_otlp_traces, then the aggregator with what it accepted. */
#include <stdint.h>

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
    char err[SM_ERRMSG_SIZE];
    node_spans_init(&batch, 8u << 20);
    if (node_otlp_traces(data, size, &batch, err) == SM_OK) {
        struct cbn_agg_config c = {.window_ns = 30000000000u,
                                   .qos_service = "frontend",
                                   .qos_target_ms = 100};
        struct cbn_agg *agg;
        if (cbn_agg_new(&c, &agg) == SM_OK) {
            (void)cbn_agg_add_spans(agg, batch.v, batch.n);
            (void)cbn_agg_flush(agg, discard, NULL);
            cbn_agg_free(agg);
        }
    }
    node_spans_free(&batch);
    return 0;
}
