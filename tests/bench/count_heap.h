/* A heap that counts the bytes it holds, for the benchmarks' memory figures. */
#ifndef SM_BENCH_COUNT_HEAP_H
#define SM_BENCH_COUNT_HEAP_H

#include <stddef.h>

/* Installs the counting heap (sm_heap_set) or, with 0, restores libc's. */
void count_heap_install(int on);

/* Bytes currently allocated through the counting heap. */
size_t count_heap_live(void);

#endif /* SM_BENCH_COUNT_HEAP_H */
