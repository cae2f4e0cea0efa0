/* Tests for gvae/mat: sgemm in all transpose modes against a naive loop. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "base/rng.h"
#include "check.h"
#include "gvae/gvae.h"
#include "gvae/mat.h"

enum { M = 7, N = 5, K = 9 };

/* Reference: C = alpha op(A) op(B) + beta C, in double. */
static void naive(bool ta,
                  bool tb,
                  float alpha,
                  const float *a,
                  const float *b,
                  float beta,
                  float *c)
{
    for (int i = 0; i < M; i++) {
        for (int j = 0; j < N; j++) {
            double s = 0;
            for (int p = 0; p < K; p++) {
                double av = ta ? a[p * M + i] : a[i * K + p];
                double bv = tb ? b[j * K + p] : b[p * N + j];
                s += av * bv;
            }
            c[i * N + j] = (float)(alpha * s + beta * c[i * N + j]);
        }
    }
}

/* Normalised mean squared error, mse(x, y) / mse(y, 0) (after ggml). */
static double nmse(const float *x, const float *y, int n)
{
    double err = 0, ref = 0;
    for (int i = 0; i < n; i++) {
        err += (x[i] - y[i]) * (double)(x[i] - y[i]);
        ref += y[i] * (double)y[i];
    }
    return err / ref;
}

static void test_gemm_modes(void)
{
    gvae_blas_set_threads(1);
    struct sm_rng r;
    sm_rng_seed(&r, check_seed());
    float a[M * K], b[K * N], c0[M * N];
    for (int i = 0; i < M * K; i++) {
        a[i] = (float)sm_rng_normal(&r);
    }
    for (int i = 0; i < K * N; i++) {
        b[i] = (float)sm_rng_normal(&r);
    }
    for (int i = 0; i < M * N; i++) {
        c0[i] = (float)sm_rng_normal(&r);
    }
    for (int mode = 0; mode < 4; mode++) {
        bool ta = mode & 1, tb = mode & 2;
        float got[M * N], want[M * N];
        memcpy(got, c0, sizeof got);
        memcpy(want, c0, sizeof want);
        gvae__gemm(ta, tb, M, N, K, 0.5f, a, b, 2.0f, got);
        naive(ta, tb, 0.5f, a, b, 2.0f, want);
        double e = nmse(got, want, M * N);
        CHECK(e < 1e-10);
        if (e >= 1e-10) {
            printf("# mode ta=%d tb=%d nmse=%g\n", ta, tb, e);
        }
    }
}

static void test_beta_zero_ignores_garbage(void)
{
    float a[M * K], b[K * N], c[M * N], want[M * N];
    for (int i = 0; i < M * K; i++) {
        a[i] = (float)(i % 5) - 2.0f;
    }
    for (int i = 0; i < K * N; i++) {
        b[i] = (float)(i % 3) - 1.0f;
    }
    for (int i = 0; i < M * N; i++) {
        c[i] = NAN; /* beta = 0 must not read C */
        want[i] = 0.0f;
    }
    gvae__gemm(false, false, M, N, K, 1.0f, a, b, 0.0f, c);
    naive(false, false, 1.0f, a, b, 0.0f, want);
    for (int i = 0; i < M * N; i++) {
        REQUIRE(!isnan(c[i]));
    }
    CHECK(nmse(c, want, M * N) < 1e-12);
}

static void record_library(void *arg, const char *name, const char *version)
{
    snprintf(arg, 256, "%s %s", name, version);
}

static void test_library_report(void)
{
    char seen[256] = "";
    gvae_blas_set_threads(1);
    gvae_libraries(record_library, seen);
    CHECK(strncmp(seen, "OpenBLAS 0.3", 12) == 0);
    CHECK(strstr(seen, "threads 1)") != NULL);
}

static const struct check_test tests[] = {
    {"gemm in all transpose modes", test_gemm_modes},
    {"beta zero ignores garbage", test_beta_zero_ignores_garbage},
    {"library report", test_library_report},
};

CHECK_MAIN(tests, NULL, NULL)
