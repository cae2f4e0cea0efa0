/* The model manager behind the mesh's training rounds. See mesh_model.h. */
#include "node/mesh_model.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "base/alloc.h"
#include "base/log.h"

#define MOD "train"

_Static_assert(CBN_NODE_NAME_CAP == CONS_NAME_MAX + 1,
               "node names: the model manager's and the log's room differ");

/* Trainings in flight at once: the manager runs one and keeps one waiting
 * (a newer request replaces the waiting one, which still reports). */
#define SLOTS 16

struct slot
{
    struct node_mesh_model *mm;
    uint64_t job; /* 0: free */
};

struct node_mesh_model
{
    struct node_model_mgr *mgr;
    struct cbn_log *log;
    struct node_mesh *mesh;
    struct slot slots[SLOTS];
    void (*on_install)(void *arg,
                       uint64_t version,
                       int status,
                       const char *errmsg);
    void *on_install_arg;
    void (*on_window)(void *arg, const struct cbn_window *w);
    void *on_window_arg;
    uint64_t remote_stored, remote_store_errors;
};

int node_mesh_model_new(struct node_model_mgr *mgr,
                        struct cbn_log *log,
                        struct node_mesh_model **out)
{
    struct node_mesh_model *mm = sm_calloc(1, sizeof *mm);
    if (mm == NULL) {
        return SM_ENOMEM;
    }
    mm->mgr = mgr;
    mm->log = log;
    for (size_t i = 0; i < SLOTS; i++) {
        mm->slots[i].mm = mm;
    }
    *out = mm;
    return SM_OK;
}

void node_mesh_model_attach(struct node_mesh_model *mm, struct node_mesh *mesh)
{
    mm->mesh = mesh;
}

void node_mesh_model_on_install(
    struct node_mesh_model *mm,
    void (*cb)(void *arg, uint64_t version, int status, const char *errmsg),
    void *arg)
{
    mm->on_install = cb;
    mm->on_install_arg = arg;
}

void node_mesh_model_on_window(struct node_mesh_model *mm,
                               void (*cb)(void *arg,
                                          const struct cbn_window *w),
                               void *arg)
{
    mm->on_window = cb;
    mm->on_window_arg = arg;
}

void node_mesh_model_free(struct node_mesh_model *mm)
{
    sm_free(mm);
}

static struct node_train *rounds(struct node_mesh_model *mm)
{
    return mm->mesh != NULL ? node_mesh_train(mm->mesh) : NULL;
}

static void to_model_spec(const struct node_train_spec *in,
                          struct node_model_round_spec *out)
{
    memset(out, 0, sizeof *out);
    out->round = in->round;
    out->from_ns = in->from_ns;
    out->to_ns = in->to_ns;
    out->n_windows = (size_t)in->n_windows;
    memcpy(out->digest, in->digest, sizeof out->digest);
    out->prev_version = in->prev_version;
}

static int e_round_windows(void *arg, struct node_train_spec *spec)
{
    struct node_mesh_model *mm = arg;
    memset(spec, 0, sizeof *spec);
    size_t n = 0;
    int rv = node_model_mgr_round_windows(mm->mgr, &spec->from_ns, &spec->to_ns,
                                          &n, spec->digest);
    spec->n_windows = n;
    return rv;
}

static int e_round_due(void *arg)
{
    struct node_mesh_model *mm = arg;
    struct node_model_mgr_stats st;
    node_model_mgr_stats(mm->mgr, &st);
    return node_model_mgr_round_due(mm->mgr, st.trained_until_ns);
}

static int e_round_nodes(void *arg,
                         const struct node_train_spec *spec,
                         char (*names)[CONS_NAME_MAX + 1],
                         size_t cap,
                         size_t *n)
{
    struct node_mesh_model *mm = arg;
    struct node_model_round_spec ms;
    to_model_spec(spec, &ms);
    return node_model_mgr_round_nodes(mm->mgr, &ms, names, cap, n);
}

static void on_shards(void *arg, const struct node_model_shards *r)
{
    struct slot *s = arg;
    struct node_mesh_model *mm = s->mm;
    uint64_t job = s->job;
    s->job = 0;
    struct node_train *t = rounds(mm);
    if (t == NULL) {
        return;
    }
    struct node_train_shard sh[CONS_LIST_MAX];
    size_t n = r->n < CONS_LIST_MAX ? r->n : CONS_LIST_MAX;
    for (size_t i = 0; i < n; i++) {
        sh[i] = (struct node_train_shard){r->shards[i].node, r->shards[i].blob,
                                          r->shards[i].len};
    }
    struct node_train_result res = {
        .status = r->status,
        .errmsg = r->errmsg,
        .cbn_size = r->cbn_size,
        .n = n,
        .shards = sh,
    };
    memcpy(res.cbn_digest, r->cbn_digest, sizeof res.cbn_digest);
    if (r->status == SM_OK) {
        sm_log(SM_LOG_INFO, MOD, "shards trained",
               "round=%" PRIu64 " shards=%zu seconds=%.2f", r->round, n,
               r->seconds);
    }
    node_train_trained(t, job, &res);
}

static int e_train(void *arg,
                   uint64_t job,
                   const struct node_train_spec *spec,
                   const char *const *nodes,
                   size_t n)
{
    struct node_mesh_model *mm = arg;
    struct slot *s = NULL;
    for (size_t i = 0; i < SLOTS && s == NULL; i++) {
        s = mm->slots[i].job == 0 ? &mm->slots[i] : NULL;
    }
    if (s == NULL) {
        return SM_EAGAIN;
    }
    struct node_model_round_spec ms;
    to_model_spec(spec, &ms);
    ms.nodes = nodes;
    ms.n_nodes = n;
    int rv = node_model_mgr_train_shards(mm->mgr, &ms, on_shards, s);
    if (rv == SM_OK) {
        s->job = job;
    }
    return rv;
}

static void on_installed(void *arg,
                         uint64_t version,
                         int status,
                         const char *errmsg)
{
    struct node_mesh_model *mm = arg;
    if (mm->on_install != NULL) {
        mm->on_install(mm->on_install_arg, version, status, errmsg);
    }
    struct node_train *t = rounds(mm);
    if (t != NULL) {
        node_train_installed(t, version, status, errmsg);
    }
}

static int e_install(void *arg,
                     const struct node_train_spec *spec,
                     const struct cons_digest *cbn,
                     const uint8_t *const *blobs,
                     const size_t *lens,
                     size_t n)
{
    struct node_mesh_model *mm = arg;
    struct node_model_round_spec ms;
    to_model_spec(spec, &ms);
    _Static_assert(sizeof ms.cbn_digest == sizeof cbn->b,
                   "CBN digests: the model manager's and the log's differ");
    memcpy(ms.cbn_digest, cbn->b, sizeof ms.cbn_digest);
    return node_model_mgr_install_shards(mm->mgr, &ms, blobs, lens, n,
                                         on_installed, mm);
}

static uint64_t e_model_version(void *arg)
{
    struct node_mesh_model *mm = arg;
    return node_model_mgr_version(mm->mgr);
}

static void e_each_window(void *arg,
                          uint64_t from_ns,
                          uint64_t to_ns,
                          int (*cb)(void *cb_arg, const uint8_t *w, size_t len),
                          void *cb_arg)
{
    struct node_mesh_model *mm = arg;
    node_model_mgr_each_window(mm->mgr, from_ns, to_ns, cb, cb_arg);
}

static int e_add_window(void *arg,
                        const uint8_t *data,
                        size_t len,
                        uint64_t *end_ns)
{
    struct node_mesh_model *mm = arg;
    struct cbn_window *w;
    int rv = cbn_window_decode(data, len, &w);
    if (rv != SM_OK) {
        sm_log(SM_LOG_WARN, MOD, "a replicated window is unreadable: dropped",
               "error=%s bytes=%zu", sm_errname(rv), len);
        return rv;
    }
    *end_ns = w->end_ns;
    struct node_model_mgr_stats before, after;
    node_model_mgr_stats(mm->mgr, &before);
    rv = node_model_mgr_window(mm->mgr, w, NODE_MODEL_REMOTE);
    node_model_mgr_stats(mm->mgr, &after);
    int fresh =
        rv == SM_OK && after.windows_duplicate == before.windows_duplicate;
    if (fresh && mm->log != NULL) {
        char err[SM_ERRMSG_SIZE] = "";
        if (cbn_log_append(mm->log, w->end_ns, data, len, err) == SM_OK) {
            mm->remote_stored++;
        } else if (mm->remote_store_errors++ % 100 == 0) {
            sm_log(SM_LOG_WARN, MOD,
                   "cannot store a replicated window: it is lost on restart",
                   "cause=\"%s\"", err);
        }
    }
    if (fresh && mm->on_window != NULL) {
        mm->on_window(mm->on_window_arg, w);
    }
    cbn_window_free(w);
    return rv;
}

void node_mesh_model_env(struct node_mesh_model *mm, struct node_train_env *env)
{
    env->arg = mm;
    env->round_windows = e_round_windows;
    env->round_due = e_round_due;
    env->round_nodes = e_round_nodes;
    env->train = e_train;
    env->install = e_install;
    env->model_version = e_model_version;
    env->each_window = e_each_window;
    env->add_window = e_add_window;
}

struct replay
{
    struct node_model_mgr *mgr;
    uint64_t n;
};

static int replay_one(void *arg,
                      uint64_t time_ns,
                      const uint8_t *payload,
                      size_t len)
{
    struct replay *r = arg;
    (void)time_ns;
    struct cbn_window *w;
    if (cbn_window_decode(payload, len, &w) != SM_OK) {
        return 0; /* counted by the log's own checks; skip */
    }
    if (node_model_mgr_window(
            r->mgr, w, NODE_MODEL_REPLAYED | NODE_MODEL_REMOTE) == SM_OK) {
        r->n++;
    }
    cbn_window_free(w);
    return 0;
}

uint64_t node_mesh_model_replay(struct cbn_log *log, struct node_model_mgr *mgr)
{
    struct replay r = {mgr, 0};
    if (cbn_log_replay(log, replay_one, &r) != SM_OK) {
        sm_log(SM_LOG_WARN, MOD, "replaying the replicated windows failed",
               NULL);
    }
    return r.n;
}
