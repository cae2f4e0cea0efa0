/* A bump allocator for many small objects freed together (parsed batches). */
#ifndef SM_BASE_ARENA_H
#define SM_BASE_ARENA_H

#include <stddef.h>

/* Allocations come from chunks obtained with sm_malloc and are all released
 * by sm_arena_reset() or sm_arena_free(); there is no per-object free. A
 * parser fills an arena with the strings and records of one batch, the
 * batch is applied, and the arena is reset for the next one, keeping its
 * first chunk. @limit caps the total bytes so that hostile input cannot
 * make a batch grow without bound.
 *
 * Caller-allocated; zero-initialised or sm_arena_init()ed. Not thread-safe. */
struct sm_arena
{
    struct sm_arena_chunk *head; /* newest chunk */
    size_t used;                 /* bytes handed out, all chunks */
    size_t limit;                /* 0: no limit */
    size_t chunk_size;           /* default size of a new chunk */
};

/* Prepares @arena with a byte limit (0: none). Allocates nothing. */
void sm_arena_init(struct sm_arena *arena, size_t limit);

/* Returns @size bytes aligned for any type, or NULL when out of memory or
 * over the limit (check with sm_arena_over_limit()). Memory is not zeroed.
 */
void *sm_arena_alloc(struct sm_arena *arena, size_t size);

/* Returns a NUL-terminated copy of @len bytes at @s, or NULL. */
char *sm_arena_strndup(struct sm_arena *arena, const char *s, size_t len);

/* Non-zero when the last failure was the byte limit, not the heap. */
int sm_arena_over_limit(const struct sm_arena *arena, size_t request);

/* Releases everything allocated, keeping the first chunk for reuse. */
void sm_arena_reset(struct sm_arena *arena);

/* Releases everything, chunks included. */
void sm_arena_free(struct sm_arena *arena);

#endif /* SM_BASE_ARENA_H */
