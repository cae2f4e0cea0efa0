/* The peer's place in the mesh (node-private): the secure link to the other
 * peers, raft over it, membership (bootstrap, join, policy-driven roles),
 * and the replicated records every peer serves.
 *
 * A peer with --secret-file runs the mesh on --listen-peer:
 *  - with no raft state and no --join it bootstraps a cluster of itself;
 *  - with --join HOST:PORT it asks that peer's id (an unauthenticated
 *    probe), then, over the secure channel, asks it to be added; a
 *    follower answers with the leader, to whom the request is repeated,
 *    every second until this peer appears in raft's configuration;
 *  - with raft state it just starts: its configuration is in the log.
 * A raft server's address is "ID@tcp://HOST:PORT": the id names the peer
 * on the secure link, the rest is where its net listens, so every peer
 * learns every member's address from the log.
 *
 * Diagnoses. Each peer diagnoses the windows it sees; in the mesh each
 * diagnosis is also sent to the leader, which commits it to the log once
 * (the log dedupes by id); a sender retries until the record is in its
 * own copy of the log, so a leader failover loses none. Every peer serves
 * the same list from its log.
 *
 * Runs on the peer's loop thread. */
#ifndef SM_NODE_MESH_H
#define SM_NODE_MESH_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "base/err.h"
#include "consensus/consensus.h"
#include "node/mesh_link_impl.h"
#include "node/mesh_train.h"
#include "node/textbuf.h"
#include "transport/transport.h"

/* What the mesh hands back to the peer, on the loop thread; every
 * callback may be NULL (then that traffic is dropped) and gets @arg. */
struct node_mesh_hooks
{
    void *arg;
    /* Runs an operator's approve (@rollback 0) or rollback of action @id
     * that another peer forwarded here (node_mesh_forward_action). */
    void (*on_action)(void *arg, int rollback, const char *id);
    /* Sweeps across owners (node/mesh_sweep.h): every TP_MSG_SWEEP_REQ and
     * TP_MSG_SWEEP_REP. */
    void (*on_sweep)(void *arg,
                     const char *peer,
                     int type,
                     uint64_t id,
                     const void *data,
                     size_t len);
    /* Every 250 ms while training rounds run: each placed CBN node with the
     * peer that computes it in sweeps, its owner when up, else its replica
     * when up, else "" (here). */
    void (*on_owners)(void *arg,
                      const char *const *names,
                      const char *const *owners,
                      size_t n);
    /* Telemetry between peers (node/mesh_ingest.h): every TP_MSG_SPANS
     * (spans routed to the owner of their traces) and TP_MSG_PARTIAL
     * (window parts, marks and flushes for the merging leader). */
    void (*on_ingest)(void *arg,
                      const char *peer,
                      int type,
                      const void *data,
                      size_t len);
};

struct node_mesh_config
{
    const char *id;             /* this peer's id */
    const char *listen_peer;    /* "HOST:PORT" (numeric IPv4) */
    const char *advertise_peer; /* what others dial; NULL: listen_peer */
    const char *const *join;    /* "HOST:PORT" seeds */
    size_t n_join;
    const char *data_dir; /* raft's state goes to DIR/raft */
    const struct tp_secret *secret;
    unsigned election_ms;     /* default 1000 */
    unsigned heartbeat_ms;    /* default election / 10 */
    unsigned voters;          /* 3 or 5 */
    uint64_t place_settle_ms; /* the first shard placement waits for every
                                 healthy member's report of its telemetry,
                                 at most this long (0: places at once) */
    uint64_t log_keep;        /* diagnoses and finished actions the log keeps
                                 (the leader commits CONS_CMD_RETAIN when it
                                 holds a tenth more); 0 -> 10000 */
    /* The model manager's side of training rounds (mesh_train.h): every
     * callback but send and propose, which the mesh provides. NULL
     * round_windows: this peer takes no part in training rounds. */
    const struct node_train_env *train;
    struct node_train_config train_config;
    struct node_mesh_hooks hooks;
};

/* Diagnoses that may wait for the log at once. */
#define NODE_MESH_OUTBOX_MAX 1000

struct node_mesh;

/* Starts the mesh on @loop. Returns SM_OK with @out, or an error with
 * @errmsg: SM_EINVAL (bad address or id: @out untouched), SM_EIO (the port
 * is taken, raft cannot start on the data directory: the message says
 * why), SM_ENOMEM. After a failure past the id check @out holds the
 * half-started mesh, which the caller must still node_mesh_stop() (its
 * handles close over loop turns). */
int node_mesh_start(uv_loop_t *loop,
                    const struct node_mesh_config *cfg,
                    struct node_mesh **out,
                    char errmsg[SM_ERRMSG_SIZE]);

/* The port the mesh listens on (useful with port 0). */
uint16_t node_mesh_port(const struct node_mesh *m);

/* Stops raft and the net, then calls @cb; @m is freed by then. */
void node_mesh_stop(struct node_mesh *m, void (*cb)(void *arg), void *arg);

/* Non-zero when this peer is the leader and caught up. */
int node_mesh_is_leader(const struct node_mesh *m);

/* Raft's state of this peer: "leader", "follower", "candidate" or
 * "unavailable" (raft not running). A peer that is still joining reports
 * "follower" with no leader; "mesh"."joining" says so. */
const char *node_mesh_role(const struct node_mesh *m);

/* Diagnoses handed to the mesh and not yet seen in the log. */
size_t node_mesh_waiting(const struct node_mesh *m);

/* The mesh's figures for /metrics. */
struct node_mesh_stats
{
    int leader; /* this peer leads (and is caught up) */
    uint64_t term;
    size_t members;
    size_t diagnoses_waiting, actions_waiting;
    uint64_t placements_committed;
    struct node_train_stats train;
    struct node_mesh_link_stats link; /* channel and net counters inside */
    struct cons_bridge_stats raft;    /* raft's streams over the link */
};

/* Sends a message of @type to @peer over the secure link (as
 * node_link_ops.send; @data copied). */
int node_mesh_send(struct node_mesh *m,
                   const char *peer,
                   int type,
                   uint64_t id,
                   const void *data,
                   size_t len);

/* The peer that decided the logged action @id (the "decided_by" of its
 * diagnosis in the log), copied into @peer; "" when the log no longer has
 * the diagnosis (retention dropped it). Returns SM_OK, or SM_ENOTFOUND
 * when the log has no such action or its diagnosis names no peer. */
int node_mesh_action_owner(const struct node_mesh *m,
                           const char *id,
                           char peer[TP_PEER_ID_MAX + 1]);

/* Asks @peer, over the secure link, to approve (@rollback 0) or roll back
 * action @id: approve and rollback act on the deciding peer's agent, so a
 * peer that did not decide forwards them; @peer "" asks every other member
 * (only the decider holds the action). Best effort; returns SM_OK (sent),
 * SM_EINVAL (a bad id) or the link's error. */
int node_mesh_forward_action(struct node_mesh *m,
                             const char *peer,
                             int rollback,
                             const char *id);

/* `sagemesh train`: node_train_request(), then a tick of the rounds at
 * once, so a leader starts the round before this returns. Returns its
 * result, or SM_EINVAL without training rounds. */
int node_mesh_train_request(struct node_mesh *m);

/* The training rounds' state machine, for the peer to report trainings,
 * installs and closed windows to (NULL when the mesh runs no rounds). */
struct node_train *node_mesh_train(struct node_mesh *m);

/* The mesh as this peer sees it now. */
struct node_mesh_view
{
    char self[TP_PEER_ID_MAX + 1];
    char leader[TP_PEER_ID_MAX + 1]; /* "" while none is known */
    int is_leader;                   /* this peer leads and is caught up */
    size_t n_up;
    /* Members the log records as up (the leader records its health
     * view there), by raft id; pointers into @ids. The same on every
     * peer that has applied the same log. */
    const char *up[64];
    char ids[64][TP_PEER_ID_MAX + 1];
};

/* Fills @out (a large struct: keep one around rather than on a small
 * stack). */
void node_mesh_view(const struct node_mesh *m, struct node_mesh_view *out);

/* Fills @out. */
void node_mesh_stats(const struct node_mesh *m, struct node_mesh_stats *out);

/* Appends the mesh part of /v1/status: "leader", "term" and "mesh" (the
 * listen address, raft figures and "members": id, address, role, health),
 * as JSON members without the enclosing braces, starting with a comma. */
void node_mesh_status_json(const struct node_mesh *m, struct node_text *b);

/* Appends {"members":[...]} for GET /v1/members. */
void node_mesh_members_json(const struct node_mesh *m, struct node_text *b);

/* Hands a stored diagnosis to the mesh (copied): it is committed to the log
 * through the leader, retried until it is there. Returns SM_OK or
 * SM_ENOMEM / SM_ETOOBIG. */
int node_mesh_add_diagnosis(struct node_mesh *m,
                            const char *id,
                            uint64_t window_end_ns,
                            const char *json,
                            size_t len);

/* Queues an action's decision (CONS_CMD_ACTION_DECIDE) or state change
 * (CONS_CMD_ACTION_STATE; @cmd borrowed, encoded now) for the log: proposed
 * through the leader and retried, including across a leader failover,
 * until this peer's copy of the log has it; the log keeps each decision
 * once and states only move forward. Returns SM_OK, SM_EINVAL (another
 * command type), SM_EAGAIN (256 waiting), or the encoding's error. */
int node_mesh_add_action(struct node_mesh *m, const struct cons_cmd *cmd);

/* Tells the mesh which services this peer's telemetry names (@n names,
 * copied, with the windows each was seen in). Sent to the leader every few
 * seconds; the leader places every reported service's shard (owner and
 * replica, consensus/ placement rules) on the healthy members and commits
 * the placement when it changes, so it follows joins, leaves and failures.
 * Services past 256 are ignored. */
void node_mesh_set_services(struct node_mesh *m,
                            const char *const *names,
                            const uint64_t *counts,
                            size_t n);

/* Non-zero when the log holds the diagnosis @id. */
int node_mesh_has_diagnosis(const struct node_mesh *m, const char *id);

/* Appends {"diagnoses":[...]} with the @limit newest diagnoses of the log. */
void node_mesh_diagnoses_json(const struct node_mesh *m,
                              size_t limit,
                              struct node_text *b);

/* Adds peer @id listening at @addr ("HOST:PORT"), or removes peer @id
 * (@add 0). On the leader the change starts now: SM_OK; raft refuses a
 * second change in flight (SM_EAGAIN from cons_node_add/remove, retry), an
 * id in use (SM_EEXIST) or unknown (SM_ENOTFOUND). A follower forwards the
 * request to the leader and returns SM_EAGAIN (the caller watches the
 * member list); SM_ENOTLEADER when no leader is known. @leader gets the
 * leader's id ("" if unknown). Removing the leader itself is refused
 * (SM_EINVAL): stop it instead, and a new leader is elected. */
int node_mesh_member_change(struct node_mesh *m,
                            int add,
                            const char *id,
                            const char *addr,
                            char leader[TP_PEER_ID_MAX + 1]);

#endif /* SM_NODE_MESH_H */
