/* Tests for shard placement (balance, replicas, minimal movement, failover,
 * determinism) and for trace routing by rendezvous hashing. */
#include <stdio.h>
#include <string.h>

#include "base/err.h"
#include "base/rng.h"
#include "check.h"
#include "consensus/consensus.h"

#define MAX_SVC   64
#define MAX_PEERS 8

static char names[MAX_SVC][32];
static struct cons_place_service svc[MAX_SVC];
static struct cons_place_seen seen[MAX_SVC][2];
static struct cons_place_peer peers[MAX_PEERS];

/* @n services "svc-00".., with telemetry from peer (i % n_tele) + 1. */
static void make_services(size_t n, size_t n_tele)
{
    for (size_t i = 0; i < n; i++) {
        snprintf(names[i], sizeof names[i], "svc-%02zu", i);
        svc[i].name = names[i];
        seen[i][0] = (struct cons_place_seen){i % n_tele + 1, 100 + i};
        svc[i].seen = seen[i];
        svc[i].n_seen = n_tele > 0 ? 1 : 0;
    }
}

static void make_peers(size_t n)
{
    for (size_t i = 0; i < n; i++) {
        peers[i] =
            (struct cons_place_peer){i + 1, CONS_ROLE_VOTER, CONS_HEALTH_UP};
    }
}

static void place(size_t n_peers,
                  size_t n_svc,
                  const struct cons_place_entry *prev,
                  size_t n_prev,
                  struct cons_place_entry *out)
{
    char err[SM_ERRMSG_SIZE] = "";
    int rv =
        cons_place_compute(peers, n_peers, svc, n_svc, prev, n_prev, out, err);
    if (rv != SM_OK) {
        check__fail(__FILE__, __LINE__, 1, "place: %s", err);
    }
}

/* Owner and shard counts of peer @id in @p. */
static void load(const struct cons_place_entry *p,
                 size_t n,
                 uint64_t id,
                 size_t *owners,
                 size_t *total)
{
    *owners = *total = 0;
    for (size_t i = 0; i < n; i++) {
        *owners += p[i].owner == id;
        *total += (p[i].owner == id) + (p[i].replica == id);
    }
}

/* Checks the invariants every placement has over the first @n_peers peers:
 * exact balance of owners and of shards over the healthy ones. */
static void check_valid(const struct cons_place_entry *p,
                        size_t n,
                        size_t n_peers)
{
    size_t healthy = 0;
    for (size_t k = 0; k < n_peers; k++) {
        healthy += peers[k].health == CONS_HEALTH_UP;
    }
    size_t cap_own = (n + healthy - 1) / healthy;
    size_t cap_all = (2 * n + healthy - 1) / healthy;
    for (size_t i = 0; i < n; i++) {
        CHECK(p[i].owner != 0);
        CHECK(p[i].replica != 0);
        CHECK(p[i].owner != p[i].replica);
        CHECK(p[i].service == svc[i].name);
    }
    for (size_t k = 0; k < n_peers; k++) {
        size_t owners, total;
        load(p, n, peers[k].id, &owners, &total);
        if (peers[k].health != CONS_HEALTH_UP) {
            CHECK_EQ(total, 0);
            continue;
        }
        CHECK(owners <= cap_own);
        CHECK(owners >= n / healthy); /* nobody starved either */
        CHECK(total >= 2 * n / healthy);
        CHECK(total <= cap_all);
    }
}

static size_t owner_moves(const struct cons_place_entry *a,
                          const struct cons_place_entry *b,
                          size_t n)
{
    size_t moves = 0;
    for (size_t i = 0; i < n; i++) {
        moves += a[i].owner != b[i].owner;
    }
    return moves;
}

static size_t shard_moves(const struct cons_place_entry *a,
                          const struct cons_place_entry *b,
                          size_t n)
{
    size_t moves = 0;
    for (size_t i = 0; i < n; i++) {
        /* a shard moved when its new holder did not hold it before */
        moves += b[i].owner != a[i].owner && b[i].owner != a[i].replica;
        moves += b[i].replica != a[i].owner && b[i].replica != a[i].replica;
    }
    return moves;
}

static void test_balance_and_telemetry(void)
{
    make_peers(3);
    make_services(12, 3);
    struct cons_place_entry out[12];
    place(3, 12, NULL, 0, out);
    check_valid(out, 12, 3);
    for (size_t k = 1; k <= 3; k++) {
        size_t owners, total;
        load(out, 12, k, &owners, &total);
        CHECK_EQ(owners, 4);
        CHECK_EQ(total, 8);
    }
    /* Telemetry is spread evenly, so every owner is where it arrives. */
    for (size_t i = 0; i < 12; i++) {
        CHECK_EQ(out[i].owner, seen[i][0].peer);
    }

    /* All telemetry at peer 1: it owns its fair share, no more. */
    make_services(12, 1);
    place(3, 12, NULL, 0, out);
    check_valid(out, 12, 3);
    size_t owners, total;
    load(out, 12, 1, &owners, &total);
    CHECK_EQ(owners, 4);
}

static void test_single_peer_and_none(void)
{
    make_peers(1);
    make_services(3, 1);
    struct cons_place_entry out[3];
    place(1, 3, NULL, 0, out);
    for (size_t i = 0; i < 3; i++) {
        CHECK_EQ(out[i].owner, 1);
        CHECK_EQ(out[i].replica, 0); /* nowhere else to put it */
    }
    peers[0].health = CONS_HEALTH_DOWN;
    CHECK_EQ(cons_place_compute(peers, 1, svc, 3, NULL, 0, out, NULL),
             SM_ENOTFOUND);
    CHECK_EQ(out[0].owner, 0);
    CHECK_OK(cons_place_compute(peers, 1, svc, 0, NULL, 0, out, NULL));

    make_peers(2);
    peers[1].id = 1;
    char err[SM_ERRMSG_SIZE];
    CHECK_EQ(cons_place_compute(peers, 2, svc, 3, NULL, 0, out, err),
             SM_EINVAL);
    make_peers(2);
    svc[1].name = svc[0].name;
    CHECK_EQ(cons_place_compute(peers, 2, svc, 3, NULL, 0, out, err),
             SM_EINVAL);
}

static void test_minimal_movement_on_join(void)
{
    make_peers(3);
    make_services(12, 3);
    struct cons_place_entry before[12], after[12], again[12];
    place(3, 12, NULL, 0, before);
    make_peers(4); /* peer 4 joins */
    place(4, 12, before, 12, after);
    check_valid(after, 12, 4);
    /* Peer 4 needs 3 owners and 6 shards for balance; nothing more moves. */
    CHECK_EQ(owner_moves(before, after, 12), 3);
    CHECK_EQ(shard_moves(before, after, 12), 6);
    size_t owners, total;
    load(after, 12, 4, &owners, &total);
    CHECK_EQ(owners, 3);
    CHECK_EQ(total, 6);

    /* A stable membership moves nothing. */
    place(4, 12, after, 12, again);
    CHECK_EQ(shard_moves(after, again, 12), 0);
    CHECK_EQ(owner_moves(after, again, 12), 0);
}

static void test_owner_failure(void)
{
    make_peers(4);
    make_services(12, 4);
    struct cons_place_entry before[12], after[12];
    place(4, 12, NULL, 0, before);
    peers[1].health = CONS_HEALTH_DOWN; /* peer 2 dies */
    place(4, 12, before, 12, after);
    /* Failover first: replicas take over even beyond their quota... */
    for (size_t i = 0; i < 12; i++) {
        CHECK(after[i].owner != 2 && after[i].replica != 2);
        CHECK(after[i].owner != after[i].replica && after[i].replica != 0);
    }
    for (size_t i = 0; i < 12; i++) {
        if (before[i].owner == 2) {
            /* its replica took over, and a new replica was chosen */
            CHECK_EQ(after[i].owner, before[i].replica);
            CHECK(after[i].replica != 2 && after[i].replica != 0);
        } else {
            CHECK_EQ(after[i].owner, before[i].owner);
        }
    }
    /* ...and the next computation rebalances. */
    struct cons_place_entry later[12];
    place(4, 12, after, 12, later);
    check_valid(later, 12, 4);
}

static void test_determinism(void)
{
    struct sm_rng rng;
    sm_rng_seed(&rng, check_seed());
    for (int round = 0; round < 50; round++) {
        size_t n_peers = 2 + sm_rng_below(&rng, MAX_PEERS - 1);
        size_t n = 1 + sm_rng_below(&rng, 40);
        make_peers(n_peers);
        make_services(n, 1 + sm_rng_below(&rng, n_peers));
        for (size_t i = 0; i < n; i++) {
            seen[i][1] = (struct cons_place_seen){
                1 + sm_rng_below(&rng, n_peers), sm_rng_below(&rng, 500)};
            svc[i].n_seen = 2;
        }
        struct cons_place_entry a[MAX_SVC], b[MAX_SVC];
        place(n_peers, n, NULL, 0, a);
        check_valid(a, n, n_peers);

        /* Reversed input order gives the same answer per service. */
        struct cons_place_service rev_svc[MAX_SVC];
        struct cons_place_peer rev_peers[MAX_PEERS];
        for (size_t i = 0; i < n; i++) {
            rev_svc[i] = svc[n - 1 - i];
        }
        for (size_t k = 0; k < n_peers; k++) {
            rev_peers[k] = peers[n_peers - 1 - k];
        }
        REQUIRE_OK(cons_place_compute(rev_peers, n_peers, rev_svc, n, NULL, 0,
                                      b, NULL));
        for (size_t i = 0; i < n; i++) {
            CHECK_EQ(b[n - 1 - i].owner, a[i].owner);
            CHECK_EQ(b[n - 1 - i].replica, a[i].replica);
        }
    }
}

static const struct check_test tests[] = {
    {"balanced, owners where telemetry arrives", test_balance_and_telemetry},
    {"one peer, no peer, bad input", test_single_peer_and_none},
    {"a join moves only the new peer's share", test_minimal_movement_on_join},
    {"a dead owner's replica takes over", test_owner_failure},
    {"deterministic whatever the input order", test_determinism},
};

CHECK_MAIN(tests, NULL, NULL)
