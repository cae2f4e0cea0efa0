/* What the raft node needs from the state machine beyond the public API. */
#ifndef SM_CONSENSUS_FSM_INTERNAL_H
#define SM_CONSENSUS_FSM_INTERNAL_H

#include <stdint.h>

#include "consensus/consensus.h"

/* Converts the @result pointer raft hands to an apply callback (set by the
 * fsm's raft apply) back into the outcome. NULL (no result) reads as
 * CONS_APPLY_BAD. */
enum cons_apply_result cons__fsm_result(const void *result);

/* Counters local to this process (not replicated): snapshots restored and
 * applies refused for lack of memory (raft retries those). */
void cons__fsm_local_counters(const struct cons_fsm *fsm,
                              uint64_t *restores,
                              uint64_t *nomem);

/* Bytes before the command in a raft entry: its length, little-endian.
 * Entries are padded with zeros to a multiple of 8 bytes. */
#define CONS_ENTRY_HEADER 4

#endif /* SM_CONSENSUS_FSM_INTERNAL_H */
