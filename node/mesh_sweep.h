/* Counterfactual sweeps across the owners of the CBN nodes (node-private).
 *
 * A peer that diagnoses a window runs gvae_diagnose_remote() on its
 * compute thread: at each topological level of each pass, the nodes whose
 * shard another peer owns are sent to that owner (one request per owner,
 * all candidates and samples batched, with the parents' decoder outputs
 * the nodes read), and the compute thread waits for the replies. This
 * module carries those requests: the compute thread hands them over and
 * waits (bounded by a timeout), the loop thread sends them as
 * TP_MSG_SWEEP_REQ and matches the TP_MSG_SWEEP_REP replies. A reply that
 * does not come in time is missing, and gvae computes those nodes here
 * (every peer holds the whole model), so a slow or dead owner costs time,
 * never the diagnosis. The owner's side answers requests on its loop from
 * its model manager (node_model_mgr_serve_pass).
 *
 * Requests and replies travel as: u64 model version, u64 window end (ns),
 * u8 normals present, then the gvae pass request; a reply is u32 status
 * (SM_OK or why not) then, on SM_OK, gvae's reply. */
#ifndef SM_NODE_MESH_SWEEP_H
#define SM_NODE_MESH_SWEEP_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "base/err.h"
#include "node/model_mgr.h"

struct node_sweep;

/* How the broker reaches peers (loop thread). */
struct node_sweep_ops
{
    void *arg;
    /* As node_link_ops.send. */
    int (*send)(void *arg,
                const char *peer,
                int type,
                uint64_t id,
                const void *data,
                size_t len);
};

/* Figures for /v1/status. */
struct node_sweep_stats
{
    uint64_t diagnoses; /* diagnosed with at least one remote node */
    uint64_t levels;    /* exchanges (round trips) */
    uint64_t requests;  /* sent */
    uint64_t timeouts;  /* requests unanswered in time */
    uint64_t fallbacks; /* nodes computed here instead */
    uint64_t bytes_out, bytes_in;
    uint64_t served;         /* requests this peer answered as an owner */
    uint64_t serve_failures; /* answered with an error */
    double last_ms;          /* the last remote diagnosis, wall time */
};

/* Creates the broker on @loop; replies are awaited @timeout_ms (0 ->
 * 2000) per exchange. Returns SM_OK, SM_ENOMEM or SM_EINTERNAL (the async
 * handle). */
int node_sweep_new(uv_loop_t *loop,
                   const struct node_sweep_ops *ops,
                   unsigned timeout_ms,
                   struct node_sweep **out);

/* Fails every exchange waiting and every one to come (a compute thread
 * waiting is woken) and closes the handle, then calls @cb(@arg) on the
 * loop. The memory stays for node_sweep_free(). */
void node_sweep_close(struct node_sweep *s, void (*cb)(void *arg), void *arg);

/* Frees @s once it is closed and the model manager whose hook it was has
 * closed too (its compute thread no longer uses it); NULL is a no-op. */
void node_sweep_free(struct node_sweep *s);

/* Who computes which CBN node (loop thread): @n node names with their
 * owner's peer id (borrowed, copied; "" or this peer's id: here). */
void node_sweep_set_owners(struct node_sweep *s,
                           const char *self,
                           const char *const *names,
                           const char *const *owners,
                           size_t n);

/* The model manager's hook (node_model_mgr_set_remote) backed by @s. */
void node_sweep_hook(struct node_sweep *s, struct node_model_remote *hook);

/* A TP_MSG_SWEEP_REP from @peer (loop thread). */
void node_sweep_reply(struct node_sweep *s,
                      const char *peer,
                      uint64_t id,
                      const void *data,
                      size_t len);

/* A TP_MSG_SWEEP_REQ from @peer (loop thread): answered from @mgr. */
void node_sweep_serve(struct node_sweep *s,
                      struct node_model_mgr *mgr,
                      const char *peer,
                      uint64_t id,
                      const void *data,
                      size_t len);

/* Fills @out (loop thread). */
void node_sweep_stats(struct node_sweep *s, struct node_sweep_stats *out);

#endif /* SM_NODE_MESH_SWEEP_H */
