/* Messages between the peers of the mesh, as the node's layers see them
 * (node-private): a typed message to a peer named by its id, and a callback
 * for the messages that arrive. The real link (node/mesh_link.c) carries
 * them as envelopes sealed by the secure channel over the nng net; tests
 * use an in-memory one. */
#ifndef SM_NODE_MESH_LINK_H
#define SM_NODE_MESH_LINK_H

#include <stddef.h>
#include <stdint.h>

/* Sends messages. Everything runs on the node's loop thread. */
struct node_link_ops
{
    void *arg;
    /* Sends @len bytes at @data (copied before return) of message type
     * @type (enum tp_msg_type) with correlation id @id to peer @peer (a
     * peer id, NUL-terminated). Best effort: messages to one peer arrive in
     * order or not at all while its session lasts; a peer that is down or
     * restarts loses what was in flight. Returns SM_OK (queued), or
     * SM_ENOTFOUND (no address known for @peer), SM_ETOOBIG (over the
     * message limit), SM_EAGAIN (the peer's queue is full: dropped),
     * SM_ENOMEM. */
    int (*send)(void *arg,
                const char *peer,
                int type,
                uint64_t id,
                const void *data,
                size_t len);
};

/* Receives one message from the authenticated peer @peer, on the loop
 * thread; @data is borrowed for the call. */
typedef void (*node_link_recv_cb)(void *arg,
                                  const char *peer,
                                  int type,
                                  uint64_t id,
                                  const void *data,
                                  size_t len);

/* The raft id of peer @peer: FNV-1a 64 of its id string, never 0. Every
 * peer derives the same id, so raft ids never need to be agreed on. */
uint64_t node_link_raft_id(const char *peer);

#endif /* SM_NODE_MESH_LINK_H */
