/* Neural-network layers over one float pool: linear, batch norm, dropout,
 * activations, Gaussian heads, Adam and the MLP built from them.
 *
 * Elementwise work is plain loops in float; reductions (batch statistics,
 * losses, the gradient norm) accumulate in double so that they do not depend
 * on the batch size for their precision. Every matrix product is one
 * gvae__gemm call. Nothing here allocates: the pool's block holds it all. */
#include <math.h>
#include <string.h>

#include "base/err.h"
#include "gvae/mat.h"
#include "gvae/nn.h"

/* ---- Float pool --------------------------------------------------------- */

void nn_pool_begin_count(struct nn_pool *p)
{
    memset(p, 0, sizeof *p);
}

size_t nn_pool_end_count(struct nn_pool *p)
{
    p->n_params = p->used_params;
    p->n_state = p->used_state;
    p->n_acts = p->used_acts;
    p->used_params = p->used_state = p->used_acts = 0;
    return 4 * p->n_params + p->n_state + p->n_acts;
}

void nn_pool_begin_assign(struct nn_pool *p, float *block)
{
    p->block = block;
    p->used_params = p->used_state = p->used_acts = 0;
    memset(block, 0,
           (4 * p->n_params + p->n_state + p->n_acts) * sizeof *block);
}

/* Hands out @n floats of a region starting at @base with @total floats,
 * advancing @used. The assigning pass must ask for exactly what the counting
 * pass did, so running past a total is a broken invariant. */
static float *take(float *base, size_t total, size_t *used, size_t n)
{
    float *r = NULL;
    if (base != NULL) {
        SM_ASSERT(*used + n <= total);
        r = base + *used;
    }
    *used += n;
    return r;
}

float *nn_pool_params(struct nn_pool *p, size_t n)
{
    return take(p->block, p->n_params, &p->used_params, n);
}

float *nn_pool_state(struct nn_pool *p, size_t n)
{
    float *base = p->block ? p->block + 4 * p->n_params : NULL;
    return take(base, p->n_state, &p->used_state, n);
}

float *nn_pool_acts(struct nn_pool *p, size_t n)
{
    float *base = p->block ? p->block + 4 * p->n_params + p->n_state : NULL;
    return take(base, p->n_acts, &p->used_acts, n);
}

/* NULL for NULL, so plan functions can take gradients in the counting
 * pass too. */
float *nn_pool_grad(const struct nn_pool *p, const float *value)
{
    if (value == NULL) {
        return NULL;
    }
    SM_ASSERT(value >= p->block && value <= p->block + p->n_params);
    return p->block + p->n_params + (value - p->block);
}

void nn_pool_zero_grad(struct nn_pool *p)
{
    if (p->block != NULL) {
        memset(p->block + p->n_params, 0, p->n_params * sizeof *p->block);
    }
}

/* ---- Linear ------------------------------------------------------------- */

void nn_linear_plan(struct nn_linear *l,
                    struct nn_pool *p,
                    size_t in,
                    size_t out)
{
    l->in = in;
    l->out = out;
    l->w = nn_pool_params(p, in * out);
    l->b = nn_pool_params(p, out);
    l->gw = nn_pool_grad(p, l->w);
    l->gb = nn_pool_grad(p, l->b);
}

/* U(-bound, bound) with bound = gain * sqrt(6 / in): He et al.'s uniform
 * initialisation, whose variance 2 / in keeps ReLU activations at unit
 * scale; gain 1/sqrt(2) gives LeCun's 1 / in for tanh and linear layers. */
void nn_linear_init(struct nn_linear *l, struct sm_rng *rng, float gain)
{
    double bound = gain * sqrt(6.0 / (double)(l->in ? l->in : 1));
    for (size_t i = 0; i < l->in * l->out; i++) {
        l->w[i] = (float)((2.0 * sm_rng_double(rng) - 1.0) * bound);
    }
    memset(l->b, 0, l->out * sizeof *l->b);
}

void nn_linear_forward(const struct nn_linear *l,
                       size_t n,
                       const float *x,
                       float *y)
{
    if (n == 0) {
        return;
    }
    /* Broadcast the bias, then one gemm adds x W onto it (beta = 1). */
    for (size_t i = 0; i < n; i++) {
        memcpy(y + i * l->out, l->b, l->out * sizeof *y);
    }
    gvae__gemm(false, false, n, l->out, l->in, 1.0f, x, l->w, 1.0f, y);
}

void nn_linear_backward(struct nn_linear *l,
                        size_t n,
                        const float *x,
                        const float *dy,
                        float *dx)
{
    if (n == 0) {
        return;
    }
    gvae__gemm(true, false, l->in, l->out, n, 1.0f, x, dy, 1.0f, l->gw);
    for (size_t i = 0; i < n; i++) {
        const float *row = dy + i * l->out;
        for (size_t j = 0; j < l->out; j++) {
            l->gb[j] += row[j];
        }
    }
    if (dx != NULL) {
        gvae__gemm(false, true, n, l->in, l->out, 1.0f, dy, l->w, 0.0f, dx);
    }
}

/* ---- Batch normalisation ------------------------------------------------ */

void nn_batchnorm_plan(struct nn_batchnorm *bn,
                       struct nn_pool *p,
                       size_t d,
                       size_t max_rows)
{
    bn->d = d;
    bn->max_rows = max_rows;
    bn->eps = 1e-5f;
    bn->momentum = 0.1f;
    bn->gamma = nn_pool_params(p, d);
    bn->beta = nn_pool_params(p, d);
    bn->ggamma = nn_pool_grad(p, bn->gamma);
    bn->gbeta = nn_pool_grad(p, bn->beta);
    bn->run_mean = nn_pool_state(p, d);
    bn->run_var = nn_pool_state(p, d);
    bn->mean = nn_pool_acts(p, d);
    bn->invstd = nn_pool_acts(p, d);
    bn->xhat = nn_pool_acts(p, max_rows * d);
}

void nn_batchnorm_init(struct nn_batchnorm *bn)
{
    bn->eps = 1e-5f;
    bn->momentum = 0.1f;
    for (size_t j = 0; j < bn->d; j++) {
        bn->gamma[j] = 1.0f;
        bn->beta[j] = 0.0f;
        bn->run_mean[j] = 0.0f;
        bn->run_var[j] = 1.0f;
    }
}

/* Works column by column, reading a whole column before writing it, so
 * that @x and @y may alias. */
void nn_batchnorm_forward(struct nn_batchnorm *bn,
                          size_t n,
                          const float *x,
                          float *y,
                          int train)
{
    size_t d = bn->d;
    if (!train) {
        for (size_t j = 0; j < d; j++) {
            float inv = 1.0f / sqrtf(bn->run_var[j] + bn->eps);
            float scale = bn->gamma[j] * inv;
            float shift = bn->beta[j] - bn->run_mean[j] * scale;
            for (size_t i = 0; i < n; i++) {
                y[i * d + j] = x[i * d + j] * scale + shift;
            }
        }
        return;
    }
    SM_ASSERT(n >= 2 && n <= bn->max_rows);
    float m = bn->momentum;
    for (size_t j = 0; j < d; j++) {
        double sum = 0, sq = 0;
        for (size_t i = 0; i < n; i++) {
            sum += x[i * d + j];
        }
        double mean = sum / (double)n;
        for (size_t i = 0; i < n; i++) {
            double c = x[i * d + j] - mean;
            sq += c * c;
        }
        double var = sq / (double)n;
        float invstd = (float)(1.0 / sqrt(var + bn->eps));
        bn->mean[j] = (float)mean;
        bn->invstd[j] = invstd;
        for (size_t i = 0; i < n; i++) {
            float xh = (x[i * d + j] - (float)mean) * invstd;
            bn->xhat[i * d + j] = xh;
            y[i * d + j] = bn->gamma[j] * xh + bn->beta[j];
        }
        double unbiased = sq / (double)(n - 1);
        bn->run_mean[j] = (1.0f - m) * bn->run_mean[j] + m * (float)mean;
        bn->run_var[j] = (1.0f - m) * bn->run_var[j] + m * (float)unbiased;
    }
}

/* With xhat = (x - mean) invstd and g = gamma dy:
 *   dx = invstd (g - mean(g) - xhat mean(g xhat)),
 * the batch mean and variance being functions of every row. Column by
 * column, so @dy and @dx may alias. */
void nn_batchnorm_backward(struct nn_batchnorm *bn,
                           size_t n,
                           const float *dy,
                           float *dx)
{
    size_t d = bn->d;
    SM_ASSERT(n >= 2 && n <= bn->max_rows);
    for (size_t j = 0; j < d; j++) {
        double s_dy = 0, s_dyxh = 0;
        for (size_t i = 0; i < n; i++) {
            s_dy += dy[i * d + j];
            s_dyxh += (double)dy[i * d + j] * bn->xhat[i * d + j];
        }
        bn->gbeta[j] += (float)s_dy;
        bn->ggamma[j] += (float)s_dyxh;
        float k = bn->gamma[j] * bn->invstd[j];
        float mean_dy = (float)(s_dy / (double)n);
        float mean_dyxh = (float)(s_dyxh / (double)n);
        for (size_t i = 0; i < n; i++) {
            size_t e = i * d + j;
            dx[e] = k * (dy[e] - mean_dy - bn->xhat[e] * mean_dyxh);
        }
    }
}

/* ---- Dropout ------------------------------------------------------------ */

void nn_dropout_forward(size_t count,
                        float rate,
                        const float *x,
                        float *y,
                        float *mask,
                        int train,
                        struct sm_rng *rng)
{
    if (!train || rate <= 0.0f) {
        for (size_t k = 0; k < count; k++) {
            y[k] = x[k];
            mask[k] = 1.0f;
        }
        return;
    }
    SM_ASSERT(rate < 1.0f && rng != NULL);
    float keep = 1.0f / (1.0f - rate);
    for (size_t k = 0; k < count; k++) {
        mask[k] = sm_rng_double(rng) < rate ? 0.0f : keep;
        y[k] = x[k] * mask[k];
    }
}

void nn_dropout_backward(size_t count,
                         const float *mask,
                         const float *dy,
                         float *dx)
{
    for (size_t k = 0; k < count; k++) {
        dx[k] = dy[k] * mask[k];
    }
}

/* ---- Activations -------------------------------------------------------- */

void nn_act_forward(enum nn_act act, size_t count, const float *x, float *y)
{
    switch (act) {
        case NN_IDENTITY:
            if (x != y) {
                memmove(y, x, count * sizeof *y);
            }
            break;
        case NN_RELU:
            for (size_t k = 0; k < count; k++) {
                y[k] = x[k] > 0.0f ? x[k] : 0.0f;
            }
            break;
        case NN_ELU:
            for (size_t k = 0; k < count; k++) {
                y[k] = x[k] > 0.0f ? x[k] : expm1f(x[k]);
            }
            break;
        case NN_TANH:
            for (size_t k = 0; k < count; k++) {
                y[k] = tanhf(x[k]);
            }
            break;
    }
}

/* Derivatives are taken from the output where it determines them (ELU's
 * e^x = y + 1, tanh's 1 - y^2); the sign tests read @x, but x > 0 exactly
 * when y > 0, so an in-place forward (x == y) is also fine. */
void nn_act_backward(enum nn_act act,
                     size_t count,
                     const float *x,
                     const float *y,
                     const float *dy,
                     float *dx)
{
    switch (act) {
        case NN_IDENTITY:
            if (dy != dx) {
                memmove(dx, dy, count * sizeof *dx);
            }
            break;
        case NN_RELU:
            for (size_t k = 0; k < count; k++) {
                dx[k] = x[k] > 0.0f ? dy[k] : 0.0f;
            }
            break;
        case NN_ELU:
            for (size_t k = 0; k < count; k++) {
                dx[k] = x[k] > 0.0f ? dy[k] : dy[k] * (y[k] + 1.0f);
            }
            break;
        case NN_TANH:
            for (size_t k = 0; k < count; k++) {
                dx[k] = dy[k] * (1.0f - y[k] * y[k]);
            }
            break;
    }
}

/* ---- Diagonal Gaussians ------------------------------------------------- */

/* The clamped log-variance, and whether it lies inside the clamp (where it
 * has a gradient). */
static float clamp_lv(float lv, int *live)
{
    if (lv < NN_LOGVAR_MIN) {
        *live = 0;
        return NN_LOGVAR_MIN;
    }
    if (lv > NN_LOGVAR_MAX) {
        *live = 0;
        return NN_LOGVAR_MAX;
    }
    *live = 1;
    return lv;
}

void nn_reparam_forward(size_t n,
                        size_t d,
                        const float *head,
                        const float *eps,
                        float *z)
{
    for (size_t i = 0; i < n; i++) {
        const float *mu = head + i * 2 * d, *lv = mu + d;
        for (size_t j = 0; j < d; j++) {
            int live;
            float sd = expf(0.5f * clamp_lv(lv[j], &live));
            z[i * d + j] = mu[j] + sd * eps[i * d + j];
        }
    }
}

void nn_reparam_backward(size_t n,
                         size_t d,
                         const float *head,
                         const float *eps,
                         const float *dz,
                         float *dhead)
{
    for (size_t i = 0; i < n; i++) {
        const float *lv = head + i * 2 * d + d;
        float *dmu = dhead + i * 2 * d, *dlv = dmu + d;
        for (size_t j = 0; j < d; j++) {
            int live;
            float sd = expf(0.5f * clamp_lv(lv[j], &live));
            float g = dz[i * d + j];
            dmu[j] += g;
            if (live) {
                dlv[j] += 0.5f * sd * eps[i * d + j] * g;
            }
        }
    }
}

/* Per element, with vq = e^lvq and vp = e^lvp:
 *   KL = 0.5 (lvp - lvq + (vq + (muq - mup)^2) / vp - 1)
 *   dKL/dmuq = (muq - mup) / vp = -dKL/dmup
 *   dKL/dlvq = 0.5 (vq / vp - 1)
 *   dKL/dlvp = 0.5 (1 - (vq + (muq - mup)^2) / vp) */
double nn_kl_gauss(size_t n,
                   size_t d,
                   const float *q,
                   const float *p,
                   float scale,
                   float *dq,
                   float *dp)
{
    double total = 0;
    for (size_t i = 0; i < n; i++) {
        size_t r = i * 2 * d;
        for (size_t j = 0; j < d; j++) {
            int live_q, live_p;
            double lvq = clamp_lv(q[r + d + j], &live_q);
            double lvp = clamp_lv(p[r + d + j], &live_p);
            double diff = (double)q[r + j] - p[r + j];
            double inv_vp = exp(-lvp);
            double ratio = (exp(lvq) + diff * diff) * inv_vp;
            total += 0.5 * (lvp - lvq + ratio - 1.0);
            if (dq != NULL) {
                dq[r + j] += (float)(scale * diff * inv_vp);
                if (live_q) {
                    dq[r + d + j] +=
                        (float)(scale * 0.5 * (exp(lvq - lvp) - 1.0));
                }
            }
            if (dp != NULL) {
                dp[r + j] -= (float)(scale * diff * inv_vp);
                if (live_p) {
                    dp[r + d + j] += (float)(scale * 0.5 * (1.0 - ratio));
                }
            }
        }
    }
    return total;
}

/* Elements with mask 0 or row weight 0 are skipped outright rather than
 * multiplied by 0, so a missing target may hold NaN. */
double nn_gauss_nll(size_t n,
                    size_t d,
                    const float *head,
                    const float *y,
                    const float *mask,
                    const float *row_weight,
                    float scale,
                    float *dhead)
{
    const double log_2pi = 1.8378770664093454836;
    double total = 0;
    for (size_t i = 0; i < n; i++) {
        double w = row_weight != NULL ? row_weight[i] : 1.0;
        if (w == 0.0) {
            continue;
        }
        size_t r = i * 2 * d;
        for (size_t j = 0; j < d; j++) {
            size_t e = i * d + j;
            if (mask != NULL && mask[e] == 0.0f) {
                continue;
            }
            double wm = mask != NULL ? w * mask[e] : w;
            int live;
            double lv = clamp_lv(head[r + d + j], &live);
            double diff = (double)y[e] - head[r + j];
            double inv_v = exp(-lv);
            double sq = diff * diff * inv_v;
            total += wm * 0.5 * (log_2pi + lv + sq);
            if (dhead != NULL) {
                dhead[r + j] -= (float)(scale * wm * diff * inv_v);
                if (live) {
                    dhead[r + d + j] += (float)(scale * wm * 0.5 * (1.0 - sq));
                }
            }
        }
    }
    return total;
}

/* ---- Optimisation ------------------------------------------------------- */

void nn_adam_init(struct nn_adam *a)
{
    a->lr = 1e-3f;
    a->beta1 = 0.9f;
    a->beta2 = 0.999f;
    a->eps = 1e-8f;
    a->weight_decay = 1e-4f;
    a->t = 0;
}

void nn_adam_step(struct nn_adam *a, struct nn_pool *p)
{
    size_t np = p->n_params;
    float *w = p->block, *g = w + np, *m = w + 2 * np, *v = w + 3 * np;
    a->t++;
    float c1 = (float)(1.0 - pow(a->beta1, (double)a->t));
    float c2 = (float)(1.0 - pow(a->beta2, (double)a->t));
    float b1 = a->beta1, b2 = a->beta2;
    for (size_t k = 0; k < np; k++) {
        m[k] = b1 * m[k] + (1.0f - b1) * g[k];
        v[k] = b2 * v[k] + (1.0f - b2) * g[k] * g[k];
        float mhat = m[k] / c1, vhat = v[k] / c2;
        w[k] -=
            a->lr * (mhat / (sqrtf(vhat) + a->eps) + a->weight_decay * w[k]);
    }
}

double nn_clip_grad_norm(struct nn_pool *p, double max_norm)
{
    SM_ASSERT(max_norm > 0);
    if (p->block == NULL) {
        return 0.0;
    }
    float *g = p->block + p->n_params;
    double sq = 0;
    for (size_t k = 0; k < p->n_params; k++) {
        sq += (double)g[k] * g[k];
    }
    double norm = sqrt(sq);
    if (!isfinite(norm)) {
        nn_pool_zero_grad(p);
    } else if (norm > max_norm) {
        float s = (float)(max_norm / norm);
        for (size_t k = 0; k < p->n_params; k++) {
            g[k] *= s;
        }
    }
    return norm;
}

/* ---- Multi-layer perceptron -------------------------------------------- */

void nn_mlp_plan(struct nn_mlp *m,
                 struct nn_pool *p,
                 const struct nn_mlp_shape *shape,
                 size_t max_rows)
{
    size_t nh = shape->n_hidden;
    SM_ASSERT(nh >= 2 && nh <= NN_MLP_MAX_HIDDEN);
    SM_ASSERT(shape->dropout >= 0.0f && shape->dropout < 1.0f);
    memset(m, 0, sizeof *m);
    m->shape = *shape;
    m->max_rows = max_rows;

    /* Parameters layer by layer (linear, then its batch norm), so the flat
     * parameter vector follows the network's order. */
    size_t prev = shape->in,
           widest = shape->in > shape->out ? shape->in : shape->out;
    for (size_t k = 0; k < nh; k++) {
        size_t w = shape->hidden[k];
        nn_linear_plan(&m->lin[k], p, prev, w);
        if (k + 1 < nh) {
            nn_batchnorm_plan(&m->bn[k], p, w, max_rows);
        }
        widest = w > widest ? w : widest;
        prev = w;
    }
    nn_linear_plan(&m->lin[nh], p, prev, shape->out);

    for (size_t k = 0; k < nh; k++) {
        size_t cells = max_rows * shape->hidden[k];
        m->pre[k] = nn_pool_acts(p, cells);
        if (k + 1 < nh) {
            m->norm[k] = nn_pool_acts(p, cells);
        }
        m->h[k] = nn_pool_acts(p, cells);
    }
    m->act_last = nn_pool_acts(p, max_rows * prev);
    m->mask = nn_pool_acts(p, max_rows * prev);
    m->out = nn_pool_acts(p, max_rows * shape->out);
    m->g0 = nn_pool_acts(p, max_rows * widest);
    m->g1 = nn_pool_acts(p, max_rows * widest);
}

/* Hidden layers use ReLU-style Kaiming gain for ReLU and ELU and the
 * 1/sqrt(2) (LeCun) gain for tanh and identity. The output layer gets a
 * tenth of the linear gain, so a fresh Gaussian head starts near mean 0 and
 * log-variance 0 instead of at a random, possibly extreme, variance. */
void nn_mlp_init(struct nn_mlp *m, struct sm_rng *rng)
{
    size_t nh = m->shape.n_hidden;
    float linear = (float)(1.0 / sqrt(2.0));
    int relu_like = m->shape.act == NN_RELU || m->shape.act == NN_ELU;
    for (size_t k = 0; k < nh; k++) {
        nn_linear_init(&m->lin[k], rng, relu_like ? 1.0f : linear);
        if (k + 1 < nh) {
            nn_batchnorm_init(&m->bn[k]);
        }
    }
    nn_linear_init(&m->lin[nh], rng, 0.1f * linear);
}

const float *nn_mlp_forward(struct nn_mlp *m,
                            size_t n,
                            const float *x,
                            int train,
                            struct sm_rng *rng)
{
    size_t nh = m->shape.n_hidden;
    SM_ASSERT(n <= m->max_rows);
    const float *prev = x;
    for (size_t k = 0; k < nh; k++) {
        size_t cells = n * m->shape.hidden[k];
        nn_linear_forward(&m->lin[k], n, prev, m->pre[k]);
        if (k + 1 < nh) {
            nn_batchnorm_forward(&m->bn[k], n, m->pre[k], m->norm[k], train);
            nn_act_forward(m->shape.act, cells, m->norm[k], m->h[k]);
        } else {
            nn_act_forward(m->shape.act, cells, m->pre[k], m->act_last);
            nn_dropout_forward(cells, m->shape.dropout, m->act_last, m->h[k],
                               m->mask, train, rng);
        }
        prev = m->h[k];
    }
    nn_linear_forward(&m->lin[nh], n, prev, m->out);
    return m->out;
}

/* Walks the layers backwards, ping-ponging the running gradient between g0
 * and g1: a gemm's output may not alias its input. */
void nn_mlp_backward(struct nn_mlp *m,
                     size_t n,
                     const float *x,
                     const float *dout,
                     float *dx)
{
    size_t nh = m->shape.n_hidden;
    enum nn_act act = m->shape.act;
    float *cur = m->g0, *spare = m->g1, *t;
    SM_ASSERT(n <= m->max_rows);
    nn_linear_backward(&m->lin[nh], n, m->h[nh - 1], dout, cur);
    for (size_t k = nh; k-- > 0;) {
        size_t cells = n * m->shape.hidden[k];
        if (k + 1 == nh) {
            nn_dropout_backward(cells, m->mask, cur, cur);
            nn_act_backward(act, cells, m->pre[k], m->act_last, cur, cur);
        } else {
            nn_act_backward(act, cells, m->norm[k], m->h[k], cur, cur);
            nn_batchnorm_backward(&m->bn[k], n, cur, spare);
            t = cur, cur = spare, spare = t;
        }
        const float *in = k == 0 ? x : m->h[k - 1];
        nn_linear_backward(&m->lin[k], n, in, cur, k == 0 ? dx : spare);
        t = cur, cur = spare, spare = t;
    }
}
