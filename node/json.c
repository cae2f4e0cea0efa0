/* A JSON tree built from yajl events into an arena.
 *
 * Each open array or object collects its items in a heap vector on a
 * stack of builders; when it closes, the items move into the arena in one
 * block and the vector is reused. The depth is capped so that hostile
 * nesting cannot exhaust the stack or memory. */
#include "node/json.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_parse.h>

#include "base/alloc.h"
#include "node/ingest.h"

struct builder
{
    struct node_json *items;
    const char **keys;
    size_t n, cap;
    int is_object;
};

struct state
{
    struct sm_arena *arena;
    struct builder stack[NODE_JSON_MAX_DEPTH + 1];
    int depth;       /* open containers */
    const char *key; /* pending object key */
    struct node_json root;
    int have_root;
    int error; /* SM_ code that cancelled the parse */
};

static int fail(struct state *st, int code)
{
    st->error = code;
    return 0; /* cancels the yajl parse */
}

/* An arena allocation of @request bytes failed: the limit, or the heap. */
static int no_memory(struct state *st, size_t request)
{
    return fail(
        st, sm_arena_over_limit(st->arena, request) ? SM_ETOOBIG : SM_ENOMEM);
}

/* Adds @v to the innermost container, or makes it the root. */
static int add(struct state *st, const struct node_json *v)
{
    if (st->depth == 0) {
        st->root = *v;
        st->have_root = 1;
        return 1;
    }
    struct builder *b = &st->stack[st->depth - 1];
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 8;
        struct node_json *items = sm_reallocarray(b->items, cap, sizeof *items);
        if (items == NULL) {
            return fail(st, SM_ENOMEM);
        }
        b->items = items;
        const char **keys = sm_reallocarray(b->keys, cap, sizeof *keys);
        if (keys == NULL) {
            return fail(st, SM_ENOMEM);
        }
        b->keys = keys;
        b->cap = cap;
    }
    b->items[b->n] = *v;
    b->keys[b->n] = b->is_object ? st->key : NULL;
    b->n++;
    return 1;
}

static int text_value(struct state *st,
                      enum node_json_type type,
                      const unsigned char *s,
                      size_t len)
{
    char *copy = sm_arena_strndup(st->arena, (const char *)s, len);
    if (copy == NULL) {
        return no_memory(st, len + 1);
    }
    struct node_json v = {.type = type, .str = copy, .len = len};
    return add(st, &v);
}

static int on_null(void *ctx)
{
    struct node_json v = {.type = NODE_JSON_NULL};
    return add(ctx, &v);
}

static int on_bool(void *ctx, int b)
{
    struct node_json v = {.type = NODE_JSON_BOOL, .boolean = b != 0};
    return add(ctx, &v);
}

static int on_number(void *ctx, const char *s, size_t len)
{
    return text_value(ctx, NODE_JSON_NUMBER, (const unsigned char *)s, len);
}

static int on_string(void *ctx, const unsigned char *s, size_t len)
{
    return text_value(ctx, NODE_JSON_STRING, s, len);
}

static int on_key(void *ctx, const unsigned char *s, size_t len)
{
    struct state *st = ctx;
    st->key = sm_arena_strndup(st->arena, (const char *)s, len);
    return st->key != NULL ? 1 : no_memory(st, len + 1);
}

static int open_container(void *ctx, int is_object)
{
    struct state *st = ctx;
    if (st->depth == NODE_JSON_MAX_DEPTH) {
        return fail(st, SM_EMALFORMED);
    }
    struct builder *b = &st->stack[st->depth];
    b->n = 0;
    b->is_object = is_object;
    /* Add the container to its parent now, under the current key (its
     * children's keys overwrite st->key); its items are filled in when it
     * closes. */
    struct node_json entry = {.type = is_object ? NODE_JSON_OBJECT
                                                : NODE_JSON_ARRAY};
    if (!add(st, &entry)) {
        return 0;
    }
    st->depth++;
    return 1;
}

static int close_container(void *ctx)
{
    struct state *st = ctx;
    struct builder *b = &st->stack[st->depth - 1];
    struct node_json *items = NULL;
    const char **keys = NULL;
    if (b->n > 0) {
        items = sm_arena_alloc(st->arena, b->n * sizeof *items);
        keys = b->is_object ? sm_arena_alloc(st->arena, b->n * sizeof *keys)
                            : NULL;
        if (items == NULL || (b->is_object && keys == NULL)) {
            return no_memory(st, b->n * sizeof *items);
        }
        memcpy(items, b->items, b->n * sizeof *items);
        if (keys != NULL) {
            memcpy(keys, b->keys, b->n * sizeof *keys);
        }
    }
    st->depth--;
    struct node_json *self =
        st->depth == 0
            ? &st->root
            : &st->stack[st->depth - 1].items[st->stack[st->depth - 1].n - 1];
    self->n = b->n;
    self->items = items;
    self->keys = keys;
    return 1;
}

static int on_start_map(void *ctx)
{
    return open_container(ctx, 1);
}

static int on_start_array(void *ctx)
{
    return open_container(ctx, 0);
}

static const yajl_callbacks callbacks = {
    on_null,        on_bool,         NULL,
    NULL,           on_number,       on_string,
    on_start_map,   on_key,          close_container,
    on_start_array, close_container,
};

size_t node_json_utf8_invalid_at(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        /* Runs of ASCII, a word at a time: the common case. */
        while (n - i >= 8) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (w & UINT64_C(0x8080808080808080)) {
                break;
            }
            i += 8;
        }
        if (i == n) {
            break;
        }
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t more;
        uint8_t lo = 0x80, hi = 0xbf; /* range of the second byte */
        if (c >= 0xc2 && c <= 0xdf) {
            more = 1;
        } else if (c >= 0xe0 && c <= 0xef) {
            more = 2;
            lo = c == 0xe0 ? 0xa0 : 0x80; /* overlong below U+0800 */
            hi = c == 0xed ? 0x9f : 0xbf; /* surrogates */
        } else if (c >= 0xf0 && c <= 0xf4) {
            more = 3;
            lo = c == 0xf0 ? 0x90 : 0x80; /* overlong below U+10000 */
            hi = c == 0xf4 ? 0x8f : 0xbf; /* past U+10FFFF */
        } else {
            return i; /* a continuation byte, C0, C1 or F5 to FF */
        }
        if (n - i <= more || s[i + 1] < lo || s[i + 1] > hi) {
            return i;
        }
        for (size_t k = 2; k <= more; k++) {
            if ((s[i + k] & 0xc0) != 0x80) {
                return i;
            }
        }
        i += more + 1;
    }
    return n;
}

int node_json_check_utf8(const uint8_t *body,
                         size_t len,
                         char errmsg[SM_ERRMSG_SIZE])
{
    size_t at = node_json_utf8_invalid_at(body, len);
    if (at < len) {
        sm_errmsg_printf(errmsg, "invalid UTF-8 at offset %zu", at);
        return SM_EMALFORMED;
    }
    return SM_OK;
}

int node_json_parse(const uint8_t *text,
                    size_t len,
                    struct sm_arena *arena,
                    const struct node_json **root,
                    char errmsg[SM_ERRMSG_SIZE])
{
    int valid = node_json_check_utf8(text, len, errmsg);
    if (valid != SM_OK) {
        return valid;
    }
    struct state *st = sm_calloc(1, sizeof *st);
    if (st == NULL) {
        return SM_ENOMEM;
    }
    st->arena = arena;
    /* The root is a value like any other: a top-level container adds a
     * container entry at depth 0 that is st->root itself. */
    yajl_handle h = yajl_alloc(&callbacks, NULL, st);
    int rv = SM_OK;
    if (h == NULL) {
        rv = SM_ENOMEM;
    } else {
        yajl_status s = yajl_parse(h, text, len);
        if (s == yajl_status_ok) {
            s = yajl_complete_parse(h);
        }
        if (s != yajl_status_ok) {
            if (st->error != 0) {
                rv = st->error;
                if (rv == SM_EMALFORMED) {
                    sm_errmsg_printf(
                        errmsg, "offset %zu: nested deeper than %d levels",
                        yajl_get_bytes_consumed(h), NODE_JSON_MAX_DEPTH);
                }
            } else {
                rv = SM_EMALFORMED;
                unsigned char *e = yajl_get_error(h, 0, text, len);
                size_t at = yajl_get_bytes_consumed(h);
                sm_errmsg_printf(errmsg, "invalid JSON near offset %zu: %s", at,
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
    }
    if (rv == SM_OK && !st->have_root) {
        rv = SM_EMALFORMED;
        sm_errmsg_printf(errmsg, "empty body: expected a JSON document");
    }
    if (rv == SM_OK) {
        struct node_json *r = sm_arena_alloc(arena, sizeof *r);
        if (r == NULL) {
            rv = sm_arena_over_limit(arena, sizeof *r) ? SM_ETOOBIG : SM_ENOMEM;
        } else {
            *r = st->root;
            *root = r;
        }
    }
    for (int i = 0; i <= NODE_JSON_MAX_DEPTH; i++) {
        sm_free(st->stack[i].items);
        sm_free(st->stack[i].keys);
    }
    sm_free(st);
    return rv;
}

const struct node_json *node_json_get(const struct node_json *obj,
                                      const char *key)
{
    if (obj == NULL || obj->type != NODE_JSON_OBJECT) {
        return NULL;
    }
    for (size_t i = obj->n; i-- > 0;) {
        if (strcmp(obj->keys[i], key) == 0) {
            return &obj->items[i];
        }
    }
    return NULL;
}

const char *node_json_str(const struct node_json *v)
{
    return v != NULL && v->type == NODE_JSON_STRING ? v->str : NULL;
}

int node_json_u64(const struct node_json *v, uint64_t *out)
{
    if (v == NULL ||
        (v->type != NODE_JSON_NUMBER && v->type != NODE_JSON_STRING)) {
        return SM_EMALFORMED;
    }
    return node_parse_u64(v->str, v->len, out);
}

int node_json_double(const struct node_json *v, double *out)
{
    if (v == NULL ||
        (v->type != NODE_JSON_NUMBER && v->type != NODE_JSON_STRING) ||
        v->len == 0 || v->len > 64) {
        return SM_EMALFORMED;
    }
    char *end;
    errno = 0;
    double d = strtod(v->str, &end);
    if (end != v->str + v->len || (errno != 0 && !isfinite(d))) {
        return SM_EMALFORMED;
    }
    *out = d;
    return SM_OK;
}
