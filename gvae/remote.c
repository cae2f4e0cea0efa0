/* Counterfactual passes across peers: the pass wire format, the owner's
 * pass server and the coordinator's exchange of one topological level.
 *
 * A pass (sweep.c) computes, for K interventions of S samples each, the
 * counterfactual rows of every node an intervention reaches. Node i's rows
 * depend on its own abducted state (the same on every peer: same model,
 * window, normals, config and RNG stream), the interventions, and the rows
 * of its affected parents; gvae__node_pass() computes them from exactly
 * that. Which nodes a pass reaches follows from the interventions and the
 * CBN alone, so the coordinator knows, before any decoder runs, which nodes
 * of a level to send where. A request carries the interventions and, for
 * every requested node, the flags of its parents and the parent rows it
 * reads; the owner decodes them into views (struct gvae_pview) and calls
 * the same function. The reply's rows are the floats' bit patterns, so the
 * coordinator continues exactly as if it had computed them.
 *
 * Residuals (posterior abduction) are computed lazily by whoever computes
 * the node, always over the same sample batch ([1, S) after the abduction's
 * [0, 1)), so they too are the same everywhere. The coordinator counts the
 * rows as if it had computed everything (sweep.c), so the diagnosis does
 * not depend on the owners.
 *
 * Both decoders are strict: every length follows from the header, the
 * model and the flags, and is checked against the input before anything is
 * allocated for it; the whole input must be consumed. */
#include <stdio.h>
#include <string.h>

#include "base/alloc.h"
#include "gvae/internal.h"

#define REQ_HEAD 60
#define REP_HEAD 36

/* ---- little-endian cursor ------------------------------------------------ */

struct wcur
{
    uint8_t *p;
};

static void put_u8(struct wcur *w, unsigned v)
{
    *w->p++ = (uint8_t)v;
}

static void put_u16(struct wcur *w, unsigned v)
{
    put_u8(w, v & 0xFF);
    put_u8(w, (v >> 8) & 0xFF);
}

static void put_u32(struct wcur *w, uint32_t v)
{
    for (int k = 0; k < 4; k++) {
        put_u8(w, (v >> (8 * k)) & 0xFF);
    }
}

static void put_u64(struct wcur *w, uint64_t v)
{
    for (int k = 0; k < 8; k++) {
        put_u8(w, (unsigned)((v >> (8 * k)) & 0xFF));
    }
}

static void put_floats(struct wcur *w, const float *v, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        uint32_t bits;
        memcpy(&bits, &v[k], sizeof bits);
        put_u32(w, bits);
    }
}

struct rcur
{
    const uint8_t *p;
    size_t left;
};

/* Each getter returns 0 past the end and leaves the cursor there; callers
 * check lengths first (have()). */
static int have(const struct rcur *r, size_t n)
{
    return r->left >= n;
}

static uint64_t get_le(struct rcur *r, int bytes)
{
    uint64_t v = 0;
    if (!have(r, (size_t)bytes)) {
        r->left = 0;
        return 0;
    }
    for (int k = 0; k < bytes; k++) {
        v |= (uint64_t)r->p[k] << (8 * k);
    }
    r->p += bytes;
    r->left -= (size_t)bytes;
    return v;
}

static void get_floats(struct rcur *r, float *v, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        uint32_t bits = (uint32_t)get_le(r, 4);
        memcpy(&v[k], &bits, sizeof bits);
    }
}

/* Bytes of a flag bitmap for @K interventions. */
static size_t kbytes(size_t K)
{
    return (K + 7) / 8;
}

static void put_flags(struct wcur *w, const size_t *pos, size_t K)
{
    for (size_t b = 0; b < kbytes(K); b++) {
        unsigned byte = 0;
        for (size_t k = 8 * b; k < K && k < 8 * b + 8; k++) {
            byte |= (pos[k] != SIZE_MAX) << (k % 8);
        }
        put_u8(w, byte);
    }
}

/* Reads a bitmap into @flags (K bytes, 0/1); -1 if padding bits are set. */
static int get_flags(struct rcur *r, uint8_t *flags, size_t K)
{
    for (size_t b = 0; b < kbytes(K); b++) {
        unsigned byte = (unsigned)get_le(r, 1);
        for (size_t k = 8 * b; k < 8 * b + 8; k++) {
            unsigned bit = (byte >> (k % 8)) & 1u;
            if (k < K) {
                flags[k] = (uint8_t)bit;
            } else if (bit) {
                return -1;
            }
        }
    }
    return 0;
}

/* ---- requests ------------------------------------------------------------ */

static size_t iv_bytes(const struct gvae_intervention *iv, size_t K)
{
    size_t n = 0;
    for (size_t k = 0; k < K; k++) {
        n += 2 + 6 * iv[k].n;
    }
    return n;
}

/* Floats of the parent rows node @i reads under flags @paff (n_parents x
 * K). */
static size_t parent_floats(const struct gvae_node *node,
                            const uint8_t *paff,
                            size_t K,
                            size_t S)
{
    size_t n = 0;
    for (size_t g = 0; g < node->n_pg; g++) {
        size_t q = gvae__pg_parent(node, g);
        for (size_t k = 0; q != SIZE_MAX && k < K; k++) {
            n += paff[q * K + k] ? S * node->pg[g].width : 0;
        }
    }
    return n;
}

/* Encodes the request for the @n nodes @nodes (ascending, one owner) of
 * level @level; the parents' rows are the coordinator's (ns[].cf). */
static int encode_request(const struct gvae_sweep *sw,
                          const struct gvae_intervention *iv,
                          size_t K,
                          size_t S,
                          size_t level,
                          const size_t *nodes,
                          size_t n,
                          uint8_t *paff,
                          uint8_t **buf,
                          size_t *len)
{
    const struct gvae_model *m = sw->m;
    size_t size = REQ_HEAD + iv_bytes(iv, K);
    for (size_t j = 0; j < n; j++) {
        const struct gvae_node *node = &m->nodes[nodes[j]];
        for (size_t q = 0; q < node->n_parents; q++) {
            for (size_t k = 0; k < K; k++) {
                paff[q * K + k] = sw->ns[node->parents[q]].pos[k] != SIZE_MAX;
            }
        }
        size += 4 + node->n_parents * kbytes(K) +
                4 * parent_floats(node, paff, K, S);
    }
    uint8_t *out = sm_malloc(size);
    if (out == NULL) {
        return SM_ENOMEM;
    }
    struct wcur w = {out};
    memcpy(w.p, "SMPQ", 4);
    w.p += 4;
    put_u16(&w, GVAE_PASS_FORMAT);
    put_u8(&w, (unsigned)sw->cfg->abduction);
    put_u8(&w, 0);
    put_u64(&w, m->graph_version);
    put_u32(&w, (uint32_t)m->n_nodes);
    put_u32(&w, (uint32_t)sw->S);
    put_u64(&w, sw->start_ns);
    put_u64(&w, sw->cfg->seed);
    put_u32(&w, sw->pass);
    put_u32(&w, (uint32_t)level);
    put_u32(&w, (uint32_t)S);
    put_u32(&w, (uint32_t)K);
    put_u32(&w, (uint32_t)n);
    for (size_t k = 0; k < K; k++) {
        put_u8(&w, (unsigned)iv[k].n);
        put_u8(&w, iv[k].own != 0);
        for (size_t t = 0; t < iv[k].n; t++) {
            put_u32(&w, (uint32_t)iv[k].node[t]);
            put_u16(&w, iv[k].classes[t] & 0xFFFFu);
        }
    }
    for (size_t j = 0; j < n; j++) {
        const struct gvae_node *node = &m->nodes[nodes[j]];
        put_u32(&w, (uint32_t)nodes[j]);
        for (size_t q = 0; q < node->n_parents; q++) {
            put_flags(&w, sw->ns[node->parents[q]].pos, K);
        }
        for (size_t g = 0; g < node->n_pg; g++) {
            const struct gvae_group *pg = &node->pg[g];
            size_t q = gvae__pg_parent(node, g);
            const struct gvae_nstate *src = &sw->ns[pg->src_node];
            size_t sny = m->nodes[pg->src_node].ny;
            for (size_t k = 0; q != SIZE_MAX && k < K; k++) {
                if (src->pos[k] == SIZE_MAX) {
                    continue;
                }
                for (size_t s = 0; s < S; s++) {
                    put_floats(
                        &w,
                        src->cf + (src->pos[k] * S + s) * sny + pg->src_offset,
                        pg->width);
                }
            }
        }
    }
    SM_ASSERT((size_t)(w.p - out) == size);
    *buf = out;
    *len = size;
    return SM_OK;
}

int gvae_pass_peek(const uint8_t *req, size_t len, struct gvae_pass_header *h)
{
    if (len < REQ_HEAD || memcmp(req, "SMPQ", 4) != 0) {
        return SM_EMALFORMED;
    }
    struct rcur r = {req + 4, len - 4};
    memset(h, 0, sizeof *h);
    h->format = (unsigned)get_le(&r, 2);
    if (h->format != GVAE_PASS_FORMAT) {
        return SM_EUNSUPPORTED;
    }
    unsigned abd = (unsigned)get_le(&r, 1);
    unsigned zero = (unsigned)get_le(&r, 1);
    if (abd > GVAE_ABDUCT_PRIOR || zero != 0) {
        return SM_EMALFORMED;
    }
    h->abduction = (enum gvae_abduction)abd;
    h->graph_version = get_le(&r, 8);
    h->n_nodes = (uint32_t)get_le(&r, 4);
    h->config_samples = (uint32_t)get_le(&r, 4);
    h->window_start_ns = get_le(&r, 8);
    h->seed = get_le(&r, 8);
    h->pass = (uint32_t)get_le(&r, 4);
    h->level = (uint32_t)get_le(&r, 4);
    h->samples = (uint32_t)get_le(&r, 4);
    h->interventions = (uint32_t)get_le(&r, 4);
    h->nodes = (uint32_t)get_le(&r, 4);
    return SM_OK;
}

/* ---- replies (coordinator) ---------------------------------------------- */

/* Checks reply @rep against what the request asked and the coordinator
 * expects (its own flags), then stores the rows. SM_EMALFORMED leaves
 * nothing stored. */
static int decode_reply(struct gvae_sweep *sw,
                        size_t K,
                        size_t S,
                        size_t level,
                        const size_t *nodes,
                        size_t n,
                        uint8_t *flags,
                        const uint8_t *rep,
                        size_t len)
{
    const struct gvae_model *m = sw->m;
    if (len < REP_HEAD || memcmp(rep, "SMPR", 4) != 0) {
        return SM_EMALFORMED;
    }
    struct rcur r = {rep + 4, len - 4};
    int ok = get_le(&r, 2) == GVAE_PASS_FORMAT;
    ok &= get_le(&r, 2) == 0;
    ok &= get_le(&r, 8) == m->graph_version;
    ok &= get_le(&r, 4) == sw->pass;
    ok &= get_le(&r, 4) == level;
    ok &= get_le(&r, 4) == S;
    ok &= get_le(&r, 4) == K;
    ok &= get_le(&r, 4) == n;
    if (!ok) {
        return SM_EMALFORMED;
    }
    /* first the shape of everything, then the rows */
    struct rcur body = r;
    for (size_t j = 0; j < n; j++) {
        const struct gvae_nstate *st = &sw->ns[nodes[j]];
        size_t rows = st->n_aff * S * m->nodes[nodes[j]].ny;
        if (!have(&r, 4 + kbytes(K)) || get_le(&r, 4) != nodes[j] ||
            get_flags(&r, flags, K) != 0) {
            return SM_EMALFORMED;
        }
        for (size_t k = 0; k < K; k++) {
            if (flags[k] != (st->pos[k] != SIZE_MAX)) {
                return SM_EMALFORMED;
            }
        }
        if (r.left / 4 < rows) {
            return SM_EMALFORMED;
        }
        r.p += 4 * rows;
        r.left -= 4 * rows;
    }
    if (r.left != 0) {
        return SM_EMALFORMED;
    }
    r = body;
    for (size_t j = 0; j < n; j++) {
        struct gvae_nstate *st = &sw->ns[nodes[j]];
        size_t rows = st->n_aff * S * m->nodes[nodes[j]].ny;
        r.p += 4 + kbytes(K);
        r.left -= 4 + kbytes(K);
        sm_free(st->cf);
        st->cf = sm_malloc((rows + 1) * sizeof(float));
        if (st->cf == NULL) {
            return SM_ENOMEM;
        }
        get_floats(&r, st->cf, rows);
    }
    return SM_OK;
}

int gvae__remote_level(struct gvae_sweep *sw,
                       const struct gvae_intervention *iv,
                       size_t K,
                       size_t S,
                       size_t level,
                       const size_t *nodes,
                       const unsigned *owners,
                       size_t n,
                       uint8_t *done)
{
    const struct gvae_remote *remote = sw->remote;
    /* distinct owners, in the order their first node comes */
    unsigned *uo = sm_malloc((n + 1) * sizeof *uo);
    size_t *sel = sm_malloc((n + 1) * sizeof *sel);
    uint8_t **reqs = sm_calloc(n + 1, sizeof *reqs);
    uint8_t **reps = sm_calloc(n + 1, sizeof *reps);
    size_t *lens = sm_calloc(n + 1, sizeof *lens);
    size_t *rep_lens = sm_calloc(n + 1, sizeof *rep_lens);
    uint8_t *scratch = sm_malloc(sw->max_parents * K + K + 1);
    size_t n_owners = 0;
    int rc = uo && sel && reqs && reps && lens && rep_lens && scratch
                 ? SM_OK
                 : SM_ENOMEM;
    for (size_t j = 0; rc == SM_OK && j < n; j++) {
        size_t u = 0;
        while (u < n_owners && uo[u] != owners[j]) {
            u++;
        }
        if (u < n_owners) {
            continue;
        }
        uo[n_owners] = owners[j];
        size_t c = 0;
        for (size_t t = j; t < n; t++) {
            if (owners[t] == owners[j]) {
                sel[c++] = nodes[t];
            }
        }
        rc = encode_request(sw, iv, K, S, level, sel, c, scratch,
                            &reqs[n_owners], &lens[n_owners]);
        n_owners += rc == SM_OK;
    }
    if (rc == SM_OK) {
        remote->exchange(remote->arg, n_owners, uo,
                         (const uint8_t *const *)reqs, lens, reps, rep_lens);
        if (sw->stats != NULL) {
            sw->stats->levels++;
            sw->stats->requests += n_owners;
            for (size_t u = 0; u < n_owners; u++) {
                sw->stats->bytes_out += lens[u];
                sw->stats->bytes_in += reps[u] != NULL ? rep_lens[u] : 0;
            }
        }
    }
    for (size_t u = 0; rc == SM_OK && u < n_owners; u++) {
        size_t c = 0;
        for (size_t t = 0; t < n; t++) {
            if (owners[t] == uo[u]) {
                sel[c++] = nodes[t];
            }
        }
        int got = reps[u] == NULL ? SM_EMALFORMED
                                  : decode_reply(sw, K, S, level, sel, c,
                                                 scratch, reps[u], rep_lens[u]);
        if (got == SM_ENOMEM) {
            rc = got;
        }
        for (size_t t = 0; got == SM_OK && t < n; t++) {
            done[t] |= owners[t] == uo[u];
        }
    }
    for (size_t u = 0; u < n_owners; u++) {
        sm_free(reqs[u]);
        sm_free(reps[u]);
    }
    sm_free(uo);
    sm_free(sel);
    sm_free(reqs);
    sm_free(reps);
    sm_free(lens);
    sm_free(rep_lens);
    sm_free(scratch);
    return rc;
}

/* ---- the pass server (owner) -------------------------------------------- */

struct gvae_pass_server
{
    struct gvae_sweep sw;
    struct gvae_sweep_config cfg; /* copy; qos_service not kept */
};

int gvae_pass_server_new(const struct gvae_model *model,
                         const struct cbn_window *w,
                         const struct cbn_normals *normals,
                         const struct gvae_sweep_config *config,
                         struct gvae_pass_server **out,
                         char errmsg[SM_ERRMSG_SIZE])
{
    errmsg[0] = '\0';
    struct gvae_pass_server *srv = sm_calloc(1, sizeof *srv);
    if (srv == NULL) {
        sm_errmsg_printf(errmsg, "pass server: out of memory");
        return SM_ENOMEM;
    }
    srv->cfg = *config;
    int rc = gvae__sweep_init(&srv->sw, model, w, normals, &srv->cfg, errmsg);
    /* the sweep reads only the abduction mode and seed from now on */
    srv->cfg.qos_service = NULL;
    if (rc != SM_OK) {
        if (rc == SM_ENOMEM) {
            sm_errmsg_printf(errmsg, "pass server: out of memory");
        }
        gvae_pass_server_free(srv);
        return rc;
    }
    *out = srv;
    return SM_OK;
}

void gvae_pass_server_free(struct gvae_pass_server *srv)
{
    if (srv == NULL) {
        return;
    }
    gvae__sweep_free(&srv->sw);
    sm_free(srv);
}

/* A requested node: where its section starts and what it needs. */
struct reqnode
{
    size_t node;
    const uint8_t *at; /* its parents' flags */
    size_t floats;     /* parent rows sent */
    size_t n_aff;      /* interventions that affect it */
};

/* Reads the interventions (@K of them) into @iv. */
static int get_interventions(struct rcur *r,
                             struct gvae_intervention *iv,
                             size_t K,
                             size_t nn)
{
    for (size_t k = 0; k < K; k++) {
        if (!have(r, 2)) {
            return SM_EMALFORMED;
        }
        size_t n = (size_t)get_le(r, 1);
        unsigned own = (unsigned)get_le(r, 1);
        if (n < 1 || n > GVAE_SET_MAX || own > 1 || !have(r, 6 * n)) {
            return SM_EMALFORMED;
        }
        iv[k].n = n;
        iv[k].own = (int)own;
        for (size_t t = 0; t < n; t++) {
            iv[k].node[t] = (size_t)get_le(r, 4);
            iv[k].classes[t] = (unsigned)get_le(r, 2);
            if (iv[k].node[t] >= nn || iv[k].classes[t] == 0) {
                return SM_EMALFORMED;
            }
            for (size_t q = 0; q < t; q++) {
                if (iv[k].node[q] == iv[k].node[t]) {
                    return SM_EMALFORMED;
                }
            }
        }
    }
    return SM_OK;
}

int gvae_pass_serve(struct gvae_pass_server *srv,
                    const uint8_t *req,
                    size_t len,
                    uint8_t **rep,
                    size_t *rep_len)
{
    struct gvae_sweep *sw = &srv->sw;
    const struct gvae_model *m = sw->m;
    struct gvae_pass_header h;
    int rc = gvae_pass_peek(req, len, &h);
    if (rc != SM_OK) {
        return rc;
    }
    size_t nn = m->n_nodes;
    size_t kmax = nn > CBN_RES_COUNT ? nn : CBN_RES_COUNT;
    size_t K = h.interventions, S = h.samples, N = h.nodes;
    if (h.config_samples < 1 || h.config_samples > 4096 ||
        !(S == 1 || S == h.config_samples) || K < 1 || K > kmax || N < 1 ||
        N > h.n_nodes) {
        return SM_EMALFORMED;
    }
    if (h.graph_version != m->graph_version || h.n_nodes != nn ||
        h.config_samples != sw->S || h.window_start_ns != sw->start_ns ||
        h.seed != srv->cfg.seed || h.abduction != srv->cfg.abduction) {
        return SM_EINVAL;
    }
    struct rcur r = {req + REQ_HEAD, len - REQ_HEAD};
    /* every intervention takes 8 bytes at least, every node 4 */
    if (r.left / 8 < K || (r.left - 8 * K) / 4 < N) {
        return SM_EMALFORMED;
    }
    struct gvae_intervention *iv = sm_calloc(K, sizeof *iv);
    struct reqnode *rn = sm_calloc(N, sizeof *rn);
    uint8_t *paff = sm_malloc(sw->max_parents * K + 1);
    size_t *pos = sm_malloc(K * sizeof *pos);
    struct gvae_pview *pv = sm_malloc((sw->max_pg * K + 1) * sizeof *pv);
    float *rows = NULL;
    uint8_t *out = NULL;
    if (!iv || !rn || !paff || !pos || !pv) {
        rc = SM_ENOMEM;
        goto done;
    }
    rc = get_interventions(&r, iv, K, nn);
    /* Pass 1: the shape of every node's section, checked whole. */
    size_t KB = kbytes(K), size = REP_HEAD, most = 0;
    for (size_t j = 0; rc == SM_OK && j < N; j++) {
        if (!have(&r, 4)) {
            rc = SM_EMALFORMED;
            break;
        }
        size_t i = (size_t)get_le(&r, 4);
        if (i >= nn || (j > 0 && i <= rn[j - 1].node)) {
            rc = SM_EMALFORMED;
            break;
        }
        const struct gvae_node *node = &m->nodes[i];
        rn[j].node = i;
        rn[j].at = r.p;
        if (r.left / KB < node->n_parents) {
            rc = SM_EMALFORMED;
            break;
        }
        for (size_t q = 0; q < node->n_parents && rc == SM_OK; q++) {
            rc = get_flags(&r, paff + q * K, K) == 0 ? SM_OK : SM_EMALFORMED;
        }
        if (rc != SM_OK) {
            break;
        }
        rn[j].floats = parent_floats(node, paff, K, S);
        if (r.left / 4 < rn[j].floats) {
            rc = SM_EMALFORMED;
            break;
        }
        r.p += 4 * rn[j].floats;
        r.left -= 4 * rn[j].floats;
        most = rn[j].floats > most ? rn[j].floats : most;
        rn[j].n_aff = gvae__node_affected(sw, i, iv, K, paff, pos);
        size += 4 + KB + 4 * rn[j].n_aff * S * node->ny;
    }
    if (rc == SM_OK && r.left != 0) {
        rc = SM_EMALFORMED;
    }
    if (rc != SM_OK) {
        goto done;
    }
    /* Pass 2: compute and encode. */
    rows = sm_malloc((most + 1) * sizeof *rows);
    out = sm_malloc(size);
    if (rows == NULL || out == NULL) {
        rc = SM_ENOMEM;
        goto done;
    }
    struct wcur w = {out};
    memcpy(w.p, "SMPR", 4);
    w.p += 4;
    put_u16(&w, GVAE_PASS_FORMAT);
    put_u16(&w, 0);
    put_u64(&w, m->graph_version);
    put_u32(&w, h.pass);
    put_u32(&w, h.level);
    put_u32(&w, (uint32_t)S);
    put_u32(&w, (uint32_t)K);
    put_u32(&w, (uint32_t)N);
    for (size_t j = 0; j < N && rc == SM_OK; j++) {
        size_t i = rn[j].node;
        const struct gvae_node *node = &m->nodes[i];
        struct gvae_nstate *st = &sw->ns[i];
        struct rcur nr = {rn[j].at, SIZE_MAX};
        for (size_t q = 0; q < node->n_parents; q++) {
            get_flags(&nr, paff + q * K, K);
        }
        get_floats(&nr, rows, rn[j].floats);
        size_t at = 0;
        for (size_t g = 0; g < node->n_pg; g++) {
            size_t q = gvae__pg_parent(node, g);
            size_t width = node->pg[g].width;
            for (size_t k = 0; k < K; k++) {
                struct gvae_pview *v = &pv[g * K + k];
                *v = (struct gvae_pview){NULL, 0};
                if (q != SIZE_MAX && paff[q * K + k]) {
                    *v = (struct gvae_pview){rows + at, width};
                    at += S * width;
                }
            }
        }
        sm_free(st->pos);
        st->pos = sm_malloc(K * sizeof *st->pos);
        if (st->pos == NULL) {
            rc = SM_ENOMEM;
            break;
        }
        rc = gvae__node_pass(sw, i, iv, K, S, paff, pv);
        if (rc != SM_OK) {
            break;
        }
        SM_ASSERT(st->n_aff == rn[j].n_aff);
        put_u32(&w, (uint32_t)i);
        put_flags(&w, st->pos, K);
        put_floats(&w, st->cf, st->n_aff * S * node->ny);
        /* the rows are in the reply: keep no pass state */
        sm_free(st->cf);
        st->cf = NULL;
    }
    if (rc == SM_OK) {
        SM_ASSERT((size_t)(w.p - out) == size);
        *rep = out;
        *rep_len = size;
        out = NULL;
    }
done:
    sm_free(iv);
    sm_free(rn);
    sm_free(paff);
    sm_free(pos);
    sm_free(pv);
    sm_free(rows);
    sm_free(out);
    return rc;
}
