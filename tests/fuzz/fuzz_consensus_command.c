/* Fuzz target: cons_cmd_decode, cons_fsm_apply and snapshot round trips. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/err.h"
#include "consensus/consensus.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Snapshots @fsm, restores into a fresh machine and checks the bytes agree. */
static void check_round_trip(const struct cons_fsm *fsm)
{
    uint8_t *a, *b;
    size_t na, nb;
    struct cons_fsm *copy;
    if (cons_fsm_snapshot(fsm, NULL, &a, &na) != SM_OK) {
        return;
    }
    if (cons_fsm_new(&copy) == SM_OK) {
        SM_ASSERT(cons_fsm_restore(copy, a, na) == SM_OK);
        if (cons_fsm_snapshot(copy, NULL, &b, &nb) == SM_OK) {
            SM_ASSERT(na == nb && memcmp(a, b, na) == 0);
            sm_free(b);
        }
        cons_fsm_free(copy);
    }
    sm_free(a);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Anything decoded re-encodes to the same bytes, except a MODEL_COMMIT
     * of the layout before the CBN binding: it re-encodes as the same
     * bytes followed by an all-zero cbn_digest. */
    struct cons_cmd cmd;
    if (cons_cmd_decode(data, size, &cmd) == SM_OK) {
        size_t need, len;
        SM_ASSERT(cons_cmd_encoded_size(&cmd, &need) == SM_OK);
        int unbound = cmd.type == CONS_CMD_MODEL_COMMIT &&
                      need == size + CONS_DIGEST_SIZE;
        SM_ASSERT(need == size || unbound);
        uint8_t *buf = sm_malloc(need);
        if (buf != NULL) {
            SM_ASSERT(cons_cmd_encode(&cmd, buf, need, &len) == SM_OK);
            SM_ASSERT(len == need && memcmp(buf, data, size) == 0);
            for (size_t i = size; i < need; i++) {
                SM_ASSERT(buf[i] == 0);
            }
            sm_free(buf);
        }
        cons_cmd_release(&cmd);
    }

    /* The input is also a sequence of commands, each prefixed by a 16-bit
     * length: apply is total, so every one is counted once. */
    struct cons_fsm *fsm;
    if (cons_fsm_new(&fsm) != SM_OK) {
        return 0;
    }
    size_t off = 0, n = 0;
    while (size - off >= 2) {
        size_t len = (size_t)data[off] | (size_t)data[off + 1] << 8;
        off += 2;
        len = len < size - off ? len : size - off;
        enum cons_apply_result res;
        if (cons_fsm_apply(fsm, data + off, len, &res) == SM_OK) {
            n++;
        }
        off += len;
    }
    struct cons_fsm_stats st;
    cons_fsm_stats(fsm, &st);
    SM_ASSERT(st.applied + st.duplicate + st.stale + st.bad == n);
    check_round_trip(fsm);

    /* Snapshot decoding must reject garbage without harm. */
    struct cons_fsm *other;
    if (cons_fsm_new(&other) == SM_OK) {
        if (cons_fsm_restore(other, data, size) == SM_OK) {
            check_round_trip(other);
        }
        cons_fsm_free(other);
    }
    cons_fsm_free(fsm);
    return 0;
}
