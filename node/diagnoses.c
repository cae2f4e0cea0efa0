/* Diagnosis JSON and the durable diagnosis store. */
#include "node/diagnoses.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/arena.h"
#include "base/log.h"
#include "node/json.h"

#define MOD             "diagnoses"
#define RETAIN_BYTES    (256ull << 20)
#define MAX_RECORD      (4u << 20)
#define REQUEST_MAX_LEN 4096

/* ---- JSON ----------------------------------------------------------------
 */

/* A bijective 64-bit mix (splitmix64's finaliser): distinct windows of one
 * service never share an id. */
static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= UINT64_C(0xbf58476d1ce4e5b9);
    x ^= x >> 27;
    x *= UINT64_C(0x94d049bb133111eb);
    x ^= x >> 31;
    return x;
}

void node_diagnosis_id(uint64_t window_end_ns,
                       const char *qos_service,
                       char id[NODE_DIAG_ID_LEN + 1])
{
    uint64_t h = UINT64_C(0xcbf29ce484222325); /* FNV-1a */
    for (const char *c = qos_service; *c != '\0'; c++) {
        h = (h ^ (unsigned char)*c) * UINT64_C(0x100000001b3);
    }
    snprintf(id, NODE_DIAG_ID_LEN + 1, "%016" PRIx64, mix64(window_end_ns ^ h));
}

static void put_str_or_null(struct node_text *b, const char *s)
{
    if (s != NULL) {
        node_text_json_str(b, s);
    } else {
        node_text_puts(b, "null");
    }
}

void node_diagnosis_write_json(struct node_text *b,
                               const struct cbn_window *w,
                               const struct gvae_diagnosis *d,
                               const struct node_diagnosis_meta *meta)
{
    char id[NODE_DIAG_ID_LEN + 1];
    node_diagnosis_id(w->end_ns, meta->qos_service, id);
    node_text_printf(b,
                     "{\"id\":\"%s\",\"window_start_unix_nano\":\"%" PRIu64
                     "\",\"window_end_unix_nano\":\"%" PRIu64 "\",\"service\":",
                     id, w->start_ns, w->end_ns);
    node_text_json_str(b, meta->qos_service);
    node_text_puts(b, ",\"operation\":");
    put_str_or_null(b, meta->qos_operation);
    node_text_puts(b, ",\"percentile\":");
    node_text_json_num(b, "%g", w->qos_percentile);
    node_text_puts(b, ",\"latency_ms\":");
    node_text_json_num(b, "%.3f", d->latency_ms);
    node_text_puts(b, ",\"target_ms\":");
    node_text_json_num(b, "%.3f", d->target_ms);
    node_text_printf(b, ",\"violated\":%s,\"culprits\":[",
                     d->violated ? "true" : "false");
    for (size_t i = 0; i < d->n_culprits; i++) {
        const struct gvae_culprit *c = &d->culprits[i];
        node_text_puts(b, i ? ",{\"service\":" : "{\"service\":");
        node_text_json_str(b, c->service);
        node_text_printf(b, ",\"resource\":\"%s\",\"p_qos_met\":",
                         cbn_resource_name(c->resource));
        node_text_json_num(b, "%.4f", c->p_qos_met);
        node_text_puts(b, ",\"effect_ms\":");
        node_text_json_num(b, "%.3f", c->effect_ms);
        node_text_puts(b, ",\"resource_effect_ms\":");
        node_text_json_num(b, "%.3f", c->resource_effect_ms);
        node_text_puts(b, "}");
    }
    node_text_puts(b, "],\"ranking\":[");
    for (size_t i = 0; i < d->n_ranking; i++) {
        const struct gvae_candidate *c = &d->ranking[i];
        node_text_puts(b, i ? ",{\"service\":" : "{\"service\":");
        node_text_json_str(b, c->service);
        node_text_puts(b, ",\"score\":");
        node_text_json_num(b, "%.6g", c->score);
        node_text_puts(b, ",\"effect_ms\":");
        node_text_json_num(b, "%.3f", c->effect_ms);
        node_text_puts(b, ",\"p_qos_met\":");
        node_text_json_num(b, "%.4f", c->p_qos_met);
        node_text_puts(b, ",\"evidence\":");
        node_text_json_num(b, "%.4g", c->evidence);
        node_text_printf(b, ",\"out_of_range\":%u}", c->out_of_range);
    }
    node_text_puts(b, "],\"path\":[");
    for (size_t i = 0; i < d->n_path; i++) {
        if (i) {
            node_text_puts(b, ",");
        }
        node_text_json_str(b, d->path[i]);
    }
    node_text_puts(b, "],\"unseen\":[");
    for (size_t i = 0; i < d->n_unseen; i++) {
        if (i) {
            node_text_puts(b, ",");
        }
        node_text_json_str(b, d->unseen[i]);
    }
    node_text_printf(b, "],\"model_version\":%" PRIu64 ",\"decided_by\":",
                     meta->model_version);
    node_text_json_str(b, meta->decided_by);
    node_text_printf(b,
                     ",\"decided_unix_nano\":\"%" PRIu64 "\",\"diagnosis_ms\":",
                     meta->decided_ns);
    node_text_json_num(b, "%.3f", meta->diagnosis_ms);
    node_text_puts(b, ",\"action\":");
    node_text_puts(b, meta->action_json != NULL ? meta->action_json : "null");
    node_text_puts(b, "}");
}

static int is_hex_lower(uint8_t c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

int node_diag_record_parse(const uint8_t *payload,
                           size_t len,
                           char id[NODE_DIAG_ID_LEN + 1],
                           const char **json,
                           size_t *json_len)
{
    if (len < NODE_DIAG_ID_LEN + 3 || payload[NODE_DIAG_ID_LEN] != '\n' ||
        payload[NODE_DIAG_ID_LEN + 1] != '{' || payload[len - 1] != '}') {
        return SM_EMALFORMED;
    }
    for (size_t i = 0; i < NODE_DIAG_ID_LEN; i++) {
        if (!is_hex_lower(payload[i])) {
            return SM_EMALFORMED;
        }
    }
    memcpy(id, payload, NODE_DIAG_ID_LEN);
    id[NODE_DIAG_ID_LEN] = '\0';
    *json = (const char *)payload + NODE_DIAG_ID_LEN + 1;
    *json_len = len - NODE_DIAG_ID_LEN - 1;
    return SM_OK;
}

int node_diagnose_request_parse(const uint8_t *body,
                                size_t len,
                                uint64_t *from_ns,
                                uint64_t *to_ns,
                                char errmsg[SM_ERRMSG_SIZE])
{
    if (len == 0 || len > REQUEST_MAX_LEN) {
        sm_errmsg_printf(errmsg,
                         "expected a JSON body {\"from_unix_nano\":..., "
                         "\"to_unix_nano\":...} of at most %d bytes",
                         REQUEST_MAX_LEN);
        return SM_EMALFORMED;
    }
    struct sm_arena arena;
    sm_arena_init(&arena, 64u << 10);
    const struct node_json *root;
    int rv = node_json_parse(body, len, &arena, &root, errmsg);
    if (rv != SM_OK) {
        sm_arena_free(&arena);
        return rv == SM_ENOMEM ? SM_ENOMEM : SM_EMALFORMED;
    }
    uint64_t from, to;
    if (root->type != NODE_JSON_OBJECT ||
        node_json_u64(node_json_get(root, "from_unix_nano"), &from) != SM_OK ||
        node_json_u64(node_json_get(root, "to_unix_nano"), &to) != SM_OK) {
        sm_errmsg_printf(errmsg,
                         "expected {\"from_unix_nano\":..., "
                         "\"to_unix_nano\":...} with non-negative integers");
        rv = SM_EMALFORMED;
    } else if (from >= to) {
        sm_errmsg_printf(errmsg, "from_unix_nano must be before to_unix_nano");
        rv = SM_EMALFORMED;
    } else {
        *from_ns = from;
        *to_ns = to;
    }
    sm_arena_free(&arena);
    return rv;
}

/* ---- The store ------------------------------------------------------------
 */

struct entry
{
    uint64_t end_ns;
    char id[NODE_DIAG_ID_LEN + 1];
    char *json; /* NUL-terminated */
    size_t len;
};

struct node_diag_store
{
    struct cbn_log *log;
    struct entry *v; /* sorted by end_ns, oldest first */
    size_t n, cap;
    uint64_t skipped; /* unreadable records at open */
};

static int find_id(const struct node_diag_store *s, const char *id)
{
    /* Ids are rare to collide and the store is small: a linear scan from
     * the newest end, where a repeat of a recent window would be. */
    for (size_t i = s->n; i-- > 0;) {
        if (strcmp(s->v[i].id, id) == 0) {
            return 1;
        }
    }
    return 0;
}

/* Keeps a copy of @json in memory, in window order; beyond the cap the
 * oldest is dropped from memory (it stays on disk until trimmed). */
static int remember(struct node_diag_store *s,
                    const char *id,
                    uint64_t end_ns,
                    const char *json,
                    size_t len)
{
    char *copy = sm_malloc(len + 1);
    if (copy == NULL) {
        return SM_ENOMEM;
    }
    memcpy(copy, json, len);
    copy[len] = '\0';
    if (s->n == NODE_DIAG_MEMORY_MAX) {
        sm_free(s->v[0].json);
        memmove(s->v, s->v + 1, (s->n - 1) * sizeof *s->v);
        s->n--;
    }
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        struct entry *grown = sm_reallocarray(s->v, cap, sizeof *grown);
        if (grown == NULL) {
            sm_free(copy);
            return SM_ENOMEM;
        }
        s->v = grown;
        s->cap = cap;
    }
    size_t at = s->n;
    while (at > 0 && s->v[at - 1].end_ns > end_ns) {
        at--;
    }
    memmove(s->v + at + 1, s->v + at, (s->n - at) * sizeof *s->v);
    s->v[at].end_ns = end_ns;
    memcpy(s->v[at].id, id, NODE_DIAG_ID_LEN + 1);
    s->v[at].json = copy;
    s->v[at].len = len;
    s->n++;
    return SM_OK;
}

static int replay_one(void *arg,
                      uint64_t time_ns,
                      const uint8_t *payload,
                      size_t len)
{
    struct node_diag_store *s = arg;
    char id[NODE_DIAG_ID_LEN + 1];
    const char *json;
    size_t json_len;
    if (node_diag_record_parse(payload, len, id, &json, &json_len) != SM_OK) {
        s->skipped++;
        return 0;
    }
    if (find_id(s, id)) {
        return 0;
    }
    return remember(s, id, time_ns, json, json_len) == SM_OK ? 0 : SM_ENOMEM;
}

int node_diag_store_open(const char *dir,
                         struct node_diag_store **out,
                         char errmsg[SM_ERRMSG_SIZE])
{
    struct node_diag_store *s = sm_calloc(1, sizeof *s);
    if (s == NULL) {
        sm_errmsg_printf(errmsg, "out of memory");
        return SM_ENOMEM;
    }
    struct cbn_log_config lc = {
        .dir = dir,
        .retain_bytes = RETAIN_BYTES,
        .max_record = MAX_RECORD,
        .sync = CBN_LOG_SYNC_EVERY,
    };
    int rv = cbn_log_open(&lc, &s->log, errmsg);
    if (rv == SM_OK) {
        rv = cbn_log_replay(s->log, replay_one, s);
        if (rv != SM_OK) {
            sm_errmsg_printf(errmsg, "reading the diagnoses in %s: %s", dir,
                             sm_strerror(rv));
        }
    }
    if (rv != SM_OK) {
        node_diag_store_close(s);
        return rv;
    }
    if (s->skipped > 0) {
        sm_log(SM_LOG_WARN, MOD, "skipped unreadable stored diagnoses",
               "count=%" PRIu64, s->skipped);
    }
    *out = s;
    return SM_OK;
}

int node_diag_store_add(struct node_diag_store *s,
                        const char *id,
                        uint64_t window_end_ns,
                        const char *json,
                        size_t len,
                        char errmsg[SM_ERRMSG_SIZE])
{
    if (find_id(s, id)) {
        return SM_EEXIST;
    }
    if (len + NODE_DIAG_ID_LEN + 1 > MAX_RECORD) {
        sm_errmsg_printf(errmsg, "diagnosis of %zu bytes is too large", len);
        return SM_ETOOBIG;
    }
    uint8_t *rec = sm_malloc(len + NODE_DIAG_ID_LEN + 1);
    if (rec == NULL) {
        return SM_ENOMEM;
    }
    memcpy(rec, id, NODE_DIAG_ID_LEN);
    rec[NODE_DIAG_ID_LEN] = '\n';
    memcpy(rec + NODE_DIAG_ID_LEN + 1, json, len);
    int rv = cbn_log_append(s->log, window_end_ns, rec,
                            len + NODE_DIAG_ID_LEN + 1, errmsg);
    sm_free(rec);
    /* Served from memory even when the disk failed: the operator sees the
     * diagnosis now, and the error tells them it will not survive. */
    int mem = remember(s, id, window_end_ns, json, len);
    if (rv == SM_OK) {
        char err[SM_ERRMSG_SIZE];
        if (cbn_log_trim(s->log, window_end_ns, err) != SM_OK) {
            sm_log(SM_LOG_WARN, MOD, "diagnosis log retention failed",
                   "cause=\"%s\"", err);
        }
    }
    return rv != SM_OK ? rv : mem;
}

int node_diag_store_has(const struct node_diag_store *s, const char *id)
{
    return find_id(s, id);
}

size_t node_diag_store_count(const struct node_diag_store *s)
{
    return s->n;
}

void node_diag_store_list(const struct node_diag_store *s,
                          size_t limit,
                          struct node_text *b)
{
    node_text_puts(b, "{\"diagnoses\":[");
    for (size_t k = 0; k < limit && k < s->n; k++) {
        const struct entry *e = &s->v[s->n - 1 - k];
        if (k) {
            node_text_puts(b, ",\n");
        }
        node_text_put(b, e->json, e->len);
    }
    node_text_puts(b, "]}\n");
}

void node_diag_store_each_newest(const struct node_diag_store *s,
                                 size_t limit,
                                 node_diag_visit_cb cb,
                                 void *arg)
{
    for (size_t k = 0; k < limit && k < s->n; k++) {
        const struct entry *e = &s->v[s->n - 1 - k];
        cb(arg, e->id, e->end_ns, e->json, e->len);
    }
}

void node_diag_store_close(struct node_diag_store *s)
{
    if (s == NULL) {
        return;
    }
    for (size_t i = 0; i < s->n; i++) {
        sm_free(s->v[i].json);
    }
    sm_free(s->v);
    cbn_log_close(s->log);
    sm_free(s);
}
