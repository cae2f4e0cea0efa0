/* The peer's model manager: window history, training policy, diagnoses
 * (node-private).
 *
 * The manager belongs to the peer's libuv loop. The loop hands it every
 * closed window; the manager keeps a bounded history of copies, decides when
 * to train, and asks for a counterfactual diagnosis of every window that
 * violated QoS once a model exists. All model math runs off the loop:
 *
 *   - the compute thread runs diagnoses, one at a time, with the current
 *     model;
 *   - the training thread runs training rounds, one at a time, on a
 *     snapshot of the history (gvae_train may add its own workers,
 *     gvae_config.threads).
 *
 * Both set OpenBLAS to one thread per product (DEPENDENCIES.md, OpenBLAS
 * pitfalls 2 and 3). Results come back to the loop through one uv_async
 * handle, and every callback runs on the loop thread.
 *
 * Training policy. The first round starts once min_windows windows are in
 * the history; later rounds start after retrain_every new windows. A round
 * trains on every window of the history (interleaving new and old ones):
 * from scratch when there is no model, else GVAE_RETRAIN_PARTIAL when the
 * CBN structure changed since the current model was trained (or it was
 * loaded from a checkpoint) and GVAE_RETRAIN_INCREMENTAL otherwise. The new
 * model replaces the current one only once it is complete; meanwhile the
 * current one keeps serving diagnoses. A failed round keeps the current
 * model and is counted. After each successful round the model is written to
 * "<data_dir>/model.ckpt" atomically (temporary file, fsync, rename), and a
 * new manager on the same directory starts with it.
 *
 * Coordinated rounds (the mesh). Windows closed on other peers are
 * replicated to every peer and join the history with NODE_MODEL_REMOTE. The
 * history is kept sorted by window end (an arriving window is inserted in
 * place; ends are unique, a second window with an end already held is
 * ignored), so every peer that holds the same windows sees the same ordered
 * range. The leader picks a round with node_model_mgr_round_windows() (a
 * window range and its digest); each owner trains its CBN nodes with
 * node_model_mgr_train_shards() and returns the shards; once the leader has
 * committed the version, every peer builds the whole model with
 * node_model_mgr_install_shards(). Both rebuild the CBN from exactly the
 * round's windows, so every peer trains and assembles for the same graph,
 * and the assembled model is the one gvae_train() would give on those
 * windows. With config->coordinated the manager starts no round by itself;
 * then its models should come only from installs (a round on demand makes a
 * local model whose version the mesh does not know).
 *
 * Not thread-safe: call every function on the loop thread. */
#ifndef SM_NODE_MODEL_MGR_H
#define SM_NODE_MODEL_MGR_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "base/err.h"
#include "cbn/cbn.h"
#include "gvae/gvae.h"

/* The checkpoint's file name inside data_dir. */
#define NODE_MODEL_CHECKPOINT "model.ckpt"

struct node_model_mgr_config
{
    const char *qos_service;  /* the frontend (required), copied */
    double qos_percentile;    /* 0 -> 99; else in (0, 100] */
    double qos_target_ms;     /* > 0 (required) */
    size_t min_windows;       /* first round once this many windows are
                                 held; 0 -> 240; at least 8 */
    size_t retrain_every;     /* next round after this many new windows;
                                 0 -> never (only node_model_mgr_train_now).
                                 node_model_mgr_config_default sets 240 */
    size_t max_windows;       /* history kept, oldest dropped first;
                                 0 -> 4000; at least min_windows */
    size_t max_pending;       /* diagnoses of violated windows queued or
                                 running; beyond it a violated window is
                                 not diagnosed (counted as dropped);
                                 0 -> 64 */
    const char *data_dir;     /* checkpoint directory (created, one level,
                                 mode 0700, if missing), copied; NULL: no
                                 checkpoint is read or written */
    struct gvae_config train; /* training; see gvae_config_default. For
                                 coordinated rounds every peer must use the
                                 same one (the thread count aside), or the
                                 shards do not assemble */
    unsigned samples;         /* sweep samples per candidate; 0 -> 64 */
    int coordinated;          /* non-zero: never start a round by itself
                                 (the mesh runs rounds through
                                 node_model_mgr_train_shards and
                                 node_model_mgr_install_shards);
                                 node_model_mgr_train_now still works */
};

/* Fills @config with the defaults: no QoS service or target, percentile
 * 99, min_windows 240, retrain_every 240, max_windows 4000, max_pending 64,
 * no data_dir, gvae_config_default() and 64 samples. */
void node_model_mgr_config_default(struct node_model_mgr_config *config);

/* The outcome of a diagnosis, passed to the diagnosis callback; everything
 * in it is borrowed for the duration of the call (copy what must outlive
 * it). */
struct node_model_result
{
    int status;             /* SM_OK, or why the window could not be diagnosed
                               (SM_ENOTFOUND: the window or the model lacks the
                               QoS service; SM_ENOMEM) */
    const char *errmsg;     /* "" on success */
    uint64_t model_version; /* of the model that diagnosed it */
    const struct gvae_diagnosis *diagnosis; /* NULL unless SM_OK */
    double seconds;                         /* from queueing to the callback */
    uint64_t tag; /* 0 for a violated window node_model_mgr_window()
                     queued; else node_model_mgr_diagnose_range()'s */
};

/* The outcome of a training round, passed to the training callback;
 * borrowed for the duration of the call. */
struct node_model_round
{
    int status;         /* SM_OK, or why training failed (SM_EINVAL: e.g.
                           the windows hold no CBN or the training config
                           is refused; SM_ENOMEM); the current model stays */
    const char *errmsg; /* "" on success */
    enum gvae_retrain mode;
    uint64_t model_version; /* the new model's, or the unchanged current
                               one's (0: none) on failure */
    size_t windows;         /* in the snapshot trained on */
    size_t windows_new;     /* of which new since the previous model */
    struct gvae_train_report report; /* valid when status is SM_OK */
    int checkpoint_status; /* SM_OK, or why the checkpoint could not be
                              written (the new model is used anyway) */
};

/* Receives the diagnosis of window @w (borrowed, valid for the call). Runs
 * on the loop thread, exactly once for every window that
 * node_model_mgr_window() queued for diagnosis, unless the manager is
 * closed first. It may call any node_model_mgr_* function. */
typedef void (*node_model_diagnosis_cb)(void *arg,
                                        const struct cbn_window *w,
                                        const struct node_model_result *r);

/* Receives the outcome of every training round, on the loop thread, unless
 * the manager is closed first. It may call any node_model_mgr_* function. */
typedef void (*node_model_round_cb)(void *arg,
                                    const struct node_model_round *round);

struct node_model_mgr_callbacks
{
    node_model_diagnosis_cb diagnosis; /* may be NULL */
    node_model_round_cb round;         /* may be NULL */
    void *arg;                         /* passed to both */
};

struct node_model_mgr;

/* Creates a manager on @loop (borrowed; it must outlive the manager) with a
 * copy of @config and @callbacks (may be NULL: no callbacks). Reads the
 * checkpoint in config->data_dir if there is one, so a restarted peer keeps
 * its model; a checkpoint that cannot be read or parsed is logged and
 * ignored (the next round replaces it), never fatal. Starts the compute
 * and training threads.
 *
 * Returns SM_OK with the manager in @out (close it with
 * node_model_mgr_close). Errors: SM_EINVAL (bad config), SM_EPERM or
 * SM_EIO (data_dir cannot be created), SM_ENOMEM, SM_ECRYPTO (libsodium,
 * used for round digests, cannot start), SM_EINTERNAL (a thread or
 * the async handle could not be created); @errmsg says why and @out is
 * untouched. */
int node_model_mgr_new(uv_loop_t *loop,
                       const struct node_model_mgr_config *config,
                       const struct node_model_mgr_callbacks *callbacks,
                       struct node_model_mgr **out,
                       char errmsg[SM_ERRMSG_SIZE]);

/* Flags of node_model_mgr_window(). */
enum {
    /* The window is replayed from the window log at start-up: it only joins
     * the history. No diagnosis is queued and no round is started by this
     * call (the next live window or node_model_mgr_train_now() starts one
     * when due). Windows the loaded checkpoint was trained on (ending at or
     * before its newest window) do not count as new. */
    NODE_MODEL_REPLAYED = 1u << 0,
    /* With NODE_MODEL_REPLAYED: still queue the diagnosis of a violated
     * window (one whose diagnosis was lost to a crash or a stop). */
    NODE_MODEL_DIAGNOSE = 1u << 1,
    /* The window was closed by another peer and replicated here: it joins
     * the history (and counts for rounds) but is never diagnosed here (its
     * own peer does that). */
    NODE_MODEL_REMOTE = 1u << 2,
};

/* Takes a closed window @w (borrowed; the manager keeps its own copy) into
 * the history, in order of window end (windows may arrive out of order),
 * dropping the oldest beyond max_windows (a window older than every window
 * of a full history is not kept). A window whose end_ns equals that of one
 * already in the history is ignored, local or remote: nothing happens but
 * the windows_duplicate count, and SM_OK is returned. If @w violated QoS, is
 * not NODE_MODEL_REMOTE and a model exists, queues its diagnosis (the
 * callback reports it); beyond max_pending diagnoses it is dropped and
 * counted instead. If a round is due and none is running, starts one (never
 * with config->coordinated). Never blocks on model math. Returns SM_OK;
 * SM_ENOMEM (nothing changed) or SM_ECLOSED after node_model_mgr_close(). */
int node_model_mgr_window(struct node_model_mgr *m,
                          const struct cbn_window *w,
                          unsigned flags);

/* Queues the diagnosis of each violated window among the @newest windows
 * of the history, remote ones included, newer than what the current model
 * was trained on, never queued here, and for which @done(@arg, end_ns)
 * returns 0: a new leader takes over the windows
 * its predecessor merged and may not have diagnosed. They are reported like
 * live diagnoses. Returns how many were queued (0 without a model, after close,
 * or when the queue is full). */
size_t node_model_mgr_rediagnose(struct node_model_mgr *m,
                                 size_t newest,
                                 int (*done)(void *arg, uint64_t end_ns),
                                 void *arg);

/* Queues the diagnosis of every window of the history that ends in
 * (@from_ns, @to_ns], violated or not, with the current model (`sagemesh
 * diagnose`). The diagnosis callback reports each, in window order, with
 * @tag (non-zero, chosen by the caller); *@queued is their number. These
 * run after any violated window's diagnosis and do not count against
 * max_pending. Returns SM_OK; SM_ENOTFOUND without a model or when no
 * window of the history is in the range; SM_ETOOBIG when more than @max
 * are; SM_EAGAIN while an earlier request is not finished (one at a
 * time); SM_ENOMEM (nothing queued); SM_ECLOSED after close. */
int node_model_mgr_diagnose_range(struct node_model_mgr *m,
                                  uint64_t from_ns,
                                  uint64_t to_ns,
                                  size_t max,
                                  uint64_t tag,
                                  size_t *queued);

/* Starts a training round now (`sagemesh train`). When a round is already
 * running, one more is run right after it (requests coalesce). The round
 * callback reports the outcome. Returns SM_OK; SM_EAGAIN when the history
 * holds fewer than 8 windows; SM_ENOMEM; SM_ECLOSED after close. */
int node_model_mgr_train_now(struct node_model_mgr *m);

/* ---- Coordinated rounds ------------------------------------------------
 *
 * The round digest. Each window's encoding is hashed once, when it joins
 * the history:
 *
 *   leaf(w) = BLAKE2b-256(u64le(len) || cbn_window_encode(w))
 *
 * (len: the encoding's length in bytes, 8 bytes little-endian; unkeyed
 * libsodium crypto_generichash with a 32-byte output), and a range of
 * windows w_1 .. w_n in increasing end_ns is
 *
 *   digest = BLAKE2b-256(leaf(w_1) || leaf(w_2) || ... || leaf(w_n))
 *
 * (unkeyed, 32 bytes; the n 32-byte leaves concatenated). Encoding every
 * window again for each round cost about 290 ms for 4000 windows of the
 * social topology (12 KB each) on the loop thread; combining the cached
 * leaves takes well under a millisecond. */

/* Fewest windows a round may cover (gvae_train's minimum). */
#define NODE_MODEL_ROUND_MIN_WINDOWS 8

/* Describes the round of the current history for the leader (its newest
 * nine tenths of max_windows at most, so the windows that arrive while a
 * round trains and installs do not evict the round's own): its
 * windows end in (*@from_ns, *@to_ns], where *@from_ns is the oldest window's
 * end minus 1 and *@to_ns the newest one's; *@n is their number and @digest
 * gets the round digest above. Loop thread; cheap (no encoding). Returns
 * SM_OK, or SM_EAGAIN with the outputs untouched when the history holds
 * fewer than NODE_MODEL_ROUND_MIN_WINDOWS windows. */
int node_model_mgr_round_windows(const struct node_model_mgr *m,
                                 uint64_t *from_ns,
                                 uint64_t *to_ns,
                                 size_t *n,
                                 uint8_t digest[32]);

/* Whether the leader should start a round: 1 when the history holds at
 * least min_windows windows and either no model exists or retrain_every is
 * non-zero and at least retrain_every windows of the history end after
 * @last_round_to_ns (the to_ns of the last committed round); else 0. Loop
 * thread. */
int node_model_mgr_round_due(const struct node_model_mgr *m,
                             uint64_t last_round_to_ns);

struct node_model_round_spec; /* below */

/* Room for a CBN node name in node_model_mgr_round_nodes() (the mesh's
 * CONS_NAME_MAX + 1). */
#define CBN_NODE_NAME_CAP 129

/* Lists the nodes of the CBN built from the history windows of @spec's
 * range (in CBN order, the order training uses), up to @cap names copied
 * into @names, their number in *@n: what the leader places at the start
 * of a round. Loop thread; builds the graph here (about a millisecond per
 * thousand windows). Returns SM_OK; SM_ENOTFOUND when the windows there
 * differ from @spec in number or digest; SM_ETOOBIG when the CBN has more
 * than @cap nodes (the first @cap are listed); SM_ENOMEM. */
int node_model_mgr_round_nodes(const struct node_model_mgr *m,
                               const struct node_model_round_spec *spec,
                               char (*names)[CBN_NODE_NAME_CAP],
                               size_t cap,
                               size_t *n);

/* Calls @cb with the encoding (cbn_window_encode, borrowed for the call) of
 * every history window ending in (@from_ns, @to_ns], oldest first, until
 * @cb returns non-zero or encoding runs out of memory: the windows a
 * lagging peer is sent. Loop thread. */
void node_model_mgr_each_window(const struct node_model_mgr *m,
                                uint64_t from_ns,
                                uint64_t to_ns,
                                int (*cb)(void *arg,
                                          const uint8_t *w,
                                          size_t len),
                                void *arg);

/* A round as the leader describes it to the peers. */
struct node_model_round_spec
{
    uint64_t round;           /* the model version the round will commit, > 0 */
    uint64_t from_ns, to_ns;  /* windows ending in (from_ns, to_ns] */
    size_t n_windows;         /* how many the leader has there (>= 8) */
    uint8_t digest[32];       /* node_model_mgr_round_windows() digest */
    uint64_t prev_version;    /* model to continue from (0: from scratch);
                                 < round */
    const char *const *nodes; /* CBN node names this peer trains (borrowed,
                                 copied); train_shards only */
    size_t n_nodes;
    uint8_t cbn_digest[32]; /* install only: the digest (as in struct
                               node_model_shards) of the CBN the log says
                               the model was trained on; all zero: any */
};

/* One trained node, borrowed for the duration of the shards callback. */
struct node_model_shard
{
    const char *node;    /* CBN node name, as in the spec */
    const uint8_t *blob; /* gvae_shard_export() bytes */
    size_t len;
};

/* The outcome of node_model_mgr_train_shards(), borrowed for the duration
 * of the callback (copy the blobs to keep them). */
struct node_model_shards
{
    uint64_t round;         /* spec->round */
    int status;             /* SM_OK or why no shards were made, below */
    const char *errmsg;     /* "" on success */
    uint64_t cbn_version;   /* of the CBN rebuilt from the round's windows */
    uint8_t cbn_digest[32]; /* BLAKE2b-256 of its canonical text: for each
                               node in CBN order, "node NAME\n", then
                               "member SERVICE\n" per member, "parent
                               NAME\n" per parent node, "link CALLER
                               CALLEE\n" per network link into it */
    uint64_t cbn_size;      /* length of that text in bytes */
    size_t n;               /* shards, one per spec node, in spec order */
    const struct node_model_shard *shards;
    double seconds; /* on the training thread, for this job */
};

/* Receives the shards of a round on the loop thread, exactly once per
 * accepted request unless the manager is closed first. It may call any
 * node_model_mgr_* function. Statuses: SM_OK; SM_ENOTFOUND (this peer's
 * windows in the range differ from the leader's in number or digest; the
 * errmsg says how many it has: retry once replication caught up);
 * SM_ECONFLICT (prev_version is not this peer's current model: training
 * from anything else would make shards that do not fit the others');
 * SM_EINVAL (a node the round's CBN does not have, or training refused the
 * data); SM_EAGAIN (replaced by a newer request before it ran);
 * SM_ENOMEM. */
typedef void (*node_model_shards_cb)(void *arg,
                                     const struct node_model_shards *r);

/* Trains the CVAEs of spec->nodes for a round and exports them as shards,
 * on the training thread: the history windows in (from_ns, to_ns] (taken
 * now, in end order) must match spec->n_windows and spec->digest; the CBN
 * is built afresh from exactly those windows; training continues from the
 * current model when its version is spec->prev_version (incremental when
 * the model's nodes are the CBN's nodes, by name and order, else partial),
 * else from scratch when prev_version is 0, else fails with SM_ECONFLICT.
 * With the same config and windows on every peer the shards assemble into
 * the model one gvae_train() would make.
 *
 * Jobs run one at a time on the training thread with the other rounds;
 * an install waiting runs first. While a train_shards request waits, a new
 * one replaces it (the old one's callback gets SM_EAGAIN); a running one
 * finishes. @spec is borrowed (copied); @cb (required) reports the outcome
 * with @arg. Returns SM_OK (the callback will run); SM_EINVAL (bad spec: no
 * round, an empty range, fewer than 8 windows, prev_version >= round, no
 * nodes, an empty or repeated node name), SM_ENOMEM or SM_ECLOSED, and then
 * the callback never runs. */
int node_model_mgr_train_shards(struct node_model_mgr *m,
                                const struct node_model_round_spec *spec,
                                node_model_shards_cb cb,
                                void *arg);

/* Receives the outcome of an install on the loop thread, exactly once per
 * accepted request unless the manager is closed first; @version is the
 * spec's round. It may call any node_model_mgr_* function. Statuses: SM_OK
 * (the model is current); SM_EEXIST (the current model's version is already
 * spec->round or later); SM_ENOTFOUND (windows differ from the spec, as
 * for shards); SM_ECONFLICT (the CBN rebuilt from the round's windows is
 * not the one spec->cbn_digest names: the model is not assembled); SM_EINVAL,
 * SM_EMALFORMED, SM_ECORRUPT, SM_EUNSUPPORTED (a shard is refused:
 * gvae_shard_import or gvae_model_assemble say why); SM_ENOTFOUND also when a
 * CBN node has no shard; SM_EAGAIN (replaced by a newer install before it ran);
 * SM_ENOMEM. */
typedef void (*node_model_installed_cb)(void *arg,
                                        uint64_t version,
                                        int status,
                                        const char *errmsg);

/* Installs the model the leader committed for @spec (spec->nodes is not
 * used) from its @n shards (@blobs[k] of @lens[k] bytes, borrowed and
 * copied; one per CBN node, any order), on the training thread: checks the
 * windows as node_model_mgr_train_shards() does, rebuilds the round's CBN,
 * checks its digest against spec->cbn_digest (unless all zero), imports
 * every shard, assembles the model with the training config (thread
 * count 0, so every peer's model saves to the same bytes), computes the
 * normal values from the round's windows, and makes it the current model
 * with version spec->round and trained_until to_ns; then writes the
 * checkpoint as a training round does. Diagnoses use the previous model
 * until the swap. A waiting install is replaced by a newer one (its
 * callback gets SM_EAGAIN); installs run before waiting shard jobs and
 * automatic rounds. @cb (required) reports the outcome with @arg. Returns
 * SM_OK (the callback will run); SM_EEXIST when spec->round is not above
 * the current version (a replayed install never goes backwards); SM_EINVAL
 * (bad spec or no shards, an empty blob); SM_ENOMEM; SM_ECLOSED; then the
 * callback never runs. */
int node_model_mgr_install_shards(struct node_model_mgr *m,
                                  const struct node_model_round_spec *spec,
                                  const uint8_t *const *blobs,
                                  const size_t *lens,
                                  size_t n,
                                  node_model_installed_cb cb,
                                  void *arg);

struct node_model_mgr_stats
{
    uint64_t model_version; /* 0: no model yet */
    size_t model_params;    /* of the current model */
    int model_loaded;       /* the current model came from the checkpoint */
    size_t windows;         /* in the history */
    uint64_t windows_total; /* taken in since start (replayed included) */
    uint64_t windows_new;   /* not yet trained on */
    int training;           /* a round, shard or install job is queued or
                               running */
    uint64_t trainings;     /* successful rounds */
    uint64_t training_failures;
    double last_train_s;     /* wall time of the last successful round */
    double train_s_total;    /* of every successful round */
    double diagnose_s_total; /* compute time of the diagnoses
                                counted below (the sweep itself,
                                remote passes included) */
    double diagnose_s_last;
    uint64_t diagnoses;           /* delivered with SM_OK (on-demand ones
                                     included) */
    uint64_t diagnosis_failures;  /* delivered with an error */
    uint64_t diagnoses_dropped;   /* not queued: max_pending reached */
    size_t diagnoses_pending;     /* queued or running */
    uint64_t checkpoint_failures; /* writes that failed, bad loads */
    uint64_t trained_until_ns;    /* newest window end of the current
                                     model (0: none) */
    uint64_t windows_duplicate;   /* ignored: end already in the history */
    uint64_t shard_rounds;        /* successful node_model_mgr_train_shards */
    uint64_t shard_failures;      /* train_shards callbacks with an error */
    uint64_t installs;            /* successful node_model_mgr_install_shards */
    uint64_t install_failures;    /* install callbacks with an error */
};

/* The current model's version (0: none yet); cheaper than the stats. */
uint64_t node_model_mgr_version(const struct node_model_mgr *m);

/* Fills @out with the manager's figures. */
void node_model_mgr_stats(const struct node_model_mgr *m,
                          struct node_model_mgr_stats *out);

/* ---- Sweeps across peers ------------------------------------------------
 *
 * In the mesh a diagnosis's decoder passes run node by node on the peers
 * that own the nodes (gvae_diagnose_remote). The coordinator's side is a
 * hook the compute thread calls around each diagnosis; the owner's side
 * serves pass requests on the loop thread from the history and the
 * current model. */

/* Called on the compute thread for each diagnosis: @begin fills @remote
 * for diagnosing the window ending at @end_ns with model @version (@model
 * borrowed for the diagnosis; @has_normals: whether the diagnosis restores
 * the model's normals) and may keep a context in *@ctx; @end gets the
 * exchanges' figures. Both must be thread-safe. */
struct node_model_remote
{
    void *arg;
    void (*begin)(void *arg,
                  const struct gvae_model *model,
                  uint64_t version,
                  uint64_t end_ns,
                  int has_normals,
                  struct gvae_remote *remote,
                  void **ctx);
    void (*end)(void *arg, void *ctx, const struct gvae_remote_stats *stats);
};

/* Sets (or with NULL clears) the hook; @remote is copied. Loop thread;
 * diagnoses already running keep the hook they started with. */
void node_model_mgr_set_remote(struct node_model_mgr *m,
                               const struct node_model_remote *remote);

/* Serves one pass request of another peer's diagnosis of the window ending
 * at @end_ns with model @version (@has_normals as the coordinator's), on
 * the loop thread: the window abducted once per (version, window) and kept
 * for the next requests, gvae_pass_serve() for the request @req (@len
 * bytes, borrowed). On SM_OK the reply is in *@rep (sm_malloc'ed, the
 * caller's). Errors: SM_ENOTFOUND (the window is not in the history, or
 * no model), SM_ECONFLICT (the current model is another version, or its
 * normals differ), gvae_pass_serve()'s and gvae_pass_server_new()'s. */
int node_model_mgr_serve_pass(struct node_model_mgr *m,
                              uint64_t version,
                              uint64_t end_ns,
                              int has_normals,
                              const uint8_t *req,
                              size_t len,
                              uint8_t **rep,
                              size_t *rep_len);

/* Closes @m: from now on it accepts no work and runs no callback; queued
 * diagnoses and rounds are dropped. The running diagnosis finishes on its
 * thread and the running training round stops at its next step (its model
 * is discarded), without blocking the loop; then the loop joins the threads,
 * closes the async handle, frees everything and calls @closed_cb(@arg) (may be
 * NULL) on the loop thread. The loop must run until then. May be called from a
 * manager callback; a second call is a no-op. */
void node_model_mgr_close(struct node_model_mgr *m,
                          void (*closed_cb)(void *arg),
                          void *arg);

#endif /* SM_NODE_MODEL_MGR_H */
