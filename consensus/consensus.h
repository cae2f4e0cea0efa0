/* consensus: the Raft log and the replicated state machine of the mesh. */
#ifndef SM_CONSENSUS_H
#define SM_CONSENSUS_H

#include "base/version.h"

/* Reports the libraries consensus/ links (canonical raft with its lz4
 * compression) to @cb, once each, synchronously.
 * raft 0.15 has no run-time version call, so its version is the one the
 * binary was built against. */
void cons_libraries(sm_libver_cb cb, void *arg);

/* ---- Commands and the replicated state machine (consensus/fsm.c) -------- */

/* ---- Shard placement (consensus/placement.c) ----------------------------- */

/* ---- The raft node: raft 0.15 v0 API wrapper (consensus/raft_node.c) ----- */

#endif /* SM_CONSENSUS_H */
