/* node: the sagemesh executable: CLI, peer daemon wiring, ingest, HTTP. */
#ifndef SM_NODE_H
#define SM_NODE_H

#include <stdio.h>

/* Exit codes of every sagemesh command (DESIGN.md section 7). */
enum node_exit {
    NODE_EXIT_OK = 0,     /* success */
    NODE_EXIT_FAILED = 1, /* the operation failed, or the target is unhealthy */
    NODE_EXIT_USAGE = 2,  /* bad command line, or a command not available */
};

/* Runs the sagemesh command line: dispatches argv[1] to its command and
 * returns the process exit code (enum node_exit). Normal output goes to
 * @out, diagnostics to @err (both borrowed). Runs on the calling thread;
 * commands that start a daemon return only when it stops. */
int node_main(int argc, char **argv, FILE *out, FILE *err);

#endif /* SM_NODE_H */
