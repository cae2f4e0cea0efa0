/* Tests for the secure channel: handshakes, sealing, every rejection, the
 * replay window, restarts and counters. Keys are random, outcomes are not. */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "base/rng.h"
#include "check.h"
#include "transport/transport.h"

static struct tp_secret cluster, other;

static void setup(void)
{
    REQUIRE_OK(tp_init());
    for (size_t i = 0; i < sizeof cluster.key; i++) {
        cluster.key[i] = (uint8_t)(i * 13 + 1);
        other.key[i] = (uint8_t)(i * 13 + 2);
    }
}

/* ---- helpers ------------------------------------------------------------- */

/* A frame in flight: a copy, so that it can be replayed later. */
struct frame
{
    uint8_t *p;
    size_t n;
};

static struct frame take(struct tp_buf *buf)
{
    struct frame f = {malloc(buf->len ? buf->len : 1), buf->len};
    REQUIRE(f.p != NULL);
    if (buf->len > 0) {
        memcpy(f.p, buf->data, buf->len);
    }
    buf->len = 0;
    return f;
}

static void drop(struct frame *f)
{
    free(f->p);
    f->p = NULL;
    f->n = 0;
}

static struct tp_chan *mk(const struct tp_secret *s, const char *id)
{
    struct tp_chan *c = NULL;
    REQUIRE_OK(tp_chan_new(s, id, &c));
    return c;
}

static uint64_t rejected(const struct tp_chan *c, int reason)
{
    struct tp_chan_stats st;
    tp_chan_stats(c, &st);
    return st.rejected[reason];
}

static uint64_t total_rejected(const struct tp_chan *c)
{
    struct tp_chan_stats st;
    tp_chan_stats(c, &st);
    uint64_t n = 0;
    for (int r = 0; r < TP_CHAN_NREASONS; r++) {
        n += st.rejected[r];
    }
    return n;
}

/* Gives a handshake frame to @c, expecting @rv and @reason. Whatever @c
 * answers is returned (n == 0 if nothing). */
static struct frame hs(struct tp_chan *c,
                       const struct frame *f,
                       int rv,
                       int reason,
                       struct tp_chan_result *res_out)
{
    struct tp_buf out = {0};
    struct tp_chan_result res;
    CHECK(tp_chan_is_handshake(f->p, f->n));
    int got = tp_chan_handshake_accept(c, f->p, f->n, &out, &res);
    if (got != rv || res.reason != reason) {
        check__fail(__FILE__, __LINE__, 1,
                    "handshake_accept: %s/%s, expected %s/%s", sm_errname(got),
                    tp_chan_reason_name(res.reason), sm_errname(rv),
                    tp_chan_reason_name(reason));
    }
    CHECK_EQ(res.send, out.len > 0);
    if (rv != SM_OK) {
        CHECK_EQ(out.len, 0);
    }
    if (res_out != NULL) {
        *res_out = res;
    }
    struct frame r = take(&out);
    tp_buf_free(&out);
    return r;
}

static struct frame make_init(struct tp_chan *c, const char *peer)
{
    struct tp_buf out = {0};
    REQUIRE_OK(tp_chan_handshake_make(c, peer, &out));
    struct frame f = take(&out);
    tp_buf_free(&out);
    return f;
}

/* A complete handshake, @i initiating to @r (whose id is @r_id). */
static void handshake(struct tp_chan *i,
                      const char *i_id,
                      struct tp_chan *r,
                      const char *r_id)
{
    struct tp_chan_result res;
    struct frame init = make_init(i, r_id);
    struct frame reply = hs(r, &init, SM_OK, TP_CHAN_OK, &res);
    CHECK_STR(res.peer, i_id);
    CHECK_EQ(res.established, 0);
    REQUIRE(reply.n > 0);
    struct frame confirm = hs(i, &reply, SM_OK, TP_CHAN_OK, &res);
    CHECK_STR(res.peer, r_id);
    CHECK_EQ(res.established, 1);
    REQUIRE(confirm.n > 0);
    struct frame none = hs(r, &confirm, SM_OK, TP_CHAN_OK, &res);
    CHECK_STR(res.peer, i_id);
    CHECK_EQ(res.established, 1);
    CHECK_EQ(none.n, 0);
    drop(&init);
    drop(&reply);
    drop(&confirm);
    drop(&none);
}

static struct frame seal(struct tp_chan *c,
                         const char *peer,
                         int type,
                         const char *text)
{
    struct tp_buf out = {0};
    REQUIRE_OK(tp_chan_seal(c, peer, type, text, strlen(text), &out));
    CHECK(out.len <= strlen(text) + TP_CHAN_OVERHEAD_MAX);
    CHECK(!tp_chan_is_handshake(out.data, out.len));
    struct frame f = take(&out);
    tp_buf_free(&out);
    return f;
}

/* Opens @f at @c expecting @rv/@reason; on success compares the plaintext
 * with @text and returns the sequence number. */
static uint64_t open_f(struct tp_chan *c,
                       const struct frame *f,
                       int rv,
                       int reason,
                       const char *text)
{
    struct tp_buf out = {0};
    struct tp_chan_result res;
    int got = tp_chan_open(c, f->p, f->n, &out, &res);
    if (got != rv || res.reason != reason) {
        check__fail(__FILE__, __LINE__, 0, "open: %s/%s, expected %s/%s",
                    sm_errname(got), tp_chan_reason_name(res.reason),
                    sm_errname(rv), tp_chan_reason_name(reason));
    }
    uint64_t seq = 0;
    if (got == SM_OK && text != NULL) {
        CHECK_EQ(res.len, strlen(text));
        CHECK(res.len == out.len);
        CHECK(res.len == 0 || memcmp(res.data, text, res.len) == 0);
        seq = res.seq;
    }
    if (got != SM_OK) {
        CHECK_EQ(out.len, 0);
    }
    tp_buf_free(&out);
    return seq;
}

static void talk(struct tp_chan *a,
                 const char *a_id,
                 struct tp_chan *b,
                 const char *b_id,
                 const char *text)
{
    struct frame f = seal(a, b_id, TP_MSG_RAFT, text);
    open_f(b, &f, SM_OK, TP_CHAN_OK, text);
    drop(&f);
    f = seal(b, a_id, TP_MSG_ACK, text);
    open_f(a, &f, SM_OK, TP_CHAN_OK, text);
    drop(&f);
}

/* ---- tests --------------------------------------------------------------- */

static void test_talk(void)
{
    struct tp_chan *a = mk(&cluster, "alice"), *b = mk(&cluster, "bob");
    CHECK_EQ(tp_chan_has_session(a, "bob"), 0);
    handshake(a, "alice", b, "bob");
    CHECK_EQ(tp_chan_has_session(a, "bob"), 1);
    CHECK_EQ(tp_chan_has_session(b, "alice"), 1);

    for (int i = 0; i < 5; i++) {
        char text[64];
        snprintf(text, sizeof text, "message %d", i);
        struct frame f = seal(a, "bob", TP_MSG_SPANS + i % 3, text);
        struct tp_buf out = {0};
        struct tp_chan_result res;
        REQUIRE_OK(tp_chan_open(b, f.p, f.n, &out, &res));
        CHECK_STR(res.peer, "alice");
        CHECK_EQ(res.type, TP_MSG_SPANS + i % 3);
        CHECK_EQ(res.seq, (uint64_t)i + 1);
        CHECK_EQ(res.len, strlen(text));
        CHECK(memcmp(res.data, text, res.len) == 0);
        CHECK_EQ(res.established, 0);
        CHECK_EQ(res.send, 0);
        tp_buf_free(&out);
        drop(&f);
    }
    talk(a, "alice", b, "bob", "");
    talk(a, "alice", b, "bob", "the other way");

    /* Output is appended after what the buffer held. */
    struct tp_buf out = {0};
    REQUIRE_OK(tp_buf_reserve(&out, 2));
    memcpy(out.data, "hd", 2);
    out.len = 2;
    REQUIRE_OK(tp_chan_seal(b, "alice", TP_MSG_ACK, "x", 1, &out));
    struct tp_buf plain = {0};
    struct tp_chan_result res;
    REQUIRE_OK(tp_chan_open(a, out.data + 2, out.len - 2, &plain, &res));
    CHECK(memcmp(out.data, "hd", 2) == 0);
    CHECK_EQ(res.len, 1);
    tp_buf_free(&out);
    tp_buf_free(&plain);

    struct tp_chan_stats sa, sb;
    tp_chan_stats(a, &sa);
    tp_chan_stats(b, &sb);
    CHECK_EQ(sa.inits_sent, 1);
    CHECK_EQ(sa.replies_sent, 0);
    CHECK_EQ(sb.replies_sent, 1);
    CHECK_EQ(sa.sessions, 1);
    CHECK_EQ(sb.sessions, 1);
    CHECK_EQ(sa.sealed, 7);
    CHECK_EQ(sb.opened, 7);
    CHECK_EQ(sb.sealed, 3);
    CHECK_EQ(sa.opened, 3);
    CHECK_EQ(total_rejected(a), 0);
    CHECK_EQ(total_rejected(b), 0);
    tp_chan_free(a);
    tp_chan_free(b);
}

static void test_wrong_secret(void)
{
    struct tp_chan *a = mk(&cluster, "alice"), *b = mk(&cluster, "bob");
    struct tp_chan *m = mk(&other, "mallory");
    struct tp_chan *fake_bob = mk(&other, "bob");

    /* An INIT made with another secret. */
    struct frame init = make_init(m, "bob");
    struct frame r = hs(b, &init, SM_EAUTH, TP_CHAN_BAD_HELLO, NULL);
    drop(&r);
    drop(&init);
    CHECK_EQ(rejected(b, TP_CHAN_BAD_HELLO), 1);
    CHECK_EQ(tp_chan_has_session(b, "mallory"), 0);

    /* Our INIT to a peer with another secret: it refuses, and its own
     * handshake to us is refused too. */
    init = make_init(a, "bob");
    r = hs(fake_bob, &init, SM_EAUTH, TP_CHAN_BAD_HELLO, NULL);
    drop(&r);
    drop(&init);
    init = make_init(fake_bob, "alice");
    r = hs(a, &init, SM_EAUTH, TP_CHAN_BAD_HELLO, NULL);
    drop(&r);
    drop(&init);
    CHECK_EQ(tp_chan_has_session(a, "bob"), 0);

    /* A REPLY with a broken MAC. */
    init = make_init(a, "bob");
    struct frame reply = hs(b, &init, SM_OK, TP_CHAN_OK, NULL);
    reply.p[reply.n - 1] ^= 1;
    r = hs(a, &reply, SM_EAUTH, TP_CHAN_BAD_HELLO, NULL);
    drop(&r);
    reply.p[reply.n - 1] ^= 1;
    r = hs(a, &reply, SM_OK, TP_CHAN_OK, NULL); /* the real one still works */
    drop(&r);
    drop(&reply);
    drop(&init);
    CHECK_EQ(rejected(a, TP_CHAN_BAD_HELLO), 2);

    /* Data sealed by a session of another cluster: bob has no session with
     * mallory at all. */
    struct tp_chan *m_peer = mk(&other, "bob");
    handshake(m, "mallory", m_peer, "bob");
    struct frame f = seal(m, "bob", TP_MSG_FWD_REQ, "train now");
    open_f(b, &f, SM_EAUTH, TP_CHAN_UNKNOWN_PEER, NULL);
    drop(&f);
    CHECK_EQ(rejected(b, TP_CHAN_UNKNOWN_PEER), 1);

    tp_chan_free(a);
    tp_chan_free(b);
    tp_chan_free(m);
    tp_chan_free(m_peer);
    tp_chan_free(fake_bob);
}

/* Flips every bit of a sealed frame: never accepted, each rejection has
 * the reason of the part hit, and the real frame opens afterwards. */
static void test_tampering(void)
{
    struct tp_chan *a = mk(&cluster, "alice"), *b = mk(&cluster, "bob");
    handshake(a, "alice", b, "bob");
    struct frame f = seal(a, "bob", TP_MSG_WINDOW, "sketch bytes");
    /* kind ver 5 "alice" 3 "bob" type sid[8] seq[8] ciphertext tag */
    const size_t type_at = 2 + 6 + 4, sid_at = type_at + 1, seq_at = sid_at + 8,
                 ct_at = seq_at + 8;
    for (size_t i = 0; i < f.n; i++) {
        for (int bit = 0; bit < 8; bit++) {
            f.p[i] ^= (uint8_t)(1u << bit);
            struct tp_buf out = {0};
            struct tp_chan_result res;
            int rv = tp_chan_open(b, f.p, f.n, &out, &res);
            CHECK(rv != SM_OK);
            CHECK_EQ(out.len, 0);
            if (i == seq_at && f.p[i] == 0) {
                /* Sequence number 0 belongs to the confirmation. */
                CHECK_EQ(res.reason, TP_CHAN_MALFORMED);
            } else if (i >= ct_at || i == type_at ||
                       (i >= seq_at && i < ct_at)) {
                /* Ciphertext, tag, or associated data. */
                CHECK_EQ(res.reason, TP_CHAN_BAD_MAC);
            } else if (i >= sid_at && i < seq_at) {
                CHECK_EQ(res.reason, TP_CHAN_STALE_SESSION);
            } else if (i == 1) {
                CHECK_EQ(res.reason, TP_CHAN_BAD_VERSION);
                CHECK_EQ(rv, SM_EUNSUPPORTED);
            }
            tp_buf_free(&out);
            f.p[i] ^= (uint8_t)(1u << bit);
        }
    }
    CHECK(rejected(b, TP_CHAN_BAD_MAC) > 0);
    open_f(b, &f, SM_OK, TP_CHAN_OK, "sketch bytes");
    drop(&f);

    /* Tampered associated data with a matching length: the type. */
    f = seal(a, "bob", TP_MSG_RAFT, "append entries");
    f.p[type_at] = TP_MSG_FWD_REQ;
    uint64_t before = rejected(b, TP_CHAN_BAD_MAC);
    open_f(b, &f, SM_EAUTH, TP_CHAN_BAD_MAC, NULL);
    CHECK_EQ(rejected(b, TP_CHAN_BAD_MAC), before + 1);
    f.p[type_at] = TP_MSG_RAFT;
    open_f(b, &f, SM_OK, TP_CHAN_OK, "append entries");
    drop(&f);
    tp_chan_free(a);
    tp_chan_free(b);
}

static void test_replay_and_window(void)
{
    struct tp_chan *a = mk(&cluster, "alice"), *b = mk(&cluster, "bob");
    handshake(a, "alice", b, "bob");
    struct frame f[100];
    char text[100][16];
    for (int i = 0; i < 100; i++) {
        snprintf(text[i], sizeof text[i], "m%d", i + 1);
        f[i] = seal(a, "bob", TP_MSG_SPANS, text[i]);
    }
    /* In order, then replayed. */
    CHECK_EQ(open_f(b, &f[0], SM_OK, TP_CHAN_OK, text[0]), 1);
    open_f(b, &f[0], SM_EAUTH, TP_CHAN_REPLAY, NULL);
    CHECK_EQ(rejected(b, TP_CHAN_REPLAY), 1);

    /* Reordered within the window: each accepted once. */
    const int order[] = {9, 2, 1, 3, 8, 7, 6, 5, 4};
    for (size_t k = 0; k < sizeof order / sizeof order[0]; k++) {
        int i = order[k];
        CHECK_EQ(open_f(b, &f[i], SM_OK, TP_CHAN_OK, text[i]), i + 1);
    }
    for (int i = 0; i < 10; i++) {
        open_f(b, &f[i], SM_EAUTH, TP_CHAN_REPLAY, NULL);
    }
    CHECK_EQ(rejected(b, TP_CHAN_REPLAY), 11);

    /* Jump to seq 80: the window is 17..80. */
    open_f(b, &f[79], SM_OK, TP_CHAN_OK, text[79]);
    open_f(b, &f[15], SM_EAUTH, TP_CHAN_TOO_OLD, NULL); /* seq 16 */
    open_f(b, &f[10], SM_EAUTH, TP_CHAN_TOO_OLD, NULL); /* seq 11 */
    open_f(b, &f[16], SM_OK, TP_CHAN_OK, text[16]);     /* seq 17 */
    open_f(b, &f[16], SM_EAUTH, TP_CHAN_REPLAY, NULL);
    open_f(b, &f[78], SM_OK, TP_CHAN_OK, text[78]);     /* seq 79 */
    open_f(b, &f[99], SM_OK, TP_CHAN_OK, text[99]);     /* seq 100 */
    open_f(b, &f[36], SM_OK, TP_CHAN_OK, text[36]);     /* seq 37 */
    open_f(b, &f[35], SM_EAUTH, TP_CHAN_TOO_OLD, NULL); /* seq 36 */
    open_f(b, &f[79], SM_EAUTH, TP_CHAN_REPLAY, NULL);
    CHECK_EQ(rejected(b, TP_CHAN_TOO_OLD), 3);
    CHECK_EQ(rejected(b, TP_CHAN_REPLAY), 13);

    /* A replay window jump of more than 64 clears it. */
    struct frame g[200];
    for (int i = 0; i < 200; i++) {
        g[i] = seal(a, "bob", TP_MSG_SPANS, "x");
    }
    open_f(b, &g[199], SM_OK, TP_CHAN_OK, "x");
    open_f(b, &g[199 - 63], SM_OK, TP_CHAN_OK, "x");
    open_f(b, &g[199 - 64], SM_EAUTH, TP_CHAN_TOO_OLD, NULL);
    for (int i = 0; i < 200; i++) {
        drop(&g[i]);
    }
    for (int i = 0; i < 100; i++) {
        drop(&f[i]);
    }
    tp_chan_free(a);
    tp_chan_free(b);
}

/* A seeded shuffle with duplicates: every frame is accepted exactly once
 * or refused as a replay or too old, never twice. */
static void test_window_random(void)
{
    struct tp_chan *a = mk(&cluster, "alice"), *b = mk(&cluster, "bob");
    handshake(a, "alice", b, "bob");
    struct sm_rng rng;
    sm_rng_seed(&rng, check_seed());
    enum { N = 300 };
    struct frame f[N];
    int accepted[N] = {0};
    for (int i = 0; i < N; i++) {
        f[i] = seal(a, "bob", TP_MSG_SPANS, "r");
    }
    uint64_t top = 0;
    for (int step = 0; step < 3 * N; step++) {
        /* Mostly forward, sometimes back up to 80. */
        int i = (int)(step / 3 + sm_rng_below(&rng, 20)) -
                (int)sm_rng_below(&rng, 80);
        if (i < 0 || i >= N) {
            continue;
        }
        uint64_t seq = (uint64_t)i + 1;
        struct tp_buf out = {0};
        struct tp_chan_result res;
        int rv = tp_chan_open(b, f[i].p, f[i].n, &out, &res);
        if (accepted[i]) {
            CHECK(rv == SM_EAUTH && (res.reason == TP_CHAN_REPLAY ||
                                     res.reason == TP_CHAN_TOO_OLD));
        } else if (seq + TP_CHAN_WINDOW <= top) {
            CHECK(rv == SM_EAUTH && res.reason == TP_CHAN_TOO_OLD);
        } else {
            CHECK_OK(rv);
            accepted[i] = 1;
            if (seq > top) {
                top = seq;
            }
        }
        tp_buf_free(&out);
    }
    for (int i = 0; i < N; i++) {
        drop(&f[i]);
    }
    tp_chan_free(a);
    tp_chan_free(b);
}

static void test_unknown_and_misaddressed(void)
{
    struct tp_chan *a = mk(&cluster, "alice"), *b = mk(&cluster, "bob");
    struct tp_chan *c = mk(&cluster, "carol"), *b2 = mk(&cluster, "bob");
    handshake(a, "alice", b, "bob");
    handshake(c, "carol", b2, "bob");
    handshake(c, "carol", a, "alice");

    /* Carol talks to "bob" (the other one): this bob never met her. */
    struct frame f = seal(c, "bob", TP_MSG_SPANS, "hi bob");
    open_f(b, &f, SM_EAUTH, TP_CHAN_UNKNOWN_PEER, NULL);
    open_f(b2, &f, SM_OK, TP_CHAN_OK, "hi bob");
    drop(&f);
    CHECK_EQ(rejected(b, TP_CHAN_UNKNOWN_PEER), 1);

    /* Alice's frame for bob, delivered to carol; and reflected to alice. */
    f = seal(a, "bob", TP_MSG_SPANS, "for bob");
    open_f(c, &f, SM_EAUTH, TP_CHAN_NOT_FOR_ME, NULL);
    open_f(a, &f, SM_EAUTH, TP_CHAN_NOT_FOR_ME, NULL);
    open_f(b, &f, SM_OK, TP_CHAN_OK, "for bob");
    drop(&f);

    /* Alice's session for "bob" is now with the other bob: her frames
     * carry a session id this bob never saw. */
    handshake(a, "alice", b2, "bob");
    f = seal(a, "bob", TP_MSG_SPANS, "new session");
    open_f(b, &f, SM_EAUTH, TP_CHAN_STALE_SESSION, NULL);
    open_f(b2, &f, SM_OK, TP_CHAN_OK, "new session");
    drop(&f);

    /* Sealing needs a session; seal's arguments are checked. */
    struct tp_buf out = {0};
    CHECK_EQ(tp_chan_seal(b, "dave", TP_MSG_ACK, "x", 1, &out), SM_ENOTFOUND);
    CHECK_EQ(tp_chan_seal(b, "alice", 0, "x", 1, &out), SM_EINVAL);
    CHECK_EQ(tp_chan_seal(b, "alice", 256, "x", 1, &out), SM_EINVAL);
    CHECK_EQ(tp_chan_seal(b, "alice", TP_MSG_ACK, NULL, 1, &out), SM_EINVAL);
    CHECK_EQ(tp_chan_handshake_make(b, "bob", &out), SM_EINVAL);
    CHECK_EQ(tp_chan_handshake_make(b, "", &out), SM_EINVAL);
    CHECK_EQ(tp_chan_handshake_make(b, "a b", &out), SM_EINVAL);
    CHECK_EQ(out.len, 0);
    tp_buf_free(&out);
    struct tp_chan *bad = NULL;
    CHECK_EQ(tp_chan_new(&cluster, "", &bad), SM_EINVAL);
    CHECK_EQ(tp_chan_new(&cluster, "with space", &bad), SM_EINVAL);
    CHECK(bad == NULL);

    /* A peer forgotten is unknown. */
    f = seal(c, "alice", TP_MSG_SPANS, "hello");
    tp_chan_forget(a, "carol");
    tp_chan_forget(a, "nobody");
    CHECK_EQ(tp_chan_has_session(a, "carol"), 0);
    open_f(a, &f, SM_EAUTH, TP_CHAN_UNKNOWN_PEER, NULL);
    drop(&f);

    tp_chan_free(a);
    tp_chan_free(b);
    tp_chan_free(b2);
    tp_chan_free(c);
}

/* Alice restarts: new process, new keys, new handshake. Bob keeps his old
 * session until the new one is confirmed, then rejects everything of the
 * old one. */
static void test_restart(void)
{
    struct tp_chan *a = mk(&cluster, "alice"), *b = mk(&cluster, "bob");
    handshake(a, "alice", b, "bob");
    struct frame delivered = seal(a, "bob", TP_MSG_RAFT, "same text");
    struct frame in_flight = seal(a, "bob", TP_MSG_RAFT, "late");
    open_f(b, &delivered, SM_OK, TP_CHAN_OK, "same text");
    tp_chan_free(a);

    a = mk(&cluster, "alice");
    /* Bob still talks on the old session: the new alice knows nothing. */
    struct frame old_b = seal(b, "alice", TP_MSG_RAFT, "to old alice");
    open_f(a, &old_b, SM_EAUTH, TP_CHAN_UNKNOWN_PEER, NULL);

    struct tp_chan_result res;
    struct frame init = make_init(a, "bob");
    struct frame reply = hs(b, &init, SM_OK, TP_CHAN_OK, &res);
    CHECK_EQ(res.established, 0);
    /* Before the confirmation bob still seals on the old session, and
     * still accepts it. */
    struct frame before = seal(b, "alice", TP_MSG_RAFT, "still old");
    struct frame confirm = hs(a, &reply, SM_OK, TP_CHAN_OK, &res);
    CHECK_EQ(res.established, 1);
    open_f(a, &before, SM_EAUTH, TP_CHAN_STALE_SESSION, NULL);
    open_f(a, &old_b, SM_EAUTH, TP_CHAN_STALE_SESSION, NULL);
    struct frame none = hs(b, &confirm, SM_OK, TP_CHAN_OK, &res);
    CHECK_EQ(res.established, 1);
    drop(&none);

    /* The old session is gone at bob: old frames, delivered or not, are
     * refused, and so is a replay of the confirmation. */
    open_f(b, &delivered, SM_EAUTH, TP_CHAN_STALE_SESSION, NULL);
    open_f(b, &in_flight, SM_EAUTH, TP_CHAN_STALE_SESSION, NULL);
    none = hs(b, &confirm, SM_EAUTH, TP_CHAN_REPLAY, NULL);
    drop(&none);
    CHECK_EQ(rejected(b, TP_CHAN_STALE_SESSION), 2);

    /* Fresh keys: the same text at the same sequence number seals to other
     * bytes. */
    struct frame again = seal(a, "bob", TP_MSG_RAFT, "same text");
    CHECK_EQ(again.n, delivered.n);
    CHECK(memcmp(again.p, delivered.p, again.n) != 0);
    CHECK_EQ(open_f(b, &again, SM_OK, TP_CHAN_OK, "same text"), 1);
    talk(a, "alice", b, "bob", "after the restart");
    struct tp_chan_stats st;
    tp_chan_stats(b, &st);
    CHECK_EQ(st.sessions, 2);

    drop(&delivered);
    drop(&in_flight);
    drop(&old_b);
    drop(&init);
    drop(&reply);
    drop(&before);
    drop(&confirm);
    drop(&again);
    tp_chan_free(a);
    tp_chan_free(b);
}

/* Bob restarts: the initiator restarting is not special. */
static void test_responder_restart(void)
{
    struct tp_chan *a = mk(&cluster, "alice"), *b = mk(&cluster, "bob");
    handshake(a, "alice", b, "bob");
    struct frame old_a = seal(a, "bob", TP_MSG_RAFT, "to old bob");
    tp_chan_free(b);
    b = mk(&cluster, "bob");
    open_f(b, &old_a, SM_EAUTH, TP_CHAN_UNKNOWN_PEER, NULL);
    handshake(b, "bob", a, "alice");
    open_f(b, &old_a, SM_EAUTH, TP_CHAN_STALE_SESSION, NULL);
    talk(a, "alice", b, "bob", "hello again");
    drop(&old_a);
    tp_chan_free(a);
    tp_chan_free(b);
}

/* Replayed handshake frames never disturb a working session. */
static void test_handshake_replay(void)
{
    struct tp_chan *a = mk(&cluster, "alice"), *b = mk(&cluster, "bob");
    struct tp_chan_result res;
    struct frame init1 = make_init(a, "bob");
    /* A duplicate INIT before the reply gets the same reply. */
    struct frame reply1 = hs(b, &init1, SM_OK, TP_CHAN_OK, NULL);
    struct frame reply1b = hs(b, &init1, SM_OK, TP_CHAN_OK, NULL);
    CHECK(reply1.n == reply1b.n && memcmp(reply1.p, reply1b.p, reply1.n) == 0);
    /* Bob has no other session yet: he may seal on the pending one. */
    struct frame early = seal(b, "alice", TP_MSG_HELLO, "early");
    struct frame confirm1 = hs(a, &reply1, SM_OK, TP_CHAN_OK, NULL);
    struct frame r = hs(a, &reply1b, SM_EAUTH, TP_CHAN_HELLO_REPLAY, NULL);
    drop(&r);
    open_f(a, &early, SM_OK, TP_CHAN_OK, "early");
    /* Data before the confirmation confirms the session; the confirmation
     * arriving late is accepted once. */
    struct frame d = seal(a, "bob", TP_MSG_HELLO, "data first");
    struct tp_buf out = {0};
    REQUIRE_OK(tp_chan_open(b, d.p, d.n, &out, &res));
    CHECK_EQ(res.established, 1);
    tp_buf_free(&out);
    r = hs(b, &confirm1, SM_OK, TP_CHAN_OK, &res);
    CHECK_EQ(res.established, 0);
    drop(&r);
    r = hs(b, &confirm1, SM_EAUTH, TP_CHAN_REPLAY, NULL);
    drop(&r);
    drop(&d);

    /* The INIT and REPLY of the completed handshake, replayed. */
    r = hs(b, &init1, SM_EAUTH, TP_CHAN_HELLO_REPLAY, NULL);
    drop(&r);
    r = hs(a, &reply1, SM_EAUTH, TP_CHAN_HELLO_REPLAY, NULL);
    drop(&r);
    talk(a, "alice", b, "bob", "undisturbed");

    /* Rekey, then replay the first INIT: bob answers it with a session
     * nobody can confirm, keeps sealing on the real one, and alice refuses
     * the stray reply. */
    handshake(a, "alice", b, "bob");
    struct frame stray = hs(b, &init1, SM_OK, TP_CHAN_OK, NULL);
    REQUIRE(stray.n > 0);
    r = hs(a, &stray, SM_EAUTH, TP_CHAN_UNEXPECTED, NULL);
    drop(&r);
    talk(a, "alice", b, "bob", "still undisturbed");
    CHECK_EQ(rejected(a, TP_CHAN_UNEXPECTED), 1);

    /* A reply to an INIT that was superseded by a newer one. */
    struct frame i2 = make_init(a, "bob");
    struct frame i3 = make_init(a, "bob");
    struct frame r2 = hs(b, &i2, SM_OK, TP_CHAN_OK, NULL);
    r = hs(a, &r2, SM_EAUTH, TP_CHAN_UNEXPECTED, NULL);
    drop(&r);
    struct frame r3 = hs(b, &i3, SM_OK, TP_CHAN_OK, NULL);
    struct frame c3 = hs(a, &r3, SM_OK, TP_CHAN_OK, &res);
    CHECK_EQ(res.established, 1);
    r = hs(b, &c3, SM_OK, TP_CHAN_OK, &res);
    CHECK_EQ(res.established, 1);
    drop(&r);
    talk(a, "alice", b, "bob", "third session");
    CHECK_EQ(rejected(a, TP_CHAN_UNEXPECTED), 2);

    drop(&init1);
    drop(&reply1);
    drop(&reply1b);
    drop(&early);
    drop(&confirm1);
    drop(&stray);
    drop(&i2);
    drop(&i3);
    drop(&r2);
    drop(&r3);
    drop(&c3);
    tp_chan_free(a);
    tp_chan_free(b);
}

/* A rekey whose CONFIRM is lost: bob goes on sealing on the old session,
 * alice refuses that as stale, and her next data frame confirms. */
static void test_lost_confirm(void)
{
    struct tp_chan *a = mk(&cluster, "alice"), *b = mk(&cluster, "bob");
    handshake(a, "alice", b, "bob");
    struct tp_chan_result res;
    struct frame init = make_init(a, "bob");
    struct frame reply = hs(b, &init, SM_OK, TP_CHAN_OK, NULL);
    struct frame lost = hs(a, &reply, SM_OK, TP_CHAN_OK, NULL);
    struct frame f = seal(b, "alice", TP_MSG_RAFT, "old session");
    open_f(a, &f, SM_EAUTH, TP_CHAN_STALE_SESSION, NULL);
    drop(&f);
    f = seal(a, "bob", TP_MSG_HELLO, "hello");
    struct tp_buf out = {0};
    REQUIRE_OK(tp_chan_open(b, f.p, f.n, &out, &res));
    CHECK_EQ(res.established, 1);
    tp_buf_free(&out);
    drop(&f);
    talk(a, "alice", b, "bob", "confirmed by data");
    /* The lost CONFIRM, arriving at last, is accepted once. */
    struct frame r = hs(b, &lost, SM_OK, TP_CHAN_OK, &res);
    CHECK_EQ(res.established, 0);
    drop(&r);
    r = hs(b, &lost, SM_EAUTH, TP_CHAN_REPLAY, NULL);
    drop(&r);
    drop(&init);
    drop(&reply);
    drop(&lost);
    tp_chan_free(a);
    tp_chan_free(b);
}

/* Both start a handshake at once; "alice" < "bob", so alice's wins. */
static void test_collision(void)
{
    struct tp_chan *a = mk(&cluster, "alice"), *b = mk(&cluster, "bob");
    struct tp_chan_result res;
    struct frame ia = make_init(a, "bob");
    struct frame ib = make_init(b, "alice");
    /* Alice gets bob's INIT: she sends hers again. */
    struct frame again = hs(a, &ib, SM_OK, TP_CHAN_OK, &res);
    CHECK(again.n == ia.n && memcmp(again.p, ia.p, ia.n) == 0);
    /* Bob gets alice's INIT: he gives up his and answers. */
    struct frame reply = hs(b, &ia, SM_OK, TP_CHAN_OK, NULL);
    struct frame reply2 = hs(b, &again, SM_OK, TP_CHAN_OK, NULL);
    CHECK(reply2.n == reply.n && memcmp(reply2.p, reply.p, reply.n) == 0);
    struct frame confirm = hs(a, &reply, SM_OK, TP_CHAN_OK, &res);
    CHECK_EQ(res.established, 1);
    struct frame r = hs(a, &reply2, SM_EAUTH, TP_CHAN_HELLO_REPLAY, NULL);
    drop(&r);
    r = hs(b, &confirm, SM_OK, TP_CHAN_OK, &res);
    CHECK_EQ(res.established, 1);
    drop(&r);
    talk(a, "alice", b, "bob", "after the collision");
    struct tp_chan_stats sa, sb;
    tp_chan_stats(a, &sa);
    tp_chan_stats(b, &sb);
    CHECK_EQ(sa.collisions, 1);
    CHECK_EQ(sb.collisions, 1);

    /* Bob's abandoned INIT, if it arrives again, is answered normally
     * (alice has nothing in progress): it can only start a new session
     * that bob cannot confirm, and alice's current one keeps working. */
    struct frame stray = hs(a, &ib, SM_OK, TP_CHAN_OK, NULL);
    r = hs(b, &stray, SM_EAUTH, TP_CHAN_UNEXPECTED, NULL);
    drop(&r);
    drop(&stray);
    talk(a, "alice", b, "bob", "still fine");

    drop(&ia);
    drop(&ib);
    drop(&again);
    drop(&reply);
    drop(&reply2);
    drop(&confirm);
    tp_chan_free(a);
    tp_chan_free(b);
}

static int admit_not_mallory(void *arg, const char *peer)
{
    (*(int *)arg)++;
    return strcmp(peer, "mallory") != 0;
}

static void test_admission(void)
{
    struct tp_chan *a = mk(&cluster, "alice"), *b = mk(&cluster, "bob");
    struct tp_chan *m = mk(&cluster, "mallory");
    int calls = 0;
    tp_chan_set_admit(b, admit_not_mallory, &calls);
    struct frame init = make_init(m, "bob");
    struct frame r = hs(b, &init, SM_EAUTH, TP_CHAN_DENIED, NULL);
    drop(&r);
    drop(&init);
    CHECK_EQ(rejected(b, TP_CHAN_DENIED), 1);
    CHECK_EQ(tp_chan_has_session(b, "mallory"), 0);
    handshake(a, "alice", b, "bob");
    CHECK_EQ(calls, 2);
    tp_chan_set_admit(b, NULL, NULL);
    handshake(m, "mallory", b, "bob");
    talk(m, "mallory", b, "bob", "let in");
    tp_chan_free(a);
    tp_chan_free(b);
    tp_chan_free(m);
}

/* An INIT with a low-order public key and a valid MAC (so made with the
 * cluster key as transport.h documents it). */
static void test_bad_key(void)
{
    struct tp_chan *b = mk(&cluster, "bob");
    uint8_t k_hs[crypto_auth_KEYBYTES];
    crypto_kdf_derive_from_key(k_hs, sizeof k_hs, 1, "smchan01", cluster.key);
    uint8_t f[2 + 2 + 3 + 3 + 32 + 16 + 32];
    size_t n = 0;
    f[n++] = 1;
    f[n++] = TP_CHAN_VERSION;
    f[n++] = 3;
    memcpy(f + n, "eve", 3);
    n += 3;
    f[n++] = 3;
    memcpy(f + n, "bob", 3);
    n += 3;
    memset(f + n, 0, 32 + 16); /* the zero point, a zero nonce */
    n += 48;
    crypto_auth(f + n, f, n, k_hs);
    n += 32;
    REQUIRE_EQ(n, sizeof f);
    struct frame fr = {f, n};
    struct frame r = hs(b, &fr, SM_EAUTH, TP_CHAN_BAD_KEY, NULL);
    drop(&r);
    CHECK_EQ(tp_chan_has_session(b, "eve"), 0);

    /* The same frame with a real key is accepted: the MAC scheme is the
     * documented one. */
    uint8_t pk[32], sk[32];
    crypto_kx_keypair(pk, sk);
    memcpy(f + 10, pk, 32);
    crypto_auth(f + n - 32, f, n - 32, k_hs);
    r = hs(b, &fr, SM_OK, TP_CHAN_OK, NULL);
    CHECK(r.n > 0);
    drop(&r);
    /* To another id, or from our own. */
    memcpy(f + 7, "bib", 3);
    crypto_auth(f + n - 32, f, n - 32, k_hs);
    r = hs(b, &fr, SM_EAUTH, TP_CHAN_NOT_FOR_ME, NULL);
    drop(&r);
    memcpy(f + 3, "bob", 3);
    memcpy(f + 7, "bob", 3);
    crypto_auth(f + n - 32, f, n - 32, k_hs);
    r = hs(b, &fr, SM_EAUTH, TP_CHAN_NOT_FOR_ME, NULL);
    drop(&r);
    /* Another channel version. */
    f[1] = 2;
    r = hs(b, &fr, SM_EUNSUPPORTED, TP_CHAN_BAD_VERSION, NULL);
    drop(&r);
    tp_chan_free(b);
}

/* Every prefix and every single-bit change of every kind of frame is
 * refused by the receiver, which keeps working. */
static void test_hostile_frames(void)
{
    struct tp_chan *a = mk(&cluster, "alice"), *b = mk(&cluster, "bob");
    struct frame init = make_init(a, "bob");
    struct frame reply = hs(b, &init, SM_OK, TP_CHAN_OK, NULL);
    struct frame probe_init = make_init(a, "bob"); /* supersedes init */
    drop(&probe_init);
    struct frame init2 = make_init(a, "bob");
    struct frame reply2 = hs(b, &init2, SM_OK, TP_CHAN_OK, NULL);
    struct frame confirm = hs(a, &reply2, SM_OK, TP_CHAN_OK, NULL);
    struct frame data = seal(a, "bob", TP_MSG_SPANS, "payload");
    struct frame *frames[] = {&init, &reply, &confirm, &data};
    struct tp_chan *targets[] = {b, a, b, b};

    for (size_t k = 0; k < 4; k++) {
        struct frame *f = frames[k];
        struct tp_chan *t = targets[k];
        for (size_t n = 0; n < f->n; n++) {
            uint8_t *p = malloc(n ? n : 1);
            REQUIRE(p != NULL);
            memcpy(p, f->p, n);
            struct tp_buf out = {0};
            struct tp_chan_result res;
            int rv = k == 3 ? tp_chan_open(t, p, n, &out, &res)
                            : tp_chan_handshake_accept(t, p, n, &out, &res);
            CHECK(rv == SM_EMALFORMED || rv == SM_EAUTH);
            CHECK(res.reason != TP_CHAN_OK);
            CHECK_EQ(out.len, 0);
            tp_buf_free(&out);
            free(p);
        }
        for (size_t i = 0; i < f->n; i++) {
            f->p[i] ^= 0x40;
            struct tp_buf out = {0};
            struct tp_chan_result res;
            int rv = k == 3
                         ? tp_chan_open(t, f->p, f->n, &out, &res)
                         : tp_chan_handshake_accept(t, f->p, f->n, &out, &res);
            CHECK(rv != SM_OK);
            CHECK_EQ(out.len, 0);
            tp_buf_free(&out);
            f->p[i] ^= 0x40;
        }
    }
    /* The wrong entry point. */
    struct tp_buf out = {0};
    struct tp_chan_result res;
    CHECK_EQ(tp_chan_open(b, confirm.p, confirm.n, &out, &res), SM_EMALFORMED);
    CHECK_EQ(tp_chan_handshake_accept(b, data.p, data.n, &out, &res),
             SM_EMALFORMED);
    CHECK_EQ(tp_chan_is_handshake(data.p, data.n), 0);
    CHECK_EQ(tp_chan_is_handshake(init.p, 0), 0);

    /* Seeded garbage. */
    struct sm_rng rng;
    sm_rng_seed(&rng, check_seed());
    for (int i = 0; i < 2000; i++) {
        uint8_t junk[300];
        size_t n = sm_rng_below(&rng, sizeof junk);
        for (size_t j = 0; j < n; j++) {
            junk[j] = (uint8_t)sm_rng_below(&rng, 256);
        }
        if (n > 1 && i % 2) {
            junk[0] = (uint8_t)(1 + i % 4);
            junk[1] = TP_CHAN_VERSION;
        }
        CHECK(tp_chan_open(b, junk, n, &out, &res) != SM_OK);
        CHECK(tp_chan_handshake_accept(b, junk, n, &out, &res) != SM_OK);
    }
    CHECK_EQ(out.len, 0);
    tp_buf_free(&out);

    /* Still working: the confirmation and the data go through. */
    struct frame r = hs(b, &confirm, SM_OK, TP_CHAN_OK, NULL);
    drop(&r);
    open_f(b, &data, SM_OK, TP_CHAN_OK, "payload");
    talk(a, "alice", b, "bob", "survived");

    drop(&init);
    drop(&reply);
    drop(&init2);
    drop(&reply2);
    drop(&confirm);
    drop(&data);
    tp_chan_free(a);
    tp_chan_free(b);
}

static void test_reasons(void)
{
    for (int r = 0; r < TP_CHAN_NREASONS; r++) {
        CHECK(strcmp(tp_chan_reason_name(r), "unknown") != 0);
        CHECK(strcmp(tp_chan_reason_str(r), "unknown reason") != 0);
        for (int s = 0; s < r; s++) {
            CHECK(strcmp(tp_chan_reason_name(r), tp_chan_reason_name(s)) != 0);
        }
    }
    CHECK_STR(tp_chan_reason_name(-1), "unknown");
    CHECK_STR(tp_chan_reason_name(TP_CHAN_NREASONS), "unknown");
    CHECK_STR(tp_chan_reason_str(TP_CHAN_NREASONS), "unknown reason");
    CHECK_STR(tp_chan_reason_name(TP_CHAN_REPLAY), "replay");
}

/* Every allocation failure is SM_ENOMEM with nothing changed; the fault
 * heap checks that nothing leaks. */
static void test_out_of_memory(void)
{
    int failures = 0;
    for (int k = 0; k < 40; k++) {
        check_heap_install();
        check_heap_fault(k, 1);
        struct tp_chan *a = NULL, *b = NULL;
        struct tp_buf f1 = {0}, f2 = {0}, f3 = {0};
        struct tp_buf f4 = {0}, plain = {0};
        struct tp_chan_result res;
        int hit = 0;
        int rv = tp_chan_new(&cluster, "alice", &a);
        if (rv == SM_OK) {
            rv = tp_chan_new(&cluster, "bob", &b);
        }
        if (rv == SM_OK) {
            rv = tp_chan_handshake_make(a, "bob", &f1);
            CHECK(rv == SM_OK || f1.len == 0);
        }
        if (rv == SM_OK) {
            rv = tp_chan_handshake_accept(b, f1.data, f1.len, &f2, &res);
            if (rv != SM_OK) {
                CHECK_EQ(tp_chan_has_session(b, "alice"), 0);
            }
        }
        if (rv == SM_OK) {
            rv = tp_chan_handshake_accept(a, f2.data, f2.len, &f3, &res);
            if (rv == SM_ENOMEM) {
                CHECK_EQ(tp_chan_has_session(a, "bob"), 0);
                /* The reply still completes the handshake later. */
                hit = 1;
                REQUIRE_OK(
                    tp_chan_handshake_accept(a, f2.data, f2.len, &f3, &res));
                rv = SM_OK;
            }
        }
        if (rv == SM_OK) {
            rv = tp_chan_seal(a, "bob", TP_MSG_RAFT, "abc", 3, &f4);
        }
        if (rv == SM_OK) {
            rv = tp_chan_open(b, f4.data, f4.len, &plain, &res);
            if (rv == SM_ENOMEM) {
                /* Not consumed: the same frame opens once memory returns. */
                hit = 1;
                REQUIRE_OK(tp_chan_open(b, f4.data, f4.len, &plain, &res));
                CHECK_EQ(res.len, 3);
                rv = SM_OK;
            }
        }
        CHECK(rv == SM_OK || rv == SM_ENOMEM);
        hit |= rv == SM_ENOMEM;
        failures += hit;
        tp_buf_free(&f1);
        tp_buf_free(&f2);
        tp_buf_free(&f3);
        tp_buf_free(&f4);
        tp_buf_free(&plain);
        tp_chan_free(a);
        tp_chan_free(b);
        check_heap_uninstall();
        if (!hit) {
            break; /* k is past the last allocation */
        }
    }
    /* Each allocation of the sequence failed once, in turn. */
    CHECK(failures >= 8);
}

static void test_many_peers(void)
{
    struct tp_chan *hub = mk(&cluster, "hub");
    struct tp_buf out = {0};
    char id[16];
    for (int i = 0; i < TP_CHAN_MAX_PEERS; i++) {
        snprintf(id, sizeof id, "p%d", i);
        out.len = 0;
        REQUIRE_OK(tp_chan_handshake_make(hub, id, &out));
    }
    out.len = 0;
    CHECK_EQ(tp_chan_handshake_make(hub, "one-more", &out), SM_ETOOBIG);
    CHECK_EQ(out.len, 0);
    struct tp_chan *late = mk(&cluster, "late");
    struct frame init = make_init(late, "hub");
    struct frame r = hs(hub, &init, SM_EAUTH, TP_CHAN_TOO_MANY_PEERS, NULL);
    drop(&r);
    tp_chan_forget(hub, "p7");
    r = hs(hub, &init, SM_OK, TP_CHAN_OK, NULL);
    CHECK(r.n > 0);
    drop(&r);
    drop(&init);
    tp_buf_free(&out);
    tp_chan_free(hub);
    tp_chan_free(late);
}

static const struct check_test tests[] = {
    {"two peers with the same secret talk", test_talk},
    {"a different secret is refused at the handshake", test_wrong_secret},
    {"tampered ciphertext and associated data", test_tampering},
    {"replay, reordering within the window, too old", test_replay_and_window},
    {"random delivery order against the window", test_window_random},
    {"unknown sender, misaddressed, stale session",
     test_unknown_and_misaddressed},
    {"initiator restart: new keys, old session refused", test_restart},
    {"responder restart", test_responder_restart},
    {"replayed handshake frames", test_handshake_replay},
    {"lost confirmation", test_lost_confirm},
    {"simultaneous handshakes", test_collision},
    {"admission callback", test_admission},
    {"low-order key, documented MAC, addressing", test_bad_key},
    {"truncated, flipped and random frames", test_hostile_frames},
    {"reason names", test_reasons},
    {"out of memory", test_out_of_memory},
    {"peer table limit", test_many_peers},
};

CHECK_MAIN(tests, setup, NULL)
