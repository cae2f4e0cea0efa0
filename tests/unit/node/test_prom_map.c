/* Tests for mapping Prometheus samples to services and metric points. */
#include <math.h>
#include <string.h>

#include "check.h"
#include "node/ingest.h"

#define L(k, v) \
    {           \
        k, v    \
    }

static struct node_points pts;

static void setup(void)
{
    node_points_init(&pts, 0);
}

static void teardown(void)
{
    node_points_free(&pts);
}

static int convert(const char *name,
                   enum node_prom_type type,
                   const struct node_prom_label *labels,
                   size_t n,
                   double value)
{
    struct node_prom_sample s = {name, name, type, labels, n, value, 0, 0};
    return node_prom_to_point(&s, &node_default_service_labels, NULL,
                              "10.0.0.7:9100", 1795421730000000000u, &pts);
}

static void test_cadvisor_container(void)
{
    const struct node_prom_label l[] = {
        L("container", "cart"), L("cpu", "total"), L("id", "/kubepods/x"),
        L("pod", "cart-7d9"), L("namespace", "shop")};
    REQUIRE_OK(convert("container_cpu_usage_seconds_total", NODE_PROM_COUNTER,
                       l, 5, 12.5));
    REQUIRE_EQ(pts.n, 1);
    const struct cbn_metric_point *p = &pts.v[0];
    CHECK_STR(p->service, "cart");
    CHECK_STR(p->instance, "10.0.0.7:9100");
    /* cpu, id, namespace are where, not what: pooled; pod is a service
     * label: pooled too. */
    CHECK_STR(p->name, "container_cpu_usage_seconds_total");
    CHECK_STR(p->labels,
              "cpu=total,id=/kubepods/x,namespace=shop,pod=cart-7d9");
    CHECK(p->cumulative);
    CHECK_EQ(p->time_ns, 1795421730000000000u);
    CHECK(p->value == 12.5);
}

static void test_node_exporter_modes_stay_apart(void)
{
    const struct node_prom_label idle[] = {L("job", "node"), L("cpu", "0"),
                                           L("mode", "idle")};
    const struct node_prom_label user[] = {L("job", "node"), L("cpu", "1"),
                                           L("mode", "user")};
    REQUIRE_OK(
        convert("node_cpu_seconds_total", NODE_PROM_COUNTER, idle, 3, 1));
    REQUIRE_OK(
        convert("node_cpu_seconds_total", NODE_PROM_COUNTER, user, 3, 2));
    REQUIRE_EQ(pts.n, 2);
    CHECK_STR(pts.v[0].service, "node");
    CHECK_STR(pts.v[0].name, "node_cpu_seconds_total{mode=\"idle\"}");
    CHECK_STR(pts.v[1].name, "node_cpu_seconds_total{mode=\"user\"}");
    CHECK_STR(pts.v[0].labels, "cpu=0,mode=idle");
}

static void test_skipped_samples(void)
{
    const struct node_prom_label svc[] = {L("service", "api"), L("le", "0.5")};
    const struct node_prom_label q[] = {L("service", "api"),
                                        L("quantile", "0.99")};
    const struct node_prom_label none[] = {L("instance", "x:1")};
    CHECK_OK(convert("rpc_seconds_bucket", NODE_PROM_HISTOGRAM, svc, 2, 3));
    CHECK_OK(convert("gc_seconds", NODE_PROM_SUMMARY, q, 2, 0.1));
    CHECK_OK(convert("up", NODE_PROM_GAUGE, none, 1, 1));
    /* With a default service (a node_exporter target), it is kept. */
    struct node_prom_sample up = {"up", "up", NODE_PROM_GAUGE, none, 1, 1,
                                  0,    0};
    CHECK_OK(node_prom_to_point(&up, &node_default_service_labels, "host-7",
                                "t", 1, &pts));
    REQUIRE_EQ(pts.n, 1);
    CHECK_STR(pts.v[0].service, "host-7");
    CHECK_STR(pts.v[0].name, "up");
    pts.n = 0;
    CHECK_OK(convert("temp", NODE_PROM_GAUGE, svc, 1, NAN));
    CHECK_EQ(pts.n, 0);
    /* Summary and histogram sums and counts are kept, as counters. */
    CHECK_OK(convert("rpc_seconds_count", NODE_PROM_HISTOGRAM, svc, 1, 30));
    REQUIRE_EQ(pts.n, 1);
    CHECK(pts.v[0].cumulative);
    /* An untyped *_total is a counter; a gauge is not. */
    CHECK_OK(convert("requests_total", NODE_PROM_UNTYPED, svc, 1, 30));
    CHECK_OK(convert("queue_depth", NODE_PROM_GAUGE, svc, 1, 4));
    REQUIRE_EQ(pts.n, 3);
    CHECK(pts.v[1].cumulative);
    CHECK(!pts.v[2].cumulative);
}

static void test_per_link_metric(void)
{
    const struct node_prom_label l[] = {
        L("job", "frontend"), L("peer_service", "cart"), L("instance", "fe-1")};
    REQUIRE_OK(convert("probe_duration_seconds", NODE_PROM_GAUGE, l, 3, 0.004));
    REQUIRE_EQ(pts.n, 1);
    CHECK_STR(pts.v[0].peer, "cart");
    CHECK_STR(pts.v[0].instance, "fe-1");
    CHECK_STR(pts.v[0].name, "probe_duration_seconds");
}

static void test_out_of_memory(void)
{
    const struct node_prom_label l[] = {L("container", "cart"), L("mode", "x")};
    for (int k = 0; k < 20; k++) {
        check_heap_install();
        struct node_points b;
        node_points_init(&b, 0);
        check_heap_fault(k, 1);
        struct node_prom_sample s = {"m", "m", NODE_PROM_GAUGE, l, 2, 1, 0, 0};
        int rv = node_prom_to_point(&s, &node_default_service_labels, NULL, "t",
                                    1, &b);
        CHECK(rv == SM_OK || rv == SM_ENOMEM);
        CHECK_EQ(b.n, rv == SM_OK ? 1 : 0);
        node_points_free(&b);
        check_heap_uninstall();
        if (rv == SM_OK) {
            return;
        }
    }
    check__fail(__FILE__, __LINE__, 0, "never succeeded");
}

static const struct check_test tests[] = {
    {"cAdvisor container", test_cadvisor_container},
    {"node_exporter modes stay apart", test_node_exporter_modes_stay_apart},
    {"skipped samples", test_skipped_samples},
    {"per-link metric", test_per_link_metric},
    {"out of memory", test_out_of_memory},
};

CHECK_MAIN(tests, setup, teardown)
