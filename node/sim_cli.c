/* `sagemesh sim`: runs the simulator and writes or sends what it produces.
 *
 * Telemetry is grouped per simulated host, as each host's OpenTelemetry
 * collector would send it to the peer on that host: spans in
 * ExportTraceServiceRequest bodies of at most --batch spans, metrics in
 * ExportMetricsServiceRequest bodies holding a minute of scrapes (the SDKs'
 * default export interval). Before a host's metrics body goes out, its
 * pending spans go first, so bodies leave in event-time order. Bodies are
 * numbered with one sequence across hosts, so sorting the files of a
 * directory by name replays them in the order they were made.
 *
 * The records the simulator hands over point at strings the topology and
 * the simulator own for their whole life, so they can be kept until the
 * body they belong to is written. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "node/client.h"
#include "node/node.h"
#include "node/sim.h"
#include "node/textbuf.h"

#define NS_PER_S         1000000000ull
#define METRICS_EVERY_NS (60 * NS_PER_S)
#define MAX_PEERS        64
#define RETRIES          50

static void put_attr(struct node_text *b,
                     int first,
                     const char *k,
                     const char *v)
{
    node_text_put(b, first ? "{\"key\":" : ",{\"key\":", first ? 7 : 8);
    node_text_json_str(b, k);
    node_text_put(b, ",\"value\":{\"stringValue\":", 24);
    node_text_json_str(b, v);
    node_text_put(b, "}}", 2);
}

/* ---- OTLP metrics JSON -------------------------------------------------- */

static int same(const char *a, const char *b)
{
    return a == b || strcmp(a, b) == 0;
}

int node_sim_otlp_metrics(const struct cbn_metric_point *p,
                          size_t n,
                          uint64_t start_ns,
                          char **out,
                          size_t *len)
{
    struct node_text b = {0};
    char *done = calloc(n ? n : 1, 1);
    if (done == NULL) {
        return SM_ENOMEM;
    }
    node_text_put(&b, "{\"resourceMetrics\":[", 20);
    int first_rm = 1;
    for (size_t i = 0; i < n; i++) {
        if (done[i]) {
            continue;
        }
        /* One ResourceMetrics per (service, instance). */
        node_text_put(&b,
                      first_rm ? "{\"resource\":{\"attributes\":["
                               : ",{\"resource\":{\"attributes\":[",
                      first_rm ? 27 : 28);
        first_rm = 0;
        put_attr(&b, 1, "service.name", p[i].service);
        if (p[i].instance[0] != '\0') {
            put_attr(&b, 0, "service.instance.id", p[i].instance);
        }
        node_text_put(
            &b,
            "]},\"scopeMetrics\":[{\"scope\":{\"name\":\"sagemesh-sim\"},"
            "\"metrics\":[",
            63);
        int first_m = 1;
        for (size_t j = i; j < n; j++) {
            if (done[j] || !same(p[j].service, p[i].service) ||
                !same(p[j].instance, p[i].instance)) {
                continue;
            }
            /* One Metric per name, with every data point of it. */
            const struct cbn_metric_point *m = &p[j];
            node_text_put(
                &b, first_m ? "{\"name\":" : ",{\"name\":", first_m ? 8 : 9);
            first_m = 0;
            node_text_json_str(&b, m->name);
            if (m->cumulative) {
                node_text_put(&b,
                              ",\"sum\":{\"aggregationTemporality\":2,"
                              "\"isMonotonic\":true,\"dataPoints\":[",
                              68);
            } else {
                node_text_put(&b, ",\"gauge\":{\"dataPoints\":[", 24);
            }
            int first_dp = 1;
            for (size_t k = j; k < n; k++) {
                const struct cbn_metric_point *d = &p[k];
                if (done[k] || !same(d->service, m->service) ||
                    !same(d->instance, m->instance) ||
                    !same(d->name, m->name)) {
                    continue;
                }
                done[k] = 1;
                node_text_printf(&b, "%s{", first_dp ? "" : ",");
                first_dp = 0;
                if (d->peer[0] != '\0') {
                    node_text_put(&b, "\"attributes\":[", 14);
                    put_attr(&b, 1, "peer.service", d->peer);
                    node_text_put(&b, "],", 2);
                }
                if (d->cumulative) {
                    node_text_printf(
                        &b, "\"startTimeUnixNano\":\"%" PRIu64 "\",", start_ns);
                }
                node_text_printf(
                    &b, "\"timeUnixNano\":\"%" PRIu64 "\",\"asDouble\":%.17g}",
                    d->time_ns, d->value);
            }
            node_text_put(&b, "]}}", 3);
        }
        node_text_put(&b, "]}]}", 4);
    }
    node_text_put(&b, "]}", 2);
    free(done);
    return node_text_take(&b, out, len);
}

/* ---- Where bodies go ---------------------------------------------------- */

struct host_out
{
    struct cbn_span *spans;
    size_t n_spans, cap_spans;
    struct cbn_metric_point *points;
    size_t n_points, cap_points;
    uint64_t bodies, spans_sent, points_sent;
};

struct run
{
    struct node_sim *sim;
    const char *dir;
    const char *peers[MAX_PEERS];
    size_t n_peers;
    double timeout;
    size_t batch;
    uint64_t start_ns;
    uint64_t next_metrics_ns;
    struct host_out *hosts;
    size_t n_hosts;
    uint64_t seq;
    FILE *err;
    int failed;
    /* Ground-truth QoS windows. */
    struct qos_window
    {
        uint64_t start, end;
        double ms;
        uint64_t requests;
    } * qos;
    size_t n_qos, cap_qos;
};

static int write_file(struct run *r,
                      const char *path,
                      const char *body,
                      size_t len)
{
    FILE *f = fopen(path, "wb");
    if (f == NULL) {
        fprintf(r->err, "sagemesh sim: cannot write %s: %s\n", path,
                strerror(errno));
        return -1;
    }
    size_t w = fwrite(body, 1, len, f);
    if (fclose(f) != 0 || w != len) {
        fprintf(r->err, "sagemesh sim: cannot write %s: %s\n", path,
                strerror(errno));
        return -1;
    }
    return 0;
}

static int post(struct run *r,
                size_t host,
                const char *path,
                const char *body,
                size_t len)
{
    const char *peer = r->peers[host % r->n_peers];
    for (int attempt = 0; attempt < RETRIES; attempt++) {
        struct node_client_response resp = {0, NULL, 0};
        char msg[SM_ERRMSG_SIZE] = "";
        int rv = node_client_request(peer, "POST", path, "application/json",
                                     body, len, r->timeout, &resp, msg);
        if (rv != SM_OK) {
            fprintf(r->err, "sagemesh sim: %s%s: %s\n", peer, path,
                    msg[0] ? msg : sm_strerror(rv));
            return -1;
        }
        int status = resp.status;
        if (status == 200) {
            free(resp.body);
            return 0;
        }
        if (status != 429 && status != 503) {
            fprintf(r->err, "sagemesh sim: %s%s answered %d: %s\n", peer, path,
                    status, resp.body ? resp.body : "");
            free(resp.body);
            return -1;
        }
        /* Back-pressure: wait a little and send the same body again. */
        free(resp.body);
        struct timespec ts = {0, 200 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    fprintf(r->err, "sagemesh sim: %s%s stayed busy; giving up\n", peer, path);
    return -1;
}

static int emit(struct run *r,
                size_t host,
                const char *kind,
                char *body,
                size_t len)
{
    int rv = 0;
    r->seq++;
    if (r->dir != NULL) {
        char path[4096];
        snprintf(path, sizeof path, "%s/host-%zu/%08" PRIu64 "-%s.json", r->dir,
                 host, r->seq, kind);
        rv = write_file(r, path, body, len);
    }
    if (rv == 0 && r->n_peers > 0) {
        rv = post(r, host,
                  strcmp(kind, "traces") == 0 ? "/v1/traces" : "/v1/metrics",
                  body, len);
    }
    free(body);
    r->hosts[host].bodies++;
    return rv;
}

static int flush_spans(struct run *r, size_t host)
{
    struct host_out *h = &r->hosts[host];
    if (h->n_spans == 0) {
        return 0;
    }
    char *body;
    size_t len;
    if (node_otlp_write(h->spans, h->n_spans, &body, &len) != SM_OK) {
        fprintf(r->err, "sagemesh sim: out of memory\n");
        return -1;
    }
    h->spans_sent += h->n_spans;
    h->n_spans = 0;
    return emit(r, host, "traces", body, len);
}

static int flush_points(struct run *r, size_t host)
{
    struct host_out *h = &r->hosts[host];
    if (flush_spans(r, host) != 0) {
        return -1;
    }
    if (h->n_points == 0) {
        return 0;
    }
    char *body;
    size_t len;
    if (node_sim_otlp_metrics(h->points, h->n_points, r->start_ns, &body,
                              &len) != SM_OK) {
        fprintf(r->err, "sagemesh sim: out of memory\n");
        return -1;
    }
    h->points_sent += h->n_points;
    h->n_points = 0;
    return emit(r, host, "metrics", body, len);
}

static int grow(void **v, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap) {
        return 0;
    }
    size_t c = *cap ? *cap : 256;
    while (c < need) {
        c *= 2;
    }
    void *p = realloc(*v, c * size);
    if (p == NULL) {
        return -1;
    }
    *v = p;
    *cap = c;
    return 0;
}

static int on_spans(void *arg, const struct cbn_span *spans, size_t n)
{
    struct run *r = arg;
    for (size_t i = 0; i < n; i++) {
        int host = node_sim_instance_host(r->sim, spans[i].instance);
        struct host_out *h = &r->hosts[host < 0 ? 0 : host];
        if (grow((void **)&h->spans, &h->cap_spans, h->n_spans + 1,
                 sizeof *h->spans) != 0) {
            fprintf(r->err, "sagemesh sim: out of memory\n");
            return -1;
        }
        h->spans[h->n_spans++] = spans[i];
        if (h->n_spans >= r->batch &&
            flush_spans(r, (size_t)(host < 0 ? 0 : host)) != 0) {
            return -1;
        }
    }
    return 0;
}

static int on_points(void *arg, const struct cbn_metric_point *pts, size_t n)
{
    struct run *r = arg;
    for (size_t i = 0; i < n; i++) {
        int host = node_sim_instance_host(r->sim, pts[i].instance);
        struct host_out *h = &r->hosts[host < 0 ? 0 : host];
        if (grow((void **)&h->points, &h->cap_points, h->n_points + 1,
                 sizeof *h->points) != 0) {
            fprintf(r->err, "sagemesh sim: out of memory\n");
            return -1;
        }
        h->points[h->n_points++] = pts[i];
    }
    if (n > 0 && pts[0].time_ns >= r->next_metrics_ns) {
        r->next_metrics_ns = pts[0].time_ns + METRICS_EVERY_NS;
        for (size_t h = 0; h < r->n_hosts; h++) {
            if (flush_points(r, h) != 0) {
                return -1;
            }
        }
    }
    return 0;
}

static void on_qos(void *arg, uint64_t t0, uint64_t t1, double ms, uint64_t n)
{
    struct run *r = arg;
    if (grow((void **)&r->qos, &r->cap_qos, r->n_qos + 1, sizeof *r->qos) !=
        0) {
        r->failed = 1;
        return;
    }
    r->qos[r->n_qos++] = (struct qos_window){t0, t1, ms, n};
}

/* ---- Labels ------------------------------------------------------------- */

static double fault_peak(const struct run *r, const struct node_sim_fault *f)
{
    double peak = NAN;
    for (size_t i = 0; i < r->n_qos; i++) {
        const struct qos_window *w = &r->qos[i];
        if (w->start < f->end_ns && w->end > f->start_ns && !isnan(w->ms) &&
            !(peak >= w->ms)) {
            peak = w->ms;
        }
    }
    return peak;
}

static void put_num(struct node_text *b, double v)
{
    if (isnan(v)) {
        node_text_put(b, "null", 4);
    } else {
        node_text_printf(b, "%.6g", v);
    }
}

static int write_labels(struct run *r,
                        const struct node_sim_topology *topo,
                        uint64_t seed,
                        double sampling,
                        double target)
{
    struct node_text b = {0};
    node_text_printf(&b, "{\"topology\":");
    node_text_json_str(&b, node_sim_topology_name(topo));
    node_text_printf(
        &b,
        ",\"seed\":%" PRIu64 ",\"sampling\":%.6g,\"start_unix_nano\":\"%" PRIu64
        "\",\"end_unix_nano\":\"%" PRIu64 "\",\"frontend\":",
        seed, sampling, node_sim_start(r->sim), node_sim_end(r->sim));
    node_text_json_str(&b, node_sim_topology_frontend(topo));
    node_text_printf(&b, ",\"qos_percentile\":99,\"qos_target_ms\":");
    put_num(&b, target > 0 ? target : NAN);
    node_text_put(&b, ",\"hosts\":[", 10);
    for (size_t h = 0; h < r->n_hosts; h++) {
        node_text_printf(&b, "%s{\"host\":\"host-%zu\",\"peer\":", h ? "," : "",
                         h);
        if (r->n_peers > 0) {
            node_text_json_str(&b, r->peers[h % r->n_peers]);
        } else {
            node_text_put(&b, "null", 4);
        }
        node_text_put(&b, ",\"instances\":[", 14);
        const char *svc, *inst;
        int host, first = 1;
        for (size_t i = 0;
             (inst = node_sim_replica(r->sim, i, &svc, &host)) != NULL; i++) {
            if ((size_t)host == h) {
                node_text_put(&b, first ? "{\"service\":" : ",{\"service\":",
                              first ? 11 : 12);
                first = 0;
                node_text_json_str(&b, svc);
                node_text_put(&b, ",\"instance\":", 12);
                node_text_json_str(&b, inst);
                node_text_put(&b, "}", 1);
            }
        }
        node_text_put(&b, "]}", 2);
    }
    node_text_put(&b, "],\"faults\":[", 12);
    for (size_t i = 0; i < node_sim_fault_count(r->sim); i++) {
        const struct node_sim_fault *f = node_sim_fault(r->sim, i);
        node_text_printf(
            &b, "%s{\"group\":%u,\"kind\":\"%s\",\"service\":", i ? "," : "",
            f->group, node_sim_fault_kind_name(f->kind));
        if (f->service != NULL) {
            node_text_json_str(&b, f->service);
        } else {
            node_text_put(&b, "null", 4);
        }
        node_text_printf(&b, ",\"resource\":\"%s\",\"replica\":",
                         cbn_resource_name(f->resource));
        if (f->replica >= 0) {
            node_text_printf(&b, "%d", f->replica);
        } else {
            node_text_put(&b, "null", 4);
        }
        node_text_printf(&b,
                         ",\"magnitude\":%.6g,\"start_unix_nano\":\"%" PRIu64
                         "\",\"end_unix_nano\":\"%" PRIu64
                         "\",\"expect_violation\":%s,\"peak_p99_ms\":",
                         f->magnitude, f->start_ns, f->end_ns,
                         f->expect_violation ? "true" : "false");
        put_num(&b, fault_peak(r, f));
        node_text_put(&b, "}", 1);
    }
    node_text_put(&b, "],\"qos_windows\":[", 17);
    for (size_t i = 0; i < r->n_qos; i++) {
        node_text_printf(&b,
                         "%s{\"start_unix_nano\":\"%" PRIu64
                         "\",\"end_unix_nano\":\"%" PRIu64
                         "\",\"requests\":%" PRIu64 ",\"p99_ms\":",
                         i ? "," : "", r->qos[i].start, r->qos[i].end,
                         r->qos[i].requests);
        put_num(&b, r->qos[i].ms);
        node_text_put(&b, "}", 1);
    }
    node_text_put(&b, "]}\n", 3);
    if (b.failed) {
        free(b.s);
        fprintf(r->err, "sagemesh sim: out of memory\n");
        return -1;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/labels.json", r->dir);
    int rv = write_file(r, path, b.s, b.len);
    free(b.s);
    return rv;
}

/* ---- Flags -------------------------------------------------------------- */

/* "2h", "90m", "30s", "1.5h" or plain seconds. */
static int parse_duration(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    double unit = 1;
    if (*end == 'h' || *end == 'm' || *end == 's') {
        unit = *end == 'h' ? 3600 : *end == 'm' ? 60 : 1;
        end++;
    }
    if (s[0] == '\0' || *end != '\0' || errno != 0 || !(v > 0) ||
        v * unit > 366.0 * 86400) {
        return -1;
    }
    *out = (uint64_t)(v * unit * 1e9 + 0.5);
    return 0;
}

static int parse_double(const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (s[0] == '\0' || *end != '\0' || errno != 0 || !(v >= lo && v <= hi)) {
        return -1;
    }
    *out = v;
    return 0;
}

static char *read_text(const char *path, size_t *len, FILE *err)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(err, "sagemesh sim: cannot read %s: %s\n", path,
                strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 20;
    char *buf = malloc(cap + 1);
    size_t n = buf ? fread(buf, 1, cap + 1, f) : 0;
    int bad = buf == NULL || ferror(f) || n > cap;
    fclose(f);
    if (bad) {
        fprintf(err, "sagemesh sim: cannot read %s (I/O error or over 1 MiB)\n",
                path);
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

static int make_dir(const char *path, FILE *err)
{
    if (mkdir(path, 0755) != 0 && errno != EEXIST) {
        fprintf(err, "sagemesh sim: cannot create %s: %s\n", path,
                strerror(errno));
        return -1;
    }
    return 0;
}

static int usage(FILE *err, const char *fmt, const char *arg)
{
    fprintf(err, "sagemesh sim: ");
    fprintf(err, fmt, arg);
    fprintf(err, "; see 'sagemesh sim --help'\n");
    return NODE_EXIT_USAGE;
}

int node__cmd_sim(int argc, char **argv, FILE *out, FILE *err)
{
    static const struct option options[] = {
        {"topology", required_argument, NULL, 'T'},
        {"duration", required_argument, NULL, 'd'},
        {"seed", required_argument, NULL, 's'},
        {"sampling", required_argument, NULL, 'S'},
        {"start", required_argument, NULL, 'b'},
        {"rate", required_argument, NULL, 'r'},
        {"scrape", required_argument, NULL, 'i'},
        {"faults", required_argument, NULL, 'f'},
        {"clean", required_argument, NULL, 'c'},
        {"cases-per-hour", required_argument, NULL, 'C'},
        {"out", required_argument, NULL, 'o'},
        {"peer", required_argument, NULL, 'p'},
        {"timeout", required_argument, NULL, 't'},
        {"batch", required_argument, NULL, 'B'},
        {"print-topology", no_argument, NULL, 'P'},
        {NULL, 0, NULL, 0},
    };
    const char *topo_name = "social", *faults = "auto";
    uint64_t duration = 3600 * NS_PER_S, clean = 0, scrape = 0;
    uint64_t seed = 1;
    double sampling = 0.01, start_s = 0, rate = 0, per_hour = 0, batch = 5000;
    int print_topology = 0, have_clean = 0;
    struct run r = {.timeout = 5, .err = err};
    optind = 0;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "", options, NULL)) != -1) {
        int bad = 0;
        switch (c) {
            case 'T':
                topo_name = optarg;
                break;
            case 'd':
                bad = parse_duration(optarg, &duration);
                break;
            case 's': {
                char *end;
                errno = 0;
                seed = strtoull(optarg, &end, 10);
                bad = optarg[0] == '\0' || optarg[0] == '-' || *end != '\0' ||
                      errno != 0;
                break;
            }
            case 'S':
                bad = parse_double(optarg, 1e-9, 1, &sampling);
                break;
            case 'b':
                bad = parse_double(optarg, 1, 1e10, &start_s);
                break;
            case 'r':
                bad = parse_double(optarg, 0.001, 1e6, &rate);
                break;
            case 'i':
                bad = parse_duration(optarg, &scrape);
                break;
            case 'f':
                faults = optarg;
                break;
            case 'c':
                bad = optarg[0] != '0' || optarg[1] != '\0'
                          ? parse_duration(optarg, &clean)
                          : 0;
                have_clean = 1;
                break;
            case 'C':
                bad = parse_double(optarg, 0.01, 1000, &per_hour);
                break;
            case 'o':
                r.dir = optarg;
                break;
            case 'p':
                if (r.n_peers == MAX_PEERS) {
                    return usage(err, "at most %s --peer flags", "64");
                }
                r.peers[r.n_peers++] = optarg;
                break;
            case 't':
                bad = parse_double(optarg, 0.001, 3600, &r.timeout);
                break;
            case 'B':
                bad = parse_double(optarg, 1, 1e6, &batch);
                break;
            case 'P':
                print_topology = 1;
                break;
            default:
                return usage(err, "unknown or incomplete option '%s'",
                             argv[optind - 1]);
        }
        if (bad) {
            return usage(err, "bad value '%s'", optarg);
        }
    }
    if (optind < argc) {
        return usage(err, "unexpected argument '%s'", argv[optind]);
    }
    if (!print_topology && r.dir == NULL && r.n_peers == 0) {
        return usage(err, "%s", "needs --out DIR or --peer HOST:PORT");
    }

    struct node_sim_topology *topo = NULL;
    char msg[SM_ERRMSG_SIZE] = "";
    int rv = node_sim_topology_builtin(topo_name, &topo);
    if (rv == SM_ENOTFOUND) {
        rv = node_sim_topology_load(topo_name, &topo, msg);
    }
    if (rv != SM_OK) {
        fprintf(err, "sagemesh sim: %s\n", msg[0] ? msg : sm_strerror(rv));
        return NODE_EXIT_FAILED;
    }
    if (print_topology) {
        rv = node_sim_topology_write(topo, out);
        node_sim_topology_free(topo);
        return rv == SM_OK ? NODE_EXIT_OK : NODE_EXIT_FAILED;
    }

    struct node_sim_config cfg;
    node_sim_config_init(&cfg, topo);
    cfg.seed = seed;
    cfg.duration_ns = duration;
    cfg.sampling = sampling;
    cfg.start_ns = (uint64_t)start_s * NS_PER_S;
    cfg.scrape_ns = scrape;
    cfg.load.rate = rate;
    r.start_ns = cfg.start_ns ? cfg.start_ns : 1700028000ull * NS_PER_S;
    r.batch = (size_t)batch;

    struct node_sim_fault *list = NULL;
    size_t n_faults = 0;
    int code = NODE_EXIT_OK;
    if (strcmp(faults, "auto") == 0) {
        struct node_sim_schedule sc = {
            .seed = seed,
            .start_ns = r.start_ns,
            .duration_ns = duration,
            .clean_ns = have_clean ? clean : duration / 4,
            .cases_per_hour = per_hour,
            .p_minor = -1,
            .p_multi = -1,
            .p_spike = -1,
            .load = cfg.load,
        };
        rv = node_sim_schedule_generate(topo, &sc, &list, &n_faults);
    } else if (strcmp(faults, "none") != 0) {
        size_t len;
        char *text = read_text(faults, &len, err);
        if (text == NULL) {
            node_sim_topology_free(topo);
            return NODE_EXIT_FAILED;
        }
        rv = node_sim_faults_parse(topo, r.start_ns, text, len, &list,
                                   &n_faults, msg);
        free(text);
        if (rv == SM_EMALFORMED) {
            fprintf(err, "sagemesh sim: %s: %s\n", faults, msg);
            node_sim_topology_free(topo);
            return NODE_EXIT_FAILED;
        }
    }
    if (rv != SM_OK) {
        fprintf(err, "sagemesh sim: %s\n", sm_strerror(rv));
        node_sim_topology_free(topo);
        return NODE_EXIT_FAILED;
    }
    cfg.faults = list;
    cfg.n_faults = n_faults;
    rv = node_sim_new(&cfg, &r.sim, msg);
    free(list);
    if (rv != SM_OK) {
        fprintf(err, "sagemesh sim: %s\n", msg[0] ? msg : sm_strerror(rv));
        node_sim_topology_free(topo);
        return NODE_EXIT_FAILED;
    }
    node_sim_on_qos(r.sim, 30 * NS_PER_S, 99, on_qos, &r);
    r.n_hosts = node_sim_topology_hosts(topo);
    r.hosts = calloc(r.n_hosts, sizeof *r.hosts);
    if (r.hosts == NULL) {
        code = NODE_EXIT_FAILED;
    }
    if (code == NODE_EXIT_OK && r.dir != NULL) {
        code = make_dir(r.dir, err) != 0 ? NODE_EXIT_FAILED : NODE_EXIT_OK;
        for (size_t h = 0; h < r.n_hosts && code == NODE_EXIT_OK; h++) {
            char path[4096];
            snprintf(path, sizeof path, "%s/host-%zu", r.dir, h);
            code = make_dir(path, err) != 0 ? NODE_EXIT_FAILED : NODE_EXIT_OK;
        }
        if (code == NODE_EXIT_OK) {
            char path[4096];
            snprintf(path, sizeof path, "%s/topology.txt", r.dir);
            FILE *f = fopen(path, "w");
            if (f == NULL || node_sim_topology_write(topo, f) != SM_OK) {
                fprintf(err, "sagemesh sim: cannot write %s\n", path);
                code = NODE_EXIT_FAILED;
            }
            if (f != NULL && fclose(f) != 0) {
                code = NODE_EXIT_FAILED;
            }
        }
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (code == NODE_EXIT_OK) {
        rv = node_sim_run(r.sim, UINT64_MAX, on_spans, on_points, &r);
        for (size_t h = 0; h < r.n_hosts && rv == SM_OK; h++) {
            rv = flush_points(&r, h);
        }
        if (rv != SM_OK || r.failed) {
            if (rv == SM_ENOMEM || r.failed) {
                fprintf(err, "sagemesh sim: out of memory\n");
            }
            code = NODE_EXIT_FAILED;
        }
    }
    if (code == NODE_EXIT_OK && r.dir != NULL &&
        write_labels(&r, topo, seed, sampling,
                     node_sim_topology_qos_target_ms(topo)) != 0) {
        code = NODE_EXIT_FAILED;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (code == NODE_EXIT_OK) {
        struct node_sim_stats st;
        node_sim_stats(r.sim, &st);
        uint64_t bodies = 0;
        for (size_t h = 0; h < r.n_hosts; h++) {
            bodies += r.hosts[h].bodies;
        }
        fprintf(out,
                "simulated %s for %.0f s (seed %" PRIu64 "): %" PRIu64
                " requests, %" PRIu64 " calls, %" PRIu64 " spans, %" PRIu64
                " points, %zu faults; %" PRIu64 " bodies %s%s in %.2f s\n",
                node_sim_topology_name(topo), (double)duration / 1e9, seed,
                st.requests, st.calls, st.spans, st.points,
                node_sim_fault_count(r.sim), bodies,
                r.dir != NULL ? "written to " : "sent to peers",
                r.dir != NULL ? r.dir : "",
                (double)(t1.tv_sec - t0.tv_sec) +
                    (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
    }
    for (size_t h = 0; h < r.n_hosts && r.hosts != NULL; h++) {
        free(r.hosts[h].spans);
        free(r.hosts[h].points);
    }
    free(r.hosts);
    free(r.qos);
    node_sim_free(r.sim);
    node_sim_topology_free(topo);
    return code;
}
