/* gvae: the graphical conditional VAE on OpenBLAS (no network, no I/O).
 *
 * One CVAE per CBN node (a service, or a metanode of services calling each
 * other in a cycle), wired along the CBN of cbn/cbn.h (DESIGN.md section 3):
 *   encoder q(Z | X, Y, Y_parents), prior p(Z | X), decoder
 *   p(Y | X, Z, Y_parents)
 * where, for node i:
 *   X  = the metrics of its services (percentile vectors), their request
 *        load, and the network delay (client minus server time) of every RPC
 *        edge INTO its services: the callee owns its incoming edges;
 *   Y  = the server-side latency of its services and the client-side latency
 *        of every edge into them;
 *   Y_parents = for every edge from one of its services to a callee node,
 *        the callee's server latency and that edge's client latency (both
 *        outputs of the callee's node).
 * Latencies are modelled as log(1 + ms), metrics as sign(v) log(1 + |v|),
 * each feature then standardised with training statistics stored in the
 * model: queueing makes latencies heavy-tailed and their changes
 * multiplicative, which the log turns into the additive, homoscedastic
 * errors a Gaussian decoder assumes.
 *
 * Decoders are trained on observed parent latencies (teacher forcing), so
 * every node's CVAE trains independently: training runs one worker per core
 * over the nodes. */
#ifndef SM_GVAE_H
#define SM_GVAE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "base/version.h"
#include "cbn/cbn.h"

/* Caps the number of threads OpenBLAS uses for one product. The peer runs all
 * model math on one compute thread and sets this to 1 by default: OpenBLAS
 * workers spin after each call and would steal the cores the event loop and
 * the network threads need (see DEPENDENCIES.md). @threads must be >= 1;
 * larger values are capped by OpenBLAS at its build limit. Call it from the
 * compute thread before the first product. */
void gvae_blas_set_threads(int threads);

/* Reports OpenBLAS (version, kernel chosen for this CPU, thread cap) to @cb,
 * synchronously. */
void gvae_libraries(sm_libver_cb cb, void *arg);

/* ---- Training ------------------------------------------------------------ */

struct gvae_config
{
    unsigned latent;          /* Z dimensions per node */
    unsigned hidden_layers;   /* 2..4: 3..5 fully connected layers per MLP */
    unsigned hidden_min;      /* hidden widths: the MLP's input size rounded */
    unsigned hidden_max;      /* up to a multiple of 16, within these bounds */
    float alpha;              /* loss = alpha (recon + beta KL) + */
    float beta;               /*        (1 - alpha) GSNN recon */
    float dropout;            /* after the last hidden layer */
    float learning_rate;      /* Adam */
    float weight_decay;       /* decoupled (AdamW) */
    float clip_norm;          /* global gradient norm */
    unsigned batch;           /* windows per step (>= 2) */
    unsigned max_epochs;      /* per node */
    unsigned patience;        /* epochs without validation gain before stop */
    float val_fraction;       /* of windows held out for early stopping */
    float violation_share;    /* oversample QoS-violating windows up to this
                                 share of an epoch when they are rarer */
    unsigned finetune_epochs; /* cap for warm-started nodes (partial) */
    unsigned threads;         /* training workers; 0: one per online core */
    uint64_t seed;            /* same seed, data and machine: same model */
    /* Polled by the training workers between steps; when it returns
     * non-zero, training stops and gvae_train() returns SM_ECLOSED (so a
     * peer shutting down need not wait for a round). NULL: never. Not part
     * of checkpoints. */
    int (*should_stop)(void *arg);
    void *stop_arg;
};

/* Fills @config with the defaults: latent 4, 2 hidden layers of 32..96,
 * alpha 0.7, beta 1, dropout 0.1, lr 3e-3, weight decay 1e-4, clip 5,
 * batch 64, 120 epochs, patience 12, validation 0.15, violation share
 * 0.2, fine-tune 20 epochs, threads 0, seed 1. */
void gvae_config_default(struct gvae_config *config);

/* How to build a model when a previous one exists. */
enum gvae_retrain {
    GVAE_RETRAIN_FULL,    /* every node from scratch */
    GVAE_RETRAIN_PARTIAL, /* nodes whose inputs or outputs changed, and their
                             CBN descendants (callers, up to the frontend)
                             are retrained; every other node keeps the
                             previous model's weights. Changed nodes are
                             reshaped: first-layer rows of input features
                             that still exist are kept when widths allow;
                             descendants that kept their shape are
                             fine-tuned from their previous weights. */
    GVAE_RETRAIN_INCREMENTAL, /* as partial, and every other node is
                                 fine-tuned too, on batches that interleave
                                 the new windows with old ones (new data
                                 without forgetting the old) */
};

struct gvae_model;

struct gvae_train_report
{
    size_t nodes;
    size_t nodes_trained;   /* from scratch or reshaped */
    size_t nodes_finetuned; /* warm-started and trained (partial) */
    size_t nodes_kept;      /* copied unchanged (partial) */
    size_t windows_train, windows_val;
    size_t windows_violating; /* among the training windows */
    unsigned workers;         /* training threads used */
    uint64_t steps;           /* optimizer steps, all nodes */
    double flops;             /* in matrix products, all nodes */
    double seconds;           /* wall time */
    double val_loss;          /* mean over nodes of the best validation
                                 loss per window */
};

/* Sets OpenBLAS's thread cap to 1 (parallelism is across nodes) and trains
 * a model for @graph on @n windows (borrowed, in time order; the last
 * @n_new of them are new since @prev was trained: batches interleave new and
 * old windows; 0 means all are treated alike). @prev (borrowed, may be NULL)
 * is the model to warm-start from in the partial and incremental modes. Windows
 * are split into training and validation sets by the seed.
 *
 * On success stores a new model owned by the caller (gvae_model_free) in
 * @out, fills @report (may be NULL) and returns SM_OK. Errors: SM_EINVAL
 * (bad config, empty graph, fewer than 8 windows), SM_ECLOSED (stopped by
 * config->should_stop) or SM_ENOMEM, with
 * @errmsg saying why; @out untouched. Thread-safe with respect to other
 * models; spawns and joins its own workers. */
int gvae_train(const struct gvae_config *config,
               const struct cbn_graph *graph,
               const struct cbn_window *const *windows,
               size_t n,
               size_t n_new,
               const struct gvae_model *prev,
               enum gvae_retrain mode,
               struct gvae_model **out,
               struct gvae_train_report *report,
               char errmsg[SM_ERRMSG_SIZE]);

void gvae_model_free(struct gvae_model *model);

/* The CBN structure version the model was trained for. */
uint64_t gvae_model_graph_version(const struct gvae_model *model);
size_t gvae_model_node_count(const struct gvae_model *model);
/* Name of node @i (topological order, callees first), borrowed. */
const char *gvae_model_node_name(const struct gvae_model *model, size_t i);
/* Parameter count of all CVAEs. */
size_t gvae_model_params(const struct gvae_model *model);

/* ---- Shards (distributed training) ---------------------------------------
 *
 * Every node's CVAE trains on its own (teacher forcing, see the top of this
 * file), so peers can each train the nodes they own and the model is put
 * together from the pieces: gvae_train_nodes() on every peer with the same
 * config, CBN and windows, gvae_shard_export() of each owned node, then
 * gvae_shard_import() and gvae_model_assemble() wherever the whole model is
 * needed. The assembled model is bit-for-bit the one gvae_train() would
 * have built in one call (same config and windows, any thread count):
 * statistics and the train/validation split are computed on all windows in
 * every call, and each node's initialisation and training draw from random
 * streams seeded by the config's seed and the node's name alone. */

/* As gvae_train(), but builds CVAEs only for the nodes with @own set
 * (cbn_graph_node_count(@graph) flags, borrowed, in the CBN's node order,
 * which is the model's). The other nodes of the model keep their layout and
 * statistics but no weights: gvae_model_node_trained() is false for them and
 * gvae_shard_export() refuses them. The report counts the nodes of the model
 * in nodes, and only owned nodes in the other node counts. A model with
 * untrained nodes is meant for exporting shards; it can be saved and loaded,
 * but sweeps treat its untrained nodes as absent. Errors: as gvae_train(),
 * and SM_EINVAL when @own is NULL. */
int gvae_train_nodes(const struct gvae_config *config,
                     const struct cbn_graph *graph,
                     const struct cbn_window *const *windows,
                     size_t n,
                     size_t n_new,
                     const struct gvae_model *prev,
                     enum gvae_retrain mode,
                     const bool *own,
                     struct gvae_model **out,
                     struct gvae_train_report *report,
                     char errmsg[SM_ERRMSG_SIZE]);

/* Whether node @i of @model has trained weights (false when @i is out of
 * range). */
bool gvae_model_node_trained(const struct gvae_model *model, size_t i);

/* A decoded shard: one node's CVAE, its input and output statistics, the
 * statistics of its CBN parents' outputs it was trained with, the training
 * config and the CBN version. Owned by whoever imported it. */
struct gvae_shard;

/* Serialises node @i of @model (borrowed) into a new buffer owned by the
 * caller (sm_free). Format: the 8 bytes "SMGVSHRD", a little-endian u32
 * format version (1), then a checkpoint (gvae_model_save format, with its
 * CRC-32C) of a model made of the node's CBN parents, reduced to their names
 * and output statistics and without weights, followed by the node itself:
 * so the shard names its node and CBN version, carries the statistics of
 * the inputs the node reads from its parents, and reuses the checkpoint's
 * strict decoder. A node with no outputs (nothing to train) is exported
 * without weights. Errors: SM_EINVAL (@i out of range), SM_ENOTFOUND (the
 * node has outputs but was not trained in @model), SM_ENOMEM; @buf and @len
 * untouched on error. */
int gvae_shard_export(const struct gvae_model *model,
                      size_t i,
                      uint8_t **buf,
                      size_t *len);

/* Decodes and checks a shard (@buf borrowed) for @graph (borrowed): its CBN
 * version must be @graph's, its node a node of @graph with the same member
 * services and parents, and its weights must fill exactly the shapes its
 * config and features give. On success stores a new shard owned by the
 * caller (gvae_shard_free) and returns SM_OK. Errors: SM_EMALFORMED (not a
 * shard, truncated, trailing bytes, inconsistent shapes or structure),
 * SM_EUNSUPPORTED (another format version), SM_ECORRUPT (checksum),
 * SM_EINVAL (trained for another CBN version, or a node @graph does not
 * have or has with other members or parents), SM_ENOMEM; @errmsg says what;
 * @out untouched. Allocation is bounded as in gvae_model_load(). */
int gvae_shard_import(const uint8_t *buf,
                      size_t len,
                      const struct cbn_graph *graph,
                      struct gvae_shard **out,
                      char errmsg[SM_ERRMSG_SIZE]);

void gvae_shard_free(struct gvae_shard *shard);

/* The shard's node name (borrowed, lives as long as the shard) and the CBN
 * version it was trained for. */
const char *gvae_shard_node_name(const struct gvae_shard *shard);
uint64_t gvae_shard_graph_version(const struct gvae_shard *shard);

/* Builds a complete model for @graph (borrowed) from @n shards (borrowed;
 * copied, so they may be freed afterwards), exactly one per CBN node, in any
 * order. The statistics come from the shards: each node's own, and the
 * outputs of its parents from the parents' shards, which must equal the
 * ones the node was trained with (bit for bit: peers computed them on the
 * same windows). @config (borrowed) becomes the model's config; every shard
 * must have been trained with the same config (its thread count aside).
 * On success stores a new model owned by the caller (gvae_model_free),
 * usable by gvae_diagnose(), gvae_evaluate() and gvae_model_save(), and
 * returns SM_OK. Errors: SM_EINVAL (bad config; a shard for another CBN
 * version or config, for a node not in @graph, or two for one node; parent
 * statistics or outputs that do not match), SM_ENOTFOUND (no shard for a
 * node), SM_ENOMEM; @errmsg names the node; @out untouched. */
int gvae_model_assemble(const struct cbn_graph *graph,
                        const struct gvae_config *config,
                        const struct gvae_shard *const *shards,
                        size_t n,
                        struct gvae_model **out,
                        char errmsg[SM_ERRMSG_SIZE]);

/* ---- Reconstruction quality --------------------------------------------
 *
 * Generated against observed latencies (server latency of every service at
 * every percentile, in ms) on windows the model was not trained on:
 *   teacher-forced: each decoder gets the observed parent latencies;
 *   generated:      decoders run from the CBN roots to the frontend on
 *                   their parents' generated latencies.
 * Z is the prior mean p(Z | X) (nothing of Y is used). R^2 is computed per
 * feature (over windows) and averaged over features with variance, so the
 * spread between services cannot inflate it; RMSE is in ms over all. */
struct gvae_eval
{
    size_t windows, features;
    double r2_forced, rmse_forced_ms;
    double r2_generated, rmse_generated_ms;
    double r2_frontend; /* the frontend's p99 (generated), when named */
};

int gvae_evaluate(const struct gvae_model *model,
                  const struct cbn_window *const *windows,
                  size_t n,
                  const char *frontend,
                  struct gvae_eval *out);

/* ---- Counterfactual sweeps ---------------------------------------------- */

enum gvae_abduction {
    /* Abduction-action-prediction: each node's Z from the posterior
     * q(Z | X, Y, Y_parents) of the observed window and the residual
     * u = Y - decoder(X, Z, Y_parents) kept for every node downstream of
     * the intervention, so anomalies it did not cause stay. The intervened
     * service is restored whole: its X to normal values and its own noise
     * (Z to the prior mean p(Z | X'), no residual), so a fault the model
     * never saw in its metrics, whose trace is only in the service's
     * unexplained latency, is still undone by restoring that service. */
    GVAE_ABDUCT_POSTERIOR,
    /* As above, but the intervened service keeps its abducted Z and
     * residual: only X changes (restores only what the model learned). */
    GVAE_ABDUCT_POSTERIOR_X,
    /* The paper's sweep: regenerated nodes draw Z from the prior
     * p(Z | X') with no residual. It erases the anomalies the intervention
     * did not cause, so every candidate on the path to the frontend shows
     * an effect and ranking by effect alone ties; ranked by effect times
     * the candidate's own evidence it was the most accurate variant on the
     * benchmark (chain, fanout, social; several seeds), and it is the
     * default. */
    GVAE_ABDUCT_PRIOR,
};

enum gvae_rank {
    GVAE_RANK_EFFECT,          /* frontend latency reduction (ms) */
    GVAE_RANK_EFFECT_EVIDENCE, /* effect / excess x robust z */
    GVAE_RANK_EVIDENCE,        /* robust z alone (no model) */
    GVAE_RANK_GATED_EVIDENCE,  /* effect >= gate x excess first, by z */
};

/* How the resource class inside a culprit is chosen. */
enum gvae_resource_rank {
    GVAE_RES_EFFECT,         /* largest effect; evidence when none */
    GVAE_RES_EVIDENCE,       /* inputs furthest above normal */
    GVAE_RES_GATED_EVIDENCE, /* classes with an effect first, by evidence */
};

const char *gvae_rank_name(enum gvae_rank rank);
const char *gvae_resource_rank_name(enum gvae_resource_rank rank);
const char *gvae_abduction_name(enum gvae_abduction abduction);

struct gvae_sweep_config
{
    const char *qos_service; /* the frontend (required) */
    double qos_percentile;   /* e.g. 99 */
    double qos_target_ms;    /* > 0 */
    unsigned samples;        /* S abduction samples per candidate, >= 1 */
    double p_threshold;      /* P(QoS met) that names a culprit */
    unsigned max_culprits;   /* greedy limit */
    double gate;             /* share of the excess over the target an
                                effect must reach to count */
    enum gvae_abduction abduction;
    enum gvae_rank rank;
    enum gvae_resource_rank resource_rank;
    uint64_t seed;
};

/* Fills @config with the defaults (no QoS service or target): 64 samples,
 * threshold 0.9, 3 culprits, gate 0.1, prior abduction, services ranked by
 * effect x evidence, resource classes by evidence (all chosen on the
 * benchmark, tests/bench/bench_model.c), seed 1. */
void gvae_sweep_config_default(struct gvae_sweep_config *config);

struct gvae_candidate
{
    const char *service;   /* CBN node name */
    double score;          /* by the configured ranking, higher first */
    double effect_ms;      /* observed - counterfactual frontend latency,
                              mean over samples */
    double p_qos_met;      /* share of samples meeting the target: all S
                              for the best-ranked candidate (and culprit
                              sets), the posterior mean alone (0 or 1) for
                              the others */
    double evidence;       /* robust z of its inputs and latencies */
    unsigned out_of_range; /* inputs outside the training range */
};

struct gvae_culprit
{
    const char *service;
    enum cbn_resource resource; /* CBN_RES_UNKNOWN if no class stood out */
    double p_qos_met;           /* of restoring the culprits so far */
    double effect_ms;
    double resource_effect_ms; /* of restoring only that class */
};

struct gvae_diagnosis
{
    double latency_ms; /* observed frontend latency at the percentile */
    double target_ms;
    int violated;
    size_t n_culprits; /* 0: nothing restores QoS (e.g. a load spike) */
    struct gvae_culprit *culprits;
    size_t n_ranking; /* every candidate, best first */
    struct gvae_candidate *ranking;
    size_t n_path; /* CBN path from the first culprit to the frontend */
    const char **path;
    size_t n_unseen; /* "service: feature" inputs outside training range */
    const char **unseen;
    size_t rows; /* decoder rows evaluated (cost) */
};

/* Diagnoses window @w (borrowed; violated or not) with the model: a batched
 * service-level sweep over every candidate, greedy culprit sets, then a
 * resource-level sweep inside each culprit. @normals (may be NULL) gives the
 * normal metric values to restore; without it, or for inputs it lacks, the
 * model's own medians over QoS-meeting training windows are used.
 *
 * On success stores a diagnosis owned by the caller (gvae_diagnosis_free;
 * it copies every string, so it outlives the model) and returns SM_OK.
 * Errors: SM_EINVAL (bad config), SM_ENOTFOUND (the QoS service is not in
 * the model, or the window has no latency for it), SM_ENOMEM; @errmsg says
 * which. Deterministic for a given model, window and config. It is
 * gvae_diagnose_remote() with no remote: every node computed here. */
int gvae_diagnose(const struct gvae_model *model,
                  const struct cbn_window *w,
                  const struct cbn_normals *normals,
                  const struct gvae_sweep_config *config,
                  struct gvae_diagnosis **out,
                  char errmsg[SM_ERRMSG_SIZE]);

void gvae_diagnosis_free(struct gvae_diagnosis *diagnosis);

/* ---- Counterfactual passes across peers ----------------------------------
 *
 * In a mesh every peer holds the whole model, the violated window and the
 * same normals. The leader runs the diagnosis; each CBN node's decoder rows
 * can be computed by the peer that owns the node instead. A sweep is a
 * series of passes (K interventions x S samples); within a pass, nodes are
 * computed one topological level after the other (a node's level is 1 +
 * the largest of its parents'), and the rows a node needs from its parents
 * travel with its request: per pass, per level, one request per remote
 * owner, holding all of that owner's nodes of the level with every
 * intervention and sample batched. gvae/ knows nothing of the network: the
 * caller's struct gvae_remote moves the bytes.
 *
 * Every peer computes a node's rows the same way from the same inputs, so
 * the result is bit for bit gvae_diagnose()'s, whatever the owners, as long
 * as the peers' OpenBLAS computes the same products (same library, kernel
 * and thread cap). A reply that is missing or malformed is not an error:
 * the coordinator computes those nodes itself (it has the whole model).
 *
 * Wire format (integers little-endian; floats are IEEE-754 binary32 bit
 * patterns, little-endian, so they travel exactly). A request:
 *
 *   offset size
 *    0     4   "SMPQ"
 *    4     2   format version, GVAE_PASS_FORMAT
 *    6     1   abduction (enum gvae_abduction) of the sweep config
 *    7     1   0
 *    8     8   the model's graph version
 *   16     4   the model's node count
 *   20     4   the sweep config's samples
 *   24     8   the window's start_ns
 *   32     8   the sweep config's seed
 *   40     4   pass number within the diagnosis (from 0)
 *   44     4   topological level of the requested nodes
 *   48     4   S: samples of this pass (1 or the config's samples)
 *   52     4   K: interventions, 1 .. max(node count, CBN_RES_COUNT)
 *   56     4   N: requested nodes, 1 .. node count
 *   60         K interventions, each: u8 n (1..8), u8 own (0 or 1), then n
 *              times u32 node (distinct, < node count) and u16 mask of
 *              restored resource classes (bit per enum cbn_resource, not 0)
 *              N requested nodes, ascending, each:
 *                u32 node
 *                per CBN parent (the node's order): ceil(K/8) bytes, bit
 *                  k % 8 of byte k / 8 set when intervention k affects the
 *                  parent (unused bits 0)
 *                per Y_parent group (the node's order), per intervention k
 *                  that affects the group's parent (ascending): the parent's
 *                  counterfactual rows of that group, S x width floats
 *                  (sample-major): only the outputs the node reads
 *
 * A reply:
 *
 *    0     4   "SMPR"
 *    4     2   GVAE_PASS_FORMAT
 *    6     2   0
 *    8     8   graph version, as requested
 *   16     4   pass number, as requested
 *   20     4   level, as requested
 *   24     4   S, 28: K, 32: N, as requested
 *   36         per requested node, in request order: u32 node, ceil(K/8)
 *              bytes of its affected flags (as above), then its
 *              counterfactual rows, n_affected x S x ny floats
 *              (intervention-major, then sample-major; ny = the node's
 *              outputs in model units)
 *
 * Both sides decode strictly: exact lengths, no trailing bytes, zero
 * padding bits, node indices and shapes checked against the model. */

#define GVAE_PASS_FORMAT 1

/* The coordinator's view of the mesh. Both functions run on the diagnosing
 * thread, synchronously. */
struct gvae_remote
{
    void *arg;
    /* Which peer computes node @node: 0 = here, else an owner number > 0. */
    unsigned (*owner)(void *arg, size_t node);
    /* Sends @n requests (reqs[k] of lens[k] bytes, borrowed, to owners[k])
     * and waits for all replies: stores each reply in reps[k]/rep_lens[k]
     * (allocated with sm_malloc by the callee, freed by gvae) or leaves
     * reps[k] NULL when that owner failed (timeout, down, refused). Called
     * from the diagnosing thread; may block (the node layer bounds it with
     * a timeout). The owners are distinct within one call, so the requests
     * can be sent in parallel. */
    void (*exchange)(void *arg,
                     size_t n,
                     const unsigned *owners,
                     const uint8_t *const *reqs,
                     const size_t *lens,
                     uint8_t **reps,
                     size_t *rep_lens);
};

struct gvae_remote_stats
{
    uint64_t passes;    /* sweep passes run */
    uint64_t levels;    /* exchange calls: levels with remote nodes */
    uint64_t requests;  /* requests sent (one per owner and level) */
    uint64_t fallbacks; /* remote nodes computed here after a missing or
                           malformed reply */
    uint64_t bytes_out; /* request bytes */
    uint64_t bytes_in;  /* reply bytes received (failed ones excluded) */
};

/* As gvae_diagnose(), with the nodes whose @remote (borrowed; NULL: none)
 * owner is not 0 computed by their owners. The diagnosis is bit for bit
 * gvae_diagnose()'s (its rows count every decoder row, wherever it ran).
 * @stats (may be NULL) is zeroed, then counts the exchanges. Errors: as
 * gvae_diagnose(); an owner's failure is not one. */
int gvae_diagnose_remote(const struct gvae_model *model,
                         const struct cbn_window *w,
                         const struct cbn_normals *normals,
                         const struct gvae_sweep_config *config,
                         const struct gvae_remote *remote,
                         struct gvae_remote_stats *stats,
                         struct gvae_diagnosis **out,
                         char errmsg[SM_ERRMSG_SIZE]);

/* An owner's side of a diagnosis: the window abducted once, serving any
 * number of pass requests for it. Not thread-safe: one request at a time. */
struct gvae_pass_server;

/* Abducts @w with @model/@normals/@config exactly as the coordinator does
 * (same RNG stream), so any node's rows can be computed here. @model is
 * borrowed and must outlive the server; @w, @normals and @config are read
 * during the call only. On success stores a server owned by the caller
 * (gvae_pass_server_free) in @out. Errors: as gvae_diagnose() (SM_EINVAL,
 * SM_ENOTFOUND, SM_ENOMEM) with @errmsg set; @out untouched. */
int gvae_pass_server_new(const struct gvae_model *model,
                         const struct cbn_window *w,
                         const struct cbn_normals *normals,
                         const struct gvae_sweep_config *config,
                         struct gvae_pass_server **out,
                         char errmsg[SM_ERRMSG_SIZE]);

/* Decodes request @req (@len bytes, borrowed) strictly, computes the
 * requested nodes' counterfactual rows and stores the encoded reply in
 * @rep (sm_malloc'ed, owned by the caller) and @rep_len. Errors, with
 * @rep untouched: SM_EMALFORMED (bad magic, truncated, trailing bytes,
 * counts out of range, node indices out of range or not ascending, padding
 * bits set), SM_EUNSUPPORTED (another format version), SM_EINVAL (a
 * well-formed request for another model, window, seed, sample count or
 * abduction), SM_ENOMEM. Allocation is bounded by the model and the
 * config (K, N and S are capped as in the format above), never by counts
 * the input merely claims: sections are checked against the input's
 * length before anything is allocated for them. */
int gvae_pass_serve(struct gvae_pass_server *srv,
                    const uint8_t *req,
                    size_t len,
                    uint8_t **rep,
                    size_t *rep_len);

void gvae_pass_server_free(struct gvae_pass_server *srv);

/* The request's identity for the node layer's cache/routing: a
 * digest-free peek at the fixed header. */
struct gvae_pass_header
{
    unsigned format; /* GVAE_PASS_FORMAT */
    enum gvae_abduction abduction;
    uint64_t graph_version;   /* of the coordinator's model */
    uint32_t n_nodes;         /* in the model */
    uint32_t config_samples;  /* the sweep config's */
    uint64_t window_start_ns; /* the diagnosed window */
    uint64_t seed;            /* the sweep config's */
    uint32_t pass, level;     /* where in the diagnosis */
    uint32_t samples;         /* S of this pass */
    uint32_t interventions;   /* K */
    uint32_t nodes;           /* N requested */
};

/* Reads the header of request @req (@len bytes, borrowed) into @out.
 * Checks only the header: SM_EMALFORMED (shorter than the header, not a
 * request), SM_EUNSUPPORTED (another format version; @out->format set). */
int gvae_pass_peek(const uint8_t *req,
                   size_t len,
                   struct gvae_pass_header *out);

/* ---- Checkpoints -------------------------------------------------------
 *
 * A self-describing msgpack document (format name, version, config, per
 * node its features with their normalisation and normals, and every MLP's
 * layer shapes and weights), followed by a CRC-32C of the document. */

/* Serialises @model into a new buffer owned by the caller (sm_free).
 * Returns SM_OK or SM_ENOMEM. */
int gvae_model_save(const struct gvae_model *model, uint8_t **buf, size_t *len);

/* Parses a checkpoint (borrowed) into a new model owned by the caller.
 * @expect_graph_version is the CBN version the caller needs (0: any).
 * Errors: SM_ECORRUPT (checksum), SM_EMALFORMED (not a valid checkpoint:
 * truncated, wrong types, inconsistent shapes), SM_EUNSUPPORTED (another
 * format version), SM_EINVAL (trained for another CBN version), SM_ENOMEM;
 * @errmsg says what; @out untouched. Allocation is bounded: every node's
 * weights must be in the file, and its buffers are at most 32 times its
 * weights plus 4 MiB. */
int gvae_model_load(const uint8_t *buf,
                    size_t len,
                    uint64_t expect_graph_version,
                    struct gvae_model **out,
                    char errmsg[SM_ERRMSG_SIZE]);

#endif /* SM_GVAE_H */
