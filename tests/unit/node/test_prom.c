/* Tests for the Prometheus text parser: real exporter output, families,
 * escapes, special values, timestamps, line ends, malformed input, callback
 * abort and out-of-memory paths. */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/err.h"
#include "check.h"
#include "node/prom.h"

/* ---- Collecting samples ------------------------------------------------- */

#define MAX_RECS   512
#define MAX_LABELS 8

/* A copy of one sample as the callback saw it. */
struct rec
{
    char name[128];
    char family[128];
    enum node_prom_type type;
    double value;
    int64_t ts;
    int has_ts;
    size_t n_labels;
    char lname[MAX_LABELS][64];
    char lvalue[MAX_LABELS][256];
};

static struct rec recs[MAX_RECS];
static size_t n_samples;  /* callbacks so far (may exceed MAX_RECS) */
static size_t stop_after; /* the callback returns STOP_RV at this count */
static char err[SM_ERRMSG_SIZE];
#define STOP_RV 4242

/* Copies @src, or stores "" when it does not fit (long-line tests). */
static void copy_str(char *dst, size_t cap, const char *src)
{
    size_t n = strlen(src);
    if (n >= cap) {
        n = 0;
    }
    memcpy(dst, src, n);
    dst[n] = '\0';
}

static int collect(void *arg, const struct node_prom_sample *s)
{
    (void)arg;
    /* No REQUIRE here: leaving the parser by longjmp would leak. */
    CHECK(s->name[0] != '\0');
    CHECK(s->family[0] != '\0');
    CHECK(s->n_labels == 0 || s->labels != NULL);
    if (n_samples < MAX_RECS) {
        struct rec *r = &recs[n_samples];
        copy_str(r->name, sizeof r->name, s->name);
        copy_str(r->family, sizeof r->family, s->family);
        r->type = s->type;
        r->value = s->value;
        r->ts = s->timestamp_ms;
        r->has_ts = s->has_timestamp;
        r->n_labels = s->n_labels;
        for (size_t i = 0; i < s->n_labels && i < MAX_LABELS; i++) {
            copy_str(r->lname[i], sizeof r->lname[i], s->labels[i].name);
            copy_str(r->lvalue[i], sizeof r->lvalue[i], s->labels[i].value);
        }
    }
    n_samples++;
    return n_samples == stop_after ? STOP_RV : 0;
}

static void setup(void)
{
    memset(recs, 0, sizeof recs);
    n_samples = 0;
    stop_after = 0;
    err[0] = '\0';
}

/* Parses @len bytes of @text from an exact-size copy without a terminating
 * NUL, so that the sanitizers catch any read past the end. */
static int parse_n(const char *text, size_t len)
{
    n_samples = 0;
    char *copy = malloc(len == 0 ? 1 : len);
    REQUIRE(copy != NULL);
    memcpy(copy, text, len);
    int rv = node_prom_parse(copy, len, collect, NULL, err);
    free(copy);
    return rv;
}

static int parse(const char *text)
{
    return parse_n(text, strlen(text));
}

/* The label @name of @r, or NULL. */
static const char *label(const struct rec *r, const char *name)
{
    for (size_t i = 0; i < r->n_labels && i < MAX_LABELS; i++) {
        if (strcmp(r->lname[i], name) == 0) {
            return r->lvalue[i];
        }
    }
    return NULL;
}

/* The first sample called @name whose label @lname (if not NULL) is
 * @lvalue and whose label @lname2 (if not NULL) is @lvalue2. */
static const struct rec *find2(const char *name,
                               const char *lname,
                               const char *lvalue,
                               const char *lname2,
                               const char *lvalue2)
{
    for (size_t i = 0; i < n_samples && i < MAX_RECS; i++) {
        const struct rec *r = &recs[i];
        if (strcmp(r->name, name) != 0) {
            continue;
        }
        if (lname != NULL && !check__str_eq(label(r, lname), lvalue)) {
            continue;
        }
        if (lname2 != NULL && !check__str_eq(label(r, lname2), lvalue2)) {
            continue;
        }
        return r;
    }
    check__fail(__FILE__, __LINE__, 1, "no sample %s{%s=%s,%s=%s}", name,
                lname ? lname : "", lvalue ? lvalue : "", lname2 ? lname2 : "",
                lvalue2 ? lvalue2 : "");
    return NULL;
}

static const struct rec *find(const char *name,
                              const char *lname,
                              const char *lvalue)
{
    return find2(name, lname, lvalue, NULL, NULL);
}

static size_t count_named(const char *name)
{
    size_t n = 0;
    for (size_t i = 0; i < n_samples && i < MAX_RECS; i++) {
        n += strcmp(recs[i].name, name) == 0;
    }
    return n;
}

static size_t count_type(enum node_prom_type type)
{
    size_t n = 0;
    for (size_t i = 0; i < n_samples && i < MAX_RECS; i++) {
        n += recs[i].type == type;
    }
    return n;
}

/* ---- The sample files --------------------------------------------------- */

/* Writes @a @b @c into @out; returns 0 when it does not fit. */
static int join3(char out[PATH_MAX],
                 const char *a,
                 const char *b,
                 const char *c)
{
    int n = snprintf(out, PATH_MAX, "%s%s%s", a, b, c);
    return n >= 0 && n < PATH_MAX;
}

/* Finds the shared samples: $SM_SAMPLES_DIR, else <repo>/../shared/samples,
 * with the repository root taken from __FILE__. Meson compiles with
 * __FILE__ relative to the build directory, so that path is tried from the
 * current directory and from the directories above the executable. */
static const char *samples_dir(void)
{
    static char dir[PATH_MAX];
    const char *env = getenv("SM_SAMPLES_DIR");
    if (env != NULL && env[0] != '\0') {
        return env;
    }
    const char *file = __FILE__;
    const char *suffix = "tests/unit/node/test_prom.c";
    size_t fl = strlen(file), sl = strlen(suffix);
    if (fl < sl || fl - sl >= PATH_MAX || strcmp(file + fl - sl, suffix) != 0) {
        return NULL;
    }
    char root[PATH_MAX]; /* "../" or "/work/main/" or "" */
    memcpy(root, file, fl - sl);
    root[fl - sl] = '\0';

    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    exe[n > 0 ? n : 0] = '\0';
    char *slash = strrchr(exe, '/');
    if (slash != NULL) {
        *slash = '\0';
    }
    char bases[4][PATH_MAX];
    int n_bases = 0;
    if (file[0] == '/') {
        bases[n_bases++][0] = '\0';
    } else {
        n_bases += join3(bases[n_bases], "./", "", "");
        if (exe[0] != '\0') {
            n_bases += join3(bases[n_bases], exe, "/", "");
            n_bases += join3(bases[n_bases], exe, "/../", "");
            n_bases += join3(bases[n_bases], exe, "/../../", "");
        }
    }
    for (int i = 0; i < n_bases; i++) {
        char src[PATH_MAX];
        if (join3(src, bases[i], file, "") && access(src, R_OK) == 0 &&
            join3(dir, bases[i], root, "../shared/samples")) {
            return dir;
        }
    }
    return NULL;
}

/* Reads the sample @name into a malloc'd buffer; ends the test with a
 * clear message when it is missing. */
static char *read_sample(const char *name, size_t *len)
{
    const char *dir = samples_dir();
    if (dir == NULL) {
        check__fail(__FILE__, __LINE__, 1,
                    "cannot locate the shared samples from __FILE__ (%s); "
                    "set SM_SAMPLES_DIR",
                    __FILE__);
    }
    char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        check__fail(__FILE__, __LINE__, 1,
                    "sample %s is missing; set SM_SAMPLES_DIR to the "
                    "directory holding it",
                    path);
    }
    size_t cap = 1 << 20;
    char *buf = malloc(cap);
    REQUIRE(buf != NULL);
    *len = fread(buf, 1, cap, f);
    fclose(f);
    REQUIRE(*len > 0 && *len < cap);
    return buf;
}

/* Parses the sample @name as is, with CRLF line ends and without its final
 * newline, checking that all three give @n samples; the records are those
 * of the last parse. */
static void parse_sample_file(const char *name, size_t n)
{
    size_t len;
    char *text = read_sample(name, &len);
    char *crlf = malloc(2 * len);
    REQUIRE(crlf != NULL);
    size_t crlf_len = 0;
    for (size_t i = 0; i < len; i++) {
        if (text[i] == '\n') {
            crlf[crlf_len++] = '\r';
        }
        crlf[crlf_len++] = text[i];
    }
    int rv = parse_n(crlf, crlf_len);
    free(crlf);
    CHECK_OK(rv);
    CHECK_EQ(n_samples, n);
    REQUIRE(text[len - 1] == '\n');
    rv = parse_n(text, len - 1);
    CHECK_OK(rv);
    CHECK_EQ(n_samples, n);
    rv = parse_n(text, len);
    free(text);
    if (rv != SM_OK) {
        check__fail(__FILE__, __LINE__, 1, "%s: %s: %s", name, sm_errname(rv),
                    err);
    }
    REQUIRE_EQ(n_samples, n);
    for (size_t i = 0; i < n; i++) {
        CHECK(!recs[i].has_ts);
    }
}

static void test_node_exporter_sample(void)
{
    parse_sample_file("node-exporter-sample.txt", 94);
    CHECK_EQ(count_type(NODE_PROM_SUMMARY), 7);
    CHECK_EQ(count_type(NODE_PROM_GAUGE), 30);
    CHECK_EQ(count_type(NODE_PROM_COUNTER), 57);
    CHECK_EQ(count_type(NODE_PROM_UNTYPED), 0);

    /* The GC summary: five quantiles, then _sum and _count. */
    static const char *const q[] = {"0", "0.25", "0.5", "0.75", "1"};
    for (size_t i = 0; i < 5; i++) {
        const struct rec *r = &recs[i];
        CHECK_STR(r->name, "go_gc_duration_seconds");
        CHECK_STR(r->family, "go_gc_duration_seconds");
        CHECK_EQ(r->type, NODE_PROM_SUMMARY);
        CHECK_EQ(r->n_labels, 1);
        CHECK_STR(r->lname[0], "quantile");
        CHECK_STR(r->lvalue[0], q[i]);
        CHECK(r->value == 0);
    }
    CHECK_STR(recs[5].name, "go_gc_duration_seconds_sum");
    CHECK_STR(recs[5].family, "go_gc_duration_seconds");
    CHECK_EQ(recs[5].type, NODE_PROM_SUMMARY);
    CHECK_EQ(recs[5].n_labels, 0);
    CHECK_STR(recs[6].name, "go_gc_duration_seconds_count");
    CHECK_STR(recs[6].family, "go_gc_duration_seconds");
    CHECK_EQ(recs[6].type, NODE_PROM_SUMMARY);

    const struct rec *r = find("go_goroutines", NULL, NULL);
    CHECK_EQ(r->type, NODE_PROM_GAUGE);
    CHECK(r->value == 7);
    r = find("go_info", "version", "go1.19.8");
    CHECK_EQ(r->type, NODE_PROM_GAUGE);
    CHECK(r->value == 1);
    /* A counter keeps its _total: it is its own TYPE'd family, apart from
     * the gauge go_memstats_alloc_bytes. */
    r = find("go_memstats_alloc_bytes_total", NULL, NULL);
    CHECK_STR(r->family, "go_memstats_alloc_bytes_total");
    CHECK_EQ(r->type, NODE_PROM_COUNTER);
    CHECK(r->value == 827248);
    CHECK_EQ(find("go_memstats_alloc_bytes", NULL, NULL)->type,
             NODE_PROM_GAUGE);
    CHECK(find("go_memstats_sys_bytes", NULL, NULL)->value == 14398728.0);
    CHECK(find("node_boot_time_seconds", NULL, NULL)->value == 1795421499.0);

    CHECK_EQ(count_named("node_cpu_seconds_total"), 16);
    r = find2("node_cpu_seconds_total", "cpu", "0", "mode", "idle");
    CHECK_STR(r->family, "node_cpu_seconds_total");
    CHECK_EQ(r->type, NODE_PROM_COUNTER);
    CHECK_EQ(r->n_labels, 2);
    CHECK_STR(r->lname[0], "cpu");
    CHECK_STR(r->lname[1], "mode");
    CHECK(r->value == 249.6);
    r = find2("node_cpu_seconds_total", "cpu", "1", "mode", "user");
    CHECK(r->value == 42.95);

    /* Eight labels, most of them empty. */
    r = find("node_disk_info", "device", "vda");
    CHECK_EQ(r->n_labels, 8);
    CHECK_STR(label(r, "major"), "254");
    CHECK_STR(label(r, "model"), "");
    CHECK_STR(label(r, "wwn"), "");
    CHECK(find("node_disk_read_bytes_total", "device", "vda")->value ==
          1.797669888e+09);

    r = &recs[93];
    CHECK_STR(r->name, "node_entropy_pool_size_bits");
    CHECK_EQ(r->type, NODE_PROM_GAUGE);
    CHECK(r->value == 256);
}

static void test_node_exporter_selected(void)
{
    parse_sample_file("node-exporter-selected.txt", 40);
    CHECK_EQ(count_type(NODE_PROM_COUNTER), 35);
    CHECK_EQ(count_type(NODE_PROM_GAUGE), 4);
    CHECK_EQ(count_type(NODE_PROM_UNTYPED), 1);

    const struct rec *r = find("node_memory_MemAvailable_bytes", NULL, NULL);
    CHECK_STR(r->family, "node_memory_MemAvailable_bytes");
    CHECK_EQ(r->type, NODE_PROM_GAUGE);
    CHECK(r->value == 24693817344.0);
    CHECK_EQ(r->n_labels, 0);
    r = find2("node_cpu_seconds_total", "cpu", "1", "mode", "idle");
    CHECK_EQ(r->type, NODE_PROM_COUNTER);
    CHECK(r->value == 954.44);
    r = find("node_network_receive_bytes_total", "device", "eth0");
    CHECK(r->value == 102884725.0);
    r = find("node_context_switches_total", NULL, NULL);
    CHECK_EQ(r->type, NODE_PROM_COUNTER);
    CHECK(r->value == 1870033.0);
    r = find("node_netstat_Tcp_RetransSegs", NULL, NULL);
    CHECK_STR(r->family, "node_netstat_Tcp_RetransSegs");
    CHECK_EQ(r->type, NODE_PROM_UNTYPED);
    CHECK(r->value == 7);
    CHECK(find("node_pressure_cpu_waiting_seconds_total", NULL, NULL)->value ==
          39.037859);
}

static void test_process_exporter_sample(void)
{
    parse_sample_file("process-exporter-sample.txt", 52);
    CHECK_EQ(count_type(NODE_PROM_COUNTER), 28);
    CHECK_EQ(count_type(NODE_PROM_GAUGE), 24);

    const struct rec *r = &recs[0];
    CHECK_STR(r->name, "namedprocess_namegroup_context_switches_total");
    CHECK_EQ(r->n_labels, 2);
    CHECK_STR(r->lname[0], "ctxswitchtype");
    CHECK_STR(r->lvalue[0], "nonvoluntary");
    CHECK_STR(r->lname[1], "groupname");
    CHECK_STR(r->lvalue[1], "backend");
    CHECK(r->value == 143);

    r = find2("namedprocess_namegroup_cpu_seconds_total", "groupname", "middle",
              "mode", "user");
    CHECK_EQ(r->type, NODE_PROM_COUNTER);
    CHECK(r->value == 0.39999999999999997);
    r = find2("namedprocess_namegroup_memory_bytes", "groupname", "frontend",
              "memtype", "resident");
    CHECK_EQ(r->type, NODE_PROM_GAUGE);
    CHECK(r->value == 7.7938688e+07);
    CHECK_EQ(count_named("namedprocess_namegroup_num_procs"), 4);
    r = &recs[51];
    CHECK_STR(r->name, "namedprocess_namegroup_write_bytes_total");
    CHECK_STR(r->lvalue[0], "middle");
}

/* ---- Syntax ------------------------------------------------------------- */

static void test_families(void)
{
    REQUIRE_OK(
        parse("# HELP h A histogram.\n"
              "# TYPE h histogram\n"
              "h_bucket{le=\"0.1\"} 1\n"
              "h_bucket{le=\"+Inf\"} 3\n"
              "h_sum 0.7\n"
              "h_count 3\n"
              "# TYPE s summary\n"
              "s{quantile=\"0.99\"} 0.2\n"
              "s_sum 1\n"
              "s_count 2\n"
              "s_bucket 5\n"
              "# TYPE c counter\n"
              "c_total 4\n"
              "c 5\n"
              "c_sum 6\n"
              "# TYPE g_count gauge\n"
              "# TYPE g summary\n"
              "g_count 7\n"
              "u 8\n"));
    REQUIRE_EQ(n_samples, 13);
    static const struct
    {
        const char *name, *family;
        enum node_prom_type type;
    } want[] = {
        {"h_bucket", "h", NODE_PROM_HISTOGRAM},
        {"h_bucket", "h", NODE_PROM_HISTOGRAM},
        {"h_sum", "h", NODE_PROM_HISTOGRAM},
        {"h_count", "h", NODE_PROM_HISTOGRAM},
        {"s", "s", NODE_PROM_SUMMARY},
        {"s_sum", "s", NODE_PROM_SUMMARY},
        {"s_count", "s", NODE_PROM_SUMMARY},
        {"s_bucket", "s_bucket", NODE_PROM_UNTYPED}, /* not a histogram */
        {"c_total", "c_total", NODE_PROM_UNTYPED},   /* _total is kept */
        {"c", "c", NODE_PROM_COUNTER},
        {"c_sum", "c_sum", NODE_PROM_UNTYPED},   /* counters have no _sum */
        {"g_count", "g_count", NODE_PROM_GAUGE}, /* exact name wins */
        {"u", "u", NODE_PROM_UNTYPED},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        CHECK_STR(recs[i].name, want[i].name);
        CHECK_STR(recs[i].family, want[i].family);
        CHECK_EQ(recs[i].type, want[i].type);
    }
    CHECK_STR(recs[1].lvalue[0], "+Inf");
    CHECK(recs[4].value == 0.2);

    /* Out-of-order samples still find their family; types any case. */
    REQUIRE_OK(parse("# TYPE a GAUGE\na 1\n# TYPE b Counter\nb 1\na 2\n"));
    REQUIRE_EQ(n_samples, 3);
    CHECK_EQ(recs[0].type, NODE_PROM_GAUGE);
    CHECK_EQ(recs[1].type, NODE_PROM_COUNTER);
    CHECK_EQ(recs[2].type, NODE_PROM_GAUGE);
    REQUIRE_OK(parse("# TYPE x untyped\nx 1\n"));
    CHECK_EQ(recs[0].type, NODE_PROM_UNTYPED);
}

static void test_many_families(void)
{
    /* Enough TYPE lines to grow the family table and its name pool. */
    static char text[64 * 1024];
    size_t len = 0;
    for (int i = 0; i < 500; i++) {
        len += (size_t)snprintf(text + len, sizeof text - len,
                                "# TYPE family_with_a_long_name_%d %s\n", i,
                                i % 2 ? "counter" : "summary");
    }
    for (int i = 499; i >= 0; i--) {
        len += (size_t)snprintf(text + len, sizeof text - len,
                                "family_with_a_long_name_%d%s %d\n", i,
                                i % 2 ? "" : "_count", i);
    }
    REQUIRE(len < sizeof text - 1);
    REQUIRE_OK(parse_n(text, len));
    REQUIRE_EQ(n_samples, 500);
    for (int i = 0; i < 500; i++) {
        const struct rec *r = &recs[499 - i];
        char fam[64];
        snprintf(fam, sizeof fam, "family_with_a_long_name_%d", i);
        CHECK_STR(r->family, fam);
        CHECK_EQ(r->type, i % 2 ? NODE_PROM_COUNTER : NODE_PROM_SUMMARY);
        CHECK(r->value == i);
    }
}

static void test_labels(void)
{
    REQUIRE_OK(
        parse("a{x=\"back\\\\slash\",q=\"say \\\"hi\\\"\","
              "n=\"two\\nlines\",e=\"\",u=\"caf\xc3\xa9 \\\\n\"} 1\n"));
    REQUIRE_EQ(n_samples, 1);
    const struct rec *r = &recs[0];
    REQUIRE_EQ(r->n_labels, 5);
    CHECK_STR(r->lname[0], "x");
    CHECK_STR(r->lvalue[0], "back\\slash");
    CHECK_STR(r->lvalue[1], "say \"hi\"");
    CHECK_STR(r->lvalue[2], "two\nlines");
    CHECK_STR(r->lvalue[3], "");
    CHECK_STR(r->lvalue[4], "caf\xc3\xa9 \\n");

    /* Blanks where Go's parser allows them, a trailing comma, empty set,
     * names with colons and underscores, braces and '#' inside values. */
    REQUIRE_OK(
        parse("  \ta:b_c {\t_l1 = \"v}\" ,  L2=\"#{,}\" , } \t 2 \t\n"
              "b{} 3\n"
              "_c 4\n"
              ":d 5\n"));
    REQUIRE_EQ(n_samples, 4);
    r = &recs[0];
    CHECK_STR(r->name, "a:b_c");
    REQUIRE_EQ(r->n_labels, 2);
    CHECK_STR(r->lname[0], "_l1");
    CHECK_STR(r->lvalue[0], "v}");
    CHECK_STR(r->lname[1], "L2");
    CHECK_STR(r->lvalue[1], "#{,}");
    CHECK(r->value == 2);
    CHECK_STR(recs[1].name, "b");
    CHECK_EQ(recs[1].n_labels, 0);
    CHECK_STR(recs[2].name, "_c");
    CHECK_STR(recs[3].name, ":d");
}

static void test_many_labels(void)
{
    /* A large label set keeps its order and is checked for duplicates. */
    static char text[8192];
    size_t len = (size_t)snprintf(text, sizeof text, "m{");
    for (int i = 0; i < 300; i++) {
        len += (size_t)snprintf(text + len, sizeof text - len, "l%d=\"%d\",",
                                (i * 7) % 300, i);
    }
    len += (size_t)snprintf(text + len, sizeof text - len, "} 1\n");
    REQUIRE_OK(parse_n(text, len));
    REQUIRE_EQ(n_samples, 1);
    CHECK_EQ(recs[0].n_labels, 300);
    CHECK_STR(recs[0].lname[1], "l7");
    CHECK_STR(recs[0].lvalue[1], "1");

    /* Same with one name repeated far apart. */
    len = (size_t)snprintf(text, sizeof text, "m 0\nm{");
    for (int i = 0; i < 300; i++) {
        len += (size_t)snprintf(text + len, sizeof text - len, "l%d=\"\",",
                                i == 250 ? 3 : i);
    }
    len += (size_t)snprintf(text + len, sizeof text - len, "} 1\n");
    CHECK_EQ(parse_n(text, len), SM_EMALFORMED);
    CHECK_STR(err, "line 2: duplicate label name \"l3\"");
}

static void test_values(void)
{
    REQUIRE_OK(
        parse("a NaN\nb +Inf\nc -Inf\nd Inf\ne inf\nf nan\ng -inf\n"
              "h +inf\ni Infinity\nj 1e3\nk -0.5\nl 0x1p4\nm 1E-3\n"
              "n +7\no .5\np 5.\nq 1e-400\nr 1.7976931348623157e308\n"
              "s -0\n"));
    REQUIRE_EQ(n_samples, 19);
    CHECK(isnan(recs[0].value));
    CHECK(isinf(recs[1].value) && recs[1].value > 0);
    CHECK(isinf(recs[2].value) && recs[2].value < 0);
    CHECK(isinf(recs[3].value) && recs[3].value > 0);
    CHECK(isinf(recs[4].value) && recs[4].value > 0);
    CHECK(isnan(recs[5].value));
    CHECK(isinf(recs[6].value) && recs[6].value < 0);
    CHECK(isinf(recs[7].value) && recs[7].value > 0);
    CHECK(isinf(recs[8].value) && recs[8].value > 0);
    CHECK(recs[9].value == 1000);
    CHECK(recs[10].value == -0.5);
    CHECK(recs[11].value == 16);
    CHECK(recs[12].value == 0.001);
    CHECK(recs[13].value == 7);
    CHECK(recs[14].value == 0.5);
    CHECK(recs[15].value == 5);
    CHECK(recs[16].value >= 0 && recs[16].value < 1e-300); /* underflow */
    CHECK(recs[17].value == 1.7976931348623157e308);
    CHECK(recs[18].value == 0 && signbit(recs[18].value));
}

static void test_timestamps(void)
{
    REQUIRE_OK(
        parse("a 1 1795421730123\n"
              "b{x=\"y\"} 2 -5 \n"
              "c 3\t+7\n"
              "d 4 9223372036854775807\n"
              "e 5 -9223372036854775808\n"
              "f 6 0\n"
              "g 7\n"));
    REQUIRE_EQ(n_samples, 7);
    CHECK(recs[0].has_ts);
    CHECK(recs[0].ts == 1795421730123);
    CHECK(recs[1].ts == -5);
    CHECK(recs[2].ts == 7);
    CHECK(recs[3].ts == INT64_MAX);
    CHECK(recs[4].ts == INT64_MIN);
    CHECK(recs[5].has_ts && recs[5].ts == 0);
    CHECK(!recs[6].has_ts);
    CHECK(recs[6].value == 7);
}

static void test_line_ends(void)
{
    /* CRLF everywhere, including in comment and TYPE lines. */
    REQUIRE_OK(
        parse("# HELP a Help.\r\n# TYPE a counter\r\na{b=\"c\"} 1\r\n"
              "\r\nb 2 3\r\n"));
    REQUIRE_EQ(n_samples, 2);
    CHECK_EQ(recs[0].type, NODE_PROM_COUNTER);
    CHECK_STR(recs[0].lvalue[0], "c");
    CHECK(recs[1].ts == 3);

    /* No final newline, with and without a final CR. */
    REQUIRE_OK(parse("a 1\nb 2"));
    REQUIRE_EQ(n_samples, 2);
    CHECK(recs[1].value == 2);
    REQUIRE_OK(parse("a 1\r\nb{c=\"d\"} 2 17\r"));
    REQUIRE_EQ(n_samples, 2);
    CHECK(recs[1].ts == 17);
    REQUIRE_OK(parse("# TYPE a counter"));
    CHECK_EQ(n_samples, 0);
    REQUIRE_OK(parse("a 1\n# trailing comment"));
    CHECK_EQ(n_samples, 1);
    /* A CR inside a line is not a line end. */
    CHECK_EQ(parse("a 1\rb 2\n"), SM_EMALFORMED);
}

static void test_comments_and_empty(void)
{
    REQUIRE_OK(parse_n("", 0));
    CHECK_EQ(n_samples, 0);
    CHECK_STR(err, "");
    REQUIRE_OK(node_prom_parse(NULL, 0, collect, NULL, err));
    REQUIRE_OK(parse("\n\n  \n\t\n"));
    CHECK_EQ(n_samples, 0);
    REQUIRE_OK(
        parse("#\n"
              "# just words\n"
              "  # indented\n"
              "#HELP a text without a blank after #\n"
              "# HELP b Text with \\\\ and \\n escapes and \"quotes\".\n"
              "# HELP c\n"
              "# HELPER not a help line\n"
              "# help lower case is a comment {\n"
              "# TYPEWRITER neither\n"
              "# EOF\n"
              "#\xff\xfe binary\n"
              "# HELP a second HELP is not checked\n"
              "a 1\n"));
    REQUIRE_EQ(n_samples, 1);
    CHECK_EQ(recs[0].type, NODE_PROM_UNTYPED);
    /* NUL bytes are harmless in comments. */
    REQUIRE_OK(parse_n("# a\0b\nx 1\n", 10));
    CHECK_EQ(n_samples, 1);
}

/* ---- Errors ------------------------------------------------------------- */

static void test_malformed(void)
{
    static const struct
    {
        const char *text;
        size_t line;
    } cases[] = {
        /* Metric names. */
        {"3foo 1\n", 1},
        {"a 1\nfoo-bar 1\n", 2},
        {"a 1\n\n{b=\"c\"} 1\n", 3},
        {"a\"b 1\n", 1},
        {"\xc3\xa9 1\n", 1},
        {"a.b 1\n", 1},
        /* Label names. */
        {"a{1b=\"x\"} 1\n", 1},
        {"a{b-c=\"x\"} 1\n", 1},
        {"a{b:c=\"x\"} 1\n", 1},
        {"a{,} 1\n", 1},
        {"a{b=\"x\",,c=\"y\"} 1\n", 1},
        {"a{=\"x\"} 1\n", 1},
        /* Label syntax. */
        {"a{b} 1\n", 1},
        {"a{b=x} 1\n", 1},
        {"a{b='x'} 1\n", 1},
        {"a{b=\"x\" c=\"y\"} 1\n", 1},
        {"a{b=\"x\"\n", 1},
        {"a{b=\"x\",\n", 1},
        {"a{b\n", 1},
        {"a{\n", 1},
        {"a{b=\"x\"}} 1\n", 1},
        /* Unterminated quotes and bad escapes. */
        {"a{b=\"x} 1\n", 1},
        {"ok 1\na{b=\"x\\\"} 1\nok 2\n", 2},
        {"a{b=\"x\\", 1},
        {"a{b=\"x\\t\"} 1\n", 1},
        {"a{b=\"\\u00e9\"} 1\n", 1},
        {"a{b=\"\\'\"} 1\n", 1},
        /* Duplicate labels. */
        {"a{b=\"1\",b=\"2\"} 1\n", 1},
        {"a{b=\"1\",c=\"2\",b=\"1\"} 1\n", 1},
        /* Values. */
        {"a\n", 1},
        {"a \n", 1},
        {"a{}\n", 1},
        {"a{b=\"c\"}  \r\n", 1},
        {"a{}1\n", 1},
        {"a 1x\n", 1},
        {"a 1,5\n", 1},
        {"a 1_000\n", 1},
        {"a nan(1)\n", 1},
        {"a --1\n", 1},
        {"a 1e\n", 1},
        {"a .\n", 1},
        {"a e5\n", 1},
        {"a 1e999\n", 1},
        {"a -1e999\n", 1},
        {"a \"1\"\n", 1},
        {"a Infinit\n", 1},
        /* Timestamps. */
        {"a 1 12.5\n", 1},
        {"a 1 -\n", 1},
        {"a 1 +\n", 1},
        {"a 1 1e3\n", 1},
        {"a 1 0x10\n", 1},
        {"a 1 9223372036854775808\n", 1},
        {"a 1 -9223372036854775809\n", 1},
        {"a 1 99999999999999999999999\n", 1},
        {"a 1 123 extra\n", 1},
        {"a 1 123 4\n", 1},
        /* TYPE and HELP lines. */
        {"# TYPE a counter\n# TYPE a gauge\n", 2},
        {"# TYPE a counter\na 1\n# TYPE b gauge\nb 1\n# TYPE a gauge\n", 5},
        {"# TYPE a counter\n# TYPE a counter\n", 2},
        {"# TYPE a\n", 1},
        {"# TYPE a \n", 1},
        {"# TYPE a countr\n", 1},
        {"# TYPE a counter extra\n", 1},
        {"# TYPE a gauge_histogram\n", 1},
        {"# TYPE\n", 1},
        {"# TYPE \n", 1},
        {"# TYPE 1a counter\n", 1},
        {"# TYPE a{b=\"c\"} counter\n", 1},
        {"# HELP\n", 1},
        {"# HELP a-b text\n", 1},
        {"# HELP 9 text\n", 1},
        /* Line numbers count blank, comment and CRLF lines. */
        {"# c\r\n\r\n  \r\n# TYPE a gauge\r\na 1\r\nb{ 2\r\n", 6},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rv = parse(cases[i].text);
        char prefix[32];
        snprintf(prefix, sizeof prefix, "line %zu: ", cases[i].line);
        if (rv != SM_EMALFORMED || strncmp(err, prefix, strlen(prefix)) != 0 ||
            strlen(err) <= strlen(prefix)) {
            check__fail(__FILE__, __LINE__, 0,
                        "case %zu \"%s\": got %s \"%s\", want SM_EMALFORMED "
                        "at line %zu",
                        i, cases[i].text, sm_errname(rv), err, cases[i].line);
        }
    }
}

static void test_error_messages(void)
{
    CHECK_EQ(parse("a 1\nb{c=\"d\\x\"} 2\n"), SM_EMALFORMED);
    CHECK_STR(err, "line 2: bad escape \"\\x\" in label value");
    CHECK_EQ(n_samples, 1); /* samples before the error stay passed */
    CHECK_EQ(parse("a 12ab\n"), SM_EMALFORMED);
    CHECK_STR(err, "line 1: bad value \"12ab\"");
    CHECK_EQ(parse("# TYPE a gauge\n# TYPE a gauge\n"), SM_EMALFORMED);
    CHECK_STR(err, "line 2: second # TYPE for a");
    CHECK_EQ(parse("a{b=\"1\",b=\"2\"} 1\n"), SM_EMALFORMED);
    CHECK_STR(err, "line 1: duplicate label name \"b\"");
    CHECK_EQ(parse("a{b=\"x} 1\n"), SM_EMALFORMED);
    CHECK_STR(err, "line 1: unterminated label value");
    /* Bytes that are not printable are not copied into the message. */
    CHECK_EQ(parse("\x1b[31m 1\n"), SM_EMALFORMED);
    CHECK_STR(err, "line 1: bad metric name \"?[31m\"");
    /* NUL bytes in a label value or a value are errors. */
    CHECK_EQ(parse_n("a{b=\"x\0y\"} 1\n", 14), SM_EMALFORMED);
    CHECK_STR(err, "line 1: NUL byte in label value");
    CHECK_EQ(parse_n("a 1\0\n", 5), SM_EMALFORMED);
    CHECK_EQ(parse_n("a\0 1\n", 5), SM_EMALFORMED);
}

static void test_line_limit(void)
{
    /* A line of exactly 64 KiB passes (with LF, CRLF or nothing after it);
     * one byte more fails, wherever the line is. */
    static char text[64 * 1024 + 64];
    size_t max = 64 * 1024;
    size_t head = (size_t)snprintf(text, 64, "a 1\na{l=\"");
    size_t value_len = max - strlen("a{l=\"\"} 1");
    memset(text + head, 'v', value_len);
    size_t len = head + value_len;
    memcpy(text + len, "\"} 1", 4);
    len += 4;
    REQUIRE_EQ(len - 4, max);

    CHECK_OK(parse_n(text, len));
    CHECK_EQ(n_samples, 2);
    CHECK_EQ(strlen(recs[1].lvalue[0]), 0); /* too long to record */
    memcpy(text + len, "\r\n", 2);
    CHECK_OK(parse_n(text, len + 2));
    CHECK_OK(parse_n(text, len + 1));
    memcpy(text + len, "\nb 2\n", 5);
    CHECK_OK(parse_n(text, len + 5));
    CHECK_EQ(n_samples, 3);

    /* One more byte in the value. */
    memmove(text + head + 1, text + head, len - head);
    len++;
    memcpy(text + len, "\nb 2\n", 5);
    CHECK_EQ(parse_n(text, len + 5), SM_EMALFORMED);
    CHECK_STR(err, "line 2: line longer than 65536 bytes");
    CHECK_EQ(n_samples, 1);
    CHECK_EQ(parse_n(text, len), SM_EMALFORMED);
    CHECK_EQ(parse_n(text, len + 1), SM_EMALFORMED);
    /* Long comments count too. */
    memcpy(text + 4, "# ", 2);
    CHECK_EQ(parse_n(text, len + 5), SM_EMALFORMED);
}

static void test_long_lines(void)
{
    /* Lines that grow the scratch buffer several times, in both orders. */
    static char text[200 * 1024];
    size_t len = 0;
    static const size_t sizes[] = {10, 300, 5000, 40000, 100, 65000, 20};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        len += (size_t)snprintf(text + len, sizeof text - len, "m%zu{v=\"", i);
        memset(text + len, 'a' + (int)i, sizes[i]);
        len += sizes[i];
        len += (size_t)snprintf(text + len, sizeof text - len, "\"} %zu\n",
                                sizes[i]);
    }
    REQUIRE_OK(parse_n(text, len));
    REQUIRE_EQ(n_samples, 7);
    CHECK(recs[6].value == 20);
    CHECK_STR(recs[6].lvalue[0], "gggggggggggggggggggg");
}

static void test_callback_abort(void)
{
    stop_after = 2;
    CHECK_EQ(parse("a 1\nb 2\nc 3\n"), STOP_RV);
    CHECK_EQ(n_samples, 2);
    CHECK_STR(err, "line 2: sample callback returned 4242");
    stop_after = 1;
    CHECK_EQ(parse("# TYPE x counter\nx 1\nbad-line\n"), STOP_RV);
    CHECK_EQ(n_samples, 1);
}

static int fail_enomem(void *arg, const struct node_prom_sample *s)
{
    (void)s;
    int *n = arg;
    return ++*n == 3 ? SM_ENOMEM : SM_OK;
}

static void test_callback_error(void)
{
    int n = 0;
    CHECK_EQ(node_prom_parse("a 1\nb 2\nc 3\nd 4\n", 16, fail_enomem, &n, err),
             SM_ENOMEM);
    CHECK_EQ(n, 3);
    CHECK_STR(err, "line 3: sample callback failed: SM_ENOMEM");
}

/* Input exercising every allocation: families past the first table and
 * pool, a large label set and lines that grow the scratch. */
static size_t oom_text(char *text, size_t cap)
{
    size_t len = 0;
    for (int i = 0; i < 60; i++) {
        len += (size_t)snprintf(text + len, cap - len,
                                "# TYPE some_family_name_number_%d gauge\n"
                                "some_family_name_number_%d{i=\"%d\"} %d\n",
                                i, i, i, i);
    }
    len += (size_t)snprintf(text + len, cap - len, "many{");
    for (int i = 0; i < 40; i++) {
        len += (size_t)snprintf(text + len, cap - len, "l%d=\"x\",", i);
    }
    len += (size_t)snprintf(text + len, cap - len, "} 1\nlong{v=\"");
    memset(text + len, 'z', 3000);
    len += 3000;
    len += (size_t)snprintf(text + len, cap - len, "\"} 2 3\n");
    SM_ASSERT(len < cap);
    return len;
}

static void test_out_of_memory(void)
{
    static char text[16 * 1024];
    size_t len = oom_text(text, sizeof text);
    for (int repeat = 1; repeat >= -1; repeat -= 2) {
        int k = 0;
        for (;; k++) {
            REQUIRE(k < 100);
            check_heap_install();
            check_heap_fault(k, repeat);
            int rv = parse_n(text, len);
            long calls = check_heap_calls();
            CHECK_EQ(check_heap_outstanding(), 0);
            check_heap_uninstall();
            if (rv == SM_OK) {
                CHECK_EQ(n_samples, 62);
                CHECK(calls == k); /* every allocation was failed once */
                break;
            }
            if (rv != SM_ENOMEM || strstr(err, "out of memory") == NULL) {
                check__fail(__FILE__, __LINE__, 1, "fault at %d: %s \"%s\"", k,
                            sm_errname(rv), err);
            }
        }
        CHECK(k >= 6); /* buf, labels, pool, table, and their growth */
    }
}

static void test_type_names(void)
{
    CHECK_STR(node_prom_type_name(NODE_PROM_UNTYPED), "untyped");
    CHECK_STR(node_prom_type_name(NODE_PROM_COUNTER), "counter");
    CHECK_STR(node_prom_type_name(NODE_PROM_GAUGE), "gauge");
    CHECK_STR(node_prom_type_name(NODE_PROM_HISTOGRAM), "histogram");
    CHECK_STR(node_prom_type_name(NODE_PROM_SUMMARY), "summary");
    CHECK_STR(node_prom_type_name((enum node_prom_type)99), "unknown");
}

static const struct check_test tests[] = {
    {"node_exporter sample", test_node_exporter_sample},
    {"node_exporter selected families", test_node_exporter_selected},
    {"process-exporter sample", test_process_exporter_sample},
    {"families", test_families},
    {"many families", test_many_families},
    {"labels and escapes", test_labels},
    {"many labels", test_many_labels},
    {"special values", test_values},
    {"timestamps", test_timestamps},
    {"line ends", test_line_ends},
    {"comments and empty input", test_comments_and_empty},
    {"malformed input", test_malformed},
    {"error messages", test_error_messages},
    {"line limit", test_line_limit},
    {"long lines", test_long_lines},
    {"callback abort", test_callback_abort},
    {"callback error", test_callback_error},
    {"out of memory", test_out_of_memory},
    {"type names", test_type_names},
};

CHECK_MAIN(tests, setup, NULL)
