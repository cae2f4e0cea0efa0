/* Command-line dispatch and help for every sagemesh command. */
#include <stdio.h>
#include <string.h>

#include "node/cli.h"
#include "node/client.h"
#include "node/node.h"
#include "node/sim.h"
#include "sm_build.h"

#define CLIENT_FLAGS                                                          \
    "Client flags (every command that talks to a peer):\n"                    \
    "  --peer HOST:PORT      peer to ask (default $SAGEMESH_PEER, else\n"     \
    "                        127.0.0.1:4318); any peer answers or forwards\n" \
    "  --secret-file FILE    cluster secret for mutating calls (default\n"    \
    "                        $SAGEMESH_SECRET_FILE)\n"                        \
    "  -o table|json         output format (default table)\n"                 \
    "  --timeout SECONDS     bound on the whole call (default 5)\n"

#define EXIT_CODES "Exit status: 0 ok, 1 failed or unhealthy, 2 usage.\n"

static const struct node_command commands[] = {
    {"peer", "run a sagemesh peer (one per host)",
     "Usage: sagemesh peer [flags]\n"
     "Runs the peer daemon: OTLP ingest, scraping, windows, model shards, "
     "mesh.\n"
     "  --id NAME                 peer name (default: host name)\n"
     "  --listen-http HOST:PORT   OTLP and API endpoint (default "
     "127.0.0.1:4318)\n"
     "  --listen-peer HOST:PORT   mesh endpoint (default 127.0.0.1:7401; raft\n"
     "                            may use the next port)\n"
     "  --join HOST:PORT          existing peer to join (repeatable)\n"
     "  --data-dir DIR            durable state (windows, model, raft log)\n"
     "  --secret-file FILE        cluster secret (see 'sagemesh keygen')\n"
     "  --qos-service NAME        frontend service whose latency is the QoS\n"
     "  --qos-operation NAME      optional operation of that service\n"
     "  --qos-percentile P        percentile checked (default 99)\n"
     "  --qos-target-ms MS        QoS target in milliseconds\n"
     "  --window SECONDS          event-time window (default 30)\n"
     "  --lateness SECONDS        accepted lateness of telemetry (default a\n"
     "                            tenth of the window)\n"
     "  --scrape URL              Prometheus target (repeatable); end it with\n"
     "                            #service=NAME to name the service of "
     "samples\n"
     "                            without a service label (node_exporter)\n"
     "  --scrape-interval SECONDS scrape period (default 15)\n"
     "  --actuate dry-run|on|off  act on diagnoses (default dry-run)\n"
     "  --age-out WINDOWS         a service or RPC edge not seen for this "
     "many\n"
     "                            windows leaves the CBN (default 20)\n"
     "  --log-level LEVEL         debug, info, warn or error (default info)\n"
     "  --service-label LABEL     Prometheus label naming the service\n"
     "                            (repeatable, in order of preference; "
     "default\n"
     "                            container, pod, name, service, job, "
     "groupname)\n"
     "  --resource-class P=CLASS  metrics named P* belong to CLASS (cpu,\n"
     "                            memory, network, disk, llc, other), over "
     "the\n"
     "                            built-in table (repeatable)\n"
     "  --config FILE             the same keys without dashes, one per line;\n"
     "                            flags given too override the file\n"
     "Serves on --listen-http: POST /v1/traces and /v1/metrics (OTLP/HTTP\n"
     "JSON), POST /api/v2/spans (Zipkin v2), GET /healthz, /readyz, /metrics,\n"
     "/v1/status, POST /v1/flush (needs the secret). Closed windows are kept\n"
     "in DIR/windows (crash-safe log).\n"
     "Stops cleanly on SIGINT or SIGTERM, storing the windows still open.\n",
     node__cmd_peer},
    {"status", "members, leader, term, services, model versions",
     "Usage: sagemesh status [client flags]\n"
     "Shows the mesh as the asked peer sees it.\n" CLIENT_FLAGS,
     NULL},
    {"members", "list, add or remove mesh members",
     "Usage: sagemesh members list|add|remove [ID [HOST:PORT]] [client flags]\n"
     "Changes go through the leader and need the cluster "
     "secret.\n" CLIENT_FLAGS,
     NULL},
    {"services", "list the services the mesh knows",
     "Usage: sagemesh services list [client flags]\n" CLIENT_FLAGS, NULL},
    {"diagnoses", "QoS violations with culprit service and resource",
     "Usage: sagemesh diagnoses [--limit N] [client flags]\n"
     "Newest first.\n" CLIENT_FLAGS,
     NULL},
    {"diagnose", "rank the services for any time range",
     "Usage: sagemesh diagnose --from T --to T [client flags]\n"
     "Runs the counterfactual sweep on the windows in [from, to), violated or\n"
     "not. T is RFC 3339 or Unix seconds.\n" CLIENT_FLAGS,
     NULL},
    {"train", "(re)train the model cluster-wide now",
     "Usage: sagemesh train [--wait] [client flags]\n"
     "--wait returns when the new model serves. Needs the cluster "
     "secret.\n" CLIENT_FLAGS,
     NULL},
    {"flush", "close the open windows now",
     "Usage: sagemesh flush [--peer HOST:PORT] [--secret-file FILE]\n"
     "                      [--timeout SECONDS]\n"
     "Closes every open window of the peer now and stores it, as if the\n"
     "watermark had passed; data for those windows then counts as late.\n"
     "Needs the cluster secret (--secret-file or $SAGEMESH_SECRET_FILE): the\n"
     "call carries an HMAC credential, good once, within 60 s of the peer's\n"
     "clock.\n" EXIT_CODES,
     node__cmd_flush},
    {"actions", "list, approve or roll back corrective actions",
     "Usage: sagemesh actions list|approve ID|rollback ID [client "
     "flags]\n" CLIENT_FLAGS,
     NULL},
    {"keygen", "create a cluster secret",
     "Usage: sagemesh keygen [--out FILE [--force]]\n"
     "Creates a new random cluster secret (32 bytes from the OS CSPRNG, as 64\n"
     "hex digits). Without --out it is printed on standard output. With --out\n"
     "it is written to FILE with mode 0600; an existing FILE is kept unless\n"
     "--force is given. Every peer and every operator of a cluster needs the\n"
     "same secret; whoever has it can command the cluster.\n" EXIT_CODES,
     node__cmd_keygen},
    {"import", "import traces from a file",
     "Usage: sagemesh import --jaeger FILE [client flags]\n"
     "Reads a Jaeger /api/traces JSON file (the query API's answer, or a UI\n"
     "export), checks it whole, and sends its spans to the peer as OTLP/HTTP\n"
     "JSON (POST /v1/traces) in batches of 5,000. Nothing is sent if the file\n"
     "does not parse.\n"
     "  --jaeger FILE         the file to import\n"
     "  --peer HOST:PORT      peer to send to (default $SAGEMESH_PEER, else\n"
     "                        127.0.0.1:4318)\n"
     "  --timeout SECONDS     bound on each batch (default 5)\n" EXIT_CODES,
     node__cmd_import},
    {"sim", "generate telemetry with ground truth", NODE_SIM_HELP,
     node__cmd_sim},
    {"demo", "3 local peers, a simulated app and an injected fault",
     "Usage: sagemesh demo\n", NULL},
    {"bench", "measure ingest, training and inference speed",
     "Usage: sagemesh bench [flags]\n", NULL},
    {"version", "print version, build and linked libraries",
     "Usage: sagemesh version   (same as sagemesh --version)\n",
     node__cmd_version},
    {"help", "list commands, or explain one",
     "Usage: sagemesh help [COMMAND]\n", NULL},
};

#define N_COMMANDS (sizeof commands / sizeof commands[0])

int node__is_help(const char *arg)
{
    return strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0;
}

static const struct node_command *find_command(const char *name)
{
    for (size_t i = 0; i < N_COMMANDS; i++) {
        if (strcmp(commands[i].name, name) == 0) {
            return &commands[i];
        }
    }
    return NULL;
}

static void print_overview(FILE *out)
{
    fprintf(
        out,
        "sagemesh %s: finds the service and resource behind a tail-latency\n"
        "violation in a microservice application, and acts on it.\n\n"
        "Usage: sagemesh COMMAND [flags]\n\nCommands:\n",
        SM_VERSION);
    for (size_t i = 0; i < N_COMMANDS; i++) {
        fprintf(out, "  %-10s %s%s\n", commands[i].name, commands[i].summary,
                commands[i].run == NULL && strcmp(commands[i].name, "help")
                    ? " (not in this version yet)"
                    : "");
    }
    fprintf(
        out,
        "\nRun 'sagemesh COMMAND --help' for a command's flags.\n"
        "'sagemesh --version' lists the build and its libraries.\n" EXIT_CODES);
}

static void print_command_help(const struct node_command *cmd, FILE *out)
{
    fputs(cmd->help, out);
    if (cmd->run == NULL && strcmp(cmd->name, "help") != 0) {
        fprintf(out, "\n'sagemesh %s' is not in this version (%s) yet.\n",
                cmd->name, SM_VERSION);
    }
}

static int unknown_command(const char *name, FILE *err)
{
    fprintf(err, "sagemesh: unknown command '%s'; run 'sagemesh help'\n", name);
    return NODE_EXIT_USAGE;
}

static int run_help(int argc, char **argv, FILE *out, FILE *err)
{
    if (argc < 3) {
        print_overview(out);
        return NODE_EXIT_OK;
    }
    if (argc > 3) {
        fprintf(err, "sagemesh help: expected at most one command name\n");
        return NODE_EXIT_USAGE;
    }
    const struct node_command *cmd = find_command(argv[2]);
    if (cmd == NULL) {
        return unknown_command(argv[2], err);
    }
    print_command_help(cmd, out);
    return NODE_EXIT_OK;
}

int node_main(int argc, char **argv, FILE *out, FILE *err)
{
    if (argc < 2) {
        print_overview(err);
        return NODE_EXIT_USAGE;
    }
    const char *name = argv[1];
    if (node__is_help(name)) {
        print_overview(out);
        return NODE_EXIT_OK;
    }
    if (strcmp(name, "--version") == 0 || strcmp(name, "-V") == 0) {
        return node__cmd_version(argc - 1, argv + 1, out, err);
    }
    if (strcmp(name, "help") == 0) {
        return run_help(argc, argv, out, err);
    }
    const struct node_command *cmd = find_command(name);
    if (cmd == NULL) {
        return unknown_command(name, err);
    }
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0) {
            break;
        }
        if (node__is_help(argv[i])) {
            print_command_help(cmd, out);
            return NODE_EXIT_OK;
        }
    }
    if (cmd->run == NULL) {
        fprintf(err,
                "sagemesh: '%s' is not in this version (%s) yet; run "
                "'sagemesh help' for the commands it has\n",
                name, SM_VERSION);
        return NODE_EXIT_USAGE;
    }
    /* Commands parse their own flags with argv[0] = the command name. */
    return cmd->run(argc - 1, argv + 1, out, err);
}
