/* The raft bridge: raft's connections over an in-memory message link.
 *
 * The fake link joins several bridges in one process on one uv loop. A send
 * only queues a copy; a uv_idle callback delivers the queue, so nothing is
 * delivered from inside a send. Switches: a peer can be down (everything to
 * or from it is dropped, as for a dead host) and the next message can be
 * lost. A slot without a bridge captures what is sent to it, so a test can
 * play a hostile peer by hand.
 *
 * The first tests drive the transport as raft_uv would (listen, connect,
 * the raft ends of the socketpairs); the last runs three real raft servers
 * on raft_uv over the bridges and kills the leader. All waiting is on the
 * loop, bounded by a deadline timer; nothing sleeps. */
#include <errno.h>
#include <raft.h>
#include <raft/uv.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "base/alloc.h"
#include "base/err.h"
#include "base/rng.h"
#include "check.h"
#include "consensus/bridge_internal.h"
#include "consensus/consensus.h"

#define MAX_PEERS   4
#define DEADLINE_MS 10000

/* ---- The fake link ------------------------------------------------------- */

struct msg
{
    struct msg *next;
    int from, to;
    size_t len;
    unsigned char data[];
};

struct captured
{
    unsigned char data[64];
    size_t len;
};

struct slot
{
    const char *name;
    struct cons_link ops;
    struct raft_uv_transport t;
    bool has_bridge;
    bool down;
    struct captured cap[64]; /* what reached a slot without a bridge */
    unsigned n_cap;
};

static struct
{
    uv_loop_t loop;
    uv_idle_t idle;
    uv_timer_t deadline;
    bool expired;
    struct slot slots[MAX_PEERS];
    unsigned n;
    struct msg *head, *tail;
    unsigned lose_next;   /* messages still to lose */
    unsigned refuse_next; /* sends still to refuse with SM_EAGAIN */
    unsigned lost, delivered, dropped;
} N;

static int slot_index(const char *name)
{
    for (unsigned i = 0; i < N.n; i++) {
        if (strcmp(N.slots[i].name, name) == 0) {
            return (int)i;
        }
    }
    return -1;
}

static void deliver_one(const struct msg *m)
{
    struct slot *to = &N.slots[m->to];
    if (to->down || N.slots[m->from].down) {
        N.dropped++;
        return;
    }
    N.delivered++;
    if (to->has_bridge) {
        cons_bridge_recv(&to->t, N.slots[m->from].name, m->data, m->len);
    } else if (to->n_cap < 64 && m->len <= sizeof to->cap[0].data) {
        memcpy(to->cap[to->n_cap].data, m->data, m->len);
        to->cap[to->n_cap++].len = m->len;
    }
}

/* Delivers what was queued before this call; later sends wait for the
 * next round. */
static void on_idle(uv_idle_t *idle)
{
    struct msg *m = N.head;
    N.head = N.tail = NULL;
    while (m != NULL) {
        struct msg *next = m->next;
        deliver_one(m);
        free(m);
        m = next;
    }
    if (N.head == NULL) {
        uv_idle_stop(idle);
    }
}

static int fake_send(void *arg, const char *peer, const void *data, size_t len)
{
    struct slot *from = arg;
    int to = slot_index(peer);
    if (to < 0) {
        return SM_ENOTFOUND;
    }
    if (N.refuse_next > 0) {
        N.refuse_next--;
        return SM_EAGAIN;
    }
    if (N.lose_next > 0) {
        N.lose_next--;
        N.lost++;
        return SM_OK;
    }
    struct msg *m = malloc(sizeof *m + len);
    REQUIRE(m != NULL);
    m->next = NULL;
    m->from = (int)(from - N.slots);
    m->to = to;
    m->len = len;
    memcpy(m->data, data, len);
    if (N.tail != NULL) {
        N.tail->next = m;
    } else {
        N.head = m;
    }
    N.tail = m;
    uv_idle_start(&N.idle, on_idle);
    return SM_OK;
}

static void on_deadline(uv_timer_t *timer)
{
    (void)timer;
    N.expired = true;
}

/* Sets up the loop and @n slots; the first @n_bridges get a bridge. */
static void net_init(unsigned n, unsigned n_bridges)
{
    static const char *names[MAX_PEERS] = {"alpha", "bravo", "charlie",
                                           "delta"};
    char errmsg[SM_ERRMSG_SIZE];
    memset(&N, 0, sizeof N);
    REQUIRE_EQ(uv_loop_init(&N.loop), 0);
    uv_idle_init(&N.loop, &N.idle);
    uv_timer_init(&N.loop, &N.deadline);
    uv_timer_start(&N.deadline, on_deadline, DEADLINE_MS, 0);
    uv_unref((uv_handle_t *)&N.deadline);
    N.n = n;
    for (unsigned i = 0; i < n; i++) {
        struct slot *s = &N.slots[i];
        s->name = names[i];
        s->ops = (struct cons_link){.arg = s, .send = fake_send};
        if (i < n_bridges) {
            REQUIRE_OK(
                cons_bridge_init(&s->t, &N.loop, &s->ops, s->name, errmsg));
            cons_bridge_set_connect_timeout(&s->t, 50);
            s->has_bridge = true;
        }
    }
}

/* Runs the loop until *@flag is set or the deadline passes. */
static bool run_until(const bool *flag)
{
    while (!*flag && !N.expired) {
        uv_run(&N.loop, UV_RUN_ONCE);
    }
    return *flag;
}

static void on_bridge_closed(struct raft_uv_transport *t)
{
    bool *closed = t->data;
    *closed = true;
}

/* Closes every bridge that is still open, then the loop; checks that no
 * handle was left behind. */
static void net_close(void)
{
    bool closed[MAX_PEERS] = {false};
    for (unsigned i = 0; i < N.n; i++) {
        struct slot *s = &N.slots[i];
        if (s->has_bridge) {
            s->t.data = &closed[i];
            s->t.close(&s->t, on_bridge_closed);
            CHECK(!closed[i]); /* never from inside close() */
        }
    }
    for (unsigned i = 0; i < N.n; i++) {
        if (N.slots[i].has_bridge) {
            CHECK(run_until(&closed[i]));
            if (!closed[i]) {
                continue; /* a failed test: leak rather than abort */
            }
            cons_bridge_free(&N.slots[i].t);
            N.slots[i].has_bridge = false;
        }
    }
    uv_close((uv_handle_t *)&N.idle, NULL);
    uv_close((uv_handle_t *)&N.deadline, NULL);
    uv_run(&N.loop, UV_RUN_DEFAULT);
    for (struct msg *m = N.head, *next; m != NULL; m = next) {
        next = m->next;
        free(m);
    }
    CHECK_EQ(uv_loop_close(&N.loop), 0);
}

/* ---- Playing raft's part ------------------------------------------------- */

/* What raft would hold: the accepted and connected streams, and what was
 * read from them. */
struct end
{
    uv_stream_t *stream;
    unsigned char *got;
    size_t n_got, cap;
    bool eof;
};

static struct
{
    struct end accepted[32];
    unsigned n_accepted;
    raft_id accepted_id;
    char accepted_addr[CONS_PEER_ID_MAX + 1];
    struct end connected;
    int connect_status;
    bool connect_done;
    bool no_read; /* accepted ends are not read (raft is slow) */
} R;

static void end_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct end *e = h->data;
    (void)hint;
    if (e->cap - e->n_got < 4096) {
        e->cap = e->cap * 2 + 65536;
        e->got = realloc(e->got, e->cap);
    }
    *buf =
        uv_buf_init((char *)e->got + e->n_got, (unsigned)(e->cap - e->n_got));
}

static void end_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct end *e = s->data;
    (void)buf;
    if (n > 0) {
        e->n_got += (size_t)n;
    } else if (n < 0) {
        e->eof = true;
        uv_read_stop(s);
    }
}

static void end_read_start(struct end *e)
{
    e->stream->data = e;
    REQUIRE_EQ(uv_read_start(e->stream, end_alloc, end_read), 0);
}

static void on_accept(struct raft_uv_transport *t,
                      raft_id id,
                      const char *address,
                      uv_stream_t *stream)
{
    (void)t;
    REQUIRE(R.n_accepted < 32);
    R.accepted_id = id;
    snprintf(R.accepted_addr, sizeof R.accepted_addr, "%s", address);
    R.accepted[R.n_accepted].stream = stream;
    if (!R.no_read) {
        end_read_start(&R.accepted[R.n_accepted]);
    }
    R.n_accepted++;
}

static void on_connect(struct raft_uv_connect *req,
                       uv_stream_t *stream,
                       int status)
{
    (void)req;
    R.connect_done = true;
    R.connect_status = status;
    R.connected.stream = stream;
}

/* Closes a raft end the way raft does: uv_close, then raft_free. */
static void free_raft_end(uv_handle_t *h)
{
    raft_free(h);
}

static void end_close(struct end *e)
{
    if (e->stream != NULL) {
        uv_close((uv_handle_t *)e->stream, free_raft_end);
        e->stream = NULL;
    }
    free(e->got);
    memset(e, 0, sizeof *e);
}

static void reset_raft_side(void)
{
    memset(&R, 0, sizeof R);
}

static void close_raft_side(void)
{
    end_close(&R.connected);
    for (unsigned i = 0; i < R.n_accepted; i++) {
        end_close(&R.accepted[i]);
    }
    R.n_accepted = 0;
}

/* alpha connects to bravo and bravo accepts: both ends as raft sees them. */
static void connect_alpha_to_bravo(void)
{
    struct raft_uv_transport *a = &N.slots[0].t, *b = &N.slots[1].t;
    static struct raft_uv_connect req;
    REQUIRE_EQ(b->listen(b, on_accept), 0);
    REQUIRE_EQ(
        a->connect(a, &req, cons_peer_raft_id("bravo"), "bravo", on_connect),
        0);
    CHECK(!R.connect_done); /* never answered from inside connect() */
    REQUIRE(run_until(&R.connect_done));
    REQUIRE_EQ(R.connect_status, 0);
    REQUIRE_EQ(R.n_accepted, 1);
    CHECK_EQ(R.accepted_id, cons_peer_raft_id("alpha"));
    CHECK_STR(R.accepted_addr, "alpha");
}

static struct
{
    uv_write_t req;
    bool done;
    int status;
} W;

static void on_write(uv_write_t *req, int status)
{
    (void)req;
    W.done = true;
    W.status = status;
}

/* Writes @len bytes from raft's connected end and waits for the write. */
static void raft_write(const void *data, size_t len)
{
    uv_buf_t buf = uv_buf_init((char *)data, (unsigned)len);
    W.done = false;
    REQUIRE_EQ(uv_write(&W.req, R.connected.stream, &buf, 1, on_write), 0);
    REQUIRE(run_until(&W.done));
}

/* Runs the loop until the accepted end has @n bytes or sees EOF. */
static bool run_until_received(struct end *e, size_t n)
{
    while (e->n_got < n && !e->eof && !N.expired) {
        uv_run(&N.loop, UV_RUN_ONCE);
    }
    return e->n_got >= n;
}

static void setup(void)
{
    signal(SIGPIPE, SIG_IGN); /* as the node does: see raft_bridge.h */
    reset_raft_side();
}

/* ---- Tests of the transport --------------------------------------------- */

static void test_raft_id(void)
{
    /* FNV-1a 64 reference values. */
    CHECK(cons_peer_raft_id("") == UINT64_C(0xcbf29ce484222325));
    CHECK(cons_peer_raft_id("a") == UINT64_C(0xaf63dc4c8601ec8c));
    CHECK(cons_peer_raft_id("alpha") != cons_peer_raft_id("bravo"));
    CHECK(cons_peer_raft_id("alpha") != 0);
}

static void test_init_rejects(void)
{
    struct raft_uv_transport t;
    char errmsg[SM_ERRMSG_SIZE];
    struct cons_link ops = {.arg = NULL, .send = fake_send};
    uv_loop_t loop;
    REQUIRE_EQ(uv_loop_init(&loop), 0);
    CHECK_EQ(cons_bridge_init(&t, &loop, &ops, "has space", errmsg), SM_EINVAL);
    CHECK_EQ(cons_bridge_init(&t, &loop, &ops, "", errmsg), SM_EINVAL);
    CHECK_EQ(cons_bridge_init(&t, &loop, NULL, "alpha", errmsg), SM_EINVAL);
    REQUIRE_OK(cons_bridge_init(&t, &loop, &ops, "alpha", errmsg));
    /* raft_init must name the same peer. */
    CHECK_EQ(t.init(&t, cons_peer_raft_id("alpha") + 1, "alpha"), RAFT_INVALID);
    CHECK_EQ(t.init(&t, cons_peer_raft_id("alpha"), "bravo"), RAFT_INVALID);
    CHECK_EQ(t.init(&t, cons_peer_raft_id("alpha"), "alpha"), 0);
    cons_bridge_free(&t); /* never used: no close needed */
    CHECK(t.impl == NULL);
    CHECK_EQ(uv_loop_close(&loop), 0);
}

static void test_bytes_flow(void)
{
    net_init(2, 2);
    connect_alpha_to_bravo();
    end_read_start(&R.connected);

    /* 300 KiB: several chunks, in order. */
    size_t len = 300 * 1024;
    unsigned char *data = malloc(len);
    REQUIRE(data != NULL);
    for (size_t i = 0; i < len; i++) {
        data[i] = (unsigned char)(i * 7 + i / 251);
    }
    raft_write(data, len);
    CHECK_EQ(W.status, 0);
    CHECK(run_until_received(&R.accepted[0], len));
    CHECK(R.accepted[0].n_got == len &&
          memcmp(R.accepted[0].got, data, len) == 0);

    /* And the other way. */
    uv_buf_t buf = uv_buf_init("pong", 4);
    REQUIRE_EQ(uv_try_write(R.accepted[0].stream, &buf, 1), 4);
    CHECK(run_until_received(&R.connected, 4));
    CHECK(R.connected.n_got == 4 && memcmp(R.connected.got, "pong", 4) == 0);

    struct cons_bridge_stats sa, sb;
    cons_bridge_stats(&N.slots[0].t, &sa);
    cons_bridge_stats(&N.slots[1].t, &sb);
    CHECK(sa.bytes_sent == len && sb.bytes_received == len);
    CHECK(sa.frames_sent >=
          1 + (len + CONS_BRIDGE_CHUNK - 1) / CONS_BRIDGE_CHUNK);
    CHECK(sb.bytes_sent == 4 && sa.bytes_received == 4);
    CHECK_EQ(sa.streams_opened, 1);
    CHECK_EQ(sb.streams_opened, 1);
    CHECK_EQ(sa.protocol_errors + sb.protocol_errors, 0);

    /* raft drops its outgoing connection: bravo's raft sees EOF. */
    uv_close((uv_handle_t *)R.connected.stream, free_raft_end);
    R.connected.stream = NULL;
    bool *eof = &R.accepted[0].eof;
    CHECK(run_until(eof));
    cons_bridge_stats(&N.slots[1].t, &sb);
    CHECK_EQ(sb.streams_closed, 1);
    free(data);
    close_raft_side();
    net_close();
}

static void test_connect_timeout(void)
{
    net_init(2, 2);
    struct raft_uv_transport *a = &N.slots[0].t, *b = &N.slots[1].t;
    static struct raft_uv_connect req;
    REQUIRE_EQ(b->listen(b, on_accept), 0);
    N.slots[1].down = true;
    uint64_t t0 = uv_now(&N.loop);
    REQUIRE_EQ(
        a->connect(a, &req, cons_peer_raft_id("bravo"), "bravo", on_connect),
        0);
    CHECK(run_until(&R.connect_done));
    CHECK_EQ(R.connect_status, RAFT_NOCONNECTION);
    CHECK(R.connected.stream == NULL);
    CHECK(uv_now(&N.loop) - t0 >= 50);
    struct cons_bridge_stats sa;
    cons_bridge_stats(a, &sa);
    CHECK_EQ(sa.connect_timeouts, 1);

    /* An unknown peer fails at once, for raft to retry later. */
    CHECK_EQ(a->connect(a, &req, 7, "nobody", on_connect), RAFT_NOCONNECTION);
    CHECK_EQ(a->connect(a, &req, 7, "bad peer", on_connect), RAFT_NOCONNECTION);

    /* The peer is back: the next attempt works. */
    N.slots[1].down = false;
    R.connect_done = false;
    connect_alpha_to_bravo();
    close_raft_side();
    net_close();
}

static void test_lost_data_breaks_stream(void)
{
    net_init(2, 2);
    connect_alpha_to_bravo();
    end_read_start(&R.connected);
    N.lose_next = 1;
    raft_write("first", 5);
    while (N.lost == 0 && !N.expired) {
        uv_run(&N.loop, UV_RUN_ONCE);
    }
    REQUIRE_EQ(N.lost, 1);
    raft_write("second", 6);
    /* bravo sees the gap, ends its side and tells alpha, whose raft end
     * sees EOF too. */
    bool *eof_b = &R.accepted[0].eof, *eof_a = &R.connected.eof;
    CHECK(run_until(eof_b));
    CHECK(run_until(eof_a));
    CHECK_EQ(R.accepted[0].n_got, 0);
    struct cons_bridge_stats sa, sb;
    cons_bridge_stats(&N.slots[0].t, &sa);
    cons_bridge_stats(&N.slots[1].t, &sb);
    CHECK_EQ(sb.protocol_errors, 1);
    CHECK_EQ(sb.streams_closed, 1);
    CHECK_EQ(sa.streams_closed, 1);
    close_raft_side();
    net_close();
}

static void test_refused_send_breaks_stream(void)
{
    net_init(2, 2);
    connect_alpha_to_bravo();
    end_read_start(&R.connected);
    N.refuse_next = 1;
    raft_write("dropped", 7);
    bool *eof_b = &R.accepted[0].eof, *eof_a = &R.connected.eof;
    CHECK(run_until(eof_a));
    CHECK(run_until(eof_b));
    CHECK_EQ(R.accepted[0].n_got, 0);
    struct cons_bridge_stats sa;
    cons_bridge_stats(&N.slots[0].t, &sa);
    CHECK_EQ(sa.send_failures, 1);
    CHECK_EQ(sa.streams_closed, 1);
    close_raft_side();
    net_close();
}

/* DATA faster than raft reads: past CONS_BRIDGE_MAX_BUFFERED the
 * stream ends instead of growing. */
static void test_overflow_breaks_stream(void)
{
    net_init(2, 2);
    R.no_read = true;
    connect_alpha_to_bravo();
    end_read_start(&R.connected);
    size_t chunk = CONS_BRIDGE_CHUNK;
    unsigned char *big = calloc(1, chunk);
    REQUIRE(big != NULL);
    struct cons_bridge_stats sb = {0};
    unsigned writes = 0;
    while (sb.overflows == 0 && !N.expired &&
           writes < 2 * CONS_BRIDGE_MAX_BUFFERED / chunk) {
        raft_write(big, chunk);
        writes++;
        for (int i = 0; i < 4; i++) {
            uv_run(&N.loop, UV_RUN_NOWAIT);
        }
        cons_bridge_stats(&N.slots[1].t, &sb);
    }
    CHECK_EQ(sb.overflows, 1);
    CHECK(writes * chunk > CONS_BRIDGE_MAX_BUFFERED);
    bool *eof_a = &R.connected.eof;
    CHECK(run_until(eof_a));
    free(big);
    close_raft_side();
    net_close();
}

/* Order of callbacks during close. */
static struct
{
    int connect_status;
    int connect_seq, close_seq, seq;
} Q;

static void on_cancel_connect(struct raft_uv_connect *req,
                              uv_stream_t *stream,
                              int status)
{
    (void)req;
    CHECK(stream == NULL);
    Q.connect_status = status;
    Q.connect_seq = ++Q.seq;
}

static void on_close_ordered(struct raft_uv_transport *t)
{
    (void)t;
    Q.close_seq = ++Q.seq;
}

static void test_close_cancels_connect(void)
{
    net_init(2, 2);
    struct raft_uv_transport *a = &N.slots[0].t;
    static struct raft_uv_connect req;
    memset(&Q, 0, sizeof Q);
    N.slots[1].down = true;
    cons_bridge_set_connect_timeout(a, 60000);
    REQUIRE_EQ(a->connect(a, &req, cons_peer_raft_id("bravo"), "bravo",
                          on_cancel_connect),
               0);
    uv_run(&N.loop, UV_RUN_NOWAIT);
    a->close(a, on_close_ordered);
    CHECK_EQ(Q.seq, 0); /* nothing from inside close() */
    while (Q.close_seq == 0 && !N.expired) {
        uv_run(&N.loop, UV_RUN_ONCE);
    }
    CHECK_EQ(Q.connect_status, RAFT_CANCELED);
    CHECK_EQ(Q.connect_seq, 1);
    CHECK_EQ(Q.close_seq, 2);
    cons_bridge_free(a);
    N.slots[0].has_bridge = false;
    net_close();
}

static void test_close_ends_streams(void)
{
    net_init(2, 2);
    connect_alpha_to_bravo();
    end_read_start(&R.connected);
    bool closed = false;
    struct raft_uv_transport *b = &N.slots[1].t;
    b->data = &closed;
    b->close(b, on_bridge_closed);
    CHECK(run_until(&closed));
    /* Both raft ends see the streams end: bravo's own, and alpha's through
     * CLOSE. */
    bool *eof_b = &R.accepted[0].eof, *eof_a = &R.connected.eof;
    CHECK(run_until(eof_b));
    CHECK(run_until(eof_a));
    /* OPEN to a closed bridge is refused at once. */
    struct cons_bridge_stats sa;
    cons_bridge_stats(&N.slots[0].t, &sa);
    CHECK_EQ(sa.streams_closed, 1);
    cons_bridge_free(b);
    N.slots[1].has_bridge = false;
    close_raft_side();
    net_close();
}

/* ---- Hostile input --------------------------------------------------------
 */

static size_t frame(unsigned char *p,
                    int kind,
                    int flags,
                    uint64_t stream_id,
                    const void *body,
                    size_t body_len)
{
    p[0] = CONS_BRIDGE_VERSION;
    p[1] = (unsigned char)kind;
    p[2] = (unsigned char)flags;
    for (int i = 0; i < 8; i++) {
        p[3 + i] = (unsigned char)(stream_id >> (8 * i));
    }
    if (body_len > 0) {
        memcpy(p + CONS_BRIDGE_HEADER, body, body_len);
    }
    return CONS_BRIDGE_HEADER + body_len;
}

static size_t open_frame(unsigned char *p,
                         uint64_t stream_id,
                         uint64_t raft_id,
                         const char *address)
{
    unsigned char body[80];
    size_t alen = strlen(address);
    for (int i = 0; i < 8; i++) {
        body[i] = (unsigned char)(raft_id >> (8 * i));
    }
    body[8] = (unsigned char)alen;
    memcpy(body + 9, address, alen);
    return frame(p, CONS_BRIDGE_OPEN, CONS_BRIDGE_FLAG_OPENER, stream_id, body,
                 9 + alen);
}

static size_t data_frame(unsigned char *p,
                         uint64_t stream_id,
                         uint64_t seq,
                         const char *bytes)
{
    unsigned char body[64];
    size_t n = strlen(bytes);
    for (int i = 0; i < 8; i++) {
        body[i] = (unsigned char)(seq >> (8 * i));
    }
    memcpy(body + 8, bytes, n);
    return frame(p, CONS_BRIDGE_DATA, CONS_BRIDGE_FLAG_OPENER, stream_id, body,
                 8 + n);
}

/* Feeds one frame from "bravo" (a slot without a bridge) to alpha. */
static void feed(const void *data, size_t len)
{
    cons_bridge_recv(&N.slots[0].t, "bravo", data, len);
}

/* The last frame alpha sent to bravo. */
static const struct captured *last_to_bravo(void)
{
    uv_run(&N.loop, UV_RUN_NOWAIT);
    uv_run(&N.loop, UV_RUN_NOWAIT);
    struct slot *b = &N.slots[1];
    return b->n_cap > 0 ? &b->cap[b->n_cap - 1] : NULL;
}

static bool is_close_for(const struct captured *c, uint64_t stream_id)
{
    unsigned char want[CONS_BRIDGE_HEADER];
    frame(want, CONS_BRIDGE_CLOSE, 0, stream_id, NULL, 0);
    return c != NULL && c->len == sizeof want &&
           memcmp(c->data, want, sizeof want) == 0;
}

static void test_hostile_frames(void)
{
    net_init(2, 1);
    struct raft_uv_transport *a = &N.slots[0].t;
    struct cons_bridge_stats st;
    unsigned char f[256];
    size_t n;
    REQUIRE_EQ(a->listen(a, on_accept), 0);
    sm_log_set_sink(check_log_discard, NULL);

    /* Malformed: each one counted, none accepted. */
    feed(NULL, 0);
    feed("", 0);
    feed("\x01\x03", 2);
    n = open_frame(f, 1, cons_peer_raft_id("bravo"), "bravo");
    f[0] = 2; /* version */
    feed(f, n);
    f[0] = 1;
    f[1] = 9; /* kind */
    feed(f, n);
    f[1] = CONS_BRIDGE_OPEN;
    f[2] = 0x80; /* flags */
    feed(f, n);
    f[2] = 0; /* OPEN not from the opener */
    feed(f, n);
    f[2] = CONS_BRIDGE_FLAG_OPENER;
    feed(f, n - 1); /* truncated */
    feed(f, n + 1); /* trailing byte */
    n = frame(f, CONS_BRIDGE_DATA, 1, 1, "\0\0\0\0\0\0\0\0", 8);
    feed(f, n); /* DATA without bytes */
    n = frame(f, CONS_BRIDGE_CLOSE, 1, 1, "x", 1);
    feed(f, n); /* CLOSE with a body */
    cons_bridge_stats(a, &st);
    CHECK_EQ(st.protocol_errors, 11);
    CHECK_EQ(R.n_accepted, 0);
    CHECK_EQ(N.slots[1].n_cap, 0);

    /* An invalid or spoofed sender. */
    n = open_frame(f, 1, cons_peer_raft_id("bravo"), "bravo");
    cons_bridge_recv(a, "bad peer", f, n);
    cons_bridge_recv(a, NULL, f, n);
    cons_bridge_recv(a, "alpha", f, n); /* ourselves */
    n = open_frame(f, 1, cons_peer_raft_id("charlie"), "charlie");
    feed(f, n); /* bravo claiming to be charlie */
    CHECK(is_close_for(last_to_bravo(), 1));
    n = open_frame(f, 1, cons_peer_raft_id("charlie"), "bravo");
    feed(f, n); /* with charlie's raft id */
    cons_bridge_stats(a, &st);
    CHECK_EQ(st.protocol_errors, 16);
    CHECK_EQ(R.n_accepted, 0);

    /* Unknown streams: DATA and OPENED are answered with CLOSE. */
    n = data_frame(f, 42, 0, "zz");
    feed(f, n);
    CHECK(is_close_for(last_to_bravo(), 42));
    n = frame(f, CONS_BRIDGE_OPENED, 0, 43, NULL, 0);
    feed(f, n);
    const struct captured *c = last_to_bravo();
    REQUIRE(c != NULL);
    CHECK(c->len == CONS_BRIDGE_HEADER && c->data[2] == 1);
    unsigned n_cap = N.slots[1].n_cap;
    n = frame(f, CONS_BRIDGE_CLOSE, 1, 44, NULL, 0);
    feed(f, n);
    (void)last_to_bravo();
    CHECK_EQ(N.slots[1].n_cap, n_cap); /* CLOSE is never answered */
    cons_bridge_stats(a, &st);
    CHECK_EQ(st.unknown_stream, 3);

    /* A proper OPEN is accepted and answered with OPENED; DATA in order
     * reaches raft. */
    n = open_frame(f, 7, cons_peer_raft_id("bravo"), "bravo");
    feed(f, n);
    REQUIRE_EQ(R.n_accepted, 1);
    CHECK_EQ(R.accepted_id, cons_peer_raft_id("bravo"));
    c = last_to_bravo();
    REQUIRE(c != NULL);
    CHECK(c->len == CONS_BRIDGE_HEADER && c->data[1] == CONS_BRIDGE_OPENED);
    n = data_frame(f, 7, 0, "hello");
    feed(f, n);
    n = data_frame(f, 7, 1, " raft");
    feed(f, n);
    CHECK(run_until_received(&R.accepted[0], 10));
    CHECK(R.accepted[0].n_got == 10 &&
          memcmp(R.accepted[0].got, "hello raft", 10) == 0);

    /* Out of order: the stream ends, raft sees EOF, bravo gets CLOSE. */
    n = data_frame(f, 7, 5, "late");
    feed(f, n);
    CHECK(is_close_for(last_to_bravo(), 7));
    bool *eof = &R.accepted[0].eof;
    CHECK(run_until(eof));
    CHECK_EQ(R.accepted[0].n_got, 10);
    cons_bridge_stats(a, &st);
    CHECK_EQ(st.protocol_errors, 17);
    CHECK_EQ(st.streams_opened, 1);
    CHECK_EQ(st.streams_closed, 1);

    /* A peer cannot hold more than CONS_BRIDGE_MAX_ACCEPTED streams:
     * each OPEN beyond that ends the oldest. */
    close_raft_side();
    const unsigned max = CONS_BRIDGE_MAX_ACCEPTED;
    for (uint64_t id = 100; id < 100 + 3 * max; id++) {
        n = open_frame(f, id, cons_peer_raft_id("bravo"), "bravo");
        feed(f, n);
    }
    REQUIRE_EQ(R.n_accepted, 3 * max);
    bool *last_evicted = &R.accepted[2 * max - 1].eof;
    CHECK(run_until(last_evicted));
    uv_run(&N.loop, UV_RUN_NOWAIT);
    for (unsigned i = 0; i < 3 * max; i++) {
        CHECK_EQ(R.accepted[i].eof, i < 2 * max);
    }
    cons_bridge_stats(a, &st);
    CHECK_EQ(st.streams_active, max);
    sm_log_set_sink(NULL, NULL);
    close_raft_side();
    net_close();
}

static uint64_t captured_stream_id(const struct captured *c)
{
    uint64_t id = 0;
    for (int i = 7; i >= 0; i--) {
        id = (id << 8) | c->data[3 + i];
    }
    return id;
}

/* alpha connects to a hand-played bravo, which answers wrongly. */
static void test_forged_connect_answers(void)
{
    net_init(2, 1);
    struct raft_uv_transport *a = &N.slots[0].t;
    static struct raft_uv_connect req;
    unsigned char f[64];
    struct cons_bridge_stats st;
    sm_log_set_sink(check_log_discard, NULL);

    /* DATA before OPENED fails the connect and is answered with CLOSE. */
    REQUIRE_EQ(
        a->connect(a, &req, cons_peer_raft_id("bravo"), "bravo", on_connect),
        0);
    const struct captured *c = last_to_bravo();
    REQUIRE(c != NULL && c->data[1] == CONS_BRIDGE_OPEN);
    uint64_t id = captured_stream_id(c);
    size_t n = frame(f, CONS_BRIDGE_DATA, 0, id, "\0\0\0\0\0\0\0\0x", 9);
    feed(f, n);
    CHECK(R.connect_done);
    CHECK_EQ(R.connect_status, RAFT_NOCONNECTION);
    c = last_to_bravo();
    CHECK(c != NULL && c->data[1] == CONS_BRIDGE_CLOSE &&
          captured_stream_id(c) == id && c->data[2] == 1);
    cons_bridge_stats(a, &st);
    CHECK_EQ(st.protocol_errors, 1);

    /* OPENED completes a connect; a second OPENED breaks the stream. */
    R.connect_done = false;
    REQUIRE_EQ(
        a->connect(a, &req, cons_peer_raft_id("bravo"), "bravo", on_connect),
        0);
    id = captured_stream_id(last_to_bravo());
    n = frame(f, CONS_BRIDGE_OPENED, 0, id, NULL, 0);
    feed(f, n);
    CHECK(R.connect_done);
    REQUIRE_EQ(R.connect_status, 0);
    end_read_start(&R.connected);
    feed(f, n);
    bool *eof = &R.connected.eof;
    CHECK(run_until(eof));
    cons_bridge_stats(a, &st);
    CHECK_EQ(st.protocol_errors, 2);
    CHECK_EQ(st.streams_opened, 1);
    CHECK_EQ(st.streams_closed, 1);

    /* CLOSE while connecting fails the connect at once. */
    end_close(&R.connected); /* raft closes the broken connection */
    R.connect_done = false;
    R.connect_status = 0;
    REQUIRE_EQ(
        a->connect(a, &req, cons_peer_raft_id("bravo"), "bravo", on_connect),
        0);
    id = captured_stream_id(last_to_bravo());
    n = frame(f, CONS_BRIDGE_CLOSE, 0, id, NULL, 0);
    feed(f, n);
    CHECK(R.connect_done);
    CHECK_EQ(R.connect_status, RAFT_NOCONNECTION);
    sm_log_set_sink(NULL, NULL);
    close_raft_side();
    net_close();
}

/* Random frames, mostly near-valid, from a seeded generator: nothing
 * crashes or leaks, streams stay bounded. */
static void test_random_frames(void)
{
    net_init(2, 1);
    struct raft_uv_transport *a = &N.slots[0].t;
    struct sm_rng rng;
    sm_rng_seed(&rng, check_seed());
    REQUIRE_EQ(a->listen(a, on_accept), 0);
    sm_log_set_sink(check_log_discard, NULL);
    unsigned char f[128];
    for (int i = 0; i < 3000; i++) {
        size_t n;
        uint64_t id = sm_rng_below(&rng, 4);
        switch (sm_rng_below(&rng, 4)) {
            case 0:
                n = open_frame(f, id, cons_peer_raft_id("bravo"), "bravo");
                break;
            case 1:
                n = data_frame(f, id, sm_rng_below(&rng, 3), "abc");
                break;
            default:
                n = frame(f, (int)(sm_rng_below(&rng, 6)),
                          (int)(sm_rng_below(&rng, 3)), id, "", 0);
                break;
        }
        if (sm_rng_below(&rng, 4) == 0) { /* damage a byte or the length */
            f[sm_rng_below(&rng, n)] ^=
                (unsigned char)(1 + sm_rng_below(&rng, 255));
            n = (size_t)sm_rng_below(&rng, n + 1);
        }
        if (R.n_accepted == 32) {
            close_raft_side();
        }
        feed(f, n);
        if (i % 16 == 0) {
            uv_run(&N.loop, UV_RUN_NOWAIT);
        }
    }
    struct cons_bridge_stats st;
    cons_bridge_stats(a, &st);
    CHECK(st.streams_active <= CONS_BRIDGE_MAX_ACCEPTED + 2);
    CHECK(st.protocol_errors > 0);
    CHECK_EQ(st.frames_received, 3000);
    sm_log_set_sink(NULL, NULL);
    close_raft_side();
    net_close();
}

/* ---- Real raft over the bridges ------------------------------------------ */

#define N_RAFT 3

/* One raft server on raft_uv over its bridge, with an fsm that counts the
 * entries it applied. */
struct server
{
    struct raft raft;
    struct raft_io io;
    struct raft_fsm fsm;
    unsigned applied;
    bool running, closed;
};

static struct server S[N_RAFT];

static int fsm_apply(struct raft_fsm *fsm,
                     const struct raft_buffer *buf,
                     void **result)
{
    struct server *sv = fsm->data;
    (void)buf;
    sv->applied++;
    *result = NULL;
    return 0;
}

static void on_raft_closed(struct raft *r)
{
    struct server *sv = r->data;
    sv->closed = true;
}

/* Starts server @i with the shared configuration, or skips the test when
 * the machine has no kernel AIO to give raft_uv. */
static void server_start(unsigned i)
{
    struct server *sv = &S[i];
    struct slot *sl = &N.slots[i];
    const char *dir = check_tmpdir();
    memset(sv, 0, sizeof *sv);
    sv->fsm = (struct raft_fsm){.version = 1, .data = sv, .apply = fsm_apply};
    REQUIRE_EQ(raft_uv_init(&sv->io, &N.loop, dir, &sl->t), 0);
    raft_uv_set_connect_retry_delay(&sv->io, 20);
    int rv = raft_init(&sv->raft, &sv->io, &sv->fsm,
                       cons_peer_raft_id(sl->name), sl->name);
    if (rv != 0) {
        char why[RAFT_ERRMSG_BUF_SIZE];
        snprintf(why, sizeof why, "%s", raft_errmsg(&sv->raft));
        raft_uv_close(&sv->io);
        if (rv == RAFT_TOOMANY || strstr(why, "io_setup") != NULL ||
            strstr(why, "AIO") != NULL) {
            check_skip("raft_init: %s (kernel AIO limit?)", why);
        }
        printf("# raft_init: %d %s\n", rv, why);
        REQUIRE_EQ(rv, 0);
    }
    sv->raft.data = sv;
    raft_set_election_timeout(&sv->raft, 150);
    raft_set_heartbeat_timeout(&sv->raft, 15);
    raft_set_pre_vote(&sv->raft, true);

    struct raft_configuration conf;
    raft_configuration_init(&conf);
    for (unsigned j = 0; j < N_RAFT; j++) {
        REQUIRE_EQ(
            raft_configuration_add(&conf, cons_peer_raft_id(N.slots[j].name),
                                   N.slots[j].name, RAFT_VOTER),
            0);
    }
    rv = raft_bootstrap(&sv->raft, &conf);
    raft_configuration_close(&conf);
    REQUIRE_EQ(rv, 0);
    REQUIRE_EQ(raft_start(&sv->raft), 0);
    sv->running = true;
}

/* Closes server @i (raft, then raft_uv, which closed the bridge, then the
 * bridge's memory). */
static void server_stop(unsigned i)
{
    struct server *sv = &S[i];
    if (!sv->running) {
        return;
    }
    raft_close(&sv->raft, on_raft_closed);
    while (!sv->closed) { /* raft's close finishes even past the deadline */
        uv_run(&N.loop, UV_RUN_ONCE);
    }
    raft_uv_close(&sv->io);
    cons_bridge_free(&N.slots[i].t);
    N.slots[i].has_bridge = false;
    sv->running = false;
}

/* The running server that is leader, or -1. */
static int leader(void)
{
    for (unsigned i = 0; i < N_RAFT; i++) {
        if (S[i].running && raft_state(&S[i].raft) == RAFT_LEADER) {
            return (int)i;
        }
    }
    return -1;
}

static bool run_until_leader(int *who)
{
    while ((*who = leader()) < 0 && !N.expired) {
        uv_run(&N.loop, UV_RUN_ONCE);
    }
    return *who >= 0;
}

static struct
{
    struct raft_apply req;
    bool done;
    int status;
} A;

static void on_applied(struct raft_apply *req, int status, void *result)
{
    (void)req;
    (void)result;
    A.done = true;
    A.status = status;
}

/* Proposes one entry on server @i and waits until every running server
 * applied @want entries. */
static bool apply_everywhere(int i, unsigned want)
{
    struct raft_buffer buf = {.base = raft_malloc(8), .len = 8};
    REQUIRE(buf.base != NULL);
    memset(buf.base, 0x5a, 8);
    memset(&A, 0, sizeof A);
    int rv = raft_apply(&S[i].raft, &A.req, &buf, 1, on_applied);
    if (rv != 0) {
        raft_free(buf.base);
        return false;
    }
    for (;;) {
        bool all = A.done;
        for (unsigned j = 0; j < N_RAFT; j++) {
            all = all && (!S[j].running || S[j].applied >= want);
        }
        if (all || N.expired) {
            return all && A.status == 0;
        }
        uv_run(&N.loop, UV_RUN_ONCE);
    }
}

static void test_raft_cluster(void)
{
    net_init(N_RAFT, N_RAFT);
    for (unsigned i = 0; i < N_RAFT; i++) {
        cons_bridge_set_connect_timeout(&N.slots[i].t, 200);
    }
    uint64_t t0 = uv_now(&N.loop);
    for (unsigned i = 0; i < N_RAFT; i++) {
        server_start(i);
    }
    int first = -1;
    bool elected = run_until_leader(&first);
    CHECK(elected);
    uint64_t t_elected = uv_now(&N.loop);
    bool committed = elected && apply_everywhere(first, 1);
    CHECK(committed);
    uint64_t t_committed = uv_now(&N.loop);
    printf(
        "# leader %s elected after %llu ms, first entry applied on all "
        "after %llu ms\n",
        elected ? N.slots[first].name : "-",
        (unsigned long long)(t_elected - t0),
        (unsigned long long)(t_committed - t0));

    int second = -1;
    if (committed) {
        /* Kill the leader: it vanishes from the link first, like a crashed
         * host, then its raft is closed. */
        uint64_t t_kill = uv_now(&N.loop);
        N.slots[first].down = true;
        server_stop((unsigned)first);
        bool reelected = run_until_leader(&second);
        CHECK(reelected);
        CHECK(second != first);
        uint64_t t_new = uv_now(&N.loop);
        CHECK(reelected && apply_everywhere(second, 2));
        printf(
            "# leader %s killed, %s elected after %llu ms, entry applied "
            "after %llu ms\n",
            N.slots[first].name, reelected ? N.slots[second].name : "-",
            (unsigned long long)(t_new - t_kill),
            (unsigned long long)(uv_now(&N.loop) - t_kill));
    }

    struct cons_bridge_stats st[N_RAFT];
    for (unsigned i = 0; i < N_RAFT; i++) {
        if (N.slots[i].has_bridge) {
            cons_bridge_stats(&N.slots[i].t, &st[i]);
            CHECK(st[i].streams_opened >= 2);
            CHECK_EQ(st[i].protocol_errors, 0);
            printf(
                "# %s: streams %llu opened %llu closed, %llu bytes out, "
                "%llu in, %llu unknown-stream frames\n",
                N.slots[i].name, (unsigned long long)st[i].streams_opened,
                (unsigned long long)st[i].streams_closed,
                (unsigned long long)st[i].bytes_sent,
                (unsigned long long)st[i].bytes_received,
                (unsigned long long)st[i].unknown_stream);
        }
    }
    CHECK(!N.expired);
    for (unsigned i = 0; i < N_RAFT; i++) {
        server_stop(i);
    }
    net_close();
}

static void teardown(void)
{
    sm_log_set_sink(NULL, NULL);
}

static const struct check_test tests[] = {
    {"raft ids are FNV-1a 64 of the peer id", test_raft_id},
    {"init and raft's init check their arguments", test_init_rejects},
    {"bytes cross in order, in chunks, both ways", test_bytes_flow},
    {"a down peer times connect out; the next attempt works",
     test_connect_timeout},
    {"a lost DATA frame ends the stream on both sides",
     test_lost_data_breaks_stream},
    {"a send the link refuses ends the stream on both sides",
     test_refused_send_breaks_stream},
    {"a stream whose raft does not read ends at the buffer cap",
     test_overflow_breaks_stream},
    {"close cancels pending connects, then calls back",
     test_close_cancels_connect},
    {"close ends streams on both sides", test_close_ends_streams},
    {"hostile frames are counted and never crash", test_hostile_frames},
    {"forged answers to a connect fail it", test_forged_connect_answers},
    {"random frames keep streams bounded", test_random_frames},
    {"three raft servers elect, commit and fail over", test_raft_cluster},
};

CHECK_MAIN(tests, setup, teardown)
