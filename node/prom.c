/* Prometheus text exposition format 0.0.4: a single-pass sample parser.
 *
 * The input is cut into lines at '\n' (a '\r' before it is dropped). Each
 * line is a blank line, a comment, a # HELP or # TYPE line, or a sample
 *
 *   name [ '{' [ lname '=' '"' value '"' { ',' ... } [ ',' ] ] '}' ]
 *        value [ timestamp ]
 *
 * with spaces or tabs between tokens, as the Go client library's parser
 * reads it (blanks are allowed before the name, around '{', ',', '=' and
 * '}', and a trailing comma is allowed in a label set).
 *
 * Memory. Strings handed to the callback live in one scratch buffer that is
 * sized before each sample line to the line's length plus one: every string
 * written for a line (the name, each label name and unescaped value, the
 * NUL-terminated copy of the value token) fits in the bytes of the line it
 * came from plus the one byte that follows it, so nothing moves while the
 * line is parsed. The label array grows by doubling. Both are reused from
 * line to line, so after the longest line nothing is allocated per sample.
 *
 * Families. Every # TYPE line enters its family name and type into a small
 * open-addressing hash table (names live in a separate pool). A sample is in
 * the family named exactly like it when one was TYPE'd; otherwise, when its
 * name ends in _bucket (histogram) or _sum/_count (histogram or summary),
 * in the family named by the rest if that family has the matching type;
 * otherwise in a family of its own name, untyped. A second # TYPE for a
 * name is an error, wherever it appears; a # TYPE after untyped samples of
 * the same name is not detected (those samples were reported untyped).
 *
 * Numbers. Values go through strtod() on a NUL-terminated copy of the token,
 * after checking that the token holds only ASCII letters, digits, '.', '+'
 * and '-' (so no blanks, no "nan(...)" and no ','). We never call setlocale,
 * so the decimal point is '.'; should some library switch LC_NUMERIC to a
 * locale with another single-byte decimal point, the copy has its '.'
 * replaced by that character first, so "0.5" still means one half. strtod
 * accepts what Go's strconv.ParseFloat accepts and a little more (hex
 * mantissas without an exponent, "+nan"); overflow to infinity is an
 * error, as in Go, while underflow to zero or a subnormal is not. */
#include <errno.h>
#include <locale.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/err.h"
#include "node/prom.h"

/* Longest line accepted, not counting its "\n" or "\r\n". */
#define MAX_LINE (64u * 1024u)

/* Label sets up to this size are checked for duplicate names pairwise;
 * larger ones through a sorted copy. */
#define SMALL_LABEL_SET 16

/* A family named by a # TYPE line. An empty slot has len == 0. */
struct family
{
    size_t off; /* of the NUL-terminated name in the pool */
    size_t len;
    uint32_t hash;
    enum node_prom_type type;
};

struct parser
{
    node_prom_sample_cb cb;
    void *arg;
    char *errmsg;
    size_t line_no;
    char decimal_point; /* of the current LC_NUMERIC */

    /* Scratch for the strings of one sample line. */
    char *buf;
    size_t buf_cap;
    size_t buf_used;

    /* Labels of one sample line; for large sets, the second half holds a
     * sorted copy for the duplicate check. */
    struct node_prom_label *labels;
    size_t labels_cap;

    /* TYPE'd families: table of fam_cap slots (a power of two), names in
     * the pool. */
    struct family *fams;
    size_t fam_cap;
    size_t fam_n;
    char *pool;
    size_t pool_len;
    size_t pool_cap;
};

static const char *const type_names[] = {
    [NODE_PROM_UNTYPED] = "untyped", [NODE_PROM_COUNTER] = "counter",
    [NODE_PROM_GAUGE] = "gauge",     [NODE_PROM_HISTOGRAM] = "histogram",
    [NODE_PROM_SUMMARY] = "summary",
};
#define N_TYPES (sizeof type_names / sizeof type_names[0])

const char *node_prom_type_name(enum node_prom_type type)
{
    if ((size_t)type >= N_TYPES) {
        return "unknown";
    }
    return type_names[type];
}

/* ---- Errors ------------------------------------------------------------ */

/* Writes "line N: <formatted reason>" to the error message and returns
 * @rv. */
static int fail(struct parser *ps, int rv, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(struct parser *ps, int rv, const char *fmt, ...)
{
    if (ps->errmsg != NULL) {
        char reason[SM_ERRMSG_SIZE];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(reason, sizeof reason, fmt, ap);
        va_end(ap);
        sm_errmsg_printf(ps->errmsg, "line %zu: %s", ps->line_no, reason);
    }
    return rv;
}

/* Longest excerpt of bad input quoted in error messages. */
#define EXCERPT 32

/* Copies the token at @p (up to the next blank, @end or EXCERPT bytes)
 * into @out for an error message, with bytes that are not printable ASCII
 * replaced by '?', so that a log line stays one clean line. */
static const char *excerpt(char out[EXCERPT + 1],
                           const char *p,
                           const char *end)
{
    size_t n = 0;
    for (; p + n < end && n < EXCERPT && p[n] != ' ' && p[n] != '\t'; n++) {
        char c = p[n];
        out[n] = c >= ' ' && c <= '~' ? c : '?';
    }
    out[n] = '\0';
    return out;
}

/* ---- Characters --------------------------------------------------------- */

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static int is_blank(char c)
{
    return c == ' ' || c == '\t';
}

static int is_alpha_(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static int is_metric_start(char c)
{
    return is_alpha_(c) || c == ':';
}

static int is_metric_char(char c)
{
    return is_alpha_(c) || is_digit(c) || c == ':';
}

static int is_label_start(char c)
{
    return is_alpha_(c);
}

static int is_label_char(char c)
{
    return is_alpha_(c) || is_digit(c);
}

static const char *skip_blanks(const char *p, const char *end)
{
    while (p < end && is_blank(*p)) {
        p++;
    }
    return p;
}

/* Returns the end of the metric name starting at @p (== @p if none). */
static const char *scan_metric_name(const char *p, const char *end)
{
    if (p == end || !is_metric_start(*p)) {
        return p;
    }
    p++;
    while (p < end && is_metric_char(*p)) {
        p++;
    }
    return p;
}

static const char *scan_label_name(const char *p, const char *end)
{
    if (p == end || !is_label_start(*p)) {
        return p;
    }
    p++;
    while (p < end && is_label_char(*p)) {
        p++;
    }
    return p;
}

/* Returns the end of the token at @p: the next blank or @end. */
static const char *scan_token(const char *p, const char *end)
{
    while (p < end && !is_blank(*p)) {
        p++;
    }
    return p;
}

/* ASCII case-insensitive comparison of [p, p + n) with the lower-case
 * NUL-terminated @word (locale-independent, unlike strncasecmp). */
static int token_is(const char *p, size_t n, const char *word)
{
    size_t i = 0;
    for (; i < n && word[i] != '\0'; i++) {
        char c = p[i];
        if (c >= 'A' && c <= 'Z') {
            c = (char)(c - 'A' + 'a');
        }
        if (c != word[i]) {
            return 0;
        }
    }
    return i == n && word[i] == '\0';
}

/* ---- Scratch ------------------------------------------------------------ */

/* Makes the string scratch hold at least @need bytes (contents are not
 * kept) and empties it. */
static int buf_reserve(struct parser *ps, size_t need)
{
    ps->buf_used = 0;
    if (need <= ps->buf_cap) {
        return SM_OK;
    }
    size_t cap = ps->buf_cap < 256 ? 256 : ps->buf_cap;
    while (cap < need) {
        cap *= 2;
    }
    if (cap > MAX_LINE + 1 && need <= MAX_LINE + 1) {
        cap = MAX_LINE + 1;
    }
    char *b = sm_realloc(ps->buf, cap);
    if (b == NULL) {
        return SM_ENOMEM;
    }
    ps->buf = b;
    ps->buf_cap = cap;
    return SM_OK;
}

/* Copies [p, p + n) into the scratch, NUL-terminated; returns the copy. */
static char *buf_put(struct parser *ps, const char *p, size_t n)
{
    SM_ASSERT(ps->buf_used + n + 1 <= ps->buf_cap);
    char *s = ps->buf + ps->buf_used;
    memcpy(s, p, n);
    s[n] = '\0';
    ps->buf_used += n + 1;
    return s;
}

/* Makes room for at least @n labels. */
static int labels_reserve(struct parser *ps, size_t n)
{
    if (n <= ps->labels_cap) {
        return SM_OK;
    }
    size_t cap = ps->labels_cap < 8 ? 8 : ps->labels_cap;
    while (cap < n) {
        cap *= 2;
    }
    struct node_prom_label *l =
        sm_reallocarray(ps->labels, cap, sizeof ps->labels[0]);
    if (l == NULL) {
        return SM_ENOMEM;
    }
    ps->labels = l;
    ps->labels_cap = cap;
    return SM_OK;
}

/* ---- Families ----------------------------------------------------------- */

static uint32_t hash_name(const char *p, size_t n)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 16777619u;
    }
    return h;
}

/* Returns the slot for the name [p, p + n): the family, or the empty slot
 * where it would go. The table must exist and have an empty slot. */
static struct family *fam_slot(const struct parser *ps,
                               const char *p,
                               size_t n,
                               uint32_t h)
{
    size_t mask = ps->fam_cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        struct family *f = &ps->fams[i];
        if (f->len == 0 || (f->hash == h && f->len == n &&
                            memcmp(ps->pool + f->off, p, n) == 0)) {
            return f;
        }
    }
}

static const struct family *fam_find(const struct parser *ps,
                                     const char *p,
                                     size_t n)
{
    if (ps->fam_n == 0) {
        return NULL;
    }
    const struct family *f = fam_slot(ps, p, n, hash_name(p, n));
    return f->len == 0 ? NULL : f;
}

/* Enters the family [p, p + n) of @type. Returns SM_OK, SM_EEXIST when the
 * name is already there, or SM_ENOMEM (with nothing changed). */
static int fam_add(struct parser *ps,
                   const char *p,
                   size_t n,
                   enum node_prom_type type)
{
    uint32_t h = hash_name(p, n);
    if (ps->fam_n > 0 && fam_slot(ps, p, n, h)->len != 0) {
        return SM_EEXIST;
    }
    /* Room in the pool first, then in the table; the table grows at 3/4
     * load so that probing always finds an empty slot. */
    if (ps->pool_len + n + 1 > ps->pool_cap) {
        size_t cap = ps->pool_cap < 1024 ? 1024 : ps->pool_cap * 2;
        while (cap < ps->pool_len + n + 1) {
            cap *= 2;
        }
        char *pool = sm_realloc(ps->pool, cap);
        if (pool == NULL) {
            return SM_ENOMEM;
        }
        ps->pool = pool;
        ps->pool_cap = cap;
    }
    if ((ps->fam_n + 1) * 4 > ps->fam_cap * 3) {
        size_t cap = ps->fam_cap == 0 ? 64 : ps->fam_cap * 2;
        struct family *fams = sm_calloc(cap, sizeof *fams);
        if (fams == NULL) {
            return SM_ENOMEM;
        }
        struct family *old = ps->fams;
        size_t old_cap = ps->fam_cap;
        ps->fams = fams;
        ps->fam_cap = cap;
        for (size_t i = 0; i < old_cap; i++) {
            if (old[i].len != 0) {
                *fam_slot(ps, ps->pool + old[i].off, old[i].len, old[i].hash) =
                    old[i];
            }
        }
        sm_free(old);
    }
    memcpy(ps->pool + ps->pool_len, p, n);
    ps->pool[ps->pool_len + n] = '\0';
    struct family *f = fam_slot(ps, p, n, h);
    f->off = ps->pool_len;
    f->len = n;
    f->hash = h;
    f->type = type;
    ps->pool_len += n + 1;
    ps->fam_n++;
    return SM_OK;
}

static int ends_with(const char *p, size_t n, const char *suffix)
{
    size_t k = strlen(suffix);
    return n > k && memcmp(p + n - k, suffix, k) == 0;
}

/* Resolves the family of the sample named [p, p + n) into @s. */
static void resolve_family(const struct parser *ps,
                           const char *p,
                           size_t n,
                           struct node_prom_sample *s)
{
    const struct family *f = fam_find(ps, p, n);
    if (f == NULL) {
        size_t k = 0;
        int histogram_only = 0;
        if (ends_with(p, n, "_bucket")) {
            k = strlen("_bucket");
            histogram_only = 1;
        } else if (ends_with(p, n, "_sum")) {
            k = strlen("_sum");
        } else if (ends_with(p, n, "_count")) {
            k = strlen("_count");
        }
        if (k != 0) {
            f = fam_find(ps, p, n - k);
            if (f != NULL &&
                !(f->type == NODE_PROM_HISTOGRAM ||
                  (!histogram_only && f->type == NODE_PROM_SUMMARY))) {
                f = NULL;
            }
        }
    }
    if (f != NULL) {
        s->family = ps->pool + f->off;
        s->type = f->type;
    } else {
        s->family = s->name;
        s->type = NODE_PROM_UNTYPED;
    }
}

/* ---- Lines -------------------------------------------------------------- */

/* Parses a comment line; @p is just past the '#'. As in the Go parser, only
 * "HELP" and "TYPE" (upper case, as separate words) are special. */
static int parse_comment(struct parser *ps, const char *p, const char *end)
{
    char ex[EXCERPT + 1];
    p = skip_blanks(p, end);
    const char *kw = p;
    p = scan_token(p, end);
    int is_help = p - kw == 4 && memcmp(kw, "HELP", 4) == 0;
    int is_type = p - kw == 4 && memcmp(kw, "TYPE", 4) == 0;
    if (!is_help && !is_type) {
        return SM_OK; /* an ordinary comment */
    }
    const char *what = is_help ? "HELP" : "TYPE";
    const char *name = skip_blanks(p, end);
    if (name == end) {
        return fail(ps, SM_EMALFORMED, "# %s without a metric name", what);
    }
    const char *name_end = scan_metric_name(name, end);
    if (name_end == name || (name_end < end && !is_blank(*name_end))) {
        return fail(ps, SM_EMALFORMED, "bad metric name \"%s\" in # %s",
                    excerpt(ex, name, end), what);
    }
    if (is_help) {
        return SM_OK; /* the docstring is of no use to us */
    }
    const char *word = skip_blanks(name_end, end);
    p = scan_token(word, end);
    size_t word_len = (size_t)(p - word);
    if (word_len == 0) {
        return fail(ps, SM_EMALFORMED, "# TYPE %s without a type",
                    excerpt(ex, name, end));
    }
    /* Go's parser takes the type in any case; so do we. */
    size_t t = 0;
    while (t < N_TYPES && !token_is(word, word_len, type_names[t])) {
        t++;
    }
    if (t == N_TYPES) {
        return fail(ps, SM_EMALFORMED, "unknown metric type \"%s\"",
                    excerpt(ex, word, end));
    }
    if (skip_blanks(p, end) != end) {
        return fail(ps, SM_EMALFORMED, "unexpected text after # TYPE");
    }
    int rv =
        fam_add(ps, name, (size_t)(name_end - name), (enum node_prom_type)t);
    if (rv == SM_EEXIST) {
        return fail(ps, SM_EMALFORMED, "second # TYPE for %s",
                    excerpt(ex, name, end));
    }
    if (rv != SM_OK) {
        return fail(ps, rv, "out of memory");
    }
    return SM_OK;
}

/* Parses the quoted label value at @p (just past the opening quote) into
 * the scratch, unescaping \\ \" \n. On success sets *@out and returns the
 * position just past the closing quote; on failure returns NULL with the
 * error message written. */
static const char *parse_label_value(struct parser *ps,
                                     const char *p,
                                     const char *end,
                                     const char **out)
{
    char *s = ps->buf + ps->buf_used;
    char *w = s;
    while (p < end && *p != '"') {
        char c = *p++;
        if (c == '\\') {
            if (p == end) {
                break; /* unterminated */
            }
            char e = *p++;
            if (e == '\\' || e == '"') {
                c = e;
            } else if (e == 'n') {
                c = '\n';
            } else {
                fail(ps, SM_EMALFORMED, "bad escape \"\\%c\" in label value",
                     e >= ' ' && e <= '~' ? e : '?');
                return NULL;
            }
        } else if (c == '\0') {
            fail(ps, SM_EMALFORMED, "NUL byte in label value");
            return NULL;
        }
        *w++ = c;
    }
    if (p == end) {
        fail(ps, SM_EMALFORMED, "unterminated label value");
        return NULL;
    }
    *w++ = '\0';
    ps->buf_used += (size_t)(w - s);
    SM_ASSERT(ps->buf_used <= ps->buf_cap);
    *out = s;
    return p + 1;
}

static int cmp_label_name(const void *a, const void *b)
{
    return strcmp(((const struct node_prom_label *)a)->name,
                  ((const struct node_prom_label *)b)->name);
}

/* Checks the @n labels of the line for a repeated name: pairwise for small
 * sets, through a sorted copy past the labels for large ones (a 64 KiB line
 * can hold over 13000 labels). */
static int check_duplicates(struct parser *ps, size_t n)
{
    const char *dup = NULL;
    if (n <= SMALL_LABEL_SET) {
        const struct node_prom_label *l = ps->labels;
        for (size_t i = 1; i < n && dup == NULL; i++) {
            for (size_t j = 0; j < i; j++) {
                if (strcmp(l[i].name, l[j].name) == 0) {
                    dup = l[i].name;
                    break;
                }
            }
        }
    } else {
        int rv = labels_reserve(ps, 2 * n);
        if (rv != SM_OK) {
            return fail(ps, rv, "out of memory");
        }
        struct node_prom_label *sorted = ps->labels + n;
        memcpy(sorted, ps->labels, n * sizeof sorted[0]);
        qsort(sorted, n, sizeof sorted[0], cmp_label_name);
        for (size_t i = 1; i < n; i++) {
            if (strcmp(sorted[i].name, sorted[i - 1].name) == 0) {
                dup = sorted[i].name;
                break;
            }
        }
    }
    if (dup != NULL) {
        return fail(ps, SM_EMALFORMED, "duplicate label name \"%.*s\"", EXCERPT,
                    dup);
    }
    return SM_OK;
}

/* Parses the label set at @p (just past the '{'). On success stores the
 * number of labels in *@n and returns the position past the '}'; on
 * failure returns NULL with *@rv and the error message set. */
static const char *parse_labels(struct parser *ps,
                                const char *p,
                                const char *end,
                                size_t *n,
                                int *rv)
{
    char ex[EXCERPT + 1];
    size_t count = 0;
    *rv = SM_EMALFORMED;
    for (;;) {
        p = skip_blanks(p, end);
        if (p == end) {
            fail(ps, SM_EMALFORMED, "unterminated label set");
            return NULL;
        }
        if (*p == '}') {
            break;
        }
        const char *lname = p;
        p = scan_label_name(p, end);
        if (p == lname || (p < end && !is_blank(*p) && *p != '=')) {
            fail(ps, SM_EMALFORMED, "bad label name \"%s\"",
                 excerpt(ex, lname, end));
            return NULL;
        }
        size_t lname_len = (size_t)(p - lname);
        p = skip_blanks(p, end);
        if (p == end || *p != '=') {
            fail(ps, SM_EMALFORMED, "expected '=' after label name");
            return NULL;
        }
        p = skip_blanks(p + 1, end);
        if (p == end || *p != '"') {
            fail(ps, SM_EMALFORMED, "expected '\"' to open a label value");
            return NULL;
        }
        int r = labels_reserve(ps, count + 1);
        if (r != SM_OK) {
            *rv = fail(ps, r, "out of memory");
            return NULL;
        }
        struct node_prom_label *l = &ps->labels[count];
        l->name = buf_put(ps, lname, lname_len);
        p = parse_label_value(ps, p + 1, end, &l->value);
        if (p == NULL) {
            return NULL;
        }
        count++;
        p = skip_blanks(p, end);
        if (p < end && *p == ',') {
            p++;
            continue;
        }
        if (p < end && *p == '}') {
            break;
        }
        fail(ps, SM_EMALFORMED,
             p == end ? "unterminated label set"
                      : "expected ',' or '}' after a label value");
        return NULL;
    }
    int r = check_duplicates(ps, count);
    if (r != SM_OK) {
        *rv = r;
        return NULL;
    }
    *n = count;
    return p + 1;
}

static int is_value_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c) ||
           c == '.' || c == '+' || c == '-';
}

/* Parses the value token [p, end) (non-empty, no blanks) into *@out. */
static int parse_value(struct parser *ps,
                       const char *p,
                       const char *end,
                       double *out)
{
    char ex[EXCERPT + 1];
    size_t n = (size_t)(end - p);
    for (size_t i = 0; i < n; i++) {
        if (!is_value_char(p[i])) {
            return fail(ps, SM_EMALFORMED, "bad value \"%s\"",
                        excerpt(ex, p, end));
        }
    }
    char *copy = buf_put(ps, p, n);
    if (ps->decimal_point != '.') {
        /* See the top of the file: LC_NUMERIC is not "C". */
        for (char *q = copy; *q != '\0'; q++) {
            if (*q == '.') {
                *q = ps->decimal_point;
            }
        }
    }
    char *stop;
    errno = 0;
    double v = strtod(copy, &stop);
    if (stop != copy + n || (errno == ERANGE && isinf(v))) {
        return fail(ps, SM_EMALFORMED, "bad value \"%s\"", excerpt(ex, p, end));
    }
    *out = v;
    return SM_OK;
}

/* Parses the timestamp token [p, end) (non-empty): a decimal int64 with an
 * optional sign, as Go's strconv.ParseInt reads it. */
static int parse_timestamp(struct parser *ps,
                           const char *p,
                           const char *end,
                           int64_t *out)
{
    char ex[EXCERPT + 1];
    const char *q = p;
    int neg = 0;
    if (*q == '+' || *q == '-') {
        neg = *q == '-';
        q++;
    }
    if (q == end) {
        return fail(ps, SM_EMALFORMED, "bad timestamp \"%s\"",
                    excerpt(ex, p, end));
    }
    /* Accumulate the magnitude unsigned; INT64_MIN's is INT64_MAX + 1. */
    uint64_t limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    uint64_t v = 0;
    for (; q < end; q++) {
        if (!is_digit(*q)) {
            return fail(ps, SM_EMALFORMED, "bad timestamp \"%s\"",
                        excerpt(ex, p, end));
        }
        unsigned d = (unsigned)(*q - '0');
        if (v > (limit - d) / 10) {
            return fail(ps, SM_EMALFORMED, "timestamp \"%s\" out of range",
                        excerpt(ex, p, end));
        }
        v = v * 10 + d;
    }
    if (!neg) {
        *out = (int64_t)v;
    } else if (v == (uint64_t)INT64_MAX + 1) {
        *out = INT64_MIN;
    } else {
        *out = -(int64_t)v;
    }
    return SM_OK;
}

/* Parses a sample line [p, end); @p is at the first byte of the name. */
static int parse_sample(struct parser *ps, const char *p, const char *end)
{
    char ex[EXCERPT + 1];
    int rv = buf_reserve(ps, (size_t)(end - p) + 1);
    if (rv != SM_OK) {
        return fail(ps, rv, "out of memory");
    }
    struct node_prom_sample s = {0};
    const char *name = p;
    p = scan_metric_name(p, end);
    if (p == name || (p < end && !is_blank(*p) && *p != '{')) {
        return fail(ps, SM_EMALFORMED, "bad metric name \"%s\"",
                    excerpt(ex, name, end));
    }
    size_t name_len = (size_t)(p - name);
    s.name = buf_put(ps, name, name_len);
    resolve_family(ps, name, name_len, &s);

    const char *after = skip_blanks(p, end);
    if (after < end && *after == '{') {
        p = parse_labels(ps, after + 1, end, &s.n_labels, &rv);
        if (p == NULL) {
            return rv;
        }
        s.labels = s.n_labels > 0 ? ps->labels : NULL;
    }

    const char *value = skip_blanks(p, end);
    if (value == end) {
        return fail(ps, SM_EMALFORMED, "missing value");
    }
    if (value == p) {
        return fail(ps, SM_EMALFORMED, "expected a blank before the value");
    }
    p = scan_token(value, end);
    rv = parse_value(ps, value, p, &s.value);
    if (rv != SM_OK) {
        return rv;
    }

    const char *ts = skip_blanks(p, end);
    if (ts < end) {
        p = scan_token(ts, end);
        rv = parse_timestamp(ps, ts, p, &s.timestamp_ms);
        if (rv != SM_OK) {
            return rv;
        }
        s.has_timestamp = 1;
        if (skip_blanks(p, end) != end) {
            return fail(ps, SM_EMALFORMED, "unexpected text after timestamp");
        }
    }

    rv = ps->cb(ps->arg, &s);
    if (rv != 0) {
        if (rv > 0 && rv < SM_ERR__COUNT) {
            fail(ps, rv, "sample callback failed: %s", sm_errname(rv));
        } else {
            fail(ps, rv, "sample callback returned %d", rv);
        }
    }
    return rv;
}

static int parse_line(struct parser *ps, const char *p, const char *end)
{
    p = skip_blanks(p, end);
    if (p == end) {
        return SM_OK;
    }
    if (*p == '#') {
        return parse_comment(ps, p + 1, end);
    }
    return parse_sample(ps, p, end);
}

int node_prom_parse(const char *text,
                    size_t len,
                    node_prom_sample_cb cb,
                    void *arg,
                    char errmsg[SM_ERRMSG_SIZE])
{
    SM_ASSERT(text != NULL || len == 0);
    SM_ASSERT(cb != NULL);
    struct parser ps = {0};
    ps.cb = cb;
    ps.arg = arg;
    ps.errmsg = errmsg;
    if (errmsg != NULL) {
        errmsg[0] = '\0';
    }
    /* A multi-byte decimal point is left alone: fractions then fail to
     * parse rather than parse wrong. */
    const char *dp = localeconv()->decimal_point;
    ps.decimal_point =
        dp != NULL && dp[0] != '\0' && dp[1] == '\0' ? dp[0] : '.';

    int rv = SM_OK;
    const char *p = text, *end = text + len;
    while (p < end && rv == SM_OK) {
        ps.line_no++;
        /* Look no further than just past the longest line and its "\r\n",
         * so that a huge input without newlines is not scanned to its
         * end. */
        size_t avail = (size_t)(end - p);
        size_t look = avail < MAX_LINE + 2 ? avail : MAX_LINE + 2;
        const char *nl = memchr(p, '\n', look);
        const char *line_end = nl != NULL ? nl : p + look;
        const char *next = nl != NULL ? nl + 1 : line_end;
        if (line_end > p && line_end[-1] == '\r' &&
            (nl != NULL || line_end == end)) {
            line_end--;
        }
        if ((size_t)(line_end - p) > MAX_LINE) {
            rv =
                fail(&ps, SM_EMALFORMED, "line longer than %u bytes", MAX_LINE);
            break;
        }
        rv = parse_line(&ps, p, line_end);
        p = next;
    }

    sm_free(ps.buf);
    sm_free(ps.labels);
    sm_free(ps.fams);
    sm_free(ps.pool);
    return rv;
}
