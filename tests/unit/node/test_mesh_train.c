/* Training rounds in one process: several node_train state machines, a
 * message queue between them, one shared state machine standing in for the
 * agreed raft log, a fake clock and a fake model manager whose shards are
 * deterministic bytes. Covers a round across owners, a lagging peer caught
 * up, a dead owner's shard moving to its replica, a silent owner timing
 * out, the leader killed mid-round, a restarted peer fetching the model,
 * a model bound to a CBN other than the one committed under its version,
 * a peer whose CBN differs from the log's, and malformed messages. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/err.h"
#include "base/log.h"
#include "check.h"
#include "node/mesh_train.h"

#define PEERS   5 /* at most; n_peers are in the mesh */
#define WIN_MAX 64
#define Q_MAX   4096
#define STEPS   400

static const char *const graph[] = {"api", "db", "front", "svc"};
#define N_GRAPH 4

struct fake_job
{
    uint64_t id;
    struct node_train_spec spec;
    char nodes[N_GRAPH][16];
    size_t n;
    int due; /* ticks until done */
};

struct peer
{
    const char *id;
    struct node_train *t;
    int alive, mute; /* mute: receives but its messages are lost */
    uint8_t have[WIN_MAX + 1];
    uint64_t version, version_to;
    struct fake_job jobs[8];
    size_t n_jobs;
    int installing;
    struct node_train_spec install_spec;
    struct cons_digest install_cbn; /* as the last install was given */
    int install_status;
    uint8_t cbn; /* every byte of the digest of the CBN this peer builds */
    uint64_t trained[N_GRAPH]; /* shards of each node this peer trained */
};

struct msg
{
    int from, to, type;
    uint8_t *data;
    size_t len;
};

static struct peer peers[PEERS];
static int n_peers = 3;
static int cut_off[PEERS][PEERS]; /* a partition: messages i -> j are lost */
static struct msg queue[Q_MAX];
static size_t q_len;
static struct cons_fsm *fsm;
static uint64_t now;
static int leader = 0;
static uint64_t model_commits;
static int lose_to = -1; /* messages to this peer are lost ... */
static int lose_count;   /* ... this many more times */
/* Another leader's CBN_COMMIT (digest 0xAA) lands just before the next CBN
 * the leader proposes, under the same version. */
static int rival_cbn;

static int index_of(const char *id)
{
    for (int i = 0; i < n_peers; i++) {
        if (strcmp(peers[i].id, id) == 0) {
            return i;
        }
    }
    return -1;
}

/* ---- The fake model manager ---------------------------------------------- */

static void windows_digest(const struct peer *p,
                           uint64_t from,
                           uint64_t to,
                           uint64_t *n,
                           uint8_t d[32])
{
    struct tp_digest_state st;
    tp_digest_init(&st);
    *n = 0;
    for (uint64_t w = from + 1; w <= to && w <= WIN_MAX; w++) {
        if (p->have[w]) {
            tp_digest_update(&st, &w, sizeof w);
            (*n)++;
        }
    }
    tp_digest_final(&st, d);
}

static int env_send(void *arg,
                    const char *to,
                    int type,
                    const void *d,
                    size_t len)
{
    struct peer *p = arg;
    int dst = index_of(to);
    REQUIRE(dst >= 0);
    REQUIRE(q_len < Q_MAX);
    if (p->mute) {
        return SM_OK; /* lost on the way */
    }
    struct msg *m = &queue[q_len++];
    m->from = (int)(p - peers);
    m->to = dst;
    m->type = type;
    m->data = sm_malloc(len);
    memcpy(m->data, d, len);
    m->len = len;
    return SM_OK;
}

/* Proposals wait for the end of the tick, as raft applies them later,
 * never inside the call that proposes (the views the peers were given
 * stay valid). */
#define PROPOSALS_MAX 16
static uint8_t proposals[PROPOSALS_MAX][4096];
static size_t proposal_len[PROPOSALS_MAX], n_proposals;

static void env_propose(void *arg, const struct cons_cmd *cmd)
{
    struct peer *p = arg;
    /* Only the leader's proposals commit: the log is raft's. */
    if ((int)(p - peers) != leader || p->mute) {
        return;
    }
    if (cmd->type == CONS_CMD_CBN_COMMIT && rival_cbn) {
        rival_cbn = 0;
        struct cons_cmd rival = *cmd;
        memset(rival.u.cbn.digest.b, 0xAA, sizeof rival.u.cbn.digest.b);
        REQUIRE(n_proposals < PROPOSALS_MAX);
        REQUIRE_OK(cons_cmd_encode(&rival, proposals[n_proposals],
                                   sizeof proposals[0],
                                   &proposal_len[n_proposals]));
        n_proposals++;
    }
    REQUIRE(n_proposals < PROPOSALS_MAX);
    REQUIRE_OK(cons_cmd_encode(cmd, proposals[n_proposals], sizeof proposals[0],
                               &proposal_len[n_proposals]));
    n_proposals++;
}

/* The log applies what was proposed during the tick, in order. */
static void apply_proposals(void)
{
    for (size_t i = 0; i < n_proposals; i++) {
        struct cons_cmd cmd;
        REQUIRE_OK(cons_cmd_decode(proposals[i], proposal_len[i], &cmd));
        enum cons_apply_result res;
        REQUIRE_OK(cons_fsm_apply(fsm, proposals[i], proposal_len[i], &res));
        if (cmd.type == CONS_CMD_MODEL_COMMIT && res == CONS_APPLY_OK) {
            model_commits++;
        }
        cons_cmd_release(&cmd);
    }
    n_proposals = 0;
}

static int env_round_windows(void *arg, struct node_train_spec *spec)
{
    struct peer *p = arg;
    uint64_t lo = 0, hi = 0;
    for (uint64_t w = 1; w <= WIN_MAX; w++) {
        if (p->have[w]) {
            lo = lo ? lo : w;
            hi = w;
        }
    }
    if (hi == 0) {
        return SM_EAGAIN;
    }
    memset(spec, 0, sizeof *spec);
    spec->from_ns = lo - 1;
    spec->to_ns = hi;
    windows_digest(p, spec->from_ns, spec->to_ns, &spec->n_windows,
                   spec->digest);
    return spec->n_windows >= 8 ? SM_OK : SM_EAGAIN;
}

static int env_round_due(void *arg)
{
    struct peer *p = arg;
    uint64_t newer = 0;
    for (uint64_t w = p->version_to + 1; w <= WIN_MAX; w++) {
        newer += p->have[w];
    }
    return p->version == 0 ? newer >= 8 : newer >= 16;
}

static int in_list(const char *const *l, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(l[i], s) == 0) {
            return 1;
        }
    }
    return 0;
}

static int env_round_nodes(void *arg,
                           const struct node_train_spec *spec,
                           char (*names)[CONS_NAME_MAX + 1],
                           size_t cap,
                           size_t *n)
{
    (void)arg, (void)spec;
    REQUIRE(cap >= N_GRAPH);
    for (size_t g = 0; g < N_GRAPH; g++) {
        snprintf(names[g], sizeof names[g], "%s", graph[g]);
    }
    *n = N_GRAPH;
    return SM_OK;
}

static int env_train(void *arg,
                     uint64_t job,
                     const struct node_train_spec *spec,
                     const char *const *nodes,
                     size_t n)
{
    struct peer *p = arg;
    REQUIRE(p->n_jobs < 8);
    REQUIRE(n > 0 && n <= N_GRAPH);
    struct fake_job *j = &p->jobs[p->n_jobs++];
    memset(j, 0, sizeof *j);
    j->id = job;
    j->spec = *spec;
    for (size_t k = 0; k < n; k++) {
        REQUIRE(in_list(graph, N_GRAPH, nodes[k]));
        snprintf(j->nodes[j->n++], sizeof j->nodes[0], "%s", nodes[k]);
    }
    j->due = 3;
    return SM_OK;
}

static int digest_all(const struct cons_digest *d, uint8_t b)
{
    for (size_t i = 0; i < sizeof d->b; i++) {
        if (d->b[i] != b) {
            return 0;
        }
    }
    return 1;
}

/* Like the model manager: the shards must be the round's, and the CBN
 * this peer builds from the round's windows the one the log names. */
static int env_install(void *arg,
                       const struct node_train_spec *spec,
                       const struct cons_digest *cbn,
                       const uint8_t *const *blobs,
                       const size_t *lens,
                       size_t n)
{
    struct peer *p = arg;
    p->installing = 3;
    p->install_spec = *spec;
    p->install_cbn = *cbn;
    int ok = n == N_GRAPH;
    for (size_t i = 0; i < n; i++) {
        char want[32];
        snprintf(want, sizeof want, "shard:%" PRIu64 ":", spec->round);
        ok &=
            lens[i] > strlen(want) && memcmp(blobs[i], want, strlen(want)) == 0;
    }
    p->install_status = ok ? SM_OK : SM_EINVAL;
    if (ok && !digest_all(cbn, 0) && !digest_all(cbn, p->cbn)) {
        p->install_status = SM_ECONFLICT;
    }
    return SM_OK;
}

static uint64_t env_model_version(void *arg)
{
    return ((struct peer *)arg)->version;
}

static void env_each_window(void *arg,
                            uint64_t from,
                            uint64_t to,
                            int (*cb)(void *, const uint8_t *, size_t),
                            void *cb_arg)
{
    struct peer *p = arg;
    for (uint64_t w = from + 1; w <= to && w <= WIN_MAX; w++) {
        if (p->have[w] && cb(cb_arg, (const uint8_t *)&w, sizeof w)) {
            return;
        }
    }
}

static int env_add_window(void *arg,
                          const uint8_t *w,
                          size_t len,
                          uint64_t *end)
{
    struct peer *p = arg;
    uint64_t id;
    REQUIRE_EQ(len, sizeof id);
    memcpy(&id, w, sizeof id);
    REQUIRE(id >= 1 && id <= WIN_MAX);
    p->have[id] = 1;
    *end = id;
    return SM_OK;
}

/* Finishes the fake trainings and installs that are due. */
static void run_model(struct peer *p)
{
    for (size_t i = 0; i < p->n_jobs;) {
        struct fake_job *j = &p->jobs[i];
        if (--j->due > 0) {
            i++;
            continue;
        }
        struct fake_job job = *j;
        *j = p->jobs[--p->n_jobs];
        uint64_t n;
        uint8_t d[32];
        windows_digest(p, job.spec.from_ns, job.spec.to_ns, &n, d);
        struct node_train_result r = {.status = SM_OK, .errmsg = ""};
        char blobs[N_GRAPH][64];
        struct node_train_shard sh[N_GRAPH];
        if (n != job.spec.n_windows || memcmp(d, job.spec.digest, 32) != 0) {
            r.status = SM_ENOTFOUND;
            r.errmsg = "windows missing";
        } else {
            for (size_t k = 0; k < job.n; k++) {
                /* every peer makes the same bytes from the same windows */
                snprintf(blobs[k], sizeof blobs[k], "shard:%" PRIu64 ":%s:%02x",
                         job.spec.round, job.nodes[k], d[0]);
                sh[k].node = job.nodes[k];
                sh[k].blob = (const uint8_t *)blobs[k];
                sh[k].len = strlen(blobs[k]);
                for (size_t g = 0; g < N_GRAPH; g++) {
                    p->trained[g] += strcmp(graph[g], job.nodes[k]) == 0;
                }
            }
            r.n = job.n;
            r.shards = sh;
            memset(r.cbn_digest, p->cbn, 32);
            r.cbn_size = 100;
        }
        node_train_trained(p->t, job.id, &r);
    }
    if (p->installing > 0 && --p->installing == 0) {
        if (p->install_status == SM_OK) {
            p->version = p->install_spec.round;
            p->version_to = p->install_spec.to_ns;
            node_train_installed(p->t, p->version, SM_OK, "");
        } else {
            node_train_installed(p->t, p->install_spec.round, p->install_status,
                                 p->install_status == SM_ECONFLICT
                                     ? "another CBN"
                                     : "bad shards");
        }
    }
}

/* ---- The mesh ------------------------------------------------------------ */

static void peer_start(int i)
{
    struct peer *p = &peers[i];
    struct node_train_env env = {
        .arg = p,
        .net_arg = p,
        .send = env_send,
        .propose = env_propose,
        .round_windows = env_round_windows,
        .round_due = env_round_due,
        .round_nodes = env_round_nodes,
        .train = env_train,
        .install = env_install,
        .model_version = env_model_version,
        .each_window = env_each_window,
        .add_window = env_add_window,
    };
    struct node_train_config cfg = {
        .answer_ms = 30000, .retry_ms = 2000, .fetch_ms = 3000};
    REQUIRE_OK(node_train_new(&cfg, &env, &p->t));
    p->alive = 1;
}

static void setup(void)
{
    sm_log_set_sink(check_log_discard, NULL);
    REQUIRE_OK(tp_init());
    static const char *ids[PEERS] = {"a", "b", "c", "d", "e"};
    memset(peers, 0, sizeof peers);
    memset(cut_off, 0, sizeof cut_off);
    n_peers = 3;
    for (int i = 0; i < PEERS; i++) {
        peers[i].id = ids[i];
        peers[i].cbn = 0xCB;
        peer_start(i);
    }
    REQUIRE_OK(cons_fsm_new(&fsm));
    q_len = 0;
    now = 1000;
    leader = 0;
    model_commits = 0;
    n_proposals = 0;
    lose_to = -1;
    lose_count = 0;
    rival_cbn = 0;
}

static void teardown(void)
{
    for (int i = 0; i < PEERS; i++) {
        node_train_free(peers[i].t);
    }
    for (size_t i = 0; i < q_len; i++) {
        sm_free(queue[i].data);
    }
    q_len = 0;
    cons_fsm_free(fsm);
    sm_log_set_sink(NULL, NULL);
}

/* Placement: node g owned by peer g mod n, its replica on the next peer
 * (with three peers: api a/b, db b/c, front c/a, svc a/b). A peer the
 * leader is cut off from is down as the leader sees it. */
static void tick_all(void)
{
    static const char *members[PEERS] = {"a", "b", "c", "d", "e"};
    enum cons_health health[PEERS];
    for (int i = 0; i < n_peers; i++) {
        health[i] = peers[i].alive && !cut_off[leader][i] && !cut_off[i][leader]
                        ? CONS_HEALTH_UP
                        : CONS_HEALTH_DOWN;
    }
    struct cons_place_entry place[N_GRAPH];
    const char *owner[N_GRAPH], *replica[N_GRAPH];
    for (int g = 0; g < N_GRAPH; g++) {
        place[g] =
            (struct cons_place_entry){graph[g], (uint64_t)(g % n_peers) + 1,
                                      (uint64_t)((g + 1) % n_peers) + 1};
        owner[g] = members[g % n_peers];
        replica[g] = members[(g + 1) % n_peers];
    }
    struct cons_shard_digest shards[16];
    struct node_train_view v = {
        .leader = peers[leader].alive ? peers[leader].id : "",
        .n_members = (size_t)n_peers,
        .members = members,
        .health = health,
        .n_place = N_GRAPH,
        .place = place,
        .place_owner = owner,
        .place_replica = replica,
    };
    cons_fsm_versions(fsm, &v.versions);
    v.n_shards = cons_fsm_model_shards(fsm, shards, 16);
    v.shards = shards;
    for (int i = 0; i < n_peers; i++) {
        if (!peers[i].alive) {
            continue;
        }
        v.self = peers[i].id;
        v.is_leader = i == leader;
        node_train_tick(peers[i].t, &v, now);
        run_model(&peers[i]);
    }
    apply_proposals();
}

/* Delivers what is queued now (messages sent meanwhile wait). */
static void deliver(void)
{
    size_t n = q_len;
    struct msg *batch = sm_malloc((n + 1) * sizeof *batch);
    memcpy(batch, queue, n * sizeof *batch);
    q_len = 0;
    for (size_t i = 0; i < n; i++) {
        struct peer *p = &peers[batch[i].to];
        int lost = batch[i].to == lose_to && lose_count > 0;
        lose_count -= lost;
        lost |= cut_off[batch[i].from][batch[i].to];
        if (p->alive && !lost) {
            node_train_recv(p->t, peers[batch[i].from].id, batch[i].type,
                            batch[i].data, batch[i].len);
        }
        sm_free(batch[i].data);
    }
    sm_free(batch);
}

/* Runs until @done or STEPS ticks of 500 ms. */
static int run(int (*done)(void))
{
    for (int s = 0; s < STEPS; s++) {
        if (done()) {
            return 1;
        }
        tick_all();
        deliver();
        now += 500;
    }
    return done();
}

static int all_alive_have_v1(void)
{
    for (int i = 0; i < n_peers; i++) {
        if (peers[i].alive && peers[i].version < 1) {
            return 0;
        }
    }
    return 1;
}

static void give_windows(int i, uint64_t from, uint64_t to)
{
    for (uint64_t w = from; w <= to; w++) {
        peers[i].have[w] = 1;
    }
}

static void give_all(uint64_t from, uint64_t to)
{
    for (int i = 0; i < n_peers; i++) {
        give_windows(i, from, to);
    }
}

/* ---- Tests --------------------------------------------------------------- */

static void test_round_across_owners(void)
{
    give_all(1, 10);
    REQUIRE(run(all_alive_have_v1));
    struct cons_versions v;
    cons_fsm_versions(fsm, &v);
    CHECK_EQ(v.model_version, 1u);
    CHECK_EQ(v.model_shards, (size_t)N_GRAPH);
    CHECK_EQ(v.cbn_version, 1u);
    CHECK_EQ(model_commits, 1u);
    /* The model is bound to the round's CBN, and every peer installed it
     * with that binding. */
    CHECK_EQ(v.model_cbn_version, 1u);
    CHECK(digest_all(&v.model_cbn_digest, 0xCB));
    for (int i = 0; i < n_peers; i++) {
        CHECK(digest_all(&peers[i].install_cbn, 0xCB));
    }
    /* Owners trained their own: db on b, front on c, api and svc on a. */
    CHECK_EQ(peers[0].trained[0] + peers[0].trained[3], 2u);
    CHECK_EQ(peers[1].trained[1], 1u);
    CHECK_EQ(peers[2].trained[2], 1u);
    CHECK_EQ(peers[1].trained[0] + peers[2].trained[0], 0u);
    struct node_train_stats st;
    node_train_stats(peers[0].t, &st);
    CHECK_EQ(st.rounds_committed, 1u);
    CHECK_EQ(st.shards_received, 2u);
    CHECK(st.round_ms > 0);
    for (int i = 0; i < n_peers; i++) {
        node_train_stats(peers[i].t, &st);
        CHECK_EQ(st.installs, 1u);
    }
    /* A second round once enough new windows arrived: version 2, the CBN
     * unchanged. */
    give_all(11, 30);
    for (int s = 0; s < STEPS && peers[2].version < 2; s++) {
        tick_all();
        deliver();
        now += 500;
    }
    cons_fsm_versions(fsm, &v);
    CHECK_EQ(v.model_version, 2u);
    CHECK_EQ(v.cbn_version, 1u);
    CHECK_EQ(peers[0].version + peers[1].version + peers[2].version, 6u);
    CHECK_EQ(model_commits, 2u);
}

static void test_lagging_peer_caught_up(void)
{
    give_windows(0, 1, 12);
    give_windows(1, 1, 12);
    give_windows(2, 1, 6); /* c missed windows 7..12 */
    REQUIRE(run(all_alive_have_v1));
    CHECK_EQ(peers[2].trained[2], 1u); /* c trained front after all */
    for (uint64_t w = 1; w <= 12; w++) {
        CHECK(peers[2].have[w]);
    }
    struct node_train_stats st;
    node_train_stats(peers[0].t, &st);
    CHECK_EQ(st.windows_caught_up, 12u);
    CHECK_EQ(st.shards_reassigned, 0u);
}

static void test_dead_owner_replica(void)
{
    give_all(1, 10);
    peers[2].alive = 0; /* c owns front; a is its replica */
    REQUIRE(run(all_alive_have_v1));
    CHECK_EQ(peers[0].trained[2], 1u);
    CHECK_EQ(peers[2].trained[2], 0u);
    CHECK_EQ(model_commits, 1u);
}

static int b_has_v1(void)
{
    return peers[1].version >= 1;
}

static void test_silent_owner(void)
{
    give_all(1, 10);
    peers[1].mute = 1; /* b owns db (replica c) and never answers */
    REQUIRE(run(b_has_v1) || peers[2].version >= 1);
    CHECK_EQ(peers[2].trained[1], 1u);
    struct node_train_stats st;
    node_train_stats(peers[0].t, &st);
    CHECK_EQ(st.shards_reassigned, 1u);
    CHECK_EQ(model_commits, 1u);
}

static int round_started_on_b(void)
{
    struct node_train_stats st;
    node_train_stats(peers[1].t, &st);
    return st.shards_trained > 0;
}

static void test_leader_killed_mid_round(void)
{
    give_all(1, 10);
    REQUIRE(run(round_started_on_b)); /* b trained db for leader a */
    struct cons_versions v;
    cons_fsm_versions(fsm, &v);
    REQUIRE_EQ(v.model_version, 0u);
    /* a dies before committing; b is elected */
    peers[0].alive = 0;
    node_train_free(peers[0].t);
    peers[0].t = NULL;
    memset(peers[0].jobs, 0, sizeof peers[0].jobs);
    peers[0].n_jobs = 0;
    leader = 1;
    REQUIRE(run(all_alive_have_v1));
    cons_fsm_versions(fsm, &v);
    CHECK_EQ(v.model_version, 1u);
    CHECK_EQ(model_commits, 1u);
    /* a's shards (api, svc) came from their replica b */
    CHECK(peers[1].trained[0] >= 1);
    CHECK(peers[1].trained[3] >= 1);
    /* a restarts with no model: it fetches version 1 from b */
    peer_start(0);
    REQUIRE(run(all_alive_have_v1));
    CHECK_EQ(peers[0].version, 1u);
    CHECK_EQ(model_commits, 1u);
}

static int all_have_v2(void)
{
    return peers[0].version >= 2 && peers[1].version >= 2 &&
           peers[2].version >= 2;
}

static void test_requested_round(void)
{
    give_all(1, 10);
    REQUIRE(run(all_alive_have_v1));
    give_all(11, 12); /* too few new windows for a round to be due */
    for (int s = 0; s < 40; s++) {
        tick_all();
        deliver();
        now += 500;
    }
    CHECK_EQ(peers[0].version, 1u);
    /* `sagemesh train` on a follower: forwarded, the leader runs one */
    CHECK_OK(node_train_request(peers[2].t));
    REQUIRE(run(all_have_v2));
    CHECK_EQ(model_commits, 2u);
}

static int c_has_all(void)
{
    for (uint64_t w = 1; w <= 12; w++) {
        if (!peers[0].have[w] || !peers[2].have[w]) {
            return 0;
        }
    }
    return 1;
}

static void test_windows_replicated_despite_loss(void)
{
    tick_all(); /* every peer learns the members */
    lose_to = 2;
    lose_count = 8; /* c misses the first 8 windows b sends */
    for (uint64_t w = 1; w <= 12; w++) {
        peers[1].have[w] = 1;
        node_train_window(peers[1].t, (const uint8_t *)&w, sizeof w, w);
    }
    deliver();
    CHECK(!c_has_all());
    struct node_train_stats st;
    node_train_stats(peers[1].t, &st);
    CHECK_EQ(st.windows_sent, 24u);
    REQUIRE(run(c_has_all));
    /* b keeps resending until c acknowledges: nothing waits any more */
    for (int s = 0; s < 4; s++) {
        tick_all();
        deliver();
        now += 500;
    }
    node_train_stats(peers[1].t, &st);
    CHECK_EQ(st.windows_resent, 8u);
    CHECK_EQ(st.windows_unacked, (size_t)0);
    CHECK_EQ(st.windows_given_up, 0u);
}

static int alive_have_v2(void)
{
    return peers[1].version >= 2 && peers[2].version >= 2;
}

static void test_request_survives_failover(void)
{
    give_all(1, 10);
    REQUIRE(run(all_alive_have_v1));
    give_all(11, 12);                         /* no round is due */
    CHECK_OK(node_train_request(peers[2].t)); /* c asks a */
    deliver();
    tick_all(); /* a starts round 2 */
    struct node_train_stats st;
    node_train_stats(peers[0].t, &st);
    CHECK_EQ(st.round_version, 2u);
    /* a dies before committing; b leads and has never been asked */
    peers[0].alive = 0;
    node_train_free(peers[0].t);
    peers[0].t = NULL;
    peers[0].n_jobs = 0;
    leader = 1;
    for (size_t i = 0; i < q_len; i++) {
        sm_free(queue[i].data);
    }
    q_len = 0;
    REQUIRE(run(alive_have_v2)); /* c's request reached b */
    CHECK_EQ(model_commits, 2u);
    peer_start(0); /* for teardown */
}

static int all_five_have_v1(void)
{
    for (int i = 0; i < 5; i++) {
        if (peers[i].version < 1) {
            return 0;
        }
    }
    return 1;
}

static int four_have_v1(void)
{
    for (int i = 0; i < 5; i++) {
        if (i != 2 && peers[i].version < 1) {
            return 0;
        }
    }
    return 1;
}

static void test_five_peers_partition(void)
{
    n_peers = 5; /* owners a b c d, replicas b c d e */
    give_all(1, 10);
    /* c is cut off from the leader both ways: down as a sees it */
    cut_off[0][2] = cut_off[2][0] = 1;
    REQUIRE(run(four_have_v1));
    CHECK_EQ(model_commits, 1u);
    CHECK_EQ(peers[2].trained[2], 0u); /* front went to its replica d */
    CHECK_EQ(peers[3].trained[2], 1u);
    CHECK_EQ(peers[3].trained[3], 1u); /* and d trained its own, svc */
    CHECK_EQ(peers[2].version, 0u);    /* c never heard of the model */
    /* healed: c sees version 1 in the log and fetches it */
    cut_off[0][2] = cut_off[2][0] = 0;
    REQUIRE(run(all_five_have_v1));
    CHECK_EQ(model_commits, 1u);
    struct node_train_stats st;
    node_train_stats(peers[2].t, &st);
    CHECK_EQ(st.installs, 1u);
}

static int v1_committed(void)
{
    struct cons_versions v;
    cons_fsm_versions(fsm, &v);
    return v.model_version >= 1;
}

static void test_commit_without_shards(void)
{
    give_all(1, 10);
    REQUIRE(run(v1_committed));
    /* a committed version 1 and died before sending anyone its shards */
    peers[0].alive = 0;
    node_train_free(peers[0].t);
    peers[0].t = NULL;
    peers[0].n_jobs = 0;
    leader = 1;
    for (size_t i = 0; i < q_len; i++) {
        sm_free(queue[i].data);
    }
    q_len = 0;
    /* b and c ask for version 1 in vain, then b trains version 2 afresh */
    REQUIRE(run(alive_have_v2));
    CHECK_EQ(model_commits, 2u);
    CHECK_EQ(peers[1].version, 2u);
    struct node_train_stats st;
    node_train_stats(peers[1].t, &st);
    CHECK_EQ(st.installs, 1u); /* version 1 was never installed */
    peer_start(0);             /* for teardown */
}

/* No peer holds a model the log does not bind to the CBN it was trained
 * on (0xCB). */
static void check_bound_installs(void)
{
    struct cons_versions v;
    cons_fsm_versions(fsm, &v);
    for (int i = 0; i < n_peers; i++) {
        if (peers[i].version == 0) {
            continue;
        }
        struct cons_digest d;
        CHECK(v.model_version >= peers[i].version);
        CHECK(digest_all(&v.model_cbn_digest, 0xCB));
        CHECK(cons_fsm_cbn_digest(fsm, v.model_cbn_version, &d) == SM_OK &&
              digest_all(&d, 0xCB));
    }
}

static void test_model_bound_to_rival_cbn(void)
{
    /* Another leader's CBN takes version 1 just before ours: our CBN
     * commit is stale, and the MODEL_COMMIT naming CBN 1 (ours, 0xCB) does
     * not match what the log holds under that version (0xAA). */
    give_all(1, 10);
    rival_cbn = 1;
    for (int s = 0; s < STEPS && !all_alive_have_v1(); s++) {
        tick_all();
        check_bound_installs();
        deliver();
        now += 500;
    }
    REQUIRE(all_alive_have_v1());
    struct cons_fsm_stats fs;
    cons_fsm_stats(fsm, &fs);
    CHECK_EQ(fs.stale, 1u); /* our CBN under version 1 */
    CHECK_EQ(fs.bad, 1u);   /* the model naming it */
    /* The leader tried again: its CBN under version 2, then the model. */
    struct cons_versions v;
    cons_fsm_versions(fsm, &v);
    CHECK_EQ(v.cbn_version, 2u);
    CHECK(digest_all(&v.cbn_digest, 0xCB));
    CHECK_EQ(v.model_version, 1u);
    CHECK_EQ(v.model_cbn_version, 2u);
    CHECK(digest_all(&v.model_cbn_digest, 0xCB));
    struct cons_digest d;
    REQUIRE_OK(cons_fsm_cbn_digest(fsm, 1, &d));
    CHECK(digest_all(&d, 0xAA)); /* the rival's stays version 1 */
    CHECK_EQ(model_commits, 1u);
    for (int i = 0; i < n_peers; i++) {
        struct node_train_stats st;
        node_train_stats(peers[i].t, &st);
        CHECK_EQ(st.installs, 1u);
        CHECK_EQ(st.install_failures, 0u);
    }
}

static int a_and_b_have_v1(void)
{
    return peers[0].version >= 1 && peers[1].version >= 1;
}

static void test_peer_with_another_cbn(void)
{
    give_all(1, 10);
    REQUIRE(run(v1_committed));
    /* c's model manager now builds another CBN from the round's windows
     * than the one the log binds the model to: c refuses to install. */
    peers[2].cbn = 0xCC;
    REQUIRE(run(a_and_b_have_v1));
    for (int s = 0; s < 20; s++) {
        tick_all();
        deliver();
        now += 500;
    }
    CHECK_EQ(peers[2].version, 0u);
    CHECK(digest_all(&peers[2].install_cbn, 0xCB));
    struct node_train_stats st;
    node_train_stats(peers[2].t, &st);
    CHECK_EQ(st.installs, 0u);
    CHECK(st.install_failures >= 1);
    /* With the CBN the log names, c installs it. */
    peers[2].cbn = 0xCB;
    REQUIRE(run(all_alive_have_v1));
    node_train_stats(peers[2].t, &st);
    CHECK_EQ(st.installs, 1u);
}

static void test_malformed_messages(void)
{
    /* Capture a real START, SHARD and MODEL by running a round. */
    give_all(1, 10);
    struct msg kept[64];
    size_t n_kept = 0;
    for (int s = 0; s < STEPS && !all_alive_have_v1(); s++) {
        tick_all();
        for (size_t i = 0; i < q_len && n_kept < 64; i++) {
            if (queue[i].type == TP_MSG_TRAIN) {
                kept[n_kept] = queue[i];
                kept[n_kept].data = sm_malloc(queue[i].len);
                memcpy(kept[n_kept].data, queue[i].data, queue[i].len);
                n_kept++;
            }
        }
        deliver();
        now += 500;
    }
    REQUIRE(n_kept >= 3);
    for (size_t k = 0; k < n_kept; k++) {
        CHECK_OK(node_train_check_message(kept[k].data, kept[k].len));
        for (size_t cut = 0; cut < kept[k].len; cut++) {
            CHECK_EQ(node_train_check_message(kept[k].data, cut),
                     SM_EMALFORMED);
        }
        uint8_t *more = sm_malloc(kept[k].len + 1);
        memcpy(more, kept[k].data, kept[k].len);
        more[kept[k].len] = 0;
        CHECK_EQ(node_train_check_message(more, kept[k].len + 1),
                 SM_EMALFORMED);
        /* delivered truncated: dropped, nothing breaks */
        node_train_recv(peers[1].t, "a", TP_MSG_TRAIN, more, kept[k].len / 2);
        node_train_recv(peers[1].t, "a", TP_MSG_WINDOW, more, kept[k].len);
        sm_free(more);
        sm_free(kept[k].data);
    }
    CHECK_EQ(model_commits, 1u);
}

static const struct check_test tests[] = {
    {"a round across owners commits one model", test_round_across_owners},
    {"a lagging peer gets the round's windows", test_lagging_peer_caught_up},
    {"a dead owner's shard goes to its replica", test_dead_owner_replica},
    {"a silent owner's shard moves on", test_silent_owner},
    {"leader killed mid-round: one commit", test_leader_killed_mid_round},
    {"a follower's train request starts a round", test_requested_round},
    {"five peers, one cut off from the leader, then healed",
     test_five_peers_partition},
    {"a commit whose shards died with the leader: the next trained afresh",
     test_commit_without_shards},
    {"a train request survives a leader failover",
     test_request_survives_failover},
    {"lost windows are sent again until acknowledged",
     test_windows_replicated_despite_loss},
    {"a model naming another leader's CBN is installed nowhere",
     test_model_bound_to_rival_cbn},
    {"a peer whose CBN is not the log's does not install",
     test_peer_with_another_cbn},
    {"malformed messages are refused", test_malformed_messages},
};

CHECK_MAIN(tests, setup, teardown)
