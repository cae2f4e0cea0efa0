/* Private to transport/: the tp_net vtable and what net.c and fake_net.c
 * share. */
#ifndef SM_TRANSPORT_NET_INTERNAL_H
#define SM_TRANSPORT_NET_INTERNAL_H

#include <stdbool.h>
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

/* Checks a peer add before an implementation makes the peer: SM_ECLOSED
 * when the net is @closed, SM_EINVAL for an @addr that does not parse or
 * has port 0, SM_EEXIST when @id is @known already, each with @net's
 * errmsg set. On SM_OK writes @addr's canonical form into @canon. */
int tp__net_peer_add_check(struct tp_net *net,
                           bool closed,
                           bool known,
                           struct tp_net_id id,
                           const char *addr,
                           char canon[TP_NET_ADDR_MAX]);

/* Checks a send before an implementation queues it, in the order both
 * report: SM_ECLOSED when the net is @closed, SM_ENOTFOUND when @to is not
 * @known, SM_EINVAL (timeout) or SM_ETOOBIG (size, counted as oversized in
 * @stats), SM_EAGAIN when the peer has @queued sends of cfg->queue_max
 * already (counted as dropped). Returns SM_OK or the code with @net's
 * errmsg set. */
int tp__net_send_check(struct tp_net *net,
                       const struct tp_net_config *cfg,
                       struct tp_net_stats *stats,
                       bool closed,
                       bool known,
                       unsigned queued,
                       struct tp_net_id to,
                       size_t len,
                       uint32_t timeout_ms);

/* Counts a finished send with @status in @stats. */
void tp__net_count_done(struct tp_net_stats *stats, int status);

#endif /* SM_TRANSPORT_NET_INTERNAL_H */
