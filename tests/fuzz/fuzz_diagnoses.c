/* Fuzz target: what the peer reads back or is sent about diagnoses: a
 * stored diagnosis record, and the body of POST /v1/diagnose. */
#include <stdint.h>
#include <string.h>

#include "node/diagnoses.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char id[NODE_DIAG_ID_LEN + 1];
    const char *json;
    size_t json_len;
    if (node_diag_record_parse(data, size, id, &json, &json_len) == SM_OK) {
        /* The document lies inside the input. */
        if (json < (const char *)data ||
            json + json_len > (const char *)data + size ||
            strlen(id) != NODE_DIAG_ID_LEN) {
            __builtin_trap();
        }
    }
    uint64_t from, to;
    char err[SM_ERRMSG_SIZE];
    if (node_diagnose_request_parse(data, size, &from, &to, err) == SM_OK &&
        from >= to) {
        __builtin_trap();
    }
    return 0;
}
