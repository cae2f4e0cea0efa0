/* `sagemesh keygen`: create a cluster secret, never clobbering one by accident.
 *
 * The secret is written to a temporary file in the target's directory
 * (mode 0600, fsynced), then published with link(2), which fails if the target
 * exists, so two concurrent keygens cannot both win and an existing secret is
 * never replaced. With --force it is published with rename(2) instead, which
 * replaces the target atomically: readers see the old or the new secret,
 * never a torn one. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "node/cli.h"
#include "node/node.h"
#include "transport/transport.h"

static int write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            return -1;
        }
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Writes @text to @path as described above. On failure prints why to @err,
 * leaves no temporary file behind, and returns -1. */
static int publish_secret(const char *path,
                          const char *text,
                          int force,
                          FILE *err)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >=
        (int)sizeof tmp) {
        fprintf(err, "sagemesh keygen: path too long: %s\n", path);
        return -1;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        fprintf(err, "sagemesh keygen: cannot create %s: %s\n", tmp,
                strerror(errno));
        return -1;
    }
    const char *step = "write";
    int ok = write_all(fd, text, strlen(text)) == 0;
    if (ok) {
        step = "fsync";
        ok = fsync(fd) == 0;
    }
    if (close(fd) != 0 && ok) {
        step = "close";
        ok = 0;
    }
    if (ok) {
        step = force ? "rename to" : "link to";
        ok = (force ? rename(tmp, path) : link(tmp, path)) == 0;
    }
    int saved = errno;
    if (!ok || !force) {
        unlink(tmp);
    }
    if (!ok) {
        if (saved == EEXIST) {
            fprintf(err,
                    "sagemesh keygen: %s already exists; use --force to "
                    "replace it (every peer must then get the new secret)\n",
                    path);
        } else {
            fprintf(err, "sagemesh keygen: %s %s: %s\n", step, path,
                    strerror(saved));
        }
        return -1;
    }
    return 0;
}

int node__cmd_keygen(int argc, char **argv, FILE *out, FILE *err)
{
    static const struct option options[] = {
        {"out", required_argument, NULL, 'O'},
        {"force", no_argument, NULL, 'f'},
        {NULL, 0, NULL, 0},
    };
    const char *path = NULL;
    int force = 0;
    optind = 0; /* 0 makes glibc reinitialise getopt for a new argv */
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (c) {
            case 'O':
                path = optarg;
                break;
            case 'f':
                force = 1;
                break;
            default:
                fprintf(err,
                        "sagemesh keygen: unknown or incomplete option '%s'; "
                        "see 'sagemesh keygen --help'\n",
                        argv[optind - 1]);
                return NODE_EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(err, "sagemesh keygen: unexpected argument '%s'\n",
                argv[optind]);
        return NODE_EXIT_USAGE;
    }
    if (tp_init() != 0) {
        fprintf(err, "sagemesh keygen: cannot initialise libsodium\n");
        return NODE_EXIT_FAILED;
    }
    struct tp_secret secret;
    char text[TP_SECRET_HEX_SIZE];
    tp_secret_generate(&secret);
    tp_secret_format(&secret, text);
    tp_secret_wipe(&secret);

    int rc = NODE_EXIT_OK;
    if (path == NULL) {
        fputs(text, out);
    } else if (publish_secret(path, text, force, err) != 0) {
        rc = NODE_EXIT_FAILED;
    } else {
        fprintf(err, "sagemesh keygen: wrote a new cluster secret to %s\n",
                path);
    }
    explicit_bzero(text, sizeof text);
    return rc;
}
