/* JSON through yajl: a small read-only tree in an arena (node-private). */
#ifndef SM_NODE_JSON_H
#define SM_NODE_JSON_H

#include <stddef.h>
#include <stdint.h>

#include "base/arena.h"
#include "base/err.h"

/* yajl 2.1 (libyajl-dev) was chosen by measurement: its event parser was the
 * fastest of the C parsers Debian 12 ships (see the closing note of the
 * ingest issue), validates UTF-8, parses incrementally and hands numbers
 * over as text, so 64-bit integers never pass through a double. The OTLP
 * trace parser uses the events directly (the hot path); the other formats
 * build this tree, which costs one arena allocation per value. */

enum node_json_type {
    NODE_JSON_NULL,
    NODE_JSON_BOOL,
    NODE_JSON_NUMBER, /* text as written, in str */
    NODE_JSON_STRING,
    NODE_JSON_ARRAY,
    NODE_JSON_OBJECT,
};

struct node_json
{
    enum node_json_type type;
    int boolean;
    const char *str; /* NUMBER and STRING: NUL-terminated (may hold \0) */
    size_t len;      /* of str */
    size_t n;        /* ARRAY and OBJECT: items */
    struct node_json *items;
    const char **keys; /* OBJECT: key of each item */
};

#define NODE_JSON_MAX_DEPTH 64

/* The offset of the first byte of @s[0..@n) that does not start a valid
 * UTF-8 sequence (RFC 3629: shortest form, no surrogates, at most
 * U+10FFFF), or @n when all of it is valid. */
size_t node_json_utf8_invalid_at(const uint8_t *s, size_t n);

/* Checks that @len bytes at @body are UTF-8 (RFC 3629: shortest forms, no
 * surrogates, at most U+10FFFF), which yajl does not fully enforce.
 * Returns SM_OK, or SM_EMALFORMED with "invalid UTF-8 at offset N" in
 * @errmsg. */
int node_json_check_utf8(const uint8_t *body,
                         size_t len,
                         char errmsg[SM_ERRMSG_SIZE]);

/* Parses exactly one JSON document from @len bytes at @text into a tree
 * allocated in @arena (which bounds its size), storing the root in @root.
 * Returns SM_OK; SM_EMALFORMED with "offset N: reason" in @errmsg for bad
 * JSON, trailing garbage, nesting deeper than NODE_JSON_MAX_DEPTH; SM_ETOOBIG
 * past the arena's limit; SM_ENOMEM. */
int node_json_parse(const uint8_t *text,
                    size_t len,
                    struct sm_arena *arena,
                    const struct node_json **root,
                    char errmsg[SM_ERRMSG_SIZE]);

/* The member @key of object @obj (the last one if repeated), or NULL when
 * @obj is not an object or has no such member. */
const struct node_json *node_json_get(const struct node_json *obj,
                                      const char *key);

/* The string of @v when it is a string, else NULL. */
const char *node_json_str(const struct node_json *v);

/* Reads @v as a non-negative 64-bit integer, given as a number or as a
 * decimal string. Returns SM_OK or SM_EMALFORMED. */
int node_json_u64(const struct node_json *v, uint64_t *out);

/* Reads @v as a double from a number or a numeric string. SM_OK or
 * SM_EMALFORMED. */
int node_json_double(const struct node_json *v, double *out);

#endif /* SM_NODE_JSON_H */
