/* The agent's cgroup actuator: layout detection, knob parsing and writing. */

/* Design. A knob is a small text file. Each on-disk format has a parser and
 * a formatter (act_cg_parse, act_cg_format) that are pure and agree with
 * each other: whatever parses formats back, and the formatted text parses
 * to the same setting. act_cg_apply() builds on that for idempotence: it
 * formats both the value it wants and the value it read, file by file, and
 * writes only the files whose text differs. So "0,1,2" against a kernel's
 * "0-2", or v1's unlimited memory (a huge number) against "-1", compare
 * equal, and a v1 blkio.weight read back exactly is restored exactly.
 *
 * Paths are built from three parts: a hierarchy directory found at open
 * (the root for v2), the service's relative cgroup path (checked to hold no
 * ".." component) and a fixed file name. Files are opened without O_CREAT
 * and with O_NOFOLLOW, so nothing is created and no symlink is followed at
 * the last step. */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "actuate/actuate.h"
#include "actuate/sysfs_internal.h"
#include "base/alloc.h"
#include "base/err.h"

#define DEFAULT_ROOT      "/sys/fs/cgroup"
#define DEFAULT_PROC      "/proc"
#define V1_UNLIMITED_FROM (UINT64_C(1) << 62)
#define COMM_LEN          15 /* the kernel's TASK_COMM_LEN - 1 */
#define MAX_PROC_ENTRIES  (1 << 22)

struct act_cg
{
    enum act_cg_layout layout;
    char root[ACT_CG_PATH_SIZE];
    /* The hierarchy directory of each controller; "" when not mounted. */
    char dir[ACT_CG_CTRL__COUNT][ACT_CG_PATH_SIZE];
};

/* ---- Names --------------------------------------------------------------- */

static const char *const file_names[] = {
    [ACT_CG_FILE_CPU_MAX] = "cpu.max",
    [ACT_CG_FILE_CFS_QUOTA] = "cpu.cfs_quota_us",
    [ACT_CG_FILE_CFS_PERIOD] = "cpu.cfs_period_us",
    [ACT_CG_FILE_CPUSET_CPUS] = "cpuset.cpus",
    [ACT_CG_FILE_MEMORY_MAX] = "memory.max",
    [ACT_CG_FILE_MEMORY_LIMIT] = "memory.limit_in_bytes",
    [ACT_CG_FILE_IO_WEIGHT] = "io.weight",
    [ACT_CG_FILE_BLKIO_WEIGHT] = "blkio.weight",
};

static const enum act_knob file_knob[] = {
    [ACT_CG_FILE_CPU_MAX] = ACT_KNOB_CPU_QUOTA,
    [ACT_CG_FILE_CFS_QUOTA] = ACT_KNOB_CPU_QUOTA,
    [ACT_CG_FILE_CFS_PERIOD] = ACT_KNOB_CPU_QUOTA,
    [ACT_CG_FILE_CPUSET_CPUS] = ACT_KNOB_CPUSET,
    [ACT_CG_FILE_MEMORY_MAX] = ACT_KNOB_MEMORY,
    [ACT_CG_FILE_MEMORY_LIMIT] = ACT_KNOB_MEMORY,
    [ACT_CG_FILE_IO_WEIGHT] = ACT_KNOB_IO_WEIGHT,
    [ACT_CG_FILE_BLKIO_WEIGHT] = ACT_KNOB_IO_WEIGHT,
};

static const char *const knob_names[] = {
    [ACT_KNOB_CPU_QUOTA] = "cpu",
    [ACT_KNOB_CPUSET] = "cpuset",
    [ACT_KNOB_MEMORY] = "memory",
    [ACT_KNOB_IO_WEIGHT] = "io",
};

/* The controller of each knob has the same index. */
static const enum act_cg_ctrl knob_ctrl[] = {
    [ACT_KNOB_CPU_QUOTA] = ACT_CG_CTRL_CPU,
    [ACT_KNOB_CPUSET] = ACT_CG_CTRL_CPUSET,
    [ACT_KNOB_MEMORY] = ACT_CG_CTRL_MEMORY,
    [ACT_KNOB_IO_WEIGHT] = ACT_CG_CTRL_IO,
};

static const char *const ctrl_names[] = {
    [ACT_CG_CTRL_CPU] = "cpu",
    [ACT_CG_CTRL_CPUSET] = "cpuset",
    [ACT_CG_CTRL_MEMORY] = "memory",
    [ACT_CG_CTRL_IO] = "io",
};

const char *act_cg_file_name(enum act_cg_file file)
{
    if ((unsigned)file >= ACT_CG_FILE__COUNT) {
        return "unknown";
    }
    return file_names[file];
}

const char *act_cg_layout_name(enum act_cg_layout layout)
{
    switch (layout) {
        case ACT_CG_V1:
            return "v1";
        case ACT_CG_V2:
            return "v2";
    }
    return "unknown";
}

const char *act_knob_name(enum act_knob knob)
{
    if ((unsigned)knob >= ACT_KNOB__COUNT) {
        return "unknown";
    }
    return knob_names[knob];
}

const char *act_cg_ctrl_name(enum act_cg_ctrl ctrl)
{
    if ((unsigned)ctrl >= ACT_CG_CTRL__COUNT) {
        return "unknown";
    }
    return ctrl_names[ctrl];
}

/* ---- Settings ------------------------------------------------------------ */

void act_setting_cpu(struct act_setting *s,
                     bool unlimited,
                     uint64_t quota_us,
                     uint64_t period_us)
{
    memset(s, 0, sizeof *s);
    s->knob = ACT_KNOB_CPU_QUOTA;
    s->unlimited = unlimited;
    s->value = unlimited ? 0 : quota_us;
    s->period = period_us;
}

void act_setting_memory(struct act_setting *s, bool unlimited, uint64_t bytes)
{
    memset(s, 0, sizeof *s);
    s->knob = ACT_KNOB_MEMORY;
    s->unlimited = unlimited;
    s->value = unlimited ? 0 : bytes;
}

void act_setting_io_weight(struct act_setting *s, uint64_t weight)
{
    memset(s, 0, sizeof *s);
    s->knob = ACT_KNOB_IO_WEIGHT;
    s->value = weight;
}

void act_setting_cpuset(struct act_setting *s, const char *cpus)
{
    memset(s, 0, sizeof *s);
    s->knob = ACT_KNOB_CPUSET;
    snprintf(s->cpus, sizeof s->cpus, "%s", cpus);
}

uint64_t act_cg_blkio_to_io_weight(uint64_t blkio)
{
    if (blkio > ACT_CG_BLKIO_MAX * 100) {
        blkio = ACT_CG_BLKIO_MAX * 100;
    }
    uint64_t io = blkio * ACT_CG_IO_WEIGHT_DEF / ACT_CG_BLKIO_DEF;
    if (io < ACT_CG_IO_WEIGHT_MIN) {
        return ACT_CG_IO_WEIGHT_MIN;
    }
    return io > ACT_CG_IO_WEIGHT_MAX ? ACT_CG_IO_WEIGHT_MAX : io;
}

uint64_t act_cg_io_to_blkio_weight(uint64_t io)
{
    if (io > ACT_CG_IO_WEIGHT_MAX) {
        io = ACT_CG_IO_WEIGHT_MAX;
    }
    uint64_t blkio = io * ACT_CG_BLKIO_DEF / ACT_CG_IO_WEIGHT_DEF;
    if (blkio < ACT_CG_BLKIO_MIN) {
        return ACT_CG_BLKIO_MIN;
    }
    return blkio > ACT_CG_BLKIO_MAX ? ACT_CG_BLKIO_MAX : blkio;
}

/* ---- Parsing helpers ----------------------------------------------------- */

static bool token_is(const char *p, size_t n, const char *word)
{
    return strlen(word) == n && memcmp(p, word, n) == 0;
}

static bool period_ok(uint64_t p)
{
    return p >= ACT_CG_PERIOD_MIN_US && p <= ACT_CG_PERIOD_MAX_US;
}

/* A set of CPUs as a bitmap. */
struct cpuset
{
    uint64_t bits[ACT_CG_MAX_CPUS / 64];
};

static bool cpuset_has(const struct cpuset *set, unsigned c)
{
    return (set->bits[c / 64] >> (c % 64)) & 1u;
}

/* Formats @set canonically into @buf ("0-3,6", "" when empty). */
static int cpuset_format(const struct cpuset *set,
                         char *buf,
                         size_t size,
                         char *errmsg)
{
    size_t len = 0;
    buf[0] = '\0';
    for (unsigned c = 0; c < ACT_CG_MAX_CPUS; c++) {
        if (!cpuset_has(set, c)) {
            continue;
        }
        unsigned hi = c;
        while (hi + 1 < ACT_CG_MAX_CPUS && cpuset_has(set, hi + 1)) {
            hi++;
        }
        int w = hi == c
                    ? snprintf(buf + len, size - len, "%s%u", len ? "," : "", c)
                    : snprintf(buf + len, size - len, "%s%u-%u", len ? "," : "",
                               c, hi);
        if (w < 0 || (size_t)w >= size - len) {
            sm_errmsg_printf(errmsg, "cpu list too long");
            return SM_EINVAL;
        }
        len += (size_t)w;
        c = hi;
    }
    return SM_OK;
}

/* Canonicalises the cpu list @in into @out (ACT_CG_CPUS_SIZE bytes). */
static int cpus_canonical(const char *in, char *out, char *errmsg)
{
    struct cpuset set;
    int rv = act__cpulist_parse(in, strlen(in), set.bits, errmsg);
    if (rv != SM_OK) {
        return rv;
    }
    return cpuset_format(&set, out, ACT_CG_CPUS_SIZE, errmsg);
}

bool act_setting_equal(const struct act_setting *a, const struct act_setting *b)
{
    if (a->knob != b->knob) {
        return false;
    }
    switch (a->knob) {
        case ACT_KNOB_CPU_QUOTA:
            return a->unlimited == b->unlimited &&
                   (a->unlimited || a->value == b->value) &&
                   a->period == b->period;
        case ACT_KNOB_MEMORY:
            return a->unlimited == b->unlimited &&
                   (a->unlimited || a->value == b->value);
        case ACT_KNOB_IO_WEIGHT:
            return a->value == b->value;
        case ACT_KNOB_CPUSET: {
            char ca[ACT_CG_CPUS_SIZE], cb[ACT_CG_CPUS_SIZE];
            char err[SM_ERRMSG_SIZE];
            if (cpus_canonical(a->cpus, ca, err) != SM_OK ||
                cpus_canonical(b->cpus, cb, err) != SM_OK) {
                return strcmp(a->cpus, b->cpus) == 0;
            }
            return strcmp(ca, cb) == 0;
        }
        case ACT_KNOB__COUNT:
            break;
    }
    return false;
}

/* ---- Parse and format ---------------------------------------------------- */

static int parse_io_weight(const char *p, size_t n, uint64_t *w, char *errmsg)
{
    if (n > 0 && p[n - 1] == '\n') {
        sm_errmsg_printf(errmsg, "empty line at the end");
        return SM_EINVAL;
    }
    size_t line = 0;
    size_t i = 0;
    while (i < n) {
        size_t end = i;
        while (end < n && p[end] != '\n') {
            end++;
        }
        const char *sp = memchr(p + i, ' ', end - i);
        uint64_t v;
        if (sp == NULL ||
            !act__parse_u64(sp + 1, (size_t)(p + end - sp - 1), &v)) {
            sm_errmsg_printf(errmsg, "bad line \"%.*s\"", (int)(end - i),
                             p + i);
            return SM_EINVAL;
        }
        size_t klen = (size_t)(sp - (p + i));
        if (line == 0) {
            if (!token_is(p + i, klen, "default")) {
                sm_errmsg_printf(errmsg, "first line is not \"default N\"");
                return SM_EINVAL;
            }
        } else {
            const char *colon = memchr(p + i, ':', klen);
            uint64_t maj, min;
            if (colon == NULL ||
                !act__parse_u64(p + i, (size_t)(colon - (p + i)), &maj) ||
                !act__parse_u64(colon + 1, (size_t)(sp - colon - 1), &min)) {
                sm_errmsg_printf(errmsg, "bad device \"%.*s\"", (int)klen,
                                 p + i);
                return SM_EINVAL;
            }
        }
        if (v < ACT_CG_IO_WEIGHT_MIN || v > ACT_CG_IO_WEIGHT_MAX) {
            sm_errmsg_printf(errmsg, "weight %llu outside %u..%u",
                             (unsigned long long)v, ACT_CG_IO_WEIGHT_MIN,
                             ACT_CG_IO_WEIGHT_MAX);
            return SM_EINVAL;
        }
        if (line == 0) {
            *w = v;
        }
        line++;
        i = end + 1;
    }
    if (line == 0) {
        sm_errmsg_printf(errmsg, "empty");
        return SM_EINVAL;
    }
    return SM_OK;
}

int act_cg_parse(enum act_cg_file file,
                 const char *text,
                 size_t len,
                 struct act_setting *s,
                 char *errmsg)
{
    if ((unsigned)file >= ACT_CG_FILE__COUNT) {
        sm_errmsg_printf(errmsg, "unknown knob file %d", (int)file);
        return SM_EINVAL;
    }
    const char *name = file_names[file];
    if (len > ACT_CG_FILE_TEXT_MAX) {
        sm_errmsg_printf(errmsg, "%s: %zu bytes, more than %d", name, len,
                         ACT_CG_FILE_TEXT_MAX);
        return SM_EINVAL;
    }
    if (len > 0 && text[len - 1] == '\n') {
        len--;
    }
    if (memchr(text, '\0', len) != NULL) {
        sm_errmsg_printf(errmsg, "%s: NUL byte in value", name);
        return SM_EINVAL;
    }
    struct act_setting t = *s;
    t.knob = file_knob[file];
    const char *sp;
    uint64_t v = 0;
    int rv = SM_OK;
    char err[SM_ERRMSG_SIZE] = "";
    switch (file) {
        case ACT_CG_FILE_CPU_MAX:
            sp = memchr(text, ' ', len);
            if (sp == NULL) {
                snprintf(err, sizeof err, "expected \"QUOTA PERIOD\"");
                break;
            }
            if (!act__parse_u64(sp + 1, (size_t)(text + len - sp - 1),
                                &t.period) ||
                !period_ok(t.period)) {
                snprintf(err, sizeof err, "bad period \"%.*s\"",
                         (int)(text + len - sp - 1), sp + 1);
                break;
            }
            if (token_is(text, (size_t)(sp - text), "max")) {
                t.unlimited = true;
                t.value = 0;
            } else if (act__parse_u64(text, (size_t)(sp - text), &v) &&
                       v >= ACT_CG_PERIOD_MIN_US) {
                t.unlimited = false;
                t.value = v;
            } else {
                snprintf(err, sizeof err, "bad quota \"%.*s\"",
                         (int)(sp - text), text);
            }
            break;
        case ACT_CG_FILE_CFS_QUOTA:
            if (token_is(text, len, "-1")) {
                t.unlimited = true;
                t.value = 0;
            } else if (act__parse_u64(text, len, &v) &&
                       v >= ACT_CG_PERIOD_MIN_US) {
                t.unlimited = false;
                t.value = v;
            } else {
                snprintf(err, sizeof err, "bad quota \"%.*s\"", (int)len, text);
            }
            break;
        case ACT_CG_FILE_CFS_PERIOD:
            if (act__parse_u64(text, len, &v) && period_ok(v)) {
                t.period = v;
            } else {
                snprintf(err, sizeof err, "bad period \"%.*s\"", (int)len,
                         text);
            }
            break;
        case ACT_CG_FILE_CPUSET_CPUS: {
            struct cpuset set;
            rv = act__cpulist_parse(text, len, set.bits, err);
            if (rv == SM_OK) {
                rv = cpuset_format(&set, t.cpus, sizeof t.cpus, err);
            }
            break;
        }
        case ACT_CG_FILE_MEMORY_MAX:
            if (token_is(text, len, "max")) {
                t.unlimited = true;
                t.value = 0;
            } else if (act__parse_u64(text, len, &v)) {
                t.unlimited = false;
                t.value = v;
            } else {
                snprintf(err, sizeof err, "bad limit \"%.*s\"", (int)len, text);
            }
            break;
        case ACT_CG_FILE_MEMORY_LIMIT:
            if (token_is(text, len, "-1")) {
                t.unlimited = true;
                t.value = 0;
            } else if (act__parse_u64(text, len, &v)) {
                t.unlimited = v >= V1_UNLIMITED_FROM;
                t.value = t.unlimited ? 0 : v;
            } else {
                snprintf(err, sizeof err, "bad limit \"%.*s\"", (int)len, text);
            }
            break;
        case ACT_CG_FILE_IO_WEIGHT:
            rv = parse_io_weight(text, len, &v, err);
            if (rv == SM_OK) {
                t.value = v;
                t.native = 0;
            }
            break;
        case ACT_CG_FILE_BLKIO_WEIGHT:
            if (act__parse_u64(text, len, &v) && v >= ACT_CG_BLKIO_MIN &&
                v <= ACT_CG_BLKIO_MAX) {
                t.native = v;
                t.value = act_cg_blkio_to_io_weight(v);
            } else {
                snprintf(err, sizeof err, "bad weight \"%.*s\" (%u..%u)",
                         (int)len, text, ACT_CG_BLKIO_MIN, ACT_CG_BLKIO_MAX);
            }
            break;
        case ACT_CG_FILE__COUNT:
            break;
    }
    if (rv == SM_OK && err[0] != '\0') {
        rv = SM_EINVAL;
    }
    if (rv != SM_OK) {
        sm_errmsg_printf(errmsg, "%s: %s", name, err);
        return rv;
    }
    *s = t;
    return SM_OK;
}

int act_cg_format(enum act_cg_file file,
                  const struct act_setting *s,
                  char *buf,
                  size_t size,
                  char *errmsg)
{
    if ((unsigned)file >= ACT_CG_FILE__COUNT) {
        sm_errmsg_printf(errmsg, "unknown knob file %d", (int)file);
        return SM_EINVAL;
    }
    const char *name = file_names[file];
    if (s->knob != file_knob[file]) {
        sm_errmsg_printf(errmsg, "%s: a %s setting, not %s", name,
                         act_knob_name(s->knob), knob_names[file_knob[file]]);
        return SM_EINVAL;
    }
    bool cpu = s->knob == ACT_KNOB_CPU_QUOTA;
    if (cpu && !period_ok(s->period)) {
        sm_errmsg_printf(errmsg, "%s: period %llu outside %u..%u", name,
                         (unsigned long long)s->period, ACT_CG_PERIOD_MIN_US,
                         ACT_CG_PERIOD_MAX_US);
        return SM_EINVAL;
    }
    if (cpu && !s->unlimited && s->value < ACT_CG_PERIOD_MIN_US) {
        sm_errmsg_printf(errmsg, "%s: quota %llu below %u", name,
                         (unsigned long long)s->value, ACT_CG_PERIOD_MIN_US);
        return SM_EINVAL;
    }
    if (s->knob == ACT_KNOB_IO_WEIGHT &&
        (s->value < ACT_CG_IO_WEIGHT_MIN || s->value > ACT_CG_IO_WEIGHT_MAX)) {
        sm_errmsg_printf(errmsg, "%s: weight %llu outside %u..%u", name,
                         (unsigned long long)s->value, ACT_CG_IO_WEIGHT_MIN,
                         ACT_CG_IO_WEIGHT_MAX);
        return SM_EINVAL;
    }
    unsigned long long v = s->value;
    int w = 0;
    switch (file) {
        case ACT_CG_FILE_CPU_MAX:
            w = s->unlimited ? snprintf(buf, size, "max %llu\n",
                                        (unsigned long long)s->period)
                             : snprintf(buf, size, "%llu %llu\n", v,
                                        (unsigned long long)s->period);
            break;
        case ACT_CG_FILE_CFS_QUOTA:
            w = s->unlimited ? snprintf(buf, size, "-1\n")
                             : snprintf(buf, size, "%llu\n", v);
            break;
        case ACT_CG_FILE_CFS_PERIOD:
            w = snprintf(buf, size, "%llu\n", (unsigned long long)s->period);
            break;
        case ACT_CG_FILE_CPUSET_CPUS: {
            char canon[ACT_CG_CPUS_SIZE];
            char err[SM_ERRMSG_SIZE];
            if (memchr(s->cpus, '\0', sizeof s->cpus) == NULL ||
                cpus_canonical(s->cpus, canon, err) != SM_OK) {
                sm_errmsg_printf(errmsg, "%s: %s", name,
                                 memchr(s->cpus, '\0', sizeof s->cpus)
                                     ? err
                                     : "cpu list not terminated");
                return SM_EINVAL;
            }
            w = snprintf(buf, size, "%s\n", canon);
            break;
        }
        case ACT_CG_FILE_MEMORY_MAX:
            w = s->unlimited ? snprintf(buf, size, "max\n")
                             : snprintf(buf, size, "%llu\n", v);
            break;
        case ACT_CG_FILE_MEMORY_LIMIT:
            if (!s->unlimited && v >= V1_UNLIMITED_FROM) {
                sm_errmsg_printf(errmsg, "%s: limit %llu too large", name, v);
                return SM_EINVAL;
            }
            w = s->unlimited ? snprintf(buf, size, "-1\n")
                             : snprintf(buf, size, "%llu\n", v);
            break;
        case ACT_CG_FILE_IO_WEIGHT:
            w = snprintf(buf, size, "default %llu\n", v);
            break;
        case ACT_CG_FILE_BLKIO_WEIGHT: {
            uint64_t b =
                s->native >= ACT_CG_BLKIO_MIN && s->native <= ACT_CG_BLKIO_MAX
                    ? s->native
                    : act_cg_io_to_blkio_weight(s->value);
            w = snprintf(buf, size, "%llu\n", (unsigned long long)b);
            break;
        }
        case ACT_CG_FILE__COUNT:
            break;
    }
    if (w < 0 || (size_t)w >= size) {
        sm_errmsg_printf(errmsg, "%s: output buffer of %zu bytes too small",
                         name, size);
        return SM_ETOOBIG;
    }
    return SM_OK;
}

/* ---- Paths --------------------------------------------------------------- */

/* True when the relative path @p (length @n) has a ".." component. */
static bool has_dotdot(const char *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        size_t end = i;
        while (end < n && p[end] != '/') {
            end++;
        }
        if (end - i == 2 && p[i] == '.' && p[i + 1] == '.') {
            return true;
        }
        i = end + 1;
    }
    return false;
}

/* Joins @dir, the relative cgroup @rel (may be "") and @file (may be NULL). */
static int join(char *out,
                const char *dir,
                const char *rel,
                const char *file,
                char *errmsg)
{
    int w = snprintf(out, ACT_CG_PATH_SIZE, "%s%s%s%s%s", dir,
                     rel[0] ? "/" : "", rel, file ? "/" : "", file ? file : "");
    if (w < 0 || w >= ACT_CG_PATH_SIZE) {
        sm_errmsg_printf(errmsg, "path under %s too long", dir);
        return SM_EINVAL;
    }
    return SM_OK;
}

static bool is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* ---- Layout -------------------------------------------------------------- */

/* v1 hierarchy directory names to try, per controller, in order. */
static const char *const v1_dirs[ACT_CG_CTRL__COUNT][3] = {
    [ACT_CG_CTRL_CPU] = {"cpu", "cpu,cpuacct", "cpuacct,cpu"},
    [ACT_CG_CTRL_CPUSET] = {"cpuset", NULL, NULL},
    [ACT_CG_CTRL_MEMORY] = {"memory", NULL, NULL},
    [ACT_CG_CTRL_IO] = {"blkio", NULL, NULL},
};

int act_cg_open(const char *root, struct act_cg **out, char *errmsg)
{
    if (root == NULL) {
        root = DEFAULT_ROOT;
    }
    if (strlen(root) + 64 >= ACT_CG_PATH_SIZE) {
        sm_errmsg_printf(errmsg, "cgroup root %.64s... too long", root);
        return SM_EINVAL;
    }
    struct act_cg *cg = sm_calloc(1, sizeof *cg);
    if (cg == NULL) {
        sm_errmsg_printf(errmsg, "cgroup %s: out of memory", root);
        return SM_ENOMEM;
    }
    snprintf(cg->root, sizeof cg->root, "%s", root);
    char path[ACT_CG_PATH_SIZE];
    struct stat st;
    snprintf(path, sizeof path, "%s/cgroup.controllers", root);
    if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
        cg->layout = ACT_CG_V2;
        for (int c = 0; c < ACT_CG_CTRL__COUNT; c++) {
            snprintf(cg->dir[c], sizeof cg->dir[c], "%s", root);
        }
        *out = cg;
        return SM_OK;
    }
    cg->layout = ACT_CG_V1;
    bool any = false;
    for (int c = 0; c < ACT_CG_CTRL__COUNT; c++) {
        for (int k = 0; k < 3 && v1_dirs[c][k] != NULL; k++) {
            snprintf(path, sizeof path, "%s/%s", root, v1_dirs[c][k]);
            if (is_dir(path)) {
                snprintf(cg->dir[c], sizeof cg->dir[c], "%s", path);
                any = true;
                break;
            }
        }
    }
    if (!any) {
        sm_free(cg);
        sm_errmsg_printf(errmsg,
                         "no cgroup tree under %s (neither "
                         "cgroup.controllers nor v1 hierarchies)",
                         root);
        return SM_ENOTFOUND;
    }
    *out = cg;
    return SM_OK;
}

void act_cg_close(struct act_cg *cg)
{
    sm_free(cg);
}

enum act_cg_layout act_cg_layout(const struct act_cg *cg)
{
    return cg->layout;
}

bool act_cg_has_ctrl(const struct act_cg *cg, enum act_cg_ctrl ctrl)
{
    return (unsigned)ctrl < ACT_CG_CTRL__COUNT && cg->dir[ctrl][0] != '\0';
}

/* ---- Service cgroups ----------------------------------------------------- */

static void group_clear(struct act_cg_group *g)
{
    memset(g, 0, sizeof *g);
}

/* Stores the absolute cgroup path @p (length @n) for controller @c. */
static int group_set(struct act_cg_group *g,
                     int c,
                     const char *p,
                     size_t n,
                     char *errmsg)
{
    if (n == 0 || p[0] != '/') {
        sm_errmsg_printf(errmsg, "cgroup path \"%.*s\" is not absolute", (int)n,
                         p);
        return SM_EINVAL;
    }
    while (n > 0 && p[0] == '/') {
        p++;
        n--;
    }
    if (n >= ACT_CG_PATH_SIZE || has_dotdot(p, n) ||
        memchr(p, '\0', n) != NULL) {
        sm_errmsg_printf(
            errmsg, "cgroup path \"/%.*s\" %s", (int)n, p,
            n >= ACT_CG_PATH_SIZE ? "too long" : "holds \"..\" or a NUL");
        return SM_EINVAL;
    }
    memcpy(g->path[c], p, n);
    g->path[c][n] = '\0';
    g->has[c] = true;
    return SM_OK;
}

/* Maps a v1 controller list ("cpu,cpuacct") to flags per act_cg_ctrl. */
static void v1_ctrls(const char *p, size_t n, bool *which)
{
    size_t i = 0;
    while (i < n) {
        size_t end = i;
        while (end < n && p[end] != ',') {
            end++;
        }
        if (token_is(p + i, end - i, "cpu")) {
            which[ACT_CG_CTRL_CPU] = true;
        } else if (token_is(p + i, end - i, "cpuset")) {
            which[ACT_CG_CTRL_CPUSET] = true;
        } else if (token_is(p + i, end - i, "memory")) {
            which[ACT_CG_CTRL_MEMORY] = true;
        } else if (token_is(p + i, end - i, "blkio")) {
            which[ACT_CG_CTRL_IO] = true;
        }
        i = end + 1;
    }
}

int act_cg_parse_proc_cgroup(enum act_cg_layout layout,
                             const char *text,
                             size_t len,
                             struct act_cg_group *g,
                             char *errmsg)
{
    group_clear(g);
    if (len > ACT_CG_FILE_TEXT_MAX) {
        sm_errmsg_printf(errmsg, "cgroup file of %zu bytes too long", len);
        return SM_EINVAL;
    }
    size_t i = 0;
    int lineno = 0;
    while (i < len) {
        size_t end = i;
        while (end < len && text[end] != '\n') {
            end++;
        }
        lineno++;
        const char *l = text + i;
        size_t n = end - i;
        i = end + 1;
        if (n == 0) {
            continue;
        }
        const char *c1 = memchr(l, ':', n);
        const char *c2 =
            c1 ? memchr(c1 + 1, ':', (size_t)(l + n - c1 - 1)) : NULL;
        uint64_t id;
        if (c2 == NULL || !act__parse_u64(l, (size_t)(c1 - l), &id)) {
            sm_errmsg_printf(errmsg, "cgroup line %d: expected ID:CTRLS:PATH",
                             lineno);
            return SM_EINVAL;
        }
        const char *path = c2 + 1;
        size_t plen = (size_t)(l + n - path);
        size_t clen = (size_t)(c2 - c1 - 1);
        bool which[ACT_CG_CTRL__COUNT] = {false};
        if (layout == ACT_CG_V2) {
            if (id != 0 || clen != 0) {
                continue;
            }
            for (int c = 0; c < ACT_CG_CTRL__COUNT; c++) {
                which[c] = true;
            }
        } else {
            if (clen == 0) {
                continue; /* a hybrid host's unified line */
            }
            v1_ctrls(c1 + 1, clen, which);
        }
        for (int c = 0; c < ACT_CG_CTRL__COUNT; c++) {
            if (!which[c]) {
                continue;
            }
            int rv = group_set(g, c, path, plen, errmsg);
            if (rv != SM_OK) {
                sm_errmsg_wrapf(errmsg, "cgroup line %d", lineno);
                return rv;
            }
        }
    }
    return SM_OK;
}

int act_cg_group_from_template(const struct act_cg *cg,
                               const char *tmpl,
                               const char *service,
                               struct act_cg_group *g,
                               char *errmsg)
{
    group_clear(g);
    size_t slen = strlen(service);
    if (slen == 0 || strchr(service, '/') != NULL ||
        strcmp(service, "..") == 0 || strcmp(service, ".") == 0) {
        sm_errmsg_printf(errmsg, "bad service name \"%s\" for a cgroup path",
                         service);
        return SM_EINVAL;
    }
    char rel[ACT_CG_PATH_SIZE];
    while (*tmpl == '/') {
        tmpl++;
    }
    int rv =
        act__expand_service(tmpl, service, "cgroup", rel, sizeof rel, errmsg);
    if (rv != SM_OK) {
        return rv;
    }
    size_t n = strlen(rel);
    while (n > 0 && rel[n - 1] == '/') {
        n--;
    }
    rel[n] = '\0';
    if (has_dotdot(rel, n)) {
        sm_errmsg_printf(errmsg, "cgroup path \"%s\" holds \"..\"", rel);
        return SM_EINVAL;
    }
    bool any = false;
    char path[ACT_CG_PATH_SIZE];
    for (int c = 0; c < ACT_CG_CTRL__COUNT; c++) {
        if (cg->dir[c][0] == '\0') {
            continue;
        }
        rv = join(path, cg->dir[c], rel, NULL, errmsg);
        if (rv != SM_OK) {
            return rv;
        }
        if (is_dir(path)) {
            snprintf(g->path[c], sizeof g->path[c], "%s", rel);
            g->has[c] = true;
            any = true;
        }
    }
    if (!any) {
        sm_errmsg_printf(errmsg, "no cgroup \"%s\" under %s", rel, cg->root);
        return SM_ENOTFOUND;
    }
    return SM_OK;
}

static bool parse_pid(const char *name, int *pid)
{
    uint64_t v;
    if (!act__parse_u64(name, strlen(name), &v) || v == 0 || v > INT_MAX) {
        return false;
    }
    *pid = (int)v;
    return true;
}

int act_cg_group_from_process(const struct act_cg *cg,
                              const char *proc_root,
                              const char *comm,
                              struct act_cg_group *g,
                              int *pid,
                              char *errmsg)
{
    if (proc_root == NULL) {
        proc_root = DEFAULT_PROC;
    }
    size_t clen = strlen(comm);
    if (clen == 0) {
        sm_errmsg_printf(errmsg, "empty process name");
        return SM_EINVAL;
    }
    if (clen > COMM_LEN) {
        clen = COMM_LEN; /* the kernel truncates comm */
    }
    if (strlen(proc_root) + 64 >= ACT_CG_PATH_SIZE) {
        sm_errmsg_printf(errmsg, "proc root %.64s... too long", proc_root);
        return SM_EINVAL;
    }
    DIR *d = opendir(proc_root);
    if (d == NULL) {
        return act__io_fail(errmsg, "list", proc_root, errno);
    }
    char path[ACT_CG_PATH_SIZE];
    char buf[ACT_CG_FILE_TEXT_MAX + 1];
    int best = 0;
    struct dirent *e;
    for (long k = 0; k < MAX_PROC_ENTRIES && (e = readdir(d)) != NULL; k++) {
        int p;
        if (!parse_pid(e->d_name, &p) || (best != 0 && p >= best)) {
            continue;
        }
        snprintf(path, sizeof path, "%s/%s/comm", proc_root, e->d_name);
        size_t n;
        char err[SM_ERRMSG_SIZE];
        if (act__read_file(path, buf, ACT_CG_FILE_TEXT_MAX, &n, err) != SM_OK) {
            continue; /* gone, or not a process */
        }
        if (n > 0 && buf[n - 1] == '\n') {
            n--;
        }
        if (n == clen && memcmp(buf, comm, n) == 0) {
            best = p;
        }
    }
    closedir(d);
    if (best == 0) {
        sm_errmsg_printf(errmsg, "no process named \"%s\" in %s", comm,
                         proc_root);
        return SM_ENOTFOUND;
    }
    snprintf(path, sizeof path, "%s/%d/cgroup", proc_root, best);
    size_t n;
    int rv = act__read_file(path, buf, ACT_CG_FILE_TEXT_MAX, &n, errmsg);
    if (rv == SM_OK) {
        rv = act_cg_parse_proc_cgroup(cg->layout, buf, n, g, errmsg);
        if (rv != SM_OK) {
            sm_errmsg_wrapf(errmsg, "%s", path);
        }
    }
    if (rv != SM_OK) {
        return rv;
    }
    bool any = false;
    for (int c = 0; c < ACT_CG_CTRL__COUNT; c++) {
        if (cg->dir[c][0] == '\0') {
            g->has[c] = false;
            g->path[c][0] = '\0';
        }
        any = any || g->has[c];
    }
    if (!any) {
        sm_errmsg_printf(errmsg, "%s names none of the mounted controllers",
                         path);
        return SM_ENOTFOUND;
    }
    if (pid != NULL) {
        *pid = best;
    }
    return SM_OK;
}

/* ---- Knobs --------------------------------------------------------------- */

/* The files holding @knob in @layout, in write order; returns how many. */
static int knob_files(enum act_cg_layout layout,
                      enum act_knob knob,
                      enum act_cg_file files[2])
{
    bool v2 = layout == ACT_CG_V2;
    switch (knob) {
        case ACT_KNOB_CPU_QUOTA:
            if (v2) {
                files[0] = ACT_CG_FILE_CPU_MAX;
                return 1;
            }
            files[0] = ACT_CG_FILE_CFS_PERIOD;
            files[1] = ACT_CG_FILE_CFS_QUOTA;
            return 2;
        case ACT_KNOB_CPUSET:
            files[0] = ACT_CG_FILE_CPUSET_CPUS;
            return 1;
        case ACT_KNOB_MEMORY:
            files[0] = v2 ? ACT_CG_FILE_MEMORY_MAX : ACT_CG_FILE_MEMORY_LIMIT;
            return 1;
        case ACT_KNOB_IO_WEIGHT:
            files[0] = v2 ? ACT_CG_FILE_IO_WEIGHT : ACT_CG_FILE_BLKIO_WEIGHT;
            return 1;
        case ACT_KNOB__COUNT:
            break;
    }
    return 0;
}

/* Builds the path of @file for @knob's controller in @g. */
static int knob_path(const struct act_cg *cg,
                     const struct act_cg_group *g,
                     enum act_knob knob,
                     enum act_cg_file file,
                     char *path,
                     char *errmsg)
{
    enum act_cg_ctrl c = knob_ctrl[knob];
    if (cg->dir[c][0] == '\0' || !g->has[c]) {
        sm_errmsg_printf(errmsg, "%s: no %s cgroup for the service under %s",
                         file_names[file], ctrl_names[c], cg->root);
        return SM_ENOTFOUND;
    }
    if (has_dotdot(g->path[c], strlen(g->path[c]))) {
        sm_errmsg_printf(errmsg, "cgroup path \"%s\" holds \"..\"", g->path[c]);
        return SM_EINVAL;
    }
    return join(path, cg->dir[c], g->path[c], file_names[file], errmsg);
}

int act_cg_read(const struct act_cg *cg,
                const struct act_cg_group *g,
                enum act_knob knob,
                struct act_setting *s,
                char *errmsg)
{
    enum act_cg_file files[2];
    int nf = knob_files(cg->layout, knob, files);
    if (nf == 0) {
        sm_errmsg_printf(errmsg, "unknown knob %d", (int)knob);
        return SM_EINVAL;
    }
    struct act_setting t;
    memset(&t, 0, sizeof t);
    t.knob = knob;
    char path[ACT_CG_PATH_SIZE];
    char buf[ACT_CG_FILE_TEXT_MAX + 1];
    for (int i = 0; i < nf; i++) {
        size_t n;
        int rv = knob_path(cg, g, knob, files[i], path, errmsg);
        if (rv == SM_OK) {
            rv = act__read_file(path, buf, ACT_CG_FILE_TEXT_MAX, &n, errmsg);
        }
        if (rv == SM_OK) {
            rv = act_cg_parse(files[i], buf, n, &t, errmsg);
            if (rv != SM_OK) {
                sm_errmsg_wrapf(errmsg, "%s", path);
            }
        }
        if (rv != SM_OK) {
            return rv;
        }
    }
    *s = t;
    return SM_OK;
}

int act_cg_apply(const struct act_cg *cg,
                 const struct act_cg_group *g,
                 const struct act_setting *want,
                 struct act_setting *prev,
                 bool *changed,
                 char *errmsg)
{
    bool dummy;
    if (changed == NULL) {
        changed = &dummy;
    }
    *changed = false;
    enum act_cg_file files[2];
    int nf = knob_files(cg->layout, want->knob, files);
    if (nf == 0) {
        sm_errmsg_printf(errmsg, "unknown knob %d", (int)want->knob);
        return SM_EINVAL;
    }
    char new_text[2][64 + ACT_CG_CPUS_SIZE];
    char old_text[2][64 + ACT_CG_CPUS_SIZE];
    for (int i = 0; i < nf; i++) {
        int rv = act_cg_format(files[i], want, new_text[i], sizeof new_text[i],
                               errmsg);
        if (rv != SM_OK) {
            return rv;
        }
    }
    struct act_setting cur;
    int rv = act_cg_read(cg, g, want->knob, &cur, errmsg);
    if (rv != SM_OK) {
        return rv;
    }
    if (prev != NULL) {
        *prev = cur;
    }
    bool differs[2] = {false, false};
    bool any = false;
    for (int i = 0; i < nf; i++) {
        char err[SM_ERRMSG_SIZE];
        differs[i] = act_cg_format(files[i], &cur, old_text[i],
                                   sizeof old_text[i], err) != SM_OK ||
                     strcmp(old_text[i], new_text[i]) != 0;
        any = any || differs[i];
    }
    if (!any) {
        return SM_OK;
    }
    char path[ACT_CG_PATH_SIZE];
    for (int i = 0; i < nf; i++) {
        if (!differs[i]) {
            continue;
        }
        rv = knob_path(cg, g, want->knob, files[i], path, errmsg);
        if (rv == SM_OK) {
            rv = act__write_file(path, new_text[i], errmsg);
        }
        if (rv != SM_OK) {
            /* Undo the earlier files of this knob (v1 cpu's period). */
            for (int j = 0; j < i; j++) {
                char undo[ACT_CG_PATH_SIZE];
                char err[SM_ERRMSG_SIZE];
                if (!differs[j]) {
                    continue;
                }
                if (knob_path(cg, g, want->knob, files[j], undo, err) !=
                        SM_OK ||
                    act__write_file(undo, old_text[j], err) != SM_OK) {
                    *changed = true;
                    sm_errmsg_wrapf(errmsg, "(%s left changed)", undo);
                }
            }
            return rv;
        }
        *changed = true;
    }
    return SM_OK;
}
