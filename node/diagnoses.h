/* Diagnoses as the peer serves them: their JSON (DESIGN.md section 7,
 * docs/http-api.md) and a durable store of them (node-private).
 *
 * The store keeps one record per diagnosed window in a crash-safe log
 * ("<data_dir>/diagnoses", the same cbn_log as the window log: fdatasync
 * per record, torn tails repaired at open). A record is the diagnosis's
 * 16-hex-digit id, a newline and its JSON document. At open every record
 * is read back, so diagnoses survive restarts; the newest
 * NODE_DIAG_MEMORY_MAX are held in memory to be served.
 *
 * Not thread-safe: the peer's loop thread owns the store. */
#ifndef SM_NODE_DIAGNOSES_H
#define SM_NODE_DIAGNOSES_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "cbn/cbn.h"
#include "gvae/gvae.h"
#include "node/textbuf.h"

#define NODE_DIAG_ID_LEN     16
#define NODE_DIAG_MEMORY_MAX 10000
#define NODE_DIAG_LIST_MAX   1000 /* largest ?limit= */

/* Who diagnosed, and with what: the fields of a diagnosis that are not in
 * the window or the model's answer. Strings are borrowed. */
struct node_diagnosis_meta
{
    const char *qos_service;
    const char *qos_operation; /* NULL: the service's every operation */
    uint64_t model_version;
    const char *decided_by; /* the peer's id */
    uint64_t decided_ns;    /* wall clock, Unix nanoseconds */
    double diagnosis_ms;    /* from the window's close to the answer */
    /* The action decided for it, as a JSON object written verbatim
     * (docs/http-api.md), or NULL for null. */
    const char *action_json;
};

/* Writes the diagnosis id of the window ending at @window_end_ns for the
 * QoS service @qos_service: 16 lower-case hex digits and a NUL. The same
 * window and service always give the same id. */
void node_diagnosis_id(uint64_t window_end_ns,
                       const char *qos_service,
                       char id[NODE_DIAG_ID_LEN + 1]);

/* Appends the JSON document of diagnosis @d of window @w to @b (one
 * object, no newline): the fields of DESIGN.md section 7 plus effect_ms,
 * evidence, path, unseen, decided_unix_nano and diagnosis_ms. Numbers that
 * are not finite are written as null. Failure shows in b->failed. */
void node_diagnosis_write_json(struct node_text *b,
                               const struct cbn_window *w,
                               const struct gvae_diagnosis *d,
                               const struct node_diagnosis_meta *meta);

/* Splits a stored record (@payload, @len borrowed) into its id (copied to
 * @id) and its JSON document (*@json points into @payload, *@json_len
 * bytes). Returns SM_OK, or SM_EMALFORMED when the record is not "<16 hex
 * digits>\n{...}". Never reads past @len. */
int node_diag_record_parse(const uint8_t *payload,
                           size_t len,
                           char id[NODE_DIAG_ID_LEN + 1],
                           const char **json,
                           size_t *json_len);

/* Parses the body of POST /v1/diagnose, {"from_unix_nano":..,
 * "to_unix_nano":..} (numbers or decimal strings; unknown fields
 * ignored), into @from_ns < @to_ns. Returns SM_OK, or SM_EMALFORMED with
 * @errmsg saying what is wrong. */
int node_diagnose_request_parse(const uint8_t *body,
                                size_t len,
                                uint64_t *from_ns,
                                uint64_t *to_ns,
                                char errmsg[SM_ERRMSG_SIZE]);

struct node_diag_store;

/* Opens (creating if needed) the store in directory @dir and reads every
 * readable record back; unreadable records are logged and skipped.
 * Returns SM_OK with the store in @out (close with node_diag_store_close),
 * or the error of cbn_log_open() (SM_EEXIST: another process has it open,
 * SM_EPERM, SM_EIO, SM_ENOMEM) with @errmsg set; @out untouched. */
int node_diag_store_open(const char *dir,
                         struct node_diag_store **out,
                         char errmsg[SM_ERRMSG_SIZE]);

/* Stores the diagnosis @json (@len bytes, borrowed) with id @id for the
 * window ending at @window_end_ns. Durable when this returns SM_OK. A
 * diagnosis with an id already stored is not stored again: SM_EEXIST.
 * Errors: SM_EIO (disk full or failing; @errmsg says why; the diagnosis is
 * still served from memory until restart), SM_ETOOBIG, SM_ENOMEM. */
int node_diag_store_add(struct node_diag_store *s,
                        const char *id,
                        uint64_t window_end_ns,
                        const char *json,
                        size_t len,
                        char errmsg[SM_ERRMSG_SIZE]);

/* Whether a diagnosis with id @id is held. */
int node_diag_store_has(const struct node_diag_store *s, const char *id);

/* The number of diagnoses held (at most NODE_DIAG_MEMORY_MAX). */
size_t node_diag_store_count(const struct node_diag_store *s);

/* Appends {"diagnoses":[...]} with the @limit newest diagnoses (by window
 * end, newest first) to @b. */
void node_diag_store_list(const struct node_diag_store *s,
                          size_t limit,
                          struct node_text *b);

/* Receives one stored diagnosis (all borrowed for the call). */
typedef void (*node_diag_visit_cb)(void *arg,
                                   const char *id,
                                   uint64_t window_end_ns,
                                   const char *json,
                                   size_t len);

/* Calls @cb for the @limit newest diagnoses, newest first. */
void node_diag_store_each_newest(const struct node_diag_store *s,
                                 size_t limit,
                                 node_diag_visit_cb cb,
                                 void *arg);

/* Closes the log and frees @s; NULL is a no-op. */
void node_diag_store_close(struct node_diag_store *s);

#endif /* SM_NODE_DIAGNOSES_H */
