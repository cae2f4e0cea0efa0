/* HMAC credentials for mutating client calls. */
#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "transport/transport.h"

#define KDF_CONTEXT "smclient"
#define KDF_ID      1

static void compute(const struct tp_secret *secret,
                    const char *method,
                    const char *path,
                    uint64_t ts,
                    const void *body,
                    size_t len,
                    uint8_t mac[TP_MAC_SIZE])
{
    uint8_t key[crypto_auth_hmacsha256_KEYBYTES];
    crypto_kdf_derive_from_key(key, sizeof key, KDF_ID, KDF_CONTEXT,
                               secret->key);
    crypto_auth_hmacsha256_state st;
    crypto_auth_hmacsha256_init(&st, key, sizeof key);
    char head[512];
    int n =
        snprintf(head, sizeof head, "%s\n%s\n%" PRIu64 "\n", method, path, ts);
    crypto_auth_hmacsha256_update(
        &st, (const uint8_t *)head,
        n > 0 && (size_t)n < sizeof head ? (size_t)n : 0);
    if (len > 0) {
        crypto_auth_hmacsha256_update(&st, body, len);
    }
    crypto_auth_hmacsha256_final(&st, mac);
    sodium_memzero(key, sizeof key);
    sodium_memzero(&st, sizeof st);
}

void tp_credential_sign(const struct tp_secret *secret,
                        const char *method,
                        const char *path,
                        uint64_t ts_s,
                        const void *body,
                        size_t len,
                        char header[TP_AUTH_HEADER_MAX])
{
    uint8_t mac[TP_MAC_SIZE];
    char hex[2 * TP_MAC_SIZE + 1];
    compute(secret, method, path, ts_s, body, len, mac);
    sodium_bin2hex(hex, sizeof hex, mac, sizeof mac);
    snprintf(header, TP_AUTH_HEADER_MAX, "SagemeshHMAC ts=%" PRIu64 ",mac=%s",
             ts_s, hex);
}

int tp_credential_verify(const struct tp_secret *secret,
                         const char *method,
                         const char *path,
                         const char *header,
                         uint64_t now_s,
                         uint64_t window_s,
                         const void *body,
                         size_t len,
                         uint8_t mac[TP_MAC_SIZE],
                         const char **why)
{
    static const char prefix[] = "SagemeshHMAC ts=";
    *why = "missing or malformed credential";
    if (header == NULL || strncmp(header, prefix, sizeof prefix - 1) != 0) {
        return SM_EAUTH;
    }
    const char *p = header + sizeof prefix - 1;
    char *end;
    if (*p < '0' || *p > '9') {
        return SM_EAUTH;
    }
    unsigned long long ts = strtoull(p, &end, 10);
    if (strncmp(end, ",mac=", 5) != 0 || strlen(end + 5) != 2 * TP_MAC_SIZE) {
        return SM_EAUTH;
    }
    uint8_t given[TP_MAC_SIZE];
    size_t bin_len = 0;
    if (sodium_hex2bin(given, sizeof given, end + 5, 2 * TP_MAC_SIZE, NULL,
                       &bin_len, NULL) != 0 ||
        bin_len != sizeof given) {
        return SM_EAUTH;
    }
    if (ts + window_s < now_s || ts > now_s + window_s) {
        *why = "credential expired or from the future: check the clocks";
        return SM_EAUTH;
    }
    uint8_t want[TP_MAC_SIZE];
    compute(secret, method, path, ts, body, len, want);
    if (sodium_memcmp(given, want, sizeof want) != 0) {
        *why = "credential does not match: wrong cluster secret?";
        return SM_EAUTH;
    }
    memcpy(mac, want, TP_MAC_SIZE);
    *why = "";
    return SM_OK;
}
