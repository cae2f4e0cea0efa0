/* Benchmark helpers. The counting heap: each block carries its size in a
 * 16-byte header. */
#include "bench_util.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/alloc.h"

#define HEADER 16

static size_t live_bytes;

static void *count_malloc(void *d, size_t n)
{
    (void)d;
    size_t *p = malloc(n + HEADER);
    if (p == NULL) {
        return NULL;
    }
    p[0] = n;
    live_bytes += n;
    return (char *)p + HEADER;
}

static void *count_calloc(void *d, size_t n, size_t size)
{
    void *p = count_malloc(d, n * size);
    if (p != NULL) {
        memset(p, 0, n * size);
    }
    return p;
}

static void *count_realloc(void *d, void *ptr, size_t n)
{
    if (ptr == NULL) {
        return count_malloc(d, n);
    }
    size_t *h = (size_t *)((char *)ptr - HEADER);
    size_t old = h[0];
    size_t *p = realloc(h, n + HEADER);
    if (p == NULL) {
        return NULL;
    }
    p[0] = n;
    live_bytes = live_bytes - old + n;
    return (char *)p + HEADER;
}

static void count_free(void *d, void *ptr)
{
    (void)d;
    if (ptr != NULL) {
        size_t *h = (size_t *)((char *)ptr - HEADER);
        live_bytes -= h[0];
        free(h);
    }
}

void count_heap_install(int on)
{
    static const struct sm_heap heap = {NULL, count_malloc, count_calloc,
                                        count_realloc, count_free};
    sm_heap_set(on ? &heap : NULL);
}

size_t count_heap_live(void)
{
    return live_bytes;
}

double bench_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double bench_median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}
