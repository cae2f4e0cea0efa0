/* Fuzz target: the envelope decoder, and the encoder on what it accepts. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "transport/transport.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct tp_env env;
    const char *why = NULL;
    int rv = tp_env_decode(data, size, NULL, &env, &why);
    SM_ASSERT(why != NULL);
    SM_ASSERT(rv == SM_OK || rv == SM_EMALFORMED || rv == SM_EUNSUPPORTED ||
              rv == SM_ETOOBIG || rv == SM_ENOMEM);
    if (rv != SM_OK) {
        SM_ASSERT(why[0] != '\0');
        return 0;
    }
    /* What was accepted is valid, lies inside the input, and encodes
     * minimally back to something that decodes the same. */
    SM_ASSERT(env.type >= 1 && env.type <= TP_MSG_TYPE_MAX);
    SM_ASSERT(tp_peer_id_valid(env.from, env.from_len));
    SM_ASSERT((const uint8_t *)env.from >= data &&
              (const uint8_t *)env.from + env.from_len <= data + size);
    SM_ASSERT(env.body_len == 0 ||
              ((const uint8_t *)env.body >= data &&
               (const uint8_t *)env.body + env.body_len <= data + size));
    size_t need = tp_env_size(&env);
    SM_ASSERT(need <= size);
    uint8_t *out = malloc(need);
    SM_ASSERT(out != NULL);
    size_t len = 0;
    SM_ASSERT(tp_env_encode(&env, out, need, &len) == SM_OK && len == need);
    struct tp_env again;
    SM_ASSERT(tp_env_decode(out, len, NULL, &again, NULL) == SM_OK);
    SM_ASSERT(
        again.type == env.type && again.id == env.id &&
        again.from_len == env.from_len &&
        memcmp(again.from, env.from, env.from_len) == 0 &&
        again.body_len == env.body_len &&
        (env.body_len == 0 || memcmp(again.body, env.body, env.body_len) == 0));

    /* The limits are exact. */
    struct tp_env_limits lim = {size, env.body_len};
    SM_ASSERT(tp_env_decode(data, size, &lim, &again, NULL) == SM_OK);
    lim.max_size = size - 1;
    SM_ASSERT(tp_env_decode(data, size, &lim, &again, NULL) == SM_ETOOBIG);
    if (env.body_len > 0) {
        lim.max_size = size;
        lim.max_body = env.body_len - 1;
        SM_ASSERT(tp_env_decode(data, size, &lim, &again, NULL) == SM_ETOOBIG);
    }
    free(out);
    return 0;
}
