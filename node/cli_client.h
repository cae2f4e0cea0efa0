/* The client commands that ask a peer over its HTTP API (status, services,
 * diagnoses, diagnose, train) and the flags they share (node-private). */
#ifndef SM_NODE_CLI_CLIENT_H
#define SM_NODE_CLI_CLIENT_H

#include <stddef.h>
#include <stdio.h>

/* Each command parses its own flags from @argv (argv[0] is the command's
 * name, as node_main() passes it), talks to the peer with the blocking
 * client of node/client.h, writes its result on @out and its diagnostics
 * on @err (both borrowed), and returns an exit code (enum node_exit): 0
 * ok; 1 when the peer cannot be reached, refuses, answers an error or a
 * body that breaks docs/http-api.md, or reports a failure; 2 for a bad
 * command line. Every command ends within its --timeout. They run on the
 * calling thread and are not thread-safe (getopt's global state). */

/* `sagemesh status`: GET /v1/status. Exit 1 also when the peer says it is
 * not ready. */
int node__cmd_status(int argc, char **argv, FILE *out, FILE *err);

/* `sagemesh services list`: GET /v1/services. */
int node__cmd_services(int argc, char **argv, FILE *out, FILE *err);

/* `sagemesh diagnoses [--limit N]`: GET /v1/diagnoses?limit=N. */
int node__cmd_diagnoses(int argc, char **argv, FILE *out, FILE *err);

/* `sagemesh diagnose --from T --to T`: POST /v1/diagnose, then polls GET
 * /v1/diagnose?request=ID about every 150 ms until it is done. */
int node__cmd_diagnose(int argc, char **argv, FILE *out, FILE *err);

/* `sagemesh train [--wait]`: POST /v1/train with a credential; with
 * --wait, polls GET /v1/status about every 150 ms until the round has
 * finished and reports its outcome (exit 1 when it failed). */
int node__cmd_train(int argc, char **argv, FILE *out, FILE *err);

/* `sagemesh actions list [--limit N] [--state S]`: GET /v1/actions;
 * `sagemesh actions approve|rollback ID`: POST /v1/actions/approve or
 * /v1/actions/rollback with a credential. Exit 1 also when the peer
 * refuses (no such action, or not in a state that allows it). */
int node__cmd_actions(int argc, char **argv, FILE *out, FILE *err);

/* `sagemesh members list`: GET /v1/members; `members add ID HOST:PORT` and
 * `members remove ID`: POST /v1/members/add or /remove with a credential
 * (a follower forwards them to the leader). */
int node__cmd_members(int argc, char **argv, FILE *out, FILE *err);

/* ---- Flags shared by every command that talks to a peer ----------------
 *
 *   --peer HOST:PORT      default $SAGEMESH_PEER, else 127.0.0.1:4318
 *   --secret-file FILE    default $SAGEMESH_SECRET_FILE
 *   -o table|json         (only when the command asks for it)
 *   --timeout SECONDS     default 5, at most 86400; bounds the command */

/* A flag of one command beyond the shared ones. */
struct node_client_extra
{
    const char *name;   /* long name without the dashes, e.g. "limit" */
    int takes_value;    /* 1: --name VALUE; 0: a switch */
    const char **value; /* set to the value, or to "" for a given switch;
                           left alone when the flag is absent */
};

/* The shared flags after parsing. Strings point into argv or the
 * environment (borrowed). */
struct node_client_flags
{
    const char *cmd;         /* "status", for messages */
    const char *peer;        /* numeric HOST:PORT, checked */
    const char *secret_file; /* NULL when neither flag nor variable */
    int json;                /* -o json */
    double timeout_s;
    double deadline; /* CLOCK_MONOTONIC seconds when the command must end */
    char **args;     /* positional arguments, n_args of them */
    int n_args;
};

/* Parses @argv for command @cmd: the shared flags (-o only when
 * @with_output) and the @n_extra flags at @extra, filling @flags and
 * starting the command's --timeout. On a bad command line prints why,
 * then "sagemesh CMD: usage: @usage", on @err and returns NODE_EXIT_USAGE;
 * else NODE_EXIT_OK. Uses getopt_long (not thread-safe); reorders @argv so
 * that positional arguments come last. */
int node__client_flags(const char *cmd,
                       const char *usage,
                       int with_output,
                       const struct node_client_extra *extra,
                       size_t n_extra,
                       int argc,
                       char **argv,
                       struct node_client_flags *flags,
                       FILE *err);

#endif /* SM_NODE_CLI_CLIENT_H */
