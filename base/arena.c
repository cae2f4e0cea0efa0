/* Bump allocation in chained chunks. */
#include "base/arena.h"

#include <stdalign.h>
#include <stdint.h>
#include <string.h>

#include "base/alloc.h"

struct sm_arena_chunk
{
    struct sm_arena_chunk *next; /* older chunk */
    size_t size, used;           /* of data[] */
    alignas(max_align_t) unsigned char data[];
};

#define DEFAULT_CHUNK (64u * 1024u)

void sm_arena_init(struct sm_arena *arena, size_t limit)
{
    memset(arena, 0, sizeof *arena);
    arena->limit = limit;
}

int sm_arena_over_limit(const struct sm_arena *arena, size_t request)
{
    return arena->limit != 0 &&
           (request > arena->limit || arena->used > arena->limit - request);
}

void *sm_arena_alloc(struct sm_arena *arena, size_t size)
{
    const size_t align = alignof(max_align_t);
    if (size > SIZE_MAX / 2) {
        return NULL;
    }
    size_t rounded = (size + align - 1) / align * align;
    if (sm_arena_over_limit(arena, rounded)) {
        return NULL;
    }
    struct sm_arena_chunk *c = arena->head;
    if (c == NULL || c->size - c->used < rounded) {
        size_t want = arena->chunk_size ? arena->chunk_size : DEFAULT_CHUNK;
        if (want < rounded) {
            want = rounded;
        }
        struct sm_arena_chunk *fresh = sm_malloc(sizeof *fresh + want);
        if (fresh == NULL) {
            return NULL;
        }
        fresh->size = want;
        fresh->used = 0;
        fresh->next = c;
        arena->head = c = fresh;
    }
    void *p = c->data + c->used;
    c->used += rounded;
    arena->used += rounded;
    return p;
}

char *sm_arena_strndup(struct sm_arena *arena, const char *s, size_t len)
{
    if (len == SIZE_MAX) {
        return NULL;
    }
    char *p = sm_arena_alloc(arena, len + 1);
    if (p != NULL) {
        memcpy(p, s, len);
        p[len] = '\0';
    }
    return p;
}

void sm_arena_reset(struct sm_arena *arena)
{
    struct sm_arena_chunk *c = arena->head;
    if (c == NULL) {
        return;
    }
    /* Keep the oldest chunk: it is the default size, and reuse avoids a
     * malloc per batch. */
    while (c->next != NULL) {
        struct sm_arena_chunk *older = c->next;
        sm_free(c);
        c = older;
    }
    c->used = 0;
    arena->head = c;
    arena->used = 0;
}

void sm_arena_free(struct sm_arena *arena)
{
    struct sm_arena_chunk *c = arena->head;
    while (c != NULL) {
        struct sm_arena_chunk *older = c->next;
        sm_free(c);
        c = older;
    }
    arena->head = NULL;
    arena->used = 0;
}
