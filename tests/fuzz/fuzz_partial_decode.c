/* Fuzz target: cbn_partial_decode, and what a decoded partial allows. */
#include <stdint.h>
#include <string.h>

#include "base/alloc.h"
#include "base/err.h"
#include "cbn/cbn.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The window of @p, with its lookups checked. */
static struct cbn_window *finish(const struct cbn_partial *p)
{
    struct cbn_window *w;
    SM_ASSERT(cbn_partial_finish(p, &w) == SM_OK);
    fuzz_check_lookups(w);
    return w;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct cbn_partial *p;
    if (cbn_partial_decode(data, size, &p) != SM_OK) {
        return 0;
    }
    /* Accepted input is the one canonical encoding of what it decodes to. */
    uint8_t *buf;
    size_t len;
    SM_ASSERT(cbn_partial_encode(p, &buf, &len) == SM_OK);
    SM_ASSERT(len == size && memcmp(buf, data, size) == 0);
    sm_free(buf);

    struct cbn_window *once = finish(p);
    SM_ASSERT(cbn_partial_start(p) == once->start_ns &&
              cbn_partial_end(p) == once->end_ns);
    /* Merged with itself, every count doubles and the services and edges
     * stay the same; a count that would overflow leaves @p as it was. */
    int rv = cbn_partial_merge(p, p);
    SM_ASSERT(rv == SM_OK || rv == SM_ERANGE);
    if (rv == SM_ERANGE) {
        SM_ASSERT(cbn_partial_encode(p, &buf, &len) == SM_OK);
        SM_ASSERT(len == size && memcmp(buf, data, size) == 0);
        sm_free(buf);
    } else {
        struct cbn_window *twice = finish(p);
        SM_ASSERT(twice->n_services == once->n_services &&
                  twice->n_edges == once->n_edges);
        for (uint32_t i = 0; i < once->n_services; i++) {
            SM_ASSERT(twice->services[i].requests ==
                      2 * once->services[i].requests);
        }
        for (uint32_t i = 0; i < once->n_edges; i++) {
            SM_ASSERT(twice->edges[i].calls == 2 * once->edges[i].calls);
        }
        SM_ASSERT(twice->late_spans == 2 * once->late_spans);
        cbn_window_free(twice);
    }
    cbn_window_free(once);
    cbn_partial_free(p);
    return 0;
}
