/* Tests for base/alloc and the fault-injecting test heap. */
#include <stdint.h>
#include <string.h>

#include "base/alloc.h"
#include "check.h"

static void test_basic(void)
{
    char *s = sm_strdup("window");
    REQUIRE(s != NULL);
    CHECK_STR(s, "window");
    sm_free(s);
    s = sm_strndup("abcdef", 3);
    REQUIRE(s != NULL);
    CHECK_STR(s, "abc");
    sm_free(s);
    int *z = sm_calloc(16, sizeof *z);
    REQUIRE(z != NULL);
    for (int i = 0; i < 16; i++) {
        CHECK_EQ(z[i], 0);
    }
    int *bigger = sm_reallocarray(z, 32, sizeof *z);
    REQUIRE(bigger != NULL);
    sm_free(bigger);
    sm_free(NULL);
}

static void test_overflow(void)
{
    CHECK(sm_calloc(SIZE_MAX / 2, 3) == NULL);
    void *p = sm_malloc(8);
    REQUIRE(p != NULL);
    CHECK(sm_reallocarray(p, SIZE_MAX / 2, 3) == NULL);
    sm_free(p); /* still ours after the failed resize */
}

static void test_fault_heap(void)
{
    check_heap_install();
    check_heap_fault(2, 1); /* third allocation fails, then all succeed */
    void *a = sm_malloc(1), *b = sm_malloc(1), *c = sm_malloc(1);
    void *d = sm_malloc(1);
    CHECK(a != NULL);
    CHECK(b != NULL);
    CHECK(c == NULL);
    CHECK(d != NULL);
    CHECK_EQ(check_heap_calls(), 4);
    CHECK_EQ(check_heap_outstanding(), 3);
    /* A failed realloc leaves the block valid and counted. */
    check_heap_fault(0, 1);
    CHECK(sm_realloc(a, 64) == NULL);
    CHECK_EQ(check_heap_outstanding(), 3);
    sm_free(a);
    sm_free(b);
    sm_free(d);
    CHECK_EQ(check_heap_outstanding(), 0);
    check_heap_fault(0, -1); /* everything fails */
    CHECK(sm_strdup("x") == NULL);
    CHECK(sm_calloc(1, 1) == NULL);
    check_heap_uninstall();
}

static const struct check_test tests[] = {
    {"basic", test_basic},
    {"overflow", test_overflow},
    {"fault heap", test_fault_heap},
};

CHECK_MAIN(tests, NULL, NULL)
