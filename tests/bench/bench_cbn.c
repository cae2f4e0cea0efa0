/* Benchmarks of the window pipeline (not tests: they assert nothing about
 * time). Prints medians over several runs and ratios against a reference
 * measured in the same run:
 *
 *   aggregate  spans/s through cbn_agg_add_spans for a 30-service
 *              application (batches of 512 spans), against a plain pass
 *              that only hashes the same span ids;
 *   replay     1,000 windows of that application from the window log
 *              (open, read, decode, CBN and normal-value updates), against
 *              reading the same segment files with read(2).
 *
 * Usage: bench_cbn [runs]   (default 5) */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/err.h"
#include "base/rng.h"
#include "bench_util.h"
#include "cbn/cbn.h"

#define N_SERVICES 30
#define FANOUT     5
#define S          1000000000ull
#define T0         (1795421730ull * S)

static char names[N_SERVICES][32];

/* Fills @s with one request: a frontend SERVER span, FANOUT CLIENT spans to
 * services of tier 1..29 and their SERVER spans. Returns the span count. */
static size_t request(struct cbn_span *s,
                      struct sm_rng *rng,
                      uint64_t t,
                      uint64_t trace)
{
    size_t n = 0;
    memset(s, 0, sizeof *s * (1 + 2 * FANOUT));
    struct cbn_span *root = &s[n++];
    memcpy(root->trace_id, &trace, 8);
    root->span_id[0] = 1;
    root->kind = CBN_SPAN_SERVER;
    root->service = names[0];
    root->instance = "i";
    root->operation = "/";
    root->peer = "";
    root->start_ns = t;
    root->end_ns = t + 20000000 + sm_rng_below(rng, 20000000);
    for (int k = 0; k < FANOUT; k++) {
        int callee = 1 + (int)sm_rng_below(rng, N_SERVICES - 1);
        uint64_t d = 1000000 + sm_rng_below(rng, 15000000);
        struct cbn_span *c = &s[n++], *v = &s[n++];
        *c = *root;
        c->kind = CBN_SPAN_CLIENT;
        c->span_id[0] = (uint8_t)(2 + 2 * k);
        c->parent_id[0] = 1;
        c->start_ns = t + 1000;
        c->end_ns = c->start_ns + d + 300000;
        *v = *c;
        v->kind = CBN_SPAN_SERVER;
        v->service = names[callee];
        v->span_id[0] = (uint8_t)(3 + 2 * k);
        v->parent_id[0] = (uint8_t)(2 + 2 * k);
        v->start_ns = c->start_ns + 100000;
        v->end_ns = v->start_ns + d;
    }
    return n;
}

static void discard(void *arg, struct cbn_window *w)
{
    (void)arg;
    cbn_window_free(w);
}

static struct cbn_log *bench_log;

static void store(void *arg, struct cbn_window *w)
{
    (void)arg;
    uint8_t *buf;
    size_t len;
    char err[SM_ERRMSG_SIZE];
    if (cbn_window_encode(w, &buf, &len) != SM_OK ||
        cbn_log_append(bench_log, w->end_ns, buf, len, err) != SM_OK) {
        fprintf(stderr, "store failed\n");
        exit(1);
    }
    sm_free(buf);
    cbn_window_free(w);
}

static struct cbn_agg *new_agg(uint64_t window_ns)
{
    struct cbn_agg_config c = {.window_ns = window_ns,
                               .lateness_ns = window_ns / 10,
                               .qos_service = names[0],
                               .qos_target_ms = 35,
                               .hash_seed = 42};
    struct cbn_agg *agg;
    if (cbn_agg_new(&c, &agg) != SM_OK) {
        exit(1);
    }
    return agg;
}

/* Spans/s through the aggregator; *@ref_rate gets the rate of a loop that
 * only hashes the span ids (memory-bound floor). */
static double bench_aggregate(size_t n_requests, double *ref_rate)
{
    struct sm_rng rng;
    sm_rng_seed(&rng, 7);
    size_t per = 1 + 2 * FANOUT, total = n_requests * per;
    struct cbn_span *spans = malloc(total * sizeof *spans);
    for (size_t r = 0; r < n_requests; r++) {
        request(&spans[r * per], &rng, T0 + r * 100000, r + 1);
    }
    double t0 = bench_now_s();
    uint64_t h = 0;
    for (size_t i = 0; i < total; i++) {
        uint64_t a, b;
        memcpy(&a, spans[i].trace_id, 8);
        memcpy(&b, spans[i].span_id, 8);
        h = (h ^ a ^ b) * 0x9e3779b97f4a7c15u;
    }
    double t1 = bench_now_s();
    if (h == 42) {
        printf("#");
    }
    *ref_rate = (double)total / (t1 - t0);

    struct cbn_agg *agg = new_agg(30 * S);
    t0 = bench_now_s();
    for (size_t at = 0; at < total; at += 512) {
        size_t n = total - at < 512 ? total - at : 512;
        if (cbn_agg_add_spans(agg, spans + at, n) != SM_OK) {
            exit(1);
        }
        cbn_agg_close_ready(agg, discard, NULL);
    }
    cbn_agg_flush(agg, discard, NULL);
    t1 = bench_now_s();
    cbn_agg_free(agg);
    free(spans);
    return (double)total / (t1 - t0);
}

/* Writes 1,000 windows of the application into a log under @dir. */
static void make_log(const char *dir)
{
    struct cbn_log_config lc = {.dir = dir, .sync = CBN_LOG_SYNC_NONE};
    char err[SM_ERRMSG_SIZE];
    if (cbn_log_open(&lc, &bench_log, err) != SM_OK) {
        fprintf(stderr, "%s\n", err);
        exit(1);
    }
    struct cbn_agg *agg = new_agg(S); /* 1 s windows keep the set-up fast */
    struct sm_rng rng;
    sm_rng_seed(&rng, 11);
    struct cbn_span s[1 + 2 * FANOUT];
    static const char *const metrics[] = {
        "container_cpu_usage_seconds_total",
        "container_memory_working_set_bytes",
        "container_network_receive_bytes_total",
        "container_network_transmit_bytes_total",
        "container_fs_reads_bytes_total",
        "container_fs_writes_bytes_total"};
    uint64_t trace = 1;
    for (int w = 0; w < 1000; w++) {
        for (int r = 0; r < 60; r++) {
            uint64_t t = T0 + (uint64_t)w * S + (uint64_t)r * (S / 60);
            size_t n = request(s, &rng, t, trace++);
            cbn_agg_add_spans(agg, s, n);
        }
        struct cbn_metric_point p[N_SERVICES * 6 * 2];
        size_t np = 0;
        for (int k = 0; k < N_SERVICES; k++) {
            for (int m = 0; m < 6; m++) {
                for (int rep = 0; rep < 2; rep++) {
                    p[np++] = (struct cbn_metric_point){
                        names[k],
                        rep ? "r2" : "r1",
                        metrics[m],
                        "",
                        "",
                        T0 + (uint64_t)w * S + S / 2,
                        (double)(w * 100 + k + m) * (1 + rep),
                        m != 1};
                }
            }
        }
        cbn_agg_add_metrics(agg, p, np);
        cbn_agg_close_ready(agg, store, NULL);
    }
    cbn_agg_flush(agg, store, NULL);
    cbn_agg_free(agg);
    struct cbn_log_stats st;
    cbn_log_stats(bench_log, &st);
    printf("# window log: %llu windows, %llu bytes, %.1f KiB per window\n",
           (unsigned long long)st.records, (unsigned long long)st.bytes,
           (double)st.bytes / (double)st.records / 1024);
    cbn_log_close(bench_log);
}

struct replay
{
    struct cbn_graph *graph;
    struct cbn_normals *normals;
    size_t windows;
};

static int replay_one(void *arg, uint64_t t, const uint8_t *p, size_t len)
{
    (void)t;
    struct replay *r = arg;
    struct cbn_window *w;
    int changed;
    if (cbn_window_decode(p, len, &w) != SM_OK ||
        cbn_graph_observe(r->graph, w, &changed) != SM_OK ||
        cbn_normals_observe(r->normals, w) != SM_OK) {
        return 1;
    }
    cbn_window_free(w);
    r->windows++;
    return 0;
}

static double bench_replay(const char *dir, double *ref_s)
{
    /* Reference: read(2) every segment file once. */
    double t0 = bench_now_s();
    DIR *d = opendir(dir);
    struct dirent *e;
    static char buf[1 << 20];
    while ((e = readdir(d)) != NULL) {
        if (strstr(e->d_name, ".log") == NULL) {
            continue;
        }
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        int fd = open(path, O_RDONLY);
        while (read(fd, buf, sizeof buf) > 0) {
        }
        close(fd);
    }
    closedir(d);
    *ref_s = bench_now_s() - t0;

    t0 = bench_now_s();
    struct cbn_log_config lc = {.dir = dir, .sync = CBN_LOG_SYNC_NONE};
    struct cbn_log *log;
    char err[SM_ERRMSG_SIZE];
    struct replay r = {NULL, NULL, 0};
    if (cbn_log_open(&lc, &log, err) != SM_OK ||
        cbn_graph_new(NULL, &r.graph) != SM_OK ||
        cbn_normals_new(&r.normals) != SM_OK ||
        cbn_log_replay(log, replay_one, &r) != SM_OK || r.windows < 1000) {
        fprintf(stderr, "replay failed (%zu windows)\n", r.windows);
        exit(1);
    }
    double t1 = bench_now_s();
    cbn_graph_free(r.graph);
    cbn_normals_free(r.normals);
    cbn_log_close(log);
    return t1 - t0;
}

/* Heap held by one open window of the 30-service application after
 * @n_requests paired requests (with metrics), per service. */
static void bench_memory(size_t n_requests)
{
    count_heap_install(1);
    struct cbn_agg *agg = new_agg(3600 * S);
    size_t base = count_heap_live();
    struct sm_rng rng;
    sm_rng_seed(&rng, 5);
    struct cbn_span s[1 + 2 * FANOUT];
    for (size_t r = 0; r < n_requests; r++) {
        size_t n = request(s, &rng, T0 + r * 1000000, r + 1);
        cbn_agg_add_spans(agg, s, n);
    }
    for (int k = 0; k < N_SERVICES; k++) {
        for (int m = 0; m < 6; m++) {
            struct cbn_metric_point p = {
                names[k], "r1", "m", "", "", T0 + (uint64_t)m, (double)m, 0};
            char name[16];
            snprintf(name, sizeof name, "metric_%d", m);
            p.name = name;
            cbn_agg_add_metrics(agg, &p, 1);
        }
    }
    struct cbn_agg_stats st;
    cbn_agg_stats(agg, &st);
    size_t held = count_heap_live() - base;
    printf(
        "memory: one open window, %zu requests (%zu spans) over %d "
        "services, %llu spans pending: %.1f KiB, %.1f KiB per service\n",
        n_requests, n_requests * (1 + 2 * FANOUT), N_SERVICES,
        (unsigned long long)st.pending_spans, (double)held / 1024,
        (double)held / 1024 / N_SERVICES);
    cbn_agg_free(agg);
    count_heap_install(0);
}

int main(int argc, char **argv)
{
    int runs = argc > 1 ? atoi(argv[1]) : 5;
    if (runs < 1 || runs > 100) {
        runs = 5;
    }
    for (int i = 0; i < N_SERVICES; i++) {
        snprintf(names[i], sizeof names[i], i ? "svc-%02d" : "frontend", i);
    }
    double agg[100], ref[100];
    for (int i = 0; i < runs; i++) {
        agg[i] = bench_aggregate(20000, &ref[i]);
    }
    double agg_m = bench_median(agg, runs), ref_m = bench_median(ref, runs);
    printf(
        "aggregate: %.0f spans/s (median of %d; reference id-hash pass "
        "%.0f spans/s, ratio %.3f)\n",
        agg_m, runs, ref_m, agg_m / ref_m);

    bench_memory(20000);

    char dir[] = "/tmp/sagemesh-bench-XXXXXX";
    if (mkdtemp(dir) == NULL) {
        return 1;
    }
    char logdir[600];
    snprintf(logdir, sizeof logdir, "%s/windows", dir);
    make_log(logdir);
    double rep[100], rref[100];
    for (int i = 0; i < runs; i++) {
        rep[i] = bench_replay(logdir, &rref[i]);
    }
    double rep_m = bench_median(rep, runs), rref_m = bench_median(rref, runs);
    printf(
        "replay: 1000 windows x %d services in %.3f s (median of %d; "
        "reference read(2) of the files %.4f s, ratio %.1f)\n",
        N_SERVICES, rep_m, runs, rref_m, rep_m / rref_m);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : 1;
}
