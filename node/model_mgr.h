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
    struct gvae_config train; /* training; see gvae_config_default */
    unsigned samples;         /* sweep samples per candidate; 0 -> 64 */
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
 * SM_EIO (data_dir cannot be created), SM_ENOMEM, SM_EINTERNAL (a thread or
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
};

/* Takes a closed window @w (borrowed; the manager keeps its own copy) into
 * the history, dropping the oldest beyond max_windows. If @w violated QoS
 * and a model exists, queues its diagnosis (the callback reports it);
 * beyond max_pending diagnoses it is dropped and counted instead. If a
 * round is due and none is running, starts one. Never blocks on model
 * math. Returns SM_OK; SM_ENOMEM (nothing changed) or SM_ECLOSED after
 * node_model_mgr_close(). */
int node_model_mgr_window(struct node_model_mgr *m,
                          const struct cbn_window *w,
                          unsigned flags);

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

struct node_model_mgr_stats
{
    uint64_t model_version; /* 0: no model yet */
    size_t model_params;    /* of the current model */
    int model_loaded;       /* the current model came from the checkpoint */
    size_t windows;         /* in the history */
    uint64_t windows_total; /* taken in since start (replayed included) */
    uint64_t windows_new;   /* not yet trained on */
    int training;           /* a round is running */
    uint64_t trainings;     /* successful rounds */
    uint64_t training_failures;
    double last_train_s;          /* wall time of the last successful round */
    double train_s_total;         /* of every successful round */
    uint64_t diagnoses;           /* delivered with SM_OK (on-demand ones
                                     included) */
    uint64_t diagnosis_failures;  /* delivered with an error */
    uint64_t diagnoses_dropped;   /* not queued: max_pending reached */
    size_t diagnoses_pending;     /* queued or running */
    uint64_t checkpoint_failures; /* writes that failed, bad loads */
};

/* The current model's version (0: none yet); cheaper than the stats. */
uint64_t node_model_mgr_version(const struct node_model_mgr *m);

/* Fills @out with the manager's figures. */
void node_model_mgr_stats(const struct node_model_mgr *m,
                          struct node_model_mgr_stats *out);

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
