/* Tests for the window log and its CRC-32C: round trips across segments,
 * torn tails, bit rot, retention, locking, write failures, out-of-memory
 * paths, and a real process killed with SIGKILL mid-stream. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/crc32c.h"
#include "base/err.h"
#include "base/rng.h"
#include "cbn/cbn.h"
#include "check.h"

#define HEADER   20u
#define MAX_SEEN 4096

/* ---- Records: payload i is its index (8 bytes LE) then a pattern ------- */

static size_t record_len(uint64_t i)
{
    return 8 + (size_t)((i * 37) % 300);
}

static uint64_t record_time(uint64_t i)
{
    return 1000 + i * 10;
}

static uint8_t pattern(uint64_t i, size_t k)
{
    return (uint8_t)(i * 131 + k * 7);
}

static void fill_record(uint64_t i, uint8_t *buf, size_t len)
{
    for (size_t k = 0; k < 8; k++) {
        buf[k] = (uint8_t)(i >> (8 * k));
    }
    for (size_t k = 8; k < len; k++) {
        buf[k] = pattern(i, k);
    }
}

/* What a replay saw: indices and lengths in order, and how many records
 * did not match the pattern. */
struct seen
{
    size_t n;
    uint64_t idx[MAX_SEEN];
    size_t len[MAX_SEEN];
    int bad;
    size_t stop_after; /* return 42 after this many; 0: never */
};

static int collect(void *arg, uint64_t time_ns, const uint8_t *p, size_t len)
{
    struct seen *s = arg;
    if (len < 8 || s->n == MAX_SEEN) {
        s->bad++;
        return 0;
    }
    uint64_t i = 0;
    for (size_t k = 0; k < 8; k++) {
        i |= (uint64_t)p[k] << (8 * k);
    }
    int ok = time_ns == record_time(i);
    for (size_t k = 8; k < len && ok; k++) {
        ok = p[k] == pattern(i, k);
    }
    s->bad += !ok;
    s->idx[s->n] = i;
    s->len[s->n] = len;
    s->n++;
    return s->stop_after != 0 && s->n == s->stop_after ? 42 : 0;
}

static struct seen seen; /* large: not on the stack */

/* Replays @log into `seen`, requiring success. */
static void replay_all(struct cbn_log *log)
{
    memset(&seen, 0, sizeof seen);
    REQUIRE_OK(cbn_log_replay(log, collect, &seen));
    CHECK_EQ(seen.bad, 0);
}

/* Checks that `seen` holds exactly the records first..last, with their
 * default lengths. */
static void check_seen_range(uint64_t first, uint64_t last)
{
    CHECK_EQ(seen.n, last + 1 - first);
    for (size_t k = 0; k < seen.n; k++) {
        if (seen.idx[k] != first + k || seen.len[k] != record_len(first + k)) {
            check__fail(__FILE__, __LINE__, 0,
                        "record %zu is #%llu (%zu bytes), want #%llu", k,
                        (unsigned long long)seen.idx[k], seen.len[k],
                        (unsigned long long)(first + k));
            return;
        }
    }
}

static struct cbn_log_config config(const char *dir, uint64_t segment_bytes)
{
    struct cbn_log_config c = {0};
    c.dir = dir;
    c.segment_bytes = segment_bytes;
    c.max_record = 1u << 20;
    c.sync = CBN_LOG_SYNC_NONE;
    return c;
}

static struct cbn_log *open_log(const struct cbn_log_config *c)
{
    struct cbn_log *log = NULL;
    char err[SM_ERRMSG_SIZE];
    int rv = cbn_log_open(c, &log, err);
    if (rv != SM_OK) {
        check__fail(__FILE__, __LINE__, 1, "cbn_log_open: %s: %s",
                    sm_errname(rv), err);
    }
    return log;
}

static void append_i(struct cbn_log *log, uint64_t i)
{
    uint8_t buf[512];
    size_t len = record_len(i);
    fill_record(i, buf, len);
    char err[SM_ERRMSG_SIZE];
    int rv = cbn_log_append(log, record_time(i), buf, len, err);
    if (rv != SM_OK) {
        check__fail(__FILE__, __LINE__, 1, "append #%llu: %s: %s",
                    (unsigned long long)i, sm_errname(rv), err);
    }
}

static struct cbn_log_stats stats_of(const struct cbn_log *log)
{
    struct cbn_log_stats st;
    cbn_log_stats(log, &st);
    return st;
}

/* ---- Files -------------------------------------------------------------- */

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Lists the segment files of @dir, sorted (malloc'ed; free with
 * free_names). */
static size_t list_segments(const char *dir, char ***names)
{
    DIR *d = opendir(dir);
    REQUIRE(d != NULL);
    size_t n = 0;
    char **v = NULL;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t l = strlen(e->d_name);
        if (l == 20 && strcmp(e->d_name + 16, ".log") == 0) {
            v = realloc(v, (n + 1) * sizeof *v);
            REQUIRE(v != NULL);
            v[n] = strdup(e->d_name);
            REQUIRE(v[n] != NULL);
            n++;
        }
    }
    closedir(d);
    if (n > 1) {
        qsort(v, n, sizeof *v, compare_names);
    }
    *names = v;
    return n;
}

static void free_names(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(names[i]);
    }
    free(names);
}

static size_t count_segments(const char *dir)
{
    char **names;
    size_t n = list_segments(dir, &names);
    free_names(names, n);
    return n;
}

static void path_of(char *out, size_t size, const char *dir, const char *name)
{
    snprintf(out, size, "%s/%s", dir, name);
}

static uint8_t *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    REQUIRE(f != NULL);
    REQUIRE(fseek(f, 0, SEEK_END) == 0);
    long size = ftell(f);
    REQUIRE(size >= 0);
    rewind(f);
    uint8_t *buf = malloc((size_t)size + 1);
    REQUIRE(buf != NULL);
    REQUIRE(fread(buf, 1, (size_t)size, f) == (size_t)size);
    fclose(f);
    *len = (size_t)size;
    return buf;
}

static void write_file(const char *path, const uint8_t *buf, size_t len)
{
    FILE *f = fopen(path, "wb");
    REQUIRE(f != NULL);
    REQUIRE(fwrite(buf, 1, len, f) == len);
    REQUIRE(fclose(f) == 0);
}

static long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

static int open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL) {
        return -1;
    }
    int n = 0;
    while (readdir(d) != NULL) {
        n++;
    }
    closedir(d);
    return n;
}

/* ---- CRC-32C ------------------------------------------------------------ */

static uint32_t crc_bitwise(uint32_t crc, const uint8_t *p, size_t len)
{
    crc = ~crc;
    while (len-- > 0) {
        crc ^= *p++;
        for (int k = 0; k < 8; k++) {
            crc = crc & 1 ? (crc >> 1) ^ 0x82F63B78u : crc >> 1;
        }
    }
    return ~crc;
}

static void test_crc32c(void)
{
    const char *v = "123456789";
    CHECK_EQ(sm_crc32c(0, v, 9), 0xE3069283u);
    CHECK_EQ(sm_crc32c_portable(0, v, 9), 0xE3069283u);
    CHECK_EQ(sm_crc32c(0, NULL, 0), 0);
    uint8_t zeros[32] = {0};
    CHECK_EQ(sm_crc32c(0, zeros, 32), 0x8A9136AAu); /* RFC 3720 B.4 */
    int hw = sm_crc32c_has_hw();
    printf("# crc32c hardware path: %s\n", hw ? "sse4.2" : "none");
    if (hw) {
        CHECK_EQ(sm_crc32c_hw(0, v, 9), 0xE3069283u);
    }

    static uint8_t buf[4096 + 8];
    struct sm_rng r;
    sm_rng_seed(&r, check_seed());
    for (size_t i = 0; i < sizeof buf; i++) {
        buf[i] = (uint8_t)sm_rng_u64(&r);
    }
    for (int t = 0; t < 500; t++) {
        size_t off = (size_t)sm_rng_below(&r, 8);
        size_t len = (size_t)sm_rng_below(&r, t < 100 ? 24 : 4096);
        uint32_t seed = t % 3 == 0 ? 0 : (uint32_t)sm_rng_u64(&r);
        uint32_t want = crc_bitwise(seed, buf + off, len);
        CHECK_EQ(sm_crc32c_portable(seed, buf + off, len), want);
        CHECK_EQ(sm_crc32c(seed, buf + off, len), want);
        if (hw) {
            CHECK_EQ(sm_crc32c_hw(seed, buf + off, len), want);
        }
        size_t cut = len == 0 ? 0 : (size_t)sm_rng_below(&r, len + 1);
        uint32_t chained = sm_crc32c(seed, buf + off, cut);
        CHECK_EQ(sm_crc32c(chained, buf + off + cut, len - cut), want);
    }
}

/* ---- The log --------------------------------------------------------------
 */

static void test_round_trip(void)
{
    int fds = open_fds();
    /* 1024-byte segments hold a few records each; 64-byte ones are smaller
     * than any record, so each record gets a segment of its own. */
    const uint64_t sizes[] = {1024, 64};
    for (size_t s = 0; s < 2; s++) {
        const char *dir = check_tmpdir();
        struct cbn_log_config c = config(dir, sizes[s]);
        struct cbn_log *log = open_log(&c);
        struct cbn_log_stats st = stats_of(log);
        CHECK_EQ(st.records, 0);
        CHECK_EQ(st.segments, 1);
        CHECK_EQ(st.oldest_time_ns, 0);
        replay_all(log);
        CHECK_EQ(seen.n, 0);

        uint64_t bytes = 0;
        for (uint64_t i = 0; i < 200; i++) {
            append_i(log, i);
            bytes += HEADER + record_len(i);
        }
        st = stats_of(log);
        CHECK_EQ(st.records, 200);
        CHECK_EQ(st.bytes, bytes);
        CHECK(st.segments > 5);
        CHECK_EQ(st.segments, count_segments(dir));
        CHECK_EQ(st.oldest_time_ns, record_time(0));
        CHECK_EQ(st.newest_time_ns, record_time(199));
        if (sizes[s] == 64) {
            CHECK_EQ(st.segments, 200);
        }
        replay_all(log);
        check_seen_range(0, 199);
        cbn_log_close(log);

        /* Segment names are the sequence of their first record; files stay
         * within segment_bytes unless a single record is larger. */
        char **names;
        size_t n = list_segments(dir, &names);
        CHECK_STR(names[0], "0000000000000000.log");
        uint64_t seq = 0;
        for (size_t k = 0; k < n; k++) {
            char want[32], path[512];
            snprintf(want, sizeof want, "%016llx.log", (unsigned long long)seq);
            CHECK_STR(names[k], want);
            path_of(path, sizeof path, dir, names[k]);
            long size = file_size(path);
            uint64_t in_file = 0;
            for (long used = 0; used < size; in_file++) {
                used += (long)(HEADER + record_len(seq + in_file));
            }
            CHECK(size <= (long)sizes[s] || in_file == 1);
            seq += in_file;
        }
        CHECK_EQ(seq, 200);
        free_names(names, n);

        /* Persistence: reopen, replay, go on appending. */
        log = open_log(&c);
        st = stats_of(log);
        CHECK_EQ(st.records, 200);
        CHECK_EQ(st.bytes, bytes);
        CHECK_EQ(st.torn_bytes_repaired, 0);
        CHECK_EQ(st.corrupt_records, 0);
        replay_all(log);
        check_seen_range(0, 199);
        for (uint64_t i = 200; i < 210; i++) {
            append_i(log, i);
        }
        replay_all(log);
        check_seen_range(0, 209);
        cbn_log_close(log);
    }
    CHECK_EQ(open_fds(), fds);
}

static void test_empty_and_limits(void)
{
    const char *dir = check_tmpdir();
    struct cbn_log_config c = config(dir, 0);
    c.max_record = 100;
    struct cbn_log *log = open_log(&c);
    uint8_t buf[101];
    fill_record(7, buf, sizeof buf);
    char err[SM_ERRMSG_SIZE];
    CHECK_EQ(cbn_log_append(log, 1, buf, 101, err), SM_ETOOBIG);
    printf("# %s\n", err);
    CHECK_EQ(cbn_log_append(log, 1, buf, SIZE_MAX, NULL), SM_ETOOBIG);
    CHECK_EQ(stats_of(log).records, 0);
    CHECK_EQ(stats_of(log).bytes, 0);
    CHECK_OK(cbn_log_append(log, record_time(7), buf, 100, NULL));
    CHECK_OK(cbn_log_append(log, 5, NULL, 0, NULL)); /* empty payload */
    memset(&seen, 0, sizeof seen);
    CHECK_OK(cbn_log_replay(log, collect, &seen));
    CHECK_EQ(seen.n, 1); /* the empty one counts as bad in collect() */
    CHECK_EQ(seen.bad, 1);
    CHECK_EQ(seen.len[0], 100);
    CHECK_EQ(stats_of(log).records, 2);
    CHECK_EQ(stats_of(log).bytes, 2 * HEADER + 100);
    cbn_log_close(log);

    /* A record exactly max_record long is accepted on reopen; with a lower
     * limit it is refused as corrupt (here: the torn tail). */
    log = open_log(&c);
    CHECK_EQ(stats_of(log).records, 2);
    cbn_log_close(log);
    c.max_record = 99;
    log = open_log(&c);
    CHECK_EQ(stats_of(log).records, 0);
    CHECK_EQ(stats_of(log).torn_bytes_repaired, 2 * HEADER + 100);
    cbn_log_close(log);

    /* Bad configurations. */
    struct cbn_log *out = NULL;
    CHECK_EQ(cbn_log_open(NULL, &out, NULL), SM_EINVAL);
    c.dir = NULL;
    CHECK_EQ(cbn_log_open(&c, &out, NULL), SM_EINVAL);
    c.dir = "";
    CHECK_EQ(cbn_log_open(&c, &out, NULL), SM_EINVAL);
    c.dir = dir;
    c.sync = (enum cbn_log_sync)7;
    CHECK_EQ(cbn_log_open(&c, &out, NULL), SM_EINVAL);
    CHECK(out == NULL);

    /* The directory is created one level deep only; a file is no dir. */
    char path[512];
    snprintf(path, sizeof path, "%s/new", dir);
    c = config(path, 0);
    c.sync = CBN_LOG_SYNC_EVERY;
    log = open_log(&c);
    cbn_log_close(log);
    struct stat st;
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0700);
    snprintf(path, sizeof path, "%s/a/b", dir);
    c.dir = path;
    CHECK_EQ(cbn_log_open(&c, &out, err), SM_EIO);
    printf("# %s\n", err);
    snprintf(path, sizeof path, "%s/new/0000000000000000.log", dir);
    CHECK_EQ(cbn_log_open(&c, &out, err), SM_EIO);
    CHECK(out == NULL);
}

/* Builds a log of @n default records in @dir and returns the path and
 * contents of its newest segment, and the offset of the last record. */
static uint8_t *build_log(const char *dir,
                          uint64_t n,
                          uint64_t segment_bytes,
                          char *path,
                          size_t path_size,
                          size_t *len)
{
    struct cbn_log_config c = config(dir, segment_bytes);
    struct cbn_log *log = open_log(&c);
    for (uint64_t i = 0; i < n; i++) {
        append_i(log, i);
    }
    cbn_log_close(log);
    char **names;
    size_t k = list_segments(dir, &names);
    REQUIRE(k > 1);
    path_of(path, path_size, dir, names[k - 1]);
    free_names(names, k);
    return read_file(path, len);
}

/* Opens the log in @dir, expecting @records readable after repairing
 * @torn bytes, then checks appends work and survive a reopen. */
static void check_repaired(const char *dir,
                           const char *segment,
                           uint64_t records,
                           uint64_t torn,
                           long good_size)
{
    struct cbn_log_config c = config(dir, 1024);
    struct cbn_log *log = open_log(&c);
    struct cbn_log_stats st = stats_of(log);
    CHECK_EQ(st.records, records);
    CHECK_EQ(st.torn_bytes_repaired, torn);
    CHECK_EQ(st.corrupt_records, 0);
    CHECK_EQ(file_size(segment), good_size);
    replay_all(log);
    check_seen_range(0, records - 1);
    append_i(log, records);
    cbn_log_close(log);
    log = open_log(&c);
    st = stats_of(log);
    CHECK_EQ(st.records, records + 1);
    CHECK_EQ(st.torn_bytes_repaired, 0);
    replay_all(log);
    check_seen_range(0, records);
    cbn_log_close(log);
}

static void test_torn_tail(void)
{
    const char *dir = check_tmpdir();
    const uint64_t n = 20;
    char segment[512];
    size_t len;
    uint8_t *orig = build_log(dir, n, 1024, segment, sizeof segment, &len);
    size_t last = HEADER + record_len(n - 1);
    REQUIRE(len >= last);
    size_t start = len - last;

    /* A crash may stop the last append at any byte. */
    for (size_t cut = start; cut < len; cut++) {
        write_file(segment, orig, cut);
        check_repaired(dir, segment, n - 1, cut - start, (long)start);
    }

    /* Garbage after the last record. */
    uint8_t junk[600];
    size_t junk_len[6];
    uint8_t junks[6][600];
    memset(junks, 0, sizeof junks);
    junk_len[0] = 7; /* zeros: a size extended without its data */
    junk_len[1] = 100;
    struct sm_rng r;
    sm_rng_seed(&r, check_seed());
    junk_len[2] = 50;
    for (size_t k = 0; k < 50; k++) {
        junks[2][k] = (uint8_t)sm_rng_u64(&r);
    }
    /* A valid-looking header whose length points far past the end. */
    memcpy(junks[3], orig + start, HEADER);
    junks[3][7] = 0x00;
    junks[3][6] = 0x0f;
    junk_len[3] = HEADER + 10;
    /* The last record again, with its CRC wrong or one payload bit flipped;
     * and a header alone. */
    memcpy(junks[4], orig + start, last);
    junks[4][16] ^= 1;
    junk_len[4] = last;
    memcpy(junks[5], orig + start, last);
    junks[5][last - 1] ^= 0x80;
    junk_len[5] = last;
    for (size_t j = 0; j < 6; j++) {
        uint8_t *buf = malloc(len + sizeof junk);
        REQUIRE(buf != NULL);
        memcpy(buf, orig, len);
        memcpy(buf + len, junks[j], junk_len[j]);
        write_file(segment, buf, len + junk_len[j]);
        free(buf);
        check_repaired(dir, segment, n, junk_len[j], (long)len);
    }
    free(orig);
}

/* Where the records of one segment file start, parsed independently. */
static size_t record_offsets(const uint8_t *buf, size_t len, size_t *offs)
{
    size_t n = 0;
    for (size_t at = 0; at + HEADER <= len;) {
        uint32_t l = (uint32_t)buf[at + 4] | (uint32_t)buf[at + 5] << 8 |
                     (uint32_t)buf[at + 6] << 16 | (uint32_t)buf[at + 7] << 24;
        offs[n++] = at;
        at += HEADER + l;
    }
    return n;
}

static void test_bit_rot(void)
{
    const char *dir = check_tmpdir();
    const uint64_t n = 60;
    char newest[512];
    size_t newest_len;
    free(build_log(dir, n, 1024, newest, sizeof newest, &newest_len));
    char **names;
    size_t k = list_segments(dir, &names);
    REQUIRE(k >= 4);
    /* Records before segment 1, and segment 1's layout. */
    char path[512];
    path_of(path, sizeof path, dir, names[0]);
    size_t len0;
    uint8_t *seg0 = read_file(path, &len0);
    size_t offs[64];
    uint64_t before = record_offsets(seg0, len0, offs);
    free(seg0);
    path_of(path, sizeof path, dir, names[1]);
    size_t len;
    uint8_t *orig = read_file(path, &len);
    size_t in_seg = record_offsets(orig, len, offs);
    REQUIRE(in_seg >= 3);
    struct stat st;
    REQUIRE(stat(path, &st) == 0);

    /* Flip one bit in each field of segment 1's second record, and in the
     * first record too: replay stops reading that segment there, counts
     * one corrupt record and carries on with the next segment. */
    const size_t fields[] = {0, 5, 7, 9, 17, HEADER + 3};
    for (size_t victim = 0; victim < 2; victim++) {
        for (size_t f = 0; f < sizeof fields / sizeof fields[0]; f++) {
            uint8_t *buf = malloc(len);
            REQUIRE(buf != NULL);
            memcpy(buf, orig, len);
            buf[offs[victim == 0 ? 1 : 0] + fields[f]] ^= 0x10;
            write_file(path, buf, len);
            free(buf);
            uint64_t lost_from = before + (victim == 0 ? 1 : 0);
            uint64_t lost = in_seg - (lost_from - before);

            struct cbn_log_config c = config(dir, 1024);
            struct cbn_log *log = open_log(&c);
            struct cbn_log_stats s = stats_of(log);
            CHECK_EQ(s.corrupt_records, 1);
            CHECK_EQ(s.torn_bytes_repaired, 0);
            CHECK_EQ(s.records, n - lost);
            CHECK_EQ(s.segments, k);
            CHECK_EQ(file_size(path), (long)len); /* nothing deleted */
            replay_all(log);
            CHECK_EQ(seen.n, n - lost);
            for (size_t j = 0; j < seen.n; j++) {
                uint64_t want = j < lost_from ? j : j + lost;
                if (seen.idx[j] != want) {
                    check__fail(__FILE__, __LINE__, 0,
                                "field %zu: replayed #%llu at %zu, want "
                                "#%llu",
                                fields[f], (unsigned long long)seen.idx[j], j,
                                (unsigned long long)want);
                    break;
                }
            }
            cbn_log_close(log);
        }
    }
    /* Bit rot after open is found by replay, which re-verifies. */
    write_file(path, orig, len);
    struct cbn_log_config c = config(dir, 1024);
    struct cbn_log *log = open_log(&c);
    CHECK_EQ(stats_of(log).corrupt_records, 0);
    uint8_t *buf = malloc(len);
    REQUIRE(buf != NULL);
    memcpy(buf, orig, len);
    buf[offs[2] + HEADER] ^= 1;
    write_file(path, buf, len);
    free(buf);
    replay_all(log);
    CHECK_EQ(seen.n, n - (in_seg - 2));
    CHECK_EQ(stats_of(log).corrupt_records, 1);
    append_i(log, n);
    cbn_log_close(log);
    free(orig);
    free_names(names, k);
}

static void test_retention(void)
{
    const char *dir = check_tmpdir();
    const uint64_t n = 100;
    struct cbn_log_config c = config(dir, 1024);
    c.retain_bytes = 3000;
    struct cbn_log *log = open_log(&c);
    for (uint64_t i = 0; i < n; i++) {
        append_i(log, i);
    }
    struct cbn_log_stats st = stats_of(log);
    uint64_t segments = st.segments;
    CHECK_OK(cbn_log_trim(log, 0, NULL));
    st = stats_of(log);
    CHECK(st.bytes <= 3000);
    CHECK(st.bytes > 3000 - 1024); /* stopped as soon as it was under */
    CHECK(st.segments < segments);
    CHECK_EQ(st.segments, count_segments(dir));
    replay_all(log);
    CHECK_EQ(seen.n, st.records);
    check_seen_range(n - st.records, n - 1);
    CHECK_EQ(st.oldest_time_ns, record_time(n - st.records));
    cbn_log_close(log);

    /* A cap below one segment keeps the active segment only. */
    c.retain_bytes = 1;
    log = open_log(&c);
    CHECK_EQ(stats_of(log).records, seen.n);
    CHECK_OK(cbn_log_trim(log, 0, NULL));
    st = stats_of(log);
    CHECK_EQ(st.segments, 1);
    CHECK(st.records > 0);
    CHECK_EQ(count_segments(dir), 1);
    replay_all(log);
    check_seen_range(n - st.records, n - 1);
    append_i(log, n); /* may rotate; the old segment then goes */
    CHECK_OK(cbn_log_trim(log, 0, NULL));
    st = stats_of(log);
    CHECK_EQ(st.segments, 1);
    replay_all(log);
    check_seen_range(n + 1 - st.records, n);
    cbn_log_close(log);

    /* By age: times are 1000 + 10 i. */
    dir = check_tmpdir();
    c = config(dir, 1024);
    c.retain_ns = 200;
    c.sync = CBN_LOG_SYNC_EVERY; /* also covers the directory syncs */
    log = open_log(&c);
    for (uint64_t i = 0; i < n; i++) {
        append_i(log, i);
    }
    segments = stats_of(log).segments;
    CHECK_OK(cbn_log_trim(log, 100, NULL));  /* now < retain: keep all */
    CHECK_OK(cbn_log_trim(log, 1100, NULL)); /* cutoff 900: nothing older */
    CHECK_EQ(stats_of(log).segments, segments);
    CHECK_OK(cbn_log_trim(log, 1500, NULL)); /* cutoff 1300: i < 30 */
    st = stats_of(log);
    CHECK(st.segments < segments);
    CHECK_EQ(st.segments, count_segments(dir));
    replay_all(log);
    check_seen_range(n - st.records, n - 1);
    uint64_t first = n - st.records;
    CHECK(first > 0 && first <= 30);
    /* Deletion stopped at the first segment reaching the cutoff. */
    char **names;
    size_t k = list_segments(dir, &names);
    char path[512];
    path_of(path, sizeof path, dir, names[0]);
    free_names(names, k);
    size_t len, offs[64];
    uint8_t *buf = read_file(path, &len);
    uint64_t in_first = record_offsets(buf, len, offs);
    free(buf);
    CHECK(first + in_first - 1 >= 30);
    CHECK_EQ(st.oldest_time_ns, record_time(first));
    CHECK_OK(cbn_log_trim(log, UINT64_MAX, NULL));
    st = stats_of(log);
    CHECK_EQ(st.segments, 1); /* the active segment is never deleted */
    CHECK(st.records > 0);
    CHECK_EQ(st.newest_time_ns, record_time(n - 1));
    CHECK_EQ(count_segments(dir), 1);
    cbn_log_close(log);
    log = open_log(&c);
    CHECK_EQ(stats_of(log).records, st.records);
    cbn_log_close(log);
}

static void test_lock(void)
{
    const char *dir = check_tmpdir();
    struct cbn_log_config c = config(dir, 0);
    struct cbn_log *log = open_log(&c);
    struct cbn_log *second = NULL;
    char err[SM_ERRMSG_SIZE];
    CHECK_EQ(cbn_log_open(&c, &second, err), SM_EEXIST);
    printf("# %s\n", err);
    CHECK(second == NULL);
    cbn_log_close(log);
    log = open_log(&c);
    cbn_log_close(log);
    cbn_log_close(NULL);
}

static void test_callback_abort(void)
{
    const char *dir = check_tmpdir();
    struct cbn_log_config c = config(dir, 256);
    struct cbn_log *log = open_log(&c);
    for (uint64_t i = 0; i < 10; i++) {
        append_i(log, i);
    }
    memset(&seen, 0, sizeof seen);
    seen.stop_after = 3;
    CHECK_EQ(cbn_log_replay(log, collect, &seen), 42);
    CHECK_EQ(seen.n, 3);
    replay_all(log); /* and a later replay starts over */
    check_seen_range(0, 9);
    cbn_log_close(log);
}

static void test_write_failure(void)
{
    /* RLIMIT_FSIZE makes the kernel cut a write short and then fail it
     * (EFBIG), as a full disk would. */
    const char *dir = check_tmpdir();
    struct cbn_log_config c = config(dir, 1u << 20);
    struct cbn_log *log = open_log(&c);
    for (uint64_t i = 0; i < 5; i++) {
        append_i(log, i);
    }
    uint64_t bytes = stats_of(log).bytes;
    struct rlimit old;
    REQUIRE(getrlimit(RLIMIT_FSIZE, &old) == 0);
    void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN);
    struct rlimit lim = old;
    lim.rlim_cur = (rlim_t)bytes + HEADER + 3;
    REQUIRE(setrlimit(RLIMIT_FSIZE, &lim) == 0);
    uint8_t buf[512];
    fill_record(5, buf, record_len(5));
    char err[SM_ERRMSG_SIZE];
    int rv = cbn_log_append(log, record_time(5), buf, record_len(5), err);
    int rv2 = cbn_log_append(log, record_time(5), buf, record_len(5), NULL);
    setrlimit(RLIMIT_FSIZE, &old);
    signal(SIGXFSZ, old_handler);
    CHECK_EQ(rv, SM_EIO);
    CHECK_EQ(rv2, SM_EIO);
    printf("# %s\n", err);
    char path[512];
    path_of(path, sizeof path, dir, "0000000000000000.log");
    CHECK_EQ(file_size(path), (long)bytes); /* the partial record is gone */
    CHECK_EQ(stats_of(log).records, 5);
    append_i(log, 5);
    replay_all(log);
    check_seen_range(0, 5);
    cbn_log_close(log);
    log = open_log(&c);
    CHECK_EQ(stats_of(log).torn_bytes_repaired, 0);
    CHECK_EQ(stats_of(log).records, 6);
    cbn_log_close(log);
}

static int count_cb(void *arg, uint64_t time_ns, const uint8_t *p, size_t len)
{
    (void)time_ns;
    (void)p;
    (void)len;
    (*(size_t *)arg)++;
    return 0;
}

static void test_out_of_memory(void)
{
    /* A log with a torn tail and one record larger than the read buffer,
     * so that open, the reader's growth, append (with rotation) and replay
     * all allocate. */
    const char *dir = check_tmpdir();
    struct cbn_log_config c = config(dir, 1024);
    struct cbn_log *log = open_log(&c);
    for (uint64_t i = 0; i < 10; i++) {
        append_i(log, i);
    }
    size_t big_len = 300 * 1024;
    uint8_t *big = malloc(big_len);
    REQUIRE(big != NULL);
    fill_record(10, big, big_len);
    REQUIRE_OK(cbn_log_append(log, record_time(10), big, big_len, NULL));
    for (uint64_t i = 11; i < 40; i++) {
        append_i(log, i);
    }
    cbn_log_close(log);
    free(big);
    int fds = open_fds();

    uint64_t appended = 0;
    for (int k = 0; k < 1000; k++) {
        check_heap_install();
        check_heap_fault(k, 1);
        int done = 0;
        log = NULL;
        int rv = cbn_log_open(&c, &log, NULL);
        if (rv == SM_OK) {
            uint8_t buf[512];
            uint64_t i = 40 + appended;
            fill_record(i, buf, record_len(i));
            rv = cbn_log_append(log, record_time(i), buf, record_len(i), NULL);
            appended += rv == SM_OK;
        }
        size_t count = 0;
        if (rv == SM_OK) {
            rv = cbn_log_replay(log, count_cb, &count);
        }
        if (rv == SM_OK) {
            CHECK_EQ(count, 40 + appended);
            done = 1;
        } else {
            CHECK_EQ(rv, SM_ENOMEM);
        }
        cbn_log_close(log);
        CHECK_EQ(check_heap_outstanding(), 0);
        check_heap_uninstall();
        CHECK_EQ(open_fds(), fds);
        if (done) {
            CHECK(k > 3);
            printf("# completed after %d injected faults, %llu appends\n", k,
                   (unsigned long long)appended);
            break;
        }
        if (k == 999) {
            check__fail(__FILE__, __LINE__, 0, "never completed");
        }
    }
    log = open_log(&c);
    struct cbn_log_stats st = stats_of(log);
    CHECK_EQ(st.records, 40 + appended);
    CHECK_EQ(st.torn_bytes_repaired, 0);
    CHECK_EQ(st.corrupt_records, 0);
    replay_all(log);
    CHECK_EQ(seen.n, 40 + appended);
    for (size_t j = 0; j < seen.n; j++) {
        CHECK_EQ(seen.idx[j], j);
    }
    cbn_log_close(log);
}

static void test_kill_9(void)
{
    /* A child appends with CBN_LOG_SYNC_EVERY and reports each
     * acknowledged record on a pipe; after N acknowledgements it is killed
     * wherever it happens to be. Every acknowledged record must be there,
     * intact, and the log must continue exactly where it stopped. */
    const char *dir = check_tmpdir();
    const uint64_t acks = 150;
    int p[2];
    REQUIRE(pipe(p) == 0);
    fflush(stdout);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        close(p[0]);
        struct cbn_log_config c = config(dir, 2048);
        c.sync = CBN_LOG_SYNC_EVERY;
        struct cbn_log *log;
        if (cbn_log_open(&c, &log, NULL) != SM_OK) {
            _exit(1);
        }
        for (uint64_t i = 0;; i++) {
            uint8_t buf[512];
            fill_record(i, buf, record_len(i));
            if (cbn_log_append(log, record_time(i), buf, record_len(i), NULL) !=
                SM_OK) {
                _exit(2);
            }
            if (write(p[1], &i, sizeof i) != (ssize_t)sizeof i) {
                _exit(3);
            }
        }
    }
    close(p[1]);
    uint64_t got = 0;
    while (got < acks) {
        uint64_t i;
        ssize_t r = read(p[0], &i, sizeof i);
        if (r != (ssize_t)sizeof i || i != got) {
            break;
        }
        got++;
    }
    kill(pid, SIGKILL);
    int status;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    close(p[0]);
    REQUIRE_EQ(got, acks);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

    struct cbn_log_config c = config(dir, 2048);
    struct cbn_log *log = open_log(&c);
    struct cbn_log_stats st = stats_of(log);
    printf(
        "# killed after %llu acks: %llu records, %llu segments, %llu torn "
        "bytes\n",
        (unsigned long long)acks, (unsigned long long)st.records,
        (unsigned long long)st.segments,
        (unsigned long long)st.torn_bytes_repaired);
    CHECK(st.records >= acks);
    CHECK_EQ(st.corrupt_records, 0);
    replay_all(log);
    check_seen_range(0, st.records - 1);
    append_i(log, st.records);
    replay_all(log);
    check_seen_range(0, st.records);
    cbn_log_close(log);
}

static const struct check_test tests[] = {
    {"crc32c", test_crc32c},
    {"round trip across segments", test_round_trip},
    {"limits and configuration", test_empty_and_limits},
    {"torn tail", test_torn_tail},
    {"bit rot in an older segment", test_bit_rot},
    {"retention", test_retention},
    {"lock", test_lock},
    {"callback abort", test_callback_abort},
    {"write failure", test_write_failure},
    {"out of memory", test_out_of_memory},
    {"kill -9", test_kill_9},
};

CHECK_MAIN(tests, NULL, NULL)
