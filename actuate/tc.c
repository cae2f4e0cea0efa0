/* The agent's network actuator: HTB class rates read and changed with tc. */

/* Design. Everything tc-specific that can be pure is: the rate, size and
 * handle syntaxes, the parser of `tc -s class show` and the builder of the
 * `tc class change` argv. The three functions that run tc only glue those
 * to act_cmd_run() and map tc's failures to error codes.
 *
 * Rates travel in bits per second but the kernel keeps bytes per second,
 * and iproute2 truncates what it prints (see act_tc_rate_shown()), so the
 * text read back is not always the value written. Every comparison (the
 * idempotence check, the class list order, the class index) goes through
 * act_tc_rate_shown(), which makes "what tc shows" the identity of a rate:
 * then a value read and written back reads the same again, and a rollback
 * restores what tc showed before. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "actuate/actuate.h"
#include "actuate/sysfs_internal.h"
#include "base/err.h"

#define DEFAULT_TC  "tc"
#define MAX_FRAC    9 /* fraction digits accepted in rates and sizes */
#define SHOW_PREFIX "class htb "

/* ---- Numbers and units --------------------------------------------------- */

struct unit
{
    const char *name; /* lower case; "" for a bare number */
    uint64_t mult;
};

/* Rates as tc(8) reads them; "bps" units are bytes, so times 8. */
static const struct unit rate_units[] = {
    {"", 1},
    {"bit", 1},
    {"kbit", UINT64_C(1000)},
    {"mbit", UINT64_C(1000000)},
    {"gbit", UINT64_C(1000000000)},
    {"tbit", UINT64_C(1000000000000)},
    {"kibit", UINT64_C(1) << 10},
    {"mibit", UINT64_C(1) << 20},
    {"gibit", UINT64_C(1) << 30},
    {"tibit", UINT64_C(1) << 40},
    {"bps", 8},
    {"kbps", UINT64_C(8000)},
    {"mbps", UINT64_C(8000000)},
    {"gbps", UINT64_C(8000000000)},
    {"tbps", UINT64_C(8000000000000)},
    {"kibps", UINT64_C(8) << 10},
    {"mibps", UINT64_C(8) << 20},
    {"gibps", UINT64_C(8) << 30},
    {"tibps", UINT64_C(8) << 40},
};

/* Sizes as tc prints them ("1600b", "1Kb", "2Mb") and reads them. */
static const struct unit size_units[] = {
    {"", 1},
    {"b", 1},
    {"k", UINT64_C(1) << 10},
    {"kb", UINT64_C(1) << 10},
    {"m", UINT64_C(1) << 20},
    {"mb", UINT64_C(1) << 20},
    {"g", UINT64_C(1) << 30},
    {"gb", UINT64_C(1) << 30},
};

/* A decimal number "123" or "1.25" at the start of @p, as @num / @scale. */
struct decimal
{
    uint64_t num;
    uint64_t scale; /* a power of ten */
    size_t used;    /* bytes of @p consumed */
};

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Reads the number at the start of @p (@n bytes). False when there is no
 * digit before the point, none after it, too many fraction digits or an
 * overflow. */
static bool decimal_read(const char *p, size_t n, struct decimal *d)
{
    uint64_t num = 0, scale = 1;
    size_t i = 0, whole = 0, frac = 0;
    bool point = false;
    for (; i < n; i++) {
        if (p[i] == '.' && !point) {
            point = true;
            continue;
        }
        if (!is_digit(p[i])) {
            break;
        }
        unsigned digit = (unsigned)(p[i] - '0');
        if (num > (UINT64_MAX - digit) / 10) {
            return false;
        }
        num = num * 10 + digit;
        if (point) {
            if (++frac > MAX_FRAC) {
                return false;
            }
            scale *= 10;
        } else {
            whole++;
        }
    }
    if (whole == 0 || (point && frac == 0)) {
        return false;
    }
    d->num = num;
    d->scale = scale;
    d->used = i;
    return true;
}

/* Finds the unit spelled by @p (@n bytes, any case) in @units. */
static const struct unit *unit_find(const struct unit *units,
                                    size_t count,
                                    const char *p,
                                    size_t n)
{
    for (size_t i = 0; i < count; i++) {
        if (strlen(units[i].name) == n &&
            strncasecmp(units[i].name, p, n) == 0) {
            return &units[i];
        }
    }
    return NULL;
}

int act_tc_rate_parse(const char *text,
                      size_t len,
                      uint64_t *bits,
                      char *errmsg)
{
    struct decimal d;
    if (len > ACT_TC_TEXT_SIZE || !decimal_read(text, len, &d)) {
        sm_errmsg_printf(errmsg, "bad rate \"%.*s\"",
                         (int)(len < 64 ? len : 64), text);
        return SM_EINVAL;
    }
    const struct unit *u =
        unit_find(rate_units, sizeof rate_units / sizeof rate_units[0],
                  text + d.used, len - d.used);
    if (u == NULL) {
        sm_errmsg_printf(errmsg, "rate \"%.*s\": unknown unit", (int)len, text);
        return SM_EINVAL;
    }
    if (d.num > UINT64_MAX / u->mult) {
        sm_errmsg_printf(errmsg, "rate \"%.*s\" too large", (int)len, text);
        return SM_EINVAL;
    }
    uint64_t product = d.num * u->mult;
    if (product % d.scale != 0) {
        sm_errmsg_printf(errmsg, "rate \"%.*s\" is not a whole number of bits",
                         (int)len, text);
        return SM_EINVAL;
    }
    uint64_t v = product / d.scale;
    if (v == 0 || v > ACT_TC_RATE_MAX) {
        sm_errmsg_printf(errmsg, "rate \"%.*s\" %s", (int)len, text,
                         v == 0 ? "is zero" : "too large");
        return SM_EINVAL;
    }
    *bits = v;
    return SM_OK;
}

int act_tc_rate_format(uint64_t bits, char *buf, size_t size, char *errmsg)
{
    static const char *const prefix[] = {"", "K", "M", "G", "T"};
    if (bits == 0 || bits > ACT_TC_RATE_MAX) {
        sm_errmsg_printf(errmsg, "rate %llu bit/s outside 1..%llu",
                         (unsigned long long)bits,
                         (unsigned long long)ACT_TC_RATE_MAX);
        return SM_EINVAL;
    }
    size_t i = 0;
    while (i + 1 < sizeof prefix / sizeof prefix[0] && bits % 1000 == 0) {
        bits /= 1000;
        i++;
    }
    int w =
        snprintf(buf, size, "%llu%sbit", (unsigned long long)bits, prefix[i]);
    if (w < 0 || (size_t)w >= size) {
        sm_errmsg_printf(errmsg, "rate buffer of %zu bytes too small", size);
        return SM_ETOOBIG;
    }
    return SM_OK;
}

uint64_t act_tc_rate_shown(uint64_t bits)
{
    /* The kernel keeps whole bytes per second. iproute2 then divides by
     * 1000 while the value is at least 1000 and either divisible or at
     * least 1000 of the next unit, dropping the remainder, up to "T". */
    uint64_t v = bits / 8 * 8;
    uint64_t mult = 1;
    for (int i = 0; i < 4; i++) {
        if (v < 1000 || (v % 1000 != 0 && v < 1000 * 1000)) {
            break;
        }
        v /= 1000;
        mult *= 1000;
    }
    return v * mult;
}

int act_tc_size_parse(const char *text,
                      size_t len,
                      uint64_t *bytes,
                      char *errmsg)
{
    struct decimal d;
    if (len > ACT_TC_TEXT_SIZE || !decimal_read(text, len, &d)) {
        sm_errmsg_printf(errmsg, "bad size \"%.*s\"",
                         (int)(len < 64 ? len : 64), text);
        return SM_EINVAL;
    }
    const struct unit *u =
        unit_find(size_units, sizeof size_units / sizeof size_units[0],
                  text + d.used, len - d.used);
    if (u == NULL) {
        sm_errmsg_printf(errmsg, "size \"%.*s\": unknown unit", (int)len, text);
        return SM_EINVAL;
    }
    /* Rounded to the nearest byte. */
    uint64_t v = 0;
    bool fits = d.num <= (UINT64_MAX - d.scale) / u->mult;
    if (fits) {
        v = (d.num * u->mult + d.scale / 2) / d.scale;
    }
    if (!fits || v > ACT_TC_SIZE_MAX) {
        sm_errmsg_printf(errmsg, "size \"%.*s\" too large", (int)len, text);
        return SM_EINVAL;
    }
    *bytes = v;
    return SM_OK;
}

/* Parses 1 to 4 hex digits; true when @n is in that range and all are. */
static bool hex16(const char *p, size_t n, uint16_t *v)
{
    uint64_t x;
    if (!act__parse_hex(p, n, 4, &x)) {
        return false;
    }
    *v = (uint16_t)x;
    return true;
}

int act_tc_handle_parse(const char *text,
                        size_t len,
                        struct act_tc_handle *h,
                        char *errmsg)
{
    const char *colon = memchr(text, ':', len);
    struct act_tc_handle t = {0, 0};
    size_t ml = colon ? (size_t)(colon - text) : 0;
    size_t nl = colon ? len - ml - 1 : 0;
    if (colon == NULL || !hex16(text, ml, &t.major) || t.major == 0 ||
        (nl > 0 && !hex16(colon + 1, nl, &t.minor))) {
        sm_errmsg_printf(errmsg, "bad tc handle \"%.*s\" (want MAJOR:MINOR)",
                         (int)(len < 64 ? len : 64), text);
        return SM_EINVAL;
    }
    *h = t;
    return SM_OK;
}

void act_tc_handle_format(struct act_tc_handle h, char *buf)
{
    if (h.minor == 0) {
        snprintf(buf, ACT_TC_TEXT_SIZE, "%x:", (unsigned)h.major);
    } else {
        snprintf(buf, ACT_TC_TEXT_SIZE, "%x:%x", (unsigned)h.major,
                 (unsigned)h.minor);
    }
}

static bool handle_eq(struct act_tc_handle a, struct act_tc_handle b)
{
    return a.major == b.major && a.minor == b.minor;
}

/* ---- Class lists --------------------------------------------------------- */

int act_tc_classes_parse(const char *text,
                         size_t len,
                         struct act_tc_classes *c,
                         char *errmsg)
{
    struct act_tc_classes t;
    memset(&t, 0, sizeof t);
    size_t i = 0;
    while (i <= len) {
        size_t end = i;
        while (end < len && text[end] != ',') {
            end++;
        }
        size_t a = i, b = end;
        while (a < b && (text[a] == ' ' || text[a] == '\t')) {
            a++;
        }
        while (b > a && (text[b - 1] == ' ' || text[b - 1] == '\t')) {
            b--;
        }
        if (t.n == ACT_TC_MAX_CLASSES) {
            sm_errmsg_printf(errmsg, "more than %d bandwidth classes",
                             ACT_TC_MAX_CLASSES);
            return SM_EINVAL;
        }
        uint64_t r;
        int rv = act_tc_rate_parse(text + a, b - a, &r, errmsg);
        if (rv != SM_OK) {
            sm_errmsg_wrapf(errmsg, "bandwidth class %zu", t.n);
            return rv;
        }
        if (t.n > 0 &&
            act_tc_rate_shown(r) <= act_tc_rate_shown(t.rate[t.n - 1])) {
            sm_errmsg_printf(errmsg,
                             "bandwidth class %zu (\"%.*s\") is not above "
                             "the one before: list them in increasing order",
                             t.n, (int)(b - a), text + a);
            return SM_EINVAL;
        }
        t.rate[t.n++] = r;
        i = end + 1;
    }
    *c = t;
    return SM_OK;
}

int act_tc_class_index(const struct act_tc_classes *c,
                       uint64_t bits,
                       bool *exact)
{
    uint64_t shown = act_tc_rate_shown(bits);
    int best = -1;
    for (size_t i = 0; i < c->n && i < ACT_TC_MAX_CLASSES; i++) {
        if (act_tc_rate_shown(c->rate[i]) <= shown) {
            best = (int)i;
        }
    }
    if (exact != NULL) {
        *exact = best >= 0 && act_tc_rate_shown(c->rate[best]) == shown;
    }
    return best;
}

/* ---- The class show parser ----------------------------------------------- */

/* A cursor over the blank-separated tokens of one line. */
struct tokens
{
    const char *p;
    size_t n, i;
};

static bool token_next(struct tokens *t, const char **tok, size_t *len)
{
    while (t->i < t->n && (t->p[t->i] == ' ' || t->p[t->i] == '\t')) {
        t->i++;
    }
    if (t->i == t->n) {
        return false;
    }
    size_t start = t->i;
    while (t->i < t->n && t->p[t->i] != ' ' && t->p[t->i] != '\t') {
        t->i++;
    }
    *tok = t->p + start;
    *len = t->i - start;
    return true;
}

static bool tok_is(const char *p, size_t n, const char *word)
{
    return strlen(word) == n && memcmp(p, word, n) == 0;
}

/* The keys of an HTB class line that take a value. */
enum key {
    KEY_PARENT,
    KEY_PRIO,
    KEY_RATE,
    KEY_CEIL,
    KEY_BURST,
    KEY_CBURST,
    KEY_OVERHEAD,
    KEY_LINKLAYER,
    KEY_SKIPPED, /* leaf, quantum, mpu, level: value not used */
    KEY__COUNT
};

static int key_of(const char *p, size_t n)
{
    static const char *const names[] = {
        [KEY_PARENT] = "parent",     [KEY_PRIO] = "prio",
        [KEY_RATE] = "rate",         [KEY_CEIL] = "ceil",
        [KEY_BURST] = "burst",       [KEY_CBURST] = "cburst",
        [KEY_OVERHEAD] = "overhead", [KEY_LINKLAYER] = "linklayer",
    };
    for (int k = 0; k < KEY_SKIPPED; k++) {
        if (tok_is(p, n, names[k])) {
            return k;
        }
    }
    if (tok_is(p, n, "leaf") || tok_is(p, n, "quantum") ||
        tok_is(p, n, "mpu") || tok_is(p, n, "level")) {
        return KEY_SKIPPED;
    }
    return -1;
}

/* Stores the value @v (@n bytes) of @key into @h. */
static int key_set(struct act_tc_htb *h,
                   int key,
                   const char *v,
                   size_t n,
                   char *errmsg)
{
    /* With -d tc shows "burst 1600b/1": the size is before the slash. */
    const char *slash = memchr(v, '/', n);
    size_t sn = slash ? (size_t)(slash - v) : n;
    switch (key) {
        case KEY_PARENT:
            return act_tc_handle_parse(v, n, &h->parent, errmsg);
        case KEY_PRIO:
        case KEY_OVERHEAD:
            if (!act__parse_u32(v, n,
                                key == KEY_PRIO ? &h->prio : &h->overhead)) {
                sm_errmsg_printf(errmsg, "bad number \"%.*s\"",
                                 (int)(n < 64 ? n : 64), v);
                return SM_EINVAL;
            }
            return SM_OK;
        case KEY_RATE:
            return act_tc_rate_parse(v, n, &h->rate, errmsg);
        case KEY_CEIL:
            return act_tc_rate_parse(v, n, &h->ceil, errmsg);
        case KEY_BURST:
            return act_tc_size_parse(v, sn, &h->burst, errmsg);
        case KEY_CBURST:
            return act_tc_size_parse(v, sn, &h->cburst, errmsg);
        case KEY_LINKLAYER:
            h->atm = tok_is(v, n, "atm") || tok_is(v, n, "adsl");
            return SM_OK;
        default:
            return SM_OK;
    }
}

/* Parses the tokens after "class htb CLASSID" of one line into @h. */
static int parse_class_line(struct tokens *t,
                            struct act_tc_htb *h,
                            char *errmsg)
{
    bool seen[KEY__COUNT] = {false};
    const char *tok, *val;
    size_t n, vn;
    while (token_next(t, &tok, &n)) {
        if (tok_is(tok, n, "root")) {
            h->root = true;
            continue;
        }
        int key = key_of(tok, n);
        if (key < 0) {
            continue; /* a flag or a field newer than this parser */
        }
        if (key != KEY_SKIPPED && seen[key]) {
            sm_errmsg_printf(errmsg, "\"%.*s\" given twice", (int)n, tok);
            return SM_EMALFORMED;
        }
        seen[key] = true;
        if (!token_next(t, &val, &vn)) {
            sm_errmsg_printf(errmsg, "\"%.*s\" without a value", (int)n, tok);
            return SM_EMALFORMED;
        }
        if (key_set(h, key, val, vn, errmsg) != SM_OK) {
            sm_errmsg_wrapf(errmsg, "%.*s", (int)n, tok);
            return SM_EMALFORMED;
        }
    }
    if (!seen[KEY_RATE] || !seen[KEY_CEIL]) {
        sm_errmsg_printf(errmsg, "no %s", seen[KEY_RATE] ? "ceil" : "rate");
        return SM_EMALFORMED;
    }
    if (h->root == seen[KEY_PARENT]) {
        sm_errmsg_printf(
            errmsg, "%s",
            h->root ? "both root and a parent" : "neither root nor a parent");
        return SM_EMALFORMED;
    }
    if (h->root) {
        h->parent.major = h->classid.major;
        h->parent.minor = 0;
    }
    return SM_OK;
}

int act_tc_parse_show(const char *text,
                      size_t len,
                      struct act_tc_handle classid,
                      struct act_tc_htb *out,
                      char *errmsg)
{
    char id[ACT_TC_TEXT_SIZE];
    act_tc_handle_format(classid, id);
    if (len > ACT_TC_OUTPUT_MAX) {
        sm_errmsg_printf(errmsg, "tc output of %zu bytes too long", len);
        return SM_EMALFORMED;
    }
    struct act_tc_htb found;
    bool have = false;
    size_t i = 0;
    while (i < len) {
        size_t end = i;
        while (end < len && text[end] != '\n') {
            end++;
        }
        struct tokens t = {text + i, end - i, 0};
        i = end + 1;
        size_t pl = sizeof SHOW_PREFIX - 1;
        if (t.n < pl || memcmp(t.p, SHOW_PREFIX, pl) != 0) {
            continue; /* statistics, another kind, another qdisc's lines */
        }
        t.i = pl;
        const char *tok;
        size_t n;
        struct act_tc_handle h;
        char err[SM_ERRMSG_SIZE];
        if (!token_next(&t, &tok, &n) ||
            act_tc_handle_parse(tok, n, &h, err) != SM_OK ||
            !handle_eq(h, classid)) {
            continue;
        }
        if (have) {
            sm_errmsg_printf(errmsg, "class htb %s listed twice", id);
            return SM_EMALFORMED;
        }
        memset(&found, 0, sizeof found);
        found.classid = classid;
        int rv = parse_class_line(&t, &found, errmsg);
        if (rv != SM_OK) {
            sm_errmsg_wrapf(errmsg, "class htb %s", id);
            return rv;
        }
        have = true;
    }
    if (!have) {
        sm_errmsg_printf(errmsg, "no HTB class %s", id);
        return SM_ENOTFOUND;
    }
    *out = found;
    return SM_OK;
}

/* ---- Configuration and commands ------------------------------------------ */

static int copy_name(char *dst,
                     size_t size,
                     const char *src,
                     const char *what,
                     char *errmsg)
{
    size_t n = strlen(src);
    if (n == 0 || n >= size) {
        sm_errmsg_printf(errmsg, "%s \"%.64s\" %s", what, src,
                         n == 0 ? "is empty" : "is too long");
        return SM_EINVAL;
    }
    memcpy(dst, src, n + 1);
    return SM_OK;
}

int act_tc_init(struct act_tc *tc,
                const char *tc_path,
                const char *dev,
                const char *classid,
                const char *classes,
                char *errmsg)
{
    struct act_tc t;
    memset(&t, 0, sizeof t);
    int rv = copy_name(t.tc_path, sizeof t.tc_path,
                       tc_path ? tc_path : DEFAULT_TC, "tc program", errmsg);
    if (rv == SM_OK) {
        rv = copy_name(t.dev, sizeof t.dev, dev, "device name", errmsg);
    }
    if (rv == SM_OK && strpbrk(dev, "/: \t\n") != NULL) {
        sm_errmsg_printf(errmsg, "device name \"%s\" holds '/', ':' or a blank",
                         dev);
        rv = SM_EINVAL;
    }
    if (rv == SM_OK) {
        rv = act_tc_handle_parse(classid, strlen(classid), &t.classid, errmsg);
    }
    if (rv == SM_OK && t.classid.minor == 0) {
        sm_errmsg_printf(errmsg, "classid \"%s\" names a qdisc, not a class",
                         classid);
        rv = SM_EINVAL;
    }
    if (rv == SM_OK) {
        rv = act_tc_classes_parse(classes, strlen(classes), &t.classes, errmsg);
    }
    if (rv != SM_OK) {
        return rv;
    }
    *tc = t;
    return SM_OK;
}

/* Appends one argument to @out, copying it into @out->text at *@used. */
static void arg_add(struct act_tc_argv *out,
                    size_t *argc,
                    size_t *used,
                    const char *s)
{
    size_t n = strlen(s) + 1;
    SM_ASSERT(*argc + 1 < ACT_TC_ARGV_MAX && *used + n <= sizeof out->text);
    memcpy(out->text + *used, s, n);
    out->argv[(*argc)++] = out->text + *used;
    out->argv[*argc] = NULL;
    *used += n;
}

static int check_rates(const struct act_tc_htb *want, char *errmsg)
{
    char buf[ACT_TC_TEXT_SIZE];
    int rv = act_tc_rate_format(want->rate, buf, sizeof buf, errmsg);
    if (rv == SM_OK) {
        rv = act_tc_rate_format(want->ceil, buf, sizeof buf, errmsg);
    }
    if (rv == SM_OK &&
        (want->burst > ACT_TC_SIZE_MAX || want->cburst > ACT_TC_SIZE_MAX)) {
        sm_errmsg_printf(errmsg, "burst above %llu bytes",
                         (unsigned long long)ACT_TC_SIZE_MAX);
        rv = SM_EINVAL;
    }
    if (rv != SM_OK) {
        sm_errmsg_wrapf(errmsg, "HTB class");
    }
    return rv;
}

int act_tc_change_argv(const struct act_tc *tc,
                       const struct act_tc_htb *want,
                       struct act_tc_argv *out,
                       char *errmsg)
{
    int rv = check_rates(want, errmsg);
    if (rv != SM_OK) {
        return rv;
    }
    size_t argc = 0, used = 0;
    char buf[ACT_TC_TEXT_SIZE];
    arg_add(out, &argc, &used, tc->tc_path);
    static const char *const head[] = {"class", "change", "dev"};
    for (size_t i = 0; i < 3; i++) {
        arg_add(out, &argc, &used, head[i]);
    }
    arg_add(out, &argc, &used, tc->dev);
    arg_add(out, &argc, &used, "parent");
    act_tc_handle_format(want->parent, buf);
    arg_add(out, &argc, &used, buf);
    arg_add(out, &argc, &used, "classid");
    act_tc_handle_format(tc->classid, buf);
    arg_add(out, &argc, &used, buf);
    arg_add(out, &argc, &used, "htb");
    arg_add(out, &argc, &used, "rate");
    (void)act_tc_rate_format(want->rate, buf, sizeof buf, errmsg);
    arg_add(out, &argc, &used, buf);
    arg_add(out, &argc, &used, "ceil");
    (void)act_tc_rate_format(want->ceil, buf, sizeof buf, errmsg);
    arg_add(out, &argc, &used, buf);
    if (want->burst != 0) {
        snprintf(buf, sizeof buf, "%llub", (unsigned long long)want->burst);
        arg_add(out, &argc, &used, "burst");
        arg_add(out, &argc, &used, buf);
    }
    if (want->cburst != 0) {
        snprintf(buf, sizeof buf, "%llub", (unsigned long long)want->cburst);
        arg_add(out, &argc, &used, "cburst");
        arg_add(out, &argc, &used, buf);
    }
    if (want->prio != 0) {
        snprintf(buf, sizeof buf, "%u", (unsigned)want->prio);
        arg_add(out, &argc, &used, "prio");
        arg_add(out, &argc, &used, buf);
    }
    if (want->overhead != 0) {
        snprintf(buf, sizeof buf, "%u", (unsigned)want->overhead);
        arg_add(out, &argc, &used, "overhead");
        arg_add(out, &argc, &used, buf);
    }
    if (want->atm) {
        arg_add(out, &argc, &used, "linklayer");
        arg_add(out, &argc, &used, "atm");
    }
    return SM_OK;
}

/* ---- Running tc ---------------------------------------------------------- */

/* Maps a tc that ran but failed to an error code, from its message. */
static int tc_failure(const struct act_tc *tc,
                      const struct act_cmd_result *res,
                      const char *what,
                      char *errmsg)
{
    const char *out = res->output ? res->output : "";
    size_t line = strcspn(out, "\n");
    int rv = SM_EIO;
    if (strstr(out, "Cannot find device") != NULL ||
        strstr(out, "No such file or directory") != NULL ||
        strstr(out, "No such device") != NULL) {
        rv = SM_ENOTFOUND;
    } else if (strstr(out, "Operation not permitted") != NULL ||
               strstr(out, "Permission denied") != NULL) {
        rv = SM_EPERM;
    }
    if (res->exited) {
        sm_errmsg_printf(errmsg, "%s %s on %s exited with %d: %.*s",
                         tc->tc_path, what, tc->dev, res->exit_code,
                         (int)(line > 160 ? 160 : line), out);
    } else {
        sm_errmsg_printf(errmsg, "%s %s on %s killed by signal %d", tc->tc_path,
                         what, tc->dev, res->term_signal);
    }
    return rv;
}

/* Runs @argv; on success @res holds tc's output (free it). */
static int tc_run(const struct act_tc *tc,
                  char *const argv[],
                  const char *what,
                  uint64_t deadline_ns,
                  struct act_cmd_result *res,
                  char *errmsg)
{
    int rv = act_cmd_run(argv, deadline_ns, ACT_TC_OUTPUT_MAX, res, errmsg);
    if (rv != SM_OK) {
        if (rv == SM_ENOTFOUND) {
            sm_errmsg_wrapf(errmsg, "tc program %s not found", tc->tc_path);
        } else {
            sm_errmsg_wrapf(errmsg, "tc %s", what);
        }
        return rv;
    }
    if (res->timed_out) {
        sm_errmsg_printf(errmsg, "%s %s on %s: timed out", tc->tc_path, what,
                         tc->dev);
        rv = SM_ETIMEDOUT;
    } else if (!res->exited || res->exit_code != 0) {
        rv = tc_failure(tc, res, what, errmsg);
    }
    if (rv != SM_OK) {
        act_cmd_result_free(res);
    }
    return rv;
}

int act_tc_read(const struct act_tc *tc,
                uint64_t deadline_ns,
                struct act_tc_htb *cur,
                int *index,
                char *errmsg)
{
    char *argv[] = {(char *)tc->tc_path, "-s", "class", "show", "dev",
                    (char *)tc->dev,     NULL};
    struct act_cmd_result res;
    int rv = tc_run(tc, argv, "class show", deadline_ns, &res, errmsg);
    if (rv != SM_OK) {
        return rv;
    }
    struct act_tc_htb h;
    rv = act_tc_parse_show(res.output, res.output_len, tc->classid, &h, errmsg);
    if (rv == SM_ENOTFOUND && res.output_truncated) {
        sm_errmsg_printf(errmsg, "tc output on %s over %u bytes", tc->dev,
                         ACT_TC_OUTPUT_MAX);
        rv = SM_ETOOBIG;
    } else if (rv != SM_OK) {
        sm_errmsg_wrapf(errmsg, "%s class show dev %s", tc->tc_path, tc->dev);
    }
    act_cmd_result_free(&res);
    if (rv != SM_OK) {
        return rv;
    }
    *cur = h;
    if (index != NULL) {
        *index = act_tc_class_index(&tc->classes, h.rate, NULL);
    }
    return SM_OK;
}

int act_tc_available(const struct act_tc *tc,
                     uint64_t deadline_ns,
                     char *errmsg)
{
    struct act_tc_htb h;
    return act_tc_read(tc, deadline_ns, &h, NULL, errmsg);
}

/* True when applying @want to a class showing @cur would change nothing. */
static bool same_as_shown(const struct act_tc_htb *want,
                          const struct act_tc_htb *cur)
{
    return act_tc_rate_shown(want->rate) == act_tc_rate_shown(cur->rate) &&
           act_tc_rate_shown(want->ceil) == act_tc_rate_shown(cur->ceil) &&
           (want->burst == 0 || want->burst == cur->burst) &&
           (want->cburst == 0 || want->cburst == cur->cburst);
}

int act_tc_apply(const struct act_tc *tc,
                 const struct act_tc_htb *want,
                 uint64_t deadline_ns,
                 struct act_tc_htb *prev,
                 bool *changed,
                 char *errmsg)
{
    if (changed != NULL) {
        *changed = false;
    }
    int rv = check_rates(want, errmsg);
    if (rv != SM_OK) {
        return rv;
    }
    struct act_tc_htb cur;
    rv = act_tc_read(tc, deadline_ns, &cur, NULL, errmsg);
    if (rv != SM_OK) {
        return rv;
    }
    if (prev != NULL) {
        *prev = cur;
    }
    if (same_as_shown(want, &cur)) {
        return SM_OK;
    }
    /* Keep what tc class change would otherwise reset to its defaults. */
    struct act_tc_htb cmd = cur;
    cmd.rate = want->rate;
    cmd.ceil = want->ceil;
    cmd.burst = want->burst;
    cmd.cburst = want->cburst;
    struct act_tc_argv argv;
    rv = act_tc_change_argv(tc, &cmd, &argv, errmsg);
    if (rv != SM_OK) {
        return rv;
    }
    struct act_cmd_result res;
    rv = tc_run(tc, argv.argv, "class change", deadline_ns, &res, errmsg);
    if (rv != SM_OK) {
        return rv;
    }
    act_cmd_result_free(&res);
    if (changed != NULL) {
        *changed = true;
    }
    return SM_OK;
}

int act_tc_apply_class(const struct act_tc *tc,
                       int index,
                       uint64_t deadline_ns,
                       struct act_tc_htb *prev,
                       bool *changed,
                       char *errmsg)
{
    if (index < 0 || (size_t)index >= tc->classes.n) {
        if (changed != NULL) {
            *changed = false;
        }
        sm_errmsg_printf(errmsg, "bandwidth class %d outside 0..%zu", index,
                         tc->classes.n - 1);
        return SM_EINVAL;
    }
    struct act_tc_htb want;
    memset(&want, 0, sizeof want);
    want.rate = tc->classes.rate[index];
    want.ceil = want.rate;
    return act_tc_apply(tc, &want, deadline_ns, prev, changed, errmsg);
}
