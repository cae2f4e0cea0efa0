/* Fuzz target: the resctrl schemata and info parsers. */
#include <stdint.h>
#include <string.h>

#include "actuate/actuate.h"
#include "base/err.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Formatted text of a parsed schemata is never longer than its input plus
 * a final newline; twice the limit leaves room to spare. */
static char text_buf[2 * ACT_RDT_FILE_TEXT_MAX];

/* Length of the line at @p (@n bytes), without its newline. */
static size_t line_len(const char *p, size_t n)
{
    const char *nl = memchr(p, '\n', n);
    return nl ? (size_t)(nl - p) : n;
}

/* The input is a schemata file, optionally preceded by two lines that
 * parse as info/L3/cbm_mask and min_cbm_bits. Whatever parses formats, and
 * the formatted text parses to the same schemata. With the info, ways are
 * set on the schemata and must land within the info's bounds. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    char err[SM_ERRMSG_SIZE];
    struct act_rdt_info info;
    bool have_info = false;
    size_t l1 = line_len(text, size);
    if (l1 < size) {
        size_t l2 = line_len(text + l1 + 1, size - l1 - 1);
        if (act_rdt_parse_info(text, l1, text + l1 + 1, l2, &info, err) ==
            SM_OK) {
            SM_ASSERT(info.min_cbm_bits >= 1 &&
                      info.min_cbm_bits <= info.cbm_bits);
            have_info = true;
            size_t skip = l1 + 1 + l2 + (l1 + 1 + l2 < size);
            text += skip;
            size -= skip;
        }
    }
    static struct act_rdt_schemata s, back;
    if (act_rdt_schemata_parse(text, size, &s, err) != SM_OK) {
        return 0;
    }
    SM_ASSERT(act_rdt_schemata_format(&s, text_buf, sizeof text_buf, err) ==
              SM_OK);
    SM_ASSERT(strlen(text_buf) <= size + 1);
    SM_ASSERT(act_rdt_schemata_parse(text_buf, strlen(text_buf), &back, err) ==
              SM_OK);
    SM_ASSERT(memcmp(&s, &back, sizeof s) == 0);
    if (!have_info || s.n_l3 == 0) {
        return 0;
    }
    uint32_t want = (uint32_t)(size % 70), applied = 0;
    SM_ASSERT(act_rdt_schemata_set_ways(&s, &info, want, &applied, err) ==
              SM_OK);
    SM_ASSERT(applied >= info.min_cbm_bits && applied <= info.cbm_bits);
    SM_ASSERT(act_rdt_ways(&s) == applied);
    for (size_t d = 0; d < s.n_l3; d++) {
        SM_ASSERT((s.l3_mask[d] & ~info.cbm_mask) == 0);
    }
    return 0;
}
