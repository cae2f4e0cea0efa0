/* Tables for the client commands: the peer's JSON bodies (docs/http-api.md)
 * rendered as text for people (node-private). */
#ifndef SM_NODE_RENDER_H
#define SM_NODE_RENDER_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "base/err.h"

/* Every function here is pure: it reads a body given as @len bytes at
 * @body (borrowed, need not be NUL-terminated), writes to the FILE* it is
 * given and keeps no state, so any thread may call it.
 *
 * Readers follow the contract of docs/http-api.md: unknown fields are
 * ignored; a field that is read must have its documented type, and one
 * that is shown must be present, except where the contract allows null
 * (a missing model round, an operation, a latency not measured yet). A
 * body that breaks this is SM_EMALFORMED, with "where: what" in @errmsg
 * ("model.rounds_finished: expected a number"), and nothing is written:
 * a table is built whole in memory and written only once it is complete.
 *
 * Strings from the peer are written with control characters (C0, DEL and
 * C1) replaced by '?', so that a service name cannot move the cursor or
 * rewrite the terminal. Columns are padded by code points, not bytes.
 *
 * Functions that take @out write nothing when it is NULL; they then only
 * check the body and fill their outputs. Errors common to all: SM_ENOMEM,
 * SM_ETOOBIG (a body whose tree would pass 512 MiB), SM_EIO (writing to
 * @out failed). */

/* ---- Times --------------------------------------------------------------
 *
 * Windows are shown in UTC as RFC 3339 ("2023-11-15T08:35:00Z", with
 * ".123" milliseconds only when the time is not a whole second). */
#define NODE_RENDER_TIME_SIZE 32

/* Writes @unix_ns as described above into @out. Cannot fail. */
void node_render_format_time(uint64_t unix_ns, char out[NODE_RENDER_TIME_SIZE]);

/* Parses a point in time given on the command line, @text (NUL-terminated):
 * Unix seconds ("1700037300", optionally with up to 9 decimals), or RFC
 * 3339 with a "Z" or a numeric offset ("2023-11-15T08:35:00Z",
 * "2023-11-15t09:35:00.5+01:00"; 'T', 't' or one space between date and
 * time). Stores nanoseconds since the Unix epoch in @unix_ns. Returns
 * SM_OK; SM_EMALFORMED for any other text or an impossible date (Feb 30,
 * hour 24); SM_ERANGE before 1970 or past 2554 (what 64 bits of
 * nanoseconds hold). @unix_ns is untouched on failure. */
int node_render_parse_time(const char *text, uint64_t *unix_ns);

/* ---- Errors ------------------------------------------------------------ */

/* Copies the message of an error body into @msg (size @cap > 0, always
 * NUL-terminated): the "error" string of {"error":"..."}, or else the body
 * itself up to its first line break (an HTTP status answered without a
 * JSON body), "(empty answer)" for an empty body; control characters
 * become '?' and long messages are cut. Cannot fail. */
void node_render_error(const char *body, size_t len, char *msg, size_t cap);

/* ---- GET /v1/status ---------------------------------------------------- */

/* Writes the status of a peer as a two-column table on @out: its id and
 * version, readiness, windows, QoS (service, target, last latency), CBN
 * version and node count, model (version, training, rounds, the last
 * round's outcome and seconds, windows until the next round when the
 * body gives enough to tell) and diagnosis counts. Stores whether the peer
 * says it is ready in *@ready (may be NULL). Returns SM_OK or an error as
 * described at the top (@errmsg says which field). */
int node_render_status(const char *body,
                       size_t len,
                       FILE *out,
                       int *ready,
                       char errmsg[SM_ERRMSG_SIZE]);

/* ---- GET /v1/services -------------------------------------------------- */

/* Writes the services with their CBN node, callers and callees, one row
 * each, under a line with the CBN version; says so when there is none
 * yet. Returns SM_OK or an error as described at the top. */
int node_render_services(const char *body,
                         size_t len,
                         FILE *out,
                         char errmsg[SM_ERRMSG_SIZE]);

/* ---- GET /v1/diagnoses ------------------------------------------------- */

/* Writes one row per diagnosis of {"diagnoses":[...]}: window end, culprit
 * service and resource, P(QoS met), latency against target, model version
 * and the propagation path (a further culprit adds a row with only its
 * own columns), then notes for windows with no culprit, for extrapolated
 * ones ("unseen") and for items that carry an "error" instead of a
 * diagnosis (see node_render_diagnose_result()). An empty list prints why
 * that may be. Returns SM_OK or an error as described at the top. */
int node_render_diagnoses(const char *body,
                          size_t len,
                          FILE *out,
                          char errmsg[SM_ERRMSG_SIZE]);

/* ---- POST /v1/diagnose, GET /v1/diagnose?request=ID -------------------- */

/* Longest request id accepted, plus the NUL. Ids hold only letters,
 * digits, '-', '_' and '.', so they go into a query string as they are. */
#define NODE_RENDER_ID_SIZE 65

/* Reads the 202 answer {"request":"ID", "windows":N} into @id and
 * *@windows. Returns SM_OK, or SM_EMALFORMED (also for an id that is
 * empty, too long or holds other characters) or another error as above. */
int node_render_diagnose_ticket(const char *body,
                                size_t len,
                                char id[NODE_RENDER_ID_SIZE],
                                uint64_t *windows,
                                char errmsg[SM_ERRMSG_SIZE]);

/* Reads only "done" of an answer to GET /v1/diagnose?request=ID into
 * *@done (for -o json, which prints the body as it is). Returns SM_OK or
 * an error as described at the top. */
int node_render_diagnose_done(const char *body,
                              size_t len,
                              int *done,
                              char errmsg[SM_ERRMSG_SIZE]);

/* Reads an answer to GET /v1/diagnose?request=ID and stores its "done" in
 * *@done. When done, writes each window's ranking (rank, service, score,
 * effect_ms, p_qos_met, evidence) under a line naming the window and its
 * latency, then the culprit line; when not done, writes nothing. A window
 * the peer could not diagnose comes as {"window_end_unix_nano":...,
 * "error":"..."} instead of a diagnosis (the peer sends these; the
 * contract does not list them yet): it is written as one line with the
 * error and counted in *@failed (may be NULL). Returns SM_OK or an error
 * as described at the top. */
int node_render_diagnose_result(const char *body,
                                size_t len,
                                int *done,
                                size_t *failed,
                                FILE *out,
                                char errmsg[SM_ERRMSG_SIZE]);

/* ---- POST /v1/train, then GET /v1/status ------------------------------- */

/* Reads the 202 answer {"model_version":V, "wait_for_rounds":R}. Returns
 * SM_OK or an error as described at the top. */
int node_render_train_ticket(const char *body,
                             size_t len,
                             uint64_t *model_version,
                             uint64_t *wait_for_rounds,
                             char errmsg[SM_ERRMSG_SIZE]);

/* Reads model.rounds_finished of a /v1/status body into *@rounds. Returns
 * SM_OK or an error as described at the top. */
int node_render_train_rounds(const char *body,
                             size_t len,
                             uint64_t *rounds,
                             char errmsg[SM_ERRMSG_SIZE]);

/* Writes the outcome of model.last_round of a /v1/status body as one line
 * ("training round finished: model version 3 (incremental, 6.2 s, 310
 * windows, validation loss 1.9)", or "training round failed after 1.2 s:
 * ERROR") and stores in *@ok whether the round succeeded. Returns SM_OK,
 * SM_EMALFORMED when last_round is null (no round has finished) or breaks
 * the contract, or another error as described at the top. */
int node_render_train_outcome(const char *body,
                              size_t len,
                              FILE *out,
                              int *ok,
                              char errmsg[SM_ERRMSG_SIZE]);

/* ---- GET /v1/actions --------------------------------------------------- */

/* Writes one row per action of {"actions":[...]}: id, decision time,
 * service, resource, kind, from and to in the knob's unit, state and a
 * note (the error, "not applied" for a dry run, else the rule's reason).
 * An empty list prints why that may be. Returns SM_OK or an error as
 * described at the top. Also renders a single action object's answer when
 * given {"actions":[ACTION]}. */
int node_render_actions(const char *body,
                        size_t len,
                        FILE *out,
                        char errmsg[SM_ERRMSG_SIZE]);

/* ---- GET /v1/members --------------------------------------------------- */

/* Writes one row per member of {"members":[...]}: id (marked when it is
 * the peer asked), mesh address, raft role, health as the peer asked sees
 * it, and which one leads. Returns SM_OK or an error as described at the
 * top. */
int node_render_members(const char *body,
                        size_t len,
                        FILE *out,
                        char errmsg[SM_ERRMSG_SIZE]);

#endif /* SM_NODE_RENDER_H */
