/* Tests for the HTTP server and client on a real in-process libuv loop:
 * bodies (length, chunked, gzip), limits, keep-alive, pipelining, timeouts,
 * the connection cap, the GET client, and clean shutdown. */
#include <malloc.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <uv.h>
#include <zlib.h>

#include "base/alloc.h"
#include "base/err.h"
#include "check.h"
#include "node/http.h"
#include "node/http_body.h"

/* Upper bound on any wait; tests normally finish each wait in milliseconds. */
#define WAIT_MS 2000

static uv_loop_t loop;
static uv_timer_t guard;
static int guard_fired;
static struct node_http_server *server;
static int server_done;

/* ---- Loop driving -------------------------------------------------------- */

static void on_guard(uv_timer_t *t)
{
    (void)t;
    guard_fired = 1;
}

/* Runs the loop until @pred(@arg) holds or @ms pass. Returns pred's value. */
static int run_until(int (*pred)(void *), void *arg, uint64_t ms)
{
    guard_fired = 0;
    /* Repeating: libuv 1.44 runs due timers before polling in
     * UV_RUN_ONCE, so a one-shot guard that fired there would leave the
     * poll without a timeout. */
    uv_timer_start(&guard, on_guard, ms, 10);
    for (int i = 0; i < 1000000 && !pred(arg) && !guard_fired; i++) {
        uv_run(&loop, UV_RUN_ONCE);
    }
    uv_timer_stop(&guard);
    return pred(arg);
}

static int is_set(void *arg)
{
    return *(int *)arg != 0;
}

static int never(void *arg)
{
    (void)arg;
    return 0;
}

/* ---- The handler under test ---------------------------------------------- */

static uint32_t fnv1a(const uint8_t *p, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) {
        h = (h ^ p[i]) * 16777619u;
    }
    return h;
}

static struct
{
    char method[16];
    char path[64];
    char query[64];
    char content_type[64];
    char user_agent[64];
    char authorization[64];
    size_t body_len;
    int calls;
} last;

static char reply[8192];

static void handler(void *arg,
                    const struct node_http_request *req,
                    struct node_http_response *res)
{
    (void)arg;
    last.calls++;
    snprintf(last.method, sizeof last.method, "%s", req->method);
    snprintf(last.path, sizeof last.path, "%s", req->path);
    snprintf(last.query, sizeof last.query, "%s", req->query);
    snprintf(last.content_type, sizeof last.content_type, "%s",
             req->content_type);
    snprintf(last.user_agent, sizeof last.user_agent, "%s", req->user_agent);
    snprintf(last.authorization, sizeof last.authorization, "%s",
             req->authorization);
    last.body_len = req->body_len;
    CHECK((req->body == NULL) == (req->body_len == 0));
    if (strcmp(req->path, "/retry") == 0) {
        res->status = 429;
        res->retry_after_s = 7;
        return;
    }
    if (strcmp(req->path, "/notfound") == 0) {
        res->status = 404;
        res->content_type = "text/plain";
        res->body = "nope";
        res->body_len = 4;
        return;
    }
    if (strcmp(req->path, "/big") == 0) {
        memset(reply, 'x', 5000);
        res->status = 200;
        res->body = reply;
        res->body_len = 5000;
        return;
    }
    int n = snprintf(reply, sizeof reply, "%s %s len=%zu sum=%08x", req->method,
                     req->path, req->body_len, fnv1a(req->body, req->body_len));
    res->status = 200;
    res->content_type = "text/plain";
    res->body = reply;
    res->body_len = (size_t)n;
}

/* The body the handler answers for @body. */
static const char *echo_of(const char *method,
                           const char *path,
                           const uint8_t *body,
                           size_t len)
{
    static char buf[256];
    snprintf(buf, sizeof buf, "%s %s len=%zu sum=%08x", method, path, len,
             fnv1a(body, len));
    return buf;
}

static void start_server(const struct node_http_server_config *cfg)
{
    char errmsg[SM_ERRMSG_SIZE];
    REQUIRE_OK(node_http_server_start(&loop, "127.0.0.1", 0, cfg, handler, NULL,
                                      &server, errmsg));
    REQUIRE(node_http_server_port(server) > 0);
}

static void on_server_done(void *arg)
{
    *(int *)arg = 1;
}

static void close_server(void)
{
    if (server != NULL) {
        server_done = 0;
        node_http_server_close(server, on_server_done, &server_done);
        server = NULL;
        CHECK(run_until(is_set, &server_done, WAIT_MS));
    }
}

static struct node_http_server_stats stats(void)
{
    struct node_http_server_stats st;
    node_http_server_stats(server, &st);
    return st;
}

/* ---- Raw client sockets ---------------------------------------------------
 */

struct raw
{
    uv_tcp_t tcp;
    uv_connect_t connect_req;
    int open;
    int connected;
    int eof;
    char buf[1 << 16];
    size_t len;
    size_t dropped; /* bytes read after buf filled up */
};

static char scratch[1 << 16];

static struct raw raws[3];

struct raw_write
{
    uv_write_t req;
    char data[];
};

static void raw_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    struct raw *r = h->data;
    if (r->len + 1 < sizeof r->buf) {
        *buf = uv_buf_init(r->buf + r->len,
                           (unsigned)(sizeof r->buf - r->len - 1));
    } else {
        *buf = uv_buf_init(scratch, sizeof scratch);
    }
}

static void raw_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct raw *r = s->data;
    if (n > 0 && buf->base == scratch) {
        r->dropped += (size_t)n;
    } else if (n > 0) {
        r->len += (size_t)n;
    } else if (n < 0) {
        r->eof = 1;
        uv_read_stop(s);
    }
}

static void raw_connected(uv_connect_t *req, int status)
{
    struct raw *r = req->data;
    CHECK_EQ(status, 0);
    if (status == 0) {
        r->connected = 1;
        uv_read_start((uv_stream_t *)&r->tcp, raw_alloc, raw_read);
    }
}

static int raw_is_connected(void *arg)
{
    return ((struct raw *)arg)->connected;
}

static struct raw *raw_connect(int i, int port)
{
    struct raw *r = &raws[i];
    memset(r, 0, sizeof *r);
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", port, &sa);
    uv_tcp_init(&loop, &r->tcp);
    r->tcp.data = r;
    r->open = 1;
    r->connect_req.data = r;
    REQUIRE_OK(uv_tcp_connect(&r->connect_req, &r->tcp,
                              (const struct sockaddr *)&sa, raw_connected));
    REQUIRE(run_until(raw_is_connected, r, WAIT_MS));
    return r;
}

static void raw_written(uv_write_t *req, int status)
{
    (void)status;
    free(req);
}

static void raw_send(struct raw *r, const void *data, size_t len)
{
    struct raw_write *w = malloc(sizeof *w + len);
    REQUIRE(w != NULL);
    memcpy(w->data, data, len);
    uv_buf_t b = uv_buf_init(w->data, (unsigned)len);
    REQUIRE_OK(uv_write(&w->req, (uv_stream_t *)&r->tcp, &b, 1, raw_written));
}

static void raw_send_str(struct raw *r, const char *s)
{
    raw_send(r, s, strlen(s));
}

static uint64_t target_bytes;

static int server_received(void *arg)
{
    (void)arg;
    return stats().bytes_received >= target_bytes;
}

/* Sends @len bytes @step at a time, letting the server read each piece on
 * its own before the next goes out. */
static void raw_send_slowly(struct raw *r,
                            const void *data,
                            size_t len,
                            size_t step)
{
    const char *p = data;
    for (size_t off = 0; off < len; off += step) {
        size_t n = len - off < step ? len - off : step;
        target_bytes = stats().bytes_received + n;
        raw_send(r, p + off, n);
        REQUIRE(run_until(server_received, NULL, WAIT_MS));
    }
}

static void raw_closed(uv_handle_t *h)
{
    ((struct raw *)h->data)->open = 0;
}

static void raw_close(struct raw *r)
{
    if (r->open && !uv_is_closing((uv_handle_t *)&r->tcp)) {
        uv_close((uv_handle_t *)&r->tcp, raw_closed);
    }
}

static int raw_got_eof(void *arg)
{
    return ((struct raw *)arg)->eof;
}

/* A parsed response from a raw client's buffer. */
struct resp
{
    int status;
    int retry_after;
    int close;
    int keep_alive;
    int has_length;
    const char *body;
    size_t body_len;
};

/* Returns the first "\r\n\r\n" in @p[0..n), or NULL. */
static const char *find_blank_line(const char *p, size_t n)
{
    for (size_t i = 0; i + 4 <= n; i++) {
        if (memcmp(p + i, "\r\n\r\n", 4) == 0) {
            return p + i;
        }
    }
    return NULL;
}

/* Parses up to @max complete responses from @r; returns how many. */
static int parse_resps(const struct raw *r, struct resp *out, int max)
{
    size_t pos = 0;
    int n = 0;
    while (n < max) {
        const char *start = r->buf + pos;
        size_t avail = r->len - pos;
        const char *end = find_blank_line(start, avail);
        if (end == NULL) {
            break;
        }
        struct resp *x = &out[n];
        memset(x, 0, sizeof *x);
        if (sscanf(start, "HTTP/1.1 %d", &x->status) != 1) {
            break;
        }
        long length = 0;
        for (const char *line = memchr(start, '\n', (size_t)(end - start));
             line != NULL && line < end;
             line = memchr(line + 1, '\n', (size_t)(end - line))) {
            const char *h = line + 1;
            if (strncasecmp(h, "Content-Length:", 15) == 0) {
                length = strtol(h + 15, NULL, 10);
                x->has_length = 1;
            } else if (strncasecmp(h, "Retry-After:", 12) == 0) {
                x->retry_after = (int)strtol(h + 12, NULL, 10);
            } else if (strncasecmp(h, "Connection: close", 17) == 0) {
                x->close = 1;
            } else if (strncasecmp(h, "Connection: keep-alive", 22) == 0) {
                x->keep_alive = 1;
            }
        }
        size_t head = (size_t)(end + 4 - start);
        if (avail < head + (size_t)length) {
            break;
        }
        x->body = start + head;
        x->body_len = (size_t)length;
        pos += head + (size_t)length;
        n++;
    }
    return n;
}

static int want_resps;

static int raw_has_resps(void *arg)
{
    struct resp tmp[8];
    return parse_resps(arg, tmp, 8) >= want_resps;
}

/* Waits for @n responses on @r and parses them into @out. */
static void wait_resps(struct raw *r, struct resp *out, int n)
{
    want_resps = n;
    REQUIRE(run_until(raw_has_resps, r, WAIT_MS));
    REQUIRE_EQ(parse_resps(r, out, n), n);
}

static int body_is(const struct resp *x, const char *s)
{
    return x->body_len == strlen(s) && memcmp(x->body, s, x->body_len) == 0;
}

/* ---- gzip helper -----------------------------------------------------------
 */

/* Compresses @len bytes into a malloc'd gzip stream, stored in @out. */
static size_t gzip(const void *data, size_t len, uint8_t **out)
{
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    REQUIRE_EQ(
        deflateInit2(&zs, 9, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY),
        Z_OK);
    size_t cap = deflateBound(&zs, (uLong)len) + 64;
    *out = malloc(cap);
    REQUIRE(*out != NULL);
    zs.next_in = (Bytef *)(uintptr_t)data;
    zs.avail_in = (uInt)len;
    zs.next_out = *out;
    zs.avail_out = (uInt)cap;
    REQUIRE_EQ(deflate(&zs, Z_FINISH), Z_STREAM_END);
    size_t n = cap - zs.avail_out;
    deflateEnd(&zs);
    return n;
}

static uint8_t pattern[20000];

static void fill_pattern(void)
{
    for (size_t i = 0; i < sizeof pattern; i++) {
        pattern[i] = (uint8_t)("telemetry "[i % 10] + (i / 997) % 3);
    }
}

/* ---- Fixture ---------------------------------------------------------------
 */

static void setup(void)
{
    REQUIRE_OK(uv_loop_init(&loop));
    uv_timer_init(&loop, &guard);
    server = NULL;
    memset(raws, 0, sizeof raws);
    memset(&last, 0, sizeof last);
    fill_pattern();
}

static void canned_close(void);

static void teardown(void)
{
    close_server();
    for (size_t i = 0; i < sizeof raws / sizeof raws[0]; i++) {
        raw_close(&raws[i]);
    }
    canned_close();
    uv_close((uv_handle_t *)&guard, NULL);
    sm_heap_set(NULL);
    for (int i = 0; i < 1000 && uv_loop_alive(&loop); i++) {
        uv_run(&loop, UV_RUN_NOWAIT);
    }
    CHECK_EQ(uv_loop_close(&loop), 0);
}

/* ---- Server tests
 * ------------------------------------------------------------ */

static void test_content_length(void)
{
    start_server(NULL);
    struct raw *r = raw_connect(0, node_http_server_port(server));
    raw_send_str(r,
                 "POST /v1/traces?x=1 HTTP/1.1\r\nHost: a\r\n"
                 "Content-Type: application/json \r\nUser-Agent: t/1\r\n"
                 "Authorization: Bearer k\r\nContent-Length: 11\r\n\r\n"
                 "hello world");
    struct resp x;
    wait_resps(r, &x, 1);
    CHECK_EQ(x.status, 200);
    CHECK(!x.close);
    CHECK(body_is(
        &x, echo_of("POST", "/v1/traces", (const uint8_t *)"hello world", 11)));
    CHECK_STR(last.query, "x=1");
    CHECK_STR(last.content_type, "application/json");
    CHECK_STR(last.user_agent, "t/1");
    CHECK_STR(last.authorization, "Bearer k");
    CHECK_EQ(stats().requests, 1);
    CHECK_EQ(stats().connections_open, 1);
    CHECK(!r->eof);
}

static void test_chunked_tiny_writes(void)
{
    start_server(NULL);
    struct raw *r = raw_connect(0, node_http_server_port(server));
    const char *req =
        "POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        "5\r\nhello\r\n1\r\n \r\n5;ext=1\r\nworld\r\n0\r\nX-Trailer: 1\r\n"
        "\r\n";
    raw_send_slowly(r, req, strlen(req), 1);
    struct resp x;
    wait_resps(r, &x, 1);
    CHECK_EQ(x.status, 200);
    CHECK(
        body_is(&x, echo_of("POST", "/c", (const uint8_t *)"hello world", 11)));
}

static void test_gzip_bodies(void)
{
    start_server(NULL);
    struct raw *r = raw_connect(0, node_http_server_port(server));
    uint8_t *gz;
    size_t gz_len = gzip(pattern, sizeof pattern, &gz);
    char head[256];
    snprintf(head, sizeof head,
             "POST /gz HTTP/1.1\r\nHost: a\r\nContent-Encoding: gzip\r\n"
             "Content-Length: %zu\r\n\r\n",
             gz_len);
    raw_send_str(r, head);
    raw_send(r, gz, gz_len);
    struct resp x[2];
    wait_resps(r, x, 1);
    CHECK_EQ(x[0].status, 200);
    CHECK(body_is(&x[0], echo_of("POST", "/gz", pattern, sizeof pattern)));

    /* The same, chunked in 100-byte chunks, each read on its own. */
    raw_send_str(r,
                 "POST /gzc HTTP/1.1\r\nHost: a\r\nContent-Encoding: x-gzip\r\n"
                 "Transfer-Encoding: chunked\r\n\r\n");
    for (size_t off = 0; off < gz_len; off += 100) {
        size_t n = gz_len - off < 100 ? gz_len - off : 100;
        char size_line[16];
        snprintf(size_line, sizeof size_line, "%zx\r\n", n);
        raw_send_str(r, size_line);
        raw_send_slowly(r, gz + off, n, 37);
        raw_send_str(r, "\r\n");
    }
    raw_send_str(r, "0\r\n\r\n");
    wait_resps(r, x, 2);
    CHECK_EQ(x[1].status, 200);
    CHECK(body_is(&x[1], echo_of("POST", "/gzc", pattern, sizeof pattern)));
    free(gz);
}

/* A heap that measures its peak, to show that a zip bomb stays small. */
static size_t heap_now, heap_peak;

static void *peak_malloc(void *data, size_t size)
{
    (void)data;
    void *p = malloc(size == 0 ? 1 : size);
    if (p != NULL) {
        heap_now += malloc_usable_size(p);
        heap_peak = heap_now > heap_peak ? heap_now : heap_peak;
    }
    return p;
}

static void *peak_calloc(void *data, size_t n, size_t size)
{
    (void)data;
    void *p = calloc(n == 0 ? 1 : n, size == 0 ? 1 : size);
    if (p != NULL) {
        heap_now += malloc_usable_size(p);
        heap_peak = heap_now > heap_peak ? heap_now : heap_peak;
    }
    return p;
}

static void *peak_realloc(void *data, void *ptr, size_t size)
{
    (void)data;
    size_t old = ptr != NULL ? malloc_usable_size(ptr) : 0;
    void *p = realloc(ptr, size == 0 ? 1 : size);
    if (p != NULL) {
        heap_now = heap_now - old + malloc_usable_size(p);
        heap_peak = heap_now > heap_peak ? heap_now : heap_peak;
    }
    return p;
}

static void peak_free(void *data, void *ptr)
{
    (void)data;
    if (ptr != NULL) {
        heap_now -= malloc_usable_size(ptr);
        free(ptr);
    }
}

static void test_gzip_bomb(void)
{
    size_t raw_len = 16u << 20;
    uint8_t *zeros = calloc(1, raw_len);
    REQUIRE(zeros != NULL);
    uint8_t *gz;
    size_t gz_len = gzip(zeros, raw_len, &gz);
    free(zeros);
    CHECK(gz_len < 64 * 1024);

    const struct sm_heap peak = {NULL, peak_malloc, peak_calloc, peak_realloc,
                                 peak_free};
    heap_now = heap_peak = 0;
    sm_heap_set(&peak);
    struct node_http_server_config cfg = {.max_body = 256 * 1024};
    start_server(&cfg);
    size_t base = heap_now;
    struct raw *r = raw_connect(0, node_http_server_port(server));
    char head[256];
    snprintf(head, sizeof head,
             "POST /bomb HTTP/1.1\r\nHost: a\r\nContent-Encoding: gzip\r\n"
             "Content-Length: %zu\r\n\r\n",
             gz_len);
    raw_send_str(r, head);
    raw_send(r, gz, gz_len);
    struct resp x;
    wait_resps(r, &x, 1);
    CHECK_EQ(x.status, 413);
    CHECK(x.close);
    CHECK(run_until(raw_got_eof, r, WAIT_MS));
    CHECK_EQ(last.calls, 0);
    /* Body limit plus zlib's state and a few small buffers. */
    CHECK(heap_peak - base < cfg.max_body + 128 * 1024);
    close_server();
    CHECK_EQ(heap_now, 0);
    sm_heap_set(NULL);
    free(gz);
}

static void test_body_limit(void)
{
    struct node_http_server_config cfg = {.max_body = 100};
    start_server(&cfg);
    /* Declared too long: refused before the body is sent. */
    struct raw *r = raw_connect(0, node_http_server_port(server));
    raw_send_str(r,
                 "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 101\r\n\r\n");
    struct resp x;
    wait_resps(r, &x, 1);
    CHECK_EQ(x.status, 413);
    CHECK(x.close);
    CHECK(run_until(raw_got_eof, r, WAIT_MS));

    /* Chunked: found out while receiving. Exactly 100 passes first. */
    struct raw *r2 = raw_connect(1, node_http_server_port(server));
    char body[200];
    memset(body, 'b', sizeof body);
    raw_send_str(r2,
                 "POST /ok HTTP/1.1\r\nHost: a\r\n"
                 "Transfer-Encoding: chunked\r\n\r\n64\r\n");
    raw_send(r2, body, 100);
    raw_send_str(r2,
                 "\r\n0\r\n\r\n"
                 "POST /no HTTP/1.1\r\nHost: a\r\n"
                 "Transfer-Encoding: chunked\r\n\r\n64\r\n");
    raw_send(r2, body, 100);
    raw_send_str(r2, "\r\n1\r\nb\r\n0\r\n\r\n");
    struct resp y[2];
    wait_resps(r2, y, 2);
    CHECK_EQ(y[0].status, 200);
    CHECK(body_is(&y[0], echo_of("POST", "/ok", (const uint8_t *)body, 100)));
    CHECK_EQ(y[1].status, 413);
    CHECK(run_until(raw_got_eof, r2, WAIT_MS));
    CHECK_EQ(stats().errors_by_server, 2);
    CHECK_EQ(stats().requests, 1);
}

static void test_unknown_encoding(void)
{
    start_server(NULL);
    struct raw *r = raw_connect(0, node_http_server_port(server));
    raw_send_str(r,
                 "POST / HTTP/1.1\r\nHost: a\r\nContent-Encoding: br\r\n"
                 "Content-Length: 3\r\n\r\nabc");
    struct resp x;
    wait_resps(r, &x, 1);
    CHECK_EQ(x.status, 415);
    CHECK(x.close);
    CHECK(run_until(raw_got_eof, r, WAIT_MS));
    CHECK_EQ(last.calls, 0);
}

static void test_malformed(void)
{
    start_server(NULL);
    struct raw *r = raw_connect(0, node_http_server_port(server));
    raw_send_str(
        r, "GET / HTTP/1.1\r\nHost: a\r\n\r\nBLAH\x01 / HTTP/1.1\r\n\r\n");
    struct resp x[2];
    wait_resps(r, x, 2);
    CHECK_EQ(x[0].status, 200);
    CHECK_EQ(x[1].status, 400);
    CHECK(x[1].close);
    CHECK(run_until(raw_got_eof, r, WAIT_MS));

    /* A bad gzip body is malformed too. */
    struct raw *r2 = raw_connect(1, node_http_server_port(server));
    raw_send_str(r2,
                 "POST / HTTP/1.1\r\nHost: a\r\nContent-Encoding: gzip\r\n"
                 "Content-Length: 5\r\n\r\nhello");
    wait_resps(r2, x, 1);
    CHECK_EQ(x[0].status, 400);
    CHECK(run_until(raw_got_eof, r2, WAIT_MS));
    CHECK_EQ(stats().requests, 1);
}

static void test_header_limit(void)
{
    struct node_http_server_config cfg = {.max_header = 1024};
    start_server(&cfg);
    struct raw *r = raw_connect(0, node_http_server_port(server));
    char big[2100];
    memset(big, 'v', sizeof big);
    big[sizeof big - 1] = 0;
    raw_send_str(r, "GET / HTTP/1.1\r\nHost: a\r\nX-Big: ");
    raw_send_str(r, big);
    struct resp x;
    wait_resps(r, &x, 1);
    CHECK_EQ(x.status, 431);
    CHECK(x.close);
    CHECK(run_until(raw_got_eof, r, WAIT_MS));

    /* Just under the limit is fine. */
    struct raw *r2 = raw_connect(1, node_http_server_port(server));
    big[900] = 0;
    raw_send_str(r2, "GET /ok HTTP/1.1\r\nHost: a\r\nX-Big: ");
    raw_send_str(r2, big);
    raw_send_str(r2, "\r\n\r\n");
    wait_resps(r2, &x, 1);
    CHECK_EQ(x.status, 200);
}

static void test_keep_alive(void)
{
    start_server(NULL);
    struct raw *r = raw_connect(0, node_http_server_port(server));
    struct resp x[3];
    for (int i = 0; i < 3; i++) {
        char req[128];
        snprintf(req, sizeof req,
                 "POST /k%d HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\n%d",
                 i, i);
        raw_send_str(r, req);
        wait_resps(r, x, i + 1);
        CHECK_EQ(x[i].status, 200);
        CHECK(!x[i].close);
    }
    char path[8];
    snprintf(path, sizeof path, "/k%d", 2);
    CHECK(body_is(&x[2], echo_of("POST", path, (const uint8_t *)"2", 1)));
    CHECK_EQ(stats().connections_accepted, 1);
    CHECK_EQ(stats().requests, 3);
    CHECK(!r->eof);
}

static void test_pipelined(void)
{
    start_server(NULL);
    struct raw *r = raw_connect(0, node_http_server_port(server));
    raw_send_str(r,
                 "GET /a HTTP/1.1\r\nHost: a\r\n\r\n"
                 "POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nxyz"
                 "HEAD /c HTTP/1.1\r\nHost: a\r\n\r\n"
                 "GET /d HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
                 "GET /never HTTP/1.1\r\nHost: a\r\n\r\n");
    CHECK(run_until(raw_got_eof, r, WAIT_MS));
    struct resp x[4];
    /* HEAD announces a length but sends no body: parse it by hand. */
    REQUIRE_EQ(parse_resps(r, x, 2), 2);
    CHECK(body_is(&x[0], echo_of("GET", "/a", NULL, 0)));
    CHECK(body_is(&x[1], echo_of("POST", "/b", (const uint8_t *)"xyz", 3)));
    const char *head = strstr(r->buf, "\r\n\r\nHTTP/1.1 200");
    CHECK(head != NULL);
    const char *d = strstr(r->buf, "GET /d len=0");
    CHECK(d != NULL);
    CHECK(strstr(r->buf, "HEAD /c len") == NULL);
    CHECK(strstr(r->buf, "/never") == NULL);
    CHECK_EQ(stats().requests, 4);
}

static void test_many_pipelined(void)
{
    /* Enough requests in one go that the responses pass the high-water
     * mark: the session pauses and resumes without losing order. */
    start_server(NULL);
    struct raw *r = raw_connect(0, node_http_server_port(server));
    static char reqs[40000];
    size_t len = 0;
    int n = 0;
    while (len + 128 < sizeof reqs) {
        len += (size_t)snprintf(reqs + len, sizeof reqs - len,
                                "GET /big HTTP/1.1\r\nHost: a\r\n\r\n");
        n++;
    }
    len += (size_t)snprintf(reqs + len, sizeof reqs - len,
                            "GET /last HTTP/1.1\r\nConnection: close\r\n\r\n");
    raw_send(r, reqs, len);
    CHECK(run_until(raw_got_eof, r, WAIT_MS));
    CHECK_EQ(stats().requests, (uint64_t)n + 1);
    /* The client buffer holds the first 64 KiB: all /big bodies. */
    struct resp x[8];
    int got = parse_resps(r, x, 8);
    CHECK_EQ(got, 8);
    CHECK_EQ(x[7].body_len, 5000);
    CHECK(r->len + r->dropped > (size_t)n * 5000);
}

static void test_http10(void)
{
    start_server(NULL);
    struct raw *r = raw_connect(0, node_http_server_port(server));
    raw_send_str(r, "GET /old HTTP/1.0\r\n\r\n");
    struct resp x[2];
    wait_resps(r, x, 1);
    CHECK(x[0].close);
    CHECK(run_until(raw_got_eof, r, WAIT_MS));

    struct raw *r2 = raw_connect(1, node_http_server_port(server));
    raw_send_str(r2, "GET /ka HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    wait_resps(r2, x, 1);
    CHECK(x[0].keep_alive);
    raw_send_str(r2, "GET /ka2 HTTP/1.0\r\n\r\n");
    wait_resps(r2, x, 2);
    CHECK(body_is(&x[1], echo_of("GET", "/ka2", NULL, 0)));
    CHECK(run_until(raw_got_eof, r2, WAIT_MS));
}

static int none_open(void *arg)
{
    (void)arg;
    return stats().connections_open == 0;
}

static void test_connection_cap(void)
{
    struct node_http_server_config cfg = {.max_connections = 1};
    start_server(&cfg);
    struct raw *a = raw_connect(0, node_http_server_port(server));
    struct raw *b = raw_connect(1, node_http_server_port(server));
    struct resp x;
    wait_resps(b, &x, 1);
    CHECK_EQ(x.status, 503);
    CHECK_EQ(x.retry_after, 1);
    CHECK(x.close);
    CHECK(run_until(raw_got_eof, b, WAIT_MS));
    CHECK_EQ(stats().connections_rejected, 1);
    CHECK_EQ(stats().connections_accepted, 1);
    /* The first connection still works. */
    raw_send_str(a, "GET /a HTTP/1.1\r\nHost: a\r\n\r\n");
    wait_resps(a, &x, 1);
    CHECK_EQ(x.status, 200);
    /* Once it is gone, a new one is served. */
    raw_close(a);
    CHECK(run_until(none_open, NULL, WAIT_MS));
    struct raw *c = raw_connect(2, node_http_server_port(server));
    raw_send_str(c, "GET /c HTTP/1.1\r\nHost: a\r\n\r\n");
    wait_resps(c, &x, 1);
    CHECK_EQ(x.status, 200);
}

static void test_timeouts(void)
{
    struct node_http_server_config cfg = {
        .header_timeout_ms = 50, .body_timeout_ms = 50, .idle_timeout_ms = 50};
    start_server(&cfg);
    uint64_t t0 = uv_now(&loop);
    /* Head never completes: 408. */
    struct raw *r = raw_connect(0, node_http_server_port(server));
    raw_send_str(r, "GET / HTTP/1.1\r\nHost: a\r\n");
    CHECK(run_until(raw_got_eof, r, WAIT_MS));
    struct resp x;
    REQUIRE_EQ(parse_resps(r, &x, 1), 1);
    CHECK_EQ(x.status, 408);
    CHECK(x.close);

    /* Body never completes: 408. */
    struct raw *r2 = raw_connect(1, node_http_server_port(server));
    raw_send_str(r2,
                 "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9\r\n\r\nabc");
    CHECK(run_until(raw_got_eof, r2, WAIT_MS));
    REQUIRE_EQ(parse_resps(r2, &x, 1), 1);
    CHECK_EQ(x.status, 408);

    /* Idle after a request: closed without a word. */
    struct raw *r3 = raw_connect(2, node_http_server_port(server));
    raw_send_str(r3, "GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    CHECK(run_until(raw_got_eof, r3, WAIT_MS));
    struct resp y[2];
    CHECK_EQ(parse_resps(r3, y, 2), 1);
    CHECK_EQ(y[0].status, 200);
    CHECK_EQ(stats().errors_by_server, 2);
    CHECK(uv_now(&loop) - t0 < 1500);
}

static void test_retry_after(void)
{
    start_server(NULL);
    struct raw *r = raw_connect(0, node_http_server_port(server));
    raw_send_str(r, "GET /retry HTTP/1.1\r\nHost: a\r\n\r\n");
    struct resp x;
    wait_resps(r, &x, 1);
    CHECK_EQ(x.status, 429);
    CHECK_EQ(x.retry_after, 7);
    CHECK(x.has_length);
    CHECK_EQ(x.body_len, 0);
}

static void test_expect_continue(void)
{
    start_server(NULL);
    struct raw *r = raw_connect(0, node_http_server_port(server));
    raw_send_str(r,
                 "POST /e HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
                 "Content-Length: 2\r\n\r\n");
    struct resp x[2];
    wait_resps(r, x, 1);
    CHECK_EQ(x[0].status, 100);
    raw_send_str(r, "ok");
    wait_resps(r, x, 2);
    CHECK_EQ(x[1].status, 200);
}

static void test_start_errors(void)
{
    char errmsg[SM_ERRMSG_SIZE];
    struct node_http_server *s = NULL;
    CHECK_EQ(node_http_server_start(&loop, "not-an-address", 0, NULL, handler,
                                    NULL, &s, errmsg),
             SM_EINVAL);
    CHECK(s == NULL);
    start_server(NULL);
    CHECK_EQ(node_http_server_start(&loop, "127.0.0.1",
                                    node_http_server_port(server), NULL,
                                    handler, NULL, &s, errmsg),
             SM_EEXIST);
    CHECK(s == NULL);
    CHECK(strstr(errmsg, "127.0.0.1") != NULL);
}

static void test_close_frees(void)
{
    check_heap_install();
    start_server(NULL);
    struct raw *a = raw_connect(0, node_http_server_port(server));
    struct raw *b = raw_connect(1, node_http_server_port(server));
    raw_send_str(a,
                 "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n"
                 "partial");
    raw_send_str(b, "GET / HTTP/1.1\r\nHo");
    target_bytes = 60;
    CHECK(run_until(server_received, NULL, WAIT_MS));
    CHECK_EQ(stats().connections_open, 2);
    CHECK(check_heap_outstanding() > 0);
    close_server();
    CHECK(server_done);
    CHECK(run_until(raw_got_eof, a, WAIT_MS));
    CHECK(run_until(raw_got_eof, b, WAIT_MS));
    CHECK_EQ(check_heap_outstanding(), 0);
    check_heap_uninstall();
}

/* The request engine on its own under injected allocation failures. */
static void test_session_out_of_memory(void)
{
    uint8_t *gz;
    size_t gz_len = gzip(pattern, sizeof pattern, &gz);
    char head[256];
    int head_len = snprintf(head, sizeof head,
                            "POST /m HTTP/1.1\r\nContent-Encoding: gzip\r\n"
                            "Content-Type: a/b\r\nContent-Length: %zu\r\n\r\n",
                            gz_len);
    struct node_http_server_config cfg = {.max_body = 1 << 20,
                                          .max_header = 4096,
                                          .max_connections = 1,
                                          .header_timeout_ms = 1,
                                          .body_timeout_ms = 1,
                                          .idle_timeout_ms = 1};
    int completed = 0;
    for (int k = 0; k < 200 && !completed; k++) {
        struct node_http_server_stats st = {0};
        check_heap_install();
        check_heap_fault(k, -1);
        struct node__http_session *s;
        if (node__http_session_new(&cfg, handler, NULL, &st, &s) == SM_OK) {
            node__http_session_feed(s, (const uint8_t *)head, (size_t)head_len);
            node__http_session_feed(s, gz, gz_len);
            struct node__http_buf out = {0};
            if (node__http_session_take_output(s, &out)) {
                completed = st.requests == 1 && out.len > 12 &&
                            memcmp(out.data, "HTTP/1.1 200", 12) == 0;
                node__http_buf_free(&out);
            }
            node__http_session_free(s);
        }
        CHECK_EQ(check_heap_outstanding(), 0);
        check_heap_uninstall();
    }
    CHECK(completed);
    free(gz);
}

/* ---- A canned server for the client tests -------------------------------- */

#define CANNED_CONNS 4

static struct
{
    uv_tcp_t listener;
    int open;
    int port;
    const uint8_t *resp;
    size_t resp_len;
    int never_answer;
    struct canned_conn
    {
        uv_tcp_t tcp;
        uv_write_t write_req;
        int open;
        char buf[4096];
        size_t len;
    } conns[CANNED_CONNS];
} canned;

static void canned_conn_closed(uv_handle_t *h)
{
    ((struct canned_conn *)h->data)->open = 0;
}

static void canned_written(uv_write_t *req, int status)
{
    (void)status;
    struct canned_conn *c = req->data;
    uv_close((uv_handle_t *)&c->tcp, canned_conn_closed);
}

static void canned_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    struct canned_conn *c = h->data;
    *buf = uv_buf_init(c->buf + c->len, (unsigned)(sizeof c->buf - c->len - 1));
}

static void canned_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    (void)buf;
    struct canned_conn *c = s->data;
    if (n < 0) {
        uv_read_stop(s);
        return;
    }
    c->len += (size_t)n;
    c->buf[c->len] = 0;
    if (strstr(c->buf, "\r\n\r\n") != NULL && !canned.never_answer) {
        uv_read_stop(s);
        uv_buf_t b = uv_buf_init((char *)(uintptr_t)canned.resp,
                                 (unsigned)canned.resp_len);
        c->write_req.data = c;
        uv_write(&c->write_req, s, &b, 1, canned_written);
    }
}

static void canned_connection(uv_stream_t *l, int status)
{
    CHECK_EQ(status, 0);
    for (int i = 0; i < CANNED_CONNS; i++) {
        struct canned_conn *c = &canned.conns[i];
        if (!c->open) {
            memset(c, 0, sizeof *c);
            uv_tcp_init(&loop, &c->tcp);
            c->tcp.data = c;
            c->open = 1;
            uv_accept(l, (uv_stream_t *)&c->tcp);
            uv_read_start((uv_stream_t *)&c->tcp, canned_alloc, canned_read);
            return;
        }
    }
    CHECK(0);
}

static void canned_start(const void *resp, size_t len)
{
    memset(&canned, 0, sizeof canned);
    canned.resp = resp;
    canned.resp_len = len;
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", 0, &sa);
    uv_tcp_init(&loop, &canned.listener);
    canned.open = 1;
    REQUIRE_OK(uv_tcp_bind(&canned.listener, (const struct sockaddr *)&sa, 0));
    REQUIRE_OK(
        uv_listen((uv_stream_t *)&canned.listener, 8, canned_connection));
    struct sockaddr_storage ss;
    int ss_len = sizeof ss;
    uv_tcp_getsockname(&canned.listener, (struct sockaddr *)&ss, &ss_len);
    canned.port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

static void canned_listener_closed(uv_handle_t *h)
{
    (void)h;
    canned.open = 0;
}

static int canned_all_closed(void *arg)
{
    (void)arg;
    int open = canned.open;
    for (int i = 0; i < CANNED_CONNS; i++) {
        open |= canned.conns[i].open;
    }
    return !open;
}

/* Closes the canned server and waits until all its handles are closed. */
static void canned_close(void)
{
    if (canned.open && !uv_is_closing((uv_handle_t *)&canned.listener)) {
        uv_close((uv_handle_t *)&canned.listener, canned_listener_closed);
    }
    for (int i = 0; i < CANNED_CONNS; i++) {
        if (canned.conns[i].open &&
            !uv_is_closing((uv_handle_t *)&canned.conns[i].tcp)) {
            uv_close((uv_handle_t *)&canned.conns[i].tcp, canned_conn_closed);
        }
    }
    CHECK(run_until(canned_all_closed, NULL, WAIT_MS));
}

/* ---- Client tests
 * ------------------------------------------------------------- */

static struct
{
    int calls;
    int status;
    int http_status;
    char content_type[64];
    char body[32768];
    size_t body_len;
    char errmsg[SM_ERRMSG_SIZE];
} got;

static void on_get(void *arg, const struct node_http_result *res)
{
    (void)arg;
    got.calls++;
    got.status = res->status;
    got.http_status = res->http_status;
    snprintf(got.content_type, sizeof got.content_type, "%s",
             res->content_type);
    snprintf(got.errmsg, sizeof got.errmsg, "%s", res->errmsg);
    got.body_len = res->body_len;
    CHECK(res->body_len <= sizeof got.body);
    if (res->body_len > 0 && res->body_len <= sizeof got.body) {
        memcpy(got.body, res->body, res->body_len);
    }
}

static int get_done(void *arg)
{
    (void)arg;
    return got.calls > 0;
}

/* Fetches @url and waits for the callback. */
static void fetch(const char *url, uint64_t timeout_ms, size_t max_body)
{
    memset(&got, 0, sizeof got);
    REQUIRE_OK(node_http_get(&loop, url, "text/plain", timeout_ms, max_body,
                             on_get, NULL));
    CHECK_EQ(got.calls, 0); /* never from inside node_http_get */
    CHECK(run_until(get_done, NULL, WAIT_MS));
    /* Let the teardown finish, then make sure there was one call only. */
    for (int i = 0; i < 20; i++) {
        uv_run(&loop, UV_RUN_NOWAIT);
    }
    CHECK_EQ(got.calls, 1);
}

static void test_get_plain_and_404(void)
{
    start_server(NULL);
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/echo?q=1",
             node_http_server_port(server));
    fetch(url, 1000, 0);
    CHECK_EQ(got.status, SM_OK);
    CHECK_EQ(got.http_status, 200);
    CHECK_STR(got.content_type, "text/plain");
    const char *want = echo_of("GET", "/echo", NULL, 0);
    CHECK_EQ(got.body_len, strlen(want));
    CHECK(memcmp(got.body, want, got.body_len) == 0);
    CHECK_STR(last.query, "q=1");
    CHECK_STR(last.user_agent, "sagemesh");

    snprintf(url, sizeof url, "http://127.0.0.1:%d/notfound",
             node_http_server_port(server));
    fetch(url, 1000, 0);
    CHECK_EQ(got.status, SM_OK);
    CHECK_EQ(got.http_status, 404);
    CHECK_EQ(got.body_len, 4);
    CHECK(memcmp(got.body, "nope", 4) == 0);

    /* Names go through uv_getaddrinfo. Whether "localhost" resolves depends
     * on the machine (/etc/hosts, and the NSS modules a static binary
     * loads), so the lookup path is exercised only where the resolver
     * itself can do it. */
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    if (getaddrinfo("localhost", NULL, &hints, &res) == 0) {
        freeaddrinfo(res);
        snprintf(url, sizeof url, "http://localhost:%d/notfound",
                 node_http_server_port(server));
        fetch(url, 1000, 0);
        CHECK_EQ(got.status, SM_OK);
        CHECK_EQ(got.http_status, 404);
    } else {
        printf(
            "# localhost does not resolve on this machine: name lookup "
            "not exercised\n");
    }
}

static void test_get_chunked_gzip_close(void)
{
    char url[128];
    static const char chunked[] =
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
        "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    canned_start(chunked, sizeof chunked - 1);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/metrics", canned.port);
    fetch(url, 1000, 0);
    CHECK_EQ(got.status, SM_OK);
    CHECK_STR(got.content_type, "text/plain; version=0.0.4");
    CHECK_EQ(got.body_len, 11);
    CHECK(memcmp(got.body, "hello world", 11) == 0);
    CHECK(strstr(canned.conns[0].buf, "Accept-Encoding: gzip\r\n") != NULL);
    CHECK(strstr(canned.conns[0].buf, "Accept: text/plain\r\n") != NULL);
    CHECK(strstr(canned.conns[0].buf, "Connection: close\r\n") != NULL);
    CHECK(strstr(canned.conns[0].buf, "User-Agent: sagemesh\r\n") != NULL);
    char host[64];
    snprintf(host, sizeof host, "Host: 127.0.0.1:%d\r\n", canned.port);
    CHECK(strstr(canned.conns[0].buf, host) != NULL);
    canned_close();

    /* gzip, chunked in 100-byte chunks. */
    uint8_t *gz;
    size_t gz_len = gzip(pattern, sizeof pattern, &gz);
    static uint8_t resp[65536];
    size_t len =
        (size_t)snprintf((char *)resp, sizeof resp,
                         "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n"
                         "Transfer-Encoding: chunked\r\n\r\n");
    for (size_t off = 0; off < gz_len; off += 100) {
        size_t n = gz_len - off < 100 ? gz_len - off : 100;
        len += (size_t)snprintf((char *)resp + len, sizeof resp - len,
                                "%zx\r\n", n);
        memcpy(resp + len, gz + off, n);
        len += n;
        memcpy(resp + len, "\r\n", 2);
        len += 2;
    }
    memcpy(resp + len, "0\r\n\r\n", 5);
    len += 5;
    canned_start(resp, len);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/", canned.port);
    fetch(url, 1000, 0);
    CHECK_EQ(got.status, SM_OK);
    CHECK_EQ(got.body_len, sizeof pattern);
    CHECK(memcmp(got.body, pattern, sizeof pattern) == 0);

    /* The same limit, one byte short: too big. */
    fetch(url, 1000, sizeof pattern - 1);
    CHECK_EQ(got.status, SM_ETOOBIG);
    canned_close();

    /* Close-delimited, gzip, no length. */
    len = (size_t)snprintf((char *)resp, sizeof resp,
                           "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n\r\n");
    memcpy(resp + len, gz, gz_len);
    len += gz_len;
    canned_start(resp, len);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/", canned.port);
    fetch(url, 1000, 0);
    CHECK_EQ(got.status, SM_OK);
    CHECK_EQ(got.body_len, sizeof pattern);
    CHECK(memcmp(got.body, pattern, sizeof pattern) == 0);
    free(gz);
}

static void test_get_failures(void)
{
    char url[128];
    /* A server that never answers. */
    canned_start("", 0);
    canned.never_answer = 1;
    snprintf(url, sizeof url, "http://127.0.0.1:%d/", canned.port);
    uint64_t t0 = uv_now(&loop);
    fetch(url, 50, 0);
    CHECK_EQ(got.status, SM_ETIMEDOUT);
    CHECK(uv_now(&loop) - t0 >= 50);
    CHECK(got.errmsg[0] != 0);
    canned_close();

    /* Nobody listening. */
    start_server(NULL);
    int port = node_http_server_port(server);
    close_server();
    snprintf(url, sizeof url, "http://127.0.0.1:%d/", port);
    fetch(url, 1000, 0);
    CHECK_EQ(got.status, SM_EIO);
    CHECK(strstr(got.errmsg, "refused") != NULL);

    /* Over the limit, by Content-Length. */
    start_server(NULL);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/big",
             node_http_server_port(server));
    fetch(url, 1000, 100);
    CHECK_EQ(got.status, SM_ETOOBIG);
    fetch(url, 1000, 5000);
    CHECK_EQ(got.status, SM_OK);

    /* Not a response. */
    static const char junk[] = "SSH-2.0-OpenSSH\r\n\r\n";
    canned_start(junk, sizeof junk - 1);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/", canned.port);
    fetch(url, 1000, 0);
    CHECK_EQ(got.status, SM_EMALFORMED);

    /* Refused synchronously, callback never runs. */
    memset(&got, 0, sizeof got);
    CHECK_EQ(
        node_http_get(&loop, "https://127.0.0.1/", NULL, 100, 0, on_get, NULL),
        SM_EINVAL);
    CHECK_EQ(node_http_get(&loop, "http://", NULL, 100, 0, on_get, NULL),
             SM_EINVAL);
    CHECK_EQ(node_http_get(&loop, "http://a/", "x\r\ny", 100, 0, on_get, NULL),
             SM_EINVAL);
    run_until(never, NULL, 10);
    CHECK_EQ(got.calls, 0);
}

static const struct check_test tests[] = {
    {"content-length body", test_content_length},
    {"chunked body in tiny writes", test_chunked_tiny_writes},
    {"gzip bodies", test_gzip_bodies},
    {"gzip bomb stays bounded", test_gzip_bomb},
    {"body limit", test_body_limit},
    {"unknown content encoding", test_unknown_encoding},
    {"malformed requests", test_malformed},
    {"header limit", test_header_limit},
    {"keep-alive", test_keep_alive},
    {"pipelined requests", test_pipelined},
    {"many pipelined requests", test_many_pipelined},
    {"HTTP/1.0", test_http10},
    {"connection cap", test_connection_cap},
    {"timeouts", test_timeouts},
    {"handler retry-after", test_retry_after},
    {"expect 100-continue", test_expect_continue},
    {"start errors", test_start_errors},
    {"close frees everything", test_close_frees},
    {"session out of memory", test_session_out_of_memory},
    {"get plain and 404", test_get_plain_and_404},
    {"get chunked, gzip, close-delimited", test_get_chunked_gzip_close},
    {"get failures", test_get_failures},
};

CHECK_MAIN(tests, setup, teardown)
