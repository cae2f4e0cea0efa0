/* The peer's configuration: flags and the --config file (node-private). */
#ifndef SM_NODE_CONFIG_H
#define SM_NODE_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "actuate/actuate.h"
#include "base/err.h"

#define NODE_MAX_LIST 64 /* --join, --scrape entries */

/* Every flag of `sagemesh peer` (DESIGN.md section 7). Strings point into
 * the config's own storage (node_config_free releases it). */
struct node_config
{
    const char *id;             /* default: the host name */
    const char *listen_http;    /* default 127.0.0.1:4318 */
    const char *listen_peer;    /* default 127.0.0.1:7401 */
    const char *advertise_peer; /* default: listen_peer */
    const char *join[NODE_MAX_LIST];
    size_t n_join;
    double election_ms;      /* raft election timeout; default 500 */
    double voters;           /* voters wanted: 3 (default) or 5 */
    double log_keep;         /* diagnoses and finished actions the raft log
                                keeps; default 10000 */
    const char *ingest;      /* "local" (default): a peer's windows are made
                                of what it receives; "routed": spans go to
                                the owner of their trace and the leader
                                merges every peer's part of a window */
    const char *data_dir;    /* required */
    const char *secret_file; /* optional until the mesh needs it */
    const char *qos_service;
    const char *qos_operation;
    double qos_percentile; /* default 99 */
    double qos_target_ms;  /* required with qos_service */
    double window_s;       /* default 30 */
    double lateness_s;     /* default 60 s, or a tenth of the window if
                              larger */
    const char *scrape[NODE_MAX_LIST];
    size_t n_scrape;
    double scrape_interval_s; /* default 15 */
    double age_out;           /* windows before a silent service leaves the
                                 CBN; default 20 */
    enum act_mode actuate;    /* default dry-run */
    /* Actuation (docs/actuation.md). */
    const char *cgroup_root;         /* default /sys/fs/cgroup */
    const char *cgroup_path;         /* template with {service}; default: by
                                        process name */
    const char *scale_out_command;   /* template; default none */
    const char *actuate_rollback;    /* "never" (default) or "unhelpful" */
    double actuate_interval_s;       /* rate limit per service; default 60 */
    double actuate_verify_windows;   /* default 2 */
    double actuate_escalate_windows; /* default 3 */
    double actuate_max_cores;        /* cap per service; 0: none */
    double actuate_max_memory_mb;    /* cap per service; 0: none */
    double command_timeout_s;        /* scale-out command; default 120 */
    /* Network bandwidth through tc HTB classes: the device (NULL: no tc
     * actions), the bandwidth classes in increasing order
     * ("100mbit,200mbit,500mbit,1gbit"), each service's class as
     * "SERVICE=CLASSID" (tc-class, repeatable) and the tc program. */
    const char *tc_dev;
    const char *tc_classes;
    const char *tc_class[NODE_MAX_LIST];
    size_t n_tc_class;
    const char *tc_path;       /* default "tc" (looked up in PATH) */
    const char *resctrl_root;  /* LLC ways; default /sys/fs/resctrl */
    const char *resctrl_group; /* group name, with {service}; default
                                  "sagemesh-{service}" */
    const char *cpufreq_root;  /* default /sys/devices/system/cpu */
    const char *log_level;     /* default info */
    const char *log_file;      /* default: standard error; reopened on
                                  SIGHUP (log rotation) */
    double train_after;        /* first training once this many windows are
                                  held; default 240 */
    double retrain_every;      /* retrain after this many new windows;
                                  default 240, 0: only `sagemesh train` */
    /* Prometheus labels naming a sample's service, in order of preference
     * (service-label, repeatable); none given: the default list. */
    const char *service_label[NODE_MAX_LIST];
    size_t n_service_label;
    /* Metric-name prefixes mapped to a resource class, "PREFIX=CLASS"
     * (resource-class, repeatable), over the built-in table. */
    const char *resource_class[NODE_MAX_LIST];
    size_t n_resource_class;
    /* Owned copies of every string above. */
    char **owned;
    size_t n_owned;
};

/* Sets the defaults. */
void node_config_init(struct node_config *c);

/* Frees the strings the config owns. */
void node_config_free(struct node_config *c);

/* Applies one setting: @key without dashes ("qos-target-ms"), @value as
 * text. Repeatable keys (join, scrape) append. Returns SM_OK, SM_EINVAL
 * (unknown key or bad value; @errmsg says which and why), SM_ERANGE (too
 * many entries) or SM_ENOMEM. */
int node_config_set(struct node_config *c,
                    const char *key,
                    const char *value,
                    char errmsg[SM_ERRMSG_SIZE]);

/* Parses a config file's text: one "key = value" or "key value" per line,
 * '#' comments, blank lines, keys as the flags without dashes. Errors carry
 * "line N: ...". Returns as node_config_set(), or SM_EMALFORMED for a line
 * without a value. */
int node_config_parse(struct node_config *c,
                      const char *text,
                      size_t len,
                      char errmsg[SM_ERRMSG_SIZE]);

/* Checks the whole configuration for consistency (a QoS service needs a
 * target, addresses parse, the window is positive, ...). */
int node_config_validate(const struct node_config *c,
                         char errmsg[SM_ERRMSG_SIZE]);

/* Splits "HOST:PORT" (IPv4, or [IPv6]:PORT) into @host (size @cap) and
 * @port. Returns SM_OK or SM_EINVAL. */
int node_parse_hostport(const char *text, char *host, size_t cap, int *port);

#endif /* SM_NODE_CONFIG_H */
