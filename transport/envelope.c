/* The envelope: the versioned msgpack wire format of peer messages.
 *
 * Encoding packs with msgpack-c's packer through a write callback, either
 * into a caller's buffer or into the reserved tail of a struct tp_buf; a
 * counting callback gives the exact size first, so a struct tp_buf grows
 * once and is rolled back untouched on failure.
 *
 * Decoding treats its input as hostile. msgpack-c reserves the slots of an
 * array or a map as soon as it reads the count (24 or 48 bytes each), before
 * it has seen a single element, so a five-byte map32 header can ask for a
 * hundred gigabytes. The input is therefore checked in three stages:
 *
 *   1. its length against the configured maximum, before reading a byte;
 *   2. a pre-scan ("skim") that walks the msgpack structure without
 *      unpacking anything: every length and count must fit in the bytes
 *      left, nesting is shallow, the total number of container elements is
 *      small (an envelope has five fields), and exactly one object fills
 *      the input. After it, msgpack_unpack_next() allocates at most a few
 *      hundred bytes in its zone, and it cannot fail except for memory;
 *   3. the unpacked map against the schema, version first.
 *
 * STR and BIN objects point into the input, so the decoded struct borrows
 * the caller's bytes and the msgpack zone can be freed before returning. */
#include <msgpack.h>
#include <string.h>

#include "base/alloc.h"
#include "base/err.h"
#include "transport/transport.h"

/* Bounds of the pre-scan. MAX_ITEMS counts keys and values together: five
 * fields are ten items; the slack lets a slightly wrong map reach the
 * schema check and get a precise reason (duplicate, unknown field). */
#define SKIM_MAX_DEPTH 4
#define SKIM_MAX_ITEMS 32

enum field { F_V, F_T, F_FROM, F_ID, F_BODY, F_COUNT };

static const char *const field_names[F_COUNT] = {"v", "t", "from", "id",
                                                 "body"};
static const char *const missing_why[F_COUNT] = {
    "missing field \"v\" (wire version)",
    "missing field \"t\" (message type)",
    "missing field \"from\" (sender id)",
    "missing field \"id\" (request id)",
    "missing field \"body\"",
};
static const char *const duplicate_why[F_COUNT] = {
    "duplicate field \"v\"",    "duplicate field \"t\"",
    "duplicate field \"from\"", "duplicate field \"id\"",
    "duplicate field \"body\"",
};
static const char *const mistyped_why[F_COUNT] = {
    "field \"v\" is not an unsigned integer",
    "field \"t\" is not an unsigned integer",
    "field \"from\" is not a string",
    "field \"id\" is not an unsigned integer",
    "field \"body\" is not binary",
};

static const char *const type_names[TP_MSG_TYPE_MAX + 1] = {
    [TP_MSG_HELLO] = "hello",         [TP_MSG_ACK] = "ack",
    [TP_MSG_RAFT] = "raft",           [TP_MSG_SPANS] = "spans",
    [TP_MSG_WINDOW] = "window",       [TP_MSG_TRAIN] = "train",
    [TP_MSG_DECODER] = "decoder",     [TP_MSG_SWEEP_REQ] = "sweep_req",
    [TP_MSG_SWEEP_REP] = "sweep_rep", [TP_MSG_FWD_REQ] = "fwd_req",
    [TP_MSG_FWD_REP] = "fwd_rep",     [TP_MSG_PARTIAL] = "partial",
};

const char *tp_msg_type_name(int type)
{
    if (type < 1 || type > TP_MSG_TYPE_MAX) {
        return "unknown";
    }
    return type_names[type];
}

int tp_peer_id_valid(const char *id, size_t len)
{
    if (id == NULL || len == 0 || len > TP_PEER_ID_MAX) {
        return 0;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)id[i];
        if (c < 0x21 || c > 0x7e) {
            return 0;
        }
    }
    return 1;
}

/* ---- growing buffer ------------------------------------------------------ */

int tp_buf_reserve(struct tp_buf *buf, size_t extra)
{
    if (extra > SIZE_MAX - buf->len) {
        return SM_ETOOBIG;
    }
    size_t need = buf->len + extra;
    if (need <= buf->cap) {
        return SM_OK;
    }
    size_t cap = buf->cap < 256 ? 256 : buf->cap;
    while (cap < need) {
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    }
    uint8_t *p = sm_realloc(buf->data, cap);
    if (p == NULL) {
        return SM_ENOMEM;
    }
    buf->data = p;
    buf->cap = cap;
    return SM_OK;
}

void tp_buf_free(struct tp_buf *buf)
{
    sm_free(buf->data);
    buf->data = NULL;
    buf->len = 0;
    buf->cap = 0;
}

/* ---- encoding ------------------------------------------------------------ */

/* Where the packer writes: a window of @cap bytes, or (when @base is NULL)
 * nowhere, only counting. */
struct sink
{
    uint8_t *base;
    size_t cap;
    size_t len;
    int overflow;
};

static int sink_write(void *data, const char *bytes, size_t n)
{
    struct sink *s = data;
    if (s->overflow || n > s->cap - s->len) {
        /* Keep counting so the caller learns the size it needs. */
        s->overflow = s->base != NULL;
        s->len += n;
        return s->base != NULL ? -1 : 0;
    }
    if (s->base != NULL) {
        memcpy(s->base + s->len, bytes, n);
    }
    s->len += n;
    return 0;
}

static int check_env(const struct tp_env *env)
{
    if (env->type < 1 || env->type > TP_MSG_TYPE_MAX ||
        !tp_peer_id_valid(env->from, env->from_len) ||
        (env->body == NULL && env->body_len > 0)) {
        return SM_EINVAL;
    }
    if (env->body_len > UINT32_MAX) {
        return SM_ETOOBIG;
    }
    return SM_OK;
}

static void pack_key(msgpack_packer *pk, enum field f)
{
    size_t n = strlen(field_names[f]);
    msgpack_pack_str_with_body(pk, field_names[f], n);
}

/* Packs @env (already checked) into @s. msgpack-c's packer ignores the
 * callback's result, so overflow is read from the sink afterwards. */
static void pack_env(const struct tp_env *env, struct sink *s)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, s, sink_write);
    msgpack_pack_map(&pk, F_COUNT);
    pack_key(&pk, F_V);
    msgpack_pack_uint32(&pk, TP_ENV_VERSION);
    pack_key(&pk, F_T);
    msgpack_pack_uint32(&pk, (uint32_t)env->type);
    pack_key(&pk, F_FROM);
    msgpack_pack_str_with_body(&pk, env->from, env->from_len);
    pack_key(&pk, F_ID);
    msgpack_pack_uint64(&pk, env->id);
    pack_key(&pk, F_BODY);
    msgpack_pack_bin(&pk, env->body_len);
    if (env->body_len > 0) {
        msgpack_pack_bin_body(&pk, env->body, env->body_len);
    }
}

size_t tp_env_size(const struct tp_env *env)
{
    struct sink s = {NULL, SIZE_MAX, 0, 0};
    pack_env(env, &s);
    return s.len;
}

int tp_env_encode(const struct tp_env *env, void *out, size_t cap, size_t *len)
{
    int rv = check_env(env);
    if (rv != SM_OK) {
        return rv;
    }
    size_t need = tp_env_size(env);
    *len = need;
    if (need > cap) {
        return SM_ETOOBIG;
    }
    struct sink s = {out, cap, 0, 0};
    pack_env(env, &s);
    SM_ASSERT(!s.overflow && s.len == need);
    return SM_OK;
}

int tp_env_encode_buf(const struct tp_env *env, struct tp_buf *buf)
{
    int rv = check_env(env);
    if (rv != SM_OK) {
        return rv;
    }
    size_t need = tp_env_size(env);
    rv = tp_buf_reserve(buf, need);
    if (rv != SM_OK) {
        return rv;
    }
    struct sink s = {buf->data + buf->len, need, 0, 0};
    pack_env(env, &s);
    SM_ASSERT(!s.overflow && s.len == need);
    buf->len += need;
    return SM_OK;
}

/* ---- decoding: the pre-scan ---------------------------------------------- */

struct skim
{
    const uint8_t *p;
    size_t len;
    size_t off;
    size_t items; /* container elements declared so far */
    const char *why;
};

/* Reads a big-endian unsigned integer of @n bytes. */
static int skim_uint(struct skim *s, size_t n, uint64_t *v)
{
    if (s->len - s->off < n) {
        s->why = "truncated";
        return -1;
    }
    uint64_t x = 0;
    for (size_t k = 0; k < n; k++) {
        x = x << 8 | s->p[s->off + k];
    }
    s->off += n;
    *v = x;
    return 0;
}

static int skim_skip(struct skim *s, uint64_t n)
{
    if (s->len - s->off < n) {
        s->why = "truncated (a length runs past the end)";
        return -1;
    }
    s->off += (size_t)n;
    return 0;
}

/* Walks one msgpack object at s->off. Every element of a container takes
 * at least one byte, so a count larger than the bytes left is a lie. */
static int skim_object(struct skim *s, int depth)
{
    if (s->off >= s->len) {
        s->why = "truncated";
        return -1;
    }
    uint8_t b = s->p[s->off++];
    uint64_t n = 0;
    int container = 0; /* 1 array, 2 map */

    if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) {
        return 0; /* fixint, nil, bool */
    }
    if ((b & 0xf0) == 0x80) {
        n = b & 0x0f;
        container = 2;
    } else if ((b & 0xf0) == 0x90) {
        n = b & 0x0f;
        container = 1;
    } else if ((b & 0xe0) == 0xa0) {
        return skim_skip(s, b & 0x1f);
    } else {
        int rv = 0;
        switch (b) {
            case 0xc4: /* bin 8/16/32, str 8/16/32 */
            case 0xd9:
                rv = skim_uint(s, 1, &n) || skim_skip(s, n);
                break;
            case 0xc5:
            case 0xda:
                rv = skim_uint(s, 2, &n) || skim_skip(s, n);
                break;
            case 0xc6:
            case 0xdb:
                rv = skim_uint(s, 4, &n) || skim_skip(s, n);
                break;
            case 0xc7: /* ext 8/16/32: length, type byte, data */
                rv = skim_uint(s, 1, &n) || skim_skip(s, n + 1);
                break;
            case 0xc8:
                rv = skim_uint(s, 2, &n) || skim_skip(s, n + 1);
                break;
            case 0xc9:
                rv = skim_uint(s, 4, &n) || skim_skip(s, n + 1);
                break;
            case 0xcc: /* uint8, int8 */
            case 0xd0:
                rv = skim_skip(s, 1);
                break;
            case 0xcd: /* uint16, int16 */
            case 0xd1:
                rv = skim_skip(s, 2);
                break;
            case 0xca: /* float32, uint32, int32 */
            case 0xce:
            case 0xd2:
                rv = skim_skip(s, 4);
                break;
            case 0xcb: /* float64, uint64, int64 */
            case 0xcf:
            case 0xd3:
                rv = skim_skip(s, 8);
                break;
            case 0xd4: /* fixext 1/2/4/8/16 */
            case 0xd5:
            case 0xd6:
            case 0xd7:
            case 0xd8:
                rv = skim_skip(s, 1 + ((uint64_t)1 << (b - 0xd4)));
                break;
            case 0xdc: /* array 16/32 */
                rv = skim_uint(s, 2, &n);
                container = 1;
                break;
            case 0xdd:
                rv = skim_uint(s, 4, &n);
                container = 1;
                break;
            case 0xde: /* map 16/32 */
                rv = skim_uint(s, 2, &n);
                container = 2;
                break;
            case 0xdf:
                rv = skim_uint(s, 4, &n);
                container = 2;
                break;
            default: /* 0xc1, never used */
                s->why = "invalid msgpack byte";
                return -1;
        }
        if (rv != 0 || container == 0) {
            return rv != 0 ? -1 : 0;
        }
    }

    /* A container of @n elements (maps: @n pairs). */
    uint64_t items = container == 2 ? 2 * n : n;
    if (items > s->len - s->off) {
        s->why = "element count larger than the input";
        return -1;
    }
    if (depth >= SKIM_MAX_DEPTH) {
        s->why = "nested too deeply";
        return -1;
    }
    if (items > SKIM_MAX_ITEMS - s->items) {
        s->why = "too many fields";
        return -1;
    }
    s->items += (size_t)items;
    for (uint64_t i = 0; i < items; i++) {
        if (skim_object(s, depth + 1) != 0) {
            return -1;
        }
    }
    return 0;
}

/* ---- decoding: the schema ------------------------------------------------ */

static int key_field(const msgpack_object *k)
{
    for (int f = 0; f < F_COUNT; f++) {
        size_t n = strlen(field_names[f]);
        if (k->via.str.size == n &&
            memcmp(k->via.str.ptr, field_names[f], n) == 0) {
            return f;
        }
    }
    return -1;
}

static int check_map(const msgpack_object *root,
                     const struct tp_env_limits *lim,
                     struct tp_env *env,
                     const char **why)
{
    if (root->type != MSGPACK_OBJECT_MAP) {
        *why = "not a map";
        return SM_EMALFORMED;
    }
    const msgpack_object_kv *kv = root->via.map.ptr;
    uint32_t n = root->via.map.size;

    /* The version first: another version may have other fields. */
    const msgpack_object *v = NULL;
    for (uint32_t i = 0; i < n; i++) {
        if (kv[i].key.type == MSGPACK_OBJECT_STR &&
            key_field(&kv[i].key) == F_V) {
            if (v != NULL) {
                *why = duplicate_why[F_V];
                return SM_EMALFORMED;
            }
            v = &kv[i].val;
        }
    }
    if (v == NULL) {
        *why = missing_why[F_V];
        return SM_EMALFORMED;
    }
    if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
        *why = mistyped_why[F_V];
        return SM_EMALFORMED;
    }
    if (v->via.u64 != TP_ENV_VERSION) {
        *why = "unknown wire version";
        return SM_EUNSUPPORTED;
    }

    const msgpack_object *field[F_COUNT] = {0};
    for (uint32_t i = 0; i < n; i++) {
        if (kv[i].key.type != MSGPACK_OBJECT_STR) {
            *why = "a key is not a string";
            return SM_EMALFORMED;
        }
        int f = key_field(&kv[i].key);
        if (f < 0) {
            *why = "unknown field";
            return SM_EMALFORMED;
        }
        if (field[f] != NULL) {
            *why = duplicate_why[f];
            return SM_EMALFORMED;
        }
        field[f] = &kv[i].val;
    }
    for (int f = 0; f < F_COUNT; f++) {
        if (field[f] == NULL) {
            *why = missing_why[f];
            return SM_EMALFORMED;
        }
        msgpack_object_type want = f == F_FROM ? MSGPACK_OBJECT_STR
                                   : f == F_BODY
                                       ? MSGPACK_OBJECT_BIN
                                       : MSGPACK_OBJECT_POSITIVE_INTEGER;
        if (field[f]->type != want) {
            *why = mistyped_why[f];
            return SM_EMALFORMED;
        }
    }

    uint64_t type = field[F_T]->via.u64;
    if (type < 1 || type > TP_MSG_TYPE_MAX) {
        *why = "unknown message type";
        return SM_EMALFORMED;
    }
    const msgpack_object_str *from = &field[F_FROM]->via.str;
    if (from->size > TP_PEER_ID_MAX) {
        *why = "sender id longer than TP_PEER_ID_MAX";
        return SM_EMALFORMED;
    }
    if (!tp_peer_id_valid(from->ptr, from->size)) {
        *why = "sender id empty or not printable ASCII";
        return SM_EMALFORMED;
    }
    const msgpack_object_bin *body = &field[F_BODY]->via.bin;
    if (body->size > lim->max_body) {
        *why = "body larger than the limit";
        return SM_ETOOBIG;
    }

    env->type = (int)type;
    env->from = from->ptr;
    env->from_len = from->size;
    env->id = field[F_ID]->via.u64;
    env->body = body->size > 0 ? body->ptr : NULL;
    env->body_len = body->size;
    return SM_OK;
}

int tp_env_decode(const void *data,
                  size_t len,
                  const struct tp_env_limits *limits,
                  struct tp_env *env,
                  const char **why)
{
    static const struct tp_env_limits defaults = {TP_ENV_DEFAULT_MAX_SIZE,
                                                  TP_ENV_DEFAULT_MAX_BODY};
    const struct tp_env_limits *lim = limits != NULL ? limits : &defaults;
    const char *dummy;
    if (why == NULL) {
        why = &dummy;
    }

    if (len > lim->max_size) {
        *why = "envelope larger than the limit";
        return SM_ETOOBIG;
    }
    if (len == 0) {
        *why = "empty";
        return SM_EMALFORMED;
    }
    struct skim s = {data, len, 0, 0, NULL};
    if (skim_object(&s, 0) != 0) {
        *why = s.why;
        return SM_EMALFORMED;
    }
    if (s.off != len) {
        *why = "trailing bytes after the envelope";
        return SM_EMALFORMED;
    }

    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    size_t off = 0;
    msgpack_unpack_return ur = msgpack_unpack_next(&up, data, len, &off);
    int rv;
    if (ur == MSGPACK_UNPACK_NOMEM_ERROR) {
        *why = "out of memory unpacking";
        rv = SM_ENOMEM;
    } else if (ur != MSGPACK_UNPACK_SUCCESS || off != len) {
        /* The pre-scan accepted it, so msgpack-c disagrees with it: refuse
         * rather than guess. */
        *why = "msgpack-c rejects the envelope";
        rv = SM_EMALFORMED;
    } else {
        rv = check_map(&up.data, lim, env, why);
    }
    msgpack_unpacked_destroy(&up);
    if (rv == SM_OK) {
        *why = "";
    }
    return rv;
}
