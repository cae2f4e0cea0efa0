/* The command table and helpers shared by the CLI commands (node-private). */
#ifndef SM_NODE_CLI_H
#define SM_NODE_CLI_H

#include <stdio.h>

/* One command of the CLI. @run is NULL for a command that DESIGN.md names
 * but this version does not provide yet: it then prints that and exits 2. */
struct node_command
{
    const char *name;
    const char *summary; /* one line for `sagemesh help` */
    const char *help;    /* the full text of `sagemesh NAME --help` */
    int (*run)(int argc, char **argv, FILE *out, FILE *err);
    const char *help_more; /* printed after @help (C limits one literal) */
};

/* `sagemesh --version` / `sagemesh version`: version, revision, build type
 * and every linked library's version, on @out. Returns NODE_EXIT_OK. */
int node__cmd_version(int argc, char **argv, FILE *out, FILE *err);

/* `sagemesh peer`: the daemon (see peer.c). */
int node__cmd_peer(int argc, char **argv, FILE *out, FILE *err);

/* `sagemesh keygen`: writes a new cluster secret (see keygen.c). */
int node__cmd_keygen(int argc, char **argv, FILE *out, FILE *err);

/* `sagemesh demo [--dir DIR]` (node/demo.c): a peer as a child process,
 * the simulated social application, training, an injected fault and the
 * diagnoses. Exit 0 when the diagnoses name the injected fault; 1 when a
 * step fails or they do not; 2 for a bad command line. Leaves no process
 * running. */
int node__cmd_demo(int argc, char **argv, FILE *out, FILE *err);

/* Returns non-zero when @arg asks for help ("-h" or "--help"). */
int node__is_help(const char *arg);

#endif /* SM_NODE_CLI_H */
