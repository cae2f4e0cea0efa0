/* Tests for the span fields shared by the trace parsers. */
#include <string.h>

#include "check.h"
#include "node/ingest.h"

static void test_ids(void)
{
    uint8_t id[16];
    CHECK_OK(node_decode_id("ddd32ae4915f570ff3b6077ee2305301", 32, id, 16));
    CHECK_EQ(id[0], 0xdd);
    CHECK_EQ(id[15], 0x01);
    CHECK_OK(node_decode_id("DDD32AE4915F570FF3B6077EE2305301", 32, id, 16));
    CHECK_EQ(id[1], 0xd3);
    /* Jaeger fixtures: short ids are left-padded. */
    CHECK_OK(node_decode_id("2", 1, id, 8));
    CHECK_EQ(id[7], 0x02);
    CHECK_EQ(id[0], 0);
    CHECK_OK(node_decode_id("abc", 3, id, 8));
    CHECK_EQ(id[6], 0x0a);
    CHECK_EQ(id[7], 0xbc);
    /* Base64 of the same bytes (protobuf JSON mapping). */
    CHECK_OK(node_decode_id("3dMq5JFfVw/ztgd+4jBTAQ==", 24, id, 16));
    CHECK_EQ(id[0], 0xdd);
    CHECK_EQ(id[15], 0x01);
    CHECK_OK(node_decode_id("ZP1fxMsxFtk=", 12, id, 8));
    CHECK_EQ(id[0], 0x64);
    CHECK_EQ(id[7], 0xd9);
    CHECK_EQ(node_decode_id("", 0, id, 8), SM_EMALFORMED);
    CHECK_EQ(node_decode_id("zz", 2, id, 8), SM_EMALFORMED);
    CHECK_EQ(node_decode_id("00112233445566778", 17, id, 8), SM_EMALFORMED);
}

static void test_u64(void)
{
    uint64_t v;
    CHECK_OK(node_parse_u64("1795421747430000000", 19, &v));
    CHECK(v == 1795421747430000000u);
    CHECK_OK(node_parse_u64("18446744073709551615", 20, &v));
    CHECK(v == UINT64_MAX);
    CHECK_EQ(node_parse_u64("18446744073709551616", 20, &v), SM_EMALFORMED);
    CHECK_EQ(node_parse_u64("-1", 2, &v), SM_EMALFORMED);
    CHECK_EQ(node_parse_u64("1.5", 3, &v), SM_EMALFORMED);
    CHECK_EQ(node_parse_u64("", 0, &v), SM_EMALFORMED);
}

static void test_naming_rule(void)
{
    struct sm_arena arena;
    sm_arena_init(&arena, 0);
    struct cbn_span s = {.kind = CBN_SPAN_SERVER};
    struct node_span_attrs a = {0};
    node_span_attr(&a, "http.target", "/api/home?x=1");
    REQUIRE_OK(node_span_finish(&s, &a, "GET", &arena));
    CHECK_STR(s.operation, "/api/home");
    node_span_attr(&a, "url.path", "/api/new");
    REQUIRE_OK(node_span_finish(&s, &a, "GET", &arena));
    CHECK_STR(s.operation, "/api/new");
    node_span_attr(&a, "http.route", "/api/:id");
    REQUIRE_OK(node_span_finish(&s, &a, "GET", &arena));
    CHECK_STR(s.operation, "/api/:id");
    struct node_span_attrs rpc = {0};
    node_span_attr(&rpc, "rpc.service", "Cart");
    node_span_attr(&rpc, "rpc.method", "Add");
    REQUIRE_OK(node_span_finish(&s, &rpc, "x", &arena));
    CHECK_STR(s.operation, "Cart/Add");
    struct node_span_attrs none = {0};
    REQUIRE_OK(node_span_finish(&s, &none, "compute", &arena));
    CHECK_STR(s.operation, "compute");
    CHECK_STR(s.peer, "");
    sm_arena_free(&arena);
}

static void test_peer_fallbacks(void)
{
    struct sm_arena arena;
    sm_arena_init(&arena, 0);
    struct cbn_span s = {.kind = CBN_SPAN_CLIENT};
    struct node_span_attrs a = {0};
    node_span_attr(&a, "url.full", "http://user@127.0.0.1:7002/api/home?q");
    REQUIRE_OK(node_span_finish(&s, &a, "GET", &arena));
    CHECK_STR(s.peer, "127.0.0.1:7002");
    node_span_attr(&a, "net.peer.name", "middle");
    REQUIRE_OK(node_span_finish(&s, &a, "GET", &arena));
    CHECK_STR(s.peer, "middle");
    node_span_attr(&a, "server.port", "7002");
    REQUIRE_OK(node_span_finish(&s, &a, "GET", &arena));
    CHECK_STR(s.peer, "middle:7002");
    node_span_attr(&a, "peer.service", "middle-svc");
    REQUIRE_OK(node_span_finish(&s, &a, "GET", &arena));
    CHECK_STR(s.peer, "middle-svc");
    struct node_span_attrs e = {0};
    node_span_attr(&e, "otel.status_code", "ERROR");
    s.error = 0;
    REQUIRE_OK(node_span_finish(&s, &e, "GET", &arena));
    CHECK(s.error);
    /* A 5xx answer is an error of the server, not of the calling client. */
    struct node_span_attrs h = {0};
    node_span_attr(&h, "http.response.status_code", "503");
    s.error = 0;
    REQUIRE_OK(node_span_finish(&s, &h, "GET", &arena));
    CHECK(!s.error);
    struct cbn_span srv = {.kind = CBN_SPAN_SERVER};
    REQUIRE_OK(node_span_finish(&srv, &h, "GET", &arena));
    CHECK(srv.error);
    node_span_attr(&h, "http.response.status_code", "404");
    srv.error = 0;
    REQUIRE_OK(node_span_finish(&srv, &h, "GET", &arena));
    CHECK(!srv.error);
    sm_arena_free(&arena);
}

static const struct check_test tests[] = {
    {"ids", test_ids},
    {"u64", test_u64},
    {"naming rule", test_naming_rule},
    {"peer fallbacks", test_peer_fallbacks},
};

CHECK_MAIN(tests, NULL, NULL)
