/* A counting heap that fails allocations on demand, for out-of-memory tests. */
#include <stdlib.h>

#include "base/alloc.h"
#include "check.h"

static long calls;       /* allocation attempts since install */
static long outstanding; /* live blocks */
static int delay = -1;   /* successful allocations before faults; -1: never */
static int repeat;       /* faults to inject; < 0: forever */
static int installed;

/* Decides whether this allocation attempt fails, advancing the schedule. */
static int should_fail(void)
{
    calls++;
    if (delay < 0) {
        return 0;
    }
    if (delay > 0) {
        delay--;
        return 0;
    }
    if (repeat == 0) {
        delay = -1;
        return 0;
    }
    if (repeat > 0) {
        repeat--;
    }
    return 1;
}

static void *fault_malloc(void *data, size_t size)
{
    (void)data;
    if (should_fail()) {
        return NULL;
    }
    void *p = malloc(size == 0 ? 1 : size);
    outstanding += p != NULL;
    return p;
}

static void *fault_calloc(void *data, size_t n, size_t size)
{
    (void)data;
    if (should_fail()) {
        return NULL;
    }
    void *p = calloc(n == 0 ? 1 : n, size == 0 ? 1 : size);
    outstanding += p != NULL;
    return p;
}

static void *fault_realloc(void *data, void *ptr, size_t size)
{
    (void)data;
    if (should_fail()) {
        return NULL;
    }
    void *p = realloc(ptr, size == 0 ? 1 : size);
    if (p != NULL && ptr == NULL) {
        outstanding++;
    }
    return p;
}

static void fault_free(void *data, void *ptr)
{
    (void)data;
    outstanding -= ptr != NULL;
    free(ptr);
}

static int env_int(const char *name, int fallback)
{
    const char *v = getenv(name);
    return v != NULL && v[0] != '\0' ? atoi(v) : fallback;
}

void check_heap_install(void)
{
    static const struct sm_heap heap = {
        .data = NULL,
        .malloc = fault_malloc,
        .calloc = fault_calloc,
        .realloc = fault_realloc,
        .free = fault_free,
    };
    calls = 0;
    outstanding = 0;
    delay = env_int("SM_HEAP_FAULT_DELAY", -1);
    repeat = env_int("SM_HEAP_FAULT_REPEAT", 1);
    installed = 1;
    sm_heap_set(&heap);
}

void check_heap_uninstall(void)
{
    if (!installed) {
        return;
    }
    installed = 0;
    sm_heap_set(NULL);
    if (outstanding != 0) {
        check__fail(__FILE__, __LINE__, 0,
                    "fault heap: %ld block(s) still allocated at the end of "
                    "the test",
                    outstanding);
    }
}

void check_heap_fault(int new_delay, int new_repeat)
{
    delay = new_delay;
    repeat = new_repeat;
}

long check_heap_calls(void)
{
    return calls;
}

long check_heap_outstanding(void)
{
    return outstanding;
}
