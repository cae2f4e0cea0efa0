/* Fuzz target: the simulator's topology file parser, its writer (what it
 * accepts must write out and parse back) and a short run of what it
 * accepts. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "node/sim.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct node_sim_topology *t = NULL;
    char err[SM_ERRMSG_SIZE];
    if (node_sim_topology_parse((const char *)data, size, &t, err) != SM_OK) {
        /* Every refusal says where or what. */
        if (strncmp(err, "line ", 5) != 0 &&
            strncmp(err, "topology: ", 10) != 0) {
            abort();
        }
        return 0;
    }
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (f != NULL) {
        if (node_sim_topology_write(t, f) != SM_OK) {
            abort();
        }
        fclose(f);
        struct node_sim_topology *u = NULL;
        if (node_sim_topology_parse(text, len, &u, err) != SM_OK) {
            abort();
        }
        node_sim_topology_free(u);
        free(text);
    }
    /* A second of simulated time, with every trace sampled, at a rate
     * bounded so that a hostile topology cannot make the run slow. */
    struct node_sim_config c;
    node_sim_config_init(&c, t);
    c.duration_ns = 1000000000ull;
    c.sampling = 1;
    c.load.rate =
        node_sim_topology_rate(t) < 50 ? node_sim_topology_rate(t) : 50;
    struct node_sim *sim;
    if (node_sim_new(&c, &sim, err) == SM_OK) {
        (void)node_sim_run(sim, UINT64_MAX, NULL, NULL, NULL);
        node_sim_free(sim);
    }
    node_sim_topology_free(t);
    return 0;
}
