/* The pluggable heap every module below node/ allocates through. */
#ifndef SM_BASE_ALLOC_H
#define SM_BASE_ALLOC_H

#include <stddef.h>

/* A heap: four functions and their shared state. The default heap wraps the C
 * library. Tests install a heap that fails on the Nth call to check that every
 * out-of-memory path returns SM_ENOMEM and leaks nothing.
 *
 * Contracts are those of the C library: malloc(0) and realloc(p, 0) may return
 * NULL or a unique pointer, free(NULL) is a no-op, and a failed realloc leaves
 * the old block untouched. */
struct sm_heap
{
    void *data; /* passed back to every function, owned by the installer */
    void *(*malloc)(void *data, size_t size);
    void *(*calloc)(void *data, size_t n, size_t size);
    void *(*realloc)(void *data, void *ptr, size_t size);
    void (*free)(void *data, void *ptr);
};

/* Installs @heap for all later sm_* allocations, or restores the C library
 * heap when @heap is NULL. The struct is copied. Blocks must be freed by the
 * heap that allocated them, so switch heaps only when nothing is allocated
 * (tests do it at start-up and tear-down). Not thread-safe: call it before
 * any other thread exists. */
void sm_heap_set(const struct sm_heap *heap);

/* Allocates @size bytes. Returns NULL on failure; callers map that to
 * SM_ENOMEM. The caller owns the block and frees it with sm_free(). */
void *sm_malloc(size_t size);

/* Allocates a zeroed array of @n elements of @size bytes. Returns NULL on
 * failure or when n * size overflows. */
void *sm_calloc(size_t n, size_t size);

/* Resizes @ptr to @size bytes. On failure returns NULL and @ptr remains valid
 * and owned by the caller. */
void *sm_realloc(void *ptr, size_t size);

/* Resizes @ptr to an array of @n elements of @size bytes, failing (NULL, @ptr
 * untouched) when n * size overflows. */
void *sm_reallocarray(void *ptr, size_t n, size_t size);

/* Frees a block from sm_malloc(), sm_calloc(), sm_realloc() or sm_strdup().
 * NULL is a no-op. */
void sm_free(void *ptr);

/* Returns a copy of the NUL-terminated @s owned by the caller (sm_free), or
 * NULL on failure. */
char *sm_strdup(const char *s);

/* Returns a NUL-terminated copy of the first @n bytes of @s (which need not be
 * terminated), owned by the caller, or NULL on failure. */
char *sm_strndup(const char *s, size_t n);

#endif /* SM_BASE_ALLOC_H */
