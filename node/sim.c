/* The simulator's engine: a discrete-event simulation of every request.
 *
 * Time is integer nanoseconds of event time. Events sit in a binary heap
 * ordered by (time, sequence number); the sequence number breaks ties in
 * order of scheduling, so a run is a pure function of its inputs.
 *
 * A request's life (one `struct call` per service invocation):
 *
 *   ARRIVE      the request reaches a replica after the link's delay. It
 *               takes a worker thread, or waits in the replica's FIFO of
 *               requests without a worker; when that backlog is full (1024)
 *               it is refused at once with an error, as a server whose
 *               listen queue overflows, which keeps memory bounded however
 *               badly a fault overloads a service. Errors travel up to the
 *               root (error spans, error counts).
 *   (lock)      during a lock-contention fault the worker first queues for
 *               the replica's lock and holds it for the fault's hold time,
 *               computing nothing (LOCK_DONE).
 *   compute 1   half of the request's compute demand (lognormal around the
 *               op's mean): it queues for a core (a multi-server FIFO) and
 *               runs for demand x slow-down (CPU_DONE).
 *   disk        with the op's probability, one access to the replica's disk
 *               (a single-server FIFO): seek plus bytes over bandwidth
 *               (DISK_DONE). During a disk fault, 1 MiB background I/Os
 *               arrive (Poisson) at the same FIFO, enough to keep the disk
 *               busy the fault's share of the time: requests wait behind
 *               them.
 *   steps       each step calls its targets in parallel (each with its
 *               probability); the worker stays held, blocked, until every
 *               child's RESPONSE has come back, then the next step runs.
 *   compute 2   the other half of the demand.
 *   finish      the server span ends, the worker is released (and given to
 *               the next queued request), and the response travels back.
 *
 * Replicas of a callee are chosen round-robin per callee service. Links
 * cost a base one-way delay (50 us on one host, 250 us across hosts) plus
 * exponential jitter, plus a network fault's delay on links into a service.
 *
 * Four independent random streams keep parts from disturbing each other:
 * arrivals and request types (load), service times and call choices
 * (service), sampling and ids (ids), and metric noise. So changing only the
 * sampling rate changes no latency and no metric, and the same seed with and
 * without a fault has the same arrivals (load spikes aside). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/rng.h"
#include "node/sim.h"
#include "node/sim_topo.h"

#define NS_PER_MS 1000000.0
#define NS_PER_S  1000000000ull

#define DEFAULT_START_S 1700028000ull /* 2023-11-15T06:00:00Z */
#define LINK_LOCAL_NS   50000.0
#define LINK_REMOTE_NS  250000.0
#define LINK_JITTER     0.2 /* mean jitter as a share of the base delay */
#define DISK_SEEK_MS    0.08
#define DISK_BW_BPS     250e6
#define BG_IO_BYTES     1048576.0
#define BG_OP           UINT32_MAX /* the op of a background I/O */
#define CALL_CHUNK      1024
#define BACKLOG         1024 /* requests waiting for a worker, per replica */
#define NOISE_SLICE_NS  (60 * NS_PER_S)
#define RATE_SLICE_NS   NS_PER_S

enum ev_type {
    EV_ROOT,
    EV_ARRIVE,
    EV_CPU_DONE,
    EV_DISK_DONE,
    EV_LOCK_DONE,
    EV_RESPONSE,
    EV_SCRAPE,
    EV_FAULT,
    EV_BG_IO,
};

enum phase { PH_CPU1, PH_CPU2 };

struct event
{
    uint64_t t, seq;
    struct call *c;
    uint32_t type;
};

struct call
{
    struct call *parent, *root, *qnext;
    uint64_t t_send, t_arrive;
    double demand_ns; /* the compute segment being queued or run */
    double post_ns;   /* the second compute segment */
    uint32_t op, rep;
    uint16_t step, pending;
    uint8_t phase, sampled;
    uint8_t error;    /* failed, or a child failed */
    uint8_t rejected; /* refused at a full backlog: never had a worker */
    uint8_t span_id[8], client_id[8];
    uint8_t trace_id[16]; /* roots only */
};

struct fifo
{
    struct call *head, *tail;
};

/* What the active faults do to one replica. */
struct effect
{
    double cpu_slow;  /* compute takes (1 + cpu_slow) times longer */
    double hog_share; /* share of the cores a hog uses */
    double mem_frac;  /* share of the headroom taken */
    double mem_slow;  /* paging slow-down factor (>= 1) */
    double net_ns;    /* extra one-way delay into the replica */
    double disk_frac; /* share of the disk kept busy by background I/O */
    double leak;      /* share of worker threads stuck */
    double lock_ns;   /* lock hold per request */
    uint32_t cap;     /* usable worker threads */
    uint32_t leaked;  /* stuck worker threads */
};

struct replica
{
    uint32_t svc, host;
    char *instance;
    uint32_t threads_busy, cores_busy;
    int lock_busy, disk_busy;
    int bg_running; /* a chain of background I/O arrivals is scheduled */
    struct fifo thread_q, core_q, lock_q, disk_q;
    uint32_t thread_q_len;
    uint32_t inflight, blocked;
    uint64_t last_ns;
    /* Since the last scrape. */
    double busy_int, blocked_int, inflight_int, cpu_ns;
    /* Cumulative counters. */
    double cpu_s, rx, tx, fs_r, fs_w;
    double mem_walk;
    struct effect eff;
};

struct link
{
    uint32_t caller, callee; /* services */
    char *labels;            /* "peer.service=CALLEE" */
};

struct node_sim
{
    const struct node_sim_topology *t;
    uint64_t start, end, now, scrape_ns;
    double sampling, blocked_cpu;
    struct node_sim_load load;
    size_t batch;

    struct replica *reps;
    size_t n_reps;
    uint32_t *first_rep; /* per service: index of its replica 0 */
    uint32_t *rr;        /* per service: round-robin counter */
    struct link *links;
    size_t n_links;
    double entry_total;

    struct node_sim_fault *faults;
    size_t n_faults;
    uint64_t *bounds; /* sorted distinct fault start/end times */
    size_t n_bounds, next_bound;
    double spike; /* rate factor of the active load spikes */

    struct sm_rng rng_load, rng_svc, rng_ids, rng_metric;
    uint64_t id_counter, id_key;
    uint64_t noise_slice;
    double noise_log;

    struct event *heap;
    size_t n_heap, cap_heap;
    uint64_t seq;

    struct call *free_calls;
    void **chunks;
    size_t n_chunks, cap_chunks;
    uint64_t live_calls;

    struct cbn_span *spans;
    size_t n_spans;
    struct cbn_metric_point *points;
    size_t cap_points;

    node_sim_spans_cb on_spans;
    node_sim_points_cb on_points;
    void *cb_arg;
    int stop;     /* a callback's non-zero return */
    int broken;   /* SM_ENOMEM: the run cannot go on */
    int finished; /* the end was reached and flushed */

    struct node_sim_stats stats;

    /* Ground-truth QoS per window. */
    node_sim_qos_cb qos_cb;
    void *qos_arg;
    uint64_t qos_window, qos_index;
    double qos_pct;
    double *qos_lat;
    size_t qos_n, qos_cap;
};

/* ---- Small helpers ------------------------------------------------------ */

static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void new_id(struct node_sim *s, uint8_t out[8])
{
    uint64_t v = mix64(s->id_key ^ ++s->id_counter);
    if (v == 0) {
        v = 1;
    }
    for (int i = 0; i < 8; i++) {
        out[i] = (uint8_t)(v >> (56 - 8 * i));
    }
}

static double exp_draw(struct sm_rng *r, double mean)
{
    return -mean * log1p(-sm_rng_double(r));
}

static uint64_t ns_of(double ns)
{
    return ns <= 0 ? 0 : (uint64_t)(ns + 0.5);
}

static void fifo_push(struct fifo *q, struct call *c)
{
    c->qnext = NULL;
    if (q->tail != NULL) {
        q->tail->qnext = c;
    } else {
        q->head = c;
    }
    q->tail = c;
}

static struct call *fifo_pop(struct fifo *q)
{
    struct call *c = q->head;
    if (c != NULL) {
        q->head = c->qnext;
        if (q->head == NULL) {
            q->tail = NULL;
        }
        c->qnext = NULL;
    }
    return c;
}

/* ---- The event heap ----------------------------------------------------- */

static int ev_less(const struct event *a, const struct event *b)
{
    return a->t < b->t || (a->t == b->t && a->seq < b->seq);
}

static void schedule(struct node_sim *s,
                     uint64_t t,
                     uint32_t type,
                     struct call *c)
{
    if (s->n_heap == s->cap_heap) {
        size_t cap = s->cap_heap ? s->cap_heap * 2 : 1024;
        struct event *h = realloc(s->heap, cap * sizeof *h);
        if (h == NULL) {
            s->broken = SM_ENOMEM;
            return;
        }
        s->heap = h;
        s->cap_heap = cap;
    }
    struct event e = {t, s->seq++, c, type};
    size_t i = s->n_heap++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!ev_less(&e, &s->heap[p])) {
            break;
        }
        s->heap[i] = s->heap[p];
        i = p;
    }
    s->heap[i] = e;
}

static struct event pop_event(struct node_sim *s)
{
    struct event top = s->heap[0];
    struct event last = s->heap[--s->n_heap];
    size_t i = 0, n = s->n_heap;
    for (;;) {
        size_t l = 2 * i + 1;
        if (l >= n) {
            break;
        }
        size_t m =
            l + 1 < n && ev_less(&s->heap[l + 1], &s->heap[l]) ? l + 1 : l;
        if (!ev_less(&s->heap[m], &last)) {
            break;
        }
        s->heap[i] = s->heap[m];
        i = m;
    }
    if (n > 0) {
        s->heap[i] = last;
    }
    return top;
}

/* ---- Calls -------------------------------------------------------------- */

static struct call *call_new(struct node_sim *s)
{
    if (s->free_calls == NULL) {
        if (s->n_chunks == s->cap_chunks) {
            size_t cap = s->cap_chunks ? s->cap_chunks * 2 : 16;
            void **ch = realloc(s->chunks, cap * sizeof *ch);
            if (ch == NULL) {
                s->broken = SM_ENOMEM;
                return NULL;
            }
            s->chunks = ch;
            s->cap_chunks = cap;
        }
        struct call *block = malloc(CALL_CHUNK * sizeof *block);
        if (block == NULL) {
            s->broken = SM_ENOMEM;
            return NULL;
        }
        s->chunks[s->n_chunks++] = block;
        for (size_t i = 0; i < CALL_CHUNK; i++) {
            block[i].qnext = s->free_calls;
            s->free_calls = &block[i];
        }
    }
    struct call *c = s->free_calls;
    s->free_calls = c->qnext;
    memset(c, 0, sizeof *c);
    if (++s->live_calls > s->stats.max_in_flight) {
        s->stats.max_in_flight = s->live_calls;
    }
    return c;
}

static void call_free(struct node_sim *s, struct call *c)
{
    c->qnext = s->free_calls;
    s->free_calls = c;
    s->live_calls--;
}

/* ---- Telemetry out ------------------------------------------------------ */

static void flush_spans(struct node_sim *s)
{
    if (s->n_spans == 0) {
        return;
    }
    size_t n = s->n_spans;
    s->n_spans = 0;
    s->stats.spans += n;
    if (s->on_spans != NULL && s->stop == 0) {
        s->stop = s->on_spans(s->cb_arg, s->spans, n);
    }
}

static void emit_span(struct node_sim *s,
                      const struct call *c,
                      int client,
                      uint64_t t0,
                      uint64_t t1)
{
    const struct node_sim_topology *t = s->t;
    const struct sim_op *op = &t->ops[c->op];
    struct cbn_span *sp = &s->spans[s->n_spans++];
    memcpy(sp->trace_id, c->root->trace_id, 16);
    sp->start_ns = t0;
    sp->end_ns = t1;
    sp->error = c->error;
    sp->operation = op->name;
    if (client) {
        /* The caller's CLIENT span: its parent is the caller's SERVER span,
         * and it is the parent of the callee's SERVER span. */
        const struct replica *r = &s->reps[c->parent->rep];
        memcpy(sp->span_id, c->client_id, 8);
        memcpy(sp->parent_id, c->parent->span_id, 8);
        sp->kind = CBN_SPAN_CLIENT;
        sp->service = t->services[r->svc].name;
        sp->instance = r->instance;
        sp->peer = t->services[op->service].name;
    } else {
        const struct replica *r = &s->reps[c->rep];
        memcpy(sp->span_id, c->span_id, 8);
        if (c->parent != NULL) {
            memcpy(sp->parent_id, c->client_id, 8);
        } else {
            memset(sp->parent_id, 0, 8);
        }
        sp->kind = CBN_SPAN_SERVER;
        sp->service = t->services[r->svc].name;
        sp->instance = r->instance;
        sp->peer = "";
    }
    if (s->n_spans == s->batch) {
        flush_spans(s);
    }
}

/* ---- Accounting --------------------------------------------------------- */

static void acc(struct replica *r, uint64_t now)
{
    double dt = (double)(now - r->last_ns);
    r->busy_int += r->threads_busy * dt;
    r->blocked_int += r->blocked * dt;
    r->inflight_int += r->inflight * dt;
    r->last_ns = now;
}

/* ---- Faults ------------------------------------------------------------- */

static void recompute_effects(struct node_sim *s)
{
    const struct node_sim_topology *t = s->t;
    s->spike = 1;
    for (size_t i = 0; i < s->n_reps; i++) {
        s->reps[i].eff = (struct effect){0};
    }
    for (size_t f = 0; f < s->n_faults; f++) {
        const struct node_sim_fault *x = &s->faults[f];
        if (!(x->start_ns <= s->now && s->now < x->end_ns)) {
            continue;
        }
        if (x->kind == NODE_SIM_FAULT_LOAD_SPIKE) {
            s->spike *= 1 + x->magnitude;
            continue;
        }
        int svc = sim__find_service(t, x->service);
        uint32_t first = s->first_rep[svc];
        for (uint32_t k = 0; k < t->services[svc].replicas; k++) {
            if (x->replica >= 0 && (uint32_t)x->replica != k) {
                continue;
            }
            struct effect *e = &s->reps[first + k].eff;
            double m = x->magnitude;
            switch (x->kind) {
                case NODE_SIM_FAULT_CPU:
                    e->cpu_slow += m;
                    e->hog_share += m / (1 + m);
                    break;
                case NODE_SIM_FAULT_MEMORY:
                    e->mem_frac += m;
                    break;
                case NODE_SIM_FAULT_NETWORK:
                    e->net_ns += m * NS_PER_MS;
                    break;
                case NODE_SIM_FAULT_DISK:
                    e->disk_frac = 1 - (1 - e->disk_frac) * (1 - m);
                    break;
                case NODE_SIM_FAULT_THREADPOOL:
                    e->leak += m;
                    break;
                case NODE_SIM_FAULT_LOCK:
                    e->lock_ns += m * NS_PER_MS;
                    break;
                default:
                    break;
            }
        }
    }
    for (size_t i = 0; i < s->n_reps; i++) {
        struct replica *r = &s->reps[i];
        const struct sim_service *sv = &t->services[r->svc];
        struct effect *e = &r->eff;
        e->hog_share = e->hog_share > 0.95 ? 0.95 : e->hog_share;
        e->mem_frac = e->mem_frac > 1 ? 1 : e->mem_frac;
        e->disk_frac = e->disk_frac > 0.95 ? 0.95 : e->disk_frac;
        e->leak = e->leak > 1 ? 1 : e->leak;
        /* Paging: free below 80% of the limit, then compute slows down
         * exponentially, 7x at 90% and 50x (thrashing) at 100%. */
        double ws =
            sv->memory_mb + e->mem_frac * (sv->limit_mb - sv->memory_mb);
        double over = ws / sv->limit_mb - 0.8;
        e->mem_slow = over > 0 ? exp(log(50) * over / 0.2) : 1;
        e->leaked = (uint32_t)floor(e->leak * sv->threads);
        if (e->leaked >= sv->threads) {
            e->leaked = sv->threads - 1;
        }
        e->cap = sv->threads - e->leaked;
    }
}

/* ---- The request life cycle -------------------------------------------- */

static void run_steps(struct node_sim *s, struct call *c);
static void finish(struct node_sim *s, struct call *c);

static double link_ns(struct node_sim *s, uint32_t from_rep, uint32_t to_rep)
{
    double base = s->reps[from_rep].host == s->reps[to_rep].host
                      ? LINK_LOCAL_NS
                      : LINK_REMOTE_NS;
    return base + exp_draw(&s->rng_svc, base * LINK_JITTER);
}

static void start_cpu(struct node_sim *s, struct call *c)
{
    struct replica *r = &s->reps[c->rep];
    r->cores_busy++;
    r->cpu_ns += c->demand_ns;
    double slow = (1 + r->eff.cpu_slow) * r->eff.mem_slow;
    schedule(s, s->now + ns_of(c->demand_ns * slow), EV_CPU_DONE, c);
}

static void want_cpu(struct node_sim *s, struct call *c, double demand_ns)
{
    struct replica *r = &s->reps[c->rep];
    c->demand_ns = demand_ns;
    if (r->cores_busy < s->t->services[r->svc].cores) {
        start_cpu(s, c);
    } else {
        fifo_push(&r->core_q, c);
    }
}

static void compute_first(struct node_sim *s, struct call *c)
{
    const struct sim_op *op = &s->t->ops[c->op];
    double sigma = op->sigma;
    double d = op->compute_ms * NS_PER_MS *
               exp(sigma * sm_rng_normal(&s->rng_svc) - sigma * sigma / 2);
    if (op->n_steps == 0 && op->disk_p <= 0) {
        /* Nothing to wait for in between: one segment, so the core is not
         * given up half-way (a leaf runs first-come first-served). */
        c->phase = PH_CPU2;
        want_cpu(s, c, d);
        return;
    }
    c->post_ns = d / 2;
    c->phase = PH_CPU1;
    want_cpu(s, c, d / 2);
}

static void start_lock(struct node_sim *s, struct call *c)
{
    struct replica *r = &s->reps[c->rep];
    r->lock_busy = 1;
    schedule(s, s->now + ns_of(r->eff.lock_ns), EV_LOCK_DONE, c);
}

/* The call has a worker thread now. */
static void got_worker(struct node_sim *s, struct call *c)
{
    struct replica *r = &s->reps[c->rep];
    acc(r, s->now);
    r->threads_busy++;
    if (r->eff.lock_ns > 0) {
        if (!r->lock_busy) {
            start_lock(s, c);
        } else {
            fifo_push(&r->lock_q, c);
        }
        return;
    }
    compute_first(s, c);
}

static void arrive(struct node_sim *s, struct call *c)
{
    struct replica *r = &s->reps[c->rep];
    acc(r, s->now);
    c->t_arrive = s->now;
    r->inflight++;
    r->rx += s->t->ops[c->op].req_bytes;
    if (r->threads_busy < r->eff.cap && r->thread_q.head == NULL) {
        got_worker(s, c);
    } else if (r->thread_q_len < BACKLOG) {
        fifo_push(&r->thread_q, c);
        r->thread_q_len++;
    } else {
        c->rejected = 1;
        c->error = 1;
        finish(s, c);
    }
}

static void dispatch_workers(struct node_sim *s, struct replica *r)
{
    while (r->threads_busy < r->eff.cap && r->thread_q.head != NULL) {
        r->thread_q_len--;
        got_worker(s, fifo_pop(&r->thread_q));
    }
}

static double disk_ms(const struct node_sim *s, const struct call *c)
{
    double bytes = c->op == BG_OP ? BG_IO_BYTES
                                  : (double)s->t->ops[c->op].read_bytes +
                                        s->t->ops[c->op].write_bytes;
    return DISK_SEEK_MS + bytes / DISK_BW_BPS * 1e3;
}

static void start_disk(struct node_sim *s, struct call *c)
{
    s->reps[c->rep].disk_busy = 1;
    schedule(s, s->now + ns_of(disk_ms(s, c) * NS_PER_MS), EV_DISK_DONE, c);
}

static void want_disk(struct node_sim *s, struct call *c)
{
    struct replica *r = &s->reps[c->rep];
    if (!r->disk_busy) {
        start_disk(s, c);
    } else {
        fifo_push(&r->disk_q, c);
    }
}

/* Schedules the next background I/O of replica @rep, at the rate that keeps
 * the disk busy its fault's share of the time. */
static void next_bg_io(struct node_sim *s, uint32_t rep)
{
    struct replica *r = &s->reps[rep];
    struct call *c = call_new(s);
    if (c == NULL) {
        return;
    }
    c->op = BG_OP;
    c->rep = rep;
    double mean = disk_ms(s, c) * NS_PER_MS / r->eff.disk_frac;
    r->bg_running = 1;
    schedule(s, s->now + ns_of(exp_draw(&s->rng_svc, mean)), EV_BG_IO, c);
}

static void after_cpu1(struct node_sim *s, struct call *c)
{
    const struct sim_op *op = &s->t->ops[c->op];
    struct replica *r = &s->reps[c->rep];
    (void)r;
    if (op->disk_p > 0 &&
        (op->disk_p >= 1 || sm_rng_double(&s->rng_svc) < op->disk_p)) {
        want_disk(s, c);
        return;
    }
    run_steps(s, c);
}

static uint32_t pick_replica(struct node_sim *s, uint32_t svc)
{
    uint32_t n = s->t->services[svc].replicas;
    return s->first_rep[svc] + (s->rr[svc]++ % n);
}

static void send_call(struct node_sim *s, struct call *parent, uint32_t op)
{
    struct call *c = call_new(s);
    if (c == NULL) {
        return;
    }
    const struct sim_op *o = &s->t->ops[op];
    c->parent = parent;
    c->root = parent->root;
    c->op = op;
    c->rep = pick_replica(s, o->service);
    c->sampled = parent->sampled;
    c->t_send = s->now;
    if (c->sampled) {
        new_id(s, c->client_id);
        new_id(s, c->span_id);
    }
    s->reps[parent->rep].tx += o->req_bytes;
    double d = link_ns(s, parent->rep, c->rep) + s->reps[c->rep].eff.net_ns;
    schedule(s, s->now + ns_of(d), EV_ARRIVE, c);
}

static void run_steps(struct node_sim *s, struct call *c)
{
    const struct node_sim_topology *t = s->t;
    const struct sim_op *op = &t->ops[c->op];
    while (c->step < op->n_steps) {
        const struct sim_step *st = &t->steps[op->steps[c->step]];
        uint16_t spawned = 0;
        for (uint32_t k = 0; k < st->n; k++) {
            const struct sim_call *sc = &t->calls[st->first + k];
            if (sc->p >= 1 ||
                (sc->p > 0 && sm_rng_double(&s->rng_svc) < sc->p)) {
                send_call(s, c, sc->op);
                spawned++;
            }
        }
        if (spawned > 0) {
            struct replica *r = &s->reps[c->rep];
            acc(r, s->now);
            r->blocked++;
            c->pending = spawned;
            return;
        }
        c->step++;
    }
    c->phase = PH_CPU2;
    want_cpu(s, c, c->post_ns);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void qos_flush(struct node_sim *s)
{
    double lat = NAN;
    if (s->qos_n > 0) {
        size_t n = s->qos_n;
        double *v = s->qos_lat;
        qsort(v, n, sizeof *v, cmp_double);
        size_t rank = (size_t)floor(s->qos_pct / 100 * (double)(n - 1));
        lat = v[rank];
    }
    uint64_t w0 = s->qos_index * s->qos_window;
    s->qos_cb(s->qos_arg, w0, w0 + s->qos_window, lat, s->qos_n);
    s->qos_n = 0;
    s->qos_index++;
}

static void qos_record(struct node_sim *s, uint64_t end, double ms)
{
    uint64_t w = end / s->qos_window;
    if (s->qos_index == 0) {
        s->qos_index = s->start / s->qos_window;
    }
    while (s->qos_index < w) {
        qos_flush(s);
    }
    if (s->qos_n == s->qos_cap) {
        size_t cap = s->qos_cap ? s->qos_cap * 2 : 4096;
        double *v = realloc(s->qos_lat, cap * sizeof *v);
        if (v == NULL) {
            s->broken = SM_ENOMEM;
            return;
        }
        s->qos_lat = v;
        s->qos_cap = cap;
    }
    s->qos_lat[s->qos_n++] = ms;
}

static void finish(struct node_sim *s, struct call *c)
{
    const struct sim_op *op = &s->t->ops[c->op];
    struct replica *r = &s->reps[c->rep];
    acc(r, s->now);
    r->inflight--;
    r->tx += op->resp_bytes;
    s->stats.calls++;
    if (c->sampled) {
        emit_span(s, c, 0, c->t_arrive, s->now);
    }
    if (!c->rejected) {
        r->threads_busy--;
        dispatch_workers(s, r);
    }
    if (c->parent != NULL) {
        double d = link_ns(s, c->rep, c->parent->rep) + r->eff.net_ns;
        schedule(s, s->now + ns_of(d), EV_RESPONSE, c);
        return;
    }
    s->stats.requests++;
    if (s->qos_cb != NULL) {
        qos_record(s, s->now, (double)(s->now - c->t_arrive) / NS_PER_MS);
    }
    call_free(s, c);
}

static void on_response(struct node_sim *s, struct call *c)
{
    struct call *p = c->parent;
    struct replica *r = &s->reps[p->rep];
    r->rx += s->t->ops[c->op].resp_bytes;
    if (c->sampled) {
        emit_span(s, c, 1, c->t_send, s->now);
    }
    p->error |= c->error;
    call_free(s, c);
    if (--p->pending == 0) {
        acc(r, s->now);
        r->blocked--;
        p->step++;
        run_steps(s, p);
    }
}

/* ---- Load --------------------------------------------------------------- */

static double rate_at(struct node_sim *s, uint64_t t)
{
    const struct node_sim_load *l = &s->load;
    uint64_t slice = (t - s->start) / NOISE_SLICE_NS;
    while (s->noise_slice < slice) {
        s->noise_log = 0.7 * s->noise_log +
                       sqrt(1 - 0.49) * l->noise * sm_rng_normal(&s->rng_load);
        s->noise_slice++;
    }
    double phase = 2 * M_PI * (double)(t % l->diurnal_period_ns) /
                   (double)l->diurnal_period_ns;
    double diurnal = 1 + l->diurnal_amplitude * sin(phase - M_PI / 2);
    return l->rate * diurnal * exp(s->noise_log) * s->spike;
}

/* The next arrival after @t: exponential gaps at a rate held constant over
 * one-second slices (exact for a piecewise-constant rate, by the memoryless
 * property). Returns the end of the run when there is none before it. */
static uint64_t next_arrival(struct node_sim *s, uint64_t t)
{
    while (t < s->end) {
        uint64_t slice_end =
            s->start + ((t - s->start) / RATE_SLICE_NS + 1) * RATE_SLICE_NS;
        double r = rate_at(s, t);
        if (r > 0) {
            double gap = exp_draw(&s->rng_load, 1e9 / r);
            if ((double)t + gap < (double)slice_end) {
                return t + ns_of(gap);
            }
        }
        t = slice_end;
    }
    return s->end;
}

static void on_root(struct node_sim *s)
{
    const struct node_sim_topology *t = s->t;
    double u = sm_rng_double(&s->rng_load) * s->entry_total;
    size_t e = 0;
    while (e + 1 < t->n_entries && u >= t->entries[e].weight) {
        u -= t->entries[e].weight;
        e++;
    }
    uint64_t next = next_arrival(s, s->now);
    if (next < s->end) {
        schedule(s, next, EV_ROOT, NULL);
    }
    struct call *c = call_new(s);
    if (c == NULL) {
        return;
    }
    c->root = c;
    c->op = t->entries[e].op;
    c->rep = pick_replica(s, t->ops[c->op].service);
    c->t_send = s->now;
    c->sampled = s->sampling >= 1 || sm_rng_double(&s->rng_ids) < s->sampling;
    if (c->sampled) {
        s->stats.sampled_traces++;
        uint64_t a = sm_rng_u64(&s->rng_ids), b = sm_rng_u64(&s->rng_ids);
        for (int i = 0; i < 8; i++) {
            c->trace_id[i] = (uint8_t)(a >> (56 - 8 * i));
            c->trace_id[8 + i] = (uint8_t)(b >> (56 - 8 * i));
        }
        new_id(s, c->span_id);
    }
    arrive(s, c);
}

/* ---- Scrapes ------------------------------------------------------------ */

static void add_point(struct node_sim *s,
                      size_t *n,
                      const struct replica *r,
                      const char *name,
                      const char *labels,
                      const char *peer,
                      double v,
                      int cumulative)
{
    s->points[(*n)++] = (struct cbn_metric_point){s->t->services[r->svc].name,
                                                  r->instance,
                                                  name,
                                                  labels,
                                                  peer,
                                                  s->now,
                                                  v,
                                                  cumulative};
}

static void on_scrape(struct node_sim *s)
{
    const struct node_sim_topology *t = s->t;
    double dt = (double)s->scrape_ns;
    size_t n = 0;
    for (size_t i = 0; i < s->n_reps; i++) {
        struct replica *r = &s->reps[i];
        const struct sim_service *sv = &t->services[r->svc];
        const struct effect *e = &r->eff;
        acc(r, s->now);
        int first = s->now == s->start;
        double cores_ns = sv->cores * dt;
        double used = r->cpu_ns + e->hog_share * cores_ns +
                      s->blocked_cpu * r->blocked_int;
        if (!first) {
            r->cpu_s += (used < cores_ns ? used : cores_ns) / 1e9;
        }
        /* Memory: base, buffers of requests in flight, the fault, and a
         * slow mean-reverting wander of 1% of the base. */
        r->mem_walk = 0.9 * r->mem_walk +
                      0.01 * sm_rng_normal(&s->rng_metric) * sv->memory_mb;
        double inflight = first ? 0 : r->inflight_int / dt;
        double ws = (sv->memory_mb + r->mem_walk +
                     e->mem_frac * (sv->limit_mb - sv->memory_mb)) *
                        1048576.0 +
                    inflight * sv->request_kb * 1024;
        double busy = (first ? 0 : r->busy_int / dt) + e->leaked;
        add_point(s, &n, r, "container_cpu_usage_seconds_total", "", "",
                  r->cpu_s, 1);
        add_point(s, &n, r, "container_memory_working_set_bytes", "", "", ws,
                  0);
        add_point(s, &n, r, "container_network_receive_bytes_total", "", "",
                  r->rx, 1);
        add_point(s, &n, r, "container_network_transmit_bytes_total", "", "",
                  r->tx, 1);
        add_point(s, &n, r, "threadpool_active_threads", "", "", busy, 0);
        if (sv->has_disk) {
            add_point(s, &n, r, "container_fs_reads_bytes_total", "", "",
                      r->fs_r, 1);
            add_point(s, &n, r, "container_fs_writes_bytes_total", "", "",
                      r->fs_w, 1);
        }
        for (size_t k = 0; k < s->n_links; k++) {
            const struct link *l = &s->links[k];
            if (l->caller != r->svc) {
                continue;
            }
            /* A blackbox probe: one round trip to a replica of the callee. */
            uint32_t to = s->first_rep[l->callee] +
                          (uint32_t)sm_rng_below(
                              &s->rng_metric, t->services[l->callee].replicas);
            double base =
                r->host == s->reps[to].host ? LINK_LOCAL_NS : LINK_REMOTE_NS;
            double rtt = 2 * (base + s->reps[to].eff.net_ns) +
                         exp_draw(&s->rng_metric, 2 * base * LINK_JITTER) +
                         20000; /* the probe's own handling */
            add_point(s, &n, r, "probe_duration_seconds", l->labels,
                      t->services[l->callee].name, rtt / 1e9, 0);
        }
        r->busy_int = r->blocked_int = r->inflight_int = r->cpu_ns = 0;
    }
    flush_spans(s);
    s->stats.points += n;
    if (s->on_points != NULL && s->stop == 0) {
        s->stop = s->on_points(s->cb_arg, s->points, n);
    }
    uint64_t next = s->now + s->scrape_ns;
    if (next < s->end) {
        schedule(s, next, EV_SCRAPE, NULL);
    }
}

/* ---- Events ------------------------------------------------------------- */

/* The active faults changed: new effects, freed workers put to work, and
 * background I/O started where a disk fault began. */
static void apply_effects(struct node_sim *s)
{
    recompute_effects(s);
    for (size_t i = 0; i < s->n_reps; i++) {
        dispatch_workers(s, &s->reps[i]);
        if (s->reps[i].eff.disk_frac > 0 && !s->reps[i].bg_running) {
            next_bg_io(s, (uint32_t)i);
        }
    }
}

static void on_event(struct node_sim *s, const struct event *ev)
{
    struct call *c = ev->c;
    struct replica *r = c != NULL ? &s->reps[c->rep] : NULL;
    switch (ev->type) {
        case EV_ROOT:
            on_root(s);
            break;
        case EV_ARRIVE:
            arrive(s, c);
            break;
        case EV_LOCK_DONE: {
            struct call *next = fifo_pop(&r->lock_q);
            r->lock_busy = 0;
            if (next != NULL) {
                start_lock(s, next);
            }
            compute_first(s, c);
            break;
        }
        case EV_CPU_DONE: {
            r->cores_busy--;
            struct call *next = fifo_pop(&r->core_q);
            if (next != NULL) {
                start_cpu(s, next);
            }
            if (c->phase == PH_CPU1) {
                after_cpu1(s, c);
            } else {
                finish(s, c);
            }
            break;
        }
        case EV_DISK_DONE: {
            r->disk_busy = 0;
            struct call *next = fifo_pop(&r->disk_q);
            if (next != NULL) {
                start_disk(s, next);
            }
            if (c->op == BG_OP) {
                /* A compaction-like mix: a third read, the rest written. */
                r->fs_r += BG_IO_BYTES / 3;
                r->fs_w += BG_IO_BYTES * 2 / 3;
                call_free(s, c);
                break;
            }
            const struct sim_op *op = &s->t->ops[c->op];
            r->fs_r += op->read_bytes;
            r->fs_w += op->write_bytes;
            run_steps(s, c);
            break;
        }
        case EV_BG_IO:
            if (r->eff.disk_frac <= 0) {
                r->bg_running = 0;
                call_free(s, c);
                break;
            }
            want_disk(s, c);
            next_bg_io(s, c->rep);
            break;
        case EV_RESPONSE:
            on_response(s, c);
            break;
        case EV_SCRAPE:
            on_scrape(s);
            break;
        case EV_FAULT:
            apply_effects(s);
            if (++s->next_bound < s->n_bounds) {
                schedule(s, s->bounds[s->next_bound], EV_FAULT, NULL);
            }
            break;
        default:
            SM_ASSERT(0);
    }
}

int node_sim_run(struct node_sim *s,
                 uint64_t until_ns,
                 node_sim_spans_cb on_spans,
                 node_sim_points_cb on_points,
                 void *arg)
{
    if (s->broken) {
        return s->broken;
    }
    if (until_ns > s->end) {
        until_ns = s->end;
    }
    s->on_spans = on_spans;
    s->on_points = on_points;
    s->cb_arg = arg;
    while (s->n_heap > 0 && s->heap[0].t < until_ns) {
        struct event ev = pop_event(s);
        s->now = ev.t;
        s->stats.events++;
        on_event(s, &ev);
        if (s->broken) {
            return s->broken;
        }
        if (s->stop) {
            int rv = s->stop;
            s->stop = 0;
            return rv;
        }
    }
    if (until_ns > s->now) {
        s->now = until_ns;
    }
    flush_spans(s);
    if (s->now >= s->end && !s->finished) {
        s->finished = 1;
        if (s->qos_cb != NULL) {
            while (s->qos_index > 0 && s->qos_index * s->qos_window < s->end) {
                qos_flush(s);
            }
        }
    }
    int rv = s->stop;
    s->stop = 0;
    return rv;
}

/* ---- Set-up ------------------------------------------------------------- */

void node_sim_config_init(struct node_sim_config *c,
                          const struct node_sim_topology *topo)
{
    *c = (struct node_sim_config){
        .topology = topo,
        .seed = 1,
        .duration_ns = 3600 * NS_PER_S,
        .blocked_cpu = -1,
        .load = {.rate = 0, .diurnal_amplitude = -1, .noise = -1},
    };
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int check_faults(const struct node_sim_config *c, char *errmsg)
{
    const struct node_sim_topology *t = c->topology;
    for (size_t i = 0; i < c->n_faults; i++) {
        const struct node_sim_fault *f = &c->faults[i];
        if ((unsigned)f->kind >= NODE_SIM_FAULT_KINDS) {
            sm_errmsg_printf(errmsg, "fault %zu: unknown kind %d", i,
                             (int)f->kind);
            return SM_EINVAL;
        }
        if (f->end_ns <= f->start_ns || !isfinite(f->magnitude) ||
            f->magnitude < 0) {
            sm_errmsg_printf(errmsg,
                             "fault %zu: needs start < end and a finite "
                             "magnitude >= 0",
                             i);
            return SM_EINVAL;
        }
        if (f->kind == NODE_SIM_FAULT_LOAD_SPIKE) {
            continue;
        }
        int svc = f->service ? sim__find_service(t, f->service) : -1;
        if (svc < 0) {
            sm_errmsg_printf(errmsg, "fault %zu: unknown service '%s'", i,
                             f->service ? f->service : "(none)");
            return SM_EINVAL;
        }
        if (f->replica >= (int)t->services[svc].replicas) {
            sm_errmsg_printf(errmsg, "fault %zu: %s has no replica %d", i,
                             f->service, f->replica);
            return SM_EINVAL;
        }
    }
    return SM_OK;
}

static int build(struct node_sim *s, const struct node_sim_config *c)
{
    const struct node_sim_topology *t = s->t;
    s->first_rep = calloc(t->n_services, sizeof *s->first_rep);
    s->rr = calloc(t->n_services, sizeof *s->rr);
    size_t n_reps = 0;
    for (size_t i = 0; i < t->n_services; i++) {
        n_reps += t->services[i].replicas;
    }
    s->reps = calloc(n_reps, sizeof *s->reps);
    if (s->first_rep == NULL || s->rr == NULL || s->reps == NULL) {
        return SM_ENOMEM;
    }
    /* Replicas are dealt over the hosts like cards, continuing from where
     * the previous service stopped, so every host gets a mix. */
    uint32_t host = 0;
    for (size_t i = 0; i < t->n_services; i++) {
        const struct sim_service *sv = &t->services[i];
        s->first_rep[i] = (uint32_t)s->n_reps;
        for (uint32_t k = 0; k < sv->replicas; k++) {
            struct replica *r = &s->reps[s->n_reps++];
            size_t len = strlen(sv->name) + 16;
            r->instance = malloc(len);
            if (r->instance == NULL) {
                return SM_ENOMEM;
            }
            snprintf(r->instance, len, "%s-%u", sv->name, k);
            r->svc = (uint32_t)i;
            r->host = host;
            r->last_ns = s->start;
            host = (host + 1) % t->n_hosts;
        }
    }
    /* Links: the distinct (caller service, callee service) pairs. */
    s->links = calloc(t->n_calls ? t->n_calls : 1, sizeof *s->links);
    if (s->links == NULL) {
        return SM_ENOMEM;
    }
    for (size_t i = 0; i < t->n_ops; i++) {
        const struct sim_op *o = &t->ops[i];
        for (uint32_t st = 0; st < o->n_steps; st++) {
            const struct sim_step *step = &t->steps[o->steps[st]];
            for (uint32_t k = 0; k < step->n; k++) {
                uint32_t callee = t->ops[t->calls[step->first + k].op].service;
                size_t l = 0;
                while (l < s->n_links && !(s->links[l].caller == o->service &&
                                           s->links[l].callee == callee)) {
                    l++;
                }
                if (l < s->n_links) {
                    continue;
                }
                size_t len = strlen(t->services[callee].name) + 16;
                char *labels = malloc(len);
                if (labels == NULL) {
                    return SM_ENOMEM;
                }
                snprintf(labels, len, "peer.service=%s",
                         t->services[callee].name);
                s->links[s->n_links++] =
                    (struct link){o->service, callee, labels};
            }
        }
    }
    size_t per_rep = 7;
    s->cap_points = s->n_reps * per_rep;
    for (size_t l = 0; l < s->n_links; l++) {
        s->cap_points += t->services[s->links[l].caller].replicas;
    }
    s->points = calloc(s->cap_points, sizeof *s->points);
    s->spans = calloc(s->batch, sizeof *s->spans);
    if (s->points == NULL || s->spans == NULL) {
        return SM_ENOMEM;
    }
    for (size_t i = 0; i < t->n_entries; i++) {
        s->entry_total += t->entries[i].weight;
    }
    /* Faults: copied, resources from their kind, services pointing into
     * the topology; the boundaries drive the effect changes. */
    s->n_faults = c->n_faults;
    s->faults = calloc(c->n_faults ? c->n_faults : 1, sizeof *s->faults);
    s->bounds = calloc(2 * c->n_faults + 1, sizeof *s->bounds);
    if (s->faults == NULL || s->bounds == NULL) {
        return SM_ENOMEM;
    }
    for (size_t i = 0; i < c->n_faults; i++) {
        struct node_sim_fault f = c->faults[i];
        f.resource = node_sim_fault_resource(f.kind);
        if (f.kind == NODE_SIM_FAULT_LOAD_SPIKE) {
            f.service = NULL;
            f.replica = -1;
        } else {
            f.service = t->services[sim__find_service(t, f.service)].name;
        }
        if (f.group == 0) {
            f.group = (uint32_t)i + 1;
        }
        s->faults[i] = f;
        s->bounds[s->n_bounds++] = f.start_ns;
        s->bounds[s->n_bounds++] = f.end_ns;
    }
    /* Sort faults by start (stable enough: ties keep a fixed order by
     * insertion sort), and the boundaries, dropping duplicates. */
    for (size_t i = 1; i < s->n_faults; i++) {
        struct node_sim_fault x = s->faults[i];
        size_t j = i;
        while (j > 0 && s->faults[j - 1].start_ns > x.start_ns) {
            s->faults[j] = s->faults[j - 1];
            j--;
        }
        s->faults[j] = x;
    }
    qsort(s->bounds, s->n_bounds, sizeof *s->bounds, cmp_u64);
    size_t m = 0;
    for (size_t i = 0; i < s->n_bounds; i++) {
        if (m == 0 || s->bounds[i] != s->bounds[m - 1]) {
            s->bounds[m++] = s->bounds[i];
        }
    }
    s->n_bounds = m;
    return SM_OK;
}

int node_sim_new(const struct node_sim_config *c,
                 struct node_sim **out,
                 char errmsg[SM_ERRMSG_SIZE])
{
    const struct node_sim_topology *t = c->topology;
    if (t == NULL || c->duration_ns == 0 || !(c->sampling >= 0) ||
        c->sampling > 1) {
        sm_errmsg_printf(errmsg,
                         "needs a topology, a duration > 0 and a sampling "
                         "rate in (0, 1]");
        return SM_EINVAL;
    }
    if (!(c->load.rate >= 0) || !isfinite(c->load.rate) ||
        !(c->load.diurnal_amplitude < 1) || !(c->load.noise < 3)) {
        sm_errmsg_printf(errmsg,
                         "load: rate must be >= 0, diurnal amplitude < 1, "
                         "noise < 3");
        return SM_EINVAL;
    }
    int rv = check_faults(c, errmsg);
    if (rv != SM_OK) {
        return rv;
    }
    struct node_sim *s = calloc(1, sizeof *s);
    if (s == NULL) {
        return SM_ENOMEM;
    }
    s->t = t;
    s->start = c->start_ns ? c->start_ns : DEFAULT_START_S * NS_PER_S;
    s->end = s->start + c->duration_ns;
    s->now = s->start;
    s->scrape_ns = c->scrape_ns ? c->scrape_ns : 15 * NS_PER_S;
    s->sampling = c->sampling > 0 ? c->sampling : 0.01;
    s->blocked_cpu = c->blocked_cpu >= 0 ? c->blocked_cpu : 0.02;
    s->batch = c->batch ? c->batch : 4096;
    s->load = c->load;
    if (s->load.rate == 0) {
        s->load.rate = t->rate;
    }
    if (s->load.diurnal_amplitude < 0) {
        s->load.diurnal_amplitude = 0.3;
    }
    if (s->load.diurnal_period_ns == 0) {
        s->load.diurnal_period_ns = 24 * 3600 * NS_PER_S;
    }
    if (s->load.noise < 0) {
        s->load.noise = 0.05;
    }
    s->spike = 1;
    struct sm_rng root;
    sm_rng_seed(&root, c->seed);
    sm_rng_split(&root, &s->rng_load);
    sm_rng_split(&root, &s->rng_svc);
    sm_rng_split(&root, &s->rng_ids);
    sm_rng_split(&root, &s->rng_metric);
    s->id_key = sm_rng_u64(&root);
    rv = build(s, c);
    if (rv != SM_OK) {
        node_sim_free(s);
        return rv;
    }
    apply_effects(s);
    schedule(s, s->start, EV_SCRAPE, NULL);
    uint64_t first = next_arrival(s, s->start);
    if (first < s->end) {
        schedule(s, first, EV_ROOT, NULL);
    }
    while (s->next_bound < s->n_bounds &&
           s->bounds[s->next_bound] <= s->start) {
        s->next_bound++;
    }
    if (s->next_bound < s->n_bounds) {
        schedule(s, s->bounds[s->next_bound], EV_FAULT, NULL);
    }
    if (s->broken) {
        node_sim_free(s);
        return SM_ENOMEM;
    }
    *out = s;
    return SM_OK;
}

void node_sim_free(struct node_sim *s)
{
    if (s == NULL) {
        return;
    }
    for (size_t i = 0; i < s->n_reps; i++) {
        free(s->reps[i].instance);
    }
    for (size_t i = 0; i < s->n_links; i++) {
        free(s->links[i].labels);
    }
    for (size_t i = 0; i < s->n_chunks; i++) {
        free(s->chunks[i]);
    }
    free(s->chunks);
    free(s->reps);
    free(s->first_rep);
    free(s->rr);
    free(s->links);
    free(s->faults);
    free(s->bounds);
    free(s->heap);
    free(s->spans);
    free(s->points);
    free(s->qos_lat);
    free(s);
}

/* ---- Queries ------------------------------------------------------------ */

uint64_t node_sim_now(const struct node_sim *sim)
{
    return sim->now;
}

uint64_t node_sim_start(const struct node_sim *sim)
{
    return sim->start;
}

uint64_t node_sim_end(const struct node_sim *sim)
{
    return sim->end;
}

size_t node_sim_fault_count(const struct node_sim *sim)
{
    return sim->n_faults;
}

const struct node_sim_fault *node_sim_fault(const struct node_sim *sim,
                                            size_t i)
{
    return i < sim->n_faults ? &sim->faults[i] : NULL;
}

size_t node_sim_active_faults(const struct node_sim *sim,
                              uint64_t t0,
                              uint64_t t1,
                              const struct node_sim_fault **out,
                              size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < sim->n_faults; i++) {
        const struct node_sim_fault *f = &sim->faults[i];
        if (f->start_ns < t1 && f->end_ns > t0) {
            if (n < max) {
                out[n] = f;
            }
            n++;
        }
    }
    return n;
}

int node_sim_instance_host(const struct node_sim *sim, const char *instance)
{
    for (size_t i = 0; i < sim->n_reps; i++) {
        if (sim->reps[i].instance == instance ||
            strcmp(sim->reps[i].instance, instance) == 0) {
            return (int)sim->reps[i].host;
        }
    }
    return -1;
}

const char *node_sim_replica(const struct node_sim *sim,
                             size_t i,
                             const char **service,
                             int *host)
{
    if (i >= sim->n_reps) {
        return NULL;
    }
    *service = sim->t->services[sim->reps[i].svc].name;
    *host = (int)sim->reps[i].host;
    return sim->reps[i].instance;
}

void node_sim_stats(const struct node_sim *sim, struct node_sim_stats *out)
{
    *out = sim->stats;
}

void node_sim_on_qos(struct node_sim *sim,
                     uint64_t window_ns,
                     double percentile,
                     node_sim_qos_cb cb,
                     void *arg)
{
    sim->qos_cb = cb;
    sim->qos_arg = arg;
    sim->qos_window = window_ns ? window_ns : 30 * NS_PER_S;
    sim->qos_pct = percentile > 0 && percentile <= 100 ? percentile : 99;
    sim->qos_index = 0;
    sim->qos_n = 0;
}
