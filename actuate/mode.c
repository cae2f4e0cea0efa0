/* Actuation modes and their flag spellings. */
#include <string.h>

#include "actuate/actuate.h"
#include "base/err.h"

static const char *const mode_names[] = {
    [ACT_MODE_DRY_RUN] = "dry-run",
    [ACT_MODE_ON] = "on",
    [ACT_MODE_OFF] = "off",
    [ACT_MODE_APPROVE] = "approve",
};

int act_mode_parse(const char *text, enum act_mode *mode)
{
    for (size_t i = 0; i < sizeof mode_names / sizeof mode_names[0]; i++) {
        if (strcmp(text, mode_names[i]) == 0) {
            *mode = (enum act_mode)i;
            return SM_OK;
        }
    }
    return SM_EINVAL;
}

const char *act_mode_name(enum act_mode mode)
{
    if ((unsigned)mode >= sizeof mode_names / sizeof mode_names[0]) {
        return "unknown";
    }
    return mode_names[mode];
}
