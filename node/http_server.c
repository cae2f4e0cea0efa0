/* HTTP/1.1 server: a socket-free request engine wired to libuv.
 *
 * The file has two halves. The session (node__http_session_*) is the whole
 * protocol for one connection without any I/O: bytes go in through feed(),
 * http-parser splits them into requests (de-chunking bodies in on_body),
 * bodies are gunzipped through a bounded inflater, the handler runs, and
 * encoded responses pile up in an output buffer. Because it never touches a
 * socket or a clock, the fuzz target drives exactly the code the server
 * runs.
 *
 * The server half owns the sockets. Each connection has a uv_tcp_t and one
 * uv_timer_t. After every event, pump() moves the session's output into a
 * uv_write (one at a time, so responses leave in order), stops reading while
 * the session is paused (pipelined requests whose responses the client does
 * not read) and re-arms the timer for the current phase: header timeout
 * while a head arrives, body timeout until the body is complete, idle
 * timeout between requests and while writes are blocked. The timer is
 * re-armed only when the phase or the request changes, so trickling bytes
 * does not extend a deadline.
 *
 * Closing after an error uses a lingering close: the response is written,
 * the sending side shut down, and input read and dropped until the client
 * closes (or a short timer fires). Closing with unread input would make the
 * kernel send a reset, which can destroy the response before the client
 * reads it. */
#include <errno.h>
#include <http_parser.h>
#include <limits.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/err.h"
#include "node/http.h"
#include "node/http_body.h"

#define DEFAULT_MAX_BODY        (20u << 20)
#define DEFAULT_MAX_HEADER      (64u << 10)
#define DEFAULT_MAX_CONNECTIONS 1024u
#define DEFAULT_HEADER_MS       10000u
#define DEFAULT_BODY_MS         60000u
#define DEFAULT_IDLE_MS         60000u

/* Undrained output at which the session stops parsing input. */
#define OUT_HIGH_WATER (64u << 10)
/* Request buffers bigger than this are freed between requests. */
#define KEEP_BYTES 4096u
/* Read buffer shared by all connections of a server. */
#define READ_BUF_SIZE (64u << 10)
/* Lingering close: how long, and how much input to drop at most. */
#define LINGER_MS        2000u
#define LINGER_MAX_BYTES (1u << 20)
/* Rejected connections allowed to linger for their 503 at once; beyond,
 * they are closed without an answer. */
#define MAX_REJECTING 64u
/* Retry-After sent with 503. */
#define REJECT_RETRY_S 1u
/* Wait before retrying an accept that failed for lack of memory. */
#define ACCEPT_RETRY_MS 1000u

/* ---- Session ------------------------------------------------------------ */

struct node__http_session
{
    http_parser parser;
    struct node_http_server_config config;
    node_http_handler_cb handler;
    void *arg;
    struct node_http_server_stats *stats;
    size_t wire_limit; /* compressed body bytes accepted with gzip */

    struct node__http_buf out; /* encoded responses not yet taken */
    struct node__http_buf in;  /* input held while paused */
    size_t in_off;             /* bytes of @in already parsed */

    /* The request being parsed. */
    struct node__http_buf url;
    struct node__http_buf field;   /* current header name */
    int in_value;                  /* the current header's value has begun */
    struct node__http_buf *target; /* where the value goes, NULL: dropped */
    struct node__http_buf content_type, user_agent, authorization;
    struct node__http_buf encoding, expect;
    struct node__http_buf body;
    struct node__http_inflate inflate;
    int gzip;
    uint64_t body_wire; /* body bytes as sent (after de-chunking) */
    size_t head_bytes;  /* target and fields so far (count_head) */
    int error_status;   /* non-zero: answer this and close */

    enum node__http_phase phase;
    uint64_t seq;
    int closing; /* no more requests: close once the output is written */
    int paused;  /* input is buffered, not parsed */
    int eof;     /* the client closed its sending side */
};

static int on_message_begin(http_parser *p);
static int on_url(http_parser *p, const char *at, size_t len);
static int on_header_field(http_parser *p, const char *at, size_t len);
static int on_header_value(http_parser *p, const char *at, size_t len);
static int on_headers_complete(http_parser *p);
static int on_body(http_parser *p, const char *at, size_t len);
static int on_message_complete(http_parser *p);

static const http_parser_settings settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

static const char *reason_phrase(int status)
{
    const char *r = http_status_str((enum http_status)status);
    return strcmp(r, "<unknown>") == 0 ? "Status" : r;
}

/* A header value we can put on the wire as is. */
static int header_safe(const char *s)
{
    for (; *s != 0; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c < 0x20 && c != '\t') || c == 0x7f) {
            return 0;
        }
    }
    return 1;
}

/* Appends one complete response to @buf; on failure @buf is unchanged.
 * @connection is NULL, "close" or "keep-alive". */
static int format_response(struct node__http_buf *buf,
                           int status,
                           const char *content_type,
                           const char *body,
                           size_t body_len,
                           unsigned retry_after_s,
                           const char *connection,
                           int head_only)
{
    size_t mark = buf->len;
    int no_body = status == 204 || status == 304;
    int rv = node__http_buf_printf(buf, "HTTP/1.1 %d %s\r\n", status,
                                   reason_phrase(status));
    if (rv == SM_OK && !no_body) {
        rv = node__http_buf_printf(buf,
                                   "Content-Type: %s\r\n"
                                   "Content-Length: %zu\r\n",
                                   content_type, body_len);
    }
    if (rv == SM_OK && retry_after_s > 0) {
        rv = node__http_buf_printf(buf, "Retry-After: %u\r\n", retry_after_s);
    }
    if (rv == SM_OK && connection != NULL) {
        rv = node__http_buf_printf(buf, "Connection: %s\r\n", connection);
    }
    if (rv == SM_OK) {
        rv = node__http_buf_append(buf, "\r\n", 2, SIZE_MAX);
    }
    if (rv == SM_OK && !no_body && !head_only && body_len > 0) {
        rv = node__http_buf_append(buf, body, body_len, SIZE_MAX);
    }
    if (rv != SM_OK) {
        buf->len = mark;
        if (buf->data != NULL) {
            buf->data[mark] = 0;
        }
    }
    return rv;
}

static void reset_request(struct node__http_session *s)
{
    node__http_buf_reset(&s->url, KEEP_BYTES);
    node__http_buf_reset(&s->field, KEEP_BYTES);
    node__http_buf_reset(&s->content_type, KEEP_BYTES);
    node__http_buf_reset(&s->user_agent, KEEP_BYTES);
    node__http_buf_reset(&s->authorization, KEEP_BYTES);
    node__http_buf_reset(&s->encoding, KEEP_BYTES);
    node__http_buf_reset(&s->expect, KEEP_BYTES);
    node__http_buf_reset(&s->body, KEEP_BYTES);
    node__http_inflate_free(&s->inflate);
    s->in_value = 0;
    s->target = NULL;
    s->gzip = 0;
    s->body_wire = 0;
    s->head_bytes = 0;
}

/* Answers @status without the handler and closes the session. */
static void answer_error(struct node__http_session *s, int status)
{
    if (s->closing) {
        return;
    }
    char body[96];
    int n = snprintf(body, sizeof body, "{\"error\":\"%s\"}",
                     reason_phrase(status));
    SM_ASSERT(n > 0 && (size_t)n < sizeof body);
    format_response(&s->out, status, "application/json", body, (size_t)n, 0,
                    "close", 0);
    s->stats->errors_by_server++;
    s->closing = 1;
    reset_request(s);
}

/* Records an error found in a callback; the callback then returns -1 so
 * that the parser stops, and parse() answers it. */
static int fail(struct node__http_session *s, int status)
{
    if (s->error_status == 0) {
        s->error_status = status;
    }
    return -1;
}

static int head_too_big(const struct node__http_session *s)
{
    return s->head_bytes > s->config.max_header ||
           s->parser.nread > s->config.max_header;
}

/* Counts @len more bytes of the head. parser.nread alone does not do:
 * http-parser 2.9 stores it only when http_parser_execute() returns, so
 * within one call the callbacks see the count from before it, and a head
 * that came in one or two reads was held only to http-parser's own cap
 * (80 KiB), not to max_header. The separators (": ", CRLF) are counted as
 * four bytes per field. */
static void count_head(struct node__http_session *s, size_t len)
{
    s->head_bytes += len;
}

static int on_message_begin(http_parser *p)
{
    struct node__http_session *s = p->data;
    reset_request(s);
    s->phase = NODE__HTTP_HEAD;
    s->seq++;
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
    struct node__http_session *s = p->data;
    count_head(s, len);
    if (head_too_big(s)) {
        return fail(s, 431);
    }
    int rv = node__http_buf_append(&s->url, at, len, s->config.max_header);
    return rv == SM_OK ? 0 : fail(s, rv == SM_ENOMEM ? 500 : 431);
}

/* A field-name byte (RFC 9110 5.1: a token). */
static int is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    struct node__http_session *s = p->data;
    count_head(s, len + (s->in_value || s->field.len == 0 ? 4 : 0));
    if (head_too_big(s)) {
        return fail(s, 431);
    }
    /* Debian's http-parser is built non-strict: it lets spaces into field
     * names and still honours "Content-Length : 5" or "Transfer-Encoding :
     * chunked", which a proxy in front may ignore (request smuggling), and
     * takes a line starting with a space after the request line as a
     * field. RFC 9112 5.1 and 2.2 require a 400 for both. */
    for (size_t i = 0; i < len; i++) {
        if (at[i] == 0 || !is_tchar((unsigned char)at[i])) {
            return fail(s, 400);
        }
    }
    if (s->in_value) {
        s->in_value = 0;
        node__http_buf_reset(&s->field, KEEP_BYTES);
    }
    int rv = node__http_buf_append(&s->field, at, len, s->config.max_header);
    return rv == SM_OK ? 0 : fail(s, rv == SM_ENOMEM ? 500 : 431);
}

/* Picks the buffer for the value of the header just named, or NULL. The
 * first of repeated headers wins, except Content-Encoding, a list. */
static struct node__http_buf *header_target(struct node__http_session *s)
{
    static const struct
    {
        const char *name;
        size_t offset;
    } wanted[] = {
        {"content-type", offsetof(struct node__http_session, content_type)},
        {"user-agent", offsetof(struct node__http_session, user_agent)},
        {"authorization", offsetof(struct node__http_session, authorization)},
        {"content-encoding", offsetof(struct node__http_session, encoding)},
        {"expect", offsetof(struct node__http_session, expect)},
    };
    const char *name = node__http_buf_str(&s->field);
    for (size_t i = 0; i < sizeof wanted / sizeof wanted[0]; i++) {
        if (strcasecmp(name, wanted[i].name) == 0) {
            return (struct node__http_buf *)((char *)s + wanted[i].offset);
        }
    }
    return NULL;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    struct node__http_session *s = p->data;
    count_head(s, len);
    if (head_too_big(s)) {
        return fail(s, 431);
    }
    /* Non-strict http-parser lets DEL (and, as a value's first byte, other
     * controls) through; RFC 9110 5.5 allows none but HTAB. */
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)at[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f) {
            return fail(s, 400);
        }
    }
    int rv = SM_OK;
    if (!s->in_value) {
        s->in_value = 1;
        s->target = header_target(s);
        if (s->target == &s->encoding && s->encoding.len > 0) {
            rv = node__http_buf_append(&s->encoding, ",", 1,
                                       s->config.max_header);
        } else if (s->target != NULL && s->target->len > 0) {
            s->target = NULL;
        }
    }
    if (rv == SM_OK && s->target != NULL) {
        rv = node__http_buf_append(s->target, at, len, s->config.max_header);
    }
    return rv == SM_OK ? 0 : fail(s, rv == SM_ENOMEM ? 500 : 431);
}

static void trim_trailing_space(struct node__http_buf *b)
{
    while (b->len > 0 &&
           (b->data[b->len - 1] == ' ' || b->data[b->len - 1] == '\t')) {
        b->data[--b->len] = 0;
    }
}

static int on_headers_complete(http_parser *p)
{
    struct node__http_session *s = p->data;
    if (head_too_big(s)) {
        return fail(s, 431);
    }
    trim_trailing_space(&s->content_type);
    trim_trailing_space(&s->user_agent);
    trim_trailing_space(&s->authorization);
    trim_trailing_space(&s->expect);
    int kind = node__http_encoding_kind(node__http_buf_str(&s->encoding));
    if (kind < 0) {
        return fail(s, 415);
    }
    int chunked = (p->flags & F_CHUNKED) != 0;
    uint64_t length = p->content_length;
    int has_length = !chunked && length != ULLONG_MAX;
    if (kind == 1) {
        if (has_length && length > s->wire_limit) {
            return fail(s, 413);
        }
        int rv = node__http_inflate_init(&s->inflate);
        if (rv != SM_OK) {
            return fail(s, 500);
        }
        s->gzip = 1;
    } else if (has_length && length > s->config.max_body) {
        return fail(s, 413);
    }
    int has_body = chunked || (has_length && length > 0);
    if (has_body && p->http_major == 1 && p->http_minor >= 1 &&
        strcasecmp(node__http_buf_str(&s->expect), "100-continue") == 0) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        if (node__http_buf_append(&s->out, cont, sizeof cont - 1, SIZE_MAX) !=
            SM_OK) {
            return fail(s, 500);
        }
    }
    s->phase = NODE__HTTP_BODY;
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    struct node__http_session *s = p->data;
    s->body_wire += len;
    int rv;
    if (s->gzip) {
        if (s->body_wire > s->wire_limit) {
            return fail(s, 413);
        }
        rv = node__http_inflate_feed(&s->inflate, (const uint8_t *)at, len,
                                     &s->body, s->config.max_body);
    } else {
        rv = node__http_buf_append(&s->body, at, len, s->config.max_body);
    }
    switch (rv) {
        case SM_OK:
            return 0;
        case SM_ETOOBIG:
            return fail(s, 413);
        case SM_EMALFORMED:
            return fail(s, 400);
        default:
            return fail(s, 500);
    }
}

/* Splits the request target into NUL-terminated path and query, in place.
 * Returns 0, or -1 for a target we cannot make sense of. */
static int split_target(struct node__http_session *s,
                        const char **path,
                        const char **query)
{
    char *url = (char *)s->url.data;
    *path = "/";
    *query = "";
    if (url == NULL || url[0] == 0) {
        return -1;
    }
    if (s->parser.method == HTTP_CONNECT || strcmp(url, "*") == 0) {
        *path = url;
        return 0;
    }
    if (url[0] == '/') {
        char *hash = strchr(url, '#');
        if (hash != NULL) {
            *hash = 0;
        }
        char *q = strchr(url, '?');
        if (q != NULL) {
            *q = 0;
            *query = q + 1;
        }
        *path = url;
        return 0;
    }
    /* Absolute form: "http://host/path?query". */
    struct http_parser_url u;
    http_parser_url_init(&u);
    if (http_parser_parse_url(url, s->url.len, 0, &u) != 0) {
        return -1;
    }
    size_t path_end = 0, query_end = 0;
    if (u.field_set & (1u << UF_PATH)) {
        *path = url + u.field_data[UF_PATH].off;
        path_end =
            (size_t)u.field_data[UF_PATH].off + u.field_data[UF_PATH].len;
    }
    if (u.field_set & (1u << UF_QUERY)) {
        *query = url + u.field_data[UF_QUERY].off;
        query_end =
            (size_t)u.field_data[UF_QUERY].off + u.field_data[UF_QUERY].len;
    }
    /* Terminate after reading both offsets: each end is a separator or the
     * string's end, never inside the other field. */
    if (path_end > 0) {
        url[path_end] = 0;
    }
    if (query_end > 0) {
        url[query_end] = 0;
    }
    return 0;
}

static int on_message_complete(http_parser *p)
{
    struct node__http_session *s = p->data;
    if (s->gzip && s->body_wire > 0 &&
        node__http_inflate_finish(&s->inflate) != SM_OK) {
        return fail(s, 400);
    }
    struct node_http_request req = {
        .method = http_method_str((enum http_method)p->method),
        .content_type = node__http_buf_str(&s->content_type),
        .user_agent = node__http_buf_str(&s->user_agent),
        .authorization = node__http_buf_str(&s->authorization),
        .body = s->body.len > 0 ? s->body.data : NULL,
        .body_len = s->body.len,
    };
    if (split_target(s, &req.path, &req.query) != 0) {
        return fail(s, 400);
    }
    struct node_http_response res = {
        .status = 500,
        .content_type = "application/json",
    };
    s->stats->requests++;
    s->handler(s->arg, &req, &res);
    SM_ASSERT(res.body != NULL || res.body_len == 0);
    if (res.status < 200 || res.status > 599) {
        res.status = 500;
    }
    if (res.content_type == NULL || !header_safe(res.content_type)) {
        res.content_type = "application/octet-stream";
    }
    int keep_alive = http_should_keep_alive(p) && !p->upgrade;
    const char *connection = NULL;
    if (!keep_alive) {
        connection = "close";
    } else if (p->http_major == 1 && p->http_minor == 0) {
        connection = "keep-alive";
    }
    int rv = format_response(&s->out, res.status, res.content_type, res.body,
                             res.body_len, res.retry_after_s, connection,
                             p->method == HTTP_HEAD);
    reset_request(s);
    s->phase = NODE__HTTP_IDLE;
    if (rv != SM_OK || !keep_alive) {
        /* Out of memory drops the answer: the client sees the close. */
        s->closing = 1;
        return -1;
    }
    if (s->out.len >= OUT_HIGH_WATER) {
        http_parser_pause(p, 1);
    }
    return 0;
}

/* Runs the parser over @len bytes and returns how many it consumed (all of
 * them unless it paused). */
static size_t parse(struct node__http_session *s,
                    const uint8_t *data,
                    size_t len)
{
    size_t n =
        http_parser_execute(&s->parser, &settings, (const char *)data, len);
    if (s->closing) {
        return len;
    }
    enum http_errno e = HTTP_PARSER_ERRNO(&s->parser);
    if (s->error_status != 0) {
        answer_error(s, s->error_status);
        return len;
    }
    if (e == HPE_PAUSED) {
        s->paused = 1;
        return n;
    }
    if (e != HPE_OK) {
        int head = s->phase != NODE__HTTP_BODY;
        answer_error(s, e == HPE_HEADER_OVERFLOW && head ? 431 : 400);
        return len;
    }
    if (s->parser.upgrade || n < len) {
        /* The rest would be another protocol; we speak none. */
        s->closing = 1;
        return len;
    }
    if (s->phase != NODE__HTTP_BODY && head_too_big(s)) {
        answer_error(s, 431);
    }
    return len;
}

int node__http_session_new(const struct node_http_server_config *config,
                           node_http_handler_cb handler,
                           void *arg,
                           struct node_http_server_stats *stats,
                           struct node__http_session **out)
{
    SM_ASSERT(config->max_body > 0 && config->max_header > 0);
    struct node__http_session *s = sm_calloc(1, sizeof *s);
    if (s == NULL) {
        return SM_ENOMEM;
    }
    http_parser_init(&s->parser, HTTP_REQUEST);
    s->parser.data = s;
    s->config = *config;
    s->handler = handler;
    s->arg = arg;
    s->stats = stats;
    s->wire_limit = node__http_wire_limit(config->max_body);
    s->phase = NODE__HTTP_FRESH;
    *out = s;
    return SM_OK;
}

void node__http_session_feed(struct node__http_session *s,
                             const uint8_t *data,
                             size_t len)
{
    if (s->closing || len == 0) {
        return;
    }
    size_t n = 0;
    if (!s->paused) {
        n = parse(s, data, len);
    }
    if (s->paused && !s->closing && n < len) {
        if (node__http_buf_append(&s->in, data + n, len - n, SIZE_MAX) !=
            SM_OK) {
            s->closing = 1;
        }
    }
}

int node__http_session_can_resume(const struct node__http_session *s)
{
    return s->paused && !s->closing && s->out.len < OUT_HIGH_WATER;
}

void node__http_session_resume(struct node__http_session *s)
{
    if (!node__http_session_can_resume(s)) {
        return;
    }
    s->paused = 0;
    http_parser_pause(&s->parser, 0);
    while (s->in_off < s->in.len && !s->paused && !s->closing) {
        s->in_off += parse(s, s->in.data + s->in_off, s->in.len - s->in_off);
    }
    if (s->in_off >= s->in.len || s->closing) {
        node__http_buf_reset(&s->in, KEEP_BYTES);
        s->in_off = 0;
    }
    if (!s->paused && s->eof) {
        s->closing = 1;
    }
}

void node__http_session_eof(struct node__http_session *s)
{
    s->eof = 1;
    if (!s->paused) {
        s->closing = 1;
    }
}

void node__http_session_timeout(struct node__http_session *s)
{
    answer_error(s, 408);
}

int node__http_session_take_output(struct node__http_session *s,
                                   struct node__http_buf *out)
{
    SM_ASSERT(out->len == 0);
    if (s->out.len == 0) {
        return 0;
    }
    node__http_buf_free(out);
    *out = s->out;
    memset(&s->out, 0, sizeof s->out);
    return 1;
}

enum node__http_phase node__http_session_phase(
    const struct node__http_session *s,
    uint64_t *seq)
{
    *seq = s->seq;
    return s->phase;
}

int node__http_session_closing(const struct node__http_session *s)
{
    return s->closing;
}

int node__http_session_paused(const struct node__http_session *s)
{
    return s->paused && !s->closing;
}

void node__http_session_free(struct node__http_session *s)
{
    if (s == NULL) {
        return;
    }
    reset_request(s);
    node__http_buf_free(&s->url);
    node__http_buf_free(&s->field);
    node__http_buf_free(&s->content_type);
    node__http_buf_free(&s->user_agent);
    node__http_buf_free(&s->authorization);
    node__http_buf_free(&s->encoding);
    node__http_buf_free(&s->expect);
    node__http_buf_free(&s->body);
    node__http_buf_free(&s->out);
    node__http_buf_free(&s->in);
    sm_free(s);
}

/* ---- Server ------------------------------------------------------------- */

/* What a connection's timer is armed for. */
enum timer_kind {
    TIMER_NONE,
    TIMER_FRESH,  /* first request not begun: close silently */
    TIMER_IDLE,   /* between requests: close silently */
    TIMER_HEAD,   /* 408 */
    TIMER_BODY,   /* 408 */
    TIMER_WRITE,  /* output not drained: close */
    TIMER_LINGER, /* lingering close: close */
};

struct conn
{
    struct node_http_server *server;
    struct conn *prev, *next;
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_write_t write_req;
    uv_shutdown_t shutdown_req;
    struct node__http_session *session; /* NULL: rejected with 503 */
    struct node__http_buf writing;      /* bytes handed to uv_write */
    int handles;                        /* open libuv handles */
    int write_active;
    int reading;
    int closing;
    int lingering;
    int peer_eof;
    int counted; /* included in stats.connections_open */
    enum timer_kind timer_kind;
    uint64_t timer_seq;
    size_t discarded;
};

struct node_http_server
{
    uv_loop_t *loop;
    uv_tcp_t listener;
    uv_timer_t retry_timer; /* retries an accept after out of memory */
    int handles;            /* listener and retry_timer while open */
    struct node_http_server_config config;
    node_http_handler_cb handler;
    void *arg;
    struct node_http_server_stats stats;
    struct conn *conns;
    unsigned n_rejecting;
    uint8_t *read_buf;
    int port;
    int closing;
    void (*done)(void *arg);
    void *done_arg;
};

static void conn_close(struct conn *c);
static void pump(struct conn *c);

static void server_maybe_done(struct node_http_server *server)
{
    if (!server->closing || server->handles > 0 || server->conns != NULL) {
        return;
    }
    void (*done)(void *) = server->done;
    void *done_arg = server->done_arg;
    sm_free(server->read_buf);
    sm_free(server);
    if (done != NULL) {
        done(done_arg);
    }
}

static void on_conn_handle_closed(uv_handle_t *handle)
{
    struct conn *c = handle->data;
    if (--c->handles > 0) {
        return;
    }
    struct node_http_server *server = c->server;
    if (c->prev != NULL) {
        c->prev->next = c->next;
    } else {
        server->conns = c->next;
    }
    if (c->next != NULL) {
        c->next->prev = c->prev;
    }
    if (c->session == NULL) {
        server->n_rejecting--;
    }
    node__http_session_free(c->session);
    node__http_buf_free(&c->writing);
    sm_free(c);
    server_maybe_done(server);
}

static void conn_close(struct conn *c)
{
    if (c->closing) {
        return;
    }
    c->closing = 1;
    if (c->counted) {
        c->server->stats.connections_open--;
        c->counted = 0;
    }
    uv_close((uv_handle_t *)&c->tcp, on_conn_handle_closed);
    uv_close((uv_handle_t *)&c->timer, on_conn_handle_closed);
}

static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    struct conn *c = handle->data;
    *buf = uv_buf_init((char *)c->server->read_buf, READ_BUF_SIZE);
}

static void on_timer(uv_timer_t *timer)
{
    struct conn *c = timer->data;
    enum timer_kind kind = c->timer_kind;
    c->timer_kind = TIMER_NONE;
    if ((kind == TIMER_HEAD || kind == TIMER_BODY) && c->session != NULL &&
        !c->lingering) {
        node__http_session_timeout(c->session);
        pump(c);
        return;
    }
    conn_close(c);
}

static void arm_timer(struct conn *c, enum timer_kind kind, uint64_t seq)
{
    if (kind == c->timer_kind && seq == c->timer_seq) {
        return;
    }
    const struct node_http_server_config *cfg = &c->server->config;
    uint64_t ms;
    switch (kind) {
        case TIMER_FRESH:
        case TIMER_HEAD:
            ms = cfg->header_timeout_ms;
            break;
        case TIMER_BODY:
            ms = cfg->body_timeout_ms;
            break;
        case TIMER_LINGER:
            ms = LINGER_MS;
            break;
        default:
            ms = cfg->idle_timeout_ms;
            break;
    }
    c->timer_kind = kind;
    c->timer_seq = seq;
    uv_timer_start(&c->timer, on_timer, ms, 0);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);

static void set_reading(struct conn *c, int on)
{
    if (on && !c->reading) {
        if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) {
            conn_close(c);
            return;
        }
        c->reading = 1;
    } else if (!on && c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = 0;
    }
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    (void)req;
    (void)status;
}

/* All output is written and no request will follow: close, lingering
 * unless the client has already closed its side. */
static void finish(struct conn *c)
{
    if (c->closing || c->lingering) {
        return;
    }
    if (c->peer_eof) {
        conn_close(c);
        return;
    }
    c->lingering = 1;
    if (uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, on_shutdown) !=
        0) {
        conn_close(c);
        return;
    }
    set_reading(c, 1);
    if (!c->closing) {
        arm_timer(c, TIMER_LINGER, 0);
    }
}

static void on_write(uv_write_t *req, int status)
{
    struct conn *c = req->data;
    c->write_active = 0;
    node__http_buf_reset(&c->writing, 0);
    if (status < 0 || c->closing) {
        conn_close(c);
        return;
    }
    if (c->session == NULL) {
        finish(c);
        return;
    }
    pump(c);
}

static int start_write(struct conn *c)
{
    uv_buf_t b = uv_buf_init((char *)c->writing.data, (unsigned)c->writing.len);
    c->write_req.data = c;
    if (uv_write(&c->write_req, (uv_stream_t *)&c->tcp, &b, 1, on_write) != 0) {
        conn_close(c);
        return -1;
    }
    c->write_active = 1;
    return 0;
}

/* Moves output to the socket, resumes a paused session when it can, and
 * sets reading and the timer for the new state. */
static void pump(struct conn *c)
{
    struct node__http_session *s = c->session;
    if (c->closing || c->lingering) {
        return;
    }
    for (;;) {
        if (!c->write_active &&
            node__http_session_take_output(s, &c->writing)) {
            if (start_write(c) != 0) {
                return;
            }
        }
        if (!node__http_session_can_resume(s)) {
            break;
        }
        node__http_session_resume(s);
    }
    int closing = node__http_session_closing(s);
    if (closing && !c->write_active) {
        finish(c);
        return;
    }
    set_reading(c, !closing && !c->peer_eof && !node__http_session_paused(s));
    if (c->closing) {
        return;
    }
    uint64_t seq;
    enum node__http_phase phase = node__http_session_phase(s, &seq);
    enum timer_kind kind;
    if (c->write_active || node__http_session_paused(s)) {
        kind = TIMER_WRITE;
    } else if (phase == NODE__HTTP_FRESH) {
        kind = TIMER_FRESH;
    } else if (phase == NODE__HTTP_IDLE) {
        kind = TIMER_IDLE;
    } else if (phase == NODE__HTTP_HEAD) {
        kind = TIMER_HEAD;
    } else {
        kind = TIMER_BODY;
    }
    arm_timer(c, kind, seq);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = stream->data;
    if (nread == 0 || c->closing) {
        return;
    }
    if (nread < 0) {
        if (nread != UV_EOF || c->lingering || c->session == NULL) {
            conn_close(c);
            return;
        }
        c->peer_eof = 1;
        set_reading(c, 0);
        node__http_session_eof(c->session);
        pump(c);
        return;
    }
    c->server->stats.bytes_received += (uint64_t)nread;
    if (c->lingering || c->session == NULL) {
        c->discarded += (size_t)nread;
        if (c->discarded > LINGER_MAX_BYTES) {
            conn_close(c);
        }
        return;
    }
    node__http_session_feed(c->session, (const uint8_t *)buf->base,
                            (size_t)nread);
    pump(c);
}

/* Answers 503 on an accepted connection over the limit, then closes. */
static void reject(struct conn *c)
{
    struct node_http_server *server = c->server;
    server->stats.connections_rejected++;
    server->stats.errors_by_server++;
    server->n_rejecting++;
    static const char body[] = "{\"error\":\"Service Unavailable\"}";
    if (server->n_rejecting > MAX_REJECTING ||
        format_response(&c->writing, 503, "application/json", body,
                        sizeof body - 1, REJECT_RETRY_S, "close", 0) != SM_OK) {
        conn_close(c);
        return;
    }
    set_reading(c, 1);
    if (c->closing || start_write(c) != 0) {
        return;
    }
    arm_timer(c, TIMER_LINGER, 0);
}

/* Accepts one pending connection. Returns SM_ENOMEM when no memory was
 * left to do it (the connection stays queued). */
static int accept_one(struct node_http_server *server)
{
    struct conn *c = sm_calloc(1, sizeof *c);
    if (c == NULL) {
        return SM_ENOMEM;
    }
    c->server = server;
    uv_tcp_init(server->loop, &c->tcp);
    uv_timer_init(server->loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    c->handles = 2;
    c->session = NULL;
    c->next = server->conns;
    if (server->conns != NULL) {
        server->conns->prev = c;
    }
    server->conns = c;
    int over = server->stats.connections_open >= server->config.max_connections;
    if (uv_accept((uv_stream_t *)&server->listener, (uv_stream_t *)&c->tcp) !=
        0) {
        /* Count it as rejecting so that the close path balances. */
        server->n_rejecting++;
        conn_close(c);
        return SM_OK;
    }
    if (over) {
        reject(c);
        return SM_OK;
    }
    if (node__http_session_new(&server->config, server->handler, server->arg,
                               &server->stats, &c->session) != SM_OK) {
        server->n_rejecting++;
        conn_close(c);
        return SM_OK;
    }
    server->stats.connections_accepted++;
    server->stats.connections_open++;
    c->counted = 1;
    uv_tcp_nodelay(&c->tcp, 1);
    pump(c);
    return SM_OK;
}

static void on_retry_timer(uv_timer_t *timer)
{
    struct node_http_server *server = timer->data;
    if (accept_one(server) == SM_ENOMEM) {
        uv_timer_start(&server->retry_timer, on_retry_timer, ACCEPT_RETRY_MS,
                       0);
    }
}

static void on_connection(uv_stream_t *listener, int status)
{
    struct node_http_server *server = listener->data;
    if (status < 0 || server->closing) {
        return;
    }
    if (accept_one(server) == SM_ENOMEM) {
        /* libuv stops watching the listener until uv_accept is called. */
        uv_timer_start(&server->retry_timer, on_retry_timer, ACCEPT_RETRY_MS,
                       0);
    }
}

static int sys_err(int errnum, char *errmsg, const char *what, const char *host)
{
    sm_errmsg_printf(errmsg, "%s %s: %s", what, host, strerror(errnum));
    switch (errnum) {
        case EADDRINUSE:
            return SM_EEXIST;
        case EACCES:
        case EPERM:
            return SM_EPERM;
        case EADDRNOTAVAIL:
        case EAFNOSUPPORT:
        case EINVAL:
            return SM_EINVAL;
        case ENOMEM:
        case ENOBUFS:
            return SM_ENOMEM;
        default:
            return SM_EIO;
    }
}

static void on_failed_listener_closed(uv_handle_t *handle)
{
    struct node_http_server *server = handle->data;
    sm_free(server->read_buf);
    sm_free(server);
}

/* Opens, binds and listens on a socket for @host:@port. Returns the file
 * descriptor, or -1 with the error code in @rv and a message in @errmsg. */
static int open_listener(const char *host,
                         int port,
                         int *rv,
                         int *bound_port,
                         char *errmsg)
{
    struct sockaddr_storage ss;
    socklen_t ss_len;
    memset(&ss, 0, sizeof ss);
    if (port < 0 || port > 65535) {
        sm_errmsg_printf(errmsg, "port %d out of range", port);
        *rv = SM_EINVAL;
        return -1;
    }
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) == 0) {
        ss_len = sizeof(struct sockaddr_in);
    } else if (uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss) == 0) {
        ss_len = sizeof(struct sockaddr_in6);
    } else {
        sm_errmsg_printf(errmsg, "listen address \"%s\" is not numeric", host);
        *rv = SM_EINVAL;
        return -1;
    }
    int fd =
        socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        *rv = sys_err(errno, errmsg, "socket for", host);
        return -1;
    }
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(fd, (struct sockaddr *)&ss, ss_len) != 0 ||
        listen(fd, SOMAXCONN) != 0) {
        int e = errno;
        close(fd);
        *rv = sys_err(e, errmsg, "listen on", host);
        return -1;
    }
    ss_len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &ss_len) != 0) {
        int e = errno;
        close(fd);
        *rv = sys_err(e, errmsg, "getsockname", host);
        return -1;
    }
    *bound_port = ss.ss_family == AF_INET
                      ? ntohs(((struct sockaddr_in *)&ss)->sin_port)
                      : ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return fd;
}

int node_http_server_start(uv_loop_t *loop,
                           const char *host,
                           int port,
                           const struct node_http_server_config *config,
                           node_http_handler_cb handler,
                           void *arg,
                           struct node_http_server **out,
                           char errmsg[SM_ERRMSG_SIZE])
{
    SM_ASSERT(loop != NULL && host != NULL && handler != NULL && out != NULL);
    struct node_http_server_config cfg = {0};
    if (config != NULL) {
        cfg = *config;
    }
    cfg.max_body = cfg.max_body ? cfg.max_body : DEFAULT_MAX_BODY;
    cfg.max_header = cfg.max_header ? cfg.max_header : DEFAULT_MAX_HEADER;
    cfg.max_connections =
        cfg.max_connections ? cfg.max_connections : DEFAULT_MAX_CONNECTIONS;
    cfg.header_timeout_ms =
        cfg.header_timeout_ms ? cfg.header_timeout_ms : DEFAULT_HEADER_MS;
    cfg.body_timeout_ms =
        cfg.body_timeout_ms ? cfg.body_timeout_ms : DEFAULT_BODY_MS;
    cfg.idle_timeout_ms =
        cfg.idle_timeout_ms ? cfg.idle_timeout_ms : DEFAULT_IDLE_MS;
    if (cfg.max_header >= HTTP_MAX_HEADER_SIZE) {
        /* http-parser's own cap is process-wide; only ever raise it. */
        uint64_t cap = (uint64_t)cfg.max_header + 1024;
        http_parser_set_max_header_size(cap > UINT32_MAX ? UINT32_MAX
                                                         : (uint32_t)cap);
    }

    int rv = SM_OK, bound_port = 0;
    int fd = open_listener(host, port, &rv, &bound_port, errmsg);
    if (fd < 0) {
        return rv;
    }
    struct node_http_server *server = sm_calloc(1, sizeof *server);
    uint8_t *read_buf = sm_malloc(READ_BUF_SIZE);
    if (server == NULL || read_buf == NULL) {
        close(fd);
        sm_free(server);
        sm_free(read_buf);
        sm_errmsg_printf(errmsg, "http server: %s", sm_strerror(SM_ENOMEM));
        return SM_ENOMEM;
    }
    server->loop = loop;
    server->config = cfg;
    server->handler = handler;
    server->arg = arg;
    server->read_buf = read_buf;
    server->port = bound_port;
    uv_tcp_init(loop, &server->listener);
    server->listener.data = server;
    int uvrv = uv_tcp_open(&server->listener, fd);
    if (uvrv == 0) {
        uvrv = uv_listen((uv_stream_t *)&server->listener, SOMAXCONN,
                         on_connection);
    } else {
        close(fd);
    }
    if (uvrv != 0) {
        /* The handle exists now, so its memory goes in its close callback,
         * the next time the loop runs. */
        sm_errmsg_printf(errmsg, "listen on %s: %s", host, uv_strerror(uvrv));
        uv_close((uv_handle_t *)&server->listener, on_failed_listener_closed);
        return SM_EIO;
    }
    uv_timer_init(loop, &server->retry_timer);
    server->retry_timer.data = server;
    server->handles = 2;
    *out = server;
    return SM_OK;
}

int node_http_server_port(const struct node_http_server *server)
{
    return server->port;
}

void node_http_server_stats(const struct node_http_server *server,
                            struct node_http_server_stats *out)
{
    *out = server->stats;
}

static void on_server_handle_closed(uv_handle_t *handle)
{
    struct node_http_server *server = handle->data;
    server->handles--;
    server_maybe_done(server);
}

void node_http_server_close(struct node_http_server *server,
                            void (*done)(void *arg),
                            void *arg)
{
    SM_ASSERT(!server->closing);
    server->closing = 1;
    server->done = done;
    server->done_arg = arg;
    uv_close((uv_handle_t *)&server->listener, on_server_handle_closed);
    uv_close((uv_handle_t *)&server->retry_timer, on_server_handle_closed);
    for (struct conn *c = server->conns; c != NULL; c = c->next) {
        conn_close(c);
    }
}
