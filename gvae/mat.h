/* Row-major float32 matrix products: the only code that includes cblas.h. */
#ifndef SM_GVAE_MAT_H
#define SM_GVAE_MAT_H

#include <stdbool.h>
#include <stddef.h>

/* C[m x n] = alpha * op(A) * op(B) + beta * C, all row-major, with
 * op(A) m x k and op(B) k x n. When @trans_a is set A is stored k x m (its
 * transpose is used), likewise B stored n x k with @trans_b. Leading
 * dimensions are the stored row lengths: lda = trans_a ? m : k,
 * ldb = trans_b ? k : n, ldc = n. One cblas_sgemm call. Pointers are
 * borrowed; C must not alias A or B. Cannot fail. */
void gvae__gemm(bool trans_a,
                bool trans_b,
                size_t m,
                size_t n,
                size_t k,
                float alpha,
                const float *a,
                const float *b,
                float beta,
                float *c);

#endif /* SM_GVAE_MAT_H */
