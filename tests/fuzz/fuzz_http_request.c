/* Fuzz target: the HTTP server's request engine fed a client's byte stream.
 *
 * The first input byte picks how the rest is cut into reads (one piece,
 * fixed steps of 1 to 127 bytes) and whether the output is drained after
 * every read or left to pile up, so that pausing for flow control is
 * exercised too. Limits are small so that 413 and 431 are reachable. */
#include <stdint.h>
#include <string.h>

#include "base/alloc.h"
#include "base/err.h"
#include "node/http.h"
#include "node/http_body.h"

#define MAX_BODY   4096
#define MAX_HEADER 1024

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void handler(void *arg,
                    const struct node_http_request *req,
                    struct node_http_response *res)
{
    (void)arg;
    SM_ASSERT(req->method != NULL && req->path != NULL && req->query != NULL);
    SM_ASSERT(req->content_type != NULL && req->user_agent != NULL);
    SM_ASSERT(req->authorization != NULL);
    SM_ASSERT(req->body_len <= MAX_BODY);
    SM_ASSERT((req->body == NULL) == (req->body_len == 0));
    /* Touch every byte so that ASan sees any bad range. */
    uint8_t sum = 0;
    for (size_t i = 0; i < req->body_len; i++) {
        sum = (uint8_t)(sum + req->body[i]);
    }
    sum = (uint8_t)(sum + (uint8_t)strlen(req->path) +
                    (uint8_t)strlen(req->query));
    res->status = 200 + sum % 3;
    res->content_type = "text/plain";
    res->body = req->path;
    res->body_len = strlen(req->path);
    /* Large answers push the output over the high-water mark. */
    if (strcmp(req->path, "/big") == 0) {
        static char big[70000];
        res->body = big;
        res->body_len = sizeof big;
    }
}

/* Checks that @out is a sequence of plausible responses. */
static void check_output(const struct node__http_buf *out)
{
    SM_ASSERT(out->len >= 12);
    SM_ASSERT(memcmp(out->data, "HTTP/1.1 ", 9) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) {
        return 0;
    }
    unsigned mode = data[0];
    data++;
    size--;
    size_t step = (mode & 0x7f) == 0 ? size : (mode & 0x7f);
    int drain = (mode & 0x80) == 0;

    struct node_http_server_config cfg = {
        .max_body = MAX_BODY,
        .max_header = MAX_HEADER,
        .max_connections = 1,
        .header_timeout_ms = 1,
        .body_timeout_ms = 1,
        .idle_timeout_ms = 1,
    };
    struct node_http_server_stats stats = {0};
    struct node__http_session *s;
    if (node__http_session_new(&cfg, handler, NULL, &stats, &s) != SM_OK) {
        return 0;
    }
    struct node__http_buf out = {0};
    for (size_t off = 0; off < size && !node__http_session_closing(s);
         off += step) {
        size_t n = size - off < step ? size - off : step;
        node__http_session_feed(s, data + off, n);
        if (drain) {
            while (node__http_session_take_output(s, &out)) {
                check_output(&out);
                node__http_buf_reset(&out, 0);
                node__http_session_resume(s);
            }
        }
    }
    /* What a connection does at the end: drain, then the client closes or
     * a deadline passes. */
    while (node__http_session_take_output(s, &out)) {
        check_output(&out);
        node__http_buf_reset(&out, 0);
        node__http_session_resume(s);
    }
    if (mode & 1) {
        node__http_session_eof(s);
    } else {
        node__http_session_timeout(s);
    }
    while (node__http_session_take_output(s, &out)) {
        check_output(&out);
        node__http_buf_reset(&out, 0);
        node__http_session_resume(s);
    }
    SM_ASSERT(node__http_session_closing(s));
    node__http_buf_free(&out);
    node__http_session_free(s);
    return 0;
}
