/* Tests for the OTLP JSON writer used by `sagemesh import`: whatever it
 * writes parses back into the same spans. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "node/client.h"
#include "node/ingest.h"

static void test_jaeger_to_otlp_round_trip(void)
{
    size_t len;
    char *text = check_read_sample("jaeger-api-traces.derived.json", &len);
    struct node_spans a, b;
    node_spans_init(&a, 0);
    node_spans_init(&b, 0);
    char err[SM_ERRMSG_SIZE] = "";
    REQUIRE_OK(node_jaeger_traces((const uint8_t *)text, len, &a, err));
    free(text);
    REQUIRE(a.n > 0);
    char *otlp;
    size_t olen;
    REQUIRE_OK(node_otlp_write(a.v, a.n, &otlp, &olen));
    int rv = node_otlp_traces((const uint8_t *)otlp, olen, &b, err);
    if (rv != SM_OK) {
        check__fail(__FILE__, __LINE__, 1, "%s", err);
    }
    free(otlp);
    REQUIRE_EQ(b.n, a.n);
    /* Same spans, possibly regrouped by service: match by span id. */
    for (size_t i = 0; i < a.n; i++) {
        const struct cbn_span *x = &a.v[i], *y = NULL;
        for (size_t k = 0; k < b.n && y == NULL; k++) {
            if (memcmp(b.v[k].span_id, x->span_id, 8) == 0 &&
                memcmp(b.v[k].trace_id, x->trace_id, 16) == 0) {
                y = &b.v[k];
            }
        }
        REQUIRE(y != NULL);
        CHECK_STR(y->service, x->service);
        CHECK_STR(y->instance, x->instance);
        CHECK_STR(y->operation, x->operation);
        CHECK_STR(y->peer, x->peer);
        CHECK_EQ(y->kind, x->kind);
        CHECK_EQ(y->error, x->error);
        CHECK(y->start_ns == x->start_ns && y->end_ns == x->end_ns);
        CHECK(memcmp(y->parent_id, x->parent_id, 8) == 0);
    }
    node_spans_free(&a);
    node_spans_free(&b);
}

static void test_escaping(void)
{
    struct cbn_span s = {.kind = CBN_SPAN_CLIENT,
                         .service = "we\"ird\\svc\n",
                         .instance = "",
                         .operation = "/a\tb",
                         .peer = "p\x01",
                         .start_ns = 1,
                         .end_ns = 2};
    s.trace_id[15] = 1;
    s.span_id[7] = 2;
    char *otlp;
    size_t len;
    REQUIRE_OK(node_otlp_write(&s, 1, &otlp, &len));
    struct node_spans b;
    node_spans_init(&b, 0);
    char err[SM_ERRMSG_SIZE];
    REQUIRE_OK(node_otlp_traces((const uint8_t *)otlp, len, &b, err));
    REQUIRE_EQ(b.n, 1);
    CHECK_STR(b.v[0].service, s.service);
    CHECK_STR(b.v[0].operation, s.operation);
    CHECK_STR(b.v[0].peer, s.peer);
    free(otlp);
    node_spans_free(&b);
}

static void test_refused_connection(void)
{
    struct node_client_response r;
    char err[SM_ERRMSG_SIZE];
    /* Port 1 on loopback: nothing listens there in a test sandbox. */
    int rv = node_client_request("127.0.0.1:1", "GET", "/healthz", "text/plain",
                                 NULL, 0, 2, &r, err);
    CHECK(rv == SM_EIO || rv == SM_ETIMEDOUT);
    CHECK(strstr(err, "127.0.0.1:1") != NULL);
    CHECK_EQ(node_client_request("localhost:80", "GET", "/", "x", NULL, 0, 1,
                                 &r, err),
             SM_EINVAL);
}

static const struct check_test tests[] = {
    {"Jaeger to OTLP round trip", test_jaeger_to_otlp_round_trip},
    {"escaping", test_escaping},
    {"refused connection", test_refused_connection},
};

CHECK_MAIN(tests, NULL, NULL)
