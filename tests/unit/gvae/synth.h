/* A small synthetic application for the model's tests: windows built
 * directly (no spans), with known causes.
 *
 *   a-front -> b-mid -> c-db
 *                    -> d-cache
 *
 * Every service has a CPU and a memory metric; its own processing time grows
 * with its CPU utilisation like a queue (1 / (1 - rho)); a caller's latency
 * is its own time plus the client latency of its calls, which is the
 * callee's server latency plus the link's network delay. Faults raise one
 * service's CPU (contention: utilisation and own time up), memory (own time
 * up) or the network delay of the links into it. */
#ifndef SM_TEST_GVAE_SYNTH_H
#define SM_TEST_GVAE_SYNTH_H

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/rng.h"
#include "cbn/cbn.h"

enum { SYN_SERVICES = 4, SYN_EDGES = 3 };

static const char *const syn_names[SYN_SERVICES] = {"a-front", "b-mid", "c-db",
                                                    "d-cache"};
static const int syn_edge[SYN_EDGES][2] = {{0, 1}, {1, 2}, {1, 3}};
static const double syn_base_ms[SYN_SERVICES] = {2.0, 3.0, 6.0, 1.0};
static const double syn_pct_factor[CBN_N_PCT] = {0.6, 0.8, 1.0, 1.3,
                                                 1.7, 2.0, 2.8, 3.5};

enum syn_fault { SYN_NONE, SYN_CPU, SYN_MEMORY, SYN_NETWORK };

struct syn_window
{
    struct cbn_window w;
    struct cbn_window_service sv[SYN_SERVICES];
    struct cbn_window_metric mt[SYN_SERVICES][2];
    struct cbn_window_edge ed[SYN_EDGES];
};

/* Fills @out for window @t with @fault on service @where (0..3) of
 * strength @mag (1 = a strong fault). */
static inline void syn_make(struct syn_window *out,
                            struct sm_rng *rng,
                            uint64_t t,
                            enum syn_fault fault,
                            int where,
                            double mag,
                            double target_ms)
{
    memset(out, 0, sizeof *out);
    double load = 100 * (1 + 0.3 * sin((double)t / 40.0)) *
                  (1 + 0.05 * sm_rng_normal(rng));
    double own[SYN_SERVICES], cpu[SYN_SERVICES], mem[SYN_SERVICES];
    double net[SYN_EDGES];
    for (int s = 0; s < SYN_SERVICES; s++) {
        double rho = 0.25 + 0.002 * load * (s == 2 ? 1.2 : 1.0) +
                     0.02 * sm_rng_normal(rng);
        double slow = 1;
        mem[s] = 200e6 * (1 + 0.03 * sm_rng_normal(rng));
        if (fault == SYN_CPU && where == s) {
            rho += 0.35 * mag;
        }
        if (fault == SYN_MEMORY && where == s) {
            mem[s] *= 1 + 0.8 * mag;
            slow += 2.0 * mag;
        }
        if (rho > 0.95) {
            rho = 0.95;
        }
        cpu[s] = rho;
        own[s] =
            syn_base_ms[s] * slow / (1 - rho) * (1 + 0.04 * sm_rng_normal(rng));
    }
    for (int e = 0; e < SYN_EDGES; e++) {
        net[e] = 0.4 * (1 + 0.1 * sm_rng_normal(rng));
        if (fault == SYN_NETWORK && syn_edge[e][1] == where) {
            net[e] += 8.0 * mag;
        }
    }
    double lat[SYN_SERVICES];
    /* callees first: c-db, d-cache, b-mid, a-front */
    lat[2] = own[2];
    lat[3] = own[3];
    lat[1] = own[1] + (lat[2] + net[1]) + (lat[3] + net[2]);
    lat[0] = own[0] + (lat[1] + net[0]);
    struct cbn_window *w = &out->w;
    w->start_ns = t * 30000000000ull;
    w->end_ns = w->start_ns + 30000000000ull;
    w->n_services = SYN_SERVICES;
    w->services = out->sv;
    for (int s = 0; s < SYN_SERVICES; s++) {
        struct cbn_window_service *sv = &out->sv[s];
        sv->name = syn_names[s];
        sv->requests = (uint64_t)(load * 30);
        for (int k = 0; k < CBN_N_PCT; k++) {
            /* the tail grows faster than the median near saturation */
            double tail = 1 + (syn_pct_factor[k] - 1) * (1 + cpu[s]);
            double ownk = own[s] * tail;
            sv->latency_ms[k] = (float)(lat[s] - own[s] + ownk);
        }
        sv->n_metrics = 2;
        sv->metrics = out->mt[s];
        struct cbn_window_metric *c = &out->mt[s][0], *m = &out->mt[s][1];
        c->name = "container_cpu_usage_seconds_total";
        c->peer = "";
        c->resource = CBN_RES_CPU;
        c->samples = 4;
        m->name = "container_memory_working_set_bytes";
        m->peer = "";
        m->resource = CBN_RES_MEMORY;
        m->samples = 4;
        for (int k = 0; k < CBN_N_PCT; k++) {
            c->pct[k] = (float)(cpu[s] * (0.9 + 0.03 * k));
            m->pct[k] = (float)(mem[s] * (0.98 + 0.005 * k));
        }
    }
    w->n_edges = SYN_EDGES;
    w->edges = out->ed;
    for (int e = 0; e < SYN_EDGES; e++) {
        struct cbn_window_edge *ed = &out->ed[e];
        int callee = syn_edge[e][1];
        ed->caller = syn_names[syn_edge[e][0]];
        ed->callee = syn_names[callee];
        ed->calls = out->sv[callee].requests;
        ed->paired = ed->calls;
        for (int k = 0; k < CBN_N_PCT; k++) {
            ed->server_ms[k] = out->sv[callee].latency_ms[k];
            ed->network_ms[k] = (float)(net[e] * (0.8 + 0.1 * k));
            ed->client_ms[k] = ed->server_ms[k] + ed->network_ms[k];
        }
    }
    w->qos_percentile = 99;
    w->qos_target_ms = target_ms;
    w->qos_latency_ms = out->sv[0].latency_ms[6];
    w->qos_violated = w->qos_latency_ms > target_ms;
}

#endif /* SM_TEST_GVAE_SYNTH_H */
