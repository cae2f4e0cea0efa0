/* Fuzz target: the client's renderers of the peer's JSON bodies
 * (node/render.h) and the command line's time parser. Any input must give
 * a table or an error, never a crash, a leak or a read past the body. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "node/render.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static FILE *sink;
    if (sink == NULL) {
        sink = fopen("/dev/null", "w");
        if (sink == NULL) {
            return 0;
        }
    }
    /* An exact-size copy, so that ASan sees any read past the body. */
    char *body = malloc(size ? size : 1);
    if (body == NULL) {
        return 0;
    }
    memcpy(body, data, size);
    char errmsg[SM_ERRMSG_SIZE], id[NODE_RENDER_ID_SIZE], msg[128];
    int flag;
    uint64_t a, b;
    (void)node_render_status(body, size, sink, &flag, errmsg);
    (void)node_render_services(body, size, sink, errmsg);
    (void)node_render_diagnoses(body, size, sink, errmsg);
    (void)node_render_diagnose_ticket(body, size, id, &a, errmsg);
    (void)node_render_diagnose_done(body, size, &flag, errmsg);
    size_t failed;
    (void)node_render_diagnose_result(body, size, &flag, &failed, sink, errmsg);
    (void)node_render_train_ticket(body, size, &a, &b, errmsg);
    (void)node_render_train_rounds(body, size, &a, errmsg);
    (void)node_render_train_outcome(body, size, sink, &flag, errmsg);
    node_render_error(body, size, msg, sizeof msg);
    free(body);

    /* The time parser reads a NUL-terminated argument. */
    char *text = malloc(size + 1);
    if (text != NULL) {
        memcpy(text, data, size);
        text[size] = '\0';
        if (node_render_parse_time(text, &a) == SM_OK) {
            char t[NODE_RENDER_TIME_SIZE];
            node_render_format_time(a, t);
        }
        free(text);
    }
    return 0;
}
