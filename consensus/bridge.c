/* raft's connections over the mesh link: see raft_bridge.h for the design
 * and the frame format. */
#include "consensus/bridge_internal.h"

#include <raft.h>
#include <raft/uv.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/err.h"
#include "base/log.h"

/* Sizes of the frame parts after the common header. */
#define SEQ_SIZE       ((size_t)8)
#define OPEN_FIXED     ((size_t)9) /* raft id, address length */
#define DATA_HEADER    (CONS_BRIDGE_HEADER + SEQ_SIZE)
#define OPEN_FRAME_MAX (CONS_BRIDGE_HEADER + OPEN_FIXED + CONS_RAFT_ADDR_MAX)

enum stream_state {
    STREAM_CONNECTING, /* we sent OPEN and wait for OPENED */
    STREAM_OPEN,       /* both socketpair ends exist */
    STREAM_CLOSING,    /* out of the table, handles closing */
};

struct bridge;

/* One raft connection, seen from this bridge. */
struct stream
{
    struct stream *prev, *next; /* in bridge->streams while not closing */
    struct bridge *b;
    char peer[CONS_PEER_ID_MAX + 1];
    uint64_t id;
    bool opener; /* we sent OPEN (raft connected out) */
    enum stream_state state;
    struct raft_uv_connect *req; /* raft's connect request, until answered */
    int cancel_status; /* if set, answer req with it once handles close */
    uv_timer_t timer;  /* connect timeout (opener only) */
    bool timer_init;
    uv_pipe_t pipe; /* the bridge's end of the socketpair */
    bool pipe_init;
    unsigned handles_open; /* handles not yet through their close callback */
    uint64_t tx_seq, rx_seq;
    size_t queued; /* DATA bytes waiting to be written to raft */
    bool counted_open;
};

/* A DATA payload that raft has not read yet. */
struct pending_write
{
    uv_write_t req;
    struct stream *s;
    size_t len;
    char data[];
};

struct bridge
{
    struct raft_uv_transport *t;
    uv_loop_t *loop;
    struct cons_link link;
    char self[CONS_PEER_ID_MAX + 1];
    char self_addr[CONS_RAFT_ADDR_MAX + 1]; /* as raft_init named us */
    uint64_t self_raft_id;
    raft_uv_accept_cb accept_cb;
    raft_uv_transport_close_cb close_cb;
    bool closing;      /* close() was called */
    bool close_handle; /* the close marker handle is through its callback */
    bool closed;       /* the close callback fired */
    uv_timer_t close_marker;
    unsigned connect_timeout_ms;
    uint64_t next_stream_id;
    struct stream *head, *tail; /* streams not closing, oldest first */
    unsigned n_streams;         /* allocated, closing ones included */
    struct cons_bridge_stats stats;
    /* One read buffer for every stream: libuv reads into it and the read
     * callback sends it before the next read, so the DATA header is written
     * in front of the bytes and nothing is copied. */
    unsigned char rbuf[DATA_HEADER + CONS_BRIDGE_CHUNK];
};

/* ---- Encoding ----------------------------------------------------------- */

static void put_u64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) {
        p[i] = (unsigned char)(v >> (8 * i));
    }
}

static uint64_t get_u64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) {
        v = (v << 8) | p[i];
    }
    return v;
}

static void put_header(unsigned char *p,
                       enum cons_bridge_kind kind,
                       bool opener,
                       uint64_t stream_id)
{
    p[0] = CONS_BRIDGE_VERSION;
    p[1] = (unsigned char)kind;
    p[2] = opener ? CONS_BRIDGE_FLAG_OPENER : 0;
    put_u64(p + 3, stream_id);
}

/* Sends one frame to @peer, counting it. Returns the link's result. */
static int send_frame(struct bridge *b,
                      const char *peer,
                      const unsigned char *frame,
                      size_t len)
{
    int rv = b->link.send(b->link.arg, peer, frame, len);
    if (rv != SM_OK) {
        b->stats.send_failures++;
        return rv;
    }
    b->stats.frames_sent++;
    return SM_OK;
}

/* Sends a frame that is just a header (OPENED, CLOSE). */
static int send_bare(struct bridge *b,
                     const char *peer,
                     enum cons_bridge_kind kind,
                     bool opener,
                     uint64_t stream_id)
{
    unsigned char frame[CONS_BRIDGE_HEADER];
    put_header(frame, kind, opener, stream_id);
    return send_frame(b, peer, frame, sizeof frame);
}

static int send_open(struct bridge *b, const char *peer, uint64_t stream_id)
{
    unsigned char frame[OPEN_FRAME_MAX];
    const char *addr = b->self_addr[0] != '\0' ? b->self_addr : b->self;
    size_t alen = strlen(addr);
    put_header(frame, CONS_BRIDGE_OPEN, true, stream_id);
    put_u64(frame + CONS_BRIDGE_HEADER, b->self_raft_id);
    frame[CONS_BRIDGE_HEADER + 8] = (unsigned char)alen;
    memcpy(frame + CONS_BRIDGE_HEADER + OPEN_FIXED, addr, alen);
    return send_frame(b, peer, frame, CONS_BRIDGE_HEADER + OPEN_FIXED + alen);
}

/* ---- Peer ids and raft addresses ---------------------------------------- */

int cons_peer_id_valid(const char *id, size_t len)
{
    if (len == 0 || len > CONS_PEER_ID_MAX) {
        return 0;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)id[i];
        if (c < 0x21 || c > 0x7e || c == '@') {
            return 0;
        }
    }
    return 1;
}

uint64_t cons_peer_raft_id(const char *peer)
{
    uint64_t h = UINT64_C(0xcbf29ce484222325); /* FNV-1a 64 */
    for (const char *c = peer; *c != '\0'; c++) {
        h = (h ^ (unsigned char)*c) * UINT64_C(0x100000001b3);
    }
    return h != 0 ? h : 1;
}

/* The peer id a raft address names: all of it, or what comes before '@'.
 * Returns 0 when that is not a valid peer id. */
static int address_peer(const char *address, char peer[CONS_PEER_ID_MAX + 1])
{
    const char *at = strchr(address, '@');
    size_t n = at != NULL ? (size_t)(at - address) : strlen(address);
    if (!cons_peer_id_valid(address, n)) {
        return 0;
    }
    memcpy(peer, address, n);
    peer[n] = '\0';
    return 1;
}

/* ---- Streams: table and life cycle -------------------------------------- */

static struct stream *stream_find(struct bridge *b,
                                  const char *peer,
                                  uint64_t id,
                                  bool opener)
{
    for (struct stream *s = b->head; s != NULL; s = s->next) {
        if (s->id == id && s->opener == opener && strcmp(s->peer, peer) == 0) {
            return s;
        }
    }
    return NULL;
}

static void stream_link(struct bridge *b, struct stream *s)
{
    s->prev = b->tail;
    s->next = NULL;
    if (b->tail != NULL) {
        b->tail->next = s;
    } else {
        b->head = s;
    }
    b->tail = s;
}

static void stream_unlink(struct bridge *b, struct stream *s)
{
    if (s->prev != NULL) {
        s->prev->next = s->next;
    } else {
        b->head = s->next;
    }
    if (s->next != NULL) {
        s->next->prev = s->prev;
    } else {
        b->tail = s->prev;
    }
    s->prev = s->next = NULL;
}

/* A new stream in the table, with no handles yet; NULL when out of
 * memory. @peer is a valid peer id. */
static struct stream *stream_new(struct bridge *b,
                                 const char *peer,
                                 uint64_t id,
                                 bool opener)
{
    struct stream *s = sm_calloc(1, sizeof *s);
    if (s == NULL) {
        return NULL;
    }
    s->b = b;
    strcpy(s->peer, peer);
    s->id = id;
    s->opener = opener;
    s->state = opener ? STREAM_CONNECTING : STREAM_OPEN;
    stream_link(b, s);
    b->n_streams++;
    return s;
}

/* Fires the close callback once close() was called and every handle of the
 * bridge is closed. */
static void bridge_maybe_closed(struct bridge *b)
{
    if (!b->closing || b->closed || !b->close_handle || b->n_streams > 0) {
        return;
    }
    b->closed = true;
    if (b->close_cb != NULL) {
        b->close_cb(b->t);
    }
}

/* Frees @s once its handles are closed, answering a cancelled connect. */
static void stream_destroy(struct stream *s)
{
    struct bridge *b = s->b;
    struct raft_uv_connect *req = s->req;
    int status = s->cancel_status;
    sm_free(s);
    b->n_streams--;
    if (req != NULL) {
        req->cb(req, NULL, status != 0 ? status : RAFT_NOCONNECTION);
    }
    bridge_maybe_closed(b);
}

static void stream_handle_closed(uv_handle_t *handle)
{
    struct stream *s = handle->data;
    if (--s->handles_open == 0) {
        stream_destroy(s);
    }
}

/* Ends @s: out of the table, CLOSE to the peer when @notify, its handles
 * closed (raft's end then sees EOF or EPIPE). @s must not be used after
 * this call. Ending a closing stream does nothing. */
static void stream_end(struct stream *s, bool notify)
{
    struct bridge *b = s->b;
    if (s->state == STREAM_CLOSING) {
        return;
    }
    stream_unlink(b, s);
    if (s->counted_open) {
        b->stats.streams_closed++;
    }
    s->state = STREAM_CLOSING;
    if (notify) {
        send_bare(b, s->peer, CONS_BRIDGE_CLOSE, s->opener, s->id);
    }
    if (s->timer_init) {
        uv_close((uv_handle_t *)&s->timer, stream_handle_closed);
    }
    if (s->pipe_init) {
        uv_close((uv_handle_t *)&s->pipe, stream_handle_closed);
    }
    if (s->handles_open == 0) {
        stream_destroy(s);
    }
}

/* Ends a connecting stream and tells raft the attempt failed with
 * @status. */
static void stream_fail_connect(struct stream *s, bool notify, int status)
{
    struct raft_uv_connect *req = s->req;
    s->req = NULL;
    stream_end(s, notify);
    if (req != NULL) {
        req->cb(req, NULL, status);
    }
}

/* ---- The socketpair ------------------------------------------------------ */

static void free_raft_handle(uv_handle_t *handle)
{
    raft_free(handle);
}

static void on_alloc(uv_handle_t *handle, size_t hint, uv_buf_t *buf)
{
    struct stream *s = handle->data;
    (void)hint;
    buf->base = (char *)s->b->rbuf + DATA_HEADER;
    buf->len = CONS_BRIDGE_CHUNK;
}

/* Bytes raft wrote: one DATA frame per read (reads are at most one
 * chunk). */
static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    struct stream *s = stream->data;
    struct bridge *b = s->b;
    (void)buf;
    if (nread == 0) {
        return;
    }
    if (nread < 0) { /* raft closed its end, or an error */
        stream_end(s, true);
        return;
    }
    put_header(b->rbuf, CONS_BRIDGE_DATA, s->opener, s->id);
    put_u64(b->rbuf + CONS_BRIDGE_HEADER, s->tx_seq);
    if (send_frame(b, s->peer, b->rbuf, DATA_HEADER + (size_t)nread) != SM_OK) {
        /* The link does not buffer for us: a lost chunk breaks the
         * stream, so end it and let raft reconnect. */
        stream_end(s, true);
        return;
    }
    s->tx_seq++;
    b->stats.bytes_sent += (uint64_t)nread;
}

/* Makes the socketpair of @s: the bridge's end reading, raft's end a new
 * uv_pipe_t from raft_malloc returned in @raft_end (raft closes and frees
 * it). On failure returns a raft error code; whatever was made is closed
 * when the caller ends @s. */
static int stream_make_pipes(struct stream *s, uv_stream_t **raft_end)
{
    struct bridge *b = s->b;
    int fds[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0,
                   fds) != 0) {
        return RAFT_IOERR;
    }
    uv_pipe_t *rp = raft_malloc(sizeof *rp);
    if (rp == NULL) {
        close(fds[0]);
        close(fds[1]);
        return RAFT_NOMEM;
    }
    uv_pipe_init(b->loop, rp, 0);
    if (uv_pipe_open(rp, fds[0]) != 0) {
        close(fds[0]);
        close(fds[1]);
        uv_close((uv_handle_t *)rp, free_raft_handle);
        return RAFT_IOERR;
    }
    uv_pipe_init(b->loop, &s->pipe, 0);
    s->pipe.data = s;
    s->pipe_init = true;
    s->handles_open++;
    if (uv_pipe_open(&s->pipe, fds[1]) != 0) {
        close(fds[1]); /* not adopted by the handle */
        uv_close((uv_handle_t *)rp, free_raft_handle);
        return RAFT_IOERR;
    }
    if (uv_read_start((uv_stream_t *)&s->pipe, on_alloc, on_read) != 0) {
        uv_close((uv_handle_t *)rp, free_raft_handle);
        return RAFT_IOERR;
    }
    *raft_end = (uv_stream_t *)rp;
    return 0;
}

/* ---- Writing DATA to raft -------------------------------------------- */

static void on_written(uv_write_t *req, int status)
{
    struct pending_write *w = req->data;
    struct stream *s = w->s;
    s->queued -= w->len;
    sm_free(w);
    if (status < 0 && status != UV_ECANCELED) {
        stream_end(s, true);
    }
}

/* Queues the @len bytes at @data that the socket did not take at once. */
static int stream_queue(struct stream *s, const char *data, size_t len)
{
    if (s->queued + len > CONS_BRIDGE_MAX_BUFFERED) {
        s->b->stats.overflows++;
        return SM_ETOOBIG;
    }
    struct pending_write *w = sm_malloc(sizeof *w + len);
    if (w == NULL) {
        return SM_ENOMEM;
    }
    memcpy(w->data, data, len);
    w->s = s;
    w->len = len;
    w->req.data = w;
    uv_buf_t buf = uv_buf_init(w->data, (unsigned)len);
    if (uv_write(&w->req, (uv_stream_t *)&s->pipe, &buf, 1, on_written) != 0) {
        sm_free(w);
        return SM_EIO;
    }
    s->queued += len;
    return SM_OK;
}

/* Writes received bytes to raft's end, in order. */
static int stream_write(struct stream *s, const char *data, size_t len)
{
    if (s->queued == 0) {
        uv_buf_t buf = uv_buf_init((char *)data, (unsigned)len);
        int n = uv_try_write((uv_stream_t *)&s->pipe, &buf, 1);
        if (n < 0 && n != UV_EAGAIN) {
            return SM_EIO;
        }
        if (n > 0) {
            data += n;
            len -= (size_t)n;
        }
    }
    return len == 0 ? SM_OK : stream_queue(s, data, len);
}

/* ---- Received frames ------------------------------------------------------
 */

/* A parsed frame header; the body follows. */
struct frame
{
    enum cons_bridge_kind kind;
    bool from_opener;
    uint64_t stream_id;
    const unsigned char *body;
    size_t body_len;
};

static void protocol_error(struct bridge *b, const char *peer, const char *why)
{
    b->stats.protocol_errors++;
    sm_log(SM_LOG_DEBUG, "raft_bridge", "bad frame", "peer=%s reason=\"%s\"",
           peer, why);
}

/* Splits @data into a header and a body; 0 if the header is malformed. */
static int parse_header(const unsigned char *data, size_t len, struct frame *f)
{
    if (len < CONS_BRIDGE_HEADER || data[0] != CONS_BRIDGE_VERSION ||
        data[1] < CONS_BRIDGE_OPEN || data[1] > CONS_BRIDGE_CLOSE ||
        (data[2] & ~CONS_BRIDGE_FLAG_OPENER) != 0) {
        return 0;
    }
    f->kind = (enum cons_bridge_kind)data[1];
    f->from_opener = (data[2] & CONS_BRIDGE_FLAG_OPENER) != 0;
    f->stream_id = get_u64(data + 3);
    f->body = data + CONS_BRIDGE_HEADER;
    f->body_len = len - CONS_BRIDGE_HEADER;
    return 1;
}

/* Whether the body of @f has the shape its kind requires. */
static int body_valid(const struct frame *f)
{
    switch (f->kind) {
        case CONS_BRIDGE_OPEN:
            return f->from_opener && f->body_len > OPEN_FIXED &&
                   f->body[8] <= CONS_RAFT_ADDR_MAX &&
                   f->body_len == OPEN_FIXED + f->body[8];
        case CONS_BRIDGE_OPENED:
            return !f->from_opener && f->body_len == 0;
        case CONS_BRIDGE_DATA:
            return f->body_len > SEQ_SIZE &&
                   f->body_len <= SEQ_SIZE + CONS_BRIDGE_CHUNK;
        case CONS_BRIDGE_CLOSE:
            return f->body_len == 0;
    }
    return 0;
}

/* Ends the oldest stream @peer opened to us if it has the most allowed, so
 * that the new one fits. */
static void limit_accepted(struct bridge *b, const char *peer)
{
    struct stream *oldest = NULL;
    unsigned n = 0;
    for (struct stream *s = b->head; s != NULL; s = s->next) {
        if (!s->opener && strcmp(s->peer, peer) == 0) {
            oldest = oldest != NULL ? oldest : s;
            n++;
        }
    }
    if (n >= CONS_BRIDGE_MAX_ACCEPTED) {
        stream_end(oldest, true);
    }
}

static void on_open(struct bridge *b, const char *peer, const struct frame *f)
{
    size_t alen = f->body[8];
    char address[CONS_RAFT_ADDR_MAX + 1];
    char named[CONS_PEER_ID_MAX + 1];
    memcpy(address, f->body + OPEN_FIXED, alen);
    address[alen] = '\0';
    if (alen > CONS_RAFT_ADDR_MAX || strlen(address) != alen ||
        !address_peer(address, named) || strcmp(named, peer) != 0 ||
        get_u64(f->body) != cons_peer_raft_id(peer)) {
        protocol_error(b, peer, "OPEN names another peer");
        send_bare(b, peer, CONS_BRIDGE_CLOSE, false, f->stream_id);
        return;
    }
    if (b->closing || b->accept_cb == NULL) {
        send_bare(b, peer, CONS_BRIDGE_CLOSE, false, f->stream_id);
        return;
    }
    /* The opener reused an id we still hold (it restarted): the old
     * stream is dead. */
    struct stream *old = stream_find(b, peer, f->stream_id, false);
    if (old != NULL) {
        stream_end(old, false);
    }
    limit_accepted(b, peer);
    struct stream *s = stream_new(b, peer, f->stream_id, false);
    if (s == NULL) {
        send_bare(b, peer, CONS_BRIDGE_CLOSE, false, f->stream_id);
        return;
    }
    uv_stream_t *raft_end = NULL;
    if (stream_make_pipes(s, &raft_end) != 0) {
        stream_end(s, true);
        return;
    }
    if (send_bare(b, peer, CONS_BRIDGE_OPENED, false, s->id) != SM_OK) {
        uv_close((uv_handle_t *)raft_end, free_raft_handle);
        stream_end(s, false);
        return;
    }
    s->counted_open = true;
    b->stats.streams_opened++;
    b->accept_cb(b->t, cons_peer_raft_id(peer), address, raft_end);
}

static void on_opened(struct bridge *b, struct stream *s)
{
    if (s->state != STREAM_CONNECTING) {
        protocol_error(b, s->peer, "OPENED twice");
        stream_end(s, true);
        return;
    }
    uv_timer_stop(&s->timer);
    uv_stream_t *raft_end = NULL;
    if (stream_make_pipes(s, &raft_end) != 0) {
        stream_fail_connect(s, true, RAFT_NOCONNECTION);
        return;
    }
    struct raft_uv_connect *req = s->req;
    s->req = NULL;
    s->state = STREAM_OPEN;
    s->counted_open = true;
    b->stats.streams_opened++;
    req->cb(req, raft_end, 0);
}

static void on_data(struct bridge *b, struct stream *s, const struct frame *f)
{
    if (s->state != STREAM_OPEN) {
        protocol_error(b, s->peer, "DATA before OPENED");
        stream_fail_connect(s, true, RAFT_NOCONNECTION);
        return;
    }
    if (get_u64(f->body) != s->rx_seq) {
        protocol_error(b, s->peer, "DATA out of sequence");
        stream_end(s, true);
        return;
    }
    size_t n = f->body_len - SEQ_SIZE;
    s->rx_seq++;
    b->stats.bytes_received += n;
    if (stream_write(s, (const char *)f->body + SEQ_SIZE, n) != SM_OK) {
        stream_end(s, true);
    }
}

/* A frame for a stream we do not have: answer CLOSE unless it is one. */
static void on_unknown(struct bridge *b,
                       const char *peer,
                       const struct frame *f)
{
    b->stats.unknown_stream++;
    if (f->kind != CONS_BRIDGE_CLOSE) {
        send_bare(b, peer, CONS_BRIDGE_CLOSE, !f->from_opener, f->stream_id);
    }
}

static void dispatch(struct bridge *b, const char *peer, const struct frame *f)
{
    if (f->kind == CONS_BRIDGE_OPEN) {
        on_open(b, peer, f);
        return;
    }
    /* The stream's opener is whoever did not send a frame marked as the
     * opener's. */
    struct stream *s = stream_find(b, peer, f->stream_id, !f->from_opener);
    if (s == NULL) {
        on_unknown(b, peer, f);
        return;
    }
    switch (f->kind) {
        case CONS_BRIDGE_OPENED:
            on_opened(b, s);
            break;
        case CONS_BRIDGE_DATA:
            on_data(b, s, f);
            break;
        case CONS_BRIDGE_CLOSE:
            if (s->state == STREAM_CONNECTING) {
                stream_fail_connect(s, false, RAFT_NOCONNECTION);
            } else {
                stream_end(s, false);
            }
            break;
        case CONS_BRIDGE_OPEN:
            break;
    }
}

void cons_bridge_recv(struct raft_uv_transport *t,
                      const char *from_peer,
                      const void *data,
                      size_t len)
{
    struct bridge *b = t != NULL ? t->impl : NULL;
    if (b == NULL || b->closed) {
        return;
    }
    b->stats.frames_received++;
    if (from_peer == NULL ||
        !cons_peer_id_valid(from_peer,
                            strnlen(from_peer, CONS_PEER_ID_MAX + 1)) ||
        strcmp(from_peer, b->self) == 0 || (data == NULL && len > 0)) {
        protocol_error(b, "?", "invalid sender");
        return;
    }
    struct frame f;
    if (!parse_header(data, len, &f)) {
        protocol_error(b, from_peer, "malformed header");
        return;
    }
    if (!body_valid(&f)) {
        protocol_error(b, from_peer, "malformed body");
        /* A damaged frame of a live stream leaves a hole in it. */
        struct stream *s =
            stream_find(b, from_peer, f.stream_id, !f.from_opener);
        if (s != NULL) {
            stream_fail_connect(s, true, RAFT_NOCONNECTION);
        }
        return;
    }
    dispatch(b, from_peer, &f);
}

/* ---- The raft_uv_transport interface --------------------------------- */

static int bridge_init(struct raft_uv_transport *t,
                       raft_id id,
                       const char *address)
{
    struct bridge *b = t->impl;
    char named[CONS_PEER_ID_MAX + 1];
    if (address == NULL || strlen(address) > CONS_RAFT_ADDR_MAX ||
        !address_peer(address, named) || strcmp(named, b->self) != 0 ||
        id != b->self_raft_id) {
        snprintf(t->errmsg, sizeof t->errmsg,
                 "raft server must be %s with id %llu", b->self,
                 (unsigned long long)b->self_raft_id);
        return RAFT_INVALID;
    }
    snprintf(b->self_addr, sizeof b->self_addr, "%s", address);
    return 0;
}

static int bridge_listen(struct raft_uv_transport *t, raft_uv_accept_cb cb)
{
    struct bridge *b = t->impl;
    b->accept_cb = cb;
    return 0;
}

static void on_connect_timeout(uv_timer_t *timer)
{
    struct stream *s = timer->data;
    s->b->stats.connect_timeouts++;
    /* CLOSE, in case our OPEN got through and only OPENED was lost. */
    stream_fail_connect(s, true, RAFT_NOCONNECTION);
}

static int bridge_connect(struct raft_uv_transport *t,
                          struct raft_uv_connect *req,
                          raft_id id,
                          const char *address,
                          raft_uv_connect_cb cb)
{
    struct bridge *b = t->impl;
    (void)id;
    if (b->closing) {
        return RAFT_CANCELED;
    }
    char peer[CONS_PEER_ID_MAX + 1];
    if (address == NULL || strlen(address) > CONS_RAFT_ADDR_MAX ||
        !address_peer(address, peer)) {
        snprintf(t->errmsg, sizeof t->errmsg, "invalid peer address");
        return RAFT_NOCONNECTION;
    }
    struct stream *s = stream_new(b, peer, b->next_stream_id++, true);
    if (s == NULL) {
        return RAFT_NOMEM;
    }
    uv_timer_init(b->loop, &s->timer);
    s->timer.data = s;
    s->timer_init = true;
    s->handles_open++;
    int rv = send_open(b, peer, s->id);
    if (rv != SM_OK) {
        snprintf(t->errmsg, sizeof t->errmsg, "send OPEN to %s: %s", address,
                 sm_errname(rv));
        stream_end(s, false);
        return RAFT_NOCONNECTION;
    }
    req->cb = cb;
    s->req = req;
    uv_timer_start(&s->timer, on_connect_timeout, b->connect_timeout_ms, 0);
    return 0;
}

static void on_close_marker_closed(uv_handle_t *handle)
{
    struct bridge *b = handle->data;
    b->close_handle = true;
    bridge_maybe_closed(b);
}

static void bridge_close(struct raft_uv_transport *t,
                         raft_uv_transport_close_cb cb)
{
    struct bridge *b = t->impl;
    SM_ASSERT(!b->closing);
    b->closing = true;
    b->accept_cb = NULL;
    b->close_cb = cb;
    while (b->head != NULL) {
        struct stream *s = b->head;
        if (s->state == STREAM_CONNECTING) {
            s->cancel_status = RAFT_CANCELED; /* answered once closed */
        }
        stream_end(s, true);
    }
    /* A handle of our own, so that the callback always comes from the
     * loop, after the streams' handles, never from inside this call. */
    uv_timer_init(b->loop, &b->close_marker);
    b->close_marker.data = b;
    uv_close((uv_handle_t *)&b->close_marker, on_close_marker_closed);
}

int cons_bridge_init(struct raft_uv_transport *t,
                     uv_loop_t *loop,
                     const struct cons_link *link,
                     const char *self_peer_id,
                     char *errmsg)
{
    if (t == NULL || loop == NULL || link == NULL || link->send == NULL ||
        self_peer_id == NULL ||
        !cons_peer_id_valid(self_peer_id,
                            strnlen(self_peer_id, CONS_PEER_ID_MAX + 1))) {
        sm_errmsg_printf(errmsg, "raft bridge: invalid argument");
        return SM_EINVAL;
    }
    struct bridge *b = sm_calloc(1, sizeof *b);
    if (b == NULL) {
        sm_errmsg_printf(errmsg, "raft bridge: out of memory");
        return SM_ENOMEM;
    }
    b->t = t;
    b->loop = loop;
    b->link = *link;
    strcpy(b->self, self_peer_id);
    b->self_raft_id = cons_peer_raft_id(self_peer_id);
    b->connect_timeout_ms = CONS_BRIDGE_CONNECT_TIMEOUT_MS;
    /* Ids start from the clock so that a restarted peer rarely reuses one
     * its peers still hold (OPEN replaces such a stream anyway). */
    b->next_stream_id = (uv_hrtime() << 16) | 1;
    memset(t, 0, sizeof *t);
    t->impl = b;
    t->init = bridge_init;
    t->listen = bridge_listen;
    t->connect = bridge_connect;
    t->close = bridge_close;
    return SM_OK;
}

void cons_bridge_set_connect_timeout(struct raft_uv_transport *t, unsigned ms)
{
    struct bridge *b = t->impl;
    b->connect_timeout_ms = ms != 0 ? ms : CONS_BRIDGE_CONNECT_TIMEOUT_MS;
}

void cons_bridge_stats(const struct raft_uv_transport *t,
                       struct cons_bridge_stats *out)
{
    const struct bridge *b = t->impl;
    *out = b->stats;
    out->streams_active = b->n_streams;
}

void cons_bridge_free(struct raft_uv_transport *t)
{
    if (t == NULL || t->impl == NULL) {
        return;
    }
    struct bridge *b = t->impl;
    SM_ASSERT(b->n_streams == 0);
    SM_ASSERT(!b->closing || b->closed);
    sm_free(b);
    t->impl = NULL;
}
