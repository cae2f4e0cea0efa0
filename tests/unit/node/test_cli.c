/* Tests for the command line: dispatch, help, exit codes, version, keygen. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/err.h"
#include "check.h"
#include "node/node.h"
#include "transport/transport.h"

static char *out_text, *err_text;

/* Runs `sagemesh ARGS...` in-process, capturing stdout and stderr. */
static int run(const char *first, ...)
{
    char *argv[16] = {"sagemesh"};
    int argc = 1;
    va_list ap;
    va_start(ap, first);
    for (const char *a = first; a != NULL && argc < 15;
         a = va_arg(ap, char *)) {
        argv[argc++] = (char *)a;
    }
    va_end(ap);
    argv[argc] = NULL;

    free(out_text);
    free(err_text);
    size_t out_len, err_len;
    FILE *out = open_memstream(&out_text, &out_len);
    FILE *err = open_memstream(&err_text, &err_len);
    REQUIRE(out != NULL && err != NULL);
    int rc = node_main(argc, argv, out, err);
    fclose(out);
    fclose(err);
    return rc;
}

static void teardown(void)
{
    free(out_text);
    free(err_text);
    out_text = err_text = NULL;
}

static void test_version(void)
{
    CHECK_EQ(run("--version", NULL), NODE_EXIT_OK);
    CHECK(strncmp(out_text, "sagemesh ", 9) == 0);
    static const char *const libs[] = {"libuv", "http-parser", "zlib",
                                       "nng",   "libsodium",   "msgpack-c",
                                       "raft",  "lz4",         "OpenBLAS"};
    for (size_t i = 0; i < sizeof libs / sizeof libs[0]; i++) {
        if (strstr(out_text, libs[i]) == NULL) {
            check__fail(__FILE__, __LINE__, 0, "--version lacks %s", libs[i]);
        }
    }
    CHECK(strstr(out_text, "revision:") != NULL);
    CHECK(strstr(out_text, "build:") != NULL);
    CHECK_EQ(run("version", NULL), NODE_EXIT_OK);
}

static void test_help_lists_commands(void)
{
    /* Every command of DESIGN.md section 7. */
    static const char *const names[] = {
        "peer",     "status", "members", "services", "diagnoses",
        "diagnose", "train",  "flush",   "actions",  "keygen",
        "sim",      "demo",   "import"};
    CHECK_EQ(run("help", NULL), NODE_EXIT_OK);
    char *overview = strdup(out_text);
    REQUIRE(overview != NULL);
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char line[64];
        snprintf(line, sizeof line, "\n  %s ", names[i]);
        if (strstr(overview, line) == NULL) {
            check__fail(__FILE__, __LINE__, 0, "help lacks %s", names[i]);
        }
        CHECK_EQ(run(names[i], "--help", NULL), NODE_EXIT_OK);
        CHECK(strncmp(out_text, "Usage: sagemesh ", 16) == 0);
        CHECK_EQ(run("help", names[i], NULL), NODE_EXIT_OK);
    }
    free(overview);
    CHECK_EQ(run("--help", NULL), NODE_EXIT_OK);
    CHECK_EQ(run("-h", NULL), NODE_EXIT_OK);
    CHECK_EQ(run("peer", "--id", "x", "-h", NULL), NODE_EXIT_OK);
    CHECK(strstr(out_text, "--qos-target-ms") != NULL);
}

static void test_usage_errors(void)
{
    CHECK_EQ(run(NULL), NODE_EXIT_USAGE);
    CHECK(strstr(err_text, "Usage:") != NULL);
    CHECK_EQ(run("frobnicate", NULL), NODE_EXIT_USAGE);
    CHECK(strstr(err_text, "unknown command 'frobnicate'") != NULL);
    CHECK_EQ(run("help", "frobnicate", NULL), NODE_EXIT_USAGE);
    CHECK_EQ(run("help", "a", "b", NULL), NODE_EXIT_USAGE);
    /* Commands of a later version say so and exit 2. */
    CHECK_EQ(run("bench", NULL), NODE_EXIT_USAGE);
    CHECK(strstr(err_text, "not in this version") != NULL);
    CHECK_EQ(strlen(out_text), 0);
    /* "--" ends options: a later --help is an argument, not a request. */
    CHECK_EQ(run("status", "--", "--help", NULL), NODE_EXIT_USAGE);
}

static void test_keygen_stdout(void)
{
    CHECK_EQ(run("keygen", NULL), NODE_EXIT_OK);
    struct tp_secret s;
    CHECK_EQ(strlen(out_text), 65);
    CHECK_OK(tp_secret_parse(out_text, strlen(out_text), &s));
    char first[80];
    snprintf(first, sizeof first, "%s", out_text);
    CHECK_EQ(run("keygen", NULL), NODE_EXIT_OK);
    CHECK(strcmp(first, out_text) != 0);
    CHECK_EQ(run("keygen", "--bogus", NULL), NODE_EXIT_USAGE);
    CHECK_EQ(run("keygen", "extra", NULL), NODE_EXIT_USAGE);
    CHECK_EQ(run("keygen", "--out", NULL), NODE_EXIT_USAGE);
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return NULL;
    }
    static char buf[256];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static void test_keygen_file(void)
{
    char path[512];
    snprintf(path, sizeof path, "%s/secret", check_tmpdir());
    REQUIRE_EQ(run("keygen", "--out", path, NULL), NODE_EXIT_OK);
    struct stat st;
    REQUIRE(stat(path, &st) == 0);
    CHECK_EQ(st.st_mode & 0777, 0600);
    char first[256];
    snprintf(first, sizeof first, "%s", slurp(path));
    struct tp_secret s;
    CHECK_OK(tp_secret_parse(first, strlen(first), &s));

    /* An existing secret is never replaced by accident. */
    CHECK_EQ(run("keygen", "--out", path, NULL), NODE_EXIT_FAILED);
    CHECK(strstr(err_text, "already exists") != NULL);
    CHECK_STR(slurp(path), first);

    CHECK_EQ(run("keygen", "--out", path, "--force", NULL), NODE_EXIT_OK);
    CHECK(strcmp(slurp(path), first) != 0);
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);

    /* No temporary file is left behind, even on failure. */
    char missing[600];
    snprintf(missing, sizeof missing, "%s/no/such/dir/secret", check_tmpdir());
    CHECK_EQ(run("keygen", "--out", missing, NULL), NODE_EXIT_FAILED);
    CHECK(strstr(err_text, "cannot create") != NULL);
}

static const struct check_test tests[] = {
    {"version", test_version},
    {"help lists every command", test_help_lists_commands},
    {"usage errors exit 2", test_usage_errors},
    {"keygen to stdout", test_keygen_stdout},
    {"keygen to a file", test_keygen_file},
};

CHECK_MAIN(tests, NULL, teardown)
