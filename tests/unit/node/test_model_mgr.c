/* Tests for the model manager: training policy, diagnoses off the loop,
 * intake during training, checkpoints and restart, queue bounds, close. */
#include <stdio.h>
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
    CHECK_EQ(seen.diagnoses, 2);
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

static const struct check_test tests[] = {
    {"bad config is refused with a message", test_bad_config},
    {"trains, diagnoses, retrains; intake goes on while training",
     test_train_diagnose_retrain},
    {"a second manager reloads the checkpoint", test_checkpoint_reload},
    {"a corrupt checkpoint is ignored", test_corrupt_checkpoint},
    {"close while training is clean", test_close_while_training},
    {"history is bounded", test_history_bound},
};

CHECK_MAIN(tests, setup, teardown)
