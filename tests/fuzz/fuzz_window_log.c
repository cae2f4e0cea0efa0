/* Fuzz target: the window log's recovery from an arbitrary segment file. */
#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/err.h"
#include "cbn/cbn.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define LAST_MAX 128

/* What a replay saw: the count and the last record. */
struct tally
{
    uint64_t count;
    uint64_t last_time;
    size_t last_len;
    uint8_t last[LAST_MAX];
};

static int tally_cb(void *arg, uint64_t time_ns, const uint8_t *p, size_t len)
{
    struct tally *t = arg;
    SM_ASSERT(len <= (1u << 20));
    SM_ASSERT(len == 0 || p != NULL);
    t->count++;
    t->last_time = time_ns;
    t->last_len = len;
    if (len <= LAST_MAX && len > 0) {
        memcpy(t->last, p, len);
    }
    return 0;
}

/* Removes @dir and the files in it. */
static void remove_dir(const char *dir)
{
    DIR *d = opendir(dir);
    SM_ASSERT(d != NULL);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
            SM_ASSERT(unlinkat(dirfd(d), e->d_name, 0) == 0);
        }
    }
    closedir(d);
    SM_ASSERT(rmdir(dir) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char dir[] = "/tmp/fuzz_window_log-XXXXXX";
    SM_ASSERT(mkdtemp(dir) != NULL);
    char path[sizeof dir + 32];
    snprintf(path, sizeof path, "%s/0000000000000000.log", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    SM_ASSERT(fd >= 0);
    for (size_t done = 0; done < size;) {
        ssize_t w = write(fd, data + done, size - done);
        SM_ASSERT(w > 0);
        done += (size_t)w;
    }
    SM_ASSERT(close(fd) == 0);

    struct cbn_log_config c = {
        .dir = dir,
        .max_record = 1u << 20,
        .sync = CBN_LOG_SYNC_NONE,
    };
    struct cbn_log *log;
    char err[SM_ERRMSG_SIZE];
    SM_ASSERT(cbn_log_open(&c, &log, err) == SM_OK);
    struct cbn_log_stats st;
    cbn_log_stats(log, &st);
    /* The only segment is the newest: anything bad is a torn tail. */
    SM_ASSERT(st.segments == 1);
    SM_ASSERT(st.corrupt_records == 0);
    SM_ASSERT(st.bytes + st.torn_bytes_repaired == size);
    SM_ASSERT(st.bytes >= 20 * st.records);

    struct tally t = {0};
    SM_ASSERT(cbn_log_replay(log, tally_cb, &t) == SM_OK);
    SM_ASSERT(t.count == st.records);
    SM_ASSERT(st.records == 0 || t.last_time <= st.newest_time_ns);

    uint8_t rec[LAST_MAX];
    size_t len = size < sizeof rec ? size : sizeof rec;
    if (len > 0) {
        memcpy(rec, data, len);
    }
    uint64_t time_ns = 0x5eed0000u + size;
    SM_ASSERT(cbn_log_append(log, time_ns, rec, len, err) == SM_OK);
    struct cbn_log_stats after;
    cbn_log_stats(log, &after);
    SM_ASSERT(after.records == st.records + 1);
    SM_ASSERT(after.bytes == st.bytes + 20 + len);

    memset(&t, 0, sizeof t);
    SM_ASSERT(cbn_log_replay(log, tally_cb, &t) == SM_OK);
    SM_ASSERT(t.count == after.records);
    SM_ASSERT(t.last_time == time_ns);
    SM_ASSERT(t.last_len == len);
    SM_ASSERT(len == 0 || memcmp(t.last, rec, len) == 0);
    cbn_log_close(log);
    remove_dir(dir);
    return 0;
}
