/* Tests for base/err: names, messages, wrapping, errno mapping. */
#include <errno.h>
#include <string.h>

#include "base/err.h"
#include "check.h"

static void test_names_and_messages(void)
{
    CHECK_STR(sm_errname(SM_OK), "SM_OK");
    CHECK_STR(sm_errname(SM_ENOMEM), "SM_ENOMEM");
    CHECK_STR(sm_strerror(SM_ENOMEM), "out of memory");
    CHECK_STR(sm_errname(SM_EINTERNAL), "SM_EINTERNAL");
    CHECK_STR(sm_errname(-1), "SM_EUNKNOWN");
    CHECK_STR(sm_errname(SM_ERR__COUNT), "SM_EUNKNOWN");
    CHECK_STR(sm_strerror(12345), "unknown error");
    /* Every code has a distinct name and a non-empty message. */
    for (int i = 0; i < SM_ERR__COUNT; i++) {
        CHECK(strlen(sm_strerror(i)) > 0);
        for (int j = 0; j < i; j++) {
            CHECK(strcmp(sm_errname(i), sm_errname(j)) != 0);
        }
    }
}

static void test_wrap(void)
{
    char msg[SM_ERRMSG_SIZE] = "";
    sm_errmsg_wrapf(msg, "open %s", "x");
    CHECK_STR(msg, "open x");
    sm_errmsg_printf(msg, "no such file");
    sm_errmsg_wrapf(msg, "load window log %d", 3);
    CHECK_STR(msg, "load window log 3: no such file");
    sm_errmsg_wrapf(msg, "start");
    CHECK_STR(msg, "start: load window log 3: no such file");
}

static void test_wrap_truncates(void)
{
    char msg[SM_ERRMSG_SIZE];
    char big[600];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    sm_errmsg_printf(msg, "%s", big);
    CHECK_EQ(strlen(msg), SM_ERRMSG_SIZE - 1);
    sm_errmsg_wrapf(msg, "ctx");
    CHECK_EQ(strlen(msg), SM_ERRMSG_SIZE - 1);
    CHECK(strncmp(msg, "ctx: aaa", 8) == 0);
    sm_errmsg_wrapf(msg, "%s", big);
    CHECK_EQ(strlen(msg), SM_ERRMSG_SIZE - 1);
}

static void test_errno(void)
{
    CHECK_EQ(sm_err_from_errno(0), SM_OK);
    CHECK_EQ(sm_err_from_errno(ENOMEM), SM_ENOMEM);
    CHECK_EQ(sm_err_from_errno(ENOENT), SM_ENOTFOUND);
    CHECK_EQ(sm_err_from_errno(EACCES), SM_EPERM);
    CHECK_EQ(sm_err_from_errno(ETIMEDOUT), SM_ETIMEDOUT);
    CHECK_EQ(sm_err_from_errno(EXDEV), SM_EIO);
}

static void test_assert_holds(void)
{
    int x = 1;
    /* A passing assertion is one statement: safe under an unbraced if. */
    if (x)
        SM_ASSERT(x == 1);
    else
        SM_ASSERT(x == 0);
    CHECK_EQ(x, 1);
}

static const struct check_test tests[] = {
    {"names and messages", test_names_and_messages},
    {"wrap", test_wrap},
    {"wrap truncates", test_wrap_truncates},
    {"errno mapping", test_errno},
    {"assert holds", test_assert_holds},
};

CHECK_MAIN(tests, NULL, NULL)
