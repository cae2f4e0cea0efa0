/* Tests for the agent's cpufreq actuator against fake sysfs trees. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "actuate/actuate.h"
#include "base/err.h"
#include "check.h"

/* ---- Fake trees -----------------------------------------------------------
 */

/* Adds cpuN/cpufreq with the given limits (kHz) under @root. */
static void add_cpu(const char *root,
                    unsigned cpu,
                    unsigned min,
                    unsigned max,
                    unsigned cur)
{
    char rel[128], val[32];
    snprintf(rel, sizeof rel, "%s/cpu%u", root, cpu);
    REQUIRE(mkdir(rel, 0755) == 0 || errno == EEXIST);
    snprintf(rel, sizeof rel, "%s/cpu%u/cpufreq", root, cpu);
    REQUIRE(mkdir(rel, 0755) == 0 || errno == EEXIST);
    snprintf(rel, sizeof rel, "cpu%u/cpufreq/cpuinfo_min_freq", cpu);
    snprintf(val, sizeof val, "%u\n", min);
    check_put(root, rel, val);
    snprintf(rel, sizeof rel, "cpu%u/cpufreq/cpuinfo_max_freq", cpu);
    snprintf(val, sizeof val, "%u\n", max);
    check_put(root, rel, val);
    snprintf(rel, sizeof rel, "cpu%u/cpufreq/scaling_max_freq", cpu);
    snprintf(val, sizeof val, "%u\n", cur);
    check_put(root, rel, val);
    snprintf(rel, sizeof rel, "cpu%u/cpufreq/scaling_governor", cpu);
    check_put(root, rel, "powersave\n");
}

/* CPUs 0-3 at 0.8-3.6 GHz capped at 2 GHz, CPU 6 (an efficient core) at
 * 0.8-2.4 GHz capped at 1.2 GHz, CPU 7 present without cpufreq. */
static const char *make_tree(void)
{
    const char *root = check_tmpdir();
    for (unsigned c = 0; c < 4; c++) {
        add_cpu(root, c, 800000, 3600000, 2000000);
    }
    add_cpu(root, 6, 800000, 2400000, 1200000);
    char path[1024];
    snprintf(path, sizeof path, "%s/cpu7", root);
    REQUIRE(mkdir(path, 0755) == 0);
    return root;
}

#define SCALING(n) "cpu" #n "/cpufreq/scaling_max_freq"

/* ---- Parsers --------------------------------------------------------------
 */

static void test_parse_khz(void)
{
    char err[SM_ERRMSG_SIZE];
    uint32_t k = 0;
    CHECK_OK(act_cpufreq_parse_khz("3600000\n", 8, &k, err));
    CHECK_EQ(k, 3600000);
    CHECK_OK(act_cpufreq_parse_khz("4294967295", 10, &k, err));
    CHECK_EQ(k, 4294967295u);
    static const char *const bad[] = {
        "0",  "",   "abc", "4294967296", "12 ",
        "\n", "-1", "1.5", "1\n\n",      "99999999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        k = 7;
        CHECK_EQ(act_cpufreq_parse_khz(bad[i], strlen(bad[i]), &k, err),
                 SM_EINVAL);
        CHECK_EQ(k, 7);
    }
}

static void test_parse_cpus(void)
{
    char err[SM_ERRMSG_SIZE];
    uint32_t cpus[ACT_CPUFREQ_MAX_CPUS];
    size_t n = 0;
    REQUIRE_OK(act_cpufreq_parse_cpus("0-3,6", cpus, &n, err));
    REQUIRE_EQ(n, 5);
    CHECK_EQ(cpus[3], 3);
    CHECK_EQ(cpus[4], 6);
    REQUIRE_OK(act_cpufreq_parse_cpus("6,0-1,1", cpus, &n, err));
    REQUIRE_EQ(n, 3);
    CHECK_EQ(cpus[0], 0);
    CHECK_EQ(cpus[2], 6);
    REQUIRE_OK(act_cpufreq_parse_cpus("0-1023", cpus, &n, err));
    CHECK_EQ(n, ACT_CPUFREQ_MAX_CPUS);
    static const char *const bad[] = {"",   "3-1",  "1024", "0,",   ",0",   "a",
                                      "0-", "1--2", "-1",   "0 ,1", "0-1-2"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        n = 77;
        CHECK_EQ(act_cpufreq_parse_cpus(bad[i], cpus, &n, err), SM_EINVAL);
        CHECK_EQ(n, 77);
    }
    char longlist[ACT_CG_CPUS_SIZE + 8];
    memset(longlist, '1', sizeof longlist - 1);
    longlist[sizeof longlist - 1] = '\0';
    CHECK_EQ(act_cpufreq_parse_cpus(longlist, cpus, &n, err), SM_EINVAL);
}

/* ---- Fake trees -----------------------------------------------------------
 */

static void test_available(void)
{
    char err[SM_ERRMSG_SIZE];
    const char *root = make_tree();
    int rv = act_cpufreq_available(root, "0-3,6", err);
    if (rv != SM_OK) {
        printf("# %s\n", err);
    }
    CHECK_OK(rv);
    CHECK_EQ(act_cpufreq_available(root, "0-5", err), SM_ENOTFOUND);
    CHECK(strstr(err, "cpu4/cpufreq") != NULL);
    CHECK_EQ(act_cpufreq_available(root, "7", err), SM_ENOTFOUND);
    CHECK(strstr(err, "unavailable") != NULL);
    CHECK_EQ(act_cpufreq_available(root, "0-", err), SM_EINVAL);

    /* sysfs refuses writes to a file without write bits, even to root. */
    char path[1024];
    snprintf(path, sizeof path, "%s/" SCALING(2), root);
    REQUIRE(chmod(path, 0444) == 0);
    CHECK_EQ(act_cpufreq_available(root, "0-3", err), SM_EPERM);
    CHECK(strstr(err, path) != NULL);
    CHECK(strstr(err, "not writable") != NULL);
    CHECK_OK(act_cpufreq_available(root, "0-1", err));
    REQUIRE(chmod(path, 0644) == 0);

    check_put(root, "cpu1/cpufreq/cpuinfo_max_freq", "fast\n");
    CHECK_EQ(act_cpufreq_available(root, "0-3", err), SM_EINVAL);
    CHECK(strstr(err, "cpu1/cpufreq/cpuinfo_max_freq") != NULL);

    char missing[1024];
    snprintf(missing, sizeof missing, "%s/none", root);
    CHECK_EQ(act_cpufreq_available(missing, "0", err), SM_ENOTFOUND);
}

/* This machine: read-only. */
static void test_real_host(void)
{
    char err[SM_ERRMSG_SIZE];
    int rv = act_cpufreq_available(NULL, "0", err);
    struct stat st;
    if (stat("/sys/devices/system/cpu/cpu0/cpufreq/scaling_max_freq", &st) !=
        0) {
        CHECK_EQ(rv, SM_ENOTFOUND);
        CHECK(strstr(err, "/sys/devices/system/cpu/cpu0/cpufreq") != NULL);
        printf("# unavailable here: %s\n", err);
        return;
    }
    printf("# cpufreq on cpu0: %s\n", rv == SM_OK ? "available" : err);
    static struct act_cpufreq s;
    CHECK_OK(act_cpufreq_read(NULL, "0", &s, err));
    CHECK(s.n == 1 && s.cpu[0].min_khz <= s.cpu[0].max_khz);
}

static void test_read(void)
{
    char err[SM_ERRMSG_SIZE];
    const char *root = make_tree();
    static struct act_cpufreq s;
    REQUIRE_OK(act_cpufreq_read(root, "0-3,6", &s, err));
    REQUIRE_EQ(s.n, 5);
    CHECK_EQ(s.cpu[0].cpu, 0);
    CHECK_EQ(s.cpu[0].min_khz, 800000);
    CHECK_EQ(s.cpu[0].max_khz, 3600000);
    CHECK_EQ(s.cpu[0].cur_khz, 2000000);
    CHECK_EQ(s.cpu[4].cpu, 6);
    CHECK_EQ(s.cpu[4].max_khz, 2400000);
    CHECK_EQ(s.cpu[4].cur_khz, 1200000);

    check_put(root, "cpu3/cpufreq/cpuinfo_min_freq", "4000000\n");
    CHECK_EQ(act_cpufreq_read(root, "3", &s, err), SM_EINVAL);
    CHECK(strstr(err, "cpu3") != NULL);
    check_put(root, "cpu3/cpufreq/scaling_max_freq", "\n");
    CHECK_EQ(act_cpufreq_read(root, "3", &s, err), SM_EINVAL);
    CHECK_EQ(act_cpufreq_read(root, "4", &s, err), SM_ENOTFOUND);
}

static void test_apply_and_restore(void)
{
    char err[SM_ERRMSG_SIZE];
    const char *root = make_tree();
    static struct act_cpufreq prev, again;
    bool changed = false;
    int rv = act_cpufreq_apply(root, "0-3,6", 3000000, &prev, &changed, err);
    if (rv != SM_OK) {
        printf("# %s\n", err);
    }
    REQUIRE_OK(rv);
    CHECK(changed);
    CHECK_EQ(prev.n, 5);
    CHECK_EQ(prev.cpu[0].cur_khz, 2000000);
    CHECK_EQ(prev.cpu[4].cur_khz, 1200000);
    CHECK_STR(check_get(root, SCALING(0)), "3000000\n");
    CHECK_STR(check_get(root, SCALING(3)), "3000000\n");
    CHECK_STR(check_get(root, SCALING(6)),
              "2400000\n"); /* clamped to its max */

    /* Idempotent: files already at the target are not written (the
     * newline-less spelling below would be replaced by a write). */
    check_put(root, SCALING(1), "3000000");
    check_put(root, SCALING(6), "2400000");
    REQUIRE_OK(
        act_cpufreq_apply(root, "0-3,6", 3000000, &again, &changed, err));
    CHECK(!changed);
    CHECK_STR(check_get(root, SCALING(1)), "3000000");
    CHECK_EQ(again.cpu[4].cur_khz, 2400000);

    /* Rollback restores every CPU's own value. */
    REQUIRE_OK(act_cpufreq_restore(root, &prev, &changed, err));
    CHECK(changed);
    CHECK_STR(check_get(root, SCALING(0)), "2000000\n");
    CHECK_STR(check_get(root, SCALING(1)), "2000000\n");
    CHECK_STR(check_get(root, SCALING(6)), "1200000\n");
    REQUIRE_OK(act_cpufreq_restore(root, &prev, &changed, err));
    CHECK(!changed);

    /* Clamping at both ends; NULL prev and changed. */
    REQUIRE_OK(act_cpufreq_apply(root, "0,6", 99999999, NULL, NULL, err));
    CHECK_STR(check_get(root, SCALING(0)), "3600000\n");
    CHECK_STR(check_get(root, SCALING(1)), "2000000\n");
    REQUIRE_OK(act_cpufreq_apply(root, "0", 1, NULL, &changed, err));
    CHECK(changed);
    CHECK_STR(check_get(root, SCALING(0)), "800000\n");
}

static void test_apply_refused(void)
{
    char err[SM_ERRMSG_SIZE];
    const char *root = make_tree();
    static struct act_cpufreq prev;
    bool changed = true;
    /* A CPU without cpufreq: nothing is written, even to the others. */
    CHECK_EQ(act_cpufreq_apply(root, "0-4", 3000000, &prev, &changed, err),
             SM_ENOTFOUND);
    CHECK(!changed);
    CHECK_STR(check_get(root, SCALING(0)), "2000000\n");
    CHECK_EQ(act_cpufreq_apply(root, "", 3000000, NULL, &changed, err),
             SM_EINVAL);

    /* Restores that do not fit the CPUs as they are now. */
    REQUIRE_OK(act_cpufreq_read(root, "0-1", &prev, err));
    prev.cpu[1].cur_khz = 5000000;
    CHECK_EQ(act_cpufreq_restore(root, &prev, &changed, err), SM_EINVAL);
    CHECK(!changed);
    CHECK(strstr(err, "cpu1") != NULL);
    CHECK_STR(check_get(root, SCALING(0)), "2000000\n");
    prev.cpu[1].cur_khz = 2000000;
    prev.cpu[1].cpu = 5;
    CHECK_EQ(act_cpufreq_restore(root, &prev, &changed, err), SM_ENOTFOUND);
    prev.cpu[1].cpu = ACT_CPUFREQ_MAX_CPUS;
    CHECK_EQ(act_cpufreq_restore(root, &prev, &changed, err), SM_EINVAL);
    prev.n = ACT_CPUFREQ_MAX_CPUS + 1;
    CHECK_EQ(act_cpufreq_restore(root, &prev, &changed, err), SM_EINVAL);
}

/* A write that fails halfway through the CPUs: the earlier ones are put
 * back. The failure is a short write, made by a file size limit that the
 * last CPU's longer value crosses (works for root too). */
static void test_apply_undo(void)
{
    char err[SM_ERRMSG_SIZE];
    const char *root = make_tree();
    add_cpu(root, 8, 800000, 12000000, 2000000);
    static struct act_cpufreq prev;
    struct rlimit old;
    REQUIRE(getrlimit(RLIMIT_FSIZE, &old) == 0);
    struct rlimit small = {8, old.rlim_max};
    void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN);
    bool changed = true;
    /* "3000000\n" fits in 8 bytes, cpu8's "10000000\n" does not. */
    REQUIRE(setrlimit(RLIMIT_FSIZE, &small) == 0);
    int rv = act_cpufreq_apply(root, "0-3,8", 10000000, &prev, &changed, err);
    (void)setrlimit(RLIMIT_FSIZE, &old);
    signal(SIGXFSZ, old_handler);
    printf("# %s\n", err);
    CHECK_EQ(rv, SM_EIO);
    CHECK(!changed);
    CHECK(strstr(err, "cpu8") != NULL);
    for (int c = 0; c < 4; c++) {
        char rel[64];
        snprintf(rel, sizeof rel, "cpu%d/cpufreq/scaling_max_freq", c);
        CHECK_STR(check_get(root, rel), "2000000\n");
    }
    CHECK_EQ(prev.cpu[4].cur_khz, 2000000);
}

static const struct check_test tests[] = {
    {"kHz values parse", test_parse_khz},
    {"cpu lists parse", test_parse_cpus},
    {"availability and its reasons", test_available},
    {"this host's cpufreq, read-only", test_real_host},
    {"limits are read per CPU", test_read},
    {"apply clamps, is idempotent, restores exactly", test_apply_and_restore},
    {"refused applies and restores write nothing", test_apply_refused},
    {"a failed write puts earlier CPUs back", test_apply_undo},
};

CHECK_MAIN(tests, NULL, NULL)
