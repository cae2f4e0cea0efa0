/* Small checks and settings shared by fuzz targets. */
#ifndef SM_FUZZ_UTIL_H
#define SM_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "base/log.h"
#include "cbn/cbn.h"

/* An accepted window is consistent: the lookups find every entry. */
static inline void fuzz_check_lookups(const struct cbn_window *w)
{
    for (uint32_t i = 0; i < w->n_services; i++) {
        SM_ASSERT(cbn_window_service(w, w->services[i].name) ==
                  &w->services[i]);
    }
    for (uint32_t i = 0; i < w->n_edges; i++) {
        SM_ASSERT(cbn_window_edge(w, w->edges[i].caller, w->edges[i].callee) ==
                  &w->edges[i]);
    }
}

static inline void fuzz_log_sink(void *arg,
                                 enum sm_log_level level,
                                 const char *line,
                                 size_t len)
{
    (void)arg, (void)level, (void)line, (void)len;
}

/* Malformed input is logged: keep the fuzzer's output quiet. */
static inline void fuzz_quiet(void)
{
    sm_log_set_sink(fuzz_log_sink, NULL);
}

#endif /* SM_FUZZ_UTIL_H */
