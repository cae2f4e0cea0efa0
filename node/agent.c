/* The actuation agent of one host: cgroup knobs and the operator's
 * scale-out command. */
#include "node/agent.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "actuate/actuate.h"
#include "base/alloc.h"

#define CMD_OUTPUT_MAX 4096

struct node_real_agent
{
    struct node_agent ops;
    struct act_cg *cg; /* NULL: no cgroups on this host */
    char cg_reason[SM_ERRMSG_SIZE];
    char *cgroup_path;
    char *proc_root;
    char *scale_out_cmd;
    double command_timeout_s;
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
    if (rv != SM_OK) {
        return rv;
    }
    read_settings(ag, &g, cur);
    switch (kind) {
        case ACT_KIND_NONE:
        case ACT_KIND_SCALE_OUT:
            return SM_OK;
        case ACT_KIND_CPU_QUOTA:
        case ACT_KIND_MEMORY_LIMIT:
        case ACT_KIND_IO_WEIGHT:
            rv = act_cg_read(ag->cg, &g, knob_of(kind), prev, errmsg);
            *has_prev = rv == SM_OK;
            return rv;
        default:
            sm_errmsg_printf(errmsg, "this agent cannot change %s",
                             act_kind_name(kind));
            return SM_ENOTYET;
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

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
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
    uint64_t deadline = mono_ns() + (uint64_t)(ag->command_timeout_s * 1e9);
    rv = act_cmd_run(argv, deadline, CMD_OUTPUT_MAX, &res, errmsg);
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
    if (a->plan.kind == ACT_KIND_SCALE_OUT) {
        return run_scale_out(ag, a, errmsg);
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

int node_agent_open(const struct node_agent_config *cfg,
                    struct node_real_agent **out,
                    int *cgroups_ok,
                    char errmsg[SM_ERRMSG_SIZE])
{
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
    ag->command_timeout_s =
        cfg->command_timeout_s > 0 ? cfg->command_timeout_s : 120;
    if (failed) {
        node_agent_close(ag);
        return SM_ENOMEM;
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
    sm_free(ag);
}
