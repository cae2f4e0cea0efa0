/* The whole peer under hostile input, over real sockets on 127.0.0.1:
 * malformed and half-valid batches, truncated, oversized and mistyped
 * bodies, slow clients, thousands of connections and hostile headers.
 *
 * After every attack the peer must have answered with the right status,
 * must still serve (/healthz, /readyz, a good batch) and must have applied
 * nothing of a refused batch. The last point is checked exactly: the test
 * counts every span and point it got accepted and compares the totals with
 * the peer's own /metrics counters, which also have to parse.
 *
 * The clients are non-blocking sockets; the test drives the peer's loop
 * with UV_RUN_NOWAIT between sends and reads, so nothing sleeps and every
 * wait is a bounded number of turns. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>
#include <zlib.h>

#include "base/clock.h"
#include "base/log.h"
#include "check.h"
#include "node/config.h"
#include "node/peer.h"

/* Event time of the test data: 2 s before the fake wall clock, inside the
 * open 10 s window, so that nothing is late and no window closes. */
#define T0_NS   UINT64_C(1795421760000000000)
#define SPAN_NS (T0_NS - UINT64_C(2000000000))
#define MIB     (1u << 20)
/* The peer's body limit (DESIGN.md section 7, OTLP's recommendation). */
#define MAX_BODY (20u * MIB)
/* The server's default connection cap; the peer sets no other. */
#define CONN_CAP 1024
/* Loop turns any single wait may take. Each turn is a few non-blocking
 * system calls; waits normally end within tens of turns. */
#define MAX_TURNS 400000

static uv_loop_t loop;
static struct sm_fake_clock fake;
static struct node_config cfg;
static struct node_peer *peer;

/* What the test expects the peer's counters to say. */
static uint64_t want_spans;  /* spans accepted */
static uint64_t want_points; /* metric points accepted */
/* Bodies refused by the peer's handler (malformed, too large), and bodies
 * the HTTP server refused before the handler saw them (the peer may count
 * these too, or not). */
static uint64_t handler_rejects, server_rejects;
/* Responses received, by status. */
static uint64_t received[600];
/* Requests the handler may have answered without the test reading it. */
static uint64_t unread;

/* Client sockets still open, closed by teardown when a test ends early. */
#define MAX_FD 65536
static unsigned char fd_open[MAX_FD];
/* The descriptor limit before a test raised it, when it did. */
static struct rlimit saved_nofile;
static int nofile_raised;

/* ---- Peer ---------------------------------------------------------------- */

static void start_peer(void)
{
    char err[SM_ERRMSG_SIZE];
    node_config_init(&cfg);
    REQUIRE_OK(node_config_set(&cfg, "listen-http", "127.0.0.1:0", err));
    REQUIRE_OK(node_config_set(&cfg, "data-dir", check_tmpdir(), err));
    REQUIRE_OK(node_config_set(&cfg, "qos-service", "frontend", err));
    REQUIRE_OK(node_config_set(&cfg, "qos-target-ms", "40", err));
    REQUIRE_OK(node_config_set(&cfg, "window", "10", err));
    REQUIRE_OK(node_config_set(&cfg, "id", "hostile-1", err));
    REQUIRE_OK(node_config_validate(&cfg, err));
    int rv = node_peer_start(&loop, &cfg, &fake.clock, 11, &peer, err);
    if (rv != SM_OK) {
        check__fail(__FILE__, __LINE__, 1, "start: %s", err);
    }
}

static void stop_peer(void)
{
    node_peer_stop(peer);
    for (int i = 0; i < 100 && !node_peer_stopped(peer); i++) {
        uv_run(&loop, UV_RUN_ONCE);
    }
    CHECK(node_peer_stopped(peer));
    node_peer_free(peer);
    peer = NULL;
    node_config_free(&cfg);
}

static void spin(void)
{
    uv_run(&loop, UV_RUN_NOWAIT);
}

static void close_fd(int fd)
{
    if (fd >= 0) {
        if (fd < MAX_FD) {
            fd_open[fd] = 0;
        }
        close(fd);
    }
}

/* ---- Growable text ------------------------------------------------------- */

struct sbuf
{
    char *p;
    size_t len, cap;
};

static void sb_add(struct sbuf *b, const void *data, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n + 1) {
            cap *= 2;
        }
        char *p = realloc(b->p, cap);
        REQUIRE(p != NULL);
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_str(struct sbuf *b, const char *s)
{
    sb_add(b, s, strlen(s));
}

static void sb_printf(struct sbuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
    char small[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    REQUIRE(n >= 0 && (size_t)n < sizeof small);
    sb_add(b, small, (size_t)n);
}

static void sb_fill(struct sbuf *b, char c, size_t n)
{
    char block[4096];
    memset(block, c, sizeof block);
    while (n > 0) {
        size_t k = n < sizeof block ? n : sizeof block;
        sb_add(b, block, k);
        n -= k;
    }
}

static void sb_free(struct sbuf *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}

/* ---- Test data ----------------------------------------------------------- */

static uint64_t next_id = 1;

/* One valid SERVER span of the batch's service, with fresh ids. */
static void add_span(struct sbuf *b)
{
    uint64_t id = next_id++;
    sb_printf(b,
              "{\"traceId\":\"00000000000abcde%016llx\",\"spanId\":\"%016llx\","
              "\"name\":\"GET /\",\"kind\":2,\"startTimeUnixNano\":\"%llu\","
              "\"endTimeUnixNano\":\"%llu\",\"status\":{\"code\":0},"
              "\"attributes\":[{\"key\":\"http.route\",\"value\":"
              "{\"stringValue\":\"/x\"}}]}",
              (unsigned long long)id, (unsigned long long)id,
              (unsigned long long)SPAN_NS,
              (unsigned long long)(SPAN_NS + 5000000));
}

/* An OTLP trace request with @n valid spans, then @tail (raw JSON text
 * for one more span) when not NULL. */
static void traces_body(struct sbuf *b, int n, const char *tail)
{
    sb_str(b,
           "{\"resourceSpans\":[{\"resource\":{\"attributes\":[{\"key\":"
           "\"service.name\",\"value\":{\"stringValue\":\"frontend\"}}]},"
           "\"scopeSpans\":[{\"scope\":{\"name\":\"hostile\"},\"spans\":[");
    for (int i = 0; i < n; i++) {
        if (i > 0) {
            sb_str(b, ",");
        }
        add_span(b);
    }
    if (tail != NULL) {
        sb_str(b, n > 0 ? "," : "");
        sb_str(b, tail);
    }
    sb_str(b, "]}]}]}");
}

/* An OTLP metrics request with @n valid gauge points, then @tail (raw JSON
 * text for one more metric) when not NULL. */
static void metrics_body(struct sbuf *b, int n, const char *tail)
{
    sb_str(b,
           "{\"resourceMetrics\":[{\"resource\":{\"attributes\":[{\"key\":"
           "\"service.name\",\"value\":{\"stringValue\":\"frontend\"}}]},"
           "\"scopeMetrics\":[{\"metrics\":[");
    for (int i = 0; i < n; i++) {
        sb_printf(b,
                  "%s{\"name\":\"hostile_gauge_%d\",\"gauge\":{\"dataPoints\":"
                  "[{\"timeUnixNano\":\"%llu\",\"asDouble\":%d.5}]}}",
                  i > 0 ? "," : "", i, (unsigned long long)SPAN_NS, i);
    }
    if (tail != NULL) {
        sb_str(b, n > 0 ? "," : "");
        sb_str(b, tail);
    }
    sb_str(b, "]}]}]}");
}

/* A Zipkin v2 list with @n valid spans, then @tail when not NULL. */
static void zipkin_body(struct sbuf *b, int n, const char *tail)
{
    sb_str(b, "[");
    for (int i = 0; i < n; i++) {
        uint64_t id = next_id++;
        sb_printf(b,
                  "%s{\"traceId\":\"00000000000abcde%016llx\",\"id\":"
                  "\"%016llx\",\"kind\":\"SERVER\",\"name\":\"get /z\","
                  "\"timestamp\":%llu,\"duration\":5000,\"localEndpoint\":"
                  "{\"serviceName\":\"frontend\"}}",
                  i > 0 ? "," : "", (unsigned long long)id,
                  (unsigned long long)id, (unsigned long long)(SPAN_NS / 1000));
    }
    if (tail != NULL) {
        sb_str(b, n > 0 ? "," : "");
        sb_str(b, tail);
    }
    sb_str(b, "]");
}

/* Compresses @len bytes into @out (gzip format). */
static void gzip_into(struct sbuf *out, const void *data, size_t len)
{
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    REQUIRE_EQ(
        deflateInit2(&zs, 9, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY),
        Z_OK);
    size_t cap = deflateBound(&zs, (uLong)len) + 64;
    char *buf = malloc(cap);
    REQUIRE(buf != NULL);
    zs.next_in = (Bytef *)(uintptr_t)data;
    zs.avail_in = (uInt)len;
    zs.next_out = (Bytef *)buf;
    zs.avail_out = (uInt)cap;
    int zrv = deflate(&zs, Z_FINISH);
    size_t n = cap - zs.avail_out;
    deflateEnd(&zs);
    if (zrv == Z_STREAM_END) {
        sb_add(out, buf, n);
    }
    free(buf);
    REQUIRE_EQ(zrv, Z_STREAM_END);
}

/* ---- Clients --------------------------------------------------------------
 *
 * A client is a non-blocking socket and a buffer for what came back. The
 * peer runs on this thread: every wait turns the loop between system
 * calls. */

struct client
{
    int fd;
    char *buf;
    size_t cap, len;
    int closed; /* the peer closed (orderly or reset) */
    int gone;   /* sending failed: the peer stopped reading */
};

static char main_buf[1 << 17];

/* Connects a non-blocking socket to the peer; @rcvbuf > 0 sets a small
 * receive buffer first, so that the peer's answers back up fast. */
static int open_fd_rcvbuf(int rcvbuf)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    int one = 1;
    /* Small writes leave at once: a byte-at-a-time client is one. */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (rcvbuf > 0) {
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    }
    struct sockaddr_in a = {
        .sin_family = AF_INET,
        .sin_port = htons((uint16_t)node_peer_http_port(peer)),
    };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0 &&
        errno != EINPROGRESS) {
        int e = errno;
        close(fd);
        check__fail(__FILE__, __LINE__, 1, "connect: %s", strerror(e));
    }
    if (fd < MAX_FD) {
        fd_open[fd] = 1;
    }
    return fd;
}

static int open_fd(void)
{
    return open_fd_rcvbuf(0);
}

static void cl_open(struct client *c, char *buf, size_t cap)
{
    memset(c, 0, sizeof *c);
    c->buf = buf;
    c->cap = cap;
    c->fd = open_fd();
    c->buf[0] = '\0';
}

static void cl_close(struct client *c)
{
    close_fd(c->fd);
    c->fd = -1;
}

/* Reads what is there; returns non-zero on progress. */
static int cl_read(struct client *c)
{
    if (c->closed || c->fd < 0) {
        return 0;
    }
    char sink[4096];
    int progress = 0;
    for (int i = 0; i < 64; i++) {
        char *at = c->len + 1 < c->cap ? c->buf + c->len : sink;
        size_t room = c->len + 1 < c->cap ? c->cap - 1 - c->len : sizeof sink;
        ssize_t r = recv(c->fd, at, room, MSG_DONTWAIT);
        if (r > 0) {
            progress = 1;
            if (at != sink) {
                c->len += (size_t)r;
                c->buf[c->len] = '\0';
            }
            continue;
        }
        if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
            c->closed = 1;
            progress = 1;
        }
        break;
    }
    return progress;
}

/* Sends what the socket takes of @n bytes; returns the count. */
static size_t cl_send_some(struct client *c, const void *p, size_t n)
{
    if (c->gone || n == 0) {
        return 0;
    }
    ssize_t w = send(c->fd, p, n, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (w > 0) {
        return (size_t)w;
    }
    if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != ENOTCONN &&
        errno != EINPROGRESS) {
        c->gone = 1;
    }
    return 0;
}

/* The length of the first complete response in @b, or 0. Every answer of
 * the peer carries Content-Length (it never sends 204 or 304). */
static size_t response_length(const char *b, size_t n)
{
    const char *end = NULL;
    for (size_t i = 0; i + 4 <= n && end == NULL; i++) {
        if (memcmp(b + i, "\r\n\r\n", 4) == 0) {
            end = b + i;
        }
    }
    if (end == NULL) {
        return 0;
    }
    size_t head = (size_t)(end - b) + 4;
    size_t body = 0;
    for (const char *l = b; l < end; l++) {
        if ((l == b || l[-1] == '\n') &&
            strncasecmp(l, "Content-Length:", 15) == 0) {
            body = strtoul(l + 15, NULL, 10);
        }
    }
    return n >= head + body ? head + body : 0;
}

static int status_of(const char *b, size_t n)
{
    int status = 0;
    if (n >= 12 && memcmp(b, "HTTP/1.1 ", 9) == 0) {
        status = atoi(b + 9);
    }
    return status >= 100 && status < 600 ? status : 0;
}

/* Sends all of @n bytes, turning the loop, and stops early when the peer
 * has answered or closed. */
static void cl_send(struct client *c, const void *data, size_t n)
{
    const char *p = data;
    size_t sent = 0;
    for (int i = 0; i < MAX_TURNS && sent < n && !c->gone; i++) {
        /* Small steps let the peer keep up, so a refusal arrives while
         * little is in flight and its lingering close drains it. */
        size_t step = n - sent < 65536 ? n - sent : 65536;
        sent += cl_send_some(c, p + sent, step);
        spin();
        cl_read(c);
        if (c->closed || response_length(c->buf, c->len) > 0) {
            break;
        }
    }
}

/* Waits for a complete response, or for the peer to close when
 * @until_close. Returns the status, 0 if none came. */
static int cl_wait(struct client *c, int until_close)
{
    for (int i = 0; i < MAX_TURNS && !c->closed; i++) {
        if (!until_close && response_length(c->buf, c->len) > 0) {
            break;
        }
        spin();
        cl_read(c);
    }
    int status = status_of(c->buf, c->len);
    received[status]++;
    return status;
}

/* Flags for exchange(). */
#define SHUT  1 /* shut the sending side after the request */
#define CLOSE 2 /* wait for the peer to close */

/* One connection, one request (sent as far as the peer reads it), one
 * answer, read into main_buf. Returns its status, 0 for none. */
static int exchange(const void *req, size_t len, int flags)
{
    struct client c;
    cl_open(&c, main_buf, sizeof main_buf);
    cl_send(&c, req, len);
    if (flags & SHUT) {
        shutdown(c.fd, SHUT_WR);
    }
    int status = cl_wait(&c, (flags & (SHUT | CLOSE)) != 0);
    cl_close(&c);
    return status;
}

/* A request with Content-Length. @headers: extra lines, each ending in
 * CRLF (may be ""). @ctype NULL: no Content-Type. */
static int request(const char *method,
                   const char *path,
                   const char *ctype,
                   const char *headers,
                   const void *body,
                   size_t len)
{
    struct sbuf r = {0};
    sb_printf(&r, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n", method, path);
    if (ctype != NULL) {
        sb_printf(&r, "Content-Type: %s\r\n", ctype);
    }
    sb_printf(&r, "%sContent-Length: %zu\r\nConnection: close\r\n\r\n", headers,
              len);
    sb_add(&r, body, len);
    int status = exchange(r.p, r.len, 0);
    sb_free(&r);
    return status;
}

static int get(const char *path)
{
    return request("GET", path, NULL, "", "", 0);
}

static int post(const char *path, const struct sbuf *body)
{
    return request("POST", path, "application/json", "", body->p, body->len);
}

static int body_has(const char *s)
{
    const char *body = strstr(main_buf, "\r\n\r\n");
    return body != NULL && strstr(body, s) != NULL;
}

/* ---- /metrics ------------------------------------------------------------ */

static char metrics_text[1 << 17];

static int name_char(char c, int first)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
           c == ':' || (!first && c >= '0' && c <= '9');
}

/* Checks that @text is Prometheus text format 0.0.4 as a scraper reads it:
 * HELP and TYPE lines, samples of typed families, label sets in braces,
 * values that parse, no series twice. */
static void check_prom_text(const char *text)
{
    char typed[64][128];
    int n_typed = 0;
    static char series[256][192];
    int n_series = 0;
    int line_no = 0;
    for (const char *l = text; *l != '\0';) {
        const char *nl = strchr(l, '\n');
        REQUIRE(nl != NULL); /* every line ends in \n */
        size_t n = (size_t)(nl - l);
        char line[512];
        if (n >= sizeof line) {
            check__fail(__FILE__, __LINE__, 1, "line %d is too long",
                        line_no + 1);
            return; /* not reached; tells the compiler n fits */
        }
        memcpy(line, l, n);
        line[n] = '\0';
        l = nl + 1;
        line_no++;
        if (n == 0) {
            continue;
        }
        if (strncmp(line, "# TYPE ", 7) == 0) {
            char name[128], type[32];
            REQUIRE_EQ(sscanf(line + 7, "%127s %31s", name, type), 2);
            CHECK(strcmp(type, "counter") == 0 || strcmp(type, "gauge") == 0 ||
                  strcmp(type, "histogram") == 0 ||
                  strcmp(type, "summary") == 0 || strcmp(type, "untyped") == 0);
            for (int i = 0; i < n_typed; i++) {
                if (strcmp(typed[i], name) == 0) {
                    check__fail(__FILE__, __LINE__, 0,
                                "line %d: %s typed twice", line_no, name);
                }
            }
            REQUIRE(n_typed < 64);
            snprintf(typed[n_typed++], sizeof typed[0], "%s", name);
            continue;
        }
        if (line[0] == '#') {
            CHECK(strncmp(line, "# HELP ", 7) == 0);
            continue;
        }
        /* A sample: name, optional {labels}, a space, the value. */
        size_t k = 0;
        while (name_char(line[k], k == 0)) {
            k++;
        }
        if (k == 0) {
            check__fail(__FILE__, __LINE__, 0, "line %d: no metric name: %s",
                        line_no, line);
            continue;
        }
        char name[128];
        snprintf(name, sizeof name, "%.*s", (int)k, line);
        /* A histogram or summary family NAME has NAME_bucket (or NAME
         * with a quantile), NAME_sum and NAME_count samples. */
        int known = 0;
        for (int i = 0; i < n_typed; i++) {
            size_t tl = strlen(typed[i]);
            known |= strcmp(typed[i], name) == 0 ||
                     (strncmp(typed[i], name, tl) == 0 &&
                      (strcmp(name + tl, "_bucket") == 0 ||
                       strcmp(name + tl, "_sum") == 0 ||
                       strcmp(name + tl, "_count") == 0));
        }
        if (!known) {
            check__fail(__FILE__, __LINE__, 0, "line %d: %s has no TYPE",
                        line_no, name);
        }
        if (line[k] == '{') {
            const char *close = strchr(line + k, '}');
            REQUIRE(close != NULL);
            /* label="value"(,label="value")* */
            const char *p = line + k + 1;
            while (p < close) {
                const char *eq = strchr(p, '=');
                if (eq == NULL || eq > close || eq == p || eq[1] != '"') {
                    check__fail(__FILE__, __LINE__, 0, "line %d: bad labels",
                                line_no);
                    break;
                }
                const char *q = strchr(eq + 2, '"');
                REQUIRE(q != NULL && q < close);
                p = q + 1;
                if (*p == ',') {
                    p++;
                }
            }
            k = (size_t)(close - line) + 1;
        }
        if (line[k] != ' ') {
            check__fail(__FILE__, __LINE__, 0, "line %d: no value: %s", line_no,
                        line);
            continue;
        }
        char *end;
        strtod(line + k + 1, &end);
        if (end == line + k + 1 || *end != '\0') {
            check__fail(__FILE__, __LINE__, 0, "line %d: bad value: %s",
                        line_no, line);
        }
        REQUIRE(n_series < 256);
        snprintf(series[n_series], sizeof series[0], "%.*s", (int)k, line);
        for (int i = 0; i < n_series; i++) {
            if (strcmp(series[i], series[n_series]) == 0) {
                check__fail(__FILE__, __LINE__, 0, "line %d: %s twice", line_no,
                            series[i]);
            }
        }
        n_series++;
    }
    CHECK(n_typed > 5);
}

/* The value of the sample @series ("name" or "name{labels}"), or -1. */
static double sample(const char *series)
{
    size_t n = strlen(series);
    for (const char *l = metrics_text; l != NULL && *l != '\0';) {
        if (strncmp(l, series, n) == 0 && l[n] == ' ') {
            return strtod(l + n + 1, NULL);
        }
        l = strchr(l, '\n');
        l = l != NULL ? l + 1 : NULL;
    }
    return -1;
}

/* Fetches /metrics into metrics_text and checks its format. */
static void fetch_metrics(void)
{
    REQUIRE_EQ(get("/metrics"), 200);
    const char *body = strstr(main_buf, "\r\n\r\n");
    REQUIRE(body != NULL);
    snprintf(metrics_text, sizeof metrics_text, "%s", body + 4);
    check_prom_text(metrics_text);
}

/* The peer's accepted spans and points match what the test had accepted:
 * nothing of any refused batch was applied. */
static void check_applied(void)
{
    fetch_metrics();
    CHECK_EQ(sample("sagemesh_spans_total{outcome=\"accepted\"}"), want_spans);
    CHECK_EQ(sample("sagemesh_points_total{outcome=\"accepted\"}"),
             want_points);
    CHECK_EQ(sample("sagemesh_spans_total{outcome=\"late\"}"), 0);
    CHECK_EQ(sample("sagemesh_spans_total{outcome=\"rejected\"}"), 0);
    CHECK_EQ(sample("sagemesh_pending_spans"), 0);
}

/* Posts a batch that must be accepted whole. */
static void post_good(int n_spans)
{
    struct sbuf b = {0};
    traces_body(&b, n_spans, NULL);
    int status = post("/v1/traces", &b);
    CHECK_EQ(status, 200);
    if (status == 200) {
        want_spans += (uint64_t)n_spans;
    }
    sb_free(&b);
}

/* The peer serves, is ready, took a good batch, and its /metrics parses
 * and agrees with everything the test saw. Every test ends with this. */
static void check_healthy(void)
{
    CHECK_EQ(get("/healthz"), 200);
    CHECK(body_has("ok"));
    CHECK_EQ(get("/readyz"), 200);
    post_good(3);
    uint64_t ok_before = received[200];
    check_applied();
    /* Every 200 came from the handler (the server makes none itself);
     * /metrics may or may not count its own answer. */
    double ok = sample("sagemesh_http_responses_total{code=\"200\"}");
    if (ok < (double)ok_before || ok > (double)(ok_before + 1 + unread)) {
        check__fail(__FILE__, __LINE__, 0,
                    "peer counted %g answers 200, the test got %llu (and "
                    "left %llu unread)",
                    ok, (unsigned long long)ok_before,
                    (unsigned long long)unread);
    }
    static const int codes[] = {202, 400, 404, 405, 408, 413,
                                415, 429, 431, 500, 503};
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        char name[64];
        snprintf(name, sizeof name,
                 "sagemesh_http_responses_total{code=\"%d\"}", codes[i]);
        double v = sample(name);
        CHECK(v >= 0);
        if (v > (double)(received[codes[i]] + unread)) {
            check__fail(__FILE__, __LINE__, 0,
                        "peer counted %g answers %d, the test got %llu", v,
                        codes[i], (unsigned long long)received[codes[i]]);
        }
    }
    /* Each refused body is counted once: at least the handler's refusals,
     * at most those plus the server's. */
    double rejected = sample("sagemesh_batches_rejected_total");
    if (rejected < (double)handler_rejects ||
        rejected > (double)(handler_rejects + server_rejects)) {
        check__fail(__FILE__, __LINE__, 0,
                    "batches_rejected %g, expected %llu to %llu", rejected,
                    (unsigned long long)handler_rejects,
                    (unsigned long long)(handler_rejects + server_rejects));
    }
    CHECK_EQ(sample("sagemesh_windows_open"), 1);
    CHECK_EQ(sample("sagemesh_store_errors_total"), 0);
}

/* ---- Fixture ------------------------------------------------------------- */

static void setup(void)
{
    sm_log_set_sink(check_log_discard, NULL);
    sm_fake_clock_init(&fake, T0_NS);
    /* Not REQUIRE: setup runs before the runner's jump target is set. */
    CHECK(uv_loop_init(&loop) == 0);
    want_spans = want_points = 0;
    handler_rejects = server_rejects = unread = 0;
    memset(received, 0, sizeof received);
}

static void teardown(void)
{
    for (int fd = 0; fd < MAX_FD; fd++) {
        if (fd_open[fd]) {
            close_fd(fd);
        }
    }
    if (nofile_raised) {
        CHECK(setrlimit(RLIMIT_NOFILE, &saved_nofile) == 0);
        nofile_raised = 0;
    }
    if (peer != NULL) {
        stop_peer();
    }
    for (int i = 0; i < 1000 && uv_loop_alive(&loop); i++) {
        uv_run(&loop, UV_RUN_NOWAIT);
    }
    CHECK_EQ(uv_loop_close(&loop), 0);
    sm_log_set_sink(NULL, NULL);
}

/* ---- Malformed batches --------------------------------------------------- */

/* Posts @body (@len bytes) to @path and expects the handler's 400 with an
 * error message, and nothing applied. */
static void refused(const char *what,
                    const char *path,
                    const void *body,
                    size_t len)
{
    int status = request("POST", path, "application/json", "", body, len);
    if (status != 400 || !body_has("{\"error\":\"")) {
        check__fail(__FILE__, __LINE__, 0, "%s: status %d, answer: %.200s",
                    what, status, main_buf);
    }
    handler_rejects += status == 400;
}

static void refused_str(const char *what, const char *path, const char *body)
{
    refused(what, path, body, strlen(body));
}

/* A trace body of @n good spans whose last span is @bad_span. */
static void refused_tail(const char *what, int n, const char *bad_span)
{
    struct sbuf b = {0};
    traces_body(&b, n, bad_span);
    refused(what, "/v1/traces", b.p, b.len);
    sb_free(&b);
}

#define GOOD_IDS                                                          \
    "\"traceId\":\"0102030405060708090a0b0c0d0e0f10\",\"spanId\":"        \
    "\"0102030405060708\",\"startTimeUnixNano\":\"1795421758000000000\"," \
    "\"endTimeUnixNano\":\"1795421758005000000\""

static void test_malformed_traces(void)
{
    start_peer();
    /* Garbage and broken documents. */
    refused_str("garbage", "/v1/traces", "\x01\x02 this is not JSON");
    refused_str("a word", "/v1/traces", "hello");
    refused("empty body", "/v1/traces", "", 0);
    refused_str("whitespace", "/v1/traces", " \r\n\t ");
    refused_str("unbalanced close", "/v1/traces", "{}}");
    refused_str("unbalanced open", "/v1/traces", "{\"resourceSpans\":[{");
    refused_str("two documents", "/v1/traces", "{}{}");
    refused_str("NaN", "/v1/traces", "{\"resourceSpans\":NaN}");
    refused_str("root array", "/v1/traces", "[]");
    refused_str("root string", "/v1/traces", "\"resourceSpans\"");
    refused_str("root number", "/v1/traces", "42");
    /* Wrong types for OTLP fields. */
    refused_str("resourceSpans a string", "/v1/traces",
                "{\"resourceSpans\":\"x\"}");
    refused_str("resourceSpans an object", "/v1/traces",
                "{\"resourceSpans\":{\"scopeSpans\":[{\"spans\":[{" GOOD_IDS
                "}]}]}}");
    refused_str("resourceSpans of numbers", "/v1/traces",
                "{\"resourceSpans\":[1,2,3]}");
    refused_str("scopeSpans an object", "/v1/traces",
                "{\"resourceSpans\":[{\"scopeSpans\":{\"spans\":[{" GOOD_IDS
                "}]}}]}");
    refused_str("spans a string", "/v1/traces",
                "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":\"x\"}]}]}");
    refused_str("a span an array", "/v1/traces",
                "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[[{" GOOD_IDS
                "}]]}]}]}");
    refused_str("resource attributes an object", "/v1/traces",
                "{\"resourceSpans\":[{\"resource\":{\"attributes\":{\"key\":"
                "\"service.name\"}},\"scopeSpans\":[{\"spans\":[{" GOOD_IDS
                "}]}]}]}");
    refused_str("traceId a number", "/v1/traces",
                "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[{"
                "\"traceId\":5,\"spanId\":\"0102030405060708\","
                "\"startTimeUnixNano\":\"1\",\"endTimeUnixNano\":\"2\"}]}]}]}");
    refused_str("start an object", "/v1/traces",
                "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[{"
                "\"traceId\":\"0102030405060708090a0b0c0d0e0f10\",\"spanId\":"
                "\"0102030405060708\",\"startTimeUnixNano\":{},"
                "\"endTimeUnixNano\":\"2\"}]}]}]}");
    /* Invalid UTF-8: a bad continuation, a stray continuation byte, an
     * overlong '/', a UTF-16 surrogate, a code point past U+10FFFF. */
    refused_str("bad continuation", "/v1/traces",
                "{\"resourceSpans\":[],\"x\":\"\xc3\x28\"}");
    refused_str("stray continuation in a key", "/v1/traces",
                "{\"\x80\":1,\"resourceSpans\":[]}");
    refused_str("overlong", "/v1/traces",
                "{\"resourceSpans\":[],\"x\":\"\xc0\xaf\"}");
    refused_str("surrogate", "/v1/traces",
                "{\"resourceSpans\":[],\"x\":\"\xed\xa0\x80\"}");
    refused_str("past U+10FFFF", "/v1/traces",
                "{\"resourceSpans\":[],\"x\":\"\xf4\x90\x80\x80\"}");
    /* Deep nesting, in an unknown field and at the top. */
    struct sbuf deep = {0};
    sb_str(&deep, "{\"resourceSpans\":[],\"x\":");
    sb_fill(&deep, '[', 100000);
    sb_fill(&deep, ']', 100000);
    sb_str(&deep, "}");
    refused("deep arrays", "/v1/traces", deep.p, deep.len);
    deep.len = 0;
    for (int i = 0; i < 20000; i++) {
        sb_str(&deep, "{\"a\":");
    }
    sb_str(&deep, "1");
    sb_fill(&deep, '}', 20000);
    refused("deep objects", "/v1/traces", deep.p, deep.len);
    sb_free(&deep);

    /* Valid spans first, the last one broken: all of it is refused. */
    refused_tail("last span with a bad traceId", 50,
                 "{\"traceId\":\"zz\",\"spanId\":\"0102030405060708\","
                 "\"startTimeUnixNano\":\"1\",\"endTimeUnixNano\":\"2\"}");
    refused_tail(
        "last span without an end", 50,
        "{\"traceId\":\"0102030405060708090a0b0c0d0e0f10\","
        "\"spanId\":\"0102030405060708\",\"startTimeUnixNano\":\"1\"}");
    refused_tail("last span ends before it starts", 50,
                 "{\"traceId\":\"0102030405060708090a0b0c0d0e0f10\","
                 "\"spanId\":\"0102030405060708\",\"startTimeUnixNano\":\"9\","
                 "\"endTimeUnixNano\":\"2\"}");
    refused_tail("last span of an unknown kind", 50,
                 "{" GOOD_IDS ",\"kind\":\"SPAN_KIND_BOGUS\"}");
    refused_tail("last span with a time past 64 bits", 50,
                 "{" GOOD_IDS ",\"endTimeUnixNano\":\"18446744073709551616\"}");
    refused_tail("last span named in bad UTF-8", 50,
                 "{" GOOD_IDS ",\"name\":\"\xe2\x82\"}");
    struct sbuf tail = {0};
    sb_str(&tail, "{" GOOD_IDS ",\"x\":");
    sb_fill(&tail, '[', 100);
    sb_fill(&tail, ']', 100);
    sb_str(&tail, "}");
    refused_tail("last span nested too deep", 50, tail.p);
    sb_free(&tail);
    /* A long valid batch cut short, and one with trailing garbage. */
    struct sbuf b = {0};
    traces_body(&b, 2000, NULL);
    refused("a batch cut short", "/v1/traces", b.p, b.len - 3);
    sb_str(&b, " x");
    refused("a batch with trailing garbage", "/v1/traces", b.p, b.len);
    sb_free(&b);
    /* The same for Zipkin. */
    refused_str("zipkin garbage", "/api/v2/spans", "[{]");
    zipkin_body(&b, 20, "{\"traceId\":\"zz\",\"id\":\"0102030405060708\"}");
    refused("zipkin, last span bad", "/api/v2/spans", b.p, b.len);
    b.len = 0;
    zipkin_body(&b, 20, NULL);
    CHECK_EQ(post("/api/v2/spans", &b), 202);
    want_spans += 20;
    sb_free(&b);

    check_applied();
    /* A good batch after all that is taken whole. */
    post_good(40);
    check_healthy();
}

static void refused_metric_tail(const char *what, int n, const char *bad)
{
    struct sbuf b = {0};
    metrics_body(&b, n, bad);
    refused(what, "/v1/metrics", b.p, b.len);
    sb_free(&b);
}

static void test_malformed_metrics(void)
{
    start_peer();
    refused_str("garbage", "/v1/metrics", "\xff\xfe garbage");
    refused("empty body", "/v1/metrics", "", 0);
    refused_str("unbalanced", "/v1/metrics", "{\"resourceMetrics\":[");
    refused_str("root array", "/v1/metrics", "[{}]");
    refused_str("resourceMetrics a string", "/v1/metrics",
                "{\"resourceMetrics\":\"x\"}");
    refused_str("resourceMetrics an object", "/v1/metrics",
                "{\"resourceMetrics\":{}}");
    refused_str("invalid UTF-8", "/v1/metrics",
                "{\"resourceMetrics\":[],\"x\":\"\xc3\x28\"}");
    refused_str("overlong UTF-8", "/v1/metrics",
                "{\"resourceMetrics\":[],\"x\":\"\xe0\x80\xaf\"}");
    struct sbuf deep = {0};
    sb_str(&deep, "{\"resourceMetrics\":");
    sb_fill(&deep, '[', 50000);
    sb_fill(&deep, ']', 50000);
    sb_str(&deep, "}");
    refused("deep nesting", "/v1/metrics", deep.p, deep.len);
    sb_free(&deep);

    refused_metric_tail("last point without a time", 40,
                        "{\"name\":\"m\",\"gauge\":{\"dataPoints\":["
                        "{\"asDouble\":1}]}}");
    refused_metric_tail("last point with a text value", 40,
                        "{\"name\":\"m\",\"gauge\":{\"dataPoints\":["
                        "{\"timeUnixNano\":\"1795421758000000000\","
                        "\"asDouble\":\"many\"}]}}");
    refused_metric_tail("last metric without a name", 40,
                        "{\"gauge\":{\"dataPoints\":[]}}");
    refused_metric_tail("last metric's name a number", 40,
                        "{\"name\":7,\"gauge\":{\"dataPoints\":[]}}");
    refused_metric_tail("last metric's points an object", 40,
                        "{\"name\":\"m\",\"gauge\":{\"dataPoints\":{\"a\":"
                        "{\"timeUnixNano\":\"1795421758000000000\","
                        "\"asDouble\":1}}}}");
    refused_metric_tail("last metric's gauge a string", 40,
                        "{\"name\":\"m\",\"gauge\":\"x\"}");
    refused_metric_tail("last sum of an unknown temporality", 40,
                        "{\"name\":\"m\",\"sum\":{\"aggregationTemporality\":"
                        "\"AGGREGATION_TEMPORALITY_SOMETIMES\",\"dataPoints\":"
                        "[{\"timeUnixNano\":\"1795421758000000000\","
                        "\"asDouble\":1}]}}");
    struct sbuf b = {0};
    metrics_body(&b, 300, NULL);
    refused("a batch cut short", "/v1/metrics", b.p, b.len - 1);
    b.len = 0;
    metrics_body(&b, 30, NULL);
    CHECK_EQ(post("/v1/metrics", &b), 200);
    want_points += 30;
    sb_free(&b);
    check_healthy();
}

/* ---- Truncated bodies ---------------------------------------------------- */

static void test_truncated_bodies(void)
{
    start_peer();
    struct sbuf b = {0}, r = {0};
    traces_body(&b, 20, NULL);

    /* A whole valid batch, but Content-Length promises more; the client
     * then shuts down its side. The peer closes without applying it. */
    sb_printf(&r,
              "POST /v1/traces HTTP/1.1\r\nHost: a\r\nContent-Type: "
              "application/json\r\nContent-Length: %zu\r\n\r\n",
              b.len + 100);
    sb_add(&r, b.p, b.len);
    int status = exchange(r.p, r.len, SHUT);
    CHECK(status == 0 || status == 400);

    /* The same, reset: SO_LINGER 0 makes close() send RST. */
    struct client c;
    cl_open(&c, main_buf, sizeof main_buf);
    cl_send(&c, r.p, r.len);
    for (int i = 0; i < 100; i++) {
        spin();
    }
    struct linger reset = {.l_onoff = 1, .l_linger = 0};
    CHECK(setsockopt(c.fd, SOL_SOCKET, SO_LINGER, &reset, sizeof reset) == 0);
    cl_close(&c);
    for (int i = 0; i < 100; i++) {
        spin();
    }

    /* Chunked: the whole batch as one chunk, then cut three ways: inside
     * a second chunk, before the last (empty) chunk, inside a chunk-size
     * line. */
    static const char *const cuts[] = {"\r\n100\r\n     ", "\r\n", "\r\n1"};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        r.len = 0;
        sb_printf(&r,
                  "POST /v1/traces HTTP/1.1\r\nHost: a\r\nContent-Type: "
                  "application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                  "%zx\r\n",
                  b.len);
        sb_add(&r, b.p, b.len);
        sb_str(&r, cuts[i]);
        status = exchange(r.p, r.len, SHUT);
        CHECK(status == 0 || status == 400);
    }

    /* A gzip stream cut short, with a matching Content-Length: the server
     * refuses it as malformed. */
    struct sbuf z = {0};
    gzip_into(&z, b.p, b.len);
    CHECK_EQ(request("POST", "/v1/traces", "application/json",
                     "Content-Encoding: gzip\r\n", z.p, z.len - 9),
             400);
    server_rejects++;
    /* Intact gzip around JSON cut short: the handler refuses it. */
    z.len = 0;
    gzip_into(&z, b.p, b.len - 5);
    CHECK_EQ(request("POST", "/v1/traces", "application/json",
                     "Content-Encoding: gzip\r\n", z.p, z.len),
             400);
    handler_rejects++;
    /* And the whole batch gzipped is fine. */
    z.len = 0;
    gzip_into(&z, b.p, b.len);
    CHECK_EQ(request("POST", "/v1/traces", "application/json",
                     "Content-Encoding: gzip\r\n", z.p, z.len),
             200);
    want_spans += 20;
    sb_free(&z);
    sb_free(&r);
    sb_free(&b);
    check_healthy();
}

/* ---- Oversized bodies ---------------------------------------------------- */

static void test_oversized_bodies(void)
{
    start_peer();
    /* Declared over the limit: refused from the head. */
    struct sbuf r = {0};
    sb_printf(&r,
              "POST /v1/traces HTTP/1.1\r\nHost: a\r\nContent-Type: "
              "application/json\r\nContent-Length: %u\r\n\r\n",
              MAX_BODY + 1);
    sb_fill(&r, ' ', 65536);
    CHECK_EQ(exchange(r.p, r.len, 0), 413);
    server_rejects++;
    r.len = 0;
    sb_str(&r,
           "POST /v1/traces HTTP/1.1\r\nHost: a\r\nContent-Length: "
           "1099511627776\r\n\r\n");
    CHECK_EQ(exchange(r.p, r.len, 0), 413);
    server_rejects++;

    /* Chunked, a valid batch padded past 20 MiB: refused on the way. */
    struct sbuf b = {0};
    traces_body(&b, 10, NULL);
    r.len = 0;
    sb_printf(&r,
              "POST /v1/traces HTTP/1.1\r\nHost: a\r\nContent-Type: "
              "application/json\r\nTransfer-Encoding: chunked\r\n\r\n%zx\r\n",
              b.len);
    sb_add(&r, b.p, b.len);
    sb_str(&r, "\r\n");
    for (size_t sent = 0; sent <= MAX_BODY; sent += 65536) {
        sb_str(&r, "10000\r\n");
        sb_fill(&r, ' ', 65536);
        sb_str(&r, "\r\n");
    }
    sb_str(&r, "0\r\n\r\n");
    CHECK_EQ(exchange(r.p, r.len, 0), 413);
    server_rejects++;

    /* Exactly at the limit (whitespace after the document) is taken. */
    r.len = 0;
    sb_printf(&r,
              "POST /v1/traces HTTP/1.1\r\nHost: a\r\nContent-Type: "
              "application/json\r\nContent-Length: %u\r\n"
              "Connection: close\r\n\r\n",
              MAX_BODY);
    sb_add(&r, b.p, b.len);
    sb_fill(&r, ' ', MAX_BODY - b.len);
    CHECK_EQ(exchange(r.p, r.len, 0), 200);
    want_spans += 10;

    /* gzip that inflates past the limit: a valid batch and 21 MiB of
     * spaces, about 21 KiB on the wire. */
    struct sbuf plain = {0}, z = {0};
    traces_body(&plain, 10, NULL);
    sb_fill(&plain, ' ', 21 * MIB);
    gzip_into(&z, plain.p, plain.len);
    CHECK(z.len < 64 * 1024);
    CHECK_EQ(request("POST", "/v1/traces", "application/json",
                     "Content-Encoding: gzip\r\n", z.p, z.len),
             413);
    server_rejects++;
    /* The same bomb chunked, so that no length gives it away. */
    r.len = 0;
    sb_str(&r,
           "POST /v1/traces HTTP/1.1\r\nHost: a\r\nContent-Type: "
           "application/json\r\nContent-Encoding: gzip\r\n"
           "Transfer-Encoding: chunked\r\n\r\n");
    for (size_t at = 0; at < z.len; at += 1000) {
        size_t k = z.len - at < 1000 ? z.len - at : 1000;
        sb_printf(&r, "%zx\r\n", k);
        sb_add(&r, z.p + at, k);
        sb_str(&r, "\r\n");
    }
    sb_str(&r, "0\r\n\r\n");
    CHECK_EQ(exchange(r.p, r.len, 0), 413);
    server_rejects++;
    sb_free(&plain);
    sb_free(&z);
    sb_free(&b);
    sb_free(&r);
    check_healthy();
}

/* ---- Content types and encodings ----------------------------------------- */

static void test_content_types(void)
{
    start_peer();
    struct sbuf b = {0};
    traces_body(&b, 5, NULL);
    /* Protobuf, the OTLP exporters' default: 415 and how to fix it. */
    CHECK_EQ(
        request("POST", "/v1/traces", "application/x-protobuf", "", b.p, b.len),
        415);
    CHECK(body_has("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=http/json"));
    CHECK_EQ(
        request("POST", "/v1/traces", "application/protobuf", "", b.p, b.len),
        415);
    CHECK(body_has("http/json"));
    CHECK_EQ(request("POST", "/v1/traces", "text/plain", "", b.p, b.len), 415);
    CHECK(body_has("{\"error\":\""));
    /* A longer media type is another type, not JSON. */
    CHECK_EQ(request("POST", "/v1/traces", "application/jsonx", "", b.p, b.len),
             415);
    CHECK_EQ(request("POST", "/v1/traces", "application/x-www-form-urlencoded",
                     "", b.p, b.len),
             415);
    struct sbuf m = {0};
    metrics_body(&m, 5, NULL);
    CHECK_EQ(request("POST", "/v1/metrics", "application/x-protobuf", "", m.p,
                     m.len),
             415);
    CHECK(body_has("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL=http/json"));
    CHECK_EQ(
        request("POST", "/api/v2/spans", "application/x-thrift", "", "[]", 2),
        415);
    check_applied();

    /* Unknown content codings: refused by the server before any parsing. */
    static const char *const codings[] = {"br",       "deflate",  "compress",
                                          "zstd",     "gzip, br", "gzip, gzip",
                                          "x-unknown"};
    for (size_t i = 0; i < sizeof codings / sizeof codings[0]; i++) {
        char h[64];
        snprintf(h, sizeof h, "Content-Encoding: %s\r\n", codings[i]);
        int status =
            request("POST", "/v1/traces", "application/json", h, b.p, b.len);
        if (status != 415) {
            check__fail(__FILE__, __LINE__, 0, "Content-Encoding %s: %d",
                        codings[i], status);
        }
        server_rejects++;
    }
    check_applied();

    /* Accepted forms: a charset parameter, identity coding, and no
     * Content-Type at all (the peer reads such bodies as JSON). */
    CHECK_EQ(request("POST", "/v1/traces", "application/json; charset=utf-8",
                     "", b.p, b.len),
             200);
    want_spans += 5;
    /* Media types are case-insensitive (RFC 9110, 8.3.1). */
    b.len = 0;
    traces_body(&b, 5, NULL);
    CHECK_EQ(request("POST", "/v1/traces", "Application/JSON", "", b.p, b.len),
             200);
    want_spans += 5;
    b.len = 0;
    traces_body(&b, 5, NULL);
    CHECK_EQ(request("POST", "/v1/traces", "application/json",
                     "Content-Encoding: identity\r\n", b.p, b.len),
             200);
    want_spans += 5;
    b.len = 0;
    traces_body(&b, 5, NULL);
    CHECK_EQ(request("POST", "/v1/traces", NULL, "", b.p, b.len), 200);
    want_spans += 5;
    /* ... but without one, garbage is still garbage. */
    CHECK_EQ(request("POST", "/v1/traces", NULL, "", "<xml/>", 6), 400);
    handler_rejects++;
    sb_free(&m);
    sb_free(&b);
    check_healthy();
}

/* ---- Slow clients -------------------------------------------------------- */

#define N_HOLDERS 40

static void test_slow_clients(void)
{
    start_peer();
    /* Holders: half-sent heads, heads with a partial body, a chunked body
     * cut mid-chunk, and a reader that never reads its answers. */
    static char hold_buf[N_HOLDERS][512];
    struct client holders[N_HOLDERS];
    struct sbuf b = {0}, r = {0};
    traces_body(&b, 8, NULL);
    for (int i = 0; i < N_HOLDERS; i++) {
        cl_open(&holders[i], hold_buf[i], sizeof hold_buf[i]);
        r.len = 0;
        switch (i % 4) {
            case 0:
                sb_str(&r,
                       "POST /v1/traces HTTP/1.1\r\nHost: a\r\n"
                       "Content-Type: appl");
                break;
            case 1:
                sb_printf(&r,
                          "POST /v1/traces HTTP/1.1\r\nHost: a\r\n"
                          "Content-Length: %zu\r\n\r\n",
                          b.len + 1);
                sb_add(&r, b.p, b.len); /* all but one byte */
                break;
            case 2:
                sb_printf(&r,
                          "POST /v1/traces HTTP/1.1\r\nHost: a\r\n"
                          "Transfer-Encoding: chunked\r\n\r\n%zx\r\n",
                          b.len + 10);
                sb_add(&r, b.p, b.len);
                break;
            default:
                sb_str(&r, "GE");
                break;
        }
        cl_send(&holders[i], r.p, r.len);
    }
    /* A client pipelining many requests and never reading the answers:
     * the peer stops reading it once its output backs up. The requests
     * (10 MiB) outgrow what the kernel buffers both ways, so the sends
     * stop short only if the peer stops reading. */
    int sink_fd = open_fd_rcvbuf(4096);
    r.len = 0;
    static const char metrics_req[] =
        "GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n";
    int n_sink = (int)(10 * MIB / (sizeof metrics_req - 1));
    for (int i = 0; i < n_sink; i++) {
        sb_add(&r, metrics_req, sizeof metrics_req - 1);
    }
    unread += (uint64_t)n_sink;
    size_t sink_sent = 0;
    for (int i = 0; i < 2000 && sink_sent < r.len; i++) {
        ssize_t w = send(sink_fd, r.p + sink_sent, r.len - sink_sent,
                         MSG_DONTWAIT | MSG_NOSIGNAL);
        sink_sent += w > 0 ? (size_t)w : 0;
        spin();
    }
    CHECK(sink_sent < r.len); /* the peer stopped reading it */

    /* A client trickling a good batch one byte per turn of the loop, while
     * others get their answers in between. */
    struct client slow;
    static char slow_buf[4096];
    cl_open(&slow, slow_buf, sizeof slow_buf);
    b.len = 0;
    traces_body(&b, 4, NULL);
    r.len = 0;
    sb_printf(&r,
              "POST /v1/traces HTTP/1.1\r\nHost: a\r\nContent-Type: "
              "application/json\r\nContent-Length: %zu\r\n"
              "Connection: close\r\n\r\n",
              b.len);
    sb_add(&r, b.p, b.len);
    int served = 0;
    for (size_t i = 0; i < r.len; i++) {
        size_t w = 0;
        for (int k = 0; k < 1000 && w == 0; k++) {
            w = cl_send_some(&slow, r.p + i, 1);
            spin();
        }
        REQUIRE_EQ(w, 1);
        CHECK(!slow.closed);
        if (i % 97 == 0) {
            CHECK_EQ(get("/healthz"), 200);
            served++;
        }
        if (i % 331 == 0) {
            post_good(2);
            served++;
        }
        cl_read(&slow);
        if (i + 1 < r.len) {
            CHECK_EQ(slow.len, 0); /* no answer before the last byte */
        }
    }
    CHECK(served > 10);
    CHECK_EQ(cl_wait(&slow, 1), 200);
    want_spans += 4;
    cl_close(&slow);
    check_applied();

    /* The holders are still waiting; none got an answer. Half shut down
     * their side (the peer closes without applying anything), half just
     * vanish. */
    for (int i = 0; i < N_HOLDERS; i++) {
        cl_read(&holders[i]);
        CHECK_EQ(holders[i].len, 0);
        CHECK(!holders[i].closed);
        if (i % 2 == 0) {
            shutdown(holders[i].fd, SHUT_WR);
            int status = cl_wait(&holders[i], 1);
            CHECK(status == 0 || status == 400);
            CHECK(holders[i].closed);
        }
        cl_close(&holders[i]);
    }
    close_fd(sink_fd);
    sb_free(&b);
    sb_free(&r);
    check_healthy();
}

/* ---- Thousands of connections -------------------------------------------- */

#define MASS 3000

static int mass_fd[MASS];
static char mass_buf[MASS][192];
static size_t mass_len[MASS];
static char mass_state[MASS]; /* 0 waiting, 1 closed by the peer */

/* Reads every ready socket among @n; closes those the peer closed.
 * Returns how many closed. */
static int mass_poll(int n, struct pollfd *pfd)
{
    for (int i = 0; i < n; i++) {
        pfd[i].fd = mass_state[i] == 0 ? mass_fd[i] : -1;
        pfd[i].events = POLLIN;
        pfd[i].revents = 0;
    }
    int ready = poll(pfd, (nfds_t)n, 0);
    int closed = 0;
    for (int i = 0; ready > 0 && i < n; i++) {
        if (pfd[i].revents == 0) {
            continue;
        }
        char tmp[512];
        ssize_t r = recv(mass_fd[i], tmp, sizeof tmp, MSG_DONTWAIT);
        if (r > 0) {
            size_t k = (size_t)r;
            if (k > sizeof mass_buf[0] - 1 - mass_len[i]) {
                k = sizeof mass_buf[0] - 1 - mass_len[i];
            }
            memcpy(mass_buf[i] + mass_len[i], tmp, k);
            mass_len[i] += k;
            mass_buf[i][mass_len[i]] = '\0';
        } else if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
            mass_state[i] = 1;
            close_fd(mass_fd[i]);
            mass_fd[i] = -1;
            closed++;
        }
    }
    return closed;
}

static void test_thousands_of_connections(void)
{
    start_peer();
    struct rlimit old, rl;
    REQUIRE(getrlimit(RLIMIT_NOFILE, &old) == 0);
    for (int i = 0; i < MASS; i++) {
        mass_fd[i] = -1;
    }
    /* The clients, the peer's side of each accepted connection, and some
     * room for everything else. */
    rlim_t need = MASS + CONN_CAP + 512;
    if (old.rlim_cur != RLIM_INFINITY && old.rlim_cur < need) {
        if (old.rlim_max != RLIM_INFINITY && old.rlim_max < need) {
            check_skip("RLIMIT_NOFILE hard limit %llu < %llu descriptors",
                       (unsigned long long)old.rlim_max,
                       (unsigned long long)need);
        }
        rl = old;
        rl.rlim_cur = need;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
            check_skip("cannot raise RLIMIT_NOFILE to %llu: %s",
                       (unsigned long long)need, strerror(errno));
        }
        saved_nofile = old;
        nofile_raised = 1;
    }
    static struct pollfd pfd[MASS];
    int closed = 0;
    for (int i = 0; i < MASS; i++) {
        mass_fd[i] = open_fd();
        mass_len[i] = 0;
        mass_state[i] = 0;
        mass_buf[i][0] = '\0';
        if (i % 64 == 63) {
            /* Let the peer accept as they come, within the backlog. */
            spin();
            closed += mass_poll(i + 1, pfd);
        }
    }
    /* The peer keeps CONN_CAP and turns the rest away: 503 while it can
     * linger for the answer, a bare close beyond that. */
    for (int i = 0; i < 20000 && closed < MASS - CONN_CAP; i++) {
        spin();
        closed += mass_poll(MASS, pfd);
    }
    CHECK_EQ(closed, MASS - CONN_CAP);
    int rejected_503 = 0;
    for (int i = 0; i < MASS; i++) {
        if (mass_len[i] > 0) {
            CHECK(mass_state[i] == 1);
            CHECK_EQ(status_of(mass_buf[i], mass_len[i]), 503);
            CHECK(strstr(mass_buf[i], "Retry-After: 1\r\n") != NULL);
            rejected_503++;
            received[503]++;
        }
    }
    CHECK(rejected_503 > 0);

    /* A new client while at the cap is told to retry (once the peer has
     * seen the turned-away clients go). */
    for (int i = 0; i < 20; i++) {
        spin();
    }
    CHECK_EQ(get("/healthz"), 503);
    CHECK(strstr(main_buf, "Retry-After: 1\r\n") != NULL);

    /* Every kept connection is served (keep-alive; one request each). */
    static const char hz[] = "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n";
    int kept = 0;
    for (int i = 0; i < MASS; i++) {
        if (mass_state[i] == 0) {
            ssize_t w = send(mass_fd[i], hz, sizeof hz - 1,
                             MSG_DONTWAIT | MSG_NOSIGNAL);
            CHECK_EQ(w, (ssize_t)(sizeof hz - 1));
            kept++;
            if (kept % 64 == 0) {
                spin();
            }
        }
    }
    CHECK_EQ(kept, CONN_CAP);
    int answered = 0;
    for (int i = 0; i < 20000 && answered < kept; i++) {
        spin();
        mass_poll(MASS, pfd);
        answered = 0;
        for (int k = 0; k < MASS; k++) {
            answered += mass_state[k] == 0 &&
                        response_length(mass_buf[k], mass_len[k]) > 0;
        }
    }
    CHECK_EQ(answered, kept);
    for (int i = 0; i < MASS; i++) {
        if (mass_state[i] == 0) {
            int status = status_of(mass_buf[i], mass_len[i]);
            CHECK_EQ(status, 200);
            received[status]++;
        }
    }

    /* They all leave; the peer serves new clients again. */
    for (int i = 0; i < MASS; i++) {
        close_fd(mass_fd[i]);
        mass_fd[i] = -1;
    }
    int status = 0;
    for (int i = 0; i < 200 && status != 200; i++) {
        for (int k = 0; k < 10; k++) {
            spin();
        }
        status = get("/healthz");
    }
    CHECK_EQ(status, 200);
    check_healthy();
}

/* ---- Hostile headers ----------------------------------------------------- */

/* Sends @req and expects one of the statuses @a or @b (b 0: only a); the
 * peer must then still answer /healthz. */
static void hostile(const char *what, const void *req, size_t len, int a, int b)
{
    int status = exchange(req, len, 0);
    if (status != a && (b == 0 || status != b)) {
        check__fail(__FILE__, __LINE__, 0, "%s: status %d, answer: %.100s",
                    what, status, main_buf);
    }
    if (get("/healthz") != 200) {
        check__fail(__FILE__, __LINE__, 0, "%s: /healthz fails after it", what);
    }
}

#define HOSTILE(what, lit, a, b) hostile(what, lit, sizeof lit - 1, a, b)

static void test_hostile_headers(void)
{
    start_peer();
    struct sbuf r = {0};
    /* Over the 64 KiB header limit: a long header, a long URL, many
     * headers. */
    sb_str(&r, "GET /healthz HTTP/1.1\r\nHost: a\r\nX-Big: ");
    sb_fill(&r, 'a', 70000);
    sb_str(&r, "\r\n\r\n");
    hostile("header block over the limit", r.p, r.len, 431, 0);
    r.len = 0;
    sb_str(&r, "GET /");
    sb_fill(&r, 'u', 70000);
    sb_str(&r, " HTTP/1.1\r\nHost: a\r\n\r\n");
    hostile("URL over the limit", r.p, r.len, 431, 414);
    r.len = 0;
    sb_str(&r, "GET /healthz HTTP/1.1\r\nHost: a\r\n");
    for (int i = 0; i < 9000; i++) {
        sb_str(&r, "X-h: 1\r\n");
    }
    sb_str(&r, "\r\n");
    hostile("9000 headers", r.p, r.len, 431, 0);
    /* A long URL and many headers under the limit are just requests. */
    r.len = 0;
    sb_str(&r, "GET /");
    sb_fill(&r, 'u', 8000);
    sb_str(&r, " HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    hostile("long URL for no endpoint", r.p, r.len, 404, 0);
    r.len = 0;
    sb_str(&r, "GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n");
    for (int i = 0; i < 2000; i++) {
        sb_str(&r, "X-h: 1\r\n");
    }
    sb_str(&r, "\r\n");
    hostile("2000 headers under the limit", r.p, r.len, 200, 0);

    /* Control bytes. */
    HOSTILE("NUL in a header value",
            "GET /healthz HTTP/1.1\r\nHost: a\r\nX-A: a\0b\r\n\r\n", 400, 0);
    HOSTILE("NUL in a header name",
            "GET /healthz HTTP/1.1\r\nHost: a\r\nX\0A: b\r\n\r\n", 400, 0);
    HOSTILE("bare CR in a header value",
            "GET /healthz HTTP/1.1\r\nHost: a\r\nX-A: a\rb\r\n\r\n", 400, 0);
    HOSTILE("bare CR ending a header",
            "GET /healthz HTTP/1.1\r\nHost: a\rX-A: b\r\n\r\n", 400, 0);
    HOSTILE("bare CR ending the request line",
            "GET /healthz HTTP/1.1\rHost: a\r\n\r\n", 400, 0);
    HOSTILE("DEL in a header value",
            "GET /healthz HTTP/1.1\r\nHost: a\r\nX-A: \x7f\r\n\r\n", 400, 0);
    HOSTILE("a header without a colon",
            "GET /healthz HTTP/1.1\r\nHost a\r\n\r\n", 400, 0);
    HOSTILE("an empty header name",
            "GET /healthz HTTP/1.1\r\nHost: a\r\n: v\r\n\r\n", 400, 0);

    /* Framing: each of these could smuggle a second request. The
     * smuggled one is a good batch, which must not be applied. */
    struct sbuf b = {0}, smuggled = {0};
    traces_body(&b, 7, NULL);
    sb_printf(&smuggled,
              "POST /v1/traces HTTP/1.1\r\nHost: a\r\nContent-Type: "
              "application/json\r\nContent-Length: %zu\r\n\r\n",
              b.len);
    sb_add(&smuggled, b.p, b.len);
    static const char *const framings[] = {
        "Content-Length: 5\r\nContent-Length: 6\r\n",
        "Content-Length: 5\r\nContent-Length: 5\r\n",
        "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
        "Content-Length : 5\r\n",
        "Content-Length\t: 5\r\n",
        "Transfer-Encoding : chunked\r\n",
        " Transfer-Encoding: chunked\r\n", /* folds into Content-Type */
        "Transfer-Encoding: chunked, identity\r\n",
        "Transfer-Encoding: xchunked\r\n",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
        "Content-Length: -1\r\n",
        "Content-Length: +5\r\n",
        "Content-Length: 5 5\r\n",
        "Content-Length: 0x5\r\n",
        "Content-Length: \r\n",
        "Content-Length: 99999999999999999999999\r\n",
        "Content-Length: 18446744073709551615\r\n",
        "Content-Length: 5\r\n 6\r\n",
    };
    for (size_t i = 0; i < sizeof framings / sizeof framings[0]; i++) {
        r.len = 0;
        sb_printf(&r,
                  "POST /v1/traces HTTP/1.1\r\nHost: a\r\nContent-Type: "
                  "application/json\r\n%s\r\n0\r\n\r\n",
                  framings[i]);
        sb_add(&r, smuggled.p, smuggled.len);
        char what[128];
        snprintf(what, sizeof what, "framing %zu: %s", i, framings[i]);
        hostile(what, r.p, r.len, 400, 0);
        server_rejects++;
    }
    check_applied();
    r.len = 0;
    sb_str(&r,
           "POST /v1/traces HTTP/1.1\r\n Transfer-Encoding: chunked\r\n"
           "Host: a\r\nContent-Type: application/json\r\n\r\n0\r\n\r\n");
    sb_add(&r, smuggled.p, smuggled.len);
    hostile("whitespace before the first header", r.p, r.len, 400, 0);
    server_rejects++;
    check_applied();
    /* Chunk sizes that do not parse or do not fit. */
    HOSTILE("chunk size past 64 bits",
            "POST /v1/traces HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: "
            "chunked\r\n\r\nfffffffffffffffffffff\r\n",
            400, 413);
    HOSTILE("negative chunk size",
            "POST /v1/traces HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: "
            "chunked\r\n\r\n-1\r\n",
            400, 0);
    server_rejects += 2;

    /* Folded header lines (obs-fold) are joined with a space, as RFC 9112
     * allows: a folded Content-Type is no longer application/json. */
    HOSTILE("folded header",
            "GET /healthz HTTP/1.1\r\nHost: a\r\nX-A: a\r\n b\r\n"
            "Connection: close\r\n\r\n",
            200, 400);
    r.len = 0;
    sb_printf(&r,
              "POST /v1/traces HTTP/1.1\r\nHost: a\r\nContent-Type: "
              "application/\r\n json\r\nContent-Length: %zu\r\n"
              "Connection: close\r\n\r\n",
              b.len);
    sb_add(&r, b.p, b.len);
    hostile("folded Content-Type", r.p, r.len, 415, 400);
    server_rejects++;

    /* Request lines. The absolute form must be accepted (RFC 9112 3.2.2);
     * the host in it changes nothing. */
    HOSTILE("absolute URI",
            "GET http://evil.example/healthz HTTP/1.1\r\nHost: a\r\n"
            "Connection: close\r\n\r\n",
            200, 0);
    HOSTILE("absolute URI, unknown path",
            "GET https://evil.example:443/../../etc/passwd HTTP/1.1\r\n"
            "Host: a\r\nConnection: close\r\n\r\n",
            404, 400);
    HOSTILE("absolute URI, no path",
            "GET http://evil.example HTTP/1.1\r\nHost: a\r\n"
            "Connection: close\r\n\r\n",
            404, 400);
    HOSTILE("CONNECT", "CONNECT 127.0.0.1:4318 HTTP/1.1\r\nHost: a\r\n\r\n",
            404, 400);
    HOSTILE("OPTIONS *", "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", 404, 400);
    HOSTILE("unknown method", "BREW /healthz HTTP/1.1\r\nHost: a\r\n\r\n", 400,
            405);
    HOSTILE("lower-case method", "get /healthz HTTP/1.1\r\nHost: a\r\n\r\n",
            400, 0);
    HOSTILE("control byte in the method",
            "G\x01T /healthz HTTP/1.1\r\nHost: a\r\n\r\n", 400, 0);
    HOSTILE("known method, wrong endpoint",
            "DELETE /v1/traces HTTP/1.1\r\nHost: a\r\n"
            "Connection: close\r\n\r\n",
            405, 0);
    HOSTILE("PUT to metrics",
            "PUT /metrics HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n"
            "Connection: close\r\n\r\n",
            405, 0);
    HOSTILE("space in the URL", "GET /heal thz HTTP/1.1\r\nHost: a\r\n\r\n",
            400, 0);
    HOSTILE("control byte in the URL",
            "GET /heal\x01thz HTTP/1.1\r\nHost: a\r\n\r\n", 400, 0);
    HOSTILE("HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400, 505);
    HOSTILE("bad version", "GET /healthz HTTP/1.10\r\nHost: a\r\n\r\n", 400,
            505);
    HOSTILE("not HTTP at all", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
            400, 0);
    HOSTILE("upgrade to websocket",
            "GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\n"
            "Upgrade: websocket\r\n\r\n\x81\x85garbage",
            200, 400);
    /* A bad request after a good one on the same connection: the first is
     * answered, the second refused, the connection closed. */
    r.len = 0;
    sb_str(&r,
           "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"
           "GET /healthz HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n"
           "Content-Length: 2\r\n\r\nab");
    CHECK_EQ(exchange(r.p, r.len, CLOSE), 200);
    const char *second = strstr(main_buf + 4, "HTTP/1.1 ");
    CHECK(second != NULL && strncmp(second, "HTTP/1.1 400", 12) == 0);
    received[400]++;
    sb_free(&smuggled);
    sb_free(&b);
    sb_free(&r);
    check_healthy();
}

static const struct check_test tests[] = {
    {"malformed trace batches are refused whole", test_malformed_traces},
    {"malformed metric batches are refused whole", test_malformed_metrics},
    {"truncated bodies apply nothing", test_truncated_bodies},
    {"oversized bodies", test_oversized_bodies},
    {"content types and encodings", test_content_types},
    {"slow clients do not hold up others", test_slow_clients},
    {"thousands of connections", test_thousands_of_connections},
    {"hostile headers", test_hostile_headers},
};

CHECK_MAIN(tests, setup, teardown)
