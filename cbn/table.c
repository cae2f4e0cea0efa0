/* Seeded hashing, a fixed-size-key hash map, and string interning. */
#include <string.h>

#include "base/alloc.h"
#include "base/err.h"
#include "cbn/internal.h"

/* ---- Hash ----------------------------------------------------------------
 * A multiply-xorshift hash over 8-byte words (after wyhash/murmur finalisers):
 * fast for the short fixed keys we use, seeded against chosen collisions. */

static uint64_t mix(uint64_t x)
{
    x ^= x >> 32;
    x *= 0xd6e8feb86659fd93u;
    x ^= x >> 32;
    x *= 0xd6e8feb86659fd93u;
    x ^= x >> 32;
    return x;
}

uint64_t cbn__hash(const void *data, size_t len, uint64_t seed)
{
    const uint8_t *p = data;
    uint64_t h = seed ^ (len * 0x9e3779b97f4a7c15u);
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = mix(h ^ w) + 0x9e3779b97f4a7c15u;
        p += 8;
        len -= 8;
    }
    uint64_t tail = 0;
    memcpy(&tail, p, len);
    return mix(h ^ tail ^ ((uint64_t)len << 56));
}

/* ---- Hash map ------------------------------------------------------------ */

#define ALIGN 8

static size_t round_up(size_t n)
{
    return (n + ALIGN - 1) / ALIGN * ALIGN;
}

void cbn__hmap_init(struct cbn__hmap *m,
                    size_t key_size,
                    size_t val_size,
                    uint64_t seed)
{
    m->key_size = key_size;
    m->val_size = val_size;
    m->slot_size = ALIGN + round_up(key_size) + round_up(val_size);
    m->cap = 0;
    m->count = 0;
    m->seed = seed;
    m->slots = NULL;
}

void cbn__hmap_free(struct cbn__hmap *m)
{
    sm_free(m->slots);
    m->slots = NULL;
    m->cap = m->count = 0;
}

static uint8_t *slot(const struct cbn__hmap *m, size_t i)
{
    return m->slots + i * m->slot_size;
}

bool cbn__hmap_slot_used(const struct cbn__hmap *m, size_t i)
{
    return slot(m, i)[0] != 0;
}

void *cbn__hmap_slot_key(const struct cbn__hmap *m, size_t i)
{
    return slot(m, i) + ALIGN;
}

void *cbn__hmap_slot_val(const struct cbn__hmap *m, size_t i)
{
    return slot(m, i) + ALIGN + round_up(m->key_size);
}

static size_t home(const struct cbn__hmap *m, const void *key)
{
    return (size_t)cbn__hash(key, m->key_size, m->seed) & (m->cap - 1);
}

/* Inserts a slot's content into a table known to have room and not to
 * hold the key (used when growing). */
static void move_in(struct cbn__hmap *m, const uint8_t *from)
{
    size_t i = home(m, from + ALIGN);
    while (cbn__hmap_slot_used(m, i)) {
        i = (i + 1) & (m->cap - 1);
    }
    memcpy(slot(m, i), from, m->slot_size);
}

int cbn__hmap_reserve(struct cbn__hmap *m, size_t extra)
{
    size_t need = m->count + extra;
    if (need < m->count) {
        return SM_ENOMEM;
    }
    size_t cap = m->cap ? m->cap : 8;
    while (cap / 2 < need) {
        if (cap > SIZE_MAX / 4 / m->slot_size) {
            return SM_ENOMEM;
        }
        cap *= 2;
    }
    if (cap == m->cap) {
        return SM_OK;
    }
    uint8_t *slots = sm_calloc(cap, m->slot_size);
    if (slots == NULL) {
        return SM_ENOMEM;
    }
    struct cbn__hmap grown = *m;
    grown.slots = slots;
    grown.cap = cap;
    for (size_t i = 0; i < m->cap; i++) {
        if (cbn__hmap_slot_used(m, i)) {
            move_in(&grown, slot(m, i));
        }
    }
    sm_free(m->slots);
    *m = grown;
    return SM_OK;
}

void *cbn__hmap_find(const struct cbn__hmap *m, const void *key)
{
    if (m->cap == 0) {
        return NULL;
    }
    for (size_t i = home(m, key);; i = (i + 1) & (m->cap - 1)) {
        if (!cbn__hmap_slot_used(m, i)) {
            return NULL;
        }
        if (memcmp(cbn__hmap_slot_key(m, i), key, m->key_size) == 0) {
            return cbn__hmap_slot_val(m, i);
        }
    }
}

void *cbn__hmap_put(struct cbn__hmap *m, const void *key, bool *inserted)
{
    SM_ASSERT(m->cap > 0);
    size_t i = home(m, key);
    for (; cbn__hmap_slot_used(m, i); i = (i + 1) & (m->cap - 1)) {
        if (memcmp(cbn__hmap_slot_key(m, i), key, m->key_size) == 0) {
            *inserted = false;
            return cbn__hmap_slot_val(m, i);
        }
    }
    SM_ASSERT((m->count + 1) * 2 <= m->cap);
    uint8_t *s = slot(m, i);
    memset(s, 0, m->slot_size);
    s[0] = 1;
    memcpy(s + ALIGN, key, m->key_size);
    m->count++;
    *inserted = true;
    return cbn__hmap_slot_val(m, i);
}

void *cbn__hmap_get_or_add(struct cbn__hmap *m, const void *key, bool *inserted)
{
    void *v = cbn__hmap_find(m, key);
    if (v != NULL) {
        *inserted = false;
        return v;
    }
    if (cbn__hmap_reserve(m, 1) != SM_OK) {
        return NULL;
    }
    return cbn__hmap_put(m, key, inserted);
}

bool cbn__hmap_remove(struct cbn__hmap *m, const void *key)
{
    if (m->cap == 0) {
        return false;
    }
    size_t mask = m->cap - 1, i = home(m, key);
    for (;; i = (i + 1) & mask) {
        if (!cbn__hmap_slot_used(m, i)) {
            return false;
        }
        if (memcmp(cbn__hmap_slot_key(m, i), key, m->key_size) == 0) {
            break;
        }
    }
    /* Backward shift: pull later entries of the probe run into the hole
     * unless that would move them before their home slot. */
    size_t hole = i;
    for (size_t j = (hole + 1) & mask; cbn__hmap_slot_used(m, j);
         j = (j + 1) & mask) {
        size_t h = home(m, cbn__hmap_slot_key(m, j));
        bool movable = hole <= j ? (h <= hole || h > j) : (h <= hole && h > j);
        if (movable) {
            memcpy(slot(m, hole), slot(m, j), m->slot_size);
            hole = j;
        }
    }
    slot(m, hole)[0] = 0;
    m->count--;
    return true;
}

/* ---- String interning ---------------------------------------------------- */

void cbn__strtab_init(struct cbn__strtab *t, uint64_t seed)
{
    memset(t, 0, sizeof *t);
    t->seed = seed;
}

void cbn__strtab_free(struct cbn__strtab *t)
{
    for (size_t i = 0; i < t->count; i++) {
        sm_free(t->strings[i]);
    }
    sm_free(t->strings);
    sm_free(t->slot_id);
    memset(t, 0, sizeof *t);
}

static size_t str_home(const struct cbn__strtab *t, const char *s)
{
    return (size_t)cbn__hash(s, strlen(s), t->seed) & (t->slots - 1);
}

uint32_t cbn__strtab_find(const struct cbn__strtab *t, const char *s)
{
    if (t->slots == 0) {
        return UINT32_MAX;
    }
    for (size_t i = str_home(t, s);; i = (i + 1) & (t->slots - 1)) {
        uint32_t id = t->slot_id[i];
        if (id == 0) {
            return UINT32_MAX;
        }
        if (strcmp(t->strings[id - 1], s) == 0) {
            return id - 1;
        }
    }
}

/* Rebuilds the index with @slots slots. SM_OK or SM_ENOMEM (unchanged). */
static int reindex(struct cbn__strtab *t, size_t slots)
{
    uint32_t *ids = sm_calloc(slots, sizeof *ids);
    if (ids == NULL) {
        return SM_ENOMEM;
    }
    sm_free(t->slot_id);
    t->slot_id = ids;
    t->slots = slots;
    for (size_t id = 0; id < t->count; id++) {
        size_t i = str_home(t, t->strings[id]);
        while (t->slot_id[i] != 0) {
            i = (i + 1) & (slots - 1);
        }
        t->slot_id[i] = (uint32_t)id + 1;
    }
    return SM_OK;
}

int cbn__strtab_intern(struct cbn__strtab *t, const char *s, uint32_t *id)
{
    uint32_t found = cbn__strtab_find(t, s);
    if (found != UINT32_MAX) {
        *id = found;
        return SM_OK;
    }
    if (t->count >= UINT32_MAX - 1) {
        return SM_ENOMEM;
    }
    if ((t->count + 1) * 2 > t->slots &&
        reindex(t, t->slots ? t->slots * 2 : 64) != SM_OK) {
        return SM_ENOMEM;
    }
    if (t->count == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 32;
        char **grown = sm_reallocarray(t->strings, cap, sizeof *grown);
        if (grown == NULL) {
            return SM_ENOMEM;
        }
        t->strings = grown;
        t->cap = cap;
    }
    char *copy = sm_strdup(s);
    if (copy == NULL) {
        return SM_ENOMEM;
    }
    t->strings[t->count] = copy;
    size_t i = str_home(t, s);
    while (t->slot_id[i] != 0) {
        i = (i + 1) & (t->slots - 1);
    }
    t->slot_id[i] = (uint32_t)t->count + 1;
    *id = (uint32_t)t->count++;
    return SM_OK;
}

const char *cbn__strtab_str(const struct cbn__strtab *t, uint32_t id)
{
    SM_ASSERT(id < t->count);
    return t->strings[id];
}
