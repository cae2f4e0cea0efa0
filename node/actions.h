/* Actuation on one host: the controller's decisions, their durable record,
 * approval, verification and rollback (node-private).
 *
 * A diagnosis that names a culprit becomes at most one action, whose id is
 * derived from the diagnosis id, so a diagnosis made twice (a restart
 * re-diagnoses windows whose diagnosis was never stored) never gives two
 * actions. The plan rules are actuate/'s (act_plan_decide); this module
 * keeps their per-service state, runs the agent, and records every state
 * change of every action in a crash-safe log ("<data_dir>/actions", a
 * cbn_log: fdatasync per record; each record is the action's whole JSON
 * document, the newest record of an id wins at open).
 *
 * Exactly once across crashes. Before the agent applies anything the action
 * is recorded as "applying", with the value it replaces. A cgroup change
 * writes an absolute value, so after a crash an action still "applying" is
 * applied again (a no-op when the first attempt landed) and then recorded
 * "applied": its effect and its record happen once. A scale-out command is
 * not idempotent, so one found "applying" after a crash is not run again:
 * it becomes "interrupted" for the operator to check. Rollbacks go through
 * "rolling_back" the same way.
 *
 * Time. Decisions, rate limits and verification run on event time (the
 * end of the diagnosed window, and of every window after it), so replaying
 * the window log at start rebuilds the same per-service state.
 *
 * Threads. Everything here runs on the peer's loop thread. The agent's
 * reads are small sysfs reads made inline; its changes (cgroup writes,
 * operator commands that may run for seconds) are handed to an executor,
 * which runs them elsewhere and reports back with node_actions_job_done()
 * on the loop thread. */
#ifndef SM_NODE_ACTIONS_H
#define SM_NODE_ACTIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "actuate/actuate.h"
#include "base/err.h"
#include "node/textbuf.h"

#define NODE_ACTION_ID_LEN      16
#define NODE_ACTION_MEMORY_MAX  10000 /* actions held in memory */
#define NODE_ACTION_SERVICE_MAX 128   /* bytes of a service name, NUL incl. */
#define NODE_ACTION_ERROR_MAX   256   /* bytes of an error text, NUL incl. */

/* Where an action stands. Terminal: dry_run, verified, not_helped (unless
 * rolled back), rolled_back, failed, interrupted. */
enum node_action_state {
    NODE_ACTION_DRY_RUN,      /* recorded only (--actuate dry-run) */
    NODE_ACTION_PENDING,      /* waiting for `sagemesh actions approve` */
    NODE_ACTION_APPLYING,     /* handed to the agent */
    NODE_ACTION_APPLIED,      /* applied; QoS being verified */
    NODE_ACTION_VERIFIED,     /* QoS recovered within the verify windows */
    NODE_ACTION_NOT_HELPED,   /* QoS did not recover */
    NODE_ACTION_ROLLING_BACK, /* previous value handed to the agent */
    NODE_ACTION_ROLLED_BACK,  /* previous value restored */
    NODE_ACTION_FAILED,       /* the agent could not apply it */
    NODE_ACTION_INTERRUPTED,  /* a command cut short by a crash: check it */
    NODE_ACTION__COUNT
};

/* "dry_run", "pending", ...; "unknown" outside the enum. */
const char *node_action_state_name(enum node_action_state state);

/* Parses a state name. SM_OK or SM_EINVAL (@state untouched). */
int node_action_state_parse(const char *text, enum node_action_state *state);

/* One action. Plain data. */
struct node_action
{
    char id[NODE_ACTION_ID_LEN + 1];
    char diagnosis_id[NODE_ACTION_ID_LEN + 1];
    char service[NODE_ACTION_SERVICE_MAX];
    char resource[16]; /* as the diagnosis spells it */
    struct act_plan plan;
    enum act_mode mode; /* the mode it was decided in */
    enum node_action_state state;
    uint64_t window_end_ns;         /* event time of the decision */
    uint64_t decided_ns;            /* wall clock, Unix ns */
    uint64_t updated_ns;            /* wall clock of the last state change */
    uint64_t applied_window_end_ns; /* event time it took effect; 0: not */
    /* The knob value the action replaced (cgroup kinds), for rollback. */
    bool has_prev;
    struct act_setting prev;
    bool approved; /* released by an operator */
    char error[NODE_ACTION_ERROR_MAX];
};

/* Derives the action id for diagnosis @diagnosis_id: 16 hex digits. */
void node_action_id(const char *diagnosis_id, char id[NODE_ACTION_ID_LEN + 1]);

/* The agent: how a service's settings are read and changed. The real one
 * is node/agent.c (cgroups and the operator's command); tests pass fakes.
 * @read runs on the loop thread and must be quick (sysfs). @apply and
 * @restore run wherever the executor runs them; they see only the copy of
 * the action in their job. All return SM_OK or an SM_E* code with @errmsg
 * (SM_ERRMSG_SIZE bytes) filled. */
struct node_agent
{
    void *arg;
    /* Fills @cur with @service's current settings (unknown fields stay
     * unknown, see act_settings) and, for @kind's knob, the raw value to
     * restore on rollback in @prev (*@has_prev false for kinds that have
     * none, such as scale-out). */
    int (*read)(void *arg,
                const char *service,
                enum act_kind kind,
                struct act_settings *cur,
                struct act_setting *prev,
                bool *has_prev,
                char *errmsg);
    /* Sets @a's target (a->plan.to) for @a's service, idempotently for
     * cgroup kinds (an absolute value); runs the scale-out command for
     * ACT_KIND_SCALE_OUT. */
    int (*apply)(void *arg, const struct node_action *a, char *errmsg);
    /* Writes back a->prev. */
    int (*restore)(void *arg, const struct node_action *a, char *errmsg);
};

/* A change handed to the executor. The executor calls node_actions_job_run()
 * (any thread), then node_actions_job_done() on the loop thread, exactly
 * once each, unless the process dies in between. */
struct node_action_job
{
    struct node_action action; /* a copy: the job never touches the table */
    bool rollback;             /* restore instead of apply */
    int status;
    char errmsg[SM_ERRMSG_SIZE];
    const struct node_agent *agent;
};

/* Runs @job's agent call. Thread-safe (touches only @job). */
void node_actions_job_run(struct node_action_job *job);

/* Hands @job (owned by the executor until it calls node_actions_job_done)
 * to be run. The peer's executor queues it on libuv's thread pool; tests
 * run it inline or hold it to simulate a crash. */
struct node_action_executor
{
    void *arg;
    void (*submit)(void *arg, struct node_action_job *job);
};

struct node_actions_config
{
    struct act_plan_config plan; /* .mode is the --actuate mode */
    bool rollback_unhelpful;     /* roll back actions that did not help */
};

/* Figures for /metrics and /v1/status. */
struct node_actions_stats
{
    uint64_t by_state[NODE_ACTION__COUNT]; /* actions held, by state */
    uint64_t decided;                      /* actions decided by this process */
    uint64_t not_planned;  /* diagnoses for which the rules chose nothing */
    uint64_t agent_errors; /* reads and changes that failed */
    uint64_t store_errors; /* records that could not be written */
    uint64_t reapplied;    /* "applying" actions re-applied at start */
};

struct node_actions;

/* Opens (creating) the store in directory @dir and reads it back. @cfg is
 * copied; @agent and @exec are borrowed and must outlive the handle.
 * Returns SM_OK with the handle in @out (free with node_actions_close), or
 * SM_EINVAL (bad config), the errors of cbn_log_open() (SM_EEXIST: in use),
 * SM_ENOMEM; @errmsg says why. Records that do not parse are logged and
 * skipped. Nothing is re-applied until node_actions_resume(). */
int node_actions_open(const char *dir,
                      const struct node_actions_config *cfg,
                      const struct node_agent *agent,
                      const struct node_action_executor *exec,
                      struct node_actions **out,
                      char errmsg[SM_ERRMSG_SIZE]);

/* Re-submits the changes a crash cut short (see the file comment). Call
 * once, after the window log has been replayed through
 * node_actions_on_window(). */
void node_actions_resume(struct node_actions *a, uint64_t now_wall_ns);

/* The controller's answer to one diagnosis of the window ending at
 * @window_end_ns: @service's @resource was blamed (NULL service: no
 * culprit; the window is still counted). Decides with the plan rules,
 * records the action, and in mode on submits it to the agent. If the
 * diagnosis already has an action, that one is returned and nothing is
 * decided again. Stores a pointer to the action (valid until the next call
 * into this module) in @out, or NULL when nothing was decided (mode off, a
 * rule said none: logged with its reason). Returns SM_OK, or an error
 * (SM_EIO: the action could not be recorded, and was not applied). */
int node_actions_on_diagnosis(struct node_actions *a,
                              const char *diagnosis_id,
                              uint64_t window_end_ns,
                              const char *service,
                              const char *resource,
                              uint64_t now_wall_ns,
                              const struct node_action **out);

/* Feeds one closed window's QoS outcome (@violated) at event time
 * @window_end_ns to the verification of every applied action. An action
 * whose verdict this settles is recorded verified or not_helped; with
 * rollback_unhelpful, a local step that did not help is rolled back.
 * Windows at or before an action's own window are ignored, so replayed
 * history is counted once. */
void node_actions_on_window(struct node_actions *a,
                            uint64_t window_end_ns,
                            bool violated,
                            uint64_t now_wall_ns);

/* Completes @job on the loop thread: records the outcome and frees
 * nothing (the executor owns @job). */
void node_actions_job_done(struct node_actions *a,
                           struct node_action_job *job,
                           uint64_t now_wall_ns);

/* Releases the pending action @id to the agent. Returns SM_OK;
 * SM_ENOTFOUND (no such action); SM_ECONFLICT when it is not pending (the
 * message says its state); SM_EIO when it cannot be recorded. */
int node_actions_approve(struct node_actions *a,
                         const char *id,
                         uint64_t now_wall_ns,
                         char errmsg[SM_ERRMSG_SIZE]);

/* Restores the value action @id replaced. Returns SM_OK once handed to the
 * agent; SM_ENOTFOUND; SM_ECONFLICT when it was not applied, is a
 * scale-out, or is already rolled back (the message says which); SM_EIO. */
int node_actions_rollback(struct node_actions *a,
                          const char *id,
                          uint64_t now_wall_ns,
                          char errmsg[SM_ERRMSG_SIZE]);

/* The action @id, or NULL. */
const struct node_action *node_actions_get(const struct node_actions *a,
                                           const char *id);

/* Appends the JSON document of @act to @b (docs/http-api.md). */
void node_action_write_json(struct node_text *b, const struct node_action *act);

/* Appends the short form a diagnosis carries as its "action": id, kind,
 * from, to and the mode it was decided in (docs/http-api.md). */
void node_action_write_summary(struct node_text *b,
                               const struct node_action *act);

/* Appends {"actions":[...]} with the @limit newest actions (by decision),
 * only those in @state unless @state is NULL, to @b. */
void node_actions_list(const struct node_actions *a,
                       size_t limit,
                       const enum node_action_state *state,
                       struct node_text *b);

/* Copies the figures into @out. */
void node_actions_stats(const struct node_actions *a,
                        struct node_actions_stats *out);

/* The mode the controller runs in. */
enum act_mode node_actions_mode(const struct node_actions *a);

/* Parses one stored record (the action's JSON, @len bytes borrowed) into
 * @act. SM_OK or SM_EMALFORMED with @errmsg. Exposed for the fuzz target. */
int node_action_parse(const uint8_t *json,
                      size_t len,
                      struct node_action *act,
                      char errmsg[SM_ERRMSG_SIZE]);

/* Sees every state an action is recorded in, after it is durable here
 * (the mesh copies decisions into the replicated log). */
typedef void (*node_actions_observer)(void *arg, const struct node_action *act);

/* Calls @cb for the @limit newest actions, newest first (as if each had
 * just been recorded: re-offers them to the mesh after a restart). */
void node_actions_each_newest(const struct node_actions *a,
                              size_t limit,
                              node_actions_observer cb,
                              void *arg);

/* Installs @cb (NULL: none). */
void node_actions_set_observer(struct node_actions *a,
                               node_actions_observer cb,
                               void *arg);

/* Closes the log and frees @a; NULL is a no-op. Jobs still with the
 * executor must be done or abandoned first. */
void node_actions_close(struct node_actions *a);

#endif /* SM_NODE_ACTIONS_H */
