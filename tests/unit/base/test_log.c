/* Tests for base/log: format, levels, escaping, truncation. */
#include <string.h>

#include "base/clock.h"
#include "base/err.h"
#include "base/log.h"
#include "check.h"

static char captured[2 * SM_LOG_LINE_MAX];
static size_t captured_len;
static int lines;

static void capture(void *arg,
                    enum sm_log_level level,
                    const char *line,
                    size_t len)
{
    (void)arg;
    (void)level;
    memcpy(captured, line, len);
    captured[len] = '\0';
    captured_len = len;
    lines++;
}

static struct sm_fake_clock fake;

static void setup(void)
{
    sm_fake_clock_init(&fake,
                       1764103408123000000u); /* 2025-11-25T20:43:28.123Z */
    sm_log_set_clock(&fake.clock);
    sm_log_set_sink(capture, NULL);
    sm_log_set_level(SM_LOG_INFO);
    captured[0] = '\0';
    lines = 0;
}

static void teardown(void)
{
    sm_log_set_sink(NULL, NULL);
    sm_log_set_clock(NULL);
}

static void test_format(void)
{
    sm_log(SM_LOG_INFO, "node", "listening", "addr=%s port=%d", "127.0.0.1",
           4318);
    CHECK_STR(captured,
              "ts=2025-11-25T20:43:28.123Z level=info mod=node "
              "msg=\"listening\" addr=127.0.0.1 port=4318\n");
    sm_log(SM_LOG_ERROR, "cbn", "no kv", NULL);
    CHECK_STR(captured,
              "ts=2025-11-25T20:43:28.123Z level=error mod=cbn "
              "msg=\"no kv\"\n");
}

static void test_levels(void)
{
    sm_log(SM_LOG_DEBUG, "x", "hidden", NULL);
    CHECK_EQ(lines, 0);
    sm_log_set_level(SM_LOG_DEBUG);
    sm_log(SM_LOG_DEBUG, "x", "shown", NULL);
    CHECK_EQ(lines, 1);
    enum sm_log_level l = SM_LOG_ERROR;
    CHECK_OK(sm_log_level_parse("warn", &l));
    CHECK_EQ(l, SM_LOG_WARN);
    CHECK_EQ(sm_log_level_parse("loud", &l), SM_EINVAL);
    CHECK_EQ(l, SM_LOG_WARN);
    CHECK_STR(sm_log_level_name(SM_LOG_DEBUG), "debug");
}

static void test_escaping(void)
{
    sm_log(SM_LOG_WARN, "node", "bad \"span\"\nname\\", "peer=%s", "a\nb\tc");
    CHECK_STR(captured,
              "ts=2025-11-25T20:43:28.123Z level=warn mod=node "
              "msg=\"bad \\\"span\\\"\\nname\\\\\" peer=a\\nb\\x09c\n");
    /* Exactly one newline: the one that ends the event. */
    CHECK(strchr(captured, '\n') == captured + captured_len - 1);
}

static void test_truncation(void)
{
    char big[3 * SM_LOG_LINE_MAX];
    memset(big, 'v', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    sm_log(SM_LOG_INFO, "node", "big", "value=%s", big);
    CHECK(captured_len <= SM_LOG_LINE_MAX);
    CHECK(strcmp(captured + captured_len - 4, "...\n") == 0);
}

static const struct check_test tests[] = {
    {"format", test_format},
    {"levels", test_levels},
    {"escaping", test_escaping},
    {"truncation", test_truncation},
};

CHECK_MAIN(tests, setup, teardown)
