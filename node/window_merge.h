/* Windows made of every peer's part (node-private).
 *
 * In the mesh, spans are routed by trace id (node/span_route.h), so each
 * peer's aggregator holds only part of every window: the RPCs of the
 * traces it owns and the metrics of the services on its host. When a
 * window closes, each peer hands its part over in sketch form (struct
 * cbn_partial) and the leader merges the parts into the window: sketches
 * merge by adding bucket counts, so the merged window equals the one a
 * single aggregator fed every span and point would have made. The leader
 * then delivers it like a window it closed itself: stored, replicated to
 * every member, checked for QoS and diagnosed.
 *
 * Sender side, on every peer (the leader included): own parts wait in an
 * outbox until the leader acknowledges them, which it does once the window
 * they belong to is delivered (or refused, or late). They go to the
 * current leader, are re-sent every resend_ms until it says it holds them
 * (HELD), then every wait_ms + resend_ms until acknowledged, and at once
 * to a new leader, so a leader failover loses no part that was still
 * waiting. Each
 * tick also sends the leader the peer's mark: every window ending at or
 * before it is closed on this peer, so no more parts will come for it. A
 * peer with no open window and no recent data marks itself idle, so the
 * leader does not wait for it; the first data it gets makes it send a
 * busy mark at once (node_wmerge_mark), ahead of any part it will make.
 *
 * Merger side, on the leader: parts from members that are up are merged per
 * window as they arrive. The oldest window is delivered when every member
 * that is up has sent its part, a mark past the window's end or an idle
 * mark; or wait_ms after the leader first heard of the window, if the
 * leader has a part of it or another member has closed past it (a lone
 * part from a peer far ahead of the others waits). Windows are delivered
 * in order, and never one the peer already holds (node_wmerge_seen). A
 * part for a window already delivered is late: it is counted, logged and
 * acknowledged, and its data is lost to the model (raise the peers'
 * --lateness when this repeats); a re-send of a part that was merged is
 * only acknowledged. A part of another window length or alignment, or
 * closed with other QoS settings than the leader's, is refused, counted
 * and logged.
 *
 * A pure state machine: time is an input (ms) and the network is a send
 * callback, so tests run many peers in one process. Not thread-safe; the
 * peer's loop owns it. */
#ifndef SM_NODE_WINDOW_MERGE_H
#define SM_NODE_WINDOW_MERGE_H

#include <stddef.h>
#include <stdint.h>

#include "cbn/cbn.h"

/* What the mesh looks like from this peer at a tick. Borrowed. */
struct node_wmerge_view
{
    const char *self;
    const char *leader; /* "" while none is known */
    int is_leader;      /* this peer leads and is caught up: it merges */
    size_t n_up;
    const char *const *up; /* members that are up, self included */
};

struct node_wmerge_env
{
    void *arg;
    /* Sends @len bytes (a TP_MSG_PARTIAL body, copied) to @peer. Returns
     * SM_OK or an error: the message is retried later. */
    int (*send)(void *arg, const char *peer, const void *data, size_t len);
    /* A merged window, in window order; the callee owns @w. */
    void (*deliver)(void *arg, struct cbn_window *w);
    /* Another peer ran `sagemesh flush`: close every open window now and
     * hand the parts in (node_wmerge_add, node_wmerge_mark). */
    void (*flush)(void *arg);
};

struct node_wmerge_config
{
    uint64_t wait_ms;   /* 0 -> 5000: longest wait for missing parts */
    uint64_t window_ns; /* the peers' window; 0: not checked */
    int check_qos;      /* refuse parts whose QoS settings differ from: */
    int qos_configured;
    double qos_target_ms, qos_percentile;
    uint64_t resend_ms; /* 0 -> 2000 */
    size_t max_outbox;  /* own parts waiting; 0 -> 256. Past it the oldest
                           is dropped (counted and logged) */
    size_t max_pending; /* windows being merged; 0 -> 64. Past it the
                           oldest is delivered as it is */
};

struct node_wmerge_stats
{
    uint64_t parts_made;       /* own parts handed in */
    uint64_t parts_sent;       /* sends to a remote leader, re-sends included */
    uint64_t parts_resent;     /* of which re-sends */
    uint64_t parts_acked;      /* own parts the merger is done with */
    uint64_t parts_dropped;    /* own parts dropped: outbox full */
    uint64_t parts_received;   /* merged here, own parts included */
    uint64_t parts_late;       /* for a window already delivered */
    uint64_t parts_duplicate;  /* a re-send of a part already merged */
    uint64_t parts_refused;    /* unreadable, or would not merge */
    uint64_t windows_merged;   /* delivered */
    uint64_t windows_complete; /* of which with every part */
    uint64_t windows_timed_out; /* of which after wait_ms */
    uint64_t windows_evicted;   /* of which because max_pending were open */
    uint64_t windows_skipped;   /* not delivered: this peer held them */
    uint64_t windows_lost;      /* out of memory finishing them */
    uint64_t flushes_received;  /* flush requests from other peers */
    uint64_t bytes_out, bytes_in;
    size_t outbox;  /* own parts waiting for an acknowledgement */
    size_t pending; /* windows being merged */
};

struct node_wmerge;

/* Creates the state machine with copies of @config and @env. Returns SM_OK
 * or SM_ENOMEM (@out untouched). */
int node_wmerge_new(const struct node_wmerge_config *config,
                    const struct node_wmerge_env *env,
                    struct node_wmerge **out);

/* Frees @wm and every part it holds; NULL is a no-op. */
void node_wmerge_free(struct node_wmerge *wm);

/* Hands over this peer's part of a closed window; @wm owns @part from now
 * on. Parts come in window order. Past max_outbox the oldest waiting part
 * is dropped (counted, logged). Returns SM_OK. */
int node_wmerge_add(struct node_wmerge *wm, struct cbn_partial *part);

/* Every window of this peer ending at or before @closed_until_ns is
 * closed and handed in; @idle: nothing is open and no data came lately.
 * Going from idle to busy sends the mark to the leader at once. */
void node_wmerge_mark(struct node_wmerge *wm,
                      uint64_t closed_until_ns,
                      int idle);

/* `sagemesh flush` on this peer: asks every other member that is up to
 * close its open windows too, so the leader gets every part at once. */
void node_wmerge_flush_all(struct node_wmerge *wm,
                           const struct node_wmerge_view *view);

/* Windows ending at or before @end_ns are known to this peer already (it
 * holds them from its log, or a replica from an earlier leader): a merger
 * does not deliver them again. */
void node_wmerge_seen(struct node_wmerge *wm, uint64_t end_ns);

/* One TP_MSG_PARTIAL body from @peer (borrowed). Malformed input is
 * counted and dropped. */
void node_wmerge_recv(struct node_wmerge *wm,
                      const struct node_wmerge_view *view,
                      const char *peer,
                      const void *data,
                      size_t len,
                      uint64_t now_ms);

/* Sends what is due and delivers the windows that are ready. */
void node_wmerge_tick(struct node_wmerge *wm,
                      const struct node_wmerge_view *view,
                      uint64_t now_ms);

/* At shutdown: a leader merges its own parts and delivers the windows that
 * are complete (the others are left to the next leader, logged); a
 * follower sends its parts once more. */
void node_wmerge_flush(struct node_wmerge *wm,
                       const struct node_wmerge_view *view,
                       uint64_t now_ms);

void node_wmerge_stats(const struct node_wmerge *wm,
                       struct node_wmerge_stats *out);

#endif /* SM_NODE_WINDOW_MERGE_H */
