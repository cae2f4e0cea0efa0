/* The secure channel: handshakes, per-peer session keys, sealing, replay.
 *
 * The protocol is described in transport.h ("Secure channel"); this is how
 * the state is kept.
 *
 * Per peer there are at most three things in flight:
 *  - our own handshake (@initiating): the ephemeral key pair, our nonce and
 *    the INIT frame exactly as sent (the transcript hash needs it, and a
 *    handshake collision sends it again);
 *  - the current session (@cur), used to seal and to open;
 *  - a session answering the peer's INIT (@next), waiting for the peer to
 *    prove it holds the other half of the key exchange. It opens frames
 *    (the first valid one promotes it to @cur) but seals only when there is
 *    no @cur, so a replayed INIT cannot take over a working session. The
 *    REPLY that made it is kept, to answer a duplicate INIT identically.
 *
 * Each session remembers the initiator nonce of its handshake, which is how
 * a replayed INIT or REPLY of a completed handshake is recognised.
 *
 * Rejections never change state: a frame is parsed, authenticated and
 * checked against the replay window first, and only then is anything
 * committed (window bits, promotion). Memory for the output is reserved
 * before committing too, so SM_ENOMEM leaves the channel as it was. The only
 * allocations are the peer table and the peer entries, created by our own
 * tp_chan_handshake_make() or by an INIT whose MAC checked out, so bytes
 * from someone without the cluster secret never create peer state (they
 * can only make the output buffer grow to the size of the frame).
 *
 * Data frames open on the receiver's rx key of the session named by the
 * frame's session id; the AEAD nonce is the sequence number, unique per key
 * because keys are fresh per handshake and sequence numbers only grow. */
#include <sodium.h>
#include <string.h>

#include "base/alloc.h"
#include "base/err.h"
#include "transport/transport.h"

#define KDF_CONTEXT "smchan01"
#define KDF_ID      1

enum kind { K_INIT = 1, K_REPLY = 2, K_CONFIRM = 3, K_DATA = 4 };

#define NONCE_SIZE 16
#define SID_SIZE   8
#define PK_SIZE    crypto_kx_PUBLICKEYBYTES
#define SK_SIZE    crypto_kx_SECRETKEYBYTES
#define KEY_SIZE   crypto_aead_xchacha20poly1305_ietf_KEYBYTES
#define MAC_SIZE   crypto_auth_BYTES
#define TAG_SIZE   crypto_aead_xchacha20poly1305_ietf_ABYTES
#define HDR_MAX    (2 + 2 * (1 + TP_PEER_ID_MAX))
#define INIT_MAX   (HDR_MAX + PK_SIZE + NONCE_SIZE + MAC_SIZE)
#define REPLY_MAX  (HDR_MAX + PK_SIZE + 2 * NONCE_SIZE + MAC_SIZE)
/* After the ids of a sealed frame: type, session id, sequence number. */
#define SEALED_FIXED (1 + SID_SIZE + 8)

struct session
{
    int live;
    uint8_t sid[SID_SIZE];
    uint8_t tx[KEY_SIZE];
    uint8_t rx[KEY_SIZE];
    uint64_t tx_seq;             /* the next sequence number to seal */
    uint64_t rx_top;             /* the highest sequence number accepted */
    uint64_t rx_bits;            /* bit i: rx_top - i was accepted */
    uint8_t nonce_i[NONCE_SIZE]; /* the initiator's nonce of the handshake */
};

struct peer
{
    char id[TP_PEER_ID_MAX + 1];
    size_t id_len;

    int initiating;
    uint8_t eph_sk[SK_SIZE];
    uint8_t eph_pk[PK_SIZE];
    uint8_t nonce_i[NONCE_SIZE];
    uint8_t init_frame[INIT_MAX];
    size_t init_len;

    struct session cur;
    struct session next;
    uint8_t reply_frame[REPLY_MAX];
    size_t reply_len;
};

struct tp_chan
{
    uint8_t k_hs[crypto_auth_KEYBYTES];
    char id[TP_PEER_ID_MAX + 1];
    size_t id_len;
    tp_chan_admit_cb admit;
    void *admit_arg;
    struct peer **peers;
    size_t n_peers;
    size_t cap_peers;
    struct tp_chan_stats stats;
};

/* ---- reasons ------------------------------------------------------------- */

static const struct
{
    const char *name;
    const char *str;
} reasons[TP_CHAN_NREASONS] = {
    [TP_CHAN_OK] = {"ok", "accepted"},
    [TP_CHAN_MALFORMED] = {"malformed", "malformed frame"},
    [TP_CHAN_BAD_VERSION] = {"version", "unknown channel version"},
    [TP_CHAN_NOT_FOR_ME] = {"not_for_me",
                            "frame addressed to another peer or from my id"},
    [TP_CHAN_BAD_HELLO] = {"bad_hello",
                           "handshake not authenticated: wrong cluster "
                           "secret or tampered"},
    [TP_CHAN_BAD_KEY] = {"bad_key", "handshake with an invalid public key"},
    [TP_CHAN_DENIED] = {"denied", "peer not admitted"},
    [TP_CHAN_TOO_MANY_PEERS] = {"too_many_peers", "peer table full"},
    [TP_CHAN_UNEXPECTED] = {"unexpected",
                            "handshake reply matching no handshake in "
                            "progress"},
    [TP_CHAN_HELLO_REPLAY] = {"hello_replay",
                              "replayed frame of a completed handshake"},
    [TP_CHAN_UNKNOWN_PEER] = {"unknown_peer",
                              "sealed frame from a peer without a session"},
    [TP_CHAN_STALE_SESSION] = {"stale_session",
                               "sealed frame of a replaced or unknown "
                               "session"},
    [TP_CHAN_BAD_MAC] = {"bad_mac",
                         "sealed frame failed authentication: tampered or "
                         "forged"},
    [TP_CHAN_REPLAY] = {"replay", "sequence number already received (replay)"},
    [TP_CHAN_TOO_OLD] = {"too_old", "sequence number behind the replay window"},
};

const char *tp_chan_reason_name(int reason)
{
    if (reason < 0 || reason >= TP_CHAN_NREASONS) {
        return "unknown";
    }
    return reasons[reason].name;
}

const char *tp_chan_reason_str(int reason)
{
    if (reason < 0 || reason >= TP_CHAN_NREASONS) {
        return "unknown reason";
    }
    return reasons[reason].str;
}

static int reject(struct tp_chan *chan, struct tp_chan_result *res, int reason)
{
    chan->stats.rejected[reason]++;
    res->reason = reason;
    switch (reason) {
        case TP_CHAN_MALFORMED:
            return SM_EMALFORMED;
        case TP_CHAN_BAD_VERSION:
            return SM_EUNSUPPORTED;
        default:
            return SM_EAUTH;
    }
}

/* ---- little helpers ------------------------------------------------------ */

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static uint64_t get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) {
        v = v << 8 | p[i];
    }
    return v;
}

/* Orders peer ids bytewise, a prefix first. */
static int id_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
    int c = memcmp(a, b, alen < blen ? alen : blen);
    if (c != 0) {
        return c;
    }
    return alen < blen ? -1 : alen > blen;
}

static int id_eq(const char *a, size_t alen, const void *b, size_t blen)
{
    return alen == blen && memcmp(a, b, alen) == 0;
}

static void session_wipe(struct session *s)
{
    sodium_memzero(s, sizeof *s);
}

static void initiation_wipe(struct peer *p)
{
    p->initiating = 0;
    sodium_memzero(p->eph_sk, sizeof p->eph_sk);
    sodium_memzero(p->eph_pk, sizeof p->eph_pk);
    sodium_memzero(p->nonce_i, sizeof p->nonce_i);
    p->init_len = 0;
}

/* ---- the peer table ------------------------------------------------------ */

static struct peer *peer_find(const struct tp_chan *chan,
                              const void *id,
                              size_t len)
{
    for (size_t i = 0; i < chan->n_peers; i++) {
        struct peer *p = chan->peers[i];
        if (id_eq(p->id, p->id_len, id, len)) {
            return p;
        }
    }
    return NULL;
}

/* Finds or adds peer @id (valid, not ours). SM_ETOOBIG when full. */
static int peer_get(struct tp_chan *chan,
                    const void *id,
                    size_t len,
                    struct peer **out)
{
    struct peer *p = peer_find(chan, id, len);
    if (p != NULL) {
        *out = p;
        return SM_OK;
    }
    if (chan->n_peers >= TP_CHAN_MAX_PEERS) {
        return SM_ETOOBIG;
    }
    if (chan->n_peers == chan->cap_peers) {
        size_t cap = chan->cap_peers == 0 ? 8 : 2 * chan->cap_peers;
        struct peer **v = sm_reallocarray(chan->peers, cap, sizeof *v);
        if (v == NULL) {
            return SM_ENOMEM;
        }
        chan->peers = v;
        chan->cap_peers = cap;
    }
    p = sm_calloc(1, sizeof *p);
    if (p == NULL) {
        return SM_ENOMEM;
    }
    memcpy(p->id, id, len);
    p->id[len] = '\0';
    p->id_len = len;
    chan->peers[chan->n_peers++] = p;
    *out = p;
    return SM_OK;
}

static void peer_free(struct peer *p)
{
    sodium_memzero(p, sizeof *p);
    sm_free(p);
}

/* ---- lifecycle ----------------------------------------------------------- */

int tp_chan_new(const struct tp_secret *secret,
                const char *my_id,
                struct tp_chan **out)
{
    size_t len = my_id != NULL ? strlen(my_id) : 0;
    if (!tp_peer_id_valid(my_id, len)) {
        return SM_EINVAL;
    }
    struct tp_chan *chan = sm_calloc(1, sizeof *chan);
    if (chan == NULL) {
        return SM_ENOMEM;
    }
    crypto_kdf_derive_from_key(chan->k_hs, sizeof chan->k_hs, KDF_ID,
                               KDF_CONTEXT, secret->key);
    memcpy(chan->id, my_id, len + 1);
    chan->id_len = len;
    *out = chan;
    return SM_OK;
}

void tp_chan_free(struct tp_chan *chan)
{
    if (chan == NULL) {
        return;
    }
    for (size_t i = 0; i < chan->n_peers; i++) {
        peer_free(chan->peers[i]);
    }
    sm_free(chan->peers);
    sodium_memzero(chan, sizeof *chan);
    sm_free(chan);
}

void tp_chan_set_admit(struct tp_chan *chan, tp_chan_admit_cb cb, void *arg)
{
    chan->admit = cb;
    chan->admit_arg = arg;
}

void tp_chan_forget(struct tp_chan *chan, const char *peer)
{
    for (size_t i = 0; i < chan->n_peers; i++) {
        struct peer *p = chan->peers[i];
        if (id_eq(p->id, p->id_len, peer, strlen(peer))) {
            peer_free(p);
            chan->peers[i] = chan->peers[--chan->n_peers];
            return;
        }
    }
}

int tp_chan_has_session(const struct tp_chan *chan, const char *peer)
{
    const struct peer *p = peer_find(chan, peer, strlen(peer));
    return p != NULL && (p->cur.live || p->next.live);
}

void tp_chan_stats(const struct tp_chan *chan, struct tp_chan_stats *stats)
{
    *stats = chan->stats;
}

/* ---- frames -------------------------------------------------------------- */

/* Writes kind, version and the two ids; returns the bytes written. */
static size_t put_hdr(uint8_t *p,
                      enum kind kind,
                      const char *from,
                      size_t from_len,
                      const char *to,
                      size_t to_len)
{
    size_t n = 0;
    p[n++] = (uint8_t)kind;
    p[n++] = TP_CHAN_VERSION;
    p[n++] = (uint8_t)from_len;
    memcpy(p + n, from, from_len);
    n += from_len;
    p[n++] = (uint8_t)to_len;
    memcpy(p + n, to, to_len);
    n += to_len;
    return n;
}

/* The parsed common header of a frame. */
struct hdr
{
    enum kind kind;
    const uint8_t *from;
    size_t from_len;
    const uint8_t *to;
    size_t to_len;
    size_t end; /* offset of what follows the ids */
};

/* Parses the header of @len bytes at @p; returns a reason. */
static int parse_hdr(const uint8_t *p, size_t len, struct hdr *h)
{
    if (len < 2 || p[0] < K_INIT || p[0] > K_DATA) {
        return TP_CHAN_MALFORMED;
    }
    if (p[1] != TP_CHAN_VERSION) {
        return TP_CHAN_BAD_VERSION;
    }
    h->kind = (enum kind)p[0];
    size_t off = 2;
    if (off >= len || p[off] > len - off - 1) {
        return TP_CHAN_MALFORMED;
    }
    h->from_len = p[off];
    h->from = p + off + 1;
    off += 1 + h->from_len;
    if (off >= len || p[off] > len - off - 1) {
        return TP_CHAN_MALFORMED;
    }
    h->to_len = p[off];
    h->to = p + off + 1;
    off += 1 + h->to_len;
    if (!tp_peer_id_valid((const char *)h->from, h->from_len) ||
        !tp_peer_id_valid((const char *)h->to, h->to_len)) {
        return TP_CHAN_MALFORMED;
    }
    h->end = off;
    return TP_CHAN_OK;
}

/* Whether @h is addressed to us by someone else. */
static int for_me(const struct tp_chan *chan, const struct hdr *h)
{
    return id_eq(chan->id, chan->id_len, h->to, h->to_len) &&
           !id_eq(chan->id, chan->id_len, h->from, h->from_len);
}

/* ---- session keys -------------------------------------------------------- */

/* Derives @s's keys from the crypto_kx keys of the handshake and its
 * transcript. @i2r and @r2i are the client's tx and rx keys; @initiator
 * says which side we are. */
static void session_derive(const struct tp_chan *chan,
                           struct session *s,
                           int initiator,
                           const uint8_t i2r[crypto_kx_SESSIONKEYBYTES],
                           const uint8_t r2i[crypto_kx_SESSIONKEYBYTES],
                           const uint8_t *init,
                           size_t init_len,
                           const uint8_t *reply,
                           size_t reply_len,
                           const uint8_t nonce_i[NONCE_SIZE])
{
    uint8_t th[32];
    crypto_generichash_state st;
    crypto_generichash_init(&st, chan->k_hs, sizeof chan->k_hs, sizeof th);
    crypto_generichash_update(&st, init, init_len);
    crypto_generichash_update(&st, reply, reply_len);
    crypto_generichash_final(&st, th, sizeof th);

    uint8_t k_i2r[KEY_SIZE], k_r2i[KEY_SIZE];
    uint8_t msg[3 + sizeof th];
    memcpy(msg + 3, th, sizeof th);
    memcpy(msg, "i2r", 3);
    crypto_generichash(k_i2r, sizeof k_i2r, msg, sizeof msg, i2r,
                       crypto_kx_SESSIONKEYBYTES);
    memcpy(msg, "r2i", 3);
    crypto_generichash(k_r2i, sizeof k_r2i, msg, sizeof msg, r2i,
                       crypto_kx_SESSIONKEYBYTES);

    session_wipe(s);
    s->live = 1;
    memcpy(s->sid, th, SID_SIZE);
    memcpy(s->tx, initiator ? k_i2r : k_r2i, KEY_SIZE);
    memcpy(s->rx, initiator ? k_r2i : k_i2r, KEY_SIZE);
    s->tx_seq = 1; /* 0 is the initiator's CONFIRM */
    memcpy(s->nonce_i, nonce_i, NONCE_SIZE);
    sodium_memzero(&st, sizeof st);
    sodium_memzero(k_i2r, sizeof k_i2r);
    sodium_memzero(k_r2i, sizeof k_r2i);
}

/* ---- sealing ------------------------------------------------------------- */

static void aead_nonce(uint8_t n[crypto_aead_xchacha20poly1305_ietf_NPUBBYTES],
                       uint64_t seq)
{
    memset(n, 0, crypto_aead_xchacha20poly1305_ietf_NPUBBYTES);
    put_u64(n, seq);
}

static size_t sealed_size(const struct tp_chan *chan,
                          const struct peer *p,
                          size_t len)
{
    return 4 + chan->id_len + p->id_len + SEALED_FIXED + len + TAG_SIZE;
}

/* Writes a sealed frame (DATA or CONFIRM) of @len bytes at @plain into @out
 * (room reserved by the caller); returns its size. */
static size_t seal_into(const struct tp_chan *chan,
                        const struct peer *p,
                        const struct session *s,
                        enum kind kind,
                        uint8_t type,
                        uint64_t seq,
                        const void *plain,
                        size_t len,
                        uint8_t *out)
{
    size_t n = put_hdr(out, kind, chan->id, chan->id_len, p->id, p->id_len);
    out[n++] = type;
    memcpy(out + n, s->sid, SID_SIZE);
    n += SID_SIZE;
    put_u64(out + n, seq);
    n += 8;
    uint8_t nonce[crypto_aead_xchacha20poly1305_ietf_NPUBBYTES];
    aead_nonce(nonce, seq);
    unsigned long long clen = 0;
    crypto_aead_xchacha20poly1305_ietf_encrypt(out + n, &clen, plain, len, out,
                                               n, NULL, nonce, s->tx);
    return n + (size_t)clen;
}

int tp_chan_seal(struct tp_chan *chan,
                 const char *peer,
                 int type,
                 const void *plain,
                 size_t len,
                 struct tp_buf *out)
{
    if (type < 1 || type > 255 || (plain == NULL && len > 0)) {
        return SM_EINVAL;
    }
    struct peer *p = peer_find(chan, peer, strlen(peer));
    if (p == NULL) {
        return SM_ENOTFOUND;
    }
    struct session *s = p->cur.live ? &p->cur : p->next.live ? &p->next : NULL;
    if (s == NULL) {
        return SM_ENOTFOUND;
    }
    if (s->tx_seq == UINT64_MAX) {
        return SM_ERANGE;
    }
    if (len > SIZE_MAX - sealed_size(chan, p, 0)) {
        return SM_ETOOBIG;
    }
    size_t need = sealed_size(chan, p, len);
    int rv = tp_buf_reserve(out, need);
    if (rv != SM_OK) {
        return rv;
    }
    size_t n = seal_into(chan, p, s, K_DATA, (uint8_t)type, s->tx_seq, plain,
                         len, out->data + out->len);
    SM_ASSERT(n == need);
    out->len += n;
    s->tx_seq++;
    chan->stats.sealed++;
    return SM_OK;
}

/* ---- opening ------------------------------------------------------------- */

/* Replay window check of @seq against @s, without changing it. */
static int window_check(const struct session *s, uint64_t seq)
{
    if (seq > s->rx_top) {
        return TP_CHAN_OK;
    }
    uint64_t back = s->rx_top - seq;
    if (back >= TP_CHAN_WINDOW) {
        return TP_CHAN_TOO_OLD;
    }
    return (s->rx_bits >> back) & 1 ? TP_CHAN_REPLAY : TP_CHAN_OK;
}

static void window_mark(struct session *s, uint64_t seq)
{
    if (seq > s->rx_top) {
        uint64_t shift = seq - s->rx_top;
        s->rx_bits = shift >= 64 ? 0 : s->rx_bits << shift;
        s->rx_bits |= 1;
        s->rx_top = seq;
    } else {
        s->rx_bits |= (uint64_t)1 << (s->rx_top - seq);
    }
}

/* Opens a CONFIRM or DATA frame. For DATA the plaintext is appended to
 * @out; a CONFIRM has none (@out may be NULL). */
static int open_sealed(struct tp_chan *chan,
                       const uint8_t *f,
                       size_t len,
                       enum kind want,
                       struct tp_buf *out,
                       struct tp_chan_result *res)
{
    struct hdr h;
    int reason = parse_hdr(f, len, &h);
    if (reason != TP_CHAN_OK) {
        return reject(chan, res, reason);
    }
    if (h.kind != want || len - h.end < SEALED_FIXED + TAG_SIZE) {
        return reject(chan, res, TP_CHAN_MALFORMED);
    }
    uint8_t type = f[h.end];
    const uint8_t *sid = f + h.end + 1;
    uint64_t seq = get_u64(f + h.end + 1 + SID_SIZE);
    size_t ad_len = h.end + SEALED_FIXED;
    size_t clen = len - ad_len;
    if (want == K_CONFIRM ? (type != 0 || seq != 0 || clen != TAG_SIZE)
                          : (type == 0 || seq == 0)) {
        return reject(chan, res, TP_CHAN_MALFORMED);
    }
    if (!for_me(chan, &h)) {
        return reject(chan, res, TP_CHAN_NOT_FOR_ME);
    }
    struct peer *p = peer_find(chan, h.from, h.from_len);
    if (p == NULL || (!p->cur.live && !p->next.live)) {
        return reject(chan, res, TP_CHAN_UNKNOWN_PEER);
    }
    res->peer = p->id;
    struct session *s = NULL;
    if (p->cur.live && sodium_memcmp(p->cur.sid, sid, SID_SIZE) == 0) {
        s = &p->cur;
    } else if (p->next.live && sodium_memcmp(p->next.sid, sid, SID_SIZE) == 0) {
        s = &p->next;
    } else {
        return reject(chan, res, TP_CHAN_STALE_SESSION);
    }

    /* Authenticate first, so that only authentic frames count as replays;
     * the plaintext is not committed to @out until the window agrees. */
    size_t plen = clen - TAG_SIZE;
    uint8_t dummy[1];
    uint8_t *dst = dummy;
    if (plen > 0) {
        int rv = tp_buf_reserve(out, plen);
        if (rv != SM_OK) {
            return rv;
        }
        dst = out->data + out->len;
    }
    uint8_t nonce[crypto_aead_xchacha20poly1305_ietf_NPUBBYTES];
    aead_nonce(nonce, seq);
    unsigned long long mlen = 0;
    if (crypto_aead_xchacha20poly1305_ietf_decrypt(
            dst, &mlen, NULL, f + ad_len, clen, f, ad_len, nonce, s->rx) != 0) {
        if (plen > 0) {
            sodium_memzero(dst, plen);
        }
        return reject(chan, res, TP_CHAN_BAD_MAC);
    }
    SM_ASSERT(mlen == plen);
    reason = window_check(s, seq);
    if (reason != TP_CHAN_OK) {
        if (plen > 0) {
            sodium_memzero(dst, plen);
        }
        return reject(chan, res, reason);
    }

    /* Authentic and fresh: commit. */
    window_mark(s, seq);
    if (s == &p->next) {
        session_wipe(&p->cur);
        p->cur = p->next;
        session_wipe(&p->next);
        p->reply_len = 0;
        initiation_wipe(p);
        chan->stats.sessions++;
        res->established = 1;
    }
    res->type = type;
    res->seq = seq;
    if (want == K_DATA) {
        res->data = dst == dummy ? NULL : dst;
        res->len = plen;
        if (plen > 0) {
            out->len += plen;
        }
        chan->stats.opened++;
    }
    res->reason = TP_CHAN_OK;
    return SM_OK;
}

int tp_chan_open(struct tp_chan *chan,
                 const void *frame,
                 size_t len,
                 struct tp_buf *out,
                 struct tp_chan_result *res)
{
    memset(res, 0, sizeof *res);
    return open_sealed(chan, frame, len, K_DATA, out, res);
}

/* ---- handshakes ---------------------------------------------------------- */

int tp_chan_is_handshake(const void *frame, size_t len)
{
    const uint8_t *f = frame;
    return len >= 1 && f[0] >= K_INIT && f[0] <= K_CONFIRM;
}

int tp_chan_handshake_make(struct tp_chan *chan,
                           const char *peer,
                           struct tp_buf *out)
{
    size_t plen = peer != NULL ? strlen(peer) : 0;
    if (!tp_peer_id_valid(peer, plen) ||
        id_eq(chan->id, chan->id_len, peer, plen)) {
        return SM_EINVAL;
    }
    int rv = tp_buf_reserve(out, INIT_MAX);
    if (rv != SM_OK) {
        return rv;
    }
    struct peer *p;
    rv = peer_get(chan, peer, plen, &p);
    if (rv != SM_OK) {
        return rv;
    }
    initiation_wipe(p);
    crypto_kx_keypair(p->eph_pk, p->eph_sk);
    randombytes_buf(p->nonce_i, sizeof p->nonce_i);
    uint8_t *f = p->init_frame;
    size_t n = put_hdr(f, K_INIT, chan->id, chan->id_len, p->id, p->id_len);
    memcpy(f + n, p->eph_pk, PK_SIZE);
    n += PK_SIZE;
    memcpy(f + n, p->nonce_i, NONCE_SIZE);
    n += NONCE_SIZE;
    crypto_auth(f + n, f, n, chan->k_hs);
    n += MAC_SIZE;
    p->init_len = n;
    p->initiating = 1;
    memcpy(out->data + out->len, f, n);
    out->len += n;
    chan->stats.inits_sent++;
    return SM_OK;
}

/* Checks the length and the MAC of a handshake frame whose body after the
 * ids is @body bytes plus the MAC. */
static int check_hello(const struct tp_chan *chan,
                       const uint8_t *f,
                       size_t len,
                       const struct hdr *h,
                       size_t body)
{
    if (len - h->end != body + MAC_SIZE) {
        return TP_CHAN_MALFORMED;
    }
    if (crypto_auth_verify(f + len - MAC_SIZE, f, len - MAC_SIZE, chan->k_hs) !=
        0) {
        return TP_CHAN_BAD_HELLO;
    }
    return for_me(chan, h) ? TP_CHAN_OK : TP_CHAN_NOT_FOR_ME;
}

static int accept_init(struct tp_chan *chan,
                       const uint8_t *f,
                       size_t len,
                       const struct hdr *h,
                       struct tp_buf *out,
                       struct tp_chan_result *res)
{
    int reason = check_hello(chan, f, len, h, PK_SIZE + NONCE_SIZE);
    if (reason != TP_CHAN_OK) {
        return reject(chan, res, reason);
    }
    const uint8_t *pk_i = f + h->end;
    const uint8_t *nonce_i = pk_i + PK_SIZE;

    struct peer *p = peer_find(chan, h->from, h->from_len);
    if (p != NULL) {
        res->peer = p->id;
    }
    char name[TP_PEER_ID_MAX + 1];
    memcpy(name, h->from, h->from_len);
    name[h->from_len] = '\0';
    if (chan->admit != NULL && !chan->admit(chan->admit_arg, name)) {
        return reject(chan, res, TP_CHAN_DENIED);
    }
    if (p != NULL && p->cur.live &&
        sodium_memcmp(p->cur.nonce_i, nonce_i, NONCE_SIZE) == 0) {
        return reject(chan, res, TP_CHAN_HELLO_REPLAY);
    }
    int rv = tp_buf_reserve(out, REPLY_MAX > INIT_MAX ? REPLY_MAX : INIT_MAX);
    if (rv != SM_OK) {
        return rv;
    }
    if (p != NULL && p->next.live &&
        sodium_memcmp(p->next.nonce_i, nonce_i, NONCE_SIZE) == 0) {
        /* A duplicate of the INIT being answered: the same answer. */
        memcpy(out->data + out->len, p->reply_frame, p->reply_len);
        out->len += p->reply_len;
        chan->stats.replies_sent++;
        res->send = 1;
        res->reason = TP_CHAN_OK;
        return SM_OK;
    }
    if (p != NULL && p->initiating &&
        id_cmp(chan->id, chan->id_len, p->id, p->id_len) < 0) {
        /* Both sides started a handshake and ours wins: send ours again
         * instead of answering; the peer answers it. */
        memcpy(out->data + out->len, p->init_frame, p->init_len);
        out->len += p->init_len;
        chan->stats.inits_sent++;
        chan->stats.collisions++;
        res->send = 1;
        res->reason = TP_CHAN_OK;
        return SM_OK;
    }

    /* Make the reply and the keys before touching the peer's state. */
    uint8_t pk_r[PK_SIZE], sk_r[SK_SIZE], nonce_r[NONCE_SIZE];
    crypto_kx_keypair(pk_r, sk_r);
    randombytes_buf(nonce_r, sizeof nonce_r);
    uint8_t rx[crypto_kx_SESSIONKEYBYTES], tx[crypto_kx_SESSIONKEYBYTES];
    int kx = crypto_kx_server_session_keys(rx, tx, pk_r, sk_r, pk_i);
    sodium_memzero(sk_r, sizeof sk_r);
    if (kx != 0) {
        return reject(chan, res, TP_CHAN_BAD_KEY);
    }
    if (p == NULL) {
        rv = peer_get(chan, h->from, h->from_len, &p);
        if (rv != SM_OK) {
            sodium_memzero(rx, sizeof rx);
            sodium_memzero(tx, sizeof tx);
            return rv == SM_ETOOBIG ? reject(chan, res, TP_CHAN_TOO_MANY_PEERS)
                                    : rv;
        }
        res->peer = p->id;
    }
    if (p->initiating) {
        chan->stats.collisions++;
        initiation_wipe(p); /* the peer's handshake wins */
    }
    uint8_t *r = p->reply_frame;
    size_t n = put_hdr(r, K_REPLY, chan->id, chan->id_len, p->id, p->id_len);
    memcpy(r + n, pk_r, PK_SIZE);
    n += PK_SIZE;
    memcpy(r + n, nonce_r, NONCE_SIZE);
    n += NONCE_SIZE;
    memcpy(r + n, nonce_i, NONCE_SIZE);
    n += NONCE_SIZE;
    crypto_auth(r + n, r, n, chan->k_hs);
    n += MAC_SIZE;
    p->reply_len = n;
    /* Server rx is the client's tx: initiator to responder. */
    session_derive(chan, &p->next, 0, rx, tx, f, len, r, n, nonce_i);
    sodium_memzero(rx, sizeof rx);
    sodium_memzero(tx, sizeof tx);

    memcpy(out->data + out->len, r, n);
    out->len += n;
    chan->stats.replies_sent++;
    res->send = 1;
    res->reason = TP_CHAN_OK;
    return SM_OK;
}

static int accept_reply(struct tp_chan *chan,
                        const uint8_t *f,
                        size_t len,
                        const struct hdr *h,
                        struct tp_buf *out,
                        struct tp_chan_result *res)
{
    int reason = check_hello(chan, f, len, h, PK_SIZE + 2 * NONCE_SIZE);
    if (reason != TP_CHAN_OK) {
        return reject(chan, res, reason);
    }
    const uint8_t *pk_r = f + h->end;
    const uint8_t *echo = pk_r + PK_SIZE + NONCE_SIZE;
    struct peer *p = peer_find(chan, h->from, h->from_len);
    if (p == NULL) {
        return reject(chan, res, TP_CHAN_UNEXPECTED);
    }
    res->peer = p->id;
    if (!p->initiating || sodium_memcmp(p->nonce_i, echo, NONCE_SIZE) != 0) {
        int replay =
            p->cur.live && sodium_memcmp(p->cur.nonce_i, echo, NONCE_SIZE) == 0;
        return reject(chan, res,
                      replay ? TP_CHAN_HELLO_REPLAY : TP_CHAN_UNEXPECTED);
    }
    size_t need = sealed_size(chan, p, 0);
    int rv = tp_buf_reserve(out, need);
    if (rv != SM_OK) {
        return rv;
    }
    uint8_t rx[crypto_kx_SESSIONKEYBYTES], tx[crypto_kx_SESSIONKEYBYTES];
    if (crypto_kx_client_session_keys(rx, tx, p->eph_pk, p->eph_sk, pk_r) !=
        0) {
        return reject(chan, res, TP_CHAN_BAD_KEY);
    }
    struct session s;
    session_derive(chan, &s, 1, tx, rx, p->init_frame, p->init_len, f, len,
                   p->nonce_i);
    sodium_memzero(rx, sizeof rx);
    sodium_memzero(tx, sizeof tx);

    /* Commit: the new session is current; anything older is gone. */
    session_wipe(&p->cur);
    p->cur = s;
    session_wipe(&s);
    session_wipe(&p->next);
    p->reply_len = 0;
    initiation_wipe(p);
    size_t n = seal_into(chan, p, &p->cur, K_CONFIRM, 0, 0, NULL, 0,
                         out->data + out->len);
    SM_ASSERT(n == need);
    out->len += n;
    chan->stats.sessions++;
    res->established = 1;
    res->send = 1;
    res->reason = TP_CHAN_OK;
    return SM_OK;
}

int tp_chan_handshake_accept(struct tp_chan *chan,
                             const void *frame,
                             size_t len,
                             struct tp_buf *out,
                             struct tp_chan_result *res)
{
    memset(res, 0, sizeof *res);
    const uint8_t *f = frame;
    struct hdr h;
    int reason = parse_hdr(f, len, &h);
    if (reason != TP_CHAN_OK) {
        return reject(chan, res, reason);
    }
    switch (h.kind) {
        case K_INIT:
            return accept_init(chan, f, len, &h, out, res);
        case K_REPLY:
            return accept_reply(chan, f, len, &h, out, res);
        case K_CONFIRM:
            return open_sealed(chan, f, len, K_CONFIRM, NULL, res);
        default:
            return reject(chan, res, TP_CHAN_MALFORMED);
    }
}
