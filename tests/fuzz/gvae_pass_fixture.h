/* The model, window and sweeps that fuzz_gvae_pass serves and its corpus
 * was made for (gen_gvae_pass_corpus.c): the synthetic application of
 * tests/unit/gvae/synth.h, 24 windows of seed 1, a small model (latent 2,
 * hidden 8, 2 epochs, one thread, seed 3) and a window with a strong CPU
 * fault on b-mid, diagnosed with 4 samples in each abduction mode. */
#ifndef SM_TEST_FUZZ_GVAE_PASS_FIXTURE_H
#define SM_TEST_FUZZ_GVAE_PASS_FIXTURE_H

#include "base/err.h"
#include "gvae/gvae.h"
#include "tests/unit/gvae/synth.h"

enum { PASS_FIX_WINDOWS = 24, PASS_FIX_MODES = 3 };

struct pass_fix
{
    struct cbn_graph *graph;
    struct syn_window train[PASS_FIX_WINDOWS];
    const struct cbn_window *w[PASS_FIX_WINDOWS];
    struct syn_window bad; /* the diagnosed window */
    struct gvae_model *model;
    struct gvae_sweep_config sweep[PASS_FIX_MODES]; /* by enum gvae_abduction */
};

/* Builds everything; aborts when the library refuses (a broken fixture). */
static inline void pass_fix_init(struct pass_fix *f)
{
    struct sm_rng r;
    sm_rng_seed(&r, 1);
    SM_ASSERT(cbn_graph_new(NULL, &f->graph) == SM_OK);
    for (uint64_t t = 0; t < PASS_FIX_WINDOWS; t++) {
        syn_make(&f->train[t], &r, t, t % 8 == 7 ? SYN_CPU : SYN_NONE,
                 (int)(t % 4), 0.5, 45.0);
        f->w[t] = &f->train[t].w;
        int changed;
        SM_ASSERT(cbn_graph_observe(f->graph, f->w[t], &changed) == SM_OK);
    }
    syn_make(&f->bad, &r, PASS_FIX_WINDOWS, SYN_CPU, 1, 1.0, 45.0);
    struct gvae_config c;
    gvae_config_default(&c);
    c.max_epochs = 2;
    c.batch = 32;
    c.threads = 1;
    c.seed = 3;
    c.hidden_min = c.hidden_max = 8;
    c.latent = 2;
    char err[SM_ERRMSG_SIZE];
    SM_ASSERT(gvae_train(&c, f->graph, f->w, PASS_FIX_WINDOWS, 0, NULL,
                         GVAE_RETRAIN_FULL, &f->model, NULL, err) == SM_OK);
    for (int a = 0; a < PASS_FIX_MODES; a++) {
        struct gvae_sweep_config *s = &f->sweep[a];
        gvae_sweep_config_default(s);
        s->qos_service = "a-front";
        s->qos_target_ms = 45.0;
        s->samples = 4;
        s->abduction = (enum gvae_abduction)a;
    }
}

static inline void pass_fix_free(struct pass_fix *f)
{
    gvae_model_free(f->model);
    cbn_graph_free(f->graph);
}

#endif /* SM_TEST_FUZZ_GVAE_PASS_FIXTURE_H */
