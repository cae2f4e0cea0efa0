/* The real mesh link: envelopes, sealed by the secure channel, over a
 * tp_net. See mesh_link_impl.h for the frame format and session rules. */
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "base/alloc.h"
#include "base/log.h"
#include "consensus/consensus.h"
#include "node/mesh_link_impl.h"

#define MOD             "mesh"
#define FRAME_MAGIC     0x53
#define FRAME_VERSION   1
#define ADDR_MAX        63
#define RETRY_MS        1000
#define QUEUE_BYTES_MAX ((size_t)64 << 20)
#define KIND_WHO        0x57 /* "who are you?", answered with KIND_IAM */
#define KIND_IAM        0x49 /* the answer: our peer id */
#define PROBES_MAX      16   /* net entries kept for probes and answers */

/* A message waiting for a session. */
struct pending
{
    struct pending *next;
    int type;
    uint64_t id;
    size_t len;
    uint8_t data[];
};

struct peer
{
    char id[TP_PEER_ID_MAX + 1];
    char addr[ADDR_MAX + 1];
    struct tp_net_id nid;
    bool in_net;
    struct pending *head, *tail;
    size_t queued, queued_bytes;
    uint64_t init_sent_ms; /* 0: no handshake in flight */
    uint64_t last_seen_ms; /* last authenticated message from it */
};

struct node_mesh_link
{
    char self[TP_PEER_ID_MAX + 1];
    struct tp_chan *chan;
    struct tp_net *net;
    char listen_addr[ADDR_MAX + 1];
    node_link_recv_cb recv_cb;
    void *recv_arg;
    struct node_link_ops ops;
    uint32_t send_timeout_ms;
    size_t queue_max;
    struct peer *peers;
    size_t n_peers, cap_peers;
    uint64_t now_ms;
    struct tp_buf out;   /* frames being made */
    struct tp_buf plain; /* opened plaintexts */
    struct tp_buf env;   /* envelopes being encoded */
    struct node_mesh_link_stats st;
    uint64_t warned_bad_hello;
    /* Net entries for addresses whose peer id is unknown (probes), reused
     * round-robin so hostile probes cannot grow them. */
    struct tp_net_id probe_ids[PROBES_MAX];
    bool probe_used[PROBES_MAX];
    size_t probe_next;
    node_link_iam_cb iam_cb;
    void *iam_arg;
};

/* The net id of a peer: the same hash as its raft id. */
static struct tp_net_id net_id(const char *peer)
{
    return (struct tp_net_id){node_link_raft_id(peer)};
}

static struct peer *find_peer(const struct node_mesh_link *l, const char *id)
{
    for (size_t i = 0; i < l->n_peers; i++) {
        if (strcmp(l->peers[i].id, id) == 0) {
            return &l->peers[i];
        }
    }
    return NULL;
}

static int valid_addr(const char *addr)
{
    size_t n = strlen(addr);
    return n > 6 && n <= ADDR_MAX && strncmp(addr, "tcp://", 6) == 0;
}

static void drop_queue(struct peer *p)
{
    while (p->head != NULL) {
        struct pending *m = p->head;
        p->head = m->next;
        sm_free(m);
    }
    p->tail = NULL;
    p->queued = p->queued_bytes = 0;
}

static void on_sent(void *arg, int status)
{
    struct node_mesh_link *l = arg;
    if (status != SM_OK) {
        l->st.send_errors++;
    }
}

/* Sends the frame in l->out (from @at) to @p with the link header. */
static int send_frame(struct node_mesh_link *l, struct peer *p, size_t at)
{
    size_t alen = strlen(l->listen_addr);
    size_t flen = l->out.len - at;
    uint8_t *msg = sm_malloc(3 + alen + flen);
    if (msg == NULL) {
        l->st.send_errors++;
        return SM_ENOMEM;
    }
    msg[0] = FRAME_MAGIC;
    msg[1] = FRAME_VERSION;
    msg[2] = (uint8_t)alen;
    memcpy(msg + 3, l->listen_addr, alen);
    memcpy(msg + 3 + alen, l->out.data + at, flen);
    int rv = l->net != NULL && p->in_net
                 ? tp_net_send(l->net, p->nid, msg, 3 + alen + flen,
                               l->send_timeout_ms, on_sent, l)
                 : SM_ENOTFOUND;
    if (rv != SM_OK) {
        l->st.send_errors++;
    }
    sm_free(msg);
    return rv;
}

/* Whether a handshake with @p may start now: none in flight, or the last
 * INIT is a retry interval old (a hostile peer cannot make us spin). */
static bool handshake_due(const struct node_mesh_link *l, const struct peer *p)
{
    return p->init_sent_ms == 0 || l->now_ms == 0 ||
           l->now_ms >= p->init_sent_ms + RETRY_MS;
}

static void start_handshake(struct node_mesh_link *l, struct peer *p)
{
    l->out.len = 0;
    if (tp_chan_handshake_make(l->chan, p->id, &l->out) != SM_OK) {
        return;
    }
    p->init_sent_ms = l->now_ms ? l->now_ms : 1;
    l->st.handshakes++;
    send_frame(l, p, 0);
}

/* Seals and sends one envelope to @p, which has a session. */
static int seal_send(struct node_mesh_link *l,
                     struct peer *p,
                     int type,
                     uint64_t id,
                     const void *data,
                     size_t len)
{
    struct tp_env env = {
        .type = type,
        .from = l->self,
        .from_len = strlen(l->self),
        .id = id,
        .body = data,
        .body_len = len,
    };
    l->env.len = 0;
    int rv = tp_env_encode_buf(&env, &l->env);
    if (rv != SM_OK) {
        return rv;
    }
    l->out.len = 0;
    rv = tp_chan_seal(l->chan, p->id, type, l->env.data, l->env.len, &l->out);
    if (rv != SM_OK) {
        return rv;
    }
    /* A message the net refuses now (unknown peer, too big, its queue
     * full) is reported; one it takes may still time out later, unseen. */
    rv = send_frame(l, p, 0);
    l->st.sent += rv == SM_OK;
    return rv;
}

static void flush_queue(struct node_mesh_link *l, struct peer *p)
{
    seal_send(l, p, TP_MSG_HELLO, 0, l->listen_addr, strlen(l->listen_addr));
    while (p->head != NULL && tp_chan_has_session(l->chan, p->id)) {
        struct pending *m = p->head;
        p->head = m->next;
        p->queued--;
        p->queued_bytes -= m->len;
        seal_send(l, p, m->type, m->id, m->data, m->len);
        sm_free(m);
    }
    if (p->head == NULL) {
        p->tail = NULL;
    }
    p->init_sent_ms = 0;
}

static int enqueue(struct node_mesh_link *l,
                   struct peer *p,
                   int type,
                   uint64_t id,
                   const void *data,
                   size_t len)
{
    if (p->queued >= l->queue_max || p->queued_bytes + len > QUEUE_BYTES_MAX) {
        l->st.queued_dropped++;
        return SM_EAGAIN;
    }
    struct pending *m = sm_malloc(sizeof *m + len);
    if (m == NULL) {
        return SM_ENOMEM;
    }
    m->next = NULL;
    m->type = type;
    m->id = id;
    m->len = len;
    if (len > 0) {
        memcpy(m->data, data, len);
    }
    if (p->tail != NULL) {
        p->tail->next = m;
    } else {
        p->head = m;
    }
    p->tail = m;
    p->queued++;
    p->queued_bytes += len;
    return SM_OK;
}

static int link_send(void *arg,
                     const char *peer,
                     int type,
                     uint64_t id,
                     const void *data,
                     size_t len)
{
    struct node_mesh_link *l = arg;
    struct peer *p = find_peer(l, peer);
    if (p == NULL) {
        return SM_ENOTFOUND;
    }
    if (tp_chan_has_session(l->chan, p->id) && p->head == NULL) {
        return seal_send(l, p, type, id, data, len);
    }
    int rv = enqueue(l, p, type, id, data, len);
    if (rv == SM_OK && p->init_sent_ms == 0) {
        start_handshake(l, p);
    }
    return rv;
}

/* ---- Inbound ------------------------------------------------------------- */

static struct peer *add_peer_entry(struct node_mesh_link *l, const char *id)
{
    if (l->n_peers == l->cap_peers) {
        size_t cap = l->cap_peers ? 2 * l->cap_peers : 8;
        struct peer *grown = sm_realloc(l->peers, cap * sizeof *grown);
        if (grown == NULL) {
            return NULL;
        }
        l->peers = grown;
        l->cap_peers = cap;
    }
    struct peer *p = &l->peers[l->n_peers++];
    memset(p, 0, sizeof *p);
    snprintf(p->id, sizeof p->id, "%s", id);
    p->nid = net_id(id);
    return p;
}

/* The peer entry for an authenticated sender, learning its address from
 * the frame's hint when we have none. */
static struct peer *sender(struct node_mesh_link *l,
                           const char *id,
                           const char *hint)
{
    struct peer *p = find_peer(l, id);
    if (p == NULL && valid_addr(hint)) {
        if (node_mesh_link_peer_add(l, id, hint) != SM_OK) {
            return NULL;
        }
        p = find_peer(l, id);
        sm_log(SM_LOG_INFO, MOD, "peer learned from its handshake",
               "peer=%s addr=%s", id, hint);
    }
    return p;
}

static void rejected(struct node_mesh_link *l,
                     const struct tp_chan_result *res,
                     const char *hint)
{
    if (res->reason == TP_CHAN_BAD_HELLO && l->warned_bad_hello++ % 100 == 0) {
        sm_log(SM_LOG_WARN, MOD,
               "refused a handshake: another cluster secret, or tampered",
               "from_addr=%s count=%" PRIu64, hint, l->warned_bad_hello);
    }
    if (res->peer == NULL) {
        return;
    }
    struct peer *p = find_peer(l, res->peer);
    if (p == NULL) {
        return;
    }
    if (res->reason == TP_CHAN_STALE_SESSION &&
        tp_chan_has_session(l->chan, p->id)) {
        /* The responder has not seen our confirmation yet. */
        seal_send(l, p, TP_MSG_HELLO, 0, l->listen_addr,
                  strlen(l->listen_addr));
    } else if ((res->reason == TP_CHAN_UNKNOWN_PEER ||
                res->reason == TP_CHAN_STALE_SESSION) &&
               handshake_due(l, p)) {
        /* We restarted, or it did: make a session again. */
        start_handshake(l, p);
    }
}

/* A data frame from a peer we have no session with: we restarted and it
 * did not. The sender's id is in the frame's clear header (kind, version,
 * id length, id); unauthenticated, it only makes us start a handshake with
 * a peer we already know, at most once a second. */
static void unknown_sender(struct node_mesh_link *l,
                           const uint8_t *frame,
                           size_t len)
{
    if (len < 4 || frame[2] == 0 || frame[2] > TP_PEER_ID_MAX ||
        len < 3u + frame[2]) {
        return;
    }
    char id[TP_PEER_ID_MAX + 1];
    memcpy(id, frame + 3, frame[2]);
    id[frame[2]] = '\0';
    struct peer *p = find_peer(l, id);
    if (p != NULL && handshake_due(l, p)) {
        start_handshake(l, p);
    }
}

static void on_handshake(struct node_mesh_link *l,
                         const uint8_t *frame,
                         size_t len,
                         const char *hint)
{
    struct tp_chan_result res;
    l->out.len = 0;
    if (tp_chan_handshake_accept(l->chan, frame, len, &l->out, &res) != SM_OK) {
        rejected(l, &res, hint);
        return;
    }
    struct peer *p = sender(l, res.peer, hint);
    if (p == NULL) {
        return;
    }
    if (res.send) {
        send_frame(l, p, 0);
    }
    if (res.established) {
        flush_queue(l, p);
    }
}

static void on_data(struct node_mesh_link *l,
                    const uint8_t *frame,
                    size_t len,
                    const char *hint)
{
    struct tp_chan_result res;
    l->plain.len = 0;
    if (tp_chan_open(l->chan, frame, len, &l->plain, &res) != SM_OK) {
        if (res.reason == TP_CHAN_UNKNOWN_PEER) {
            unknown_sender(l, frame, len);
        }
        rejected(l, &res, hint);
        return;
    }
    struct tp_env env;
    if (tp_env_decode(res.data, res.len, NULL, &env, NULL) != SM_OK ||
        env.type != res.type || env.from_len != strlen(res.peer) ||
        memcmp(env.from, res.peer, env.from_len) != 0) {
        l->st.bad_envelopes++;
        return;
    }
    struct peer *p = sender(l, res.peer, hint);
    if (p != NULL && res.established) {
        flush_queue(l, p);
    }
    l->st.received++;
    if (p != NULL) {
        p->last_seen_ms = l->now_ms;
    }
    if (env.type != TP_MSG_HELLO && l->recv_cb != NULL) {
        l->recv_cb(l->recv_arg, res.peer, env.type, env.id, env.body,
                   env.body_len);
    }
}

/* ---- Probes: learning a peer's id from its address ------------------------
 */

/* Sends a one-byte-kind frame (WHO or IAM with @body) to @addr through a
 * probe entry of the net. */
static int send_probe_frame(struct node_mesh_link *l,
                            const char *addr,
                            uint8_t kind,
                            const char *body)
{
    if (l->net == NULL || !valid_addr(addr)) {
        return SM_EINVAL;
    }
    size_t slot = l->probe_next++ % PROBES_MAX;
    char key[ADDR_MAX + 8];
    snprintf(key, sizeof key, "probe:%s", addr);
    struct tp_net_id nid = net_id(key);
    if (l->probe_used[slot]) {
        tp_net_peer_remove(l->net, l->probe_ids[slot]);
    }
    l->probe_ids[slot] = nid;
    l->probe_used[slot] = tp_net_peer_add(l->net, nid, addr) == SM_OK;
    if (!l->probe_used[slot]) {
        return SM_EIO;
    }
    size_t alen = strlen(l->listen_addr), blen = strlen(body);
    uint8_t msg[3 + ADDR_MAX + 1 + TP_PEER_ID_MAX];
    msg[0] = FRAME_MAGIC;
    msg[1] = FRAME_VERSION;
    msg[2] = (uint8_t)alen;
    memcpy(msg + 3, l->listen_addr, alen);
    msg[3 + alen] = kind;
    memcpy(msg + 4 + alen, body, blen);
    return tp_net_send(l->net, nid, msg, 4 + alen + blen, l->send_timeout_ms,
                       on_sent, l);
}

int node_mesh_link_probe(struct node_mesh_link *l, const char *addr)
{
    return send_probe_frame(l, addr, KIND_WHO, "");
}

void node_mesh_link_on_iam(struct node_mesh_link *l,
                           node_link_iam_cb cb,
                           void *arg)
{
    l->iam_cb = cb;
    l->iam_arg = arg;
}

/* A WHO is answered to its sender's address hint; an IAM is reported. Both
 * are unauthenticated: an id only says whom to handshake with. */
static void on_probe(struct node_mesh_link *l,
                     const uint8_t *frame,
                     size_t len,
                     const char *hint)
{
    if (frame[0] == KIND_WHO && len == 1) {
        send_probe_frame(l, hint, KIND_IAM, l->self);
        return;
    }
    char id[TP_PEER_ID_MAX + 1];
    if (frame[0] != KIND_IAM || len < 2 || len - 1 > TP_PEER_ID_MAX ||
        !tp_peer_id_valid((const char *)frame + 1, len - 1)) {
        l->st.bad_frames++;
        return;
    }
    memcpy(id, frame + 1, len - 1);
    id[len - 1] = '\0';
    if (l->iam_cb != NULL && valid_addr(hint)) {
        l->iam_cb(l->iam_arg, id, hint);
    }
}

void node_mesh_link_net_recv(void *arg,
                             const struct tp_net_from *from,
                             const void *data,
                             size_t len)
{
    struct node_mesh_link *l = arg;
    (void)from;
    const uint8_t *b = data;
    if (len < 3 || b[0] != FRAME_MAGIC || b[1] != FRAME_VERSION ||
        b[2] > ADDR_MAX || len < 3u + b[2] + 1u) {
        l->st.bad_frames++;
        return;
    }
    char hint[ADDR_MAX + 1];
    memcpy(hint, b + 3, b[2]);
    hint[b[2]] = '\0';
    if (strlen(hint) != b[2]) {
        l->st.bad_frames++;
        return;
    }
    const uint8_t *frame = b + 3 + b[2];
    size_t flen = len - 3 - b[2];
    if (frame[0] == KIND_WHO || frame[0] == KIND_IAM) {
        on_probe(l, frame, flen, hint);
    } else if (tp_chan_is_handshake(frame, flen)) {
        on_handshake(l, frame, flen, hint);
    } else {
        on_data(l, frame, flen, hint);
    }
}

/* ---- Peers and life cycle ------------------------------------------------ */

int node_mesh_link_peer_add(struct node_mesh_link *l,
                            const char *peer,
                            const char *addr)
{
    if (!tp_peer_id_valid(peer, strlen(peer)) || strcmp(peer, l->self) == 0 ||
        !valid_addr(addr)) {
        return SM_EINVAL;
    }
    struct peer *p = find_peer(l, peer);
    if (p == NULL && (p = add_peer_entry(l, peer)) == NULL) {
        return SM_ENOMEM;
    }
    if (p->in_net && strcmp(p->addr, addr) == 0) {
        return SM_OK;
    }
    if (p->in_net && l->net != NULL) {
        tp_net_peer_remove(l->net, p->nid);
        p->in_net = false;
    }
    snprintf(p->addr, sizeof p->addr, "%s", addr);
    if (l->net != NULL && tp_net_peer_add(l->net, p->nid, p->addr) == SM_OK) {
        p->in_net = true;
    }
    return SM_OK;
}

void node_mesh_link_peer_remove(struct node_mesh_link *l, const char *peer)
{
    struct peer *p = find_peer(l, peer);
    if (p == NULL) {
        return;
    }
    drop_queue(p);
    if (p->in_net && l->net != NULL) {
        tp_net_peer_remove(l->net, p->nid);
    }
    tp_chan_forget(l->chan, p->id);
    *p = l->peers[--l->n_peers];
}

int node_mesh_link_connected(const struct node_mesh_link *l, const char *peer)
{
    return tp_chan_has_session(l->chan, peer);
}

uint64_t node_mesh_link_last_seen(const struct node_mesh_link *l,
                                  const char *peer)
{
    const struct peer *p = find_peer(l, peer);
    return p != NULL ? p->last_seen_ms : 0;
}

const char *node_mesh_link_peer_addr(const struct node_mesh_link *l,
                                     const char *peer)
{
    const struct peer *p = find_peer(l, peer);
    return p != NULL ? p->addr : NULL;
}

void node_mesh_link_tick(struct node_mesh_link *l, uint64_t now_ms)
{
    l->now_ms = now_ms;
    for (size_t i = 0; i < l->n_peers; i++) {
        struct peer *p = &l->peers[i];
        if (p->head != NULL && handshake_due(l, p)) {
            start_handshake(l, p);
        }
    }
}

const struct node_link_ops *node_mesh_link_ops(struct node_mesh_link *l)
{
    return &l->ops;
}

void node_mesh_link_stats(const struct node_mesh_link *l,
                          struct node_mesh_link_stats *out)
{
    *out = l->st;
    tp_chan_stats(l->chan, &out->chan);
    if (l->net != NULL) {
        tp_net_stats(l->net, &out->net);
    } else {
        memset(&out->net, 0, sizeof out->net);
    }
}

int node_mesh_link_new(const struct node_mesh_link_config *cfg,
                       node_link_recv_cb recv_cb,
                       void *recv_arg,
                       struct node_mesh_link **out,
                       char errmsg[SM_ERRMSG_SIZE])
{
    if (!tp_peer_id_valid(cfg->self, strlen(cfg->self))) {
        sm_errmsg_printf(errmsg,
                         "peer id '%s' must be 1 to 63 printable ASCII "
                         "characters without spaces",
                         cfg->self);
        return SM_EINVAL;
    }
    struct node_mesh_link *l = sm_calloc(1, sizeof *l);
    if (l == NULL) {
        return SM_ENOMEM;
    }
    int rv = tp_chan_new(cfg->secret, cfg->self, &l->chan);
    if (rv != SM_OK) {
        sm_free(l);
        sm_errmsg_printf(errmsg, "cannot set up the secure channel: %s",
                         sm_strerror(rv));
        return rv;
    }
    snprintf(l->self, sizeof l->self, "%s", cfg->self);
    l->recv_cb = recv_cb;
    l->recv_arg = recv_arg;
    l->send_timeout_ms = cfg->send_timeout_ms ? cfg->send_timeout_ms : 2000;
    l->queue_max = cfg->queue_max ? cfg->queue_max : 256;
    l->ops = (struct node_link_ops){l, link_send};
    *out = l;
    return SM_OK;
}

void node_mesh_link_attach(struct node_mesh_link *l,
                           struct tp_net *net,
                           const char *listen_addr)
{
    l->net = net;
    snprintf(l->listen_addr, sizeof l->listen_addr, "%s",
             listen_addr != NULL ? listen_addr : "");
    for (size_t i = 0; i < l->n_peers; i++) {
        struct peer *p = &l->peers[i];
        if (!p->in_net && tp_net_peer_add(net, p->nid, p->addr) == SM_OK) {
            p->in_net = true;
        }
    }
}

void node_mesh_link_free(struct node_mesh_link *l)
{
    if (l == NULL) {
        return;
    }
    for (size_t i = 0; i < l->n_peers; i++) {
        drop_queue(&l->peers[i]);
    }
    sm_free(l->peers);
    tp_chan_free(l->chan);
    tp_buf_free(&l->out);
    tp_buf_free(&l->plain);
    tp_buf_free(&l->env);
    sm_free(l);
}

uint64_t node_link_raft_id(const char *peer)
{
    return cons_peer_raft_id(peer);
}
