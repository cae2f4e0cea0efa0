/* OpenBLAS wrappers: products, thread cap, version report. */
#include <cblas.h>
#include <stdio.h>
#include <string.h>

#include "gvae/gvae.h"
#include "gvae/mat.h"

void gvae__gemm(bool trans_a,
                bool trans_b,
                size_t m,
                size_t n,
                size_t k,
                float alpha,
                const float *a,
                const float *b,
                float beta,
                float *c)
{
    blasint lda = (blasint)(trans_a ? m : k);
    blasint ldb = (blasint)(trans_b ? k : n);
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, (blasint)m, (blasint)n,
                (blasint)k, alpha, a, lda, b, ldb, beta, c, (blasint)n);
}

void gvae_blas_set_threads(int threads)
{
    openblas_set_num_threads(threads < 1 ? 1 : threads);
}

void gvae_libraries(sm_libver_cb cb, void *arg)
{
    /* openblas_get_config() reads e.g. "OpenBLAS 0.3.21 DYNAMIC_ARCH
     * NO_AFFINITY Haswell MAX_THREADS=64"; drop the repeated name. */
    const char *config = openblas_get_config();
    if (strncmp(config, "OpenBLAS ", 9) == 0) {
        config += 9;
    }
    char detail[160];
    snprintf(detail, sizeof detail, "%s (kernel %s, threads %d)", config,
             openblas_get_corename(), openblas_get_num_threads());
    cb(arg, "OpenBLAS", detail);
}
