/* raft's connections carried over the mesh's secure messages (node-private):
 * a struct raft_uv_transport for raft_uv (raft 0.15) built on the node's
 * message link (node/mesh_link.h), so no port accepts plaintext raft
 * traffic.
 *
 * Design.
 * - raft_uv wants byte streams. Every raft connection is a socketpair
 *   (AF_UNIX, SOCK_STREAM, non-blocking, close-on-exec): raft gets one end
 *   as a uv_pipe_t allocated with raft_malloc (raft uv_close()s it and then
 *   raft_free()s it, as it does with its own TCP handles); the bridge reads
 *   and writes the other end on the same loop and pumps the bytes through
 *   the link in chunks of at most CONS_BRIDGE_CHUNK bytes.
 * - Everything goes out as TP_MSG_RAFT messages whose body is one bridge
 *   frame, little-endian, versioned:
 *     u8 version (1), u8 kind, u8 flags, u64 stream id, then by kind
 *     OPEN    u64 sender raft id, u8 address length, the address (the
 *             sender's peer id, no NUL)
 *     OPENED  nothing
 *     DATA    u64 sequence number, 1..CONS_BRIDGE_CHUNK bytes
 *     CLOSE   nothing
 *   flags bit 0 is set when the sender opened the stream, so the streams a
 *   peer opened and the ones it accepted never share an id space. Nothing
 *   may follow a frame.
 * - connect() sends OPEN and reports the stream to raft only once OPENED
 *   comes back, or RAFT_NOCONNECTION after the connect timeout (1 s by
 *   default), so a down peer makes raft retry. OPEN replaces raft's TCP
 *   handshake: the accepting bridge calls raft's accept callback with the
 *   sender's raft id and address, which must be the authenticated sender's
 *   peer id and cons_peer_raft_id() of it (anything else is refused), so a
 *   peer cannot speak for another in raft.
 * - A stream ends on both sides (CLOSE to the other bridge, the bridge's end
 *   of the socketpair closed, so raft sees EOF or EPIPE and reconnects) on:
 *   a gap or reordering of DATA sequence numbers, DATA before OPENED, EOF
 *   or an error on the local end, the link refusing a send (it never
 *   buffers: SM_EAGAIN closes the stream), more than
 *   CONS_BRIDGE_MAX_BUFFERED bytes waiting to be written to raft.
 *   DATA or OPENED for an unknown stream (a peer that restarted) is answered
 *   with CLOSE; CLOSE for an unknown stream is ignored.
 * - Bounded memory: one shared read buffer for the whole bridge; queued
 *   writes are capped per stream; a peer keeps at most
 *   CONS_BRIDGE_MAX_ACCEPTED accepted streams (an OPEN beyond that ends
 *   that peer's oldest accepted stream: a reconnect after a lost CLOSE
 *   still succeeds).
 * - close() (called by raft_uv when raft closes) stops accepting, cancels
 *   pending connects (their callbacks fire with RAFT_CANCELED, which raft's
 *   uv_send.c takes as "give up"), ends every stream, and calls the close
 *   callback once all of the bridge's handles are closed, never from inside
 *   close() itself.
 *
 * Writing to a socketpair whose other end is gone raises SIGPIPE, as writing
 * to raft's own TCP sockets does: a process using this transport must
 * ignore SIGPIPE.
 *
 * Threads: everything runs on the loop thread, callbacks included. */
#ifndef SM_CONS_BRIDGE_H
#define SM_CONS_BRIDGE_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "consensus/consensus.h"

struct raft_uv_transport; /* <raft/uv.h> */

/* Largest DATA payload, sent or accepted. */
#define CONS_BRIDGE_CHUNK ((size_t)64 << 10)

/* Bytes of received DATA a stream may hold while raft has not read them. */
#define CONS_BRIDGE_MAX_BUFFERED ((size_t)8 << 20)

/* Streams one peer may have open towards us at once. */
#define CONS_BRIDGE_MAX_ACCEPTED 8

/* Default wait for OPENED before connect() reports RAFT_NOCONNECTION. */
#define CONS_BRIDGE_CONNECT_TIMEOUT_MS 1000

/* Frame layout constants (exposed for tests that forge frames). */
#define CONS_BRIDGE_VERSION     1
#define CONS_BRIDGE_HEADER      11 /* version, kind, flags, stream id */
#define CONS_BRIDGE_FLAG_OPENER 0x01
enum cons_bridge_kind {
    CONS_BRIDGE_OPEN = 1,
    CONS_BRIDGE_OPENED = 2,
    CONS_BRIDGE_DATA = 3,
    CONS_BRIDGE_CLOSE = 4,
};

/* Makes @t a transport that carries raft's connections over @link (copied;
 * link->arg must outlive the bridge) for the peer @self_peer_id (copied; a
 * valid peer id), on @loop. raft_uv_init(io, loop, dir, t) then uses it;
 * the raft address of every server is its peer id, optionally followed by
 * "@" and anything (the peer's net address: "ID@tcp://a.b.c.d:port"), its
 * raft id cons_peer_raft_id(peer id), and raft_init must name this peer so
 * (its transport init fails with RAFT_INVALID otherwise). raft_uv sets t->data;
 * the bridge keeps its state in t->impl.
 *
 * Returns SM_OK, or SM_EINVAL (a NULL argument, no send function, an invalid
 * peer id) or SM_ENOMEM, with the reason in @errmsg (SM_ERRMSG_SIZE
 * bytes); @t is then untouched and owns nothing. */
int cons_bridge_init(struct raft_uv_transport *t,
                     uv_loop_t *loop,
                     const struct cons_link *link,
                     const char *self_peer_id,
                     char *errmsg);

/* Sets how long connect() waits for OPENED (default
 * CONS_BRIDGE_CONNECT_TIMEOUT_MS; 0 keeps the default). Applies to
 * later connects. */
void cons_bridge_set_connect_timeout(struct raft_uv_transport *t, unsigned ms);

/* Hands the bridge one TP_MSG_RAFT message from the authenticated peer
 * @from_peer; @data is borrowed for the call. Any input is safe: a frame
 * that is malformed, from an invalid peer id, or for a stream that does not
 * exist is counted and dropped (or answered with CLOSE) and never harms
 * other streams. May call raft's accept and connect callbacks. Messages that
 * arrive after close() are dropped. */
void cons_bridge_recv(struct raft_uv_transport *t,
                      const char *from_peer,
                      const void *data,
                      size_t len);

/* Copies the counters into @out. */
void cons_bridge_stats(const struct raft_uv_transport *t,
                       struct cons_bridge_stats *out);

/* Frees the bridge. Call it after raft_uv's close has finished (raft_close's
 * callback, which comes after the transport's), or, if raft never started
 * using @t (raft_init failed or was never called), at any time. Calling it
 * while streams exist is a bug (asserted). NULL or an uninitialised @t
 * (impl NULL) is a no-op. */
void cons_bridge_free(struct raft_uv_transport *t);

#endif /* SM_CONS_BRIDGE_H */
