/* Leader-coordinated training rounds and window replication. See
 * mesh_train.h. */
#include "node/mesh_train.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/err.h"
#include "base/log.h"

#define MOD "train"

/* TP_MSG_TRAIN bodies: byte 0 the version, byte 1 the kind, then
 * fixed-width little-endian integers, strings and blobs with a u32 length. */
#define MSG_VERSION 1
enum msg_kind {
    MSG_START = 1, /* leader -> owner: spec, the nodes to train */
    MSG_SHARD,     /* owner -> leader: round, CBN digest and size, a shard */
    MSG_FAIL,      /* owner -> leader: round, status, reason */
    MSG_MODEL,     /* leader -> member: spec, a shard of a committed model */
    MSG_FETCH,     /* member -> leader: send me model version V */
    MSG_REQUEST,   /* member -> leader: start a round now (`train`) */
    MSG_WACK,      /* member -> window maker: windows received, by end */
};

#define NAMES_MAX CONS_LIST_MAX
#define JOBS_MAX  8
#define WINDOW_BATCH                                        \
    ((size_t)3 << 20)      /* bytes of windows per message: \
                              under the net's 4 MiB */
#define FAILS_MAX     3    /* FAILs before a node moves on */
#define UNACKED_MAX   4096 /* windows waiting for an ack */
#define RESEND_MAX    64   /* windows resent per peer per tick */
#define WACK_MAX      4096 /* ends in one acknowledgement */
#define CATCHUP_PEERS 8    /* peers caught up per retry period */

/* ---- Bytes in and out ---------------------------------------------------- */

struct wbuf
{
    uint8_t *p;
    size_t len, cap;
    int failed;
};

static void w_raw(struct wbuf *b, const void *data, size_t n)
{
    if (b->failed) {
        return;
    }
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n) {
            cap *= 2;
        }
        uint8_t *p = sm_realloc(b->p, cap);
        if (p == NULL) {
            b->failed = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
}

static void w_u8(struct wbuf *b, uint8_t v)
{
    w_raw(b, &v, 1);
}

static void w_u32(struct wbuf *b, uint32_t v)
{
    uint8_t x[4];
    for (int i = 0; i < 4; i++) {
        x[i] = (uint8_t)(v >> (8 * i));
    }
    w_raw(b, x, 4);
}

static void w_u64(struct wbuf *b, uint64_t v)
{
    uint8_t x[8];
    for (int i = 0; i < 8; i++) {
        x[i] = (uint8_t)(v >> (8 * i));
    }
    w_raw(b, x, 8);
}

static void w_bytes(struct wbuf *b, const void *data, size_t n)
{
    w_u32(b, (uint32_t)n);
    w_raw(b, data, n);
}

static void w_str(struct wbuf *b, const char *s)
{
    w_bytes(b, s, strlen(s));
}

static void w_spec(struct wbuf *b, const struct node_train_spec *s)
{
    w_u64(b, s->round);
    w_u64(b, s->from_ns);
    w_u64(b, s->to_ns);
    w_u64(b, s->n_windows);
    w_raw(b, s->digest, sizeof s->digest);
    w_u64(b, s->prev_version);
}

/* A short name of a spec: a restarted round with other windows has
 * another, so answers for an earlier attempt are told apart. */
static uint64_t spec_id(const struct node_train_spec *spec)
{
    struct wbuf b = {0};
    w_spec(&b, spec);
    uint8_t d[TP_DIGEST_SIZE];
    uint64_t id = 0;
    if (!b.failed) {
        tp_digest(b.p, b.len, d);
        for (int i = 0; i < 8; i++) {
            id |= (uint64_t)d[i] << (8 * i);
        }
    }
    sm_free(b.p);
    return id;
}

struct rbuf
{
    const uint8_t *p;
    size_t len, off;
    int bad;
};

static const uint8_t *r_raw(struct rbuf *b, size_t n)
{
    if (b->bad || b->len - b->off < n) {
        b->bad = 1;
        return NULL;
    }
    const uint8_t *p = b->p + b->off;
    b->off += n;
    return p;
}

static uint8_t r_u8(struct rbuf *b)
{
    const uint8_t *p = r_raw(b, 1);
    return p ? p[0] : 0;
}

static uint32_t r_u32(struct rbuf *b)
{
    const uint8_t *p = r_raw(b, 4);
    uint32_t v = 0;
    for (int i = 0; p != NULL && i < 4; i++) {
        v |= (uint32_t)p[i] << (8 * i);
    }
    return v;
}

static uint64_t r_u64(struct rbuf *b)
{
    const uint8_t *p = r_raw(b, 8);
    uint64_t v = 0;
    for (int i = 0; p != NULL && i < 8; i++) {
        v |= (uint64_t)p[i] << (8 * i);
    }
    return v;
}

/* A blob: borrowed from the message. */
static const uint8_t *r_bytes(struct rbuf *b, size_t *n)
{
    *n = r_u32(b);
    return r_raw(b, *n);
}

/* A string of at most @max bytes without NUL, copied into @out. */
static void r_str(struct rbuf *b, char *out, size_t max)
{
    size_t n;
    const uint8_t *p = r_bytes(b, &n);
    if (p == NULL || n == 0 || n > max || memchr(p, '\0', n) != NULL) {
        b->bad = 1;
        out[0] = '\0';
        return;
    }
    memcpy(out, p, n);
    out[n] = '\0';
}

static void r_spec(struct rbuf *b, struct node_train_spec *s)
{
    s->round = r_u64(b);
    s->from_ns = r_u64(b);
    s->to_ns = r_u64(b);
    s->n_windows = r_u64(b);
    const uint8_t *d = r_raw(b, sizeof s->digest);
    if (d != NULL) {
        memcpy(s->digest, d, sizeof s->digest);
    }
    s->prev_version = r_u64(b);
    if (s->round == 0 || s->to_ns <= s->from_ns) {
        b->bad = 1;
    }
}

/* ---- State --------------------------------------------------------------- */

typedef char peer_id[TP_PEER_ID_MAX + 1];
typedef char node_name[CONS_NAME_MAX + 1];

/* A node of the round the leader runs. */
struct rnode
{
    node_name name;
    peer_id peer;      /* asked to train it ("" not yet) */
    int stage;         /* 0 owner, 1 replica, 2 leader */
    int fails;         /* FAILs from @peer */
    uint64_t asked_ms; /* when @peer was asked (0: ask now) */
    uint8_t *blob;     /* the shard, once in */
    size_t len;
};

struct round
{
    int active;
    struct node_train_spec spec;
    uint64_t started_ms, proposed_ms;
    size_t n, cap;
    struct rnode *nodes;
    int self_fails; /* the leader's own trainings that failed */
    int cbn_known;
    uint8_t cbn_digest[32];
    uint64_t cbn_size;
    uint64_t spec_id; /* names this attempt's spec in SHARD and FAIL */
    peer_id catchup_peer[CATCHUP_PEERS]; /* last catch-ups, by peer */
    uint64_t catchup_ms[CATCHUP_PEERS];
};

/* A training this peer runs: for whom, and for which round. */
struct job
{
    uint64_t id;
    uint64_t round;
    uint64_t spec_id;  /* of the spec it trains for */
    peer_id requester; /* self: the leader's own share */
};

/* Shards of a committed (or about to be) model, for installing and for
 * serving FETCH. */
struct model_set
{
    struct node_train_spec spec;
    size_t n;
    node_name *names;
    uint8_t **blobs;
    size_t *lens;
};

/* A window sent to a member and not acknowledged yet. */
struct unacked
{
    peer_id peer;
    uint64_t end_ns;
    uint64_t sent_ms;
};

struct node_train
{
    struct node_train_config cfg;
    struct node_train_env env;
    peer_id self, leader;
    int is_leader;
    /* The members of the last view, for window broadcasts. */
    size_t n_members;
    peer_id *members;

    struct round round;
    uint64_t now_ms;     /* of the last tick */
    uint64_t committed;  /* model version in the log at the last tick */
    uint64_t want;       /* a model version asked for (`train`), due or
                            not: pursued until the log has it */
    uint64_t request_ms; /* the want last sent to the leader */

    struct job jobs[JOBS_MAX];
    size_t n_jobs;
    uint64_t next_job;

    struct model_set cache;   /* leader: shards of the last committed round */
    struct model_set pending; /* member: MODEL shards received */
    uint64_t pending_ms;      /* last MODEL received */
    uint64_t fetch_ms;
    int installing;
    uint64_t install_version;
    uint64_t failed_install; /* version whose install failed: tried again
                                after fetch_ms, or with new shards */
    uint64_t failed_install_ms;
    uint64_t stuck_since_ms;  /* leader: lacking the committed model */
    uint64_t start_failed_ms; /* leader: a round could not start */
    /* The committed model's shards as the log lists them, and the digest
     * of the CBN it binds the model to (last tick). */
    struct cons_digest commit_cbn;
    size_t n_commit;
    struct cons_shard_digest *commit; /* NAMES_MAX; names in commit_names */
    node_name *commit_names;

    struct unacked *unacked; /* UNACKED_MAX, oldest first */
    size_t n_unacked;

    struct node_train_stats st;
};

static void model_set_clear(struct model_set *s)
{
    for (size_t i = 0; i < s->n; i++) {
        sm_free(s->blobs[i]);
    }
    sm_free(s->names);
    sm_free(s->blobs);
    sm_free(s->lens);
    memset(s, 0, sizeof *s);
}

/* Adds (or replaces) @name's shard in @s, copying @blob. */
static int model_set_put(struct model_set *s,
                         const char *name,
                         const uint8_t *blob,
                         size_t len)
{
    uint8_t *copy = sm_malloc(len ? len : 1);
    if (copy == NULL) {
        return SM_ENOMEM;
    }
    memcpy(copy, blob, len);
    for (size_t i = 0; i < s->n; i++) {
        if (strcmp(s->names[i], name) == 0) {
            sm_free(s->blobs[i]);
            s->blobs[i] = copy;
            s->lens[i] = len;
            return SM_OK;
        }
    }
    if (s->n >= NAMES_MAX) {
        sm_free(copy);
        return SM_ETOOBIG;
    }
    node_name *names = sm_realloc(s->names, (s->n + 1) * sizeof *names);
    if (names != NULL) {
        s->names = names;
    }
    uint8_t **blobs = sm_realloc(s->blobs, (s->n + 1) * sizeof *blobs);
    if (blobs != NULL) {
        s->blobs = blobs;
    }
    size_t *lens = sm_realloc(s->lens, (s->n + 1) * sizeof *lens);
    if (lens != NULL) {
        s->lens = lens;
    }
    if (names == NULL || blobs == NULL || lens == NULL) {
        sm_free(copy);
        return SM_ENOMEM;
    }
    snprintf(s->names[s->n], sizeof s->names[0], "%s", name);
    s->blobs[s->n] = copy;
    s->lens[s->n] = len;
    s->n++;
    return SM_OK;
}

static void round_clear(struct round *r)
{
    for (size_t i = 0; i < r->n; i++) {
        sm_free(r->nodes[i].blob);
    }
    sm_free(r->nodes);
    memset(r, 0, sizeof *r);
}

static struct rnode *round_node(struct round *r, const char *name)
{
    for (size_t i = 0; i < r->n; i++) {
        if (strcmp(r->nodes[i].name, name) == 0) {
            return &r->nodes[i];
        }
    }
    return NULL;
}

static struct rnode *round_add(struct round *r, const char *name)
{
    struct rnode *n = round_node(r, name);
    if (n != NULL) {
        return n;
    }
    if (r->n == r->cap) {
        size_t cap = r->cap ? 2 * r->cap : 32;
        struct rnode *nodes = sm_realloc(r->nodes, cap * sizeof *nodes);
        if (nodes == NULL) {
            return NULL;
        }
        r->nodes = nodes;
        r->cap = cap;
    }
    n = &r->nodes[r->n++];
    memset(n, 0, sizeof *n);
    snprintf(n->name, sizeof n->name, "%s", name);
    return n;
}

int node_train_new(const struct node_train_config *config,
                   const struct node_train_env *env,
                   struct node_train **out)
{
    struct node_train *t = sm_calloc(1, sizeof *t);
    if (t == NULL) {
        return SM_ENOMEM;
    }
    if (config != NULL) {
        t->cfg = *config;
    }
    t->cfg.answer_ms = t->cfg.answer_ms ? t->cfg.answer_ms : 600000;
    t->cfg.retry_ms = t->cfg.retry_ms ? t->cfg.retry_ms : 2000;
    t->cfg.fetch_ms = t->cfg.fetch_ms ? t->cfg.fetch_ms : 5000;
    t->cfg.catchup_max =
        t->cfg.catchup_max ? t->cfg.catchup_max : (size_t)64 << 20;
    t->env = *env;
    t->next_job = 1;
    t->unacked = sm_calloc(UNACKED_MAX, sizeof *t->unacked);
    t->commit = sm_calloc(NAMES_MAX, sizeof *t->commit);
    t->commit_names = sm_calloc(NAMES_MAX, sizeof *t->commit_names);
    if (t->unacked == NULL || t->commit == NULL || t->commit_names == NULL) {
        sm_free(t->unacked);
        sm_free(t->commit);
        sm_free(t->commit_names);
        sm_free(t);
        return SM_ENOMEM;
    }
    *out = t;
    return SM_OK;
}

void node_train_free(struct node_train *t)
{
    if (t == NULL) {
        return;
    }
    round_clear(&t->round);
    model_set_clear(&t->cache);
    model_set_clear(&t->pending);
    sm_free(t->members);
    sm_free(t->unacked);
    sm_free(t->commit);
    sm_free(t->commit_names);
    sm_free(t);
}

void node_train_stats(const struct node_train *t, struct node_train_stats *out)
{
    *out = t->st;
    out->windows_unacked = t->n_unacked;
    out->round_version = t->round.active ? t->round.spec.round : 0;
    size_t pending = 0;
    for (size_t i = 0; t->round.active && i < t->round.n; i++) {
        pending += t->round.nodes[i].blob == NULL;
    }
    out->round_pending = pending;
}

static void send_msg(struct node_train *t,
                     const char *peer,
                     int type,
                     const struct wbuf *b)
{
    if (b->failed) {
        return;
    }
    if (t->env.send(t->env.net_arg, peer, type, b->p, b->len) == SM_OK) {
        t->st.bytes_sent += b->len;
    }
}

/* ---- Windows ------------------------------------------------------------- */

/* TP_MSG_WINDOW bodies: u32 count, then count x (u32 length, encoding). */

static void unacked_add(struct node_train *t, const char *peer, uint64_t end)
{
    if (t->n_unacked == UNACKED_MAX) {
        t->st.windows_given_up++;
        if (t->st.windows_given_up % 1000 == 1) {
            sm_log(SM_LOG_WARN, MOD,
                   "too many windows unacknowledged: giving up the oldest",
                   "peer=%s given_up=%" PRIu64, t->unacked[0].peer,
                   t->st.windows_given_up);
        }
        memmove(&t->unacked[0], &t->unacked[1],
                (UNACKED_MAX - 1) * sizeof t->unacked[0]);
        t->n_unacked--;
    }
    struct unacked *u = &t->unacked[t->n_unacked++];
    snprintf(u->peer, sizeof u->peer, "%s", peer);
    u->end_ns = end;
    u->sent_ms = t->now_ms ? t->now_ms : 1;
}

void node_train_window(struct node_train *t,
                       const uint8_t *w,
                       size_t len,
                       uint64_t end_ns)
{
    struct wbuf b = {0};
    w_u32(&b, 1);
    w_bytes(&b, w, len);
    for (size_t i = 0; i < t->n_members; i++) {
        if (strcmp(t->members[i], t->self) != 0) {
            send_msg(t, t->members[i], TP_MSG_WINDOW, &b);
            unacked_add(t, t->members[i], end_ns);
            t->st.windows_sent++;
        }
    }
    sm_free(b.p);
}

static void recv_wack(struct node_train *t, const char *peer, struct rbuf *b)
{
    uint32_t n = r_u32(b);
    for (uint32_t i = 0; i < n && !b->bad; i++) {
        uint64_t end = r_u64(b);
        for (size_t k = 0; k < t->n_unacked; k++) {
            struct unacked *u = &t->unacked[k];
            if (u->end_ns == end && strcmp(u->peer, peer) == 0) {
                memmove(u, u + 1, (t->n_unacked - k - 1) * sizeof *u);
                t->n_unacked--;
                break;
            }
        }
    }
}

struct resend
{
    struct node_train *t;
    const char *peer;
};

static int resend_one(void *arg, const uint8_t *w, size_t len)
{
    struct resend *r = arg;
    struct wbuf b = {0};
    w_u32(&b, 1);
    w_bytes(&b, w, len);
    send_msg(r->t, r->peer, TP_MSG_WINDOW, &b);
    r->t->st.windows_resent++;
    sm_free(b.p);
    return 0;
}

static int is_member(const struct node_train *t, const char *peer)
{
    for (size_t i = 0; i < t->n_members; i++) {
        if (strcmp(t->members[i], peer) == 0) {
            return 1;
        }
    }
    return 0;
}

/* Sends again what was not acknowledged within the retry period (a few
 * windows per peer per tick), and forgets what was sent to non-members. */
static void resend_windows(struct node_train *t, uint64_t now)
{
    size_t k = 0;
    for (size_t i = 0; i < t->n_unacked; i++) {
        if (is_member(t, t->unacked[i].peer)) {
            t->unacked[k++] = t->unacked[i];
        }
    }
    t->n_unacked = k;
    for (size_t m = 0; m < t->n_members; m++) {
        const char *peer = t->members[m];
        size_t sent = 0;
        for (size_t i = 0; i < t->n_unacked && sent < RESEND_MAX; i++) {
            struct unacked *u = &t->unacked[i];
            if (strcmp(u->peer, peer) != 0 ||
                now < u->sent_ms + t->cfg.retry_ms) {
                continue;
            }
            struct resend r = {t, peer};
            t->env.each_window(t->env.arg, u->end_ns - 1, u->end_ns, resend_one,
                               &r);
            u->sent_ms = now ? now : 1;
            sent++;
        }
    }
}

static void recv_windows(struct node_train *t,
                         const char *peer,
                         const void *data,
                         size_t len)
{
    struct rbuf b = {.p = data, .len = len};
    uint32_t n = r_u32(&b);
    /* Check the framing first: a batch is taken whole or not at all. */
    size_t start = b.off;
    for (uint32_t i = 0; i < n && !b.bad; i++) {
        size_t wl;
        r_bytes(&b, &wl);
    }
    if (b.bad || b.off != b.len) {
        sm_log(SM_LOG_WARN, MOD, "malformed window batch dropped", "bytes=%zu",
               len);
        return;
    }
    b.off = start;
    struct wbuf ack = {0};
    w_u8(&ack, MSG_VERSION);
    w_u8(&ack, MSG_WACK);
    w_u32(&ack, 0); /* patched below */
    uint32_t acked = 0;
    for (uint32_t i = 0; i < n; i++) {
        size_t wl;
        const uint8_t *w = r_bytes(&b, &wl);
        uint64_t end = 0;
        if (t->env.add_window(t->env.arg, w, wl, &end) == SM_OK) {
            w_u64(&ack, end);
            acked++;
        }
        t->st.windows_received++;
    }
    if (acked > 0 && !ack.failed) {
        for (int i = 0; i < 4; i++) {
            ack.p[2 + i] = (uint8_t)(acked >> (8 * i));
        }
        send_msg(t, peer, TP_MSG_TRAIN, &ack);
    }
    sm_free(ack.p);
}

struct catchup
{
    struct node_train *t;
    const char *peer;
    struct wbuf b;
    uint32_t count;
    size_t total;
};

static void catchup_flush(struct catchup *c)
{
    if (c->count == 0) {
        return;
    }
    /* the count goes first: patch it into the reserved slot */
    for (int i = 0; i < 4 && !c->b.failed; i++) {
        c->b.p[i] = (uint8_t)(c->count >> (8 * i));
    }
    send_msg(c->t, c->peer, TP_MSG_WINDOW, &c->b);
    c->t->st.windows_caught_up += c->count;
    c->b.len = 0;
    c->count = 0;
}

static int catchup_one(void *arg, const uint8_t *w, size_t len)
{
    struct catchup *c = arg;
    if (c->total + len > c->t->cfg.catchup_max) {
        return 1;
    }
    if (c->count > 0 && c->b.len + len + 4 > WINDOW_BATCH) {
        catchup_flush(c);
    }
    if (c->count == 0) {
        w_u32(&c->b, 0); /* patched by catchup_flush */
    }
    w_bytes(&c->b, w, len);
    c->count++;
    c->total += len;
    return c->b.failed;
}

/* Sends @peer the windows of the active round (it said it lacks some). */
static void send_catchup(struct node_train *t, const char *peer, uint64_t now)
{
    struct round *r = &t->round;
    size_t slot = 0; /* this peer's, else the oldest */
    for (size_t i = 0; i < CATCHUP_PEERS; i++) {
        if (strcmp(r->catchup_peer[i], peer) == 0) {
            slot = i;
            break;
        }
        if (r->catchup_ms[i] < r->catchup_ms[slot]) {
            slot = i;
        }
    }
    if (strcmp(r->catchup_peer[slot], peer) == 0 &&
        now < r->catchup_ms[slot] + t->cfg.retry_ms) {
        return; /* one catch-up per peer per retry period */
    }
    snprintf(r->catchup_peer[slot], sizeof r->catchup_peer[slot], "%s", peer);
    r->catchup_ms[slot] = now ? now : 1;
    struct catchup c = {.t = t, .peer = peer};
    t->env.each_window(t->env.arg, r->spec.from_ns, r->spec.to_ns, catchup_one,
                       &c);
    catchup_flush(&c);
    sm_log(SM_LOG_INFO, MOD, "sent a peer the round's windows",
           "peer=%s bytes=%zu", peer, c.total);
    sm_free(c.b.p);
}

/* ---- Owner: training what the leader asks -------------------------------- */

static struct job *job_find(struct node_train *t, uint64_t id)
{
    for (size_t i = 0; i < t->n_jobs; i++) {
        if (t->jobs[i].id == id) {
            return &t->jobs[i];
        }
    }
    return NULL;
}

/* Starts a training for @requester; returns its job id or 0. */
static uint64_t job_start(struct node_train *t,
                          const char *requester,
                          const struct node_train_spec *spec,
                          const char *const *nodes,
                          size_t n)
{
    uint64_t id = t->next_job++;
    int rc = t->env.train(t->env.arg, id, spec, nodes, n);
    if (rc != SM_OK) {
        sm_log(SM_LOG_WARN, MOD, "cannot start training",
               "round=%" PRIu64 " error=%s", spec->round, sm_errname(rc));
        return 0;
    }
    if (t->n_jobs == JOBS_MAX) {
        memmove(&t->jobs[0], &t->jobs[1], (JOBS_MAX - 1) * sizeof t->jobs[0]);
        t->n_jobs--;
    }
    struct job *j = &t->jobs[t->n_jobs++];
    j->id = id;
    j->round = spec->round;
    j->spec_id = spec_id(spec);
    snprintf(j->requester, sizeof j->requester, "%s", requester);
    return id;
}

static void send_fail(struct node_train *t,
                      const char *peer,
                      const struct job *j,
                      int status,
                      const char *why);

static void recv_start(struct node_train *t, const char *peer, struct rbuf *b)
{
    struct node_train_spec spec;
    r_spec(b, &spec);
    uint32_t n = r_u32(b);
    if (b->bad || n == 0 || n > NAMES_MAX) {
        return;
    }
    node_name *names = sm_calloc(n, sizeof *names);
    const char **ptrs = sm_calloc(n, sizeof *ptrs);
    if (names == NULL || ptrs == NULL) {
        sm_free(names);
        sm_free(ptrs);
        return;
    }
    for (uint32_t i = 0; i < n; i++) {
        r_str(b, names[i], CONS_NAME_MAX);
        ptrs[i] = names[i];
    }
    if (t->env.train == NULL && !b->bad) {
        struct job none = {.round = spec.round, .spec_id = spec_id(&spec)};
        send_fail(t, peer, &none, SM_EUNSUPPORTED, "this peer has no model");
        return;
    }
    /* From whoever leads as the sender sees it (this peer's view may lag
     * an election), for a version not committed yet. */
    if (!b->bad && b->off == b->len && spec.round <= t->committed) {
        sm_log(SM_LOG_INFO, MOD, "a request for a committed version ignored",
               "peer=%s round=%" PRIu64, peer, spec.round);
    } else if (!b->bad && b->off == b->len) {
        sm_log(SM_LOG_INFO, MOD, "training shards for the leader",
               "leader=%s round=%" PRIu64 " nodes=%" PRIu32, peer, spec.round,
               n);
        job_start(t, peer, &spec, ptrs, n);
    }
    sm_free(names);
    sm_free(ptrs);
}

static void send_fail(struct node_train *t,
                      const char *peer,
                      const struct job *j,
                      int status,
                      const char *why)
{
    struct wbuf b = {0};
    w_u8(&b, MSG_VERSION);
    w_u8(&b, MSG_FAIL);
    w_u64(&b, j->round);
    w_u64(&b, j->spec_id);
    w_u32(&b, (uint32_t)status);
    w_str(&b, why[0] ? why : sm_errname(status));
    send_msg(t, peer, TP_MSG_TRAIN, &b);
    sm_free(b.p);
}

static void send_shard(struct node_train *t,
                       const char *peer,
                       const struct job *j,
                       const struct node_train_result *r,
                       const struct node_train_shard *s)
{
    struct wbuf b = {0};
    w_u8(&b, MSG_VERSION);
    w_u8(&b, MSG_SHARD);
    w_u64(&b, j->round);
    w_u64(&b, j->spec_id);
    w_raw(&b, r->cbn_digest, 32);
    w_u64(&b, r->cbn_size);
    w_str(&b, s->node);
    w_bytes(&b, s->blob, s->len);
    send_msg(t, peer, TP_MSG_TRAIN, &b);
    sm_free(b.p);
}

/* ---- Leader: running a round --------------------------------------------- */

static int member_up(const struct node_train_view *v, const char *id)
{
    if (id == NULL || id[0] == '\0') {
        return 0;
    }
    for (size_t i = 0; i < v->n_members; i++) {
        if (strcmp(v->members[i], id) == 0) {
            return v->health[i] == CONS_HEALTH_UP;
        }
    }
    return 0;
}

/* Where node @n goes at its stage: the first healthy of owner, replica,
 * leader. */
static void assign(struct node_train *t,
                   const struct node_train_view *v,
                   struct rnode *n)
{
    const char *owner = "", *replica = "";
    for (size_t i = 0; i < v->n_place; i++) {
        if (strcmp(v->place[i].service, n->name) == 0) {
            owner = v->place_owner[i];
            replica = v->place_replica[i];
            break;
        }
    }
    for (;;) {
        const char *who = n->stage == 0 ? owner : n->stage == 1 ? replica : "";
        if (n->stage >= 2) {
            snprintf(n->peer, sizeof n->peer, "%s", t->self);
            break;
        }
        if (strcmp(who, t->self) == 0 || member_up(v, who)) {
            snprintf(n->peer, sizeof n->peer, "%s", who);
            break;
        }
        n->stage++;
    }
    n->fails = 0;
    n->asked_ms = 0;
}

/* Asks every peer for its nodes that are due to be asked, one START each;
 * the leader's own share becomes one training. */
static void ask(struct node_train *t, uint64_t now)
{
    struct round *r = &t->round;
    for (size_t i = 0; i < r->n; i++) {
        struct rnode *n = &r->nodes[i];
        if (n->blob != NULL || n->asked_ms != 0 || n->peer[0] == '\0') {
            continue;
        }
        const char *peer = n->peer;
        const char *names[NAMES_MAX];
        size_t k = 0;
        for (size_t j = i; j < r->n && k < NAMES_MAX; j++) {
            struct rnode *m = &r->nodes[j];
            if (m->blob == NULL && m->asked_ms == 0 &&
                strcmp(m->peer, peer) == 0) {
                names[k++] = m->name;
                m->asked_ms = now ? now : 1;
            }
        }
        if (strcmp(peer, t->self) == 0) {
            if (job_start(t, t->self, &r->spec, names, k) == 0) {
                for (size_t j = 0; j < k; j++) {
                    round_node(r, names[j])->asked_ms = 0; /* next tick */
                }
            }
            continue;
        }
        struct wbuf b = {0};
        w_u8(&b, MSG_VERSION);
        w_u8(&b, MSG_START);
        w_spec(&b, &r->spec);
        w_u32(&b, (uint32_t)k);
        for (size_t j = 0; j < k; j++) {
            w_str(&b, names[j]);
        }
        send_msg(t, peer, TP_MSG_TRAIN, &b);
        sm_free(b.p);
    }
}

static void start_round(struct node_train *t,
                        const struct node_train_view *v,
                        uint64_t now,
                        int fresh)
{
    struct round *r = &t->round;
    round_clear(r);
    t->start_failed_ms = now ? now : 1; /* cleared once it started */
    if (t->env.round_windows(t->env.arg, &r->spec) != SM_OK) {
        return;
    }
    r->spec.round = v->versions.model_version + 1;
    r->spec.prev_version = fresh ? 0 : v->versions.model_version;
    r->spec_id = spec_id(&r->spec);
    node_name *names = sm_calloc(NAMES_MAX, sizeof *names);
    size_t n = 0;
    int rc = names == NULL ? SM_ENOMEM
                           : t->env.round_nodes(t->env.arg, &r->spec, names,
                                                NAMES_MAX, &n);
    if (rc != SM_OK || n == 0) {
        sm_log(SM_LOG_WARN, MOD, "cannot list the round's CBN nodes",
               "error=%s nodes=%zu", sm_errname(rc), n);
        sm_free(names);
        round_clear(r);
        return;
    }
    /* Every CBN node goes to its owner, else its replica, else (also when
     * it is not placed yet) the leader. */
    size_t remote = 0;
    for (size_t i = 0; i < n && i < NAMES_MAX; i++) {
        struct rnode *node = round_add(r, names[i]);
        if (node == NULL) {
            sm_free(names);
            round_clear(r);
            return;
        }
        assign(t, v, node);
        remote += strcmp(node->peer, t->self) != 0;
    }
    sm_free(names);
    r->active = 1;
    r->started_ms = now ? now : 1;
    t->start_failed_ms = 0;
    t->st.rounds_started++;
    sm_log(SM_LOG_INFO, MOD, "training round started",
           "round=%" PRIu64 " windows=%" PRIu64 " nodes=%zu remote=%zu",
           r->spec.round, r->spec.n_windows, r->n, remote);
    ask(t, r->started_ms);
}

/* Moves nodes whose peer is down, failed too often or is silent. */
static void reassign(struct node_train *t,
                     const struct node_train_view *v,
                     uint64_t now)
{
    struct round *r = &t->round;
    for (size_t i = 0; i < r->n; i++) {
        struct rnode *n = &r->nodes[i];
        if (n->blob != NULL || strcmp(n->peer, t->self) == 0 ||
            n->asked_ms == 0) {
            continue;
        }
        int down = !member_up(v, n->peer);
        int silent = now >= n->asked_ms + t->cfg.answer_ms;
        if (down || silent || n->fails >= FAILS_MAX) {
            sm_log(SM_LOG_WARN, MOD, "shard moves to another peer",
                   "node=%s from=%s cause=%s", n->name, n->peer,
                   down     ? "down"
                   : silent ? "no answer"
                            : "failed");
            n->stage++;
            assign(t, v, n);
            t->st.shards_reassigned++;
        } else if (n->fails > 0 && now >= n->asked_ms + t->cfg.retry_ms) {
            n->asked_ms = 0; /* ask the same peer again */
        }
    }
}

static int round_complete(const struct round *r)
{
    if (!r->cbn_known) {
        return 0;
    }
    for (size_t i = 0; i < r->n; i++) {
        if (r->nodes[i].blob == NULL) {
            return 0;
        }
    }
    return r->n > 0;
}

static int shard_cmp(const void *a, const void *b)
{
    return strcmp(((const struct cons_shard_digest *)a)->service,
                  ((const struct cons_shard_digest *)b)->service);
}

/* Keeps the round's shards in the cache: they serve FETCH even if this
 * peer loses the leadership before it sees the commit. */
static int cache_round(struct node_train *t)
{
    struct round *r = &t->round;
    if (t->cache.spec.round == r->spec.round &&
        memcmp(&t->cache.spec, &r->spec, sizeof r->spec) == 0 &&
        t->cache.n == r->n) {
        return SM_OK;
    }
    model_set_clear(&t->cache);
    t->cache.spec = r->spec;
    for (size_t i = 0; i < r->n; i++) {
        int rc = model_set_put(&t->cache, r->nodes[i].name, r->nodes[i].blob,
                               r->nodes[i].len);
        if (rc != SM_OK) {
            model_set_clear(&t->cache);
            return rc;
        }
    }
    return SM_OK;
}

static void propose_commit(struct node_train *t,
                           const struct node_train_view *v)
{
    struct round *r = &t->round;
    if (cache_round(t) != SM_OK) {
        return; /* out of memory: proposed again at a later tick */
    }
    uint64_t cbn_version = v->versions.cbn_version;
    if (cbn_version == 0 ||
        memcmp(v->versions.cbn_digest.b, r->cbn_digest, 32) != 0) {
        struct cons_cmd cbn = {.type = CONS_CMD_CBN_COMMIT};
        cbn.u.cbn.version = ++cbn_version;
        cbn.u.cbn.size = r->cbn_size;
        memcpy(cbn.u.cbn.digest.b, r->cbn_digest, 32);
        t->env.propose(t->env.net_arg, &cbn);
    }
    struct cons_shard_digest *sh = sm_calloc(r->n, sizeof *sh);
    if (sh == NULL) {
        return;
    }
    for (size_t i = 0; i < r->n; i++) {
        sh[i].service = r->nodes[i].name;
        tp_digest(r->nodes[i].blob, r->nodes[i].len, sh[i].digest.b);
    }
    qsort(sh, r->n, sizeof *sh, shard_cmp);
    struct cons_cmd model = {.type = CONS_CMD_MODEL_COMMIT};
    model.u.model.version = r->spec.round;
    model.u.model.cbn_version = cbn_version;
    model.u.model.n_shards = r->n;
    model.u.model.shards = sh;
    /* The CBN the shards were trained on: if another leader committed
     * cbn_version with another CBN, the log refuses this model and the
     * next attempt commits ours under a new version. */
    memcpy(model.u.model.cbn_digest.b, r->cbn_digest, 32);
    t->env.propose(t->env.net_arg, &model);
    sm_free(sh);
}

/* Whether the shards of @s match the committed model of @v exactly. */
static int matches_commit(const struct model_set *s,
                          const struct node_train_view *v)
{
    if (s->spec.round != v->versions.model_version || s->n != v->n_shards) {
        return 0;
    }
    for (size_t i = 0; i < v->n_shards; i++) {
        size_t j = 0;
        while (j < s->n && strcmp(s->names[j], v->shards[i].service) != 0) {
            j++;
        }
        uint8_t d[TP_DIGEST_SIZE];
        if (j == s->n) {
            return 0;
        }
        tp_digest(s->blobs[j], s->lens[j], d);
        if (memcmp(d, v->shards[i].digest.b, TP_DIGEST_SIZE) != 0) {
            return 0;
        }
    }
    return 1;
}

static void send_model(struct node_train *t,
                       const char *peer,
                       const struct model_set *s)
{
    for (size_t i = 0; i < s->n; i++) {
        struct wbuf b = {0};
        w_u8(&b, MSG_VERSION);
        w_u8(&b, MSG_MODEL);
        w_spec(&b, &s->spec);
        w_str(&b, s->names[i]);
        w_bytes(&b, s->blobs[i], s->lens[i]);
        send_msg(t, peer, TP_MSG_TRAIN, &b);
        sm_free(b.p);
    }
}

static void start_install(struct node_train *t,
                          const struct model_set *s,
                          uint64_t now)
{
    int rc = t->env.install(t->env.arg, &s->spec, &t->commit_cbn,
                            (const uint8_t *const *)s->blobs, s->lens, s->n);
    if (rc == SM_OK) {
        t->installing = 1;
        t->install_version = s->spec.round;
    } else {
        t->st.install_failures++;
        t->failed_install = s->spec.round;
        t->failed_install_ms = now;
        sm_log(SM_LOG_WARN, MOD, "cannot install the committed model",
               "version=%" PRIu64 " error=%s", s->spec.round, sm_errname(rc));
    }
}

/* The round is in the log: keep its shards, send them to every member and
 * install them here. */
static void round_committed(struct node_train *t,
                            const struct node_train_view *v,
                            uint64_t now)
{
    struct round *r = &t->round;
    if (!matches_commit(&t->cache, v)) {
        /* Another leader committed this version with other shards: ours
         * are not the model; members fetch it from whoever has it. */
        sm_log(SM_LOG_WARN, MOD,
               "the round's version was committed by "
               "another leader",
               "round=%" PRIu64, r->spec.round);
        model_set_clear(&t->cache);
        round_clear(r);
        return;
    }
    t->st.rounds_committed++;
    t->st.round_ms = now - r->started_ms;
    sm_log(SM_LOG_INFO, MOD, "model version committed",
           "version=%" PRIu64 " shards=%zu ms=%" PRIu64, r->spec.round, r->n,
           t->st.round_ms);
    for (size_t i = 0; i < v->n_members; i++) {
        if (strcmp(v->members[i], t->self) != 0) {
            send_model(t, v->members[i], &t->cache);
        }
    }
    round_clear(r);
    if (t->env.model_version(t->env.arg) < t->cache.spec.round &&
        !t->installing) {
        start_install(t, &t->cache, now);
    }
}

static void lead(struct node_train *t,
                 const struct node_train_view *v,
                 uint64_t now)
{
    struct round *r = &t->round;
    if (r->active && v->versions.model_version >= r->spec.round) {
        round_committed(t, v, now);
        return;
    }
    if (!r->active) {
        uint64_t have = t->env.model_version(t->env.arg);
        uint64_t committed = v->versions.model_version;
        if (have < committed) {
            /* Nobody sent the committed model (its shards were lost with
             * a leader): after a while, train the next one from scratch. */
            t->stuck_since_ms = t->stuck_since_ms ? t->stuck_since_ms : now;
            if (!t->installing &&
                now >= t->stuck_since_ms + 4 * t->cfg.fetch_ms) {
                sm_log(SM_LOG_WARN, MOD,
                       "the committed model cannot be fetched: training the "
                       "next from scratch",
                       "version=%" PRIu64, committed);
                t->stuck_since_ms = now;
                start_round(t, v, now, 1);
            }
            return;
        }
        t->stuck_since_ms = 0;
        if (t->start_failed_ms != 0 &&
            now < t->start_failed_ms + 5 * t->cfg.retry_ms) {
            return; /* a round could not start: not again at once */
        }
        /* With other members, wait for the first placement: the round
         * is then spread over the owners instead of the leader alone. */
        int placed = v->n_place > 0 || v->n_members <= 1;
        if (!t->installing && have == committed && placed &&
            (t->want > committed || t->env.round_due(t->env.arg))) {
            start_round(t, v, now, 0);
        }
        return;
    }
    /* owner, replica and leader each get answer_ms */
    if (now >= r->started_ms + 4 * t->cfg.answer_ms) {
        sm_log(SM_LOG_WARN, MOD, "training round abandoned: too slow",
               "round=%" PRIu64, r->spec.round);
        round_clear(r);
        return;
    }
    reassign(t, v, now);
    ask(t, now);
    if (round_complete(r) &&
        (r->proposed_ms == 0 || now >= r->proposed_ms + t->cfg.retry_ms)) {
        r->proposed_ms = now ? now : 1;
        propose_commit(t, v);
    }
}

static void recv_shard(struct node_train *t, const char *peer, struct rbuf *b)
{
    uint64_t round = r_u64(b);
    uint64_t sid = r_u64(b);
    const uint8_t *cbn = r_raw(b, 32);
    uint64_t cbn_size = r_u64(b);
    node_name name;
    r_str(b, name, CONS_NAME_MAX);
    size_t len;
    const uint8_t *blob = r_bytes(b, &len);
    struct round *r = &t->round;
    if (b->bad || b->off != b->len) {
        return;
    }
    if (!t->is_leader || !r->active || r->spec.round != round ||
        r->spec_id != sid) {
        return; /* a dead round's answer, or an earlier attempt's */
    }
    if (r->cbn_known && memcmp(r->cbn_digest, cbn, 32) != 0) {
        sm_log(SM_LOG_WARN, MOD, "a shard for another CBN dropped",
               "peer=%s node=%s", peer, name);
        return;
    }
    /* Any peer's shard for this spec will do: the same windows and model
     * give the same shard, so a slow owner's late answer still counts. */
    struct rnode *n = round_node(r, name);
    if (n == NULL || n->blob != NULL) {
        return;
    }
    n->blob = sm_malloc(len ? len : 1);
    if (n->blob == NULL) {
        return;
    }
    memcpy(n->blob, blob, len);
    n->len = len;
    if (!r->cbn_known) {
        memcpy(r->cbn_digest, cbn, 32);
        r->cbn_size = cbn_size;
        r->cbn_known = 1;
    }
    t->st.shards_received++;
}

static void recv_fail(struct node_train *t,
                      const char *peer,
                      struct rbuf *b,
                      uint64_t now)
{
    uint64_t round = r_u64(b);
    uint64_t sid = r_u64(b);
    int status = (int)r_u32(b);
    char why[SM_ERRMSG_SIZE];
    r_str(b, why, sizeof why - 1);
    struct round *r = &t->round;
    if (b->bad || b->off != b->len || !t->is_leader || !r->active ||
        r->spec.round != round || r->spec_id != sid) {
        return;
    }
    sm_log(SM_LOG_WARN, MOD, "a peer could not train its shards",
           "peer=%s round=%" PRIu64 " error=%s cause=\"%s\"", peer, round,
           sm_errname(status), why);
    for (size_t i = 0; i < r->n; i++) {
        struct rnode *n = &r->nodes[i];
        if (n->blob == NULL && strcmp(n->peer, peer) == 0) {
            n->fails++;
        }
    }
    if (status == SM_ENOTFOUND) {
        send_catchup(t, peer, now);
    }
}

/* ---- Members: installing committed models -------------------------------- */

/* Whether @name's shard with these bytes is in the committed model. */
static int in_commit(const struct node_train *t,
                     const char *name,
                     const uint8_t *blob,
                     size_t len)
{
    for (size_t i = 0; i < t->n_commit; i++) {
        if (strcmp(t->commit_names[i], name) == 0) {
            uint8_t d[TP_DIGEST_SIZE];
            tp_digest(blob, len, d);
            return memcmp(d, t->commit[i].digest.b, TP_DIGEST_SIZE) == 0;
        }
    }
    return 0;
}

static void recv_model(struct node_train *t, const char *peer, struct rbuf *b)
{
    struct node_train_spec spec;
    r_spec(b, &spec);
    node_name name;
    r_str(b, name, CONS_NAME_MAX);
    size_t len;
    const uint8_t *blob = r_bytes(b, &len);
    if (b->bad || b->off != b->len || t->env.install == NULL) {
        return;
    }
    if (spec.round <= t->env.model_version(t->env.arg) ||
        spec.round < t->pending.spec.round || spec.round > t->committed + 1) {
        return;
    }
    if (spec.round == t->committed && !in_commit(t, name, blob, len)) {
        sm_log(SM_LOG_WARN, MOD,
               "a shard that is not the committed one dropped",
               "peer=%s node=%s version=%" PRIu64, peer, name, spec.round);
        return;
    }
    if (spec.round != t->pending.spec.round ||
        memcmp(&spec, &t->pending.spec, sizeof spec) != 0) {
        model_set_clear(&t->pending);
        t->pending.spec = spec;
    }
    if (model_set_put(&t->pending, name, blob, len) == SM_OK) {
        t->failed_install = 0;
    }
}

static void recv_fetch(struct node_train *t, const char *peer, struct rbuf *b)
{
    uint64_t version = r_u64(b);
    if (b->bad || b->off != b->len) {
        return;
    }
    if (t->cache.n > 0 && t->cache.spec.round == version) {
        send_model(t, peer, &t->cache);
    } else if (t->pending.n > 0 && t->pending.spec.round == version) {
        send_model(t, peer, &t->pending);
    }
}

/* Whether an install of version @v may start now: not right after one
 * failed (tried again after fetch_ms). */
static int may_install(const struct node_train *t, uint64_t v, uint64_t now)
{
    return t->failed_install != v ||
           now >= t->failed_install_ms + t->cfg.fetch_ms;
}

/* Installs or fetches the committed model when this peer lacks it: from
 * the shards pushed to it or kept from its own round; else, after
 * fetch_ms without them, asks the leader (a leader asks every member). */
static void follow(struct node_train *t,
                   const struct node_train_view *v,
                   uint64_t now)
{
    uint64_t want = v->versions.model_version;
    if (t->env.install == NULL || want == 0 || t->installing ||
        t->env.model_version(t->env.arg) >= want) {
        t->fetch_ms = 0;
        return;
    }
    if (t->pending.spec.round == want && may_install(t, want, now) &&
        matches_commit(&t->pending, v)) {
        start_install(t, &t->pending, now);
        return;
    }
    if (t->cache.spec.round == want && may_install(t, want, now) &&
        matches_commit(&t->cache, v)) {
        start_install(t, &t->cache, now);
        return;
    }
    if (t->fetch_ms == 0) {
        t->fetch_ms = now ? now : 1; /* the leader pushes it: wait first */
        return;
    }
    if (now < t->fetch_ms + t->cfg.fetch_ms) {
        return;
    }
    t->fetch_ms = now ? now : 1;
    struct wbuf b = {0};
    w_u8(&b, MSG_VERSION);
    w_u8(&b, MSG_FETCH);
    w_u64(&b, want);
    for (size_t i = 0; i < t->n_members; i++) {
        const char *m = t->members[i];
        if (strcmp(m, t->self) != 0 && (t->is_leader || v->leader[0] == '\0' ||
                                        strcmp(m, v->leader) == 0)) {
            send_msg(t, m, TP_MSG_TRAIN, &b);
        }
    }
    sm_free(b.p);
}

void node_train_installed(struct node_train *t,
                          uint64_t version,
                          int status,
                          const char *errmsg)
{
    t->installing = 0;
    if (status == SM_OK) {
        t->st.installs++;
        if (t->pending.spec.round <= version) {
            model_set_clear(&t->pending);
        }
        sm_log(SM_LOG_INFO, MOD, "model installed", "version=%" PRIu64,
               version);
        return;
    }
    t->st.install_failures++;
    t->failed_install = t->install_version;
    t->failed_install_ms = t->now_ms;
    sm_log(SM_LOG_WARN, MOD,
           status == SM_ECONFLICT
               ? "model not installed: the log binds it to another CBN"
               : "model install failed",
           "version=%" PRIu64 " error=%s cause=\"%s\"", t->install_version,
           sm_errname(status), errmsg ? errmsg : "");
}

/* ---- Results of this peer's trainings ------------------------------------ */

void node_train_trained(struct node_train *t,
                        uint64_t job,
                        const struct node_train_result *res)
{
    struct job *j = job_find(t, job);
    if (j == NULL) {
        return;
    }
    struct job copy = *j;
    *j = t->jobs[--t->n_jobs];
    t->st.shards_trained += res->status == SM_OK ? res->n : 0;
    if (strcmp(copy.requester, t->self) != 0) {
        if (res->status != SM_OK) {
            send_fail(t, copy.requester, &copy, res->status,
                      res->errmsg ? res->errmsg : "");
            return;
        }
        for (size_t i = 0; i < res->n; i++) {
            send_shard(t, copy.requester, &copy, res, &res->shards[i]);
        }
        return;
    }
    /* The leader's own share. */
    struct round *r = &t->round;
    if (!t->is_leader || !r->active || r->spec.round != copy.round ||
        r->spec_id != copy.spec_id) {
        return; /* an earlier attempt's */
    }
    if (res->status != SM_OK) {
        sm_log(SM_LOG_WARN, MOD, "the leader could not train its shards",
               "round=%" PRIu64 " error=%s cause=\"%s\"", copy.round,
               sm_errname(res->status), res->errmsg ? res->errmsg : "");
        if (++r->self_fails >= FAILS_MAX) {
            round_clear(r); /* started again, on a new spec, when due */
            return;
        }
        for (size_t i = 0; i < r->n; i++) {
            if (r->nodes[i].blob == NULL &&
                strcmp(r->nodes[i].peer, t->self) == 0) {
                r->nodes[i].asked_ms = 0; /* tried again at the next tick */
            }
        }
        return;
    }
    if (r->cbn_known && memcmp(r->cbn_digest, res->cbn_digest, 32) != 0) {
        sm_log(SM_LOG_ERROR, MOD, "peers disagree on the round's CBN",
               "round=%" PRIu64, copy.round);
        round_clear(r);
        return;
    }
    memcpy(r->cbn_digest, res->cbn_digest, 32);
    r->cbn_size = res->cbn_size;
    r->cbn_known = 1;
    for (size_t i = 0; i < res->n; i++) {
        struct rnode *n = round_node(r, res->shards[i].node);
        if (n == NULL || n->blob != NULL) {
            continue;
        }
        n->blob = sm_malloc(res->shards[i].len ? res->shards[i].len : 1);
        if (n->blob != NULL) {
            memcpy(n->blob, res->shards[i].blob, res->shards[i].len);
            n->len = res->shards[i].len;
        }
    }
}

/* A follower that wants a version sends it to the leader every retry
 * period until the log has it: a leader that dies before it commits does
 * not lose the request. */
static void pursue_want(struct node_train *t, uint64_t now)
{
    if (t->want <= t->committed) {
        t->want = 0;
        return;
    }
    if (t->is_leader || t->leader[0] == '\0' ||
        (t->request_ms != 0 && now < t->request_ms + t->cfg.retry_ms)) {
        return;
    }
    t->request_ms = now ? now : 1;
    struct wbuf b = {0};
    w_u8(&b, MSG_VERSION);
    w_u8(&b, MSG_REQUEST);
    w_u64(&b, t->want);
    send_msg(t, t->leader, TP_MSG_TRAIN, &b);
    sm_free(b.p);
}

/* ---- Ticks and messages -------------------------------------------------- */

static void take_view(struct node_train *t, const struct node_train_view *v)
{
    t->commit_cbn = v->versions.model_cbn_digest;
    t->n_commit = v->n_shards < NAMES_MAX ? v->n_shards : NAMES_MAX;
    for (size_t i = 0; i < t->n_commit; i++) {
        snprintf(t->commit_names[i], sizeof t->commit_names[i], "%s",
                 v->shards[i].service);
        t->commit[i].service = t->commit_names[i];
        t->commit[i].digest = v->shards[i].digest;
    }
    snprintf(t->self, sizeof t->self, "%s", v->self);
    snprintf(t->leader, sizeof t->leader, "%s", v->leader);
    t->is_leader = v->is_leader;
    if (v->n_members != t->n_members) {
        peer_id *m = sm_realloc(t->members, (v->n_members + 1) * sizeof *m);
        if (m == NULL) {
            return;
        }
        t->members = m;
    }
    t->n_members = v->n_members;
    for (size_t i = 0; i < v->n_members; i++) {
        snprintf(t->members[i], sizeof t->members[i], "%s", v->members[i]);
    }
}

void node_train_tick(struct node_train *t,
                     const struct node_train_view *v,
                     uint64_t now_ms)
{
    t->now_ms = now_ms;
    t->committed = v->versions.model_version;
    take_view(t, v);
    if (!v->is_leader && t->round.active) {
        sm_log(SM_LOG_INFO, MOD, "no longer the leader: round dropped",
               "round=%" PRIu64, t->round.spec.round);
        round_clear(&t->round);
    }
    if (v->is_leader && t->env.round_windows != NULL) {
        lead(t, v, now_ms);
    }
    follow(t, v, now_ms);
    pursue_want(t, now_ms);
    resend_windows(t, now_ms);
}

void node_train_recv(struct node_train *t,
                     const char *peer,
                     int type,
                     const void *data,
                     size_t len)
{
    t->st.bytes_received += len;
    if (!is_member(t, peer)) {
        sm_log(SM_LOG_WARN, MOD, "a training message from a non-member dropped",
               "peer=%s", peer);
        return;
    }
    if (type == TP_MSG_WINDOW) {
        recv_windows(t, peer, data, len);
        return;
    }
    if (type != TP_MSG_TRAIN || node_train_check_message(data, len) != SM_OK) {
        sm_log(SM_LOG_WARN, MOD, "malformed training message dropped",
               "peer=%s bytes=%zu", peer, len);
        return;
    }
    struct rbuf b = {.p = data, .len = len, .off = 2};
    switch (((const uint8_t *)data)[1]) {
        case MSG_START:
            recv_start(t, peer, &b);
            break;
        case MSG_SHARD:
            recv_shard(t, peer, &b);
            break;
        case MSG_FAIL:
            recv_fail(t, peer, &b, t->now_ms);
            break;
        case MSG_MODEL:
            recv_model(t, peer, &b);
            break;
        case MSG_FETCH:
            recv_fetch(t, peer, &b);
            break;
        case MSG_REQUEST: {
            uint64_t want = r_u64(&b);
            /* at most the next version: a request cannot order a train of
             * rounds */
            want = want > t->committed + 1 ? t->committed + 1 : want;
            if (!b.bad && b.off == b.len && want > t->want) {
                t->want = want; /* pursued if this peer leads, now or later */
            }
            break;
        }
        case MSG_WACK:
            recv_wack(t, peer, &b);
            break;
        default:
            break;
    }
}

int node_train_request(struct node_train *t)
{
    if (!t->is_leader && t->leader[0] == '\0') {
        return SM_ENOTLEADER;
    }
    if (t->want < t->committed + 1) {
        t->want = t->committed + 1;
    }
    t->request_ms = 0;
    pursue_want(t, t->now_ms);
    return SM_OK;
}

int node_train_check_message(const void *data, size_t len)
{
    struct rbuf b = {.p = data, .len = len};
    if (r_u8(&b) != MSG_VERSION) {
        return SM_EMALFORMED;
    }
    uint8_t kind = r_u8(&b);
    struct node_train_spec spec;
    node_name name;
    size_t n;
    switch (kind) {
        case MSG_START: {
            r_spec(&b, &spec);
            uint32_t k = r_u32(&b);
            if (k == 0 || k > NAMES_MAX) {
                return SM_EMALFORMED;
            }
            for (uint32_t i = 0; i < k && !b.bad; i++) {
                r_str(&b, name, CONS_NAME_MAX);
            }
            break;
        }
        case MSG_SHARD:
            r_u64(&b);
            r_u64(&b);
            r_raw(&b, 32);
            r_u64(&b);
            r_str(&b, name, CONS_NAME_MAX);
            r_bytes(&b, &n);
            break;
        case MSG_FAIL: {
            char why[SM_ERRMSG_SIZE];
            r_u64(&b);
            r_u64(&b);
            r_u32(&b);
            r_str(&b, why, sizeof why - 1);
            break;
        }
        case MSG_MODEL:
            r_spec(&b, &spec);
            r_str(&b, name, CONS_NAME_MAX);
            r_bytes(&b, &n);
            break;
        case MSG_FETCH:
            r_u64(&b);
            break;
        case MSG_REQUEST:
            r_u64(&b);
            break;
        case MSG_WACK: {
            uint32_t k = r_u32(&b);
            if (k > WACK_MAX || k > (len - b.off) / 8) {
                return SM_EMALFORMED;
            }
            for (uint32_t i = 0; i < k; i++) {
                r_u64(&b);
            }
            break;
        }
        default:
            return SM_EMALFORMED;
    }
    return b.bad || b.off != b.len ? SM_EMALFORMED : SM_OK;
}
