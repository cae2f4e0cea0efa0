/* The real mesh link: envelopes sealed by the secure channel over a
 * tp_net (node-private). It implements node_link_ops (mesh_link.h).
 *
 * On the wire each net message is a link frame:
 *   0x53 ('S'), version 1, a length byte and the sender's listen address
 *   ("tcp://a.b.c.d:port", up to 63 bytes; may be empty), then one channel
 *   frame (handshake or data).
 * The address is a routing hint, not trusted: it is used only to answer a
 * peer whose handshake has passed the cluster-key check and whose address
 * we do not know yet (a peer that is joining). A frame that fails the
 * channel's checks is counted by reason and dropped.
 *
 * Sessions. A message for a peer without a session is queued (bounded)
 * and a handshake is started; node_mesh_link_tick() repeats the INIT every
 * second while messages wait. When a session is established the queue is
 * flushed, after a HELLO envelope that confirms the session to the
 * responder. A sealed frame that a restarted peer no longer knows makes it
 * start a handshake back (it sees "unknown peer"), so sessions heal after a
 * crash on either side.
 *
 * Everything runs on the loop thread that owns the tp_net. */
#ifndef SM_NODE_MESH_LINK_IMPL_H
#define SM_NODE_MESH_LINK_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "node/mesh_link.h"
#include "transport/transport.h"

struct node_mesh_link;

/* Counters for /metrics. */
struct node_mesh_link_stats
{
    uint64_t sent, received;   /* envelopes */
    uint64_t queued_dropped;   /* messages dropped: queue full */
    uint64_t send_errors;      /* net sends that failed */
    uint64_t bad_frames;       /* link frames that do not parse */
    uint64_t bad_envelopes;    /* plaintexts that are not our envelope */
    uint64_t handshakes;       /* INIT frames sent */
    struct tp_chan_stats chan; /* the channel's own counters */
    struct tp_net_stats net;
};

struct node_mesh_link_config
{
    const char *self;               /* our peer id (copied) */
    const struct tp_secret *secret; /* copied into the channel's keys */
    uint32_t send_timeout_ms;       /* per net send; default 2000 */
    size_t queue_max;               /* messages waiting per peer; default 256 */
};

/* Creates a link on @net's recv callback: pass node_mesh_link_net_recv and
 * the link as the net's recv_cb/arg, so create the link first with
 * node_mesh_link_new(), then the net, then node_mesh_link_attach(). The
 * link does not own the net. Returns SM_OK, SM_EINVAL (bad id), SM_ENOMEM;
 * @errmsg says why. */
int node_mesh_link_new(const struct node_mesh_link_config *cfg,
                       node_link_recv_cb recv_cb,
                       void *recv_arg,
                       struct node_mesh_link **out,
                       char errmsg[SM_ERRMSG_SIZE]);

/* The tp_net receive callback of a link (its arg is the link). */
void node_mesh_link_net_recv(void *arg,
                             const struct tp_net_from *from,
                             const void *data,
                             size_t len);

/* Gives the link its net (borrowed) and the address it listens on (copied,
 * sent as the routing hint; may be ""). */
void node_mesh_link_attach(struct node_mesh_link *l,
                           struct tp_net *net,
                           const char *listen_addr);

/* Makes @peer (a peer id) reachable at @addr ("tcp://a.b.c.d:port").
 * Changing a known peer's address replaces it. Returns SM_OK, SM_EINVAL
 * (bad id or address, or ourselves), SM_ENOMEM. */
int node_mesh_link_peer_add(struct node_mesh_link *l,
                            const char *peer,
                            const char *addr);

/* Forgets @peer: its queue, session and address. Unknown ids are ignored. */
void node_mesh_link_peer_remove(struct node_mesh_link *l, const char *peer);

/* Whether a session with @peer is up (it has answered a handshake). */
int node_mesh_link_connected(const struct node_mesh_link *l, const char *peer);

/* The address known for @peer, or NULL. */
const char *node_mesh_link_peer_addr(const struct node_mesh_link *l,
                                     const char *peer);

/* Learns a peer's id from its address: asks @addr "who are you?"; the
 * answer comes to the callback set by node_mesh_link_on_iam(). Used to
 * join through --join HOST:PORT. The answer is not authenticated (the
 * handshake that follows is). Returns SM_OK (sent), SM_EINVAL (bad
 * address), or the net's error. */
int node_mesh_link_probe(struct node_mesh_link *l, const char *addr);

/* Receives the answer to a probe: @peer's id and the address it gave. */
typedef void (*node_link_iam_cb)(void *arg, const char *peer, const char *addr);

/* Sets the probe answer callback (NULL: ignore answers). */
void node_mesh_link_on_iam(struct node_mesh_link *l,
                           node_link_iam_cb cb,
                           void *arg);

/* When @peer last sent an authenticated message, by the link's clock (the
 * @now_ms of the last node_mesh_link_tick()); 0: never or unknown. */
uint64_t node_mesh_link_last_seen(const struct node_mesh_link *l,
                                  const char *peer);

/* Retries handshakes with peers that have messages waiting, at most once a
 * second by @now_ms (any monotonic clock). Call it from a timer. */
void node_mesh_link_tick(struct node_mesh_link *l, uint64_t now_ms);

/* The node_link_ops over @l (borrowed; lives as long as @l). */
const struct node_link_ops *node_mesh_link_ops(struct node_mesh_link *l);

/* Copies the counters (channel and net ones included) into @out. */
void node_mesh_link_stats(const struct node_mesh_link *l,
                          struct node_mesh_link_stats *out);

/* Frees @l (the net must be closed first, or no longer call back); NULL is
 * a no-op. */
void node_mesh_link_free(struct node_mesh_link *l);

#endif /* SM_NODE_MESH_LINK_IMPL_H */
