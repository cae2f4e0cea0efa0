/* Diagnosis ids, JSON, stored records and the durable store. */
#include <dirent.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/arena.h"
#include "base/log.h"
#include "check.h"
#include "node/diagnoses.h"
#include "node/json.h"

static void setup(void)
{
    sm_log_set_sink(check_log_discard, NULL);
}

static void teardown(void)
{
    sm_log_set_sink(NULL, NULL);
}

static void test_id(void)
{
    char a[NODE_DIAG_ID_LEN + 1], b[NODE_DIAG_ID_LEN + 1];
    node_diagnosis_id(1700000030000000000u, "nginx-web", a);
    node_diagnosis_id(1700000030000000000u, "nginx-web", b);
    CHECK_STR(a, b);
    CHECK_EQ(strlen(a), 16u);
    CHECK_EQ(strspn(a, "0123456789abcdef"), 16u);
    node_diagnosis_id(1700000060000000000u, "nginx-web", b);
    CHECK(strcmp(a, b) != 0);
    node_diagnosis_id(1700000030000000000u, "frontend", b);
    CHECK(strcmp(a, b) != 0);
}

/* A diagnosis as the model would return it, with awkward values. */
static struct gvae_culprit culprit = {"user-mongodb", CBN_RES_CPU, 0.97, 301.5,
                                      250};
static struct gvae_candidate ranking[] = {
    {"user-mongodb", 0.97, 301.5, 0.97, 8.1, 1},
    {"we\"ird\\name", 0.1, NAN, 0, INFINITY, 0},
    {"caf\xe9-\xed\xa0\x80", 0.05, 1, 0, 1, 0}, /* not UTF-8 */
};
static const char *path[] = {"user-mongodb", "user", "nginx-web"};
static const char *unseen[] = {"user-mongodb: cpu p99"};

static void fill(struct gvae_diagnosis *d, struct cbn_window *w)
{
    memset(d, 0, sizeof *d);
    memset(w, 0, sizeof *w);
    w->start_ns = 1700000000000000000u;
    w->end_ns = 1700000030000000000u;
    w->qos_percentile = 99;
    d->latency_ms = 512.3;
    d->target_ms = 200;
    d->violated = 1;
    d->n_culprits = 1;
    d->culprits = &culprit;
    d->n_ranking = 3;
    d->ranking = ranking;
    d->n_path = 3;
    d->path = path;
    d->n_unseen = 1;
    d->unseen = unseen;
}

static const struct node_json *parse(struct sm_arena *arena,
                                     const char *text,
                                     size_t len)
{
    char err[SM_ERRMSG_SIZE];
    const struct node_json *root = NULL;
    int rv = node_json_parse((const uint8_t *)text, len, arena, &root, err);
    if (rv != SM_OK) {
        check__fail(__FILE__, __LINE__, 1, "bad JSON (%s): %.*s", err, (int)len,
                    text);
    }
    return root;
}

static void test_json(void)
{
    struct gvae_diagnosis d;
    struct cbn_window w;
    fill(&d, &w);
    struct node_diagnosis_meta meta = {"nginx-web",          NULL, 12,  "web-1",
                                       1700000031000000000u, 4.25, NULL};
    struct node_text b = {0};
    node_diagnosis_write_json(&b, &w, &d, &meta);
    char *text;
    size_t len;
    REQUIRE_OK(node_text_take(&b, &text, &len));
    struct sm_arena arena;
    sm_arena_init(&arena, 1u << 20);
    const struct node_json *root = parse(&arena, text, len);
    char id[NODE_DIAG_ID_LEN + 1];
    node_diagnosis_id(w.end_ns, "nginx-web", id);
    CHECK_STR(node_json_str(node_json_get(root, "id")), id);
    CHECK_STR(node_json_str(node_json_get(root, "window_end_unix_nano")),
              "1700000030000000000");
    CHECK_STR(node_json_str(node_json_get(root, "service")), "nginx-web");
    CHECK_EQ(node_json_get(root, "operation")->type, NODE_JSON_NULL);
    CHECK_EQ(node_json_get(root, "action")->type, NODE_JSON_NULL);
    CHECK_EQ(node_json_get(root, "violated")->boolean, 1);
    double v = 0;
    CHECK_OK(node_json_double(node_json_get(root, "latency_ms"), &v));
    CHECK_NEAR(v, 512.3, 1e-9);
    uint64_t mv = 0;
    CHECK_OK(node_json_u64(node_json_get(root, "model_version"), &mv));
    CHECK_EQ(mv, 12u);
    const struct node_json *c = node_json_get(root, "culprits");
    REQUIRE(c != NULL && c->type == NODE_JSON_ARRAY && c->n == 1);
    CHECK_STR(node_json_str(node_json_get(&c->items[0], "resource")), "cpu");
    const struct node_json *r = node_json_get(root, "ranking");
    REQUIRE(r != NULL && r->n == 3);
    /* Bytes that are not UTF-8 come out as U+FFFD: the JSON stays valid. */
    CHECK_STR(node_json_str(node_json_get(&r->items[2], "service")),
              "caf\xef\xbf\xbd-\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
    CHECK_STR(node_json_str(node_json_get(&r->items[1], "service")),
              "we\"ird\\name");
    /* JSON has no NaN or infinity: they become null. */
    CHECK_EQ(node_json_get(&r->items[1], "effect_ms")->type, NODE_JSON_NULL);
    CHECK_EQ(node_json_get(&r->items[1], "evidence")->type, NODE_JSON_NULL);
    const struct node_json *p = node_json_get(root, "path");
    REQUIRE(p != NULL && p->n == 3);
    CHECK_STR(node_json_str(&p->items[2]), "nginx-web");
    CHECK_EQ(node_json_get(root, "unseen")->n, 1u);
    CHECK_STR(node_json_str(node_json_get(root, "decided_by")), "web-1");
    sm_arena_free(&arena);
    free(text);

    /* No culprit (a load spike): an empty list, still valid JSON. */
    d.n_culprits = 0;
    d.n_path = 0;
    meta.qos_operation = "/compose";
    node_diagnosis_write_json(&b, &w, &d, &meta);
    REQUIRE_OK(node_text_take(&b, &text, &len));
    sm_arena_init(&arena, 1u << 20);
    root = parse(&arena, text, len);
    CHECK_EQ(node_json_get(root, "culprits")->n, 0u);
    CHECK_STR(node_json_str(node_json_get(root, "operation")), "/compose");
    sm_arena_free(&arena);
    free(text);
}

static void test_record_parse(void)
{
    char id[NODE_DIAG_ID_LEN + 1];
    const char *json;
    size_t jl;
    const char *good = "0123456789abcdef\n{\"a\":1}";
    REQUIRE_OK(node_diag_record_parse((const uint8_t *)good, strlen(good), id,
                                      &json, &jl));
    CHECK_STR(id, "0123456789abcdef");
    CHECK_EQ(jl, 7u);
    CHECK(memcmp(json, "{\"a\":1}", 7) == 0);
    const char *bad[] = {
        "",
        "0123456789abcdef",
        "0123456789abcdef\n",
        "0123456789abcdef\n{",
        "0123456789ABCDEF\n{}",
        "0123456789abcde\n{}}",
        "0123456789abcdef {}",
        "0123456789abcdef\n[]",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_EQ(node_diag_record_parse((const uint8_t *)bad[i], strlen(bad[i]),
                                        id, &json, &jl),
                 SM_EMALFORMED);
    }
}

static void test_request_parse(void)
{
    char err[SM_ERRMSG_SIZE];
    uint64_t from = 0, to = 0;
    const char *ok =
        "{\"from_unix_nano\":\"1700000000000000000\","
        "\"to_unix_nano\":1700000600000000000,\"x\":[1]}";
    REQUIRE_OK(node_diagnose_request_parse((const uint8_t *)ok, strlen(ok),
                                           &from, &to, err));
    CHECK_EQ(from, 1700000000000000000u);
    CHECK_EQ(to, 1700000600000000000u);
    const char *bad[] = {
        "",
        "{",
        "[]",
        "{\"from_unix_nano\":5}",
        "{\"from_unix_nano\":5,\"to_unix_nano\":5}",
        "{\"from_unix_nano\":6,\"to_unix_nano\":5}",
        "{\"from_unix_nano\":-1,\"to_unix_nano\":5}",
        "{\"from_unix_nano\":\"x\",\"to_unix_nano\":5}",
        "{\"from_unix_nano\":1,\"to_unix_nano\":5} trailing",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        CHECK_EQ(node_diagnose_request_parse((const uint8_t *)bad[i],
                                             strlen(bad[i]), &from, &to, err),
                 SM_EMALFORMED);
        CHECK(err[0] != '\0');
    }
    char big[5000];
    memset(big, ' ', sizeof big);
    memcpy(big, ok, strlen(ok));
    CHECK_EQ(node_diagnose_request_parse((const uint8_t *)big, sizeof big,
                                         &from, &to, err),
             SM_EMALFORMED);
}

/* Lists the store into a malloc()ed string. */
static char *list(struct node_diag_store *s, size_t limit)
{
    struct node_text b = {0};
    node_diag_store_list(s, limit, &b);
    REQUIRE(!b.failed);
    return b.s; /* the buffer itself: node_text_take would only hand it on */
}

static void add(struct node_diag_store *s, uint64_t end_s, int expect)
{
    char id[NODE_DIAG_ID_LEN + 1], json[128], err[SM_ERRMSG_SIZE];
    node_diagnosis_id(end_s * 1000000000u, "fe", id);
    int n = snprintf(json, sizeof json, "{\"id\":\"%s\",\"end\":%llu}", id,
                     (unsigned long long)end_s);
    CHECK_EQ(
        node_diag_store_add(s, id, end_s * 1000000000u, json, (size_t)n, err),
        expect);
}

static void test_store(void)
{
    const char *dir = check_tmpdir();
    char sub[512], err[SM_ERRMSG_SIZE];
    snprintf(sub, sizeof sub, "%s/diagnoses", dir);
    struct node_diag_store *s;
    REQUIRE_OK(node_diag_store_open(sub, &s, err));
    char *text = list(s, 10);
    CHECK_STR(text, "{\"diagnoses\":[]}\n");
    free(text);
    add(s, 30, SM_OK);
    add(s, 90, SM_OK);
    add(s, 60, SM_OK); /* out of order: listed by window end */
    add(s, 90, SM_EEXIST);
    CHECK_EQ(node_diag_store_count(s), 3u);
    text = list(s, 2);
    CHECK(strstr(text, "\"end\":90}") < strstr(text, "\"end\":60}"));
    CHECK(strstr(text, "\"end\":30}") == NULL);
    free(text);
    char *before = list(s, 10);
    node_diag_store_close(s);

    /* A restart finds the same diagnoses, and still refuses repeats. */
    REQUIRE_OK(node_diag_store_open(sub, &s, err));
    text = list(s, 10);
    CHECK_STR(text, before);
    free(text);
    add(s, 60, SM_EEXIST);
    add(s, 120, SM_OK);
    CHECK_EQ(node_diag_store_count(s), 4u);
    node_diag_store_close(s);

    /* A torn tail (a crash mid-append) loses only the torn record. */
    DIR *dp = opendir(sub);
    REQUIRE(dp != NULL);
    struct dirent *e;
    char seg[1024] = "";
    while ((e = readdir(dp)) != NULL) {
        if (e->d_name[0] != '.' && strcmp(e->d_name, "LOCK") != 0) {
            snprintf(seg, sizeof seg, "%s/%s", sub, e->d_name);
        }
    }
    closedir(dp);
    REQUIRE(seg[0] != '\0');
    int fd = open(seg, O_WRONLY | O_APPEND);
    REQUIRE(fd >= 0);
    CHECK_EQ(write(fd, "\x40\x00\x00\x00garbage", 11), 11);
    close(fd);
    REQUIRE_OK(node_diag_store_open(sub, &s, err));
    CHECK_EQ(node_diag_store_count(s), 4u);
    free(before);
    before = list(s, 1);
    CHECK(strstr(before, "\"end\":120}") != NULL);
    free(before);
    node_diag_store_close(s);
}

static void test_store_open_errors(void)
{
    char err[SM_ERRMSG_SIZE] = "";
    struct node_diag_store *s = NULL;
    CHECK(node_diag_store_open("/proc/nope/diagnoses", &s, err) != SM_OK);
    CHECK(s == NULL);
    CHECK(strstr(err, "/proc/nope") != NULL);
}

static const struct check_test tests[] = {
    {"ids are stable and distinct", test_id},
    {"diagnosis JSON", test_json},
    {"stored records", test_record_parse},
    {"diagnose request bodies", test_request_parse},
    {"store: order, repeats, restart, torn tail", test_store},
    {"store: open errors", test_store_open_errors},
};

CHECK_MAIN(tests, setup, teardown)
