/* gvae internals: the model's layout (which window values feed which node),
 * the per-node CVAE, and helpers shared by training, sweeps and
 * checkpoints. */
#ifndef SM_GVAE_INTERNAL_H
#define SM_GVAE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "cbn/cbn.h"
#include "gvae/gvae.h"
#include "gvae/nn.h"

/* ---- Layout ---------------------------------------------------------------
 * A group is one vector read from a window (CBN_N_PCT percentiles, or one
 * value for load); a feature is one element of a group. */
enum gvae_kind {
    GVAE_LATENCY, /* server latency of a service */
    GVAE_CLIENT,  /* client latency of an edge */
    GVAE_NETWORK, /* network delay of an edge (client - server) */
    GVAE_METRIC,  /* a metric of a service */
    GVAE_LOAD,    /* requests per second into a service (never restored) */
};

/* Metrics are read at p50, p90 and p99 only: they are percentiles over a
 * handful of replicas and scrapes per window, so the other five add width
 * (and sweep time) but little information. Latencies keep all eight. */
#define GVAE_METRIC_PCTS 3

struct gvae_group
{
    char *key; /* unique in the model, e.g. "lat:user" */
    enum gvae_kind kind;
    enum cbn_resource res; /* X groups: the class restored with it */
    char *service;         /* the service, or an edge's callee */
    char *caller;          /* edges: the caller; else "" */
    char *metric, *peer;   /* metrics; else "" */
    unsigned width;        /* CBN_N_PCT, or 1 for load */
    size_t offset;         /* of its first feature in the node's vector */
    size_t src_node;       /* Y_parent groups: the callee node ... */
    size_t src_offset;     /* ... and the group's offset in its Y */
};

/* Per-feature statistics, in transformed units (see gvae.h). */
struct gvae_stat
{
    float mean, std;   /* standardisation */
    float lo, hi;      /* range seen in training */
    float median, iqr; /* robust scale of anomaly evidence */
    float normal;      /* median over QoS-meeting windows */
};

/* ---- CVAE of one node ----------------------------------------------------
 * Encoder input [X | Y | Yp], prior input X, decoder input [X | Z | Yp].
 * Heads are Gaussians (means then log-variances). One float block holds
 * everything (nn.h), plus a copy of the best parameters and state for early
 * stopping. */
struct gvae_cvae
{
    size_t nx, ny, np, nz, batch;
    struct nn_pool pool;
    float *block; /* pool block followed by the best-copy region */
    size_t block_floats;
    struct nn_mlp enc, prior, dec;
    /* training buffers (acts) */
    float *xb, *yb, *mb, *pb; /* batch rows gathered */
    float *enc_in, *dec_in, *eps, *zq, *zp;
    float *dq, *dp, *dout, *ddec_in;
    /* The decoder's monotone skip: mean += Yp A with A (np x ny) >= 0. The
     * MLP sees inputs clamped to their training range at inference; the
     * skip sees them as they are, so a parent latency beyond anything seen
     * in training raises the child's latency instead of being extrapolated
     * by the MLP in an arbitrary direction. */
    float *skip, *gskip;
    float *skip_out, *dmean; /* acts: batch x ny */
    float *best;             /* n_params values then n_state state */
};

struct gvae_node
{
    char *name;
    size_t n_members;
    char **members;
    size_t n_parents;
    size_t *parents;
    size_t n_xg, n_yg, n_pg;
    struct gvae_group *xg, *yg, *pg;
    size_t nx, ny, np;
    struct gvae_stat *xs, *ys, *ps;
    struct gvae_cvae cvae;
    int trained; /* has weights */
};

struct gvae_model
{
    struct gvae_config config;
    uint64_t graph_version;
    size_t n_nodes;
    struct gvae_node *nodes;
};

/* ---- layout.c ---- */

/* The index into cbn_percentiles[] of feature @k of group @g. */
unsigned gvae__group_pct(const struct gvae_group *g, unsigned k);

/* Transforms a raw value of @kind into model units (log1p / signed log1p). */
float gvae__transform(enum gvae_kind kind, double v);
/* Inverse of gvae__transform for latency kinds (ms). */
double gvae__untransform(enum gvae_kind kind, float t);

/* Builds the nodes of @graph with their groups, from the services, edges and
 * metrics seen in @windows. Stats are left zero. SM_OK or SM_ENOMEM. */
int gvae__layout(struct gvae_model *m,
                 const struct cbn_graph *graph,
                 const struct cbn_window *const *windows,
                 size_t n);

/* Sets @g (zeroed first) to a group of @kind with copies of the names and
 * its key. SM_OK, or SM_ENOMEM (free @g with gvae__group_free anyway). */
int gvae__group_set(struct gvae_group *g,
                    enum gvae_kind kind,
                    enum cbn_resource res,
                    const char *service,
                    const char *caller,
                    const char *metric,
                    const char *peer);
void gvae__group_free(struct gvae_group *g);

/* Reads group @g of window @w into @out (g->width transformed values, NaN
 * where missing). */
void gvae__read_group(const struct gvae_group *g,
                      const struct cbn_window *w,
                      float *out);

/* Fills the stats of node @i's X and Y groups from windows with @use set,
 * and copies the Y_parent stats from the parents' Y stats (so parents must
 * be done first). */
void gvae__node_stats(struct gvae_model *m,
                      size_t i,
                      const struct cbn_window *const *windows,
                      size_t n,
                      const uint8_t *use);
/* Copies Y_parent stats of node @i from its parents (after a parent's stats
 * changed). */
void gvae__node_parent_stats(struct gvae_model *m, size_t i);

/* Standardised vectors of node @i for window @w: @x (nx, NaN -> 0), @y
 * (ny), @ymask (ny: 1 observed, 0 missing, y set to 0), @p (np, NaN -> 0).
 * Any output may be NULL. */
void gvae__node_vectors(const struct gvae_node *node,
                        const struct cbn_window *w,
                        float *x,
                        float *y,
                        float *ymask,
                        float *p);

/* Whether two nodes have the same inputs and outputs (group keys). */
int gvae__same_layout(const struct gvae_node *a, const struct gvae_node *b);

/* Frees everything a node owns (strings, groups, stats, CVAE block). */
void gvae__node_clear(struct gvae_node *node);

/* ---- cvae.c ---- */

/* Sizes and allocates the CVAE of @node (shapes from the node and @config);
 * weights initialised from @rng. SM_OK or SM_ENOMEM. */
int gvae__cvae_create(struct gvae_cvae *c,
                      const struct gvae_node *node,
                      const struct gvae_config *config,
                      struct sm_rng *rng);
void gvae__cvae_destroy(struct gvae_cvae *c);

/* The floats gvae__cvae_create() would allocate for @node, without
 * allocating; stores the parameter count in @params. */
size_t gvae__cvae_floats(const struct gvae_node *node,
                         const struct gvae_config *cfg,
                         size_t *params);

/* The hidden shape of an MLP with @in inputs and @out outputs. */
void gvae__mlp_shape(struct nn_mlp_shape *s,
                     const struct gvae_config *cfg,
                     size_t in,
                     size_t out);

/* One optimizer step on @rows (batch) windows whose standardised vectors are
 * gathered in c->xb, yb, mb, pb. Returns the loss per window. Adds the
 * matrix-product flops to *flops. */
double gvae__cvae_step(struct gvae_cvae *c,
                       size_t rows,
                       const struct gvae_config *cfg,
                       struct nn_adam *adam,
                       struct sm_rng *rng,
                       double *flops);

/* Loss per window of @rows gathered rows in inference mode, with Z at the
 * posterior and prior means (deterministic). */
double gvae__cvae_eval(struct gvae_cvae *c,
                       size_t rows,
                       const struct gvae_config *cfg);

/* Inference-mode forward of @mlp on @n rows (any n), reading only the
 * model (const): @out gets n x out; @scratch holds 2 x n x widest floats. */
void gvae__mlp_infer(const struct nn_mlp *mlp,
                     size_t n,
                     const float *x,
                     float *out,
                     float *scratch);
size_t gvae__mlp_widest(const struct nn_mlp *mlp);

/* Adds the decoder skip @p (n x np, raw parent inputs) A to the means of
 * the heads @out (n x 2ny). @tmp holds n x ny floats. */
void gvae__dec_skip(const struct gvae_cvae *c,
                    size_t n,
                    const float *p,
                    float *out,
                    float *tmp);

/* Backward of the skip: gskip += p^T dmean, with @p (n x np) the parent
 * inputs and @dmean (n x ny) the gradient of the loss by the means. */
void gvae__dec_skip_backward(struct gvae_cvae *c,
                             size_t n,
                             const float *p,
                             const float *dmean);

/* Copies parameters (values) and state between CVAEs of identical shapes. */
void gvae__cvae_copy(struct gvae_cvae *dst, const struct gvae_cvae *src);

/* Checks a training config; SM_OK or SM_EINVAL with @errmsg set. */
int gvae__config_check(const struct gvae_config *c, char *errmsg);

/* ---- sweep.c, remote.c: counterfactual passes ------------------------------
 * A pass runs K interventions, S samples each, through the decoders. Node i's
 * rows for a pass depend only on its own abducted state, the interventions,
 * and the rows of its affected parents: gvae__node_pass() computes them from
 * exactly that, so the coordinator (sweep.c) and an owner's pass server
 * (remote.c) share it. */

/* Nodes restored together by one intervention, at most. */
#define GVAE_SET_MAX 8

struct gvae_intervention
{
    size_t n;
    size_t node[GVAE_SET_MAX];
    unsigned classes[GVAE_SET_MAX]; /* bit per enum cbn_resource */
    int own; /* also restore the intervened nodes' own noise (posterior) */
};

/* One node's abducted state and its rows of the current pass. */
struct gvae_nstate
{
    int live;      /* has a model */
    float *x, *xn; /* observed and normal X (standardised; xn NaN: none) */
    float *xin;    /* x as the model takes it (clamped to its range) */
    float *pin;    /* Y_parents as the MLP takes them (clamped) */
    size_t n_u;    /* samples whose residuals are computed here */
    size_t n_uc;   /* samples whose residual rows were counted in rows
                      (by the coordinator, whoever computed them) */
    float *y, *ym; /* factual Y (observed, else predicted) and its mask */
    float *p;      /* observed Y_parents */
    float *z;      /* S x nz abducted latents (posterior) */
    float *u;      /* S x ny residuals (posterior) */
    float *eps;    /* S x nz noise for prior draws */
    /* per pass */
    float *cf;    /* n_aff S x ny */
    size_t *pos;  /* per intervention: affected index or SIZE_MAX */
    size_t n_aff; /* interventions that affect the node */
};

struct gvae_sweep
{
    const struct gvae_model *m;
    const struct gvae_sweep_config *cfg;
    size_t S, nn;
    struct gvae_nstate *ns;
    size_t front; /* frontend node */
    size_t qf;    /* its QoS feature in Y */
    size_t qpct;  /* and that feature's percentile index */
    double latency, target, excess;
    float *scratch, *xr, *din, *out, *head, *pr;
    size_t scratch_rows; /* capacity of the row buffers */
    size_t widest;
    uint64_t rows; /* decoder rows evaluated */
    /* Topological levels: a node's is 1 + the largest of its parents'. */
    size_t *order;       /* nodes by level, then by index */
    size_t *level_start; /* n_levels + 1 offsets into order */
    size_t n_levels;
    size_t max_parents, max_pg; /* over the model's nodes */
    uint64_t start_ns;          /* of the abducted window */
    /* coordinator only */
    const struct gvae_remote *remote;
    struct gvae_remote_stats *stats;
    uint32_t pass; /* passes run so far */
};

/* A view of the rows of one Y_parent group under one intervention: sample s
 * reads base + s * stride (group width floats); base NULL: the parent is
 * not affected, the observed value stays. */
struct gvae_pview
{
    const float *base;
    size_t stride;
};

/* Checks @cfg, finds the QoS feature and abducts @w (borrowed) into @sw
 * (zeroed by the caller) with @normals (may be NULL): every node, one RNG
 * stream seeded by cfg->seed and the window's start. SM_OK, SM_EINVAL or
 * SM_ENOTFOUND with @errmsg set, or SM_ENOMEM. Free @sw with
 * gvae__sweep_free() in every case. */
int gvae__sweep_init(struct gvae_sweep *sw,
                     const struct gvae_model *m,
                     const struct cbn_window *w,
                     const struct cbn_normals *normals,
                     const struct gvae_sweep_config *cfg,
                     char *errmsg);
void gvae__sweep_free(struct gvae_sweep *sw);

/* The index in node->parents of the parent Y_parent group @g reads, or
 * SIZE_MAX (never for a model built by layout.c or loaded). */
size_t gvae__pg_parent(const struct gvae_node *node, size_t g);

/* Which of @K interventions affect node @i: it is live and intervened, or
 * one of its parents is affected (@paff: n_parents x K flags). Fills @pos
 * (K: affected index or SIZE_MAX) and returns the count. */
size_t gvae__node_affected(const struct gvae_sweep *sw,
                           size_t i,
                           const struct gvae_intervention *iv,
                           size_t K,
                           const uint8_t *paff,
                           size_t *pos);

/* Computes node @i's counterfactual rows for @K interventions of @S
 * samples: sets ns[i].pos (K entries, allocated by the caller), ns[i].n_aff
 * and ns[i].cf (n_aff S x ny, replaced). @paff as above; @pv: n_pg x K
 * views of the parents' rows (group-major). Computes the node's residuals
 * for S samples first when the abduction needs them. Counts no rows.
 * SM_OK or SM_ENOMEM. */
int gvae__node_pass(struct gvae_sweep *sw,
                    size_t i,
                    const struct gvae_intervention *iv,
                    size_t K,
                    size_t S,
                    const uint8_t *paff,
                    const struct gvae_pview *pv);

/* Coordinator: computes the rows of the @n nodes of topological level
 * @level (ascending, affected by the pass, ns[].pos set) at their remote
 * @owners, one request per owner in one exchange. Sets done[j] when node
 * nodes[j]'s rows arrived (ns[].cf set); the caller computes the others.
 * SM_OK or SM_ENOMEM. */
int gvae__remote_level(struct gvae_sweep *sw,
                       const struct gvae_intervention *iv,
                       size_t K,
                       size_t S,
                       size_t level,
                       const size_t *nodes,
                       const unsigned *owners,
                       size_t n,
                       uint8_t *done);

/* ---- misc ---- */
char *gvae__strdup(const char *s);

#endif /* SM_GVAE_INTERNAL_H */
