/* Fuzz target: the cgroup knob and /proc/PID/cgroup parsers. */
#include <stdint.h>
#include <string.h>

#include "actuate/actuate.h"
#include "base/err.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The first byte picks a knob file (or /proc/PID/cgroup for either layout);
 * the rest is the file's content. Whatever parses must format, and the
 * formatted text must parse back to an equal setting. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) {
        return 0;
    }
    unsigned pick = data[0] % (ACT_CG_FILE__COUNT + 2);
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    char err[SM_ERRMSG_SIZE];
    if (pick >= ACT_CG_FILE__COUNT) {
        struct act_cg_group g;
        enum act_cg_layout l =
            pick == ACT_CG_FILE__COUNT ? ACT_CG_V1 : ACT_CG_V2;
        if (act_cg_parse_proc_cgroup(l, text, len, &g, err) == SM_OK) {
            for (int c = 0; c < ACT_CG_CTRL__COUNT; c++) {
                SM_ASSERT(g.has[c] || g.path[c][0] == '\0');
                SM_ASSERT(memchr(g.path[c], '\0', ACT_CG_PATH_SIZE) != NULL);
            }
        }
        return 0;
    }
    enum act_cg_file file = (enum act_cg_file)pick;
    struct act_setting s;
    memset(&s, 0, sizeof s);
    s.period = 100000; /* cfs_quota_us alone carries no period */
    if (act_cg_parse(file, text, len, &s, err) != SM_OK) {
        return 0;
    }
    if (file == ACT_CG_FILE_CFS_PERIOD) {
        s.unlimited = true; /* cfs_period_us alone carries no quota */
    }
    char buf[ACT_CG_CPUS_SIZE + 64];
    SM_ASSERT(act_cg_format(file, &s, buf, sizeof buf, err) == SM_OK);
    struct act_setting back = s;
    SM_ASSERT(act_cg_parse(file, buf, strlen(buf), &back, err) == SM_OK);
    SM_ASSERT(act_setting_equal(&s, &back));
    SM_ASSERT(back.native == s.native);
    return 0;
}
