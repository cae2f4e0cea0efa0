/* Tests for the agent's resctrl LLC actuator against fake resctrl trees. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "actuate/actuate.h"
#include "base/err.h"
#include "check.h"

/* ---- Fake trees -----------------------------------------------------------
 */

#define GROUP "sagemesh-web"

/* A two-socket host with a 20-way L3 and memory bandwidth allocation, as
 * the kernel lays it out (schemata padded as the kernel pads it), with the
 * group GROUP already made. */
static const char *make_tree(void)
{
    const char *root = check_tmpdir();
    check_put(root, "schemata",
              "    L3:0=fffff;1=fffff\n    MB:0=  100;1=  100\n");
    check_put(root, "tasks", "");
    check_put(root, "info/L3/cbm_mask", "fffff\n");
    check_put(root, "info/L3/min_cbm_bits", "1\n");
    check_put(root, "info/L3/num_closids", "16\n");
    check_put(root, "info/L3/shareable_bits", "0\n");
    check_put(root, "info/MB/min_bandwidth", "10\n");
    check_put(root, "info/last_cmd_status", "ok\n");
    check_put(root, GROUP "/schemata",
              "    L3:0=fffff;1=fffff\n    MB:0=  100;1=  100\n");
    check_put(root, GROUP "/tasks", "");
    return root;
}

static struct act_rdt probe_ok(const char *root)
{
    struct act_rdt r;
    char err[SM_ERRMSG_SIZE];
    int rv = act_rdt_available(root, &r, err);
    if (rv != SM_OK) {
        printf("# %s\n", err);
    }
    REQUIRE_OK(rv);
    return r;
}

/* ---- Pure functions -------------------------------------------------------
 */

static void test_parse_info(void)
{
    char err[SM_ERRMSG_SIZE];
    struct act_rdt_info info;
    REQUIRE_OK(act_rdt_parse_info("fffff\n", 6, "1\n", 2, &info, err));
    CHECK_EQ(info.cbm_mask, 0xfffff);
    CHECK_EQ(info.cbm_bits, 20);
    CHECK_EQ(info.min_cbm_bits, 1);
    REQUIRE_OK(act_rdt_parse_info("7FF", 3, "2", 1, &info, err));
    CHECK_EQ(info.cbm_bits, 11);
    CHECK_EQ(info.min_cbm_bits, 2);
    REQUIRE_OK(act_rdt_parse_info("ffffffffffffffff", 16, "64", 2, &info, err));
    CHECK_EQ(info.cbm_bits, 64);

    static const struct
    {
        const char *mask, *min;
    } bad[] = {
        {"0", "1"},
        {"f0f", "1"},
        {"ff0", "1"},
        {"xyz", "1"},
        {"", "1"},
        {"ff", "0"},
        {"ff", "9"},
        {"ff", "a"},
        {"ff", ""},
        {"ff\n\n", "1"},
        {"1ffffffffffffffff", "1"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        info.cbm_bits = 99;
        CHECK_EQ(act_rdt_parse_info(bad[i].mask, strlen(bad[i].mask),
                                    bad[i].min, strlen(bad[i].min), &info, err),
                 SM_EINVAL);
        CHECK_EQ(info.cbm_bits, 99);
    }
}

static void test_schemata_parse(void)
{
    char err[SM_ERRMSG_SIZE];
    struct act_rdt_schemata s;
    const char *t = "L3:0=fffff;1=fffff\nMB:0=100;1=100\n";
    REQUIRE_OK(act_rdt_schemata_parse(t, strlen(t), &s, err));
    CHECK_EQ(s.n_l3, 2);
    CHECK_EQ(s.l3_id[1], 1);
    CHECK_EQ(s.l3_mask[0], 0xfffff);
    CHECK_EQ(s.l3_line, 0);
    CHECK_EQ(s.n_other, 1);
    CHECK_STR(s.other[0], "MB:0=100;1=100");
    CHECK_EQ(act_rdt_ways(&s), 20);

    /* The kernel's padding, MB first, uneven masks, odd domain ids. */
    t = "    MB:0=  100;2=   50\n\n    L3:0=000ff;2=0ffff\r\n";
    REQUIRE_OK(act_rdt_schemata_parse(t, strlen(t), &s, err));
    CHECK_EQ(s.n_l3, 2);
    CHECK_EQ(s.l3_id[1], 2);
    CHECK_EQ(s.l3_mask[0], 0xff);
    CHECK_EQ(s.l3_line, 1);
    CHECK_STR(s.other[0], "MB:0=100;2=50");
    CHECK_EQ(act_rdt_ways(&s), 8);

    char buf[ACT_RDT_FILE_TEXT_MAX];
    REQUIRE_OK(act_rdt_schemata_format(&s, buf, sizeof buf, err));
    CHECK_STR(buf, "MB:0=100;2=50\nL3:0=ff;2=ffff\n");
    struct act_rdt_schemata back;
    REQUIRE_OK(act_rdt_schemata_parse(buf, strlen(buf), &back, err));
    CHECK(memcmp(&back, &s, sizeof s) == 0);

    /* No L3 line: parses, no ways. */
    t = "MB:0=100\n";
    REQUIRE_OK(act_rdt_schemata_parse(t, strlen(t), &s, err));
    CHECK_EQ(s.n_l3, 0);
    CHECK_EQ(act_rdt_ways(&s), 0);
    REQUIRE_OK(act_rdt_schemata_format(&s, buf, sizeof buf, err));
    CHECK_STR(buf, "MB:0=100\n");
    REQUIRE_OK(act_rdt_schemata_parse("", 0, &s, err));
    CHECK_EQ(s.n_other, 0);
}

static void test_schemata_malformed(void)
{
    static const char *const bad[] = {
        "L3\n",
        ":0=ff\n",
        "L3:0=ff;0=f\n",
        "L3:0=ff\nL3:1=ff\n",
        "L3:0=zz\n",
        "L3:=ff\n",
        "L3:0ff\n",
        "L3:\n",
        "L3:0=ff;\n",
        "L-3:0=ff\n",
        "L3:0=11111111111111111\n",
        "L3:x=ff\n",
        "A:1\nB:1\nC:1\nD:1\nE:1\nF:1\nG:1\nH:1\nI:1\n",
    };
    char err[SM_ERRMSG_SIZE];
    struct act_rdt_schemata s;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rv = act_rdt_schemata_parse(bad[i], strlen(bad[i]), &s, err);
        if (rv != SM_EINVAL) {
            printf("# case %zu: %s\n", i, sm_errname(rv));
        }
        CHECK_EQ(rv, SM_EINVAL);
        CHECK(strstr(err, "schemata") != NULL);
    }
    CHECK_EQ(act_rdt_schemata_parse("L3:0=f\0f\n", 9, &s, err), SM_EINVAL);

    /* 64 domains fit, 65 do not. */
    char many[2048] = "L3:";
    for (int d = 0; d < 65; d++) {
        char item[16];
        snprintf(item, sizeof item, "%s%d=ff", d ? ";" : "", d);
        strcat(many, item);
        int rv = act_rdt_schemata_parse(many, strlen(many), &s, err);
        CHECK_EQ(rv, d < ACT_RDT_MAX_DOMAINS ? SM_OK : SM_EINVAL);
    }
    static char big[ACT_RDT_FILE_TEXT_MAX + 2];
    memset(big, ' ', sizeof big - 1);
    CHECK_EQ(act_rdt_schemata_parse(big, sizeof big - 1, &s, err), SM_EINVAL);
    char line[ACT_RDT_LINE_SIZE + 8] = "MB:0=";
    memset(line + 5, '1', ACT_RDT_LINE_SIZE);
    line[ACT_RDT_LINE_SIZE + 5] = '\0';
    CHECK_EQ(act_rdt_schemata_parse(line, strlen(line), &s, err), SM_EINVAL);
}

static void test_schemata_format_errors(void)
{
    char err[SM_ERRMSG_SIZE], buf[64];
    struct act_rdt_schemata s;
    const char *t = "L3:0=fffff;1=fffff\nMB:0=100;1=100\n";
    REQUIRE_OK(act_rdt_schemata_parse(t, strlen(t), &s, err));
    CHECK_EQ(act_rdt_schemata_format(&s, buf, 10, err), SM_ETOOBIG);
    CHECK_EQ(act_rdt_schemata_format(&s, buf, 0, err), SM_ETOOBIG);
    struct act_rdt_schemata w = s;
    w.l3_line = 5;
    CHECK_EQ(act_rdt_schemata_format(&w, buf, sizeof buf, err), SM_EINVAL);
    w = s;
    w.n_l3 = ACT_RDT_MAX_DOMAINS + 1;
    CHECK_EQ(act_rdt_schemata_format(&w, buf, sizeof buf, err), SM_EINVAL);
    w = s;
    memset(w.other[0], 'x', sizeof w.other[0]);
    CHECK_EQ(act_rdt_schemata_format(&w, buf, sizeof buf, err), SM_EINVAL);
    w = s;
    snprintf(w.other[0], sizeof w.other[0], "MB:0=1\nL3:0=1");
    CHECK_EQ(act_rdt_schemata_format(&w, buf, sizeof buf, err), SM_EINVAL);
}

static void test_set_ways(void)
{
    char err[SM_ERRMSG_SIZE];
    struct act_rdt_info info;
    REQUIRE_OK(act_rdt_parse_info("fffff", 5, "2", 1, &info, err));
    struct act_rdt_schemata s;
    const char *t = "L3:0=fffff;1=ff\nMB:0=100;1=100\n";
    REQUIRE_OK(act_rdt_schemata_parse(t, strlen(t), &s, err));
    CHECK_EQ(act_rdt_ways(&s), 8);
    uint32_t applied = 0;
    REQUIRE_OK(act_rdt_schemata_set_ways(&s, &info, 4, &applied, err));
    CHECK_EQ(applied, 4);
    CHECK_EQ(s.l3_mask[0], 0xf);
    CHECK_EQ(s.l3_mask[1], 0xf);
    REQUIRE_OK(act_rdt_schemata_set_ways(&s, &info, 0, &applied, err));
    CHECK_EQ(applied, 2);
    CHECK_EQ(s.l3_mask[0], 0x3);
    REQUIRE_OK(act_rdt_schemata_set_ways(&s, &info, 100, NULL, err));
    CHECK_EQ(s.l3_mask[1], 0xfffff);
    CHECK_EQ(act_rdt_ways(&s), 20);
    CHECK_STR(s.other[0], "MB:0=100;1=100");

    REQUIRE_OK(act_rdt_parse_info("ffffffffffffffff", 16, "1", 1, &info, err));
    REQUIRE_OK(act_rdt_schemata_set_ways(&s, &info, 64, &applied, err));
    CHECK(s.l3_mask[0] == UINT64_MAX);

    REQUIRE_OK(act_rdt_schemata_parse("MB:0=1", 6, &s, err));
    CHECK_EQ(act_rdt_schemata_set_ways(&s, &info, 4, NULL, err), SM_EINVAL);
    CHECK(strstr(err, "no L3") != NULL);
}

static void test_group_name(void)
{
    char err[SM_ERRMSG_SIZE], name[ACT_RDT_NAME_SIZE];
    REQUIRE_OK(act_rdt_group_name("sagemesh-{service}", "web", name, err));
    CHECK_STR(name, "sagemesh-web");
    REQUIRE_OK(act_rdt_group_name("{service}.{service}", "a", name, err));
    CHECK_STR(name, "a.a");
    REQUIRE_OK(act_rdt_group_name("fixed", "web", name, err));
    CHECK_STR(name, "fixed");
    char longname[80];
    memset(longname, 'x', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    struct
    {
        const char *tmpl, *service;
    } bad[] = {
        {"{service}", "info"},
        {"{service}", "mon_groups"},
        {"a/{service}", "web"},
        {"{svc}", "web"},
        {"x}", "web"},
        {"{service}", longname},
        {"{service}", "a b"},
        {"{service}", "."},
        {"", "web"},
        {"{service}", ""},
        {"{service}", ".."},
        {"{service}", "a/b"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        name[0] = 'Z';
        CHECK_EQ(act_rdt_group_name(bad[i].tmpl, bad[i].service, name, err),
                 SM_EINVAL);
        CHECK_EQ(name[0], 'Z');
    }
}

/* ---- Fake trees -----------------------------------------------------------
 */

static void test_available(void)
{
    char err[SM_ERRMSG_SIZE];
    const char *root = make_tree();
    struct act_rdt r = probe_ok(root);
    CHECK_STR(r.root, root);
    CHECK_EQ(r.info.cbm_mask, 0xfffff);
    CHECK_EQ(r.info.min_cbm_bits, 1);

    struct act_rdt untouched;
    memset(&untouched, 0x5a, sizeof untouched);
    char path[1024];
    snprintf(path, sizeof path, "%s/nothing", root);
    CHECK_EQ(act_rdt_available(path, &untouched, err), SM_ENOTFOUND);
    CHECK(strstr(err, "not mounted") != NULL);
    CHECK_EQ(untouched.root[0], 0x5a);

    /* Memory bandwidth allocation only. */
    const char *mba = check_tmpdir();
    check_put(mba, "schemata", "MB:0=100\n");
    check_put(mba, "info/MB/min_bandwidth", "10\n");
    CHECK_EQ(act_rdt_available(mba, &r, err), SM_ENOTFOUND);
    CHECK(strstr(err, "no L3 cache allocation") != NULL);

    /* Code/data prioritisation. */
    const char *cdp = check_tmpdir();
    check_put(cdp, "schemata", "L3DATA:0=fffff\nL3CODE:0=fffff\n");
    check_put(cdp, "info/L3CODE/cbm_mask", "fffff\n");
    check_put(cdp, "info/L3DATA/cbm_mask", "fffff\n");
    CHECK_EQ(act_rdt_available(cdp, &r, err), SM_ENOTFOUND);
    CHECK(strstr(err, "CDP") != NULL);

    /* Malformed info, a default schemata without L3. */
    check_put(root, "info/L3/cbm_mask", "f0f\n");
    CHECK_EQ(act_rdt_available(root, &r, err), SM_EINVAL);
    CHECK(strstr(err, "cbm_mask") != NULL);
    check_put(root, "info/L3/cbm_mask", "fffff\n");
    check_put(root, "schemata", "MB:0=100\n");
    CHECK_EQ(act_rdt_available(root, &r, err), SM_ENOTFOUND);
    CHECK(strstr(err, "no L3 line") != NULL);
    check_put(root, "schemata", "L3:0=fffff;0=1\n");
    CHECK_EQ(act_rdt_available(root, &r, err), SM_EINVAL);

    char longroot[1100];
    memset(longroot, 'a', sizeof longroot - 1);
    longroot[sizeof longroot - 1] = '\0';
    CHECK_EQ(act_rdt_available(longroot, &r, err), SM_EINVAL);
}

/* This machine: either resctrl is mounted (then read-only probing works)
 * or the default root reports a clear reason. */
static void test_real_host(void)
{
    char err[SM_ERRMSG_SIZE];
    struct act_rdt r;
    int rv = act_rdt_available(NULL, &r, err);
    struct stat st;
    if (stat("/sys/fs/resctrl/schemata", &st) != 0) {
        CHECK_EQ(rv, SM_ENOTFOUND);
        CHECK(strstr(err, "/sys/fs/resctrl") != NULL);
        printf("# unavailable here: %s\n", err);
        return;
    }
    if (rv != SM_OK) {
        printf("# resctrl mounted but unavailable: %s\n", err);
        CHECK(rv == SM_ENOTFOUND || rv == SM_EPERM);
        return;
    }
    printf("# resctrl: cbm_mask %llx, min %u\n",
           (unsigned long long)r.info.cbm_mask, r.info.min_cbm_bits);
    struct act_rdt_schemata s;
    CHECK_OK(act_rdt_read(&r, "", &s, err));
    CHECK(act_rdt_ways(&s) >= r.info.min_cbm_bits);
}

static void test_groups(void)
{
    char err[SM_ERRMSG_SIZE];
    const char *root = make_tree();
    struct act_rdt r = probe_ok(root);
    bool created = false;
    REQUIRE_OK(act_rdt_group_create(&r, "sagemesh-api", &created, err));
    CHECK(created);
    CHECK(check_is_dir(root, "sagemesh-api"));
    REQUIRE_OK(act_rdt_group_create(&r, "sagemesh-api", &created, err));
    CHECK(!created);
    REQUIRE_OK(act_rdt_group_create(&r, GROUP, NULL, err));

    check_put(root, "taken", "");
    CHECK_EQ(act_rdt_group_create(&r, "taken", &created, err), SM_EEXIST);
    CHECK(!created);
    CHECK_EQ(act_rdt_group_create(&r, "info", &created, err), SM_EINVAL);
    CHECK_EQ(act_rdt_group_create(&r, "a/b", &created, err), SM_EINVAL);
    CHECK_EQ(act_rdt_group_create(&r, "", &created, err), SM_EINVAL);

    REQUIRE_OK(act_rdt_group_remove(&r, "sagemesh-api", err));
    CHECK(!check_is_dir(root, "sagemesh-api"));
    REQUIRE_OK(act_rdt_group_remove(&r, "sagemesh-api", err));
    /* A fake group holds regular files, which rmdir will not remove. */
    CHECK_EQ(act_rdt_group_remove(&r, GROUP, err), SM_EIO);
    CHECK(strstr(err, GROUP) != NULL);
    CHECK_EQ(act_rdt_group_remove(&r, "..", err), SM_EINVAL);

    struct act_rdt gone = r;
    snprintf(gone.root, sizeof gone.root, "%s/unmounted", root);
    CHECK_EQ(act_rdt_group_create(&gone, "x", &created, err), SM_ENOTFOUND);
}

static void test_read(void)
{
    char err[SM_ERRMSG_SIZE];
    const char *root = make_tree();
    struct act_rdt r = probe_ok(root);
    struct act_rdt_schemata s;
    REQUIRE_OK(act_rdt_read(&r, GROUP, &s, err));
    CHECK_EQ(act_rdt_ways(&s), 20);
    CHECK_STR(s.other[0], "MB:0=100;1=100");
    REQUIRE_OK(act_rdt_read(&r, "", &s, err));
    CHECK_EQ(s.n_l3, 2);
    CHECK_EQ(act_rdt_read(&r, "sagemesh-none", &s, err), SM_ENOTFOUND);
    CHECK(strstr(err, "sagemesh-none/schemata") != NULL);
    CHECK_EQ(act_rdt_read(&r, "../x", &s, err), SM_EINVAL);
    check_put(root, GROUP "/schemata", "L3:0=fffff;1=qq\n");
    CHECK_EQ(act_rdt_read(&r, GROUP, &s, err), SM_EINVAL);
    CHECK(strstr(err, GROUP "/schemata") != NULL);
}

static void test_apply_and_restore(void)
{
    char err[SM_ERRMSG_SIZE];
    const char *root = make_tree();
    struct act_rdt r = probe_ok(root);
    struct act_rdt_schemata prev;
    uint32_t applied = 0;
    bool changed = false;
    int rv = act_rdt_apply_ways(&r, GROUP, 4, &prev, &applied, &changed, err);
    if (rv != SM_OK) {
        printf("# %s\n", err);
    }
    REQUIRE_OK(rv);
    CHECK(changed);
    CHECK_EQ(applied, 4);
    CHECK_EQ(act_rdt_ways(&prev), 20);
    CHECK_STR(check_get(root, GROUP "/schemata"),
              "L3:0=f;1=f\nMB:0=100;1=100\n");
    /* The default group is not touched. */
    CHECK_STR(check_get(root, "schemata"),
              "    L3:0=fffff;1=fffff\n    MB:0=  100;1=  100\n");

    /* Idempotent: the kernel's padded spelling of the same masks is not
     * rewritten. */
    check_put(root, GROUP "/schemata",
              "    L3:0=0000f;1=0000f\n    MB:0=  100;1=  100\n");
    struct act_rdt_schemata again;
    REQUIRE_OK(
        act_rdt_apply_ways(&r, GROUP, 4, &again, &applied, &changed, err));
    CHECK(!changed);
    CHECK_STR(check_get(root, GROUP "/schemata"),
              "    L3:0=0000f;1=0000f\n    MB:0=  100;1=  100\n");

    /* Meanwhile someone changed the memory bandwidth: a restore keeps it. */
    check_put(root, GROUP "/schemata", "L3:0=f;1=f\nMB:0=50;1=70\n");
    REQUIRE_OK(act_rdt_restore(&r, GROUP, &prev, &changed, err));
    CHECK(changed);
    CHECK_STR(check_get(root, GROUP "/schemata"),
              "L3:0=fffff;1=fffff\nMB:0=50;1=70\n");
    REQUIRE_OK(act_rdt_restore(&r, GROUP, &prev, &changed, err));
    CHECK(!changed);

    /* Clamping, and NULL outputs. */
    REQUIRE_OK(act_rdt_apply_ways(&r, GROUP, 0, NULL, &applied, NULL, err));
    CHECK_EQ(applied, 1);
    CHECK_STR(check_get(root, GROUP "/schemata"), "L3:0=1;1=1\nMB:0=50;1=70\n");
    REQUIRE_OK(act_rdt_apply_ways(&r, GROUP, 99, NULL, NULL, NULL, err));
    CHECK_STR(check_get(root, GROUP "/schemata"),
              "L3:0=fffff;1=fffff\nMB:0=50;1=70\n");
}

/* Per-domain masks come back exactly, even when they differed. */
static void test_restore_uneven(void)
{
    char err[SM_ERRMSG_SIZE];
    const char *root = make_tree();
    struct act_rdt r = probe_ok(root);
    check_put(root, GROUP "/schemata", "L3:0=3ff;1=fff\n");
    struct act_rdt_schemata prev;
    bool changed;
    REQUIRE_OK(act_rdt_apply_ways(&r, GROUP, 16, &prev, NULL, &changed, err));
    CHECK(changed);
    CHECK_STR(check_get(root, GROUP "/schemata"), "L3:0=ffff;1=ffff\n");
    CHECK_EQ(act_rdt_ways(&prev), 10);
    /* The domains listed in another order are still the same domains. */
    check_put(root, GROUP "/schemata", "L3:1=ffff;0=ffff\n");
    REQUIRE_OK(act_rdt_restore(&r, GROUP, &prev, &changed, err));
    CHECK_STR(check_get(root, GROUP "/schemata"), "L3:1=fff;0=3ff\n");
}

static void test_restore_refused(void)
{
    char err[SM_ERRMSG_SIZE];
    const char *root = make_tree();
    struct act_rdt r = probe_ok(root);
    r.info.min_cbm_bits = 2;
    const char *before = "L3:0=fffff;1=fffff\nMB:0=100;1=100\n";
    check_put(root, GROUP "/schemata", before);
    static const char *const bad[] = {
        "L3:0=f0f;1=fffff", /* not contiguous */
        "L3:0=1fffff;1=f",  /* outside cbm_mask */
        "L3:0=1;1=fffff",   /* fewer than min_cbm_bits */
        "L3:0=0;1=fffff",   /* empty */
        "L3:0=f;2=f",       /* another domain */
        "L3:0=f",           /* a domain missing */
        "MB:0=100",         /* nothing to restore */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct act_rdt_schemata prev;
        REQUIRE_OK(act_rdt_schemata_parse(bad[i], strlen(bad[i]), &prev, err));
        bool changed = true;
        CHECK_EQ(act_rdt_restore(&r, GROUP, &prev, &changed, err), SM_EINVAL);
        CHECK(!changed);
        CHECK_STR(check_get(root, GROUP "/schemata"), before);
    }
    struct act_rdt_schemata ok;
    REQUIRE_OK(act_rdt_schemata_parse("L3:0=f;1=f", 10, &ok, err));
    CHECK_EQ(act_rdt_restore(&r, "nogroup", &ok, NULL, err), SM_ENOTFOUND);
    CHECK_EQ(act_rdt_restore(&r, "", &ok, NULL, err), SM_EINVAL);

    /* A group whose schemata has no L3 line cannot be given ways. */
    check_put(root, GROUP "/schemata", "MB:0=100\n");
    bool changed = true;
    CHECK_EQ(act_rdt_apply_ways(&r, GROUP, 4, NULL, NULL, &changed, err),
             SM_EINVAL);
    CHECK(!changed);
    CHECK(strstr(err, GROUP) != NULL);
    CHECK_EQ(act_rdt_apply_ways(&r, "", 4, NULL, NULL, &changed, err),
             SM_EINVAL);
}

/* Only meaningful for a non-root user: root ignores file modes. */
static void test_write_denied(void)
{
    if (geteuid() == 0) {
        check_skip("running as root, which ignores file modes");
    }
    char err[SM_ERRMSG_SIZE];
    const char *root = make_tree();
    struct act_rdt r = probe_ok(root);
    char path[1024];
    snprintf(path, sizeof path, "%s/" GROUP "/schemata", root);
    REQUIRE(chmod(path, 0444) == 0);
    bool changed = true;
    CHECK_EQ(act_rdt_apply_ways(&r, GROUP, 4, NULL, NULL, &changed, err),
             SM_EPERM);
    CHECK(!changed);
    CHECK(strstr(err, "permission denied") != NULL);
}

static void test_move_tasks(void)
{
    char err[SM_ERRMSG_SIZE];
    const char *root = make_tree();
    struct act_rdt r = probe_ok(root);
    const int pids[] = {10, 20, 30};
    size_t moved = 0;
    REQUIRE_OK(act_rdt_move_tasks(&r, GROUP, pids, 3, &moved, err));
    CHECK_EQ(moved, 3);
    CHECK_STR(check_get(root, GROUP "/tasks"), "10\n20\n30\n");
    /* Back to the default group. */
    REQUIRE_OK(act_rdt_move_tasks(&r, "", pids, 2, NULL, err));
    CHECK_STR(check_get(root, "tasks"), "10\n20\n");
    REQUIRE_OK(act_rdt_move_tasks(&r, GROUP, pids, 0, &moved, err));
    CHECK_EQ(moved, 0);

    const int bad[] = {10, 0};
    moved = 9;
    CHECK_EQ(act_rdt_move_tasks(&r, GROUP, bad, 2, &moved, err), SM_EINVAL);
    CHECK_EQ(moved, 0);
    CHECK_STR(check_get(root, GROUP "/tasks"), "10\n20\n30\n");
    CHECK_EQ(act_rdt_move_tasks(&r, "nogroup", pids, 3, &moved, err),
             SM_ENOTFOUND);
    CHECK(strstr(err, "nogroup/tasks") != NULL);
    CHECK_EQ(act_rdt_move_tasks(&r, "mon_data", pids, 3, &moved, err),
             SM_EINVAL);
    CHECK_EQ(
        act_rdt_move_tasks(&r, GROUP, pids, ACT_RDT_MAX_PIDS + 1, &moved, err),
        SM_EINVAL);
}

static const struct check_test tests[] = {
    {"info files parse", test_parse_info},
    {"schemata parse and format back", test_schemata_parse},
    {"malformed schemata are refused", test_schemata_malformed},
    {"schemata format errors", test_schemata_format_errors},
    {"ways become clamped contiguous masks", test_set_ways},
    {"group names from a template", test_group_name},
    {"availability and its reasons", test_available},
    {"this host's resctrl, read-only", test_real_host},
    {"groups are made and removed", test_groups},
    {"schemata are read", test_read},
    {"apply is idempotent and restore exact", test_apply_and_restore},
    {"uneven masks restore exactly", test_restore_uneven},
    {"bad restores write nothing", test_restore_refused},
    {"a write without permission", test_write_denied},
    {"tasks move into a group and back", test_move_tasks},
};

CHECK_MAIN(tests, NULL, NULL)
