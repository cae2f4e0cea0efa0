/* A growable text buffer for writing JSON bodies. */
#include "node/textbuf.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"

void node_text_put(struct node_text *b, const char *p, size_t n)
{
    if (b->failed) {
        return;
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 65536;
        while (cap < b->len + n + 1) {
            cap *= 2;
        }
        char *grown = realloc(b->s, cap);
        if (grown == NULL) {
            b->failed = 1;
            return;
        }
        b->s = grown;
        b->cap = cap;
    }
    memcpy(b->s + b->len, p, n);
    b->len += n;
    b->s[b->len] = '\0';
}

void node_text_printf(struct node_text *b, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0) {
        node_text_put(b, tmp,
                      (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
    }
}

void node_text_json_str(struct node_text *b, const char *s)
{
    node_text_put(b, "\"", 1);
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            node_text_put(b, esc, 2);
        } else if (c < 0x20) {
            node_text_printf(b, "\\u%04x", c);
        } else {
            node_text_put(b, (const char *)&c, 1);
        }
    }
    node_text_put(b, "\"", 1);
}

int node_text_take(struct node_text *b, char **out, size_t *len)
{
    if (b->failed) {
        free(b->s);
        *b = (struct node_text){0};
        return SM_ENOMEM;
    }
    *out = b->s;
    *len = b->len;
    *b = (struct node_text){0};
    return SM_OK;
}

void node_text_puts(struct node_text *b, const char *s)
{
    node_text_put(b, s, strlen(s));
}

void node_text_json_num(struct node_text *b, const char *fmt, double v)
{
    if (isfinite(v)) {
        node_text_printf(b, fmt, v);
    } else {
        node_text_put(b, "null", 4);
    }
}
