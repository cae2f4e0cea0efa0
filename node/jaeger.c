/* Jaeger query API JSON (GET /api/traces, `sagemesh import --jaeger`) into
 * span batches.
 *
 * Accepted shapes: the API response {"data":[trace...], ...} ("data": null
 * is no traces), a bare array of traces, and a single trace object (the
 * UI's export variants). A trace is {"traceID", "spans":[...],
 * "processes":{"p1":{"serviceName", "tags"}}}; the order of its members
 * does not matter.
 *
 * The body is read into a JSON tree (node/json.h) in a scratch arena that
 * lives for the call, with the batch's byte limit; the strings that the
 * spans keep are copied into the batch's own arena.
 *
 * Per span (jaeger model/json/model.go): traceID (else the trace's) and
 * spanID, hex, short ids left-padded ("2"); the parent is the first
 * CHILD_OF reference in the same trace (FOLLOWS_FROM is ignored; the
 * deprecated parentSpanID field is read when there is no such reference;
 * none: a root span); startTime and duration in microseconds (a missing
 * duration is 0); operationName is the span name, from which
 * node_span_finish() still derives the operation by the tags (http.route,
 * url.path, ...) as for OTLP and Zipkin; the service is
 * processes[processID].serviceName (or an embedded "process" object),
 * "unknown_service" when missing or empty; the instance is the process tag
 * service.instance.id, else "hostname" (Jaeger clients), unless the span's
 * own tags name one. Tags are typed {key, type, value}; values are read by
 * their JSON type (strings as they are, numbers as written, booleans as
 * "true"/"false"), so that node_span_attr() sees the same text as from
 * OTLP. The kind comes from the tag span.kind (client, server, producer,
 * consumer, internal; absent or unknown: unspecified), the error from the
 * tags error=true or otel.status_code=ERROR.
 *
 * Errors are all or nothing: SM_EMALFORMED with "trace T, span S: reason"
 * (indices from 0), SM_ETOOBIG past the batch's arena limit, or SM_ENOMEM.
 * On any error @out holds a partial batch that the caller must reset
 * (node_spans_reset) without applying. Unknown fields are ignored. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "node/ingest.h"
#include "node/json.h"

/* A process of the trace being read, with its strings in the batch. */
struct process
{
    const char *key; /* processID (scratch) */
    size_t order;    /* position in "processes": the last of equal keys wins */
    const char *service;
    const char *instance; /* NULL when the process names none */
};

struct jaeger
{
    struct node_spans *out;
    struct sm_arena *scratch;
    char *errmsg;
    size_t trace, span; /* indices, for messages */
    int in_span;
    struct process *procs; /* of the current trace, sorted by key */
    size_t n_procs;
    const char *service; /* the last strings copied, for reuse */
    const char *instance;
};

static int bad(struct jaeger *j, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int bad(struct jaeger *j, const char *fmt, ...)
{
    char msg[SM_ERRMSG_SIZE];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (j->in_span) {
        sm_errmsg_printf(j->errmsg, "trace %zu, span %zu: %s", j->trace,
                         j->span, msg);
    } else {
        sm_errmsg_printf(j->errmsg, "trace %zu: %s", j->trace, msg);
    }
    return SM_EMALFORMED;
}

/* An arena refused @need bytes (or the heap failed). */
static int full(struct jaeger *j, const struct sm_arena *arena, size_t need)
{
    if (sm_arena_over_limit(arena, need)) {
        sm_errmsg_printf(j->errmsg,
                         "trace %zu: spans exceed the batch limit of %zu "
                         "bytes",
                         j->trace, j->out->arena.limit);
        return SM_ETOOBIG;
    }
    sm_errmsg_printf(j->errmsg, "out of memory");
    return SM_ENOMEM;
}

/* Copies @s into the batch, reusing *@last when equal. */
static int own(struct jaeger *j, const char **s, const char **last)
{
    if (*s == NULL) {
        return SM_OK;
    }
    if (last != NULL && *last != NULL && strcmp(*last, *s) == 0) {
        *s = *last;
        return SM_OK;
    }
    size_t n = strlen(*s);
    char *copy = sm_arena_strndup(&j->out->arena, *s, n);
    if (copy == NULL) {
        return full(j, &j->out->arena, n + 1);
    }
    *s = copy;
    if (last != NULL) {
        *last = copy;
    }
    return SM_OK;
}

/* A tag's value as text: strings and numbers as written, booleans as
 * "true"/"false"; NULL for null, arrays and objects. */
static const char *tag_text(const struct node_json *tag)
{
    const struct node_json *v = node_json_get(tag, "value");
    if (v == NULL) {
        return NULL;
    }
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

/* Tags are [{key, type, value}]: calls @fn for each with a string key and
 * a scalar value. Anything else in the array is ignored. */
static void each_tag(const struct node_json *tags,
                     void (*fn)(void *arg, const char *key, const char *value),
                     void *arg)
{
    if (tags == NULL || tags->type != NODE_JSON_ARRAY) {
        return;
    }
    for (size_t i = 0; i < tags->n; i++) {
        const char *key = node_json_str(node_json_get(&tags->items[i], "key"));
        const char *value = tag_text(&tags->items[i]);
        if (key != NULL && value != NULL) {
            fn(arg, key, value);
        }
    }
}

static void process_tag(void *arg, const char *key, const char *value)
{
    struct process *p = arg;
    if (strcmp(key, "service.instance.id") == 0 ||
        (strcmp(key, "hostname") == 0 && p->instance == NULL)) {
        p->instance = value;
    }
}

/* Fills @p from a process object (service and instance copied). */
static int read_process(struct jaeger *j,
                        const struct node_json *obj,
                        struct process *p)
{
    if (obj->type != NODE_JSON_OBJECT) {
        return bad(j, "process \"%.32s\" is not an object",
                   p->key != NULL ? p->key : "");
    }
    const char *service = node_json_str(node_json_get(obj, "serviceName"));
    p->service =
        service != NULL && service[0] != '\0' ? service : "unknown_service";
    p->instance = NULL;
    each_tag(node_json_get(obj, "tags"), process_tag, p);
    int rv = own(j, &p->service, &j->service);
    if (rv == SM_OK) {
        rv = own(j, &p->instance, &j->instance);
    }
    return rv;
}

static int process_cmp(const void *a, const void *b)
{
    const struct process *x = a, *y = b;
    int c = strcmp(x->key, y->key);
    return c != 0 ? c : (x->order < y->order ? -1 : x->order > y->order);
}

/* Reads the trace's "processes" into j->procs, sorted for lookup. */
static int read_processes(struct jaeger *j, const struct node_json *trace)
{
    const struct node_json *procs = node_json_get(trace, "processes");
    j->procs = NULL;
    j->n_procs = 0;
    if (procs == NULL || procs->type == NODE_JSON_NULL) {
        return SM_OK;
    }
    if (procs->type != NODE_JSON_OBJECT) {
        return bad(j, "processes is not an object");
    }
    if (procs->n == 0) {
        return SM_OK;
    }
    j->procs = sm_arena_alloc(j->scratch, procs->n * sizeof *j->procs);
    if (j->procs == NULL) {
        return full(j, j->scratch, procs->n * sizeof *j->procs);
    }
    for (size_t i = 0; i < procs->n; i++) {
        struct process *p = &j->procs[i];
        p->key = procs->keys[i];
        p->order = i;
        int rv = read_process(j, &procs->items[i], p);
        if (rv != SM_OK) {
            return rv;
        }
    }
    j->n_procs = procs->n;
    qsort(j->procs, j->n_procs, sizeof *j->procs, process_cmp);
    return SM_OK;
}

/* The process called @key (the last one listed if repeated), or NULL. */
static const struct process *find_process(const struct jaeger *j,
                                          const char *key)
{
    size_t lo = 0, hi = j->n_procs;
    while (lo < hi) { /* the first entry with a key > @key */
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(j->procs[mid].key, key) <= 0) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo > 0 && strcmp(j->procs[lo - 1].key, key) == 0 ? &j->procs[lo - 1]
                                                            : NULL;
}

static int read_id(struct jaeger *j,
                   const struct node_json *v,
                   const char *what,
                   uint8_t *out,
                   size_t n)
{
    if (v == NULL || v->type == NODE_JSON_NULL) {
        return bad(j, "%s is missing", what);
    }
    if (v->type != NODE_JSON_STRING ||
        node_decode_id(v->str, v->len, out, n) != SM_OK) {
        return bad(j, "%s is not a hex id of up to %zu digits", what, 2 * n);
    }
    return SM_OK;
}

/* The parent: the first CHILD_OF reference in the span's own trace. */
static int read_parent(struct jaeger *j,
                       const struct node_json *span,
                       struct cbn_span *s)
{
    const struct node_json *refs = node_json_get(span, "references");
    if (refs != NULL && refs->type != NODE_JSON_NULL &&
        refs->type != NODE_JSON_ARRAY) {
        return bad(j, "references is not an array");
    }
    for (size_t i = 0; refs != NULL && i < refs->n; i++) {
        const struct node_json *ref = &refs->items[i];
        const char *type = node_json_str(node_json_get(ref, "refType"));
        if (type == NULL || strcmp(type, "CHILD_OF") != 0) {
            continue;
        }
        const struct node_json *trace = node_json_get(ref, "traceID");
        if (trace != NULL && trace->type != NODE_JSON_NULL) {
            uint8_t id[16];
            int rv = read_id(j, trace, "references[].traceID", id, 16);
            if (rv != SM_OK) {
                return rv;
            }
            if (memcmp(id, s->trace_id, 16) != 0) {
                continue; /* a link into another trace */
            }
        }
        return read_id(j, node_json_get(ref, "spanID"), "references[].spanID",
                       s->parent_id, 8);
    }
    const struct node_json *legacy = node_json_get(span, "parentSpanID");
    if (legacy != NULL && legacy->type == NODE_JSON_STRING && legacy->len > 0) {
        return read_id(j, legacy, "parentSpanID", s->parent_id, 8);
    }
    return SM_OK;
}

struct span_tags
{
    struct cbn_span *s;
    struct node_span_attrs a;
};

static void span_tag(void *arg, const char *key, const char *value)
{
    static const struct
    {
        const char *name;
        enum cbn_span_kind kind;
    } kinds[] = {{"client", CBN_SPAN_CLIENT},
                 {"server", CBN_SPAN_SERVER},
                 {"producer", CBN_SPAN_PRODUCER},
                 {"consumer", CBN_SPAN_CONSUMER},
                 {"internal", CBN_SPAN_INTERNAL}};
    struct span_tags *t = arg;
    if (strcmp(key, "span.kind") == 0) {
        t->s->kind = CBN_SPAN_UNSPECIFIED;
        for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
            if (strcmp(value, kinds[i].name) == 0) {
                t->s->kind = kinds[i].kind;
            }
        }
        return;
    }
    node_span_attr(&t->a, key, value);
}

/* Copies the attributes a span keeps (or that node_span_finish may keep)
 * from the scratch tree into the batch. */
static int own_attrs(struct jaeger *j, struct node_span_attrs *a)
{
    const char **fields[] = {
        &a->http_route,   &a->url_path,       &a->rpc_service, &a->rpc_method,
        &a->peer_service, &a->server_address, &a->server_port, &a->url_full};
    int rv = own(j, &a->instance, &j->instance);
    for (size_t i = 0; rv == SM_OK && i < sizeof fields / sizeof fields[0];
         i++) {
        rv = own(j, fields[i], NULL);
    }
    return rv;
}

/* The span's process: processID in the trace's table, else an embedded
 * "process" object, else none. */
static int span_process(struct jaeger *j,
                        const struct node_json *span,
                        struct process *p)
{
    const struct node_json *pid = node_json_get(span, "processID");
    if (pid != NULL && pid->type == NODE_JSON_STRING) {
        const struct process *found = find_process(j, pid->str);
        if (found == NULL) {
            return bad(j, "processID \"%.32s\" is not in processes", pid->str);
        }
        *p = *found;
        return SM_OK;
    }
    const struct node_json *embedded = node_json_get(span, "process");
    if (embedded != NULL && embedded->type != NODE_JSON_NULL) {
        p->key = NULL;
        return read_process(j, embedded, p);
    }
    p->service = "unknown_service";
    p->instance = NULL;
    return SM_OK;
}

static int read_span(struct jaeger *j,
                     const struct node_json *span,
                     const struct node_json *trace_id)
{
    if (span->type != NODE_JSON_OBJECT) {
        return bad(j, "not an object");
    }
    struct cbn_span *s = node_spans_add(j->out);
    if (s == NULL) {
        sm_errmsg_printf(j->errmsg, "out of memory");
        return SM_ENOMEM;
    }
    const struct node_json *tid = node_json_get(span, "traceID");
    int rv =
        read_id(j, tid != NULL && tid->type != NODE_JSON_NULL ? tid : trace_id,
                "traceID", s->trace_id, 16);
    if (rv == SM_OK) {
        rv = read_id(j, node_json_get(span, "spanID"), "spanID", s->span_id, 8);
    }
    if (rv == SM_OK) {
        rv = read_parent(j, span, s);
    }
    if (rv == SM_OK) {
        char why[SM_ERRMSG_SIZE];
        rv = node_span_read_us(s, span, "startTime", why) == SM_OK
                 ? SM_OK
                 : bad(j, "%s", why);
    }
    struct process p = {0};
    if (rv == SM_OK) {
        rv = span_process(j, span, &p);
    }
    if (rv != SM_OK) {
        return rv;
    }
    struct span_tags t = {.s = s};
    each_tag(node_json_get(span, "tags"), span_tag, &t);
    const char *name = node_json_str(node_json_get(span, "operationName"));
    rv = own_attrs(j, &t.a);
    if (rv == SM_OK) {
        rv = own(j, &name, NULL);
    }
    if (rv != SM_OK) {
        return rv;
    }
    if (t.a.instance == NULL) {
        t.a.instance = p.instance; /* already in the batch */
    }
    s->service = p.service;
    if (node_span_finish(s, &t.a, name != NULL ? name : "", &j->out->arena) !=
        SM_OK) {
        /* Its copies are no longer than the attributes it read. */
        size_t need = 64;
        const char *texts[] = {t.a.url_path,    t.a.rpc_service,
                               t.a.rpc_method,  t.a.server_address,
                               t.a.server_port, t.a.url_full};
        for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
            need += texts[i] != NULL ? strlen(texts[i]) : 0;
        }
        return full(j, &j->out->arena, need);
    }
    return SM_OK;
}

static int read_trace(struct jaeger *j, const struct node_json *trace)
{
    j->in_span = 0;
    if (trace->type != NODE_JSON_OBJECT) {
        return bad(j, "not an object");
    }
    const struct node_json *spans = node_json_get(trace, "spans");
    if (spans == NULL || spans->type != NODE_JSON_ARRAY) {
        return bad(j, "spans is not an array");
    }
    int rv = read_processes(j, trace);
    const struct node_json *trace_id = node_json_get(trace, "traceID");
    for (size_t i = 0; rv == SM_OK && i < spans->n; i++) {
        j->span = i;
        j->in_span = 1;
        rv = read_span(j, &spans->items[i], trace_id);
    }
    return rv;
}

int node_jaeger_traces(const uint8_t *body,
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
    }
    /* The traces: {"data": [...]}, [...], or one trace. */
    const struct node_json *traces = NULL, *data = NULL;
    size_t n = 0;
    if (rv == SM_OK && root->type == NODE_JSON_ARRAY) {
        traces = root->items;
        n = root->n;
    } else if (rv == SM_OK && (data = node_json_get(root, "data")) != NULL) {
        if (data->type == NODE_JSON_ARRAY) {
            traces = data->items;
            n = data->n;
        } else if (data->type != NODE_JSON_NULL) {
            sm_errmsg_printf(errmsg, "data is not an array of traces");
            rv = SM_EMALFORMED;
        }
    } else if (rv == SM_OK && node_json_get(root, "spans") != NULL) {
        traces = root;
        n = 1;
    } else if (rv == SM_OK) {
        sm_errmsg_printf(errmsg,
                         "expected {\"data\":[traces]}, an array of traces "
                         "or a trace object");
        rv = SM_EMALFORMED;
    }
    struct jaeger j = {.out = out, .scratch = &scratch, .errmsg = errmsg};
    for (size_t i = 0; rv == SM_OK && i < n; i++) {
        j.trace = i;
        rv = read_trace(&j, &traces[i]);
    }
    sm_arena_free(&scratch);
    return rv;
}
