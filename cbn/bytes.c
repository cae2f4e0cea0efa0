/* The little-endian byte writer and bounded reader of the cbn encodings.
 *
 * Errors latch instead of being returned call by call, so an encoder is a
 * straight run of appends with one check at the end, and a decoder can read
 * a whole record before it looks at @bad. Varints are LEB128: seven bits a
 * byte, least significant first, the high bit set on every byte but the
 * last. The window and sketch decoders accept padded varints (a zero last
 * byte), the partial decoder does not (its encoding is canonical), hence
 * the two readers. */
#include <string.h>

#include "base/alloc.h"
#include "base/err.h"
#include "base/le.h"
#include "cbn/internal.h"

size_t cbn__varint_put(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}

/* ---- Writer -------------------------------------------------------------- */

void cbn__out_init(struct cbn__out *o, size_t first)
{
    SM_ASSERT(first > 0);
    *o = (struct cbn__out){.first = first};
}

void cbn__out_bytes(struct cbn__out *o, const void *src, size_t n)
{
    if (o->failed) {
        return;
    }
    if (n > o->cap - o->len) {
        if (o->len > SIZE_MAX / 2 || n > SIZE_MAX / 2 - o->len) {
            o->failed = true; /* the doubling below could overflow */
            return;
        }
        size_t cap = o->cap ? o->cap * 2 : o->first;
        while (cap - o->len < n) {
            cap *= 2;
        }
        uint8_t *p = sm_realloc(o->p, cap);
        if (p == NULL) {
            o->failed = true;
            return;
        }
        o->p = p;
        o->cap = cap;
    }
    memcpy(o->p + o->len, src, n);
    o->len += n;
}

void cbn__out_v(struct cbn__out *o, uint64_t v)
{
    uint8_t b[CBN__VARINT_MAX];
    cbn__out_bytes(o, b, cbn__varint_put(b, v));
}

void cbn__out_u8(struct cbn__out *o, uint8_t v)
{
    cbn__out_bytes(o, &v, 1);
}

void cbn__out_u64(struct cbn__out *o, uint64_t v)
{
    uint8_t b[8];
    sm_put_le64(b, v);
    cbn__out_bytes(o, b, 8);
}

void cbn__out_f64(struct cbn__out *o, double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    cbn__out_u64(o, u);
}

int cbn__out_finish(struct cbn__out *o, uint8_t **buf, size_t *len)
{
    if (o->failed) {
        sm_free(o->p);
        *o = (struct cbn__out){.first = o->first};
        return SM_ENOMEM;
    }
    *buf = o->p;
    *len = o->len;
    return SM_OK;
}

/* ---- Reader -------------------------------------------------------------- */

const uint8_t *cbn__in_bytes(struct cbn__in *r, size_t n)
{
    if (r->bad || r->left < n) {
        r->bad = true;
        return NULL;
    }
    const uint8_t *p = r->p;
    r->p += n;
    r->left -= n;
    return p;
}

/* The varint reader; @minimal refuses a zero last byte after the first. */
static uint64_t get_varint(struct cbn__in *r, bool minimal)
{
    uint64_t v = 0;
    for (int shift = 0; shift < 64 && !r->bad && r->left > 0; shift += 7) {
        uint8_t b = *r->p++;
        r->left--;
        if (shift == 63 && b > 1) {
            break; /* more than 64 bits */
        }
        v |= (uint64_t)(b & 0x7f) << shift;
        if ((b & 0x80) == 0) {
            if (minimal && b == 0 && shift > 0) {
                break; /* a padded encoding of a smaller value */
            }
            return v;
        }
    }
    r->bad = true;
    return 0;
}

uint64_t cbn__in_v(struct cbn__in *r)
{
    return get_varint(r, false);
}

uint64_t cbn__in_v_min(struct cbn__in *r)
{
    return get_varint(r, true);
}

uint8_t cbn__in_u8(struct cbn__in *r)
{
    const uint8_t *p = cbn__in_bytes(r, 1);
    return p != NULL ? *p : 0;
}

uint64_t cbn__in_u64(struct cbn__in *r)
{
    const uint8_t *p = cbn__in_bytes(r, 8);
    return p != NULL ? sm_get_le64(p) : 0;
}

double cbn__in_f64(struct cbn__in *r)
{
    uint64_t u = cbn__in_u64(r);
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}
