/* Tests for the agent's cgroup actuator against fake v1 and v2 trees. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "actuate/actuate.h"
#include "base/err.h"
#include "check.h"

/* ---- Fake trees ---------------------------------------------------------- */

#define V2_SVC "system.slice/web.service"

/* A v2 tree with the kernel's defaults for a service's cgroup. */
static const char *make_v2(void)
{
    const char *root = check_tmpdir();
    check_put(root, "cgroup.controllers", "cpuset cpu io memory pids\n");
    check_put(root, V2_SVC "/cpu.max", "max 100000\n");
    check_put(root, V2_SVC "/cpuset.cpus", "\n");
    check_put(root, V2_SVC "/memory.max", "max\n");
    check_put(root, V2_SVC "/io.weight", "default 100\n");
    return root;
}

/* A v1 tree (cpu,cpuacct co-mounted) with defaults for docker/web. */
static const char *make_v1(void)
{
    const char *root = check_tmpdir();
    check_put(root, "cpu,cpuacct/docker/web/cpu.cfs_quota_us", "-1\n");
    check_put(root, "cpu,cpuacct/docker/web/cpu.cfs_period_us", "100000\n");
    check_put(root, "cpuset/docker/web/cpuset.cpus", "0-3\n");
    check_put(root, "memory/docker/web/memory.limit_in_bytes",
              "9223372036854771712\n");
    check_put(root, "blkio/docker/web/blkio.weight", "500\n");
    return root;
}

static struct act_cg *open_ok(const char *root)
{
    struct act_cg *cg = NULL;
    char err[SM_ERRMSG_SIZE];
    int rv = act_cg_open(root, &cg, err);
    if (rv != SM_OK) {
        printf("# %s\n", err);
    }
    REQUIRE_OK(rv);
    return cg;
}

static void group_ok(struct act_cg *cg,
                     const char *tmpl,
                     struct act_cg_group *g)
{
    char err[SM_ERRMSG_SIZE];
    int rv = act_cg_group_from_template(cg, tmpl, "web", g, err);
    if (rv != SM_OK) {
        printf("# %s\n", err);
    }
    REQUIRE_OK(rv);
}

/* ---- Detection ----------------------------------------------------------- */

static void test_detect(void)
{
    struct act_cg *cg = open_ok(make_v2());
    CHECK_EQ(act_cg_layout(cg), ACT_CG_V2);
    for (int c = 0; c < ACT_CG_CTRL__COUNT; c++) {
        CHECK(act_cg_has_ctrl(cg, (enum act_cg_ctrl)c));
    }
    act_cg_close(cg);

    cg = open_ok(make_v1());
    CHECK_EQ(act_cg_layout(cg), ACT_CG_V1);
    for (int c = 0; c < ACT_CG_CTRL__COUNT; c++) {
        CHECK(act_cg_has_ctrl(cg, (enum act_cg_ctrl)c));
    }
    act_cg_close(cg);

    /* A v1 host with only memory mounted, cpu as plain "cpu". */
    const char *root = check_tmpdir();
    check_mkdirs(root, "memory");
    cg = open_ok(root);
    CHECK_EQ(act_cg_layout(cg), ACT_CG_V1);
    CHECK(act_cg_has_ctrl(cg, ACT_CG_CTRL_MEMORY));
    CHECK(!act_cg_has_ctrl(cg, ACT_CG_CTRL_CPU));
    CHECK(!act_cg_has_ctrl(cg, (enum act_cg_ctrl)42));
    act_cg_close(cg);
    check_mkdirs(root, "cpu");
    cg = open_ok(root);
    CHECK(act_cg_has_ctrl(cg, ACT_CG_CTRL_CPU));
    act_cg_close(cg);

    /* Neither layout; a missing root. */
    char err[SM_ERRMSG_SIZE];
    struct act_cg *none = (struct act_cg *)&err;
    const char *empty = check_tmpdir();
    CHECK_EQ(act_cg_open(empty, &none, err), SM_ENOTFOUND);
    CHECK(strstr(err, empty) != NULL);
    CHECK(none == (struct act_cg *)&err);
    char missing[1024];
    snprintf(missing, sizeof missing, "%s/nope", empty);
    CHECK_EQ(act_cg_open(missing, &none, err), SM_ENOTFOUND);
    char longroot[1100];
    memset(longroot, 'a', sizeof longroot - 1);
    longroot[sizeof longroot - 1] = '\0';
    CHECK_EQ(act_cg_open(longroot, &none, err), SM_EINVAL);
    act_cg_close(NULL);

    CHECK_STR(act_cg_layout_name(ACT_CG_V1), "v1");
    CHECK_STR(act_cg_layout_name(ACT_CG_V2), "v2");
    CHECK_STR(act_cg_layout_name((enum act_cg_layout)7), "unknown");
    CHECK_STR(act_knob_name(ACT_KNOB_IO_WEIGHT), "io");
    CHECK_STR(act_knob_name((enum act_knob)9), "unknown");
    CHECK_STR(act_cg_ctrl_name(ACT_CG_CTRL_CPUSET), "cpuset");
    CHECK_STR(act_cg_ctrl_name((enum act_cg_ctrl)9), "unknown");
    CHECK_STR(act_cg_file_name(ACT_CG_FILE_MEMORY_LIMIT),
              "memory.limit_in_bytes");
    CHECK_STR(act_cg_file_name((enum act_cg_file)99), "unknown");
}

static void test_detect_out_of_memory(void)
{
    check_heap_install();
    check_heap_fault(0, 1);
    struct act_cg *cg = NULL;
    char err[SM_ERRMSG_SIZE];
    CHECK_EQ(act_cg_open(make_v2(), &cg, err), SM_ENOMEM);
    CHECK(cg == NULL);
    check_heap_uninstall();
}

/* Read-only: detection of this machine's real tree, if there is one. */
static void test_detect_real_host(void)
{
    struct stat st;
    if (stat("/sys/fs/cgroup", &st) != 0 || !S_ISDIR(st.st_mode)) {
        check_skip("no /sys/fs/cgroup on this machine");
    }
    struct act_cg *cg = NULL;
    char err[SM_ERRMSG_SIZE];
    int rv = act_cg_open(NULL, &cg, err);
    if (rv == SM_ENOTFOUND) {
        check_skip("/sys/fs/cgroup holds no cgroup tree: %s", err);
    }
    REQUIRE_OK(rv);
    printf("# this host uses cgroup %s\n",
           act_cg_layout_name(act_cg_layout(cg)));
    act_cg_close(cg);
}

/* ---- Service cgroups ----------------------------------------------------- */

static void test_template(void)
{
    char err[SM_ERRMSG_SIZE];
    struct act_cg_group g;
    struct act_cg *cg = open_ok(make_v2());
    group_ok(cg, "system.slice/{service}.service", &g);
    for (int c = 0; c < ACT_CG_CTRL__COUNT; c++) {
        CHECK(g.has[c]);
        CHECK_STR(g.path[c], V2_SVC);
    }
    group_ok(cg, "/system.slice/{service}.service/", &g);
    CHECK_STR(g.path[ACT_CG_CTRL_CPU], V2_SVC);
    group_ok(cg, "system.slice", &g); /* no placeholder is fine */
    CHECK_STR(g.path[ACT_CG_CTRL_IO], "system.slice");
    group_ok(cg, "", &g); /* the root cgroup */
    CHECK_STR(g.path[ACT_CG_CTRL_IO], "");

    CHECK_EQ(act_cg_group_from_template(cg, "docker/{service}", "web", &g, err),
             SM_ENOTFOUND);
    CHECK(strstr(err, "docker/web") != NULL);
    const char *bad_tmpl[] = {
        "{name}/x",     "{service",          "a}b",
        "../{service}", "a/../../{service}", "{service}/.."};
    for (size_t i = 0; i < sizeof bad_tmpl / sizeof bad_tmpl[0]; i++) {
        CHECK_EQ(act_cg_group_from_template(cg, bad_tmpl[i], "web", &g, err),
                 SM_EINVAL);
    }
    const char *bad_svc[] = {"", "a/b", "..", "."};
    for (size_t i = 0; i < sizeof bad_svc / sizeof bad_svc[0]; i++) {
        CHECK_EQ(
            act_cg_group_from_template(cg, "x/{service}", bad_svc[i], &g, err),
            SM_EINVAL);
    }
    /* ".." smuggled in through the service name is caught too. */
    CHECK_EQ(act_cg_group_from_template(cg, "{service}.", ".", &g, err),
             SM_EINVAL);
    char huge[2048];
    memset(huge, 'x', sizeof huge - 1);
    huge[sizeof huge - 1] = '\0';
    CHECK_EQ(act_cg_group_from_template(cg, huge, "web", &g, err), SM_EINVAL);
    CHECK_EQ(act_cg_group_from_template(cg, "{service}", huge, &g, err),
             SM_EINVAL);
    act_cg_close(cg);

    /* v1: only the hierarchies that hold the directory. */
    const char *root = make_v1();
    cg = open_ok(root);
    check_put(root, "memory/other/web/memory.limit_in_bytes", "-1\n");
    group_ok(cg, "other/{service}", &g);
    CHECK(g.has[ACT_CG_CTRL_MEMORY]);
    CHECK(!g.has[ACT_CG_CTRL_CPU]);
    CHECK(!g.has[ACT_CG_CTRL_CPUSET]);
    CHECK(!g.has[ACT_CG_CTRL_IO]);
    group_ok(cg, "docker/{service}", &g);
    for (int c = 0; c < ACT_CG_CTRL__COUNT; c++) {
        CHECK(g.has[c]);
        CHECK_STR(g.path[c], "docker/web");
    }
    act_cg_close(cg);
}

static void test_parse_proc_cgroup(void)
{
    char err[SM_ERRMSG_SIZE];
    struct act_cg_group g;
    const char v2[] = "0::/system.slice/web.service\n";
    CHECK_OK(act_cg_parse_proc_cgroup(ACT_CG_V2, v2, strlen(v2), &g, err));
    for (int c = 0; c < ACT_CG_CTRL__COUNT; c++) {
        CHECK(g.has[c]);
        CHECK_STR(g.path[c], V2_SVC);
    }
    CHECK_OK(act_cg_parse_proc_cgroup(ACT_CG_V2, "0::/", 4, &g, err));
    CHECK(g.has[ACT_CG_CTRL_CPU]);
    CHECK_STR(g.path[ACT_CG_CTRL_CPU], "");

    const char v1[] =
        "12:pids:/docker/web\n"
        "11:cpu,cpuacct:/docker/web\n"
        "10:memory:/docker/mem\n"
        "9:cpuset:/\n"
        "8:blkio:/docker/web\n"
        "1:name=systemd:/docker/web\n"
        "0::/user.slice\n";
    CHECK_OK(act_cg_parse_proc_cgroup(ACT_CG_V1, v1, strlen(v1), &g, err));
    CHECK_STR(g.path[ACT_CG_CTRL_CPU], "docker/web");
    CHECK_STR(g.path[ACT_CG_CTRL_MEMORY], "docker/mem");
    CHECK_STR(g.path[ACT_CG_CTRL_CPUSET], "");
    CHECK_STR(g.path[ACT_CG_CTRL_IO], "docker/web");
    for (int c = 0; c < ACT_CG_CTRL__COUNT; c++) {
        CHECK(g.has[c]);
    }
    /* cpuacct alone is not cpu; v1 lines in a v2 parse are ignored. */
    const char acct[] = "3:cpuacct:/a\n";
    CHECK_OK(act_cg_parse_proc_cgroup(ACT_CG_V1, acct, strlen(acct), &g, err));
    CHECK(!g.has[ACT_CG_CTRL_CPU]);
    CHECK_OK(act_cg_parse_proc_cgroup(ACT_CG_V2, v1, 20, &g, err));
    CHECK(!g.has[ACT_CG_CTRL_CPU]);
    CHECK_OK(act_cg_parse_proc_cgroup(ACT_CG_V2, "", 0, &g, err));

    const char *bad[] = {
        "0:/x\n",       "x::/a\n",      "0::relative\n",
        "0::\n",        "0::/a/../b\n", "4:memory:/..\n",
        ":memory:/a\n", "-1::/a\n",     "0::/a\n0::/b/..\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        enum act_cg_layout l = strstr(bad[i], "memory") ? ACT_CG_V1 : ACT_CG_V2;
        int rv = act_cg_parse_proc_cgroup(l, bad[i], strlen(bad[i]), &g, err);
        if (rv != SM_EINVAL) {
            printf("# accepted bad case %zu\n", i);
        }
        CHECK_EQ(rv, SM_EINVAL);
    }
    static char big[ACT_CG_FILE_TEXT_MAX + 2];
    memset(big, '\n', sizeof big);
    CHECK_EQ(act_cg_parse_proc_cgroup(ACT_CG_V2, big, sizeof big, &g, err),
             SM_EINVAL);
    static char longpath[ACT_CG_PATH_SIZE + 16];
    memcpy(longpath, "0::/", 4);
    memset(longpath + 4, 'p', sizeof longpath - 4);
    CHECK_EQ(
        act_cg_parse_proc_cgroup(ACT_CG_V2, longpath, sizeof longpath, &g, err),
        SM_EINVAL);
}

/* A fake /proc: two "web" processes (17 and 42), systemd, noise. */
static const char *make_proc(const char *cgroup17)
{
    const char *proc = check_tmpdir();
    check_put(proc, "1/comm", "systemd\n");
    check_put(proc, "1/cgroup", "0::/init.scope\n");
    check_put(proc, "42/comm", "web\n");
    check_put(proc, "42/cgroup", "0::/other\n");
    check_put(proc, "17/comm", "web\n");
    check_put(proc, "17/cgroup", cgroup17);
    check_put(proc, "99/cgroup", "0::/vanished\n"); /* no comm: exited */
    check_put(proc, "self/comm", "web\n");          /* not a pid */
    check_put(proc, "0/comm", "web\n");             /* not a pid either */
    check_put(proc, "averyverylongna/comm", "x\n");
    check_put(proc, "5/comm",
              "averyverylongna\n"); /* comm is truncated to 15 */
    check_put(proc, "5/cgroup", "0::/long\n");
    check_put(proc, "cpuinfo", "processor: 0\n");
    return proc;
}

static void test_process_discovery(void)
{
    char err[SM_ERRMSG_SIZE];
    struct act_cg_group g;
    int pid = 0;
    struct act_cg *cg = open_ok(make_v2());
    const char *proc = make_proc("0::/system.slice/web.service\n");
    CHECK_OK(act_cg_group_from_process(cg, proc, "web", &g, &pid, err));
    CHECK_EQ(pid, 17);
    CHECK_STR(g.path[ACT_CG_CTRL_MEMORY], V2_SVC);
    CHECK_OK(act_cg_group_from_process(cg, proc, "averyverylongname", &g, NULL,
                                       err));
    CHECK_STR(g.path[ACT_CG_CTRL_CPU], "long");

    /* The discovered group drives the knobs. */
    struct act_setting s;
    CHECK_OK(act_cg_read(cg, &g, ACT_KNOB_MEMORY, &s, err) == SM_ENOTFOUND
                 ? SM_OK
                 : SM_EINTERNAL);
    CHECK_OK(act_cg_group_from_process(cg, proc, "web", &g, &pid, err));
    CHECK_OK(act_cg_read(cg, &g, ACT_KNOB_MEMORY, &s, err));
    CHECK(s.unlimited);

    pid = -5;
    CHECK_EQ(act_cg_group_from_process(cg, proc, "nginx", &g, &pid, err),
             SM_ENOTFOUND);
    CHECK(strstr(err, "nginx") != NULL);
    CHECK_EQ(pid, -5);
    CHECK_EQ(act_cg_group_from_process(cg, proc, "", &g, &pid, err), SM_EINVAL);
    char missing[1024];
    snprintf(missing, sizeof missing, "%s/none", proc);
    CHECK_EQ(act_cg_group_from_process(cg, missing, "web", &g, &pid, err),
             SM_ENOTFOUND);
    CHECK(strstr(err, missing) != NULL);
    act_cg_close(cg);

    /* Malformed cgroup file; and a process whose cgroup file vanished. */
    cg = open_ok(make_v2());
    proc = make_proc("garbage\n");
    CHECK_EQ(act_cg_group_from_process(cg, proc, "web", &g, &pid, err),
             SM_EINVAL);
    CHECK(strstr(err, "/17/cgroup") != NULL);
    char gone[1024];
    snprintf(gone, sizeof gone, "%s/17/cgroup", proc);
    REQUIRE(unlink(gone) == 0);
    CHECK_EQ(act_cg_group_from_process(cg, proc, "web", &g, &pid, err),
             SM_ENOTFOUND);
    act_cg_close(cg);

    /* v1: per-controller paths, unmounted controllers dropped. */
    const char *root = check_tmpdir();
    check_mkdirs(root, "cpu,cpuacct/docker/web");
    check_mkdirs(root, "memory/docker/web");
    cg = open_ok(root);
    proc = make_proc(
        "11:cpu,cpuacct:/docker/web\n10:memory:/docker/web\n"
        "9:cpuset:/docker/web\n1:name=systemd:/x\n");
    CHECK_OK(act_cg_group_from_process(cg, proc, "web", &g, &pid, err));
    CHECK(g.has[ACT_CG_CTRL_CPU]);
    CHECK(g.has[ACT_CG_CTRL_MEMORY]);
    CHECK(!g.has[ACT_CG_CTRL_CPUSET]);
    CHECK(!g.has[ACT_CG_CTRL_IO]);
    proc = make_proc("9:cpuset:/docker/web\n");
    CHECK_EQ(act_cg_group_from_process(cg, proc, "web", &g, &pid, err),
             SM_ENOTFOUND);
    act_cg_close(cg);
}

/* ---- Knobs --------------------------------------------------------------- */

/* Applies @want expecting SM_OK and @changed; returns the previous value. */
static struct act_setting apply_ok(struct act_cg *cg,
                                   const struct act_cg_group *g,
                                   const struct act_setting *want,
                                   bool expect_changed)
{
    struct act_setting prev;
    bool changed = !expect_changed;
    char err[SM_ERRMSG_SIZE];
    int rv = act_cg_apply(cg, g, want, &prev, &changed, err);
    if (rv != SM_OK) {
        printf("# %s\n", err);
    }
    CHECK_OK(rv);
    CHECK_EQ(changed, expect_changed);
    return prev;
}

static void test_cpu_v2(void)
{
    const char *root = make_v2();
    struct act_cg *cg = open_ok(root);
    struct act_cg_group g;
    group_ok(cg, "system.slice/{service}.service", &g);
    char err[SM_ERRMSG_SIZE];
    struct act_setting s, want, prev;
    CHECK_OK(act_cg_read(cg, &g, ACT_KNOB_CPU_QUOTA, &s, err));
    CHECK(s.unlimited);
    CHECK_EQ(s.period, 100000);

    act_setting_cpu(&want, false, 50000, 100000);
    prev = apply_ok(cg, &g, &want, true);
    CHECK(prev.unlimited);
    CHECK_STR(check_get(root, V2_SVC "/cpu.max"), "50000 100000\n");
    apply_ok(cg, &g, &want, false); /* same value: no-op */
    CHECK_OK(act_cg_read(cg, &g, ACT_KNOB_CPU_QUOTA, &s, err));
    CHECK(act_setting_equal(&s, &want));

    act_setting_cpu(&want, false, 250000, 50000); /* 5 CPUs */
    apply_ok(cg, &g, &want, true);
    CHECK_STR(check_get(root, V2_SVC "/cpu.max"), "250000 50000\n");

    apply_ok(cg, &g, &prev, true); /* roll back */
    CHECK_STR(check_get(root, V2_SVC "/cpu.max"), "max 100000\n");
    /* A NULL @prev and @changed are allowed. */
    CHECK_OK(act_cg_apply(cg, &g, &prev, NULL, NULL, err));
    act_cg_close(cg);
}

static void test_cpu_v1(void)
{
    const char *root = make_v1();
    struct act_cg *cg = open_ok(root);
    struct act_cg_group g;
    group_ok(cg, "docker/{service}", &g);
    char err[SM_ERRMSG_SIZE];
    struct act_setting s, want, prev;
    CHECK_OK(act_cg_read(cg, &g, ACT_KNOB_CPU_QUOTA, &s, err));
    CHECK(s.unlimited);
    CHECK_EQ(s.period, 100000);

    act_setting_cpu(&want, false, 150000, 100000);
    prev = apply_ok(cg, &g, &want, true);
    CHECK_STR(check_get(root, "cpu,cpuacct/docker/web/cpu.cfs_quota_us"),
              "150000\n");
    CHECK_STR(check_get(root, "cpu,cpuacct/docker/web/cpu.cfs_period_us"),
              "100000\n");
    apply_ok(cg, &g, &want, false);

    act_setting_cpu(&want, false, 20000, 10000);
    apply_ok(cg, &g, &want, true);
    CHECK_STR(check_get(root, "cpu,cpuacct/docker/web/cpu.cfs_quota_us"),
              "20000\n");
    CHECK_STR(check_get(root, "cpu,cpuacct/docker/web/cpu.cfs_period_us"),
              "10000\n");

    apply_ok(cg, &g, &prev, true);
    CHECK_STR(check_get(root, "cpu,cpuacct/docker/web/cpu.cfs_quota_us"),
              "-1\n");
    CHECK_STR(check_get(root, "cpu,cpuacct/docker/web/cpu.cfs_period_us"),
              "100000\n");

    /* The quota file replaced by a directory: the period written first is
     * restored, and the error names the quota file. */
    char q[1024];
    snprintf(q, sizeof q, "%s/cpu,cpuacct/docker/web/cpu.cfs_quota_us", root);
    act_setting_cpu(&want, false, 20000, 10000);
    REQUIRE(unlink(q) == 0);
    REQUIRE(mkdir(q, 0755) == 0);
    bool changed = true;
    CHECK_EQ(act_cg_apply(cg, &g, &want, &prev, &changed, err), SM_EIO);
    CHECK(strstr(err, "cpu.cfs_quota_us") != NULL);
    CHECK(!changed);
    CHECK_STR(check_get(root, "cpu,cpuacct/docker/web/cpu.cfs_period_us"),
              "100000\n");
    act_cg_close(cg);
}

static void test_cpuset(void)
{
    char err[SM_ERRMSG_SIZE];
    struct act_setting s, want, prev;
    struct act_cg_group g;

    const char *root = make_v2();
    struct act_cg *cg = open_ok(root);
    group_ok(cg, "system.slice/{service}.service", &g);
    CHECK_OK(act_cg_read(cg, &g, ACT_KNOB_CPUSET, &s, err));
    CHECK_STR(s.cpus, "");
    act_setting_cpuset(&want, "6,0,1,2,3");
    prev = apply_ok(cg, &g, &want, true);
    CHECK_STR(check_get(root, V2_SVC "/cpuset.cpus"), "0-3,6\n");
    act_setting_cpuset(&want, "0-3,6");
    apply_ok(cg, &g, &want, false);
    apply_ok(cg, &g, &prev, true);
    CHECK_STR(check_get(root, V2_SVC "/cpuset.cpus"), "\n");
    act_cg_close(cg);

    root = make_v1();
    cg = open_ok(root);
    group_ok(cg, "docker/{service}", &g);
    CHECK_OK(act_cg_read(cg, &g, ACT_KNOB_CPUSET, &s, err));
    CHECK_STR(s.cpus, "0-3");
    act_setting_cpuset(&want, "0-7");
    prev = apply_ok(cg, &g, &want, true);
    CHECK_STR(check_get(root, "cpuset/docker/web/cpuset.cpus"), "0-7\n");
    apply_ok(cg, &g, &prev, true);
    CHECK_STR(check_get(root, "cpuset/docker/web/cpuset.cpus"), "0-3\n");
    act_setting_cpuset(&want, "0-");
    CHECK_EQ(act_cg_apply(cg, &g, &want, &prev, NULL, err), SM_EINVAL);
    CHECK_STR(check_get(root, "cpuset/docker/web/cpuset.cpus"), "0-3\n");
    act_cg_close(cg);
}

static void test_memory(void)
{
    char err[SM_ERRMSG_SIZE];
    struct act_setting s, want, prev;
    struct act_cg_group g;

    const char *root = make_v2();
    struct act_cg *cg = open_ok(root);
    group_ok(cg, "system.slice/{service}.service", &g);
    CHECK_OK(act_cg_read(cg, &g, ACT_KNOB_MEMORY, &s, err));
    CHECK(s.unlimited);
    act_setting_memory(&want, false, 512u << 20);
    prev = apply_ok(cg, &g, &want, true);
    CHECK_STR(check_get(root, V2_SVC "/memory.max"), "536870912\n");
    apply_ok(cg, &g, &want, false);
    apply_ok(cg, &g, &prev, true);
    CHECK_STR(check_get(root, V2_SVC "/memory.max"), "max\n");
    apply_ok(cg, &g, &prev, false);
    act_cg_close(cg);

    root = make_v1();
    cg = open_ok(root);
    group_ok(cg, "docker/{service}", &g);
    CHECK_OK(act_cg_read(cg, &g, ACT_KNOB_MEMORY, &s, err));
    CHECK(s.unlimited); /* the kernel's huge number */
    act_setting_memory(&want, true, 0);
    apply_ok(cg, &g, &want, false); /* "-1" and the huge number agree */
    act_setting_memory(&want, false, 1u << 30);
    prev = apply_ok(cg, &g, &want, true);
    CHECK_STR(check_get(root, "memory/docker/web/memory.limit_in_bytes"),
              "1073741824\n");
    apply_ok(cg, &g, &prev, true);
    CHECK_STR(check_get(root, "memory/docker/web/memory.limit_in_bytes"),
              "-1\n");
    act_setting_memory(&want, true, 0);
    apply_ok(cg, &g, &want, false);
    act_setting_memory(&want, false, UINT64_C(1) << 63);
    CHECK_EQ(act_cg_apply(cg, &g, &want, &prev, NULL, err), SM_EINVAL);
    CHECK(strstr(err, "memory.limit_in_bytes") != NULL);
    act_cg_close(cg);
}

static void test_io_weight(void)
{
    char err[SM_ERRMSG_SIZE];
    struct act_setting s, want, prev;
    struct act_cg_group g;

    const char *root = make_v2();
    struct act_cg *cg = open_ok(root);
    group_ok(cg, "system.slice/{service}.service", &g);
    CHECK_OK(act_cg_read(cg, &g, ACT_KNOB_IO_WEIGHT, &s, err));
    CHECK_EQ(s.value, 100);
    CHECK_EQ(s.native, 0);
    act_setting_io_weight(&want, 400);
    prev = apply_ok(cg, &g, &want, true);
    CHECK_STR(check_get(root, V2_SVC "/io.weight"), "default 400\n");
    apply_ok(cg, &g, &want, false);
    apply_ok(cg, &g, &prev, true);
    CHECK_STR(check_get(root, V2_SVC "/io.weight"), "default 100\n");
    act_setting_io_weight(&want, 10001);
    CHECK_EQ(act_cg_apply(cg, &g, &want, &prev, NULL, err), SM_EINVAL);
    act_setting_io_weight(&want, 0);
    CHECK_EQ(act_cg_apply(cg, &g, &want, &prev, NULL, err), SM_EINVAL);
    CHECK_STR(check_get(root, V2_SVC "/io.weight"), "default 100\n");
    act_cg_close(cg);

    root = make_v1();
    check_put(root, "blkio/docker/web/blkio.weight", "503\n");
    cg = open_ok(root);
    group_ok(cg, "docker/{service}", &g);
    CHECK_OK(act_cg_read(cg, &g, ACT_KNOB_IO_WEIGHT, &s, err));
    CHECK_EQ(s.value, 100);
    CHECK_EQ(s.native, 503);
    act_setting_io_weight(&want, 200);
    prev = apply_ok(cg, &g, &want, true);
    CHECK_STR(check_get(root, "blkio/docker/web/blkio.weight"), "1000\n");
    apply_ok(cg, &g, &want, false);
    act_setting_io_weight(&want, 5000); /* clamps to the v1 maximum */
    apply_ok(cg, &g, &want, false);
    act_setting_io_weight(&want, 1);
    apply_ok(cg, &g, &want, true);
    CHECK_STR(check_get(root, "blkio/docker/web/blkio.weight"), "10\n");
    apply_ok(cg, &g, &prev, true); /* exact, thanks to @native */
    CHECK_STR(check_get(root, "blkio/docker/web/blkio.weight"), "503\n");
    apply_ok(cg, &g, &prev, false);
    act_cg_close(cg);
}

static void test_weight_conversion(void)
{
    CHECK_EQ(act_cg_blkio_to_io_weight(500), 100);
    CHECK_EQ(act_cg_io_to_blkio_weight(100), 500);
    CHECK_EQ(act_cg_blkio_to_io_weight(10), 2);
    CHECK_EQ(act_cg_blkio_to_io_weight(1000), 200);
    CHECK_EQ(act_cg_io_to_blkio_weight(10000), 1000);
    CHECK_EQ(act_cg_io_to_blkio_weight(1), 10);
    CHECK_EQ(act_cg_io_to_blkio_weight(0), 10);
    CHECK_EQ(act_cg_blkio_to_io_weight(0), 1);
    CHECK_EQ(act_cg_blkio_to_io_weight(UINT64_MAX), 10000);
    CHECK_EQ(act_cg_io_to_blkio_weight(UINT64_MAX), 1000);
    /* Multiples of 5 in the v1 range survive a round trip. */
    for (uint64_t b = 10; b <= 1000; b += 5) {
        CHECK_EQ(act_cg_io_to_blkio_weight(act_cg_blkio_to_io_weight(b)), b);
    }
    /* Monotone over the v2 range. */
    uint64_t last = 0;
    for (uint64_t w = 1; w <= 10000; w++) {
        uint64_t b = act_cg_io_to_blkio_weight(w);
        CHECK(b >= last && b >= 10 && b <= 1000);
        last = b;
    }
}

static void test_equal(void)
{
    struct act_setting a, b;
    act_setting_cpuset(&a, "0,1,2,5");
    act_setting_cpuset(&b, "0-2,5");
    CHECK(act_setting_equal(&a, &b));
    act_setting_cpuset(&b, "0-2");
    CHECK(!act_setting_equal(&a, &b));
    act_setting_cpuset(&a, "bad");
    act_setting_cpuset(&b, "bad");
    CHECK(act_setting_equal(&a, &b));
    act_setting_cpu(&a, true, 5000, 100000);
    act_setting_cpu(&b, true, 7000, 100000);
    CHECK(act_setting_equal(&a, &b));
    act_setting_cpu(&b, true, 0, 50000);
    CHECK(!act_setting_equal(&a, &b));
    act_setting_memory(&b, true, 0);
    CHECK(!act_setting_equal(&a, &b));
    act_setting_memory(&a, true, 0);
    CHECK(act_setting_equal(&a, &b));
    act_setting_memory(&a, false, 0);
    CHECK(!act_setting_equal(&a, &b));
    act_setting_io_weight(&a, 100);
    act_setting_io_weight(&b, 100);
    b.native = 503;
    CHECK(act_setting_equal(&a, &b));
    a.knob = (enum act_knob)9;
    b.knob = (enum act_knob)9;
    CHECK(!act_setting_equal(&a, &b));
}

/* ---- Parsers ------------------------------------------------------------- */

struct parse_case
{
    enum act_cg_file file;
    const char *text;
};

static void test_parse_ok(void)
{
    char err[SM_ERRMSG_SIZE];
    struct act_setting s;
    memset(&s, 0, sizeof s);
    CHECK_OK(act_cg_parse(ACT_CG_FILE_CPU_MAX, "max 100000\n", 11, &s, err));
    CHECK(s.unlimited);
    CHECK_EQ(s.period, 100000);
    CHECK_OK(act_cg_parse(ACT_CG_FILE_CPU_MAX, "1000 1000", 9, &s, err));
    CHECK(!s.unlimited);
    CHECK_EQ(s.value, 1000);
    CHECK_OK(act_cg_parse(ACT_CG_FILE_CFS_QUOTA, "-1\n", 3, &s, err));
    CHECK(s.unlimited);
    CHECK_EQ(s.period, 1000); /* kept */
    CHECK_OK(act_cg_parse(ACT_CG_FILE_CFS_PERIOD, "1000000\n", 8, &s, err));
    CHECK_EQ(s.period, 1000000);
    CHECK(s.unlimited); /* kept */
    CHECK_OK(
        act_cg_parse(ACT_CG_FILE_CPUSET_CPUS, "3,1-2,2,7-7,1023", 16, &s, err));
    CHECK_STR(s.cpus, "1-3,7,1023");
    CHECK_EQ(s.knob, ACT_KNOB_CPUSET);
    CHECK_OK(act_cg_parse(ACT_CG_FILE_MEMORY_MAX, "0\n", 2, &s, err));
    CHECK(!s.unlimited);
    CHECK_EQ(s.value, 0);
    CHECK_OK(act_cg_parse(ACT_CG_FILE_MEMORY_LIMIT, "4611686018427387903", 19,
                          &s, err));
    CHECK(!s.unlimited);
    CHECK_OK(act_cg_parse(ACT_CG_FILE_MEMORY_LIMIT, "4611686018427387904", 19,
                          &s, err));
    CHECK(s.unlimited);
    const char io[] = "default 250\n8:0 1000\n259:1 1\n";
    CHECK_OK(act_cg_parse(ACT_CG_FILE_IO_WEIGHT, io, strlen(io), &s, err));
    CHECK_EQ(s.value, 250);
    CHECK_OK(act_cg_parse(ACT_CG_FILE_BLKIO_WEIGHT, "10", 2, &s, err));
    CHECK_EQ(s.value, 2);
    CHECK_EQ(s.native, 10);

    /* Everything formatted parses back to the same setting. */
    struct act_setting in[6];
    act_setting_cpu(&in[0], false, 33000, 1000000);
    act_setting_cpu(&in[1], true, 0, 1000);
    act_setting_cpuset(&in[2], "9,8,0-4");
    act_setting_memory(&in[3], false, 123456789);
    act_setting_memory(&in[4], true, 0);
    act_setting_io_weight(&in[5], 10000);
    for (int f = 0; f < ACT_CG_FILE__COUNT; f++) {
        for (int i = 0; i < 6; i++) {
            char buf[ACT_CG_CPUS_SIZE + 64];
            int rv = act_cg_format((enum act_cg_file)f, &in[i], buf, sizeof buf,
                                   err);
            if (rv == SM_EINVAL) {
                continue; /* another knob's file */
            }
            if (f == ACT_CG_FILE_BLKIO_WEIGHT) {
                continue; /* lossy: checked in the conversion test */
            }
            REQUIRE_OK(rv);
            struct act_setting back = in[i];
            back.value ^= 1; /* must be overwritten where the file says */
            back.period ^= 1;
            CHECK_OK(act_cg_parse((enum act_cg_file)f, buf, strlen(buf), &back,
                                  err));
            if (f == ACT_CG_FILE_CFS_QUOTA) {
                back.period = in[i].period;
            } else if (f == ACT_CG_FILE_CFS_PERIOD) {
                back.value = in[i].value;
            } else if (in[i].knob != ACT_KNOB_CPU_QUOTA) {
                back.period = in[i].period;
            }
            CHECK(act_setting_equal(&back, &in[i]));
        }
    }
}

static void test_parse_errors(void)
{
    static const struct parse_case bad[] = {
        {ACT_CG_FILE_CPU_MAX, ""},
        {ACT_CG_FILE_CPU_MAX, "max"},
        {ACT_CG_FILE_CPU_MAX, "max 100000 1"},
        {ACT_CG_FILE_CPU_MAX, "max  100000"},
        {ACT_CG_FILE_CPU_MAX, "MAX 100000"},
        {ACT_CG_FILE_CPU_MAX, "999 100000"},
        {ACT_CG_FILE_CPU_MAX, "-1 100000"},
        {ACT_CG_FILE_CPU_MAX, "5000 999"},
        {ACT_CG_FILE_CPU_MAX, "5000 1000001"},
        {ACT_CG_FILE_CPU_MAX, "5000 100000\n\n"},
        {ACT_CG_FILE_CPU_MAX, " 5000 100000"},
        {ACT_CG_FILE_CPU_MAX, "99999999999999999999999 100000"},
        {ACT_CG_FILE_CFS_QUOTA, ""},
        {ACT_CG_FILE_CFS_QUOTA, "-2"},
        {ACT_CG_FILE_CFS_QUOTA, "max"},
        {ACT_CG_FILE_CFS_QUOTA, "500"},
        {ACT_CG_FILE_CFS_QUOTA, "+5000"},
        {ACT_CG_FILE_CFS_QUOTA, "18446744073709551616"},
        {ACT_CG_FILE_CFS_PERIOD, "-1"},
        {ACT_CG_FILE_CFS_PERIOD, "0"},
        {ACT_CG_FILE_CFS_PERIOD, "2000000"},
        {ACT_CG_FILE_CFS_PERIOD, "1e5"},
        {ACT_CG_FILE_CPUSET_CPUS, ","},
        {ACT_CG_FILE_CPUSET_CPUS, "0,"},
        {ACT_CG_FILE_CPUSET_CPUS, ",0"},
        {ACT_CG_FILE_CPUSET_CPUS, "0,,1"},
        {ACT_CG_FILE_CPUSET_CPUS, "3-1"},
        {ACT_CG_FILE_CPUSET_CPUS, "0-"},
        {ACT_CG_FILE_CPUSET_CPUS, "-3"},
        {ACT_CG_FILE_CPUSET_CPUS, "1-2-3"},
        {ACT_CG_FILE_CPUSET_CPUS, "1024"},
        {ACT_CG_FILE_CPUSET_CPUS, "0-1024"},
        {ACT_CG_FILE_CPUSET_CPUS, "0 1"},
        {ACT_CG_FILE_CPUSET_CPUS, "a"},
        {ACT_CG_FILE_MEMORY_MAX, ""},
        {ACT_CG_FILE_MEMORY_MAX, "-1"},
        {ACT_CG_FILE_MEMORY_MAX, "1G"},
        {ACT_CG_FILE_MEMORY_MAX, "max\n\n"},
        {ACT_CG_FILE_MEMORY_LIMIT, ""},
        {ACT_CG_FILE_MEMORY_LIMIT, "max"},
        {ACT_CG_FILE_MEMORY_LIMIT, "-2"},
        {ACT_CG_FILE_IO_WEIGHT, ""},
        {ACT_CG_FILE_IO_WEIGHT, "100"},
        {ACT_CG_FILE_IO_WEIGHT, "default"},
        {ACT_CG_FILE_IO_WEIGHT, "default 0"},
        {ACT_CG_FILE_IO_WEIGHT, "default 10001"},
        {ACT_CG_FILE_IO_WEIGHT, "8:0 100\ndefault 100"},
        {ACT_CG_FILE_IO_WEIGHT, "default 100\n8:0"},
        {ACT_CG_FILE_IO_WEIGHT, "default 100\n8 100"},
        {ACT_CG_FILE_IO_WEIGHT, "default 100\nx:0 100"},
        {ACT_CG_FILE_IO_WEIGHT, "default 100\n8:0 0"},
        {ACT_CG_FILE_IO_WEIGHT, "default 100\n\n"},
        {ACT_CG_FILE_BLKIO_WEIGHT, ""},
        {ACT_CG_FILE_BLKIO_WEIGHT, "9"},
        {ACT_CG_FILE_BLKIO_WEIGHT, "1001"},
        {ACT_CG_FILE_BLKIO_WEIGHT, "default 500"},
    };
    char err[SM_ERRMSG_SIZE];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct act_setting s;
        memset(&s, 0x5a, sizeof s);
        struct act_setting before = s;
        int rv = act_cg_parse(bad[i].file, bad[i].text, strlen(bad[i].text), &s,
                              err);
        if (rv != SM_EINVAL) {
            printf("# %s accepted bad case %zu\n",
                   act_cg_file_name(bad[i].file), i);
        }
        CHECK_EQ(rv, SM_EINVAL);
        CHECK(strstr(err, act_cg_file_name(bad[i].file)) != NULL);
        CHECK(memcmp(&s, &before, sizeof s) == 0);
    }
    struct act_setting s;
    CHECK_EQ(act_cg_parse((enum act_cg_file)99, "1", 1, &s, err), SM_EINVAL);
    CHECK_EQ(act_cg_parse(ACT_CG_FILE_CFS_PERIOD, "100\0000", 5, &s, err),
             SM_EINVAL);
    static char big[ACT_CG_FILE_TEXT_MAX + 1];
    memset(big, '1', sizeof big);
    CHECK_EQ(act_cg_parse(ACT_CG_FILE_MEMORY_MAX, big, sizeof big, &s, err),
             SM_EINVAL);
    /* Every other cpu: too long for the canonical text. */
    static char alt[ACT_CG_MAX_CPUS * 3];
    size_t n = 0;
    for (int c = 0; c < ACT_CG_MAX_CPUS; c += 2) {
        n += (size_t)snprintf(alt + n, sizeof alt - n, "%s%d", c ? "," : "", c);
    }
    CHECK_EQ(act_cg_parse(ACT_CG_FILE_CPUSET_CPUS, alt, n, &s, err), SM_EINVAL);
}

static void test_format_errors(void)
{
    char err[SM_ERRMSG_SIZE];
    char buf[64];
    struct act_setting s;
    act_setting_cpu(&s, false, 50000, 100000);
    CHECK_OK(act_cg_format(ACT_CG_FILE_CPU_MAX, &s, buf, sizeof buf, err));
    CHECK_STR(buf, "50000 100000\n");
    CHECK_EQ(act_cg_format(ACT_CG_FILE_MEMORY_MAX, &s, buf, sizeof buf, err),
             SM_EINVAL);
    CHECK_EQ(act_cg_format(ACT_CG_FILE_CPU_MAX, &s, buf, 5, err), SM_ETOOBIG);
    CHECK_EQ(act_cg_format((enum act_cg_file)99, &s, buf, sizeof buf, err),
             SM_EINVAL);
    act_setting_cpu(&s, false, 999, 100000);
    CHECK_EQ(act_cg_format(ACT_CG_FILE_CFS_QUOTA, &s, buf, sizeof buf, err),
             SM_EINVAL);
    act_setting_cpu(&s, true, 0, 0);
    CHECK_EQ(act_cg_format(ACT_CG_FILE_CPU_MAX, &s, buf, sizeof buf, err),
             SM_EINVAL);
    act_setting_cpu(&s, true, 0, 100000);
    CHECK_OK(act_cg_format(ACT_CG_FILE_CFS_QUOTA, &s, buf, sizeof buf, err));
    CHECK_STR(buf, "-1\n");
    CHECK_OK(act_cg_format(ACT_CG_FILE_CFS_PERIOD, &s, buf, sizeof buf, err));
    CHECK_STR(buf, "100000\n");
    act_setting_memory(&s, true, 0);
    CHECK_OK(act_cg_format(ACT_CG_FILE_MEMORY_MAX, &s, buf, sizeof buf, err));
    CHECK_STR(buf, "max\n");
    act_setting_io_weight(&s, 300);
    CHECK_OK(act_cg_format(ACT_CG_FILE_BLKIO_WEIGHT, &s, buf, sizeof buf, err));
    CHECK_STR(buf, "1000\n");
    s.native = 5; /* out of the v1 range: ignored */
    CHECK_OK(act_cg_format(ACT_CG_FILE_BLKIO_WEIGHT, &s, buf, sizeof buf, err));
    CHECK_STR(buf, "1000\n");
    act_setting_cpuset(&s, "x");
    CHECK_EQ(act_cg_format(ACT_CG_FILE_CPUSET_CPUS, &s, buf, sizeof buf, err),
             SM_EINVAL);
    memset(s.cpus, '1', sizeof s.cpus); /* not NUL-terminated */
    CHECK_EQ(act_cg_format(ACT_CG_FILE_CPUSET_CPUS, &s, buf, sizeof buf, err),
             SM_EINVAL);
    struct act_cg *cg = open_ok(make_v2());
    struct act_cg_group g;
    group_ok(cg, "system.slice/{service}.service", &g);
    s.knob = (enum act_knob)17;
    CHECK_EQ(act_cg_apply(cg, &g, &s, NULL, NULL, err), SM_EINVAL);
    CHECK_EQ(act_cg_read(cg, &g, (enum act_knob)17, &s, err), SM_EINVAL);
    act_cg_close(cg);
}

/* ---- Failures ------------------------------------------------------------ */

static void test_missing_and_bad_files(void)
{
    char err[SM_ERRMSG_SIZE];
    struct act_setting s, want, prev;
    struct act_cg_group g;
    const char *root = make_v2();
    struct act_cg *cg = open_ok(root);
    group_ok(cg, "system.slice/{service}.service", &g);

    /* A missing knob file: SM_ENOTFOUND naming it, nothing created. */
    char path[1024];
    snprintf(path, sizeof path, "%s/" V2_SVC "/memory.max", root);
    REQUIRE(unlink(path) == 0);
    CHECK_EQ(act_cg_read(cg, &g, ACT_KNOB_MEMORY, &s, err), SM_ENOTFOUND);
    CHECK(strstr(err, path) != NULL);
    act_setting_memory(&want, false, 4096);
    bool changed = true;
    CHECK_EQ(act_cg_apply(cg, &g, &want, &prev, &changed, err), SM_ENOTFOUND);
    CHECK(!changed);
    CHECK_STR(check_get(root, V2_SVC "/memory.max"), "<missing>");

    /* A directory in place of the knob file. */
    snprintf(path, sizeof path, "%s/" V2_SVC "/cpu.max", root);
    REQUIRE(unlink(path) == 0);
    REQUIRE(mkdir(path, 0755) == 0);
    CHECK_EQ(act_cg_read(cg, &g, ACT_KNOB_CPU_QUOTA, &s, err), SM_EIO);
    CHECK(strstr(err, "cpu.max") != NULL);

    /* Unparseable content: SM_EINVAL naming the file, nothing written. */
    check_put(root, V2_SVC "/io.weight", "garbage\n");
    act_setting_io_weight(&want, 100);
    CHECK_EQ(act_cg_apply(cg, &g, &want, &prev, &changed, err), SM_EINVAL);
    CHECK(strstr(err, "io.weight") != NULL);
    CHECK_STR(check_get(root, V2_SVC "/io.weight"), "garbage\n");

    /* A group without the controller, or the cgroup gone. */
    struct act_cg_group none;
    memset(&none, 0, sizeof none);
    CHECK_EQ(act_cg_read(cg, &none, ACT_KNOB_CPUSET, &s, err), SM_ENOTFOUND);
    CHECK(strstr(err, "cpuset") != NULL);
    snprintf(none.path[ACT_CG_CTRL_CPUSET], ACT_CG_PATH_SIZE, "gone");
    none.has[ACT_CG_CTRL_CPUSET] = true;
    CHECK_EQ(act_cg_read(cg, &none, ACT_KNOB_CPUSET, &s, err), SM_ENOTFOUND);
    CHECK(strstr(err, "gone/cpuset.cpus") != NULL);
    /* A hand-made group escaping the tree is refused. */
    snprintf(none.path[ACT_CG_CTRL_CPUSET], ACT_CG_PATH_SIZE, "a/../..");
    CHECK_EQ(act_cg_read(cg, &none, ACT_KNOB_CPUSET, &s, err), SM_EINVAL);
    act_cg_close(cg);

    /* A file too large for a knob. */
    root = make_v1();
    static char big[ACT_CG_FILE_TEXT_MAX + 100];
    memset(big, '1', sizeof big - 1);
    check_put(root, "blkio/docker/web/blkio.weight", big);
    cg = open_ok(root);
    group_ok(cg, "docker/{service}", &g);
    CHECK_EQ(act_cg_read(cg, &g, ACT_KNOB_IO_WEIGHT, &s, err), SM_EINVAL);
    CHECK(strstr(err, "blkio.weight") != NULL);
    act_cg_close(cg);
}

/* Only meaningful for a non-root user: root ignores file modes. */
static void test_permission_denied(void)
{
    if (geteuid() == 0) {
        check_skip("running as root, which ignores file modes");
    }
    char err[SM_ERRMSG_SIZE];
    struct act_setting want, prev;
    struct act_cg_group g;
    const char *root = make_v2();
    struct act_cg *cg = open_ok(root);
    group_ok(cg, "system.slice/{service}.service", &g);
    char path[1024];
    snprintf(path, sizeof path, "%s/" V2_SVC "/memory.max", root);
    REQUIRE(chmod(path, 0444) == 0);
    act_setting_memory(&want, false, 4096);
    CHECK_EQ(act_cg_apply(cg, &g, &want, &prev, NULL, err), SM_EPERM);
    CHECK(strstr(err, "permission denied") != NULL);
    CHECK(strstr(err, path) != NULL);
    act_cg_close(cg);
}

static void test_no_writes_outside(void)
{
    const char *base = check_tmpdir();
    char root[1024];
    snprintf(root, sizeof root, "%s/tree", base);
    check_put(base, "tree/cgroup.controllers", "cpu memory\n");
    check_put(base, "tree/svc/memory.max", "max\n");
    check_put(base, "memory.max", "sentinel\n");
    check_put(base, "svc/memory.max", "sentinel\n");
    struct act_cg *cg = open_ok(root);
    struct act_cg_group g;
    char err[SM_ERRMSG_SIZE];
    CHECK_EQ(act_cg_group_from_template(cg, "../{service}", "svc", &g, err),
             SM_EINVAL);
    CHECK_EQ(act_cg_group_from_template(cg, "{service}", "..", &g, err),
             SM_EINVAL);
    CHECK_EQ(act_cg_parse_proc_cgroup(ACT_CG_V2, "0::/../svc", 10, &g, err),
             SM_EINVAL);
    /* A group pointing at the parent by hand is refused before any I/O. */
    memset(&g, 0, sizeof g);
    g.has[ACT_CG_CTRL_MEMORY] = true;
    snprintf(g.path[ACT_CG_CTRL_MEMORY], ACT_CG_PATH_SIZE, "..");
    struct act_setting want, prev;
    act_setting_memory(&want, false, 4096);
    CHECK_EQ(act_cg_apply(cg, &g, &want, &prev, NULL, err), SM_EINVAL);
    CHECK_EQ(act_cg_group_from_template(cg, "{service}", "web", &g, err),
             SM_ENOTFOUND);
    CHECK_OK(act_cg_group_from_template(cg, "{service}", "svc", &g, err));
    bool changed = false;
    CHECK_OK(act_cg_apply(cg, &g, &want, &prev, &changed, err));
    CHECK(changed);
    CHECK_STR(check_get(base, "tree/svc/memory.max"), "4096\n");
    CHECK_STR(check_get(base, "memory.max"), "sentinel\n");
    CHECK_STR(check_get(base, "svc/memory.max"), "sentinel\n");
    CHECK_STR(check_get(base, "tree/web"), "<missing>");
    act_cg_close(cg);
}

static const struct check_test tests[] = {
    {"detect layouts", test_detect},
    {"detect out of memory", test_detect_out_of_memory},
    {"detect the real host read-only", test_detect_real_host},
    {"path templates", test_template},
    {"parse /proc/PID/cgroup", test_parse_proc_cgroup},
    {"process discovery", test_process_discovery},
    {"cpu quota v2", test_cpu_v2},
    {"cpu quota v1", test_cpu_v1},
    {"cpuset v1 and v2", test_cpuset},
    {"memory v1 and v2", test_memory},
    {"io weight v1 and v2", test_io_weight},
    {"blkio and io weight conversion", test_weight_conversion},
    {"setting equality", test_equal},
    {"parse and format round trip", test_parse_ok},
    {"parse errors", test_parse_errors},
    {"format errors", test_format_errors},
    {"missing and bad knob files", test_missing_and_bad_files},
    {"permission denied", test_permission_denied},
    {"no writes outside the tree", test_no_writes_outside},
};

CHECK_MAIN(tests, NULL, NULL)
