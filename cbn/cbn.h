/* cbn: windows, sketches, RPC graph and the Causal Bayesian Network. */
#ifndef SM_CBN_H
#define SM_CBN_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

/* ---- Quantile sketch --------------------------------------------------
 *
 * A mergeable relative-error quantile sketch (DDSketch, Masson et al., VLDB
 * 2019). Values are counted in logarithmic buckets of ratio
 * gamma = (1 + a) / (1 - a), so any quantile it returns is within relative
 * error a of the exact value of that rank, whatever the distribution, and two
 * sketches of the same accuracy merge by adding bucket counts: replicas and
 * peers merge latency and metric distributions without shipping samples.
 *
 * Quantile convention: quantile(q) estimates the element of rank
 * floor(q * (n - 1)) (0-based) of the sorted input.
 *
 * Memory is bounded by max_bins buckets per sign. When a sketch would need
 * more, the buckets of the smallest magnitudes are collapsed into one, so
 * the high quantiles (the tail we care about) stay accurate and only the
 * lowest ones lose precision. With a = 0.01 and 2048 bins a sketch spans 17
 * decades, e.g. 1 ns to 10^8 s, without collapsing.
 *
 * Values of magnitude below CBN_SKETCH_MIN_VALUE count as zero. NaN and
 * infinities are rejected. A sketch is not thread-safe. */
struct cbn_sketch;

#define CBN_SKETCH_MIN_VALUE        1e-9
#define CBN_SKETCH_DEFAULT_ACCURACY 0.01
#define CBN_SKETCH_DEFAULT_MAX_BINS 2048u

/* Creates an empty sketch with relative accuracy @accuracy (0 < a < 1, e.g.
 * 0.01 for 1%) and at most @max_bins buckets per sign (>= 16). On success
 * stores a sketch owned by the caller (cbn_sketch_free) in @out and returns
 * SM_OK; returns SM_EINVAL for bad parameters or SM_ENOMEM, leaving @out
 * untouched. */
int cbn_sketch_new(double accuracy, uint32_t max_bins, struct cbn_sketch **out);

/* Frees @sketch; NULL is a no-op. */
void cbn_sketch_free(struct cbn_sketch *sketch);

/* Counts @value @count times. Returns SM_OK, SM_EINVAL for a non-finite value
 * or a zero count, SM_ERANGE if the total count would overflow, or
 * SM_ENOMEM; on error the sketch is unchanged. */
int cbn_sketch_add(struct cbn_sketch *sketch, double value, uint64_t count);

/* Adds every value counted in @src to @dst. Both must have the same accuracy
 * (SM_EINVAL otherwise). Returns SM_OK, SM_ERANGE on count overflow, or
 * SM_ENOMEM; on error @dst is unchanged. @src is not modified. */
int cbn_sketch_merge(struct cbn_sketch *dst, const struct cbn_sketch *src);

/* Empties @sketch, keeping its parameters and buffers. */
void cbn_sketch_clear(struct cbn_sketch *sketch);

/* Returns the number of values counted. */
uint64_t cbn_sketch_count(const struct cbn_sketch *sketch);

/* Returns the estimate of quantile @q (clamped to [0, 1]), or NaN when the
 * sketch is empty. Exact for q = 0 and q = 1 (the minimum and maximum are
 * tracked exactly). */
double cbn_sketch_quantile(const struct cbn_sketch *sketch, double q);

/* Returns the exact sum of the values counted (NaN when empty). */
double cbn_sketch_sum(const struct cbn_sketch *sketch);

/* Returns the accuracy the sketch was created with. */
double cbn_sketch_accuracy(const struct cbn_sketch *sketch);

/* Serialises @sketch into a new buffer owned by the caller (sm_free),
 * storing it in @buf and its length in @len. Returns SM_OK or SM_ENOMEM
 * (outputs untouched). The format is versioned, little-endian and
 * platform-independent. */
int cbn_sketch_encode(const struct cbn_sketch *sketch,
                      uint8_t **buf,
                      size_t *len);

/* Parses @len bytes at @buf (borrowed) into a new sketch owned by the caller,
 * refusing more than @max_bins buckets per sign. Returns SM_OK,
 * SM_EMALFORMED for anything that is not exactly one valid encoding
 * (truncated, trailing bytes, bad counts, bad parameters),
 * SM_EUNSUPPORTED for an unknown version, SM_ETOOBIG past @max_bins, or
 * SM_ENOMEM. Allocation is bounded by @len: a small hostile input cannot
 * make it allocate much. */
int cbn_sketch_decode(const uint8_t *buf,
                      size_t len,
                      uint32_t max_bins,
                      struct cbn_sketch **out);

/* ---- Resource classes ---------------------------------------------------
 *
 * Every metric belongs to a resource class, the unit a diagnosis names and an
 * actuator acts on. CBN_RES_UNKNOWN is for a culprit whose resource could not
 * be singled out. */
enum cbn_resource {
    CBN_RES_CPU,
    CBN_RES_MEMORY,
    CBN_RES_NETWORK,
    CBN_RES_DISK,
    CBN_RES_LLC,
    CBN_RES_OTHER,
    CBN_RES_UNKNOWN,
};
#define CBN_RES_COUNT 7

/* Returns "cpu", "memory", "network", "disk", "llc", "other" or "unknown". */
const char *cbn_resource_name(enum cbn_resource res);

/* Parses a name returned by cbn_resource_name(). Returns SM_OK or SM_EINVAL
 * (@res untouched). */
int cbn_resource_parse(const char *name, enum cbn_resource *res);

/* Classifies a metric by its name with the default table of well-known
 * exporter names (DESIGN.md section 3): container_cpu_* and
 * namedprocess_namegroup_cpu_* -> cpu, container_memory_* -> memory,
 * container_network_*, probe_* -> network, container_fs_* -> disk,
 * node_* by subsystem (node_cpu_ cpu, node_memory_ memory, node_network_
 * and node_netstat_ network, node_disk_ and node_filesystem_ disk, ...),
 * *llc* / resctrl names -> llc, anything else -> other. Overrides are
 * checked first: the longest matching prefix among @overrides wins. */
struct cbn_resource_rule
{
    const char *prefix; /* metric-name prefix, borrowed */
    enum cbn_resource resource;
};
enum cbn_resource cbn_resource_classify(
    const char *metric,
    const struct cbn_resource_rule *overrides,
    size_t n_overrides);

/* ---- Telemetry in -------------------------------------------------------
 *
 * Parsers (OTLP JSON, Zipkin, Jaeger, Prometheus, in node/) turn what they
 * read into these plain records; the aggregator below is all that consumes
 * them. All strings are borrowed, NUL-terminated, and only need to live
 * for the duration of the call that receives them. */

enum cbn_span_kind {
    CBN_SPAN_UNSPECIFIED = 0,
    CBN_SPAN_INTERNAL = 1,
    CBN_SPAN_SERVER = 2,
    CBN_SPAN_CLIENT = 3,
    CBN_SPAN_PRODUCER = 4,
    CBN_SPAN_CONSUMER = 5,
};

struct cbn_span
{
    uint8_t trace_id[16];
    uint8_t span_id[8];
    uint8_t parent_id[8]; /* all zero for a root span */
    uint64_t start_ns;    /* Unix epoch, ns */
    uint64_t end_ns;      /* >= start_ns */
    enum cbn_span_kind kind;
    int error;             /* status ERROR, or an error tag */
    const char *service;   /* service.name; never empty */
    const char *instance;  /* service.instance.id, "" when unknown */
    const char *operation; /* by the naming rule of DESIGN.md section 7 */
    const char *peer;      /* CLIENT spans: the callee as the caller names it
                              (peer.service, else server.address[:port]), ""
                              when unknown; the edge's fallback callee */
};

/* Whether @s is a span the aggregator takes: a service, an end not before
 * its start, a known kind. Returns SM_OK or SM_EMALFORMED. */
int cbn_span_check(const struct cbn_span *s);

/* One metric observation. Cumulative values (Prometheus counters, OTLP
 * cumulative sums) are turned into per-second rates by the aggregator from
 * consecutive points of the same series (service, instance, name, peer,
 * labels); a counter that goes down is taken to have restarted from 0. */
struct cbn_metric_point
{
    const char *service;  /* never empty */
    const char *instance; /* replica; "" when one per service */
    const char *name; /* metric name, e.g. container_cpu_usage_seconds_total */
    const char *labels; /* other identifying labels, canonical "k=v,k=v" or
                           "" (keeps e.g. per-CPU series apart for rates) */
    const char *peer;   /* per-link metrics (peer.service): the callee; "" */
    uint64_t time_ns;
    double value;
    int cumulative;
};

/* ---- Windows ------------------------------------------------------------
 *
 * A closed window is the model's unit of data: per service its latency (Y)
 * and metric (X) percentile vectors, per RPC edge the client-side and
 * server-side latency vectors and the network delay, the request and error
 * counts, and the QoS verdict. Percentile vectors hold CBN_N_PCT values at
 * cbn_percentiles[] (in percent), NaN where there was no data. Latencies are
 * in milliseconds; metrics in their own unit (rates per second for
 * cumulative ones). */
#define CBN_N_PCT 8
extern const double cbn_percentiles[CBN_N_PCT]; /* 10 25 50 75 90 95 99 99.9 */

struct cbn_window_metric
{
    const char *name;
    const char *peer; /* "" unless a per-link metric */
    enum cbn_resource resource;
    uint32_t samples; /* observations (replicas x scrapes) */
    float pct[CBN_N_PCT];
};

struct cbn_window_service
{
    const char *name;
    uint64_t requests; /* SERVER spans ending in the window */
    uint64_t errors;
    float latency_ms[CBN_N_PCT]; /* server-side */
    uint32_t n_metrics;
    struct cbn_window_metric *metrics; /* sorted by (name, peer) */
};

struct cbn_window_edge
{
    const char *caller;
    const char *callee;
    int inferred;    /* callee named from the client side only: the
                        server side was sampled out or uninstrumented */
    uint64_t calls;  /* CLIENT spans ending in the window */
    uint64_t paired; /* of which matched with their SERVER span */
    float client_ms[CBN_N_PCT];
    float server_ms[CBN_N_PCT];  /* NaN when nothing was paired */
    float network_ms[CBN_N_PCT]; /* per-call client - server, paired only */
};

struct cbn_window
{
    uint64_t start_ns, end_ns; /* [start, end) in event time */
    uint32_t n_services;
    struct cbn_window_service *services; /* sorted by name */
    uint32_t n_edges;
    struct cbn_window_edge *edges; /* sorted by (caller, callee) */
    /* The QoS check of the window: the frontend's latency at the configured
     * percentile (of its SERVER spans, or of the configured operation's)
     * against the target. NaN latency and violated = 0 when it had no
     * requests. */
    double qos_latency_ms;
    double qos_target_ms;
    double qos_percentile;
    int qos_violated;
    uint64_t late_spans; /* arrived after the window closed: dropped */
    uint64_t late_points;
};

/* Looks up a service or an edge of @w by name (binary search); NULL when
 * absent. */
const struct cbn_window_service *cbn_window_service(const struct cbn_window *w,
                                                    const char *name);
const struct cbn_window_edge *cbn_window_edge(const struct cbn_window *w,
                                              const char *caller,
                                              const char *callee);

/* Frees a window made by the aggregator or cbn_window_decode(); NULL is a
 * no-op. All of a window's strings and arrays live in one allocation. */
void cbn_window_free(struct cbn_window *w);

/* Serialises @w into a new buffer owned by the caller (sm_free). Returns
 * SM_OK or SM_ENOMEM. Versioned, little-endian, platform-independent. */
int cbn_window_encode(const struct cbn_window *w, uint8_t **buf, size_t *len);

/* Parses one encoding from @len bytes at @buf (borrowed) into a new window
 * owned by the caller. Returns SM_OK, SM_EMALFORMED (anything but exactly
 * one valid encoding), SM_EUNSUPPORTED (unknown version) or SM_ENOMEM.
 * Allocation is bounded by a small multiple of @len. */
int cbn_window_decode(const uint8_t *buf, size_t len, struct cbn_window **out);

/* ---- Aggregator: spans and points in, closed windows out ---------------
 *
 * Event time is cut into windows of window_ns aligned to the Unix epoch. The
 * watermark is the largest event time seen minus lateness_ns; a window
 * closes when the watermark passes its end (or on cbn_agg_flush). Data for a
 * window that is still open counts, however late; data for a closed window
 * is dropped and counted (late_spans, late_points and the stats), never
 * silently.
 *
 * RPC edges: a CLIENT span of service p is paired with the SERVER span of
 * service c whose parent it is, in whichever order and batch they arrive,
 * as long as both arrive before the client span's window closes. The edge
 * p -> c then gets the client's and the server's duration and their
 * difference (network and queueing delay). A CLIENT span still unpaired
 * when its window closes counts for the edge p -> peer (inferred) when it
 * names a peer, else for no edge. Spans and edges count in the window of
 * their end time (the client's, for an edge).
 *
 * Batches are all or nothing: cbn_agg_add_spans() and
 * cbn_agg_add_metrics() validate the whole batch first, reserve everything
 * they need, and only then change state, so a batch that fails (malformed,
 * out of memory) changes nothing. Not thread-safe: one loop owns it. */
struct cbn_agg;

struct cbn_agg_config
{
    uint64_t window_ns;        /* 0 -> 30 s */
    uint64_t lateness_ns;      /* 0 -> none */
    const char *qos_service;   /* frontend; NULL or "": no QoS check */
    const char *qos_operation; /* NULL or "": all its SERVER spans */
    double qos_percentile;     /* 0 -> 99 */
    double qos_target_ms;      /* > 0 when qos_service is set */
    size_t max_pending;        /* unpaired spans kept for pairing; 0 -> 1 M;
                                  beyond it a batch is refused with SM_EAGAIN
                                  (back-pressure) */
    size_t max_open_windows;   /* 0 -> 64; data far in the future is refused
                                  per span (counted as rejected) */
    const struct cbn_resource_rule *resource_overrides; /* copied */
    size_t n_resource_overrides;
    uint64_t hash_seed; /* random per process: keys come from the network */
};

struct cbn_agg_stats
{
    uint64_t spans_accepted, spans_late, spans_rejected;
    uint64_t points_accepted, points_late, points_rejected;
    uint64_t windows_open, windows_closed;
    uint64_t pending_spans; /* waiting for their RPC partner */
    uint64_t watermark_ns;
};

/* Creates an aggregator with a copy of @config (strings copied). Returns
 * SM_OK, SM_EINVAL (inconsistent config, e.g. a QoS service without a
 * target) or SM_ENOMEM. */
int cbn_agg_new(const struct cbn_agg_config *config, struct cbn_agg **out);

/* Frees @agg and everything still open; NULL is a no-op. */
void cbn_agg_free(struct cbn_agg *agg);

/* Adds @n spans as one batch. Returns SM_OK; SM_EMALFORMED when a span is
 * invalid (empty service, end before start), with nothing applied; SM_EAGAIN
 * when pairing memory is full (back-pressure, nothing applied); SM_ENOMEM
 * (nothing applied). Spans for closed windows are not errors: they are
 * counted as late. */
int cbn_agg_add_spans(struct cbn_agg *agg,
                      const struct cbn_span *spans,
                      size_t n);

/* Adds @n metric points as one batch, with the same all-or-nothing rule. */
int cbn_agg_add_metrics(struct cbn_agg *agg,
                        const struct cbn_metric_point *points,
                        size_t n);

/* Receives a closed window; ownership passes to the callback (free it with
 * cbn_window_free). Windows arrive in order of start time. */
typedef void (*cbn_window_cb)(void *arg, struct cbn_window *window);

/* Closes every window whose end is at or before the watermark and passes
 * each to @cb. Returns SM_OK or SM_ENOMEM (the window stays open and is
 * retried on the next call). */
int cbn_agg_close_ready(struct cbn_agg *agg, cbn_window_cb cb, void *arg);

/* Closes every open window now (`sagemesh flush`, shutdown) and moves the
 * watermark past them, so data for them is late from now on. */
int cbn_agg_flush(struct cbn_agg *agg, cbn_window_cb cb, void *arg);

void cbn_agg_stats(const struct cbn_agg *agg, struct cbn_agg_stats *out);

/* Moves event time forward to at least @event_ns without data, so that
 * windows close on a quiet system. The peer calls it with the wall clock
 * only when the data it receives is live (its event time is near the wall
 * clock), never while history is being replayed. */
void cbn_agg_advance(struct cbn_agg *agg, uint64_t event_ns);

/* Declares every window ending at or before @end_ns closed (they are in the
 * window log already): data for them counts as late. Call before adding
 * data, after replaying the log at start-up. */
void cbn_agg_resume(struct cbn_agg *agg, uint64_t end_ns);

/* ---- Partial windows ------------------------------------------------------
 *
 * In the mesh, spans are routed by trace id to several peers, so each peer's
 * aggregator sees only part of a window. A partial window is one peer's part
 * of a closed window in sketch form, keyed by names:
 *   - the window [start, end), the QoS configuration (target, percentile and
 *     whether a QoS service is configured) and the late span and point
 *     counts;
 *   - per service: requests, errors and the latency sketch;
 *   - per metric (service, name, peer or "", resource class): samples and
 *     the value sketch;
 *   - per RPC edge (caller, callee, inferred): calls, paired calls and the
 *     client, server and network sketches;
 *   - the QoS sketch (the frontend's latencies the QoS check reads).
 * Only entries that counted something are kept (requests, samples or calls
 * above 0).
 *
 * Partials of one window merge exactly: counts add, and sketches add bucket
 * counts (cbn_sketch_merge), so any merge order gives the same quantiles.
 * When each trace's spans went to one peer and each metric series to one
 * peer, merging every peer's part and finishing it yields the window that a
 * single aggregator fed everything would have closed, byte for byte in
 * cbn_window_encode(). (Sketch sums are floating point and may differ in the
 * last bits with the merge order; windows hold quantiles, which do not.)
 *
 * The aggregator's own windows take the same path: cbn_agg_close_ready()
 * closes each window to a partial and finishes it with cbn_partial_finish().
 *
 * Counts never saturate: a merge whose sums would overflow (64-bit counts,
 * 32-bit metric samples, sketch counts) fails with SM_ERANGE and changes
 * nothing, so a merged count is either exact or refused.
 *
 * A partial is not thread-safe; distinct partials are independent. */
struct cbn_partial;

/* Receives a closed window in sketch form; ownership passes to the callback
 * (free it with cbn_partial_free). Partials arrive in order of start time. */
typedef void (*cbn_partial_cb)(void *arg, struct cbn_partial *partial);

/* Closes windows by the same rules as cbn_agg_close_ready() (the watermark)
 * and cbn_agg_flush() (all of them, moving the watermark past them), but
 * hands each closed window to @cb as a partial. Its sketches are moved out of
 * the aggregator, not copied. Returns SM_OK or SM_ENOMEM: then the window
 * stays open, @cb is not called for it, and the next call retries it. */
int cbn_agg_close_ready_partial(struct cbn_agg *agg,
                                cbn_partial_cb cb,
                                void *arg);
int cbn_agg_flush_partial(struct cbn_agg *agg, cbn_partial_cb cb, void *arg);

/* Returns the start (inclusive) and end (exclusive) of @p's window, in
 * event time (ns since the Unix epoch). */
uint64_t cbn_partial_start(const struct cbn_partial *p);
uint64_t cbn_partial_end(const struct cbn_partial *p);

/* Fills the QoS configuration @p was closed with: whether a QoS service
 * was configured, its target and its percentile (what a merge requires to
 * be equal). */
void cbn_partial_qos(const struct cbn_partial *p,
                     int *configured,
                     double *target_ms,
                     double *percentile);

/* Adds @src (borrowed and unchanged; it may be @dst itself) into @dst.
 * Returns SM_OK or:
 *   - SM_EINVAL when the two are not parts of one window: a different
 *     [start, end), a different QoS configuration (target, percentile, or
 *     whether a QoS service is configured), or a metric of the same
 *     (service, name, peer) in different resource classes (the peers
 *     classify metrics with different overrides);
 *   - SM_ERANGE when a count would overflow (see above);
 *   - SM_ENOMEM.
 * On any error @dst is unchanged: the result is built aside and swapped in
 * on success. */
int cbn_partial_merge(struct cbn_partial *dst, const struct cbn_partial *src);

/* Builds the final window of @p (borrowed, unchanged) into a new window
 * owned by the caller (cbn_window_free), exactly as the aggregator builds
 * its own: the services with requests or metric samples, the edges with
 * calls (inferred calls under the names of a paired edge are folded into
 * it), the QoS latency at the configured percentile of the QoS sketch and
 * its verdict, and the late counts. Returns SM_OK or SM_ENOMEM (@out
 * untouched). */
int cbn_partial_finish(const struct cbn_partial *p, struct cbn_window **out);

/* Serialises @p into a new buffer owned by the caller (sm_free), storing it
 * in @buf and its length in @len. Returns SM_OK or SM_ENOMEM (outputs
 * untouched). The encoding is versioned, little-endian and canonical: equal
 * partials encode to equal bytes, and decoding then encoding gives back the
 * input. */
int cbn_partial_encode(const struct cbn_partial *p, uint8_t **buf, size_t *len);

/* Parses @len bytes at @buf (borrowed) into a new partial owned by the caller
 * (cbn_partial_free). Strict: returns SM_EMALFORMED for anything but exactly
 * one valid encoding (truncated, trailing bytes, unsorted or duplicate keys or
 * strings, unused strings, counts that contradict each other or their
 * sketches, empty entries, bad or non-canonical sketches),
 * SM_EUNSUPPORTED for an unknown version (of the partial or of a sketch in
 * it), SM_ETOOBIG past the limits (a sketch of more than
 * CBN_SKETCH_DEFAULT_MAX_BINS buckets per sign, more than UINT32_MAX entries
 * of a kind), or SM_ENOMEM; @out is untouched on error. Allocation is
 * bounded by a small multiple of @len, whatever the input. */
int cbn_partial_decode(const uint8_t *buf,
                       size_t len,
                       struct cbn_partial **out);

/* Frees @p and its sketches; NULL is a no-op. */
void cbn_partial_free(struct cbn_partial *p);

/* ---- The Causal Bayesian Network ----------------------------------------
 *
 * Built from the RPC graph of the windows (DESIGN.md section 3): per service
 * X (metrics) -> Z (latent) -> Y (latency), and a callee's latency is a
 * parent of its caller's latency, so CBN arrows point opposite to RPC
 * arrows. Each RPC link with a measured network delay adds a network node
 * as a further parent of the caller's latency. Services that call each other
 * in a cycle (a <-> b, or longer) are merged into one metanode, which keeps
 * the graph acyclic.
 *
 * The graph grows as windows show new services and edges, and forgets
 * services and edges not seen for age_out_windows observed windows. Its
 * version changes exactly when its structure (nodes, members, parents,
 * links) changes, so model shards keyed by it are rebuilt only when needed.
 *
 * Node order is topological with callees first (CBN roots, the backends,
 * come first and the frontend last) and stable: ties are broken by name, so
 * the same structure always yields the same order. */
struct cbn_graph;

struct cbn_graph_config
{
    unsigned age_out_windows; /* 0 -> 20 */
};

/* A latency node: one service, or a metanode of services in a call cycle.
 * Everything is owned by the graph and valid until the next
 * cbn_graph_observe() or cbn_graph_free(). */
struct cbn_graph_node
{
    const char *name; /* the service, or members joined by "+" */
    size_t n_members;
    const char *const *members; /* sorted services */
    int inferred;               /* known only as a callee named by clients */
    size_t n_parents;
    const size_t *parents; /* indexes of callee nodes, all < own index */
    size_t n_links;
    const size_t *links; /* indexes into the link list: network nodes
                            that are parents of this node */
};

/* A network node: the link caller -> callee between two services. */
struct cbn_graph_link
{
    const char *caller, *callee;
    size_t caller_node, callee_node;
};

int cbn_graph_new(const struct cbn_graph_config *config,
                  struct cbn_graph **out);
void cbn_graph_free(struct cbn_graph *graph);

/* Adds the services and edges of @w, ages out what has not been seen for
 * too long, and rebuilds the structure if it changed (then *changed = 1 and
 * the version is incremented). Returns SM_OK or SM_ENOMEM: then the
 * sightings of @w may be recorded but the structure and version are
 * unchanged (the next window rebuilds it). Observe windows in order. */
int cbn_graph_observe(struct cbn_graph *graph,
                      const struct cbn_window *w,
                      int *changed);

/* The structure version: 0 while empty, then 1, 2, ... */
uint64_t cbn_graph_version(const struct cbn_graph *graph);

size_t cbn_graph_node_count(const struct cbn_graph *graph);
const struct cbn_graph_node *cbn_graph_node(const struct cbn_graph *graph,
                                            size_t i);
size_t cbn_graph_link_count(const struct cbn_graph *graph);
const struct cbn_graph_link *cbn_graph_link(const struct cbn_graph *graph,
                                            size_t i);

/* Returns the index of the node holding @service, or SIZE_MAX. */
size_t cbn_graph_find(const struct cbn_graph *graph, const char *service);

/* ---- Normal values -------------------------------------------------------
 *
 * The "normal" state a counterfactual restores a service to: for each of
 * its metrics, per percentile, the median over windows that met QoS (every
 * window when no QoS check is configured; windows without frontend
 * requests never count). Also, per RPC link, the zero-load network delay:
 * the median of the per-window p50 client-minus-server difference over the
 * link's low-load windows (call count at or below the link's 25th
 * percentile of calls), the calibration the network nodes are read
 * against. */
struct cbn_normals;

int cbn_normals_new(struct cbn_normals **out);
void cbn_normals_free(struct cbn_normals *normals);

/* Takes @w into account. SM_OK or SM_ENOMEM (nothing taken into account). */
int cbn_normals_observe(struct cbn_normals *normals,
                        const struct cbn_window *w);

/* Fills @pct with the normal value of (@service, @metric, @peer) and
 * @windows (may be NULL) with the number of windows behind it. Returns
 * SM_OK or SM_ENOTFOUND when no QoS-meeting window had the metric. */
int cbn_normals_metric(const struct cbn_normals *normals,
                       const char *service,
                       const char *metric,
                       const char *peer,
                       float pct[CBN_N_PCT],
                       uint32_t *windows);

/* Stores the zero-load network delay of @caller -> @callee in @ms. Returns
 * SM_OK, or SM_ENOTFOUND before the link has 3 windows with paired calls. */
int cbn_normals_link_delay(const struct cbn_normals *normals,
                           const char *caller,
                           const char *callee,
                           double *ms);

/* ---- Window log (crash-safe, append-only) ------------------------------
 *
 * Closed windows are appended to a log of segment files under a directory,
 * so a restart replays them and a `kill -9` loses at most the windows still
 * open. The log knows nothing of window contents: a record is an opaque
 * payload plus the event time it belongs to (the window end), used for
 * retention by age.
 *
 * On disk: segment files "<dir>/<16 hex digits: first sequence>.log", each a
 * sequence of records
 *
 *   magic u32 | length u32 | time_ns u64 | crc32c u32 | payload[length]
 *
 * little-endian, magic "SMWL" (0x4C574D53), where the CRC-32C covers length,
 * time_ns and the payload. Appends go to the newest segment; a segment over
 * segment_bytes is closed and a new one begun.
 *
 * Durability: with CBN_LOG_SYNC_EVERY (default) append returns only after
 * fdatasync(2) of the segment (and of the directory when a segment was
 * created), so an acknowledged record survives a crash or power loss.
 * CBN_LOG_SYNC_NONE leaves it to the kernel (tests, benchmarks).
 *
 * Recovery: open scans every segment. A torn or corrupt tail of the newest
 * segment (a crash mid-append) is truncated away and counted in
 * torn_bytes_repaired. A bad record inside an older segment is bit rot, not
 * a crash: replay stops reading that segment there, counts
 * corrupt_records, and goes on with the next segment; nothing is deleted.
 *
 * Not thread-safe; one process per directory (an advisory lock file
 * "<dir>/LOCK" is held while open: a second opener gets SM_EEXIST). */

struct cbn_log;

enum cbn_log_sync { CBN_LOG_SYNC_EVERY, CBN_LOG_SYNC_NONE };

struct cbn_log_config
{
    const char *dir;        /* created (one level, mode 0700) if missing */
    uint64_t segment_bytes; /* rotate past this size; 0 -> 64 MiB */
    uint64_t retain_bytes;  /* total size kept by cbn_log_trim; 0: no cap */
    uint64_t retain_ns;     /* age kept by cbn_log_trim; 0: no cap */
    uint32_t max_record;    /* largest payload accepted; 0 -> 64 MiB */
    enum cbn_log_sync sync;
};

struct cbn_log_stats
{
    uint64_t records; /* readable records in the log */
    uint64_t bytes;   /* total size of the segment files */
    uint64_t segments;
    uint64_t torn_bytes_repaired; /* truncated from the tail at open */
    uint64_t corrupt_records;     /* bad records found in older segments */
    uint64_t oldest_time_ns, newest_time_ns; /* 0 when empty */
};

/* Opens (creating if needed) the log in @config->dir, scans and repairs it
 * as described above. On success stores the log in @out (close it with
 * cbn_log_close) and returns SM_OK. Errors: SM_EINVAL (bad config),
 * SM_EEXIST (another process holds the lock), SM_EPERM, SM_EIO, SM_ENOMEM;
 * @errmsg says which file and why; @out untouched. */
int cbn_log_open(const struct cbn_log_config *config,
                 struct cbn_log **out,
                 char errmsg[SM_ERRMSG_SIZE]);

/* Receives one record during replay; @payload is borrowed for the call.
 * Returning non-zero stops the replay, and cbn_log_replay() returns it. */
typedef int (*cbn_log_record_cb)(void *arg,
                                 uint64_t time_ns,
                                 const uint8_t *payload,
                                 size_t len);

/* Calls @cb for every readable record, oldest first. The callback must not
 * call append, trim or close on @log (asserted). Returns SM_OK, the
 * callback's non-zero value, SM_EIO or SM_ENOMEM. */
int cbn_log_replay(struct cbn_log *log, cbn_log_record_cb cb, void *arg);

/* Appends one record of @len bytes (borrowed) for event time @time_ns.
 * Returns SM_OK once it is durable per the sync policy; SM_ETOOBIG over
 * max_record; SM_EIO (disk full, I/O error: the partial record is truncated
 * away so the log stays appendable) with @errmsg set; SM_ENOMEM. */
int cbn_log_append(struct cbn_log *log,
                   uint64_t time_ns,
                   const uint8_t *payload,
                   size_t len,
                   char errmsg[SM_ERRMSG_SIZE]);

/* Applies retention: deletes whole segments, oldest first, while the log is
 * over retain_bytes or a segment's newest record is older than
 * @now_ns - retain_ns. Never deletes the segment being appended to. Returns
 * SM_OK or SM_EIO. */
int cbn_log_trim(struct cbn_log *log,
                 uint64_t now_ns,
                 char errmsg[SM_ERRMSG_SIZE]);

/* Fills @out with the log's figures. */
void cbn_log_stats(const struct cbn_log *log, struct cbn_log_stats *out);

/* Closes the files, releases the lock and frees @log; NULL is a no-op. */
void cbn_log_close(struct cbn_log *log);

#endif /* SM_CBN_H */
