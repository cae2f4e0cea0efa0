/* Sweeps across owners: the broker between the compute thread and the
 * mesh. See mesh_sweep.h. */
#include "node/mesh_sweep.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "base/alloc.h"
#include "base/le.h"
#include "base/log.h"
#include "transport/transport.h"

#define MOD        "sweep"
#define HEADER     17 /* u64 version, u64 window end, u8 normals */
#define OWNERS_MAX 256
#define PEERS_MAX  64

typedef char peer_id[TP_PEER_ID_MAX + 1];

/* A request waiting for the loop to send it. */
struct outgoing
{
    struct outgoing *next;
    peer_id peer;
    uint64_t id;
    uint8_t *data;
    size_t len;
};

/* One exchange the compute thread waits on: requests base .. base+n-1. */
struct exchange
{
    struct exchange *next;
    uint64_t base;
    size_t n, got;
    peer_id *peers; /* per request */
    uint8_t **reps; /* gvae's arrays: filled under the mutex */
    size_t *rep_lens;
    unsigned char *done;
};

/* One diagnosis's view: which peer computes each node of the model. */
struct call
{
    struct node_sweep *s;
    uint64_t version, end_ns;
    int has_normals;
    size_t n_nodes;
    unsigned *owner; /* per node: 0 here, else index + 1 into peers */
    size_t n_peers;
    peer_id peers[PEERS_MAX];
    unsigned char dead[PEERS_MAX]; /* timed out once: here from then on */
    uint64_t t0;
};

struct node_sweep
{
    uv_loop_t *loop;
    uv_async_t async;
    struct node_sweep_ops ops;
    unsigned timeout_ms;
    void (*closed_cb)(void *arg);
    void *closed_arg;

    uv_mutex_t mu; /* everything below */
    uv_cond_t cv;
    int closing;
    peer_id self;
    size_t n_owners;
    char (*names)[CBN_NODE_NAME_CAP];
    peer_id *owners;
    struct outgoing *out_head, *out_tail;
    struct exchange *waiting;
    uint64_t next_id;
    struct node_sweep_stats st;
};

/* ---- Loop side ----------------------------------------------------------- */

/* Marks request @id answered with @rep (NULL: failed); loop thread. */
static void settle(struct node_sweep *s,
                   const char *peer,
                   uint64_t id,
                   const uint8_t *rep,
                   size_t len)
{
    uv_mutex_lock(&s->mu);
    for (struct exchange *x = s->waiting; x != NULL; x = x->next) {
        if (id < x->base || id >= x->base + x->n) {
            continue;
        }
        size_t k = (size_t)(id - x->base);
        if (x->done[k] || strcmp(x->peers[k], peer) != 0) {
            break;
        }
        if (rep != NULL) {
            uint8_t *copy = sm_malloc(len ? len : 1);
            if (copy != NULL) {
                memcpy(copy, rep, len);
                x->reps[k] = copy;
                x->rep_lens[k] = len;
                s->st.bytes_in += len;
            }
        }
        x->done[k] = 1;
        if (++x->got == x->n) {
            uv_cond_broadcast(&s->cv);
        }
        break;
    }
    uv_mutex_unlock(&s->mu);
}

static void on_async(uv_async_t *a)
{
    struct node_sweep *s = a->data;
    uv_mutex_lock(&s->mu);
    struct outgoing *o = s->out_head;
    s->out_head = s->out_tail = NULL;
    uv_mutex_unlock(&s->mu);
    while (o != NULL) {
        struct outgoing *next = o->next;
        int rv = s->ops.send(s->ops.arg, o->peer, TP_MSG_SWEEP_REQ, o->id,
                             o->data, o->len);
        if (rv != SM_OK) {
            settle(s, o->peer, o->id, NULL, 0); /* no need to wait */
        }
        sm_free(o->data);
        sm_free(o);
        o = next;
    }
}

int node_sweep_new(uv_loop_t *loop,
                   const struct node_sweep_ops *ops,
                   unsigned timeout_ms,
                   struct node_sweep **out)
{
    struct node_sweep *s = sm_calloc(1, sizeof *s);
    if (s == NULL) {
        return SM_ENOMEM;
    }
    s->names = sm_calloc(OWNERS_MAX, sizeof *s->names);
    s->owners = sm_calloc(OWNERS_MAX, sizeof *s->owners);
    if (s->names == NULL || s->owners == NULL) {
        sm_free(s->names);
        sm_free(s->owners);
        sm_free(s);
        return SM_ENOMEM;
    }
    s->loop = loop;
    s->ops = *ops;
    s->timeout_ms = timeout_ms ? timeout_ms : 2000;
    s->next_id = 1;
    int mu = uv_mutex_init(&s->mu) == 0;
    int cv = mu && uv_cond_init(&s->cv) == 0;
    if (!cv || uv_async_init(loop, &s->async, on_async) != 0) {
        if (cv) {
            uv_cond_destroy(&s->cv);
        }
        if (mu) {
            uv_mutex_destroy(&s->mu);
        }
        sm_free(s->names);
        sm_free(s->owners);
        sm_free(s);
        return SM_EINTERNAL;
    }
    s->async.data = s;
    *out = s;
    return SM_OK;
}

static void on_closed(uv_handle_t *h)
{
    struct node_sweep *s = h->data;
    if (s->closed_cb != NULL) {
        s->closed_cb(s->closed_arg);
    }
}

void node_sweep_close(struct node_sweep *s, void (*cb)(void *arg), void *arg)
{
    uv_mutex_lock(&s->mu);
    s->closing = 1; /* a waiting exchange returns now, the next at once */
    uv_cond_broadcast(&s->cv);
    uv_mutex_unlock(&s->mu);
    s->closed_cb = cb;
    s->closed_arg = arg;
    uv_close((uv_handle_t *)&s->async, on_closed);
}

void node_sweep_free(struct node_sweep *s)
{
    if (s == NULL) {
        return;
    }
    struct outgoing *o = s->out_head;
    while (o != NULL) {
        struct outgoing *next = o->next;
        sm_free(o->data);
        sm_free(o);
        o = next;
    }
    uv_cond_destroy(&s->cv);
    uv_mutex_destroy(&s->mu);
    sm_free(s->names);
    sm_free(s->owners);
    sm_free(s);
}

void node_sweep_set_owners(struct node_sweep *s,
                           const char *self,
                           const char *const *names,
                           const char *const *owners,
                           size_t n)
{
    uv_mutex_lock(&s->mu);
    snprintf(s->self, sizeof s->self, "%s", self);
    s->n_owners = n < OWNERS_MAX ? n : OWNERS_MAX;
    for (size_t i = 0; i < s->n_owners; i++) {
        snprintf(s->names[i], sizeof s->names[i], "%s", names[i]);
        snprintf(s->owners[i], sizeof s->owners[i], "%s", owners[i]);
    }
    uv_mutex_unlock(&s->mu);
}

void node_sweep_reply(struct node_sweep *s,
                      const char *peer,
                      uint64_t id,
                      const void *data,
                      size_t len)
{
    const uint8_t *p = data;
    if (len < 4) {
        settle(s, peer, id, NULL, 0);
        return;
    }
    uint32_t status = sm_get_le32(p);
    settle(s, peer, id, status == SM_OK ? p + 4 : NULL, len - 4);
}

static void send_status(struct node_sweep *s,
                        const char *peer,
                        uint64_t id,
                        int status,
                        const uint8_t *rep,
                        size_t len)
{
    uint8_t *msg = sm_malloc(4 + len);
    if (msg == NULL) {
        return;
    }
    sm_put_le32(msg, (uint32_t)status);
    if (len > 0) {
        memcpy(msg + 4, rep, len);
    }
    s->ops.send(s->ops.arg, peer, TP_MSG_SWEEP_REP, id, msg, 4 + len);
    sm_free(msg);
}

void node_sweep_serve(struct node_sweep *s,
                      struct node_model_mgr *mgr,
                      const char *peer,
                      uint64_t id,
                      const void *data,
                      size_t len)
{
    const uint8_t *p = data;
    uint8_t *rep = NULL;
    size_t rep_len = 0;
    int rc = SM_EMALFORMED;
    if (mgr != NULL && len > HEADER && p[16] <= 1) {
        rc = node_model_mgr_serve_pass(mgr, sm_get_le64(p), sm_get_le64(p + 8),
                                       p[16], p + HEADER, len - HEADER, &rep,
                                       &rep_len);
    }
    uv_mutex_lock(&s->mu);
    s->st.served++;
    s->st.serve_failures += rc != SM_OK;
    uv_mutex_unlock(&s->mu);
    if (rc != SM_OK) {
        sm_log(SM_LOG_DEBUG, MOD, "a pass request refused", "peer=%s error=%s",
               peer, sm_errname(rc));
    }
    send_status(s, peer, id, rc, rep, rep_len);
    sm_free(rep);
}

void node_sweep_stats(struct node_sweep *s, struct node_sweep_stats *out)
{
    uv_mutex_lock(&s->mu);
    *out = s->st;
    uv_mutex_unlock(&s->mu);
}

/* ---- Compute-thread side ------------------------------------------------- */

static unsigned c_owner(void *arg, size_t node)
{
    struct call *c = arg;
    unsigned o = node < c->n_nodes ? c->owner[node] : 0;
    return o != 0 && c->dead[o - 1] ? 0 : o;
}

static void c_exchange(void *arg,
                       size_t n,
                       const unsigned *owners,
                       const uint8_t *const *reqs,
                       const size_t *lens,
                       uint8_t **reps,
                       size_t *rep_lens)
{
    struct call *c = arg;
    struct node_sweep *s = c->s;
    peer_id *peers = sm_calloc(n + 1, sizeof *peers);
    unsigned char *done = sm_calloc(n + 1, 1);
    struct outgoing **out = sm_calloc(n + 1, sizeof *out);
    int ok = peers != NULL && done != NULL && out != NULL;
    for (size_t k = 0; ok && k < n; k++) {
        reps[k] = NULL;
        snprintf(peers[k], sizeof peers[k], "%s", c->peers[owners[k] - 1]);
        out[k] = sm_calloc(1, sizeof *out[k]);
        ok = out[k] != NULL &&
             (out[k]->data = sm_malloc(HEADER + lens[k])) != NULL;
        if (ok) {
            snprintf(out[k]->peer, sizeof out[k]->peer, "%s", peers[k]);
            sm_put_le64(out[k]->data, c->version);
            sm_put_le64(out[k]->data + 8, c->end_ns);
            out[k]->data[16] = (uint8_t)c->has_normals;
            memcpy(out[k]->data + HEADER, reqs[k], lens[k]);
            out[k]->len = HEADER + lens[k];
        }
    }
    struct exchange x = {.n = n,
                         .peers = peers,
                         .reps = reps,
                         .rep_lens = rep_lens,
                         .done = done};
    uv_mutex_lock(&s->mu);
    if (!ok || s->closing) {
        uv_mutex_unlock(&s->mu);
        for (size_t k = 0; k < n && out != NULL; k++) {
            if (out[k] != NULL) {
                sm_free(out[k]->data);
                sm_free(out[k]);
            }
        }
        sm_free(out);
        sm_free(peers);
        sm_free(done);
        return; /* every node computed here */
    }
    x.base = s->next_id;
    s->next_id += n;
    for (size_t k = 0; k < n; k++) {
        out[k]->id = x.base + k;
        if (s->out_tail != NULL) {
            s->out_tail->next = out[k];
        } else {
            s->out_head = out[k];
        }
        s->out_tail = out[k];
        s->st.bytes_out += out[k]->len;
    }
    s->st.requests += n;
    s->st.levels++;
    x.next = s->waiting;
    s->waiting = &x;
    uv_mutex_unlock(&s->mu);
    sm_free(out);
    uv_async_send(&s->async);

    uint64_t deadline = uv_hrtime() + (uint64_t)s->timeout_ms * 1000000u;
    uv_mutex_lock(&s->mu);
    while (x.got < x.n && !s->closing) {
        uint64_t now = uv_hrtime();
        if (now >= deadline ||
            uv_cond_timedwait(&s->cv, &s->mu, deadline - now) != 0) {
            break;
        }
    }
    for (struct exchange **pp = &s->waiting; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == &x) {
            *pp = x.next;
            break;
        }
    }
    s->st.timeouts += x.n - x.got;
    for (size_t k = 0; k < n; k++) {
        if (!done[k]) {
            c->dead[owners[k] - 1] = 1; /* no second wait on it */
        }
    }
    uv_mutex_unlock(&s->mu);
    sm_free(peers);
    sm_free(done);
}

static void h_begin(void *arg,
                    const struct gvae_model *model,
                    uint64_t version,
                    uint64_t end_ns,
                    int has_normals,
                    struct gvae_remote *remote,
                    void **ctx)
{
    struct node_sweep *s = arg;
    size_t nn = gvae_model_node_count(model);
    struct call *c = sm_calloc(1, sizeof *c);
    unsigned *owner = sm_calloc(nn + 1, sizeof *owner);
    *remote = (struct gvae_remote){0};
    *ctx = NULL;
    if (c == NULL || owner == NULL) {
        sm_free(c);
        sm_free(owner);
        return; /* no remote: every node here */
    }
    c->s = s;
    c->version = version;
    c->end_ns = end_ns;
    c->has_normals = has_normals;
    c->n_nodes = nn;
    c->owner = owner;
    c->t0 = uv_hrtime();
    uv_mutex_lock(&s->mu);
    for (size_t i = 0; i < nn && !s->closing; i++) {
        const char *name = gvae_model_node_name(model, i);
        const char *who = NULL;
        for (size_t k = 0; k < s->n_owners && who == NULL; k++) {
            who = strcmp(s->names[k], name) == 0 ? s->owners[k] : NULL;
        }
        if (who == NULL || who[0] == '\0' || strcmp(who, s->self) == 0) {
            continue;
        }
        size_t p = 0;
        while (p < c->n_peers && strcmp(c->peers[p], who) != 0) {
            p++;
        }
        if (p == c->n_peers) {
            if (c->n_peers == PEERS_MAX) {
                continue;
            }
            snprintf(c->peers[c->n_peers++], sizeof c->peers[0], "%s", who);
        }
        owner[i] = (unsigned)p + 1;
    }
    uv_mutex_unlock(&s->mu);
    remote->arg = c;
    remote->owner = c_owner;
    remote->exchange = c_exchange;
    *ctx = c;
}

static void h_end(void *arg, void *ctx, const struct gvae_remote_stats *rs)
{
    struct node_sweep *s = arg;
    struct call *c = ctx;
    if (c == NULL) {
        return;
    }
    double ms = (double)(uv_hrtime() - c->t0) / 1e6;
    uv_mutex_lock(&s->mu);
    if (rs->requests > 0) {
        s->st.diagnoses++;
        s->st.last_ms = ms;
    }
    s->st.fallbacks += rs->fallbacks;
    uv_mutex_unlock(&s->mu);
    sm_free(c->owner);
    sm_free(c);
}

void node_sweep_hook(struct node_sweep *s, struct node_model_remote *hook)
{
    hook->arg = s;
    hook->begin = h_begin;
    hook->end = h_end;
}
