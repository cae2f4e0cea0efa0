/* Counterfactual sweeps (abduction, action, prediction) and the diagnosis
 * built on them; reconstruction quality of a model. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "gvae/internal.h"

void gvae_sweep_config_default(struct gvae_sweep_config *c)
{
    memset(c, 0, sizeof *c);
    c->qos_percentile = 99;
    c->samples = 64;
    c->p_threshold = 0.9;
    c->max_culprits = 3;
    c->gate = 0.1;
    c->abduction = GVAE_ABDUCT_PRIOR;
    c->rank = GVAE_RANK_EFFECT_EVIDENCE;
    c->resource_rank = GVAE_RES_EVIDENCE;
    c->seed = 1;
}

const char *gvae_rank_name(enum gvae_rank rank)
{
    switch (rank) {
        case GVAE_RANK_EFFECT:
            return "effect";
        case GVAE_RANK_EFFECT_EVIDENCE:
            return "effect-x-evidence";
        case GVAE_RANK_EVIDENCE:
            return "evidence";
        case GVAE_RANK_GATED_EVIDENCE:
            return "gated-evidence";
    }
    return "?";
}

const char *gvae_resource_rank_name(enum gvae_resource_rank rank)
{
    switch (rank) {
        case GVAE_RES_EFFECT:
            return "effect";
        case GVAE_RES_EVIDENCE:
            return "evidence";
        case GVAE_RES_GATED_EVIDENCE:
            return "gated-evidence";
    }
    return "?";
}

const char *gvae_abduction_name(enum gvae_abduction a)
{
    switch (a) {
        case GVAE_ABDUCT_POSTERIOR:
            return "posterior";
        case GVAE_ABDUCT_POSTERIOR_X:
            return "posterior-x";
        case GVAE_ABDUCT_PRIOR:
            return "prior";
    }
    return "?";
}

/* ---- the observed window, abducted -------------------------------------- */

#define ALL_CLASSES 0xFFFFu
/* Candidates whose P(QoS met) is estimated with all samples. */
#define SAMPLED_CANDIDATES 1
/* Robust z (IQRs above the training median) at which a resource class's
 * inputs stand out. */
#define CLASS_Z 3.0

struct outcome
{
    double effect, p;
};

static int restorable(const struct gvae_group *g, unsigned classes)
{
    return g->kind != GVAE_LOAD && (classes & (1u << g->res)) != 0;
}

/* Grows the shared row buffers to @rows rows. */
static int reserve_rows(struct gvae_sweep *sw, size_t rows)
{
    if (rows <= sw->scratch_rows) {
        return SM_OK;
    }
    size_t w = sw->widest;
    sm_free(sw->scratch);
    sm_free(sw->xr);
    sm_free(sw->din);
    sm_free(sw->out);
    sm_free(sw->head);
    sm_free(sw->pr);
    sw->pr = sm_malloc(rows * w * sizeof(float));
    sw->scratch = sm_malloc(2 * rows * w * sizeof(float));
    sw->xr = sm_malloc(rows * w * sizeof(float));
    sw->din = sm_malloc(rows * w * sizeof(float));
    sw->out = sm_malloc(rows * w * sizeof(float));
    sw->head = sm_malloc(rows * w * sizeof(float));
    if (!sw->scratch || !sw->xr || !sw->din || !sw->out || !sw->head ||
        !sw->pr) {
        sw->scratch_rows = 0;
        return SM_ENOMEM;
    }
    sw->scratch_rows = rows;
    return SM_OK;
}

static float std_of(const struct gvae_stat *st, float t)
{
    return (t - st->mean) / st->std;
}

static float raw_of(const struct gvae_stat *st, float v)
{
    return v * st->std + st->mean;
}

/* Normal X of node @i: the caller's normals for metrics when it has them,
 * else the model's medians over QoS-meeting training windows. */
static void normal_x(const struct gvae_node *node,
                     const struct cbn_normals *normals,
                     float *xn)
{
    for (size_t g = 0; g < node->n_xg; g++) {
        const struct gvae_group *gr = &node->xg[g];
        float pct[CBN_N_PCT];
        int have = 0;
        if (normals != NULL && gr->kind == GVAE_METRIC) {
            have = cbn_normals_metric(normals, gr->service, gr->metric,
                                      gr->peer, pct, NULL) == SM_OK;
        }
        for (unsigned k = 0; k < gr->width; k++) {
            size_t f = gr->offset + k;
            const struct gvae_stat *st = &node->xs[f];
            float v = have ? pct[gvae__group_pct(gr, k)] : NAN;
            float t =
                have && !isnan(v) ? gvae__transform(gr->kind, v) : st->normal;
            xn[f] = gr->kind == GVAE_LOAD ? NAN : std_of(st, t);
        }
    }
}

/* Clamps standardised inputs to the range seen in training: a decoder only
 * knows its inputs there, and out of it an MLP extrapolates without
 * constraint (restoring a service then "raised" latencies). What lies
 * beyond the range stays in the residual, which the counterfactual keeps
 * or drops as a whole. */
static void clamp_range(float *v, const struct gvae_stat *st, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        float lo = (st[k].lo - st[k].mean) / st[k].std;
        float hi = (st[k].hi - st[k].mean) / st[k].std;
        v[k] = v[k] < lo ? lo : v[k] > hi ? hi : v[k];
    }
}

/* Decodes the observed window of node @i with the abducted latents of
 * samples [n_u, n) and keeps the residuals u = Y - decoder(...). Sample 0
 * (the posterior mean) also fixes the facts where Y was not observed. Runs
 * lazily: samples beyond the mean only for nodes a sampled pass reaches. */
static int residuals(struct gvae_sweep *sw, size_t i, size_t n)
{
    const struct gvae_node *node = &sw->m->nodes[i];
    struct gvae_nstate *st = &sw->ns[i];
    const struct gvae_cvae *c = &node->cvae;
    size_t nx = node->nx, ny = node->ny, np = node->np, nz = c->nz;
    size_t din = nx + nz + np, from = st->n_u;
    if (!st->live || from >= n) {
        return SM_OK;
    }
    int rc = reserve_rows(sw, n - from);
    if (rc != SM_OK) {
        return rc;
    }
    for (size_t s = from; s < n; s++) {
        float *row = sw->din + (s - from) * din;
        memcpy(row, st->xin, nx * sizeof *row);
        memcpy(row + nx, st->z + s * nz, nz * sizeof *row);
        memcpy(row + nx + nz, st->pin, np * sizeof *row);
    }
    gvae__mlp_infer(&c->dec, n - from, sw->din, sw->out, sw->scratch);
    for (size_t s = from; s < n; s++) {
        gvae__dec_skip(c, 1, st->p, sw->out + (s - from) * 2 * ny, sw->head);
    }
    if (from == 0) {
        /* Missing observations take the model's prediction as the fact. */
        for (size_t j = 0; j < ny; j++) {
            if (st->ym[j] == 0) {
                st->y[j] = sw->out[j];
            }
        }
    }
    for (size_t s = from; s < n; s++) {
        for (size_t j = 0; j < ny; j++) {
            st->u[s * ny + j] = st->y[j] - sw->out[(s - from) * 2 * ny + j];
        }
    }
    st->n_u = n;
    return SM_OK;
}

static int abduct_node(struct gvae_sweep *sw,
                       size_t i,
                       const struct cbn_window *w,
                       const struct cbn_normals *normals,
                       struct sm_rng *rng)
{
    const struct gvae_node *node = &sw->m->nodes[i];
    struct gvae_nstate *st = &sw->ns[i];
    const struct gvae_cvae *c = &node->cvae;
    size_t S = sw->S, nx = node->nx, ny = node->ny, np = node->np;
    size_t nz = c->nz;
    st->live = c->block != NULL && node->trained;
    st->x = sm_calloc(nx + 1, sizeof(float));
    st->xn = sm_calloc(nx + 1, sizeof(float));
    st->y = sm_calloc(ny + 1, sizeof(float));
    st->ym = sm_calloc(ny + 1, sizeof(float));
    st->p = sm_calloc(np + 1, sizeof(float));
    st->z = sm_calloc(S * nz + 1, sizeof(float));
    st->u = sm_calloc(S * ny + 1, sizeof(float));
    st->eps = sm_calloc(S * nz + 1, sizeof(float));
    if (!st->x || !st->xn || !st->y || !st->ym || !st->p || !st->z || !st->u ||
        !st->eps) {
        return SM_ENOMEM;
    }
    gvae__node_vectors(node, w, st->x, st->y, st->ym, st->p);
    normal_x(node, normals, st->xn);
    /* evidence and range checks read the raw inputs: keep them */
    float *xc = st->xin = sm_malloc((nx + 1) * sizeof *xc);
    float *yc = sm_malloc((ny + 1) * sizeof *yc);
    float *pc = st->pin = sm_malloc((np + 1) * sizeof *pc);
    if (xc == NULL || yc == NULL || pc == NULL) {
        sm_free(yc);
        return SM_ENOMEM;
    }
    memcpy(xc, st->x, nx * sizeof *xc);
    memcpy(yc, st->y, ny * sizeof *yc);
    memcpy(pc, st->p, np * sizeof *pc);
    clamp_range(xc, node->xs, nx);
    clamp_range(yc, node->ys, ny);
    clamp_range(pc, node->ps, np);
    for (size_t k = 0; k < S * nz; k++) {
        st->eps[k] = k < nz ? 0.0f : (float)sm_rng_normal(rng);
    }
    int rc = st->live ? reserve_rows(sw, S) : SM_OK;
    if (rc != SM_OK || !st->live) {
        sm_free(yc);
        return rc;
    }
    /* q(Z | X, Y, Yp) of the observed window; sample 0 is its mean. */
    float *in = sw->din;
    memcpy(in, xc, nx * sizeof *in);
    memcpy(in + nx, yc, ny * sizeof *in);
    sm_free(yc);
    memcpy(in + nx + ny, pc, np * sizeof *in);
    gvae__mlp_infer(&c->enc, 1, in, sw->head, sw->scratch);
    for (size_t s = 0; s < S; s++) {
        for (size_t j = 0; j < nz; j++) {
            float mu = sw->head[j];
            float lv = sw->head[nz + j];
            lv = lv < NN_LOGVAR_MIN   ? NN_LOGVAR_MIN
                 : lv > NN_LOGVAR_MAX ? NN_LOGVAR_MAX
                                      : lv;
            st->z[s * nz + j] = mu + expf(0.5f * lv) * st->eps[s * nz + j];
        }
    }
    rc = residuals(sw, i, 1);
    if (rc == SM_OK) {
        sw->rows += 1; /* the posterior mean's row */
        st->n_uc = 1;
    }
    return rc;
}

static int is_intervened(const struct gvae_intervention *iv,
                         size_t i,
                         unsigned *classes)
{
    for (size_t k = 0; k < iv->n; k++) {
        if (iv->node[k] == i) {
            *classes = iv->classes[k];
            return 1;
        }
    }
    return 0;
}

/* Whether affected row block @a of node @i belongs to an intervention that
 * restores node @i's own noise. */
static int own_row(const struct gvae_sweep *sw,
                   const struct gvae_intervention *iv,
                   size_t K,
                   size_t i,
                   size_t a)
{
    const struct gvae_nstate *st = &sw->ns[i];
    for (size_t k = 0; k < K; k++) {
        if (st->pos[k] == a) {
            unsigned cls;
            return iv[k].own && is_intervened(&iv[k], i, &cls);
        }
    }
    return 0;
}

size_t gvae__pg_parent(const struct gvae_node *node, size_t g)
{
    for (size_t q = 0; q < node->n_parents; q++) {
        if (node->parents[q] == node->pg[g].src_node) {
            return q;
        }
    }
    return SIZE_MAX;
}

size_t gvae__node_affected(const struct gvae_sweep *sw,
                           size_t i,
                           const struct gvae_intervention *iv,
                           size_t K,
                           const uint8_t *paff,
                           size_t *pos)
{
    const struct gvae_node *node = &sw->m->nodes[i];
    size_t n_aff = 0;
    for (size_t k = 0; k < K; k++) {
        unsigned cls;
        int aff = 0;
        if (sw->ns[i].live) {
            aff = is_intervened(&iv[k], i, &cls);
            for (size_t q = 0; !aff && q < node->n_parents; q++) {
                aff = paff[q * K + k] != 0;
            }
        }
        pos[k] = aff ? n_aff++ : SIZE_MAX;
    }
    return n_aff;
}

int gvae__node_pass(struct gvae_sweep *sw,
                    size_t i,
                    const struct gvae_intervention *iv,
                    size_t K,
                    size_t S,
                    const uint8_t *paff,
                    const struct gvae_pview *pv)
{
    const struct gvae_node *node = &sw->m->nodes[i];
    struct gvae_nstate *st = &sw->ns[i];
    sm_free(st->cf);
    st->cf = NULL;
    st->n_aff = gvae__node_affected(sw, i, iv, K, paff, st->pos);
    size_t n_aff = st->n_aff;
    if (n_aff == 0) {
        return SM_OK;
    }
    const struct gvae_cvae *c = &node->cvae;
    size_t nx = node->nx, ny = node->ny, np = node->np, nz = c->nz;
    size_t din = nx + nz + np, R = n_aff * S;
    int rc;
    if (sw->cfg->abduction != GVAE_ABDUCT_PRIOR &&
        (rc = residuals(sw, i, S)) != SM_OK) {
        return rc;
    }
    rc = reserve_rows(sw, R);
    st->cf = sm_malloc(R * ny * sizeof(float));
    if (rc != SM_OK || st->cf == NULL) {
        return SM_ENOMEM;
    }
    for (size_t k = 0; k < K; k++) {
        if (st->pos[k] == SIZE_MAX) {
            continue;
        }
        unsigned cls = 0;
        int here = is_intervened(&iv[k], i, &cls);
        for (size_t s = 0; s < S; s++) {
            size_t r = st->pos[k] * S + s;
            float *x = sw->xr + r * nx;
            memcpy(x, st->xin, nx * sizeof *x);
            for (size_t g = 0; here && g < node->n_xg; g++) {
                const struct gvae_group *gr = &node->xg[g];
                if (!restorable(gr, cls)) {
                    continue;
                }
                for (unsigned q = 0; q < gr->width; q++) {
                    float v = st->xn[gr->offset + q];
                    if (!isnan(v)) {
                        x[gr->offset + q] = v;
                    }
                }
            }
            float *row = sw->din + r * din;
            memcpy(row, x, nx * sizeof *row);
            memcpy(row + nx, st->z + s * nz, nz * sizeof *row);
            float *p = sw->pr + r * np; /* raw, for the skip */
            memcpy(p, st->p, np * sizeof *p);
            for (size_t g = 0; g < node->n_pg; g++) {
                const struct gvae_group *pg = &node->pg[g];
                const struct gvae_pview *v = &pv[g * K + k];
                if (v->base != NULL) {
                    memcpy(p + pg->offset, v->base + s * v->stride,
                           pg->width * sizeof *p);
                }
            }
            memcpy(row + nx + nz, p, np * sizeof *row);
            clamp_range(row + nx + nz, node->ps, np);
        }
    }
    int prior_all = sw->cfg->abduction == GVAE_ABDUCT_PRIOR;
    int own_any = 0;
    for (size_t k = 0; k < K && !prior_all; k++) {
        unsigned cls;
        own_any |= iv[k].own && st->pos[k] != SIZE_MAX &&
                   is_intervened(&iv[k], i, &cls);
    }
    if (prior_all || own_any) {
        /* Z ~ p(Z | X') with the sample's noise: for every regenerated
         * node in the literal sweep, else only where the intervention
         * restores the node's own state. */
        gvae__mlp_infer(&c->prior, R, sw->xr, sw->head, sw->scratch);
        for (size_t r = 0; r < R; r++) {
            size_t s = r % S;
            if (!prior_all && !own_row(sw, iv, K, i, r / S)) {
                continue;
            }
            for (size_t j = 0; j < nz; j++) {
                float mu = sw->head[r * 2 * nz + j];
                float lv = sw->head[r * 2 * nz + nz + j];
                lv = lv < NN_LOGVAR_MIN   ? NN_LOGVAR_MIN
                     : lv > NN_LOGVAR_MAX ? NN_LOGVAR_MAX
                                          : lv;
                sw->din[r * din + nx + j] =
                    mu + expf(0.5f * lv) * st->eps[s * nz + j];
            }
        }
    }
    gvae__mlp_infer(&c->dec, R, sw->din, sw->out, sw->scratch);
    gvae__dec_skip(c, R, sw->pr, sw->out, sw->head);
    for (size_t r = 0; r < R; r++) {
        size_t s = r % S;
        /* the residual stays, except where the node was regenerated */
        int keep_u = !prior_all && !(own_any && own_row(sw, iv, K, i, r / S));
        for (size_t j = 0; j < ny; j++) {
            float v = sw->out[r * 2 * ny + j];
            st->cf[r * ny + j] = keep_u ? v + st->u[s * ny + j] : v;
        }
    }
    return SM_OK;
}

/* The flags of node @i's parents (n_parents x K) from their rows of the
 * current pass. */
static void parent_flags(const struct gvae_sweep *sw,
                         size_t i,
                         size_t K,
                         uint8_t *paff)
{
    const struct gvae_node *node = &sw->m->nodes[i];
    for (size_t q = 0; q < node->n_parents; q++) {
        const struct gvae_nstate *src = &sw->ns[node->parents[q]];
        for (size_t k = 0; k < K; k++) {
            paff[q * K + k] = src->pos[k] != SIZE_MAX;
        }
    }
}

/* Computes node @i here, reading its parents' rows where they are. */
static int local_pass(struct gvae_sweep *sw,
                      size_t i,
                      const struct gvae_intervention *iv,
                      size_t K,
                      size_t S,
                      uint8_t *paff,
                      struct gvae_pview *pv)
{
    const struct gvae_model *m = sw->m;
    const struct gvae_node *node = &m->nodes[i];
    parent_flags(sw, i, K, paff);
    for (size_t g = 0; g < node->n_pg; g++) {
        const struct gvae_group *pg = &node->pg[g];
        size_t q = gvae__pg_parent(node, g);
        for (size_t k = 0; k < K; k++) {
            struct gvae_pview *v = &pv[g * K + k];
            *v = (struct gvae_pview){NULL, 0};
            if (q == SIZE_MAX || !paff[q * K + k]) {
                continue;
            }
            const struct gvae_nstate *src = &sw->ns[pg->src_node];
            size_t sny = m->nodes[pg->src_node].ny;
            v->base = src->cf + src->pos[k] * S * sny + pg->src_offset;
            v->stride = sny;
        }
    }
    return gvae__node_pass(sw, i, iv, K, S, paff, pv);
}

/* Runs @K interventions (S rows each) through the decoders, one
 * topological level after the other; nodes not downstream of an
 * intervention keep their observed values. Which nodes a pass regenerates
 * follows from the interventions and the CBN alone, so it is known before
 * any decoder runs: per level, the nodes of remote owners are sent in one
 * exchange (one request per owner), the coordinator's own nodes and those
 * whose owner failed are computed here. */
static int sweep_run(struct gvae_sweep *sw,
                     const struct gvae_intervention *iv,
                     size_t K,
                     size_t S,
                     struct outcome *res)
{
    const struct gvae_model *m = sw->m;
    size_t nn = sw->nn;
    int rc = SM_OK;
    for (size_t i = 0; i < nn; i++) {
        struct gvae_nstate *st = &sw->ns[i];
        sm_free(st->cf);
        sm_free(st->pos);
        st->cf = NULL;
        st->n_aff = 0;
        st->pos = sm_malloc((K + 1) * sizeof(size_t));
        if (st->pos == NULL) {
            return SM_ENOMEM;
        }
    }
    uint8_t *paff = sm_malloc(sw->max_parents * K + 1);
    struct gvae_pview *pv = sm_malloc((sw->max_pg * K + 1) * sizeof *pv);
    size_t *here = sm_malloc((nn + 1) * sizeof *here);
    size_t *far = sm_malloc((nn + 1) * sizeof *far);
    unsigned *owners = sm_malloc((nn + 1) * sizeof *owners);
    uint8_t *done = sm_malloc(nn + 1);
    if (!paff || !pv || !here || !far || !owners || !done) {
        rc = SM_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < nn; i++) {
        parent_flags(sw, i, K, paff);
        sw->ns[i].n_aff =
            gvae__node_affected(sw, i, iv, K, paff, sw->ns[i].pos);
    }
    int posterior = sw->cfg->abduction != GVAE_ABDUCT_PRIOR;
    for (size_t l = 0; l < sw->n_levels && rc == SM_OK; l++) {
        size_t n_here = 0, n_far = 0;
        for (size_t o = sw->level_start[l]; o < sw->level_start[l + 1]; o++) {
            size_t i = sw->order[o];
            struct gvae_nstate *st = &sw->ns[i];
            if (st->n_aff == 0) {
                continue;
            }
            /* rows as if computed here, wherever they are */
            sw->rows += st->n_aff * S;
            if (posterior && S > st->n_uc) {
                sw->rows += S - st->n_uc;
                st->n_uc = S;
            }
            unsigned who =
                sw->remote != NULL ? sw->remote->owner(sw->remote->arg, i) : 0;
            if (who == 0) {
                here[n_here++] = i;
            } else {
                owners[n_far] = who;
                far[n_far++] = i;
            }
        }
        if (n_far > 0) {
            memset(done, 0, n_far);
            rc = gvae__remote_level(sw, iv, K, S, l, far, owners, n_far, done);
            for (size_t j = 0; rc == SM_OK && j < n_far; j++) {
                if (!done[j]) {
                    here[n_here++] = far[j];
                    if (sw->stats != NULL) {
                        sw->stats->fallbacks++;
                    }
                }
            }
        }
        for (size_t j = 0; rc == SM_OK && j < n_here; j++) {
            rc = local_pass(sw, here[j], iv, K, S, paff, pv);
        }
    }
    sw->pass++;
    if (sw->stats != NULL) {
        sw->stats->passes++;
    }
out:
    sm_free(paff);
    sm_free(pv);
    sm_free(here);
    sm_free(far);
    sm_free(owners);
    sm_free(done);
    if (rc != SM_OK) {
        return rc;
    }
    /* The frontend's latency at the QoS percentile, per intervention. */
    const struct gvae_node *fn = &m->nodes[sw->front];
    const struct gvae_nstate *fs = &sw->ns[sw->front];
    const struct gvae_stat *qst = &fn->ys[sw->qf];
    double obs = gvae__untransform(GVAE_LATENCY, raw_of(qst, fs->y[sw->qf]));
    for (size_t k = 0; k < K; k++) {
        double eff = 0, met = 0;
        for (size_t s = 0; s < S; s++) {
            double e = 0;
            if (fs->pos[k] != SIZE_MAX) {
                float v = fs->cf[(fs->pos[k] * S + s) * fn->ny + sw->qf];
                e = obs - gvae__untransform(GVAE_LATENCY, raw_of(qst, v));
            }
            eff += e;
            met += sw->latency - e <= sw->target;
        }
        res[k].effect = eff / (double)S;
        res[k].p = met / (double)S;
    }
    return SM_OK;
}

/* ---- evidence ---------------------------------------------------------- */

/* Robust z of the node's own latencies (upwards), the largest. */
static double latency_evidence(const struct gvae_node *node,
                               const struct gvae_nstate *st)
{
    double z = 0;
    for (size_t f = 0; f < node->ny; f++) {
        const struct gvae_stat *s = &node->ys[f];
        if (st->ym[f] != 0) {
            z = fmax(z, (raw_of(s, st->y[f]) - s->median) / s->iqr);
        }
    }
    return z;
}

/* Robust z: how far the node's inputs (either way) and its latencies
 * (upwards) are from their training medians, in IQRs; the largest. */
static double evidence(const struct gvae_node *node,
                       const struct gvae_nstate *st,
                       unsigned classes,
                       int upward)
{
    double z = 0;
    for (size_t g = 0; g < node->n_xg; g++) {
        const struct gvae_group *gr = &node->xg[g];
        if (!restorable(gr, classes)) {
            continue;
        }
        for (unsigned k = 0; k < gr->width; k++) {
            const struct gvae_stat *s = &node->xs[gr->offset + k];
            double d = raw_of(s, st->x[gr->offset + k]) - s->median;
            d = upward ? d : fabs(d);
            z = fmax(z, d / s->iqr);
        }
    }
    return classes == ALL_CLASSES ? fmax(z, latency_evidence(node, st)) : z;
}

static unsigned out_of_range(const struct gvae_node *node,
                             const struct gvae_nstate *st,
                             const struct gvae_group **first_bad)
{
    unsigned n = 0;
    for (size_t g = 0; g < node->n_xg; g++) {
        const struct gvae_group *gr = &node->xg[g];
        int bad = 0;
        for (unsigned k = 0; k < gr->width; k++) {
            const struct gvae_stat *s = &node->xs[gr->offset + k];
            float t = raw_of(s, st->x[gr->offset + k]);
            float margin = 0.25f * (s->hi - s->lo) + 0.05f;
            bad |= t < s->lo - margin || t > s->hi + margin;
        }
        if (bad) {
            if (n == 0 && first_bad != NULL) {
                *first_bad = gr;
            }
            n++;
        }
    }
    return n;
}

/* ---- diagnosis ------------------------------------------------------------
 */

struct cand
{
    size_t node;
    double score, effect, p, z;
    unsigned oor;
};

static int cand_cmp(const void *a, const void *b)
{
    const struct cand *x = a, *y = b;
    if (x->score != y->score) {
        return x->score < y->score ? 1 : -1;
    }
    if (x->effect != y->effect) {
        return x->effect < y->effect ? 1 : -1;
    }
    return (x->node > y->node) - (x->node < y->node);
}

static double score_of(const struct gvae_sweep *sw, const struct cand *c)
{
    double eff = c->effect > 0 ? c->effect : 0;
    double norm = eff / sw->excess;
    double zs = c->z / (1 + c->z);
    switch (sw->cfg->rank) {
        case GVAE_RANK_EFFECT:
            return c->effect;
        case GVAE_RANK_EFFECT_EVIDENCE:
            return norm * c->z;
        case GVAE_RANK_EVIDENCE:
            return c->z;
        case GVAE_RANK_GATED_EVIDENCE:
        default: {
            double g = sw->cfg->gate;
            if (norm >= g) {
                return 1 + zs;
            }
            return (g > 0 ? norm / g : 0) * zs;
        }
    }
}

void gvae__sweep_free(struct gvae_sweep *sw)
{
    for (size_t i = 0; sw->ns != NULL && i < sw->nn; i++) {
        struct gvae_nstate *st = &sw->ns[i];
        sm_free(st->x);
        sm_free(st->xn);
        sm_free(st->xin);
        sm_free(st->pin);
        sm_free(st->y);
        sm_free(st->ym);
        sm_free(st->p);
        sm_free(st->z);
        sm_free(st->u);
        sm_free(st->eps);
        sm_free(st->cf);
        sm_free(st->pos);
    }
    sm_free(sw->ns);
    sm_free(sw->scratch);
    sm_free(sw->xr);
    sm_free(sw->din);
    sm_free(sw->out);
    sm_free(sw->head);
    sm_free(sw->pr);
    sm_free(sw->order);
    sm_free(sw->level_start);
    memset(sw, 0, sizeof *sw);
}

/* Builds the diagnosis's one allocation: copies every string. */
struct dbuild
{
    struct gvae_culprit cul[8]; /* service set when packed */
    size_t cul_node[8];         /* their nodes */
    size_t n_cul;
    struct cand *cands;
    size_t n_cands;
    size_t path[64];
    size_t n_path;
    const char *unseen_node[64];
    const char *unseen_key[64];
    size_t n_unseen;
};

static struct gvae_diagnosis *diagnosis_pack(const struct gvae_sweep *sw,
                                             const struct dbuild *b)
{
    const struct gvae_model *m = sw->m;
    size_t strbytes = 0;
    for (size_t i = 0; i < m->n_nodes; i++) {
        strbytes += strlen(m->nodes[i].name) + 1;
    }
    for (size_t k = 0; k < b->n_unseen; k++) {
        strbytes += strlen(b->unseen_node[k]) + strlen(b->unseen_key[k]) + 3;
    }
    size_t size = sizeof(struct gvae_diagnosis) +
                  b->n_cul * sizeof(struct gvae_culprit) +
                  b->n_cands * sizeof(struct gvae_candidate) +
                  (b->n_path + b->n_unseen) * sizeof(char *) + strbytes;
    struct gvae_diagnosis *d = sm_calloc(1, size);
    if (d == NULL) {
        return NULL;
    }
    char *p = (char *)(d + 1);
    d->culprits = (struct gvae_culprit *)p;
    p += b->n_cul * sizeof(struct gvae_culprit);
    d->ranking = (struct gvae_candidate *)p;
    p += b->n_cands * sizeof(struct gvae_candidate);
    d->path = (const char **)p;
    p += b->n_path * sizeof(char *);
    d->unseen = (const char **)p;
    p += b->n_unseen * sizeof(char *);
    /* node names, once */
    const char **names = sm_calloc(m->n_nodes + 1, sizeof *names);
    if (names == NULL) {
        sm_free(d);
        return NULL;
    }
    for (size_t i = 0; i < m->n_nodes; i++) {
        size_t len = strlen(m->nodes[i].name) + 1;
        memcpy(p, m->nodes[i].name, len);
        names[i] = p;
        p += len;
    }
    d->latency_ms = sw->latency;
    d->target_ms = sw->target;
    d->violated = sw->latency > sw->target;
    d->n_culprits = b->n_cul;
    for (size_t k = 0; k < b->n_cul; k++) {
        d->culprits[k] = b->cul[k];
        d->culprits[k].service = names[b->cul_node[k]];
    }
    d->n_ranking = b->n_cands;
    for (size_t k = 0; k < b->n_cands; k++) {
        const struct cand *c = &b->cands[k];
        d->ranking[k] = (struct gvae_candidate){
            .service = names[c->node],
            .score = c->score,
            .effect_ms = c->effect,
            .p_qos_met = c->p,
            .evidence = c->z,
            .out_of_range = c->oor,
        };
    }
    d->n_path = b->n_path;
    for (size_t k = 0; k < b->n_path; k++) {
        d->path[k] = names[b->path[k]];
    }
    d->n_unseen = b->n_unseen;
    for (size_t k = 0; k < b->n_unseen; k++) {
        int len = sprintf(p, "%s: %s", b->unseen_node[k], b->unseen_key[k]);
        d->unseen[k] = p;
        p += len + 1;
    }
    d->rows = (size_t)sw->rows;
    sm_free(names);
    return d;
}

/* Shortest CBN path from @from up to the frontend, over callers. */
static void find_path(const struct gvae_model *m,
                      size_t from,
                      size_t to,
                      struct dbuild *b)
{
    size_t nn = m->n_nodes;
    size_t *prev = sm_malloc((nn + 1) * sizeof *prev);
    size_t *queue = sm_malloc((nn + 1) * sizeof *queue);
    b->n_path = 0;
    if (prev == NULL || queue == NULL) {
        sm_free(prev);
        sm_free(queue);
        return;
    }
    for (size_t i = 0; i < nn; i++) {
        prev[i] = SIZE_MAX;
    }
    size_t head = 0, tail = 0;
    queue[tail++] = from;
    prev[from] = from;
    while (head < tail) {
        size_t i = queue[head++];
        for (size_t j = i + 1; j < nn; j++) {
            const struct gvae_node *nj = &m->nodes[j];
            for (size_t q = 0; q < nj->n_parents; q++) {
                if (nj->parents[q] == i && prev[j] == SIZE_MAX) {
                    prev[j] = i;
                    queue[tail++] = j;
                }
            }
        }
    }
    if (prev[to] != SIZE_MAX) {
        size_t rev[64], n = 0;
        for (size_t i = to; n < 64; i = prev[i]) {
            rev[n++] = i;
            if (i == from) {
                break;
            }
        }
        for (size_t k = 0; k < n; k++) {
            b->path[k] = rev[n - 1 - k];
        }
        b->n_path = n;
    }
    sm_free(prev);
    sm_free(queue);
}

/* The resource class inside culprit @c whose restoration lowers the
 * frontend latency most; by evidence when none has an effect. */
static int resource_sweep(struct gvae_sweep *sw,
                          size_t c,
                          struct gvae_culprit *out)
{
    const struct gvae_node *node = &sw->m->nodes[c];
    struct gvae_intervention iv[CBN_RES_COUNT];
    enum cbn_resource cls[CBN_RES_COUNT];
    size_t K = 0;
    for (int r = 0; r < CBN_RES_UNKNOWN; r++) {
        int has = 0;
        for (size_t g = 0; g < node->n_xg; g++) {
            has |= restorable(&node->xg[g], 1u << r);
        }
        if (has) {
            iv[K] = (struct gvae_intervention){1, {c}, {1u << r}, 0};
            cls[K++] = (enum cbn_resource)r;
        }
    }
    out->resource = CBN_RES_UNKNOWN;
    out->resource_effect_ms = 0;
    if (K == 0) {
        return SM_OK;
    }
    struct outcome res[CBN_RES_COUNT];
    int rc = sweep_run(sw, iv, K, 1, res);
    if (rc != SM_OK) {
        return rc;
    }
    /* Score each class: by its counterfactual effect, by the evidence of
     * its inputs (how far they rose above their training medians, in
     * IQRs), or gated: classes whose restoration explains a share of the
     * excess first, then by evidence. Concrete classes (cpu, memory,
     * network, disk, llc) come before "other": thread-pool occupancy and
     * the like rise with any slowdown of the service, so they name the
     * resource only when no concrete class stands out. A class whose
     * inputs are within CLASS_Z of normal and that has no effect is never
     * named. */
    double gate = sw->cfg->gate * sw->excess;
    size_t best = SIZE_MAX;
    double best_score = 0;
    for (size_t k = 0; k < K; k++) {
        double z = evidence(node, &sw->ns[c], 1u << cls[k], 1);
        int gated = res[k].effect >= gate;
        int clear = z >= CLASS_Z;
        double score = 0;
        switch (sw->cfg->resource_rank) {
            case GVAE_RES_EFFECT:
                score = gated   ? 4 + res[k].effect / sw->excess
                        : clear ? 1 + z / (1 + z)
                                : 0;
                break;
            case GVAE_RES_EVIDENCE:
                score = clear ? 1 + z / (1 + z) : 0;
                break;
            case GVAE_RES_GATED_EVIDENCE:
            default:
                score = gated && clear ? 3 + z / (1 + z)
                        : clear        ? 1 + z / (1 + z)
                        : gated        ? 0.5
                                       : 0;
                break;
        }
        if (score > 0 && cls[k] != CBN_RES_OTHER) {
            score += 4; /* concrete classes first */
        }
        if (score > best_score) {
            best_score = score;
            best = k;
        }
    }
    if (best != SIZE_MAX) {
        out->resource = cls[best];
        out->resource_effect_ms = res[best].effect;
    } else if (latency_evidence(node, &sw->ns[c]) >= CLASS_Z) {
        /* slow by itself while no resource it reports moved: a software
         * cause (locks, thread pools, a bug) */
        out->resource = CBN_RES_OTHER;
    }
    return SM_OK;
}

static int find_qos(const struct gvae_model *m,
                    const char *service,
                    double pct,
                    size_t *node,
                    size_t *feature,
                    size_t *pct_index)
{
    for (size_t i = 0; i < m->n_nodes; i++) {
        const struct gvae_node *nd = &m->nodes[i];
        for (size_t g = 0; g < nd->n_yg; g++) {
            const struct gvae_group *gr = &nd->yg[g];
            if (gr->kind != GVAE_LATENCY || strcmp(gr->service, service)) {
                continue;
            }
            size_t best = 0;
            for (size_t k = 1; k < CBN_N_PCT; k++) {
                if (fabs(cbn_percentiles[k] - pct) <
                    fabs(cbn_percentiles[best] - pct)) {
                    best = k;
                }
            }
            *node = i;
            *feature = gr->offset + best;
            *pct_index = best;
            return nd->trained ? SM_OK : SM_ENOTFOUND;
        }
    }
    return SM_ENOTFOUND;
}

/* Topological levels: parents come before their children in the model,
 * so one pass over the nodes finds them. */
static int levels(struct gvae_sweep *sw)
{
    const struct gvae_model *m = sw->m;
    size_t nn = m->n_nodes;
    size_t *level = sm_calloc(nn + 1, sizeof *level);
    sw->order = sm_malloc((nn + 1) * sizeof *sw->order);
    sw->level_start = sm_calloc(nn + 2, sizeof *sw->level_start);
    if (level == NULL || sw->order == NULL || sw->level_start == NULL) {
        sm_free(level);
        return SM_ENOMEM;
    }
    for (size_t i = 0; i < nn; i++) {
        const struct gvae_node *node = &m->nodes[i];
        for (size_t q = 0; q < node->n_parents; q++) {
            size_t l = level[node->parents[q]] + 1;
            level[i] = l > level[i] ? l : level[i];
        }
        sw->n_levels =
            level[i] + 1 > sw->n_levels ? level[i] + 1 : sw->n_levels;
        sw->max_parents = node->n_parents > sw->max_parents ? node->n_parents
                                                            : sw->max_parents;
        sw->max_pg = node->n_pg > sw->max_pg ? node->n_pg : sw->max_pg;
    }
    /* counting sort: by level, then by index */
    for (size_t i = 0; i < nn; i++) {
        sw->level_start[level[i] + 1]++;
    }
    for (size_t l = 0; l < sw->n_levels; l++) {
        sw->level_start[l + 1] += sw->level_start[l];
    }
    size_t *at = sm_malloc((sw->n_levels + 1) * sizeof *at);
    if (at == NULL) {
        sm_free(level);
        return SM_ENOMEM;
    }
    memcpy(at, sw->level_start, sw->n_levels * sizeof *at);
    for (size_t i = 0; i < nn; i++) {
        sw->order[at[level[i]]++] = i;
    }
    sm_free(at);
    sm_free(level);
    return SM_OK;
}

int gvae__sweep_init(struct gvae_sweep *sw,
                     const struct gvae_model *m,
                     const struct cbn_window *w,
                     const struct cbn_normals *normals,
                     const struct gvae_sweep_config *cfg,
                     char *errmsg)
{
    memset(sw, 0, sizeof *sw);
    if (cfg->qos_service == NULL || cfg->qos_service[0] == '\0' ||
        !(cfg->qos_target_ms > 0) || cfg->samples < 1 || cfg->samples > 4096 ||
        !(cfg->qos_percentile > 0) || !(cfg->qos_percentile <= 100) ||
        cfg->max_culprits < 1 || !(cfg->gate >= 0)) {
        sm_errmsg_printf(errmsg,
                         "diagnose: bad sweep config (QoS service and target "
                         "set, 1..4096 samples, percentile in (0, 100])");
        return SM_EINVAL;
    }
    *sw = (struct gvae_sweep){
        .m = m, .cfg = cfg, .S = cfg->samples, .nn = m->n_nodes};
    int rc = find_qos(m, cfg->qos_service, cfg->qos_percentile, &sw->front,
                      &sw->qf, &sw->qpct);
    if (rc != SM_OK) {
        sm_errmsg_printf(errmsg, "diagnose: the model has no latency for %s",
                         cfg->qos_service);
        return rc;
    }
    sw->latency = w->qos_latency_ms;
    if (isnan(sw->latency)) {
        const struct cbn_window_service *sv =
            cbn_window_service(w, cfg->qos_service);
        if (sv == NULL) {
            sm_errmsg_printf(errmsg,
                             "diagnose: the window has no requests "
                             "for %s",
                             cfg->qos_service);
            return SM_ENOTFOUND;
        }
        sw->latency = sv->latency_ms[sw->qpct];
    }
    sw->target = cfg->qos_target_ms;
    sw->excess = sw->latency - sw->target;
    if (sw->excess < 0.05 * sw->target) {
        sw->excess = 0.05 * sw->target;
    }
    sw->start_ns = w->start_ns;
    for (size_t i = 0; i < m->n_nodes; i++) {
        const struct gvae_cvae *c = &m->nodes[i].cvae;
        size_t cand[] = {gvae__mlp_widest(&c->enc), gvae__mlp_widest(&c->dec),
                         gvae__mlp_widest(&c->prior), 2 * m->nodes[i].ny + 1,
                         m->nodes[i].nx + 1};
        for (size_t k = 0; c->block != NULL && k < 5; k++) {
            sw->widest = cand[k] > sw->widest ? cand[k] : sw->widest;
        }
    }
    sw->ns = sm_calloc(m->n_nodes + 1, sizeof *sw->ns);
    if (sw->ns == NULL || (rc = levels(sw)) != SM_OK) {
        return SM_ENOMEM;
    }
    struct sm_rng rng;
    sm_rng_seed(&rng, cfg->seed ^ w->start_ns);
    for (size_t i = 0; i < m->n_nodes && rc == SM_OK; i++) {
        rc = abduct_node(sw, i, w, normals, &rng);
    }
    return rc;
}

int gvae_diagnose(const struct gvae_model *m,
                  const struct cbn_window *w,
                  const struct cbn_normals *normals,
                  const struct gvae_sweep_config *cfg,
                  struct gvae_diagnosis **out,
                  char errmsg[SM_ERRMSG_SIZE])
{
    return gvae_diagnose_remote(m, w, normals, cfg, NULL, NULL, out, errmsg);
}

int gvae_diagnose_remote(const struct gvae_model *m,
                         const struct cbn_window *w,
                         const struct cbn_normals *normals,
                         const struct gvae_sweep_config *cfg,
                         const struct gvae_remote *remote,
                         struct gvae_remote_stats *stats,
                         struct gvae_diagnosis **out,
                         char errmsg[SM_ERRMSG_SIZE])
{
    errmsg[0] = '\0';
    if (stats != NULL) {
        memset(stats, 0, sizeof *stats);
    }
    struct gvae_sweep sw = {0};
    struct dbuild b = {0};
    struct gvae_intervention *iv = NULL;
    struct outcome *res = NULL;
    int rc = gvae__sweep_init(&sw, m, w, normals, cfg, errmsg);
    if (rc != SM_OK) {
        goto done;
    }
    sw.remote = remote;
    sw.stats = stats;
    b.cands = sm_calloc(m->n_nodes + 1, sizeof *b.cands);
    iv = sm_calloc(m->n_nodes + 1, sizeof *iv);
    res = sm_calloc(m->n_nodes + 1, sizeof *res);
    if (!b.cands || !iv || !res) {
        rc = SM_ENOMEM;
        goto done;
    }

    /* Service level: every candidate restored alone, in one pass at the
     * mean latent (deterministic effects for the ranking); then the S
     * samples of the best-ranked candidate, in a second pass, for
     * P(QoS met). */
    int own = cfg->abduction == GVAE_ABDUCT_POSTERIOR;
    size_t K = 0;
    for (size_t i = 0; i < m->n_nodes; i++) {
        iv[K++] = (struct gvae_intervention){1, {i}, {ALL_CLASSES}, own};
    }
    rc = sweep_run(&sw, iv, K, 1, res);
    if (rc != SM_OK) {
        goto done;
    }
    for (size_t i = 0; i < K; i++) {
        const struct gvae_node *node = &m->nodes[i];
        const struct gvae_group *bad = NULL;
        struct cand *c = &b.cands[b.n_cands++];
        c->node = i;
        c->effect = res[i].effect;
        c->p = res[i].p;
        c->z = evidence(node, &sw.ns[i], ALL_CLASSES, 0);
        c->oor = out_of_range(node, &sw.ns[i], &bad);
        c->score = score_of(&sw, c);
        if (bad != NULL && b.n_unseen < 64) {
            b.unseen_node[b.n_unseen] = node->name;
            b.unseen_key[b.n_unseen++] = bad->key;
        }
    }
    qsort(b.cands, b.n_cands, sizeof *b.cands, cand_cmp);
    size_t top_k =
        b.n_cands < SAMPLED_CANDIDATES ? b.n_cands : SAMPLED_CANDIDATES;
    for (size_t k = 0; k < top_k; k++) {
        iv[k] = (struct gvae_intervention){
            1, {b.cands[k].node}, {ALL_CLASSES}, own};
    }
    rc = sweep_run(&sw, iv, top_k, sw.S, res);
    if (rc != SM_OK) {
        goto done;
    }
    for (size_t k = 0; k < top_k; k++) {
        b.cands[k].p = res[k].p;
    }

    /* Culprits: the best-ranked candidate when its restoration explains
     * enough of the excess (or restores QoS); then greedily the candidate
     * that lowers the frontend most, until QoS is met or the limit. */
    if (sw.latency > sw.target && b.n_cands > 0) {
        const struct cand *top = &b.cands[0];
        int named =
            top->effect >= cfg->gate * sw.excess || top->p >= cfg->p_threshold;
        struct gvae_intervention set = {1, {top->node}, {ALL_CLASSES}, own};
        double p = top->p, eff = top->effect;
        if (named) {
            b.cul_node[b.n_cul] = top->node;
            b.cul[b.n_cul++] = (struct gvae_culprit){
                .p_qos_met = p,
                .effect_ms = eff,
            };
        }
        unsigned limit = cfg->max_culprits < 8 ? cfg->max_culprits : 8;
        while (named && p < cfg->p_threshold && b.n_cul < limit) {
            size_t Kg = 0;
            for (size_t i = 0; i < m->n_nodes; i++) {
                int in = 0;
                for (size_t q = 0; q < set.n; q++) {
                    in |= set.node[q] == i;
                }
                if (!in) {
                    iv[Kg] = set;
                    iv[Kg].node[set.n] = i;
                    iv[Kg].classes[set.n] = ALL_CLASSES;
                    iv[Kg++].n = set.n + 1;
                }
            }
            /* choose by the point effect; sample only the chosen set */
            if (Kg == 0 || (rc = sweep_run(&sw, iv, Kg, 1, res)) != SM_OK) {
                break;
            }
            size_t best = 0;
            for (size_t k = 1; k < Kg; k++) {
                if (res[k].effect > res[best].effect) {
                    best = k;
                }
            }
            /* Adding it must explain a further share of the excess. */
            if (res[best].effect - eff < cfg->gate * sw.excess) {
                break;
            }
            set = iv[best];
            eff = res[best].effect;
            if ((rc = sweep_run(&sw, &set, 1, sw.S, res)) != SM_OK) {
                break;
            }
            p = res[0].p;
            b.cul_node[b.n_cul] = set.node[set.n - 1];
            b.cul[b.n_cul++] = (struct gvae_culprit){
                .p_qos_met = p,
                .effect_ms = eff,
            };
        }
        for (size_t k = 0; rc == SM_OK && k < b.n_cul; k++) {
            rc = resource_sweep(&sw, b.cul_node[k], &b.cul[k]);
        }
        if (rc == SM_OK && b.n_cul > 0) {
            find_path(m, b.cul_node[0], sw.front, &b);
        }
    }
    if (rc != SM_OK) {
        goto done;
    }
    *out = diagnosis_pack(&sw, &b);
    if (*out == NULL) {
        rc = SM_ENOMEM;
    }
done:
    if (rc == SM_ENOMEM) {
        sm_errmsg_printf(errmsg, "diagnose: out of memory");
    }
    gvae__sweep_free(&sw);
    sm_free(b.cands);
    sm_free(iv);
    sm_free(res);
    return rc;
}

void gvae_diagnosis_free(struct gvae_diagnosis *d)
{
    sm_free(d);
}

/* ---- reconstruction quality ------------------------------------------------
 */

struct r2acc
{
    double sum, sum2, sse;
    size_t n;
};

int gvae_evaluate(const struct gvae_model *m,
                  const struct cbn_window *const *windows,
                  size_t n,
                  const char *frontend,
                  struct gvae_eval *out)
{
    memset(out, 0, sizeof *out);
    size_t nn = m->n_nodes, widest = 1;
    for (size_t i = 0; i < nn; i++) {
        const struct gvae_node *nd = &m->nodes[i];
        size_t c[] = {gvae__mlp_widest(&nd->cvae.dec),
                      gvae__mlp_widest(&nd->cvae.prior), 2 * nd->ny + 1,
                      nd->nx + nd->cvae.nz + nd->np + 1};
        for (size_t k = 0; nd->cvae.block && k < 4; k++) {
            widest = c[k] > widest ? c[k] : widest;
        }
    }
    size_t rows = n ? n : 1;
    float *scratch = sm_malloc(2 * rows * widest * sizeof(float));
    float *din = sm_malloc(rows * widest * sizeof(float));
    float *head = sm_malloc(rows * widest * sizeof(float));
    float *skip_tmp = sm_malloc((widest + 1) * sizeof(float));
    float *dout = sm_malloc(rows * widest * sizeof(float));
    float **gen = sm_calloc(nn + 1, sizeof *gen);
    struct r2acc *acc[2] = {NULL, NULL};
    size_t n_feat = 0;
    for (size_t i = 0; i < nn; i++) {
        n_feat += m->nodes[i].ny;
    }
    acc[0] = sm_calloc(n_feat + 1, sizeof **acc);
    acc[1] = sm_calloc(n_feat + 1, sizeof **acc);
    int rc =
        (scratch && din && head && dout && gen && acc[0] && acc[1] && skip_tmp)
            ? SM_OK
            : SM_ENOMEM;
    struct r2acc front = {0};
    size_t fnode = SIZE_MAX, ffeat = 0;
    if (frontend != NULL) {
        size_t pct_index;
        find_qos(m, frontend, 99, &fnode, &ffeat, &pct_index);
    }
    size_t base = 0;
    for (size_t i = 0; i < nn && rc == SM_OK; base += m->nodes[i].ny, i++) {
        const struct gvae_node *nd = &m->nodes[i];
        const struct gvae_cvae *c = &nd->cvae;
        size_t nx = nd->nx, ny = nd->ny, np = nd->np, nz = c->nz;
        size_t dw = nx + nz + np;
        if (c->block == NULL || !nd->trained) {
            continue;
        }
        gen[i] = sm_malloc((n * ny + 1) * sizeof(float));
        float *x = sm_malloc((n * nx + 1) * sizeof(float));
        float *y = sm_malloc((n * ny + 1) * sizeof(float));
        float *mk = sm_malloc((n * ny + 1) * sizeof(float));
        float *p = sm_malloc((n * np + 1) * sizeof(float));
        if (!gen[i] || !x || !y || !mk || !p) {
            rc = SM_ENOMEM;
        }
        float *praw = sm_malloc((n * np + 1) * sizeof(float));
        if (praw == NULL) {
            rc = SM_ENOMEM;
        }
        for (size_t t = 0; rc == SM_OK && t < n; t++) {
            gvae__node_vectors(nd, windows[t], x + t * nx, y + t * ny,
                               mk + t * ny, p + t * np);
            /* the MLPs see inputs within their training range, as in
             * sweeps; the skip sees the parents as they are */
            clamp_range(x + t * nx, nd->xs, nx);
        }
        if (rc == SM_OK) {
            gvae__mlp_infer(&c->prior, n, x, head, scratch);
        }
        /* pass 0: observed parents; pass 1: generated parents */
        for (int pass = 0; pass < 2 && rc == SM_OK; pass++) {
            for (size_t t = 0; t < n; t++) {
                float *row = din + t * dw;
                memcpy(row, x + t * nx, nx * sizeof *row);
                memcpy(row + nx, head + t * 2 * nz, nz * sizeof *row);
                memcpy(row + nx + nz, p + t * np, np * sizeof *row);
                for (size_t g = 0; pass == 1 && g < nd->n_pg; g++) {
                    const struct gvae_group *pg = &nd->pg[g];
                    const float *src = gen[pg->src_node];
                    size_t sny = m->nodes[pg->src_node].ny;
                    if (src != NULL) {
                        memcpy(row + nx + nz + pg->offset,
                               src + t * sny + pg->src_offset,
                               pg->width * sizeof *row);
                    }
                }
                memcpy(praw + t * np, row + nx + nz, np * sizeof *row);
                clamp_range(row + nx + nz, nd->ps, np);
            }
            gvae__mlp_infer(&c->dec, n, din, dout, scratch);
            for (size_t t = 0; t < n; t++) {
                gvae__dec_skip(c, 1, praw + t * np, dout + t * 2 * ny,
                               skip_tmp);
            }
            for (size_t t = 0; t < n; t++) {
                for (size_t j = 0; j < ny; j++) {
                    float v = dout[t * 2 * ny + j];
                    if (pass == 1) {
                        gen[i][t * ny + j] = v;
                    }
                    if (mk[t * ny + j] == 0) {
                        continue;
                    }
                    /* server latencies only: the published figure */
                    int is_lat = 0;
                    for (size_t g = 0; g < nd->n_yg; g++) {
                        const struct gvae_group *gr = &nd->yg[g];
                        if (j >= gr->offset && j < gr->offset + gr->width) {
                            is_lat = gr->kind == GVAE_LATENCY;
                        }
                    }
                    if (!is_lat) {
                        continue;
                    }
                    const struct gvae_stat *st = &nd->ys[j];
                    double obs = gvae__untransform(GVAE_LATENCY,
                                                   raw_of(st, y[t * ny + j]));
                    double pr = gvae__untransform(GVAE_LATENCY, raw_of(st, v));
                    struct r2acc *a = &acc[pass][base + j];
                    a->sum += obs;
                    a->sum2 += obs * obs;
                    a->sse += (obs - pr) * (obs - pr);
                    a->n++;
                    if (pass == 1 && i == fnode && j == ffeat) {
                        front.sum += obs;
                        front.sum2 += obs * obs;
                        front.sse += (obs - pr) * (obs - pr);
                        front.n++;
                    }
                }
            }
        }
        sm_free(x);
        sm_free(praw);
        sm_free(y);
        sm_free(mk);
        sm_free(p);
    }
    if (rc == SM_OK) {
        out->windows = n;
        for (int pass = 0; pass < 2; pass++) {
            double r2 = 0, sse = 0;
            size_t nf = 0, cnt = 0;
            for (size_t f = 0; f < n_feat; f++) {
                struct r2acc *a = &acc[pass][f];
                if (a->n < 2) {
                    continue;
                }
                double sst = a->sum2 - a->sum * a->sum / (double)a->n;
                sse += a->sse;
                cnt += a->n;
                if (sst > 1e-9) {
                    r2 += 1 - a->sse / sst;
                    nf++;
                }
            }
            double mean_r2 = nf ? r2 / (double)nf : NAN;
            double rmse = cnt ? sqrt(sse / (double)cnt) : NAN;
            if (pass == 0) {
                out->r2_forced = mean_r2;
                out->rmse_forced_ms = rmse;
                out->features = nf;
            } else {
                out->r2_generated = mean_r2;
                out->rmse_generated_ms = rmse;
            }
        }
        double sst = front.sum2 - front.sum * front.sum / (double)front.n;
        out->r2_frontend =
            front.n > 1 && sst > 1e-9 ? 1 - front.sse / sst : NAN;
    }
    for (size_t i = 0; gen != NULL && i < nn; i++) {
        sm_free(gen[i]);
    }
    sm_free(gen);
    sm_free(acc[0]);
    sm_free(acc[1]);
    sm_free(scratch);
    sm_free(din);
    sm_free(head);
    sm_free(skip_tmp);
    sm_free(dout);
    return rc;
}
