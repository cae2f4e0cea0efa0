/* Tests for the command codec and the replicated state machine: every
 * command, idempotence, bad commands as counted no-ops, models bound to
 * their CBN (and the layout before the binding), snapshots. */
#include <stdio.h>
#include <string.h>

#include "base/alloc.h"
#include "base/err.h"
#include "check.h"
#include "consensus/consensus.h"

static struct cons_fsm *fsm;

/* Bytes a version 3 snapshot has after the version 2 layout when no older
 * CBN version is kept: the count (u32) and the model's CBN digest. */
#define V3_TAIL_EMPTY (4 + CONS_DIGEST_SIZE)
/* ... and per older CBN version kept: its version (u64) and digest. */
#define V3_TAIL_ITEM (8 + CONS_DIGEST_SIZE)

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

static struct cons_cmd retain(uint64_t max_diagnoses, uint64_t max_actions)
{
    struct cons_cmd c = {.type = CONS_CMD_RETAIN};
    c.u.retain.max_diagnoses = max_diagnoses;
    c.u.retain.max_actions = max_actions;
    c.u.retain.time_ms = 1000;
    return c;
}

/* Applies a retain of the given maxima, returning the outcome. */
static enum cons_apply_result apply_retain(uint64_t max_diagnoses,
                                           uint64_t max_actions)
{
    struct cons_cmd c = retain(max_diagnoses, max_actions);
    return apply(&c);
}

static struct cons_fsm_counts counts(const struct cons_fsm *f)
{
    struct cons_fsm_counts c;
    cons_fsm_counts(f, &c);
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
    model.u.model.cbn_digest = digest(3);
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
    a[0] = CONS_SNAPSHOT_VERSION;
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
        retain(1, 1), /* drops d-1 and a-1, frees only */
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
    CHECK_EQ(st.applied, 7 + 5); /* each applied exactly once in the end */
    struct cons_fsm_counts n = counts(fsm);
    CHECK_EQ(n.diagnoses, 1);
    CHECK_EQ(n.actions, 1);
    CHECK_EQ(n.diagnoses_dropped, 1);
    CHECK_EQ(n.actions_dropped, 1);

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

/* RETAIN encodes as two maxima and a time, both maxima at least 1. */
static void test_retain_codec(void)
{
    static uint8_t buf[CONS_CMD_MAX];
    struct cons_cmd r = retain(100, 7);
    r.u.retain.time_ms = 0x0102030405060708u;
    size_t len = encode(&r, buf);
    CHECK_EQ(len, 2 + 3 * 8);
    CHECK_EQ(buf[0], CONS_CMD_VERSION);
    CHECK_EQ(buf[1], CONS_CMD_RETAIN);
    CHECK_EQ(buf[2], 100); /* little-endian */
    CHECK_EQ(buf[2 + 16], 0x08);
    struct cons_cmd back;
    REQUIRE_OK(cons_cmd_decode(buf, len, &back));
    CHECK_EQ(back.type, CONS_CMD_RETAIN);
    CHECK_EQ(back.u.retain.max_diagnoses, 100);
    CHECK_EQ(back.u.retain.max_actions, 7);
    CHECK(back.u.retain.time_ms == 0x0102030405060708u);
    cons_cmd_release(&back);

    for (size_t n = 0; n < len; n++) {
        CHECK_EQ(cons_cmd_decode(buf, n, &back), SM_EMALFORMED);
    }
    buf[len] = 0;
    CHECK_EQ(cons_cmd_decode(buf, len + 1, &back), SM_EMALFORMED);

    /* Zero maxima neither encode nor decode. */
    size_t out;
    struct cons_cmd zero = retain(0, 1);
    CHECK_EQ(cons_cmd_encode(&zero, buf, CONS_CMD_MAX, &out), SM_EINVAL);
    zero = retain(1, 0);
    CHECK_EQ(cons_cmd_encode(&zero, buf, CONS_CMD_MAX, &out), SM_EINVAL);
    len = encode(&r, buf);
    memset(buf + 2, 0, 8); /* max_diagnoses = 0 */
    CHECK_EQ(cons_cmd_decode(buf, len, &back), SM_EMALFORMED);
    len = encode(&r, buf);
    memset(buf + 10, 0, 8); /* max_actions = 0 */
    CHECK_EQ(cons_cmd_decode(buf, len, &back), SM_EMALFORMED);
    enum cons_apply_result res = CONS_APPLY_OK;
    CHECK_OK(cons_fsm_apply(fsm, buf, len, &res));
    CHECK_EQ(res, CONS_APPLY_BAD);

    CHECK_STR(cons_cmd_type_name(CONS_CMD_RETAIN), "retain");
    CHECK_STR(cons_cmd_type_name(CONS_CMD__COUNT), "unknown");
}

/* Retention drops exactly the oldest diagnoses (by seq, not by time) and
 * remembers the newest time it dropped, so retries of them are stale. */
static void test_retain_diagnoses(void)
{
    CHECK_EQ(apply_retain(5, 5), CONS_APPLY_DUPLICATE);
    char ids[10][8];
    /* Times out of log order: d-2 is stamped later than d-3..d-5. */
    const uint64_t times[10] = {100, 110, 190, 130, 140,
                                150, 160, 170, 180, 200};
    for (int i = 0; i < 10; i++) {
        snprintf(ids[i], sizeof ids[i], "d-%d", i);
        struct cons_cmd d = diagnosis(ids[i], times[i], "{}");
        REQUIRE_EQ(apply(&d), CONS_APPLY_OK);
    }
    struct cons_fsm_counts n = counts(fsm);
    CHECK_EQ(n.diagnoses, 10);
    CHECK_EQ(n.diagnoses_dropped, 0);
    CHECK_EQ(n.diagnoses_dropped_ms, 0);

    struct cons_cmd r = retain(4, 100);
    CHECK_EQ(apply(&r), CONS_APPLY_OK);
    CHECK_EQ(apply(&r), CONS_APPLY_DUPLICATE); /* nothing left to drop */
    n = counts(fsm);
    CHECK_EQ(n.diagnoses, 4);
    CHECK_EQ(n.diagnoses_dropped, 6);
    CHECK_EQ(n.diagnoses_dropped_ms, 190); /* the newest dropped, d-2 */
    CHECK_EQ(n.actions, 0);
    CHECK_EQ(n.actions_dropped, 0);

    struct cons_diagnosis out[10];
    REQUIRE_EQ(cons_fsm_diagnoses(fsm, out, 10), 4);
    for (int i = 0; i < 4; i++) {
        CHECK_STR(out[i].id, ids[9 - i]);
        CHECK_EQ(out[i].seq, 10 - (uint64_t)i);
    }
    struct cons_diagnosis one;
    for (int i = 0; i < 6; i++) {
        CHECK_EQ(cons_fsm_diagnosis_get(fsm, ids[i], &one), SM_ENOTFOUND);
    }
    CHECK_OK(cons_fsm_diagnosis_get(fsm, "d-6", &one));
    CHECK_EQ(one.time_ms, 160);

    /* A sender retrying a dropped diagnosis does not bring it back. */
    for (int i = 0; i < 6; i++) {
        struct cons_cmd d = diagnosis(ids[i], times[i], "{}");
        CHECK_EQ(apply(&d), CONS_APPLY_STALE);
    }
    /* A kept one is still a duplicate, even stamped before the mark. */
    struct cons_cmd kept = diagnosis("d-6", 160, "{}");
    CHECK_EQ(apply(&kept), CONS_APPLY_DUPLICATE);
    /* A new one at the mark is taken for a retry; after it, it is new. */
    struct cons_cmd at_mark = diagnosis("d-new", 190, "{}");
    CHECK_EQ(apply(&at_mark), CONS_APPLY_STALE);
    struct cons_cmd fresh = diagnosis("d-new", 191, "{}");
    CHECK_EQ(apply(&fresh), CONS_APPLY_OK);
    REQUIRE_OK(cons_fsm_diagnosis_get(fsm, "d-new", &one));
    CHECK_EQ(one.seq, 11);

    /* The mark only rises: dropping older records keeps it. */
    CHECK_EQ(apply_retain(1, 100), CONS_APPLY_OK);
    n = counts(fsm);
    CHECK_EQ(n.diagnoses, 1);
    CHECK_EQ(n.diagnoses_dropped, 10);
    CHECK_EQ(n.diagnoses_dropped_ms, 200);
    REQUIRE_EQ(cons_fsm_diagnoses(fsm, out, 10), 1);
    CHECK_STR(out[0].id, "d-new");

    struct cons_fsm_stats st;
    cons_fsm_stats(fsm, &st);
    CHECK_EQ(st.stale, 7);
    CHECK_EQ(st.duplicate, 3);
    CHECK_EQ(st.bad, 0);
}

/* Applies a decision @id at @t, then moves it to @s (pending: stays). */
static void decide(const char *id, uint64_t t, enum cons_action_state s)
{
    struct cons_cmd d = decision(id, "d-1");
    d.u.decision.time_ms = t;
    REQUIRE_EQ(apply(&d), CONS_APPLY_OK);
    if (s != CONS_ACT_PENDING) {
        struct cons_cmd c = action_state(id, s, "", t + 1);
        REQUIRE_EQ(apply(&c), CONS_APPLY_OK);
    }
}

/* Retention drops the oldest final actions only; open ones stay even when
 * that leaves more than the maximum. */
static void test_retain_actions(void)
{
    struct cons_cmd dg = diagnosis("d-1", 1, "{}");
    REQUIRE_EQ(apply(&dg), CONS_APPLY_OK);
    decide("a-1", 10, CONS_ACT_VERIFIED);
    decide("a-2", 20, CONS_ACT_PENDING);
    decide("a-3", 50, CONS_ACT_FAILED);
    decide("a-4", 30, CONS_ACT_APPLIED);
    decide("a-5", 40, CONS_ACT_ROLLED_BACK);
    decide("a-6", 60, CONS_ACT_APPROVED);
    decide("a-7", 70, CONS_ACT_VERIFIED);
    struct cons_fsm_counts n = counts(fsm);
    CHECK_EQ(n.actions, 7);
    CHECK_EQ(n.actions_open, 3);

    /* Seven held, six wanted: only the oldest final one goes. */
    CHECK_EQ(apply_retain(100, 6), CONS_APPLY_OK);
    n = counts(fsm);
    CHECK_EQ(n.actions, 6);
    CHECK_EQ(n.actions_dropped, 1);
    CHECK_EQ(n.actions_dropped_ms, 10);
    struct cons_action act;
    CHECK_EQ(cons_fsm_action_get(fsm, "a-1", &act), SM_ENOTFOUND);

    /* Two wanted: every final one goes, the three open ones stay. */
    CHECK_EQ(apply_retain(100, 2), CONS_APPLY_OK);
    CHECK_EQ(apply_retain(100, 2), CONS_APPLY_DUPLICATE);
    n = counts(fsm);
    CHECK_EQ(n.actions, 3);
    CHECK_EQ(n.actions_open, 3);
    CHECK_EQ(n.actions_dropped, 4);
    CHECK_EQ(n.actions_dropped_ms, 70);
    CHECK_EQ(n.diagnoses, 1); /* untouched */
    CHECK_EQ(n.diagnoses_dropped, 0);
    struct cons_action list[8];
    REQUIRE_EQ(cons_fsm_actions(fsm, CONS_ACT__COUNT, list, 8), 3);
    CHECK_STR(list[0].id, "a-2"); /* decision order kept */
    CHECK_STR(list[1].id, "a-4");
    CHECK_STR(list[2].id, "a-6");
    CHECK_EQ(list[1].state, CONS_ACT_APPLIED);

    /* Retries of dropped decisions are stale, a late state change of a
     * dropped action refers to nothing, a new decision is taken. */
    struct cons_cmd again = decision("a-3", "d-1");
    again.u.decision.time_ms = 50;
    CHECK_EQ(apply(&again), CONS_APPLY_STALE);
    again.u.decision.time_ms = 70; /* at the mark */
    CHECK_EQ(apply(&again), CONS_APPLY_STALE);
    struct cons_cmd late = action_state("a-5", CONS_ACT_FAILED, "", 99);
    CHECK_EQ(apply(&late), CONS_APPLY_BAD);
    struct cons_cmd kept = decision("a-2", "d-1");
    kept.u.decision.time_ms = 20;
    CHECK_EQ(apply(&kept), CONS_APPLY_DUPLICATE);
    decide("a-8", 71, CONS_ACT_PENDING);

    /* An open action that finishes becomes droppable. */
    struct cons_cmd done = action_state("a-4", CONS_ACT_VERIFIED, "ok", 80);
    CHECK_EQ(apply(&done), CONS_APPLY_OK);
    n = counts(fsm);
    CHECK_EQ(n.actions, 4);
    CHECK_EQ(n.actions_open, 3);
    CHECK_EQ(apply_retain(100, 1), CONS_APPLY_OK);
    n = counts(fsm);
    CHECK_EQ(n.actions, 3);
    CHECK_EQ(n.actions_open, 3);
    CHECK_EQ(n.actions_dropped, 5);
    CHECK_EQ(n.actions_dropped_ms, 70); /* a-4 was decided at 30 */
    CHECK_EQ(cons_fsm_actions(fsm, CONS_ACT_VERIFIED, list, 8), 0);
}

/* Snapshots carry the watermarks and totals; equal states give equal
 * bytes; version 1 snapshots (before retention) still restore. */
static void test_retain_snapshot(void)
{
    populate();
    struct cons_cmd d2 = diagnosis("d-2", 9, "{}");
    struct cons_cmd a2 = decision("a-2", "d-2");
    a2.u.decision.time_ms = 11;
    struct cons_cmd fin = action_state("a-1", CONS_ACT_VERIFIED, "ok", 10);
    struct cons_cmd r = retain(1, 1);
    const struct cons_cmd *log[] = {&d2, &a2, &fin, &r};
    for (size_t i = 0; i < 4; i++) {
        CHECK_EQ(apply(log[i]), CONS_APPLY_OK);
    }
    struct cons_fsm_counts n = counts(fsm);
    CHECK_EQ(n.diagnoses_dropped, 1);
    CHECK_EQ(n.diagnoses_dropped_ms, 5);
    CHECK_EQ(n.actions_dropped, 1);
    CHECK_EQ(n.actions_dropped_ms, 7);
    CHECK_EQ(n.actions, 1);
    CHECK_EQ(n.actions_open, 1);

    uint8_t *a, *b;
    size_t na, nb;
    REQUIRE_OK(cons_fsm_snapshot(fsm, NULL, &a, &na));
    CHECK_EQ(a[0], CONS_SNAPSHOT_VERSION);
    struct cons_fsm *copy;
    REQUIRE_OK(cons_fsm_new(&copy));
    CHECK_OK(cons_fsm_restore(copy, a, na));
    REQUIRE_OK(cons_fsm_snapshot(copy, NULL, &b, &nb));
    CHECK(na == nb && memcmp(a, b, na) == 0);
    sm_free(b);
    struct cons_fsm_counts m = counts(copy);
    CHECK(memcmp(&n, &m, sizeof n) == 0);

    /* The restored machine still refuses retries of dropped records. */
    uint8_t buf[256];
    struct cons_cmd retry = diagnosis("d-1", 5, "{}");
    size_t len = encode(&retry, buf);
    enum cons_apply_result res;
    CHECK_OK(cons_fsm_apply(copy, buf, len, &res));
    CHECK_EQ(res, CONS_APPLY_STALE);
    struct cons_cmd redo = decision("a-1", "d-2");
    len = encode(&redo, buf);
    CHECK_OK(cons_fsm_apply(copy, buf, len, &res));
    CHECK_EQ(res, CONS_APPLY_STALE);
    cons_fsm_free(copy);

    /* Another machine fed the same log ends with the same bytes. */
    struct cons_fsm *first = fsm;
    REQUIRE_OK(cons_fsm_new(&fsm));
    populate();
    for (size_t i = 0; i < 4; i++) {
        CHECK_EQ(apply(log[i]), CONS_APPLY_OK);
    }
    REQUIRE_OK(cons_fsm_snapshot(fsm, NULL, &b, &nb));
    cons_fsm_free(fsm);
    fsm = first;
    CHECK(na == nb && memcmp(a, b, na) == 0);
    sm_free(b);

    /* Truncations fail; a watermark without a drop is malformed. */
    REQUIRE_OK(cons_fsm_new(&copy));
    for (size_t k = 0; k < na; k++) {
        CHECK(cons_fsm_restore(copy, a, k) != SM_OK);
    }
    uint8_t *bad = sm_malloc(na);
    REQUIRE(bad != NULL);
    memcpy(bad, a, na);
    /* diagnoses dropped: 0, mark kept (populate commits one CBN) */
    memset(bad + na - V3_TAIL_EMPTY - 32, 0, 8);
    CHECK_EQ(cons_fsm_restore(copy, bad, na), SM_EMALFORMED);
    memcpy(bad, a, na);
    bad[0] = CONS_SNAPSHOT_VERSION + 1;
    CHECK_EQ(cons_fsm_restore(copy, bad, na), SM_EUNSUPPORTED);
    sm_free(bad);
    CHECK_EQ(counts(copy).diagnoses, 0);
    sm_free(a);

    /* Version 1: the same layout without the 32 bytes of retention (and
     * the version 3 tail). */
    struct cons_fsm *plain;
    REQUIRE_OK(cons_fsm_new(&plain));
    struct cons_cmd dg = diagnosis("d-9", 3, "{\"v\":1}");
    len = encode(&dg, buf);
    REQUIRE_OK(cons_fsm_apply(plain, buf, len, NULL));
    REQUIRE_OK(cons_fsm_snapshot(plain, NULL, &a, &na));
    cons_fsm_free(plain);
    a[0] = 1;
    CHECK_EQ(cons_fsm_restore(copy, a, na), SM_EMALFORMED); /* trailing */
    CHECK_OK(cons_fsm_restore(copy, a, na - V3_TAIL_EMPTY - 32));
    struct cons_diagnosis one;
    CHECK_OK(cons_fsm_diagnosis_get(copy, "d-9", &one));
    m = counts(copy);
    CHECK_EQ(m.diagnoses, 1);
    CHECK_EQ(m.diagnoses_dropped, 0);
    REQUIRE_OK(cons_fsm_snapshot(copy, NULL, &b, &nb));
    a[0] = CONS_SNAPSHOT_VERSION; /* rewritten in the current version */
    CHECK(na == nb && memcmp(a, b, na) == 0);
    sm_free(a);
    sm_free(b);
    cons_fsm_free(copy);
}

static struct cons_cmd cbn_commit(uint64_t version, struct cons_digest d)
{
    struct cons_cmd c = {.type = CONS_CMD_CBN_COMMIT};
    c.u.cbn.version = version;
    c.u.cbn.size = 100 + version;
    c.u.cbn.digest = d;
    return c;
}

/* A model of @version trained on CBN @cbn_version of digest @d (all zero:
 * not bound); one shard. */
static struct cons_cmd model_commit(uint64_t version,
                                    uint64_t cbn_version,
                                    struct cons_digest d)
{
    static const struct cons_shard_digest shards[] = {{"api", {{7}}}};
    struct cons_cmd c = {.type = CONS_CMD_MODEL_COMMIT};
    c.u.model.version = version;
    c.u.model.cbn_version = cbn_version;
    c.u.model.n_shards = 1;
    c.u.model.shards = shards;
    c.u.model.cbn_digest = d;
    return c;
}

static int digest_eq(struct cons_digest a, struct cons_digest b)
{
    return memcmp(&a, &b, sizeof a) == 0;
}

/* Applies a model commit, returning the outcome. */
static enum cons_apply_result apply_model(uint64_t version,
                                          uint64_t cbn_version,
                                          struct cons_digest d)
{
    struct cons_cmd c = model_commit(version, cbn_version, d);
    return apply(&c);
}

/* A model bound to its CBN applies only with the digest committed under
 * that version; older kept versions can be named, older still are stale. */
static void test_model_binding(void)
{
    const struct cons_digest none = {{0}};
    struct cons_cmd c1 = cbn_commit(1, digest(10));
    CHECK_EQ(apply(&c1), CONS_APPLY_OK);
    CHECK_EQ(apply_model(1, 1, digest(10)), CONS_APPLY_OK);
    struct cons_versions v;
    cons_fsm_versions(fsm, &v);
    CHECK_EQ(v.model_version, 1);
    CHECK_EQ(v.model_cbn_version, 1);
    CHECK(digest_eq(v.model_cbn_digest, digest(10)));
    CHECK_EQ(apply_model(1, 1, digest(10)), CONS_APPLY_DUPLICATE);

    /* Another leader's CBN under version 1: refused, nothing changes. */
    CHECK_EQ(apply_model(2, 1, digest(11)), CONS_APPLY_BAD);
    cons_fsm_versions(fsm, &v);
    CHECK_EQ(v.model_version, 1);
    CHECK(digest_eq(v.model_cbn_digest, digest(10)));

    /* The competing CBN commit itself is stale; the model for it too. */
    struct cons_cmd rival = cbn_commit(1, digest(11));
    CHECK_EQ(apply(&rival), CONS_APPLY_STALE);
    CHECK_EQ(apply_model(2, 1, digest(11)), CONS_APPLY_BAD);

    /* A newer CBN: the older one can still be named, by its digest. */
    struct cons_cmd c2 = cbn_commit(2, digest(20));
    CHECK_EQ(apply(&c2), CONS_APPLY_OK);
    CHECK_EQ(apply_model(2, 2, digest(10)), CONS_APPLY_BAD);
    CHECK_EQ(apply_model(2, 1, digest(10)), CONS_APPLY_OK);
    CHECK_EQ(apply_model(3, 2, digest(20)), CONS_APPLY_OK);
    struct cons_digest d;
    CHECK_OK(cons_fsm_cbn_digest(fsm, 1, &d));
    CHECK(digest_eq(d, digest(10)));
    CHECK_OK(cons_fsm_cbn_digest(fsm, 2, &d));
    CHECK(digest_eq(d, digest(20)));
    CHECK_EQ(cons_fsm_cbn_digest(fsm, 3, &d), SM_ENOTFOUND);
    CHECK_EQ(cons_fsm_cbn_digest(fsm, 0, &d), SM_ENOTFOUND);

    /* Versions skip: one in between was never committed (bad), one ahead
     * is not committed yet (bad, bound or not). */
    struct cons_cmd c5 = cbn_commit(5, digest(50));
    CHECK_EQ(apply(&c5), CONS_APPLY_OK);
    CHECK_EQ(apply_model(4, 4, digest(40)), CONS_APPLY_BAD);
    CHECK_EQ(apply_model(4, 6, digest(50)), CONS_APPLY_BAD);
    CHECK_EQ(apply_model(4, 6, none), CONS_APPLY_BAD);

    /* CONS_CBN_KEPT versions are kept: after as many more commits, the
     * first ones are gone and a model naming them cannot be checked. */
    for (uint64_t k = 6; k < 6 + CONS_CBN_KEPT - 1; k++) {
        struct cons_cmd c = cbn_commit(k, digest((uint8_t)(k * 10)));
        CHECK_EQ(apply(&c), CONS_APPLY_OK);
    }
    uint64_t newest = 6 + CONS_CBN_KEPT - 2;
    CHECK_EQ(cons_fsm_cbn_digest(fsm, 1, &d), SM_ENOTFOUND);
    CHECK_EQ(cons_fsm_cbn_digest(fsm, 2, &d), SM_ENOTFOUND);
    CHECK_OK(cons_fsm_cbn_digest(fsm, 5, &d)); /* the oldest kept */
    CHECK(digest_eq(d, digest(50)));
    size_t kept = 0;
    for (uint64_t k = 1; k <= newest; k++) {
        kept += cons_fsm_cbn_digest(fsm, k, &d) == SM_OK;
    }
    CHECK_EQ(kept, CONS_CBN_KEPT);
    CHECK_EQ(apply_model(4, 2, digest(20)), CONS_APPLY_STALE);
    CHECK_EQ(apply_model(4, 1, digest(10)), CONS_APPLY_STALE);
    CHECK_EQ(apply_model(4, 5, digest(50)), CONS_APPLY_OK);

    /* Not bound (an entry of the layout before): by version only, as
     * before, even naming a version no longer kept. */
    CHECK_EQ(apply_model(5, 1, none), CONS_APPLY_OK);
    cons_fsm_versions(fsm, &v);
    CHECK_EQ(v.model_version, 5);
    CHECK_EQ(v.model_cbn_version, 1);
    CHECK(digest_eq(v.model_cbn_digest, none));
    CHECK_EQ(v.cbn_version, newest);

    struct cons_fsm_stats st;
    cons_fsm_stats(fsm, &st);
    CHECK_EQ(st.bad, 6);
    CHECK_EQ(st.stale, 3);
    CHECK_EQ(st.duplicate, 1);
}

/* Little-endian writers for hand-made entries. */
static size_t put_le(uint8_t *at, uint64_t v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        at[i] = (uint8_t)(v >> (8 * i));
    }
    return n;
}

/* A MODEL_COMMIT as peers wrote it before the binding (version 3 of a
 * model on CBN 1, one shard "api"): it still decodes, unbound, and
 * applies; encoding it again appends an all-zero cbn_digest. */
static void test_model_old_layout(void)
{
    uint8_t old[2 + 8 + 8 + 4 + 4 + 3 + CONS_DIGEST_SIZE];
    size_t n = 0;
    old[n++] = 1; /* CONS_CMD_VERSION of that time, unchanged */
    old[n++] = CONS_CMD_MODEL_COMMIT;
    n += put_le(old + n, 3, 8);
    n += put_le(old + n, 1, 8);
    n += put_le(old + n, 1, 4);
    n += put_le(old + n, 3, 4);
    memcpy(old + n, "api", 3);
    n += 3;
    memset(old + n, 0x11, CONS_DIGEST_SIZE);
    n += CONS_DIGEST_SIZE;
    REQUIRE_EQ(n, sizeof old);

    struct cons_cmd back;
    REQUIRE_OK(cons_cmd_decode(old, sizeof old, &back));
    CHECK_EQ(back.type, CONS_CMD_MODEL_COMMIT);
    CHECK_EQ(back.u.model.version, 3);
    CHECK_EQ(back.u.model.cbn_version, 1);
    REQUIRE_EQ(back.u.model.n_shards, 1);
    CHECK_STR(back.u.model.shards[0].service, "api");
    CHECK_EQ(back.u.model.shards[0].digest.b[31], 0x11);
    CHECK(digest_eq(back.u.model.cbn_digest, (struct cons_digest){{0}}));
    static uint8_t buf[CONS_CMD_MAX];
    size_t len = encode(&back, buf);
    cons_cmd_release(&back);
    CHECK_EQ(len, sizeof old + CONS_DIGEST_SIZE);
    CHECK(memcmp(buf, old, sizeof old) == 0);
    size_t zeros = 0;
    for (size_t i = sizeof old; i < len; i++) {
        zeros += buf[i] == 0;
    }
    CHECK_EQ(zeros, CONS_DIGEST_SIZE);

    /* It applies by version, as it did. */
    enum cons_apply_result res = CONS_APPLY_BAD;
    CHECK_OK(cons_fsm_apply(fsm, old, sizeof old, &res));
    CHECK_EQ(res, CONS_APPLY_BAD); /* CBN 1 not committed yet */
    struct cons_cmd c1 = cbn_commit(1, digest(1));
    CHECK_EQ(apply(&c1), CONS_APPLY_OK);
    CHECK_OK(cons_fsm_apply(fsm, old, sizeof old, &res));
    CHECK_EQ(res, CONS_APPLY_OK);
    CHECK_OK(cons_fsm_apply(fsm, old, sizeof old, &res));
    CHECK_EQ(res, CONS_APPLY_DUPLICATE);
    struct cons_versions v;
    cons_fsm_versions(fsm, &v);
    CHECK_EQ(v.model_version, 3);
    CHECK(digest_eq(v.model_cbn_digest, (struct cons_digest){{0}}));

    /* The new layout: the same bytes, then the digest. */
    struct cons_cmd bound = model_commit(4, 1, digest(1));
    len = encode(&bound, buf);
    CHECK_EQ(len, 2 + 8 + 8 + 4 + 4 + 3 + 2 * CONS_DIGEST_SIZE);
    CHECK_EQ(buf[len - CONS_DIGEST_SIZE], 1);
    REQUIRE_OK(cons_cmd_decode(buf, len, &back));
    CHECK(digest_eq(back.u.model.cbn_digest, digest(1)));
    cons_cmd_release(&back);
    /* Cut anywhere, it fails, except right after the shard list (the old
     * layout, then unbound); a byte more fails. */
    for (size_t k = 0; k < len; k++) {
        int rv = cons_cmd_decode(buf, k, &back);
        if (k == len - CONS_DIGEST_SIZE) {
            CHECK_OK(rv);
            cons_cmd_release(&back);
        } else {
            CHECK(rv != SM_OK);
        }
    }
    buf[len] = 0;
    CHECK_EQ(cons_cmd_decode(buf, len + 1, &back), SM_EMALFORMED);
    CHECK_EQ(apply(&bound), CONS_APPLY_OK);
}

/* A state with three CBN versions and a model bound to the middle one. */
static void populate_binding(void)
{
    for (uint8_t k = 1; k <= 3; k++) {
        struct cons_cmd c = cbn_commit(k, digest((uint8_t)(k * 10)));
        REQUIRE_EQ(apply(&c), CONS_APPLY_OK);
    }
    REQUIRE_EQ(apply_model(7, 2, digest(20)), CONS_APPLY_OK);
}

/* Snapshots carry the older CBN digests and the model's binding; version
 * 2 snapshots (before the binding) still restore, knowing the newest CBN
 * only. */
static void test_binding_snapshot(void)
{
    populate_binding();
    uint8_t *a, *b;
    size_t na, nb;
    REQUIRE_OK(cons_fsm_snapshot(fsm, NULL, &a, &na));
    CHECK_EQ(a[0], CONS_SNAPSHOT_VERSION);
    CHECK_EQ(a[0], 3);
    struct cons_fsm *copy;
    REQUIRE_OK(cons_fsm_new(&copy));
    CHECK_OK(cons_fsm_restore(copy, a, na));
    REQUIRE_OK(cons_fsm_snapshot(copy, NULL, &b, &nb));
    CHECK(na == nb && memcmp(a, b, na) == 0);
    sm_free(b);
    struct cons_versions v;
    cons_fsm_versions(copy, &v);
    CHECK_EQ(v.model_version, 7);
    CHECK_EQ(v.model_cbn_version, 2);
    CHECK(digest_eq(v.model_cbn_digest, digest(20)));
    for (uint8_t k = 1; k <= 3; k++) {
        struct cons_digest d;
        CHECK_OK(cons_fsm_cbn_digest(copy, k, &d));
        CHECK(digest_eq(d, digest((uint8_t)(k * 10))));
    }

    /* The restored machine checks bindings as the original does. */
    uint8_t buf[256];
    struct cons_cmd wrong = model_commit(8, 1, digest(20));
    size_t len = encode(&wrong, buf);
    enum cons_apply_result res;
    CHECK_OK(cons_fsm_apply(copy, buf, len, &res));
    CHECK_EQ(res, CONS_APPLY_BAD);
    struct cons_cmd right = model_commit(8, 1, digest(10));
    len = encode(&right, buf);
    CHECK_OK(cons_fsm_apply(copy, buf, len, &res));
    CHECK_EQ(res, CONS_APPLY_OK);
    cons_fsm_free(copy);

    /* Another machine fed the same log ends with the same bytes. */
    struct cons_fsm *first = fsm;
    REQUIRE_OK(cons_fsm_new(&fsm));
    populate_binding();
    REQUIRE_OK(cons_fsm_snapshot(fsm, NULL, &b, &nb));
    cons_fsm_free(fsm);
    fsm = first;
    CHECK(na == nb && memcmp(a, b, na) == 0);
    sm_free(b);

    /* The tail: a count, two older versions, the model's digest. */
    size_t tail = V3_TAIL_EMPTY + 2 * V3_TAIL_ITEM;
    REQUIRE(na > tail);
    size_t at = na - tail;
    CHECK_EQ(a[at], 2);
    REQUIRE_OK(cons_fsm_new(&copy));
    for (size_t k = 0; k < na; k++) {
        CHECK(cons_fsm_restore(copy, a, k) != SM_OK);
    }
    uint8_t *bad = sm_malloc(na);
    REQUIRE(bad != NULL);
    /* Older versions out of order, at or above the newest, too many; a
     * model digest that is not its kept CBN's. */
    memcpy(bad, a, na);
    bad[at + 4] = 2; /* first older version 2, like the second */
    CHECK_EQ(cons_fsm_restore(copy, bad, na), SM_EMALFORMED);
    memcpy(bad, a, na);
    bad[at + 4 + V3_TAIL_ITEM] = 3; /* second older version = newest */
    CHECK_EQ(cons_fsm_restore(copy, bad, na), SM_EMALFORMED);
    memcpy(bad, a, na);
    bad[at] = CONS_CBN_KEPT; /* more than are kept */
    CHECK_EQ(cons_fsm_restore(copy, bad, na), SM_EMALFORMED);
    memcpy(bad, a, na);
    bad[na - 1] ^= 1;
    CHECK_EQ(cons_fsm_restore(copy, bad, na), SM_EMALFORMED);
    memcpy(bad, a, na);
    bad[0] = CONS_SNAPSHOT_VERSION + 1;
    CHECK_EQ(cons_fsm_restore(copy, bad, na), SM_EUNSUPPORTED);
    sm_free(bad);
    cons_fsm_versions(copy, &v);
    CHECK_EQ(v.model_version, 0); /* every failure left it empty */

    /* Version 2: the same layout without the tail. Only the newest CBN is
     * known and the model is not bound; a model naming an older CBN by
     * digest cannot be checked. */
    a[0] = 2;
    CHECK_EQ(cons_fsm_restore(copy, a, na), SM_EMALFORMED); /* trailing */
    CHECK_OK(cons_fsm_restore(copy, a, na - tail));
    cons_fsm_versions(copy, &v);
    CHECK_EQ(v.cbn_version, 3);
    CHECK(digest_eq(v.cbn_digest, digest(30)));
    CHECK_EQ(v.model_version, 7);
    CHECK(digest_eq(v.model_cbn_digest, (struct cons_digest){{0}}));
    struct cons_digest d;
    CHECK_EQ(cons_fsm_cbn_digest(copy, 2, &d), SM_ENOTFOUND);
    CHECK_OK(cons_fsm_cbn_digest(copy, 3, &d));
    REQUIRE_OK(cons_fsm_snapshot(copy, NULL, &b, &nb));
    CHECK_EQ(b[0], CONS_SNAPSHOT_VERSION);
    CHECK_EQ(nb, na - tail + V3_TAIL_EMPTY);
    CHECK(memcmp(b + 1, a + 1, na - tail - 1) == 0);
    sm_free(b);
    len = encode(&right, buf);
    CHECK_OK(cons_fsm_apply(copy, buf, len, &res));
    CHECK_EQ(res, CONS_APPLY_STALE);
    struct cons_cmd newest = model_commit(8, 3, digest(30));
    len = encode(&newest, buf);
    CHECK_OK(cons_fsm_apply(copy, buf, len, &res));
    CHECK_EQ(res, CONS_APPLY_OK);
    sm_free(a);
    cons_fsm_free(copy);
}

/* Many records: retention is one linear pass (a quadratic one would show
 * here as minutes, not as a failed check). Applying a record still looks
 * its id up linearly, so the actions are fewer. */
static void test_retain_large(void)
{
    enum { N = 20000, N_ACT = 2000, KEEP = 100 };
    static uint8_t buf[512];
    char id[32];
    for (unsigned i = 0; i < N; i++) {
        snprintf(id, sizeof id, "%u-d", i); /* distinct early: fast lookup */
        struct cons_cmd d = diagnosis(id, 1000 + i, "{\"root\":\"db\"}");
        size_t len = encode(&d, buf);
        enum cons_apply_result res = CONS_APPLY_BAD;
        REQUIRE_OK(cons_fsm_apply(fsm, buf, len, &res));
        REQUIRE_EQ(res, CONS_APPLY_OK);
    }
    for (unsigned i = 0; i < N_ACT; i++) {
        snprintf(id, sizeof id, "%u-a", i);
        struct cons_cmd d = decision(id, "0-d");
        d.u.decision.time_ms = 1000 + i;
        size_t len = encode(&d, buf);
        REQUIRE_OK(cons_fsm_apply(fsm, buf, len, NULL));
        if (i % 2 == 0) {
            struct cons_cmd s = action_state(id, CONS_ACT_FAILED, "", 5);
            len = encode(&s, buf);
            REQUIRE_OK(cons_fsm_apply(fsm, buf, len, NULL));
        }
    }
    struct cons_fsm_counts n = counts(fsm);
    REQUIRE_EQ(n.diagnoses, N);
    REQUIRE_EQ(n.actions, N_ACT);
    CHECK_EQ(n.actions_open, N_ACT / 2);

    CHECK_EQ(apply_retain(KEEP, KEEP), CONS_APPLY_OK);
    n = counts(fsm);
    CHECK_EQ(n.diagnoses, KEEP);
    CHECK_EQ(n.diagnoses_dropped, N - KEEP);
    CHECK_EQ(n.diagnoses_dropped_ms, 1000 + N - KEEP - 1);
    CHECK_EQ(n.actions, N_ACT / 2); /* every failed one went, no open one */
    CHECK_EQ(n.actions_open, N_ACT / 2);
    CHECK_EQ(n.actions_dropped, N_ACT / 2);
    CHECK_EQ(n.actions_dropped_ms, 1000 + N_ACT - 2);

    struct cons_diagnosis out[KEEP + 1];
    REQUIRE_EQ(cons_fsm_diagnoses(fsm, out, KEEP + 1), KEEP);
    CHECK_STR(out[0].id, "19999-d");
    CHECK_STR(out[KEEP - 1].id, "19900-d");
    CHECK_EQ(out[KEEP - 1].seq, N - KEEP + 1);
    struct cons_action act;
    CHECK_OK(cons_fsm_action_get(fsm, "1-a", &act));
    CHECK_EQ(cons_fsm_action_get(fsm, "0-a", &act), SM_ENOTFOUND);
}

static const struct check_test tests[] = {
    {"members add, change and remove", test_members},
    {"cbn and model versions", test_versions},
    {"a model applies only with its CBN's digest", test_model_binding},
    {"model commits of the layout before the binding", test_model_old_layout},
    {"binding state in snapshots, version 2 restores", test_binding_snapshot},
    {"placement by epoch", test_placement},
    {"diagnoses newest first, once per id", test_diagnoses},
    {"actions move forward only", test_actions},
    {"codec round trip and rejects", test_codec},
    {"bad commands are counted no-ops", test_bad_commands},
    {"snapshot and restore round trip", test_snapshot_round_trip},
    {"out of memory changes nothing", test_out_of_memory},
    {"retain codec round trip and rejects", test_retain_codec},
    {"retain drops the oldest diagnoses", test_retain_diagnoses},
    {"retain keeps open actions", test_retain_actions},
    {"retain state in snapshots", test_retain_snapshot},
    {"retain over many records", test_retain_large},
};

CHECK_MAIN(tests, setup, teardown)
