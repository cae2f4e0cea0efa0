/* Fuzz target: node_jaeger_traces, then the aggregator with what it accepted.
 */
#include "fuzz_spans.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_spans(node_jaeger_traces, data, size);
}
