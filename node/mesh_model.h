/* The model manager as the mesh's training rounds use it (node-private):
 * the callbacks of struct node_train_env over node_model_mgr, and the log
 * of windows other peers replicated here.
 *
 * Windows from other peers are decoded, appended to their own window log
 * (DATA/mesh-windows, so a restarted peer still holds them) and handed to
 * the model manager as remote windows. Trainings and installs the rounds
 * ask for run on the manager's training thread; their outcomes go back to
 * the mesh's state machine. Loop thread only. */
#ifndef SM_NODE_MESH_MODEL_H
#define SM_NODE_MESH_MODEL_H

#include "cbn/cbn.h"
#include "node/mesh.h"
#include "node/model_mgr.h"

struct node_mesh_model;

/* Creates the adapter over @mgr and @log (both borrowed: they must outlive
 * it; @log may be NULL: replicated windows are then not kept across a
 * restart). Returns SM_OK or SM_ENOMEM. */
int node_mesh_model_new(struct node_model_mgr *mgr,
                        struct cbn_log *log,
                        struct node_mesh_model **out);

/* Fills @env's model callbacks (not send and propose: the mesh's). */
void node_mesh_model_env(struct node_mesh_model *mm,
                         struct node_train_env *env);

/* The mesh whose rounds get the outcomes (NULL: drop them). */
void node_mesh_model_attach(struct node_mesh_model *mm, struct node_mesh *mesh);

/* Calls @cb(@arg, version, status, errmsg) after every install the
 * rounds asked for, before the rounds hear of it (NULL: none). */
void node_mesh_model_on_install(
    struct node_mesh_model *mm,
    void (*cb)(void *arg, uint64_t version, int status, const char *errmsg),
    void *arg);

/* Calls @cb(@arg, w) with every fresh window another peer replicated here
 * (borrowed for the call), after the model manager took it. */
void node_mesh_model_on_window(struct node_mesh_model *mm,
                               void (*cb)(void *arg,
                                          const struct cbn_window *w),
                               void *arg);

/* Frees @mm; NULL is a no-op. Close the model manager first: an outcome
 * still to come would reach freed memory. */
void node_mesh_model_free(struct node_mesh_model *mm);

/* Replays the replicated windows of @log into @mgr as remote windows (at
 * start, after the peer's own windows). Returns how many it replayed. */
uint64_t node_mesh_model_replay(struct cbn_log *log,
                                struct node_model_mgr *mgr);

#endif /* SM_NODE_MESH_MODEL_H */
