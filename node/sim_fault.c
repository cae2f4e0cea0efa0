/* Simulator faults: kinds, the schedule generator and the fault file.
 *
 * The generator sizes each fault to the service it hits, from what the
 * topology says about the load: the mean visits of each op per request (so
 * the request rate each replica sees), the compute and disk demand per
 * visit, and a rough residence time per op (compute plus the slowest call of
 * each step). A "major" fault is sized to push the resource it hits near
 * saturation (e.g. a CPU hog that brings the cores to 80-95% busy, a lock
 * held long enough to be 75-90% busy, a pool cut to a little more than the
 * concurrency the load needs); a "minor" one to stay well clear of it. Services
 * that too few requests pass through (under 3%) cannot move the frontend's p99,
 * so they only get minor faults. This is the schedule's intent, recorded as
 * expect_violation; whether a window violated is for the windows to say. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/rng.h"
#include "node/sim_topo.h"

#define NS_PER_S  1000000000ull
#define NS_PER_MS 1000000.0

static const char *const kind_names[NODE_SIM_FAULT_KINDS] = {
    "cpu", "memory", "network", "disk", "threadpool", "lock", "load-spike",
};

const char *node_sim_fault_kind_name(enum node_sim_fault_kind kind)
{
    return (unsigned)kind < NODE_SIM_FAULT_KINDS ? kind_names[kind] : "unknown";
}

int node_sim_fault_kind_parse(const char *name, enum node_sim_fault_kind *out)
{
    for (int i = 0; i < NODE_SIM_FAULT_KINDS; i++) {
        if (strcmp(name, kind_names[i]) == 0) {
            *out = (enum node_sim_fault_kind)i;
            return SM_OK;
        }
    }
    return SM_EINVAL;
}

enum cbn_resource node_sim_fault_resource(enum node_sim_fault_kind kind)
{
    switch (kind) {
        case NODE_SIM_FAULT_CPU:
            return CBN_RES_CPU;
        case NODE_SIM_FAULT_MEMORY:
            return CBN_RES_MEMORY;
        case NODE_SIM_FAULT_NETWORK:
            return CBN_RES_NETWORK;
        case NODE_SIM_FAULT_DISK:
            return CBN_RES_DISK;
        case NODE_SIM_FAULT_THREADPOOL:
        case NODE_SIM_FAULT_LOCK:
            return CBN_RES_OTHER;
        default:
            return CBN_RES_UNKNOWN;
    }
}

/* ---- Sizing ------------------------------------------------------------- */

/* What the load asks of one replica of a service, on average. */
struct svc_load
{
    double share;      /* root requests passing through (visits, <= ~1) */
    double disk_share; /* root requests touching its disk */
    double rps;        /* invocations per second per replica */
    double cpu_util;   /* busy share of its cores */
    double busy;       /* workers busy on average (Little's law) */
};

static double residence_ms(const struct node_sim_topology *t,
                           uint32_t op,
                           double *memo,
                           int depth)
{
    if (memo[op] >= 0) {
        return memo[op];
    }
    const struct sim_op *o = &t->ops[op];
    double r = o->compute_ms + o->disk_p * 0.2;
    for (uint32_t s = 0; s < o->n_steps && depth < 64; s++) {
        const struct sim_step *st = &t->steps[o->steps[s]];
        double worst = 0;
        for (uint32_t k = 0; k < st->n; k++) {
            const struct sim_call *c = &t->calls[st->first + k];
            double x = c->p * (residence_ms(t, c->op, memo, depth + 1) + 0.5);
            worst = x > worst ? x : worst;
        }
        r += worst;
    }
    memo[op] = r;
    return r;
}

static int service_loads(const struct node_sim_topology *t,
                         double rate,
                         struct svc_load *out)
{
    double *visits = sim__op_visits(t);
    double *memo = malloc((t->n_ops ? t->n_ops : 1) * sizeof *memo);
    if (visits == NULL || memo == NULL) {
        free(visits);
        free(memo);
        return SM_ENOMEM;
    }
    for (size_t i = 0; i < t->n_ops; i++) {
        memo[i] = -1;
    }
    memset(out, 0, t->n_services * sizeof *out);
    for (size_t i = 0; i < t->n_ops; i++) {
        const struct sim_op *o = &t->ops[i];
        const struct sim_service *sv = &t->services[o->service];
        struct svc_load *l = &out[o->service];
        double rps = rate * visits[i] / sv->replicas;
        l->share += visits[i];
        l->disk_share += visits[i] * o->disk_p;
        l->rps += rps;
        l->cpu_util += rps * o->compute_ms / 1e3 / sv->cores;
        l->busy += rps * residence_ms(t, (uint32_t)i, memo, 0) / 1e3;
    }
    free(visits);
    free(memo);
    return SM_OK;
}

static double uniform(struct sm_rng *r, double lo, double hi)
{
    return lo + (hi - lo) * sm_rng_double(r);
}

static double clamp(double x, double lo, double hi)
{
    return x < lo ? lo : x > hi ? hi : x;
}

/* Magnitude of a fault of @kind on service @svc, major or minor. */
static double magnitude(const struct node_sim_topology *t,
                        const struct svc_load *l,
                        uint32_t svc,
                        enum node_sim_fault_kind kind,
                        int major,
                        double target_ms,
                        struct sm_rng *r)
{
    const struct sim_service *sv = &t->services[svc];
    double u = l->cpu_util > 1e-6 ? l->cpu_util : 1e-6;
    switch (kind) {
        case NODE_SIM_FAULT_CPU:
            /* Cores 80-95% busy, or a mild 10-30% slow-down kept under
             * 60% busy. */
            if (major) {
                return clamp(uniform(r, 0.8, 0.95) / u - 1, 1, 200);
            }
            return clamp(uniform(r, 0.1, 0.3), 0.05,
                         0.6 / u - 1 > 0.05 ? 0.6 / u - 1 : 0.05);
        case NODE_SIM_FAULT_MEMORY: {
            /* The slow-down paging must cause, turned into the share of
             * the headroom that causes it (the inverse of the engine's
             * curve: exp(ln 50 * over / 0.2) past 80% of the limit). */
            double slow = major ? clamp(uniform(r, 0.8, 0.95) / u, 2, 50) : 1;
            double over = 0.2 * log(slow) / log(50);
            double frac = major ? 0.8 + over : uniform(r, 0.3, 0.7);
            double m = (frac * sv->limit_mb - sv->memory_mb) /
                       (sv->limit_mb - sv->memory_mb);
            return clamp(m, 0.05, 1);
        }
        case NODE_SIM_FAULT_NETWORK:
            /* Extra one-way delay; a call pays it twice. */
            return major ? target_ms * uniform(r, 0.3, 0.6)
                         : target_ms * uniform(r, 0.01, 0.04);
        case NODE_SIM_FAULT_DISK:
            return major ? uniform(r, 0.85, 0.95) : uniform(r, 0.1, 0.3);
        case NODE_SIM_FAULT_THREADPOOL: {
            /* Keep fewer workers than the load keeps busy on average. */
            double keep = major ? ceil(l->busy / uniform(r, 0.75, 0.9))
                                : ceil(l->busy * 4 + 2);
            keep = clamp(keep, 1, sv->threads);
            return clamp(1 - keep / sv->threads, 0, 1);
        }
        case NODE_SIM_FAULT_LOCK: {
            /* The lock busy 75-90% of the time, or 5-20%. */
            double rps = l->rps > 1e-3 ? l->rps : 1e-3;
            double busy = major ? uniform(r, 0.75, 0.9) : uniform(r, 0.05, 0.2);
            double ms = busy * 1e3 / rps;
            return clamp(ms, 0.05, major ? target_ms * 3 : target_ms * 0.1);
        }
        default:
            return 0;
    }
}

/* Can a major fault of @kind on @svc move the frontend's p99? */
static int eligible(const struct node_sim_topology *t,
                    const struct svc_load *l,
                    uint32_t svc,
                    enum node_sim_fault_kind kind,
                    int major)
{
    const struct sim_service *sv = &t->services[svc];
    uint32_t frontend = t->ops[t->entries[0].op].service;
    if (kind == NODE_SIM_FAULT_DISK && !sv->has_disk) {
        return 0;
    }
    if (kind == NODE_SIM_FAULT_NETWORK && svc == frontend) {
        return 0; /* no simulated link leads into the frontend */
    }
    if (!major) {
        return 1;
    }
    if (kind == NODE_SIM_FAULT_DISK) {
        return l->disk_share >= 0.03;
    }
    if (kind == NODE_SIM_FAULT_THREADPOOL) {
        return l->share >= 0.03 && l->busy >= 0.75;
    }
    return l->share >= 0.03;
}

static int pick(const struct node_sim_topology *t,
                const struct svc_load *loads,
                enum node_sim_fault_kind kind,
                int major,
                const int *taken,
                struct sm_rng *r)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < t->n_services; i++) {
        n += !taken[i] && eligible(t, &loads[i], i, kind, major);
    }
    if (n == 0) {
        return -1;
    }
    uint32_t k = (uint32_t)sm_rng_below(r, n);
    for (uint32_t i = 0; i < t->n_services; i++) {
        if (!taken[i] && eligible(t, &loads[i], i, kind, major) && k-- == 0) {
            return (int)i;
        }
    }
    return -1;
}

static int push(struct node_sim_fault **v,
                size_t *n,
                size_t *cap,
                const struct node_sim_fault *f)
{
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 32;
        struct node_sim_fault *p = realloc(*v, c * sizeof *p);
        if (p == NULL) {
            return SM_ENOMEM;
        }
        *v = p;
        *cap = c;
    }
    (*v)[(*n)++] = *f;
    return SM_OK;
}

static double load_factor(const struct node_sim_load *l, uint64_t t)
{
    double amp = l->diurnal_amplitude < 0 ? 0.3 : l->diurnal_amplitude;
    uint64_t period =
        l->diurnal_period_ns ? l->diurnal_period_ns : 24 * 3600 * NS_PER_S;
    double phase = 2 * M_PI * (double)(t % period) / (double)period;
    return 1 + amp * sin(phase - M_PI / 2);
}

int node_sim_schedule_generate(const struct node_sim_topology *t,
                               const struct node_sim_schedule *sc,
                               struct node_sim_fault **out,
                               size_t *n_out)
{
    if (sc->duration_ns == 0) {
        return SM_EINVAL;
    }
    double per_hour = sc->cases_per_hour > 0 ? sc->cases_per_hour : 6;
    uint64_t min_len = sc->min_len_ns ? sc->min_len_ns : 180 * NS_PER_S;
    uint64_t max_len = sc->max_len_ns ? sc->max_len_ns : 480 * NS_PER_S;
    uint64_t min_gap = sc->min_gap_ns ? sc->min_gap_ns : 240 * NS_PER_S;
    double p_minor = sc->p_minor >= 0 ? sc->p_minor : 0.15;
    double p_multi = sc->p_multi >= 0 ? sc->p_multi : 0.1;
    double p_spike = sc->p_spike >= 0 ? sc->p_spike : 0.1;
    double rate = sc->load.rate > 0 ? sc->load.rate : t->rate;
    double target = t->qos_target_ms > 0 ? t->qos_target_ms : 50;
    if (max_len < min_len) {
        max_len = min_len;
    }
    struct svc_load *loads = calloc(t->n_services, sizeof *loads);
    int *taken = calloc(t->n_services, sizeof *taken);
    if (loads == NULL || taken == NULL) {
        free(loads);
        free(taken);
        return SM_ENOMEM;
    }
    struct sm_rng r;
    sm_rng_seed(&r, sc->seed ^ 0x5eedfa11u);
    struct node_sim_fault *v = NULL;
    size_t n = 0, cap = 0;
    int rv = SM_OK;
    uint64_t start = sc->start_ns, end = start + sc->duration_ns;
    double spacing = 3600e9 / per_hour;
    double mean_len = (double)(min_len + max_len) / 2;
    double extra = spacing - mean_len - (double)min_gap;
    uint64_t at = start + sc->clean_ns + min_gap;
    uint32_t group = 0;
    /* Each pass places one case or ends: time moves by at least min_len. */
    while (rv == SM_OK && at < end) {
        uint64_t len = min_len + sm_rng_below(&r, max_len - min_len + 1);
        at = at / NS_PER_S * NS_PER_S;
        len = (len + NS_PER_S - 1) / NS_PER_S * NS_PER_S;
        if (at + len > end) {
            break;
        }
        rv = service_loads(t, rate * load_factor(&sc->load, at), loads);
        if (rv != SM_OK) {
            break;
        }
        memset(taken, 0, t->n_services * sizeof *taken);
        int major = sm_rng_double(&r) >= p_minor;
        double u = sm_rng_double(&r);
        group++;
        if (u < p_spike) {
            struct node_sim_fault f = {
                at,
                at + len,
                NULL,
                CBN_RES_UNKNOWN,
                NODE_SIM_FAULT_LOAD_SPIKE,
                major ? uniform(&r, 0.6, 0.9) : uniform(&r, 0.15, 0.35),
                -1,
                major,
                group};
            rv = push(&v, &n, &cap, &f);
        } else {
            int count =
                u < p_spike + p_multi ? 2 + (int)sm_rng_below(&r, 2) : 1;
            for (int k = 0; k < count && rv == SM_OK; k++) {
                /* A kind with an eligible service (disk may have none). */
                for (int tries = 0; tries < 16; tries++) {
                    enum node_sim_fault_kind kind =
                        (enum node_sim_fault_kind)sm_rng_below(&r, 6);
                    int svc = pick(t, loads, kind, major, taken, &r);
                    if (svc < 0) {
                        continue;
                    }
                    taken[svc] = 1;
                    struct node_sim_fault f = {
                        at,
                        at + len,
                        t->services[svc].name,
                        node_sim_fault_resource(kind),
                        kind,
                        magnitude(t, &loads[svc], (uint32_t)svc, kind, major,
                                  target, &r),
                        -1,
                        major,
                        group};
                    rv = push(&v, &n, &cap, &f);
                    break;
                }
            }
        }
        double gap = (double)min_gap;
        if (extra > 0) {
            gap += -extra * log1p(-sm_rng_double(&r));
        }
        at += len + (uint64_t)gap;
    }
    free(loads);
    free(taken);
    if (rv != SM_OK) {
        free(v);
        return rv;
    }
    *out = v;
    *n_out = n;
    return SM_OK;
}

/* ---- The fault file ----------------------------------------------------- */

static int bad(char *errmsg, int line, const char *why, const char *what)
{
    sm_errmsg_printf(errmsg, "line %d: %s%.60s", line, why, what);
    return SM_EMALFORMED;
}

static int num(const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (s[0] == '\0' || *end != '\0' || errno != 0 || !isfinite(v) || v < lo ||
        v > hi) {
        return -1;
    }
    *out = v;
    return 0;
}

static int one_fault(const struct node_sim_topology *t,
                     uint64_t start_ns,
                     char *line,
                     int lineno,
                     struct node_sim_fault *f,
                     char *errmsg)
{
    double at = -1, len = -1, mag = -1, rep = -1, grp = 0, expect = 1;
    const char *service = NULL;
    int have_kind = 0;
    char *save = NULL;
    *f = (struct node_sim_fault){0};
    for (char *tok = strtok_r(line, " \t\r", &save); tok != NULL;
         tok = strtok_r(NULL, " \t\r", &save)) {
        char *eq = strchr(tok, '=');
        if (eq == NULL) {
            return bad(errmsg, lineno, "expected key=value, got ", tok);
        }
        *eq = '\0';
        const char *v = eq + 1;
        int err = 0;
        if (strcmp(tok, "at") == 0) {
            err = num(v, 0, 1e9, &at);
        } else if (strcmp(tok, "for") == 0) {
            err = num(v, 0.001, 1e9, &len);
        } else if (strcmp(tok, "magnitude") == 0) {
            err = num(v, 0, 1e6, &mag);
        } else if (strcmp(tok, "replica") == 0) {
            err = num(v, 0, SIM_MAX_REPLICAS - 1, &rep);
        } else if (strcmp(tok, "group") == 0) {
            err = num(v, 1, 1e9, &grp);
        } else if (strcmp(tok, "expect") == 0) {
            err = num(v, 0, 1, &expect);
        } else if (strcmp(tok, "service") == 0) {
            int svc = sim__find_service(t, v);
            if (svc < 0) {
                return bad(errmsg, lineno, "unknown service ", v);
            }
            service = t->services[svc].name;
        } else if (strcmp(tok, "kind") == 0) {
            if (node_sim_fault_kind_parse(v, &f->kind) != SM_OK) {
                return bad(errmsg, lineno,
                           "kind is cpu, memory, network, disk, threadpool, "
                           "lock or load-spike, not ",
                           v);
            }
            have_kind = 1;
        } else {
            return bad(errmsg, lineno, "unknown key ", tok);
        }
        if (err) {
            return bad(errmsg, lineno, "bad value for ", tok);
        }
    }
    if (at < 0 || len < 0 || mag < 0 || !have_kind) {
        return bad(errmsg, lineno, "needs at=, for=, kind= and magnitude=", "");
    }
    if ((f->kind == NODE_SIM_FAULT_LOAD_SPIKE) != (service == NULL)) {
        return bad(errmsg, lineno,
                   "service= is required, except for a load-spike (which "
                   "has none)",
                   "");
    }
    if (service != NULL && rep >= 0 &&
        rep >= t->services[sim__find_service(t, service)].replicas) {
        return bad(errmsg, lineno, "no such replica of ", service);
    }
    if ((f->kind == NODE_SIM_FAULT_MEMORY ||
         f->kind == NODE_SIM_FAULT_THREADPOOL) &&
        mag > 1) {
        return bad(errmsg, lineno, "magnitude must be at most 1 for ",
                   node_sim_fault_kind_name(f->kind));
    }
    if (f->kind == NODE_SIM_FAULT_DISK && mag > 0.99) {
        return bad(errmsg, lineno, "magnitude must be under 0.99 for disk", "");
    }
    f->start_ns = start_ns + (uint64_t)(at * 1e9);
    f->end_ns = f->start_ns + (uint64_t)(len * 1e9);
    f->service = service;
    f->resource = node_sim_fault_resource(f->kind);
    f->magnitude = mag;
    f->replica = rep >= 0 ? (int)rep : -1;
    f->expect_violation = expect != 0;
    f->group = (uint32_t)grp;
    return SM_OK;
}

int node_sim_faults_parse(const struct node_sim_topology *t,
                          uint64_t start_ns,
                          const char *text,
                          size_t len,
                          struct node_sim_fault **out,
                          size_t *n_out,
                          char errmsg[SM_ERRMSG_SIZE])
{
    struct node_sim_fault *v = NULL;
    size_t n = 0, cap = 0;
    char line[1024];
    int lineno = 0, rv = SM_OK;
    size_t at = 0;
    while (at < len && rv == SM_OK) {
        lineno++;
        size_t end = at;
        while (end < len && text[end] != '\n') {
            end++;
        }
        if (end - at >= sizeof line) {
            rv = bad(errmsg, lineno, "line too long", "");
            break;
        }
        if (memchr(text + at, '\0', end - at) != NULL) {
            rv = bad(errmsg, lineno, "unexpected NUL byte", "");
            break;
        }
        memcpy(line, text + at, end - at);
        line[end - at] = '\0';
        at = end + 1;
        char *hash = strchr(line, '#');
        if (hash != NULL) {
            *hash = '\0';
        }
        if (strspn(line, " \t\r") == strlen(line)) {
            continue;
        }
        struct node_sim_fault f;
        rv = one_fault(t, start_ns, line, lineno, &f, errmsg);
        if (rv == SM_OK) {
            if (f.group == 0) {
                f.group = (uint32_t)n + 1;
            }
            rv = push(&v, &n, &cap, &f);
        }
    }
    if (rv != SM_OK) {
        free(v);
        return rv;
    }
    *out = v;
    *n_out = n;
    return SM_OK;
}
