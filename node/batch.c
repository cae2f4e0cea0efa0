/* Span and point batches backed by an arena. */
#include <string.h>

#include "base/alloc.h"
#include "node/ingest.h"

/* Grows a record array by doubling; the arrays live on the heap, the
 * strings in the arena. */
static void *grow(void *v, size_t *cap, size_t n, size_t size)
{
    if (n < *cap) {
        return v;
    }
    size_t next = *cap ? *cap * 2 : 256;
    void *p = sm_reallocarray(v, next, size);
    if (p != NULL) {
        *cap = next;
    }
    return p;
}

void node_spans_init(struct node_spans *b, size_t limit)
{
    memset(b, 0, sizeof *b);
    sm_arena_init(&b->arena, limit);
}

void node_spans_reset(struct node_spans *b)
{
    sm_arena_reset(&b->arena);
    b->n = 0;
}

void node_spans_free(struct node_spans *b)
{
    sm_arena_free(&b->arena);
    sm_free(b->v);
    memset(b, 0, sizeof *b);
}

struct cbn_span *node_spans_add(struct node_spans *b)
{
    struct cbn_span *v = grow(b->v, &b->cap, b->n, sizeof *v);
    if (v == NULL) {
        return NULL;
    }
    b->v = v;
    memset(&v[b->n], 0, sizeof v[0]);
    return &v[b->n++];
}

void node_points_init(struct node_points *b, size_t limit)
{
    memset(b, 0, sizeof *b);
    sm_arena_init(&b->arena, limit);
}

void node_points_reset(struct node_points *b)
{
    sm_arena_reset(&b->arena);
    b->n = 0;
}

void node_points_free(struct node_points *b)
{
    sm_arena_free(&b->arena);
    sm_free(b->v);
    memset(b, 0, sizeof *b);
}

struct cbn_metric_point *node_points_add(struct node_points *b)
{
    struct cbn_metric_point *v = grow(b->v, &b->cap, b->n, sizeof *v);
    if (v == NULL) {
        return NULL;
    }
    b->v = v;
    memset(&v[b->n], 0, sizeof v[0]);
    return &v[b->n++];
}
