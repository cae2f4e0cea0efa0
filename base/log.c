/* key=value line logger with a pluggable sink and clock. */
#include "base/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/err.h"

static const char *const level_names[] = {"debug", "info", "warn", "error"};

static enum sm_log_level min_level = SM_LOG_INFO;
static sm_log_sink_cb sink_cb;
static void *sink_arg;
static const struct sm_clock *log_clock;

void sm_log_set_level(enum sm_log_level level)
{
    min_level = level;
}

void sm_log_set_sink(sm_log_sink_cb sink, void *arg)
{
    sink_cb = sink;
    sink_arg = arg;
}

void sm_log_set_clock(const struct sm_clock *clock)
{
    log_clock = clock;
}

int sm_log_level_parse(const char *name, enum sm_log_level *level)
{
    for (size_t i = 0; i < sizeof level_names / sizeof level_names[0]; i++) {
        if (strcmp(name, level_names[i]) == 0) {
            *level = (enum sm_log_level)i;
            return SM_OK;
        }
    }
    return SM_EINVAL;
}

const char *sm_log_level_name(enum sm_log_level level)
{
    if ((unsigned)level >= sizeof level_names / sizeof level_names[0]) {
        return "unknown";
    }
    return level_names[level];
}

int sm_log_enabled(enum sm_log_level level)
{
    return level >= min_level;
}

/* A bounded line under construction; appends past the end are dropped and
 * remembered so the line can be marked as truncated. */
struct line
{
    char buf[SM_LOG_LINE_MAX];
    size_t len;
    int truncated;
};

static void put_char(struct line *l, char c)
{
    if (l->len + 1 < sizeof l->buf) {
        l->buf[l->len++] = c;
    } else {
        l->truncated = 1;
    }
}

/* Appends @s, escaping quotes and backslashes when @quoted and control
 * characters always, so that no event spans two lines. */
static void put_escaped(struct line *l, const char *s, int quoted)
{
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '\n') {
            put_char(l, '\\');
            put_char(l, 'n');
        } else if (c < 0x20 || c == 0x7f) {
            char hex[5];
            snprintf(hex, sizeof hex, "\\x%02x", c);
            for (int i = 0; i < 4; i++) {
                put_char(l, hex[i]);
            }
        } else if (quoted && (c == '"' || c == '\\')) {
            put_char(l, '\\');
            put_char(l, (char)c);
        } else {
            put_char(l, (char)c);
        }
    }
}

static void put_timestamp(struct line *l)
{
    const struct sm_clock *clock = log_clock ? log_clock : sm_clock_real();
    uint64_t ns = sm_clock_wall_ns(clock);
    time_t secs = (time_t)(ns / 1000000000u);
    struct tm tm;
    char ts[40];
    gmtime_r(&secs, &tm);
    size_t n = strftime(ts, sizeof ts, "ts=%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + n, sizeof ts - n, ".%03uZ",
             (unsigned)(ns / 1000000u % 1000u));
    put_escaped(l, ts, 0);
}

void sm_log(enum sm_log_level level,
            const char *module,
            const char *msg,
            const char *kv_fmt,
            ...)
{
    if (!sm_log_enabled(level)) {
        return;
    }
    struct line l = {.len = 0, .truncated = 0};
    put_timestamp(&l);
    put_escaped(&l, " level=", 0);
    put_escaped(&l, sm_log_level_name(level), 0);
    put_escaped(&l, " mod=", 0);
    put_escaped(&l, module, 0);
    put_escaped(&l, " msg=\"", 0);
    put_escaped(&l, msg, 1);
    put_char(&l, '"');
    if (kv_fmt != NULL && kv_fmt[0] != '\0') {
        char kv[SM_LOG_LINE_MAX];
        va_list ap;
        va_start(ap, kv_fmt);
        int n = vsnprintf(kv, sizeof kv, kv_fmt, ap);
        va_end(ap);
        if (n >= (int)sizeof kv) {
            l.truncated = 1;
        }
        put_char(&l, ' ');
        put_escaped(&l, kv, 0);
    }
    if (l.truncated) {
        /* Keep room for the marker and the newline. */
        l.len = l.len > sizeof l.buf - 5 ? sizeof l.buf - 5 : l.len;
        memcpy(l.buf + l.len, "...", 3);
        l.len += 3;
    }
    l.buf[l.len++] = '\n';

    if (sink_cb != NULL) {
        sink_cb(sink_arg, level, l.buf, l.len);
        return;
    }
    /* One write(2) per line keeps concurrent lines whole. A failed or short
     * write to stderr has nowhere to be reported. */
    ssize_t rc = write(STDERR_FILENO, l.buf, l.len);
    (void)rc;
}
