/* Training the GVAE: layout, statistics, per-node datasets, epochs with
 * early stopping, one worker per core over the nodes, partial retraining. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/alloc.h"
#include "gvae/internal.h"

void gvae_config_default(struct gvae_config *c)
{
    memset(c, 0, sizeof *c);
    c->latent = 4;
    c->hidden_layers = 2;
    c->hidden_min = 32;
    c->hidden_max = 96;
    c->alpha = 0.7f;
    c->beta = 1.0f;
    c->dropout = 0.1f;
    c->learning_rate = 3e-3f;
    c->weight_decay = 1e-4f;
    c->clip_norm = 5.0f;
    c->batch = 64;
    c->max_epochs = 120;
    c->patience = 12;
    c->val_fraction = 0.15f;
    c->violation_share = 0.2f;
    c->finetune_epochs = 20;
    c->threads = 0;
    c->seed = 1;
}

int gvae__config_check(const struct gvae_config *c, char *errmsg)
{
    const char *why = NULL;
    if (c->latent < 1 || c->latent > 64) {
        why = "latent must be 1..64";
    } else if (c->hidden_layers < 2 || c->hidden_layers > NN_MLP_MAX_HIDDEN) {
        why = "hidden_layers must be 2..4";
    } else if (c->hidden_min < 4 || c->hidden_max < c->hidden_min ||
               c->hidden_max > 4096) {
        why = "hidden widths must satisfy 4 <= min <= max <= 4096";
    } else if (!(c->alpha >= 0 && c->alpha <= 1) || !(c->beta >= 0)) {
        why = "alpha must be in [0, 1] and beta >= 0";
    } else if (!(c->dropout >= 0 && c->dropout < 1)) {
        why = "dropout must be in [0, 1)";
    } else if (!(c->learning_rate > 0) || !(c->weight_decay >= 0) ||
               !(c->clip_norm > 0)) {
        why = "learning rate and clip norm must be > 0, weight decay >= 0";
    } else if (c->batch < 2 || c->batch > 65536) {
        why = "batch must be 2..65536";
    } else if (c->max_epochs < 1 || c->patience < 1) {
        why = "max_epochs and patience must be >= 1";
    } else if (!(c->val_fraction >= 0 && c->val_fraction < 0.9f)) {
        why = "val_fraction must be in [0, 0.9)";
    } else if (!(c->violation_share >= 0 && c->violation_share < 1)) {
        why = "violation_share must be in [0, 1)";
    }
    if (why != NULL) {
        sm_errmsg_printf(errmsg, "gvae config: %s", why);
        return SM_EINVAL;
    }
    return SM_OK;
}

/* ---- model ------------------------------------------------------------------
 */

void gvae_model_free(struct gvae_model *m)
{
    if (m == NULL) {
        return;
    }
    for (size_t i = 0; m->nodes != NULL && i < m->n_nodes; i++) {
        gvae__node_clear(&m->nodes[i]);
    }
    sm_free(m->nodes);
    sm_free(m);
}

uint64_t gvae_model_graph_version(const struct gvae_model *m)
{
    return m->graph_version;
}

size_t gvae_model_node_count(const struct gvae_model *m)
{
    return m->n_nodes;
}

const char *gvae_model_node_name(const struct gvae_model *m, size_t i)
{
    return i < m->n_nodes ? m->nodes[i].name : NULL;
}

size_t gvae_model_params(const struct gvae_model *m)
{
    size_t n = 0;
    for (size_t i = 0; i < m->n_nodes; i++) {
        n += m->nodes[i].cvae.pool.n_params;
    }
    return n;
}

/* ---- per-node training -------------------------------------------------- */

enum plan { PLAN_TRAIN, PLAN_RESHAPED, PLAN_FINETUNE, PLAN_KEEP, PLAN_SKIP };

struct job
{
    struct gvae_model *m;
    const struct gvae_config *cfg;
    const struct cbn_window *const *windows;
    size_t n, n_new;
    const uint8_t *is_train;
    const struct gvae_model *prev;
    const size_t *prev_index; /* per node: index in prev or SIZE_MAX */
    const enum plan *plan;
    pthread_mutex_t lock;
    size_t next;
    int rc;
    /* results, under lock */
    uint64_t steps;
    double flops, val_loss;
    size_t val_nodes;
};

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) {
        h = (h ^ (uint8_t)*s) * 1099511628211ULL;
    }
    return h;
}

struct dataset
{
    float *x, *y, *mask, *p; /* n rows each */
};

static int dataset_build(struct dataset *d,
                         const struct gvae_node *node,
                         const struct cbn_window *const *windows,
                         size_t n)
{
    size_t nx = node->nx, ny = node->ny, np = node->np;
    d->x = sm_malloc((n * nx + 1) * sizeof *d->x);
    d->y = sm_malloc((n * ny + 1) * sizeof *d->y);
    d->mask = sm_malloc((n * ny + 1) * sizeof *d->mask);
    d->p = sm_malloc((n * np + 1) * sizeof *d->p);
    if (!d->x || !d->y || !d->mask || !d->p) {
        return SM_ENOMEM;
    }
    for (size_t t = 0; t < n; t++) {
        gvae__node_vectors(node, windows[t], d->x + t * nx, d->y + t * ny,
                           d->mask + t * ny, d->p + t * np);
    }
    return SM_OK;
}

static void dataset_free(struct dataset *d)
{
    sm_free(d->x);
    sm_free(d->y);
    sm_free(d->mask);
    sm_free(d->p);
}

static void gather(struct gvae_cvae *c,
                   const struct dataset *d,
                   const size_t *idx,
                   size_t rows)
{
    size_t nx = c->nx, ny = c->ny, np = c->np;
    for (size_t r = 0; r < rows; r++) {
        size_t t = idx[r];
        memcpy(c->xb + r * nx, d->x + t * nx, nx * sizeof(float));
        memcpy(c->yb + r * ny, d->y + t * ny, ny * sizeof(float));
        memcpy(c->mb + r * ny, d->mask + t * ny, ny * sizeof(float));
        memcpy(c->pb + r * np, d->p + t * np, np * sizeof(float));
    }
}

static void save_best(struct gvae_cvae *c)
{
    size_t np = c->pool.n_params, ns = c->pool.n_state;
    memcpy(c->best, c->block, np * sizeof *c->best);
    memcpy(c->best + np, c->block + 4 * np, ns * sizeof *c->best);
}

static void restore_best(struct gvae_cvae *c)
{
    size_t np = c->pool.n_params, ns = c->pool.n_state;
    memcpy(c->block, c->best, np * sizeof *c->best);
    memcpy(c->block + 4 * np, c->best + np, ns * sizeof *c->best);
}

static void shuffle(size_t *v, size_t n, struct sm_rng *rng)
{
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)sm_rng_below(rng, i);
        size_t t = v[i - 1];
        v[i - 1] = v[j];
        v[j] = t;
    }
}

/* One epoch's window order: new windows and as many old ones (interleaved
 * by the shuffle, so the model keeps what it knew), then extra draws of
 * QoS-violating windows while they are rarer than violation_share. */
static size_t epoch_order(const struct job *jb,
                          const size_t *train,
                          size_t n_train,
                          size_t *order,
                          struct sm_rng *rng)
{
    size_t n = 0, first_new = jb->n - jb->n_new;
    if (jb->n_new == 0 || jb->n_new >= jb->n) {
        memcpy(order, train, n_train * sizeof *order);
        n = n_train;
    } else {
        size_t n_old = 0, n_newt = 0;
        for (size_t k = 0; k < n_train; k++) {
            if (train[k] >= first_new) {
                order[n++] = train[k];
                n_newt++;
            } else {
                n_old++;
            }
        }
        size_t want = n_newt > n_old ? n_old : (n_newt ? n_newt : n_old);
        for (size_t k = 0; k < want; k++) {
            /* a uniform draw among the old windows */
            size_t pick = (size_t)sm_rng_below(rng, n_old), seen = 0;
            for (size_t q = 0; q < n_train; q++) {
                if (train[q] < first_new && seen++ == pick) {
                    order[n++] = train[q];
                    break;
                }
            }
        }
    }
    size_t viol = 0;
    for (size_t k = 0; k < n; k++) {
        viol += jb->windows[order[k]]->qos_violated != 0;
    }
    double share = jb->cfg->violation_share;
    if (viol > 0 && (double)viol < share * (double)n) {
        size_t base = n, limit = 4 * viol; /* at most 5x each */
        size_t *vi = order + 5 * jb->n;    /* spare tail: n <= 5 jb->n */
        size_t nv = 0;
        for (size_t k = 0; k < base; k++) {
            if (jb->windows[order[k]]->qos_violated) {
                vi[nv++] = order[k];
            }
        }
        for (size_t k = 0; k < limit && (double)viol < share * (double)n; k++) {
            order[n++] = vi[sm_rng_below(rng, nv)];
            viol++;
        }
    }
    shuffle(order, n, rng);
    return n;
}

static double validate(struct gvae_cvae *c,
                       const struct dataset *d,
                       const size_t *val,
                       size_t n_val,
                       const struct gvae_config *cfg)
{
    double sum = 0;
    for (size_t k = 0; k < n_val; k += c->batch) {
        size_t rows = n_val - k < c->batch ? n_val - k : c->batch;
        gather(c, d, val + k, rows);
        sum += gvae__cvae_eval(c, rows, cfg) * (double)rows;
    }
    return n_val ? sum / (double)n_val : INFINITY;
}

static int train_node(struct job *jb, size_t i)
{
    struct gvae_node *node = &jb->m->nodes[i];
    struct gvae_cvae *c = &node->cvae;
    const struct gvae_config *cfg = jb->cfg;
    struct dataset d = {0};
    size_t n = jb->n;
    size_t *train = sm_malloc((n + 1) * sizeof *train);
    size_t *val = sm_malloc((n + 1) * sizeof *val);
    /* order: up to 2n (new + old draws) + 4n extra + n spare */
    size_t *order = sm_malloc((7 * n + 1) * sizeof *order);
    int rc = (train && val && order) ? dataset_build(&d, node, jb->windows, n)
                                     : SM_ENOMEM;
    size_t n_train = 0, n_val = 0;
    for (size_t t = 0; t < n; t++) {
        if (jb->is_train[t]) {
            train[n_train++] = t;
        } else if (val != NULL) {
            val[n_val++] = t;
        }
    }
    struct sm_rng rng;
    sm_rng_seed(&rng, jb->cfg->seed ^ fnv1a(node->name));
    uint64_t steps = 0;
    double flops = 0, best = INFINITY;
    int warm = jb->plan[i] == PLAN_FINETUNE || jb->plan[i] == PLAN_RESHAPED;
    unsigned max_epochs =
        warm && cfg->finetune_epochs ? cfg->finetune_epochs : cfg->max_epochs;
    if (rc == SM_OK) {
        struct nn_adam adam;
        nn_adam_init(&adam);
        adam.lr = cfg->learning_rate;
        adam.weight_decay = cfg->weight_decay;
        unsigned bad = 0;
        for (unsigned ep = 0; ep < max_epochs; ep++) {
            size_t n_order = epoch_order(jb, train, n_train, order, &rng);
            for (size_t k = 0; k + 2 <= n_order && rc == SM_OK; k += c->batch) {
                if (cfg->should_stop != NULL &&
                    cfg->should_stop(cfg->stop_arg)) {
                    rc = SM_ECLOSED;
                    break;
                }
                size_t rows = n_order - k < c->batch ? n_order - k : c->batch;
                gather(c, &d, order + k, rows);
                gvae__cvae_step(c, rows, cfg, &adam, &rng, &flops);
                steps++;
            }
            if (rc != SM_OK) {
                break;
            }
            /* Without a validation set, stop on the training loss. */
            double loss = n_val ? validate(c, &d, val, n_val, cfg)
                                : validate(c, &d, train, n_train, cfg);
            if (isfinite(loss) &&
                (!isfinite(best) || loss < best - 1e-4 * fabs(best))) {
                best = loss;
                save_best(c);
                bad = 0;
            } else if (++bad >= cfg->patience) {
                break;
            }
        }
        if (isfinite(best)) {
            restore_best(c);
        }
        node->trained = rc == SM_OK;
    }
    dataset_free(&d);
    sm_free(train);
    sm_free(val);
    sm_free(order);
    pthread_mutex_lock(&jb->lock);
    jb->steps += steps;
    jb->flops += flops;
    if (isfinite(best)) {
        jb->val_loss += best;
        jb->val_nodes++;
    }
    pthread_mutex_unlock(&jb->lock);
    return rc;
}

static void *worker(void *arg)
{
    struct job *jb = arg;
    for (;;) {
        pthread_mutex_lock(&jb->lock);
        size_t i = jb->next;
        while (i < jb->m->n_nodes && jb->plan[i] != PLAN_TRAIN &&
               jb->plan[i] != PLAN_RESHAPED && jb->plan[i] != PLAN_FINETUNE) {
            i++;
        }
        jb->next = i + 1;
        int stop = jb->rc != SM_OK || i >= jb->m->n_nodes;
        pthread_mutex_unlock(&jb->lock);
        if (stop) {
            return NULL;
        }
        int rc = train_node(jb, i);
        if (rc != SM_OK) {
            pthread_mutex_lock(&jb->lock);
            jb->rc = rc;
            pthread_mutex_unlock(&jb->lock);
        }
    }
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Copies row blocks of the first layer of @src into @dst for the input
 * features both have (by group key): a reshaped node keeps what it learned
 * about the inputs it still has. Only when the hidden widths agree. */
static void warm_rows(struct nn_mlp *dst,
                      const struct nn_mlp *src,
                      const struct gvae_group *dg,
                      size_t n_dg,
                      const struct gvae_group *sg,
                      size_t n_sg,
                      size_t d_off,
                      size_t s_off)
{
    size_t w = dst->shape.hidden[0];
    for (size_t a = 0; a < n_dg; a++) {
        for (size_t b = 0; b < n_sg; b++) {
            if (strcmp(dg[a].key, sg[b].key) != 0 ||
                dg[a].width != sg[b].width) {
                continue;
            }
            memcpy(dst->lin[0].w + (d_off + dg[a].offset) * w,
                   src->lin[0].w + (s_off + sg[b].offset) * w,
                   dg[a].width * w * sizeof(float));
        }
    }
}

static void copy_floats(float *dst, const float *src, size_t n)
{
    memcpy(dst, src, n * sizeof *dst);
}

/* Copies everything but the first layer's weights (biases, deeper layers,
 * batch norms, and the output layer when its width agrees) when the hidden
 * shapes agree. Returns whether it did. */
static int warm_rest(struct nn_mlp *dst, const struct nn_mlp *src)
{
    const struct nn_mlp_shape *d = &dst->shape, *s = &src->shape;
    if (d->n_hidden != s->n_hidden) {
        return 0;
    }
    for (size_t k = 0; k < d->n_hidden; k++) {
        if (d->hidden[k] != s->hidden[k]) {
            return 0;
        }
    }
    copy_floats(dst->lin[0].b, src->lin[0].b, d->hidden[0]);
    for (size_t k = 1; k <= d->n_hidden; k++) {
        if (k == d->n_hidden && d->out != s->out) {
            break;
        }
        const struct nn_linear *sl = &src->lin[k];
        copy_floats(dst->lin[k].w, sl->w, sl->in * sl->out);
        copy_floats(dst->lin[k].b, sl->b, sl->out);
    }
    for (size_t k = 0; k + 1 < d->n_hidden; k++) {
        const struct nn_batchnorm *sb = &src->bn[k];
        copy_floats(dst->bn[k].gamma, sb->gamma, sb->d);
        copy_floats(dst->bn[k].beta, sb->beta, sb->d);
        copy_floats(dst->bn[k].run_mean, sb->run_mean, sb->d);
        copy_floats(dst->bn[k].run_var, sb->run_var, sb->d);
    }
    return 1;
}

/* Warm-starts the reshaped CVAE of @node from @old; returns whether all
 * three networks could be (then fine-tuning is enough). */
static int warm_reshaped(struct gvae_node *node, const struct gvae_node *old)
{
    struct gvae_cvae *c = &node->cvae;
    const struct gvae_cvae *o = &old->cvae;
    int ok = 1;
    /* X comes first in every input; then Y (encoder) or Z (decoder), then
     * the parents' latencies */
    if (warm_rest(&c->prior, &o->prior)) {
        warm_rows(&c->prior, &o->prior, node->xg, node->n_xg, old->xg,
                  old->n_xg, 0, 0);
    } else {
        ok = 0;
    }
    if (warm_rest(&c->enc, &o->enc)) {
        warm_rows(&c->enc, &o->enc, node->xg, node->n_xg, old->xg, old->n_xg, 0,
                  0);
        warm_rows(&c->enc, &o->enc, node->yg, node->n_yg, old->yg, old->n_yg,
                  node->nx, old->nx);
        warm_rows(&c->enc, &o->enc, node->pg, node->n_pg, old->pg, old->n_pg,
                  node->nx + node->ny, old->nx + old->ny);
    } else {
        ok = 0;
    }
    if (warm_rest(&c->dec, &o->dec)) {
        warm_rows(&c->dec, &o->dec, node->xg, node->n_xg, old->xg, old->n_xg, 0,
                  0);
        warm_rows(&c->dec, &o->dec, node->pg, node->n_pg, old->pg, old->n_pg,
                  node->nx + c->nz, old->nx + o->nz);
        /* the decoder's Z rows sit right after X */
        size_t w = c->dec.shape.hidden[0];
        copy_floats(c->dec.lin[0].w + node->nx * w,
                    o->dec.lin[0].w + old->nx * w, c->nz * w);
    } else {
        ok = 0;
    }
    return ok && c->dec.shape.out == o->dec.shape.out;
}

/* gvae_train() and gvae_train_nodes(): @own (NULL: every node) selects the
 * nodes whose CVAEs are built. Everything a node's training reads (layout,
 * split, statistics of every node, its seeds) is computed the same way
 * whatever @own is, so a node comes out the same whichever call trains it. */
static int train_model(const struct gvae_config *cfg,
                       const struct cbn_graph *graph,
                       const struct cbn_window *const *windows,
                       size_t n,
                       size_t n_new,
                       const struct gvae_model *prev,
                       enum gvae_retrain mode,
                       const bool *own,
                       struct gvae_model **out,
                       struct gvae_train_report *report,
                       char errmsg[SM_ERRMSG_SIZE])
{
    int rc = gvae__config_check(cfg, errmsg);
    if (rc != SM_OK) {
        return rc;
    }
    if (cbn_graph_node_count(graph) == 0) {
        sm_errmsg_printf(errmsg, "gvae train: the CBN is empty");
        return SM_EINVAL;
    }
    if (n < 8) {
        sm_errmsg_printf(errmsg,
                         "gvae train: %zu windows; at least 8 are needed", n);
        return SM_EINVAL;
    }
    double t0 = now_seconds();
    errmsg[0] = '\0';
    struct gvae_model *m = sm_calloc(1, sizeof *m);
    uint8_t *is_train = sm_malloc(n);
    size_t nn = cbn_graph_node_count(graph);
    enum plan *plan = sm_calloc(nn, sizeof *plan);
    size_t *prev_index = sm_calloc(nn, sizeof *prev_index);
    int *dirty = sm_calloc(nn, sizeof *dirty);
    if (!m || !is_train || !plan || !prev_index || !dirty) {
        rc = SM_ENOMEM;
        goto done;
    }
    m->config = *cfg;
    rc = gvae__layout(m, graph, windows, n);
    if (rc != SM_OK) {
        goto done;
    }

    /* Split by the seed, never leaving either side empty. */
    struct sm_rng split;
    sm_rng_seed(&split, cfg->seed * 0x9E3779B97F4A7C15ULL + 7);
    size_t n_train = 0;
    for (size_t t = 0; t < n; t++) {
        is_train[t] = sm_rng_double(&split) >= cfg->val_fraction;
        n_train += is_train[t];
    }
    if (n_train < 2) {
        memset(is_train, 1, n);
        n_train = n;
    }

    /* What to do with each node. */
    struct gvae_train_report rep = {0};
    for (size_t i = 0; i < nn; i++) {
        struct gvae_node *node = &m->nodes[i];
        prev_index[i] = SIZE_MAX;
        for (size_t k = 0; prev != NULL && k < prev->n_nodes; k++) {
            if (strcmp(prev->nodes[k].name, node->name) == 0) {
                prev_index[i] = k;
            }
        }
        const struct gvae_node *old =
            prev_index[i] != SIZE_MAX ? &prev->nodes[prev_index[i]] : NULL;
        int same = old != NULL && old->trained && gvae__same_layout(node, old);
        dirty[i] = !same;
        for (size_t k = 0; k < node->n_parents; k++) {
            dirty[i] |= dirty[node->parents[k]];
        }
        if (node->ny == 0) {
            plan[i] = PLAN_SKIP; /* nothing to model: no latency seen */
        } else if (mode == GVAE_RETRAIN_FULL || prev == NULL || !same) {
            plan[i] = PLAN_TRAIN;
        } else {
            plan[i] = dirty[i] || mode == GVAE_RETRAIN_INCREMENTAL
                          ? PLAN_FINETUNE
                          : PLAN_KEEP;
        }
    }

    /* Statistics in topological order (parents' Y stats feed children). */
    for (size_t i = 0; i < nn; i++) {
        struct gvae_node *node = &m->nodes[i];
        if (plan[i] == PLAN_KEEP || plan[i] == PLAN_FINETUNE) {
            const struct gvae_node *old = &prev->nodes[prev_index[i]];
            memcpy(node->xs, old->xs, node->nx * sizeof *node->xs);
            memcpy(node->ys, old->ys, node->ny * sizeof *node->ys);
            gvae__node_parent_stats(m, i);
        } else {
            gvae__node_stats(m, i, windows, n, is_train);
        }
    }
    /* Nodes another call trains keep their layout and statistics (their
     * children read them) but get no CVAE: marked untrained. */
    for (size_t i = 0; own != NULL && i < nn; i++) {
        if (!own[i]) {
            plan[i] = PLAN_SKIP;
        }
    }

    /* Create every CVAE (initialised from a per-node seed). */
    for (size_t i = 0; i < nn && rc == SM_OK; i++) {
        struct gvae_node *node = &m->nodes[i];
        if (plan[i] == PLAN_SKIP) {
            continue;
        }
        struct sm_rng rng;
        sm_rng_seed(&rng, cfg->seed ^ fnv1a(node->name) ^ 0x5bd1e995u);
        rc = gvae__cvae_create(&node->cvae, node, cfg, &rng);
        if (rc != SM_OK) {
            break;
        }
        const struct gvae_node *old =
            prev_index[i] != SIZE_MAX ? &prev->nodes[prev_index[i]] : NULL;
        if (plan[i] == PLAN_KEEP || plan[i] == PLAN_FINETUNE) {
            gvae__cvae_copy(&node->cvae, &old->cvae);
            node->trained = 1;
            rep.nodes_kept += plan[i] == PLAN_KEEP;
            rep.nodes_finetuned += plan[i] == PLAN_FINETUNE;
        } else {
            /* a reshaped node warm-started whole only needs fine-tuning */
            if (mode != GVAE_RETRAIN_FULL && old != NULL && old->trained &&
                old->cvae.nz == node->cvae.nz && warm_reshaped(node, old)) {
                plan[i] = PLAN_RESHAPED;
            }
            rep.nodes_trained++;
        }
    }
    if (rc != SM_OK) {
        sm_errmsg_printf(errmsg, "gvae train: out of memory creating models");
        goto done;
    }

    struct job jb = {
        .m = m,
        .cfg = cfg,
        .windows = windows,
        .n = n,
        .n_new = n_new,
        .is_train = is_train,
        .prev = prev,
        .prev_index = prev_index,
        .plan = plan,
        .rc = SM_OK,
    };
    pthread_mutex_init(&jb.lock, NULL);
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    unsigned workers =
        cfg->threads ? cfg->threads : (unsigned)(online > 0 ? online : 1);
    if (workers > 64) {
        workers = 64;
    }
    pthread_t tids[64];
    unsigned started = 0;
    /* Each worker makes one-thread products: parallelism is across nodes. */
    gvae_blas_set_threads(1);
    for (unsigned k = 1; k < workers; k++) {
        if (pthread_create(&tids[started], NULL, worker, &jb) == 0) {
            started++;
        }
    }
    worker(&jb); /* the calling thread works too */
    for (unsigned k = 0; k < started; k++) {
        pthread_join(tids[k], NULL);
    }
    pthread_mutex_destroy(&jb.lock);
    rc = jb.rc;
    if (rc == SM_ECLOSED) {
        sm_errmsg_printf(errmsg, "gvae train: stopped");
        goto done;
    }
    if (rc != SM_OK) {
        sm_errmsg_printf(errmsg, "gvae train: out of memory while training");
        goto done;
    }
    rep.nodes = nn;
    rep.workers = started + 1;
    rep.windows_train = n_train;
    rep.windows_val = n - n_train;
    for (size_t t = 0; t < n; t++) {
        rep.windows_violating += is_train[t] && windows[t]->qos_violated;
    }
    rep.steps = jb.steps;
    rep.flops = jb.flops;
    rep.val_loss = jb.val_nodes ? jb.val_loss / (double)jb.val_nodes : NAN;
    rep.seconds = now_seconds() - t0;
    if (report != NULL) {
        *report = rep;
    }
    *out = m;
    m = NULL;
done:
    if (rc == SM_ENOMEM && errmsg[0] == '\0') {
        sm_errmsg_printf(errmsg, "gvae train: out of memory");
    }
    gvae_model_free(m);
    sm_free(is_train);
    sm_free(plan);
    sm_free(prev_index);
    sm_free(dirty);
    return rc;
}

int gvae_train(const struct gvae_config *cfg,
               const struct cbn_graph *graph,
               const struct cbn_window *const *windows,
               size_t n,
               size_t n_new,
               const struct gvae_model *prev,
               enum gvae_retrain mode,
               struct gvae_model **out,
               struct gvae_train_report *report,
               char errmsg[SM_ERRMSG_SIZE])
{
    return train_model(cfg, graph, windows, n, n_new, prev, mode, NULL, out,
                       report, errmsg);
}

int gvae_train_nodes(const struct gvae_config *cfg,
                     const struct cbn_graph *graph,
                     const struct cbn_window *const *windows,
                     size_t n,
                     size_t n_new,
                     const struct gvae_model *prev,
                     enum gvae_retrain mode,
                     const bool *own,
                     struct gvae_model **out,
                     struct gvae_train_report *report,
                     char errmsg[SM_ERRMSG_SIZE])
{
    if (own == NULL) {
        sm_errmsg_printf(errmsg, "gvae train: no set of nodes to train");
        return SM_EINVAL;
    }
    return train_model(cfg, graph, windows, n, n_new, prev, mode, own, out,
                       report, errmsg);
}
