/* A growable text buffer for writing JSON bodies. */
#include "node/textbuf.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "node/json.h"

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
    const uint8_t *u = (const uint8_t *)s;
    size_t n = strlen(s);
    node_text_put(b, "\"", 1);
    for (size_t i = 0; i < n;) {
        /* Text from the outside (a scraped label, a span attribute) may
         * not be UTF-8; JSON must be: each bad byte becomes U+FFFD. */
        size_t valid = i + node_json_utf8_invalid_at(u + i, n - i);
        for (; i < valid; i++) {
            unsigned char c = u[i];
            if (c == '"' || c == '\\') {
                char esc[2] = {'\\', (char)c};
                node_text_put(b, esc, 2);
            } else if (c < 0x20) {
                node_text_printf(b, "\\u%04x", c);
            } else {
                node_text_put(b, (const char *)&u[i], 1);
            }
        }
        if (i < n) {
            node_text_put(b, "\\ufffd", 6);
            i++;
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
