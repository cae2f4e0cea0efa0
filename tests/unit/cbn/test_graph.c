/* Tests for the CBN structure (order, metanodes, links, ageing, versions)
 * and for normal values. */
#include <math.h>
#include <string.h>

#include "base/err.h"
#include "cbn/cbn.h"
#include "cbn/internal.h"
#include "check.h"

struct e
{
    const char *caller, *callee;
    int paired;
};

/* A window with @services (NULL-terminated) and @edges (caller NULL ends). */
static struct cbn_window *make_window(const char *const *services,
                                      const struct e *edges)
{
    size_t ns = 0, ne = 0, bytes = 1;
    for (; services[ns] != NULL; ns++) {
        bytes += strlen(services[ns]) + 1;
    }
    for (; edges[ne].caller != NULL; ne++) {
        bytes += strlen(edges[ne].caller) + strlen(edges[ne].callee) + 2;
    }
    struct cbn_window *w = cbn__window_alloc(ns, 0, ne, bytes);
    REQUIRE(w != NULL);
    for (size_t i = 0; i < ns; i++) {
        w->services[i].name = cbn__window_add_string(w, services[i]);
        w->services[i].requests = 10;
        w->services[i].metrics = cbn__window_take_metrics(w, 0);
    }
    for (size_t i = 0; i < ne; i++) {
        struct cbn_window_edge *x = &w->edges[i];
        x->caller = cbn__window_add_string(w, edges[i].caller);
        x->callee = cbn__window_add_string(w, edges[i].callee);
        x->calls = 10;
        x->paired = edges[i].paired ? 10 : 0;
        x->inferred = !edges[i].paired;
        for (int p = 0; p < CBN_N_PCT; p++) {
            x->network_ms[p] = edges[i].paired ? 1.0f : NAN;
        }
    }
    cbn__window_sort(w);
    return w;
}

static struct cbn_graph *observe(struct cbn_graph *g,
                                 const char *const *svcs,
                                 const struct e *edges,
                                 int *changed)
{
    struct cbn_window *w = make_window(svcs, edges);
    REQUIRE_OK(cbn_graph_observe(g, w, changed));
    cbn_window_free(w);
    return g;
}

static const char *node_name(const struct cbn_graph *g, size_t i)
{
    return cbn_graph_node(g, i)->name;
}

static void test_topological_order(void)
{
    /* The sample application: frontend -> middle -> backend, frontend ->
     * cache. Callees first, ties by name. */
    struct cbn_graph *g;
    REQUIRE_OK(cbn_graph_new(NULL, &g));
    CHECK_EQ(cbn_graph_version(g), 0);
    static const char *const svcs[] = {"frontend", "middle", "backend", "cache",
                                       NULL};
    static const struct e edges[] = {{"frontend", "middle", 1},
                                     {"middle", "backend", 1},
                                     {"frontend", "cache", 1},
                                     {NULL, NULL, 0}};
    int changed;
    observe(g, svcs, edges, &changed);
    CHECK(changed);
    CHECK_EQ(cbn_graph_version(g), 1);
    REQUIRE_EQ(cbn_graph_node_count(g), 4);
    CHECK_STR(node_name(g, 0), "backend");
    CHECK_STR(node_name(g, 1), "cache");
    CHECK_STR(node_name(g, 2), "middle");
    CHECK_STR(node_name(g, 3), "frontend");
    const struct cbn_graph_node *fe = cbn_graph_node(g, 3);
    REQUIRE_EQ(fe->n_parents, 2);
    CHECK_EQ(fe->parents[0], 1);
    CHECK_EQ(fe->parents[1], 2);
    CHECK_EQ(cbn_graph_node(g, 2)->n_parents, 1);
    CHECK_EQ(cbn_graph_node(g, 0)->n_parents, 0);
    /* Every parent comes before its child. */
    for (size_t i = 0; i < cbn_graph_node_count(g); i++) {
        const struct cbn_graph_node *n = cbn_graph_node(g, i);
        for (size_t p = 0; p < n->n_parents; p++) {
            CHECK(n->parents[p] < i);
        }
    }
    /* Links: one network node per paired edge, parent of the caller. */
    REQUIRE_EQ(cbn_graph_link_count(g), 3);
    CHECK_EQ(fe->n_links, 2);
    const struct cbn_graph_link *l = cbn_graph_link(g, fe->links[0]);
    CHECK_STR(l->caller, "frontend");
    CHECK_EQ(l->caller_node, 3);
    CHECK_EQ(cbn_graph_find(g, "cache"), 1);
    CHECK_EQ(cbn_graph_find(g, "nope"), SIZE_MAX);

    /* The same structure again: no new version. */
    observe(g, svcs, edges, &changed);
    CHECK(!changed);
    CHECK_EQ(cbn_graph_version(g), 1);
    cbn_graph_free(g);
}

static void test_cycles_become_metanodes(void)
{
    struct cbn_graph *g;
    REQUIRE_OK(cbn_graph_new(NULL, &g));
    static const char *const svcs[] = {"web", "a", "b", "c", "db", NULL};
    /* a <-> b and a -> c -> b form one cycle {a, b, c}; web calls a; b
     * calls db. */
    static const struct e edges[] = {
        {"web", "a", 1}, {"a", "b", 1},  {"b", "a", 1},  {"a", "c", 1},
        {"c", "b", 1},   {"b", "db", 1}, {NULL, NULL, 0}};
    int changed;
    observe(g, svcs, edges, &changed);
    REQUIRE_EQ(cbn_graph_node_count(g), 3);
    CHECK_STR(node_name(g, 0), "db");
    CHECK_STR(node_name(g, 1), "a+b+c");
    CHECK_STR(node_name(g, 2), "web");
    const struct cbn_graph_node *meta = cbn_graph_node(g, 1);
    REQUIRE_EQ(meta->n_members, 3);
    CHECK_STR(meta->members[0], "a");
    CHECK_STR(meta->members[2], "c");
    CHECK_EQ(meta->n_parents, 1);
    CHECK_EQ(cbn_graph_find(g, "c"), 1);
    cbn_graph_free(g);
}

static void test_ageing_and_inferred(void)
{
    struct cbn_graph_config cfg = {.age_out_windows = 3};
    struct cbn_graph *g;
    REQUIRE_OK(cbn_graph_new(&cfg, &g));
    static const char *const with[] = {"fe", "old", NULL};
    static const struct e e_with[] = {
        {"fe", "old", 1}, {"fe", "redis:6379", 0}, {NULL, NULL, 0}};
    static const char *const without[] = {"fe", NULL};
    static const struct e e_without[] = {{"fe", "redis:6379", 0},
                                         {NULL, NULL, 0}};
    int changed;
    observe(g, with, e_with, &changed);
    CHECK_EQ(cbn_graph_node_count(g), 3);
    size_t redis = cbn_graph_find(g, "redis:6379");
    REQUIRE(redis != SIZE_MAX);
    CHECK(cbn_graph_node(g, redis)->inferred);
    CHECK(!cbn_graph_node(g, cbn_graph_find(g, "old"))->inferred);
    CHECK_EQ(cbn_graph_link_count(g), 1); /* only the paired edge */
    uint64_t v = cbn_graph_version(g);
    observe(g, without, e_without, &changed);
    CHECK(!changed);
    observe(g, without, e_without, &changed);
    CHECK(!changed);
    observe(g, without, e_without, &changed); /* third window without it */
    CHECK(changed);
    CHECK_EQ(cbn_graph_version(g), v + 1);
    CHECK_EQ(cbn_graph_find(g, "old"), SIZE_MAX);
    CHECK_EQ(cbn_graph_node_count(g), 2);
    CHECK_EQ(cbn_graph_link_count(g), 0);
    cbn_graph_free(g);
}

static void test_graph_out_of_memory(void)
{
    static const char *const svcs[] = {"web", "a", "b", "db", NULL};
    static const struct e edges[] = {{"web", "a", 1},
                                     {"a", "b", 1},
                                     {"b", "a", 1},
                                     {"b", "db", 1},
                                     {NULL, NULL, 0}};
    struct cbn_window *w = make_window(svcs, edges);
    for (int k = 0; k < 500; k++) {
        check_heap_install();
        check_heap_fault(k, 1);
        struct cbn_graph *g = NULL;
        int changed = 0;
        int rv = cbn_graph_new(NULL, &g);
        if (rv == SM_OK) {
            rv = cbn_graph_observe(g, w, &changed);
        }
        if (rv == SM_OK) {
            CHECK_EQ(cbn_graph_node_count(g), 3);
        } else {
            CHECK_EQ(rv, SM_ENOMEM);
            /* A failed observe left a usable graph: it succeeds now. */
            if (g != NULL) {
                CHECK_EQ(cbn_graph_version(g), 0);
                CHECK_OK(cbn_graph_observe(g, w, &changed));
                CHECK_EQ(cbn_graph_node_count(g), 3);
            }
        }
        cbn_graph_free(g);
        check_heap_uninstall();
        if (rv == SM_OK) {
            CHECK(k > 5);
            cbn_window_free(w);
            return;
        }
    }
    cbn_window_free(w);
    check__fail(__FILE__, __LINE__, 0, "observe never succeeded");
}

/* A window with one service, one metric and one edge, for normals. */
static struct cbn_window *metric_window(float cpu_p50,
                                        int violated,
                                        uint64_t calls,
                                        float net_p50)
{
    struct cbn_window *w = cbn__window_alloc(1, 1, 1, 64);
    REQUIRE(w != NULL);
    const char *empty = cbn__window_add_string(w, "");
    w->qos_target_ms = 100;
    w->qos_latency_ms = violated ? 150 : 50;
    w->qos_violated = violated;
    struct cbn_window_service *s = &w->services[0];
    s->name = cbn__window_add_string(w, "cart");
    s->n_metrics = 1;
    s->metrics = cbn__window_take_metrics(w, 1);
    s->metrics[0].name = cbn__window_add_string(w, "cpu");
    s->metrics[0].peer = empty;
    s->metrics[0].samples = 4;
    for (int p = 0; p < CBN_N_PCT; p++) {
        s->metrics[0].pct[p] = cpu_p50 * (0.5f + 0.2f * (float)p);
    }
    struct cbn_window_edge *e = &w->edges[0];
    e->caller = s->name;
    e->callee = cbn__window_add_string(w, "db");
    e->calls = e->paired = calls;
    for (int p = 0; p < CBN_N_PCT; p++) {
        e->network_ms[p] = net_p50;
    }
    return w;
}

static void test_normals(void)
{
    struct cbn_normals *n;
    REQUIRE_OK(cbn_normals_new(&n));
    float pct[CBN_N_PCT];
    CHECK_EQ(cbn_normals_metric(n, "cart", "cpu", "", pct, NULL), SM_ENOTFOUND);
    /* Met QoS: cpu p50 of 1, 2, 3; violated: 50 and 60 (ignored). Links:
     * low-load windows (few calls) have a 2 ms difference, busy ones 9. */
    const float cpu[] = {1, 50, 2, 60, 3};
    const int viol[] = {0, 1, 0, 1, 0};
    const uint64_t calls[] = {10, 900, 12, 1000, 11};
    const float net[] = {2.0f, 9.0f, 2.2f, 9.5f, 1.9f};
    for (int i = 0; i < 5; i++) {
        struct cbn_window *w = metric_window(cpu[i], viol[i], calls[i], net[i]);
        REQUIRE_OK(cbn_normals_observe(n, w));
        cbn_window_free(w);
    }
    uint32_t windows;
    REQUIRE_OK(cbn_normals_metric(n, "cart", "cpu", "", pct, &windows));
    CHECK_EQ(windows, 3);
    CHECK_NEAR(pct[2], 2 * 0.9, 0.02); /* median of the p50s 0.9x1..3 */
    CHECK_NEAR(pct[0], 2 * 0.5, 0.01);
    double ms;
    REQUIRE_OK(cbn_normals_link_delay(n, "cart", "db", &ms));
    CHECK_NEAR(ms, 1.95, 0.001); /* the windows with 10 and 11 calls */
    CHECK_EQ(cbn_normals_link_delay(n, "db", "cart", &ms), SM_ENOTFOUND);
    cbn_normals_free(n);
}

static const struct check_test tests[] = {
    {"topological order, callees first", test_topological_order},
    {"cycles become metanodes", test_cycles_become_metanodes},
    {"ageing and inferred callees", test_ageing_and_inferred},
    {"graph out of memory", test_graph_out_of_memory},
    {"normal values", test_normals},
};

CHECK_MAIN(tests, NULL, NULL)
