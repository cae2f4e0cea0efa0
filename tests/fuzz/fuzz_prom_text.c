/* Fuzz target: node_prom_parse, and what every sample it passes must obey. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "node/prom.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The callback stops the parse with this when it meets a sample whose value
 * is STOP_VALUE, to exercise the abort path. */
#define STOP_RV    77
#define STOP_VALUE 12345.0

struct state
{
    size_t samples;
    int stopped;
};

static int is_metric_name(const char *s)
{
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || *s == '_' ||
          *s == ':')) {
        return 0;
    }
    for (s++; *s != '\0'; s++) {
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
              (*s >= '0' && *s <= '9') || *s == '_' || *s == ':')) {
            return 0;
        }
    }
    return 1;
}

static int is_label_name(const char *s)
{
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || *s == '_')) {
        return 0;
    }
    for (s++; *s != '\0'; s++) {
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
              (*s >= '0' && *s <= '9') || *s == '_')) {
            return 0;
        }
    }
    return 1;
}

static int check_sample(void *arg, const struct node_prom_sample *s)
{
    struct state *st = arg;
    SM_ASSERT(!st->stopped);
    st->samples++;
    SM_ASSERT(s->name != NULL && is_metric_name(s->name));
    SM_ASSERT(s->family != NULL && is_metric_name(s->family));
    SM_ASSERT((unsigned)s->type <= NODE_PROM_SUMMARY);
    SM_ASSERT(strcmp(node_prom_type_name(s->type), "unknown") != 0);

    /* The family is the name, or the name less a suffix its type allows. */
    size_t n = strlen(s->name), f = strlen(s->family);
    SM_ASSERT(f <= n && memcmp(s->name, s->family, f) == 0);
    const char *suffix = s->name + f;
    if (f < n) {
        SM_ASSERT(
            (strcmp(suffix, "_bucket") == 0 &&
             s->type == NODE_PROM_HISTOGRAM) ||
            ((strcmp(suffix, "_sum") == 0 || strcmp(suffix, "_count") == 0) &&
             (s->type == NODE_PROM_HISTOGRAM || s->type == NODE_PROM_SUMMARY)));
    }

    SM_ASSERT(s->n_labels == 0 || s->labels != NULL);
    for (size_t i = 0; i < s->n_labels; i++) {
        SM_ASSERT(s->labels[i].name != NULL &&
                  is_label_name(s->labels[i].name));
        SM_ASSERT(s->labels[i].value != NULL);
        (void)strlen(s->labels[i].value); /* terminated, readable */
        if (s->n_labels <= 4096) {
            for (size_t j = 0; j < i; j++) {
                SM_ASSERT(strcmp(s->labels[i].name, s->labels[j].name) != 0);
            }
        }
    }
    SM_ASSERT(s->has_timestamp == 0 || s->has_timestamp == 1);
    SM_ASSERT(s->has_timestamp || s->timestamp_ms == 0);
    if (s->value == STOP_VALUE) {
        st->stopped = 1;
        return STOP_RV;
    }
    return 0;
}

/* Parses @size bytes at @text, checking the result's own invariants. */
static int run(const char *text,
               size_t size,
               struct state *st,
               char errmsg[SM_ERRMSG_SIZE])
{
    memset(st, 0, sizeof *st);
    int rv = node_prom_parse(text, size, check_sample, st, errmsg);
    SM_ASSERT(rv == SM_OK || rv == SM_EMALFORMED || rv == STOP_RV);
    SM_ASSERT((rv == STOP_RV) == st->stopped);
    SM_ASSERT(strlen(errmsg) < SM_ERRMSG_SIZE);
    if (rv == SM_OK) {
        SM_ASSERT(errmsg[0] == '\0');
    } else {
        SM_ASSERT(strncmp(errmsg, "line ", 5) == 0);
    }
    /* At most one sample per line. */
    size_t lines = 1;
    for (size_t i = 0; i < size; i++) {
        lines += text[i] == '\n';
    }
    SM_ASSERT(st->samples <= lines);
    return rv;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err1[SM_ERRMSG_SIZE], err2[SM_ERRMSG_SIZE];
    struct state st1, st2;
    int rv1 = run((const char *)data, size, &st1, err1);

    /* Without any CR in the input, CRLF line ends must change nothing: the
     * same result, samples and message. */
    if (memchr(data, '\r', size) != NULL) {
        return 0;
    }
    size_t lines = 0;
    for (size_t i = 0; i < size; i++) {
        lines += data[i] == '\n';
    }
    char *crlf = malloc(size + lines + 1);
    if (crlf == NULL) {
        return 0;
    }
    size_t len = 0;
    for (size_t i = 0; i < size; i++) {
        if (data[i] == '\n') {
            crlf[len++] = '\r';
        }
        crlf[len++] = (char)data[i];
    }
    int rv2 = run(crlf, len, &st2, err2);
    free(crlf);
    SM_ASSERT(rv1 == rv2);
    SM_ASSERT(st1.samples == st2.samples);
    SM_ASSERT(strcmp(err1, err2) == 0);
    return 0;
}
