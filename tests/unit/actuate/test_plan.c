/* Tests for the controller's plan rules: steps, caps, rate limit,
 * verification, hysteresis, escalation and rollback advice. */
#include <string.h>

#include "actuate/actuate.h"
#include "base/err.h"
#include "check.h"

#define SEC 1000000000ull
#define GIB (1024ull * 1024 * 1024)

static struct act_plan_config cfg;
static struct act_settings cur;
static struct act_service_state st;

static void setup(void)
{
    act_plan_config_init(&cfg);
    cfg.mode = ACT_MODE_ON;
    cfg.min_interval_ns = 0; /* tests of the rate limit set it */
    act_settings_init(&cur);
    cur.cpu_cores = 2;
    cur.memory_bytes = 4 * GIB;
    cur.io_weight = 100;
    cur.net_class = 1;
    cur.llc_ways = 4;
    act_service_state_init(&st);
}

/* Decides for "api" with resource @res at @now, failing the test on error. */
static struct act_plan decide(const char *res, uint64_t now)
{
    struct act_plan p;
    char err[SM_ERRMSG_SIZE] = "";
    memset(&p, 0xa5, sizeof p);
    int rv = act_plan_decide(&cfg, "api", res, &cur, &st, now, &p, err);
    if (rv != SM_OK) {
        check__fail(__FILE__, __LINE__, 1, "decide: %s", err);
    }
    return p;
}

/* Applies @p: records it and moves @cur to its target value. */
static void apply(const struct act_plan *p, uint64_t now)
{
    act_plan_record_applied(&st, p, now);
    switch (p->kind) {
        case ACT_KIND_CPU_QUOTA:
            cur.cpu_cores = p->to;
            break;
        case ACT_KIND_MEMORY_LIMIT:
            cur.memory_bytes = (uint64_t)p->to;
            break;
        case ACT_KIND_IO_WEIGHT:
            cur.io_weight = (uint32_t)p->to;
            break;
        case ACT_KIND_NET_CLASS:
            cur.net_class = (int)p->to;
            break;
        case ACT_KIND_LLC_WAYS:
            cur.llc_ways = (uint32_t)p->to;
            break;
        case ACT_KIND_CPU_FREQ:
            cur.cpu_freq_khz = (uint32_t)p->to;
            break;
        default:
            break;
    }
}

static void test_names(void)
{
    enum act_resource r = ACT_RES_CPU;
    CHECK_STR(act_kind_name(ACT_KIND_NONE), "none");
    CHECK_STR(act_kind_name(ACT_KIND_CPU_QUOTA), "cpu_quota");
    CHECK_STR(act_kind_name(ACT_KIND_SCALE_OUT), "scale_out");
    CHECK_STR(act_kind_name(ACT_KIND_CPU_FREQ), "cpu_freq");
    CHECK_STR(act_kind_name(ACT_KIND__COUNT), "unknown");
    /* Every kind has a name: the action log stores kinds by name. */
    for (int k = 0; k < ACT_KIND__COUNT; k++) {
        CHECK(strcmp(act_kind_name((enum act_kind)k), "unknown") != 0);
    }
    CHECK_STR(act_kind_name((enum act_kind)42), "unknown");
    CHECK_OK(act_resource_parse("disk", &r));
    CHECK_EQ(r, ACT_RES_DISK);
    CHECK_OK(act_resource_parse("unknown", &r));
    CHECK_EQ(r, ACT_RES_UNKNOWN);
    CHECK_EQ(act_resource_parse("CPU", &r), SM_EINVAL);
    CHECK_EQ(act_resource_parse(NULL, &r), SM_EINVAL);
    CHECK_EQ(r, ACT_RES_UNKNOWN);
}

static void test_config(void)
{
    char err[SM_ERRMSG_SIZE];
    struct act_plan_config c;
    act_plan_config_init(&c);
    CHECK_EQ(c.mode, ACT_MODE_DRY_RUN);
    CHECK_EQ(c.verify_windows, 2u);
    CHECK_EQ(c.escalate_windows, 3u);
    CHECK(!c.scale_out_other);
    CHECK_OK(act_plan_config_validate(&c, err));
    c.verify_windows = 0;
    CHECK_EQ(act_plan_config_validate(&c, err), SM_EINVAL);
    CHECK(strstr(err, "verify_windows") != NULL);
    act_plan_config_init(&c);
    c.io_weight_factor = 1;
    CHECK_EQ(act_plan_config_validate(&c, err), SM_EINVAL);

    /* decide refuses a bad config, a bad resource and NULLs. */
    struct act_plan p;
    p.kind = ACT_KIND_LLC_WAYS;
    CHECK_EQ(act_plan_decide(&c, "api", "cpu", &cur, &st, 0, &p, err),
             SM_EINVAL);
    CHECK_EQ(act_plan_decide(&cfg, "api", "gpu", &cur, &st, 0, &p, err),
             SM_EINVAL);
    CHECK(strstr(err, "gpu") != NULL);
    CHECK_EQ(act_plan_decide(&cfg, NULL, "cpu", &cur, &st, 0, &p, err),
             SM_EINVAL);
    CHECK_EQ(p.kind, ACT_KIND_LLC_WAYS); /* untouched */
}

static void test_local_steps(void)
{
    struct act_plan p = decide("cpu", 0);
    CHECK_EQ(p.kind, ACT_KIND_CPU_QUOTA);
    CHECK_NEAR(p.from, 2, 0);
    CHECK_NEAR(p.to, 3, 1e-12); /* +50% */
    CHECK(strstr(p.reason, "cpu_quota") != NULL);
    cur.cpu_cores = 0.25;
    p = decide("cpu", 0);
    CHECK_NEAR(p.to, 0.75, 1e-12); /* at least +0.5 core */

    p = decide("memory", 0);
    CHECK_EQ(p.kind, ACT_KIND_MEMORY_LIMIT);
    CHECK_NEAR(p.from, (double)(4 * GIB), 0);
    CHECK_NEAR(p.to, (double)(5 * GIB), 0); /* +25% */
    cur.memory_bytes = 3;
    p = decide("memory", 0);
    CHECK_NEAR(p.to, 4, 0); /* rounded up to whole bytes */

    p = decide("disk", 0);
    CHECK_EQ(p.kind, ACT_KIND_IO_WEIGHT);
    CHECK_NEAR(p.to, 200, 0);

    p = decide("network", 0);
    CHECK_EQ(p.kind, ACT_KIND_NET_CLASS);
    CHECK_NEAR(p.from, 1, 0);
    CHECK_NEAR(p.to, 2, 0);

    p = decide("llc", 0);
    CHECK_EQ(p.kind, ACT_KIND_LLC_WAYS);
    CHECK_NEAR(p.to, 6, 0);

    /* Deterministic: the same inputs give the same plan. */
    struct act_plan q = decide("llc", 0);
    CHECK_EQ(q.kind, p.kind);
    CHECK_STR(q.reason, p.reason);
}

static void test_unknown_current(void)
{
    act_settings_init(&cur);
    const char *res[] = {"cpu", "memory", "disk", "network", "llc"};
    for (size_t i = 0; i < sizeof res / sizeof res[0]; i++) {
        struct act_plan p = decide(res[i], 0);
        CHECK_EQ(p.kind, ACT_KIND_NONE);
        CHECK(strstr(p.reason, "unknown") != NULL);
    }
}

/* A CPU culprit without a quota: its CPUs' frequency limit is raised to
 * the hardware maximum, once. */
static void test_cpu_freq(void)
{
    struct act_settings fresh;
    act_settings_init(&fresh);
    CHECK_EQ(fresh.cpu_freq_khz, 0u);
    CHECK_EQ(fresh.cpu_freq_max_khz, 0u);

    cur.cpu_cores = 0; /* unlimited */
    cur.cpu_freq_khz = 1200000;
    cur.cpu_freq_max_khz = 3600000;
    struct act_plan p = decide("cpu", 0);
    CHECK_EQ(p.kind, ACT_KIND_CPU_FREQ);
    CHECK_NEAR(p.from, 1200000, 0);
    CHECK_NEAR(p.to, 3600000, 0);
    CHECK(strstr(p.reason, "cpu_freq 1.2e+06 -> 3.6e+06") != NULL);
    CHECK(strstr(p.reason, "(cap)") == NULL);

    /* A quota, when there is one, is the knob. */
    cur.cpu_cores = 2;
    CHECK_EQ(decide("cpu", 0).kind, ACT_KIND_CPU_QUOTA);
    cur.cpu_cores = -1;
    CHECK_EQ(decide("cpu", 0).kind, ACT_KIND_CPU_FREQ);

    /* Already at the maximum: none, saying so (not a scale-out). */
    cur.cpu_freq_khz = 3600000;
    p = decide("cpu", 0);
    CHECK_EQ(p.kind, ACT_KIND_NONE);
    CHECK(strstr(p.reason, "maximum frequency (3600000 kHz)") != NULL);
    cur.cpu_freq_khz = 3700000; /* above: a stale reading, still none */
    CHECK_EQ(decide("cpu", 0).kind, ACT_KIND_NONE);

    /* Either value unknown: none, saying what is unknown. */
    cur.cpu_freq_khz = 0;
    p = decide("cpu", 0);
    CHECK_EQ(p.kind, ACT_KIND_NONE);
    CHECK(strstr(p.reason, "unknown or unlimited") != NULL);
    CHECK(strstr(p.reason, "CPU frequency") != NULL);
    cur.cpu_freq_khz = 1200000;
    cur.cpu_freq_max_khz = 0;
    CHECK_EQ(decide("cpu", 0).kind, ACT_KIND_NONE);

    /* Other resources ignore the frequency. */
    cur.cpu_freq_max_khz = 3600000;
    CHECK_EQ(decide("memory", 0).kind, ACT_KIND_MEMORY_LIMIT);
}

/* A frequency raise that did not help: escalation and rollback advice
 * concern cpu_freq, the knob a CPU culprit without a quota turns. */
static void test_cpu_freq_escalation(void)
{
    cur.cpu_cores = 0;
    cur.cpu_freq_khz = 2000000;
    cur.cpu_freq_max_khz = 3000000;
    uint64_t now = 0;
    struct act_plan p = decide("cpu", now);
    REQUIRE_EQ(p.kind, ACT_KIND_CPU_FREQ);
    apply(&p, now);
    CHECK_EQ(st.local_steps, 1u);
    CHECK_NEAR(st.added[ACT_KIND_CPU_FREQ], 1000000, 0);
    now += 30 * SEC;
    act_plan_record_window(&cfg, &st, false);
    now += 30 * SEC;
    CHECK_EQ(act_plan_record_window(&cfg, &st, false), ACT_VERDICT_NOT_HELPED);
    struct act_plan undo;
    REQUIRE(act_plan_rollback_advised(&st, &undo));
    CHECK_EQ(undo.kind, ACT_KIND_CPU_FREQ);
    CHECK_NEAR(undo.from, 3000000, 0);
    CHECK_NEAR(undo.to, 2000000, 0);
    p = decide("cpu", now);
    CHECK_EQ(p.kind, ACT_KIND_NONE);
    CHECK(strstr(p.reason, "cpu_freq did not help") != NULL);
    now += 30 * SEC;
    act_plan_record_window(&cfg, &st, false);
    p = decide("cpu", now);
    CHECK_EQ(p.kind, ACT_KIND_SCALE_OUT);
    CHECK(strstr(p.reason, "cpu_freq did not recover QoS") != NULL);
}

static void test_caps(void)
{
    cfg.max_cores = 2.5;
    struct act_plan p = decide("cpu", 0);
    CHECK_EQ(p.kind, ACT_KIND_CPU_QUOTA);
    CHECK_NEAR(p.to, 2.5, 0); /* clipped */
    CHECK(strstr(p.reason, "cap") != NULL);
    cur.cpu_cores = 2.5;
    p = decide("cpu", 0);
    CHECK_EQ(p.kind, ACT_KIND_SCALE_OUT); /* at the cap: escalate */
    CHECK_NEAR(p.to - p.from, 1, 0);
    CHECK(strstr(p.reason, "cap") != NULL);

    cfg.scale_out_enabled = false;
    p = decide("cpu", 0);
    CHECK_EQ(p.kind, ACT_KIND_NONE);
    CHECK(strstr(p.reason, "at cap") != NULL);
    CHECK(strstr(p.reason, "not configured") != NULL);
    cfg.scale_out_enabled = true;

    cfg.max_memory_bytes = 4 * GIB;
    CHECK_EQ(decide("memory", 0).kind, ACT_KIND_SCALE_OUT);
    cur.io_weight = 8000;
    p = decide("disk", 0);
    CHECK_NEAR(p.to, 10000, 0); /* default cap: cgroup v2's maximum */
    cur.io_weight = 10000;
    CHECK_EQ(decide("disk", 0).kind, ACT_KIND_SCALE_OUT);
    cur.net_class = 3;
    CHECK_EQ(decide("network", 0).kind, ACT_KIND_SCALE_OUT);
    cfg.max_net_class = 0;
    cur.net_class = 0;
    CHECK_EQ(decide("network", 0).kind, ACT_KIND_SCALE_OUT);
    cfg.max_llc_ways = 5;
    p = decide("llc", 0);
    CHECK_NEAR(p.to, 5, 0);
    cur.llc_ways = 5;
    CHECK_EQ(decide("llc", 0).kind, ACT_KIND_SCALE_OUT);
}

static void test_mode_off(void)
{
    cfg.mode = ACT_MODE_OFF;
    struct act_plan p = decide("cpu", 0);
    CHECK_EQ(p.kind, ACT_KIND_NONE);
    CHECK(strstr(p.reason, "off") != NULL);
    /* Dry-run plans like on; the caller does not apply. */
    cfg.mode = ACT_MODE_DRY_RUN;
    CHECK_EQ(decide("cpu", 0).kind, ACT_KIND_CPU_QUOTA);
}

static void test_other_unknown(void)
{
    struct act_plan p = decide("other", 0);
    CHECK_EQ(p.kind, ACT_KIND_NONE);
    CHECK(strstr(p.reason, "other") != NULL);
    CHECK_EQ(decide("unknown", 0).kind, ACT_KIND_NONE);
    cfg.scale_out_other = true;
    cfg.scale_out_amount = 2;
    p = decide("unknown", 0);
    CHECK_EQ(p.kind, ACT_KIND_SCALE_OUT);
    CHECK_NEAR(p.from, 0, 0);
    CHECK_NEAR(p.to, 2, 0);
    cfg.scale_out_enabled = false;
    CHECK_EQ(decide("other", 0).kind, ACT_KIND_NONE);
}

static void test_record_and_verify(void)
{
    struct act_plan p = decide("cpu", 10 * SEC);
    apply(&p, 10 * SEC);
    CHECK(st.has_action);
    CHECK_EQ(st.last_kind, ACT_KIND_CPU_QUOTA);
    CHECK_EQ(st.local_steps, 1u);
    CHECK_EQ(st.verdict, ACT_VERDICT_PENDING);
    CHECK_NEAR(st.added[ACT_KIND_CPU_QUOTA], 1, 1e-12);

    /* While verifying nothing else is planned, whatever the resource. */
    p = decide("cpu", 20 * SEC);
    CHECK_EQ(p.kind, ACT_KIND_NONE);
    CHECK(strstr(p.reason, "verifying") != NULL);
    CHECK_EQ(act_plan_record_window(&cfg, &st, false), ACT_VERDICT_NONE);
    CHECK_EQ(decide("memory", 20 * SEC).kind, ACT_KIND_NONE);
    CHECK(!act_plan_rollback_advised(&st, NULL));
    CHECK_EQ(act_plan_record_window(&cfg, &st, true), ACT_VERDICT_HELPED);
    CHECK_EQ(st.verdict, ACT_VERDICT_HELPED);
    CHECK(!act_plan_rollback_advised(&st, NULL));
    /* Settled once: later windows return no new verdict. */
    CHECK_EQ(act_plan_record_window(&cfg, &st, true), ACT_VERDICT_NONE);
    CHECK_EQ(st.local_steps, 0u); /* two met windows closed the episode */

    /* A none plan changes nothing. */
    struct act_service_state before = st;
    struct act_plan none = {ACT_KIND_NONE, 0, 0, ""};
    act_plan_record_applied(&st, &none, 99 * SEC);
    CHECK(memcmp(&before, &st, sizeof st) == 0);
}

static void test_rate_limit(void)
{
    cfg.min_interval_ns = 300 * SEC;
    struct act_plan p = decide("cpu", 1000 * SEC);
    apply(&p, 1000 * SEC);
    act_plan_record_window(&cfg, &st, false);
    act_plan_record_window(&cfg, &st, false); /* settled: not helped */
    act_plan_record_window(&cfg, &st, false);
    p = decide("memory", 1100 * SEC);
    CHECK_EQ(p.kind, ACT_KIND_NONE);
    CHECK(strstr(p.reason, "rate-limited") != NULL);
    CHECK(strstr(p.reason, "200.0 s") != NULL);
    /* A clock that goes back is still rate-limited. */
    CHECK_EQ(decide("memory", 500 * SEC).kind, ACT_KIND_NONE);
    CHECK_EQ(decide("memory", 1300 * SEC).kind, ACT_KIND_MEMORY_LIMIT);
}

static void test_escalation(void)
{
    uint64_t now = 0;
    struct act_plan p = decide("cpu", now);
    REQUIRE_EQ(p.kind, ACT_KIND_CPU_QUOTA);
    apply(&p, now);
    /* Windows 1-2: verifying; window 2 settles "not helped". */
    now += 30 * SEC;
    CHECK_EQ(act_plan_record_window(&cfg, &st, false), ACT_VERDICT_NONE);
    CHECK_EQ(decide("cpu", now).kind, ACT_KIND_NONE);
    now += 30 * SEC;
    CHECK_EQ(act_plan_record_window(&cfg, &st, false), ACT_VERDICT_NOT_HELPED);
    p = decide("cpu", now);
    CHECK_EQ(p.kind, ACT_KIND_NONE);
    CHECK(strstr(p.reason, "did not help") != NULL);
    /* Window 3 without recovery: scale out. */
    now += 30 * SEC;
    act_plan_record_window(&cfg, &st, false);
    p = decide("cpu", now);
    CHECK_EQ(p.kind, ACT_KIND_SCALE_OUT);
    CHECK_NEAR(p.from, 0, 0);
    CHECK_NEAR(p.to, 1, 0);
    CHECK(strstr(p.reason, "3 windows") != NULL);
    apply(&p, now);
    CHECK_EQ(st.local_steps, 1u); /* a scale-out is not a local step */
    CHECK_NEAR(st.added[ACT_KIND_SCALE_OUT], 1, 0);
    CHECK(!act_plan_rollback_advised(&st, NULL));

    /* A second scale-out that did not help either: another after 3. */
    for (int w = 0; w < 3; w++) {
        now += 30 * SEC;
        act_plan_record_window(&cfg, &st, false);
    }
    CHECK(!act_plan_rollback_advised(&st, NULL)); /* scale-outs: not here */
    p = decide("cpu", now);
    CHECK_EQ(p.kind, ACT_KIND_SCALE_OUT);
    CHECK_NEAR(p.from, 1, 0);
    CHECK_NEAR(p.to, 2, 0);

    /* Without a scale-out command: none, saying so. */
    cfg.scale_out_enabled = false;
    p = decide("cpu", now);
    CHECK_EQ(p.kind, ACT_KIND_NONE);
    CHECK(strstr(p.reason, "not configured") != NULL);
}

static void test_recovery_resets_escalation(void)
{
    struct act_plan p = decide("cpu", 0);
    apply(&p, 0);
    act_plan_record_window(&cfg, &st, false);
    CHECK_EQ(act_plan_record_window(&cfg, &st, false), ACT_VERDICT_NOT_HELPED);
    act_plan_record_window(&cfg, &st, true); /* recovered once */
    act_plan_record_window(&cfg, &st, false);
    act_plan_record_window(&cfg, &st, false);
    CHECK_EQ(st.windows_unrecovered, 2u);
    CHECK_EQ(decide("cpu", 0).kind, ACT_KIND_NONE); /* not yet 3 in a row */
    /* The culprit moved to memory: a local step there is fine. */
    CHECK_EQ(decide("memory", 0).kind, ACT_KIND_MEMORY_LIMIT);
}

static void test_rollback(void)
{
    struct act_plan p = decide("memory", 0);
    apply(&p, 0);
    act_plan_record_window(&cfg, &st, false);
    act_plan_record_window(&cfg, &st, false);
    struct act_plan undo;
    REQUIRE(act_plan_rollback_advised(&st, &undo));
    CHECK_EQ(undo.kind, ACT_KIND_MEMORY_LIMIT);
    CHECK_NEAR(undo.from, (double)(5 * GIB), 0);
    CHECK_NEAR(undo.to, (double)(4 * GIB), 0);
    CHECK(strstr(undo.reason, "roll back") != NULL);
    CHECK(act_plan_rollback_advised(&st, NULL));

    /* verify_windows = 1: settled after one window. */
    setup();
    cfg.verify_windows = 1;
    p = decide("llc", 0);
    apply(&p, 0);
    CHECK_EQ(act_plan_record_window(&cfg, &st, false), ACT_VERDICT_NOT_HELPED);
    CHECK(act_plan_rollback_advised(&st, &undo));
    CHECK_NEAR(undo.to, 4, 0);
}

/* Alternating violated/met windows, deciding on every violated one: after
 * the first action helps, none follows (hysteresis), and never two actions
 * in a row of decisions. */
static void test_no_flapping(void)
{
    int actions = 0, last_decision_acted = 0;
    uint64_t now = 0;
    for (int w = 0; w < 40; w++) {
        bool met = (w % 2) == 1;
        act_plan_record_window(&cfg, &st, met);
        if (!met) {
            struct act_plan p = decide("cpu", now);
            if (p.kind != ACT_KIND_NONE) {
                CHECK(!last_decision_acted);
                apply(&p, now);
                actions++;
            }
            last_decision_acted = p.kind != ACT_KIND_NONE;
        }
        now += 30 * SEC;
    }
    CHECK_EQ(actions, 1);
    CHECK_EQ(st.verdict, ACT_VERDICT_HELPED);
    CHECK(!act_plan_rollback_advised(&st, NULL));

    /* A persistent violation afterwards gets a second step. */
    act_plan_record_window(&cfg, &st, false);
    CHECK_EQ(decide("cpu", now).kind, ACT_KIND_NONE);
    act_plan_record_window(&cfg, &st, false);
    struct act_plan p = decide("cpu", now);
    CHECK_EQ(p.kind, ACT_KIND_CPU_QUOTA);
    CHECK_NEAR(p.from, 3, 1e-12);
    apply(&p, now);
    CHECK_EQ(st.local_steps, 2u); /* the episode never closed */
    CHECK_NEAR(st.added[ACT_KIND_CPU_QUOTA], 2.5, 1e-12);
}

static const struct check_test tests[] = {
    {"names", test_names},
    {"config", test_config},
    {"local steps", test_local_steps},
    {"unknown current", test_unknown_current},
    {"caps", test_caps},
    {"cpu frequency when the quota is unlimited", test_cpu_freq},
    {"cpu frequency: escalation and rollback", test_cpu_freq_escalation},
    {"mode off", test_mode_off},
    {"other and unknown", test_other_unknown},
    {"record and verify", test_record_and_verify},
    {"rate limit", test_rate_limit},
    {"escalation", test_escalation},
    {"recovery resets escalation", test_recovery_resets_escalation},
    {"rollback", test_rollback},
    {"no flapping", test_no_flapping},
};

CHECK_MAIN(tests, setup, NULL)
