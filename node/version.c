/* `sagemesh --version`: what this binary is and what it links. */
#include <http_parser.h>
#include <uv.h>
#include <yajl/yajl_version.h>
#include <zlib.h>

#include "consensus/consensus.h"
#include "gvae/gvae.h"
#include "node/cli.h"
#include "node/node.h"
#include "sm_build.h"
#include "sm_revision.h"
#include "transport/transport.h"

static void print_library(void *arg, const char *name, const char *version)
{
    fprintf((FILE *)arg, "  %-12s %s\n", name, version);
}

int node__cmd_version(int argc, char **argv, FILE *out, FILE *err)
{
    (void)argc;
    (void)argv;
    (void)err;
    fprintf(out, "sagemesh %s\n", SM_VERSION);
    fprintf(out, "revision:   %s\n", SM_REVISION);
    fprintf(out, "build:      %s, %s, sanitize=%s, %s\n", SM_BUILD_TYPE,
            SM_LINKAGE, SM_SANITIZE, SM_COMPILER);
    fprintf(out, "libraries:\n");

    char http_parser[32];
    unsigned long v = http_parser_version();
    snprintf(http_parser, sizeof http_parser, "%lu.%lu.%lu", (v >> 16) & 255,
             (v >> 8) & 255, v & 255);
    print_library(out, "libuv", uv_version_string());
    print_library(out, "http-parser", http_parser);
    print_library(out, "zlib", zlibVersion());
    char yajl[32];
    int y = yajl_version();
    snprintf(yajl, sizeof yajl, "%d.%d.%d", y / 10000, y / 100 % 100, y % 100);
    print_library(out, "yajl", yajl);
    tp_libraries(print_library, out);
    cons_libraries(print_library, out);
    gvae_libraries(print_library, out);
    return NODE_EXIT_OK;
}
