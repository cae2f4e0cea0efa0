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
 * NaN and infinite values, samples with none of the service labels.
 *
 * service  = the first present label of @labels;
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
                       const char *target,
                       uint64_t scrape_ns,
                       struct node_points *out);

#endif /* SM_NODE_INGEST_H */
