/* Tests for the fake net: delivery, order, partitions, loss, reordering,
 * kills, closing and the limits shared with the real net. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/err.h"
#include "base/rng.h"
#include "check.h"
#include "transport/transport.h"

#define MAX_NETS 4
#define MAX_SEEN 2048

/* What one net received. */
struct inbox
{
    int n;
    int max_len;
    uint32_t conn[MAX_SEEN];
    char from[MAX_SEEN][TP_NET_ADDR_MAX];
    int value[MAX_SEEN]; /* the decimal number in each message */
};

/* Outcomes of sends, by index. */
struct outcomes
{
    int n;
    int status[MAX_SEEN];
};

struct world
{
    struct sm_rng rng;
    struct tp_fake_hub *hub;
    struct tp_net *net[MAX_NETS];
    struct inbox inbox[MAX_NETS];
    struct outcomes out;
};

static struct world *w;

static struct tp_net_id id_of(int i)
{
    return (struct tp_net_id){(uint64_t)(100 + i)};
}

static void on_recv(void *arg,
                    const struct tp_net_from *from,
                    const void *data,
                    size_t len)
{
    struct inbox *in = arg;
    REQUIRE(in->n < MAX_SEEN);
    char text[32] = {0};
    memcpy(text, data, len < sizeof text - 1 ? len : sizeof text - 1);
    in->conn[in->n] = from->conn;
    memcpy(in->from[in->n], from->addr, TP_NET_ADDR_MAX);
    in->value[in->n] = atoi(text);
    in->max_len = (int)len > in->max_len ? (int)len : in->max_len;
    in->n++;
}

/* Records a send outcome at the index given by @arg. */
static void on_sent(void *arg, int status)
{
    int i = (int)(intptr_t)arg;
    REQUIRE(i >= 0 && i < MAX_SEEN);
    w->out.status[i] = status;
    w->out.n++;
}

static void make_world(int n_nets, const struct tp_net_config *cfg)
{
    w = calloc(1, sizeof *w);
    REQUIRE(w != NULL);
    sm_rng_seed(&w->rng, check_seed());
    REQUIRE_OK(tp_fake_hub_new(&w->rng, &w->hub));
    for (int i = 0; i < n_nets; i++) {
        REQUIRE_OK(tp_fake_net_new(w->hub, id_of(i), cfg, on_recv, &w->inbox[i],
                                   &w->net[i]));
        REQUIRE_OK(tp_net_listen(w->net[i], "tcp://127.0.0.1:0"));
    }
    /* Everyone knows everyone. */
    for (int i = 0; i < n_nets; i++) {
        for (int j = 0; j < n_nets; j++) {
            if (i != j) {
                REQUIRE_OK(tp_net_peer_add(w->net[i], id_of(j),
                                           tp_net_address(w->net[j])));
            }
        }
    }
    for (int i = 0; i < MAX_SEEN; i++) {
        w->out.status[i] = -1;
    }
}

static void teardown(void)
{
    if (w == NULL) {
        return;
    }
    for (int i = 0; i < MAX_NETS; i++) {
        if (w->net[i] != NULL) {
            tp_net_close(w->net[i], NULL, NULL);
        }
    }
    tp_fake_hub_free(w->hub);
    free(w);
    w = NULL;
}

/* Sends the number @value from net @from to net @to, recording the outcome
 * at index @slot. */
static int send_num(int from, int to, int value, int slot)
{
    char text[16];
    int len = snprintf(text, sizeof text, "%d", value);
    return tp_net_send(w->net[from], id_of(to), text, (size_t)len, 1000,
                       on_sent, (void *)(intptr_t)slot);
}

static void test_delivery(void)
{
    make_world(3, NULL);
    CHECK_EQ(tp_net_port(w->net[0]), 20000);
    CHECK_EQ(tp_net_port(w->net[1]), 20001);
    CHECK_STR(tp_net_address(w->net[2]), "tcp://127.0.0.1:20002");

    REQUIRE_OK(send_num(0, 1, 42, 0));
    /* Nothing moves until the test steps the hub. */
    CHECK_EQ(tp_fake_hub_pending(w->hub), 1);
    CHECK_EQ(w->inbox[1].n, 0);
    CHECK_EQ(w->out.n, 0);

    CHECK_EQ(tp_fake_hub_step(w->hub), 1);
    REQUIRE_EQ(w->inbox[1].n, 1);
    CHECK_EQ(w->inbox[1].value[0], 42);
    CHECK_STR(w->inbox[1].from[0], tp_net_address(w->net[0]));
    CHECK(w->inbox[1].conn[0] != 0);
    CHECK_EQ(w->inbox[2].n, 0);
    CHECK_EQ(w->out.status[0], SM_OK);
    CHECK_EQ(tp_fake_hub_step(w->hub), 0);

    struct tp_net_stats s;
    tp_net_stats(w->net[0], &s);
    CHECK_EQ(s.sent, 1);
    CHECK_EQ(s.send_failed, 0);
    tp_net_stats(w->net[1], &s);
    CHECK_EQ(s.received, 1);
    struct tp_fake_hub_stats hs;
    tp_fake_hub_stats(w->hub, &hs);
    CHECK_EQ(hs.delivered, 1);
}

static void test_order(void)
{
    make_world(3, NULL);
    for (int i = 0; i < 100; i++) {
        REQUIRE_OK(send_num(0, 1, i, i));
        REQUIRE_OK(send_num(2, 1, 1000 + i, 100 + i));
        REQUIRE_OK(send_num(1, 0, 2000 + i, 200 + i));
    }
    CHECK_EQ(tp_fake_hub_run(w->hub, 1000), 300);
    REQUIRE_EQ(w->inbox[1].n, 200);
    REQUIRE_EQ(w->inbox[0].n, 100);
    /* Per sender, in the order sent. */
    int next_a = 0, next_c = 1000;
    for (int i = 0; i < 200; i++) {
        int v = w->inbox[1].value[i];
        if (v < 1000) {
            CHECK_EQ(v, next_a++);
        } else {
            CHECK_EQ(v, next_c++);
        }
    }
    for (int i = 0; i < 100; i++) {
        CHECK_EQ(w->inbox[0].value[i], 2000 + i);
    }
    CHECK_EQ(w->out.n, 300);
}

static void test_partition_and_heal(void)
{
    make_world(3, NULL);
    /* Queued before the cut, settled after it: cut too. */
    REQUIRE_OK(send_num(0, 1, 1, 0));
    REQUIRE_OK(tp_fake_hub_partition(w->hub, id_of(0), id_of(1)));
    REQUIRE_OK(tp_fake_hub_partition(w->hub, id_of(1), id_of(0)));
    REQUIRE_OK(send_num(1, 0, 2, 1));
    REQUIRE_OK(send_num(0, 2, 3, 2));
    REQUIRE_OK(send_num(2, 1, 4, 3));
    CHECK_EQ(tp_fake_hub_run(w->hub, 100), 4);
    CHECK_EQ(w->out.status[0], SM_ETIMEDOUT);
    CHECK_EQ(w->out.status[1], SM_ETIMEDOUT);
    CHECK_EQ(w->out.status[2], SM_OK);
    CHECK_EQ(w->out.status[3], SM_OK);
    CHECK_EQ(w->inbox[0].n, 0);
    REQUIRE_EQ(w->inbox[1].n, 1);
    CHECK_EQ(w->inbox[1].value[0], 4);
    REQUIRE_EQ(w->inbox[2].n, 1);

    struct tp_net_stats s;
    tp_net_stats(w->net[0], &s);
    CHECK_EQ(s.timeouts, 1);
    CHECK_EQ(s.send_failed, 1);
    CHECK_EQ(s.sent, 1);

    tp_fake_hub_heal(w->hub, id_of(1), id_of(0));
    REQUIRE_OK(send_num(0, 1, 5, 4));
    REQUIRE_OK(send_num(1, 0, 6, 5));
    CHECK_EQ(tp_fake_hub_run(w->hub, 100), 2);
    CHECK_EQ(w->out.status[4], SM_OK);
    CHECK_EQ(w->out.status[5], SM_OK);
    REQUIRE_EQ(w->inbox[1].n, 2);
    CHECK_EQ(w->inbox[1].value[1], 5);
    REQUIRE_EQ(w->inbox[0].n, 1);
    CHECK_EQ(w->inbox[0].value[0], 6);
    struct tp_fake_hub_stats hs;
    tp_fake_hub_stats(w->hub, &hs);
    CHECK_EQ(hs.cut, 2);
    CHECK_EQ(hs.delivered, 4);
}

/* Runs 1000 sends with loss @p and reordering @reorder from seed @seed and
 * records which arrived, in which order, into @got (values) and @n_got. */
static void lossy_run(uint64_t seed,
                      double p,
                      int reorder,
                      int *got,
                      int *n_got,
                      uint64_t *lost)
{
    struct tp_net_config cfg;
    tp_net_config_default(&cfg);
    cfg.queue_max = 1000;
    make_world(2, &cfg);
    sm_rng_seed(&w->rng, seed);
    REQUIRE_OK(tp_fake_hub_set_loss(w->hub, p));
    REQUIRE_OK(tp_fake_hub_set_reorder(w->hub, reorder));
    for (int i = 0; i < 1000; i++) {
        REQUIRE_OK(send_num(0, 1, i, i));
    }
    CHECK_EQ(tp_fake_hub_run(w->hub, 5000), 1000);
    CHECK_EQ(w->out.n, 1000);
    for (int i = 0; i < 1000; i++) {
        /* A lost message was taken by "TCP": its sender sees success. */
        CHECK_EQ(w->out.status[i], SM_OK);
    }
    struct tp_fake_hub_stats hs;
    tp_fake_hub_stats(w->hub, &hs);
    CHECK_EQ(hs.delivered + hs.lost, 1000);
    CHECK_EQ(hs.delivered, (uint64_t)w->inbox[1].n);
    *n_got = w->inbox[1].n;
    memcpy(got, w->inbox[1].value, sizeof(int) * (size_t)*n_got);
    *lost = hs.lost;
    teardown();
}

static void test_loss_with_seed(void)
{
    static int a[MAX_SEEN], b[MAX_SEEN];
    int na, nb;
    uint64_t lost_a, lost_b;
    uint64_t seed = check_seed();
    lossy_run(seed, 0.3, 0, a, &na, &lost_a);
    /* 1000 draws at p = 0.3: far outside [200, 400] is a broken draw. */
    CHECK(lost_a >= 200 && lost_a <= 400);
    for (int i = 1; i < na; i++) {
        CHECK(a[i] > a[i - 1]); /* loss alone keeps the order */
    }
    lossy_run(seed, 0.3, 0, b, &nb, &lost_b);
    REQUIRE_EQ(na, nb);
    CHECK(memcmp(a, b, sizeof(int) * (size_t)na) == 0);
    lossy_run(seed + 1, 0.3, 0, b, &nb, &lost_b);
    CHECK(na != nb || memcmp(a, b, sizeof(int) * (size_t)na) != 0);
}

static void test_reorder_with_seed(void)
{
    static int a[MAX_SEEN], b[MAX_SEEN];
    int na, nb;
    uint64_t lost;
    uint64_t seed = check_seed();
    lossy_run(seed, 0.0, 1, a, &na, &lost);
    REQUIRE_EQ(na, 1000);
    CHECK_EQ(lost, 0);
    /* A permutation of the messages, not the identity. */
    static int seen[1000];
    memset(seen, 0, sizeof seen);
    int inversions = 0;
    for (int i = 0; i < na; i++) {
        REQUIRE(a[i] >= 0 && a[i] < 1000);
        seen[a[i]]++;
        inversions += i > 0 && a[i] < a[i - 1];
    }
    for (int i = 0; i < 1000; i++) {
        CHECK_EQ(seen[i], 1);
    }
    CHECK(inversions > 100);
    lossy_run(seed, 0.0, 1, b, &nb, &lost);
    REQUIRE_EQ(nb, 1000);
    CHECK(memcmp(a, b, sizeof(int) * 1000) == 0);
}

static void test_kill_and_restart(void)
{
    make_world(3, NULL);
    REQUIRE_OK(send_num(0, 1, 1, 0)); /* queued before the kill */
    REQUIRE_OK(tp_fake_hub_kill(w->hub, id_of(1)));
    REQUIRE_OK(send_num(1, 2, 2, 1)); /* a killed peer cannot send */
    REQUIRE_OK(send_num(2, 0, 3, 2)); /* the others still talk */
    CHECK_EQ(tp_fake_hub_run(w->hub, 100), 3);
    CHECK_EQ(w->out.status[0], SM_ETIMEDOUT);
    CHECK_EQ(w->out.status[1], SM_ETIMEDOUT);
    CHECK_EQ(w->out.status[2], SM_OK);
    CHECK_EQ(w->inbox[1].n, 0);
    CHECK_EQ(w->inbox[2].n, 0);
    CHECK_EQ(w->inbox[0].n, 1);

    tp_fake_hub_restart(w->hub, id_of(1));
    REQUIRE_OK(send_num(0, 1, 4, 3));
    REQUIRE_OK(send_num(1, 2, 5, 4));
    CHECK_EQ(tp_fake_hub_run(w->hub, 100), 2);
    CHECK_EQ(w->out.status[3], SM_OK);
    CHECK_EQ(w->out.status[4], SM_OK);
    REQUIRE_EQ(w->inbox[1].n, 1);
    CHECK_EQ(w->inbox[1].value[0], 4);
    REQUIRE_EQ(w->inbox[2].n, 1);
    CHECK_EQ(w->inbox[2].value[0], 5);
}

/* A crashed process: its net is closed and a new one takes its address. */
static void test_close_and_replace(void)
{
    make_world(2, NULL);
    char addr[TP_NET_ADDR_MAX];
    snprintf(addr, sizeof addr, "%s", tp_net_address(w->net[1]));
    REQUIRE_OK(send_num(1, 0, 1, 0)); /* from the net that closes */
    REQUIRE_OK(send_num(0, 1, 2, 1)); /* to it */
    tp_net_close(w->net[1], NULL, NULL);
    w->net[1] = NULL;
    /* Its own sends are reported by the close itself. */
    CHECK_EQ(w->out.status[0], SM_ECLOSED);
    CHECK_EQ(tp_fake_hub_pending(w->hub), 1);
    CHECK_EQ(tp_fake_hub_run(w->hub, 10), 1);
    CHECK_EQ(w->out.status[1], SM_ETIMEDOUT); /* nobody listens there */

    REQUIRE_OK(tp_fake_net_new(w->hub, id_of(1), NULL, on_recv, &w->inbox[1],
                               &w->net[1]));
    REQUIRE_OK(tp_net_listen(w->net[1], addr));
    REQUIRE_OK(send_num(0, 1, 3, 2));
    CHECK_EQ(tp_fake_hub_run(w->hub, 10), 1);
    CHECK_EQ(w->out.status[2], SM_OK);
    REQUIRE_EQ(w->inbox[1].n, 1);
    CHECK_EQ(w->inbox[1].value[0], 3);
}

static void test_peer_remove(void)
{
    make_world(2, NULL);
    REQUIRE_OK(send_num(0, 1, 1, 0));
    REQUIRE_OK(tp_net_peer_remove(w->net[0], id_of(1)));
    CHECK_EQ(tp_net_peer_remove(w->net[0], id_of(1)), SM_ENOTFOUND);
    CHECK_EQ(send_num(0, 1, 2, 1), SM_ENOTFOUND);
    CHECK_EQ(tp_fake_hub_run(w->hub, 10), 1);
    CHECK_EQ(w->out.status[0], SM_ECLOSED);
    CHECK_EQ(w->inbox[1].n, 0);
    /* Added back, it works again. */
    REQUIRE_OK(tp_net_peer_add(w->net[0], id_of(1), tp_net_address(w->net[1])));
    REQUIRE_OK(send_num(0, 1, 3, 2));
    CHECK_EQ(tp_fake_hub_run(w->hub, 10), 1);
    CHECK_EQ(w->out.status[2], SM_OK);
    CHECK_EQ(w->inbox[1].n, 1);
}

static void test_limits(void)
{
    struct tp_net_config cfg;
    tp_net_config_default(&cfg);
    cfg.queue_max = 4;
    cfg.max_msg = 16;
    make_world(2, &cfg);
    for (int i = 0; i < 4; i++) {
        REQUIRE_OK(send_num(0, 1, i, i));
    }
    /* A fifth pending send to the same peer is refused, not queued. */
    CHECK_EQ(send_num(0, 1, 4, 4), SM_EAGAIN);
    CHECK(strstr(tp_net_errmsg(w->net[0]), "pending") != NULL);
    char big[17];
    memset(big, '7', sizeof big);
    CHECK_EQ(tp_net_send(w->net[0], id_of(1), big, 17, 1000, NULL, NULL),
             SM_ETOOBIG);
    CHECK_OK(tp_net_send(w->net[1], id_of(0), big, 16, 1000, NULL, NULL));
    struct tp_net_stats s;
    tp_net_stats(w->net[0], &s);
    CHECK_EQ(s.dropped, 1);
    CHECK_EQ(s.oversized, 1);
    CHECK_EQ(tp_fake_hub_run(w->hub, 100), 5);
    CHECK_EQ(w->inbox[1].n, 4);
    CHECK_EQ(w->inbox[0].max_len, 16);
    CHECK_EQ(w->out.status[4], -1); /* the refused send never reports */
    /* Once they are settled the peer takes sends again. */
    CHECK_OK(send_num(0, 1, 9, 9));
}

static void test_bad_arguments(void)
{
    make_world(2, NULL);
    CHECK_EQ(tp_net_listen(w->net[0], "tcp://127.0.0.1:0"), SM_EINVAL);
    struct tp_net *n;
    REQUIRE_OK(
        tp_fake_net_new(w->hub, id_of(2), NULL, on_recv, &w->inbox[2], &n));
    w->net[2] = n;
    CHECK_EQ(tp_net_port(n), 0);
    CHECK_STR(tp_net_address(n), "");
    CHECK_EQ(tp_net_listen(n, tp_net_address(w->net[0])), SM_EEXIST);
    static const char *bad[] = {
        "127.0.0.1:80",       "tcp://127.0.0.1",      "tcp://127.0.0.1:65536",
        "tcp://256.0.0.1:80", "tcp://1.2.3:80",       "tcp://1.2.3.4:80x",
        "udp://127.0.0.1:80", "tcp://localhost:80",   "tcp://1.2.3.4:-1",
        "tcp://1.2.3.4.5:80", "tcp://01234.0.0.1:80", "",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_EQ(tp_net_listen(n, bad[i]), SM_EINVAL);
        CHECK_EQ(tp_net_peer_add(n, id_of(7), bad[i]), SM_EINVAL);
    }
    CHECK_EQ(tp_net_peer_add(n, id_of(7), "tcp://127.0.0.1:0"), SM_EINVAL);
    CHECK_EQ(tp_net_peer_add(w->net[0], id_of(1), "tcp://127.0.0.1:9"),
             SM_EEXIST);
    CHECK_EQ(send_num(0, 3, 1, 0), SM_ENOTFOUND);
    CHECK_EQ(tp_net_send(w->net[0], id_of(1), "x", 1, 0, NULL, NULL),
             SM_EINVAL);
    CHECK_EQ(tp_fake_hub_set_loss(w->hub, 1.5), SM_EINVAL);
    CHECK_EQ(tp_fake_hub_set_loss(w->hub, -0.1), SM_EINVAL);

    struct tp_net_config cfg;
    tp_net_config_default(&cfg);
    cfg.queue_max = 0;
    CHECK_EQ(tp_fake_net_new(w->hub, id_of(3), &cfg, on_recv, NULL, &n),
             SM_EINVAL);
    CHECK_EQ(tp_fake_net_new(w->hub, id_of(3), NULL, NULL, NULL, &n),
             SM_EINVAL);

    /* Without an rng there is no loss and no reordering. */
    struct tp_fake_hub *plain;
    REQUIRE_OK(tp_fake_hub_new(NULL, &plain));
    CHECK_EQ(tp_fake_hub_set_loss(plain, 0.5), SM_EINVAL);
    CHECK_EQ(tp_fake_hub_set_reorder(plain, 1), SM_EINVAL);
    CHECK_OK(tp_fake_hub_set_loss(plain, 0.0));
    tp_fake_hub_free(plain);
}

/* ---- Callbacks that act on the nets ---- */

/* Net 1 answers each message with its value + 1: request and reply are
 * two one-way messages, as the upper layer does it. */
static void on_recv_echo(void *arg,
                         const struct tp_net_from *from,
                         const void *data,
                         size_t len)
{
    on_recv(arg, from, data, len);
    struct inbox *in = arg;
    CHECK_OK(send_num(1, 0, in->value[in->n - 1] + 1, 500 + in->n));
}

static void test_reply_from_callback(void)
{
    make_world(2, NULL);
    tp_net_close(w->net[1], NULL, NULL);
    REQUIRE_OK(tp_fake_net_new(w->hub, id_of(1), NULL, on_recv_echo,
                               &w->inbox[1], &w->net[1]));
    REQUIRE_OK(tp_net_listen(w->net[1], "tcp://127.0.0.1:0"));
    REQUIRE_OK(tp_net_peer_remove(w->net[0], id_of(1)));
    REQUIRE_OK(tp_net_peer_add(w->net[0], id_of(1), tp_net_address(w->net[1])));
    REQUIRE_OK(tp_net_peer_add(w->net[1], id_of(0), tp_net_address(w->net[0])));
    for (int i = 0; i < 10; i++) {
        REQUIRE_OK(send_num(0, 1, 10 * i, i));
    }
    CHECK_EQ(tp_fake_hub_run(w->hub, 100), 20);
    REQUIRE_EQ(w->inbox[0].n, 10);
    for (int i = 0; i < 10; i++) {
        CHECK_EQ(w->inbox[0].value[i], 10 * i + 1);
    }
}

/* The receiver closes itself from its own callback, and the sender closes
 * itself from the receiver's callback: the step must not touch either. */
static void on_recv_close_both(void *arg,
                               const struct tp_net_from *from,
                               const void *data,
                               size_t len)
{
    on_recv(arg, from, data, len);
    tp_net_close(w->net[0], NULL, NULL);
    w->net[0] = NULL;
    tp_net_close(w->net[1], NULL, NULL);
    w->net[1] = NULL;
}

static void count_close(void *arg)
{
    (*(int *)arg)++;
}

static void test_close_from_callback(void)
{
    make_world(2, NULL);
    tp_net_close(w->net[1], NULL, NULL);
    REQUIRE_OK(tp_fake_net_new(w->hub, id_of(1), NULL, on_recv_close_both,
                               &w->inbox[1], &w->net[1]));
    REQUIRE_OK(tp_net_listen(w->net[1], "tcp://127.0.0.1:0"));
    REQUIRE_OK(tp_net_peer_remove(w->net[0], id_of(1)));
    REQUIRE_OK(tp_net_peer_add(w->net[0], id_of(1), tp_net_address(w->net[1])));
    REQUIRE_OK(send_num(0, 1, 1, 0));
    REQUIRE_OK(send_num(0, 1, 2, 1));
    CHECK_EQ(tp_fake_hub_run(w->hub, 10), 1);
    CHECK_EQ(w->inbox[1].n, 1);
    /* Both sends reported once: the first and the queued one as closed. */
    CHECK_EQ(w->out.n, 2);
    CHECK_EQ(w->out.status[0], SM_ECLOSED);
    CHECK_EQ(w->out.status[1], SM_ECLOSED);
    CHECK_EQ(tp_fake_hub_pending(w->hub), 0);

    int closed = 0;
    struct tp_net *n;
    REQUIRE_OK(tp_fake_net_new(w->hub, id_of(5), NULL, on_recv, NULL, &n));
    tp_net_close(n, count_close, &closed);
    CHECK_EQ(closed, 1);
}

/* Every allocation failure is reported as SM_ENOMEM and leaks nothing (the
 * runner checks the fault heap's outstanding blocks). */
static void test_out_of_memory(void)
{
    check_heap_install();
    int failures = 0;
    for (int fault = 0; fault < 40; fault++) {
        struct tp_fake_hub *hub = NULL;
        struct tp_net *a = NULL, *b = NULL;
        static struct inbox in;
        memset(&in, 0, sizeof in);
        check_heap_fault(fault, 1);
        int rv = tp_fake_hub_new(NULL, &hub);
        if (rv == SM_OK) {
            rv = tp_fake_net_new(hub, id_of(0), NULL, on_recv, &in, &a);
        }
        if (rv == SM_OK) {
            rv = tp_fake_net_new(hub, id_of(1), NULL, on_recv, &in, &b);
        }
        if (rv == SM_OK) {
            rv = tp_net_listen(b, "tcp://127.0.0.1:0");
        }
        if (rv == SM_OK) {
            rv = tp_net_peer_add(a, id_of(1), tp_net_address(b));
        }
        if (rv == SM_OK) {
            rv = tp_fake_hub_partition(hub, id_of(0), id_of(2));
        }
        if (rv == SM_OK) {
            rv = tp_fake_hub_kill(hub, id_of(3));
        }
        if (rv == SM_OK) {
            rv = tp_net_send(a, id_of(1), "1", 1, 10, NULL, NULL);
        }
        if (rv == SM_OK) {
            CHECK_EQ(tp_fake_hub_run(hub, 10), 1);
            CHECK_EQ(in.n, 1);
        } else {
            CHECK_EQ(rv, SM_ENOMEM);
            failures++;
        }
        check_heap_fault(-1, 0);
        if (a != NULL) {
            tp_net_close(a, NULL, NULL);
        }
        if (b != NULL) {
            tp_net_close(b, NULL, NULL);
        }
        tp_fake_hub_free(hub);
        CHECK_EQ(check_heap_outstanding(), 0);
    }
    /* Every allocation on the path was failed once, then none was left. */
    CHECK(failures >= 8 && failures < 40);
    check_heap_uninstall();
}

static const struct check_test tests[] = {
    {"delivery", test_delivery},
    {"order", test_order},
    {"partition and heal", test_partition_and_heal},
    {"loss with seed", test_loss_with_seed},
    {"reorder with seed", test_reorder_with_seed},
    {"kill and restart", test_kill_and_restart},
    {"close and replace", test_close_and_replace},
    {"peer remove", test_peer_remove},
    {"limits", test_limits},
    {"bad arguments", test_bad_arguments},
    {"reply from callback", test_reply_from_callback},
    {"close from callback", test_close_from_callback},
    {"out of memory", test_out_of_memory},
};

CHECK_MAIN(tests, NULL, teardown)
