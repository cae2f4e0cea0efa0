/* cbn-private building blocks: hash map, string interning, byte encoding,
 * sketch reserve. */
#ifndef SM_CBN_INTERNAL_H
#define SM_CBN_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cbn/cbn.h"

/* ---- Hash map with fixed-size keys and values ---------------------------
 *
 * Open addressing with linear probing and backward-shift deletion (no
 * tombstones), power-of-two capacity, load factor <= 1/2. Keys are compared
 * bytewise, so padding in key structs must be zeroed. The seed makes the
 * probe sequence unpredictable to whoever chooses the keys (trace ids come
 * from the network). Values are stored inline and are moved on growth and
 * deletion: never keep a pointer to a value across an insert or remove. */
struct cbn__hmap
{
    size_t key_size, val_size, slot_size;
    size_t cap;   /* slots, a power of two, or 0 */
    size_t count; /* occupied slots */
    uint64_t seed;
    uint8_t *slots; /* cap x slot_size: [used byte][key][value], aligned */
};

void cbn__hmap_init(struct cbn__hmap *m,
                    size_t key_size,
                    size_t val_size,
                    uint64_t seed);
void cbn__hmap_free(struct cbn__hmap *m);

/* Ensures room for @extra more keys without allocation. SM_OK or
 * SM_ENOMEM (map unchanged). */
int cbn__hmap_reserve(struct cbn__hmap *m, size_t extra);

/* Returns the value of @key, or NULL. */
void *cbn__hmap_find(const struct cbn__hmap *m, const void *key);

/* Returns the value of @key, inserting a zeroed one if absent (*inserted
 * set accordingly). Requires reserved room (never allocates; asserts). */
void *cbn__hmap_put(struct cbn__hmap *m, const void *key, bool *inserted);

/* Finds or inserts (growing as needed). NULL on SM_ENOMEM. */
void *cbn__hmap_get_or_add(struct cbn__hmap *m,
                           const void *key,
                           bool *inserted);

/* Removes @key if present; returns whether it was. */
bool cbn__hmap_remove(struct cbn__hmap *m, const void *key);

/* Iteration: for (size_t i = 0; i < m->cap; i++) if (cbn__hmap_slot_used(m,
 * i)) ... with the key and value accessors below. Removing during
 * iteration is not allowed (backward shift moves entries). */
bool cbn__hmap_slot_used(const struct cbn__hmap *m, size_t i);
void *cbn__hmap_slot_key(const struct cbn__hmap *m, size_t i);
void *cbn__hmap_slot_val(const struct cbn__hmap *m, size_t i);

/* A seeded 64-bit hash of @len bytes. */
uint64_t cbn__hash(const void *data, size_t len, uint64_t seed);

/* ---- String interning ---------------------------------------------------
 *
 * Maps strings to dense ids (0, 1, 2, ...) and back. Strings are copied
 * once and live until the table is freed; ids are stable. */
struct cbn__strtab
{
    char **strings;    /* by id */
    size_t count, cap; /* ids in use, room in strings */
    uint64_t seed;
    size_t slots;      /* open-addressing index size, a power of two */
    uint32_t *slot_id; /* id + 1 per slot, 0 = empty */
};

void cbn__strtab_init(struct cbn__strtab *t, uint64_t seed);
void cbn__strtab_free(struct cbn__strtab *t);

/* Returns the id of @s, adding it if new. SM_OK or SM_ENOMEM. */
int cbn__strtab_intern(struct cbn__strtab *t, const char *s, uint32_t *id);

/* Returns the id of @s or UINT32_MAX when absent. */
uint32_t cbn__strtab_find(const struct cbn__strtab *t, const char *s);

/* Returns the string of @id (must be valid). */
const char *cbn__strtab_str(const struct cbn__strtab *t, uint32_t id);

/* ---- Byte encoding (bytes.c) --------------------------------------------
 *
 * The little-endian writer and bounded reader behind the window, partial
 * and sketch encodings. Neither reports errors call by call: the writer
 * latches @failed on the first failed growth and the reader latches @bad on
 * the first malformed or short input, after which every call does nothing
 * and reads return 0. Callers check the latch once at the end, or wherever
 * they must stop early. */

/* The longest LEB128 varint of a 64-bit value, in bytes. */
#define CBN__VARINT_MAX 10

/* Writes @v as an LEB128 varint (the shortest form) at @p, which has room
 * for CBN__VARINT_MAX bytes, and returns the bytes written. Never fails. */
size_t cbn__varint_put(uint8_t *p, uint64_t v);

/* A growable output buffer. Initialise it with cbn__out_init(); @p is
 * sm_realloc()ed and belongs to the writer until cbn__out_finish(). */
struct cbn__out
{
    uint8_t *p;
    size_t len, cap; /* bytes written, bytes allocated */
    size_t first;    /* the capacity of the first allocation */
    bool failed;     /* a growth failed; nothing more is written */
};

/* Starts an empty writer whose first allocation is @first bytes (> 0); the
 * capacity doubles from there. Allocates nothing. */
void cbn__out_init(struct cbn__out *o, size_t first);

/* Appends @n bytes of @src. On out of memory, or when the buffer would
 * pass SIZE_MAX / 2 bytes, latches @failed and keeps what was written. */
void cbn__out_bytes(struct cbn__out *o, const void *src, size_t n);

/* Appends @v as a varint (cbn__varint_put()), a byte, a little-endian u64,
 * or the IEEE-754 bits of @d as a little-endian u64. Fail as
 * cbn__out_bytes(). */
void cbn__out_v(struct cbn__out *o, uint64_t v);
void cbn__out_u8(struct cbn__out *o, uint8_t v);
void cbn__out_u64(struct cbn__out *o, uint64_t v);
void cbn__out_f64(struct cbn__out *o, double d);

/* Ends the writer. Unless @failed, hands the bytes to the caller (*@buf,
 * *@len; free *@buf with sm_free(), which may be NULL when nothing was
 * written) and returns SM_OK; otherwise frees them and returns SM_ENOMEM,
 * leaving *@buf and *@len alone. */
int cbn__out_finish(struct cbn__out *o, uint8_t **buf, size_t *len);

/* A bounded reader over borrowed bytes: @left bytes from @p. */
struct cbn__in
{
    const uint8_t *p;
    size_t left;
    bool bad; /* malformed or short input; nothing more is read */
};

/* Takes the next @n bytes and returns them (still in the input), or NULL
 * and latches @bad when fewer are left. */
const uint8_t *cbn__in_bytes(struct cbn__in *r, size_t n);

/* Reads an LEB128 varint of at most 64 bits, padded forms (a zero last
 * byte after the first) accepted. Latches @bad and returns 0 when the
 * input ends inside it or it exceeds 64 bits. */
uint64_t cbn__in_v(struct cbn__in *r);

/* As cbn__in_v(), but only the shortest form of each value is accepted: a
 * padded varint also latches @bad. For canonical encodings. */
uint64_t cbn__in_v_min(struct cbn__in *r);

/* Read a byte, a little-endian u64, or a little-endian u64 as the bits of
 * a double. Latch @bad and return 0 when the input is too short. */
uint8_t cbn__in_u8(struct cbn__in *r);
uint64_t cbn__in_u64(struct cbn__in *r);
double cbn__in_f64(struct cbn__in *r);

/* ---- Sketch internals ---------------------------------------------------- */

/* Makes sure adding @value to @sketch later cannot allocate. SM_OK or
 * SM_ENOMEM (sketch unchanged in content). */
int cbn__sketch_reserve(struct cbn_sketch *sketch, double value);

/* Fills @out[CBN_N_PCT] with the sketch's cbn_percentiles[] (scaled by
 * @scale), or NaN when it is empty. */
void cbn__sketch_pct(const struct cbn_sketch *sketch,
                     double scale,
                     float out[CBN_N_PCT]);

/* ---- Window construction ------------------------------------------------- */

/* Allocates a zeroed window with room for @n_services services, @n_metrics
 * metrics in all, @n_edges edges and @string_bytes bytes of strings (NULs
 * included), all in one block freed by cbn_window_free(). services->metrics
 * are not assigned: take them in order with cbn__window_take_metrics().
 * NULL on overflow or out of memory. */
struct cbn_window *cbn__window_alloc(size_t n_services,
                                     size_t n_metrics,
                                     size_t n_edges,
                                     size_t string_bytes);

/* Returns the next @n metric slots of @w's metric area. */
struct cbn_window_metric *cbn__window_take_metrics(struct cbn_window *w,
                                                   size_t n);

/* Copies @s into @w's string area and returns the copy. The caller sized
 * the area for it. */
const char *cbn__window_add_string(struct cbn_window *w, const char *s);

/* Sorts services (and each one's metrics) and edges into the order the
 * lookup functions and the encoding rely on. */
void cbn__window_sort(struct cbn_window *w);

/* ---- Partial windows (partial.c) -----------------------------------------
 *
 * The layout of struct cbn_partial, shared with the aggregator, which fills
 * one directly when a window closes. Entries are kept sorted by key (strcmp
 * order, field by field) and hold only what counted something; a sketch
 * pointer may be NULL, which stands for an empty sketch. */
struct cbn__part_service
{
    const char *name;
    uint64_t requests, errors;
    struct cbn_sketch *latency;
};

struct cbn__part_metric
{
    const char *service, *name;
    const char *peer; /* "" unless a per-link metric */
    enum cbn_resource resource;
    uint32_t samples;
    struct cbn_sketch *values;
};

struct cbn__part_edge
{
    const char *caller, *callee;
    int inferred;
    uint64_t calls, paired;
    struct cbn_sketch *client, *server, *network;
};

struct cbn_partial
{
    uint64_t start_ns, end_ns;
    int has_qos; /* a QoS service is configured */
    double qos_target_ms, qos_percentile;
    uint64_t late_spans, late_points;
    struct cbn_sketch *qos;
    size_t n_services, n_metrics, n_edges;
    struct cbn__part_service *services; /* by name */
    struct cbn__part_metric *metrics;   /* by (service, name, peer) */
    struct cbn__part_edge *edges;       /* by (caller, callee, inferred) */
    void *block;                        /* the arrays, then owned strings */
    char *next_string, *strings_end;
    /* The names and sketches belong to an aggregator that lends them for
     * the time of one cbn_partial_finish(); release frees neither. */
    bool borrowed;
};

/* Allocates zeroed arrays for @n_services, @n_metrics and @n_edges entries
 * and @string_bytes of strings (NULs included) in one block of @p, whose
 * other fields are zeroed. SM_OK, or SM_ENOMEM with @p zeroed. */
int cbn__partial_init(struct cbn_partial *p,
                      size_t n_services,
                      size_t n_metrics,
                      size_t n_edges,
                      size_t string_bytes,
                      bool borrowed);

/* Copies @s into @p's string area (sized for it) and returns the copy. */
const char *cbn__partial_add_string(struct cbn_partial *p, const char *s);

/* Sorts the entries of @p by key. */
void cbn__partial_sort(struct cbn_partial *p);

/* Frees @p's block and, unless borrowed, its sketches; zeroes @p. */
void cbn__partial_release(struct cbn_partial *p);

#endif /* SM_CBN_INTERNAL_H */
