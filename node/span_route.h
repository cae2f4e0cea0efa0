/* Which peer owns a trace, and the span batches forwarded to it
 * (node-private).
 *
 * A client span and the server span it pairs with are usually reported to
 * different peers, yet the RPC graph needs both in one place. So every
 * trace has one owner among the members of the mesh, chosen by rendezvous
 * (highest-random-weight) hashing of its trace id: each peer computes the
 * same owner from the trace id and the member ids alone, with no
 * coordination, and a peer that receives a span of a trace it does not own
 * forwards it to the owner in a span batch (TP_MSG_SPANS).
 *
 * Rendezvous hashing gives each (trace, member) pair a pseudo-random
 * weight and picks the member of highest weight. A member that leaves
 * takes only its own traces with it (each moves to the member of second
 * highest weight, so they spread evenly over the others), and a member
 * that joins takes about 1/(n+1) of the traces, from every member alike;
 * no other trace changes owner. The cost is O(n) per trace, which is
 * nothing for meshes of a few dozen peers.
 *
 * Everything here keeps no state: any thread may call it. */
#ifndef SM_NODE_SPAN_ROUTE_H
#define SM_NODE_SPAN_ROUTE_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "cbn/cbn.h"
#include "node/ingest.h"

/* ---- Ownership ------------------------------------------------------------
 */

/* Returns the index in @members (@n NUL-terminated peer ids, borrowed) of
 * the peer owning the trace @trace_id, or SIZE_MAX when @n is 0.
 *
 * The weight of a member is a 64-bit mix of the trace id and a hash of the
 * member id, with no seed: every peer of every run, whatever its byte
 * order, computes the same owner, and the owner does not depend on the
 * order of @members. Equal weights (equal ids) go to the smaller id by
 * strcmp, then to the lower index.
 *
 * The hash is not keyed. Trace ids are chosen by the clients that report
 * spans, so a hostile client can pick trace ids that all land on one peer
 * and load it alone; it cannot do more than that (the owner only pairs the
 * spans it is sent). The weights are part of the mesh's protocol: peers of
 * different versions must agree on them, so they never change within one
 * span batch version. */
size_t node_route_owner(const uint8_t trace_id[16],
                        const char *const *members,
                        size_t n);

/* ---- Span batches -----------------------------------------------------------
 *
 * The body of TP_MSG_SPANS: spans with every field of struct cbn_span,
 * their strings stored once per batch. Little-endian, version 1:
 *
 *   "SPB" 0x01 | n_spans v | n_strings v | n_strings x (len v | bytes) |
 *   n_spans x (trace_id 16 | span_id 8 | parent_id 8 | start_ns u64 |
 *              end_ns u64 | kind u8 | error u8 |
 *              service s | instance s | operation s | peer s)
 *
 * where v is a LEB128 varint of the fewest bytes and s is an index into the
 * string table. The table holds each distinct string exactly once, in the
 * order of first use (spans in order, then fields in the order above), and
 * nothing unused, so every batch has exactly one encoding: decoding then
 * encoding gives back the same bytes. The error field is a flag (0 or 1). */

/* Most spans in one batch; a peer forwarding more sends several batches. */
#define NODE_SPAN_BATCH_MAX 65536u

/* Longest string of a span in a batch, in bytes. */
#define NODE_SPAN_STRING_MAX 65535u

/* Encodes the @n spans at @spans (borrowed) into a new buffer owned by the
 * caller (sm_free), storing it in @buf and its length in @len. The spans
 * must be whole as the parsers make them: a non-empty service, instance,
 * operation and peer not NULL, end_ns >= start_ns and a known kind. A
 * non-zero error is encoded as 1.
 *
 * Returns SM_OK; SM_EINVAL for a span that is not whole; SM_ETOOBIG for
 * more than NODE_SPAN_BATCH_MAX spans or a string longer than
 * NODE_SPAN_STRING_MAX; or SM_ENOMEM. On error @buf and @len are
 * untouched. */
int node_span_batch_encode(const struct cbn_span *const *spans,
                           size_t n,
                           uint8_t **buf,
                           size_t *len);

/* Decodes the batch of @len bytes at @buf (borrowed), appending its spans
 * to @out with their strings in @out's arena. Nothing is appended unless
 * the whole batch is valid.
 *
 * Returns SM_OK, or an error with the reason in @errmsg:
 *   SM_EMALFORMED   anything but exactly one valid encoding: truncated,
 *                   trailing bytes, a varint longer than needed, counts the
 *                   remaining bytes cannot hold, an unknown kind, an error
 *                   flag other than 0 or 1, end before start, an empty
 *                   service, a string holding a NUL byte, a string table
 *                   not in first-use order, with duplicates or unused
 *                   entries;
 *   SM_EUNSUPPORTED a version other than 1;
 *   SM_ETOOBIG      more than NODE_SPAN_BATCH_MAX spans, a string longer
 *                   than NODE_SPAN_STRING_MAX, or past @out's arena limit;
 *   SM_ENOMEM.
 * On error @out holds the spans it held before (its arena, which cannot
 * give memory back, may have grown). Allocation is bounded by a small
 * multiple of @len: a short hostile batch cannot make it allocate much. */
int node_span_batch_decode(const uint8_t *buf,
                           size_t len,
                           struct node_spans *out,
                           char errmsg[SM_ERRMSG_SIZE]);

#endif /* SM_NODE_SPAN_ROUTE_H */
