/* Structured logging: one key=value line per event, to stderr by default. */
#ifndef SM_BASE_LOG_H
#define SM_BASE_LOG_H

#include <stddef.h>

#include "base/clock.h"

/* Every event is one line:
 *
 *   ts=2026-11-25T20:43:28.123Z level=info mod=node msg="listening" addr=...
 *
 * `msg` is quoted and escaped; the trailing key=value pairs are formatted by
 * the caller (quote values that may hold spaces with %s inside "..."). Control
 * characters anywhere in the line are escaped, so one event is always exactly
 * one line. Lines longer than SM_LOG_LINE_MAX are truncated and end in "...".
 */
#define SM_LOG_LINE_MAX 2048

enum sm_log_level { SM_LOG_DEBUG, SM_LOG_INFO, SM_LOG_WARN, SM_LOG_ERROR };

/* Receives each finished line (with its trailing newline, not NUL-terminated
 * within @len). Called on the logging thread; must not log. */
typedef void (*sm_log_sink_cb)(void *arg,
                               enum sm_log_level level,
                               const char *line,
                               size_t len);

/* Drops events below @level (default SM_LOG_INFO). Not thread-safe: configure
 * logging before starting threads. */
void sm_log_set_level(enum sm_log_level level);

/* Sends lines to @sink instead of stderr; NULL restores stderr. */
void sm_log_set_sink(sm_log_sink_cb sink, void *arg);

/* Stamps lines with @clock (default: the real clock; NULL restores it). The
 * clock is borrowed and must outlive its use. */
void sm_log_set_clock(const struct sm_clock *clock);

/* Parses "debug", "info", "warn" or "error" into @level. Returns SM_OK, or
 * SM_EINVAL leaving @level untouched. */
int sm_log_level_parse(const char *name, enum sm_log_level *level);

/* Returns the lower-case name of @level. */
const char *sm_log_level_name(enum sm_log_level level);

/* Returns non-zero when events at @level are written. */
int sm_log_enabled(enum sm_log_level level);

/* Logs one event from @module with message @msg and optional key=value pairs
 * formatted from @kv_fmt (may be NULL). Writes the line with one call, so
 * lines from different threads do not interleave. Never fails: a line that
 * cannot be written is dropped. */
void sm_log(enum sm_log_level level,
            const char *module,
            const char *msg,
            const char *kv_fmt,
            ...) __attribute__((format(printf, 4, 5)));

#endif /* SM_BASE_LOG_H */
