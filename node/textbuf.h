/* A growable text buffer for writing JSON bodies (node-private). */
#ifndef SM_NODE_TEXTBUF_H
#define SM_NODE_TEXTBUF_H

#include <stddef.h>

/* Zero-initialise to start. The text is NUL-terminated in s; on an
 * allocation failure every later write is dropped and failed is set, so a
 * writer checks once at the end. The caller frees s with free(). */
struct node_text
{
    char *s;
    size_t len, cap;
    int failed;
};

/* Appends @n bytes at @p. */
void node_text_put(struct node_text *b, const char *p, size_t n);

/* Appends the NUL-terminated @s. */
void node_text_puts(struct node_text *b, const char *s);

/* Appends @v formatted by @fmt (one double conversion), or null when @v is
 * not finite: JSON has no NaN or infinity. */
void node_text_json_num(struct node_text *b, const char *fmt, double v);

/* Appends printf-style text (at most 511 bytes per call). */
void node_text_printf(struct node_text *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Appends @s as a JSON string, quoted and escaped. */
void node_text_json_str(struct node_text *b, const char *s);

/* Ends writing: on success hands the text to the caller (@out, @len; free()
 * it) and returns SM_OK; after a failed write frees it and returns
 * SM_ENOMEM. */
int node_text_take(struct node_text *b, char **out, size_t *len);

#endif /* SM_NODE_TEXTBUF_H */
