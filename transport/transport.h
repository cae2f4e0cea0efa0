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

/* Reports the libraries transport/ links (nng, libsodium, msgpack-c) to
 * @cb, once each, synchronously. */
void tp_libraries(sm_libver_cb cb, void *arg);

#endif /* SM_TRANSPORT_H */
