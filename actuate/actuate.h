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

/* Parses "dry-run", "on", "off" or "approve" into @mode. Returns SM_OK, or SM_EINVAL
 * leaving @mode untouched. */
int act_mode_parse(const char *text, enum act_mode *mode);

/* Returns the flag spelling of @mode ("dry-run", "on", "off", "approve"), or "unknown"
 * for a value outside the enum. */
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
 * (scale_out: to - from is the number of replicas to add). */
enum act_kind {
    ACT_KIND_NONE,
    ACT_KIND_CPU_QUOTA,
    ACT_KIND_MEMORY_LIMIT,
    ACT_KIND_IO_WEIGHT,
    ACT_KIND_NET_CLASS,
    ACT_KIND_LLC_WAYS,
    ACT_KIND_SCALE_OUT,
    ACT_KIND__COUNT
};

/* Returns "none", "cpu_quota", "memory_limit", "io_weight", "net_class",
 * "llc_ways" or "scale_out", or "unknown" for a value outside the enum. */
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
 * planned (the plan is none, with the reason). */
struct act_settings
{
    double cpu_cores;      /* CPU quota in cores; <= 0: unknown or unlimited */
    uint64_t memory_bytes; /* memory limit; 0: unknown */
    uint32_t io_weight;    /* io/blkio weight; 0: unknown */
    int net_class;         /* bandwidth class index; < 0: unknown */
    uint32_t llc_ways;     /* LLC ways; 0: unknown */
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

/* ---- Network bandwidth: tc HTB classes (actuate/tc.c) --------------------- */

/* ---- LLC ways: resctrl (actuate/resctrl.c) ------------------------------- */

/* ---- CPU frequency: cpufreq (actuate/cpufreq.c) --------------------------- */

#endif /* SM_ACTUATE_H */
