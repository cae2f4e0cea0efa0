/* The Causal Bayesian Network structure: services, call cycles merged into
 * metanodes (Tarjan's strongly connected components), a stable topological
 * order with callees first, network link nodes, ageing and versioning.
 *
 * Every observed window updates when each service and edge was last seen,
 * then the structure is rebuilt from what is still alive and compared with
 * the previous one through a canonical byte signature: the version moves
 * only if the signature changed. Rebuilding is linear in the graph size,
 * which is small (hundreds of services), once per window. */
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/err.h"
#include "cbn/cbn.h"
#include "cbn/internal.h"

struct seen_service
{
    uint64_t last_seen;
    uint32_t real; /* seen as a service, not only as an inferred callee */
};

struct edge_ids
{
    uint32_t caller, callee;
};

struct seen_edge
{
    uint64_t last_seen;
    uint32_t network; /* had paired calls: a network delay is measured */
};

/* One built structure; all arrays owned. */
struct structure
{
    size_t n_nodes;
    struct cbn_graph_node *nodes;
    size_t n_links;
    struct cbn_graph_link *links;
    char **strings; /* every string allocated for names */
    size_t n_strings;
    void **blocks; /* every other array, for freeing */
    size_t n_blocks;
    uint8_t *signature;
    size_t signature_len;
};

struct cbn_graph
{
    unsigned age_out;
    uint64_t tick;
    uint64_t version;
    struct cbn__strtab names;
    struct cbn__hmap services; /* uint32 -> struct seen_service */
    struct cbn__hmap edges;    /* struct edge_ids -> struct seen_edge */
    struct structure current;
};

static void structure_free(struct structure *s)
{
    for (size_t i = 0; i < s->n_strings; i++) {
        sm_free(s->strings[i]);
    }
    for (size_t i = 0; i < s->n_blocks; i++) {
        sm_free(s->blocks[i]);
    }
    sm_free(s->strings);
    sm_free(s->blocks);
    sm_free(s->nodes);
    sm_free(s->links);
    sm_free(s->signature);
    memset(s, 0, sizeof *s);
}

int cbn_graph_new(const struct cbn_graph_config *config, struct cbn_graph **out)
{
    struct cbn_graph *g = sm_calloc(1, sizeof *g);
    if (g == NULL) {
        return SM_ENOMEM;
    }
    g->age_out = config != NULL && config->age_out_windows
                     ? config->age_out_windows
                     : 20;
    cbn__strtab_init(&g->names, 0x9a7b);
    cbn__hmap_init(&g->services, sizeof(uint32_t), sizeof(struct seen_service),
                   0x51);
    cbn__hmap_init(&g->edges, sizeof(struct edge_ids), sizeof(struct seen_edge),
                   0x52);
    *out = g;
    return SM_OK;
}

void cbn_graph_free(struct cbn_graph *graph)
{
    if (graph == NULL) {
        return;
    }
    structure_free(&graph->current);
    cbn__strtab_free(&graph->names);
    cbn__hmap_free(&graph->services);
    cbn__hmap_free(&graph->edges);
    sm_free(graph);
}

uint64_t cbn_graph_version(const struct cbn_graph *graph)
{
    return graph->version;
}

size_t cbn_graph_node_count(const struct cbn_graph *graph)
{
    return graph->current.n_nodes;
}

const struct cbn_graph_node *cbn_graph_node(const struct cbn_graph *graph,
                                            size_t i)
{
    SM_ASSERT(i < graph->current.n_nodes);
    return &graph->current.nodes[i];
}

size_t cbn_graph_link_count(const struct cbn_graph *graph)
{
    return graph->current.n_links;
}

const struct cbn_graph_link *cbn_graph_link(const struct cbn_graph *graph,
                                            size_t i)
{
    SM_ASSERT(i < graph->current.n_links);
    return &graph->current.links[i];
}

size_t cbn_graph_find(const struct cbn_graph *graph, const char *service)
{
    const struct structure *s = &graph->current;
    for (size_t i = 0; i < s->n_nodes; i++) {
        for (size_t k = 0; k < s->nodes[i].n_members; k++) {
            if (strcmp(s->nodes[i].members[k], service) == 0) {
                return i;
            }
        }
    }
    return SIZE_MAX;
}

/* ---- Building ------------------------------------------------------------ */

/* Scratch state of one rebuild; everything it allocates is tracked so that
 * a failure frees it all. */
struct build
{
    struct structure *out;
    int failed;
    size_t n;            /* alive services */
    struct named *alive; /* sorted by name; a service's index is its rank */
    uint32_t *inferred;  /* per service */
    size_t n_edges;
    struct edge_ids *edges; /* between alive services, as service indexes,
                               sorted by (caller, callee) */
    uint32_t *network;      /* per edge */
    size_t *first_edge;     /* per service: its first outgoing edge, n+1 */
    /* Tarjan */
    size_t *index, *low, *stack, *comp;
    uint8_t *on_stack;
    size_t next_index, sp, n_comp;
};

static void *track(struct build *b, void *p)
{
    if (p == NULL) {
        b->failed = 1;
        return NULL;
    }
    struct structure *s = b->out;
    void **grown = sm_reallocarray(s->blocks, s->n_blocks + 1, sizeof *grown);
    if (grown == NULL) {
        sm_free(p);
        b->failed = 1;
        return NULL;
    }
    s->blocks = grown;
    s->blocks[s->n_blocks++] = p;
    return p;
}

static void *scratch(struct build *b, size_t n, size_t size)
{
    return b->failed ? NULL : track(b, sm_calloc(n ? n : 1, size));
}

static char *keep_string(struct build *b, char *p)
{
    if (p == NULL || b->failed) {
        sm_free(p);
        b->failed = 1;
        return NULL;
    }
    struct structure *s = b->out;
    char **grown = sm_reallocarray(s->strings, s->n_strings + 1, sizeof *grown);
    if (grown == NULL) {
        sm_free(p);
        b->failed = 1;
        return NULL;
    }
    s->strings = grown;
    s->strings[s->n_strings++] = p;
    return p;
}

/* An alive service: its name and id, sorted by name. */
struct named
{
    const char *name;
    uint32_t id;
};

static int cmp_named(const void *a, const void *b)
{
    return strcmp(((const struct named *)a)->name,
                  ((const struct named *)b)->name);
}

static int cmp_edge_ids(const void *a, const void *b)
{
    const struct edge_ids *x = a, *y = b;
    if (x->caller != y->caller) {
        return x->caller < y->caller ? -1 : 1;
    }
    return x->callee < y->callee ? -1 : (x->callee > y->callee);
}

/* Recursive Tarjan; depth is bounded by the number of services. */
static void strongconnect(struct build *b, size_t v)
{
    b->index[v] = b->low[v] = ++b->next_index;
    b->stack[b->sp++] = v;
    b->on_stack[v] = 1;
    for (size_t e = b->first_edge[v]; e < b->first_edge[v + 1]; e++) {
        size_t w = b->edges[e].callee;
        if (b->index[w] == 0) {
            strongconnect(b, w);
            b->low[v] = b->low[w] < b->low[v] ? b->low[w] : b->low[v];
        } else if (b->on_stack[w]) {
            b->low[v] = b->index[w] < b->low[v] ? b->index[w] : b->low[v];
        }
    }
    if (b->low[v] == b->index[v]) {
        size_t w;
        do {
            w = b->stack[--b->sp];
            b->on_stack[w] = 0;
            b->comp[w] = b->n_comp;
        } while (w != v);
        b->n_comp++;
    }
}

/* Appends to a growable signature; a failure latches b->failed. */
static void sig_put(struct build *b, const void *p, size_t n)
{
    struct structure *s = b->out;
    if (b->failed) {
        return;
    }
    uint8_t *grown = sm_realloc(s->signature, s->signature_len + n);
    if (grown == NULL) {
        b->failed = 1;
        return;
    }
    memcpy(grown + s->signature_len, p, n);
    s->signature = grown;
    s->signature_len += n;
}

static void sig_str(struct build *b, const char *str)
{
    sig_put(b, str, strlen(str) + 1);
}

static void sig_size(struct build *b, size_t v)
{
    uint64_t u = v;
    sig_put(b, &u, sizeof u);
}

static void collect_alive(struct cbn_graph *g, struct build *b)
{
    b->alive = scratch(b, g->services.count, sizeof *b->alive);
    b->inferred = scratch(b, g->services.count, sizeof *b->inferred);
    if (b->failed) {
        return;
    }
    for (size_t i = 0; i < g->services.cap; i++) {
        if (cbn__hmap_slot_used(&g->services, i)) {
            const struct seen_service *s = cbn__hmap_slot_val(&g->services, i);
            if (g->tick - s->last_seen < g->age_out) {
                uint32_t id = *(uint32_t *)cbn__hmap_slot_key(&g->services, i);
                b->alive[b->n++] =
                    (struct named){cbn__strtab_str(&g->names, id), id};
            }
        }
    }
    qsort(b->alive, b->n, sizeof *b->alive, cmp_named);
    for (size_t i = 0; i < b->n; i++) {
        const struct seen_service *s =
            cbn__hmap_find(&g->services, &b->alive[i].id);
        b->inferred[i] = !s->real;
    }
    b->edges = scratch(b, g->edges.count, sizeof *b->edges);
    b->network = scratch(b, g->edges.count, sizeof *b->network);
    b->first_edge = scratch(b, b->n + 1, sizeof *b->first_edge);
    if (b->failed) {
        return;
    }
    for (size_t i = 0; i < g->edges.cap; i++) {
        if (!cbn__hmap_slot_used(&g->edges, i)) {
            continue;
        }
        const struct edge_ids *k = cbn__hmap_slot_key(&g->edges, i);
        const struct seen_edge *e = cbn__hmap_slot_val(&g->edges, i);
        if (g->tick - e->last_seen >= g->age_out) {
            continue;
        }
        struct named kc = {cbn__strtab_str(&g->names, k->caller), 0};
        struct named ke = {cbn__strtab_str(&g->names, k->callee), 0};
        const struct named *ci =
            bsearch(&kc, b->alive, b->n, sizeof kc, cmp_named);
        const struct named *ce =
            bsearch(&ke, b->alive, b->n, sizeof ke, cmp_named);
        if (ci == NULL || ce == NULL || ci == ce) {
            continue; /* an endpoint aged out, or a self-call */
        }
        /* The network flag travels in the callee's high bit while
         * sorting; no service index comes near it. */
        b->edges[b->n_edges++] = (struct edge_ids){
            (uint32_t)(ci - b->alive),
            (uint32_t)(ce - b->alive) | (e->network ? 0x80000000u : 0)};
    }
    qsort(b->edges, b->n_edges, sizeof *b->edges, cmp_edge_ids);
    for (size_t e = 0; e < b->n_edges; e++) {
        b->network[e] = (b->edges[e].callee & 0x80000000u) != 0;
        b->edges[e].callee &= 0x7fffffffu;
    }
    size_t e = 0;
    for (size_t v = 0; v <= b->n; v++) {
        while (e < b->n_edges && b->edges[e].caller < v) {
            e++;
        }
        b->first_edge[v] = e;
    }
}

/* Builds the structure of what is alive into @out. */
static int build_structure(struct cbn_graph *g, struct structure *out)
{
    struct build b = {.out = out};
    memset(out, 0, sizeof *out);
    collect_alive(g, &b);
    size_t n = b.n;
    b.index = scratch(&b, n, sizeof(size_t));
    b.low = scratch(&b, n, sizeof(size_t));
    b.stack = scratch(&b, n, sizeof(size_t));
    b.comp = scratch(&b, n, sizeof(size_t));
    b.on_stack = scratch(&b, n, 1);
    if (b.failed) {
        structure_free(out);
        return SM_ENOMEM;
    }
    for (size_t v = 0; v < n; v++) {
        if (b.index[v] == 0) {
            strongconnect(&b, v);
        }
    }
    /* Components: members (services in name order, so each component's
     * member list is sorted), CBN parents (callee components). */
    size_t nc = b.n_comp;
    size_t *size = scratch(&b, nc, sizeof(size_t));
    uint8_t *parent = scratch(&b, nc * nc, 1); /* parent[c * nc + p] */
    size_t *n_parents_left = scratch(&b, nc, sizeof(size_t));
    size_t *order = scratch(&b, nc, sizeof(size_t));
    size_t *position = scratch(&b, nc, sizeof(size_t));
    uint8_t *placed = scratch(&b, nc, 1);
    char **comp_name = scratch(&b, nc, sizeof(char *));
    if (b.failed) {
        structure_free(out);
        return SM_ENOMEM;
    }
    for (size_t v = 0; v < n; v++) {
        size[b.comp[v]]++;
    }
    for (size_t e = 0; e < b.n_edges; e++) {
        size_t c = b.comp[b.edges[e].caller], p = b.comp[b.edges[e].callee];
        if (c != p && !parent[c * nc + p]) {
            parent[c * nc + p] = 1;
            n_parents_left[c]++;
        }
    }
    for (size_t c = 0; c < nc && !b.failed; c++) {
        size_t len = 0;
        for (size_t v = 0; v < n; v++) {
            if (b.comp[v] == c) {
                len += strlen(b.alive[v].name) + 1;
            }
        }
        char *name = keep_string(&b, sm_malloc(len));
        if (name == NULL) {
            break;
        }
        name[0] = '\0';
        for (size_t v = 0; v < n; v++) {
            if (b.comp[v] == c) {
                if (name[0] != '\0') {
                    strcat(name, "+");
                }
                strcat(name, b.alive[v].name);
            }
        }
        comp_name[c] = name;
    }
    if (b.failed) {
        structure_free(out);
        return SM_ENOMEM;
    }
    /* Kahn's algorithm, picking the ready component with the smallest name:
     * callees before callers, and a stable order for equal structures. */
    for (size_t k = 0; k < nc; k++) {
        size_t best = SIZE_MAX;
        for (size_t c = 0; c < nc; c++) {
            if (!placed[c] && n_parents_left[c] == 0 &&
                (best == SIZE_MAX ||
                 strcmp(comp_name[c], comp_name[best]) < 0)) {
                best = c;
            }
        }
        SM_ASSERT(best != SIZE_MAX); /* the condensation is acyclic */
        placed[best] = 1;
        order[k] = best;
        position[best] = k;
        for (size_t c = 0; c < nc; c++) {
            if (parent[c * nc + best]) {
                n_parents_left[c]--;
            }
        }
    }
    /* Links: edges with a measured network delay, sorted by names (edges
     * are already in service-name order of their endpoints once sorted). */
    size_t n_links = 0;
    for (size_t e = 0; e < b.n_edges; e++) {
        n_links += b.network[e] != 0;
    }
    out->nodes = sm_calloc(nc ? nc : 1, sizeof *out->nodes);
    out->links = sm_calloc(n_links ? n_links : 1, sizeof *out->links);
    if (out->nodes == NULL || out->links == NULL) {
        structure_free(out);
        return SM_ENOMEM;
    }
    out->n_nodes = nc;
    size_t at = 0;
    for (size_t e = 0; e < b.n_edges && !b.failed; e++) {
        if (!b.network[e]) {
            continue;
        }
        struct cbn_graph_link *l = &out->links[at++];
        l->caller = b.alive[b.edges[e].caller].name;
        l->callee = b.alive[b.edges[e].callee].name;
        l->caller_node = position[b.comp[b.edges[e].caller]];
        l->callee_node = position[b.comp[b.edges[e].callee]];
    }
    out->n_links = at;
    for (size_t k = 0; k < nc && !b.failed; k++) {
        size_t c = order[k];
        struct cbn_graph_node *node = &out->nodes[k];
        node->name = comp_name[c];
        node->n_members = size[c];
        const char **members = scratch(&b, size[c], sizeof(char *));
        size_t *parents = scratch(&b, nc, sizeof(size_t));
        size_t *links = scratch(&b, at, sizeof(size_t));
        if (b.failed) {
            break;
        }
        size_t m = 0;
        node->inferred = 1;
        for (size_t v = 0; v < n; v++) {
            if (b.comp[v] == c) {
                members[m++] = b.alive[v].name;
                node->inferred &= (int)b.inferred[v];
            }
        }
        /* Names point into the graph's string table, whose strings are
         * never moved or freed before the graph. */
        node->members = members;
        for (size_t p = 0; p < nc; p++) {
            if (parent[c * nc + order[p]]) {
                parents[node->n_parents++] = p;
            }
        }
        node->parents = parents;
        for (size_t l = 0; l < at; l++) {
            if (out->links[l].caller_node == k) {
                links[node->n_links++] = l;
            }
        }
        node->links = links;
    }
    /* Signature: everything the structure says, in order. */
    for (size_t k = 0; k < nc && !b.failed; k++) {
        const struct cbn_graph_node *node = &out->nodes[k];
        sig_str(&b, node->name);
        sig_size(&b, (size_t)node->inferred);
        sig_size(&b, node->n_parents);
        for (size_t p = 0; p < node->n_parents; p++) {
            sig_size(&b, node->parents[p]);
        }
    }
    for (size_t l = 0; l < at && !b.failed; l++) {
        sig_str(&b, out->links[l].caller);
        sig_str(&b, out->links[l].callee);
    }
    if (b.failed) {
        structure_free(out);
        return SM_ENOMEM;
    }
    return SM_OK;
}

/* ---- Observing ----------------------------------------------------------- */

static int touch_service(struct cbn_graph *g, const char *name, int real)
{
    uint32_t id;
    bool inserted;
    if (cbn__strtab_intern(&g->names, name, &id) != SM_OK) {
        return SM_ENOMEM;
    }
    struct seen_service *s = cbn__hmap_get_or_add(&g->services, &id, &inserted);
    if (s == NULL) {
        return SM_ENOMEM;
    }
    s->last_seen = g->tick;
    s->real |= (uint32_t)real;
    return SM_OK;
}

int cbn_graph_observe(struct cbn_graph *graph,
                      const struct cbn_window *w,
                      int *changed)
{
    struct cbn_graph *g = graph;
    *changed = 0;
    /* Reserve first so that the bookkeeping below cannot fail half-way. */
    if (cbn__hmap_reserve(&g->services, w->n_services + 2 * w->n_edges) !=
            SM_OK ||
        cbn__hmap_reserve(&g->edges, w->n_edges) != SM_OK) {
        return SM_ENOMEM;
    }
    for (uint32_t i = 0; i < w->n_services; i++) {
        uint32_t id;
        if (cbn__strtab_intern(&g->names, w->services[i].name, &id) != SM_OK) {
            return SM_ENOMEM;
        }
    }
    for (uint32_t i = 0; i < w->n_edges; i++) {
        uint32_t id;
        if (cbn__strtab_intern(&g->names, w->edges[i].caller, &id) != SM_OK ||
            cbn__strtab_intern(&g->names, w->edges[i].callee, &id) != SM_OK) {
            return SM_ENOMEM;
        }
    }
    /* From here on nothing allocates: names are interned, maps reserved. */
    g->tick++;
    for (uint32_t i = 0; i < w->n_services; i++) {
        SM_ASSERT(touch_service(g, w->services[i].name, 1) == SM_OK);
    }
    for (uint32_t i = 0; i < w->n_edges; i++) {
        const struct cbn_window_edge *e = &w->edges[i];
        SM_ASSERT(touch_service(g, e->caller, 1) == SM_OK);
        SM_ASSERT(touch_service(g, e->callee, !e->inferred) == SM_OK);
        struct edge_ids k = {cbn__strtab_find(&g->names, e->caller),
                             cbn__strtab_find(&g->names, e->callee)};
        bool inserted;
        struct seen_edge *se = cbn__hmap_put(&g->edges, &k, &inserted);
        se->last_seen = g->tick;
        se->network |= e->paired > 0;
    }
    struct structure next;
    if (build_structure(g, &next) != SM_OK) {
        /* The sightings are recorded; the structure is rebuilt on the next
         * window. */
        return SM_ENOMEM;
    }
    if (next.signature_len == g->current.signature_len &&
        (next.signature_len == 0 || memcmp(next.signature, g->current.signature,
                                           next.signature_len) == 0)) {
        structure_free(&next);
        return SM_OK;
    }
    structure_free(&g->current);
    g->current = next;
    g->version++;
    *changed = 1;
    return SM_OK;
}
