/* cbn: windows, sketches, RPC graph and the Causal Bayesian Network. */
#ifndef SM_CBN_H
#define SM_CBN_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

/* ---- Quantile sketch --------------------------------------------------
 *
 * A mergeable relative-error quantile sketch (DDSketch, Masson et al., VLDB
 * 2019). Values are counted in logarithmic buckets of ratio
 * gamma = (1 + a) / (1 - a), so any quantile it returns is within relative
 * error a of the exact value of that rank, whatever the distribution, and two
 * sketches of the same accuracy merge by adding bucket counts: replicas and
 * peers merge latency and metric distributions without shipping samples.
 *
 * Quantile convention: quantile(q) estimates the element of rank
 * floor(q * (n - 1)) (0-based) of the sorted input.
 *
 * Memory is bounded by max_bins buckets per sign. When a sketch would need
 * more, the buckets of the smallest magnitudes are collapsed into one, so
 * the high quantiles (the tail we care about) stay accurate and only the
 * lowest ones lose precision. With a = 0.01 and 2048 bins a sketch spans 17
 * decades, e.g. 1 ns to 10^8 s, without collapsing.
 *
 * Values of magnitude below CBN_SKETCH_MIN_VALUE count as zero. NaN and
 * infinities are rejected. A sketch is not thread-safe. */
struct cbn_sketch;

#define CBN_SKETCH_MIN_VALUE        1e-9
#define CBN_SKETCH_DEFAULT_ACCURACY 0.01
#define CBN_SKETCH_DEFAULT_MAX_BINS 2048u

/* Creates an empty sketch with relative accuracy @accuracy (0 < a < 1, e.g.
 * 0.01 for 1%) and at most @max_bins buckets per sign (>= 16). On success
 * stores a sketch owned by the caller (cbn_sketch_free) in @out and returns
 * SM_OK; returns SM_EINVAL for bad parameters or SM_ENOMEM, leaving @out
 * untouched. */
int cbn_sketch_new(double accuracy, uint32_t max_bins, struct cbn_sketch **out);

/* Frees @sketch; NULL is a no-op. */
void cbn_sketch_free(struct cbn_sketch *sketch);

/* Counts @value @count times. Returns SM_OK, SM_EINVAL for a non-finite value
 * or a zero count, SM_ERANGE if the total count would overflow, or
 * SM_ENOMEM; on error the sketch is unchanged. */
int cbn_sketch_add(struct cbn_sketch *sketch, double value, uint64_t count);

/* Adds every value counted in @src to @dst. Both must have the same accuracy
 * (SM_EINVAL otherwise). Returns SM_OK, SM_ERANGE on count overflow, or
 * SM_ENOMEM; on error @dst is unchanged. @src is not modified. */
int cbn_sketch_merge(struct cbn_sketch *dst, const struct cbn_sketch *src);

/* Empties @sketch, keeping its parameters and buffers. */
void cbn_sketch_clear(struct cbn_sketch *sketch);

/* Returns the number of values counted. */
uint64_t cbn_sketch_count(const struct cbn_sketch *sketch);

/* Returns the estimate of quantile @q (clamped to [0, 1]), or NaN when the
 * sketch is empty. Exact for q = 0 and q = 1 (the minimum and maximum are
 * tracked exactly). */
double cbn_sketch_quantile(const struct cbn_sketch *sketch, double q);

/* Returns the exact sum of the values counted (NaN when empty). */
double cbn_sketch_sum(const struct cbn_sketch *sketch);

/* Returns the accuracy the sketch was created with. */
double cbn_sketch_accuracy(const struct cbn_sketch *sketch);

/* Serialises @sketch into a new buffer owned by the caller (sm_free),
 * storing it in @buf and its length in @len. Returns SM_OK or SM_ENOMEM
 * (outputs untouched). The format is versioned, little-endian and
 * platform-independent. */
int cbn_sketch_encode(const struct cbn_sketch *sketch,
                      uint8_t **buf,
                      size_t *len);

/* Parses @len bytes at @buf (borrowed) into a new sketch owned by the caller,
 * refusing more than @max_bins buckets per sign. Returns SM_OK,
 * SM_EMALFORMED for anything that is not exactly one valid encoding
 * (truncated, trailing bytes, bad counts, bad parameters),
 * SM_EUNSUPPORTED for an unknown version, SM_ETOOBIG past @max_bins, or
 * SM_ENOMEM. Allocation is bounded by @len: a small hostile input cannot
 * make it allocate much. */
int cbn_sketch_decode(const uint8_t *buf,
                      size_t len,
                      uint32_t max_bins,
                      struct cbn_sketch **out);

/* ---- Window log (crash-safe, append-only) ------------------------------
 *
 * Closed windows are appended to a log of segment files under a directory,
 * so a restart replays them and a `kill -9` loses at most the windows still
 * open. The log knows nothing of window contents: a record is an opaque
 * payload plus the event time it belongs to (the window end), used for
 * retention by age.
 *
 * On disk: segment files "<dir>/<16 hex digits: first sequence>.log", each a
 * sequence of records
 *
 *   magic u32 | length u32 | time_ns u64 | crc32c u32 | payload[length]
 *
 * little-endian, where the CRC-32C covers length, time_ns and the payload.
 * Appends go to the newest segment; a segment over segment_bytes is closed
 * and a new one begun.
 *
 * Durability: with CBN_LOG_SYNC_EVERY (default) append returns only after
 * fdatasync(2) of the segment (and of the directory when a segment was
 * created), so an acknowledged record survives a crash or power loss.
 * CBN_LOG_SYNC_NONE leaves it to the kernel (tests, benchmarks).
 *
 * Recovery: open scans every segment. A torn or corrupt tail of the newest
 * segment (a crash mid-append) is truncated away and counted in
 * torn_bytes_repaired. A bad record inside an older segment is bit rot, not
 * a crash: replay stops reading that segment there, counts
 * corrupt_records, and goes on with the next segment; nothing is deleted.
 *
 * Not thread-safe; one process per directory (an advisory lock file
 * "<dir>/LOCK" is held while open: a second opener gets SM_EEXIST). */

struct cbn_log;

enum cbn_log_sync { CBN_LOG_SYNC_EVERY, CBN_LOG_SYNC_NONE };

struct cbn_log_config
{
    const char *dir;        /* created (one level, mode 0700) if missing */
    uint64_t segment_bytes; /* rotate past this size; 0 -> 64 MiB */
    uint64_t retain_bytes;  /* total size kept by cbn_log_trim; 0: no cap */
    uint64_t retain_ns;     /* age kept by cbn_log_trim; 0: no cap */
    uint32_t max_record;    /* largest payload accepted; 0 -> 64 MiB */
    enum cbn_log_sync sync;
};

struct cbn_log_stats
{
    uint64_t records; /* readable records in the log */
    uint64_t bytes;   /* total size of the segment files */
    uint64_t segments;
    uint64_t torn_bytes_repaired; /* truncated from the tail at open */
    uint64_t corrupt_records;     /* bad records found in older segments */
    uint64_t oldest_time_ns, newest_time_ns; /* 0 when empty */
};

/* Opens (creating if needed) the log in @config->dir, scans and repairs it
 * as described above. On success stores the log in @out (close it with
 * cbn_log_close) and returns SM_OK. Errors: SM_EINVAL (bad config),
 * SM_EEXIST (another process holds the lock), SM_EPERM, SM_EIO, SM_ENOMEM;
 * @errmsg says which file and why; @out untouched. */
int cbn_log_open(const struct cbn_log_config *config,
                 struct cbn_log **out,
                 char errmsg[SM_ERRMSG_SIZE]);

/* Receives one record during replay; @payload is borrowed for the call.
 * Returning non-zero stops the replay, and cbn_log_replay() returns it. */
typedef int (*cbn_log_record_cb)(void *arg,
                                 uint64_t time_ns,
                                 const uint8_t *payload,
                                 size_t len);

/* Calls @cb for every readable record, oldest first. Returns SM_OK, the
 * callback's non-zero value, SM_EIO or SM_ENOMEM. */
int cbn_log_replay(struct cbn_log *log, cbn_log_record_cb cb, void *arg);

/* Appends one record of @len bytes (borrowed) for event time @time_ns.
 * Returns SM_OK once it is durable per the sync policy; SM_ETOOBIG over
 * max_record; SM_EIO (disk full, I/O error: the partial record is truncated
 * away so the log stays appendable) with @errmsg set; SM_ENOMEM. */
int cbn_log_append(struct cbn_log *log,
                   uint64_t time_ns,
                   const uint8_t *payload,
                   size_t len,
                   char errmsg[SM_ERRMSG_SIZE]);

/* Applies retention: deletes whole segments, oldest first, while the log is
 * over retain_bytes or a segment's newest record is older than
 * @now_ns - retain_ns. Never deletes the segment being appended to. Returns
 * SM_OK or SM_EIO. */
int cbn_log_trim(struct cbn_log *log,
                 uint64_t now_ns,
                 char errmsg[SM_ERRMSG_SIZE]);

/* Fills @out with the log's figures. */
void cbn_log_stats(const struct cbn_log *log, struct cbn_log_stats *out);

/* Closes the files, releases the lock and frees @log; NULL is a no-op. */
void cbn_log_close(struct cbn_log *log);

#endif /* SM_CBN_H */
