/* Zipkin v2 JSON span lists (POST /api/v2/spans) into span batches.
 *
 * The body is read into a JSON tree (node/json.h) in a scratch arena that
 * lives for the call, with the batch's byte limit; the strings that the
 * spans keep (service, instance, operation, peer) are copied into the
 * batch's own arena, so the tree can go when the call returns.
 *
 * Per span (zipkin2-api.yaml): traceId (16 or 32 hex digits; 16 are
 * left-padded), id, parentId (optional), kind CLIENT, SERVER, PRODUCER,
 * CONSUMER or absent (a local span: INTERNAL), name, timestamp and duration
 * in microseconds (a missing duration is 0; timestamp is required because
 * a span without one cannot be placed in a window), localEndpoint's
 * serviceName ("unknown_service" when missing or empty, as the OpenTelemetry
 * SDKs do) and tags, an object of string values, read through
 * node_span_attr() so that operations, peers and errors come out exactly as
 * for OTLP. Zipkin-specific on top of that:
 *
 * - Errors: any "error" tag marks an error, whatever its value (Zipkin puts
 *   the message there); otel.status_code=ERROR counts as for OTLP.
 * - Brave's "http.path" tag stands for http.target (lower priority than
 *   url.path), so that native Zipkin tracers get path operations too.
 * - The peer of a CLIENT span comes from the tags first (peer.service,
 *   server.address[:port], url.full's host), then remoteEndpoint.serviceName,
 *   then remoteEndpoint's ipv4 (or [ipv6]) and port as "ip:port".
 * - Shared spans. B3 tracers with shared span ids report both sides of an
 *   RPC under one id: the CLIENT span and a SERVER span marked
 *   "shared": true. The aggregator pairs a SERVER span with the CLIENT span
 *   whose id is the server's parent, so a shared SERVER span gets its own id
 *   as parent and, as its span id, that id with the top bit of its first
 *   byte flipped. The server side's own children keep the shared id as
 *   their parent (the CLIENT span); parent ids only pair SERVER spans with
 *   CLIENT spans, so this changes nothing that is measured.
 *
 * Errors are all or nothing: SM_EMALFORMED with "span N: reason" (N is the
 * index in the array, from 0), SM_ETOOBIG past the batch's arena limit, or
 * SM_ENOMEM. On any error @out holds a partial batch that the caller must
 * reset (node_spans_reset) without applying. Unknown fields are ignored. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "node/ingest.h"
#include "node/json.h"

struct zipkin
{
    struct node_spans *out;
    char *errmsg;
    size_t index;          /* of the span being read, for messages */
    const char *service;   /* the last service name copied, for reuse */
    const char *instance;  /* the same for instances */
    const char *remote;    /* remoteEndpoint.serviceName (scratch) or NULL */
    const char *remote_ip; /* its ipv4, else ipv6 (scratch) or NULL */
    const char *remote_port;
    int remote_v6;
};

static int bad(struct zipkin *z, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int bad(struct zipkin *z, const char *fmt, ...)
{
    char msg[SM_ERRMSG_SIZE];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    sm_errmsg_printf(z->errmsg, "span %zu: %s", z->index, msg);
    return SM_EMALFORMED;
}

/* The batch's arena refused @need bytes (or the heap failed). */
static int full(struct zipkin *z, size_t need)
{
    if (sm_arena_over_limit(&z->out->arena, need)) {
        sm_errmsg_printf(z->errmsg,
                         "span %zu: spans exceed the batch limit of %zu bytes",
                         z->index, z->out->arena.limit);
        return SM_ETOOBIG;
    }
    sm_errmsg_printf(z->errmsg, "out of memory");
    return SM_ENOMEM;
}

/* Copies @s into the batch, reusing *@last when equal. */
static int own(struct zipkin *z, const char **s, const char **last)
{
    if (*s == NULL) {
        return SM_OK;
    }
    if (last != NULL && *last != NULL && strcmp(*last, *s) == 0) {
        *s = *last;
        return SM_OK;
    }
    size_t n = strlen(*s);
    char *copy = sm_arena_strndup(&z->out->arena, *s, n);
    if (copy == NULL) {
        return full(z, n + 1);
    }
    *s = copy;
    if (last != NULL) {
        *last = copy;
    }
    return SM_OK;
}

/* A scalar as text: strings and numbers as written, booleans as
 * "true"/"false"; NULL for null, arrays and objects. */
static const char *scalar_text(const struct node_json *v)
{
    switch (v->type) {
        case NODE_JSON_STRING:
        case NODE_JSON_NUMBER:
            return v->str;
        case NODE_JSON_BOOL:
            return v->boolean ? "true" : "false";
        default:
            return NULL;
    }
}

static int read_id(struct zipkin *z,
                   const struct node_json *span,
                   const char *field,
                   uint8_t *out,
                   size_t n,
                   int required)
{
    const struct node_json *v = node_json_get(span, field);
    if (v == NULL || v->type == NODE_JSON_NULL ||
        (!required && v->type == NODE_JSON_STRING && v->len == 0)) {
        return required ? bad(z, "%s is missing", field) : SM_OK;
    }
    if (v->type != NODE_JSON_STRING ||
        node_decode_id(v->str, v->len, out, n) != SM_OK) {
        return bad(z, "%s is not %s hex digits", field,
                   n == 16 ? "16 or 32" : "16");
    }
    return SM_OK;
}

static int read_kind(struct zipkin *z,
                     const struct node_json *span,
                     struct cbn_span *s)
{
    static const struct
    {
        const char *name;
        enum cbn_span_kind kind;
    } kinds[] = {{"CLIENT", CBN_SPAN_CLIENT},
                 {"SERVER", CBN_SPAN_SERVER},
                 {"PRODUCER", CBN_SPAN_PRODUCER},
                 {"CONSUMER", CBN_SPAN_CONSUMER}};
    const struct node_json *v = node_json_get(span, "kind");
    s->kind = CBN_SPAN_INTERNAL;
    if (v == NULL || v->type == NODE_JSON_NULL) {
        return SM_OK;
    }
    for (size_t i = 0; v->type == NODE_JSON_STRING && i < 4; i++) {
        if (strcmp(v->str, kinds[i].name) == 0) {
            s->kind = kinds[i].kind;
            return SM_OK;
        }
    }
    return bad(z, "kind is not CLIENT, SERVER, PRODUCER or CONSUMER");
}

/* localEndpoint gives the service; remoteEndpoint is kept for the peer. */
static int read_endpoints(struct zipkin *z,
                          const struct node_json *span,
                          struct cbn_span *s)
{
    const struct node_json *local = node_json_get(span, "localEndpoint");
    const struct node_json *remote = node_json_get(span, "remoteEndpoint");
    if ((local != NULL && local->type != NODE_JSON_NULL &&
         local->type != NODE_JSON_OBJECT) ||
        (remote != NULL && remote->type != NODE_JSON_NULL &&
         remote->type != NODE_JSON_OBJECT)) {
        return bad(z, "an endpoint is not an object");
    }
    const char *service = node_json_str(node_json_get(local, "serviceName"));
    s->service =
        service != NULL && service[0] != '\0' ? service : "unknown_service";
    int rv = own(z, &s->service, &z->service);
    z->remote = node_json_str(node_json_get(remote, "serviceName"));
    z->remote_ip = node_json_str(node_json_get(remote, "ipv4"));
    z->remote_v6 = 0;
    if (z->remote_ip == NULL || z->remote_ip[0] == '\0') {
        z->remote_ip = node_json_str(node_json_get(remote, "ipv6"));
        z->remote_v6 = 1;
    }
    const struct node_json *port = node_json_get(remote, "port");
    z->remote_port = port != NULL && port->type == NODE_JSON_NUMBER
                         ? port->str
                         : node_json_str(port);
    return rv;
}

static void read_tags(const struct node_json *span, struct node_span_attrs *a)
{
    const struct node_json *tags = node_json_get(span, "tags");
    if (tags == NULL || tags->type != NODE_JSON_OBJECT) {
        return;
    }
    for (size_t i = 0; i < tags->n; i++) {
        const char *key = tags->keys[i];
        const char *value = scalar_text(&tags->items[i]);
        if (value == NULL) {
            continue;
        }
        if (strcmp(key, "error") == 0) {
            a->error = 1; /* Zipkin: the tag's presence is the error */
        }
        node_span_attr(a, strcmp(key, "http.path") == 0 ? "http.target" : key,
                       value);
    }
}

/* The peer of a CLIENT span that its tags did not name: the remote
 * endpoint's service, else its "ip:port". */
static int remote_peer(struct zipkin *z, struct cbn_span *s)
{
    if (z->remote != NULL && z->remote[0] != '\0') {
        s->peer = z->remote;
        return own(z, &s->peer, NULL);
    }
    if (z->remote_ip == NULL || z->remote_ip[0] == '\0') {
        return SM_OK;
    }
    const char *port = z->remote_port;
    int with_port = port != NULL && port[0] != '\0';
    size_t n = strlen(z->remote_ip) + (with_port ? strlen(port) : 0) + 4;
    char *buf = sm_arena_alloc(&z->out->arena, n);
    if (buf == NULL) {
        return full(z, n);
    }
    if (!with_port) {
        snprintf(buf, n, "%s", z->remote_ip);
    } else {
        snprintf(buf, n, z->remote_v6 ? "[%s]:%s" : "%s:%s", z->remote_ip,
                 port);
    }
    s->peer = buf;
    return SM_OK;
}

/* Copies the attributes a span keeps (or that node_span_finish may keep)
 * from the scratch tree into the batch. */
static int own_attrs(struct zipkin *z, struct node_span_attrs *a)
{
    const char **fields[] = {
        &a->http_route,   &a->url_path,       &a->rpc_service, &a->rpc_method,
        &a->peer_service, &a->server_address, &a->server_port, &a->url_full};
    int rv = own(z, &a->instance, &z->instance);
    for (size_t i = 0; rv == SM_OK && i < sizeof fields / sizeof fields[0];
         i++) {
        rv = own(z, fields[i], NULL);
    }
    return rv;
}

static int read_span(struct zipkin *z, const struct node_json *span)
{
    if (span->type != NODE_JSON_OBJECT) {
        return bad(z, "not an object");
    }
    struct cbn_span *s = node_spans_add(z->out);
    if (s == NULL) {
        sm_errmsg_printf(z->errmsg, "out of memory");
        return SM_ENOMEM;
    }
    int rv = read_id(z, span, "traceId", s->trace_id, 16, 1);
    if (rv == SM_OK) {
        rv = read_id(z, span, "id", s->span_id, 8, 1);
    }
    if (rv == SM_OK) {
        rv = read_id(z, span, "parentId", s->parent_id, 8, 0);
    }
    if (rv == SM_OK) {
        rv = read_kind(z, span, s);
    }
    if (rv == SM_OK) {
        char why[SM_ERRMSG_SIZE];
        rv = node_span_read_us(s, span, "timestamp", why) == SM_OK
                 ? SM_OK
                 : bad(z, "%s", why);
    }
    if (rv == SM_OK) {
        rv = read_endpoints(z, span, s);
    }
    if (rv != SM_OK) {
        return rv;
    }
    const struct node_json *shared = node_json_get(span, "shared");
    if (s->kind == CBN_SPAN_SERVER && shared != NULL &&
        shared->type == NODE_JSON_BOOL && shared->boolean) {
        memcpy(s->parent_id, s->span_id, 8);
        s->span_id[0] ^= 0x80;
    }
    struct node_span_attrs a = {0};
    read_tags(span, &a);
    const char *name = node_json_str(node_json_get(span, "name"));
    rv = own_attrs(z, &a);
    if (rv == SM_OK) {
        rv = own(z, &name, NULL);
    }
    if (rv != SM_OK) {
        return rv;
    }
    if (node_span_finish(s, &a, name != NULL ? name : "", &z->out->arena) !=
        SM_OK) {
        /* Its copies are no longer than the attributes it read. */
        size_t need = 64;
        const char *texts[] = {a.url_path,       a.rpc_service, a.rpc_method,
                               a.server_address, a.server_port, a.url_full};
        for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
            need += texts[i] != NULL ? strlen(texts[i]) : 0;
        }
        return full(z, need);
    }
    if (s->kind == CBN_SPAN_CLIENT && s->peer[0] == '\0') {
        rv = remote_peer(z, s);
    }
    return rv;
}

int node_zipkin_spans(const uint8_t *body,
                      size_t len,
                      struct node_spans *out,
                      char errmsg[SM_ERRMSG_SIZE])
{
    struct sm_arena scratch;
    sm_arena_init(&scratch, out->arena.limit);
    const struct node_json *root = NULL;
    int rv = node_json_parse(body, len, &scratch, &root, errmsg);
    /* node_json_parse() tells its limit from the heap with a small probe,
     * which misses a refused block of many items; such a block holds at
     * most one value per two bytes of input. */
    if (rv == SM_ENOMEM &&
        sm_arena_over_limit(&scratch, (len / 2 + 1) * sizeof *root)) {
        rv = SM_ETOOBIG;
    }
    if (rv == SM_ETOOBIG) {
        sm_errmsg_printf(errmsg, "spans exceed the batch limit of %zu bytes",
                         out->arena.limit);
    } else if (rv == SM_ENOMEM) {
        sm_errmsg_printf(errmsg, "out of memory");
    } else if (rv == SM_OK && root->type != NODE_JSON_ARRAY) {
        sm_errmsg_printf(errmsg, "expected a JSON array of Zipkin v2 spans");
        rv = SM_EMALFORMED;
    }
    struct zipkin z = {.out = out, .errmsg = errmsg};
    for (size_t i = 0; rv == SM_OK && i < root->n; i++) {
        z.index = i;
        rv = read_span(&z, &root->items[i]);
    }
    sm_arena_free(&scratch);
    return rv;
}
