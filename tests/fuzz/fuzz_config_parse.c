/* Fuzz target: the peer config file parser and validation. */
#include <stdint.h>

#include "node/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct node_config c;
    char err[SM_ERRMSG_SIZE];
    node_config_init(&c);
    if (node_config_parse(&c, (const char *)data, size, err) == SM_OK) {
        (void)node_config_validate(&c, err);
    }
    node_config_free(&c);
    return 0;
}
