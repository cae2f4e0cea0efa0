/* Fuzz target: operator command templates (check and expansion). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "actuate/actuate.h"
#include "base/err.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const struct act_cmd_values values = {"svc; rm -rf /", "$(x) `y`",
                                                 "cpu", "1.5 2"};
    char err[SM_ERRMSG_SIZE];
    char **argv = NULL;
    size_t argc = 0;
    const char *t = (const char *)data;
    int checked = act_cmd_template_check(t, size, err);
    int rv = act_cmd_expand(t, size, &values, &argv, &argc, err);
    if (rv == SM_OK) {
        /* A valid expansion came from a valid template, is NULL-terminated,
         * starts with a program name and contains no newline. */
        if (checked != SM_OK || argv == NULL || argc == 0 ||
            argv[argc] != NULL || argv[0][0] == '\0') {
            abort();
        }
        for (size_t i = 0; i < argc; i++) {
            if (strpbrk(argv[i], "\n\r") != NULL) {
                abort();
            }
        }
    } else if (argv != NULL || (checked != SM_OK && rv != checked)) {
        abort();
    }
    act_cmd_argv_free(argv);
    return 0;
}
