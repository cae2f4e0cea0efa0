/* HTTP/1.1 GET client for scrapes: one request per connection.
 *
 * A fetch is one heap object holding a timer for the total deadline, a TCP
 * handle and, for names, a getaddrinfo request. Names may resolve to
 * several addresses; they are tried in order, closing and re-creating the
 * TCP handle between attempts. The response is parsed by http-parser,
 * which handles Content-Length, chunked and close-delimited bodies; bodies
 * sent with Content-Encoding: gzip pass through the bounded inflater.
 *
 * complete() runs the user's callback exactly once, then closes the
 * handles and cancels the resolver; the object is freed when the last of
 * them reports back. A failure found before the loop gets control (a
 * connect that fails at once) is reported through the timer restarted at
 * zero, so the callback never runs inside node_http_get(). */
#include <limits.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <http_parser.h>

#include "base/alloc.h"
#include "base/err.h"
#include "node/http.h"
#include "node/http_body.h"

#define DEFAULT_MAX_BODY   (20u << 20)
#define DEFAULT_TIMEOUT_MS 60000u
#define READ_BUF_SIZE      16384u
/* Bound on each captured response header. */
#define MAX_HEADER_VALUE 4096u

struct get
{
    uv_loop_t *loop;
    node_http_get_cb cb;
    void *arg;
    uv_timer_t timer;
    uv_tcp_t tcp;
    uv_connect_t connect_req;
    uv_write_t write_req;
    uv_getaddrinfo_t gai;
    int handles;     /* timer and tcp while open */
    int gai_active;  /* the resolver still owes a callback */
    int tcp_closing; /* tcp is closing to try the next address */
    int done;        /* the user's callback has run */
    int pending;     /* status to report from the zero timer, or SM_OK */
    uint64_t timeout_ms;

    char *host;      /* NUL-terminated, without brackets */
    char service[8]; /* port as text */
    struct sockaddr_storage numeric;
    int numeric_left;       /* the numeric address is still to try */
    struct addrinfo *addrs; /* from getaddrinfo */
    struct addrinfo *next;  /* next address to try */
    int last_connect_err;

    struct node__http_buf request;
    http_parser parser;
    struct node__http_buf field;
    int in_value;
    struct node__http_buf *target;
    struct node__http_buf content_type, encoding;
    struct node__http_buf body;
    struct node__http_inflate inflate;
    int gzip;
    uint64_t body_wire;
    size_t max_body;
    int error; /* set by a parser callback that returned -1 */
    char errmsg[SM_ERRMSG_SIZE];
    char read_buf[READ_BUF_SIZE];
};

static void maybe_free(struct get *g)
{
    if (g->handles > 0 || g->gai_active) {
        return;
    }
    if (g->addrs != NULL) {
        uv_freeaddrinfo(g->addrs);
    }
    node__http_inflate_free(&g->inflate);
    node__http_buf_free(&g->request);
    node__http_buf_free(&g->field);
    node__http_buf_free(&g->content_type);
    node__http_buf_free(&g->encoding);
    node__http_buf_free(&g->body);
    sm_free(g->host);
    sm_free(g);
}

static void on_handle_closed(uv_handle_t *handle)
{
    struct get *g = handle->data;
    g->handles--;
    maybe_free(g);
}

/* Reports @status to the user (once) and starts tearing down. */
static void complete(struct get *g, int status)
{
    if (g->done) {
        return;
    }
    g->done = 1;
    struct node_http_result result = {
        .status = status,
        .http_status = g->parser.status_code,
        .content_type = node__http_buf_str(&g->content_type),
        .errmsg = status == SM_OK ? "" : g->errmsg,
    };
    if (status == SM_OK) {
        result.body = g->body.len > 0 ? g->body.data : NULL;
        result.body_len = g->body.len;
    }
    g->cb(g->arg, &result);
    uv_timer_stop(&g->timer);
    uv_close((uv_handle_t *)&g->timer, on_handle_closed);
    if (!g->tcp_closing) {
        uv_close((uv_handle_t *)&g->tcp, on_handle_closed);
    }
    if (g->gai_active) {
        uv_cancel((uv_req_t *)&g->gai);
    }
}

static void on_timer(uv_timer_t *timer)
{
    struct get *g = timer->data;
    if (g->pending != SM_OK) {
        complete(g, g->pending);
        return;
    }
    sm_errmsg_printf(g->errmsg, "GET %s: no complete response within %llu ms",
                     g->host, (unsigned long long)g->timeout_ms);
    complete(g, SM_ETIMEDOUT);
}

/* Reports @status on the next loop iteration (used where the callback
 * must not run yet). */
static void complete_soon(struct get *g, int status)
{
    g->pending = status;
    uv_timer_start(&g->timer, on_timer, 0, 0);
}

/* ---- Response parsing ---------------------------------------------------- */

static int fail(struct get *g, int status, const char *why)
{
    if (g->error == SM_OK) {
        g->error = status;
        sm_errmsg_printf(g->errmsg, "GET %s: %s", g->host, why);
    }
    return -1;
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    struct get *g = p->data;
    if (g->in_value) {
        g->in_value = 0;
        node__http_buf_reset(&g->field, 256);
    }
    if (node__http_buf_append(&g->field, at, len, MAX_HEADER_VALUE) != SM_OK) {
        g->target = NULL;
        node__http_buf_reset(&g->field, 256);
    }
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    struct get *g = p->data;
    int rv = SM_OK;
    if (!g->in_value) {
        g->in_value = 1;
        const char *name = node__http_buf_str(&g->field);
        g->target = NULL;
        if (strcasecmp(name, "content-type") == 0 && g->content_type.len == 0) {
            g->target = &g->content_type;
        } else if (strcasecmp(name, "content-encoding") == 0) {
            g->target = &g->encoding;
            if (g->encoding.len > 0) {
                rv = node__http_buf_append(&g->encoding, ",", 1,
                                           MAX_HEADER_VALUE);
            }
        }
    }
    if (rv == SM_OK && g->target != NULL) {
        rv = node__http_buf_append(g->target, at, len, MAX_HEADER_VALUE);
    }
    if (rv == SM_ENOMEM) {
        return fail(g, SM_ENOMEM, "out of memory");
    }
    return rv == SM_OK ? 0 : fail(g, SM_EMALFORMED, "header value too long");
}

static int on_headers_complete(http_parser *p)
{
    struct get *g = p->data;
    while (g->content_type.len > 0 &&
           (g->content_type.data[g->content_type.len - 1] == ' ' ||
            g->content_type.data[g->content_type.len - 1] == '\t')) {
        g->content_type.data[--g->content_type.len] = 0;
    }
    if (p->status_code / 100 == 1) {
        return 0; /* interim response, no body */
    }
    int kind = node__http_encoding_kind(node__http_buf_str(&g->encoding));
    if (kind < 0) {
        return fail(g, SM_EMALFORMED, "unsupported Content-Encoding");
    }
    uint64_t length = p->content_length;
    int has_length = !(p->flags & F_CHUNKED) && length != ULLONG_MAX;
    if (kind == 1) {
        if (has_length && length > node__http_wire_limit(g->max_body)) {
            return fail(g, SM_ETOOBIG, "compressed body over the limit");
        }
        if (node__http_inflate_init(&g->inflate) != SM_OK) {
            return fail(g, SM_ENOMEM, "out of memory");
        }
        g->gzip = 1;
    } else if (has_length && length > g->max_body) {
        return fail(g, SM_ETOOBIG, "body over the limit");
    }
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    struct get *g = p->data;
    g->body_wire += len;
    int rv;
    if (g->gzip) {
        if (g->body_wire > node__http_wire_limit(g->max_body)) {
            return fail(g, SM_ETOOBIG, "compressed body over the limit");
        }
        rv = node__http_inflate_feed(&g->inflate, (const uint8_t *)at, len,
                                     &g->body, g->max_body);
    } else {
        rv = node__http_buf_append(&g->body, at, len, g->max_body);
    }
    switch (rv) {
        case SM_OK:
            return 0;
        case SM_ETOOBIG:
            return fail(g, SM_ETOOBIG, "body over the limit");
        case SM_EMALFORMED:
            return fail(g, SM_EMALFORMED, "bad gzip body");
        default:
            return fail(g, SM_ENOMEM, "out of memory");
    }
}

static int on_message_complete(http_parser *p)
{
    struct get *g = p->data;
    if (p->status_code / 100 == 1) {
        /* 100 Continue and friends: the real response follows. */
        node__http_buf_reset(&g->content_type, 256);
        node__http_buf_reset(&g->encoding, 256);
        g->in_value = 0;
        node__http_buf_reset(&g->field, 256);
        return 0;
    }
    if (g->gzip && g->body_wire > 0 &&
        node__http_inflate_finish(&g->inflate) != SM_OK) {
        return fail(g, SM_EMALFORMED, "truncated gzip body");
    }
    complete(g, SM_OK);
    return -1; /* ignore anything after the response */
}

static const http_parser_settings settings = {
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* ---- Connection ---------------------------------------------------------- */

static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    struct get *g = handle->data;
    *buf = uv_buf_init(g->read_buf, sizeof g->read_buf);
}

static void after_parse(struct get *g)
{
    if (g->done) {
        return;
    }
    if (g->error != SM_OK) {
        complete(g, g->error);
        return;
    }
    enum http_errno e = HTTP_PARSER_ERRNO(&g->parser);
    if (e != HPE_OK) {
        sm_errmsg_printf(g->errmsg, "GET %s: bad response: %s", g->host,
                         http_errno_description(e));
        complete(g, SM_EMALFORMED);
    }
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    struct get *g = stream->data;
    if (g->done || nread == 0) {
        return;
    }
    if (nread == UV_EOF) {
        http_parser_execute(&g->parser, &settings, NULL, 0);
        if (!g->done && g->error == SM_OK) {
            sm_errmsg_printf(g->errmsg,
                             "GET %s: connection closed before the end of "
                             "the response",
                             g->host);
            complete(g, SM_EIO);
            return;
        }
        after_parse(g);
        return;
    }
    if (nread < 0) {
        sm_errmsg_printf(g->errmsg, "GET %s: read: %s", g->host,
                         uv_strerror((int)nread));
        complete(g, SM_EIO);
        return;
    }
    http_parser_execute(&g->parser, &settings, buf->base, (size_t)nread);
    after_parse(g);
}

static void on_write(uv_write_t *req, int status)
{
    struct get *g = req->data;
    if (g->done || status == 0) {
        return;
    }
    sm_errmsg_printf(g->errmsg, "GET %s: write: %s", g->host,
                     uv_strerror(status));
    complete(g, SM_EIO);
}

static void try_next_address(struct get *g);

static void on_tcp_retry_closed(uv_handle_t *handle)
{
    struct get *g = handle->data;
    g->tcp_closing = 0;
    if (g->done) {
        g->handles--;
        maybe_free(g);
        return;
    }
    uv_tcp_init(g->loop, &g->tcp);
    g->tcp.data = g;
    try_next_address(g);
}

static int more_addresses(const struct get *g)
{
    return g->numeric_left || g->next != NULL;
}

static void connect_failed(struct get *g, int uverr)
{
    g->last_connect_err = uverr;
    if (more_addresses(g)) {
        g->tcp_closing = 1;
        uv_close((uv_handle_t *)&g->tcp, on_tcp_retry_closed);
        return;
    }
    sm_errmsg_printf(g->errmsg, "GET %s: connect to port %s: %s", g->host,
                     g->service, uv_strerror(uverr));
    complete(g, SM_EIO);
}

static void on_connect(uv_connect_t *req, int status)
{
    struct get *g = req->data;
    if (g->done) {
        return;
    }
    if (status < 0) {
        connect_failed(g, status);
        return;
    }
    uv_tcp_nodelay(&g->tcp, 1);
    uv_buf_t b = uv_buf_init((char *)g->request.data, (unsigned)g->request.len);
    g->write_req.data = g;
    int rv = uv_write(&g->write_req, (uv_stream_t *)&g->tcp, &b, 1, on_write);
    if (rv == 0) {
        rv = uv_read_start((uv_stream_t *)&g->tcp, on_alloc, on_read);
    }
    if (rv != 0) {
        sm_errmsg_printf(g->errmsg, "GET %s: %s", g->host, uv_strerror(rv));
        complete(g, SM_EIO);
    }
}

static void try_next_address(struct get *g)
{
    const struct sockaddr *sa = NULL;
    if (g->numeric_left) {
        g->numeric_left = 0;
        sa = (const struct sockaddr *)&g->numeric;
    }
    while (sa == NULL && g->next != NULL) {
        struct addrinfo *ai = g->next;
        g->next = ai->ai_next;
        if (ai->ai_family == AF_INET || ai->ai_family == AF_INET6) {
            sa = ai->ai_addr;
        }
    }
    if (sa == NULL) {
        connect_failed(
            g, g->last_connect_err ? g->last_connect_err : UV_EADDRNOTAVAIL);
        return;
    }
    g->connect_req.data = g;
    int rv = uv_tcp_connect(&g->connect_req, &g->tcp, sa, on_connect);
    if (rv != 0) {
        connect_failed(g, rv);
    }
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct get *g = req->data;
    g->gai_active = 0;
    if (g->done) {
        if (res != NULL) {
            uv_freeaddrinfo(res);
        }
        maybe_free(g);
        return;
    }
    if (status < 0) {
        sm_errmsg_printf(g->errmsg, "GET %s: resolve: %s", g->host,
                         uv_strerror(status));
        complete(g, SM_EIO);
        return;
    }
    g->addrs = res;
    g->next = res;
    try_next_address(g);
}

/* ---- Entry point ----------------------------------------------------------
 */

static int text_safe(const char *s)
{
    for (; *s != 0; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c < 0x20 && c != '\t') || c == 0x7f) {
            return 0;
        }
    }
    return 1;
}

/* Fills host, service, numeric address and the request text of @g from
 * @url. Returns SM_OK, SM_EINVAL or SM_ENOMEM. */
static int prepare(struct get *g, const char *url, const char *accept)
{
    size_t url_len = strlen(url);
    if (url_len < 7 || strncasecmp(url, "http://", 7) != 0 ||
        url_len > UINT16_MAX || !text_safe(accept)) {
        return SM_EINVAL;
    }
    struct http_parser_url u;
    http_parser_url_init(&u);
    if (http_parser_parse_url(url, url_len, 0, &u) != 0 ||
        !(u.field_set & (1u << UF_HOST)) ||
        ((u.field_set & (1u << UF_PORT)) && u.port == 0)) {
        return SM_EINVAL;
    }
    g->host =
        sm_strndup(url + u.field_data[UF_HOST].off, u.field_data[UF_HOST].len);
    if (g->host == NULL) {
        return SM_ENOMEM;
    }
    unsigned port = (u.field_set & (1u << UF_PORT)) ? u.port : 80;
    snprintf(g->service, sizeof g->service, "%u", port);
    if (uv_ip4_addr(g->host, (int)port, (struct sockaddr_in *)&g->numeric) ==
            0 ||
        uv_ip6_addr(g->host, (int)port, (struct sockaddr_in6 *)&g->numeric) ==
            0) {
        g->numeric_left = 1;
    }
    /* Host header: the authority as given, IPv6 in brackets. */
    const char *lb = strchr(g->host, ':') != NULL ? "[" : "";
    const char *rb = *lb ? "]" : "";
    int rv = node__http_buf_printf(&g->request, "GET ");
    if (rv == SM_OK && (u.field_set & (1u << UF_PATH))) {
        rv = node__http_buf_append(&g->request, url + u.field_data[UF_PATH].off,
                                   u.field_data[UF_PATH].len, SIZE_MAX);
    } else if (rv == SM_OK) {
        rv = node__http_buf_append(&g->request, "/", 1, SIZE_MAX);
    }
    if (rv == SM_OK && (u.field_set & (1u << UF_QUERY))) {
        rv = node__http_buf_printf(&g->request, "?%.*s",
                                   (int)u.field_data[UF_QUERY].len,
                                   url + u.field_data[UF_QUERY].off);
    }
    if (rv == SM_OK) {
        rv = node__http_buf_printf(
            &g->request,
            " HTTP/1.1\r\n"
            "Host: %s%s%s%s%s\r\n"
            "Accept: %s\r\n"
            "Accept-Encoding: gzip\r\n"
            "Connection: close\r\n"
            "User-Agent: sagemesh\r\n"
            "\r\n",
            lb, g->host, rb, (u.field_set & (1u << UF_PORT)) ? ":" : "",
            (u.field_set & (1u << UF_PORT)) ? g->service : "", accept);
    }
    return rv;
}

int node_http_get(uv_loop_t *loop,
                  const char *url,
                  const char *accept,
                  uint64_t timeout_ms,
                  size_t max_body,
                  node_http_get_cb cb,
                  void *arg)
{
    if (loop == NULL || url == NULL || cb == NULL) {
        return SM_EINVAL;
    }
    struct get *g = sm_calloc(1, sizeof *g);
    if (g == NULL) {
        return SM_ENOMEM;
    }
    int rv = prepare(g, url, accept != NULL ? accept : "*/*");
    if (rv != SM_OK) {
        node__http_buf_free(&g->request);
        sm_free(g->host);
        sm_free(g);
        return rv;
    }
    g->loop = loop;
    g->cb = cb;
    g->arg = arg;
    g->timeout_ms = timeout_ms ? timeout_ms : DEFAULT_TIMEOUT_MS;
    g->max_body = max_body ? max_body : DEFAULT_MAX_BODY;
    http_parser_init(&g->parser, HTTP_RESPONSE);
    g->parser.data = g;

    /* From here on nothing fails synchronously: errors go to the callback. */
    uv_timer_init(loop, &g->timer);
    uv_tcp_init(loop, &g->tcp);
    g->timer.data = g;
    g->tcp.data = g;
    g->handles = 2;
    uv_timer_start(&g->timer, on_timer, g->timeout_ms, 0);
    if (g->numeric_left) {
        g->numeric_left = 0;
        g->connect_req.data = g;
        rv = uv_tcp_connect(&g->connect_req, &g->tcp,
                            (const struct sockaddr *)&g->numeric, on_connect);
        if (rv != 0) {
            sm_errmsg_printf(g->errmsg, "GET %s: connect to port %s: %s",
                             g->host, g->service, uv_strerror(rv));
            complete_soon(g, SM_EIO);
        }
        return SM_OK;
    }
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    g->gai.data = g;
    rv =
        uv_getaddrinfo(loop, &g->gai, on_resolved, g->host, g->service, &hints);
    if (rv != 0) {
        sm_errmsg_printf(g->errmsg, "GET %s: resolve: %s", g->host,
                         uv_strerror(rv));
        complete_soon(g, SM_EIO);
        return SM_OK;
    }
    g->gai_active = 1;
    return SM_OK;
}
