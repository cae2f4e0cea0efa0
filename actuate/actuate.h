/* actuate: from a diagnosed culprit to a corrective action on its host. */
#ifndef SM_ACTUATE_H
#define SM_ACTUATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* How a peer treats the actions its controller decides (`--actuate`):
 * - dry-run: log and record what would be done, change nothing (default);
 * - on: apply actions;
 * - off: do not even plan actions;
 * - approve: plan actions and hold each until an operator approves it
 *   (`sagemesh actions approve ID`). */
enum act_mode { ACT_MODE_DRY_RUN, ACT_MODE_ON, ACT_MODE_OFF, ACT_MODE_APPROVE };

#define ACT_MODE_DEFAULT ACT_MODE_DRY_RUN

/* Parses "dry-run", "on", "off" or "approve" into @mode. Returns SM_OK, or
 * SM_EINVAL leaving @mode untouched. */
int act_mode_parse(const char *text, enum act_mode *mode);

/* Returns the flag spelling of @mode ("dry-run", "on", "off", "approve"), or
 * "unknown" for a value outside the enum. */
const char *act_mode_name(enum act_mode mode);

/* ---- The agent: cgroups (actuate/cgroup.c) ------------------------------ */

/* The agent changes a service's resources by writing cgroup knob files, the
 * way an operator would with `echo 50000 100000 > cpu.max`. Everything below
 * works under a root directory given by the caller ("/sys/fs/cgroup" by
 * default), so tests run against a fake tree in a temporary directory. Files
 * are only opened, read, truncated and written: nothing is ever created,
 * and relative paths containing ".." are refused, so no write can land
 * outside the root.
 *
 * All functions here do small blocking file I/O and keep no global state:
 * call them from the agent's worker, not from the node loop. A struct act_cg
 * may be shared by threads that only read and write knobs. Functions that
 * take @errmsg (SM_ERRMSG_SIZE bytes) fill it on failure with a message that
 * names the file involved. */

/* The two cgroup layouts: v1 mounts one hierarchy per controller
 * (root/cpu or root/cpu,cpuacct, root/cpuset, root/memory, root/blkio); v2
 * (unified) has a single tree with cgroup.controllers at its root. */
enum act_cg_layout { ACT_CG_V1, ACT_CG_V2 };

/* The controllers the agent uses. In v1 each has its own hierarchy, and a
 * process may sit at a different path in each. */
enum act_cg_ctrl {
    ACT_CG_CTRL_CPU,    /* v1 "cpu" or "cpu,cpuacct"; v2 "cpu" */
    ACT_CG_CTRL_CPUSET, /* "cpuset" in both */
    ACT_CG_CTRL_MEMORY, /* "memory" in both */
    ACT_CG_CTRL_IO,     /* v1 "blkio"; v2 "io" */
    ACT_CG_CTRL__COUNT
};

/* The resources the agent can adjust. */
enum act_knob {
    ACT_KNOB_CPU_QUOTA, /* v2 cpu.max; v1 cpu.cfs_quota_us + cfs_period_us */
    ACT_KNOB_CPUSET,    /* cpuset.cpus in both */
    ACT_KNOB_MEMORY,    /* v2 memory.max; v1 memory.limit_in_bytes */
    ACT_KNOB_IO_WEIGHT, /* v2 io.weight; v1 blkio.weight */
    ACT_KNOB__COUNT
};

/* The knob files, one per on-disk format. */
enum act_cg_file {
    ACT_CG_FILE_CPU_MAX,      /* v2 "QUOTA PERIOD" or "max PERIOD" */
    ACT_CG_FILE_CFS_QUOTA,    /* v1 microseconds, -1 = unlimited */
    ACT_CG_FILE_CFS_PERIOD,   /* v1 microseconds */
    ACT_CG_FILE_CPUSET_CPUS,  /* both: list "0-3,6", may be empty */
    ACT_CG_FILE_MEMORY_MAX,   /* v2 bytes or "max" */
    ACT_CG_FILE_MEMORY_LIMIT, /* v1 bytes; -1 or >= 2^62 = unlimited */
    ACT_CG_FILE_IO_WEIGHT,    /* v2 "default N" (1..10000) + devices */
    ACT_CG_FILE_BLKIO_WEIGHT, /* v1 N (10..1000) */
    ACT_CG_FILE__COUNT
};

/* Bounds enforced by the parsers and by act_cg_apply(). */
#define ACT_CG_PERIOD_MIN_US 1000u    /* cpu period and smallest quota */
#define ACT_CG_PERIOD_MAX_US 1000000u /* largest cpu period */
#define ACT_CG_IO_WEIGHT_MIN 1u       /* v2 io.weight */
#define ACT_CG_IO_WEIGHT_DEF 100u
#define ACT_CG_IO_WEIGHT_MAX 10000u
#define ACT_CG_BLKIO_MIN     10u /* v1 blkio.weight */
#define ACT_CG_BLKIO_DEF     500u
#define ACT_CG_BLKIO_MAX     1000u
#define ACT_CG_MAX_CPUS      1024 /* CPU numbers in a cpuset are < this */
#define ACT_CG_CPUS_SIZE     512  /* canonical cpuset text, with its NUL */
#define ACT_CG_PATH_SIZE     1024 /* any path built here, with its NUL */
#define ACT_CG_FILE_TEXT_MAX 8192 /* longest knob file content accepted */

/* One knob's value, independent of the layout, so a value read on one host
 * can be compared with, and written as, a value for another. Plain data: no
 * pointers, copy it freely. Fields a knob does not use stay zero.
 * - CPU quota: @unlimited, or @value microseconds of CPU per @period
 *   microseconds (@value may exceed @period: more than one CPU).
 * - cpuset: @cpus in canonical list form ("0-3,6"; "" = none/inherit).
 * - memory: @unlimited, or @value bytes.
 * - IO weight: @value on the v2 scale 1..10000 (default 100). @native is the
 *   exact v1 blkio.weight when the setting was read from a v1 tree (else 0);
 *   writing to v1 uses it when non-zero, so a rollback is exact even though
 *   the conversion between scales is lossy. */
struct act_setting
{
    enum act_knob knob;
    bool unlimited;
    uint64_t value;
    uint64_t period;
    uint64_t native;
    char cpus[ACT_CG_CPUS_SIZE];
};

/* Fills @s with a CPU quota of @quota_us per @period_us (unlimited when
 * @unlimited, ignoring @quota_us), a memory limit, an IO weight (v2 scale)
 * or a cpuset. These only fill the struct; act_cg_apply() validates. The
 * cpuset helper copies @cpus verbatim, truncated to ACT_CG_CPUS_SIZE - 1. */
void act_setting_cpu(struct act_setting *s,
                     bool unlimited,
                     uint64_t quota_us,
                     uint64_t period_us);
void act_setting_memory(struct act_setting *s, bool unlimited, uint64_t bytes);
void act_setting_io_weight(struct act_setting *s, uint64_t weight);
void act_setting_cpuset(struct act_setting *s, const char *cpus);

/* Returns true when @a and @b set the same knob to the same value (the
 * fields the knob uses; @native is ignored, and cpusets compare by their
 * canonical form, so "0,1,2" equals "0-2"). */
bool act_setting_equal(const struct act_setting *a,
                       const struct act_setting *b);

/* Converts between v1 blkio.weight (10..1000, default 500) and v2 io.weight
 * (1..10000, default 100) proportionally around the defaults, clamping to
 * the target range (as systemd does): 500 <-> 100, 10 -> 2, 1000 -> 200,
 * 10000 -> 1000. Total functions. */
uint64_t act_cg_blkio_to_io_weight(uint64_t blkio);
uint64_t act_cg_io_to_blkio_weight(uint64_t io);

/* Returns the name of @file ("cpu.max", "cpu.cfs_quota_us", ...), of
 * @layout ("v1", "v2"), of @knob ("cpu", "cpuset", "memory", "io") or of
 * @ctrl ("cpu", "cpuset", "memory", "io"); "unknown" outside the enums. */
const char *act_cg_file_name(enum act_cg_file file);
const char *act_cg_layout_name(enum act_cg_layout layout);
const char *act_knob_name(enum act_knob knob);
const char *act_cg_ctrl_name(enum act_cg_ctrl ctrl);

/* Parses the content of a knob file (@len bytes at @text, not necessarily
 * NUL-terminated, one trailing newline allowed) into the fields of @s that
 * the file carries, leaving the others alone: cpu.cfs_quota_us sets
 * @unlimited and @value, cpu.cfs_period_us only @period, blkio.weight sets
 * @value (converted) and @native; every file also sets @s->knob. io.weight
 * reads its "default N" line and checks, but ignores, per-device lines.
 * Returns SM_OK, or SM_EINVAL for a malformed or out-of-range value (see the
 * bounds above) or for text longer than ACT_CG_FILE_TEXT_MAX, with @errmsg
 * saying why and @s unchanged. Pure: no I/O. */
int act_cg_parse(enum act_cg_file file,
                 const char *text,
                 size_t len,
                 struct act_setting *s,
                 char *errmsg);

/* Formats the value @s holds for @file, as written to the kernel, into @buf
 * (@size bytes, NUL-terminated, with a trailing newline): "50000 100000\n",
 * "max 100000\n", "-1\n", "0-3,6\n", "default 200\n", ... Validates the
 * value first. Returns SM_OK, SM_EINVAL for a value out of the file's range
 * or of the wrong knob (@errmsg says which), or SM_ETOOBIG when @buf is too
 * small. Pure: no I/O. */
int act_cg_format(enum act_cg_file file,
                  const struct act_setting *s,
                  char *buf,
                  size_t size,
                  char *errmsg);

/* The cgroup a service runs in, as a path relative to each controller's
 * hierarchy ("system.slice/foo.service"; "" is the root cgroup). In v2 all
 * entries are the same path. @has[c] is false when the service has no
 * cgroup in controller @c's hierarchy (or that hierarchy is not mounted).
 * Plain data, filled by the functions below. */
struct act_cg_group
{
    bool has[ACT_CG_CTRL__COUNT];
    char path[ACT_CG_CTRL__COUNT][ACT_CG_PATH_SIZE];
};

/* Parses the content of /proc/PID/cgroup (@len bytes at @text) for
 * @layout into @g: v2 uses the "0::/path" line; v1 uses the "N:ctrls:/path"
 * lines whose controller list names cpu, cpuset, memory or blkio, and
 * ignores the others (name=systemd, pids, ...). Returns SM_OK (even if no
 * controller matched: check @g->has), or SM_EINVAL for a malformed line, a
 * path that is not absolute, contains "..", or is too long, with @errmsg
 * saying which line. On error @g is unspecified. Pure: no I/O. */
int act_cg_parse_proc_cgroup(enum act_cg_layout layout,
                             const char *text,
                             size_t len,
                             struct act_cg_group *g,
                             char *errmsg);

/* The cgroup tree of one host: its root, its layout, and for v1 the
 * directory of each controller's hierarchy. */
struct act_cg;

/* Detects the layout under @root (NULL: "/sys/fs/cgroup"): v2 when
 * root/cgroup.controllers exists, else v1 when at least one of the
 * controller hierarchies listed for enum act_cg_ctrl is a directory under
 * @root (a hybrid host, with v2 at root/unified, counts as v1). Only reads
 * (stat). On success stores a new handle in @out, which the caller owns and
 * frees with act_cg_close(); @root is copied. Fails with SM_ENOTFOUND when
 * @root holds neither layout, SM_EINVAL when @root is too long, SM_ENOMEM;
 * @out is then untouched. */
int act_cg_open(const char *root, struct act_cg **out, char *errmsg);

/* Frees @cg (NULL is fine). */
void act_cg_close(struct act_cg *cg);

/* The layout detected by act_cg_open(). */
enum act_cg_layout act_cg_layout(const struct act_cg *cg);

/* Returns true when @cg has @ctrl's hierarchy (always true for v2). */
bool act_cg_has_ctrl(const struct act_cg *cg, enum act_cg_ctrl ctrl);

/* Expands @tmpl, a path relative to each hierarchy in which every
 * "{service}" is replaced by @service (e.g. "system.slice/{service}.service"
 * or "docker/{service}"; a leading '/' is ignored), and fills @g with the
 * controllers whose hierarchy has that directory. Fails with SM_EINVAL when
 * @service is empty or holds '/', when @tmpl has another "{...}"
 * placeholder, an unmatched brace or a ".." component, or when the path is
 * too long; SM_ENOTFOUND when no hierarchy has the directory. @errmsg names
 * the path; @g is unspecified on error. */
int act_cg_group_from_template(const struct act_cg *cg,
                               const char *tmpl,
                               const char *service,
                               struct act_cg_group *g,
                               char *errmsg);

/* Finds the cgroup of a running process named @comm: scans @proc_root (NULL:
 * "/proc") for numeric entries whose "comm" file holds exactly @comm (cut,
 * as the kernel cuts it, to 15 bytes), takes
 * the one with the lowest pid, and parses its "cgroup" file with
 * act_cg_parse_proc_cgroup(), keeping only the controllers @cg has. Stores
 * the pid in @pid when @pid is not NULL. Processes that vanish during the
 * scan are skipped. Fails with SM_ENOTFOUND when no process matches,
 * SM_EINVAL when @comm is empty or the cgroup file is malformed, SM_EIO or
 * SM_EPERM when @proc_root cannot be listed. */
int act_cg_group_from_process(const struct act_cg *cg,
                              const char *proc_root,
                              const char *comm,
                              struct act_cg_group *g,
                              int *pid,
                              char *errmsg);

/* Reads @knob of the cgroup @g into @s (@s->knob = @knob; on v1 CPU reads
 * both cfs files, on v1 IO also sets @s->native). Fails with SM_ENOTFOUND
 * when @g has no cgroup in the knob's controller or the file is missing
 * (SM_EIO if the path is a directory), SM_EPERM when it cannot be read,
 * SM_EINVAL when its content does not parse, SM_EIO otherwise; @errmsg
 * names the file. */
int act_cg_read(const struct act_cg *cg,
                const struct act_cg_group *g,
                enum act_knob knob,
                struct act_setting *s,
                char *errmsg);

/* Sets @want (its knob) on the cgroup @g, idempotently: reads the current
 * value into @prev first; if it already equals @want nothing is written and
 * *@changed is false, else the new value is written (open, write, close on
 * the existing file; v1 CPU writes the period, then the quota, restoring the
 * period if the quota write fails) and *@changed is true. To roll back, call
 * act_cg_apply() with the @prev returned. @changed may be NULL. Fails with
 * SM_EINVAL when @want is out of range for the layout (nothing written),
 * or as act_cg_read() does; a write failure gives SM_EPERM (no permission:
 * the message says so and names the file), SM_EINVAL (the kernel refused
 * the value), SM_ENOTFOUND, or SM_EIO. On failure *@changed is false unless
 * a partial v1 CPU write could not be undone, and @prev holds the value read
 * if the read succeeded. */
int act_cg_apply(const struct act_cg *cg,
                 const struct act_cg_group *g,
                 const struct act_setting *want,
                 struct act_setting *prev,
                 bool *changed,
                 char *errmsg);

/* ---- The controller: plans (actuate/plan.c) ------------------------------ */

/* The controller's plan rules are pure functions of their arguments: the
 * culprit named by a diagnosis, the service's current settings, the state the
 * controller keeps for that service, a config and the time (@now_ns, any
 * monotonic clock, always passed in). They never read a clock, allocate or
 * do I/O, and the same inputs give the same plan.
 *
 * The caller's loop, per service and per window:
 *   1. act_plan_record_window() with the window's QoS outcome;
 *   2. if a diagnosis names a culprit, act_plan_decide();
 *   3. once the agent applied a non-none plan, act_plan_record_applied().
 * act_plan_rollback_advised() tells when the last local step did not help. */

/* What an action changes. The from/to values of a plan are in the knob's
 * unit: cores (cpu_quota), bytes (memory_limit), cgroup io weight
 * (io_weight), bandwidth class index, higher is more bandwidth (net_class),
 * cache ways (llc_ways), replicas added by the controller so far
 * (scale_out: to - from is the number of replicas to add), the CPUs'
 * scaling_max_freq in kHz (cpu_freq). New kinds are appended: the names
 * are stored in the action log. */
enum act_kind {
    ACT_KIND_NONE,
    ACT_KIND_CPU_QUOTA,
    ACT_KIND_MEMORY_LIMIT,
    ACT_KIND_IO_WEIGHT,
    ACT_KIND_NET_CLASS,
    ACT_KIND_LLC_WAYS,
    ACT_KIND_SCALE_OUT,
    ACT_KIND_CPU_FREQ,
    ACT_KIND__COUNT
};

/* Returns "none", "cpu_quota", "memory_limit", "io_weight", "net_class",
 * "llc_ways", "scale_out" or "cpu_freq", or "unknown" for a value outside
 * the enum. */
const char *act_kind_name(enum act_kind kind);

/* The resource class of a culprit, as the diagnosis spells it. */
enum act_resource {
    ACT_RES_CPU,
    ACT_RES_MEMORY,
    ACT_RES_NETWORK,
    ACT_RES_DISK,
    ACT_RES_LLC,
    ACT_RES_OTHER,
    ACT_RES_UNKNOWN
};

/* Parses "cpu", "memory", "network", "disk", "llc", "other" or "unknown"
 * into @res. Returns SM_OK, or SM_EINVAL leaving @res untouched. */
int act_resource_parse(const char *text, enum act_resource *res);

/* A service's current settings as far as the controller knows them. Every
 * field has an "unknown" value, and a local step on an unknown knob is not
 * planned (the plan is none, with the reason). The CPU frequency fields
 * summarise the CPUs of the service's cpuset: the lowest scaling_max_freq
 * and the lowest cpuinfo_max_freq among them, so on mixed CPUs a raise to
 * @cpu_freq_max_khz lifts every CPU to at least the slowest one's maximum
 * and a raise is never planned again once that is reached. */
struct act_settings
{
    double cpu_cores;          /* CPU quota in cores; <= 0: unknown or
                                  unlimited */
    uint64_t memory_bytes;     /* memory limit; 0: unknown */
    uint32_t io_weight;        /* io/blkio weight; 0: unknown */
    int net_class;             /* bandwidth class index; < 0: unknown */
    uint32_t llc_ways;         /* LLC ways; 0: unknown */
    uint32_t cpu_freq_khz;     /* CPUs' frequency limit now; 0: unknown */
    uint32_t cpu_freq_max_khz; /* the hardware's maximum; 0: unknown */
};

/* Fills @s with "everything unknown". */
void act_settings_init(struct act_settings *s);

/* Rules and limits. The caller passes the config that applies to the
 * service being planned (caps are per service). A cap of 0 means "no cap". */
struct act_plan_config
{
    enum act_mode mode;          /* ACT_MODE_OFF plans nothing */
    double cpu_step_fraction;    /* CPU: +this fraction of current (0.5) */
    double cpu_step_min_cores;   /* ... but at least this many cores (0.5) */
    double memory_step_fraction; /* memory: +this fraction (0.25) */
    double io_weight_factor;     /* disk: io weight times this (2) */
    uint32_t llc_step_ways;      /* LLC: +this many ways (2) */
    double max_cores;            /* caps (0: none), default none */
    uint64_t max_memory_bytes;   /* default none */
    uint32_t max_io_weight;      /* default 10000 (cgroup v2's maximum) */
    int max_net_class;           /* highest class index; default 3 */
    uint32_t max_llc_ways;       /* default none */
    uint64_t min_interval_ns;    /* rate limit per service (60 s) */
    uint32_t verify_windows;     /* windows to verify an action (2) */
    uint32_t escalate_windows;   /* unrecovered windows before scale-out (3) */
    bool scale_out_enabled;    /* an operator scale-out command exists (true) */
    bool scale_out_other;      /* "other"/"unknown" -> scale-out (false) */
    uint32_t scale_out_amount; /* replicas per scale-out (1) */
};

/* Fills @c with the defaults given in the comments above (mode dry-run). */
void act_plan_config_init(struct act_plan_config *c);

/* Checks @c: positive steps, io factor > 1, verify_windows >= 1,
 * escalate_windows >= 1, scale_out_amount >= 1, a known mode. Returns SM_OK
 * or SM_EINVAL with a message in @errmsg (SM_ERRMSG_SIZE bytes). */
int act_plan_config_validate(const struct act_plan_config *c, char *errmsg);

/* Where the last action stands. */
enum act_verdict {
    ACT_VERDICT_NONE,      /* no action yet */
    ACT_VERDICT_PENDING,   /* applied, being verified */
    ACT_VERDICT_HELPED,    /* QoS met in a verification window */
    ACT_VERDICT_NOT_HELPED /* QoS still violated after verify_windows */
};

/* The controller's per-service state. The caller owns it (one per service),
 * initialises it with act_service_state_init() and changes it only through
 * act_plan_record_applied() and act_plan_record_window(). Plain data: it
 * can be copied, compared and persisted as is. */
struct act_service_state
{
    bool has_action;               /* an action was ever applied */
    uint64_t last_action_ns;       /* when (the @now_ns passed) */
    enum act_kind last_kind;       /* what it changed */
    double last_from, last_to;     /* and its values, for a rollback */
    enum act_verdict verdict;      /* of the last action */
    uint32_t local_steps;          /* local steps in the current episode */
    uint32_t windows_since_action; /* windows recorded since the last action */
    uint32_t windows_unrecovered;  /* ... in a row with QoS still violated */
    uint32_t violated_streak;      /* consecutive violated windows */
    uint32_t met_streak;           /* consecutive windows with QoS met */
    double added[ACT_KIND__COUNT]; /* total added per knob, in its unit */
};

/* Fills @s for a service the controller never acted on. */
void act_service_state_init(struct act_service_state *s);

/* Size of act_plan.reason, terminator included. */
#define ACT_REASON_SIZE 160

/* A decision: the action, its knob's values, and why (or why none). */
struct act_plan
{
    enum act_kind kind; /* ACT_KIND_NONE: do nothing */
    double from, to;    /* in the knob's unit (see enum act_kind); 0 if none */
    char reason[ACT_REASON_SIZE]; /* short human sentence, always set */
};

/* Decides what to do for @service whose resource class @resource (see
 * act_resource_parse) a diagnosis blamed, given its current settings @cur
 * and the controller's state @st at time @now_ns. The rules, in order:
 *   - mode off: none;
 *   - the last action is still being verified (verify_windows): none;
 *   - the last action is younger than min_interval_ns: none (rate limit);
 *   - the last action on this knob (or a scale-out) did not help: scale-out
 *     once windows_unrecovered >= escalate_windows, else none (waiting);
 *   - the last action helped: none until QoS is violated verify_windows
 *     windows in a row again (hysteresis: no flapping);
 *   - other/unknown: scale-out when scale_out_other, else none;
 *   - a local step for the resource (CPU +fraction or at least min cores,
 *     memory +fraction, io weight times factor, net class +1, LLC +ways),
 *     clipped to its cap; at the cap: scale-out; unknown current: none.
 *     CPU with an unknown or unlimited quota (cpu_cores <= 0) turns to the
 *     CPU frequency instead: when cpu_freq_khz and cpu_freq_max_khz are
 *     known and the first is below the second, raise it to the maximum
 *     (kind cpu_freq); otherwise none, with the reason. The rules above
 *     about the last action then concern cpu_freq.
 * A needed scale-out without scale_out_enabled is none. Reads only its
 * arguments; writes only @out. Returns SM_OK with @out filled (possibly
 * none), or SM_EINVAL (NULL argument, unparseable @resource, invalid
 * config) with a message in @errmsg (SM_ERRMSG_SIZE bytes) and @out
 * untouched. */
int act_plan_decide(const struct act_plan_config *cfg,
                    const char *service,
                    const char *resource,
                    const struct act_settings *cur,
                    const struct act_service_state *st,
                    uint64_t now_ns,
                    struct act_plan *out,
                    char *errmsg);

/* Records in @st that @plan (not none) was applied at @now_ns: starts its
 * verification, counts a local step, adds to act_service_state.added. A
 * none plan leaves @st untouched. Cannot fail. */
void act_plan_record_applied(struct act_service_state *st,
                             const struct act_plan *plan,
                             uint64_t now_ns);

/* Records one window's QoS outcome for the service (@recovered: its QoS
 * target was met) and updates the counters. Once the last action has been
 * followed by verify_windows windows it is settled: helped when QoS was met
 * in at least one of them, not helped otherwise. verify_windows met windows in
 * a row close the episode (local_steps back to 0). Returns the verdict settled
 * by this window (HELPED or NOT_HELPED), or ACT_VERDICT_NONE when this window
 * settled nothing. Cannot fail. */
enum act_verdict act_plan_record_window(const struct act_plan_config *cfg,
                                        struct act_service_state *st,
                                        bool recovered);

/* Returns true when the last action was a local step verified as not
 * helped, and then fills @undo (may be NULL) with the plan that restores
 * it (same kind, from/to swapped). Returns false otherwise (@undo untouched):
 * no action, still verifying, helped, or a scale-out (not undone here). */
bool act_plan_rollback_advised(const struct act_service_state *st,
                               struct act_plan *undo);

/* ---- Operator commands (actuate/command.c) ------------------------------- */

/* An operator command template is one line such as
 *   kubectl scale deploy/{service} --replicas=+{amount}
 *   docker update --cpus {amount} {instance}
 * It is split on whitespace into words; each word becomes one argv element
 * after its placeholders {service}, {instance}, {resource} and {amount} are
 * replaced by the values given. "{{" and "}}" stand for literal braces. No
 * shell is involved: a value is never split, globbed or interpreted, so
 * "; rm -rf /" or "$(x)" stay plain text inside one argument. An operator
 * who wants a shell writes "sh -c ..." and owns the consequences. */

/* Limits on templates and their expansion. */
#define ACT_CMD_MAX_TEMPLATE 4096 /* bytes of template */
#define ACT_CMD_MAX_ARGS     128  /* words */
#define ACT_CMD_MAX_ARG      4096 /* bytes of one expanded word */

/* The placeholder values. A NULL value is fine as long as the template does
 * not use that placeholder. Values are NUL-terminated (so contain no NUL)
 * and may not contain '\n' or '\r'; they may be empty (an empty word then
 * stays an empty argument). */
struct act_cmd_values
{
    const char *service;
    const char *instance;
    const char *resource;
    const char *amount;
};

/* Checks @template (@len bytes, need not be NUL-terminated) without values:
 * every placeholder known and terminated, no NUL byte, at least one word,
 * within the limits. Returns SM_OK, or SM_EMALFORMED (bad placeholder,
 * stray brace, NUL, empty), SM_ETOOBIG (over a limit) with a message naming
 * the byte offset in @errmsg (SM_ERRMSG_SIZE bytes). */
int act_cmd_template_check(const char *template, size_t len, char *errmsg);

/* Expands @template (@len bytes) with @values into a new NULL-terminated
 * argv array stored in @argv, with its word count in @argc (may be NULL).
 * The caller owns the array and its strings and frees them with
 * act_cmd_argv_free(). Errors (nothing allocated, @argv set to NULL): the
 * template errors of act_cmd_template_check(); SM_EINVAL for a used
 * placeholder whose value is NULL or contains a newline, or for an empty
 * program name; SM_ETOOBIG when an expanded word is longer than
 * ACT_CMD_MAX_ARG; SM_ENOMEM. A message is written to @errmsg. */
int act_cmd_expand(const char *template,
                   size_t len,
                   const struct act_cmd_values *values,
                   char ***argv,
                   size_t *argc,
                   char *errmsg);

/* Frees an array from act_cmd_expand(). NULL is a no-op. */
void act_cmd_argv_free(char **argv);

/* What a command did. */
struct act_cmd_result
{
    bool exited;           /* it exited normally, with status @exit_code */
    int exit_code;         /* 0..255 when @exited */
    int term_signal;       /* the signal that ended it, 0 if it exited */
    bool timed_out;        /* killed (SIGKILL) because the deadline passed */
    char *output;          /* combined stdout+stderr, NUL-terminated, owned */
    size_t output_len;     /* bytes kept in @output (<= max_output) */
    bool output_truncated; /* it wrote more than max_output bytes */
};

/* Runs @argv (argv[0] looked up in PATH, as execvp does; no shell) with
 * posix_spawnp in its own process group, stdin from /dev/null, stdout and
 * stderr captured together: the first @max_output bytes are kept in
 * @res->output, the rest read and discarded. Blocks until the command ends
 * or the CLOCK_MONOTONIC time @deadline_ns passes; then its process group
 * is killed with SIGKILL and reaped, and @res->timed_out set. Polls with
 * short sleeps; call it on a worker thread, never on the node loop.
 * Returns SM_OK when the command was started and reaped, whatever its exit
 * status, with @res filled (free @res->output with act_cmd_result_free()).
 * Errors, with a message in @errmsg (SM_ERRMSG_SIZE bytes) and @res zeroed:
 * SM_EINVAL (NULL or empty argv), SM_ENOTFOUND (program not found),
 * SM_EPERM (not executable), SM_ENOMEM, SM_EIO (pipe, spawn or wait
 * failure; errno in the message). */
int act_cmd_run(char *const argv[],
                uint64_t deadline_ns,
                size_t max_output,
                struct act_cmd_result *res,
                char *errmsg);

/* Frees @res->output and zeroes @res. */
void act_cmd_result_free(struct act_cmd_result *res);

/* ---- Network bandwidth: tc HTB classes (actuate/tc.c) ---------------------
 */

/* The agent changes a service's network bandwidth by changing the rate and
 * ceil of the HTB class the operator set up for it, the way an operator
 * would: `tc class change dev eth0 parent 1:1 classid 1:10 htb rate 200Mbit
 * ceil 200Mbit`. The operator also lists the bandwidth classes in
 * increasing order ("100mbit,200mbit,500mbit,1gbit"); the plan's net_class
 * is an index into that list, higher is more bandwidth.
 *
 * tc is run through act_cmd_run() (argv, no shell, a deadline), never
 * through a library: a class is read by parsing the text of `tc -s class
 * show dev DEV`. The tc program is configurable, so tests run a fake tc
 * script. Rates are in bits per second. The kernel keeps bytes per second
 * and iproute2 prints a rate in the largest decimal unit that divides it,
 * except that from 1000 of a unit upwards it truncates (1000000008bit shows
 * as "1Gbit"). So rates are compared as tc shows them: a rate read back is
 * "equal" to the one written when tc would show both the same way.
 *
 * `tc class change` replaces every HTB parameter of the class, and those
 * not given return to tc's defaults. The agent therefore passes back, as
 * read, the priority, overhead and link layer, and on a rollback the burst
 * and cburst too; only the quantum, which tc shows only with -d, is left for
 * the kernel to recompute. All functions here are pure or block on tc
 * (until @deadline_ns, CLOCK_MONOTONIC): call them from the agent's worker,
 * never from the node loop. They keep no global state. */

/* Limits. */
#define ACT_TC_MAX_CLASSES 16  /* bandwidth classes an operator lists */
#define ACT_TC_DEV_SIZE    16  /* a device name with its NUL (IFNAMSIZ) */
#define ACT_TC_PATH_SIZE   256 /* the tc program path with its NUL */
#define ACT_TC_RATE_MAX    UINT64_C(1000000000000000) /* 1000 Tbit/s */
#define ACT_TC_SIZE_MAX    UINT64_C(4294967295)       /* a burst, in bytes */
#define ACT_TC_OUTPUT_MAX  (1u << 20) /* `tc class show` output kept, bytes */
#define ACT_TC_TEXT_SIZE   32 /* a formatted rate, size or handle, with NUL */
#define ACT_TC_ARGV_MAX    32 /* argv slots of a change command, with NULL */

/* A tc handle "MAJOR:MINOR" (hex, as tc prints it). A class has a non-zero
 * minor; "1:" (minor 0) names the qdisc 1: itself, the parent of a root
 * class. Plain data. */
struct act_tc_handle
{
    uint16_t major;
    uint16_t minor;
};

/* The bandwidth classes an operator lists, in bits per second, strictly
 * increasing (as tc shows them). Plain data. */
struct act_tc_classes
{
    size_t n;
    uint64_t rate[ACT_TC_MAX_CLASSES];
};

/* One HTB class as `tc class show` prints it. Plain data.
 * - @rate, @ceil: bits per second, as shown (see above);
 * - @burst, @cburst: bytes, as shown; 0 when unknown, and then a change
 *   lets tc compute them from the rate;
 * - @overhead and @atm ("linklayer atm" or "adsl") are shown only when set. */
struct act_tc_htb
{
    struct act_tc_handle classid;
    struct act_tc_handle parent; /* the qdisc "M:" for a root class */
    bool root;                   /* tc printed "root" instead of "parent" */
    uint32_t prio;
    uint64_t rate;
    uint64_t ceil;
    uint64_t burst;
    uint64_t cburst;
    uint32_t overhead;
    bool atm;
};

/* One service's class: where it is and which rates it may take. Filled by
 * act_tc_init(); plain data, copy it freely. */
struct act_tc
{
    char tc_path[ACT_TC_PATH_SIZE]; /* "tc" (looked up in PATH) or a path */
    char dev[ACT_TC_DEV_SIZE];      /* "eth0" */
    struct act_tc_handle classid;   /* the service's HTB class */
    struct act_tc_classes classes;  /* the bandwidth classes, increasing */
};

/* A change command built by act_tc_change_argv(): @argv (NULL-terminated)
 * points into @text, so the struct must not be copied or moved once
 * filled. */
struct act_tc_argv
{
    char *argv[ACT_TC_ARGV_MAX];
    char text[ACT_TC_ARGV_MAX * ACT_TC_PATH_SIZE];
};

/* Parses a rate (@len bytes at @text, not NUL-terminated necessarily): a
 * decimal number with an optional fraction and a unit, case-insensitive, as
 * tc(8) spells them: bit (or none), kbit, mbit, gbit, tbit (powers of
 * 1000), kibit, mibit, gibit, tibit (powers of 1024), and the same with
 * "bps" for bytes per second (times 8). Stores bits per second in @bits.
 * Returns SM_OK, or SM_EINVAL (malformed, a unit tc does not know, zero, a
 * fraction of a bit, above ACT_TC_RATE_MAX) with @errmsg saying why and
 * @bits untouched. Pure. */
int act_tc_rate_parse(const char *text,
                      size_t len,
                      uint64_t *bits,
                      char *errmsg);

/* Formats @bits exactly, in the largest decimal unit that divides it
 * ("100Mbit", "1500Kbit", "1000000008bit"), into @buf (@size bytes, NUL
 * terminated; ACT_TC_TEXT_SIZE is enough). act_tc_rate_parse() gives back
 * @bits. Returns SM_OK, SM_EINVAL for 0 or a rate above ACT_TC_RATE_MAX, or
 * SM_ETOOBIG when @buf is too small. Pure. */
int act_tc_rate_format(uint64_t bits, char *buf, size_t size, char *errmsg);

/* Returns @bits as tc would show it once set: rounded down to whole bytes
 * per second, then truncated the way iproute2 prints it (1000000008 ->
 * 1000000000). Rates are compared through this function. Pure, total. */
uint64_t act_tc_rate_shown(uint64_t bits);

/* Parses a size as tc prints and reads it: a number with an optional
 * fraction and the unit b (or none), kb, mb or gb (powers of 1024; "1Kb" is
 * 1024 bytes), case-insensitive, rounded to whole bytes. Stores bytes in
 * @bytes. Returns SM_OK, or SM_EINVAL (malformed, above ACT_TC_SIZE_MAX)
 * with @errmsg saying why. Pure. */
int act_tc_size_parse(const char *text,
                      size_t len,
                      uint64_t *bytes,
                      char *errmsg);

/* Parses a handle "1:10" or "1:" (1 to 4 hex digits each side, major not
 * 0) into @h. Returns SM_OK or SM_EINVAL with @errmsg. Pure. */
int act_tc_handle_parse(const char *text,
                        size_t len,
                        struct act_tc_handle *h,
                        char *errmsg);

/* Formats @h as tc does ("1:10", "1:" for minor 0) into @buf
 * (ACT_TC_TEXT_SIZE bytes). Pure, total. */
void act_tc_handle_format(struct act_tc_handle h, char *buf);

/* Parses the operator's class list, rates separated by commas
 * ("100mbit,200mbit,500mbit,1gbit"), into @c. Returns SM_OK, or SM_EINVAL
 * for an empty list, a bad rate, more than ACT_TC_MAX_CLASSES, or rates not
 * strictly increasing as tc shows them, with @errmsg naming the item and @c
 * untouched. Pure. */
int act_tc_classes_parse(const char *text,
                         size_t len,
                         struct act_tc_classes *c,
                         char *errmsg);

/* Maps the rate @bits of a class to an index in @c: the highest class whose
 * rate is at most @bits (compared as shown), or -1 when @bits is below the
 * first class. *@exact (may be NULL) tells whether the rates are equal, so
 * a class changed by hand to 300mbit maps to the 200mbit class, inexactly.
 * Pure. */
int act_tc_class_index(const struct act_tc_classes *c,
                       uint64_t bits,
                       bool *exact);

/* Parses the output of `tc -s class show dev DEV` (@len bytes at @text)
 * and fills @out with the HTB class @classid: the line "class htb 1:10
 * parent 1:1 leaf 10: prio 0 rate 100Mbit ceil 100Mbit burst 1600b cburst
 * 1600b" (or "... 1:1 root rate ..."), whose rate and ceil are required.
 * Other lines (statistics, other classes and kinds) are skipped, as are
 * tokens not described above. Returns SM_OK, SM_ENOTFOUND when no HTB class
 * @classid is listed, or SM_EMALFORMED (its line lacks rate or ceil, has a
 * bad value or a repeated key, or the class is listed twice; text longer
 * than ACT_TC_OUTPUT_MAX), with @errmsg saying why and @out untouched.
 * Pure. */
int act_tc_parse_show(const char *text,
                      size_t len,
                      struct act_tc_handle classid,
                      struct act_tc_htb *out,
                      char *errmsg);

/* Fills @tc for the class @classid ("1:10") of device @dev with the class
 * list @classes (see act_tc_classes_parse), to be changed by running
 * @tc_path (NULL: "tc", looked up in PATH). Checks only the syntax: no
 * process is run. Returns SM_OK, or SM_EINVAL (an empty or too long path or
 * device name, a device name with '/', whitespace or ':', a bad classid or
 * class list) with @errmsg saying which. Pure. */
int act_tc_init(struct act_tc *tc,
                const char *tc_path,
                const char *dev,
                const char *classid,
                const char *classes,
                char *errmsg);

/* Builds into @out the command that sets @want's rate and ceil on @tc's
 * class under @want's parent, with @want's prio, overhead and link layer
 * when they are not the defaults, and its burst and cburst when not 0:
 *   TC class change dev DEV parent P classid C htb rate R ceil R
 *     [burst Bb cburst Bb] [prio N] [overhead N] [linklayer atm]
 * Rates are formatted exactly (act_tc_rate_format). Returns SM_OK, or
 * SM_EINVAL for a rate or size out of range, with @errmsg. Pure. */
int act_tc_change_argv(const struct act_tc *tc,
                       const struct act_tc_htb *want,
                       struct act_tc_argv *out,
                       char *errmsg);

/* The availability probe: runs `TC -s class show dev DEV` and checks that
 * it works and lists @tc's HTB class. Returns SM_OK when the class can be
 * read (and so changed, permissions aside), else an error with the reason
 * in @errmsg: SM_ENOTFOUND (no tc program, no such device, no such HTB
 * class), SM_EPERM (tc not executable or not permitted), SM_ETIMEDOUT
 * (@deadline_ns passed), SM_EMALFORMED (unreadable output), SM_ETOOBIG
 * (output over ACT_TC_OUTPUT_MAX before the class), SM_ENOMEM or SM_EIO.
 * Blocks. */
int act_tc_available(const struct act_tc *tc,
                     uint64_t deadline_ns,
                     char *errmsg);

/* Reads @tc's class into @cur, and its index in @tc's class list into
 * @index (may be NULL; see act_tc_class_index(), -1 below the first class).
 * Fails as act_tc_available() does; @cur is untouched on failure. Blocks. */
int act_tc_read(const struct act_tc *tc,
                uint64_t deadline_ns,
                struct act_tc_htb *cur,
                int *index,
                char *errmsg);

/* Sets @want's rate, ceil and, when not 0, burst and cburst on @tc's class,
 * idempotently: reads the class into @prev (may be NULL) first; when tc
 * shows the same rate and ceil (and burst and cburst, if given) nothing is
 * run and *@changed is false, else `tc class change` is run with the parent,
 * prio, overhead and link layer just read, and *@changed is true. @want's
 * classid, parent, prio, overhead and link layer are ignored. To roll back,
 * call act_tc_apply() with the @prev returned: it restores rate, ceil,
 * burst and cburst as tc showed them. @changed may be NULL. Fails with
 * SM_EINVAL (a rate or size out of range: nothing run), as act_tc_read()
 * does, or when the change command fails: SM_EPERM (not permitted),
 * SM_ENOTFOUND (device or class gone), SM_ETIMEDOUT, SM_EIO (the message
 * quotes tc's first line); *@changed is then false. Blocks. */
int act_tc_apply(const struct act_tc *tc,
                 const struct act_tc_htb *want,
                 uint64_t deadline_ns,
                 struct act_tc_htb *prev,
                 bool *changed,
                 char *errmsg);

/* act_tc_apply() with rate and ceil both set to the bandwidth class
 * @index of @tc's list (burst and cburst left to tc). Fails with SM_EINVAL
 * when @index is outside the list, else as act_tc_apply(). */
int act_tc_apply_class(const struct act_tc *tc,
                       int index,
                       uint64_t deadline_ns,
                       struct act_tc_htb *prev,
                       bool *changed,
                       char *errmsg);

/* ---- LLC ways: resctrl (actuate/resctrl.c) ------------------------------- */

/* The agent gives a service more last-level cache by giving its resctrl
 * group more L3 cache ways: the group's "schemata" file holds one
 * capacity bitmask (CBM) per cache domain, "L3:0=fffff;1=fffff", and a set
 * bit is a way the group's tasks may fill. Everything works under a root
 * given by the caller ("/sys/fs/resctrl" by default), so tests use a fake
 * tree; nothing is created but the group directory itself (mkdir, as
 * resctrl wants), and group names are single path components, so no write
 * lands outside the root.
 *
 * Ways are given as contiguous masks starting at the lowest bit of
 * info/L3/cbm_mask, the same on every cache domain, with at least
 * info/L3/min_cbm_bits and at most all the bits. The schemata's other lines
 * (MB: memory bandwidth, L2:, ...) are written back unchanged. Only the L3
 * resource is handled: with code/data prioritisation on (L3CODE/L3DATA)
 * resctrl reports itself unavailable. The functions keep no global state and
 * do small blocking file I/O: call them from the agent's worker. */

/* Limits. */
#define ACT_RDT_MAX_DOMAINS   64    /* cache domains in the L3 line */
#define ACT_RDT_MAX_LINES     8     /* other schemata lines kept */
#define ACT_RDT_LINE_SIZE     512   /* one kept line, with its NUL */
#define ACT_RDT_NAME_SIZE     64    /* a group name, with its NUL */
#define ACT_RDT_FILE_TEXT_MAX 8192  /* longest resctrl file accepted */
#define ACT_RDT_MAX_PIDS      65536 /* pids moved in one call */

/* What info/L3 says about the cache. Plain data. */
struct act_rdt_info
{
    uint64_t cbm_mask;     /* all ways, e.g. 0xfffff */
    uint32_t cbm_bits;     /* how many: popcount of @cbm_mask */
    uint32_t min_cbm_bits; /* the fewest ways a mask may have */
};

/* A group's schemata, parsed. Plain data, about 5 KB.
 * - @l3_id/@l3_mask: the L3 line's domains in file order (@n_l3 of them;
 *   0 when there is no L3 line);
 * - @other: the other lines, blanks removed ("MB:0=100;1=100"), in order,
 *   and @l3_line: how many of them come before the L3 line. */
struct act_rdt_schemata
{
    size_t n_l3;
    uint32_t l3_id[ACT_RDT_MAX_DOMAINS];
    uint64_t l3_mask[ACT_RDT_MAX_DOMAINS];
    size_t l3_line;
    size_t n_other;
    char other[ACT_RDT_MAX_LINES][ACT_RDT_LINE_SIZE];
};

/* A resctrl mount: its root and its L3 info, filled by
 * act_rdt_available(). Plain data. */
struct act_rdt
{
    char root[ACT_CG_PATH_SIZE];
    struct act_rdt_info info;
};

/* Parses info/L3/cbm_mask (@mask_len bytes at @mask_text: hex, one
 * trailing newline allowed) and info/L3/min_cbm_bits (decimal) into @info.
 * Returns SM_OK, or SM_EINVAL (malformed; a mask that is zero, not
 * contiguous from bit 0 or wider than 64 bits; a minimum of 0 or above the
 * mask's width) with @errmsg saying which and @info untouched. Pure. */
int act_rdt_parse_info(const char *mask_text,
                       size_t mask_len,
                       const char *min_text,
                       size_t min_len,
                       struct act_rdt_info *info,
                       char *errmsg);

/* Parses a schemata file (@len bytes at @text). Lines are "NAME:ID=VALUE;
 * ID=VALUE..." with blanks allowed around each part (the kernel pads names
 * and values); empty lines are skipped. The L3 line's values are hex masks,
 * its domain ids distinct decimals. Returns SM_OK, or SM_EINVAL (a line
 * without ':' or with a bad name, a malformed L3 domain, a repeated L3 line
 * or domain, over a limit above, or text longer than ACT_RDT_FILE_TEXT_MAX)
 * with @errmsg naming the line and @s unspecified. Pure. */
int act_rdt_schemata_parse(const char *text,
                           size_t len,
                           struct act_rdt_schemata *s,
                           char *errmsg);

/* Formats @s as written to the kernel, one line each, the L3 line among the
 * others where it was ("MB:0=100\nL3:0=ff;1=ff\n"), masks in lower-case
 * hex without padding, into @buf (@size bytes, NUL-terminated). What
 * act_rdt_schemata_parse() reads back is equal. Returns SM_OK, SM_EINVAL
 * for counts over the limits or an unterminated line, or SM_ETOOBIG when
 * @buf is too small. Pure. */
int act_rdt_schemata_format(const struct act_rdt_schemata *s,
                            char *buf,
                            size_t size,
                            char *errmsg);

/* Returns the ways @s gives: the fewest set bits among its L3 masks (0
 * without an L3 line). Pure. */
uint32_t act_rdt_ways(const struct act_rdt_schemata *s);

/* Sets every L3 mask of @s to the contiguous mask of @ways ways at the low
 * end of @info's mask, after clamping @ways to [min_cbm_bits, cbm_bits];
 * stores the ways used in @applied (may be NULL). Fails with SM_EINVAL
 * when @s has no L3 line (@s untouched). Pure. */
int act_rdt_schemata_set_ways(struct act_rdt_schemata *s,
                              const struct act_rdt_info *info,
                              uint32_t ways,
                              uint32_t *applied,
                              char *errmsg);

/* Expands the group name template @tmpl ("sagemesh-{service}"), every
 * "{service}" replaced by @service, into @out (ACT_RDT_NAME_SIZE bytes).
 * Fails with SM_EINVAL when the result is empty, too long, holds '/',
 * a blank or a newline, is "." or "..", is a directory resctrl itself makes
 * ("info", "mon_groups", "mon_data"), or when @tmpl has another "{...}" or
 * an unmatched brace; @errmsg says why. Pure. */
int act_rdt_group_name(const char *tmpl,
                       const char *service,
                       char *out,
                       char *errmsg);

/* The availability probe: checks that resctrl is mounted at @root (NULL:
 * "/sys/fs/resctrl"; the default group's "schemata" is there), that the L3
 * resource is allocatable (info/L3/cbm_mask and min_cbm_bits parse, and the
 * default schemata has an L3 line), and fills @out. Fails with the reason
 * in @errmsg: SM_ENOTFOUND (not mounted, no L3 allocation, CDP on),
 * SM_EINVAL (a root that is too long, a file that does not parse), SM_EPERM
 * or SM_EIO (unreadable); @out is untouched then. */
int act_rdt_available(const char *root, struct act_rdt *out, char *errmsg);

/* Makes the group directory @group under @r's root if it is not there
 * (resctrl then fills it with schemata, tasks, ...). *@created (may be
 * NULL) tells whether it was made now. Fails with SM_EINVAL for a bad name
 * (see act_rdt_group_name), SM_EEXIST when the name is taken by a file,
 * SM_EPERM, SM_ENOTFOUND (the root is gone), SM_EIO (e.g. ENOSPC: no free
 * class of service left, in the message). */
int act_rdt_group_create(const struct act_rdt *r,
                         const char *group,
                         bool *created,
                         char *errmsg);

/* Removes the group directory @group (rmdir; resctrl moves its tasks back
 * to the default group). A group that is not there is fine. Fails as
 * act_rdt_group_create() does, or with SM_EIO when the directory is not
 * empty (a fake tree; resctrl's own directories always go). */
int act_rdt_group_remove(const struct act_rdt *r,
                         const char *group,
                         char *errmsg);

/* Reads @group's schemata (group "" is the default group) into @s. Fails
 * with SM_EINVAL for a bad group name or a schemata that does not parse,
 * SM_ENOTFOUND (no such group), SM_EPERM, SM_EIO; @errmsg names the file. */
int act_rdt_read(const struct act_rdt *r,
                 const char *group,
                 struct act_rdt_schemata *s,
                 char *errmsg);

/* Gives @group @ways ways (clamped, see act_rdt_schemata_set_ways) on every
 * cache domain, idempotently: reads its schemata into @prev (may be NULL),
 * and writes the new schemata, other lines unchanged, only when an L3 mask
 * differs; *@changed (may be NULL) tells whether it wrote, *@applied (may
 * be NULL) the ways given. To roll back, call act_rdt_restore() with @prev.
 * @group must be a named group, not "". Fails as act_rdt_read() does, with
 * SM_EINVAL when the schemata has no L3 line, or on a write failure with
 * SM_EPERM, SM_EINVAL (the kernel refused the mask), SM_ENOTFOUND or
 * SM_EIO; *@changed is then false. */
int act_rdt_apply_ways(const struct act_rdt *r,
                       const char *group,
                       uint32_t ways,
                       struct act_rdt_schemata *prev,
                       uint32_t *applied,
                       bool *changed,
                       char *errmsg);

/* Sets @group's L3 masks back to those of @prev, domain by domain, keeping
 * the group's other lines as they are now; idempotent like
 * act_rdt_apply_ways(). Fails with SM_EINVAL when a mask of @prev is not
 * contiguous, outside cbm_mask or below min_cbm_bits, or when @prev's
 * domains are not the group's (nothing written), else as
 * act_rdt_apply_ways(). */
int act_rdt_restore(const struct act_rdt *r,
                    const char *group,
                    const struct act_rdt_schemata *prev,
                    bool *changed,
                    char *errmsg);

/* Moves the @n processes @pids into @group ("" is the default group, to
 * move them back) by writing each pid to its "tasks" file, one write per
 * pid as resctrl requires. Pids that no longer exist (ESRCH) are skipped;
 * *@moved (may be NULL) counts the others. Optional: a group's ways apply
 * only to the tasks in it. Fails with SM_EINVAL (bad group name, a pid <= 0,
 * more than ACT_RDT_MAX_PIDS), SM_ENOTFOUND, SM_EPERM or SM_EIO at the first
 * pid that cannot be written (those before it stay moved: *@moved says how
 * many). */
int act_rdt_move_tasks(const struct act_rdt *r,
                       const char *group,
                       const int *pids,
                       size_t n,
                       size_t *moved,
                       char *errmsg);

/* ---- CPU frequency: cpufreq (actuate/cpufreq.c) ---------------------------
 */

/* The agent lets the CPUs of a service's cpuset run faster by raising their
 * cpufreq scaling_max_freq (kHz) toward a target, clamped to the hardware
 * range in cpuinfo_min_freq..cpuinfo_max_freq. Everything works under a
 * root given by the caller ("/sys/devices/system/cpu" by default: files
 * ROOT/cpuN/cpufreq/...), so tests use a fake tree; files are only opened,
 * read and written, never created. CPUs that share a cpufreq policy see
 * each other's writes; reading all first and writing back per CPU keeps a
 * rollback exact anyway. The functions keep no global state and do small
 * blocking file I/O: call them from the agent's worker. */

/* Limits. */
#define ACT_CPUFREQ_MAX_CPUS ACT_CG_MAX_CPUS /* CPU numbers are below this */

/* One CPU's frequency limits, in kHz. Plain data. */
struct act_cpufreq_cpu
{
    uint32_t cpu;
    uint32_t min_khz; /* cpuinfo_min_freq */
    uint32_t max_khz; /* cpuinfo_max_freq */
    uint32_t cur_khz; /* scaling_max_freq */
};

/* The CPUs of a cpuset, in increasing order. Plain data, about 16 KB
 * (apply and restore keep one and a 4 KB array on their stack: call them
 * on a thread with an ordinary stack). */
struct act_cpufreq
{
    size_t n;
    struct act_cpufreq_cpu cpu[ACT_CPUFREQ_MAX_CPUS];
};

/* Parses a cpufreq file's value (@len bytes at @text: decimal kHz, one
 * trailing newline allowed) into @khz. Returns SM_OK, or SM_EINVAL for
 * anything else, 0, or a value above UINT32_MAX, with @errmsg. Pure. */
int act_cpufreq_parse_khz(const char *text,
                          size_t len,
                          uint32_t *khz,
                          char *errmsg);

/* Parses a cpu list in the cpuset syntax ("0-3,6"; as act_setting.cpus
 * holds it) into @cpus, @n of them in increasing order, without
 * duplicates; @cpus has room for ACT_CPUFREQ_MAX_CPUS. Returns SM_OK, or
 * SM_EINVAL (malformed, empty, a reversed range, a CPU >=
 * ACT_CPUFREQ_MAX_CPUS) with @errmsg and @n untouched. Pure. */
int act_cpufreq_parse_cpus(const char *list,
                           uint32_t *cpus,
                           size_t *n,
                           char *errmsg);

/* The availability probe: checks that every CPU in @cpus (a cpu list) has
 * cpufreq under @root (NULL: "/sys/devices/system/cpu"), with readable
 * cpuinfo_min_freq, cpuinfo_max_freq and scaling_max_freq, and that
 * scaling_max_freq is writable: it has a write permission bit (sysfs
 * refuses writes to files without one, even to root) and access(W_OK)
 * agrees. Returns SM_OK, else the reason in @errmsg, naming the CPU and
 * file: SM_ENOTFOUND (no cpufreq: offline CPU, no driver, a VM), SM_EPERM
 * (not writable), SM_EINVAL (bad list or file content), SM_EIO. */
int act_cpufreq_available(const char *root, const char *cpus, char *errmsg);

/* Reads the frequency limits of every CPU in @cpus into @out. Fails with
 * SM_EINVAL (bad list, a file that does not parse, min above max),
 * SM_ENOTFOUND (no cpufreq for a CPU), SM_EPERM or SM_EIO, with @errmsg
 * naming the file; @out is unspecified then. */
int act_cpufreq_read(const char *root,
                     const char *cpus,
                     struct act_cpufreq *out,
                     char *errmsg);

/* Sets scaling_max_freq of every CPU in @cpus to @target_khz clamped to
 * that CPU's cpuinfo range, idempotently: reads all CPUs into @prev (may be
 * NULL) first, then writes only the CPUs whose value differs; *@changed
 * (may be NULL) tells whether anything was written. To roll back, call
 * act_cpufreq_restore() with @prev. Fails as act_cpufreq_read() does
 * (nothing written), or on a write failure with SM_EPERM, SM_EINVAL (the
 * kernel refused), SM_ENOTFOUND or SM_EIO: the CPUs written before it are
 * restored first, and *@changed is true only if that restore failed too. */
int act_cpufreq_apply(const char *root,
                      const char *cpus,
                      uint32_t target_khz,
                      struct act_cpufreq *prev,
                      bool *changed,
                      char *errmsg);

/* Writes back each CPU's scaling_max_freq from @prev (as returned by
 * act_cpufreq_apply() or act_cpufreq_read()), idempotently, with the same
 * failure handling. Fails with SM_EINVAL when @prev has more than
 * ACT_CPUFREQ_MAX_CPUS entries or a value outside the CPU's cpuinfo range
 * as read now (nothing written). */
int act_cpufreq_restore(const char *root,
                        const struct act_cpufreq *prev,
                        bool *changed,
                        char *errmsg);

#endif /* SM_ACTUATE_H */
