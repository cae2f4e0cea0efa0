/* consensus: the Raft log and the replicated state machine of the mesh. */
#ifndef SM_CONSENSUS_H
#define SM_CONSENSUS_H

#include "base/version.h"

/* Reports the libraries consensus/ links (canonical raft with its lz4
 * compression) to @cb, once each, synchronously.
 * raft 0.15 has no run-time version call, so its version is the one the
 * binary was built against. */
void cons_libraries(sm_libver_cb cb, void *arg);

/* ---- Commands and the replicated state machine (consensus/fsm.c) -------- */

#include <stddef.h>
#include <stdint.h>

/* Every change to the mesh's shared state is a command in the Raft log. A
 * command is encoded in a small versioned binary format of our own (byte 0:
 * CONS_CMD_VERSION, byte 1: the type, then fixed-width little-endian
 * integers and length-prefixed strings), so decoding needs no general
 * purpose parser, allocates at most a few times the input's size, and
 * rejects anything malformed, oversized or followed by trailing bytes.
 *
 * The state machine (struct cons_fsm) applies commands in log order on every
 * peer. Applying is deterministic and total: it only copies values (no
 * floating point, no clock, no randomness), a command that fails validation
 * is applied as a counted no-op, and commands carrying an id are idempotent,
 * because a proposal whose leader died has an unknown outcome and is simply
 * proposed again.
 *
 * Retention (CONS_CMD_RETAIN) bounds the diagnoses and actions held. It
 * drops the oldest diagnoses (lowest seq) until at most max_diagnoses
 * remain, and the oldest actions (decision order) in a final state
 * (verified, rolled back, failed) until at most max_actions remain; an open
 * action (pending, approved, applied) is never dropped, even if more than
 * max_actions then remain. It applies as CONS_APPLY_OK when it dropped
 * something, else CONS_APPLY_DUPLICATE. Dropped ids are not remembered.
 * So that a proposer's retry of a dropped record does not bring it back,
 * the state keeps two watermarks instead: the newest time_ms of a dropped
 * diagnosis and the newest decided_ms of a dropped action. Once something
 * was dropped, a new diagnosis (or decision) whose time_ms is at or before
 * its watermark applies as CONS_APPLY_STALE. The rule relies on proposers'
 * clocks being roughly in step: a record stamped that far in the past is
 * taken for a retry. Dropping a diagnosis does not drop its actions; a
 * decision naming a dropped diagnosis applies as CONS_APPLY_BAD (like any
 * unknown diagnosis) and a state change of a dropped action as
 * CONS_APPLY_BAD (like any unknown action). Every peer must run a version
 * that knows RETAIN before a leader proposes it: an older peer applies it
 * as a bad no-op and would keep what the others dropped.
 *
 * A model names the CBN it was trained on (CONS_CMD_MODEL_COMMIT) by
 * version and by digest. The version alone is not enough: a leader
 * deposed without knowing it may propose its CBN under a version number
 * another leader has committed with another CBN (only the first applies),
 * and its MODEL_COMMIT would then pair its model with the other CBN. The
 * state keeps the digests of the last CONS_CBN_KEPT committed CBN versions.
 * A MODEL_COMMIT whose cbn_digest is not all zero applies only when its
 * cbn_version is one of them and the digests are equal; another digest,
 * or a version in that range that was never committed, applies as
 * CONS_APPLY_BAD, and a version older than every one kept as
 * CONS_APPLY_STALE (it cannot be checked any more). A leader names the
 * newest CBN it has seen or the one it commits just before its model, so
 * only other leaders' CBN commits landing in between make the version an
 * older one; a few kept versions cover that. An all-zero cbn_digest (every
 * MODEL_COMMIT written before the digest existed) binds nothing: the model
 * applies by version as it always did. Every peer must run a version that
 * knows the digest before a leader proposes one: an older peer refuses the
 * longer command as malformed (a bad no-op) and keeps its previous model
 * version. */

struct raft_fsm; /* <raft.h>; only consensus/ includes it */
struct raft_io;  /* <raft.h> */

/* Version byte of encoded commands. Adding a command type does not change
 * it: entries already in a log keep decoding as they did. Nor did adding
 * cbn_digest to MODEL_COMMIT: it is written after the shard list, and a
 * MODEL_COMMIT that ends right after its list (the layout before) decodes
 * with an all-zero cbn_digest. Encoding always writes it. */
#define CONS_CMD_VERSION 1

/* Version byte of snapshots (cons_fsm_snapshot). Version 2 added the
 * retention watermarks and totals, version 3 the digests of the older
 * committed CBN versions and the committed model's cbn_digest; restore
 * still reads versions 1 (no retention has happened then) and 2 (only the
 * newest CBN's digest is known, the model is not bound), so snapshots of
 * older peers load. A peer restored from one of those knows fewer CBN
 * digests than a peer that applied the same entries: the two would only
 * disagree on a bound model naming a CBN older than the snapshot's
 * newest, which a leader proposes only from a view older than that
 * snapshot, and bound models are proposed only once every peer runs this
 * version. */
#define CONS_SNAPSHOT_VERSION 3

/* Committed CBN versions whose digests the state keeps, the newest
 * included (see the model binding above). */
#define CONS_CBN_KEPT 8

/* Limits checked by encode and decode (bytes unless noted, excluding NUL). */
#define CONS_CMD_MAX     (256u * 1024u) /* one encoded command */
#define CONS_ID_MAX      64u            /* diagnosis and action ids */
#define CONS_NAME_MAX    128u           /* service, kind, address */
#define CONS_ACK_MAX     256u           /* an agent's acknowledgement */
#define CONS_JSON_MAX    (128u * 1024u) /* a diagnosis record */
#define CONS_LIST_MAX    256u           /* placement entries, model shards */
#define CONS_DIGEST_SIZE 32u            /* e.g. a SHA-256 of a blob */

enum cons_cmd_type {
    CONS_CMD_MEMBER_SET = 1, /* add a member or change its role/health */
    CONS_CMD_MEMBER_REMOVE,  /* forget a member */
    CONS_CMD_CBN_COMMIT,     /* a new CBN version (digest and size) */
    CONS_CMD_PLACEMENT_SET,  /* the whole shard placement, by epoch */
    CONS_CMD_MODEL_COMMIT,   /* a trained model version */
    CONS_CMD_DIAGNOSIS,      /* a diagnosis record (JSON text) */
    CONS_CMD_ACTION_DECIDE,  /* an actuation decision, state pending */
    CONS_CMD_ACTION_STATE,   /* an actuation moves on, with the ack */
    CONS_CMD_RETAIN,         /* drop the oldest diagnoses and final actions */
    CONS_CMD__COUNT
};

/* Roles follow raft's: voters form the quorum, standbys replicate and can be
 * promoted at once, spares only hold a place in the configuration. */
enum cons_role { CONS_ROLE_VOTER, CONS_ROLE_STANDBY, CONS_ROLE_SPARE };

/* Health of a member as last seen by the leader. */
enum cons_health { CONS_HEALTH_UP, CONS_HEALTH_SUSPECT, CONS_HEALTH_DOWN };

/* Life of an actuation. States only move forward (by rank: pending <
 * approved < applied < verified < rolled back = failed); a state change that
 * would go back or sideways is a counted no-op, so a replayed "applied"
 * never reopens a verified action. */
enum cons_action_state {
    CONS_ACT_PENDING,
    CONS_ACT_APPROVED,
    CONS_ACT_APPLIED,
    CONS_ACT_VERIFIED,
    CONS_ACT_ROLLED_BACK,
    CONS_ACT_FAILED,
    CONS_ACT__COUNT
};

/* An opaque digest of a blob (the CBN, a model shard). */
struct cons_digest
{
    uint8_t b[CONS_DIGEST_SIZE];
};

/* One service's shard: owner and replica peer ids (replica 0: none). */
struct cons_place_entry
{
    const char *service;
    uint64_t owner;
    uint64_t replica;
};

/* One trained shard of a model version. */
struct cons_shard_digest
{
    const char *service;
    struct cons_digest digest;
};

/* A command. Strings are NUL-terminated and must not contain NUL; ids must
 * be non-empty. Times are milliseconds chosen by the proposer (never read
 * from a clock in apply). Fixed-point values (from/to) are integers in the
 * unit of the actuation kind (e.g. milli-cores), so every peer stores the
 * same bits. To encode, fill the fields with borrowed pointers; a decoded
 * command owns its strings and arrays until cons_cmd_release(). */
struct cons_cmd
{
    enum cons_cmd_type type;
    union
    {
        struct
        {
            uint64_t id; /* non-zero peer (raft) id */
            const char *address;
            enum cons_role role;
            enum cons_health health;
        } member; /* MEMBER_SET; MEMBER_REMOVE uses only id */
        struct
        {
            uint64_t version; /* > 0 */
            uint64_t size;    /* bytes of the CBN blob */
            struct cons_digest digest;
        } cbn;
        struct
        {
            uint64_t epoch; /* > 0; higher epochs replace lower ones */
            size_t n;       /* <= CONS_LIST_MAX, distinct services */
            const struct cons_place_entry *entries;
        } placement;
        struct
        {
            uint64_t version;     /* > 0 */
            uint64_t cbn_version; /* must be committed already */
            size_t n_shards;      /* <= CONS_LIST_MAX */
            const struct cons_shard_digest *shards;
            /* The digest of the CBN the model was trained on: must be the
             * one committed as cbn_version; all zero: not bound (what an
             * entry written before the field existed decodes with). */
            struct cons_digest cbn_digest;
        } model;
        struct
        {
            const char *id;
            uint64_t time_ms;
            const char *json; /* the record, stored verbatim */
        } diagnosis;
        struct
        {
            const char *id;
            const char *diagnosis_id;
            const char *service;
            const char *kind; /* e.g. "cpu_quota" */
            int64_t from;     /* fixed point, unit of the kind */
            int64_t to;
            uint64_t time_ms;
        } decision;
        struct
        {
            const char *id;
            enum cons_action_state state; /* not PENDING */
            const char *ack; /* the agent's acknowledgement, may be "" */
            uint64_t time_ms;
        } action;
        struct
        {
            uint64_t max_diagnoses; /* >= 1: diagnoses kept at most */
            uint64_t max_actions;   /* >= 1: actions kept, see RETAIN */
            uint64_t time_ms;       /* when proposed; for logs only */
        } retain;
    } u;
    void *mem_; /* decoded storage, private */
};

/* Returns the encoded size of @cmd in @size, after checking every field
 * against the limits above. Returns SM_OK, SM_EINVAL (bad type, enum, empty
 * id, NUL in a string, zero version/epoch, a zero retention maximum) or
 * SM_ETOOBIG (a limit). Pure. */
int cons_cmd_encoded_size(const struct cons_cmd *cmd, size_t *size);

/* Encodes @cmd into @buf of @cap bytes and stores the length in @len. The
 * caller owns @buf (any allocator: raft_apply wants raft_malloc). Fails as
 * cons_cmd_encoded_size(), or SM_ERANGE when @cap is too small; @buf is then
 * unspecified. */
int cons_cmd_encode(const struct cons_cmd *cmd,
                    uint8_t *buf,
                    size_t cap,
                    size_t *len);

/* Decodes @len bytes at @buf into @cmd. On SM_OK @cmd owns copies of its
 * strings and arrays (release them with cons_cmd_release); the input can
 * go. Fails with SM_EUNSUPPORTED (other version), SM_ETOOBIG (input or a
 * field over its limit), SM_EMALFORMED (truncated, trailing bytes, bad enum
 * or type, NUL in a string, duplicate placement service, anything encode
 * refuses with SM_EINVAL) or SM_ENOMEM; on
 * failure nothing is allocated. Allocates at most about 4x @len. */
int cons_cmd_decode(const uint8_t *buf, size_t len, struct cons_cmd *cmd);

/* Frees what cons_cmd_decode() allocated; a no-op for a command built by
 * hand. @cmd must not be used afterwards (except to decode again). */
void cons_cmd_release(struct cons_cmd *cmd);

/* Names for logs and JSON ("member_set", "voter", "up", "applied"); never
 * NULL ("unknown" for values outside the enum). */
const char *cons_cmd_type_name(enum cons_cmd_type type);
const char *cons_role_name(enum cons_role role);
const char *cons_health_name(enum cons_health health);
const char *cons_action_state_name(enum cons_action_state state);

/* What applying one command did. */
enum cons_apply_result {
    CONS_APPLY_OK,        /* the state changed */
    CONS_APPLY_DUPLICATE, /* already present or identical: ignored */
    CONS_APPLY_STALE,     /* older version/epoch or a backward state */
    CONS_APPLY_BAD,       /* malformed or refers to unknown things */
};

/* Counters since creation; they are part of the replicated state (carried
 * in snapshots), so every peer reports the same figures. */
struct cons_fsm_stats
{
    uint64_t applied;   /* CONS_APPLY_OK */
    uint64_t duplicate; /* CONS_APPLY_DUPLICATE */
    uint64_t stale;     /* CONS_APPLY_STALE */
    uint64_t bad;       /* CONS_APPLY_BAD */
};

struct cons_fsm;

/* Creates an empty state machine in @fsm (owned by the caller, freed with
 * cons_fsm_free). Returns SM_OK or SM_ENOMEM. */
int cons_fsm_new(struct cons_fsm **fsm);

/* Frees @fsm and everything it holds. NULL is a no-op. */
void cons_fsm_free(struct cons_fsm *fsm);

/* Applies the encoded command at @buf (borrowed) and reports the outcome
 * in @result (may be NULL). Returns SM_OK, also for a bad command (a counted
 * no-op); only SM_ENOMEM is returned as an error, with the state untouched,
 * so that raft retries the same entry later instead of diverging. */
int cons_fsm_apply(struct cons_fsm *fsm,
                   const uint8_t *buf,
                   size_t len,
                   enum cons_apply_result *result);

/* Serialises the whole state (snapshot format CONS_SNAPSHOT_VERSION) into a
 * new buffer allocated with @alloc (sm_malloc when NULL; raft_malloc for
 * raft snapshots), stored in @buf/@len; the caller owns it. Equal states
 * give equal bytes. Returns SM_OK or SM_ENOMEM. */
int cons_fsm_snapshot(const struct cons_fsm *fsm,
                      void *(*alloc)(size_t size),
                      uint8_t **buf,
                      size_t *len);

/* Replaces the state of @fsm with the snapshot at @buf (borrowed), of
 * format version 1 (before retention: nothing dropped), 2 (before the model
 * binding: only the newest CBN digest kept, the model not bound) or
 * CONS_SNAPSHOT_VERSION. On error (SM_EUNSUPPORTED for another version,
 * SM_EMALFORMED, SM_ENOMEM) @fsm is unchanged. */
int cons_fsm_restore(struct cons_fsm *fsm, const uint8_t *buf, size_t len);

/* Returns the raft 0.15 state machine (version 2) backed by @fsm, owned by
 * @fsm. raft's apply, snapshot and restore run on raft's loop; snapshot
 * buffers are raft_malloc'ed (raft frees them) and restore raft_free()s its
 * buffer on success, as raft 0.15 requires. */
struct raft_fsm *cons_fsm_raft(struct cons_fsm *fsm);

/* Copies the counters of @fsm into @stats. */
void cons_fsm_stats(const struct cons_fsm *fsm, struct cons_fsm_stats *stats);

/* How much the state holds and what retention dropped (see
 * CONS_CMD_RETAIN). The totals and watermarks are replicated (carried in
 * snapshots); the sizes follow from the state, so every peer reports the
 * same figures. */
struct cons_fsm_counts
{
    size_t diagnoses;              /* diagnoses held */
    size_t actions;                /* actions held, any state */
    size_t actions_open;           /* of those, pending/approved/applied */
    uint64_t diagnoses_dropped;    /* diagnoses dropped by retention */
    uint64_t actions_dropped;      /* actions dropped by retention */
    uint64_t diagnoses_dropped_ms; /* newest time_ms dropped (0: none) */
    uint64_t actions_dropped_ms;   /* newest decided_ms dropped (0: none) */
};

/* Fills @out with the counts of @fsm. Constant time: never fails, never
 * allocates; the leader may call it on every tick to decide whether to
 * propose CONS_CMD_RETAIN. */
void cons_fsm_counts(const struct cons_fsm *fsm, struct cons_fsm_counts *out);

/* The queries below return views borrowed from @fsm: valid until the next
 * apply or restore on it. They never fail and never allocate. */

/* A member as recorded in the log. */
struct cons_member
{
    uint64_t id;
    const char *address;
    enum cons_role role;
    enum cons_health health;
};

/* Copies up to @cap members (by increasing id) to @out and returns how many
 * members there are in total. */
size_t cons_fsm_members(const struct cons_fsm *fsm,
                        struct cons_member *out,
                        size_t cap);

/* A recorded diagnosis; seq is its position in apply order (from 1). */
struct cons_diagnosis
{
    const char *id;
    uint64_t time_ms;
    const char *json;
    uint64_t seq;
};

/* Copies the newest @limit diagnoses, newest (highest seq) first, to @out
 * and returns how many it copied. Every peer returns the same list whoever
 * the leader is. */
size_t cons_fsm_diagnoses(const struct cons_fsm *fsm,
                          struct cons_diagnosis *out,
                          size_t limit);

/* Looks a diagnosis up by @id: SM_OK (filled @out) or SM_ENOTFOUND. */
int cons_fsm_diagnosis_get(const struct cons_fsm *fsm,
                           const char *id,
                           struct cons_diagnosis *out);

/* An actuation decision and its current state. */
struct cons_action
{
    const char *id;
    const char *diagnosis_id;
    const char *service;
    const char *kind;
    int64_t from;
    int64_t to;
    enum cons_action_state state;
    const char *ack; /* last acknowledgement, "" before any */
    uint64_t decided_ms;
    uint64_t updated_ms;
};

/* Returns 1 when an action in state @now has got at least as far as
 * @target (a state change that would not raise the rank is refused). */
int cons_action_state_reached(enum cons_action_state now,
                              enum cons_action_state target);

/* Looks an action up by @id: SM_OK (filled @out) or SM_ENOTFOUND. */
int cons_fsm_action_get(const struct cons_fsm *fsm,
                        const char *id,
                        struct cons_action *out);

/* Copies up to @cap actions in state @state (CONS_ACT__COUNT: any state),
 * in decision order, to @out and returns how many match in total. */
size_t cons_fsm_actions(const struct cons_fsm *fsm,
                        enum cons_action_state state,
                        struct cons_action *out,
                        size_t cap);

/* Committed versions: CBN and model (0 when none). */
struct cons_versions
{
    uint64_t cbn_version;
    uint64_t cbn_size;
    struct cons_digest cbn_digest;
    uint64_t model_version;
    uint64_t model_cbn_version;
    struct cons_digest model_cbn_digest; /* all zero: model not bound */
    size_t model_shards;
};

/* Fills @out with the committed versions. */
void cons_fsm_versions(const struct cons_fsm *fsm, struct cons_versions *out);

/* Looks up the digest of committed CBN version @version among the
 * CONS_CBN_KEPT newest: SM_OK (filled @out) or SM_ENOTFOUND (never
 * committed, or older than every one kept). */
int cons_fsm_cbn_digest(const struct cons_fsm *fsm,
                        uint64_t version,
                        struct cons_digest *out);

/* Copies up to @cap shard digests of the current model (by service name)
 * to @out and returns how many there are. */
size_t cons_fsm_model_shards(const struct cons_fsm *fsm,
                             struct cons_shard_digest *out,
                             size_t cap);

/* Copies up to @cap placement entries (by service name) to @out, stores the
 * epoch in @epoch (may be NULL; 0: never set) and returns how many entries
 * there are. */
size_t cons_fsm_placement(const struct cons_fsm *fsm,
                          uint64_t *epoch,
                          struct cons_place_entry *out,
                          size_t cap);

/* Looks up the placement of @service: SM_OK (filled @out) or SM_ENOTFOUND. */
int cons_fsm_placement_get(const struct cons_fsm *fsm,
                           const char *service,
                           struct cons_place_entry *out);

/* ---- Shard placement (consensus/placement.c) ----------------------------- */

/* Which peer owns each service's CVAE shard, and which peer keeps its
 * replica. The computation is a pure function of its inputs: every peer
 * (and every test) gets the same answer from the same member list, the same
 * telemetry counts and the same previous placement, whatever the order of
 * the input arrays. The leader runs it and commits the result with
 * CONS_CMD_PLACEMENT_SET.
 *
 * Rules, in order of priority:
 *  1. only healthy (CONS_HEALTH_UP) peers hold shards, of any role;
 *  2. a dead owner's replica becomes the owner (it has the data);
 *  3. owners are balanced: no peer owns more than ceil(services / peers),
 *     and no peer holds more than ceil(2 * services / peers) shards in all;
 *  4. within that, assignments of the previous placement are kept (minimal
 *     movement: a joining peer takes only the excess of the others);
 *  5. a new owner is preferably a peer where the service's telemetry
 *     arrives (the highest count), then the least loaded peer;
 *  6. the replica is on another peer whenever there are two healthy peers.
 * Ties are broken by a hash of (service, peer id), then by peer id. */

/* A peer as placement sees it. */
struct cons_place_peer
{
    uint64_t id; /* non-zero, distinct */
    enum cons_role role;
    enum cons_health health;
};

/* How many spans of a service a peer received (over any window). */
struct cons_place_seen
{
    uint64_t peer;
    uint64_t count;
};

/* A service to place and where its telemetry arrives. */
struct cons_place_service
{
    const char *name; /* distinct, non-empty */
    const struct cons_place_seen *seen;
    size_t n_seen;
};

/* Computes the placement of @n_services services (<= CONS_LIST_MAX) into
 * @out (caller-allocated, @n_services entries; out[i] places services[i] and
 * borrows its name). @prev (may be NULL when @n_prev is 0) is the previous
 * placement; entries for unknown services or peers are ignored. Returns
 * SM_OK, SM_EINVAL (duplicate or empty names, duplicate or zero peer ids,
 * too many services), SM_ENOTFOUND (no healthy peer: @out then has owner 0)
 * or SM_ENOMEM, with a message in @errmsg (SM_ERRMSG_SIZE, may be NULL). */
int cons_place_compute(const struct cons_place_peer *peers,
                       size_t n_peers,
                       const struct cons_place_service *services,
                       size_t n_services,
                       const struct cons_place_entry *prev,
                       size_t n_prev,
                       struct cons_place_entry *out,
                       char *errmsg);

/* ---- The raft node: raft 0.15 v0 API wrapper (consensus/raft_node.c) ----- */

/* A raft server and its state machine. The node owns a struct raft and a
 * cons_fsm and borrows the struct raft_io the caller passes in: raft_uv with
 * any raft_uv_transport in the peer, raft's in-memory fixture in tests. All
 * functions and callbacks run on the loop that drives that raft_io; none is
 * thread-safe.
 *
 * raft 0.15 has no callback for leadership changes, so the peer calls
 * cons_node_tick() periodically (about every heartbeat) with the time and
 * its view of the members' health. On becoming leader the node appends a
 * barrier and reports itself ready only once every earlier entry is
 * applied; a ready leader also keeps the membership to policy:
 *  - new members join as spares (cons_node_add), become standbys, and are
 *    promoted to voters while there are fewer healthy voters than wanted
 *    (3 or 5 by configuration, fewer when fewer members are healthy, and
 *    always an odd number);
 *  - a voter not seen for lost_after_ms is replaced: a healthy standby is
 *    promoted, then the lost voter is demoted to standby; surplus voters
 *    (an even count, or fewer members left) are demoted, never below 3;
 *  - the log's member records (CONS_CMD_MEMBER_SET) follow raft's
 *    configuration and the health view, so every peer can list them.
 * One membership change is in flight at a time, as raft requires. */

/* Settings of a node; cons_node_config_init() fills the defaults. */
struct cons_node_config
{
    uint64_t id;                   /* this server's raft id, non-zero */
    const char *address;           /* this server's address (copied) */
    unsigned election_timeout_ms;  /* default 1000; same on every node */
    unsigned heartbeat_timeout_ms; /* default election / 10 */
    unsigned snapshot_threshold;   /* entries between snapshots; 0: 1024 */
    unsigned snapshot_trailing;    /* entries kept after one; 0: 2048 */
    unsigned voters;               /* wanted voters: 3 or 5 (default 3) */
    uint64_t lost_after_ms;        /* unseen this long: lost (3 * election) */
    int pre_vote;                  /* non-zero: raft's pre-vote (default 1) */
};

/* Fills @cfg with the defaults (id 0 and address NULL must be set). */
void cons_node_config_init(struct cons_node_config *cfg);

/* A server in raft's configuration. */
struct cons_peer
{
    uint64_t id;
    const char *address;
    enum cons_role role;
};

/* Raft's view of this node. */
enum cons_state {
    CONS_STATE_UNAVAILABLE,
    CONS_STATE_FOLLOWER,
    CONS_STATE_CANDIDATE,
    CONS_STATE_LEADER
};

struct cons_node;

/* Creates a node on @io (borrowed; it must outlive the node and must not be
 * started) and initialises raft on it. Returns SM_OK with the node in
 * @node, SM_EINVAL (bad configuration), SM_ENOMEM, or SM_EIO (raft_init
 * failed; raft's message is in @errmsg, SM_ERRMSG_SIZE, may be NULL). */
int cons_node_new(const struct cons_node_config *cfg,
                  struct raft_io *io,
                  struct cons_node **node,
                  char *errmsg);

/* Writes the initial configuration @peers (@n of them) to a fresh store,
 * before cons_node_start(). Every seed node must bootstrap with the same
 * list in the same order. Returns SM_OK, SM_EEXIST (the store already has
 * state: just start), SM_EINVAL or SM_EIO. */
int cons_node_bootstrap(struct cons_node *node,
                        const struct cons_peer *peers,
                        size_t n,
                        char *errmsg);

/* Starts raft: loads the store (restoring the latest snapshot into the
 * state machine) and begins ticking. A node that neither bootstrapped nor
 * has state waits to be added by the leader. Returns SM_OK or SM_EIO. */
int cons_node_start(struct cons_node *node, char *errmsg);

/* Called once a node is closed; the node's memory is already freed. */
typedef void (*cons_node_close_cb)(void *arg);

/* Stops raft and frees the node once raft has closed (at once with the
 * fixture, after pending I/O with raft_uv), then calls @cb (may be NULL).
 * Pending proposals and changes complete first with SM_ECLOSED or
 * SM_EAGAIN. @io is no longer used after @cb. */
void cons_node_close(struct cons_node *node, cons_node_close_cb cb, void *arg);

/* Completion of a proposal: SM_OK with the apply @result; SM_EAGAIN when
 * leadership was lost and the outcome is unknown (the command may or may
 * not be in the log: propose it again, commands are idempotent); or
 * SM_ECLOSED / SM_EIO. */
typedef void (*cons_propose_cb)(void *arg,
                                int status,
                                enum cons_apply_result result);

/* Proposes @cmd (encoded at once; the command is borrowed for the call
 * only). Returns SM_OK and later calls @cb exactly once (@cb may be NULL),
 * or fails without calling it: SM_ENOTLEADER, SM_EINVAL/SM_ETOOBIG (the
 * command does not encode), SM_ENOMEM, SM_EIO. */
int cons_node_propose(struct cons_node *node,
                      const struct cons_cmd *cmd,
                      cons_propose_cb cb,
                      void *arg);

/* Completion of a membership change: SM_OK, SM_EAGAIN (leadership lost,
 * outcome unknown) or SM_EIO (raft refused it; see the log). */
typedef void (*cons_change_cb)(void *arg, int status);

/* Adds server @id at @address as a spare (leader only); the leader's ticks
 * then promote it by policy. Returns SM_OK (and later calls @cb, may be
 * NULL), SM_ENOTLEADER, SM_EEXIST (id or address in use), SM_EAGAIN
 * (another change is in flight), SM_EINVAL or SM_ENOMEM. */
int cons_node_add(struct cons_node *node,
                  uint64_t id,
                  const char *address,
                  cons_change_cb cb,
                  void *arg);

/* Removes server @id from the configuration (leader only). Same results
 * as cons_node_add, plus SM_ENOTFOUND for an unknown id. */
int cons_node_remove(struct cons_node *node,
                     uint64_t id,
                     cons_change_cb cb,
                     void *arg);

/* When a member was last heard from (by any means the peer has). */
struct cons_seen
{
    uint64_t id;
    uint64_t last_seen_ms;
};

/* Drives the parts of the node raft 0.15 leaves to its user: notices
 * leadership changes (appending a barrier on becoming leader) and, on a
 * ready leader, starts at most one membership change or member record by
 * the policy above. @now_ms is the caller's clock; @seen (@n_seen entries)
 * is its health view, where a server missing from it counts as lost.
 * Returns SM_OK, or the error of a change it could not start (SM_ENOMEM,
 * SM_EIO); a later tick retries. */
int cons_node_tick(struct cons_node *node,
                   uint64_t now_ms,
                   const struct cons_seen *seen,
                   size_t n_seen);

/* Raft's state, this node's id, the current term. */
enum cons_state cons_node_state(const struct cons_node *node);
uint64_t cons_node_id(const struct cons_node *node);
uint64_t cons_node_term(const struct cons_node *node);

/* The leader's id as this node knows it (0: none) and its address in
 * @address (may be NULL; borrowed until the next raft event). */
uint64_t cons_node_leader(const struct cons_node *node, const char **address);

/* Non-zero when this node is the leader and its barrier is applied, so its
 * state machine reflects every entry of earlier terms. */
int cons_node_ready(const struct cons_node *node);

/* The replicated state (queries in the FSM section), owned by the node. */
const struct cons_fsm *cons_node_fsm(const struct cons_node *node);

/* Copies up to @cap servers of raft's current configuration to @out (ids
 * and addresses borrowed until the next raft event) and returns their
 * number. */
size_t cons_node_members(const struct cons_node *node,
                         struct cons_peer *out,
                         size_t cap);

/* Counters of what the node did. */
struct cons_node_stats
{
    uint64_t last_index;     /* raft index of the last entry in the log */
    uint64_t last_applied;   /* raft index last applied here */
    uint64_t leader_terms;   /* terms in which this node became leader */
    uint64_t promotions;     /* role changes upward started as leader */
    uint64_t demotions;      /* lost voters demoted as leader */
    uint64_t restores;       /* snapshots restored into the FSM */
    uint64_t apply_failures; /* applies refused for lack of memory */
};

/* Fills @stats. */
void cons_node_stats(const struct cons_node *node,
                     struct cons_node_stats *stats);

/* ---- raft over the mesh's messages (consensus/bridge.c, consensus/uv.c) --
 *
 * raft's own TCP transport is plaintext, so the peer gives raft_uv a
 * transport that carries raft's byte streams as messages over the mesh's
 * secure link (see bridge_internal.h for the protocol). The peer supplies
 * the link as a send function and hands every raft message that arrives to
 * cons_uv_recv(). Everything runs on the loop thread. The process must
 * ignore SIGPIPE (raft writes to socket pairs whose other end may close). */

/* Longest peer id, and the longest raft address "ID@tcp://a.b.c.d:port". */
#define CONS_PEER_ID_MAX   63
#define CONS_RAFT_ADDR_MAX (CONS_PEER_ID_MAX + 1 + 64)

/* Returns 1 if the @len bytes at @id are a valid peer id (1..63 bytes of
 * printable ASCII without spaces or '@'), else 0. */
int cons_peer_id_valid(const char *id, size_t len);

/* The raft id of a peer: FNV-1a 64 of its id string, never 0. */
uint64_t cons_peer_raft_id(const char *peer);

/* Sends @len bytes (copied) to @peer: best effort, in order while its
 * session lasts. Returns SM_OK or an error (the bridge then ends the
 * stream, and raft reconnects). */
struct cons_link
{
    void *arg;
    int (*send)(void *arg, const char *peer, const void *data, size_t len);
};

/* Counters of the bridge since it started. */
struct cons_bridge_stats
{
    uint64_t streams_opened;   /* connected or accepted */
    uint64_t streams_closed;   /* of those, ended since */
    uint64_t streams_active;   /* streams that exist now, connecting
                                  included */
    uint64_t connect_timeouts; /* connects that got no OPENED in time */
    uint64_t bytes_sent;       /* raft bytes sent in DATA */
    uint64_t bytes_received;   /* raft bytes received in DATA */
    uint64_t frames_sent;
    uint64_t frames_received;
    uint64_t protocol_errors; /* malformed frames, bad OPEN, sequence gaps,
                                 DATA before OPENED */
    uint64_t unknown_stream;  /* frames for a stream we do not have */
    uint64_t send_failures;   /* the link refused a frame */
    uint64_t overflows;       /* streams ended for buffering too much */
};

struct cons_uv;
struct uv_loop_s;

/* Creates raft_uv storage in @dir (which must exist) with the bridge over
 * @link (copied; its arg must outlive this) for peer @self. Returns SM_OK
 * with @out, SM_EINVAL, SM_ENOMEM, or SM_EIO (raft_uv refused @dir; raft's
 * message is in @errmsg). Pass cons_uv_io() to cons_node_new(). */
int cons_uv_new(struct uv_loop_s *loop,
                const char *dir,
                const struct cons_link *link,
                const char *self,
                struct cons_uv **out,
                char *errmsg);

/* The raft_io to give the raft node (owned by @u). */
struct raft_io *cons_uv_io(struct cons_uv *u);

/* Hands one raft message from the authenticated peer @from to the bridge
 * (hostile bytes are counted and dropped). */
void cons_uv_recv(struct cons_uv *u,
                  const char *from,
                  const void *data,
                  size_t len);

/* Copies the bridge's counters into @out. */
void cons_uv_stats(const struct cons_uv *u, struct cons_bridge_stats *out);

/* Frees @u, then calls @cb (may be NULL) before returning. Call it after
 * the raft node on cons_uv_io(@u) has closed (cons_node_close's callback:
 * raft_close closes the transport itself), or if raft never started. */
void cons_uv_close(struct cons_uv *u, void (*cb)(void *arg), void *arg);

#endif /* SM_CONSENSUS_H */
