/* HTTP internals shared by the server, the client and the fuzz target. */
#ifndef SM_NODE_HTTP_BODY_H
#define SM_NODE_HTTP_BODY_H

#include <stddef.h>
#include <stdint.h>
#include <zlib.h>

#include "node/http.h"

/* ---- Growable byte buffer ------------------------------------------------
 *
 * A zeroed struct is an empty buffer. Memory comes from sm_malloc; the
 * buffer owns it until node__http_buf_free(). The content is always followed
 * by one NUL byte once anything has been appended, so text can be read as a
 * C string through node__http_buf_str(). */
struct node__http_buf
{
    uint8_t *data;
    size_t len; /* bytes in use, not counting the trailing NUL */
    size_t cap; /* allocated bytes, including room for the NUL */
};

/* Makes room for @extra more bytes (plus the NUL), growing geometrically
 * but never past @limit + 1 allocated bytes when @limit is not SIZE_MAX.
 * Returns SM_OK, SM_ETOOBIG when len + extra > limit, or SM_ENOMEM (the
 * buffer is unchanged on failure). */
int node__http_buf_reserve(struct node__http_buf *buf,
                           size_t extra,
                           size_t limit);

/* Appends @n bytes of @p, failing as node__http_buf_reserve() does. */
int node__http_buf_append(struct node__http_buf *buf,
                          const void *p,
                          size_t n,
                          size_t limit);

/* Appends printf-formatted text (no limit). Returns SM_OK or SM_ENOMEM. */
int node__http_buf_printf(struct node__http_buf *buf, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Returns the content as a NUL-terminated string ("" when empty). */
const char *node__http_buf_str(const struct node__http_buf *buf);

/* Empties the buffer, keeping its memory unless it exceeds @keep bytes. */
void node__http_buf_reset(struct node__http_buf *buf, size_t keep);

/* Frees the memory and leaves an empty buffer. */
void node__http_buf_free(struct node__http_buf *buf);

/* ---- Bounded gzip inflater -----------------------------------------------
 *
 * Decodes a gzip stream (RFC 1952, several members back to back allowed)
 * into a buffer that never grows past a limit, so a small compressed body
 * cannot make us allocate more than limit + 1 bytes however well it
 * compresses. zlib's own state (about 40 KiB) comes from sm_malloc too. */
struct node__http_inflate
{
    z_stream zs;
    int active;     /* inflateInit2 succeeded; inflateEnd pending */
    int stream_end; /* the last member ended and no byte followed yet */
};

/* Prepares @inf. Returns SM_OK or SM_ENOMEM. */
int node__http_inflate_init(struct node__http_inflate *inf);

/* Decodes @len bytes of @in, appending the output to @out. Returns SM_OK,
 * SM_ETOOBIG when the output would pass @limit bytes, SM_EMALFORMED for a
 * bad stream, or SM_ENOMEM. After an error @out holds a prefix of the
 * output and the inflater must only be freed. */
int node__http_inflate_feed(struct node__http_inflate *inf,
                            const uint8_t *in,
                            size_t len,
                            struct node__http_buf *out,
                            size_t limit);

/* Returns SM_OK when the input so far ends exactly at the end of a gzip
 * member, else SM_EMALFORMED (truncated stream). */
int node__http_inflate_finish(const struct node__http_inflate *inf);

/* Releases zlib's state; safe on a zeroed or already freed inflater. */
void node__http_inflate_free(struct node__http_inflate *inf);

/* Classifies a Content-Encoding header value (comma-separated tokens, any
 * case): returns 0 for none or identity, 1 for one gzip (or x-gzip), and -1
 * for anything else, including gzip applied twice. */
int node__http_encoding_kind(const char *value);

/* Compressed bytes accepted for a body whose decoded size is bounded by
 * @max_body: generous enough for incompressible data in stored blocks. */
size_t node__http_wire_limit(size_t max_body);

/* ---- Server protocol engine, without sockets -----------------------------
 *
 * One session parses the byte stream a client sends on one connection,
 * calls the handler for each complete request in order, and appends the
 * encoded responses to an output buffer that the caller drains. The server
 * wires it to libuv; the fuzz target drives it directly. It never reads a
 * clock: the caller tracks the phase and calls
 * node__http_session_timeout() when a deadline passes.
 *
 * Flow control: once the undrained output reaches a high-water mark after a
 * response, the session pauses and buffers further input; the caller should
 * stop reading, take the output, and call node__http_session_resume(). */
struct node__http_session;

/* Where the current request stands, for choosing a timer. */
enum node__http_phase {
    NODE__HTTP_FRESH, /* connection open, no byte received yet */
    NODE__HTTP_IDLE,  /* between requests on a kept-alive connection */
    NODE__HTTP_HEAD,  /* part of a request line or headers received */
    NODE__HTTP_BODY,  /* head complete, body incomplete */
};

/* Creates a session with limits from @config (defaults already applied:
 * no zero fields), dispatching to @handler with @arg and counting requests
 * and errors in @stats (borrowed, must outlive the session). Returns SM_OK
 * or SM_ENOMEM. */
int node__http_session_new(const struct node_http_server_config *config,
                           node_http_handler_cb handler,
                           void *arg,
                           struct node_http_server_stats *stats,
                           struct node__http_session **out);

/* Parses @len bytes received from the client (copied if the session is
 * paused). Ignored once the session is closing. */
void node__http_session_feed(struct node__http_session *s,
                             const uint8_t *data,
                             size_t len);

/* Continues parsing buffered input after the output has been taken. A
 * no-op unless the session is paused with its output below high water. */
void node__http_session_resume(struct node__http_session *s);

/* Non-zero when the session is paused and node__http_session_resume()
 * would make progress. */
int node__http_session_can_resume(const struct node__http_session *s);

/* The client closed its sending side: requests already received are still
 * answered, then the session closes. */
void node__http_session_eof(struct node__http_session *s);

/* A header or body deadline passed: answers 408 and closes. */
void node__http_session_timeout(struct node__http_session *s);

/* Moves the pending output into @out (which must be empty; it becomes the
 * caller's to free) and returns 1, or returns 0 when there is none. */
int node__http_session_take_output(struct node__http_session *s,
                                   struct node__http_buf *out);

/* Returns the phase of the current request and stores in @seq a number that
 * changes with every new request. */
enum node__http_phase node__http_session_phase(
    const struct node__http_session *s,
    uint64_t *seq);

/* Non-zero when no further request will be read: close the connection
 * once the output is written. */
int node__http_session_closing(const struct node__http_session *s);

/* Non-zero while the session buffers input instead of parsing it. */
int node__http_session_paused(const struct node__http_session *s);

/* Frees the session and everything it holds. NULL is a no-op. */
void node__http_session_free(struct node__http_session *s);

#endif /* SM_NODE_HTTP_BODY_H */
