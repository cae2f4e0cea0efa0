/* Private to actuate/: the small parsers and the file reading and writing
 * that the cgroup, resctrl, cpufreq and tc actuators share. */
#ifndef SM_ACTUATE_SYSFS_INTERNAL_H
#define SM_ACTUATE_SYSFS_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "actuate/actuate.h"

/* Parses exactly @n decimal digits at @p (1 to 20, no sign) into @v.
 * Returns false, with @v untouched, for no digits, a non-digit or a value
 * above UINT64_MAX. */
bool act__parse_u64(const char *p, size_t n, uint64_t *v);

/* As act__parse_u64, for 1 to 10 digits and a value that fits in a
 * uint32_t. */
bool act__parse_u32(const char *p, size_t n, uint32_t *v);

/* Parses exactly @n hex digits at @p (either case, 1 to @max_digits, at
 * most 16) into @v. Returns false, with @v untouched, otherwise. */
bool act__parse_hex(const char *p, size_t n, size_t max_digits, uint64_t *v);

/* Parses the kernel's cpu list syntax ("0-3,6"; "" is the empty set) of @n
 * bytes at @p into the bitmap @bits (bit c of bits[c / 64] for CPU c).
 * Returns SM_OK, or SM_EINVAL with @errmsg naming the item (not a number
 * or range, a reversed range, a CPU >= ACT_CG_MAX_CPUS, a trailing comma);
 * @bits is then partly filled. */
int act__cpulist_parse(const char *p,
                       size_t n,
                       uint64_t bits[ACT_CG_MAX_CPUS / 64],
                       char *errmsg);

/* Maps the errno @e of a failed open, read, write or mkdir to the codes the
 * actuators promise: SM_ENOTFOUND, SM_EPERM (read-only too), SM_EINVAL
 * (the kernel refused the value), SM_EEXIST, SM_ENOMEM; anything else and
 * 0 (a short write) SM_EIO. */
int act__errno_code(int e);

/* Writes "cannot WHAT PATH: CAUSE" to @errmsg, CAUSE starting with
 * "permission denied, " when that is the code, and returns
 * act__errno_code(@e). @e 0 stands for a short write. */
int act__io_fail(char *errmsg, const char *what, const char *path, int e);

/* Reads all of the file @path (opened without following a last symlink)
 * into @buf, which has room for @max + 1 bytes, and sets *@len. Returns
 * SM_OK, SM_EIO for a directory, SM_EINVAL for more than @max bytes, or
 * what act__io_fail() says for a failed open or read; @errmsg names
 * @path. */
int act__read_file(const char *path,
                   char *buf,
                   size_t max,
                   size_t *len,
                   char *errmsg);

/* Replaces the content of the existing file @path (never created, a last
 * symlink not followed) with @text in one write() call, since a kernel
 * file parses each call on its own. Returns SM_OK, SM_EIO for a directory
 * or a short write, or what act__io_fail() says for a failed open, write
 * or close; @errmsg names @path. */
int act__write_file(const char *path, const char *text, char *errmsg);

/* Expands @tmpl, in which every "{service}" stands for @service, into @out
 * (@cap bytes, NUL-terminated). Any other brace is refused. Returns SM_OK,
 * or SM_EINVAL with "@what template ...: ..." in @errmsg (a stray brace,
 * or the result does not fit). Pure. */
int act__expand_service(const char *tmpl,
                        const char *service,
                        const char *what,
                        char *out,
                        size_t cap,
                        char *errmsg);

#endif /* SM_ACTUATE_SYSFS_INTERNAL_H */
