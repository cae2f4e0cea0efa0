/* What the actuators share: small parsers, kernel-file reading and writing,
 * errno mapping (see sysfs_internal.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "actuate/sysfs_internal.h"
#include "base/err.h"

bool act__parse_u64(const char *p, size_t n, uint64_t *v)
{
    if (n == 0 || n > 20) {
        return false;
    }
    uint64_t x = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') {
            return false;
        }
        unsigned d = (unsigned)(p[i] - '0');
        if (x > (UINT64_MAX - d) / 10) {
            return false;
        }
        x = x * 10 + d;
    }
    *v = x;
    return true;
}

bool act__parse_u32(const char *p, size_t n, uint32_t *v)
{
    uint64_t x;
    if (n > 10 || !act__parse_u64(p, n, &x) || x > UINT32_MAX) {
        return false;
    }
    *v = (uint32_t)x;
    return true;
}

bool act__parse_hex(const char *p, size_t n, size_t max_digits, uint64_t *v)
{
    if (n == 0 || n > max_digits || n > 16) {
        return false;
    }
    uint64_t x = 0;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        unsigned d;
        if (c >= '0' && c <= '9') {
            d = (unsigned)(c - '0');
        } else if (c >= 'a' && c <= 'f') {
            d = (unsigned)(c - 'a' + 10);
        } else if (c >= 'A' && c <= 'F') {
            d = (unsigned)(c - 'A' + 10);
        } else {
            return false;
        }
        x = x << 4 | d;
    }
    *v = x;
    return true;
}

int act__cpulist_parse(const char *p,
                       size_t n,
                       uint64_t bits[ACT_CG_MAX_CPUS / 64],
                       char *errmsg)
{
    memset(bits, 0, ACT_CG_MAX_CPUS / 8);
    size_t i = 0;
    while (i < n) {
        size_t end = i;
        while (end < n && p[end] != ',') {
            end++;
        }
        const char *dash = memchr(p + i, '-', end - i);
        uint64_t lo, hi;
        bool ok;
        if (dash != NULL) {
            size_t d = (size_t)(dash - p);
            ok = act__parse_u64(p + i, d - i, &lo) &&
                 act__parse_u64(dash + 1, end - d - 1, &hi);
        } else {
            ok = act__parse_u64(p + i, end - i, &lo);
            hi = lo;
        }
        if (!ok) {
            sm_errmsg_printf(errmsg, "bad cpu list item \"%.*s\"",
                             (int)(end - i), p + i);
            return SM_EINVAL;
        }
        if (lo > hi || hi >= ACT_CG_MAX_CPUS) {
            sm_errmsg_printf(errmsg, "cpu range \"%.*s\" %s", (int)(end - i),
                             p + i,
                             lo > hi ? "is reversed" : "is past the limit");
            return SM_EINVAL;
        }
        for (uint64_t c = lo; c <= hi; c++) {
            bits[c / 64] |= UINT64_C(1) << (c % 64);
        }
        if (end < n && end + 1 == n) {
            sm_errmsg_printf(errmsg, "cpu list ends with a comma");
            return SM_EINVAL;
        }
        i = end + 1;
    }
    return SM_OK;
}

int act__errno_code(int e)
{
    switch (e) {
        case ENOENT:
        case ENOTDIR:
            return SM_ENOTFOUND;
        case EACCES:
        case EPERM:
        case EROFS:
            return SM_EPERM;
        case EINVAL:
        case ERANGE:
            return SM_EINVAL;
        case EEXIST:
            return SM_EEXIST;
        case ENOMEM:
            return SM_ENOMEM;
        default:
            return SM_EIO;
    }
}

int act__io_fail(char *errmsg, const char *what, const char *path, int e)
{
    int rv = act__errno_code(e);
    sm_errmsg_printf(errmsg, "cannot %s %s: %s%s", what, path,
                     rv == SM_EPERM ? "permission denied, " : "",
                     e != 0 ? strerror(e) : "short write");
    return rv;
}

int act__read_file(const char *path,
                   char *buf,
                   size_t max,
                   size_t *len,
                   char *errmsg)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        return act__io_fail(errmsg, "open", path, errno);
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return act__io_fail(errmsg, "stat", path, e);
    }
    if (S_ISDIR(st.st_mode)) {
        close(fd);
        sm_errmsg_printf(errmsg, "%s is a directory, not a knob file", path);
        return SM_EIO;
    }
    /* One byte past @max tells a file of exactly @max bytes from a longer
     * one. */
    size_t n = 0;
    while (n <= max) {
        ssize_t got = read(fd, buf + n, max + 1 - n);
        if (got < 0) {
            int e = errno;
            close(fd);
            return act__io_fail(errmsg, "read", path, e);
        }
        if (got == 0) {
            break;
        }
        n += (size_t)got;
    }
    close(fd);
    if (n > max) {
        sm_errmsg_printf(errmsg, "%s: more than %zu bytes", path, max);
        return SM_EINVAL;
    }
    *len = n;
    return SM_OK;
}

int act__write_file(const char *path, const char *text, char *errmsg)
{
    int fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        if (errno == EISDIR) {
            sm_errmsg_printf(errmsg, "%s is a directory, not a knob file",
                             path);
            return SM_EIO;
        }
        return act__io_fail(errmsg, "open", path, errno);
    }
    size_t len = strlen(text);
    ssize_t w = write(fd, text, len);
    if (w != (ssize_t)len) {
        int e = w < 0 ? errno : 0;
        close(fd);
        return act__io_fail(errmsg, "write", path, e);
    }
    if (close(fd) != 0) {
        return act__io_fail(errmsg, "close", path, errno);
    }
    return SM_OK;
}

int act__expand_service(const char *tmpl,
                        const char *service,
                        const char *what,
                        char *out,
                        size_t cap,
                        char *errmsg)
{
    static const char var[] = "{service}";
    size_t n = 0;
    for (const char *p = tmpl; *p != '\0';) {
        const char *piece = p;
        size_t len = 1;
        if (*p == '{' && strncmp(p, var, sizeof var - 1) == 0) {
            piece = service;
            len = strlen(service);
            p += sizeof var - 1;
        } else if (*p == '{' || *p == '}') {
            sm_errmsg_printf(errmsg,
                             "%s template \"%.64s\": only {service} may "
                             "appear in braces",
                             what, tmpl);
            return SM_EINVAL;
        } else {
            p++;
        }
        if (n + len >= cap) {
            sm_errmsg_printf(errmsg, "%s template \"%.64s\": too long", what,
                             tmpl);
            return SM_EINVAL;
        }
        memcpy(out + n, piece, len);
        n += len;
    }
    out[n] = '\0';
    return SM_OK;
}
