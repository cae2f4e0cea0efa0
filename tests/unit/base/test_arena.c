/* Tests for base/arena: alignment, growth, limit, reset, out of memory. */
#include <stdint.h>
#include <string.h>

#include "base/arena.h"
#include "check.h"

static void test_alloc_and_reset(void)
{
    struct sm_arena a;
    sm_arena_init(&a, 0);
    char *s = sm_arena_strndup(&a, "service.name=x", 12);
    REQUIRE(s != NULL);
    CHECK_STR(s, "service.name");
    for (int i = 0; i < 10000; i++) {
        uint64_t *p = sm_arena_alloc(&a, 24);
        REQUIRE(p != NULL);
        CHECK_EQ((uintptr_t)p % 8, 0);
        *p = (uint64_t)i;
    }
    void *big = sm_arena_alloc(&a, 1 << 20); /* larger than a chunk */
    REQUIRE(big != NULL);
    memset(big, 1, 1 << 20);
    sm_arena_reset(&a);
    CHECK_EQ(a.used, 0);
    CHECK(sm_arena_alloc(&a, 10) != NULL);
    sm_arena_free(&a);
}

static void test_limit(void)
{
    struct sm_arena a;
    sm_arena_init(&a, 1000);
    CHECK(sm_arena_alloc(&a, 900) != NULL);
    CHECK(sm_arena_alloc(&a, 200) == NULL);
    CHECK(sm_arena_over_limit(&a, 200));
    CHECK(sm_arena_alloc(&a, 16) != NULL);
    CHECK(sm_arena_alloc(&a, SIZE_MAX) == NULL);
    sm_arena_free(&a);
}

static void test_out_of_memory(void)
{
    check_heap_install();
    struct sm_arena a;
    sm_arena_init(&a, 0);
    check_heap_fault(0, 1);
    CHECK(sm_arena_alloc(&a, 8) == NULL);
    CHECK(!sm_arena_over_limit(&a, 8));
    CHECK(sm_arena_alloc(&a, 8) != NULL);
    sm_arena_free(&a);
    CHECK_EQ(check_heap_outstanding(), 0);
    check_heap_uninstall();
}

static const struct check_test tests[] = {
    {"alloc and reset", test_alloc_and_reset},
    {"limit", test_limit},
    {"out of memory", test_out_of_memory},
};

CHECK_MAIN(tests, NULL, NULL)
