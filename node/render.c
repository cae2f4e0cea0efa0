/* Tables for the client commands.
 *
 * Every renderer follows the same three steps. It parses the body into a
 * node_json tree in an arena. It reads the tree through "sticky" getters:
 * the first contract violation is recorded in struct rd with the field's
 * path, and from then on every getter returns a harmless default (0, an
 * empty array, an empty object), so a renderer reads straight through
 * without a check at every step and looks at the outcome once. Last, it
 * lays the text out in a node_text buffer and writes it to the FILE* in one
 * piece, only when nothing was violated: a caller never sees half a table.
 *
 * Cells are arena strings, sanitised on the way in (control characters
 * become '?'); tables pad by code points and leave the last column
 * unpadded, so a long name widens its column instead of being cut. */
#include "node/render.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "base/arena.h"
#include "node/json.h"
#include "node/textbuf.h"

/* Bound on the parse tree of one body: the client reads at most 64 MiB,
 * and a tree costs a few dozen bytes per JSON value. */
#define TREE_LIMIT ((size_t)512 << 20)

#define NS_PER_S 1000000000u

/* ---- Sticky reading ---------------------------------------------------- */

struct rd
{
    struct sm_arena arena;
    const struct node_json *root;
    int rv;       /* first error, SM_OK while none */
    char *errmsg; /* SM_ERRMSG_SIZE, the caller's */
};

/* Flags of the getters: what the contract allows besides the type. */
#define MAY_BE_NULL   1 /* null reads as "not given" */
#define MAY_BE_ABSENT 2 /* a missing member reads as "not given" */
#define OPTIONAL      (MAY_BE_NULL | MAY_BE_ABSENT)

static const struct node_json empty_object = {.type = NODE_JSON_OBJECT};
static const struct node_json empty_array = {.type = NODE_JSON_ARRAY};

static void fail(struct rd *r, int rv, const char *format, ...)
    __attribute__((format(printf, 3, 4)));

static void fail(struct rd *r, int rv, const char *format, ...)
{
    if (r->rv != SM_OK) {
        return;
    }
    r->rv = rv;
    char msg[SM_ERRMSG_SIZE];
    va_list ap;
    va_start(ap, format);
    vsnprintf(msg, sizeof msg, format, ap);
    va_end(ap);
    sm_errmsg_printf(r->errmsg, "%s", msg);
}

/* Parses the body; the root must be an object. */
static void rd_open(struct rd *r, const char *body, size_t len, char *errmsg)
{
    sm_arena_init(&r->arena, TREE_LIMIT);
    r->rv = SM_OK;
    r->errmsg = errmsg;
    r->root = &empty_object;
    errmsg[0] = '\0';
    char msg[SM_ERRMSG_SIZE] = "";
    const struct node_json *root = NULL;
    int rv = node_json_parse((const uint8_t *)body, len, &r->arena, &root, msg);
    if (rv != SM_OK) {
        fail(r, rv, "not the JSON the contract gives: %s",
             msg[0] ? msg : sm_strerror(rv));
    } else if (root->type != NODE_JSON_OBJECT) {
        fail(r, SM_EMALFORMED, "the body is not a JSON object");
    } else {
        r->root = root;
    }
}

static void rd_close(struct rd *r)
{
    sm_arena_free(&r->arena);
}

static const char *type_name(enum node_json_type t)
{
    switch (t) {
        case NODE_JSON_NULL:
            return "null";
        case NODE_JSON_BOOL:
            return "a boolean";
        case NODE_JSON_NUMBER:
            return "a number";
        case NODE_JSON_STRING:
            return "a string";
        case NODE_JSON_ARRAY:
            return "an array";
        case NODE_JSON_OBJECT:
            return "an object";
    }
    return "something else";
}

/* The member @key of @obj when it has type @type (a number may also be a
 * numeric string: 64-bit values travel as strings). Returns NULL when it
 * is null or absent and @flags allow that, and records a violation (and
 * returns NULL) otherwise. @where names @obj in messages ("" for the
 * root). */
static const struct node_json *member(struct rd *r,
                                      const struct node_json *obj,
                                      const char *where,
                                      const char *key,
                                      enum node_json_type type,
                                      int flags)
{
    if (r->rv != SM_OK) {
        return NULL;
    }
    const char *dot = where[0] ? "." : "";
    const struct node_json *v = node_json_get(obj, key);
    if (v == NULL) {
        if (!(flags & MAY_BE_ABSENT)) {
            fail(r, SM_EMALFORMED, "%s%s%s is missing", where, dot, key);
        }
        return NULL;
    }
    if (v->type == NODE_JSON_NULL) {
        if (!(flags & MAY_BE_NULL)) {
            fail(r, SM_EMALFORMED, "%s%s%s: expected %s, got null", where, dot,
                 key, type_name(type));
        }
        return NULL;
    }
    if (v->type != type &&
        !(type == NODE_JSON_NUMBER && v->type == NODE_JSON_STRING)) {
        fail(r, SM_EMALFORMED, "%s%s%s: expected %s, got %s", where, dot, key,
             type_name(type), type_name(v->type));
        return NULL;
    }
    return v;
}

/* Copies @len bytes at @s into the arena, control characters (C0, DEL,
 * and C1 as UTF-8, U+0080 to U+009F) replaced by '?'. Never NULL. */
static const char *sanitize(struct rd *r, const char *s, size_t len)
{
    char *out = sm_arena_alloc(&r->arena, len + 1);
    if (out == NULL) {
        fail(r,
             sm_arena_over_limit(&r->arena, len + 1) ? SM_ETOOBIG : SM_ENOMEM,
             "no memory for a string of %zu bytes", len);
        return "";
    }
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == 0xc2 && i + 1 < len && (unsigned char)s[i + 1] >= 0x80 &&
            (unsigned char)s[i + 1] <= 0x9f) {
            out[n++] = '?';
            i++;
        } else {
            out[n++] = c < 0x20 || c == 0x7f ? '?' : (char)c;
        }
    }
    out[n] = '\0';
    return out;
}

/* A string member, sanitised; NULL when allowed to be missing or null. */
static const char *get_str(struct rd *r,
                           const struct node_json *obj,
                           const char *where,
                           const char *key,
                           int flags)
{
    const struct node_json *v =
        member(r, obj, where, key, NODE_JSON_STRING, flags);
    return v == NULL ? NULL : sanitize(r, v->str, v->len);
}

/* A finite number; returns 1 when given, 0 (and *@out = 0) otherwise. */
static int get_num(struct rd *r,
                   const struct node_json *obj,
                   const char *where,
                   const char *key,
                   int flags,
                   double *out)
{
    *out = 0;
    const struct node_json *v =
        member(r, obj, where, key, NODE_JSON_NUMBER, flags);
    if (v == NULL) {
        return 0;
    }
    double d;
    if (node_json_double(v, &d) != SM_OK || !isfinite(d)) {
        fail(r, SM_EMALFORMED, "%s%s%s: expected a finite number", where,
             where[0] ? "." : "", key);
        return 0;
    }
    *out = d;
    return 1;
}

/* A non-negative integer (up to 2^64 - 1); returns 1 when given. */
static int get_u64(struct rd *r,
                   const struct node_json *obj,
                   const char *where,
                   const char *key,
                   int flags,
                   uint64_t *out)
{
    *out = 0;
    const struct node_json *v =
        member(r, obj, where, key, NODE_JSON_NUMBER, flags);
    if (v == NULL) {
        return 0;
    }
    if (node_json_u64(v, out) != SM_OK) {
        fail(r, SM_EMALFORMED, "%s%s%s: expected a non-negative integer", where,
             where[0] ? "." : "", key);
        *out = 0;
        return 0;
    }
    return 1;
}

/* A boolean; returns 1 when given. */
static int get_bool(struct rd *r,
                    const struct node_json *obj,
                    const char *where,
                    const char *key,
                    int flags,
                    int *out)
{
    const struct node_json *v =
        member(r, obj, where, key, NODE_JSON_BOOL, flags);
    *out = v != NULL && v->boolean;
    return v != NULL;
}

/* An object member: NULL when allowed to be missing or null, an empty
 * object after a violation. */
static const struct node_json *get_obj(struct rd *r,
                                       const struct node_json *obj,
                                       const char *where,
                                       const char *key,
                                       int flags)
{
    const struct node_json *v =
        member(r, obj, where, key, NODE_JSON_OBJECT, flags);
    if (v == NULL && r->rv != SM_OK) {
        return &empty_object;
    }
    return v;
}

/* An array member; an empty array when missing or null (if allowed) or
 * after a violation. */
static const struct node_json *get_arr(struct rd *r,
                                       const struct node_json *obj,
                                       const char *where,
                                       const char *key,
                                       int flags)
{
    const struct node_json *v =
        member(r, obj, where, key, NODE_JSON_ARRAY, flags);
    return v != NULL ? v : &empty_array;
}

/* Item @i of @arr, which must be an object (else an empty object). */
static const struct node_json *item_obj(struct rd *r,
                                        const struct node_json *arr,
                                        const char *where,
                                        size_t i)
{
    const struct node_json *v = &arr->items[i];
    if (v->type != NODE_JSON_OBJECT) {
        fail(r, SM_EMALFORMED, "%s[%zu]: expected an object, got %s", where, i,
             type_name(v->type));
        return &empty_object;
    }
    return v;
}

/* Joins the strings of @arr (sanitised) with @sep; "-" when empty. */
static const char *join(struct rd *r,
                        const struct node_json *arr,
                        const char *where,
                        const char *sep)
{
    if (arr->n == 0) {
        return "-";
    }
    size_t total = 1, seplen = strlen(sep);
    for (size_t i = 0; i < arr->n; i++) {
        const struct node_json *v = &arr->items[i];
        if (v->type != NODE_JSON_STRING) {
            fail(r, SM_EMALFORMED, "%s[%zu]: expected a string, got %s", where,
                 i, type_name(v->type));
            return "";
        }
        total += v->len + seplen;
    }
    char *out = sm_arena_alloc(&r->arena, total);
    if (out == NULL) {
        fail(r, sm_arena_over_limit(&r->arena, total) ? SM_ETOOBIG : SM_ENOMEM,
             "no memory for %s", where);
        return "";
    }
    size_t n = 0;
    for (size_t i = 0; i < arr->n; i++) {
        const char *s = sanitize(r, arr->items[i].str, arr->items[i].len);
        size_t sl = strlen(s);
        if (i > 0) {
            memcpy(out + n, sep, seplen);
            n += seplen;
        }
        memcpy(out + n, s, sl);
        n += sl;
    }
    out[n] = '\0';
    return out;
}

/* A printf-style string in the arena (never NULL). */
static const char *fmt(struct rd *r, const char *format, ...)
    __attribute__((format(printf, 2, 3)));

static const char *fmt(struct rd *r, const char *format, ...)
{
    va_list ap;
    va_start(ap, format);
    int n = vsnprintf(NULL, 0, format, ap);
    va_end(ap);
    char *out = n < 0 ? NULL : sm_arena_alloc(&r->arena, (size_t)n + 1);
    if (out == NULL) {
        fail(r, SM_ENOMEM, "no memory for a cell");
        return "";
    }
    va_start(ap, format);
    vsnprintf(out, (size_t)n + 1, format, ap);
    va_end(ap);
    return out;
}

/* ---- Numbers and times ------------------------------------------------- */

#define NUM_SIZE 48

/* @v with @decimals decimals and trailing zeros (and the point) dropped:
 * 200.0 -> "200", 512.30 -> "512.3". Huge values use %g. */
static const char *num(struct rd *r, double v, int decimals)
{
    char buf[NUM_SIZE];
    if (fabs(v) >= 1e15) {
        snprintf(buf, sizeof buf, "%.6g", v);
        return fmt(r, "%s", buf);
    }
    snprintf(buf, sizeof buf, "%.*f", decimals, v);
    char *dot = strchr(buf, '.');
    if (dot != NULL) {
        char *end = buf + strlen(buf);
        while (end > dot + 1 && end[-1] == '0') {
            *--end = '\0';
        }
        if (end == dot + 1) {
            *dot = '\0';
        }
    }
    if (strcmp(buf, "-0") == 0) {
        buf[0] = '0';
        buf[1] = '\0';
    }
    return fmt(r, "%s", buf);
}

/* @v with exactly @decimals decimals, for columns of a ranking ("20.0"),
 * without a minus sign on zero ("-0.0"). */
static const char *fixed(struct rd *r, double v, int decimals)
{
    if (fabs(v) >= 1e15) {
        return num(r, v, decimals);
    }
    char buf[NUM_SIZE];
    snprintf(buf, sizeof buf, "%.*f", decimals, v);
    if (buf[0] == '-' && strspn(buf + 1, "0.") == strlen(buf + 1)) {
        return fmt(r, "%s", buf + 1);
    }
    return fmt(r, "%s", buf);
}

/* A probability or score with two decimals, kept as written ("0.90"). */
static const char *prob(struct rd *r, double v)
{
    return fixed(r, v, 2);
}

/* Days since 1970-01-01 of a proleptic Gregorian date (after Howard
 * Hinnant's days_from_civil). */
static int64_t days_from_civil(int64_t y, int64_t m, int64_t d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* The date of a day number >= 0 (inverse of days_from_civil). */
static void civil_from_days(int64_t z, int64_t *y, int *m, int *d)
{
    z += 719468;
    int64_t era = z / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

void node_render_format_time(uint64_t unix_ns, char out[NODE_RENDER_TIME_SIZE])
{
    uint64_t s = unix_ns / NS_PER_S;
    unsigned ms = (unsigned)(unix_ns % NS_PER_S / 1000000u);
    int64_t y;
    int m, d;
    civil_from_days((int64_t)(s / 86400), &y, &m, &d);
    unsigned sod = (unsigned)(s % 86400);
    char frac[8] = "";
    if (ms != 0) {
        snprintf(frac, sizeof frac, ".%03u", ms % 1000u);
    }
    snprintf(out, NODE_RENDER_TIME_SIZE, "%04d-%02d-%02dT%02u:%02u:%02u%sZ",
             (int)(y % 100000), m, d, sod / 3600, sod / 60 % 60, sod % 60,
             frac);
}

static const char *when(struct rd *r, uint64_t unix_ns)
{
    char t[NODE_RENDER_TIME_SIZE];
    node_render_format_time(unix_ns, t);
    return fmt(r, "%s", t);
}

/* Reads exactly @n digits at *@p into *@v and advances; 0 if not digits. */
static int digits(const char **p, int n, int64_t *v)
{
    int64_t x = 0;
    for (int i = 0; i < n; i++) {
        if ((*p)[i] < '0' || (*p)[i] > '9') {
            return 0;
        }
        x = x * 10 + ((*p)[i] - '0');
    }
    *p += n;
    *v = x;
    return 1;
}

/* Reads an optional ".ddd" at *@p as nanoseconds (digits past the ninth
 * are read and dropped); 0 for a point without digits. */
static int fraction(const char **p, uint64_t *ns)
{
    *ns = 0;
    if (**p != '.') {
        return 1;
    }
    (*p)++;
    int n = 0;
    uint64_t scale = NS_PER_S;
    while (**p >= '0' && **p <= '9') {
        if (n < 9) {
            scale /= 10;
            *ns += (uint64_t)(**p - '0') * scale;
        }
        n++;
        (*p)++;
    }
    return n > 0;
}

/* Seconds that 64 bits of nanoseconds hold. */
#define MAX_UNIX_S (UINT64_MAX / NS_PER_S)

static int unix_seconds(const char *p, uint64_t *unix_ns)
{
    uint64_t s = 0;
    int n = 0;
    for (; *p >= '0' && *p <= '9'; p++, n++) {
        if (s > MAX_UNIX_S) {
            return SM_ERANGE;
        }
        s = s * 10 + (uint64_t)(*p - '0');
    }
    uint64_t ns;
    if (n == 0 || !fraction(&p, &ns) || *p != '\0') {
        return SM_EMALFORMED;
    }
    if (s > MAX_UNIX_S || (s == MAX_UNIX_S && ns > UINT64_MAX % NS_PER_S)) {
        return SM_ERANGE;
    }
    *unix_ns = s * NS_PER_S + ns;
    return SM_OK;
}

static int days_in_month(int64_t y, int64_t m)
{
    static const int days[12] = {31, 28, 31, 30, 31, 30,
                                 31, 31, 30, 31, 30, 31};
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return days[m - 1] + (m == 2 && leap);
}

int node_render_parse_time(const char *text, uint64_t *unix_ns)
{
    const char *p = text;
    if (strspn(p, "0123456789.") == strlen(p)) {
        return unix_seconds(p, unix_ns);
    }
    int64_t y, mo, d, h, mi, s, oh = 0, om = 0;
    if (!digits(&p, 4, &y) || *p++ != '-' || !digits(&p, 2, &mo) ||
        *p++ != '-' || !digits(&p, 2, &d)) {
        return SM_EMALFORMED;
    }
    if (*p != 'T' && *p != 't' && *p != ' ') {
        return SM_EMALFORMED;
    }
    p++;
    uint64_t ns;
    if (!digits(&p, 2, &h) || *p++ != ':' || !digits(&p, 2, &mi) ||
        *p++ != ':' || !digits(&p, 2, &s) || !fraction(&p, &ns)) {
        return SM_EMALFORMED;
    }
    int sign = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        sign = *p++ == '+' ? 1 : -1;
        if (!digits(&p, 2, &oh) || *p++ != ':' || !digits(&p, 2, &om)) {
            return SM_EMALFORMED;
        }
    } else {
        return SM_EMALFORMED;
    }
    if (*p != '\0' || mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo) ||
        h > 23 || mi > 59 || s > 60 || oh > 23 || om > 59) {
        return SM_EMALFORMED;
    }
    int64_t t = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s -
                sign * (oh * 3600 + om * 60);
    if (t < 0 || (uint64_t)t > MAX_UNIX_S ||
        ((uint64_t)t == MAX_UNIX_S && ns > UINT64_MAX % NS_PER_S)) {
        return SM_ERANGE;
    }
    *unix_ns = (uint64_t)t * NS_PER_S + ns;
    return SM_OK;
}

/* ---- Tables ------------------------------------------------------------ */

#define MAX_COLS 10

/* Cells in row-major order, the header row first. */
struct table
{
    struct rd *r;
    size_t ncols;
    const char **cells;
    size_t n, cap;
};

static void cell(struct table *t, const char *s)
{
    if (t->r->rv != SM_OK) {
        return;
    }
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 64;
        const char **grown = realloc(t->cells, cap * sizeof *grown);
        if (grown == NULL) {
            fail(t->r, SM_ENOMEM, "no memory for the table");
            return;
        }
        t->cells = grown;
        t->cap = cap;
    }
    t->cells[t->n++] = s;
}

static void table_init(struct table *t, struct rd *r, const char *const *head)
{
    memset(t, 0, sizeof *t);
    t->r = r;
    while (t->ncols < MAX_COLS && head[t->ncols] != NULL) {
        cell(t, head[t->ncols]);
        t->ncols++;
    }
}

/* Code points in @s (bytes that do not continue a UTF-8 sequence). */
static size_t width(const char *s)
{
    size_t w = 0;
    for (; *s != '\0'; s++) {
        w += ((unsigned char)*s & 0xc0) != 0x80;
    }
    return w;
}

static void pad(struct node_text *b, size_t n)
{
    static const char spaces[] = "                                ";
    while (n > 0) {
        size_t k = n < sizeof spaces - 1 ? n : sizeof spaces - 1;
        node_text_put(b, spaces, k);
        n -= k;
    }
}

/* Lays the table out: columns two spaces apart, each as wide as its widest
 * cell, the last one unpadded, no trailing blanks. */
static void table_write(struct table *t, struct node_text *b)
{
    if (t->r->rv != SM_OK) {
        return;
    }
    size_t w[MAX_COLS] = {0};
    for (size_t i = 0; i < t->n; i++) {
        size_t cw = width(t->cells[i]);
        if (cw > w[i % t->ncols]) {
            w[i % t->ncols] = cw;
        }
    }
    for (size_t row = 0; row * t->ncols < t->n; row++) {
        const char **c = t->cells + row * t->ncols;
        size_t last = t->ncols;
        while (last > 0 && c[last - 1][0] == '\0') {
            last--;
        }
        for (size_t k = 0; k < last; k++) {
            node_text_put(b, c[k], strlen(c[k]));
            if (k + 1 < last) {
                pad(b, w[k] - width(c[k]) + 2);
            }
        }
        node_text_put(b, "\n", 1);
    }
}

static void table_free(struct table *t)
{
    free(t->cells);
    t->cells = NULL;
}

/* Writes the finished text to @out when nothing failed; frees it. */
static int finish(struct rd *r, struct node_text *b, FILE *out)
{
    int rv = r->rv;
    if (rv == SM_OK && b->failed) {
        rv = SM_ENOMEM;
        sm_errmsg_printf(r->errmsg, "no memory for the output");
    }
    if (rv == SM_OK && out != NULL && b->len > 0 &&
        (fwrite(b->s, 1, b->len, out) != b->len || fflush(out) != 0)) {
        rv = SM_EIO;
        sm_errmsg_printf(r->errmsg, "cannot write the output");
    }
    free(b->s);
    rd_close(r);
    return rv;
}

/* Appends a "key  value" line of the status table. */
static void kv(struct node_text *b, const char *key, const char *value)
{
    node_text_printf(b, "%-12s", key);
    node_text_put(b, value, strlen(value));
    node_text_put(b, "\n", 1);
}

/* ---- Errors ------------------------------------------------------------ */

void node_render_error(const char *body, size_t len, char *msg, size_t cap)
{
    char errmsg[SM_ERRMSG_SIZE];
    struct rd r;
    rd_open(&r, body, len, errmsg);
    const char *text = NULL;
    if (r.rv == SM_OK) {
        text = get_str(&r, r.root, "", "error", 0);
    }
    if (r.rv != SM_OK || text == NULL) {
        size_t n = 0;
        while (n < len && body[n] != '\n' && body[n] != '\r') {
            n++;
        }
        r.rv = SM_OK;
        text = n > 0 ? sanitize(&r, body, n) : "(empty answer)";
        if (r.rv != SM_OK) {
            text = "(unreadable answer)";
        }
    }
    snprintf(msg, cap, "%s", text);
    rd_close(&r);
}

/* ---- Status ------------------------------------------------------------ */

/* The "next round" line, when the body gives enough to tell. */
static const char *next_round(struct rd *r,
                              const struct node_json *model,
                              uint64_t version,
                              int training)
{
    uint64_t windows, windows_new, train_after, retrain_every;
    get_u64(r, model, "model", "windows", 0, &windows);
    int have_new =
        get_u64(r, model, "model", "windows_new", OPTIONAL, &windows_new);
    int have_after =
        get_u64(r, model, "model", "train_after", OPTIONAL, &train_after);
    int have_every =
        get_u64(r, model, "model", "retrain_every", OPTIONAL, &retrain_every);
    if (training) {
        return "running now";
    }
    if (version == 0 && have_after) {
        return windows >= train_after
                   ? "due now (enough windows for a first model)"
                   : fmt(r, "after %" PRIu64 " more windows (a first model)",
                         train_after - windows);
    }
    if (version > 0 && have_every && have_new) {
        if (retrain_every == 0) {
            return "when asked ('sagemesh train')";
        }
        return windows_new >= retrain_every
                   ? "due now"
                   : fmt(r, "after %" PRIu64 " more windows",
                         retrain_every - windows_new);
    }
    return NULL;
}

/* Joins the @n strings at @parts with ", " ("" when none). */
static const char *list(struct rd *r, const char *const *parts, size_t n)
{
    const char *s = "";
    for (size_t i = 0; i < n; i++) {
        s = fmt(r, "%s%s%s", s, i > 0 ? ", " : "", parts[i]);
    }
    return s;
}

/* The last round's outcome, for status and train --wait: "model version
 * 3 (incremental, 6.2 s, 310 windows, validation loss 1.9)" or "failed
 * after 1.2 s: ERROR". */
static const char *round_outcome(struct rd *r,
                                 const struct node_json *last,
                                 uint64_t current_version,
                                 int *ok)
{
    const char *w = "model.last_round";
    double seconds, val_loss;
    uint64_t windows, version;
    get_bool(r, last, w, "ok", 0, ok);
    const char *error = get_str(r, last, w, "error", OPTIONAL);
    const char *mode = get_str(r, last, w, "mode", OPTIONAL);
    int have_s = get_num(r, last, w, "seconds", OPTIONAL, &seconds);
    int have_w = get_u64(r, last, w, "windows", OPTIONAL, &windows);
    int have_l = get_num(r, last, w, "val_loss", OPTIONAL, &val_loss);
    if (!get_u64(r, last, w, "model_version", OPTIONAL, &version)) {
        version = current_version;
    }
    if (!*ok) {
        return fmt(r, "failed%s: %s",
                   have_s ? fmt(r, " after %s s", num(r, seconds, 1)) : "",
                   error != NULL && error[0] ? error : "no reason given");
    }
    const char *parts[4];
    size_t n = 0;
    if (mode != NULL) {
        parts[n++] = mode;
    }
    if (have_s) {
        parts[n++] = fmt(r, "%s s", num(r, seconds, 1));
    }
    if (have_w) {
        parts[n++] = fmt(r, "%" PRIu64 " windows", windows);
    }
    if (have_l) {
        parts[n++] = fmt(r, "validation loss %s", num(r, val_loss, 3));
    }
    return fmt(r, "model version %" PRIu64 "%s%s%s", version, n > 0 ? " (" : "",
               list(r, parts, n), n > 0 ? ")" : "");
}

int node_render_status(const char *body,
                       size_t len,
                       FILE *out,
                       int *ready,
                       char errmsg[SM_ERRMSG_SIZE])
{
    struct rd r;
    struct node_text b = {NULL, 0, 0, 0};
    rd_open(&r, body, len, errmsg);
    const struct node_json *root = r.root;

    const char *id = get_str(&r, root, "", "id", 0);
    const char *version = get_str(&r, root, "", "version", OPTIONAL);
    const char *role = get_str(&r, root, "", "role", OPTIONAL);
    int is_ready;
    get_bool(&r, root, "", "ready", 0, &is_ready);
    if (ready != NULL) {
        *ready = is_ready;
    }
    const char *about[2];
    size_t n_about = 0;
    if (version != NULL) {
        about[n_about++] = fmt(&r, "sagemesh %s", version);
    }
    if (role != NULL) {
        about[n_about++] = role;
    }
    kv(&b, "peer",
       fmt(&r, "%s%s%s%s", id != NULL ? id : "", n_about ? " (" : "",
           list(&r, about, n_about), n_about ? ")" : ""));
    kv(&b, "ready",
       is_ready ? "yes" : "no (starting, or its store is not loaded)");

    const struct node_json *win = get_obj(&r, root, "", "windows", 0);
    uint64_t open, closed, stored, replayed, newest;
    get_u64(&r, win, "windows", "open", 0, &open);
    get_u64(&r, win, "windows", "closed", 0, &closed);
    get_u64(&r, win, "windows", "stored", 0, &stored);
    get_u64(&r, win, "windows", "replayed", 0, &replayed);
    get_u64(&r, win, "windows", "newest_end_unix_nano", OPTIONAL, &newest);
    kv(&b, "windows",
       fmt(&r,
           "%" PRIu64 " open, %" PRIu64 " closed, %" PRIu64 " stored, %" PRIu64
           " replayed%s%s",
           open, closed, stored, replayed, newest ? "; newest ended " : "",
           newest ? when(&r, newest) : ""));

    const struct node_json *qos = get_obj(&r, root, "", "qos", MAY_BE_NULL);
    const char *svc =
        qos ? get_str(&r, qos, "qos", "service", MAY_BE_NULL) : NULL;
    if (svc == NULL) {
        kv(&b, "qos", "not configured (--qos-service, --qos-target-ms)");
    } else {
        const char *op = get_str(&r, qos, "qos", "operation", OPTIONAL);
        double pct, target, last;
        int violated;
        int have_p = get_num(&r, qos, "qos", "percentile", OPTIONAL, &pct);
        int have_t = get_num(&r, qos, "qos", "target_ms", MAY_BE_NULL, &target);
        int have_l =
            get_num(&r, qos, "qos", "last_latency_ms", MAY_BE_NULL, &last);
        get_bool(&r, qos, "qos", "last_violated", OPTIONAL, &violated);
        kv(&b, "qos",
           fmt(&r, "%s%s%s%s%s target %s ms; last window %s", svc,
               op ? " " : "", op ? op : "", have_p ? " p" : "",
               have_p ? num(&r, pct, 2) : "", have_t ? num(&r, target, 1) : "?",
               have_l ? fmt(&r, "%s ms (%s)", num(&r, last, 1),
                            violated ? "violated" : "met")
                      : "not measured yet"));
    }

    const struct node_json *cbn = get_obj(&r, root, "", "cbn", 0);
    uint64_t cbn_version;
    get_u64(&r, cbn, "cbn", "version", 0, &cbn_version);
    const struct node_json *nodes = get_arr(&r, cbn, "cbn", "nodes", 0);
    size_t inferred = 0;
    for (size_t i = 0; i < nodes->n; i++) {
        int inf;
        get_bool(&r, item_obj(&r, nodes, "cbn.nodes", i), "cbn.nodes[]",
                 "inferred", OPTIONAL, &inf);
        inferred += inf != 0;
    }
    kv(&b, "cbn",
       fmt(&r, "version %" PRIu64 ", %zu nodes%s", cbn_version, nodes->n,
           inferred ? fmt(&r, " (%zu inferred)", inferred) : ""));

    const struct node_json *model = get_obj(&r, root, "", "model", MAY_BE_NULL);
    if (model == NULL) {
        kv(&b, "model", "none: no --qos-service, so no training or diagnoses");
    } else {
        uint64_t mver, params, rounds_ok, rounds_failed, rounds, windows;
        int training, loaded;
        get_u64(&r, model, "model", "version", 0, &mver);
        int have_params =
            get_u64(&r, model, "model", "params", OPTIONAL, &params);
        get_bool(&r, model, "model", "loaded", OPTIONAL, &loaded);
        get_bool(&r, model, "model", "training", 0, &training);
        get_u64(&r, model, "model", "rounds_ok", 0, &rounds_ok);
        get_u64(&r, model, "model", "rounds_failed", 0, &rounds_failed);
        get_u64(&r, model, "model", "rounds_finished", 0, &rounds);
        get_u64(&r, model, "model", "windows", 0, &windows);
        kv(&b, "model",
           mver == 0
               ? fmt(&r, "none yet; %" PRIu64 " windows held", windows)
               : fmt(&r, "version %" PRIu64 "%s%s; %" PRIu64 " windows held",
                     mver,
                     have_params ? fmt(&r, ", %" PRIu64 " parameters", params)
                                 : "",
                     loaded ? ", loaded at start" : "", windows));
        kv(&b, "training",
           fmt(&r,
               "%s; %" PRIu64 " round%s finished (%" PRIu64 " ok, %" PRIu64
               " failed)",
               training ? "running" : "idle", rounds, rounds == 1 ? "" : "s",
               rounds_ok, rounds_failed));
        const struct node_json *last =
            get_obj(&r, model, "model", "last_round", MAY_BE_NULL);
        if (last != NULL) {
            int ok;
            const char *outcome = round_outcome(&r, last, mver, &ok);
            kv(&b, "last round", ok ? fmt(&r, "ok: %s", outcome) : outcome);
        } else {
            kv(&b, "last round", "none yet");
        }
        const char *next = next_round(&r, model, mver, training);
        if (next != NULL) {
            kv(&b, "next round", next);
        }
    }
    const struct node_json *dg = get_obj(&r, root, "", "diagnoses", 0);
    uint64_t d_stored, d_ok, d_failed, d_dropped, d_pending;
    get_u64(&r, dg, "diagnoses", "stored", 0, &d_stored);
    get_u64(&r, dg, "diagnoses", "ok", 0, &d_ok);
    get_u64(&r, dg, "diagnoses", "failed", 0, &d_failed);
    get_u64(&r, dg, "diagnoses", "dropped", 0, &d_dropped);
    get_u64(&r, dg, "diagnoses", "pending", 0, &d_pending);
    kv(&b, "diagnoses",
       fmt(&r,
           "%" PRIu64 " stored (%" PRIu64 " ok, %" PRIu64 " failed, %" PRIu64
           " dropped, %" PRIu64 " pending)",
           d_stored, d_ok, d_failed, d_dropped, d_pending));
    const struct node_json *mesh = get_obj(&r, root, "", "mesh", OPTIONAL);
    if (mesh != NULL) {
        const char *leader = get_str(&r, root, "", "leader", OPTIONAL);
        uint64_t term = 0, epoch = 0;
        get_u64(&r, root, "", "term", OPTIONAL, &term);
        const struct node_json *members =
            get_arr(&r, mesh, "mesh", "members", OPTIONAL);
        const struct node_json *pl =
            get_obj(&r, mesh, "mesh", "placement", OPTIONAL);
        size_t shards = 0;
        if (pl != NULL) {
            get_u64(&r, pl, "mesh.placement", "epoch", OPTIONAL, &epoch);
            shards = get_arr(&r, pl, "mesh.placement", "shards", OPTIONAL)->n;
        }
        kv(&b, "mesh",
           fmt(&r,
               "%zu members, leader %s, term %" PRIu64
               "; placement epoch %" PRIu64 ", %zu shards",
               members->n, leader != NULL ? leader : "unknown", term, epoch,
               shards));
    }
    return finish(&r, &b, out);
}

/* ---- Services ---------------------------------------------------------- */

int node_render_services(const char *body,
                         size_t len,
                         FILE *out,
                         char errmsg[SM_ERRMSG_SIZE])
{
    struct rd r;
    struct node_text b = {NULL, 0, 0, 0};
    rd_open(&r, body, len, errmsg);
    uint64_t version;
    get_u64(&r, r.root, "", "cbn_version", 0, &version);
    const struct node_json *list = get_arr(&r, r.root, "", "services", 0);
    static const char *const head[] = {"SERVICE", "NODE", "CALLERS", "CALLEES",
                                       NULL};
    struct table t;
    table_init(&t, &r, head);
    size_t inferred = 0;
    for (size_t i = 0; i < list->n; i++) {
        char where[48];
        snprintf(where, sizeof where, "services[%zu]", i);
        const struct node_json *s = item_obj(&r, list, "services", i);
        const char *name = get_str(&r, s, where, "name", 0);
        const char *node = get_str(&r, s, where, "node", 0);
        int inf;
        get_bool(&r, s, where, "inferred", OPTIONAL, &inf);
        inferred += inf != 0;
        cell(&t, inf ? fmt(&r, "%s*", name ? name : "") : name);
        cell(&t, node);
        char sub[64];
        snprintf(sub, sizeof sub, "%s.callers", where);
        cell(&t, join(&r, get_arr(&r, s, where, "callers", 0), sub, ", "));
        snprintf(sub, sizeof sub, "%s.callees", where);
        cell(&t, join(&r, get_arr(&r, s, where, "callees", 0), sub, ", "));
    }
    if (list->n == 0) {
        node_text_printf(&b,
                         "no services yet (CBN version %" PRIu64
                         "): the peer has not seen traces that name any\n",
                         version);
    } else {
        node_text_printf(&b, "CBN version %" PRIu64 ", %zu services\n", version,
                         list->n);
        table_write(&t, &b);
        if (inferred > 0) {
            node_text_printf(&b,
                             "* inferred: named only by its callers' "
                             "spans\n");
        }
    }
    table_free(&t);
    return finish(&r, &b, out);
}

/* ---- Diagnoses --------------------------------------------------------- */

int node_render_diagnoses(const char *body,
                          size_t len,
                          FILE *out,
                          char errmsg[SM_ERRMSG_SIZE])
{
    struct rd r;
    struct node_text b = {NULL, 0, 0, 0};
    struct node_text notes = {NULL, 0, 0, 0};
    rd_open(&r, body, len, errmsg);
    const struct node_json *list = get_arr(&r, r.root, "", "diagnoses", 0);
    static const char *const head[] = {
        "WINDOW END",       "CULPRIT", "RESOURCE", "P(QOS MET)",
        "LATENCY / TARGET", "MODEL",   "PATH",     NULL};
    struct table t;
    table_init(&t, &r, head);
    int no_culprit = 0;
    size_t extrapolating = 0;
    for (size_t i = 0; i < list->n; i++) {
        char where[48];
        snprintf(where, sizeof where, "diagnoses[%zu]", i);
        const struct node_json *d = item_obj(&r, list, "diagnoses", i);
        uint64_t end, model;
        double latency, target;
        get_u64(&r, d, where, "window_end_unix_nano", 0, &end);
        const char *error = get_str(&r, d, where, "error", OPTIONAL);
        if (error != NULL) {
            static const char *const dashes[] = {
                "(not diagnosed)", "-", "-", "-", "-", "-"};
            cell(&t, when(&r, end));
            for (size_t k = 0; k < 6; k++) {
                cell(&t, dashes[k]);
            }
            node_text_printf(&notes,
                             "note: %s was not diagnosed: ", when(&r, end));
            node_text_put(&notes, error, strlen(error));
            node_text_put(&notes, "\n", 1);
            continue;
        }
        get_num(&r, d, where, "latency_ms", 0, &latency);
        get_num(&r, d, where, "target_ms", 0, &target);
        get_u64(&r, d, where, "model_version", 0, &model);
        char sub[64];
        snprintf(sub, sizeof sub, "%s.path", where);
        const char *path =
            join(&r, get_arr(&r, d, where, "path", OPTIONAL), sub, " -> ");
        snprintf(sub, sizeof sub, "%s.unseen", where);
        const struct node_json *unseen =
            get_arr(&r, d, where, "unseen", OPTIONAL);
        if (unseen->n > 0) {
            /* Checked, not printed: the names are the model's feature
             * keys, long and many; one summary note says where they are. */
            (void)join(&r, unseen, sub, ", ");
            extrapolating++;
        }
        snprintf(sub, sizeof sub, "%s.culprits", where);
        const struct node_json *culprits = get_arr(&r, d, where, "culprits", 0);
        const char *lat =
            fmt(&r, "%s / %s ms", num(&r, latency, 1), num(&r, target, 1));
        if (culprits->n == 0) {
            no_culprit = 1;
            const char *row[] = {when(&r, end), "(none)",
                                 "-",           "-",
                                 lat,           fmt(&r, "%" PRIu64, model),
                                 path};
            for (size_t k = 0; k < 7; k++) {
                cell(&t, row[k]);
            }
        }
        for (size_t k = 0; k < culprits->n; k++) {
            char cw[96];
            snprintf(cw, sizeof cw, "%s[%zu]", sub, k);
            const struct node_json *c = item_obj(&r, culprits, sub, k);
            double p;
            const char *svc = get_str(&r, c, cw, "service", 0);
            const char *res = get_str(&r, c, cw, "resource", 0);
            get_num(&r, c, cw, "p_qos_met", 0, &p);
            cell(&t, k == 0 ? when(&r, end) : "");
            cell(&t, svc);
            cell(&t, res);
            cell(&t, prob(&r, p));
            cell(&t, k == 0 ? lat : "");
            cell(&t, k == 0 ? fmt(&r, "%" PRIu64, model) : "");
            cell(&t, k == 0 ? path : "");
        }
    }
    if (list->n == 0) {
        node_text_printf(&b,
                         "no diagnoses yet: no window has violated the QoS "
                         "target, or the peer has\nno model yet to diagnose "
                         "with (see 'sagemesh status')\n");
    } else {
        table_write(&t, &b);
        if (no_culprit) {
            node_text_printf(&b,
                             "(none): no change to one service restores "
                             "the QoS (a load spike?)\n");
        }
        if (notes.len > 0) {
            node_text_put(&b, notes.s, notes.len);
        }
        if (extrapolating > 0) {
            node_text_printf(&b,
                             "note: %zu of these diagnoses extrapolate: some "
                             "inputs lie outside what the\nmodel was trained "
                             "on ('-o json' lists them under \"unseen\")\n",
                             extrapolating);
        }
    }
    if (notes.failed) {
        fail(&r, SM_ENOMEM, "no memory for the notes");
    }
    free(notes.s);
    table_free(&t);
    return finish(&r, &b, out);
}

/* ---- Diagnose ---------------------------------------------------------- */

int node_render_diagnose_ticket(const char *body,
                                size_t len,
                                char id[NODE_RENDER_ID_SIZE],
                                uint64_t *windows,
                                char errmsg[SM_ERRMSG_SIZE])
{
    struct rd r;
    rd_open(&r, body, len, errmsg);
    const struct node_json *v =
        member(&r, r.root, "", "request", NODE_JSON_STRING, 0);
    get_u64(&r, r.root, "", "windows", 0, windows);
    if (v != NULL) {
        size_t ok =
            strspn(v->str,
                   "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                   "0123456789-_.");
        if (v->len == 0 || v->len >= NODE_RENDER_ID_SIZE || ok != v->len) {
            fail(&r, SM_EMALFORMED,
                 "request: expected an id of 1 to %d letters, digits, '-', "
                 "'_' or '.'",
                 NODE_RENDER_ID_SIZE - 1);
        }
    }
    if (r.rv == SM_OK && v != NULL) {
        memcpy(id, v->str, v->len + 1);
    }
    int rv = r.rv;
    rd_close(&r);
    return rv;
}

/* One window of a diagnose result: its line, ranking and culprit line, or
 * the peer's error for it (counted in *@failed). */
static void diagnose_window(struct rd *r,
                            const struct node_json *d,
                            const char *where,
                            size_t *failed,
                            struct node_text *b)
{
    uint64_t start, end, model;
    double latency, target, pct;
    int violated;
    get_u64(r, d, where, "window_end_unix_nano", 0, &end);
    const char *error = get_str(r, d, where, "error", OPTIONAL);
    if (error != NULL) {
        (*failed)++;
        const char *line = fmt(r, "window ending %s: not diagnosed: %s\n",
                               when(r, end), error);
        node_text_put(b, line, strlen(line));
        return;
    }
    get_u64(r, d, where, "window_start_unix_nano", 0, &start);
    const char *svc = get_str(r, d, where, "service", 0);
    const char *op = get_str(r, d, where, "operation", OPTIONAL);
    int have_p = get_num(r, d, where, "percentile", OPTIONAL, &pct);
    get_num(r, d, where, "latency_ms", 0, &latency);
    get_num(r, d, where, "target_ms", 0, &target);
    get_bool(r, d, where, "violated", 0, &violated);
    get_u64(r, d, where, "model_version", 0, &model);
    const char *line = fmt(
        r, "window %s to %s: %s%s%s%s%s %s / %s ms, %s (model %" PRIu64 ")\n",
        when(r, start), when(r, end), svc ? svc : "", op ? " " : "",
        op ? op : "", have_p ? " p" : "", have_p ? num(r, pct, 2) : "",
        num(r, latency, 1), num(r, target, 1), violated ? "violated" : "met",
        model);
    node_text_put(b, line, strlen(line));

    char sub[80];
    snprintf(sub, sizeof sub, "%s.ranking", where);
    const struct node_json *ranking = get_arr(r, d, where, "ranking", 0);
    static const char *const head[] = {"RANK",      "SERVICE",    "SCORE",
                                       "EFFECT_MS", "P(QOS MET)", "EVIDENCE",
                                       NULL};
    struct table t;
    table_init(&t, r, head);
    for (size_t i = 0; i < ranking->n; i++) {
        char rw[112];
        snprintf(rw, sizeof rw, "%s[%zu]", sub, i);
        const struct node_json *c = item_obj(r, ranking, sub, i);
        double score, effect, p, evidence;
        const char *name = get_str(r, c, rw, "service", 0);
        get_num(r, c, rw, "score", 0, &score);
        int have_e = get_num(r, c, rw, "effect_ms", OPTIONAL, &effect);
        int have_q = get_num(r, c, rw, "p_qos_met", OPTIONAL, &p);
        int have_v = get_num(r, c, rw, "evidence", OPTIONAL, &evidence);
        cell(&t, fmt(r, "%zu", i + 1));
        cell(&t, name);
        cell(&t, prob(r, score));
        cell(&t, have_e ? fixed(r, effect, 1) : "-");
        cell(&t, have_q ? prob(r, p) : "-");
        cell(&t, have_v ? fixed(r, evidence, 1) : "-");
    }
    if (ranking->n == 0) {
        node_text_printf(b, "(no candidate services in this window)\n");
    } else {
        table_write(&t, b);
    }
    table_free(&t);

    snprintf(sub, sizeof sub, "%s.culprits", where);
    const struct node_json *culprits = get_arr(r, d, where, "culprits", 0);
    struct node_text c = {NULL, 0, 0, 0};
    for (size_t i = 0; i < culprits->n; i++) {
        char cw[112];
        snprintf(cw, sizeof cw, "%s[%zu]", sub, i);
        const struct node_json *x = item_obj(r, culprits, sub, i);
        double p;
        const char *name = get_str(r, x, cw, "service", 0);
        const char *res = get_str(r, x, cw, "resource", 0);
        get_num(r, x, cw, "p_qos_met", 0, &p);
        const char *one =
            fmt(r, "%s%s (%s, P(QoS met) %s if fixed)", i ? ", " : "",
                name ? name : "", res ? res : "", prob(r, p));
        node_text_put(&c, one, strlen(one));
    }
    snprintf(sub, sizeof sub, "%s.path", where);
    const struct node_json *path = get_arr(r, d, where, "path", OPTIONAL);
    const char *p = join(r, path, sub, " -> ");
    if (culprits->n > 0) {
        node_text_printf(b, "culprit%s: ", culprits->n > 1 ? "s" : "");
        if (c.s != NULL) {
            node_text_put(b, c.s, c.len);
        }
        if (path->n > 0) {
            node_text_put(b, "; path ", 7);
            node_text_put(b, p, strlen(p));
        }
        node_text_put(b, "\n", 1);
    } else {
        node_text_printf(b, "culprit: none (%s)\n",
                         violated ? "no change to one service restores the "
                                    "QoS: a load spike?"
                                  : "the QoS was met");
    }
    if (c.failed) {
        fail(r, SM_ENOMEM, "no memory for the culprit line");
    }
    free(c.s);
}

int node_render_diagnose_done(const char *body,
                              size_t len,
                              int *done,
                              char errmsg[SM_ERRMSG_SIZE])
{
    struct rd r;
    rd_open(&r, body, len, errmsg);
    get_bool(&r, r.root, "", "done", 0, done);
    int rv = r.rv;
    rd_close(&r);
    return rv;
}

int node_render_diagnose_result(const char *body,
                                size_t len,
                                int *done,
                                size_t *failed,
                                FILE *out,
                                char errmsg[SM_ERRMSG_SIZE])
{
    struct rd r;
    struct node_text b = {NULL, 0, 0, 0};
    size_t n_failed = 0;
    rd_open(&r, body, len, errmsg);
    get_bool(&r, r.root, "", "done", 0, done);
    const struct node_json *list = get_arr(&r, r.root, "", "diagnoses", 0);
    if (*done) {
        if (list->n == 0) {
            node_text_printf(&b, "no window in the range was diagnosed\n");
        }
        for (size_t i = 0; i < list->n; i++) {
            char where[48];
            snprintf(where, sizeof where, "diagnoses[%zu]", i);
            if (i > 0) {
                node_text_put(&b, "\n", 1);
            }
            diagnose_window(&r, item_obj(&r, list, "diagnoses", i), where,
                            &n_failed, &b);
        }
    }
    if (failed != NULL) {
        *failed = n_failed;
    }
    return finish(&r, &b, out);
}

/* ---- Train ------------------------------------------------------------- */

int node_render_train_ticket(const char *body,
                             size_t len,
                             uint64_t *model_version,
                             uint64_t *wait_for_rounds,
                             char errmsg[SM_ERRMSG_SIZE])
{
    struct rd r;
    rd_open(&r, body, len, errmsg);
    get_u64(&r, r.root, "", "model_version", 0, model_version);
    get_u64(&r, r.root, "", "wait_for_rounds", 0, wait_for_rounds);
    int rv = r.rv;
    rd_close(&r);
    return rv;
}

int node_render_train_rounds(const char *body,
                             size_t len,
                             uint64_t *rounds,
                             char errmsg[SM_ERRMSG_SIZE])
{
    struct rd r;
    rd_open(&r, body, len, errmsg);
    const struct node_json *model = get_obj(&r, r.root, "", "model", 0);
    get_u64(&r, model, "model", "rounds_finished", 0, rounds);
    int rv = r.rv;
    rd_close(&r);
    return rv;
}

int node_render_train_outcome(const char *body,
                              size_t len,
                              FILE *out,
                              int *ok,
                              char errmsg[SM_ERRMSG_SIZE])
{
    struct rd r;
    struct node_text b = {NULL, 0, 0, 0};
    rd_open(&r, body, len, errmsg);
    *ok = 0;
    const struct node_json *model = get_obj(&r, r.root, "", "model", 0);
    uint64_t version;
    get_u64(&r, model, "model", "version", 0, &version);
    const struct node_json *last =
        get_obj(&r, model, "model", "last_round", MAY_BE_NULL);
    if (last == NULL) {
        fail(&r, SM_EMALFORMED,
             "model.last_round is null although a round has finished");
    } else {
        const char *outcome = round_outcome(&r, last, version, ok);
        node_text_printf(&b, "training round %s", *ok ? "finished: " : "");
        node_text_put(&b, outcome, strlen(outcome));
        node_text_put(&b, "\n", 1);
    }
    if (r.rv != SM_OK) {
        *ok = 0;
    }
    return finish(&r, &b, out);
}

/* ---- Actions ----------------------------------------------------------- */

/* A knob value in its unit, for the table. */
static const char *amount(struct rd *r, const char *unit, double v)
{
    if (strcmp(unit, "bytes") == 0) {
        return fmt(r, "%s MiB", num(r, v / (1024.0 * 1024.0), 1));
    }
    if (strcmp(unit, "cores") == 0) {
        return fmt(r, "%s cores", num(r, v, 2));
    }
    if (strcmp(unit, "khz") == 0) {
        return fmt(r, "%s MHz", num(r, v / 1000.0, 0));
    }
    return fmt(r, "%s %s", num(r, v, 0), unit);
}

int node_render_actions(const char *body,
                        size_t len,
                        FILE *out,
                        char errmsg[SM_ERRMSG_SIZE])
{
    struct rd r;
    struct node_text b = {NULL, 0, 0, 0};
    rd_open(&r, body, len, errmsg);
    const struct node_json *list = get_arr(&r, r.root, "", "actions", 0);
    static const char *const head[] = {
        "ID",   "DECIDED", "SERVICE", "RESOURCE", "ACTION",
        "FROM", "TO",      "STATE",   "NOTE",     NULL};
    struct table t;
    table_init(&t, &r, head);
    for (size_t i = 0; i < list->n; i++) {
        char where[48];
        snprintf(where, sizeof where, "actions[%zu]", i);
        const struct node_json *a = item_obj(&r, list, "actions", i);
        uint64_t decided = 0;
        get_u64(&r, a, where, "decided_unix_nano", 0, &decided);
        double from = 0, to = 0;
        get_num(&r, a, where, "from", 0, &from);
        get_num(&r, a, where, "to", 0, &to);
        const char *unit = get_str(&r, a, where, "unit", 0);
        const char *state = get_str(&r, a, where, "state", 0);
        const char *mode = get_str(&r, a, where, "mode", 0);
        const char *error = get_str(&r, a, where, "error", OPTIONAL);
        const char *reason = get_str(&r, a, where, "reason", 0);
        unit = unit ? unit : "";
        cell(&t, get_str(&r, a, where, "id", 0));
        cell(&t, when(&r, decided));
        cell(&t, get_str(&r, a, where, "service", 0));
        cell(&t, get_str(&r, a, where, "resource", 0));
        cell(&t, get_str(&r, a, where, "kind", 0));
        cell(&t, amount(&r, unit, from));
        cell(&t, amount(&r, unit, to));
        cell(&t, state);
        cell(&t,
             error != NULL ? error
             : state != NULL && mode != NULL && strcmp(state, "dry_run") == 0
                 ? fmt(&r, "not applied (--actuate %s)", mode)
                 : reason);
    }
    if (list->n == 0) {
        node_text_printf(&b,
                         "no actions: no diagnosis has named a culprit "
                         "that the rules act on, or --actuate is off\n");
    } else {
        table_write(&t, &b);
    }
    table_free(&t);
    return finish(&r, &b, out);
}

/* ---- Members ----------------------------------------------------------- */

int node_render_members(const char *body,
                        size_t len,
                        FILE *out,
                        char errmsg[SM_ERRMSG_SIZE])
{
    struct rd r;
    struct node_text b = {NULL, 0, 0, 0};
    rd_open(&r, body, len, errmsg);
    const struct node_json *list = get_arr(&r, r.root, "", "members", 0);
    static const char *const head[] = {"ID",     "ADDRESS", "ROLE",
                                       "HEALTH", "LEADER",  NULL};
    struct table t;
    table_init(&t, &r, head);
    for (size_t i = 0; i < list->n; i++) {
        char where[48];
        snprintf(where, sizeof where, "members[%zu]", i);
        const struct node_json *m = item_obj(&r, list, "members", i);
        int leader = 0, self = 0;
        get_bool(&r, m, where, "leader", 0, &leader);
        get_bool(&r, m, where, "self", OPTIONAL, &self);
        const char *id = get_str(&r, m, where, "id", 0);
        cell(&t, self ? fmt(&r, "%s (this peer)", id ? id : "") : id);
        cell(&t, get_str(&r, m, where, "address", 0));
        cell(&t, get_str(&r, m, where, "role", 0));
        cell(&t, get_str(&r, m, where, "health", 0));
        cell(&t, leader ? "leader" : "");
    }
    if (list->n == 0) {
        node_text_printf(&b,
                         "no members: the peer has not joined a mesh "
                         "yet\n");
    } else {
        table_write(&t, &b);
    }
    table_free(&t);
    return finish(&r, &b, out);
}
