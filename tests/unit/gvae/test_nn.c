/* Tests for gvae/nn: each layer's forward against a naive double-precision
 * loop, each backward against central finite differences, and the pool,
 * optimizer and MLP built on them.
 *
 * Finite differences perturb one float at a time by FD_EPS and evaluate a
 * double-precision scalar loss. Vector outputs are reduced as
 * sum(out * r) with random weights r (and the backward is fed dout = r), so
 * a gradient with a wrong sign, scale or index cannot pass by symmetry. */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/rng.h"
#include "check.h"
#include "gvae/gvae.h"
#include "gvae/nn.h"

#define FD_EPS  1e-3f
#define FD_RTOL 1e-2
#define FD_ATOL 1e-3

static void setup(void)
{
    gvae_blas_set_threads(1);
}

static void seed(struct sm_rng *r, uint64_t salt)
{
    sm_rng_seed(r, check_seed() ^ (salt * 0x9e3779b97f4a7c15ULL));
}

static void fill(struct sm_rng *r, float *a, size_t n, double scale)
{
    for (size_t i = 0; i < n; i++) {
        a[i] = (float)(scale * sm_rng_normal(r));
    }
}

/* Pushes values away from 0 (|v| >= 0.1), so that no finite difference
 * straddles a ReLU kink. */
static void avoid_zero(float *a, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (fabsf(a[i]) < 0.1f) {
            a[i] = a[i] < 0 ? a[i] - 0.1f : a[i] + 0.1f;
        }
    }
}

static double dot(const float *a, const float *w, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++) {
        s += (double)a[i] * w[i];
    }
    return s;
}

/* max |got - want| / max(1, |want|). */
static double max_err(const float *got, const double *want, size_t n)
{
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs(got[i] - want[i]) / fmax(1.0, fabs(want[i]));
        worst = e > worst || isnan(e) ? e : worst;
    }
    return worst;
}

/* Runs a counting and an assigning pass of @plan over @p into a new block
 * (free() it). */
static float *pool_build(struct nn_pool *p,
                         void (*plan)(struct nn_pool *, void *),
                         void *arg)
{
    nn_pool_begin_count(p);
    plan(p, arg);
    size_t need = nn_pool_end_count(p);
    float *block = malloc((need ? need : 1) * sizeof *block);
    if (block == NULL) {
        abort();
    }
    for (size_t i = 0; i < need; i++) {
        block[i] = NAN; /* begin_assign must clear it */
    }
    nn_pool_begin_assign(p, block);
    plan(p, arg);
    return block;
}

/* ---- Finite differences ---------------------------------------------- */

typedef double (*loss_fn)(void *ctx);

/* fd[k] = d loss / d v[k] by central differences. */
static void fd_grad(loss_fn loss, void *ctx, float *v, size_t n, double *fd)
{
    for (size_t k = 0; k < n; k++) {
        float keep = v[k];
        float hi = keep + FD_EPS, lo = keep - FD_EPS;
        v[k] = hi;
        double lp = loss(ctx);
        v[k] = lo;
        double lm = loss(ctx);
        v[k] = keep;
        fd[k] = (lp - lm) / ((double)hi - (double)lo);
    }
}

/* The analytic gradient matches the finite differences element by element
 * (relative FD_RTOL with an FD_ATOL floor for rounding noise) and as a
 * vector (relative L2 error below FD_RTOL), and is not trivially zero. */
static bool grad_ok(const char *what,
                    const float *an,
                    const double *fd,
                    size_t n)
{
    double num = 0, den = 0;
    size_t bad = 0, first = 0;
    for (size_t k = 0; k < n; k++) {
        double diff = an[k] - fd[k];
        num += diff * diff;
        den += fd[k] * fd[k];
        double tol = FD_RTOL * fmax(fabs(an[k]), fabs(fd[k])) + FD_ATOL;
        if (!(fabs(diff) <= tol) && bad++ == 0) {
            first = k;
        }
    }
    double rel = sqrt(num / den);
    bool ok = den > 1e-6 && rel < FD_RTOL && bad == 0;
    if (!ok) {
        printf(
            "# %s: |fd| %.3g, rel L2 err %.3g, %zu bad; [%zu] %.6g vs "
            "fd %.6g\n",
            what, sqrt(den), rel, bad, first, an[first], fd[first]);
    }
    return ok;
}

/* ---- Pool ------------------------------------------------------------- */

static void test_pool(void)
{
    struct nn_pool p;
    nn_pool_begin_count(&p);
    CHECK(nn_pool_params(&p, 3) == NULL);
    CHECK(nn_pool_params(&p, 4) == NULL);
    CHECK(nn_pool_state(&p, 5) == NULL);
    CHECK(nn_pool_acts(&p, 6) == NULL);
    CHECK(nn_pool_acts(&p, 2) == NULL);
    CHECK(nn_pool_grad(&p, NULL) == NULL);
    size_t need = nn_pool_end_count(&p);
    CHECK_EQ(p.n_params, 7);
    CHECK_EQ(p.n_state, 5);
    CHECK_EQ(p.n_acts, 8);
    CHECK_EQ(need, 4 * 7 + 5 + 8);

    float *block = malloc(need * sizeof *block);
    REQUIRE(block != NULL);
    for (size_t i = 0; i < need; i++) {
        block[i] = -3.0f;
    }
    nn_pool_begin_assign(&p, block);
    size_t nonzero = 0;
    for (size_t i = 0; i < need; i++) {
        nonzero += block[i] != 0.0f;
    }
    CHECK_EQ(nonzero, 0);
    float *a = nn_pool_params(&p, 3), *b = nn_pool_params(&p, 4);
    float *s = nn_pool_state(&p, 5);
    float *x = nn_pool_acts(&p, 6), *y = nn_pool_acts(&p, 2);
    CHECK(a == block);
    CHECK(b == block + 3);
    CHECK(s == block + 28);
    CHECK(x == block + 33);
    CHECK(y == block + 39);
    CHECK(y + 2 == block + need);
    CHECK(nn_pool_grad(&p, a) == block + 7);
    CHECK(nn_pool_grad(&p, b) == block + 10);
    CHECK_EQ(p.used_params, p.n_params);
    CHECK_EQ(p.used_state, p.n_state);
    CHECK_EQ(p.used_acts, p.n_acts);

    for (size_t i = 0; i < need; i++) {
        block[i] = 2.0f;
    }
    nn_pool_zero_grad(&p);
    for (size_t i = 0; i < need; i++) {
        bool is_grad = i >= 7 && i < 14;
        CHECK(block[i] == (is_grad ? 0.0f : 2.0f));
    }
    free(block);
}

/* ---- Linear ----------------------------------------------------------- */

enum { L_IN = 5, L_OUT = 4, L_N = 6 };

struct lin_ctx
{
    struct nn_linear l;
    float x[L_N * L_IN], y[L_N * L_OUT], r[L_N * L_OUT];
};

static void lin_plan(struct nn_pool *p, void *arg)
{
    struct lin_ctx *c = arg;
    nn_linear_plan(&c->l, p, L_IN, L_OUT);
}

static double lin_loss(void *arg)
{
    struct lin_ctx *c = arg;
    nn_linear_forward(&c->l, L_N, c->x, c->y);
    return dot(c->y, c->r, L_N * L_OUT);
}

static void test_linear(void)
{
    struct sm_rng r;
    seed(&r, 1);
    struct lin_ctx c;
    struct nn_pool p;
    float *block = pool_build(&p, lin_plan, &c);
    CHECK_EQ(p.n_params, L_IN * L_OUT + L_OUT);
    CHECK(c.l.gw == c.l.w + p.n_params);
    CHECK(c.l.gb == c.l.b + p.n_params);
    nn_linear_init(&c.l, &r, 1.0f);
    fill(&r, c.l.b, L_OUT, 1.0); /* init zeroes them; test them anyway */
    fill(&r, c.x, L_N * L_IN, 1.0);
    fill(&r, c.r, L_N * L_OUT, 1.0);

    double want[L_N * L_OUT];
    for (size_t i = 0; i < L_N; i++) {
        for (size_t j = 0; j < L_OUT; j++) {
            double s = c.l.b[j];
            for (size_t k = 0; k < L_IN; k++) {
                s += (double)c.x[i * L_IN + k] * c.l.w[k * L_OUT + j];
            }
            want[i * L_OUT + j] = s;
        }
    }
    nn_linear_forward(&c.l, L_N, c.x, c.y);
    CHECK(max_err(c.y, want, L_N * L_OUT) < 1e-5);

    float dx[L_N * L_IN];
    for (size_t i = 0; i < L_N * L_IN; i++) {
        dx[i] = NAN; /* overwritten, never read */
    }
    nn_pool_zero_grad(&p);
    nn_linear_backward(&c.l, L_N, c.x, c.r, dx);

    double fd[L_N * L_IN];
    fd_grad(lin_loss, &c, c.l.w, L_IN * L_OUT, fd);
    CHECK(grad_ok("linear gw", c.l.gw, fd, L_IN * L_OUT));
    fd_grad(lin_loss, &c, c.l.b, L_OUT, fd);
    CHECK(grad_ok("linear gb", c.l.gb, fd, L_OUT));
    fd_grad(lin_loss, &c, c.x, L_N * L_IN, fd);
    CHECK(grad_ok("linear dx", dx, fd, L_N * L_IN));

    /* A second backward (without dx) accumulates the same again. */
    float gw1[L_IN * L_OUT], gb1[L_OUT];
    memcpy(gw1, c.l.gw, sizeof gw1);
    memcpy(gb1, c.l.gb, sizeof gb1);
    nn_linear_backward(&c.l, L_N, c.x, c.r, NULL);
    for (size_t i = 0; i < L_IN * L_OUT; i++) {
        CHECK_NEAR(c.l.gw[i], 2.0 * gw1[i], 1e-5 * (1 + fabsf(gw1[i])));
    }
    for (size_t j = 0; j < L_OUT; j++) {
        CHECK_NEAR(c.l.gb[j], 2.0 * gb1[j], 1e-5 * (1 + fabsf(gb1[j])));
    }
    free(block);
}

static void test_linear_init(void)
{
    enum { IN = 200, OUT = 100 };
    struct sm_rng r;
    seed(&r, 2);
    struct nn_linear l;
    struct nn_pool p;
    nn_pool_begin_count(&p);
    nn_linear_plan(&l, &p, IN, OUT);
    float *block = malloc(nn_pool_end_count(&p) * sizeof *block);
    REQUIRE(block != NULL);
    nn_pool_begin_assign(&p, block);
    nn_linear_plan(&l, &p, IN, OUT);
    for (int g = 0; g < 2; g++) {
        float gain = g ? (float)(1 / sqrt(2.0)) : 1.0f;
        double bound = gain * sqrt(6.0 / IN), sq = 0;
        fill(&r, l.b, OUT, 1.0);
        nn_linear_init(&l, &r, gain);
        size_t outside = 0;
        for (size_t i = 0; i < IN * OUT; i++) {
            outside += fabs(l.w[i]) > bound * (1 + 1e-6);
            sq += (double)l.w[i] * l.w[i];
        }
        CHECK_EQ(outside, 0);
        /* Uniform(-b, b) has variance b^2 / 3; 20000 draws. */
        CHECK_NEAR(sq / (IN * OUT), bound * bound / 3, 0.05 * bound * bound);
        for (size_t j = 0; j < OUT; j++) {
            CHECK(l.b[j] == 0.0f);
        }
    }
    free(block);
}

/* ---- Batch normalisation ---------------------------------------------- */

enum { B_D = 4, B_N = 7 };

struct bn_ctx
{
    struct nn_batchnorm bn;
    float x[B_N * B_D], y[B_N * B_D], r[B_N * B_D];
};

static void bn_plan(struct nn_pool *p, void *arg)
{
    struct bn_ctx *c = arg;
    nn_batchnorm_plan(&c->bn, p, B_D, B_N + 2);
}

static double bn_loss(void *arg)
{
    struct bn_ctx *c = arg;
    nn_batchnorm_forward(&c->bn, B_N, c->x, c->y, 1);
    return dot(c->y, c->r, B_N * B_D);
}

/* Column mean and biased variance, in double. */
static void col_stats(const float *x,
                      size_t n,
                      size_t d,
                      size_t j,
                      double *mean,
                      double *var)
{
    double s = 0, q = 0;
    for (size_t i = 0; i < n; i++) {
        s += x[i * d + j];
    }
    *mean = s / (double)n;
    for (size_t i = 0; i < n; i++) {
        q += (x[i * d + j] - *mean) * (x[i * d + j] - *mean);
    }
    *var = q / (double)n;
}

static void test_batchnorm_train(void)
{
    struct sm_rng r;
    seed(&r, 3);
    struct bn_ctx c;
    struct nn_pool p;
    float *block = pool_build(&p, bn_plan, &c);
    CHECK_EQ(p.n_params, 2 * B_D);
    CHECK_EQ(p.n_state, 2 * B_D);
    nn_batchnorm_init(&c.bn);
    for (size_t j = 0; j < B_D; j++) {
        CHECK(c.bn.gamma[j] == 1.0f && c.bn.beta[j] == 0.0f);
        CHECK(c.bn.run_mean[j] == 0.0f && c.bn.run_var[j] == 1.0f);
    }
    CHECK(c.bn.eps == 1e-5f && c.bn.momentum == 0.1f);
    fill(&r, c.bn.gamma, B_D, 1.0);
    fill(&r, c.bn.beta, B_D, 1.0);
    /* Columns with different offsets and scales. */
    for (size_t i = 0; i < B_N; i++) {
        for (size_t j = 0; j < B_D; j++) {
            c.x[i * B_D + j] = (float)(j - 1.5 + (0.5 + j) * sm_rng_normal(&r));
        }
    }
    fill(&r, c.r, B_N * B_D, 1.0);

    double want[B_N * B_D], mean[B_D], var[B_D];
    for (size_t j = 0; j < B_D; j++) {
        col_stats(c.x, B_N, B_D, j, &mean[j], &var[j]);
        for (size_t i = 0; i < B_N; i++) {
            want[i * B_D + j] = c.bn.gamma[j] * (c.x[i * B_D + j] - mean[j]) /
                                    sqrt(var[j] + 1e-5) +
                                c.bn.beta[j];
        }
    }
    nn_batchnorm_forward(&c.bn, B_N, c.x, c.y, 1);
    CHECK(max_err(c.y, want, B_N * B_D) < 1e-5);

    /* Running statistics: r = 0.9 r + 0.1 batch, unbiased variance. */
    for (size_t j = 0; j < B_D; j++) {
        double unbiased = var[j] * B_N / (B_N - 1);
        CHECK_NEAR(c.bn.run_mean[j], 0.1 * mean[j], 1e-6);
        CHECK_NEAR(c.bn.run_var[j], 0.9 + 0.1 * unbiased, 1e-5);
    }
    nn_batchnorm_forward(&c.bn, B_N, c.x, c.y, 1);
    for (size_t j = 0; j < B_D; j++) {
        double unbiased = var[j] * B_N / (B_N - 1);
        CHECK_NEAR(c.bn.run_mean[j], 0.19 * mean[j], 1e-6);
        CHECK_NEAR(c.bn.run_var[j], 0.81 + 0.19 * unbiased, 1e-5);
    }

    /* In place gives the same output. */
    float inplace[B_N * B_D];
    memcpy(inplace, c.x, sizeof inplace);
    nn_batchnorm_forward(&c.bn, B_N, inplace, inplace, 1);
    CHECK(max_err(inplace, want, B_N * B_D) < 1e-5);

    float dx[B_N * B_D];
    nn_batchnorm_forward(&c.bn, B_N, c.x, c.y, 1);
    nn_pool_zero_grad(&p);
    nn_batchnorm_backward(&c.bn, B_N, c.r, dx);
    double fd[B_N * B_D];
    fd_grad(bn_loss, &c, c.bn.gamma, B_D, fd);
    CHECK(grad_ok("bn dgamma", c.bn.ggamma, fd, B_D));
    fd_grad(bn_loss, &c, c.bn.beta, B_D, fd);
    CHECK(grad_ok("bn dbeta", c.bn.gbeta, fd, B_D));
    fd_grad(bn_loss, &c, c.x, B_N * B_D, fd);
    CHECK(grad_ok("bn dx", dx, fd, B_N * B_D));
    free(block);
}

static void test_batchnorm_inference(void)
{
    struct sm_rng r;
    seed(&r, 4);
    struct bn_ctx c;
    struct nn_pool p;
    float *block = pool_build(&p, bn_plan, &c);
    nn_batchnorm_init(&c.bn);
    fill(&r, c.bn.gamma, B_D, 1.0);
    fill(&r, c.bn.beta, B_D, 1.0);
    for (size_t j = 0; j < B_D; j++) {
        c.bn.run_mean[j] = (float)sm_rng_normal(&r);
        c.bn.run_var[j] = (float)(0.2 + sm_rng_double(&r) * 3);
    }
    float rm[B_D], rv[B_D];
    memcpy(rm, c.bn.run_mean, sizeof rm);
    memcpy(rv, c.bn.run_var, sizeof rv);
    fill(&r, c.x, B_N * B_D, 2.0);

    double want[B_N * B_D];
    for (size_t i = 0; i < B_N; i++) {
        for (size_t j = 0; j < B_D; j++) {
            want[i * B_D + j] = c.bn.gamma[j] * (c.x[i * B_D + j] - rm[j]) /
                                    sqrt((double)rv[j] + 1e-5) +
                                c.bn.beta[j];
        }
    }
    /* One row is enough in inference mode. */
    nn_batchnorm_forward(&c.bn, 1, c.x, c.y, 0);
    CHECK(max_err(c.y, want, B_D) < 1e-5);
    nn_batchnorm_forward(&c.bn, B_N, c.x, c.y, 0);
    CHECK(max_err(c.y, want, B_N * B_D) < 1e-5);
    CHECK(memcmp(rm, c.bn.run_mean, sizeof rm) == 0);
    CHECK(memcmp(rv, c.bn.run_var, sizeof rv) == 0);
    free(block);
}

/* ---- Dropout ---------------------------------------------------------- */

static void test_dropout_mask(void)
{
    enum { COUNT = 200000 };
    const float rate = 0.3f;
    struct sm_rng r;
    seed(&r, 5);
    float *x = malloc(COUNT * sizeof *x), *y = malloc(COUNT * sizeof *y);
    float *mask = malloc(COUNT * sizeof *mask);
    REQUIRE(x && y && mask);
    fill(&r, x, COUNT, 1.0);

    nn_dropout_forward(COUNT, rate, x, y, mask, 1, &r);
    size_t kept = 0, odd = 0, wrong = 0;
    double sum = 0;
    for (size_t k = 0; k < COUNT; k++) {
        kept += mask[k] != 0.0f;
        odd += mask[k] != 0.0f && fabsf(mask[k] - 1 / 0.7f) > 1e-6f;
        wrong += y[k] != x[k] * mask[k];
        sum += mask[k];
    }
    CHECK_EQ(odd, 0);
    CHECK_EQ(wrong, 0);
    /* Kept fraction ~ 0.7, sd sqrt(0.21 / 2e5) ~ 0.001; inverted scaling
     * keeps the mean factor at 1. */
    CHECK_NEAR((double)kept / COUNT, 0.7, 0.005);
    CHECK_NEAR(sum / COUNT, 1.0, 0.01);

    /* Inference and rate 0: identity, mask 1, no draws (rng may be NULL). */
    for (int mode = 0; mode < 2; mode++) {
        memset(y, 0, COUNT * sizeof *y);
        if (mode == 0) {
            nn_dropout_forward(COUNT, 0.5f, x, y, mask, 0, NULL);
        } else {
            nn_dropout_forward(COUNT, 0.0f, x, y, mask, 1, NULL);
        }
        CHECK(memcmp(x, y, COUNT * sizeof *x) == 0);
        size_t not_one = 0;
        for (size_t k = 0; k < COUNT; k++) {
            not_one += mask[k] != 1.0f;
        }
        CHECK_EQ(not_one, 0);
    }

    /* In place: same mask for the same seed. */
    struct sm_rng r1, r2;
    seed(&r1, 6);
    seed(&r2, 6);
    nn_dropout_forward(COUNT, rate, x, y, mask, 1, &r1);
    nn_dropout_forward(COUNT, rate, x, x, mask, 1, &r2);
    CHECK(memcmp(x, y, COUNT * sizeof *x) == 0);
    free(x);
    free(y);
    free(mask);
}

enum { D_COUNT = 40 };

struct drop_ctx
{
    float x[D_COUNT], y[D_COUNT], mask[D_COUNT], r[D_COUNT];
    uint64_t salt;
};

static double drop_loss(void *arg)
{
    struct drop_ctx *c = arg;
    struct sm_rng r;
    seed(&r, c->salt); /* the same mask every time */
    nn_dropout_forward(D_COUNT, 0.4f, c->x, c->y, c->mask, 1, &r);
    return dot(c->y, c->r, D_COUNT);
}

static void test_dropout_backward(void)
{
    struct sm_rng r;
    seed(&r, 7);
    struct drop_ctx c = {.salt = 8};
    fill(&r, c.x, D_COUNT, 1.0);
    fill(&r, c.r, D_COUNT, 1.0);
    drop_loss(&c);
    size_t dropped = 0;
    for (size_t k = 0; k < D_COUNT; k++) {
        dropped += c.mask[k] == 0.0f;
    }
    CHECK(dropped > 0 && dropped < D_COUNT);

    float dx[D_COUNT];
    nn_dropout_backward(D_COUNT, c.mask, c.r, dx);
    for (size_t k = 0; k < D_COUNT; k++) {
        CHECK(dx[k] == c.r[k] * c.mask[k]);
    }
    double fd[D_COUNT];
    fd_grad(drop_loss, &c, c.x, D_COUNT, fd);
    CHECK(grad_ok("dropout dx", dx, fd, D_COUNT));

    float inplace[D_COUNT];
    memcpy(inplace, c.r, sizeof inplace);
    nn_dropout_backward(D_COUNT, c.mask, inplace, inplace);
    CHECK(memcmp(inplace, dx, sizeof dx) == 0);
}

/* ---- Activations ------------------------------------------------------ */

enum { A_COUNT = 30 };

struct act_ctx
{
    enum nn_act act;
    float x[A_COUNT], y[A_COUNT], r[A_COUNT];
};

static double act_loss(void *arg)
{
    struct act_ctx *c = arg;
    nn_act_forward(c->act, A_COUNT, c->x, c->y);
    return dot(c->y, c->r, A_COUNT);
}

static double act_naive(enum nn_act act, double x)
{
    switch (act) {
        case NN_RELU:
            return x > 0 ? x : 0;
        case NN_ELU:
            return x > 0 ? x : exp(x) - 1;
        case NN_TANH:
            return tanh(x);
        default:
            return x;
    }
}

static void test_activations(void)
{
    static const enum nn_act acts[] = {NN_IDENTITY, NN_RELU, NN_ELU, NN_TANH};
    static const char *names[] = {"identity", "relu", "elu", "tanh"};
    struct sm_rng r;
    seed(&r, 9);
    for (size_t a = 0; a < 4; a++) {
        struct act_ctx c = {.act = acts[a]};
        fill(&r, c.x, A_COUNT, 1.5);
        avoid_zero(c.x, A_COUNT);
        fill(&r, c.r, A_COUNT, 1.0);

        double want[A_COUNT];
        for (size_t k = 0; k < A_COUNT; k++) {
            want[k] = act_naive(c.act, c.x[k]);
        }
        nn_act_forward(c.act, A_COUNT, c.x, c.y);
        if (!(max_err(c.y, want, A_COUNT) < 1e-6)) {
            CHECK(!"activation forward matches");
            printf("# %s forward\n", names[a]);
        }

        float dx[A_COUNT];
        nn_act_backward(c.act, A_COUNT, c.x, c.y, c.r, dx);
        double fd[A_COUNT];
        fd_grad(act_loss, &c, c.x, A_COUNT, fd);
        CHECK(grad_ok(names[a], dx, fd, A_COUNT));

        /* In place, forward (x == y) and backward (dy == dx); fd_grad
         * left c.y at a perturbed point. */
        nn_act_forward(c.act, A_COUNT, c.x, c.y);
        float io[A_COUNT], g[A_COUNT];
        memcpy(io, c.x, sizeof io);
        memcpy(g, c.r, sizeof g);
        nn_act_forward(c.act, A_COUNT, io, io);
        CHECK(memcmp(io, c.y, sizeof io) == 0);
        nn_act_backward(c.act, A_COUNT, io, io, g, g);
        CHECK(memcmp(g, dx, sizeof g) == 0);
    }
}

/* ---- Gaussian heads --------------------------------------------------- */

enum { G_N = 3, G_D = 4, G_HEAD = G_N * 2 * G_D };

/* A random head: means ~ N(0, 1), log-variances uniform in [-2, 2]. */
static void fill_head(struct sm_rng *r, float *head, size_t n, size_t d)
{
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < d; j++) {
            head[i * 2 * d + j] = (float)sm_rng_normal(r);
            head[i * 2 * d + d + j] = (float)(4 * sm_rng_double(r) - 2);
        }
    }
}

struct rep_ctx
{
    float head[G_HEAD], eps[G_N * G_D], z[G_N * G_D], r[G_N * G_D];
};

static double rep_loss(void *arg)
{
    struct rep_ctx *c = arg;
    nn_reparam_forward(G_N, G_D, c->head, c->eps, c->z);
    return dot(c->z, c->r, G_N * G_D);
}

static void test_reparam(void)
{
    struct sm_rng r;
    seed(&r, 10);
    struct rep_ctx c;
    fill_head(&r, c.head, G_N, G_D);
    fill(&r, c.eps, G_N * G_D, 1.0);
    fill(&r, c.r, G_N * G_D, 1.0);

    double want[G_N * G_D];
    for (size_t i = 0; i < G_N; i++) {
        for (size_t j = 0; j < G_D; j++) {
            double mu = c.head[i * 2 * G_D + j];
            double lv = c.head[i * 2 * G_D + G_D + j];
            want[i * G_D + j] = mu + exp(lv / 2) * c.eps[i * G_D + j];
        }
    }
    nn_reparam_forward(G_N, G_D, c.head, c.eps, c.z);
    CHECK(max_err(c.z, want, G_N * G_D) < 1e-6);

    /* Accumulates: start from 0.25 everywhere. */
    float dhead[G_HEAD];
    for (size_t k = 0; k < G_HEAD; k++) {
        dhead[k] = 0.25f;
    }
    nn_reparam_backward(G_N, G_D, c.head, c.eps, c.r, dhead);
    for (size_t k = 0; k < G_HEAD; k++) {
        dhead[k] -= 0.25f;
    }
    double fd[G_HEAD];
    fd_grad(rep_loss, &c, c.head, G_HEAD, fd);
    CHECK(grad_ok("reparam dhead", dhead, fd, G_HEAD));
}

struct kl_ctx
{
    float q[G_HEAD], p[G_HEAD];
};

static double kl_loss(void *arg)
{
    struct kl_ctx *c = arg;
    return nn_kl_gauss(G_N, G_D, c->q, c->p, 1.0f, NULL, NULL);
}

static void test_kl(void)
{
    struct sm_rng r;
    seed(&r, 11);
    struct kl_ctx c;
    fill_head(&r, c.q, G_N, G_D);
    fill_head(&r, c.p, G_N, G_D);

    double want = 0;
    for (size_t i = 0; i < G_N; i++) {
        for (size_t j = 0; j < G_D; j++) {
            size_t m = i * 2 * G_D + j, v = m + G_D;
            double muq = c.q[m], mup = c.p[m], lvq = c.q[v], lvp = c.p[v];
            want +=
                0.5 * (lvp - lvq +
                       (exp(lvq) + (muq - mup) * (muq - mup)) / exp(lvp) - 1);
        }
    }
    float dq[G_HEAD] = {0}, dp[G_HEAD] = {0};
    double kl = nn_kl_gauss(G_N, G_D, c.q, c.p, 1.0f, dq, dp);
    CHECK_NEAR(kl, want, 1e-9 * (1 + fabs(want)));
    CHECK(kl > 0);

    /* All four of mu_q, lv_q (in q) and mu_p, lv_p (in p). */
    double fd[G_HEAD];
    fd_grad(kl_loss, &c, c.q, G_HEAD, fd);
    CHECK(grad_ok("kl dq", dq, fd, G_HEAD));
    fd_grad(kl_loss, &c, c.p, G_HEAD, fd);
    CHECK(grad_ok("kl dp", dp, fd, G_HEAD));

    /* scale multiplies the accumulated gradient; NULL skips one side. */
    float dq2[G_HEAD] = {0};
    CHECK_NEAR(nn_kl_gauss(G_N, G_D, c.q, c.p, 2.5f, dq2, NULL), kl, 1e-12);
    for (size_t k = 0; k < G_HEAD; k++) {
        CHECK_NEAR(dq2[k], 2.5 * dq[k], 1e-5 * (1 + fabsf(dq[k])));
    }

    /* KL(q || q) = 0 with zero gradient. */
    float z1[G_HEAD] = {0}, z2[G_HEAD] = {0};
    CHECK_NEAR(nn_kl_gauss(G_N, G_D, c.q, c.q, 1.0f, z1, z2), 0.0, 1e-9);
    for (size_t k = 0; k < G_HEAD; k++) {
        CHECK_NEAR(z1[k], 0.0, 1e-6);
        CHECK_NEAR(z2[k], 0.0, 1e-6);
    }
}

struct nll_ctx
{
    float head[G_HEAD], y[G_N * G_D], mask[G_N * G_D], w[G_N];
};

static double nll_loss(void *arg)
{
    struct nll_ctx *c = arg;
    return nn_gauss_nll(G_N, G_D, c->head, c->y, c->mask, c->w, 1.0f, NULL);
}

static void test_gauss_nll(void)
{
    const double log_2pi = log(2 * M_PI);
    struct sm_rng r;
    seed(&r, 12);
    struct nll_ctx c;
    fill_head(&r, c.head, G_N, G_D);
    fill(&r, c.y, G_N * G_D, 1.5);
    for (size_t k = 0; k < G_N * G_D; k++) {
        c.mask[k] = k % 5 == 2 ? 0.0f : 1.0f;
    }
    c.y[2] = NAN; /* masked: must not be read into the sum */
    c.w[0] = 0.5f;
    c.w[1] = 2.0f;
    c.w[2] = 1.25f;

    double want = 0, plain = 0;
    for (size_t i = 0; i < G_N; i++) {
        for (size_t j = 0; j < G_D; j++) {
            size_t e = i * G_D + j;
            double mu = c.head[i * 2 * G_D + j];
            double lv = c.head[i * 2 * G_D + G_D + j];
            double v =
                0.5 * (log_2pi + lv + (c.y[e] - mu) * (c.y[e] - mu) / exp(lv));
            if (c.mask[e] != 0.0f) {
                want += c.w[i] * v;
            }
            if (e != 2) {
                plain += v;
            }
        }
    }
    float dhead[G_HEAD];
    for (size_t k = 0; k < G_HEAD; k++) {
        dhead[k] = -1.0f;
    }
    double nll = nn_gauss_nll(G_N, G_D, c.head, c.y, c.mask, c.w, 1.0f, dhead);
    CHECK_NEAR(nll, want, 1e-9 * (1 + fabs(want)));
    for (size_t k = 0; k < G_HEAD; k++) {
        dhead[k] += 1.0f;
    }
    double fd[G_HEAD];
    fd_grad(nll_loss, &c, c.head, G_HEAD, fd);
    CHECK(grad_ok("nll dhead", dhead, fd, G_HEAD));
    /* Masked elements get exactly nothing. */
    for (size_t i = 0; i < G_N; i++) {
        for (size_t j = 0; j < G_D; j++) {
            if (c.mask[i * G_D + j] == 0.0f) {
                CHECK(dhead[i * 2 * G_D + j] == 0.0f);
                CHECK(dhead[i * 2 * G_D + G_D + j] == 0.0f);
            }
        }
    }

    /* NULL mask and weights count everything with weight 1 (y[2] made
     * finite again), and scale multiplies the gradient. */
    c.y[2] = 0.5f;
    double mu2 = c.head[2], lv2 = c.head[G_D + 2];
    plain += 0.5 * (log_2pi + lv2 + (0.5 - mu2) * (0.5 - mu2) / exp(lv2));
    float d1[G_HEAD] = {0}, d3[G_HEAD] = {0};
    double all = nn_gauss_nll(G_N, G_D, c.head, c.y, NULL, NULL, 1.0f, d1);
    CHECK_NEAR(all, plain, 1e-9 * (1 + fabs(plain)));
    nn_gauss_nll(G_N, G_D, c.head, c.y, NULL, NULL, 3.0f, d3);
    for (size_t k = 0; k < G_HEAD; k++) {
        CHECK_NEAR(d3[k], 3.0 * d1[k], 1e-5 * (1 + fabsf(d1[k])));
    }
}

/* Log-variances outside [NN_LOGVAR_MIN, NN_LOGVAR_MAX] are used clamped
 * and get no gradient; the means still get theirs. */
static void test_logvar_clamp(void)
{
    enum { D = 3 };
    /* mu | lv: 12 (above), -12 (below), 0.5 (inside). */
    float head[2 * D] = {0.3f, -0.2f, 0.1f, 12.0f, -12.0f, 0.5f};
    float at[2 * D] = {0.3f, -0.2f, 0.1f, NN_LOGVAR_MAX, NN_LOGVAR_MIN, 0.5f};
    float eps[D] = {0.7f, -1.1f, 0.4f}, dz[D] = {1.0f, 1.0f, 1.0f};
    float y[D] = {1.0f, 0.5f, -0.3f};

    float z[D], dh[2 * D] = {0};
    nn_reparam_forward(1, D, head, eps, z);
    CHECK_NEAR(z[0], 0.3 + exp(5.0) * 0.7, 1e-3);
    CHECK_NEAR(z[1], -0.2 - exp(-5.0) * 1.1, 1e-6);
    nn_reparam_backward(1, D, head, eps, dz, dh);
    CHECK(dh[3] == 0.0f && dh[4] == 0.0f && dh[5] != 0.0f);
    CHECK(dh[0] == 1.0f && dh[1] == 1.0f && dh[2] == 1.0f);

    float dq[2 * D] = {0}, dp[2 * D] = {0};
    float other[2 * D] = {0.0f, 0.1f, 0.2f, 0.3f, -0.3f, 1.0f};
    double kl = nn_kl_gauss(1, D, head, other, 1.0f, dq, NULL);
    CHECK_NEAR(kl, nn_kl_gauss(1, D, at, other, 1.0f, NULL, NULL), 1e-9);
    CHECK(dq[3] == 0.0f && dq[4] == 0.0f && dq[5] != 0.0f);
    CHECK(dq[0] != 0.0f && dq[1] != 0.0f);
    kl = nn_kl_gauss(1, D, other, head, 1.0f, NULL, dp);
    CHECK_NEAR(kl, nn_kl_gauss(1, D, other, at, 1.0f, NULL, NULL), 1e-9);
    CHECK(dp[3] == 0.0f && dp[4] == 0.0f && dp[5] != 0.0f);
    CHECK(dp[0] != 0.0f && dp[1] != 0.0f);

    float dn[2 * D] = {0};
    double nll = nn_gauss_nll(1, D, head, y, NULL, NULL, 1.0f, dn);
    CHECK_NEAR(nll, nn_gauss_nll(1, D, at, y, NULL, NULL, 1.0f, NULL), 1e-9);
    CHECK(isfinite(nll));
    CHECK(dn[3] == 0.0f && dn[4] == 0.0f && dn[5] != 0.0f);
    CHECK(dn[0] != 0.0f && dn[1] != 0.0f);
}

/* ---- Optimisation ----------------------------------------------------- */

enum { O_N = 4 };

static void opt_plan(struct nn_pool *p, void *arg)
{
    float **w = arg;
    *w = nn_pool_params(p, O_N);
    nn_pool_state(p, 2); /* other regions, to catch offset mistakes */
    nn_pool_acts(p, 3);
}

static void test_adam(void)
{
    struct nn_adam a;
    nn_adam_init(&a);
    CHECK(a.lr == 1e-3f && a.beta1 == 0.9f && a.beta2 == 0.999f);
    CHECK(a.eps == 1e-8f && a.weight_decay == 1e-4f && a.t == 0);
    a.lr = 0.1f;
    a.weight_decay = 0.01f;

    float *w;
    struct nn_pool p;
    float *block = pool_build(&p, opt_plan, &w);
    float *g = nn_pool_grad(&p, w);
    const float w0[O_N] = {1.0f, -0.5f, 2.0f, 0.0f};
    const float grads[2][O_N] = {{0.5f, -0.2f, 0.0f, 1e-3f},
                                 {-0.25f, 0.3f, 1e-3f, -2.0f}};
    memcpy(w, w0, sizeof w0);

    /* Reference in double, straight from the formulas. */
    double rw[O_N], rm[O_N] = {0}, rv[O_N] = {0};
    for (size_t k = 0; k < O_N; k++) {
        rw[k] = w0[k];
    }
    for (int t = 1; t <= 2; t++) {
        memcpy(g, grads[t - 1], sizeof grads[0]);
        nn_adam_step(&a, &p);
        for (size_t k = 0; k < O_N; k++) {
            double gk = grads[t - 1][k];
            rm[k] = 0.9 * rm[k] + 0.1 * gk;
            rv[k] = 0.999 * rv[k] + 0.001 * gk * gk;
            double mh = rm[k] / (1 - pow(0.9, t));
            double vh = rv[k] / (1 - pow(0.999, t));
            rw[k] -= 0.1 * (mh / (sqrt(vh) + 1e-8) + 0.01 * rw[k]);
            CHECK_NEAR(w[k], rw[k], 1e-5);
            /* float betas are 0.9 and 0.999 to ~1e-8 absolute, so 1 - b2
             * is off by ~1e-5 relative. */
            CHECK_NEAR(w[2 * p.n_params + k], rm[k], 1e-4 * fabs(rm[k]));
            CHECK_NEAR(w[3 * p.n_params + k], rv[k], 1e-4 * rv[k]);
        }
        if (t == 1) {
            /* By hand: mhat = g, vhat = g^2, so the step is lr (sign(g) +
             * wd w): 1 - 0.1 (1 + 0.01) = 0.899. */
            CHECK_NEAR(w[0], 0.899, 1e-6);
        }
    }
    /* Step 2 by hand: m = 0.02, v = 0.00031225, mhat = 0.02 / 0.19,
     * vhat = 0.00031225 / 0.001999. */
    CHECK_NEAR(w[0], 0.8714672987, 1e-6);
    CHECK(a.t == 2);
    /* Gradients are left alone, state and acts untouched. */
    CHECK(g[0] == -0.25f);
    for (size_t k = 4 * p.n_params; k < 4 * p.n_params + 5; k++) {
        CHECK(block[k] == 0.0f);
    }
    free(block);
}

static void test_clip(void)
{
    float *w;
    struct nn_pool p;
    float *block = pool_build(&p, opt_plan, &w);
    float *g = nn_pool_grad(&p, w);
    const float g0[O_N] = {3.0f, 4.0f, 0.0f, 12.0f}; /* norm 13 */

    memcpy(g, g0, sizeof g0);
    CHECK_NEAR(nn_clip_grad_norm(&p, 100.0), 13.0, 1e-9);
    CHECK(memcmp(g, g0, sizeof g0) == 0);

    CHECK_NEAR(nn_clip_grad_norm(&p, 6.5), 13.0, 1e-9);
    double sq = 0;
    for (size_t k = 0; k < O_N; k++) {
        sq += (double)g[k] * g[k];
        CHECK_NEAR(g[k], 0.5 * g0[k], 1e-6);
    }
    CHECK_NEAR(sqrt(sq), 6.5, 1e-5);
    CHECK_NEAR(nn_clip_grad_norm(&p, 100.0), 6.5, 1e-5);

    const float bad[2] = {INFINITY, NAN};
    for (int b = 0; b < 2; b++) {
        memcpy(g, g0, sizeof g0);
        g[1] = bad[b];
        CHECK(!isfinite(nn_clip_grad_norm(&p, 1.0)));
        for (size_t k = 0; k < O_N; k++) {
            CHECK(g[k] == 0.0f);
        }
    }
    free(block);
}

/* ---- MLP -------------------------------------------------------------- */

enum { M_ROWS = 8, M_N = 6, M_WIDE = 16 };

struct mlp_ctx
{
    struct nn_mlp m;
    struct nn_mlp_shape shape;
    float x[M_ROWS * M_WIDE], r[M_ROWS * M_WIDE];
    uint64_t salt; /* of the dropout rng, reseeded for every forward */
};

static void mlp_plan(struct nn_pool *p, void *arg)
{
    struct mlp_ctx *c = arg;
    nn_mlp_plan(&c->m, p, &c->shape, M_ROWS);
}

static const float *mlp_train(struct mlp_ctx *c)
{
    struct sm_rng r;
    seed(&r, c->salt);
    return nn_mlp_forward(&c->m, M_N, c->x, 1, &r);
}

static double mlp_loss(void *arg)
{
    struct mlp_ctx *c = arg;
    return dot(mlp_train(c), c->r, M_N * c->shape.out);
}

/* The MLP recomputed in double from its parameters: batch statistics in
 * training mode (with the mask of the last forward), running statistics in
 * inference mode. */
static void mlp_naive(const struct nn_mlp *m,
                      size_t n,
                      const float *x,
                      int train,
                      double *out)
{
    static double a[M_ROWS * M_WIDE], b[M_ROWS * M_WIDE];
    const struct nn_mlp_shape *s = &m->shape;
    size_t width = s->in;
    for (size_t k = 0; k < n * width; k++) {
        a[k] = x[k];
    }
    for (size_t l = 0; l <= s->n_hidden; l++) {
        const struct nn_linear *lin = &m->lin[l];
        for (size_t i = 0; i < n; i++) {
            for (size_t j = 0; j < lin->out; j++) {
                double v = lin->b[j];
                for (size_t k = 0; k < lin->in; k++) {
                    v += a[i * lin->in + k] * lin->w[k * lin->out + j];
                }
                b[i * lin->out + j] = v;
            }
        }
        width = lin->out;
        if (l == s->n_hidden) {
            break;
        }
        if (l + 1 < s->n_hidden) {
            const struct nn_batchnorm *bn = &m->bn[l];
            for (size_t j = 0; j < width; j++) {
                double mean = bn->run_mean[j], var = bn->run_var[j];
                if (train) {
                    double sum = 0, q = 0;
                    for (size_t i = 0; i < n; i++) {
                        sum += b[i * width + j];
                    }
                    mean = sum / (double)n;
                    for (size_t i = 0; i < n; i++) {
                        double d = b[i * width + j] - mean;
                        q += d * d;
                    }
                    var = q / (double)n;
                }
                for (size_t i = 0; i < n; i++) {
                    double *v = &b[i * width + j];
                    *v = bn->gamma[j] * (*v - mean) / sqrt(var + bn->eps) +
                         bn->beta[j];
                }
            }
        }
        for (size_t k = 0; k < n * width; k++) {
            a[k] = act_naive(s->act, b[k]);
            if (l + 1 == s->n_hidden && train) {
                a[k] *= m->mask[k];
            }
        }
    }
    memcpy(out, b, n * width * sizeof *out);
}

/* Builds, initialises and fills an MLP of @shape; returns the block. */
static float *mlp_setup(struct mlp_ctx *c,
                        struct nn_pool *p,
                        const struct nn_mlp_shape *shape,
                        uint64_t salt)
{
    struct sm_rng r;
    seed(&r, salt);
    memset(c, 0, sizeof *c);
    c->shape = *shape;
    c->salt = salt + 1000;
    float *block = pool_build(p, mlp_plan, c);
    nn_mlp_init(&c->m, &r);
    /* Non-trivial biases and batch-norm affine parameters too. */
    for (size_t l = 0; l <= shape->n_hidden; l++) {
        fill(&r, c->m.lin[l].b, c->m.lin[l].out, 0.3);
    }
    for (size_t l = 0; l + 1 < shape->n_hidden; l++) {
        for (size_t j = 0; j < c->m.bn[l].d; j++) {
            c->m.bn[l].gamma[j] = (float)(0.5 + sm_rng_double(&r));
        }
        fill(&r, c->m.bn[l].beta, c->m.bn[l].d, 0.3);
    }
    fill(&r, c->x, M_ROWS * shape->in, 1.0);
    fill(&r, c->r, M_ROWS * shape->out, 1.0);
    return block;
}

static void check_mlp_grads(const struct nn_mlp_shape *shape, uint64_t salt)
{
    static struct mlp_ctx c;
    struct nn_pool p;
    float *block = mlp_setup(&c, &p, shape, salt);

    double want[M_ROWS * M_WIDE];
    const float *out = mlp_train(&c);
    mlp_naive(&c.m, M_N, c.x, 1, want);
    CHECK(max_err(out, want, M_N * shape->out) < 1e-5);

    float dx[M_ROWS * M_WIDE];
    nn_pool_zero_grad(&p);
    mlp_train(&c);
    nn_mlp_backward(&c.m, M_N, c.x, c.r, dx);

    /* Every parameter (the flat value region against the flat gradient
     * region), then the input. */
    double *fd = malloc(p.n_params * sizeof *fd);
    REQUIRE(fd != NULL);
    fd_grad(mlp_loss, &c, p.block, p.n_params, fd);
    char what[64];
    snprintf(what, sizeof what, "mlp %zu hidden params", shape->n_hidden);
    CHECK(grad_ok(what, p.block + p.n_params, fd, p.n_params));
    fd_grad(mlp_loss, &c, c.x, M_N * shape->in, fd);
    snprintf(what, sizeof what, "mlp %zu hidden dx", shape->n_hidden);
    CHECK(grad_ok(what, dx, fd, M_N * shape->in));
    free(fd);
    free(block);
}

static void test_mlp_two_hidden(void)
{
    struct nn_mlp_shape s = {
        .in = 5, .out = 4, .n_hidden = 2, .hidden = {8, 7}, .act = NN_TANH};
    check_mlp_grads(&s, 20);
}

static void test_mlp_three_hidden(void)
{
    struct nn_mlp_shape s = {
        .in = 5, .out = 6, .n_hidden = 3, .hidden = {9, 7, 6}, .act = NN_ELU};
    check_mlp_grads(&s, 21);
}

/* Dropout > 0 with the mask held fixed by reseeding for every forward. */
static void test_mlp_dropout(void)
{
    struct nn_mlp_shape s = {.in = 4,
                             .out = 4,
                             .n_hidden = 3,
                             .hidden = {6, 8, 10},
                             .act = NN_TANH,
                             .dropout = 0.3f};
    check_mlp_grads(&s, 22);
}

static void test_mlp_four_hidden_relu(void)
{
    struct nn_mlp_shape s = {.in = 3,
                             .out = 2,
                             .n_hidden = 4,
                             .hidden = {5, 6, 7, 8},
                             .act = NN_RELU,
                             .dropout = 0.2f};
    static struct mlp_ctx c;
    struct nn_pool p;
    float *block = mlp_setup(&c, &p, &s, 23);
    double want[M_ROWS * M_WIDE];
    const float *out = mlp_train(&c);
    mlp_naive(&c.m, M_N, c.x, 1, want);
    CHECK(max_err(out, want, M_N * s.out) < 1e-5);
    free(block);
}

static void test_mlp_inference(void)
{
    struct nn_mlp_shape s = {.in = 5,
                             .out = 4,
                             .n_hidden = 3,
                             .hidden = {8, 7, 6},
                             .act = NN_ELU,
                             .dropout = 0.5f};
    static struct mlp_ctx c;
    struct nn_pool p;
    float *block = mlp_setup(&c, &p, &s, 24);
    /* A few training forwards move the running statistics. */
    for (int i = 0; i < 3; i++) {
        c.salt += 1;
        mlp_train(&c);
    }
    float before[M_ROWS * M_WIDE];
    const float *out = nn_mlp_forward(&c.m, M_N, c.x, 0, NULL);
    memcpy(before, out, M_N * s.out * sizeof *out);
    double want[M_ROWS * M_WIDE];
    mlp_naive(&c.m, M_N, c.x, 0, want);
    CHECK(max_err(out, want, M_N * s.out) < 1e-5);
    for (size_t k = 0; k < M_N * s.hidden[2]; k++) {
        CHECK(c.m.mask[k] == 1.0f);
    }
    /* Rows are independent in inference mode: one row alone agrees. */
    out = nn_mlp_forward(&c.m, 1, c.x, 0, NULL);
    CHECK(max_err(out, want, s.out) < 1e-5);
    /* And the running statistics did not move. */
    out = nn_mlp_forward(&c.m, M_N, c.x, 0, NULL);
    CHECK(memcmp(out, before, M_N * s.out * sizeof *out) == 0);
    free(block);
}

/* Fresh networks: a Gaussian head starts near mean 0, log-variance 0. */
static void test_mlp_init_scale(void)
{
    struct nn_mlp_shape s = {.in = 6,
                             .out = 8,
                             .n_hidden = 3,
                             .hidden = {16, 16, 16},
                             .act = NN_RELU};
    static struct mlp_ctx c;
    struct nn_pool p;
    struct sm_rng r;
    seed(&r, 25);
    memset(&c, 0, sizeof c);
    c.shape = s;
    float *block = pool_build(&p, mlp_plan, &c);
    nn_mlp_init(&c.m, &r);
    fill(&r, c.x, M_ROWS * s.in, 1.0);
    const float *out = nn_mlp_forward(&c.m, M_ROWS, c.x, 1, &r);
    double sq = 0;
    for (size_t k = 0; k < M_ROWS * s.out; k++) {
        sq += (double)out[k] * out[k];
    }
    double rms = sqrt(sq / (M_ROWS * s.out));
    CHECK(rms > 1e-3 && rms < 0.5);
    for (size_t l = 0; l <= s.n_hidden; l++) {
        for (size_t j = 0; j < c.m.lin[l].out; j++) {
            CHECK(c.m.lin[l].b[j] == 0.0f);
        }
    }
    free(block);
}

static void test_mlp_deterministic(void)
{
    struct nn_mlp_shape s = {.in = 5,
                             .out = 4,
                             .n_hidden = 3,
                             .hidden = {8, 7, 6},
                             .act = NN_ELU,
                             .dropout = 0.25f};
    static struct mlp_ctx c[3];
    struct nn_pool p[3];
    float *block[3];
    float outs[3][M_ROWS * M_WIDE];
    for (int i = 0; i < 3; i++) {
        block[i] = mlp_setup(&c[i], &p[i], &s, i < 2 ? 30 : 31);
        memcpy(outs[i], mlp_train(&c[i]), M_N * s.out * sizeof(float));
        nn_pool_zero_grad(&p[i]);
        nn_mlp_backward(&c[i].m, M_N, c[i].x, c[i].r, NULL);
    }
    REQUIRE(p[0].n_params == p[1].n_params);
    size_t bytes =
        (4 * p[0].n_params + p[0].n_state + p[0].n_acts) * sizeof(float);
    /* Bit-identical everything: weights, grads, moments, state, caches. */
    CHECK(memcmp(block[0], block[1], bytes) == 0);
    CHECK(memcmp(outs[0], outs[1], M_N * s.out * sizeof(float)) == 0);
    CHECK(memcmp(outs[0], outs[2], M_N * s.out * sizeof(float)) != 0);
    for (int i = 0; i < 3; i++) {
        free(block[i]);
    }
}

/* ---- MLP pool layout -------------------------------------------------- */

struct range
{
    const float *p;
    size_t n;
};

/* The ranges are pairwise disjoint, lie in [lo, lo + total) and exactly
 * cover it. */
static bool tiles(const struct range *rs,
                  size_t n_rs,
                  const float *lo,
                  size_t total)
{
    size_t sum = 0;
    for (size_t a = 0; a < n_rs; a++) {
        if (rs[a].p < lo || rs[a].p + rs[a].n > lo + total) {
            printf("# range %zu outside its region\n", a);
            return false;
        }
        for (size_t b = a + 1; b < n_rs; b++) {
            if (rs[a].p < rs[b].p + rs[b].n && rs[b].p < rs[a].p + rs[a].n) {
                printf("# ranges %zu and %zu overlap\n", a, b);
                return false;
            }
        }
        sum += rs[a].n;
    }
    return sum == total;
}

static void test_mlp_pool(void)
{
    struct nn_mlp_shape s = {.in = 5,
                             .out = 4,
                             .n_hidden = 3,
                             .hidden = {8, 7, 6},
                             .act = NN_RELU,
                             .dropout = 0.1f};
    static struct mlp_ctx c;
    struct nn_pool p;
    memset(&c, 0, sizeof c);
    c.shape = s;
    float *block = pool_build(&p, mlp_plan, &c);
    struct nn_mlp *m = &c.m;

    size_t want_params =
        (5 * 8 + 8) + (8 * 7 + 7) + (7 * 6 + 6) + (6 * 4 + 4) + 2 * (8 + 7);
    CHECK_EQ(p.n_params, want_params);
    CHECK_EQ(p.n_state, 2 * (8 + 7));
    size_t widest = 8, rows = M_ROWS;
    size_t want_acts = 2 * (8 + 7) + rows * (8 + 7) /* bn */ +
                       rows * (3 * 8 + 3 * 7 + 2 * 6) /* pre, norm, h */ +
                       2 * rows * 6 /* act_last, mask */ + rows * 4 +
                       2 * rows * widest;
    CHECK_EQ(p.n_acts, want_acts);

    struct range par[16], grad[16], st[4], act[32];
    size_t np = 0, ns = 0, na = 0;
    for (size_t l = 0; l <= s.n_hidden; l++) {
        const struct nn_linear *lin = &m->lin[l];
        CHECK(lin->gw == lin->w + p.n_params);
        CHECK(lin->gb == lin->b + p.n_params);
        par[np] = (struct range){lin->w, lin->in * lin->out};
        grad[np++] = (struct range){lin->gw, lin->in * lin->out};
        par[np] = (struct range){lin->b, lin->out};
        grad[np++] = (struct range){lin->gb, lin->out};
    }
    for (size_t l = 0; l + 1 < s.n_hidden; l++) {
        const struct nn_batchnorm *bn = &m->bn[l];
        CHECK(bn->ggamma == bn->gamma + p.n_params);
        CHECK(bn->gbeta == bn->beta + p.n_params);
        par[np] = (struct range){bn->gamma, bn->d};
        grad[np++] = (struct range){bn->ggamma, bn->d};
        par[np] = (struct range){bn->beta, bn->d};
        grad[np++] = (struct range){bn->gbeta, bn->d};
        st[ns++] = (struct range){bn->run_mean, bn->d};
        st[ns++] = (struct range){bn->run_var, bn->d};
        act[na++] = (struct range){bn->mean, bn->d};
        act[na++] = (struct range){bn->invstd, bn->d};
        act[na++] = (struct range){bn->xhat, rows * bn->d};
    }
    for (size_t l = 0; l < s.n_hidden; l++) {
        act[na++] = (struct range){m->pre[l], rows * s.hidden[l]};
        act[na++] = (struct range){m->h[l], rows * s.hidden[l]};
        if (l + 1 < s.n_hidden) {
            act[na++] = (struct range){m->norm[l], rows * s.hidden[l]};
        } else {
            CHECK(m->norm[l] == NULL);
        }
    }
    CHECK(m->pre[3] == NULL && m->h[3] == NULL);
    act[na++] = (struct range){m->act_last, rows * 6};
    act[na++] = (struct range){m->mask, rows * 6};
    act[na++] = (struct range){m->out, rows * 4};
    act[na++] = (struct range){m->g0, rows * widest};
    act[na++] = (struct range){m->g1, rows * widest};

    const float *b = p.block;
    CHECK(tiles(par, np, b, p.n_params));
    CHECK(tiles(grad, np, b + p.n_params, p.n_params));
    CHECK(tiles(st, ns, b + 4 * p.n_params, p.n_state));
    CHECK(tiles(act, na, b + 4 * p.n_params + p.n_state, p.n_acts));
    free(block);
}

static const struct check_test tests[] = {
    {"pool counts and assigns", test_pool},
    {"linear forward and gradients", test_linear},
    {"linear init bounds", test_linear_init},
    {"batchnorm train forward, stats, gradients", test_batchnorm_train},
    {"batchnorm inference", test_batchnorm_inference},
    {"dropout mask statistics and identity", test_dropout_mask},
    {"dropout backward", test_dropout_backward},
    {"activations forward and gradients", test_activations},
    {"reparam forward and gradient", test_reparam},
    {"kl divergence and gradients", test_kl},
    {"gaussian nll with mask and weights", test_gauss_nll},
    {"logvar clamp has no gradient", test_logvar_clamp},
    {"adam two steps", test_adam},
    {"clip grad norm", test_clip},
    {"mlp 2 hidden gradients", test_mlp_two_hidden},
    {"mlp 3 hidden gradients", test_mlp_three_hidden},
    {"mlp dropout gradients", test_mlp_dropout},
    {"mlp 4 hidden relu forward", test_mlp_four_hidden_relu},
    {"mlp inference", test_mlp_inference},
    {"mlp init scale", test_mlp_init_scale},
    {"mlp deterministic", test_mlp_deterministic},
    {"mlp pool layout", test_mlp_pool},
};

CHECK_MAIN(tests, setup, NULL)
