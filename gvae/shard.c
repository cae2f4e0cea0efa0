/* Shards: one node's trained CVAE as a byte blob, and a whole model put
 * together from shards trained on different peers (gvae.h, "Shards").
 *
 * A shard is a checkpoint (ckpt.c) of a small model, behind an 8-byte magic
 * and a format version: the node's CBN parents first, as weightless outlines
 * with only their names, members and output groups with statistics, then
 * the node with its parents' indexes 0..k-1. The checkpoint decoder then
 * does all the strict work (checksum, bounded allocation, shapes filled by
 * the weights, each parent input resolved to a parent's output) and gives
 * the node's parent-input statistics as it was trained with them; this file
 * only checks that the small model has that shape and fits the CBN. */
#include <string.h>

#include "base/alloc.h"
#include "gvae/internal.h"

#define SHARD_MAGIC   "SMGVSHRD"
#define SHARD_MAGIC_N 8
#define SHARD_VERSION 1u
#define SHARD_HEADER  (SHARD_MAGIC_N + 4)

struct gvae_shard
{
    struct gvae_model *sub; /* outlines of the parents, then the node */
};

bool gvae_model_node_trained(const struct gvae_model *m, size_t i)
{
    return i < m->n_nodes && m->nodes[i].trained &&
           m->nodes[i].cvae.block != NULL;
}

/* The shard's node: the last of its small model. */
static const struct gvae_node *shard_node(const struct gvae_shard *s)
{
    return &s->sub->nodes[s->sub->n_nodes - 1];
}

const char *gvae_shard_node_name(const struct gvae_shard *s)
{
    return shard_node(s)->name;
}

uint64_t gvae_shard_graph_version(const struct gvae_shard *s)
{
    return s->sub->graph_version;
}

void gvae_shard_free(struct gvae_shard *s)
{
    if (s != NULL) {
        gvae_model_free(s->sub);
        sm_free(s);
    }
}

/* ---- export --------------------------------------------------------------
 */

/* The outline of parent @p for the view: what the checkpoint writer needs to
 * write its name, members and outputs with their statistics, no weights.
 * Borrows @p's strings and arrays. */
static struct gvae_node parent_outline(const struct gvae_node *p)
{
    struct gvae_node s;
    memset(&s, 0, sizeof s);
    s.name = p->name;
    s.n_members = p->n_members;
    s.members = p->members;
    s.n_yg = p->n_yg;
    s.yg = p->yg;
    s.ny = p->ny;
    s.ys = p->ys;
    return s;
}

int gvae_shard_export(const struct gvae_model *m,
                      size_t i,
                      uint8_t **buf,
                      size_t *len)
{
    if (i >= m->n_nodes) {
        return SM_EINVAL;
    }
    const struct gvae_node *node = &m->nodes[i];
    if (node->ny > 0 && !gvae_model_node_trained(m, i)) {
        return SM_ENOTFOUND;
    }
    /* A read-only view borrowing everything from @m: only its two arrays
     * are allocated, and it is never passed to gvae_model_free(). */
    size_t k = node->n_parents;
    struct gvae_model view = {.config = m->config,
                              .graph_version = m->graph_version,
                              .n_nodes = k + 1};
    view.nodes = sm_calloc(k + 1, sizeof *view.nodes);
    size_t *parents = sm_calloc(k + 1, sizeof *parents);
    int rc = view.nodes && parents ? SM_OK : SM_ENOMEM;
    for (size_t j = 0; rc == SM_OK && j < k; j++) {
        view.nodes[j] = parent_outline(&m->nodes[node->parents[j]]);
        parents[j] = j;
    }
    uint8_t *doc = NULL;
    size_t doc_len = 0;
    if (rc == SM_OK) {
        view.nodes[k] = *node;
        view.nodes[k].parents = parents;
        rc = gvae_model_save(&view, &doc, &doc_len);
    }
    uint8_t *out = rc == SM_OK ? sm_malloc(SHARD_HEADER + doc_len) : NULL;
    if (rc == SM_OK && out == NULL) {
        rc = SM_ENOMEM;
    }
    if (rc == SM_OK) {
        memcpy(out, SHARD_MAGIC, SHARD_MAGIC_N);
        for (int b = 0; b < 4; b++) {
            out[SHARD_MAGIC_N + b] = (uint8_t)(SHARD_VERSION >> (8 * b));
        }
        memcpy(out + SHARD_HEADER, doc, doc_len);
        *buf = out;
        *len = SHARD_HEADER + doc_len;
    }
    sm_free(doc);
    sm_free(parents);
    sm_free(view.nodes);
    return rc;
}

/* ---- import --------------------------------------------------------------
 */

/* The index of the CBN node named @name, or SIZE_MAX. By node name, not
 * service: a metanode's name is its members joined. */
static size_t graph_node_index(const struct cbn_graph *g, const char *name)
{
    size_t nn = cbn_graph_node_count(g);
    for (size_t i = 0; i < nn; i++) {
        if (strcmp(cbn_graph_node(g, i)->name, name) == 0) {
            return i;
        }
    }
    return SIZE_MAX;
}

static int same_members(const struct gvae_node *node,
                        const struct cbn_graph_node *gn)
{
    if (node->n_members != gn->n_members) {
        return 0;
    }
    for (size_t k = 0; k < gn->n_members; k++) {
        if (strcmp(node->members[k], gn->members[k]) != 0) {
            return 0;
        }
    }
    return 1;
}

/* Checks that the decoded small model is outlines of the node's CBN parents
 * (in the CBN's order) then the node, as gvae_shard_export() writes it.
 * Returns the node's CBN index, or SIZE_MAX with @errmsg set. */
static size_t check_structure(const struct gvae_model *sub,
                              const struct cbn_graph *g,
                              char *errmsg)
{
    size_t k = sub->n_nodes - 1;
    const struct gvae_node *node = &sub->nodes[k];
    size_t gi = graph_node_index(g, node->name);
    if (gi == SIZE_MAX) {
        sm_errmsg_printf(errmsg, "shard: node %.64s is not in the CBN",
                         node->name);
        return SIZE_MAX;
    }
    const struct cbn_graph_node *gn = cbn_graph_node(g, gi);
    if (!same_members(node, gn) || node->n_parents != k || gn->n_parents != k) {
        sm_errmsg_printf(errmsg,
                         "shard: node %.64s has other members or parents "
                         "than in the CBN",
                         node->name);
        return SIZE_MAX;
    }
    for (size_t j = 0; j < k; j++) {
        const struct gvae_node *st = &sub->nodes[j];
        const char *want = cbn_graph_node(g, gn->parents[j])->name;
        if (node->parents[j] != j || strcmp(st->name, want) != 0 ||
            st->trained || st->n_parents != 0 || st->n_xg != 0 ||
            st->n_pg != 0) {
            sm_errmsg_printf(
                errmsg,
                "shard: parent %zu of node %.64s is not an outline "
                "of %.64s",
                j, node->name, want);
            return SIZE_MAX;
        }
    }
    if (node->ny > 0 && !node->trained) {
        sm_errmsg_printf(errmsg, "shard: node %.64s carries no weights",
                         node->name);
        return SIZE_MAX;
    }
    return gi;
}

int gvae_shard_import(const uint8_t *buf,
                      size_t len,
                      const struct cbn_graph *graph,
                      struct gvae_shard **out,
                      char errmsg[SM_ERRMSG_SIZE])
{
    errmsg[0] = '\0';
    if (len < SHARD_HEADER || memcmp(buf, SHARD_MAGIC, SHARD_MAGIC_N) != 0) {
        sm_errmsg_printf(errmsg, "shard: not a sagemesh model shard");
        return SM_EMALFORMED;
    }
    uint32_t version = 0;
    for (int b = 0; b < 4; b++) {
        version |= (uint32_t)buf[SHARD_MAGIC_N + b] << (8 * b);
    }
    if (version != SHARD_VERSION) {
        sm_errmsg_printf(errmsg, "shard: unsupported format version %u",
                         (unsigned)version);
        return SM_EUNSUPPORTED;
    }
    uint64_t want = cbn_graph_version(graph);
    struct gvae_model *sub = NULL;
    char why[SM_ERRMSG_SIZE];
    int rc = gvae_model_load(buf + SHARD_HEADER, len - SHARD_HEADER, want, &sub,
                             why);
    if (rc != SM_OK) {
        sm_errmsg_printf(errmsg, "shard: %s", why);
        return rc;
    }
    /* gvae_model_load() takes 0 for "any version": check it here too */
    if (sub->graph_version != want) {
        sm_errmsg_printf(
            errmsg, "shard: trained for CBN version %llu, not %llu",
            (unsigned long long)sub->graph_version, (unsigned long long)want);
        gvae_model_free(sub);
        return SM_EINVAL;
    }
    size_t gi = check_structure(sub, graph, errmsg);
    struct gvae_shard *s = gi != SIZE_MAX ? sm_calloc(1, sizeof *s) : NULL;
    if (s == NULL) {
        if (gi != SIZE_MAX) {
            sm_errmsg_printf(errmsg, "shard: out of memory");
        }
        gvae_model_free(sub);
        return gi == SIZE_MAX ? SM_EINVAL : SM_ENOMEM;
    }
    s->sub = sub;
    *out = s;
    return SM_OK;
}

/* ---- assembly ------------------------------------------------------------
 */

/* The first training setting in which @a and @b differ, or NULL. The thread
 * count only changes how fast a model trains, not what it learns. */
static const char *config_diff(const struct gvae_config *a,
                               const struct gvae_config *b)
{
    if (a->latent != b->latent || a->hidden_layers != b->hidden_layers ||
        a->hidden_min != b->hidden_min || a->hidden_max != b->hidden_max) {
        return "network shape";
    }
    if (a->alpha != b->alpha || a->beta != b->beta ||
        a->dropout != b->dropout || a->learning_rate != b->learning_rate ||
        a->weight_decay != b->weight_decay || a->clip_norm != b->clip_norm) {
        return "loss or optimizer";
    }
    if (a->batch != b->batch || a->max_epochs != b->max_epochs ||
        a->patience != b->patience || a->val_fraction != b->val_fraction ||
        a->violation_share != b->violation_share ||
        a->finetune_epochs != b->finetune_epochs) {
        return "schedule";
    }
    return a->seed != b->seed ? "seed" : NULL;
}

static int copy_groups(struct gvae_group **dst,
                       size_t *n_dst,
                       const struct gvae_group *src,
                       size_t n)
{
    *dst = sm_calloc(n ? n : 1, sizeof **dst);
    if (*dst == NULL) {
        return SM_ENOMEM;
    }
    for (size_t g = 0; g < n; g++) {
        const struct gvae_group *s = &src[g];
        *n_dst = g + 1;
        int rc = gvae__group_set(&(*dst)[g], s->kind, s->res, s->service,
                                 s->caller, s->metric, s->peer);
        if (rc != SM_OK) {
            return rc;
        }
        (*dst)[g].offset = s->offset;
    }
    return SM_OK;
}

static struct gvae_stat *copy_stats(const struct gvae_stat *src, size_t n)
{
    struct gvae_stat *d = sm_malloc((n ? n : 1) * sizeof *d);
    if (d != NULL && n > 0) {
        memcpy(d, src, n * sizeof *d);
    }
    return d;
}

/* Fills node @i of @m from the shard's node @s, with names, members and
 * parents from the CBN node @gn. SM_OK or SM_ENOMEM. */
static int copy_node(struct gvae_model *m,
                     size_t i,
                     const struct gvae_node *s,
                     const struct cbn_graph_node *gn)
{
    struct gvae_node *d = &m->nodes[i];
    d->name = gvae__strdup(s->name);
    d->members = sm_calloc(s->n_members, sizeof *d->members);
    d->parents = sm_calloc(gn->n_parents + 1, sizeof *d->parents);
    if (!d->name || !d->members || !d->parents) {
        return SM_ENOMEM;
    }
    for (size_t k = 0; k < s->n_members; k++) {
        d->members[k] = gvae__strdup(s->members[k]);
        d->n_members = k + 1;
        if (d->members[k] == NULL) {
            return SM_ENOMEM;
        }
    }
    d->n_parents = gn->n_parents;
    memcpy(d->parents, gn->parents, gn->n_parents * sizeof *d->parents);
    d->nx = s->nx;
    d->ny = s->ny;
    d->np = s->np;
    if (copy_groups(&d->xg, &d->n_xg, s->xg, s->n_xg) ||
        copy_groups(&d->yg, &d->n_yg, s->yg, s->n_yg) ||
        copy_groups(&d->pg, &d->n_pg, s->pg, s->n_pg)) {
        return SM_ENOMEM;
    }
    d->xs = copy_stats(s->xs, s->nx);
    d->ys = copy_stats(s->ys, s->ny);
    d->ps = sm_calloc(s->np + 1, sizeof *d->ps);
    if (!d->xs || !d->ys || !d->ps) {
        return SM_ENOMEM;
    }
    if (!s->trained) {
        return SM_OK;
    }
    /* The weights overwrite the initialisation: any stream will do. */
    struct sm_rng rng;
    sm_rng_seed(&rng, 0);
    if (gvae__cvae_create(&d->cvae, d, &m->config, &rng) != SM_OK) {
        return SM_ENOMEM;
    }
    gvae__cvae_copy(&d->cvae, &s->cvae);
    d->trained = 1;
    return SM_OK;
}

/* Resolves node @i's parent inputs to its parents' outputs in @m and checks
 * that their statistics are the ones the node was trained with (@s, the
 * shard's node). SM_OK or SM_EINVAL with @errmsg set. */
static int link_parents(struct gvae_model *m,
                        size_t i,
                        const struct gvae_node *s,
                        char *errmsg)
{
    struct gvae_node *d = &m->nodes[i];
    for (size_t g = 0; g < d->n_pg; g++) {
        struct gvae_group *pg = &d->pg[g];
        int found = 0;
        for (size_t k = 0; k < d->n_parents && !found; k++) {
            const struct gvae_node *src = &m->nodes[d->parents[k]];
            for (size_t q = 0; q < src->n_yg && !found; q++) {
                if (strcmp(src->yg[q].key, pg->key) == 0 &&
                    src->yg[q].width == pg->width) {
                    pg->src_node = d->parents[k];
                    pg->src_offset = src->yg[q].offset;
                    found = 1;
                }
            }
        }
        if (!found) {
            sm_errmsg_printf(errmsg,
                             "gvae assemble: node %.64s reads %.64s, which "
                             "no parent's shard outputs",
                             d->name, pg->key);
            return SM_EINVAL;
        }
    }
    gvae__node_parent_stats(m, i);
    if (d->np > 0 && memcmp(d->ps, s->ps, d->np * sizeof *d->ps) != 0) {
        sm_errmsg_printf(errmsg,
                         "gvae assemble: node %.64s was trained with other "
                         "statistics of its parents' outputs than their "
                         "shards carry (other windows?)",
                         d->name);
        return SM_EINVAL;
    }
    return SM_OK;
}

/* Maps every CBN node to its shard in @by_node; SM_OK, or SM_EINVAL /
 * SM_ENOTFOUND with @errmsg naming the node. */
static int match_shards(const struct cbn_graph *graph,
                        const struct gvae_config *config,
                        const struct gvae_shard *const *shards,
                        size_t n,
                        const struct gvae_shard **by_node,
                        char *errmsg)
{
    size_t nn = cbn_graph_node_count(graph);
    uint64_t version = cbn_graph_version(graph);
    for (size_t k = 0; k < n; k++) {
        const struct gvae_shard *s = shards[k];
        const char *name = gvae_shard_node_name(s);
        size_t gi = graph_node_index(graph, name);
        const char *diff = config_diff(&s->sub->config, config);
        const char *why = s->sub->graph_version != version ? "another CBN"
                          : gi == SIZE_MAX      ? "a node not in the CBN"
                          : by_node[gi] != NULL ? "a node with two shards"
                                                : NULL;
        if (why != NULL || diff != NULL) {
            sm_errmsg_printf(errmsg,
                             "gvae assemble: shard of %.64s is for %s%s", name,
                             why ? why : "another config: ", why ? "" : diff);
            return SM_EINVAL;
        }
        by_node[gi] = s;
    }
    for (size_t i = 0; i < nn; i++) {
        if (by_node[i] == NULL) {
            sm_errmsg_printf(errmsg, "gvae assemble: no shard for node %.64s",
                             cbn_graph_node(graph, i)->name);
            return SM_ENOTFOUND;
        }
    }
    return SM_OK;
}

int gvae_model_assemble(const struct cbn_graph *graph,
                        const struct gvae_config *config,
                        const struct gvae_shard *const *shards,
                        size_t n,
                        struct gvae_model **out,
                        char errmsg[SM_ERRMSG_SIZE])
{
    errmsg[0] = '\0';
    int rc = gvae__config_check(config, errmsg);
    if (rc != SM_OK) {
        return rc;
    }
    size_t nn = cbn_graph_node_count(graph);
    if (nn == 0) {
        sm_errmsg_printf(errmsg, "gvae assemble: the CBN is empty");
        return SM_EINVAL;
    }
    const struct gvae_shard **by_node = sm_calloc(nn, sizeof *by_node);
    struct gvae_model *m = sm_calloc(1, sizeof *m);
    rc = by_node && m ? SM_OK : SM_ENOMEM;
    if (rc == SM_OK) {
        rc = match_shards(graph, config, shards, n, by_node, errmsg);
    }
    if (rc == SM_OK) {
        m->config = *config;
        m->graph_version = cbn_graph_version(graph);
        m->nodes = sm_calloc(nn, sizeof *m->nodes);
        m->n_nodes = m->nodes ? nn : 0;
        rc = m->nodes ? SM_OK : SM_ENOMEM;
    }
    /* In CBN order: parents come first, so their outputs are there. */
    for (size_t i = 0; rc == SM_OK && i < nn; i++) {
        const struct gvae_node *s = shard_node(by_node[i]);
        rc = copy_node(m, i, s, cbn_graph_node(graph, i));
        if (rc == SM_OK) {
            rc = link_parents(m, i, s, errmsg);
        }
    }
    if (rc == SM_ENOMEM && errmsg[0] == '\0') {
        sm_errmsg_printf(errmsg, "gvae assemble: out of memory");
    }
    sm_free(by_node);
    if (rc != SM_OK) {
        gvae_model_free(m);
        return rc;
    }
    *out = m;
    return SM_OK;
}
