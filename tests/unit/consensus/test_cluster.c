/* Cluster tests of the raft node on raft's in-memory fixture: elections,
 * replication order, leader loss, partitions, snapshots, standby promotion
 * and a crash and rejoin. Deterministic: simulated time, bounded steps.
 *
 * The fixture creates one struct raft per server on its in-memory raft_io;
 * those are never started. Each cons_node runs its own struct raft on the
 * same raft_io (raft_init points io->data at the node's raft), so the
 * fixture's stepping drives our nodes. Two consequences for the harness:
 * the fixture's leader bookkeeping (f->leader_id) knows nothing of our
 * nodes, so the predicates below ask the nodes; and a node may only be
 * closed once its raft_io has no request in flight (the fixture completes
 * requests even for dead servers), hence kill, step, then close. */
#include <raft.h>
#include <raft/fixture.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "base/alloc.h"
#include "base/err.h"
#include "check.h"
#include "consensus/consensus.h"

#define MAX_N RAFT_FIXTURE_MAX_SERVERS

/* Simulated milliseconds allowed for anything to happen. */
#define LONG_WAIT 30000

static struct
{
    struct raft_fixture f;
    struct cons_fsm *idle_fsm; /* the fixture's own, never started rafts */
    struct cons_node *nodes[MAX_N];
    bool dead[MAX_N];
    raft_time dead_since[MAX_N];
    unsigned n;
    struct cons_node_config cfg;
} C;

/* Completion of one proposal. */
struct outcome
{
    bool done;
    int status;
    enum cons_apply_result result;
};

static void proposed(void *arg, int status, enum cons_apply_result result)
{
    struct outcome *o = arg;
    o->done = true;
    o->status = status;
    o->result = result;
}

static void changed(void *arg, int status)
{
    struct outcome *o = arg;
    o->done = true;
    o->status = status;
}

/* Ticks every live node after each fixture step, as the peer's timer
 * would, with a health view built from the fixture's alive flags. */
static void hook(struct raft_fixture *f, struct raft_fixture_event *event)
{
    (void)event;
    struct cons_seen seen[MAX_N];
    for (unsigned i = 0; i < C.n; i++) {
        seen[i].id = i + 1;
        seen[i].last_seen_ms = C.dead[i] ? C.dead_since[i] : f->time;
    }
    for (unsigned i = 0; i < C.n; i++) {
        if (C.nodes[i] != NULL && !C.dead[i]) {
            cons_node_tick(C.nodes[i], f->time, seen, C.n);
        }
    }
}

static struct cons_node *node_on(unsigned i)
{
    struct cons_node_config cfg = C.cfg;
    cfg.id = i + 1;
    cfg.address = C.f.servers[i].address;
    struct cons_node *node = NULL;
    char err[SM_ERRMSG_SIZE] = "";
    int rv = cons_node_new(&cfg, &C.f.servers[i].io, &node, err);
    if (rv != SM_OK) {
        check__fail(__FILE__, __LINE__, 1, "cons_node_new: %s", err);
    }
    return node;
}

/* Adds a server to the fixture (not yet a node). */
static unsigned grow(void)
{
    REQUIRE(C.n < MAX_N);
    REQUIRE_EQ(raft_fixture_grow(&C.f, cons_fsm_raft(C.idle_fsm)), 0);
    return C.n++;
}

/* @n servers, the first @voters voters and the rest standbys. */
static void start_cluster(unsigned n, unsigned voters)
{
    memset(&C.f, 0, sizeof C.f); /* 0.15 leaves fields unset */
    REQUIRE_EQ(raft_fixture_initialize(&C.f), 0);
    REQUIRE_OK(cons_fsm_new(&C.idle_fsm));
    struct cons_peer peers[MAX_N];
    for (unsigned i = 0; i < n; i++) {
        grow();
        peers[i] = (struct cons_peer){
            i + 1, C.f.servers[i].address,
            i < voters ? CONS_ROLE_VOTER : CONS_ROLE_STANDBY};
    }
    for (unsigned i = 0; i < n; i++) {
        C.nodes[i] = node_on(i);
        char err[SM_ERRMSG_SIZE] = "";
        REQUIRE_OK(cons_node_bootstrap(C.nodes[i], peers, n, err));
        REQUIRE_OK(cons_node_start(C.nodes[i], err));
    }
    raft_fixture_hook(&C.f, hook);
}

static void setup(void)
{
    memset(&C, 0, sizeof C);
    cons_node_config_init(&C.cfg);
    sm_log_set_sink(check_log_discard, NULL);
}

static void kill(unsigned i)
{
    raft_fixture_kill(&C.f, i);
    C.dead[i] = true;
    C.dead_since[i] = C.f.time;
}

static void revive(unsigned i)
{
    raft_fixture_revive(&C.f, i);
    C.dead[i] = false;
}

/* Closes node @i once the fixture completed its in-flight requests. */
static void close_node(unsigned i)
{
    cons_node_close(C.nodes[i], NULL, NULL);
    C.nodes[i] = NULL;
}

static void teardown(void)
{
    if (C.n > 0) {
        for (unsigned i = 0; i < C.n; i++) {
            if (!C.dead[i]) {
                kill(i);
            }
        }
        raft_fixture_step_until_elapsed(&C.f, 1000); /* drain the I/O */
        for (unsigned i = 0; i < C.n; i++) {
            if (C.nodes[i] != NULL) {
                close_node(i);
            }
            /* Give each raft_io back to the fixture's own raft. */
            C.f.servers[i].io.data = &C.f.servers[i].raft;
        }
        raft_fixture_close(&C.f);
    }
    cons_fsm_free(C.idle_fsm);
    sm_log_set_sink(NULL, NULL);
    memset(&C, 0, sizeof C);
}

/* ---- Predicates ------------------------------------------------------------
 */

/* Index of the live, ready leader, or -1. */
static int leader(void)
{
    for (unsigned i = 0; i < C.n; i++) {
        if (C.nodes[i] != NULL && !C.dead[i] && cons_node_ready(C.nodes[i])) {
            return (int)i;
        }
    }
    return -1;
}

static bool has_leader(struct raft_fixture *f, void *arg)
{
    (void)f;
    (void)arg;
    return leader() >= 0;
}

static bool has_other_leader(struct raft_fixture *f, void *arg)
{
    (void)f;
    int l = leader();
    return l >= 0 && l != *(int *)arg;
}

static int wait_leader(void)
{
    raft_fixture_step_until(&C.f, has_leader, NULL, LONG_WAIT);
    int l = leader();
    if (l < 0) {
        check__fail(__FILE__, __LINE__, 1, "no leader");
    }
    return l;
}

static size_t n_diagnoses(unsigned i)
{
    struct cons_diagnosis d[64];
    return cons_fsm_diagnoses(cons_node_fsm(C.nodes[i]), d, 64);
}

/* Every live node (or, with @only >= 0, node @only) has @want diagnoses. */
struct want
{
    size_t count;
    int only;
};

static bool all_have(struct raft_fixture *f, void *arg)
{
    (void)f;
    const struct want *w = arg;
    for (unsigned i = 0; i < C.n; i++) {
        if (C.nodes[i] == NULL || C.dead[i] ||
            (w->only >= 0 && (int)i != w->only)) {
            continue;
        }
        if (n_diagnoses(i) < w->count) {
            return false;
        }
    }
    return true;
}

static void wait_diagnoses(size_t count, int only)
{
    struct want w = {count, only};
    if (!raft_fixture_step_until(&C.f, all_have, &w, LONG_WAIT)) {
        check__fail(__FILE__, __LINE__, 1, "diagnoses not replicated");
    }
}

/* The replicated states of all live nodes are byte for byte equal. */
static void check_same_state(void)
{
    uint8_t *ref = NULL;
    size_t ref_len = 0;
    for (unsigned i = 0; i < C.n; i++) {
        if (C.nodes[i] == NULL || C.dead[i]) {
            continue;
        }
        uint8_t *buf;
        size_t len;
        REQUIRE_OK(
            cons_fsm_snapshot(cons_node_fsm(C.nodes[i]), NULL, &buf, &len));
        if (ref == NULL) {
            ref = buf;
            ref_len = len;
            continue;
        }
        CHECK(len == ref_len && memcmp(buf, ref, len) == 0);
        sm_free(buf);
    }
    sm_free(ref);
}

/* ---- Proposals
 * --------------------------------------------------------------- */

static char ids[256][16];

static struct cons_cmd diagnosis(unsigned k)
{
    snprintf(ids[k % 256], sizeof ids[0], "d-%u", k);
    struct cons_cmd c = {.type = CONS_CMD_DIAGNOSIS};
    c.u.diagnosis.id = ids[k % 256];
    c.u.diagnosis.time_ms = k;
    c.u.diagnosis.json = "{\"root\":\"db\"}";
    return c;
}

/* Proposes diagnoses @from..@to-1 on node @i. */
static void propose_range(unsigned i, unsigned from, unsigned to)
{
    for (unsigned k = from; k < to; k++) {
        struct cons_cmd c = diagnosis(k);
        REQUIRE_OK(cons_node_propose(C.nodes[i], &c, NULL, NULL));
    }
}

/* ---- Tests
 * ---------------------------------------------------------------------- */

static void check_election(unsigned n)
{
    C.cfg.voters = n; /* else the policy demotes voters beyond 3 */
    start_cluster(n, n);
    int l = wait_leader();
    uint64_t id = cons_node_id(C.nodes[l]);
    uint64_t term = cons_node_term(C.nodes[l]);
    /* Followers learn the leader with the next heartbeat. */
    raft_fixture_step_until_elapsed(&C.f, 300);
    for (unsigned i = 0; i < n; i++) {
        CHECK_EQ(cons_node_leader(C.nodes[i], NULL), id);
        CHECK_EQ(cons_node_term(C.nodes[i]), term);
        if ((int)i != l) {
            CHECK_EQ(cons_node_state(C.nodes[i]), CONS_STATE_FOLLOWER);
            CHECK(!cons_node_ready(C.nodes[i]));
            CHECK_EQ(cons_node_propose(C.nodes[i], &(struct cons_cmd){0}, NULL,
                                       NULL),
                     SM_ENOTLEADER);
        }
    }
    CHECK_EQ(cons_node_state(C.nodes[l]), CONS_STATE_LEADER);
    /* The ready leader records the members in the log for everyone. */
    raft_fixture_step_until_elapsed(&C.f, 2000);
    for (unsigned i = 0; i < n; i++) {
        struct cons_member m[MAX_N];
        REQUIRE_EQ(cons_fsm_members(cons_node_fsm(C.nodes[i]), m, MAX_N), n);
        for (unsigned k = 0; k < n; k++) {
            CHECK_EQ(m[k].id, k + 1);
            CHECK_EQ(m[k].role, CONS_ROLE_VOTER);
            CHECK_EQ(m[k].health, CONS_HEALTH_UP);
        }
    }
}

static void test_elect_3(void)
{
    check_election(3);
}

static void test_elect_5(void)
{
    check_election(5);
}

static void test_same_order(void)
{
    start_cluster(3, 3);
    int l = wait_leader();
    struct outcome o[20];
    memset(o, 0, sizeof o);
    for (unsigned k = 0; k < 20; k++) {
        struct cons_cmd c = diagnosis(k);
        REQUIRE_OK(cons_node_propose(C.nodes[l], &c, proposed, &o[k]));
    }
    wait_diagnoses(20, -1);
    for (unsigned k = 0; k < 20; k++) {
        CHECK(o[k].done);
        CHECK_EQ(o[k].status, SM_OK);
        CHECK_EQ(o[k].result, CONS_APPLY_OK);
    }
    for (unsigned i = 0; i < 3; i++) {
        struct cons_diagnosis d[20];
        REQUIRE_EQ(cons_fsm_diagnoses(cons_node_fsm(C.nodes[i]), d, 20), 20);
        CHECK_STR(d[0].id, "d-19"); /* newest first, log order */
        CHECK_STR(d[19].id, "d-0");
    }
    check_same_state();
}

/* Waits until every live follower's log holds the leader's last entry. */
static bool followers_caught_up(struct raft_fixture *f, void *arg)
{
    (void)f;
    uint64_t want = *(uint64_t *)arg;
    for (unsigned i = 0; i < C.n; i++) {
        struct cons_node_stats s;
        if (C.nodes[i] == NULL || C.dead[i]) {
            continue;
        }
        cons_node_stats(C.nodes[i], &s);
        if (s.last_index < want) {
            return false;
        }
    }
    return true;
}

static struct cons_cmd decision(void)
{
    struct cons_cmd c = {.type = CONS_CMD_ACTION_DECIDE};
    c.u.decision.id = "a-1";
    c.u.decision.diagnosis_id = "d-0";
    c.u.decision.service = "db";
    c.u.decision.kind = "cpu_quota";
    c.u.decision.from = 2000;
    c.u.decision.to = 3000;
    c.u.decision.time_ms = 1;
    return c;
}

static void test_leader_killed(void)
{
    start_cluster(3, 3);
    int l = wait_leader();
    propose_range((unsigned)l, 0, 5);
    wait_diagnoses(5, -1);

    /* The decision reaches every follower's log, then the leader dies
     * before it can report the outcome to its proposer. */
    static struct outcome first, retry;
    memset(&first, 0, sizeof first);
    memset(&retry, 0, sizeof retry);
    struct cons_cmd d = decision();
    REQUIRE_OK(cons_node_propose(C.nodes[l], &d, proposed, &first));
    struct cons_node_stats s;
    cons_node_stats(C.nodes[l], &s);
    REQUIRE(raft_fixture_step_until(&C.f, followers_caught_up, &s.last_index,
                                    1000));
    REQUIRE(!first.done);
    kill((unsigned)l);

    int l2 = -1;
    REQUIRE(raft_fixture_step_until(&C.f, has_other_leader, &l, LONG_WAIT));
    l2 = leader();
    REQUIRE(l2 >= 0 && l2 != l);
    /* The proposer does not know the outcome: it proposes again. */
    REQUIRE_OK(cons_node_propose(C.nodes[l2], &d, proposed, &retry));
    raft_fixture_step_until_elapsed(&C.f, 1000);
    CHECK(retry.done);
    CHECK_EQ(retry.status, SM_OK);
    CHECK_EQ(retry.result, CONS_APPLY_DUPLICATE); /* it had survived */
    for (unsigned i = 0; i < 3; i++) {
        if (C.dead[i]) {
            continue;
        }
        const struct cons_fsm *fsm = cons_node_fsm(C.nodes[i]);
        struct cons_action a[4];
        CHECK_EQ(cons_fsm_actions(fsm, CONS_ACT__COUNT, a, 4), 1);
        CHECK_EQ(n_diagnoses(i), 5);
        struct cons_fsm_stats st;
        cons_fsm_stats(fsm, &st);
        CHECK(st.duplicate >= 1);
    }
    check_same_state();
    /* New commands still commit without the old leader. */
    propose_range((unsigned)l2, 5, 10);
    wait_diagnoses(10, -1);
    check_same_state();
}

/* Cuts servers @a (a bitmask) off from the others, or joins them back. */
static void partition(unsigned mask, bool cut)
{
    for (unsigned i = 0; i < C.n; i++) {
        for (unsigned j = 0; j < C.n; j++) {
            bool across = ((mask >> i) & 1) != ((mask >> j) & 1);
            if (!across) {
                continue;
            }
            if (cut) {
                raft_fixture_disconnect(&C.f, i, j);
            } else {
                raft_fixture_reconnect(&C.f, i, j);
            }
        }
    }
}

static void test_partition_minority(void)
{
    C.cfg.voters = 5;
    start_cluster(5, 5);
    int l = wait_leader();
    uint64_t term = cons_node_term(C.nodes[l]);
    /* Two followers are cut off; the majority goes on. */
    unsigned minority = 0;
    for (unsigned i = 0, k = 0; i < 5 && k < 2; i++) {
        if ((int)i != l) {
            minority |= 1u << i;
            k++;
        }
    }
    partition(minority, true);
    propose_range((unsigned)l, 0, 5);
    for (unsigned i = 0; i < 5; i++) {
        if (!((minority >> i) & 1)) {
            wait_diagnoses(5, (int)i);
        }
    }
    raft_fixture_step_until_elapsed(&C.f, 5000);
    for (unsigned i = 0; i < 5; i++) {
        if ((minority >> i) & 1) {
            CHECK_EQ(n_diagnoses(i), 0);
            CHECK(cons_node_state(C.nodes[i]) != CONS_STATE_LEADER);
        }
    }
    CHECK_EQ(leader(), l);
    partition(minority, false);
    wait_diagnoses(5, -1);
    /* Pre-vote kept the minority from disrupting the leader. */
    CHECK_EQ(leader(), l);
    CHECK_EQ(cons_node_term(C.nodes[l]), term);
    check_same_state();
}

static void test_partition_leader_minority(void)
{
    C.cfg.voters = 5;
    start_cluster(5, 5);
    int l = wait_leader();
    unsigned other = (unsigned)(l + 1) % 5;
    unsigned minority = (1u << l) | (1u << other);
    propose_range((unsigned)l, 0, 3);
    wait_diagnoses(3, -1);
    partition(minority, true);
    /* The old leader cannot commit this; its proposer hears "unknown". */
    static struct outcome lost;
    memset(&lost, 0, sizeof lost);
    struct cons_cmd c = diagnosis(100);
    REQUIRE_OK(cons_node_propose(C.nodes[l], &c, proposed, &lost));
    REQUIRE(raft_fixture_step_until(&C.f, has_other_leader, &l, LONG_WAIT));
    int l2 = leader();
    REQUIRE(l2 >= 0 && !((minority >> l2) & 1));
    propose_range((unsigned)l2, 3, 6);
    raft_fixture_step_until_elapsed(&C.f, 3000);
    CHECK(lost.done);
    CHECK_EQ(lost.status, SM_EAGAIN);
    CHECK(cons_node_state(C.nodes[l]) != CONS_STATE_LEADER);
    partition(minority, false);
    wait_diagnoses(6, -1);
    raft_fixture_step_until_elapsed(&C.f, 1000);
    struct cons_diagnosis d;
    for (unsigned i = 0; i < 5; i++) {
        CHECK_EQ(n_diagnoses(i), 6);
        CHECK_EQ(cons_fsm_diagnosis_get(cons_node_fsm(C.nodes[i]), "d-100", &d),
                 SM_ENOTFOUND);
    }
    check_same_state();
}

static bool restored(struct raft_fixture *f, void *arg)
{
    (void)f;
    unsigned i = *(unsigned *)arg;
    struct cons_node_stats s;
    cons_node_stats(C.nodes[i], &s);
    return s.restores > 0 && n_diagnoses(i) >= 40;
}

static void test_snapshot_install(void)
{
    C.cfg.snapshot_threshold = 8;
    C.cfg.snapshot_trailing = 2;
    start_cluster(3, 3);
    int l = wait_leader();
    unsigned lag = (unsigned)(l + 1) % 3;
    kill(lag); /* falls behind the snapshots */
    propose_range((unsigned)l, 0, 40);
    wait_diagnoses(40, -1);
    revive(lag);
    REQUIRE(raft_fixture_step_until(&C.f, restored, &lag, LONG_WAIT));
    raft_fixture_step_until_elapsed(&C.f, 1000);
    check_same_state();

    /* A new server joins from nothing: added as a spare, promoted to
     * standby by the leader's policy, and restored from a snapshot. */
    l = wait_leader();
    unsigned fresh = grow();
    C.nodes[fresh] = node_on(fresh);
    REQUIRE_OK(cons_node_start(C.nodes[fresh], NULL));
    static struct outcome added;
    memset(&added, 0, sizeof added);
    REQUIRE_OK(cons_node_add(C.nodes[l], fresh + 1, C.f.servers[fresh].address,
                             changed, &added));
    CHECK_EQ(cons_node_add(C.nodes[l], fresh + 1, "elsewhere", NULL, NULL),
             SM_EAGAIN); /* one change at a time */
    REQUIRE(raft_fixture_step_until(&C.f, restored, &fresh, LONG_WAIT));
    raft_fixture_step_until_elapsed(&C.f, 3000);
    struct cons_peer peers[MAX_N];
    REQUIRE_EQ(cons_node_members(C.nodes[l], peers, MAX_N), 4);
    CHECK_EQ(peers[3].id, fresh + 1);
    CHECK_EQ(peers[3].role, CONS_ROLE_STANDBY); /* 3 voters are enough */
    CHECK(added.done);
    CHECK_OK(added.status);
    check_same_state();
}

/* The leader's configuration has @want healthy voters and @lost is not one
 * of them. */
struct roles
{
    unsigned lost;
    unsigned want;
};

static bool replaced(struct raft_fixture *f, void *arg)
{
    (void)f;
    const struct roles *r = arg;
    int l = leader();
    if (l < 0) {
        return false;
    }
    struct cons_peer peers[MAX_N];
    size_t n = cons_node_members(C.nodes[l], peers, MAX_N);
    unsigned voters = 0;
    for (size_t i = 0; i < n; i++) {
        if (peers[i].role != CONS_ROLE_VOTER) {
            continue;
        }
        if (peers[i].id == r->lost + 1) {
            return false;
        }
        voters++;
    }
    return voters == r->want;
}

static void test_standby_promotion(void)
{
    C.cfg.lost_after_ms = 3000;
    start_cluster(5, 3); /* servers 4 and 5 are standbys */
    int l = wait_leader();
    propose_range((unsigned)l, 0, 3);
    wait_diagnoses(3, -1);
    unsigned victim = (unsigned)(l + 1) % 3; /* a voter, not the leader */
    kill(victim);
    struct roles r = {victim, 3};
    REQUIRE(raft_fixture_step_until(&C.f, replaced, &r, LONG_WAIT));
    l = leader();
    struct cons_node_stats s;
    cons_node_stats(C.nodes[l], &s);
    CHECK(s.promotions >= 1);
    CHECK(s.demotions >= 1);
    /* The member records follow on every live peer. */
    raft_fixture_step_until_elapsed(&C.f, 2000);
    for (unsigned i = 0; i < 5; i++) {
        if (C.dead[i]) {
            continue;
        }
        struct cons_member m[MAX_N];
        REQUIRE_EQ(cons_fsm_members(cons_node_fsm(C.nodes[i]), m, MAX_N), 5);
        CHECK_EQ(m[victim].role, CONS_ROLE_STANDBY);
        CHECK_EQ(m[victim].health, CONS_HEALTH_DOWN);
    }
    /* With the voter replaced, the cluster survives losing its leader too:
     * two of the three current voters remain. */
    kill((unsigned)l);
    REQUIRE(raft_fixture_step_until(&C.f, has_other_leader, &l, LONG_WAIT));
    int l2 = leader();
    propose_range((unsigned)l2, 3, 6);
    wait_diagnoses(6, -1);
    check_same_state();
}

/* The leader's configuration: @voters voters and @members servers. */
struct shape
{
    unsigned voters;
    unsigned members;
};

static bool has_shape(struct raft_fixture *f, void *arg)
{
    (void)f;
    const struct shape *want = arg;
    int l = leader();
    if (l < 0) {
        return false;
    }
    struct cons_peer peers[MAX_N];
    size_t n = cons_node_members(C.nodes[l], peers, MAX_N);
    unsigned voters = 0;
    for (size_t i = 0; i < n && i < MAX_N; i++) {
        voters += peers[i].role == CONS_ROLE_VOTER;
    }
    return n == want->members && voters == want->voters;
}

/* Joins a new server through the leader and waits until it is a member. */
static unsigned join(void)
{
    int l = wait_leader();
    unsigned fresh = grow();
    C.nodes[fresh] = node_on(fresh);
    REQUIRE_OK(cons_node_start(C.nodes[fresh], NULL));
    static struct outcome added;
    memset(&added, 0, sizeof added);
    REQUIRE_OK(cons_node_add(C.nodes[l], fresh + 1, C.f.servers[fresh].address,
                             changed, &added));
    raft_fixture_step_until_elapsed(&C.f, 1000);
    REQUIRE(added.done);
    REQUIRE_OK(added.status);
    return fresh;
}

static void test_join_and_remove(void)
{
    C.cfg.voters = 5;
    start_cluster(3, 3);
    unsigned a = join();
    /* Four members: three voters stay (an odd quorum), the fourth becomes a
     * standby. */
    struct shape four = {3, 4};
    REQUIRE(raft_fixture_step_until(&C.f, has_shape, &four, LONG_WAIT));
    unsigned b = join();
    /* Five members: both joiners are promoted to voters. */
    struct shape five = {5, 5};
    REQUIRE(raft_fixture_step_until(&C.f, has_shape, &five, LONG_WAIT));
    int l = leader();
    propose_range((unsigned)l, 0, 4);
    wait_diagnoses(4, -1);

    /* Removing a member shrinks the configuration and the records. */
    static struct outcome removed;
    memset(&removed, 0, sizeof removed);
    unsigned gone = (unsigned)l == a ? b : a;
    CHECK_EQ(cons_node_remove(C.nodes[l], 99, NULL, NULL), SM_ENOTFOUND);
    REQUIRE_OK(cons_node_remove(C.nodes[l], gone + 1, changed, &removed));
    struct shape after = {3, 4};
    REQUIRE(raft_fixture_step_until(&C.f, has_shape, &after, LONG_WAIT));
    CHECK(removed.done);
    CHECK_OK(removed.status);
    raft_fixture_step_until_elapsed(&C.f, 2000);
    struct cons_member m[MAX_N];
    CHECK_EQ(cons_fsm_members(cons_node_fsm(C.nodes[l]), m, MAX_N), 4);
    for (unsigned i = 0; i < 4; i++) {
        CHECK(m[i].id != gone + 1);
    }
    int other = (l + 1) % 3;
    CHECK_EQ(cons_node_remove(C.nodes[other], 1, NULL, NULL), SM_ENOTLEADER);
}

static void test_crash_rejoin(void)
{
    start_cluster(3, 3);
    int l = wait_leader();
    propose_range((unsigned)l, 0, 10);
    wait_diagnoses(10, -1);
    unsigned victim = (unsigned)(l + 2) % 3;
    kill(victim);
    raft_fixture_step_until_elapsed(&C.f, 500); /* its I/O completes */
    close_node(victim);                         /* the process is gone */
    propose_range((unsigned)l, 10, 20);
    wait_diagnoses(20, -1);
    /* A new process on the same store: it loads its log and catches up. */
    C.nodes[victim] = node_on(victim);
    REQUIRE_EQ(cons_node_bootstrap(C.nodes[victim], NULL, 0, NULL), SM_EEXIST);
    REQUIRE_OK(cons_node_start(C.nodes[victim], NULL));
    revive(victim);
    wait_diagnoses(20, (int)victim);
    raft_fixture_step_until_elapsed(&C.f, 500);
    check_same_state();
    CHECK_EQ(leader(), l);
}

static void test_config_errors(void)
{
    struct cons_node_config cfg;
    cons_node_config_init(&cfg);
    struct cons_node *node = NULL;
    char err[SM_ERRMSG_SIZE] = "";
    struct raft_io io;
    memset(&io, 0, sizeof io);
    CHECK_EQ(cons_node_new(&cfg, &io, &node, err), SM_EINVAL); /* no id */
    cfg.id = 1;
    cfg.address = "1";
    cfg.voters = 4;
    CHECK_EQ(cons_node_new(&cfg, &io, &node, err), SM_EINVAL);
    cfg.voters = 5;
    cfg.heartbeat_timeout_ms = cfg.election_timeout_ms;
    CHECK_EQ(cons_node_new(&cfg, &io, &node, err), SM_EINVAL);
    CHECK(node == NULL);
    CHECK(strlen(err) > 0);
}

static const struct check_test tests[] = {
    {"3 servers elect a leader", test_elect_3},
    {"5 servers elect a leader", test_elect_5},
    {"commands apply in the same order everywhere", test_same_order},
    {"leader killed: retried decision recorded once", test_leader_killed},
    {"minority partition, then heal", test_partition_minority},
    {"leader in the minority loses its proposal",
     test_partition_leader_minority},
    {"snapshot installed on lagging and new servers", test_snapshot_install},
    {"a lost voter is replaced by a standby", test_standby_promotion},
    {"joiners are promoted by policy; remove", test_join_and_remove},
    {"a crashed server rejoins and catches up", test_crash_rejoin},
    {"bad configurations are refused", test_config_errors},
};

CHECK_MAIN(tests, setup, teardown)
