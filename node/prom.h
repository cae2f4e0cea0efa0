/* Prometheus text exposition format 0.0.4: parser (node-private). */
#ifndef SM_NODE_PROM_H
#define SM_NODE_PROM_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

enum node_prom_type {
    NODE_PROM_UNTYPED,
    NODE_PROM_COUNTER,
    NODE_PROM_GAUGE,
    NODE_PROM_HISTOGRAM,
    NODE_PROM_SUMMARY,
};

struct node_prom_label
{
    const char *name;  /* NUL-terminated, borrowed */
    const char *value; /* unescaped, NUL-terminated, borrowed */
};

/* One sample line. Strings are borrowed and valid only during the callback.
 * @family is the metric family the sample belongs to (for histogram and
 * summary samples, the name without _bucket/_sum/_count), @type that
 * family's # TYPE (untyped when none was given). */
struct node_prom_sample
{
    const char *name;
    const char *family;
    enum node_prom_type type;
    const struct node_prom_label *labels;
    size_t n_labels;
    double value; /* NaN, +Inf, -Inf allowed */
    int64_t timestamp_ms;
    int has_timestamp;
};

/* Receives each sample in order. Returning non-zero stops the parse, and
 * node_prom_parse() returns that value. */
typedef int (*node_prom_sample_cb)(void *arg,
                                   const struct node_prom_sample *sample);

/* Parses @len bytes of text exposition 0.0.4 at @text (borrowed, need not be
 * NUL-terminated), calling @cb for every sample. Accepts: # HELP and # TYPE
 * lines, other comments, blank lines, label escapes \\ \" \n, values NaN
 * +Inf -Inf and any strtod number, optional millisecond timestamps, CRLF
 * line ends, a missing final newline. Rejects, with SM_EMALFORMED and
 * "line N: why" in @errmsg: bad metric or label names, unterminated quotes,
 * bad escapes, bad numbers, a duplicate label name in one sample, a second
 * # TYPE for a family, lines over 64 KiB. Samples already passed to @cb
 * before an error stay passed: callers that need all-or-nothing collect
 * them and apply only on SM_OK. Returns SM_ENOMEM when out of memory. */
int node_prom_parse(const char *text,
                    size_t len,
                    node_prom_sample_cb cb,
                    void *arg,
                    char errmsg[SM_ERRMSG_SIZE]);

/* Returns the lower-case name of @type ("counter", ...). */
const char *node_prom_type_name(enum node_prom_type type);

#endif /* SM_NODE_PROM_H */
