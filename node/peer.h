/* The peer daemon, as the command and the tests drive it (node-private). */
#ifndef SM_NODE_PEER_H
#define SM_NODE_PEER_H

#include <stdint.h>
#include <uv.h>

#include "base/clock.h"
#include "base/err.h"
#include "cbn/cbn.h"
#include "node/config.h"

struct node_peer;

/* Starts a peer on @loop with the validated @cfg (borrowed; it must outlive
 * the peer, and its lateness is resolved in place), reading time from
 * @clock and seeding hashes with @seed: opens and replays the window log in
 * cfg->data_dir, listens on cfg->listen_http, starts the scrapers. Returns
 * SM_OK with the peer in @out; else an error with @errmsg set, and @out is
 * either untouched or (when handles were already open) a stopping peer the
 * caller must run the loop for until node_peer_stopped(), then free. */
int node_peer_start(uv_loop_t *loop,
                    struct node_config *cfg,
                    const struct sm_clock *clock,
                    uint64_t seed,
                    struct node_peer **out,
                    char errmsg[SM_ERRMSG_SIZE]);

/* Stops on SIGINT and SIGTERM. */
void node_peer_handle_signals(struct node_peer *p);

/* Flushes the open windows into the log and closes every handle; the loop
 * must run until node_peer_stopped(). Idempotent. */
void node_peer_stop(struct node_peer *p);

/* Non-zero once stop has finished closing handles and no scrape is in
 * flight. */
int node_peer_stopped(const struct node_peer *p);

/* Frees a stopped (or never started) peer; NULL is a no-op. */
void node_peer_free(struct node_peer *p);

/* The bound HTTP port, or -1 once stopping. */
int node_peer_http_port(const struct node_peer *p);

/* The port the mesh listens on, or 0 without a mesh (no secret). */
int node_peer_mesh_port(const struct node_peer *p);

/* Calls @cb with every window the peer takes in (replayed and new), after
 * it was stored. For tests and, later, the model. */
void node_peer_on_window(struct node_peer *p,
                         void (*cb)(void *arg, const struct cbn_window *w),
                         void *arg);

#endif /* SM_NODE_PEER_H */
