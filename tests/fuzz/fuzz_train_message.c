/* Fuzz target: the training rounds' messages (TP_MSG_TRAIN and
 * TP_MSG_WINDOW bodies) into a node_train as leader and as follower. Byte 0
 * chooses the message type and the role; the rest is the body. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "base/err.h"
#include "base/log.h"
#include "fuzz_util.h"
#include "node/mesh_train.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int f_send(void *arg,
                  const char *peer,
                  int type,
                  const void *d,
                  size_t len)
{
    (void)arg, (void)peer, (void)type, (void)d, (void)len;
    return SM_OK;
}

static void f_propose(void *arg, const struct cons_cmd *cmd)
{
    (void)arg, (void)cmd;
}

static int f_windows(void *arg, struct node_train_spec *spec)
{
    (void)arg;
    memset(spec, 0, sizeof *spec);
    spec->from_ns = 0;
    spec->to_ns = 100;
    spec->n_windows = 10;
    return SM_OK;
}

static int f_due(void *arg)
{
    (void)arg;
    return 1;
}

static int f_nodes(void *arg,
                   const struct node_train_spec *spec,
                   char (*names)[CONS_NAME_MAX + 1],
                   size_t cap,
                   size_t *n)
{
    (void)arg, (void)spec, (void)cap;
    snprintf(names[0], sizeof names[0], "api");
    snprintf(names[1], sizeof names[1], "db");
    *n = 2;
    return SM_OK;
}

static int f_train(void *arg,
                   uint64_t job,
                   const struct node_train_spec *spec,
                   const char *const *nodes,
                   size_t n)
{
    (void)arg, (void)job, (void)spec, (void)nodes, (void)n;
    return SM_OK;
}

static int f_install(void *arg,
                     const struct node_train_spec *spec,
                     const struct cons_digest *cbn,
                     const uint8_t *const *blobs,
                     const size_t *lens,
                     size_t n)
{
    (void)arg, (void)spec, (void)cbn, (void)blobs, (void)lens, (void)n;
    return SM_OK;
}

static uint64_t f_version(void *arg)
{
    (void)arg;
    return 0;
}

static void f_each(void *arg,
                   uint64_t from,
                   uint64_t to,
                   int (*cb)(void *, const uint8_t *, size_t),
                   void *cb_arg)
{
    (void)arg, (void)from, (void)to;
    static const uint8_t w[16] = {1, 2, 3};
    cb(cb_arg, w, sizeof w);
}

static int f_add(void *arg, const uint8_t *w, size_t len, uint64_t *end)
{
    (void)arg, (void)w;
    *end = len;
    return len % 2 ? SM_EMALFORMED : SM_OK;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    fuzz_quiet();
    struct node_train_env env = {
        .send = f_send,
        .propose = f_propose,
        .round_windows = f_windows,
        .round_due = f_due,
        .round_nodes = f_nodes,
        .train = f_train,
        .install = f_install,
        .model_version = f_version,
        .each_window = f_each,
        .add_window = f_add,
    };
    struct node_train *t;
    if (node_train_new(NULL, &env, &t) != SM_OK) {
        return 0;
    }
    static const char *members[2] = {"a", "b"};
    static const enum cons_health health[2] = {CONS_HEALTH_UP, CONS_HEALTH_UP};
    static const struct cons_place_entry place[2] = {{"api", 2, 1},
                                                     {"db", 1, 2}};
    static const char *owner[2] = {"b", "a"}, *replica[2] = {"a", "b"};
    struct node_train_view v = {
        .n_place = 2,
        .place = place,
        .place_owner = owner,
        .place_replica = replica,
        .self = "a",
        .leader = (data[0] & 2) ? "a" : "b",
        .is_leader = (data[0] & 2) != 0,
        .n_members = 2,
        .members = members,
        .health = health,
    };
    node_train_tick(t, &v, 1000); /* a leader starts a round */
    int type = (data[0] & 1) ? TP_MSG_WINDOW : TP_MSG_TRAIN;
    if (type == TP_MSG_TRAIN) {
        (void)node_train_check_message(data + 1, size - 1);
    }
    node_train_recv(t, "b", type, data + 1, size - 1);
    node_train_tick(t, &v, 2000);
    node_train_free(t);
    return 0;
}
