/* The body of every trace-format fuzz target: parse, check what was
 * accepted, feed it to the aggregator. */
#ifndef SM_FUZZ_SPANS_H
#define SM_FUZZ_SPANS_H

#include <stdint.h>
#include <string.h>

#include "cbn/cbn.h"
#include "node/ingest.h"

typedef int (*fuzz_span_parser)(const uint8_t *body,
                                size_t len,
                                struct node_spans *out,
                                char errmsg[SM_ERRMSG_SIZE]);

static void fuzz_discard(void *arg, struct cbn_window *w)
{
    (void)arg;
    cbn_window_free(w);
}

static int fuzz_spans(fuzz_span_parser parse, const uint8_t *data, size_t size)
{
    struct node_spans batch;
    char err[SM_ERRMSG_SIZE] = "";
    node_spans_init(&batch, 8u << 20);
    if (parse(data, size, &batch, err) == SM_OK) {
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
            (void)cbn_agg_flush(agg, fuzz_discard, NULL);
            cbn_agg_free(agg);
        }
    } else {
        /* A refusal always says why. */
        SM_ASSERT(memchr(err, '\0', sizeof err) != NULL && err[0] != '\0');
    }
    node_spans_free(&batch);
    return 0;
}

#endif /* SM_FUZZ_SPANS_H */
