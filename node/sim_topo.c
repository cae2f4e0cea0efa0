/* Simulator topologies: the text format's parser and writer, and the
 * built-in topologies, which are written in that format.
 *
 * The parser reads the whole file line by line into growable arrays. Call
 * targets may name ops declared later, so they are kept as text and
 * resolved at the end, each error still naming the line of its call. Then
 * the op graph is checked for cycles (a request must terminate) and for
 * size: the number of calls one request could make, counting every call of
 * non-zero probability, is bounded, so no file can make a request that
 * never ends or floods memory. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "node/sim_topo.h"

#define MAX_FILE   (1u << 20)
#define MAX_LINE   4096
#define MAX_TOKENS 128

/* ---- Built-in topologies ------------------------------------------------
 *
 * Capacities are set so that at the default rate the busiest tiers run at
 * roughly 30-60% of their cores, as a provisioned production system would,
 * leaving headroom that faults then eat. */

static const char *const chain_text[] = {
    "topology chain\n",
    "hosts 3\n",
    "rate 200\n",
    "qos-target-ms 60\n",
    "service frontend replicas=2 threads=64 cores=1\n",
    "service tier-1 replicas=2 threads=32 cores=1\n",
    "service tier-2 replicas=2 threads=32 cores=1\n",
    "service tier-3 replicas=2 threads=32 cores=1\n",
    "service tier-4 replicas=2 threads=32 cores=1\n",
    "service tier-5-db replicas=1 threads=32 cores=2 memory-mb=1024 ",
    "limit-mb=4096\n",
    "op frontend /api/get compute-ms=3 sigma=0.4 req-bytes=600 ",
    "resp-bytes=4000\n",
    "op tier-1 Get compute-ms=4 sigma=0.5 req-bytes=400 resp-bytes=3000\n",
    "op tier-2 Get compute-ms=4 sigma=0.5 req-bytes=400 resp-bytes=3000\n",
    "op tier-3 Get compute-ms=3.5 sigma=0.5 req-bytes=400 resp-bytes=2000\n",
    "op tier-4 Get compute-ms=3.5 sigma=0.5 req-bytes=400 resp-bytes=2000\n",
    "op tier-5-db find compute-ms=3 sigma=0.6 req-bytes=300 ",
    "resp-bytes=1500 disk-p=0.3 read-bytes=16384 write-bytes=512\n",
    "call frontend /api/get tier-1:Get\n",
    "call tier-1 Get tier-2:Get\n",
    "call tier-2 Get tier-3:Get\n",
    "call tier-3 Get tier-4:Get\n",
    "call tier-4 Get tier-5-db:find\n",
    "entry frontend /api/get 1\n",
    NULL,
};

static const char *const fanout_text[] = {
    "topology fanout\n",
    "hosts 3\n",
    "rate 200\n",
    "qos-target-ms 40\n",
    "service frontend replicas=2 threads=64 cores=1\n",
    "service leaf-1 replicas=2 threads=32 cores=1\n",
    "service leaf-2 replicas=2 threads=32 cores=1\n",
    "service leaf-3 replicas=2 threads=32 cores=1\n",
    "service leaf-4 replicas=2 threads=32 cores=1\n",
    "service leaf-5-db replicas=1 threads=32 cores=2 memory-mb=1024 ",
    "limit-mb=4096\n",
    "op frontend /api/search compute-ms=3 sigma=0.4 req-bytes=800 ",
    "resp-bytes=6000\n",
    "op leaf-1 Search compute-ms=4.5 sigma=0.5 req-bytes=300 ",
    "resp-bytes=2000\n",
    "op leaf-2 Search compute-ms=4.5 sigma=0.5 req-bytes=300 ",
    "resp-bytes=2000\n",
    "op leaf-3 Search compute-ms=4 sigma=0.5 req-bytes=300 ",
    "resp-bytes=2000\n",
    "op leaf-4 Search compute-ms=4 sigma=0.5 req-bytes=300 ",
    "resp-bytes=2000\n",
    "op leaf-5-db Search compute-ms=3 sigma=0.6 req-bytes=300 ",
    "resp-bytes=1500 disk-p=0.3 read-bytes=16384 write-bytes=256\n",
    "call frontend /api/search leaf-1:Search leaf-2:Search leaf-3:Search ",
    "leaf-4:Search leaf-5-db:Search\n",
    "entry frontend /api/search 1\n",
    NULL,
};

/* DeathStarBench's social network (Gan et al., ASPLOS 2019), its 28
 * services including the caches and databases, with write-home-timeline
 * called synchronously instead of through RabbitMQ. The request mix follows
 * the wrk2 mixed workload (60% read-home-timeline, 30% read-user-timeline,
 * 10% compose-post), with follows, logins and media uploads taken out of
 * the reads. */
static const char *const social_text[] = {
    "topology social\n",
    "hosts 4\n",
    "rate 200\n",
    "qos-target-ms 100\n",
    "service nginx-web replicas=2 threads=64 cores=1\n",
    "service media-frontend replicas=1 threads=16 cores=1\n",
    "service compose-post replicas=1 threads=32 cores=1\n",
    "service text replicas=1 threads=16 cores=1\n",
    "service user-mention replicas=1 threads=16 cores=1\n",
    "service url-shorten replicas=1 threads=16 cores=1\n",
    "service media replicas=1 threads=16 cores=1\n",
    "service unique-id replicas=1 threads=16 cores=1\n",
    "service user replicas=1 threads=16 cores=1\n",
    "service post-storage replicas=2 threads=32 cores=1\n",
    "service user-timeline replicas=2 threads=16 cores=1\n",
    "service home-timeline replicas=2 threads=32 cores=1\n",
    "service social-graph replicas=1 threads=16 cores=1\n",
    "service write-home-timeline replicas=1 threads=16 cores=1\n",
    "service user-memcached replicas=1 threads=8 cores=1 memory-mb=512\n",
    "service user-mongodb replicas=1 threads=32 cores=2 memory-mb=1024 ",
    "limit-mb=4096\n",
    "service post-storage-memcached replicas=1 threads=8 cores=1 ",
    "memory-mb=1024 limit-mb=2048\n",
    "service post-storage-mongodb replicas=1 threads=32 cores=2 ",
    "memory-mb=2048 limit-mb=8192\n",
    "service user-timeline-redis replicas=1 threads=4 cores=1 ",
    "memory-mb=512\n",
    "service user-timeline-mongodb replicas=1 threads=32 cores=2 ",
    "memory-mb=1024 limit-mb=4096\n",
    "service home-timeline-redis replicas=1 threads=4 cores=1 ",
    "memory-mb=768\n",
    "service social-graph-redis replicas=1 threads=4 cores=1 memory-mb=256\n",
    "service social-graph-mongodb replicas=1 threads=32 cores=2 ",
    "memory-mb=1024 limit-mb=4096\n",
    "service url-shorten-memcached replicas=1 threads=8 cores=1 ",
    "memory-mb=256\n",
    "service url-shorten-mongodb replicas=1 threads=32 cores=1 ",
    "memory-mb=512 limit-mb=2048\n",
    "service media-memcached replicas=1 threads=8 cores=1 memory-mb=512\n",
    "service media-mongodb replicas=1 threads=32 cores=1 memory-mb=1024 ",
    "limit-mb=4096\n",
    "service compose-post-redis replicas=1 threads=4 cores=1 ",
    "memory-mb=256\n",
    /* Frontend routes. */
    "op nginx-web /wrk2-api/post/compose compute-ms=5 sigma=0.4 ",
    "req-bytes=1200 resp-bytes=300\n",
    "op nginx-web /wrk2-api/home-timeline/read compute-ms=4 sigma=0.4 ",
    "req-bytes=300 resp-bytes=8000\n",
    "op nginx-web /wrk2-api/user-timeline/read compute-ms=4 sigma=0.4 ",
    "req-bytes=300 resp-bytes=8000\n",
    "op nginx-web /wrk2-api/user/follow compute-ms=3 sigma=0.4 ",
    "req-bytes=300 resp-bytes=200\n",
    "op nginx-web /wrk2-api/user/login compute-ms=3 sigma=0.4 ",
    "req-bytes=300 resp-bytes=300\n",
    "op nginx-web /upload-media compute-ms=4 sigma=0.4 req-bytes=60000 ",
    "resp-bytes=200\n",
    "op media-frontend /upload-media compute-ms=12 sigma=0.5 ",
    "req-bytes=60000 resp-bytes=200\n",
    /* compose-post and its helpers. */
    "op compose-post ComposePost compute-ms=12 sigma=0.5 req-bytes=1200 ",
    "resp-bytes=100\n",
    "op text ComposeText compute-ms=10 sigma=0.5 req-bytes=800 ",
    "resp-bytes=900\n",
    "op user-mention ComposeUserMentions compute-ms=5 sigma=0.5 ",
    "req-bytes=300 resp-bytes=300\n",
    "op url-shorten ComposeUrls compute-ms=6 sigma=0.5 req-bytes=300 ",
    "resp-bytes=300\n",
    "op media ComposeMedia compute-ms=2 sigma=0.5 req-bytes=200 ",
    "resp-bytes=200\n",
    "op unique-id ComposeUniqueId compute-ms=1 sigma=0.3 req-bytes=100 ",
    "resp-bytes=60\n",
    "op user ComposeCreatorWithUserId compute-ms=3 sigma=0.4 ",
    "req-bytes=200 resp-bytes=200\n",
    "op user Login compute-ms=10 sigma=0.4 req-bytes=200 resp-bytes=300\n",
    "op user GetUserId compute-ms=2 sigma=0.4 req-bytes=200 ",
    "resp-bytes=100\n",
    "op post-storage StorePost compute-ms=3 sigma=0.5 req-bytes=1200 ",
    "resp-bytes=60\n",
    "op post-storage ReadPosts compute-ms=4 sigma=0.5 req-bytes=300 ",
    "resp-bytes=8000\n",
    "op user-timeline WriteUserTimeline compute-ms=3 sigma=0.5 ",
    "req-bytes=200 resp-bytes=60\n",
    "op user-timeline ReadUserTimeline compute-ms=8 sigma=0.5 ",
    "req-bytes=200 resp-bytes=8000\n",
    "op home-timeline ReadHomeTimeline compute-ms=6 sigma=0.5 ",
    "req-bytes=200 resp-bytes=8000\n",
    "op write-home-timeline WriteHomeTimeline compute-ms=8 sigma=0.5 ",
    "req-bytes=200 resp-bytes=60\n",
    "op social-graph GetFollowers compute-ms=5 sigma=0.5 req-bytes=200 ",
    "resp-bytes=1500\n",
    "op social-graph Follow compute-ms=5 sigma=0.5 req-bytes=200 ",
    "resp-bytes=60\n",
    /* Storage tiers. */
    "op user-memcached get compute-ms=0.5 sigma=0.3 req-bytes=100 ",
    "resp-bytes=400\n",
    "op user-mongodb find compute-ms=5 sigma=0.6 req-bytes=200 ",
    "resp-bytes=400 disk-p=0.4 read-bytes=16384\n",
    "op post-storage-memcached get compute-ms=0.5 sigma=0.3 ",
    "req-bytes=200 resp-bytes=6000\n",
    "op post-storage-memcached set compute-ms=0.4 sigma=0.3 ",
    "req-bytes=1200 resp-bytes=60\n",
    "op post-storage-mongodb find compute-ms=5 sigma=0.6 req-bytes=300 ",
    "resp-bytes=6000 disk-p=0.5 read-bytes=32768\n",
    "op post-storage-mongodb insert compute-ms=4 sigma=0.5 ",
    "req-bytes=1200 resp-bytes=60 disk-p=1 write-bytes=4096\n",
    "op user-timeline-redis zrevrange compute-ms=0.6 sigma=0.3 ",
    "req-bytes=100 resp-bytes=800\n",
    "op user-timeline-redis zadd compute-ms=0.5 sigma=0.3 req-bytes=200 ",
    "resp-bytes=40\n",
    "op user-timeline-mongodb find compute-ms=5 sigma=0.6 ",
    "req-bytes=200 resp-bytes=800 disk-p=0.5 read-bytes=16384\n",
    "op user-timeline-mongodb update compute-ms=4 sigma=0.5 ",
    "req-bytes=300 resp-bytes=60 disk-p=1 write-bytes=2048\n",
    "op home-timeline-redis zrevrange compute-ms=0.6 sigma=0.3 ",
    "req-bytes=100 resp-bytes=800\n",
    "op home-timeline-redis zadd compute-ms=2 sigma=0.4 ",
    "req-bytes=2000 resp-bytes=40\n",
    "op social-graph-redis get compute-ms=0.5 sigma=0.3 req-bytes=100 ",
    "resp-bytes=1500\n",
    "op social-graph-redis update compute-ms=0.4 sigma=0.3 ",
    "req-bytes=200 resp-bytes=40\n",
    "op social-graph-mongodb find compute-ms=5 sigma=0.6 req-bytes=200 ",
    "resp-bytes=1500 disk-p=0.5 read-bytes=16384\n",
    "op social-graph-mongodb update compute-ms=4 sigma=0.5 ",
    "req-bytes=200 resp-bytes=60 disk-p=1 write-bytes=1024\n",
    "op url-shorten-memcached set compute-ms=0.4 sigma=0.3 ",
    "req-bytes=300 resp-bytes=40\n",
    "op url-shorten-mongodb insert compute-ms=4 sigma=0.5 ",
    "req-bytes=300 resp-bytes=60 disk-p=1 write-bytes=1024\n",
    "op media-memcached set compute-ms=1 sigma=0.3 req-bytes=60000 ",
    "resp-bytes=40\n",
    "op media-mongodb insert compute-ms=10 sigma=0.5 req-bytes=60000 ",
    "resp-bytes=60 disk-p=1 write-bytes=65536\n",
    "op compose-post-redis hset compute-ms=0.4 sigma=0.3 req-bytes=1200 ",
    "resp-bytes=40\n",
    /* Call trees. */
    "call nginx-web /wrk2-api/post/compose compose-post:ComposePost\n",
    "call compose-post ComposePost unique-id:ComposeUniqueId ",
    "text:ComposeText media:ComposeMedia user:ComposeCreatorWithUserId\n",
    "call compose-post ComposePost compose-post-redis:hset\n",
    "call compose-post ComposePost post-storage:StorePost ",
    "user-timeline:WriteUserTimeline write-home-timeline:WriteHomeTimeline\n",
    "call text ComposeText user-mention:ComposeUserMentions ",
    "url-shorten:ComposeUrls\n",
    "call user-mention ComposeUserMentions user-memcached:get\n",
    "call user-mention ComposeUserMentions user-mongodb:find@0.2\n",
    "call url-shorten ComposeUrls url-shorten-mongodb:insert ",
    "url-shorten-memcached:set\n",
    "call post-storage StorePost post-storage-mongodb:insert\n",
    "call post-storage StorePost post-storage-memcached:set\n",
    "call user-timeline WriteUserTimeline user-timeline-mongodb:update\n",
    "call user-timeline WriteUserTimeline user-timeline-redis:zadd\n",
    "call write-home-timeline WriteHomeTimeline social-graph:GetFollowers\n",
    "call write-home-timeline WriteHomeTimeline home-timeline-redis:zadd\n",
    "call social-graph GetFollowers social-graph-redis:get\n",
    "call social-graph GetFollowers social-graph-mongodb:find@0.1\n",
    "call nginx-web /wrk2-api/home-timeline/read ",
    "home-timeline:ReadHomeTimeline\n",
    "call home-timeline ReadHomeTimeline home-timeline-redis:zrevrange\n",
    "call home-timeline ReadHomeTimeline post-storage:ReadPosts\n",
    "call post-storage ReadPosts post-storage-memcached:get\n",
    "call post-storage ReadPosts post-storage-mongodb:find@0.15\n",
    "call nginx-web /wrk2-api/user-timeline/read ",
    "user-timeline:ReadUserTimeline\n",
    "call user-timeline ReadUserTimeline user-timeline-redis:zrevrange\n",
    "call user-timeline ReadUserTimeline user-timeline-mongodb:find@0.15\n",
    "call user-timeline ReadUserTimeline post-storage:ReadPosts\n",
    "call nginx-web /wrk2-api/user/follow social-graph:Follow\n",
    "call social-graph Follow user:GetUserId user:GetUserId\n",
    "call user GetUserId user-memcached:get\n",
    "call user GetUserId user-mongodb:find@0.1\n",
    "call social-graph Follow social-graph-mongodb:update ",
    "social-graph-redis:update\n",
    "call nginx-web /wrk2-api/user/login user:Login\n",
    "call user Login user-memcached:get\n",
    "call user Login user-mongodb:find@0.2\n",
    "call nginx-web /upload-media media-frontend:/upload-media\n",
    "call media-frontend /upload-media media-mongodb:insert ",
    "media-memcached:set\n",
    "entry nginx-web /wrk2-api/home-timeline/read 55\n",
    "entry nginx-web /wrk2-api/user-timeline/read 28\n",
    "entry nginx-web /wrk2-api/post/compose 10\n",
    "entry nginx-web /wrk2-api/user/follow 3\n",
    "entry nginx-web /wrk2-api/user/login 2\n",
    "entry nginx-web /upload-media 2\n",
    NULL,
};

/* ---- Growable arrays ---------------------------------------------------- */

static int grow(void **v, size_t *cap, size_t n, size_t size)
{
    if (n < *cap) {
        return SM_OK;
    }
    size_t c = *cap ? *cap * 2 : 16;
    void *p = realloc(*v, c * size);
    if (p == NULL) {
        return SM_ENOMEM;
    }
    *v = p;
    *cap = c;
    return SM_OK;
}

void node_sim_topology_free(struct node_sim_topology *topo)
{
    if (topo == NULL) {
        return;
    }
    for (size_t i = 0; i < topo->n_services; i++) {
        free(topo->services[i].name);
    }
    for (size_t i = 0; i < topo->n_ops; i++) {
        free(topo->ops[i].name);
        free(topo->ops[i].steps);
    }
    for (size_t i = 0; i < topo->n_calls; i++) {
        free(topo->calls[i].target);
    }
    free(topo->services);
    free(topo->ops);
    free(topo->steps);
    free(topo->calls);
    free(topo->entries);
    free(topo->name);
    free(topo);
}

int sim__find_service(const struct node_sim_topology *topo, const char *name)
{
    for (size_t i = 0; i < topo->n_services; i++) {
        if (strcmp(topo->services[i].name, name) == 0) {
            return (int)i;
        }
    }
    return -1;
}

static int find_op(const struct node_sim_topology *topo,
                   uint32_t service,
                   const char *name)
{
    for (size_t i = 0; i < topo->n_ops; i++) {
        if (topo->ops[i].service == service &&
            strcmp(topo->ops[i].name, name) == 0) {
            return (int)i;
        }
    }
    return -1;
}

/* ---- The parser --------------------------------------------------------- */

struct parser
{
    struct node_sim_topology *t;
    int line;
    char *errmsg;
};

static int fail(struct parser *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int fail(struct parser *p, const char *fmt, ...)
{
    char why[SM_ERRMSG_SIZE];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    if (p->line > 0) {
        sm_errmsg_printf(p->errmsg, "line %d: %s", p->line, why);
    } else {
        sm_errmsg_printf(p->errmsg, "topology: %s", why);
    }
    return SM_EMALFORMED;
}

static int valid_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > SIM_MAX_NAME) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-' ||
              c == '/')) {
            return 0;
        }
    }
    return 1;
}

static int check_name(struct parser *p, const char *what, const char *s)
{
    if (!valid_name(s)) {
        return fail(p,
                    "bad %s name '%.40s' (1-%d characters of A-Z a-z 0-9 "
                    "_ . - /)",
                    what, s, SIM_MAX_NAME);
    }
    return SM_OK;
}

/* Parses a finite number in [lo, hi]. */
static int parse_num(struct parser *p,
                     const char *key,
                     const char *text,
                     double lo,
                     double hi,
                     double *out)
{
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (text[0] == '\0' || *end != '\0' || errno != 0 || !isfinite(v)) {
        return fail(p, "%s: '%.40s' is not a number", key, text);
    }
    if (v < lo || v > hi) {
        return fail(p, "%s: %g is out of range [%g, %g]", key, v, lo, hi);
    }
    *out = v;
    return SM_OK;
}

static int parse_uint(struct parser *p,
                      const char *key,
                      const char *text,
                      uint32_t lo,
                      uint32_t hi,
                      uint32_t *out)
{
    for (const char *c = text; *c != '\0'; c++) {
        if (*c < '0' || *c > '9') {
            return fail(p, "%s: '%.40s' is not a whole number", key, text);
        }
    }
    if (text[0] == '\0' || strlen(text) > 9) {
        return fail(p, "%s: '%.40s' is not a whole number in [%u, %u]", key,
                    text, lo, hi);
    }
    unsigned long v = strtoul(text, NULL, 10);
    if (v < lo || v > hi) {
        return fail(p, "%s: %lu is out of range [%u, %u]", key, v, lo, hi);
    }
    *out = (uint32_t)v;
    return SM_OK;
}

/* Splits "key=value" in place; NULL value when there is no '='. */
static char *split_kv(char *tok)
{
    char *eq = strchr(tok, '=');
    if (eq == NULL) {
        return NULL;
    }
    *eq = '\0';
    return eq + 1;
}

static int need_args(struct parser *p, int n, int min, int max, const char *u)
{
    if (n < min || (max > 0 && n > max)) {
        return fail(p, "expected '%s'", u);
    }
    return SM_OK;
}

static int do_service(struct parser *p, char **tok, int n)
{
    struct node_sim_topology *t = p->t;
    int rv = need_args(p, n, 2, 8,
                       "service NAME [replicas=N] [threads=N] [cores=N] "
                       "[memory-mb=X] [limit-mb=X] [request-kb=X]");
    if (rv == SM_OK) {
        rv = check_name(p, "service", tok[1]);
    }
    if (rv != SM_OK) {
        return rv;
    }
    if (sim__find_service(t, tok[1]) >= 0) {
        return fail(p, "service '%s' is declared twice", tok[1]);
    }
    if (t->n_services >= SIM_MAX_SERVICES) {
        return fail(p, "more than %d services", SIM_MAX_SERVICES);
    }
    struct sim_service s = {NULL, 1, 32, 2, 200, 1024, 64, 0};
    for (int i = 2; i < n && rv == SM_OK; i++) {
        char *v = split_kv(tok[i]);
        if (v == NULL) {
            return fail(p, "expected key=value, got '%.40s'", tok[i]);
        }
        if (strcmp(tok[i], "replicas") == 0) {
            rv = parse_uint(p, tok[i], v, 1, SIM_MAX_REPLICAS, &s.replicas);
        } else if (strcmp(tok[i], "threads") == 0) {
            rv = parse_uint(p, tok[i], v, 1, SIM_MAX_THREADS, &s.threads);
        } else if (strcmp(tok[i], "cores") == 0) {
            rv = parse_uint(p, tok[i], v, 1, SIM_MAX_CORES, &s.cores);
        } else if (strcmp(tok[i], "memory-mb") == 0) {
            rv = parse_num(p, tok[i], v, 1, 1e6, &s.memory_mb);
        } else if (strcmp(tok[i], "limit-mb") == 0) {
            rv = parse_num(p, tok[i], v, 1, 1e6, &s.limit_mb);
        } else if (strcmp(tok[i], "request-kb") == 0) {
            rv = parse_num(p, tok[i], v, 0, 1e5, &s.request_kb);
        } else {
            return fail(p, "unknown service option '%.40s'", tok[i]);
        }
    }
    if (rv != SM_OK) {
        return rv;
    }
    if (s.limit_mb <= s.memory_mb) {
        s.limit_mb = s.memory_mb * 2;
    }
    if (grow((void **)&t->services, &t->cap_services, t->n_services,
             sizeof s) != SM_OK ||
        (s.name = strdup(tok[1])) == NULL) {
        return SM_ENOMEM;
    }
    t->services[t->n_services++] = s;
    return SM_OK;
}

static int do_op(struct parser *p, char **tok, int n)
{
    struct node_sim_topology *t = p->t;
    int rv = need_args(p, n, 3, 10,
                       "op SERVICE NAME [compute-ms=X] [sigma=X] "
                       "[req-bytes=N] [resp-bytes=N] [disk-p=P] "
                       "[read-bytes=N] [write-bytes=N]");
    if (rv == SM_OK) {
        rv = check_name(p, "op", tok[2]);
    }
    if (rv != SM_OK) {
        return rv;
    }
    int svc = sim__find_service(t, tok[1]);
    if (svc < 0) {
        return fail(p, "op of an undeclared service '%.40s'", tok[1]);
    }
    if (find_op(t, (uint32_t)svc, tok[2]) >= 0) {
        return fail(p, "op '%s %s' is declared twice", tok[1], tok[2]);
    }
    if (t->n_ops >= SIM_MAX_OPS) {
        return fail(p, "more than %d ops", SIM_MAX_OPS);
    }
    struct sim_op o = {.service = (uint32_t)svc,
                       .compute_ms = 1,
                       .sigma = 0.5,
                       .req_bytes = 512,
                       .resp_bytes = 1024,
                       .line = p->line};
    for (int i = 3; i < n && rv == SM_OK; i++) {
        char *v = split_kv(tok[i]);
        if (v == NULL) {
            return fail(p, "expected key=value, got '%.40s'", tok[i]);
        }
        if (strcmp(tok[i], "compute-ms") == 0) {
            rv = parse_num(p, tok[i], v, 0.001, 60000, &o.compute_ms);
        } else if (strcmp(tok[i], "sigma") == 0) {
            rv = parse_num(p, tok[i], v, 0, 3, &o.sigma);
        } else if (strcmp(tok[i], "req-bytes") == 0) {
            rv = parse_uint(p, tok[i], v, 0, 1u << 30, &o.req_bytes);
        } else if (strcmp(tok[i], "resp-bytes") == 0) {
            rv = parse_uint(p, tok[i], v, 0, 1u << 30, &o.resp_bytes);
        } else if (strcmp(tok[i], "disk-p") == 0) {
            rv = parse_num(p, tok[i], v, 0, 1, &o.disk_p);
        } else if (strcmp(tok[i], "read-bytes") == 0) {
            rv = parse_uint(p, tok[i], v, 0, 1u << 30, &o.read_bytes);
        } else if (strcmp(tok[i], "write-bytes") == 0) {
            rv = parse_uint(p, tok[i], v, 0, 1u << 30, &o.write_bytes);
        } else {
            return fail(p, "unknown op option '%.40s'", tok[i]);
        }
    }
    if (rv != SM_OK) {
        return rv;
    }
    if (o.disk_p > 0 && o.read_bytes == 0 && o.write_bytes == 0) {
        return fail(p, "disk-p without read-bytes or write-bytes");
    }
    if (grow((void **)&t->ops, &t->cap_ops, t->n_ops, sizeof o) != SM_OK ||
        (o.name = strdup(tok[2])) == NULL) {
        return SM_ENOMEM;
    }
    if (o.disk_p > 0) {
        t->services[svc].has_disk = 1;
    }
    t->ops[t->n_ops++] = o;
    return SM_OK;
}

static int do_call(struct parser *p, char **tok, int n)
{
    struct node_sim_topology *t = p->t;
    int rv = need_args(p, n, 4, 0,
                       "call SERVICE OP TARGET_SERVICE:TARGET_OP[@P] ...");
    if (rv != SM_OK) {
        return rv;
    }
    int svc = sim__find_service(t, tok[1]);
    int op = svc < 0 ? -1 : find_op(t, (uint32_t)svc, tok[2]);
    if (op < 0) {
        return fail(p, "call from an undeclared op '%.40s %.40s'", tok[1],
                    tok[2]);
    }
    struct sim_op *o = &t->ops[op];
    if (o->n_steps >= 64) {
        return fail(p, "more than 64 steps in op '%s %s'", tok[1], tok[2]);
    }
    if (n - 3 > 64) {
        return fail(p, "more than 64 calls in one step");
    }
    size_t cap = o->cap_steps;
    if (grow((void **)&t->steps, &t->cap_steps, t->n_steps, sizeof *t->steps) !=
            SM_OK ||
        grow((void **)&o->steps, &cap, o->n_steps, sizeof *o->steps) != SM_OK) {
        return SM_ENOMEM;
    }
    o->cap_steps = (uint32_t)cap;
    uint32_t first = (uint32_t)t->n_calls;
    for (int i = 3; i < n; i++) {
        struct sim_call c = {0, 1, p->line, NULL};
        char *at = strrchr(tok[i], '@');
        if (at != NULL) {
            *at = '\0';
            rv = parse_num(p, "probability", at + 1, 0, 1, &c.p);
            if (rv != SM_OK) {
                return rv;
            }
        }
        char *colon = strchr(tok[i], ':');
        if (colon == NULL || colon == tok[i] || colon[1] == '\0') {
            return fail(p, "call target '%.40s' is not SERVICE:OP", tok[i]);
        }
        *colon = '\0';
        if ((rv = check_name(p, "service", tok[i])) != SM_OK ||
            (rv = check_name(p, "op", colon + 1)) != SM_OK) {
            return rv;
        }
        *colon = ':';
        if (grow((void **)&t->calls, &t->cap_calls, t->n_calls, sizeof c) !=
                SM_OK ||
            (c.target = strdup(tok[i])) == NULL) {
            return SM_ENOMEM;
        }
        t->calls[t->n_calls++] = c;
    }
    t->steps[t->n_steps] = (struct sim_step){first, (uint32_t)(n - 3)};
    o->steps[o->n_steps++] = (uint32_t)t->n_steps++;
    return SM_OK;
}

static int do_entry(struct parser *p, char **tok, int n)
{
    struct node_sim_topology *t = p->t;
    int rv = need_args(p, n, 4, 4, "entry SERVICE OP WEIGHT");
    if (rv != SM_OK) {
        return rv;
    }
    int svc = sim__find_service(t, tok[1]);
    int op = svc < 0 ? -1 : find_op(t, (uint32_t)svc, tok[2]);
    if (op < 0) {
        return fail(p, "entry names an undeclared op '%.40s %.40s'", tok[1],
                    tok[2]);
    }
    struct sim_entry e = {(uint32_t)op, 0};
    if ((rv = parse_num(p, "weight", tok[3], 1e-9, 1e9, &e.weight)) != SM_OK) {
        return rv;
    }
    if (t->n_entries >= 256) {
        return fail(p, "more than 256 entries");
    }
    if (grow((void **)&t->entries, &t->cap_entries, t->n_entries, sizeof e) !=
        SM_OK) {
        return SM_ENOMEM;
    }
    t->entries[t->n_entries++] = e;
    return SM_OK;
}

static int do_line(struct parser *p, char **tok, int n)
{
    struct node_sim_topology *t = p->t;
    const char *d = tok[0];
    int rv;
    if (strcmp(d, "service") == 0) {
        return do_service(p, tok, n);
    }
    if (strcmp(d, "op") == 0) {
        return do_op(p, tok, n);
    }
    if (strcmp(d, "call") == 0) {
        return do_call(p, tok, n);
    }
    if (strcmp(d, "entry") == 0) {
        return do_entry(p, tok, n);
    }
    if (strcmp(d, "topology") == 0) {
        if ((rv = need_args(p, n, 2, 2, "topology NAME")) != SM_OK ||
            (rv = check_name(p, "topology", tok[1])) != SM_OK) {
            return rv;
        }
        char *name = strdup(tok[1]);
        if (name == NULL) {
            return SM_ENOMEM;
        }
        free(t->name);
        t->name = name;
        return SM_OK;
    }
    if (strcmp(d, "hosts") == 0) {
        if ((rv = need_args(p, n, 2, 2, "hosts N")) != SM_OK) {
            return rv;
        }
        return parse_uint(p, "hosts", tok[1], 1, SIM_MAX_HOSTS, &t->n_hosts);
    }
    if (strcmp(d, "rate") == 0) {
        if ((rv = need_args(p, n, 2, 2, "rate RPS")) != SM_OK) {
            return rv;
        }
        return parse_num(p, "rate", tok[1], 0.001, 1e6, &t->rate);
    }
    if (strcmp(d, "qos-target-ms") == 0) {
        if ((rv = need_args(p, n, 2, 2, "qos-target-ms MS")) != SM_OK) {
            return rv;
        }
        return parse_num(p, "qos-target-ms", tok[1], 0.001, 1e7,
                         &t->qos_target_ms);
    }
    return fail(p,
                "unknown directive '%.40s' (expected topology, hosts, rate, "
                "qos-target-ms, service, op, call or entry)",
                d);
}

/* Resolves call targets, then checks for cycles and bounds the size of a
 * request by a depth-first walk that counts, per op, the calls it makes
 * (every call with p > 0, as if all happened). */
enum { WHITE, GREY, BLACK };

static int walk(struct parser *p,
                uint32_t op,
                unsigned char *color,
                double *size,
                int depth)
{
    struct node_sim_topology *t = p->t;
    if (color[op] == BLACK) {
        return SM_OK;
    }
    struct sim_op *o = &t->ops[op];
    if (color[op] == GREY || depth > 64) {
        p->line = o->line;
        return fail(p, "call cycle through op '%s %s'",
                    t->services[o->service].name, o->name);
    }
    color[op] = GREY;
    double total = 1;
    for (uint32_t s = 0; s < o->n_steps; s++) {
        const struct sim_step *st = &t->steps[o->steps[s]];
        for (uint32_t k = 0; k < st->n; k++) {
            const struct sim_call *c = &t->calls[st->first + k];
            int rv = walk(p, c->op, color, size, depth + 1);
            if (rv != SM_OK) {
                return rv;
            }
            if (c->p > 0) {
                total += size[c->op];
            }
        }
    }
    if (total > SIM_MAX_CALLS_PER_REQ) {
        p->line = o->line;
        return fail(p,
                    "a request to op '%s %s' could make %.0f calls "
                    "(more than %.0f)",
                    t->services[o->service].name, o->name, total,
                    SIM_MAX_CALLS_PER_REQ);
    }
    size[op] = total;
    color[op] = BLACK;
    return SM_OK;
}

static int finish(struct parser *p)
{
    struct node_sim_topology *t = p->t;
    for (size_t i = 0; i < t->n_calls; i++) {
        struct sim_call *c = &t->calls[i];
        char *colon = strchr(c->target, ':');
        *colon = '\0';
        int svc = sim__find_service(t, c->target);
        int op = svc < 0 ? -1 : find_op(t, (uint32_t)svc, colon + 1);
        *colon = ':';
        if (op < 0) {
            p->line = c->line;
            return fail(p, "call target '%s' is not a declared op", c->target);
        }
        c->op = (uint32_t)op;
        free(c->target);
        c->target = NULL;
    }
    p->line = 0;
    if (t->n_entries == 0) {
        return fail(p, "no entry (a request type: entry SERVICE OP WEIGHT)");
    }
    unsigned char *color = calloc(t->n_ops, 1);
    double *size = calloc(t->n_ops, sizeof *size);
    int rv = color == NULL || size == NULL ? SM_ENOMEM : SM_OK;
    for (size_t i = 0; i < t->n_ops && rv == SM_OK; i++) {
        rv = walk(p, (uint32_t)i, color, size, 0);
    }
    free(color);
    free(size);
    if (rv == SM_OK && t->name == NULL &&
        (t->name = strdup("custom")) == NULL) {
        rv = SM_ENOMEM;
    }
    return rv;
}

int node_sim_topology_parse(const char *text,
                            size_t len,
                            struct node_sim_topology **out,
                            char errmsg[SM_ERRMSG_SIZE])
{
    struct parser p = {NULL, 0, errmsg};
    if (len > MAX_FILE) {
        return fail(&p, "file larger than %u bytes", MAX_FILE);
    }
    p.t = calloc(1, sizeof *p.t);
    char *line = malloc(MAX_LINE + 1);
    if (p.t == NULL || line == NULL) {
        free(p.t);
        free(line);
        return SM_ENOMEM;
    }
    p.t->n_hosts = 1;
    p.t->rate = 100;
    int rv = SM_OK;
    size_t at = 0;
    while (at < len && rv == SM_OK) {
        p.line++;
        size_t end = at;
        while (end < len && text[end] != '\n') {
            end++;
        }
        size_t n = end - at;
        if (n > MAX_LINE) {
            rv = fail(&p, "line longer than %d bytes", MAX_LINE);
            break;
        }
        memcpy(line, text + at, n);
        line[n] = '\0';
        at = end + 1;
        for (size_t i = 0; i < n && rv == SM_OK; i++) {
            unsigned char c = (unsigned char)line[i];
            if (c == '#') {
                line[i] = '\0';
                break;
            }
            if (c == '\t' || c == '\r') {
                line[i] = ' ';
            } else if (c < 0x20 || c >= 0x7f) {
                rv = fail(&p, "unexpected byte 0x%02x", c);
            }
        }
        char *tok[MAX_TOKENS];
        int ntok = 0;
        char *save = NULL;
        for (char *s = strtok_r(line, " ", &save); s != NULL && rv == SM_OK;
             s = strtok_r(NULL, " ", &save)) {
            if (ntok == MAX_TOKENS) {
                rv = fail(&p, "more than %d words", MAX_TOKENS);
                break;
            }
            tok[ntok++] = s;
        }
        if (rv == SM_OK && ntok > 0) {
            rv = do_line(&p, tok, ntok);
        }
    }
    free(line);
    if (rv == SM_OK) {
        rv = finish(&p);
    }
    if (rv != SM_OK) {
        node_sim_topology_free(p.t);
        return rv;
    }
    *out = p.t;
    return SM_OK;
}

int node_sim_topology_load(const char *path,
                           struct node_sim_topology **out,
                           char errmsg[SM_ERRMSG_SIZE])
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        int e = errno;
        sm_errmsg_printf(errmsg, "cannot read %s: %s", path, strerror(e));
        return sm_err_from_errno(e);
    }
    char *buf = malloc(MAX_FILE + 1);
    if (buf == NULL) {
        fclose(f);
        return SM_ENOMEM;
    }
    size_t n = fread(buf, 1, MAX_FILE + 1, f);
    int bad = ferror(f);
    fclose(f);
    int rv;
    if (bad) {
        sm_errmsg_printf(errmsg, "cannot read %s: I/O error", path);
        rv = SM_EIO;
    } else {
        rv = node_sim_topology_parse(buf, n, out, errmsg);
        if (rv == SM_EMALFORMED) {
            sm_errmsg_wrapf(errmsg, "%s", path);
        }
    }
    free(buf);
    return rv;
}

int node_sim_topology_builtin(const char *name, struct node_sim_topology **out)
{
    const char *const *parts = strcmp(name, "chain") == 0    ? chain_text
                               : strcmp(name, "fanout") == 0 ? fanout_text
                               : strcmp(name, "social") == 0 ? social_text
                                                             : NULL;
    if (parts == NULL) {
        return SM_ENOTFOUND;
    }
    /* The text is kept in pieces: C11 compilers need only support string
     * literals of 4095 bytes. */
    size_t len = 0;
    for (size_t i = 0; parts[i] != NULL; i++) {
        len += strlen(parts[i]);
    }
    char *text = malloc(len + 1);
    if (text == NULL) {
        return SM_ENOMEM;
    }
    len = 0;
    for (size_t i = 0; parts[i] != NULL; i++) {
        size_t n = strlen(parts[i]);
        memcpy(text + len, parts[i], n);
        len += n;
    }
    char msg[SM_ERRMSG_SIZE];
    int rv = node_sim_topology_parse(text, len, out, msg);
    free(text);
    /* The built-ins are fixed text: only memory can fail them. */
    SM_ASSERT(rv == SM_OK || rv == SM_ENOMEM);
    return rv;
}

int node_sim_topology_write(const struct node_sim_topology *t, FILE *f)
{
    fprintf(f, "# sagemesh sim topology\ntopology %s\nhosts %u\nrate %.17g\n",
            t->name, t->n_hosts, t->rate);
    if (t->qos_target_ms > 0) {
        fprintf(f, "qos-target-ms %.17g\n", t->qos_target_ms);
    }
    for (size_t i = 0; i < t->n_services; i++) {
        const struct sim_service *s = &t->services[i];
        fprintf(f,
                "service %s replicas=%u threads=%u cores=%u memory-mb=%.17g "
                "limit-mb=%.17g request-kb=%.17g\n",
                s->name, s->replicas, s->threads, s->cores, s->memory_mb,
                s->limit_mb, s->request_kb);
    }
    for (size_t i = 0; i < t->n_ops; i++) {
        const struct sim_op *o = &t->ops[i];
        fprintf(f,
                "op %s %s compute-ms=%.17g sigma=%.17g req-bytes=%u "
                "resp-bytes=%u",
                t->services[o->service].name, o->name, o->compute_ms, o->sigma,
                o->req_bytes, o->resp_bytes);
        if (o->disk_p > 0) {
            fprintf(f, " disk-p=%.17g read-bytes=%u write-bytes=%u", o->disk_p,
                    o->read_bytes, o->write_bytes);
        }
        fputc('\n', f);
    }
    for (size_t i = 0; i < t->n_ops; i++) {
        const struct sim_op *o = &t->ops[i];
        for (uint32_t s = 0; s < o->n_steps; s++) {
            const struct sim_step *st = &t->steps[o->steps[s]];
            fprintf(f, "call %s %s", t->services[o->service].name, o->name);
            for (uint32_t k = 0; k < st->n; k++) {
                const struct sim_call *c = &t->calls[st->first + k];
                const struct sim_op *to = &t->ops[c->op];
                fprintf(f, " %s:%s", t->services[to->service].name, to->name);
                if (c->p < 1) {
                    fprintf(f, "@%.17g", c->p);
                }
            }
            fputc('\n', f);
        }
    }
    for (size_t i = 0; i < t->n_entries; i++) {
        const struct sim_op *o = &t->ops[t->entries[i].op];
        fprintf(f, "entry %s %s %.17g\n", t->services[o->service].name, o->name,
                t->entries[i].weight);
    }
    return ferror(f) ? SM_EIO : SM_OK;
}

/* Mean visits: ops in an order where every caller precedes its callees
 * (reverse post-order of the acyclic op graph), then one forward pass. */
static void post_order(const struct node_sim_topology *t,
                       uint32_t op,
                       unsigned char *seen,
                       uint32_t *order,
                       size_t *n)
{
    if (seen[op]) {
        return;
    }
    seen[op] = 1;
    const struct sim_op *o = &t->ops[op];
    for (uint32_t s = 0; s < o->n_steps; s++) {
        const struct sim_step *st = &t->steps[o->steps[s]];
        for (uint32_t k = 0; k < st->n; k++) {
            post_order(t, t->calls[st->first + k].op, seen, order, n);
        }
    }
    order[(*n)++] = op;
}

double *sim__op_visits(const struct node_sim_topology *t)
{
    double *v = calloc(t->n_ops ? t->n_ops : 1, sizeof *v);
    unsigned char *seen = calloc(t->n_ops ? t->n_ops : 1, 1);
    uint32_t *order = calloc(t->n_ops ? t->n_ops : 1, sizeof *order);
    if (v == NULL || seen == NULL || order == NULL) {
        free(v);
        free(seen);
        free(order);
        return NULL;
    }
    size_t n = 0;
    double total = 0;
    for (size_t i = 0; i < t->n_ops; i++) {
        post_order(t, (uint32_t)i, seen, order, &n);
    }
    for (size_t i = 0; i < t->n_entries; i++) {
        total += t->entries[i].weight;
    }
    for (size_t i = 0; i < t->n_entries; i++) {
        v[t->entries[i].op] += t->entries[i].weight / total;
    }
    for (size_t i = n; i-- > 0;) {
        const struct sim_op *o = &t->ops[order[i]];
        for (uint32_t s = 0; s < o->n_steps; s++) {
            const struct sim_step *st = &t->steps[o->steps[s]];
            for (uint32_t k = 0; k < st->n; k++) {
                const struct sim_call *c = &t->calls[st->first + k];
                v[c->op] += v[order[i]] * c->p;
            }
        }
    }
    free(seen);
    free(order);
    return v;
}

const char *node_sim_topology_name(const struct node_sim_topology *topo)
{
    return topo->name;
}

const char *node_sim_topology_frontend(const struct node_sim_topology *topo)
{
    return topo->services[topo->ops[topo->entries[0].op].service].name;
}

size_t node_sim_topology_services(const struct node_sim_topology *topo)
{
    return topo->n_services;
}

const char *node_sim_topology_service(const struct node_sim_topology *topo,
                                      size_t i)
{
    return i < topo->n_services ? topo->services[i].name : NULL;
}

unsigned node_sim_topology_service_cores(const struct node_sim_topology *topo,
                                         size_t i)
{
    return i < topo->n_services ? topo->services[i].cores : 0;
}

size_t node_sim_topology_hosts(const struct node_sim_topology *topo)
{
    return topo->n_hosts;
}

double node_sim_topology_rate(const struct node_sim_topology *topo)
{
    return topo->rate;
}

double node_sim_topology_qos_target_ms(const struct node_sim_topology *topo)
{
    return topo->qos_target_ms;
}
