/* The window log: crash-safe, append-only segment files of opaque records.
 *
 * A record is a 20-byte header and its payload:
 *
 *   magic u32 | length u32 | time_ns u64 | crc32c u32 | payload[length]
 *
 * little-endian, magic "SMWL" (0x4C574D53), CRC-32C over the 12 bytes of
 * length and time_ns followed by the payload. A segment file is records back
 * to back, named after the sequence number of its first record; record k of
 * a segment has sequence first + k, so sequences need no space on disk.
 *
 * Appends write the header and payload with one positional pwritev() at the
 * end of the newest ("active") segment, whose length we track, and with
 * CBN_LOG_SYNC_EVERY then fdatasync() it; the directory is fsync()ed after a
 * segment is created or deleted, so the name of a file holding acknowledged
 * records is durable too. A failed write or sync truncates the file back to
 * the last acknowledged record, so a failure never leaves half a record in
 * the middle of the log: the next append starts from a clean end.
 *
 * Open lists the segments and reads every record once, checking magic,
 * length (<= max_record and within the file) and CRC. The first bad record
 * ends a segment. In the active segment it is the tail of an interrupted
 * append and is cut off with ftruncate(); in an older segment it cannot be a
 * crash (appends moved on to a later segment), so it is counted as
 * corruption and the rest of that file is skipped but kept. What open learns
 * (per segment: first sequence, size, readable prefix, record count, oldest
 * and newest event time) stays in memory, so retention deletes files without
 * reading them.
 *
 * Reading goes through one buffer of READ_CHUNK bytes, grown only to hold
 * the largest record met (bounded by max_record and by the file's size, so a
 * hostile length field cannot make it allocate), with pread() so that no
 * file offset is shared. Replay re-reads and re-verifies everything: the
 * disk may have rotted since open. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/crc32c.h"
#include "base/err.h"
#include "cbn/cbn.h"

#define RECORD_MAGIC       0x4C574D53u /* "SMWL" as little-endian bytes */
#define HEADER_SIZE        20u
#define READ_CHUNK         (128u * 1024)
#define DEFAULT_SEGMENT    (64ull << 20)
#define DEFAULT_MAX_RECORD (64u << 20)
#define NAME_SIZE          32 /* "<16 hex digits>.log" and a NUL */

struct segment
{
    uint64_t first_seq; /* from the file name */
    uint64_t bytes;     /* size of the file */
    uint64_t valid;     /* readable prefix; < bytes only when corrupt */
    uint64_t records;   /* records in the readable prefix */
    uint64_t oldest_ns; /* smallest and largest time_ns of those records, */
    uint64_t newest_ns; /* 0 when there are none */
};

struct cbn_log
{
    struct cbn_log_config cfg; /* defaults applied; cfg.dir is dir */
    char *dir;
    int dir_fd;
    int lock_fd;
    int active_fd;        /* the last segment, open for writing */
    struct segment *segs; /* oldest first; the last one is active */
    size_t n_segs, cap_segs;
    uint64_t total_bytes, total_records;
    uint64_t torn_bytes, corrupt_records;
    bool tail_dirty; /* a failed append could not truncate its bytes away */
    bool replaying;  /* guards against calls from the replay callback */
};

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

static uint64_t get_u64(const uint8_t *p)
{
    return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
}

/* Maps the errno of a failed file operation to the codes the log returns. */
static int io_error(int errnum)
{
    switch (errnum) {
        case EACCES:
        case EPERM:
        case EROFS:
            return SM_EPERM;
        case ENOMEM:
            return SM_ENOMEM;
        default:
            return SM_EIO;
    }
}

static void segment_name(char name[NAME_SIZE], uint64_t seq)
{
    snprintf(name, NAME_SIZE, "%016" PRIx64 ".log", seq);
}

/* Parses a segment file name: exactly 16 lowercase hex digits and ".log"
 * (one spelling per sequence, so two files cannot claim the same one). */
static bool parse_segment_name(const char *name, uint64_t *seq)
{
    if (strlen(name) != 20 || strcmp(name + 16, ".log") != 0) {
        return false;
    }
    uint64_t v = 0;
    for (int i = 0; i < 16; i++) {
        char c = name[i];
        unsigned d;
        if (c >= '0' && c <= '9') {
            d = (unsigned)(c - '0');
        } else if (c >= 'a' && c <= 'f') {
            d = (unsigned)(c - 'a' + 10);
        } else {
            return false;
        }
        v = v << 4 | d;
    }
    *seq = v;
    return true;
}

/* ---- Buffered, bounded reading of one segment -------------------------- */

struct reader
{
    int fd;
    uint8_t *buf;
    size_t cap;
    size_t pos, len; /* the unread bytes are buf[pos, len) */
    uint64_t off;    /* file offset of buf[pos] */
    uint64_t end;    /* reading stops here */
    int errnum;      /* errno of the last failed read */
};

/* Returned by rd_need() when the bytes asked for lie past the end. */
#define RD_SHORT (-1)

static int rd_init(struct reader *rd)
{
    memset(rd, 0, sizeof *rd);
    rd->fd = -1;
    rd->buf = sm_malloc(READ_CHUNK);
    if (rd->buf == NULL) {
        return SM_ENOMEM;
    }
    rd->cap = READ_CHUNK;
    return SM_OK;
}

static void rd_start(struct reader *rd, int fd, uint64_t end)
{
    rd->fd = fd;
    rd->pos = rd->len = 0;
    rd->off = 0;
    rd->end = end;
}

/* Makes @n bytes from the current offset available at buf + pos. Returns
 * SM_OK, RD_SHORT when they would pass the end (or the file is shorter
 * than expected), SM_EIO or SM_ENOMEM. */
static int rd_need(struct reader *rd, size_t n)
{
    size_t have = rd->len - rd->pos;
    if (have >= n) {
        return SM_OK;
    }
    if (rd->off > rd->end || n > rd->end - rd->off) {
        return RD_SHORT;
    }
    if (rd->pos > 0) {
        memmove(rd->buf, rd->buf + rd->pos, have);
        rd->pos = 0;
        rd->len = have;
    }
    if (n > rd->cap) {
        uint8_t *grown = sm_realloc(rd->buf, n);
        if (grown == NULL) {
            return SM_ENOMEM;
        }
        rd->buf = grown;
        rd->cap = n;
    }
    while (rd->len < n) {
        uint64_t at = rd->off + rd->len;
        size_t want = rd->cap - rd->len;
        if (want > rd->end - at) {
            want = (size_t)(rd->end - at);
        }
        ssize_t r = pread(rd->fd, rd->buf + rd->len, want, (off_t)at);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0) {
            rd->errnum = errno;
            return SM_EIO;
        }
        if (r == 0) {
            return RD_SHORT;
        }
        rd->len += (size_t)r;
    }
    return SM_OK;
}

enum rec_status { REC_OK, REC_END, REC_BAD };

struct rec
{
    uint64_t time_ns;
    const uint8_t *payload; /* valid until the next read */
    uint32_t len;
};

/* Reads and verifies the next record. Sets *status to REC_OK (with @rec
 * filled and the reader past it), REC_END at a clean end, or REC_BAD
 * (reader left at the bad record's offset). Returns SM_OK, SM_EIO or
 * SM_ENOMEM. */
static int read_record(struct reader *rd,
                       uint32_t max_record,
                       enum rec_status *status,
                       struct rec *rec)
{
    *status = REC_BAD;
    if (rd->off == rd->end) {
        *status = REC_END;
        return SM_OK;
    }
    int rv = rd_need(rd, HEADER_SIZE);
    if (rv != SM_OK) {
        return rv == RD_SHORT ? SM_OK : rv;
    }
    const uint8_t *h = rd->buf + rd->pos;
    uint32_t len = get_u32(h + 4);
    if (get_u32(h) != RECORD_MAGIC || len > max_record) {
        return SM_OK;
    }
    rv = rd_need(rd, HEADER_SIZE + (size_t)len);
    if (rv != SM_OK) {
        return rv == RD_SHORT ? SM_OK : rv;
    }
    h = rd->buf + rd->pos;
    uint32_t crc = sm_crc32c(0, h + 4, 12);
    crc = sm_crc32c(crc, h + HEADER_SIZE, len);
    if (crc != get_u32(h + 16)) {
        return SM_OK;
    }
    rec->time_ns = get_u64(h + 8);
    rec->payload = h + HEADER_SIZE;
    rec->len = len;
    rd->pos += HEADER_SIZE + (size_t)len;
    rd->off += HEADER_SIZE + (uint64_t)len;
    *status = REC_OK;
    return SM_OK;
}

/* ---- Opening ------------------------------------------------------------ */

static void segment_add_time(struct segment *seg, uint64_t time_ns)
{
    if (seg->records == 0 || time_ns < seg->oldest_ns) {
        seg->oldest_ns = time_ns;
    }
    if (seg->records == 0 || time_ns > seg->newest_ns) {
        seg->newest_ns = time_ns;
    }
    seg->records++;
}

/* Ensures room for one more segment. */
static int reserve_segment(struct cbn_log *log)
{
    if (log->n_segs < log->cap_segs) {
        return SM_OK;
    }
    size_t cap = log->cap_segs == 0 ? 8 : log->cap_segs * 2;
    struct segment *segs = sm_reallocarray(log->segs, cap, sizeof *segs);
    if (segs == NULL) {
        return SM_ENOMEM;
    }
    log->segs = segs;
    log->cap_segs = cap;
    return SM_OK;
}

/* Creates the empty segment @seq and makes it the active one (its name
 * made durable first under CBN_LOG_SYNC_EVERY). On failure nothing
 * changes. */
static int create_segment(struct cbn_log *log, uint64_t seq, char *errmsg)
{
    int rv = reserve_segment(log);
    if (rv != SM_OK) {
        return rv;
    }
    char name[NAME_SIZE];
    segment_name(name, seq);
    int fd =
        openat(log->dir_fd, name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        int e = errno;
        sm_errmsg_printf(errmsg, "%s/%s: create: %s", log->dir, name,
                         strerror(e));
        return io_error(e);
    }
    if (log->cfg.sync == CBN_LOG_SYNC_EVERY && fsync(log->dir_fd) != 0) {
        int e = errno;
        sm_errmsg_printf(errmsg, "%s: fsync after creating %s: %s", log->dir,
                         name, strerror(e));
        unlinkat(log->dir_fd, name, 0);
        close(fd);
        return SM_EIO;
    }
    if (log->active_fd >= 0) {
        close(log->active_fd);
    }
    log->active_fd = fd;
    log->segs[log->n_segs++] = (struct segment){.first_seq = seq};
    return SM_OK;
}

/* Creates the directory if missing (and makes its name durable), opens it
 * and takes the lock. */
static int open_dir(struct cbn_log *log, char *errmsg)
{
    bool created = mkdir(log->dir, 0700) == 0;
    if (!created && errno != EEXIST) {
        int e = errno;
        sm_errmsg_printf(errmsg, "%s: mkdir: %s", log->dir, strerror(e));
        return io_error(e);
    }
    log->dir_fd = open(log->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (log->dir_fd < 0) {
        int e = errno;
        sm_errmsg_printf(errmsg, "%s: open: %s", log->dir, strerror(e));
        return io_error(e);
    }
    if (created && log->cfg.sync == CBN_LOG_SYNC_EVERY) {
        int parent =
            openat(log->dir_fd, "..", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        int ok = parent >= 0 && fsync(parent) == 0;
        int e = errno;
        if (parent >= 0) {
            close(parent);
        }
        if (!ok) {
            sm_errmsg_printf(errmsg, "%s/..: fsync: %s", log->dir, strerror(e));
            return SM_EIO;
        }
    }
    log->lock_fd =
        openat(log->dir_fd, "LOCK", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (log->lock_fd < 0) {
        int e = errno;
        sm_errmsg_printf(errmsg, "%s/LOCK: open: %s", log->dir, strerror(e));
        return io_error(e);
    }
    if (flock(log->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        if (e == EWOULDBLOCK) {
            sm_errmsg_printf(errmsg, "%s/LOCK: the log is open elsewhere",
                             log->dir);
            return SM_EEXIST;
        }
        sm_errmsg_printf(errmsg, "%s/LOCK: flock: %s", log->dir, strerror(e));
        return io_error(e);
    }
    return SM_OK;
}

static int compare_segments(const void *a, const void *b)
{
    uint64_t x = ((const struct segment *)a)->first_seq;
    uint64_t y = ((const struct segment *)b)->first_seq;
    return (x > y) - (x < y);
}

/* Lists the segment files, oldest first. */
static int list_segments(struct cbn_log *log, char *errmsg)
{
    int fd = openat(log->dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (d == NULL) {
        int e = errno;
        if (fd >= 0) {
            close(fd);
        }
        sm_errmsg_printf(errmsg, "%s: opendir: %s", log->dir, strerror(e));
        return io_error(e);
    }
    int rv = SM_OK;
    for (;;) {
        errno = 0;
        struct dirent *ent = readdir(d);
        if (ent == NULL) {
            if (errno != 0) {
                int e = errno;
                sm_errmsg_printf(errmsg, "%s: readdir: %s", log->dir,
                                 strerror(e));
                rv = io_error(e);
            }
            break;
        }
        uint64_t seq;
        struct stat st;
        if (!parse_segment_name(ent->d_name, &seq) ||
            fstatat(log->dir_fd, ent->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
            !S_ISREG(st.st_mode)) {
            continue;
        }
        rv = reserve_segment(log);
        if (rv != SM_OK) {
            break;
        }
        log->segs[log->n_segs++] = (struct segment){.first_seq = seq};
    }
    closedir(d);
    if (rv == SM_OK && log->n_segs > 1) {
        qsort(log->segs, log->n_segs, sizeof log->segs[0], compare_segments);
    }
    return rv;
}

/* Reads segment @i once: counts its records and finds its readable prefix,
 * truncating a bad tail when it is the active segment. Keeps the active
 * segment's descriptor. */
static int scan_segment(struct cbn_log *log,
                        size_t i,
                        struct reader *rd,
                        char *errmsg)
{
    struct segment *seg = &log->segs[i];
    bool active = i + 1 == log->n_segs;
    char name[NAME_SIZE];
    segment_name(name, seg->first_seq);
    int fd =
        openat(log->dir_fd, name, (active ? O_RDWR : O_RDONLY) | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        int e = errno;
        if (fd >= 0) {
            close(fd);
        }
        sm_errmsg_printf(errmsg, "%s/%s: open: %s", log->dir, name,
                         strerror(e));
        return io_error(e);
    }
    seg->bytes = (uint64_t)st.st_size;
    rd_start(rd, fd, seg->bytes);
    enum rec_status status;
    struct rec rec;
    int rv;
    while ((rv = read_record(rd, log->cfg.max_record, &status, &rec)) ==
               SM_OK &&
           status == REC_OK) {
        segment_add_time(seg, rec.time_ns);
    }
    if (rv != SM_OK) {
        if (rv == SM_EIO) {
            sm_errmsg_printf(errmsg, "%s/%s: read: %s", log->dir, name,
                             strerror(rd->errnum));
        }
        close(fd);
        return rv;
    }
    seg->valid = rd->off;
    if (status == REC_BAD && active) {
        if (ftruncate(fd, (off_t)seg->valid) != 0 ||
            (log->cfg.sync == CBN_LOG_SYNC_EVERY && fdatasync(fd) != 0)) {
            int e = errno;
            sm_errmsg_printf(errmsg, "%s/%s: truncating a torn tail: %s",
                             log->dir, name, strerror(e));
            close(fd);
            return io_error(e);
        }
        log->torn_bytes += seg->bytes - seg->valid;
        seg->bytes = seg->valid;
    } else if (status == REC_BAD) {
        log->corrupt_records++;
    }
    log->total_bytes += seg->bytes;
    log->total_records += seg->records;
    if (active) {
        log->active_fd = fd;
    } else {
        close(fd);
    }
    return SM_OK;
}

static void log_free(struct cbn_log *log)
{
    if (log->active_fd >= 0) {
        close(log->active_fd);
    }
    if (log->dir_fd >= 0) {
        close(log->dir_fd);
    }
    if (log->lock_fd >= 0) {
        close(log->lock_fd); /* releases the lock */
    }
    sm_free(log->segs);
    sm_free(log->dir);
    sm_free(log);
}

int cbn_log_open(const struct cbn_log_config *config,
                 struct cbn_log **out,
                 char errmsg[SM_ERRMSG_SIZE])
{
    char scratch[SM_ERRMSG_SIZE];
    if (errmsg == NULL) {
        errmsg = scratch;
    }
    errmsg[0] = '\0';
    if (config == NULL || config->dir == NULL || config->dir[0] == '\0' ||
        (config->sync != CBN_LOG_SYNC_EVERY &&
         config->sync != CBN_LOG_SYNC_NONE)) {
        sm_errmsg_printf(errmsg, "window log: bad configuration");
        return SM_EINVAL;
    }
    struct cbn_log *log = sm_calloc(1, sizeof *log);
    if (log == NULL) {
        return SM_ENOMEM;
    }
    log->dir_fd = log->lock_fd = log->active_fd = -1;
    log->dir = sm_strdup(config->dir);
    if (log->dir == NULL) {
        log_free(log);
        return SM_ENOMEM;
    }
    log->cfg = *config;
    log->cfg.dir = log->dir;
    if (log->cfg.segment_bytes == 0) {
        log->cfg.segment_bytes = DEFAULT_SEGMENT;
    }
    if (log->cfg.max_record == 0) {
        log->cfg.max_record = DEFAULT_MAX_RECORD;
    }

    int rv = open_dir(log, errmsg);
    if (rv == SM_OK) {
        rv = list_segments(log, errmsg);
    }
    if (rv == SM_OK && log->n_segs > 0) {
        struct reader rd;
        rv = rd_init(&rd);
        for (size_t i = 0; rv == SM_OK && i < log->n_segs; i++) {
            rv = scan_segment(log, i, &rd, errmsg);
        }
        sm_free(rd.buf);
    }
    if (rv == SM_OK && log->n_segs == 0) {
        rv = create_segment(log, 0, errmsg);
    }
    if (rv != SM_OK) {
        if (rv == SM_ENOMEM && errmsg[0] == '\0') {
            sm_errmsg_printf(errmsg, "%s: out of memory", log->dir);
        }
        log_free(log);
        return rv;
    }
    *out = log;
    return SM_OK;
}

void cbn_log_close(struct cbn_log *log)
{
    if (log != NULL) {
        SM_ASSERT(!log->replaying);
        log_free(log);
    }
}

/* ---- Replay ------------------------------------------------------------- */

int cbn_log_replay(struct cbn_log *log, cbn_log_record_cb cb, void *arg)
{
    SM_ASSERT(!log->replaying);
    struct reader rd;
    int rv = rd_init(&rd);
    log->replaying = true;
    for (size_t i = 0; rv == SM_OK && i < log->n_segs; i++) {
        const struct segment *seg = &log->segs[i];
        if (seg->valid == 0) {
            continue;
        }
        char name[NAME_SIZE];
        segment_name(name, seg->first_seq);
        int fd = openat(log->dir_fd, name, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            rv = SM_EIO;
            break;
        }
        rd_start(&rd, fd, seg->valid);
        for (;;) {
            enum rec_status status;
            struct rec rec;
            rv = read_record(&rd, log->cfg.max_record, &status, &rec);
            if (rv != SM_OK || status == REC_END) {
                break;
            }
            if (status == REC_BAD) {
                /* It verified at open: the disk rotted since. */
                log->corrupt_records++;
                break;
            }
            rv = cb(arg, rec.time_ns, rec.payload, rec.len);
            if (rv != 0) {
                break;
            }
        }
        close(fd);
    }
    log->replaying = false;
    sm_free(rd.buf);
    return rv;
}

/* ---- Appending ---------------------------------------------------------- */

/* Writes all of @iov at @off, resuming after short writes. Returns 0 or an
 * errno value. */
static int write_all(int fd, struct iovec *iov, int n, uint64_t off)
{
    while (n > 0) {
        ssize_t w = pwritev(fd, iov, n, (off_t)off);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w < 0) {
            return errno;
        }
        if (w == 0) {
            return EIO;
        }
        off += (uint64_t)w;
        size_t done = (size_t)w;
        while (n > 0 && done >= iov->iov_len) {
            done -= iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (uint8_t *)iov->iov_base + done;
            iov->iov_len -= done;
        }
    }
    return 0;
}

int cbn_log_append(struct cbn_log *log,
                   uint64_t time_ns,
                   const uint8_t *payload,
                   size_t len,
                   char errmsg[SM_ERRMSG_SIZE])
{
    char scratch[SM_ERRMSG_SIZE];
    if (errmsg == NULL) {
        errmsg = scratch;
    }
    SM_ASSERT(!log->replaying);
    if (len > log->cfg.max_record) {
        sm_errmsg_printf(errmsg, "%s: record of %zu bytes over max_record %u",
                         log->dir, len, log->cfg.max_record);
        return SM_ETOOBIG;
    }
    struct segment *seg = &log->segs[log->n_segs - 1];
    char name[NAME_SIZE];
    if (log->tail_dirty) {
        if (ftruncate(log->active_fd, (off_t)seg->bytes) != 0) {
            int e = errno;
            segment_name(name, seg->first_seq);
            sm_errmsg_printf(errmsg, "%s/%s: truncating a failed append: %s",
                             log->dir, name, strerror(e));
            return SM_EIO;
        }
        log->tail_dirty = false;
    }
    uint64_t need = HEADER_SIZE + (uint64_t)len;
    if (seg->bytes > 0 && seg->bytes + need > log->cfg.segment_bytes) {
        uint64_t next = seg->first_seq + seg->records;
        if (next <= seg->first_seq) {
            sm_errmsg_printf(errmsg, "%s: sequence numbers exhausted",
                             log->dir);
            return SM_EIO;
        }
        int rv = create_segment(log, next, errmsg);
        if (rv != SM_OK) {
            return rv == SM_ENOMEM ? rv : SM_EIO;
        }
        seg = &log->segs[log->n_segs - 1];
    }

    uint8_t header[HEADER_SIZE];
    put_u32(header, RECORD_MAGIC);
    put_u32(header + 4, (uint32_t)len);
    put_u64(header + 8, time_ns);
    uint32_t crc = sm_crc32c(0, header + 4, 12);
    crc = sm_crc32c(crc, payload, len);
    put_u32(header + 16, crc);
    struct iovec iov[2] = {
        {.iov_base = header, .iov_len = HEADER_SIZE},
        {.iov_base = (void *)(uintptr_t)payload, .iov_len = len},
    };
    int e = write_all(log->active_fd, iov, len > 0 ? 2 : 1, seg->bytes);
    const char *what = "write";
    if (e == 0 && log->cfg.sync == CBN_LOG_SYNC_EVERY &&
        fdatasync(log->active_fd) != 0) {
        e = errno;
        what = "fdatasync";
    }
    if (e != 0) {
        /* Cut the partial (or unsynced) record off so the next append
         * starts at a record boundary; retried then if this fails too. */
        if (ftruncate(log->active_fd, (off_t)seg->bytes) != 0) {
            log->tail_dirty = true;
        }
        segment_name(name, seg->first_seq);
        sm_errmsg_printf(errmsg, "%s/%s: %s: %s", log->dir, name, what,
                         strerror(e));
        return SM_EIO;
    }
    seg->bytes += need;
    seg->valid = seg->bytes;
    segment_add_time(seg, time_ns);
    log->total_bytes += need;
    log->total_records++;
    return SM_OK;
}

/* ---- Retention and figures ---------------------------------------------- */

int cbn_log_trim(struct cbn_log *log,
                 uint64_t now_ns,
                 char errmsg[SM_ERRMSG_SIZE])
{
    char scratch[SM_ERRMSG_SIZE];
    if (errmsg == NULL) {
        errmsg = scratch;
    }
    SM_ASSERT(!log->replaying);
    bool by_age = log->cfg.retain_ns > 0 && now_ns > log->cfg.retain_ns;
    uint64_t cutoff = by_age ? now_ns - log->cfg.retain_ns : 0;
    int rv = SM_OK;
    size_t drop = 0;
    while (drop + 1 < log->n_segs) {
        const struct segment *seg = &log->segs[drop];
        bool over = log->cfg.retain_bytes > 0 &&
                    log->total_bytes > log->cfg.retain_bytes;
        bool old = by_age && seg->newest_ns < cutoff;
        if (!over && !old) {
            break;
        }
        char name[NAME_SIZE];
        segment_name(name, seg->first_seq);
        if (unlinkat(log->dir_fd, name, 0) != 0 && errno != ENOENT) {
            int e = errno;
            sm_errmsg_printf(errmsg, "%s/%s: unlink: %s", log->dir, name,
                             strerror(e));
            rv = SM_EIO;
            break;
        }
        log->total_bytes -= seg->bytes;
        log->total_records -= seg->records;
        drop++;
    }
    if (drop == 0) {
        return rv;
    }
    memmove(log->segs, log->segs + drop,
            (log->n_segs - drop) * sizeof log->segs[0]);
    log->n_segs -= drop;
    if (log->cfg.sync == CBN_LOG_SYNC_EVERY && fsync(log->dir_fd) != 0 &&
        rv == SM_OK) {
        int e = errno;
        sm_errmsg_printf(errmsg, "%s: fsync after deleting segments: %s",
                         log->dir, strerror(e));
        rv = SM_EIO;
    }
    return rv;
}

void cbn_log_stats(const struct cbn_log *log, struct cbn_log_stats *out)
{
    memset(out, 0, sizeof *out);
    out->records = log->total_records;
    out->bytes = log->total_bytes;
    out->segments = log->n_segs;
    out->torn_bytes_repaired = log->torn_bytes;
    out->corrupt_records = log->corrupt_records;
    bool any = false;
    for (size_t i = 0; i < log->n_segs; i++) {
        const struct segment *seg = &log->segs[i];
        if (seg->records == 0) {
            continue;
        }
        if (!any || seg->oldest_ns < out->oldest_time_ns) {
            out->oldest_time_ns = seg->oldest_ns;
        }
        if (!any || seg->newest_ns > out->newest_time_ns) {
            out->newest_time_ns = seg->newest_ns;
        }
        any = true;
    }
}
