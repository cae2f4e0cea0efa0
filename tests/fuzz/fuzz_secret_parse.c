/* Fuzz target: the cluster secret file parser. */
#include <stdint.h>
#include <string.h>

#include "base/err.h"
#include "transport/transport.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct tp_secret secret;
    memset(&secret, 0xaa, sizeof secret);
    if (tp_secret_parse((const char *)data, size, &secret) != SM_OK) {
        return 0;
    }
    /* An accepted secret formats back to its canonical text and parses to
     * the same key. */
    char text[TP_SECRET_HEX_SIZE];
    struct tp_secret again;
    tp_secret_format(&secret, text);
    SM_ASSERT(tp_secret_parse(text, strlen(text), &again) == SM_OK);
    SM_ASSERT(memcmp(again.key, secret.key, sizeof secret.key) == 0);
    return 0;
}
