/* Fuzz target: the tc class output parser and the rate, size and handle
 * syntaxes around it. */
#include <stdint.h>
#include <string.h>

#include "actuate/actuate.h"
#include "base/err.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Checks the properties of one parsed class: rates in range, and the
 * change command for it builds. */
static void check_htb(const struct act_tc_htb *h)
{
    SM_ASSERT(h->rate >= 1 && h->rate <= ACT_TC_RATE_MAX);
    SM_ASSERT(h->ceil >= 1 && h->ceil <= ACT_TC_RATE_MAX);
    SM_ASSERT(h->burst <= ACT_TC_SIZE_MAX && h->cburst <= ACT_TC_SIZE_MAX);
    SM_ASSERT(!h->root || h->parent.minor == 0);
    struct act_tc tc;
    char err[SM_ERRMSG_SIZE];
    SM_ASSERT(act_tc_init(&tc, NULL, "eth0", "1:10", "1mbit", err) == SM_OK);
    struct act_tc_argv argv;
    SM_ASSERT(act_tc_change_argv(&tc, h, &argv, err) == SM_OK);
    SM_ASSERT(argv.argv[0] != NULL && strcmp(argv.argv[0], "tc") == 0);
}

/* Whatever rate parses formats back to itself; shown rates are fixed
 * points, never above the rate. */
static void check_rate(uint64_t bits)
{
    char buf[ACT_TC_TEXT_SIZE], err[SM_ERRMSG_SIZE];
    uint64_t back = 0;
    SM_ASSERT(act_tc_rate_format(bits, buf, sizeof buf, err) == SM_OK);
    SM_ASSERT(act_tc_rate_parse(buf, strlen(buf), &back, err) == SM_OK);
    SM_ASSERT(back == bits);
    uint64_t shown = act_tc_rate_shown(bits);
    SM_ASSERT(shown <= bits && act_tc_rate_shown(shown) == shown);
}

/* The first byte picks what the rest is: `tc class show` output (classid
 * 1:10), a rate, a size, a class list or a handle. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) {
        return 0;
    }
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    char err[SM_ERRMSG_SIZE];
    uint64_t v;
    struct act_tc_htb h;
    struct act_tc_classes c;
    struct act_tc_handle id = {1, 0x10};
    switch (data[0] % 5) {
        case 0:
            if (act_tc_parse_show(text, len, id, &h, err) == SM_OK) {
                SM_ASSERT(h.classid.major == 1 && h.classid.minor == 0x10);
                check_htb(&h);
            }
            break;
        case 1:
            if (act_tc_rate_parse(text, len, &v, err) == SM_OK) {
                check_rate(v);
            }
            break;
        case 2:
            if (act_tc_size_parse(text, len, &v, err) == SM_OK) {
                SM_ASSERT(v <= ACT_TC_SIZE_MAX);
            }
            break;
        case 3:
            if (act_tc_classes_parse(text, len, &c, err) == SM_OK) {
                SM_ASSERT(c.n >= 1 && c.n <= ACT_TC_MAX_CLASSES);
                for (size_t i = 0; i < c.n; i++) {
                    check_rate(c.rate[i]);
                    bool exact = false;
                    SM_ASSERT(act_tc_class_index(&c, c.rate[i], &exact) ==
                              (int)i);
                    SM_ASSERT(exact);
                }
            }
            break;
        default:
            if (act_tc_handle_parse(text, len, &id, err) == SM_OK) {
                char buf[ACT_TC_TEXT_SIZE];
                struct act_tc_handle back;
                act_tc_handle_format(id, buf);
                SM_ASSERT(act_tc_handle_parse(buf, strlen(buf), &back, err) ==
                          SM_OK);
                SM_ASSERT(back.major == id.major && back.minor == id.minor);
            }
            break;
    }
    return 0;
}
