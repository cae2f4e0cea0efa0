/* Private to transport/: the tp_net vtable and what net.c and fake_net.c
 * share. */
#ifndef SM_TRANSPORT_NET_INTERNAL_H
#define SM_TRANSPORT_NET_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "transport/transport.h"

/* The operations behind the public tp_net_* functions, which document
 * them. The public functions check nothing an implementation must not see:
 * they only dispatch. */
struct tp_net_ops
{
    int (*listen)(struct tp_net *net, const char *addr);
    const char *(*address)(const struct tp_net *net);
    int (*peer_add)(struct tp_net *net, struct tp_net_id id, const char *addr);
    int (*peer_remove)(struct tp_net *net, struct tp_net_id id);
    int (*send)(struct tp_net *net,
                struct tp_net_id to,
                const void *data,
                size_t len,
                uint32_t timeout_ms,
                tp_net_send_cb cb,
                void *arg);
    void (*stats)(const struct tp_net *net, struct tp_net_stats *out);
    void (*close)(struct tp_net *net, tp_net_close_cb cb, void *arg);
};

/* The part every implementation starts with (as its first member, so a
 * struct tp_net * converts to the implementation's struct). */
struct tp_net
{
    const struct tp_net_ops *ops;
    char errmsg[SM_ERRMSG_SIZE]; /* last failure, "context: cause" */
};

/* Parses "tcp://A.B.C.D:PORT" (decimal IPv4, port 0-65535, nothing else)
 * into @ip (host order) and @port. Returns SM_OK or SM_EINVAL. */
int tp__net_addr_parse(const char *addr, uint32_t *ip, uint16_t *port);

/* Writes "tcp://A.B.C.D:PORT" for @ip (host order) and @port into @out. */
void tp__net_addr_format(uint32_t ip, uint16_t port, char out[TP_NET_ADDR_MAX]);

/* Checks that every limit in @cfg is usable (non-zero, min <= max).
 * Returns SM_OK or SM_EINVAL with the reason in @errmsg. */
int tp__net_config_check(const struct tp_net_config *cfg, char *errmsg);

/* Validates the arguments of a send that do not depend on the
 * implementation (timeout, size) and counts an oversized refusal in
 * @stats. Returns SM_OK, SM_EINVAL or SM_ETOOBIG with @net's errmsg set. */
int tp__net_send_check(struct tp_net *net,
                       const struct tp_net_config *cfg,
                       struct tp_net_stats *stats,
                       size_t len,
                       uint32_t timeout_ms);

/* Counts a finished send with @status in @stats. */
void tp__net_count_done(struct tp_net_stats *stats, int status);

#endif /* SM_TRANSPORT_NET_INTERNAL_H */
