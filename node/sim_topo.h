/* The simulator's topology as plain arrays (private to node/sim*.c). */
#ifndef SM_NODE_SIM_TOPO_H
#define SM_NODE_SIM_TOPO_H

#include <stddef.h>
#include <stdint.h>

#include "node/sim.h"

/* Limits that keep a hostile topology file from exhausting memory or time. */
#define SIM_MAX_HOSTS         64
#define SIM_MAX_SERVICES      256
#define SIM_MAX_OPS           4096
#define SIM_MAX_REPLICAS      64
#define SIM_MAX_THREADS       4096
#define SIM_MAX_CORES         256
#define SIM_MAX_CALLS_PER_REQ 10000.0
#define SIM_MAX_NAME          96

/* One call of a step: the target op, called with probability p. */
struct sim_call
{
    uint32_t op;
    double p;
    int line;     /* where it was declared (0 for built-ins) */
    char *target; /* "service:op" as written, until resolved; NULL after */
};

/* A step: calls [first, first + n) of the topology's call array, made in
 * parallel. */
struct sim_step
{
    uint32_t first, n;
};

struct sim_op
{
    char *name;
    uint32_t service;
    double compute_ms, sigma;
    uint32_t req_bytes, resp_bytes;
    double disk_p;
    uint32_t read_bytes, write_bytes;
    uint32_t *steps; /* indexes into the topology's steps, in order */
    uint32_t n_steps, cap_steps;
    int line;
};

struct sim_service
{
    char *name;
    uint32_t replicas, threads, cores;
    double memory_mb, limit_mb, request_kb;
    int has_disk; /* some op touches the disk */
};

struct sim_entry
{
    uint32_t op;
    double weight;
};

struct node_sim_topology
{
    char *name;
    uint32_t n_hosts;
    double rate, qos_target_ms;
    struct sim_service *services;
    size_t n_services, cap_services;
    struct sim_op *ops;
    size_t n_ops, cap_ops;
    struct sim_step *steps;
    size_t n_steps, cap_steps;
    struct sim_call *calls;
    size_t n_calls, cap_calls;
    struct sim_entry *entries;
    size_t n_entries, cap_entries;
};

/* Mean invocations of each op per root request (array of n_ops, malloc()ed,
 * free it), following the entry weights and call probabilities. NULL on out
 * of memory. */
double *sim__op_visits(const struct node_sim_topology *topo);

/* Index of the service called @name, or -1. */
int sim__find_service(const struct node_sim_topology *topo, const char *name);

#endif /* SM_NODE_SIM_TOPO_H */
