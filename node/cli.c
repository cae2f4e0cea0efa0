/* Command-line dispatch and help for every sagemesh command. */
#include <stdio.h>
#include <string.h>

#include "node/cli.h"
#include "node/cli_client.h"
#include "node/client.h"
#include "node/node.h"
#include "node/sim.h"
#include "sm_build.h"

#define CLIENT_FLAGS                                                       \
    "Client flags (every command that talks to a peer):\n"                 \
    "  --peer HOST:PORT      peer to ask (default $SAGEMESH_PEER, else\n"  \
    "                        127.0.0.1:4318)\n"                            \
    "  --secret-file FILE    cluster secret for mutating calls (default\n" \
    "                        $SAGEMESH_SECRET_FILE)\n"                     \
    "  -o table|json         output format (default table)\n"              \
    "  --timeout SECONDS     bound on the whole call (default 5)\n"

#define EXIT_CODES "Exit status: 0 ok, 1 failed or unhealthy, 2 usage.\n"

static const struct node_command commands[] = {
    {
        "peer",
        "run a sagemesh peer (one per host)",
        "Usage: sagemesh peer [flags]\n"
        "Runs the peer daemon: OTLP ingest, scraping, windows, model shards, "
        "mesh.\n"
        "  --id NAME                 peer name (default: host name)\n"
        "  --listen-http HOST:PORT   OTLP and API endpoint (default "
        "127.0.0.1:4318)\n"
        "  --listen-peer HOST:PORT   mesh endpoint, raft included (default\n"
        "                            127.0.0.1:7401)\n"
        "  --advertise-peer H:P      the address other peers dial (default\n"
        "                            --listen-peer; needed with 0.0.0.0)\n"
        "  --join HOST:PORT          existing peer to join (repeatable); with\n"
        "                            --secret-file the peer runs the mesh on\n"
        "                            --listen-peer, without --join it starts "
        "a\n"
        "                            new mesh of itself\n"
        "  --election-timeout MS     raft election timeout, the same on every\n"
        "                            peer (default 500; heartbeats every "
        "tenth)\n"
        "  --voters 3|5              voters kept by the leader (default 3)\n"
        "  --log-keep N              diagnoses, and finished actions, the\n"
        "                            mesh's log keeps (default 10000)\n"
        "  --ingest local|routed     local (default): each peer makes windows\n"
        "                            of the telemetry it receives (all of an\n"
        "                            application's collectors export to one\n"
        "                            peer); routed: each host's collector\n"
        "                            exports to the peer on its host, spans\n"
        "                            go to the peer owning their trace and "
        "the\n"
        "                            leader merges every peer's part of a\n"
        "                            window (mesh only; same on every peer)\n"
        "  --data-dir DIR            durable state (windows, model, raft log)\n"
        "  --secret-file FILE        cluster secret (see 'sagemesh keygen')\n"
        "  --qos-service NAME        frontend service whose latency is the "
        "QoS\n"
        "  --qos-operation NAME      optional operation of that service\n"
        "  --qos-percentile P        percentile checked (default 99)\n"
        "  --qos-target-ms MS        QoS target in milliseconds\n"
        "  --window SECONDS          event-time window (default 30)\n"
        "  --lateness SECONDS        how long a window waits for late "
        "telemetry\n"
        "                            after newer data arrived (default 60: "
        "the\n"
        "                            OpenTelemetry SDKs export metrics every "
        "60 "
        "s;\n"
        "                            with only faster exporters a few seconds\n"
        "                            gives diagnoses sooner). Data later than\n"
        "                            that is dropped, counted and warned "
        "about\n"
        "  --scrape URL              Prometheus target (repeatable); end it "
        "with\n"
        "                            #service=NAME to name the service of "
        "samples\n"
        "                            without a service label (node_exporter)\n"
        "  --scrape-interval SECONDS scrape period (default 15)\n",
        node__cmd_peer,
        "  --actuate MODE            what to do with a diagnosis's culprit:\n"
        "                            dry-run (default: decide and record what\n"
        "                            would be done), on (apply it), approve\n"
        "                            (hold it for 'sagemesh actions approve\n"
        "                            ID'), off (decide nothing)\n"
        "  --cgroup-root DIR         where cgroups are mounted (default\n"
        "                            /sys/fs/cgroup; v1 and v2 are detected)\n"
        "  --cgroup-path TEMPLATE    a service's cgroup under each hierarchy,\n"
        "                            e.g. system.slice/{service}.service\n"
        "                            (default: the cgroup of the process "
        "whose\n"
        "                            name is the service's)\n"
        "  --scale-out-command T     run when local changes are not enough,\n"
        "                            with {service} {instance} {resource}\n"
        "                            {amount} (replicas to add), no shell,\n"
        "                            e.g. 'add-replicas {service} {amount}'\n"
        "  --actuate-interval S      at most one action per service per S\n"
        "                            seconds of event time (default 60)\n"
        "  --actuate-verify-windows N  windows after an action in which QoS\n"
        "                            must recover (default 2)\n"
        "  --actuate-escalate-windows N  unrecovered windows before a "
        "scale-out\n"
        "                            (default 3)\n"
        "  --actuate-rollback never|unhelpful  roll back actions that did not\n"
        "                            help (default never)\n"
        "  --actuate-max-cores N, --actuate-max-memory-mb N  caps per service\n"
        "                            (default none)\n"
        "  --command-timeout S       deadline of the scale-out command (120)\n"
        "  --tc-dev DEV              HTB classes' device (default none)\n"
        "  --tc-classes LIST         rates, increasing: 100mbit,1gbit\n"
        "  --tc-class SVC=CLASSID    e.g. web=1:10 (repeatable); --tc-path P "
        "(tc)\n"
        "  --resctrl-root DIR        LLC ways (default /sys/fs/resctrl) of "
        "groups\n"
        "  --resctrl-group T         named T (default sagemesh-{service})\n"
        "  --cpufreq-root DIR        CPU frequency of services without a CPU "
        "quota\n"
        "                            (default /sys/devices/system/cpu)\n"
        "  --age-out WINDOWS         a service or RPC edge not seen for this "
        "many\n"
        "                            windows leaves the CBN (default 20)\n"
        "  --log-level LEVEL         debug, info, warn or error (default "
        "info)\n"
        "  --log-file FILE           append the log to FILE instead of "
        "standard\n"
        "                            error; reopened on SIGHUP (log rotation)\n"
        "  --train-after WINDOWS     train the first model once this many "
        "windows\n"
        "                            are held (default 240: 2 h of 30 s "
        "windows;\n"
        "                            at most 20000; the peer holds the larger "
        "of\n"
        "                            this and 4000 windows in memory)\n"
        "  --retrain-every WINDOWS   retrain after this many new windows "
        "(default\n"
        "                            240; 0: only on 'sagemesh train')\n"
        "  --service-label LABEL     Prometheus label naming the service\n"
        "                            (repeatable, in order of preference; "
        "default\n"
        "                            container, pod, name, service, job, "
        "groupname)\n"
        "  --resource-class P=CLASS  metrics named P* belong to CLASS (cpu,\n"
        "                            memory, network, disk, llc, other), over "
        "the\n"
        "                            built-in table (repeatable)\n"
        "  --config FILE             the same keys without dashes, one per "
        "line;\n"
        "                            flags given too override the file\n"
        "Serves on --listen-http: POST /v1/traces and /v1/metrics (OTLP/HTTP\n"
        "JSON), POST /api/v2/spans (Zipkin v2), GET /healthz, /readyz, "
        "/metrics,\n"
        "/v1/status, /v1/diagnoses, /v1/services, POST and GET /v1/diagnose,\n"
        "POST /v1/flush and /v1/train (these two need the secret); see\n"
        "docs/http-api.md.\n"
        "With --qos-service and --qos-target-ms the peer trains its model on\n"
        "its own threads (the previous model serves until the new one is\n"
        "complete) and diagnoses every window that violates QoS. DIR holds\n"
        "windows/ (crash-safe log), model.ckpt and diagnoses/; all survive a\n"
        "restart.\n"
        "Stops cleanly on SIGINT or SIGTERM (a running training round is\n"
        "abandoned, the windows still open are stored) and exits 0.\n",
    },
    {"status", "the peer: readiness, windows, QoS, model, diagnoses",
     "Usage: sagemesh status [--peer HOST:PORT] [-o table|json]\n"
     "                       [--timeout SECONDS]\n"
     "Shows the peer as it sees itself (GET /v1/status): id, readiness,\n"
     "windows, QoS and last latency, CBN, model (version, training rounds,\n"
     "the last round, the next one) and diagnosis counts.\n" CLIENT_FLAGS
     "Exit status: 0 ok, 1 peer unreachable, not ready or failing, 2 "
     "usage.\n",
     node__cmd_status, NULL},
    {"members", "list, add or remove mesh members",
     "Usage: sagemesh members list\n"
     "       sagemesh members add ID HOST:PORT | remove ID\n"
     "                        [--peer HOST:PORT] [--secret-file FILE]\n"
     "                        [-o table|json] [--timeout SECONDS]\n"
     "list    the mesh's members as the peer asked sees them: id, mesh\n"
     "        address, raft role (voter, standby, spare), health, leader\n"
     "add     let peer ID at HOST:PORT (its --listen-peer) in; start it\n"
     "        with --join to an existing peer (a peer started that way asks\n"
     "        by itself, so 'add' is rarely needed)\n"
     "remove  take peer ID out of the mesh (stop it first); the leader\n"
     "        cannot remove itself: stop it and a new leader takes over\n"
     "Changes need the cluster secret; a follower forwards them to the\n"
     "leader. The leader keeps 3 (or --voters 5) voters: it promotes\n"
     "standbys when a voter is lost.\n" CLIENT_FLAGS EXIT_CODES,
     node__cmd_members, NULL},
    {"services", "list the services the mesh knows",
     "Usage: sagemesh services list [--peer HOST:PORT] [-o table|json]\n"
     "                              [--timeout SECONDS]\n"
     "Lists the services of the CBN (GET /v1/services): each with its CBN\n"
     "node, callers and callees.\n" CLIENT_FLAGS EXIT_CODES,
     node__cmd_services, NULL},
    {"diagnoses", "QoS violations with culprit service and resource",
     "Usage: sagemesh diagnoses [--limit N] [--peer HOST:PORT] [-o "
     "table|json]\n"
     "                          [--timeout SECONDS]\n"
     "Lists the stored diagnoses, newest first (GET /v1/diagnoses): window\n"
     "end (UTC), culprit service and resource, P(QoS met) if it is fixed,\n"
     "latency against the target, model version and the propagation path.\n"
     "  --limit N             at most N diagnoses, 1 to 1000 (default "
     "20)\n" CLIENT_FLAGS EXIT_CODES,
     node__cmd_diagnoses, NULL},
    {"diagnose", "rank the services for any time range",
     "Usage: sagemesh diagnose --from T --to T [--peer HOST:PORT]\n"
     "                         [-o table|json] [--timeout SECONDS]\n"
     "Runs the counterfactual sweep with the current model on every stored\n"
     "window ending in (from, to], violated or not (at most 100 windows),\n"
     "and prints each window's ranking and culprit. Nothing is stored.\n"
     "  --from T, --to T      RFC 3339 (2023-11-15T08:35:00Z, or an offset\n"
     "                        such as +01:00) or Unix seconds\n" CLIENT_FLAGS
     "--timeout bounds the wait for the result too.\n" EXIT_CODES,
     node__cmd_diagnose, NULL},
    {"train", "(re)train the model now",
     "Usage: sagemesh train [--wait] [--peer HOST:PORT] [--secret-file FILE]\n"
     "                      [-o table|json] [--timeout SECONDS]\n"
     "Starts a training round now (one more follows a running one). Needs\n"
     "the cluster secret: the call carries an HMAC credential.\n"
     "  --wait                wait for the round and report its outcome (new\n"
     "                        model version, or the error: exit 1); --timeout\n"
     "                        bounds the wait, so give training time, e.g.\n"
     "                        --timeout 600\n" CLIENT_FLAGS EXIT_CODES,
     node__cmd_train, NULL},
    {"flush", "close the open windows now",
     "Usage: sagemesh flush [--peer HOST:PORT] [--secret-file FILE]\n"
     "                      [--timeout SECONDS]\n"
     "Closes every open window of the peer now and stores it, as if the\n"
     "watermark had passed; data for those windows then counts as late.\n"
     "Needs the cluster secret (--secret-file or $SAGEMESH_SECRET_FILE): the\n"
     "call carries an HMAC credential, good once, within 60 s of the peer's\n"
     "clock.\n" EXIT_CODES,
     node__cmd_flush, NULL},
    {"actions", "list, approve or roll back corrective actions",
     "Usage: sagemesh actions list [--limit N] [--state STATE]\n"
     "       sagemesh actions approve ID | rollback ID\n"
     "                        [--peer HOST:PORT] [--secret-file FILE]\n"
     "                        [-o table|json] [--timeout SECONDS]\n"
     "list      the newest actions the controller decided (GET /v1/actions),\n"
     "          newest first: dry_run (recorded only), pending (waiting for\n"
     "          approval, --actuate approve), applying, applied (QoS being\n"
     "          verified), verified (QoS recovered), not_helped, "
     "rolling_back,\n"
     "          rolled_back, failed (the note says why), interrupted (a\n"
     "          scale-out command cut short by a stop: check it by hand)\n"
     "  --limit N       at most N (1..1000, default 20)\n"
     "  --state STATE   only actions in STATE\n"
     "approve   release a pending action to the agent (needs the secret)\n"
     "rollback  restore the value an applied action replaced (needs the\n"
     "          secret; a scale-out is not rolled back here)\n" CLIENT_FLAGS
         EXIT_CODES,
     node__cmd_actions, NULL},
    {"keygen", "create a cluster secret",
     "Usage: sagemesh keygen [--out FILE [--force]]\n"
     "Creates a new random cluster secret (32 bytes from the OS CSPRNG, as 64\n"
     "hex digits). Without --out it is printed on standard output. With --out\n"
     "it is written to FILE with mode 0600; an existing FILE is kept unless\n"
     "--force is given. Every peer and every operator of a cluster needs the\n"
     "same secret; whoever has it can command the cluster.\n" EXIT_CODES,
     node__cmd_keygen, NULL},
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
     node__cmd_import, NULL},
    {"sim", "generate telemetry with ground truth", NODE_SIM_HELP,
     node__cmd_sim, NULL},
    {"demo", "a local peer, a simulated app and an injected fault",
     "Usage: sagemesh demo [--dir DIR]\n"
     "The main job end to end on this machine, in about a minute:\n"
     "  1. starts 'sagemesh peer' (this binary) on 127.0.0.1, ephemeral port;\n"
     "  2. streams 1 h of the simulator's 'social' application (28 services)\n"
     "     as OTLP/HTTP JSON in event time;\n"
     "  3. waits for the peer to train its model (automatically after 120\n"
     "     windows of 30 s);\n"
     "  4. injects a CPU hog into compose-post and streams 11 more minutes;\n"
     "  5. shows 'sagemesh diagnoses' and checks them against the fault.\n"
     "The peer is stopped at the end; its data and log stay in DIR (default\n"
     "a new directory $TMPDIR/sagemesh-demo-*, printed at the start).\n"
     "  --dir DIR   where the secret, the peer's data and its log go\n"
     "Exit status: 0 when the diagnoses name the injected fault, 1 when a\n"
     "step fails or they do not, 2 usage.\n",
     node__cmd_demo, NULL},
    {"bench", "measure ingest, training and inference speed",
     "Usage: sagemesh bench [flags]\n", NULL, NULL},
    {"version", "print version, build and linked libraries",
     "Usage: sagemesh version   (same as sagemesh --version)\n",
     node__cmd_version, NULL},
    {"help", "list commands, or explain one",
     "Usage: sagemesh help [COMMAND]\n", NULL, NULL},
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
    if (cmd->help_more != NULL) {
        fputs(cmd->help_more, out);
    }
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
