/* The mesh link on the fake network: sessions on demand, ordered delivery,
 * a wrong secret refused, a restarted peer healed; and two real links over
 * nng on 127.0.0.1. */
#include <stdio.h>
#include <string.h>
#include <uv.h>

#include "base/log.h"
#include "base/rng.h"
#include "check.h"
#include "node/mesh_link_impl.h"

static void setup(void)
{
    sm_log_set_sink(check_log_discard, NULL);
    REQUIRE_OK(tp_init());
}

static void teardown(void)
{
    sm_log_set_sink(NULL, NULL);
}

#define MAX_GOT 256

struct node_end
{
    const char *id;
    struct node_mesh_link *link;
    struct tp_net *net;
    int got;
    char last_from[64];
    uint64_t ids[MAX_GOT];
    int types[MAX_GOT];
};

static void on_recv(void *arg,
                    const char *peer,
                    int type,
                    uint64_t id,
                    const void *data,
                    size_t len)
{
    struct node_end *e = arg;
    (void)data;
    (void)len;
    if (e->got < MAX_GOT) {
        e->ids[e->got] = id;
        e->types[e->got] = type;
    }
    e->got++;
    snprintf(e->last_from, sizeof e->last_from, "%s", peer);
}

/* The fake listen address of peer @id (one per id on the hub). */
static void fake_addr(const char *id, char addr[64])
{
    snprintf(addr, 64, "tcp://127.0.0.1:%u",
             20000u + (unsigned)(node_link_raft_id(id) % 1000));
}

static void make_end(struct node_end *e,
                     const char *id,
                     const struct tp_secret *secret,
                     struct tp_fake_hub *hub)
{
    memset(e, 0, sizeof *e);
    e->id = id;
    struct node_mesh_link_config cfg = {.self = id, .secret = secret};
    char err[SM_ERRMSG_SIZE];
    REQUIRE_OK(node_mesh_link_new(&cfg, on_recv, e, &e->link, err));
    struct tp_net_config nc;
    tp_net_config_default(&nc);
    REQUIRE_OK(tp_fake_net_new(hub, (struct tp_net_id){node_link_raft_id(id)},
                               &nc, node_mesh_link_net_recv, e->link, &e->net));
    char addr[64];
    fake_addr(id, addr);
    REQUIRE_OK(tp_net_listen(e->net, addr));
    node_mesh_link_attach(e->link, e->net, addr);
}

static void close_end(struct node_end *e)
{
    tp_net_close(e->net, NULL, NULL);
    node_mesh_link_free(e->link);
    e->link = NULL;
}

static void know(struct node_end *a, const struct node_end *b)
{
    char addr[64];
    fake_addr(b->id, addr);
    REQUIRE_OK(node_mesh_link_peer_add(a->link, b->id, addr));
}

static int send_to(struct node_end *from,
                   const char *to,
                   uint64_t id,
                   const char *text)
{
    const struct node_link_ops *ops = node_mesh_link_ops(from->link);
    return ops->send(ops->arg, to, TP_MSG_FWD_REQ, id, text, strlen(text));
}

static void test_sessions_and_order(void)
{
    struct tp_secret secret;
    tp_secret_generate(&secret);
    struct sm_rng rng;
    sm_rng_seed(&rng, 7);
    struct tp_fake_hub *hub;
    REQUIRE_OK(tp_fake_hub_new(&rng, &hub));
    struct node_end a, b;
    make_end(&a, "peer-a", &secret, hub);
    make_end(&b, "peer-b", &secret, hub);
    know(&a, &b); /* b learns a's address from a's handshake */
    CHECK_EQ(send_to(&a, "nobody", 1, "x"), SM_ENOTFOUND);
    for (uint64_t i = 1; i <= 100; i++) {
        REQUIRE_OK(send_to(&a, "peer-b", i, "ping"));
    }
    CHECK(!node_mesh_link_connected(a.link, "peer-b"));
    tp_fake_hub_run(hub, 10000);
    CHECK(node_mesh_link_connected(a.link, "peer-b"));
    REQUIRE_EQ(b.got, 100);
    for (int i = 0; i < 100; i++) {
        CHECK_EQ(b.ids[i], (uint64_t)i + 1);
        CHECK_EQ(b.types[i], TP_MSG_FWD_REQ);
    }
    CHECK_STR(b.last_from, "peer-a");
    /* The answer goes back on the learned address. */
    char a_addr[64];
    fake_addr("peer-a", a_addr);
    REQUIRE(node_mesh_link_peer_addr(b.link, "peer-a") != NULL);
    CHECK_STR(node_mesh_link_peer_addr(b.link, "peer-a"), a_addr);
    REQUIRE_OK(send_to(&b, "peer-a", 7, "pong"));
    tp_fake_hub_run(hub, 1000);
    CHECK_EQ(a.got, 1);
    CHECK_EQ(a.ids[0], 7u);
    close_end(&a);
    close_end(&b);
    tp_fake_hub_free(hub);
}

static void test_wrong_secret_refused(void)
{
    struct tp_secret secret, other;
    tp_secret_generate(&secret);
    tp_secret_generate(&other);
    struct sm_rng rng;
    sm_rng_seed(&rng, 8);
    struct tp_fake_hub *hub;
    REQUIRE_OK(tp_fake_hub_new(&rng, &hub));
    struct node_end a, m;
    make_end(&a, "peer-a", &secret, hub);
    make_end(&m, "mallory", &other, hub);
    know(&m, &a);
    know(&a, &m);
    for (uint64_t i = 1; i <= 3; i++) {
        REQUIRE_OK(send_to(&m, "peer-a", i, "let me in"));
    }
    tp_fake_hub_run(hub, 1000);
    node_mesh_link_tick(m.link, 5000);
    tp_fake_hub_run(hub, 1000);
    CHECK_EQ(a.got, 0);
    CHECK(!node_mesh_link_connected(a.link, "mallory"));
    struct node_mesh_link_stats st;
    node_mesh_link_stats(a.link, &st);
    CHECK(st.chan.rejected[TP_CHAN_BAD_HELLO] >= 2);
    /* Garbage and truncated link frames are counted, not fatal. */
    static const uint8_t junk[][6] = {
        {0}, {0x53}, {0x53, 1}, {0x53, 1, 60, 'a'}, {0x53, 2, 0, 1}};
    for (size_t i = 0; i < sizeof junk / sizeof junk[0]; i++) {
        node_mesh_link_net_recv(a.link, NULL, junk[i], i + 1);
    }
    node_mesh_link_stats(a.link, &st);
    CHECK_EQ(st.bad_frames, 5u);
    close_end(&a);
    close_end(&m);
    tp_fake_hub_free(hub);
}

/* b crashes and comes back with no memory of the session: the link heals
 * and messages flow again. */
static void test_restart_heals(void)
{
    struct tp_secret secret;
    tp_secret_generate(&secret);
    struct sm_rng rng;
    sm_rng_seed(&rng, 9);
    struct tp_fake_hub *hub;
    REQUIRE_OK(tp_fake_hub_new(&rng, &hub));
    struct node_end a, b;
    make_end(&a, "peer-a", &secret, hub);
    make_end(&b, "peer-b", &secret, hub);
    know(&a, &b);
    know(&b, &a);
    REQUIRE_OK(send_to(&a, "peer-b", 1, "before"));
    tp_fake_hub_run(hub, 1000);
    CHECK_EQ(b.got, 1);
    close_end(&b);
    make_end(&b, "peer-b", &secret, hub);
    know(&b, &a);
    /* a's old session is unknown to the new b: b starts a handshake back,
     * and after it a's messages arrive. */
    int delivered = 0;
    for (uint64_t i = 2; i < 12 && !delivered; i++) {
        send_to(&a, "peer-b", i, "after");
        tp_fake_hub_run(hub, 1000);
        node_mesh_link_tick(a.link, 1000 * i);
        node_mesh_link_tick(b.link, 1000 * i);
        tp_fake_hub_run(hub, 1000);
        delivered = b.got > 0;
    }
    CHECK(delivered);
    REQUIRE_OK(send_to(&b, "peer-a", 99, "back"));
    tp_fake_hub_run(hub, 1000);
    REQUIRE(a.got > 0);
    CHECK_EQ(a.ids[a.got - 1], 99u);
    close_end(&a);
    close_end(&b);
    tp_fake_hub_free(hub);
}

/* ---- Real nng on 127.0.0.1 ---------------------------------------------- */

struct real
{
    uv_loop_t loop;
    uv_timer_t deadline;
    struct node_end a, b;
    int timed_out;
};

static void on_deadline(uv_timer_t *t)
{
    struct real *r = t->data;
    r->timed_out = 1;
    uv_stop(&r->loop);
}

static void real_end(struct real *r,
                     struct node_end *e,
                     const char *id,
                     const struct tp_secret *secret)
{
    memset(e, 0, sizeof *e);
    e->id = id;
    struct node_mesh_link_config cfg = {.self = id, .secret = secret};
    char err[SM_ERRMSG_SIZE];
    REQUIRE_OK(node_mesh_link_new(&cfg, on_recv, e, &e->link, err));
    struct tp_net_config nc;
    tp_net_config_default(&nc);
    REQUIRE_OK(tp_net_nng_new(&r->loop, &nc, node_mesh_link_net_recv, e->link,
                              &e->net, err));
    REQUIRE_OK(tp_net_listen(e->net, "tcp://127.0.0.1:0"));
    node_mesh_link_attach(e->link, e->net, tp_net_address(e->net));
}

static void closed(void *arg)
{
    (*(int *)arg)++;
}

static void test_real_nng(void)
{
    struct tp_secret secret;
    tp_secret_generate(&secret);
    struct real r;
    memset(&r, 0, sizeof r);
    REQUIRE(uv_loop_init(&r.loop) == 0);
    real_end(&r, &r.a, "real-a", &secret);
    real_end(&r, &r.b, "real-b", &secret);
    REQUIRE_OK(
        node_mesh_link_peer_add(r.a.link, "real-b", tp_net_address(r.b.net)));
    uv_timer_init(&r.loop, &r.deadline);
    r.deadline.data = &r;
    uv_timer_start(&r.deadline, on_deadline, 10000, 0);
    REQUIRE_OK(send_to(&r.a, "real-b", 42, "over tcp"));
    for (int i = 0; i < 2000 && r.b.got == 0 && !r.timed_out; i++) {
        uv_run(&r.loop, UV_RUN_ONCE);
    }
    CHECK_EQ(r.b.got, 1);
    CHECK_EQ(r.b.ids[0], 42u);
    REQUIRE_OK(send_to(&r.b, "real-a", 43, "and back"));
    for (int i = 0; i < 2000 && r.a.got == 0 && !r.timed_out; i++) {
        uv_run(&r.loop, UV_RUN_ONCE);
    }
    CHECK_EQ(r.a.got, 1);
    CHECK(!r.timed_out);
    int n_closed = 0;
    tp_net_close(r.a.net, closed, &n_closed);
    tp_net_close(r.b.net, closed, &n_closed);
    uv_close((uv_handle_t *)&r.deadline, NULL);
    for (int i = 0; i < 1000 && n_closed < 2; i++) {
        uv_run(&r.loop, UV_RUN_ONCE);
    }
    CHECK_EQ(n_closed, 2);
    uv_run(&r.loop, UV_RUN_DEFAULT);
    node_mesh_link_free(r.a.link);
    node_mesh_link_free(r.b.link);
    CHECK(uv_loop_close(&r.loop) == 0);
}

static const struct check_test tests[] = {
    {"sessions on demand, ordered delivery", test_sessions_and_order},
    {"a wrong secret is refused", test_wrong_secret_refused},
    {"a restarted peer heals", test_restart_heals},
    {"two links over nng on 127.0.0.1", test_real_nng},
};

CHECK_MAIN(tests, setup, teardown)
