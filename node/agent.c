/* The actuation agent of one host: cgroup knobs, tc HTB classes, resctrl
 * LLC ways, cpufreq limits and the operator's scale-out command. */
#include "node/agent.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "actuate/actuate.h"
#include "base/alloc.h"

#define CMD_OUTPUT_MAX   4096
#define TC_READ_TIMEOUT  2.0        /* s: read() blocks the loop this long */
#define TASKS_FILE_MAX   (4u << 20) /* bytes of a cgroup's thread list */
#define ONLINE_FILE_MAX  4096       /* bytes of ROOT/online */
#define DEFAULT_CG_ROOT  "/sys/fs/cgroup"
#define DEFAULT_RDT_ROOT "/sys/fs/resctrl"
#define DEFAULT_RDT_TMPL "sagemesh-{service}"
#define DEFAULT_CPUFREQ  "/sys/devices/system/cpu"

/* One --tc-class entry: a service and its HTB class. */
struct tc_entry
{
    char service[NODE_ACTION_SERVICE_MAX];
    struct act_tc tc;
};

struct node_real_agent
{
    struct node_agent ops;
    struct act_cg *cg; /* NULL: no cgroups on this host */
    char cg_reason[SM_ERRMSG_SIZE];
    char *cgroup_root;
    char *cgroup_path;
    char *proc_root;
    char *scale_out_cmd;
    double command_timeout_s;
    struct tc_entry *tcs; /* one per --tc-class */
    size_t n_tcs;
    char *resctrl_root;
    char *resctrl_group;
    char *cpufreq_root;
    uint32_t llc_ways_at_open; /* 0: resctrl was not usable at open */
};

/* The cgroup of @service, by template or by process name. */
static int find_group(const struct node_real_agent *ag,
                      const char *service,
                      struct act_cg_group *g,
                      char *errmsg)
{
    if (ag->cg == NULL) {
        sm_errmsg_printf(errmsg, "%s", ag->cg_reason);
        return SM_ENOTFOUND;
    }
    if (ag->cgroup_path != NULL) {
        return act_cg_group_from_template(ag->cg, ag->cgroup_path, service, g,
                                          errmsg);
    }
    int pid;
    int rv = act_cg_group_from_process(ag->cg, ag->proc_root, service, g, &pid,
                                       errmsg);
    if (rv == SM_ENOTFOUND) {
        sm_errmsg_wrapf(errmsg, "no process named %s (set --cgroup-path)",
                        service);
    }
    return rv;
}

static enum act_knob knob_of(enum act_kind kind)
{
    switch (kind) {
        case ACT_KIND_MEMORY_LIMIT:
            return ACT_KNOB_MEMORY;
        case ACT_KIND_IO_WEIGHT:
            return ACT_KNOB_IO_WEIGHT;
        default:
            return ACT_KNOB_CPU_QUOTA;
    }
}

/* Fills the controller's view of @g's settings; knobs that cannot be read
 * stay unknown. */
static void read_settings(const struct node_real_agent *ag,
                          const struct act_cg_group *g,
                          struct act_settings *cur)
{
    struct act_setting s;
    char err[SM_ERRMSG_SIZE];
    if (act_cg_read(ag->cg, g, ACT_KNOB_CPU_QUOTA, &s, err) == SM_OK &&
        !s.unlimited && s.period > 0) {
        cur->cpu_cores = (double)s.value / (double)s.period;
    }
    if (act_cg_read(ag->cg, g, ACT_KNOB_MEMORY, &s, err) == SM_OK &&
        !s.unlimited) {
        cur->memory_bytes = s.value;
    }
    if (act_cg_read(ag->cg, g, ACT_KNOB_IO_WEIGHT, &s, err) == SM_OK) {
        cur->io_weight = (uint32_t)s.value;
    }
}

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t deadline_in(double seconds)
{
    return mono_ns() + (uint64_t)(seconds * 1e9);
}

/* Reads all of @path (at most @max bytes) into a new NUL-terminated
 * buffer in @out, owned by the caller (sm_free). */
static int slurp(const char *path, size_t max, char **out, char *errmsg)
{
    FILE *fp = fopen(path, "re");
    if (fp == NULL) {
        int e = errno;
        sm_errmsg_printf(errmsg, "cannot open %s: %s", path, strerror(e));
        return sm_err_from_errno(e);
    }
    char *buf = sm_malloc(max + 1);
    if (buf == NULL) {
        fclose(fp);
        return SM_ENOMEM;
    }
    size_t n = fread(buf, 1, max + 1, fp);
    int failed = ferror(fp);
    fclose(fp);
    if (failed || n > max) {
        sm_errmsg_printf(errmsg, "cannot read %s: %s", path,
                         failed ? "read error" : "too long");
        sm_free(buf);
        return failed ? SM_EIO : SM_ETOOBIG;
    }
    buf[n] = '\0';
    *out = buf;
    return SM_OK;
}

/* ---- tc ------------------------------------------------------------------ */

static const struct tc_entry *tc_of(const struct node_real_agent *ag,
                                    const char *service,
                                    char *errmsg)
{
    for (size_t i = 0; i < ag->n_tcs; i++) {
        if (strcmp(ag->tcs[i].service, service) == 0) {
            return &ag->tcs[i];
        }
    }
    sm_errmsg_printf(errmsg,
                     "tc is not configured for service %s: set --tc-dev and "
                     "--tc-class",
                     service);
    return NULL;
}

/* The index of @service's class in the class list (-1 on failure). */
static int net_read(const struct node_real_agent *ag,
                    const char *service,
                    int *index,
                    char *errmsg)
{
    *index = -1;
    const struct tc_entry *e = tc_of(ag, service, errmsg);
    if (e == NULL) {
        return SM_ENOTFOUND;
    }
    struct act_tc_htb cls;
    double wait = fmin(ag->command_timeout_s, TC_READ_TIMEOUT);
    int rv = act_tc_read(&e->tc, deadline_in(wait), &cls, index, errmsg);
    if (rv == SM_OK && *index < 0) {
        sm_errmsg_printf(errmsg,
                         "the rate of %s's HTB class is below the first of "
                         "--tc-classes",
                         service);
        rv = SM_EINVAL;
    }
    return rv;
}

static int net_set(const struct node_real_agent *ag,
                   const char *service,
                   double index,
                   char *errmsg)
{
    const struct tc_entry *e = tc_of(ag, service, errmsg);
    if (e == NULL) {
        return SM_ENOTFOUND;
    }
    if (!(index >= 0 && index < ACT_TC_MAX_CLASSES) || index != floor(index)) {
        sm_errmsg_printf(errmsg, "bandwidth class %g is not a class index",
                         index);
        return SM_EINVAL;
    }
    return act_tc_apply_class(&e->tc, (int)index,
                              deadline_in(ag->command_timeout_s), NULL, NULL,
                              errmsg);
}

/* ---- resctrl ------------------------------------------------------------- */

/* Probes resctrl and names @service's group. */
static int llc_open(const struct node_real_agent *ag,
                    const char *service,
                    struct act_rdt *rdt,
                    char group[ACT_RDT_NAME_SIZE],
                    char *errmsg)
{
    int rv = act_rdt_available(ag->resctrl_root, rdt, errmsg);
    if (rv != SM_OK) {
        /* The probe's reasons (not mounted, no L3 allocation, CDP on)
         * all mean "no LLC actions on this host". */
        if (strstr(errmsg, "not mounted") == NULL) {
            sm_errmsg_wrapf(errmsg, "resctrl is not usable at %s",
                            ag->resctrl_root);
        }
        return SM_ENOTFOUND;
    }
    return act_rdt_group_name(ag->resctrl_group, service, group, errmsg);
}

/* The ways @service's group has, or the default group's when it has no
 * group yet (its tasks share the default group's ways then). */
static int llc_read(const struct node_real_agent *ag,
                    const char *service,
                    uint32_t *ways,
                    char *errmsg)
{
    struct act_rdt rdt;
    char group[ACT_RDT_NAME_SIZE];
    int rv = llc_open(ag, service, &rdt, group, errmsg);
    if (rv != SM_OK) {
        return rv;
    }
    struct act_rdt_schemata s;
    rv = act_rdt_read(&rdt, group, &s, errmsg);
    if (rv == SM_ENOTFOUND) {
        rv = act_rdt_read(&rdt, "", &s, errmsg);
    }
    if (rv == SM_OK) {
        *ways = act_rdt_ways(&s);
    }
    return rv;
}

/* Writes "@a/@b/@c" (@b may be "") into @out; false when too long. */
static bool join3(char out[ACT_CG_PATH_SIZE],
                  const char *a,
                  const char *b,
                  const char *c)
{
    int w =
        snprintf(out, ACT_CG_PATH_SIZE, "%s%s%s/%s", a, b[0] ? "/" : "", b, c);
    return w > 0 && w < ACT_CG_PATH_SIZE;
}

/* The hierarchy directories holding @g's cgroup, for the thread lists. */
static size_t group_dirs(const struct node_real_agent *ag,
                         const struct act_cg_group *g,
                         char dirs[][ACT_CG_PATH_SIZE])
{
    static const char *const v1_cpu[] = {"cpu", "cpu,cpuacct", "cpuacct,cpu"};
    size_t n = 0;
    if (act_cg_layout(ag->cg) == ACT_CG_V2) {
        n += join3(dirs[n], ag->cgroup_root, "", g->path[ACT_CG_CTRL_CPU]);
        return n;
    }
    for (size_t i = 0; i < 3 && g->has[ACT_CG_CTRL_CPU]; i++) {
        n += join3(dirs[n], ag->cgroup_root, v1_cpu[i],
                   g->path[ACT_CG_CTRL_CPU]);
    }
    if (g->has[ACT_CG_CTRL_CPUSET]) {
        n += join3(dirs[n], ag->cgroup_root, "cpuset",
                   g->path[ACT_CG_CTRL_CPUSET]);
    }
    return n;
}

/* Reads the thread ids in @g's cgroup into a new array @tids (sm_free),
 * @n of them. resctrl moves one thread per write, so the per-thread lists
 * ("tasks" in v1, "cgroup.threads" in v2) are read first; cgroup.procs
 * (thread-group leaders only) is the fallback. */
static int group_tids(const struct node_real_agent *ag,
                      const struct act_cg_group *g,
                      int **tids,
                      size_t *n,
                      char *errmsg)
{
    static const char *const files[] = {"tasks", "cgroup.threads",
                                        "cgroup.procs"};
    char dirs[4][ACT_CG_PATH_SIZE];
    size_t n_dirs = group_dirs(ag, g, dirs);
    char *text = NULL;
    char path[ACT_CG_PATH_SIZE + 32];
    int rv = SM_ENOTFOUND;
    for (size_t d = 0; d < n_dirs && text == NULL; d++) {
        for (size_t f = 0; f < 3 && text == NULL; f++) {
            if (snprintf(path, sizeof path, "%s/%s", dirs[d], files[f]) >=
                (int)sizeof path) {
                continue; /* cannot be a real cgroup file */
            }
            rv = slurp(path, TASKS_FILE_MAX, &text, errmsg);
            if (rv != SM_OK && rv != SM_ENOTFOUND) {
                return rv;
            }
        }
    }
    if (text == NULL) {
        sm_errmsg_printf(errmsg,
                         "no thread list for the service's cgroup "
                         "(tasks, cgroup.threads or cgroup.procs)");
        return SM_ENOTFOUND;
    }
    /* At most one id per two bytes ("1\n"). */
    size_t cap = strlen(text) / 2 + 1;
    int *ids = sm_reallocarray(NULL, cap, sizeof *ids);
    size_t k = 0;
    rv = ids == NULL ? SM_ENOMEM : SM_OK;
    for (char *p = text; rv == SM_OK && *p != '\0' && k < cap;) {
        char *end;
        errno = 0;
        long id = strtol(p, &end, 10);
        if (end == p || (*end != '\n' && *end != '\0') || errno != 0 ||
            id <= 0 || id > INT_MAX) {
            sm_errmsg_printf(errmsg, "%s: not a list of thread ids", path);
            rv = SM_EINVAL;
            break;
        }
        ids[k++] = (int)id;
        p = *end == '\n' ? end + 1 : end;
    }
    sm_free(text);
    if (rv != SM_OK) {
        sm_free(ids);
        return rv;
    }
    *tids = ids;
    *n = k;
    return SM_OK;
}

/* Moves @g's threads into @group, ACT_RDT_MAX_PIDS per call. */
static int llc_move(const struct node_real_agent *ag,
                    const struct act_rdt *rdt,
                    const char *group,
                    const struct act_cg_group *g,
                    char *errmsg)
{
    int *tids = NULL;
    size_t n = 0;
    int rv = group_tids(ag, g, &tids, &n, errmsg);
    for (size_t at = 0; rv == SM_OK && at < n; at += ACT_RDT_MAX_PIDS) {
        size_t chunk = n - at < ACT_RDT_MAX_PIDS ? n - at : ACT_RDT_MAX_PIDS;
        rv = act_rdt_move_tasks(rdt, group, tids + at, chunk, NULL, errmsg);
    }
    sm_free(tids);
    return rv;
}

/* Gives @service's group @ways ways: makes the group if it is missing,
 * moves the service's threads into it (again on every call: threads
 * started since then join it too) and writes its schemata. */
static int llc_set(const struct node_real_agent *ag,
                   const char *service,
                   double ways,
                   char *errmsg)
{
    if (!(ways >= 1 && ways <= 64) || ways != floor(ways)) {
        sm_errmsg_printf(errmsg, "%g is not a number of cache ways", ways);
        return SM_EINVAL;
    }
    struct act_rdt rdt;
    char group[ACT_RDT_NAME_SIZE];
    struct act_cg_group g;
    int rv = llc_open(ag, service, &rdt, group, errmsg);
    if (rv == SM_OK) {
        rv = find_group(ag, service, &g, errmsg);
    }
    if (rv == SM_OK && g.path[ACT_CG_CTRL_CPU][0] == '\0' &&
        g.path[ACT_CG_CTRL_CPUSET][0] == '\0') {
        /* Moving the root cgroup's threads would move the whole host. */
        sm_errmsg_printf(errmsg,
                         "%s runs in the root cgroup: its threads are not "
                         "moved to a resctrl group",
                         service);
        rv = SM_EINVAL;
    }
    if (rv == SM_OK) {
        rv = act_rdt_group_create(&rdt, group, NULL, errmsg);
    }
    if (rv == SM_OK) {
        rv = llc_move(ag, &rdt, group, &g, errmsg);
    }
    if (rv == SM_OK) {
        rv = act_rdt_apply_ways(&rdt, group, (uint32_t)ways, NULL, NULL, NULL,
                                errmsg);
    }
    return rv;
}

/* ---- cpufreq ------------------------------------------------------------- */

/* The CPUs @g may run on: its cpuset, or when it has none (no cpuset
 * cgroup, or an empty one that inherits) the CPUs the root's "online"
 * file lists, or 0..nproc-1 without that file. */
static int service_cpus(const struct node_real_agent *ag,
                        const struct act_cg_group *g,
                        char cpus[ACT_CG_CPUS_SIZE],
                        char *errmsg)
{
    struct act_setting s;
    int rv = act_cg_read(ag->cg, g, ACT_KNOB_CPUSET, &s, errmsg);
    if (rv == SM_OK && s.cpus[0] != '\0') {
        snprintf(cpus, ACT_CG_CPUS_SIZE, "%s", s.cpus);
        return SM_OK;
    }
    if (rv != SM_OK && rv != SM_ENOTFOUND) {
        return rv;
    }
    char path[ACT_CG_PATH_SIZE + 16];
    snprintf(path, sizeof path, "%s/online", ag->cpufreq_root);
    char *text = NULL;
    if (slurp(path, ONLINE_FILE_MAX, &text, errmsg) == SM_OK) {
        text[strcspn(text, "\n")] = '\0';
        int w = snprintf(cpus, ACT_CG_CPUS_SIZE, "%s", text);
        sm_free(text);
        if (w > 0 && w < ACT_CG_CPUS_SIZE) {
            return SM_OK;
        }
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1 || n > ACT_CPUFREQ_MAX_CPUS) {
        sm_errmsg_printf(errmsg, "cannot tell which CPUs are online");
        return SM_ENOTFOUND;
    }
    snprintf(cpus, ACT_CG_CPUS_SIZE, "0-%ld", n - 1);
    return SM_OK;
}

/* Fills @cur's frequency fields from the CPUs in @cpus: the lowest
 * scaling_max_freq and the lowest cpuinfo_max_freq (see act_settings). */
static int freq_read(const struct node_real_agent *ag,
                     const char *cpus,
                     struct act_settings *cur,
                     char *errmsg)
{
    struct act_cpufreq *f = sm_malloc(sizeof *f); /* 16 KB */
    if (f == NULL) {
        return SM_ENOMEM;
    }
    int rv = act_cpufreq_read(ag->cpufreq_root, cpus, f, errmsg);
    if (rv == SM_OK) {
        uint32_t now = UINT32_MAX, max = UINT32_MAX;
        for (size_t i = 0; i < f->n; i++) {
            now = f->cpu[i].cur_khz < now ? f->cpu[i].cur_khz : now;
            max = f->cpu[i].max_khz < max ? f->cpu[i].max_khz : max;
        }
        cur->cpu_freq_khz = f->n > 0 ? now : 0;
        cur->cpu_freq_max_khz = f->n > 0 ? max : 0;
    }
    sm_free(f);
    return rv;
}

/* The writability probe, with the message the operator needs. */
static int freq_writable(const struct node_real_agent *ag,
                         const char *cpus,
                         char *errmsg)
{
    if (act_cpufreq_available(ag->cpufreq_root, cpus, errmsg) != SM_OK) {
        sm_errmsg_wrapf(errmsg, "cpufreq is not writable");
        return SM_ENOTFOUND;
    }
    return SM_OK;
}

/* Sets scaling_max_freq of @cpus (NULL or "": @service's CPUs now) to
 * @khz, clamped per CPU to its hardware range. */
static int freq_set(const struct node_real_agent *ag,
                    const char *service,
                    const char *cpus,
                    double khz,
                    char *errmsg)
{
    if (!(khz >= 1 && khz <= UINT32_MAX) || khz != floor(khz)) {
        sm_errmsg_printf(errmsg, "%g is not a frequency in kHz", khz);
        return SM_EINVAL;
    }
    char now[ACT_CG_CPUS_SIZE];
    if (cpus == NULL || cpus[0] == '\0') {
        struct act_cg_group g;
        int rv = find_group(ag, service, &g, errmsg);
        if (rv == SM_OK) {
            rv = service_cpus(ag, &g, now, errmsg);
        }
        if (rv != SM_OK) {
            return rv;
        }
        cpus = now;
    }
    int rv = freq_writable(ag, cpus, errmsg);
    if (rv == SM_OK) {
        rv = act_cpufreq_apply(ag->cpufreq_root, cpus, (uint32_t)khz, NULL,
                               NULL, errmsg);
    }
    return rv;
}

/* ---- The node_agent interface -------------------------------------------- */

/* Marks a value-restored kind: rollback uses plan.from, and @prev only
 * records it for the operator. */
static void prev_is_from(struct act_setting *prev,
                         bool *has_prev,
                         double value,
                         const char *cpus)
{
    memset(prev, 0, sizeof *prev);
    if (cpus != NULL) {
        act_setting_cpuset(prev, cpus);
    }
    prev->value = (uint64_t)value;
    *has_prev = true;
}

/* The reading for a kind the agent restores from plan.from. */
static int read_kind(const struct node_real_agent *ag,
                     const char *service,
                     const struct act_cg_group *g,
                     enum act_kind kind,
                     struct act_settings *cur,
                     struct act_setting *prev,
                     bool *has_prev,
                     char *errmsg)
{
    int rv;
    char cpus[ACT_CG_CPUS_SIZE];
    switch (kind) {
        case ACT_KIND_NET_CLASS:
            rv = net_read(ag, service, &cur->net_class, errmsg);
            if (rv == SM_OK) {
                prev_is_from(prev, has_prev, cur->net_class, NULL);
            }
            return rv;
        case ACT_KIND_LLC_WAYS:
            rv = llc_read(ag, service, &cur->llc_ways, errmsg);
            if (rv == SM_OK) {
                prev_is_from(prev, has_prev, cur->llc_ways, NULL);
            }
            return rv;
        case ACT_KIND_CPU_FREQ:
            rv = service_cpus(ag, g, cpus, errmsg);
            if (rv == SM_OK) {
                rv = freq_writable(ag, cpus, errmsg);
            }
            if (rv == SM_OK) {
                rv = freq_read(ag, cpus, cur, errmsg);
            }
            if (rv == SM_OK) {
                prev_is_from(prev, has_prev, cur->cpu_freq_khz, cpus);
            }
            return rv;
        default:
            sm_errmsg_printf(errmsg, "this agent cannot change %s",
                             act_kind_name(kind));
            return SM_ENOTYET;
    }
}

/* Fills what the optional actuators know of @service; failures leave the
 * fields unknown (the plan rules then never pick those knobs). */
static void read_optional(const struct node_real_agent *ag,
                          const char *service,
                          const struct act_cg_group *g,
                          struct act_settings *cur)
{
    char err[SM_ERRMSG_SIZE];
    uint32_t ways = 0;
    if (llc_read(ag, service, &ways, err) == SM_OK) {
        cur->llc_ways = ways;
    }
    /* The frequency is the CPU knob only without a quota: skip reading
     * every CPU's files otherwise. */
    char cpus[ACT_CG_CPUS_SIZE];
    if (!(cur->cpu_cores > 0) && service_cpus(ag, g, cpus, err) == SM_OK &&
        freq_read(ag, cpus, cur, err) != SM_OK) {
        cur->cpu_freq_khz = 0;
        cur->cpu_freq_max_khz = 0;
    }
}

static int agent_read(void *arg,
                      const char *service,
                      enum act_kind kind,
                      struct act_settings *cur,
                      struct act_setting *prev,
                      bool *has_prev,
                      char *errmsg)
{
    const struct node_real_agent *ag = arg;
    *has_prev = false;
    struct act_cg_group g;
    int rv = find_group(ag, service, &g, errmsg);
    if (rv == SM_OK) {
        read_settings(ag, &g, cur);
    }
    switch (kind) {
        case ACT_KIND_NONE:
        case ACT_KIND_SCALE_OUT: {
            char err[SM_ERRMSG_SIZE];
            bool net = net_read(ag, service, &cur->net_class, err) == SM_OK;
            if (rv == SM_OK) {
                read_optional(ag, service, &g, cur);
            }
            /* A service without a cgroup may still have a tc class. */
            return net ? SM_OK : rv;
        }
        case ACT_KIND_NET_CLASS:
            return read_kind(ag, service, &g, kind, cur, prev, has_prev,
                             errmsg);
        default:
            break;
    }
    if (rv != SM_OK) {
        return rv;
    }
    switch (kind) {
        case ACT_KIND_CPU_QUOTA:
        case ACT_KIND_MEMORY_LIMIT:
        case ACT_KIND_IO_WEIGHT:
            rv = act_cg_read(ag->cg, &g, knob_of(kind), prev, errmsg);
            *has_prev = rv == SM_OK;
            return rv;
        default:
            return read_kind(ag, service, &g, kind, cur, prev, has_prev,
                             errmsg);
    }
}

/* The cgroup value that gives @a's target. */
static int target_setting(const struct node_action *a,
                          struct act_setting *want,
                          char *errmsg)
{
    double to = a->plan.to;
    switch (a->plan.kind) {
        case ACT_KIND_CPU_QUOTA: {
            uint64_t period =
                a->has_prev && a->prev.period > 0 ? a->prev.period : 100000;
            double quota = round(to * (double)period);
            if (!(quota >= ACT_CG_PERIOD_MIN_US) || quota > 1e15) {
                break;
            }
            act_setting_cpu(want, false, (uint64_t)quota, period);
            return SM_OK;
        }
        case ACT_KIND_MEMORY_LIMIT:
            if (!(to >= 1) || to > 1e19) {
                break;
            }
            act_setting_memory(want, false, (uint64_t)to);
            return SM_OK;
        case ACT_KIND_IO_WEIGHT:
            if (!(to >= ACT_CG_IO_WEIGHT_MIN) || to > ACT_CG_IO_WEIGHT_MAX) {
                break;
            }
            act_setting_io_weight(want, (uint64_t)llround(to));
            return SM_OK;
        default:
            sm_errmsg_printf(errmsg, "this agent cannot change %s",
                             act_kind_name(a->plan.kind));
            return SM_ENOTYET;
    }
    sm_errmsg_printf(errmsg, "target %g out of range for %s", to,
                     act_kind_name(a->plan.kind));
    return SM_EINVAL;
}

static int run_scale_out(const struct node_real_agent *ag,
                         const struct node_action *a,
                         char *errmsg)
{
    if (ag->scale_out_cmd == NULL) {
        sm_errmsg_printf(errmsg, "no --scale-out-command is configured");
        return SM_ENOTFOUND;
    }
    char amount[32];
    snprintf(amount, sizeof amount, "%.0f", fmax(1, a->plan.to - a->plan.from));
    struct act_cmd_values v = {
        .service = a->service,
        .instance = "",
        .resource = a->resource,
        .amount = amount,
    };
    char **argv;
    int rv = act_cmd_expand(ag->scale_out_cmd, strlen(ag->scale_out_cmd), &v,
                            &argv, NULL, errmsg);
    if (rv != SM_OK) {
        return rv;
    }
    struct act_cmd_result res;
    rv = act_cmd_run(argv, deadline_in(ag->command_timeout_s), CMD_OUTPUT_MAX,
                     &res, errmsg);
    act_cmd_argv_free(argv);
    if (rv != SM_OK) {
        return rv;
    }
    if (res.timed_out) {
        sm_errmsg_printf(errmsg, "the scale-out command timed out after %gs",
                         ag->command_timeout_s);
        rv = SM_ETIMEDOUT;
    } else if (!res.exited || res.exit_code != 0) {
        sm_errmsg_printf(errmsg, "the scale-out command failed (%s %d): %.160s",
                         res.exited ? "exit" : "signal",
                         res.exited ? res.exit_code : res.term_signal,
                         res.output ? res.output : "");
        rv = SM_EIO;
    }
    act_cmd_result_free(&res);
    return rv;
}

static int agent_apply(void *arg, const struct node_action *a, char *errmsg)
{
    const struct node_real_agent *ag = arg;
    switch (a->plan.kind) {
        case ACT_KIND_SCALE_OUT:
            return run_scale_out(ag, a, errmsg);
        case ACT_KIND_NET_CLASS:
            return net_set(ag, a->service, a->plan.to, errmsg);
        case ACT_KIND_LLC_WAYS:
            return llc_set(ag, a->service, a->plan.to, errmsg);
        case ACT_KIND_CPU_FREQ:
            return freq_set(ag, a->service, NULL, a->plan.to, errmsg);
        default:
            break;
    }
    struct act_setting want, prev;
    memset(&want, 0, sizeof want);
    int rv = target_setting(a, &want, errmsg);
    struct act_cg_group g;
    if (rv == SM_OK) {
        rv = find_group(ag, a->service, &g, errmsg);
    }
    if (rv == SM_OK) {
        rv = act_cg_apply(ag->cg, &g, &want, &prev, NULL, errmsg);
    }
    return rv;
}

static int agent_restore(void *arg, const struct node_action *a, char *errmsg)
{
    const struct node_real_agent *ag = arg;
    if (!a->has_prev) {
        sm_errmsg_printf(errmsg, "nothing recorded to restore");
        return SM_EINVAL;
    }
    switch (a->plan.kind) {
        case ACT_KIND_NET_CLASS:
            return net_set(ag, a->service, a->plan.from, errmsg);
        case ACT_KIND_LLC_WAYS:
            return llc_set(ag, a->service, a->plan.from, errmsg);
        case ACT_KIND_CPU_FREQ:
            /* The CPUs the action raised, even if the cpuset moved. */
            return freq_set(
                ag, a->service,
                a->prev.knob == ACT_KNOB_CPUSET ? a->prev.cpus : NULL,
                a->plan.from, errmsg);
        default:
            break;
    }
    struct act_cg_group g;
    struct act_setting prev;
    int rv = find_group(ag, a->service, &g, errmsg);
    if (rv == SM_OK) {
        rv = act_cg_apply(ag->cg, &g, &a->prev, &prev, NULL, errmsg);
    }
    return rv;
}

static char *dup_or_null(const char *s, int *failed)
{
    if (s == NULL) {
        return NULL;
    }
    char *d = sm_strdup(s);
    *failed |= d == NULL;
    return d;
}

/* Fills @ag->tcs from the "SERVICE=CLASSID" entries; act_tc_init checks
 * the device, class id, class list and program. */
static int open_tc(struct node_real_agent *ag,
                   const struct node_agent_config *cfg,
                   char *errmsg)
{
    if (cfg->tc_dev == NULL) {
        if (cfg->n_tc_class > 0) {
            sm_errmsg_printf(errmsg, "--tc-class needs --tc-dev");
            return SM_EINVAL;
        }
        return SM_OK;
    }
    if (cfg->tc_classes == NULL || cfg->n_tc_class == 0) {
        sm_errmsg_printf(errmsg,
                         "--tc-dev needs --tc-classes and at least one "
                         "--tc-class");
        return SM_EINVAL;
    }
    ag->tcs = sm_calloc(cfg->n_tc_class, sizeof *ag->tcs);
    if (ag->tcs == NULL) {
        return SM_ENOMEM;
    }
    for (size_t i = 0; i < cfg->n_tc_class; i++) {
        const char *entry = cfg->tc_class[i];
        const char *eq = strchr(entry, '=');
        size_t n = eq != NULL ? (size_t)(eq - entry) : 0;
        struct tc_entry *e = &ag->tcs[i];
        if (n == 0 || n >= sizeof e->service) {
            sm_errmsg_printf(errmsg, "--tc-class '%s' is not SERVICE=CLASSID",
                             entry);
            return SM_EINVAL;
        }
        memcpy(e->service, entry, n);
        e->service[n] = '\0';
        int rv = act_tc_init(&e->tc, cfg->tc_path, cfg->tc_dev, eq + 1,
                             cfg->tc_classes, errmsg);
        if (rv != SM_OK) {
            sm_errmsg_wrapf(errmsg, "--tc-class '%s'", entry);
            return rv;
        }
        ag->n_tcs++;
    }
    return SM_OK;
}

int node_agent_open(const struct node_agent_config *cfg,
                    struct node_real_agent **out,
                    int *cgroups_ok,
                    char errmsg[SM_ERRMSG_SIZE])
{
    char name[ACT_RDT_NAME_SIZE];
    if (cfg->resctrl_group != NULL &&
        act_rdt_group_name(cfg->resctrl_group, "service", name, errmsg) !=
            SM_OK) {
        sm_errmsg_wrapf(errmsg, "--resctrl-group");
        return SM_EINVAL;
    }
    if (cfg->scale_out_cmd != NULL) {
        int rv = act_cmd_template_check(cfg->scale_out_cmd,
                                        strlen(cfg->scale_out_cmd), errmsg);
        if (rv != SM_OK) {
            sm_errmsg_wrapf(errmsg, "--scale-out-command");
            return rv;
        }
    }
    struct node_real_agent *ag = sm_calloc(1, sizeof *ag);
    if (ag == NULL) {
        return SM_ENOMEM;
    }
    int failed = 0;
    ag->cgroup_path = dup_or_null(cfg->cgroup_path, &failed);
    ag->proc_root = dup_or_null(cfg->proc_root, &failed);
    ag->scale_out_cmd = dup_or_null(cfg->scale_out_cmd, &failed);
    ag->cgroup_root = dup_or_null(
        cfg->cgroup_root ? cfg->cgroup_root : DEFAULT_CG_ROOT, &failed);
    ag->resctrl_root = dup_or_null(
        cfg->resctrl_root ? cfg->resctrl_root : DEFAULT_RDT_ROOT, &failed);
    ag->resctrl_group = dup_or_null(
        cfg->resctrl_group ? cfg->resctrl_group : DEFAULT_RDT_TMPL, &failed);
    ag->cpufreq_root = dup_or_null(
        cfg->cpufreq_root ? cfg->cpufreq_root : DEFAULT_CPUFREQ, &failed);
    ag->command_timeout_s =
        cfg->command_timeout_s > 0 ? cfg->command_timeout_s : 120;
    if (failed) {
        node_agent_close(ag);
        return SM_ENOMEM;
    }
    int rv = open_tc(ag, cfg, errmsg);
    if (rv != SM_OK) {
        node_agent_close(ag);
        return rv;
    }
    struct act_rdt rdt;
    char why[SM_ERRMSG_SIZE];
    if (act_rdt_available(ag->resctrl_root, &rdt, why) == SM_OK) {
        ag->llc_ways_at_open = rdt.info.cbm_bits;
    }
    *cgroups_ok =
        act_cg_open(cfg->cgroup_root, &ag->cg, ag->cg_reason) == SM_OK;
    if (!*cgroups_ok) {
        ag->cg = NULL;
        sm_errmsg_printf(errmsg, "%s", ag->cg_reason);
    }
    ag->ops = (struct node_agent){
        .arg = ag,
        .read = agent_read,
        .apply = agent_apply,
        .restore = agent_restore,
    };
    *out = ag;
    return SM_OK;
}

const struct node_agent *node_agent_ops(struct node_real_agent *ag)
{
    return &ag->ops;
}

void node_agent_plan_limits(const struct node_real_agent *ag,
                            struct act_plan_config *plan)
{
    if (ag->n_tcs > 0) {
        /* Every entry shares the one --tc-classes list. */
        plan->max_net_class = (int)ag->tcs[0].tc.classes.n - 1;
    }
    uint32_t ways = ag->llc_ways_at_open;
    if (ways > 0 && (plan->max_llc_ways == 0 || plan->max_llc_ways > ways)) {
        plan->max_llc_ways = ways;
    }
}

const char *node_agent_layout(const struct node_real_agent *ag)
{
    if (ag->cg == NULL) {
        return "none";
    }
    return act_cg_layout_name(act_cg_layout(ag->cg));
}

void node_agent_close(struct node_real_agent *ag)
{
    if (ag == NULL) {
        return;
    }
    act_cg_close(ag->cg);
    sm_free(ag->cgroup_path);
    sm_free(ag->proc_root);
    sm_free(ag->scale_out_cmd);
    sm_free(ag->cgroup_root);
    sm_free(ag->resctrl_root);
    sm_free(ag->resctrl_group);
    sm_free(ag->cpufreq_root);
    sm_free(ag->tcs);
    sm_free(ag);
}
