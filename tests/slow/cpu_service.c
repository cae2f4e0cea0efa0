/* A CPU-bound test service for the end-to-end actuation test.
 *
 * It serves an open-loop stream of requests from a fixed schedule (--rate
 * per second), each a fixed amount of CPU work (--work-us, calibrated at
 * start in iterations per microsecond of this thread's CPU time), and
 * measures each request's latency from its scheduled arrival to its end,
 * so time spent waiting for the CPU (a cgroup's CFS quota) counts, as it
 * does for the clients of a real service. A request that could not start
 * within MAX_LAG_NS of its arrival is shed (a server's bounded queue), so a
 * cap that is lifted is recovered from in about a second instead of after
 * draining an unbounded backlog.
 *
 * Once a second a reporter thread
 *   - writes "<unix_s> <p99_ms> <count>" for the requests finished since the
 *     last line to --report (the test measures latency itself from it);
 *   - POSTs the finished requests as OTLP/HTTP JSON SERVER spans to
 *     /v1/traces and the process's CPU time and its cgroup's CFS throttling
 *     as OTLP JSON cumulative sums to /v1/metrics of the peer (--peer),
 *     plain HTTP/1.1 with a deadline on every socket call.
 *
 * SIGTERM or SIGINT (or --duration) stops it: the request loop ends, the
 * reporter sends what is left, and the program exits 0. */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define NS_PER_S  UINT64_C(1000000000)
#define NS_PER_US UINT64_C(1000)
/* Queueing bound: a request not started within this of its arrival is shed. */
#define MAX_LAG_NS UINT64_C(1000000000)
/* Every socket call (connect, send, recv) gives up after this. */
#define IO_TIMEOUT_S 2
/* Finished requests awaiting a report, at most. */
#define MAX_PENDING 100000
#define PATH_SIZE   4096

struct options
{
    struct sockaddr_in peer;
    char host_port[64];
    const char *name;
    const char *report;
    const char *cgroup_dir; /* NULL: found from /proc/self/cgroup */
    unsigned rate;          /* requests per second */
    unsigned work_us;       /* CPU work per request */
    unsigned duration_s;    /* 0: until a signal */
    int send;               /* 0: no --peer, only the report (a dry run) */
};

/* A finished request, in unix nanoseconds. */
struct request
{
    uint64_t start_ns, end_ns;
};

/* Finished requests handed from the request loop to the reporter. */
struct pending
{
    pthread_mutex_t lock;
    pthread_cond_t wake; /* signalled when the request loop ends */
    struct request *v;
    size_t n;
    uint64_t shed, lost; /* shed: queue bound; lost: reporter too far behind */
    int done;
};

static atomic_int stop_requested;
static volatile uint64_t
    work_sink; /* keeps the work from being optimised out */

static void on_signal(int sig)
{
    (void)sig;
    atomic_store(&stop_requested, 1);
}

static uint64_t clock_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

/* The unit of CPU work: xorshift steps, which no compiler folds away. */
static uint64_t spin(uint64_t iterations)
{
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (uint64_t i = 0; i < iterations; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    return x;
}

/* Iterations of spin() per microsecond of this thread's CPU time: the best
 * of a few runs of at least 20 ms each, so a preemption during one run (CPU
 * time does not advance then, but caches go cold) does not skew it. */
static double calibrate(void)
{
    double best = 0;
    for (int run = 0; run < 3; run++) {
        uint64_t n = 100000;
        for (int grow = 0; grow < 30; grow++) {
            uint64_t t0 = clock_ns(CLOCK_THREAD_CPUTIME_ID);
            work_sink = spin(n);
            uint64_t dt = clock_ns(CLOCK_THREAD_CPUTIME_ID) - t0;
            if (dt >= 20 * UINT64_C(1000000)) {
                double per_us = (double)n / ((double)dt / NS_PER_US);
                best = per_us > best ? per_us : best;
                break;
            }
            n *= 2;
        }
    }
    return best;
}

/* ---- Text buffers and JSON ---------------------------------------------- */

struct buf
{
    char *s;
    size_t len, cap;
    int failed; /* out of memory: the buffer is unusable */
};

static void buf_printf(struct buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void buf_printf(struct buf *b, const char *fmt, ...)
{
    for (int attempt = 0; attempt < 2 && !b->failed; attempt++) {
        va_list ap;
        va_start(ap, fmt);
        size_t room = b->cap - b->len;
        int n = vsnprintf(b->s != NULL ? b->s + b->len : NULL, room, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->failed = 1;
        } else if ((size_t)n < room) {
            b->len += (size_t)n;
            return;
        } else {
            size_t cap = (b->cap + (size_t)n + 1) * 2;
            char *grown = realloc(b->s, cap);
            if (grown == NULL) {
                b->failed = 1;
            } else {
                b->s = grown;
                b->cap = cap;
            }
        }
    }
}

static void hex_id(char *out, size_t bytes)
{
    unsigned char raw[16];
    if (getrandom(raw, bytes, 0) != (ssize_t)bytes) {
        /* no entropy source: still unique enough for one test run */
        uint64_t t = clock_ns(CLOCK_MONOTONIC);
        for (size_t i = 0; i < bytes; i++) {
            raw[i] = (unsigned char)(t >> (8 * (i % 8))) ^ (unsigned char)i;
        }
    }
    for (size_t i = 0; i < bytes; i++) {
        sprintf(out + 2 * i, "%02x", raw[i]);
    }
}

static void resource_json(struct buf *b, const char *name)
{
    buf_printf(b,
               "\"resource\":{\"attributes\":["
               "{\"key\":\"service.name\",\"value\":{\"stringValue\":\"%s\"}},"
               "{\"key\":\"service.instance.id\",\"value\":{\"stringValue\":"
               "\"%s-%ld\"}}]}",
               name, name, (long)getpid());
}

/* OTLP JSON ExportTraceServiceRequest: one SERVER span per request. */
static void traces_json(struct buf *b,
                        const char *name,
                        const struct request *v,
                        size_t n)
{
    buf_printf(b, "{\"resourceSpans\":[{");
    resource_json(b, name);
    buf_printf(b,
               ",\"scopeSpans\":[{\"scope\":{\"name\":\"cpu_service\"},"
               "\"spans\":[");
    for (size_t i = 0; i < n; i++) {
        char trace[33], span[17];
        hex_id(trace, 16);
        hex_id(span, 8);
        buf_printf(b,
                   "%s{\"traceId\":\"%s\",\"spanId\":\"%s\","
                   "\"name\":\"GET /work\",\"kind\":2,"
                   "\"startTimeUnixNano\":\"%" PRIu64
                   "\","
                   "\"endTimeUnixNano\":\"%" PRIu64
                   "\","
                   "\"attributes\":["
                   "{\"key\":\"http.route\",\"value\":{\"stringValue\":"
                   "\"/work\"}},"
                   "{\"key\":\"http.response.status_code\",\"value\":"
                   "{\"intValue\":\"200\"}}],"
                   "\"status\":{}}",
                   i ? "," : "", trace, span, v[i].start_ns, v[i].end_ns);
    }
    buf_printf(b, "]}]}]}");
}

/* Cumulative counters of this process and its cgroup; negative: unknown. */
struct counters
{
    double cpu_seconds;       /* user + system time of the process */
    double throttled_seconds; /* cgroup cpu.stat throttled time */
    double throttled_periods; /* cgroup cpu.stat nr_throttled */
};

static void sum_json(struct buf *b,
                     const char *metric,
                     double value,
                     uint64_t start_ns,
                     uint64_t now_ns,
                     int *first)
{
    if (value < 0) {
        return;
    }
    buf_printf(b,
               "%s{\"name\":\"%s\",\"sum\":{\"aggregationTemporality\":2,"
               "\"isMonotonic\":true,\"dataPoints\":[{"
               "\"startTimeUnixNano\":\"%" PRIu64
               "\","
               "\"timeUnixNano\":\"%" PRIu64 "\",\"asDouble\":%.9f}]}}",
               *first ? "" : ",", metric, start_ns, now_ns, value);
    *first = 0;
}

/* OTLP JSON ExportMetricsServiceRequest with the counters that are known. */
static void metrics_json(struct buf *b,
                         const char *name,
                         const struct counters *c,
                         uint64_t start_ns,
                         uint64_t now_ns)
{
    int first = 1;
    buf_printf(b, "{\"resourceMetrics\":[{");
    resource_json(b, name);
    buf_printf(b,
               ",\"scopeMetrics\":[{\"scope\":{\"name\":\"cpu_service\"},"
               "\"metrics\":[");
    sum_json(b, "process_cpu_seconds_total", c->cpu_seconds, start_ns, now_ns,
             &first);
    sum_json(b, "container_cpu_cfs_throttled_seconds_total",
             c->throttled_seconds, start_ns, now_ns, &first);
    sum_json(b, "container_cpu_cfs_throttled_periods_total",
             c->throttled_periods, start_ns, now_ns, &first);
    buf_printf(b, "]}]}]}");
}

/* ---- The cgroup's CPU statistics ---------------------------------------- */

/* Finds the cpu.stat of this process's cgroup: v1, the hierarchy whose
 * controller list in /proc/self/cgroup names "cpu"; v2, the "0::" line
 * under the unified mount (/sys/fs/cgroup itself, or /sys/fs/cgroup/unified
 * on a hybrid host, where the cpu controller usually stays with v1). Read
 * afresh every time: the test may move the process after it started. */
static int find_cpu_stat(char *out, size_t size)
{
    FILE *f = fopen("/proc/self/cgroup", "r");
    if (f == NULL) {
        return -1;
    }
    char line[PATH_SIZE];
    char v2_path[PATH_SIZE] = "";
    int found = -1;
    while (found < 0 && fgets(line, sizeof line, f) != NULL) {
        line[strcspn(line, "\n")] = '\0';
        char *ctrl = strchr(line, ':');
        char *path = ctrl != NULL ? strchr(ctrl + 1, ':') : NULL;
        if (path == NULL) {
            continue;
        }
        *path++ = '\0';
        ctrl++;
        if (ctrl[0] == '\0') {
            snprintf(v2_path, sizeof v2_path, "%s", path);
            continue;
        }
        char *save = NULL;
        for (char *t = strtok_r(ctrl, ",", &save); t != NULL;
             t = strtok_r(NULL, ",", &save)) {
            if (strcmp(t, "cpu") != 0) {
                continue;
            }
            static const char *const mounts[] = {"/sys/fs/cgroup/cpu",
                                                 "/sys/fs/cgroup/cpu,cpuacct"};
            for (size_t m = 0; m < 2 && found < 0; m++) {
                snprintf(out, size, "%s%s/cpu.stat", mounts[m], path);
                found = access(out, R_OK) == 0 ? 0 : -1;
            }
        }
    }
    fclose(f);
    static const char *const unified[] = {"/sys/fs/cgroup",
                                          "/sys/fs/cgroup/unified"};
    for (size_t m = 0; found < 0 && v2_path[0] && m < 2; m++) {
        snprintf(out, size, "%s%s/cpu.stat", unified[m], v2_path);
        found = access(out, R_OK) == 0 ? 0 : -1;
    }
    return found;
}

/* Reads throttling from cpu.stat (v1: throttled_time in ns; v2:
 * throttled_usec); leaves the fields negative when there is none. */
static void read_throttling(const struct options *o, struct counters *c)
{
    char path[PATH_SIZE];
    c->throttled_seconds = c->throttled_periods = -1;
    if (o->cgroup_dir != NULL) {
        snprintf(path, sizeof path, "%s/cpu.stat", o->cgroup_dir);
    } else if (find_cpu_stat(path, sizeof path) != 0) {
        return;
    }
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return;
    }
    char key[64];
    unsigned long long value;
    for (int i = 0; i < 64 && fscanf(f, "%63s %llu", key, &value) == 2; i++) {
        if (strcmp(key, "throttled_time") == 0) {
            c->throttled_seconds = (double)value / NS_PER_S;
        } else if (strcmp(key, "throttled_usec") == 0) {
            c->throttled_seconds = (double)value / 1e6;
        } else if (strcmp(key, "nr_throttled") == 0) {
            c->throttled_periods = (double)value;
        }
    }
    fclose(f);
}

static void read_counters(const struct options *o, struct counters *c)
{
    struct rusage ru;
    c->cpu_seconds = -1;
    if (getrusage(RUSAGE_SELF, &ru) == 0) {
        c->cpu_seconds = (double)ru.ru_utime.tv_sec +
                         ru.ru_utime.tv_usec / 1e6 +
                         (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
    }
    read_throttling(o, c);
}

/* ---- HTTP ---------------------------------------------------------------- */

static int send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR) {
            continue;
        }
        if (k <= 0) {
            return -1;
        }
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* POSTs @body to @path; returns the HTTP status, or -1 when the exchange
 * failed (refused, timed out, closed early). Every socket call is bounded
 * by IO_TIMEOUT_S (SO_SNDTIMEO bounds connect on Linux too). */
static int http_post(const struct options *o,
                     const char *path,
                     const struct buf *body)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -1;
    }
    struct timeval tv = {.tv_sec = IO_TIMEOUT_S};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    int status = -1;
    char head[256];
    int hn = snprintf(head, sizeof head,
                      "POST %s HTTP/1.1\r\nHost: %s\r\n"
                      "Content-Type: application/json\r\n"
                      "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                      path, o->host_port, body->len);
    if (connect(fd, (const struct sockaddr *)&o->peer, sizeof o->peer) == 0 &&
        send_all(fd, head, (size_t)hn) == 0 &&
        send_all(fd, body->s, body->len) == 0) {
        char resp[64];
        size_t got = 0;
        /* The status line is all we need: "HTTP/1.1 200". */
        for (int i = 0; i < 16 && got < 12; i++) {
            ssize_t k = recv(fd, resp + got, sizeof resp - 1 - got, 0);
            if (k < 0 && errno == EINTR) {
                continue;
            }
            if (k <= 0) {
                break;
            }
            got += (size_t)k;
        }
        resp[got] = '\0';
        if (got >= 12 && strncmp(resp, "HTTP/1.", 7) == 0) {
            status = atoi(resp + 9);
        }
    }
    close(fd);
    return status;
}

static void post(const struct options *o, const char *path, struct buf *body)
{
    if (body->failed) {
        fprintf(stderr, "cpu_service: out of memory building %s\n", path);
        return;
    }
    int status = http_post(o, path, body);
    if (status < 200 || status > 299) {
        fprintf(stderr, "cpu_service: POST %s: %s %d\n", path,
                status < 0 ? "failed" : "status", status);
    }
}

/* ---- The reporter ---------------------------------------------------------
 */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank p99 of the latencies of @v, in ms; 0 when @n is 0. */
static double p99_ms(const struct request *v, size_t n)
{
    if (n == 0) {
        return 0;
    }
    uint64_t *lat = malloc(n * sizeof *lat);
    if (lat == NULL) {
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        lat[i] = v[i].end_ns - v[i].start_ns;
    }
    qsort(lat, n, sizeof *lat, cmp_u64);
    size_t rank = (n * 99 + 99) / 100; /* ceil(0.99 n), 1-based */
    double ms = (double)lat[rank - 1] / 1e6;
    free(lat);
    return ms;
}

struct reporter
{
    const struct options *o;
    struct pending *q;
    FILE *report;
    uint64_t start_unix_ns; /* start of the cumulative sums */
};

/* One report: the latency line, the spans, the counters. */
static void report_once(struct reporter *r)
{
    struct pending *q = r->q;
    pthread_mutex_lock(&q->lock);
    struct request *v = q->v;
    size_t n = q->n;
    q->v = NULL;
    q->n = 0;
    pthread_mutex_unlock(&q->lock);

    uint64_t now = clock_ns(CLOCK_REALTIME);
    fprintf(r->report, "%" PRIu64 " %.3f %zu\n", now / NS_PER_S, p99_ms(v, n),
            n);
    fflush(r->report);

    struct buf body = {0};
    if (n > 0 && r->o->send) {
        traces_json(&body, r->o->name, v, n);
        post(r->o, "/v1/traces", &body);
    }
    free(v);
    struct counters c;
    read_counters(r->o, &c);
    body.len = 0;
    metrics_json(&body, r->o->name, &c, r->start_unix_ns, now);
    if (r->o->send) {
        post(r->o, "/v1/metrics", &body);
    }
    free(body.s);
}

static void *reporter_main(void *arg)
{
    struct reporter *r = arg;
    struct pending *q = r->q;
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    for (;;) {
        next.tv_sec++;
        pthread_mutex_lock(&q->lock);
        int done = q->done;
        while (!done &&
               pthread_cond_timedwait(&q->wake, &q->lock, &next) != ETIMEDOUT) {
            done = q->done;
        }
        pthread_mutex_unlock(&q->lock);
        report_once(r); /* the last one sends what the loop left */
        if (done) {
            return NULL;
        }
    }
}

/* ---- The request loop ---------------------------------------------------- */

static void add_request(struct pending *q, struct request req)
{
    pthread_mutex_lock(&q->lock);
    if (q->n % 1024 == 0) {
        struct request *grown =
            q->n < MAX_PENDING ? realloc(q->v, (q->n + 1024) * sizeof *q->v)
                               : NULL;
        if (grown == NULL) {
            q->lost++;
            pthread_mutex_unlock(&q->lock);
            return;
        }
        q->v = grown;
    }
    q->v[q->n++] = req;
    pthread_mutex_unlock(&q->lock);
}

/* Serves requests from the fixed schedule until a signal or the duration. */
static void serve(const struct options *o, struct pending *q, double per_us)
{
    uint64_t period = NS_PER_S / o->rate;
    uint64_t iterations = (uint64_t)(per_us * o->work_us);
    uint64_t t0 = clock_ns(CLOCK_MONOTONIC);
    uint64_t unix_offset = clock_ns(CLOCK_REALTIME) - t0;
    uint64_t end = o->duration_s ? t0 + o->duration_s * NS_PER_S : UINT64_MAX;
    for (uint64_t i = 0; !atomic_load(&stop_requested); i++) {
        uint64_t due = t0 + i * period;
        if (due >= end) {
            break;
        }
        struct timespec ts = {.tv_sec = (time_t)(due / NS_PER_S),
                              .tv_nsec = (long)(due % NS_PER_S)};
        if (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) != 0) {
            i--; /* a signal: check the flag, then wait for the same slot */
            continue;
        }
        if (clock_ns(CLOCK_MONOTONIC) - due > MAX_LAG_NS) {
            pthread_mutex_lock(&q->lock);
            q->shed++;
            pthread_mutex_unlock(&q->lock);
            continue;
        }
        work_sink = spin(iterations);
        uint64_t done = clock_ns(CLOCK_MONOTONIC);
        add_request(q, (struct request){due + unix_offset, done + unix_offset});
    }
}

/* ---- Options and main ---------------------------------------------------- */

static void usage(void)
{
    fprintf(stderr,
            "Usage: cpu_service --name NAME --report FILE [--peer HOST:PORT]\n"
            "         [--rate N] [--work-us N] [--duration S] "
            "[--cgroup-dir DIR]\n"
            "A CPU-bound service: N requests/s (default 20) of --work-us\n"
            "(default 5000) CPU work each; OTLP JSON spans and CPU metrics\n"
            "to the peer every second (none without --peer), and\n"
            "\"<unix_s> <p99_ms> <count>\" lines to FILE. --duration 0\n"
            "(the default) runs until SIGTERM or SIGINT; --cgroup-dir is\n"
            "the cgroup whose cpu.stat to read (default: its own).\n");
}

static int parse_uint(const char *s, unsigned lo, unsigned hi, unsigned *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || s[0] == '-' || v < lo ||
        v > hi) {
        return -1;
    }
    *out = (unsigned)v;
    return 0;
}

static int parse_peer(const char *s, struct options *o)
{
    const char *colon = strrchr(s, ':');
    unsigned port;
    char host[INET_ADDRSTRLEN];
    size_t hl = colon != NULL ? (size_t)(colon - s) : 0;
    if (colon == NULL || hl == 0 || hl >= sizeof host ||
        parse_uint(colon + 1, 1, 65535, &port) != 0 ||
        strlen(s) >= sizeof o->host_port) {
        return -1;
    }
    memcpy(host, s, hl);
    host[hl] = '\0';
    o->peer.sin_family = AF_INET;
    o->peer.sin_port = htons((uint16_t)port);
    strcpy(o->host_port, s);
    return inet_pton(AF_INET, host, &o->peer.sin_addr) == 1 ? 0 : -1;
}

/* The name goes into JSON and cgroup paths unescaped: keep it plain. */
static int plain_name(const char *s)
{
    size_t n = strlen(s);
    return n > 0 && n < 128 &&
           strspn(s,
                  "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                  "0123456789._-") == n;
}

static int parse_options(int argc, char **argv, struct options *o)
{
    *o = (struct options){.rate = 20, .work_us = 5000};
    int have_peer = 0;
    for (int i = 1; i < argc; i += 2) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int bad = v == NULL;
        if (strcmp(a, "--help") == 0) {
            usage();
            exit(0);
        } else if (bad) {
            fprintf(stderr, "cpu_service: %s needs a value\n", a);
            return -1;
        } else if (strcmp(a, "--peer") == 0) {
            bad = parse_peer(v, o) != 0;
            have_peer = 1;
        } else if (strcmp(a, "--name") == 0) {
            o->name = v;
            bad = !plain_name(v);
        } else if (strcmp(a, "--report") == 0) {
            o->report = v;
        } else if (strcmp(a, "--cgroup-dir") == 0) {
            o->cgroup_dir = v;
        } else if (strcmp(a, "--rate") == 0) {
            bad = parse_uint(v, 1, 1000, &o->rate) != 0;
        } else if (strcmp(a, "--work-us") == 0) {
            bad = parse_uint(v, 1, 10000000, &o->work_us) != 0;
        } else if (strcmp(a, "--duration") == 0) {
            bad = parse_uint(v, 0, 86400 * 365, &o->duration_s) != 0;
        } else {
            fprintf(stderr, "cpu_service: unknown flag %s\n", a);
            return -1;
        }
        if (bad) {
            fprintf(stderr, "cpu_service: bad value for %s: %s\n", a, v);
            return -1;
        }
    }
    if (o->name == NULL || o->report == NULL) {
        fprintf(stderr, "cpu_service: --name and --report are required\n");
        return -1;
    }
    o->send = have_peer;
    return 0;
}

int main(int argc, char **argv)
{
    struct options o;
    if (parse_options(argc, argv, &o) != 0) {
        usage();
        return 2;
    }
    FILE *report = fopen(o.report, "a");
    if (report == NULL) {
        fprintf(stderr, "cpu_service: %s: %s\n", o.report, strerror(errno));
        return 1;
    }
    double per_us = calibrate();
    fprintf(stderr, "cpu_service: %.1f iterations/us; %u requests/s of %u us\n",
            per_us, o.rate, o.work_us);

    /* The reporter starts with SIGTERM blocked, so the signal interrupts
     * the request loop's sleep, never a socket call. */
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    pthread_sigmask(SIG_BLOCK, &block, &old);

    struct pending q = {.lock = PTHREAD_MUTEX_INITIALIZER};
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&q.wake, &ca);
    pthread_condattr_destroy(&ca);
    struct reporter r = {&o, &q, report, clock_ns(CLOCK_REALTIME)};
    pthread_t thread;
    int rc = pthread_create(&thread, NULL, reporter_main, &r);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        fprintf(stderr, "cpu_service: pthread_create: %s\n", strerror(rc));
        return 1;
    }

    serve(&o, &q, per_us);

    pthread_mutex_lock(&q.lock);
    q.done = 1;
    pthread_cond_signal(&q.wake);
    pthread_mutex_unlock(&q.lock);
    pthread_join(thread, NULL);
    fprintf(stderr,
            "cpu_service: stopped; %" PRIu64 " requests shed, %" PRIu64
            " lost\n",
            q.shed, q.lost);
    pthread_cond_destroy(&q.wake);
    fclose(report);
    return 0;
}
