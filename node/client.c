/* Blocking HTTP client for CLI commands, the OTLP JSON writer, and
 * `sagemesh import`. CLI commands run outside any event loop, one request
 * at a time, so plain sockets with poll(2) deadlines are the simple and
 * honest tool: every step is bounded by the command's --timeout. */
#include "node/client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "node/cli.h"
#include "node/cli_client.h"
#include "node/config.h"
#include "node/ingest.h"
#include "node/node.h"
#include "node/textbuf.h"

#define MAX_RESPONSE (64u << 20)

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Waits for @events on @fd until @deadline; 1 ready, 0 timed out. */
static int wait_fd(int fd, short events, double deadline)
{
    for (;;) {
        double left = deadline - mono_s();
        if (left <= 0) {
            return 0;
        }
        struct pollfd p = {.fd = fd, .events = events};
        int rv = poll(&p, 1, (int)(left * 1000) + 1);
        if (rv > 0) {
            return 1;
        }
        if (rv < 0 && errno != EINTR) {
            return 1; /* let the following call report the error */
        }
    }
}

static int connect_to(const char *peer, double deadline, char *errmsg)
{
    char host[64];
    int port;
    if (node_parse_hostport(peer, host, sizeof host, &port) != SM_OK) {
        sm_errmsg_printf(errmsg, "peer '%s' is not a numeric HOST:PORT", peer);
        return -SM_EINVAL;
    }
    struct sockaddr_storage ss;
    socklen_t sl;
    memset(&ss, 0, sizeof ss);
    struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
        sl = sizeof *a4;
    } else {
        inet_pton(AF_INET6, host, &a6->sin6_addr);
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        sl = sizeof *a6;
    }
    int fd =
        socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        sm_errmsg_printf(errmsg, "socket: %s", strerror(errno));
        return -SM_EIO;
    }
    if (connect(fd, (struct sockaddr *)&ss, sl) != 0 && errno != EINPROGRESS) {
        sm_errmsg_printf(errmsg, "connect to %s: %s", peer, strerror(errno));
        close(fd);
        return -SM_EIO;
    }
    if (!wait_fd(fd, POLLOUT, deadline)) {
        sm_errmsg_printf(errmsg, "connect to %s: timed out", peer);
        close(fd);
        return -SM_ETIMEDOUT;
    }
    int soerr = 0;
    socklen_t len = sizeof soerr;
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len);
    if (soerr != 0) {
        sm_errmsg_printf(errmsg, "connect to %s: %s", peer, strerror(soerr));
        close(fd);
        return -SM_EIO;
    }
    return fd;
}

static int send_all(int fd,
                    const char *p,
                    size_t n,
                    double deadline,
                    char *errmsg)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
            continue;
        }
        if (w < 0 && errno != EAGAIN && errno != EINTR) {
            sm_errmsg_printf(errmsg, "send: %s", strerror(errno));
            return SM_EIO;
        }
        if (!wait_fd(fd, POLLOUT, deadline)) {
            sm_errmsg_printf(errmsg, "send: timed out");
            return SM_ETIMEDOUT;
        }
    }
    return SM_OK;
}

int node_client_request(const char *peer,
                        const char *method,
                        const char *path,
                        const char *content_type,
                        const void *body,
                        size_t len,
                        double timeout_s,
                        struct node_client_response *out,
                        char errmsg[SM_ERRMSG_SIZE])
{
    return node_client_request_auth(peer, method, path, content_type, NULL,
                                    body, len, timeout_s, out, errmsg);
}

int node_client_request_auth(const char *peer,
                             const char *method,
                             const char *path,
                             const char *content_type,
                             const char *authorization,
                             const void *body,
                             size_t len,
                             double timeout_s,
                             struct node_client_response *out,
                             char errmsg[SM_ERRMSG_SIZE])
{
    double deadline = mono_s() + timeout_s;
    int fd = connect_to(peer, deadline, errmsg);
    if (fd < 0) {
        return -fd;
    }
    char head[512];
    int hn = snprintf(head, sizeof head,
                      "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: sagemesh-cli"
                      "\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                      "%s%s%sConnection: close\r\n\r\n",
                      method, path, peer, content_type, len,
                      authorization ? "Authorization: " : "",
                      authorization ? authorization : "",
                      authorization ? "\r\n" : "");
    int rv = hn > 0 && (size_t)hn < sizeof head
                 ? send_all(fd, head, (size_t)hn, deadline, errmsg)
                 : SM_EINVAL;
    if (rv == SM_OK && len > 0) {
        rv = send_all(fd, body, len, deadline, errmsg);
    }
    char *buf = NULL;
    size_t got = 0, cap = 0;
    while (rv == SM_OK) {
        if (cap - got < 4096) {
            cap = cap ? cap * 2 : 65536;
            char *grown = cap > MAX_RESPONSE ? NULL : realloc(buf, cap + 1);
            if (grown == NULL) {
                rv = cap > MAX_RESPONSE ? SM_ETOOBIG : SM_ENOMEM;
                sm_errmsg_printf(errmsg, "response too large");
                break;
            }
            buf = grown;
        }
        ssize_t r = recv(fd, buf + got, cap - got, 0);
        if (r > 0) {
            got += (size_t)r;
        } else if (r == 0) {
            break;
        } else if (errno == EAGAIN || errno == EINTR) {
            if (!wait_fd(fd, POLLIN, deadline)) {
                rv = SM_ETIMEDOUT;
                sm_errmsg_printf(errmsg,
                                 "no complete answer from %s within "
                                 "%g s",
                                 peer, timeout_s);
            }
        } else {
            rv = SM_EIO;
            sm_errmsg_printf(errmsg, "receive: %s", strerror(errno));
        }
    }
    close(fd);
    int status = 0;
    char *sep = NULL;
    if (rv == SM_OK) {
        buf[got] = '\0';
        sep = strstr(buf, "\r\n\r\n");
        if (sep == NULL || sscanf(buf, "HTTP/1.%*d %d", &status) != 1) {
            rv = SM_EMALFORMED;
            sm_errmsg_printf(errmsg, "%s did not answer HTTP", peer);
        }
    }
    if (rv != SM_OK) {
        free(buf);
        return rv;
    }
    size_t off = (size_t)(sep + 4 - buf);
    memmove(buf, buf + off, got - off + 1);
    out->status = status;
    out->body = buf;
    out->len = got - off;
    return SM_OK;
}

/* ---- OTLP JSON writer
 * -------------------------------------------------------- */

static void sb_hex(struct node_text *b, const uint8_t *id, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    char hex[33];
    for (size_t i = 0; i < n; i++) {
        hex[2 * i] = digits[id[i] >> 4];
        hex[2 * i + 1] = digits[id[i] & 15];
    }
    node_text_put(b, "\"", 1);
    node_text_put(b, hex, 2 * n);
    node_text_put(b, "\"", 1);
}

static void sb_attr(struct node_text *b,
                    int first,
                    const char *key,
                    const char *v)
{
    node_text_printf(b, "%s{\"key\":", first ? "" : ",");
    node_text_json_str(b, key);
    node_text_put(b, ",\"value\":{\"stringValue\":", 24);
    node_text_json_str(b, v);
    node_text_put(b, "}}", 2);
}

static int zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i]) {
            return 0;
        }
    }
    return 1;
}

int node_otlp_write(const struct cbn_span *spans,
                    size_t n,
                    char **out,
                    size_t *len)
{
    struct node_text b = {NULL, 0, 0, 0};
    char *done = calloc(n ? n : 1, 1);
    if (done == NULL) {
        return SM_ENOMEM;
    }
    node_text_put(&b, "{\"resourceSpans\":[", 18);
    int first_rs = 1;
    for (size_t i = 0; i < n; i++) {
        if (done[i]) {
            continue;
        }
        /* One ResourceSpans per (service, instance). */
        const char *svc = spans[i].service, *inst = spans[i].instance;
        node_text_printf(&b, "%s{\"resource\":{\"attributes\":[",
                         first_rs ? "" : ",");
        first_rs = 0;
        sb_attr(&b, 1, "service.name", svc);
        if (inst != NULL && inst[0] != '\0') {
            sb_attr(&b, 0, "service.instance.id", inst);
        }
        node_text_put(&b, "]},\"scopeSpans\":[{\"spans\":[", 27);
        int first = 1;
        for (size_t k = i; k < n; k++) {
            const struct cbn_span *s = &spans[k];
            if (done[k] || strcmp(s->service, svc) != 0 ||
                strcmp(s->instance ? s->instance : "", inst ? inst : "") != 0) {
                continue;
            }
            done[k] = 1;
            node_text_put(&b, first ? "{\"traceId\":" : ",{\"traceId\":",
                          first ? 11 : 12);
            first = 0;
            sb_hex(&b, s->trace_id, 16);
            node_text_put(&b, ",\"spanId\":", 10);
            sb_hex(&b, s->span_id, 8);
            if (!zero(s->parent_id, 8)) {
                node_text_put(&b, ",\"parentSpanId\":", 16);
                sb_hex(&b, s->parent_id, 8);
            }
            node_text_put(&b, ",\"name\":", 8);
            node_text_json_str(&b, s->operation ? s->operation : "");
            node_text_printf(&b,
                             ",\"kind\":%d,\"startTimeUnixNano\":\"%" PRIu64
                             "\",\"endTimeUnixNano\":\"%" PRIu64
                             "\",\"attributes\":[",
                             (int)s->kind, s->start_ns, s->end_ns);
            int first_attr = 1;
            if (s->operation != NULL && s->operation[0] != '\0') {
                sb_attr(&b, 1, "http.route", s->operation);
                first_attr = 0;
            }
            if (s->kind == CBN_SPAN_CLIENT && s->peer != NULL &&
                s->peer[0] != '\0') {
                sb_attr(&b, first_attr, "peer.service", s->peer);
            }
            node_text_printf(&b, "],\"status\":{\"code\":%d}}",
                             s->error ? 2 : 0);
        }
        node_text_put(&b, "]}]}", 4);
    }
    node_text_put(&b, "]}", 2);
    free(done);
    return node_text_take(&b, out, len);
}

/* ---- sagemesh import
 * ----------------------------------------------------------- */

#define IMPORT_BATCH 5000

static int read_all(const char *path, uint8_t **data, size_t *len, FILE *err)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(err, "sagemesh import: cannot read %s: %s\n", path,
                strerror(errno));
        return -1;
    }
    size_t cap = 1 << 20, n = 0;
    uint8_t *buf = malloc(cap);
    while (buf != NULL) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap) {
            break;
        }
        uint8_t *grown = cap >= (1u << 30) ? NULL : realloc(buf, cap * 2);
        if (grown == NULL) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = grown;
        cap *= 2;
    }
    int bad = ferror(f) || buf == NULL;
    fclose(f);
    if (bad) {
        fprintf(err,
                "sagemesh import: cannot read %s (I/O error or over 1 GiB)\n",
                path);
        free(buf);
        return -1;
    }
    *data = buf;
    *len = n;
    return 0;
}

int node__cmd_import(int argc, char **argv, FILE *out, FILE *err)
{
    static const struct option options[] = {
        {"jaeger", required_argument, NULL, 'j'},
        {"peer", required_argument, NULL, 'p'},
        {"timeout", required_argument, NULL, 't'},
        {NULL, 0, NULL, 0},
    };
    const char *file = NULL, *peer = getenv("SAGEMESH_PEER");
    double timeout = 5;
    optind = 0;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "", options, NULL)) != -1) {
        if (c == 'j') {
            file = optarg;
        } else if (c == 'p') {
            peer = optarg;
        } else if (c == 't') {
            timeout = atof(optarg);
        } else {
            fprintf(err,
                    "sagemesh import: unknown or incomplete option '%s'; "
                    "see 'sagemesh import --help'\n",
                    argv[optind - 1]);
            return NODE_EXIT_USAGE;
        }
    }
    if (file == NULL || optind < argc || !(timeout > 0)) {
        fprintf(err,
                "sagemesh import: usage: sagemesh import --jaeger FILE "
                "[--peer HOST:PORT] [--timeout SECONDS]\n");
        return NODE_EXIT_USAGE;
    }
    if (peer == NULL || peer[0] == '\0') {
        peer = "127.0.0.1:4318";
    }
    uint8_t *data;
    size_t len;
    if (read_all(file, &data, &len, err) != 0) {
        return NODE_EXIT_FAILED;
    }
    struct node_spans spans;
    node_spans_init(&spans, 1u << 30);
    char msg[SM_ERRMSG_SIZE] = "";
    int rv = node_jaeger_traces(data, len, &spans, msg);
    free(data);
    if (rv != SM_OK) {
        fprintf(err, "sagemesh import: %s: %s\n", file,
                msg[0] ? msg : sm_strerror(rv));
        node_spans_free(&spans);
        return NODE_EXIT_FAILED;
    }
    int code = NODE_EXIT_OK;
    size_t sent = 0;
    for (size_t at = 0; at < spans.n && code == NODE_EXIT_OK;
         at += IMPORT_BATCH) {
        size_t n = spans.n - at < IMPORT_BATCH ? spans.n - at : IMPORT_BATCH;
        char *body;
        size_t blen;
        struct node_client_response resp = {0, NULL, 0};
        rv = node_otlp_write(spans.v + at, n, &body, &blen);
        if (rv == SM_OK) {
            rv = node_client_request(peer, "POST", "/v1/traces",
                                     "application/json", body, blen, timeout,
                                     &resp, msg);
            free(body);
        }
        if (rv != SM_OK) {
            fprintf(err, "sagemesh import: %s: %s\n", peer,
                    msg[0] ? msg : sm_strerror(rv));
            code = NODE_EXIT_FAILED;
        } else if (resp.status != 200) {
            fprintf(err, "sagemesh import: %s answered %d: %s\n", peer,
                    resp.status, resp.body);
            code = NODE_EXIT_FAILED;
        } else {
            sent += n;
        }
        free(resp.body);
    }
    fprintf(out, "imported %zu of %zu spans from %s into %s\n", sent, spans.n,
            file, peer);
    node_spans_free(&spans);
    return code;
}

/* ---- Secrets and sagemesh flush
 * ------------------------------------------------ */

int node_read_secret(const char *path,
                     struct tp_secret *secret,
                     FILE *err,
                     char errmsg[SM_ERRMSG_SIZE])
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        sm_errmsg_printf(errmsg, "cannot read secret file %s: %s", path,
                         strerror(errno));
        return sm_err_from_errno(errno);
    }
    struct stat st;
    if (fstat(fd, &st) == 0 && (st.st_mode & 077) != 0 && err != NULL) {
        fprintf(err,
                "sagemesh: warning: %s is readable by group or others; "
                "chmod 600 it\n",
                path);
    }
    char text[256];
    ssize_t n = read(fd, text, sizeof text);
    close(fd);
    if (n < 0 || tp_init() != SM_OK ||
        tp_secret_parse(text, (size_t)n, secret) != SM_OK) {
        sm_errmsg_printf(errmsg,
                         "%s is not a cluster secret (64 hex digits; make "
                         "one with 'sagemesh keygen')",
                         path);
        explicit_bzero(text, sizeof text);
        return SM_EMALFORMED;
    }
    explicit_bzero(text, sizeof text);
    return SM_OK;
}

int node__cmd_flush(int argc, char **argv, FILE *out, FILE *err)
{
    static const char usage[] =
        "sagemesh flush [--peer HOST:PORT] [--secret-file FILE] "
        "[--timeout SECONDS]";
    struct node_client_flags f;
    if (node__client_flags("flush", usage, 0, NULL, 0, argc, argv, &f, err) !=
        NODE_EXIT_OK) {
        return NODE_EXIT_USAGE;
    }
    if (f.n_args > 0) {
        fprintf(err, "sagemesh flush: usage: %s\n", usage);
        return NODE_EXIT_USAGE;
    }
    const char *peer = f.peer, *secret_file = f.secret_file;
    double timeout = f.timeout_s;
    if (secret_file == NULL) {
        fprintf(err,
                "sagemesh flush: needs the cluster secret: "
                "--secret-file FILE or SAGEMESH_SECRET_FILE\n");
        return NODE_EXIT_USAGE;
    }
    struct tp_secret secret;
    char msg[SM_ERRMSG_SIZE] = "";
    if (node_read_secret(secret_file, &secret, err, msg) != SM_OK) {
        fprintf(err, "sagemesh flush: %s\n", msg);
        return NODE_EXIT_FAILED;
    }
    char auth[TP_AUTH_HEADER_MAX];
    tp_credential_sign(&secret, "POST", "/v1/flush", (uint64_t)time(NULL), "",
                       0, auth);
    tp_secret_wipe(&secret);
    struct node_client_response resp = {0, NULL, 0};
    int rv =
        node_client_request_auth(peer, "POST", "/v1/flush", "application/json",
                                 auth, NULL, 0, timeout, &resp, msg);
    if (rv != SM_OK) {
        fprintf(err, "sagemesh flush: %s\n", msg);
        return NODE_EXIT_FAILED;
    }
    int ok = resp.status == 200;
    fprintf(ok ? out : err, "%s%s%s", ok ? "" : "sagemesh flush: ", resp.body,
            resp.len > 0 && resp.body[resp.len - 1] == '\n' ? "" : "\n");
    free(resp.body);
    return ok ? NODE_EXIT_OK : NODE_EXIT_FAILED;
}
