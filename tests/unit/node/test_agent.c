/* The real actuation agent's optional actuators on fake trees: tc HTB
 * classes (a fake tc script), resctrl LLC ways (a fake resctrl tree) and
 * cpufreq limits (a fake cpufreq tree), each driven from a diagnosis
 * through the action store and rolled back; the "not configured" errors;
 * and the peer flags that configure them. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/log.h"
#include "check.h"
#include "node/actions.h"
#include "node/agent.h"
#include "node/config.h"
#include "node/render.h"
#include "node/textbuf.h"

static void setup(void)
{
    sm_log_set_sink(check_log_discard, NULL);
}

static void teardown(void)
{
    sm_log_set_sink(NULL, NULL);
}

#define S       1000000000ull
#define T0      (1800000000ull * S)
#define WALL    (1900000000ull * S)
#define CLASSES "100mbit,200mbit,500mbit,1gbit"

/* ---- Files --------------------------------------------------------------- */

/* A cgroup v1 tree with service "web" in e2e/web: @quota_us per 100 ms of
 * CPU (-1: unlimited), cpuset @cpus, and its threads 101 and 102 (one
 * process). */
static const char *make_cgroups(const char *quota_us, const char *cpus)
{
    const char *root = check_tmpdir();
    char q[32];
    snprintf(q, sizeof q, "%s\n", quota_us);
    check_put(root, "cpu/e2e/web/cpu.cfs_quota_us", q);
    check_put(root, "cpu/e2e/web/cpu.cfs_period_us", "100000\n");
    check_put(root, "cpu/e2e/web/tasks", "101\n102\n");
    check_put(root, "cpu/e2e/web/cgroup.procs", "101\n");
    check_put(root, "cpuset/e2e/web/cpuset.cpus", cpus);
    check_put(root, "memory/e2e/web/memory.limit_in_bytes", "268435456\n");
    return root;
}

/* ---- The store, with an inline executor ---------------------------------- */

struct rig
{
    struct node_real_agent *ag;
    struct node_actions *acts;
    struct node_action_executor exec;
};

static void exec_submit(void *arg, struct node_action_job *job)
{
    struct rig *r = arg;
    node_actions_job_run(job);
    node_actions_job_done(r->acts, job, WALL);
    free(job);
}

/* Opens the agent with @ac and an action store in mode on, capped by
 * node_agent_plan_limits() as the peer does. */
static void rig_open(struct rig *r, const struct node_agent_config *ac)
{
    memset(r, 0, sizeof *r);
    int ok = 0;
    char err[SM_ERRMSG_SIZE] = "";
    int rv = node_agent_open(ac, &r->ag, &ok, err);
    if (rv != SM_OK) {
        printf("# %s\n", err);
    }
    REQUIRE_OK(rv);
    REQUIRE(ok);
    struct node_actions_config c;
    act_plan_config_init(&c.plan);
    c.plan.mode = ACT_MODE_ON;
    c.plan.scale_out_enabled = false;
    c.rollback_unhelpful = false;
    node_agent_plan_limits(r->ag, &c.plan);
    r->exec = (struct node_action_executor){r, exec_submit};
    REQUIRE_OK(node_actions_open(check_tmpdir(), &c, node_agent_ops(r->ag),
                                 &r->exec, &r->acts, err));
}

static void rig_close(struct rig *r)
{
    node_actions_close(r->acts);
    node_agent_close(r->ag);
}

/* Diagnoses @resource of "web" in the window ending at @window_end and
 * returns the action's id (in a static buffer), or "" when none. */
static const char *diagnose(struct rig *r,
                            const char *diag,
                            uint64_t window_end,
                            const char *resource)
{
    static char id[NODE_ACTION_ID_LEN + 1];
    const struct node_action *act = NULL;
    CHECK_OK(node_actions_on_diagnosis(r->acts, diag, window_end, "web",
                                       resource, WALL, &act));
    id[0] = '\0';
    if (act != NULL) {
        snprintf(id, sizeof id, "%s", act->id);
        if (act->error[0] != '\0') {
            printf("# %s\n", act->error);
        }
    }
    return id;
}

/* The agent's read of "web" for @kind, through the node_agent interface. */
static int agent_read(struct node_real_agent *ag,
                      const char *service,
                      enum act_kind kind,
                      struct act_settings *cur,
                      char *err)
{
    const struct node_agent *ops = node_agent_ops(ag);
    struct act_setting prev;
    bool has_prev = false;
    act_settings_init(cur);
    return ops->read(ops->arg, service, kind, cur, &prev, &has_prev, err);
}

/* An action of @kind on @service from @from to @to, for direct calls. */
static struct node_action action(const char *service,
                                 enum act_kind kind,
                                 double from,
                                 double to)
{
    struct node_action a;
    memset(&a, 0, sizeof a);
    snprintf(a.service, sizeof a.service, "%s", service);
    a.plan.kind = kind;
    a.plan.from = from;
    a.plan.to = to;
    a.has_prev = true;
    return a;
}

/* ---- tc: a fake tc --------------------------------------------------------
 *
 * The fake logs each call's arguments, one per line and "--" after the
 * last, to DIR/argv. `-s class show dev eth0` prints class 1:10 with the
 * rate and ceil in DIR/rate and DIR/ceil; `class change` stores its rate
 * and ceil there, as the kernel would. */

static const char fake_tc[] =
    "#!/bin/sh\n"
    "d=$(dirname \"$0\")\n"
    "{ for a in \"$@\"; do printf '%s\\n' \"$a\"; done; echo --; } >> "
    "\"$d/argv\"\n"
    "if [ \"$1\" = -s ]; then\n"
    "  [ \"$5\" = eth0 ] || { echo \"Cannot find device \\\"$5\\\"\"; exit 1; "
    "}\n"
    "  echo \"class htb 1:1 root rate 1Gbit ceil 1Gbit burst 1375b cburst "
    "1375b\"\n"
    "  echo \"class htb 1:10 parent 1:1 leaf 10: prio 0 rate $(cat "
    "\"$d/rate\") ceil $(cat \"$d/ceil\") burst 1600b cburst 1600b\"\n"
    "  echo \" Sent 12345 bytes 67 pkt (dropped 0, overlimits 0 requeues "
    "0)\"\n"
    "  exit 0\n"
    "fi\n"
    "key=\n"
    "for a in \"$@\"; do\n"
    "  case $key in rate|ceil) echo \"$a\" > \"$d/$key\" ;; esac\n"
    "  key=$a\n"
    "done\n";

/* Makes the fake in a new directory with class 1:10 at @rate; stores its
 * path in @path. */
static const char *make_tc(const char *rate, char path[1024])
{
    const char *dir = check_tmpdir();
    check_put(dir, "tc", fake_tc);
    snprintf(path, 1024, "%s/tc", dir);
    REQUIRE(chmod(path, 0755) == 0);
    check_put(dir, "rate", rate);
    check_put(dir, "ceil", rate);
    check_put(dir, "argv", "");
    return dir;
}

/* How many times the fake ran `class change` with exactly the words
 * @change ("rate 500Mbit ceil 500Mbit"); clears the log. */
static int changes(const char *dir, const char *words)
{
    char want[512];
    snprintf(want, sizeof want,
             "class\nchange\ndev\neth0\nparent\n1:1\nclassid\n1:10\nhtb\n%s\n"
             "--\n",
             words);
    for (char *p = want; *p != '\0'; p++) {
        *p = *p == ' ' ? '\n' : *p;
    }
    int n = 0;
    const char *log = check_get(dir, "argv");
    for (const char *p = strstr(log, want); p != NULL;
         p = strstr(p + 1, want)) {
        n++;
    }
    check_put(dir, "argv", "");
    return n;
}

static void test_tc_network(void)
{
    char tc[1024];
    const char *dir = make_tc("200Mbit", tc);
    const char *classes[] = {"web=1:10"};
    struct node_agent_config ac = {
        .cgroup_root = make_cgroups("20000", "0-1\n"),
        .cgroup_path = "e2e/{service}",
        .tc_dev = "eth0",
        .tc_classes = CLASSES,
        .tc_class = classes,
        .n_tc_class = 1,
        .tc_path = tc,
        .resctrl_root = check_tmpdir(),
        .cpufreq_root = check_tmpdir(),
        .command_timeout_s = 10,
    };
    struct rig r;
    rig_open(&r, &ac);
    struct act_settings cur;
    char err[SM_ERRMSG_SIZE] = "";
    CHECK_OK(agent_read(r.ag, "web", ACT_KIND_NONE, &cur, err));
    CHECK_EQ(cur.net_class, 1); /* 200mbit is the second class */
    CHECK_NEAR(cur.cpu_cores, 0.2, 1e-12);
    CHECK_EQ(cur.llc_ways, 0u); /* no resctrl: unknown */
    (void)changes(dir, "");

    /* A network culprit: its class goes up one, 200 -> 500 Mbit. */
    char id[NODE_ACTION_ID_LEN + 1];
    snprintf(id, sizeof id, "%s",
             diagnose(&r, "00000000000000a0", T0, "network"));
    REQUIRE(id[0] != '\0');
    const struct node_action *act = node_actions_get(r.acts, id);
    CHECK_EQ(act->state, NODE_ACTION_APPLIED);
    CHECK_EQ(act->plan.kind, ACT_KIND_NET_CLASS);
    CHECK_NEAR(act->plan.from, 1, 0);
    CHECK_NEAR(act->plan.to, 2, 0);
    CHECK(act->has_prev);
    CHECK_EQ(changes(dir, "rate 500Mbit ceil 500Mbit"), 1);
    CHECK_STR(check_get(dir, "rate"), "500Mbit\n");

    /* Rollback: back to the class it started from. */
    CHECK_OK(node_actions_rollback(r.acts, id, WALL, err));
    CHECK_EQ(node_actions_get(r.acts, id)->state, NODE_ACTION_ROLLED_BACK);
    CHECK_EQ(changes(dir, "rate 200Mbit ceil 200Mbit"), 1);
    CHECK_STR(check_get(dir, "rate"), "200Mbit\n");

    /* At the last class of the list: no local step left (no scale-out
     * configured), and tc is not run to change anything. */
    node_actions_on_window(r.acts, T0 + 30 * S, true, WALL);
    node_actions_on_window(r.acts, T0 + 60 * S, true, WALL);
    check_put(dir, "rate", "1Gbit");
    check_put(dir, "ceil", "1Gbit");
    CHECK_STR(diagnose(&r, "00000000000000a1", T0 + 600 * S, "network"), "");
    CHECK_EQ(changes(dir, "rate 1Gbit ceil 1Gbit"), 0);
    rig_close(&r);
}

/* Services without a --tc-class, and hosts without tc. */
static void test_tc_not_configured(void)
{
    char tc[1024];
    (void)make_tc("200Mbit", tc);
    const char *classes[] = {"web=1:10"};
    struct node_agent_config ac = {
        .cgroup_root = make_cgroups("20000", "0-1\n"),
        .cgroup_path = "e2e/{service}",
        .resctrl_root = check_tmpdir(),
        .cpufreq_root = check_tmpdir(),
        .command_timeout_s = 10,
    };
    check_put(ac.cgroup_root, "cpu/e2e/api/cpu.cfs_quota_us", "-1\n");
    check_put(ac.cgroup_root, "cpu/e2e/api/cpu.cfs_period_us", "100000\n");
    /* No --tc-dev: reads leave the class unknown; actions say why. */
    struct node_real_agent *ag = NULL;
    int ok = 0;
    char err[SM_ERRMSG_SIZE] = "";
    REQUIRE_OK(node_agent_open(&ac, &ag, &ok, err));
    struct act_settings cur;
    CHECK_OK(agent_read(ag, "web", ACT_KIND_NONE, &cur, err));
    CHECK_EQ(cur.net_class, -1);
    CHECK_EQ(agent_read(ag, "web", ACT_KIND_NET_CLASS, &cur, err),
             SM_ENOTFOUND);
    CHECK_STR(err,
              "tc is not configured for service web: set --tc-dev and "
              "--tc-class");
    struct node_action a = action("web", ACT_KIND_NET_CLASS, 1, 2);
    const struct node_agent *ops = node_agent_ops(ag);
    CHECK_EQ(ops->apply(ops->arg, &a, err), SM_ENOTFOUND);
    CHECK(strstr(err, "tc is not configured for service web") != NULL);
    CHECK_EQ(ops->restore(ops->arg, &a, err), SM_ENOTFOUND);
    struct act_plan_config plan;
    act_plan_config_init(&plan);
    node_agent_plan_limits(ag, &plan);
    CHECK_EQ(plan.max_net_class, 3); /* the default, untouched */
    CHECK_EQ(plan.max_llc_ways, 0u);
    node_agent_close(ag);

    /* Configured for web only: api has no class. */
    ac.tc_dev = "eth0";
    ac.tc_classes = "100mbit,200mbit";
    ac.tc_class = classes;
    ac.n_tc_class = 1;
    ac.tc_path = tc;
    REQUIRE_OK(node_agent_open(&ac, &ag, &ok, err));
    node_agent_plan_limits(ag, &plan);
    CHECK_EQ(plan.max_net_class, 1); /* two classes */
    CHECK_EQ(agent_read(ag, "api", ACT_KIND_NET_CLASS, &cur, err),
             SM_ENOTFOUND);
    CHECK(strstr(err, "service api") != NULL);
    CHECK_OK(agent_read(ag, "web", ACT_KIND_NET_CLASS, &cur, err));
    CHECK_EQ(cur.net_class, 1);
    /* An index outside the list changes nothing. */
    a = action("web", ACT_KIND_NET_CLASS, 1, 2);
    ops = node_agent_ops(ag);
    CHECK_EQ(ops->apply(ops->arg, &a, err), SM_EINVAL);
    node_agent_close(ag);

    /* A tc program that is not there: the class is unknown, the read for
     * an action says why. */
    char missing[1100];
    snprintf(missing, sizeof missing, "%s.missing", tc);
    ac.tc_path = missing;
    REQUIRE_OK(node_agent_open(&ac, &ag, &ok, err));
    CHECK_OK(agent_read(ag, "web", ACT_KIND_NONE, &cur, err));
    CHECK_EQ(cur.net_class, -1);
    CHECK_EQ(agent_read(ag, "web", ACT_KIND_NET_CLASS, &cur, err),
             SM_ENOTFOUND);
    CHECK(strstr(err, "not found") != NULL);
    node_agent_close(ag);

    /* Bad tc settings are refused at open, naming the entry. */
    const char *bad[] = {"web=1:zz"};
    ac.tc_path = tc;
    ac.tc_class = bad;
    CHECK_EQ(node_agent_open(&ac, &ag, &ok, err), SM_EINVAL);
    CHECK(strstr(err, "--tc-class 'web=1:zz'") != NULL);
    const char *no_eq[] = {"web"};
    ac.tc_class = no_eq;
    CHECK_EQ(node_agent_open(&ac, &ag, &ok, err), SM_EINVAL);
    ac.tc_dev = NULL;
    ac.tc_class = classes;
    CHECK_EQ(node_agent_open(&ac, &ag, &ok, err), SM_EINVAL);
    CHECK(strstr(err, "--tc-dev") != NULL);
}

/* ---- resctrl: a fake tree -------------------------------------------------
 *
 * 12 ways; the operator left the default group 8 of them. A fake tree
 * has no kernel: a group directory the agent makes stays empty, where
 * resctrl would fill it with its files. */

static const char *make_resctrl(void)
{
    const char *root = check_tmpdir();
    check_put(root, "info/L3/cbm_mask", "fff\n");
    check_put(root, "info/L3/min_cbm_bits", "1\n");
    check_put(root, "schemata", "    L3:0=0ff;1=0ff\n    MB:0=100;1=100\n");
    check_put(root, "tasks", "");
    return root;
}

static void test_llc(void)
{
    const char *rdt = make_resctrl();
    struct node_agent_config ac = {
        .cgroup_root = make_cgroups("20000", "0-1\n"),
        .cgroup_path = "e2e/{service}",
        .resctrl_root = rdt,
        .cpufreq_root = check_tmpdir(),
    };
    struct rig r;
    rig_open(&r, &ac);
    struct act_plan_config plan;
    act_plan_config_init(&plan);
    node_agent_plan_limits(r.ag, &plan);
    CHECK_EQ(plan.max_llc_ways, 12u);
    plan.max_llc_ways = 6;
    node_agent_plan_limits(r.ag, &plan);
    CHECK_EQ(plan.max_llc_ways, 6u); /* a lower cap stays */

    /* Without a group of its own, web shares the default group's ways. */
    struct act_settings cur;
    char err[SM_ERRMSG_SIZE] = "";
    CHECK_OK(agent_read(r.ag, "web", ACT_KIND_NONE, &cur, err));
    CHECK_EQ(cur.llc_ways, 8u);

    /* Applying makes the group (empty in a fake tree: no kernel fills it),
     * and fails on the missing files, saying which. */
    const struct node_agent *ops = node_agent_ops(r.ag);
    struct node_action a = action("web", ACT_KIND_LLC_WAYS, 8, 10);
    CHECK(!check_is_dir(rdt, "sagemesh-web"));
    CHECK_EQ(ops->apply(ops->arg, &a, err), SM_ENOTFOUND);
    CHECK(check_is_dir(rdt, "sagemesh-web"));
    CHECK(strstr(err, "sagemesh-web/tasks") != NULL);

    /* What resctrl puts in a group, with 4 ways to start from. */
    check_put(rdt, "sagemesh-web/schemata", "L3:0=00f;1=00f\nMB:0=100;1=100\n");
    check_put(rdt, "sagemesh-web/tasks", "");
    CHECK_OK(agent_read(r.ag, "web", ACT_KIND_NONE, &cur, err));
    CHECK_EQ(cur.llc_ways, 4u);

    /* An LLC culprit: its threads move to its group, which gets 2 more
     * ways; the default group and the MB line are untouched. */
    char id[NODE_ACTION_ID_LEN + 1];
    snprintf(id, sizeof id, "%s", diagnose(&r, "00000000000000b0", T0, "llc"));
    REQUIRE(id[0] != '\0');
    const struct node_action *act = node_actions_get(r.acts, id);
    CHECK_EQ(act->state, NODE_ACTION_APPLIED);
    CHECK_EQ(act->plan.kind, ACT_KIND_LLC_WAYS);
    CHECK_NEAR(act->plan.from, 4, 0);
    CHECK_NEAR(act->plan.to, 6, 0);
    CHECK_STR(check_get(rdt, "sagemesh-web/schemata"),
              "L3:0=3f;1=3f\nMB:0=100;1=100\n");
    CHECK_STR(check_get(rdt, "sagemesh-web/tasks"), "101\n102\n");
    CHECK_STR(check_get(rdt, "schemata"),
              "    L3:0=0ff;1=0ff\n    MB:0=100;1=100\n");

    /* Rollback gives back the 4 ways. */
    CHECK_OK(node_actions_rollback(r.acts, id, WALL, err));
    CHECK_EQ(node_actions_get(r.acts, id)->state, NODE_ACTION_ROLLED_BACK);
    CHECK_STR(check_get(rdt, "sagemesh-web/schemata"),
              "L3:0=f;1=f\nMB:0=100;1=100\n");

    /* Without the thread list, cgroup.procs is used. */
    char path[1024];
    snprintf(path, sizeof path, "%s/cpu/e2e/web/tasks", ac.cgroup_root);
    REQUIRE(remove(path) == 0);
    check_put(rdt, "sagemesh-web/tasks", "");
    a = action("web", ACT_KIND_LLC_WAYS, 4, 5);
    CHECK_OK(ops->apply(ops->arg, &a, err));
    CHECK_STR(check_get(rdt, "sagemesh-web/tasks"), "101\n");
    CHECK_STR(check_get(rdt, "sagemesh-web/schemata"),
              "L3:0=1f;1=1f\nMB:0=100;1=100\n");
    /* A thread list that is not one is refused before any move. */
    check_put(ac.cgroup_root, "cpu/e2e/web/cgroup.procs", "101\nabc\n");
    check_put(rdt, "sagemesh-web/tasks", "");
    CHECK_EQ(ops->apply(ops->arg, &a, err), SM_EINVAL);
    CHECK(strstr(err, "cgroup.procs") != NULL);
    CHECK_STR(check_get(rdt, "sagemesh-web/tasks"), "");
    rig_close(&r);

    /* A service in the root cgroup: moving its threads would move the
     * whole host, so nothing is moved or written. */
    check_put(rdt, "sagemesh-api/schemata", "L3:0=f;1=f\n");
    check_put(rdt, "sagemesh-api/tasks", "");
    check_put(ac.cgroup_root, "cpu/tasks", "1\n2\n");
    ac.cgroup_path = "/";
    struct node_real_agent *ag = NULL;
    int ok = 0;
    REQUIRE_OK(node_agent_open(&ac, &ag, &ok, err));
    ops = node_agent_ops(ag);
    a = action("api", ACT_KIND_LLC_WAYS, 4, 6);
    CHECK_EQ(ops->apply(ops->arg, &a, err), SM_EINVAL);
    CHECK(strstr(err, "root cgroup") != NULL);
    CHECK_STR(check_get(rdt, "sagemesh-api/tasks"), "");
    CHECK_STR(check_get(rdt, "sagemesh-api/schemata"), "L3:0=f;1=f\n");
    node_agent_close(ag);
}

static void test_llc_not_mounted(void)
{
    struct node_agent_config ac = {
        .cgroup_root = make_cgroups("20000", "0-1\n"),
        .cgroup_path = "e2e/{service}",
        .resctrl_root = check_tmpdir(),
        .cpufreq_root = check_tmpdir(),
    };
    struct node_real_agent *ag = NULL;
    int ok = 0;
    char err[SM_ERRMSG_SIZE] = "";
    REQUIRE_OK(node_agent_open(&ac, &ag, &ok, err));
    struct act_settings cur;
    CHECK_OK(agent_read(ag, "web", ACT_KIND_NONE, &cur, err));
    CHECK_EQ(cur.llc_ways, 0u);
    CHECK_EQ(agent_read(ag, "web", ACT_KIND_LLC_WAYS, &cur, err), SM_ENOTFOUND);
    char want[1200];
    snprintf(want, sizeof want, "resctrl is not mounted at %s",
             ac.resctrl_root);
    CHECK(strstr(err, want) != NULL);
    const struct node_agent *ops = node_agent_ops(ag);
    struct node_action a = action("web", ACT_KIND_LLC_WAYS, 4, 6);
    CHECK_EQ(ops->apply(ops->arg, &a, err), SM_ENOTFOUND);
    CHECK(strstr(err, want) != NULL);
    CHECK_EQ(ops->restore(ops->arg, &a, err), SM_ENOTFOUND);
    node_agent_close(ag);

    /* Mounted without L3 allocation (memory bandwidth only). */
    check_put(ac.resctrl_root, "schemata", "MB:0=100\n");
    check_put(ac.resctrl_root, "info/L3/cbm_mask", "fff\n");
    check_put(ac.resctrl_root, "info/L3/min_cbm_bits", "1\n");
    REQUIRE_OK(node_agent_open(&ac, &ag, &ok, err));
    CHECK_EQ(agent_read(ag, "web", ACT_KIND_LLC_WAYS, &cur, err), SM_ENOTFOUND);
    CHECK(strstr(err, "resctrl is not usable at") != NULL);
    node_agent_close(ag);

    /* A bad group template is refused at open. */
    ac.resctrl_group = "a/{service}";
    CHECK_EQ(node_agent_open(&ac, &ag, &ok, err), SM_EINVAL);
    CHECK(strstr(err, "--resctrl-group") != NULL);
}

/* ---- cpufreq: a fake tree ------------------------------------------------ */

/* Adds cpuN/cpufreq: 0.8-3 GHz, limited to @cur kHz. */
static void add_cpu(const char *root, unsigned cpu, const char *cur)
{
    char rel[128];
    snprintf(rel, sizeof rel, "cpu%u/cpufreq/cpuinfo_min_freq", cpu);
    check_put(root, rel, "800000\n");
    snprintf(rel, sizeof rel, "cpu%u/cpufreq/cpuinfo_max_freq", cpu);
    check_put(root, rel, "3000000\n");
    snprintf(rel, sizeof rel, "cpu%u/cpufreq/scaling_max_freq", cpu);
    check_put(root, rel, cur);
}

static void test_cpufreq(void)
{
    const char *freq = check_tmpdir();
    add_cpu(freq, 0, "1500000\n");
    add_cpu(freq, 1, "1500000\n");
    add_cpu(freq, 2, "1000000\n");
    struct node_agent_config ac = {
        .cgroup_root = make_cgroups("-1", "0-1\n"),
        .cgroup_path = "e2e/{service}",
        .resctrl_root = check_tmpdir(),
        .cpufreq_root = freq,
    };
    struct rig r;
    rig_open(&r, &ac);
    struct act_settings cur;
    char err[SM_ERRMSG_SIZE] = "";
    CHECK_OK(agent_read(r.ag, "web", ACT_KIND_NONE, &cur, err));
    CHECK(!(cur.cpu_cores > 0)); /* unlimited */
    CHECK_EQ(cur.cpu_freq_khz, 1500000u);
    CHECK_EQ(cur.cpu_freq_max_khz, 3000000u);

    /* A CPU culprit without a quota: its CPUs (0-1) may run at 3 GHz;
     * CPU 2, outside its cpuset, is left alone. */
    char id[NODE_ACTION_ID_LEN + 1];
    snprintf(id, sizeof id, "%s", diagnose(&r, "00000000000000c0", T0, "cpu"));
    REQUIRE(id[0] != '\0');
    const struct node_action *act = node_actions_get(r.acts, id);
    CHECK_EQ(act->state, NODE_ACTION_APPLIED);
    CHECK_EQ(act->plan.kind, ACT_KIND_CPU_FREQ);
    CHECK_NEAR(act->plan.from, 1500000, 0);
    CHECK_NEAR(act->plan.to, 3000000, 0);
    CHECK_EQ(act->prev.knob, ACT_KNOB_CPUSET);
    CHECK_STR(act->prev.cpus, "0-1");
    CHECK_STR(check_get(freq, "cpu0/cpufreq/scaling_max_freq"), "3000000\n");
    CHECK_STR(check_get(freq, "cpu1/cpufreq/scaling_max_freq"), "3000000\n");
    CHECK_STR(check_get(freq, "cpu2/cpufreq/scaling_max_freq"), "1000000\n");

    /* The list shows it in MHz. */
    struct node_text list = {0};
    node_actions_list(r.acts, 10, NULL, &list);
    CHECK(strstr(list.s, "\"kind\":\"cpu_freq\"") != NULL);
    CHECK(strstr(list.s, "\"unit\":\"khz\"") != NULL);
    char *table = NULL;
    size_t table_len = 0;
    FILE *out = open_memstream(&table, &table_len);
    REQUIRE(out != NULL);
    CHECK_OK(node_render_actions(list.s, list.len, out, err));
    fclose(out);
    CHECK(strstr(table, "1500 MHz") != NULL);
    CHECK(strstr(table, "3000 MHz") != NULL);
    free(table);
    free(list.s);

    /* Rollback restores those CPUs' limit, even after the cpuset moved. */
    check_put(ac.cgroup_root, "cpuset/e2e/web/cpuset.cpus", "2\n");
    CHECK_OK(node_actions_rollback(r.acts, id, WALL, err));
    CHECK_EQ(node_actions_get(r.acts, id)->state, NODE_ACTION_ROLLED_BACK);
    CHECK_STR(check_get(freq, "cpu0/cpufreq/scaling_max_freq"), "1500000\n");
    CHECK_STR(check_get(freq, "cpu1/cpufreq/scaling_max_freq"), "1500000\n");
    CHECK_STR(check_get(freq, "cpu2/cpufreq/scaling_max_freq"), "1000000\n");

    /* An empty cpuset inherits: the CPUs the root lists as online. */
    check_put(ac.cgroup_root, "cpuset/e2e/web/cpuset.cpus", "\n");
    check_put(freq, "online", "0-2\n");
    CHECK_OK(agent_read(r.ag, "web", ACT_KIND_NONE, &cur, err));
    CHECK_EQ(cur.cpu_freq_khz, 1000000u);
    rig_close(&r);
}

static void test_cpufreq_not_writable(void)
{
    const char *freq = check_tmpdir();
    add_cpu(freq, 0, "1500000\n");
    struct node_agent_config ac = {
        .cgroup_root = make_cgroups("-1", "0\n"),
        .cgroup_path = "e2e/{service}",
        .resctrl_root = check_tmpdir(),
        .cpufreq_root = freq,
    };
    char path[1024];
    snprintf(path, sizeof path, "%s/cpu0/cpufreq/scaling_max_freq", freq);
    /* sysfs refuses writes to a file without a write bit, even to root. */
    REQUIRE(chmod(path, 0444) == 0);
    struct node_real_agent *ag = NULL;
    int ok = 0;
    char err[SM_ERRMSG_SIZE] = "";
    REQUIRE_OK(node_agent_open(&ac, &ag, &ok, err));
    struct act_settings cur;
    CHECK_OK(agent_read(ag, "web", ACT_KIND_NONE, &cur, err));
    CHECK_EQ(cur.cpu_freq_khz, 1500000u); /* readable all the same */
    CHECK_EQ(agent_read(ag, "web", ACT_KIND_CPU_FREQ, &cur, err), SM_ENOTFOUND);
    CHECK(strncmp(err, "cpufreq is not writable: ", 25) == 0);
    const struct node_agent *ops = node_agent_ops(ag);
    struct node_action a = action("web", ACT_KIND_CPU_FREQ, 1500000, 3000000);
    CHECK_EQ(ops->apply(ops->arg, &a, err), SM_ENOTFOUND);
    CHECK(strncmp(err, "cpufreq is not writable: ", 25) == 0);
    CHECK_STR(check_get(freq, "cpu0/cpufreq/scaling_max_freq"), "1500000\n");
    node_agent_close(ag);

    /* No cpufreq at all (a VM): the frequency is unknown, a CPU culprit
     * without a quota gets no action, and the peer runs on. */
    ac.cpufreq_root = check_tmpdir();
    REQUIRE_OK(node_agent_open(&ac, &ag, &ok, err));
    CHECK_OK(agent_read(ag, "web", ACT_KIND_NONE, &cur, err));
    CHECK_EQ(cur.cpu_freq_khz, 0u);
    CHECK_EQ(cur.cpu_freq_max_khz, 0u);
    CHECK_EQ(agent_read(ag, "web", ACT_KIND_CPU_FREQ, &cur, err), SM_ENOTFOUND);
    CHECK(strncmp(err, "cpufreq is not writable: ", 25) == 0);
    node_agent_close(ag);
}

/* ---- The peer's flags ---------------------------------------------------- */

/* Sets @key to @value on a fresh config with a data dir and validates;
 * returns the first error and its message in @err. */
static int config_with(const char *const *kv, size_t n, char *err)
{
    struct node_config c;
    node_config_init(&c);
    int rv = node_config_set(&c, "data-dir", "/tmp/x", err);
    for (size_t i = 0; rv == SM_OK && i + 1 < n; i += 2) {
        rv = node_config_set(&c, kv[i], kv[i + 1], err);
    }
    if (rv == SM_OK) {
        rv = node_config_validate(&c, err);
    }
    node_config_free(&c);
    return rv;
}

static void test_config(void)
{
    struct node_config c;
    node_config_init(&c);
    CHECK(c.tc_dev == NULL);
    CHECK_STR(c.tc_path, "tc");
    CHECK_STR(c.resctrl_root, "/sys/fs/resctrl");
    CHECK_STR(c.resctrl_group, "sagemesh-{service}");
    CHECK_STR(c.cpufreq_root, "/sys/devices/system/cpu");
    char err[SM_ERRMSG_SIZE] = "";
    const char *text =
        "tc-dev eth0\n"
        "tc-classes = 100mbit,1gbit\n"
        "tc-class web=1:10\n"
        "tc-class = api=1:20\n"
        "tc-path /sbin/tc\n"
        "resctrl-root /r\n"
        "resctrl-group sm-{service}\n"
        "cpufreq-root /c\n"
        "data-dir /tmp/x\n";
    REQUIRE_OK(node_config_parse(&c, text, strlen(text), err));
    CHECK_OK(node_config_validate(&c, err));
    CHECK_STR(c.tc_dev, "eth0");
    CHECK_EQ(c.n_tc_class, 2u);
    CHECK_STR(c.tc_class[1], "api=1:20");
    CHECK_STR(c.resctrl_group, "sm-{service}");
    CHECK_STR(c.cpufreq_root, "/c");
    node_config_free(&c);

    static const struct
    {
        const char *kv[8];
        size_t n;
        const char *says;
    } bad[] = {
        {{"tc-dev", "eth0"}, 2, "--tc-dev eth0 needs --tc-classes"},
        {{"tc-dev", "eth0", "tc-classes", "1gbit"},
         4,
         "at least one --tc-class"},
        {{"tc-dev", "eth0", "tc-classes", "200mbit,100mbit", "tc-class",
          "web=1:10"},
         6,
         "--tc-classes '200mbit,100mbit'"},
        {{"tc-dev", "eth0", "tc-classes", "1gbit", "tc-class", "web"},
         6,
         "must be SERVICE=CLASSID"},
        {{"tc-dev", "eth0", "tc-classes", "1gbit", "tc-class", "web=1:x"},
         6,
         "--tc-class 'web=1:x'"},
        {{"tc-dev", "eth0", "tc-classes", "1gbit", "tc-class", "web=1:10",
          "tc-class", "web=1:20"},
         8,
         "service web twice"},
        {{"tc-dev", "eth/0", "tc-classes", "1gbit", "tc-class", "web=1:10"},
         6,
         "--tc-dev eth/0"},
        {{"tc-class", "web=1:10"}, 2, "need --tc-dev"},
        {{"tc-classes", "1gbit"}, 2, "need --tc-dev"},
        {{"resctrl-group", "sagemesh"}, 2, "must contain {service}"},
        {{"resctrl-group", "a/{service}"}, 2, "--resctrl-group 'a/{service}'"},
        {{"cpufreq-root", ""}, 2, "must not be empty"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        CHECK_EQ(config_with(bad[i].kv, bad[i].n, err), SM_EINVAL);
        if (strstr(err, bad[i].says) == NULL) {
            check__fail(__FILE__, __LINE__, 0, "case %zu: \"%s\" lacks \"%s\"",
                        i, err, bad[i].says);
        }
    }
}

static const struct check_test tests[] = {
    {"tc: a network culprit's class goes up, rollback restores it",
     test_tc_network},
    {"tc: not configured, missing, bad settings", test_tc_not_configured},
    {"resctrl: an LLC culprit's group gets more ways, rollback restores",
     test_llc},
    {"resctrl: not mounted, no L3, bad template", test_llc_not_mounted},
    {"cpufreq: an unlimited CPU culprit's CPUs run at the maximum, rollback "
     "restores",
     test_cpufreq},
    {"cpufreq: not writable, absent", test_cpufreq_not_writable},
    {"peer flags for tc, resctrl and cpufreq", test_config},
};

CHECK_MAIN(tests, setup, teardown)
