/* Model checkpoints: a self-describing msgpack document followed by its
 * CRC-32C (little-endian u32).
 *
 *   {"format": "sagemesh-gvae", "version": 1, "graph_version": u64,
 *    "config": {...training config...},
 *    "nodes": [{"name", "members": [str], "parents": [u], "trained": bool,
 *               "latent": u,
 *               "x"|"y"|"p": [[kind, resource, service, caller, metric,
 *                              peer], ...],
 *               "xs"|"ys": bin (7 float32 per feature: mean std lo hi
 *                          median iqr normal),
 *               "params": bin (float32), "state": bin (float32)}]}
 *
 * Floats are little-endian IEEE 754. Group keys, offsets and the layer
 * shapes are derived again on load (from the groups and the config), so a
 * file cannot describe a shape its weights do not fill. */
#include <math.h>
#include <msgpack.h>
#include <string.h>

#include "base/alloc.h"
#include "base/crc32c.h"
#include "gvae/internal.h"

#define CKPT_FORMAT  "sagemesh-gvae"
#define CKPT_VERSION 1
#define STAT_FLOATS  7
#define MAX_DEPTH    16

/* ---- writing ------------------------------------------------------------ */

static void pack_str(msgpack_packer *pk, const char *s)
{
    size_t len = strlen(s);
    msgpack_pack_str(pk, len);
    msgpack_pack_str_body(pk, s, len);
}

static void pack_floats(msgpack_packer *pk, const float *v, size_t n)
{
    msgpack_pack_bin(pk, n * 4);
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &v[i], 4);
        uint8_t b[4] = {(uint8_t)u, (uint8_t)(u >> 8), (uint8_t)(u >> 16),
                        (uint8_t)(u >> 24)};
        msgpack_pack_bin_body(pk, b, 4);
    }
}

static void pack_stats(msgpack_packer *pk, const struct gvae_stat *st, size_t n)
{
    msgpack_pack_bin(pk, n * STAT_FLOATS * 4);
    for (size_t i = 0; i < n; i++) {
        float f[STAT_FLOATS] = {st[i].mean,   st[i].std, st[i].lo,    st[i].hi,
                                st[i].median, st[i].iqr, st[i].normal};
        for (int k = 0; k < STAT_FLOATS; k++) {
            uint32_t u;
            memcpy(&u, &f[k], 4);
            uint8_t b[4] = {(uint8_t)u, (uint8_t)(u >> 8), (uint8_t)(u >> 16),
                            (uint8_t)(u >> 24)};
            msgpack_pack_bin_body(pk, b, 4);
        }
    }
}

static void pack_groups(msgpack_packer *pk,
                        const struct gvae_group *g,
                        size_t n)
{
    msgpack_pack_array(pk, n);
    for (size_t i = 0; i < n; i++) {
        msgpack_pack_array(pk, 6);
        msgpack_pack_uint32(pk, (uint32_t)g[i].kind);
        msgpack_pack_uint32(pk, (uint32_t)g[i].res);
        pack_str(pk, g[i].service);
        pack_str(pk, g[i].caller);
        pack_str(pk, g[i].metric);
        pack_str(pk, g[i].peer);
    }
}

static void pack_config(msgpack_packer *pk, const struct gvae_config *c)
{
    struct
    {
        const char *k;
        double v;
    } f[] = {
        {"latent", c->latent},
        {"hidden_layers", c->hidden_layers},
        {"hidden_min", c->hidden_min},
        {"hidden_max", c->hidden_max},
        {"alpha", c->alpha},
        {"beta", c->beta},
        {"dropout", c->dropout},
        {"learning_rate", c->learning_rate},
        {"weight_decay", c->weight_decay},
        {"clip_norm", c->clip_norm},
        {"batch", c->batch},
        {"max_epochs", c->max_epochs},
        {"patience", c->patience},
        {"val_fraction", c->val_fraction},
        {"violation_share", c->violation_share},
        {"finetune_epochs", c->finetune_epochs},
        {"threads", c->threads},
    };
    size_t n = sizeof f / sizeof f[0];
    msgpack_pack_map(pk, n + 1);
    for (size_t i = 0; i < n; i++) {
        pack_str(pk, f[i].k);
        msgpack_pack_double(pk, f[i].v);
    }
    pack_str(pk, "seed");
    msgpack_pack_uint64(pk, c->seed);
}

int gvae_model_save(const struct gvae_model *m, uint8_t **buf, size_t *len)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 5);
    pack_str(&pk, "format");
    pack_str(&pk, CKPT_FORMAT);
    pack_str(&pk, "version");
    msgpack_pack_uint32(&pk, CKPT_VERSION);
    pack_str(&pk, "graph_version");
    msgpack_pack_uint64(&pk, m->graph_version);
    pack_str(&pk, "config");
    pack_config(&pk, &m->config);
    pack_str(&pk, "nodes");
    msgpack_pack_array(&pk, m->n_nodes);
    for (size_t i = 0; i < m->n_nodes; i++) {
        const struct gvae_node *nd = &m->nodes[i];
        const struct gvae_cvae *c = &nd->cvae;
        msgpack_pack_map(&pk, 12);
        pack_str(&pk, "name");
        pack_str(&pk, nd->name);
        pack_str(&pk, "members");
        msgpack_pack_array(&pk, nd->n_members);
        for (size_t k = 0; k < nd->n_members; k++) {
            pack_str(&pk, nd->members[k]);
        }
        pack_str(&pk, "parents");
        msgpack_pack_array(&pk, nd->n_parents);
        for (size_t k = 0; k < nd->n_parents; k++) {
            msgpack_pack_uint64(&pk, nd->parents[k]);
        }
        pack_str(&pk, "trained");
        if (nd->trained && c->block != NULL) {
            msgpack_pack_true(&pk);
        } else {
            msgpack_pack_false(&pk);
        }
        pack_str(&pk, "latent");
        msgpack_pack_uint32(&pk, m->config.latent);
        pack_str(&pk, "x");
        pack_groups(&pk, nd->xg, nd->n_xg);
        pack_str(&pk, "y");
        pack_groups(&pk, nd->yg, nd->n_yg);
        pack_str(&pk, "p");
        pack_groups(&pk, nd->pg, nd->n_pg);
        pack_str(&pk, "xs");
        pack_stats(&pk, nd->xs, nd->nx);
        pack_str(&pk, "ys");
        pack_stats(&pk, nd->ys, nd->ny);
        size_t np = c->block ? c->pool.n_params : 0;
        size_t ns = c->block ? c->pool.n_state : 0;
        pack_str(&pk, "params");
        pack_floats(&pk, c->block, np);
        pack_str(&pk, "state");
        pack_floats(&pk, c->block ? c->block + 4 * np : NULL, ns);
    }
    /* msgpack's buffer grows with realloc and aborts nothing: a failed
     * write leaves it short, which the size check below cannot see, so
     * its data pointer is checked instead. */
    int rc = SM_OK;
    if (sb.data == NULL) {
        rc = SM_ENOMEM;
    } else {
        uint8_t *out = sm_malloc(sb.size + 4);
        if (out == NULL) {
            rc = SM_ENOMEM;
        } else {
            memcpy(out, sb.data, sb.size);
            uint32_t crc = sm_crc32c(0, sb.data, sb.size);
            for (int k = 0; k < 4; k++) {
                out[sb.size + (size_t)k] = (uint8_t)(crc >> (8 * k));
            }
            *buf = out;
            *len = sb.size + 4;
        }
    }
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

/* ---- a bounds pre-check ----------------------------------------------------
 * msgpack-c allocates an array's or map's slots when it reads the header,
 * before their elements: a 6-byte input can claim 4 billion elements. Every
 * element takes at least one byte, so walking the document once and
 * refusing counts larger than the bytes left bounds what unpacking can
 * allocate by the input size. */

static int rd(const uint8_t *p, size_t len, size_t *off, size_t n, uint64_t *v)
{
    if (len - *off < n) {
        return -1;
    }
    uint64_t x = 0;
    for (size_t k = 0; k < n; k++) {
        x = x << 8 | p[*off + k];
    }
    *off += n;
    *v = x;
    return 0;
}

static int skim(const uint8_t *p, size_t len, size_t *off, int depth)
{
    if (depth > MAX_DEPTH || *off >= len) {
        return -1;
    }
    uint8_t b = p[(*off)++];
    uint64_t n = 0, skip = 0, items = 0;
    if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) {
        return 0;
    }
    if ((b & 0xf0) == 0x80 || (b & 0xf0) == 0x90) {
        items = (uint64_t)(b & 0x0f) * ((b & 0xf0) == 0x80 ? 2 : 1);
    } else if ((b & 0xe0) == 0xa0) {
        skip = b & 0x1f;
    } else {
        switch (b) {
            case 0xc4:
            case 0xd9:
                if (rd(p, len, off, 1, &skip))
                    return -1;
                break;
            case 0xc5:
            case 0xda:
                if (rd(p, len, off, 2, &skip))
                    return -1;
                break;
            case 0xc6:
            case 0xdb:
                if (rd(p, len, off, 4, &skip))
                    return -1;
                break;
            case 0xc7:
                if (rd(p, len, off, 1, &skip))
                    return -1;
                skip++;
                break;
            case 0xc8:
                if (rd(p, len, off, 2, &skip))
                    return -1;
                skip++;
                break;
            case 0xc9:
                if (rd(p, len, off, 4, &skip))
                    return -1;
                skip++;
                break;
            case 0xca:
            case 0xce:
            case 0xd2:
                skip = 4;
                break;
            case 0xcb:
            case 0xcf:
            case 0xd3:
                skip = 8;
                break;
            case 0xcc:
            case 0xd0:
                skip = 1;
                break;
            case 0xcd:
            case 0xd1:
                skip = 2;
                break;
            case 0xd4:
                skip = 2;
                break;
            case 0xd5:
                skip = 3;
                break;
            case 0xd6:
                skip = 5;
                break;
            case 0xd7:
                skip = 9;
                break;
            case 0xd8:
                skip = 17;
                break;
            case 0xdc:
                if (rd(p, len, off, 2, &n))
                    return -1;
                items = n;
                break;
            case 0xdd:
                if (rd(p, len, off, 4, &n))
                    return -1;
                items = n;
                break;
            case 0xde:
                if (rd(p, len, off, 2, &n))
                    return -1;
                items = 2 * n;
                break;
            case 0xdf:
                if (rd(p, len, off, 4, &n))
                    return -1;
                items = 2 * n;
                break;
            default:
                return -1; /* 0xc1 is never used */
        }
    }
    if (skip > len - *off || items > len - *off) {
        return -1;
    }
    *off += (size_t)skip;
    for (uint64_t k = 0; k < items; k++) {
        if (skim(p, len, off, depth + 1)) {
            return -1;
        }
    }
    return 0;
}

/* ---- reading ------------------------------------------------------------ */

struct reader
{
    char *errmsg;
    int rc;
};

static int fail(struct reader *r, int rc, const char *what)
{
    if (r->rc == SM_OK) {
        r->rc = rc;
        sm_errmsg_printf(r->errmsg, "checkpoint: %s", what);
    }
    return rc;
}

static const msgpack_object *get(const msgpack_object *map, const char *key)
{
    if (map == NULL || map->type != MSGPACK_OBJECT_MAP) {
        return NULL;
    }
    size_t klen = strlen(key);
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == klen &&
            memcmp(k->via.str.ptr, key, klen) == 0) {
            return &map->via.map.ptr[i].val;
        }
    }
    return NULL;
}

static int get_u64(const msgpack_object *map, const char *key, uint64_t *v)
{
    const msgpack_object *o = get(map, key);
    if (o == NULL || o->type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
        return -1;
    }
    *v = o->via.u64;
    return 0;
}

static int get_num(const msgpack_object *map, const char *key, double *v)
{
    const msgpack_object *o = get(map, key);
    if (o == NULL) {
        return -1;
    }
    if (o->type == MSGPACK_OBJECT_FLOAT32 ||
        o->type == MSGPACK_OBJECT_FLOAT64) {
        *v = o->via.f64;
    } else if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        *v = (double)o->via.u64;
    } else {
        return -1;
    }
    return isfinite(*v) ? 0 : -1;
}

/* A NUL-free string copy, or NULL. */
static char *dup_str(const msgpack_object *o)
{
    if (o == NULL || o->type != MSGPACK_OBJECT_STR ||
        memchr(o->via.str.ptr, '\0', o->via.str.size) != NULL ||
        o->via.str.size > 4096) {
        return NULL;
    }
    char *s = sm_malloc(o->via.str.size + 1);
    if (s != NULL) {
        memcpy(s, o->via.str.ptr, o->via.str.size);
        s[o->via.str.size] = '\0';
    }
    return s;
}

static float le_float(const char *p)
{
    const uint8_t *b = (const uint8_t *)p;
    uint32_t u = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
                 (uint32_t)b[3] << 24;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static int read_config(struct reader *r,
                       const msgpack_object *o,
                       struct gvae_config *c)
{
    struct
    {
        const char *k;
        double v;
    } f[] = {
        {"latent", 0},          {"hidden_layers", 0}, {"hidden_min", 0},
        {"hidden_max", 0},      {"alpha", 0},         {"beta", 0},
        {"dropout", 0},         {"learning_rate", 0}, {"weight_decay", 0},
        {"clip_norm", 0},       {"batch", 0},         {"max_epochs", 0},
        {"patience", 0},        {"val_fraction", 0},  {"violation_share", 0},
        {"finetune_epochs", 0}, {"threads", 0},
    };
    size_t n = sizeof f / sizeof f[0];
    for (size_t i = 0; i < n; i++) {
        if (get_num(o, f[i].k, &f[i].v) != 0 || f[i].v < 0 || f[i].v > 1e7) {
            return fail(r, SM_EMALFORMED, "config field missing or invalid");
        }
    }
    memset(c, 0, sizeof *c);
    c->latent = (unsigned)f[0].v;
    c->hidden_layers = (unsigned)f[1].v;
    c->hidden_min = (unsigned)f[2].v;
    c->hidden_max = (unsigned)f[3].v;
    c->alpha = (float)f[4].v;
    c->beta = (float)f[5].v;
    c->dropout = (float)f[6].v;
    c->learning_rate = (float)f[7].v;
    c->weight_decay = (float)f[8].v;
    c->clip_norm = (float)f[9].v;
    c->batch = (unsigned)f[10].v;
    c->max_epochs = (unsigned)f[11].v;
    c->patience = (unsigned)f[12].v;
    c->val_fraction = (float)f[13].v;
    c->violation_share = (float)f[14].v;
    c->finetune_epochs = (unsigned)f[15].v;
    c->threads = (unsigned)f[16].v;
    if (get_u64(o, "seed", &c->seed) != 0) {
        return fail(r, SM_EMALFORMED, "config seed missing");
    }
    char msg[SM_ERRMSG_SIZE];
    if (gvae__config_check(c, msg) != SM_OK || c->batch > 4096) {
        return fail(r, SM_EMALFORMED, "config out of range");
    }
    return SM_OK;
}

static int read_groups(struct reader *r,
                       const msgpack_object *o,
                       struct gvae_group **out,
                       size_t *n_out,
                       size_t *width)
{
    if (o == NULL || o->type != MSGPACK_OBJECT_ARRAY) {
        return fail(r, SM_EMALFORMED, "group list missing");
    }
    size_t n = o->via.array.size;
    struct gvae_group *g = sm_calloc(n ? n : 1, sizeof *g);
    if (g == NULL) {
        return fail(r, SM_ENOMEM, "out of memory");
    }
    *out = g;
    *n_out = 0;
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        const msgpack_object *e = &o->via.array.ptr[i];
        if (e->type != MSGPACK_OBJECT_ARRAY || e->via.array.size != 6 ||
            e->via.array.ptr[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
            e->via.array.ptr[1].type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
            e->via.array.ptr[0].via.u64 > GVAE_LOAD ||
            e->via.array.ptr[1].via.u64 >= CBN_RES_COUNT) {
            return fail(r, SM_EMALFORMED, "bad group");
        }
        char *s[4];
        for (int k = 0; k < 4; k++) {
            s[k] = dup_str(&e->via.array.ptr[2 + k]);
        }
        int rc = SM_EMALFORMED;
        if (s[0] && s[1] && s[2] && s[3] && s[0][0] != '\0') {
            rc = gvae__group_set(&g[i],
                                 (enum gvae_kind)e->via.array.ptr[0].via.u64,
                                 (enum cbn_resource)e->via.array.ptr[1].via.u64,
                                 s[0], s[1], s[2], s[3]);
            *n_out = i + 1;
        }
        for (int k = 0; k < 4; k++) {
            sm_free(s[k]);
        }
        if (rc != SM_OK) {
            return fail(r, rc, rc == SM_ENOMEM ? "out of memory" : "bad group");
        }
        g[i].offset = off;
        off += g[i].width;
    }
    *width = off;
    return SM_OK;
}

static int read_stats(struct reader *r,
                      const msgpack_object *o,
                      struct gvae_stat **out,
                      size_t n)
{
    if (o == NULL || o->type != MSGPACK_OBJECT_BIN ||
        o->via.bin.size != n * STAT_FLOATS * 4) {
        return fail(r, SM_EMALFORMED, "statistics do not match the features");
    }
    struct gvae_stat *st = sm_calloc(n ? n : 1, sizeof *st);
    if (st == NULL) {
        return fail(r, SM_ENOMEM, "out of memory");
    }
    *out = st;
    for (size_t i = 0; i < n; i++) {
        float f[STAT_FLOATS];
        for (int k = 0; k < STAT_FLOATS; k++) {
            f[k] = le_float(o->via.bin.ptr + (i * STAT_FLOATS + k) * 4);
            if (!isfinite(f[k])) {
                return fail(r, SM_EMALFORMED, "non-finite statistic");
            }
        }
        st[i] = (struct gvae_stat){f[0], f[1], f[2], f[3], f[4], f[5], f[6]};
        if (!(st[i].std > 0) || !(st[i].iqr > 0)) {
            return fail(r, SM_EMALFORMED, "statistic scale not positive");
        }
    }
    return SM_OK;
}

static int read_floats(struct reader *r,
                       const msgpack_object *o,
                       float *dst,
                       size_t n)
{
    if (o == NULL || o->type != MSGPACK_OBJECT_BIN ||
        o->via.bin.size != n * 4) {
        return fail(r, SM_EMALFORMED, "weights do not match the shapes");
    }
    for (size_t i = 0; i < n; i++) {
        dst[i] = le_float(o->via.bin.ptr + i * 4);
        if (!isfinite(dst[i])) {
            return fail(r, SM_EMALFORMED, "non-finite weight");
        }
    }
    return SM_OK;
}

static int read_node(struct reader *r,
                     struct gvae_model *m,
                     size_t i,
                     const msgpack_object *o,
                     size_t input_len)
{
    struct gvae_node *nd = &m->nodes[i];
    const msgpack_object *mem = get(o, "members");
    const msgpack_object *par = get(o, "parents");
    const msgpack_object *tr = get(o, "trained");
    uint64_t latent;
    nd->name = dup_str(get(o, "name"));
    if (nd->name == NULL || nd->name[0] == '\0' || mem == NULL ||
        mem->type != MSGPACK_OBJECT_ARRAY || mem->via.array.size == 0 ||
        par == NULL || par->type != MSGPACK_OBJECT_ARRAY || tr == NULL ||
        tr->type != MSGPACK_OBJECT_BOOLEAN ||
        get_u64(o, "latent", &latent) != 0 || latent != m->config.latent) {
        return fail(r, SM_EMALFORMED, "node header invalid");
    }
    nd->members = sm_calloc(mem->via.array.size, sizeof *nd->members);
    nd->parents = sm_calloc(par->via.array.size + 1, sizeof *nd->parents);
    if (nd->members == NULL || nd->parents == NULL) {
        return fail(r, SM_ENOMEM, "out of memory");
    }
    for (uint32_t k = 0; k < mem->via.array.size; k++) {
        nd->members[k] = dup_str(&mem->via.array.ptr[k]);
        nd->n_members = k + 1;
        if (nd->members[k] == NULL) {
            return fail(r, SM_EMALFORMED, "bad member name");
        }
    }
    for (uint32_t k = 0; k < par->via.array.size; k++) {
        const msgpack_object *p = &par->via.array.ptr[k];
        if (p->type != MSGPACK_OBJECT_POSITIVE_INTEGER || p->via.u64 >= i) {
            return fail(r, SM_EMALFORMED, "parent is not an earlier node");
        }
        nd->parents[k] = (size_t)p->via.u64;
        nd->n_parents = k + 1;
    }
    if (read_groups(r, get(o, "x"), &nd->xg, &nd->n_xg, &nd->nx) ||
        read_groups(r, get(o, "y"), &nd->yg, &nd->n_yg, &nd->ny) ||
        read_groups(r, get(o, "p"), &nd->pg, &nd->n_pg, &nd->np) ||
        read_stats(r, get(o, "xs"), &nd->xs, nd->nx) ||
        read_stats(r, get(o, "ys"), &nd->ys, nd->ny)) {
        return r->rc;
    }
    nd->ps = sm_calloc(nd->np + 1, sizeof *nd->ps);
    if (nd->ps == NULL) {
        return fail(r, SM_ENOMEM, "out of memory");
    }
    /* Each Y_parent group is an output of one of the node's parents. */
    for (size_t g = 0; g < nd->n_pg; g++) {
        struct gvae_group *pg = &nd->pg[g];
        int found = 0;
        for (size_t k = 0; k < nd->n_parents && !found; k++) {
            const struct gvae_node *src = &m->nodes[nd->parents[k]];
            for (size_t q = 0; q < src->n_yg && !found; q++) {
                if (strcmp(src->yg[q].key, pg->key) == 0 &&
                    src->yg[q].width == pg->width) {
                    pg->src_node = nd->parents[k];
                    pg->src_offset = src->yg[q].offset;
                    found = 1;
                }
            }
        }
        if (!found) {
            return fail(r, SM_EMALFORMED,
                        "parent input is not an output of a parent");
        }
    }
    gvae__node_parent_stats(m, i);
    if (!tr->via.boolean) {
        return SM_OK;
    }
    if (nd->ny == 0) {
        return fail(r, SM_EMALFORMED, "a trained node without outputs");
    }
    /* Size the CVAE without allocating. The weights in the file must fill
     * it, and its buffers may not be more than a small multiple of them,
     * which bounds what a hostile file can make us allocate. */
    size_t params = 0;
    size_t floats = gvae__cvae_floats(nd, &m->config, &params);
    if (params > input_len / 4 || floats > 32 * params + (1u << 20)) {
        return fail(r, SM_EMALFORMED, "weights do not match the shapes");
    }
    struct sm_rng rng;
    sm_rng_seed(&rng, 0);
    if (gvae__cvae_create(&nd->cvae, nd, &m->config, &rng) != SM_OK) {
        return fail(r, SM_ENOMEM, "out of memory");
    }
    struct gvae_cvae *c = &nd->cvae;
    if (read_floats(r, get(o, "params"), c->block, c->pool.n_params) ||
        read_floats(r, get(o, "state"), c->block + 4 * c->pool.n_params,
                    c->pool.n_state)) {
        return r->rc;
    }
    nd->trained = 1;
    return SM_OK;
}

int gvae_model_load(const uint8_t *buf,
                    size_t len,
                    uint64_t expect_graph_version,
                    struct gvae_model **out,
                    char errmsg[SM_ERRMSG_SIZE])
{
    struct reader r = {.errmsg = errmsg, .rc = SM_OK};
    errmsg[0] = '\0';
    if (len < 5) {
        return fail(&r, SM_EMALFORMED, "truncated");
    }
    size_t doc = len - 4;
    uint32_t want = (uint32_t)buf[doc] | (uint32_t)buf[doc + 1] << 8 |
                    (uint32_t)buf[doc + 2] << 16 | (uint32_t)buf[doc + 3] << 24;
    if (sm_crc32c(0, buf, doc) != want) {
        return fail(&r, SM_ECORRUPT,
                    "checksum mismatch (corrupt or truncated)");
    }
    size_t off = 0;
    if (skim(buf, doc, &off, 0) != 0 || off != doc) {
        return fail(&r, SM_EMALFORMED, "not one msgpack document");
    }
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    off = 0;
    struct gvae_model *m = NULL;
    if (msgpack_unpack_next(&up, (const char *)buf, doc, &off) !=
        MSGPACK_UNPACK_SUCCESS) {
        fail(&r, SM_EMALFORMED, "not one msgpack document");
        goto done;
    }
    const msgpack_object *root = &up.data;
    const msgpack_object *fmt = get(root, "format");
    uint64_t version = 0;
    if (fmt == NULL || fmt->type != MSGPACK_OBJECT_STR ||
        fmt->via.str.size != strlen(CKPT_FORMAT) ||
        memcmp(fmt->via.str.ptr, CKPT_FORMAT, fmt->via.str.size) != 0) {
        fail(&r, SM_EMALFORMED, "not a sagemesh model");
        goto done;
    }
    if (get_u64(root, "version", &version) != 0 || version != CKPT_VERSION) {
        fail(&r, SM_EUNSUPPORTED, "unsupported checkpoint version");
        goto done;
    }
    m = sm_calloc(1, sizeof *m);
    if (m == NULL) {
        fail(&r, SM_ENOMEM, "out of memory");
        goto done;
    }
    if (get_u64(root, "graph_version", &m->graph_version) != 0) {
        fail(&r, SM_EMALFORMED, "graph_version missing");
        goto done;
    }
    if (expect_graph_version != 0 && m->graph_version != expect_graph_version) {
        sm_errmsg_printf(errmsg,
                         "checkpoint: trained for CBN version %llu, not %llu",
                         (unsigned long long)m->graph_version,
                         (unsigned long long)expect_graph_version);
        r.rc = SM_EINVAL;
        goto done;
    }
    if (read_config(&r, get(root, "config"), &m->config) != SM_OK) {
        goto done;
    }
    const msgpack_object *nodes = get(root, "nodes");
    if (nodes == NULL || nodes->type != MSGPACK_OBJECT_ARRAY ||
        nodes->via.array.size == 0) {
        fail(&r, SM_EMALFORMED, "node list missing");
        goto done;
    }
    m->nodes = sm_calloc(nodes->via.array.size, sizeof *m->nodes);
    if (m->nodes == NULL) {
        fail(&r, SM_ENOMEM, "out of memory");
        goto done;
    }
    m->n_nodes = nodes->via.array.size;
    for (size_t i = 0; i < m->n_nodes && r.rc == SM_OK; i++) {
        read_node(&r, m, i, &nodes->via.array.ptr[i], len);
    }
done:
    msgpack_unpacked_destroy(&up);
    if (r.rc != SM_OK) {
        gvae_model_free(m);
        return r.rc;
    }
    *out = m;
    return SM_OK;
}
