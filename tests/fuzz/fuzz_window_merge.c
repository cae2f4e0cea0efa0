/* Fuzz target: TP_MSG_PARTIAL bodies (window parts, acknowledgements,
 * marks, flushes) into a window merge, as the leader and as a follower.
 * Byte 0 chooses the role; the rest is the body. A part that decodes is
 * merged and, the window being complete, delivered. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "base/err.h"
#include "base/log.h"
#include "fuzz_util.h"
#include "node/window_merge.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int f_send(void *arg, const char *peer, const void *d, size_t len)
{
    (void)arg, (void)peer, (void)d, (void)len;
    return SM_OK;
}

static void f_deliver(void *arg, struct cbn_window *w)
{
    (void)arg;
    cbn_window_free(w);
}

static void f_flush(void *arg)
{
    (void)arg;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    fuzz_quiet();
    struct node_wmerge *wm;
    struct node_wmerge_config cfg = {0};
    struct node_wmerge_env env = {NULL, f_send, f_deliver, f_flush};
    if (node_wmerge_new(&cfg, &env, &wm) != SM_OK) {
        return 0;
    }
    const char *up[] = {"a", "b"};
    struct node_wmerge_view v = {
        .self = "a",
        .leader = (data[0] & 1) ? "a" : "b",
        .is_leader = data[0] & 1,
        .n_up = 2,
        .up = up,
    };
    node_wmerge_recv(wm, &v, "b", data + 1, size - 1, 1000);
    node_wmerge_tick(wm, &v, 1000);
    node_wmerge_flush(wm, &v, 2000);
    node_wmerge_free(wm);
    return 0;
}
