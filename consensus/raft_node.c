/* The raft node: a struct raft, its state machine and the membership policy.
 *
 * raft 0.15 leaves three things to its user, and this file does them:
 *
 * Leadership. There is no callback when a server becomes or stops being
 * leader, so cons_node_tick() compares raft_state() and the term with what
 * it saw last. A new leader appends a barrier; until the barrier is applied
 * the leader's state machine may lag entries of earlier terms, so only then
 * is the node "ready" to coordinate (and to change membership).
 *
 * Membership. raft only offers add (as spare), assign (a role) and remove,
 * one change at a time. The policy on top: healthy spares become standbys
 * (they then replicate the log); while fewer healthy voters than wanted
 * exist, a healthy standby (else spare) is promoted; while there are more
 * voters than wanted (and more than three), a lost voter (else the highest
 * id but ours) is demoted. A lost voter is therefore replaced in two
 * changes: promote, then demote, so the quorum never shrinks on the way.
 *
 * Member records. The log also carries CONS_CMD_MEMBER_SET records, so that
 * any peer can list members with roles and health without asking the
 * leader. The ready leader keeps them in step with raft's configuration and
 * its health view, one proposal at a time.
 *
 * Buffers follow raft's rules: a proposal is encoded into raft_malloc'ed
 * memory that raft owns once raft_apply() returns 0, and each request lives
 * in its own allocation until its callback. */
#include <raft.h>
#include <stdbool.h>
#include <string.h>

#include "base/alloc.h"
#include "base/err.h"
#include "base/log.h"
#include "consensus/consensus.h"
#include "consensus/fsm_internal.h"

struct cons_node
{
    struct raft raft; /* raft.data points back here */
    struct cons_fsm *fsm;
    struct cons_node_config cfg;
    char *address;
    uint64_t leader_term; /* term of our latest barrier, 0: none */
    bool barrier_pending; /* the barrier is in flight */
    bool ready;           /* leader with its barrier applied */
    bool change_busy;     /* a policy change is in flight */
    bool record_busy;     /* a member record proposal is in flight */
    struct raft_barrier barrier;
    struct cons_node_stats stats;
    cons_node_close_cb close_cb;
    void *close_arg;
};

struct propose_req
{
    struct raft_apply req;
    struct cons_node *node;
    cons_propose_cb cb;
    void *arg;
};

struct change_req
{
    struct raft_change req;
    struct cons_node *node;
    cons_change_cb cb;
    void *arg;
    bool policy; /* started by the policy, not by a caller */
};

/* Maps raft's error codes to ours, once, here. */
static int from_raft(int rv)
{
    switch (rv) {
        case 0:
            return SM_OK;
        case RAFT_NOMEM:
            return SM_ENOMEM;
        case RAFT_NOTLEADER:
            return SM_ENOTLEADER;
        case RAFT_LEADERSHIPLOST:
        case RAFT_CANTCHANGE:
            return SM_EAGAIN;
        case RAFT_SHUTDOWN:
            return SM_ECLOSED;
        case RAFT_DUPLICATEID:
        case RAFT_DUPLICATEADDRESS:
            return SM_EEXIST;
        case RAFT_BADID:
        case RAFT_NOTFOUND:
            return SM_ENOTFOUND;
        case RAFT_BADROLE:
        case RAFT_INVALID:
        case RAFT_TOOBIG:
            return SM_EINVAL;
        case RAFT_CANTBOOTSTRAP:
            return SM_EEXIST;
        default:
            return SM_EIO;
    }
}

static int raft_role(enum cons_role role)
{
    switch (role) {
        case CONS_ROLE_VOTER:
            return RAFT_VOTER;
        case CONS_ROLE_STANDBY:
            return RAFT_STANDBY;
        case CONS_ROLE_SPARE:
            return RAFT_SPARE;
    }
    return -1;
}

static enum cons_role cons_role_of(int role)
{
    switch (role) {
        case RAFT_VOTER:
            return CONS_ROLE_VOTER;
        case RAFT_STANDBY:
            return CONS_ROLE_STANDBY;
        default:
            return CONS_ROLE_SPARE;
    }
}

void cons_node_config_init(struct cons_node_config *cfg)
{
    *cfg = (struct cons_node_config){
        .election_timeout_ms = 1000,
        .heartbeat_timeout_ms = 0,
        .voters = 3,
        .pre_vote = 1,
    };
}

static int check_config(const struct cons_node_config *cfg, char *errmsg)
{
    if (cfg->id == 0 || cfg->address == NULL || cfg->address[0] == '\0') {
        sm_errmsg_printf(errmsg, "raft node: id and address are required");
        return SM_EINVAL;
    }
    if (cfg->voters != 3 && cfg->voters != 5) {
        sm_errmsg_printf(errmsg, "raft node: voters must be 3 or 5, not %u",
                         cfg->voters);
        return SM_EINVAL;
    }
    if (cfg->election_timeout_ms < 2 ||
        cfg->heartbeat_timeout_ms >= cfg->election_timeout_ms) {
        sm_errmsg_printf(errmsg,
                         "raft node: heartbeat (%u ms) must be shorter than "
                         "the election timeout (%u ms)",
                         cfg->heartbeat_timeout_ms, cfg->election_timeout_ms);
        return SM_EINVAL;
    }
    return SM_OK;
}

int cons_node_new(const struct cons_node_config *cfg_in,
                  struct raft_io *io,
                  struct cons_node **out,
                  char *errmsg)
{
    char scratch[SM_ERRMSG_SIZE];
    errmsg = errmsg != NULL ? errmsg : scratch;
    int rv = check_config(cfg_in, errmsg);
    if (rv != SM_OK) {
        return rv;
    }
    struct cons_node *n = sm_calloc(1, sizeof *n);
    if (n == NULL) {
        sm_errmsg_printf(errmsg, "raft node: out of memory");
        return SM_ENOMEM;
    }
    n->cfg = *cfg_in;
    if (n->cfg.heartbeat_timeout_ms == 0) {
        unsigned tenth = n->cfg.election_timeout_ms / 10;
        n->cfg.heartbeat_timeout_ms = tenth > 0 ? tenth : 1;
    }
    if (n->cfg.lost_after_ms == 0) {
        n->cfg.lost_after_ms = 3ull * n->cfg.election_timeout_ms;
    }
    n->address = sm_strdup(cfg_in->address);
    n->cfg.address = n->address;
    if (n->address == NULL || cons_fsm_new(&n->fsm) != SM_OK) {
        sm_free(n->address);
        sm_free(n);
        sm_errmsg_printf(errmsg, "raft node: out of memory");
        return SM_ENOMEM;
    }
    rv = raft_init(&n->raft, io, cons_fsm_raft(n->fsm), n->cfg.id, n->address);
    if (rv != 0) {
        sm_errmsg_printf(errmsg, "raft node: raft_init: %s (%d)",
                         raft_errmsg(&n->raft), rv);
        cons_fsm_free(n->fsm);
        sm_free(n->address);
        sm_free(n);
        return SM_EIO;
    }
    n->raft.data = n;
    raft_set_election_timeout(&n->raft, n->cfg.election_timeout_ms);
    raft_set_heartbeat_timeout(&n->raft, n->cfg.heartbeat_timeout_ms);
    raft_set_pre_vote(&n->raft, n->cfg.pre_vote != 0);
    if (n->cfg.snapshot_threshold != 0) {
        raft_set_snapshot_threshold(&n->raft, n->cfg.snapshot_threshold);
    }
    if (n->cfg.snapshot_trailing != 0) {
        raft_set_snapshot_trailing(&n->raft, n->cfg.snapshot_trailing);
    }
    *out = n;
    return SM_OK;
}

int cons_node_bootstrap(struct cons_node *n,
                        const struct cons_peer *peers,
                        size_t count,
                        char *errmsg)
{
    char scratch[SM_ERRMSG_SIZE];
    errmsg = errmsg != NULL ? errmsg : scratch;
    struct raft_configuration conf;
    raft_configuration_init(&conf);
    int rv = 0;
    for (size_t i = 0; i < count && rv == 0; i++) {
        int role = raft_role(peers[i].role);
        rv = role < 0 || peers[i].address == NULL
                 ? RAFT_BADROLE
                 : raft_configuration_add(&conf, peers[i].id, peers[i].address,
                                          role);
    }
    if (rv == 0) {
        rv = raft_bootstrap(&n->raft, &conf);
    }
    raft_configuration_close(&conf);
    if (rv != 0) {
        sm_errmsg_printf(errmsg, "raft node: bootstrap: %s (%d)",
                         raft_strerror(rv), rv);
    }
    return from_raft(rv);
}

int cons_node_start(struct cons_node *n, char *errmsg)
{
    int rv = raft_start(&n->raft);
    if (rv != 0) {
        if (errmsg != NULL) {
            sm_errmsg_printf(errmsg, "raft node: start: %s (%d)",
                             raft_errmsg(&n->raft), rv);
        }
        return SM_EIO;
    }
    return SM_OK;
}

static void raft_closed(struct raft *r)
{
    struct cons_node *n = r->data;
    cons_node_close_cb cb = n->close_cb;
    void *arg = n->close_arg;
    cons_fsm_free(n->fsm);
    sm_free(n->address);
    sm_free(n);
    if (cb != NULL) {
        cb(arg);
    }
}

void cons_node_close(struct cons_node *n, cons_node_close_cb cb, void *arg)
{
    n->close_cb = cb;
    n->close_arg = arg;
    n->ready = false;
    raft_close(&n->raft, raft_closed);
}

/* ---- Proposals ------------------------------------------------------------
 */

static void apply_done(struct raft_apply *req, int status, void *result)
{
    struct propose_req *p = req->data;
    int rv = status == 0 ? SM_OK : from_raft(status);
    /* Anything but success leaves the outcome unknown to the caller. */
    rv = rv == SM_ENOTLEADER ? SM_EAGAIN : rv;
    enum cons_apply_result res =
        status == 0 ? cons__fsm_result(result) : CONS_APPLY_BAD;
    if (p->cb != NULL) {
        p->cb(p->arg, rv, res);
    }
    sm_free(p);
}

int cons_node_propose(struct cons_node *n,
                      const struct cons_cmd *cmd,
                      cons_propose_cb cb,
                      void *arg)
{
    if (raft_state(&n->raft) != RAFT_LEADER) {
        return SM_ENOTLEADER;
    }
    size_t size;
    int rv = cons_cmd_encoded_size(cmd, &size);
    if (rv != SM_OK) {
        return rv;
    }
    /* raft 0.15 pads an entry to 8 bytes on disk but reads an unpadded
     * length back as the end of its batch ("short read" at the next start),
     * so entries are whole multiples of 8 bytes: a 4-byte length, the
     * command, zeros. */
    size_t framed = (CONS_ENTRY_HEADER + size + 7) & ~(size_t)7;
    struct propose_req *p = sm_calloc(1, sizeof *p);
    struct raft_buffer buf = {raft_malloc(framed), framed};
    if (p == NULL || buf.base == NULL) {
        sm_free(p);
        raft_free(buf.base);
        return SM_ENOMEM;
    }
    memset(buf.base, 0, framed);
    uint8_t *b = buf.base;
    b[0] = (uint8_t)size;
    b[1] = (uint8_t)(size >> 8);
    b[2] = (uint8_t)(size >> 16);
    b[3] = (uint8_t)(size >> 24);
    size_t len;
    rv = cons_cmd_encode(cmd, b + CONS_ENTRY_HEADER, size, &len);
    SM_ASSERT(rv == SM_OK && len == size);
    *p = (struct propose_req){.node = n, .cb = cb, .arg = arg};
    p->req.data = p;
    rv = raft_apply(&n->raft, &p->req, &buf, 1, apply_done);
    if (rv != 0) {
        raft_free(buf.base); /* still ours: raft_apply failed */
        sm_free(p);
        return from_raft(rv);
    }
    return SM_OK;
}

/* ---- Membership changes ------------------------------------------------- */

static void change_done(struct raft_change *req, int status)
{
    struct change_req *c = req->data;
    if (c->policy) {
        c->node->change_busy = false;
    }
    if (status != 0) {
        sm_log(SM_LOG_WARN, "consensus", "membership change failed",
               "status=%d err=\"%s\"", status, raft_strerror(status));
    }
    if (c->cb != NULL) {
        c->cb(c->arg, status == 0 ? SM_OK : from_raft(status));
    }
    sm_free(c);
}

static struct change_req *change_new(struct cons_node *n,
                                     cons_change_cb cb,
                                     void *arg,
                                     bool policy)
{
    struct change_req *c = sm_calloc(1, sizeof *c);
    if (c != NULL) {
        *c = (struct change_req){
            .node = n, .cb = cb, .arg = arg, .policy = policy};
        c->req.data = c;
    }
    return c;
}

/* Finishes starting a change: on failure the request is freed and the
 * callback never runs. */
static int change_started(struct change_req *c, int rv)
{
    if (rv != 0) {
        sm_free(c);
        return from_raft(rv);
    }
    if (c->policy) {
        c->node->change_busy = true;
    }
    return SM_OK;
}

int cons_node_add(struct cons_node *n,
                  uint64_t id,
                  const char *address,
                  cons_change_cb cb,
                  void *arg)
{
    if (id == 0 || address == NULL || address[0] == '\0') {
        return SM_EINVAL;
    }
    struct change_req *c = change_new(n, cb, arg, false);
    if (c == NULL) {
        return SM_ENOMEM;
    }
    return change_started(
        c, raft_add(&n->raft, &c->req, id, address, change_done));
}

int cons_node_remove(struct cons_node *n,
                     uint64_t id,
                     cons_change_cb cb,
                     void *arg)
{
    struct change_req *c = change_new(n, cb, arg, false);
    if (c == NULL) {
        return SM_ENOMEM;
    }
    return change_started(c, raft_remove(&n->raft, &c->req, id, change_done));
}

static int assign(struct cons_node *n, uint64_t id, int role)
{
    struct change_req *c = change_new(n, NULL, NULL, true);
    if (c == NULL) {
        return SM_ENOMEM;
    }
    sm_log(SM_LOG_INFO, "consensus", "changing a member's role",
           "id=%llu role=%s", (unsigned long long)id,
           cons_role_name(cons_role_of(role)));
    return change_started(
        c, raft_assign(&n->raft, &c->req, id, role, change_done));
}

/* ---- Leadership ---------------------------------------------------------- */

static void barrier_done(struct raft_barrier *req, int status)
{
    struct cons_node *n = req->data;
    n->barrier_pending = false;
    if (status == 0 && raft_state(&n->raft) == RAFT_LEADER &&
        n->raft.current_term == n->leader_term) {
        n->ready = true;
        sm_log(SM_LOG_INFO, "consensus", "leader ready", "id=%llu term=%llu",
               (unsigned long long)n->cfg.id,
               (unsigned long long)n->leader_term);
    } else if (status != RAFT_LEADERSHIPLOST && status != RAFT_SHUTDOWN) {
        n->leader_term = 0; /* retry at the next tick */
    }
}

/* Notices leadership changes; on a new term as leader, appends the
 * barrier. */
static int track_leadership(struct cons_node *n)
{
    uint64_t term = n->raft.current_term;
    if (raft_state(&n->raft) != RAFT_LEADER) {
        n->ready = false;
        return SM_OK;
    }
    if (n->ready && term != n->leader_term) {
        n->ready = false;
    }
    if (n->leader_term == term || n->barrier_pending) {
        return SM_OK;
    }
    n->barrier.data = n;
    int rv = raft_barrier(&n->raft, &n->barrier, barrier_done);
    if (rv != 0) {
        return from_raft(rv);
    }
    n->leader_term = term;
    n->barrier_pending = true;
    n->stats.leader_terms++;
    return SM_OK;
}

/* ---- Policy ----------------------------------------------------------------
 */

/* Health of server @id from the caller's view; this node is always up. */
static enum cons_health health_of(const struct cons_node *n,
                                  uint64_t id,
                                  uint64_t now,
                                  const struct cons_seen *seen,
                                  size_t n_seen)
{
    if (id == n->cfg.id) {
        return CONS_HEALTH_UP;
    }
    for (size_t i = 0; i < n_seen; i++) {
        if (seen[i].id != id) {
            continue;
        }
        uint64_t age =
            now > seen[i].last_seen_ms ? now - seen[i].last_seen_ms : 0;
        if (age <= n->cfg.lost_after_ms / 2) {
            return CONS_HEALTH_UP;
        }
        return age <= n->cfg.lost_after_ms ? CONS_HEALTH_SUSPECT
                                           : CONS_HEALTH_DOWN;
    }
    return CONS_HEALTH_DOWN;
}

/* What the policy counts in the configuration. */
struct census
{
    unsigned voters;
    unsigned healthy_voters;
    unsigned healthy;
    const struct raft_server *standby; /* healthy, lowest id */
    const struct raft_server *spare;   /* healthy, lowest id */
    const struct raft_server *lost_voter;
    const struct raft_server *last_voter; /* highest id, not us */
};

static bool lower(const struct raft_server *a, const struct raft_server *b)
{
    return b == NULL || a->id < b->id;
}

static void take_census(const struct cons_node *n,
                        uint64_t now,
                        const struct cons_seen *seen,
                        size_t n_seen,
                        struct census *c)
{
    memset(c, 0, sizeof *c);
    const struct raft_configuration *conf = &n->raft.configuration;
    for (unsigned i = 0; i < conf->n; i++) {
        const struct raft_server *s = &conf->servers[i];
        bool up = health_of(n, s->id, now, seen, n_seen) != CONS_HEALTH_DOWN;
        c->healthy += up;
        if (s->role == RAFT_VOTER) {
            c->voters++;
            c->healthy_voters += up;
            if (!up && lower(s, c->lost_voter)) {
                c->lost_voter = s;
            }
            if (s->id != n->cfg.id &&
                (c->last_voter == NULL || s->id > c->last_voter->id)) {
                c->last_voter = s;
            }
        } else if (up && s->role == RAFT_STANDBY && lower(s, c->standby)) {
            c->standby = s;
        } else if (up && s->role == RAFT_SPARE && lower(s, c->spare)) {
            c->spare = s;
        }
    }
}

/* Starts at most one role change; *started tells whether it did. */
static int policy_step(struct cons_node *n,
                       uint64_t now,
                       const struct cons_seen *seen,
                       size_t n_seen,
                       bool *started)
{
    *started = false;
    if (n->change_busy || n->raft.configuration_uncommitted_index != 0 ||
        n->raft.leader_state.change != NULL ||
        n->raft.leader_state.promotee_id != 0) {
        return SM_OK;
    }
    struct census c;
    take_census(n, now, seen, n_seen, &c);
    unsigned wanted = n->cfg.voters < c.healthy ? n->cfg.voters : c.healthy;
    if (wanted > 1 && wanted % 2 == 0) {
        wanted--; /* an odd quorum tolerates as many failures, cheaper */
    }
    const struct raft_server *target = NULL;
    int role = RAFT_VOTER;
    if (c.healthy_voters < wanted && (c.standby != NULL || c.spare != NULL)) {
        target = c.standby != NULL ? c.standby : c.spare;
    } else if (c.voters > wanted && c.voters > 3 &&
               (c.lost_voter != NULL || c.last_voter != NULL)) {
        /* Never below three voters: fewer would not survive any loss. */
        target = c.lost_voter != NULL ? c.lost_voter : c.last_voter;
        role = RAFT_STANDBY;
    } else if (c.spare != NULL) {
        target = c.spare;
        role = RAFT_STANDBY;
    }
    if (target == NULL) {
        return SM_OK;
    }
    *started = true;
    /* raft_assign may replace the configuration @target points into. */
    bool demotion = target->role == RAFT_VOTER;
    int rv = assign(n, target->id, role);
    if (rv == SM_OK && demotion) {
        n->stats.demotions++;
    } else if (rv == SM_OK) {
        n->stats.promotions++;
    }
    return rv;
}

static void record_done(void *arg, int status, enum cons_apply_result result)
{
    struct cons_node *n = arg;
    (void)status;
    (void)result;
    n->record_busy = false;
}

/* Finds @id among @members (sorted by id). */
static const struct cons_member *member_in(const struct cons_member *members,
                                           size_t count,
                                           uint64_t id)
{
    for (size_t i = 0; i < count; i++) {
        if (members[i].id == id) {
            return &members[i];
        }
    }
    return NULL;
}

/* The first member record that disagrees with raft's configuration and
 * the health view, as a command in @cmd; false when all agree. */
static bool record_needed(const struct cons_node *n,
                          const struct cons_member *members,
                          size_t count,
                          uint64_t now,
                          const struct cons_seen *seen,
                          size_t n_seen,
                          struct cons_cmd *cmd)
{
    const struct raft_configuration *conf = &n->raft.configuration;
    for (unsigned i = 0; i < conf->n; i++) {
        const struct raft_server *s = &conf->servers[i];
        enum cons_role role = cons_role_of(s->role);
        enum cons_health health = health_of(n, s->id, now, seen, n_seen);
        const struct cons_member *m = member_in(members, count, s->id);
        if (m == NULL || m->role != role || m->health != health ||
            strcmp(m->address, s->address) != 0) {
            cmd->type = CONS_CMD_MEMBER_SET;
            cmd->u.member.id = s->id;
            cmd->u.member.address = s->address;
            cmd->u.member.role = role;
            cmd->u.member.health = health;
            return true;
        }
    }
    for (size_t i = 0; i < count; i++) {
        bool in_conf = false;
        for (unsigned j = 0; j < conf->n && !in_conf; j++) {
            in_conf = conf->servers[j].id == members[i].id;
        }
        if (!in_conf) {
            cmd->type = CONS_CMD_MEMBER_REMOVE;
            cmd->u.member.id = members[i].id;
            return true;
        }
    }
    return false;
}

/* Proposes at most one member record. */
static int record_step(struct cons_node *n,
                       uint64_t now,
                       const struct cons_seen *seen,
                       size_t n_seen)
{
    if (n->record_busy) {
        return SM_OK;
    }
    size_t count = cons_fsm_members(n->fsm, NULL, 0);
    struct cons_member *members =
        sm_calloc(count > 0 ? count : 1, sizeof *members);
    if (members == NULL) {
        return SM_ENOMEM;
    }
    cons_fsm_members(n->fsm, members, count);
    struct cons_cmd cmd;
    memset(&cmd, 0, sizeof cmd);
    int rv = SM_OK;
    if (record_needed(n, members, count, now, seen, n_seen, &cmd)) {
        rv = cons_node_propose(n, &cmd, record_done, n);
        n->record_busy = rv == SM_OK;
    }
    sm_free(members);
    return rv;
}

int cons_node_tick(struct cons_node *n,
                   uint64_t now_ms,
                   const struct cons_seen *seen,
                   size_t n_seen)
{
    int rv = track_leadership(n);
    if (rv != SM_OK || !n->ready) {
        return rv;
    }
    bool started;
    rv = policy_step(n, now_ms, seen, n_seen, &started);
    if (rv != SM_OK || started) {
        return rv;
    }
    return record_step(n, now_ms, seen, n_seen);
}

/* ---- Queries ----------------------------------------------------------------
 */

enum cons_state cons_node_state(const struct cons_node *n)
{
    switch (n->raft.state) {
        case RAFT_FOLLOWER:
            return CONS_STATE_FOLLOWER;
        case RAFT_CANDIDATE:
            return CONS_STATE_CANDIDATE;
        case RAFT_LEADER:
            return CONS_STATE_LEADER;
        default:
            return CONS_STATE_UNAVAILABLE;
    }
}

uint64_t cons_node_id(const struct cons_node *n)
{
    return n->cfg.id;
}

uint64_t cons_node_term(const struct cons_node *n)
{
    return n->raft.current_term;
}

uint64_t cons_node_leader(const struct cons_node *n, const char **address)
{
    raft_id id = 0;
    const char *addr = NULL;
    /* raft_leader() only reads, but takes a non-const pointer. */
    raft_leader((struct raft *)&n->raft, &id, &addr);
    if (address != NULL) {
        *address = addr;
    }
    return id;
}

int cons_node_ready(const struct cons_node *n)
{
    return n->ready && n->raft.state == RAFT_LEADER;
}

const struct cons_fsm *cons_node_fsm(const struct cons_node *n)
{
    return n->fsm;
}

size_t cons_node_members(const struct cons_node *n,
                         struct cons_peer *out,
                         size_t cap)
{
    const struct raft_configuration *conf = &n->raft.configuration;
    for (unsigned i = 0; i < conf->n && i < cap; i++) {
        out[i] =
            (struct cons_peer){conf->servers[i].id, conf->servers[i].address,
                               cons_role_of(conf->servers[i].role)};
    }
    return conf->n;
}

void cons_node_stats(const struct cons_node *n, struct cons_node_stats *stats)
{
    *stats = n->stats;
    /* raft_last_index() only reads, but takes a non-const pointer. */
    stats->last_index = raft_last_index((struct raft *)&n->raft);
    stats->last_applied = n->raft.last_applied;
    cons__fsm_local_counters(n->fsm, &stats->restores, &stats->apply_failures);
}
