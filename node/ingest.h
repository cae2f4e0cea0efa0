/* Telemetry ingest in node/: batches of spans and points, the parsers that
 * fill them, and the mapping of Prometheus samples to services
 * (node-private). */
#ifndef SM_NODE_INGEST_H
#define SM_NODE_INGEST_H

#include <stddef.h>
#include <stdint.h>

#include "base/arena.h"
#include "base/err.h"
#include "cbn/cbn.h"
#include "node/prom.h"

/* ---- Batches --------------------------------------------------------------
 *
 * A parsed request body: records plus the strings they point to, all in
 * one arena. A parser either fills a batch completely or fails and leaves
 * it to be reset; the aggregator then takes the whole batch or nothing. */

struct node_spans
{
    struct sm_arena arena; /* strings */
    struct cbn_span *v;
    size_t n, cap;
};

struct node_points
{
    struct sm_arena arena;
    struct cbn_metric_point *v;
    size_t n, cap;
};

/* Initialise with a byte limit on the arena (0: none); free with _free. */
void node_spans_init(struct node_spans *b, size_t limit);
void node_spans_reset(struct node_spans *b);
void node_spans_free(struct node_spans *b);
/* Returns a zeroed new record, or NULL on out of memory. */
struct cbn_span *node_spans_add(struct node_spans *b);

void node_points_init(struct node_points *b, size_t limit);
void node_points_reset(struct node_points *b);
void node_points_free(struct node_points *b);
struct cbn_metric_point *node_points_add(struct node_points *b);

/* ---- Prometheus samples to metric points --------------------------------- */

/* Which labels name the service of a sample, in order of preference. */
struct node_service_labels
{
    const char *const *names;
    size_t n;
};

/* The default: container, pod, name, service, job, groupname (the last for
 * process-exporter). */
extern const struct node_service_labels node_default_service_labels;

/* Turns one scraped sample into a metric point appended to @out, or into
 * nothing (returns SM_OK without adding) when it carries no usable value:
 * histogram buckets and summary quantiles (their _sum and _count are kept),
 * NaN and infinite values, samples with none of the service labels when
 * there is no @default_service.
 *
 * service  = the first present label of @labels, else @default_service
 *            (may be NULL; e.g. a node_exporter's host-wide metrics);
 * instance = the "instance" label, else @target (the scraped host:port);
 * name     = the metric name, plus its non-identity labels in canonical
 *            order, e.g. node_cpu_seconds_total{mode="idle"}, so that
 *            different things measured under one name stay apart while
 *            per-core, per-device and per-replica series pool into one
 *            distribution;
 * labels   = all labels but the service label, canonical (rate series);
 * peer     = the "peer_service" label, if any (per-link metrics);
 * time     = the sample's timestamp, else @scrape_ns;
 * cumulative for counters (and untyped *_total).
 * Returns SM_ENOMEM when the batch cannot grow (arena limit included). */
int node_prom_to_point(const struct node_prom_sample *sample,
                       const struct node_service_labels *labels,
                       const char *default_service,
                       const char *target,
                       uint64_t scrape_ns,
                       struct node_points *out);

/* ---- Span fields shared by the trace parsers ------------------------------
 */

/* Decodes a trace or span id into @out (@n = 16 or 8 bytes) from hex (any
 * case; shorter ids are left-padded with zeros, as Jaeger's "2") or, for
 * exporters that send protobuf's JSON mapping, from base64 of exactly @n
 * bytes. Returns SM_OK or SM_EMALFORMED. */
int node_decode_id(const char *text, size_t len, uint8_t *out, size_t n);

/* Parses a non-negative decimal integer that fits in 64 bits (OTLP sends
 * them as strings or numbers). Returns SM_OK or SM_EMALFORMED. */
int node_parse_u64(const char *text, size_t len, uint64_t *out);

struct node_json;

/* Reads a span's start time (member @start_key) and optional "duration",
 * both in microseconds (Zipkin and Jaeger), into @s's start_ns and end_ns.
 * Returns SM_OK, or SM_EMALFORMED with the reason ("timestamp is missing",
 * ...) in @why, a buffer of SM_ERRMSG_SIZE bytes; @s is then untouched. */
int node_span_read_us(struct cbn_span *s,
                      const struct node_json *span,
                      const char *start_key,
                      char *why);

/* The attributes of one span that naming and pairing need, as the parser
 * met them (borrowed; NULL when absent). */
struct node_span_attrs
{
    const char *http_route;
    const char *url_path; /* url.path, else http.target (path part) */
    const char *rpc_service, *rpc_method;
    const char *peer_service;
    const char *server_address, *server_port; /* or net.peer.name/port */
    const char *url_full; /* url.full or http.url: host fallback */
    const char *instance; /* service.instance.id (resource) */
    int error;            /* error=true or otel.status_code=ERROR */
    int status_5xx;       /* http.response.status_code (or the old
                             http.status_code) >= 500: an error on a SERVER
                             span (on a CLIENT span the callee failed) */
};

/* Records one attribute into @a if it is one of those above; @value is
 * borrowed and must outlive @a's use. */
void node_span_attr(struct node_span_attrs *a,
                    const char *key,
                    const char *value);

/* Fills @s->operation and, for CLIENT spans, @s->peer from @a and the span
 * @name by the naming rule of DESIGN.md section 7 (http.route, else
 * url.path/http.target, else rpc.service/rpc.method, else the name), with
 * strings copied into @arena. Returns SM_OK or SM_ENOMEM. */
int node_span_finish(struct cbn_span *s,
                     const struct node_span_attrs *a,
                     const char *name,
                     struct sm_arena *arena);

/* ---- Trace and metric parsers ----------------------------------------------
 *
 * Each parses one request body (borrowed) completely into @out, or fails
 * with SM_EMALFORMED and a message for the client in @errmsg (the batch is
 * then to be discarded), SM_ETOOBIG past the batch's arena limit, or
 * SM_ENOMEM. Unknown fields are ignored. Spans without a service name get
 * "unknown_service" as the OpenTelemetry SDKs do. */

/* OTLP/HTTP JSON ExportTraceServiceRequest (POST /v1/traces). */
int node_otlp_traces(const uint8_t *body,
                     size_t len,
                     struct node_spans *out,
                     char errmsg[SM_ERRMSG_SIZE]);

/* OTLP/HTTP JSON ExportMetricsServiceRequest (POST /v1/metrics): gauges and
 * sums (cumulative sums become rates); histograms contribute their
 * mean (sum/count) as a gauge. */
int node_otlp_metrics(const uint8_t *body,
                      size_t len,
                      struct node_points *out,
                      char errmsg[SM_ERRMSG_SIZE]);

/* Zipkin v2 JSON span list (POST /api/v2/spans). */
int node_zipkin_spans(const uint8_t *body,
                      size_t len,
                      struct node_spans *out,
                      char errmsg[SM_ERRMSG_SIZE]);

/* Jaeger query API JSON ({"data":[trace...]}, `sagemesh import --jaeger`). */
int node_jaeger_traces(const uint8_t *body,
                       size_t len,
                       struct node_spans *out,
                       char errmsg[SM_ERRMSG_SIZE]);

#endif /* SM_NODE_INGEST_H */
