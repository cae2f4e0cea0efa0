/* Fuzz target: the simulator's fault file parser (against the built-in
 * chain topology), and a short run with what it accepts. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "node/sim.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct node_sim_topology *topo;
    if (topo == NULL && node_sim_topology_builtin("chain", &topo) != SM_OK) {
        abort();
    }
    struct node_sim_fault *faults = NULL;
    size_t n = 0;
    char err[SM_ERRMSG_SIZE];
    const uint64_t start = 1700028000ull * 1000000000ull;
    if (node_sim_faults_parse(topo, start, (const char *)data, size, &faults,
                              &n, err) != SM_OK) {
        /* every refusal says which line, or why */
        if (err[0] == '\0') {
            abort();
        }
        return 0;
    }
    /* Two simulated seconds at a low rate: whatever the faults say, the run
     * must stay bounded and survive them. */
    struct node_sim_config c;
    node_sim_config_init(&c, topo);
    c.start_ns = start;
    c.duration_ns = 2000000000ull;
    c.load.rate = 20;
    c.faults = faults;
    c.n_faults = n;
    struct node_sim *sim;
    if (node_sim_new(&c, &sim, err) == SM_OK) {
        (void)node_sim_run(sim, UINT64_MAX, NULL, NULL, NULL);
        node_sim_free(sim);
    }
    free(faults);
    return 0;
}
