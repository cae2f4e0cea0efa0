/* actuate: from a diagnosed culprit to a corrective action on its host. */
#ifndef SM_ACTUATE_H
#define SM_ACTUATE_H

/* How a peer treats the actions its controller decides (`--actuate`):
 * - dry-run: log and record what would be done, change nothing (default);
 * - on: apply actions;
 * - off: do not even plan actions. */
enum act_mode { ACT_MODE_DRY_RUN, ACT_MODE_ON, ACT_MODE_OFF };

#define ACT_MODE_DEFAULT ACT_MODE_DRY_RUN

/* Parses "dry-run", "on" or "off" into @mode. Returns SM_OK, or SM_EINVAL
 * leaving @mode untouched. */
int act_mode_parse(const char *text, enum act_mode *mode);

/* Returns the flag spelling of @mode ("dry-run", "on", "off"), or "unknown"
 * for a value outside the enum. */
const char *act_mode_name(enum act_mode mode);

/* ---- The agent: cgroups (actuate/cgroup.c) ------------------------------ */

/* ---- The controller: plans (actuate/plan.c) ------------------------------ */

/* ---- Operator commands (actuate/command.c) ------------------------------- */

#endif /* SM_ACTUATE_H */
