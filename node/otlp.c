/* OTLP/HTTP JSON: traces by yajl events (the hot path), metrics by tree.
 *
 * Traces. The request is read in one pass of yajl events with a stack of
 * frames that says where each event is (a span, an attribute's value, ...).
 * JSON objects are unordered, so nothing is final until its object closes:
 * a span is completed when its object ends (ids checked, operation and peer
 * named), and it gets its service when its ResourceSpans object ends,
 * whichever order resource and scopeSpans came in. Only the attributes the
 * model uses are copied; everything unknown is skipped without allocation.
 *
 * Metrics build a JSON tree (node/json.h) and walk it: the volume of metric
 * points is far below that of spans.
 *
 * Both refuse what the protobuf JSON mapping refuses where it matters to
 * the data: a structural field of the wrong JSON type (resourceSpans a
 * string, a span an array, ...) is malformed, not skipped, since skipping it
 * would answer 200 for spans that were dropped; null stands for "absent".
 * And the body must be UTF-8 (RFC 8259): yajl checks only the shape of
 * multi-byte sequences, so overlong forms, surrogates and code points past
 * U+10FFFF are caught here, before they reach names that the peer writes
 * back into JSON. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_parse.h>

#include "base/alloc.h"
#include "node/ingest.h"
#include "node/json.h"

#define MAX_DEPTH 64

enum frame {
    F_ROOT,
    F_RS_ARRAY,   /* resourceSpans */
    F_RS,         /* one ResourceSpans */
    F_RESOURCE,   /* its resource */
    F_ATTR_ARRAY, /* attributes of a resource or a span */
    F_KV,         /* {key, value} */
    F_VALUE,      /* AnyValue */
    F_SS_ARRAY,   /* scopeSpans (or the old instrumentationLibrarySpans) */
    F_SS,
    F_SPAN_ARRAY, /* spans */
    F_SPAN,
    F_STATUS,
    F_SKIP, /* a subtree we do not read */
};

/* The object keys the parser acts on, recognised once per key event. */
enum key_id {
    K_OTHER,
    K_RESOURCE_SPANS,
    K_RESOURCE,
    K_ATTRIBUTES,
    K_SCOPE_SPANS, /* and the old instrumentationLibrarySpans */
    K_SPANS,
    K_TRACE_ID,
    K_SPAN_ID,
    K_PARENT_SPAN_ID,
    K_START,
    K_END,
    K_NAME,
    K_KIND,
    K_STATUS,
    K_CODE,
    K_KEY,
    K_VALUE,
    K_SCALAR_VALUE, /* stringValue, intValue, boolValue, doubleValue */
};

/* Recognises a key by its length first, then its bytes; memcmp with a
 * constant size compiles to a few compares. This runs for every key of
 * every span, so it is kept branch-light. */
static enum key_id lookup_key(const unsigned char *s, size_t n)
{
#define IS(lit) (memcmp(s, lit, sizeof lit - 1) == 0)
    switch (n) {
        case 3:
            return IS("key") ? K_KEY : K_OTHER;
        case 4:
            return IS("name")   ? K_NAME
                   : IS("kind") ? K_KIND
                   : IS("code") ? K_CODE
                                : K_OTHER;
        case 5:
            return IS("spans") ? K_SPANS : IS("value") ? K_VALUE : K_OTHER;
        case 6:
            return IS("spanId") ? K_SPAN_ID : IS("status") ? K_STATUS : K_OTHER;
        case 7:
            return IS("traceId") ? K_TRACE_ID : K_OTHER;
        case 8:
            return IS("resource")   ? K_RESOURCE
                   : IS("intValue") ? K_SCALAR_VALUE
                                    : K_OTHER;
        case 9:
            return IS("boolValue") ? K_SCALAR_VALUE : K_OTHER;
        case 10:
            return IS("attributes")   ? K_ATTRIBUTES
                   : IS("scopeSpans") ? K_SCOPE_SPANS
                                      : K_OTHER;
        case 11:
            return IS("stringValue") || IS("doubleValue") ? K_SCALAR_VALUE
                                                          : K_OTHER;
        case 12:
            return IS("parentSpanId") ? K_PARENT_SPAN_ID : K_OTHER;
        case 13:
            return IS("resourceSpans") ? K_RESOURCE_SPANS : K_OTHER;
        case 15:
            return IS("endTimeUnixNano") ? K_END : K_OTHER;
        case 17:
            return IS("startTimeUnixNano") ? K_START : K_OTHER;
        case 27:
            return IS("instrumentationLibrarySpans") ? K_SCOPE_SPANS : K_OTHER;
        default:
            return K_OTHER;
    }
#undef IS
}

/* A growable scratch string (heap; reused across events). */
struct text
{
    char *s;
    size_t len, cap;
    int set;
};

struct parse
{
    struct node_spans *out;
    char *errmsg;
    int error; /* SM_ code once something failed */
    enum frame stack[MAX_DEPTH];
    int depth;
    enum key_id key; /* the current object key */
    /* Where we are, for messages. */
    size_t rs_index, ss_index, span_index;
    /* The ResourceSpans being read. */
    size_t rs_first_span; /* its first span in out */
    const char *service, *instance;
    /* The attribute being read, and whose it is. */
    int attr_of_span;
    int kv_wanted; /* the attribute's key is one the model reads */
    struct text kv_key, kv_value;
    /* The span being read. */
    struct cbn_span *span;
    struct node_span_attrs attrs;
    const char *name;
    int has_trace, has_id, has_start, has_end;
    int root_is_object;
};

static int stop(struct parse *p, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int stop(struct parse *p, int code, const char *fmt, ...)
{
    if (p->error == 0) {
        p->error = code;
        if (fmt != NULL) {
            char msg[SM_ERRMSG_SIZE];
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(msg, sizeof msg, fmt, ap);
            va_end(ap);
            sm_errmsg_printf(
                p->errmsg, "resourceSpans[%zu].scopeSpans[%zu].spans[%zu]: %s",
                p->rs_index, p->ss_index, p->span_index, msg);
        }
    }
    return 0;
}

static int no_memory(struct parse *p)
{
    return stop(
        p, sm_arena_over_limit(&p->out->arena, 256) ? SM_ETOOBIG : SM_ENOMEM,
        NULL);
}

static int text_set(struct parse *p, struct text *t, const void *s, size_t n)
{
    if (n + 1 > t->cap) {
        size_t cap = n + 1 < 256 ? 256 : n + 1;
        char *grown = sm_realloc(t->s, cap);
        if (grown == NULL) {
            return stop(p, SM_ENOMEM, NULL);
        }
        t->s = grown;
        t->cap = cap;
    }
    memcpy(t->s, s, n);
    t->s[n] = '\0';
    t->len = n;
    t->set = 1;
    return 1;
}

static int key_is(const struct parse *p, enum key_id k)
{
    return p->key == k;
}

static enum frame top(const struct parse *p)
{
    return p->depth > 0 ? p->stack[p->depth - 1] : F_ROOT;
}

static int push(struct parse *p, enum frame f)
{
    if (p->depth == MAX_DEPTH) {
        return stop(p, SM_EMALFORMED, "nested deeper than %d levels",
                    MAX_DEPTH);
    }
    p->stack[p->depth++] = f;
    p->key = K_OTHER;
    return 1;
}

/* Attribute keys the model reads: resource identity, and what
 * node_span_attr() understands. */
static int wanted_span_key(const char *k)
{
#define KEY(s)          \
    {                   \
        s, sizeof s - 1 \
    }
    static const struct
    {
        const char *name;
        size_t len;
    } keys[] = {
        KEY("http.route"),
        KEY("url.path"),
        KEY("http.target"),
        KEY("rpc.service"),
        KEY("rpc.method"),
        KEY("peer.service"),
        KEY("server.address"),
        KEY("net.peer.name"),
        KEY("server.port"),
        KEY("net.peer.port"),
        KEY("url.full"),
        KEY("http.url"),
        KEY("error"),
        KEY("otel.status_code"),
        KEY("http.response.status_code"),
        KEY("http.status_code"),
    };
#undef KEY
    size_t n = strlen(k);
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        if (keys[i].len == n && keys[i].name[0] == k[0] &&
            memcmp(keys[i].name, k, n) == 0) {
            return 1;
        }
    }
    return 0;
}

static int wanted_resource_key(const char *k)
{
    return strcmp(k, "service.name") == 0 ||
           strcmp(k, "service.instance.id") == 0;
}

static const char *arena_copy(struct parse *p, const struct text *t)
{
    return sm_arena_strndup(&p->out->arena, t->s, t->len);
}

/* A {key, value} closed: keep it if the model reads it. */
static int end_kv(struct parse *p)
{
    if (!p->kv_key.set || !p->kv_value.set) {
        return 1; /* an attribute without a scalar value: ignored */
    }
    const char *k = p->kv_key.s;
    if (!p->attr_of_span) {
        const char **slot = strcmp(k, "service.name") == 0 ? &p->service
                            : strcmp(k, "service.instance.id") == 0
                                ? &p->instance
                                : NULL;
        if (slot != NULL && (*slot = arena_copy(p, &p->kv_value)) == NULL) {
            return no_memory(p);
        }
        return 1;
    }
    if (p->kv_wanted) {
        const char *kc = arena_copy(p, &p->kv_key);
        const char *vc = arena_copy(p, &p->kv_value);
        if (kc == NULL || vc == NULL) {
            return no_memory(p);
        }
        node_span_attr(&p->attrs, kc, vc);
    }
    return 1;
}

static int begin_span(struct parse *p)
{
    p->span = node_spans_add(p->out);
    if (p->span == NULL) {
        return stop(p, SM_ENOMEM, NULL);
    }
    memset(&p->attrs, 0, sizeof p->attrs);
    p->name = NULL;
    p->has_trace = p->has_id = p->has_start = p->has_end = 0;
    return 1;
}

static int end_span(struct parse *p)
{
    struct cbn_span *s = p->span;
    if (!p->has_trace || !p->has_id) {
        return stop(p, SM_EMALFORMED, "traceId and spanId are required");
    }
    if (!p->has_start || !p->has_end) {
        return stop(p, SM_EMALFORMED,
                    "startTimeUnixNano and endTimeUnixNano are required");
    }
    if (s->end_ns < s->start_ns) {
        return stop(p, SM_EMALFORMED, "ends before it starts");
    }
    if (node_span_finish(s, &p->attrs, p->name != NULL ? p->name : "",
                         &p->out->arena) != SM_OK) {
        return no_memory(p);
    }
    p->span = NULL;
    p->span_index++;
    return 1;
}

/* A ResourceSpans closed: its spans get the service. */
static void end_resource_spans(struct parse *p)
{
    const char *service =
        p->service != NULL && p->service[0] ? p->service : "unknown_service";
    for (size_t i = p->rs_first_span; i < p->out->n; i++) {
        p->out->v[i].service = service;
        if (p->out->v[i].instance == NULL || p->out->v[i].instance[0] == '\0') {
            p->out->v[i].instance = p->instance != NULL ? p->instance : "";
        }
    }
}

/* ---- Scalars inside a span ------------------------------------------------
 */

static int span_scalar(struct parse *p, const char *s, size_t n, int is_string)
{
    struct cbn_span *span = p->span;
    if (key_is(p, K_TRACE_ID)) {
        if (!is_string || node_decode_id(s, n, span->trace_id, 16) != SM_OK) {
            return stop(p, SM_EMALFORMED, "traceId is not 32 hex digits");
        }
        p->has_trace = 1;
    } else if (key_is(p, K_SPAN_ID)) {
        if (!is_string || node_decode_id(s, n, span->span_id, 8) != SM_OK) {
            return stop(p, SM_EMALFORMED, "spanId is not 16 hex digits");
        }
        p->has_id = 1;
    } else if (key_is(p, K_PARENT_SPAN_ID)) {
        if (!is_string ||
            (n > 0 && node_decode_id(s, n, span->parent_id, 8) != SM_OK)) {
            return stop(p, SM_EMALFORMED, "parentSpanId is not 16 hex digits");
        }
    } else if (key_is(p, K_START) || key_is(p, K_END)) {
        int start = key_is(p, K_START);
        if (node_parse_u64(s, n, start ? &span->start_ns : &span->end_ns) !=
            SM_OK) {
            return stop(p, SM_EMALFORMED, "%s is not a 64-bit integer",
                        start ? "startTimeUnixNano" : "endTimeUnixNano");
        }
        *(start ? &p->has_start : &p->has_end) = 1;
    } else if (key_is(p, K_NAME)) {
        if (is_string &&
            (p->name = sm_arena_strndup(&p->out->arena, s, n)) == NULL) {
            return no_memory(p);
        }
    } else if (key_is(p, K_KIND)) {
        static const char *const names[] = {
            "SPAN_KIND_UNSPECIFIED", "SPAN_KIND_INTERNAL",
            "SPAN_KIND_SERVER",      "SPAN_KIND_CLIENT",
            "SPAN_KIND_PRODUCER",    "SPAN_KIND_CONSUMER"};
        int kind = -1;
        if (!is_string && n == 1 && s[0] >= '0' && s[0] <= '5') {
            kind = s[0] - '0';
        }
        for (int k = 0; is_string && k < 6; k++) {
            if (strlen(names[k]) == n && memcmp(s, names[k], n) == 0) {
                kind = k;
            }
        }
        if (kind < 0) {
            return stop(p, SM_EMALFORMED, "kind must be 0 to 5");
        }
        span->kind = (enum cbn_span_kind)kind;
    }
    return 1;
}

/* ---- yajl callbacks
 * ---------------------------------------------------------- */

enum shape {
    S_ANY,
    S_OBJECT,
    S_ARRAY,
};

/* The JSON type the OTLP schema requires for the value that starts now
 * (of the current key, or an item of the current array), naming it in
 * @what; S_ANY where the parser does not depend on it. */
static enum shape required_shape(const struct parse *p, const char **what)
{
    switch (top(p)) {
        case F_ROOT:
            *what = "resourceSpans";
            return p->depth == 1 && key_is(p, K_RESOURCE_SPANS) ? S_ARRAY
                                                                : S_ANY;
        case F_RS_ARRAY:
            *what = "an item of resourceSpans";
            return S_OBJECT;
        case F_RS:
            *what = key_is(p, K_RESOURCE) ? "resource" : "scopeSpans";
            return key_is(p, K_RESOURCE)      ? S_OBJECT
                   : key_is(p, K_SCOPE_SPANS) ? S_ARRAY
                                              : S_ANY;
        case F_RESOURCE:
            *what = "attributes";
            return key_is(p, K_ATTRIBUTES) ? S_ARRAY : S_ANY;
        case F_ATTR_ARRAY:
            *what = "an attribute";
            return S_OBJECT;
        case F_KV:
            *what = "an attribute's value";
            return key_is(p, K_VALUE) ? S_OBJECT : S_ANY;
        case F_SS_ARRAY:
            *what = "an item of scopeSpans";
            return S_OBJECT;
        case F_SS:
            *what = "spans";
            return key_is(p, K_SPANS) ? S_ARRAY : S_ANY;
        case F_SPAN_ARRAY:
            *what = "a span";
            return S_OBJECT;
        case F_SPAN:
            *what = key_is(p, K_STATUS) ? "status" : "attributes";
            return key_is(p, K_STATUS)       ? S_OBJECT
                   : key_is(p, K_ATTRIBUTES) ? S_ARRAY
                                             : S_ANY;
        default:
            return S_ANY;
    }
}

/* Stops the parse when a value of JSON type @got (S_ANY: a scalar) cannot
 * stand where it starts; returns 1 when it can. */
static int shape_ok(struct parse *p, enum shape got)
{
    const char *what = "";
    enum shape want = required_shape(p, &what);
    if (want == S_ANY || want == got) {
        return 1;
    }
    return stop(p, SM_EMALFORMED, "%s must be %s", what,
                want == S_ARRAY ? "an array" : "an object");
}

static int scalar(void *ctx, const char *s, size_t n, int is_string)
{
    struct parse *p = ctx;
    if (!shape_ok(p, S_ANY)) {
        return 0;
    }
    switch (top(p)) {
        case F_SPAN:
            return span_scalar(p, s, n, is_string);
        case F_KV:
            if (key_is(p, K_KEY)) {
                if (!text_set(p, &p->kv_key, s, n)) {
                    return 0;
                }
                p->kv_wanted = p->attr_of_span
                                   ? wanted_span_key(p->kv_key.s)
                                   : wanted_resource_key(p->kv_key.s);
                return 1;
            }
            return 1;
        case F_VALUE:
            /* stringValue, intValue (string or number), boolValue,
             * doubleValue: all kept as text. */
            /* Skip the copy when the key, already seen, is not one the
             * model reads. */
            if (key_is(p, K_SCALAR_VALUE) &&
                !(p->kv_key.set && !p->kv_wanted)) {
                return text_set(p, &p->kv_value, s, n);
            }
            return 1;
        case F_STATUS:
            if (key_is(p, K_CODE) &&
                ((n == 1 && s[0] == '2') ||
                 (is_string && n == 17 &&
                  memcmp(s, "STATUS_CODE_ERROR", n) == 0))) {
                p->span->error = 1;
            }
            return 1;
        default:
            return 1;
    }
}

static int on_null(void *ctx)
{
    (void)ctx;
    return 1;
}

static int on_bool(void *ctx, int b)
{
    return scalar(ctx, b ? "true" : "false", b ? 4 : 5, 0);
}

static int on_number(void *ctx, const char *s, size_t n)
{
    return scalar(ctx, s, n, 0);
}

static int on_string(void *ctx, const unsigned char *s, size_t n)
{
    return scalar(ctx, (const char *)s, n, 1);
}

static int on_key(void *ctx, const unsigned char *s, size_t n)
{
    struct parse *p = ctx;
    p->key = lookup_key(s, n);
    return 1;
}

static int on_start_map(void *ctx)
{
    struct parse *p = ctx;
    if (!shape_ok(p, S_OBJECT)) {
        return 0;
    }
    if (p->depth == 0) {
        p->root_is_object = 1;
        return push(p, F_ROOT);
    }
    enum frame f = F_SKIP;
    switch (top(p)) {
        case F_RS_ARRAY:
            p->rs_first_span = p->out->n;
            p->service = p->instance = NULL;
            p->ss_index = 0;
            f = F_RS;
            break;
        case F_RS:
            f = key_is(p, K_RESOURCE) ? F_RESOURCE : F_SKIP;
            break;
        case F_ATTR_ARRAY:
            p->kv_key.set = p->kv_value.set = 0;
            p->kv_wanted = 0;
            f = F_KV;
            break;
        case F_KV:
            f = key_is(p, K_VALUE) ? F_VALUE : F_SKIP;
            break;
        case F_SS_ARRAY:
            p->span_index = 0;
            f = F_SS;
            break;
        case F_SPAN_ARRAY:
            if (!begin_span(p)) {
                return 0;
            }
            f = F_SPAN;
            break;
        case F_SPAN:
            f = key_is(p, K_STATUS) ? F_STATUS : F_SKIP;
            break;
        default:
            break;
    }
    return push(p, f);
}

static int on_start_array(void *ctx)
{
    struct parse *p = ctx;
    if (!shape_ok(p, S_ARRAY)) {
        return 0;
    }
    enum frame f = F_SKIP, t = top(p);
    if (t == F_ROOT && p->depth == 1 && key_is(p, K_RESOURCE_SPANS)) {
        f = F_RS_ARRAY;
    } else if ((t == F_RESOURCE || t == F_SPAN) && key_is(p, K_ATTRIBUTES)) {
        p->attr_of_span = t == F_SPAN;
        f = F_ATTR_ARRAY;
    } else if (t == F_RS && key_is(p, K_SCOPE_SPANS)) {
        f = F_SS_ARRAY;
    } else if (t == F_SS && key_is(p, K_SPANS)) {
        f = F_SPAN_ARRAY;
    }
    return push(p, f);
}

static int on_end_map(void *ctx)
{
    struct parse *p = ctx;
    enum frame f = top(p);
    int ok = 1;
    if (f == F_KV) {
        ok = end_kv(p);
    } else if (f == F_SPAN) {
        ok = end_span(p);
    } else if (f == F_RS) {
        end_resource_spans(p);
        p->rs_index++;
    } else if (f == F_SS) {
        p->ss_index++;
    }
    p->depth--;
    p->key = K_OTHER;
    return ok;
}

static int on_end_array(void *ctx)
{
    struct parse *p = ctx;
    p->depth--;
    p->key = K_OTHER;
    return 1;
}

static const yajl_callbacks trace_callbacks = {
    on_null,      on_bool, NULL,       NULL,           on_number,    on_string,
    on_start_map, on_key,  on_end_map, on_start_array, on_end_array,
};

/* Runs yajl over @body with @callbacks, turning its errors into ours. */
static int run_yajl(const yajl_callbacks *callbacks,
                    void *ctx,
                    int *error,
                    const uint8_t *body,
                    size_t len,
                    char *errmsg)
{
    yajl_handle h = yajl_alloc(callbacks, NULL, ctx);
    if (h == NULL) {
        return SM_ENOMEM;
    }
    yajl_status s = yajl_parse(h, body, len);
    if (s == yajl_status_ok) {
        s = yajl_complete_parse(h);
    }
    int rv = SM_OK;
    if (s != yajl_status_ok) {
        if (*error != 0) {
            rv = *error;
        } else {
            rv = SM_EMALFORMED;
            unsigned char *e = yajl_get_error(h, 0, body, len);
            sm_errmsg_printf(errmsg, "invalid JSON near offset %zu: %s",
                             yajl_get_bytes_consumed(h),
                             e ? (const char *)e : "parse error");
            char *nl = strchr(errmsg, '\n');
            if (nl != NULL) {
                *nl = '\0';
            }
            if (e != NULL) {
                yajl_free_error(h, e);
            }
        }
    }
    yajl_free(h);
    return rv;
}

int node_otlp_traces(const uint8_t *body,
                     size_t len,
                     struct node_spans *out,
                     char errmsg[SM_ERRMSG_SIZE])
{
    struct parse *p = sm_calloc(1, sizeof *p);
    if (p == NULL) {
        return SM_ENOMEM;
    }
    p->out = out;
    p->errmsg = errmsg;
    errmsg[0] = '\0';
    int rv = node_json_check_utf8(body, len, errmsg);
    if (rv == SM_OK) {
        rv = run_yajl(&trace_callbacks, p, &p->error, body, len, errmsg);
    }
    if (rv == SM_OK && !p->root_is_object) {
        rv = SM_EMALFORMED;
        sm_errmsg_printf(errmsg,
                         "expected an ExportTraceServiceRequest "
                         "object");
    }
    if (rv != SM_OK && errmsg[0] == '\0') {
        sm_errmsg_printf(errmsg, "%s", sm_strerror(rv));
    }
    sm_free(p->kv_key.s);
    sm_free(p->kv_value.s);
    sm_free(p);
    return rv;
}

/* ---- Metrics
 * ------------------------------------------------------------------ */

struct metric_ctx
{
    struct node_points *out;
    const char *service, *instance;
    char *errmsg;
    size_t rm, sm, m; /* indexes, for messages */
    int level;        /* how many of them apply: 0 to 3 */
};

/* The scalar text of an AnyValue, or NULL. */
static const char *any_value_text(const struct node_json *v)
{
    static const char *const kinds[] = {"stringValue", "intValue",
                                        "doubleValue", "boolValue"};
    for (size_t i = 0; i < 4; i++) {
        const struct node_json *x = node_json_get(v, kinds[i]);
        if (x != NULL &&
            (x->type == NODE_JSON_STRING || x->type == NODE_JSON_NUMBER)) {
            return x->str;
        }
        if (x != NULL && x->type == NODE_JSON_BOOL) {
            return x->boolean ? "true" : "false";
        }
    }
    return NULL;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Canonical "k=v,k=v" of a data point's attributes (sorted), and the
 * peer.service one, copied into the batch's arena. */
static int point_labels(struct metric_ctx *c,
                        const struct node_json *attrs,
                        const char **labels,
                        const char **peer)
{
    *labels = "";
    *peer = "";
    if (attrs == NULL || attrs->type != NODE_JSON_ARRAY || attrs->n == 0) {
        return SM_OK;
    }
    const char **pairs =
        sm_arena_alloc(&c->out->arena, attrs->n * sizeof *pairs);
    if (pairs == NULL) {
        return SM_ENOMEM;
    }
    size_t n = 0, total = 1;
    for (size_t i = 0; i < attrs->n; i++) {
        const char *k = node_json_str(node_json_get(&attrs->items[i], "key"));
        const char *v =
            any_value_text(node_json_get(&attrs->items[i], "value"));
        if (k == NULL || v == NULL) {
            continue;
        }
        size_t len = strlen(k) + strlen(v) + 2;
        char *kv = sm_arena_alloc(&c->out->arena, len);
        if (kv == NULL) {
            return SM_ENOMEM;
        }
        snprintf(kv, len, "%s=%s", k, v);
        pairs[n++] = kv;
        total += len;
        if (strcmp(k, "peer.service") == 0 &&
            (*peer = sm_arena_strndup(&c->out->arena, v, strlen(v))) == NULL) {
            return SM_ENOMEM;
        }
    }
    qsort(pairs, n, sizeof *pairs, cmp_str);
    char *buf = sm_arena_alloc(&c->out->arena, total);
    if (buf == NULL) {
        return SM_ENOMEM;
    }
    buf[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        if (i > 0) {
            strcat(buf, ",");
        }
        strcat(buf, pairs[i]);
    }
    *labels = buf;
    return SM_OK;
}

static int add_point(struct metric_ctx *c,
                     const char *name,
                     const char *labels,
                     const char *peer,
                     uint64_t t,
                     double v,
                     int cumulative)
{
    struct cbn_metric_point *pt = node_points_add(c->out);
    if (pt == NULL) {
        return SM_ENOMEM;
    }
    *pt = (struct cbn_metric_point){c->service, c->instance, name, labels,
                                    peer,       t,           v,    cumulative};
    return SM_OK;
}

static int bad_metric(struct metric_ctx *c, const char *why)
{
    switch (c->level) {
        case 0:
            sm_errmsg_printf(c->errmsg, "%s", why);
            break;
        case 1:
            sm_errmsg_printf(c->errmsg, "resourceMetrics[%zu]: %s", c->rm, why);
            break;
        case 2:
            sm_errmsg_printf(c->errmsg,
                             "resourceMetrics[%zu].scopeMetrics[%zu]: %s",
                             c->rm, c->sm, why);
            break;
        default:
            sm_errmsg_printf(
                c->errmsg,
                "resourceMetrics[%zu].scopeMetrics[%zu].metrics[%zu]: %s",
                c->rm, c->sm, c->m, why);
            break;
    }
    return SM_EMALFORMED;
}

/* A message field (@what) that must be an object when present: absent
 * and null are fine; anything else is malformed, not skipped, lest a 200
 * answer data that was dropped. */
static int check_object(struct metric_ctx *c,
                        const struct node_json *v,
                        const char *what)
{
    if (v == NULL || v->type == NODE_JSON_NULL || v->type == NODE_JSON_OBJECT) {
        return SM_OK;
    }
    char why[128];
    snprintf(why, sizeof why, "%s must be an object", what);
    return bad_metric(c, why);
}

/* The repeated field @key (or its older name @old) of @obj in @out: NULL
 * when absent or null; malformed when not an array. */
static int array_at(struct metric_ctx *c,
                    const struct node_json *obj,
                    const char *key,
                    const char *old,
                    const struct node_json **out)
{
    const struct node_json *a = node_json_get(obj, key);
    if (a == NULL && old != NULL) {
        a = node_json_get(obj, old);
    }
    *out = NULL;
    if (a == NULL || a->type == NODE_JSON_NULL) {
        return SM_OK;
    }
    if (a->type != NODE_JSON_ARRAY) {
        char why[128];
        snprintf(why, sizeof why, "%s must be an array", key);
        return bad_metric(c, why);
    }
    *out = a;
    return SM_OK;
}

/* kind: 0 gauge, 1 cumulative sum, 2 delta sum, 3 cumulative histogram,
 * 4 delta histogram. */
static int data_points(struct metric_ctx *c,
                       const char *name,
                       const struct node_json *data,
                       int kind)
{
    const struct node_json *dps;
    int rv = array_at(c, data, "dataPoints", NULL, &dps);
    for (size_t i = 0; rv == SM_OK && dps != NULL && i < dps->n; i++) {
        const struct node_json *dp = &dps->items[i];
        if (dp->type != NODE_JSON_OBJECT) {
            return bad_metric(c, "a data point is not an object");
        }
        uint64_t t, t0 = 0;
        if (node_json_u64(node_json_get(dp, "timeUnixNano"), &t) != SM_OK) {
            return bad_metric(c, "a data point lacks timeUnixNano");
        }
        (void)node_json_u64(node_json_get(dp, "startTimeUnixNano"), &t0);
        const char *labels, *peer;
        const struct node_json *attrs;
        rv = array_at(c, dp, "attributes", NULL, &attrs);
        if (rv == SM_OK) {
            rv = point_labels(c, attrs, &labels, &peer);
        }
        if (rv != SM_OK) {
            return rv;
        }
        double v;
        if (kind <= 2) {
            if (node_json_double(node_json_get(dp, "asDouble"), &v) != SM_OK &&
                node_json_double(node_json_get(dp, "asInt"), &v) != SM_OK) {
                return bad_metric(c,
                                  "a data point has neither asDouble nor "
                                  "asInt");
            }
            if (kind == 2) {
                /* A delta sum over [start, time] becomes a rate. */
                if (t0 == 0 || t <= t0) {
                    continue;
                }
                v /= (double)(t - t0) * 1e-9;
            }
            rv = add_point(c, name, labels, peer, t, v, kind == 1);
        } else {
            double sum, count;
            if (node_json_double(node_json_get(dp, "sum"), &sum) != SM_OK ||
                node_json_double(node_json_get(dp, "count"), &count) != SM_OK) {
                continue; /* sum is optional in OTLP: nothing to use */
            }
            if (kind == 4) {
                if (count > 0) {
                    rv = add_point(c, name, labels, peer, t, sum / count, 0);
                }
            } else {
                size_t n = strlen(name) + 8;
                char *s_name = sm_arena_alloc(&c->out->arena, n);
                char *c_name = sm_arena_alloc(&c->out->arena, n);
                if (s_name == NULL || c_name == NULL) {
                    return SM_ENOMEM;
                }
                snprintf(s_name, n, "%s_sum", name);
                snprintf(c_name, n, "%s_count", name);
                rv = add_point(c, s_name, labels, peer, t, sum, 1);
                if (rv == SM_OK) {
                    rv = add_point(c, c_name, labels, peer, t, count, 1);
                }
            }
        }
        if (rv != SM_OK) {
            return rv;
        }
    }
    return rv;
}

/* Reads aggregationTemporality of a sum or histogram: 1 (delta) sets
 * @delta; 2 (cumulative), 0 (unspecified) or absent leave it clear. Enum
 * names are read too, as for span kinds. Anything else is malformed: it
 * used to pass as cumulative and turned delta data into wrong rates. */
static int temporality(struct metric_ctx *c,
                       const struct node_json *data,
                       int *delta)
{
    static const char *const names[] = {"AGGREGATION_TEMPORALITY_UNSPECIFIED",
                                        "AGGREGATION_TEMPORALITY_DELTA",
                                        "AGGREGATION_TEMPORALITY_CUMULATIVE"};
    const struct node_json *v = node_json_get(data, "aggregationTemporality");
    *delta = 0;
    if (v == NULL || v->type == NODE_JSON_NULL) {
        return SM_OK;
    }
    uint64_t t = 3;
    if (v->type == NODE_JSON_STRING) {
        for (uint64_t k = 0; k < 3; k++) {
            if (strcmp(v->str, names[k]) == 0) {
                t = k;
            }
        }
    }
    if (t > 2 && (node_json_u64(v, &t) != SM_OK || t > 2)) {
        return bad_metric(c, "aggregationTemporality must be 0, 1 or 2");
    }
    *delta = t == 1;
    return SM_OK;
}

static int one_metric(struct metric_ctx *c, const struct node_json *m)
{
    const char *raw = node_json_str(node_json_get(m, "name"));
    if (raw == NULL || raw[0] == '\0') {
        return bad_metric(c, "name is required");
    }
    const char *name = sm_arena_strndup(&c->out->arena, raw, strlen(raw));
    if (name == NULL) {
        return SM_ENOMEM;
    }
    const struct node_json *g = node_json_get(m, "gauge");
    const struct node_json *s = node_json_get(m, "sum");
    const struct node_json *h = node_json_get(m, "histogram");
    int rv = check_object(c, g, "gauge");
    if (rv == SM_OK) {
        rv = check_object(c, s, "sum");
    }
    if (rv == SM_OK) {
        rv = check_object(c, h, "histogram");
    }
    if (rv != SM_OK) {
        return rv;
    }
    int delta = 0;
    if (g != NULL && g->type != NODE_JSON_NULL) {
        return data_points(c, name, g, 0);
    }
    if (s != NULL && s->type != NODE_JSON_NULL) {
        rv = temporality(c, s, &delta);
        return rv == SM_OK ? data_points(c, name, s, delta ? 2 : 1) : rv;
    }
    if (h != NULL && h->type != NODE_JSON_NULL) {
        rv = temporality(c, h, &delta);
        return rv == SM_OK ? data_points(c, name, h, delta ? 4 : 3) : rv;
    }
    return SM_OK; /* summaries and exponential histograms: not used */
}

int node_otlp_metrics(const uint8_t *body,
                      size_t len,
                      struct node_points *out,
                      char errmsg[SM_ERRMSG_SIZE])
{
    struct sm_arena tree;
    sm_arena_init(&tree, out->arena.limit);
    const struct node_json *root = NULL;
    int rv = node_json_check_utf8(body, len, errmsg);
    if (rv == SM_OK) {
        rv = node_json_parse(body, len, &tree, &root, errmsg);
    }
    if (rv == SM_OK && root->type != NODE_JSON_OBJECT) {
        rv = SM_EMALFORMED;
        sm_errmsg_printf(errmsg,
                         "expected an ExportMetricsServiceRequest "
                         "object");
    }
    struct metric_ctx c = {.out = out, .errmsg = errmsg};
    const struct node_json *rms = NULL;
    if (rv == SM_OK) {
        rv = array_at(&c, root, "resourceMetrics", NULL, &rms);
    }
    for (size_t i = 0; rms != NULL && rv == SM_OK && i < rms->n; i++) {
        const struct node_json *r = &rms->items[i];
        c.rm = i;
        c.level = 1;
        c.service = "unknown_service";
        c.instance = "";
        if (r->type != NODE_JSON_OBJECT) {
            rv = bad_metric(&c, "not an object");
            break;
        }
        const struct node_json *resource = node_json_get(r, "resource");
        const struct node_json *attrs = NULL;
        rv = check_object(&c, resource, "resource");
        if (rv == SM_OK) {
            rv = array_at(&c, resource, "attributes", NULL, &attrs);
        }
        for (size_t k = 0; attrs != NULL && k < attrs->n; k++) {
            const char *key =
                node_json_str(node_json_get(&attrs->items[k], "key"));
            const char *v =
                any_value_text(node_json_get(&attrs->items[k], "value"));
            if (key == NULL || v == NULL) {
                continue;
            }
            const char **slot = strcmp(key, "service.name") == 0 ? &c.service
                                : strcmp(key, "service.instance.id") == 0
                                    ? &c.instance
                                    : NULL;
            if (slot != NULL &&
                (*slot = sm_arena_strndup(&out->arena, v, strlen(v))) == NULL) {
                rv = SM_ENOMEM;
            }
        }
        const struct node_json *sms = NULL;
        if (rv == SM_OK) {
            rv = array_at(&c, r, "scopeMetrics",
                          "instrumentationLibraryMetrics", &sms);
        }
        for (size_t k = 0; sms != NULL && rv == SM_OK && k < sms->n; k++) {
            c.sm = k;
            c.level = 2;
            const struct node_json *ms = NULL;
            rv = sms->items[k].type == NODE_JSON_OBJECT
                     ? array_at(&c, &sms->items[k], "metrics", NULL, &ms)
                     : bad_metric(&c, "not an object");
            for (size_t m = 0; ms != NULL && rv == SM_OK && m < ms->n; m++) {
                c.m = m;
                c.level = 3;
                rv = ms->items[m].type == NODE_JSON_OBJECT
                         ? one_metric(&c, &ms->items[m])
                         : bad_metric(&c, "not an object");
            }
        }
    }
    if (rv == SM_ENOMEM && sm_arena_over_limit(&out->arena, 256)) {
        rv = SM_ETOOBIG;
    }
    sm_arena_free(&tree);
    return rv;
}
