/* gvae: the graphical conditional VAE on OpenBLAS (no network, no I/O). */
#ifndef SM_GVAE_H
#define SM_GVAE_H

#include "base/version.h"

/* Caps the number of threads OpenBLAS uses for one product. The peer runs all
 * model math on one compute thread and sets this to 1 by default: OpenBLAS
 * workers spin after each call and would steal the cores the event loop and
 * the network threads need (see DEPENDENCIES.md). @threads must be >= 1;
 * larger values are capped by OpenBLAS at its build limit. Call it from the
 * compute thread before the first product. */
void gvae_blas_set_threads(int threads);

/* Reports OpenBLAS (version, kernel chosen for this CPU, thread cap) to @cb,
 * synchronously. */
void gvae_libraries(sm_libver_cb cb, void *arg);

#endif /* SM_GVAE_H */
