/* Fuzz target: the secure channel's receiving side.
 *
 * The first byte picks a mode:
 *   0  the rest, as raw bytes, to both entry points of both peers;
 *   1  edits (flip, truncate, append) of a real INIT, REPLY, CONFIRM or
 *      DATA frame: an edited frame is always refused, and refusing it
 *      changes nothing (the real frame is accepted afterwards);
 *   2  a script of seals, deliveries in any order, replies and rekeys,
 *      checked against a model of the replay window.
 * Keys are random for each input; the outcomes are not. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "transport/transport.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct tp_secret secret;

static void init_once(void)
{
    static int done;
    if (!done) {
        SM_ASSERT(tp_init() == SM_OK);
        memset(secret.key, 0x42, sizeof secret.key);
        done = 1;
    }
}

static struct tp_chan *chan(const char *id)
{
    struct tp_chan *c = NULL;
    SM_ASSERT(tp_chan_new(&secret, id, &c) == SM_OK);
    return c;
}

/* Gives @f to @c's handshake entry point, expecting @want, and leaves the
 * answer (if any) in @out. */
static void hs(struct tp_chan *c, const struct tp_buf *f, struct tp_buf *out)
{
    struct tp_chan_result res;
    out->len = 0;
    SM_ASSERT(tp_chan_handshake_accept(c, f->data, f->len, out, &res) == SM_OK);
}

/* A full handshake, @i initiating to @r_id. */
static void connect(struct tp_chan *i, struct tp_chan *r, const char *r_id)
{
    struct tp_buf f1 = {0}, f2 = {0}, f3 = {0};
    struct tp_buf none = {0};
    SM_ASSERT(tp_chan_handshake_make(i, r_id, &f1) == SM_OK);
    hs(r, &f1, &f2);
    hs(i, &f2, &f3);
    hs(r, &f3, &none);
    SM_ASSERT(none.len == 0);
    tp_buf_free(&f1);
    tp_buf_free(&f2);
    tp_buf_free(&f3);
    tp_buf_free(&none);
}

static int known_rv(int rv)
{
    return rv == SM_OK || rv == SM_EMALFORMED || rv == SM_EUNSUPPORTED ||
           rv == SM_EAUTH;
}

/* Checks that a→b still works. */
static void still_works(struct tp_chan *a, struct tp_chan *b)
{
    struct tp_buf f = {0}, out = {0};
    struct tp_chan_result res;
    SM_ASSERT(tp_chan_seal(a, "bob", TP_MSG_ACK, "ok", 2, &f) == SM_OK);
    SM_ASSERT(tp_chan_open(b, f.data, f.len, &out, &res) == SM_OK);
    SM_ASSERT(res.len == 2 && memcmp(res.data, "ok", 2) == 0);
    tp_buf_free(&f);
    tp_buf_free(&out);
}

static void raw(const uint8_t *p, size_t n)
{
    struct tp_chan *a = chan("alice"), *b = chan("bob");
    connect(a, b, "bob");
    struct tp_chan *targets[] = {a, b};
    for (int t = 0; t < 2; t++) {
        struct tp_buf out = {0};
        struct tp_chan_result res;
        int rv = tp_chan_handshake_accept(targets[t], p, n, &out, &res);
        SM_ASSERT(known_rv(rv));
        SM_ASSERT(rv == SM_OK ? res.reason == TP_CHAN_OK
                              : res.reason != TP_CHAN_OK && out.len == 0);
        out.len = 0;
        rv = tp_chan_open(targets[t], p, n, &out, &res);
        SM_ASSERT(known_rv(rv));
        SM_ASSERT(rv == SM_OK ? res.reason == TP_CHAN_OK && res.len == out.len
                              : res.reason != TP_CHAN_OK && out.len == 0);
        tp_buf_free(&out);
    }
    still_works(a, b);
    tp_chan_free(a);
    tp_chan_free(b);
}

static void mutate(const uint8_t *p, size_t n)
{
    struct tp_chan *a = chan("alice"), *b = chan("bob"), *c = chan("carol");
    connect(a, b, "bob");
    struct tp_buf init = {0}, reply = {0};
    struct tp_buf confirm = {0}, data = {0};
    SM_ASSERT(tp_chan_handshake_make(c, "bob", &init) == SM_OK);
    hs(b, &init, &reply);
    SM_ASSERT(tp_chan_seal(a, "bob", TP_MSG_SPANS, "spans", 5, &data) == SM_OK);
    /* Carol's REPLY is kept for later; she confirms with it now only in
     * the CONFIRM case, since accepting it consumes her handshake. */
    int which = n > 0 ? p[0] % 4 : 0;
    if (which == 2) {
        hs(c, &reply, &confirm);
    }
    struct tp_buf *orig = which == 0   ? &init
                          : which == 1 ? &reply
                          : which == 2 ? &confirm
                                       : &data;
    struct tp_chan *to = which == 1 ? c : b;
    if (which == 0) {
        /* Bob already answered this INIT; a fresh one for the test. */
        init.len = 0;
        SM_ASSERT(tp_chan_handshake_make(c, "bob", &init) == SM_OK);
    }

    struct tp_buf f = {0};
    SM_ASSERT(tp_buf_reserve(&f, orig->len + n) == SM_OK);
    memcpy(f.data, orig->data, orig->len);
    f.len = orig->len;
    for (size_t i = 1; i + 2 < n; i += 3) {
        uint8_t op = p[i], pos = p[i + 1], val = p[i + 2];
        if (op % 3 == 0 && f.len > 0) {
            f.data[pos % f.len] ^= val;
        } else if (op % 3 == 1) {
            f.len = f.len > 0 ? pos % f.len : 0;
        } else {
            f.data[f.len++] = val;
        }
    }
    int changed = f.len != orig->len || memcmp(f.data, orig->data, f.len);
    struct tp_buf out = {0};
    struct tp_chan_result res;
    int rv = which == 3
                 ? tp_chan_open(to, f.data, f.len, &out, &res)
                 : tp_chan_handshake_accept(to, f.data, f.len, &out, &res);
    SM_ASSERT(known_rv(rv));
    if (changed) {
        SM_ASSERT(rv != SM_OK && out.len == 0);
        /* Nothing changed: the real frame is accepted. */
        rv = which == 3 ? tp_chan_open(to, orig->data, orig->len, &out, &res)
                        : tp_chan_handshake_accept(to, orig->data, orig->len,
                                                   &out, &res);
        SM_ASSERT(rv == SM_OK);
    } else {
        SM_ASSERT(rv == SM_OK);
    }
    still_works(a, b);
    tp_buf_free(&f);
    tp_buf_free(&out);
    tp_buf_free(&init);
    tp_buf_free(&reply);
    tp_buf_free(&confirm);
    tp_buf_free(&data);
    tp_chan_free(a);
    tp_chan_free(b);
    tp_chan_free(c);
}

#define MAX_MSGS 256

struct msg
{
    struct tp_buf frame;
    uint64_t seq;
    int epoch;
    int accepted;
};

static void script(const uint8_t *p, size_t n)
{
    struct tp_chan *a = chan("alice"), *b = chan("bob");
    connect(a, b, "bob");
    static struct msg m[MAX_MSGS];
    size_t count = 0;
    int epoch = 0;
    uint64_t next_seq = 1, top = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t op = p[i];
        if (op % 4 == 0 && count < MAX_MSGS) {
            struct msg *x = &m[count++];
            memset(x, 0, sizeof *x);
            x->seq = next_seq++;
            x->epoch = epoch;
            uint8_t text[8];
            memcpy(text, &x->seq, 8);
            SM_ASSERT(tp_chan_seal(a, "bob", TP_MSG_RAFT, text, 8, &x->frame) ==
                      SM_OK);
        } else if (op % 4 == 1 && count > 0) {
            struct msg *x = &m[(op >> 2) % count];
            struct tp_buf out = {0};
            struct tp_chan_result res;
            int rv = tp_chan_open(b, x->frame.data, x->frame.len, &out, &res);
            if (x->epoch != epoch) {
                SM_ASSERT(rv == SM_EAUTH &&
                          res.reason == TP_CHAN_STALE_SESSION);
            } else if (x->accepted) {
                SM_ASSERT(rv == SM_EAUTH && (res.reason == TP_CHAN_REPLAY ||
                                             res.reason == TP_CHAN_TOO_OLD));
            } else if (x->seq + TP_CHAN_WINDOW <= top) {
                SM_ASSERT(rv == SM_EAUTH && res.reason == TP_CHAN_TOO_OLD);
            } else {
                SM_ASSERT(rv == SM_OK && res.seq == x->seq && res.len == 8 &&
                          memcmp(res.data, &x->seq, 8) == 0);
                x->accepted = 1;
                if (x->seq > top) {
                    top = x->seq;
                }
            }
            tp_buf_free(&out);
        } else if (op % 4 == 2) {
            struct tp_buf f = {0}, out = {0};
            struct tp_chan_result res;
            SM_ASSERT(tp_chan_seal(b, "alice", TP_MSG_ACK, "a", 1, &f) ==
                      SM_OK);
            SM_ASSERT(tp_chan_open(a, f.data, f.len, &out, &res) == SM_OK);
            tp_buf_free(&f);
            tp_buf_free(&out);
        } else if (op % 4 == 3 && (op >> 2) % 8 == 0) {
            /* Rekey; alternately from either side. */
            if ((op >> 5) & 1) {
                connect(a, b, "bob");
            } else {
                connect(b, a, "alice");
            }
            epoch++;
            next_seq = 1;
            top = 0;
        }
    }
    for (size_t i = 0; i < count; i++) {
        tp_buf_free(&m[i].frame);
    }
    still_works(a, b);
    tp_chan_free(a);
    tp_chan_free(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    init_once();
    if (size == 0) {
        return 0;
    }
    switch (data[0] % 3) {
        case 0:
            raw(data + 1, size - 1);
            break;
        case 1:
            mutate(data + 1, size - 1);
            break;
        default:
            script(data + 1, size - 1);
            break;
    }
    return 0;
}
