/* Peer flags and config files: one table of keys, two front ends. */
#include "node/config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/alloc.h"
#include "cbn/cbn.h"

void node_config_init(struct node_config *c)
{
    memset(c, 0, sizeof *c);
    c->listen_http = "127.0.0.1:4318";
    c->listen_peer = "127.0.0.1:7401";
    c->election_ms = 500;
    c->voters = 3;
    c->log_keep = 10000;
    c->qos_percentile = 99;
    c->window_s = 30;
    c->lateness_s = -1; /* derived from the window unless set */
    c->scrape_interval_s = 15;
    c->age_out = 20;
    c->actuate = ACT_MODE_DEFAULT;
    c->actuate_rollback = "never";
    c->ingest = "local";
    c->actuate_interval_s = 60;
    c->actuate_verify_windows = 2;
    c->actuate_escalate_windows = 3;
    c->command_timeout_s = 120;
    c->tc_path = "tc";
    c->resctrl_root = "/sys/fs/resctrl";
    c->resctrl_group = "sagemesh-{service}";
    c->cpufreq_root = "/sys/devices/system/cpu";
    c->log_level = "info";
    c->train_after = 240;
    c->retrain_every = 240;
}

void node_config_free(struct node_config *c)
{
    for (size_t i = 0; i < c->n_owned; i++) {
        sm_free(c->owned[i]);
    }
    sm_free(c->owned);
    c->owned = NULL;
    c->n_owned = 0;
}

static const char *own(struct node_config *c, const char *value)
{
    char **grown = sm_reallocarray(c->owned, c->n_owned + 1, sizeof *grown);
    if (grown == NULL) {
        return NULL;
    }
    c->owned = grown;
    char *copy = sm_strdup(value);
    if (copy == NULL) {
        return NULL;
    }
    c->owned[c->n_owned++] = copy;
    return copy;
}

static int parse_number(const char *value, double min, double max, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(value, &end);
    if (errno != 0 || end == value || *end != '\0' || !isfinite(v) || v < min ||
        v > max) {
        return SM_EINVAL;
    }
    *out = v;
    return SM_OK;
}

enum kind { STRING, LIST, NUMBER, ACTUATE };

struct key
{
    const char *name;
    enum kind kind;
    size_t offset;    /* of the field in struct node_config */
    size_t count_off; /* LIST: of the count */
    double min, max;  /* NUMBER */
};

#define FIELD(f) offsetof(struct node_config, f)

static const struct key keys[] = {
    {"id", STRING, FIELD(id), 0, 0, 0},
    {"listen-http", STRING, FIELD(listen_http), 0, 0, 0},
    {"listen-peer", STRING, FIELD(listen_peer), 0, 0, 0},
    {"advertise-peer", STRING, FIELD(advertise_peer), 0, 0, 0},
    {"join", LIST, FIELD(join), FIELD(n_join), 0, 0},
    {"election-timeout", NUMBER, FIELD(election_ms), 0, 100, 60000},
    {"voters", NUMBER, FIELD(voters), 0, 3, 5},
    {"log-keep", NUMBER, FIELD(log_keep), 0, 10, 1e6},
    {"ingest", STRING, FIELD(ingest), 0, 0, 0},
    {"data-dir", STRING, FIELD(data_dir), 0, 0, 0},
    {"secret-file", STRING, FIELD(secret_file), 0, 0, 0},
    {"qos-service", STRING, FIELD(qos_service), 0, 0, 0},
    {"qos-operation", STRING, FIELD(qos_operation), 0, 0, 0},
    {"qos-percentile", NUMBER, FIELD(qos_percentile), 0, 1, 99.99},
    {"qos-target-ms", NUMBER, FIELD(qos_target_ms), 0, 0.001, 3.6e6},
    {"window", NUMBER, FIELD(window_s), 0, 1, 86400},
    {"lateness", NUMBER, FIELD(lateness_s), 0, 0, 86400},
    {"scrape", LIST, FIELD(scrape), FIELD(n_scrape), 0, 0},
    {"scrape-interval", NUMBER, FIELD(scrape_interval_s), 0, 1, 86400},
    {"actuate", ACTUATE, FIELD(actuate), 0, 0, 0},
    {"cgroup-root", STRING, FIELD(cgroup_root), 0, 0, 0},
    {"cgroup-path", STRING, FIELD(cgroup_path), 0, 0, 0},
    {"scale-out-command", STRING, FIELD(scale_out_command), 0, 0, 0},
    {"actuate-rollback", STRING, FIELD(actuate_rollback), 0, 0, 0},
    {"actuate-interval", NUMBER, FIELD(actuate_interval_s), 0, 0, 86400},
    {"actuate-verify-windows", NUMBER, FIELD(actuate_verify_windows), 0, 1,
     100},
    {"actuate-escalate-windows", NUMBER, FIELD(actuate_escalate_windows), 0, 1,
     1000},
    {"actuate-max-cores", NUMBER, FIELD(actuate_max_cores), 0, 0, 4096},
    {"actuate-max-memory-mb", NUMBER, FIELD(actuate_max_memory_mb), 0, 0, 1e9},
    {"command-timeout", NUMBER, FIELD(command_timeout_s), 0, 1, 3600},
    {"tc-dev", STRING, FIELD(tc_dev), 0, 0, 0},
    {"tc-classes", STRING, FIELD(tc_classes), 0, 0, 0},
    {"tc-class", LIST, FIELD(tc_class), FIELD(n_tc_class), 0, 0},
    {"tc-path", STRING, FIELD(tc_path), 0, 0, 0},
    {"resctrl-root", STRING, FIELD(resctrl_root), 0, 0, 0},
    {"resctrl-group", STRING, FIELD(resctrl_group), 0, 0, 0},
    {"cpufreq-root", STRING, FIELD(cpufreq_root), 0, 0, 0},
    {"age-out", NUMBER, FIELD(age_out), 0, 1, 100000},
    {"log-level", STRING, FIELD(log_level), 0, 0, 0},
    {"log-file", STRING, FIELD(log_file), 0, 0, 0},
    {"train-after", NUMBER, FIELD(train_after), 0, 8, 20000},
    {"retrain-every", NUMBER, FIELD(retrain_every), 0, 0, 20000},
    {"service-label", LIST, FIELD(service_label), FIELD(n_service_label), 0, 0},
    {"resource-class", LIST, FIELD(resource_class), FIELD(n_resource_class), 0,
     0},
};

int node_config_set(struct node_config *c,
                    const char *key,
                    const char *value,
                    char errmsg[SM_ERRMSG_SIZE])
{
    const struct key *k = NULL;
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        if (strcmp(keys[i].name, key) == 0) {
            k = &keys[i];
        }
    }
    if (k == NULL) {
        sm_errmsg_printf(errmsg, "unknown setting '%s'", key);
        return SM_EINVAL;
    }
    char *base = (char *)c;
    switch (k->kind) {
        case STRING: {
            const char *copy = own(c, value);
            if (copy == NULL) {
                return SM_ENOMEM;
            }
            *(const char **)(base + k->offset) = copy;
            return SM_OK;
        }
        case LIST: {
            size_t *n = (size_t *)(base + k->count_off);
            if (*n == NODE_MAX_LIST) {
                sm_errmsg_printf(errmsg, "more than %d '%s' entries",
                                 NODE_MAX_LIST, key);
                return SM_ERANGE;
            }
            const char *copy = own(c, value);
            if (copy == NULL) {
                return SM_ENOMEM;
            }
            ((const char **)(base + k->offset))[(*n)++] = copy;
            return SM_OK;
        }
        case NUMBER:
            if (parse_number(value, k->min, k->max,
                             (double *)(base + k->offset)) != SM_OK) {
                sm_errmsg_printf(errmsg,
                                 "'%s' must be a number from %g to %g, not "
                                 "'%s'",
                                 key, k->min, k->max, value);
                return SM_EINVAL;
            }
            return SM_OK;
        case ACTUATE:
            if (act_mode_parse(value, &c->actuate) != SM_OK) {
                sm_errmsg_printf(
                    errmsg,
                    "'actuate' must be dry-run, on, off or approve, not "
                    "'%s'",
                    value);
                return SM_EINVAL;
            }
            return SM_OK;
    }
    return SM_EINTERNAL;
}

int node_config_parse(struct node_config *c,
                      const char *text,
                      size_t len,
                      char errmsg[SM_ERRMSG_SIZE])
{
    size_t line_no = 0, at = 0;
    char line[4096];
    while (at < len) {
        size_t end = at;
        while (end < len && text[end] != '\n') {
            end++;
        }
        line_no++;
        size_t n = end - at;
        if (n >= sizeof line) {
            sm_errmsg_printf(errmsg, "line %zu: longer than %zu bytes", line_no,
                             sizeof line - 1);
            return SM_EMALFORMED;
        }
        memcpy(line, text + at, n);
        line[n] = '\0';
        at = end + 1;
        if (memchr(line, '\0', n) != NULL) {
            sm_errmsg_printf(errmsg, "line %zu: NUL byte", line_no);
            return SM_EMALFORMED;
        }
        char *hash = strchr(line, '#');
        if (hash != NULL) {
            *hash = '\0';
        }
        char *p = line;
        while (isspace((unsigned char)*p)) {
            p++;
        }
        char *e = p + strlen(p);
        while (e > p && isspace((unsigned char)e[-1])) {
            *--e = '\0';
        }
        if (*p == '\0') {
            continue;
        }
        char *key = p;
        while (*p != '\0' && *p != '=' && !isspace((unsigned char)*p)) {
            p++;
        }
        char *key_end = p;
        while (isspace((unsigned char)*p)) {
            p++;
        }
        if (*p == '=') {
            p++;
            while (isspace((unsigned char)*p)) {
                p++;
            }
        }
        *key_end = '\0';
        if (*p == '\0') {
            sm_errmsg_printf(errmsg, "line %zu: '%s' has no value", line_no,
                             key);
            return SM_EMALFORMED;
        }
        int rv = node_config_set(c, key, p, errmsg);
        if (rv != SM_OK) {
            sm_errmsg_wrapf(errmsg, "line %zu", line_no);
            return rv;
        }
    }
    return SM_OK;
}

int node_parse_hostport(const char *text, char *host, size_t cap, int *port)
{
    const char *colon;
    const char *h = text;
    size_t hn;
    if (text[0] == '[') {
        const char *close = strchr(text, ']');
        if (close == NULL || close[1] != ':') {
            return SM_EINVAL;
        }
        h = text + 1;
        hn = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = strrchr(text, ':');
        if (colon == NULL) {
            return SM_EINVAL;
        }
        hn = (size_t)(colon - text);
    }
    if (hn == 0 || hn >= cap) {
        return SM_EINVAL;
    }
    memcpy(host, h, hn);
    host[hn] = '\0';
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (colon[1] == '\0' || *end != '\0' || p < 0 || p > 65535) {
        return SM_EINVAL;
    }
    unsigned char addr[16];
    if (inet_pton(AF_INET, host, addr) != 1 &&
        inet_pton(AF_INET6, host, addr) != 1) {
        return SM_EINVAL; /* numeric only: static glibc cannot resolve */
    }
    *port = (int)p;
    return SM_OK;
}

/* Checks one "SERVICE=CLASSID" of --tc-class against the other tc flags
 * (act_tc_init checks the device, class id, class list and program) and
 * against the entries before it (@i of them: no service twice). */
static int validate_tc_class(const struct node_config *c,
                             size_t i,
                             char errmsg[SM_ERRMSG_SIZE])
{
    const char *entry = c->tc_class[i];
    const char *eq = strchr(entry, '=');
    size_t n = eq != NULL ? (size_t)(eq - entry) : 0;
    if (n == 0 || eq[1] == '\0') {
        sm_errmsg_printf(errmsg,
                         "--tc-class '%s' must be SERVICE=CLASSID, e.g. "
                         "web=1:10",
                         entry);
        return SM_EINVAL;
    }
    for (size_t j = 0; j < i; j++) {
        if (strncmp(c->tc_class[j], entry, n + 1) == 0) {
            sm_errmsg_printf(errmsg, "--tc-class gives service %.*s twice",
                             (int)n, entry);
            return SM_EINVAL;
        }
    }
    struct act_tc tc;
    char why[SM_ERRMSG_SIZE];
    if (act_tc_init(&tc, c->tc_path, c->tc_dev, eq + 1, c->tc_classes, why) !=
        SM_OK) {
        sm_errmsg_printf(errmsg, "--tc-class '%s' with --tc-dev %s: %s", entry,
                         c->tc_dev, why);
        return SM_EINVAL;
    }
    return SM_OK;
}

/* The tc flags go together: a device, its class list and at least one
 * service's class, or none of them. */
static int validate_tc(const struct node_config *c, char errmsg[SM_ERRMSG_SIZE])
{
    if (c->tc_dev == NULL) {
        if (c->tc_classes != NULL || c->n_tc_class > 0) {
            sm_errmsg_printf(errmsg,
                             "--tc-classes and --tc-class need --tc-dev (the "
                             "network device of the HTB classes)");
            return SM_EINVAL;
        }
        return SM_OK;
    }
    if (c->tc_classes == NULL) {
        sm_errmsg_printf(errmsg,
                         "--tc-dev %s needs --tc-classes, the bandwidth "
                         "classes in increasing order (e.g. "
                         "100mbit,200mbit,500mbit,1gbit)",
                         c->tc_dev);
        return SM_EINVAL;
    }
    struct act_tc_classes classes;
    char why[SM_ERRMSG_SIZE];
    if (act_tc_classes_parse(c->tc_classes, strlen(c->tc_classes), &classes,
                             why) != SM_OK) {
        sm_errmsg_printf(errmsg, "--tc-classes '%s': %s", c->tc_classes, why);
        return SM_EINVAL;
    }
    if (c->n_tc_class == 0) {
        sm_errmsg_printf(errmsg,
                         "--tc-dev %s needs at least one --tc-class "
                         "SERVICE=CLASSID (e.g. web=1:10)",
                         c->tc_dev);
        return SM_EINVAL;
    }
    for (size_t i = 0; i < c->n_tc_class; i++) {
        if (validate_tc_class(c, i, errmsg) != SM_OK) {
            return SM_EINVAL;
        }
    }
    return SM_OK;
}

/* The resctrl and cpufreq flags. Whether they are mounted is the agent's
 * business at run time: a host without them still starts. */
static int validate_llc_cpufreq(const struct node_config *c,
                                char errmsg[SM_ERRMSG_SIZE])
{
    if (c->resctrl_root[0] == '\0' || c->cpufreq_root[0] == '\0') {
        sm_errmsg_printf(errmsg,
                         "--resctrl-root and --cpufreq-root must not "
                         "be empty");
        return SM_EINVAL;
    }
    /* One group per service: a shared group would give one service's
     * ways to all, and roll them back for all. */
    char name[ACT_RDT_NAME_SIZE], why[SM_ERRMSG_SIZE];
    if (strstr(c->resctrl_group, "{service}") == NULL) {
        sm_errmsg_printf(errmsg,
                         "--resctrl-group '%s' must contain {service}: each "
                         "service gets its own resctrl group",
                         c->resctrl_group);
        return SM_EINVAL;
    }
    if (act_rdt_group_name(c->resctrl_group, "service", name, why) != SM_OK) {
        sm_errmsg_printf(errmsg, "--resctrl-group '%s': %s", c->resctrl_group,
                         why);
        return SM_EINVAL;
    }
    return SM_OK;
}

int node_config_validate(const struct node_config *c,
                         char errmsg[SM_ERRMSG_SIZE])
{
    char host[64];
    int port;
    if (node_parse_hostport(c->listen_http, host, sizeof host, &port) !=
        SM_OK) {
        sm_errmsg_printf(errmsg,
                         "--listen-http '%s' is not a numeric HOST:PORT",
                         c->listen_http);
        return SM_EINVAL;
    }
    if (node_parse_hostport(c->listen_peer, host, sizeof host, &port) !=
        SM_OK) {
        sm_errmsg_printf(errmsg,
                         "--listen-peer '%s' is not a numeric HOST:PORT",
                         c->listen_peer);
        return SM_EINVAL;
    }
    const char *adv = c->advertise_peer ? c->advertise_peer : c->listen_peer;
    if (node_parse_hostport(adv, host, sizeof host, &port) != SM_OK) {
        sm_errmsg_printf(
            errmsg, "--advertise-peer '%s' is not a numeric HOST:PORT", adv);
        return SM_EINVAL;
    }
    if (c->secret_file != NULL && strcmp(host, "0.0.0.0") == 0) {
        sm_errmsg_printf(errmsg,
                         "other peers cannot dial %s: give --advertise-peer "
                         "with this host's address",
                         adv);
        return SM_EINVAL;
    }
    for (size_t i = 0; i < c->n_join; i++) {
        if (node_parse_hostport(c->join[i], host, sizeof host, &port) !=
            SM_OK) {
            sm_errmsg_printf(errmsg, "--join '%s' is not a numeric HOST:PORT",
                             c->join[i]);
            return SM_EINVAL;
        }
    }
    if (c->voters != 3 && c->voters != 5) {
        sm_errmsg_printf(errmsg, "--voters must be 3 or 5");
        return SM_EINVAL;
    }
    if (c->data_dir == NULL || c->data_dir[0] == '\0') {
        sm_errmsg_printf(errmsg,
                         "--data-dir is required (windows, model and "
                         "diagnoses are kept there)");
        return SM_EINVAL;
    }
    if (c->qos_service != NULL && !(c->qos_target_ms > 0)) {
        sm_errmsg_printf(errmsg, "--qos-service %s needs --qos-target-ms",
                         c->qos_service);
        return SM_EINVAL;
    }
    if (c->qos_service == NULL && c->qos_target_ms > 0) {
        sm_errmsg_printf(errmsg, "--qos-target-ms needs --qos-service");
        return SM_EINVAL;
    }
    if (c->train_after != floor(c->train_after) ||
        c->retrain_every != floor(c->retrain_every)) {
        sm_errmsg_printf(errmsg,
                         "--train-after and --retrain-every count windows: "
                         "whole numbers");
        return SM_EINVAL;
    }
    if (strcmp(c->ingest, "local") != 0 && strcmp(c->ingest, "routed") != 0) {
        sm_errmsg_printf(errmsg, "--ingest must be local or routed, not '%s'",
                         c->ingest);
        return SM_EINVAL;
    }
    if (strcmp(c->actuate_rollback, "never") != 0 &&
        strcmp(c->actuate_rollback, "unhelpful") != 0) {
        sm_errmsg_printf(errmsg,
                         "--actuate-rollback must be never or unhelpful, not "
                         "'%s'",
                         c->actuate_rollback);
        return SM_EINVAL;
    }
    if (c->actuate_verify_windows != floor(c->actuate_verify_windows) ||
        c->actuate_escalate_windows != floor(c->actuate_escalate_windows)) {
        sm_errmsg_printf(errmsg,
                         "--actuate-verify-windows and "
                         "--actuate-escalate-windows count windows: "
                         "whole numbers");
        return SM_EINVAL;
    }
    if (validate_tc(c, errmsg) != SM_OK ||
        validate_llc_cpufreq(c, errmsg) != SM_OK) {
        return SM_EINVAL;
    }
    if (c->log_file != NULL && c->log_file[0] == '\0') {
        sm_errmsg_printf(errmsg, "--log-file is empty");
        return SM_EINVAL;
    }
    if (c->lateness_s >= 0 && c->lateness_s > 10 * c->window_s) {
        sm_errmsg_printf(errmsg,
                         "--lateness %g s is more than 10 windows of %g s",
                         c->lateness_s, c->window_s);
        return SM_EINVAL;
    }
    for (size_t i = 0; i < c->n_scrape; i++) {
        if (strncmp(c->scrape[i], "http://", 7) != 0) {
            sm_errmsg_printf(errmsg,
                             "--scrape '%s': only http:// targets are "
                             "supported",
                             c->scrape[i]);
            return SM_EINVAL;
        }
    }
    for (size_t i = 0; i < c->n_resource_class; i++) {
        const char *eq = strchr(c->resource_class[i], '=');
        enum cbn_resource res;
        if (eq == NULL || eq == c->resource_class[i] ||
            cbn_resource_parse(eq + 1, &res) != SM_OK) {
            sm_errmsg_printf(errmsg,
                             "--resource-class '%s' must be PREFIX=CLASS with "
                             "CLASS one of cpu, memory, network, disk, llc, "
                             "other",
                             c->resource_class[i]);
            return SM_EINVAL;
        }
    }
    if (strcmp(c->log_level, "debug") && strcmp(c->log_level, "info") &&
        strcmp(c->log_level, "warn") && strcmp(c->log_level, "error")) {
        sm_errmsg_printf(errmsg,
                         "--log-level must be debug, info, warn or "
                         "error");
        return SM_EINVAL;
    }
    return SM_OK;
}
