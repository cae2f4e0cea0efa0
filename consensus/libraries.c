/* Versions of the libraries consensus/ links. */
#include <lz4.h>
#include <raft.h>

#include "consensus/consensus.h"

#ifndef SM_RAFT_VERSION
#error "the build must define SM_RAFT_VERSION (raft's pkg-config version)"
#endif

void cons_libraries(sm_libver_cb cb, void *arg)
{
    cb(arg, "raft", SM_RAFT_VERSION);
    cb(arg, "lz4", LZ4_versionString());
}
