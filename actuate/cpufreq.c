/* The agent's CPU frequency actuator: cpufreq scaling_max_freq per CPU. */

/* Design. A change is a list of (CPU, kHz) writes computed from a state read
 * beforehand, which is also what the caller keeps for a rollback. Writes
 * go CPU by CPU; if one fails, the CPUs already written get their value
 * read before back, so a failed call leaves the CPUs as they were (or says
 * it could not). CPUs of one cpufreq policy share the file: writing the
 * same value through each of them is harmless.
 *
 * Paths are ROOT/cpuN/cpufreq/FILE with N a number below
 * ACT_CPUFREQ_MAX_CPUS and FILE fixed; files are opened without O_CREAT. */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "actuate/actuate.h"
#include "actuate/sysfs_internal.h"
#include "base/err.h"

#define DEFAULT_ROOT  "/sys/devices/system/cpu"
#define FILE_TEXT_MAX 64 /* a frequency file holds one number */

enum freq_file { FILE_MIN, FILE_MAX, FILE_SCALING_MAX, FILE__COUNT };

static const char *const file_names[FILE__COUNT] = {
    [FILE_MIN] = "cpuinfo_min_freq",
    [FILE_MAX] = "cpuinfo_max_freq",
    [FILE_SCALING_MAX] = "scaling_max_freq",
};

/* ---- Parsers --------------------------------------------------------------
 */

int act_cpufreq_parse_khz(const char *text,
                          size_t len,
                          uint32_t *khz,
                          char *errmsg)
{
    size_t n = len > 0 && text[len - 1] == '\n' ? len - 1 : len;
    uint64_t v;
    if (!act__parse_u64(text, n, &v) || v == 0 || v > UINT32_MAX) {
        sm_errmsg_printf(errmsg, "bad frequency \"%.*s\" (want kHz, 1..%u)",
                         (int)(n < 32 ? n : 32), text, UINT32_MAX);
        return SM_EINVAL;
    }
    *khz = (uint32_t)v;
    return SM_OK;
}

int act_cpufreq_parse_cpus(const char *list,
                           uint32_t *cpus,
                           size_t *n,
                           char *errmsg)
{
    uint64_t set[ACT_CPUFREQ_MAX_CPUS / 64] = {0};
    size_t len = strnlen(list, ACT_CG_CPUS_SIZE);
    if (len == 0 || len == ACT_CG_CPUS_SIZE) {
        sm_errmsg_printf(errmsg, "cpu list %s", len ? "too long" : "is empty");
        return SM_EINVAL;
    }
    int rv = act__cpulist_parse(list, len, set, errmsg);
    if (rv != SM_OK) {
        sm_errmsg_wrapf(errmsg, "cpu list \"%.64s\"", list);
        return rv;
    }
    size_t count = 0;
    for (uint32_t c = 0; c < ACT_CPUFREQ_MAX_CPUS; c++) {
        if ((set[c / 64] >> (c % 64)) & 1u) {
            cpus[count++] = c;
        }
    }
    *n = count;
    return SM_OK;
}

/* ---- Files ----------------------------------------------------------------
 */

static int file_path(char *out,
                     const char *root,
                     uint32_t cpu,
                     enum freq_file f,
                     char *errmsg)
{
    int w = snprintf(out, ACT_CG_PATH_SIZE, "%s/cpu%u/cpufreq/%s", root,
                     (unsigned)cpu, file_names[f]);
    if (w < 0 || w >= ACT_CG_PATH_SIZE) {
        sm_errmsg_printf(errmsg, "cpufreq path under %.64s too long", root);
        return SM_EINVAL;
    }
    return SM_OK;
}

/* Reads and parses one frequency file of @cpu. */
static int read_khz(const char *root,
                    uint32_t cpu,
                    enum freq_file f,
                    uint32_t *khz,
                    char *errmsg)
{
    char path[ACT_CG_PATH_SIZE];
    int rv = file_path(path, root, cpu, f, errmsg);
    if (rv != SM_OK) {
        return rv;
    }
    char buf[FILE_TEXT_MAX + 1];
    size_t n;
    rv = act__read_file(path, buf, FILE_TEXT_MAX, &n, errmsg);
    if (rv != SM_OK) {
        return rv;
    }
    rv = act_cpufreq_parse_khz(buf, n, khz, errmsg);
    if (rv != SM_OK) {
        sm_errmsg_wrapf(errmsg, "%s", path);
    }
    return rv;
}

static int write_khz(const char *root, uint32_t cpu, uint32_t khz, char *errmsg)
{
    char path[ACT_CG_PATH_SIZE];
    int rv = file_path(path, root, cpu, FILE_SCALING_MAX, errmsg);
    if (rv != SM_OK) {
        return rv;
    }
    char text[16];
    snprintf(text, sizeof text, "%u\n", (unsigned)khz);
    return act__write_file(path, text, errmsg);
}

/* Reads the three limits of @cpu into @out. */
static int read_cpu(const char *root,
                    uint32_t cpu,
                    struct act_cpufreq_cpu *out,
                    char *errmsg)
{
    struct act_cpufreq_cpu c = {.cpu = cpu};
    int rv = read_khz(root, cpu, FILE_MIN, &c.min_khz, errmsg);
    if (rv == SM_OK) {
        rv = read_khz(root, cpu, FILE_MAX, &c.max_khz, errmsg);
    }
    if (rv == SM_OK) {
        rv = read_khz(root, cpu, FILE_SCALING_MAX, &c.cur_khz, errmsg);
    }
    if (rv == SM_OK && c.min_khz > c.max_khz) {
        sm_errmsg_printf(errmsg, "cpu%u: cpuinfo_min_freq %u above max %u",
                         (unsigned)cpu, (unsigned)c.min_khz,
                         (unsigned)c.max_khz);
        rv = SM_EINVAL;
    }
    if (rv == SM_OK) {
        *out = c;
    }
    return rv;
}

/* ---- Public functions -----------------------------------------------------
 */

int act_cpufreq_available(const char *root, const char *cpus, char *errmsg)
{
    if (root == NULL) {
        root = DEFAULT_ROOT;
    }
    uint32_t list[ACT_CPUFREQ_MAX_CPUS];
    size_t n;
    int rv = act_cpufreq_parse_cpus(cpus, list, &n, errmsg);
    for (size_t i = 0; rv == SM_OK && i < n; i++) {
        struct act_cpufreq_cpu c;
        char path[ACT_CG_PATH_SIZE];
        struct stat st;
        rv = read_cpu(root, list[i], &c, errmsg);
        if (rv == SM_OK) {
            rv = file_path(path, root, list[i], FILE_SCALING_MAX, errmsg);
        }
        if (rv == SM_OK && (stat(path, &st) != 0 ||
                            (st.st_mode & (S_IWUSR | S_IWGRP | S_IWOTH)) == 0 ||
                            access(path, W_OK) != 0)) {
            sm_errmsg_printf(errmsg, "%s is not writable", path);
            rv = SM_EPERM;
        }
    }
    if (rv != SM_OK) {
        sm_errmsg_wrapf(errmsg, "cpufreq unavailable");
    }
    return rv;
}

int act_cpufreq_read(const char *root,
                     const char *cpus,
                     struct act_cpufreq *out,
                     char *errmsg)
{
    if (root == NULL) {
        root = DEFAULT_ROOT;
    }
    uint32_t list[ACT_CPUFREQ_MAX_CPUS];
    size_t n;
    int rv = act_cpufreq_parse_cpus(cpus, list, &n, errmsg);
    if (rv != SM_OK) {
        return rv;
    }
    out->n = 0;
    for (size_t i = 0; i < n; i++) {
        rv = read_cpu(root, list[i], &out->cpu[i], errmsg);
        if (rv != SM_OK) {
            return rv;
        }
        out->n = i + 1;
    }
    return SM_OK;
}

/* Writes @want[i] to each CPU of @cur whose value differs, undoing on
 * failure (see the design note). */
static int write_all(const char *root,
                     const struct act_cpufreq *cur,
                     const uint32_t *want,
                     bool *changed,
                     char *errmsg)
{
    for (size_t i = 0; i < cur->n; i++) {
        if (want[i] == cur->cpu[i].cur_khz) {
            continue;
        }
        int rv = write_khz(root, cur->cpu[i].cpu, want[i], errmsg);
        if (rv == SM_OK) {
            *changed = true;
            continue;
        }
        bool undone = true;
        for (size_t j = 0; j < i; j++) {
            char err[SM_ERRMSG_SIZE];
            if (want[j] != cur->cpu[j].cur_khz &&
                write_khz(root, cur->cpu[j].cpu, cur->cpu[j].cur_khz, err) !=
                    SM_OK) {
                undone = false;
            }
        }
        *changed = !undone;
        if (!undone) {
            sm_errmsg_wrapf(errmsg, "(earlier CPUs left changed)");
        }
        return rv;
    }
    return SM_OK;
}

int act_cpufreq_apply(const char *root,
                      const char *cpus,
                      uint32_t target_khz,
                      struct act_cpufreq *prev,
                      bool *changed,
                      char *errmsg)
{
    bool dummy;
    if (changed == NULL) {
        changed = &dummy;
    }
    *changed = false;
    if (root == NULL) {
        root = DEFAULT_ROOT;
    }
    struct act_cpufreq scratch;
    struct act_cpufreq *cur = prev != NULL ? prev : &scratch;
    int rv = act_cpufreq_read(root, cpus, cur, errmsg);
    if (rv != SM_OK) {
        return rv;
    }
    uint32_t want[ACT_CPUFREQ_MAX_CPUS];
    for (size_t i = 0; i < cur->n; i++) {
        uint32_t k = target_khz;
        k = k < cur->cpu[i].min_khz ? cur->cpu[i].min_khz : k;
        want[i] = k > cur->cpu[i].max_khz ? cur->cpu[i].max_khz : k;
    }
    return write_all(root, cur, want, changed, errmsg);
}

int act_cpufreq_restore(const char *root,
                        const struct act_cpufreq *prev,
                        bool *changed,
                        char *errmsg)
{
    bool dummy;
    if (changed == NULL) {
        changed = &dummy;
    }
    *changed = false;
    if (root == NULL) {
        root = DEFAULT_ROOT;
    }
    if (prev->n > ACT_CPUFREQ_MAX_CPUS) {
        sm_errmsg_printf(errmsg, "%zu CPUs to restore, more than %d", prev->n,
                         ACT_CPUFREQ_MAX_CPUS);
        return SM_EINVAL;
    }
    struct act_cpufreq cur;
    uint32_t want[ACT_CPUFREQ_MAX_CPUS];
    cur.n = prev->n;
    for (size_t i = 0; i < prev->n; i++) {
        const struct act_cpufreq_cpu *p = &prev->cpu[i];
        if (p->cpu >= ACT_CPUFREQ_MAX_CPUS) {
            sm_errmsg_printf(errmsg, "cpu%u to restore is past the limit",
                             (unsigned)p->cpu);
            return SM_EINVAL;
        }
        int rv = read_cpu(root, p->cpu, &cur.cpu[i], errmsg);
        if (rv != SM_OK) {
            return rv;
        }
        if (p->cur_khz < cur.cpu[i].min_khz ||
            p->cur_khz > cur.cpu[i].max_khz) {
            sm_errmsg_printf(
                errmsg, "cpu%u: %u kHz to restore is outside %u..%u",
                (unsigned)p->cpu, (unsigned)p->cur_khz,
                (unsigned)cur.cpu[i].min_khz, (unsigned)cur.cpu[i].max_khz);
            return SM_EINVAL;
        }
        want[i] = p->cur_khz;
    }
    return write_all(root, &cur, want, changed, errmsg);
}
