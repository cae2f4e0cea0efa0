/* Process entry point: everything else happens in node_main(). */
#include <stdio.h>

#include "node/node.h"

int main(int argc, char **argv)
{
    return node_main(argc, argv, stdout, stderr);
}
