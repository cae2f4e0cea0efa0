/* The CLI's side of talking to a peer: a blocking HTTP client and the OTLP
 * JSON writer used by `sagemesh import` (node-private). */
#ifndef SM_NODE_CLIENT_H
#define SM_NODE_CLIENT_H

#include <stddef.h>
#include <stdio.h>

#include "base/err.h"
#include "cbn/cbn.h"
#include "transport/transport.h"

/* A response: status code and body (NUL-terminated, malloc()ed, free it). */
struct node_client_response
{
    int status;
    char *body;
    size_t len;
};

/* Sends one request to @peer ("HOST:PORT", numeric) and reads the whole
 * response, all within @timeout_s seconds. @body may be NULL when @len is 0.
 * Returns SM_OK with @out filled (any HTTP status); SM_EINVAL for a bad
 * address; SM_ETIMEDOUT; SM_EIO (refused, reset: @errmsg says which);
 * SM_EMALFORMED for a response that is not HTTP/1.x; SM_ENOMEM. */
int node_client_request(const char *peer,
                        const char *method,
                        const char *path,
                        const char *content_type,
                        const void *body,
                        size_t len,
                        double timeout_s,
                        struct node_client_response *out,
                        char errmsg[SM_ERRMSG_SIZE]);

/* As node_client_request(), with an Authorization header (may be NULL). */
int node_client_request_auth(const char *peer,
                             const char *method,
                             const char *path,
                             const char *content_type,
                             const char *authorization,
                             const void *body,
                             size_t len,
                             double timeout_s,
                             struct node_client_response *out,
                             char errmsg[SM_ERRMSG_SIZE]);

/* Writes @n spans as one OTLP/HTTP JSON ExportTraceServiceRequest into a
 * new malloc()ed, NUL-terminated buffer (*@out, length *@len), grouped by
 * service, with the operation as http.route and a CLIENT span's peer as
 * peer.service, so that the peer derives exactly the same fields. Returns
 * SM_OK or SM_ENOMEM. */
int node_otlp_write(const struct cbn_span *spans,
                    size_t n,
                    char **out,
                    size_t *len);

/* Reads the cluster secret from @path into @secret. Returns SM_OK, or an
 * error with @errmsg saying why (unreadable, not a secret). Warns on @err
 * (may be NULL) when the file is readable by group or others. */
int node_read_secret(const char *path,
                     struct tp_secret *secret,
                     FILE *err,
                     char errmsg[SM_ERRMSG_SIZE]);

/* `sagemesh flush`: closes the peer's open windows now. */
int node__cmd_flush(int argc, char **argv, FILE *out, FILE *err);

/* `sagemesh import --jaeger FILE`. */
int node__cmd_import(int argc, char **argv, FILE *out, FILE *err);

#endif /* SM_NODE_CLIENT_H */
