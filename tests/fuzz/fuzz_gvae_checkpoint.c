/* Fuzz target: gvae_model_load. The input is tried as a whole checkpoint and,
 * since random bytes almost never carry a valid CRC-32C, also as a document
 * with its correct checksum appended, so the parser behind the checksum is
 * reached. An accepted model must save and load again to the same bytes. */
#include <stdint.h>
#include <string.h>

#include "base/alloc.h"
#include "base/crc32c.h"
#include "base/err.h"
#include "gvae/gvae.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_model(const uint8_t *buf, size_t len)
{
    struct gvae_model *m = NULL;
    char err[SM_ERRMSG_SIZE];
    int rc = gvae_model_load(buf, len, 0, &m, err);
    if (rc != SM_OK) {
        SM_ASSERT(m == NULL && err[0] != '\0');
        return;
    }
    SM_ASSERT(gvae_model_node_count(m) > 0);
    uint8_t *again;
    size_t again_len;
    if (gvae_model_save(m, &again, &again_len) == SM_OK) {
        struct gvae_model *m2 = NULL;
        SM_ASSERT(gvae_model_load(again, again_len, 0, &m2, err) == SM_OK);
        uint8_t *third;
        size_t third_len;
        if (gvae_model_save(m2, &third, &third_len) == SM_OK) {
            SM_ASSERT(third_len == again_len &&
                      memcmp(third, again, again_len) == 0);
            sm_free(third);
        }
        gvae_model_free(m2);
        sm_free(again);
    }
    gvae_model_free(m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_model(data, size);
    if (size > (1u << 22)) {
        return 0;
    }
    uint8_t *buf = sm_malloc(size + 4);
    if (buf == NULL) {
        return 0;
    }
    memcpy(buf, data, size);
    uint32_t crc = sm_crc32c(0, data, size);
    for (int k = 0; k < 4; k++) {
        buf[size + (size_t)k] = (uint8_t)(crc >> (8 * k));
    }
    check_model(buf, size + 4);
    sm_free(buf);
    return 0;
}
