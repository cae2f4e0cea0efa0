/* Fuzz target: cbn_window_decode, and what a decoded window allows. */
#include <stdint.h>
#include <string.h>

#include "base/alloc.h"
#include "base/err.h"
#include "cbn/cbn.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct cbn_window *w;
    if (cbn_window_decode(data, size, &w) != SM_OK) {
        return 0;
    }
    /* Accepted windows are consistent: lookups find every entry, the
     * encoding round-trips, and the CBN and normals can take them. */
    fuzz_check_lookups(w);
    uint8_t *buf;
    size_t len;
    if (cbn_window_encode(w, &buf, &len) == SM_OK) {
        struct cbn_window *again;
        SM_ASSERT(cbn_window_decode(buf, len, &again) == SM_OK);
        SM_ASSERT(again->n_services == w->n_services &&
                  again->n_edges == w->n_edges);
        cbn_window_free(again);
        sm_free(buf);
    }
    struct cbn_graph *g;
    if (cbn_graph_new(NULL, &g) == SM_OK) {
        int changed;
        (void)cbn_graph_observe(g, w, &changed);
        cbn_graph_free(g);
    }
    struct cbn_normals *n;
    if (cbn_normals_new(&n) == SM_OK) {
        (void)cbn_normals_observe(n, w);
        cbn_normals_free(n);
    }
    cbn_window_free(w);
    return 0;
}
