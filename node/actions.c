/* Actuation on one host: decisions, their durable record, approval,
 * verification and rollback. See actions.h for the contract. */
#include "node/actions.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/arena.h"
#include "base/log.h"
#include "cbn/cbn.h"
#include "node/json.h"

#define MOD          "actions"
#define MAX_RECORD   (64u << 10)
#define RETAIN_BYTES (64ull << 20)
#define PARSE_ARENA  (256u << 10)

static const char *const state_names[NODE_ACTION__COUNT] = {
    [NODE_ACTION_DRY_RUN] = "dry_run",
    [NODE_ACTION_PENDING] = "pending",
    [NODE_ACTION_APPLYING] = "applying",
    [NODE_ACTION_APPLIED] = "applied",
    [NODE_ACTION_VERIFIED] = "verified",
    [NODE_ACTION_NOT_HELPED] = "not_helped",
    [NODE_ACTION_ROLLING_BACK] = "rolling_back",
    [NODE_ACTION_ROLLED_BACK] = "rolled_back",
    [NODE_ACTION_FAILED] = "failed",
    [NODE_ACTION_INTERRUPTED] = "interrupted",
};

const char *node_action_state_name(enum node_action_state state)
{
    if ((unsigned)state >= NODE_ACTION__COUNT) {
        return "unknown";
    }
    return state_names[state];
}

int node_action_state_parse(const char *text, enum node_action_state *state)
{
    for (int i = 0; i < NODE_ACTION__COUNT; i++) {
        if (strcmp(text, state_names[i]) == 0) {
            *state = (enum node_action_state)i;
            return SM_OK;
        }
    }
    return SM_EINVAL;
}

/* A splitmix64 finaliser over FNV-1a: the same diagnosis always gives the
 * same action id, and it differs from the diagnosis id itself. */
void node_action_id(const char *diagnosis_id, char id[NODE_ACTION_ID_LEN + 1])
{
    uint64_t h = UINT64_C(0xcbf29ce484222325);
    for (const char *c = "action:"; *c != '\0'; c++) {
        h = (h ^ (unsigned char)*c) * UINT64_C(0x100000001b3);
    }
    for (const char *c = diagnosis_id; *c != '\0'; c++) {
        h = (h ^ (unsigned char)*c) * UINT64_C(0x100000001b3);
    }
    h ^= h >> 30;
    h *= UINT64_C(0xbf58476d1ce4e5b9);
    h ^= h >> 27;
    h *= UINT64_C(0x94d049bb133111eb);
    h ^= h >> 31;
    snprintf(id, NODE_ACTION_ID_LEN + 1, "%016" PRIx64, h);
}

/* The controller's memory of one service. */
struct service_state
{
    char service[NODE_ACTION_SERVICE_MAX];
    struct act_service_state st;
    uint64_t last_window_ns; /* newest window counted for it */
    size_t last_action;      /* index + 1 of its newest counted action */
};

/* An action and whether the plan state has counted it yet (replay). */
struct entry
{
    struct node_action act;
    bool counted;
    /* The state a rollback in progress started from (memory only: after
     * a restart a failed rollback falls back to applied). */
    enum node_action_state before_rollback;
};

struct node_actions
{
    struct node_actions_config cfg;
    const struct node_agent *agent;
    const struct node_action_executor *exec;
    struct cbn_log *log;
    struct entry *acts; /* in decision order */
    size_t n, cap;
    struct service_state *svcs;
    size_t n_svcs, cap_svcs;
    uint64_t newest_window_ns;
    uint64_t skipped;
    struct node_actions_stats stats;
    node_actions_observer observer;
    void *observer_arg;
};

void node_actions_each_newest(const struct node_actions *a,
                              size_t limit,
                              node_actions_observer cb,
                              void *arg)
{
    for (size_t k = 0; k < limit && k < a->n; k++) {
        cb(arg, &a->acts[a->n - 1 - k].act);
    }
}

void node_actions_set_observer(struct node_actions *a,
                               node_actions_observer cb,
                               void *arg)
{
    a->observer = cb;
    a->observer_arg = arg;
}

/* ---- JSON ---------------------------------------------------------------- */

static const char *kind_unit(enum act_kind kind)
{
    switch (kind) {
        case ACT_KIND_CPU_QUOTA:
            return "cores";
        case ACT_KIND_MEMORY_LIMIT:
            return "bytes";
        case ACT_KIND_IO_WEIGHT:
            return "weight";
        case ACT_KIND_NET_CLASS:
            return "class";
        case ACT_KIND_LLC_WAYS:
            return "ways";
        case ACT_KIND_SCALE_OUT:
            return "replicas";
        case ACT_KIND_CPU_FREQ:
            return "khz";
        default:
            return "none";
    }
}

static void put_prev(struct node_text *b, const struct node_action *act)
{
    if (!act->has_prev) {
        node_text_puts(b, "null");
        return;
    }
    const struct act_setting *s = &act->prev;
    node_text_puts(b, "{\"knob\":");
    node_text_json_str(b, act_knob_name(s->knob));
    node_text_printf(
        b,
        ",\"unlimited\":%s,\"value\":\"%" PRIu64 "\",\"period\":\"%" PRIu64
        "\",\"native\":\"%" PRIu64 "\",\"cpus\":",
        s->unlimited ? "true" : "false", s->value, s->period, s->native);
    node_text_json_str(b, s->cpus);
    node_text_puts(b, "}");
}

void node_action_write_json(struct node_text *b, const struct node_action *act)
{
    node_text_puts(b, "{\"id\":");
    node_text_json_str(b, act->id);
    node_text_puts(b, ",\"diagnosis_id\":");
    node_text_json_str(b, act->diagnosis_id);
    node_text_puts(b, ",\"service\":");
    node_text_json_str(b, act->service);
    node_text_puts(b, ",\"resource\":");
    node_text_json_str(b, act->resource);
    node_text_puts(b, ",\"kind\":");
    node_text_json_str(b, act_kind_name(act->plan.kind));
    node_text_puts(b, ",\"from\":");
    node_text_json_num(b, "%.17g", act->plan.from);
    node_text_puts(b, ",\"to\":");
    node_text_json_num(b, "%.17g", act->plan.to);
    node_text_puts(b, ",\"unit\":");
    node_text_json_str(b, kind_unit(act->plan.kind));
    node_text_puts(b, ",\"reason\":");
    node_text_json_str(b, act->plan.reason);
    node_text_puts(b, ",\"mode\":");
    node_text_json_str(b, act_mode_name(act->mode));
    node_text_puts(b, ",\"state\":");
    node_text_json_str(b, node_action_state_name(act->state));
    node_text_printf(
        b,
        ",\"approved\":%s,\"window_end_unix_nano\":\"%" PRIu64
        "\",\"decided_unix_nano\":\"%" PRIu64
        "\",\"updated_unix_nano\":\"%" PRIu64
        "\",\"applied_window_end_unix_nano\":\"%" PRIu64 "\",\"prev\":",
        act->approved ? "true" : "false", act->window_end_ns, act->decided_ns,
        act->updated_ns, act->applied_window_end_ns);
    put_prev(b, act);
    node_text_puts(b, ",\"error\":");
    if (act->error[0] != '\0') {
        node_text_json_str(b, act->error);
    } else {
        node_text_puts(b, "null");
    }
    node_text_puts(b, "}");
}

void node_action_write_summary(struct node_text *b,
                               const struct node_action *act)
{
    node_text_puts(b, "{\"id\":");
    node_text_json_str(b, act->id);
    node_text_puts(b, ",\"kind\":");
    node_text_json_str(b, act_kind_name(act->plan.kind));
    node_text_puts(b, ",\"from\":");
    node_text_json_num(b, "%.6g", act->plan.from);
    node_text_puts(b, ",\"to\":");
    node_text_json_num(b, "%.6g", act->plan.to);
    node_text_puts(b, ",\"mode\":");
    node_text_json_str(b, act_mode_name(act->mode));
    node_text_puts(b, "}");
}

/* Copies string member @key of @obj into @dst (@cap bytes). */
static int get_str(const struct node_json *obj,
                   const char *key,
                   char *dst,
                   size_t cap,
                   int required)
{
    const struct node_json *v = node_json_get(obj, key);
    if (v == NULL || v->type == NODE_JSON_NULL) {
        if (required) {
            return SM_EMALFORMED;
        }
        dst[0] = '\0';
        return SM_OK;
    }
    const char *s = node_json_str(v);
    if (s == NULL || v->len >= cap || strlen(s) != v->len) {
        return SM_EMALFORMED;
    }
    memcpy(dst, s, v->len + 1);
    return SM_OK;
}

static int get_u64(const struct node_json *obj, const char *key, uint64_t *out)
{
    const struct node_json *v = node_json_get(obj, key);
    return v != NULL ? node_json_u64(v, out) : SM_EMALFORMED;
}

static int get_bool(const struct node_json *obj, const char *key, bool *out)
{
    const struct node_json *v = node_json_get(obj, key);
    if (v == NULL || v->type != NODE_JSON_BOOL) {
        return SM_EMALFORMED;
    }
    *out = v->boolean != 0;
    return SM_OK;
}

static int get_num(const struct node_json *obj, const char *key, double *out)
{
    const struct node_json *v = node_json_get(obj, key);
    if (v == NULL || node_json_double(v, out) != SM_OK || !isfinite(*out)) {
        return SM_EMALFORMED;
    }
    return SM_OK;
}

static int parse_kind(const char *name, enum act_kind *kind)
{
    for (int k = 0; k < ACT_KIND__COUNT; k++) {
        if (strcmp(name, act_kind_name((enum act_kind)k)) == 0) {
            *kind = (enum act_kind)k;
            return SM_OK;
        }
    }
    return SM_EMALFORMED;
}

static int parse_knob(const char *name, enum act_knob *knob)
{
    for (int k = 0; k < ACT_KNOB__COUNT; k++) {
        if (strcmp(name, act_knob_name((enum act_knob)k)) == 0) {
            *knob = (enum act_knob)k;
            return SM_OK;
        }
    }
    return SM_EMALFORMED;
}

static int parse_prev(const struct node_json *v, struct node_action *act)
{
    act->has_prev = false;
    if (v == NULL || v->type == NODE_JSON_NULL) {
        return SM_OK;
    }
    char knob[32];
    struct act_setting *s = &act->prev;
    if (v->type != NODE_JSON_OBJECT ||
        get_str(v, "knob", knob, sizeof knob, 1) != SM_OK ||
        parse_knob(knob, &s->knob) != SM_OK ||
        get_bool(v, "unlimited", &s->unlimited) != SM_OK ||
        get_u64(v, "value", &s->value) != SM_OK ||
        get_u64(v, "period", &s->period) != SM_OK ||
        get_u64(v, "native", &s->native) != SM_OK ||
        get_str(v, "cpus", s->cpus, sizeof s->cpus, 1) != SM_OK) {
        return SM_EMALFORMED;
    }
    act->has_prev = true;
    return SM_OK;
}

static int parse_fields(const struct node_json *root, struct node_action *act)
{
    char kind[32], mode[16], state[32];
    enum act_mode m;
    enum node_action_state st;
    if (root->type != NODE_JSON_OBJECT ||
        get_str(root, "id", act->id, sizeof act->id, 1) != SM_OK ||
        strlen(act->id) != NODE_ACTION_ID_LEN ||
        get_str(root, "diagnosis_id", act->diagnosis_id,
                sizeof act->diagnosis_id, 1) != SM_OK ||
        get_str(root, "service", act->service, sizeof act->service, 1) !=
            SM_OK ||
        act->service[0] == '\0' ||
        get_str(root, "resource", act->resource, sizeof act->resource, 1) !=
            SM_OK ||
        get_str(root, "kind", kind, sizeof kind, 1) != SM_OK ||
        parse_kind(kind, &act->plan.kind) != SM_OK ||
        get_num(root, "from", &act->plan.from) != SM_OK ||
        get_num(root, "to", &act->plan.to) != SM_OK ||
        get_str(root, "reason", act->plan.reason, sizeof act->plan.reason, 1) !=
            SM_OK ||
        get_str(root, "mode", mode, sizeof mode, 1) != SM_OK ||
        act_mode_parse(mode, &m) != SM_OK ||
        get_str(root, "state", state, sizeof state, 1) != SM_OK ||
        node_action_state_parse(state, &st) != SM_OK ||
        get_bool(root, "approved", &act->approved) != SM_OK ||
        get_u64(root, "window_end_unix_nano", &act->window_end_ns) != SM_OK ||
        get_u64(root, "decided_unix_nano", &act->decided_ns) != SM_OK ||
        get_u64(root, "updated_unix_nano", &act->updated_ns) != SM_OK ||
        get_u64(root, "applied_window_end_unix_nano",
                &act->applied_window_end_ns) != SM_OK ||
        parse_prev(node_json_get(root, "prev"), act) != SM_OK ||
        get_str(root, "error", act->error, sizeof act->error, 0) != SM_OK) {
        return SM_EMALFORMED;
    }
    act->mode = m;
    act->state = st;
    return SM_OK;
}

int node_action_parse(const uint8_t *json,
                      size_t len,
                      struct node_action *act,
                      char errmsg[SM_ERRMSG_SIZE])
{
    struct sm_arena arena;
    sm_arena_init(&arena, PARSE_ARENA);
    const struct node_json *root;
    struct node_action tmp;
    memset(&tmp, 0, sizeof tmp);
    int rv = node_json_parse(json, len, &arena, &root, errmsg);
    if (rv == SM_OK && parse_fields(root, &tmp) != SM_OK) {
        sm_errmsg_printf(errmsg,
                         "an action record lacks a field or has a "
                         "bad value");
        rv = SM_EMALFORMED;
    } else if (rv != SM_OK) {
        rv = rv == SM_ENOMEM ? SM_ENOMEM : SM_EMALFORMED;
    }
    sm_arena_free(&arena);
    if (rv == SM_OK) {
        *act = tmp;
    }
    return rv;
}

/* ---- The table ----------------------------------------------------------- */

static bool is_terminal(enum node_action_state s)
{
    return s == NODE_ACTION_DRY_RUN || s == NODE_ACTION_VERIFIED ||
           s == NODE_ACTION_NOT_HELPED || s == NODE_ACTION_ROLLED_BACK ||
           s == NODE_ACTION_FAILED || s == NODE_ACTION_INTERRUPTED;
}

static struct entry *find(const struct node_actions *a, const char *id)
{
    for (size_t i = a->n; i-- > 0;) {
        if (strcmp(a->acts[i].act.id, id) == 0) {
            return &a->acts[i];
        }
    }
    return NULL;
}

const struct node_action *node_actions_get(const struct node_actions *a,
                                           const char *id)
{
    const struct entry *e = find(a, id);
    return e != NULL ? &e->act : NULL;
}

/* Makes room for one more action: grows the table, or past the memory
 * bound forgets the oldest finished action (it stays in the log). */
static int make_room(struct node_actions *a)
{
    if (a->n == NODE_ACTION_MEMORY_MAX) {
        for (size_t i = 0; i < a->n; i++) {
            if (is_terminal(a->acts[i].act.state)) {
                memmove(&a->acts[i], &a->acts[i + 1],
                        (a->n - i - 1) * sizeof a->acts[0]);
                a->n--;
                for (size_t s = 0; s < a->n_svcs; s++) {
                    size_t *last = &a->svcs[s].last_action;
                    if (*last == i + 1) {
                        *last = 0;
                    } else if (*last > i + 1) {
                        (*last)--;
                    }
                }
                return SM_OK;
            }
        }
        return SM_ETOOBIG; /* 10000 unfinished actions: refuse more */
    }
    if (a->n == a->cap) {
        size_t cap = a->cap ? 2 * a->cap : 64;
        struct entry *acts = sm_realloc(a->acts, cap * sizeof *acts);
        if (acts == NULL) {
            return SM_ENOMEM;
        }
        a->acts = acts;
        a->cap = cap;
    }
    return SM_OK;
}

static struct service_state *service_state_of(struct node_actions *a,
                                              const char *name)
{
    for (size_t i = 0; i < a->n_svcs; i++) {
        if (strcmp(a->svcs[i].service, name) == 0) {
            return &a->svcs[i];
        }
    }
    if (a->n_svcs == a->cap_svcs) {
        size_t cap = a->cap_svcs ? 2 * a->cap_svcs : 16;
        struct service_state *s = sm_realloc(a->svcs, cap * sizeof *s);
        if (s == NULL) {
            return NULL;
        }
        a->svcs = s;
        a->cap_svcs = cap;
    }
    struct service_state *s = &a->svcs[a->n_svcs++];
    memset(s, 0, sizeof *s);
    snprintf(s->service, sizeof s->service, "%s", name);
    act_service_state_init(&s->st);
    return s;
}

/* Writes @act's current document to the log. */
static int record(struct node_actions *a, const struct node_action *act)
{
    struct node_text doc = {0};
    node_action_write_json(&doc, act);
    char *json;
    size_t len;
    char err[SM_ERRMSG_SIZE] = "";
    int rv = node_text_take(&doc, &json, &len);
    if (rv == SM_OK) {
        rv = cbn_log_append(a->log, act->window_end_ns, (const uint8_t *)json,
                            len, err);
        free(json);
    }
    if (rv == SM_OK && a->observer != NULL) {
        a->observer(a->observer_arg, act);
    }
    if (rv != SM_OK) {
        a->stats.store_errors++;
        sm_log(SM_LOG_ERROR, MOD, "cannot record an action",
               "id=%s state=%s error=%s cause=\"%s\"", act->id,
               node_action_state_name(act->state), sm_errname(rv), err);
    }
    return rv;
}

/* Moves @e to @state and records it; on a record failure the state in
 * memory changes anyway (the peer keeps serving it) and the error is
 * returned. */
static int set_state(struct node_actions *a,
                     struct entry *e,
                     enum node_action_state state,
                     const char *error,
                     uint64_t now_wall_ns)
{
    e->act.state = state;
    e->act.updated_ns = now_wall_ns;
    snprintf(e->act.error, sizeof e->act.error, "%s", error ? error : "");
    return record(a, &e->act);
}

/* Counts @e in its service's plan state (it took effect at
 * applied_window_end_ns). */
static void count_action(struct node_actions *a, struct entry *e)
{
    struct service_state *s = service_state_of(a, e->act.service);
    if (s == NULL) {
        return;
    }
    act_plan_record_applied(&s->st, &e->act.plan, e->act.applied_window_end_ns);
    s->last_action = (size_t)(e - a->acts) + 1;
    e->counted = true;
}

/* Counts, in decision order, the actions that took effect before event
 * time @before_ns (replay) or all of them (@before_ns == UINT64_MAX). */
static void count_due(struct node_actions *a, uint64_t before_ns)
{
    for (size_t i = 0; i < a->n; i++) {
        struct entry *e = &a->acts[i];
        if (!e->counted && e->act.applied_window_end_ns != 0 &&
            e->act.applied_window_end_ns < before_ns) {
            count_action(a, e);
        }
    }
}

/* ---- The agent's jobs ---------------------------------------------------- */

void node_actions_job_run(struct node_action_job *job)
{
    const struct node_agent *ag = job->agent;
    job->errmsg[0] = '\0';
    job->status = job->rollback
                      ? ag->restore(ag->arg, &job->action, job->errmsg)
                      : ag->apply(ag->arg, &job->action, job->errmsg);
}

static void submit(struct node_actions *a, const struct entry *e, bool rollback)
{
    struct node_action_job *job = sm_calloc(1, sizeof *job);
    if (job == NULL) {
        /* The action stays applying/rolling back: the next start retries. */
        sm_log(SM_LOG_ERROR, MOD,
               "out of memory handing an action to the agent", "id=%s",
               e->act.id);
        return;
    }
    job->action = e->act;
    job->rollback = rollback;
    job->agent = a->agent;
    a->exec->submit(a->exec->arg, job);
}

void node_actions_job_done(struct node_actions *a,
                           struct node_action_job *job,
                           uint64_t now_wall_ns)
{
    struct entry *e = find(a, job->action.id);
    if (e == NULL) {
        return; /* forgotten meanwhile: its log record stands */
    }
    enum node_action_state want =
        job->rollback ? NODE_ACTION_ROLLING_BACK : NODE_ACTION_APPLYING;
    if (e->act.state != want) {
        return;
    }
    if (job->status != SM_OK) {
        a->stats.agent_errors++;
        sm_log(SM_LOG_ERROR, MOD,
               job->rollback ? "rollback failed" : "action failed",
               "id=%s service=%s kind=%s error=%s cause=\"%s\"", e->act.id,
               e->act.service, act_kind_name(e->act.plan.kind),
               sm_errname(job->status), job->errmsg);
        char why[NODE_ACTION_ERROR_MAX];
        snprintf(why, sizeof why, "%s%.*s", job->rollback ? "rollback: " : "",
                 (int)(sizeof why - 11), job->errmsg);
        /* A failed rollback leaves the action as it was. */
        set_state(a, e, job->rollback ? e->before_rollback : NODE_ACTION_FAILED,
                  why, now_wall_ns);
        return;
    }
    sm_log(SM_LOG_WARN, MOD,
           job->rollback ? "action rolled back" : "action applied",
           "id=%s service=%s kind=%s from=%g to=%g", e->act.id, e->act.service,
           act_kind_name(e->act.plan.kind), e->act.plan.from, e->act.plan.to);
    set_state(a, e,
              job->rollback ? NODE_ACTION_ROLLED_BACK : NODE_ACTION_APPLIED,
              NULL, now_wall_ns);
}

/* ---- Open and resume ----------------------------------------------------- */

static int replay_one(void *arg,
                      uint64_t time_ns,
                      const uint8_t *payload,
                      size_t len)
{
    struct node_actions *a = arg;
    (void)time_ns;
    struct node_action act;
    char err[SM_ERRMSG_SIZE] = "";
    if (node_action_parse(payload, len, &act, err) != SM_OK) {
        a->skipped++;
        return 0;
    }
    struct entry *e = find(a, act.id);
    if (e == NULL) {
        if (make_room(a) != SM_OK) {
            a->skipped++;
            return 0;
        }
        e = &a->acts[a->n++];
        e->counted = false;
        e->before_rollback = NODE_ACTION_APPLIED;
    }
    e->act = act;
    return 0;
}

int node_actions_open(const char *dir,
                      const struct node_actions_config *cfg,
                      const struct node_agent *agent,
                      const struct node_action_executor *exec,
                      struct node_actions **out,
                      char errmsg[SM_ERRMSG_SIZE])
{
    if (act_plan_config_validate(&cfg->plan, errmsg) != SM_OK) {
        return SM_EINVAL;
    }
    struct node_actions *a = sm_calloc(1, sizeof *a);
    if (a == NULL) {
        return SM_ENOMEM;
    }
    a->cfg = *cfg;
    a->agent = agent;
    a->exec = exec;
    struct cbn_log_config lc = {
        .dir = dir,
        .segment_bytes = 4u << 20,
        .retain_bytes = RETAIN_BYTES,
        .max_record = MAX_RECORD,
        .sync = CBN_LOG_SYNC_EVERY,
    };
    int rv = cbn_log_open(&lc, &a->log, errmsg);
    if (rv == SM_OK) {
        rv = cbn_log_replay(a->log, replay_one, a);
        if (rv != SM_OK) {
            sm_errmsg_printf(errmsg, "reading the actions in %s: %s", dir,
                             sm_strerror(rv));
        }
    }
    if (rv != SM_OK) {
        node_actions_close(a);
        return rv;
    }
    if (a->skipped > 0) {
        sm_log(SM_LOG_WARN, MOD, "skipped unreadable action records",
               "count=%" PRIu64, a->skipped);
    }
    *out = a;
    return SM_OK;
}

void node_actions_resume(struct node_actions *a, uint64_t now_wall_ns)
{
    count_due(a, UINT64_MAX);
    for (size_t i = 0; i < a->n; i++) {
        struct entry *e = &a->acts[i];
        if (e->act.state == NODE_ACTION_APPLYING &&
            e->act.plan.kind == ACT_KIND_SCALE_OUT) {
            /* A command may have run: running it again could scale out
             * twice. */
            sm_log(SM_LOG_WARN, MOD,
                   "a scale-out command was cut short by a stop; not run again",
                   "id=%s service=%s", e->act.id, e->act.service);
            set_state(a, e, NODE_ACTION_INTERRUPTED,
                      "the peer stopped while the command ran; check the "
                      "service's replicas",
                      now_wall_ns);
        } else if (e->act.state == NODE_ACTION_APPLYING ||
                   e->act.state == NODE_ACTION_ROLLING_BACK) {
            a->stats.reapplied++;
            sm_log(SM_LOG_INFO, MOD, "finishing an action cut short by a stop",
                   "id=%s service=%s state=%s", e->act.id, e->act.service,
                   node_action_state_name(e->act.state));
            submit(a, e, e->act.state == NODE_ACTION_ROLLING_BACK);
        }
    }
}

void node_actions_close(struct node_actions *a)
{
    if (a == NULL) {
        return;
    }
    cbn_log_close(a->log);
    sm_free(a->acts);
    sm_free(a->svcs);
    sm_free(a);
}

/* ---- Decisions ----------------------------------------------------------- */

static const struct entry *pending_for(const struct node_actions *a,
                                       const char *service)
{
    for (size_t i = a->n; i-- > 0;) {
        const struct entry *e = &a->acts[i];
        if (e->act.state == NODE_ACTION_PENDING &&
            strcmp(e->act.service, service) == 0) {
            return e;
        }
    }
    return NULL;
}

static void log_none(const char *diagnosis_id,
                     const char *service,
                     const char *resource,
                     const char *why)
{
    sm_log(SM_LOG_INFO, MOD, "no action",
           "diagnosis=%s service=%s resource=%s reason=\"%s\"", diagnosis_id,
           service, resource, why);
}

/* Fills @act from the plan and the agent's reading. Returns SM_OK, or
 * SM_EAGAIN when the rules (or a failed read) chose nothing. */
static int plan_action(struct node_actions *a,
                       const char *diagnosis_id,
                       uint64_t window_end_ns,
                       const char *service,
                       const char *resource,
                       struct node_action *act)
{
    struct service_state *s = service_state_of(a, service);
    if (s == NULL) {
        return SM_ENOMEM;
    }
    char err[SM_ERRMSG_SIZE] = "";
    struct act_settings cur;
    act_settings_init(&cur);
    struct act_setting unused;
    bool unused_has;
    if (a->agent->read(a->agent->arg, service, ACT_KIND_NONE, &cur, &unused,
                       &unused_has, err) != SM_OK) {
        /* The rules see "unknown" and may still choose a scale-out. */
        a->stats.agent_errors++;
        sm_log(SM_LOG_WARN, MOD, "cannot read a service's settings",
               "service=%s cause=\"%s\"", service, err);
        act_settings_init(&cur);
    }
    if (act_plan_decide(&a->cfg.plan, service, resource, &cur, &s->st,
                        window_end_ns, &act->plan, err) != SM_OK) {
        log_none(diagnosis_id, service, resource, err);
        return SM_EAGAIN;
    }
    if (act->plan.kind == ACT_KIND_NONE) {
        log_none(diagnosis_id, service, resource, act->plan.reason);
        return SM_EAGAIN;
    }
    if (act->plan.kind != ACT_KIND_SCALE_OUT &&
        a->agent->read(a->agent->arg, service, act->plan.kind, &cur, &act->prev,
                       &act->has_prev, err) != SM_OK) {
        a->stats.agent_errors++;
        log_none(diagnosis_id, service, resource, err);
        return SM_EAGAIN;
    }
    return SM_OK;
}

int node_actions_on_diagnosis(struct node_actions *a,
                              const char *diagnosis_id,
                              uint64_t window_end_ns,
                              const char *service,
                              const char *resource,
                              uint64_t now_wall_ns,
                              const struct node_action **out)
{
    *out = NULL;
    char id[NODE_ACTION_ID_LEN + 1];
    node_action_id(diagnosis_id, id);
    const struct entry *known = find(a, id);
    if (known != NULL) {
        *out = &known->act;
        return SM_OK;
    }
    if (a->cfg.plan.mode == ACT_MODE_OFF || service == NULL) {
        return SM_OK;
    }
    if (strlen(service) >= NODE_ACTION_SERVICE_MAX) {
        return SM_EINVAL;
    }
    if (window_end_ns > a->newest_window_ns) {
        a->newest_window_ns = window_end_ns;
    }
    const struct entry *waiting = pending_for(a, service);
    if (waiting != NULL) {
        char why[96];
        snprintf(why, sizeof why, "action %s awaits approval", waiting->act.id);
        log_none(diagnosis_id, service, resource, why);
        a->stats.not_planned++;
        return SM_OK;
    }
    struct node_action act;
    memset(&act, 0, sizeof act);
    int rv =
        plan_action(a, diagnosis_id, window_end_ns, service, resource, &act);
    if (rv == SM_EAGAIN) {
        a->stats.not_planned++;
        return SM_OK;
    }
    if (rv != SM_OK) {
        return rv;
    }
    memcpy(act.id, id, sizeof act.id);
    snprintf(act.diagnosis_id, sizeof act.diagnosis_id, "%s", diagnosis_id);
    snprintf(act.service, sizeof act.service, "%s", service);
    snprintf(act.resource, sizeof act.resource, "%s", resource);
    act.mode = a->cfg.plan.mode;
    act.window_end_ns = window_end_ns;
    act.decided_ns = now_wall_ns;
    act.updated_ns = now_wall_ns;
    switch (act.mode) {
        case ACT_MODE_ON:
            act.state = NODE_ACTION_APPLYING;
            act.applied_window_end_ns = window_end_ns;
            break;
        case ACT_MODE_APPROVE:
            act.state = NODE_ACTION_PENDING;
            break;
        default:
            act.state = NODE_ACTION_DRY_RUN;
            act.applied_window_end_ns = window_end_ns;
            break;
    }
    if ((rv = make_room(a)) != SM_OK) {
        return rv;
    }
    /* Recorded before the agent acts: a crash from here on finds it. */
    if ((rv = record(a, &act)) != SM_OK) {
        return SM_EIO;
    }
    struct entry *e = &a->acts[a->n++];
    e->act = act;
    e->counted = false;
    e->before_rollback = NODE_ACTION_APPLIED;
    a->stats.decided++;
    if (act.applied_window_end_ns != 0) {
        count_action(a, e);
    }
    sm_log(SM_LOG_WARN, MOD,
           act.mode == ACT_MODE_ON        ? "action decided"
           : act.mode == ACT_MODE_APPROVE ? "action awaits approval"
                                          : "action (dry run, not applied)",
           "id=%s diagnosis=%s service=%s resource=%s kind=%s from=%g to=%g "
           "reason=\"%s\"",
           act.id, diagnosis_id, service, resource,
           act_kind_name(act.plan.kind), act.plan.from, act.plan.to,
           act.plan.reason);
    if (act.state == NODE_ACTION_APPLYING) {
        submit(a, e, false);
        e = find(a, id); /* an inline executor may have changed it */
    }
    *out = &e->act;
    return SM_OK;
}

/* ---- Verification -------------------------------------------------------- */

static void settle(struct node_actions *a,
                   struct service_state *s,
                   enum act_verdict verdict,
                   uint64_t now_wall_ns)
{
    if (s->last_action == 0) {
        return;
    }
    struct entry *e = &a->acts[s->last_action - 1];
    if (e->act.state != NODE_ACTION_APPLIED) {
        return; /* dry run, failed, rolled back, or settled before a restart */
    }
    bool helped = verdict == ACT_VERDICT_HELPED;
    sm_log(SM_LOG_WARN, MOD, helped ? "action helped" : "action did not help",
           "id=%s service=%s kind=%s", e->act.id, e->act.service,
           act_kind_name(e->act.plan.kind));
    set_state(a, e, helped ? NODE_ACTION_VERIFIED : NODE_ACTION_NOT_HELPED,
              NULL, now_wall_ns);
    if (!helped && a->cfg.rollback_unhelpful &&
        act_plan_rollback_advised(&s->st, NULL) && e->act.has_prev) {
        char err[SM_ERRMSG_SIZE];
        node_actions_rollback(a, e->act.id, now_wall_ns, err);
    }
}

void node_actions_on_window(struct node_actions *a,
                            uint64_t window_end_ns,
                            bool violated,
                            uint64_t now_wall_ns)
{
    if (window_end_ns > a->newest_window_ns) {
        a->newest_window_ns = window_end_ns;
    }
    count_due(a, window_end_ns);
    for (size_t i = 0; i < a->n_svcs; i++) {
        struct service_state *s = &a->svcs[i];
        if (window_end_ns <= s->last_window_ns) {
            continue; /* counted already */
        }
        s->last_window_ns = window_end_ns;
        enum act_verdict v =
            act_plan_record_window(&a->cfg.plan, &s->st, !violated);
        if (v != ACT_VERDICT_NONE) {
            settle(a, s, v, now_wall_ns);
        }
    }
}

/* ---- Operator requests --------------------------------------------------- */

/* The action an operator names, or NULL with the message in @errmsg. */
static struct entry *find_named(struct node_actions *a,
                                const char *id,
                                char errmsg[SM_ERRMSG_SIZE])
{
    struct entry *e = find(a, id);
    if (e == NULL) {
        sm_errmsg_printf(errmsg, "no action %s", id);
    }
    return e;
}

int node_actions_approve(struct node_actions *a,
                         const char *id,
                         uint64_t now_wall_ns,
                         char errmsg[SM_ERRMSG_SIZE])
{
    struct entry *e = find_named(a, id, errmsg);
    if (e == NULL) {
        return SM_ENOTFOUND;
    }
    if (e->act.state != NODE_ACTION_PENDING) {
        sm_errmsg_printf(errmsg, "action %s is %s, not pending", id,
                         node_action_state_name(e->act.state));
        return SM_ECONFLICT;
    }
    /* The value to restore is the one in place now, not at decision. */
    struct act_settings cur;
    act_settings_init(&cur);
    char err[SM_ERRMSG_SIZE] = "";
    if (e->act.plan.kind != ACT_KIND_SCALE_OUT &&
        a->agent->read(a->agent->arg, e->act.service, e->act.plan.kind, &cur,
                       &e->act.prev, &e->act.has_prev, err) != SM_OK) {
        a->stats.agent_errors++;
        sm_errmsg_printf(errmsg, "cannot read %s's settings: %s",
                         e->act.service, err);
        set_state(a, e, NODE_ACTION_FAILED, errmsg, now_wall_ns);
        return SM_OK; /* approved, and failed: the list says why */
    }
    e->act.approved = true;
    e->act.applied_window_end_ns =
        a->newest_window_ns ? a->newest_window_ns : e->act.window_end_ns;
    if (set_state(a, e, NODE_ACTION_APPLYING, NULL, now_wall_ns) != SM_OK) {
        e->act.state = NODE_ACTION_PENDING;
        e->act.approved = false;
        e->act.applied_window_end_ns = 0;
        sm_errmsg_printf(errmsg, "cannot record the approval");
        return SM_EIO;
    }
    count_action(a, e);
    sm_log(SM_LOG_WARN, MOD, "action approved", "id=%s service=%s kind=%s", id,
           e->act.service, act_kind_name(e->act.plan.kind));
    submit(a, e, false);
    return SM_OK;
}

int node_actions_rollback(struct node_actions *a,
                          const char *id,
                          uint64_t now_wall_ns,
                          char errmsg[SM_ERRMSG_SIZE])
{
    struct entry *e = find_named(a, id, errmsg);
    if (e == NULL) {
        return SM_ENOTFOUND;
    }
    enum node_action_state st = e->act.state;
    if (st != NODE_ACTION_APPLIED && st != NODE_ACTION_VERIFIED &&
        st != NODE_ACTION_NOT_HELPED) {
        sm_errmsg_printf(errmsg,
                         "action %s is %s: only an applied action can "
                         "be rolled back",
                         id, node_action_state_name(st));
        return SM_ECONFLICT;
    }
    if (!e->act.has_prev) {
        sm_errmsg_printf(errmsg,
                         "action %s is a %s: scale in with your own tooling",
                         id, act_kind_name(e->act.plan.kind));
        return SM_ECONFLICT;
    }
    e->before_rollback = st;
    if (set_state(a, e, NODE_ACTION_ROLLING_BACK, NULL, now_wall_ns) != SM_OK) {
        e->act.state = st;
        sm_errmsg_printf(errmsg, "cannot record the rollback");
        return SM_EIO;
    }
    sm_log(SM_LOG_WARN, MOD, "rolling an action back", "id=%s service=%s", id,
           e->act.service);
    submit(a, e, true);
    return SM_OK;
}

/* ---- Queries ------------------------------------------------------------- */

void node_actions_list(const struct node_actions *a,
                       size_t limit,
                       const enum node_action_state *state,
                       struct node_text *b)
{
    node_text_puts(b, "{\"actions\":[");
    size_t put = 0;
    for (size_t i = a->n; i-- > 0 && put < limit;) {
        const struct node_action *act = &a->acts[i].act;
        if (state != NULL && act->state != *state) {
            continue;
        }
        if (put++) {
            node_text_puts(b, ",");
        }
        node_action_write_json(b, act);
    }
    node_text_puts(b, "]}");
}

void node_actions_stats(const struct node_actions *a,
                        struct node_actions_stats *out)
{
    *out = a->stats;
    memset(out->by_state, 0, sizeof out->by_state);
    for (size_t i = 0; i < a->n; i++) {
        out->by_state[a->acts[i].act.state]++;
    }
}

enum act_mode node_actions_mode(const struct node_actions *a)
{
    return a->cfg.plan.mode;
}
