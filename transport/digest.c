/* Digests for the mesh: libsodium's BLAKE2b-256 behind transport.h. */
#include <sodium.h>

#include "transport/transport.h"

_Static_assert(sizeof(crypto_generichash_state) <=
                   sizeof(((struct tp_digest_state *)0)->opaque),
               "tp_digest_state too small for crypto_generichash_state");
_Static_assert(TP_DIGEST_SIZE >= crypto_generichash_BYTES_MIN &&
                   TP_DIGEST_SIZE <= crypto_generichash_BYTES_MAX,
               "digest size");

void tp_digest_init(struct tp_digest_state *st)
{
    crypto_generichash_init((crypto_generichash_state *)(void *)st->opaque,
                            NULL, 0, TP_DIGEST_SIZE);
}

void tp_digest_update(struct tp_digest_state *st, const void *data, size_t len)
{
    crypto_generichash_update((crypto_generichash_state *)(void *)st->opaque,
                              data, len);
}

void tp_digest_final(struct tp_digest_state *st, uint8_t out[TP_DIGEST_SIZE])
{
    crypto_generichash_final((crypto_generichash_state *)(void *)st->opaque,
                             out, TP_DIGEST_SIZE);
}

void tp_digest(const void *data, size_t len, uint8_t out[TP_DIGEST_SIZE])
{
    crypto_generichash(out, TP_DIGEST_SIZE, data, len, NULL, 0);
}
