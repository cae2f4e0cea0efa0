/* The client commands status, services list, diagnoses, diagnose and train.
 *
 * A command is one or a few blocking requests (node/client.h) against one
 * deadline, set when its flags are parsed: each request gets the time that
 * is left, and the polling loops of diagnose and train --wait sleep about
 * 150 ms between requests while time is left. So --timeout bounds the whole
 * command, waiting included: `sagemesh train --wait --timeout 600` waits up
 * to ten minutes for the round. Bodies are rendered by node/render.h;
 * -o json prints them as the peer sent them. Failures are told in terms of
 * what the user can do: start the peer, fix --peer, fix the secret, raise
 * --timeout. */
#include "node/cli_client.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/err.h"
#include "node/client.h"
#include "node/config.h"
#include "node/node.h"
#include "node/render.h"
#include "node/textbuf.h"
#include "transport/transport.h"

#define DEFAULT_PEER  "127.0.0.1:4318"
#define MAX_TIMEOUT_S 86400.0
#define POLL_S        0.15 /* between two polls */
#define MAX_EXTRA     4

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- Shared flags ------------------------------------------------------ */

static int usage_error(const char *cmd,
                       const char *usage,
                       FILE *err,
                       const char *format,
                       ...) __attribute__((format(printf, 4, 5)));

/* Prints "sagemesh CMD: <why>" and the usage line; returns
 * NODE_EXIT_USAGE. */
static int usage_error(const char *cmd,
                       const char *usage,
                       FILE *err,
                       const char *format,
                       ...)
{
    fprintf(err, "sagemesh %s: ", cmd);
    va_list ap;
    va_start(ap, format);
    vfprintf(err, format, ap);
    va_end(ap);
    fprintf(err, "\nsagemesh %s: usage: %s\n", cmd, usage);
    return NODE_EXIT_USAGE;
}

int node__client_flags(const char *cmd,
                       const char *usage,
                       int with_output,
                       const struct node_client_extra *extra,
                       size_t n_extra,
                       int argc,
                       char **argv,
                       struct node_client_flags *flags,
                       FILE *err)
{
    SM_ASSERT(n_extra <= MAX_EXTRA);
    struct option options[4 + MAX_EXTRA + 1];
    size_t n = 0;
    options[n++] = (struct option){"peer", required_argument, NULL, 'p'};
    options[n++] = (struct option){"secret-file", required_argument, NULL, 's'};
    options[n++] = (struct option){"timeout", required_argument, NULL, 't'};
    if (with_output) {
        options[n++] = (struct option){"output", required_argument, NULL, 'o'};
    }
    for (size_t i = 0; i < n_extra; i++) {
        options[n++] = (struct option){
            extra[i].name,
            extra[i].takes_value ? required_argument : no_argument, NULL,
            256 + (int)i};
    }
    options[n] = (struct option){NULL, 0, NULL, 0};

    memset(flags, 0, sizeof *flags);
    flags->cmd = cmd;
    const char *peer = getenv("SAGEMESH_PEER");
    const char *peer_from = "SAGEMESH_PEER";
    const char *secret_file = getenv("SAGEMESH_SECRET_FILE");
    const char *timeout = NULL, *output = NULL;
    optind = 0;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, with_output ? "o:" : "", options,
                            NULL)) != -1) {
        if (c == 'p') {
            peer = optarg;
            peer_from = "--peer";
        } else if (c == 's') {
            secret_file = optarg;
        } else if (c == 't') {
            timeout = optarg;
        } else if (c == 'o') {
            output = optarg;
        } else if (c >= 256 && c < 256 + (int)n_extra) {
            *extra[c - 256].value = extra[c - 256].takes_value ? optarg : "";
        } else {
            fprintf(err,
                    "sagemesh %s: unknown or incomplete option '%s'; "
                    "see 'sagemesh %s --help'\n",
                    cmd, argv[optind - 1], cmd);
            return NODE_EXIT_USAGE;
        }
    }
    flags->args = argv + optind;
    flags->n_args = argc - optind;
    if (output != NULL && strcmp(output, "table") != 0 &&
        strcmp(output, "json") != 0) {
        return usage_error(cmd, usage, err, "-o wants table or json, not '%s'",
                           output);
    }
    flags->json = output != NULL && strcmp(output, "json") == 0;
    flags->timeout_s = 5;
    if (timeout != NULL) {
        char *end;
        errno = 0;
        double t = strtod(timeout, &end);
        if (end == timeout || *end != '\0' || errno != 0 || !(t > 0) ||
            t > MAX_TIMEOUT_S) {
            return usage_error(cmd, usage, err,
                               "--timeout wants seconds, more than 0 and at "
                               "most %g, not '%s'",
                               MAX_TIMEOUT_S, timeout);
        }
        flags->timeout_s = t;
    }
    if (peer == NULL || peer[0] == '\0') {
        peer = DEFAULT_PEER;
    } else {
        char host[64];
        int port;
        if (node_parse_hostport(peer, host, sizeof host, &port) != SM_OK) {
            return usage_error(cmd, usage, err,
                               "%s '%s' is not a numeric HOST:PORT (e.g. "
                               "127.0.0.1:4318 or [::1]:4318)",
                               peer_from, peer);
        }
    }
    flags->peer = peer;
    flags->secret_file =
        secret_file != NULL && secret_file[0] != '\0' ? secret_file : NULL;
    flags->deadline = mono_s() + flags->timeout_s;
    return NODE_EXIT_OK;
}

/* ---- Talking to the peer ----------------------------------------------- */

/* Says why the peer could not be asked, from the client's @rv and @msg. */
static void unreachable(const struct node_client_flags *f,
                        int rv,
                        const char *msg,
                        FILE *err)
{
    char prefix[128];
    snprintf(prefix, sizeof prefix, "connect to %s: ", f->peer);
    size_t pl = strlen(prefix);
    if (strncmp(msg, prefix, pl) == 0 && rv == SM_ETIMEDOUT) {
        fprintf(err,
                "sagemesh %s: cannot reach the peer at %s: no answer to "
                "connecting within %g s (is the address right? set --peer "
                "or SAGEMESH_PEER)\n",
                f->cmd, f->peer, f->timeout_s);
    } else if (strncmp(msg, prefix, pl) == 0) {
        const char *cause = msg + pl;
        int lower = isupper((unsigned char)cause[0]) &&
                    islower((unsigned char)cause[1]);
        fprintf(err,
                "sagemesh %s: cannot reach the peer at %s: %c%s (is "
                "'sagemesh peer' running? set --peer or SAGEMESH_PEER)\n",
                f->cmd, f->peer,
                lower ? tolower((unsigned char)cause[0]) : cause[0],
                cause[0] ? cause + 1 : "");
    } else if (rv == SM_ETIMEDOUT) {
        fprintf(err,
                "sagemesh %s: the peer at %s did not answer within --timeout "
                "%g s\n",
                f->cmd, f->peer, f->timeout_s);
    } else {
        fprintf(err, "sagemesh %s: talking to the peer at %s: %s\n", f->cmd,
                f->peer, msg[0] ? msg : sm_strerror(rv));
    }
}

/* Sends one request within the command's deadline. Returns 0 with @resp
 * filled (whatever the HTTP status; free resp->body), or says why the peer
 * could not be asked and returns -1. */
static int ask(const struct node_client_flags *f,
               const char *method,
               const char *path,
               const char *auth,
               const char *body,
               size_t len,
               struct node_client_response *resp,
               FILE *err)
{
    resp->body = NULL;
    double left = f->deadline - mono_s();
    if (left <= 0) {
        fprintf(err, "sagemesh %s: --timeout %g s ran out before %s %s\n",
                f->cmd, f->timeout_s, method, path);
        return -1;
    }
    char msg[SM_ERRMSG_SIZE] = "";
    int rv = node_client_request_auth(f->peer, method, path, "application/json",
                                      auth, body, len, left, resp, msg);
    if (rv != SM_OK) {
        resp->body = NULL;
        unreachable(f, rv, msg, err);
        return -1;
    }
    return 0;
}

/* Sends a POST of @body (@len bytes; NULL for none) to @path signed with
 * the cluster secret in f->secret_file and the current time. Returns 0
 * with @resp filled (whatever the HTTP status; free resp->body), or says
 * why (secret unreadable, peer not asked) and returns -1. */
static int ask_signed(const struct node_client_flags *f,
                      const char *path,
                      const char *body,
                      size_t len,
                      struct node_client_response *resp,
                      FILE *err)
{
    resp->body = NULL;
    struct tp_secret secret;
    char msg[SM_ERRMSG_SIZE] = "";
    if (node_read_secret(f->secret_file, &secret, err, msg) != SM_OK) {
        fprintf(err, "sagemesh %s: %s\n", f->cmd, msg);
        return -1;
    }
    char auth[TP_AUTH_HEADER_MAX];
    tp_credential_sign(&secret, "POST", path, (uint64_t)time(NULL),
                       body != NULL ? body : "", len, auth);
    tp_secret_wipe(&secret);
    return ask(f, "POST", path, auth, body, len, resp, err);
}

/* Reports the peer's refusal of @verb, with the reason from its error
 * body, as "sagemesh CMD VERB: reason". Returns NODE_EXIT_FAILED. */
static int refused(const struct node_client_flags *f,
                   const char *verb,
                   const struct node_client_response *resp,
                   FILE *err)
{
    char msg[SM_ERRMSG_SIZE];
    node_render_error(resp->body, resp->len, msg, sizeof msg);
    fprintf(err, "sagemesh %s %s: %s\n", f->cmd, verb, msg);
    return NODE_EXIT_FAILED;
}

/* Reports an HTTP status the command has no special words for. Returns
 * NODE_EXIT_FAILED. */
static int http_error(const struct node_client_flags *f,
                      const char *what,
                      int signed_call,
                      const struct node_client_response *resp,
                      FILE *err)
{
    char msg[200];
    node_render_error(resp->body, resp->len, msg, sizeof msg);
    if (resp->status == 401 && signed_call) {
        fprintf(err,
                "sagemesh %s: the peer at %s refused the credential for %s "
                "(401: %s): the cluster secret in %s is not the peer's, or "
                "this machine's clock is more than 60 s off the peer's\n",
                f->cmd, f->peer, what, msg, f->secret_file);
    } else if (resp->status == 401) {
        fprintf(err,
                "sagemesh %s: the peer at %s wants a credential for %s (401: "
                "%s): the cluster secret is missing\n",
                f->cmd, f->peer, what, msg);
    } else if (resp->status == 404) {
        fprintf(err,
                "sagemesh %s: the peer at %s does not serve %s (404: %s); is "
                "it an older sagemesh?\n",
                f->cmd, f->peer, what, msg);
    } else {
        fprintf(err, "sagemesh %s: the peer at %s answered %d to %s: %s\n",
                f->cmd, f->peer, resp->status, what, msg);
    }
    return NODE_EXIT_FAILED;
}

/* Reports a body that breaks docs/http-api.md. Returns NODE_EXIT_FAILED. */
static int bad_body(const struct node_client_flags *f,
                    const char *what,
                    const char *msg,
                    FILE *err)
{
    fprintf(err,
            "sagemesh %s: the peer at %s answered %s with a body this "
            "client does not understand: %s%s\n",
            f->cmd, f->peer, what, msg,
            f->json ? "" : " (see it with -o json)");
    return NODE_EXIT_FAILED;
}

/* Prints the body as received, newline-terminated. */
static void print_body(const struct node_client_response *resp, FILE *out)
{
    fwrite(resp->body, 1, resp->len, out);
    if (resp->len == 0 || resp->body[resp->len - 1] != '\n') {
        fputc('\n', out);
    }
}

/* Sleeps POLL_S before the next poll. Returns 0 without sleeping when
 * that would leave too little of --timeout for the poll itself (then the
 * caller reports that time ran out). */
static int nap(const struct node_client_flags *f)
{
    if (f->deadline - mono_s() < POLL_S + 0.05) {
        return 0;
    }
    struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)(POLL_S * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
    return 1;
}

/* Polls of a loop that sleeps POLL_S between them: a backstop bound, the
 * deadline ends the loop first. */
static long max_polls(const struct node_client_flags *f)
{
    return (long)(f->timeout_s / POLL_S) + 3;
}

/* One GET whose 200 answer is rendered by @render (table) or printed
 * (json). */
static int get_and_render(const struct node_client_flags *f,
                          const char *path,
                          int (*render)(const char *, size_t, FILE *, char *),
                          FILE *out,
                          FILE *err)
{
    char what[160];
    snprintf(what, sizeof what, "GET %s", path);
    struct node_client_response resp;
    if (ask(f, "GET", path, NULL, NULL, 0, &resp, err) != 0) {
        return NODE_EXIT_FAILED;
    }
    int code = NODE_EXIT_OK;
    char msg[SM_ERRMSG_SIZE];
    if (resp.status != 200) {
        code = http_error(f, what, 0, &resp, err);
    } else if (f->json) {
        print_body(&resp, out);
    } else if (render(resp.body, resp.len, out, msg) != SM_OK) {
        code = bad_body(f, what, msg, err);
    }
    free(resp.body);
    return code;
}

/* ---- status ------------------------------------------------------------ */

int node__cmd_status(int argc, char **argv, FILE *out, FILE *err)
{
    static const char usage[] =
        "sagemesh status [--peer HOST:PORT] [-o table|json] "
        "[--timeout SECONDS]";
    struct node_client_flags f;
    if (node__client_flags("status", usage, 1, NULL, 0, argc, argv, &f, err) !=
        NODE_EXIT_OK) {
        return NODE_EXIT_USAGE;
    }
    if (f.n_args > 0) {
        return usage_error(f.cmd, usage, err, "unexpected argument '%s'",
                           f.args[0]);
    }
    struct node_client_response resp;
    if (ask(&f, "GET", "/v1/status", NULL, NULL, 0, &resp, err) != 0) {
        return NODE_EXIT_FAILED;
    }
    int code = NODE_EXIT_OK, ready = 0;
    char msg[SM_ERRMSG_SIZE];
    if (resp.status != 200) {
        code = http_error(&f, "GET /v1/status", 0, &resp, err);
    } else {
        if (f.json) {
            print_body(&resp, out);
        }
        if (node_render_status(resp.body, resp.len, f.json ? NULL : out, &ready,
                               msg) != SM_OK) {
            code = bad_body(&f, "GET /v1/status", msg, err);
        } else if (!ready) {
            fprintf(err, "sagemesh status: the peer at %s is not ready\n",
                    f.peer);
            code = NODE_EXIT_FAILED;
        }
    }
    free(resp.body);
    return code;
}

/* ---- services list ----------------------------------------------------- */

int node__cmd_services(int argc, char **argv, FILE *out, FILE *err)
{
    static const char usage[] =
        "sagemesh services list [--peer HOST:PORT] [-o table|json] "
        "[--timeout SECONDS]";
    struct node_client_flags f;
    if (node__client_flags("services", usage, 1, NULL, 0, argc, argv, &f,
                           err) != NODE_EXIT_OK) {
        return NODE_EXIT_USAGE;
    }
    if (f.n_args != 1 || strcmp(f.args[0], "list") != 0) {
        return usage_error(f.cmd, usage, err,
                           f.n_args == 0 ? "expected 'list'%s"
                                         : "expected 'list' alone, not '%s'",
                           f.n_args == 0 ? "" : f.args[0]);
    }
    return get_and_render(&f, "/v1/services", node_render_services, out, err);
}

/* ---- diagnoses --------------------------------------------------------- */

int node__cmd_diagnoses(int argc, char **argv, FILE *out, FILE *err)
{
    static const char usage[] =
        "sagemesh diagnoses [--limit N] [--peer HOST:PORT] [-o table|json] "
        "[--timeout SECONDS]";
    const char *limit = NULL;
    const struct node_client_extra extra[] = {{"limit", 1, &limit}};
    struct node_client_flags f;
    if (node__client_flags("diagnoses", usage, 1, extra, 1, argc, argv, &f,
                           err) != NODE_EXIT_OK) {
        return NODE_EXIT_USAGE;
    }
    if (f.n_args > 0) {
        return usage_error(f.cmd, usage, err, "unexpected argument '%s'",
                           f.args[0]);
    }
    char path[64] = "/v1/diagnoses";
    if (limit != NULL) {
        char *end;
        errno = 0;
        long n = strtol(limit, &end, 10);
        if (end == limit || *end != '\0' || errno != 0 || n < 1 || n > 1000) {
            return usage_error(f.cmd, usage, err,
                               "--limit wants a number from 1 to 1000, not "
                               "'%s'",
                               limit);
        }
        snprintf(path, sizeof path, "/v1/diagnoses?limit=%ld", n);
    }
    return get_and_render(&f, path, node_render_diagnoses, out, err);
}

/* ---- diagnose ---------------------------------------------------------- */

/* Polls GET /v1/diagnose?request=@id until it is done or time runs out. */
static int diagnose_poll(const struct node_client_flags *f,
                         const char *id,
                         uint64_t windows,
                         FILE *out,
                         FILE *err)
{
    char path[NODE_RENDER_ID_SIZE + 32];
    snprintf(path, sizeof path, "/v1/diagnose?request=%s", id);
    char what[NODE_RENDER_ID_SIZE + 40];
    snprintf(what, sizeof what, "GET %s", path);
    for (long i = 0; i < max_polls(f); i++) {
        if (i > 0 && !nap(f)) {
            break;
        }
        struct node_client_response resp;
        if (ask(f, "GET", path, NULL, NULL, 0, &resp, err) != 0) {
            return NODE_EXIT_FAILED;
        }
        int code = -1, done = 0;
        char msg[SM_ERRMSG_SIZE];
        if (resp.status == 404) {
            node_render_error(resp.body, resp.len, msg, sizeof msg);
            fprintf(err,
                    "sagemesh diagnose: the peer at %s no longer holds "
                    "request %s (404: %s); it keeps the 16 newest\n",
                    f->peer, id, msg);
            code = NODE_EXIT_FAILED;
        } else if (resp.status != 200) {
            code = http_error(f, what, 0, &resp, err);
        } else if (node_render_diagnose_done(resp.body, resp.len, &done, msg) !=
                   SM_OK) {
            code = bad_body(f, what, msg, err);
        } else if (done) {
            /* -o json prints the body as received, then checks it too. */
            if (f->json) {
                print_body(&resp, out);
            }
            size_t failed = 0;
            if (node_render_diagnose_result(resp.body, resp.len, &done, &failed,
                                            f->json ? NULL : out,
                                            msg) != SM_OK) {
                code = bad_body(f, what, msg, err);
            } else if (failed > 0) {
                fprintf(err,
                        "sagemesh diagnose: the peer could not diagnose %zu "
                        "of the %" PRIu64 " windows\n",
                        failed, windows);
                code = NODE_EXIT_FAILED;
            } else {
                code = NODE_EXIT_OK;
            }
        }
        free(resp.body);
        if (code >= 0) {
            return code;
        }
    }
    fprintf(err,
            "sagemesh diagnose: the peer at %s has not finished the %" PRIu64
            " windows of request %s within --timeout %g s; raise --timeout\n",
            f->peer, windows, id, f->timeout_s);
    return NODE_EXIT_FAILED;
}

int node__cmd_diagnose(int argc, char **argv, FILE *out, FILE *err)
{
    static const char usage[] =
        "sagemesh diagnose --from T --to T [--peer HOST:PORT] "
        "[-o table|json] [--timeout SECONDS]";
    const char *from_text = NULL, *to_text = NULL;
    const struct node_client_extra extra[] = {{"from", 1, &from_text},
                                              {"to", 1, &to_text}};
    struct node_client_flags f;
    if (node__client_flags("diagnose", usage, 1, extra, 2, argc, argv, &f,
                           err) != NODE_EXIT_OK) {
        return NODE_EXIT_USAGE;
    }
    if (f.n_args > 0) {
        return usage_error(f.cmd, usage, err, "unexpected argument '%s'",
                           f.args[0]);
    }
    if (from_text == NULL || to_text == NULL) {
        return usage_error(f.cmd, usage, err, "needs both --from and --to");
    }
    uint64_t from, to;
    const char *texts[2] = {from_text, to_text};
    uint64_t *times[2] = {&from, &to};
    for (int i = 0; i < 2; i++) {
        int rv = node_render_parse_time(texts[i], times[i]);
        if (rv != SM_OK) {
            return usage_error(
                f.cmd, usage, err,
                "%s '%s' is %s; give RFC 3339 (2023-11-15T08:35:00Z, or "
                "with an offset like +01:00) or Unix seconds",
                i == 0 ? "--from" : "--to", texts[i],
                rv == SM_ERANGE ? "out of range (1970 to 2554)" : "not a time");
        }
    }
    if (from >= to) {
        return usage_error(f.cmd, usage, err,
                           "--from must be before --to (windows ending in "
                           "(from, to] are diagnosed)");
    }
    char body[128];
    int n = snprintf(body, sizeof body,
                     "{\"from_unix_nano\":\"%" PRIu64
                     "\",\"to_unix_nano\":\"%" PRIu64 "\"}",
                     from, to);
    struct node_client_response resp;
    if (ask(&f, "POST", "/v1/diagnose", NULL, body, (size_t)n, &resp, err) !=
        0) {
        return NODE_EXIT_FAILED;
    }
    char msg[SM_ERRMSG_SIZE], id[NODE_RENDER_ID_SIZE];
    uint64_t windows = 0;
    int code = -1;
    if (resp.status == 404 || resp.status == 409) {
        char from_s[NODE_RENDER_TIME_SIZE], to_s[NODE_RENDER_TIME_SIZE];
        node_render_format_time(from, from_s);
        node_render_format_time(to, to_s);
        node_render_error(resp.body, resp.len, msg, sizeof msg);
        if (resp.status == 404) {
            fprintf(err,
                    "sagemesh diagnose: the peer at %s holds no window ending "
                    "in (%s, %s] (404: %s)\n",
                    f.peer, from_s, to_s, msg);
        } else {
            fprintf(err,
                    "sagemesh diagnose: the peer at %s cannot diagnose yet "
                    "(409: %s); see 'sagemesh status', or run 'sagemesh "
                    "train --wait'\n",
                    f.peer, msg);
        }
        code = NODE_EXIT_FAILED;
    } else if (resp.status != 202) {
        code = http_error(&f, "POST /v1/diagnose", 0, &resp, err);
    } else if (node_render_diagnose_ticket(resp.body, resp.len, id, &windows,
                                           msg) != SM_OK) {
        code = bad_body(&f, "POST /v1/diagnose", msg, err);
    }
    free(resp.body);
    if (code >= 0) {
        return code;
    }
    return diagnose_poll(&f, id, windows, out, err);
}

/* ---- train ------------------------------------------------------------- */

/* Polls GET /v1/status until model.rounds_finished reaches @rounds, then
 * reports model.last_round. */
static int train_wait(const struct node_client_flags *f,
                      uint64_t rounds,
                      FILE *out,
                      FILE *err)
{
    uint64_t seen = 0;
    for (long i = 0; i < max_polls(f); i++) {
        if (i > 0 && !nap(f)) {
            break;
        }
        struct node_client_response resp;
        if (ask(f, "GET", "/v1/status", NULL, NULL, 0, &resp, err) != 0) {
            return NODE_EXIT_FAILED;
        }
        int code = -1, ok = 0;
        char msg[SM_ERRMSG_SIZE];
        if (resp.status != 200) {
            code = http_error(f, "GET /v1/status", 0, &resp, err);
        } else if (node_render_train_rounds(resp.body, resp.len, &seen, msg) !=
                   SM_OK) {
            code = bad_body(f, "GET /v1/status", msg, err);
        } else if (seen >= rounds) {
            if (node_render_train_outcome(resp.body, resp.len,
                                          f->json ? NULL : out, &ok,
                                          msg) != SM_OK) {
                code = bad_body(f, "GET /v1/status", msg, err);
            } else {
                if (f->json) {
                    print_body(&resp, out);
                }
                code = ok ? NODE_EXIT_OK : NODE_EXIT_FAILED;
            }
        }
        free(resp.body);
        if (code >= 0) {
            return code;
        }
    }
    fprintf(err,
            "sagemesh train: the round has not finished within --timeout %g s "
            "(%" PRIu64 " of %" PRIu64
            " rounds finished); it goes on at the peer: wait longer with "
            "e.g. --timeout 600, or see 'sagemesh status'\n",
            f->timeout_s, seen, rounds);
    return NODE_EXIT_FAILED;
}

int node__cmd_train(int argc, char **argv, FILE *out, FILE *err)
{
    static const char usage[] =
        "sagemesh train [--wait] [--peer HOST:PORT] [--secret-file FILE] "
        "[-o table|json] [--timeout SECONDS]";
    const char *wait = NULL;
    const struct node_client_extra extra[] = {{"wait", 0, &wait}};
    struct node_client_flags f;
    if (node__client_flags("train", usage, 1, extra, 1, argc, argv, &f, err) !=
        NODE_EXIT_OK) {
        return NODE_EXIT_USAGE;
    }
    if (f.n_args > 0) {
        return usage_error(f.cmd, usage, err, "unexpected argument '%s'",
                           f.args[0]);
    }
    if (f.secret_file == NULL) {
        return usage_error(f.cmd, usage, err,
                           "needs the cluster secret: --secret-file FILE or "
                           "SAGEMESH_SECRET_FILE");
    }
    struct node_client_response resp;
    if (ask_signed(&f, "/v1/train", NULL, 0, &resp, err) != 0) {
        return NODE_EXIT_FAILED;
    }
    char msg[SM_ERRMSG_SIZE] = "";
    uint64_t version = 0, rounds = 0;
    int code = -1;
    if (resp.status == 409) {
        node_render_error(resp.body, resp.len, msg, sizeof msg);
        fprintf(err,
                "sagemesh train: the peer at %s cannot train yet (409: %s)\n",
                f.peer, msg);
        code = NODE_EXIT_FAILED;
    } else if (resp.status != 202) {
        code = http_error(&f, "POST /v1/train", 1, &resp, err);
    } else if (node_render_train_ticket(resp.body, resp.len, &version, &rounds,
                                        msg) != SM_OK) {
        code = bad_body(&f, "POST /v1/train", msg, err);
    } else if (wait == NULL) {
        if (f.json) {
            print_body(&resp, out);
        } else {
            fprintf(out,
                    "training round requested (model version %" PRIu64
                    " now)\n",
                    version);
        }
        code = NODE_EXIT_OK;
    }
    free(resp.body);
    if (code >= 0) {
        return code;
    }
    return train_wait(&f, rounds, out, err);
}

/* ---- actions ----------------------------------------------------------- */

/* approve or rollback: a signed POST whose body names the action. */
static int change_action(const struct node_client_flags *f,
                         const char *verb,
                         const char *id,
                         FILE *out,
                         FILE *err)
{
    char path[64], body[64], what[96];
    snprintf(path, sizeof path, "/v1/actions/%s", verb);
    int len = snprintf(body, sizeof body, "{\"id\":\"%s\"}", id);
    snprintf(what, sizeof what, "POST %s", path);
    struct node_client_response resp;
    if (ask_signed(f, path, body, (size_t)len, &resp, err) != 0) {
        return NODE_EXIT_FAILED;
    }
    char msg[SM_ERRMSG_SIZE] = "";
    int code = NODE_EXIT_OK;
    if (resp.status == 404 || resp.status == 409) {
        code = refused(f, verb, &resp, err);
    } else if (resp.status == 202) {
        /* Another peer decided it: the call went there. */
        if (f->json) {
            print_body(&resp, out);
        } else {
            fprintf(out,
                    "%s of %s forwarded to the peer that decided it; its "
                    "state shows in 'sagemesh status' (mesh.log_actions) and "
                    "in that peer's 'sagemesh actions list'\n",
                    verb, id);
        }
    } else if (resp.status != 200) {
        code = http_error(f, what, 1, &resp, err);
    } else if (f->json) {
        print_body(&resp, out);
    } else {
        /* One action: shown as a one-row list. */
        struct node_text list = {0};
        node_text_puts(&list, "{\"actions\":[");
        node_text_put(&list, resp.body, resp.len);
        node_text_puts(&list, "]}");
        if (list.failed ||
            node_render_actions(list.s, list.len, out, msg) != SM_OK) {
            code = bad_body(f, what, list.failed ? "out of memory" : msg, err);
        }
        free(list.s);
    }
    free(resp.body);
    return code;
}

int node__cmd_actions(int argc, char **argv, FILE *out, FILE *err)
{
    static const char usage[] =
        "sagemesh actions list [--limit N] [--state STATE] | approve ID | "
        "rollback ID [--peer HOST:PORT] [--secret-file FILE] [-o table|json] "
        "[--timeout SECONDS]";
    const char *limit = NULL, *state = NULL;
    const struct node_client_extra extra[] = {{"limit", 1, &limit},
                                              {"state", 1, &state}};
    struct node_client_flags f;
    if (node__client_flags("actions", usage, 1, extra, 2, argc, argv, &f,
                           err) != NODE_EXIT_OK) {
        return NODE_EXIT_USAGE;
    }
    if (f.n_args == 0) {
        return usage_error(f.cmd, usage, err,
                           "expected list, approve ID or rollback ID%s", "");
    }
    const char *verb = f.args[0];
    if (strcmp(verb, "list") == 0) {
        if (f.n_args > 1) {
            return usage_error(f.cmd, usage, err, "unexpected argument '%s'",
                               f.args[1]);
        }
        char path[128] = "/v1/actions?limit=20";
        if (limit != NULL) {
            char *end;
            errno = 0;
            long n = strtol(limit, &end, 10);
            if (end == limit || *end != '\0' || errno != 0 || n < 1 ||
                n > 1000) {
                return usage_error(f.cmd, usage, err,
                                   "--limit wants a number from 1 to 1000, "
                                   "not '%s'",
                                   limit);
            }
            snprintf(path, sizeof path, "/v1/actions?limit=%ld", n);
        }
        if (state != NULL) {
            if (strspn(state, "abcdefghijklmnopqrstuvwxyz_") != strlen(state) ||
                strlen(state) > 20 || state[0] == '\0') {
                return usage_error(f.cmd, usage, err,
                                   "--state wants a state name such as "
                                   "pending or applied, not '%s'",
                                   state);
            }
            size_t at = strlen(path);
            snprintf(path + at, sizeof path - at, "&state=%s", state);
        }
        return get_and_render(&f, path, node_render_actions, out, err);
    }
    if (strcmp(verb, "approve") != 0 && strcmp(verb, "rollback") != 0) {
        return usage_error(f.cmd, usage, err,
                           "expected list, approve or rollback, not '%s'",
                           verb);
    }
    if (f.n_args != 2 || strlen(f.args[1]) != 16 ||
        strspn(f.args[1], "0123456789abcdef") != 16) {
        return usage_error(f.cmd, usage, err,
                           "%s wants one action id (16 hex digits, from "
                           "'sagemesh actions list')",
                           verb);
    }
    if (limit != NULL || state != NULL) {
        return usage_error(f.cmd, usage, err,
                           "--limit and --state go with 'list'%s", "");
    }
    if (f.secret_file == NULL) {
        return usage_error(f.cmd, usage, err,
                           "needs the cluster secret: --secret-file FILE or "
                           "SAGEMESH_SECRET_FILE%s",
                           "");
    }
    return change_action(&f, verb, f.args[1], out, err);
}

/* ---- members ----------------------------------------------------------- */

static int change_member(const struct node_client_flags *f,
                         const char *verb,
                         const char *id,
                         const char *addr,
                         FILE *out,
                         FILE *err)
{
    char path[64], body[256], what[96];
    snprintf(path, sizeof path, "/v1/members/%s", verb);
    int len = addr != NULL
                  ? snprintf(body, sizeof body,
                             "{\"id\":\"%s\",\"address\":\"%s\"}", id, addr)
                  : snprintf(body, sizeof body, "{\"id\":\"%s\"}", id);
    snprintf(what, sizeof what, "POST %s", path);
    struct node_client_response resp;
    if (ask_signed(f, path, body, (size_t)len, &resp, err) != 0) {
        return NODE_EXIT_FAILED;
    }
    int code = NODE_EXIT_OK;
    if (resp.status == 200 || resp.status == 202) {
        if (f->json) {
            print_body(&resp, out);
        } else {
            fprintf(out, "%s %s: %s\n", verb, id,
                    resp.status == 200
                        ? "started by the leader"
                        : "forwarded to the leader (see 'sagemesh members "
                          "list')");
        }
    } else if (resp.status == 400 || resp.status == 404 || resp.status == 409 ||
               resp.status == 503) {
        code = refused(f, verb, &resp, err);
    } else {
        code = http_error(f, what, 1, &resp, err);
    }
    free(resp.body);
    return code;
}

int node__cmd_members(int argc, char **argv, FILE *out, FILE *err)
{
    static const char usage[] =
        "sagemesh members list | add ID HOST:PORT | remove ID "
        "[--peer HOST:PORT] [--secret-file FILE] [-o table|json] "
        "[--timeout SECONDS]";
    struct node_client_flags f;
    if (node__client_flags("members", usage, 1, NULL, 0, argc, argv, &f, err) !=
        NODE_EXIT_OK) {
        return NODE_EXIT_USAGE;
    }
    if (f.n_args == 0) {
        return usage_error(f.cmd, usage, err,
                           "expected list, add ID HOST:PORT or remove ID%s",
                           "");
    }
    const char *verb = f.args[0];
    if (strcmp(verb, "list") == 0 && f.n_args == 1) {
        return get_and_render(&f, "/v1/members", node_render_members, out, err);
    }
    int add = strcmp(verb, "add") == 0;
    if (!add && strcmp(verb, "remove") != 0) {
        return usage_error(f.cmd, usage, err, "unexpected '%s'", verb);
    }
    if (f.n_args != (add ? 3 : 2) ||
        !tp_peer_id_valid(f.args[1], strlen(f.args[1]))) {
        return usage_error(f.cmd, usage, err, "%s wants %s", verb,
                           add ? "a peer id and its HOST:PORT" : "one peer id");
    }
    char host[64];
    int port;
    if (add &&
        node_parse_hostport(f.args[2], host, sizeof host, &port) != SM_OK) {
        return usage_error(f.cmd, usage, err, "'%s' is not a numeric HOST:PORT",
                           f.args[2]);
    }
    if (f.secret_file == NULL) {
        return usage_error(f.cmd, usage, err,
                           "needs the cluster secret: --secret-file FILE or "
                           "SAGEMESH_SECRET_FILE%s",
                           "");
    }
    return change_member(&f, verb, f.args[1], add ? f.args[2] : NULL, out, err);
}
