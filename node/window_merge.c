/* Windows made of every peer's part: see window_merge.h.
 *
 * Messages (TP_MSG_PARTIAL bodies), little-endian:
 *   PART  kind 1 | start u64 | end u64 | a cbn_partial encoding
 *   ACK   kind 2 | start u64 | end u64
 *   MARK  kind 3 | closed_until u64 | idle u8 (0 or 1)
 *   FLUSH kind 4
 *   HELD  kind 5 | start u64 | end u64   (merged; wait for the ACK)
 * Anything else, or any other length, is malformed. */
#include "node/window_merge.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "base/alloc.h"
#include "base/err.h"
#include "base/le.h"
#include "base/log.h"
#include "transport/transport.h"

#define MOD "merge"

enum {
    KIND_PART = 1,
    KIND_ACK = 2,
    KIND_MARK = 3,
    KIND_FLUSH = 4,
    KIND_HELD = 5
};

#define HEAD_LEN 17 /* kind, start, end */
#define MARK_LEN 10

#define PEERS_MAX 64 /* members a window waits for; more are not waited on */
#define RECENT    64 /* delivered windows remembered with their contributors */

typedef char peer_id[TP_PEER_ID_MAX + 1];

/* An own part waiting for the merger's acknowledgement. */
struct out_part
{
    struct cbn_partial *part;
    uint64_t start, end;
    peer_id sent_to; /* "" until sent; the leader it was sent to */
    uint64_t sent_ms;
    int held;        /* sent_to has merged it: no re-sends to it */
    int merged_here; /* merged into this peer's own pending window */
};

/* A window being merged on the leader. */
struct pending
{
    uint64_t start, end;
    struct cbn_partial *merged;
    peer_id from[PEERS_MAX]; /* who has contributed */
    size_t n_from;
    uint64_t first_ms;
};

struct mark
{
    peer_id peer;
    uint64_t until;
    int idle;
};

/* A delivered window: a re-send of a part it merged is acknowledged
 * quietly, not counted as late. */
struct recent
{
    uint64_t start;
    uint64_t from[PEERS_MAX]; /* hashes of the contributors' ids */
    size_t n_from;
};

struct node_wmerge
{
    struct node_wmerge_config cfg;
    struct node_wmerge_env env;
    struct recent recent[RECENT]; /* a ring */
    size_t recent_next;

    struct out_part *outbox; /* by start */
    size_t n_out;

    struct pending **pending; /* by start */
    size_t n_pending;
    struct mark marks[PEERS_MAX];
    size_t n_marks;
    uint64_t delivered_until; /* windows ending at or before: delivered */
    int merging;              /* led at the last tick */

    uint64_t self_mark;
    int self_idle;
    peer_id leader;
    uint64_t late_logged_ms, refused_logged_ms;
    struct node_wmerge_stats stats;
};

int node_wmerge_new(const struct node_wmerge_config *config,
                    const struct node_wmerge_env *env,
                    struct node_wmerge **out)
{
    struct node_wmerge *wm = sm_calloc(1, sizeof *wm);
    if (wm == NULL) {
        return SM_ENOMEM;
    }
    wm->cfg = *config;
    wm->cfg.wait_ms = wm->cfg.wait_ms ? wm->cfg.wait_ms : 5000;
    wm->cfg.resend_ms = wm->cfg.resend_ms ? wm->cfg.resend_ms : 2000;
    wm->cfg.max_outbox = wm->cfg.max_outbox ? wm->cfg.max_outbox : 256;
    wm->cfg.max_pending = wm->cfg.max_pending ? wm->cfg.max_pending : 64;
    wm->outbox = sm_calloc(wm->cfg.max_outbox, sizeof *wm->outbox);
    wm->pending = sm_calloc(wm->cfg.max_pending, sizeof *wm->pending);
    if (wm->outbox == NULL || wm->pending == NULL) {
        sm_free(wm->outbox);
        sm_free(wm->pending);
        sm_free(wm);
        return SM_ENOMEM;
    }
    wm->env = *env;
    *out = wm;
    return SM_OK;
}

static void pending_free(struct pending *p)
{
    if (p != NULL) {
        cbn_partial_free(p->merged);
        sm_free(p);
    }
}

static void drop_pending(struct node_wmerge *wm)
{
    for (size_t i = 0; i < wm->n_pending; i++) {
        pending_free(wm->pending[i]);
    }
    wm->n_pending = 0;
    wm->n_marks = 0;
}

void node_wmerge_free(struct node_wmerge *wm)
{
    if (wm == NULL) {
        return;
    }
    size_t unsent = 0;
    for (size_t i = 0; i < wm->n_out; i++) {
        unsent += wm->outbox[i].sent_to[0] == '\0';
    }
    if (wm->n_out > 0) {
        /* sent ones are most likely merged; unsent ones are lost */
        sm_log(SM_LOG_WARN, MOD,
               "stopping with window parts no leader has acknowledged yet",
               "parts=%zu never_sent=%zu", wm->n_out, unsent);
    }
    for (size_t i = 0; i < wm->n_out; i++) {
        cbn_partial_free(wm->outbox[i].part);
    }
    drop_pending(wm);
    sm_free(wm->outbox);
    sm_free(wm->pending);
    sm_free(wm);
}

static uint64_t id_hash(const char *id)
{
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (; *id != '\0'; id++) {
        h = (h ^ (uint8_t)*id) * 0x100000001b3ull;
    }
    return h;
}

static int is_up(const struct node_wmerge_view *v, const char *peer)
{
    for (size_t i = 0; i < v->n_up; i++) {
        if (strcmp(v->up[i], peer) == 0) {
            return 1;
        }
    }
    return 0;
}

/* ---- Messages ------------------------------------------------------------ */

static int send_msg(struct node_wmerge *wm,
                    const char *peer,
                    const uint8_t *msg,
                    size_t len)
{
    int rv = wm->env.send(wm->env.arg, peer, msg, len);
    if (rv == SM_OK) {
        wm->stats.bytes_out += len;
    }
    return rv;
}

static void send_ack(struct node_wmerge *wm,
                     int kind,
                     const char *peer,
                     uint64_t start,
                     uint64_t end)
{
    uint8_t msg[HEAD_LEN] = {(uint8_t)kind};
    sm_put_le64(msg + 1, start);
    sm_put_le64(msg + 9, end);
    send_msg(wm, peer, msg, sizeof msg);
}

static int send_part(struct node_wmerge *wm,
                     struct out_part *o,
                     const char *leader,
                     uint64_t now)
{
    uint8_t *enc;
    size_t len;
    int rv = cbn_partial_encode(o->part, &enc, &len);
    if (rv != SM_OK) {
        return rv;
    }
    uint8_t *msg = sm_malloc(HEAD_LEN + len);
    if (msg == NULL) {
        sm_free(enc);
        return SM_ENOMEM;
    }
    msg[0] = KIND_PART;
    sm_put_le64(msg + 1, o->start);
    sm_put_le64(msg + 9, o->end);
    memcpy(msg + HEAD_LEN, enc, len);
    sm_free(enc);
    rv = send_msg(wm, leader, msg, HEAD_LEN + len);
    sm_free(msg);
    if (rv == SM_OK) {
        wm->stats.parts_resent += strcmp(o->sent_to, leader) == 0;
        wm->stats.parts_sent++;
        snprintf(o->sent_to, sizeof o->sent_to, "%s", leader);
        o->sent_ms = now;
        o->held = 0;
    }
    return rv;
}

/* ---- Sender side --------------------------------------------------------- */

static void outbox_remove(struct node_wmerge *wm, size_t i)
{
    cbn_partial_free(wm->outbox[i].part);
    memmove(wm->outbox + i, wm->outbox + i + 1,
            (wm->n_out - i - 1) * sizeof *wm->outbox);
    wm->n_out--;
}

int node_wmerge_add(struct node_wmerge *wm, struct cbn_partial *part)
{
    wm->stats.parts_made++;
    if (wm->n_out == wm->cfg.max_outbox) {
        wm->stats.parts_dropped++;
        sm_log(SM_LOG_ERROR, MOD,
               "no leader has taken this peer's window parts: the oldest "
               "is dropped",
               "window_end=%" PRIu64 " waiting=%zu",
               wm->outbox[0].end / 1000000000u, wm->n_out);
        outbox_remove(wm, 0);
    }
    uint64_t start = cbn_partial_start(part);
    size_t at = wm->n_out;
    while (at > 0 && wm->outbox[at - 1].start > start) {
        at--;
    }
    memmove(wm->outbox + at + 1, wm->outbox + at,
            (wm->n_out - at) * sizeof *wm->outbox);
    wm->outbox[at] = (struct out_part){
        .part = part, .start = start, .end = cbn_partial_end(part)};
    wm->n_out++;
    return SM_OK;
}

static void send_mark(struct node_wmerge *wm);

void node_wmerge_mark(struct node_wmerge *wm,
                      uint64_t closed_until_ns,
                      int idle)
{
    int woke = wm->self_idle && !idle;
    if (closed_until_ns > wm->self_mark) {
        wm->self_mark = closed_until_ns;
    }
    wm->self_idle = idle != 0;
    /* the leader as of the last tick; a merging leader reads it there */
    if (woke && !wm->merging && wm->leader[0] != '\0') {
        send_mark(wm);
    }
}

void node_wmerge_flush_all(struct node_wmerge *wm,
                           const struct node_wmerge_view *view)
{
    uint8_t msg[1] = {KIND_FLUSH};
    for (size_t i = 0; i < view->n_up; i++) {
        if (strcmp(view->up[i], view->self) != 0) {
            send_msg(wm, view->up[i], msg, sizeof msg);
        }
    }
}

void node_wmerge_seen(struct node_wmerge *wm, uint64_t end_ns)
{
    if (end_ns > wm->delivered_until) {
        wm->delivered_until = end_ns;
    }
}

static void take_held(struct node_wmerge *wm,
                      const char *peer,
                      uint64_t start,
                      uint64_t end)
{
    for (size_t i = 0; i < wm->n_out; i++) {
        struct out_part *o = &wm->outbox[i];
        if (o->start == start && o->end == end &&
            strcmp(o->sent_to, peer) == 0) {
            o->held = 1;
        }
    }
}

static void take_ack(struct node_wmerge *wm, uint64_t start, uint64_t end)
{
    for (size_t i = 0; i < wm->n_out; i++) {
        if (wm->outbox[i].start == start && wm->outbox[i].end == end) {
            outbox_remove(wm, i);
            wm->stats.parts_acked++;
            return;
        }
    }
}

/* The mark a remote merger may rely on: not past a part it has not
 * acknowledged, which may have been lost on the way (a reconnect drops
 * what was queued), or the window would be delivered without it. */
static uint64_t mark_to_send(const struct node_wmerge *wm)
{
    uint64_t mark = wm->self_mark;
    if (wm->n_out > 0 && wm->outbox[0].start < mark) {
        mark = wm->outbox[0].start; /* the outbox is sorted by start */
    }
    return mark;
}

static void send_to_leader(struct node_wmerge *wm, uint64_t now)
{
    if (wm->leader[0] == '\0') {
        return;
    }
    for (size_t i = 0; i < wm->n_out;) {
        struct out_part *o = &wm->outbox[i];
        /* A held part is merged and waits for its window: it goes again
         * only when the acknowledgement seems lost. */
        uint64_t every =
            o->held ? wm->cfg.wait_ms + wm->cfg.resend_ms : wm->cfg.resend_ms;
        if (strcmp(o->sent_to, wm->leader) == 0 && now < o->sent_ms + every) {
            i++;
            continue;
        }
        int rv = send_part(wm, o, wm->leader, now);
        if (rv == SM_ETOOBIG || rv == SM_EINVAL) {
            /* it will never go: say so and drop it */
            wm->stats.parts_dropped++;
            sm_log(SM_LOG_ERROR, MOD,
                   "a window part cannot be sent to the leader: dropped",
                   "window_end=%" PRIu64 " error=%s", o->end / 1000000000u,
                   sm_errname(rv));
            outbox_remove(wm, i);
            continue;
        }
        if (rv != SM_OK) {
            break; /* in order: the rest waits for the next tick */
        }
        i++;
    }
    send_mark(wm);
}

static void send_mark(struct node_wmerge *wm)
{
    uint8_t msg[MARK_LEN] = {KIND_MARK};
    uint64_t mark = mark_to_send(wm);
    sm_put_le64(msg + 1, mark);
    /* idle only when nothing waits to be sent either */
    msg[9] = (uint8_t)(wm->self_idle && wm->n_out == 0);
    send_msg(wm, wm->leader, msg, sizeof msg);
}

/* ---- Merger side --------------------------------------------------------- */

static int has_from(const struct pending *p, const char *peer)
{
    for (size_t i = 0; i < p->n_from; i++) {
        if (strcmp(p->from[i], peer) == 0) {
            return 1;
        }
    }
    return 0;
}

/* Records what @peer has closed, and whether it is idle. */
static void set_mark(struct node_wmerge *wm,
                     const char *peer,
                     uint64_t until,
                     int idle)
{
    struct mark *m = NULL;
    for (size_t i = 0; i < wm->n_marks && m == NULL; i++) {
        m = strcmp(wm->marks[i].peer, peer) == 0 ? &wm->marks[i] : NULL;
    }
    if (m == NULL) {
        if (wm->n_marks == PEERS_MAX) {
            return;
        }
        m = &wm->marks[wm->n_marks++];
        *m = (struct mark){0};
        snprintf(m->peer, sizeof m->peer, "%s", peer);
    }
    if (until > m->until) {
        m->until = until;
    }
    m->idle = idle;
}

/* Whether @peer can still send a part for a window ending at @end. */
static int may_send(const struct node_wmerge *wm,
                    const char *peer,
                    uint64_t end)
{
    for (size_t i = 0; i < wm->n_marks; i++) {
        if (strcmp(wm->marks[i].peer, peer) == 0) {
            return !wm->marks[i].idle && wm->marks[i].until < end;
        }
    }
    return 1;
}

/* Tells the contributor @peer the merger is done with its part. */
static void acknowledge(struct node_wmerge *wm,
                        const struct node_wmerge_view *v,
                        const char *peer,
                        uint64_t start,
                        uint64_t end)
{
    if (strcmp(peer, v->self) == 0) {
        take_ack(wm, start, end);
    } else {
        send_ack(wm, KIND_ACK, peer, start, end);
    }
}

/* Tells the contributor @peer its part is merged: it stops re-sending it
 * and keeps it until the ACK, in case leadership moves first. */
static void hold(struct node_wmerge *wm,
                 const struct node_wmerge_view *v,
                 const char *peer,
                 uint64_t start,
                 uint64_t end)
{
    if (strcmp(peer, v->self) != 0) {
        send_ack(wm, KIND_HELD, peer, start, end);
    }
}

/* Why a window is delivered. */
enum why { COMPLETE, TIMED_OUT, EVICTED };

static void deliver_oldest(struct node_wmerge *wm,
                           const struct node_wmerge_view *v,
                           enum why why)
{
    struct pending *p = wm->pending[0];
    memmove(wm->pending, wm->pending + 1,
            (wm->n_pending - 1) * sizeof *wm->pending);
    wm->n_pending--;
    struct recent *r = &wm->recent[wm->recent_next++ % RECENT];
    r->start = p->start;
    r->n_from = p->n_from;
    for (size_t i = 0; i < p->n_from; i++) {
        r->from[i] = id_hash(p->from[i]);
    }
    if (p->end <= wm->delivered_until) {
        /* an earlier leader delivered it, and this peer holds it now */
        for (size_t i = 0; i < p->n_from; i++) {
            acknowledge(wm, v, p->from[i], p->start, p->end);
        }
        wm->stats.windows_skipped++;
        pending_free(p);
        return;
    }
    struct cbn_window *w;
    int rv = cbn_partial_finish(p->merged, &w);
    if (rv != SM_OK) {
        /* Nothing to retry with: the parts are acknowledged below. */
        wm->stats.windows_lost++;
        sm_log(SM_LOG_ERROR, MOD,
               "out of memory finishing a merged window: it is lost",
               "window_end=%" PRIu64, p->end / 1000000000u);
    }
    wm->delivered_until = p->end;
    wm->stats.windows_merged += rv == SM_OK;
    wm->stats.windows_complete += rv == SM_OK && why == COMPLETE;
    wm->stats.windows_timed_out += rv == SM_OK && why == TIMED_OUT;
    wm->stats.windows_evicted += rv == SM_OK && why == EVICTED;
    if (why != COMPLETE) {
        sm_log(SM_LOG_WARN, MOD,
               why == TIMED_OUT
                   ? "a window is delivered without every peer's part"
                   : "too many windows wait for parts: the oldest is "
                     "delivered as it is",
               "window_end=%" PRIu64 " parts=%zu members_up=%zu",
               p->end / 1000000000u, p->n_from, v->n_up);
    }
    /* Deliver first, acknowledge after: the window's replicas then leave
     * on each connection ahead of the acknowledgement, so a peer that drops
     * its part holds the window even if this leader dies now. */
    if (rv == SM_OK) {
        wm->env.deliver(wm->env.arg, w);
    }
    for (size_t i = 0; i < p->n_from; i++) {
        acknowledge(wm, v, p->from[i], p->start, p->end);
    }
    pending_free(p);
}

static struct pending *find_pending(const struct node_wmerge *wm,
                                    uint64_t start)
{
    for (size_t i = 0; i < wm->n_pending; i++) {
        if (wm->pending[i]->start == start) {
            return wm->pending[i];
        }
    }
    return NULL;
}

static struct pending *find_or_add(struct node_wmerge *wm,
                                   uint64_t start,
                                   uint64_t end,
                                   uint64_t now)
{
    size_t at = 0;
    while (at < wm->n_pending && wm->pending[at]->start < start) {
        at++;
    }
    if (at < wm->n_pending && wm->pending[at]->start == start) {
        return wm->pending[at];
    }
    struct pending *p = sm_calloc(1, sizeof *p);
    if (p == NULL) {
        return NULL;
    }
    p->start = start;
    p->end = end;
    p->first_ms = now;
    memmove(wm->pending + at + 1, wm->pending + at,
            (wm->n_pending - at) * sizeof *wm->pending);
    wm->pending[at] = p;
    wm->n_pending++;
    return p;
}

static void log_late(struct node_wmerge *wm,
                     const char *peer,
                     uint64_t end,
                     uint64_t now)
{
    if (wm->late_logged_ms != 0 && now < wm->late_logged_ms + 10000) {
        return;
    }
    wm->late_logged_ms = now ? now : 1;
    sm_log(SM_LOG_WARN, MOD,
           "a peer's window part came after the window was delivered; its "
           "data is lost to the model. If this repeats, raise --lateness on "
           "the peers",
           "peer=%s window_end=%" PRIu64 " late_parts=%" PRIu64, peer,
           end / 1000000000u, wm->stats.parts_late);
}

static void log_refused(struct node_wmerge *wm,
                        const char *peer,
                        uint64_t end,
                        const char *why,
                        uint64_t now)
{
    if (wm->refused_logged_ms != 0 && now < wm->refused_logged_ms + 10000) {
        return;
    }
    wm->refused_logged_ms = now ? now : 1;
    sm_log(SM_LOG_ERROR, MOD, "a peer's window part is refused",
           "peer=%s "
           "window_end=%" PRIu64 " cause=\"%s\" refused=%" PRIu64,
           peer, end / 1000000000u, why, wm->stats.parts_refused);
}

/* Whether @part is a window of this leader's length and alignment, closed
 * with its QoS settings. */
static int fits(const struct node_wmerge *wm, const struct cbn_partial *part)
{
    uint64_t start = cbn_partial_start(part), end = cbn_partial_end(part);
    uint64_t w = wm->cfg.window_ns;
    if (w != 0 && (end - start != w || start % w != 0)) {
        return 0;
    }
    if (!wm->cfg.check_qos) {
        return 1;
    }
    int configured;
    double target, percentile;
    cbn_partial_qos(part, &configured, &target, &percentile);
    return configured == wm->cfg.qos_configured &&
           (!configured || (target == wm->cfg.qos_target_ms &&
                            percentile == wm->cfg.qos_percentile));
}

/* Whether @peer's part of the window at @start was merged into a window
 * delivered lately. */
static int was_merged(const struct node_wmerge *wm,
                      uint64_t start,
                      const char *peer)
{
    uint64_t h = id_hash(peer);
    for (size_t i = 0; i < RECENT; i++) {
        const struct recent *r = &wm->recent[i];
        for (size_t k = 0; r->start == start && k < r->n_from; k++) {
            if (r->from[k] == h) {
                return 1;
            }
        }
    }
    return 0;
}

/* Merges @part (owned from now on) from @peer. Returns SM_OK when the part
 * is taken (merged, or counted as late, duplicate or refused), SM_ENOMEM
 * when it must come again. */
static int merge_part(struct node_wmerge *wm,
                      const struct node_wmerge_view *v,
                      const char *peer,
                      struct cbn_partial *part,
                      uint64_t now)
{
    uint64_t start = cbn_partial_start(part), end = cbn_partial_end(part);
    /* A part says the peer is busy, not how far it has closed: an earlier
     * part of its may still be on the way (only its MARK says so). */
    set_mark(wm, peer, 0, 0);
    if (!fits(wm, part)) {
        wm->stats.parts_refused++;
        log_refused(wm, peer, end,
                    "its window or QoS settings differ from "
                    "the leader's: peers must share --window, "
                    "--qos-service, --qos-target-ms and "
                    "--qos-percentile",
                    now);
        cbn_partial_free(part);
        acknowledge(wm, v, peer, start, end);
        return SM_OK;
    }
    if (end > wm->delivered_until && wm->n_pending == wm->cfg.max_pending &&
        find_pending(wm, start) == NULL) {
        deliver_oldest(wm, v, EVICTED); /* too many windows: make room */
    }
    if (end <= wm->delivered_until) {
        if (was_merged(wm, start, peer)) {
            wm->stats.parts_duplicate++; /* its acknowledgement was lost */
        } else {
            wm->stats.parts_late++;
            log_late(wm, peer, end, now);
        }
        cbn_partial_free(part);
        acknowledge(wm, v, peer, start, end);
        return SM_OK;
    }
    struct pending *p = find_or_add(wm, start, end, now);
    if (p == NULL) {
        cbn_partial_free(part); /* not acknowledged: it comes again */
        return SM_ENOMEM;
    }
    if (has_from(p, peer)) {
        wm->stats.parts_duplicate++;
        cbn_partial_free(part);
        hold(wm, v, peer, start, end);
        return SM_OK;
    }
    if (p->merged == NULL) {
        p->merged = part;
    } else {
        int rv = cbn_partial_merge(p->merged, part);
        cbn_partial_free(part);
        if (rv == SM_ENOMEM) {
            return SM_ENOMEM; /* not acknowledged: it comes again */
        }
        if (rv != SM_OK) {
            wm->stats.parts_refused++;
            log_refused(wm, peer, end,
                        rv == SM_ERANGE ? "a count would overflow"
                                        : "its metrics' resource classes "
                                          "differ (--resource-class)",
                        now);
            acknowledge(wm, v, peer, start, end);
            return SM_OK;
        }
    }
    if (p->n_from < PEERS_MAX) {
        snprintf(p->from[p->n_from++], sizeof(peer_id), "%s", peer);
    }
    wm->stats.parts_received++;
    hold(wm, v, peer, start, end);
    return SM_OK;
}

/* A copy of @part, for merging while the outbox keeps the original. */
static struct cbn_partial *copy_part(const struct cbn_partial *part)
{
    uint8_t *enc;
    size_t len;
    struct cbn_partial *copy = NULL;
    if (cbn_partial_encode(part, &enc, &len) != SM_OK) {
        return NULL;
    }
    if (cbn_partial_decode(enc, len, &copy) != SM_OK) {
        copy = NULL;
    }
    sm_free(enc);
    return copy;
}

/* Own parts go straight into the merge when this peer is the merger. The
 * outbox keeps each until its window is delivered, in case leadership
 * moves first. */
static void merge_own(struct node_wmerge *wm,
                      const struct node_wmerge_view *v,
                      uint64_t now)
{
    for (;;) {
        struct out_part *o = NULL;
        for (size_t i = 0; i < wm->n_out && o == NULL; i++) {
            o = wm->outbox[i].merged_here ? NULL : &wm->outbox[i];
        }
        if (o == NULL) {
            break;
        }
        struct cbn_partial *copy = copy_part(o->part);
        if (copy == NULL) {
            break; /* out of memory: the next tick tries again */
        }
        o->merged_here = 1; /* before merge_part, which may remove it */
        uint64_t start = o->start;
        if (merge_part(wm, v, v->self, copy, now) != SM_OK) {
            for (size_t i = 0; i < wm->n_out; i++) {
                if (wm->outbox[i].start == start) {
                    wm->outbox[i].merged_here = 0;
                }
            }
            break; /* out of memory: the next tick tries again */
        }
    }
    set_mark(wm, v->self, wm->self_mark, wm->self_idle);
}

static int is_complete(const struct node_wmerge *wm,
                       const struct node_wmerge_view *v,
                       const struct pending *p)
{
    for (size_t i = 0; i < v->n_up; i++) {
        if (!has_from(p, v->up[i]) && may_send(wm, v->up[i], p->end)) {
            return 0;
        }
    }
    return 1;
}

/* Whether a window that waited wait_ms may go without its missing parts:
 * when this leader has a part of it, or another member than its one
 * contributor has closed past it. A lone part from a peer whose clock or
 * data runs far ahead of everyone's waits instead of moving every later
 * window behind it. */
static int may_time_out(const struct node_wmerge *wm,
                        const struct node_wmerge_view *v,
                        const struct pending *p)
{
    if (p->n_from != 1 || has_from(p, v->self)) {
        return 1;
    }
    for (size_t i = 0; i < wm->n_marks; i++) {
        if (strcmp(wm->marks[i].peer, p->from[0]) != 0 &&
            wm->marks[i].until >= p->end) {
            return 1;
        }
    }
    return 0;
}

static void deliver_ready(struct node_wmerge *wm,
                          const struct node_wmerge_view *v,
                          uint64_t now)
{
    while (wm->n_pending > 0) {
        const struct pending *p = wm->pending[0];
        if (p->end <= wm->delivered_until || is_complete(wm, v, p)) {
            deliver_oldest(wm, v, COMPLETE);
        } else if (now >= p->first_ms + wm->cfg.wait_ms &&
                   may_time_out(wm, v, p)) {
            deliver_oldest(wm, v, TIMED_OUT);
        } else {
            return;
        }
    }
}

/* ---- Entry points -------------------------------------------------------- */

void node_wmerge_recv(struct node_wmerge *wm,
                      const struct node_wmerge_view *view,
                      const char *peer,
                      const void *data,
                      size_t len,
                      uint64_t now_ms)
{
    const uint8_t *b = data;
    wm->stats.bytes_in += len;
    if (len == 0) {
        wm->stats.parts_refused++;
        return;
    }
    if (b[0] == KIND_ACK && len == HEAD_LEN) {
        take_ack(wm, sm_get_le64(b + 1), sm_get_le64(b + 9));
        return;
    }
    if (b[0] == KIND_HELD && len == HEAD_LEN) {
        take_held(wm, peer, sm_get_le64(b + 1), sm_get_le64(b + 9));
        return;
    }
    if (b[0] == KIND_FLUSH && len == 1) {
        if (!is_up(view, peer)) {
            return;
        }
        wm->stats.flushes_received++;
        if (wm->env.flush != NULL) {
            wm->env.flush(wm->env.arg);
        }
        return;
    }
    if (!view->is_leader) {
        return; /* sent to an earlier leader: it comes again to the next */
    }
    if (!is_up(view, peer)) {
        return; /* not a member the log records as up: ignored */
    }
    if (b[0] == KIND_MARK && len == MARK_LEN && b[9] <= 1) {
        set_mark(wm, peer, sm_get_le64(b + 1), b[9]);
        return;
    }
    struct cbn_partial *part;
    if (b[0] != KIND_PART || len <= HEAD_LEN ||
        cbn_partial_decode(b + HEAD_LEN, len - HEAD_LEN, &part) != SM_OK) {
        wm->stats.parts_refused++;
        return;
    }
    if (cbn_partial_start(part) != sm_get_le64(b + 1) ||
        cbn_partial_end(part) != sm_get_le64(b + 9)) {
        wm->stats.parts_refused++;
        cbn_partial_free(part);
        return;
    }
    merge_part(wm, view, peer, part, now_ms);
}

/* Forgets the marks of peers that are no longer up members. */
static void prune_marks(struct node_wmerge *wm,
                        const struct node_wmerge_view *v)
{
    size_t k = 0;
    for (size_t i = 0; i < wm->n_marks; i++) {
        if (is_up(v, wm->marks[i].peer)) {
            wm->marks[k++] = wm->marks[i];
        }
    }
    wm->n_marks = k;
}

/* Leadership moved: parts merged here must go to the new merger. */
static void follow_leader(struct node_wmerge *wm,
                          const struct node_wmerge_view *v)
{
    if (wm->merging && !v->is_leader) {
        drop_pending(wm);
        for (size_t i = 0; i < wm->n_out; i++) {
            wm->outbox[i].merged_here = 0;
            wm->outbox[i].sent_to[0] = '\0';
        }
    }
    wm->merging = v->is_leader;
    snprintf(wm->leader, sizeof wm->leader, "%s", v->leader);
}

void node_wmerge_tick(struct node_wmerge *wm,
                      const struct node_wmerge_view *view,
                      uint64_t now_ms)
{
    follow_leader(wm, view);
    if (view->is_leader) {
        prune_marks(wm, view);
        merge_own(wm, view, now_ms);
        deliver_ready(wm, view, now_ms);
    } else if (wm->leader[0] != '\0') {
        send_to_leader(wm, now_ms);
    }
}

void node_wmerge_flush(struct node_wmerge *wm,
                       const struct node_wmerge_view *view,
                       uint64_t now_ms)
{
    follow_leader(wm, view);
    if (view->is_leader) {
        merge_own(wm, view, now_ms);
        deliver_ready(wm, view, now_ms);
        if (wm->n_pending > 0) {
            /* Their other parts go to the next leader; this peer's own
             * parts of them stop here. */
            sm_log(SM_LOG_WARN, MOD,
                   "stopping the leader: windows still waiting for parts are "
                   "left to the next leader without this peer's part",
                   "windows=%zu", wm->n_pending);
        }
    } else {
        send_to_leader(wm, now_ms);
    }
}

void node_wmerge_stats(const struct node_wmerge *wm,
                       struct node_wmerge_stats *out)
{
    *out = wm->stats;
    out->outbox = wm->n_out;
    out->pending = wm->n_pending;
}
