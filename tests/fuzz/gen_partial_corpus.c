/* Writes the seed corpus of fuzz_partial_decode: real partial windows of
 * the workload of partial_fixture.h (seed 1, a few requests per window so
 * the inputs stay small), split across PW_PARTS aggregators, plus a merged
 * one, a straddling window's part, one without QoS, and two refused inputs.
 *
 * Usage: gen_partial_corpus DIR   (tests/fuzz/corpus/partial_decode) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/err.h"
#include "cbn/cbn.h"
#include "tests/fuzz/partial_fixture.h"

#define MAX_PARTIALS 16

struct list
{
    struct cbn_partial *p[MAX_PARTIALS];
    size_t n;
};

static void keep(void *arg, struct cbn_partial *p)
{
    struct list *l = arg;
    SM_ASSERT(l->n < MAX_PARTIALS);
    l->p[l->n++] = p;
}

static void save(const char *dir, const char *name, const uint8_t *b, size_t n)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(b, 1, n, f) != n || fclose(f) != 0) {
        fprintf(stderr, "gen_partial_corpus: cannot write %s\n", path);
        exit(1);
    }
    printf("%s: %zu bytes\n", name, n);
}

static void save_partial(const char *dir,
                         const char *name,
                         const struct cbn_partial *p)
{
    uint8_t *b;
    size_t n;
    SM_ASSERT(cbn_partial_encode(p, &b, &n) == SM_OK);
    save(dir, name, b, n);
    sm_free(b);
}

/* Runs two phases of seed @seed over PW_PARTS aggregators of config @c. */
static void run(struct cbn_agg_config c,
                uint64_t seed,
                struct list parts[PW_PARTS])
{
    struct pw w;
    pw_init(&w, seed, 3);
    struct cbn_agg *aggs[PW_PARTS];
    for (int i = 0; i < PW_PARTS; i++) {
        c.hash_seed = (uint64_t)i + 1;
        SM_ASSERT(cbn_agg_new(&c, &aggs[i]) == SM_OK);
    }
    for (int k = 0; k < 2; k++) {
        SM_ASSERT(pw_feed(&w, k, NULL, 0, aggs) == SM_OK);
        for (int i = 0; i < PW_PARTS; i++) {
            SM_ASSERT(cbn_agg_close_ready_partial(aggs[i], keep, &parts[i]) ==
                      SM_OK);
        }
    }
    for (int i = 0; i < PW_PARTS; i++) {
        SM_ASSERT(cbn_agg_flush_partial(aggs[i], keep, &parts[i]) == SM_OK);
        cbn_agg_free(aggs[i]);
    }
    pw_free(&w);
}

static void free_all(struct list parts[PW_PARTS])
{
    for (int i = 0; i < PW_PARTS; i++) {
        for (size_t k = 0; k < parts[i].n; k++) {
            cbn_partial_free(parts[i].p[k]);
        }
    }
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: gen_partial_corpus DIR\n");
        return 2;
    }
    const char *dir = argv[1];
    struct list parts[PW_PARTS];
    memset(parts, 0, sizeof parts);
    run(pw_config(0), 1, parts);
    for (int i = 0; i < PW_PARTS; i++) {
        SM_ASSERT(parts[i].n >= 2);
        char name[32];
        snprintf(name, sizeof name, "part%d-w0", i);
        save_partial(dir, name, parts[i].p[0]);
    }
    /* Window 1 merged from all parts. */
    for (int i = 1; i < PW_PARTS; i++) {
        SM_ASSERT(cbn_partial_merge(parts[0].p[1], parts[i].p[1]) == SM_OK);
    }
    save_partial(dir, "merged-w1", parts[0].p[1]);
    /* The first part with the straddling window (requests of window 1
     * ending in window 2). */
    int straddle = 0;
    for (int i = 0; i < PW_PARTS && !straddle; i++) {
        if (parts[i].n > 2) {
            save_partial(dir, "straddle", parts[i].p[2]);
            straddle = 1;
        }
    }
    SM_ASSERT(straddle);
    /* Refused: truncated, and an unknown version. */
    uint8_t *b;
    size_t n;
    SM_ASSERT(cbn_partial_encode(parts[1].p[0], &b, &n) == SM_OK);
    save(dir, "truncated", b, n - 1);
    b[3] = 2;
    save(dir, "bad-version", b, n);
    sm_free(b);
    free_all(parts);

    struct cbn_agg_config c = pw_config(0);
    c.qos_service = NULL;
    memset(parts, 0, sizeof parts);
    run(c, 1, parts);
    save_partial(dir, "no-qos", parts[2].p[0]);
    free_all(parts);
    return 0;
}
