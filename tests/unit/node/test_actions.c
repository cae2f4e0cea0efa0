/* The one-host actuation controller: decisions, the durable record,
 * exactly-once across crashes, approval, verification and rollback; and
 * the real agent on a fake cgroup tree. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/log.h"
#include "check.h"
#include "node/actions.h"
#include "node/agent.h"

static void setup(void)
{
    sm_log_set_sink(check_log_discard, NULL);
}

static void teardown(void)
{
    sm_log_set_sink(NULL, NULL);
}

#define S    1000000000ull
#define T0   (1800000000ull * S)
#define WALL (1900000000ull * S)

/* ---- A fake agent: one service's CPU quota, set absolutely ------------- */

struct fake_agent
{
    double cores;       /* the service's quota now */
    int reads, applies; /* calls */
    int changes;        /* applies that changed the value */
    int restores;
    int commands; /* scale-out runs */
    int fail_read, fail_apply, fail_restore;
    struct node_agent ops;
};

static int fake_read(void *arg,
                     const char *service,
                     enum act_kind kind,
                     struct act_settings *cur,
                     struct act_setting *prev,
                     bool *has_prev,
                     char *errmsg)
{
    struct fake_agent *f = arg;
    (void)service;
    f->reads++;
    *has_prev = false;
    if (f->fail_read) {
        sm_errmsg_printf(errmsg, "no cgroup");
        return SM_ENOTFOUND;
    }
    cur->cpu_cores = f->cores;
    if (kind == ACT_KIND_CPU_QUOTA) {
        act_setting_cpu(prev, false, (uint64_t)(f->cores * 100000), 100000);
        *has_prev = true;
    }
    return SM_OK;
}

static int fake_apply(void *arg, const struct node_action *a, char *errmsg)
{
    struct fake_agent *f = arg;
    f->applies++;
    if (f->fail_apply) {
        sm_errmsg_printf(errmsg, "permission denied");
        return SM_EPERM;
    }
    if (a->plan.kind == ACT_KIND_SCALE_OUT) {
        f->commands++;
        return SM_OK;
    }
    if (f->cores != a->plan.to) {
        f->cores = a->plan.to;
        f->changes++;
    }
    return SM_OK;
}

static int fake_restore(void *arg, const struct node_action *a, char *errmsg)
{
    struct fake_agent *f = arg;
    f->restores++;
    if (f->fail_restore) {
        sm_errmsg_printf(errmsg, "device busy");
        return SM_EIO;
    }
    f->cores = (double)a->prev.value / (double)a->prev.period;
    return SM_OK;
}

static void fake_init(struct fake_agent *f, double cores)
{
    memset(f, 0, sizeof *f);
    f->cores = cores;
    f->ops = (struct node_agent){f, fake_read, fake_apply, fake_restore};
}

/* ---- Executors: inline, or holding jobs (a crash drops them) ----------- */

struct executor
{
    struct node_actions *acts;
    int hold;     /* keep jobs instead of running them */
    int run_held; /* run held jobs' agent call but never report */
    struct node_action_job *held[8];
    int n_held;
    struct node_action_executor ops;
};

static void exec_submit(void *arg, struct node_action_job *job)
{
    struct executor *x = arg;
    if (x->hold) {
        REQUIRE(x->n_held < 8);
        if (x->run_held) {
            node_actions_job_run(job);
        }
        x->held[x->n_held++] = job;
        return;
    }
    node_actions_job_run(job);
    node_actions_job_done(x->acts, job, WALL);
    free(job);
}

static void exec_init(struct executor *x)
{
    memset(x, 0, sizeof *x);
    x->ops = (struct node_action_executor){x, exec_submit};
}

/* The process dies: held jobs never report. */
static void exec_crash(struct executor *x)
{
    for (int i = 0; i < x->n_held; i++) {
        free(x->held[i]);
    }
    x->n_held = 0;
}

static struct node_actions *open_acts(const char *dir,
                                      enum act_mode mode,
                                      struct fake_agent *f,
                                      struct executor *x)
{
    struct node_actions_config cfg;
    act_plan_config_init(&cfg.plan);
    cfg.plan.mode = mode;
    cfg.plan.min_interval_ns = 60 * S;
    cfg.rollback_unhelpful = false;
    struct node_actions *a = NULL;
    char err[SM_ERRMSG_SIZE] = "";
    int rv = node_actions_open(dir, &cfg, &f->ops, &x->ops, &a, err);
    if (rv != SM_OK) {
        printf("# %s\n", err);
    }
    REQUIRE_OK(rv);
    x->acts = a;
    return a;
}

static const struct node_action *diagnose(struct node_actions *a,
                                          const char *diag,
                                          uint64_t window_end,
                                          const char *service,
                                          const char *resource)
{
    const struct node_action *act = NULL;
    CHECK_OK(node_actions_on_diagnosis(a, diag, window_end, service, resource,
                                       WALL, &act));
    return act;
}

static size_t count_in(struct node_actions *a, enum node_action_state st)
{
    struct node_actions_stats s;
    node_actions_stats(a, &s);
    return (size_t)s.by_state[st];
}

/* ---- Tests --------------------------------------------------------------- */

static void test_on_applies_once(void)
{
    const char *dir = check_tmpdir();
    struct fake_agent f;
    struct executor x;
    fake_init(&f, 1.0);
    exec_init(&x);
    struct node_actions *a = open_acts(dir, ACT_MODE_ON, &f, &x);
    const struct node_action *act =
        diagnose(a, "00000000000000aa", T0 + 30 * S, "api", "cpu");
    REQUIRE(act != NULL);
    CHECK_EQ(act->state, NODE_ACTION_APPLIED);
    CHECK_EQ(act->plan.kind, ACT_KIND_CPU_QUOTA);
    CHECK_NEAR(act->plan.from, 1.0, 1e-9);
    CHECK_NEAR(act->plan.to, 1.5, 1e-9);
    CHECK(act->has_prev);
    CHECK_NEAR(f.cores, 1.5, 1e-9);
    char id[NODE_ACTION_ID_LEN + 1];
    snprintf(id, sizeof id, "%s", act->id);
    /* The same diagnosis again (re-diagnosed after a restart): the same
     * action, nothing applied again. */
    const struct node_action *again =
        diagnose(a, "00000000000000aa", T0 + 30 * S, "api", "cpu");
    REQUIRE(again != NULL);
    CHECK_STR(again->id, id);
    CHECK_EQ(f.applies, 1);
    node_actions_close(a);

    /* Reopened: the action is read back as it was. */
    a = open_acts(dir, ACT_MODE_ON, &f, &x);
    node_actions_resume(a, WALL);
    const struct node_action *back = node_actions_get(a, id);
    REQUIRE(back != NULL);
    CHECK_EQ(back->state, NODE_ACTION_APPLIED);
    CHECK_STR(back->service, "api");
    CHECK_EQ(f.applies, 1);
    again = diagnose(a, "00000000000000aa", T0 + 30 * S, "api", "cpu");
    CHECK_EQ(f.applies, 1);
    node_actions_close(a);
}

/* Killed between the decision and the agent's acknowledgement, before or
 * after the agent changed anything: after the restart the action is
 * applied, its change made once and recorded applied once. */
static void test_crash_between_decision_and_ack(void)
{
    for (int agent_ran = 0; agent_ran <= 1; agent_ran++) {
        const char *dir = check_tmpdir();
        struct fake_agent f;
        struct executor x;
        fake_init(&f, 2.0);
        exec_init(&x);
        x.hold = 1;
        x.run_held = agent_ran;
        struct node_actions *a = open_acts(dir, ACT_MODE_ON, &f, &x);
        const struct node_action *act =
            diagnose(a, "00000000000000bb", T0 + 30 * S, "db", "cpu");
        REQUIRE(act != NULL);
        CHECK_EQ(act->state, NODE_ACTION_APPLYING);
        char id[NODE_ACTION_ID_LEN + 1];
        snprintf(id, sizeof id, "%s", act->id);
        exec_crash(&x);
        node_actions_close(a);
        CHECK_EQ(f.changes, agent_ran);

        exec_init(&x);
        a = open_acts(dir, ACT_MODE_ON, &f, &x);
        CHECK_EQ(node_actions_get(a, id)->state, NODE_ACTION_APPLYING);
        node_actions_resume(a, WALL);
        CHECK_EQ(node_actions_get(a, id)->state, NODE_ACTION_APPLIED);
        CHECK_EQ(f.changes, 1);
        CHECK_NEAR(f.cores, 3.0, 1e-9);
        struct node_actions_stats st;
        node_actions_stats(a, &st);
        CHECK_EQ(st.reapplied, 1u);
        node_actions_close(a);

        /* A second restart finds nothing left to do. */
        int applies = f.applies;
        a = open_acts(dir, ACT_MODE_ON, &f, &x);
        node_actions_resume(a, WALL);
        CHECK_EQ(f.applies, applies);
        node_actions_close(a);
    }
}

/* A scale-out command cut short is never run twice. */
static void test_interrupted_command(void)
{
    const char *dir = check_tmpdir();
    struct fake_agent f;
    struct executor x;
    fake_init(&f, 1.0);
    exec_init(&x);
    x.hold = 1;
    struct node_actions *a = NULL;
    struct node_actions_config c; /* "other" scales out */
    act_plan_config_init(&c.plan);
    c.plan.mode = ACT_MODE_ON;
    c.plan.scale_out_other = true;
    c.rollback_unhelpful = false;
    char err[SM_ERRMSG_SIZE];
    REQUIRE_OK(node_actions_open(dir, &c, &f.ops, &x.ops, &a, err));
    x.acts = a;
    const struct node_action *act =
        diagnose(a, "00000000000000cc", T0 + 30 * S, "web", "other");
    REQUIRE(act != NULL);
    CHECK_EQ(act->plan.kind, ACT_KIND_SCALE_OUT);
    CHECK(!act->has_prev);
    char id[NODE_ACTION_ID_LEN + 1];
    snprintf(id, sizeof id, "%s", act->id);
    exec_crash(&x);
    node_actions_close(a);
    exec_init(&x);
    REQUIRE_OK(node_actions_open(dir, &c, &f.ops, &x.ops, &a, err));
    x.acts = a;
    node_actions_resume(a, WALL);
    CHECK_EQ(node_actions_get(a, id)->state, NODE_ACTION_INTERRUPTED);
    CHECK_EQ(f.commands, 0);
    node_actions_close(a);
}

static void test_dry_run_and_off(void)
{
    struct fake_agent f;
    struct executor x;
    fake_init(&f, 1.0);
    exec_init(&x);
    struct node_actions *a =
        open_acts(check_tmpdir(), ACT_MODE_DRY_RUN, &f, &x);
    const struct node_action *act =
        diagnose(a, "0000000000000001", T0 + 30 * S, "api", "cpu");
    REQUIRE(act != NULL);
    CHECK_EQ(act->state, NODE_ACTION_DRY_RUN);
    CHECK_EQ(f.applies, 0);
    CHECK_NEAR(f.cores, 1.0, 1e-9);
    /* The rate limit holds in a dry run too: no new action 30 s later. */
    CHECK(diagnose(a, "0000000000000002", T0 + 60 * S, "api", "cpu") == NULL);
    node_actions_close(a);

    exec_init(&x);
    a = open_acts(check_tmpdir(), ACT_MODE_OFF, &f, &x);
    int reads = f.reads;
    CHECK(diagnose(a, "0000000000000003", T0 + 30 * S, "api", "cpu") == NULL);
    CHECK_EQ(f.reads, reads); /* off does not even look */
    node_actions_close(a);
}

static void test_approval(void)
{
    struct fake_agent f;
    struct executor x;
    fake_init(&f, 1.0);
    exec_init(&x);
    struct node_actions *a =
        open_acts(check_tmpdir(), ACT_MODE_APPROVE, &f, &x);
    const struct node_action *act =
        diagnose(a, "0000000000000010", T0 + 30 * S, "api", "cpu");
    REQUIRE(act != NULL);
    CHECK_EQ(act->state, NODE_ACTION_PENDING);
    char id[NODE_ACTION_ID_LEN + 1];
    snprintf(id, sizeof id, "%s", act->id);
    /* While one waits, the service gets no other. */
    CHECK(diagnose(a, "0000000000000011", T0 + 200 * S, "api", "cpu") == NULL);
    CHECK_EQ(f.applies, 0);
    char err[SM_ERRMSG_SIZE];
    CHECK_EQ(node_actions_approve(a, "ffffffffffffffff", WALL, err),
             SM_ENOTFOUND);
    CHECK_OK(node_actions_approve(a, id, WALL, err));
    CHECK_EQ(node_actions_get(a, id)->state, NODE_ACTION_APPLIED);
    CHECK(node_actions_get(a, id)->approved);
    CHECK_EQ(f.applies, 1);
    CHECK_NEAR(f.cores, 1.5, 1e-9);
    CHECK_EQ(node_actions_approve(a, id, WALL, err), SM_ECONFLICT);
    CHECK(strstr(err, "applied") != NULL);
    node_actions_close(a);
}

static void test_verification_and_rollback(void)
{
    const char *dir = check_tmpdir();
    struct fake_agent f;
    struct executor x;
    fake_init(&f, 1.0);
    exec_init(&x);
    struct node_actions *a = open_acts(dir, ACT_MODE_ON, &f, &x);
    uint64_t w = T0 + 30 * S;
    const struct node_action *act =
        diagnose(a, "0000000000000020", w, "api", "cpu");
    REQUIRE(act != NULL);
    char id[NODE_ACTION_ID_LEN + 1];
    snprintf(id, sizeof id, "%s", act->id);
    /* Two windows with QoS still violated: it did not help. */
    node_actions_on_window(a, w + 30 * S, true, WALL);
    CHECK_EQ(node_actions_get(a, id)->state, NODE_ACTION_APPLIED);
    node_actions_on_window(a, w + 60 * S, true, WALL);
    CHECK_EQ(node_actions_get(a, id)->state, NODE_ACTION_NOT_HELPED);
    /* A replayed window already counted changes nothing. */
    node_actions_on_window(a, w + 60 * S, false, WALL);
    CHECK_EQ(node_actions_get(a, id)->state, NODE_ACTION_NOT_HELPED);
    /* The operator rolls it back: the old quota returns. */
    char err[SM_ERRMSG_SIZE];
    CHECK_OK(node_actions_rollback(a, id, WALL, err));
    CHECK_EQ(node_actions_get(a, id)->state, NODE_ACTION_ROLLED_BACK);
    CHECK_NEAR(f.cores, 1.0, 1e-9);
    CHECK_EQ(node_actions_rollback(a, id, WALL, err), SM_ECONFLICT);
    CHECK_EQ(node_actions_rollback(a, "0123456789abcdef", WALL, err),
             SM_ENOTFOUND);
    node_actions_close(a);

    /* A rollback that fails leaves a verified action verified. */
    fake_init(&f, 1.0);
    exec_init(&x);
    a = open_acts(check_tmpdir(), ACT_MODE_ON, &f, &x);
    act = diagnose(a, "0000000000000023", w, "api", "cpu");
    REQUIRE(act != NULL);
    snprintf(id, sizeof id, "%s", act->id);
    node_actions_on_window(a, w + 30 * S, false, WALL);
    node_actions_on_window(a, w + 60 * S, false, WALL);
    REQUIRE_EQ(node_actions_get(a, id)->state, NODE_ACTION_VERIFIED);
    f.fail_restore = 1;
    CHECK_OK(node_actions_rollback(a, id, WALL, err));
    CHECK_EQ(node_actions_get(a, id)->state, NODE_ACTION_VERIFIED);
    CHECK(strstr(node_actions_get(a, id)->error, "rollback") != NULL);
    CHECK_NEAR(f.cores, 1.5, 1e-9);
    node_actions_close(a);

    /* With rollback_unhelpful the controller rolls back by itself; an
     * action followed by a good window is verified. */
    struct node_actions_config c;
    act_plan_config_init(&c.plan);
    c.plan.mode = ACT_MODE_ON;
    c.rollback_unhelpful = true;
    fake_init(&f, 1.0);
    exec_init(&x);
    REQUIRE_OK(node_actions_open(check_tmpdir(), &c, &f.ops, &x.ops, &a, err));
    x.acts = a;
    act = diagnose(a, "0000000000000021", w, "api", "cpu");
    REQUIRE(act != NULL);
    snprintf(id, sizeof id, "%s", act->id);
    node_actions_on_window(a, w + 30 * S, true, WALL);
    node_actions_on_window(a, w + 60 * S, true, WALL);
    CHECK_EQ(node_actions_get(a, id)->state, NODE_ACTION_ROLLED_BACK);
    CHECK_EQ(f.restores, 1);
    CHECK_NEAR(f.cores, 1.0, 1e-9);
    act = diagnose(a, "0000000000000022", w + 200 * S, "db", "cpu");
    REQUIRE(act != NULL);
    snprintf(id, sizeof id, "%s", act->id);
    node_actions_on_window(a, w + 230 * S, false, WALL);
    CHECK_EQ(node_actions_get(a, id)->state, NODE_ACTION_APPLIED);
    node_actions_on_window(a, w + 260 * S, true, WALL);
    CHECK_EQ(node_actions_get(a, id)->state, NODE_ACTION_VERIFIED);
    node_actions_close(a);
}

/* Replaying the same windows after a restart settles nothing twice and
 * rebuilds the rate limit. */
static void test_replay_rebuilds_state(void)
{
    const char *dir = check_tmpdir();
    struct fake_agent f;
    struct executor x;
    fake_init(&f, 1.0);
    exec_init(&x);
    struct node_actions *a = open_acts(dir, ACT_MODE_ON, &f, &x);
    uint64_t w = T0 + 30 * S;
    node_actions_on_window(a, w, true, WALL);
    const struct node_action *act =
        diagnose(a, "0000000000000030", w, "api", "cpu");
    REQUIRE(act != NULL);
    char id[NODE_ACTION_ID_LEN + 1];
    snprintf(id, sizeof id, "%s", act->id);
    node_actions_on_window(a, w + 30 * S, false, WALL);
    node_actions_on_window(a, w + 40 * S, false, WALL);
    CHECK_EQ(node_actions_get(a, id)->state, NODE_ACTION_VERIFIED);
    node_actions_close(a);

    a = open_acts(dir, ACT_MODE_ON, &f, &x);
    node_actions_on_window(a, w, true, WALL);
    node_actions_on_window(a, w + 30 * S, false, WALL);
    node_actions_on_window(a, w + 40 * S, false, WALL);
    node_actions_resume(a, WALL);
    CHECK_EQ(node_actions_get(a, id)->state, NODE_ACTION_VERIFIED);
    /* 50 s after the action: still rate-limited after the restart. */
    node_actions_on_window(a, w + 50 * S, true, WALL);
    CHECK(diagnose(a, "0000000000000031", w + 50 * S, "api", "cpu") == NULL);
    CHECK_EQ(f.applies, 1);
    node_actions_close(a);
}

static void test_agent_failures(void)
{
    struct fake_agent f;
    struct executor x;
    fake_init(&f, 1.0);
    exec_init(&x);
    f.fail_read = 1;
    struct node_actions *a = open_acts(check_tmpdir(), ACT_MODE_ON, &f, &x);
    CHECK(diagnose(a, "0000000000000040", T0, "api", "cpu") == NULL);
    struct node_actions_stats st;
    node_actions_stats(a, &st);
    CHECK_EQ(st.not_planned, 1u);
    CHECK(st.agent_errors >= 1);
    f.fail_read = 0;
    f.fail_apply = 1;
    const struct node_action *act =
        diagnose(a, "0000000000000041", T0, "api", "cpu");
    REQUIRE(act != NULL);
    CHECK_EQ(act->state, NODE_ACTION_FAILED);
    CHECK(strstr(act->error, "permission denied") != NULL);
    CHECK_EQ(count_in(a, NODE_ACTION_FAILED), 1u);
    node_actions_close(a);
}

static void test_json_round_trip_and_rejects(void)
{
    struct fake_agent f;
    struct executor x;
    fake_init(&f, 1.0);
    exec_init(&x);
    struct node_actions *a = open_acts(check_tmpdir(), ACT_MODE_ON, &f, &x);
    const struct node_action *act =
        diagnose(a, "0000000000000050", T0, "api \"quoted\"", "cpu");
    REQUIRE(act != NULL);
    struct node_text b = {0};
    node_action_write_json(&b, act);
    REQUIRE(!b.failed);
    struct node_action back;
    char err[SM_ERRMSG_SIZE];
    REQUIRE_OK(node_action_parse((const uint8_t *)b.s, b.len, &back, err));
    CHECK_STR(back.id, act->id);
    CHECK_STR(back.service, act->service);
    CHECK_EQ(back.state, act->state);
    CHECK_EQ(back.prev.value, act->prev.value);
    CHECK_EQ(back.window_end_ns, act->window_end_ns);
    CHECK_NEAR(back.plan.to, act->plan.to, 1e-12);
    /* Every strict prefix is rejected. */
    for (size_t n = 0; n < b.len; n++) {
        CHECK_EQ(node_action_parse((const uint8_t *)b.s, n, &back, err),
                 SM_EMALFORMED);
    }
    const char *bad[] = {
        "{}",
        "[]",
        "{\"id\":\"x\"}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_EQ(node_action_parse((const uint8_t *)bad[i], strlen(bad[i]),
                                   &back, err),
                 SM_EMALFORMED);
    }
    free(b.s);
    struct node_text list = {0};
    enum node_action_state applied = NODE_ACTION_APPLIED;
    node_actions_list(a, 10, &applied, &list);
    REQUIRE(!list.failed);
    CHECK(strstr(list.s, act->id) != NULL);
    free(list.s);
    list = (struct node_text){0};
    enum node_action_state pending = NODE_ACTION_PENDING;
    node_actions_list(a, 10, &pending, &list);
    CHECK_STR(list.s, "{\"actions\":[]}");
    free(list.s);
    node_actions_close(a);
}

/* ---- The real agent on a fake cgroup v1 tree ---------------------------- */

static long read_long(const char *dir, const char *rel)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    FILE *fp = fopen(path, "r");
    REQUIRE(fp != NULL);
    long v = 0;
    REQUIRE(fscanf(fp, "%ld", &v) == 1);
    fclose(fp);
    return v;
}

static void test_real_agent_cgroup_v1(void)
{
    const char *root = check_tmpdir();
    check_put(root, "cpu/e2e/api/cpu.cfs_quota_us", "20000\n");
    check_put(root, "cpu/e2e/api/cpu.cfs_period_us", "100000\n");
    check_put(root, "memory/e2e/api/memory.limit_in_bytes", "268435456\n");
    check_put(root, "blkio/e2e/api/blkio.weight", "500\n");
    struct node_agent_config ac = {
        .cgroup_root = root,
        .cgroup_path = "e2e/{service}",
    };
    struct node_real_agent *ag = NULL;
    int ok = 0;
    char err[SM_ERRMSG_SIZE] = "";
    REQUIRE_OK(node_agent_open(&ac, &ag, &ok, err));
    CHECK(ok);
    CHECK_STR(node_agent_layout(ag), "v1");
    struct executor x;
    exec_init(&x);
    struct node_actions_config c;
    act_plan_config_init(&c.plan);
    c.plan.mode = ACT_MODE_ON;
    c.rollback_unhelpful = false;
    struct node_actions *a = NULL;
    REQUIRE_OK(node_actions_open(check_tmpdir(), &c, node_agent_ops(ag), &x.ops,
                                 &a, err));
    x.acts = a;
    const struct node_action *act =
        diagnose(a, "0000000000000060", T0, "api", "cpu");
    REQUIRE(act != NULL);
    CHECK_EQ(act->state, NODE_ACTION_APPLIED);
    /* 0.2 cores, +max(50%, 0.5 cores) = 0.7 cores. */
    CHECK_NEAR(act->plan.from, 0.2, 1e-9);
    CHECK_NEAR(act->plan.to, 0.7, 1e-9);
    CHECK_EQ(read_long(root, "cpu/e2e/api/cpu.cfs_quota_us"), 70000);
    CHECK_EQ(read_long(root, "cpu/e2e/api/cpu.cfs_period_us"), 100000);
    char id[NODE_ACTION_ID_LEN + 1];
    snprintf(id, sizeof id, "%s", act->id);
    CHECK_OK(node_actions_rollback(a, id, WALL, err));
    CHECK_EQ(node_actions_get(a, id)->state, NODE_ACTION_ROLLED_BACK);
    CHECK_EQ(read_long(root, "cpu/e2e/api/cpu.cfs_quota_us"), 20000);
    node_actions_on_window(a, T0 + 30 * S, true, WALL);
    node_actions_on_window(a, T0 + 60 * S, true, WALL);

    /* Memory: +25% of the limit. */
    act = diagnose(a, "0000000000000061", T0 + 600 * S, "api", "memory");
    REQUIRE(act != NULL);
    CHECK_EQ(act->plan.kind, ACT_KIND_MEMORY_LIMIT);
    CHECK_EQ(read_long(root, "memory/e2e/api/memory.limit_in_bytes"),
             335544320);
    /* A service without a cgroup gets no action, and the reason is logged. */
    CHECK(diagnose(a, "0000000000000062", T0 + 1200 * S, "nope", "cpu") ==
          NULL);
    node_actions_close(a);
    node_agent_close(ag);

    /* No cgroups at all: the agent opens, says why, and reads fail. */
    ac.cgroup_root = check_tmpdir();
    REQUIRE_OK(node_agent_open(&ac, &ag, &ok, err));
    CHECK(!ok);
    CHECK_STR(node_agent_layout(ag), "none");
    node_agent_close(ag);
    /* A bad scale-out template is refused at start. */
    ac.scale_out_cmd = "kubectl scale {oops}";
    CHECK(node_agent_open(&ac, &ag, &ok, err) != SM_OK);
    CHECK(strstr(err, "--scale-out-command") != NULL);
}

/* The scale-out command runs with its placeholders filled, no shell. */
static void test_real_agent_command(void)
{
    const char *dir = check_tmpdir();
    char out[1024], script[1024], tmpl[2048], text[2048];
    snprintf(out, sizeof out, "%s/ran", dir);
    snprintf(script, sizeof script, "%s/scale.sh", dir);
    snprintf(text, sizeof text, "#!/bin/sh\necho \"$1 $2 $3\" > %s\n", out);
    check_put(dir, "scale.sh", text);
    REQUIRE(chmod(script, 0755) == 0);
    snprintf(tmpl, sizeof tmpl, "%s {service} {resource} {amount}", script);
    struct node_agent_config ac = {
        .cgroup_root = check_tmpdir(),
        .scale_out_cmd = tmpl,
        .command_timeout_s = 10,
    };
    struct node_real_agent *ag = NULL;
    int ok;
    char err[SM_ERRMSG_SIZE] = "";
    int rv = node_agent_open(&ac, &ag, &ok, err);
    if (rv != SM_OK) {
        printf("# %s\n", err);
    }
    REQUIRE_OK(rv);
    struct node_action act;
    memset(&act, 0, sizeof act);
    snprintf(act.service, sizeof act.service, "web");
    snprintf(act.resource, sizeof act.resource, "other");
    act.plan.kind = ACT_KIND_SCALE_OUT;
    act.plan.from = 0;
    act.plan.to = 2;
    const struct node_agent *ops = node_agent_ops(ag);
    CHECK_OK(ops->apply(ops->arg, &act, err));
    FILE *fp = fopen(out, "r");
    REQUIRE(fp != NULL);
    char line[128] = "";
    REQUIRE(fgets(line, sizeof line, fp) != NULL);
    fclose(fp);
    CHECK_STR(line, "web other 2\n");
    node_agent_close(ag);

    ac.scale_out_cmd = "false";
    REQUIRE_OK(node_agent_open(&ac, &ag, &ok, err));
    ops = node_agent_ops(ag);
    CHECK_EQ(ops->apply(ops->arg, &act, err), SM_EIO);
    CHECK(strstr(err, "exit 1") != NULL);
    node_agent_close(ag);
}

static const struct check_test tests[] = {
    {"on: applied once, same action for the same diagnosis",
     test_on_applies_once},
    {"crash between decision and ack: applied once",
     test_crash_between_decision_and_ack},
    {"an interrupted scale-out is not run again", test_interrupted_command},
    {"dry-run records, off does nothing", test_dry_run_and_off},
    {"approval", test_approval},
    {"verification and rollback", test_verification_and_rollback},
    {"replay rebuilds the plan state", test_replay_rebuilds_state},
    {"agent failures", test_agent_failures},
    {"JSON round trip and rejects", test_json_round_trip_and_rejects},
    {"real agent on a fake cgroup v1 tree", test_real_agent_cgroup_v1},
    {"real agent: the scale-out command", test_real_agent_command},
};

CHECK_MAIN(tests, setup, teardown)
