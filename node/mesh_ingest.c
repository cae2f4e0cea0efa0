/* Telemetry in the mesh: see mesh_ingest.h. */
#include "node/mesh_ingest.h"

#include <inttypes.h>
#include <string.h>

#include "base/alloc.h"
#include "base/err.h"
#include "base/log.h"
#include "node/ingest.h"
#include "node/span_route.h"
#include "transport/transport.h"

#define MOD "ingest"

#define NS_PER_MS 1000000u
#define IDLE_MS   1000 /* no data for this long, nothing open: idle */
#define BATCH_MAX 4096 /* spans per routed batch: well under a message */

/* A service whose telemetry arrived here. */
struct seen
{
    char name[128]; /* longer names are not counted */
    uint64_t count;
};

struct node_mesh_ingest
{
    struct node_mesh_ingest_config cfg;
    struct node_wmerge *merge;
    struct node_mesh_view view; /* refreshed before each use */
    struct node_spans routed;   /* a received batch, decoded */
    uint64_t last_data_ms;
    uint64_t closed_until; /* the watermark right after the last close:
                              every window ending by then is closed */
    int led;               /* was the leader at the last close */
    struct seen seen[NODE_INGEST_SERVICES_MAX];
    size_t n_seen;
    uint64_t refused_logged_ms;
    struct node_mesh_ingest_stats stats;
};

static uint64_t mono_ms(const struct node_mesh_ingest *mi)
{
    return sm_clock_mono_ns(mi->cfg.clock) / NS_PER_MS;
}

/* The window merge's view of the mesh, refreshed from the mesh. */
static const struct node_wmerge_view *view(struct node_mesh_ingest *mi,
                                           struct node_wmerge_view *v)
{
    node_mesh_view(mi->cfg.mesh, &mi->view);
    *v = (struct node_wmerge_view){
        .self = mi->view.self,
        .leader = mi->view.leader,
        .is_leader = mi->view.is_leader,
        .n_up = mi->view.n_up,
        .up = mi->view.up,
    };
    return v;
}

static int merge_send(void *arg, const char *peer, const void *data, size_t len)
{
    struct node_mesh_ingest *mi = arg;
    return node_mesh_send(mi->cfg.mesh, peer, TP_MSG_PARTIAL, 0, data, len);
}

static void merge_deliver(void *arg, struct cbn_window *w)
{
    struct node_mesh_ingest *mi = arg;
    mi->cfg.deliver(mi->cfg.arg, w);
}

static void merge_flush(void *arg)
{
    struct node_mesh_ingest *mi = arg;
    int n = node_mesh_ingest_close(mi, 1);
    sm_log(SM_LOG_INFO, MOD, "flushed at another peer's request", "windows=%d",
           n < 0 ? 0 : n);
}

int node_mesh_ingest_new(const struct node_mesh_ingest_config *config,
                         struct node_mesh_ingest **out)
{
    struct node_mesh_ingest *mi = sm_calloc(1, sizeof *mi);
    if (mi == NULL) {
        return SM_ENOMEM;
    }
    mi->cfg = *config;
    struct node_wmerge_config wc = {
        .wait_ms = config->wait_ms,
        .window_ns = config->window_ns,
        .check_qos = 1,
        .qos_configured = config->qos_configured,
        .qos_target_ms = config->qos_target_ms,
        .qos_percentile = config->qos_percentile,
    };
    struct node_wmerge_env env = {
        .arg = mi,
        .send = merge_send,
        .deliver = merge_deliver,
        .flush = merge_flush,
    };
    if (node_wmerge_new(&wc, &env, &mi->merge) != SM_OK) {
        sm_free(mi);
        return SM_ENOMEM;
    }
    node_spans_init(&mi->routed, 0);
    *out = mi;
    return SM_OK;
}

void node_mesh_ingest_free(struct node_mesh_ingest *mi)
{
    if (mi == NULL) {
        return;
    }
    node_wmerge_free(mi->merge);
    node_spans_free(&mi->routed);
    sm_free(mi);
}

/* Tells the merge what this peer has closed, and whether it is idle. Not
 * the watermark itself: new data moves it past windows that only close at
 * the next tick, and the leader must not take those as closed. */
static void mark(struct node_mesh_ingest *mi, int busy)
{
    struct cbn_agg_stats st;
    uint64_t now = mono_ms(mi);
    if (busy) {
        mi->last_data_ms = now;
    }
    cbn_agg_stats(mi->cfg.agg, &st);
    int idle = st.windows_open == 0 && now >= mi->last_data_ms + IDLE_MS;
    node_wmerge_mark(mi->merge, mi->closed_until, idle);
}

/* Counts @n records of @service arriving here. */
static void saw(struct node_mesh_ingest *mi, const char *service, uint64_t n)
{
    size_t len = strlen(service);
    if (len >= sizeof mi->seen[0].name) {
        return;
    }
    for (size_t i = 0; i < mi->n_seen; i++) {
        if (strcmp(mi->seen[i].name, service) == 0) {
            mi->seen[i].count += n;
            return;
        }
    }
    if (mi->n_seen < NODE_INGEST_SERVICES_MAX) {
        memcpy(mi->seen[mi->n_seen].name, service, len + 1);
        mi->seen[mi->n_seen++].count = n;
    }
}

static void saw_spans(struct node_mesh_ingest *mi,
                      const struct cbn_span *spans,
                      size_t n)
{
    for (size_t i = 0; i < n; i++) {
        saw(mi, spans[i].service, 1);
    }
}

void node_mesh_ingest_points(struct node_mesh_ingest *mi,
                             const struct cbn_metric_point *points,
                             size_t n)
{
    for (size_t i = 0; i < n; i++) {
        saw(mi, points[i].service, 1);
    }
    mark(mi, 1);
}

size_t node_mesh_ingest_services(const struct node_mesh_ingest *mi,
                                 const char **names,
                                 uint64_t *counts,
                                 size_t cap)
{
    size_t n = mi->n_seen < cap ? mi->n_seen : cap;
    for (size_t i = 0; i < n; i++) {
        names[i] = mi->seen[i].name;
        counts[i] = mi->seen[i].count;
    }
    return n;
}

/* ---- Routing ------------------------------------------------------------- */

/* Sends @n spans (pointers into the caller's batch) to @peer in batches of
 * at most BATCH_MAX. Returns the number not sent. */
static size_t send_spans(struct node_mesh_ingest *mi,
                         const char *peer,
                         const struct cbn_span *const *spans,
                         size_t n)
{
    size_t sent = 0;
    while (sent < n) {
        size_t k = n - sent < BATCH_MAX ? n - sent : BATCH_MAX;
        uint8_t *buf;
        size_t len;
        if (node_span_batch_encode(spans + sent, k, &buf, &len) != SM_OK) {
            break;
        }
        int rv = node_mesh_send(mi->cfg.mesh, peer, TP_MSG_SPANS, 0, buf, len);
        sm_free(buf);
        if (rv != SM_OK) {
            break;
        }
        mi->stats.batches_out++;
        mi->stats.bytes_out += len;
        sent += k;
    }
    return n - sent;
}

int node_mesh_ingest_spans(struct node_mesh_ingest *mi,
                           const struct cbn_span *spans,
                           size_t n)
{
    /* a view of its own: receiving (on a transport that delivers inline)
     * refreshes mi->view */
    static struct node_mesh_view routes;
    node_mesh_view(mi->cfg.mesh, &routes);
    const struct node_mesh_view *v = &routes;
    if (v->n_up <= 1 || n == 0) {
        int rv = cbn_agg_add_spans(mi->cfg.agg, spans, n);
        if (rv == SM_OK) {
            saw_spans(mi, spans, n);
            mi->stats.spans_local += n;
            mark(mi, 1);
        }
        return rv;
    }
    /* The whole batch is checked as the aggregator would before any of it
     * goes anywhere: all or nothing, for the sender's retry. */
    for (size_t i = 0; i < n; i++) {
        if (cbn_span_check(&spans[i]) != SM_OK) {
            return SM_EMALFORMED;
        }
    }
    /* Owners first: the local part is one batch, the rest by owner. */
    uint32_t *owner = sm_calloc(n, sizeof *owner);
    struct cbn_span *local = sm_calloc(n, sizeof *local);
    const struct cbn_span **remote = sm_calloc(n, sizeof *remote);
    if (owner == NULL || local == NULL || remote == NULL) {
        sm_free(owner);
        sm_free(local);
        sm_free(remote);
        return SM_ENOMEM;
    }
    size_t self = SIZE_MAX;
    for (size_t i = 0; i < v->n_up; i++) {
        self = strcmp(v->up[i], v->self) == 0 ? i : self;
    }
    size_t n_local = 0;
    for (size_t i = 0; i < n; i++) {
        size_t o = node_route_owner(spans[i].trace_id, v->up, v->n_up);
        owner[i] = (uint32_t)o;
        if (o == self) {
            local[n_local++] = spans[i];
        }
    }
    int rv = cbn_agg_add_spans(mi->cfg.agg, local, n_local);
    if (rv != SM_OK) {
        goto out;
    }
    saw_spans(mi, spans, n);
    mi->stats.spans_local += n_local;
    size_t n_kept = 0;
    for (size_t o = 0; o < v->n_up; o++) {
        if (o == self) {
            continue;
        }
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
            if (owner[i] == o) {
                remote[k++] = &spans[i];
            }
        }
        size_t unsent = k == 0 ? 0 : send_spans(mi, v->up[o], remote, k);
        mi->stats.spans_out += k - unsent;
        for (size_t i = k - unsent; i < k; i++) {
            local[n_kept++] = *remote[i];
        }
    }
    if (n_kept > 0) {
        /* The owner cannot be reached: pair what can be paired here. */
        if (cbn_agg_add_spans(mi->cfg.agg, local, n_kept) == SM_OK) {
            mi->stats.spans_kept += n_kept;
        } else {
            mi->stats.spans_refused += n_kept;
            sm_log(SM_LOG_WARN, MOD,
                   "spans for an unreachable peer were refused here too",
                   "spans=%zu", n_kept);
        }
    }
    mark(mi, 1);
out:
    sm_free(owner);
    sm_free(local);
    sm_free(remote);
    return rv;
}

static void recv_spans(struct node_mesh_ingest *mi,
                       const char *peer,
                       const void *data,
                       size_t len)
{
    char err[SM_ERRMSG_SIZE] = "";
    node_spans_reset(&mi->routed);
    mi->stats.bytes_in += len;
    int rv = node_span_batch_decode(data, len, &mi->routed, err);
    if (rv != SM_OK) {
        mi->stats.batches_malformed++;
        sm_log(SM_LOG_WARN, MOD, "a routed span batch is unreadable: dropped",
               "peer=%s error=%s cause=\"%s\"", peer, sm_errname(rv), err);
        return;
    }
    mi->stats.batches_in++;
    rv = cbn_agg_add_spans(mi->cfg.agg, mi->routed.v, mi->routed.n);
    if (rv == SM_OK) {
        mi->stats.spans_in += mi->routed.n;
        mark(mi, 1);
        return;
    }
    mi->stats.spans_refused += mi->routed.n;
    uint64_t now = mono_ms(mi);
    if (mi->refused_logged_ms == 0 || now >= mi->refused_logged_ms + 10000) {
        mi->refused_logged_ms = now ? now : 1;
        sm_log(SM_LOG_WARN, MOD, "routed spans refused by the aggregator",
               "peer=%s spans=%zu error=%s refused_total=%" PRIu64, peer,
               mi->routed.n, sm_errname(rv), mi->stats.spans_refused);
    }
}

void node_mesh_ingest_recv(struct node_mesh_ingest *mi,
                           const char *peer,
                           int type,
                           const void *data,
                           size_t len)
{
    if (type == TP_MSG_SPANS) {
        recv_spans(mi, peer, data, len);
        return;
    }
    struct node_wmerge_view v;
    uint64_t now = mono_ms(mi);
    if (mi->cfg.newest_window != NULL) {
        node_wmerge_seen(mi->merge, mi->cfg.newest_window(mi->cfg.arg));
    }
    node_wmerge_recv(mi->merge, view(mi, &v), peer, data, len, now);
    /* deliver as soon as the last part is in, not at the next tick */
    node_wmerge_tick(mi->merge, &v, now);
}

/* ---- Windows ------------------------------------------------------------- */

static void take_part(void *arg, struct cbn_partial *part)
{
    struct node_mesh_ingest *mi = arg;
    node_wmerge_add(mi->merge, part);
}

int node_mesh_ingest_close(struct node_mesh_ingest *mi, int all)
{
    struct cbn_agg_stats before, after;
    struct node_wmerge_view v;
    cbn_agg_stats(mi->cfg.agg, &before);
    int rv = all ? cbn_agg_flush_partial(mi->cfg.agg, take_part, mi)
                 : cbn_agg_close_ready_partial(mi->cfg.agg, take_part, mi);
    cbn_agg_stats(mi->cfg.agg, &after);
    if (rv == SM_OK) {
        mi->closed_until = after.watermark_ns;
    }
    mark(mi, 0);
    if (mi->cfg.newest_window != NULL) {
        node_wmerge_seen(mi->merge, mi->cfg.newest_window(mi->cfg.arg));
    }
    node_wmerge_tick(mi->merge, view(mi, &v), mono_ms(mi));
    if (v.is_leader && !mi->led && mi->cfg.on_lead != NULL) {
        mi->cfg.on_lead(mi->cfg.arg);
    }
    mi->led = v.is_leader;
    if (rv != SM_OK) {
        sm_log(SM_LOG_WARN, MOD, "out of memory closing a window; retrying",
               NULL);
        return -SM_ENOMEM;
    }
    return (int)(after.windows_closed - before.windows_closed);
}

int node_mesh_ingest_flush(struct node_mesh_ingest *mi)
{
    struct node_wmerge_view v;
    int n = node_mesh_ingest_close(mi, 1);
    node_wmerge_flush_all(mi->merge, view(mi, &v));
    return n;
}

void node_mesh_ingest_stop(struct node_mesh_ingest *mi)
{
    struct node_wmerge_view v;
    node_mesh_ingest_close(mi, 1);
    node_wmerge_flush(mi->merge, view(mi, &v), mono_ms(mi));
}

void node_mesh_ingest_stats(const struct node_mesh_ingest *mi,
                            struct node_mesh_ingest_stats *out)
{
    *out = mi->stats;
    node_wmerge_stats(mi->merge, &out->merge);
}

void node_mesh_ingest_status_json(const struct node_mesh_ingest *mi,
                                  struct node_text *b)
{
    struct node_mesh_ingest_stats s;
    static struct node_mesh_view v; /* large; the loop thread's alone */
    node_mesh_ingest_stats(mi, &s);
    node_mesh_view(mi->cfg.mesh, &v);
    node_text_puts(b, ",\"routing\":{\"peers\":[");
    for (size_t i = 0; i < v.n_up; i++) {
        node_text_puts(b, i ? "," : "");
        node_text_json_str(b, v.up[i]);
    }
    node_text_puts(b, "],\"services\":{");
    for (size_t i = 0; i < mi->n_seen; i++) {
        node_text_puts(b, i ? "," : "");
        node_text_json_str(b, mi->seen[i].name);
        node_text_printf(b, ":%" PRIu64, mi->seen[i].count);
    }
    node_text_printf(b,
                     "},\"spans_local\":%" PRIu64 ",\"spans_out\":%" PRIu64
                     ",\"spans_kept\":%" PRIu64 ",\"spans_in\":%" PRIu64
                     ",\"spans_refused\":%" PRIu64 ",\"batches_out\":%" PRIu64
                     ",\"batches_in\":%" PRIu64
                     ",\"batches_malformed\":%" PRIu64 ",\"bytes_out\":%" PRIu64
                     ",\"bytes_in\":%" PRIu64 "}",
                     s.spans_local, s.spans_out, s.spans_kept, s.spans_in,
                     s.spans_refused, s.batches_out, s.batches_in,
                     s.batches_malformed, s.bytes_out, s.bytes_in);
    const struct node_wmerge_stats *m = &s.merge;
    node_text_printf(
        b,
        ",\"merge\":{\"parts_made\":%" PRIu64 ",\"parts_sent\":%" PRIu64
        ",\"parts_resent\":%" PRIu64 ",\"parts_acked\":%" PRIu64
        ",\"parts_dropped\":%" PRIu64 ",\"parts_received\":%" PRIu64
        ",\"parts_late\":%" PRIu64 ",\"parts_duplicate\":%" PRIu64
        ",\"parts_refused\":%" PRIu64 ",\"windows_merged\":%" PRIu64
        ",\"windows_complete\":%" PRIu64 ",\"windows_timed_out\":%" PRIu64
        ",\"windows_evicted\":%" PRIu64 ",\"windows_skipped\":%" PRIu64
        ",\"windows_lost\":%" PRIu64 ",\"flushes_received\":%" PRIu64
        ",\"bytes_out\":%" PRIu64 ",\"bytes_in\":%" PRIu64
        ",\"outbox\":%zu,\"pending\":%zu}",
        m->parts_made, m->parts_sent, m->parts_resent, m->parts_acked,
        m->parts_dropped, m->parts_received, m->parts_late, m->parts_duplicate,
        m->parts_refused, m->windows_merged, m->windows_complete,
        m->windows_timed_out, m->windows_evicted, m->windows_skipped,
        m->windows_lost, m->flushes_received, m->bytes_out, m->bytes_in,
        m->outbox, m->pending);
}
