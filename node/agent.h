/* The actuation agent of one host: a service's cgroups and the operator's
 * scale-out command, behind the node_agent interface of actions.h
 * (node-private). */
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
};

struct node_real_agent;

/* Opens the agent: detects the cgroup layout under cgroup_root (a host
 * without cgroups still gets an agent, whose reads fail with the reason;
 * the reason is then in @errmsg and *@cgroups_ok is 0) and checks the
 * command template. Strings are copied. Returns SM_OK with the agent in
 * @out (free with node_agent_close), SM_EMALFORMED/SM_ETOOBIG for a bad
 * template (@errmsg says where), SM_ENOMEM. */
int node_agent_open(const struct node_agent_config *cfg,
                    struct node_real_agent **out,
                    int *cgroups_ok,
                    char errmsg[SM_ERRMSG_SIZE]);

/* The node_agent interface over @ag (borrowed: lives as long as @ag). */
const struct node_agent *node_agent_ops(struct node_real_agent *ag);

/* "v1", "v2" or "none": the layout found at open. */
const char *node_agent_layout(const struct node_real_agent *ag);

/* Frees @ag; NULL is a no-op. */
void node_agent_close(struct node_real_agent *ag);

#endif /* SM_NODE_AGENT_H */
