/* Resource classes and the default metric-name classification table. */
#include <string.h>

#include "base/err.h"
#include "cbn/cbn.h"

static const char *const names[CBN_RES_COUNT] = {
    [CBN_RES_CPU] = "cpu",         [CBN_RES_MEMORY] = "memory",
    [CBN_RES_NETWORK] = "network", [CBN_RES_DISK] = "disk",
    [CBN_RES_LLC] = "llc",         [CBN_RES_OTHER] = "other",
    [CBN_RES_UNKNOWN] = "unknown",
};

const char *cbn_resource_name(enum cbn_resource res)
{
    return (unsigned)res < CBN_RES_COUNT ? names[res] : "unknown";
}

int cbn_resource_parse(const char *name, enum cbn_resource *res)
{
    for (int i = 0; i < CBN_RES_COUNT; i++) {
        if (strcmp(name, names[i]) == 0) {
            *res = (enum cbn_resource)i;
            return SM_OK;
        }
    }
    return SM_EINVAL;
}

/* Well-known exporter metric names (cAdvisor, node_exporter,
 * process-exporter, blackbox exporter, resctrl exporters) by prefix. The
 * longest matching prefix wins, so specific entries override general ones. */
static const struct cbn_resource_rule defaults[] = {
    {"container_cpu_", CBN_RES_CPU},
    {"container_memory_", CBN_RES_MEMORY},
    {"container_spec_memory_", CBN_RES_MEMORY},
    {"container_spec_cpu_", CBN_RES_CPU},
    {"container_network_", CBN_RES_NETWORK},
    {"container_fs_", CBN_RES_DISK},
    {"container_blkio_", CBN_RES_DISK},
    {"container_llc_", CBN_RES_LLC},
    {"container_perf_events_", CBN_RES_LLC},
    {"probe_", CBN_RES_NETWORK},
    {"node_cpu_", CBN_RES_CPU},
    {"node_load", CBN_RES_CPU},
    {"node_pressure_cpu_", CBN_RES_CPU},
    {"node_schedstat_", CBN_RES_CPU},
    {"node_context_switches_", CBN_RES_CPU},
    {"node_memory_", CBN_RES_MEMORY},
    {"node_vmstat_", CBN_RES_MEMORY},
    {"node_pressure_memory_", CBN_RES_MEMORY},
    {"node_network_", CBN_RES_NETWORK},
    {"node_netstat_", CBN_RES_NETWORK},
    {"node_sockstat_", CBN_RES_NETWORK},
    {"node_disk_", CBN_RES_DISK},
    {"node_filesystem_", CBN_RES_DISK},
    {"node_pressure_io_", CBN_RES_DISK},
    {"namedprocess_namegroup_cpu_", CBN_RES_CPU},
    {"namedprocess_namegroup_memory_", CBN_RES_MEMORY},
    {"namedprocess_namegroup_read_bytes", CBN_RES_DISK},
    {"namedprocess_namegroup_write_bytes", CBN_RES_DISK},
    {"namedprocess_namegroup_major_page_faults", CBN_RES_MEMORY},
    {"namedprocess_namegroup_context_switches", CBN_RES_CPU},
    {"process_cpu_", CBN_RES_CPU},
    {"process_resident_memory_", CBN_RES_MEMORY},
    {"process_virtual_memory_", CBN_RES_MEMORY},
    {"resctrl_llc_", CBN_RES_LLC},
    {"resctrl_mbm_", CBN_RES_LLC},
    {"llc_", CBN_RES_LLC},
};

/* Returns the length of @rule's prefix when it matches @metric, else 0. */
static size_t match(const struct cbn_resource_rule *rule, const char *metric)
{
    size_t n = strlen(rule->prefix);
    return n > 0 && strncmp(metric, rule->prefix, n) == 0 ? n : 0;
}

enum cbn_resource cbn_resource_classify(
    const char *metric,
    const struct cbn_resource_rule *overrides,
    size_t n_overrides)
{
    size_t best = 0;
    enum cbn_resource res = CBN_RES_OTHER;
    for (size_t i = 0; i < n_overrides; i++) {
        size_t n = match(&overrides[i], metric);
        if (n > best) {
            best = n;
            res = overrides[i].resource;
        }
    }
    if (best > 0) {
        return res;
    }
    for (size_t i = 0; i < sizeof defaults / sizeof defaults[0]; i++) {
        size_t n = match(&defaults[i], metric);
        if (n > best) {
            best = n;
            res = defaults[i].resource;
        }
    }
    return res;
}
