/* A small TAP test runner: plans, checks, fatal requirements, seeds. */
#ifndef SM_TESTS_CHECK_H
#define SM_TESTS_CHECK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/log.h"

/* A test file defines its tests as plain functions and ends with
 *
 *   static const struct check_test tests[] = {
 *       {"sketch merges", test_merge},
 *       ...
 *   };
 *   CHECK_MAIN(tests, setup, teardown)   (setup/teardown may be NULL)
 *
 * Each test runs after setup and before teardown and prints one TAP line
 * ("ok 3 - sketch merges"). CHECK(...) records a failure and goes on;
 * REQUIRE(...) records it and ends the test at once (teardown still runs).
 * Diagnostics go to stdout as TAP comments.
 *
 * `./test_x NAME` runs only the test called NAME. SM_SEED=N in the
 * environment changes check_seed(); the seed in use is printed so that any
 * failure can be replayed. Tests never read the real clock or sleep. */
struct check_test
{
    const char *name;
    void (*fn)(void);
};

/* Runs @tests and returns the process exit code (0 when all passed). Also
 * removes the directories made by check_tmpdir() and verifies the fault
 * heap reports no outstanding blocks after each test that installed it. */
int check_run(int argc,
              char **argv,
              const struct check_test *tests,
              size_t n_tests,
              void (*setup)(void),
              void (*teardown)(void));

#define CHECK_MAIN(tests, setup, teardown)                                  \
    int main(int argc, char **argv)                                         \
    {                                                                       \
        return check_run(argc, argv, tests, sizeof tests / sizeof tests[0], \
                         setup, teardown);                                  \
    }

/* Ends the current test as skipped, printed "ok N - name # SKIP reason":
 * for a precondition the machine does not meet (a resource limit), never
 * for a failure. Like REQUIRE, it does not return; teardown still runs. */
void check_skip(const char *fmt, ...) __attribute__((format(printf, 1, 2)))
__attribute__((noreturn));

/* The seed for this run: SM_SEED if set, else a fixed default. */
uint64_t check_seed(void);

/* Records a failure of the current test at @file:@line with a printf-style
 * explanation; when @fatal, ends the test (longjmp to the runner). */
void check__fail(const char *file, int line, int fatal, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define CHECK__IMPL(fatal, cond)                                 \
    do {                                                         \
        if (!(cond)) {                                           \
            check__fail(__FILE__, __LINE__, fatal, "%s", #cond); \
        }                                                        \
    } while (0)

#define CHECK(cond)   CHECK__IMPL(0, cond)
#define REQUIRE(cond) CHECK__IMPL(1, cond)

/* Integer equality, printing both values on failure. */
#define CHECK__EQ(fatal, a, b)                                                \
    do {                                                                      \
        long long check_a_ = (long long)(a), check_b_ = (long long)(b);       \
        if (check_a_ != check_b_) {                                           \
            check__fail(__FILE__, __LINE__, fatal, "%s == %s (%lld != %lld)", \
                        #a, #b, check_a_, check_b_);                          \
        }                                                                     \
    } while (0)
#define CHECK_EQ(a, b)   CHECK__EQ(0, a, b)
#define REQUIRE_EQ(a, b) CHECK__EQ(1, a, b)

/* An sm_err result that must be SM_OK; prints the error name otherwise. */
#define CHECK__OK(fatal, expr)                                              \
    do {                                                                    \
        int check_rv_ = (expr);                                             \
        if (check_rv_ != 0) {                                               \
            check__fail(__FILE__, __LINE__, fatal, "%s returned %s", #expr, \
                        check__errname(check_rv_));                         \
        }                                                                   \
    } while (0)
#define CHECK_OK(expr)   CHECK__OK(0, expr)
#define REQUIRE_OK(expr) CHECK__OK(1, expr)

/* |a - b| <= tol, printing both values on failure. */
#define CHECK_NEAR(a, b, tol)                                               \
    do {                                                                    \
        double check_a_ = (a), check_b_ = (b), check_t_ = (tol);            \
        if (!(check_a_ - check_b_ <= check_t_ &&                            \
              check_b_ - check_a_ <= check_t_)) {                           \
            check__fail(__FILE__, __LINE__, 0,                              \
                        "%s ~ %s (%.9g vs %.9g, tol %g)", #a, #b, check_a_, \
                        check_b_, check_t_);                                \
        }                                                                   \
    } while (0)

/* String equality (NULL-safe), printing both on failure. */
#define CHECK_STR(a, b)                                                       \
    do {                                                                      \
        const char *check_a_ = (a), *check_b_ = (b);                          \
        if (!check__str_eq(check_a_, check_b_)) {                             \
            check__fail(__FILE__, __LINE__, 0, "%s == %s (\"%s\" != \"%s\")", \
                        #a, #b, check_a_ ? check_a_ : "(null)",               \
                        check_b_ ? check_b_ : "(null)");                      \
        }                                                                     \
    } while (0)

const char *check__errname(int rv);
int check__str_eq(const char *a, const char *b);

/* Makes a fresh empty directory under $TMPDIR (or /tmp) and returns its
 * path, valid until the end of the run, when it is removed with all its
 * contents. Ends the test on failure. */
const char *check_tmpdir(void);

/* Reads the captured sample @name from ../shared/samples (or
 * $SM_SAMPLES_DIR) into a new buffer (free()) and stores its length in
 * @len. A missing sample ends the test as a failure: the samples are part
 * of what is tested, not optional. */
char *check_read_sample(const char *name, size_t *len);

/* ---- Fake file trees ------------------------------------------------------
 * For tests that build a fake /sys or /proc under check_tmpdir(). Each
 * fails the current test (fatally) when the file system refuses. */

/* Makes @base/@rel and every directory on the way to it, like mkdir -p
 * (existing ones are fine). */
void check_mkdirs(const char *base, const char *rel);

/* Writes @text to @base/@rel, replacing it, after making the directories
 * on the way. */
void check_put(const char *base, const char *rel, const char *text);

/* Returns the content of @base/@rel (its first 16 KiB) in a static buffer
 * that the next call overwrites, or "<missing>" when it cannot be opened. */
const char *check_get(const char *base, const char *rel);

/* True when @base/@rel is a directory. */
bool check_is_dir(const char *base, const char *rel);

/* ---- Allocation fault injection (tests/lib/heap.c) --------------------
 *
 * check_heap_install() replaces the sm_* heap with a counting one that can
 * fail allocations: after `delay` successful allocations, the next `repeat`
 * fail (repeat < 0: all further ones). SM_HEAP_FAULT_DELAY and
 * SM_HEAP_FAULT_REPEAT set the initial values (default: never fail). */
void check_heap_install(void);

/* Restores the C library heap. */
void check_heap_uninstall(void);

/* Fails allocations as described above, counting from now. */
void check_heap_fault(int delay, int repeat);

/* Allocations made since install (successful or failed). */
long check_heap_calls(void);

/* Blocks allocated through the fault heap and not yet freed. */
long check_heap_outstanding(void);

/* A log sink that drops every line (sm_log_set_sink(check_log_discard,
 * NULL)): for tests whose code under test logs on purpose. */
void check_log_discard(void *arg,
                       enum sm_log_level level,
                       const char *line,
                       size_t len);

#endif /* SM_TESTS_CHECK_H */
