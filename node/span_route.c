/* Trace ownership by rendezvous hashing, and the span batch codec.
 *
 * Weights. A member id is hashed with 64-bit FNV-1a and the result is
 * mixed once more, so that ids differing in one character differ in every
 * bit; the trace id's two halves are mixed into one key. The weight of a
 * member is mix(key ^ member hash), where mix is the splitmix64 finaliser,
 * a bijection with good avalanche. For a uniform trace id the weights of
 * distinct members are thus uniform and practically independent, which is
 * all rendezvous hashing needs for even shares and minimal movement.
 *
 * Encoding. The encoder deduplicates the strings by sorting references to
 * them (content, then position), which costs O(n log n) whatever the
 * strings: a hash table keyed by client-chosen strings could be driven
 * into quadratic time. The ids then follow the order of first use.
 *
 * Decoding runs in two passes. The first checks the whole batch without
 * allocating (structure, counts against the bytes left, fields, the
 * first-use order of the string table); then the table is checked for
 * duplicates by sorting, and only a batch that is exactly one valid
 * encoding is copied into the output. So nothing but running out of
 * memory or of the arena's limit can fail once the output is touched, and
 * then the span count is put back. Every allocation is sized from counts
 * already checked against the input length. */
#include "node/span_route.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/le.h"

/* ---- Ownership ------------------------------------------------------------
 */

/* The output function of splitmix64 (Steele, Lea and Flood, OOPSLA 2014,
 * with Stafford's "Mix13" constants): a bijection of 64-bit words with
 * good avalanche. */
static uint64_t mix64(uint64_t z)
{
    z += 0x9e3779b97f4a7c15u;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

/* FNV-1a over the bytes of @id, then mixed. */
static uint64_t member_hash(const char *id)
{
    uint64_t h = 0xcbf29ce484222325u;
    for (const unsigned char *p = (const unsigned char *)id; *p; p++) {
        h ^= *p;
        h *= 0x100000001b3u;
    }
    return mix64(h);
}

size_t node_route_owner(const uint8_t trace_id[16],
                        const char *const *members,
                        size_t n)
{
    if (n == 0) {
        return SIZE_MAX;
    }
    uint64_t key =
        mix64(mix64(sm_get_le64(trace_id)) ^ sm_get_le64(trace_id + 8));
    size_t best = 0;
    uint64_t best_w = mix64(key ^ member_hash(members[0]));
    for (size_t i = 1; i < n; i++) {
        uint64_t w = mix64(key ^ member_hash(members[i]));
        if (w > best_w ||
            (w == best_w && strcmp(members[i], members[best]) < 0)) {
            best = i;
            best_w = w;
        }
    }
    return best;
}

/* ---- Format -----------------------------------------------------------------
 */

#define MAGIC   "SPB"
#define VERSION 1

/* Fixed part of a span: ids, times, kind and error. */
#define SPAN_FIXED (16 + 8 + 8 + 8 + 8 + 1 + 1)
/* Smallest encoded span: the fixed part and four one-byte indexes. */
#define SPAN_MIN (SPAN_FIXED + 4)
/* Strings per span: service, instance, operation, peer. */
#define SPAN_STRINGS 4

static const char *span_string(const struct cbn_span *s, unsigned field)
{
    switch (field) {
        case 0:
            return s->service;
        case 1:
            return s->instance;
        case 2:
            return s->operation;
        default:
            return s->peer;
    }
}

/* ---- Encoding ---------------------------------------------------------------
 */

/* A use of a string: the field of a span at position 4 * span + field. */
struct ref
{
    const char *s;
    size_t n;
    uint32_t pos;
};

/* Orders references by content, then by position: each run of equal
 * strings starts with its first use. */
static int cmp_ref(const void *a, const void *b)
{
    const struct ref *x = a, *y = b;
    int c = memcmp(x->s, y->s, x->n < y->n ? x->n : y->n);
    if (c != 0) {
        return c;
    }
    if (x->n != y->n) {
        return x->n < y->n ? -1 : 1;
    }
    return x->pos < y->pos ? -1 : x->pos > y->pos;
}

static size_t v_len(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static uint8_t *put_v(uint8_t *p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *p++ = (uint8_t)v;
    return p;
}

/* Whether @s is whole enough to encode (see the header): one the
 * aggregator takes, with every string present. */
static int span_ok(const struct cbn_span *s)
{
    return s != NULL && cbn_span_check(s) == SM_OK && s->instance != NULL &&
           s->operation != NULL && s->peer != NULL;
}

/* Gives every string use its id in the table (first use order) in @ids,
 * indexed by position, and returns the number of distinct strings. @refs
 * holds the uses in position order and is sorted. */
static size_t assign_ids(struct ref *refs, size_t n_refs, uint32_t *ids)
{
    qsort(refs, n_refs, sizeof *refs, cmp_ref);
    /* First, each use points at the position of its string's first use. */
    size_t first = 0;
    for (size_t k = 0; k < n_refs; k++) {
        if (refs[k].n != refs[first].n ||
            memcmp(refs[k].s, refs[first].s, refs[k].n) != 0) {
            first = k;
        }
        ids[refs[k].pos] = refs[first].pos;
    }
    /* Then, in position order, first uses take the next id and the others
     * the id of their first use, which is already assigned. */
    uint32_t next = 0;
    for (size_t pos = 0; pos < n_refs; pos++) {
        ids[pos] = ids[pos] == pos ? next++ : ids[ids[pos]];
    }
    return next;
}

/* Adds @v to @acc unless that overflows; returns 0 on overflow. */
static int add_size(size_t *acc, size_t v)
{
    if (v > SIZE_MAX - *acc) {
        return 0;
    }
    *acc += v;
    return 1;
}

int node_span_batch_encode(const struct cbn_span *const *spans,
                           size_t n,
                           uint8_t **buf,
                           size_t *len)
{
    if (n > NODE_SPAN_BATCH_MAX) {
        return SM_ETOOBIG;
    }
    for (size_t i = 0; i < n; i++) {
        if (!span_ok(spans[i])) {
            return SM_EINVAL;
        }
        for (unsigned f = 0; f < SPAN_STRINGS; f++) {
            if (strlen(span_string(spans[i], f)) > NODE_SPAN_STRING_MAX) {
                return SM_ETOOBIG;
            }
        }
    }
    size_t n_refs = n * SPAN_STRINGS;
    struct ref *refs = sm_calloc(n_refs ? n_refs : 1, sizeof *refs);
    uint32_t *ids = sm_calloc(n_refs ? n_refs : 1, sizeof *ids);
    if (refs == NULL || ids == NULL) {
        sm_free(refs);
        sm_free(ids);
        return SM_ENOMEM;
    }
    for (size_t pos = 0; pos < n_refs; pos++) {
        const char *s = span_string(spans[pos / SPAN_STRINGS],
                                    (unsigned)(pos % SPAN_STRINGS));
        refs[pos] = (struct ref){s, strlen(s), (uint32_t)pos};
    }
    size_t n_strings = assign_ids(refs, n_refs, ids);
    sm_free(refs);

    /* The exact size, then one allocation. */
    int rv = SM_OK;
    size_t size = 4 + v_len(n) + v_len(n_strings) + n * SPAN_FIXED;
    uint32_t next = 0;
    for (size_t pos = 0; rv == SM_OK && pos < n_refs; pos++) {
        size_t id_len = v_len(ids[pos]);
        if (ids[pos] == next) {
            next++;
            size_t sn = strlen(span_string(spans[pos / SPAN_STRINGS],
                                           (unsigned)(pos % SPAN_STRINGS)));
            id_len += v_len(sn) + sn;
        }
        if (!add_size(&size, id_len)) {
            rv = SM_ETOOBIG; /* only where size_t is 32 bits */
        }
    }
    uint8_t *out = rv == SM_OK ? sm_malloc(size) : NULL;
    if (rv == SM_OK && out == NULL) {
        rv = SM_ENOMEM;
    }
    if (rv != SM_OK) {
        sm_free(ids);
        return rv;
    }

    uint8_t *p = out;
    memcpy(p, MAGIC, 3);
    p[3] = VERSION;
    p = put_v(p + 4, n);
    p = put_v(p, n_strings);
    next = 0;
    for (size_t pos = 0; pos < n_refs; pos++) {
        if (ids[pos] == next) {
            next++;
            const char *s = span_string(spans[pos / SPAN_STRINGS],
                                        (unsigned)(pos % SPAN_STRINGS));
            size_t sn = strlen(s);
            p = put_v(p, sn);
            memcpy(p, s, sn);
            p += sn;
        }
    }
    for (size_t i = 0; i < n; i++) {
        const struct cbn_span *s = spans[i];
        memcpy(p, s->trace_id, 16);
        memcpy(p + 16, s->span_id, 8);
        memcpy(p + 24, s->parent_id, 8);
        sm_put_le64(p + 32, s->start_ns);
        sm_put_le64(p + 40, s->end_ns);
        p[48] = (uint8_t)s->kind;
        p[49] = s->error != 0;
        p += SPAN_FIXED;
        for (size_t f = 0; f < SPAN_STRINGS; f++) {
            p = put_v(p, ids[i * SPAN_STRINGS + f]);
        }
    }
    sm_free(ids);
    SM_ASSERT((size_t)(p - out) == size);
    *buf = out;
    *len = size;
    return SM_OK;
}

/* ---- Decoding ---------------------------------------------------------------
 */

struct in
{
    const uint8_t *p;
    size_t left;
};

/* Reads a varint of the fewest bytes into @v; returns 0, or -1 when it is
 * truncated, longer than needed or past 64 bits. */
static int get_v(struct in *r, uint64_t *v)
{
    uint64_t x = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        if (r->left == 0) {
            return -1;
        }
        uint8_t b = *r->p++;
        r->left--;
        if (shift == 63 && b > 1) {
            return -1;
        }
        x |= (uint64_t)(b & 0x7f) << shift;
        if ((b & 0x80) == 0) {
            if (b == 0 && shift > 0) {
                return -1;
            }
            *v = x;
            return 0;
        }
    }
    return -1;
}

static int fail(char *errmsg, int rv, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Writes "span batch: " and the formatted reason into @errmsg; returns
 * @rv. */
static int fail(char *errmsg, int rv, const char *fmt, ...)
{
    char why[SM_ERRMSG_SIZE];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    sm_errmsg_printf(errmsg, "span batch: %s", why);
    return rv;
}

static const char *const field_names[SPAN_STRINGS] = {"service", "instance",
                                                      "operation", "peer"};

/* What the first pass learnt. */
struct shape
{
    size_t n_spans, n_strings;
    const uint8_t *table; /* first byte of the string table */
    const uint8_t *spans; /* first byte of the spans */
};

/* First pass: checks everything but duplicate strings, without
 * allocating. */
static int scan(const uint8_t *buf, size_t len, struct shape *sh, char *errmsg)
{
    if (len < 4 || memcmp(buf, MAGIC, 3) != 0) {
        return fail(errmsg, SM_EMALFORMED, "not a span batch");
    }
    if (buf[3] != VERSION) {
        return fail(errmsg, SM_EUNSUPPORTED, "version %u (this peer reads %u)",
                    buf[3], VERSION);
    }
    struct in r = {buf + 4, len - 4};
    uint64_t n_spans, n_strings;
    if (get_v(&r, &n_spans) != 0) {
        return fail(errmsg, SM_EMALFORMED, "bad span count");
    }
    if (n_spans > r.left / SPAN_MIN) {
        return fail(errmsg, SM_EMALFORMED, "%llu spans cannot fit in %zu bytes",
                    (unsigned long long)n_spans, r.left);
    }
    if (n_spans > NODE_SPAN_BATCH_MAX) {
        return fail(errmsg, SM_ETOOBIG, "%llu spans (at most %u)",
                    (unsigned long long)n_spans, NODE_SPAN_BATCH_MAX);
    }
    if (get_v(&r, &n_strings) != 0) {
        return fail(errmsg, SM_EMALFORMED, "bad string count");
    }
    if (n_strings > n_spans * SPAN_STRINGS || n_strings > r.left) {
        return fail(errmsg, SM_EMALFORMED, "%llu strings for %llu spans",
                    (unsigned long long)n_strings, (unsigned long long)n_spans);
    }
    sh->n_spans = (size_t)n_spans;
    sh->n_strings = (size_t)n_strings;
    sh->table = r.p;

    size_t empty = SIZE_MAX; /* index of the empty string, if any */
    for (size_t i = 0; i < sh->n_strings; i++) {
        uint64_t sn;
        if (get_v(&r, &sn) != 0 || sn > r.left) {
            return fail(errmsg, SM_EMALFORMED, "string %zu is truncated", i);
        }
        if (sn > NODE_SPAN_STRING_MAX) {
            return fail(errmsg, SM_ETOOBIG, "string %zu has %llu bytes", i,
                        (unsigned long long)sn);
        }
        if (memchr(r.p, '\0', (size_t)sn) != NULL) {
            return fail(errmsg, SM_EMALFORMED, "string %zu holds a NUL byte",
                        i);
        }
        if (sn == 0 && empty == SIZE_MAX) {
            empty = i;
        }
        r.p += sn;
        r.left -= (size_t)sn;
    }

    sh->spans = r.p;
    size_t next = 0; /* the id a string used for the first time must have */
    for (size_t i = 0; i < sh->n_spans; i++) {
        if (r.left < SPAN_FIXED) {
            return fail(errmsg, SM_EMALFORMED, "span %zu is truncated", i);
        }
        uint64_t start = sm_get_le64(r.p + 32), end = sm_get_le64(r.p + 40);
        if (end < start) {
            return fail(errmsg, SM_EMALFORMED, "span %zu ends before it starts",
                        i);
        }
        if (r.p[48] > CBN_SPAN_CONSUMER) {
            return fail(errmsg, SM_EMALFORMED, "span %zu: unknown kind %u", i,
                        r.p[48]);
        }
        if (r.p[49] > 1) {
            return fail(errmsg, SM_EMALFORMED, "span %zu: error flag %u", i,
                        r.p[49]);
        }
        r.p += SPAN_FIXED;
        r.left -= SPAN_FIXED;
        for (size_t f = 0; f < SPAN_STRINGS; f++) {
            uint64_t id;
            if (get_v(&r, &id) != 0) {
                return fail(errmsg, SM_EMALFORMED, "span %zu: bad %s index", i,
                            field_names[f]);
            }
            if (id > next || id >= sh->n_strings) {
                return fail(errmsg, SM_EMALFORMED,
                            "span %zu: %s index %llu out of order", i,
                            field_names[f], (unsigned long long)id);
            }
            if (f == 0 && id == empty) {
                return fail(errmsg, SM_EMALFORMED, "span %zu: empty service",
                            i);
            }
            next += id == next;
        }
    }
    if (r.left != 0) {
        return fail(errmsg, SM_EMALFORMED, "%zu trailing bytes", r.left);
    }
    if (next != sh->n_strings) {
        return fail(errmsg, SM_EMALFORMED, "%zu unused strings",
                    sh->n_strings - next);
    }
    return SM_OK;
}

/* A string of the table, borrowed from the input. */
struct str
{
    const uint8_t *p;
    size_t n;
    size_t id;
};

static int cmp_str(const void *a, const void *b)
{
    const struct str *x = a, *y = b;
    int c = memcmp(x->p, y->p, x->n < y->n ? x->n : y->n);
    if (c != 0) {
        return c;
    }
    return x->n < y->n ? -1 : x->n > y->n;
}

/* Reads the string table of @sh into @table, sorted by content. */
static void read_table(const struct shape *sh, struct str *table)
{
    struct in r = {sh->table, SIZE_MAX};
    for (size_t i = 0; i < sh->n_strings; i++) {
        uint64_t sn = 0;
        (void)get_v(&r, &sn); /* scan() accepted it */
        table[i] = (struct str){r.p, (size_t)sn, i};
        r.p += sn;
    }
    qsort(table, sh->n_strings, sizeof *table, cmp_str);
}

/* Second pass: appends the spans of the valid batch @sh to @out, with the
 * strings of @table (sorted, checked) copied into its arena through
 * @strings (one slot per string id). On failure @out->n is put back. */
static int copy_batch(const uint8_t *buf,
                      size_t len,
                      const struct shape *sh,
                      const struct str *table,
                      const char **strings,
                      struct node_spans *out,
                      char *errmsg)
{
    for (size_t i = 0; i < sh->n_strings; i++) {
        const struct str *t = &table[i];
        strings[t->id] =
            sm_arena_strndup(&out->arena, (const char *)t->p, t->n);
        if (strings[t->id] == NULL) {
            return sm_arena_over_limit(&out->arena, t->n + 1)
                       ? fail(errmsg, SM_ETOOBIG, "over the batch's byte limit")
                       : fail(errmsg, SM_ENOMEM, "out of memory");
        }
    }
    size_t n0 = out->n;
    struct in r = {sh->spans, len - (size_t)(sh->spans - buf)};
    for (size_t i = 0; i < sh->n_spans; i++) {
        struct cbn_span *s = node_spans_add(out);
        if (s == NULL) {
            out->n = n0;
            return fail(errmsg, SM_ENOMEM, "out of memory");
        }
        memcpy(s->trace_id, r.p, 16);
        memcpy(s->span_id, r.p + 16, 8);
        memcpy(s->parent_id, r.p + 24, 8);
        s->start_ns = sm_get_le64(r.p + 32);
        s->end_ns = sm_get_le64(r.p + 40);
        s->kind = (enum cbn_span_kind)r.p[48];
        s->error = r.p[49];
        r.p += SPAN_FIXED;
        r.left -= SPAN_FIXED;
        const char **fields[SPAN_STRINGS] = {&s->service, &s->instance,
                                             &s->operation, &s->peer};
        for (size_t f = 0; f < SPAN_STRINGS; f++) {
            uint64_t id = 0;
            (void)get_v(&r, &id); /* scan() accepted it */
            *fields[f] = strings[id];
        }
    }
    SM_ASSERT(r.left == 0); /* scan() accepted exactly this */
    return SM_OK;
}

int node_span_batch_decode(const uint8_t *buf,
                           size_t len,
                           struct node_spans *out,
                           char errmsg[SM_ERRMSG_SIZE])
{
    struct shape sh = {0, 0, NULL, NULL};
    int rv = scan(buf, len, &sh, errmsg);
    if (rv != SM_OK) {
        return rv;
    }
    size_t n_alloc = sh.n_strings ? sh.n_strings : 1;
    struct str *table = sm_calloc(n_alloc, sizeof *table);
    const char **strings = sm_calloc(n_alloc, sizeof *strings);
    if (table == NULL || strings == NULL) {
        sm_free(table);
        sm_free(strings);
        return fail(errmsg, SM_ENOMEM, "out of memory");
    }
    read_table(&sh, table);
    for (size_t i = 1; rv == SM_OK && i < sh.n_strings; i++) {
        if (cmp_str(&table[i - 1], &table[i]) == 0) {
            size_t id =
                table[i].id > table[i - 1].id ? table[i].id : table[i - 1].id;
            rv = fail(errmsg, SM_EMALFORMED, "string %zu is a repeat", id);
        }
    }
    if (rv == SM_OK) {
        rv = copy_batch(buf, len, &sh, table, strings, out, errmsg);
    }
    sm_free(table);
    sm_free(strings);
    return rv;
}
