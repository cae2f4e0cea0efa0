/* The actuation agent of one host: a service's cgroups, its tc HTB class,
 * its resctrl group's LLC ways, its CPUs' cpufreq limit and the operator's
 * scale-out command, behind the node_agent interface of actions.h
 * (node-private).
 *
 * tc, resctrl and cpufreq are optional: a host without them opens the agent
 * all the same; reads leave the matching settings unknown (so the plan
 * rules never pick those knobs), and a read for, or an apply or restore of,
 * an action on them fails with SM_ENOTFOUND and the reason ("tc is not
 * configured for service web: set --tc-dev and --tc-class", "resctrl is not
 * mounted at ...", "cpufreq is not writable: ...").
 *
 * Rollback of net_class, llc_ways and cpu_freq actions restores the value
 * the plan started from (plan.from: a class index, ways, kHz), not a raw
 * copy: a class whose rate matched no listed class comes back as the class
 * below it, with rate = ceil; ways come back as the same number of ways at
 * the low end of the mask; every CPU of the cpuset gets the same limit. For
 * cpu_freq, node_action.prev keeps the CPU list (knob cpuset) so a rollback
 * touches the CPUs the action raised even if the cpuset changed since.
 *
 * Blocking. read() runs tc (`tc -s class show`, at most 2 s) for services
 * with a --tc-class, on the caller's thread: the peer's loop, once or twice
 * per diagnosis. Everything else read() does is small sysfs reads. */
#ifndef SM_NODE_AGENT_H
#define SM_NODE_AGENT_H

#include "base/err.h"
#include "node/actions.h"

struct node_agent_config
{
    const char *cgroup_root; /* NULL: /sys/fs/cgroup */
    /* Path of a service's cgroup under each hierarchy, with {service}
     * (e.g. "system.slice/{service}.service"); NULL: the cgroup of the
     * process whose name is the service's (cut to 15 bytes). */
    const char *cgroup_path;
    const char *proc_root;     /* NULL: /proc (tests pass a fake) */
    const char *scale_out_cmd; /* template ({service}, {instance},
                                  {resource}, {amount}); NULL: none */
    double command_timeout_s;  /* deadline of one command run */
    /* tc HTB classes: the device (NULL: no bandwidth actions), the class
     * list ("100mbit,200mbit,500mbit,1gbit", increasing), @n_tc_class
     * entries "SERVICE=CLASSID" ("web=1:10") and the program (NULL:
     * "tc"). */
    const char *tc_dev;
    const char *tc_classes;
    const char *const *tc_class;
    size_t n_tc_class;
    const char *tc_path;
    const char *resctrl_root;  /* NULL: /sys/fs/resctrl */
    const char *resctrl_group; /* with {service}; NULL: sagemesh-{service} */
    const char *cpufreq_root;  /* NULL: /sys/devices/system/cpu */
};

struct node_real_agent;

/* Opens the agent: detects the cgroup layout under cgroup_root (a host
 * without cgroups still gets an agent, whose reads fail with the reason;
 * the reason is then in @errmsg and *@cgroups_ok is 0), checks the
 * command template and the tc settings (syntax only: tc is not run), and
 * probes resctrl for its number of ways (absent is fine). Strings are
 * copied. Returns SM_OK with the agent in @out (free with
 * node_agent_close), SM_EMALFORMED/SM_ETOOBIG for a bad template, SM_EINVAL
 * for bad tc settings or resctrl group template (@errmsg says which),
 * SM_ENOMEM. */
int node_agent_open(const struct node_agent_config *cfg,
                    struct node_real_agent **out,
                    int *cgroups_ok,
                    char errmsg[SM_ERRMSG_SIZE]);

/* The node_agent interface over @ag (borrowed: lives as long as @ag). */
const struct node_agent *node_agent_ops(struct node_real_agent *ag);

/* "v1", "v2" or "none": the layout found at open. */
const char *node_agent_layout(const struct node_real_agent *ag);

/* Caps @plan to what @ag can reach: max_net_class to the last class of
 * --tc-classes when tc is configured, and max_llc_ways to the L3 ways
 * resctrl had at open when it was mounted (a lower cap already set stays).
 * Without them the plan would step past the end of the class list, or
 * "raise" ways the cache does not have. */
void node_agent_plan_limits(const struct node_real_agent *ag,
                            struct act_plan_config *plan);

/* Frees @ag; NULL is a no-op. */
void node_agent_close(struct node_real_agent *ag);

#endif /* SM_NODE_AGENT_H */
