/* The workload simulator: microservice topologies, queueing, load, injected
 * faults with ground truth, and the telemetry they produce (node-private). */
#ifndef SM_NODE_SIM_H
#define SM_NODE_SIM_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "base/err.h"
#include "cbn/cbn.h"

/* A deterministic discrete-event simulation of a microservice application.
 *
 * Every request is simulated: it arrives at a replica of a service, waits
 * for a worker thread, computes on a core (a multi-server FIFO queue: the
 * replica has `cores` of them), may read or write its disk (a single-server
 * FIFO), calls its children (steps run in sequence, the calls of a step in
 * parallel) and computes again before it answers. A worker stays held while
 * its request waits for children, so a slow backend fills its callers' pools
 * and makes them queue: back-pressure travels upstream. Latency comes only
 * from this queueing, the sampled service times and the network delay of
 * each link. Arrivals are Poisson with a rate that varies (diurnal sine,
 * per-minute noise, labelled load spikes).
 *
 * Telemetry: spans only for sampled traces (head sampling at the root),
 * metrics from all requests, scraped per replica every scrape interval:
 *
 *   container_cpu_usage_seconds_total     cumulative, cpu: core time
 *       actually consumed by compute, plus a co-located hog during a cpu
 *       fault, plus `blocked_cpu` of a core per worker blocked on its
 *       children (polling, keep-alive, pending-state churn), capped at the
 *       replica's cores. A worker waiting for a lock or a worker thread
 *       costs nothing: lock contention and pool exhaustion leave CPU flat.
 *   container_memory_working_set_bytes     gauge, memory: base + held
 *       buffers of the requests in flight (mean over the interval) + fault.
 *   container_network_receive_bytes_total / _transmit_bytes_total
 *                                          cumulative, network.
 *   container_fs_reads_bytes_total / container_fs_writes_bytes_total
 *                                          cumulative, disk; services with
 *                                          disk operations only.
 *   threadpool_active_threads              gauge, other: busy workers
 *                                          (mean over the interval).
 *   probe_duration_seconds                 gauge, network, per link: a
 *       blackbox probe from the caller's replica to the callee's, data point
 *       attribute peer.service = callee (labels "peer.service=CALLEE").
 *
 * Everything is a pure function of the configuration and the seed: the same
 * inputs give the same spans, points and labels, byte for byte. The
 * simulator never reads the clock. Not thread-safe: one thread owns it. */

/* ---- Topologies -------------------------------------------------------- */

struct node_sim_topology;

/* Builds a built-in topology: "chain" (6 tiers, the last one a database),
 * "fanout" (a frontend waiting on 5 parallel leaves) or "social" (a
 * DeathStarBench-like social network of 28 services with five request
 * types). On success stores a topology owned by the caller
 * (node_sim_topology_free) in @out. Returns SM_OK, SM_ENOTFOUND for another
 * name, or SM_ENOMEM. */
int node_sim_topology_builtin(const char *name, struct node_sim_topology **out);

/* Parses a topology file of @len bytes at @text (borrowed, need not be
 * NUL-terminated). The format, one directive per line, '#' starts a
 * comment, tokens are separated by blanks, names are [A-Za-z0-9_.-/]:
 *
 *   topology NAME                    optional, default "custom"
 *   hosts N                          1..64 (default 1); replicas are spread
 *                                    round-robin over host-0 .. host-N-1
 *   rate RPS                         default arrival rate (default 100)
 *   qos-target-ms MS                 suggested QoS target of the frontend
 *   service NAME [replicas=N] [threads=N] [cores=N] [memory-mb=X]
 *                [limit-mb=X] [request-kb=X]
 *       defaults 1, 32, 2, 200, 1024, 64: replicas, worker threads, cores,
 *       base working set, memory limit and buffer held per request in flight
 *   op SERVICE NAME [compute-ms=X] [sigma=X] [req-bytes=N] [resp-bytes=N]
 *                   [disk-p=P] [read-bytes=N] [write-bytes=N]
 *       an operation of a declared service: mean compute per request
 *       (lognormal with log-sd sigma, split half before and half after the
 *       calls), message sizes, and with probability disk-p one disk access
 *       moving read-bytes and write-bytes
 *   call SERVICE OP TARGET_SERVICE:TARGET_OP[@P] ...
 *       appends a step to the declared op SERVICE OP: its targets are called
 *       in parallel, each with probability P (default 1); steps run in the
 *       order of their lines
 *   entry SERVICE OP WEIGHT          a request type and its share of the
 *                                    load; the first entry's service is the
 *                                    frontend
 *
 * Targets may be declared later in the file. Anything wrong is refused with
 * "line N: why" in @errmsg: unknown directives and options, bad or
 * out-of-range numbers, duplicates, unknown services and ops, call cycles,
 * no entry, a request that would make more than 10,000 calls, more than 256
 * services or 64 hosts, a file over 1 MiB. Returns SM_OK with a topology
 * owned by the caller in @out, SM_EMALFORMED, or SM_ENOMEM. */
int node_sim_topology_parse(const char *text,
                            size_t len,
                            struct node_sim_topology **out,
                            char errmsg[SM_ERRMSG_SIZE]);

/* Reads and parses the file at @path; errors as node_sim_topology_parse(),
 * plus SM_EIO/SM_ENOTFOUND/SM_EPERM for an unreadable file, with the path in
 * @errmsg. */
int node_sim_topology_load(const char *path,
                           struct node_sim_topology **out,
                           char errmsg[SM_ERRMSG_SIZE]);

/* Writes @topo in the file format above to @f (it parses back to the same
 * topology). Returns SM_OK or SM_EIO. */
int node_sim_topology_write(const struct node_sim_topology *topo, FILE *f);

void node_sim_topology_free(struct node_sim_topology *topo);

/* Facts about a topology; strings are owned by it. */
const char *node_sim_topology_name(const struct node_sim_topology *topo);
const char *node_sim_topology_frontend(const struct node_sim_topology *topo);
size_t node_sim_topology_services(const struct node_sim_topology *topo);
const char *node_sim_topology_service(const struct node_sim_topology *topo,
                                      size_t i);
/* Cores of one replica of service @i (0 past the last service): what an
 * autoscaler's CPU target is relative to. */
unsigned node_sim_topology_service_cores(const struct node_sim_topology *topo,
                                         size_t i);
size_t node_sim_topology_hosts(const struct node_sim_topology *topo);
double node_sim_topology_rate(const struct node_sim_topology *topo);
double node_sim_topology_qos_target_ms(const struct node_sim_topology *topo);

/* ---- Faults (the ground truth) ------------------------------------------
 *
 * What each kind does to the service (all its replicas, or one) and what
 * the magnitude means:
 *
 *   CPU        a co-located CPU hog: compute takes (1 + m) times longer
 *              and the hog's m / (1 + m) of the cores shows in CPU usage.
 *   MEMORY     a leak or balloon takes fraction m (0..1) of the headroom
 *              between the base working set and the limit: the working set
 *              rises and, past 80% of the limit, paging slows compute.
 *   NETWORK    m milliseconds of extra one-way delay on every link into the
 *              service, both directions (probes and client-minus-server
 *              time rise).
 *   DISK       background I/O (1 MiB accesses, Poisson) keeps fraction m
 *              (0..0.99) of the disk busy: the service's disk accesses wait
 *              behind it and fs bytes rise with the background stream.
 *   THREADPOOL fraction m (0..1) of the worker threads is stuck (leaked):
 *              fewer workers, queueing, CPU flat. Resource "other".
 *   LOCK       every request holds a replica-wide lock for m milliseconds
 *              without computing (serialised, CPU flat). Resource "other".
 *   LOAD_SPIKE the arrival rate is multiplied by (1 + m); no culprit
 *              (service NULL, resource unknown). */
enum node_sim_fault_kind {
    NODE_SIM_FAULT_CPU,
    NODE_SIM_FAULT_MEMORY,
    NODE_SIM_FAULT_NETWORK,
    NODE_SIM_FAULT_DISK,
    NODE_SIM_FAULT_THREADPOOL,
    NODE_SIM_FAULT_LOCK,
    NODE_SIM_FAULT_LOAD_SPIKE,
};
#define NODE_SIM_FAULT_KINDS 7

struct node_sim_fault
{
    uint64_t start_ns, end_ns;  /* active in [start, end), Unix epoch ns */
    const char *service;        /* the culprit; NULL for a load spike */
    enum cbn_resource resource; /* the culprit resource (unknown: spike) */
    enum node_sim_fault_kind kind;
    double magnitude;     /* see above */
    int replica;          /* replica index, or -1 for all replicas */
    int expect_violation; /* meant to violate the QoS (the schedule's
                             intent; the windows have the verdict) */
    uint32_t group;       /* faults injected together share it (>= 1) */
};

/* "cpu", "memory", "network", "disk", "threadpool", "lock", "load-spike";
 * and the parser of these names (SM_OK or SM_EINVAL). */
const char *node_sim_fault_kind_name(enum node_sim_fault_kind kind);
int node_sim_fault_kind_parse(const char *name, enum node_sim_fault_kind *out);

/* The resource class that is the ground truth for @kind. */
enum cbn_resource node_sim_fault_resource(enum node_sim_fault_kind kind);

/* The load: rate(t) = rate * (1 + diurnal_amplitude * sin(2 pi (t mod
 * period) / period - pi / 2)) * noise(t) * (1 + spikes), where t is Unix
 * time (so the trough is at 00:00 UTC for a 24 h period) and noise is a
 * log-normal AR(1) factor redrawn every minute with log-sd noise. */
struct node_sim_load
{
    double rate;                /* mean requests per second; 0 -> topology */
    double diurnal_amplitude;   /* < 0 -> 0.3; 0 for a flat load */
    uint64_t diurnal_period_ns; /* 0 -> 24 h */
    double noise;               /* < 0 -> 0.05; 0 for none */
};

/* The fault schedule generator: places cases (a fault, a group of faults on
 * several services at once, or a load spike) at random times with gaps of
 * normal operation between them, none before start + clean_ns, so that a
 * benchmark can train on the clean prefix and test on the rest. */
struct node_sim_schedule
{
    uint64_t seed;
    uint64_t start_ns, duration_ns;
    uint64_t clean_ns;         /* fault-free prefix; 0 -> none */
    double cases_per_hour;     /* 0 -> 6 */
    uint64_t min_len_ns;       /* 0 -> 3 min */
    uint64_t max_len_ns;       /* 0 -> 8 min */
    uint64_t min_gap_ns;       /* normal operation between cases; 0 -> 4 min */
    double p_minor;            /* cases meant not to violate; < 0 -> 0.15 */
    double p_multi;            /* cases on 2-3 services at once; < 0 -> 0.1 */
    double p_spike;            /* load spikes; < 0 -> 0.1 */
    struct node_sim_load load; /* the run's load: magnitudes are sized to
                                  the services' utilisation under it */
};

/* Generates a schedule for @topo. On success stores a malloc()ed array of
 * *@n faults, sorted by start, in @out (free() it); their service strings
 * point into @topo. Returns SM_OK, SM_EINVAL (zero duration) or SM_ENOMEM. */
int node_sim_schedule_generate(const struct node_sim_topology *topo,
                               const struct node_sim_schedule *schedule,
                               struct node_sim_fault **out,
                               size_t *n);

/* Parses a fault file, one fault per line ('#' comments):
 *
 *   at=SECONDS for=SECONDS kind=KIND [service=NAME] magnitude=M
 *   [replica=N] [group=N] [expect=0|1]
 *
 * with times relative to @start_ns, KIND as node_sim_fault_kind_name()
 * (service required except for load-spike). Services are checked against
 * @topo and the strings point into it. Returns SM_OK with a malloc()ed
 * array in @out, SM_EMALFORMED with "line N: why" in @errmsg, or
 * SM_ENOMEM. */
int node_sim_faults_parse(const struct node_sim_topology *topo,
                          uint64_t start_ns,
                          const char *text,
                          size_t len,
                          struct node_sim_fault **out,
                          size_t *n,
                          char errmsg[SM_ERRMSG_SIZE]);

/* ---- The simulator ------------------------------------------------------ */

struct node_sim;

struct node_sim_config
{
    const struct node_sim_topology *topology; /* borrowed: must outlive the
                                                 simulator */
    uint64_t seed;
    uint64_t start_ns;    /* 0 -> 1700028000 s (2023-11-15T06:00:00Z) */
    uint64_t duration_ns; /* > 0 */
    double sampling;      /* head sampling, (0, 1]; 0 -> 0.01 */
    uint64_t scrape_ns;   /* 0 -> 15 s */
    double blocked_cpu;   /* core share of a blocked worker; < 0 -> 0.02 */
    struct node_sim_load load;
    const struct node_sim_fault *faults; /* copied; services must be in the
                                            topology */
    size_t n_faults;
    size_t batch; /* spans per callback at most; 0 -> 4096 */
};

/* Sets @config to the defaults described above for @topo (rates and
 * amplitudes set to "default" values), with a duration of one hour. */
void node_sim_config_init(struct node_sim_config *config,
                          const struct node_sim_topology *topo);

/* Creates a simulator. Returns SM_OK with the simulator (node_sim_free) in
 * @out; SM_EINVAL with @errmsg for a bad configuration (no topology, zero
 * duration, sampling out of range, a fault on an unknown service or replica,
 * a fault that ends before it starts); SM_ENOMEM. */
int node_sim_new(const struct node_sim_config *config,
                 struct node_sim **out,
                 char errmsg[SM_ERRMSG_SIZE]);

void node_sim_free(struct node_sim *sim);

/* Receivers of telemetry. Records and their strings are borrowed for the
 * call. Returning non-zero stops node_sim_run(), which returns that value;
 * the simulator can then be run again or freed. */
typedef int (*node_sim_spans_cb)(void *arg,
                                 const struct cbn_span *spans,
                                 size_t n);
typedef int (*node_sim_points_cb)(void *arg,
                                  const struct cbn_metric_point *points,
                                  size_t n);

/* Runs event time forward to @until_ns (clamped to the end of the
 * simulation; pass UINT64_MAX for all of it), delivering telemetry in event
 * order: spans in batches of at most `batch` (a span is delivered when it
 * ends, so within and across batches end times never go down by more than a
 * request's network delay), and each scrape as one batch of points, every
 * span that ended before the scrape delivered first. Either callback may be
 * NULL. Can be called repeatedly with increasing @until_ns. Returns SM_OK,
 * a callback's non-zero value, or SM_ENOMEM (the run cannot go on). */
int node_sim_run(struct node_sim *sim,
                 uint64_t until_ns,
                 node_sim_spans_cb on_spans,
                 node_sim_points_cb on_points,
                 void *arg);

/* The current event time, the configured start and end. */
uint64_t node_sim_now(const struct node_sim *sim);
uint64_t node_sim_start(const struct node_sim *sim);
uint64_t node_sim_end(const struct node_sim *sim);

/* The ground truth: every fault of the configuration, in order of start
 * (strings owned by the simulator). */
size_t node_sim_fault_count(const struct node_sim *sim);
const struct node_sim_fault *node_sim_fault(const struct node_sim *sim,
                                            size_t i);

/* Stores in @out (room for @max) the faults active at some time in
 * [@t0, @t1) and returns how many there are (possibly more than @max). */
size_t node_sim_active_faults(const struct node_sim *sim,
                              uint64_t t0,
                              uint64_t t1,
                              const struct node_sim_fault **out,
                              size_t max);

/* Where replicas run: the host index of a span's or point's instance
 * (a string the simulator delivered, or an equal one), or -1. */
int node_sim_instance_host(const struct node_sim *sim, const char *instance);

/* The replicas, in a fixed order: returns the instance name of replica @i
 * and stores its service and host index, or returns NULL past the last
 * one. Strings are owned by the simulator. */
const char *node_sim_replica(const struct node_sim *sim,
                             size_t i,
                             const char **service,
                             int *host);

/* Counters of a run so far. The frontend latencies are exact, over every
 * request (not only sampled ones). */
struct node_sim_stats
{
    uint64_t events;
    uint64_t requests; /* root requests completed */
    uint64_t calls;    /* service invocations completed */
    uint64_t sampled_traces;
    uint64_t spans, points;
    uint64_t max_in_flight; /* invocations in flight at once */
};
void node_sim_stats(const struct node_sim *sim, struct node_sim_stats *out);

/* Receives, at the end of each window of @window_ns (aligned to the epoch),
 * the exact frontend latency at @percentile over every root request that
 * ended in it (NaN when none did), and their count. Set before running;
 * @cb NULL turns it off. For ground-truth QoS verdicts. */
typedef void (*node_sim_qos_cb)(void *arg,
                                uint64_t window_start_ns,
                                uint64_t window_end_ns,
                                double latency_ms,
                                uint64_t requests);
void node_sim_on_qos(struct node_sim *sim,
                     uint64_t window_ns,
                     double percentile,
                     node_sim_qos_cb cb,
                     void *arg);

/* Writes @n points as one OTLP/HTTP JSON ExportMetricsServiceRequest into a
 * new malloc()ed, NUL-terminated buffer (*@out, length *@len): one
 * ResourceMetrics per (service, instance) with service.name and
 * service.instance.id, one Metric per name holding all its data points,
 * cumulative points as monotonic cumulative sums starting at @start_ns,
 * others as gauges, and a point's peer as the data point attribute
 * peer.service, so that the peer's OTLP parser gives back the same points.
 * Returns SM_OK or SM_ENOMEM. */
int node_sim_otlp_metrics(const struct cbn_metric_point *points,
                          size_t n,
                          uint64_t start_ns,
                          char **out,
                          size_t *len);

/* `sagemesh sim`: the command (see sim_cli.c), and its --help. */
#define NODE_SIM_HELP                                                          \
    "Usage: sagemesh sim [--topology chain|fanout|social|FILE] [--duration "   \
    "D]\n"                                                                     \
    "                    [--seed N] [--sampling P] [--start UNIX_SECONDS]\n"   \
    "                    [--faults auto|none|FILE] (--out DIR | --peer "       \
    "HOST:PORT...)\n"                                                          \
    "Simulates a microservice application request by request (queues of\n"     \
    "worker threads, cores and disks per replica, blocking calls that carry\n" \
    "back-pressure upstream, Poisson load with a diurnal swing and noise),\n"  \
    "injects faults, and produces the telemetry real SDKs and exporters\n"     \
    "would: OTLP/HTTP JSON traces (head-sampled) and metrics (cAdvisor and\n"  \
    "blackbox names, every replica every scrape), in event time, so hours\n"   \
    "take seconds. The same flags and seed give the same bytes.\n"             \
    "  --topology NAME|FILE  chain (6 tiers), fanout (frontend and 5 "         \
    "parallel\n"                                                               \
    "                        leaves), social (DeathStarBench-like, 28\n"       \
    "                        services), or a topology file (default social;\n" \
    "                        --print-topology shows one in the file format)\n" \
    "  --duration D          simulated time: 2h, 90m, 30s or seconds\n"        \
    "                        (default 1h)\n"                                   \
    "  --seed N              random seed (default 1)\n"                        \
    "  --sampling P          share of traces kept, (0, 1] (default 0.01);\n"   \
    "                        metrics always count every request\n"             \
    "  --start UNIX_SECONDS  event time of the start (default 1700028000,\n"   \
    "                        2023-11-15T06:00:00Z)\n"                          \
    "  --rate RPS            mean requests per second (default: topology's)\n" \
    "  --scrape D            metric scrape interval (default 15s)\n"           \
    "  --faults auto|none|FILE\n"                                              \
    "                        auto (default): a random schedule of faults\n"    \
    "                        (cpu, memory, network, disk, threadpool, lock,\n" \
    "                        several services at once, minor ones, load\n"     \
    "                        spikes) with normal operation between them;\n"    \
    "                        FILE: lines 'at=SECONDS for=SECONDS kind=KIND\n"  \
    "                        service=NAME magnitude=M [replica=N] [group=N]\n" \
    "                        [expect=0|1]', times from the start\n"            \
    "  --clean D             fault-free prefix of an auto schedule, for\n"     \
    "                        training (default a quarter of the duration)\n"   \
    "  --cases-per-hour N    cases of an auto schedule (default 6)\n"          \
    "  --out DIR             write DIR/host-H/NNNNNNNN-traces.json and\n"      \
    "                        -metrics.json (request bodies, numbered in the\n" \
    "                        order they were made), DIR/topology.txt, and\n"   \
    "                        DIR/labels.json: the faults with their "          \
    "service,\n"                                                               \
    "                        resource, times, magnitude and peak p99, and "    \
    "the\n"                                                                    \
    "                        exact frontend p99 of every 30 s window\n"        \
    "  --peer HOST:PORT      POST each host's bodies to /v1/traces and\n"      \
    "                        /v1/metrics of its peer (repeatable: host H "     \
    "goes\n"                                                                   \
    "                        to the (H mod N)-th peer); with --out too, "      \
    "both\n"                                                                   \
    "  --timeout SECONDS     bound on each POST (default 5); 429 and 503 "     \
    "are\n"                                                                    \
    "                        retried\n"                                        \
    "  --batch N             spans per traces body at most (default 5000)\n"   \
    "Topology files: 'sagemesh sim --print-topology --topology social' "       \
    "shows\n"                                                                  \
    "the format (hosts, rate, qos-target-ms, service, op, call, entry "        \
    "lines);\n"                                                                \
    "node/sim.h documents it. Errors name the line.\n"                         \
    "Exit status: 0 ok, 1 failed, 2 usage.\n"
int node__cmd_sim(int argc, char **argv, FILE *out, FILE *err);

#endif /* SM_NODE_SIM_H */
