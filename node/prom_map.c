/* Prometheus samples to metric points: service, instance, metric identity. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "node/ingest.h"

static const char *const default_names[] = {"container", "pod", "name",
                                            "service",   "job", "groupname"};

const struct node_service_labels node_default_service_labels = {
    default_names, sizeof default_names / sizeof default_names[0]};

/* Labels that say where a value was measured (which replica, core, disk),
 * not what was measured: they are pooled into one distribution. */
static const char *const pooled_labels[] = {
    "instance",  "cpu",       "core",       "device", "id",          "image",
    "namespace", "interface", "mountpoint", "fstype", "peer_service"};

static int in_list(const char *name, const char *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(name, list[i]) == 0) {
            return 1;
        }
    }
    return 0;
}

static const char *label(const struct node_prom_sample *s, const char *name)
{
    for (size_t i = 0; i < s->n_labels; i++) {
        if (strcmp(s->labels[i].name, name) == 0) {
            return s->labels[i].value;
        }
    }
    return NULL;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

static int cmp_label(const void *a, const void *b)
{
    return strcmp((*(const struct node_prom_label *const *)a)->name,
                  (*(const struct node_prom_label *const *)b)->name);
}

/* A string being written into a buffer sized beforehand. */
struct builder
{
    char *buf;
    size_t len, cap;
};

static void put(struct builder *b, const char *s)
{
    size_t n = strlen(s);
    if (b->len + n < b->cap) {
        memcpy(b->buf + b->len, s, n);
    }
    b->len += n;
}

int node_prom_to_point(const struct node_prom_sample *sample,
                       const struct node_service_labels *labels,
                       const char *default_service,
                       const char *target,
                       uint64_t scrape_ns,
                       struct node_points *out)
{
    if (!isfinite(sample->value) ||
        (sample->type == NODE_PROM_HISTOGRAM &&
         ends_with(sample->name, "_bucket")) ||
        (sample->type == NODE_PROM_SUMMARY && label(sample, "quantile"))) {
        return SM_OK;
    }
    const char *service_label = NULL, *service = NULL;
    for (size_t i = 0; i < labels->n && service == NULL; i++) {
        service = label(sample, labels->names[i]);
        if (service != NULL && service[0] == '\0') {
            service = NULL; /* cAdvisor's container="" is the pod total */
        }
        service_label = labels->names[i];
    }
    if (service == NULL) {
        service = default_service;
        service_label = "";
    }
    if (service == NULL || service[0] == '\0') {
        return SM_OK;
    }
    /* Canonical label order. */
    size_t n = sample->n_labels;
    const struct node_prom_label **sorted =
        sm_arena_alloc(&out->arena, (n ? n : 1) * sizeof *sorted);
    if (sorted == NULL) {
        return SM_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        sorted[i] = &sample->labels[i];
    }
    qsort(sorted, n, sizeof sorted[0], cmp_label);

    /* The metric identity and the series identity, sized first and then
     * written into the arena. */
    size_t name_cap = strlen(sample->name) + 3, labels_cap = 1;
    for (size_t i = 0; i < n; i++) {
        size_t kv = strlen(sorted[i]->name) + strlen(sorted[i]->value) + 4;
        name_cap += kv;
        labels_cap += kv;
    }
    struct builder name = {sm_arena_alloc(&out->arena, name_cap), 0, name_cap};
    struct builder series = {sm_arena_alloc(&out->arena, labels_cap), 0,
                             labels_cap};
    if (name.buf == NULL || series.buf == NULL) {
        return SM_ENOMEM;
    }
    put(&name, sample->name);
    int braces = 0;
    for (size_t i = 0; i < n; i++) {
        const char *k = sorted[i]->name, *v = sorted[i]->value;
        if (strcmp(k, service_label) == 0) {
            continue;
        }
        if (series.len > 0) {
            put(&series, ",");
        }
        put(&series, k);
        put(&series, "=");
        put(&series, v);
        if (in_list(k, labels->names, labels->n) ||
            in_list(k, pooled_labels,
                    sizeof pooled_labels / sizeof pooled_labels[0])) {
            continue;
        }
        put(&name, braces++ == 0 ? "{" : ",");
        put(&name, k);
        put(&name, "=\"");
        put(&name, v);
        put(&name, "\"");
    }
    if (braces) {
        put(&name, "}");
    }
    name.buf[name.len] = '\0';
    series.buf[series.len] = '\0';

    const char *instance = label(sample, "instance");
    const char *peer = label(sample, "peer_service");
    struct cbn_metric_point *p = node_points_add(out);
    char *svc = sm_arena_strndup(&out->arena, service, strlen(service));
    const char *inst = instance ? instance : (target ? target : "");
    char *inst_copy = sm_arena_strndup(&out->arena, inst, strlen(inst));
    char *peer_copy =
        peer ? sm_arena_strndup(&out->arena, peer, strlen(peer)) : NULL;
    if (p == NULL || svc == NULL || inst_copy == NULL ||
        (peer != NULL && peer_copy == NULL)) {
        if (p != NULL) {
            out->n--;
        }
        return SM_ENOMEM;
    }
    p->service = svc;
    p->instance = inst_copy;
    p->name = name.buf;
    p->labels = series.buf;
    p->peer = peer_copy ? peer_copy : "";
    p->time_ns = sample->has_timestamp && sample->timestamp_ms > 0
                     ? (uint64_t)sample->timestamp_ms * 1000000u
                     : scrape_ns;
    p->value = sample->value;
    p->cumulative = sample->type == NODE_PROM_COUNTER ||
                    ((sample->type == NODE_PROM_HISTOGRAM ||
                      sample->type == NODE_PROM_SUMMARY) &&
                     (ends_with(sample->name, "_sum") ||
                      ends_with(sample->name, "_count"))) ||
                    (sample->type == NODE_PROM_UNTYPED &&
                     ends_with(sample->name, "_total"));
    return SM_OK;
}
