/* Neural-network layers on row-major float32 matrices (internal to gvae/).
 *
 * Everything a model needs (weights, gradients, Adam moments, persistent
 * state such as batch-norm running statistics, and the activation caches of
 * its largest batch) lives in one block of floats allocated when the model
 * is created, so a training step never allocates. Layers are planned in two
 * passes over the same code: a counting pass (pool block NULL) sizes the
 * block, then an assigning pass hands out pointers into it.
 *
 * Matrices are row-major: a batch of n rows of d features is n * d floats,
 * row i at [i * d]. Products go through gvae__gemm (one cblas_sgemm each).
 *
 * Backward functions ACCUMULATE parameter gradients (+=) so that a layer used
 * twice in one step (the decoder, on posterior and prior samples) sums both;
 * nn_pool_zero_grad() clears them before a step. Input gradients (dx) are
 * OVERWRITTEN unless a function says otherwise. None of these functions can
 * fail: shapes are the caller's contract (checked with SM_ASSERT). */
#ifndef SM_GVAE_NN_H
#define SM_GVAE_NN_H

#include <stddef.h>
#include <stdint.h>

#include "base/rng.h"

/* ---- Float pool ----------------------------------------------------------
 *
 * Block layout, each region contiguous:
 *   [values n_params][grads n_params][adam m n_params][adam v n_params]
 *   [state n_state][acts n_acts]
 * so the gradient of the parameter at value pointer w is w + n_params, and
 * the optimizer and the checkpoint walk flat vectors. */
struct nn_pool
{
    float *block;                     /* NULL during the counting pass */
    size_t n_params, n_state, n_acts; /* totals (set by the counting pass) */
    size_t used_params, used_state, used_acts; /* cursors of this pass */
};

/* Starts a counting pass: zeroes everything. */
void nn_pool_begin_count(struct nn_pool *p);

/* Ends the counting pass: moves the cursors into the totals. Returns the
 * number of floats the block needs. */
size_t nn_pool_end_count(struct nn_pool *p);

/* Starts the assigning pass over @block (nn_pool_end_count() floats, owned by
 * the caller); zeroes the whole block and the cursors. */
void nn_pool_begin_assign(struct nn_pool *p, float *block);

/* Reserve @n floats in a region. In the counting pass they return NULL; in
 * the assigning pass, pointers into the block. */
float *nn_pool_params(struct nn_pool *p, size_t n);
float *nn_pool_state(struct nn_pool *p, size_t n);
float *nn_pool_acts(struct nn_pool *p, size_t n);

/* The gradient of the parameters at @value (a pointer nn_pool_params gave). */
float *nn_pool_grad(const struct nn_pool *p, const float *value);

/* Zeroes all parameter gradients. */
void nn_pool_zero_grad(struct nn_pool *p);

/* ---- Linear: y = x W + b -------------------------------------------------
 * W is in x out row-major (row i holds the weights from input feature i),
 * so a checkpoint can map input features by name to rows. */
struct nn_linear
{
    size_t in, out;
    float *w, *b;   /* parameters */
    float *gw, *gb; /* their gradients */
};

void nn_linear_plan(struct nn_linear *l,
                    struct nn_pool *p,
                    size_t in,
                    size_t out);

/* Kaiming-uniform weights scaled by @gain (1 for ReLU-like, use
 * 1/sqrt(2) for tanh/linear outputs), zero biases. */
void nn_linear_init(struct nn_linear *l, struct sm_rng *rng, float gain);

/* y[n x out] = x[n x in] W + b. */
void nn_linear_forward(const struct nn_linear *l,
                       size_t n,
                       const float *x,
                       float *y);

/* gw += x^T dy, gb += column sums of dy; dx = dy W^T when @dx is not NULL. */
void nn_linear_backward(struct nn_linear *l,
                        size_t n,
                        const float *x,
                        const float *dy,
                        float *dx);

/* ---- Batch normalisation (Ioffe and Szegedy 2015) -------------------------
 * Training mode normalises with the batch's mean and biased variance, caches
 * what backward needs, and updates the running statistics
 * (r = (1 - momentum) r + momentum * batch, unbiased variance); inference
 * mode uses the running statistics. Training needs n >= 2. */
struct nn_batchnorm
{
    size_t d, max_rows;
    float eps, momentum;
    float *gamma, *beta, *ggamma, *gbeta; /* parameters, gradients */
    float *run_mean, *run_var;            /* state */
    float *mean, *invstd, *xhat;          /* acts: batch statistics, cache */
};

void nn_batchnorm_plan(struct nn_batchnorm *bn,
                       struct nn_pool *p,
                       size_t d,
                       size_t max_rows);
/* gamma = 1, beta = 0, running mean 0 and variance 1, eps 1e-5,
 * momentum 0.1. */
void nn_batchnorm_init(struct nn_batchnorm *bn);
void nn_batchnorm_forward(struct nn_batchnorm *bn,
                          size_t n,
                          const float *x,
                          float *y,
                          int train);
/* After a training-mode forward of the same n rows. */
void nn_batchnorm_backward(struct nn_batchnorm *bn,
                           size_t n,
                           const float *dy,
                           float *dx);

/* ---- Dropout (inverted) ----------------------------------------------------
 * Training: each element is kept with probability 1 - @rate and scaled by
 * 1 / (1 - rate); @mask[k] records the factor (0 or 1 / (1 - rate)).
 * Inference (train = 0) or rate 0: y = x, mask all 1. @x and @y may alias. */
void nn_dropout_forward(size_t count,
                        float rate,
                        const float *x,
                        float *y,
                        float *mask,
                        int train,
                        struct sm_rng *rng);
/* dx = dy * mask; @dy and @dx may alias. */
void nn_dropout_backward(size_t count,
                         const float *mask,
                         const float *dy,
                         float *dx);

/* ---- Activations -------------------------------------------------------- */
enum nn_act { NN_IDENTITY, NN_RELU, NN_ELU, NN_TANH };

/* Elementwise y = f(x); @x and @y may alias. ELU uses alpha = 1. */
void nn_act_forward(enum nn_act act, size_t count, const float *x, float *y);
/* dx = f'(x) dy, from the forward's input @x and output @y (both kept);
 * @dy and @dx may alias. */
void nn_act_backward(enum nn_act act,
                     size_t count,
                     const float *x,
                     const float *y,
                     const float *dy,
                     float *dx);

/* ---- Diagonal Gaussians -------------------------------------------------
 * A Gaussian head is the n x 2d output of a linear layer: row i holds the
 * means in columns [0, d) and the log-variances in [d, 2d). Log-variances are
 * clamped to [NN_LOGVAR_MIN, NN_LOGVAR_MAX] where they are used, and get no
 * gradient where the clamp is active: it keeps exp() finite on a bad step. */
#define NN_LOGVAR_MIN (-10.0f)
#define NN_LOGVAR_MAX 10.0f

/* z = mu + exp(logvar / 2) * eps, with @eps n x d standard normal draws the
 * caller made (so the same noise can be replayed). */
void nn_reparam_forward(size_t n,
                        size_t d,
                        const float *head,
                        const float *eps,
                        float *z);
/* dhead += d(z)/d(head) dz (accumulates). */
void nn_reparam_backward(size_t n,
                         size_t d,
                         const float *head,
                         const float *eps,
                         const float *dz,
                         float *dhead);

/* Returns sum over rows and dims of KL(q || p) between the diagonal
 * Gaussians of heads @q and @p (both n x 2d), and accumulates
 * scale * its gradient into @dq and @dp (either may be NULL). */
double nn_kl_gauss(size_t n,
                   size_t d,
                   const float *q,
                   const float *p,
                   float scale,
                   float *dq,
                   float *dp);

/* Returns sum over rows and dims of the Gaussian negative log-likelihood
 * 0.5 (log 2 pi + logvar + (y - mu)^2 / exp(logvar)) of targets @y (n x d)
 * under head @head (n x 2d), counting only elements whose @mask (n x d, 1 or
 * 0; NULL means all) is set, each row weighted by @row_weight (n; NULL means
 * 1). Accumulates scale * its gradient into @dhead (may be NULL). */
double nn_gauss_nll(size_t n,
                    size_t d,
                    const float *head,
                    const float *y,
                    const float *mask,
                    const float *row_weight,
                    float scale,
                    float *dhead);

/* ---- Optimisation -------------------------------------------------------- */

/* Adam (Kingma and Ba 2015) with decoupled weight decay (AdamW, Loshchilov
 * and Hutter 2019): m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
 * w -= lr (mhat / (sqrt(vhat) + eps) + weight_decay w). */
struct nn_adam
{
    float lr, beta1, beta2, eps, weight_decay;
    uint64_t t; /* steps taken */
};

/* lr 1e-3, betas 0.9 and 0.999, eps 1e-8, weight decay 1e-4, t 0. */
void nn_adam_init(struct nn_adam *a);

/* One step over the pool's parameters with their gradients. */
void nn_adam_step(struct nn_adam *a, struct nn_pool *p);

/* Scales the pool's gradients so that their global L2 norm is at most
 * @max_norm (> 0). Returns the norm before clipping. A non-finite norm zeroes
 * the gradients (the step is skipped rather than poisoning the weights). */
double nn_clip_grad_norm(struct nn_pool *p, double max_norm);

/* ---- Multi-layer perceptron ----------------------------------------------
 * n_hidden hidden layers (2 to 4) and one output layer, so 3 to 5 fully
 * connected layers:
 *   hidden k < n_hidden - 1:  h = act(batchnorm(linear(h_prev)))
 *   last hidden:              h = dropout(act(linear(h_prev)))
 *   output:                   out = linear(h)      (no activation)
 * i.e. batch norm between hidden layers and dropout after the last one. The
 * MLP keeps the caches of its last forward (up to max_rows rows) for
 * backward; the input x is borrowed and must be unchanged until backward. */
#define NN_MLP_MAX_HIDDEN 4

struct nn_mlp_shape
{
    size_t in, out;
    size_t n_hidden; /* 2..NN_MLP_MAX_HIDDEN */
    size_t hidden[NN_MLP_MAX_HIDDEN];
    enum nn_act act;
    float dropout; /* rate in [0, 1) */
};

struct nn_mlp
{
    struct nn_mlp_shape shape;
    size_t max_rows;
    struct nn_linear lin[NN_MLP_MAX_HIDDEN + 1];
    struct nn_batchnorm bn[NN_MLP_MAX_HIDDEN - 1];
    float *pre[NN_MLP_MAX_HIDDEN];  /* linear outputs */
    float *norm[NN_MLP_MAX_HIDDEN]; /* batch-norm outputs (k < n_hidden-1) */
    float *h[NN_MLP_MAX_HIDDEN];    /* activations (last: after dropout) */
    float *act_last;                /* last hidden before dropout */
    float *mask;                    /* dropout mask */
    float *out;                     /* max_rows x out */
    float *g0, *g1;                 /* backward scratch, max_rows x widest */
};

void nn_mlp_plan(struct nn_mlp *m,
                 struct nn_pool *p,
                 const struct nn_mlp_shape *shape,
                 size_t max_rows);
/* Initialises the weights from @rng (Kaiming for hidden layers, a small gain
 * on the output layer so initial outputs are near 0) and the batch norms. */
void nn_mlp_init(struct nn_mlp *m, struct sm_rng *rng);
/* Runs @n <= max_rows rows; returns m->out. Training mode uses batch
 * statistics and dropout (drawing from @rng); inference mode uses running
 * statistics and no dropout (@rng may be NULL). */
const float *nn_mlp_forward(struct nn_mlp *m,
                            size_t n,
                            const float *x,
                            int train,
                            struct sm_rng *rng);
/* Backward of the last training-mode forward: accumulates the parameter
 * gradients from @dout (n x out) and, when @dx is not NULL, stores the
 * gradient with respect to the input (n x in). */
void nn_mlp_backward(struct nn_mlp *m,
                     size_t n,
                     const float *x,
                     const float *dout,
                     float *dx);

#endif /* SM_GVAE_NN_H */
