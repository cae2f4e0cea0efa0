/* Tests for operator command templates and the command runner. */
#include <string.h>
#include <time.h>

#include "actuate/actuate.h"
#include "base/err.h"
#include "check.h"

static const struct act_cmd_values vals = {"user-mongodb", "mongo-1", "cpu",
                                           "2"};

/* Expands @t with @v, requiring success, and checks the words. */
static void expect(const char *t,
                   const struct act_cmd_values *v,
                   const char *const *want,
                   size_t n_want)
{
    char err[SM_ERRMSG_SIZE] = "";
    char **argv = NULL;
    size_t argc = 0;
    int rv = act_cmd_expand(t, strlen(t), v, &argv, &argc, err);
    if (rv != SM_OK) {
        check__fail(__FILE__, __LINE__, 1, "expand \"%s\": %s", t, err);
    }
    CHECK_EQ(argc, n_want);
    for (size_t i = 0; i < argc && i < n_want; i++) {
        CHECK_STR(argv[i], want[i]);
    }
    CHECK(argv[argc] == NULL);
    act_cmd_argv_free(argv);
}

/* Expands @t, requiring error @code with @needle in the message. */
static void expect_error(const char *t,
                         size_t len,
                         const struct act_cmd_values *v,
                         int code,
                         const char *needle)
{
    char err[SM_ERRMSG_SIZE] = "";
    char **argv = (char **)1;
    size_t argc = 77;
    CHECK_EQ(act_cmd_expand(t, len, v, &argv, &argc, err), code);
    CHECK(argv == NULL);
    CHECK_EQ(argc, 77u);
    if (strstr(err, needle) == NULL) {
        check__fail(__FILE__, __LINE__, 0, "\"%s\" not in \"%s\"", needle, err);
    }
}

static void test_expand(void)
{
    const char *k[] = {"kubectl", "scale", "deploy/user-mongodb",
                       "--replicas=+2"};
    expect("kubectl scale deploy/{service} --replicas=+{amount}", &vals, k, 4);
    const char *d[] = {"docker", "update", "--cpus", "2", "mongo-1"};
    expect("  docker\tupdate --cpus {amount}\n {instance}  ", &vals, d, 5);
    const char *s[] = {"/opt/scale.sh", "cpu:user-mongodb", "{literal}"};
    expect("/opt/scale.sh {resource}:{service} {{literal}}", &vals, s, 3);
    const char *b[] = {"echo", "{2}"};
    expect("echo {{{amount}}}", &vals, b, 2);
    /* Unused placeholders may have no value; argc may be NULL. */
    struct act_cmd_values only = {"svc", NULL, NULL, NULL};
    const char *o[] = {"true", "svc"};
    expect("true {service}", &only, o, 2);
    char err[SM_ERRMSG_SIZE];
    char **argv;
    CHECK_OK(act_cmd_expand("true", 4, NULL, &argv, NULL, err));
    CHECK_STR(argv[0], "true");
    act_cmd_argv_free(argv);
    act_cmd_argv_free(NULL);
    /* Only @len bytes are read. */
    const char *l[] = {"echo"};
    expect_error("echo {service}", 6, &vals, SM_EMALFORMED, "unterminated");
    CHECK_OK(act_cmd_expand("echo {service}", 4, &vals, &argv, NULL, err));
    CHECK_STR(argv[0], l[0]);
    CHECK(argv[1] == NULL);
    act_cmd_argv_free(argv);
}

static void test_hostile_values(void)
{
    struct act_cmd_values v = {"x; rm -rf /", "$(x)", "`id` && ls", "a b\tc"};
    const char *w[] = {"docker", "update",     "--name=x; rm -rf /",
                       "$(x)",   "`id` && ls", "a b\tc"};
    expect("docker update --name={service} {instance} {resource} {amount}", &v,
           w, 6);
    /* A value that is empty stays one (empty) argument. */
    struct act_cmd_values e = {"", "", "", ""};
    const char *x[] = {"cmd", "", "--n="};
    expect("cmd {service} --n={amount}", &e, x, 3);
    /* Placeholder syntax inside a value is not expanded again. */
    struct act_cmd_values p = {"{instance}", "i", "r", "a"};
    const char *y[] = {"echo", "{instance}"};
    expect("echo {service}", &p, y, 2);

    struct act_cmd_values nl = {"a\nrm -rf /", "i\r", "r", "a"};
    expect_error("echo {service}", 14, &nl, SM_EINVAL, "{service}");
    expect_error("echo {instance}", 15, &nl, SM_EINVAL, "newline");
    expect_error("echo {amount}", 13,
                 &(struct act_cmd_values){"s", NULL, NULL, NULL}, SM_EINVAL,
                 "{amount} has no value");
    expect_error("{service} x", 11, &e, SM_EINVAL, "empty program");
}

static void test_bad_templates(void)
{
    char err[SM_ERRMSG_SIZE];
    expect_error("", 0, &vals, SM_EMALFORMED, "empty");
    expect_error(" \t\n", 3, &vals, SM_EMALFORMED, "empty");
    expect_error("echo {svc}", 10, &vals, SM_EMALFORMED,
                 "unknown placeholder {svc}");
    expect_error("echo {}", 7, &vals, SM_EMALFORMED, "unknown placeholder {}");
    expect_error("echo {service", 13, &vals, SM_EMALFORMED,
                 "unterminated placeholder at offset 5");
    expect_error("echo {service x}", 16, &vals, SM_EMALFORMED, "unterminated");
    expect_error("echo {ser{vice}", 15, &vals, SM_EMALFORMED, "unterminated");
    expect_error("echo a}b", 8, &vals, SM_EMALFORMED, "unmatched '}'");
    expect_error("echo a\0b", 8, &vals, SM_EMALFORMED, "NUL byte at offset 6");
    expect_error(NULL, 0, &vals, SM_EINVAL, "NULL");

    static char big[ACT_CMD_MAX_TEMPLATE + 2];
    memset(big, 'a', sizeof big);
    expect_error(big, sizeof big, &vals, SM_ETOOBIG, "bytes");
    /* The longest template is one word of the longest allowed size. */
    char **argv;
    REQUIRE_OK(
        act_cmd_expand(big, ACT_CMD_MAX_TEMPLATE, &vals, &argv, NULL, err));
    CHECK_EQ(strlen(argv[0]), ACT_CMD_MAX_ARG);
    act_cmd_argv_free(argv);
    for (size_t i = 0; i < ACT_CMD_MAX_TEMPLATE; i += 2) {
        big[i + 1] = ' ';
    }
    expect_error(big, ACT_CMD_MAX_TEMPLATE, &vals, SM_ETOOBIG, "words");

    /* A value that makes a word too long. */
    static char longval[ACT_CMD_MAX_ARG + 1];
    memset(longval, 'v', ACT_CMD_MAX_ARG);
    struct act_cmd_values lv = {longval, NULL, NULL, NULL};
    expect_error("echo x{service}", 15, &lv, SM_ETOOBIG, "longer than");

    CHECK_OK(act_cmd_template_check("a {service} {{x}}", 17, err));
    CHECK_EQ(act_cmd_template_check("a {zone}", 8, err), SM_EMALFORMED);
    CHECK(strstr(err, "{zone}") != NULL);
}

static void test_expand_nomem(void)
{
    char err[SM_ERRMSG_SIZE];
    char **argv;
    check_heap_install();
    for (int n = 0; n < 3; n++) {
        check_heap_fault(n, 1);
        CHECK_EQ(act_cmd_expand("a {service} b", 13, &vals, &argv, NULL, err),
                 SM_ENOMEM);
        CHECK(argv == NULL);
    }
    check_heap_fault(0, 0);
    CHECK_OK(act_cmd_expand("a {service} b", 13, &vals, &argv, NULL, err));
    act_cmd_argv_free(argv);
    check_heap_uninstall();
}

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

#define IN_10S (mono_ns() + 10000000000ull)

static void test_run_status(void)
{
    char err[SM_ERRMSG_SIZE];
    struct act_cmd_result r;
    char *t[] = {"/bin/true", NULL};
    REQUIRE_OK(act_cmd_run(t, IN_10S, 64, &r, err));
    CHECK(r.exited);
    CHECK_EQ(r.exit_code, 0);
    CHECK(!r.timed_out);
    CHECK_EQ(r.output_len, 0u);
    CHECK_STR(r.output, "");
    act_cmd_result_free(&r);
    CHECK(r.output == NULL);

    char *f[] = {"false", NULL}; /* found in PATH */
    REQUIRE_OK(act_cmd_run(f, IN_10S, 64, &r, err));
    CHECK(r.exited);
    CHECK_EQ(r.exit_code, 1);
    act_cmd_result_free(&r);

    char *k[] = {"sh", "-c", "kill -TERM $$", NULL};
    REQUIRE_OK(act_cmd_run(k, IN_10S, 64, &r, err));
    CHECK(!r.exited);
    CHECK_EQ(r.term_signal, 15);
    act_cmd_result_free(&r);
}

static void test_run_output(void)
{
    char err[SM_ERRMSG_SIZE];
    struct act_cmd_result r;
    char *e[] = {"sh", "-c", "echo out; echo err >&2; exit 3", NULL};
    REQUIRE_OK(act_cmd_run(e, IN_10S, 256, &r, err));
    CHECK(r.exited);
    CHECK_EQ(r.exit_code, 3);
    CHECK_STR(r.output, "out\nerr\n");
    CHECK_EQ(r.output_len, 8u);
    CHECK(!r.output_truncated);
    act_cmd_result_free(&r);

    /* Hostile text as one argument is printed, not run. */
    char *h[] = {"printf", "%s", "; rm -rf / $(x)", NULL};
    REQUIRE_OK(act_cmd_run(h, IN_10S, 256, &r, err));
    CHECK_STR(r.output, "; rm -rf / $(x)");
    act_cmd_result_free(&r);

    /* More output than kept: truncated, and the child is not blocked. */
    char *big[] = {"sh", "-c", "head -c 200000 /dev/zero | tr '\\0' x", NULL};
    REQUIRE_OK(act_cmd_run(big, IN_10S, 10, &r, err));
    CHECK(r.exited);
    CHECK_EQ(r.exit_code, 0);
    CHECK_EQ(r.output_len, 10u);
    CHECK(r.output_truncated);
    CHECK_STR(r.output, "xxxxxxxxxx");
    act_cmd_result_free(&r);
}

static void test_run_errors(void)
{
    char err[SM_ERRMSG_SIZE];
    struct act_cmd_result r;
    char *m[] = {"sagemesh-no-such-program-xyz", NULL};
    CHECK_EQ(act_cmd_run(m, IN_10S, 64, &r, err), SM_ENOTFOUND);
    CHECK(strstr(err, "sagemesh-no-such-program-xyz") != NULL);
    CHECK(r.output == NULL);
    char *d[] = {"/", NULL};
    CHECK(act_cmd_run(d, IN_10S, 64, &r, err) != SM_OK);
    char *empty[] = {NULL};
    CHECK_EQ(act_cmd_run(empty, IN_10S, 64, &r, err), SM_EINVAL);
    CHECK_EQ(act_cmd_run(NULL, IN_10S, 64, &r, err), SM_EINVAL);
}

static void test_run_timeout(void)
{
    char err[SM_ERRMSG_SIZE];
    struct act_cmd_result r;
    char *s[] = {"sleep", "5", NULL};
    uint64_t start = mono_ns();
    REQUIRE_OK(act_cmd_run(s, start + 200000000ull, 64, &r, err));
    uint64_t took = mono_ns() - start;
    CHECK(r.timed_out);
    CHECK(!r.exited);
    CHECK_EQ(r.term_signal, 9);
    CHECK(took >= 200000000ull);
    CHECK(took < 2000000000ull);
    act_cmd_result_free(&r);
}

static const struct check_test tests[] = {
    {"expand", test_expand},
    {"hostile values", test_hostile_values},
    {"bad templates", test_bad_templates},
    {"expand out of memory", test_expand_nomem},
    {"run exit status", test_run_status},
    {"run output", test_run_output},
    {"run errors", test_run_errors},
    {"run timeout", test_run_timeout},
};

CHECK_MAIN(tests, NULL, NULL)
