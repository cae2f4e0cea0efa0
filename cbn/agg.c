/* The window aggregator: spans and metric points in, closed windows out.
 *
 * State. Open windows are kept in a small array sorted by start time, each
 * holding hash maps from interned ids to per-service, per-edge and
 * per-metric accumulators (quantile sketches and counters). Spans waiting
 * for their RPC partner live in two maps keyed by (trace id, span id): CLIENT
 * spans by their own id, SERVER spans by their parent's id.
 *
 * All-or-nothing batches. A batch is applied in two passes. The plan pass
 * validates every record, decides what it will do (an op), pairs spans
 * against the pending maps and against each other through batch-local maps,
 * and reserves everything the ops will need: windows, accumulators, sketch
 * buckets, pending-map room. Reservations that are not used are harmless
 * (empty accumulators are not reported). Only then does the commit pass
 * apply the ops, and it does not allocate, so it cannot fail half-way.
 *
 * Closing. When the watermark passes a window's end, its still-unpaired
 * CLIENT spans fall back to their peer name (inferred edges), SERVER spans
 * older than the window before it are forgotten, and the accumulators that
 * counted something become a partial window (partial.c). The partial goes
 * out as it is (cbn_agg_close_ready_partial, taking the window's sketches
 * with it), or is finished into a struct cbn_window of percentile vectors
 * (cbn_agg_close_ready): there it only borrows the window's names and
 * sketches, so the single-host path copies no sketch. */
#include <math.h>
#include <string.h>

#include "base/alloc.h"
#include "base/err.h"
#include "cbn/cbn.h"
#include "cbn/internal.h"

#define NONE UINT32_MAX

struct pend_key
{
    uint8_t trace[16];
    uint8_t span[8];
};

struct pend
{
    uint64_t end_ns;
    uint64_t dur_ns;
    uint32_t service; /* caller for a client, callee for a server */
    uint32_t peer;    /* clients: the peer name id, or NONE */
};

struct win_service
{
    struct cbn_sketch *latency;
    uint64_t requests, errors;
};

struct edge_key
{
    uint32_t caller, callee, inferred;
};

struct win_edge
{
    struct cbn_sketch *client, *server, *network;
    uint64_t calls, paired;
};

struct metric_key
{
    uint32_t service, name, peer;
};

struct win_metric
{
    struct cbn_sketch *values;
    uint32_t samples;
    uint32_t resource;
};

struct win
{
    uint64_t start_ns;
    struct cbn__hmap services; /* uint32 -> struct win_service */
    struct cbn__hmap edges;    /* struct edge_key -> struct win_edge */
    struct cbn__hmap metrics;  /* struct metric_key -> struct win_metric */
    struct cbn_sketch *qos;
};

struct series
{
    double value;
    uint64_t time_ns;
};

struct cbn_agg
{
    struct cbn_agg_config config; /* strings point into owned copies */
    char *qos_service, *qos_operation;
    struct cbn_resource_rule *overrides;

    struct cbn__strtab names; /* services, operations, peers, metrics */
    struct win **windows;     /* open windows by start time */
    size_t n_windows;
    uint64_t closed_until; /* windows starting before this are closed */
    uint64_t max_event_ns;

    struct cbn__hmap clients; /* struct pend_key -> struct pend */
    struct cbn__hmap servers; /* struct pend_key -> struct pend */
    struct cbn__hmap series;  /* uint32 series id -> struct series */
    struct cbn__strtab series_names;

    uint64_t late_spans_since_close, late_points_since_close;
    struct cbn_agg_stats stats;
};

/* ---- Creation ------------------------------------------------------------ */

static int copy_string(const char *s, char **out)
{
    *out = NULL;
    if (s == NULL || s[0] == '\0') {
        return SM_OK;
    }
    *out = sm_strdup(s);
    return *out != NULL ? SM_OK : SM_ENOMEM;
}

int cbn_agg_new(const struct cbn_agg_config *config, struct cbn_agg **out)
{
    int has_qos = config->qos_service != NULL && config->qos_service[0];
    if ((has_qos && !(config->qos_target_ms > 0)) ||
        config->qos_percentile < 0 || config->qos_percentile >= 100 ||
        (config->n_resource_overrides > 0 &&
         config->resource_overrides == NULL)) {
        return SM_EINVAL;
    }
    struct cbn_agg *agg = sm_calloc(1, sizeof *agg);
    if (agg == NULL) {
        return SM_ENOMEM;
    }
    agg->config = *config;
    struct cbn_agg_config *c = &agg->config;
    c->window_ns = c->window_ns ? c->window_ns : 30000000000u;
    c->qos_percentile = c->qos_percentile > 0 ? c->qos_percentile : 99;
    c->max_pending = c->max_pending ? c->max_pending : 1u << 20;
    c->max_open_windows = c->max_open_windows ? c->max_open_windows : 64;
    cbn__strtab_init(&agg->names, c->hash_seed);
    cbn__strtab_init(&agg->series_names, c->hash_seed ^ 0x5e41e5);
    cbn__hmap_init(&agg->clients, sizeof(struct pend_key), sizeof(struct pend),
                   c->hash_seed);
    cbn__hmap_init(&agg->servers, sizeof(struct pend_key), sizeof(struct pend),
                   c->hash_seed ^ 1);
    cbn__hmap_init(&agg->series, sizeof(uint32_t), sizeof(struct series),
                   c->hash_seed ^ 2);

    int rv = copy_string(config->qos_service, &agg->qos_service);
    if (rv == SM_OK) {
        rv = copy_string(config->qos_operation, &agg->qos_operation);
    }
    if (rv == SM_OK && config->n_resource_overrides > 0) {
        agg->overrides =
            sm_calloc(config->n_resource_overrides, sizeof *agg->overrides);
        for (size_t i = 0; agg->overrides && i < config->n_resource_overrides;
             i++) {
            agg->overrides[i].resource = config->resource_overrides[i].resource;
            if (copy_string(config->resource_overrides[i].prefix,
                            (char **)&agg->overrides[i].prefix) != SM_OK) {
                rv = SM_ENOMEM;
            }
        }
        if (agg->overrides == NULL) {
            rv = SM_ENOMEM;
        }
    }
    c->qos_service = agg->qos_service;
    c->qos_operation = agg->qos_operation;
    c->resource_overrides = agg->overrides;
    if (rv != SM_OK) {
        cbn_agg_free(agg);
        return rv;
    }
    *out = agg;
    return SM_OK;
}

static void free_sketches(struct cbn__hmap *m, size_t offset, int n)
{
    for (size_t i = 0; i < m->cap; i++) {
        if (cbn__hmap_slot_used(m, i)) {
            struct cbn_sketch **sk =
                (struct cbn_sketch **)((uint8_t *)cbn__hmap_slot_val(m, i) +
                                       offset);
            for (int k = 0; k < n; k++) {
                cbn_sketch_free(sk[k]);
            }
        }
    }
    cbn__hmap_free(m);
}

static void win_free(struct win *w)
{
    if (w == NULL) {
        return;
    }
    free_sketches(&w->services, offsetof(struct win_service, latency), 1);
    free_sketches(&w->edges, offsetof(struct win_edge, client), 3);
    free_sketches(&w->metrics, offsetof(struct win_metric, values), 1);
    cbn_sketch_free(w->qos);
    sm_free(w);
}

void cbn_agg_free(struct cbn_agg *agg)
{
    if (agg == NULL) {
        return;
    }
    for (size_t i = 0; i < agg->n_windows; i++) {
        win_free(agg->windows[i]);
    }
    sm_free(agg->windows);
    cbn__strtab_free(&agg->names);
    cbn__strtab_free(&agg->series_names);
    cbn__hmap_free(&agg->clients);
    cbn__hmap_free(&agg->servers);
    cbn__hmap_free(&agg->series);
    for (size_t i = 0; agg->overrides && i < agg->config.n_resource_overrides;
         i++) {
        sm_free((char *)agg->overrides[i].prefix);
    }
    sm_free(agg->overrides);
    sm_free(agg->qos_service);
    sm_free(agg->qos_operation);
    sm_free(agg);
}

void cbn_agg_stats(const struct cbn_agg *agg, struct cbn_agg_stats *out)
{
    *out = agg->stats;
    out->windows_open = agg->n_windows;
    out->pending_spans = agg->clients.count + agg->servers.count;
    out->watermark_ns = agg->max_event_ns > agg->config.lateness_ns
                            ? agg->max_event_ns - agg->config.lateness_ns
                            : 0;
}

/* ---- Windows ------------------------------------------------------------- */

enum slot_status { SLOT_OK, SLOT_LATE, SLOT_REJECTED };

static uint64_t window_start(const struct cbn_agg *agg, uint64_t t)
{
    return t - t % agg->config.window_ns;
}

/* Classifies event time @t: its window is closed (late), too far ahead of
 * the open ones or beyond the open-window cap (rejected), or usable. */
static enum slot_status classify(const struct cbn_agg *agg, uint64_t t)
{
    uint64_t start = window_start(agg, t);
    if (start < agg->closed_until) {
        return SLOT_LATE;
    }
    uint64_t reference = agg->closed_until;
    if (agg->n_windows > 0) {
        uint64_t newest = agg->windows[agg->n_windows - 1]->start_ns;
        reference = newest > reference ? newest : reference;
    }
    uint64_t span = agg->config.window_ns * agg->config.max_open_windows;
    if (reference > 0 && start > reference && start - reference >= span) {
        return SLOT_REJECTED;
    }
    return SLOT_OK;
}

static struct win *find_window(const struct cbn_agg *agg, uint64_t start)
{
    for (size_t i = agg->n_windows; i-- > 0;) {
        if (agg->windows[i]->start_ns == start) {
            return agg->windows[i];
        }
        if (agg->windows[i]->start_ns < start) {
            break;
        }
    }
    return NULL;
}

/* Returns the open window for event time @t, creating it. NULL when out of
 * memory or when the open-window cap is reached (*full set). */
static struct win *ensure_window(struct cbn_agg *agg, uint64_t t, int *full)
{
    uint64_t start = window_start(agg, t);
    struct win *w = find_window(agg, start);
    *full = 0;
    if (w != NULL) {
        return w;
    }
    if (agg->n_windows >= agg->config.max_open_windows) {
        *full = 1;
        return NULL;
    }
    struct win **grown =
        sm_reallocarray(agg->windows, agg->n_windows + 1, sizeof *grown);
    if (grown == NULL) {
        return NULL;
    }
    agg->windows = grown;
    w = sm_calloc(1, sizeof *w);
    if (w == NULL) {
        return NULL;
    }
    w->start_ns = start;
    uint64_t seed = agg->config.hash_seed ^ start;
    cbn__hmap_init(&w->services, sizeof(uint32_t), sizeof(struct win_service),
                   seed);
    cbn__hmap_init(&w->edges, sizeof(struct edge_key), sizeof(struct win_edge),
                   seed ^ 1);
    cbn__hmap_init(&w->metrics, sizeof(struct metric_key),
                   sizeof(struct win_metric), seed ^ 2);
    size_t at = agg->n_windows;
    while (at > 0 && agg->windows[at - 1]->start_ns > start) {
        agg->windows[at] = agg->windows[at - 1];
        at--;
    }
    agg->windows[at] = w;
    agg->n_windows++;
    return w;
}

static int new_sketch(struct cbn_sketch **sk)
{
    if (*sk != NULL) {
        return SM_OK;
    }
    return cbn_sketch_new(CBN_SKETCH_DEFAULT_ACCURACY,
                          CBN_SKETCH_DEFAULT_MAX_BINS, sk);
}

/* Reserves room in @sk (creating it) for adding @value later. */
static int reserve_value(struct cbn_sketch **sk, double value)
{
    int rv = new_sketch(sk);
    return rv == SM_OK ? cbn__sketch_reserve(*sk, value) : rv;
}

/* Adds a value planned and reserved earlier. The sketch add can only fail
 * in the collapsing corner described at cbn__sketch_reserve(), and then one
 * observation is lost rather than the batch half-applied. */
static void commit_value(struct cbn_sketch *sk, double value)
{
    (void)cbn_sketch_add(sk, value, 1);
}

/* ---- Spans ---------------------------------------------------------------
 *
 * Each span of a batch gets one op. A SERVER span always contributes its
 * latency (svc_latency); besides, a span may complete a pair, start waiting
 * for its partner, or be late or rejected. */

enum action {
    ACT_NONE,
    ACT_LATE,
    ACT_REJECTED,
    ACT_PAIR,        /* a matched CLIENT/SERVER pair */
    ACT_PEND_CLIENT, /* wait in agg->clients */
    ACT_PEND_SERVER, /* wait in agg->servers */
};

struct op
{
    enum action action;
    /* The SERVER span's own latency, in the window of its end. */
    int svc_latency, error, qos;
    struct win *svc_win;
    uint32_t svc;
    uint64_t svc_dur_ns;
    /* ACT_PAIR: the edge, in the window of the client's end. ACT_PEND_*:
     * key and entry. */
    struct win *edge_win;
    struct pend_key key;
    struct pend client; /* ACT_PAIR: the client; ACT_PEND_*: the entry */
    uint32_t callee;
    uint64_t server_dur_ns;
    int remove; /* ACT_PAIR: 1 pending client, 2 pending server to drop */
};

/* Batch-local waiting spans: the op that holds the entry. */
struct local
{
    size_t op;
};

/* Maps used while planning one batch. */
struct plan
{
    struct cbn__hmap clients, servers; /* struct pend_key -> struct local */
    struct cbn__hmap consumed;         /* pending keys this batch pairs: skip */
    size_t pend_clients, pend_servers;
};

static int ids_zero(const uint8_t *id, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (id[i] != 0) {
            return 0;
        }
    }
    return 1;
}

static int intern(struct cbn_agg *agg, const char *s, uint32_t *id)
{
    return cbn__strtab_intern(&agg->names, s, id);
}

static int reserve_service(struct win *w, uint32_t service, double value)
{
    bool inserted;
    struct win_service *ws =
        cbn__hmap_get_or_add(&w->services, &service, &inserted);
    return ws == NULL ? SM_ENOMEM : reserve_value(&ws->latency, value);
}

static int reserve_edge(struct win *w,
                        uint32_t caller,
                        uint32_t callee,
                        uint32_t inferred,
                        double client,
                        double server)
{
    struct edge_key k = {caller, callee, inferred};
    bool inserted;
    struct win_edge *e = cbn__hmap_get_or_add(&w->edges, &k, &inserted);
    if (e == NULL) {
        return SM_ENOMEM;
    }
    int rv = reserve_value(&e->client, client);
    if (rv == SM_OK && !inferred) {
        rv = reserve_value(&e->server, server);
    }
    if (rv == SM_OK && !inferred) {
        rv = reserve_value(&e->network, client - server);
    }
    return rv;
}

static int is_qos_span(const struct cbn_agg *agg, const struct cbn_span *s)
{
    return agg->qos_service != NULL &&
           strcmp(s->service, agg->qos_service) == 0 &&
           (agg->qos_operation == NULL ||
            strcmp(s->operation ? s->operation : "", agg->qos_operation) == 0);
}

static int mark_consumed(struct plan *p, const struct pend_key *key)
{
    bool inserted;
    return cbn__hmap_get_or_add(&p->consumed, key, &inserted) ? SM_OK
                                                              : SM_ENOMEM;
}

/* Plans a SERVER span: its latency, and pairing with its caller's CLIENT
 * span (earlier in this batch, or waiting), else waiting for it. */
static int plan_server(struct cbn_agg *agg,
                       const struct cbn_span *s,
                       struct op *ops,
                       size_t i,
                       struct win *w,
                       uint32_t service,
                       struct plan *p)
{
    struct op *op = &ops[i];
    uint64_t dur = s->end_ns - s->start_ns;
    op->svc_latency = 1;
    op->svc_win = w;
    op->svc = service;
    op->svc_dur_ns = dur;
    op->error = s->error != 0;
    op->qos = is_qos_span(agg, s);
    int rv = reserve_service(w, service, (double)dur);
    if (rv == SM_OK && op->qos) {
        rv = reserve_value(&w->qos, (double)dur);
    }
    if (rv != SM_OK || ids_zero(s->parent_id, 8)) {
        return rv;
    }
    struct pend_key key;
    memcpy(key.trace, s->trace_id, 16);
    memcpy(key.span, s->parent_id, 8);

    struct local *l = cbn__hmap_find(&p->clients, &key);
    const struct pend *client = NULL;
    struct win *edge_win = NULL;
    if (l != NULL) {
        client = &ops[l->op].client;
        edge_win = ops[l->op].edge_win;
    } else if (cbn__hmap_find(&p->consumed, &key) == NULL) {
        client = cbn__hmap_find(&agg->clients, &key);
        if (client != NULL) {
            edge_win = find_window(agg, window_start(agg, client->end_ns));
            SM_ASSERT(edge_win != NULL); /* waiting clients are open */
        }
    }
    if (client != NULL) {
        rv = reserve_edge(edge_win, client->service, service, 0,
                          (double)client->dur_ns, (double)dur);
        if (rv == SM_OK && l == NULL) {
            rv = mark_consumed(p, &key);
        }
        if (rv != SM_OK) {
            return rv;
        }
        op->action = ACT_PAIR;
        op->edge_win = edge_win;
        op->key = key;
        op->client = *client;
        op->callee = service;
        op->server_dur_ns = dur;
        op->remove = l == NULL ? 1 : 0;
        if (l != NULL) {
            ops[l->op].action = ACT_NONE;
            p->pend_clients--;
            cbn__hmap_remove(&p->clients, &key);
        }
        return SM_OK;
    }
    /* A second SERVER span under the same parent (a retried export) only
     * counts for latency. */
    if (cbn__hmap_find(&p->servers, &key) != NULL ||
        cbn__hmap_find(&agg->servers, &key) != NULL) {
        return SM_OK;
    }
    bool inserted;
    struct local *ls = cbn__hmap_get_or_add(&p->servers, &key, &inserted);
    if (ls == NULL) {
        return SM_ENOMEM;
    }
    ls->op = i;
    op->action = ACT_PEND_SERVER;
    op->key = key;
    op->client = (struct pend){s->end_ns, dur, service, NONE};
    p->pend_servers++;
    return SM_OK;
}

/* Plans a CLIENT span: pair with its SERVER span, else wait for it. */
static int plan_client(struct cbn_agg *agg,
                       const struct cbn_span *s,
                       struct op *ops,
                       size_t i,
                       struct win *w,
                       uint32_t service,
                       struct plan *p)
{
    struct op *op = &ops[i];
    struct pend_key key;
    memcpy(key.trace, s->trace_id, 16);
    memcpy(key.span, s->span_id, 8);
    uint32_t peer = NONE;
    if (s->peer != NULL && s->peer[0] != '\0' &&
        intern(agg, s->peer, &peer) != SM_OK) {
        return SM_ENOMEM;
    }
    struct pend me = {s->end_ns, s->end_ns - s->start_ns, service, peer};

    struct local *l = cbn__hmap_find(&p->servers, &key);
    const struct pend *server = NULL;
    if (l != NULL) {
        server = &ops[l->op].client;
    } else if (cbn__hmap_find(&p->consumed, &key) == NULL) {
        server = cbn__hmap_find(&agg->servers, &key);
    }
    if (server != NULL) {
        int rv = reserve_edge(w, service, server->service, 0, (double)me.dur_ns,
                              (double)server->dur_ns);
        if (rv == SM_OK && l == NULL) {
            rv = mark_consumed(p, &key);
        }
        if (rv != SM_OK) {
            return rv;
        }
        op->action = ACT_PAIR;
        op->edge_win = w;
        op->key = key;
        op->client = me;
        op->callee = server->service;
        op->server_dur_ns = server->dur_ns;
        op->remove = l == NULL ? 2 : 0;
        if (l != NULL) {
            ops[l->op].action = ACT_NONE; /* its latency still counts */
            p->pend_servers--;
            cbn__hmap_remove(&p->servers, &key);
        }
        return SM_OK;
    }
    if (cbn__hmap_find(&p->clients, &key) != NULL ||
        cbn__hmap_find(&agg->clients, &key) != NULL) {
        return SM_OK; /* a duplicate of a span already waiting */
    }
    /* Reserve the fallback edge now, so that closing the window needs no
     * allocation for it. */
    if (peer != NONE) {
        int rv = reserve_edge(w, service, peer, 1, (double)me.dur_ns, 0);
        if (rv != SM_OK) {
            return rv;
        }
    }
    bool inserted;
    struct local *lc = cbn__hmap_get_or_add(&p->clients, &key, &inserted);
    if (lc == NULL) {
        return SM_ENOMEM;
    }
    lc->op = i;
    op->action = ACT_PEND_CLIENT;
    op->edge_win = w;
    op->key = key;
    op->client = me;
    p->pend_clients++;
    return SM_OK;
}

int cbn_span_check(const struct cbn_span *s)
{
    if (s->service == NULL || s->service[0] == '\0' ||
        s->end_ns < s->start_ns || s->kind < CBN_SPAN_UNSPECIFIED ||
        s->kind > CBN_SPAN_CONSUMER) {
        return SM_EMALFORMED;
    }
    return SM_OK;
}

static int plan_spans(struct cbn_agg *agg,
                      const struct cbn_span *spans,
                      size_t n,
                      struct op *ops,
                      struct plan *p)
{
    for (size_t i = 0; i < n; i++) {
        const struct cbn_span *s = &spans[i];
        enum slot_status st = classify(agg, s->end_ns);
        if (st != SLOT_OK) {
            ops[i].action = st == SLOT_LATE ? ACT_LATE : ACT_REJECTED;
            continue;
        }
        if (s->kind != CBN_SPAN_SERVER && s->kind != CBN_SPAN_CLIENT) {
            continue; /* accepted; internal spans carry no RPC latency */
        }
        int full;
        struct win *w = ensure_window(agg, s->end_ns, &full);
        if (w == NULL) {
            if (!full) {
                return SM_ENOMEM;
            }
            ops[i].action = ACT_REJECTED;
            continue;
        }
        uint32_t service;
        int rv = intern(agg, s->service, &service);
        if (rv == SM_OK) {
            rv = s->kind == CBN_SPAN_SERVER
                     ? plan_server(agg, s, ops, i, w, service, p)
                     : plan_client(agg, s, ops, i, w, service, p);
        }
        if (rv != SM_OK) {
            return rv;
        }
    }
    return SM_OK;
}

static void commit_span(struct cbn_agg *agg, const struct op *op)
{
    bool inserted;
    if (op->action == ACT_LATE) {
        agg->stats.spans_late++;
        agg->late_spans_since_close++;
        return;
    }
    if (op->action == ACT_REJECTED) {
        agg->stats.spans_rejected++;
        return;
    }
    agg->stats.spans_accepted++;
    if (op->svc_latency) {
        struct win_service *ws =
            cbn__hmap_find(&op->svc_win->services, &op->svc);
        SM_ASSERT(ws != NULL);
        ws->requests++;
        ws->errors += op->error != 0;
        commit_value(ws->latency, (double)op->svc_dur_ns);
        if (op->qos) {
            commit_value(op->svc_win->qos, (double)op->svc_dur_ns);
        }
    }
    switch (op->action) {
        case ACT_PEND_SERVER:
            *(struct pend *)cbn__hmap_put(&agg->servers, &op->key, &inserted) =
                op->client;
            break;
        case ACT_PEND_CLIENT:
            *(struct pend *)cbn__hmap_put(&agg->clients, &op->key, &inserted) =
                op->client;
            break;
        case ACT_PAIR: {
            struct edge_key k = {op->client.service, op->callee, 0};
            struct win_edge *e = cbn__hmap_find(&op->edge_win->edges, &k);
            SM_ASSERT(e != NULL);
            e->calls++;
            e->paired++;
            commit_value(e->client, (double)op->client.dur_ns);
            commit_value(e->server, (double)op->server_dur_ns);
            commit_value(e->network,
                         (double)op->client.dur_ns - (double)op->server_dur_ns);
            if (op->remove == 1) {
                cbn__hmap_remove(&agg->clients, &op->key);
            } else if (op->remove == 2) {
                cbn__hmap_remove(&agg->servers, &op->key);
            }
            break;
        }
        default:
            break;
    }
}

static void advance_event_time(struct cbn_agg *agg, uint64_t t)
{
    if (t > agg->max_event_ns) {
        agg->max_event_ns = t;
    }
}

int cbn_agg_add_spans(struct cbn_agg *agg,
                      const struct cbn_span *spans,
                      size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (cbn_span_check(&spans[i]) != SM_OK) {
            return SM_EMALFORMED;
        }
    }
    if (n == 0) {
        return SM_OK;
    }
    if (agg->clients.count + agg->servers.count + n > agg->config.max_pending) {
        return SM_EAGAIN;
    }
    struct op *ops = sm_calloc(n, sizeof *ops);
    if (ops == NULL) {
        return SM_ENOMEM;
    }
    struct plan p = {.pend_clients = 0, .pend_servers = 0};
    uint64_t seed = agg->config.hash_seed ^ 0xba7c4;
    cbn__hmap_init(&p.clients, sizeof(struct pend_key), sizeof(struct local),
                   seed);
    cbn__hmap_init(&p.servers, sizeof(struct pend_key), sizeof(struct local),
                   seed ^ 1);
    cbn__hmap_init(&p.consumed, sizeof(struct pend_key), 1, seed ^ 2);
    int rv = plan_spans(agg, spans, n, ops, &p);
    if (rv == SM_OK) {
        rv = cbn__hmap_reserve(&agg->clients, p.pend_clients);
    }
    if (rv == SM_OK) {
        rv = cbn__hmap_reserve(&agg->servers, p.pend_servers);
    }
    cbn__hmap_free(&p.clients);
    cbn__hmap_free(&p.servers);
    cbn__hmap_free(&p.consumed);
    if (rv == SM_OK) {
        for (size_t i = 0; i < n; i++) {
            commit_span(agg, &ops[i]);
            if (ops[i].action != ACT_LATE && ops[i].action != ACT_REJECTED) {
                advance_event_time(agg, spans[i].end_ns);
            }
        }
    }
    sm_free(ops);
    return rv;
}

/* ---- Metric points ------------------------------------------------------- */

struct metric_op
{
    enum action action; /* ACT_NONE: only the series state moves */
    struct win *win;
    struct metric_key key;
    double value; /* the gauge value, or the rate */
    int has_value;
    uint32_t series;     /* cumulative: series id, else NONE */
    struct series state; /* cumulative: the new last point */
};

/* The series identity of a cumulative point: all its naming fields. */
static int series_id(struct cbn_agg *agg,
                     const struct cbn_metric_point *pt,
                     uint32_t *id)
{
    const char *parts[] = {pt->service, pt->instance, pt->name, pt->labels,
                           pt->peer};
    size_t len = 0;
    for (size_t i = 0; i < 5; i++) {
        len += (parts[i] ? strlen(parts[i]) : 0) + 1;
    }
    char stack[512];
    char *key = len <= sizeof stack ? stack : sm_malloc(len);
    if (key == NULL) {
        return SM_ENOMEM;
    }
    size_t at = 0;
    for (size_t i = 0; i < 5; i++) {
        size_t n = parts[i] ? strlen(parts[i]) : 0;
        memcpy(key + at, parts[i] ? parts[i] : "", n);
        at += n;
        key[at++] = '\x1f'; /* unit separator: cannot occur in names */
    }
    key[at - 1] = '\0';
    int rv = cbn__strtab_intern(&agg->series_names, key, id);
    if (key != stack) {
        sm_free(key);
    }
    return rv;
}

static int validate_point(const struct cbn_metric_point *pt)
{
    if (pt->service == NULL || pt->service[0] == '\0' || pt->name == NULL ||
        pt->name[0] == '\0') {
        return SM_EMALFORMED;
    }
    return SM_OK;
}

/* Plans one point: the value it contributes (a rate for cumulative points,
 * computed against the previous point of its series in this batch or
 * before) and the accumulator it goes to. */
static int plan_point(struct cbn_agg *agg,
                      const struct cbn_metric_point *pt,
                      struct metric_op *op,
                      struct cbn__hmap *local_series)
{
    op->series = NONE;
    if (!isfinite(pt->value)) {
        op->action = ACT_REJECTED; /* NaN/Inf samples carry no value */
        return SM_OK;
    }
    enum slot_status st = classify(agg, pt->time_ns);
    if (st != SLOT_OK) {
        op->action = st == SLOT_LATE ? ACT_LATE : ACT_REJECTED;
        if (!pt->cumulative || st == SLOT_REJECTED) {
            return SM_OK;
        }
    }
    op->value = pt->value;
    op->has_value = st == SLOT_OK;
    if (pt->cumulative) {
        uint32_t id;
        int rv = series_id(agg, pt, &id);
        if (rv != SM_OK) {
            return rv;
        }
        bool inserted;
        struct series *prev = cbn__hmap_find(local_series, &id);
        if (prev == NULL) {
            prev = cbn__hmap_find(&agg->series, &id);
        }
        op->has_value = 0;
        if (prev != NULL && pt->time_ns > prev->time_ns && st == SLOT_OK) {
            double dt = (double)(pt->time_ns - prev->time_ns) * 1e-9;
            double delta =
                pt->value >= prev->value ? pt->value - prev->value : pt->value;
            op->value = delta / dt;
            op->has_value = 1;
        }
        if (prev == NULL || pt->time_ns > prev->time_ns) {
            struct series *next =
                cbn__hmap_get_or_add(local_series, &id, &inserted);
            if (next == NULL) {
                return SM_ENOMEM;
            }
            *next = (struct series){pt->value, pt->time_ns};
            op->series = id;
            op->state = *next;
            bool exists = cbn__hmap_find(&agg->series, &id) != NULL;
            if (!exists &&
                cbn__hmap_reserve(&agg->series, local_series->count) != SM_OK) {
                return SM_ENOMEM;
            }
        }
    }
    if (!op->has_value) {
        return SM_OK;
    }
    int full;
    struct win *w = ensure_window(agg, pt->time_ns, &full);
    if (w == NULL) {
        if (!full) {
            return SM_ENOMEM;
        }
        op->action = ACT_REJECTED;
        op->has_value = 0;
        return SM_OK;
    }
    uint32_t peer = NONE;
    int rv = intern(agg, pt->service, &op->key.service);
    if (rv == SM_OK) {
        rv = intern(agg, pt->name, &op->key.name);
    }
    if (rv == SM_OK && pt->peer != NULL && pt->peer[0] != '\0') {
        rv = intern(agg, pt->peer, &peer);
    }
    if (rv != SM_OK) {
        return rv;
    }
    op->key.peer = peer;
    op->win = w;
    bool inserted;
    struct win_metric *m =
        cbn__hmap_get_or_add(&w->metrics, &op->key, &inserted);
    if (m == NULL) {
        return SM_ENOMEM;
    }
    if (inserted) {
        m->resource = cbn_resource_classify(pt->name, agg->overrides,
                                            agg->config.n_resource_overrides);
    }
    return reserve_value(&m->values, op->value);
}

static void commit_point(struct cbn_agg *agg, const struct metric_op *op)
{
    bool inserted;
    if (op->series != NONE) {
        *(struct series *)cbn__hmap_put(&agg->series, &op->series, &inserted) =
            op->state;
    }
    if (op->action == ACT_LATE) {
        agg->stats.points_late++;
        agg->late_points_since_close++;
        return;
    }
    if (op->action == ACT_REJECTED) {
        agg->stats.points_rejected++;
        return;
    }
    agg->stats.points_accepted++;
    if (op->has_value) {
        struct win_metric *m = cbn__hmap_find(&op->win->metrics, &op->key);
        SM_ASSERT(m != NULL);
        m->samples++;
        commit_value(m->values, op->value);
    }
}

int cbn_agg_add_metrics(struct cbn_agg *agg,
                        const struct cbn_metric_point *points,
                        size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (validate_point(&points[i]) != SM_OK) {
            return SM_EMALFORMED;
        }
    }
    if (n == 0) {
        return SM_OK;
    }
    struct metric_op *ops = sm_calloc(n, sizeof *ops);
    if (ops == NULL) {
        return SM_ENOMEM;
    }
    struct cbn__hmap local_series;
    cbn__hmap_init(&local_series, sizeof(uint32_t), sizeof(struct series),
                   agg->config.hash_seed ^ 0x5e7);
    int rv = SM_OK;
    for (size_t i = 0; i < n && rv == SM_OK; i++) {
        rv = plan_point(agg, &points[i], &ops[i], &local_series);
    }
    if (rv == SM_OK) {
        rv = cbn__hmap_reserve(&agg->series, local_series.count);
    }
    cbn__hmap_free(&local_series);
    if (rv == SM_OK) {
        for (size_t i = 0; i < n; i++) {
            commit_point(agg, &ops[i]);
            if (ops[i].action != ACT_LATE && ops[i].action != ACT_REJECTED) {
                advance_event_time(agg, points[i].time_ns);
            }
        }
    }
    sm_free(ops);
    return rv;
}

/* ---- Closing ------------------------------------------------------------- */

/* Moves the still-unpaired CLIENT spans of @w to their inferred edges and
 * forgets SERVER spans that ended before the previous window. Two passes:
 * collect and reserve (may fail, changing nothing), then apply. */
static int settle_pending(struct cbn_agg *agg, struct win *w)
{
    uint64_t end = w->start_ns + agg->config.window_ns;
    size_t n = 0;
    for (size_t i = 0; i < agg->clients.cap; i++) {
        if (cbn__hmap_slot_used(&agg->clients, i)) {
            const struct pend *pe = cbn__hmap_slot_val(&agg->clients, i);
            n += pe->end_ns < end;
        }
    }
    struct pend_key *keys = sm_calloc(n ? n : 1, sizeof *keys);
    if (keys == NULL) {
        return SM_ENOMEM;
    }
    size_t k = 0;
    for (size_t i = 0; i < agg->clients.cap; i++) {
        if (!cbn__hmap_slot_used(&agg->clients, i)) {
            continue;
        }
        const struct pend *pe = cbn__hmap_slot_val(&agg->clients, i);
        if (pe->end_ns >= end) {
            continue;
        }
        keys[k++] =
            *(const struct pend_key *)cbn__hmap_slot_key(&agg->clients, i);
        if (pe->peer != NONE && reserve_edge(w, pe->service, pe->peer, 1,
                                             (double)pe->dur_ns, 0) != SM_OK) {
            sm_free(keys);
            return SM_ENOMEM;
        }
    }
    for (size_t i = 0; i < k; i++) {
        const struct pend *pe = cbn__hmap_find(&agg->clients, &keys[i]);
        if (pe->peer != NONE) {
            struct edge_key ek = {pe->service, pe->peer, 1};
            struct win_edge *e = cbn__hmap_find(&w->edges, &ek);
            e->calls++;
            commit_value(e->client, (double)pe->dur_ns);
        }
        cbn__hmap_remove(&agg->clients, &keys[i]);
    }
    sm_free(keys);

    /* SERVER spans: removal needs no allocation, but removing while
     * scanning is not allowed: restart the scan after each removal run. */
    uint64_t horizon = w->start_ns > agg->config.window_ns
                           ? w->start_ns - agg->config.window_ns
                           : 0;
    for (size_t i = 0; i < agg->servers.cap;) {
        if (cbn__hmap_slot_used(&agg->servers, i)) {
            const struct pend *pe = cbn__hmap_slot_val(&agg->servers, i);
            if (pe->end_ns < horizon) {
                struct pend_key key =
                    *(const struct pend_key *)cbn__hmap_slot_key(&agg->servers,
                                                                 i);
                cbn__hmap_remove(&agg->servers, &key);
                continue; /* slot i now holds a shifted entry, or is empty */
            }
        }
        i++;
    }
    return SM_OK;
}

/* Counts the accumulators of @w that counted something: those are the
 * partial's entries. */
struct sizes
{
    size_t services, metrics, edges, strings;
};

static size_t name_bytes(const struct cbn_agg *agg, uint32_t id)
{
    return strlen(cbn__strtab_str(&agg->names, id)) + 1;
}

static void count_entries(const struct cbn_agg *agg,
                          const struct win *w,
                          struct sizes *sz)
{
    *sz = (struct sizes){0, 0, 0, 0};
    for (size_t i = 0; i < w->services.cap; i++) {
        if (!cbn__hmap_slot_used(&w->services, i)) {
            continue;
        }
        const struct win_service *ws = cbn__hmap_slot_val(&w->services, i);
        const uint32_t *id = cbn__hmap_slot_key(&w->services, i);
        if (ws->requests > 0) {
            sz->services++;
            sz->strings += name_bytes(agg, *id);
        }
    }
    for (size_t i = 0; i < w->metrics.cap; i++) {
        if (!cbn__hmap_slot_used(&w->metrics, i)) {
            continue;
        }
        const struct win_metric *m = cbn__hmap_slot_val(&w->metrics, i);
        const struct metric_key *mk = cbn__hmap_slot_key(&w->metrics, i);
        if (m->samples > 0) {
            sz->metrics++;
            sz->strings += name_bytes(agg, mk->service);
            sz->strings += name_bytes(agg, mk->name);
            sz->strings += mk->peer != NONE ? name_bytes(agg, mk->peer) : 1;
        }
    }
    for (size_t i = 0; i < w->edges.cap; i++) {
        if (!cbn__hmap_slot_used(&w->edges, i)) {
            continue;
        }
        const struct win_edge *e = cbn__hmap_slot_val(&w->edges, i);
        const struct edge_key *ek = cbn__hmap_slot_key(&w->edges, i);
        if (e->calls > 0) {
            sz->edges++;
            sz->strings += name_bytes(agg, ek->caller);
            sz->strings += name_bytes(agg, ek->callee);
        }
    }
}

/* Returns the name @id for @p: @p's copy when it owns its strings, else the
 * aggregator's own. */
static const char *name_for(const struct cbn_agg *agg,
                            struct cbn_partial *p,
                            uint32_t id)
{
    const char *s = id == NONE ? "" : cbn__strtab_str(&agg->names, id);
    return p->borrowed ? s : cbn__partial_add_string(p, s);
}

/* Moves sketch @*from into the partial (@take) or lends it. */
static struct cbn_sketch *hand_over(struct cbn_sketch **from, int take)
{
    struct cbn_sketch *sk = *from;
    if (take) {
        *from = NULL;
    }
    return sk;
}

/* Builds the partial of @w in @p: its accumulators that counted something,
 * sorted by key. With @take, @p owns copies of the names and takes the
 * sketches out of @w (which is freed right after); without, @p borrows both
 * (cbn_partial_finish reads them, then the window is freed). SM_OK or
 * SM_ENOMEM, with @w unchanged. */
static int build_partial(const struct cbn_agg *agg,
                         struct win *w,
                         int take,
                         struct cbn_partial *p)
{
    struct sizes sz;
    count_entries(agg, w, &sz);
    int rv = cbn__partial_init(p, sz.services, sz.metrics, sz.edges,
                               take ? sz.strings : 0, !take);
    if (rv != SM_OK) {
        return rv;
    }
    size_t at = 0;
    for (size_t i = 0; i < w->services.cap; i++) {
        if (!cbn__hmap_slot_used(&w->services, i)) {
            continue;
        }
        struct win_service *ws = cbn__hmap_slot_val(&w->services, i);
        if (ws->requests == 0) {
            continue;
        }
        struct cbn__part_service *ps = &p->services[at++];
        ps->name = name_for(
            agg, p, *(const uint32_t *)cbn__hmap_slot_key(&w->services, i));
        ps->requests = ws->requests;
        ps->errors = ws->errors;
        ps->latency = hand_over(&ws->latency, take);
    }
    at = 0;
    for (size_t i = 0; i < w->metrics.cap; i++) {
        if (!cbn__hmap_slot_used(&w->metrics, i)) {
            continue;
        }
        struct win_metric *m = cbn__hmap_slot_val(&w->metrics, i);
        if (m->samples == 0) {
            continue;
        }
        const struct metric_key *mk = cbn__hmap_slot_key(&w->metrics, i);
        struct cbn__part_metric *pm = &p->metrics[at++];
        pm->service = name_for(agg, p, mk->service);
        pm->name = name_for(agg, p, mk->name);
        pm->peer = name_for(agg, p, mk->peer);
        pm->resource = (enum cbn_resource)m->resource;
        pm->samples = m->samples;
        pm->values = hand_over(&m->values, take);
    }
    at = 0;
    for (size_t i = 0; i < w->edges.cap; i++) {
        if (!cbn__hmap_slot_used(&w->edges, i)) {
            continue;
        }
        struct win_edge *e = cbn__hmap_slot_val(&w->edges, i);
        if (e->calls == 0) {
            continue;
        }
        const struct edge_key *ek = cbn__hmap_slot_key(&w->edges, i);
        struct cbn__part_edge *pe = &p->edges[at++];
        pe->caller = name_for(agg, p, ek->caller);
        pe->callee = name_for(agg, p, ek->callee);
        pe->inferred = (int)ek->inferred;
        pe->calls = e->calls;
        pe->paired = e->paired;
        pe->client = hand_over(&e->client, take);
        pe->server = hand_over(&e->server, take);
        pe->network = hand_over(&e->network, take);
    }
    p->start_ns = w->start_ns;
    p->end_ns = w->start_ns + agg->config.window_ns;
    p->has_qos = agg->qos_service != NULL;
    p->qos_target_ms = agg->config.qos_target_ms;
    p->qos_percentile = agg->config.qos_percentile;
    p->late_spans = agg->late_spans_since_close;
    p->late_points = agg->late_points_since_close;
    p->qos = hand_over(&w->qos, take);
    cbn__partial_sort(p);
    return SM_OK;
}

/* Closes the oldest open window: settles its pending spans and turns its
 * accumulators into a partial, which goes to @partial_cb, or, with
 * @window_cb, is finished into the window that goes there. On error the
 * window stays open and no callback runs. */
static int close_oldest(struct cbn_agg *agg,
                        cbn_window_cb window_cb,
                        cbn_partial_cb partial_cb,
                        void *arg)
{
    struct win *w = agg->windows[0];
    int rv = settle_pending(agg, w);
    if (rv != SM_OK) {
        return rv;
    }
    struct cbn_partial *p = NULL;
    struct cbn_window *cw = NULL;
    if (partial_cb != NULL) {
        p = sm_malloc(sizeof *p);
        if (p == NULL) {
            return SM_ENOMEM;
        }
        rv = build_partial(agg, w, 1, p);
        if (rv != SM_OK) {
            sm_free(p);
            return rv;
        }
    } else {
        /* The partial only lives until it is finished: it borrows the
         * window's names and sketches instead of copying them. */
        struct cbn_partial view;
        rv = build_partial(agg, w, 0, &view);
        if (rv == SM_OK) {
            rv = cbn_partial_finish(&view, &cw);
            cbn__partial_release(&view);
        }
        if (rv != SM_OK) {
            return rv;
        }
    }
    agg->closed_until = w->start_ns + agg->config.window_ns;
    memmove(agg->windows, agg->windows + 1,
            (agg->n_windows - 1) * sizeof *agg->windows);
    agg->n_windows--;
    win_free(w);
    agg->late_spans_since_close = 0;
    agg->late_points_since_close = 0;
    agg->stats.windows_closed++;
    if (p != NULL) {
        partial_cb(arg, p);
    } else {
        window_cb(arg, cw);
    }
    return SM_OK;
}

static int close_ready(struct cbn_agg *agg,
                       cbn_window_cb window_cb,
                       cbn_partial_cb partial_cb,
                       void *arg)
{
    uint64_t watermark = agg->max_event_ns > agg->config.lateness_ns
                             ? agg->max_event_ns - agg->config.lateness_ns
                             : 0;
    while (agg->n_windows > 0 &&
           agg->windows[0]->start_ns + agg->config.window_ns <= watermark) {
        int rv = close_oldest(agg, window_cb, partial_cb, arg);
        if (rv != SM_OK) {
            return rv;
        }
    }
    /* Windows behind the watermark that never opened are closed too: data
     * for them is late, as it would be had they held data. (In the mesh a
     * peer tells the leader it has closed every window up to here.) */
    uint64_t behind = window_start(agg, watermark);
    if (behind > agg->closed_until) {
        agg->closed_until = behind;
    }
    return SM_OK;
}

static int flush(struct cbn_agg *agg,
                 cbn_window_cb window_cb,
                 cbn_partial_cb partial_cb,
                 void *arg)
{
    while (agg->n_windows > 0) {
        int rv = close_oldest(agg, window_cb, partial_cb, arg);
        if (rv != SM_OK) {
            return rv;
        }
    }
    /* Data for the flushed windows is late from now on. */
    uint64_t moved = agg->closed_until + agg->config.lateness_ns;
    if (moved > agg->max_event_ns) {
        agg->max_event_ns = moved;
    }
    return SM_OK;
}

int cbn_agg_close_ready(struct cbn_agg *agg, cbn_window_cb cb, void *arg)
{
    return close_ready(agg, cb, NULL, arg);
}

int cbn_agg_close_ready_partial(struct cbn_agg *agg,
                                cbn_partial_cb cb,
                                void *arg)
{
    return close_ready(agg, NULL, cb, arg);
}

int cbn_agg_flush(struct cbn_agg *agg, cbn_window_cb cb, void *arg)
{
    return flush(agg, cb, NULL, arg);
}

int cbn_agg_flush_partial(struct cbn_agg *agg, cbn_partial_cb cb, void *arg)
{
    return flush(agg, NULL, cb, arg);
}

void cbn_agg_advance(struct cbn_agg *agg, uint64_t event_ns)
{
    advance_event_time(agg, event_ns);
}

void cbn_agg_resume(struct cbn_agg *agg, uint64_t end_ns)
{
    if (end_ns > agg->closed_until) {
        agg->closed_until = window_start(agg, end_ns);
    }
    advance_event_time(agg, end_ns);
}
