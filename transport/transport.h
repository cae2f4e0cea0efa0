/* transport: peer messaging, the secure channel and the cluster secret. */
#ifndef SM_TRANSPORT_H
#define SM_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>

#include "base/version.h"

/* The cluster secret: 32 random bytes shared by every peer of a cluster. All
 * peer keys and client credentials are derived from it, so whoever holds it
 * can join, read and command the cluster; keep it in a file readable by the
 * peer's user only.
 *
 * On disk (sagemesh keygen) it is 64 lower-case hex digits and a newline.
 * The reader accepts either case and surrounding ASCII whitespace, nothing
 * else. */
#define TP_SECRET_SIZE     32
#define TP_SECRET_HEX_SIZE (2 * TP_SECRET_SIZE + 2) /* hex, '\n', NUL */

struct tp_secret
{
    uint8_t key[TP_SECRET_SIZE];
};

/* Initialises the cryptographic library. Call once at start-up, before any
 * other tp_ function, from one thread; calling it again is harmless. Returns
 * SM_OK or SM_ECRYPTO if libsodium cannot initialise (no entropy source). */
int tp_init(void);

/* Fills @secret with a fresh key from the operating system's CSPRNG.
 * Requires tp_init(). Cannot fail. */
void tp_secret_generate(struct tp_secret *secret);

/* Writes @secret as its file form ("<64 hex digits>\n", NUL-terminated) into
 * @out. */
void tp_secret_format(const struct tp_secret *secret,
                      char out[TP_SECRET_HEX_SIZE]);

/* Parses the file form of a secret from @len bytes at @text (borrowed, need
 * not be NUL-terminated) into @secret. Returns SM_OK, or SM_EMALFORMED when
 * the text is not exactly 64 hex digits with optional surrounding
 * whitespace (@secret is then untouched). */
int tp_secret_parse(const char *text, size_t len, struct tp_secret *secret);

/* Overwrites @secret with zeros in a way the compiler cannot elide. */
void tp_secret_wipe(struct tp_secret *secret);

/* ---- Digests -------------------------------------------------------------
 *
 * BLAKE2b with a 32-byte output and no key (libsodium's generichash), for
 * naming blobs the mesh must agree on: windows of a training round, model
 * shards, CBN versions. Only transport/ links libsodium; the rest of the
 * code hashes through these. */
#define TP_DIGEST_SIZE 32

/* An incremental hash; zero-initialise nothing, call tp_digest_init(). */
struct tp_digest_state
{
    _Alignas(64) unsigned char opaque[384];
};

/* Starts, feeds (@len bytes at @data, borrowed) and finishes a digest into
 * @out. Require tp_init(). Cannot fail. */
void tp_digest_init(struct tp_digest_state *st);
void tp_digest_update(struct tp_digest_state *st, const void *data, size_t len);
void tp_digest_final(struct tp_digest_state *st, uint8_t out[TP_DIGEST_SIZE]);

/* The digest of @len bytes at @data in one call. */
void tp_digest(const void *data, size_t len, uint8_t out[TP_DIGEST_SIZE]);

/* ---- Client credentials ------------------------------------------------
 *
 * Mutating calls to a peer (flush, train, members, actions) carry
 *
 *   Authorization: SagemeshHMAC ts=<unix seconds>,mac=<64 hex digits>
 *
 * where mac = HMAC-SHA-256 over "METHOD\nPATH\nTS\n" followed by the body,
 * keyed with a subkey of the cluster secret (libsodium's KDF, context
 * "smclient"), so the secret itself never travels. A peer accepts a
 * credential whose timestamp is within its window of its own clock and that
 * it has not seen before (the caller keeps the seen MACs). */
#define TP_AUTH_HEADER_MAX 128
#define TP_MAC_SIZE        32

/* Writes the Authorization header value for a request into @header.
 * Requires tp_init(). Cannot fail. */
void tp_credential_sign(const struct tp_secret *secret,
                        const char *method,
                        const char *path,
                        uint64_t ts_s,
                        const void *body,
                        size_t len,
                        char header[TP_AUTH_HEADER_MAX]);

/* Checks @header against the request: syntax, timestamp within @window_s
 * of @now_s, MAC (constant-time). On SM_OK stores the MAC in @mac (for the
 * caller's replay cache). Returns SM_OK or SM_EAUTH (any failure; the reason
 * is in @why, a static string). */
int tp_credential_verify(const struct tp_secret *secret,
                         const char *method,
                         const char *path,
                         const char *header,
                         uint64_t now_s,
                         uint64_t window_s,
                         const void *body,
                         size_t len,
                         uint8_t mac[TP_MAC_SIZE],
                         const char **why);

/* ---- Envelope: the versioned msgpack wire format (transport/envelope.c) -- */

/* Every message between peers is one envelope: a msgpack map of exactly
 * five fields, in any order (the encoder writes them in this one):
 *
 *   {"v": 1,              wire version, unsigned (TP_ENV_VERSION)
 *    "t": 3,              message type, unsigned (enum tp_msg_type)
 *    "from": "peer-a",    sender peer id, str (tp_peer_id_valid)
 *    "id": 42,            request / correlation id, unsigned 64-bit
 *    "body": <bin>}       the type's payload, bin (may be empty)
 *
 * On the mesh an envelope is the plaintext of a sealed channel frame (see
 * "Secure channel" below): the channel authenticates the sender, the
 * receiver, the type and the order; the envelope names what the bytes are.
 * The receiver checks that the envelope's "from" and "t" equal the frame's
 * authenticated sender and type.
 *
 * Compatibility: the decoder is strict. It accepts only version 1 and only
 * these five keys; a new field or a changed meaning is a new wire version.
 * The version is looked at first, so an envelope of another version is
 * reported as SM_EUNSUPPORTED, not as malformed.
 *
 * The envelope functions keep no state: any thread may call them. */
#define TP_ENV_VERSION 1

/* Message types. The numbers are on the wire: never reuse or renumber one;
 * 0 is never a valid type. "id" is the request id for a request and the
 * id of the request answered for a reply; 0 when nothing answers. */
enum tp_msg_type {
    TP_MSG_HELLO = 1,     /* first message on a new session: the sender's
                             listen addresses, version and role (the key
                             exchange itself is the channel's, not this) */
    TP_MSG_ACK = 2,       /* acknowledges request "id" (empty body) */
    TP_MSG_RAFT = 3,      /* one raft message (consensus/ transport) */
    TP_MSG_SPANS = 4,     /* a span batch for the peer owning its trace ids'
                             hash range */
    TP_MSG_WINDOW = 5,    /* closed windows replicated to every member
                             (training rounds) */
    TP_MSG_TRAIN = 6,     /* training round control (start, done, abort) */
    TP_MSG_DECODER = 7,   /* decoder outputs for one CBN edge group */
    TP_MSG_SWEEP_REQ = 8, /* a counterfactual sweep pass request */
    TP_MSG_SWEEP_REP = 9, /* its reply */
    TP_MSG_FWD_REQ = 10,  /* a client command forwarded to the leader */
    TP_MSG_FWD_REP = 11,  /* the leader's reply to it */
    TP_MSG_PARTIAL = 12,  /* a peer's part of a window (sketches), marks and
                             flushes, for the merging leader */
};
#define TP_MSG_TYPE_MAX 12 /* largest valid type */

/* Returns a short static name for @type ("raft", "sweep_req"), for logs and
 * metric labels, or "unknown". */
const char *tp_msg_type_name(int type);

/* Peer ids are 1 to TP_PEER_ID_MAX bytes of printable ASCII without spaces
 * (0x21..0x7e), so a host name qualifies and any id can be logged as is. */
#define TP_PEER_ID_MAX 63

/* Returns 1 if the @len bytes at @id (need not be NUL-terminated) are a
 * valid peer id, else 0. */
int tp_peer_id_valid(const char *id, size_t len);

/* One envelope. For encoding the caller fills it and keeps the pointed-to
 * bytes alive for the call. After decoding, @from and @body point into the
 * caller's input buffer (see tp_env_decode). */
struct tp_env
{
    int type;         /* enum tp_msg_type */
    const char *from; /* sender peer id, @from_len bytes, NOT NUL-terminated
                         after decoding */
    size_t from_len;
    uint64_t id;      /* request / correlation id */
    const void *body; /* @body_len bytes; may be NULL when @body_len is 0 */
    size_t body_len;
};

/* Decoding limits: the receiver's configuration, not the sender's. */
struct tp_env_limits
{
    size_t max_size; /* whole encoded envelope, bytes */
    size_t max_body; /* "body", bytes */
};

/* An envelope's encoding is at most this many bytes longer than its body. */
#define TP_ENV_OVERHEAD_MAX 128

/* The limits tp_env_decode() applies when given none. */
#define TP_ENV_DEFAULT_MAX_SIZE ((size_t)16 << 20)
#define TP_ENV_DEFAULT_MAX_BODY (TP_ENV_DEFAULT_MAX_SIZE - TP_ENV_OVERHEAD_MAX)

/* A growing byte buffer. Zero-initialise it (= {0}); functions that write
 * into one append at @len, growing @data through sm_realloc, and leave it
 * exactly as it was when they fail. The owner frees it with tp_buf_free();
 * resetting @len to 0 reuses the memory. */
struct tp_buf
{
    uint8_t *data;
    size_t len; /* bytes in use */
    size_t cap; /* bytes allocated */
};

/* Ensures room for @extra more bytes after @len. Returns SM_OK, or
 * SM_ENOMEM / SM_ETOOBIG (size overflow) with @buf untouched. */
int tp_buf_reserve(struct tp_buf *buf, size_t extra);

/* Frees @buf's memory and zeroes it. */
void tp_buf_free(struct tp_buf *buf);

/* Returns the exact encoded size of @env (which must be valid, see
 * tp_env_encode). */
size_t tp_env_size(const struct tp_env *env);

/* Encodes @env into the @cap bytes at @out and stores the encoded length in
 * @len. Returns SM_OK; SM_EINVAL when @env's type is unknown or its sender
 * is not a valid peer id; SM_ETOOBIG when the body is over 4 GiB - 1 or the
 * encoding does not fit in @cap (then @len holds the size needed and @out
 * may have been written to). Does not allocate. */
int tp_env_encode(const struct tp_env *env, void *out, size_t cap, size_t *len);

/* Appends the encoding of @env to @buf. Errors as tp_env_encode(), plus
 * SM_ENOMEM; on any error @buf is unchanged. */
int tp_env_encode_buf(const struct tp_env *env, struct tp_buf *buf);

/* Decodes exactly one envelope from the @len bytes at @data, borrowed: on
 * SM_OK, @env->from and @env->body point into @data, so they are valid only
 * as long as the caller keeps @data alive and unchanged (for a channel
 * frame, the struct tp_buf tp_chan_open() wrote the plaintext into). Nothing
 * is allocated that outlives the call.
 *
 * @limits may be NULL for the defaults. Checks, in this order:
 *  - @len over @limits->max_size: SM_ETOOBIG, before any parsing;
 *  - a pre-scan of the msgpack structure without unpacking it: truncation,
 *    invalid bytes (0xc1), declared lengths and element counts larger than
 *    the bytes left, nesting, more than a handful of elements in total, and
 *    trailing bytes after the first object: SM_EMALFORMED. A small input
 *    therefore never makes msgpack-c allocate much (it reserves an array's
 *    slots when it reads the count);
 *  - the top level is not a map: SM_EMALFORMED;
 *  - "v" missing or not an unsigned integer: SM_EMALFORMED; a version other
 *    than TP_ENV_VERSION: SM_EUNSUPPORTED;
 *  - a key that is not a string, an unknown key, a duplicate key, a missing
 *    field or a field of the wrong msgpack type: SM_EMALFORMED;
 *  - an unknown message type, an invalid sender id: SM_EMALFORMED;
 *  - a body over @limits->max_body: SM_ETOOBIG.
 * Also SM_ENOMEM if msgpack-c cannot allocate its (small) zone.
 *
 * On failure @env is untouched and *@why is a static reason ("trailing
 * bytes after the envelope"); on success *@why is "". @why may be NULL. */
int tp_env_decode(const void *data,
                  size_t len,
                  const struct tp_env_limits *limits,
                  struct tp_env *env,
                  const char **why);

/* ---- Secure channel: per-peer keys, sealing, replay (transport/channel.c) */

/* Authenticated encryption between peers that share the cluster secret.
 * The channel is pure: it reads no clock and opens no socket; the caller
 * moves the frames it makes, feeds it the frames that arrive, and retries
 * handshakes on its own timer. Ephemeral keys and nonces come from
 * libsodium's CSPRNG, so bytes differ from run to run but outcomes do not. One
 * struct tp_chan per process serves all of its peers. Not thread-safe: use
 * it from the node loop only.
 *
 * Keys.
 *  - K_hs = crypto_kdf_derive_from_key(32, 1, "smchan01", secret): the
 *    cluster key. It authenticates handshake frames (crypto_auth,
 *    HMAC-SHA-512-256) and keys the transcript hash. Only holders of the
 *    secret can make a handshake frame another peer accepts.
 *  - Each handshake makes a fresh X25519 key pair on each side (crypto_kx)
 *    and a random 16-byte nonce, so every session, and in particular every
 *    session after a restart, has keys never used before: the sequence
 *    numbers that serve as AEAD nonces start again at 0 without ever
 *    repeating a (key, nonce) pair. The ephemeral secret keys are wiped
 *    once the session keys are derived (forward secrecy: a later leak of
 *    the cluster secret does not expose recorded traffic).
 *  - The initiator is the crypto_kx client. With th = BLAKE2b-256 keyed
 *    with K_hs over INIT || REPLY (the two frames as sent), the
 *    initiator-to-responder key is BLAKE2b-256 keyed with the client's tx
 *    key over "i2r" || th, the other direction likewise with "r2i", and the
 *    session id is th's first 8 bytes.
 *
 * Handshake (three frames):
 *   INIT    I -> R  I's id, R's id, I's ephemeral public key, nonce_i; MAC
 *   REPLY   R -> I  R's id, I's id, R's ephemeral public key, nonce_r,
 *                   nonce_i echoed; MAC
 *   CONFIRM I -> R  an empty sealed frame with sequence number 0 under the
 *                   new session (key confirmation)
 * The initiator switches to the new session when the REPLY checks out.
 * The responder keeps the new session as pending and goes on sending on
 * its current one (if any) until the CONFIRM, or any data frame under the
 * new session, proves the initiator holds the ephemeral key: a replayed
 * INIT thus never disturbs an established session. When the pending
 * session is promoted the old one is forgotten, and frames sealed under it
 * are rejected (TP_CHAN_STALE_SESSION); so are frames of a process that
 * restarted, once its new session is confirmed. Until then the initiator
 * refuses what the responder seals on the old session (stale), so a lost
 * CONFIRM must be made up by a data frame: the initiator sends one soon
 * after the handshake (the TP_MSG_HELLO envelope), and again when it sees
 * TP_CHAN_STALE_SESSION from that peer. A duplicate of the INIT
 * being answered gets the same REPLY again. When both peers initiate at
 * once, the one whose id is smaller (bytewise, then shorter first) keeps
 * its handshake: it answers the other's INIT by sending its own INIT again,
 * and the other abandons its own and answers.
 *
 * Data frames (kind 4) carry in clear: kind, version, sender id, receiver
 * id, message type, session id and a 64-bit sequence number; all of it is
 * the associated data of crypto_aead_xchacha20poly1305_ietf, and the nonce
 * is the sequence number (little-endian, zero-padded to 24 bytes). The
 * sequence number of a direction counts from 1 (0 is the CONFIRM). The
 * receiver accepts each number once, in any order as long as it is less
 * than TP_CHAN_WINDOW below the highest number accepted so far; older ones
 * are rejected as too old. Only frames that authenticate touch the window,
 * so a forged frame is always TP_CHAN_BAD_MAC, never a replay.
 *
 * All frames start with a kind byte (1 INIT, 2 REPLY, 3 CONFIRM, 4 DATA)
 * and the version byte TP_CHAN_VERSION; integers are little-endian; ids
 * are a length byte and the id.
 *
 * Limits of the model: any holder of the cluster secret can impersonate any
 * peer id, and whoever can drop or inject frames can stall a handshake
 * (which the caller retries), as they could by dropping packets. */
#define TP_CHAN_VERSION   1
#define TP_CHAN_WINDOW    64
#define TP_CHAN_MAX_PEERS 1024

/* Size of a data frame beyond its plaintext, at most. */
#define TP_CHAN_OVERHEAD_MAX (3 + 2 * (1 + TP_PEER_ID_MAX) + 8 + 8 + 16)

/* Why a frame was rejected. Every rejection is counted in
 * tp_chan_stats.rejected[reason]. */
enum tp_chan_reason {
    TP_CHAN_OK = 0,
    TP_CHAN_MALFORMED,      /* not a well-formed frame of the expected kind */
    TP_CHAN_BAD_VERSION,    /* unknown channel version */
    TP_CHAN_NOT_FOR_ME,     /* addressed to another peer, or from my own id */
    TP_CHAN_BAD_HELLO,      /* handshake MAC mismatch: another cluster
                               secret, or tampered */
    TP_CHAN_BAD_KEY,        /* handshake with an invalid public key */
    TP_CHAN_DENIED,         /* the admission callback refused the peer */
    TP_CHAN_TOO_MANY_PEERS, /* TP_CHAN_MAX_PEERS peers already known */
    TP_CHAN_UNEXPECTED,     /* a REPLY matching no handshake in progress */
    TP_CHAN_HELLO_REPLAY,   /* a handshake frame of a completed handshake */
    TP_CHAN_UNKNOWN_PEER,   /* a sealed frame from a peer without session */
    TP_CHAN_STALE_SESSION,  /* a sealed frame of a replaced or unknown
                               session (for example from before a restart) */
    TP_CHAN_BAD_MAC,        /* a sealed frame that fails authentication:
                               tampered ciphertext or header, or forged */
    TP_CHAN_REPLAY,         /* a sequence number already accepted */
    TP_CHAN_TOO_OLD,        /* a sequence number behind the window */
};
#define TP_CHAN_NREASONS (TP_CHAN_TOO_OLD + 1)

/* Returns a static snake_case name for @reason ("replay"), for metric
 * labels, or "unknown". */
const char *tp_chan_reason_name(int reason);

/* Returns a static sentence for @reason, for logs ("sequence number
 * already received (replay)"), or "unknown reason". */
const char *tp_chan_reason_str(int reason);

/* Counters since tp_chan_new(); the peer logs and exports them. */
struct tp_chan_stats
{
    uint64_t sealed;       /* data frames made */
    uint64_t opened;       /* data frames accepted */
    uint64_t inits_sent;   /* INIT frames made, including re-sent ones */
    uint64_t replies_sent; /* REPLY frames made, including re-sent ones */
    uint64_t sessions;     /* sessions established (initiator: on REPLY;
                              responder: on confirmation) */
    uint64_t collisions;   /* simultaneous handshakes resolved */
    uint64_t rejected[TP_CHAN_NREASONS]; /* by enum tp_chan_reason */
};

struct tp_chan;

/* Decides whether a peer that completed the cluster-key check of an INIT
 * may have a session (the node plugs in membership). Returns nonzero to
 * admit. @peer is NUL-terminated and borrowed for the call. Runs inside
 * tp_chan_handshake_accept(). */
typedef int (*tp_chan_admit_cb)(void *arg, const char *peer);

/* Creates the channel state of peer @my_id (NUL-terminated, copied) for
 * the cluster @secret (copied; only derived keys are kept). Requires
 * tp_init(). Returns SM_OK with *@out owned by the caller
 * (tp_chan_free), SM_EINVAL for an invalid id, or SM_ENOMEM. Every peer
 * is admitted until tp_chan_set_admit() says otherwise. */
int tp_chan_new(const struct tp_secret *secret,
                const char *my_id,
                struct tp_chan **out);

/* Wipes all keys and frees @chan. NULL is a no-op. */
void tp_chan_free(struct tp_chan *chan);

/* Installs @cb (NULL: admit everyone). */
void tp_chan_set_admit(struct tp_chan *chan, tp_chan_admit_cb cb, void *arg);

/* Forgets everything about @peer (sessions, handshake in progress); its
 * frames are then rejected as TP_CHAN_UNKNOWN_PEER. Peer names returned
 * earlier for @peer become invalid. Unknown peers are ignored. */
void tp_chan_forget(struct tp_chan *chan, const char *peer);

/* Returns 1 if tp_chan_seal() to @peer can succeed (a session exists,
 * possibly awaiting confirmation), else 0. */
int tp_chan_has_session(const struct tp_chan *chan, const char *peer);

/* Starts a handshake with @peer: appends an INIT frame to @out, which the
 * caller sends to @peer. A handshake already in progress with @peer is
 * replaced; established sessions keep working until the new one completes.
 * Call it again if no REPLY comes back in time. Returns SM_OK, SM_EINVAL
 * (invalid id, or @peer is us), SM_ETOOBIG (TP_CHAN_MAX_PEERS reached) or
 * SM_ENOMEM; on error @out is unchanged. */
int tp_chan_handshake_make(struct tp_chan *chan,
                           const char *peer,
                           struct tp_buf *out);

/* The outcome of tp_chan_handshake_accept() and tp_chan_open(). */
struct tp_chan_result
{
    int reason;       /* enum tp_chan_reason; TP_CHAN_OK on success */
    const char *peer; /* the sender when known (NUL-terminated, owned by
                         the channel, valid until tp_chan_forget() of it or
                         tp_chan_free()), else NULL */
    int send;         /* 1: a frame was appended to the output buffer, to
                         be sent to @peer */
    int established;  /* 1: a new session with @peer became current */
    /* tp_chan_open() only: */
    int type;            /* the authenticated message type */
    uint64_t seq;        /* its sequence number */
    const uint8_t *data; /* the plaintext: @len bytes inside the output
                            buffer, valid until that buffer changes */
    size_t len;
};

/* Returns 1 if the frame at @frame (@len bytes) is a handshake frame for
 * tp_chan_handshake_accept() (INIT, REPLY, CONFIRM), 0 otherwise (data
 * frames, and anything malformed, go to tp_chan_open()). */
int tp_chan_is_handshake(const void *frame, size_t len);

/* Processes a handshake frame received from the network (hostile bytes,
 * borrowed for the call):
 *  - INIT: appends the REPLY to @out (@res->send); the session waits for
 *    confirmation. On a collision we win, appends our own INIT again.
 *  - REPLY to our INIT: the session is established (@res->established)
 *    and the CONFIRM is appended to @out (@res->send).
 *  - CONFIRM: the pending session is established (@res->established).
 * Returns SM_OK; on rejection SM_EMALFORMED (TP_CHAN_MALFORMED),
 * SM_EUNSUPPORTED (TP_CHAN_BAD_VERSION) or SM_EAUTH (any other reason), with
 * @res->reason saying which and counted; or SM_ENOMEM. On any error @out
 * is unchanged and nothing but the counters changed. */
int tp_chan_handshake_accept(struct tp_chan *chan,
                             const void *frame,
                             size_t len,
                             struct tp_buf *out,
                             struct tp_chan_result *res);

/* Seals @len bytes at @plain (an encoded envelope) as a data frame of
 * message @type (1..255) for @peer and appends it to @out. Uses the current
 * session, or the pending one if there is no current one. Returns SM_OK,
 * SM_EINVAL (bad type), SM_ENOTFOUND (no session with @peer: handshake
 * first), SM_ERANGE (sequence numbers exhausted: handshake again) or
 * SM_ENOMEM; on error @out is unchanged. */
int tp_chan_seal(struct tp_chan *chan,
                 const char *peer,
                 int type,
                 const void *plain,
                 size_t len,
                 struct tp_buf *out);

/* Opens a data frame received from the network (@len hostile bytes,
 * borrowed for the call): checks it, decrypts it, and appends the
 * plaintext to @out (@res->data, @res->len), with the sender, type and
 * sequence number in @res. A valid frame under a session awaiting
 * confirmation confirms it (@res->established). Returns SM_OK; on
 * rejection SM_EMALFORMED, SM_EUNSUPPORTED or SM_EAUTH with @res->reason
 * set and counted; or SM_ENOMEM. On any error @out is unchanged and the
 * replay window did not move. */
int tp_chan_open(struct tp_chan *chan,
                 const void *frame,
                 size_t len,
                 struct tp_buf *out,
                 struct tp_chan_result *res);

/* Copies the counters into @stats. */
void tp_chan_stats(const struct tp_chan *chan, struct tp_chan_stats *stats);

/* ---- Network: nng sockets on the libuv loop, and the fake (transport/net.c,
 * transport/fake_net.c) ---------------------------------------------------- */

/* Peers exchange opaque byte messages, one way, over a struct tp_net: an
 * opaque handle behind a small vtable (transport/net_internal.h) with a real
 * implementation (nng sockets on the peer's libuv loop, tp_net_nng_new) and
 * a fake one (an in-memory hub stepped by the test, tp_fake_net_new), so
 * every upper layer runs unchanged on either. The
 * network layer knows nothing of envelopes or keys: what it moves is bytes.
 *
 * Shape. Each net listens on one address for inbound messages and keeps a
 * table of peers (id -> address) it sends to. There is no request/reply
 * here: a request and its reply are two one-way messages, and the upper
 * layer matches them by a correlation id it puts in the envelope. That keeps
 * nng's req/rep resend semantics out of the picture and works the same on
 * the fake.
 *
 * Delivery is best effort and per-peer FIFO on a stable connection. A send
 * that completes with SM_OK was handed to a live connection (real) or
 * delivered (fake); it does not prove the peer processed it. Messages can be
 * lost when a connection breaks; upper layers retry by id.
 *
 * Threads. Every tp_net_* call is made on the thread that runs the net's loop
 * (the peer's libuv loop for the real net, the test's thread for the fake),
 * and every callback runs there. A callback may call tp_net_send() or
 * tp_net_close() on its own net.
 *
 * The real implementation (transport/net.c) uses one pull0 socket listening
 * for inbound messages, and one push0 socket per remote peer dialing that
 * peer's listener (nng reconnects on its own, so a restarted peer is found
 * again). Per DEPENDENCIES.md section 2: completions of nng operations run on
 * nng's threads, which only queue them under a mutex and wake the loop with
 * uv_async_send; the loop drains the queues. Every send carries its own
 * timeout, dials never block, and NNG_OPT_RECVMAXSZ is set before any
 * connection exists. */

/* The bytes a net will send or accept in one message, by default. */
#define TP_NET_MAX_MSG_DEFAULT ((size_t)4 << 20)

/* Longest address, NUL included ("tcp://255.255.255.255:65535"). */
#define TP_NET_ADDR_MAX 64

/* Identity of a peer on the network layer (the upper layer's node id). */
struct tp_net_id
{
    uint64_t v;
};

/* Tunables of a net. Fill with tp_net_config_default() and adjust. */
struct tp_net_config
{
    /* Largest message sent or received, bytes. Larger sends are refused
     * (SM_ETOOBIG); a larger inbound message makes the real net drop that
     * connection (nng's NNG_OPT_RECVMAXSZ). */
    size_t max_msg;
    /* Sends to one peer that may be pending at once. Beyond it tp_net_send()
     * refuses with SM_EAGAIN and counts a drop, so a peer that is down costs
     * bounded memory. */
    unsigned queue_max;
    /* Inbound messages held for the loop before the real net stops reading
     * (back-pressure to TCP instead of unbounded memory). */
    unsigned recv_queue_max;
    /* nng's redial delay after a failed or lost connection: starts at min,
     * doubles up to max (real net only). */
    unsigned reconnect_min_ms;
    unsigned reconnect_max_ms;
};

/* Fills @cfg with the defaults: 4 MiB messages, 256 pending sends per peer,
 * 1024 inbound messages, redial between 50 ms and 2 s. */
void tp_net_config_default(struct tp_net_config *cfg);

/* Counters of one net since it was created. */
struct tp_net_stats
{
    uint64_t sent;        /* sends completed with SM_OK */
    uint64_t received;    /* messages handed to the receive callback */
    uint64_t send_failed; /* sends completed with any error (timeouts too) */
    uint64_t timeouts;    /* sends completed with SM_ETIMEDOUT */
    uint64_t dropped;     /* sends refused: the peer's queue was full */
    uint64_t oversized;   /* sends refused: larger than max_msg */
    /* Outbound connections established and lost (the real net only: the
     * fake has no connections and counts none). A rising disconnects
     * count is a flapping link. */
    uint64_t connects;
    uint64_t disconnects;
};

/* Where a received message came from, as the network sees it. This is not
 * an authenticated identity (the envelope carries that): use it for logs. */
struct tp_net_from
{
    /* The connection's id: an nng pipe id (real), the sending net's serial
     * number in its hub (fake). Non-zero. */
    uint32_t conn;
    /* The remote address: "tcp://a.b.c.d:port" of the sending socket (real,
     * empty if the connection closed before the loop saw the message), the
     * sender's listening address or "" if it has none (fake). */
    char addr[TP_NET_ADDR_MAX];
};

/* Receives one message: @len bytes at @data, borrowed for the call only
 * (copy what you keep). Runs on the net's loop. */
typedef void (*tp_net_recv_cb)(void *arg,
                               const struct tp_net_from *from,
                               const void *data,
                               size_t len);

/* Reports how a send ended: SM_OK (handed to a live connection, or
 * delivered by the fake), SM_ETIMEDOUT (no connection took it in time, the
 * peer is down or cut off), SM_ECLOSED (the peer was removed or the net
 * closed first), SM_ENOMEM. Runs exactly once per accepted send, on the
 * net's loop, never from inside tp_net_send(). */
typedef void (*tp_net_send_cb)(void *arg, int status);

/* Runs once a closed net's memory is released. */
typedef void (*tp_net_close_cb)(void *arg);

/* A net: an opaque handle, real or fake. Every failing call below leaves
 * its cause in the net's message (tp_net_errmsg). */
struct tp_net;

/* Returns the message of the net's last failure ("context: cause"), or ""
 * if none. The string belongs to the net. */
const char *tp_net_errmsg(const struct tp_net *net);

/* Starts listening on @addr, "tcp://A.B.C.D:PORT" with a numeric IPv4
 * address; port 0 picks a free port (see tp_net_address). Once per net.
 * Returns SM_OK, SM_EINVAL (bad address, or already listening), SM_EEXIST
 * (address in use), SM_ECLOSED, SM_ENOMEM or SM_EIO. */
int tp_net_listen(struct tp_net *net, const char *addr);

/* Returns the address the net listens on with the real port
 * ("tcp://127.0.0.1:41234"), or "" before tp_net_listen(). The string
 * belongs to the net and lives until it closes. */
const char *tp_net_address(const struct tp_net *net);

/* Returns the port the net listens on, 0 before tp_net_listen(). */
uint16_t tp_net_port(const struct tp_net *net);

/* Adds peer @id reachable at @addr (same form as tp_net_listen, copied) and
 * starts connecting to it in the background; a peer that is down is retried
 * forever. Returns SM_OK, SM_EEXIST (@id is already a peer), SM_EINVAL (bad
 * address), SM_ECLOSED, SM_ENOMEM or SM_EIO. */
int tp_net_peer_add(struct tp_net *net, struct tp_net_id id, const char *addr);

/* Removes peer @id and closes its connection; its pending sends complete
 * with SM_ECLOSED (later, on the loop). Returns SM_OK or SM_ENOTFOUND. */
int tp_net_peer_remove(struct tp_net *net, struct tp_net_id id);

/* Sends @len bytes at @data (copied before return: the caller keeps its
 * buffer) to peer @to. If no connection takes the message within
 * @timeout_ms (1 or more) it completes with SM_ETIMEDOUT; nothing waits
 * longer. @cb (may be NULL) runs once with the outcome, on the loop, after
 * this call returns. On failure @cb never runs and the message is not sent:
 * SM_ENOTFOUND (unknown peer), SM_ETOOBIG (over max_msg, counted as
 * oversized), SM_EAGAIN (the peer's queue is full, counted as dropped),
 * SM_EINVAL (zero timeout), SM_ECLOSED or SM_ENOMEM. */
int tp_net_send(struct tp_net *net,
                struct tp_net_id to,
                const void *data,
                size_t len,
                uint32_t timeout_ms,
                tp_net_send_cb cb,
                void *arg);

/* Copies the net's counters into @out. */
void tp_net_stats(const struct tp_net *net, struct tp_net_stats *out);

/* Closes @net: stops listening, closes every connection, completes every
 * pending send with its outcome or SM_ECLOSED, then releases the memory and
 * runs @cb (may be NULL). The real net finishes on a later turn of its loop
 * (run the loop until @cb); the fake finishes before returning. No receive
 * callback runs once this is called, and sends from the callbacks it runs
 * fail with SM_ECLOSED. Call once; @net is invalid after @cb. */
void tp_net_close(struct tp_net *net, tp_net_close_cb cb, void *arg);

/* ---- The real net: nng on a libuv loop (transport/net.c) ---- */

struct uv_loop_s;

/* Creates a real net on @loop (borrowed; must outlive the net and keep
 * running until the close callback). Received messages go to @recv_cb with
 * @recv_arg. @cfg is copied; NULL means the defaults. Stores the net in
 * @out on success; the caller closes it with tp_net_close(). Returns SM_OK,
 * SM_EINVAL (a zero limit in @cfg), SM_ENOMEM or SM_EIO (libuv failure),
 * with the cause in @errmsg (SM_ERRMSG_SIZE bytes). */
int tp_net_nng_new(struct uv_loop_s *loop,
                   const struct tp_net_config *cfg,
                   tp_net_recv_cb recv_cb,
                   void *recv_arg,
                   struct tp_net **out,
                   char *errmsg);

/* ---- The fake: an in-memory hub stepped by the test (fake_net.c) ----
 *
 * A hub connects any number of fake nets in one process. Nothing moves on
 * its own: tp_net_send() queues a message in the hub, and the test decides
 * when it is delivered with tp_fake_hub_step(), which takes the oldest
 * message (or, with reordering on, a random one) and settles it:
 *
 *   - the sender or the receiver is killed, the two are partitioned, or no
 *     net listens on the address: not delivered, the send completes with
 *     SM_ETIMEDOUT (the fake has no clock; it never waits for a peer);
 *   - lost (with the configured probability): not delivered, the send
 *     completes with SM_OK, as a message lost after TCP took it;
 *   - otherwise the receiver's callback runs, then the sender's with SM_OK.
 *
 * Partitions and kills are by id and checked when a message is settled, so
 * a message queued before a partition is cut by it. Randomness comes only
 * from the rng given to the hub, so a seed replays a run exactly. */
struct tp_fake_hub;
struct sm_rng;

/* Creates an empty hub drawing randomness from @rng (borrowed, must outlive
 * the hub; may be NULL when loss and reordering stay off). Returns SM_OK or
 * SM_ENOMEM. */
int tp_fake_hub_new(struct sm_rng *rng, struct tp_fake_hub **out);

/* Frees @hub. Every net created on it must be closed first. */
void tp_fake_hub_free(struct tp_fake_hub *hub);

/* Creates a fake net with identity @self on @hub (borrowed, must outlive
 * it); otherwise like tp_net_nng_new(). Listening on port 0 assigns ports
 * from 20000 upwards in order. Returns SM_OK, SM_EINVAL or SM_ENOMEM. */
int tp_fake_net_new(struct tp_fake_hub *hub,
                    struct tp_net_id self,
                    const struct tp_net_config *cfg,
                    tp_net_recv_cb recv_cb,
                    void *recv_arg,
                    struct tp_net **out);

/* Settles one queued message as described above (running its callbacks).
 * Returns 1 if it settled one, 0 if nothing was queued. */
int tp_fake_hub_step(struct tp_fake_hub *hub);

/* Steps until nothing is queued or @max_steps messages were settled (the
 * callbacks may queue more). Returns the number settled. */
size_t tp_fake_hub_run(struct tp_fake_hub *hub, size_t max_steps);

/* Returns the number of messages queued in @hub. */
size_t tp_fake_hub_pending(const struct tp_fake_hub *hub);

/* Cuts (or, with tp_fake_hub_heal, restores) the link between @a and @b in
 * both directions. Cutting twice is harmless. Returns SM_OK or SM_ENOMEM. */
int tp_fake_hub_partition(struct tp_fake_hub *hub,
                          struct tp_net_id a,
                          struct tp_net_id b);

/* Restores the link between @a and @b; a no-op if it was not cut. */
void tp_fake_hub_heal(struct tp_fake_hub *hub,
                      struct tp_net_id a,
                      struct tp_net_id b);

/* Takes @id off the network (a crashed or unplugged peer): it neither sends
 * nor receives until tp_fake_hub_restart(), and what it had queued is cut.
 * Its net object stays valid. Returns SM_OK or SM_ENOMEM. */
int tp_fake_hub_kill(struct tp_fake_hub *hub, struct tp_net_id id);

/* Puts @id back on the network; a no-op if it was not killed. */
void tp_fake_hub_restart(struct tp_fake_hub *hub, struct tp_net_id id);

/* Loses each message with probability @p in [0, 1] (0 turns loss off).
 * Returns SM_OK, or SM_EINVAL if @p is out of range or @p > 0 without an
 * rng. */
int tp_fake_hub_set_loss(struct tp_fake_hub *hub, double p);

/* With @on, each step settles a message chosen uniformly among the queued
 * ones instead of the oldest. Returns SM_OK, or SM_EINVAL without an rng. */
int tp_fake_hub_set_reorder(struct tp_fake_hub *hub, int on);

/* What the hub did with the messages it settled. */
struct tp_fake_hub_stats
{
    uint64_t delivered; /* handed to a receiver */
    uint64_t lost;      /* dropped by the loss probability */
    uint64_t cut;       /* not delivered: killed, partitioned or no listener */
};

/* Copies the hub's counters into @out. */
void tp_fake_hub_stats(const struct tp_fake_hub *hub,
                       struct tp_fake_hub_stats *out);

/* Reports the libraries transport/ links (nng, libsodium, msgpack-c) to
 * @cb, once each, synchronously. */
void tp_libraries(sm_libver_cb cb, void *arg);

#endif /* SM_TRANSPORT_H */
