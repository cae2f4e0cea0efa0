/* Tests for peer flags and config files. */
#include <string.h>

#include "check.h"
#include "node/config.h"

static void test_file_and_defaults(void)
{
    struct node_config c;
    node_config_init(&c);
    char err[SM_ERRMSG_SIZE] = "";
    const char *text =
        "# peer on web-1\n"
        "id = web-1\n"
        "data-dir /var/lib/sagemesh   # trailing comment\n"
        "  qos-service = nginx-web\r\n"
        "qos-target-ms=200\n"
        "\n"
        "scrape = http://127.0.0.1:9100/metrics\n"
        "scrape = http://127.0.0.1:9256/metrics\n"
        "actuate = off\n";
    REQUIRE_OK(node_config_parse(&c, text, strlen(text), err));
    CHECK_STR(c.id, "web-1");
    CHECK_STR(c.data_dir, "/var/lib/sagemesh");
    CHECK_STR(c.qos_service, "nginx-web");
    CHECK(c.qos_target_ms == 200);
    CHECK_EQ(c.n_scrape, 2);
    CHECK_EQ(c.actuate, ACT_MODE_OFF);
    CHECK_STR(c.listen_http, "127.0.0.1:4318");
    CHECK(c.window_s == 30);
    CHECK_STR(c.ingest, "local");
    CHECK_OK(node_config_validate(&c, err));
    CHECK_OK(node_config_set(&c, "ingest", "sometimes", err));
    CHECK_EQ(node_config_validate(&c, err), SM_EINVAL);
    CHECK(strstr(err, "--ingest must be local or routed") != NULL);
    CHECK_OK(node_config_set(&c, "ingest", "routed", err));
    CHECK_OK(node_config_validate(&c, err));
    node_config_free(&c);
}

static void test_errors(void)
{
    struct node_config c;
    node_config_init(&c);
    char err[SM_ERRMSG_SIZE] = "";
    const char *bad = "window = 30\nwindow = soon\n";
    CHECK_EQ(node_config_parse(&c, bad, strlen(bad), err), SM_EINVAL);
    CHECK(strstr(err, "line 2") != NULL);
    CHECK_EQ(node_config_parse(&c, "frobnicate 1", 12, err), SM_EINVAL);
    CHECK(strstr(err, "unknown setting 'frobnicate'") != NULL);
    CHECK_EQ(node_config_parse(&c, "id\n", 3, err), SM_EMALFORMED);
    CHECK_EQ(node_config_set(&c, "actuate", "maybe", err), SM_EINVAL);
    CHECK_EQ(node_config_set(&c, "qos-percentile", "100", err), SM_EINVAL);

    /* Validation. */
    CHECK_EQ(node_config_validate(&c, err), SM_EINVAL);
    CHECK(strstr(err, "--data-dir") != NULL);
    CHECK_OK(node_config_set(&c, "data-dir", "/tmp/x", err));
    CHECK_OK(node_config_set(&c, "qos-service", "fe", err));
    CHECK_EQ(node_config_validate(&c, err), SM_EINVAL);
    CHECK(strstr(err, "--qos-target-ms") != NULL);
    CHECK_OK(node_config_set(&c, "qos-target-ms", "50", err));
    CHECK_OK(node_config_validate(&c, err));
    CHECK_OK(node_config_set(&c, "listen-http", "localhost:4318", err));
    CHECK_EQ(node_config_validate(&c, err), SM_EINVAL);
    CHECK_OK(node_config_set(&c, "listen-http", "[::1]:4318", err));
    CHECK_OK(node_config_validate(&c, err));
    CHECK_OK(node_config_set(&c, "resource-class", "my_queue_=other", err));
    CHECK_OK(node_config_validate(&c, err));
    CHECK_OK(node_config_set(&c, "resource-class", "gpu_=gpu", err));
    CHECK_EQ(node_config_validate(&c, err), SM_EINVAL);
    CHECK(strstr(err, "PREFIX=CLASS") != NULL);
    c.n_resource_class = 1;
    CHECK_OK(node_config_set(&c, "service-label", "app", err));
    CHECK_EQ(c.n_service_label, 1);
    CHECK_OK(node_config_set(&c, "scrape", "https://x:1/metrics", err));
    CHECK_EQ(node_config_validate(&c, err), SM_EINVAL);
    node_config_free(&c);
}

static void test_hostport(void)
{
    char host[64];
    int port;
    CHECK_OK(node_parse_hostport("0.0.0.0:4318", host, sizeof host, &port));
    CHECK_STR(host, "0.0.0.0");
    CHECK_EQ(port, 4318);
    CHECK_OK(node_parse_hostport("[::1]:0", host, sizeof host, &port));
    CHECK_STR(host, "::1");
    CHECK_EQ(port, 0);
    CHECK_EQ(node_parse_hostport("1.2.3.4", host, sizeof host, &port),
             SM_EINVAL);
    CHECK_EQ(node_parse_hostport("1.2.3.4:70000", host, sizeof host, &port),
             SM_EINVAL);
    CHECK_EQ(node_parse_hostport(":80", host, sizeof host, &port), SM_EINVAL);
    CHECK_EQ(node_parse_hostport("1.2.3.4:8x", host, sizeof host, &port),
             SM_EINVAL);
}

static void test_list_limit(void)
{
    struct node_config c;
    node_config_init(&c);
    char err[SM_ERRMSG_SIZE];
    for (int i = 0; i < NODE_MAX_LIST; i++) {
        REQUIRE_OK(node_config_set(&c, "join", "10.0.0.1:7401", err));
    }
    CHECK_EQ(node_config_set(&c, "join", "10.0.0.1:7401", err), SM_ERANGE);
    node_config_free(&c);
}

static const struct check_test tests[] = {
    {"file and defaults", test_file_and_defaults},
    {"errors", test_errors},
    {"host:port", test_hostport},
    {"list limit", test_list_limit},
};

CHECK_MAIN(tests, NULL, NULL)
