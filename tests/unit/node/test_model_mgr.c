/* Tests for the model manager: training policy, diagnoses off the loop,
 * intake during training, checkpoints and restart, queue bounds, close,
 * and coordinated rounds (replicated windows, shards, installs). */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <uv.h>

#include "../gvae/synth.h"
#include "base/log.h"
#include "check.h"
#include "node/model_mgr.h"

#define TARGET_MS 45.0
#define MIN_WIN   200

static uv_loop_t loop;
static uv_timer_t tick; /* bounds every uv_run(UV_RUN_ONCE) */
static struct node_model_mgr *mgr;
static int closed;
static struct sm_rng rng;
static uint64_t next_t; /* window index: start time */

/* What the callbacks saw. */
static struct
{
    int rounds, round_status, round_mode, round_ckpt;
    uint64_t round_version;
    size_t round_windows, round_new;
    int diagnoses, diag_status, diag_while_training;
    uint64_t diag_version;
    char culprit[32];
    char top[32];
    enum cbn_resource resource;
} seen;

static void on_tick(uv_timer_t *t)
{
    (void)t;
}

static void on_round(void *arg, const struct node_model_round *r)
{
    (void)arg;
    seen.rounds++;
    seen.round_status = r->status;
    seen.round_mode = (int)r->mode;
    seen.round_ckpt = r->checkpoint_status;
    seen.round_version = r->model_version;
    seen.round_windows = r->windows;
    seen.round_new = r->windows_new;
    if (r->status != SM_OK) {
        printf("# round failed: %s\n", r->errmsg);
    } else {
        printf("# round %d: mode %d, %zu windows (%zu new), %.2f s\n",
               seen.rounds, (int)r->mode, r->windows, r->windows_new,
               r->report.seconds);
    }
}

static void on_diagnosis(void *arg,
                         const struct cbn_window *w,
                         const struct node_model_result *r)
{
    (void)arg;
    (void)w;
    seen.diagnoses++;
    seen.diag_status = r->status;
    seen.diag_version = r->model_version;
    struct node_model_mgr_stats st;
    node_model_mgr_stats(mgr, &st);
    seen.diag_while_training = st.training;
    seen.culprit[0] = seen.top[0] = '\0';
    seen.resource = CBN_RES_UNKNOWN;
    const struct gvae_diagnosis *d = r->diagnosis;
    if (r->status != SM_OK) {
        printf("# diagnosis failed: %s\n", r->errmsg);
        return;
    }
    if (d->n_ranking > 0) {
        snprintf(seen.top, sizeof seen.top, "%s", d->ranking[0].service);
    }
    if (d->n_culprits > 0) {
        snprintf(seen.culprit, sizeof seen.culprit, "%s",
                 d->culprits[0].service);
        seen.resource = d->culprits[0].resource;
    }
    printf(
        "# diagnosis by model %llu: latency %.1f ms, top %s, culprit %s "
        "(%s), %.3f s\n",
        (unsigned long long)r->model_version, d->latency_ms, seen.top,
        seen.culprit, cbn_resource_name(seen.resource), r->seconds);
}

static void on_closed(void *arg)
{
    (void)arg;
    closed = 1;
}

static const struct node_model_mgr_callbacks callbacks = {
    .diagnosis = on_diagnosis,
    .round = on_round,
};

static void small_config(struct node_model_mgr_config *c, const char *dir)
{
    node_model_mgr_config_default(c);
    c->qos_service = "a-front";
    c->qos_target_ms = TARGET_MS;
    c->min_windows = MIN_WIN;
    c->retrain_every = 0;
    c->data_dir = dir;
    c->samples = 16;
    c->train.max_epochs = 40;
    c->train.finetune_epochs = 10;
    c->train.batch = 32;
    c->train.threads = 2;
}

static void start(const struct node_model_mgr_config *c)
{
    char err[SM_ERRMSG_SIZE];
    int rc = node_model_mgr_new(&loop, c, &callbacks, &mgr, err);
    if (rc != SM_OK) {
        check__fail(__FILE__, __LINE__, 1, "new: %s", err);
    }
    closed = 0;
}

static struct node_model_mgr_stats stats(void)
{
    struct node_model_mgr_stats st;
    node_model_mgr_stats(mgr, &st);
    return st;
}

/* Runs the loop until @cond holds, at most @ms milliseconds of ticks. */
static int run_until(int (*cond)(void), int ms)
{
    for (int i = 0; i < ms / 10 && !cond(); i++) {
        uv_run(&loop, UV_RUN_ONCE);
    }
    return cond();
}

static int is_closed(void)
{
    return closed;
}

static void close_mgr(void)
{
    node_model_mgr_close(mgr, on_closed, NULL);
    /* The round in flight, if any, must end first. */
    REQUIRE(run_until(is_closed, 60000));
    mgr = NULL;
}

/* Feeds @n windows, every 8th with a random fault (so the model sees its
 * inputs vary); returns how many violated QoS. */
static size_t feed(size_t n, unsigned flags)
{
    size_t violated = 0;
    for (size_t k = 0; k < n; k++, next_t++) {
        enum syn_fault f = SYN_NONE;
        int where = 0;
        double mag = 0;
        if (next_t % 8 == 7) {
            f = (enum syn_fault)(1 + sm_rng_below(&rng, 3));
            where = (int)sm_rng_below(&rng, SYN_SERVICES);
            mag = 0.2 + 0.8 * sm_rng_double(&rng);
        }
        struct syn_window sw;
        syn_make(&sw, &rng, next_t, f, where, mag, TARGET_MS);
        violated += sw.w.qos_violated != 0;
        REQUIRE_OK(node_model_mgr_window(mgr, &sw.w, flags));
    }
    return violated;
}

/* Feeds one window with a clear CPU fault at c-db. */
static void feed_fault(void)
{
    struct syn_window sw;
    syn_make(&sw, &rng, next_t++, SYN_CPU, 2, 1.2, TARGET_MS);
    REQUIRE(sw.w.qos_violated);
    REQUIRE_OK(node_model_mgr_window(mgr, &sw.w, 0));
}

static size_t asked;
static uint64_t newest_asked;

static int all_done(void *arg, uint64_t end_ns)
{
    (void)arg;
    asked++;
    newest_asked = end_ns > newest_asked ? end_ns : newest_asked;
    return 1;
}

static int all_but_newest_done(void *arg, uint64_t end_ns)
{
    (void)arg;
    return end_ns != newest_asked;
}

static int three_diagnoses(void)
{
    return seen.diagnoses >= 3;
}

static int first_round_done(void)
{
    return seen.rounds >= 1;
}

static int second_round_done(void)
{
    return seen.rounds >= 2;
}

static int one_diagnosis(void)
{
    return seen.diagnoses >= 1;
}

static int two_diagnoses(void)
{
    return seen.diagnoses >= 2;
}

static int is_third(void)
{
    return seen.rounds >= 3;
}

static void setup(void)
{
    sm_log_set_sink(check_log_discard, NULL);
    REQUIRE(uv_loop_init(&loop) == 0);
    REQUIRE(uv_timer_init(&loop, &tick) == 0);
    REQUIRE(uv_timer_start(&tick, on_tick, 10, 10) == 0);
    memset(&seen, 0, sizeof seen);
    sm_rng_seed(&rng, 11);
    next_t = 0;
    mgr = NULL;
}

static void teardown(void)
{
    if (mgr != NULL) {
        close_mgr();
    }
    uv_close((uv_handle_t *)&tick, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
    CHECK_EQ(uv_loop_close(&loop), 0);
    sm_log_set_sink(NULL, NULL);
}

static void test_bad_config(void)
{
    struct node_model_mgr_config c;
    char err[SM_ERRMSG_SIZE];
    struct node_model_mgr *m = NULL;

    node_model_mgr_config_default(&c);
    c.qos_target_ms = TARGET_MS;
    CHECK_EQ(node_model_mgr_new(&loop, &c, NULL, &m, err), SM_EINVAL);
    CHECK(strstr(err, "QoS service") != NULL);

    small_config(&c, NULL);
    c.qos_target_ms = 0;
    CHECK_EQ(node_model_mgr_new(&loop, &c, NULL, &m, err), SM_EINVAL);
    CHECK(strstr(err, "target") != NULL);

    small_config(&c, NULL);
    c.min_windows = 4;
    CHECK_EQ(node_model_mgr_new(&loop, &c, NULL, &m, err), SM_EINVAL);
    CHECK(strstr(err, "min_windows") != NULL);

    small_config(&c, NULL);
    c.max_windows = 100;
    CHECK_EQ(node_model_mgr_new(&loop, &c, NULL, &m, err), SM_EINVAL);
    CHECK(strstr(err, "max_windows") != NULL);

    small_config(&c, NULL);
    c.qos_percentile = 120;
    CHECK_EQ(node_model_mgr_new(&loop, &c, NULL, &m, err), SM_EINVAL);
    CHECK(strstr(err, "percentile") != NULL);

    small_config(&c, NULL);
    c.train.batch = 1;
    CHECK_EQ(node_model_mgr_new(&loop, &c, NULL, &m, err), SM_EINVAL);
    CHECK(strstr(err, "training config") != NULL);

    small_config(&c, "/proc/nope/model");
    CHECK(node_model_mgr_new(&loop, &c, NULL, &m, err) != SM_OK);
    CHECK(strstr(err, "/proc/nope/model") != NULL);
    CHECK(m == NULL);
}

/* Shared by the checkpoint test below. */
static char ckpt_dir[512];
static uint64_t ckpt_version;
static size_t ckpt_params;

static void test_train_diagnose_retrain(void)
{
    snprintf(ckpt_dir, sizeof ckpt_dir, "%s/model", check_tmpdir());
    struct node_model_mgr_config c;
    small_config(&c, ckpt_dir);
    start(&c);
    CHECK_EQ(node_model_mgr_train_now(mgr), SM_EAGAIN); /* too few windows */

    /* Nothing before min_windows; violated windows are not diagnosed
     * without a model. */
    size_t violated = feed(MIN_WIN - 1, 0);
    CHECK(violated > 0);
    struct node_model_mgr_stats st = stats();
    CHECK_EQ(st.training, 0);
    CHECK_EQ(st.diagnoses_pending, 0);
    CHECK_EQ(st.model_version, 0);
    feed(1, 0);
    st = stats();
    CHECK_EQ(st.training, 1);

    /* Intake goes on while the round trains (the loop does not wait; the
     * round is only delivered when the loop runs). */
    feed(40, 0);
    feed_fault();
    st = stats();
    CHECK_EQ(st.training, 1);
    CHECK_EQ(st.windows, MIN_WIN + 41);
    CHECK_EQ(st.windows_total, MIN_WIN + 41);
    CHECK_EQ(st.diagnoses_pending, 0);

    REQUIRE(run_until(first_round_done, 60000));
    CHECK_EQ(seen.round_status, SM_OK);
    CHECK_EQ(seen.round_mode, GVAE_RETRAIN_FULL);
    CHECK_EQ(seen.round_windows, MIN_WIN);
    CHECK_EQ(seen.round_ckpt, SM_OK);
    st = stats();
    CHECK_EQ(st.training, 0);
    CHECK_EQ(st.trainings, 1);
    CHECK_EQ(st.model_version, 1);
    CHECK(st.model_params > 1000);
    CHECK(st.last_train_s > 0);
    CHECK_EQ(st.windows_new, 41);
    char path[600];
    snprintf(path, sizeof path, "%s/%s", ckpt_dir, NODE_MODEL_CHECKPOINT);
    struct stat sb;
    CHECK(stat(path, &sb) == 0 && sb.st_size > 1000);

    /* A violated window is diagnosed off the loop and names the fault. */
    feed_fault();
    CHECK_EQ(stats().diagnoses_pending, 1);
    REQUIRE(run_until(one_diagnosis, 30000));
    CHECK_EQ(seen.diag_status, SM_OK);
    CHECK_EQ(seen.diag_version, 1);
    CHECK_STR(seen.top, "c-db");
    CHECK_STR(seen.culprit, "c-db");
    CHECK_STR(cbn_resource_name(seen.resource), cbn_resource_name(CBN_RES_CPU));
    st = stats();
    CHECK_EQ(st.diagnoses, 1);
    CHECK_EQ(st.diagnoses_pending, 0);

    /* A second round on demand: same CBN, so incremental on the windows
     * since the first; the first model serves diagnoses meanwhile. */
    REQUIRE_OK(node_model_mgr_train_now(mgr));
    CHECK_EQ(stats().training, 1);
    CHECK_OK(node_model_mgr_train_now(mgr)); /* coalesces: one more after */
    feed_fault();
    REQUIRE(run_until(two_diagnoses, 30000));
    CHECK_EQ(seen.diag_status, SM_OK);
    CHECK_STR(seen.culprit, "c-db");
    if (seen.diag_while_training) {
        CHECK_EQ(seen.diag_version, 1);
    }
    printf("# second diagnosis %s the round\n",
           seen.diag_while_training ? "during" : "after");
    REQUIRE(run_until(second_round_done, 60000));
    CHECK_EQ(seen.round_status, SM_OK);
    CHECK_EQ(seen.round_mode, GVAE_RETRAIN_INCREMENTAL);
    CHECK_EQ(seen.round_version, 2);
    CHECK_EQ(seen.round_windows, MIN_WIN + 42);
    CHECK_EQ(seen.round_new, 42);
    /* The coalesced request runs a third round right away. */
    CHECK_EQ(stats().training, 1);
    REQUIRE(run_until(is_third, 60000));
    st = stats();
    CHECK_EQ(st.trainings, 3);
    CHECK_EQ(st.model_version, 3);
    CHECK_EQ(st.training_failures, 0);
    ckpt_version = st.model_version;
    ckpt_params = st.model_params;
    close_mgr();
}

/* A second manager on the same directory starts with the saved model: it
 * diagnoses before any training, and its first round is partial (the CBN
 * it builds is new to it). Diagnoses beyond max_pending are dropped. */
static void test_checkpoint_reload(void)
{
    REQUIRE(ckpt_version > 0);
    struct node_model_mgr_config c;
    small_config(&c, ckpt_dir);
    c.max_pending = 2;
    start(&c);
    struct node_model_mgr_stats st = stats();
    CHECK_EQ(st.model_version, ckpt_version);
    CHECK_EQ(st.model_params, ckpt_params);
    CHECK_EQ(st.model_loaded, 1);
    CHECK_EQ(st.checkpoint_failures, 0);

    /* Replayed history (the window log at start-up): no diagnosis, no
     * round, and the windows the model was trained on are not new. */
    next_t = 200; /* windows of the first manager's history */
    feed(20, NODE_MODEL_REPLAYED);
    st = stats();
    CHECK_EQ(st.training, 0);
    CHECK_EQ(st.diagnoses_pending, 0);
    CHECK_EQ(st.windows_new, 0);

    /* Live faults: two queued, the rest dropped and counted. */
    next_t = 1000;
    for (int k = 0; k < 5; k++) {
        feed_fault();
    }
    st = stats();
    CHECK_EQ(st.diagnoses_pending, 2);
    CHECK_EQ(st.diagnoses_dropped, 3);
    CHECK_EQ(st.windows_new, 5);
    REQUIRE(run_until(two_diagnoses, 30000));
    CHECK_EQ(seen.diagnoses, 2);
    CHECK_EQ(seen.diag_version, ckpt_version);
    CHECK_STR(seen.culprit, "c-db");

    /* A new leader takes over violated windows nobody diagnosed: of the
     * newest 5 (all violated; 2 diagnosed here, 3 dropped), it asks about
     * the 3 and queues only those not done elsewhere. */
    asked = 0;
    newest_asked = 0;
    CHECK_EQ(node_model_mgr_rediagnose(mgr, 5, all_done, NULL), 0);
    CHECK_EQ(asked, 3); /* the 2 queued before are not asked about */
    CHECK_EQ(node_model_mgr_rediagnose(mgr, 5, all_but_newest_done, NULL), 1);
    REQUIRE(run_until(three_diagnoses, 30000));
    CHECK_EQ(seen.diag_status, SM_OK);
    CHECK_STR(seen.culprit, "c-db");

    REQUIRE_OK(node_model_mgr_train_now(mgr));
    REQUIRE(run_until(first_round_done, 60000));
    CHECK_EQ(seen.round_status, SM_OK);
    /* The loaded model's CBN version is unknown, so the round starts
     * partial; the services are the same, so every node is kept, and the
     * manager trains the new windows incrementally instead. */
    CHECK_EQ(seen.round_mode, GVAE_RETRAIN_INCREMENTAL);
    CHECK_EQ(seen.round_version, ckpt_version + 1);
    CHECK_EQ(seen.round_windows, 25);
    CHECK_EQ(seen.round_new, 5);
    st = stats();
    CHECK_EQ(st.model_loaded, 0);
    CHECK_EQ(st.model_version, ckpt_version + 1);
    close_mgr();
    CHECK_EQ(seen.diagnoses, 3);
}

/* A corrupt checkpoint is ignored (counted), never fatal. */
static void test_corrupt_checkpoint(void)
{
    const char *dir = check_tmpdir();
    char path[600];
    snprintf(path, sizeof path, "%s/%s", dir, NODE_MODEL_CHECKPOINT);
    FILE *f = fopen(path, "w");
    REQUIRE(f != NULL);
    fputs("SMMODEL1 but not really a checkpoint", f);
    fclose(f);
    struct node_model_mgr_config c;
    small_config(&c, dir);
    start(&c);
    struct node_model_mgr_stats st = stats();
    CHECK_EQ(st.model_version, 0);
    CHECK_EQ(st.checkpoint_failures, 1);
    feed_fault(); /* no model: not diagnosed */
    CHECK_EQ(stats().diagnoses_pending, 0);
}

/* Replayed windows start no round; the first live one does. Closing while
 * the round trains and diagnoses are queued drops them and runs no
 * callback; the manager is freed once the round ends (LSan checks). */
static void test_close_while_training(void)
{
    struct node_model_mgr_config c;
    small_config(&c, NULL);
    c.min_windows = 40;
    c.retrain_every = 20;
    c.train.max_epochs = 3;
    start(&c);
    feed(60, NODE_MODEL_REPLAYED);
    CHECK_EQ(stats().training, 0);
    feed(1, 0);
    CHECK_EQ(stats().training, 1);
    REQUIRE(run_until(first_round_done, 60000));
    CHECK_EQ(seen.round_status, SM_OK);
    CHECK_EQ(seen.round_windows, 61);
    /* Periodic retraining after retrain_every new windows. */
    feed(19, 0);
    CHECK_EQ(stats().training, 0);
    feed(1, 0);
    CHECK_EQ(stats().training, 1);
    size_t pending = stats().diagnoses_pending;
    feed_fault();
    feed_fault();
    CHECK_EQ(stats().diagnoses_pending, pending + 2);
    int rounds = seen.rounds;
    close_mgr();
    CHECK_EQ(seen.rounds, rounds);
    CHECK_EQ(seen.diagnoses, 0);
}

/* The history keeps max_windows, dropping the oldest. */
static void test_history_bound(void)
{
    struct node_model_mgr_config c;
    small_config(&c, NULL);
    c.min_windows = 8;
    c.max_windows = 16;
    start(&c);
    feed(50, NODE_MODEL_REPLAYED);
    struct node_model_mgr_stats st = stats();
    CHECK_EQ(st.windows, 16);
    CHECK_EQ(st.windows_total, 50);
    CHECK_EQ(st.training, 0);
}

/* ---- Coordinated rounds ---------------------------------------------- */

#define CO_WINDOWS 96

/* One peer of a coordinated round: its manager and what its callbacks saw. */
struct co_peer
{
    struct node_model_mgr *m;
    char dir[512];
    int diagnoses, closed;
    int shard_calls, shard_status;
    char shard_err[SM_ERRMSG_SIZE];
    uint64_t cbn_version, cbn_size;
    uint8_t cbn_digest[32];
    size_t n_shards;
    char *node[8];
    uint8_t *blob[8];
    size_t len[8];
    int install_calls, install_status;
    uint64_t install_version;
    char install_err[SM_ERRMSG_SIZE];
};

static struct co_peer peers[3];
static struct syn_window *co_win; /* CO_WINDOWS + 32, made by co_windows */

static void co_on_diagnosis(void *arg,
                            const struct cbn_window *w,
                            const struct node_model_result *r)
{
    (void)w;
    (void)r;
    ((struct co_peer *)arg)->diagnoses++;
}

static void co_on_shards(void *arg, const struct node_model_shards *r)
{
    struct co_peer *p = arg;
    p->shard_calls++;
    p->shard_status = r->status;
    snprintf(p->shard_err, sizeof p->shard_err, "%s", r->errmsg);
    if (r->status != SM_OK) {
        printf("# shards of round %llu: %s\n", (unsigned long long)r->round,
               r->errmsg);
        return;
    }
    p->cbn_version = r->cbn_version;
    p->cbn_size = r->cbn_size;
    memcpy(p->cbn_digest, r->cbn_digest, 32);
    for (size_t k = 0; k < p->n_shards; k++) {
        free(p->node[k]);
        free(p->blob[k]);
    }
    p->n_shards = r->n < 8 ? r->n : 8;
    for (size_t k = 0; k < p->n_shards; k++) {
        p->node[k] = strdup(r->shards[k].node);
        p->blob[k] = malloc(r->shards[k].len);
        memcpy(p->blob[k], r->shards[k].blob, r->shards[k].len);
        p->len[k] = r->shards[k].len;
    }
    printf("# shards of round %llu: %zu in %.2f s\n",
           (unsigned long long)r->round, r->n, r->seconds);
}

static void co_on_installed(void *arg,
                            uint64_t version,
                            int status,
                            const char *errmsg)
{
    struct co_peer *p = arg;
    p->install_calls++;
    p->install_status = status;
    p->install_version = version;
    snprintf(p->install_err, sizeof p->install_err, "%s", errmsg);
    if (status != SM_OK) {
        printf("# install %llu: %s\n", (unsigned long long)version, errmsg);
    }
}

static void co_on_closed(void *arg)
{
    ((struct co_peer *)arg)->closed = 1;
}

/* Makes the round's windows: every 8th with a random fault. */
static void co_windows(void)
{
    co_win = calloc(CO_WINDOWS + 32, sizeof *co_win);
    REQUIRE(co_win != NULL);
    for (size_t t = 0; t < CO_WINDOWS + 32; t++) {
        enum syn_fault f = SYN_NONE;
        int where = 0;
        double mag = 0;
        if (t % 8 == 7) {
            f = (enum syn_fault)(1 + sm_rng_below(&rng, 3));
            where = (int)sm_rng_below(&rng, SYN_SERVICES);
            mag = 0.2 + 0.8 * sm_rng_double(&rng);
        }
        syn_make(&co_win[t], &rng, t, f, where, mag, TARGET_MS);
    }
}

static void co_config(struct node_model_mgr_config *c, const char *dir)
{
    small_config(c, dir);
    c->coordinated = 1;
    c->min_windows = 64;
    c->retrain_every = 16;
    c->train.max_epochs = 12;
    c->train.finetune_epochs = 4;
}

static void co_start(struct co_peer *p, const char *name)
{
    snprintf(p->dir, sizeof p->dir, "%s/%s", check_tmpdir(), name);
    struct node_model_mgr_config c;
    co_config(&c, p->dir);
    struct node_model_mgr_callbacks cb = {.diagnosis = co_on_diagnosis,
                                          .arg = p};
    char err[SM_ERRMSG_SIZE];
    int rc = node_model_mgr_new(&loop, &c, &cb, &p->m, err);
    if (rc != SM_OK) {
        check__fail(__FILE__, __LINE__, 1, "new: %s", err);
    }
}

static struct node_model_mgr_stats co_stats(const struct co_peer *p)
{
    struct node_model_mgr_stats st;
    node_model_mgr_stats(p->m, &st);
    return st;
}

/* Feeds windows [from, to) of co_win to @p; with NODE_MODEL_REMOTE in a
 * scrambled order (replication is not ordered). */
static void co_feed(struct co_peer *p, size_t from, size_t to, unsigned flags)
{
    size_t n = to - from;
    size_t *order = calloc(n + 1, sizeof *order);
    REQUIRE(order != NULL);
    for (size_t k = 0; k < n; k++) {
        order[k] = from + k;
    }
    for (size_t k = n; (flags & NODE_MODEL_REMOTE) && k > 1; k--) {
        size_t q = (size_t)sm_rng_below(&rng, k);
        size_t t = order[k - 1];
        order[k - 1] = order[q];
        order[q] = t;
    }
    for (size_t k = 0; k < n; k++) {
        REQUIRE_OK(node_model_mgr_window(p->m, &co_win[order[k]].w, flags));
    }
    free(order);
}

static struct co_peer *co_wait_peer;
static int co_shards_done(void)
{
    return co_wait_peer->shard_calls > 0;
}
static int co_installed(void)
{
    return co_wait_peer->install_calls > 0;
}
static int co_diagnosed(void)
{
    return co_wait_peer->diagnoses > 0;
}
static int co_all_closed(void)
{
    for (size_t k = 0; k < 3; k++) {
        if (peers[k].m != NULL && !peers[k].closed) {
            return 0;
        }
    }
    return 1;
}

static void co_wait(struct co_peer *p, int (*cond)(void))
{
    co_wait_peer = p;
    REQUIRE(run_until(cond, 60000));
}

static void co_setup(void)
{
    memset(peers, 0, sizeof peers);
    co_win = NULL;
    REQUIRE(sodium_init() >= 0);
}

/* Closes every peer and frees what the callbacks kept. */
static void co_teardown(void)
{
    for (size_t k = 0; k < 3; k++) {
        if (peers[k].m != NULL && !peers[k].closed) {
            node_model_mgr_close(peers[k].m, co_on_closed, &peers[k]);
        }
    }
    CHECK(run_until(co_all_closed, 60000));
    for (size_t k = 0; k < 3; k++) {
        for (size_t q = 0; q < peers[k].n_shards; q++) {
            free(peers[k].node[q]);
            free(peers[k].blob[q]);
        }
    }
    memset(peers, 0, sizeof peers);
    free(co_win);
    co_win = NULL;
}

/* The round digest as model_mgr.h defines it, for windows [from, to) of
 * co_win (in end order). */
static void co_digest(size_t from, size_t to, uint8_t out[32])
{
    crypto_generichash_state top;
    crypto_generichash_init(&top, NULL, 0, 32);
    for (size_t t = from; t < to; t++) {
        uint8_t *buf = NULL;
        size_t len = 0;
        REQUIRE_OK(cbn_window_encode(&co_win[t].w, &buf, &len));
        uint8_t n8[8], leaf[32];
        for (int i = 0; i < 8; i++) {
            n8[i] = (uint8_t)((uint64_t)len >> (8 * i));
        }
        crypto_generichash_state st;
        crypto_generichash_init(&st, NULL, 0, 32);
        crypto_generichash_update(&st, n8, 8);
        crypto_generichash_update(&st, buf, len);
        crypto_generichash_final(&st, leaf, 32);
        crypto_generichash_update(&top, leaf, 32);
        sm_free(buf);
    }
    crypto_generichash_final(&top, out, 32);
}

/* The current model's checkpoint bytes (after the manager's header). */
static uint8_t *co_checkpoint(const struct co_peer *p, size_t *len)
{
    char path[600];
    snprintf(path, sizeof path, "%s/%s", p->dir, NODE_MODEL_CHECKPOINT);
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }
    uint8_t *buf = malloc(1 << 24);
    size_t n = buf != NULL ? fread(buf, 1, 1 << 24, f) : 0;
    fclose(f);
    *len = n;
    return buf;
}

/* Both peers fed the same windows, A locally and B by replication in another
 * order, see one round with one digest (the documented one); duplicates are
 * ignored and counted; a coordinated manager starts no round by itself. */
static void test_round_windows(void)
{
    co_setup();
    co_windows();
    co_start(&peers[0], "a");
    co_start(&peers[1], "b");
    struct co_peer *a = &peers[0], *b = &peers[1];
    uint64_t from, to;
    size_t n;
    uint8_t da[32], db[32], want[32];
    co_feed(a, 0, 7, 0);
    CHECK_EQ(node_model_mgr_round_windows(a->m, &from, &to, &n, da), SM_EAGAIN);
    co_feed(a, 7, CO_WINDOWS, 0);
    co_feed(b, 0, CO_WINDOWS, NODE_MODEL_REMOTE);

    /* Duplicates, local or remote, are ignored. */
    REQUIRE_OK(node_model_mgr_window(a->m, &co_win[10].w, 0));
    REQUIRE_OK(node_model_mgr_window(b->m, &co_win[20].w, NODE_MODEL_REMOTE));
    REQUIRE_OK(node_model_mgr_window(b->m, &co_win[95].w, 0));
    struct node_model_mgr_stats sa = co_stats(a), sb = co_stats(b);
    CHECK_EQ(sa.windows, CO_WINDOWS);
    CHECK_EQ(sb.windows, CO_WINDOWS);
    CHECK_EQ(sa.windows_duplicate, 1);
    CHECK_EQ(sb.windows_duplicate, 2);
    CHECK_EQ(sb.windows_total, CO_WINDOWS);

    /* Past min_windows, but coordinated: no round. */
    CHECK_EQ(sa.training, 0);
    CHECK_EQ(sb.training, 0);
    CHECK_EQ(node_model_mgr_round_due(a->m, 0), 1);

    REQUIRE_OK(node_model_mgr_round_windows(a->m, &from, &to, &n, da));
    uint64_t from_b, to_b;
    size_t n_b;
    REQUIRE_OK(node_model_mgr_round_windows(b->m, &from_b, &to_b, &n_b, db));
    CHECK_EQ(n, CO_WINDOWS);
    CHECK_EQ(n_b, CO_WINDOWS);
    CHECK_EQ(from, co_win[0].w.end_ns - 1);
    CHECK_EQ(to, co_win[CO_WINDOWS - 1].w.end_ns);
    CHECK_EQ(from_b, from);
    CHECK_EQ(to_b, to);
    CHECK(memcmp(da, db, 32) == 0);
    co_digest(0, CO_WINDOWS, want);
    CHECK(memcmp(da, want, 32) == 0);

    /* A round on demand still works in coordinated mode. */
    REQUIRE_OK(node_model_mgr_train_now(a->m));
    CHECK_EQ(co_stats(a).training, 1);
    co_teardown();
}

static uint8_t *save_model(const struct gvae_model *model, size_t *len)
{
    uint8_t *buf = NULL;
    REQUIRE_OK(gvae_model_save(model, &buf, len));
    return buf;
}

/* The model gvae_train makes on co_win[0, n) from @prev (may be NULL),
 * saved. */
static uint8_t *reference_model(size_t n,
                                size_t n_new,
                                const struct gvae_model *prev,
                                enum gvae_retrain mode,
                                size_t *len)
{
    struct node_model_mgr_config c;
    co_config(&c, NULL);
    c.train.threads = 0; /* as installed models are saved */
    struct cbn_graph *g = NULL;
    REQUIRE_OK(cbn_graph_new(NULL, &g));
    const struct cbn_window **w = calloc(n, sizeof *w);
    REQUIRE(w != NULL);
    for (size_t t = 0; t < n; t++) {
        int changed;
        w[t] = &co_win[t].w;
        REQUIRE_OK(cbn_graph_observe(g, w[t], &changed));
    }
    struct gvae_model *model = NULL;
    char err[SM_ERRMSG_SIZE];
    int rc =
        gvae_train(&c.train, g, w, n, n_new, prev, mode, &model, NULL, err);
    if (rc != SM_OK) {
        check__fail(__FILE__, __LINE__, 1, "gvae_train: %s", err);
    }
    uint8_t *buf = save_model(model, len);
    gvae_model_free(model);
    cbn_graph_free(g);
    free(w);
    return buf;
}

/* Runs round @round on peers A and B (A trains @nodes_a, B the rest),
 * then installs every shard on both. */
static void co_round(uint64_t round,
                     uint64_t prev,
                     const char *const nodes_a[2],
                     const char *const nodes_b[2],
                     struct node_model_round_spec *spec)
{
    struct co_peer *a = &peers[0], *b = &peers[1];
    memset(spec, 0, sizeof *spec);
    spec->round = round;
    spec->prev_version = prev;
    REQUIRE_OK(node_model_mgr_round_windows(a->m, &spec->from_ns, &spec->to_ns,
                                            &spec->n_windows, spec->digest));
    a->shard_calls = b->shard_calls = 0;
    a->install_calls = b->install_calls = 0;
    struct node_model_round_spec sa = *spec, sb = *spec;
    sa.nodes = nodes_a;
    sa.n_nodes = 2;
    sb.nodes = nodes_b;
    sb.n_nodes = 2;
    REQUIRE_OK(node_model_mgr_train_shards(a->m, &sa, co_on_shards, a));
    REQUIRE_OK(node_model_mgr_train_shards(b->m, &sb, co_on_shards, b));
    CHECK_EQ(co_stats(a).training, 1);
    co_wait(a, co_shards_done);
    co_wait(b, co_shards_done);
    REQUIRE_EQ(a->shard_status, SM_OK);
    REQUIRE_EQ(b->shard_status, SM_OK);
    REQUIRE_EQ(a->n_shards, 2);
    REQUIRE_EQ(b->n_shards, 2);
    CHECK_STR(a->node[0], nodes_a[0]);
    CHECK_STR(b->node[1], nodes_b[1]);
    CHECK_EQ(a->cbn_version, b->cbn_version);
    CHECK_EQ(a->cbn_size, b->cbn_size);
    CHECK(a->cbn_size > 0);
    CHECK(memcmp(a->cbn_digest, b->cbn_digest, 32) == 0);

    /* Every peer installs all four, in its own order. */
    const uint8_t *blobs[4] = {a->blob[0], a->blob[1], b->blob[0], b->blob[1]};
    size_t lens[4] = {a->len[0], a->len[1], b->len[0], b->len[1]};
    const uint8_t *blobs_r[4] = {b->blob[1], a->blob[1], b->blob[0],
                                 a->blob[0]};
    size_t lens_r[4] = {b->len[1], a->len[1], b->len[0], a->len[0]};

    /* Bound by the log to another CBN than the one the round's windows
     * make: refused before anything is assembled. */
    struct node_model_round_spec other = *spec;
    memset(other.cbn_digest, 0xAB, sizeof other.cbn_digest);
    REQUIRE_OK(node_model_mgr_install_shards(b->m, &other, blobs_r, lens_r, 4,
                                             co_on_installed, b));
    co_wait(b, co_installed);
    CHECK_EQ(b->install_status, SM_ECONFLICT);
    CHECK(strstr(b->install_err, "CBN abababababababab") != NULL);
    CHECK_EQ(node_model_mgr_version(b->m), prev);
    b->install_calls = 0;

    /* Bound to the round's CBN, as the leader commits it. */
    memcpy(spec->cbn_digest, a->cbn_digest, sizeof spec->cbn_digest);
    REQUIRE_OK(node_model_mgr_install_shards(a->m, spec, blobs, lens, 4,
                                             co_on_installed, a));
    REQUIRE_OK(node_model_mgr_install_shards(b->m, spec, blobs_r, lens_r, 4,
                                             co_on_installed, b));
    co_wait(a, co_installed);
    co_wait(b, co_installed);
    REQUIRE_EQ(a->install_status, SM_OK);
    REQUIRE_EQ(b->install_status, SM_OK);
    CHECK_EQ(a->install_version, round);
    CHECK_EQ(node_model_mgr_version(a->m), round);
    CHECK_EQ(node_model_mgr_version(b->m), round);
}

/* Nodes split between two peers: the shards install on both as one model,
 * bit for bit the one gvae_train makes on the same windows, first from
 * scratch and then incrementally from it. Remote windows are not
 * diagnosed; an older install is refused. */
static void test_shards_install(void)
{
    co_setup();
    co_windows();
    co_start(&peers[0], "a");
    co_start(&peers[1], "b");
    struct co_peer *a = &peers[0], *b = &peers[1];
    co_feed(a, 0, CO_WINDOWS, 0);
    co_feed(b, 0, CO_WINDOWS, NODE_MODEL_REMOTE);

    static const char *const half_a[2] = {"a-front", "c-db"};
    static const char *const half_b[2] = {"b-mid", "d-cache"};
    struct node_model_round_spec spec;
    co_round(1, 0, half_a, half_b, &spec);
    struct node_model_mgr_stats st = co_stats(a);
    CHECK_EQ(st.shard_rounds, 1);
    CHECK_EQ(st.installs, 1);
    CHECK_EQ(st.model_version, 1);
    CHECK_EQ(st.windows_new, 0);
    CHECK_EQ(st.training, 0);
    CHECK_EQ(node_model_mgr_round_due(a->m, spec.to_ns), 0);

    size_t la = 0, lb = 0, lr = 0;
    uint8_t *ca = co_checkpoint(a, &la), *cb = co_checkpoint(b, &lb);
    REQUIRE(ca != NULL && cb != NULL && la > 28);
    CHECK_EQ(la, lb);
    CHECK(la == lb && memcmp(ca, cb, la) == 0);
    uint8_t *ref = reference_model(CO_WINDOWS, 0, NULL, GVAE_RETRAIN_FULL, &lr);
    CHECK_EQ(la - 28, lr);
    CHECK(la - 28 == lr && memcmp(ca + 28, ref, lr) == 0);
    struct gvae_model *v1 = NULL;
    char err[SM_ERRMSG_SIZE];
    REQUIRE_OK(gvae_model_load(ref, lr, 0, &v1, err));
    free(ca);
    free(cb);
    sm_free(ref);

    /* A violated window replicated to B is B's to keep, not to diagnose;
     * A, where it was made, diagnoses it. */
    syn_make(&co_win[CO_WINDOWS], &rng, CO_WINDOWS, SYN_CPU, 2, 1.2, TARGET_MS);
    REQUIRE(co_win[CO_WINDOWS].w.qos_violated);
    co_feed(b, CO_WINDOWS, CO_WINDOWS + 1, NODE_MODEL_REMOTE);
    CHECK_EQ(co_stats(b).diagnoses_pending, 0);
    co_feed(a, CO_WINDOWS, CO_WINDOWS + 1, 0);
    CHECK_EQ(co_stats(a).diagnoses_pending, 1);
    co_wait(a, co_diagnosed);
    CHECK_EQ(co_stats(a).diagnoses, 1);

    /* Round 2 continues model 1 on 16 more windows, the halves swapped. */
    co_feed(a, CO_WINDOWS + 1, CO_WINDOWS + 17, 0);
    co_feed(b, CO_WINDOWS + 1, CO_WINDOWS + 17, NODE_MODEL_REMOTE);
    CHECK_EQ(node_model_mgr_round_due(a->m, spec.to_ns), 1);
    co_round(2, 1, half_b, half_a, &spec);
    ca = co_checkpoint(a, &la);
    cb = co_checkpoint(b, &lb);
    REQUIRE(ca != NULL && cb != NULL && la > 28);
    CHECK(la == lb && memcmp(ca, cb, la) == 0);
    ref =
        reference_model(CO_WINDOWS + 17, 17, v1, GVAE_RETRAIN_INCREMENTAL, &lr);
    CHECK_EQ(la - 28, lr);
    CHECK(la - 28 == lr && memcmp(ca + 28, ref, lr) == 0);
    free(ca);
    free(cb);
    sm_free(ref);
    gvae_model_free(v1);

    /* A replayed install never goes back. */
    const uint8_t *blobs[1] = {a->blob[0]};
    size_t lens[1] = {a->len[0]};
    spec.round = 1;
    spec.prev_version = 0;
    CHECK_EQ(node_model_mgr_install_shards(b->m, &spec, blobs, lens, 1,
                                           co_on_installed, b),
             SM_EEXIST);
    CHECK_EQ(node_model_mgr_version(b->m), 2);
    co_teardown();
}

/* A peer missing a window, or lacking the model a round continues, refuses
 * it with a status the mesh can act on; bad specs are refused at once. */
static void test_round_refused(void)
{
    co_setup();
    co_windows();
    co_start(&peers[0], "a");
    co_start(&peers[2], "c");
    struct co_peer *a = &peers[0], *c = &peers[2];
    co_feed(a, 0, CO_WINDOWS, 0);
    co_feed(c, 0, 50, NODE_MODEL_REMOTE);
    co_feed(c, 51, CO_WINDOWS, NODE_MODEL_REMOTE);

    static const char *const nodes[2] = {"a-front", "b-mid"};
    struct node_model_round_spec spec = {
        .round = 1, .nodes = nodes, .n_nodes = 2};
    REQUIRE_OK(node_model_mgr_round_windows(a->m, &spec.from_ns, &spec.to_ns,
                                            &spec.n_windows, spec.digest));
    REQUIRE_OK(node_model_mgr_train_shards(c->m, &spec, co_on_shards, c));
    co_wait(c, co_shards_done);
    CHECK_EQ(c->shard_status, SM_ENOTFOUND);
    CHECK(strstr(c->shard_err, "95 windows") != NULL);
    CHECK_EQ(co_stats(c).shard_failures, 1);

    /* Same count, another digest: window 50 replaced by a later one. */
    co_feed(c, CO_WINDOWS, CO_WINDOWS + 1, NODE_MODEL_REMOTE);
    struct node_model_round_spec wide = spec;
    wide.to_ns = co_win[CO_WINDOWS].w.end_ns;
    c->shard_calls = 0;
    REQUIRE_OK(node_model_mgr_train_shards(c->m, &wide, co_on_shards, c));
    co_wait(c, co_shards_done);
    CHECK_EQ(c->shard_status, SM_ENOTFOUND);
    CHECK(strstr(c->shard_err, "another digest") != NULL);

    uint8_t junk[16] = {0};
    const uint8_t *blobs[1] = {junk};
    size_t lens[1] = {sizeof junk};
    REQUIRE_OK(node_model_mgr_install_shards(c->m, &spec, blobs, lens, 1,
                                             co_on_installed, c));
    co_wait(c, co_installed);
    CHECK_EQ(c->install_status, SM_ENOTFOUND);
    CHECK_EQ(c->install_version, 1);
    CHECK_EQ(co_stats(c).install_failures, 1);
    CHECK_EQ(node_model_mgr_version(c->m), 0);

    /* Continuing a model this peer does not have. */
    struct node_model_round_spec later = spec;
    later.round = 6;
    later.prev_version = 5;
    REQUIRE_OK(node_model_mgr_train_shards(a->m, &later, co_on_shards, a));
    co_wait(a, co_shards_done);
    CHECK_EQ(a->shard_status, SM_ECONFLICT);

    /* A node the round's CBN does not have. */
    static const char *const ghost[1] = {"zz-ghost"};
    struct node_model_round_spec bad = spec;
    bad.nodes = ghost;
    bad.n_nodes = 1;
    a->shard_calls = 0;
    REQUIRE_OK(node_model_mgr_train_shards(a->m, &bad, co_on_shards, a));
    co_wait(a, co_shards_done);
    CHECK_EQ(a->shard_status, SM_EINVAL);
    CHECK(strstr(a->shard_err, "zz-ghost") != NULL);

    /* Refused before queueing: the callback never runs. */
    a->shard_calls = 0;
    bad = spec;
    bad.round = 0;
    CHECK_EQ(node_model_mgr_train_shards(a->m, &bad, co_on_shards, a),
             SM_EINVAL);
    static const char *const twice[2] = {"b-mid", "b-mid"};
    bad = spec;
    bad.nodes = twice;
    CHECK_EQ(node_model_mgr_train_shards(a->m, &bad, co_on_shards, a),
             SM_EINVAL);
    bad = spec;
    bad.prev_version = 1;
    CHECK_EQ(node_model_mgr_train_shards(a->m, &bad, co_on_shards, a),
             SM_EINVAL);
    CHECK_EQ(node_model_mgr_install_shards(a->m, &spec, blobs, lens, 0,
                                           co_on_installed, a),
             SM_EINVAL);
    CHECK_EQ(a->shard_calls, 0);
    co_teardown();
}

static const struct check_test tests[] = {
    {"bad config is refused with a message", test_bad_config},
    {"trains, diagnoses, retrains; intake goes on while training",
     test_train_diagnose_retrain},
    {"a second manager reloads the checkpoint", test_checkpoint_reload},
    {"a corrupt checkpoint is ignored", test_corrupt_checkpoint},
    {"close while training is clean", test_close_while_training},
    {"history is bounded", test_history_bound},
    {"replicated windows give one round digest", test_round_windows},
    {"shards of two peers install one model", test_shards_install},
    {"a round is refused without its windows or model", test_round_refused},
};

CHECK_MAIN(tests, setup, teardown)
