/* raft_uv over the mesh's message link: the raft_io the peer gives its
 * raft node, with the bridge as raft_uv's transport. */
#include <raft.h>
#include <raft/uv.h>
#include <stdio.h>
#include <string.h>

#include "base/alloc.h"
#include "base/err.h"
#include "consensus/bridge_internal.h"
#include "consensus/consensus.h"

struct cons_uv
{
    struct raft_io io;
    struct raft_uv_transport transport;
    int io_ready;
    void (*close_cb)(void *arg);
    void *close_arg;
};

int cons_uv_new(struct uv_loop_s *loop,
                const char *dir,
                const struct cons_link *link,
                const char *self,
                struct cons_uv **out,
                char *errmsg)
{
    struct cons_uv *u = sm_calloc(1, sizeof *u);
    if (u == NULL) {
        return SM_ENOMEM;
    }
    int rv = cons_bridge_init(&u->transport, loop, link, self, errmsg);
    if (rv != SM_OK) {
        sm_free(u);
        return rv;
    }
    rv = raft_uv_init(&u->io, loop, dir, &u->transport);
    if (rv != 0) {
        sm_errmsg_printf(errmsg, "raft storage in %s: %s (%s)", dir,
                         raft_strerror(rv), u->io.errmsg);
        cons_bridge_free(&u->transport);
        sm_free(u);
        return SM_EIO;
    }
    /* The bridge fails a connect within its own timeout; retry soon. */
    raft_uv_set_connect_retry_delay(&u->io, 200);
    u->io_ready = 1;
    *out = u;
    return SM_OK;
}

struct raft_io *cons_uv_io(struct cons_uv *u)
{
    return &u->io;
}

void cons_uv_recv(struct cons_uv *u,
                  const char *from,
                  const void *data,
                  size_t len)
{
    cons_bridge_recv(&u->transport, from, data, len);
}

void cons_uv_stats(const struct cons_uv *u, struct cons_bridge_stats *out)
{
    cons_bridge_stats(&u->transport, out);
}

void cons_uv_close(struct cons_uv *u, void (*cb)(void *arg), void *arg)
{
    /* raft_close() has already closed the transport (raft_uv closes it
     * itself), so only memory is left. */
    if (u->io_ready) {
        raft_uv_close(&u->io);
    }
    cons_bridge_free(&u->transport);
    sm_free(u);
    if (cb != NULL) {
        cb(arg);
    }
}
