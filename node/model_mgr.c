/* The peer's model manager: window history, training rounds and diagnoses
 * off the loop.
 *
 * Threads and ownership. Three threads touch a manager:
 *
 *   - the loop thread owns the history, the policy counters, the statistics
 *     and the callbacks;
 *   - the compute thread runs gvae_diagnose() for queued windows;
 *   - the training thread runs gvae_train() for a snapshot of the history,
 *     and owns the CBN it builds from the windows it is given.
 *
 * History windows are immutable copies, shared by reference: a snapshot or
 * a diagnosis job holds references to them, so a training round copies
 * pointers, not windows, and the loop may drop a window from the history
 * while a round still reads it. Reference counts change only on the loop
 * thread: jobs take their references when queued and give them back when
 * their results are delivered, so the counts need no lock.
 *
 * The current model (with the normal values computed from its training
 * windows) sits behind a reference-counted slot under the mutex: the
 * compute thread takes a reference for each diagnosis, the training thread
 * one to warm-start from, and a finished round swaps in its new model; the
 * old one is freed by whoever drops the last reference. So the current model
 * keeps serving diagnoses while a round trains.
 *
 * Jobs go to the threads through the mutex and two condition variables;
 * results come back through the mutex and one uv_async handle, which
 * coalesces, so its callback drains every finished job. Closing sets a stop
 * flag; each thread finishes the job in hand, counts itself out and pokes
 * the async handle; once both are out the loop joins them (without
 * blocking) and closes the handle.
 *
 * History order. The history ring is kept sorted by window end: a window
 * is inserted in place (windows replicated from other peers may arrive a
 * little out of order; the common case, a newest window, costs nothing),
 * and ends are unique (a second window with a held end is ignored). So a
 * range of ends is a contiguous run of the ring found by binary search, and
 * every peer holding the same windows sees them in the same order. Each
 * window's round-digest leaf is computed once, from the encoding the copy
 * is made from (model_mgr.h, "Coordinated rounds").
 *
 * Coordinated jobs. node_model_mgr_train_shards() and
 * node_model_mgr_install_shards() queue jobs for the training thread in two
 * one-job slots (a newer request replaces the waiting one of its kind, whose
 * callback then reports SM_EAGAIN); the thread takes an install first, then
 * a shard job, then an automatic round, one at a time. A coordinated job
 * never touches the training thread's running CBN: it builds a fresh one
 * from exactly the round's windows, so every peer gets the same graph,
 * version and node order.
 *
 * Why the shards of different peers fit together. Every owner of a round
 * trains with the same config on the same windows (same digest) and the
 * same fresh CBN; what it continues from is the model of version
 * prev_version, which every peer installed from the same shards (or
 * reloaded from its checkpoint of it), so it is the same model everywhere;
 * the incremental or partial choice depends only on that model and the
 * CBN. gvae_train_nodes() then computes every node's plan and statistics
 * as gvae_train() would. A peer whose current model is not prev_version
 * must not train its nodes from scratch instead: warm-started nodes copy
 * their statistics from the previous model while nodes trained from
 * scratch recompute them from the windows, so a from-scratch shard's
 * parent statistics would not match the others' (gvae_model_assemble()
 * refuses that) or, where no parent links them, the model would silently
 * mix two trainings that no single gvae_train() call makes. Such a peer
 * answers SM_ECONFLICT and the mesh moves its nodes or retries. */
#include "node/model_mgr.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/crc32c.h"
#include "base/le.h"
#include "base/log.h"
#include "transport/transport.h"

#define MOD "model"

/* Checkpoint file: header, then the gvae checkpoint (which has its own
 * CRC). Header, little-endian:
 *   magic "SMMODEL1" | model_version u64 | trained_until_ns u64 |
 *   crc32c u32 of the 24 bytes before it */
#define CKPT_MAGIC    "SMMODEL1"
#define CKPT_HEADER   28
#define CKPT_MAX_SIZE ((size_t)1 << 31)

#define N_THREADS 2

#define HASH_SIZE 32 /* BLAKE2b-256 */

/* BLAKE2b-256, unkeyed, 32-byte output (transport's digest): the round
 * digests' hash. */
struct hash
{
    struct tp_digest_state st;
};

static void hash_init(struct hash *h)
{
    tp_digest_init(&h->st);
}

static void hash_update(struct hash *h, const void *p, size_t len)
{
    tp_digest_update(&h->st, p, len);
}

static void hash_final(struct hash *h, uint8_t out[HASH_SIZE])
{
    tp_digest_final(&h->st, out);
}

/* One window of the history. */
struct hwin
{
    struct cbn_window *w;    /* immutable once shared */
    uint8_t leaf[HASH_SIZE]; /* its round-digest leaf */
    unsigned refs;           /* loop thread only */
    int diagnosed;           /* a diagnosis was queued (loop thread) */
};

/* A model and what it diagnoses with. */
struct model_ref
{
    struct gvae_model *model;
    struct cbn_normals *normals; /* NULL for a loaded checkpoint */
    uint64_t version;
    uint64_t trained_until_ns; /* newest window end it was trained on */
    unsigned refs;             /* under the mutex */
};

struct diag_job
{
    struct diag_job *next;
    struct hwin *h;
    uint64_t tag; /* 0: a violated window; else node_model_mgr_diagnose's */
    uint64_t queued_ns; /* uv_hrtime() */
    int status;
    char errmsg[SM_ERRMSG_SIZE];
    struct gvae_diagnosis *diagnosis;
    uint64_t model_version;
    double compute_s; /* the diagnosis itself, on the compute thread */
};

struct round_job
{
    struct hwin **win; /* the snapshot, oldest first */
    size_t n;
    int status;
    char errmsg[SM_ERRMSG_SIZE];
    enum gvae_retrain mode;
    uint64_t version;
    size_t params;
    size_t n_new;
    uint64_t trained_until_ns;
    struct gvae_train_report report;
    int ckpt_status;
};

enum coord_kind { COORD_SHARDS, COORD_INSTALL };

/* A coordinated job: node_model_mgr_train_shards() or
 * node_model_mgr_install_shards(). */
struct coord_job
{
    struct coord_job *next;
    enum coord_kind kind;
    struct node_model_round_spec spec; /* nodes points to @nodes */
    char **nodes;                      /* spec.n_nodes copies */
    uint8_t **blobs; /* install: the copied shards; train: the exports,
                        one per spec node */
    size_t *lens;
    size_t n_blobs;
    struct hwin **win; /* history windows in (from_ns, to_ns], oldest first */
    size_t n;
    node_model_shards_cb shards_cb;
    node_model_installed_cb installed_cb;
    void *arg;
    /* Results, written by the training thread. */
    int status;
    char errmsg[SM_ERRMSG_SIZE];
    uint64_t cbn_version;
    uint8_t cbn_digest[HASH_SIZE];
    uint64_t cbn_size;
    double seconds;
    enum gvae_retrain mode;
    size_t params;
    int ckpt_status;
};

struct node_model_mgr
{
    uv_loop_t *loop;
    uv_async_t async;
    struct node_model_mgr_config cfg; /* strings point to the copies below */
    char *qos_service;
    char *data_dir;
    struct gvae_sweep_config sweep;
    struct node_model_mgr_callbacks cb;

    /* Loop thread only. */
    struct hwin **hist;        /* ring of cfg.max_windows, sorted by end_ns */
    size_t head, count;        /* oldest at hist[head] */
    uint64_t since_round;      /* new windows since the last round began */
    uint64_t trained_until_ns; /* of the current model */
    int has_model, model_loaded;
    uint64_t model_version;
    size_t model_params;
    int running, requested;  /* a round is running; another is asked for */
    size_t ondemand_pending; /* node_model_mgr_diagnose_range jobs */
    size_t coord_pending;    /* coordinated jobs queued or running */
    uint64_t rounds_started;
    struct node_model_mgr_stats st;
    int closing, handle_closing;
    void (*closed_cb)(void *arg);
    void *closed_arg;

    /* Shared, under mu. */
    uv_mutex_t mu;
    uv_cond_t diag_cv, train_cv;
    struct diag_job *dq_head, *dq_tail;     /* to the compute thread */
    struct diag_job *oq_head, *oq_tail;     /* on-demand: after dq */
    struct round_job *rq;                   /* to the training thread */
    struct diag_job *done_head, *done_tail; /* back to the loop */
    struct round_job *round_done;
    struct coord_job *shards_q, *install_q;    /* waiting coordinated jobs */
    struct coord_job *cdone_head, *cdone_tail; /* back to the loop */
    struct model_ref *current;
    struct node_model_remote remote; /* begin NULL: none */

    /* Loop thread: the last window abducted for other peers' passes. */
    struct gvae_pass_server *pass_srv;
    struct model_ref *pass_ref;
    uint64_t pass_version, pass_end_ns;
    int stop;
    int exited; /* threads that have left their loop */

    /* Training thread only. */
    struct cbn_graph *graph;
    uint64_t graph_until_ns;      /* end of the newest window it observed */
    uint64_t model_graph_version; /* graph version the model was trained
                                     for; 0 unknown (loaded) */

    uv_thread_t threads[N_THREADS];
    int n_threads;
};

/* ---- Small helpers ------------------------------------------------------- */

/* The history's @i-th window (0: the oldest); i <= count < max_windows
 * addresses the free slot after the newest. */
static struct hwin **hist_slot(const struct node_model_mgr *m, size_t i)
{
    return &m->hist[(m->head + i) % m->cfg.max_windows];
}

/* How many history windows end at or before @end_ns (binary search). */
static size_t hist_rank(const struct node_model_mgr *m, uint64_t end_ns)
{
    size_t lo = 0, hi = m->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if ((*hist_slot(m, mid))->w->end_ns <= end_ns) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo;
}

/* BLAKE2b-256 of the concatenated leaves of @n windows: the round digest. */
static void round_digest(struct hwin *const *win,
                         size_t n,
                         uint8_t out[HASH_SIZE])
{
    struct hash h;
    hash_init(&h);
    for (size_t i = 0; i < n; i++) {
        hash_update(&h, win[i]->leaf, HASH_SIZE);
    }
    hash_final(&h, out);
}

static void hwin_release(struct hwin *h)
{
    if (h == NULL) {
        return;
    }
    SM_ASSERT(h->refs > 0);
    if (--h->refs == 0) {
        cbn_window_free(h->w);
        sm_free(h);
    }
}

static void model_ref_free(struct model_ref *r)
{
    if (r != NULL) {
        gvae_model_free(r->model);
        cbn_normals_free(r->normals);
        sm_free(r);
    }
}

/* Drops a reference taken under the mutex; call without holding it. */
static void model_ref_release(struct node_model_mgr *m, struct model_ref *r)
{
    if (r == NULL) {
        return;
    }
    uv_mutex_lock(&m->mu);
    SM_ASSERT(r->refs > 0);
    int last = --r->refs == 0;
    uv_mutex_unlock(&m->mu);
    if (last) {
        model_ref_free(r);
    }
}

/* Returns the current model with a reference taken, or NULL. */
static struct model_ref *model_ref_acquire_locked(struct node_model_mgr *m)
{
    struct model_ref *r = m->current;
    if (r != NULL) {
        r->refs++;
    }
    return r;
}

static void diag_job_free(struct diag_job *j)
{
    gvae_diagnosis_free(j->diagnosis);
    hwin_release(j->h);
    sm_free(j);
}

/* Loop thread (it gives back window references). */
static void coord_job_free(struct coord_job *j)
{
    if (j == NULL) {
        return;
    }
    for (size_t i = 0; i < j->n; i++) {
        hwin_release(j->win[i]);
    }
    sm_free(j->win);
    for (size_t k = 0; j->nodes != NULL && k < j->spec.n_nodes; k++) {
        sm_free(j->nodes[k]);
    }
    sm_free(j->nodes);
    for (size_t k = 0; j->blobs != NULL && k < j->n_blobs; k++) {
        sm_free(j->blobs[k]);
    }
    sm_free(j->blobs);
    sm_free(j->lens);
    sm_free(j);
}

static void round_job_free(struct round_job *j)
{
    if (j != NULL) {
        for (size_t i = 0; i < j->n; i++) {
            hwin_release(j->win[i]);
        }
        sm_free(j->win);
        sm_free(j);
    }
}

/* ---- Checkpoints --------------------------------------------------------- */

static int write_all(int fd, const uint8_t *p, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Writes @ref's model to <data_dir>/model.ckpt through a temporary file,
 * fsync and rename, then fsyncs the directory. Training thread. */
static int checkpoint_write(const struct node_model_mgr *m,
                            const struct model_ref *ref,
                            char errmsg[SM_ERRMSG_SIZE])
{
    uint8_t *blob = NULL;
    size_t len = 0;
    int rc = gvae_model_save(ref->model, &blob, &len);
    if (rc != SM_OK) {
        sm_errmsg_printf(errmsg, "checkpoint: %s", sm_strerror(rc));
        return rc;
    }
    uint8_t head[CKPT_HEADER];
    memcpy(head, CKPT_MAGIC, 8);
    sm_put_le64(head + 8, ref->version);
    sm_put_le64(head + 16, ref->trained_until_ns);
    sm_put_le32(head + 24, sm_crc32c(0, head, 24));

    char path[4096], tmp[4096];
    if (snprintf(path, sizeof path, "%s/%s", m->data_dir,
                 NODE_MODEL_CHECKPOINT) >= (int)sizeof path ||
        snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) {
        sm_free(blob);
        sm_errmsg_printf(errmsg, "checkpoint: path too long: %s", m->data_dir);
        return SM_EINVAL;
    }
    const char *step = "create";
    int err = 0;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        err = errno;
    } else {
        if (write_all(fd, head, sizeof head) != 0 ||
            write_all(fd, blob, len) != 0) {
            step = "write";
            err = errno;
        } else if (fsync(fd) != 0) {
            step = "fsync";
            err = errno;
        }
        if (close(fd) != 0 && err == 0) {
            step = "close";
            err = errno;
        }
        if (err == 0 && rename(tmp, path) != 0) {
            step = "rename";
            err = errno;
        }
    }
    sm_free(blob);
    if (err != 0) {
        unlink(tmp);
        sm_errmsg_printf(errmsg, "checkpoint: %s %s: %s", step, tmp,
                         strerror(err));
        return sm_err_from_errno(err);
    }
    int dfd = open(m->data_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || fsync(dfd) != 0) {
        err = errno;
        if (dfd >= 0) {
            close(dfd);
        }
        sm_errmsg_printf(errmsg, "checkpoint: fsync %s: %s", m->data_dir,
                         strerror(err));
        return sm_err_from_errno(err);
    }
    close(dfd);
    return SM_OK;
}

/* Reads the checkpoint, if any, into m->current. A missing file is no
 * error; anything else that goes wrong is logged and counted, and the
 * manager starts without a model. Called before the threads start. */
static void checkpoint_load(struct node_model_mgr *m)
{
    char path[4096];
    if (snprintf(path, sizeof path, "%s/%s", m->data_dir,
                 NODE_MODEL_CHECKPOINT) >= (int)sizeof path) {
        return;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno != ENOENT) {
            m->st.checkpoint_failures++;
            sm_log(SM_LOG_WARN, MOD, "cannot open the model checkpoint",
                   "path=\"%s\" cause=\"%s\"", path, strerror(errno));
        }
        return;
    }
    char err[SM_ERRMSG_SIZE] = "";
    uint8_t *buf = NULL;
    struct stat sb;
    size_t len = 0;
    if (fstat(fd, &sb) != 0) {
        sm_errmsg_printf(err, "fstat: %s", strerror(errno));
    } else if (sb.st_size < CKPT_HEADER || (size_t)sb.st_size > CKPT_MAX_SIZE) {
        sm_errmsg_printf(err, "bad size %lld", (long long)sb.st_size);
    } else if ((buf = sm_malloc((size_t)sb.st_size)) == NULL) {
        sm_errmsg_printf(err, "out of memory");
    } else {
        while (len < (size_t)sb.st_size) {
            ssize_t n = read(fd, buf + len, (size_t)sb.st_size - len);
            if (n < 0 && errno == EINTR) {
                continue;
            }
            if (n <= 0) {
                sm_errmsg_printf(err, "read: %s",
                                 n < 0 ? strerror(errno) : "short file");
                break;
            }
            len += (size_t)n;
        }
    }
    close(fd);
    struct gvae_model *model = NULL;
    if (err[0] == '\0') {
        if (memcmp(buf, CKPT_MAGIC, 8) != 0 ||
            sm_get_le32(buf + 24) != sm_crc32c(0, buf, 24)) {
            sm_errmsg_printf(err, "bad header");
        } else if (gvae_model_load(buf + CKPT_HEADER, len - CKPT_HEADER, 0,
                                   &model, err) == SM_OK) {
            struct model_ref *r = sm_calloc(1, sizeof *r);
            if (r == NULL) {
                gvae_model_free(model);
                sm_errmsg_printf(err, "out of memory");
            } else {
                r->model = model;
                r->version = sm_get_le64(buf + 8);
                r->trained_until_ns = sm_get_le64(buf + 16);
                r->refs = 1;
                m->current = r;
            }
        }
    }
    if (m->current != NULL) {
        m->has_model = 1;
        m->model_loaded = 1;
        m->model_version = m->current->version;
        m->model_params = gvae_model_params(m->current->model);
        m->trained_until_ns = m->current->trained_until_ns;
        sm_log(SM_LOG_INFO, MOD, "model loaded",
               "path=\"%s\" version=%" PRIu64 " params=%zu", path,
               m->model_version, m->model_params);
    } else {
        m->st.checkpoint_failures++;
        sm_log(SM_LOG_WARN, MOD, "ignoring an unreadable model checkpoint",
               "path=\"%s\" cause=\"%s\"", path, err);
    }
    sm_free(buf);
}

/* ---- Threads ------------------------------------------------------------- */

static void thread_exit(struct node_model_mgr *m)
{
    uv_mutex_lock(&m->mu);
    m->exited++;
    uv_mutex_unlock(&m->mu);
    uv_async_send(&m->async);
}

static void compute_main(void *arg)
{
    struct node_model_mgr *m = arg;
    gvae_blas_set_threads(1);
    for (;;) {
        uv_mutex_lock(&m->mu);
        while (!m->stop && m->dq_head == NULL && m->oq_head == NULL) {
            uv_cond_wait(&m->diag_cv, &m->mu);
        }
        if (m->stop) {
            uv_mutex_unlock(&m->mu);
            break;
        }
        /* Violated windows first: an operator's request must not delay
         * (or crowd out) the live diagnoses. */
        struct diag_job **head = m->dq_head != NULL ? &m->dq_head : &m->oq_head;
        struct diag_job **tail = m->dq_head != NULL ? &m->dq_tail : &m->oq_tail;
        struct diag_job *j = *head;
        *head = j->next;
        if (*head == NULL) {
            *tail = NULL;
        }
        j->next = NULL;
        struct model_ref *ref = model_ref_acquire_locked(m);
        struct node_model_remote hook = m->remote;
        uv_mutex_unlock(&m->mu);
        uint64_t t0 = uv_hrtime();

        if (ref == NULL) {
            j->status = SM_ENOTFOUND;
            sm_errmsg_printf(j->errmsg, "diagnose: no model");
        } else if (hook.begin != NULL) {
            struct gvae_remote remote;
            struct gvae_remote_stats rs;
            void *ctx = NULL;
            hook.begin(hook.arg, ref->model, ref->version, j->h->w->end_ns,
                       ref->normals != NULL, &remote, &ctx);
            j->status = gvae_diagnose_remote(ref->model, j->h->w, ref->normals,
                                             &m->sweep, &remote, &rs,
                                             &j->diagnosis, j->errmsg);
            hook.end(hook.arg, ctx, &rs);
            j->model_version = ref->version;
        } else {
            j->status = gvae_diagnose(ref->model, j->h->w, ref->normals,
                                      &m->sweep, &j->diagnosis, j->errmsg);
            j->model_version = ref->version;
        }
        model_ref_release(m, ref);
        j->compute_s = (double)(uv_hrtime() - t0) / 1e9;

        uv_mutex_lock(&m->mu);
        if (m->done_tail != NULL) {
            m->done_tail->next = j;
        } else {
            m->done_head = j;
        }
        m->done_tail = j;
        uv_mutex_unlock(&m->mu);
        uv_async_send(&m->async);
    }
    thread_exit(m);
}

/* Trains on @j's snapshot, warm-starting from @prev (may be NULL), and on
 * success makes the new model current and checkpoints it. Training
 * thread. */

/* Whether the manager is closing: polled by gvae_train between steps. */
static int stopping(void *arg)
{
    struct node_model_mgr *m = arg;
    uv_mutex_lock(&m->mu);
    int stop = m->stop;
    uv_mutex_unlock(&m->mu);
    return stop;
}

/* Makes @ref (one reference, moved in) the current model, so diagnoses
 * from now on use it, and writes the checkpoint; returns the checkpoint's
 * status (SM_OK without a data directory). The training thread is the only
 * writer of m->current, so @ref stays valid here. */
static int make_current(struct node_model_mgr *m, struct model_ref *ref)
{
    uv_mutex_lock(&m->mu);
    struct model_ref *old = m->current;
    m->current = ref;
    uv_mutex_unlock(&m->mu);
    model_ref_release(m, old);
    if (m->data_dir == NULL) {
        return SM_OK;
    }
    char err[SM_ERRMSG_SIZE];
    int rc = checkpoint_write(m, ref, err);
    if (rc != SM_OK) {
        sm_log(SM_LOG_ERROR, MOD, "cannot write the model checkpoint",
               "cause=\"%s\"", err);
    }
    return rc;
}

static void run_round(struct node_model_mgr *m,
                      struct round_job *j,
                      struct model_ref *prev)
{
    j->errmsg[0] = '\0';
    j->ckpt_status = SM_OK;
    j->version = prev != NULL ? prev->version : 0;
    j->mode = GVAE_RETRAIN_FULL;
    const struct cbn_window **wins = sm_calloc(j->n + 1, sizeof *wins);
    struct cbn_normals *normals = NULL;
    int rc = wins != NULL ? SM_OK : SM_ENOMEM;
    if (rc == SM_OK && m->graph == NULL) {
        rc = cbn_graph_new(NULL, &m->graph);
    }
    if (rc == SM_OK) {
        rc = cbn_normals_new(&normals);
    }
    uint64_t until = prev != NULL ? prev->trained_until_ns : 0;
    uint64_t newest = 0;
    size_t n_new = 0;
    for (size_t i = 0; rc == SM_OK && i < j->n; i++) {
        const struct cbn_window *w = j->win[i]->w;
        wins[i] = w;
        /* The snapshot is in end order; a window that arrived after the
         * graph saw newer ones is left out of the graph (not the data). */
        if (w->end_ns > m->graph_until_ns) {
            int changed = 0;
            rc = cbn_graph_observe(m->graph, w, &changed);
            m->graph_until_ns = w->end_ns;
        }
        if (rc == SM_OK) {
            rc = cbn_normals_observe(normals, w);
        }
        n_new += w->end_ns > until;
        newest = w->end_ns > newest ? w->end_ns : newest;
    }
    if (rc != SM_OK) {
        sm_errmsg_printf(j->errmsg, "train: %s preparing the snapshot",
                         sm_strerror(rc));
    }
    uint64_t gv = m->graph != NULL ? cbn_graph_version(m->graph) : 0;
    if (prev != NULL) {
        j->mode = gv != m->model_graph_version ? GVAE_RETRAIN_PARTIAL
                                               : GVAE_RETRAIN_INCREMENTAL;
    }
    j->n_new = prev != NULL ? n_new : j->n;
    struct gvae_model *model = NULL;
    struct gvae_config train = m->cfg.train;
    train.should_stop = stopping; /* closing need not wait for the round */
    train.stop_arg = m;
    if (rc == SM_OK) {
        rc = gvae_train(&train, m->graph, wins, j->n, prev != NULL ? n_new : 0,
                        prev != NULL ? prev->model : NULL, j->mode, &model,
                        &j->report, j->errmsg);
    }
    /* A partial round keeps every node whose structure is unchanged; when
     * that is all of them (a loaded model, whose CBN version is unknown,
     * on the same services) it learned nothing from the new windows: train
     * them incrementally instead. */
    if (rc == SM_OK && j->mode == GVAE_RETRAIN_PARTIAL &&
        j->report.nodes_trained == 0 && j->report.nodes_finetuned == 0) {
        gvae_model_free(model);
        model = NULL;
        j->mode = GVAE_RETRAIN_INCREMENTAL;
        rc = gvae_train(&train, m->graph, wins, j->n, n_new, prev->model,
                        j->mode, &model, &j->report, j->errmsg);
    }
    sm_free(wins);
    struct model_ref *ref = NULL;
    if (rc == SM_OK) {
        ref = sm_calloc(1, sizeof *ref);
        if (ref == NULL) {
            rc = SM_ENOMEM;
            sm_errmsg_printf(j->errmsg, "train: out of memory");
            gvae_model_free(model);
        }
    }
    j->status = rc;
    if (rc != SM_OK) {
        cbn_normals_free(normals);
        return;
    }
    ref->model = model;
    ref->normals = normals;
    ref->version = j->version + 1;
    ref->trained_until_ns = newest;
    ref->refs = 1;
    j->version = ref->version;
    j->params = gvae_model_params(model);
    j->trained_until_ns = newest;
    m->model_graph_version = gv;
    j->ckpt_status = make_current(m, ref);
}

/* ---- Coordinated jobs (training thread) --------------------------------- */

/* Feeds one line of the canonical CBN text to @st: the non-NULL words of
 * @a, @b, @c separated by one space, then a newline; adds its length to
 * *@size. */
static void text_piece(struct hash *st,
                       uint64_t *size,
                       const char *a,
                       const char *b,
                       const char *c)
{
    const char *parts[3] = {a, b, c};
    for (int k = 0; k < 3 && parts[k] != NULL; k++) {
        if (k > 0) {
            hash_update(st, " ", 1);
            *size += 1;
        }
        size_t len = strlen(parts[k]);
        hash_update(st, parts[k], len);
        *size += len;
    }
    hash_update(st, "\n", 1);
    *size += 1;
}

/* The BLAKE2b-256 and length of the canonical text of @g (model_mgr.h,
 * struct node_model_shards), hashed as it is produced. */
static void cbn_text_digest(const struct cbn_graph *g,
                            uint8_t digest[HASH_SIZE],
                            uint64_t *size)
{
    struct hash st;
    hash_init(&st);
    *size = 0;
    for (size_t i = 0; i < cbn_graph_node_count(g); i++) {
        const struct cbn_graph_node *nd = cbn_graph_node(g, i);
        text_piece(&st, size, "node", nd->name, NULL);
        for (size_t k = 0; k < nd->n_members; k++) {
            text_piece(&st, size, "member", nd->members[k], NULL);
        }
        for (size_t k = 0; k < nd->n_parents; k++) {
            text_piece(&st, size, "parent",
                       cbn_graph_node(g, nd->parents[k])->name, NULL);
        }
        for (size_t k = 0; k < nd->n_links; k++) {
            const struct cbn_graph_link *l = cbn_graph_link(g, nd->links[k]);
            text_piece(&st, size, "link", l->caller, l->callee);
        }
    }
    hash_final(&st, digest);
}

/* Checks @j's windows against its spec and builds the round's CBN from
 * them, in order, into *@graph, with the windows in *@wins (both owned by
 * the caller). Fills the job's CBN version, digest and size. */
static int round_prepare(struct coord_job *j,
                         struct cbn_graph **graph,
                         const struct cbn_window ***wins)
{
    const struct node_model_round_spec *s = &j->spec;
    uint8_t digest[HASH_SIZE];
    round_digest(j->win, j->n, digest);
    if (j->n != s->n_windows || memcmp(digest, s->digest, HASH_SIZE) != 0) {
        sm_errmsg_printf(j->errmsg,
                         "round %" PRIu64
                         ": this peer has %zu windows in (%" PRIu64 ", %" PRIu64
                         "], the leader %zu%s",
                         s->round, j->n, s->from_ns, s->to_ns, s->n_windows,
                         j->n == s->n_windows ? " with another digest" : "");
        return SM_ENOTFOUND;
    }
    *wins = sm_calloc(j->n, sizeof **wins);
    int rc = *wins != NULL ? cbn_graph_new(NULL, graph) : SM_ENOMEM;
    for (size_t i = 0; rc == SM_OK && i < j->n; i++) {
        int changed = 0;
        (*wins)[i] = j->win[i]->w;
        rc = cbn_graph_observe(*graph, j->win[i]->w, &changed);
    }
    if (rc != SM_OK) {
        sm_errmsg_printf(j->errmsg, "round %" PRIu64 ": %s building the CBN",
                         s->round, sm_strerror(rc));
        return rc;
    }
    j->cbn_version = cbn_graph_version(*graph);
    cbn_text_digest(*graph, j->cbn_digest, &j->cbn_size);
    return SM_OK;
}

/* Whether @model has exactly @g's nodes (names, in order): then a round
 * continues it incrementally, else partially. Both inputs are the same on
 * every peer of a round, so the choice is too. */
static int same_nodes(const struct gvae_model *model, const struct cbn_graph *g)
{
    size_t n = cbn_graph_node_count(g);
    if (gvae_model_node_count(model) != n) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        if (strcmp(gvae_model_node_name(model, i),
                   cbn_graph_node(g, i)->name)) {
            return 0;
        }
    }
    return 1;
}

static double seconds_since(uint64_t t0)
{
    return (double)(uv_hrtime() - t0) / 1e9;
}

/* Trains and exports @j's nodes, continuing from @prev (the current model,
 * may be NULL) as the spec says. */
static void run_shards(struct node_model_mgr *m,
                       struct coord_job *j,
                       const struct model_ref *prev)
{
    uint64_t t0 = uv_hrtime();
    const struct node_model_round_spec *s = &j->spec;
    struct cbn_graph *g = NULL;
    const struct cbn_window **wins = NULL;
    struct gvae_model *model = NULL;
    bool *own = NULL;
    size_t *idx = NULL;
    int rc = round_prepare(j, &g, &wins);
    size_t nn = g != NULL ? cbn_graph_node_count(g) : 0;
    if (rc == SM_OK) {
        own = sm_calloc(nn + 1, sizeof *own);
        idx = sm_calloc(s->n_nodes, sizeof *idx);
        j->blobs = sm_calloc(s->n_nodes, sizeof *j->blobs);
        j->lens = sm_calloc(s->n_nodes, sizeof *j->lens);
        rc = own && idx && j->blobs && j->lens ? SM_OK : SM_ENOMEM;
        if (rc != SM_OK) {
            sm_errmsg_printf(j->errmsg, "round %" PRIu64 ": out of memory",
                             s->round);
        }
    }
    for (size_t k = 0; rc == SM_OK && k < s->n_nodes; k++) {
        idx[k] = SIZE_MAX;
        for (size_t i = 0; i < nn; i++) {
            if (strcmp(cbn_graph_node(g, i)->name, s->nodes[k]) == 0) {
                idx[k] = i;
            }
        }
        if (idx[k] == SIZE_MAX) {
            rc = SM_EINVAL;
            sm_errmsg_printf(j->errmsg,
                             "round %" PRIu64 ": node %.64s is not in its CBN",
                             s->round, s->nodes[k]);
        } else {
            own[idx[k]] = true;
        }
    }
    /* What to continue from: see "Why the shards of different peers fit
     * together" at the top of this file. */
    const struct gvae_model *pm = NULL;
    size_t n_new = 0;
    j->mode = GVAE_RETRAIN_FULL;
    if (rc == SM_OK && s->prev_version != 0) {
        if (prev == NULL || prev->version != s->prev_version) {
            rc = SM_ECONFLICT;
            sm_errmsg_printf(j->errmsg,
                             "round %" PRIu64 " continues model %" PRIu64
                             "; this peer has model %" PRIu64,
                             s->round, s->prev_version,
                             prev != NULL ? prev->version : 0);
        } else {
            pm = prev->model;
            j->mode = same_nodes(pm, g) ? GVAE_RETRAIN_INCREMENTAL
                                        : GVAE_RETRAIN_PARTIAL;
            for (size_t i = 0; i < j->n; i++) {
                n_new += wins[i]->end_ns > prev->trained_until_ns;
            }
        }
    }
    struct gvae_config train = m->cfg.train;
    train.should_stop = stopping;
    train.stop_arg = m;
    if (rc == SM_OK) {
        rc = gvae_train_nodes(&train, g, wins, j->n, n_new, pm, j->mode, own,
                              &model, NULL, j->errmsg);
        if (rc != SM_OK) {
            sm_errmsg_wrapf(j->errmsg, "round %" PRIu64, s->round);
        }
    }
    for (size_t k = 0; rc == SM_OK && k < s->n_nodes; k++) {
        rc = gvae_shard_export(model, idx[k], &j->blobs[k], &j->lens[k]);
        if (rc != SM_OK) {
            sm_errmsg_printf(j->errmsg,
                             "round %" PRIu64 ": exporting %.64s: %s", s->round,
                             s->nodes[k], sm_strerror(rc));
        } else {
            j->n_blobs = k + 1;
        }
    }
    gvae_model_free(model);
    cbn_graph_free(g);
    sm_free(wins);
    sm_free(own);
    sm_free(idx);
    j->status = rc;
    j->seconds = seconds_since(t0);
}

static int all_zero(const uint8_t *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (b[i] != 0) {
            return 0;
        }
    }
    return 1;
}

/* The first 8 bytes of @d in hex, for messages. */
static void hex8(const uint8_t *d, char out[17])
{
    for (int i = 0; i < 8; i++) {
        snprintf(out + 2 * i, 3, "%02x", d[i]);
    }
}

/* Assembles and installs @j's model; @prev is the current model (may be
 * NULL). */
static void run_install(struct node_model_mgr *m,
                        struct coord_job *j,
                        const struct model_ref *prev)
{
    uint64_t t0 = uv_hrtime();
    const struct node_model_round_spec *s = &j->spec;
    j->ckpt_status = SM_OK;
    if (prev != NULL && s->round <= prev->version) {
        j->status = SM_EEXIST;
        sm_errmsg_printf(j->errmsg,
                         "install %" PRIu64 ": model %" PRIu64
                         " is installed already",
                         s->round, prev->version);
        return;
    }
    struct cbn_graph *g = NULL;
    const struct cbn_window **wins = NULL;
    struct gvae_shard **shards = NULL;
    struct gvae_model *model = NULL;
    struct cbn_normals *normals = NULL;
    struct model_ref *ref = NULL;
    int rc = round_prepare(j, &g, &wins);
    if (rc == SM_OK && !all_zero(s->cbn_digest, HASH_SIZE) &&
        memcmp(s->cbn_digest, j->cbn_digest, HASH_SIZE) != 0) {
        /* The log binds the model to another CBN than the one these
         * windows make here: its shards belong to that one. */
        char want[17], have[17];
        hex8(s->cbn_digest, want);
        hex8(j->cbn_digest, have);
        sm_errmsg_printf(j->errmsg,
                         "install %" PRIu64
                         ": the log names CBN %s..., the round's windows "
                         "make CBN %s... here",
                         s->round, want, have);
        rc = SM_ECONFLICT;
    }
    if (rc == SM_OK) {
        shards = sm_calloc(j->n_blobs, sizeof *shards);
        rc = shards != NULL ? SM_OK : SM_ENOMEM;
    }
    for (size_t k = 0; rc == SM_OK && k < j->n_blobs; k++) {
        rc = gvae_shard_import(j->blobs[k], j->lens[k], g, &shards[k],
                               j->errmsg);
        if (rc != SM_OK) {
            sm_errmsg_wrapf(j->errmsg, "install %" PRIu64 ": shard %zu",
                            s->round, k);
        }
    }
    /* One config for every peer's model: the thread count only changes how
     * fast a model trains, and 0 makes every peer save the same bytes. */
    struct gvae_config cfg = m->cfg.train;
    cfg.threads = 0;
    cfg.should_stop = NULL;
    cfg.stop_arg = NULL;
    if (rc == SM_OK) {
        rc = gvae_model_assemble(g, &cfg,
                                 (const struct gvae_shard *const *)shards,
                                 j->n_blobs, &model, j->errmsg);
        if (rc != SM_OK) {
            sm_errmsg_wrapf(j->errmsg, "install %" PRIu64, s->round);
        }
    }
    if (rc == SM_OK) {
        rc = cbn_normals_new(&normals);
    }
    for (size_t i = 0; rc == SM_OK && i < j->n; i++) {
        rc = cbn_normals_observe(normals, wins[i]);
    }
    if (rc == SM_OK) {
        ref = sm_calloc(1, sizeof *ref);
        rc = ref != NULL ? SM_OK : SM_ENOMEM;
    }
    if (rc == SM_ENOMEM && j->errmsg[0] == '\0') {
        sm_errmsg_printf(j->errmsg, "install %" PRIu64 ": out of memory",
                         s->round);
    }
    for (size_t k = 0; shards != NULL && k < j->n_blobs; k++) {
        gvae_shard_free(shards[k]);
    }
    sm_free(shards);
    cbn_graph_free(g);
    sm_free(wins);
    j->status = rc;
    if (rc != SM_OK) {
        gvae_model_free(model);
        cbn_normals_free(normals);
        j->seconds = seconds_since(t0);
        return;
    }
    ref->model = model;
    ref->normals = normals;
    ref->version = s->round;
    ref->trained_until_ns = s->to_ns;
    ref->refs = 1;
    j->params = gvae_model_params(model);
    m->model_graph_version = 0; /* not a version of the running CBN */
    j->ckpt_status = make_current(m, ref);
    j->seconds = seconds_since(t0);
}

static void train_main(void *arg)
{
    struct node_model_mgr *m = arg;
    gvae_blas_set_threads(1);
    for (;;) {
        uv_mutex_lock(&m->mu);
        while (!m->stop && m->rq == NULL && m->install_q == NULL &&
               m->shards_q == NULL) {
            uv_cond_wait(&m->train_cv, &m->mu);
        }
        if (m->stop) {
            uv_mutex_unlock(&m->mu);
            break;
        }
        /* Installs first: a shard job usually continues the model being
         * installed. */
        struct coord_job *cj = NULL;
        struct round_job *j = NULL;
        if (m->install_q != NULL) {
            cj = m->install_q;
            m->install_q = NULL;
        } else if (m->shards_q != NULL) {
            cj = m->shards_q;
            m->shards_q = NULL;
        } else {
            j = m->rq;
            m->rq = NULL;
        }
        struct model_ref *prev = model_ref_acquire_locked(m);
        uv_mutex_unlock(&m->mu);

        if (cj != NULL && cj->kind == COORD_SHARDS) {
            run_shards(m, cj, prev);
        } else if (cj != NULL) {
            run_install(m, cj, prev);
        } else {
            run_round(m, j, prev);
        }
        model_ref_release(m, prev);

        uv_mutex_lock(&m->mu);
        if (cj != NULL) {
            cj->next = NULL;
            if (m->cdone_tail != NULL) {
                m->cdone_tail->next = cj;
            } else {
                m->cdone_head = cj;
            }
            m->cdone_tail = cj;
        } else {
            SM_ASSERT(m->round_done == NULL);
            m->round_done = j;
        }
        uv_mutex_unlock(&m->mu);
        uv_async_send(&m->async);
    }
    thread_exit(m);
}

/* ---- Loop side ----------------------------------------------------------- */

static int round_due(const struct node_model_mgr *m)
{
    if (m->running || m->closing) {
        return 0;
    }
    if (m->requested) {
        return m->count >= 8;
    }
    if (m->cfg.coordinated) {
        return 0; /* the mesh starts rounds */
    }
    if (!m->has_model) {
        if (m->count < m->cfg.min_windows) {
            return 0;
        }
        /* A failed first round is retried after more windows. */
        size_t every =
            m->cfg.retrain_every ? m->cfg.retrain_every : m->cfg.min_windows;
        return m->rounds_started == 0 || m->since_round >= every;
    }
    return m->cfg.retrain_every > 0 && m->since_round >= m->cfg.retrain_every;
}

/* Queues a round on a snapshot of the history. */
static int start_round(struct node_model_mgr *m)
{
    struct round_job *j = sm_calloc(1, sizeof *j);
    struct hwin **win = sm_calloc(m->count, sizeof *win);
    if (j == NULL || win == NULL) {
        sm_free(j);
        sm_free(win);
        sm_log(SM_LOG_WARN, MOD, "out of memory starting a training round",
               NULL);
        return SM_ENOMEM;
    }
    for (size_t i = 0; i < m->count; i++) {
        win[i] = m->hist[(m->head + i) % m->cfg.max_windows];
        win[i]->refs++;
    }
    j->win = win;
    j->n = m->count;
    m->running = 1;
    m->requested = 0;
    m->since_round = 0;
    m->rounds_started++;
    uv_mutex_lock(&m->mu);
    SM_ASSERT(m->rq == NULL);
    m->rq = j;
    uv_cond_signal(&m->train_cv);
    uv_mutex_unlock(&m->mu);
    sm_log(SM_LOG_INFO, MOD, "training round started", "windows=%zu", j->n);
    return SM_OK;
}

static void deliver_round(struct node_model_mgr *m, struct round_job *j)
{
    m->running = 0;
    if (j->status == SM_OK) {
        m->has_model = 1;
        m->model_loaded = 0;
        m->model_version = j->version;
        m->model_params = j->params;
        m->trained_until_ns = j->trained_until_ns;
        m->st.trainings++;
        m->st.last_train_s = j->report.seconds;
        m->st.train_s_total += j->report.seconds;
        if (j->ckpt_status != SM_OK) {
            m->st.checkpoint_failures++;
        }
        sm_log(SM_LOG_INFO, MOD, "model trained",
               "version=%" PRIu64
               " mode=%d windows=%zu new=%zu nodes=%zu trained=%zu "
               "finetuned=%zu kept=%zu seconds=%.2f val_loss=%.4f",
               j->version, (int)j->mode, j->n, j->n_new, j->report.nodes,
               j->report.nodes_trained, j->report.nodes_finetuned,
               j->report.nodes_kept, j->report.seconds, j->report.val_loss);
    } else {
        m->st.training_failures++;
        sm_log(SM_LOG_WARN, MOD, "training failed", "cause=\"%s\"", j->errmsg);
    }
    if (m->cb.round != NULL) {
        struct node_model_round r = {
            .status = j->status,
            .errmsg = j->errmsg,
            .mode = j->mode,
            .model_version = m->model_version,
            .windows = j->n,
            .windows_new = j->n_new,
            .report = j->report,
            .checkpoint_status = j->ckpt_status,
        };
        m->cb.round(m->cb.arg, &r);
    }
}

static void deliver_coord(struct node_model_mgr *m, struct coord_job *j)
{
    SM_ASSERT(m->coord_pending > 0);
    m->coord_pending--;
    const struct node_model_round_spec *s = &j->spec;
    if (j->kind == COORD_SHARDS) {
        if (j->status == SM_OK) {
            m->st.shard_rounds++;
            sm_log(SM_LOG_INFO, MOD, "round shards trained",
                   "round=%" PRIu64 " prev=%" PRIu64
                   " mode=%d windows=%zu nodes=%zu cbn_version=%" PRIu64
                   " seconds=%.2f",
                   s->round, s->prev_version, (int)j->mode, j->n, s->n_nodes,
                   j->cbn_version, j->seconds);
        } else {
            m->st.shard_failures++;
            sm_log(SM_LOG_WARN, MOD, "round shards not trained",
                   "round=%" PRIu64 " cause=\"%s\"", s->round, j->errmsg);
        }
        struct node_model_shard *sh =
            sm_calloc(j->n_blobs + 1, sizeof *sh); /* +1: never 0 bytes */
        struct node_model_shards r = {
            .round = s->round,
            .status = j->status,
            .errmsg = j->errmsg,
            .cbn_version = j->cbn_version,
            .cbn_size = j->cbn_size,
            .n = j->status == SM_OK ? j->n_blobs : 0,
            .shards = sh,
            .seconds = j->seconds,
        };
        memcpy(r.cbn_digest, j->cbn_digest, HASH_SIZE);
        if (sh == NULL && j->status == SM_OK) {
            r.status = SM_ENOMEM;
            r.errmsg = "shards: out of memory";
            r.n = 0;
        }
        for (size_t k = 0; sh != NULL && k < j->n_blobs; k++) {
            sh[k] =
                (struct node_model_shard){s->nodes[k], j->blobs[k], j->lens[k]};
        }
        j->shards_cb(j->arg, &r);
        sm_free(sh);
        return;
    }
    if (j->status == SM_OK) {
        m->has_model = 1;
        m->model_loaded = 0;
        m->model_version = s->round;
        m->model_params = j->params;
        m->trained_until_ns = s->to_ns;
        m->since_round = m->count - hist_rank(m, s->to_ns);
        m->st.installs++;
        if (j->ckpt_status != SM_OK) {
            m->st.checkpoint_failures++;
        }
        sm_log(SM_LOG_INFO, MOD, "model installed",
               "version=%" PRIu64
               " windows=%zu shards=%zu params=%zu "
               "seconds=%.2f",
               s->round, j->n, j->n_blobs, j->params, j->seconds);
    } else {
        m->st.install_failures++;
        sm_log(SM_LOG_WARN, MOD, "model not installed",
               "version=%" PRIu64 " cause=\"%s\"", s->round, j->errmsg);
    }
    j->installed_cb(j->arg, s->round, j->status, j->errmsg);
}

static void deliver_diag(struct node_model_mgr *m, struct diag_job *j)
{
    SM_ASSERT(m->st.diagnoses_pending > 0);
    m->st.diagnoses_pending--;
    if (j->tag != 0) {
        SM_ASSERT(m->ondemand_pending > 0);
        m->ondemand_pending--;
    }
    if (j->status == SM_OK) {
        m->st.diagnoses++;
        m->st.diagnose_s_total += j->compute_s;
        m->st.diagnose_s_last = j->compute_s;
    } else {
        m->st.diagnosis_failures++;
        sm_log(SM_LOG_WARN, MOD, "diagnosis failed", "cause=\"%s\"", j->errmsg);
    }
    if (m->cb.diagnosis != NULL) {
        struct node_model_result r = {
            .status = j->status,
            .errmsg = j->errmsg,
            .model_version = j->model_version,
            .diagnosis = j->diagnosis,
            .seconds = (double)(uv_hrtime() - j->queued_ns) / 1e9,
            .tag = j->tag,
        };
        m->cb.diagnosis(m->cb.arg, j->h->w, &r);
    }
}

static void mgr_free(struct node_model_mgr *m)
{
    for (size_t i = 0; m->hist != NULL && i < m->count; i++) {
        hwin_release(*hist_slot(m, i));
    }
    sm_free(m->hist);
    model_ref_free(m->current);
    cbn_graph_free(m->graph);
    uv_mutex_destroy(&m->mu);
    uv_cond_destroy(&m->diag_cv);
    uv_cond_destroy(&m->train_cv);
    sm_free(m->qos_service);
    sm_free(m->data_dir);
    sm_free(m);
}

static void on_closed(uv_handle_t *h)
{
    struct node_model_mgr *m = h->data;
    void (*cb)(void *) = m->closed_cb;
    void *arg = m->closed_arg;
    mgr_free(m);
    if (cb != NULL) {
        cb(arg);
    }
}

/* Frees whatever is left in the queues once the threads are gone. */
static void drain_all(struct node_model_mgr *m)
{
    struct diag_job *lists[3] = {m->dq_head, m->oq_head, m->done_head};
    m->dq_head = m->dq_tail = m->done_head = m->done_tail = NULL;
    m->oq_head = m->oq_tail = NULL;
    for (int k = 0; k < 3; k++) {
        while (lists[k] != NULL) {
            struct diag_job *next = lists[k]->next;
            diag_job_free(lists[k]);
            lists[k] = next;
        }
    }
    round_job_free(m->rq);
    round_job_free(m->round_done);
    m->rq = m->round_done = NULL;
    coord_job_free(m->shards_q);
    coord_job_free(m->install_q);
    m->shards_q = m->install_q = NULL;
    while (m->cdone_head != NULL) {
        struct coord_job *next = m->cdone_head->next;
        coord_job_free(m->cdone_head);
        m->cdone_head = next;
    }
    m->cdone_tail = NULL;
    m->coord_pending = 0;
    m->st.diagnoses_pending = 0;
    m->ondemand_pending = 0;
}

static void on_async(uv_async_t *a)
{
    struct node_model_mgr *m = a->data;
    if (m->handle_closing) {
        return;
    }
    uv_mutex_lock(&m->mu);
    struct diag_job *done = m->done_head;
    struct round_job *round = m->round_done;
    struct coord_job *coord = m->cdone_head;
    m->done_head = m->done_tail = NULL;
    m->round_done = NULL;
    m->cdone_head = m->cdone_tail = NULL;
    uv_mutex_unlock(&m->mu);

    while (done != NULL) {
        struct diag_job *next = done->next;
        if (!m->closing) {
            deliver_diag(m, done);
        }
        diag_job_free(done);
        done = next;
    }
    if (round != NULL) {
        if (!m->closing) {
            deliver_round(m, round);
        }
        round_job_free(round);
    }
    while (coord != NULL) {
        struct coord_job *next = coord->next;
        if (!m->closing) {
            deliver_coord(m, coord);
        }
        coord_job_free(coord);
        coord = next;
    }
    if (!m->closing && round_due(m)) {
        start_round(m);
    }
    if (m->closing) {
        uv_mutex_lock(&m->mu);
        int gone = m->exited == m->n_threads;
        uv_mutex_unlock(&m->mu);
        if (gone) {
            for (int i = 0; i < m->n_threads; i++) {
                uv_thread_join(&m->threads[i]);
            }
            m->n_threads = 0;
            drain_all(m);
            m->handle_closing = 1;
            uv_close((uv_handle_t *)&m->async, on_closed);
        }
    }
}

/* A private copy of @w with one reference, or NULL (out of memory). The
 * copy is shared read-only with the threads from now on. */
static struct hwin *hwin_copy(const struct cbn_window *w)
{
    struct hwin *h = sm_calloc(1, sizeof *h);
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = h != NULL ? cbn_window_encode(w, &buf, &len) : SM_ENOMEM;
    if (rc == SM_OK) {
        /* decode can only fail for lack of memory on its own encoding */
        rc = cbn_window_decode(buf, len, &h->w);
        uint8_t n[8];
        sm_put_le64(n, (uint64_t)len);
        struct hash st;
        hash_init(&st);
        hash_update(&st, n, sizeof n);
        hash_update(&st, buf, len);
        hash_final(&st, h->leaf);
        sm_free(buf);
    }
    if (rc != SM_OK) {
        sm_free(h);
        return NULL;
    }
    h->refs = 1;
    return h;
}

/* Hands @j, diagnosing @h (one reference moves to the job), to the compute
 * thread. */
static void queue_diagnosis(struct node_model_mgr *m,
                            struct diag_job *j,
                            struct hwin *h,
                            uint64_t tag)
{
    j->h = h;
    j->tag = tag;
    h->diagnosed |= tag == 0;
    j->queued_ns = uv_hrtime();
    m->st.diagnoses_pending++;
    m->ondemand_pending += tag != 0;
    uv_mutex_lock(&m->mu);
    struct diag_job **head = tag != 0 ? &m->oq_head : &m->dq_head;
    struct diag_job **tail = tag != 0 ? &m->oq_tail : &m->dq_tail;
    if (*tail != NULL) {
        (*tail)->next = j;
    } else {
        *head = j;
    }
    *tail = j;
    uv_cond_signal(&m->diag_cv);
    uv_mutex_unlock(&m->mu);
}

/* ---- Public API ---------------------------------------------------------- */

void node_model_mgr_config_default(struct node_model_mgr_config *config)
{
    memset(config, 0, sizeof *config);
    config->qos_percentile = 99;
    config->min_windows = 240;
    config->retrain_every = 240;
    config->max_windows = 4000;
    config->max_pending = 64;
    gvae_config_default(&config->train);
    config->samples = 64;
}

static int check_config(struct node_model_mgr_config *c,
                        char errmsg[SM_ERRMSG_SIZE])
{
    if (c->qos_percentile == 0) {
        c->qos_percentile = 99;
    }
    if (c->min_windows == 0) {
        c->min_windows = 240;
    }
    if (c->max_windows == 0) {
        c->max_windows = 4000;
    }
    if (c->max_pending == 0) {
        c->max_pending = 64;
    }
    if (c->samples == 0) {
        c->samples = 64;
    }
    if (c->qos_service == NULL || c->qos_service[0] == '\0') {
        sm_errmsg_printf(errmsg, "model: a QoS service is required");
    } else if (!(c->qos_target_ms > 0)) {
        sm_errmsg_printf(errmsg, "model: the QoS target must be > 0 ms");
    } else if (!(c->qos_percentile > 0 && c->qos_percentile <= 100)) {
        sm_errmsg_printf(errmsg,
                         "model: the QoS percentile must be in (0, "
                         "100]");
    } else if (c->min_windows < 8) {
        sm_errmsg_printf(errmsg,
                         "model: min_windows %zu: training needs at least 8",
                         c->min_windows);
    } else if (c->max_windows < c->min_windows) {
        sm_errmsg_printf(errmsg,
                         "model: max_windows %zu is below min_windows %zu",
                         c->max_windows, c->min_windows);
    } else if (c->samples > 4096) {
        sm_errmsg_printf(errmsg, "model: %u samples; at most 4096", c->samples);
    } else if (c->train.batch < 2 || c->train.max_epochs < 1 ||
               !(c->train.val_fraction >= 0 && c->train.val_fraction < 1)) {
        sm_errmsg_printf(errmsg,
                         "model: bad training config (batch >= 2, at least "
                         "one epoch, validation share in [0, 1))");
    } else if (c->data_dir != NULL && c->data_dir[0] == '\0') {
        sm_errmsg_printf(errmsg, "model: empty data directory");
    } else {
        return SM_OK;
    }
    return SM_EINVAL;
}

int node_model_mgr_new(uv_loop_t *loop,
                       const struct node_model_mgr_config *config,
                       const struct node_model_mgr_callbacks *callbacks,
                       struct node_model_mgr **out,
                       char errmsg[SM_ERRMSG_SIZE])
{
    errmsg[0] = '\0';
    struct node_model_mgr_config c = *config;
    int rc = check_config(&c, errmsg);
    if (rc != SM_OK) {
        return rc;
    }
    if (tp_init() != SM_OK) { /* libsodium, for the round digests */
        sm_errmsg_printf(errmsg, "model: libsodium cannot be initialised");
        return SM_ECRYPTO;
    }
    if (c.data_dir != NULL && mkdir(c.data_dir, 0700) != 0 && errno != EEXIST) {
        int e = errno;
        sm_errmsg_printf(errmsg, "model: cannot create %s: %s", c.data_dir,
                         strerror(e));
        return sm_err_from_errno(e) == SM_EPERM ? SM_EPERM : SM_EIO;
    }
    struct node_model_mgr *m = sm_calloc(1, sizeof *m);
    if (m == NULL) {
        sm_errmsg_printf(errmsg, "model: out of memory");
        return SM_ENOMEM;
    }
    m->loop = loop;
    m->cfg = c;
    m->qos_service = sm_strdup(c.qos_service);
    m->data_dir = c.data_dir != NULL ? sm_strdup(c.data_dir) : NULL;
    m->hist = sm_calloc(c.max_windows, sizeof *m->hist);
    if (m->qos_service == NULL || (c.data_dir != NULL && !m->data_dir) ||
        m->hist == NULL) {
        sm_free(m->qos_service);
        sm_free(m->data_dir);
        sm_free(m->hist);
        sm_free(m);
        sm_errmsg_printf(errmsg, "model: out of memory");
        return SM_ENOMEM;
    }
    m->cfg.qos_service = m->qos_service;
    m->cfg.data_dir = m->data_dir;
    if (callbacks != NULL) {
        m->cb = *callbacks;
    }
    gvae_sweep_config_default(&m->sweep);
    m->sweep.qos_service = m->qos_service;
    m->sweep.qos_percentile = c.qos_percentile;
    m->sweep.qos_target_ms = c.qos_target_ms;
    m->sweep.samples = c.samples;

    if (uv_mutex_init(&m->mu) != 0) {
        sm_free(m->qos_service);
        sm_free(m->data_dir);
        sm_free(m->hist);
        sm_free(m);
        sm_errmsg_printf(errmsg, "model: cannot create a mutex");
        return SM_EINTERNAL;
    }
    int ok_diag = uv_cond_init(&m->diag_cv) == 0;
    if (!ok_diag || uv_cond_init(&m->train_cv) != 0) {
        if (ok_diag) {
            uv_cond_destroy(&m->diag_cv);
        }
        uv_mutex_destroy(&m->mu);
        sm_free(m->qos_service);
        sm_free(m->data_dir);
        sm_free(m->hist);
        sm_free(m);
        sm_errmsg_printf(errmsg, "model: cannot create a condition variable");
        return SM_EINTERNAL;
    }
    if (m->data_dir != NULL) {
        checkpoint_load(m);
    }
    int uvrc = uv_async_init(loop, &m->async, on_async);
    if (uvrc != 0) {
        sm_errmsg_printf(errmsg, "model: uv_async_init: %s", uv_strerror(uvrc));
        mgr_free(m);
        return SM_EINTERNAL;
    }
    m->async.data = m;
    void (*mains[N_THREADS])(void *) = {compute_main, train_main};
    for (int i = 0; i < N_THREADS; i++) {
        uvrc = uv_thread_create(&m->threads[i], mains[i], m);
        if (uvrc != 0) {
            break;
        }
        m->n_threads++;
    }
    if (uvrc != 0) {
        /* Stop what started, then let the loop close the handle and free
         * the manager; no callback runs. */
        sm_errmsg_printf(errmsg, "model: cannot start a thread: %s",
                         uv_strerror(uvrc));
        uv_mutex_lock(&m->mu);
        m->stop = 1;
        uv_cond_broadcast(&m->diag_cv);
        uv_cond_broadcast(&m->train_cv);
        uv_mutex_unlock(&m->mu);
        for (int i = 0; i < m->n_threads; i++) {
            uv_thread_join(&m->threads[i]);
        }
        m->closing = 1;
        m->handle_closing = 1;
        uv_close((uv_handle_t *)&m->async, on_closed);
        return SM_EINTERNAL;
    }
    *out = m;
    return SM_OK;
}

int node_model_mgr_window(struct node_model_mgr *m,
                          const struct cbn_window *w,
                          unsigned flags)
{
    if (m->closing) {
        return SM_ECLOSED;
    }
    size_t pos = hist_rank(m, w->end_ns);
    if (pos > 0 && (*hist_slot(m, pos - 1))->w->end_ns == w->end_ns) {
        m->st.windows_duplicate++;
        return SM_OK;
    }
    int replayed = (flags & NODE_MODEL_REPLAYED) != 0;
    int diagnose = (!replayed || (flags & NODE_MODEL_DIAGNOSE)) &&
                   !(flags & NODE_MODEL_REMOTE) && w->qos_violated &&
                   m->has_model;
    int drop = diagnose && m->st.diagnoses_pending - m->ondemand_pending >=
                               m->cfg.max_pending;
    diagnose = diagnose && !drop;

    struct hwin *h = hwin_copy(w);
    struct diag_job *j = diagnose ? sm_calloc(1, sizeof *j) : NULL;
    if (h == NULL || (diagnose && j == NULL)) {
        hwin_release(h);
        sm_free(j);
        return SM_ENOMEM;
    }
    /* Insert in end order; when full, the oldest goes, which is @w itself
     * when it is older than every window held. */
    int keep = 1;
    if (m->count == m->cfg.max_windows) {
        if (pos == 0) {
            keep = 0;
        } else {
            hwin_release(m->hist[m->head]);
            m->head = (m->head + 1) % m->cfg.max_windows;
            m->count--;
            pos--;
        }
    }
    if (keep) {
        for (size_t k = m->count; k > pos; k--) {
            *hist_slot(m, k) = *hist_slot(m, k - 1);
        }
        *hist_slot(m, pos) = h;
        m->count++;
    }
    m->st.windows_total++;
    if (!m->model_loaded || w->end_ns > m->trained_until_ns) {
        m->since_round++;
    }

    if (drop) {
        m->st.diagnoses_dropped++;
        sm_log(SM_LOG_WARN, MOD, "diagnosis queue full: window not diagnosed",
               "window_end=%" PRIu64 " pending=%zu", w->end_ns,
               m->st.diagnoses_pending);
    }
    if (diagnose) {
        h->refs++;
        queue_diagnosis(m, j, h, 0);
    }
    if (!keep) {
        hwin_release(h);
    }
    if (!replayed && round_due(m)) {
        start_round(m); /* on failure, retried with the next window */
    }
    return SM_OK;
}

size_t node_model_mgr_rediagnose(struct node_model_mgr *m,
                                 size_t newest,
                                 int (*done)(void *arg, uint64_t end_ns),
                                 void *arg)
{
    if (m->closing || !m->has_model) {
        return 0;
    }
    size_t queued = 0;
    size_t from = m->count > newest ? m->count - newest : 0;
    for (size_t i = from; i < m->count; i++) {
        struct hwin *h = *hist_slot(m, i);
        /* windows the model was trained on came before it: not diagnosed
         * live by anyone (no model), and not to be now */
        if (!h->w->qos_violated || h->diagnosed ||
            h->w->end_ns <= m->trained_until_ns || done(arg, h->w->end_ns) ||
            m->st.diagnoses_pending - m->ondemand_pending >=
                m->cfg.max_pending) {
            continue;
        }
        struct diag_job *j = sm_calloc(1, sizeof *j);
        if (j == NULL) {
            break;
        }
        h->refs++;
        queue_diagnosis(m, j, h, 0);
        queued++;
    }
    return queued;
}

int node_model_mgr_diagnose_range(struct node_model_mgr *m,
                                  uint64_t from_ns,
                                  uint64_t to_ns,
                                  size_t max,
                                  uint64_t tag,
                                  size_t *queued)
{
    SM_ASSERT(tag != 0);
    *queued = 0;
    if (m->closing) {
        return SM_ECLOSED;
    }
    if (!m->has_model) {
        return SM_ENOTFOUND;
    }
    if (m->ondemand_pending > 0) {
        return SM_EAGAIN; /* one request at a time */
    }
    size_t lo = hist_rank(m, from_ns);
    size_t hi = to_ns > from_ns ? hist_rank(m, to_ns) : lo;
    size_t n = hi - lo;
    if (n == 0) {
        return SM_ENOTFOUND;
    }
    if (n > max) {
        return SM_ETOOBIG;
    }
    struct diag_job **jobs = sm_calloc(n, sizeof *jobs);
    size_t made = 0;
    while (jobs != NULL && made < n &&
           (jobs[made] = sm_calloc(1, sizeof **jobs)) != NULL) {
        made++;
    }
    if (made < n) {
        for (size_t k = 0; jobs != NULL && k < made; k++) {
            sm_free(jobs[k]);
        }
        sm_free(jobs);
        return SM_ENOMEM;
    }
    for (size_t k = 0; k < n; k++) {
        struct hwin *h = *hist_slot(m, lo + k);
        h->refs++; /* shared with the history, read-only */
        queue_diagnosis(m, jobs[k], h, tag);
    }
    sm_free(jobs);
    *queued = n;
    return SM_OK;
}

int node_model_mgr_train_now(struct node_model_mgr *m)
{
    if (m->closing) {
        return SM_ECLOSED;
    }
    if (m->count < 8) {
        return SM_EAGAIN;
    }
    m->requested = 1;
    if (m->running) {
        return SM_OK; /* runs when the current round is delivered */
    }
    int rc = start_round(m);
    if (rc != SM_OK) {
        m->requested = 0;
    }
    return rc;
}

uint64_t node_model_mgr_version(const struct node_model_mgr *m)
{
    return m->model_version;
}

void node_model_mgr_stats(const struct node_model_mgr *m,
                          struct node_model_mgr_stats *out)
{
    *out = m->st;
    out->model_version = m->model_version;
    out->model_params = m->model_params;
    out->model_loaded = m->model_loaded;
    out->windows = m->count;
    out->training = m->running || m->coord_pending > 0;
    out->windows_new =
        m->has_model ? m->count - hist_rank(m, m->trained_until_ns) : m->count;
    out->trained_until_ns = m->has_model ? m->trained_until_ns : 0;
}

/* ---- Coordinated rounds --------------------------------------------------
 */

int node_model_mgr_round_windows(const struct node_model_mgr *m,
                                 uint64_t *from_ns,
                                 uint64_t *to_ns,
                                 size_t *n,
                                 uint8_t digest[32])
{
    if (m->count < NODE_MODEL_ROUND_MIN_WINDOWS) {
        return SM_EAGAIN;
    }
    /* A round takes minutes and every peer installs its windows after it
     * commits: leave a tenth of the history free, so that the windows
     * arriving meanwhile evict none of the round's. */
    size_t keep = m->cfg.max_windows - m->cfg.max_windows / 10;
    keep = keep < NODE_MODEL_ROUND_MIN_WINDOWS ? NODE_MODEL_ROUND_MIN_WINDOWS
                                               : keep;
    size_t lo = m->count > keep ? m->count - keep : 0;
    /* round_digest() over the ring, which may wrap. */
    struct hash h;
    hash_init(&h);
    for (size_t i = lo; i < m->count; i++) {
        hash_update(&h, (*hist_slot(m, i))->leaf, HASH_SIZE);
    }
    hash_final(&h, digest);
    *from_ns = (*hist_slot(m, lo))->w->end_ns - 1;
    *to_ns = (*hist_slot(m, m->count - 1))->w->end_ns;
    *n = m->count - lo;
    return SM_OK;
}

int node_model_mgr_round_due(const struct node_model_mgr *m,
                             uint64_t last_round_to_ns)
{
    if (m->count < m->cfg.min_windows) {
        return 0;
    }
    if (!m->has_model) {
        return 1;
    }
    size_t after = m->count - hist_rank(m, last_round_to_ns);
    return m->cfg.retrain_every > 0 && after >= m->cfg.retrain_every;
}

int node_model_mgr_round_nodes(const struct node_model_mgr *m,
                               const struct node_model_round_spec *spec,
                               char (*names)[CBN_NODE_NAME_CAP],
                               size_t cap,
                               size_t *n)
{
    size_t lo = hist_rank(m, spec->from_ns), hi = hist_rank(m, spec->to_ns);
    struct hash h;
    uint8_t digest[HASH_SIZE];
    hash_init(&h);
    for (size_t i = lo; i < hi; i++) {
        hash_update(&h, (*hist_slot(m, i))->leaf, HASH_SIZE);
    }
    hash_final(&h, digest);
    if (hi - lo != spec->n_windows ||
        memcmp(digest, spec->digest, HASH_SIZE) != 0) {
        return SM_ENOTFOUND;
    }
    struct cbn_graph *g = NULL;
    int rc = cbn_graph_new(NULL, &g);
    for (size_t i = lo; rc == SM_OK && i < hi; i++) {
        int changed = 0;
        rc = cbn_graph_observe(g, (*hist_slot(m, i))->w, &changed);
    }
    if (rc == SM_OK) {
        size_t k = cbn_graph_node_count(g);
        *n = k < cap ? k : cap;
        for (size_t i = 0; i < *n; i++) {
            snprintf(names[i], CBN_NODE_NAME_CAP, "%s",
                     cbn_graph_node(g, i)->name);
        }
        rc = k <= cap ? SM_OK : SM_ETOOBIG;
    }
    cbn_graph_free(g);
    return rc;
}

void node_model_mgr_each_window(const struct node_model_mgr *m,
                                uint64_t from_ns,
                                uint64_t to_ns,
                                int (*cb)(void *arg,
                                          const uint8_t *w,
                                          size_t len),
                                void *arg)
{
    size_t lo = hist_rank(m, from_ns), hi = hist_rank(m, to_ns);
    for (size_t i = lo; i < hi; i++) {
        uint8_t *buf;
        size_t len;
        if (cbn_window_encode((*hist_slot(m, i))->w, &buf, &len) != SM_OK) {
            return;
        }
        int stop = cb(arg, buf, len);
        sm_free(buf);
        if (stop) {
            return;
        }
    }
}

void node_model_mgr_set_remote(struct node_model_mgr *m,
                               const struct node_model_remote *remote)
{
    uv_mutex_lock(&m->mu);
    if (remote != NULL) {
        m->remote = *remote;
    } else {
        memset(&m->remote, 0, sizeof m->remote);
    }
    uv_mutex_unlock(&m->mu);
}

static void pass_cache_clear(struct node_model_mgr *m)
{
    gvae_pass_server_free(m->pass_srv);
    m->pass_srv = NULL;
    if (m->pass_ref != NULL) {
        model_ref_release(m, m->pass_ref);
        m->pass_ref = NULL;
    }
}

int node_model_mgr_serve_pass(struct node_model_mgr *m,
                              uint64_t version,
                              uint64_t end_ns,
                              int has_normals,
                              const uint8_t *req,
                              size_t len,
                              uint8_t **rep,
                              size_t *rep_len)
{
    if (m->closing) {
        return SM_ECLOSED;
    }
    if (m->pass_srv == NULL || m->pass_version != version ||
        m->pass_end_ns != end_ns) {
        pass_cache_clear(m);
        size_t i = hist_rank(m, end_ns);
        if (i == 0 || (*hist_slot(m, i - 1))->w->end_ns != end_ns) {
            return SM_ENOTFOUND;
        }
        const struct cbn_window *w = (*hist_slot(m, i - 1))->w;
        uv_mutex_lock(&m->mu);
        struct model_ref *ref = model_ref_acquire_locked(m);
        uv_mutex_unlock(&m->mu);
        if (ref == NULL) {
            return SM_ENOTFOUND;
        }
        if (ref->version != version || (ref->normals != NULL) != has_normals) {
            model_ref_release(m, ref);
            return SM_ECONFLICT;
        }
        char err[SM_ERRMSG_SIZE];
        int rc = gvae_pass_server_new(ref->model, w, ref->normals, &m->sweep,
                                      &m->pass_srv, err);
        if (rc != SM_OK) {
            model_ref_release(m, ref);
            return rc;
        }
        m->pass_ref = ref; /* keeps the model alive for the server */
        m->pass_version = version;
        m->pass_end_ns = end_ns;
    }
    return gvae_pass_serve(m->pass_srv, req, len, rep, rep_len);
}

static int spec_check(const struct node_model_round_spec *s, int need_nodes)
{
    if (s == NULL || s->round == 0 || s->to_ns <= s->from_ns ||
        s->n_windows < NODE_MODEL_ROUND_MIN_WINDOWS ||
        s->prev_version >= s->round) {
        return SM_EINVAL;
    }
    if (!need_nodes) {
        return SM_OK;
    }
    if (s->n_nodes == 0 || s->nodes == NULL) {
        return SM_EINVAL;
    }
    for (size_t k = 0; k < s->n_nodes; k++) {
        if (s->nodes[k] == NULL || s->nodes[k][0] == '\0') {
            return SM_EINVAL;
        }
        for (size_t q = 0; q < k; q++) {
            if (strcmp(s->nodes[q], s->nodes[k]) == 0) {
                return SM_EINVAL;
            }
        }
    }
    return SM_OK;
}

/* A job for @spec with its node names copied and the history windows of
 * its range referenced, or NULL (out of memory). */
static struct coord_job *coord_job_new(struct node_model_mgr *m,
                                       enum coord_kind kind,
                                       const struct node_model_round_spec *s)
{
    struct coord_job *j = sm_calloc(1, sizeof *j);
    if (j == NULL) {
        return NULL;
    }
    j->kind = kind;
    j->spec = *s;
    j->spec.nodes = NULL;
    j->spec.n_nodes = 0;
    size_t nn = kind == COORD_SHARDS ? s->n_nodes : 0;
    j->nodes = sm_calloc(nn + 1, sizeof *j->nodes);
    if (j->nodes == NULL) {
        sm_free(j);
        return NULL;
    }
    j->spec.nodes = (const char *const *)j->nodes;
    for (size_t k = 0; k < nn; k++) {
        j->spec.n_nodes = k + 1; /* freed up to here on failure */
        if ((j->nodes[k] = sm_strdup(s->nodes[k])) == NULL) {
            coord_job_free(j);
            return NULL;
        }
    }
    size_t lo = hist_rank(m, s->from_ns), hi = hist_rank(m, s->to_ns);
    j->win = sm_calloc(hi - lo + 1, sizeof *j->win);
    if (j->win == NULL) {
        coord_job_free(j);
        return NULL;
    }
    for (size_t i = lo; i < hi; i++) {
        j->win[j->n] = *hist_slot(m, i);
        j->win[j->n++]->refs++;
    }
    return j;
}

/* Puts @j in its slot for the training thread; a job waiting there is
 * replaced and reported as SM_EAGAIN. */
static void coord_queue(struct node_model_mgr *m, struct coord_job *j)
{
    struct coord_job **slot =
        j->kind == COORD_SHARDS ? &m->shards_q : &m->install_q;
    m->coord_pending++;
    uv_mutex_lock(&m->mu);
    struct coord_job *old = *slot;
    *slot = j;
    if (old != NULL) {
        old->status = SM_EAGAIN;
        sm_errmsg_printf(old->errmsg,
                         "round %" PRIu64 ": replaced by round %" PRIu64
                         " before it ran",
                         old->spec.round, j->spec.round);
        old->next = NULL;
        if (m->cdone_tail != NULL) {
            m->cdone_tail->next = old;
        } else {
            m->cdone_head = old;
        }
        m->cdone_tail = old;
    }
    uv_cond_signal(&m->train_cv);
    uv_mutex_unlock(&m->mu);
    if (old != NULL) {
        uv_async_send(&m->async);
    }
}

int node_model_mgr_train_shards(struct node_model_mgr *m,
                                const struct node_model_round_spec *spec,
                                node_model_shards_cb cb,
                                void *arg)
{
    if (m->closing) {
        return SM_ECLOSED;
    }
    if (cb == NULL || spec_check(spec, 1) != SM_OK) {
        return SM_EINVAL;
    }
    struct coord_job *j = coord_job_new(m, COORD_SHARDS, spec);
    if (j == NULL) {
        return SM_ENOMEM;
    }
    j->shards_cb = cb;
    j->arg = arg;
    coord_queue(m, j);
    return SM_OK;
}

int node_model_mgr_install_shards(struct node_model_mgr *m,
                                  const struct node_model_round_spec *spec,
                                  const uint8_t *const *blobs,
                                  const size_t *lens,
                                  size_t n,
                                  node_model_installed_cb cb,
                                  void *arg)
{
    if (m->closing) {
        return SM_ECLOSED;
    }
    if (cb == NULL || spec_check(spec, 0) != SM_OK || n == 0 || blobs == NULL ||
        lens == NULL) {
        return SM_EINVAL;
    }
    for (size_t k = 0; k < n; k++) {
        if (blobs[k] == NULL || lens[k] == 0) {
            return SM_EINVAL;
        }
    }
    if (spec->round <= m->model_version) {
        return SM_EEXIST;
    }
    struct coord_job *j = coord_job_new(m, COORD_INSTALL, spec);
    if (j == NULL) {
        return SM_ENOMEM;
    }
    j->blobs = sm_calloc(n, sizeof *j->blobs);
    j->lens = sm_calloc(n, sizeof *j->lens);
    for (size_t k = 0; j->blobs != NULL && j->lens != NULL && k < n; k++) {
        if ((j->blobs[k] = sm_malloc(lens[k])) == NULL) {
            break;
        }
        memcpy(j->blobs[k], blobs[k], lens[k]);
        j->lens[k] = lens[k];
        j->n_blobs = k + 1;
    }
    if (j->n_blobs < n) {
        coord_job_free(j);
        return SM_ENOMEM;
    }
    j->installed_cb = cb;
    j->arg = arg;
    coord_queue(m, j);
    return SM_OK;
}

void node_model_mgr_close(struct node_model_mgr *m,
                          void (*closed_cb)(void *arg),
                          void *arg)
{
    if (m->closing) {
        return;
    }
    m->closing = 1;
    m->closed_cb = closed_cb;
    m->closed_arg = arg;
    pass_cache_clear(m);
    uv_mutex_lock(&m->mu);
    m->stop = 1;
    uv_cond_broadcast(&m->diag_cv);
    uv_cond_broadcast(&m->train_cv);
    uv_mutex_unlock(&m->mu);
    /* The threads poke the handle as they leave; poke it once more in case
     * both have already gone. */
    uv_async_send(&m->async);
}
