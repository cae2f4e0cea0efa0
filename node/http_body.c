/* Growable buffers, the bounded gzip inflater and encoding helpers. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "base/alloc.h"
#include "base/err.h"
#include "node/http_body.h"

/* Inflate output is produced in steps of at most this many bytes, so the
 * buffer grows only as far as the data actually decodes. */
#define INFLATE_STEP 16384

int node__http_buf_reserve(struct node__http_buf *buf,
                           size_t extra,
                           size_t limit)
{
    if (extra > limit || buf->len > limit - extra) {
        return SM_ETOOBIG;
    }
    size_t need = buf->len + extra + 1;
    if (need <= buf->cap) {
        return SM_OK;
    }
    size_t cap = buf->cap < 64 ? 64 : buf->cap;
    while (cap < need) {
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    }
    if (limit != SIZE_MAX && cap > limit + 1) {
        cap = limit + 1;
    }
    uint8_t *data = sm_realloc(buf->data, cap);
    if (data == NULL) {
        return SM_ENOMEM;
    }
    buf->data = data;
    buf->cap = cap;
    return SM_OK;
}

int node__http_buf_append(struct node__http_buf *buf,
                          const void *p,
                          size_t n,
                          size_t limit)
{
    int rv = node__http_buf_reserve(buf, n, limit);
    if (rv != SM_OK) {
        return rv;
    }
    if (n > 0) {
        memcpy(buf->data + buf->len, p, n);
    }
    buf->len += n;
    buf->data[buf->len] = 0;
    return SM_OK;
}

int node__http_buf_printf(struct node__http_buf *buf, const char *fmt, ...)
{
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    SM_ASSERT(n >= 0);
    if ((size_t)n < sizeof small) {
        return node__http_buf_append(buf, small, (size_t)n, SIZE_MAX);
    }
    int rv = node__http_buf_reserve(buf, (size_t)n, SIZE_MAX);
    if (rv != SM_OK) {
        return rv;
    }
    va_start(ap, fmt);
    vsnprintf((char *)buf->data + buf->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    buf->len += (size_t)n;
    return SM_OK;
}

const char *node__http_buf_str(const struct node__http_buf *buf)
{
    return buf->data != NULL ? (const char *)buf->data : "";
}

void node__http_buf_reset(struct node__http_buf *buf, size_t keep)
{
    if (buf->cap > keep) {
        node__http_buf_free(buf);
        return;
    }
    buf->len = 0;
    if (buf->data != NULL) {
        buf->data[0] = 0;
    }
}

void node__http_buf_free(struct node__http_buf *buf)
{
    sm_free(buf->data);
    buf->data = NULL;
    buf->len = 0;
    buf->cap = 0;
}

static voidpf zalloc_cb(voidpf opaque, uInt items, uInt size)
{
    (void)opaque;
    return sm_calloc(items, size);
}

static void zfree_cb(voidpf opaque, voidpf address)
{
    (void)opaque;
    sm_free(address);
}

int node__http_inflate_init(struct node__http_inflate *inf)
{
    memset(inf, 0, sizeof *inf);
    inf->zs.zalloc = zalloc_cb;
    inf->zs.zfree = zfree_cb;
    /* 16 + MAX_WBITS: expect a gzip header and trailer. */
    int zrv = inflateInit2(&inf->zs, 16 + MAX_WBITS);
    if (zrv != Z_OK) {
        return zrv == Z_MEM_ERROR ? SM_ENOMEM : SM_EINTERNAL;
    }
    inf->active = 1;
    return SM_OK;
}

int node__http_inflate_feed(struct node__http_inflate *inf,
                            const uint8_t *in,
                            size_t len,
                            struct node__http_buf *out,
                            size_t limit)
{
    SM_ASSERT(inf->active);
    while (len > 0) {
        if (inf->stream_end) {
            /* Another member follows (gzip allows concatenation). */
            if (inflateReset(&inf->zs) != Z_OK) {
                return SM_EINTERNAL;
            }
            inf->stream_end = 0;
        }
        size_t room = limit - out->len;
        if (room == 0) {
            /* One spare byte tells "exactly at the limit" from "over". */
            room = 1;
        } else if (room > INFLATE_STEP) {
            room = INFLATE_STEP;
        }
        int rv = node__http_buf_reserve(
            out, room, limit == SIZE_MAX ? SIZE_MAX : limit + 1);
        if (rv != SM_OK) {
            return rv;
        }
        uInt in_n = len > UINT32_MAX ? UINT32_MAX : (uInt)len;
        inf->zs.next_in = (Bytef *)(uintptr_t)in;
        inf->zs.avail_in = in_n;
        inf->zs.next_out = out->data + out->len;
        inf->zs.avail_out = (uInt)room;
        int zrv = inflate(&inf->zs, Z_NO_FLUSH);
        size_t produced = room - inf->zs.avail_out;
        size_t consumed = in_n - inf->zs.avail_in;
        out->len += produced;
        out->data[out->len] = 0;
        in += consumed;
        len -= consumed;
        if (out->len > limit) {
            return SM_ETOOBIG;
        }
        switch (zrv) {
            case Z_OK:
                break;
            case Z_STREAM_END:
                inf->stream_end = 1;
                break;
            case Z_BUF_ERROR:
                /* No progress possible: only when both sides are stuck. */
                if (produced == 0 && consumed == 0) {
                    return SM_EMALFORMED;
                }
                break;
            case Z_MEM_ERROR:
                return SM_ENOMEM;
            default:
                return SM_EMALFORMED;
        }
    }
    return SM_OK;
}

int node__http_inflate_finish(const struct node__http_inflate *inf)
{
    return inf->active && inf->stream_end ? SM_OK : SM_EMALFORMED;
}

void node__http_inflate_free(struct node__http_inflate *inf)
{
    if (inf->active) {
        inflateEnd(&inf->zs);
        inf->active = 0;
    }
}

int node__http_encoding_kind(const char *value)
{
    int gzip = 0;
    const char *p = value;
    while (*p != 0) {
        while (*p == ' ' || *p == '\t' || *p == ',') {
            p++;
        }
        const char *start = p;
        while (*p != 0 && *p != ',' && *p != ' ' && *p != '\t') {
            p++;
        }
        size_t n = (size_t)(p - start);
        if (n == 0) {
            continue;
        }
        if (n == 8 && strncasecmp(start, "identity", n) == 0) {
            continue;
        }
        if ((n == 4 && strncasecmp(start, "gzip", n) == 0) ||
            (n == 6 && strncasecmp(start, "x-gzip", n) == 0)) {
            gzip++;
            continue;
        }
        return -1;
    }
    return gzip > 1 ? -1 : gzip;
}

size_t node__http_wire_limit(size_t max_body)
{
    size_t slack = max_body / 8 + 4096;
    return max_body > SIZE_MAX - slack ? SIZE_MAX : max_body + slack;
}
