/* Shard placement: pure, deterministic functions (spans are routed by
 * node/span_route.h).
 *
 * Placement works in passes over the services in name order (never in input
 * order, so that the result does not depend on how the caller listed them):
 *   A. a service whose previous owner is unhealthy and whose previous
 *      replica is healthy gets that replica as owner;
 *   B. previous owners that are healthy are kept while they have quota;
 *   C. services still without an owner get the peer with quota that saw most
 *      of their telemetry, then the least loaded;
 *   D. replicas are kept on a previous holder of the shard (its previous
 *      replica, else its previous owner) while it has quota, first for the
 *      services whose owner is new to the shard (their data survives only
 *      there), then for the others;
 *   E. services without a replica get the least loaded other peer.
 * Quotas balance exactly: of S owners over P peers, every peer owns
 * floor(S / P) and S mod P peers one more; the same holds for the 2S shards
 * (owners and replicas together). Keeping previous assignments first keeps
 * movement to what balance requires. When the quotas cannot all be met
 * (pass A ignores them, and a replica never shares its owner's peer) the
 * least loaded peer is taken anyway. */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/err.h"
#include "consensus/consensus.h"

/* splitmix64's finaliser: a good 64-bit mix. */
static uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* FNV-1a over bytes, then mixed. */
static uint64_t hash_bytes(const void *data, size_t n)
{
    const uint8_t *p = data;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h = (h ^ p[i]) * 0x100000001b3ull;
    }
    return mix64(h);
}

/* The rendezvous weight of @peer for a key hashed to @key_hash. */
static uint64_t weight(uint64_t key_hash, uint64_t peer)
{
    return mix64(key_hash ^ mix64(peer));
}

/* ---- Placement ------------------------------------------------------------
 */

struct load
{
    uint64_t id;
    size_t owners;
    size_t total;
};

/* Exact balance of a count over the peers: every peer gets @floor, and
 * @extra of them one more; @at_ceil peers already went past @floor. */
struct quota
{
    size_t floor;
    size_t extra;
    size_t at_ceil;
};

static bool has_quota(const struct quota *q, size_t have)
{
    return have < q->floor || (have == q->floor && q->at_ceil < q->extra);
}

/* Counts one more for a peer that had @have. */
static void use_quota(struct quota *q, size_t have)
{
    if (have == q->floor) {
        q->at_ceil++;
    }
}

static void quota_init(struct quota *q, size_t count, size_t n_peers)
{
    *q = (struct quota){count / n_peers, count % n_peers, 0};
}

/* Working state of one computation. */
struct plan
{
    const struct cons_place_service *services;
    size_t n_services;
    struct cons_place_entry *out;
    struct load *peers; /* healthy peers, by id */
    size_t n_peers;
    size_t *order;       /* service indices by name */
    struct quota owners; /* over struct load.owners */
    struct quota total;  /* over struct load.total */
};

static struct load *load_of(struct plan *p, uint64_t id)
{
    size_t lo = 0, hi = p->n_peers;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (p->peers[mid].id < id) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return id != 0 && lo < p->n_peers && p->peers[lo].id == id ? &p->peers[lo]
                                                               : NULL;
}

static uint64_t seen_count(const struct cons_place_service *s, uint64_t peer)
{
    uint64_t n = 0;
    for (size_t i = 0; i < s->n_seen; i++) {
        if (s->seen[i].peer == peer) {
            n += s->seen[i].count;
        }
    }
    return n;
}

static const struct cons_place_entry *
prev_of(const char *service, const struct cons_place_entry *prev, size_t n_prev)
{
    for (size_t i = 0; i < n_prev; i++) {
        if (prev[i].service != NULL && strcmp(prev[i].service, service) == 0) {
            return &prev[i];
        }
    }
    return NULL;
}

static void set_owner(struct plan *p,
                      struct cons_place_entry *e,
                      struct load *l)
{
    use_quota(&p->owners, l->owners);
    use_quota(&p->total, l->total);
    e->owner = l->id;
    l->owners++;
    l->total++;
}

static void set_replica(struct plan *p,
                        struct cons_place_entry *e,
                        struct load *l)
{
    use_quota(&p->total, l->total);
    e->replica = l->id;
    l->total++;
}

static bool may_own(const struct plan *p, const struct load *l)
{
    return has_quota(&p->owners, l->owners) && has_quota(&p->total, l->total);
}

static bool may_hold(const struct plan *p, const struct load *l)
{
    return has_quota(&p->total, l->total);
}

/* The candidate order for a new owner: more telemetry, fewer owned, fewer
 * held, then the rendezvous hash, then the id. Returns true when @a is the
 * better choice. */
static bool better_owner(const struct cons_place_service *s,
                         uint64_t key,
                         const struct load *a,
                         const struct load *b)
{
    uint64_t sa = seen_count(s, a->id), sb = seen_count(s, b->id);
    if (sa != sb) {
        return sa > sb;
    }
    if (a->owners != b->owners) {
        return a->owners < b->owners;
    }
    if (a->total != b->total) {
        return a->total < b->total;
    }
    uint64_t wa = weight(key, a->id), wb = weight(key, b->id);
    return wa != wb ? wa > wb : a->id < b->id;
}

/* The order for a replica: fewer held, more telemetry, hash, id. */
static bool better_replica(const struct cons_place_service *s,
                           uint64_t key,
                           const struct load *a,
                           const struct load *b)
{
    if (a->total != b->total) {
        return a->total < b->total;
    }
    uint64_t sa = seen_count(s, a->id), sb = seen_count(s, b->id);
    if (sa != sb) {
        return sa > sb;
    }
    uint64_t wa = weight(key, a->id), wb = weight(key, b->id);
    return wa != wb ? wa > wb : a->id < b->id;
}

/* Picks a new owner for service @si: first within both quotas, then within
 * the owner quota, then anyone. */
static struct load *pick_owner(struct plan *p, size_t si)
{
    const struct cons_place_service *s = &p->services[si];
    uint64_t key = hash_bytes(s->name, strlen(s->name));
    for (int pass = 0; pass < 3; pass++) {
        struct load *best = NULL;
        for (size_t i = 0; i < p->n_peers; i++) {
            struct load *l = &p->peers[i];
            if ((pass < 1 && !may_own(p, l)) ||
                (pass < 2 && !has_quota(&p->owners, l->owners))) {
                continue;
            }
            if (best == NULL || better_owner(s, key, l, best)) {
                best = l;
            }
        }
        if (best != NULL) {
            return best;
        }
    }
    return NULL;
}

/* Picks a replica for service @si on a peer other than its owner, within
 * the shard quota when @in_quota; NULL when there is none. */
static struct load *pick_replica(struct plan *p, size_t si, bool in_quota)
{
    const struct cons_place_service *s = &p->services[si];
    uint64_t key = hash_bytes(s->name, strlen(s->name));
    struct load *best = NULL;
    for (size_t i = 0; i < p->n_peers; i++) {
        struct load *l = &p->peers[i];
        if (l->id == p->out[si].owner || (in_quota && !may_hold(p, l))) {
            continue;
        }
        if (best == NULL || better_replica(s, key, l, best)) {
            best = l;
        }
    }
    return best;
}

/* Passes A and B: the owners the previous placement lets us keep. */
static void keep_owners(struct plan *p,
                        const struct cons_place_entry *prev,
                        size_t n_prev)
{
    for (size_t k = 0; k < p->n_services; k++) {
        size_t si = p->order[k];
        const struct cons_place_entry *e =
            prev_of(p->services[si].name, prev, n_prev);
        struct load *replica = e != NULL ? load_of(p, e->replica) : NULL;
        if (e != NULL && load_of(p, e->owner) == NULL && replica != NULL) {
            set_owner(p, &p->out[si], replica); /* A: it has the data */
        }
    }
    for (size_t k = 0; k < p->n_services; k++) {
        size_t si = p->order[k];
        const struct cons_place_entry *e =
            prev_of(p->services[si].name, prev, n_prev);
        struct load *owner = e != NULL ? load_of(p, e->owner) : NULL;
        if (p->out[si].owner == 0 && owner != NULL && may_own(p, owner)) {
            set_owner(p, &p->out[si], owner); /* B */
        }
    }
}

/* Pass C. */
static void new_owners(struct plan *p)
{
    for (size_t k = 0; k < p->n_services; k++) {
        size_t si = p->order[k];
        if (p->out[si].owner == 0) {
            set_owner(p, &p->out[si], pick_owner(p, si));
        }
    }
}

/* Keeps the replica of service @si on @l when possible. */
static bool keep_replica(struct plan *p, size_t si, struct load *l)
{
    if (l == NULL || l->id == p->out[si].owner || !may_hold(p, l)) {
        return false;
    }
    set_replica(p, &p->out[si], l);
    return true;
}

/* Pass D: in round 0 the services whose owner held no copy before, in
 * round 1 the others. */
static void keep_replicas(struct plan *p,
                          const struct cons_place_entry *prev,
                          size_t n_prev)
{
    for (int round = 0; round < 2; round++) {
        for (size_t k = 0; k < p->n_services; k++) {
            size_t si = p->order[k];
            const struct cons_place_entry *e =
                prev_of(p->services[si].name, prev, n_prev);
            if (e == NULL || p->out[si].replica != 0) {
                continue;
            }
            uint64_t owner = p->out[si].owner;
            bool new_owner = owner != e->owner && owner != e->replica;
            if (new_owner != (round == 0)) {
                continue;
            }
            if (!keep_replica(p, si, load_of(p, e->replica))) {
                keep_replica(p, si, load_of(p, e->owner));
            }
        }
    }
}

/* When only the owner X of service @si has shard quota left, a replica can
 * still be placed without breaking the balance: move the replica of some
 * other service t from peer Y to X (X is neither t's owner nor already its
 * replica) and give Y to @si. Returns true when it did. */
static bool swap_replica(struct plan *p, size_t si)
{
    uint64_t x = p->out[si].owner;
    struct load *lx = load_of(p, x);
    if (lx == NULL || !may_hold(p, lx)) {
        return false;
    }
    for (size_t k = 0; k < p->n_services; k++) {
        struct cons_place_entry *t = &p->out[p->order[k]];
        if (t == &p->out[si] || t->replica == 0 || t->replica == x ||
            t->owner == x) {
            continue;
        }
        uint64_t y = t->replica;
        use_quota(&p->total, lx->total);
        lx->total++;
        t->replica = x;
        p->out[si].replica = y; /* y keeps its count */
        return true;
    }
    return false;
}

/* Pass E. */
static void new_replicas(struct plan *p)
{
    for (size_t k = 0; k < p->n_services; k++) {
        size_t si = p->order[k];
        if (p->out[si].replica != 0) {
            continue;
        }
        struct load *l = pick_replica(p, si, true);
        if (l == NULL && swap_replica(p, si)) {
            continue;
        }
        l = l != NULL ? l : pick_replica(p, si, false);
        if (l != NULL) {
            set_replica(p, &p->out[si], l);
        }
    }
}

static int validate(const struct cons_place_peer *peers,
                    size_t n_peers,
                    const struct cons_place_service *services,
                    size_t n_services,
                    char *errmsg)
{
    if (n_services > CONS_LIST_MAX) {
        sm_errmsg_printf(errmsg, "placement: %zu services, limit %u",
                         n_services, CONS_LIST_MAX);
        return SM_EINVAL;
    }
    for (size_t i = 0; i < n_peers; i++) {
        for (size_t j = 0; j < i && peers[i].id != 0; j++) {
            if (peers[j].id == peers[i].id) {
                sm_errmsg_printf(errmsg, "placement: peer %llu listed twice",
                                 (unsigned long long)peers[i].id);
                return SM_EINVAL;
            }
        }
        if (peers[i].id == 0) {
            sm_errmsg_printf(errmsg, "placement: peer id 0");
            return SM_EINVAL;
        }
    }
    for (size_t i = 0; i < n_services; i++) {
        if (services[i].name == NULL || services[i].name[0] == '\0') {
            sm_errmsg_printf(errmsg, "placement: service without a name");
            return SM_EINVAL;
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(services[i].name, services[j].name) == 0) {
                sm_errmsg_printf(errmsg, "placement: service %s listed twice",
                                 services[i].name);
                return SM_EINVAL;
            }
        }
    }
    return SM_OK;
}

static int cmp_load(const void *a, const void *b)
{
    uint64_t x = ((const struct load *)a)->id, y = ((const struct load *)b)->id;
    return x < y ? -1 : x > y;
}

/* Sorts the service indices by name (insertion sort: n <= CONS_LIST_MAX,
 * and no global state, so concurrent callers are safe). */
static void order_by_name(size_t *order,
                          const struct cons_place_service *services,
                          size_t n)
{
    for (size_t i = 0; i < n; i++) {
        order[i] = i;
    }
    for (size_t i = 1; i < n; i++) {
        size_t v = order[i], j = i;
        while (j > 0 &&
               strcmp(services[order[j - 1]].name, services[v].name) > 0) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = v;
    }
}

int cons_place_compute(const struct cons_place_peer *peers,
                       size_t n_peers,
                       const struct cons_place_service *services,
                       size_t n_services,
                       const struct cons_place_entry *prev,
                       size_t n_prev,
                       struct cons_place_entry *out,
                       char *errmsg)
{
    char scratch[SM_ERRMSG_SIZE];
    errmsg = errmsg != NULL ? errmsg : scratch;
    int rv = validate(peers, n_peers, services, n_services, errmsg);
    if (rv != SM_OK) {
        return rv;
    }
    for (size_t i = 0; i < n_services; i++) {
        out[i] = (struct cons_place_entry){services[i].name, 0, 0};
    }
    struct plan p = {
        .services = services, .n_services = n_services, .out = out};
    p.peers = sm_calloc(n_peers > 0 ? n_peers : 1, sizeof *p.peers);
    p.order = sm_calloc(n_services > 0 ? n_services : 1, sizeof *p.order);
    if (p.peers == NULL || p.order == NULL) {
        sm_free(p.peers);
        sm_free(p.order);
        sm_errmsg_printf(errmsg, "placement: out of memory");
        return SM_ENOMEM;
    }
    for (size_t i = 0; i < n_peers; i++) {
        if (peers[i].health == CONS_HEALTH_UP) {
            p.peers[p.n_peers++].id = peers[i].id;
        }
    }
    if (p.n_peers == 0) {
        sm_free(p.peers);
        sm_free(p.order);
        sm_errmsg_printf(errmsg, "placement: no healthy peer");
        return n_services > 0 ? SM_ENOTFOUND : SM_OK;
    }
    qsort(p.peers, p.n_peers, sizeof *p.peers, cmp_load);
    order_by_name(p.order, services, n_services);
    n_prev = prev != NULL ? n_prev : 0;
    quota_init(&p.owners, n_services, p.n_peers);
    quota_init(&p.total, (p.n_peers > 1 ? 2 : 1) * n_services, p.n_peers);
    keep_owners(&p, prev, n_prev);
    new_owners(&p);
    keep_replicas(&p, prev, n_prev);
    new_replicas(&p);
    sm_free(p.peers);
    sm_free(p.order);
    return SM_OK;
}
