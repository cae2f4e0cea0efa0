/* Fuzz target: gvae_shard_import, against the CBN of the synthetic
 * application of tests/unit/gvae/synth.h (24 windows of seed 1, built once).
 * The input is tried as a whole shard and, since random bytes almost never
 * carry a valid CRC-32C, also with its correct checksum appended (the shard
 * header is part of the input), so the decoder behind the checksum is
 * reached. An accepted shard must name a node of the CBN; the last accepted
 * shard of every node is kept, and once every node has one they are
 * assembled: a model that assembles must save and load again.
 *
 * The corpus holds real shards of this CBN (every node of a small model,
 * latent 2, hidden 8, 2 epochs, seed 3). */
#include <stdint.h>
#include <string.h>

#include "base/alloc.h"
#include "base/crc32c.h"
#include "base/err.h"
#include "gvae/gvae.h"
#include "tests/unit/gvae/synth.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { FUZZ_WINDOWS = 24 };

static struct cbn_graph *graph;
static struct gvae_shard *kept[SYN_SERVICES];

/* The CBN every corpus shard was exported for. */
static struct cbn_graph *fuzz_graph(void)
{
    if (graph != NULL) {
        return graph;
    }
    struct sm_rng r;
    sm_rng_seed(&r, 1);
    SM_ASSERT(cbn_graph_new(NULL, &graph) == SM_OK);
    for (uint64_t t = 0; t < FUZZ_WINDOWS; t++) {
        struct syn_window sw;
        syn_make(&sw, &r, t, t % 8 == 7 ? SYN_CPU : SYN_NONE, (int)(t % 4), 0.5,
                 45.0);
        int changed;
        SM_ASSERT(cbn_graph_observe(graph, &sw.w, &changed) == SM_OK);
    }
    return graph;
}

static void try_assemble(void)
{
    for (size_t i = 0; i < SYN_SERVICES; i++) {
        if (kept[i] == NULL) {
            return;
        }
    }
    struct gvae_config c;
    gvae_config_default(&c);
    c.max_epochs = 2;
    c.batch = 32;
    c.threads = 1;
    c.seed = 3;
    c.hidden_min = c.hidden_max = 8;
    c.latent = 2;
    struct gvae_model *m = NULL;
    char err[SM_ERRMSG_SIZE];
    if (gvae_model_assemble(fuzz_graph(), &c,
                            (const struct gvae_shard *const *)kept,
                            SYN_SERVICES, &m, err) != SM_OK) {
        SM_ASSERT(m == NULL && err[0] != '\0');
        return;
    }
    uint8_t *buf;
    size_t len;
    if (gvae_model_save(m, &buf, &len) == SM_OK) {
        struct gvae_model *again = NULL;
        SM_ASSERT(gvae_model_load(buf, len, cbn_graph_version(fuzz_graph()),
                                  &again, err) == SM_OK);
        gvae_model_free(again);
        sm_free(buf);
    }
    gvae_model_free(m);
}

static void check_shard(const uint8_t *buf, size_t len)
{
    struct gvae_shard *s = NULL;
    char err[SM_ERRMSG_SIZE];
    struct cbn_graph *g = fuzz_graph();
    if (gvae_shard_import(buf, len, g, &s, err) != SM_OK) {
        SM_ASSERT(s == NULL && err[0] != '\0');
        return;
    }
    SM_ASSERT(gvae_shard_graph_version(s) == cbn_graph_version(g));
    size_t i = cbn_graph_node_count(g);
    for (size_t k = 0; k < cbn_graph_node_count(g); k++) {
        if (strcmp(cbn_graph_node(g, k)->name, gvae_shard_node_name(s)) == 0) {
            i = k;
        }
    }
    SM_ASSERT(i < SYN_SERVICES);
    gvae_shard_free(kept[i]);
    kept[i] = s;
    try_assemble();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_shard(data, size);
    if (size > (1u << 22)) {
        return 0;
    }
    uint8_t *buf = sm_malloc(size + 4);
    if (buf == NULL) {
        return 0;
    }
    memcpy(buf, data, size);
    /* the checkpoint's CRC covers what follows the 12-byte shard header */
    size_t head = size < 12 ? size : 12;
    uint32_t crc = sm_crc32c(0, data + head, size - head);
    for (int k = 0; k < 4; k++) {
        buf[size + (size_t)k] = (uint8_t)(crc >> (8 * k));
    }
    check_shard(buf, size + 4);
    sm_free(buf);
    return 0;
}
