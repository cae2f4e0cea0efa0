/* Tests for the real net: nng sockets on 127.0.0.1 ephemeral ports, driven
 * by a libuv loop that each test runs until a condition or a deadline. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "base/err.h"
#include "check.h"
#include "transport/transport.h"

#define MAX_SEEN 256
#define ANY_PORT "tcp://127.0.0.1:0"

/* LeakSanitizer takes its default suppressions from this hook. nng 1.5.2
 * now and then leaks the internals of a dialer or a listener, with the
 * pipes its own threads made for them, when they close while a connection
 * is being set up or torn down: races inside nng, fixed upstream in 1.6.0
 * (#1657, #1658, and pipes born with a zero reference count). They are
 * matched by the nng entry points and threads that allocate them, so what
 * the net allocates itself (sm_* blocks, nng_msg_alloc, nng_aio_alloc on
 * the loop thread) is still checked. */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void)
{
    return "leak:nng_dialer_create\n"
           "leak:nng_listener_create\n"
           "leak:nng_listener_start\n"
           "leak:start_thread\n";
}

/* What one net received, and whether it was on the loop's thread. */
struct inbox
{
    int n;
    int off_thread; /* callbacks seen on another thread */
    int max_len;
    int value[MAX_SEEN];
    char from[MAX_SEEN][TP_NET_ADDR_MAX];
};

/* Outcomes of sends, by index. */
struct outcomes
{
    int n;
    int off_thread;
    int status[MAX_SEEN];
};

static uv_loop_t loop;
static uv_thread_t loop_thread;
static struct outcomes out;
static struct inbox inbox[3];
static struct tp_net *nets[3];
static int closed_count;

static void setup(void)
{
    REQUIRE_EQ(uv_loop_init(&loop), 0);
    loop_thread = uv_thread_self();
    memset(&out, 0, sizeof out);
    memset(inbox, 0, sizeof inbox);
    memset(nets, 0, sizeof nets);
    for (int i = 0; i < MAX_SEEN; i++) {
        out.status[i] = -1;
    }
    closed_count = 0;
}

static int on_loop_thread(void)
{
    uv_thread_t self = uv_thread_self();
    return uv_thread_equal(&self, &loop_thread);
}

static void on_recv(void *arg,
                    const struct tp_net_from *from,
                    const void *data,
                    size_t len)
{
    struct inbox *in = arg;
    in->off_thread += !on_loop_thread();
    if (in->n >= MAX_SEEN) {
        return;
    }
    char text[32] = {0};
    memcpy(text, data, len < sizeof text - 1 ? len : sizeof text - 1);
    in->value[in->n] = atoi(text);
    memcpy(in->from[in->n], from->addr, TP_NET_ADDR_MAX);
    in->max_len = (int)len > in->max_len ? (int)len : in->max_len;
    in->n++;
}

static void on_sent(void *arg, int status)
{
    int i = (int)(intptr_t)arg;
    out.off_thread += !on_loop_thread();
    if (i >= 0 && i < MAX_SEEN) {
        out.status[i] = status;
    }
    out.n++;
}

static void on_closed(void *arg)
{
    (void)arg;
    closed_count++;
}

/* ---- Running the loop without sleeping ---- */

static void on_deadline(uv_timer_t *t)
{
    *(int *)t->data = 1;
}

/* Runs the loop until @done(@arg) holds or @ms of loop time pass. Returns
 * whether the condition held. The deadline timer bounds every wait; the
 * iteration cap bounds the loop even if the timer were broken. */
static int run_until(int (*done)(void *), void *arg, uint64_t ms)
{
    int expired = 0;
    uv_timer_t deadline;
    uv_timer_init(&loop, &deadline);
    deadline.data = &expired;
    uv_timer_start(&deadline, on_deadline, ms, 0);
    for (int i = 0; i < 1000000 && !done(arg) && !expired; i++) {
        uv_run(&loop, UV_RUN_ONCE);
    }
    int ok = done(arg);
    uv_close((uv_handle_t *)&deadline, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
    return ok;
}

static int sends_done(void *arg)
{
    return out.n >= *(int *)arg;
}

static int received(void *arg)
{
    const int *want = arg; /* {net index, count} */
    return inbox[want[0]].n >= want[1];
}

static int all_closed(void *arg)
{
    return closed_count >= *(int *)arg;
}

static void close_nets(void)
{
    int n = closed_count;
    for (int i = 0; i < 3; i++) {
        if (nets[i] != NULL) {
            tp_net_close(nets[i], on_closed, NULL);
            nets[i] = NULL;
            n++;
        }
    }
    CHECK(run_until(all_closed, &n, 5000));
}

static void teardown(void)
{
    close_nets();
    uv_run(&loop, UV_RUN_NOWAIT);
    CHECK_EQ(uv_loop_close(&loop), 0);
}

/* Creates net @i with @cfg (NULL: defaults) listening on an ephemeral
 * port. */
static void make_net(int i, const struct tp_net_config *cfg)
{
    char errmsg[SM_ERRMSG_SIZE];
    REQUIRE_OK(
        tp_net_nng_new(&loop, cfg, on_recv, &inbox[i], &nets[i], errmsg));
    REQUIRE_OK(tp_net_listen(nets[i], ANY_PORT));
    REQUIRE(tp_net_port(nets[i]) != 0);
}

/* Makes @i and @j peers of each other (ids are the indexes). */
static void pair(int i, int j)
{
    REQUIRE_OK(tp_net_peer_add(nets[i], (struct tp_net_id){(uint64_t)j},
                               tp_net_address(nets[j])));
    REQUIRE_OK(tp_net_peer_add(nets[j], (struct tp_net_id){(uint64_t)i},
                               tp_net_address(nets[i])));
}

static int send_num(int from, uint64_t to, int value, uint32_t ms, int slot)
{
    char text[16];
    int len = snprintf(text, sizeof text, "%d", value);
    return tp_net_send(nets[from], (struct tp_net_id){to}, text, (size_t)len,
                       ms, on_sent, (void *)(intptr_t)slot);
}

/* A local port that refuses connections: bound, never listening, held
 * until closed so nobody else takes it. Returns the socket. */
static int refusing_port(char addr[TP_NET_ADDR_MAX])
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof sa;
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) != 0) {
        close(fd);
        REQUIRE(!"bind 127.0.0.1:0");
    }
    snprintf(addr, TP_NET_ADDR_MAX, "tcp://127.0.0.1:%u",
             (unsigned)ntohs(sa.sin_port));
    return fd;
}

/* ---- Tests ---- */

static void test_listen_address(void)
{
    make_net(0, NULL);
    char want[TP_NET_ADDR_MAX];
    snprintf(want, sizeof want, "tcp://127.0.0.1:%u",
             (unsigned)tp_net_port(nets[0]));
    CHECK_STR(tp_net_address(nets[0]), want);
    /* Once per net; a taken port is reported as in use. */
    CHECK_EQ(tp_net_listen(nets[0], ANY_PORT), SM_EINVAL);
    char errmsg[SM_ERRMSG_SIZE];
    REQUIRE_OK(
        tp_net_nng_new(&loop, NULL, on_recv, &inbox[1], &nets[1], errmsg));
    CHECK_EQ(tp_net_port(nets[1]), 0);
    CHECK_STR(tp_net_address(nets[1]), "");
    CHECK_EQ(tp_net_listen(nets[1], want), SM_EEXIST);
    CHECK(strstr(tp_net_errmsg(nets[1]), want) != NULL);
    CHECK_EQ(tp_net_listen(nets[1], "tcp://127.0.0.1"), SM_EINVAL);
    CHECK_EQ(tp_net_peer_add(nets[1], (struct tp_net_id){5}, ANY_PORT),
             SM_EINVAL);
    CHECK_EQ(tp_net_peer_add(nets[1], (struct tp_net_id){5}, "tcp://x:1"),
             SM_EINVAL);
}

static void test_both_ways(void)
{
    make_net(0, NULL);
    make_net(1, NULL);
    pair(0, 1);
    for (int i = 0; i < 20; i++) {
        REQUIRE_OK(send_num(0, 1, i, 5000, i));
        REQUIRE_OK(send_num(1, 0, 100 + i, 5000, 20 + i));
    }
    int want0[2] = {0, 20}, want1[2] = {1, 20}, sends = 40;
    CHECK(run_until(received, want1, 10000));
    CHECK(run_until(received, want0, 10000));
    CHECK(run_until(sends_done, &sends, 10000));
    REQUIRE_EQ(inbox[1].n, 20);
    REQUIRE_EQ(inbox[0].n, 20);
    for (int i = 0; i < 20; i++) {
        CHECK_EQ(inbox[1].value[i], i); /* one connection: in order */
        CHECK_EQ(inbox[0].value[i], 100 + i);
        CHECK_EQ(out.status[i], SM_OK);
        CHECK_EQ(out.status[20 + i], SM_OK);
    }
    /* Messages come from the sender's dialing socket on loopback. */
    CHECK(strncmp(inbox[1].from[0], "tcp://127.0.0.1:", 16) == 0);
    CHECK_EQ(inbox[0].off_thread + inbox[1].off_thread + out.off_thread, 0);
    struct tp_net_stats s;
    tp_net_stats(nets[0], &s);
    CHECK_EQ(s.sent, 20);
    CHECK_EQ(s.received, 20);
    CHECK_EQ(s.send_failed, 0);
    CHECK_EQ(s.connects, 1);
    CHECK_EQ(s.disconnects, 0);
}

static void test_down_peer_times_out(void)
{
    struct tp_net_config cfg;
    tp_net_config_default(&cfg);
    cfg.queue_max = 4;
    make_net(0, &cfg);
    char addr[TP_NET_ADDR_MAX];
    int fd = refusing_port(addr);
    REQUIRE_OK(tp_net_peer_add(nets[0], (struct tp_net_id){9}, addr));
    uv_update_time(&loop);
    uint64_t start = uv_now(&loop);
    for (int i = 0; i < 4; i++) {
        CHECK_OK(send_num(0, 9, i, 200, i));
    }
    /* The peer's queue is bounded: the fifth is refused at once. */
    CHECK_EQ(send_num(0, 9, 4, 200, 4), SM_EAGAIN);
    int sends = 4;
    CHECK(run_until(sends_done, &sends, 5000));
    uint64_t elapsed = uv_now(&loop) - start;
    close(fd);
    for (int i = 0; i < 4; i++) {
        CHECK_EQ(out.status[i], SM_ETIMEDOUT);
    }
    CHECK_EQ(out.status[4], -1);
    /* Not before the timeout (loop time is in whole ms), not much after. */
    CHECK(elapsed >= 190);
    CHECK(elapsed < 3000);
    struct tp_net_stats s;
    tp_net_stats(nets[0], &s);
    CHECK_EQ(s.timeouts, 4);
    CHECK_EQ(s.send_failed, 4);
    CHECK_EQ(s.dropped, 1);
    CHECK_EQ(s.sent, 0);
    CHECK_EQ(s.connects, 0);
}

/* Connection counts of a net to wait for. */
struct links
{
    int net;
    uint64_t connects, disconnects;
};

static int links_reached(void *arg)
{
    const struct links *want = arg;
    struct tp_net_stats s;
    tp_net_stats(nets[want->net], &s);
    return s.connects >= want->connects && s.disconnects >= want->disconnects;
}

/* Sends one small message from 0 to 1 and waits for it. */
static int send_and_receive(int value, int slot)
{
    int want[2] = {1, inbox[1].n + 1};
    REQUIRE_OK(send_num(0, 1, value, 1000, slot));
    return run_until(received, want, 5000);
}

static void test_oversized(void)
{
    struct tp_net_config small, large;
    tp_net_config_default(&small);
    tp_net_config_default(&large);
    small.max_msg = 1024;
    large.max_msg = 65536;
    large.reconnect_min_ms = 10;
    make_net(0, &large);
    make_net(1, &small);
    pair(0, 1);
    static char big[4096];
    memset(big, '1', sizeof big);
    /* The sender refuses what is over its own limit. */
    CHECK_EQ(tp_net_send(nets[1], (struct tp_net_id){0}, big, 1025, 1000,
                         on_sent, NULL),
             SM_ETOOBIG);
    struct tp_net_stats s;
    tp_net_stats(nets[1], &s);
    CHECK_EQ(s.oversized, 1);
    /* The receiver refuses what is over its limit: nng drops the
     * connection instead of reading the message. */
    REQUIRE_OK(tp_net_send(nets[0], (struct tp_net_id){1}, big, sizeof big,
                           1000, on_sent, (void *)(intptr_t)0));
    int one = 1;
    CHECK(run_until(sends_done, &one, 5000));
    struct links dropped = {0, 1, 1};
    REQUIRE(run_until(links_reached, &dropped, 5000));
    CHECK_EQ(inbox[1].n, 0);
    /* The receiver goes on serving others. A fresh sender, because nng
     * 1.5.2 may hand the next message of the old one to the dropped
     * connection, losing (and leaking) it. */
    tp_net_close(nets[0], on_closed, NULL);
    nets[0] = NULL;
    REQUIRE(run_until(all_closed, &one, 5000));
    make_net(0, &large);
    REQUIRE_OK(tp_net_peer_add(nets[0], (struct tp_net_id){1},
                               tp_net_address(nets[1])));
    CHECK(send_and_receive(7, 1));
    CHECK_EQ(inbox[1].n, 1);
    CHECK_EQ(inbox[1].max_len, 1);
    CHECK_EQ(inbox[1].value[0], 7);
    /* A message at the limit passes. */
    int want[2] = {1, inbox[1].n + 1};
    big[0] = '2';
    REQUIRE_OK(tp_net_send(nets[0], (struct tp_net_id){1}, big, 1024, 1000,
                           on_sent, (void *)(intptr_t)100));
    CHECK(run_until(received, want, 5000));
    CHECK_EQ(inbox[1].max_len, 1024);
}

/* Closing with sends pending reports each once, then frees everything
 * (ASan checks the frees). */
static void test_close_with_pending(void)
{
    make_net(0, NULL);
    make_net(1, NULL);
    pair(0, 1);
    char addr[TP_NET_ADDR_MAX];
    int fd = refusing_port(addr);
    REQUIRE_OK(tp_net_peer_add(nets[0], (struct tp_net_id){9}, addr));
    for (int i = 0; i < 5; i++) {
        REQUIRE_OK(send_num(0, 9, i, 60000, i));
    }
    REQUIRE_OK(send_num(0, 1, 5, 60000, 5));
    /* Removing a peer ends its sends as closed, on the loop. */
    REQUIRE_OK(send_num(0, 9, 6, 60000, 6));
    REQUIRE_OK(tp_net_peer_remove(nets[0], (struct tp_net_id){9}));
    CHECK_EQ(tp_net_peer_remove(nets[0], (struct tp_net_id){9}), SM_ENOTFOUND);
    CHECK_EQ(send_num(0, 9, 7, 100, 7), SM_ENOTFOUND);
    CHECK_EQ(out.n, 0);
    int seven = 7;
    CHECK(run_until(sends_done, &seven, 5000));
    for (int i = 0; i < 5; i++) {
        CHECK_EQ(out.status[i], SM_ECLOSED);
    }
    CHECK_EQ(out.status[6], SM_ECLOSED);
    CHECK_EQ(out.status[5], SM_OK);

    /* Now pending sends at close time. */
    REQUIRE_OK(tp_net_peer_add(nets[0], (struct tp_net_id){9}, addr));
    for (int i = 0; i < 3; i++) {
        REQUIRE_OK(send_num(0, 9, i, 60000, 10 + i));
    }
    tp_net_close(nets[0], on_closed, NULL);
    nets[0] = NULL;
    int one = 1;
    CHECK(run_until(all_closed, &one, 5000));
    close(fd);
    CHECK_EQ(out.n, 10);
    for (int i = 0; i < 3; i++) {
        CHECK_EQ(out.status[10 + i], SM_ECLOSED);
    }
}

/* A peer that restarts on the same address is found again by the redial. */
static void test_peer_restart(void)
{
    struct tp_net_config cfg;
    tp_net_config_default(&cfg);
    cfg.reconnect_min_ms = 10;
    cfg.reconnect_max_ms = 50;
    make_net(0, &cfg);
    make_net(1, &cfg);
    pair(0, 1);
    char addr[TP_NET_ADDR_MAX];
    snprintf(addr, sizeof addr, "%s", tp_net_address(nets[1]));
    REQUIRE(send_and_receive(1, 0));

    tp_net_close(nets[1], on_closed, NULL);
    nets[1] = NULL;
    int one = 1;
    REQUIRE(run_until(all_closed, &one, 5000));
    /* Once the sender has seen the connection go, a send waits in vain. */
    struct links lost = {0, 1, 1};
    REQUIRE(run_until(links_reached, &lost, 5000));
    REQUIRE_OK(send_num(0, 1, 8, 100, 50));
    int sends = out.n + 1;
    CHECK(run_until(sends_done, &sends, 5000));
    CHECK_EQ(out.status[50], SM_ETIMEDOUT);

    char errmsg[SM_ERRMSG_SIZE];
    memset(&inbox[1], 0, sizeof inbox[1]);
    REQUIRE_OK(
        tp_net_nng_new(&loop, &cfg, on_recv, &inbox[1], &nets[1], errmsg));
    REQUIRE_OK(tp_net_listen(nets[1], addr));
    struct links back = {0, 2, 1};
    REQUIRE(run_until(links_reached, &back, 5000));
    CHECK(send_and_receive(2, 60));
    CHECK_EQ(inbox[1].value[0], 2);
}

/* A slow loop: the inbox holds two messages, the rest wait in nng and TCP
 * until the loop drains; nothing is lost or reordered. */
static void test_receive_backpressure(void)
{
    struct tp_net_config cfg;
    tp_net_config_default(&cfg);
    cfg.recv_queue_max = 2;
    make_net(0, NULL);
    make_net(1, &cfg);
    pair(0, 1);
    for (int i = 0; i < 200; i++) {
        REQUIRE_OK(send_num(0, 1, i, 5000, i % MAX_SEEN));
    }
    int want[2] = {1, 200};
    CHECK(run_until(received, want, 10000));
    REQUIRE_EQ(inbox[1].n, 200);
    for (int i = 0; i < 200; i++) {
        CHECK_EQ(inbox[1].value[i], i);
    }
}

/* Net 1 answers each message to 0 with value + 1, from its callback. */
static void on_recv_echo(void *arg,
                         const struct tp_net_from *from,
                         const void *data,
                         size_t len)
{
    on_recv(arg, from, data, len);
    struct inbox *in = arg;
    CHECK_OK(send_num(1, 0, in->value[in->n - 1] + 1, 5000, 100 + in->n));
}

static void test_reply_from_callback(void)
{
    char errmsg[SM_ERRMSG_SIZE];
    make_net(0, NULL);
    REQUIRE_OK(
        tp_net_nng_new(&loop, NULL, on_recv_echo, &inbox[1], &nets[1], errmsg));
    REQUIRE_OK(tp_net_listen(nets[1], ANY_PORT));
    pair(0, 1);
    for (int i = 0; i < 10; i++) {
        REQUIRE_OK(send_num(0, 1, 10 * i, 5000, i));
    }
    int want[2] = {0, 10};
    CHECK(run_until(received, want, 10000));
    REQUIRE_EQ(inbox[0].n, 10);
    for (int i = 0; i < 10; i++) {
        CHECK_EQ(inbox[0].value[i], 10 * i + 1);
    }
}

static void test_bad_config(void)
{
    char errmsg[SM_ERRMSG_SIZE];
    struct tp_net_config cfg;
    tp_net_config_default(&cfg);
    cfg.max_msg = 0;
    struct tp_net *n = NULL;
    CHECK_EQ(tp_net_nng_new(&loop, &cfg, on_recv, NULL, &n, errmsg), SM_EINVAL);
    tp_net_config_default(&cfg);
    cfg.reconnect_max_ms = cfg.reconnect_min_ms - 1;
    CHECK_EQ(tp_net_nng_new(&loop, &cfg, on_recv, NULL, &n, errmsg), SM_EINVAL);
    CHECK(strstr(errmsg, "reconnect") != NULL);
    CHECK_EQ(tp_net_nng_new(&loop, NULL, NULL, NULL, &n, errmsg), SM_EINVAL);
    CHECK(n == NULL);
    make_net(0, NULL);
    CHECK_EQ(
        tp_net_send(nets[0], (struct tp_net_id){1}, "x", 1, 10, NULL, NULL),
        SM_ENOTFOUND);
}

static const struct check_test tests[] = {
    {"listen address", test_listen_address},
    {"both ways", test_both_ways},
    {"down peer times out", test_down_peer_times_out},
    {"oversized", test_oversized},
    {"close with pending", test_close_with_pending},
    {"peer restart", test_peer_restart},
    {"receive backpressure", test_receive_backpressure},
    {"reply from callback", test_reply_from_callback},
    {"bad config", test_bad_config},
};

CHECK_MAIN(tests, setup, teardown)
