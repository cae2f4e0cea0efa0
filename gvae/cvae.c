/* The CVAE of one CBN node: shapes, one block of memory, the training step
 * of the loss alpha (recon + beta KL) + (1 - alpha) GSNN recon, and a
 * read-only inference forward for sweeps. */
#include <math.h>
#include <string.h>

#include "base/alloc.h"
#include "gvae/internal.h"
#include "gvae/mat.h"

static size_t round_up16(size_t v)
{
    return (v + 15) / 16 * 16;
}

void gvae__mlp_shape(struct nn_mlp_shape *s,
                     const struct gvae_config *cfg,
                     size_t in,
                     size_t out)
{
    memset(s, 0, sizeof *s);
    s->in = in;
    s->out = out;
    s->n_hidden = cfg->hidden_layers;
    size_t w = round_up16(in);
    if (w < cfg->hidden_min) {
        w = cfg->hidden_min;
    }
    if (w > cfg->hidden_max) {
        w = cfg->hidden_max;
    }
    for (size_t k = 0; k < s->n_hidden; k++) {
        s->hidden[k] = w;
    }
    /* ELU: smooth, no dead units, and negative outputs keep batch-norm
     * inputs centred. */
    s->act = NN_ELU;
    s->dropout = cfg->dropout;
}

/* Plans everything of the CVAE in @p (counting or assigning pass). */
static void cvae_plan(struct gvae_cvae *c,
                      struct nn_pool *p,
                      const struct gvae_config *cfg)
{
    struct nn_mlp_shape s;
    size_t b = c->batch, nx = c->nx, ny = c->ny, np = c->np, nz = c->nz;
    gvae__mlp_shape(&s, cfg, nx + ny + np, 2 * nz);
    nn_mlp_plan(&c->enc, p, &s, b);
    gvae__mlp_shape(&s, cfg, nx, 2 * nz);
    nn_mlp_plan(&c->prior, p, &s, b);
    gvae__mlp_shape(&s, cfg, nx + nz + np, 2 * ny);
    nn_mlp_plan(&c->dec, p, &s, 2 * b);
    c->xb = nn_pool_acts(p, b * nx);
    c->yb = nn_pool_acts(p, b * ny);
    c->mb = nn_pool_acts(p, b * ny);
    c->pb = nn_pool_acts(p, b * np);
    c->enc_in = nn_pool_acts(p, b * (nx + ny + np));
    c->dec_in = nn_pool_acts(p, 2 * b * (nx + nz + np));
    c->eps = nn_pool_acts(p, 2 * b * nz);
    c->zq = nn_pool_acts(p, b * nz);
    c->zp = nn_pool_acts(p, b * nz);
    c->dq = nn_pool_acts(p, b * 2 * nz);
    c->dp = nn_pool_acts(p, b * 2 * nz);
    c->dout = nn_pool_acts(p, 2 * b * 2 * ny);
    c->ddec_in = nn_pool_acts(p, 2 * b * (nx + nz + np));
    c->skip = nn_pool_params(p, np * ny);
    c->gskip = nn_pool_grad(p, c->skip);
    c->skip_out = nn_pool_acts(p, b * ny);
    c->dmean = nn_pool_acts(p, b * ny);
}

size_t gvae__cvae_floats(const struct gvae_node *node,
                         const struct gvae_config *cfg,
                         size_t *params)
{
    struct gvae_cvae c;
    memset(&c, 0, sizeof c);
    c.nx = node->nx;
    c.ny = node->ny;
    c.np = node->np;
    c.nz = cfg->latent;
    c.batch = cfg->batch;
    nn_pool_begin_count(&c.pool);
    cvae_plan(&c, &c.pool, cfg);
    size_t total = nn_pool_end_count(&c.pool);
    *params = c.pool.n_params;
    return total + c.pool.n_params + c.pool.n_state;
}

int gvae__cvae_create(struct gvae_cvae *c,
                      const struct gvae_node *node,
                      const struct gvae_config *cfg,
                      struct sm_rng *rng)
{
    memset(c, 0, sizeof *c);
    c->nx = node->nx;
    c->ny = node->ny;
    c->np = node->np;
    c->nz = cfg->latent;
    c->batch = cfg->batch;
    nn_pool_begin_count(&c->pool);
    cvae_plan(c, &c->pool, cfg);
    size_t total = nn_pool_end_count(&c->pool);
    size_t best = c->pool.n_params + c->pool.n_state;
    c->block_floats = total + best;
    c->block = sm_malloc(c->block_floats * sizeof *c->block);
    if (c->block == NULL) {
        memset(c, 0, sizeof *c);
        return SM_ENOMEM;
    }
    nn_pool_begin_assign(&c->pool, c->block);
    cvae_plan(c, &c->pool, cfg);
    c->best = c->block + total;
    memset(c->best, 0, best * sizeof *c->best);
    nn_mlp_init(&c->enc, rng);
    nn_mlp_init(&c->prior, rng);
    nn_mlp_init(&c->dec, rng);
    return SM_OK;
}

void gvae__cvae_destroy(struct gvae_cvae *c)
{
    sm_free(c->block);
    memset(c, 0, sizeof *c);
}

void gvae__dec_skip(const struct gvae_cvae *c,
                    size_t n,
                    const float *p,
                    float *out,
                    float *tmp)
{
    size_t ny = c->ny;
    if (c->np == 0) {
        return;
    }
    gvae__gemm(false, false, n, ny, c->np, 1.0f, p, c->skip, 0.0f, tmp);
    for (size_t r = 0; r < n; r++) {
        for (size_t j = 0; j < ny; j++) {
            out[r * 2 * ny + j] += tmp[r * ny + j];
        }
    }
}

void gvae__dec_skip_backward(struct gvae_cvae *c,
                             size_t n,
                             const float *p,
                             const float *dmean)
{
    if (c->np > 0) {
        gvae__gemm(true, false, c->np, c->ny, n, 1.0f, p, dmean, 1.0f,
                   c->gskip);
    }
}

void gvae__cvae_copy(struct gvae_cvae *dst, const struct gvae_cvae *src)
{
    size_t np = src->pool.n_params, ns = src->pool.n_state;
    memcpy(dst->block, src->block, np * sizeof *dst->block);
    memcpy(dst->block + 4 * np, src->block + 4 * np, ns * sizeof *dst->block);
}

static double mlp_flops(const struct nn_mlp *m, size_t rows)
{
    const struct nn_mlp_shape *s = &m->shape;
    double f = 0;
    size_t in = s->in;
    for (size_t k = 0; k < s->n_hidden; k++) {
        f += 2.0 * (double)rows * (double)in * (double)s->hidden[k];
        in = s->hidden[k];
    }
    f += 2.0 * (double)rows * (double)in * (double)s->out;
    return f;
}

/* Rows [x | mid | p] of widths nx, nm, np into @dst. */
static void concat3(float *dst,
                    size_t rows,
                    const float *x,
                    size_t nx,
                    const float *mid,
                    size_t nm,
                    const float *p,
                    size_t np)
{
    size_t w = nx + nm + np;
    for (size_t r = 0; r < rows; r++) {
        float *d = dst + r * w;
        memcpy(d, x + r * nx, nx * sizeof *d);
        memcpy(d + nx, mid + r * nm, nm * sizeof *d);
        memcpy(d + nx + nm, p + r * np, np * sizeof *d);
    }
}

/* Means of a Gaussian head (rows x 2d) into @z (rows x d). */
static void head_means(size_t rows, size_t d, const float *head, float *z)
{
    for (size_t r = 0; r < rows; r++) {
        memcpy(z + r * d, head + r * 2 * d, d * sizeof *z);
    }
}

double gvae__cvae_step(struct gvae_cvae *c,
                       size_t rows,
                       const struct gvae_config *cfg,
                       struct nn_adam *adam,
                       struct sm_rng *rng,
                       double *flops)
{
    size_t nx = c->nx, ny = c->ny, np = c->np, nz = c->nz;
    size_t din = nx + nz + np;
    float alpha = cfg->alpha, beta = cfg->beta;
    float inv = 1.0f / (float)rows;

    concat3(c->enc_in, rows, c->xb, nx, c->yb, ny, c->pb, np);
    const float *q = nn_mlp_forward(&c->enc, rows, c->enc_in, 1, rng);
    const float *pr = nn_mlp_forward(&c->prior, rows, c->xb, 1, rng);
    for (size_t k = 0; k < 2 * rows * nz; k++) {
        c->eps[k] = (float)sm_rng_normal(rng);
    }
    nn_reparam_forward(rows, nz, q, c->eps, c->zq);
    nn_reparam_forward(rows, nz, pr, c->eps + rows * nz, c->zp);
    /* The decoder sees posterior samples (CVAE term) in the first rows and
     * prior samples (GSNN term) in the others: one pass, one product per
     * layer, gradients summed. */
    concat3(c->dec_in, rows, c->xb, nx, c->zq, nz, c->pb, np);
    concat3(c->dec_in + rows * din, rows, c->xb, nx, c->zp, nz, c->pb, np);
    float *out = (float *)nn_mlp_forward(&c->dec, 2 * rows, c->dec_in, 1, rng);
    /* the skip adds to the MLP's output cache: its backward does not read
     * it */
    gvae__dec_skip(c, rows, c->pb, out, c->skip_out);
    gvae__dec_skip(c, rows, c->pb, out + rows * 2 * ny, c->skip_out);

    nn_pool_zero_grad(&c->pool);
    memset(c->dout, 0, 2 * rows * 2 * ny * sizeof *c->dout);
    memset(c->dq, 0, rows * 2 * nz * sizeof *c->dq);
    memset(c->dp, 0, rows * 2 * nz * sizeof *c->dp);
    double nll_q =
        nn_gauss_nll(rows, ny, out, c->yb, c->mb, NULL, alpha * inv, c->dout);
    double nll_p =
        nn_gauss_nll(rows, ny, out + rows * 2 * ny, c->yb, c->mb, NULL,
                     (1.0f - alpha) * inv, c->dout + rows * 2 * ny);
    double kl = nn_kl_gauss(rows, nz, q, pr, alpha * beta * inv, c->dq, c->dp);

    nn_mlp_backward(&c->dec, 2 * rows, c->dec_in, c->dout, c->ddec_in);
    /* both halves saw the same Yp: one product over their sum */
    for (size_t r = 0; r < rows; r++) {
        for (size_t j = 0; j < ny; j++) {
            c->dmean[r * ny + j] =
                c->dout[r * 2 * ny + j] + c->dout[(rows + r) * 2 * ny + j];
        }
    }
    gvae__dec_skip_backward(c, rows, c->pb, c->dmean);
    for (size_t r = 0; r < rows; r++) {
        memcpy(c->zq + r * nz, c->ddec_in + r * din + nx, nz * sizeof *c->zq);
        memcpy(c->zp + r * nz, c->ddec_in + (rows + r) * din + nx,
               nz * sizeof *c->zp);
    }
    nn_reparam_backward(rows, nz, q, c->eps, c->zq, c->dq);
    nn_reparam_backward(rows, nz, pr, c->eps + rows * nz, c->zp, c->dp);
    nn_mlp_backward(&c->enc, rows, c->enc_in, c->dq, NULL);
    nn_mlp_backward(&c->prior, rows, c->xb, c->dp, NULL);
    nn_clip_grad_norm(&c->pool, cfg->clip_norm);
    nn_adam_step(adam, &c->pool);
    for (size_t k = 0; k < np * ny; k++) {
        c->skip[k] = c->skip[k] > 0 ? c->skip[k] : 0; /* projected: A >= 0 */
    }

    /* forward + weight gradient + input gradient: three products a layer */
    *flops += 3.0 * (mlp_flops(&c->enc, rows) + mlp_flops(&c->prior, rows) +
                     mlp_flops(&c->dec, 2 * rows)) +
              3.0 * 2.0 * (double)rows * (double)np * (double)ny;
    return (alpha * (nll_q + beta * kl) + (1.0 - alpha) * nll_p) * inv;
}

double gvae__cvae_eval(struct gvae_cvae *c,
                       size_t rows,
                       const struct gvae_config *cfg)
{
    size_t nx = c->nx, ny = c->ny, np = c->np, nz = c->nz;
    size_t din = nx + nz + np;
    concat3(c->enc_in, rows, c->xb, nx, c->yb, ny, c->pb, np);
    const float *q = nn_mlp_forward(&c->enc, rows, c->enc_in, 0, NULL);
    const float *pr = nn_mlp_forward(&c->prior, rows, c->xb, 0, NULL);
    head_means(rows, nz, q, c->zq);
    head_means(rows, nz, pr, c->zp);
    double kl = nn_kl_gauss(rows, nz, q, pr, 0, NULL, NULL);
    concat3(c->dec_in, rows, c->xb, nx, c->zq, nz, c->pb, np);
    concat3(c->dec_in + rows * din, rows, c->xb, nx, c->zp, nz, c->pb, np);
    float *out = (float *)nn_mlp_forward(&c->dec, 2 * rows, c->dec_in, 0, NULL);
    gvae__dec_skip(c, rows, c->pb, out, c->skip_out);
    gvae__dec_skip(c, rows, c->pb, out + rows * 2 * ny, c->skip_out);
    double nll_q = nn_gauss_nll(rows, ny, out, c->yb, c->mb, NULL, 0, NULL);
    double nll_p = nn_gauss_nll(rows, ny, out + rows * 2 * ny, c->yb, c->mb,
                                NULL, 0, NULL);
    double a = cfg->alpha;
    return (a * (nll_q + cfg->beta * kl) + (1.0 - a) * nll_p) / (double)rows;
}

size_t gvae__mlp_widest(const struct nn_mlp *mlp)
{
    const struct nn_mlp_shape *s = &mlp->shape;
    size_t w = s->in > s->out ? s->in : s->out;
    for (size_t k = 0; k < s->n_hidden; k++) {
        if (s->hidden[k] > w) {
            w = s->hidden[k];
        }
    }
    return w;
}

void gvae__mlp_infer(const struct nn_mlp *mlp,
                     size_t n,
                     const float *x,
                     float *out,
                     float *scratch)
{
    const struct nn_mlp_shape *s = &mlp->shape;
    size_t widest = gvae__mlp_widest(mlp);
    float *buf[2] = {scratch, scratch + n * widest};
    const float *cur = x;
    for (size_t k = 0; k < s->n_hidden; k++) {
        float *dst = buf[k & 1];
        size_t w = s->hidden[k];
        nn_linear_forward(&mlp->lin[k], n, cur, dst);
        if (k + 1 < s->n_hidden) {
            const struct nn_batchnorm *bn = &mlp->bn[k];
            for (size_t j = 0; j < w; j++) {
                float scale = bn->gamma[j] / sqrtf(bn->run_var[j] + bn->eps);
                float shift = bn->beta[j] - bn->run_mean[j] * scale;
                for (size_t r = 0; r < n; r++) {
                    dst[r * w + j] = dst[r * w + j] * scale + shift;
                }
            }
        }
        nn_act_forward(s->act, n * w, dst, dst);
        cur = dst;
    }
    nn_linear_forward(&mlp->lin[s->n_hidden], n, cur, out);
}
