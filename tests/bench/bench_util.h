/* What the benchmarks share: a monotonic clock, medians, a counting heap. */
#ifndef SM_BENCH_UTIL_H
#define SM_BENCH_UTIL_H

#include <stddef.h>

/* Seconds on the monotonic clock. */
double bench_now_s(void);

/* The median of @n values (sorts @v in place). */
double bench_median(double *v, int n);

/* Installs the counting heap (sm_heap_set) or, with 0, restores libc's. */
void count_heap_install(int on);

/* Bytes currently allocated through the counting heap. */
size_t count_heap_live(void);

#endif /* SM_BENCH_UTIL_H */
