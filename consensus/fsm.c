/* The replicated state machine: command codec, apply, snapshot, queries.
 *
 * Wire format. Everything (commands and snapshots) is built from four
 * primitives: u8, u32 and u64 little-endian, and strings as a u32 length
 * followed by the bytes (no NUL inside, none stored). Lists are a u32 count
 * then the items. Encoding is done in two passes over the same code: a
 * measuring pass (no buffer) and a writing pass, so the size computed is
 * always the size written.
 *
 * Decoding never trusts a count: a list count is checked against the bytes
 * left (each item has a known minimum size) before anything is allocated,
 * so a small input cannot make us allocate much. A decoded command copies
 * its strings into one block sized from the input length (each string has a
 * 4-byte prefix, so len + len / 4 bytes hold every string and its NUL).
 *
 * State. Members, placement and model shards are small arrays kept sorted
 * by key; diagnoses and actions are arrays in apply order, searched by id
 * linearly (the log's volume of diagnoses is human scale, and retention
 * keeps it so). Every apply either changes the state completely or not at
 * all: copies are allocated first and the state is only touched once
 * nothing can fail any more.
 *
 * Retention. CONS_CMD_RETAIN drops from the front of the two arrays: the
 * oldest diagnoses are a prefix (one memmove), and the final actions to
 * drop are removed in one compacting pass that keeps the others in order,
 * so a retain is linear in what is held and allocates nothing (it cannot
 * fail). There is no index by id to keep consistent. What was dropped is
 * remembered only as two "dropped up to" watermarks (the newest time_ms of
 * a dropped diagnosis, the newest decided_ms of a dropped action) and two
 * totals; a diagnosis or decision stamped at or before its watermark is a
 * retry of something dropped, applied as stale (see consensus.h).
 *
 * Binding models to CBNs. A MODEL_COMMIT carries the digest of its CBN
 * after the shard list; one that ends after the list is of the layout
 * before and decodes unbound (all-zero digest). The state keeps the newest
 * CBN (version, size, digest) and, in a small array shifted on each CBN
 * commit, the versions and digests of the CONS_CBN_KEPT - 1 before it, so
 * a bound model can be checked against the CBN it names even when another
 * CBN was committed between its leader's view and its entry.
 *
 * Snapshots start with a version byte (CONS_SNAPSHOT_VERSION) and a magic
 * byte. Version 2 appends the retention watermarks and totals to the
 * version 1 layout, version 3 the older CBN digests and the model's CBN
 * digest to the version 2 layout, so restore reads all three. */
#include <raft.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/err.h"
#include "consensus/consensus.h"
#include "consensus/fsm_internal.h"

#define SNAPSHOT_MAGIC 0x53u /* 'S', after the version byte */
#define SNAPSHOT_V1    1u    /* before retention: no watermarks */
#define SNAPSHOT_V2    2u    /* before the model binding: no CBN history */

/* Older CBN versions kept besides the newest. */
#define CBN_OLDER_MAX (CONS_CBN_KEPT - 1u)

/* ---- Writer ------------------------------------------------------------ */

/* With p == NULL the writer only counts. */
struct wr
{
    uint8_t *p;
    size_t cap;
    size_t len;
};

static void put_bytes(struct wr *w, const void *src, size_t n)
{
    if (w->p != NULL) {
        SM_ASSERT(n <= w->cap - w->len);
        if (n > 0) {
            memcpy(w->p + w->len, src, n);
        }
    }
    w->len += n;
}

static void put_u8(struct wr *w, unsigned v)
{
    uint8_t b = (uint8_t)v;
    put_bytes(w, &b, 1);
}

static void put_u32(struct wr *w, uint32_t v)
{
    uint8_t b[4];
    for (int i = 0; i < 4; i++) {
        b[i] = (uint8_t)(v >> (8 * i));
    }
    put_bytes(w, b, sizeof b);
}

static void put_u64(struct wr *w, uint64_t v)
{
    uint8_t b[8];
    for (int i = 0; i < 8; i++) {
        b[i] = (uint8_t)(v >> (8 * i));
    }
    put_bytes(w, b, sizeof b);
}

static void put_str(struct wr *w, const char *s)
{
    size_t n = strlen(s);
    put_u32(w, (uint32_t)n);
    put_bytes(w, s, n);
}

static void put_digest(struct wr *w, const struct cons_digest *d)
{
    put_bytes(w, d->b, sizeof d->b);
}

/* ---- Reader ------------------------------------------------------------ */

/* The first error sticks; later reads return zeros. */
struct rd
{
    const uint8_t *p;
    size_t len;
    size_t off;
    int err;
};

static void rd_fail(struct rd *r, int err)
{
    if (r->err == SM_OK) {
        r->err = err;
    }
}

static size_t rd_left(const struct rd *r)
{
    return r->len - r->off;
}

static const uint8_t *get_bytes(struct rd *r, size_t n)
{
    if (r->err != SM_OK || n > rd_left(r)) {
        rd_fail(r, SM_EMALFORMED);
        return NULL;
    }
    const uint8_t *at = r->p + r->off;
    r->off += n;
    return at;
}

static unsigned get_u8(struct rd *r)
{
    const uint8_t *b = get_bytes(r, 1);
    return b != NULL ? b[0] : 0;
}

static uint32_t get_u32(struct rd *r)
{
    const uint8_t *b = get_bytes(r, 4);
    uint32_t v = 0;
    for (int i = 0; b != NULL && i < 4; i++) {
        v |= (uint32_t)b[i] << (8 * i);
    }
    return v;
}

static uint64_t get_u64(struct rd *r)
{
    const uint8_t *b = get_bytes(r, 8);
    uint64_t v = 0;
    for (int i = 0; b != NULL && i < 8; i++) {
        v |= (uint64_t)b[i] << (8 * i);
    }
    return v;
}

static void get_digest(struct rd *r, struct cons_digest *d)
{
    const uint8_t *b = get_bytes(r, sizeof d->b);
    if (b != NULL) {
        memcpy(d->b, b, sizeof d->b);
    } else {
        memset(d->b, 0, sizeof d->b);
    }
}

/* Reads a string of at most @max bytes and returns where its bytes are in
 * the input (not NUL-terminated), with the length in @n. */
static const char *get_span(struct rd *r, size_t max, size_t *n)
{
    uint32_t len = get_u32(r);
    *n = 0;
    if (r->err != SM_OK) {
        return NULL;
    }
    if (len > max) {
        rd_fail(r, len > rd_left(r) ? SM_EMALFORMED : SM_ETOOBIG);
        return NULL;
    }
    const char *s = (const char *)get_bytes(r, len);
    if (s != NULL && memchr(s, '\0', len) != NULL) {
        rd_fail(r, SM_EMALFORMED);
        return NULL;
    }
    *n = s != NULL ? len : 0;
    return s;
}

/* Reads a list count whose items take at least @min_item bytes each. */
static size_t get_count(struct rd *r, size_t max, size_t min_item)
{
    uint32_t n = get_u32(r);
    if (r->err != SM_OK) {
        return 0;
    }
    if ((uint64_t)n * min_item > rd_left(r)) {
        rd_fail(r, SM_EMALFORMED);
        return 0;
    }
    if (n > max) {
        rd_fail(r, SM_ETOOBIG);
        return 0;
    }
    return n;
}

/* ---- Names ------------------------------------------------------------- */

const char *cons_cmd_type_name(enum cons_cmd_type type)
{
    static const char *const names[] = {
        [CONS_CMD_MEMBER_SET] = "member_set",
        [CONS_CMD_MEMBER_REMOVE] = "member_remove",
        [CONS_CMD_CBN_COMMIT] = "cbn_commit",
        [CONS_CMD_PLACEMENT_SET] = "placement_set",
        [CONS_CMD_MODEL_COMMIT] = "model_commit",
        [CONS_CMD_DIAGNOSIS] = "diagnosis",
        [CONS_CMD_ACTION_DECIDE] = "action_decide",
        [CONS_CMD_ACTION_STATE] = "action_state",
        [CONS_CMD_RETAIN] = "retain",
    };
    unsigned t = (unsigned)type;
    return t > 0 && t < CONS_CMD__COUNT ? names[t] : "unknown";
}

const char *cons_role_name(enum cons_role role)
{
    switch (role) {
        case CONS_ROLE_VOTER:
            return "voter";
        case CONS_ROLE_STANDBY:
            return "standby";
        case CONS_ROLE_SPARE:
            return "spare";
    }
    return "unknown";
}

const char *cons_health_name(enum cons_health health)
{
    switch (health) {
        case CONS_HEALTH_UP:
            return "up";
        case CONS_HEALTH_SUSPECT:
            return "suspect";
        case CONS_HEALTH_DOWN:
            return "down";
    }
    return "unknown";
}

const char *cons_action_state_name(enum cons_action_state state)
{
    static const char *const names[] = {
        [CONS_ACT_PENDING] = "pending",
        [CONS_ACT_APPROVED] = "approved",
        [CONS_ACT_APPLIED] = "applied",
        [CONS_ACT_VERIFIED] = "verified",
        [CONS_ACT_ROLLED_BACK] = "rolled_back",
        [CONS_ACT_FAILED] = "failed",
    };
    unsigned s = (unsigned)state;
    return s < CONS_ACT__COUNT ? names[s] : "unknown";
}

/* ---- Command validation and encoding ------------------------------------ */

static int check_str(const char *s, size_t max, bool non_empty)
{
    if (s == NULL) {
        return SM_EINVAL;
    }
    size_t n = strnlen(s, max + 1);
    if (n > max) {
        return SM_ETOOBIG;
    }
    return non_empty && n == 0 ? SM_EINVAL : SM_OK;
}

/* First error of a list of checks, in order. */
static int first_err(const int *rvs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (rvs[i] != SM_OK) {
            return rvs[i];
        }
    }
    return SM_OK;
}

static int check_placement(const struct cons_cmd *cmd)
{
    size_t n = cmd->u.placement.n;
    const struct cons_place_entry *e = cmd->u.placement.entries;
    if (cmd->u.placement.epoch == 0 || (n > 0 && e == NULL)) {
        return SM_EINVAL;
    }
    if (n > CONS_LIST_MAX) {
        return SM_ETOOBIG;
    }
    for (size_t i = 0; i < n; i++) {
        int rv = check_str(e[i].service, CONS_NAME_MAX, true);
        if (rv != SM_OK) {
            return rv;
        }
        if (e[i].owner == 0 || e[i].replica == e[i].owner) {
            return SM_EINVAL;
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(e[i].service, e[j].service) == 0) {
                return SM_EINVAL;
            }
        }
    }
    return SM_OK;
}

static int check_model(const struct cons_cmd *cmd)
{
    size_t n = cmd->u.model.n_shards;
    const struct cons_shard_digest *s = cmd->u.model.shards;
    if (cmd->u.model.version == 0 || cmd->u.model.cbn_version == 0 ||
        (n > 0 && s == NULL)) {
        return SM_EINVAL;
    }
    if (n > CONS_LIST_MAX) {
        return SM_ETOOBIG;
    }
    for (size_t i = 0; i < n; i++) {
        int rv = check_str(s[i].service, CONS_NAME_MAX, true);
        if (rv != SM_OK) {
            return rv;
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(s[i].service, s[j].service) == 0) {
                return SM_EINVAL;
            }
        }
    }
    return SM_OK;
}

static int check_cmd(const struct cons_cmd *cmd)
{
    switch (cmd->type) {
        case CONS_CMD_MEMBER_SET: {
            if (cmd->u.member.id == 0 ||
                (unsigned)cmd->u.member.role > CONS_ROLE_SPARE ||
                (unsigned)cmd->u.member.health > CONS_HEALTH_DOWN) {
                return SM_EINVAL;
            }
            return check_str(cmd->u.member.address, CONS_NAME_MAX, true);
        }
        case CONS_CMD_MEMBER_REMOVE:
            return cmd->u.member.id != 0 ? SM_OK : SM_EINVAL;
        case CONS_CMD_CBN_COMMIT:
            return cmd->u.cbn.version != 0 ? SM_OK : SM_EINVAL;
        case CONS_CMD_PLACEMENT_SET:
            return check_placement(cmd);
        case CONS_CMD_MODEL_COMMIT:
            return check_model(cmd);
        case CONS_CMD_DIAGNOSIS: {
            int rvs[] = {check_str(cmd->u.diagnosis.id, CONS_ID_MAX, true),
                         check_str(cmd->u.diagnosis.json, CONS_JSON_MAX, true)};
            return first_err(rvs, 2);
        }
        case CONS_CMD_ACTION_DECIDE: {
            int rvs[] = {
                check_str(cmd->u.decision.id, CONS_ID_MAX, true),
                check_str(cmd->u.decision.diagnosis_id, CONS_ID_MAX, true),
                check_str(cmd->u.decision.service, CONS_NAME_MAX, true),
                check_str(cmd->u.decision.kind, CONS_NAME_MAX, true)};
            return first_err(rvs, 4);
        }
        case CONS_CMD_ACTION_STATE: {
            unsigned s = (unsigned)cmd->u.action.state;
            if (s == CONS_ACT_PENDING || s >= CONS_ACT__COUNT) {
                return SM_EINVAL;
            }
            int rvs[] = {check_str(cmd->u.action.id, CONS_ID_MAX, true),
                         check_str(cmd->u.action.ack, CONS_ACK_MAX, false)};
            return first_err(rvs, 2);
        }
        case CONS_CMD_RETAIN:
            return cmd->u.retain.max_diagnoses != 0 &&
                           cmd->u.retain.max_actions != 0
                       ? SM_OK
                       : SM_EINVAL;
        default:
            return SM_EINVAL;
    }
}

/* Writes (or measures) a command already checked. */
static void write_cmd(struct wr *w, const struct cons_cmd *cmd)
{
    put_u8(w, CONS_CMD_VERSION);
    put_u8(w, (unsigned)cmd->type);
    switch (cmd->type) {
        case CONS_CMD_MEMBER_SET:
            put_u64(w, cmd->u.member.id);
            put_str(w, cmd->u.member.address);
            put_u8(w, (unsigned)cmd->u.member.role);
            put_u8(w, (unsigned)cmd->u.member.health);
            break;
        case CONS_CMD_MEMBER_REMOVE:
            put_u64(w, cmd->u.member.id);
            break;
        case CONS_CMD_CBN_COMMIT:
            put_u64(w, cmd->u.cbn.version);
            put_u64(w, cmd->u.cbn.size);
            put_digest(w, &cmd->u.cbn.digest);
            break;
        case CONS_CMD_PLACEMENT_SET:
            put_u64(w, cmd->u.placement.epoch);
            put_u32(w, (uint32_t)cmd->u.placement.n);
            for (size_t i = 0; i < cmd->u.placement.n; i++) {
                const struct cons_place_entry *e = &cmd->u.placement.entries[i];
                put_str(w, e->service);
                put_u64(w, e->owner);
                put_u64(w, e->replica);
            }
            break;
        case CONS_CMD_MODEL_COMMIT:
            put_u64(w, cmd->u.model.version);
            put_u64(w, cmd->u.model.cbn_version);
            put_u32(w, (uint32_t)cmd->u.model.n_shards);
            for (size_t i = 0; i < cmd->u.model.n_shards; i++) {
                put_str(w, cmd->u.model.shards[i].service);
                put_digest(w, &cmd->u.model.shards[i].digest);
            }
            put_digest(w, &cmd->u.model.cbn_digest);
            break;
        case CONS_CMD_DIAGNOSIS:
            put_str(w, cmd->u.diagnosis.id);
            put_u64(w, cmd->u.diagnosis.time_ms);
            put_str(w, cmd->u.diagnosis.json);
            break;
        case CONS_CMD_ACTION_DECIDE:
            put_str(w, cmd->u.decision.id);
            put_str(w, cmd->u.decision.diagnosis_id);
            put_str(w, cmd->u.decision.service);
            put_str(w, cmd->u.decision.kind);
            put_u64(w, (uint64_t)cmd->u.decision.from);
            put_u64(w, (uint64_t)cmd->u.decision.to);
            put_u64(w, cmd->u.decision.time_ms);
            break;
        case CONS_CMD_ACTION_STATE:
            put_str(w, cmd->u.action.id);
            put_u8(w, (unsigned)cmd->u.action.state);
            put_str(w, cmd->u.action.ack);
            put_u64(w, cmd->u.action.time_ms);
            break;
        case CONS_CMD_RETAIN:
            put_u64(w, cmd->u.retain.max_diagnoses);
            put_u64(w, cmd->u.retain.max_actions);
            put_u64(w, cmd->u.retain.time_ms);
            break;
        default:
            SM_ASSERT(!"write_cmd: unchecked command type");
    }
}

int cons_cmd_encoded_size(const struct cons_cmd *cmd, size_t *size)
{
    int rv = check_cmd(cmd);
    if (rv != SM_OK) {
        return rv;
    }
    struct wr w = {NULL, 0, 0};
    write_cmd(&w, cmd);
    if (w.len > CONS_CMD_MAX) {
        return SM_ETOOBIG;
    }
    *size = w.len;
    return SM_OK;
}

int cons_cmd_encode(const struct cons_cmd *cmd,
                    uint8_t *buf,
                    size_t cap,
                    size_t *len)
{
    size_t need;
    int rv = cons_cmd_encoded_size(cmd, &need);
    if (rv != SM_OK) {
        return rv;
    }
    if (need > cap) {
        return SM_ERANGE;
    }
    struct wr w = {buf, cap, 0};
    write_cmd(&w, cmd);
    *len = w.len;
    return SM_OK;
}

/* ---- Command decoding --------------------------------------------------- */

/* What a decoded command owns: its list and a block of strings. */
struct cmd_mem
{
    void *list;
    size_t used;
    size_t cap;
    char strings[];
};

/* Reads a string and copies it (NUL-terminated) into @m. */
static const char *get_str(struct rd *r, struct cmd_mem *m, size_t max)
{
    size_t n;
    const char *s = get_span(r, max, &n);
    if (s == NULL) {
        return "";
    }
    SM_ASSERT(n + 1 <= m->cap - m->used);
    char *copy = m->strings + m->used;
    memcpy(copy, s, n);
    copy[n] = '\0';
    m->used += n + 1;
    return copy;
}

/* Allocates the list of a decoded command: @n items of @size bytes. */
static void *get_list(struct rd *r, struct cmd_mem *m, size_t n, size_t size)
{
    if (r->err != SM_OK || n == 0) {
        return NULL;
    }
    m->list = sm_calloc(n, size);
    if (m->list == NULL) {
        rd_fail(r, SM_ENOMEM);
    }
    return m->list;
}

static void read_placement(struct rd *r, struct cmd_mem *m, struct cons_cmd *c)
{
    c->u.placement.epoch = get_u64(r);
    /* service (>= 4 bytes), owner, replica */
    size_t n = get_count(r, CONS_LIST_MAX, 4 + 8 + 8);
    struct cons_place_entry *e = get_list(r, m, n, sizeof *e);
    for (size_t i = 0; e != NULL && i < n && r->err == SM_OK; i++) {
        e[i].service = get_str(r, m, CONS_NAME_MAX);
        e[i].owner = get_u64(r);
        e[i].replica = get_u64(r);
    }
    c->u.placement.n = r->err == SM_OK ? n : 0;
    c->u.placement.entries = e;
}

static void read_model(struct rd *r, struct cmd_mem *m, struct cons_cmd *c)
{
    c->u.model.version = get_u64(r);
    c->u.model.cbn_version = get_u64(r);
    size_t n = get_count(r, CONS_LIST_MAX, 4 + CONS_DIGEST_SIZE);
    struct cons_shard_digest *s = get_list(r, m, n, sizeof *s);
    for (size_t i = 0; s != NULL && i < n && r->err == SM_OK; i++) {
        s[i].service = get_str(r, m, CONS_NAME_MAX);
        get_digest(r, &s[i].digest);
    }
    c->u.model.n_shards = r->err == SM_OK ? n : 0;
    c->u.model.shards = s;
    /* The layout before the binding ends here: such an entry is unbound.
     * Anything else left must be the digest (and nothing after it). */
    if (r->err == SM_OK && rd_left(r) > 0) {
        get_digest(r, &c->u.model.cbn_digest);
    }
}

static void read_cmd(struct rd *r, struct cmd_mem *m, struct cons_cmd *c)
{
    switch (c->type) {
        case CONS_CMD_MEMBER_SET:
            c->u.member.id = get_u64(r);
            c->u.member.address = get_str(r, m, CONS_NAME_MAX);
            c->u.member.role = (enum cons_role)get_u8(r);
            c->u.member.health = (enum cons_health)get_u8(r);
            break;
        case CONS_CMD_MEMBER_REMOVE:
            c->u.member.id = get_u64(r);
            break;
        case CONS_CMD_CBN_COMMIT:
            c->u.cbn.version = get_u64(r);
            c->u.cbn.size = get_u64(r);
            get_digest(r, &c->u.cbn.digest);
            break;
        case CONS_CMD_PLACEMENT_SET:
            read_placement(r, m, c);
            break;
        case CONS_CMD_MODEL_COMMIT:
            read_model(r, m, c);
            break;
        case CONS_CMD_DIAGNOSIS:
            c->u.diagnosis.id = get_str(r, m, CONS_ID_MAX);
            c->u.diagnosis.time_ms = get_u64(r);
            c->u.diagnosis.json = get_str(r, m, CONS_JSON_MAX);
            break;
        case CONS_CMD_ACTION_DECIDE:
            c->u.decision.id = get_str(r, m, CONS_ID_MAX);
            c->u.decision.diagnosis_id = get_str(r, m, CONS_ID_MAX);
            c->u.decision.service = get_str(r, m, CONS_NAME_MAX);
            c->u.decision.kind = get_str(r, m, CONS_NAME_MAX);
            c->u.decision.from = (int64_t)get_u64(r);
            c->u.decision.to = (int64_t)get_u64(r);
            c->u.decision.time_ms = get_u64(r);
            break;
        case CONS_CMD_ACTION_STATE:
            c->u.action.id = get_str(r, m, CONS_ID_MAX);
            c->u.action.state = (enum cons_action_state)get_u8(r);
            c->u.action.ack = get_str(r, m, CONS_ACK_MAX);
            c->u.action.time_ms = get_u64(r);
            break;
        case CONS_CMD_RETAIN:
            c->u.retain.max_diagnoses = get_u64(r);
            c->u.retain.max_actions = get_u64(r);
            c->u.retain.time_ms = get_u64(r);
            break;
        default:
            rd_fail(r, SM_EMALFORMED);
    }
}

void cons_cmd_release(struct cons_cmd *cmd)
{
    struct cmd_mem *m = cmd->mem_;
    if (m != NULL) {
        sm_free(m->list);
        sm_free(m);
        cmd->mem_ = NULL;
    }
}

int cons_cmd_decode(const uint8_t *buf, size_t len, struct cons_cmd *cmd)
{
    memset(cmd, 0, sizeof *cmd);
    if (len > CONS_CMD_MAX) {
        return SM_ETOOBIG;
    }
    if (len < 2) {
        return SM_EMALFORMED;
    }
    if (buf[0] != CONS_CMD_VERSION) {
        return SM_EUNSUPPORTED;
    }
    cmd->type = (enum cons_cmd_type)buf[1];
    if (buf[1] == 0 || buf[1] >= CONS_CMD__COUNT) {
        return SM_EMALFORMED;
    }
    /* Every string has a 4-byte length prefix, so the input holds at most
     * len / 4 strings: len + len / 4 + 1 bytes fit them with their NULs. */
    size_t cap = len + len / 4 + 1;
    struct cmd_mem *m = sm_malloc(sizeof *m + cap);
    if (m == NULL) {
        return SM_ENOMEM;
    }
    m->list = NULL;
    m->used = 0;
    m->cap = cap;
    cmd->mem_ = m;

    struct rd r = {buf, len, 2, SM_OK};
    read_cmd(&r, m, cmd);
    int rv = r.err;
    if (rv == SM_OK && r.off != len) {
        rv = SM_EMALFORMED; /* trailing bytes */
    }
    if (rv == SM_OK) {
        rv = check_cmd(cmd);
        rv = rv == SM_EINVAL ? SM_EMALFORMED : rv;
    }
    if (rv != SM_OK) {
        cons_cmd_release(cmd);
    }
    return rv;
}

/* ---- State -------------------------------------------------------------- */

struct member_rec
{
    uint64_t id;
    char *address;
    unsigned role;
    unsigned health;
};

struct place_rec
{
    char *service;
    uint64_t owner;
    uint64_t replica;
};

struct shard_rec
{
    char *service;
    struct cons_digest digest;
};

/* A committed CBN version older than the newest. */
struct cbn_rec
{
    uint64_t version;
    struct cons_digest digest;
};

struct diag_rec
{
    char *id;
    uint64_t time_ms;
    char *json;
    uint64_t seq;
};

struct action_rec
{
    char *id;
    char *diagnosis_id;
    char *service;
    char *kind;
    int64_t from;
    int64_t to;
    unsigned state;
    char *ack;
    uint64_t decided_ms;
    uint64_t updated_ms;
};

/* Everything that is replicated; snapshots serialise exactly this. */
struct state
{
    struct cons_fsm_stats stats;
    struct member_rec *members; /* sorted by id */
    size_t n_members;
    uint64_t cbn_version;
    uint64_t cbn_size;
    struct cons_digest cbn_digest;
    /* The CBN versions committed before cbn_version, oldest first, at most
     * CBN_OLDER_MAX (the oldest is shifted out). */
    struct cbn_rec cbn_older[CBN_OLDER_MAX];
    size_t n_cbn_older;
    uint64_t place_epoch;
    struct place_rec *place; /* sorted by service */
    size_t n_place;
    uint64_t model_version;
    uint64_t model_cbn_version;
    struct cons_digest model_cbn_digest; /* all zero: not bound */
    struct shard_rec *shards;            /* sorted by service */
    size_t n_shards;
    uint64_t diag_seq;
    struct diag_rec *diags; /* apply order */
    size_t n_diags;
    size_t cap_diags;
    struct action_rec *actions; /* decision order */
    size_t n_actions;
    size_t cap_actions;
    size_t n_open; /* actions not in a final state; derived, not written */
    /* Retention: totals dropped and the newest time dropped of each. */
    uint64_t diags_dropped;
    uint64_t diags_dropped_ms;
    uint64_t actions_dropped;
    uint64_t actions_dropped_ms;
};

struct cons_fsm
{
    struct state st;
    struct raft_fsm raft;
    uint64_t restores;
    uint64_t nomem;
};

static void place_free(struct place_rec *p, size_t n)
{
    for (size_t i = 0; p != NULL && i < n; i++) {
        sm_free(p[i].service);
    }
    sm_free(p);
}

static void shards_free(struct shard_rec *s, size_t n)
{
    for (size_t i = 0; s != NULL && i < n; i++) {
        sm_free(s[i].service);
    }
    sm_free(s);
}

static void action_rec_clear(struct action_rec *a)
{
    sm_free(a->id);
    sm_free(a->diagnosis_id);
    sm_free(a->service);
    sm_free(a->kind);
    sm_free(a->ack);
}

static void state_clear(struct state *st)
{
    for (size_t i = 0; i < st->n_members; i++) {
        sm_free(st->members[i].address);
    }
    sm_free(st->members);
    place_free(st->place, st->n_place);
    shards_free(st->shards, st->n_shards);
    for (size_t i = 0; i < st->n_diags; i++) {
        sm_free(st->diags[i].id);
        sm_free(st->diags[i].json);
    }
    sm_free(st->diags);
    for (size_t i = 0; i < st->n_actions; i++) {
        action_rec_clear(&st->actions[i]);
    }
    sm_free(st->actions);
    memset(st, 0, sizeof *st);
}

/* Makes room for one more item in a growing array. */
static int grow(void **items, size_t *cap, size_t n, size_t size)
{
    if (n < *cap) {
        return SM_OK;
    }
    size_t new_cap = *cap < 8 ? 8 : *cap * 2;
    void *p = sm_reallocarray(*items, new_cap, size);
    if (p == NULL) {
        return SM_ENOMEM;
    }
    *items = p;
    *cap = new_cap;
    return SM_OK;
}

/* Index of the member @id, or of where it would go (with *found false). */
static size_t member_find(const struct state *st, uint64_t id, bool *found)
{
    size_t lo = 0, hi = st->n_members;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (st->members[mid].id < id) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    *found = lo < st->n_members && st->members[lo].id == id;
    return lo;
}

static struct diag_rec *diag_find(const struct state *st, const char *id)
{
    for (size_t i = 0; i < st->n_diags; i++) {
        if (strcmp(st->diags[i].id, id) == 0) {
            return &st->diags[i];
        }
    }
    return NULL;
}

static struct action_rec *action_find(const struct state *st, const char *id)
{
    for (size_t i = 0; i < st->n_actions; i++) {
        if (strcmp(st->actions[i].id, id) == 0) {
            return &st->actions[i];
        }
    }
    return NULL;
}

/* ---- Apply ------------------------------------------------------------- */

/* Each apply_* returns SM_OK with the outcome in @res, or SM_ENOMEM with
 * the state untouched. */

static int apply_member_set(struct state *st,
                            const struct cons_cmd *c,
                            enum cons_apply_result *res)
{
    bool found;
    size_t at = member_find(st, c->u.member.id, &found);
    struct member_rec *m = found ? &st->members[at] : NULL;
    if (m != NULL && strcmp(m->address, c->u.member.address) == 0 &&
        m->role == (unsigned)c->u.member.role &&
        m->health == (unsigned)c->u.member.health) {
        *res = CONS_APPLY_DUPLICATE;
        return SM_OK;
    }
    char *address = sm_strdup(c->u.member.address);
    if (address == NULL) {
        return SM_ENOMEM;
    }
    if (m == NULL) {
        struct member_rec *p =
            sm_reallocarray(st->members, st->n_members + 1, sizeof *p);
        if (p == NULL) {
            sm_free(address);
            return SM_ENOMEM;
        }
        st->members = p;
        memmove(&p[at + 1], &p[at], (st->n_members - at) * sizeof *p);
        st->n_members++;
        m = &p[at];
        m->id = c->u.member.id;
    } else {
        sm_free(m->address);
    }
    m->address = address;
    m->role = (unsigned)c->u.member.role;
    m->health = (unsigned)c->u.member.health;
    *res = CONS_APPLY_OK;
    return SM_OK;
}

static void apply_member_remove(struct state *st,
                                const struct cons_cmd *c,
                                enum cons_apply_result *res)
{
    bool found;
    size_t at = member_find(st, c->u.member.id, &found);
    if (!found) {
        *res = CONS_APPLY_DUPLICATE;
        return;
    }
    sm_free(st->members[at].address);
    memmove(&st->members[at], &st->members[at + 1],
            (st->n_members - at - 1) * sizeof st->members[0]);
    st->n_members--;
    *res = CONS_APPLY_OK;
}

static void apply_cbn(struct state *st,
                      const struct cons_cmd *c,
                      enum cons_apply_result *res)
{
    if (c->u.cbn.version > st->cbn_version) {
        if (st->cbn_version > 0) {
            if (st->n_cbn_older == CBN_OLDER_MAX) {
                memmove(&st->cbn_older[0], &st->cbn_older[1],
                        (CBN_OLDER_MAX - 1) * sizeof st->cbn_older[0]);
                st->n_cbn_older--;
            }
            st->cbn_older[st->n_cbn_older++] =
                (struct cbn_rec){st->cbn_version, st->cbn_digest};
        }
        st->cbn_version = c->u.cbn.version;
        st->cbn_size = c->u.cbn.size;
        st->cbn_digest = c->u.cbn.digest;
        *res = CONS_APPLY_OK;
    } else if (c->u.cbn.version == st->cbn_version &&
               c->u.cbn.size == st->cbn_size &&
               memcmp(&c->u.cbn.digest, &st->cbn_digest,
                      sizeof st->cbn_digest) == 0) {
        *res = CONS_APPLY_DUPLICATE;
    } else {
        *res = CONS_APPLY_STALE;
    }
}

static int cmp_place(const void *a, const void *b)
{
    return strcmp(((const struct place_rec *)a)->service,
                  ((const struct place_rec *)b)->service);
}

static int cmp_shard(const void *a, const void *b)
{
    return strcmp(((const struct shard_rec *)a)->service,
                  ((const struct shard_rec *)b)->service);
}

/* Outcome of a versioned replacement: newer applies, equal is a repeat. */
static enum cons_apply_result by_version(uint64_t proposed, uint64_t current)
{
    if (proposed > current) {
        return CONS_APPLY_OK;
    }
    return proposed == current ? CONS_APPLY_DUPLICATE : CONS_APPLY_STALE;
}

static int apply_placement(struct state *st,
                           const struct cons_cmd *c,
                           enum cons_apply_result *res)
{
    *res = by_version(c->u.placement.epoch, st->place_epoch);
    if (*res != CONS_APPLY_OK) {
        return SM_OK;
    }
    size_t n = c->u.placement.n;
    struct place_rec *p = n > 0 ? sm_calloc(n, sizeof *p) : NULL;
    if (n > 0 && p == NULL) {
        return SM_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        p[i].service = sm_strdup(c->u.placement.entries[i].service);
        if (p[i].service == NULL) {
            place_free(p, n);
            return SM_ENOMEM;
        }
        p[i].owner = c->u.placement.entries[i].owner;
        p[i].replica = c->u.placement.entries[i].replica;
    }
    if (n > 1) {
        qsort(p, n, sizeof *p, cmp_place); /* services are distinct */
    }
    place_free(st->place, st->n_place);
    st->place = p;
    st->n_place = n;
    st->place_epoch = c->u.placement.epoch;
    return SM_OK;
}

static bool digest_is_zero(const struct cons_digest *d)
{
    for (size_t i = 0; i < sizeof d->b; i++) {
        if (d->b[i] != 0) {
            return false;
        }
    }
    return true;
}

/* The digest of committed CBN version @version, or NULL when it is not
 * kept (never committed, or older than every one kept). */
static const struct cons_digest *cbn_digest_of(const struct state *st,
                                               uint64_t version)
{
    if (version != 0 && version == st->cbn_version) {
        return &st->cbn_digest;
    }
    for (size_t i = 0; i < st->n_cbn_older; i++) {
        if (st->cbn_older[i].version == version) {
            return &st->cbn_older[i].digest;
        }
    }
    return NULL;
}

/* Whether a bound model's CBN is the one committed under its version:
 * CONS_APPLY_OK, or the refusal (see consensus.h). */
static enum cons_apply_result check_binding(const struct state *st,
                                            const struct cons_cmd *c)
{
    const struct cons_digest *d = cbn_digest_of(st, c->u.model.cbn_version);
    if (d != NULL) {
        return memcmp(d, &c->u.model.cbn_digest, sizeof *d) == 0
                   ? CONS_APPLY_OK
                   : CONS_APPLY_BAD; /* another leader's CBN */
    }
    uint64_t oldest =
        st->n_cbn_older > 0 ? st->cbn_older[0].version : st->cbn_version;
    return c->u.model.cbn_version < oldest ? CONS_APPLY_STALE : CONS_APPLY_BAD;
}

static int apply_model(struct state *st,
                       const struct cons_cmd *c,
                       enum cons_apply_result *res)
{
    if (c->u.model.cbn_version > st->cbn_version) {
        *res = CONS_APPLY_BAD; /* trained on a CBN nobody committed */
        return SM_OK;
    }
    if (!digest_is_zero(&c->u.model.cbn_digest)) {
        *res = check_binding(st, c);
        if (*res != CONS_APPLY_OK) {
            return SM_OK;
        }
    }
    *res = by_version(c->u.model.version, st->model_version);
    if (*res != CONS_APPLY_OK) {
        return SM_OK;
    }
    size_t n = c->u.model.n_shards;
    struct shard_rec *s = n > 0 ? sm_calloc(n, sizeof *s) : NULL;
    if (n > 0 && s == NULL) {
        return SM_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        s[i].service = sm_strdup(c->u.model.shards[i].service);
        if (s[i].service == NULL) {
            shards_free(s, n);
            return SM_ENOMEM;
        }
        s[i].digest = c->u.model.shards[i].digest;
    }
    if (n > 1) {
        qsort(s, n, sizeof *s, cmp_shard);
    }
    shards_free(st->shards, st->n_shards);
    st->shards = s;
    st->n_shards = n;
    st->model_version = c->u.model.version;
    st->model_cbn_version = c->u.model.cbn_version;
    st->model_cbn_digest = c->u.model.cbn_digest;
    return SM_OK;
}

static int apply_diagnosis(struct state *st,
                           const struct cons_cmd *c,
                           enum cons_apply_result *res)
{
    if (diag_find(st, c->u.diagnosis.id) != NULL) {
        *res = CONS_APPLY_DUPLICATE;
        return SM_OK;
    }
    if (st->diags_dropped > 0 &&
        c->u.diagnosis.time_ms <= st->diags_dropped_ms) {
        *res = CONS_APPLY_STALE; /* maybe a retry of a dropped record */
        return SM_OK;
    }
    if (grow((void **)&st->diags, &st->cap_diags, st->n_diags,
             sizeof *st->diags) != SM_OK) {
        return SM_ENOMEM;
    }
    char *id = sm_strdup(c->u.diagnosis.id);
    char *json = sm_strdup(c->u.diagnosis.json);
    if (id == NULL || json == NULL) {
        sm_free(id);
        sm_free(json);
        return SM_ENOMEM;
    }
    st->diags[st->n_diags++] = (struct diag_rec){
        .id = id,
        .time_ms = c->u.diagnosis.time_ms,
        .json = json,
        .seq = ++st->diag_seq,
    };
    *res = CONS_APPLY_OK;
    return SM_OK;
}

static int apply_decision(struct state *st,
                          const struct cons_cmd *c,
                          enum cons_apply_result *res)
{
    if (action_find(st, c->u.decision.id) != NULL) {
        *res = CONS_APPLY_DUPLICATE;
        return SM_OK;
    }
    if (st->actions_dropped > 0 &&
        c->u.decision.time_ms <= st->actions_dropped_ms) {
        *res = CONS_APPLY_STALE; /* maybe a retry of a dropped action */
        return SM_OK;
    }
    if (diag_find(st, c->u.decision.diagnosis_id) == NULL) {
        *res = CONS_APPLY_BAD; /* a decision always follows its diagnosis */
        return SM_OK;
    }
    if (grow((void **)&st->actions, &st->cap_actions, st->n_actions,
             sizeof *st->actions) != SM_OK) {
        return SM_ENOMEM;
    }
    struct action_rec a = {
        .id = sm_strdup(c->u.decision.id),
        .diagnosis_id = sm_strdup(c->u.decision.diagnosis_id),
        .service = sm_strdup(c->u.decision.service),
        .kind = sm_strdup(c->u.decision.kind),
        .from = c->u.decision.from,
        .to = c->u.decision.to,
        .state = CONS_ACT_PENDING,
        .ack = sm_strdup(""),
        .decided_ms = c->u.decision.time_ms,
        .updated_ms = c->u.decision.time_ms,
    };
    if (a.id == NULL || a.diagnosis_id == NULL || a.service == NULL ||
        a.kind == NULL || a.ack == NULL) {
        action_rec_clear(&a);
        return SM_ENOMEM;
    }
    st->actions[st->n_actions++] = a;
    st->n_open++;
    *res = CONS_APPLY_OK;
    return SM_OK;
}

/* Progress of an action: a state change must raise the rank. Rolled back
 * and failed are both final, so neither replaces the other. */
static unsigned state_rank(unsigned state)
{
    static const unsigned rank[] = {
        [CONS_ACT_PENDING] = 0,     [CONS_ACT_APPROVED] = 1,
        [CONS_ACT_APPLIED] = 2,     [CONS_ACT_VERIFIED] = 3,
        [CONS_ACT_ROLLED_BACK] = 4, [CONS_ACT_FAILED] = 4,
    };
    return state < CONS_ACT__COUNT ? rank[state] : 0;
}

int cons_action_state_reached(enum cons_action_state now,
                              enum cons_action_state target)
{
    return state_rank(now) >= state_rank(target);
}

/* Verified, rolled back and failed are final: retention may drop them. */
static bool is_final(unsigned state)
{
    return state_rank(state) >= state_rank(CONS_ACT_VERIFIED);
}

static int apply_action_state(struct state *st,
                              const struct cons_cmd *c,
                              enum cons_apply_result *res)
{
    struct action_rec *a = action_find(st, c->u.action.id);
    unsigned to = (unsigned)c->u.action.state;
    if (a == NULL) {
        *res = CONS_APPLY_BAD;
        return SM_OK;
    }
    if (a->state == to) {
        *res = CONS_APPLY_DUPLICATE;
        return SM_OK;
    }
    if (state_rank(to) <= state_rank(a->state)) {
        *res = CONS_APPLY_STALE;
        return SM_OK;
    }
    char *ack = sm_strdup(c->u.action.ack);
    if (ack == NULL) {
        return SM_ENOMEM;
    }
    sm_free(a->ack);
    a->ack = ack;
    if (!is_final(a->state) && is_final(to)) {
        st->n_open--;
    }
    a->state = to;
    a->updated_ms = c->u.action.time_ms;
    *res = CONS_APPLY_OK;
    return SM_OK;
}

/* Gives back most of an array's spare room after retention emptied it.
 * Best effort: when the smaller block cannot be had, the larger stays. */
static void shrink(void **items, size_t *cap, size_t n, size_t size)
{
    size_t want = n < 8 ? 8 : n;
    if (*cap / 4 < want) {
        return;
    }
    void *p = sm_reallocarray(*items, want, size);
    if (p != NULL) {
        *items = p;
        *cap = want;
    }
}

/* Drops the oldest diagnoses beyond @max; returns how many it dropped. */
static size_t retain_diags(struct state *st, uint64_t max)
{
    if ((uint64_t)st->n_diags <= max) {
        return 0;
    }
    size_t k = st->n_diags - (size_t)max;
    uint64_t newest = st->diags_dropped_ms;
    for (size_t i = 0; i < k; i++) {
        struct diag_rec *d = &st->diags[i];
        newest = d->time_ms > newest ? d->time_ms : newest;
        sm_free(d->id);
        sm_free(d->json);
    }
    memmove(st->diags, st->diags + k, (st->n_diags - k) * sizeof *st->diags);
    st->n_diags -= k;
    st->diags_dropped += k;
    st->diags_dropped_ms = newest;
    shrink((void **)&st->diags, &st->cap_diags, st->n_diags, sizeof *st->diags);
    return k;
}

/* Drops the oldest final actions until at most @max remain (or no final
 * one is left); returns how many it dropped. One compacting pass. */
static size_t retain_actions(struct state *st, uint64_t max)
{
    if ((uint64_t)st->n_actions <= max) {
        return 0;
    }
    size_t excess = st->n_actions - (size_t)max;
    size_t kept = 0, dropped = 0;
    uint64_t newest = st->actions_dropped_ms;
    for (size_t i = 0; i < st->n_actions; i++) {
        struct action_rec *a = &st->actions[i];
        if (dropped < excess && is_final(a->state)) {
            newest = a->decided_ms > newest ? a->decided_ms : newest;
            action_rec_clear(a);
            dropped++;
        } else {
            if (kept != i) {
                st->actions[kept] = *a;
            }
            kept++;
        }
    }
    st->n_actions = kept;
    if (dropped == 0) {
        return 0;
    }
    st->actions_dropped += dropped;
    st->actions_dropped_ms = newest;
    shrink((void **)&st->actions, &st->cap_actions, st->n_actions,
           sizeof *st->actions);
    return dropped;
}

/* Retention: allocates nothing, so it cannot fail. */
static void apply_retain(struct state *st,
                         const struct cons_cmd *c,
                         enum cons_apply_result *res)
{
    size_t dropped = retain_diags(st, c->u.retain.max_diagnoses);
    dropped += retain_actions(st, c->u.retain.max_actions);
    *res = dropped > 0 ? CONS_APPLY_OK : CONS_APPLY_DUPLICATE;
}

static int apply_cmd(struct state *st,
                     const struct cons_cmd *c,
                     enum cons_apply_result *res)
{
    switch (c->type) {
        case CONS_CMD_MEMBER_SET:
            return apply_member_set(st, c, res);
        case CONS_CMD_MEMBER_REMOVE:
            apply_member_remove(st, c, res);
            return SM_OK;
        case CONS_CMD_CBN_COMMIT:
            apply_cbn(st, c, res);
            return SM_OK;
        case CONS_CMD_PLACEMENT_SET:
            return apply_placement(st, c, res);
        case CONS_CMD_MODEL_COMMIT:
            return apply_model(st, c, res);
        case CONS_CMD_DIAGNOSIS:
            return apply_diagnosis(st, c, res);
        case CONS_CMD_ACTION_DECIDE:
            return apply_decision(st, c, res);
        case CONS_CMD_ACTION_STATE:
            return apply_action_state(st, c, res);
        case CONS_CMD_RETAIN:
            apply_retain(st, c, res);
            return SM_OK;
        default:
            *res = CONS_APPLY_BAD;
            return SM_OK;
    }
}

static void count(struct cons_fsm_stats *s, enum cons_apply_result res)
{
    switch (res) {
        case CONS_APPLY_OK:
            s->applied++;
            break;
        case CONS_APPLY_DUPLICATE:
            s->duplicate++;
            break;
        case CONS_APPLY_STALE:
            s->stale++;
            break;
        case CONS_APPLY_BAD:
            s->bad++;
            break;
    }
}

int cons_fsm_apply(struct cons_fsm *fsm,
                   const uint8_t *buf,
                   size_t len,
                   enum cons_apply_result *result)
{
    struct cons_cmd cmd;
    enum cons_apply_result res = CONS_APPLY_BAD;
    int rv = cons_cmd_decode(buf, len, &cmd);
    if (rv == SM_OK) {
        rv = apply_cmd(&fsm->st, &cmd, &res);
        cons_cmd_release(&cmd);
    } else if (rv != SM_ENOMEM) {
        rv = SM_OK; /* a bad command: a counted no-op */
    }
    if (rv != SM_OK) {
        fsm->nomem++;
        return rv;
    }
    count(&fsm->st.stats, res);
    if (result != NULL) {
        *result = res;
    }
    return SM_OK;
}

/* ---- Snapshot ------------------------------------------------------------ */

static void write_state(struct wr *w, const struct state *st)
{
    put_u8(w, CONS_SNAPSHOT_VERSION);
    put_u8(w, SNAPSHOT_MAGIC);
    put_u64(w, st->stats.applied);
    put_u64(w, st->stats.duplicate);
    put_u64(w, st->stats.stale);
    put_u64(w, st->stats.bad);
    put_u32(w, (uint32_t)st->n_members);
    for (size_t i = 0; i < st->n_members; i++) {
        put_u64(w, st->members[i].id);
        put_str(w, st->members[i].address);
        put_u8(w, st->members[i].role);
        put_u8(w, st->members[i].health);
    }
    put_u64(w, st->cbn_version);
    put_u64(w, st->cbn_size);
    put_digest(w, &st->cbn_digest);
    put_u64(w, st->place_epoch);
    put_u32(w, (uint32_t)st->n_place);
    for (size_t i = 0; i < st->n_place; i++) {
        put_str(w, st->place[i].service);
        put_u64(w, st->place[i].owner);
        put_u64(w, st->place[i].replica);
    }
    put_u64(w, st->model_version);
    put_u64(w, st->model_cbn_version);
    put_u32(w, (uint32_t)st->n_shards);
    for (size_t i = 0; i < st->n_shards; i++) {
        put_str(w, st->shards[i].service);
        put_digest(w, &st->shards[i].digest);
    }
    put_u64(w, st->diag_seq);
    put_u32(w, (uint32_t)st->n_diags);
    for (size_t i = 0; i < st->n_diags; i++) {
        put_str(w, st->diags[i].id);
        put_u64(w, st->diags[i].time_ms);
        put_str(w, st->diags[i].json);
        put_u64(w, st->diags[i].seq);
    }
    put_u32(w, (uint32_t)st->n_actions);
    for (size_t i = 0; i < st->n_actions; i++) {
        const struct action_rec *a = &st->actions[i];
        put_str(w, a->id);
        put_str(w, a->diagnosis_id);
        put_str(w, a->service);
        put_str(w, a->kind);
        put_u64(w, (uint64_t)a->from);
        put_u64(w, (uint64_t)a->to);
        put_u8(w, a->state);
        put_str(w, a->ack);
        put_u64(w, a->decided_ms);
        put_u64(w, a->updated_ms);
    }
    /* Version 2: retention. */
    put_u64(w, st->diags_dropped);
    put_u64(w, st->diags_dropped_ms);
    put_u64(w, st->actions_dropped);
    put_u64(w, st->actions_dropped_ms);
    /* Version 3: the older CBN versions and the model's binding. */
    put_u32(w, (uint32_t)st->n_cbn_older);
    for (size_t i = 0; i < st->n_cbn_older; i++) {
        put_u64(w, st->cbn_older[i].version);
        put_digest(w, &st->cbn_older[i].digest);
    }
    put_digest(w, &st->model_cbn_digest);
}

int cons_fsm_snapshot(const struct cons_fsm *fsm,
                      void *(*alloc)(size_t size),
                      uint8_t **buf,
                      size_t *len)
{
    struct wr w = {NULL, 0, 0};
    write_state(&w, &fsm->st);
    uint8_t *p = (alloc != NULL ? alloc : sm_malloc)(w.len);
    if (p == NULL) {
        return SM_ENOMEM;
    }
    struct wr out = {p, w.len, 0};
    write_state(&out, &fsm->st);
    *buf = p;
    *len = out.len;
    return SM_OK;
}

/* Reads a string of the snapshot into a new allocation. */
static char *dup_str(struct rd *r, size_t max)
{
    size_t n;
    const char *s = get_span(r, max, &n);
    if (s == NULL) {
        return NULL;
    }
    char *copy = sm_strndup(s, n);
    if (copy == NULL) {
        rd_fail(r, SM_ENOMEM);
    }
    return copy;
}

/* Allocates @n zeroed items for a list being restored. */
static void *rd_calloc(struct rd *r, size_t n, size_t size)
{
    if (r->err != SM_OK || n == 0) {
        return NULL;
    }
    void *p = sm_calloc(n, size);
    if (p == NULL) {
        rd_fail(r, SM_ENOMEM);
    }
    return p;
}

static void read_members(struct rd *r, struct state *st)
{
    size_t n = get_count(r, SIZE_MAX, 8 + 4 + 2);
    st->members = rd_calloc(r, n, sizeof *st->members);
    for (size_t i = 0; st->members != NULL && i < n && r->err == SM_OK; i++) {
        struct member_rec *m = &st->members[i];
        m->id = get_u64(r);
        m->address = dup_str(r, CONS_NAME_MAX);
        m->role = get_u8(r);
        m->health = get_u8(r);
        st->n_members = i + 1;
        if (m->id == 0 || m->role > CONS_ROLE_SPARE ||
            m->health > CONS_HEALTH_DOWN ||
            (i > 0 && st->members[i - 1].id >= m->id)) {
            rd_fail(r, SM_EMALFORMED);
        }
    }
}

static void read_place(struct rd *r, struct state *st)
{
    st->place_epoch = get_u64(r);
    size_t n = get_count(r, CONS_LIST_MAX, 4 + 8 + 8);
    st->place = rd_calloc(r, n, sizeof *st->place);
    for (size_t i = 0; st->place != NULL && i < n && r->err == SM_OK; i++) {
        struct place_rec *p = &st->place[i];
        p->service = dup_str(r, CONS_NAME_MAX);
        p->owner = get_u64(r);
        p->replica = get_u64(r);
        st->n_place = i + 1;
        if (r->err == SM_OK && i > 0 && cmp_place(p - 1, p) >= 0) {
            rd_fail(r, SM_EMALFORMED);
        }
    }
}

static void read_shards(struct rd *r, struct state *st)
{
    st->model_version = get_u64(r);
    st->model_cbn_version = get_u64(r);
    size_t n = get_count(r, CONS_LIST_MAX, 4 + CONS_DIGEST_SIZE);
    st->shards = rd_calloc(r, n, sizeof *st->shards);
    for (size_t i = 0; st->shards != NULL && i < n && r->err == SM_OK; i++) {
        struct shard_rec *s = &st->shards[i];
        s->service = dup_str(r, CONS_NAME_MAX);
        get_digest(r, &s->digest);
        st->n_shards = i + 1;
        if (r->err == SM_OK && i > 0 && cmp_shard(s - 1, s) >= 0) {
            rd_fail(r, SM_EMALFORMED);
        }
    }
}

static void read_diags(struct rd *r, struct state *st)
{
    st->diag_seq = get_u64(r);
    size_t n = get_count(r, SIZE_MAX, 4 + 8 + 4 + 8);
    st->diags = rd_calloc(r, n, sizeof *st->diags);
    st->cap_diags = st->diags != NULL ? n : 0;
    for (size_t i = 0; st->diags != NULL && i < n && r->err == SM_OK; i++) {
        struct diag_rec *d = &st->diags[i];
        d->id = dup_str(r, CONS_ID_MAX);
        d->time_ms = get_u64(r);
        d->json = dup_str(r, CONS_JSON_MAX);
        d->seq = get_u64(r);
        st->n_diags = i + 1;
        if (d->seq == 0 || d->seq > st->diag_seq ||
            (i > 0 && d[-1].seq >= d->seq)) {
            rd_fail(r, SM_EMALFORMED);
        }
    }
}

static void read_actions(struct rd *r, struct state *st)
{
    size_t n = get_count(r, SIZE_MAX, 4 * 4 + 8 * 2 + 1 + 4 + 8 * 2);
    st->actions = rd_calloc(r, n, sizeof *st->actions);
    st->cap_actions = st->actions != NULL ? n : 0;
    for (size_t i = 0; st->actions != NULL && i < n && r->err == SM_OK; i++) {
        struct action_rec *a = &st->actions[i];
        a->id = dup_str(r, CONS_ID_MAX);
        a->diagnosis_id = dup_str(r, CONS_ID_MAX);
        a->service = dup_str(r, CONS_NAME_MAX);
        a->kind = dup_str(r, CONS_NAME_MAX);
        a->from = (int64_t)get_u64(r);
        a->to = (int64_t)get_u64(r);
        a->state = get_u8(r);
        a->ack = dup_str(r, CONS_ACK_MAX);
        a->decided_ms = get_u64(r);
        a->updated_ms = get_u64(r);
        st->n_actions = i + 1;
        if (a->state >= CONS_ACT__COUNT) {
            rd_fail(r, SM_EMALFORMED);
        } else if (!is_final(a->state)) {
            st->n_open++;
        }
    }
}

/* Version 2: the retention totals and watermarks. A watermark without a
 * drop cannot happen. */
static void read_retention(struct rd *r, struct state *st)
{
    st->diags_dropped = get_u64(r);
    st->diags_dropped_ms = get_u64(r);
    st->actions_dropped = get_u64(r);
    st->actions_dropped_ms = get_u64(r);
    if ((st->diags_dropped == 0 && st->diags_dropped_ms != 0) ||
        (st->actions_dropped == 0 && st->actions_dropped_ms != 0)) {
        rd_fail(r, SM_EMALFORMED);
    }
}

/* Version 3: the older CBN versions (increasing, below the newest) and the
 * model's CBN digest (only with a model). */
static void read_binding(struct rd *r, struct state *st)
{
    size_t n = get_count(r, CBN_OLDER_MAX, 8 + CONS_DIGEST_SIZE);
    for (size_t i = 0; i < n && r->err == SM_OK; i++) {
        struct cbn_rec *c = &st->cbn_older[i];
        c->version = get_u64(r);
        get_digest(r, &c->digest);
        st->n_cbn_older = i + 1;
        if (c->version == 0 || c->version >= st->cbn_version ||
            (i > 0 && c[-1].version >= c->version)) {
            rd_fail(r, SM_EMALFORMED);
        }
    }
    get_digest(r, &st->model_cbn_digest);
    if (r->err != SM_OK || digest_is_zero(&st->model_cbn_digest)) {
        return;
    }
    /* A bound model was checked when it applied: its CBN, if still kept,
     * has its digest. */
    const struct cons_digest *d = cbn_digest_of(st, st->model_cbn_version);
    if (st->model_version == 0 ||
        (d != NULL && memcmp(d, &st->model_cbn_digest, sizeof *d) != 0)) {
        rd_fail(r, SM_EMALFORMED);
    }
}

/* Strings of the restored state are all non-NULL once reading succeeded;
 * state_clear() copes with the NULLs of a partial read. */
static int read_state(const uint8_t *buf, size_t len, struct state *st)
{
    memset(st, 0, sizeof *st);
    if (len < 2) {
        return SM_EMALFORMED;
    }
    if (buf[0] != SNAPSHOT_V1 && buf[0] != SNAPSHOT_V2 &&
        buf[0] != CONS_SNAPSHOT_VERSION) {
        return SM_EUNSUPPORTED;
    }
    if (buf[1] != SNAPSHOT_MAGIC) {
        return SM_EMALFORMED;
    }
    struct rd r = {buf, len, 2, SM_OK};
    st->stats.applied = get_u64(&r);
    st->stats.duplicate = get_u64(&r);
    st->stats.stale = get_u64(&r);
    st->stats.bad = get_u64(&r);
    read_members(&r, st);
    st->cbn_version = get_u64(&r);
    st->cbn_size = get_u64(&r);
    get_digest(&r, &st->cbn_digest);
    read_place(&r, st);
    read_shards(&r, st);
    read_diags(&r, st);
    read_actions(&r, st);
    if (buf[0] != SNAPSHOT_V1) {
        read_retention(&r, st);
    }
    if (buf[0] != SNAPSHOT_V1 && buf[0] != SNAPSHOT_V2) {
        read_binding(&r, st);
    }
    int rv = r.err;
    if (rv == SM_OK && r.off != len) {
        rv = SM_EMALFORMED;
    }
    if (rv == SM_ETOOBIG) {
        rv = SM_EMALFORMED; /* we never write such a snapshot */
    }
    if (rv != SM_OK) {
        state_clear(st);
    }
    return rv;
}

int cons_fsm_restore(struct cons_fsm *fsm, const uint8_t *buf, size_t len)
{
    struct state st;
    int rv = read_state(buf, len, &st);
    if (rv != SM_OK) {
        return rv;
    }
    state_clear(&fsm->st);
    fsm->st = st;
    fsm->restores++;
    return SM_OK;
}

/* ---- raft glue ----------------------------------------------------------- */

/* raft hands apply's result pointer to the proposer's callback; these give
 * each outcome a stable address. */
static const enum cons_apply_result results[] = {
    CONS_APPLY_OK,
    CONS_APPLY_DUPLICATE,
    CONS_APPLY_STALE,
    CONS_APPLY_BAD,
};

enum cons_apply_result cons__fsm_result(const void *result)
{
    return result != NULL ? *(const enum cons_apply_result *)result
                          : CONS_APPLY_BAD;
}

void cons__fsm_local_counters(const struct cons_fsm *fsm,
                              uint64_t *restores,
                              uint64_t *nomem)
{
    *restores = fsm->restores;
    *nomem = fsm->nomem;
}

static int fsm_raft_apply(struct raft_fsm *rf,
                          const struct raft_buffer *buf,
                          void **result)
{
    struct cons_fsm *fsm = rf->data;
    enum cons_apply_result res;
    /* Only a lack of memory is reported to raft, which then retries the
     * entry later; anything else is applied (maybe as a no-op), because a
     * non-zero return stalls the apply loop on this entry. */
    /* An entry is a 4-byte length, the command and padding (raft_node.c);
     * one that does not frame is applied as an empty, bad command. */
    const uint8_t *b = buf->base;
    size_t len = 0;
    if (buf->len >= CONS_ENTRY_HEADER) {
        len = (size_t)b[0] | (size_t)b[1] << 8 | (size_t)b[2] << 16 |
              (size_t)b[3] << 24;
        if (len > buf->len - CONS_ENTRY_HEADER) {
            len = 0;
        }
    }
    if (cons_fsm_apply(fsm, b + (buf->len >= CONS_ENTRY_HEADER ? 4 : 0), len,
                       &res) != SM_OK) {
        return RAFT_NOMEM;
    }
    *result = (void *)&results[res];
    return 0;
}

static void *raft_alloc(size_t size)
{
    return raft_malloc(size);
}

static int fsm_raft_snapshot(struct raft_fsm *rf,
                             struct raft_buffer *bufs[],
                             unsigned *n_bufs)
{
    struct cons_fsm *fsm = rf->data;
    /* Without snapshot_finalize, raft frees the array and each base with
     * raft_free, so both come from raft_malloc. */
    struct raft_buffer *b = raft_malloc(sizeof *b);
    if (b == NULL) {
        return RAFT_NOMEM;
    }
    uint8_t *data;
    size_t len;
    if (cons_fsm_snapshot(fsm, raft_alloc, &data, &len) != SM_OK) {
        raft_free(b);
        return RAFT_NOMEM;
    }
    b->base = data;
    b->len = len;
    *bufs = b;
    *n_bufs = 1;
    return 0;
}

static int fsm_raft_restore(struct raft_fsm *rf, struct raft_buffer *buf)
{
    struct cons_fsm *fsm = rf->data;
    int rv = cons_fsm_restore(fsm, buf->base, buf->len);
    if (rv != SM_OK) {
        return rv == SM_ENOMEM ? RAFT_NOMEM : RAFT_CORRUPT;
    }
    raft_free(buf->base); /* ours on success */
    return 0;
}

struct raft_fsm *cons_fsm_raft(struct cons_fsm *fsm)
{
    return &fsm->raft;
}

int cons_fsm_new(struct cons_fsm **out)
{
    struct cons_fsm *fsm = sm_calloc(1, sizeof *fsm);
    if (fsm == NULL) {
        return SM_ENOMEM;
    }
    fsm->raft.version = 2;
    fsm->raft.data = fsm;
    fsm->raft.apply = fsm_raft_apply;
    fsm->raft.snapshot = fsm_raft_snapshot;
    fsm->raft.restore = fsm_raft_restore;
    fsm->raft.snapshot_finalize = NULL;
    *out = fsm;
    return SM_OK;
}

void cons_fsm_free(struct cons_fsm *fsm)
{
    if (fsm != NULL) {
        state_clear(&fsm->st);
        sm_free(fsm);
    }
}

/* ---- Queries ------------------------------------------------------------- */

void cons_fsm_stats(const struct cons_fsm *fsm, struct cons_fsm_stats *stats)
{
    *stats = fsm->st.stats;
}

void cons_fsm_counts(const struct cons_fsm *fsm, struct cons_fsm_counts *out)
{
    const struct state *st = &fsm->st;
    *out = (struct cons_fsm_counts){
        .diagnoses = st->n_diags,
        .actions = st->n_actions,
        .actions_open = st->n_open,
        .diagnoses_dropped = st->diags_dropped,
        .actions_dropped = st->actions_dropped,
        .diagnoses_dropped_ms = st->diags_dropped_ms,
        .actions_dropped_ms = st->actions_dropped_ms,
    };
}

size_t cons_fsm_members(const struct cons_fsm *fsm,
                        struct cons_member *out,
                        size_t cap)
{
    const struct state *st = &fsm->st;
    for (size_t i = 0; i < st->n_members && i < cap; i++) {
        out[i] = (struct cons_member){
            .id = st->members[i].id,
            .address = st->members[i].address,
            .role = (enum cons_role)st->members[i].role,
            .health = (enum cons_health)st->members[i].health,
        };
    }
    return st->n_members;
}

static struct cons_diagnosis diag_view(const struct diag_rec *d)
{
    return (struct cons_diagnosis){d->id, d->time_ms, d->json, d->seq};
}

size_t cons_fsm_diagnoses(const struct cons_fsm *fsm,
                          struct cons_diagnosis *out,
                          size_t limit)
{
    const struct state *st = &fsm->st;
    size_t n = 0;
    for (size_t i = st->n_diags; i > 0 && n < limit; i--) {
        out[n++] = diag_view(&st->diags[i - 1]);
    }
    return n;
}

int cons_fsm_diagnosis_get(const struct cons_fsm *fsm,
                           const char *id,
                           struct cons_diagnosis *out)
{
    const struct diag_rec *d = diag_find(&fsm->st, id);
    if (d == NULL) {
        return SM_ENOTFOUND;
    }
    *out = diag_view(d);
    return SM_OK;
}

static struct cons_action action_view(const struct action_rec *a)
{
    return (struct cons_action){
        .id = a->id,
        .diagnosis_id = a->diagnosis_id,
        .service = a->service,
        .kind = a->kind,
        .from = a->from,
        .to = a->to,
        .state = (enum cons_action_state)a->state,
        .ack = a->ack,
        .decided_ms = a->decided_ms,
        .updated_ms = a->updated_ms,
    };
}

int cons_fsm_action_get(const struct cons_fsm *fsm,
                        const char *id,
                        struct cons_action *out)
{
    const struct action_rec *a = action_find(&fsm->st, id);
    if (a == NULL) {
        return SM_ENOTFOUND;
    }
    *out = action_view(a);
    return SM_OK;
}

size_t cons_fsm_actions(const struct cons_fsm *fsm,
                        enum cons_action_state state,
                        struct cons_action *out,
                        size_t cap)
{
    const struct state *st = &fsm->st;
    size_t n = 0;
    for (size_t i = 0; i < st->n_actions; i++) {
        if (state != CONS_ACT__COUNT && st->actions[i].state != state) {
            continue;
        }
        if (n < cap) {
            out[n] = action_view(&st->actions[i]);
        }
        n++;
    }
    return n;
}

void cons_fsm_versions(const struct cons_fsm *fsm, struct cons_versions *out)
{
    const struct state *st = &fsm->st;
    *out = (struct cons_versions){
        .cbn_version = st->cbn_version,
        .cbn_size = st->cbn_size,
        .cbn_digest = st->cbn_digest,
        .model_version = st->model_version,
        .model_cbn_version = st->model_cbn_version,
        .model_cbn_digest = st->model_cbn_digest,
        .model_shards = st->n_shards,
    };
}

int cons_fsm_cbn_digest(const struct cons_fsm *fsm,
                        uint64_t version,
                        struct cons_digest *out)
{
    const struct cons_digest *d = cbn_digest_of(&fsm->st, version);
    if (d == NULL) {
        return SM_ENOTFOUND;
    }
    *out = *d;
    return SM_OK;
}

size_t cons_fsm_model_shards(const struct cons_fsm *fsm,
                             struct cons_shard_digest *out,
                             size_t cap)
{
    const struct state *st = &fsm->st;
    for (size_t i = 0; i < st->n_shards && i < cap; i++) {
        out[i].service = st->shards[i].service;
        out[i].digest = st->shards[i].digest;
    }
    return st->n_shards;
}

size_t cons_fsm_placement(const struct cons_fsm *fsm,
                          uint64_t *epoch,
                          struct cons_place_entry *out,
                          size_t cap)
{
    const struct state *st = &fsm->st;
    if (epoch != NULL) {
        *epoch = st->place_epoch;
    }
    for (size_t i = 0; i < st->n_place && i < cap; i++) {
        out[i] = (struct cons_place_entry){
            st->place[i].service, st->place[i].owner, st->place[i].replica};
    }
    return st->n_place;
}

int cons_fsm_placement_get(const struct cons_fsm *fsm,
                           const char *service,
                           struct cons_place_entry *out)
{
    const struct state *st = &fsm->st;
    for (size_t i = 0; i < st->n_place; i++) {
        if (strcmp(st->place[i].service, service) == 0) {
            *out = (struct cons_place_entry){
                st->place[i].service, st->place[i].owner, st->place[i].replica};
            return SM_OK;
        }
    }
    return SM_ENOTFOUND;
}
