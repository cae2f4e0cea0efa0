/* Tests of the workload simulator: topologies, queueing, faults, output. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/alloc.h"
#include "cbn/cbn.h"
#include "check.h"
#include "node/client.h"
#include "node/ingest.h"
#include "node/node.h"
#include "node/sim.h"

#define NS_PER_S 1000000000ull
#define START_NS (1700028000ull * NS_PER_S)

/* A caller and its backend (a database with a disk and spare cores), on
 * two hosts. */
static const char ab_text[] =
    "hosts 2\n"
    "rate 100\n"
    "qos-target-ms 30\n"
    "service a replicas=1 threads=16 cores=1\n"
    "service b replicas=1 threads=8 cores=4 memory-mb=300 limit-mb=1000\n"
    "op a get compute-ms=3 sigma=0.3 req-bytes=500 resp-bytes=2000\n"
    "op b find compute-ms=8 sigma=0.3 req-bytes=300 resp-bytes=1500 "
    "disk-p=0.5 read-bytes=16384 write-bytes=1024\n"
    "call a get b:find\n"
    "entry a get 1\n";

static struct node_sim_topology *parse_ok(const char *text)
{
    struct node_sim_topology *t = NULL;
    char msg[SM_ERRMSG_SIZE] = "";
    int rv = node_sim_topology_parse(text, strlen(text), &t, msg);
    if (rv != SM_OK) {
        check__fail(__FILE__, __LINE__, 1, "parse: %s", msg);
    }
    return t;
}

/* ---- What a run produced, summarised ----------------------------------- */

#define MAX_SERIES 1024

struct series
{
    char key[160]; /* service|name|peer */
    double first, last, sum;
    uint64_t t_first, t_last, n;
};

struct lat
{
    char key[160]; /* service (SERVER) or caller>callee (CLIENT) */
    double sum_ms;
    uint64_t n;
};

struct summary
{
    struct series series[MAX_SERIES];
    size_t n_series;
    struct lat lat[MAX_SERIES];
    size_t n_lat;
    uint64_t spans, points, error_spans;
    uint64_t hash;
    struct cbn_agg *agg; /* when set, everything is fed to it too */
    int agg_rv;
};

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) {
        h = (h ^ b[i]) * 0x100000001b3ull;
    }
    return h;
}

static uint64_t fnv_str(uint64_t h, const char *s)
{
    return fnv(h, s, strlen(s) + 1);
}

static struct series *series_of(struct summary *s, const char *key)
{
    for (size_t i = 0; i < s->n_series; i++) {
        if (strcmp(s->series[i].key, key) == 0) {
            return &s->series[i];
        }
    }
    REQUIRE(s->n_series < MAX_SERIES);
    struct series *x = &s->series[s->n_series++];
    memset(x, 0, sizeof *x);
    snprintf(x->key, sizeof x->key, "%s", key);
    return x;
}

static struct lat *lat_of(struct summary *s, const char *key)
{
    for (size_t i = 0; i < s->n_lat; i++) {
        if (strcmp(s->lat[i].key, key) == 0) {
            return &s->lat[i];
        }
    }
    REQUIRE(s->n_lat < MAX_SERIES);
    struct lat *x = &s->lat[s->n_lat++];
    memset(x, 0, sizeof *x);
    snprintf(x->key, sizeof x->key, "%s", key);
    return x;
}

static int sum_spans(void *arg, const struct cbn_span *sp, size_t n)
{
    struct summary *s = arg;
    for (size_t i = 0; i < n; i++) {
        char key[160];
        if (sp[i].kind == CBN_SPAN_SERVER) {
            snprintf(key, sizeof key, "%s", sp[i].service);
        } else {
            snprintf(key, sizeof key, "%s>%s", sp[i].service, sp[i].peer);
        }
        struct lat *l = lat_of(s, key);
        l->sum_ms += (double)(sp[i].end_ns - sp[i].start_ns) / 1e6;
        l->n++;
        s->error_spans += sp[i].error != 0;
        s->hash = fnv(s->hash, sp[i].trace_id, 16);
        s->hash = fnv(s->hash, sp[i].span_id, 8);
        s->hash = fnv(s->hash, sp[i].parent_id, 8);
        s->hash = fnv(s->hash, &sp[i].start_ns, 8);
        s->hash = fnv(s->hash, &sp[i].end_ns, 8);
        s->hash = fnv_str(s->hash, sp[i].service);
        s->hash = fnv_str(s->hash, sp[i].instance);
        s->hash = fnv_str(s->hash, sp[i].operation);
        s->hash = fnv_str(s->hash, sp[i].peer);
    }
    s->spans += n;
    if (s->agg != NULL && s->agg_rv == SM_OK) {
        s->agg_rv = cbn_agg_add_spans(s->agg, sp, n);
    }
    return 0;
}

static int sum_points(void *arg, const struct cbn_metric_point *p, size_t n)
{
    struct summary *s = arg;
    for (size_t i = 0; i < n; i++) {
        char key[160];
        snprintf(key, sizeof key, "%s|%s|%s", p[i].service, p[i].name,
                 p[i].peer);
        struct series *x = series_of(s, key);
        if (x->n == 0) {
            x->first = p[i].value;
            x->t_first = p[i].time_ns;
        }
        x->last = p[i].value;
        x->t_last = p[i].time_ns;
        x->sum += p[i].value;
        x->n++;
        s->hash = fnv_str(s->hash, p[i].name);
        s->hash = fnv_str(s->hash, p[i].instance);
        s->hash = fnv_str(s->hash, p[i].labels);
        s->hash = fnv(s->hash, &p[i].time_ns, 8);
        s->hash = fnv(s->hash, &p[i].value, sizeof p[i].value);
    }
    s->points += n;
    if (s->agg != NULL && s->agg_rv == SM_OK) {
        s->agg_rv = cbn_agg_add_metrics(s->agg, p, n);
    }
    return 0;
}

/* The rate of a counter, or the mean of a gauge, of one service (summed
 * over its replicas for counters would need more; tests use 1 replica). */
static double rate_of(struct summary *s, const char *svc, const char *name)
{
    char key[160];
    snprintf(key, sizeof key, "%s|%s|", svc, name);
    struct series *x = series_of(s, key);
    if (x->n < 2) {
        return NAN;
    }
    return (x->last - x->first) / ((double)(x->t_last - x->t_first) / 1e9);
}

static double mean_of(struct summary *s,
                      const char *svc,
                      const char *name,
                      const char *peer)
{
    char key[160];
    snprintf(key, sizeof key, "%s|%s|%s", svc, name, peer);
    struct series *x = series_of(s, key);
    return x->n ? x->sum / (double)x->n : NAN;
}

static double latency(struct summary *s, const char *key)
{
    struct lat *l = lat_of(s, key);
    return l->n ? l->sum_ms / (double)l->n : NAN;
}

struct run_opts
{
    uint64_t seed;
    double sampling, rate, blocked_cpu;
    uint64_t duration_ns;
    const struct node_sim_fault *faults;
    size_t n_faults;
    int flat; /* no diurnal swing, no noise */
};

static void run(const struct node_sim_topology *t,
                const struct run_opts *o,
                struct summary *s,
                struct node_sim_stats *stats)
{
    struct node_sim_config c;
    node_sim_config_init(&c, t);
    c.seed = o->seed;
    c.sampling = o->sampling;
    c.duration_ns = o->duration_ns;
    c.load.rate = o->rate;
    c.blocked_cpu = o->blocked_cpu;
    c.faults = o->faults;
    c.n_faults = o->n_faults;
    if (o->flat) {
        c.load.diurnal_amplitude = 0;
        c.load.noise = 0;
    }
    struct node_sim *sim;
    char msg[SM_ERRMSG_SIZE] = "";
    int rv = node_sim_new(&c, &sim, msg);
    if (rv != SM_OK) {
        check__fail(__FILE__, __LINE__, 1, "node_sim_new: %s", msg);
    }
    s->hash = 0xcbf29ce484222325ull;
    rv = node_sim_run(sim, UINT64_MAX, sum_spans, sum_points, s);
    if (stats != NULL) {
        node_sim_stats(sim, stats);
    }
    node_sim_free(sim);
    REQUIRE_OK(rv);
}

/* ---- Topologies --------------------------------------------------------- */

static void test_builtins(void)
{
    static const struct
    {
        const char *name;
        size_t services;
        const char *frontend;
    } cases[] = {
        {"chain", 6, "frontend"},
        {"fanout", 6, "frontend"},
        {"social", 28, "nginx-web"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct node_sim_topology *t;
        REQUIRE_OK(node_sim_topology_builtin(cases[i].name, &t));
        CHECK_STR(node_sim_topology_name(t), cases[i].name);
        CHECK_EQ(node_sim_topology_services(t), cases[i].services);
        CHECK_STR(node_sim_topology_frontend(t), cases[i].frontend);
        CHECK(node_sim_topology_hosts(t) >= 3);
        CHECK(node_sim_topology_qos_target_ms(t) > 0);
        /* Written out, it parses back to the same text. */
        char *a = NULL, *b = NULL;
        size_t na = 0, nb = 0;
        FILE *f = open_memstream(&a, &na);
        REQUIRE(f != NULL);
        CHECK_OK(node_sim_topology_write(t, f));
        fclose(f);
        struct node_sim_topology *u = parse_ok(a);
        f = open_memstream(&b, &nb);
        REQUIRE(f != NULL);
        CHECK_OK(node_sim_topology_write(u, f));
        fclose(f);
        CHECK_STR(a, b);
        free(a);
        free(b);
        node_sim_topology_free(u);
        node_sim_topology_free(t);
    }
    struct node_sim_topology *t = NULL;
    CHECK_EQ(node_sim_topology_builtin("ring", &t), SM_ENOTFOUND);
}

static void test_parse_errors(void)
{
    static const struct
    {
        const char *text;
        const char *error;
    } cases[] = {
        {"", "topology: no entry"},
        {"hosts 2\nfrobnicate 3\n", "line 2: unknown directive 'frobnicate'"},
        {"hosts 0\n", "line 1: hosts: 0 is out of range"},
        {"hosts two\n", "line 1: hosts: 'two' is not a whole number"},
        {"rate -5\n", "line 1: rate: -5 is out of range"},
        {"rate 1e999\n", "line 1: rate: '1e999' is not a number"},
        {"service a\nservice a\n", "line 2: service 'a' is declared twice"},
        {"service a bogus=1\n", "line 1: unknown service option 'bogus'"},
        {"service a replicas\n", "line 1: expected key=value"},
        {"service a:b\n", "line 1: bad service name"},
        {"op a get\n", "line 1: op of an undeclared service 'a'"},
        {"service a\nop a get compute-ms=0\n",
         "line 2: compute-ms: 0 is out of range"},
        {"service a\nop a get disk-p=0.5\n",
         "line 2: disk-p without read-bytes"},
        {"service a\nop a get\nop a get\n",
         "line 3: op 'a get' is declared twice"},
        {"service a\nop a get\n\n# c\ncall a get b:x\nentry a get 1\n",
         "line 5: call target 'b:x' is not a declared op"},
        {"service a\nop a get\ncall a get nocolon\n",
         "line 3: call target 'nocolon' is not SERVICE:OP"},
        {"service a\nop a get\ncall a get a:get@1.5\n",
         "line 3: probability: 1.5 is out of range"},
        {"service a\nservice b\nop a x\nop b y\ncall a x b:y\ncall b y a:x\n"
         "entry a x 1\n",
         "call cycle through op"},
        {"service a\nop a get\nentry a get 0\n",
         "line 3: weight: 0 is out of range"},
        {"service a\nop a get\nentry a nope 1\n",
         "line 3: entry names an undeclared op"},
        {"service a\x01\n", "line 1: unexpected byte 0x01"},
        {"service a\n\0service b\n", "line 2: unexpected byte 0x00"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct node_sim_topology *t = NULL;
        char msg[SM_ERRMSG_SIZE] = "";
        size_t len = strlen(cases[i].text);
        if (strstr(cases[i].error, "0x00") != NULL) {
            len = 22; /* the text holds a NUL byte */
        }
        int rv = node_sim_topology_parse(cases[i].text, len, &t, msg);
        CHECK_EQ(rv, SM_EMALFORMED);
        CHECK(t == NULL);
        if (strstr(msg, cases[i].error) == NULL) {
            check__fail(__FILE__, __LINE__, 0, "case %zu: '%s' lacks '%s'", i,
                        msg, cases[i].error);
        }
    }
    /* A request that would fan out past 10,000 calls. */
    char big[4096];
    size_t n = (size_t)snprintf(big, sizeof big, "service s\n");
    for (int level = 0; level < 6; level++) {
        n += (size_t)snprintf(big + n, sizeof big - n, "op s l%d\n", level);
    }
    for (int level = 0; level < 5; level++) {
        n += (size_t)snprintf(big + n, sizeof big - n, "call s l%d", level);
        for (int k = 0; k < 8; k++) {
            n += (size_t)snprintf(big + n, sizeof big - n, " s:l%d", level + 1);
        }
        n += (size_t)snprintf(big + n, sizeof big - n, "\n");
    }
    snprintf(big + n, sizeof big - n, "entry s l0 1\n");
    struct node_sim_topology *t = NULL;
    char msg[SM_ERRMSG_SIZE] = "";
    CHECK_EQ(node_sim_topology_parse(big, strlen(big), &t, msg), SM_EMALFORMED);
    CHECK(strstr(msg, "could make") != NULL);
    /* A file that does not exist names itself. */
    CHECK(node_sim_topology_load("/nonexistent/x.topo", &t, msg) != SM_OK);
    CHECK(strstr(msg, "/nonexistent/x.topo") != NULL);
}

/* ---- Determinism and sampling ------------------------------------------- */

static void test_deterministic(void)
{
    struct node_sim_topology *t;
    REQUIRE_OK(node_sim_topology_builtin("social", &t));
    struct node_sim_schedule sc = {.seed = 7,
                                   .start_ns = START_NS,
                                   .duration_ns = 1200 * NS_PER_S,
                                   .cases_per_hour = 12,
                                   .p_minor = -1,
                                   .p_multi = -1,
                                   .p_spike = -1};
    struct node_sim_fault *f;
    size_t nf;
    REQUIRE_OK(node_sim_schedule_generate(t, &sc, &f, &nf));
    struct run_opts o = {.seed = 7,
                         .sampling = 0.05,
                         .duration_ns = 600 * NS_PER_S,
                         .blocked_cpu = -1,
                         .faults = f,
                         .n_faults = nf};
    struct summary *a = calloc(1, sizeof *a), *b = calloc(1, sizeof *b),
                   *c = calloc(1, sizeof *c);
    REQUIRE(a != NULL && b != NULL && c != NULL);
    run(t, &o, a, NULL);
    run(t, &o, b, NULL);
    o.seed = 8;
    run(t, &o, c, NULL);
    CHECK(a->spans > 1000);
    CHECK_EQ(a->hash, b->hash);
    CHECK_EQ(a->spans, b->spans);
    CHECK_EQ(a->points, b->points);
    CHECK(a->hash != c->hash);
    free(a);
    free(b);
    free(c);
    free(f);
    node_sim_topology_free(t);
}

static void test_sampling(void)
{
    struct node_sim_topology *t;
    REQUIRE_OK(node_sim_topology_builtin("chain", &t));
    struct run_opts o = {.seed = 3,
                         .sampling = 0.1,
                         .duration_ns = 300 * NS_PER_S,
                         .blocked_cpu = -1};
    struct summary *a = calloc(1, sizeof *a), *b = calloc(1, sizeof *b);
    REQUIRE(a != NULL && b != NULL);
    struct node_sim_stats sa, sb;
    run(t, &o, a, &sa);
    double share = (double)sa.sampled_traces / (double)sa.requests;
    CHECK_NEAR(share, 0.1, 0.01);
    /* A chain trace has 6 SERVER and 5 CLIENT spans. */
    CHECK_NEAR((double)sa.spans / (double)sa.sampled_traces, 11, 0.1);
    /* Sampling changes which traces are kept, never the system: the
     * metrics are the same at 100% as at 10%. */
    o.sampling = 1;
    run(t, &o, b, &sb);
    /* Every trace sampled (those still in flight at the end included). */
    CHECK(sb.sampled_traces >= sb.requests);
    CHECK(sb.sampled_traces - sb.requests <= sb.max_in_flight);
    CHECK_EQ(sa.requests, sb.requests);
    CHECK_EQ(sa.calls, sb.calls);
    for (size_t i = 0; i < a->n_series; i++) {
        struct series *x = series_of(b, a->series[i].key);
        CHECK(x->sum == a->series[i].sum);
    }
    free(a);
    free(b);
    node_sim_topology_free(t);
}

/* ---- Queueing ----------------------------------------------------------- */

/* One service, one core, a fixed service time of 10 ms: an M/D/1 queue,
 * whose mean response time is S (1 + rho / (2 (1 - rho))). */
static void test_queueing_md1(void)
{
    struct node_sim_topology *t = parse_ok(
        "service q replicas=1 threads=64 cores=1\n"
        "op q run compute-ms=10 sigma=0\n"
        "entry q run 1\n");
    static const double rho[] = {0.3, 0.6, 0.9};
    double lat[3], util[3];
    for (int i = 0; i < 3; i++) {
        struct run_opts o = {.seed = 11,
                             .sampling = 1,
                             .rate = rho[i] / 0.010,
                             .duration_ns = 3600 * NS_PER_S,
                             .blocked_cpu = -1,
                             .flat = 1};
        struct summary *s = calloc(1, sizeof *s);
        REQUIRE(s != NULL);
        run(t, &o, s, NULL);
        lat[i] = latency(s, "q");
        util[i] = rate_of(s, "q", "container_cpu_usage_seconds_total");
        double expect = 10 * (1 + rho[i] / (2 * (1 - rho[i])));
        CHECK_NEAR(lat[i], expect, expect * (i == 2 ? 0.15 : 0.05));
        CHECK_NEAR(util[i], rho[i], 0.02);
        free(s);
    }
    /* Superlinear near saturation. */
    CHECK(lat[2] - lat[1] > 2 * (lat[1] - lat[0]));
    node_sim_topology_free(t);
}

static void test_back_pressure(void)
{
    struct node_sim_topology *t = parse_ok(ab_text);
    struct node_sim_fault slow = {.start_ns = START_NS,
                                  .end_ns = START_NS + 3600 * NS_PER_S,
                                  .service = "b",
                                  .kind = NODE_SIM_FAULT_CPU,
                                  .magnitude = 1.5,
                                  .replica = -1};
    struct run_opts o = {.seed = 5,
                         .sampling = 1,
                         .duration_ns = 600 * NS_PER_S,
                         .blocked_cpu = -1,
                         .flat = 1};
    struct summary *base = calloc(1, sizeof *base),
                   *hit = calloc(1, sizeof *hit);
    REQUIRE(base != NULL && hit != NULL);
    run(t, &o, base, NULL);
    o.faults = &slow;
    o.n_faults = 1;
    run(t, &o, hit, NULL);
    /* The backend is slow, and so is its caller, whose workers wait on it
     * (occupancy up) while its own compute is unchanged. */
    CHECK(latency(hit, "b") > 2 * latency(base, "b"));
    CHECK(latency(hit, "a") > latency(base, "a") + 5);
    double occ0 = mean_of(base, "a", "threadpool_active_threads", "");
    double occ1 = mean_of(hit, "a", "threadpool_active_threads", "");
    CHECK(occ1 > 1.5 * occ0);
    double cpu0 = rate_of(base, "a", "container_cpu_usage_seconds_total");
    double cpu1 = rate_of(hit, "a", "container_cpu_usage_seconds_total");
    CHECK(cpu1 >= cpu0 * 0.97);
    CHECK(cpu1 < cpu0 * 1.2);
    free(base);
    free(hit);
    node_sim_topology_free(t);
}

/* ---- Faults move the right metrics -------------------------------------- */

struct fault_case
{
    enum node_sim_fault_kind kind;
    const char *service;
    double magnitude;
};

static void compare(const struct fault_case *fc,
                    struct summary *base,
                    struct summary *hit)
{
    const char *cpu = "container_cpu_usage_seconds_total";
    const char *mem = "container_memory_working_set_bytes";
    const char *fsr = "container_fs_reads_bytes_total";
    const char *fsw = "container_fs_writes_bytes_total";
    const char *thr = "threadpool_active_threads";
    double cpu0 = rate_of(base, fc->service, cpu);
    double cpu1 = rate_of(hit, fc->service, cpu);
    double mem0 = mean_of(base, fc->service, mem, "");
    double mem1 = mean_of(hit, fc->service, mem, "");
    double fs0 = rate_of(base, "b", fsr) + rate_of(base, "b", fsw);
    double fs1 = rate_of(hit, "b", fsr) + rate_of(hit, "b", fsw);
    double probe0 = mean_of(base, "a", "probe_duration_seconds", "b");
    double probe1 = mean_of(hit, "a", "probe_duration_seconds", "b");
    double lat0 = latency(base, fc->service), lat1 = latency(hit, fc->service);
    double net0 = latency(base, "a>b") - latency(base, "b");
    double net1 = latency(hit, "a>b") - latency(hit, "b");
    double thr0 = mean_of(base, fc->service, thr, "");
    double thr1 = mean_of(hit, fc->service, thr, "");
    const char *name = node_sim_fault_kind_name(fc->kind);
    printf(
        "# %s on %s: latency %.2f -> %.2f ms, cpu %.3f -> %.3f, "
        "mem %.0f -> %.0f MB, fs %.0f -> %.0f B/s, probe %.3f -> %.3f ms, "
        "net %.3f -> %.3f ms, threads %.2f -> %.2f\n",
        name, fc->service, lat0, lat1, cpu0, cpu1, mem0 / 1048576,
        mem1 / 1048576, fs0, fs1, probe0 * 1e3, probe1 * 1e3, net0, net1, thr0,
        thr1);
#define MOVES(cond)                                                    \
    do {                                                               \
        if (!(cond)) {                                                 \
            check__fail(__FILE__, __LINE__, 0, "%s: %s", name, #cond); \
        }                                                              \
    } while (0)
    switch (fc->kind) {
        case NODE_SIM_FAULT_CPU:
            MOVES(lat1 > 1.5 * lat0);
            MOVES(cpu1 > 1.3 * cpu0);
            MOVES(fabs(mem1 / mem0 - 1) < 0.05);
            MOVES(fabs(fs1 / fs0 - 1) < 0.05);
            MOVES(fabs(probe1 / probe0 - 1) < 0.1);
            break;
        case NODE_SIM_FAULT_MEMORY:
            MOVES(lat1 > 1.3 * lat0);
            MOVES(mem1 > 2 * mem0);
            MOVES(fabs(cpu1 / cpu0 - 1) < 0.05);
            MOVES(fabs(fs1 / fs0 - 1) < 0.05);
            break;
        case NODE_SIM_FAULT_NETWORK:
            MOVES(probe1 > probe0 + 0.009);
            MOVES(net1 > net0 + 9);
            MOVES(fabs(lat1 / lat0 - 1) < 0.1); /* the server side: flat */
            MOVES(fabs(cpu1 / cpu0 - 1) < 0.05);
            break;
        case NODE_SIM_FAULT_DISK:
            MOVES(fs1 > 10 * fs0);
            MOVES(lat1 > 1.3 * lat0);
            MOVES(fabs(cpu1 / cpu0 - 1) < 0.05);
            MOVES(fabs(mem1 / mem0 - 1) < 0.05);
            break;
        case NODE_SIM_FAULT_THREADPOOL:
        case NODE_SIM_FAULT_LOCK:
            /* Software bugs: slower, busier workers, flat CPU. */
            MOVES(lat1 > 1.2 * lat0);
            MOVES(thr1 > thr0 + 0.3);
            MOVES(fabs(cpu1 / cpu0 - 1) < 0.05);
            MOVES(fabs(fs1 / fs0 - 1) < 0.05);
            MOVES(fabs(probe1 / probe0 - 1) < 0.1);
            break;
        case NODE_SIM_FAULT_LOAD_SPIKE:
            MOVES(cpu1 > 1.3 * cpu0);
            MOVES(rate_of(hit, "a", cpu) > 1.3 * rate_of(base, "a", cpu));
            MOVES(lat1 > lat0);
            break;
    }
#undef MOVES
}

static void test_fault_kinds(void)
{
    struct node_sim_topology *t = parse_ok(ab_text);
    static const struct fault_case cases[] = {
        {NODE_SIM_FAULT_CPU, "b", 1.0},
        {NODE_SIM_FAULT_MEMORY, "b", 0.75},
        {NODE_SIM_FAULT_NETWORK, "b", 5},
        {NODE_SIM_FAULT_DISK, "b", 0.8},
        {NODE_SIM_FAULT_THREADPOOL, "a", 0.875},
        {NODE_SIM_FAULT_LOCK, "b", 4},
        {NODE_SIM_FAULT_LOAD_SPIKE, "b", 0.5},
    };
    struct run_opts o = {.seed = 9,
                         .sampling = 1,
                         .duration_ns = 600 * NS_PER_S,
                         .blocked_cpu = -1,
                         .flat = 1};
    struct summary *base = calloc(1, sizeof *base);
    REQUIRE(base != NULL);
    run(t, &o, base, NULL);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct node_sim_fault f = {
            .start_ns = START_NS,
            .end_ns = START_NS + 3600 * NS_PER_S,
            .service = cases[i].kind == NODE_SIM_FAULT_LOAD_SPIKE
                           ? NULL
                           : cases[i].service,
            .kind = cases[i].kind,
            .magnitude = cases[i].magnitude,
            .replica = -1};
        o.faults = &f;
        o.n_faults = 1;
        struct summary *hit = calloc(1, sizeof *hit);
        REQUIRE(hit != NULL);
        run(t, &o, hit, NULL);
        compare(&cases[i], base, hit);
        free(hit);
    }
    free(base);
    node_sim_topology_free(t);
}

/* ---- Ground truth ------------------------------------------------------- */

static void test_schedule(void)
{
    struct node_sim_topology *t;
    REQUIRE_OK(node_sim_topology_builtin("social", &t));
    struct node_sim_schedule sc = {.seed = 42,
                                   .start_ns = START_NS,
                                   .duration_ns = 8 * 3600 * NS_PER_S,
                                   .clean_ns = 3600 * NS_PER_S,
                                   .p_minor = -1,
                                   .p_multi = 0.3,
                                   .p_spike = 0.15};
    struct node_sim_fault *f, *g;
    size_t n, m;
    REQUIRE_OK(node_sim_schedule_generate(t, &sc, &f, &n));
    REQUIRE_OK(node_sim_schedule_generate(t, &sc, &g, &m));
    REQUIRE(n > 20);
    CHECK_EQ(n, m);
    CHECK(memcmp(f, g, n * sizeof *f) == 0);
    int kinds[NODE_SIM_FAULT_KINDS] = {0}, minor = 0, multi = 0;
    for (size_t i = 0; i < n; i++) {
        kinds[f[i].kind]++;
        minor += !f[i].expect_violation;
        CHECK(f[i].start_ns >= START_NS + 3600 * NS_PER_S);
        CHECK(f[i].end_ns <= START_NS + 8 * 3600 * NS_PER_S);
        CHECK(f[i].end_ns - f[i].start_ns >= 180 * NS_PER_S);
        CHECK(f[i].resource == node_sim_fault_resource(f[i].kind));
        CHECK((f[i].service == NULL) ==
              (f[i].kind == NODE_SIM_FAULT_LOAD_SPIKE));
        if (f[i].kind == NODE_SIM_FAULT_DISK) {
            CHECK(strstr(f[i].service, "mongodb") != NULL);
        }
        if (i > 0 && f[i].group == f[i - 1].group) {
            multi++;
            CHECK_EQ(f[i].start_ns, f[i - 1].start_ns);
            CHECK(strcmp(f[i].service, f[i - 1].service) != 0);
        } else if (i > 0) {
            /* Normal operation between cases. */
            CHECK(f[i].start_ns >= f[i - 1].end_ns + 240 * NS_PER_S);
            CHECK(f[i].group > f[i - 1].group);
        }
    }
    for (int k = 0; k < NODE_SIM_FAULT_KINDS; k++) {
        if (kinds[k] == 0) {
            check__fail(__FILE__, __LINE__, 0, "no %s fault in 7 h",
                        node_sim_fault_kind_name((enum node_sim_fault_kind)k));
        }
    }
    CHECK(minor > 0);
    CHECK(multi > 0);

    /* The simulator keeps them, and answers which are active when. */
    struct node_sim_config c;
    node_sim_config_init(&c, t);
    c.duration_ns = 8 * 3600 * NS_PER_S;
    c.faults = f;
    c.n_faults = n;
    struct node_sim *sim;
    char msg[SM_ERRMSG_SIZE];
    REQUIRE_OK(node_sim_new(&c, &sim, msg));
    CHECK_EQ(node_sim_fault_count(sim), n);
    const struct node_sim_fault *act[8];
    CHECK_EQ(node_sim_active_faults(sim, START_NS, START_NS + 3600 * NS_PER_S,
                                    act, 8),
             0);
    const struct node_sim_fault *f0 = node_sim_fault(sim, 0);
    size_t k =
        node_sim_active_faults(sim, f0->start_ns, f0->start_ns + 1, act, 8);
    CHECK(k >= 1);
    CHECK(act[0]->start_ns == f0->start_ns);
    CHECK_EQ(
        node_sim_active_faults(sim, f0->end_ns, f0->end_ns + NS_PER_S, act, 8),
        0);
    CHECK(node_sim_fault(sim, n) == NULL);
    node_sim_free(sim);
    free(f);
    free(g);
    node_sim_topology_free(t);
}

static void test_fault_file(void)
{
    struct node_sim_topology *t = parse_ok(ab_text);
    const char *good =
        "# a comment\n"
        "at=60 for=120 kind=cpu service=b magnitude=0.5\n"
        "\n"
        "at=300 for=60 kind=load-spike magnitude=1 expect=0 group=9\n"
        "at=400 for=60 kind=lock service=b magnitude=3 replica=0\n";
    struct node_sim_fault *f;
    size_t n;
    char msg[SM_ERRMSG_SIZE] = "";
    REQUIRE_OK(
        node_sim_faults_parse(t, START_NS, good, strlen(good), &f, &n, msg));
    REQUIRE_EQ(n, 3);
    CHECK_EQ(f[0].start_ns, START_NS + 60 * NS_PER_S);
    CHECK_EQ(f[0].end_ns, START_NS + 180 * NS_PER_S);
    CHECK_STR(f[0].service, "b");
    CHECK_EQ(f[0].resource, CBN_RES_CPU);
    CHECK_EQ(f[0].replica, -1);
    CHECK(f[1].service == NULL);
    CHECK_EQ(f[1].resource, CBN_RES_UNKNOWN);
    CHECK_EQ(f[1].expect_violation, 0);
    CHECK_EQ(f[1].group, 9);
    CHECK_EQ(f[2].resource, CBN_RES_OTHER);
    CHECK_EQ(f[2].replica, 0);
    free(f);
    static const struct
    {
        const char *text, *error;
    } bad[] = {
        {"at=1 for=1 kind=cpu magnitude=1\n", "line 1: service= is required"},
        {"\nat=1 for=1 kind=cpu service=zz magnitude=1\n",
         "line 2: unknown service zz"},
        {"at=1 for=1 kind=heat service=b magnitude=1\n", "line 1: kind is"},
        {"at=1 for=1 kind=cpu service=b\n", "line 1: needs at="},
        {"at=x for=1 kind=cpu service=b magnitude=1\n",
         "line 1: bad value for at"},
        {"at=1 for=1 kind=cpu service=b magnitude=1 replica=3\n",
         "line 1: no such replica"},
        {"at=1 for=1 kind=memory service=b magnitude=2\n",
         "line 1: magnitude must be at most 1"},
        {"at=1 for=1 kind=cpu service=b magnitude=1 colour=red\n",
         "line 1: unknown key colour"},
        {"at=1 for=1 kind=load-spike service=b magnitude=1\n",
         "line 1: service= is required, except"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        f = NULL;
        int rv = node_sim_faults_parse(t, START_NS, bad[i].text,
                                       strlen(bad[i].text), &f, &n, msg);
        CHECK_EQ(rv, SM_EMALFORMED);
        if (strstr(msg, bad[i].error) == NULL) {
            check__fail(__FILE__, __LINE__, 0, "case %zu: '%s' lacks '%s'", i,
                        msg, bad[i].error);
        }
    }
    /* The simulator refuses faults it cannot apply. */
    struct node_sim_fault wrong = {.start_ns = START_NS,
                                   .end_ns = START_NS + 1,
                                   .service = "nope",
                                   .kind = NODE_SIM_FAULT_CPU,
                                   .replica = -1};
    struct node_sim_config c;
    node_sim_config_init(&c, t);
    c.faults = &wrong;
    c.n_faults = 1;
    struct node_sim *sim = NULL;
    CHECK_EQ(node_sim_new(&c, &sim, msg), SM_EINVAL);
    CHECK(strstr(msg, "unknown service 'nope'") != NULL);
    wrong.service = "b";
    wrong.end_ns = wrong.start_ns;
    CHECK_EQ(node_sim_new(&c, &sim, msg), SM_EINVAL);
    c.n_faults = 0;
    c.sampling = 2;
    CHECK_EQ(node_sim_new(&c, &sim, msg), SM_EINVAL);
    node_sim_topology_free(t);
}

struct qos_seen
{
    uint64_t windows, requests, violated;
    uint64_t last_end;
    int ordered;
};

static void on_qos(void *arg, uint64_t t0, uint64_t t1, double ms, uint64_t n)
{
    struct qos_seen *q = arg;
    q->ordered &= q->last_end == 0 || q->last_end == t0;
    q->last_end = t1;
    q->windows++;
    q->requests += n;
    q->violated += ms > 60;
}

static void test_qos_truth(void)
{
    struct node_sim_topology *t = parse_ok(ab_text);
    struct node_sim_fault f = {.start_ns = START_NS + 300 * NS_PER_S,
                               .end_ns = START_NS + 420 * NS_PER_S,
                               .service = "b",
                               .kind = NODE_SIM_FAULT_LOCK,
                               .magnitude = 9,
                               .replica = -1};
    struct node_sim_config c;
    node_sim_config_init(&c, t);
    c.duration_ns = 900 * NS_PER_S;
    c.faults = &f;
    c.n_faults = 1;
    struct node_sim *sim;
    char msg[SM_ERRMSG_SIZE];
    REQUIRE_OK(node_sim_new(&c, &sim, msg));
    struct qos_seen q = {.ordered = 1};
    node_sim_on_qos(sim, 30 * NS_PER_S, 99, on_qos, &q);
    /* Run in pieces: the same as running at once. */
    for (uint64_t at = START_NS; at < node_sim_end(sim); at += 97 * NS_PER_S) {
        REQUIRE_OK(node_sim_run(sim, at, NULL, NULL, NULL));
        CHECK(node_sim_now(sim) <= at || at < START_NS);
    }
    REQUIRE_OK(node_sim_run(sim, UINT64_MAX, NULL, NULL, NULL));
    struct node_sim_stats st;
    node_sim_stats(sim, &st);
    CHECK_EQ(q.windows, 30);
    CHECK(q.ordered);
    CHECK_EQ(q.requests, st.requests);
    /* The lock held 9 ms at ~100 requests/s: violations while it lasts,
     * and only then (allowing the queue a window to drain). */
    printf("# %u windows over 60 ms\n", (unsigned)q.violated);
    CHECK(q.violated >= 4 && q.violated <= 6);
    node_sim_free(sim);
    node_sim_topology_free(t);
}

/* ---- Into the aggregator ------------------------------------------------ */

struct windows
{
    int n, with_edges, with_metrics;
    int ok;
};

static void on_window(void *arg, struct cbn_window *w)
{
    struct windows *ws = arg;
    ws->n++;
    static const char *const tiers[] = {"frontend", "tier-1", "tier-2",
                                        "tier-3",   "tier-4", "tier-5-db"};
    for (int i = 0; i < 6; i++) {
        const struct cbn_window_service *s = cbn_window_service(w, tiers[i]);
        if (s == NULL || s->requests == 0) {
            ws->ok = 0;
            continue;
        }
        int has_cpu = 0, has_other = 0;
        for (uint32_t k = 0; k < s->n_metrics; k++) {
            const struct cbn_window_metric *m = &s->metrics[k];
            has_cpu |=
                strcmp(m->name, "container_cpu_usage_seconds_total") == 0 &&
                m->resource == CBN_RES_CPU && !isnan(m->pct[2]);
            has_other |= strcmp(m->name, "threadpool_active_threads") == 0 &&
                         m->resource == CBN_RES_OTHER;
            if (strcmp(m->name, "probe_duration_seconds") == 0 &&
                (m->resource != CBN_RES_NETWORK ||
                 (i < 5 && strcmp(m->peer, tiers[i + 1]) != 0))) {
                ws->ok = 0;
            }
        }
        ws->with_metrics += has_cpu && has_other;
        if (i < 5) {
            const struct cbn_window_edge *e =
                cbn_window_edge(w, tiers[i], tiers[i + 1]);
            ws->with_edges += e != NULL && e->paired > 0 && !e->inferred &&
                              e->network_ms[2] > 0;
        }
    }
    CHECK(w->n_services == 6);
    CHECK(w->n_edges == 5);
    cbn_window_free(w);
}

static void test_into_aggregator(void)
{
    struct node_sim_topology *t;
    REQUIRE_OK(node_sim_topology_builtin("chain", &t));
    struct cbn_agg_config ac = {.window_ns = 30 * NS_PER_S,
                                .lateness_ns = 5 * NS_PER_S,
                                .qos_service = "frontend",
                                .qos_target_ms = 60,
                                .hash_seed = 1};
    struct summary *s = calloc(1, sizeof *s);
    REQUIRE(s != NULL);
    REQUIRE_OK(cbn_agg_new(&ac, &s->agg));
    struct run_opts o = {.seed = 2,
                         .sampling = 0.05,
                         .duration_ns = 300 * NS_PER_S,
                         .blocked_cpu = -1};
    run(t, &o, s, NULL);
    CHECK_OK(s->agg_rv);
    struct windows ws = {.ok = 1};
    CHECK_OK(cbn_agg_close_ready(s->agg, on_window, &ws));
    CHECK_OK(cbn_agg_flush(s->agg, on_window, &ws));
    struct cbn_agg_stats st;
    cbn_agg_stats(s->agg, &st);
    CHECK_EQ(st.spans_late, 0);
    CHECK_EQ(st.points_late, 0);
    CHECK_EQ(st.spans_rejected, 0);
    CHECK_EQ(ws.n, 10);
    CHECK(ws.ok);
    CHECK_EQ(ws.with_edges, 5 * 10);
    CHECK(ws.with_metrics >= 6 * 9); /* the first window has one scrape */
    cbn_agg_free(s->agg);
    free(s);
    node_sim_topology_free(t);
}

/* The OTLP JSON bodies the command writes parse back to the same records. */
static int keep_points(void *arg, const struct cbn_metric_point *p, size_t n)
{
    struct node_points *b = arg;
    if (b->n > 0) {
        return 0; /* the first scrape is enough */
    }
    for (size_t i = 0; i < n; i++) {
        *node_points_add(b) = p[i];
    }
    return 0;
}

static void test_otlp_round_trip(void)
{
    struct node_sim_topology *t;
    REQUIRE_OK(node_sim_topology_builtin("social", &t));
    struct node_sim_config c;
    node_sim_config_init(&c, t);
    c.duration_ns = 40 * NS_PER_S;
    struct node_sim *sim;
    char msg[SM_ERRMSG_SIZE];
    REQUIRE_OK(node_sim_new(&c, &sim, msg));
    struct node_points mine;
    node_points_init(&mine, 0);
    REQUIRE_OK(
        node_sim_run(sim, START_NS + 20 * NS_PER_S, NULL, keep_points, &mine));
    REQUIRE(mine.n > 100);
    char *body;
    size_t len;
    REQUIRE_OK(node_sim_otlp_metrics(mine.v, mine.n, START_NS, &body, &len));
    struct node_points back;
    node_points_init(&back, 0);
    int rv = node_otlp_metrics((const uint8_t *)body, len, &back, msg);
    CHECK_OK(rv);
    REQUIRE_EQ(back.n, mine.n);
    size_t probes = 0;
    for (size_t i = 0; i < mine.n; i++) {
        /* Grouping keeps the order within a (service, instance, name). */
        size_t k = 0;
        while (k < back.n &&
               !(strcmp(back.v[k].instance, mine.v[i].instance) == 0 &&
                 strcmp(back.v[k].name, mine.v[i].name) == 0 &&
                 strcmp(back.v[k].peer, mine.v[i].peer) == 0)) {
            k++;
        }
        REQUIRE(k < back.n);
        CHECK_STR(back.v[k].service, mine.v[i].service);
        CHECK_STR(back.v[k].labels, mine.v[i].labels);
        CHECK(back.v[k].value == mine.v[i].value);
        CHECK_EQ(back.v[k].time_ns, mine.v[i].time_ns);
        CHECK_EQ(back.v[k].cumulative, mine.v[i].cumulative);
        probes += mine.v[i].peer[0] != '\0';
    }
    CHECK(probes > 20);
    free(body);
    node_points_free(&back);
    node_points_free(&mine);
    node_sim_free(sim);
    node_sim_topology_free(t);
}

/* ---- The command -------------------------------------------------------- */

static char out_text[65536], err_text[65536];

static int cli(const char *first, ...)
{
    char *argv[32] = {"sagemesh", (char *)first};
    int argc = 2;
    va_list ap;
    va_start(ap, first);
    for (const char *a; argc < 31 && (a = va_arg(ap, const char *)) != NULL;) {
        argv[argc++] = (char *)a;
    }
    va_end(ap);
    FILE *out = fmemopen(out_text, sizeof out_text, "w");
    FILE *err = fmemopen(err_text, sizeof err_text, "w");
    int rv = node_main(argc, argv, out, err);
    fclose(out);
    fclose(err);
    return rv;
}

static int exists(const char *dir, const char *name)
{
    char path[8192];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return stat(path, &st) == 0 && st.st_size > 0;
}

static void test_command(void)
{
    const char *dir = check_tmpdir();
    char out_dir[1024];
    snprintf(out_dir, sizeof out_dir, "%s/run", dir);
    char faults[1024];
    snprintf(faults, sizeof faults, "%s/faults.txt", dir);
    FILE *ff = fopen(faults, "w");
    REQUIRE(ff != NULL);
    fputs("at=30 for=60 kind=cpu service=tier-2 magnitude=1\n", ff);
    fclose(ff);
    CHECK_EQ(
        cli("sim", "--topology", "chain", "--duration", "3m", "--seed", "4",
            "--sampling", "0.02", "--faults", faults, "--out", out_dir, NULL),
        NODE_EXIT_OK);
    CHECK(strstr(out_text, "simulated chain for 180 s") != NULL);
    CHECK(exists(out_dir, "labels.json"));
    CHECK(exists(out_dir, "topology.txt"));
    CHECK(exists(out_dir, "host-0/00000001-metrics.json"));
    /* The labels name the faults and the windows' truth. */
    char path[4096];
    snprintf(path, sizeof path, "%s/labels.json", out_dir);
    FILE *f = fopen(path, "r");
    REQUIRE(f != NULL);
    static char labels[1 << 16];
    size_t n = fread(labels, 1, sizeof labels - 1, f);
    fclose(f);
    labels[n] = '\0';
    CHECK(strstr(labels, "\"topology\":\"chain\"") != NULL);
    CHECK(strstr(labels, "\"faults\":[{\"group\":1") != NULL);
    CHECK(strstr(labels, "\"qos_windows\":[{") != NULL);
    /* The topology written beside the data runs again. */
    snprintf(path, sizeof path, "%s/topology.txt", out_dir);
    CHECK_EQ(cli("sim", "--topology", path, "--print-topology", NULL),
             NODE_EXIT_OK);
    CHECK(strstr(out_text, "service tier-5-db") != NULL);
    /* Usage errors exit 2, bad input files 1 with the line. */
    CHECK_EQ(cli("sim", "--topology", "chain", NULL), NODE_EXIT_USAGE);
    CHECK(strstr(err_text, "needs --out DIR or --peer") != NULL);
    CHECK_EQ(cli("sim", "--duration", "forever", "--out", dir, NULL),
             NODE_EXIT_USAGE);
    CHECK_EQ(cli("sim", "--sampling", "0", "--out", dir, NULL),
             NODE_EXIT_USAGE);
    CHECK_EQ(cli("sim", "--frobnicate", NULL), NODE_EXIT_USAGE);
    snprintf(path, sizeof path, "%s/bad.topo", dir);
    f = fopen(path, "w");
    REQUIRE(f != NULL);
    fputs("hosts 2\nservice a threads=lots\n", f);
    fclose(f);
    CHECK_EQ(cli("sim", "--topology", path, "--out", dir, NULL),
             NODE_EXIT_FAILED);
    CHECK(strstr(err_text, "line 2: threads") != NULL);
    CHECK_EQ(cli("sim", "--help", NULL), NODE_EXIT_OK);
    CHECK(strstr(out_text, "--faults auto|none|FILE") != NULL);
}

static const struct check_test tests[] = {
    {"built-in topologies round-trip", test_builtins},
    {"topology errors name the line", test_parse_errors},
    {"same seed, same output", test_deterministic},
    {"sampling rate respected, metrics unchanged", test_sampling},
    {"M/D/1 queueing and saturation", test_queueing_md1},
    {"a slow backend slows and fills its caller", test_back_pressure},
    {"each fault moves its metrics, not others", test_fault_kinds},
    {"fault schedule generator", test_schedule},
    {"fault file", test_fault_file},
    {"ground-truth QoS windows", test_qos_truth},
    {"spans and points into the aggregator", test_into_aggregator},
    {"OTLP metrics JSON round trip", test_otlp_round_trip},
    {"sagemesh sim", test_command},
};

CHECK_MAIN(tests, NULL, NULL)
