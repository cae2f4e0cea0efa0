/* `sagemesh peer`: the daemon on one host.
 *
 * One libuv loop owns everything: the HTTP server (OTLP, Zipkin, health,
 * metrics, status), the Prometheus scrapers, the window aggregator and the
 * window log. Request bodies are parsed into a batch, the batch goes to the
 * aggregator whole or not at all, and the answer says which. A timer closes
 * windows whose end the watermark has passed; each closed window is
 * appended to the log (durable before the next one), then fed to the CBN
 * structure and the normal values. At start-up the log is replayed to
 * rebuild them, and the aggregator resumes after the last stored window.
 *
 * The model manager (node/model_mgr.h) takes every window too: it trains
 * on its own threads and diagnoses each window that violated QoS; the
 * diagnoses come back to this loop and go to the diagnosis store
 * (node/diagnoses.h), written to disk before they are served (a disk
 * error is logged and counted; the diagnosis is then served from memory
 * until restart). The mesh builds on this loop too (issue 7). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "base/alloc.h"
#include "base/clock.h"
#include "base/log.h"
#include "base/rng.h"
#include "cbn/cbn.h"
#include "consensus/consensus.h"
#include "node/actions.h"
#include "node/agent.h"
#include "node/cli.h"
#include "node/client.h"
#include "node/config.h"
#include "node/diagnoses.h"
#include "node/http.h"
#include "node/ingest.h"
#include "node/json.h"
#include "node/mesh.h"
#include "node/mesh_ingest.h"
#include "node/mesh_model.h"
#include "node/mesh_sweep.h"
#include "node/model_mgr.h"
#include "node/node.h"
#include "node/peer.h"
#include "node/prom.h"
#include "node/textbuf.h"
#include "sm_build.h"

#define MOD             "peer"
#define NS              UINT64_C(1000000000)
#define BATCH_LIMIT     (256u << 20) /* arena bytes for one parsed body */
#define MAX_BODY        (20u << 20)  /* OTLP's recommended request limit */
#define SCRAPE_MAX_BODY (32u << 20)
#define RETAIN_BYTES    (4ull << 30)
#define RETAIN_NS       (7ull * 24 * 3600 * NS)
/* Event time counts as live when within this of the wall clock. */
#define LIVE_SLACK_NS      (UINT64_C(3600) * NS)
#define DEFAULT_LATENESS_S 60.0

struct scrape_target
{
    struct node_peer *peer;
    char url[1024];     /* without the #service=... fragment */
    char service[128];  /* default service, "" if none */
    char instance[128]; /* host:port of the URL */
    uv_timer_t timer;
    int in_flight;
    uint64_t scrapes, failures, samples, skipped;
};

/* HTTP answers by status code, for /metrics. */
static const int counted_codes[] = {200, 202, 400, 401, 404, 405, 408,
                                    409, 413, 415, 429, 431, 500, 503};
#define N_CODES (sizeof counted_codes / sizeof counted_codes[0])

/* The outcome of the newest training round, for /v1/status. */
struct peer_round
{
    int valid, status;
    int installed; /* a model the mesh's round committed, installed here */
    char errmsg[SM_ERRMSG_SIZE];
    enum gvae_retrain mode;
    double seconds, val_loss;
    size_t windows;
    uint64_t model_version;
};

/* Seconds from a window's close to its diagnosis, for /metrics. */
static const double latency_bounds[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                        0.5,   1,    2.5,   5,    10};
#define N_BOUNDS (sizeof latency_bounds / sizeof latency_bounds[0])
struct diag_latency
{
    uint64_t buckets[N_BOUNDS]; /* cumulative, as Prometheus wants */
    uint64_t count;
    double sum;
};

/* A `sagemesh diagnose` request: windows queued, answers collected. */
#define N_REQUESTS 16
struct diag_request
{
    uint64_t id; /* 0: free */
    size_t windows, done;
    struct node_text body; /* the diagnoses so far, comma-separated */
};

struct node_peer
{
    struct node_config *cfg;
    const struct sm_clock *clock;
    uv_loop_t *loop;
    struct node_http_server *http;
    struct cbn_agg *agg;
    struct cbn_log *log;
    struct cbn_log *mesh_log;   /* windows other peers replicated here */
    struct node_mesh_model *mm; /* the model behind training rounds */
    struct node_sweep *sweep;   /* diagnoses' passes across owners */
    uint64_t mesh_windows_replayed;
    uint64_t mesh_trim_ticks;
    struct cbn_graph *graph;
    uint64_t graph_until_ns; /* newest window the graph observed */
    struct cbn_normals *normals;
    uv_timer_t tick;
    uv_signal_t sigint, sigterm;
    struct scrape_target targets[NODE_MAX_LIST];
    size_t n_targets;
    struct node_spans spans;
    struct node_points points;
    int ready, stopping, open_handles;
    uint64_t last_data_mono_ns;
    /* Figures for /metrics and /v1/status. */
    uint64_t windows_stored, windows_replayed, windows_violated;
    uint64_t store_errors, batches_rejected;
    uint64_t http_codes[N_CODES + 1]; /* last: any other code */
    uint64_t newest_window_end_ns;
    double last_qos_ms;
    int last_qos_violated;
    void (*on_window)(void *arg, const struct cbn_window *w);
    void *on_window_arg;
    struct node_service_labels service_labels;
    struct cbn_resource_rule rules[NODE_MAX_LIST];
    char rule_prefix[NODE_MAX_LIST][128];
    /* Mutating calls: the cluster secret, and the credentials already used
     * (a credential is good once). */
    struct tp_secret secret;
    int has_secret;
    uint8_t seen_mac[256][TP_MAC_SIZE];
    size_t seen_next;
    /* The model and the diagnoses (no model without a QoS service). */
    struct node_model_mgr *model;
    struct node_diag_store *diags;
    uint64_t diags_stored, diag_store_errors;
    uint64_t no_model;       /* violated windows before the first model */
    uint64_t rediagnosed;    /* replayed violated windows without a stored
                                diagnosis, diagnosed again at start */
    uint64_t redo_after_ns;  /* only windows ending after this, at start */
    uint64_t late_warned_at; /* windows_stored at the last late warning */
    struct peer_round last_round;
    struct diag_latency latency;
    struct diag_request requests[N_REQUESTS];
    uint64_t next_request;
    uv_signal_t sighup;
    /* Actuation: the agent of this host and the controller's actions. */
    struct node_real_agent *agent;
    struct node_actions *actions;
    struct node_action_executor executor;
    uint64_t jobs_running;
    /* The mesh, when the peer has the cluster secret, and its telemetry:
     * spans routed by trace id, windows merged on the leader. */
    struct node_mesh *mesh;
    struct node_mesh_ingest *ingest;
    /* The body of the answer being written, freed at the next request. */
    struct node_text out;
};

/* ---- Windows ------------------------------------------------------------- */

/* How the model takes window @w. A violated window whose diagnosis is
 * missing from the store (the peer stopped or crashed before it was
 * stored) is diagnosed again when replayed, if it is recent; a violated
 * window before the first model is counted and logged. */
static unsigned model_flags(struct node_peer *p,
                            const struct cbn_window *w,
                            int replayed)
{
    int have_model = node_model_mgr_version(p->model) > 0;
    if (!w->qos_violated) {
        return replayed ? NODE_MODEL_REPLAYED : 0;
    }
    if (!replayed) {
        if (!have_model) {
            p->no_model++;
            sm_log(SM_LOG_WARN, MOD,
                   "QoS violated before the first model: not diagnosed",
                   "window_end=%" PRIu64 " train_after=%.0f", w->end_ns / NS,
                   p->cfg->train_after);
        }
        return 0;
    }
    if (!have_model || w->end_ns <= p->redo_after_ns) {
        return NODE_MODEL_REPLAYED;
    }
    char id[NODE_DIAG_ID_LEN + 1];
    node_diagnosis_id(w->end_ns, p->cfg->qos_service, id);
    if (node_diag_store_has(p->diags, id)) {
        return NODE_MODEL_REPLAYED;
    }
    p->rediagnosed++;
    return NODE_MODEL_REPLAYED | NODE_MODEL_DIAGNOSE;
}

/* Telemetry that arrived after its window had closed is lost to the
 * model: say so, at most once per 20 windows, with what to change. */
static void warn_late(struct node_peer *p, const struct cbn_window *w)
{
    if (p->windows_stored < p->late_warned_at + 20 && p->late_warned_at > 0) {
        return;
    }
    p->late_warned_at = p->windows_stored;
    sm_log(SM_LOG_WARN, MOD,
           "telemetry arrived after its window had closed and was dropped; "
           "if this repeats, raise --lateness",
           "late_spans=%" PRIu64 " late_points=%" PRIu64 " lateness_s=%g",
           w->late_spans, w->late_points, p->cfg->lateness_s);
}

static void take_window(struct node_peer *p,
                        const struct cbn_window *w,
                        int replayed)
{
    int changed = 0;
    if (w->end_ns > p->graph_until_ns) {
        p->graph_until_ns = w->end_ns;
    }
    if (cbn_graph_observe(p->graph, w, &changed) != SM_OK ||
        cbn_normals_observe(p->normals, w) != SM_OK) {
        sm_log(SM_LOG_WARN, MOD, "out of memory updating the CBN", NULL);
    }
    if (changed) {
        sm_log(SM_LOG_INFO, MOD, "CBN changed",
               "version=%" PRIu64 " nodes=%zu links=%zu",
               cbn_graph_version(p->graph), cbn_graph_node_count(p->graph),
               cbn_graph_link_count(p->graph));
    }
    p->newest_window_end_ns = w->end_ns;
    p->last_qos_ms = w->qos_latency_ms;
    p->last_qos_violated = w->qos_violated;
    p->windows_violated += w->qos_violated != 0;
    if (!replayed && w->late_spans + w->late_points > 0) {
        warn_late(p, w);
    }
    if (!replayed && w->qos_violated) {
        sm_log(SM_LOG_WARN, MOD, "QoS violated",
               "window_end=%" PRIu64
               " latency_ms=%.1f target_ms=%.1f "
               "percentile=%g",
               w->end_ns / NS, w->qos_latency_ms, w->qos_target_ms,
               w->qos_percentile);
    }
    if (p->actions != NULL && p->cfg->qos_service != NULL) {
        node_actions_on_window(p->actions, w->end_ns, w->qos_violated != 0,
                               sm_clock_wall_ns(p->clock));
    }
    if (p->model != NULL &&
        node_model_mgr_window(p->model, w, model_flags(p, w, replayed)) ==
            SM_ENOMEM) {
        sm_log(SM_LOG_WARN, MOD, "out of memory: a window is not modelled",
               "window_end=%" PRIu64, w->end_ns / NS);
    }
    if (p->on_window != NULL) {
        p->on_window(p->on_window_arg, w);
    }
}

/* Stores and takes in one closed window; owns @w. */
static void window_closed(void *arg, struct cbn_window *w)
{
    struct node_peer *p = arg;
    uint8_t *buf;
    size_t len;
    char err[SM_ERRMSG_SIZE] = "";
    int rv = cbn_window_encode(w, &buf, &len);
    if (rv == SM_OK) {
        rv = cbn_log_append(p->log, w->end_ns, buf, len, err);
        /* Every peer trains on the same windows: send it to the others. */
        struct node_train *rounds = p->mesh != NULL && p->model != NULL
                                        ? node_mesh_train(p->mesh)
                                        : NULL;
        if (rounds != NULL) {
            node_train_window(rounds, buf, len, w->end_ns);
        }
        sm_free(buf);
    }
    if (rv == SM_OK) {
        p->windows_stored++;
    } else {
        /* The window still feeds the model in memory; the operator must
         * know it will not survive a restart. */
        p->store_errors++;
        sm_log(SM_LOG_ERROR, MOD, "cannot store a closed window",
               "window_end=%" PRIu64 " error=%s cause=\"%s\"", w->end_ns / NS,
               sm_errname(rv), err);
    }
    take_window(p, w, 0);
    cbn_window_free(w);
    /* Retention by age is measured in event time, against the newest
     * window, so that replayed history is not trimmed by the wall clock. */
    if (cbn_log_trim(p->log, p->newest_window_end_ns, err) != SM_OK ||
        (p->mesh_log != NULL &&
         cbn_log_trim(p->mesh_log, p->newest_window_end_ns, err) != SM_OK)) {
        sm_log(SM_LOG_WARN, MOD, "window log retention failed", "cause=\"%s\"",
               err);
    }
}

static int replay_record(void *arg,
                         uint64_t time_ns,
                         const uint8_t *payload,
                         size_t len)
{
    struct node_peer *p = arg;
    (void)time_ns;
    struct cbn_window *w;
    int rv = cbn_window_decode(payload, len, &w);
    if (rv != SM_OK) {
        sm_log(SM_LOG_WARN, MOD, "skipping an unreadable stored window",
               "error=%s", sm_errname(rv));
        return 0;
    }
    take_window(p, w, 1);
    p->windows_replayed++;
    cbn_window_free(w);
    return 0;
}

static void close_windows(struct node_peer *p)
{
    if (p->ingest != NULL) {
        node_mesh_ingest_close(p->ingest, 0);
        return;
    }
    if (cbn_agg_close_ready(p->agg, window_closed, p) != SM_OK) {
        sm_log(SM_LOG_WARN, MOD, "out of memory closing a window; retrying",
               NULL);
    }
}

/* ---- Model and diagnoses --------------------------------------------------
 */

static void observe_latency(struct diag_latency *l, double seconds)
{
    for (size_t i = 0; i < N_BOUNDS; i++) {
        l->buckets[i] += seconds <= latency_bounds[i];
    }
    l->count++;
    l->sum += seconds;
}

static struct diag_request *find_request(struct node_peer *p, uint64_t id)
{
    for (size_t i = 0; i < N_REQUESTS; i++) {
        if (p->requests[i].id == id) {
            return &p->requests[i];
        }
    }
    return NULL;
}

/* Writes the path "a -> b -> c" of @d into @buf. */
static void format_path(const struct gvae_diagnosis *d, char *buf, size_t cap)
{
    size_t at = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < d->n_path && at < cap; i++) {
        int n =
            snprintf(buf + at, cap - at, "%s%s", i ? " -> " : "", d->path[i]);
        at += n > 0 ? (size_t)n : 0;
    }
}

static void log_diagnosis(const struct node_peer *p,
                          const struct cbn_window *w,
                          const struct gvae_diagnosis *d,
                          const char *id)
{
    char path[512];
    format_path(d, path, sizeof path);
    if (d->n_culprits == 0) {
        sm_log(SM_LOG_WARN, MOD, "diagnosis: no culprit restores QoS",
               "id=%s window_end=%" PRIu64
               " latency_ms=%.1f target_ms=%.1f "
               "top=%s",
               id, w->end_ns / NS, d->latency_ms, d->target_ms,
               d->n_ranking ? d->ranking[0].service : "-");
        return;
    }
    const struct gvae_culprit *c = &d->culprits[0];
    sm_log(SM_LOG_WARN, MOD, "diagnosis",
           "id=%s window_end=%" PRIu64
           " culprit=%s resource=%s "
           "p_qos_met=%.2f culprits=%zu latency_ms=%.1f target_ms=%.1f "
           "path=\"%s\" decided_by=%s",
           id, w->end_ns / NS, c->service, cbn_resource_name(c->resource),
           c->p_qos_met, d->n_culprits, d->latency_ms, d->target_ms, path,
           p->cfg->id);
}

/* Hands a stored diagnosis's first culprit to the controller and writes
 * the action it decided, if any, as the diagnosis's "action" object into
 * @out. The action is recorded before the diagnosis, so a crash in between
 * re-diagnoses the window and finds the same action. */
static void act_on(struct node_peer *p,
                   const struct cbn_window *w,
                   const struct gvae_diagnosis *d,
                   const char *diagnosis_id,
                   struct node_text *out)
{
    if (p->actions == NULL || d->n_culprits == 0) {
        return;
    }
    const struct gvae_culprit *c = &d->culprits[0];
    const struct node_action *act = NULL;
    int rv = node_actions_on_diagnosis(
        p->actions, diagnosis_id, w->end_ns, c->service,
        cbn_resource_name(c->resource), sm_clock_wall_ns(p->clock), &act);
    if (rv != SM_OK) {
        sm_log(SM_LOG_ERROR, MOD, "the controller could not record an action",
               "diagnosis=%s error=%s", diagnosis_id, sm_errname(rv));
        return;
    }
    if (act != NULL) {
        node_action_write_summary(out, act);
    }
}

/* A diagnosis from the model manager: a violated window's is stored and
 * served; a `sagemesh diagnose` request's is collected for its caller. */
static void on_diagnosis(void *arg,
                         const struct cbn_window *w,
                         const struct node_model_result *r)
{
    struct node_peer *p = arg;
    struct diag_request *q = r->tag != 0 ? find_request(p, r->tag) : NULL;
    if (r->tag != 0 && q == NULL) {
        return; /* the request was evicted by newer ones */
    }
    if (r->status != SM_OK) {
        if (q != NULL) {
            node_text_printf(&q->body,
                             "%s{\"window_end_unix_nano\":\"%" PRIu64
                             "\",\"error\":",
                             q->done ? "," : "", w->end_ns);
            node_text_json_str(&q->body, r->errmsg);
            node_text_puts(&q->body, "}");
            q->done++;
        }
        return;
    }
    if (q == NULL) {
        observe_latency(&p->latency, r->seconds);
    }
    struct node_diagnosis_meta meta = {
        .qos_service = p->cfg->qos_service,
        .qos_operation = p->cfg->qos_operation,
        .model_version = r->model_version,
        .decided_by = p->cfg->id,
        .decided_ns = sm_clock_wall_ns(p->clock),
        .diagnosis_ms = r->seconds * 1e3,
    };
    if (q != NULL) {
        if (q->done) {
            node_text_puts(&q->body, ",");
        }
        node_diagnosis_write_json(&q->body, w, r->diagnosis, &meta);
        q->done++;
        return;
    }
    char id[NODE_DIAG_ID_LEN + 1];
    node_diagnosis_id(w->end_ns, p->cfg->qos_service, id);
    log_diagnosis(p, w, r->diagnosis, id);
    struct node_text action = {0};
    act_on(p, w, r->diagnosis, id, &action);
    meta.action_json = action.len > 0 && !action.failed ? action.s : NULL;
    struct node_text doc = {0};
    node_diagnosis_write_json(&doc, w, r->diagnosis, &meta);
    char *json;
    size_t len;
    char err[SM_ERRMSG_SIZE] = "";
    int rv = node_text_take(&doc, &json, &len);
    if (rv == SM_OK) {
        rv = node_diag_store_add(p->diags, id, w->end_ns, json, len, err);
        if ((rv == SM_OK || rv == SM_EEXIST) && p->mesh != NULL &&
            node_mesh_add_diagnosis(p->mesh, id, w->end_ns, json, len) !=
                SM_OK) {
            sm_log(SM_LOG_WARN, MOD,
                   "a diagnosis could not be queued for the mesh's log",
                   "id=%s", id);
        }
        free(json);
    }
    free(action.s);
    if (rv == SM_OK) {
        p->diags_stored++;
    } else if (rv != SM_EEXIST) {
        p->diag_store_errors++;
        sm_log(SM_LOG_ERROR, MOD, "cannot store a diagnosis",
               "id=%s error=%s cause=\"%s\"", id, sm_errname(rv), err);
    }
}

static const char *retrain_name(enum gvae_retrain mode)
{
    switch (mode) {
        case GVAE_RETRAIN_PARTIAL:
            return "partial";
        case GVAE_RETRAIN_INCREMENTAL:
            return "incremental";
        default:
            return "full";
    }
}

/* The mesh installed a committed model: that is this peer's last round. */
static void on_install(void *arg,
                       uint64_t version,
                       int status,
                       const char *errmsg)
{
    struct node_peer *p = arg;
    struct peer_round *l = &p->last_round;
    memset(l, 0, sizeof *l);
    l->valid = 1;
    l->installed = 1;
    l->status = status;
    snprintf(l->errmsg, sizeof l->errmsg, "%s", errmsg ? errmsg : "");
    l->val_loss = NAN;
    l->model_version = version;
    struct node_model_mgr_stats ms;
    if (p->model != NULL) {
        node_model_mgr_stats(p->model, &ms);
        l->windows = ms.windows;
    }
}

static void on_round(void *arg, const struct node_model_round *r)
{
    struct node_peer *p = arg;
    struct peer_round *l = &p->last_round;
    l->valid = 1;
    l->status = r->status;
    snprintf(l->errmsg, sizeof l->errmsg, "%s", r->errmsg);
    l->mode = r->mode;
    l->seconds = r->status == SM_OK ? r->report.seconds : 0;
    l->val_loss = r->status == SM_OK ? r->report.val_loss : NAN;
    l->windows = r->windows;
    l->model_version = r->model_version;
}

/* How much of @node's telemetry arrived at this peer from outside (routed
 * ingest): the records of its member services. */
static uint64_t arrived_here(const struct cbn_graph_node *node,
                             const char *const *seen,
                             const uint64_t *counts,
                             size_t n_seen)
{
    uint64_t sum = 0;
    for (size_t m = 0; m < node->n_members; m++) {
        for (size_t k = 0; k < n_seen; k++) {
            sum += strcmp(node->members[m], seen[k]) == 0 ? counts[k] : 0;
        }
    }
    return sum;
}

/* Tells the mesh which CBN nodes this peer's telemetry names, for shard
 * placement: with routed ingest, the nodes whose services' telemetry came
 * to this peer from their hosts, weighted by how much; otherwise every
 * node of the windows this peer made. */
static void report_services(struct node_peer *p)
{
    if (p->mesh == NULL) {
        return;
    }
    const char *names[256], *seen[NODE_INGEST_SERVICES_MAX];
    uint64_t counts[256], seen_counts[NODE_INGEST_SERVICES_MAX];
    size_t n = 0, n_seen = 0;
    if (p->ingest != NULL) {
        n_seen = node_mesh_ingest_services(p->ingest, seen, seen_counts,
                                           NODE_INGEST_SERVICES_MAX);
    }
    /* A shard is one CBN node's CVAE: a service, or services in a cycle. */
    for (size_t i = 0; i < cbn_graph_node_count(p->graph) && n < 256; i++) {
        const struct cbn_graph_node *node = cbn_graph_node(p->graph, i);
        uint64_t c = p->ingest != NULL
                         ? arrived_here(node, seen, seen_counts, n_seen)
                         : 1;
        if (c > 0) {
            names[n] = node->name;
            counts[n++] = c;
        }
    }
    node_mesh_set_services(p->mesh, names, counts, n);
}

/* Routed ingest: a follower learns the CBN from the windows the leader
 * merges, to know which nodes its services belong to. */
static void on_replicated_window(void *arg, const struct cbn_window *w)
{
    struct node_peer *p = arg;
    int changed = 0;
    if (p->ingest == NULL || w->end_ns <= p->graph_until_ns) {
        return;
    }
    p->graph_until_ns = w->end_ns;
    if (cbn_graph_observe(p->graph, w, &changed) != SM_OK) {
        sm_log(SM_LOG_WARN, MOD, "out of memory updating the CBN", NULL);
    }
}

/* Once a second: close what the watermark allows; on a quiet system with
 * live data, let the wall clock move event time on. */
static void on_tick(uv_timer_t *t)
{
    struct node_peer *p = t->data;
    struct cbn_agg_stats st;
    cbn_agg_stats(p->agg, &st);
    uint64_t now = sm_clock_wall_ns(p->clock);
    uint64_t newest = st.watermark_ns + (uint64_t)(p->cfg->lateness_s * NS);
    uint64_t quiet = sm_clock_mono_ns(p->clock) - p->last_data_mono_ns;
    uint64_t window = (uint64_t)(p->cfg->window_s * NS);
    if (st.windows_open > 0 && newest + LIVE_SLACK_NS > now && quiet > window) {
        cbn_agg_advance(p->agg, now);
    }
    close_windows(p);
    report_services(p);
    /* Replicated windows age out like the peer's own, also on a peer
     * that closes none itself. */
    if (p->mesh_log != NULL && ++p->mesh_trim_ticks % 60 == 0) {
        struct cbn_log_stats ls;
        char err[SM_ERRMSG_SIZE] = "";
        cbn_log_stats(p->mesh_log, &ls);
        if (cbn_log_trim(p->mesh_log, ls.newest_time_ns, err) != SM_OK) {
            sm_log(SM_LOG_WARN, MOD, "window log retention failed",
                   "cause=\"%s\"", err);
        }
    }
}

/* ---- HTTP ------------------------------------------------------------------
 */

static void count_code(struct node_peer *p, int code)
{
    for (size_t i = 0; i < N_CODES; i++) {
        if (counted_codes[i] == code) {
            p->http_codes[i]++;
            return;
        }
    }
    p->http_codes[N_CODES]++;
}

/* Response bodies live here until the server has copied them. */
static char reply_buf[1 << 16];

static void reply(struct node_http_response *res,
                  int status,
                  const char *content_type,
                  const char *fmt,
                  ...) __attribute__((format(printf, 4, 5)));

static void reply(struct node_http_response *res,
                  int status,
                  const char *content_type,
                  const char *fmt,
                  ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(reply_buf, sizeof reply_buf, fmt, ap);
    va_end(ap);
    res->status = status;
    res->content_type = content_type;
    res->body = reply_buf;
    res->body_len =
        n < 0
            ? 0
            : ((size_t)n < sizeof reply_buf ? (size_t)n : sizeof reply_buf - 1);
}

/* Writes @msg as a JSON string body {"error": msg}. */
static void reply_error(struct node_http_response *res,
                        int status,
                        const char *msg)
{
    char esc[SM_ERRMSG_SIZE * 2];
    size_t k = 0;
    for (const char *c = msg; *c != '\0' && k + 7 < sizeof esc; c++) {
        unsigned char u = (unsigned char)*c;
        if (u == '"' || u == '\\') {
            esc[k++] = '\\';
            esc[k++] = (char)u;
        } else if (u < 0x20) {
            k += (size_t)snprintf(esc + k, sizeof esc - k, "\\u%04x", u);
        } else {
            esc[k++] = (char)u;
        }
    }
    esc[k] = '\0';
    reply(res, status, "application/json", "{\"error\":\"%s\"}\n", esc);
}

/* Answers with the text in p->out (freed at the next request, after the
 * server has copied it); 503 if writing it ran out of memory. */
static void reply_out(struct node_peer *p,
                      struct node_http_response *res,
                      int status)
{
    if (p->out.failed) {
        res->retry_after_s = 5;
        reply_error(res, 503, "out of memory; retry later");
        return;
    }
    res->status = status;
    res->content_type = "application/json";
    res->body = p->out.s;
    res->body_len = p->out.len;
}

/* Copies the value of query parameter @name into @buf (size @cap); 1 when
 * present, 0 otherwise. */
static int query_param(const char *query,
                       const char *name,
                       char *buf,
                       size_t cap)
{
    size_t nl = strlen(name);
    for (const char *q = query; *q != '\0';) {
        size_t seg = strcspn(q, "&");
        if (seg > nl && strncmp(q, name, nl) == 0 && q[nl] == '=') {
            size_t vl = seg - nl - 1;
            /* Too long for any valid value: an empty one, which fails
             * every parser, rather than a prefix that might pass. */
            snprintf(buf, cap, "%.*s", vl < cap ? (int)vl : 0, q + nl + 1);
            return 1;
        }
        if (seg == nl && strncmp(q, name, nl) == 0) {
            buf[0] = '\0';
            return 1;
        }
        q += seg + (q[seg] == '&');
    }
    return 0;
}

/* Parses a whole decimal number in [lo, hi]; 1 on success. */
static int parse_count(const char *text, uint64_t lo, uint64_t hi, uint64_t *v)
{
    uint64_t n;
    if (node_parse_u64(text, strlen(text), &n) != SM_OK || n < lo || n > hi) {
        return 0;
    }
    *v = n;
    return 1;
}

/* Whether a request body is JSON: the media type application/json (any
 * case, parameters such as charset allowed). A missing Content-Type is
 * taken as JSON, so that `curl --data @file` works. */
static int is_json(const char *content_type)
{
    if (content_type[0] == '\0') {
        return 1;
    }
    if (strncasecmp(content_type, "application/json", 16) != 0) {
        return 0;
    }
    char next = content_type[16];
    return next == '\0' || next == ';' || next == ' ' || next == '\t';
}

/* Answers for an ingest outcome: 200/202, 400, 413, 429, 503. */
static void reply_ingest(struct node_peer *p,
                         struct node_http_response *res,
                         int rv,
                         const char *err,
                         int ok_status)
{
    switch (rv) {
        case SM_OK:
            p->last_data_mono_ns = sm_clock_mono_ns(p->clock);
            close_windows(p);
            reply(res, ok_status, "application/json", "{}");
            return;
        case SM_EMALFORMED:
            p->batches_rejected++;
            reply_error(res, 400, err);
            return;
        case SM_ETOOBIG:
            p->batches_rejected++;
            reply_error(res, 413, "batch too large");
            return;
        case SM_EAGAIN:
            p->batches_rejected++;
            res->retry_after_s = 1;
            reply_error(res, 429,
                        "too many spans waiting for their RPC "
                        "partner; retry later");
            return;
        default:
            p->batches_rejected++;
            res->retry_after_s = 5;
            reply_error(res, 503, "out of memory; retry later");
            return;
    }
}

static void handle_traces(struct node_peer *p,
                          const struct node_http_request *req,
                          struct node_http_response *res,
                          int zipkin)
{
    char err[SM_ERRMSG_SIZE] = "";
    if (!is_json(req->content_type)) {
        reply_error(res, 415,
                    zipkin ? "only application/json is supported"
                           : "only OTLP/HTTP JSON is supported: set "
                             "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=http/json");
        return;
    }
    node_spans_reset(&p->spans);
    int rv = zipkin
                 ? node_zipkin_spans(req->body, req->body_len, &p->spans, err)
                 : node_otlp_traces(req->body, req->body_len, &p->spans, err);
    if (rv == SM_OK) {
        rv = p->ingest != NULL
                 ? node_mesh_ingest_spans(p->ingest, p->spans.v, p->spans.n)
                 : cbn_agg_add_spans(p->agg, p->spans.v, p->spans.n);
        if (rv == SM_EMALFORMED) {
            sm_errmsg_printf(err,
                             "a span has no service or ends before it "
                             "starts");
        }
    }
    reply_ingest(p, res, rv, err, zipkin ? 202 : 200);
}

static void handle_metrics_post(struct node_peer *p,
                                const struct node_http_request *req,
                                struct node_http_response *res)
{
    char err[SM_ERRMSG_SIZE] = "";
    if (!is_json(req->content_type)) {
        reply_error(res, 415,
                    "only OTLP/HTTP JSON is supported: set "
                    "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL=http/json");
        return;
    }
    node_points_reset(&p->points);
    int rv = node_otlp_metrics(req->body, req->body_len, &p->points, err);
    if (rv == SM_OK) {
        rv = cbn_agg_add_metrics(p->agg, p->points.v, p->points.n);
    }
    if (rv == SM_OK && p->ingest != NULL) {
        node_mesh_ingest_points(p->ingest, p->points.v, p->points.n);
    }
    reply_ingest(p, res, rv, err, 200);
}

/* Appends Prometheus text for one metric family with a single sample. */
static int prom_family(char *buf,
                       size_t cap,
                       size_t at,
                       const char *name,
                       const char *type,
                       const char *help,
                       double value)
{
    int n =
        snprintf(buf + at, cap - at, "# HELP %s %s\n# TYPE %s %s\n%s %.17g\n",
                 name, help, name, type, name, value);
    return n < 0 ? 0 : n;
}

/* Appends the model's and the diagnoses' families; returns the new end. */
static size_t put_model_metrics(const struct node_peer *p,
                                char *b,
                                size_t cap,
                                size_t at)
{
    struct node_model_mgr_stats ms;
    memset(&ms, 0, sizeof ms);
    if (p->model != NULL) {
        node_model_mgr_stats(p->model, &ms);
    }
    at += (size_t)prom_family(b, cap, at, "sagemesh_model_version", "gauge",
                              "Version of the model serving diagnoses (0: "
                              "none yet).",
                              (double)ms.model_version);
    at += (size_t)prom_family(b, cap, at, "sagemesh_model_training", "gauge",
                              "1 while a training round runs.",
                              (double)ms.training);
    at += (size_t)prom_family(b, cap, at, "sagemesh_model_windows", "gauge",
                              "Windows held for training.", (double)ms.windows);
    at += (size_t)snprintf(
        b + at, cap - at,
        "# HELP sagemesh_training_rounds_total Training rounds finished, by "
        "outcome.\n"
        "# TYPE sagemesh_training_rounds_total counter\n"
        "sagemesh_training_rounds_total{outcome=\"ok\"} %" PRIu64
        "\n"
        "sagemesh_training_rounds_total{outcome=\"failed\"} %" PRIu64 "\n",
        ms.trainings, ms.training_failures);
    at += (size_t)prom_family(
        b, cap, at, "sagemesh_training_seconds_total", "counter",
        "Wall time of the successful training rounds.", ms.train_s_total);
    at += (size_t)prom_family(
        b, cap, at, "sagemesh_training_last_seconds", "gauge",
        "Wall time of the last successful round.", ms.last_train_s);
    at += (size_t)prom_family(b, cap, at, "sagemesh_checkpoint_failures_total",
                              "counter",
                              "Model checkpoints that could not be written "
                              "or read.",
                              (double)ms.checkpoint_failures);
    at += (size_t)snprintf(
        b + at, cap - at,
        "# HELP sagemesh_diagnoses_total Diagnoses by outcome: ok, failed, "
        "dropped (queue full), no_model (violated before the first "
        "model).\n"
        "# TYPE sagemesh_diagnoses_total counter\n"
        "sagemesh_diagnoses_total{outcome=\"ok\"} %" PRIu64
        "\n"
        "sagemesh_diagnoses_total{outcome=\"failed\"} %" PRIu64
        "\n"
        "sagemesh_diagnoses_total{outcome=\"dropped\"} %" PRIu64
        "\n"
        "sagemesh_diagnoses_total{outcome=\"no_model\"} %" PRIu64 "\n",
        ms.diagnoses, ms.diagnosis_failures, ms.diagnoses_dropped, p->no_model);
    at += (size_t)prom_family(b, cap, at, "sagemesh_diagnoses_stored", "gauge",
                              "Diagnoses held by the diagnosis store.",
                              (double)node_diag_store_count(p->diags));
    at += (size_t)prom_family(
        b, cap, at, "sagemesh_diagnosis_store_errors_total", "counter",
        "Diagnoses the store could not write to disk.",
        (double)p->diag_store_errors);
    at += (size_t)snprintf(b + at, cap - at,
                           "# HELP sagemesh_diagnosis_latency_seconds From a "
                           "violated window's close to its diagnosis.\n"
                           "# TYPE sagemesh_diagnosis_latency_seconds "
                           "histogram\n");
    for (size_t i = 0; i < N_BOUNDS && at < cap; i++) {
        at += (size_t)snprintf(b + at, cap - at,
                               "sagemesh_diagnosis_latency_seconds_bucket{le="
                               "\"%g\"} %" PRIu64 "\n",
                               latency_bounds[i], p->latency.buckets[i]);
    }
    if (at < cap) {
        at += (size_t)snprintf(b + at, cap - at,
                               "sagemesh_diagnosis_latency_seconds_bucket{le="
                               "\"+Inf\"} %" PRIu64
                               "\n"
                               "sagemesh_diagnosis_latency_seconds_sum %.17g\n"
                               "sagemesh_diagnosis_latency_seconds_count "
                               "%" PRIu64 "\n",
                               p->latency.count, p->latency.sum,
                               p->latency.count);
    }
    return at < cap ? at : cap - 1;
}

/* Appends what the HTTP server answered or refused by itself (413, 415,
 * 431, 503 over the connection cap, ...), which the handler never sees. */
static size_t put_server_metrics(const struct node_peer *p,
                                 char *b,
                                 size_t cap,
                                 size_t at)
{
    struct node_http_server_stats hs;
    memset(&hs, 0, sizeof hs);
    if (p->http != NULL) {
        node_http_server_stats(p->http, &hs);
    }
    at += (size_t)snprintf(
        b + at, cap - at,
        "# HELP sagemesh_http_connections_total HTTP connections, by "
        "outcome: accepted, or rejected over the connection cap.\n"
        "# TYPE sagemesh_http_connections_total counter\n"
        "sagemesh_http_connections_total{outcome=\"accepted\"} %" PRIu64
        "\n"
        "sagemesh_http_connections_total{outcome=\"rejected\"} %" PRIu64 "\n",
        hs.connections_accepted, hs.connections_rejected);
    at += (size_t)prom_family(b, cap, at, "sagemesh_http_connections_open",
                              "gauge", "HTTP connections open now.",
                              (double)hs.connections_open);
    at += (size_t)prom_family(b, cap, at, "sagemesh_http_server_refusals_total",
                              "counter",
                              "Requests the HTTP server answered with an "
                              "error itself (malformed, too large, unknown "
                              "encoding, timeouts); not in "
                              "sagemesh_http_responses_total.",
                              (double)hs.errors_by_server);
    at += (size_t)prom_family(b, cap, at, "sagemesh_http_received_bytes_total",
                              "counter",
                              "Bytes received on HTTP "
                              "connections, before decoding.",
                              (double)hs.bytes_received);
    return at < cap ? at : cap - 1;
}

/* Appends the mesh's families (none without a mesh): leadership, members,
 * the secure channel's rejections by reason (unknown or badly keyed peers
 * are counted here), and raft's traffic over the link. */
static size_t put_mesh_metrics(const struct node_peer *p,
                               char *b,
                               size_t cap,
                               size_t at)
{
    if (p->mesh == NULL) {
        return at;
    }
    struct node_mesh_stats ms;
    node_mesh_stats(p->mesh, &ms);
    at += (size_t)prom_family(b, cap, at, "sagemesh_mesh_leader", "gauge",
                              "1 when this peer leads the mesh.",
                              (double)ms.leader);
    at += (size_t)prom_family(b, cap, at, "sagemesh_mesh_term", "gauge",
                              "Raft term as this peer knows it.",
                              (double)ms.term);
    at += (size_t)prom_family(b, cap, at, "sagemesh_mesh_members", "gauge",
                              "Servers in raft's configuration.",
                              (double)ms.members);
    at += (size_t)prom_family(
        b, cap, at, "sagemesh_mesh_waiting", "gauge",
        "Diagnoses and actions waiting to be seen in "
        "the log.",
        (double)(ms.diagnoses_waiting + ms.actions_waiting));
    at += (size_t)prom_family(b, cap, at, "sagemesh_mesh_messages_sent_total",
                              "counter", "Envelopes sealed and sent.",
                              (double)ms.link.sent);
    at += (size_t)prom_family(
        b, cap, at, "sagemesh_mesh_messages_received_total", "counter",
        "Envelopes opened and accepted.", (double)ms.link.received);
    at += (size_t)prom_family(
        b, cap, at, "sagemesh_mesh_raft_bytes_total", "counter",
        "raft bytes carried over the link, both ways.",
        (double)(ms.raft.bytes_sent + ms.raft.bytes_received));
    at += (size_t)snprintf(b + at, cap - at,
                           "# HELP sagemesh_mesh_rejected_total Frames the "
                           "secure channel refused, by reason.\n"
                           "# TYPE sagemesh_mesh_rejected_total counter\n");
    for (int r = 1; r < TP_CHAN_NREASONS && at < cap; r++) {
        at +=
            (size_t)snprintf(b + at, cap - at,
                             "sagemesh_mesh_rejected_total{reason=\"%s\"} "
                             "%" PRIu64 "\n",
                             tp_chan_reason_name(r), ms.link.chan.rejected[r]);
    }
    at += (size_t)prom_family(
        b, cap, at, "sagemesh_mesh_bad_frames_total", "counter",
        "Link frames or envelopes that did not parse.",
        (double)(ms.link.bad_frames + ms.link.bad_envelopes));
    const struct node_train_stats *t = &ms.train;
    at += (size_t)prom_family(
        b, cap, at, "sagemesh_mesh_rounds_committed_total", "counter",
        "Training rounds this peer led to a committed model version.",
        (double)t->rounds_committed);
    at += (size_t)prom_family(
        b, cap, at, "sagemesh_mesh_shards_trained_total", "counter",
        "Model shards trained here for rounds.", (double)t->shards_trained);
    at += (size_t)prom_family(
        b, cap, at, "sagemesh_mesh_model_installs_total", "counter",
        "Committed model versions installed here.", (double)t->installs);
    at += (size_t)prom_family(b, cap, at, "sagemesh_mesh_windows_unacked",
                              "gauge",
                              "Windows sent to peers and not acknowledged yet.",
                              (double)t->windows_unacked);
    at += (size_t)prom_family(
        b, cap, at, "sagemesh_mesh_train_bytes_total", "counter",
        "Bytes of training and window messages, both ways.",
        (double)(t->bytes_sent + t->bytes_received));
    return at < cap ? at : cap - 1;
}

static void handle_metrics_get(struct node_peer *p,
                               struct node_http_response *res)
{
    struct cbn_agg_stats st;
    cbn_agg_stats(p->agg, &st);
    struct cbn_log_stats ls;
    cbn_log_stats(p->log, &ls);
    char *b = reply_buf;
    size_t cap = sizeof reply_buf, at = 0;
    at += (size_t)snprintf(
        b + at, cap - at,
        "# HELP sagemesh_spans_total Spans received, by outcome: accepted, "
        "late (their window had closed), rejected (no open window).\n"
        "# TYPE sagemesh_spans_total counter\n"
        "sagemesh_spans_total{outcome=\"accepted\"} %" PRIu64
        "\n"
        "sagemesh_spans_total{outcome=\"late\"} %" PRIu64
        "\n"
        "sagemesh_spans_total{outcome=\"rejected\"} %" PRIu64
        "\n"
        "# HELP sagemesh_points_total Metric points received, by outcome.\n"
        "# TYPE sagemesh_points_total counter\n"
        "sagemesh_points_total{outcome=\"accepted\"} %" PRIu64
        "\n"
        "sagemesh_points_total{outcome=\"late\"} %" PRIu64
        "\n"
        "sagemesh_points_total{outcome=\"rejected\"} %" PRIu64 "\n",
        st.spans_accepted, st.spans_late, st.spans_rejected, st.points_accepted,
        st.points_late, st.points_rejected);
    uint64_t scrapes = 0, scrape_failures = 0, kept = 0, skipped = 0;
    for (size_t i = 0; i < p->n_targets; i++) {
        scrapes += p->targets[i].scrapes;
        scrape_failures += p->targets[i].failures;
        kept += p->targets[i].samples;
        skipped += p->targets[i].skipped;
    }
    at += (size_t)snprintf(
        b + at, cap - at,
        "# HELP sagemesh_scrapes_total Prometheus scrapes, by outcome.\n"
        "# TYPE sagemesh_scrapes_total counter\n"
        "sagemesh_scrapes_total{outcome=\"ok\"} %" PRIu64
        "\n"
        "sagemesh_scrapes_total{outcome=\"failed\"} %" PRIu64
        "\n"
        "# HELP sagemesh_scrape_samples_total Scraped samples: kept as metric "
        "points, or skipped (buckets, quantiles, no service, NaN).\n"
        "# TYPE sagemesh_scrape_samples_total counter\n"
        "sagemesh_scrape_samples_total{outcome=\"kept\"} %" PRIu64
        "\n"
        "sagemesh_scrape_samples_total{outcome=\"skipped\"} %" PRIu64 "\n",
        scrapes - scrape_failures, scrape_failures, kept, skipped);
    at += (size_t)prom_family(b, cap, at, "sagemesh_batches_rejected_total",
                              "counter",
                              "Request bodies refused whole (malformed, too "
                              "large, back-pressure).",
                              (double)p->batches_rejected);
    at += (size_t)prom_family(b, cap, at, "sagemesh_windows_open", "gauge",
                              "Event-time windows still open.",
                              (double)st.windows_open);
    at += (size_t)prom_family(b, cap, at, "sagemesh_windows_closed_total",
                              "counter", "Windows closed since start.",
                              (double)st.windows_closed);
    at += (size_t)prom_family(b, cap, at, "sagemesh_windows_stored_total",
                              "counter",
                              "Closed windows appended to the window log.",
                              (double)p->windows_stored);
    at += (size_t)prom_family(
        b, cap, at, "sagemesh_store_errors_total", "counter",
        "Closed windows the log could not store.", (double)p->store_errors);
    at += (size_t)prom_family(b, cap, at, "sagemesh_window_log_bytes", "gauge",
                              "Size of the window log on disk.",
                              (double)ls.bytes);
    at += (size_t)prom_family(b, cap, at, "sagemesh_pending_spans", "gauge",
                              "Spans waiting for their RPC partner.",
                              (double)st.pending_spans);
    at += (size_t)prom_family(b, cap, at, "sagemesh_watermark_seconds", "gauge",
                              "Event-time watermark.",
                              (double)st.watermark_ns / 1e9);
    at += (size_t)prom_family(b, cap, at, "sagemesh_cbn_version", "gauge",
                              "Version of the CBN structure.",
                              (double)cbn_graph_version(p->graph));
    at += (size_t)prom_family(b, cap, at, "sagemesh_qos_violations_total",
                              "counter", "Closed windows that violated QoS.",
                              (double)p->windows_violated);
    at = put_model_metrics(p, b, cap, at);
    at = put_server_metrics(p, b, cap, at);
    at = put_mesh_metrics(p, b, cap, at);
    at += (size_t)snprintf(b + at, cap - at,
                           "# HELP sagemesh_http_responses_total HTTP "
                           "responses by status code.\n"
                           "# TYPE sagemesh_http_responses_total counter\n");
    for (size_t i = 0; i <= N_CODES && at < cap; i++) {
        if (i == N_CODES) {
            at += (size_t)snprintf(b + at, cap - at,
                                   "sagemesh_http_responses_total{code="
                                   "\"other\"} %" PRIu64 "\n",
                                   p->http_codes[i]);
        } else {
            at += (size_t)snprintf(b + at, cap - at,
                                   "sagemesh_http_responses_total{code="
                                   "\"%d\"} %" PRIu64 "\n",
                                   counted_codes[i], p->http_codes[i]);
        }
    }
    res->status = 200;
    res->content_type = "text/plain; version=0.0.4; charset=utf-8";
    res->body = b;
    res->body_len = at < cap ? at : cap - 1;
}

/* Writes the "model" object from @ms, the model manager's figures. */
/* Parses a mutating call's JSON body into @arena (limited to 64 KiB) and
 * stores in @vals[i] the string member @keys[i], or NULL when it is missing
 * or not a string. Returns 0 when the body is not JSON. */
static int body_strings(const struct node_http_request *req,
                        struct sm_arena *arena,
                        const char *const *keys,
                        const char **vals,
                        size_t n)
{
    const struct node_json *root;
    char err[SM_ERRMSG_SIZE];
    sm_arena_init(arena, 64 << 10);
    if (node_json_parse(req->body, req->body_len, arena, &root, err) != SM_OK) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        vals[i] = node_json_str(node_json_get(root, keys[i]));
    }
    return 1;
}

static int authorized(struct node_peer *p,
                      const struct node_http_request *req,
                      struct node_http_response *res);

static void handle_members(struct node_peer *p, struct node_http_response *res)
{
    if (p->mesh == NULL) {
        reply_error(res, 409,
                    "this peer runs without --secret-file: it is not in a "
                    "mesh");
        return;
    }
    node_mesh_members_json(p->mesh, &p->out);
    node_text_puts(&p->out, "\n");
    reply_out(p, res, 200);
}

/* POST /v1/members/add {"id":..,"address":"HOST:PORT"} and
 * /v1/members/remove {"id":..}: on the leader the change starts (200); a
 * follower forwards it to the leader (202). */
static void handle_member_change(struct node_peer *p,
                                 const struct node_http_request *req,
                                 struct node_http_response *res,
                                 int add)
{
    if (!authorized(p, req, res)) {
        return;
    }
    if (p->mesh == NULL) {
        reply_error(res, 409, "this peer is not in a mesh");
        return;
    }
    struct sm_arena arena;
    static const char *const keys[] = {"id", "address"};
    const char *vals[2] = {NULL, NULL};
    body_strings(req, &arena, keys, vals, 2);
    const char *id = vals[0], *addr = vals[1];
    char host[64];
    int port;
    if (id == NULL || !cons_peer_id_valid(id, strlen(id)) ||
        (add && (addr == NULL || node_parse_hostport(addr, host, sizeof host,
                                                     &port) != SM_OK))) {
        sm_arena_free(&arena);
        reply_error(res, 400,
                    add ? "the body must be {\"id\":\"PEER\",\"address\":"
                          "\"HOST:PORT\"}"
                        : "the body must be {\"id\":\"PEER\"}");
        return;
    }
    char leader[TP_PEER_ID_MAX + 1];
    int rv = node_mesh_member_change(p->mesh, add, id, addr, leader);
    sm_arena_free(&arena);
    if (rv == SM_OK) {
        reply(res, 200, "application/json", "{\"done\":true}\n");
    } else if (rv == SM_EAGAIN && strcmp(leader, p->cfg->id) != 0 &&
               leader[0] != '\0') {
        reply(res, 202, "application/json",
              "{\"done\":false,\"forwarded_to\":\"%s\"}\n", leader);
    } else {
        reply_error(res,
                    rv == SM_ENOTFOUND ? 404
                    : rv == SM_EINVAL  ? 400
                    : rv == SM_EAGAIN  ? 503
                    : rv == SM_EEXIST  ? 409
                                       : 503,
                    rv == SM_ENOTLEADER ? "no leader is known yet; retry"
                    : rv == SM_EAGAIN   ? "another membership change is in "
                                          "flight; retry"
                    : rv == SM_EINVAL   ? "the leader cannot remove itself: "
                                          "stop it and a new leader takes over"
                                        : sm_strerror(rv));
    }
}

static void put_actions_status(const struct node_peer *p, struct node_text *b)
{
    if (p->actions == NULL) {
        node_text_puts(b, "null");
        return;
    }
    struct node_actions_stats st;
    node_actions_stats(p->actions, &st);
    node_text_puts(b, "{\"mode\":");
    node_text_json_str(b, act_mode_name(node_actions_mode(p->actions)));
    node_text_puts(b, ",\"cgroups\":");
    node_text_json_str(b, node_agent_layout(p->agent));
    node_text_puts(b, ",\"cgroup_path\":");
    if (p->cfg->cgroup_path != NULL) {
        node_text_json_str(b, p->cfg->cgroup_path);
    } else {
        node_text_puts(b, "null");
    }
    node_text_printf(b,
                     ",\"decided\":%" PRIu64 ",\"not_planned\":%" PRIu64
                     ",\"agent_errors\":%" PRIu64 ",\"store_errors\":%" PRIu64
                     ",\"by_state\":{",
                     st.decided, st.not_planned, st.agent_errors,
                     st.store_errors);
    for (int i = 0; i < NODE_ACTION__COUNT; i++) {
        node_text_printf(b, "%s\"%s\":%" PRIu64, i ? "," : "",
                         node_action_state_name((enum node_action_state)i),
                         st.by_state[i]);
    }
    node_text_puts(b, "}}");
}

/* Rounds that ended here: trained alone, or installed from the mesh. */
static uint64_t rounds_finished(const struct node_model_mgr_stats *ms)
{
    return ms->trainings + ms->training_failures + ms->installs +
           ms->install_failures;
}

static void put_model_status(const struct node_peer *p,
                             const struct node_model_mgr_stats *ms,
                             struct node_text *b)
{
    if (p->model == NULL) {
        node_text_puts(b, "null");
        return;
    }
    node_text_printf(
        b,
        "{\"version\":%" PRIu64
        ",\"params\":%zu,\"loaded\":%s,"
        "\"training\":%s,\"rounds_ok\":%" PRIu64 ",\"rounds_failed\":%" PRIu64
        ",\"rounds_finished\":%" PRIu64
        ",\"windows\":%zu,\"windows_new\":%" PRIu64
        ",\"train_after\":%.0f,\"retrain_every\":%.0f,\"last_round\":",
        ms->model_version, ms->model_params,
        ms->model_loaded ? "true" : "false", ms->training ? "true" : "false",
        ms->trainings, ms->training_failures, rounds_finished(ms), ms->windows,
        ms->windows_new, p->cfg->train_after, p->cfg->retrain_every);
    const struct peer_round *l = &p->last_round;
    if (!l->valid) {
        node_text_puts(b, "null}");
        return;
    }
    node_text_printf(
        b, "{\"ok\":%s,\"error\":", l->status == SM_OK ? "true" : "false");
    if (l->status == SM_OK) {
        node_text_puts(b, "null");
    } else {
        node_text_json_str(b, l->errmsg);
    }
    node_text_printf(b,
                     ",\"mode\":\"%s\",\"seconds\":%.3f,\"windows\":%zu,"
                     "\"val_loss\":",
                     l->installed ? "mesh" : retrain_name(l->mode), l->seconds,
                     l->windows);
    node_text_json_num(b, "%.6g", l->val_loss);
    node_text_printf(b, ",\"model_version\":%" PRIu64 "}}", l->model_version);
}

static void handle_status(struct node_peer *p, struct node_http_response *res)
{
    struct cbn_agg_stats st;
    cbn_agg_stats(p->agg, &st);
    struct node_text *b = &p->out;
    node_text_puts(b, "{\"id\":");
    node_text_json_str(b, p->cfg->id);
    node_text_printf(b,
                     ",\"version\":\"%s\",\"ready\":%s,\"role\":\"%s\","
                     "\"windows\":{\"open\":%" PRIu64 ",\"closed\":%" PRIu64
                     ",\"stored\":%" PRIu64 ",\"replayed\":%" PRIu64
                     ",\"late_spans\":%" PRIu64 ",\"late_points\":%" PRIu64
                     ",\"lateness_s\":%g",
                     SM_VERSION, p->ready ? "true" : "false",
                     p->mesh != NULL ? node_mesh_role(p->mesh) : "standalone",
                     st.windows_open, st.windows_closed, p->windows_stored,
                     p->windows_replayed, st.spans_late, st.points_late,
                     p->cfg->lateness_s);
    node_text_printf(
        b, ",\"newest_end_unix_nano\":\"%" PRIu64 "\"},\"qos\":{\"service\":",
        p->newest_window_end_ns);
    if (p->cfg->qos_service != NULL) {
        node_text_json_str(b, p->cfg->qos_service);
    } else {
        node_text_puts(b, "null");
    }
    node_text_puts(b, ",\"operation\":");
    if (p->cfg->qos_operation != NULL) {
        node_text_json_str(b, p->cfg->qos_operation);
    } else {
        node_text_puts(b, "null");
    }
    node_text_printf(b,
                     ",\"percentile\":%g,\"target_ms\":%g,\"last_latency_ms\":",
                     p->cfg->qos_percentile, p->cfg->qos_target_ms);
    node_text_json_num(b, "%.3f", p->last_qos_ms);
    node_text_printf(
        b,
        ",\"last_violated\":%s},\"cbn\":{\"version\":%" PRIu64 ",\"nodes\":[",
        p->last_qos_violated ? "true" : "false", cbn_graph_version(p->graph));
    for (size_t i = 0; i < cbn_graph_node_count(p->graph); i++) {
        const struct cbn_graph_node *n = cbn_graph_node(p->graph, i);
        node_text_puts(b, i ? ",{\"name\":" : "{\"name\":");
        node_text_json_str(b, n->name);
        node_text_printf(b, ",\"parents\":%zu,\"inferred\":%s}", n->n_parents,
                         n->inferred ? "true" : "false");
    }
    node_text_puts(b, "]},\"model\":");
    /* One pass over the history for both objects (it counts new windows). */
    struct node_model_mgr_stats ms;
    memset(&ms, 0, sizeof ms);
    if (p->model != NULL) {
        node_model_mgr_stats(p->model, &ms);
    }
    put_model_status(p, &ms, b);
    node_text_printf(
        b,
        ",\"diagnoses\":{\"stored\":%zu,\"ok\":%" PRIu64 ",\"failed\":%" PRIu64
        ",\"dropped\":%" PRIu64 ",\"pending\":%" PRIu64 ",\"no_model\":%" PRIu64
        ",\"rediagnosed\":%" PRIu64
        ",\"compute_ms_mean\":%.3f"
        ",\"compute_ms_last\":%.3f},\"actuation\":",
        node_diag_store_count(p->diags), ms.diagnoses, ms.diagnosis_failures,
        ms.diagnoses_dropped,
        (uint64_t)ms.diagnoses_pending +
            (p->mesh != NULL ? node_mesh_waiting(p->mesh) : 0),
        p->no_model, p->rediagnosed,
        ms.diagnoses ? 1e3 * ms.diagnose_s_total / (double)ms.diagnoses : 0.0,
        1e3 * ms.diagnose_s_last);
    put_actions_status(p, b);
    if (p->mesh != NULL) {
        node_mesh_status_json(p->mesh, b);
    }
    if (p->ingest != NULL) {
        node_mesh_ingest_status_json(p->ingest, b);
    }
    if (p->sweep != NULL) {
        struct node_sweep_stats sw;
        node_sweep_stats(p->sweep, &sw);
        node_text_printf(b,
                         ",\"sweeps\":{\"diagnoses\":%" PRIu64
                         ",\"levels\":%" PRIu64 ",\"requests\":%" PRIu64
                         ",\"timeouts\":%" PRIu64 ",\"fallbacks\":%" PRIu64
                         ",\"bytes_out\":%" PRIu64 ",\"bytes_in\":%" PRIu64
                         ",\"served\":%" PRIu64 ",\"serve_failures\":%" PRIu64
                         ",\"last_ms\":%.3f}",
                         sw.diagnoses, sw.levels, sw.requests, sw.timeouts,
                         sw.fallbacks, sw.bytes_out, sw.bytes_in, sw.served,
                         sw.serve_failures, sw.last_ms);
    }
    node_text_puts(b, "}\n");
    reply_out(p, res, 200);
}

#define AUTH_WINDOW_S 60

/* Checks the credential of a mutating call; answers 401 and returns 0 if
 * it does not pass. */
static int authorized(struct node_peer *p,
                      const struct node_http_request *req,
                      struct node_http_response *res)
{
    if (!p->has_secret) {
        reply_error(res, 401,
                    "this peer has no --secret-file: mutating calls "
                    "are disabled");
        return 0;
    }
    uint8_t mac[TP_MAC_SIZE];
    const char *why;
    uint64_t now = sm_clock_wall_ns(p->clock) / NS;
    if (tp_credential_verify(&p->secret, req->method, req->path,
                             req->authorization, now, AUTH_WINDOW_S, req->body,
                             req->body_len, mac, &why) != SM_OK) {
        reply_error(res, 401, why);
        return 0;
    }
    /* Within the window a credential could be replayed: remember the last
     * 256 (more than any operator issues in a minute) and refuse repeats. */
    size_t n_seen = sizeof p->seen_mac / sizeof p->seen_mac[0];
    for (size_t i = 0; i < n_seen; i++) {
        if (memcmp(p->seen_mac[i], mac, TP_MAC_SIZE) == 0) {
            reply_error(res, 401, "credential already used");
            return 0;
        }
    }
    memcpy(p->seen_mac[p->seen_next], mac, TP_MAC_SIZE);
    p->seen_next = (p->seen_next + 1) % n_seen;
    return 1;
}

static void handle_flush(struct node_peer *p,
                         const struct node_http_request *req,
                         struct node_http_response *res)
{
    if (!authorized(p, req, res)) {
        return;
    }
    if (p->ingest != NULL) {
        /* every peer holds part of the open windows: all of them close */
        int n = node_mesh_ingest_flush(p->ingest);
        if (n < 0) {
            res->retry_after_s = 5;
            reply_error(res, 503, "out of memory closing windows; retry later");
            return;
        }
        sm_log(SM_LOG_INFO, MOD, "flushed, and asked the other peers to",
               "windows=%d", n);
        reply(res, 200, "application/json", "{\"windows_closed\":%d}\n", n);
        return;
    }
    struct cbn_agg_stats before, after;
    cbn_agg_stats(p->agg, &before);
    if (cbn_agg_flush(p->agg, window_closed, p) != SM_OK) {
        res->retry_after_s = 5;
        reply_error(res, 503, "out of memory closing windows; retry later");
        return;
    }
    cbn_agg_stats(p->agg, &after);
    sm_log(SM_LOG_INFO, MOD, "flushed", "windows=%" PRIu64,
           after.windows_closed - before.windows_closed);
    reply(res, 200, "application/json", "{\"windows_closed\":%" PRIu64 "}\n",
          after.windows_closed - before.windows_closed);
}

static void handle_diagnoses(struct node_peer *p,
                             const struct node_http_request *req,
                             struct node_http_response *res)
{
    char text[32];
    uint64_t limit = 20;
    if (query_param(req->query, "limit", text, sizeof text) &&
        !parse_count(text, 1, NODE_DIAG_LIST_MAX, &limit)) {
        reply_error(res, 400, "limit must be a whole number from 1 to 1000");
        return;
    }
    if (p->mesh != NULL) {
        node_mesh_diagnoses_json(p->mesh, (size_t)limit, &p->out);
        node_text_puts(&p->out, "\n");
    } else {
        node_diag_store_list(p->diags, (size_t)limit, &p->out);
    }
    reply_out(p, res, 200);
}

/* ---- Actions ------------------------------------------------------------- */

static int have_actions(struct node_peer *p, struct node_http_response *res)
{
    if (p->actions == NULL) {
        reply_error(res, 409,
                    "this peer has no --qos-service: it decides no actions");
        return 0;
    }
    return 1;
}

static void handle_actions(struct node_peer *p,
                           const struct node_http_request *req,
                           struct node_http_response *res)
{
    if (!have_actions(p, res)) {
        return;
    }
    char text[32];
    uint64_t limit = 20;
    if (query_param(req->query, "limit", text, sizeof text) &&
        !parse_count(text, 1, 1000, &limit)) {
        reply_error(res, 400, "limit must be a whole number from 1 to 1000");
        return;
    }
    enum node_action_state state;
    int by_state = query_param(req->query, "state", text, sizeof text);
    if (by_state && node_action_state_parse(text, &state) != SM_OK) {
        reply_error(res, 400,
                    "state must be one of dry_run, pending, applying, "
                    "applied, verified, not_helped, rolling_back, "
                    "rolled_back, failed, interrupted");
        return;
    }
    node_actions_list(p->actions, (size_t)limit, by_state ? &state : NULL,
                      &p->out);
    node_text_puts(&p->out, "\n");
    reply_out(p, res, 200);
}

/* An action another peer decided: the call goes to that peer, whose agent
 * acts (202). Returns 0 when it is not a logged action of another peer. */
static int forward_action(struct node_peer *p,
                          struct node_http_response *res,
                          int rollback,
                          const char *id)
{
    char owner[TP_PEER_ID_MAX + 1];
    if (p->mesh == NULL ||
        node_mesh_action_owner(p->mesh, id, owner) != SM_OK ||
        strcmp(owner, p->cfg->id) == 0) {
        return 0;
    }
    if (node_mesh_forward_action(p->mesh, owner, rollback, id) != SM_OK) {
        res->retry_after_s = 5;
        reply_error(res, 503, "cannot reach the peer that decided the action");
        return 1;
    }
    const char *to = owner[0] != '\0' ? owner : "*"; /* every member */
    sm_log(
        SM_LOG_INFO, MOD, "an operator's call forwarded to the action's peer",
        "peer=%s call=%s action=%s", to, rollback ? "rollback" : "approve", id);
    reply(res, 202, "application/json",
          "{\"id\":\"%s\",\"forwarded_to\":\"%s\"}\n", id, to);
    return 1;
}

/* A forwarded approve or rollback, run here: the outcome reaches the log
 * (and every peer) through the action's states. */
static void on_forwarded_action(void *arg, int rollback, const char *id)
{
    struct node_peer *p = arg;
    char err[SM_ERRMSG_SIZE] = "";
    if (p->actions == NULL || strlen(id) != NODE_ACTION_ID_LEN) {
        return;
    }
    uint64_t now = sm_clock_wall_ns(p->clock);
    int rv = rollback ? node_actions_rollback(p->actions, id, now, err)
                      : node_actions_approve(p->actions, id, now, err);
    if (rv != SM_OK) {
        sm_log(SM_LOG_WARN, MOD, "a forwarded call was refused",
               "call=%s action=%s error=%s cause=\"%s\"",
               rollback ? "rollback" : "approve", id, sm_errname(rv), err);
    }
}

/* POST /v1/actions/approve and /v1/actions/rollback, body {"id":"..."}:
 * the id is in the body so the credential's MAC covers it. */
static void handle_action_change(struct node_peer *p,
                                 const struct node_http_request *req,
                                 struct node_http_response *res,
                                 int rollback)
{
    if (!authorized(p, req, res) || !have_actions(p, res)) {
        return;
    }
    struct sm_arena arena;
    static const char *const keys[] = {"id"};
    const char *id = NULL;
    char err[SM_ERRMSG_SIZE] = "";
    body_strings(req, &arena, keys, &id, 1);
    if (id == NULL || strlen(id) != NODE_ACTION_ID_LEN) {
        sm_arena_free(&arena);
        reply_error(res, 400, "the body must be {\"id\":\"<16 hex digits>\"}");
        return;
    }
    char copy[NODE_ACTION_ID_LEN + 1];
    snprintf(copy, sizeof copy, "%s", id);
    sm_arena_free(&arena);
    uint64_t now = sm_clock_wall_ns(p->clock);
    if (node_actions_get(p->actions, copy) == NULL &&
        forward_action(p, res, rollback, copy)) {
        return;
    }
    int rv = rollback ? node_actions_rollback(p->actions, copy, now, err)
                      : node_actions_approve(p->actions, copy, now, err);
    if (rv != SM_OK) {
        reply_error(res,
                    rv == SM_ENOTFOUND   ? 404
                    : rv == SM_ECONFLICT ? 409
                                         : 500,
                    err);
        return;
    }
    node_action_write_json(&p->out, node_actions_get(p->actions, copy));
    node_text_puts(&p->out, "\n");
    reply_out(p, res, 200);
}

/* A mutating call that needs the model: 409 when there is none. */
static int have_model_mgr(struct node_peer *p, struct node_http_response *res)
{
    if (p->model == NULL) {
        reply_error(res, 409,
                    "this peer has no --qos-service and --qos-target-ms: it "
                    "neither trains nor diagnoses");
        return 0;
    }
    return 1;
}

/* `sagemesh train` in the mesh: the leader runs the round (a follower
 * forwards the request); it is over here once the committed model is
 * installed. */
static void train_in_mesh(struct node_mesh *mesh,
                          const struct node_model_mgr_stats *ms,
                          struct node_http_response *res)
{
    if (node_mesh_train_request(mesh) != SM_OK) {
        res->retry_after_s = 5;
        reply_error(res, 503,
                    "the mesh has no leader to run the round; retry later");
        return;
    }
    sm_log(SM_LOG_INFO, MOD, "training round requested from the mesh",
           "windows=%zu", ms->windows);
    /* The next model version the log commits, whichever round makes it. */
    reply(res, 202, "application/json",
          "{\"model_version\":%" PRIu64 ",\"wait_for_rounds\":%" PRIu64 "}\n",
          ms->model_version, rounds_finished(ms) + 1);
}

static void handle_train(struct node_peer *p,
                         const struct node_http_request *req,
                         struct node_http_response *res)
{
    if (!authorized(p, req, res) || !have_model_mgr(p, res)) {
        return;
    }
    struct node_model_mgr_stats ms;
    node_model_mgr_stats(p->model, &ms);
    struct node_train *rounds =
        p->mesh != NULL ? node_mesh_train(p->mesh) : NULL;
    if (rounds != NULL && ms.windows >= 8) {
        /* (with fewer, the windows are replicated to every peer, so the
         * leader has too few as well: refused below) */
        train_in_mesh(p->mesh, &ms, res);
        return;
    }
    /* A running round finishes first; the requested one follows it. */
    uint64_t wait_for =
        ms.trainings + ms.training_failures + (ms.training ? 2 : 1);
    int rv = node_model_mgr_train_now(p->model);
    if (rv == SM_EAGAIN) {
        char msg[128];
        snprintf(msg, sizeof msg,
                 "only %zu windows are held; training needs at least 8",
                 ms.windows);
        reply_error(res, 409, msg);
        return;
    }
    if (rv != SM_OK) {
        res->retry_after_s = 5;
        reply_error(res, 503, "cannot start a training round; retry later");
        return;
    }
    sm_log(SM_LOG_INFO, MOD, "training requested", "windows=%zu", ms.windows);
    reply(res, 202, "application/json",
          "{\"model_version\":%" PRIu64 ",\"wait_for_rounds\":%" PRIu64 "}\n",
          ms.model_version, wait_for);
}

/* Appends the distinct services at one end of @s's links as a JSON
 * array: its callers (@callers) or its callees. */
static void put_neighbours(struct node_text *b,
                           const struct cbn_graph *g,
                           const char *s,
                           int callers)
{
    node_text_puts(b, "[");
    size_t n = 0;
    for (size_t i = 0; i < cbn_graph_link_count(g); i++) {
        const struct cbn_graph_link *l = cbn_graph_link(g, i);
        const char *self = callers ? l->callee : l->caller;
        const char *other = callers ? l->caller : l->callee;
        if (strcmp(self, s) != 0) {
            continue;
        }
        int seen = 0; /* links are few per service: a quadratic check */
        for (size_t k = 0; k < i && !seen; k++) {
            const struct cbn_graph_link *e = cbn_graph_link(g, k);
            seen = strcmp(callers ? e->callee : e->caller, s) == 0 &&
                   strcmp(callers ? e->caller : e->callee, other) == 0;
        }
        if (!seen) {
            if (n++ > 0) {
                node_text_puts(b, ",");
            }
            node_text_json_str(b, other);
        }
    }
    node_text_puts(b, "]");
}

static void handle_services(struct node_peer *p, struct node_http_response *res)
{
    struct node_text *b = &p->out;
    const struct cbn_graph *g = p->graph;
    node_text_printf(b, "{\"cbn_version\":%" PRIu64 ",\"services\":[",
                     cbn_graph_version(g));
    size_t k = 0;
    for (size_t i = 0; i < cbn_graph_node_count(g); i++) {
        const struct cbn_graph_node *n = cbn_graph_node(g, i);
        for (size_t m = 0; m < n->n_members; m++) {
            if (k++ > 0) {
                node_text_puts(b, ",");
            }
            node_text_puts(b, "{\"name\":");
            node_text_json_str(b, n->members[m]);
            node_text_puts(b, ",\"node\":");
            node_text_json_str(b, n->name);
            node_text_printf(b, ",\"inferred\":%s,\"callers\":",
                             n->inferred ? "true" : "false");
            put_neighbours(b, g, n->members[m], 1);
            node_text_puts(b, ",\"callees\":");
            put_neighbours(b, g, n->members[m], 0);
            node_text_puts(b, "}");
        }
    }
    node_text_puts(b, "]}\n");
    reply_out(p, res, 200);
}

#define DIAGNOSE_MAX_WINDOWS 100

static void handle_diagnose_post(struct node_peer *p,
                                 const struct node_http_request *req,
                                 struct node_http_response *res)
{
    char err[SM_ERRMSG_SIZE] = "";
    uint64_t from, to;
    if (!is_json(req->content_type)) {
        reply_error(res, 415, "send application/json");
        return;
    }
    if (node_diagnose_request_parse(req->body, req->body_len, &from, &to,
                                    err) != SM_OK) {
        reply_error(res, 400, err);
        return;
    }
    if (p->model == NULL) {
        have_model_mgr(p, res);
        return;
    }
    /* The oldest slot (smallest id) makes room for the new request. */
    struct diag_request *q = &p->requests[0];
    for (size_t i = 1; i < N_REQUESTS; i++) {
        if (p->requests[i].id < q->id) {
            q = &p->requests[i];
        }
    }
    uint64_t id = ++p->next_request;
    size_t queued = 0;
    int rv = node_model_mgr_diagnose_range(p->model, from, to,
                                           DIAGNOSE_MAX_WINDOWS, id, &queued);
    switch (rv) {
        case SM_OK:
            break;
        case SM_ENOTFOUND: {
            struct node_model_mgr_stats ms;
            node_model_mgr_stats(p->model, &ms);
            reply_error(res, ms.model_version ? 404 : 409,
                        ms.model_version ? "no window of the model's history "
                                           "ends in that range"
                                         : "no model yet: it trains once "
                                           "enough windows are held");
            return;
        }
        case SM_ETOOBIG:
            reply_error(res, 400,
                        "more than 100 windows in that range; narrow it");
            return;
        case SM_EAGAIN:
            res->retry_after_s = 1;
            reply_error(res, 503,
                        "another diagnose request is running; retry later");
            return;
        case SM_ECLOSED:
            reply_error(res, 503, "the peer is stopping");
            return;
        default:
            res->retry_after_s = 5;
            reply_error(res, 503, "out of memory; retry later");
            return;
    }
    free(q->body.s);
    memset(q, 0, sizeof *q);
    q->id = id;
    q->windows = queued;
    reply(res, 202, "application/json",
          "{\"request\":\"%" PRIu64 "\",\"windows\":%zu}\n", id, queued);
}

static void handle_diagnose_get(struct node_peer *p,
                                const struct node_http_request *req,
                                struct node_http_response *res)
{
    char text[32];
    uint64_t id = 0;
    if (!query_param(req->query, "request", text, sizeof text) ||
        !parse_count(text, 1, UINT64_MAX, &id)) {
        reply_error(res, 400, "expected ?request=ID from POST /v1/diagnose");
        return;
    }
    const struct diag_request *q = find_request(p, id);
    if (q == NULL) {
        reply_error(res, 404, "no such request (only the 16 newest are kept)");
        return;
    }
    int done = q->done == q->windows;
    node_text_printf(&p->out,
                     "{\"request\":\"%" PRIu64
                     "\",\"done\":%s,\"windows\":%zu,"
                     "\"diagnoses\":[",
                     id, done ? "true" : "false", q->windows);
    if (done && q->body.s != NULL) {
        node_text_put(&p->out, q->body.s, q->body.len);
    }
    node_text_puts(
        &p->out, q->body.failed ? "],\"error\":\"out of memory\"}\n" : "]}\n");
    reply_out(p, res, 200);
}

static void handle_readyz(struct node_peer *p,
                          const struct node_http_request *req,
                          struct node_http_response *res)
{
    int verbose = strstr(req->query, "verbose") != NULL;
    if (!verbose) {
        reply(res, p->ready ? 200 : 503, "text/plain",
              p->ready ? "ok\n" : "not ready\n");
        return;
    }
    reply(res, p->ready ? 200 : 503, "text/plain",
          "[%s] listening\n[%s] window log loaded (%" PRIu64
          " windows)\n[%s] diagnosis store loaded (%zu diagnoses)\n"
          "[%s] model manager %s\n",
          p->http ? "+" : "-", p->ready ? "+" : "-", p->windows_replayed,
          p->diags ? "+" : "-", p->diags ? node_diag_store_count(p->diags) : 0,
          p->model || !p->cfg->qos_service ? "+" : "-",
          p->model ? "running" : "off (no --qos-service)");
}

static void handle(void *arg,
                   const struct node_http_request *req,
                   struct node_http_response *res)
{
    struct node_peer *p = arg;
    free(p->out.s); /* the previous answer, copied by the server */
    memset(&p->out, 0, sizeof p->out);
    int post = strcmp(req->method, "POST") == 0;
    int get = strcmp(req->method, "GET") == 0;
    static const struct
    {
        const char *path;
        int method; /* 1 GET, 2 POST */
    } routes[] = {
        {"/v1/traces", 2},
        {"/api/v2/spans", 2},
        {"/v1/metrics", 2},
        {"/v1/flush", 2},
        {"/v1/train", 2},
        {"/v1/diagnose", 2},
        {"/healthz", 1},
        {"/readyz", 1},
        {"/metrics", 1},
        {"/v1/status", 1},
        {"/v1/diagnoses", 1},
        {"/v1/services", 1},
        {"/v1/diagnose", 1},
        {"/v1/actions", 1},
        {"/v1/actions/approve", 2},
        {"/v1/actions/rollback", 2},
        {"/v1/members", 1},
        {"/v1/members/add", 2},
        {"/v1/members/remove", 2},
    };
    const char *path = req->path;
    int known = 0, allowed = 0;
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        if (strcmp(path, routes[i].path) == 0) {
            known = 1;
            allowed |= (routes[i].method == 1 && get) ||
                       (routes[i].method == 2 && post);
        }
    }
    if (!known) {
        reply_error(res, 404, "no such endpoint");
    } else if (!allowed) {
        reply_error(res, 405, "method not allowed");
    } else if (strcmp(path, "/v1/traces") == 0) {
        handle_traces(p, req, res, 0);
    } else if (strcmp(path, "/api/v2/spans") == 0) {
        handle_traces(p, req, res, 1);
    } else if (strcmp(path, "/v1/metrics") == 0 && post) {
        handle_metrics_post(p, req, res);
    } else if (strcmp(path, "/v1/flush") == 0) {
        handle_flush(p, req, res);
    } else if (strcmp(path, "/v1/train") == 0) {
        handle_train(p, req, res);
    } else if (strcmp(path, "/v1/diagnose") == 0) {
        if (post) {
            handle_diagnose_post(p, req, res);
        } else {
            handle_diagnose_get(p, req, res);
        }
    } else if (strcmp(path, "/healthz") == 0) {
        reply(res, 200, "text/plain", "ok\n");
    } else if (strcmp(path, "/readyz") == 0) {
        handle_readyz(p, req, res);
    } else if (strcmp(path, "/metrics") == 0) {
        handle_metrics_get(p, res);
    } else if (strcmp(path, "/v1/status") == 0) {
        handle_status(p, res);
    } else if (strcmp(path, "/v1/diagnoses") == 0) {
        handle_diagnoses(p, req, res);
    } else if (strcmp(path, "/v1/members") == 0) {
        handle_members(p, res);
    } else if (strcmp(path, "/v1/members/add") == 0) {
        handle_member_change(p, req, res, 1);
    } else if (strcmp(path, "/v1/members/remove") == 0) {
        handle_member_change(p, req, res, 0);
    } else if (strcmp(path, "/v1/actions") == 0) {
        handle_actions(p, req, res);
    } else if (strcmp(path, "/v1/actions/approve") == 0) {
        handle_action_change(p, req, res, 0);
    } else if (strcmp(path, "/v1/actions/rollback") == 0) {
        handle_action_change(p, req, res, 1);
    } else {
        handle_services(p, res);
    }
    count_code(p, res->status);
}

/* ---- Scraping
 * ---------------------------------------------------------------- */

struct scrape_ctx
{
    struct node_peer *peer;
    struct scrape_target *target;
    uint64_t scrape_ns;
    uint64_t seen;
};

static int scrape_sample(void *arg, const struct node_prom_sample *sample)
{
    struct scrape_ctx *c = arg;
    c->seen++;
    return node_prom_to_point(sample, &c->peer->service_labels,
                              c->target->service[0] ? c->target->service : NULL,
                              c->target->instance, c->scrape_ns,
                              &c->peer->points);
}

static void scrape_done(void *arg, const struct node_http_result *r)
{
    struct scrape_target *t = arg;
    struct node_peer *p = t->peer;
    t->in_flight = 0;
    t->scrapes++;
    if (p->stopping) {
        return;
    }
    if (r->status != SM_OK || r->http_status != 200) {
        t->failures++;
        sm_log(SM_LOG_WARN, MOD, "scrape failed",
               "url=%s error=%s http_status=%d cause=\"%s\"", t->url,
               sm_errname(r->status), r->http_status,
               r->errmsg ? r->errmsg : "");
        return;
    }
    char err[SM_ERRMSG_SIZE] = "";
    struct scrape_ctx c = {p, t, sm_clock_wall_ns(p->clock), 0};
    node_points_reset(&p->points);
    int rv = node_prom_parse((const char *)r->body, r->body_len, scrape_sample,
                             &c, err);
    if (rv == SM_OK) {
        rv = cbn_agg_add_metrics(p->agg, p->points.v, p->points.n);
    }
    if (rv != SM_OK) {
        /* All or nothing: a scrape that does not parse adds nothing. */
        t->failures++;
        sm_log(SM_LOG_WARN, MOD, "scrape rejected",
               "url=%s error=%s cause=\"%s\"", t->url, sm_errname(rv), err);
        return;
    }
    if (p->ingest != NULL) {
        node_mesh_ingest_points(p->ingest, p->points.v, p->points.n);
    }
    t->samples += p->points.n;
    t->skipped += c.seen - p->points.n;
    p->last_data_mono_ns = sm_clock_mono_ns(p->clock);
    close_windows(p);
}

static void scrape_tick(uv_timer_t *timer)
{
    struct scrape_target *t = timer->data;
    if (t->in_flight || t->peer->stopping) {
        return; /* the previous scrape is still running: skip, not pile up */
    }
    uint64_t timeout = (uint64_t)(t->peer->cfg->scrape_interval_s * 1000);
    if (node_http_get(t->peer->loop, t->url,
                      "text/plain;version=0.0.4;q=1,*/*;q=0.1", timeout,
                      SCRAPE_MAX_BODY, scrape_done, t) == SM_OK) {
        t->in_flight = 1;
    }
}

/* ---- Start and stop -------------------------------------------------------
 */

static void on_handle_closed(uv_handle_t *h)
{
    struct node_peer *p = h->data;
    p->open_handles--;
}

static void close_handle(struct node_peer *p, uv_handle_t *h)
{
    if (!uv_is_closing(h)) {
        p->open_handles++;
        h->data = p;
        uv_close(h, on_handle_closed);
    }
}

static void on_model_closed(void *arg)
{
    struct node_peer *p = arg;
    p->open_handles--;
}

static void on_http_closed(void *arg)
{
    struct node_peer *p = arg;
    p->open_handles--;
}

static void on_mesh_closed(void *arg)
{
    struct node_peer *p = arg;
    p->open_handles--;
}

static void on_sweep_closed(void *arg)
{
    struct node_peer *p = arg;
    p->open_handles--;
}

void node_peer_stop(struct node_peer *p)
{
    if (p->stopping) {
        return;
    }
    p->stopping = 1;
    p->ready = 0;
    /* Keep what the open windows hold: flush them into the log, or in the
     * mesh hand them to the leader (a leader delivers what it merges). */
    if (p->ingest != NULL) {
        node_mesh_ingest_stop(p->ingest);
    } else if (p->agg != NULL && p->log != NULL &&
               cbn_agg_flush(p->agg, window_closed, p) != SM_OK) {
        sm_log(SM_LOG_ERROR, MOD, "out of memory flushing open windows", NULL);
    }
    if (p->model != NULL) {
        /* A running training round stops at its next step. */
        p->open_handles++;
        node_model_mgr_close(p->model, on_model_closed, p);
        p->model = NULL;
    }
    close_handle(p, (uv_handle_t *)&p->tick);
    close_handle(p, (uv_handle_t *)&p->sigint);
    close_handle(p, (uv_handle_t *)&p->sigterm);
    close_handle(p, (uv_handle_t *)&p->sighup);
    for (size_t i = 0; i < p->n_targets; i++) {
        close_handle(p, (uv_handle_t *)&p->targets[i].timer);
    }
    if (p->http != NULL) {
        p->open_handles++;
        node_http_server_close(p->http, on_http_closed, p);
        p->http = NULL;
    }
    if (p->mesh != NULL) {
        if (p->mm != NULL) {
            node_mesh_model_attach(p->mm, NULL);
        }
        node_mesh_ingest_free(p->ingest);
        p->ingest = NULL;
        p->open_handles++;
        node_mesh_stop(p->mesh, on_mesh_closed, p);
        p->mesh = NULL;
    }
    if (p->sweep != NULL) {
        /* wakes a diagnosis waiting for owners; freed in node_peer_free */
        p->open_handles++;
        node_sweep_close(p->sweep, on_sweep_closed, p);
    }
}

/* Points standard error, where the log goes, at the end of @path (created
 * mode 0640 if missing). Returns SM_OK or an errno-mapped error. */
static int open_log_file(const char *path)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0) {
        return sm_err_from_errno(errno);
    }
    if (fd == STDERR_FILENO) {
        return SM_OK; /* cannot happen once 0-2 are open; be safe */
    }
    int rv = dup2(fd, STDERR_FILENO) < 0 ? sm_err_from_errno(errno) : SM_OK;
    close(fd);
    return rv;
}

/* SIGHUP: reopen the log file, so that logrotate can move it away. */
static void on_sighup(uv_signal_t *s, int signum)
{
    struct node_peer *p = s->data;
    (void)signum;
    if (p->cfg->log_file == NULL) {
        return;
    }
    int rv = open_log_file(p->cfg->log_file);
    if (rv != SM_OK) {
        /* The old file stays open: nothing is lost but the rotation. */
        sm_log(SM_LOG_ERROR, MOD, "cannot reopen the log file",
               "path=%s error=%s", p->cfg->log_file, sm_errname(rv));
        return;
    }
    sm_log(SM_LOG_INFO, MOD, "log file reopened", "path=%s", p->cfg->log_file);
}

static void on_signal(uv_signal_t *s, int signum)
{
    struct node_peer *p = s->data;
    sm_log(SM_LOG_INFO, MOD, "stopping", "signal=%d", signum);
    node_peer_stop(p);
}

int node_peer_stopped(const struct node_peer *p)
{
    /* A scrape in flight still holds the target: wait for its callback
     * (bounded by the scrape timeout) before the peer may be freed. */
    for (size_t i = 0; i < p->n_targets; i++) {
        if (p->targets[i].in_flight) {
            return 0;
        }
    }
    return p->stopping && p->open_handles == 0;
}

int node_peer_http_port(const struct node_peer *p)
{
    return p->http != NULL ? node_http_server_port(p->http) : -1;
}

void node_peer_on_window(struct node_peer *p,
                         void (*cb)(void *arg, const struct cbn_window *w),
                         void *arg)
{
    p->on_window = cb;
    p->on_window_arg = arg;
}

void node_peer_free(struct node_peer *p)
{
    if (p == NULL) {
        return;
    }
    SM_ASSERT(p->open_handles == 0);
    cbn_agg_free(p->agg);
    node_mesh_model_free(p->mm);
    node_sweep_free(p->sweep);
    cbn_log_close(p->log);
    cbn_log_close(p->mesh_log);
    node_diag_store_close(p->diags);
    node_actions_close(p->actions);
    node_agent_close(p->agent);
    for (size_t i = 0; i < N_REQUESTS; i++) {
        free(p->requests[i].body.s);
    }
    free(p->out.s);
    cbn_graph_free(p->graph);
    cbn_normals_free(p->normals);
    node_spans_free(&p->spans);
    node_points_free(&p->points);
    tp_secret_wipe(&p->secret);
    sm_free(p);
}

/* Makes the data directory (one level) with mode 0700. */
static int make_dir(const char *dir, char *errmsg)
{
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        sm_errmsg_printf(errmsg, "cannot create data directory %s: %s", dir,
                         strerror(errno));
        return sm_err_from_errno(errno);
    }
    if (access(dir, W_OK | X_OK) != 0) {
        sm_errmsg_printf(errmsg, "data directory %s is not writable: %s", dir,
                         strerror(errno));
        return SM_EPERM;
    }
    return SM_OK;
}

/* Says so plainly when another peer holds the data directory's logs. */
static int in_use(const struct node_peer *p, int rv, char *errmsg)
{
    if (rv == SM_EEXIST) {
        sm_errmsg_printf(errmsg,
                         "data directory %s is in use by another peer (one "
                         "peer per directory)",
                         p->cfg->data_dir);
    }
    return rv;
}

/* Opens the window log and the diagnosis store in the data directory
 * (created if missing); nothing is replayed yet. */
static int open_store(struct node_peer *p, char *errmsg)
{
    char dir[4096];
    if (snprintf(dir, sizeof dir, "%s/diagnoses", p->cfg->data_dir) >=
        (int)sizeof dir) {
        sm_errmsg_printf(errmsg, "data directory path too long");
        return SM_EINVAL;
    }
    int rv = make_dir(p->cfg->data_dir, errmsg);
    if (rv != SM_OK) {
        return rv;
    }
    rv = node_diag_store_open(dir, &p->diags, errmsg);
    if (rv != SM_OK) {
        return in_use(p, rv, errmsg);
    }
    snprintf(dir, sizeof dir, "%s/windows", p->cfg->data_dir);
    struct cbn_log_config lc = {
        .dir = dir,
        .retain_bytes = RETAIN_BYTES,
        .retain_ns = RETAIN_NS,
        .sync = CBN_LOG_SYNC_EVERY,
    };
    rv = cbn_log_open(&lc, &p->log, errmsg);
    if (rv != SM_OK) {
        return in_use(p, rv, errmsg);
    }
    if (p->has_secret) {
        snprintf(dir, sizeof dir, "%s/mesh-windows", p->cfg->data_dir);
        rv = cbn_log_open(&lc, &p->mesh_log, errmsg);
        if (rv != SM_OK) {
            return in_use(p, rv, errmsg);
        }
    }
    struct cbn_log_stats ls;
    cbn_log_stats(p->log, &ls);
    /* At most the newest max_pending (64) windows are diagnosed again. */
    uint64_t redo = 64 * (uint64_t)(p->cfg->window_s * NS);
    p->redo_after_ns = ls.newest_time_ns > redo ? ls.newest_time_ns - redo : 0;
    if (ls.torn_bytes_repaired > 0 || ls.corrupt_records > 0) {
        sm_log(SM_LOG_WARN, MOD, "window log repaired",
               "torn_bytes=%" PRIu64 " corrupt_records=%" PRIu64,
               ls.torn_bytes_repaired, ls.corrupt_records);
    }
    return SM_OK;
}

/* Feeds the stored windows to the CBN and the model, and resumes the
 * aggregator after the newest. */
static int replay_store(struct node_peer *p, char *errmsg)
{
    int rv = cbn_log_replay(p->log, replay_record, p);
    if (rv != SM_OK) {
        sm_errmsg_printf(errmsg, "replaying the window log: %s",
                         sm_strerror(rv));
        return rv;
    }
    if (p->newest_window_end_ns > 0) {
        cbn_agg_resume(p->agg, p->newest_window_end_ns);
    }
    if (p->mesh_log != NULL && p->model != NULL) {
        p->mesh_windows_replayed =
            node_mesh_model_replay(p->mesh_log, p->model);
    }
    return SM_OK;
}

/* ---- Actuation ----------------------------------------------------------- */

struct action_work
{
    uv_work_t req;
    struct node_peer *peer;
    struct node_action_job *job;
};

static void action_work(uv_work_t *req)
{
    struct action_work *w = req->data;
    node_actions_job_run(w->job);
}

static void action_done(uv_work_t *req, int status)
{
    struct action_work *w = req->data;
    struct node_peer *p = w->peer;
    p->jobs_running--;
    if (status == 0) {
        node_actions_job_done(p->actions, w->job, sm_clock_wall_ns(p->clock));
    }
    /* Cancelled (the peer is stopping): the action stays "applying" in the
     * log and the next start finishes it. */
    sm_free(w->job);
    sm_free(w);
}

/* The agent's changes run on libuv's thread pool: a scale-out command may
 * take seconds, and cgroup writes can block on a busy kernel. */
static void submit_action(void *arg, struct node_action_job *job)
{
    struct node_peer *p = arg;
    struct action_work *w = sm_calloc(1, sizeof *w);
    if (w != NULL) {
        w->peer = p;
        w->job = job;
        w->req.data = w;
        if (uv_queue_work(p->loop, &w->req, action_work, action_done) == 0) {
            p->jobs_running++;
            return;
        }
        sm_free(w);
    }
    sm_log(SM_LOG_ERROR, MOD,
           "cannot queue an action; the next start applies it", "id=%s",
           job->action.id);
    sm_free(job);
}

/* Opens the agent and the action log when there is a QoS service to act
 * for. A host without cgroups still runs: its actions fail with the reason,
 * which the log and `sagemesh actions list` show. */
static int open_actions(struct node_peer *p, char *errmsg)
{
    const struct node_config *c = p->cfg;
    if (c->qos_service == NULL) {
        return SM_OK;
    }
    struct node_agent_config ac = {
        .cgroup_root = c->cgroup_root,
        .cgroup_path = c->cgroup_path,
        .scale_out_cmd = c->scale_out_command,
        .command_timeout_s = c->command_timeout_s,
        .tc_dev = c->tc_dev,
        .tc_classes = c->tc_classes,
        .tc_class = c->tc_class,
        .n_tc_class = c->n_tc_class,
        .tc_path = c->tc_path,
        .resctrl_root = c->resctrl_root,
        .resctrl_group = c->resctrl_group,
        .cpufreq_root = c->cpufreq_root,
    };
    int cgroups_ok = 0;
    char why[SM_ERRMSG_SIZE] = "";
    int rv = node_agent_open(&ac, &p->agent, &cgroups_ok, why);
    if (rv != SM_OK) {
        sm_errmsg_printf(errmsg, "%s", why);
        return rv;
    }
    if (!cgroups_ok && c->actuate != ACT_MODE_OFF) {
        sm_log(SM_LOG_WARN, MOD, "no cgroups found: local actions will fail",
               "cause=\"%s\"", why);
    }
    struct node_actions_config cfg;
    act_plan_config_init(&cfg.plan);
    cfg.plan.mode = c->actuate;
    cfg.plan.min_interval_ns = (uint64_t)(c->actuate_interval_s * NS);
    cfg.plan.verify_windows = (uint32_t)c->actuate_verify_windows;
    cfg.plan.escalate_windows = (uint32_t)c->actuate_escalate_windows;
    cfg.plan.max_cores = c->actuate_max_cores;
    cfg.plan.max_memory_bytes =
        (uint64_t)(c->actuate_max_memory_mb * 1024 * 1024);
    cfg.plan.scale_out_enabled = c->scale_out_command != NULL;
    cfg.rollback_unhelpful = strcmp(c->actuate_rollback, "unhelpful") == 0;
    node_agent_plan_limits(p->agent, &cfg.plan);
    p->executor = (struct node_action_executor){p, submit_action};
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/actions", c->data_dir);
    rv = node_actions_open(dir, &cfg, node_agent_ops(p->agent), &p->executor,
                           &p->actions, errmsg);
    if (rv != SM_OK) {
        return in_use(p, rv, errmsg);
    }
    sm_log(SM_LOG_INFO, MOD, "actuation",
           "mode=%s cgroups=%s cgroup_path=%s tc_dev=%s llc_ways_max=%u",
           act_mode_name(c->actuate), node_agent_layout(p->agent),
           c->cgroup_path != NULL ? c->cgroup_path : "(by process name)",
           c->tc_dev != NULL ? c->tc_dev : "(none)",
           (unsigned)cfg.plan.max_llc_ways);
    return SM_OK;
}

/* Starts the model manager when QoS is configured (it needs a frontend
 * and a target to train for). */
static int start_model(struct node_peer *p, char *errmsg)
{
    if (p->cfg->qos_service == NULL) {
        sm_log(SM_LOG_WARN, MOD,
               "no --qos-service: the peer stores windows but neither trains "
               "nor diagnoses",
               NULL);
        return SM_OK;
    }
    struct node_model_mgr_config mc;
    node_model_mgr_config_default(&mc);
    mc.qos_service = p->cfg->qos_service;
    mc.qos_percentile = p->cfg->qos_percentile;
    mc.qos_target_ms = p->cfg->qos_target_ms;
    mc.min_windows = (size_t)p->cfg->train_after;
    mc.retrain_every = (size_t)p->cfg->retrain_every;
    if (mc.max_windows < mc.min_windows) {
        mc.max_windows = mc.min_windows;
    }
    mc.data_dir = p->cfg->data_dir;
    /* In the mesh the leader runs the rounds (node/mesh_train.h). */
    mc.coordinated = p->has_secret;
    struct node_model_mgr_callbacks cb = {
        .diagnosis = on_diagnosis,
        .round = on_round,
        .arg = p,
    };
    return node_model_mgr_new(p->loop, &mc, &cb, &p->model, errmsg);
}

static void offer_to_mesh(void *arg,
                          const char *id,
                          uint64_t window_end_ns,
                          const char *json,
                          size_t len)
{
    struct node_peer *p = arg;
    node_mesh_add_diagnosis(p->mesh, id, window_end_ns, json, len);
}

/* Copies an action's decision and its progress into the mesh's log, so
 * they survive a leader failover and every peer sees them. Dry runs are
 * not decisions to act and stay local. */
static void replicate_action(void *arg, const struct node_action *act)
{
    struct node_peer *p = arg;
    if (p->mesh == NULL || act->state == NODE_ACTION_DRY_RUN ||
        act->state == NODE_ACTION_ROLLING_BACK) {
        return;
    }
    struct cons_cmd decide = {.type = CONS_CMD_ACTION_DECIDE};
    decide.u.decision.id = act->id;
    decide.u.decision.diagnosis_id = act->diagnosis_id;
    decide.u.decision.service = act->service;
    decide.u.decision.kind = act_kind_name(act->plan.kind);
    /* Fixed point, thousandths of the kind's unit: no floating point in
     * the state machine. */
    decide.u.decision.from = (int64_t)llround(act->plan.from * 1000);
    decide.u.decision.to = (int64_t)llround(act->plan.to * 1000);
    decide.u.decision.time_ms = act->window_end_ns / 1000000;
    node_mesh_add_action(p->mesh, &decide);
    enum cons_action_state st;
    switch (act->state) {
        case NODE_ACTION_APPLYING:
            st = CONS_ACT_APPROVED;
            break;
        case NODE_ACTION_APPLIED:
        case NODE_ACTION_NOT_HELPED:
            st = CONS_ACT_APPLIED;
            break;
        case NODE_ACTION_VERIFIED:
            st = CONS_ACT_VERIFIED;
            break;
        case NODE_ACTION_ROLLED_BACK:
            st = CONS_ACT_ROLLED_BACK;
            break;
        case NODE_ACTION_FAILED:
        case NODE_ACTION_INTERRUPTED:
            st = CONS_ACT_FAILED;
            break;
        default:
            return; /* pending: the decision alone */
    }
    /* "applied by p2: <error>", cut to what the log accepts. */
    char ack[CONS_ACK_MAX + 1];
    int n = snprintf(ack, sizeof ack, "%s by %s",
                     node_action_state_name(act->state), p->cfg->id);
    if (act->error[0] != '\0' && n > 0 && (size_t)n + 3 < sizeof ack) {
        snprintf(ack + n, sizeof ack - (size_t)n, ": %.*s",
                 (int)(sizeof ack - (size_t)n - 3), act->error);
    }
    struct cons_cmd change = {.type = CONS_CMD_ACTION_STATE};
    change.u.action.id = act->id;
    change.u.action.state = st;
    change.u.action.ack = ack;
    change.u.action.time_ms = act->updated_ns / 1000000;
    node_mesh_add_action(p->mesh, &change);
}

/* ---- Sweeps across owners ------------------------------------------------ */

static int sweep_send(void *arg,
                      const char *peer,
                      int type,
                      uint64_t id,
                      const void *data,
                      size_t len)
{
    struct node_peer *p = arg;
    return p->mesh != NULL ? node_mesh_send(p->mesh, peer, type, id, data, len)
                           : SM_ECLOSED;
}

static void on_sweep_message(void *arg,
                             const char *peer,
                             int type,
                             uint64_t id,
                             const void *data,
                             size_t len)
{
    struct node_peer *p = arg;
    if (type == TP_MSG_SWEEP_REQ) {
        node_sweep_serve(p->sweep, p->model, peer, id, data, len);
    } else {
        node_sweep_reply(p->sweep, peer, id, data, len);
    }
}

static void on_sweep_owners(void *arg,
                            const char *const *names,
                            const char *const *owners,
                            size_t n)
{
    struct node_peer *p = arg;
    node_sweep_set_owners(p->sweep, p->cfg->id, names, owners, n);
}

static void on_ingest_message(void *arg,
                              const char *peer,
                              int type,
                              const void *data,
                              size_t len)
{
    struct node_peer *p = arg;
    if (p->ingest != NULL) {
        node_mesh_ingest_recv(p->ingest, peer, type, data, len);
    }
}

/* The newest window this peer holds: its own, or one replicated to it. */
static uint64_t newest_window(void *arg)
{
    struct node_peer *p = arg;
    uint64_t newest = p->newest_window_end_ns;
    if (p->mesh_log != NULL) {
        struct cbn_log_stats ls;
        cbn_log_stats(p->mesh_log, &ls);
        newest = ls.newest_time_ns > newest ? ls.newest_time_ns : newest;
    }
    return newest;
}

static int diagnosed_already(void *arg, uint64_t end_ns)
{
    struct node_peer *p = arg;
    char id[NODE_DIAG_ID_LEN + 1];
    node_diagnosis_id(end_ns, p->cfg->qos_service, id);
    return node_diag_store_has(p->diags, id) ||
           node_mesh_has_diagnosis(p->mesh, id);
}

/* A new leader merges the windows from now on; a violated window its
 * predecessor merged but did not get into the log (it died mid-sweep) is
 * diagnosed here, once: the log keeps one diagnosis per id. */
static void on_lead(void *arg)
{
    struct node_peer *p = arg;
    if (p->model == NULL) {
        return;
    }
    size_t n = node_model_mgr_rediagnose(p->model, 16, diagnosed_already, p);
    if (n > 0) {
        sm_log(SM_LOG_INFO, MOD,
               "leading now: diagnosing violated windows the previous "
               "leader left undiagnosed",
               "windows=%zu", n);
    }
}

/* How long the leader waits for a peer's part of a window: the parts of
 * live peers come within a tick or two of each other; past this, a slow
 * or cut-off peer's part is late rather than the whole window. At least
 * a re-send (2 s) and a tick more, so that a new leader, which drops parts
 * until it is ready, gets them again before it gives up on them. */
static uint64_t merge_wait_ms(const struct node_peer *p)
{
    double ms = p->cfg->window_s * 1e3;
    return ms < 3500 ? 3500 : ms > 5000 ? 5000 : (uint64_t)ms;
}

/* Joins or starts the mesh when the peer has the cluster secret. */
static int start_mesh(struct node_peer *p, char *errmsg)
{
    if (!p->has_secret) {
        return SM_OK;
    }
    struct node_mesh_config mc = {
        .id = p->cfg->id,
        .listen_peer = p->cfg->listen_peer,
        .advertise_peer = p->cfg->advertise_peer,
        .join = p->cfg->join,
        .n_join = p->cfg->n_join,
        .data_dir = p->cfg->data_dir,
        .secret = &p->secret,
        .election_ms = (unsigned)p->cfg->election_ms,
        .voters = (unsigned)p->cfg->voters,
        .log_keep = (uint64_t)p->cfg->log_keep,
        /* routed: each peer reports the services of its own hosts */
        .place_settle_ms = strcmp(p->cfg->ingest, "routed") == 0 ? 30000 : 0,
        .hooks = {.arg = p,
                  .on_action = on_forwarded_action,
                  .on_ingest = on_ingest_message},
    };
    struct node_train_env env = {0};
    if (p->model != NULL) {
        if (node_mesh_model_new(p->model, p->mesh_log, &p->mm) != SM_OK) {
            sm_errmsg_printf(errmsg, "out of memory");
            return SM_ENOMEM;
        }
        node_mesh_model_env(p->mm, &env);
        node_mesh_model_on_install(p->mm, on_install, p);
        node_mesh_model_on_window(p->mm, on_replicated_window, p);
        mc.train = &env;
        struct node_sweep_ops so = {p, sweep_send};
        if (node_sweep_new(p->loop, &so, 0, &p->sweep) != SM_OK) {
            sm_errmsg_printf(errmsg, "cannot start the sweep broker");
            return SM_ENOMEM;
        }
        mc.hooks.on_sweep = on_sweep_message;
        mc.hooks.on_owners = on_sweep_owners;
    }
    /* On failure p->mesh may hold a half-started mesh: node_peer_stop()
     * closes it. */
    int rv = node_mesh_start(p->loop, &mc, &p->mesh, errmsg);
    if (rv == SM_OK && strcmp(p->cfg->ingest, "routed") == 0) {
        struct node_mesh_ingest_config ic = {
            .agg = p->agg,
            .mesh = p->mesh,
            .clock = p->clock,
            .wait_ms = merge_wait_ms(p),
            .window_ns = (uint64_t)(p->cfg->window_s * NS),
            .qos_configured =
                p->cfg->qos_service != NULL && p->cfg->qos_service[0] != '\0',
            .qos_target_ms = p->cfg->qos_target_ms,
            .qos_percentile = p->cfg->qos_percentile,
            .arg = p,
            .deliver = window_closed,
            .newest_window = newest_window,
            .on_lead = on_lead,
        };
        if (node_mesh_ingest_new(&ic, &p->ingest) != SM_OK) {
            sm_errmsg_printf(errmsg, "out of memory");
            rv = SM_ENOMEM;
        }
    }
    if (rv == SM_OK && p->mm != NULL) {
        node_mesh_model_attach(p->mm, p->mesh);
        struct node_model_remote hook;
        node_sweep_hook(p->sweep, &hook);
        node_model_mgr_set_remote(p->model, &hook);
    }
    if (rv == SM_OK) {
        /* A diagnosis stored just before a crash may never have reached
         * the log: offer the newest again; those already there are
         * dropped once the log is read back. */
        node_diag_store_each_newest(p->diags, NODE_MESH_OUTBOX_MAX,
                                    offer_to_mesh, p);
        if (p->actions != NULL) {
            /* Decisions made before a crash may not have reached the log. */
            node_actions_each_newest(p->actions, 64, replicate_action, p);
            node_actions_set_observer(p->actions, replicate_action, p);
        }
    }
    return rv;
}

int node_peer_mesh_port(const struct node_peer *p)
{
    return p->mesh != NULL ? node_mesh_port(p->mesh) : 0;
}

static int start_scrapers(struct node_peer *p, char *errmsg)
{
    uint64_t every = (uint64_t)(p->cfg->scrape_interval_s * 1000);
    for (size_t i = 0; i < p->cfg->n_scrape; i++) {
        struct scrape_target *t = &p->targets[p->n_targets];
        memset(t, 0, sizeof *t);
        t->peer = p;
        /* "http://host:port/path#service=NAME": the fragment names the
         * service of samples that carry none of the service labels. */
        const char *url = p->cfg->scrape[i];
        const char *frag = strchr(url, '#');
        snprintf(t->url, sizeof t->url, "%.*s",
                 (int)(frag ? (size_t)(frag - url) : strlen(url)), url);
        if (frag != NULL && strncmp(frag, "#service=", 9) == 0) {
            snprintf(t->service, sizeof t->service, "%s", frag + 9);
        }
        const char *host = t->url + 7; /* validated: starts with http:// */
        size_t n = strcspn(host, "/?#");
        if (n >= sizeof t->instance) {
            n = sizeof t->instance - 1;
        }
        memcpy(t->instance, host, n); /* both live in *t: no snprintf */
        t->instance[n] = '\0';
        if (uv_timer_init(p->loop, &t->timer) != 0) {
            sm_errmsg_printf(errmsg, "cannot create a scrape timer");
            return SM_EIO;
        }
        t->timer.data = t;
        p->n_targets++;
        uv_timer_start(&t->timer, scrape_tick, 10 + 97 * i % 1000, every);
    }
    return SM_OK;
}

int node_peer_start(uv_loop_t *loop,
                    struct node_config *cfg,
                    const struct sm_clock *clock,
                    uint64_t seed,
                    struct node_peer **out,
                    char errmsg[SM_ERRMSG_SIZE])
{
    struct node_peer *p = sm_calloc(1, sizeof *p);
    if (p == NULL) {
        return SM_ENOMEM;
    }
    p->cfg = cfg;
    p->clock = clock;
    p->loop = loop;
    p->last_qos_ms = NAN;
    p->last_data_mono_ns = sm_clock_mono_ns(clock);
    node_spans_init(&p->spans, BATCH_LIMIT);
    node_points_init(&p->points, BATCH_LIMIT);
    p->service_labels = node_default_service_labels;
    if (cfg->n_service_label > 0) {
        p->service_labels.names = cfg->service_label;
        p->service_labels.n = cfg->n_service_label;
    }
    /* Validated as PREFIX=CLASS; the prefix is the part before the '='. */
    size_t n_rules = 0;
    for (size_t i = 0; i < cfg->n_resource_class; i++) {
        const char *rc = cfg->resource_class[i];
        const char *eq = strchr(rc, '=');
        snprintf(p->rule_prefix[n_rules], sizeof p->rule_prefix[0], "%.*s",
                 (int)(eq - rc), rc);
        p->rules[n_rules].prefix = p->rule_prefix[n_rules];
        if (cbn_resource_parse(eq + 1, &p->rules[n_rules].resource) == SM_OK) {
            n_rules++;
        }
    }
    /* Every source must be in before a window closes. The slowest common
     * one is the OpenTelemetry SDKs' metric export, every 60 s: with a
     * tenth of the window (3 s), measured with the simulator's exporters,
     * a third of the spans and a quarter of the points were dropped. */
    double lateness = cfg->lateness_s >= 0
                          ? cfg->lateness_s
                          : fmax(DEFAULT_LATENESS_S, cfg->window_s / 10);
    cfg->lateness_s = lateness;
    struct cbn_agg_config ac = {
        .window_ns = (uint64_t)(cfg->window_s * NS),
        .lateness_ns = (uint64_t)(lateness * NS),
        .qos_service = cfg->qos_service,
        .qos_operation = cfg->qos_operation,
        .qos_percentile = cfg->qos_percentile,
        .qos_target_ms = cfg->qos_target_ms,
        .resource_overrides = n_rules ? p->rules : NULL,
        .n_resource_overrides = n_rules,
        .hash_seed = seed,
    };
    int rv = cbn_agg_new(&ac, &p->agg);
    if (rv == SM_OK) {
        struct cbn_graph_config gc = {.age_out_windows =
                                          (unsigned)cfg->age_out};
        rv = cbn_graph_new(&gc, &p->graph);
    }
    if (rv == SM_OK) {
        rv = cbn_normals_new(&p->normals);
    }
    if (rv != SM_OK) {
        sm_errmsg_printf(errmsg, "cannot set up the aggregator: %s",
                         sm_strerror(rv));
        node_peer_free(p);
        return rv;
    }
    if (cfg->secret_file != NULL) {
        rv = node_read_secret(cfg->secret_file, &p->secret, stderr, errmsg);
        if (rv != SM_OK) {
            node_peer_free(p);
            return rv;
        }
        p->has_secret = 1;
    }
    rv = open_store(p, errmsg);
    if (rv == SM_OK) {
        rv = open_actions(p, errmsg);
    }
    if (rv == SM_OK) {
        rv = start_model(p, errmsg);
    }
    if (rv != SM_OK) {
        node_peer_free(p);
        return rv;
    }
    /* From here on handles are open: a failure stops the peer, and the
     * caller runs the loop until it has stopped. */
    uv_timer_init(loop, &p->tick);
    p->tick.data = p;
    uv_signal_init(loop, &p->sigint);
    uv_signal_init(loop, &p->sigterm);
    uv_signal_init(loop, &p->sighup);
    p->sigint.data = p->sigterm.data = p->sighup.data = p;
    rv = replay_store(p, errmsg);
    if (rv == SM_OK && p->actions != NULL) {
        node_actions_resume(p->actions, sm_clock_wall_ns(p->clock));
    }
    if (rv == SM_OK) {
        char host[64];
        int port;
        SM_ASSERT(node_parse_hostport(cfg->listen_http, host, sizeof host,
                                      &port) == SM_OK); /* validated */
        struct node_http_server_config hc = {.max_body = MAX_BODY};
        rv = node_http_server_start(loop, host, port, &hc, handle, p, &p->http,
                                    errmsg);
        if (rv != SM_OK) {
            sm_errmsg_wrapf(errmsg, "--listen-http %s", cfg->listen_http);
        }
    }
    if (rv != SM_OK) {
        node_peer_stop(p);
        *out = p;
        return rv;
    }
    uv_timer_start(&p->tick, on_tick, 1000, 1000);
    rv = start_mesh(p, errmsg);
    if (rv != SM_OK) {
        node_peer_stop(p);
        *out = p;
        return rv;
    }
    rv = start_scrapers(p, errmsg);
    if (rv != SM_OK) {
        node_peer_stop(p);
        *out = p;
        return rv;
    }
    p->ready = 1;
    *out = p;
    return SM_OK;
}

void node_peer_handle_signals(struct node_peer *p)
{
    uv_signal_start(&p->sigint, on_signal, SIGINT);
    uv_signal_start(&p->sigterm, on_signal, SIGTERM);
    if (p->cfg->log_file != NULL) {
        /* Without a log file SIGHUP keeps its meaning: the terminal is
         * gone, stop. */
        uv_signal_start(&p->sighup, on_sighup, SIGHUP);
    }
}

/* ---- The command ------------------------------------------------------------
 */

static int read_file(const char *path, char **text, size_t *len, FILE *err)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(err, "sagemesh peer: cannot read %s: %s\n", path,
                strerror(errno));
        return -1;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf != NULL) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap || cap >= (1u << 20)) {
            break;
        }
        char *grown = realloc(buf, cap * 2);
        if (grown == NULL) {
            break;
        }
        buf = grown;
        cap *= 2;
    }
    int bad = ferror(f) || buf == NULL || n == cap;
    fclose(f);
    if (bad) {
        fprintf(err, "sagemesh peer: cannot read %s (too large or I/O error)\n",
                path);
        free(buf);
        return -1;
    }
    *text = buf;
    *len = n;
    return 0;
}

/* Applies --config first, then every other flag over it. */
static int parse_flags(int argc,
                       char **argv,
                       struct node_config *cfg,
                       FILE *err)
{
    char msg[SM_ERRMSG_SIZE];
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 1; i < argc; i++) {
            const char *a = argv[i];
            if (strncmp(a, "--", 2) != 0 || a[2] == '\0') {
                fprintf(err,
                        "sagemesh peer: unexpected argument '%s'; see "
                        "'sagemesh peer --help'\n",
                        a);
                return -1;
            }
            char key[64];
            const char *value = NULL;
            const char *eq = strchr(a, '=');
            size_t kn = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
            if (kn >= sizeof key) {
                fprintf(err, "sagemesh peer: unknown flag '%s'\n", a);
                return -1;
            }
            memcpy(key, a + 2, kn);
            key[kn] = '\0';
            if (eq != NULL) {
                value = eq + 1;
            } else if (i + 1 < argc) {
                value = argv[++i];
            } else {
                fprintf(err, "sagemesh peer: %s needs a value\n", a);
                return -1;
            }
            int is_config = strcmp(key, "config") == 0;
            if (pass == 0 && is_config) {
                char *text;
                size_t len;
                if (read_file(value, &text, &len, err) != 0) {
                    return -1;
                }
                int rv = node_config_parse(cfg, text, len, msg);
                free(text);
                if (rv != SM_OK) {
                    fprintf(err, "sagemesh peer: %s: %s\n", value, msg);
                    return -1;
                }
            } else if (pass == 1 && !is_config &&
                       node_config_set(cfg, key, value, msg) != SM_OK) {
                fprintf(err, "sagemesh peer: --%s: %s\n", key, msg);
                return -1;
            }
        }
    }
    return 0;
}

int node__cmd_peer(int argc, char **argv, FILE *out, FILE *err)
{
    (void)out;
    struct node_config cfg;
    node_config_init(&cfg);
    char host[256];
    if (gethostname(host, sizeof host) == 0) {
        host[sizeof host - 1] = '\0';
        cfg.id = host;
    }
    char msg[SM_ERRMSG_SIZE] = "";
    if (parse_flags(argc, argv, &cfg, err) != 0) {
        node_config_free(&cfg);
        return NODE_EXIT_USAGE;
    }
    if (node_config_validate(&cfg, msg) != SM_OK) {
        fprintf(err, "sagemesh peer: %s\n", msg);
        node_config_free(&cfg);
        return NODE_EXIT_USAGE;
    }
    enum sm_log_level level = SM_LOG_INFO;
    sm_log_level_parse(cfg.log_level, &level);
    sm_log_set_level(level);
    /* With --log-file the log leaves the terminal; a failure to start is
     * still told there. */
    int term_fd = -1;
    /* A daemon started with 0, 1 or 2 closed would hand those numbers to
     * sockets or epoll, and the log would write into them. */
    for (int fd = 0; fd <= STDERR_FILENO; fd++) {
        if (fcntl(fd, F_GETFD) < 0 && errno == EBADF) {
            (void)open("/dev/null", O_RDWR); /* the lowest free fd: @fd */
        }
    }
    if (cfg.log_file != NULL) {
        fflush(err);
        term_fd = fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 3);
        int lrv = open_log_file(cfg.log_file);
        if (lrv != SM_OK) {
            fprintf(err, "sagemesh peer: --log-file %s: %s\n", cfg.log_file,
                    sm_strerror(lrv));
            if (term_fd >= 0) {
                close(term_fd);
            }
            node_config_free(&cfg);
            return NODE_EXIT_FAILED;
        }
    }

    uv_loop_t loop;
    /* raft's connections are socket pairs whose other end may close at
     * any moment (the raft bridge); a write there must fail, not kill. */
    signal(SIGPIPE, SIG_IGN);
    uv_loop_init(&loop);
    uint64_t seed = sm_clock_wall_ns(sm_clock_real()) ^ (uint64_t)getpid()
                                                            << 32;
    struct node_peer *p = NULL;
    int rv = node_peer_start(&loop, &cfg, sm_clock_real(), seed, &p, msg);
    if (rv == SM_OK) {
        node_peer_handle_signals(p);
        struct node_model_mgr_stats ms = {0};
        if (p->model != NULL) {
            node_model_mgr_stats(p->model, &ms);
        }
        sm_log(SM_LOG_INFO, MOD, "peer started",
               "id=%s http=%s http_port=%d peer_port=%d data_dir=%s "
               "window_s=%g "
               "lateness_s=%g windows_replayed=%" PRIu64
               " model_version=%" PRIu64 " diagnoses=%zu",
               cfg.id, cfg.listen_http, node_peer_http_port(p),
               node_peer_mesh_port(p), cfg.data_dir, cfg.window_s,
               cfg.lateness_s, p->windows_replayed, ms.model_version,
               node_diag_store_count(p->diags));
        uv_run(&loop, UV_RUN_DEFAULT);
        sm_log(SM_LOG_INFO, MOD, "peer stopped", "id=%s", cfg.id);
    } else {
        if (term_fd >= 0) {
            /* Both in the log file and on the terminal. */
            sm_log(SM_LOG_ERROR, MOD, "cannot start", "cause=\"%s\"", msg);
            dprintf(term_fd, "sagemesh peer: %s\n", msg);
        } else {
            fprintf(err, "sagemesh peer: %s\n", msg);
        }
        if (p != NULL) {
            while (!node_peer_stopped(p) && uv_run(&loop, UV_RUN_ONCE)) {
            }
        }
    }
    node_peer_free(p);
    uv_loop_close(&loop);
    node_config_free(&cfg);
    if (term_fd >= 0) {
        close(term_fd);
    }
    return rv == SM_OK ? NODE_EXIT_OK : NODE_EXIT_FAILED;
}
