/* HTTP/1.1 server and client on the peer's libuv loop (node-private).
 *
 * Built on http-parser (de-chunks bodies, parses requests and responses)
 * and zlib (Content-Encoding: gzip), because nng's HTTP server drops chunked
 * bodies (DEPENDENCIES.md). Everything here runs on the loop thread that
 * owns the uv_loop_t; nothing is thread-safe. */
#ifndef SM_NODE_HTTP_H
#define SM_NODE_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "base/err.h"

/* ---- Server ------------------------------------------------------------ */

struct node_http_server;

/* A complete request as the handler sees it. Every pointer is borrowed and
 * valid only during the handler call. */
struct node_http_request
{
    const char *method;        /* "GET", "POST", ... */
    const char *path;          /* URL path, percent-escapes left as sent */
    const char *query;         /* after '?', without it; "" when absent */
    const char *content_type;  /* "" when absent */
    const char *user_agent;    /* "" when absent */
    const char *authorization; /* "" when absent (credentials, issue 6) */
    const uint8_t *body;       /* de-chunked and gunzipped; NULL when empty */
    size_t body_len;
};

/* The handler's answer. The server copies what it needs before the handler
 * returns control, so @body may point to the handler's own memory.
 * Defaults set by the server before calling the handler: status 500,
 * content type "application/json", no body, no Retry-After. */
struct node_http_response
{
    int status;               /* e.g. 200, 400, 429 */
    const char *content_type; /* borrowed; static strings are fine */
    const char *body;         /* borrowed for the duration of the call */
    size_t body_len;
    unsigned retry_after_s; /* > 0: send "Retry-After: N" */
};

/* Called once per complete request, on the loop thread. It must fill @res
 * and return; it may not call node_http_close() on its own server. */
typedef void (*node_http_handler_cb)(void *arg,
                                     const struct node_http_request *req,
                                     struct node_http_response *res);

struct node_http_server_config
{
    size_t max_body;   /* decoded body bytes (after gunzip), else 413;
                          0 -> 20 MiB */
    size_t max_header; /* request line + headers, else 431; 0 -> 64 KiB */
    unsigned max_connections; /* beyond: 503 + Retry-After, close; 0 -> 1024 */
    uint64_t header_timeout_ms; /* to receive the complete head; 0 -> 10 s */
    uint64_t body_timeout_ms;   /* from head to complete body; 0 -> 60 s */
    uint64_t idle_timeout_ms;   /* keep-alive idle; 0 -> 60 s */
};

/* Starts listening on @host:@port (numeric IPv4 or IPv6 address; port 0
 * picks an ephemeral port, see node_http_server_port()). Requests are
 * dispatched to @handler with @arg. Answers by itself: 400 for malformed
 * requests (then closes), 413 over max_body, 415 for a Content-Encoding
 * other than identity or gzip, 431 over max_header, 503 over
 * max_connections, 408 on timeouts (then closes). Keep-alive and pipelining
 * follow HTTP/1.1 (HTTP/1.0 closes unless it asks for keep-alive).
 * On success stores the server in @out and returns SM_OK. On failure returns
 * SM_EINVAL (bad address), SM_EEXIST (address in use), SM_EPERM, SM_ENOMEM
 * or SM_EIO, with the cause in @errmsg, and @out untouched. */
int node_http_server_start(uv_loop_t *loop,
                           const char *host,
                           int port,
                           const struct node_http_server_config *config,
                           node_http_handler_cb handler,
                           void *arg,
                           struct node_http_server **out,
                           char errmsg[SM_ERRMSG_SIZE]);

/* Returns the port actually bound (useful after port 0). */
int node_http_server_port(const struct node_http_server *server);

/* Counters for /metrics. */
struct node_http_server_stats
{
    uint64_t connections_accepted;
    uint64_t connections_rejected; /* over max_connections */
    uint64_t connections_open;
    uint64_t requests;         /* handed to the handler */
    uint64_t errors_by_server; /* 4xx/5xx answered without the handler */
    uint64_t bytes_received;   /* on the wire, before decoding */
};
void node_http_server_stats(const struct node_http_server *server,
                            struct node_http_server_stats *out);

/* Stops accepting, closes every connection (responses in flight are
 * abandoned) and frees the server; @done (may be NULL) runs on the loop once
 * all handles are closed. The loop must keep running until then. */
void node_http_server_close(struct node_http_server *server,
                            void (*done)(void *arg),
                            void *arg);

/* ---- Client (Prometheus scrapes) ---------------------------------------- */

/* The outcome of one GET. On success (status SM_OK) @http_status is the
 * response code and @body the decoded body (de-chunked, gunzipped), borrowed
 * for the duration of the callback. On failure @status is SM_ETIMEDOUT,
 * SM_EIO (connect/read error), SM_EMALFORMED (bad response), SM_ETOOBIG
 * (body over the limit) or SM_ENOMEM, and @errmsg says why. */
struct node_http_result
{
    int status;
    int http_status;
    const char *content_type; /* "" when absent */
    const uint8_t *body;
    size_t body_len;
    const char *errmsg;
};

typedef void (*node_http_get_cb)(void *arg,
                                 const struct node_http_result *result);

/* Fetches @url ("http://HOST:PORT/path?query"; numeric host, or a name
 * resolved with getaddrinfo on the libuv threadpool) with
 * "Accept-Encoding: gzip" and the @accept header, bounded by @timeout_ms in
 * total and @max_body decoded bytes. Follows no redirects. @cb runs exactly
 * once on the loop thread if this returns SM_OK; on error (SM_EINVAL for a
 * URL that is not http://, SM_ENOMEM) it never runs. */
int node_http_get(uv_loop_t *loop,
                  const char *url,
                  const char *accept,
                  uint64_t timeout_ms,
                  size_t max_body,
                  node_http_get_cb cb,
                  void *arg);

#endif /* SM_NODE_HTTP_H */
