/* TAP runner, failure recording, seeds and temporary directories. */
#define _XOPEN_SOURCE 700
#include "check.h"

#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/err.h"

#define MAX_TMPDIRS 64

static jmp_buf test_exit;
static int test_failed;
static int test_skipped;
static char skip_reason[256];
static char tmpdirs[MAX_TMPDIRS][256];
static int n_tmpdirs;

void check__fail(const char *file, int line, int fatal, const char *fmt, ...)
{
    va_list ap;
    printf("# %s:%d: %s", file, line, fatal ? "required: " : "check: ");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
    test_failed = 1;
    if (fatal) {
        longjmp(test_exit, 1);
    }
}

void check_skip(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(skip_reason, sizeof skip_reason, fmt, ap);
    va_end(ap);
    test_skipped = 1;
    longjmp(test_exit, 1);
}

const char *check__errname(int rv)
{
    return sm_errname(rv);
}

int check__str_eq(const char *a, const char *b)
{
    if (a == NULL || b == NULL) {
        return a == b;
    }
    return strcmp(a, b) == 0;
}

uint64_t check_seed(void)
{
    const char *env = getenv("SM_SEED");
    if (env != NULL && env[0] != '\0') {
        return strtoull(env, NULL, 0);
    }
    return 20261125u;
}

const char *check_tmpdir(void)
{
    if (n_tmpdirs == MAX_TMPDIRS) {
        check__fail(__FILE__, __LINE__, 1, "too many temporary directories");
    }
    const char *base = getenv("TMPDIR");
    char *path = tmpdirs[n_tmpdirs];
    snprintf(path, sizeof tmpdirs[0], "%s/sagemesh-test-XXXXXX",
             base != NULL && base[0] != '\0' ? base : "/tmp");
    if (mkdtemp(path) == NULL) {
        check__fail(__FILE__, __LINE__, 1, "mkdtemp(%s) failed", path);
    }
    n_tmpdirs++;
    return path;
}

static int remove_entry(const char *path,
                        const struct stat *st,
                        int type,
                        struct FTW *ftw)
{
    (void)st;
    (void)type;
    (void)ftw;
    remove(path);
    return 0;
}

static void remove_tmpdirs(void)
{
    for (int i = 0; i < n_tmpdirs; i++) {
        nftw(tmpdirs[i], remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    }
    n_tmpdirs = 0;
}

/* Runs one test between setup and teardown. Kept apart from the loop in
 * check_run() so that no local variable lives across the longjmp. */
static void run_one(const struct check_test *test,
                    void (*setup)(void),
                    void (*teardown)(void))
{
    test_failed = 0;
    test_skipped = 0;
    if (setup != NULL) {
        setup();
    }
    if (setjmp(test_exit) == 0) {
        test->fn();
    }
    if (teardown != NULL) {
        teardown();
    }
    check_heap_uninstall();
}

int check_run(int argc,
              char **argv,
              const struct check_test *tests,
              size_t n_tests,
              void (*setup)(void),
              void (*teardown)(void))
{
    const char *only = argc > 1 ? argv[1] : NULL;
    size_t planned = 0;
    for (size_t i = 0; i < n_tests; i++) {
        planned += only == NULL || strcmp(only, tests[i].name) == 0;
    }
    printf("TAP version 13\n1..%zu\n# seed=%" PRIu64 "\n", planned,
           check_seed());
    int failures = 0;
    size_t number = 0;
    for (size_t i = 0; i < n_tests; i++) {
        if (only != NULL && strcmp(only, tests[i].name) != 0) {
            continue;
        }
        run_one(&tests[i], setup, teardown);
        if (test_skipped && !test_failed) {
            printf("ok %zu - %s # SKIP %s\n", ++number, tests[i].name,
                   skip_reason);
        } else {
            printf("%s %zu - %s\n", test_failed ? "not ok" : "ok", ++number,
                   tests[i].name);
        }
        fflush(stdout);
        failures += test_failed;
    }
    remove_tmpdirs();
    if (only != NULL && planned == 0) {
        printf("# no test named '%s'\n", only);
        return 1;
    }
    return failures == 0 ? 0 : 1;
}

char *check_read_sample(const char *name, size_t *len)
{
    char path[4096];
    const char *dir = getenv("SM_SAMPLES_DIR");
#ifdef SM_SOURCE_ROOT
    if (dir == NULL || dir[0] == '\0') {
        dir = SM_SOURCE_ROOT "/../shared/samples";
    }
#endif
    if (dir == NULL) {
        check__fail(__FILE__, __LINE__, 1,
                    "SM_SAMPLES_DIR is not set and the build gave no "
                    "source root");
    }
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        check__fail(__FILE__, __LINE__, 1, "cannot open sample %s", path);
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    while (buf != NULL) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap) {
            break;
        }
        char *grown = realloc(buf, 2 * cap + 1);
        if (grown == NULL) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = grown;
        cap *= 2;
    }
    fclose(f);
    if (buf == NULL) {
        check__fail(__FILE__, __LINE__, 1, "out of memory reading %s", path);
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

void check_log_discard(void *arg,
                       enum sm_log_level level,
                       const char *line,
                       size_t len)
{
    (void)arg;
    (void)level;
    (void)line;
    (void)len;
}

/* ---- Fake file trees ---------------------------------------------------- */

void check_mkdirs(const char *base, const char *rel)
{
    char path[1024];
    REQUIRE(snprintf(path, sizeof path, "%s/%s", base, rel) < (int)sizeof path);
    for (char *p = path + strlen(base) + 1; *p != '\0'; p++) {
        if (*p == '/') {
            *p = '\0';
            REQUIRE(mkdir(path, 0755) == 0 || errno == EEXIST);
            *p = '/';
        }
    }
    REQUIRE(mkdir(path, 0755) == 0 || errno == EEXIST);
}

void check_put(const char *base, const char *rel, const char *text)
{
    char path[1024];
    REQUIRE(snprintf(path, sizeof path, "%s/%s", base, rel) < (int)sizeof path);
    char dir[1024];
    snprintf(dir, sizeof dir, "%s", rel);
    char *slash = strrchr(dir, '/');
    if (slash != NULL) {
        *slash = '\0';
        check_mkdirs(base, dir);
    }
    FILE *f = fopen(path, "w");
    REQUIRE(f != NULL);
    fputs(text, f);
    REQUIRE(fclose(f) == 0);
}

const char *check_get(const char *base, const char *rel)
{
    static char buf[16384];
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", base, rel);
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return "<missing>";
    }
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

bool check_is_dir(const char *base, const char *rel)
{
    char path[1024];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", base, rel);
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}
