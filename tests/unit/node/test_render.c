/* Tests for the client's tables: the bodies of docs/http-api.md rendered,
 * null fields, empty lists, long and hostile names, and bodies that break
 * the contract (an error, never a crash, and no partial output). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "node/render.h"

/* ---- Bodies as docs/http-api.md gives them ----------------------------- */

static const char status_body[] =
    "{\"id\":\"web-1\", \"version\":\"0.1.0\", \"ready\":true, "
    "\"role\":\"standalone\",\n"
    " \"windows\":{\"open\":2, \"closed\":310, \"stored\":310, "
    "\"replayed\":0,\n"
    "            \"newest_end_unix_nano\":\"1700037300000000000\"},\n"
    " \"qos\":{\"service\":\"nginx-web\", \"operation\":null, "
    "\"percentile\":99,\n"
    "        \"target_ms\":200, \"last_latency_ms\":151.2, "
    "\"last_violated\":false},\n"
    " \"cbn\":{\"version\":3, \"nodes\":[{\"name\":\"nginx-web\", "
    "\"parents\":4, \"inferred\":false},\n"
    "   {\"name\":\"user-service\", \"parents\":1, \"inferred\":false},\n"
    "   {\"name\":\"user-mongodb\", \"parents\":0, \"inferred\":true},\n"
    "   {\"name\":\"media+text\", \"parents\":1, \"inferred\":false}]},\n"
    " \"model\":{\"version\":2, \"params\":709760, \"loaded\":false, "
    "\"training\":false,\n"
    "          \"rounds_ok\":2, \"rounds_failed\":0, \"rounds_finished\":2,\n"
    "          \"windows\":310, \"windows_new\":70, \"train_after\":240,\n"
    "          \"retrain_every\":240,\n"
    "          \"last_round\":{\"ok\":true, \"error\":null, "
    "\"mode\":\"incremental\",\n"
    "                        \"seconds\":6.2, \"windows\":310, "
    "\"val_loss\":1.9,\n"
    "                        \"model_version\":2}},\n"
    " \"diagnoses\":{\"stored\":4, \"ok\":4, \"failed\":0, \"dropped\":0, "
    "\"pending\":0},\n"
    " \"later_field\":{\"ignored\":[1,2,3]}}\n";

static const char diagnosis_1[] =
    "{\"id\":\"0000018bd2a9e6c0\", "
    "\"window_start_unix_nano\":\"1700037270000000000\",\n"
    "  \"window_end_unix_nano\":\"1700037300000000000\",\n"
    "  \"service\":\"nginx-web\", \"operation\":null, \"percentile\":99,\n"
    "  \"latency_ms\":512.3, \"target_ms\":200.0, \"violated\":true,\n"
    "  \"culprits\":[{\"service\":\"user-mongodb\", \"resource\":\"cpu\",\n"
    "               \"p_qos_met\":0.97, \"effect_ms\":301.5}],\n"
    "  \"ranking\":[{\"service\":\"user-mongodb\", \"score\":0.97, "
    "\"effect_ms\":301.5,\n"
    "              \"p_qos_met\":0.97, \"evidence\":8.1},\n"
    "             {\"service\":\"user-service\", \"score\":0.12, "
    "\"effect_ms\":20,\n"
    "              \"p_qos_met\":0.31, \"evidence\":1.25}],\n"
    "  \"path\":[\"user-mongodb\", \"user-service\", \"nginx-web\"],\n"
    "  \"unseen\":[\"user-mongodb: cpu p99\"],\n"
    "  \"model_version\":12, \"decided_by\":\"web-1\",\n"
    "  \"decided_unix_nano\":\"1700037301000000000\", "
    "\"diagnosis_ms\":4.2,\n"
    "  \"action\":null}";

/* A load spike: violated, nothing the model can change restores QoS. */
static const char diagnosis_2[] =
    "{\"id\":\"0000018bd2a8e6c0\", "
    "\"window_start_unix_nano\":\"1700037000000000000\",\n"
    "  \"window_end_unix_nano\":1700037030000000000,\n"
    "  \"service\":\"nginx-web\", \"operation\":null, \"percentile\":99,\n"
    "  \"latency_ms\":250, \"target_ms\":200.0, \"violated\":true,\n"
    "  \"culprits\":[], \"ranking\":[{\"service\":\"nginx-web\", "
    "\"score\":0.2}],\n"
    "  \"path\":[], \"unseen\":[], \"model_version\":11, "
    "\"decided_by\":\"web-2\", \"action\":null}";

static const char services_body[] =
    "{\"cbn_version\":3,\n"
    " \"services\":[{\"name\":\"user-mongodb\", \"node\":\"user-mongodb\",\n"
    "              \"inferred\":true, \"callers\":[\"user-service\"], "
    "\"callees\":[]},\n"
    "             {\"name\":\"user-service\", \"node\":\"user-service\",\n"
    "              \"inferred\":false, \"callers\":[\"nginx-web\"],\n"
    "              \"callees\":[\"user-mongodb\", \"user-memcached\"]}]}";

static char *text;      /* what the last render() wrote */
static size_t n_failed; /* windows not diagnosed (DIAGNOSE_RESULT) */
static size_t text_len;
static char errmsg[SM_ERRMSG_SIZE];

enum which {
    STATUS,
    SERVICES,
    DIAGNOSES,
    DIAGNOSE_RESULT,
    TRAIN_OUTCOME,
};

/* Renders @body with the renderer @w into `text`. */
static int render(enum which w, const char *body)
{
    free(text);
    text = NULL;
    FILE *out = open_memstream(&text, &text_len);
    REQUIRE(out != NULL);
    int rv = SM_EINVAL, flag = -1;
    size_t len = strlen(body);
    errmsg[0] = '\0';
    switch (w) {
        case STATUS:
            rv = node_render_status(body, len, out, &flag, errmsg);
            break;
        case SERVICES:
            rv = node_render_services(body, len, out, errmsg);
            break;
        case DIAGNOSES:
            rv = node_render_diagnoses(body, len, out, errmsg);
            break;
        case DIAGNOSE_RESULT:
            rv = node_render_diagnose_result(body, len, &flag, &n_failed, out,
                                             errmsg);
            break;
        case TRAIN_OUTCOME:
            rv = node_render_train_outcome(body, len, out, &flag, errmsg);
            break;
    }
    fclose(out);
    return rv;
}

/* Checks that `text` holds @needle. */
#define CHECK_HAS(needle)                                                   \
    do {                                                                    \
        if (strstr(text, needle) == NULL) {                                 \
            check__fail(__FILE__, __LINE__, 0, "no \"%s\" in:\n%s", needle, \
                        text);                                              \
        }                                                                   \
    } while (0)

static void teardown(void)
{
    free(text);
    text = NULL;
}

/* ---- Status ------------------------------------------------------------ */

static void test_status(void)
{
    int ready = 0;
    FILE *null_out = NULL;
    REQUIRE_OK(render(STATUS, status_body));
    CHECK_STR(text,
              "peer        web-1 (sagemesh 0.1.0, standalone)\n"
              "ready       yes\n"
              "windows     2 open, 310 closed, 310 stored, 0 replayed; newest "
              "ended 2023-11-15T08:35:00Z\n"
              "qos         nginx-web p99 target 200 ms; last window 151.2 ms "
              "(met)\n"
              "cbn         version 3, 4 nodes (1 inferred)\n"
              "model       version 2, 709760 parameters; 310 windows held\n"
              "training    idle; 2 rounds finished (2 ok, 0 failed)\n"
              "last round  ok: model version 2 (incremental, 6.2 s, 310 "
              "windows, validation loss 1.9)\n"
              "next round  after 170 more windows\n"
              "diagnoses   4 stored (4 ok, 0 failed, 0 dropped, 0 pending)\n");
    CHECK_OK(node_render_status(status_body, strlen(status_body), null_out,
                                &ready, errmsg));
    CHECK_EQ(ready, 1);
}

static void test_status_nulls(void)
{
    /* A fresh peer: no QoS, nothing measured, no model, no round. */
    static const char body[] =
        "{\"id\":\"p\\u0007x\", \"ready\":false,"
        " \"windows\":{\"open\":0, \"closed\":3, \"stored\":3, "
        "\"replayed\":0, \"newest_end_unix_nano\":null},"
        " \"qos\":{\"service\":null, \"operation\":null, \"target_ms\":0,"
        "        \"last_latency_ms\":null, \"last_violated\":false},"
        " \"cbn\":{\"version\":0, \"nodes\":[]},"
        " \"model\":{\"version\":0, \"training\":false, \"rounds_ok\":0,"
        "   \"rounds_failed\":0, \"rounds_finished\":0, \"windows\":3,"
        "   \"windows_new\":3, \"train_after\":240, \"retrain_every\":0,"
        "   \"last_round\":null},"
        " \"diagnoses\":{\"stored\":0, \"ok\":0, \"failed\":0, "
        "\"dropped\":0, \"pending\":0}}";
    int ready = 1;
    REQUIRE_OK(node_render_status(body, strlen(body), NULL, &ready, errmsg));
    CHECK_EQ(ready, 0);
    REQUIRE_OK(render(STATUS, body));
    CHECK_HAS("peer        p?x\n");
    CHECK_HAS("ready       no");
    CHECK_HAS("3 stored, 0 replayed\n");
    CHECK_HAS("qos         not configured");
    CHECK_HAS("cbn         version 0, 0 nodes\n");
    CHECK_HAS("model       none yet; 3 windows held\n");
    CHECK_HAS("last round  none yet\n");
    CHECK_HAS("next round  after 237 more windows (a first model)\n");

    /* QoS configured but not measured; a failed round; training now. */
    static const char body2[] =
        "{\"id\":\"p\", \"ready\":true,"
        " \"windows\":{\"open\":0, \"closed\":3, \"stored\":3, \"replayed\":0},"
        " \"qos\":{\"service\":\"fe\", \"operation\":\"/api/x\","
        "   \"percentile\":99.9, \"target_ms\":40.5, \"last_latency_ms\":null,"
        "   \"last_violated\":null},"
        " \"cbn\":{\"version\":1, \"nodes\":[{\"name\":\"fe\"}]},"
        " \"model\":{\"version\":4, \"training\":true, \"rounds_ok\":4,"
        "   \"rounds_failed\":1, \"rounds_finished\":5, \"windows\":300,"
        "   \"last_round\":{\"ok\":false, \"error\":\"loss diverged\","
        "     \"mode\":null, \"seconds\":1.25, \"windows\":null,"
        "     \"val_loss\":null, \"model_version\":null}},"
        " \"diagnoses\":{\"stored\":0, \"ok\":0, \"failed\":0, "
        "\"dropped\":0, \"pending\":0}}";
    REQUIRE_OK(render(STATUS, body2));
    CHECK_HAS(
        "qos         fe /api/x p99.9 target 40.5 ms; last window not "
        "measured yet\n");
    CHECK_HAS("training    running; 5 rounds finished (4 ok, 1 failed)\n");
    CHECK_HAS("last round  failed after 1.2 s: loss diverged\n");
    CHECK_HAS("next round  running now\n");
}

/* Replaces the first @from in @body by @to, in a static buffer (so @body
 * must not be the result of an earlier call). */
static const char *patch(const char *body, const char *from, const char *to)
{
    static char buf[8192];
    const char *at = strstr(body, from);
    REQUIRE(at != NULL);
    REQUIRE(strlen(body) + strlen(to) < sizeof buf);
    snprintf(buf, sizeof buf, "%.*s%s%s", (int)(at - body), body, to,
             at + strlen(from));
    return buf;
}

static void test_status_contract(void)
{
    static const struct
    {
        const char *from, *to, *why;
    } cases[] = {
        {"\"ready\":true", "\"ready\":\"yes\"",
         "ready: expected a boolean, got a string"},
        {"\"rounds_finished\":2", "\"rounds_finished\":\"two\"",
         "model.rounds_finished: expected a non-negative integer"},
        {"\"rounds_finished\":2", "\"rounds_finished\":-2",
         "model.rounds_finished: expected a non-negative integer"},
        {"\"rounds_finished\":2", "\"rounds_finished\":null",
         "model.rounds_finished: expected a number, got null"},
        {"\"id\":\"web-1\"", "\"id\":7", "id: expected a string"},
        {"\"cbn\":{", "\"cbn\":[], \"x\":{", "cbn: expected an object"},
        {"\"nodes\":[", "\"nodes\":[3,", "cbn.nodes[0]: expected an object"},
        {"\"last_latency_ms\":151.2", "\"last_latency_ms\":\"inf\"",
         "qos.last_latency_ms: expected a finite number"},
        {"\"diagnoses\":{", "\"diagnosez\":{", "diagnoses is missing"},
        {"\"model\":{", "\"model\":false, \"m\":{",
         "model: expected an object, got a boolean"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *body = patch(status_body, cases[i].from, cases[i].to);
        int rv = render(STATUS, body);
        CHECK_EQ(rv, SM_EMALFORMED);
        CHECK_EQ(text_len, 0);
        if (strstr(errmsg, cases[i].why) == NULL) {
            check__fail(__FILE__, __LINE__, 0, "case %zu: \"%s\" lacks \"%s\"",
                        i, errmsg, cases[i].why);
        }
    }
    CHECK_EQ(render(STATUS, ""), SM_EMALFORMED);
    CHECK(strstr(errmsg, "JSON") != NULL);
    CHECK_EQ(render(STATUS, "[1,2]"), SM_EMALFORMED);
    CHECK(strstr(errmsg, "not a JSON object") != NULL);
    CHECK_EQ(render(STATUS, "{\"id\":\"x\"} trailing"), SM_EMALFORMED);
    CHECK_EQ(render(STATUS, "null"), SM_EMALFORMED);
    CHECK_EQ(text_len, 0);
}

/* Every proper prefix of a body is broken JSON: an error, no output. */
static void test_truncated_bodies(void)
{
    static const struct
    {
        enum which w;
        const char *body;
    } bodies[] = {{STATUS, status_body},
                  {SERVICES, services_body},
                  {DIAGNOSES, "{\"diagnoses\":[%s,%s]}"}};
    for (size_t b = 0; b < sizeof bodies / sizeof bodies[0]; b++) {
        char full[8192];
        snprintf(full, sizeof full, bodies[b].body, diagnosis_1, diagnosis_2);
        size_t len = strlen(full);
        REQUIRE_OK(render(bodies[b].w, full));
        for (size_t cut = 0; cut + 2 < len; cut++) {
            char *part = strndup(full, cut);
            REQUIRE(part != NULL);
            int rv = render(bodies[b].w, part);
            if (rv == SM_OK || text_len != 0) {
                check__fail(__FILE__, __LINE__, 0, "body %zu cut at %zu: %s", b,
                            cut, sm_errname(rv));
            }
            free(part);
        }
    }
}

/* ---- Services ---------------------------------------------------------- */

static void test_services(void)
{
    REQUIRE_OK(render(SERVICES, services_body));
    CHECK_STR(text,
              "CBN version 3, 2 services\n"
              "SERVICE        NODE          CALLERS       CALLEES\n"
              "user-mongodb*  user-mongodb  user-service  -\n"
              "user-service   user-service  nginx-web     user-mongodb, "
              "user-memcached\n"
              "* inferred: named only by its callers' spans\n");

    REQUIRE_OK(render(SERVICES, "{\"cbn_version\":0, \"services\":[]}"));
    CHECK_HAS("no services yet");

    /* A cycle's metanode; a 300-character name widens its column. */
    char name[301];
    memset(name, 'n', 300);
    name[300] = '\0';
    char body[1024];
    snprintf(body, sizeof body,
             "{\"cbn_version\":9, \"services\":["
             "{\"name\":\"%s\", \"node\":\"a+b\", \"callers\":[], "
             "\"callees\":[\"b\"]},"
             "{\"name\":\"b\", \"node\":\"a+b\", \"callers\":[\"%s\"], "
             "\"callees\":[]}]}",
             name, name);
    REQUIRE_OK(render(SERVICES, body));
    char line[1024];
    snprintf(line, sizeof line, "\n%s  a+b   -", name);
    CHECK_HAS(line);
    snprintf(line, sizeof line, "\nb%*s  a+b   %s  -\n", 299, "", name);
    CHECK_HAS(line);

    /* Contract breaks. */
    CHECK_EQ(render(SERVICES, "{\"cbn_version\":1, \"services\":{}}"),
             SM_EMALFORMED);
    CHECK_EQ(render(SERVICES,
                    "{\"cbn_version\":1, \"services\":[{\"name\":"
                    "\"a\", \"node\":\"a\", \"callers\":[1], "
                    "\"callees\":[]}]}"),
             SM_EMALFORMED);
    CHECK_STR(errmsg,
              "services[0].callers[0]: expected a string, got a number");
    CHECK_EQ(render(SERVICES, "{\"services\":[]}"), SM_EMALFORMED);
    CHECK_STR(errmsg, "cbn_version is missing");
    CHECK_EQ(text_len, 0);
}

/* ---- Diagnoses --------------------------------------------------------- */

static void test_diagnoses(void)
{
    char body[8192];
    snprintf(body, sizeof body, "{\"diagnoses\":[%s]}", diagnosis_1);
    REQUIRE_OK(render(DIAGNOSES, body));
    CHECK_STR(text,
              "WINDOW END            CULPRIT       RESOURCE  P(QOS MET)  "
              "LATENCY / TARGET  MODEL  PATH\n"
              "2023-11-15T08:35:00Z  user-mongodb  cpu       0.97        "
              "512.3 / 200 ms    12     user-mongodb -> user-service -> "
              "nginx-web\n"
              "note: 1 of these diagnoses extrapolate: some inputs lie "
              "outside what the\nmodel was trained on ('-o json' lists them "
              "under \"unseen\")\n");

    /* Newest first as given; a load spike has no culprit. */
    snprintf(body, sizeof body, "{\"diagnoses\":[%s,%s]}", diagnosis_1,
             diagnosis_2);
    REQUIRE_OK(render(DIAGNOSES, body));
    CHECK_HAS(
        "\n2023-11-15T08:30:30Z  (none)        -         -           "
        "250 / 200 ms      11     -\n");
    CHECK_HAS("(none): no change to one service restores the QoS");

    /* Two culprits: the second gets a row of its own columns. */
    const char *two = patch(diagnosis_1, "\"culprits\":[",
                            "\"culprits\":[{\"service\":\"media\\u001b[2J\", "
                            "\"resource\":\"disk\", \"p_qos_met\":0.5},");
    snprintf(body, sizeof body, "{\"diagnoses\":[%s]}", two);
    REQUIRE_OK(render(DIAGNOSES, body));
    CHECK_HAS(
        "2023-11-15T08:35:00Z  media?[2J     disk      0.50        "
        "512.3 / 200 ms    12     user-mongodb");
    CHECK_HAS("\n                      user-mongodb  cpu       0.97\n");
    CHECK(strchr(text, '\x1b') == NULL);
}

static void test_diagnoses_empty_and_broken(void)
{
    REQUIRE_OK(render(DIAGNOSES, "{\"diagnoses\":[]}"));
    CHECK_HAS("no diagnoses yet");
    CHECK_HAS("no model yet");

    static const struct
    {
        const char *from, *to, *why;
    } cases[] = {
        {"\"p_qos_met\":0.97,", "\"p_qos_met\":\"high\",",
         "diagnoses[0].culprits[0].p_qos_met: expected a finite number"},
        {"\"window_end_unix_nano\":\"1700037300000000000\"",
         "\"window_end_unix_nano\":\"99999999999999999999\"",
         "diagnoses[0].window_end_unix_nano: expected a non-negative"},
        {"\"path\":[\"user-mongodb\"", "\"path\":[null",
         "diagnoses[0].path[0]: expected a string, got null"},
        {"\"culprits\":[", "\"culprits\":null, \"c\":[",
         "diagnoses[0].culprits: expected an array, got null"},
        {"\"resource\":\"cpu\",", "",
         "diagnoses[0].culprits[0].resource is "
         "missing"},
        {"\"latency_ms\":512.3,", "\"latency_ms\":true,",
         "diagnoses[0].latency_ms: expected a number, got a boolean"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char body[8192];
        snprintf(body, sizeof body, "{\"diagnoses\":[%s]}",
                 patch(diagnosis_1, cases[i].from, cases[i].to));
        CHECK_EQ(render(DIAGNOSES, body), SM_EMALFORMED);
        CHECK_EQ(text_len, 0);
        if (strstr(errmsg, cases[i].why) == NULL) {
            check__fail(__FILE__, __LINE__, 0, "case %zu: \"%s\" lacks \"%s\"",
                        i, errmsg, cases[i].why);
        }
    }
    CHECK_EQ(render(DIAGNOSES, "{\"diagnoses\":[1]}"), SM_EMALFORMED);
    CHECK_STR(errmsg, "diagnoses[0]: expected an object, got a number");
    CHECK_EQ(render(DIAGNOSES, "{\"diagnoses\":\"none\"}"), SM_EMALFORMED);
    CHECK_EQ(render(DIAGNOSES, "{}"), SM_EMALFORMED);
    CHECK_STR(errmsg, "diagnoses is missing");
}

/* ---- Diagnose ---------------------------------------------------------- */

static void test_diagnose_ticket(void)
{
    char id[NODE_RENDER_ID_SIZE] = "";
    uint64_t windows = 0;
    const char *ok = "{\"request\":\"0000018bd2a9e6c0\", \"windows\":3}";
    REQUIRE_OK(
        node_render_diagnose_ticket(ok, strlen(ok), id, &windows, errmsg));
    CHECK_STR(id, "0000018bd2a9e6c0");
    CHECK_EQ(windows, 3);
    static const char *const bad[] = {
        "{\"request\":\"../../x\", \"windows\":3}",
        "{\"request\":\"a b\", \"windows\":3}",
        "{\"request\":\"\", \"windows\":3}",
        "{\"request\":\"a&b=c\", \"windows\":3}",
        "{\"request\":\"a\\u0000b\", \"windows\":3}",
        "{\"request\":7, \"windows\":3}",
        "{\"request\":\"a\"}",
        "{\"windows\":3}",
        "not json",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        strcpy(id, "unchanged");
        CHECK_EQ(node_render_diagnose_ticket(bad[i], strlen(bad[i]), id,
                                             &windows, errmsg),
                 SM_EMALFORMED);
        CHECK_STR(id, "unchanged");
    }
    char longer[200];
    snprintf(longer, sizeof longer, "{\"request\":\"%0*d\", \"windows\":1}",
             NODE_RENDER_ID_SIZE, 0);
    CHECK_EQ(node_render_diagnose_ticket(longer, strlen(longer), id, &windows,
                                         errmsg),
             SM_EMALFORMED);
}

static void test_diagnose_result(void)
{
    int done = 1;
    const char *pending =
        "{\"request\":\"r1\", \"done\":false, \"diagnoses\":[]}";
    REQUIRE_OK(node_render_diagnose_result(pending, strlen(pending), &done,
                                           NULL, NULL, errmsg));
    CHECK_EQ(done, 0);
    REQUIRE_OK(render(DIAGNOSE_RESULT, pending));
    CHECK_EQ(text_len, 0);

    char body[8192];
    snprintf(body, sizeof body,
             "{\"request\":\"r1\", \"done\":true, \"diagnoses\":[%s,%s]}",
             diagnosis_2, diagnosis_1);
    REQUIRE_OK(render(DIAGNOSE_RESULT, body));
    CHECK_STR(text,
              "window 2023-11-15T08:30:00Z to 2023-11-15T08:30:30Z: nginx-web "
              "p99 250 / 200 ms, violated (model 11)\n"
              "RANK  SERVICE    SCORE  EFFECT_MS  P(QOS MET)  EVIDENCE\n"
              "1     nginx-web  0.20   -          -           -\n"
              "culprit: none (no change to one service restores the QoS: a "
              "load spike?)\n"
              "\n"
              "window 2023-11-15T08:34:30Z to 2023-11-15T08:35:00Z: nginx-web "
              "p99 512.3 / 200 ms, violated (model 12)\n"
              "RANK  SERVICE       SCORE  EFFECT_MS  P(QOS MET)  EVIDENCE\n"
              "1     user-mongodb  0.97   301.5      0.97        8.1\n"
              "2     user-service  0.12   20.0       0.31        1.2\n"
              "culprit: user-mongodb (cpu, P(QoS met) 0.97 if fixed); path "
              "user-mongodb -> user-service -> nginx-web\n");

    /* Ranking columns keep their decimals; no "-0.0"; scores over 1. */
    snprintf(body, sizeof body,
             "{\"request\":\"r1\", \"done\":true, \"diagnoses\":[%s]}",
             patch(diagnosis_2, "\"score\":0.2}",
                   "\"score\":83.816, \"effect_ms\":-0.04, "
                   "\"p_qos_met\":1, \"evidence\":-5}"));
    REQUIRE_OK(render(DIAGNOSE_RESULT, body));
    CHECK_HAS("1     nginx-web  83.82  0.0        1.00        -5.0\n");

    /* A window that met its target. */
    char met[4096];
    snprintf(met, sizeof met, "%s",
             patch(diagnosis_2, "\"violated\":true", "\"violated\":false"));
    snprintf(met, sizeof met, "%s",
             patch(met, "\"latency_ms\":250", "\"latency_ms\":150"));
    snprintf(body, sizeof body,
             "{\"request\":\"r1\", \"done\":true, \"diagnoses\":[%s]}", met);
    REQUIRE_OK(render(DIAGNOSE_RESULT, body));
    CHECK_HAS("150 / 200 ms, met (model 11)\n");
    CHECK_HAS("culprit: none (the QoS was met)\n");

    CHECK_EQ(render(DIAGNOSE_RESULT, "{\"request\":\"r1\", \"diagnoses\":[]}"),
             SM_EMALFORMED);
    CHECK_STR(errmsg, "done is missing");
    snprintf(body, sizeof body, "{\"done\":true, \"diagnoses\":[%s]}",
             patch(diagnosis_1, "\"score\":0.97", "\"score\":[]"));
    CHECK_EQ(render(DIAGNOSE_RESULT, body), SM_EMALFORMED);
    CHECK_STR(errmsg,
              "diagnoses[0].ranking[0].score: expected a number, got an array");
    CHECK_EQ(text_len, 0);
}

/* Windows the peer could not diagnose come with an error instead. */
static void test_not_diagnosed(void)
{
    static const char result[] =
        "{\"request\":\"4\", \"done\":true, \"windows\":2, "
        "\"diagnoses\":[{\"window_end_unix_nano\":\"1700028030000000000\", "
        "\"error\":\"diagnose: the model has no latency for nginx-web\"}, "
        "{\"window_end_unix_nano\":\"1700028060000000000\", "
        "\"error\":\"no model\"}]}";
    REQUIRE_OK(render(DIAGNOSE_RESULT, result));
    CHECK_EQ(n_failed, 2);
    CHECK_STR(text,
              "window ending 2023-11-15T06:00:30Z: not diagnosed: diagnose: "
              "the model has no latency for nginx-web\n"
              "\n"
              "window ending 2023-11-15T06:01:00Z: not diagnosed: no model\n");
    int done = 0;
    REQUIRE_OK(
        node_render_diagnose_done(result, strlen(result), &done, errmsg));
    CHECK_EQ(done, 1);
    CHECK_EQ(node_render_diagnose_done("{\"done\":1}", 10, &done, errmsg),
             SM_EMALFORMED);

    char body[8192];
    snprintf(body, sizeof body,
             "{\"diagnoses\":[%s, {\"window_end_unix_nano\":"
             "1700037000000000000, \"error\":\"timed out\"}]}",
             diagnosis_1);
    REQUIRE_OK(render(DIAGNOSES, body));
    CHECK_HAS("\n2023-11-15T08:30:00Z  (not diagnosed)  -         -    ");
    CHECK_HAS("note: 2023-11-15T08:30:00Z was not diagnosed: timed out\n");

    /* The error item still needs its window. */
    CHECK_EQ(render(DIAGNOSE_RESULT,
                    "{\"done\":true, \"diagnoses\":[{\"error\":\"x\"}]}"),
             SM_EMALFORMED);
    CHECK_STR(errmsg, "diagnoses[0].window_end_unix_nano is missing");
}

/* ---- Train ------------------------------------------------------------- */

static void test_train(void)
{
    uint64_t v = 0, r = 0;
    const char *ticket = "{\"model_version\":2, \"wait_for_rounds\":\"3\"}";
    REQUIRE_OK(
        node_render_train_ticket(ticket, strlen(ticket), &v, &r, errmsg));
    CHECK_EQ(v, 2);
    CHECK_EQ(r, 3);
    const char *bad = "{\"model_version\":2}";
    CHECK_EQ(node_render_train_ticket(bad, strlen(bad), &v, &r, errmsg),
             SM_EMALFORMED);
    CHECK_STR(errmsg, "wait_for_rounds is missing");

    REQUIRE_OK(
        node_render_train_rounds(status_body, strlen(status_body), &r, errmsg));
    CHECK_EQ(r, 2);
    const char *no_model = "{\"id\":\"x\"}";
    CHECK_EQ(node_render_train_rounds(no_model, strlen(no_model), &r, errmsg),
             SM_EMALFORMED);

    REQUIRE_OK(render(TRAIN_OUTCOME, status_body));
    CHECK_STR(text,
              "training round finished: model version 2 (incremental, 6.2 s, "
              "310 windows, validation loss 1.9)\n");
    int ok = 0;
    REQUIRE_OK(node_render_train_outcome(status_body, strlen(status_body), NULL,
                                         &ok, errmsg));
    CHECK_EQ(ok, 1);

    const char *failed =
        patch(status_body, "\"ok\":true, \"error\":null",
              "\"ok\":false, \"error\":\"out of memory after 3 epochs\"");
    REQUIRE_OK(render(TRAIN_OUTCOME, failed));
    CHECK_STR(text,
              "training round failed after 6.2 s: out of memory after 3 "
              "epochs\n");
    REQUIRE_OK(
        node_render_train_outcome(failed, strlen(failed), NULL, &ok, errmsg));
    CHECK_EQ(ok, 0);

    const char *none =
        patch(status_body, "\"last_round\":{", "\"last_round\":null, \"x\":{");
    CHECK_EQ(render(TRAIN_OUTCOME, none), SM_EMALFORMED);
    CHECK(strstr(errmsg, "last_round is null") != NULL);
    CHECK_EQ(text_len, 0);
}

/* ---- Errors, times, output failures ------------------------------------ */

static void test_error_message(void)
{
    char msg[64];
    const char *e = "{\"error\":\"too few windows (3 < 8)\"}";
    node_render_error(e, strlen(e), msg, sizeof msg);
    CHECK_STR(msg, "too few windows (3 < 8)");
    const char *plain = "Service Unavailable\r\nmore";
    node_render_error(plain, strlen(plain), msg, sizeof msg);
    CHECK_STR(msg, "Service Unavailable");
    node_render_error("", 0, msg, sizeof msg);
    CHECK_STR(msg, "(empty answer)");
    const char *ctl = "{\"error\":\"a\\u001b]0;x\\u0007b\"}";
    node_render_error(ctl, strlen(ctl), msg, sizeof msg);
    CHECK_STR(msg, "a?]0;x?b");
    const char *other = "{\"message\":\"m\"}";
    node_render_error(other, strlen(other), msg, sizeof msg);
    CHECK_STR(msg, "{\"message\":\"m\"}");
    char tiny[4];
    node_render_error(e, strlen(e), tiny, sizeof tiny);
    CHECK_STR(tiny, "too");
}

static void test_times(void)
{
    char t[NODE_RENDER_TIME_SIZE];
    node_render_format_time(1700037300000000000u, t);
    CHECK_STR(t, "2023-11-15T08:35:00Z");
    node_render_format_time(0, t);
    CHECK_STR(t, "1970-01-01T00:00:00Z");
    node_render_format_time(951782400123456789u, t); /* a leap day */
    CHECK_STR(t, "2000-02-29T00:00:00.123Z");
    node_render_format_time(UINT64_MAX, t);
    CHECK_STR(t, "2554-07-21T23:34:33.709Z");

    static const struct
    {
        const char *text;
        int rv;
        uint64_t ns;
    } cases[] = {
        {"1700037300", SM_OK, 1700037300000000000u},
        {"1700037300.25", SM_OK, 1700037300250000000u},
        {"0", SM_OK, 0},
        {"2023-11-15T08:35:00Z", SM_OK, 1700037300000000000u},
        {"2023-11-15t08:35:00z", SM_OK, 1700037300000000000u},
        {"2023-11-15 08:35:00Z", SM_OK, 1700037300000000000u},
        {"2023-11-15T09:35:00+01:00", SM_OK, 1700037300000000000u},
        {"2023-11-15T03:05:00-05:30", SM_OK, 1700037300000000000u},
        {"2023-11-15T08:35:00.5Z", SM_OK, 1700037300500000000u},
        {"2023-11-15T08:35:00.1234567891Z", SM_OK, 1700037300123456789u},
        {"2024-02-29T00:00:00Z", SM_OK, 1709164800000000000u},
        {"1970-01-01T00:00:00Z", SM_OK, 0},
        {"2554-07-21T23:34:33Z", SM_OK, 18446744073000000000u},
        {"18446744073.709551615", SM_OK, UINT64_MAX},
        {"18446744073.709551616", SM_ERANGE, 0},
        {"18446744074", SM_ERANGE, 0},
        {"99999999999999999999999", SM_ERANGE, 0},
        {"1969-12-31T23:59:59Z", SM_ERANGE, 0},
        {"1970-01-01T00:30:00+01:00", SM_ERANGE, 0},
        {"2600-01-01T00:00:00Z", SM_ERANGE, 0},
        {"2023-02-29T00:00:00Z", SM_EMALFORMED, 0},
        {"2023-11-31T00:00:00Z", SM_EMALFORMED, 0},
        {"2023-13-01T00:00:00Z", SM_EMALFORMED, 0},
        {"2023-11-15T24:00:00Z", SM_EMALFORMED, 0},
        {"2023-11-15T08:35:00", SM_EMALFORMED, 0},
        {"2023-11-15T08:35:00+0100", SM_EMALFORMED, 0},
        {"2023-11-15T08:35Z", SM_EMALFORMED, 0},
        {"2023-11-15", SM_EMALFORMED, 0},
        {"2023-11-15T08:35:00.Z", SM_EMALFORMED, 0},
        {"2023-11-15T08:35:00Zjunk", SM_EMALFORMED, 0},
        {"yesterday", SM_EMALFORMED, 0},
        {"", SM_EMALFORMED, 0},
        {".", SM_EMALFORMED, 0},
        {"1.2.3", SM_EMALFORMED, 0},
        {"-5", SM_EMALFORMED, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint64_t ns = 42;
        int rv = node_render_parse_time(cases[i].text, &ns);
        if (rv != cases[i].rv ||
            ns != (cases[i].rv == SM_OK ? cases[i].ns : 42)) {
            check__fail(__FILE__, __LINE__, 0, "'%s': %s, %llu", cases[i].text,
                        sm_errname(rv), (unsigned long long)ns);
        }
    }
    /* Round trip. */
    uint64_t ns;
    node_render_format_time(1709164800000000000u, t);
    REQUIRE_OK(node_render_parse_time(t, &ns));
    CHECK(ns == 1709164800000000000u);
}

static void test_write_failure(void)
{
    FILE *ro = fopen("/dev/null", "r");
    REQUIRE(ro != NULL);
    CHECK_EQ(
        node_render_services(services_body, strlen(services_body), ro, errmsg),
        SM_EIO);
    fclose(ro);
}

static const struct check_test tests[] = {
    {"status", test_status},
    {"status with null fields", test_status_nulls},
    {"status breaking the contract", test_status_contract},
    {"truncated bodies", test_truncated_bodies},
    {"services", test_services},
    {"diagnoses", test_diagnoses},
    {"diagnoses empty or broken", test_diagnoses_empty_and_broken},
    {"diagnose ticket", test_diagnose_ticket},
    {"diagnose result", test_diagnose_result},
    {"windows not diagnosed", test_not_diagnosed},
    {"train", test_train},
    {"error messages", test_error_message},
    {"times", test_times},
    {"write failure", test_write_failure},
};

CHECK_MAIN(tests, NULL, teardown)
