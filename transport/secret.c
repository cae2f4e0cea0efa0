/* The cluster secret: generation, file form, parsing. */
#include <sodium.h>
#include <string.h>

#include "base/err.h"
#include "transport/transport.h"

int tp_init(void)
{
    /* sodium_init() returns 1 when already initialised. */
    return sodium_init() < 0 ? SM_ECRYPTO : SM_OK;
}

void tp_secret_generate(struct tp_secret *secret)
{
    randombytes_buf(secret->key, sizeof secret->key);
}

void tp_secret_format(const struct tp_secret *secret,
                      char out[TP_SECRET_HEX_SIZE])
{
    sodium_bin2hex(out, TP_SECRET_HEX_SIZE - 1, secret->key,
                   sizeof secret->key);
    out[TP_SECRET_HEX_SIZE - 2] = '\n';
    out[TP_SECRET_HEX_SIZE - 1] = '\0';
}

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

int tp_secret_parse(const char *text, size_t len, struct tp_secret *secret)
{
    while (len > 0 && is_space(text[0])) {
        text++;
        len--;
    }
    while (len > 0 && is_space(text[len - 1])) {
        len--;
    }
    if (len != 2 * TP_SECRET_SIZE) {
        return SM_EMALFORMED;
    }
    uint8_t key[TP_SECRET_SIZE];
    size_t bin_len = 0;
    const char *end = NULL;
    if (sodium_hex2bin(key, sizeof key, text, len, NULL, &bin_len, &end) != 0 ||
        bin_len != sizeof key || end != text + len) {
        sodium_memzero(key, sizeof key);
        return SM_EMALFORMED;
    }
    memcpy(secret->key, key, sizeof key);
    sodium_memzero(key, sizeof key);
    return SM_OK;
}

void tp_secret_wipe(struct tp_secret *secret)
{
    sodium_memzero(secret->key, sizeof secret->key);
}
