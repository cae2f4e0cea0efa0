/* The fake net: an in-memory hub that moves messages only when the test
 * steps it.
 *
 * Every send becomes a message in the hub's queue (a copy of the bytes, the
 * destination address resolved at send time, the sender's callback). A step
 * takes one message out, decides its fate against the hub's state at that
 * moment (kills, partitions, listeners, loss) and runs the callbacks: the
 * receiver's, then the sender's. Nothing happens between steps, so a test
 * sees exactly the interleaving it asks for, and with a seeded rng the same
 * loss and reordering on every run.
 *
 * Callbacks may send (the message joins the queue), remove peers and close
 * nets, including the sender or receiver of the message being settled. The
 * hub remembers that message (`settling`) so that a close or a removal from
 * inside a callback can detach it from memory about to be freed: a closing
 * sender reports its send as SM_ECLOSED at once; a removed peer just stops
 * being counted. Messages still queued from a closing net are reported as
 * SM_ECLOSED by the close; messages queued to a removed peer are reported
 * as SM_ECLOSED when settled, as the real net does when a peer's socket
 * closes. */
#include <inttypes.h>
#include <string.h>

#include "base/alloc.h"
#include "base/rng.h"
#include "transport/net_internal.h"

#define FIRST_FAKE_PORT 20000

struct fake_net;

/* A peer in one fake net's table. */
struct fake_peer
{
    struct fake_peer *next;
    struct tp_net_id id;
    char addr[TP_NET_ADDR_MAX];
    unsigned n_queued; /* this net's messages to it still in the hub */
};

/* One message in the hub. */
struct fake_msg
{
    struct fake_net *from;  /* NULL once the sender closed */
    struct fake_peer *peer; /* NULL once the peer was removed */
    char addr[TP_NET_ADDR_MAX];
    uint8_t *data;
    size_t len;
    tp_net_send_cb cb;
    void *arg;
    struct fake_msg *next_taken; /* list of a closing net's messages */
};

struct fake_net
{
    struct tp_net base; /* must stay first */
    struct tp_fake_hub *hub;
    struct fake_net *next; /* the hub's live nets */
    struct tp_net_id self;
    uint32_t serial;
    struct tp_net_config cfg;
    tp_net_recv_cb recv_cb;
    void *recv_arg;
    char address[TP_NET_ADDR_MAX];
    int closed;
    struct fake_peer *peers;
    struct tp_net_stats stats;
};

/* An unordered pair of ids whose link is cut. */
struct cut
{
    struct tp_net_id a, b;
};

struct tp_fake_hub
{
    struct sm_rng *rng; /* borrowed; NULL: no loss, no reordering */
    double loss;
    int reorder;
    struct fake_msg **queue; /* oldest first */
    size_t n_queue, cap_queue;
    struct fake_msg *settling; /* taken out by the current step */
    struct fake_net *nets;
    uint32_t next_serial;
    unsigned next_port;
    struct tp_net_id *killed;
    size_t n_killed, cap_killed;
    struct cut *cuts;
    size_t n_cuts, cap_cuts;
    struct tp_fake_hub_stats stats;
};

/* Makes room for one more element in a growing array. */
static int grow(void **items, size_t *cap, size_t n, size_t size)
{
    if (n < *cap) {
        return SM_OK;
    }
    size_t ncap = *cap == 0 ? 8 : 2 * *cap;
    void *p = sm_reallocarray(*items, ncap, size);
    if (p == NULL) {
        return SM_ENOMEM;
    }
    *items = p;
    *cap = ncap;
    return SM_OK;
}

/* ---- The hub's state: kills and partitions ---- */

static int is_killed(const struct tp_fake_hub *hub, struct tp_net_id id)
{
    for (size_t i = 0; i < hub->n_killed; i++) {
        if (hub->killed[i].v == id.v) {
            return 1;
        }
    }
    return 0;
}

static int cut_matches(const struct cut *c,
                       struct tp_net_id a,
                       struct tp_net_id b)
{
    return (c->a.v == a.v && c->b.v == b.v) || (c->a.v == b.v && c->b.v == a.v);
}

static int is_cut(const struct tp_fake_hub *hub,
                  struct tp_net_id a,
                  struct tp_net_id b)
{
    for (size_t i = 0; i < hub->n_cuts; i++) {
        if (cut_matches(&hub->cuts[i], a, b)) {
            return 1;
        }
    }
    return 0;
}

int tp_fake_hub_partition(struct tp_fake_hub *hub,
                          struct tp_net_id a,
                          struct tp_net_id b)
{
    if (is_cut(hub, a, b)) {
        return SM_OK;
    }
    if (grow((void **)&hub->cuts, &hub->cap_cuts, hub->n_cuts,
             sizeof *hub->cuts) != SM_OK) {
        return SM_ENOMEM;
    }
    hub->cuts[hub->n_cuts++] = (struct cut){a, b};
    return SM_OK;
}

void tp_fake_hub_heal(struct tp_fake_hub *hub,
                      struct tp_net_id a,
                      struct tp_net_id b)
{
    for (size_t i = 0; i < hub->n_cuts; i++) {
        if (cut_matches(&hub->cuts[i], a, b)) {
            hub->cuts[i] = hub->cuts[--hub->n_cuts];
            return;
        }
    }
}

int tp_fake_hub_kill(struct tp_fake_hub *hub, struct tp_net_id id)
{
    if (is_killed(hub, id)) {
        return SM_OK;
    }
    if (grow((void **)&hub->killed, &hub->cap_killed, hub->n_killed,
             sizeof *hub->killed) != SM_OK) {
        return SM_ENOMEM;
    }
    hub->killed[hub->n_killed++] = id;
    return SM_OK;
}

void tp_fake_hub_restart(struct tp_fake_hub *hub, struct tp_net_id id)
{
    for (size_t i = 0; i < hub->n_killed; i++) {
        if (hub->killed[i].v == id.v) {
            hub->killed[i] = hub->killed[--hub->n_killed];
            return;
        }
    }
}

int tp_fake_hub_set_loss(struct tp_fake_hub *hub, double p)
{
    if (!(p >= 0.0 && p <= 1.0) || (p > 0.0 && hub->rng == NULL)) {
        return SM_EINVAL;
    }
    hub->loss = p;
    return SM_OK;
}

int tp_fake_hub_set_reorder(struct tp_fake_hub *hub, int on)
{
    if (on && hub->rng == NULL) {
        return SM_EINVAL;
    }
    hub->reorder = on != 0;
    return SM_OK;
}

void tp_fake_hub_stats(const struct tp_fake_hub *hub,
                       struct tp_fake_hub_stats *out)
{
    *out = hub->stats;
}

size_t tp_fake_hub_pending(const struct tp_fake_hub *hub)
{
    return hub->n_queue;
}

int tp_fake_hub_new(struct sm_rng *rng, struct tp_fake_hub **out)
{
    struct tp_fake_hub *hub = sm_calloc(1, sizeof *hub);
    if (hub == NULL) {
        return SM_ENOMEM;
    }
    hub->rng = rng;
    hub->next_serial = 1;
    hub->next_port = FIRST_FAKE_PORT;
    *out = hub;
    return SM_OK;
}

void tp_fake_hub_free(struct tp_fake_hub *hub)
{
    if (hub == NULL) {
        return;
    }
    /* Closing a net takes its messages out, so with no nets, no messages. */
    SM_ASSERT(hub->nets == NULL && hub->n_queue == 0);
    sm_free(hub->queue);
    sm_free(hub->killed);
    sm_free(hub->cuts);
    sm_free(hub);
}

/* ---- Settling messages ---- */

static struct fake_net *find_listener(const struct tp_fake_hub *hub,
                                      const char *addr)
{
    for (struct fake_net *n = hub->nets; n != NULL; n = n->next) {
        if (n->address[0] != '\0' && strcmp(n->address, addr) == 0) {
            return n;
        }
    }
    return NULL;
}

/* Removes and returns the message at @i, keeping the others in order. */
static struct fake_msg *queue_take(struct tp_fake_hub *hub, size_t i)
{
    struct fake_msg *m = hub->queue[i];
    memmove(&hub->queue[i], &hub->queue[i + 1],
            (hub->n_queue - i - 1) * sizeof *hub->queue);
    hub->n_queue--;
    return m;
}

/* Decides the fate of @m and delivers it if it gets through. Returns the
 * status its sender will see. */
static int settle(struct tp_fake_hub *hub, struct fake_msg *m)
{
    if (m->peer == NULL) {
        return SM_ECLOSED; /* the peer was removed while it was queued */
    }
    struct fake_net *src = m->from;
    struct fake_net *dst = find_listener(hub, m->addr);
    if (dst == NULL || is_killed(hub, src->self) || is_killed(hub, dst->self) ||
        is_cut(hub, src->self, dst->self)) {
        hub->stats.cut++;
        return SM_ETIMEDOUT;
    }
    /* Draw only when loss is on, so turning it on does not shift the
     * reordering draws of runs without loss. */
    if (hub->loss > 0.0 && sm_rng_double(hub->rng) < hub->loss) {
        hub->stats.lost++;
        return SM_OK;
    }
    hub->stats.delivered++;
    dst->stats.received++;
    struct tp_net_from from = {.conn = src->serial};
    memcpy(from.addr, src->address, sizeof from.addr);
    dst->recv_cb(dst->recv_arg, &from, m->data, m->len);
    return SM_OK;
}

static void msg_free(struct fake_msg *m)
{
    sm_free(m->data);
    sm_free(m);
}

int tp_fake_hub_step(struct tp_fake_hub *hub)
{
    if (hub->n_queue == 0) {
        return 0;
    }
    size_t i = hub->reorder ? (size_t)sm_rng_below(hub->rng, hub->n_queue) : 0;
    struct fake_msg *m = queue_take(hub, i);
    hub->settling = m;
    int status = settle(hub, m);
    hub->settling = NULL;
    /* The callbacks may have closed the sender or removed the peer; both
     * then cleared their pointer in @m. */
    if (m->peer != NULL) {
        m->peer->n_queued--;
    }
    if (m->from != NULL) {
        tp__net_count_done(&m->from->stats, status);
    }
    if (m->cb != NULL) {
        m->cb(m->arg, status);
    }
    msg_free(m);
    return 1;
}

size_t tp_fake_hub_run(struct tp_fake_hub *hub, size_t max_steps)
{
    size_t steps = 0;
    while (steps < max_steps && tp_fake_hub_step(hub)) {
        steps++;
    }
    return steps;
}

/* ---- The net operations ---- */

static int fake_listen(struct tp_net *base, const char *addr)
{
    struct fake_net *n = (struct fake_net *)base;
    uint32_t ip;
    uint16_t port;
    if (n->closed) {
        sm_errmsg_printf(base->errmsg, "listen: net closed");
        return SM_ECLOSED;
    }
    if (n->address[0] != '\0' ||
        tp__net_addr_parse(addr, &ip, &port) != SM_OK) {
        sm_errmsg_printf(base->errmsg, "listen %s: %s", addr ? addr : "(null)",
                         n->address[0] ? "already listening" : "bad address");
        return SM_EINVAL;
    }
    char bound[TP_NET_ADDR_MAX];
    if (port != 0) {
        tp__net_addr_format(ip, port, bound);
    } else {
        /* Ports are handed out in order; skip any taken explicitly. */
        do {
            if (n->hub->next_port > UINT16_MAX) {
                sm_errmsg_printf(base->errmsg, "listen: no fake port left");
                return SM_EEXIST;
            }
            tp__net_addr_format(ip, (uint16_t)n->hub->next_port++, bound);
        } while (find_listener(n->hub, bound) != NULL);
    }
    if (find_listener(n->hub, bound) != NULL) {
        sm_errmsg_printf(base->errmsg, "listen %s: address in use", bound);
        return SM_EEXIST;
    }
    memcpy(n->address, bound, sizeof n->address);
    return SM_OK;
}

static const char *fake_address(const struct tp_net *base)
{
    const struct fake_net *n = (const struct fake_net *)base;
    return n->address;
}

static struct fake_peer *find_peer(struct fake_net *n, struct tp_net_id id)
{
    for (struct fake_peer *p = n->peers; p != NULL; p = p->next) {
        if (p->id.v == id.v) {
            return p;
        }
    }
    return NULL;
}

static int fake_peer_add(struct tp_net *base,
                         struct tp_net_id id,
                         const char *addr)
{
    struct fake_net *n = (struct fake_net *)base;
    char canon[TP_NET_ADDR_MAX];
    bool known = !n->closed && find_peer(n, id) != NULL;
    int rv = tp__net_peer_add_check(base, n->closed, known, id, addr, canon);
    if (rv != SM_OK) {
        return rv;
    }
    struct fake_peer *p = sm_calloc(1, sizeof *p);
    if (p == NULL) {
        sm_errmsg_printf(base->errmsg, "peer add: out of memory");
        return SM_ENOMEM;
    }
    p->id = id;
    memcpy(p->addr, canon, sizeof p->addr);
    p->next = n->peers;
    n->peers = p;
    return SM_OK;
}

/* Detaches every message that points at @p (queued or being settled). */
static void detach_peer(struct tp_fake_hub *hub, struct fake_peer *p)
{
    for (size_t i = 0; i < hub->n_queue; i++) {
        if (hub->queue[i]->peer == p) {
            hub->queue[i]->peer = NULL;
        }
    }
    if (hub->settling != NULL && hub->settling->peer == p) {
        hub->settling->peer = NULL;
    }
}

static int fake_peer_remove(struct tp_net *base, struct tp_net_id id)
{
    struct fake_net *n = (struct fake_net *)base;
    for (struct fake_peer **pp = &n->peers; *pp != NULL; pp = &(*pp)->next) {
        struct fake_peer *p = *pp;
        if (p->id.v == id.v) {
            *pp = p->next;
            detach_peer(n->hub, p);
            sm_free(p);
            return SM_OK;
        }
    }
    sm_errmsg_printf(base->errmsg, "peer remove %" PRIu64 ": not a peer", id.v);
    return SM_ENOTFOUND;
}

static int fake_send(struct tp_net *base,
                     struct tp_net_id to,
                     const void *data,
                     size_t len,
                     uint32_t timeout_ms,
                     tp_net_send_cb cb,
                     void *arg)
{
    struct fake_net *n = (struct fake_net *)base;
    struct tp_fake_hub *hub = n->hub;
    struct fake_peer *p = n->closed ? NULL : find_peer(n, to);
    int rv = tp__net_send_check(base, &n->cfg, &n->stats, n->closed, p != NULL,
                                p ? p->n_queued : 0, to, len, timeout_ms);
    if (rv != SM_OK) {
        return rv;
    }
    struct fake_msg *m = sm_calloc(1, sizeof *m);
    uint8_t *copy = sm_malloc(len > 0 ? len : 1);
    if (m == NULL || copy == NULL ||
        grow((void **)&hub->queue, &hub->cap_queue, hub->n_queue,
             sizeof *hub->queue) != SM_OK) {
        sm_free(m);
        sm_free(copy);
        sm_errmsg_printf(base->errmsg, "send: out of memory");
        return SM_ENOMEM;
    }
    if (len > 0) {
        memcpy(copy, data, len);
    }
    *m = (struct fake_msg){
        .from = n, .peer = p, .data = copy, .len = len, .cb = cb, .arg = arg};
    memcpy(m->addr, p->addr, sizeof m->addr);
    p->n_queued++;
    hub->queue[hub->n_queue++] = m;
    return SM_OK;
}

static void fake_stats(const struct tp_net *base, struct tp_net_stats *out)
{
    const struct fake_net *n = (const struct fake_net *)base;
    *out = n->stats;
}

static void unlink_net(struct tp_fake_hub *hub, struct fake_net *n)
{
    for (struct fake_net **pp = &hub->nets; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == n) {
            *pp = n->next;
            return;
        }
    }
}

/* Takes @n's queued messages out of the hub's queue, keeping the others in
 * order, and returns them as a list in their queue order. */
static struct fake_msg *take_messages_from(struct tp_fake_hub *hub,
                                           struct fake_net *n)
{
    struct fake_msg *head = NULL, **tail = &head;
    size_t kept = 0;
    for (size_t i = 0; i < hub->n_queue; i++) {
        struct fake_msg *m = hub->queue[i];
        if (m->from == n) {
            m->next_taken = NULL;
            *tail = m;
            tail = &m->next_taken;
        } else {
            hub->queue[kept++] = m;
        }
    }
    hub->n_queue = kept;
    return head;
}

/* Reports a send of the closing net @n as SM_ECLOSED. */
static void report_closed(struct fake_net *n, tp_net_send_cb cb, void *arg)
{
    tp__net_count_done(&n->stats, SM_ECLOSED);
    if (cb != NULL) {
        cb(arg, SM_ECLOSED);
    }
}

static void fake_close(struct tp_net *base, tp_net_close_cb cb, void *arg)
{
    struct fake_net *n = (struct fake_net *)base;
    struct tp_fake_hub *hub = n->hub;
    SM_ASSERT(!n->closed);
    n->closed = 1;
    unlink_net(hub, n);
    struct fake_msg *taken = take_messages_from(hub, n);
    /* A close from inside a step's callbacks: the message being settled
     * is reported here, and the step leaves it alone. */
    struct fake_msg *settling = hub->settling;
    if (settling != NULL && settling->from == n) {
        tp_net_send_cb scb = settling->cb;
        settling->from = NULL;
        settling->peer = NULL;
        settling->cb = NULL;
        report_closed(n, scb, settling->arg);
    }
    while (taken != NULL) {
        struct fake_msg *next = taken->next_taken;
        report_closed(n, taken->cb, taken->arg);
        msg_free(taken);
        taken = next;
    }
    while (n->peers != NULL) {
        struct fake_peer *p = n->peers;
        n->peers = p->next;
        sm_free(p);
    }
    sm_free(n);
    if (cb != NULL) {
        cb(arg);
    }
}

static const struct tp_net_ops fake_ops = {
    .listen = fake_listen,
    .address = fake_address,
    .peer_add = fake_peer_add,
    .peer_remove = fake_peer_remove,
    .send = fake_send,
    .stats = fake_stats,
    .close = fake_close,
};

int tp_fake_net_new(struct tp_fake_hub *hub,
                    struct tp_net_id self,
                    const struct tp_net_config *cfg,
                    tp_net_recv_cb recv_cb,
                    void *recv_arg,
                    struct tp_net **out)
{
    struct tp_net_config conf;
    if (cfg != NULL) {
        conf = *cfg;
    } else {
        tp_net_config_default(&conf);
    }
    char errmsg[SM_ERRMSG_SIZE];
    if (tp__net_config_check(&conf, errmsg) != SM_OK || recv_cb == NULL) {
        return SM_EINVAL;
    }
    struct fake_net *n = sm_calloc(1, sizeof *n);
    if (n == NULL) {
        return SM_ENOMEM;
    }
    n->base.ops = &fake_ops;
    n->hub = hub;
    n->self = self;
    n->serial = hub->next_serial++;
    n->cfg = conf;
    n->recv_cb = recv_cb;
    n->recv_arg = recv_arg;
    n->next = hub->nets;
    hub->nets = n;
    *out = &n->base;
    return SM_OK;
}
