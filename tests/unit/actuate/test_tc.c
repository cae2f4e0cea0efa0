/* Tests for the agent's tc HTB actuator: parsers, argv, and a fake tc. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "actuate/actuate.h"
#include "base/clock.h"
#include "base/err.h"
#include "check.h"

/* `tc -s class show dev lo` from iproute2 6.1 on Linux 6.1, with a pfifo
 * leaf under 1:10 after some traffic. */
static const char real_show[] =
    "class htb 1:10 parent 1:1 leaf 10: prio 1 rate 100Mbit ceil 200Mbit "
    "burst 1600b cburst 1600b \n"
    " Sent 0 bytes 0 pkt (dropped 0, overlimits 0 requeues 0) \n"
    " backlog 0b 0p requeues 0\n"
    " lended: 0 borrowed: 0 giants: 0\n"
    " tokens: 2000 ctokens: 1000\n"
    "\n"
    "class htb 1:1 root rate 1Gbit ceil 1Gbit burst 1375b cburst 1375b \n"
    " Sent 0 bytes 0 pkt (dropped 0, overlimits 0 requeues 0) \n"
    " backlog 0b 0p requeues 0\n"
    " lended: 0 borrowed: 0 giants: 0\n"
    " tokens: 187 ctokens: 187\n"
    "\n"
    "class htb 1:20 parent 1:1 prio 0 rate 500Mbit ceil 500Mbit burst 1500b "
    "cburst 1500b \n"
    " Sent 0 bytes 0 pkt (dropped 0, overlimits 0 requeues 0) \n"
    " backlog 0b 0p requeues 0\n"
    " lended: 0 borrowed: 0 giants: 0\n"
    " tokens: 390 ctokens: 390\n"
    "\n";

#define CLASSES "100mbit,200mbit,500mbit,1gbit"

static uint64_t in_10s(void)
{
    return sm_clock_mono_ns(sm_clock_real()) + UINT64_C(10000000000);
}

static struct act_tc_handle handle(uint16_t major, uint16_t minor)
{
    struct act_tc_handle h = {major, minor};
    return h;
}

/* ---- Rates, sizes, handles ------------------------------------------------
 */

static void test_rate_parse(void)
{
    static const struct
    {
        const char *text;
        uint64_t bits;
    } good[] = {
        {"100mbit", 100000000},
        {"100Mbit", 100000000},
        {"1Gbit", 1000000000},
        {"1500Kbit", 1500000},
        {"8bit", 8},
        {"800", 800},
        {"1kibit", 1024},
        {"1Mibit", 1048576},
        {"1mbps", 8000000},
        {"1KiBps", 8192},
        {"1.5mbit", 1500000},
        {"0.5kbit", 500},
        {"1Tbit", 1000000000000},
        {"2tibit", UINT64_C(2) << 40},
        {"1000tbit", ACT_TC_RATE_MAX},
        {"3bps", 24},
    };
    char err[SM_ERRMSG_SIZE];
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        uint64_t v = 0;
        int rv = act_tc_rate_parse(good[i].text, strlen(good[i].text), &v, err);
        if (rv != SM_OK) {
            printf("# %s: %s\n", good[i].text, err);
        }
        CHECK_OK(rv);
        CHECK_EQ(v, good[i].bits);
    }
    static const char *const bad[] = {
        "",
        "mbit",
        "1.mbit",
        ".5mbit",
        "1xbit",
        "0bit",
        "0.1bit",
        "1001tbit",
        "-1mbit",
        "1 mbit",
        "1mbit ",
        "99999999999999999999bit",
        "1.0000000001mbit",
        "1..5mbit",
        "1e6bit",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint64_t v = 7;
        CHECK_EQ(act_tc_rate_parse(bad[i], strlen(bad[i]), &v, err), SM_EINVAL);
        CHECK_EQ(v, 7);
        CHECK(err[0] != '\0');
    }
    /* Only @len bytes are read. */
    uint64_t v;
    CHECK_OK(act_tc_rate_parse("12mbitXYZ", 6, &v, err));
    CHECK_EQ(v, 12000000);
}

static void test_rate_format(void)
{
    static const struct
    {
        uint64_t bits;
        const char *text;
    } cases[] = {
        {100000000, "100Mbit"},
        {1500000, "1500Kbit"},
        {1000000008, "1000000008bit"},
        {8, "8bit"},
        {1000000000000, "1Tbit"},
        {ACT_TC_RATE_MAX, "1000Tbit"},
        {1000, "1Kbit"},
    };
    char buf[ACT_TC_TEXT_SIZE], err[SM_ERRMSG_SIZE];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        CHECK_OK(act_tc_rate_format(cases[i].bits, buf, sizeof buf, err));
        CHECK_STR(buf, cases[i].text);
    }
    /* Whatever formats parses back to the same value. */
    uint64_t x = check_seed() | 1;
    for (int i = 0; i < 2000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        uint64_t bits = x % ACT_TC_RATE_MAX + 1;
        if (i % 3 == 0) {
            bits = (bits % 1000000) * 1000000 + 1000000;
        }
        uint64_t back = 0;
        REQUIRE_OK(act_tc_rate_format(bits, buf, sizeof buf, err));
        REQUIRE_OK(act_tc_rate_parse(buf, strlen(buf), &back, err));
        REQUIRE_EQ(back, bits);
    }
    CHECK_EQ(act_tc_rate_format(0, buf, sizeof buf, err), SM_EINVAL);
    CHECK_EQ(act_tc_rate_format(ACT_TC_RATE_MAX + 1, buf, sizeof buf, err),
             SM_EINVAL);
    CHECK_EQ(act_tc_rate_format(100000000, buf, 7, err), SM_ETOOBIG);
}

/* The values are what iproute2 6.1 printed for them on this project's
 * Debian 12 machines (see real_show and the tc -s class samples). */
static void test_rate_shown(void)
{
    CHECK_EQ(act_tc_rate_shown(1000000008), 1000000000); /* "1Gbit" */
    CHECK_EQ(act_tc_rate_shown(1234567 * 8), 9876000);   /* "9876Kbit" */
    CHECK_EQ(act_tc_rate_shown(100000000), 100000000);   /* "100Mbit" */
    CHECK_EQ(act_tc_rate_shown(1500000), 1500000);       /* "1500Kbit" */
    CHECK_EQ(act_tc_rate_shown(1001), 1000);             /* 125 bytes */
    CHECK_EQ(act_tc_rate_shown(999992), 999992);         /* "999992bit" */
    CHECK_EQ(act_tc_rate_shown(1000008), 1000000);       /* "1000Kbit" */
    CHECK_EQ(act_tc_rate_shown(7), 0);
    CHECK_EQ(act_tc_rate_shown(ACT_TC_RATE_MAX), ACT_TC_RATE_MAX);
    /* Shown values are fixed points. */
    for (uint64_t b = 1; b < 5000000; b = b * 3 + 7) {
        uint64_t s = act_tc_rate_shown(b);
        CHECK_EQ(act_tc_rate_shown(s), s);
        CHECK(s <= b);
    }
}

static void test_size_parse(void)
{
    static const struct
    {
        const char *text;
        uint64_t bytes;
    } good[] = {
        {"1600b", 1600}, {"1Kb", 1024}, {"2Mb", 2097152},    {"1.5Kb", 1536},
        {"1600", 1600},  {"0b", 0},     {"1gb", 1073741824}, {"3.9999b", 4},
    };
    char err[SM_ERRMSG_SIZE];
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        uint64_t v = 99;
        CHECK_OK(
            act_tc_size_parse(good[i].text, strlen(good[i].text), &v, err));
        CHECK_EQ(v, good[i].bytes);
    }
    static const char *const bad[] = {"b", "1xb", "5Gb", "", "1kbit", "-1b"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint64_t v = 99;
        CHECK_EQ(act_tc_size_parse(bad[i], strlen(bad[i]), &v, err), SM_EINVAL);
        CHECK_EQ(v, 99);
    }
}

static void test_handles(void)
{
    char err[SM_ERRMSG_SIZE], buf[ACT_TC_TEXT_SIZE];
    struct act_tc_handle h;
    CHECK_OK(act_tc_handle_parse("1:10", 4, &h, err));
    CHECK_EQ(h.major, 1);
    CHECK_EQ(h.minor, 0x10);
    act_tc_handle_format(h, buf);
    CHECK_STR(buf, "1:10");
    CHECK_OK(act_tc_handle_parse("1:", 2, &h, err));
    CHECK_EQ(h.minor, 0);
    act_tc_handle_format(h, buf);
    CHECK_STR(buf, "1:");
    CHECK_OK(act_tc_handle_parse("FfFf:00aB", 9, &h, err));
    CHECK_EQ(h.major, 0xffff);
    CHECK_EQ(h.minor, 0xab);
    act_tc_handle_format(h, buf);
    CHECK_STR(buf, "ffff:ab");
    static const char *const bad[] = {"0:1",   "1", ":1",      "1:10000", "g:1",
                                      "1:1:1", "",  "12345:1", "1:-1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        h = handle(7, 7);
        CHECK_EQ(act_tc_handle_parse(bad[i], strlen(bad[i]), &h, err),
                 SM_EINVAL);
        CHECK_EQ(h.major, 7);
    }
}

static void test_classes(void)
{
    char err[SM_ERRMSG_SIZE];
    struct act_tc_classes c;
    const char *list = CLASSES;
    REQUIRE_OK(act_tc_classes_parse(list, strlen(list), &c, err));
    REQUIRE_EQ(c.n, 4);
    CHECK_EQ(c.rate[0], 100000000);
    CHECK_EQ(c.rate[3], 1000000000);
    list = " 1mbit ,\t2mbit";
    REQUIRE_OK(act_tc_classes_parse(list, strlen(list), &c, err));
    CHECK_EQ(c.n, 2);
    CHECK_EQ(c.rate[1], 2000000);

    static const char *const bad[] = {
        "",
        "100mbit,",
        ",100mbit",
        "200mbit,100mbit",
        "100mbit,100000kbit",
        "1gbit,1000000008bit",
        "100mbit,,200mbit",
        "100mbit,fast",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        c.n = 99;
        CHECK_EQ(act_tc_classes_parse(bad[i], strlen(bad[i]), &c, err),
                 SM_EINVAL);
        CHECK_EQ(c.n, 99);
    }
    CHECK_EQ(act_tc_classes_parse("2mbit,1mbit", 11, &c, err), SM_EINVAL);
    CHECK(strstr(err, "increasing") != NULL);

    /* 16 classes fit, 17 do not. */
    char many[512] = "";
    for (int i = 1; i <= 17; i++) {
        char item[16];
        snprintf(item, sizeof item, "%s%dmbit", i > 1 ? "," : "", i);
        strcat(many, item);
        int rv = act_tc_classes_parse(many, strlen(many), &c, err);
        CHECK_EQ(rv, i <= ACT_TC_MAX_CLASSES ? SM_OK : SM_EINVAL);
    }
}

static void test_class_index(void)
{
    char err[SM_ERRMSG_SIZE];
    struct act_tc_classes c;
    REQUIRE_OK(act_tc_classes_parse(CLASSES, strlen(CLASSES), &c, err));
    bool exact = false;
    CHECK_EQ(act_tc_class_index(&c, 100000000, &exact), 0);
    CHECK(exact);
    CHECK_EQ(act_tc_class_index(&c, 500000000, &exact), 2);
    CHECK(exact);
    CHECK_EQ(act_tc_class_index(&c, 300000000, &exact), 1);
    CHECK(!exact);
    CHECK_EQ(act_tc_class_index(&c, 99000000, &exact), -1);
    CHECK(!exact);
    CHECK_EQ(act_tc_class_index(&c, 10000000000, &exact), 3);
    CHECK(!exact);
    /* A rate tc shows as 1Gbit is the 1gbit class. */
    CHECK_EQ(act_tc_class_index(&c, 1000000008, &exact), 3);
    CHECK(exact);
    CHECK_EQ(act_tc_class_index(&c, 200000000, NULL), 1);
}

/* ---- The show parser ------------------------------------------------------
 */

static void test_parse_show_real(void)
{
    char err[SM_ERRMSG_SIZE];
    struct act_tc_htb h;
    size_t n = sizeof real_show - 1;
    REQUIRE_OK(act_tc_parse_show(real_show, n, handle(1, 0x10), &h, err));
    CHECK_EQ(h.classid.minor, 0x10);
    CHECK(!h.root);
    CHECK_EQ(h.parent.major, 1);
    CHECK_EQ(h.parent.minor, 1);
    CHECK_EQ(h.prio, 1);
    CHECK_EQ(h.rate, 100000000);
    CHECK_EQ(h.ceil, 200000000);
    CHECK_EQ(h.burst, 1600);
    CHECK_EQ(h.cburst, 1600);
    CHECK_EQ(h.overhead, 0);
    CHECK(!h.atm);

    REQUIRE_OK(act_tc_parse_show(real_show, n, handle(1, 1), &h, err));
    CHECK(h.root);
    CHECK_EQ(h.parent.major, 1);
    CHECK_EQ(h.parent.minor, 0);
    CHECK_EQ(h.rate, 1000000000);
    CHECK_EQ(h.burst, 1375);

    REQUIRE_OK(act_tc_parse_show(real_show, n, handle(1, 0x20), &h, err));
    CHECK_EQ(h.rate, 500000000);
    CHECK_EQ(h.cburst, 1500);

    h.rate = 42;
    CHECK_EQ(act_tc_parse_show(real_show, n, handle(1, 0x99), &h, err),
             SM_ENOTFOUND);
    CHECK(strstr(err, "1:99") != NULL);
    CHECK_EQ(h.rate, 42);
    CHECK_EQ(act_tc_parse_show(real_show, n, handle(2, 0x10), &h, err),
             SM_ENOTFOUND);
    CHECK_EQ(act_tc_parse_show("", 0, handle(1, 0x10), &h, err), SM_ENOTFOUND);
}

/* The other spellings iproute2 6.1 has: overhead and link layer, -d. */
static void test_parse_show_variants(void)
{
    char err[SM_ERRMSG_SIZE];
    struct act_tc_htb h;
    const char *t =
        "class htb 1:30 parent 1:1 prio 0 rate 2500Kbit overhead 4 ceil "
        "1Tbit linklayer atm burst 1600b cburst 0b \n";
    REQUIRE_OK(act_tc_parse_show(t, strlen(t), handle(1, 0x30), &h, err));
    CHECK_EQ(h.rate, 2500000);
    CHECK_EQ(h.ceil, 1000000000000);
    CHECK_EQ(h.overhead, 4);
    CHECK(h.atm);
    CHECK_EQ(h.cburst, 0);
    t = "class htb 1:30 parent 1:1 prio 2 quantum 31250 rate 2500Kbit "
        "overhead 4 ceil 1Tbit linklayer atm burst 1600b/1 mpu 0b cburst "
        "2Kb/1 mpu 0b level 0 \n"
        " Sent 0 bytes 0 pkt (dropped 0, overlimits 0 requeues 0) \n"
        " rate 800bit 1pps backlog 0b 0p requeues 0\n";
    REQUIRE_OK(act_tc_parse_show(t, strlen(t), handle(1, 0x30), &h, err));
    CHECK_EQ(h.prio, 2);
    CHECK_EQ(h.rate, 2500000);
    CHECK_EQ(h.burst, 1600);
    CHECK_EQ(h.cburst, 2048);
    /* Other kinds and qdiscs' classes are not HTB classes. */
    t = "class fq_codel 1:10 parent 1:10 \n"
        "class mq 1:10 root \n"
        "class htb 1:100 parent 1:1 prio 0 rate 1Mbit ceil 1Mbit \n";
    CHECK_EQ(act_tc_parse_show(t, strlen(t), handle(1, 0x10), &h, err),
             SM_ENOTFOUND);
    /* CRLF-free tabs, no trailing newline, no burst. */
    t = "class htb 1:10\tparent 1:1 rate 1Mbit\tceil 2Mbit";
    REQUIRE_OK(act_tc_parse_show(t, strlen(t), handle(1, 0x10), &h, err));
    CHECK_EQ(h.ceil, 2000000);
    CHECK_EQ(h.burst, 0);
}

static void test_parse_show_malformed(void)
{
    static const char *const bad[] = {
        "class htb 1:10 parent 1:1 rate 1Mbit \n",
        "class htb 1:10 parent 1:1 ceil 1Mbit \n",
        "class htb 1:10 parent 1:1 rate 1Mbit rate 2Mbit ceil 2Mbit\n",
        "class htb 1:10 parent 1:1 rate fast ceil 2Mbit\n",
        "class htb 1:10 parent 1:1 rate 1Mbit ceil\n",
        "class htb 1:10 rate 1Mbit ceil 1Mbit\n",
        "class htb 1:10 root parent 1:1 rate 1Mbit ceil 1Mbit\n",
        "class htb 1:10 parent x:1 rate 1Mbit ceil 1Mbit\n",
        "class htb 1:10 parent 1:1 prio -1 rate 1Mbit ceil 1Mbit\n",
        "class htb 1:10 parent 1:1 rate 1Mbit ceil 1Mbit burst lots\n",
        ("class htb 1:10 parent 1:1 rate 1Mbit ceil 1Mbit\n"
         "class htb 1:10 parent 1:1 rate 1Mbit ceil 1Mbit\n"),
    };
    char err[SM_ERRMSG_SIZE];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct act_tc_htb h = {.rate = 42};
        int rv =
            act_tc_parse_show(bad[i], strlen(bad[i]), handle(1, 0x10), &h, err);
        if (rv != SM_EMALFORMED) {
            printf("# case %zu gave %s\n", i, sm_errname(rv));
        }
        CHECK_EQ(rv, SM_EMALFORMED);
        CHECK_EQ(h.rate, 42);
        CHECK(strstr(err, "1:10") != NULL);
    }
    /* A malformed line of another class does not matter. */
    const char *t =
        "class htb 1:20 parent rate\n"
        "class htb 1:10 parent 1:1 rate 1Mbit ceil 1Mbit\n";
    struct act_tc_htb h;
    CHECK_OK(act_tc_parse_show(t, strlen(t), handle(1, 0x10), &h, err));
    char *big = malloc(ACT_TC_OUTPUT_MAX + 2);
    REQUIRE(big != NULL);
    memset(big, ' ', ACT_TC_OUTPUT_MAX + 1);
    CHECK_EQ(
        act_tc_parse_show(big, ACT_TC_OUTPUT_MAX + 1, handle(1, 0x10), &h, err),
        SM_EMALFORMED);
    free(big);
}

/* ---- Configuration and argv -----------------------------------------------
 */

static void test_init(void)
{
    char err[SM_ERRMSG_SIZE];
    struct act_tc tc;
    REQUIRE_OK(act_tc_init(&tc, NULL, "eth0", "1:10", CLASSES, err));
    CHECK_STR(tc.tc_path, "tc");
    CHECK_STR(tc.dev, "eth0");
    CHECK_EQ(tc.classid.minor, 0x10);
    CHECK_EQ(tc.classes.n, 4);
    REQUIRE_OK(
        act_tc_init(&tc, "/sbin/tc", "enp0s31f6.100", "ab:cd", "1gbit", err));
    CHECK_STR(tc.tc_path, "/sbin/tc");

    struct
    {
        const char *path, *dev, *classid, *classes, *why;
    } bad[] = {
        {"", "eth0", "1:10", CLASSES, "tc program"},
        {NULL, "", "1:10", CLASSES, "device"},
        {NULL, "0123456789abcdef", "1:10", CLASSES, "device"},
        {NULL, "eth/0", "1:10", CLASSES, "device"},
        {NULL, "eth 0", "1:10", CLASSES, "device"},
        {NULL, "eth0", "1:", CLASSES, "qdisc"},
        {NULL, "eth0", "1-10", CLASSES, "handle"},
        {NULL, "eth0", "1:10", "", "class"},
        {NULL, "eth0", "1:10", "2mbit,1mbit", "class"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(&tc, 0x5a, sizeof tc);
        CHECK_EQ(act_tc_init(&tc, bad[i].path, bad[i].dev, bad[i].classid,
                             bad[i].classes, err),
                 SM_EINVAL);
        CHECK(strstr(err, bad[i].why) != NULL);
        CHECK_EQ(tc.tc_path[0], 0x5a);
    }
}

/* Joins @argv with single spaces into a static buffer. */
static const char *joined(char *const *argv)
{
    static char buf[2048];
    buf[0] = '\0';
    for (size_t i = 0; argv[i] != NULL; i++) {
        if (i > 0) {
            strcat(buf, " ");
        }
        strcat(buf, argv[i]);
    }
    return buf;
}

static void test_change_argv(void)
{
    char err[SM_ERRMSG_SIZE];
    struct act_tc tc;
    REQUIRE_OK(act_tc_init(&tc, "/x/tc", "eth0", "1:10", CLASSES, err));
    struct act_tc_htb w;
    memset(&w, 0, sizeof w);
    w.parent = handle(1, 1);
    w.rate = w.ceil = 200000000;
    struct act_tc_argv a;
    REQUIRE_OK(act_tc_change_argv(&tc, &w, &a, err));
    CHECK_STR(joined(a.argv),
              "/x/tc class change dev eth0 parent 1:1 classid "
              "1:10 htb rate 200Mbit ceil 200Mbit");
    CHECK_STR(a.argv[0], "/x/tc");

    w.parent = handle(1, 0);
    w.ceil = 1000000008;
    w.burst = 1600;
    w.cburst = 3200;
    w.prio = 3;
    w.overhead = 4;
    w.atm = true;
    REQUIRE_OK(act_tc_change_argv(&tc, &w, &a, err));
    CHECK_STR(joined(a.argv),
              "/x/tc class change dev eth0 parent 1: classid 1:10 htb rate "
              "200Mbit ceil 1000000008bit burst 1600b cburst 3200b prio 3 "
              "overhead 4 linklayer atm");

    w.rate = 0;
    CHECK_EQ(act_tc_change_argv(&tc, &w, &a, err), SM_EINVAL);
    w.rate = 1;
    w.burst = ACT_TC_SIZE_MAX + 1;
    CHECK_EQ(act_tc_change_argv(&tc, &w, &a, err), SM_EINVAL);
}

/* ---- A fake tc -------------------------------------------------------------
 *
 * The fake logs each call's arguments, one per line and "--" after the
 * last, to DIR/argv. `-s class show dev DEV` prints DIR/show with @RATE@,
 * @CEIL@, @BURST@ and @PRIO@ replaced by the content of the files of those
 * names, or "Cannot find device" when DEV is not DIR/dev. `class change`
 * stores its rate, ceil, burst and prio there (tc's defaults when absent:
 * burst 1600b, prio 0), as the kernel would. DIR/fail-show or
 * DIR/fail-change, when present, is printed instead and the fake exits 2;
 * DIR/hang makes it spin until killed. */

static const char fake_script[] =
    "#!/bin/sh\n"
    "d=$(dirname \"$0\")\n"
    "{ for a in \"$@\"; do printf '%s\\n' \"$a\"; done; echo --; } >> "
    "\"$d/argv\"\n"
    "[ -e \"$d/hang\" ] && while :; do :; done\n"
    "case \"$1\" in -s) mode=show ;; *) mode=change ;; esac\n"
    "if [ -e \"$d/fail-$mode\" ]; then cat \"$d/fail-$mode\"; exit 2; fi\n"
    "if [ $mode = show ]; then\n"
    "  [ \"$5\" = \"$(cat \"$d/dev\")\" ] || "
    "{ echo \"Cannot find device \\\"$5\\\"\"; exit 1; }\n"
    "  exec sed -e \"s/@RATE@/$(cat \"$d/rate\")/\" "
    "-e \"s/@CEIL@/$(cat \"$d/ceil\")/\" "
    "-e \"s/@BURST@/$(cat \"$d/burst\")/\" "
    "-e \"s/@PRIO@/$(cat \"$d/prio\")/\" \"$d/show\"\n"
    "fi\n"
    "echo 1600b > \"$d/burst\"; echo 0 > \"$d/prio\"; key=\n"
    "for a in \"$@\"; do\n"
    "  case $key in rate|ceil|burst|prio) echo \"$a\" > \"$d/$key\" ;; esac\n"
    "  key=$a\n"
    "done\n";

static const char fake_show[] =
    "class htb 1:1 root rate 1Gbit ceil 1Gbit burst 1375b cburst 1375b \n"
    " Sent 0 bytes 0 pkt (dropped 0, overlimits 0 requeues 0) \n"
    "\n"
    "class htb 1:10 parent 1:1 leaf 10: prio @PRIO@ rate @RATE@ ceil @CEIL@ "
    "burst @BURST@ cburst 1600b \n"
    " Sent 12345 bytes 67 pkt (dropped 0, overlimits 0 requeues 0) \n"
    " backlog 0b 0p requeues 0\n";

static void del(const char *dir, const char *name)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    REQUIRE(remove(path) == 0);
}

/* Makes a fake tc in a new directory: eth0, class 1:10 at @rate/@ceil. */
static const char *make_fake(struct act_tc *tc,
                             const char *rate,
                             const char *ceil)
{
    const char *dir = check_tmpdir();
    char path[1024], err[SM_ERRMSG_SIZE];
    check_put(dir, "tc", fake_script);
    snprintf(path, sizeof path, "%s/tc", dir);
    REQUIRE(chmod(path, 0755) == 0);
    check_put(dir, "show", fake_show);
    check_put(dir, "dev", "eth0\n");
    check_put(dir, "rate", rate);
    check_put(dir, "ceil", ceil);
    check_put(dir, "burst", "1600b");
    check_put(dir, "prio", "0");
    /* The fake appends to its log: an empty one reads as no calls. */
    check_put(dir, "argv", "");
    REQUIRE_OK(act_tc_init(tc, path, "eth0", "1:10", CLASSES, err));
    return dir;
}

/* The fake's argv log (without argv[0], which a script does not see),
 * arguments joined with spaces and each call ended by " |". Clears the
 * log. */
static const char *calls(const char *dir)
{
    static char out[8192];
    const char *log = check_get(dir, "argv");
    out[0] = '\0';
    for (const char *p = log; *p != '\0';) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        if (n == 2 && memcmp(p, "--", 2) == 0) {
            strcat(out, " |");
        } else {
            if (out[0] != '\0') {
                strcat(out, " ");
            }
            strncat(out, p, n);
        }
        p += n + (nl != NULL);
    }
    check_put(dir, "argv", "");
    return out;
}

static void test_fake_read(void)
{
    struct act_tc tc;
    char err[SM_ERRMSG_SIZE];
    const char *dir = make_fake(&tc, "200Mbit", "200Mbit");
    int rv = act_tc_available(&tc, in_10s(), err);
    if (rv != SM_OK) {
        printf("# %s\n", err);
    }
    REQUIRE_OK(rv);
    CHECK_STR(calls(dir), "-s class show dev eth0 |");
    struct act_tc_htb h;
    int index = -7;
    REQUIRE_OK(act_tc_read(&tc, in_10s(), &h, &index, err));
    CHECK_EQ(h.rate, 200000000);
    CHECK_EQ(h.parent.minor, 1);
    CHECK_EQ(index, 1);
    check_put(dir, "rate", "50Mbit");
    REQUIRE_OK(act_tc_read(&tc, in_10s(), &h, &index, err));
    CHECK_EQ(index, -1);
    REQUIRE_OK(act_tc_read(&tc, in_10s(), &h, NULL, err));
}

static void test_fake_unavailable(void)
{
    struct act_tc tc;
    char err[SM_ERRMSG_SIZE];
    const char *dir = make_fake(&tc, "200Mbit", "200Mbit");

    /* No tc program. */
    struct act_tc missing = tc;
    snprintf(missing.tc_path, sizeof missing.tc_path, "%s/no-tc", dir);
    CHECK_EQ(act_tc_available(&missing, in_10s(), err), SM_ENOTFOUND);
    CHECK(strstr(err, "not found") != NULL);
    CHECK(strstr(err, "no-tc") != NULL);

    /* A tc that cannot be executed. */
    struct act_tc noexec = tc;
    snprintf(noexec.tc_path, sizeof noexec.tc_path, "%s/show", dir);
    CHECK_EQ(act_tc_available(&noexec, in_10s(), err), SM_EPERM);

    /* No such device. */
    check_put(dir, "dev", "eth1\n");
    CHECK_EQ(act_tc_available(&tc, in_10s(), err), SM_ENOTFOUND);
    CHECK(strstr(err, "Cannot find device \"eth0\"") != NULL);
    check_put(dir, "dev", "eth0\n");

    /* No such class. */
    struct act_tc other = tc;
    other.classid = handle(1, 0x11);
    CHECK_EQ(act_tc_available(&other, in_10s(), err), SM_ENOTFOUND);
    CHECK(strstr(err, "no HTB class 1:11") != NULL);

    /* tc refuses. */
    check_put(dir, "fail-show", "RTNETLINK answers: Operation not permitted\n");
    CHECK_EQ(act_tc_available(&tc, in_10s(), err), SM_EPERM);
    CHECK(strstr(err, "exited with 2") != NULL);
    check_put(dir, "fail-show", "Something odd\nsecond line\n");
    CHECK_EQ(act_tc_available(&tc, in_10s(), err), SM_EIO);
    CHECK(strstr(err, "Something odd") != NULL);
    CHECK(strstr(err, "second") == NULL);
    del(dir, "fail-show");

    /* Output that is not tc's. */
    check_put(dir, "show", "class htb 1:10 parent 1:1 rate 1Mbit\n");
    struct act_tc_htb h = {.rate = 5};
    CHECK_EQ(act_tc_read(&tc, in_10s(), &h, NULL, err), SM_EMALFORMED);
    CHECK_EQ(h.rate, 5);
    CHECK(strstr(err, "no ceil") != NULL);
    CHECK(strlen(calls(dir)) > 0);
}

static void test_fake_timeout(void)
{
    struct act_tc tc;
    char err[SM_ERRMSG_SIZE];
    const char *dir = make_fake(&tc, "200Mbit", "200Mbit");
    check_put(dir, "hang", "");
    uint64_t soon = sm_clock_mono_ns(sm_clock_real()) + 100000000;
    CHECK_EQ(act_tc_available(&tc, soon, err), SM_ETIMEDOUT);
    CHECK(strstr(err, "timed out") != NULL);
}

static void test_fake_apply(void)
{
    struct act_tc tc;
    char err[SM_ERRMSG_SIZE];
    const char *dir = make_fake(&tc, "100Mbit", "200Mbit");
    check_put(dir, "burst", "3200b");
    struct act_tc_htb prev;
    bool changed = false;
    int rv = act_tc_apply_class(&tc, 2, in_10s(), &prev, &changed, err);
    if (rv != SM_OK) {
        printf("# %s\n", err);
    }
    REQUIRE_OK(rv);
    CHECK(changed);
    CHECK_EQ(prev.rate, 100000000);
    CHECK_EQ(prev.ceil, 200000000);
    CHECK_EQ(prev.burst, 3200);
    CHECK_STR(calls(dir),
              "-s class show dev eth0 | class change dev eth0 parent 1:1 "
              "classid 1:10 htb rate 500Mbit ceil 500Mbit |");
    CHECK_STR(check_get(dir, "rate"), "500Mbit\n");

    /* Idempotent: the second time only reads. */
    struct act_tc_htb again;
    REQUIRE_OK(act_tc_apply_class(&tc, 2, in_10s(), &again, &changed, err));
    CHECK(!changed);
    CHECK_EQ(again.rate, 500000000);
    CHECK_STR(calls(dir), "-s class show dev eth0 |");

    /* Rollback restores rate, ceil and burst as they were shown. */
    REQUIRE_OK(act_tc_apply(&tc, &prev, in_10s(), NULL, &changed, err));
    CHECK(changed);
    CHECK_STR(calls(dir),
              "-s class show dev eth0 | class change dev eth0 parent 1:1 "
              "classid 1:10 htb rate 100Mbit ceil 200Mbit burst 3200b cburst "
              "1600b |");
    struct act_tc_htb now;
    REQUIRE_OK(act_tc_read(&tc, in_10s(), &now, NULL, err));
    CHECK_EQ(now.rate, prev.rate);
    CHECK_EQ(now.ceil, prev.ceil);
    CHECK_EQ(now.burst, prev.burst);
    CHECK_EQ(now.cburst, prev.cburst);
    CHECK_EQ(now.prio, prev.prio);
    (void)calls(dir);
    REQUIRE_OK(act_tc_apply(&tc, &prev, in_10s(), NULL, &changed, err));
    CHECK(!changed);
    CHECK_STR(calls(dir), "-s class show dev eth0 |");

    /* changed and prev may be NULL. */
    REQUIRE_OK(act_tc_apply_class(&tc, 0, in_10s(), NULL, NULL, err));
    CHECK_STR(check_get(dir, "ceil"), "100Mbit\n");
}

/* tc class change resets what it is not given: prio is passed back. */
static void test_fake_keeps_prio(void)
{
    struct act_tc tc;
    char err[SM_ERRMSG_SIZE];
    const char *dir = make_fake(&tc, "100Mbit", "100Mbit");
    check_put(dir, "prio", "3");
    bool changed;
    REQUIRE_OK(act_tc_apply_class(&tc, 1, in_10s(), NULL, &changed, err));
    CHECK(changed);
    CHECK_STR(calls(dir),
              "-s class show dev eth0 | class change dev eth0 parent 1:1 "
              "classid 1:10 htb rate 200Mbit ceil 200Mbit prio 3 |");
    CHECK_STR(check_get(dir, "prio"), "3\n");
}

/* A rate tc shows truncated counts as applied: no endless rewrites. */
static void test_fake_shown_rates(void)
{
    struct act_tc tc;
    char err[SM_ERRMSG_SIZE];
    const char *dir = make_fake(&tc, "1Gbit", "1Gbit");
    struct act_tc_htb want;
    memset(&want, 0, sizeof want);
    want.rate = want.ceil = 1000000008;
    bool changed = true;
    REQUIRE_OK(act_tc_apply(&tc, &want, in_10s(), NULL, &changed, err));
    CHECK(!changed);
    CHECK_STR(calls(dir), "-s class show dev eth0 |");
}

static void test_fake_apply_failures(void)
{
    struct act_tc tc;
    char err[SM_ERRMSG_SIZE];
    const char *dir = make_fake(&tc, "100Mbit", "100Mbit");
    bool changed = true;

    /* Out-of-range requests run nothing. */
    CHECK_EQ(act_tc_apply_class(&tc, 4, in_10s(), NULL, &changed, err),
             SM_EINVAL);
    CHECK(!changed);
    CHECK_EQ(act_tc_apply_class(&tc, -1, in_10s(), NULL, &changed, err),
             SM_EINVAL);
    struct act_tc_htb want;
    memset(&want, 0, sizeof want);
    want.rate = 1;
    CHECK_EQ(act_tc_apply(&tc, &want, in_10s(), NULL, &changed, err),
             SM_EINVAL);
    CHECK_STR(calls(dir), "");

    /* The change fails: permission, a vanished class, anything else. */
    struct act_tc_htb prev = {.rate = 1};
    check_put(dir, "fail-change",
              "RTNETLINK answers: Operation not permitted\n");
    changed = true;
    CHECK_EQ(act_tc_apply_class(&tc, 3, in_10s(), &prev, &changed, err),
             SM_EPERM);
    CHECK(!changed);
    CHECK_EQ(prev.rate, 100000000);
    check_put(dir, "fail-change",
              "RTNETLINK answers: No such file or directory\n");
    CHECK_EQ(act_tc_apply_class(&tc, 3, in_10s(), NULL, &changed, err),
             SM_ENOTFOUND);
    check_put(dir, "fail-change", "Illegal \"rate\"\n");
    CHECK_EQ(act_tc_apply_class(&tc, 3, in_10s(), NULL, &changed, err), SM_EIO);
    CHECK(strstr(err, "Illegal") != NULL);
    CHECK_STR(check_get(dir, "rate"), "100Mbit");

    /* A read failure stops before any change. */
    check_put(dir, "dev", "eth1\n");
    (void)calls(dir);
    CHECK_EQ(act_tc_apply_class(&tc, 3, in_10s(), NULL, &changed, err),
             SM_ENOTFOUND);
    CHECK_STR(calls(dir), "-s class show dev eth0 |");
}

static void test_out_of_memory(void)
{
    struct act_tc tc;
    char err[SM_ERRMSG_SIZE];
    (void)make_fake(&tc, "100Mbit", "100Mbit");
    check_heap_install();
    check_heap_fault(0, 1);
    struct act_tc_htb h = {.rate = 3};
    CHECK_EQ(act_tc_read(&tc, in_10s(), &h, NULL, err), SM_ENOMEM);
    CHECK_EQ(h.rate, 3);
    check_heap_fault(0, 0);
    CHECK_OK(act_tc_read(&tc, in_10s(), &h, NULL, err));
    check_heap_uninstall();
}

static const struct check_test tests[] = {
    {"rates parse in tc's units", test_rate_parse},
    {"rates format exactly and round-trip", test_rate_format},
    {"rates compare as tc shows them", test_rate_shown},
    {"sizes parse as tc prints them", test_size_parse},
    {"handles parse and format", test_handles},
    {"class lists are increasing", test_classes},
    {"a rate maps to a class index", test_class_index},
    {"real tc class show output parses", test_parse_show_real},
    {"overhead, link layer and -d output parse", test_parse_show_variants},
    {"malformed class lines are refused", test_parse_show_malformed},
    {"init checks the device, classid and classes", test_init},
    {"change argv is exact", test_change_argv},
    {"fake tc: read and class index", test_fake_read},
    {"fake tc: unavailable reasons", test_fake_unavailable},
    {"fake tc: a hung tc times out", test_fake_timeout},
    {"fake tc: apply is idempotent and rolls back", test_fake_apply},
    {"fake tc: prio is kept across a change", test_fake_keeps_prio},
    {"fake tc: truncated rates count as applied", test_fake_shown_rates},
    {"fake tc: apply failures change nothing", test_fake_apply_failures},
    {"out of memory reading output", test_out_of_memory},
};

CHECK_MAIN(tests, NULL, NULL)
