/* Pluggable heap: the C library by default, replaceable in tests. */
#include "base/alloc.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void *libc_malloc(void *data, size_t size)
{
    (void)data;
    return malloc(size);
}

static void *libc_calloc(void *data, size_t n, size_t size)
{
    (void)data;
    return calloc(n, size);
}

static void *libc_realloc(void *data, void *ptr, size_t size)
{
    (void)data;
    return realloc(ptr, size);
}

static void libc_free(void *data, void *ptr)
{
    (void)data;
    free(ptr);
}

static const struct sm_heap libc_heap = {
    .data = NULL,
    .malloc = libc_malloc,
    .calloc = libc_calloc,
    .realloc = libc_realloc,
    .free = libc_free,
};

/* The installed heap is copied here so callers need not keep theirs alive. */
static struct sm_heap installed_heap;
static const struct sm_heap *heap = &libc_heap;

void sm_heap_set(const struct sm_heap *h)
{
    if (h == NULL) {
        heap = &libc_heap;
        return;
    }
    installed_heap = *h;
    heap = &installed_heap;
}

void *sm_malloc(size_t size)
{
    return heap->malloc(heap->data, size);
}

void *sm_calloc(size_t n, size_t size)
{
    if (size != 0 && n > SIZE_MAX / size) {
        return NULL;
    }
    return heap->calloc(heap->data, n, size);
}

void *sm_realloc(void *ptr, size_t size)
{
    return heap->realloc(heap->data, ptr, size);
}

void *sm_reallocarray(void *ptr, size_t n, size_t size)
{
    if (size != 0 && n > SIZE_MAX / size) {
        return NULL;
    }
    return heap->realloc(heap->data, ptr, n * size);
}

void sm_free(void *ptr)
{
    if (ptr != NULL) {
        heap->free(heap->data, ptr);
    }
}

char *sm_strndup(const char *s, size_t n)
{
    char *copy = sm_malloc(n + 1);
    if (copy == NULL) {
        return NULL;
    }
    memcpy(copy, s, n);
    copy[n] = '\0';
    return copy;
}

char *sm_strdup(const char *s)
{
    return sm_strndup(s, strlen(s));
}
