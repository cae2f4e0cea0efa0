/* Tests for the command codec and the replicated state machine: every
 * command, idempotence, bad commands as counted no-ops, snapshots. */
#include <string.h>

#include "base/alloc.h"
#include "base/err.h"
#include "check.h"
#include "consensus/consensus.h"

static struct cons_fsm *fsm;

static void setup(void)
{
    check_heap_install();
    REQUIRE_OK(cons_fsm_new(&fsm));
}

static void teardown(void)
{
    cons_fsm_free(fsm);
    fsm = NULL;
    check_heap_uninstall();
}

/* Encodes @cmd into @buf (CONS_CMD_MAX bytes) and returns its length. */
static size_t encode(const struct cons_cmd *cmd, uint8_t *buf)
{
    size_t len = 0;
    int rv = cons_cmd_encode(cmd, buf, CONS_CMD_MAX, &len);
    if (rv != SM_OK) {
        check__fail(__FILE__, __LINE__, 1, "encode: %s", sm_errname(rv));
    }
    return len;
}

/* Encodes and applies @cmd, returning the outcome. */
static enum cons_apply_result apply(const struct cons_cmd *cmd)
{
    static uint8_t buf[CONS_CMD_MAX];
    size_t len = encode(cmd, buf);
    enum cons_apply_result res = (enum cons_apply_result) - 1;
    int rv = cons_fsm_apply(fsm, buf, len, &res);
    if (rv != SM_OK) {
        check__fail(__FILE__, __LINE__, 1, "apply: %s", sm_errname(rv));
    }
    return res;
}

static struct cons_cmd member(uint64_t id,
                              const char *addr,
                              enum cons_role role,
                              enum cons_health health)
{
    struct cons_cmd c = {.type = CONS_CMD_MEMBER_SET};
    c.u.member.id = id;
    c.u.member.address = addr;
    c.u.member.role = role;
    c.u.member.health = health;
    return c;
}

static struct cons_cmd diagnosis(const char *id, uint64_t t, const char *json)
{
    struct cons_cmd c = {.type = CONS_CMD_DIAGNOSIS};
    c.u.diagnosis.id = id;
    c.u.diagnosis.time_ms = t;
    c.u.diagnosis.json = json;
    return c;
}

static struct cons_cmd decision(const char *id, const char *diag)
{
    struct cons_cmd c = {.type = CONS_CMD_ACTION_DECIDE};
    c.u.decision.id = id;
    c.u.decision.diagnosis_id = diag;
    c.u.decision.service = "cart";
    c.u.decision.kind = "cpu_quota";
    c.u.decision.from = 1500; /* milli-cores */
    c.u.decision.to = -2250;
    c.u.decision.time_ms = 7;
    return c;
}

static struct cons_cmd action_state(const char *id,
                                    enum cons_action_state s,
                                    const char *ack,
                                    uint64_t t)
{
    struct cons_cmd c = {.type = CONS_CMD_ACTION_STATE};
    c.u.action.id = id;
    c.u.action.state = s;
    c.u.action.ack = ack;
    c.u.action.time_ms = t;
    return c;
}

static struct cons_digest digest(uint8_t seed)
{
    struct cons_digest d;
    for (size_t i = 0; i < sizeof d.b; i++) {
        d.b[i] = (uint8_t)(seed + i);
    }
    return d;
}

static void test_members(void)
{
    uint8_t buf[64];
    size_t len;
    CHECK_EQ(cons_cmd_encode(&(struct cons_cmd){0}, buf, sizeof buf, &len),
             SM_EINVAL);
    struct cons_cmd a =
        member(2, "10.0.0.2:7001", CONS_ROLE_SPARE, CONS_HEALTH_UP);
    struct cons_cmd b =
        member(1, "10.0.0.1:7001", CONS_ROLE_VOTER, CONS_HEALTH_UP);
    CHECK_EQ(apply(&a), CONS_APPLY_OK);
    CHECK_EQ(apply(&b), CONS_APPLY_OK);
    CHECK_EQ(apply(&a), CONS_APPLY_DUPLICATE);
    a.u.member.role = CONS_ROLE_VOTER; /* role change */
    a.u.member.health = CONS_HEALTH_SUSPECT;
    CHECK_EQ(apply(&a), CONS_APPLY_OK);

    struct cons_member m[4];
    REQUIRE_EQ(cons_fsm_members(fsm, m, 4), 2);
    CHECK_EQ(m[0].id, 1);
    CHECK_EQ(m[1].id, 2);
    CHECK_STR(m[1].address, "10.0.0.2:7001");
    CHECK_EQ(m[1].role, CONS_ROLE_VOTER);
    CHECK_EQ(m[1].health, CONS_HEALTH_SUSPECT);
    CHECK_EQ(cons_fsm_members(fsm, m, 1), 2); /* total, one copied */

    struct cons_cmd rm = {.type = CONS_CMD_MEMBER_REMOVE};
    rm.u.member.id = 1;
    CHECK_EQ(apply(&rm), CONS_APPLY_OK);
    CHECK_EQ(apply(&rm), CONS_APPLY_DUPLICATE);
    REQUIRE_EQ(cons_fsm_members(fsm, m, 4), 1);
    CHECK_EQ(m[0].id, 2);

    struct cons_fsm_stats st;
    cons_fsm_stats(fsm, &st);
    CHECK_EQ(st.applied, 4);
    CHECK_EQ(st.duplicate, 2);
    CHECK_EQ(st.bad, 0);
}

static void test_versions(void)
{
    struct cons_cmd cbn = {.type = CONS_CMD_CBN_COMMIT};
    cbn.u.cbn.version = 3;
    cbn.u.cbn.size = 4096;
    cbn.u.cbn.digest = digest(1);
    struct cons_shard_digest shards[] = {{"web", digest(9)},
                                         {"cart", digest(5)}};
    struct cons_cmd model = {.type = CONS_CMD_MODEL_COMMIT};
    model.u.model.version = 10;
    model.u.model.cbn_version = 3;
    model.u.model.n_shards = 2;
    model.u.model.shards = shards;

    CHECK_EQ(apply(&model), CONS_APPLY_BAD); /* CBN 3 not committed yet */
    CHECK_EQ(apply(&cbn), CONS_APPLY_OK);
    CHECK_EQ(apply(&cbn), CONS_APPLY_DUPLICATE);
    cbn.u.cbn.digest = digest(2);
    CHECK_EQ(apply(&cbn), CONS_APPLY_STALE); /* same version, other blob */
    cbn.u.cbn.version = 2;
    CHECK_EQ(apply(&cbn), CONS_APPLY_STALE);
    CHECK_EQ(apply(&model), CONS_APPLY_OK);
    CHECK_EQ(apply(&model), CONS_APPLY_DUPLICATE);
    model.u.model.version = 9;
    CHECK_EQ(apply(&model), CONS_APPLY_STALE);

    struct cons_versions v;
    cons_fsm_versions(fsm, &v);
    CHECK_EQ(v.cbn_version, 3);
    CHECK_EQ(v.cbn_size, 4096);
    CHECK(memcmp(&v.cbn_digest, &(struct cons_digest){0}, 1) != 0);
    CHECK_EQ(v.cbn_digest.b[0], 1);
    CHECK_EQ(v.model_version, 10);
    CHECK_EQ(v.model_cbn_version, 3);
    CHECK_EQ(v.model_shards, 2);
    struct cons_shard_digest got[2];
    REQUIRE_EQ(cons_fsm_model_shards(fsm, got, 2), 2);
    CHECK_STR(got[0].service, "cart"); /* sorted by name */
    CHECK_EQ(got[0].digest.b[0], 5);
    CHECK_STR(got[1].service, "web");
}

static void test_placement(void)
{
    struct cons_place_entry e[] = {{"web", 1, 2}, {"api", 2, 3}};
    struct cons_cmd c = {.type = CONS_CMD_PLACEMENT_SET};
    c.u.placement.epoch = 5;
    c.u.placement.n = 2;
    c.u.placement.entries = e;
    CHECK_EQ(apply(&c), CONS_APPLY_OK);
    CHECK_EQ(apply(&c), CONS_APPLY_DUPLICATE);
    c.u.placement.epoch = 4;
    CHECK_EQ(apply(&c), CONS_APPLY_STALE);

    uint64_t epoch = 0;
    struct cons_place_entry got[2];
    REQUIRE_EQ(cons_fsm_placement(fsm, &epoch, got, 2), 2);
    CHECK_EQ(epoch, 5);
    CHECK_STR(got[0].service, "api");
    CHECK_EQ(got[0].owner, 2);
    CHECK_EQ(got[0].replica, 3);
    struct cons_place_entry one;
    CHECK_OK(cons_fsm_placement_get(fsm, "web", &one));
    CHECK_EQ(one.owner, 1);
    CHECK_EQ(cons_fsm_placement_get(fsm, "db", &one), SM_ENOTFOUND);

    /* A newer epoch replaces the whole placement. */
    c.u.placement.epoch = 6;
    c.u.placement.n = 1;
    CHECK_EQ(apply(&c), CONS_APPLY_OK);
    CHECK_EQ(cons_fsm_placement(fsm, NULL, got, 2), 1);
    CHECK_STR(got[0].service, "web");

    /* Invalid placements do not even encode. */
    uint8_t buf[256];
    size_t len;
    struct cons_place_entry dup[] = {{"a", 1, 2}, {"a", 2, 1}};
    c.u.placement.entries = dup;
    c.u.placement.n = 2;
    CHECK_EQ(cons_cmd_encode(&c, buf, sizeof buf, &len), SM_EINVAL);
    struct cons_place_entry same[] = {{"a", 1, 1}};
    c.u.placement.entries = same;
    c.u.placement.n = 1;
    CHECK_EQ(cons_cmd_encode(&c, buf, sizeof buf, &len), SM_EINVAL);
}

static void test_diagnoses(void)
{
    struct cons_cmd d1 = diagnosis("d-1", 100, "{\"root\":\"db\"}");
    struct cons_cmd d2 = diagnosis("d-2", 50, "{\"root\":\"cart\"}");
    CHECK_EQ(apply(&d1), CONS_APPLY_OK);
    CHECK_EQ(apply(&d2), CONS_APPLY_OK);
    /* Same id, other content (a retried proposal from a new leader that
     * re-ran the sweep): the first record stays. */
    struct cons_cmd again = diagnosis("d-1", 999, "{\"root\":\"other\"}");
    CHECK_EQ(apply(&again), CONS_APPLY_DUPLICATE);

    struct cons_diagnosis out[4];
    REQUIRE_EQ(cons_fsm_diagnoses(fsm, out, 4), 2);
    CHECK_STR(out[0].id, "d-2"); /* newest in log order first */
    CHECK_EQ(out[0].seq, 2);
    CHECK_STR(out[1].id, "d-1");
    CHECK_STR(out[1].json, "{\"root\":\"db\"}");
    CHECK_EQ(out[1].time_ms, 100);
    CHECK_EQ(cons_fsm_diagnoses(fsm, out, 1), 1);
    CHECK_STR(out[0].id, "d-2");
    struct cons_diagnosis one;
    CHECK_OK(cons_fsm_diagnosis_get(fsm, "d-1", &one));
    CHECK_EQ(cons_fsm_diagnosis_get(fsm, "d-3", &one), SM_ENOTFOUND);
}

static void test_actions(void)
{
    struct cons_cmd dg = diagnosis("d-1", 1, "{}");
    struct cons_cmd a1 = decision("a-1", "d-1");
    struct cons_cmd orphan = decision("a-9", "d-404");
    CHECK_EQ(apply(&a1), CONS_APPLY_BAD); /* no such diagnosis yet */
    CHECK_EQ(apply(&dg), CONS_APPLY_OK);
    CHECK_EQ(apply(&a1), CONS_APPLY_OK);
    CHECK_EQ(apply(&a1), CONS_APPLY_DUPLICATE);
    CHECK_EQ(apply(&orphan), CONS_APPLY_BAD);

    struct cons_action act;
    REQUIRE_OK(cons_fsm_action_get(fsm, "a-1", &act));
    CHECK_EQ(act.state, CONS_ACT_PENDING);
    CHECK_EQ(act.from, 1500);
    CHECK_EQ(act.to, -2250);
    CHECK_STR(act.kind, "cpu_quota");
    CHECK_STR(act.ack, "");

    struct cons_cmd approve = action_state("a-1", CONS_ACT_APPROVED, "", 8);
    struct cons_cmd applied =
        action_state("a-1", CONS_ACT_APPLIED, "agent-2:ok", 9);
    struct cons_cmd verified =
        action_state("a-1", CONS_ACT_VERIFIED, "agent-2:p99 ok", 10);
    struct cons_cmd failed = action_state("a-1", CONS_ACT_FAILED, "late", 11);
    struct cons_cmd rolled = action_state("a-1", CONS_ACT_ROLLED_BACK, "", 12);
    CHECK_EQ(apply(&approve), CONS_APPLY_OK);
    CHECK_EQ(apply(&applied), CONS_APPLY_OK);
    CHECK_EQ(apply(&applied), CONS_APPLY_DUPLICATE);
    CHECK_EQ(apply(&approve), CONS_APPLY_STALE); /* never goes back */
    CHECK_EQ(apply(&verified), CONS_APPLY_OK);
    CHECK_EQ(apply(&applied), CONS_APPLY_STALE);
    CHECK_EQ(apply(&rolled), CONS_APPLY_OK);
    CHECK_EQ(apply(&failed), CONS_APPLY_STALE); /* both final */
    REQUIRE_OK(cons_fsm_action_get(fsm, "a-1", &act));
    CHECK_EQ(act.state, CONS_ACT_ROLLED_BACK);
    CHECK_EQ(act.updated_ms, 12);
    CHECK_EQ(act.decided_ms, 7);

    struct cons_cmd unknown = action_state("a-7", CONS_ACT_APPLIED, "", 1);
    CHECK_EQ(apply(&unknown), CONS_APPLY_BAD);

    struct cons_cmd a2 = decision("a-2", "d-1");
    CHECK_EQ(apply(&a2), CONS_APPLY_OK);
    struct cons_action list[4];
    CHECK_EQ(cons_fsm_actions(fsm, CONS_ACT__COUNT, list, 4), 2);
    CHECK_EQ(cons_fsm_actions(fsm, CONS_ACT_PENDING, list, 4), 1);
    CHECK_STR(list[0].id, "a-2");
    CHECK_EQ(cons_fsm_actions(fsm, CONS_ACT_ROLLED_BACK, list, 4), 1);
    CHECK_STR(list[0].id, "a-1");
    CHECK_EQ(cons_fsm_actions(fsm, CONS_ACT_FAILED, list, 4), 0);
    CHECK_EQ(cons_fsm_action_get(fsm, "a-3", &act), SM_ENOTFOUND);

    /* A pending state is never a change. */
    uint8_t buf[64];
    size_t len;
    struct cons_cmd pend = action_state("a-2", CONS_ACT_PENDING, "", 1);
    CHECK_EQ(cons_cmd_encode(&pend, buf, sizeof buf, &len), SM_EINVAL);
}

/* Decoding: round trip, and rejection of malformed input. */
static void test_codec(void)
{
    static uint8_t buf[CONS_CMD_MAX];
    struct cons_cmd d = decision("a-1", "d-1");
    size_t len = encode(&d, buf);
    struct cons_cmd back;
    REQUIRE_OK(cons_cmd_decode(buf, len, &back));
    CHECK_EQ(back.type, CONS_CMD_ACTION_DECIDE);
    CHECK_STR(back.u.decision.id, "a-1");
    CHECK_STR(back.u.decision.diagnosis_id, "d-1");
    CHECK_STR(back.u.decision.service, "cart");
    CHECK_EQ(back.u.decision.to, -2250);
    cons_cmd_release(&back);

    /* Every truncation fails, and trailing bytes fail. */
    for (size_t n = 0; n < len; n++) {
        CHECK(cons_cmd_decode(buf, n, &back) != SM_OK);
    }
    buf[len] = 0;
    CHECK_EQ(cons_cmd_decode(buf, len + 1, &back), SM_EMALFORMED);

    uint8_t bad_version[] = {2, CONS_CMD_MEMBER_REMOVE, 1, 0, 0, 0, 0, 0, 0, 0};
    CHECK_EQ(cons_cmd_decode(bad_version, sizeof bad_version, &back),
             SM_EUNSUPPORTED);
    uint8_t bad_type[] = {1, 77, 1, 0, 0, 0, 0, 0, 0, 0};
    CHECK_EQ(cons_cmd_decode(bad_type, sizeof bad_type, &back), SM_EMALFORMED);
    uint8_t zero_id[] = {1, CONS_CMD_MEMBER_REMOVE, 0, 0, 0, 0, 0, 0, 0, 0};
    CHECK_EQ(cons_cmd_decode(zero_id, sizeof zero_id, &back), SM_EMALFORMED);

    /* A list count far beyond the input fails before any allocation of
     * that size: the fault heap would report it as outstanding or as a
     * huge request otherwise. */
    uint8_t huge_list[] = {1,    CONS_CMD_PLACEMENT_SET,
                           1,    0,
                           0,    0,
                           0,    0,
                           0,    0,
                           0xff, 0xff,
                           0xff, 0x7f,
                           0};
    long before = check_heap_calls();
    CHECK_EQ(cons_cmd_decode(huge_list, sizeof huge_list, &back),
             SM_EMALFORMED);
    CHECK(check_heap_calls() - before <= 1);

    /* A string with a NUL inside is malformed; an id over the limit is too
     * big. */
    struct cons_cmd dg = diagnosis("d-1", 1, "{}");
    len = encode(&dg, buf);
    buf[7] = '\0'; /* inside "d-1" (version, type, u32 length, then "d-") */
    CHECK_EQ(cons_cmd_decode(buf, len, &back), SM_EMALFORMED);
    char long_id[CONS_ID_MAX + 2];
    memset(long_id, 'x', sizeof long_id - 1);
    long_id[sizeof long_id - 1] = '\0';
    dg.u.diagnosis.id = long_id;
    CHECK_EQ(cons_cmd_encode(&dg, buf, sizeof buf, &len), SM_ETOOBIG);
    CHECK_EQ(cons_cmd_encode(&d, buf, 4, &len), SM_ERANGE);

    /* Oversized input is refused as such. */
    CHECK_EQ(cons_cmd_decode(buf, CONS_CMD_MAX + 1, &back), SM_ETOOBIG);
    CHECK_STR(cons_cmd_type_name(CONS_CMD_DIAGNOSIS), "diagnosis");
    CHECK_STR(cons_cmd_type_name((enum cons_cmd_type)0), "unknown");
    CHECK_STR(cons_action_state_name(CONS_ACT_ROLLED_BACK), "rolled_back");
    CHECK_STR(cons_role_name(CONS_ROLE_STANDBY), "standby");
    CHECK_STR(cons_health_name(CONS_HEALTH_DOWN), "down");
}

/* Garbage is applied as a counted no-op and changes nothing else. */
static void test_bad_commands(void)
{
    uint8_t junk[][6] = {
        {0},
        {1, 0, 0, 0, 0, 0},
        {1, CONS_CMD_DIAGNOSIS, 200, 0, 0, 0},
        {9, 1, 2, 3, 4, 5},
    };
    uint8_t *before;
    size_t n_before;
    REQUIRE_OK(cons_fsm_snapshot(fsm, NULL, &before, &n_before));
    for (size_t i = 0; i < 4; i++) {
        enum cons_apply_result res = CONS_APPLY_OK;
        CHECK_OK(cons_fsm_apply(fsm, junk[i], sizeof junk[i], &res));
        CHECK_EQ(res, CONS_APPLY_BAD);
    }
    CHECK_OK(cons_fsm_apply(fsm, junk[0], 0, NULL));
    struct cons_fsm_stats st;
    cons_fsm_stats(fsm, &st);
    CHECK_EQ(st.bad, 5);
    CHECK_EQ(st.applied, 0);
    struct cons_diagnosis d[1];
    CHECK_EQ(cons_fsm_diagnoses(fsm, d, 1), 0);
    sm_free(before);
}

/* Fills the machine with one of everything. */
static void populate(void)
{
    struct cons_cmd m =
        member(3, "peer-3:7001", CONS_ROLE_STANDBY, CONS_HEALTH_DOWN);
    struct cons_cmd cbn = {.type = CONS_CMD_CBN_COMMIT};
    cbn.u.cbn.version = 1;
    cbn.u.cbn.size = 77;
    cbn.u.cbn.digest = digest(3);
    struct cons_shard_digest shards[] = {{"api", digest(4)}};
    struct cons_cmd model = {.type = CONS_CMD_MODEL_COMMIT};
    model.u.model.version = 2;
    model.u.model.cbn_version = 1;
    model.u.model.n_shards = 1;
    model.u.model.shards = shards;
    struct cons_place_entry e[] = {{"api", 3, 0}, {"web", 1, 3}};
    struct cons_cmd place = {.type = CONS_CMD_PLACEMENT_SET};
    place.u.placement.epoch = 1;
    place.u.placement.n = 2;
    place.u.placement.entries = e;
    struct cons_cmd dg = diagnosis("d-1", 5, "{\"x\":[1,2]}");
    struct cons_cmd ac = decision("a-1", "d-1");
    struct cons_cmd st = action_state("a-1", CONS_ACT_APPLIED, "ack", 6);
    const struct cons_cmd *all[] = {&m, &cbn, &model, &place, &dg, &ac, &st};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        CHECK_EQ(apply(all[i]), CONS_APPLY_OK);
    }
    uint8_t junk[] = {1, 2, 3};
    CHECK_OK(cons_fsm_apply(fsm, junk, sizeof junk, NULL));
}

static void test_snapshot_round_trip(void)
{
    populate();
    uint8_t *a, *b;
    size_t na, nb;
    REQUIRE_OK(cons_fsm_snapshot(fsm, NULL, &a, &na));
    struct cons_fsm *copy;
    REQUIRE_OK(cons_fsm_new(&copy));
    struct cons_cmd x = diagnosis("other", 1, "{}");
    uint8_t buf[128];
    size_t len = encode(&x, buf);
    CHECK_OK(cons_fsm_apply(copy, buf, len, NULL)); /* to be replaced */
    CHECK_OK(cons_fsm_restore(copy, a, na));
    REQUIRE_OK(cons_fsm_snapshot(copy, NULL, &b, &nb));
    CHECK_EQ(na, nb);
    CHECK(na == nb && memcmp(a, b, na) == 0);

    /* The queries agree too. */
    struct cons_fsm_stats s1, s2;
    cons_fsm_stats(fsm, &s1);
    cons_fsm_stats(copy, &s2);
    CHECK(memcmp(&s1, &s2, sizeof s1) == 0);
    CHECK_EQ(s2.bad, 1);
    struct cons_action act;
    REQUIRE_OK(cons_fsm_action_get(copy, "a-1", &act));
    CHECK_EQ(act.state, CONS_ACT_APPLIED);
    CHECK_STR(act.ack, "ack");
    struct cons_diagnosis d;
    CHECK_EQ(cons_fsm_diagnosis_get(copy, "other", &d), SM_ENOTFOUND);
    CHECK_OK(cons_fsm_diagnosis_get(copy, "d-1", &d));

    /* Idempotence survives the snapshot: the next diagnosis gets seq 2 and
     * a repeat of d-1 is still a duplicate. */
    struct cons_cmd again = diagnosis("d-1", 5, "{}");
    len = encode(&again, buf);
    enum cons_apply_result res;
    CHECK_OK(cons_fsm_apply(copy, buf, len, &res));
    CHECK_EQ(res, CONS_APPLY_DUPLICATE);

    /* Corrupt snapshots leave the machine as it was. */
    sm_free(a);
    REQUIRE_OK(cons_fsm_snapshot(copy, NULL, &a, &na));
    for (size_t n = 0; n < na; n += 7) {
        CHECK(cons_fsm_restore(copy, a, n) != SM_OK);
    }
    a[0] = 9;
    CHECK_EQ(cons_fsm_restore(copy, a, na), SM_EUNSUPPORTED);
    sm_free(b);
    REQUIRE_OK(cons_fsm_snapshot(copy, NULL, &b, &nb));
    a[0] = CONS_CMD_VERSION;
    CHECK(na == nb && memcmp(a, b, na) == 0);
    sm_free(a);
    sm_free(b);
    cons_fsm_free(copy);
}

/* Out of memory: apply reports SM_ENOMEM and changes nothing (raft then
 * retries the entry), restore leaves the state alone. */
static void test_out_of_memory(void)
{
    populate();
    uint8_t *before, *after;
    size_t nb, na;
    REQUIRE_OK(cons_fsm_snapshot(fsm, NULL, &before, &nb));
    struct cons_cmd cmds[] = {
        diagnosis("d-2", 1, "{}"),
        decision("a-2", "d-1"),
        member(9, "peer-9", CONS_ROLE_SPARE, CONS_HEALTH_UP),
        action_state("a-1", CONS_ACT_VERIFIED, "ok", 9),
    };
    static uint8_t buf[1024];
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        size_t len = encode(&cmds[i], buf);
        for (int k = 0; k < 8; k++) {
            check_heap_fault(k, 1);
            int rv = cons_fsm_apply(fsm, buf, len, NULL);
            check_heap_fault(-1, 0);
            if (rv == SM_OK) {
                break; /* enough allocations succeeded */
            }
            CHECK_EQ(rv, SM_ENOMEM);
            REQUIRE_OK(cons_fsm_snapshot(fsm, NULL, &after, &na));
            CHECK(na == nb && memcmp(before, after, na) == 0);
            sm_free(after);
        }
        sm_free(before);
        REQUIRE_OK(cons_fsm_snapshot(fsm, NULL, &before, &nb));
    }
    struct cons_fsm_stats st;
    cons_fsm_stats(fsm, &st);
    CHECK_EQ(st.applied, 7 + 4); /* each applied exactly once in the end */

    struct cons_fsm *copy;
    REQUIRE_OK(cons_fsm_new(&copy));
    for (int k = 0; k < 40; k++) {
        check_heap_fault(k, 1);
        int rv = cons_fsm_restore(copy, before, nb);
        check_heap_fault(-1, 0);
        if (rv == SM_OK) {
            break;
        }
        CHECK_EQ(rv, SM_ENOMEM);
        CHECK_EQ(cons_fsm_members(copy, NULL, 0), 0);
    }
    REQUIRE_OK(cons_fsm_snapshot(copy, NULL, &after, &na));
    CHECK(na == nb && memcmp(before, after, na) == 0);
    sm_free(after);
    sm_free(before);
    cons_fsm_free(copy);
}

static const struct check_test tests[] = {
    {"members add, change and remove", test_members},
    {"cbn and model versions", test_versions},
    {"placement by epoch", test_placement},
    {"diagnoses newest first, once per id", test_diagnoses},
    {"actions move forward only", test_actions},
    {"codec round trip and rejects", test_codec},
    {"bad commands are counted no-ops", test_bad_commands},
    {"snapshot and restore round trip", test_snapshot_round_trip},
    {"out of memory changes nothing", test_out_of_memory},
};

CHECK_MAIN(tests, setup, teardown)
