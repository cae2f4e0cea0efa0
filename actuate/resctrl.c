/* The agent's LLC actuator: L3 cache ways through resctrl schemata. */

/* Design. The schemata parser keeps what the agent changes, the L3 masks,
 * as numbers, and every other line as text with its blanks removed (the
 * kernel pads names and values, and accepts them unpadded), so a write
 * puts the other lines back as they were. Idempotence compares masks, not
 * text: the kernel's zero padding ("L3:0=000ff") does not count as a
 * difference. A write sends the whole schemata in one write() call, since
 * resctrl parses each call on its own.
 *
 * Paths are the root, one group name (a single component, checked) and a
 * fixed file name; files are opened without O_CREAT and with O_NOFOLLOW. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "actuate/actuate.h"
#include "actuate/sysfs_internal.h"
#include "base/err.h"

#define DEFAULT_ROOT "/sys/fs/resctrl"
#define L3_NAME      "L3"

/* ---- Small parsers --------------------------------------------------------
 */

static bool is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r';
}

/* @n without one trailing newline at @p. */
static size_t chomp(const char *p, size_t n)
{
    return n > 0 && p[n - 1] == '\n' ? n - 1 : n;
}

static uint32_t popcount64(uint64_t x)
{
    uint32_t n = 0;
    for (; x != 0; x &= x - 1) {
        n++;
    }
    return n;
}

static uint32_t lowest_bit(uint64_t x)
{
    uint32_t i = 0;
    while (i < 63 && !((x >> i) & 1u)) {
        i++;
    }
    return i;
}

/* True when @m is one run of set bits. */
static bool contiguous(uint64_t m)
{
    if (m == 0) {
        return false;
    }
    uint64_t run = m >> lowest_bit(m);
    return (run & (run + 1)) == 0;
}

/* The mask of @ways bits starting at bit @shift (ways + shift <= 64). */
static uint64_t run_mask(uint32_t ways, uint32_t shift)
{
    uint64_t run = ways >= 64 ? UINT64_MAX : (UINT64_C(1) << ways) - 1;
    return run << shift;
}

int act_rdt_parse_info(const char *mask_text,
                       size_t mask_len,
                       const char *min_text,
                       size_t min_len,
                       struct act_rdt_info *info,
                       char *errmsg)
{
    uint64_t mask;
    uint32_t min;
    mask_len = chomp(mask_text, mask_len);
    min_len = chomp(min_text, min_len);
    if (!act__parse_hex(mask_text, mask_len, 16, &mask) || mask == 0 ||
        (mask & (mask + 1)) != 0) {
        sm_errmsg_printf(errmsg,
                         "cbm_mask \"%.*s\" is not a hex mask of contiguous "
                         "bits from bit 0",
                         (int)(mask_len < 32 ? mask_len : 32), mask_text);
        return SM_EINVAL;
    }
    uint32_t bits = popcount64(mask);
    if (!act__parse_u32(min_text, min_len, &min) || min == 0 || min > bits) {
        sm_errmsg_printf(errmsg, "min_cbm_bits \"%.*s\" is not in 1..%u",
                         (int)(min_len < 32 ? min_len : 32), min_text, bits);
        return SM_EINVAL;
    }
    info->cbm_mask = mask;
    info->cbm_bits = bits;
    info->min_cbm_bits = min;
    return SM_OK;
}

/* ---- Schemata -------------------------------------------------------------
 */

/* Parses the L3 domains "0=fffff;1=fffff" (@n bytes, no blanks) into @s. */
static int parse_l3(const char *p, size_t n, struct act_rdt_schemata *s)
{
    size_t i = 0;
    s->n_l3 = 0;
    while (i <= n) {
        size_t end = i;
        while (end < n && p[end] != ';') {
            end++;
        }
        const char *eq = memchr(p + i, '=', end - i);
        uint32_t id;
        uint64_t mask;
        if (s->n_l3 == ACT_RDT_MAX_DOMAINS || eq == NULL ||
            !act__parse_u32(p + i, (size_t)(eq - (p + i)), &id) ||
            !act__parse_hex(eq + 1, (size_t)(p + end - eq - 1), 16, &mask)) {
            return SM_EINVAL;
        }
        for (size_t k = 0; k < s->n_l3; k++) {
            if (s->l3_id[k] == id) {
                return SM_EINVAL;
            }
        }
        s->l3_id[s->n_l3] = id;
        s->l3_mask[s->n_l3] = mask;
        s->n_l3++;
        i = end + 1;
    }
    return SM_OK;
}

/* Checks a resource name: letters, digits and '_'. */
static bool good_name(const char *p, size_t n)
{
    if (n == 0 || n > 32) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
              (c >= '0' && c <= '9') || c == '_')) {
            return false;
        }
    }
    return true;
}

/* Parses one line @line (@n bytes, blanks already removed) into @s. */
static int parse_line(const char *line,
                      size_t n,
                      bool *seen_l3,
                      struct act_rdt_schemata *s,
                      char *errmsg)
{
    const char *colon = memchr(line, ':', n);
    size_t nl = colon ? (size_t)(colon - line) : 0;
    if (colon == NULL || !good_name(line, nl)) {
        sm_errmsg_printf(errmsg, "not \"NAME:ID=VALUE;...\"");
        return SM_EINVAL;
    }
    if (nl == 2 && memcmp(line, L3_NAME, 2) == 0) {
        if (*seen_l3) {
            sm_errmsg_printf(errmsg, "a second L3 line");
            return SM_EINVAL;
        }
        *seen_l3 = true;
        s->l3_line = s->n_other;
        if (parse_l3(colon + 1, n - nl - 1, s) != SM_OK) {
            sm_errmsg_printf(errmsg,
                             "L3 domains not \"ID=HEXMASK;...\" with distinct "
                             "ids (at most %d)",
                             ACT_RDT_MAX_DOMAINS);
            return SM_EINVAL;
        }
        return SM_OK;
    }
    if (s->n_other == ACT_RDT_MAX_LINES || n >= ACT_RDT_LINE_SIZE) {
        sm_errmsg_printf(
            errmsg, "%s",
            n >= ACT_RDT_LINE_SIZE ? "line too long" : "too many lines");
        return SM_EINVAL;
    }
    memcpy(s->other[s->n_other], line, n);
    s->other[s->n_other][n] = '\0';
    s->n_other++;
    return SM_OK;
}

int act_rdt_schemata_parse(const char *text,
                           size_t len,
                           struct act_rdt_schemata *s,
                           char *errmsg)
{
    memset(s, 0, sizeof *s);
    if (len > ACT_RDT_FILE_TEXT_MAX) {
        sm_errmsg_printf(errmsg, "schemata of %zu bytes, more than %d", len,
                         ACT_RDT_FILE_TEXT_MAX);
        return SM_EINVAL;
    }
    char line[ACT_RDT_FILE_TEXT_MAX];
    bool seen_l3 = false;
    int lineno = 0;
    size_t i = 0;
    while (i < len) {
        size_t n = 0;
        lineno++;
        for (; i < len && text[i] != '\n'; i++) {
            if (!is_blank(text[i])) {
                line[n++] = text[i];
            }
        }
        i++;
        if (n == 0) {
            continue;
        }
        if (memchr(line, '\0', n) != NULL) {
            sm_errmsg_printf(errmsg, "schemata line %d: NUL byte", lineno);
            return SM_EINVAL;
        }
        int rv = parse_line(line, n, &seen_l3, s, errmsg);
        if (rv != SM_OK) {
            sm_errmsg_wrapf(errmsg, "schemata line %d", lineno);
            return rv;
        }
    }
    return SM_OK;
}

/* Appends formatted text at *@used; false when @buf is full. */
__attribute__((format(printf, 4, 5))) static bool appendf(char *buf,
                                                          size_t size,
                                                          size_t *used,
                                                          const char *fmt,
                                                          ...)
{
    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(buf + *used, size - *used, fmt, ap);
    va_end(ap);
    if (w < 0 || (size_t)w >= size - *used) {
        return false;
    }
    *used += (size_t)w;
    return true;
}

static bool format_l3(const struct act_rdt_schemata *s,
                      char *buf,
                      size_t size,
                      size_t *used)
{
    bool ok = appendf(buf, size, used, "%s:", L3_NAME);
    for (size_t d = 0; ok && d < s->n_l3; d++) {
        ok = (d == 0 || appendf(buf, size, used, ";")) &&
             appendf(buf, size, used, "%u=%llx", (unsigned)s->l3_id[d],
                     (unsigned long long)s->l3_mask[d]);
    }
    return ok && appendf(buf, size, used, "\n");
}

int act_rdt_schemata_format(const struct act_rdt_schemata *s,
                            char *buf,
                            size_t size,
                            char *errmsg)
{
    if (s->n_l3 > ACT_RDT_MAX_DOMAINS || s->n_other > ACT_RDT_MAX_LINES ||
        (s->n_l3 > 0 && s->l3_line > s->n_other)) {
        sm_errmsg_printf(errmsg, "schemata counts over the limits");
        return SM_EINVAL;
    }
    for (size_t k = 0; k < s->n_other; k++) {
        if (memchr(s->other[k], '\0', ACT_RDT_LINE_SIZE) == NULL ||
            strchr(s->other[k], '\n') != NULL) {
            sm_errmsg_printf(errmsg, "schemata line %zu not terminated", k);
            return SM_EINVAL;
        }
    }
    size_t used = 0;
    bool ok = size > 0;
    if (ok) {
        buf[0] = '\0';
    }
    for (size_t k = 0; ok && k <= s->n_other; k++) {
        if (s->n_l3 > 0 && k == s->l3_line) {
            ok = format_l3(s, buf, size, &used);
        }
        if (ok && k < s->n_other) {
            ok = appendf(buf, size, &used, "%s\n", s->other[k]);
        }
    }
    if (!ok) {
        sm_errmsg_printf(errmsg, "schemata buffer of %zu bytes too small",
                         size);
        return SM_ETOOBIG;
    }
    return SM_OK;
}

uint32_t act_rdt_ways(const struct act_rdt_schemata *s)
{
    uint32_t ways = 0;
    for (size_t d = 0; d < s->n_l3 && d < ACT_RDT_MAX_DOMAINS; d++) {
        uint32_t w = popcount64(s->l3_mask[d]);
        if (d == 0 || w < ways) {
            ways = w;
        }
    }
    return ways;
}

int act_rdt_schemata_set_ways(struct act_rdt_schemata *s,
                              const struct act_rdt_info *info,
                              uint32_t ways,
                              uint32_t *applied,
                              char *errmsg)
{
    if (s->n_l3 == 0 || s->n_l3 > ACT_RDT_MAX_DOMAINS) {
        sm_errmsg_printf(errmsg, "schemata has no L3 line");
        return SM_EINVAL;
    }
    if (ways < info->min_cbm_bits) {
        ways = info->min_cbm_bits;
    }
    if (ways > info->cbm_bits) {
        ways = info->cbm_bits;
    }
    uint64_t mask = run_mask(ways, lowest_bit(info->cbm_mask));
    for (size_t d = 0; d < s->n_l3; d++) {
        s->l3_mask[d] = mask;
    }
    if (applied != NULL) {
        *applied = ways;
    }
    return SM_OK;
}

/* ---- Group names ----------------------------------------------------------
 */

/* Checks a group name; "" (the default group) only when @allow_default. */
static int check_group(const char *g, bool allow_default, char *errmsg)
{
    static const char *const reserved[] = {".", "..", "info", "mon_groups",
                                           "mon_data"};
    size_t n = strnlen(g, ACT_RDT_NAME_SIZE);
    bool bad = n == ACT_RDT_NAME_SIZE || (n == 0 && !allow_default) ||
               strpbrk(g, "/ \t\n\r") != NULL;
    for (size_t i = 0; i < sizeof reserved / sizeof reserved[0]; i++) {
        bad = bad || strcmp(g, reserved[i]) == 0;
    }
    if (bad) {
        sm_errmsg_printf(errmsg, "bad resctrl group name \"%.*s\"",
                         (int)(n < 64 ? n : 64), g);
        return SM_EINVAL;
    }
    return SM_OK;
}

int act_rdt_group_name(const char *tmpl,
                       const char *service,
                       char *out,
                       char *errmsg)
{
    char name[ACT_RDT_NAME_SIZE];
    int rv = act__expand_service(tmpl, service, "resctrl group", name,
                                 sizeof name, errmsg);
    if (rv != SM_OK) {
        return rv;
    }
    size_t n = strlen(name);
    rv = check_group(name, false, errmsg);
    if (rv == SM_OK) {
        memcpy(out, name, n + 1);
    }
    return rv;
}

/* ---- Files ----------------------------------------------------------------
 */

/* Builds root/group/file ("" group: root/file; NULL file: the directory). */
static int path_of(char *out,
                   const struct act_rdt *r,
                   const char *group,
                   const char *file,
                   char *errmsg)
{
    int w =
        snprintf(out, ACT_CG_PATH_SIZE, "%s%s%s%s%s", r->root,
                 group[0] ? "/" : "", group, file ? "/" : "", file ? file : "");
    if (w < 0 || w >= ACT_CG_PATH_SIZE) {
        sm_errmsg_printf(errmsg, "path under %.64s too long", r->root);
        return SM_EINVAL;
    }
    return SM_OK;
}

/* path_of() for the group @group, checked first (the default group ""
 * only when @allow_default). */
static int group_path(char *out,
                      const struct act_rdt *r,
                      const char *group,
                      bool allow_default,
                      const char *file,
                      char *errmsg)
{
    int rv = check_group(group, allow_default, errmsg);
    return rv == SM_OK ? path_of(out, r, group, file, errmsg) : rv;
}

/* Appends resctrl's own explanation of the last failed write, if any. */
static void add_last_status(const struct act_rdt *r, char *errmsg)
{
    char path[ACT_CG_PATH_SIZE];
    char buf[ACT_RDT_FILE_TEXT_MAX + 1];
    char err[SM_ERRMSG_SIZE];
    size_t n;
    if (path_of(path, r, "info", "last_cmd_status", err) != SM_OK ||
        act__read_file(path, buf, ACT_RDT_FILE_TEXT_MAX, &n, err) != SM_OK ||
        chomp(buf, n) == 0) {
        return;
    }
    size_t len = strlen(errmsg);
    snprintf(errmsg + len, SM_ERRMSG_SIZE - len, " (resctrl: %.*s)",
             (int)chomp(buf, n), buf);
}

/* Writes @text to @path, adding resctrl's reason when it refuses it. */
static int write_text(const struct act_rdt *r,
                      const char *path,
                      const char *text,
                      char *errmsg)
{
    int rv = act__write_file(path, text, errmsg);
    if (rv == SM_EINVAL) {
        add_last_status(r, errmsg);
    }
    return rv;
}

/* ---- The mount ------------------------------------------------------------
 */

static bool exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* Reads and parses info/L3 of @r into @r->info. */
static int read_info(struct act_rdt *r, char *errmsg)
{
    char mpath[ACT_CG_PATH_SIZE], npath[ACT_CG_PATH_SIZE];
    char mask[ACT_RDT_FILE_TEXT_MAX + 1], min[ACT_RDT_FILE_TEXT_MAX + 1];
    size_t ml, nl;
    int rv = path_of(mpath, r, "info/L3", "cbm_mask", errmsg);
    if (rv == SM_OK) {
        rv = path_of(npath, r, "info/L3", "min_cbm_bits", errmsg);
    }
    if (rv != SM_OK) {
        return rv;
    }
    if (!exists(mpath)) {
        char cdp[ACT_CG_PATH_SIZE];
        bool on =
            path_of(cdp, r, "info", "L3CODE", errmsg) == SM_OK && exists(cdp);
        sm_errmsg_printf(errmsg, "resctrl at %s: %s", r->root,
                         on ? "L3 code/data prioritisation (CDP) is on, "
                              "which the agent does not handle"
                            : "no L3 cache allocation (no info/L3)");
        return SM_ENOTFOUND;
    }
    rv = act__read_file(mpath, mask, ACT_RDT_FILE_TEXT_MAX, &ml, errmsg);
    if (rv == SM_OK) {
        rv = act__read_file(npath, min, ACT_RDT_FILE_TEXT_MAX, &nl, errmsg);
    }
    if (rv == SM_OK) {
        rv = act_rdt_parse_info(mask, ml, min, nl, &r->info, errmsg);
        if (rv != SM_OK) {
            sm_errmsg_wrapf(errmsg, "%s/info/L3", r->root);
        }
    }
    return rv;
}

int act_rdt_available(const char *root, struct act_rdt *out, char *errmsg)
{
    if (root == NULL) {
        root = DEFAULT_ROOT;
    }
    struct act_rdt r;
    memset(&r, 0, sizeof r);
    if (strlen(root) + 64 >= sizeof r.root) {
        sm_errmsg_printf(errmsg, "resctrl root %.64s... too long", root);
        return SM_EINVAL;
    }
    snprintf(r.root, sizeof r.root, "%s", root);
    char path[ACT_CG_PATH_SIZE];
    snprintf(path, sizeof path, "%s/schemata", root);
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) {
        sm_errmsg_printf(errmsg, "resctrl is not mounted at %s (no schemata)",
                         root);
        return SM_ENOTFOUND;
    }
    int rv = read_info(&r, errmsg);
    if (rv != SM_OK) {
        return rv;
    }
    struct act_rdt_schemata s;
    rv = act_rdt_read(&r, "", &s, errmsg);
    if (rv == SM_OK && s.n_l3 == 0) {
        sm_errmsg_printf(errmsg, "%s has no L3 line", path);
        rv = SM_ENOTFOUND;
    }
    if (rv != SM_OK) {
        return rv;
    }
    *out = r;
    return SM_OK;
}

/* ---- Groups ---------------------------------------------------------------
 */

int act_rdt_group_create(const struct act_rdt *r,
                         const char *group,
                         bool *created,
                         char *errmsg)
{
    if (created != NULL) {
        *created = false;
    }
    char path[ACT_CG_PATH_SIZE];
    int rv = group_path(path, r, group, false, NULL, errmsg);
    if (rv != SM_OK) {
        return rv;
    }
    if (mkdir(path, 0755) == 0) {
        if (created != NULL) {
            *created = true;
        }
        return SM_OK;
    }
    int e = errno;
    struct stat st;
    if (e == EEXIST && lstat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        return SM_OK;
    }
    return act__io_fail(errmsg, "make resctrl group", path, e);
}

int act_rdt_group_remove(const struct act_rdt *r,
                         const char *group,
                         char *errmsg)
{
    char path[ACT_CG_PATH_SIZE];
    int rv = group_path(path, r, group, false, NULL, errmsg);
    if (rv != SM_OK) {
        return rv;
    }
    if (rmdir(path) == 0 || errno == ENOENT) {
        return SM_OK;
    }
    return act__io_fail(errmsg, "remove resctrl group", path, errno);
}

int act_rdt_read(const struct act_rdt *r,
                 const char *group,
                 struct act_rdt_schemata *s,
                 char *errmsg)
{
    char path[ACT_CG_PATH_SIZE];
    char buf[ACT_RDT_FILE_TEXT_MAX + 1];
    size_t n;
    int rv = group_path(path, r, group, true, "schemata", errmsg);
    if (rv == SM_OK) {
        rv = act__read_file(path, buf, ACT_RDT_FILE_TEXT_MAX, &n, errmsg);
    }
    if (rv == SM_OK) {
        rv = act_rdt_schemata_parse(buf, n, s, errmsg);
        if (rv != SM_OK) {
            sm_errmsg_wrapf(errmsg, "%s", path);
        }
    }
    return rv;
}

/* Writes @want to @group's schemata unless its L3 masks equal @cur's. */
static int write_if_changed(const struct act_rdt *r,
                            const char *group,
                            const struct act_rdt_schemata *cur,
                            const struct act_rdt_schemata *want,
                            bool *changed,
                            char *errmsg)
{
    bool same = cur->n_l3 == want->n_l3;
    for (size_t d = 0; same && d < cur->n_l3; d++) {
        same = cur->l3_id[d] == want->l3_id[d] &&
               cur->l3_mask[d] == want->l3_mask[d];
    }
    if (same) {
        return SM_OK;
    }
    char text[ACT_RDT_FILE_TEXT_MAX + 1];
    char path[ACT_CG_PATH_SIZE];
    int rv = act_rdt_schemata_format(want, text, sizeof text, errmsg);
    if (rv == SM_OK) {
        rv = path_of(path, r, group, "schemata", errmsg);
    }
    if (rv == SM_OK) {
        rv = write_text(r, path, text, errmsg);
    }
    if (rv == SM_OK && changed != NULL) {
        *changed = true;
    }
    return rv;
}

int act_rdt_apply_ways(const struct act_rdt *r,
                       const char *group,
                       uint32_t ways,
                       struct act_rdt_schemata *prev,
                       uint32_t *applied,
                       bool *changed,
                       char *errmsg)
{
    if (changed != NULL) {
        *changed = false;
    }
    struct act_rdt_schemata cur, want;
    int rv = check_group(group, false, errmsg);
    if (rv == SM_OK) {
        rv = act_rdt_read(r, group, &cur, errmsg);
    }
    if (rv != SM_OK) {
        return rv;
    }
    if (prev != NULL) {
        *prev = cur;
    }
    want = cur;
    rv = act_rdt_schemata_set_ways(&want, &r->info, ways, applied, errmsg);
    if (rv != SM_OK) {
        sm_errmsg_wrapf(errmsg, "resctrl group %s", group);
        return rv;
    }
    return write_if_changed(r, group, &cur, &want, changed, errmsg);
}

/* Checks that @m is a mask the kernel accepts for @info. */
static bool mask_ok(uint64_t m, const struct act_rdt_info *info)
{
    return contiguous(m) && (m & ~info->cbm_mask) == 0 &&
           popcount64(m) >= info->min_cbm_bits;
}

int act_rdt_restore(const struct act_rdt *r,
                    const char *group,
                    const struct act_rdt_schemata *prev,
                    bool *changed,
                    char *errmsg)
{
    if (changed != NULL) {
        *changed = false;
    }
    if (prev->n_l3 == 0 || prev->n_l3 > ACT_RDT_MAX_DOMAINS) {
        sm_errmsg_printf(errmsg, "no L3 masks to restore");
        return SM_EINVAL;
    }
    for (size_t d = 0; d < prev->n_l3; d++) {
        if (!mask_ok(prev->l3_mask[d], &r->info)) {
            sm_errmsg_printf(errmsg,
                             "L3 mask %llx of domain %u is not a contiguous "
                             "run of %u..%u bits within %llx",
                             (unsigned long long)prev->l3_mask[d],
                             prev->l3_id[d], r->info.min_cbm_bits,
                             r->info.cbm_bits,
                             (unsigned long long)r->info.cbm_mask);
            return SM_EINVAL;
        }
    }
    struct act_rdt_schemata cur, want;
    int rv = check_group(group, false, errmsg);
    if (rv == SM_OK) {
        rv = act_rdt_read(r, group, &cur, errmsg);
    }
    if (rv != SM_OK) {
        return rv;
    }
    want = cur;
    bool match = cur.n_l3 == prev->n_l3;
    for (size_t d = 0; match && d < cur.n_l3; d++) {
        match = false;
        for (size_t k = 0; k < prev->n_l3; k++) {
            if (prev->l3_id[k] == cur.l3_id[d]) {
                want.l3_mask[d] = prev->l3_mask[k];
                match = true;
            }
        }
    }
    if (!match) {
        sm_errmsg_printf(errmsg,
                         "resctrl group %s: its cache domains are not those "
                         "to restore",
                         group);
        return SM_EINVAL;
    }
    return write_if_changed(r, group, &cur, &want, changed, errmsg);
}

int act_rdt_move_tasks(const struct act_rdt *r,
                       const char *group,
                       const int *pids,
                       size_t n,
                       size_t *moved,
                       char *errmsg)
{
    size_t done = 0;
    if (moved != NULL) {
        *moved = 0;
    }
    char path[ACT_CG_PATH_SIZE];
    int rv = check_group(group, true, errmsg);
    if (rv == SM_OK && n > ACT_RDT_MAX_PIDS) {
        sm_errmsg_printf(errmsg, "%zu pids, more than %d", n, ACT_RDT_MAX_PIDS);
        rv = SM_EINVAL;
    }
    for (size_t i = 0; rv == SM_OK && i < n; i++) {
        if (pids[i] <= 0) {
            sm_errmsg_printf(errmsg, "bad pid %d", pids[i]);
            rv = SM_EINVAL;
        }
    }
    if (rv == SM_OK) {
        rv = path_of(path, r, group, "tasks", errmsg);
    }
    if (rv != SM_OK) {
        return rv;
    }
    int fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        return act__io_fail(errmsg, "open", path, errno);
    }
    for (size_t i = 0; i < n; i++) {
        char line[24];
        int len = snprintf(line, sizeof line, "%d\n", pids[i]);
        ssize_t w = write(fd, line, (size_t)len);
        if (w == len) {
            done++;
        } else if (!(w < 0 && errno == ESRCH)) {
            rv = act__io_fail(errmsg, "move a task to", path,
                              w < 0 ? errno : EIO);
            sm_errmsg_wrapf(errmsg, "pid %d", pids[i]);
            break;
        }
    }
    close(fd);
    if (moved != NULL) {
        *moved = done;
    }
    return rv;
}
