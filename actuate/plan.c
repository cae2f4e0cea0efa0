/* The controller's plan rules: from a blamed (service, resource) to an action.
 *
 * Everything here is a pure function of its arguments. The state that makes
 * the controller careful lives in struct act_service_state, owned by the
 * caller, and changes only through the two record functions:
 *
 * - Verification. After an action, act_plan_record_window() counts windows;
 *   after verify_windows of them the action is settled as helped (QoS met in
 *   at least one of them) or not helped. Until then nothing else is planned for
 * the service, so the effect of one change is never mixed with the next.
 * - Rate limit. Two actions on one service are at least min_interval_ns
 *   apart, whatever the windows say.
 * - Hysteresis. After an action that helped, a new one needs QoS violated
 *   verify_windows windows in a row: a service that alternates between
 *   violated and met windows gets no new action (no flapping).
 * - Escalation. When the last step did not help and QoS stayed violated for
 *   escalate_windows windows since it, or when the knob is at its cap, the
 *   plan is a scale-out (if the operator configured one).
 *
 * Local steps only ever raise a knob; lowering is a rollback, advised by
 * act_plan_rollback_advised() and decided by the caller. */
#include <float.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "actuate/actuate.h"
#include "base/err.h"

static const char *const kind_names[] = {
    [ACT_KIND_NONE] = "none",
    [ACT_KIND_CPU_QUOTA] = "cpu_quota",
    [ACT_KIND_MEMORY_LIMIT] = "memory_limit",
    [ACT_KIND_IO_WEIGHT] = "io_weight",
    [ACT_KIND_NET_CLASS] = "net_class",
    [ACT_KIND_LLC_WAYS] = "llc_ways",
    [ACT_KIND_SCALE_OUT] = "scale_out",
    [ACT_KIND_CPU_FREQ] = "cpu_freq",
};

static const char *const resource_names[] = {
    [ACT_RES_CPU] = "cpu",         [ACT_RES_MEMORY] = "memory",
    [ACT_RES_NETWORK] = "network", [ACT_RES_DISK] = "disk",
    [ACT_RES_LLC] = "llc",         [ACT_RES_OTHER] = "other",
    [ACT_RES_UNKNOWN] = "unknown",
};

/* The knob a local step for each resource class turns. */
static const enum act_kind resource_kind[] = {
    [ACT_RES_CPU] = ACT_KIND_CPU_QUOTA,
    [ACT_RES_MEMORY] = ACT_KIND_MEMORY_LIMIT,
    [ACT_RES_NETWORK] = ACT_KIND_NET_CLASS,
    [ACT_RES_DISK] = ACT_KIND_IO_WEIGHT,
    [ACT_RES_LLC] = ACT_KIND_LLC_WAYS,
    [ACT_RES_OTHER] = ACT_KIND_NONE,
    [ACT_RES_UNKNOWN] = ACT_KIND_NONE,
};

const char *act_kind_name(enum act_kind kind)
{
    if ((unsigned)kind >= sizeof kind_names / sizeof kind_names[0]) {
        return "unknown";
    }
    return kind_names[kind];
}

int act_resource_parse(const char *text, enum act_resource *res)
{
    if (text == NULL) {
        return SM_EINVAL;
    }
    for (size_t i = 0; i < sizeof resource_names / sizeof resource_names[0];
         i++) {
        if (strcmp(text, resource_names[i]) == 0) {
            *res = (enum act_resource)i;
            return SM_OK;
        }
    }
    return SM_EINVAL;
}

void act_settings_init(struct act_settings *s)
{
    memset(s, 0, sizeof *s);
    s->net_class = -1;
}

void act_plan_config_init(struct act_plan_config *c)
{
    memset(c, 0, sizeof *c);
    c->mode = ACT_MODE_DEFAULT;
    c->cpu_step_fraction = 0.5;
    c->cpu_step_min_cores = 0.5;
    c->memory_step_fraction = 0.25;
    c->io_weight_factor = 2.0;
    c->llc_step_ways = 2;
    c->max_io_weight = 10000;
    c->max_net_class = 3;
    c->min_interval_ns = 60ull * 1000000000ull;
    c->verify_windows = 2;
    c->escalate_windows = 3;
    c->scale_out_enabled = true;
    c->scale_out_other = false;
    c->scale_out_amount = 1;
}

int act_plan_config_validate(const struct act_plan_config *c, char *errmsg)
{
    const char *bad = NULL;
    if ((unsigned)c->mode > ACT_MODE_APPROVE) {
        bad = "unknown mode";
    } else if (!(c->cpu_step_fraction > 0) || !(c->cpu_step_min_cores >= 0)) {
        bad = "cpu step must be positive";
    } else if (!(c->memory_step_fraction > 0)) {
        bad = "memory step must be positive";
    } else if (!(c->io_weight_factor > 1)) {
        bad = "io weight factor must be greater than 1";
    } else if (c->llc_step_ways == 0) {
        bad = "llc step must be at least one way";
    } else if (!(c->max_cores >= 0 && c->max_cores <= DBL_MAX)) {
        bad = "max cores must be finite and not negative";
    } else if (c->max_net_class < 0) {
        bad = "max net class must not be negative";
    } else if (c->verify_windows == 0) {
        bad = "verify_windows must be at least 1";
    } else if (c->escalate_windows == 0) {
        bad = "escalate_windows must be at least 1";
    } else if (c->scale_out_amount == 0) {
        bad = "scale_out_amount must be at least 1";
    }
    if (bad != NULL) {
        sm_errmsg_printf(errmsg, "plan config: %s", bad);
        return SM_EINVAL;
    }
    return SM_OK;
}

void act_service_state_init(struct act_service_state *s)
{
    memset(s, 0, sizeof *s);
    s->last_kind = ACT_KIND_NONE;
    s->verdict = ACT_VERDICT_NONE;
}

static void plan_none(struct act_plan *out, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void plan_none(struct act_plan *out, const char *fmt, ...)
{
    va_list ap;
    out->kind = ACT_KIND_NONE;
    out->from = 0;
    out->to = 0;
    va_start(ap, fmt);
    vsnprintf(out->reason, sizeof out->reason, fmt, ap);
    va_end(ap);
}

/* A scale-out, or none when the operator configured no scale-out command. */
static void plan_scale_out(const struct act_plan_config *cfg,
                           const struct act_service_state *st,
                           const char *service,
                           const char *why,
                           struct act_plan *out)
{
    if (!cfg->scale_out_enabled) {
        plan_none(out, "%s; scale-out is not configured for %s", why, service);
        return;
    }
    out->kind = ACT_KIND_SCALE_OUT;
    out->from = st->added[ACT_KIND_SCALE_OUT];
    out->to = out->from + (double)cfg->scale_out_amount;
    snprintf(out->reason, sizeof out->reason, "%s: scale out %s by %u", why,
             service, cfg->scale_out_amount);
}

/* The current value of @kind's knob in @cur, or a negative number when it
 * is unknown, and its cap in @cap (0: none). */
static double knob_current(const struct act_plan_config *cfg,
                           const struct act_settings *cur,
                           enum act_kind kind,
                           double *cap)
{
    switch (kind) {
        case ACT_KIND_CPU_QUOTA:
            *cap = cfg->max_cores;
            return cur->cpu_cores > 0 ? cur->cpu_cores : -1;
        case ACT_KIND_MEMORY_LIMIT:
            *cap = (double)cfg->max_memory_bytes;
            return cur->memory_bytes > 0 ? (double)cur->memory_bytes : -1;
        case ACT_KIND_IO_WEIGHT:
            *cap = (double)cfg->max_io_weight;
            return cur->io_weight > 0 ? (double)cur->io_weight : -1;
        case ACT_KIND_NET_CLASS:
            /* Class 0 is a real class, so its cap is always set. */
            *cap = (double)cfg->max_net_class;
            return cur->net_class >= 0 ? (double)cur->net_class : -1;
        case ACT_KIND_LLC_WAYS:
            *cap = (double)cfg->max_llc_ways;
            return cur->llc_ways > 0 ? (double)cur->llc_ways : -1;
        case ACT_KIND_CPU_FREQ:
            /* The hardware's maximum is the cap; cpu_freq_kind() chose
             * this kind only when both values are known. */
            *cap = (double)cur->cpu_freq_max_khz;
            return cur->cpu_freq_khz > 0 ? (double)cur->cpu_freq_khz : -1;
        default:
            *cap = 0;
            return -1;
    }
}

/* Rounds a non-negative @x up to a whole number (knob units are integers). */
static double round_up(double x)
{
    if (!(x < 9e18)) {
        return x;
    }
    double t = (double)(uint64_t)x;
    return t < x ? t + 1 : t;
}

/* The value one local step moves @from to, before the cap. */
static double knob_step(const struct act_plan_config *cfg,
                        const struct act_settings *cur,
                        enum act_kind kind,
                        double from)
{
    switch (kind) {
        case ACT_KIND_CPU_QUOTA: {
            double add = from * cfg->cpu_step_fraction;
            return from + (add < cfg->cpu_step_min_cores
                               ? cfg->cpu_step_min_cores
                               : add);
        }
        case ACT_KIND_MEMORY_LIMIT:
            return round_up(from * (1.0 + cfg->memory_step_fraction));
        case ACT_KIND_IO_WEIGHT:
            return round_up(from * cfg->io_weight_factor);
        case ACT_KIND_NET_CLASS:
            return from + 1;
        case ACT_KIND_LLC_WAYS:
            return from + (double)cfg->llc_step_ways;
        case ACT_KIND_CPU_FREQ:
            /* Frequencies are not stepped: a limit below the hardware's
             * maximum is lifted in one go. */
            return (double)cur->cpu_freq_max_khz;
        default:
            return from;
    }
}

static bool has_cap(enum act_kind kind, double cap)
{
    return kind == ACT_KIND_NET_CLASS || kind == ACT_KIND_CPU_FREQ || cap > 0;
}

/* The knob a CPU culprit's step turns: its quota when one is set, else
 * (unlimited, or unreadable) the frequency of its CPUs when that is known.
 * Decided before the rules about the last action, so "did not help" is
 * judged on the knob that would be turned again. */
static enum act_kind cpu_kind(const struct act_settings *cur)
{
    if (cur->cpu_cores > 0 || cur->cpu_freq_khz == 0 ||
        cur->cpu_freq_max_khz == 0) {
        return ACT_KIND_CPU_QUOTA;
    }
    return ACT_KIND_CPU_FREQ;
}

/* A CPU culprit whose quota is unknown and whose frequency cannot be
 * raised: none, with the reason. Returns false when the rules go on. */
static bool cpu_exhausted(const struct act_settings *cur,
                          const char *service,
                          enum act_kind kind,
                          struct act_plan *out)
{
    if (kind == ACT_KIND_CPU_QUOTA && !(cur->cpu_cores > 0)) {
        plan_none(out,
                  "cpu quota of %s is unknown or unlimited, and so is its "
                  "CPU frequency",
                  service);
        return true;
    }
    if (kind == ACT_KIND_CPU_FREQ &&
        cur->cpu_freq_khz >= cur->cpu_freq_max_khz) {
        plan_none(out,
                  "cpu quota of %s is unlimited and its CPUs may already run "
                  "at their maximum frequency (%u kHz)",
                  service, cur->cpu_freq_max_khz);
        return true;
    }
    return false;
}

int act_plan_decide(const struct act_plan_config *cfg,
                    const char *service,
                    const char *resource,
                    const struct act_settings *cur,
                    const struct act_service_state *st,
                    uint64_t now_ns,
                    struct act_plan *out,
                    char *errmsg)
{
    enum act_resource res;
    if (cfg == NULL || service == NULL || resource == NULL || cur == NULL ||
        st == NULL || out == NULL) {
        sm_errmsg_printf(errmsg, "plan: NULL argument");
        return SM_EINVAL;
    }
    int rv = act_plan_config_validate(cfg, errmsg);
    if (rv != SM_OK) {
        return rv;
    }
    if (act_resource_parse(resource, &res) != SM_OK) {
        sm_errmsg_printf(errmsg, "plan: unknown resource class \"%.64s\"",
                         resource);
        return SM_EINVAL;
    }
    enum act_kind kind = resource_kind[res];
    if (res == ACT_RES_CPU) {
        kind = cpu_kind(cur);
    }

    if (cfg->mode == ACT_MODE_OFF) {
        plan_none(out, "actuation is off");
        return SM_OK;
    }
    if (st->has_action && st->verdict == ACT_VERDICT_PENDING) {
        plan_none(out, "verifying %s on %s (window %u of %u)",
                  act_kind_name(st->last_kind), service,
                  st->windows_since_action, cfg->verify_windows);
        return SM_OK;
    }
    /* A clock that went back counts as "no time passed". */
    uint64_t age = st->has_action && now_ns > st->last_action_ns
                       ? now_ns - st->last_action_ns
                       : 0;
    if (st->has_action && age < cfg->min_interval_ns) {
        uint64_t left = cfg->min_interval_ns - age;
        plan_none(out, "rate-limited: next action on %s in %.1f s", service,
                  (double)left / 1e9);
        return SM_OK;
    }
    if (st->has_action && st->verdict == ACT_VERDICT_NOT_HELPED &&
        (st->last_kind == kind || st->last_kind == ACT_KIND_SCALE_OUT)) {
        if (st->windows_unrecovered >= cfg->escalate_windows) {
            char why[96];
            snprintf(why, sizeof why, "%s did not recover QoS in %u windows",
                     act_kind_name(st->last_kind), st->windows_unrecovered);
            plan_scale_out(cfg, st, service, why, out);
        } else {
            plan_none(out, "%s did not help %s; escalating after %u windows",
                      act_kind_name(st->last_kind), service,
                      cfg->escalate_windows);
        }
        return SM_OK;
    }
    if (st->has_action && st->verdict == ACT_VERDICT_HELPED &&
        st->violated_streak < cfg->verify_windows) {
        plan_none(out,
                  "hysteresis: %s helped %s; waiting for %u violated "
                  "windows in a row",
                  act_kind_name(st->last_kind), service, cfg->verify_windows);
        return SM_OK;
    }
    if (kind == ACT_KIND_NONE) {
        if (cfg->scale_out_other) {
            plan_scale_out(cfg, st, service, "no local knob for this resource",
                           out);
        } else {
            plan_none(out, "no local action for resource \"%s\" on %s",
                      resource_names[res], service);
        }
        return SM_OK;
    }

    if (cpu_exhausted(cur, service, kind, out)) {
        return SM_OK;
    }
    double cap;
    double from = knob_current(cfg, cur, kind, &cap);
    if (from < 0) {
        plan_none(out, "current %s of %s is unknown", act_kind_name(kind),
                  service);
        return SM_OK;
    }
    if (has_cap(kind, cap) && from >= cap) {
        char why[96];
        snprintf(why, sizeof why, "%s at cap (%g)", act_kind_name(kind), cap);
        plan_scale_out(cfg, st, service, why, out);
        return SM_OK;
    }
    double to = knob_step(cfg, cur, kind, from);
    bool clipped = has_cap(kind, cap) && to > cap;
    if (clipped) {
        to = cap;
    }
    out->kind = kind;
    out->from = from;
    out->to = to;
    snprintf(out->reason, sizeof out->reason, "%s bound on %s: %s %g -> %g%s",
             resource_names[res], service, act_kind_name(kind), from, to,
             clipped ? " (cap)" : "");
    return SM_OK;
}

void act_plan_record_applied(struct act_service_state *st,
                             const struct act_plan *plan,
                             uint64_t now_ns)
{
    if (plan->kind == ACT_KIND_NONE ||
        (unsigned)plan->kind >= ACT_KIND__COUNT) {
        return;
    }
    st->has_action = true;
    st->last_action_ns = now_ns;
    st->last_kind = plan->kind;
    st->last_from = plan->from;
    st->last_to = plan->to;
    st->verdict = ACT_VERDICT_PENDING;
    st->windows_since_action = 0;
    st->windows_unrecovered = 0;
    st->violated_streak = 0;
    st->met_streak = 0;
    if (plan->kind != ACT_KIND_SCALE_OUT) {
        st->local_steps++;
    }
    st->added[plan->kind] += plan->to - plan->from;
}

enum act_verdict act_plan_record_window(const struct act_plan_config *cfg,
                                        struct act_service_state *st,
                                        bool recovered)
{
    uint32_t verify = cfg->verify_windows > 0 ? cfg->verify_windows : 1;
    if (recovered) {
        st->violated_streak = 0;
        st->windows_unrecovered = 0;
        if (st->met_streak < UINT32_MAX) {
            st->met_streak++;
        }
        if (st->met_streak >= verify) {
            st->local_steps = 0; /* the episode is over */
        }
    } else {
        st->met_streak = 0;
        if (st->violated_streak < UINT32_MAX) {
            st->violated_streak++;
        }
        if (st->has_action && st->windows_unrecovered < UINT32_MAX) {
            st->windows_unrecovered++;
        }
    }
    if (!st->has_action) {
        return ACT_VERDICT_NONE;
    }
    if (st->windows_since_action < UINT32_MAX) {
        st->windows_since_action++;
    }
    if (st->verdict == ACT_VERDICT_PENDING &&
        st->windows_since_action >= verify) {
        /* windows_unrecovered counts the violated windows since the last
         * recovery, so it is smaller than windows_since_action exactly when
         * QoS was met at least once since the action. */
        st->verdict = st->windows_unrecovered < st->windows_since_action
                          ? ACT_VERDICT_HELPED
                          : ACT_VERDICT_NOT_HELPED;
        return st->verdict;
    }
    return ACT_VERDICT_NONE;
}

bool act_plan_rollback_advised(const struct act_service_state *st,
                               struct act_plan *undo)
{
    if (!st->has_action || st->verdict != ACT_VERDICT_NOT_HELPED ||
        st->last_kind == ACT_KIND_SCALE_OUT || st->last_kind == ACT_KIND_NONE) {
        return false;
    }
    if (undo != NULL) {
        undo->kind = st->last_kind;
        undo->from = st->last_to;
        undo->to = st->last_from;
        snprintf(undo->reason, sizeof undo->reason,
                 "roll back %s %g -> %g: it did not recover QoS",
                 act_kind_name(st->last_kind), st->last_to, st->last_from);
    }
    return true;
}
