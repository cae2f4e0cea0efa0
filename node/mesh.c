/* The peer's place in the mesh: link, raft over it, membership and the
 * replicated diagnoses. See mesh.h. */
#include "node/mesh.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/alloc.h"
#include "base/log.h"
#include "cbn/cbn.h"
#include "consensus/consensus.h"
#include "node/json.h"
#include "node/mesh_link_impl.h"

#define MOD          "mesh"
#define ADDR_MAX     64
#define RAFT_ADDR    (TP_PEER_ID_MAX + 1 + ADDR_MAX + 1)
#define OUTBOX_MAX   NODE_MESH_OUTBOX_MAX
#define MEMBERS_MAX  64
#define JOIN_EVERY   1000 /* ms between join attempts */
#define OUTBOX_EVERY 1000 /* ms between resends of uncommitted diagnoses */

/* A diagnosis waiting to be seen in the log. */
struct outbox_item
{
    char id[CONS_ID_MAX + 1];
    uint64_t time_ms;
    char *json;
};

/* An action command waiting to be seen in the log at @target or later. */
struct action_item
{
    char id[CONS_ID_MAX + 1];
    int decide; /* the decision itself (done once it exists) */
    enum cons_action_state target;
    uint64_t time_ms; /* of the command (retention's watermark) */
    uint8_t *blob;    /* the encoded command */
    size_t len;
};

#define ACTIONS_MAX  256
#define SERVICES_MAX 256  /* CONS_LIST_MAX: services placed */
#define PLACE_EVERY  5000 /* ms between telemetry reports and placements */
#define TRAIN_EVERY  250  /* ms between ticks of the training rounds */
#define REPORTS_MAX  MEMBERS_MAX

/* Where telemetry arrives: the services one peer reported, with the
 * windows each was seen in. */
struct report
{
    char peer[TP_PEER_ID_MAX + 1];
    size_t n;
    char name[SERVICES_MAX][CONS_NAME_MAX + 1];
    uint64_t count[SERVICES_MAX];
};

struct node_mesh
{
    uv_loop_t *loop;
    char self[TP_PEER_ID_MAX + 1];
    char listen[ADDR_MAX];     /* "tcp://a.b.c.d:port" */
    char raft_addr[RAFT_ADDR]; /* "self@tcp://..." */
    char join[8][ADDR_MAX];
    size_t n_join;
    char join_target[TP_PEER_ID_MAX + 1]; /* whom to ask next; "" unknown */
    uint64_t join_sent_ms, outbox_sent_ms;
    int joining, joined_logged;
    struct tp_net *net;
    struct node_mesh_link *link;
    struct cons_uv *uv;
    struct cons_link raft_link; /* the bridge's way out: TP_MSG_RAFT */
    struct cons_node *node;
    uv_timer_t tick;
    int tick_started;
    struct outbox_item outbox[OUTBOX_MAX];
    size_t n_outbox;
    uint64_t diagnoses_forwarded, diagnoses_proposed;
    struct action_item actions[ACTIONS_MAX];
    size_t n_actions;
    uint64_t actions_sent_ms;
    /* Placement: this peer's telemetry, and (leader) everyone's reports. */
    struct report own;
    struct report *reports; /* REPORTS_MAX */
    size_t n_reports;
    uint64_t place_ms;
    uint64_t placements_committed;
    uint64_t place_settle_ms, first_report_ms;
    uint64_t log_keep;
    struct node_mesh_hooks hooks;
    /* Training rounds (NULL: none). */
    struct node_train *train;
    uint64_t train_ms;
    /* Stopping. */
    void (*stop_cb)(void *arg);
    void *stop_arg;
    int closing;
};

/* ---- Addresses ----------------------------------------------------------- */

/* Splits "ID@tcp://..." into its peer id and net address. Returns 0 when
 * @raft_addr is not of that form. */
static int split_raft_addr(const char *raft_addr,
                           char id[TP_PEER_ID_MAX + 1],
                           char addr[ADDR_MAX])
{
    const char *at = strchr(raft_addr, '@');
    if (at == NULL || at == raft_addr ||
        (size_t)(at - raft_addr) > TP_PEER_ID_MAX ||
        strlen(at + 1) >= ADDR_MAX || strncmp(at + 1, "tcp://", 6) != 0) {
        return 0;
    }
    memcpy(id, raft_addr, (size_t)(at - raft_addr));
    id[at - raft_addr] = '\0';
    snprintf(addr, ADDR_MAX, "%s", at + 1);
    return tp_peer_id_valid(id, strlen(id));
}

static uint64_t now_ms(const struct node_mesh *m)
{
    return uv_now(m->loop);
}

/* Makes every member of raft's configuration reachable on the link. */
static void learn_members(struct node_mesh *m)
{
    struct cons_peer peers[MEMBERS_MAX];
    size_t n = cons_node_members(m->node, peers, MEMBERS_MAX);
    for (size_t i = 0; i < n && i < MEMBERS_MAX; i++) {
        char id[TP_PEER_ID_MAX + 1], addr[ADDR_MAX];
        if (split_raft_addr(peers[i].address, id, addr) &&
            strcmp(id, m->self) != 0) {
            node_mesh_link_peer_add(m->link, id, addr);
        }
    }
}

/* Whether this peer is in raft's configuration. */
static int in_configuration(const struct node_mesh *m)
{
    struct cons_peer peers[MEMBERS_MAX];
    size_t n = cons_node_members(m->node, peers, MEMBERS_MAX);
    uint64_t me = node_link_raft_id(m->self);
    for (size_t i = 0; i < n && i < MEMBERS_MAX; i++) {
        if (peers[i].id == me) {
            return 1;
        }
    }
    return 0;
}

/* The leader's peer id ("" when unknown). */
static void leader_id(const struct node_mesh *m, char id[TP_PEER_ID_MAX + 1])
{
    const char *address = NULL;
    char addr[ADDR_MAX];
    id[0] = '\0';
    if (cons_node_leader(m->node, &address) == 0 || address == NULL ||
        !split_raft_addr(address, id, addr)) {
        id[0] = '\0';
    }
}

int node_mesh_has_diagnosis(const struct node_mesh *m, const char *id)
{
    struct cons_diagnosis d;
    return cons_fsm_diagnosis_get(cons_node_fsm(m->node), id, &d) == SM_OK;
}

void node_mesh_view(const struct node_mesh *m, struct node_mesh_view *out)
{
    struct cons_member members[MEMBERS_MAX];
    snprintf(out->self, sizeof out->self, "%s", m->self);
    leader_id(m, out->leader);
    out->is_leader = cons_node_ready(m->node);
    out->n_up = 0;
    /* The log's member records, which the leader keeps in step with its
     * health view: every peer reads the same set, so every peer routes a
     * trace to the same owner. */
    size_t n = cons_fsm_members(cons_node_fsm(m->node), members, MEMBERS_MAX);
    for (size_t i = 0; i < n && i < MEMBERS_MAX; i++) {
        char addr[ADDR_MAX];
        char *id = out->ids[out->n_up];
        if (members[i].health == CONS_HEALTH_UP &&
            split_raft_addr(members[i].address, id, addr)) {
            out->up[out->n_up++] = id;
        }
    }
    if (out->n_up == 0) {
        /* no records yet: this peer alone */
        snprintf(out->ids[0], sizeof out->ids[0], "%s", m->self);
        out->up[0] = out->ids[0];
        out->n_up = 1;
    }
}

/* ---- Requests between peers (TP_MSG_FWD_REQ / _REP) ---------------------
 *
 * Text bodies, one field per line:
 *   join\nID@tcp://...          add me (answered "ok", "leader\nID@..." or
 *                               "error\nwhy")
 *   diag\nID\nTIME_MS\nJSON     commit this diagnosis (not answered: the
 *                               sender watches its own log) */

static void reply(struct node_mesh *m,
                  const char *peer,
                  uint64_t id,
                  const char *text)
{
    const struct node_link_ops *ops = node_mesh_link_ops(m->link);
    ops->send(ops->arg, peer, TP_MSG_FWD_REP, id, text, strlen(text));
}

static void handle_join(struct node_mesh *m,
                        const char *peer,
                        uint64_t req,
                        const char *who)
{
    char id[TP_PEER_ID_MAX + 1], addr[ADDR_MAX];
    if (!split_raft_addr(who, id, addr) || strcmp(id, peer) != 0) {
        reply(m, peer, req, "error\nthe join request does not name its sender");
        return;
    }
    if (!cons_node_ready(m->node)) {
        char leader[TP_PEER_ID_MAX + 1];
        const char *address = NULL;
        leader_id(m, leader);
        cons_node_leader(m->node, &address);
        char text[RAFT_ADDR + 16];
        snprintf(text, sizeof text, "leader\n%s",
                 leader[0] && address ? address : "");
        reply(m, peer, req, text);
        return;
    }
    int rv = cons_node_add(m->node, node_link_raft_id(id), who, NULL, NULL);
    if (rv == SM_OK || rv == SM_EEXIST) {
        if (rv == SM_OK) {
            sm_log(SM_LOG_INFO, MOD, "adding a peer", "peer=%s address=%s", id,
                   addr);
        }
        node_mesh_link_peer_add(m->link, id, addr);
        reply(m, peer, req, "ok");
    } else if (rv == SM_EAGAIN) {
        reply(m, peer, req, "busy");
    } else {
        char text[128];
        snprintf(text, sizeof text, "error\n%s", sm_strerror(rv));
        reply(m, peer, req, text);
    }
}

/* Leader only: adds "ID@tcp://..." (an operator's `members add`). */
static int add_member(struct node_mesh *m, const char *who)
{
    char id[TP_PEER_ID_MAX + 1], addr[ADDR_MAX];
    if (!split_raft_addr(who, id, addr)) {
        return SM_EINVAL;
    }
    int rv = cons_node_add(m->node, node_link_raft_id(id), who, NULL, NULL);
    if (rv == SM_OK) {
        node_mesh_link_peer_add(m->link, id, addr);
        sm_log(SM_LOG_INFO, MOD, "adding a peer", "peer=%s address=%s", id,
               addr);
    }
    return rv;
}

/* Leader only: removes peer @id (an operator's `members remove`). */
static int remove_member(struct node_mesh *m, const char *id)
{
    if (strcmp(id, m->self) == 0) {
        return SM_EINVAL; /* transfer leadership first: not in 0.15's API */
    }
    int rv = cons_node_remove(m->node, node_link_raft_id(id), NULL, NULL);
    if (rv == SM_OK) {
        sm_log(SM_LOG_INFO, MOD, "removing a peer", "peer=%s", id);
    }
    return rv;
}

static void propose_diagnosis(struct node_mesh *m,
                              const char *id,
                              uint64_t time_ms,
                              const char *json)
{
    struct cons_cmd cmd = {.type = CONS_CMD_DIAGNOSIS};
    cmd.u.diagnosis.id = id;
    cmd.u.diagnosis.time_ms = time_ms;
    cmd.u.diagnosis.json = json;
    if (cons_node_propose(m->node, &cmd, NULL, NULL) == SM_OK) {
        m->diagnoses_proposed++;
    }
}

static void handle_diag(struct node_mesh *m, char *body)
{
    char *id = body, *nl = strchr(id, '\n');
    if (nl == NULL) {
        return;
    }
    *nl = '\0';
    char *time = nl + 1;
    nl = strchr(time, '\n');
    if (nl == NULL || !cons_node_ready(m->node)) {
        return; /* the sender retries with the next leader */
    }
    *nl = '\0';
    uint64_t t = strtoull(time, NULL, 10);
    propose_diagnosis(m, id, t, nl + 1);
}

/* Finds (or makes, evicting nothing: members are few) @peer's report. */
static struct report *report_of(struct node_mesh *m, const char *peer)
{
    for (size_t i = 0; i < m->n_reports; i++) {
        if (strcmp(m->reports[i].peer, peer) == 0) {
            return &m->reports[i];
        }
    }
    if (m->reports == NULL || m->n_reports == REPORTS_MAX) {
        return NULL;
    }
    struct report *r = &m->reports[m->n_reports++];
    memset(r, 0, sizeof *r);
    snprintf(r->peer, sizeof r->peer, "%s", peer);
    return r;
}

/* "seen\n" then "COUNT NAME" lines: the services a peer's telemetry
 * names (leader). A report replaces the peer's previous one. */
static void handle_seen(struct node_mesh *m, const char *peer, char *text)
{
    struct report *r = report_of(m, peer);
    if (r == NULL) {
        return;
    }
    r->n = 0;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save);
         line != NULL && r->n < SERVICES_MAX;
         line = strtok_r(NULL, "\n", &save)) {
        char *sp = strchr(line, ' ');
        if (sp == NULL || sp[1] == '\0' || strlen(sp + 1) > CONS_NAME_MAX) {
            continue;
        }
        *sp = '\0';
        r->count[r->n] = strtoull(line, NULL, 10);
        snprintf(r->name[r->n], sizeof r->name[0], "%s", sp + 1);
        r->n++;
    }
}

/* "act\napprove ID" or "act\nrollback ID": an operator's call another
 * peer forwarded to this one, the action's decider. */
static void handle_action(struct node_mesh *m, const char *peer, char *text)
{
    char *sp = strchr(text, ' ');
    if (sp == NULL || m->hooks.on_action == NULL ||
        strlen(sp + 1) > CONS_ID_MAX) {
        return;
    }
    *sp = '\0';
    int rollback = strcmp(text, "rollback") == 0;
    if (!rollback && strcmp(text, "approve") != 0) {
        return;
    }
    sm_log(SM_LOG_INFO, MOD, "an operator's call forwarded by a peer",
           "peer=%s call=%s action=%s", peer, text, sp + 1);
    m->hooks.on_action(m->hooks.arg, rollback, sp + 1);
}

static void handle_request(struct node_mesh *m,
                           const char *peer,
                           uint64_t req,
                           const void *data,
                           size_t len)
{
    char *body = sm_malloc(len + 1);
    if (body == NULL) {
        return;
    }
    memcpy(body, data, len);
    body[len] = '\0';
    if (strlen(body) != len) {
        sm_free(body); /* a NUL inside: not ours */
        return;
    }
    if (strncmp(body, "join\n", 5) == 0) {
        handle_join(m, peer, req, body + 5);
    } else if (strncmp(body, "add\n", 4) == 0 && cons_node_ready(m->node)) {
        add_member(m, body + 4);
    } else if (strncmp(body, "remove\n", 7) == 0 && cons_node_ready(m->node)) {
        remove_member(m, body + 7);
    } else if (strncmp(body, "diag\n", 5) == 0) {
        handle_diag(m, body + 5);
    } else if (strncmp(body, "seen\n", 5) == 0) {
        handle_seen(m, peer, body + 5);
    } else if (strncmp(body, "act\n", 4) == 0) {
        handle_action(m, peer, body + 4);
    }
    sm_free(body);
}

/* A forwarded action command ("cmd\n" and the encoded command): proposed
 * by the leader when it is an action's decision or state change. */
static void handle_cmd(struct node_mesh *m, const uint8_t *data, size_t len)
{
    struct cons_cmd cmd;
    if (!cons_node_ready(m->node) ||
        cons_cmd_decode(data, len, &cmd) != SM_OK) {
        return; /* the sender retries with the next leader */
    }
    if (cmd.type == CONS_CMD_ACTION_DECIDE ||
        cmd.type == CONS_CMD_ACTION_STATE) {
        cons_node_propose(m->node, &cmd, NULL, NULL);
    }
    cons_cmd_release(&cmd);
}

static void handle_reply(struct node_mesh *m, const void *data, size_t len)
{
    char body[RAFT_ADDR + 32];
    if (len >= sizeof body) {
        return;
    }
    memcpy(body, data, len);
    body[len] = '\0';
    char id[TP_PEER_ID_MAX + 1], addr[ADDR_MAX];
    if (strncmp(body, "leader\n", 7) == 0 &&
        split_raft_addr(body + 7, id, addr) && strcmp(id, m->self) != 0) {
        node_mesh_link_peer_add(m->link, id, addr);
        snprintf(m->join_target, sizeof m->join_target, "%s", id);
        m->join_sent_ms = 0; /* ask the leader now */
    } else if (strncmp(body, "error\n", 6) == 0) {
        sm_log(SM_LOG_WARN, MOD, "join refused", "cause=\"%s\"", body + 6);
    }
}

static void on_message(void *arg,
                       const char *peer,
                       int type,
                       uint64_t id,
                       const void *data,
                       size_t len)
{
    struct node_mesh *m = arg;
    if (m->closing) {
        return;
    }
    switch (type) {
        case TP_MSG_RAFT:
            if (m->uv != NULL) {
                cons_uv_recv(m->uv, peer, data, len);
            }
            break;
        case TP_MSG_FWD_REQ:
            if (len >= 4 && memcmp(data, "cmd\n", 4) == 0) {
                handle_cmd(m, (const uint8_t *)data + 4, len - 4);
            } else {
                handle_request(m, peer, id, data, len);
            }
            break;
        case TP_MSG_FWD_REP:
            handle_reply(m, data, len);
            break;
        case TP_MSG_SWEEP_REQ:
        case TP_MSG_SWEEP_REP:
            if (m->hooks.on_sweep != NULL) {
                m->hooks.on_sweep(m->hooks.arg, peer, type, id, data, len);
            }
            break;
        case TP_MSG_SPANS:
        case TP_MSG_PARTIAL:
            if (m->hooks.on_ingest != NULL) {
                m->hooks.on_ingest(m->hooks.arg, peer, type, data, len);
            }
            break;
        case TP_MSG_TRAIN:
        case TP_MSG_WINDOW:
            if (m->train != NULL) {
                node_train_recv(m->train, peer, type, data, len);
            }
            break;
        default:
            break; /* types of later versions */
    }
}

static void on_iam(void *arg, const char *peer, const char *addr)
{
    struct node_mesh *m = arg;
    if (!m->joining || strcmp(peer, m->self) == 0) {
        return;
    }
    node_mesh_link_peer_add(m->link, peer, addr);
    if (m->join_target[0] == '\0') {
        snprintf(m->join_target, sizeof m->join_target, "%s", peer);
        m->join_sent_ms = 0;
    }
}

/* ---- The tick: joining, health, policy, the outbox ---------------------- */

static void try_join(struct node_mesh *m, uint64_t now)
{
    if (in_configuration(m)) {
        if (!m->joined_logged) {
            m->joined_logged = 1;
            sm_log(SM_LOG_INFO, MOD, "joined the mesh", "peer=%s", m->self);
        }
        m->joining = 0;
        return;
    }
    if (m->join_sent_ms != 0 && now < m->join_sent_ms + JOIN_EVERY) {
        return;
    }
    m->join_sent_ms = now ? now : 1;
    if (m->join_target[0] == '\0') {
        for (size_t i = 0; i < m->n_join; i++) {
            node_mesh_link_probe(m->link, m->join[i]);
        }
        return;
    }
    char text[RAFT_ADDR + 8];
    snprintf(text, sizeof text, "join\n%s", m->raft_addr);
    const struct node_link_ops *ops = node_mesh_link_ops(m->link);
    ops->send(ops->arg, m->join_target, TP_MSG_FWD_REQ, now, text,
              strlen(text));
}

static void send_outbox(struct node_mesh *m, uint64_t now)
{
    /* Once a second at most: the log is searched for every waiting item. */
    if (m->n_outbox == 0 ||
        (m->outbox_sent_ms != 0 && now < m->outbox_sent_ms + OUTBOX_EVERY)) {
        return;
    }
    const struct cons_fsm *fsm = cons_node_fsm(m->node);
    struct cons_fsm_counts c;
    cons_fsm_counts(fsm, &c);
    size_t kept = 0;
    for (size_t i = 0; i < m->n_outbox; i++) {
        struct cons_diagnosis d;
        /* In the log, or older than what retention dropped (the log
         * refuses it as stale): either way done. */
        int stale = c.diagnoses_dropped > 0 &&
                    m->outbox[i].time_ms <= c.diagnoses_dropped_ms;
        if (stale ||
            cons_fsm_diagnosis_get(fsm, m->outbox[i].id, &d) == SM_OK) {
            sm_free(m->outbox[i].json);
        } else {
            m->outbox[kept++] = m->outbox[i];
        }
    }
    m->n_outbox = kept;
    if (kept == 0) {
        return;
    }
    m->outbox_sent_ms = now ? now : 1;
    char leader[TP_PEER_ID_MAX + 1];
    leader_id(m, leader);
    const struct node_link_ops *ops = node_mesh_link_ops(m->link);
    for (size_t i = 0; i < kept && i < 64; i++) {
        struct outbox_item *o = &m->outbox[i];
        if (cons_node_ready(m->node)) {
            propose_diagnosis(m, o->id, o->time_ms, o->json);
        } else if (leader[0] != '\0' && strcmp(leader, m->self) != 0) {
            size_t jl = strlen(o->json);
            char *text = sm_malloc(jl + CONS_ID_MAX + 32);
            if (text == NULL) {
                return;
            }
            int n = snprintf(text, jl + CONS_ID_MAX + 32,
                             "diag\n%s\n%" PRIu64 "\n%s", o->id, o->time_ms,
                             o->json);
            if (ops->send(ops->arg, leader, TP_MSG_FWD_REQ, 0, text,
                          (size_t)n) == SM_OK) {
                m->diagnoses_forwarded++;
            }
            sm_free(text);
        }
    }
}

static int action_done(const struct cons_fsm *fsm, const struct action_item *a)
{
    struct cons_action act;
    if (cons_fsm_action_get(fsm, a->id, &act) != SM_OK) {
        /* dropped by retention (or never to be accepted): give up */
        struct cons_fsm_counts c;
        cons_fsm_counts(fsm, &c);
        return c.actions_dropped > 0 && a->time_ms <= c.actions_dropped_ms;
    }
    return a->decide || cons_action_state_reached(act.state, a->target);
}

/* Like the diagnoses: each action command is proposed (leader) or
 * forwarded to the leader until this peer's copy of the log has it. */
static void send_actions(struct node_mesh *m, uint64_t now)
{
    if (m->n_actions == 0 ||
        (m->actions_sent_ms != 0 && now < m->actions_sent_ms + OUTBOX_EVERY)) {
        return;
    }
    const struct cons_fsm *fsm = cons_node_fsm(m->node);
    size_t kept = 0;
    for (size_t i = 0; i < m->n_actions; i++) {
        if (action_done(fsm, &m->actions[i])) {
            sm_free(m->actions[i].blob);
        } else {
            m->actions[kept++] = m->actions[i];
        }
    }
    m->n_actions = kept;
    if (kept == 0) {
        return;
    }
    m->actions_sent_ms = now ? now : 1;
    char leader[TP_PEER_ID_MAX + 1];
    leader_id(m, leader);
    const struct node_link_ops *ops = node_mesh_link_ops(m->link);
    for (size_t i = 0; i < kept; i++) {
        struct action_item *a = &m->actions[i];
        if (cons_node_ready(m->node)) {
            struct cons_cmd cmd;
            if (cons_cmd_decode(a->blob, a->len, &cmd) == SM_OK) {
                cons_node_propose(m->node, &cmd, NULL, NULL);
                cons_cmd_release(&cmd);
            }
        } else if (leader[0] != '\0' && strcmp(leader, m->self) != 0) {
            uint8_t *msg = sm_malloc(a->len + 4);
            if (msg == NULL) {
                return;
            }
            memcpy(msg, "cmd\n", 4);
            memcpy(msg + 4, a->blob, a->len);
            ops->send(ops->arg, leader, TP_MSG_FWD_REQ, 0, msg, a->len + 4);
            sm_free(msg);
        }
    }
}

/* The peer id of raft id @id among the members, or NULL. */
static const char *peer_of(const struct cons_peer *peers,
                           size_t n,
                           uint64_t id,
                           char out[TP_PEER_ID_MAX + 1])
{
    char addr[ADDR_MAX];
    for (size_t i = 0; i < n; i++) {
        if (peers[i].id == id && split_raft_addr(peers[i].address, out, addr)) {
            return out;
        }
    }
    return NULL;
}

static void send_report(struct node_mesh *m)
{
    char leader[TP_PEER_ID_MAX + 1];
    leader_id(m, leader);
    if (leader[0] == '\0' || m->own.n == 0) {
        return;
    }
    if (strcmp(leader, m->self) == 0) {
        struct report *r = report_of(m, m->self);
        if (r != NULL) {
            *r = m->own;
            /* own.peer is unset: the report is known by this peer's id */
            snprintf(r->peer, sizeof r->peer, "%s", m->self);
        }
        return;
    }
    struct node_text t = {0};
    node_text_puts(&t, "seen\n");
    for (size_t i = 0; i < m->own.n; i++) {
        node_text_printf(&t, "%" PRIu64 " %s\n", m->own.count[i],
                         m->own.name[i]);
    }
    if (!t.failed) {
        const struct node_link_ops *ops = node_mesh_link_ops(m->link);
        ops->send(ops->arg, leader, TP_MSG_FWD_REQ, 0, t.s, t.len);
    }
    free(t.s);
}

/* Collects every reported service with the peers that see it. */
static size_t gather_services(struct node_mesh *m,
                              struct cons_place_service *svc,
                              struct cons_place_seen *seen,
                              size_t cap_seen)
{
    size_t n = 0, used = 0;
    for (size_t r = 0; r < m->n_reports; r++) {
        for (size_t k = 0; k < m->reports[r].n; k++) {
            const char *name = m->reports[r].name[k];
            size_t i = 0;
            while (i < n && strcmp(svc[i].name, name) != 0) {
                i++;
            }
            if (i == n) {
                if (n == SERVICES_MAX) {
                    continue;
                }
                svc[n++] = (struct cons_place_service){name, NULL, 0};
            }
            (void)i;
        }
    }
    /* Seen lists laid out service by service. */
    for (size_t i = 0; i < n; i++) {
        svc[i].seen = seen + used;
        for (size_t r = 0; r < m->n_reports && used < cap_seen; r++) {
            for (size_t k = 0; k < m->reports[r].n; k++) {
                if (strcmp(m->reports[r].name[k], svc[i].name) == 0) {
                    seen[used++] = (struct cons_place_seen){
                        node_link_raft_id(m->reports[r].peer),
                        m->reports[r].count[k]};
                    svc[i].n_seen++;
                }
            }
        }
    }
    return n;
}

/* Whether the first placement may be made: when every healthy member has
 * reported the services its telemetry names, or place_settle_ms after the
 * first report (a member may have no telemetry at all). Placement keeps
 * owners once placed, so placing on the first report alone would put
 * every shard where the first reports came from. */
static int reports_settled(struct node_mesh *m,
                           const struct cons_place_peer *peers,
                           size_t n_peers,
                           const struct cons_peer *members,
                           size_t n_members,
                           uint64_t now)
{
    if (m->place_settle_ms == 0) {
        return 1;
    }
    if (m->first_report_ms == 0) {
        m->first_report_ms = now ? now : 1;
    }
    if (now >= m->first_report_ms + m->place_settle_ms) {
        return 1;
    }
    for (size_t i = 0; i < n_members && i < MEMBERS_MAX; i++) {
        char id[TP_PEER_ID_MAX + 1], addr[ADDR_MAX];
        int reported = 0, up = 0;
        for (size_t k = 0; k < n_peers; k++) {
            up |= peers[k].id == members[i].id &&
                  peers[k].health == CONS_HEALTH_UP;
        }
        if (!up || !split_raft_addr(members[i].address, id, addr)) {
            continue;
        }
        for (size_t r = 0; r < m->n_reports && !reported; r++) {
            reported =
                strcmp(m->reports[r].peer, id) == 0 && m->reports[r].n > 0;
        }
        if (!reported) {
            return 0;
        }
    }
    return 1;
}

/* Leader: places every reported service on the healthy members and
 * commits the placement when it changed. */
static void place(struct node_mesh *m, uint64_t now)
{
    static struct cons_place_service svc[SERVICES_MAX];
    static struct cons_place_seen seen[SERVICES_MAX * 8];
    static struct cons_place_entry out[SERVICES_MAX], prev[SERVICES_MAX];
    struct cons_peer members[MEMBERS_MAX];
    size_t n_members = cons_node_members(m->node, members, MEMBERS_MAX);
    struct cons_place_peer peers[MEMBERS_MAX];
    size_t n_peers = 0;
    for (size_t i = 0; i < n_members && i < MEMBERS_MAX; i++) {
        char id[TP_PEER_ID_MAX + 1], addr[ADDR_MAX];
        if (!split_raft_addr(members[i].address, id, addr)) {
            continue;
        }
        uint64_t last = strcmp(id, m->self) == 0
                            ? now
                            : node_mesh_link_last_seen(m->link, id);
        peers[n_peers++] = (struct cons_place_peer){
            members[i].id, members[i].role,
            last != 0 && now - last < 3000 ? CONS_HEALTH_UP : CONS_HEALTH_DOWN};
    }
    size_t n = gather_services(m, svc, seen, sizeof seen / sizeof seen[0]);
    if (n == 0 || n_peers == 0) {
        return;
    }
    const struct cons_fsm *fsm = cons_node_fsm(m->node);
    uint64_t epoch = 0;
    size_t n_prev = cons_fsm_placement(fsm, &epoch, prev, SERVICES_MAX);
    if (epoch == 0 &&
        !reports_settled(m, peers, n_peers, members, n_members, now)) {
        return; /* the first placement waits for every peer's telemetry */
    }
    if (n_prev > SERVICES_MAX) {
        n_prev = SERVICES_MAX;
    }
    if (cons_place_compute(peers, n_peers, svc, n, prev, n_prev, out, NULL) !=
        SM_OK) {
        return;
    }
    int same = n == n_prev;
    for (size_t i = 0; same && i < n; i++) {
        struct cons_place_entry e;
        same = cons_fsm_placement_get(fsm, out[i].service, &e) == SM_OK &&
               e.owner == out[i].owner && e.replica == out[i].replica;
    }
    if (same) {
        return;
    }
    struct cons_cmd cmd = {.type = CONS_CMD_PLACEMENT_SET};
    cmd.u.placement.epoch = epoch + 1;
    cmd.u.placement.n = n;
    cmd.u.placement.entries = out;
    if (cons_node_propose(m->node, &cmd, NULL, NULL) == SM_OK) {
        m->placements_committed++;
        sm_log(SM_LOG_INFO, MOD, "placing shards",
               "epoch=%" PRIu64 " services=%zu peers=%zu", epoch + 1, n,
               n_peers);
    }
}

/* Leader: bounds the log's diagnoses and finished actions. A tenth of
 * slack keeps RETAIN commands rare: one per log_keep / 10 new records. */
static void retain(struct node_mesh *m, uint64_t now)
{
    struct cons_fsm_counts c;
    cons_fsm_counts(cons_node_fsm(m->node), &c);
    uint64_t limit = m->log_keep + m->log_keep / 10;
    uint64_t finished = c.actions - c.actions_open;
    if (c.diagnoses <= limit && finished <= limit) {
        return;
    }
    struct cons_cmd cmd = {.type = CONS_CMD_RETAIN};
    cmd.u.retain.max_diagnoses = m->log_keep;
    cmd.u.retain.max_actions = m->log_keep + c.actions_open;
    cmd.u.retain.time_ms = now;
    if (cons_node_propose(m->node, &cmd, NULL, NULL) == SM_OK) {
        sm_log(SM_LOG_INFO, MOD, "trimming the log's records",
               "diagnoses=%zu actions=%zu keep=%" PRIu64, c.diagnoses,
               c.actions, m->log_keep);
    }
}

/* Everyone's health as this peer sees it: when the link last heard from
 * them (this peer is always up). */
static size_t health_view(struct node_mesh *m,
                          uint64_t now,
                          struct cons_seen *seen,
                          size_t cap)
{
    struct cons_peer peers[MEMBERS_MAX];
    size_t n = cons_node_members(m->node, peers, MEMBERS_MAX);
    size_t k = 0;
    for (size_t i = 0; i < n && i < MEMBERS_MAX && k < cap; i++) {
        char id[TP_PEER_ID_MAX + 1], addr[ADDR_MAX];
        if (!split_raft_addr(peers[i].address, id, addr)) {
            continue;
        }
        uint64_t last = strcmp(id, m->self) == 0
                            ? now
                            : node_mesh_link_last_seen(m->link, id);
        if (last != 0) {
            seen[k++] = (struct cons_seen){peers[i].id, last};
        }
    }
    return k;
}

/* The mesh as the training rounds see it: members with their health,
 * placement by peer id, committed versions. */
static void train_tick(struct node_mesh *m, uint64_t now)
{
    static struct cons_place_entry place[SERVICES_MAX];
    static char owner[SERVICES_MAX][TP_PEER_ID_MAX + 1];
    static char replica[SERVICES_MAX][TP_PEER_ID_MAX + 1];
    static const char *owner_p[SERVICES_MAX], *replica_p[SERVICES_MAX];
    static struct cons_shard_digest shards[CONS_LIST_MAX];
    struct cons_peer peers[MEMBERS_MAX];
    char ids[MEMBERS_MAX][TP_PEER_ID_MAX + 1];
    const char *ids_p[MEMBERS_MAX];
    enum cons_health health[MEMBERS_MAX];
    size_t n_peers = cons_node_members(m->node, peers, MEMBERS_MAX);
    n_peers = n_peers > MEMBERS_MAX ? MEMBERS_MAX : n_peers;
    size_t k = 0;
    for (size_t i = 0; i < n_peers; i++) {
        char addr[ADDR_MAX];
        if (!split_raft_addr(peers[i].address, ids[k], addr)) {
            continue;
        }
        uint64_t last = strcmp(ids[k], m->self) == 0
                            ? now
                            : node_mesh_link_last_seen(m->link, ids[k]);
        health[k] =
            last != 0 && now - last < 3000 ? CONS_HEALTH_UP : CONS_HEALTH_DOWN;
        ids_p[k] = ids[k];
        k++;
    }
    const struct cons_fsm *fsm = cons_node_fsm(m->node);
    size_t n_place = cons_fsm_placement(fsm, NULL, place, SERVICES_MAX);
    n_place = n_place > SERVICES_MAX ? SERVICES_MAX : n_place;
    for (size_t i = 0; i < n_place; i++) {
        owner_p[i] = peer_of(peers, n_peers, place[i].owner, owner[i]);
        replica_p[i] = peer_of(peers, n_peers, place[i].replica, replica[i]);
        owner_p[i] = owner_p[i] ? owner_p[i] : "";
        replica_p[i] = replica_p[i] ? replica_p[i] : "";
    }
    char leader[TP_PEER_ID_MAX + 1];
    leader_id(m, leader);
    struct node_train_view v = {
        .self = m->self,
        .leader = leader,
        .is_leader = cons_node_ready(m->node),
        .n_members = k,
        .members = ids_p,
        .health = health,
        .n_place = n_place,
        .place = place,
        .place_owner = owner_p,
        .place_replica = replica_p,
        .shards = shards,
    };
    if (m->hooks.on_owners != NULL) {
        /* who computes each node in sweeps: the first of owner, replica
         * that is up; else this peer */
        static const char *names[SERVICES_MAX], *live[SERVICES_MAX];
        for (size_t i = 0; i < n_place; i++) {
            names[i] = place[i].service;
            live[i] = "";
            for (size_t j = 0; j < k && live[i][0] == '\0'; j++) {
                if (health[j] == CONS_HEALTH_UP &&
                    strcmp(ids[j], owner_p[i]) == 0) {
                    live[i] = owner_p[i];
                }
            }
            for (size_t j = 0; j < k && live[i][0] == '\0'; j++) {
                if (health[j] == CONS_HEALTH_UP &&
                    strcmp(ids[j], replica_p[i]) == 0) {
                    live[i] = replica_p[i];
                }
            }
        }
        m->hooks.on_owners(m->hooks.arg, names, live, n_place);
    }
    cons_fsm_versions(fsm, &v.versions);
    v.n_shards = cons_fsm_model_shards(fsm, shards, CONS_LIST_MAX);
    v.n_shards = v.n_shards > CONS_LIST_MAX ? CONS_LIST_MAX : v.n_shards;
    node_train_tick(m->train, &v, now);
}

static void on_tick(uv_timer_t *t)
{
    struct node_mesh *m = t->data;
    uint64_t now = now_ms(m);
    node_mesh_link_tick(m->link, now);
    learn_members(m);
    if (m->joining) {
        try_join(m, now);
    }
    struct cons_seen seen[MEMBERS_MAX];
    size_t n = health_view(m, now, seen, MEMBERS_MAX);
    cons_node_tick(m->node, now, seen, n);
    send_outbox(m, now);
    send_actions(m, now);
    if (m->place_ms == 0 || now >= m->place_ms + PLACE_EVERY) {
        m->place_ms = now ? now : 1;
        send_report(m);
        if (cons_node_ready(m->node)) {
            place(m, now);
            retain(m, now);
        }
    }
    if (m->train != NULL &&
        (m->train_ms == 0 || now >= m->train_ms + TRAIN_EVERY)) {
        m->train_ms = now ? now : 1;
        train_tick(m, now);
    }
}

/* ---- Start and stop ------------------------------------------------------ */

static int make_raft_dir(const char *data_dir,
                         char *dir,
                         size_t cap,
                         char *errmsg)
{
    if (snprintf(dir, cap, "%s/raft", data_dir) >= (int)cap) {
        sm_errmsg_printf(errmsg, "data directory path too long");
        return SM_EINVAL;
    }
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        sm_errmsg_printf(errmsg, "cannot create %s: %s", dir, strerror(errno));
        return SM_EIO;
    }
    return SM_OK;
}

static int start_net(struct node_mesh *m,
                     const struct node_mesh_config *cfg,
                     char *errmsg)
{
    struct node_mesh_link_config lc = {.self = cfg->id, .secret = cfg->secret};
    int rv = node_mesh_link_new(&lc, on_message, m, &m->link, errmsg);
    if (rv != SM_OK) {
        return rv;
    }
    node_mesh_link_on_iam(m->link, on_iam, m);
    struct tp_net_config nc;
    tp_net_config_default(&nc);
    rv = tp_net_nng_new(m->loop, &nc, node_mesh_link_net_recv, m->link, &m->net,
                        errmsg);
    if (rv != SM_OK) {
        return rv;
    }
    char want[ADDR_MAX];
    snprintf(want, sizeof want, "tcp://%s", cfg->listen_peer);
    rv = tp_net_listen(m->net, want);
    if (rv != SM_OK) {
        sm_errmsg_printf(errmsg, "--listen-peer %s: %s", cfg->listen_peer,
                         tp_net_errmsg(m->net));
        return rv;
    }
    if (cfg->advertise_peer != NULL) {
        snprintf(m->listen, sizeof m->listen, "tcp://%s", cfg->advertise_peer);
    } else {
        snprintf(m->listen, sizeof m->listen, "%s", tp_net_address(m->net));
    }
    node_mesh_link_attach(m->link, m->net, m->listen);
    snprintf(m->raft_addr, sizeof m->raft_addr, "%s@%s", m->self, m->listen);
    return SM_OK;
}

static int send_raft(void *arg, const char *peer, const void *data, size_t len)
{
    struct node_mesh *m = arg;
    const struct node_link_ops *ops = node_mesh_link_ops(m->link);
    return ops->send(ops->arg, peer, TP_MSG_RAFT, 0, data, len);
}

static int train_send(void *arg,
                      const char *peer,
                      int type,
                      const void *data,
                      size_t len)
{
    struct node_mesh *m = arg;
    const struct node_link_ops *ops = node_mesh_link_ops(m->link);
    return ops->send(ops->arg, peer, type, 0, data, len);
}

static void train_propose(void *arg, const struct cons_cmd *cmd)
{
    struct node_mesh *m = arg;
    int rv = cons_node_propose(m->node, cmd, NULL, NULL);
    if (rv != SM_OK) {
        sm_log(SM_LOG_WARN, MOD, "cannot propose a training result",
               "type=%s error=%s", cons_cmd_type_name(cmd->type),
               sm_errname(rv));
    }
}

/* A peer without a model takes part in rounds only to say so: it
 * acknowledges windows (so senders stop resending them) without keeping
 * them, and answers a training request with a failure at once. */
static int ack_only_window(void *arg,
                           const uint8_t *data,
                           size_t len,
                           uint64_t *end_ns)
{
    (void)arg;
    struct cbn_window *w;
    int rv = cbn_window_decode(data, len, &w);
    if (rv == SM_OK) {
        *end_ns = w->end_ns;
        cbn_window_free(w);
    }
    return rv;
}

static int start_train(struct node_mesh *m, const struct node_mesh_config *cfg)
{
    struct node_train_env env = {.add_window = ack_only_window};
    if (cfg->train != NULL && cfg->train->round_windows != NULL) {
        env = *cfg->train;
    }
    env.net_arg = m;
    env.send = train_send;
    env.propose = train_propose;
    return node_train_new(&cfg->train_config, &env, &m->train);
}

static int start_raft(struct node_mesh *m,
                      const struct node_mesh_config *cfg,
                      char *errmsg)
{
    char dir[4096];
    int rv = make_raft_dir(cfg->data_dir, dir, sizeof dir, errmsg);
    if (rv != SM_OK) {
        return rv;
    }
    m->raft_link = (struct cons_link){m, send_raft};
    rv = cons_uv_new(m->loop, dir, &m->raft_link, m->self, &m->uv, errmsg);
    if (rv != SM_OK) {
        return rv;
    }
    struct cons_node_config nc;
    cons_node_config_init(&nc);
    nc.id = node_link_raft_id(m->self);
    nc.address = m->raft_addr;
    if (cfg->election_ms) {
        nc.election_timeout_ms = cfg->election_ms;
        nc.heartbeat_timeout_ms =
            cfg->heartbeat_ms ? cfg->heartbeat_ms : cfg->election_ms / 10;
    }
    if (cfg->voters) {
        nc.voters = cfg->voters;
    }
    rv = cons_node_new(&nc, cons_uv_io(m->uv), &m->node, errmsg);
    if (rv != SM_OK) {
        return rv;
    }
    if (cfg->n_join == 0) {
        struct cons_peer self = {nc.id, m->raft_addr, CONS_ROLE_VOTER};
        rv = cons_node_bootstrap(m->node, &self, 1, errmsg);
        if (rv == SM_OK) {
            sm_log(SM_LOG_INFO, MOD, "bootstrapped a new mesh", "peer=%s",
                   m->self);
        } else if (rv != SM_EEXIST) {
            return rv;
        }
    }
    return cons_node_start(m->node, errmsg);
}

int node_mesh_start(uv_loop_t *loop,
                    const struct node_mesh_config *cfg,
                    struct node_mesh **out,
                    char errmsg[SM_ERRMSG_SIZE])
{
    if (cfg->id == NULL || !cons_peer_id_valid(cfg->id, strlen(cfg->id))) {
        sm_errmsg_printf(errmsg,
                         "peer id '%s' must be 1 to 63 printable ASCII "
                         "characters without spaces or '@'",
                         cfg->id ? cfg->id : "");
        return SM_EINVAL;
    }
    struct node_mesh *m = sm_calloc(1, sizeof *m);
    if (m == NULL) {
        return SM_ENOMEM;
    }
    m->loop = loop;
    m->reports = sm_calloc(REPORTS_MAX, sizeof *m->reports);
    if (m->reports == NULL) {
        sm_free(m);
        return SM_ENOMEM;
    }
    snprintf(m->self, sizeof m->self, "%s", cfg->id);
    for (size_t i = 0; i < cfg->n_join && i < 8; i++) {
        snprintf(m->join[i], sizeof m->join[i], "tcp://%s", cfg->join[i]);
        m->n_join++;
    }
    m->joining = cfg->n_join > 0;
    m->log_keep = cfg->log_keep ? cfg->log_keep : 10000;
    m->place_settle_ms = cfg->place_settle_ms;
    m->hooks = cfg->hooks;
    int rv = start_net(m, cfg, errmsg);
    if (rv == SM_OK) {
        rv = start_raft(m, cfg, errmsg);
    }
    if (rv == SM_OK && start_train(m, cfg) != SM_OK) {
        sm_errmsg_printf(errmsg, "out of memory");
        rv = SM_ENOMEM;
    }
    if (rv != SM_OK) {
        /* Closing takes loop turns: the caller stops it (see mesh.h). */
        *out = m;
        return rv;
    }
    uv_timer_init(loop, &m->tick);
    m->tick.data = m;
    m->tick_started = 1;
    unsigned every = cfg->heartbeat_ms ? cfg->heartbeat_ms : 100;
    uv_timer_start(&m->tick, on_tick, every, every);
    sm_log(SM_LOG_INFO, MOD, "mesh started",
           "peer=%s listen=%s joining=%d raft_id=%" PRIx64, m->self, m->listen,
           m->joining, node_link_raft_id(m->self));
    *out = m;
    return SM_OK;
}

uint16_t node_mesh_port(const struct node_mesh *m)
{
    return m->net != NULL ? tp_net_port(m->net) : 0;
}

/* Stop order: raft first (it flushes and closes its connections), then
 * the bridge and raft_uv, then the net, then the memory. */
static void net_closed(void *arg)
{
    struct node_mesh *m = arg;
    node_mesh_link_free(m->link);
    for (size_t i = 0; i < m->n_outbox; i++) {
        sm_free(m->outbox[i].json);
    }
    for (size_t i = 0; i < m->n_actions; i++) {
        sm_free(m->actions[i].blob);
    }
    sm_free(m->reports);
    node_train_free(m->train);
    void (*cb)(void *) = m->stop_cb;
    void *cb_arg = m->stop_arg;
    sm_free(m);
    if (cb != NULL) {
        cb(cb_arg);
    }
}

static void close_net(struct node_mesh *m)
{
    if (m->net != NULL) {
        tp_net_close(m->net, net_closed, m);
    } else {
        net_closed(m);
    }
}

static void uv_closed(void *arg)
{
    struct node_mesh *m = arg;
    m->uv = NULL;
    close_net(m);
}

static void node_closed(void *arg)
{
    struct node_mesh *m = arg;
    m->node = NULL;
    if (m->uv != NULL) {
        cons_uv_close(m->uv, uv_closed, m);
    } else {
        close_net(m);
    }
}

static void tick_closed(uv_handle_t *h)
{
    struct node_mesh *m = h->data;
    if (m->node != NULL) {
        cons_node_close(m->node, node_closed, m);
    } else {
        node_closed(m);
    }
}

void node_mesh_stop(struct node_mesh *m, void (*cb)(void *arg), void *arg)
{
    m->closing = 1;
    m->stop_cb = cb;
    m->stop_arg = arg;
    if (m->tick_started) {
        uv_close((uv_handle_t *)&m->tick, tick_closed);
    } else {
        m->tick.data = m;
        tick_closed((uv_handle_t *)&m->tick);
    }
}

/* ---- Queries ------------------------------------------------------------- */

int node_mesh_is_leader(const struct node_mesh *m)
{
    return cons_node_ready(m->node);
}

static const char *state_name(enum cons_state s)
{
    switch (s) {
        case CONS_STATE_LEADER:
            return "leader";
        case CONS_STATE_FOLLOWER:
            return "follower";
        case CONS_STATE_CANDIDATE:
            return "candidate";
        default:
            return "unavailable";
    }
}

static void put_members(const struct node_mesh *m, struct node_text *b)
{
    struct cons_peer peers[MEMBERS_MAX];
    size_t n = cons_node_members(m->node, peers, MEMBERS_MAX);
    uint64_t now = now_ms(m);
    char leader[TP_PEER_ID_MAX + 1];
    leader_id(m, leader);
    node_text_puts(b, "[");
    for (size_t i = 0; i < n && i < MEMBERS_MAX; i++) {
        char id[TP_PEER_ID_MAX + 1], addr[ADDR_MAX];
        if (!split_raft_addr(peers[i].address, id, addr)) {
            continue;
        }
        int me = strcmp(id, m->self) == 0;
        uint64_t last = me ? now : node_mesh_link_last_seen(m->link, id);
        const char *health = last == 0           ? "unknown"
                             : now - last < 3000 ? "up"
                                                 : "down";
        node_text_puts(b, i ? ",{\"id\":" : "{\"id\":");
        node_text_json_str(b, id);
        node_text_puts(b, ",\"address\":");
        node_text_json_str(b, addr);
        node_text_printf(b,
                         ",\"role\":\"%s\",\"health\":\"%s\",\"leader\":%s,"
                         "\"self\":%s}",
                         cons_role_name(peers[i].role), health,
                         strcmp(id, leader) == 0 ? "true" : "false",
                         me ? "true" : "false");
    }
    node_text_puts(b, "]");
}

const char *node_mesh_role(const struct node_mesh *m)
{
    return state_name(cons_node_state(m->node));
}

size_t node_mesh_waiting(const struct node_mesh *m)
{
    return m->n_outbox;
}

int node_mesh_add_action(struct node_mesh *m, const struct cons_cmd *cmd)
{
    if (cmd->type != CONS_CMD_ACTION_DECIDE &&
        cmd->type != CONS_CMD_ACTION_STATE) {
        return SM_EINVAL;
    }
    if (m->n_actions == ACTIONS_MAX) {
        return SM_EAGAIN;
    }
    size_t size;
    int rv = cons_cmd_encoded_size(cmd, &size);
    if (rv != SM_OK) {
        return rv;
    }
    struct action_item *a = &m->actions[m->n_actions];
    a->blob = sm_malloc(size);
    if (a->blob == NULL) {
        return SM_ENOMEM;
    }
    rv = cons_cmd_encode(cmd, a->blob, size, &a->len);
    if (rv != SM_OK) {
        sm_free(a->blob);
        return rv;
    }
    int decide = cmd->type == CONS_CMD_ACTION_DECIDE;
    snprintf(a->id, sizeof a->id, "%s",
             decide ? cmd->u.decision.id : cmd->u.action.id);
    a->decide = decide;
    a->target = decide ? CONS_ACT_PENDING : cmd->u.action.state;
    a->time_ms = decide ? cmd->u.decision.time_ms : cmd->u.action.time_ms;
    m->n_actions++;
    m->actions_sent_ms = 0;
    return SM_OK;
}

static void put_placement(const struct node_mesh *m, struct node_text *b)
{
    static struct cons_place_entry e[SERVICES_MAX];
    struct cons_peer peers[MEMBERS_MAX];
    size_t n_peers = cons_node_members(m->node, peers, MEMBERS_MAX);
    if (n_peers > MEMBERS_MAX) {
        n_peers = MEMBERS_MAX;
    }
    uint64_t epoch = 0;
    size_t n =
        cons_fsm_placement(cons_node_fsm(m->node), &epoch, e, SERVICES_MAX);
    node_text_printf(b, ",\"placement\":{\"epoch\":%" PRIu64 ",\"shards\":[",
                     epoch);
    for (size_t i = 0; i < n && i < SERVICES_MAX; i++) {
        char owner[TP_PEER_ID_MAX + 1], replica[TP_PEER_ID_MAX + 1];
        node_text_puts(b, i ? ",{\"service\":" : "{\"service\":");
        node_text_json_str(b, e[i].service);
        node_text_puts(b, ",\"owner\":");
        const char *o = peer_of(peers, n_peers, e[i].owner, owner);
        if (o != NULL) {
            node_text_json_str(b, o);
        } else {
            node_text_puts(b, "null");
        }
        node_text_puts(b, ",\"replica\":");
        const char *r = peer_of(peers, n_peers, e[i].replica, replica);
        if (r != NULL) {
            node_text_json_str(b, r);
        } else {
            node_text_puts(b, "null");
        }
        node_text_puts(b, "}");
    }
    node_text_puts(b, "]}");
}

/* The committed versions and this peer's part in training rounds. */
static void put_training(const struct node_mesh *m, struct node_text *b)
{
    struct cons_versions v;
    cons_fsm_versions(cons_node_fsm(m->node), &v);
    node_text_printf(b,
                     ",\"model_version\":%" PRIu64 ",\"cbn_version\":%" PRIu64,
                     v.model_version, v.cbn_version);
    if (m->train == NULL) {
        return;
    }
    struct node_train_stats t;
    node_train_stats(m->train, &t);
    node_text_printf(
        b,
        ",\"training\":{\"round\":%" PRIu64
        ",\"round_pending\":%zu"
        ",\"rounds_started\":%" PRIu64 ",\"rounds_committed\":%" PRIu64
        ",\"last_round_ms\":%" PRIu64 ",\"shards_trained\":%" PRIu64
        ",\"shards_received\":%" PRIu64 ",\"shards_reassigned\":%" PRIu64
        ",\"installs\":%" PRIu64 ",\"install_failures\":%" PRIu64
        ",\"windows_sent\":%" PRIu64 ",\"windows_received\":%" PRIu64
        ",\"windows_caught_up\":%" PRIu64 ",\"windows_resent\":%" PRIu64
        ",\"windows_unacked\":%zu,\"windows_given_up\":%" PRIu64
        ",\"bytes_sent\":%" PRIu64 ",\"bytes_received\":%" PRIu64 "}",
        t.round_version, t.round_pending, t.rounds_started, t.rounds_committed,
        t.round_ms, t.shards_trained, t.shards_received, t.shards_reassigned,
        t.installs, t.install_failures, t.windows_sent, t.windows_received,
        t.windows_caught_up, t.windows_resent, t.windows_unacked,
        t.windows_given_up, t.bytes_sent, t.bytes_received);
}

void node_mesh_status_json(const struct node_mesh *m, struct node_text *b)
{
    char leader[TP_PEER_ID_MAX + 1];
    leader_id(m, leader);
    struct cons_node_stats st;
    cons_node_stats(m->node, &st);
    node_text_puts(b, ",\"leader\":");
    if (leader[0] != '\0') {
        node_text_json_str(b, leader);
    } else {
        node_text_puts(b, "null");
    }
    node_text_printf(b, ",\"term\":%" PRIu64 ",\"mesh\":{\"listen\":",
                     cons_node_term(m->node));
    node_text_json_str(b, m->listen);
    node_text_printf(b,
                     ",\"joining\":%s,\"last_index\":%" PRIu64
                     ",\"last_applied\":%" PRIu64
                     ",\"diagnoses_waiting\":%zu,\"members\":",
                     m->joining ? "true" : "false", st.last_index,
                     st.last_applied, m->n_outbox);
    put_members(m, b);
    node_text_printf(b, ",\"actions_waiting\":%zu,\"log_actions\":{",
                     m->n_actions);
    const struct cons_fsm *fsm = cons_node_fsm(m->node);
    for (int i = 0; i < CONS_ACT__COUNT; i++) {
        node_text_printf(
            b, "%s\"%s\":%zu", i ? "," : "",
            cons_action_state_name((enum cons_action_state)i),
            cons_fsm_actions(fsm, (enum cons_action_state)i, NULL, 0));
    }
    struct cons_fsm_counts c;
    cons_fsm_counts(fsm, &c);
    node_text_printf(b,
                     "},\"log_records\":{\"diagnoses\":%zu,\"actions\":%zu"
                     ",\"diagnoses_dropped\":%" PRIu64
                     ",\"actions_dropped\":%" PRIu64 ",\"keep\":%" PRIu64 "}",
                     c.diagnoses, c.actions, c.diagnoses_dropped,
                     c.actions_dropped, m->log_keep);
    put_placement(m, b);
    put_training(m, b);
    node_text_puts(b, "}");
}

void node_mesh_members_json(const struct node_mesh *m, struct node_text *b)
{
    node_text_puts(b, "{\"members\":");
    put_members(m, b);
    node_text_puts(b, "}");
}

int node_mesh_add_diagnosis(struct node_mesh *m,
                            const char *id,
                            uint64_t window_end_ns,
                            const char *json,
                            size_t len)
{
    if (strlen(id) > CONS_ID_MAX || len > CONS_JSON_MAX) {
        return SM_ETOOBIG;
    }
    if (m->n_outbox == OUTBOX_MAX) {
        return SM_EAGAIN;
    }
    struct outbox_item *o = &m->outbox[m->n_outbox];
    o->json = sm_malloc(len + 1);
    if (o->json == NULL) {
        return SM_ENOMEM;
    }
    memcpy(o->json, json, len);
    o->json[len] = '\0';
    snprintf(o->id, sizeof o->id, "%s", id);
    o->time_ms = window_end_ns / 1000000;
    m->n_outbox++;
    m->outbox_sent_ms = 0; /* send at the next tick */
    return SM_OK;
}

void node_mesh_diagnoses_json(const struct node_mesh *m,
                              size_t limit,
                              struct node_text *b)
{
    struct cons_diagnosis *d = sm_calloc(limit ? limit : 1, sizeof *d);
    node_text_puts(b, "{\"diagnoses\":[");
    if (d != NULL) {
        size_t n = cons_fsm_diagnoses(cons_node_fsm(m->node), d, limit);
        for (size_t i = 0; i < n; i++) {
            if (i) {
                node_text_puts(b, ",");
            }
            node_text_puts(b, d[i].json);
        }
        sm_free(d);
    }
    node_text_puts(b, "]}");
}

int node_mesh_member_change(struct node_mesh *m,
                            int add,
                            const char *id,
                            const char *addr,
                            char leader[TP_PEER_ID_MAX + 1])
{
    leader_id(m, leader);
    char text[RAFT_ADDR + 16];
    if (add) {
        if (snprintf(text, sizeof text, "%s@tcp://%s", id, addr) >=
            (int)sizeof text) {
            return SM_EINVAL;
        }
    } else {
        snprintf(text, sizeof text, "%s", id);
    }
    if (cons_node_ready(m->node)) {
        return add ? add_member(m, text) : remove_member(m, text);
    }
    if (leader[0] == '\0') {
        return SM_ENOTLEADER;
    }
    char body[RAFT_ADDR + 32];
    snprintf(body, sizeof body, "%s\n%s", add ? "add" : "remove", text);
    const struct node_link_ops *ops = node_mesh_link_ops(m->link);
    int rv = ops->send(ops->arg, leader, TP_MSG_FWD_REQ, 0, body, strlen(body));
    return rv == SM_OK ? SM_EAGAIN : rv;
}

void node_mesh_set_services(struct node_mesh *m,
                            const char *const *names,
                            const uint64_t *counts,
                            size_t n)
{
    m->own.n = 0;
    for (size_t i = 0; i < n && m->own.n < SERVICES_MAX; i++) {
        if (strlen(names[i]) > CONS_NAME_MAX || names[i][0] == '\0' ||
            strchr(names[i], '\n') != NULL) {
            continue;
        }
        snprintf(m->own.name[m->own.n], sizeof m->own.name[0], "%s", names[i]);
        m->own.count[m->own.n] = counts[i];
        m->own.n++;
    }
}

int node_mesh_action_owner(const struct node_mesh *m,
                           const char *id,
                           char peer[TP_PEER_ID_MAX + 1])
{
    const struct cons_fsm *fsm = cons_node_fsm(m->node);
    struct cons_action act;
    struct cons_diagnosis diag;
    if (cons_fsm_action_get(fsm, id, &act) != SM_OK) {
        return SM_ENOTFOUND;
    }
    if (cons_fsm_diagnosis_get(fsm, act.diagnosis_id, &diag) != SM_OK) {
        peer[0] = '\0'; /* its diagnosis was dropped: decider unknown */
        return SM_OK;
    }
    struct sm_arena arena;
    sm_arena_init(&arena, 4 * strlen(diag.json) + 4096);
    const struct node_json *root;
    char err[SM_ERRMSG_SIZE];
    const char *who = NULL;
    if (node_json_parse((const uint8_t *)diag.json, strlen(diag.json), &arena,
                        &root, err) == SM_OK) {
        who = node_json_str(node_json_get(root, "decided_by"));
    }
    int rv = who != NULL && tp_peer_id_valid(who, strlen(who)) ? SM_OK
                                                               : SM_ENOTFOUND;
    if (rv == SM_OK) {
        snprintf(peer, TP_PEER_ID_MAX + 1, "%s", who);
    }
    sm_arena_free(&arena);
    return rv;
}

int node_mesh_send(struct node_mesh *m,
                   const char *peer,
                   int type,
                   uint64_t id,
                   const void *data,
                   size_t len)
{
    if (m->closing) {
        return SM_ECLOSED;
    }
    const struct node_link_ops *ops = node_mesh_link_ops(m->link);
    return ops->send(ops->arg, peer, type, id, data, len);
}

int node_mesh_forward_action(struct node_mesh *m,
                             const char *peer,
                             int rollback,
                             const char *id)
{
    if (strlen(id) > CONS_ID_MAX || strchr(id, '\n') != NULL) {
        return SM_EINVAL;
    }
    char text[CONS_ID_MAX + 16];
    int n = snprintf(text, sizeof text, "act\n%s %s",
                     rollback ? "rollback" : "approve", id);
    const struct node_link_ops *ops = node_mesh_link_ops(m->link);
    if (peer[0] != '\0') {
        return ops->send(ops->arg, peer, TP_MSG_FWD_REQ, 0, text, (size_t)n);
    }
    /* decider unknown: every other member; only the decider has it */
    struct cons_peer peers[MEMBERS_MAX];
    size_t k = cons_node_members(m->node, peers, MEMBERS_MAX);
    int rv = SM_ENOTFOUND;
    for (size_t i = 0; i < k && i < MEMBERS_MAX; i++) {
        char id2[TP_PEER_ID_MAX + 1], addr[ADDR_MAX];
        if (split_raft_addr(peers[i].address, id2, addr) &&
            strcmp(id2, m->self) != 0 &&
            ops->send(ops->arg, id2, TP_MSG_FWD_REQ, 0, text, (size_t)n) ==
                SM_OK) {
            rv = SM_OK;
        }
    }
    return rv;
}

int node_mesh_train_request(struct node_mesh *m)
{
    if (m->train == NULL || m->closing) {
        return SM_EINVAL;
    }
    int rv = node_train_request(m->train);
    if (rv == SM_OK) {
        train_tick(m, now_ms(m)); /* a leader starts the round now */
    }
    return rv;
}

struct node_train *node_mesh_train(struct node_mesh *m)
{
    return m->closing ? NULL : m->train;
}

void node_mesh_stats(const struct node_mesh *m, struct node_mesh_stats *out)
{
    memset(out, 0, sizeof *out);
    out->leader = cons_node_ready(m->node);
    out->term = cons_node_term(m->node);
    struct cons_peer peers[MEMBERS_MAX];
    out->members = cons_node_members(m->node, peers, MEMBERS_MAX);
    out->diagnoses_waiting = m->n_outbox;
    out->actions_waiting = m->n_actions;
    out->placements_committed = m->placements_committed;
    if (m->train != NULL) {
        node_train_stats(m->train, &out->train);
    }
    node_mesh_link_stats(m->link, &out->link);
    if (m->uv != NULL) {
        cons_uv_stats(m->uv, &out->raft);
    }
}
