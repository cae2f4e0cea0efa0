/* Windows merged from every peer's part, in one process: three peers, each
 * with its own aggregator fed the spans of the traces it owns and the
 * metrics of its own service, a message queue between their merge state
 * machines, and a reference aggregator fed everything. A merged window
 * must equal the reference window byte for byte; lost parts are re-sent,
 * silent peers time out, leadership moves without losing a part, idle
 * peers are not waited for, and malformed messages change nothing. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/err.h"
#include "base/rng.h"
#include "check.h"
#include "node/window_merge.h"

#define PEERS  3
#define Q_MAX  512
#define WIN_NS 10000000000ull /* 10 s */
#define T0     1700000000000000000ull
#define W_MAX  16
#define NS_MS  1000000ull
#define TRACES 60 /* per window */

static const char *const ids[PEERS] = {"p0", "p1", "p2"};
static const char *const service_of[PEERS] = {"front", "api", "db"};

struct msg
{
    int from, to;
    uint8_t *data;
    size_t len;
};

struct peer
{
    struct cbn_agg *agg;
    struct node_wmerge *wm;
    struct cbn_window *got[W_MAX]; /* delivered here */
    size_t n_got;
    int flushed;
};

static struct peer peers[PEERS];
static struct cbn_agg *ref;
static struct cbn_window *want[W_MAX];
static size_t n_want;
static struct msg queue[Q_MAX];
static size_t n_queue;
static int leader;           /* index; -1: none */
static int up[PEERS];        /* in everyone's view */
static int mute[PEERS];      /* its messages are lost */
static int drop_next[PEERS]; /* lose its next message of this kind
                                (1 PART, 2 ACK, 5 HELD) */
static int replicate = 1;    /* a delivered window is seen by all at once */
static uint64_t now_ms;

static int peer_index(const char *id)
{
    for (int i = 0; i < PEERS; i++) {
        if (strcmp(ids[i], id) == 0) {
            return i;
        }
    }
    return -1;
}

static int t_send(void *arg, const char *peer, const void *data, size_t len)
{
    int from = (int)(intptr_t)arg;
    if (mute[from]) {
        return SM_OK; /* lost on the way */
    }
    if (drop_next[from] && len > 0 &&
        ((const uint8_t *)data)[0] == drop_next[from]) {
        drop_next[from] = 0;
        return SM_OK;
    }
    REQUIRE(n_queue < Q_MAX);
    struct msg *m = &queue[n_queue++];
    m->from = from;
    m->to = peer_index(peer);
    m->data = malloc(len);
    REQUIRE(m->data != NULL);
    memcpy(m->data, data, len);
    m->len = len;
    return SM_OK;
}

static void t_deliver(void *arg, struct cbn_window *w)
{
    struct peer *p = &peers[(int)(intptr_t)arg];
    REQUIRE(p->n_got < W_MAX);
    p->got[p->n_got++] = w;
    /* what the leader delivers is replicated: everyone has seen it */
    for (int i = 0; replicate && i < PEERS; i++) {
        node_wmerge_seen(peers[i].wm, w->end_ns);
    }
}

static void t_flush(void *arg)
{
    peers[(int)(intptr_t)arg].flushed++;
}

static void view_of(int i, struct node_wmerge_view *v, const char **upv)
{
    size_t n = 0;
    for (int k = 0; k < PEERS; k++) {
        if (up[k]) {
            upv[n++] = ids[k];
        }
    }
    *v = (struct node_wmerge_view){
        .self = ids[i],
        .leader = leader >= 0 ? ids[leader] : "",
        .is_leader = leader == i,
        .n_up = n,
        .up = upv,
    };
}

/* Ticks every peer and delivers what they sent, a few times over (marks
 * go out at every tick, so the queue is never empty for long). */
static void run(void)
{
    for (int round = 0; round < 8; round++) {
        for (int i = 0; i < PEERS; i++) {
            struct node_wmerge_view v;
            const char *upv[PEERS];
            view_of(i, &v, upv);
            node_wmerge_tick(peers[i].wm, &v, now_ms);
        }
        struct msg q[Q_MAX];
        size_t n = n_queue;
        memcpy(q, queue, n * sizeof *q);
        n_queue = 0;
        for (size_t k = 0; k < n; k++) {
            if (q[k].to >= 0) {
                struct node_wmerge_view v;
                const char *upv[PEERS];
                view_of(q[k].to, &v, upv);
                node_wmerge_recv(peers[q[k].to].wm, &v, ids[q[k].from],
                                 q[k].data, q[k].len, now_ms);
            }
            free(q[k].data);
        }
    }
}

static void add_span(struct cbn_span *s,
                     const uint8_t trace[16],
                     uint8_t span,
                     uint8_t parent,
                     enum cbn_span_kind kind,
                     const char *service,
                     const char *peer,
                     uint64_t start,
                     uint64_t dur)
{
    memset(s, 0, sizeof *s);
    memcpy(s->trace_id, trace, 16);
    s->span_id[7] = span;
    s->parent_id[7] = parent;
    s->start_ns = start;
    s->end_ns = start + dur;
    s->kind = kind;
    s->service = service;
    s->instance = "";
    s->operation = "GET /";
    s->peer = peer;
}

/* The spans of window @w: front -> api -> db traces, each given to the
 * peer its trace id names and to the reference. @only >= 0: the traces go
 * to that peer alone. */
static void feed_window(struct sm_rng *rng, uint64_t w, int only)
{
    uint64_t base = T0 + w * WIN_NS;
    for (int t = 0; t < TRACES; t++) {
        uint8_t trace[16];
        for (int b = 0; b < 16; b++) {
            trace[b] = (uint8_t)sm_rng_u64(rng);
        }
        uint64_t start = base + (sm_rng_u64(rng) % (WIN_NS / 2));
        uint64_t d_db = 1000000 + sm_rng_u64(rng) % 4000000;
        uint64_t d_api = d_db + 2000000 + sm_rng_u64(rng) % 3000000;
        uint64_t d_front = d_api + 1000000 + sm_rng_u64(rng) % 9000000;
        struct cbn_span s[5];
        add_span(&s[0], trace, 1, 0, CBN_SPAN_SERVER, "front", "", start,
                 d_front);
        add_span(&s[1], trace, 2, 1, CBN_SPAN_CLIENT, "front", "api",
                 start + 100, d_api + 200000);
        add_span(&s[2], trace, 3, 2, CBN_SPAN_SERVER, "api", "", start + 200,
                 d_api);
        add_span(&s[3], trace, 4, 3, CBN_SPAN_CLIENT, "api", "db", start + 300,
                 d_db + 100000);
        add_span(&s[4], trace, 5, 4, CBN_SPAN_SERVER, "db", "", start + 400,
                 d_db);
        int owner = only >= 0 ? only : trace[0] % PEERS;
        REQUIRE(cbn_agg_add_spans(peers[owner].agg, s, 5) == SM_OK);
        REQUIRE(cbn_agg_add_spans(ref, s, 5) == SM_OK);
    }
    /* each host's metrics stay on its peer */
    for (int i = 0; i < PEERS; i++) {
        if (only >= 0 && i != only) {
            continue;
        }
        struct cbn_metric_point pt = {
            .service = service_of[i],
            .instance = "",
            .name = "container_cpu_usage_seconds_total",
            .labels = "",
            .peer = "",
            .time_ns = base + WIN_NS / 3,
            .value = (double)(sm_rng_u64(rng) % 1000) / 10.0,
            .cumulative = 0,
        };
        REQUIRE(cbn_agg_add_metrics(peers[i].agg, &pt, 1) == SM_OK);
        REQUIRE(cbn_agg_add_metrics(ref, &pt, 1) == SM_OK);
    }
}

static void take_part(void *arg, struct cbn_partial *part)
{
    struct peer *p = arg;
    CHECK(node_wmerge_add(p->wm, part) == SM_OK);
}

static void take_ref(void *arg, struct cbn_window *w)
{
    (void)arg;
    REQUIRE(n_want < W_MAX);
    want[n_want++] = w;
}

/* Every peer closes its open windows and marks them closed. */
static void close_all(uint64_t until, int idle_mask)
{
    for (int i = 0; i < PEERS; i++) {
        REQUIRE(cbn_agg_flush_partial(peers[i].agg, take_part, &peers[i]) ==
                SM_OK);
        if (!mute[i]) {
            node_wmerge_mark(peers[i].wm, until, (idle_mask >> i) & 1);
        }
    }
    REQUIRE(cbn_agg_flush(ref, take_ref, NULL) == SM_OK);
}

static int same_window(const struct cbn_window *a, const struct cbn_window *b)
{
    uint8_t *x, *y;
    size_t nx, ny;
    REQUIRE(cbn_window_encode(a, &x, &nx) == SM_OK);
    REQUIRE(cbn_window_encode(b, &y, &ny) == SM_OK);
    int same = nx == ny && memcmp(x, y, nx) == 0;
    sm_free(x);
    sm_free(y);
    return same;
}

static void setup(void)
{
    struct cbn_agg_config ac = {
        .window_ns = WIN_NS,
        .qos_service = "front",
        .qos_percentile = 99,
        .qos_target_ms = 20,
        .hash_seed = 7,
    };
    struct node_wmerge_config wc = {.wait_ms = 5000, .resend_ms = 2000};
    for (int i = 0; i < PEERS; i++) {
        memset(&peers[i], 0, sizeof peers[i]);
        REQUIRE(cbn_agg_new(&ac, &peers[i].agg) == SM_OK);
        struct node_wmerge_env env = {(void *)(intptr_t)i, t_send, t_deliver,
                                      t_flush};
        REQUIRE(node_wmerge_new(&wc, &env, &peers[i].wm) == SM_OK);
        up[i] = 1;
        mute[i] = 0;
        drop_next[i] = 0;
    }
    REQUIRE(cbn_agg_new(&ac, &ref) == SM_OK);
    n_want = 0;
    n_queue = 0;
    leader = 0;
    replicate = 1;
    now_ms = 1000;
}

static void teardown(void)
{
    for (int i = 0; i < PEERS; i++) {
        node_wmerge_free(peers[i].wm);
        cbn_agg_free(peers[i].agg);
        for (size_t k = 0; k < peers[i].n_got; k++) {
            cbn_window_free(peers[i].got[k]);
        }
    }
    for (size_t k = 0; k < n_want; k++) {
        cbn_window_free(want[k]);
    }
    cbn_agg_free(ref);
    for (size_t k = 0; k < n_queue; k++) {
        free(queue[k].data);
    }
    n_queue = 0;
}

static void outboxes_empty(void)
{
    for (int i = 0; i < PEERS; i++) {
        struct node_wmerge_stats st;
        node_wmerge_stats(peers[i].wm, &st);
        CHECK(st.outbox == 0);
        CHECK(st.pending == 0);
    }
}

static void test_complete(void)
{
    struct sm_rng rng;
    sm_rng_seed(&rng, check_seed());
    for (uint64_t w = 0; w < 4; w++) {
        feed_window(&rng, w, -1);
        close_all(T0 + (w + 1) * WIN_NS, 0);
        run();
    }
    REQUIRE(peers[0].n_got == 4);
    CHECK(peers[1].n_got == 0 && peers[2].n_got == 0);
    for (size_t k = 0; k < 4; k++) {
        CHECK(same_window(peers[0].got[k], want[k]));
        CHECK(peers[0].got[k]->n_edges == 2);
        CHECK(peers[0].got[k]->edges[0].paired == TRACES);
    }
    struct node_wmerge_stats st;
    node_wmerge_stats(peers[0].wm, &st);
    CHECK(st.windows_complete == 4);
    CHECK(st.windows_timed_out == 0);
    CHECK(st.parts_received == 12);
    outboxes_empty();
}

/* A part lost on the wire comes again before the wait is over. */
static void test_resend(void)
{
    struct sm_rng rng;
    sm_rng_seed(&rng, check_seed() + 1);
    feed_window(&rng, 0, -1);
    drop_next[2] = 1;
    close_all(T0 + WIN_NS, 0);
    run();
    CHECK(peers[0].n_got == 0); /* waiting for p2's part */
    now_ms += 2100;
    run();
    REQUIRE(peers[0].n_got == 1);
    CHECK(same_window(peers[0].got[0], want[0]));
    struct node_wmerge_stats st;
    node_wmerge_stats(peers[2].wm, &st);
    CHECK(st.parts_resent == 1);
    node_wmerge_stats(peers[0].wm, &st);
    CHECK(st.windows_complete == 1);
    outboxes_empty();
}

/* A peer that says nothing is waited for wait_ms; its part, when it comes,
 * is late: counted and acknowledged. */
static void test_silent_peer(void)
{
    struct sm_rng rng;
    sm_rng_seed(&rng, check_seed() + 2);
    feed_window(&rng, 0, -1);
    mute[2] = 1;
    close_all(T0 + WIN_NS, 0);
    run();
    CHECK(peers[0].n_got == 0);
    now_ms += 5000;
    run();
    REQUIRE(peers[0].n_got == 1);
    CHECK(!same_window(peers[0].got[0], want[0]));
    CHECK(peers[0].got[0]->n_edges == 2);
    struct node_wmerge_stats st;
    node_wmerge_stats(peers[0].wm, &st);
    CHECK(st.windows_timed_out == 1);
    node_wmerge_stats(peers[1].wm, &st);
    CHECK(st.parts_resent == 0); /* held by the leader while it waited */
    mute[2] = 0;
    now_ms += 2100;
    run();
    node_wmerge_stats(peers[0].wm, &st);
    CHECK(st.parts_late == 1);
    CHECK(peers[0].n_got == 1);
    outboxes_empty();
}

/* Leadership moves while a window is half merged: the old leader's own
 * part goes to the new one, and no window is delivered twice. */
static void test_leader_moves(void)
{
    struct sm_rng rng;
    sm_rng_seed(&rng, check_seed() + 3);
    feed_window(&rng, 0, -1);
    close_all(T0 + WIN_NS, 0);
    run();
    REQUIRE(peers[0].n_got == 1);
    feed_window(&rng, 1, -1);
    drop_next[2] = 1;
    close_all(T0 + 2 * WIN_NS, 0);
    run();
    CHECK(peers[0].n_got == 1); /* p2's part of window 1 is missing */
    leader = 1;
    run();
    now_ms += 2100; /* p2 re-sends to the new leader */
    run();
    CHECK(peers[0].n_got == 1);
    REQUIRE(peers[1].n_got == 1);
    CHECK(peers[1].got[0]->end_ns == T0 + 2 * WIN_NS);
    CHECK(same_window(peers[1].got[0], want[1]));
    struct node_wmerge_stats st;
    node_wmerge_stats(peers[1].wm, &st);
    CHECK(st.windows_complete == 1);
    /* a re-sent part of window 0, already delivered by p0, is late */
    CHECK(st.parts_late == 0);
    outboxes_empty();
}

/* A peer with no data marks itself idle and is not waited for; one that
 * never marks is. */
static void test_idle_peer(void)
{
    struct sm_rng rng;
    sm_rng_seed(&rng, check_seed() + 4);
    feed_window(&rng, 0, 1);
    close_all(T0 + WIN_NS, 1 << 2 | 1 << 0);
    run();
    REQUIRE(peers[0].n_got == 1);
    CHECK(same_window(peers[0].got[0], want[0]));
    struct node_wmerge_stats st;
    node_wmerge_stats(peers[0].wm, &st);
    CHECK(st.windows_complete == 1);
    CHECK(st.parts_received == 1);

    /* p2 goes quiet without saying so: the window waits wait_ms */
    feed_window(&rng, 1, 1);
    mute[2] = 1;
    close_all(T0 + 2 * WIN_NS, 1 << 0);
    mute[2] = 0;
    node_wmerge_mark(peers[2].wm, 0, 0); /* busy, nothing closed */
    run();
    CHECK(peers[0].n_got == 1);
    now_ms += 5000;
    run();
    CHECK(peers[0].n_got == 2);
    node_wmerge_stats(peers[0].wm, &st);
    CHECK(st.windows_timed_out == 1);
}

static void test_flush_all(void)
{
    struct node_wmerge_view v;
    const char *upv[PEERS];
    view_of(1, &v, upv);
    node_wmerge_flush_all(peers[1].wm, &v);
    run();
    CHECK(peers[0].flushed == 1);
    CHECK(peers[1].flushed == 0);
    CHECK(peers[2].flushed == 1);
}

static void test_malformed(void)
{
    struct sm_rng rng;
    sm_rng_seed(&rng, check_seed() + 5);
    struct node_wmerge_view v;
    const char *upv[PEERS];
    view_of(0, &v, upv);
    uint8_t buf[64];
    for (int k = 0; k < 2000; k++) {
        size_t len = sm_rng_u64(&rng) % sizeof buf;
        for (size_t b = 0; b < len; b++) {
            buf[b] = (uint8_t)sm_rng_u64(&rng);
        }
        if (len > 0 && k % 2 == 0) {
            buf[0] = (uint8_t)(1 + k % 4); /* a known kind, bad body */
        }
        node_wmerge_recv(peers[0].wm, &v, "p1", buf, len, now_ms);
    }
    struct node_wmerge_stats st;
    node_wmerge_stats(peers[0].wm, &st);
    CHECK(st.parts_received == 0);
    CHECK(st.parts_refused > 0);
    /* the peers still merge afterwards */
    feed_window(&rng, 0, -1);
    close_all(T0 + WIN_NS, 0);
    run();
    REQUIRE(peers[0].n_got == 1);
    CHECK(same_window(peers[0].got[0], want[0]));
}

/* With no leader, parts wait; past max_outbox the oldest is dropped and
 * counted. */
static void test_outbox_full(void)
{
    struct node_wmerge *wm;
    struct node_wmerge_config wc = {.max_outbox = 3};
    struct node_wmerge_env env = {(void *)(intptr_t)2, t_send, t_deliver,
                                  t_flush};
    REQUIRE(node_wmerge_new(&wc, &env, &wm) == SM_OK);
    struct sm_rng rng;
    sm_rng_seed(&rng, check_seed() + 6);
    static struct peer lone;
    lone.wm = wm;
    for (uint64_t w = 0; w < 5; w++) {
        feed_window(&rng, w, 2);
        REQUIRE(cbn_agg_flush_partial(peers[2].agg, take_part, &lone) == SM_OK);
    }
    struct node_wmerge_stats st;
    node_wmerge_stats(wm, &st);
    CHECK(st.parts_made == 5);
    CHECK(st.parts_dropped == 2);
    CHECK(st.outbox == 3);
    node_wmerge_free(wm);
}

/* A part lost on the way, then the peer's next part: the leader must not
 * take the later part as a sign the earlier one is not coming. */
static void test_later_part_is_no_mark(void)
{
    struct sm_rng rng;
    sm_rng_seed(&rng, check_seed() + 7);
    feed_window(&rng, 0, -1);
    drop_next[2] = 1;
    close_all(T0 + WIN_NS, 0);
    run();
    feed_window(&rng, 1, -1);
    close_all(T0 + 2 * WIN_NS, 0);
    run();
    CHECK(peers[0].n_got == 0);
    now_ms += 2100; /* p2 re-sends its first part */
    run();
    REQUIRE(peers[0].n_got == 2);
    CHECK(same_window(peers[0].got[0], want[0]));
    CHECK(same_window(peers[0].got[1], want[1]));
    struct node_wmerge_stats st;
    node_wmerge_stats(peers[0].wm, &st);
    CHECK(st.windows_complete == 2);
    CHECK(st.parts_late == 0);
}

/* The acknowledgement of a held part is lost: the part goes again after
 * wait_ms + resend_ms and is only acknowledged, not counted late. */
static void test_lost_ack(void)
{
    struct sm_rng rng;
    sm_rng_seed(&rng, check_seed() + 8);
    feed_window(&rng, 0, -1);
    drop_next[0] = 2; /* p0's next ACK */
    close_all(T0 + WIN_NS, 0);
    run();
    REQUIRE(peers[0].n_got == 1);
    struct node_wmerge_stats st;
    int stuck = 0;
    for (int i = 1; i < PEERS; i++) {
        node_wmerge_stats(peers[i].wm, &st);
        stuck += (int)st.outbox;
    }
    CHECK(stuck == 1);
    now_ms += 7100;
    run();
    outboxes_empty();
    node_wmerge_stats(peers[0].wm, &st);
    CHECK(st.parts_late == 0);
    CHECK(st.parts_duplicate == 1);
    CHECK(peers[0].n_got == 1);
}

/* A new leader gets re-sent parts of a window it already holds (its
 * replica arrived late): it does not deliver the window again. */
static void test_no_second_delivery(void)
{
    struct sm_rng rng;
    sm_rng_seed(&rng, check_seed() + 9);
    replicate = 0;
    feed_window(&rng, 0, -1);
    drop_next[0] = 2; /* an ACK to p1 or p2 is lost */
    close_all(T0 + WIN_NS, 0);
    run();
    REQUIRE(peers[0].n_got == 1);
    node_wmerge_seen(peers[1].wm, peers[0].got[0]->end_ns); /* the replica */
    leader = 1; /* the stuck part goes to p1 at once */
    run();
    now_ms += 6000;
    run();
    CHECK(peers[1].n_got == 0);
    struct node_wmerge_stats st;
    node_wmerge_stats(peers[1].wm, &st);
    CHECK(st.windows_merged == 0);
    /* the part comes as late, or joins a window skipped as held */
    CHECK(st.parts_late + st.windows_skipped == 1);
    outboxes_empty();
}

/* A part of another window length, or with other QoS settings, is
 * refused; a lone part far ahead of everyone is not delivered by time. */
static void test_refused_and_far_ahead(void)
{
    struct node_wmerge *wm;
    struct node_wmerge_config wc = {
        .window_ns = WIN_NS,
        .check_qos = 1,
        .qos_configured = 1,
        .qos_target_ms = 20,
        .qos_percentile = 99,
    };
    struct node_wmerge_env env = {(void *)(intptr_t)0, t_send, t_deliver,
                                  t_flush};
    REQUIRE(node_wmerge_new(&wc, &env, &wm) == SM_OK);
    node_wmerge_free(peers[0].wm);
    peers[0].wm = wm;

    struct cbn_agg *other;
    struct cbn_agg_config ac = {
        .window_ns = WIN_NS,
        .qos_service = "front",
        .qos_percentile = 99,
        .qos_target_ms = 50, /* not the leader's 20 */
        .hash_seed = 7,
    };
    REQUIRE(cbn_agg_new(&ac, &other) == SM_OK);
    struct sm_rng rng;
    sm_rng_seed(&rng, check_seed() + 10);
    feed_window(&rng, 0, -1);
    cbn_agg_free(peers[2].agg);
    peers[2].agg = other; /* p2's part of window 0 is empty: new data */
    feed_window(&rng, 0, 2);
    close_all(T0 + WIN_NS, 0);
    run();
    now_ms += 5000;
    run();
    struct node_wmerge_stats st;
    node_wmerge_stats(peers[0].wm, &st);
    CHECK(st.parts_refused >= 1);
    REQUIRE(peers[0].n_got == 1);
    CHECK(peers[0].got[0]->qos_target_ms == 20);

    /* p1 alone sends a part 40 windows ahead of everyone: it waits */
    feed_window(&rng, 40, 1);
    REQUIRE(cbn_agg_flush_partial(peers[1].agg, take_part, &peers[1]) == SM_OK);
    run();
    now_ms += 60000;
    run();
    CHECK(peers[0].n_got == 1);
    node_wmerge_stats(peers[0].wm, &st);
    CHECK(st.pending == 1);
}

static const struct check_test tests[] = {
    {"every part merged equals one aggregator", test_complete},
    {"a lost part is re-sent", test_resend},
    {"a silent peer times out; its part is late", test_silent_peer},
    {"leadership moves mid-window", test_leader_moves},
    {"idle peers are not waited for", test_idle_peer},
    {"flush reaches every other peer", test_flush_all},
    {"malformed messages", test_malformed},
    {"a full outbox drops the oldest, counted", test_outbox_full},
    {"a later part is no mark for an earlier one", test_later_part_is_no_mark},
    {"a lost acknowledgement: the part goes again", test_lost_ack},
    {"a held window is not delivered twice", test_no_second_delivery},
    {"refused parts; a lone part far ahead waits", test_refused_and_far_ahead},
};

CHECK_MAIN(tests, setup, teardown)
