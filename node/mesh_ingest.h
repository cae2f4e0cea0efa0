/* Telemetry in the mesh (node-private): spans routed by trace id, and
 * windows merged from every peer's part.
 *
 * A client span and its server span usually arrive at different peers (each
 * host's collector exports to the peer on its host). Every span goes to the
 * peer that owns its trace (rendezvous hashing over the members that are
 * up, node/span_route.h), whose aggregator pairs client and server spans
 * into RPC edges. Metric points stay on the peer they arrive at. Each
 * peer's aggregator so holds part of every window; when a window closes,
 * the part goes to the leader in sketch form and the leader merges the
 * parts into the window (node/window_merge.h), which it then delivers
 * like a window it closed itself.
 *
 * Nothing is dropped silently: spans whose owner cannot be reached stay on
 * the peer they arrived at (their pairs may then be missed: the edge is
 * inferred from the client side), spans an aggregator refuses are counted
 * and logged, and parts too late to merge, refused or dropped are counted
 * and logged (node/window_merge.h). Spans sent to a peer in the seconds
 * before the log records it down are lost with it.
 *
 * Runs on the peer's loop thread. */
#ifndef SM_NODE_MESH_INGEST_H
#define SM_NODE_MESH_INGEST_H

#include <stddef.h>
#include <stdint.h>

#include "base/clock.h"
#include "cbn/cbn.h"
#include "node/mesh.h"
#include "node/textbuf.h"
#include "node/window_merge.h"

struct node_mesh_ingest_config
{
    struct cbn_agg *agg;    /* the peer's aggregator, borrowed */
    struct node_mesh *mesh; /* borrowed; outlives the ingest */
    const struct sm_clock *clock;
    uint64_t wait_ms; /* longest wait for missing parts; 0 -> 5000 */
    /* This peer's window and QoS settings: a leader refuses parts closed
     * with others (node_wmerge_config). */
    uint64_t window_ns;
    int qos_configured;
    double qos_target_ms, qos_percentile;
    void *arg;
    /* A merged window (this peer leads); the callee owns @w. */
    void (*deliver)(void *arg, struct cbn_window *w);
    /* The newest window end this peer already holds (its own log, windows
     * replicated to it): a new leader does not deliver those again. */
    uint64_t (*newest_window)(void *arg);
    /* This peer has just become the leader (may be NULL): it takes over
     * the windows its predecessor merged and may not have diagnosed. */
    void (*on_lead)(void *arg);
};

struct node_mesh_ingest_stats
{
    uint64_t spans_local;   /* owned here, added to this aggregator */
    uint64_t spans_out;     /* sent to the peer owning their trace */
    uint64_t spans_kept;    /* owner unreachable: added here instead */
    uint64_t spans_in;      /* received from other peers, added */
    uint64_t spans_refused; /* received, or kept here, and refused by
                               the aggregator (back-pressure; spans of
                               closed windows count as late there) */
    uint64_t batches_out, batches_in, batches_malformed;
    uint64_t bytes_out, bytes_in;
    struct node_wmerge_stats merge;
};

struct node_mesh_ingest;

/* Creates the ingest (copies @config). Returns SM_OK or SM_ENOMEM. */
int node_mesh_ingest_new(const struct node_mesh_ingest_config *config,
                         struct node_mesh_ingest **out);

/* Frees @mi and the window parts it holds; NULL is a no-op. */
void node_mesh_ingest_free(struct node_mesh_ingest *mi);

/* Adds a parsed batch (borrowed): the spans this peer owns go to its
 * aggregator as one all-or-nothing batch first, and its result is
 * returned (cbn_agg_add_spans: SM_EMALFORMED, SM_EAGAIN, SM_ENOMEM change
 * nothing, and nothing is sent); then the others go to their owners. */
int node_mesh_ingest_spans(struct node_mesh_ingest *mi,
                           const struct cbn_span *spans,
                           size_t n);

/* @n metric points (borrowed) were added to the aggregator: this peer is
 * busy, and their services arrived here. */
void node_mesh_ingest_points(struct node_mesh_ingest *mi,
                             const struct cbn_metric_point *points,
                             size_t n);

/* The services whose telemetry arrived at this peer from outside (spans
 * and points it was sent, before routing), with how many records, up to
 * NODE_INGEST_SERVICES_MAX: where each service's shard belongs. Borrowed
 * views into @mi, valid until its next call. Returns how many. */
#define NODE_INGEST_SERVICES_MAX 256
size_t node_mesh_ingest_services(const struct node_mesh_ingest *mi,
                                 const char **names,
                                 uint64_t *counts,
                                 size_t cap);

/* One TP_MSG_SPANS or TP_MSG_PARTIAL body from @peer (borrowed). */
void node_mesh_ingest_recv(struct node_mesh_ingest *mi,
                           const char *peer,
                           int type,
                           const void *data,
                           size_t len);

/* Closes the windows the watermark allows (@all: every open one) into
 * parts for the leader, then ticks the merge. Returns the number of
 * windows closed here, or a negative SM_ENOMEM (retried next time). */
int node_mesh_ingest_close(struct node_mesh_ingest *mi, int all);

/* `sagemesh flush`: closes every open window here and asks every other
 * member that is up to do the same. Returns as node_mesh_ingest_close. */
int node_mesh_ingest_flush(struct node_mesh_ingest *mi);

/* At shutdown: closes every open window into parts, sends them, and a
 * leader delivers every window it is merging. */
void node_mesh_ingest_stop(struct node_mesh_ingest *mi);

void node_mesh_ingest_stats(const struct node_mesh_ingest *mi,
                            struct node_mesh_ingest_stats *out);

/* Appends ,"routing":{...},"merge":{...} for /v1/status. */
void node_mesh_ingest_status_json(const struct node_mesh_ingest *mi,
                                  struct node_text *b);

#endif /* SM_NODE_MESH_INGEST_H */
