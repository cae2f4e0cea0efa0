/* The network layer's public functions, and the real net: nng sockets
 * driven from a libuv loop.
 *
 * Sockets. A net listens with one pull0 socket: every peer that sends to us
 * dials it, and pull0 fair-queues what all of them push. For each remote
 * peer we open one push0 socket dialing that peer's listener. One socket
 * per peer, not one for all, because push0 load-balances across its pipes:
 * a shared socket would send to whichever peer is ready. push0 is unbuffered
 * here (the default send buffer of 0), so a send completes only when a live
 * connection takes the message; with no connection it waits in nng until its
 * own timeout. The dialer is started with NNG_FLAG_NONBLOCK, so a peer that
 * is down is redialed in the background instead of failing the add, and the
 * redial delay is ours (reconnect_min_ms/max_ms), not nng's fixed second.
 *
 * Threads. nng completes operations on its own threads. Their callbacks
 * touch only the two queues under `mu` (finished sends, received messages)
 * and wake the loop with uv_async_send; nothing else in the net is theirs.
 * uv_async_send coalesces, so the loop's callback drains both queues
 * completely. Neither queue allocates on an nng thread: finished sends are
 * linked through the send itself, and received messages go to a ring sized
 * at creation. When the ring is full the receive callback stops re-arming
 * its aio and the loop re-arms it after draining, so a slow loop pushes
 * back on TCP instead of growing memory.
 *
 * Bounded sends. Each send owns one nng aio with its own timeout. A peer
 * may have at most queue_max sends pending; past that tp_net_send refuses
 * at once, so a peer that is down holds at most queue_max messages for at
 * most their timeout.
 *
 * Shutdown. Closing a socket makes nng finish its pending aios with
 * NNG_ECLOSED; nng_aio_stop then waits for each callback to return, so once
 * every socket is closed and every aio stopped no nng thread can touch the
 * net again, and only then is the async handle closed (uv_async_send after
 * uv_close is undefined). The handle's close callback reports the queued
 * outcomes, frees everything and calls the user back. A removed peer lives
 * on, unlinked from lookups, until its last pending send is reported.
 *
 * nng 1.5.2 itself loses a message now and then: one handed to a connection
 * that is closing is dropped and leaked (its bug #1713), and closing a
 * dialer or listener during a connection's set-up can leak nng's internals
 * (races fixed in 1.6.0). Both are bounded by connection churn; the send
 * still reports SM_OK, which is why delivery is documented as best effort. */
#include <inttypes.h>
#include <nng/nng.h>
#include <nng/protocol/pipeline0/pull.h>
#include <nng/protocol/pipeline0/push.h>
#include <stdio.h>
#include <string.h>
#include <uv.h>

#include "base/alloc.h"
#include "transport/net_internal.h"

/* ---- Shared by both implementations ------------------------------------ */

void tp_net_config_default(struct tp_net_config *cfg)
{
    cfg->max_msg = TP_NET_MAX_MSG_DEFAULT;
    cfg->queue_max = 256;
    cfg->recv_queue_max = 1024;
    cfg->reconnect_min_ms = 50;
    cfg->reconnect_max_ms = 2000;
}

int tp__net_config_check(const struct tp_net_config *cfg, char *errmsg)
{
    if (cfg->max_msg == 0 || cfg->queue_max == 0 || cfg->recv_queue_max == 0 ||
        cfg->reconnect_min_ms == 0 ||
        cfg->reconnect_max_ms < cfg->reconnect_min_ms ||
        cfg->reconnect_max_ms > INT32_MAX) {
        sm_errmsg_printf(errmsg,
                         "net config: limits must be non-zero and "
                         "reconnect_min_ms <= reconnect_max_ms");
        return SM_EINVAL;
    }
    return SM_OK;
}

/* Parses a decimal number of at most @max from *@p, advancing it. */
static int parse_decimal(const char **p, unsigned long max, unsigned long *out)
{
    const char *s = *p;
    unsigned long v = 0;
    int digits = 0;
    while (*s >= '0' && *s <= '9' && digits < 6) {
        v = v * 10 + (unsigned long)(*s - '0');
        s++;
        digits++;
    }
    if (digits == 0 || (*s >= '0' && *s <= '9') || v > max) {
        return SM_EINVAL;
    }
    *p = s;
    *out = v;
    return SM_OK;
}

int tp__net_addr_parse(const char *addr, uint32_t *ip, uint16_t *port)
{
    static const char scheme[] = "tcp://";
    if (addr == NULL || strncmp(addr, scheme, sizeof scheme - 1) != 0) {
        return SM_EINVAL;
    }
    const char *p = addr + sizeof scheme - 1;
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned long octet;
        if (parse_decimal(&p, 255, &octet) != SM_OK) {
            return SM_EINVAL;
        }
        v = (v << 8) | (uint32_t)octet;
        if (*p++ != (i < 3 ? '.' : ':')) {
            return SM_EINVAL;
        }
    }
    unsigned long pnum;
    if (parse_decimal(&p, 65535, &pnum) != SM_OK || *p != '\0') {
        return SM_EINVAL;
    }
    *ip = v;
    *port = (uint16_t)pnum;
    return SM_OK;
}

void tp__net_addr_format(uint32_t ip, uint16_t port, char out[TP_NET_ADDR_MAX])
{
    snprintf(out, TP_NET_ADDR_MAX, "tcp://%u.%u.%u.%u:%u", (unsigned)(ip >> 24),
             (unsigned)((ip >> 16) & 0xff), (unsigned)((ip >> 8) & 0xff),
             (unsigned)(ip & 0xff), (unsigned)port);
}

int tp__net_peer_add_check(struct tp_net *net,
                           bool closed,
                           bool known,
                           struct tp_net_id id,
                           const char *addr,
                           char canon[TP_NET_ADDR_MAX])
{
    uint32_t ip;
    uint16_t port;
    if (closed) {
        sm_errmsg_printf(net->errmsg, "peer add: net closed");
        return SM_ECLOSED;
    }
    if (tp__net_addr_parse(addr, &ip, &port) != SM_OK || port == 0) {
        sm_errmsg_printf(net->errmsg, "peer add %" PRIu64 ": bad address %s",
                         id.v, addr ? addr : "(null)");
        return SM_EINVAL;
    }
    if (known) {
        sm_errmsg_printf(net->errmsg, "peer add %" PRIu64 ": already a peer",
                         id.v);
        return SM_EEXIST;
    }
    tp__net_addr_format(ip, port, canon);
    return SM_OK;
}

int tp__net_send_check(struct tp_net *net,
                       const struct tp_net_config *cfg,
                       struct tp_net_stats *stats,
                       bool closed,
                       bool known,
                       unsigned queued,
                       struct tp_net_id to,
                       size_t len,
                       uint32_t timeout_ms)
{
    if (closed) {
        sm_errmsg_printf(net->errmsg, "send: net closed");
        return SM_ECLOSED;
    }
    if (!known) {
        sm_errmsg_printf(net->errmsg, "send to %" PRIu64 ": not a peer", to.v);
        return SM_ENOTFOUND;
    }
    if (timeout_ms == 0 || timeout_ms > INT32_MAX) {
        sm_errmsg_printf(net->errmsg, "send: timeout %" PRIu32 " ms",
                         timeout_ms);
        return SM_EINVAL;
    }
    if (len > cfg->max_msg) {
        stats->oversized++;
        sm_errmsg_printf(net->errmsg, "send: %zu bytes over the %zu limit", len,
                         cfg->max_msg);
        return SM_ETOOBIG;
    }
    if (queued >= cfg->queue_max) {
        stats->dropped++;
        sm_errmsg_printf(net->errmsg, "send to %" PRIu64 ": %u sends pending",
                         to.v, queued);
        return SM_EAGAIN;
    }
    return SM_OK;
}

void tp__net_count_done(struct tp_net_stats *stats, int status)
{
    if (status == SM_OK) {
        stats->sent++;
        return;
    }
    stats->send_failed++;
    stats->timeouts += status == SM_ETIMEDOUT;
}

const char *tp_net_errmsg(const struct tp_net *net)
{
    return net->errmsg;
}

int tp_net_listen(struct tp_net *net, const char *addr)
{
    return net->ops->listen(net, addr);
}

const char *tp_net_address(const struct tp_net *net)
{
    return net->ops->address(net);
}

uint16_t tp_net_port(const struct tp_net *net)
{
    uint32_t ip;
    uint16_t port;
    if (tp__net_addr_parse(net->ops->address(net), &ip, &port) != SM_OK) {
        return 0;
    }
    return port;
}

int tp_net_peer_add(struct tp_net *net, struct tp_net_id id, const char *addr)
{
    return net->ops->peer_add(net, id, addr);
}

int tp_net_peer_remove(struct tp_net *net, struct tp_net_id id)
{
    return net->ops->peer_remove(net, id);
}

int tp_net_send(struct tp_net *net,
                struct tp_net_id to,
                const void *data,
                size_t len,
                uint32_t timeout_ms,
                tp_net_send_cb cb,
                void *arg)
{
    return net->ops->send(net, to, data, len, timeout_ms, cb, arg);
}

void tp_net_stats(const struct tp_net *net, struct tp_net_stats *out)
{
    net->ops->stats(net, out);
}

void tp_net_close(struct tp_net *net, tp_net_close_cb cb, void *arg)
{
    net->ops->close(net, cb, arg);
}

/* ---- The real net -------------------------------------------------------- */

struct real_net;
struct real_peer;

/* One pending send. */
struct send_op
{
    struct send_op *done_next;   /* finished-sends queue (under mu) */
    struct send_op *prev, *next; /* the peer's pending list (loop thread) */
    struct real_peer *peer;
    nng_aio *aio;
    int nng_rv; /* written by the nng thread before it queues the op */
    tp_net_send_cb cb;
    void *arg;
};

/* A remote peer and the push socket that dials it. */
struct real_peer
{
    struct real_peer *next; /* all peers of the net, removed ones too */
    struct real_net *net;   /* constant: read by nng threads */
    struct tp_net_id id;
    char addr[TP_NET_ADDR_MAX];
    nng_socket sock;
    int sock_open;
    int removed;
    unsigned n_pending;
    struct send_op *pending;
};

struct real_net
{
    struct tp_net base; /* must stay first */
    struct tp_net_config cfg;
    uv_loop_t *loop;
    uv_async_t async;
    tp_net_recv_cb recv_cb;
    void *recv_arg;
    tp_net_close_cb close_cb;
    void *close_arg;
    int closing;
    int listening;
    nng_socket listen_sock;
    nng_aio *recv_aio;
    char address[TP_NET_ADDR_MAX];
    struct real_peer *peers;
    struct tp_net_stats stats;

    /* Shared with nng's threads. */
    uv_mutex_t mu;
    nng_msg **inbox; /* ring of cfg.recv_queue_max received messages */
    unsigned inbox_head, inbox_len;
    int recv_paused; /* recv_aio left unarmed because the inbox filled */
    struct send_op *done_head, *done_tail;
    uint64_t connects, disconnects; /* outbound links, from pipe events */
};

/* Maps an nng error to the sm_err space. */
static int err_from_nng(int rv)
{
    switch (rv) {
        case 0:
            return SM_OK;
        case NNG_ETIMEDOUT:
            return SM_ETIMEDOUT;
        case NNG_ECLOSED:
        case NNG_ECANCELED:
            return SM_ECLOSED;
        case NNG_ENOMEM:
            return SM_ENOMEM;
        case NNG_EADDRINUSE:
            return SM_EEXIST;
        case NNG_EADDRINVAL:
        case NNG_EINVAL:
            return SM_EINVAL;
        case NNG_EMSGSIZE:
            return SM_ETOOBIG;
        default:
            return SM_EIO;
    }
}

/* Records a failed nng call in the net's message and returns its sm_err. */
static int nng_fail(struct real_net *n,
                    const char *what,
                    const char *call,
                    int rv)
{
    sm_errmsg_printf(n->base.errmsg, "%s: %s: %s (nng %d)", what, call,
                     nng_strerror(rv), rv);
    return err_from_nng(rv);
}

/* ---- nng threads: queue and wake the loop, nothing else ---- */

/* A send finished (nng thread). */
static void on_send_done(void *arg)
{
    struct send_op *op = arg;
    struct real_net *n = op->peer->net;
    op->nng_rv = nng_aio_result(op->aio);
    if (op->nng_rv != 0) {
        /* On failure the message is still ours. */
        nng_msg *msg = nng_aio_get_msg(op->aio);
        nng_aio_set_msg(op->aio, NULL);
        if (msg != NULL) {
            nng_msg_free(msg);
        }
    }
    uv_mutex_lock(&n->mu);
    op->done_next = NULL;
    if (n->done_tail != NULL) {
        n->done_tail->done_next = op;
    } else {
        n->done_head = op;
    }
    n->done_tail = op;
    uv_mutex_unlock(&n->mu);
    uv_async_send(&n->async);
}

/* A message arrived, or the listener closed (nng thread). */
static void on_recv(void *arg)
{
    struct real_net *n = arg;
    int rv = nng_aio_result(n->recv_aio);
    if (rv == NNG_ECLOSED || rv == NNG_ECANCELED) {
        return;
    }
    if (rv != 0) {
        nng_recv_aio(n->listen_sock, n->recv_aio);
        return;
    }
    nng_msg *msg = nng_aio_get_msg(n->recv_aio);
    nng_aio_set_msg(n->recv_aio, NULL);
    uv_mutex_lock(&n->mu);
    /* Never full here: the aio is not re-armed once the ring fills. */
    unsigned tail = (n->inbox_head + n->inbox_len) % n->cfg.recv_queue_max;
    n->inbox[tail] = msg;
    n->inbox_len++;
    int full = n->inbox_len == n->cfg.recv_queue_max;
    n->recv_paused = full;
    uv_mutex_unlock(&n->mu);
    if (!full) {
        nng_recv_aio(n->listen_sock, n->recv_aio);
    }
    uv_async_send(&n->async);
}

/* An outbound connection came up or went down (nng thread). nng_close
 * returns only after the socket's last pipe event, so @arg (the peer) and
 * the async handle are alive here. */
static void on_pipe_event(nng_pipe pipe, nng_pipe_ev ev, void *arg)
{
    (void)pipe;
    struct real_net *n = ((struct real_peer *)arg)->net;
    uv_mutex_lock(&n->mu);
    if (ev == NNG_PIPE_EV_ADD_POST) {
        n->connects++;
    } else {
        n->disconnects++;
    }
    uv_mutex_unlock(&n->mu);
    /* Wake the loop so that whoever watches the counters sees them. */
    uv_async_send(&n->async);
}

/* ---- Loop thread ---- */

static struct real_peer *find_peer(struct real_net *n, struct tp_net_id id)
{
    for (struct real_peer *p = n->peers; p != NULL; p = p->next) {
        if (!p->removed && p->id.v == id.v) {
            return p;
        }
    }
    return NULL;
}

static void peer_close_socket(struct real_peer *p)
{
    if (p->sock_open) {
        nng_close(p->sock);
        p->sock_open = 0;
    }
}

/* Unlinks @p from the net and frees it; its pending list must be empty. */
static void peer_free(struct real_net *n, struct real_peer *p)
{
    SM_ASSERT(p->n_pending == 0);
    for (struct real_peer **pp = &n->peers; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    }
    peer_close_socket(p);
    sm_free(p);
}

static void pending_link(struct real_peer *p, struct send_op *op)
{
    op->prev = NULL;
    op->next = p->pending;
    if (p->pending != NULL) {
        p->pending->prev = op;
    }
    p->pending = op;
    p->n_pending++;
}

static void pending_unlink(struct real_peer *p, struct send_op *op)
{
    if (op->prev != NULL) {
        op->prev->next = op->next;
    } else {
        p->pending = op->next;
    }
    if (op->next != NULL) {
        op->next->prev = op->prev;
    }
    p->n_pending--;
}

static struct send_op *pop_done(struct real_net *n)
{
    uv_mutex_lock(&n->mu);
    struct send_op *op = n->done_head;
    if (op != NULL) {
        n->done_head = op->done_next;
        if (n->done_head == NULL) {
            n->done_tail = NULL;
        }
    }
    uv_mutex_unlock(&n->mu);
    return op;
}

/* Reports one finished send and frees it (and its peer, if that was
 * removed and this was its last send). */
static void report_send(struct real_net *n, struct send_op *op)
{
    struct real_peer *p = op->peer;
    pending_unlink(p, op);
    int status = err_from_nng(op->nng_rv);
    tp__net_count_done(&n->stats, status);
    /* The callback has returned (it queued the op), so this does not wait
     * long, and it is not called from inside the aio's own callback. */
    nng_aio_free(op->aio);
    tp_net_send_cb cb = op->cb;
    void *arg = op->arg;
    sm_free(op);
    if (p->removed && p->n_pending == 0) {
        peer_free(n, p);
    }
    if (cb != NULL) {
        cb(arg, status);
    }
}

static nng_msg *pop_inbox(struct real_net *n)
{
    nng_msg *msg = NULL;
    uv_mutex_lock(&n->mu);
    if (n->inbox_len > 0) {
        msg = n->inbox[n->inbox_head];
        n->inbox_head = (n->inbox_head + 1) % n->cfg.recv_queue_max;
        n->inbox_len--;
    }
    uv_mutex_unlock(&n->mu);
    return msg;
}

/* Describes the connection @msg came through. */
static void describe_sender(nng_msg *msg, struct tp_net_from *from)
{
    nng_pipe pipe = nng_msg_get_pipe(msg);
    int id = nng_pipe_id(pipe);
    from->conn = id > 0 ? (uint32_t)id : 0;
    from->addr[0] = '\0';
    nng_sockaddr sa;
    if (id > 0 && nng_pipe_get_addr(pipe, NNG_OPT_REMADDR, &sa) == 0 &&
        sa.s_family == NNG_AF_INET) {
        const uint8_t *b = (const uint8_t *)&sa.s_in.sa_addr;
        const uint8_t *pb = (const uint8_t *)&sa.s_in.sa_port;
        /* Both fields are in network byte order. */
        uint32_t ip = (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 |
                      (uint32_t)b[2] << 8 | b[3];
        tp__net_addr_format(ip, (uint16_t)(pb[0] << 8 | pb[1]), from->addr);
    }
}

static void deliver_message(struct real_net *n, nng_msg *msg)
{
    struct tp_net_from from;
    describe_sender(msg, &from);
    n->stats.received++;
    n->recv_cb(n->recv_arg, &from, nng_msg_body(msg), nng_msg_len(msg));
    nng_msg_free(msg);
}

/* Re-arms the receive that on_recv left unarmed when the inbox filled. */
static void resume_receiving(struct real_net *n)
{
    uv_mutex_lock(&n->mu);
    int paused = n->recv_paused && n->inbox_len == 0;
    if (paused) {
        n->recv_paused = 0;
    }
    uv_mutex_unlock(&n->mu);
    if (paused) {
        nng_recv_aio(n->listen_sock, n->recv_aio);
    }
}

/* Drains both queues, one entry at a time because a callback may close the
 * net, which then takes over what is left. */
static void on_async(uv_async_t *handle)
{
    struct real_net *n = handle->data;
    struct send_op *op;
    while (!n->closing && (op = pop_done(n)) != NULL) {
        report_send(n, op);
    }
    nng_msg *msg;
    while (!n->closing && (msg = pop_inbox(n)) != NULL) {
        deliver_message(n, msg);
    }
    if (!n->closing) {
        resume_receiving(n);
    }
}

static int real_listen(struct tp_net *base, const char *addr)
{
    struct real_net *n = (struct real_net *)base;
    uint32_t ip;
    uint16_t port;
    if (n->closing) {
        sm_errmsg_printf(base->errmsg, "listen: net closed");
        return SM_ECLOSED;
    }
    if (n->listening || tp__net_addr_parse(addr, &ip, &port) != SM_OK) {
        sm_errmsg_printf(base->errmsg, "listen %s: %s", addr ? addr : "(null)",
                         n->listening ? "already listening" : "bad address");
        return SM_EINVAL;
    }
    nng_socket sock;
    int rv = nng_pull0_open(&sock);
    if (rv != 0) {
        return nng_fail(n, "listen", "nng_pull0_open", rv);
    }
    nng_listener l;
    const char *call = "nng_socket_set_size";
    rv = nng_socket_set_size(sock, NNG_OPT_RECVMAXSZ, n->cfg.max_msg);
    if (rv == 0) {
        call = "nng_listener_create";
        rv = nng_listener_create(&l, sock, addr);
    }
    if (rv == 0) {
        call = "nng_listener_set_size";
        rv = nng_listener_set_size(l, NNG_OPT_RECVMAXSZ, n->cfg.max_msg);
    }
    if (rv == 0) {
        call = "nng_listener_start";
        rv = nng_listener_start(l, 0);
    }
    int bound = 0;
    if (rv == 0) {
        call = "nng_listener_get_int";
        rv = nng_listener_get_int(l, NNG_OPT_TCP_BOUND_PORT, &bound);
    }
    if (rv == 0) {
        call = "nng_aio_alloc";
        rv = nng_aio_alloc(&n->recv_aio, on_recv, n);
    }
    if (rv != 0) {
        nng_close(sock);
        int err = nng_fail(n, "listen", call, rv);
        sm_errmsg_wrapf(base->errmsg, "%s", addr);
        return err;
    }
    n->listen_sock = sock;
    n->listening = 1;
    tp__net_addr_format(ip, (uint16_t)bound, n->address);
    nng_recv_aio(sock, n->recv_aio);
    return SM_OK;
}

static const char *real_address(const struct tp_net *base)
{
    const struct real_net *n = (const struct real_net *)base;
    return n->address;
}

/* Opens @p's push socket and starts dialing in the background. */
static int peer_dial(struct real_net *n, struct real_peer *p)
{
    int rv = nng_push0_open(&p->sock);
    if (rv != 0) {
        return nng_fail(n, "peer add", "nng_push0_open", rv);
    }
    p->sock_open = 1;
    nng_dialer d;
    const char *call = "nng_pipe_notify";
    rv = nng_pipe_notify(p->sock, NNG_PIPE_EV_ADD_POST, on_pipe_event, p);
    if (rv == 0) {
        rv = nng_pipe_notify(p->sock, NNG_PIPE_EV_REM_POST, on_pipe_event, p);
    }
    if (rv == 0) {
        call = "nng_socket_set_size";
        rv = nng_socket_set_size(p->sock, NNG_OPT_RECVMAXSZ, n->cfg.max_msg);
    }
    if (rv == 0) {
        call = "nng_dialer_create";
        rv = nng_dialer_create(&d, p->sock, p->addr);
    }
    if (rv == 0) {
        call = "nng_dialer_set_ms";
        rv = nng_dialer_set_ms(d, NNG_OPT_RECONNMINT,
                               (nng_duration)n->cfg.reconnect_min_ms);
    }
    if (rv == 0) {
        rv = nng_dialer_set_ms(d, NNG_OPT_RECONNMAXT,
                               (nng_duration)n->cfg.reconnect_max_ms);
    }
    if (rv == 0) {
        call = "nng_dialer_start";
        /* Non-blocking: a peer that is down is redialed, not refused. */
        rv = nng_dialer_start(d, NNG_FLAG_NONBLOCK);
    }
    if (rv != 0) {
        peer_close_socket(p);
        return nng_fail(n, "peer add", call, rv);
    }
    return SM_OK;
}

static int real_peer_add(struct tp_net *base,
                         struct tp_net_id id,
                         const char *addr)
{
    struct real_net *n = (struct real_net *)base;
    char canon[TP_NET_ADDR_MAX];
    bool known = !n->closing && find_peer(n, id) != NULL;
    int rv = tp__net_peer_add_check(base, n->closing, known, id, addr, canon);
    if (rv != SM_OK) {
        return rv;
    }
    struct real_peer *p = sm_calloc(1, sizeof *p);
    if (p == NULL) {
        sm_errmsg_printf(base->errmsg, "peer add: out of memory");
        return SM_ENOMEM;
    }
    p->net = n;
    p->id = id;
    memcpy(p->addr, canon, sizeof p->addr);
    rv = peer_dial(n, p);
    if (rv != SM_OK) {
        sm_free(p);
        return rv;
    }
    p->next = n->peers;
    n->peers = p;
    return SM_OK;
}

static int real_peer_remove(struct tp_net *base, struct tp_net_id id)
{
    struct real_net *n = (struct real_net *)base;
    struct real_peer *p = find_peer(n, id);
    if (p == NULL) {
        sm_errmsg_printf(base->errmsg, "peer remove %" PRIu64 ": not a peer",
                         id.v);
        return SM_ENOTFOUND;
    }
    p->removed = 1;
    /* Pending sends finish with NNG_ECLOSED and are reported from the
     * queue; the last one frees the peer. */
    peer_close_socket(p);
    if (p->n_pending == 0) {
        peer_free(n, p);
    }
    return SM_OK;
}

/* Allocates an op carrying a copy of the message, ready to send. */
static int op_new(struct real_net *n,
                  const void *data,
                  size_t len,
                  uint32_t timeout_ms,
                  struct send_op **out)
{
    struct send_op *op = sm_calloc(1, sizeof *op);
    if (op == NULL) {
        sm_errmsg_printf(n->base.errmsg, "send: out of memory");
        return SM_ENOMEM;
    }
    nng_msg *msg = NULL;
    int rv = nng_aio_alloc(&op->aio, on_send_done, op);
    if (rv == 0) {
        rv = nng_msg_alloc(&msg, len);
    }
    if (rv != 0) {
        if (op->aio != NULL) {
            nng_aio_free(op->aio);
        }
        sm_free(op);
        return nng_fail(n, "send", "nng allocation", rv);
    }
    if (len > 0) {
        memcpy(nng_msg_body(msg), data, len);
    }
    nng_aio_set_msg(op->aio, msg);
    nng_aio_set_timeout(op->aio, (nng_duration)timeout_ms);
    *out = op;
    return SM_OK;
}

static int real_send(struct tp_net *base,
                     struct tp_net_id to,
                     const void *data,
                     size_t len,
                     uint32_t timeout_ms,
                     tp_net_send_cb cb,
                     void *arg)
{
    struct real_net *n = (struct real_net *)base;
    struct real_peer *p = n->closing ? NULL : find_peer(n, to);
    int rv = tp__net_send_check(base, &n->cfg, &n->stats, n->closing, p != NULL,
                                p ? p->n_pending : 0, to, len, timeout_ms);
    if (rv != SM_OK) {
        return rv;
    }
    struct send_op *op = NULL; /* set by op_new() on SM_OK */
    rv = op_new(n, data, len, timeout_ms, &op);
    if (rv != SM_OK) {
        return rv;
    }
    op->peer = p;
    op->cb = cb;
    op->arg = arg;
    pending_link(p, op);
    nng_send_aio(p->sock, op->aio);
    return SM_OK;
}

static void real_stats(const struct tp_net *base, struct tp_net_stats *out)
{
    /* The mutex is not part of the net's value: locking it is not a
     * change. */
    struct real_net *n = (struct real_net *)(uintptr_t)base;
    *out = n->stats;
    uv_mutex_lock(&n->mu);
    out->connects = n->connects;
    out->disconnects = n->disconnects;
    uv_mutex_unlock(&n->mu);
}

/* Frees the net once the async handle is closed: no nng thread can reach
 * it any more. Reports what finished, then calls the user back. */
static void on_async_closed(uv_handle_t *handle)
{
    struct real_net *n = handle->data;
    nng_msg *msg;
    while ((msg = pop_inbox(n)) != NULL) {
        nng_msg_free(msg);
    }
    struct send_op *op;
    while ((op = pop_done(n)) != NULL) {
        report_send(n, op);
    }
    /* Every op was stopped, so every op was queued and is now reported:
     * the peers left have nothing pending. */
    while (n->peers != NULL) {
        peer_free(n, n->peers);
    }
    if (n->recv_aio != NULL) {
        nng_aio_free(n->recv_aio);
    }
    uv_mutex_destroy(&n->mu);
    sm_free(n->inbox);
    tp_net_close_cb cb = n->close_cb;
    void *arg = n->close_arg;
    sm_free(n);
    if (cb != NULL) {
        cb(arg);
    }
}

static void real_close(struct tp_net *base, tp_net_close_cb cb, void *arg)
{
    struct real_net *n = (struct real_net *)base;
    SM_ASSERT(!n->closing);
    n->closing = 1;
    n->close_cb = cb;
    n->close_arg = arg;
    if (n->listening) {
        nng_close(n->listen_sock);
        n->listening = 0;
        nng_aio_stop(n->recv_aio);
    }
    for (struct real_peer *p = n->peers; p != NULL; p = p->next) {
        p->removed = 1;
        peer_close_socket(p);
        for (struct send_op *op = p->pending; op != NULL; op = op->next) {
            /* Waits for the callback, which queues the op. */
            nng_aio_stop(op->aio);
        }
    }
    uv_close((uv_handle_t *)&n->async, on_async_closed);
}

static const struct tp_net_ops real_ops = {
    .listen = real_listen,
    .address = real_address,
    .peer_add = real_peer_add,
    .peer_remove = real_peer_remove,
    .send = real_send,
    .stats = real_stats,
    .close = real_close,
};

int tp_net_nng_new(struct uv_loop_s *loop,
                   const struct tp_net_config *cfg,
                   tp_net_recv_cb recv_cb,
                   void *recv_arg,
                   struct tp_net **out,
                   char *errmsg)
{
    struct tp_net_config conf;
    if (cfg != NULL) {
        conf = *cfg;
    } else {
        tp_net_config_default(&conf);
    }
    int rv = tp__net_config_check(&conf, errmsg);
    if (rv != SM_OK) {
        return rv;
    }
    if (recv_cb == NULL) {
        sm_errmsg_printf(errmsg, "net: no receive callback");
        return SM_EINVAL;
    }
    struct real_net *n = sm_calloc(1, sizeof *n);
    nng_msg **inbox = sm_calloc(conf.recv_queue_max, sizeof *inbox);
    if (n == NULL || inbox == NULL) {
        sm_free(n);
        sm_free(inbox);
        sm_errmsg_printf(errmsg, "net: out of memory");
        return SM_ENOMEM;
    }
    n->base.ops = &real_ops;
    n->cfg = conf;
    n->loop = loop;
    n->recv_cb = recv_cb;
    n->recv_arg = recv_arg;
    n->inbox = inbox;
    int uvrc = uv_mutex_init(&n->mu);
    if (uvrc == 0) {
        uvrc = uv_async_init(loop, &n->async, on_async);
        if (uvrc != 0) {
            uv_mutex_destroy(&n->mu);
        }
    }
    if (uvrc != 0) {
        sm_errmsg_printf(errmsg, "net: libuv: %s", uv_strerror(uvrc));
        sm_free(inbox);
        sm_free(n);
        return uvrc == UV_ENOMEM ? SM_ENOMEM : SM_EIO;
    }
    n->async.data = n;
    *out = &n->base;
    return SM_OK;
}
