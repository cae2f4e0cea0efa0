/* Operator command templates: expansion into an argv, and a bounded runner.
 *
 * Expansion never goes through a shell. The template is split on whitespace
 * first and the values are substituted inside the words afterwards, so a
 * value can neither add a word nor be interpreted: "; rm -rf /" is one
 * harmless argument. Templates are parsed twice, once to validate and count
 * the words and once to build them, so that a bad template allocates
 * nothing.
 *
 * The runner spawns the program in its own process group with stdout and
 * stderr on one pipe. It polls the pipe and waitpid(WNOHANG) in short
 * sleeps until the child exits or the deadline passes, keeping the first
 * max_output bytes and discarding the rest (a child must never block on a
 * full pipe). On the deadline it kills the whole group. Once the child
 * exited it drains what is already in the pipe and stops: a grandchild
 * that keeps the pipe open does not hold the caller. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "actuate/actuate.h"
#include "base/alloc.h"
#include "base/err.h"

extern char **environ;

static const char *const placeholder_names[] = {"service", "instance",
                                                "resource", "amount"};

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' ||
           c == '\f';
}

static const char *value_of(const struct act_cmd_values *v, size_t k)
{
    switch (k) {
        case 0:
            return v->service;
        case 1:
            return v->instance;
        case 2:
            return v->resource;
        default:
            return v->amount;
    }
}

/* Appends @n bytes of @s to the word in @buf (ACT_CMD_MAX_ARG bytes). */
static int word_append(char *buf, size_t *wlen, const char *s, size_t n)
{
    if (n > ACT_CMD_MAX_ARG - *wlen) {
        return SM_ETOOBIG;
    }
    if (buf != NULL) {
        memcpy(buf + *wlen, s, n);
    }
    *wlen += n;
    return SM_OK;
}

/* Walks @t. With @values NULL, only validates (literal text only counts
 * toward the word limit) and counts words in @argc. Otherwise also
 * substitutes and stores each word in @argv (room for *argc words, as
 * counted by a validating pass). */
static int scan(const char *t,
                size_t len,
                const struct act_cmd_values *values,
                char **argv,
                size_t *argc,
                char *errmsg)
{
    char buf[ACT_CMD_MAX_ARG];
    size_t i = 0, n = 0;
    if (t == NULL) {
        sm_errmsg_printf(errmsg, "command template: NULL");
        return SM_EINVAL;
    }
    if (len > ACT_CMD_MAX_TEMPLATE) {
        sm_errmsg_printf(errmsg, "command template: %zu bytes, more than %d",
                         len, ACT_CMD_MAX_TEMPLATE);
        return SM_ETOOBIG;
    }
    for (;;) {
        while (i < len && is_space(t[i])) {
            i++;
        }
        if (i >= len) {
            break;
        }
        if (n == ACT_CMD_MAX_ARGS) {
            sm_errmsg_printf(errmsg, "command template: more than %d words",
                             ACT_CMD_MAX_ARGS);
            return SM_ETOOBIG;
        }
        size_t start = i, wlen = 0;
        while (i < len && !is_space(t[i])) {
            char c = t[i];
            const char *piece = &t[i];
            size_t plen = 1, adv = 1;
            if (c == '\0') {
                sm_errmsg_printf(errmsg,
                                 "command template: NUL byte at offset %zu", i);
                return SM_EMALFORMED;
            }
            if (c == '{' && i + 1 < len && t[i + 1] == '{') {
                adv = 2;
            } else if (c == '}' && i + 1 < len && t[i + 1] == '}') {
                adv = 2;
            } else if (c == '}') {
                sm_errmsg_printf(
                    errmsg, "command template: unmatched '}' at offset %zu", i);
                return SM_EMALFORMED;
            } else if (c == '{') {
                size_t j = i + 1;
                while (j < len && t[j] != '}' && t[j] != '{' &&
                       !is_space(t[j]) && t[j] != '\0') {
                    j++;
                }
                if (j >= len || t[j] != '}') {
                    sm_errmsg_printf(errmsg,
                                     "command template: unterminated "
                                     "placeholder at offset %zu",
                                     i);
                    return SM_EMALFORMED;
                }
                size_t k, nlen = j - i - 1;
                for (k = 0; k < 4; k++) {
                    if (strlen(placeholder_names[k]) == nlen &&
                        memcmp(placeholder_names[k], t + i + 1, nlen) == 0) {
                        break;
                    }
                }
                if (k == 4) {
                    sm_errmsg_printf(errmsg,
                                     "command template: unknown placeholder "
                                     "{%.*s} at offset %zu (known: {service}, "
                                     "{instance}, {resource}, {amount})",
                                     (int)(nlen > 32 ? 32 : nlen), t + i + 1,
                                     i);
                    return SM_EMALFORMED;
                }
                adv = j - i + 1;
                plen = 0;
                if (values != NULL) {
                    const char *v = value_of(values, k);
                    if (v == NULL) {
                        sm_errmsg_printf(errmsg,
                                         "command template: {%s} has no value",
                                         placeholder_names[k]);
                        return SM_EINVAL;
                    }
                    if (strpbrk(v, "\n\r") != NULL) {
                        sm_errmsg_printf(errmsg,
                                         "command template: the value of {%s} "
                                         "contains a newline",
                                         placeholder_names[k]);
                        return SM_EINVAL;
                    }
                    piece = v;
                    plen = strlen(v);
                }
            }
            if (word_append(values != NULL ? buf : NULL, &wlen, piece, plen) !=
                SM_OK) {
                sm_errmsg_printf(errmsg,
                                 "command template: word at offset %zu longer "
                                 "than %d bytes",
                                 start, ACT_CMD_MAX_ARG);
                return SM_ETOOBIG;
            }
            i += adv;
        }
        if (values != NULL) {
            if (n == 0 && wlen == 0) {
                sm_errmsg_printf(errmsg,
                                 "command template: empty program name");
                return SM_EINVAL;
            }
            argv[n] = sm_strndup(buf, wlen);
            if (argv[n] == NULL) {
                sm_errmsg_printf(errmsg, "command template: out of memory");
                return SM_ENOMEM;
            }
        }
        n++;
    }
    if (n == 0) {
        sm_errmsg_printf(errmsg, "command template: empty");
        return SM_EMALFORMED;
    }
    *argc = n;
    return SM_OK;
}

int act_cmd_template_check(const char *template, size_t len, char *errmsg)
{
    size_t n;
    return scan(template, len, NULL, NULL, &n, errmsg);
}

int act_cmd_expand(const char *template,
                   size_t len,
                   const struct act_cmd_values *values,
                   char ***argv,
                   size_t *argc,
                   char *errmsg)
{
    static const struct act_cmd_values none = {NULL, NULL, NULL, NULL};
    size_t n;
    *argv = NULL;
    int rv = scan(template, len, NULL, NULL, &n, errmsg);
    if (rv != SM_OK) {
        return rv;
    }
    char **v = sm_calloc(n + 1, sizeof *v);
    if (v == NULL) {
        sm_errmsg_printf(errmsg, "command template: out of memory");
        return SM_ENOMEM;
    }
    rv = scan(template, len, values != NULL ? values : &none, v, &n, errmsg);
    if (rv != SM_OK) {
        act_cmd_argv_free(v);
        return rv;
    }
    *argv = v;
    if (argc != NULL) {
        *argc = n;
    }
    return SM_OK;
}

void act_cmd_argv_free(char **argv)
{
    if (argv == NULL) {
        return;
    }
    for (size_t i = 0; argv[i] != NULL; i++) {
        sm_free(argv[i]);
    }
    sm_free(argv);
}

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Reads what the pipe holds now, keeping up to the room left in @res.
 * Returns true at end of file or on a read error. */
static bool drain(int fd, struct act_cmd_result *res, size_t max_output)
{
    char scratch[4096];
    for (;;) {
        char *dst = scratch;
        size_t room = sizeof scratch;
        if (res->output_len < max_output) {
            dst = res->output + res->output_len;
            room = max_output - res->output_len;
        }
        ssize_t r = read(fd, dst, room);
        if (r > 0) {
            if (dst == scratch) {
                res->output_truncated = true;
            } else {
                res->output_len += (size_t)r;
            }
            continue;
        }
        if (r < 0 && errno == EINTR) {
            continue;
        }
        return !(r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
    }
}

static void set_status(struct act_cmd_result *res, int status)
{
    if (WIFEXITED(status)) {
        res->exited = true;
        res->exit_code = WEXITSTATUS(status);
    } else if (WIFSIGNALED(status)) {
        res->term_signal = WTERMSIG(status);
    }
}

static int spawn_error(int err, const char *prog, char *errmsg)
{
    int code;
    switch (err) {
        case ENOENT:
            code = SM_ENOTFOUND;
            break;
        case EACCES:
        case EPERM:
            code = SM_EPERM;
            break;
        case ENOMEM:
            code = SM_ENOMEM;
            break;
        default:
            code = SM_EIO;
            break;
    }
    sm_errmsg_printf(errmsg, "run %.128s: %s (errno %d)", prog, strerror(err),
                     err);
    return code;
}

int act_cmd_run(char *const argv[],
                uint64_t deadline_ns,
                size_t max_output,
                struct act_cmd_result *res,
                char *errmsg)
{
    memset(res, 0, sizeof *res);
    if (argv == NULL || argv[0] == NULL || argv[0][0] == '\0') {
        sm_errmsg_printf(errmsg, "run: empty command");
        return SM_EINVAL;
    }
    if (max_output == SIZE_MAX) {
        max_output--;
    }
    res->output = sm_malloc(max_output + 1);
    if (res->output == NULL) {
        sm_errmsg_printf(errmsg, "run %.128s: out of memory", argv[0]);
        return SM_ENOMEM;
    }
    int fds[2];
    if (pipe(fds) != 0) {
        int err = errno;
        act_cmd_result_free(res);
        return spawn_error(err, argv[0], errmsg) == SM_ENOMEM ? SM_ENOMEM
                                                              : SM_EIO;
    }
    (void)fcntl(fds[0], F_SETFD, FD_CLOEXEC);
    (void)fcntl(fds[1], F_SETFD, FD_CLOEXEC);
    (void)fcntl(fds[0], F_SETFL, O_NONBLOCK);

    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    int rv = posix_spawn_file_actions_init(&fa);
    if (rv == 0) {
        rv = posix_spawnattr_init(&attr);
        if (rv != 0) {
            posix_spawn_file_actions_destroy(&fa);
        }
    }
    if (rv == 0) {
        /* dup2 clears close-on-exec on the child's 1 and 2 only. */
        (void)posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY,
                                               0);
        (void)posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
        (void)posix_spawn_file_actions_adddup2(&fa, fds[1], 2);
        (void)posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP |
                                                  POSIX_SPAWN_SETSIGMASK |
                                                  POSIX_SPAWN_SETSIGDEF);
        (void)posix_spawnattr_setpgroup(&attr, 0);
        (void)posix_spawnattr_setsigmask(&attr, &none);
        (void)posix_spawnattr_setsigdefault(&attr, &all);
        pid_t pid;
        rv = posix_spawnp(&pid, argv[0], &fa, &attr, argv, environ);
        posix_spawn_file_actions_destroy(&fa);
        posix_spawnattr_destroy(&attr);
        close(fds[1]);
        if (rv != 0) {
            close(fds[0]);
            act_cmd_result_free(res);
            return spawn_error(rv, argv[0], errmsg);
        }

        bool eof = false;
        int status = 0;
        for (;;) {
            if (!eof) {
                eof = drain(fds[0], res, max_output);
            }
            pid_t w = waitpid(pid, &status, WNOHANG);
            if (w == pid) {
                if (!eof) {
                    (void)drain(fds[0], res, max_output);
                }
                set_status(res, status);
                break;
            }
            if (w < 0 && errno != EINTR) {
                int err = errno;
                (void)killpg(pid, SIGKILL);
                close(fds[0]);
                act_cmd_result_free(res);
                sm_errmsg_printf(errmsg, "run %.128s: waitpid: %s", argv[0],
                                 strerror(err));
                return SM_EIO;
            }
            uint64_t now = mono_ns();
            if (now >= deadline_ns) {
                (void)killpg(pid, SIGKILL);
                (void)kill(pid, SIGKILL);
                while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
                }
                if (!eof) {
                    (void)drain(fds[0], res, max_output);
                }
                res->timed_out = true;
                set_status(res, status);
                break;
            }
            /* Sleep at most 5 ms, less when the deadline is nearer. */
            uint64_t nap = deadline_ns - now;
            if (nap > 5000000) {
                nap = 5000000;
            }
            if (!eof) {
                struct pollfd p = {.fd = fds[0], .events = POLLIN};
                (void)poll(&p, 1, (int)((nap + 999999) / 1000000));
            } else {
                struct timespec ts = {0, (long)nap};
                (void)nanosleep(&ts, NULL);
            }
        }
        close(fds[0]);
        res->output[res->output_len] = '\0';
        return SM_OK;
    }
    close(fds[0]);
    close(fds[1]);
    act_cmd_result_free(res);
    return spawn_error(rv, argv[0], errmsg);
}

void act_cmd_result_free(struct act_cmd_result *res)
{
    sm_free(res->output);
    memset(res, 0, sizeof *res);
}
