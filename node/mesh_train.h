/* Leader-coordinated training rounds and the replication of windows that
 * feeds them (node-private).
 *
 * The training data. A peer that closes a window sends its encoding to
 * every other member (TP_MSG_WINDOW); receivers add it to their model
 * manager's history as a remote window. A peer that lacks windows of a
 * round says so, and the leader sends it the round's windows it has.
 *
 * A round. The leader, once a round is due on its history and its own
 * model is the committed one, fixes a spec: the model version the round
 * will commit (the committed one + 1), the window range, the number of
 * windows and a digest of their encodings, and the model to continue from.
 * It asks every healthy owner of the placement to train the CBN nodes it
 * owns (START); it trains the rest itself. Owners train on their own copy
 * of the windows (the digest proves they are the leader's) and send the
 * shards back (SHARD), or say why not (FAIL). A node whose owner is down,
 * fails, or does not answer within the timeout moves to its replica, then
 * to the leader. With a shard for every node of the round's CBN, the
 * leader commits the CBN version (when it changed) and MODEL_COMMIT with
 * every shard's digest and the digest of the round's CBN, then sends the
 * shards to every member (MODEL); each peer installs the assembled model
 * once the log holds that version and the digests match, and only with a
 * CBN of the digest the log names (the model manager refuses another). A
 * MODEL_COMMIT naming a CBN version another leader committed with another
 * CBN is refused by the log; the leader then commits its CBN under the
 * next version and proposes the model again. A peer that sees a committed
 * version it lacks asks the leader for it (FETCH).
 *
 * Failover. Nothing of a round is in the log until MODEL_COMMIT: a new
 * leader simply starts the round again with the same version, and the log
 * keeps one MODEL_COMMIT per version. Owners still training for the dead
 * leader finish and their answers are lost with it. A leader that dies
 * after its commit but before sending the shards leaves a version nobody
 * holds: the new leader asks every member for it, and after four fetch
 * periods without it trains the next version from scratch.
 *
 * The module is a state machine: time and the log's state come in through
 * node_train_tick(), messages through node_train_recv(), and everything it
 * does leaves through struct node_train_env. It is deterministic for a
 * given sequence of calls, so tests drive whole meshes of it in one
 * process. Single-threaded: call everything on one thread. */
#ifndef SM_NODE_MESH_TRAIN_H
#define SM_NODE_MESH_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "consensus/consensus.h"
#include "transport/transport.h"

/* What a round trains on and commits. */
struct node_train_spec
{
    uint64_t round;          /* the model version it commits, > 0 */
    uint64_t from_ns, to_ns; /* windows ending in (from_ns, to_ns] */
    uint64_t n_windows;      /* the leader's count there */
    uint8_t digest[32];      /* of their encodings (model manager's) */
    uint64_t prev_version;   /* model to continue from (0: scratch) */
};

/* A shard as the model manager hands it over (borrowed). */
struct node_train_shard
{
    const char *node;
    const uint8_t *blob;
    size_t len;
};

/* The result of training the nodes of one START (borrowed for the call). */
struct node_train_result
{
    int status; /* SM_OK; SM_ENOTFOUND: windows missing; else failed */
    const char *errmsg;
    uint8_t cbn_digest[32];
    uint64_t cbn_size;
    size_t n;
    const struct node_train_shard *shards;
};

/* What the state machine does to the world. Every call is made from inside
 * a node_train_* function; none may call back into the module. */
struct node_train_env
{
    void *arg;     /* of the model manager's callbacks */
    void *net_arg; /* of send and propose */
    /* Sends message @data (borrowed) of @type (TP_MSG_TRAIN or
     * TP_MSG_WINDOW) to @peer. Best effort; returns SM_OK or why not. */
    int (*send)(void *arg,
                const char *peer,
                int type,
                const void *data,
                size_t len);
    /* Proposes @cmd (borrowed) to the log; best effort. */
    void (*propose)(void *arg, const struct cons_cmd *cmd);
    /* Fills the range, count and digest of a round over the history:
     * SM_OK or SM_EAGAIN (too few windows). */
    int (*round_windows)(void *arg, struct node_train_spec *spec);
    /* 1 when the history holds enough windows newer than the model in
     * use for a round (the model manager's training policy). */
    int (*round_due)(void *arg);
    /* Lists the nodes of the CBN built from the windows of @spec (the
     * leader's own), up to @cap names into @names; stores their number in
     * @n. SM_OK, SM_ENOTFOUND (the windows changed), SM_ENOMEM. */
    int (*round_nodes)(void *arg,
                       const struct node_train_spec *spec,
                       char (*names)[CONS_NAME_MAX + 1],
                       size_t cap,
                       size_t *n);
    /* Starts training @n nodes (borrowed) of @spec; the result comes
     * through node_train_trained() with @job. SM_OK or why it cannot
     * start. */
    int (*train)(void *arg,
                 uint64_t job,
                 const struct node_train_spec *spec,
                 const char *const *nodes,
                 size_t n);
    /* Starts installing the model of @spec from @n shards (borrowed; the
     * callee copies them); the outcome comes through node_train_installed().
     * @cbn is the digest of the CBN the log binds the model to (all zero:
     * not bound): the callee refuses, with SM_ECONFLICT, to assemble the
     * model with a CBN of another digest. SM_OK or why it cannot start. */
    int (*install)(void *arg,
                   const struct node_train_spec *spec,
                   const struct cons_digest *cbn,
                   const uint8_t *const *blobs,
                   const size_t *lens,
                   size_t n);
    /* The version of the model in use here (0: none). */
    uint64_t (*model_version)(void *arg);
    /* Calls @cb for every window of the history ending in (@from, @to]
     * with its encoding (borrowed), oldest first; @cb returns non-zero to
     * stop. */
    void (*each_window)(void *arg,
                        uint64_t from_ns,
                        uint64_t to_ns,
                        int (*cb)(void *cb_arg, const uint8_t *w, size_t len),
                        void *cb_arg);
    /* Adds a window encoding received from a peer to the history and
     * stores its end in @end_ns: SM_OK (also when it was held already),
     * or why it cannot be read or kept (it is then not acknowledged, and
     * the sender sends it again). */
    int (*add_window)(void *arg,
                      const uint8_t *w,
                      size_t len,
                      uint64_t *end_ns);
};

/* The mesh as the leader sees it at a tick (all borrowed for the call). */
struct node_train_view
{
    const char *self;
    const char *leader; /* "" unknown */
    int is_leader;      /* and caught up */
    size_t n_members;
    const char *const *members; /* ids, self included */
    const enum cons_health *health;
    size_t n_place;
    const struct cons_place_entry *place; /* owner/replica raft ids */
    const char *const *place_owner;       /* ids of the entries */
    const char *const *place_replica;     /* "" none */
    struct cons_versions versions;        /* committed */
    size_t n_shards;
    const struct cons_shard_digest *shards; /* of the committed model */
};

/* Timeouts (ms of the clock given to node_train_tick). */
struct node_train_config
{
    uint64_t answer_ms; /* an owner's training must answer; 0 -> 600000 */
    uint64_t retry_ms;  /* re-ask after a FAIL, re-propose; 0 -> 2000 */
    uint64_t fetch_ms;  /* a missing committed model is asked for; 0 ->
                           5000 */
    size_t catchup_max; /* bytes of windows per catch-up; 0 -> 64 MiB */
};

/* Counters for /metrics and the benchmarks. */
struct node_train_stats
{
    uint64_t rounds_started, rounds_committed;
    uint64_t shards_trained, shards_received, shards_reassigned;
    uint64_t installs, install_failures;
    uint64_t windows_sent, windows_received, windows_caught_up;
    uint64_t windows_resent, windows_given_up;
    size_t windows_unacked;              /* sent, not yet acknowledged */
    uint64_t bytes_sent, bytes_received; /* TRAIN and WINDOW bodies */
    uint64_t round_ms;                   /* last committed round, leader */
    uint64_t round_version;              /* active round (0: none) */
    size_t round_pending;                /* its nodes without a shard */
};

struct node_train;

/* Creates the state machine with copies of @config (NULL: defaults) and
 * @env. Returns SM_OK, SM_ENOMEM. */
int node_train_new(const struct node_train_config *config,
                   const struct node_train_env *env,
                   struct node_train **out);

/* Frees @t and whatever it holds; NULL is a no-op. A training or an install
 * it started may still report; the caller drops those reports. */
void node_train_free(struct node_train *t);

/* Advances the state machine to @now_ms with @view: leads a round when
 * this peer leads, fetches or installs a committed model it lacks. */
void node_train_tick(struct node_train *t,
                     const struct node_train_view *view,
                     uint64_t now_ms);

/* Takes a message of @type from the authenticated peer @peer (@data
 * borrowed). A malformed message is counted and dropped. */
void node_train_recv(struct node_train *t,
                     const char *peer,
                     int type,
                     const void *data,
                     size_t len);

/* Sends a window this peer closed (@w, encoded, borrowed; it ends at
 * @end_ns) to every other member of the last view. Each receiver
 * acknowledges it; until then it is sent again every retry period (read
 * back through env->each_window), to at most 4096 windows waiting in all:
 * beyond, the oldest are given up (counted in windows_given_up; a round's
 * catch-up still brings them to an owner that needs them). */
void node_train_window(struct node_train *t,
                       const uint8_t *w,
                       size_t len,
                       uint64_t end_ns);

/* Reports the outcome of env->train(@job). */
void node_train_trained(struct node_train *t,
                        uint64_t job,
                        const struct node_train_result *r);

/* Reports the outcome of env->install(): @version installed (SM_OK) or
 * @status with @errmsg (counted in install_failures; SM_ECONFLICT: the
 * model's CBN is not the one the log binds it to). */
void node_train_installed(struct node_train *t,
                          uint64_t version,
                          int status,
                          const char *errmsg);

/* Asks for the next model version now (`sagemesh train`): the leader
 * starts a round for it at its next tick, when no round runs and its model
 * is the committed one, even if none is due; a round already running
 * counts. A follower sends the request to the leader, and again every
 * retry period to whoever leads, until the log has that version, so a
 * leader failover does not lose it. Returns SM_OK, or SM_ENOTLEADER (no
 * leader known yet). */
int node_train_request(struct node_train *t);

/* Fills @out. */
void node_train_stats(const struct node_train *t, struct node_train_stats *out);

/* Message bodies, exposed for the fuzz target: decodes @len bytes of a
 * TP_MSG_TRAIN body and returns SM_OK or SM_EMALFORMED without keeping
 * anything. */
int node_train_check_message(const void *data, size_t len);

#endif /* SM_NODE_MESH_TRAIN_H */
