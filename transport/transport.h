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

/* ---- Secure channel: per-peer keys, sealing, replay (transport/channel.c) */

/* ---- Network: nng sockets on the libuv loop, and the fake (transport/net.c,
 * transport/fake_net.c) ---------------------------------------------------- */

/* Reports the libraries transport/ links (nng, libsodium, msgpack-c) to
 * @cb, once each, synchronously. */
void tp_libraries(sm_libver_cb cb, void *arg);

#endif /* SM_TRANSPORT_H */
