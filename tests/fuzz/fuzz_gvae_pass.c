/* Fuzz target: gvae_pass_serve, on pass servers of the fixture in
 * gvae_pass_fixture.h (one per abduction mode; a request goes to the server
 * of the mode its header names, so every mode's decoder and node pass is
 * reached). A request that is accepted must give a reply that starts as
 * the format says, and serving it again must give the same bytes: a
 * server keeps no state between requests that changes its rows.
 *
 * The corpus holds real requests of diagnoses of the fixture's window
 * (gen_gvae_pass_corpus.c). */
#include <stdint.h>
#include <string.h>

#include "base/alloc.h"
#include "base/err.h"
#include "gvae/gvae.h"
#include "tests/fuzz/gvae_pass_fixture.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct pass_fix fix;
static struct gvae_pass_server *servers[PASS_FIX_MODES];

static void fuzz_init(void)
{
    if (servers[0] != NULL) {
        return;
    }
    pass_fix_init(&fix);
    for (int a = 0; a < PASS_FIX_MODES; a++) {
        char err[SM_ERRMSG_SIZE];
        SM_ASSERT(gvae_pass_server_new(fix.model, &fix.bad.w, NULL,
                                       &fix.sweep[a], &servers[a],
                                       err) == SM_OK);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_init();
    struct gvae_pass_header h;
    int peek = gvae_pass_peek(data, size, &h);
    struct gvae_pass_server *srv =
        peek == SM_OK ? servers[h.abduction] : servers[0];
    uint8_t *rep = NULL;
    size_t len = 0;
    int rc = gvae_pass_serve(srv, data, size, &rep, &len);
    if (rc != SM_OK) {
        SM_ASSERT(rep == NULL);
        SM_ASSERT(rc == SM_EMALFORMED || rc == SM_EUNSUPPORTED ||
                  rc == SM_EINVAL || rc == SM_ENOMEM);
        SM_ASSERT(peek == SM_OK || rc == peek);
        return 0;
    }
    SM_ASSERT(peek == SM_OK && len >= 36 && memcmp(rep, "SMPR", 4) == 0);
    uint8_t *again = NULL;
    size_t len2 = 0;
    SM_ASSERT(gvae_pass_serve(srv, data, size, &again, &len2) == SM_OK);
    SM_ASSERT(len2 == len && memcmp(rep, again, len) == 0);
    sm_free(again);
    sm_free(rep);
    return 0;
}
