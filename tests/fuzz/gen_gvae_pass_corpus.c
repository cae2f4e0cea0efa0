/* Writes real pass requests for fuzz_gvae_pass's corpus: diagnoses the
 * fixture's window (gvae_pass_fixture.h) in every abduction mode with its
 * nodes spread over two owners, serving each request with a pass server,
 * and saves the first requests of each mode and its largest one.
 *
 * Usage: gen_gvae_pass_corpus DIR   (tests/fuzz/corpus/gvae_pass) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/err.h"
#include "gvae/gvae.h"
#include "tests/fuzz/gvae_pass_fixture.h"

struct gen
{
    const char *dir;
    int mode;
    struct gvae_pass_server *srv;
    unsigned written;
    uint8_t *largest;
    size_t largest_len;
};

static unsigned owner_of(void *arg, size_t node)
{
    (void)arg;
    return 1 + (unsigned)(node % 2);
}

static void save(const struct gen *g,
                 const char *name,
                 const uint8_t *b,
                 size_t len)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s-%s.bin", g->dir,
             gvae_abduction_name((enum gvae_abduction)g->mode), name);
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(b, 1, len, f) != len || fclose(f) != 0) {
        fprintf(stderr, "gen_gvae_pass_corpus: cannot write %s\n", path);
        exit(1);
    }
}

static void exchange(void *arg,
                     size_t n,
                     const unsigned *owners,
                     const uint8_t *const *reqs,
                     const size_t *lens,
                     uint8_t **reps,
                     size_t *rep_lens)
{
    struct gen *g = arg;
    for (size_t k = 0; k < n; k++) {
        struct gvae_pass_header h;
        SM_ASSERT(gvae_pass_peek(reqs[k], lens[k], &h) == SM_OK);
        if (g->written < 3) {
            char name[64];
            snprintf(name, sizeof name, "p%u-l%u-o%u", h.pass, h.level,
                     owners[k]);
            save(g, name, reqs[k], lens[k]);
            g->written++;
        }
        if (lens[k] > g->largest_len) {
            sm_free(g->largest);
            g->largest = sm_malloc(lens[k]);
            SM_ASSERT(g->largest != NULL);
            memcpy(g->largest, reqs[k], lens[k]);
            g->largest_len = lens[k];
        }
        SM_ASSERT(gvae_pass_serve(g->srv, reqs[k], lens[k], &reps[k],
                                  &rep_lens[k]) == SM_OK);
    }
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: gen_gvae_pass_corpus DIR\n");
        return 2;
    }
    struct pass_fix fix;
    pass_fix_init(&fix);
    for (int a = 0; a < PASS_FIX_MODES; a++) {
        struct gen g = {.dir = argv[1], .mode = a};
        char err[SM_ERRMSG_SIZE];
        SM_ASSERT(gvae_pass_server_new(fix.model, &fix.bad.w, NULL,
                                       &fix.sweep[a], &g.srv, err) == SM_OK);
        struct gvae_remote remote = {&g, owner_of, exchange};
        struct gvae_remote_stats st;
        struct gvae_diagnosis *d = NULL;
        SM_ASSERT(gvae_diagnose_remote(fix.model, &fix.bad.w, NULL,
                                       &fix.sweep[a], &remote, &st, &d,
                                       err) == SM_OK);
        printf("%s: %zu culprits, %llu requests, %llu bytes\n",
               gvae_abduction_name((enum gvae_abduction)a), d->n_culprits,
               (unsigned long long)st.requests,
               (unsigned long long)st.bytes_out);
        save(&g, "largest", g.largest, g.largest_len);
        gvae_diagnosis_free(d);
        gvae_pass_server_free(g.srv);
        sm_free(g.largest);
    }
    pass_fix_free(&fix);
    return 0;
}
