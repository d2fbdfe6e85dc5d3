/*
 * The cluster map (cmap.h): rules, edits, placement, slot plans, codec and
 * slot sets. Pure functions over plain data: no I/O, no locks.
 */
#include "cmap.h"

#include "uuid.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#define PORT_MAX 65535u

uint32_t mg_slot_of(const char *cube_id, size_t len)
{
    return (uint32_t)(XXH3_64bits(cube_id, len) % MG_SLOTS);
}

void mg_cmap_init(mg_cmap *m)
{
    memset(m, 0, sizeof *m);
}

/* ---- lookups ------------------------------------------------------------ */

const mg_cmap_node *mg_cmap_node_get(const mg_cmap *m, uint64_t node_id)
{
    for (uint32_t i = 0; i < m->n_nodes; i++)
        if (m->nodes[i].id == node_id)
            return &m->nodes[i];
    return NULL;
}

/* Index of group_id in m->groups (sorted by id), or -1. */
static int group_index(const mg_cmap *m, uint64_t group_id)
{
    uint32_t lo = 0, hi = m->n_groups;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (m->groups[mid].id < group_id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < m->n_groups && m->groups[lo].id == group_id ? (int)lo : -1;
}

const mg_cmap_group *mg_cmap_group_get(const mg_cmap *m, uint64_t group_id)
{
    int i = group_index(m, group_id);
    return i < 0 ? NULL : &m->groups[i];
}

mg_cmap_group *mg_cmap_group_mut(mg_cmap *m, uint64_t group_id)
{
    int i = group_index(m, group_id);
    return i < 0 ? NULL : &m->groups[i];
}

bool mg_cmap_group_has(const mg_cmap_group *g, uint64_t node_id)
{
    for (uint32_t i = 0; i < g->n_replicas; i++)
        if (g->replicas[i] == node_id)
            return true;
    return false;
}

int mg_cmap_raft_address(const mg_cmap_node *n, uint64_t group_id, char *out, size_t cap,
                         mg_error *err)
{
    if (cap < 64)
        return mg_error_set(err, MG_EINVAL, "raft address: buffer of %zu bytes (64 needed)", cap);
    if (group_id > PORT_MAX || n->raft_port + group_id > PORT_MAX)
        return mg_error_set(err, MG_EINVAL, "node %llu: raft port %u + group %llu passes 65535",
                            (unsigned long long)n->id, n->raft_port, (unsigned long long)group_id);
    int len = snprintf(out, cap, "%.*s:%u", MG_CMAP_HOST_MAX - 1, n->raft_host,
                       (unsigned)(n->raft_port + group_id));
    if (len < 0 || (size_t)len >= cap)
        return mg_error_set(err, MG_EINVAL, "raft address of node %llu does not fit",
                            (unsigned long long)n->id);
    return MG_OK;
}

uint32_t mg_cmap_group_slots(const mg_cmap *m, uint64_t group_id)
{
    uint32_t n = 0;
    for (uint32_t s = 0; s < MG_SLOTS; s++)
        n += m->slot_group[s] == group_id;
    return n;
}

uint32_t mg_cmap_node_load(const mg_cmap *m, uint64_t node_id)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < m->n_groups; i++)
        n += mg_cmap_group_has(&m->groups[i], node_id);
    return n;
}

/* ---- rules -------------------------------------------------------------- */

static bool str_ok(const char *s, size_t cap, bool nonempty)
{
    size_t len = strnlen(s, cap);
    return len < cap && (!nonempty || len > 0);
}

static int check_node(const mg_cmap_node *n, mg_error *err)
{
    if (n->id == 0)
        return mg_error_set(err, MG_EINVAL, "cluster map: node id 0");
    if (!str_ok(n->rpc, sizeof n->rpc, true) || !str_ok(n->survey, sizeof n->survey, false))
        return mg_error_set(err, MG_EINVAL, "cluster map: node %llu: bad rpc or survey URL",
                            (unsigned long long)n->id);
    if (!str_ok(n->raft_host, sizeof n->raft_host, true))
        return mg_error_set(err, MG_EINVAL, "cluster map: node %llu: bad raft host",
                            (unsigned long long)n->id);
    if (n->raft_port == 0 || n->raft_port > PORT_MAX)
        return mg_error_set(err, MG_EINVAL, "cluster map: node %llu: raft port %u",
                            (unsigned long long)n->id, n->raft_port);
    if (n->state != MG_CMAP_NODE_UP && n->state != MG_CMAP_NODE_REMOVING)
        return mg_error_set(err, MG_EINVAL, "cluster map: node %llu: state %d",
                            (unsigned long long)n->id, n->state);
    return MG_OK;
}

static int check_group(const mg_cmap *m, const mg_cmap_group *g, mg_error *err)
{
    unsigned long long gid = (unsigned long long)g->id;
    if (g->id >= MG_CMAP_GROUPS_MAX)
        return mg_error_set(err, MG_EINVAL, "cluster map: group id %llu (at most %d)", gid,
                            MG_CMAP_GROUPS_MAX - 1);
    if (g->n_replicas == 0 || g->n_replicas > MG_CMAP_REPLICAS_MAX)
        return mg_error_set(err, MG_EINVAL, "cluster map: group %llu has %u replicas", gid,
                            g->n_replicas);
    for (uint32_t r = 0; r < g->n_replicas; r++) {
        const mg_cmap_node *n = mg_cmap_node_get(m, g->replicas[r]);
        if (n == NULL)
            return mg_error_set(err, MG_EINVAL, "cluster map: group %llu: no node %llu", gid,
                                (unsigned long long)g->replicas[r]);
        for (uint32_t q = 0; q < r; q++)
            if (g->replicas[q] == g->replicas[r])
                return mg_error_set(err, MG_EINVAL,
                                    "cluster map: group %llu has two replicas on node %llu", gid,
                                    (unsigned long long)g->replicas[r]);
        if (n->raft_port + g->id > PORT_MAX)
            return mg_error_set(err, MG_EINVAL,
                                "cluster map: group %llu on node %llu: raft port passes 65535",
                                gid, (unsigned long long)n->id);
    }
    return MG_OK;
}

int mg_cmap_check(const mg_cmap *m, mg_error *err)
{
    int rc;
    if (m->n_nodes > MG_CMAP_NODES_MAX || m->n_groups > MG_CMAP_GROUPS_MAX)
        return mg_error_set(err, MG_EINVAL, "cluster map: too many nodes or groups");
    size_t id_len = strnlen(m->cluster, sizeof m->cluster);
    if (id_len != 0 && !mg_uuid_parse(m->cluster, id_len, NULL))
        return mg_error_set(err, MG_EINVAL, "cluster map: cluster id \"%.*s\" is not a UUID",
                            (int)(id_len < sizeof m->cluster ? id_len : sizeof m->cluster - 1),
                            m->cluster);
    for (uint32_t i = 0; i < m->n_nodes; i++) {
        if ((rc = check_node(&m->nodes[i], err)) != MG_OK)
            return rc;
        for (uint32_t j = 0; j < i; j++)
            if (m->nodes[j].id == m->nodes[i].id)
                return mg_error_set(err, MG_EINVAL, "cluster map: node id %llu twice",
                                    (unsigned long long)m->nodes[i].id);
    }
    for (uint32_t i = 0; i < m->n_groups; i++) {
        if (i > 0 && m->groups[i].id <= m->groups[i - 1].id)
            return mg_error_set(err, MG_EINVAL,
                                "cluster map: groups not sorted by id or group %llu twice",
                                (unsigned long long)m->groups[i].id);
        if ((rc = check_group(m, &m->groups[i], err)) != MG_OK)
            return rc;
    }
    if (mg_cmap_group_get(m, 0) == NULL)
        return mg_error_set(err, MG_EINVAL, "cluster map: no meta group (group 0)");
    for (uint32_t s = 0; s < MG_SLOTS; s++) {
        uint16_t g = m->slot_group[s];
        if (g == 0)
            return mg_error_set(err, MG_EINVAL, "cluster map: slot %u has no data group", s);
        if (mg_cmap_group_get(m, g) == NULL)
            return mg_error_set(err, MG_EINVAL, "cluster map: slot %u names missing group %u", s,
                                g);
    }
    return MG_OK;
}

/* ---- edits -------------------------------------------------------------- */

int mg_cmap_add_node(mg_cmap *m, const mg_cmap_node *n, mg_error *err)
{
    int rc = check_node(n, err);
    if (rc != MG_OK)
        return rc;
    if (mg_cmap_node_get(m, n->id) != NULL)
        return mg_error_set(err, MG_EEXIST, "node %llu is in the map already",
                            (unsigned long long)n->id);
    if (m->n_nodes >= MG_CMAP_NODES_MAX)
        return mg_error_set(err, MG_ETOOBIG, "the map holds at most %d nodes", MG_CMAP_NODES_MAX);
    m->nodes[m->n_nodes++] = *n;
    return MG_OK;
}

int mg_cmap_remove_node(mg_cmap *m, uint64_t node_id, mg_error *err)
{
    const mg_cmap_node *n = mg_cmap_node_get(m, node_id);
    if (n == NULL)
        return mg_error_set(err, MG_ENOTFOUND, "no node %llu in the map",
                            (unsigned long long)node_id);
    uint32_t load = mg_cmap_node_load(m, node_id);
    if (load > 0)
        return mg_error_set(err, MG_EINVAL, "node %llu still hosts %u replicas",
                            (unsigned long long)node_id, load);
    size_t i = (size_t)(n - m->nodes);
    memmove(&m->nodes[i], &m->nodes[i + 1], (m->n_nodes - i - 1) * sizeof m->nodes[0]);
    m->n_nodes--;
    memset(&m->nodes[m->n_nodes], 0, sizeof m->nodes[0]);
    return MG_OK;
}

int mg_cmap_add_group(mg_cmap *m, uint64_t group_id, const uint64_t *replicas, uint32_t n,
                      mg_error *err)
{
    if (group_id >= MG_CMAP_GROUPS_MAX)
        return mg_error_set(err, MG_EINVAL, "group id %llu (at most %d)",
                            (unsigned long long)group_id, MG_CMAP_GROUPS_MAX - 1);
    if (mg_cmap_group_get(m, group_id) != NULL)
        return mg_error_set(err, MG_EEXIST, "group %llu is in the map already",
                            (unsigned long long)group_id);
    if (n > MG_CMAP_REPLICAS_MAX)
        return mg_error_set(err, MG_ETOOBIG, "a group has at most %d replicas",
                            MG_CMAP_REPLICAS_MAX);
    if (n == 0)
        return mg_error_set(err, MG_EINVAL, "group %llu without replicas",
                            (unsigned long long)group_id);
    if (m->n_groups >= MG_CMAP_GROUPS_MAX)
        return mg_error_set(err, MG_ETOOBIG, "the map holds at most %d groups",
                            MG_CMAP_GROUPS_MAX);
    mg_cmap_group g = {.id = group_id, .n_replicas = n};
    memcpy(g.replicas, replicas, n * sizeof *replicas);
    int rc = check_group(m, &g, err);
    if (rc != MG_OK)
        return rc;
    uint32_t at = 0;
    while (at < m->n_groups && m->groups[at].id < group_id)
        at++;
    memmove(&m->groups[at + 1], &m->groups[at], (m->n_groups - at) * sizeof m->groups[0]);
    m->groups[at] = g;
    m->n_groups++;
    return MG_OK;
}

int mg_cmap_add_replica(mg_cmap *m, uint64_t group_id, uint64_t node_id, mg_error *err)
{
    mg_cmap_group *g = mg_cmap_group_mut(m, group_id);
    if (g == NULL)
        return mg_error_set(err, MG_ENOTFOUND, "no group %llu in the map",
                            (unsigned long long)group_id);
    const mg_cmap_node *n = mg_cmap_node_get(m, node_id);
    if (n == NULL)
        return mg_error_set(err, MG_ENOTFOUND, "no node %llu in the map",
                            (unsigned long long)node_id);
    if (mg_cmap_group_has(g, node_id))
        return mg_error_set(err, MG_EEXIST, "group %llu has a replica on node %llu already",
                            (unsigned long long)group_id, (unsigned long long)node_id);
    if (g->n_replicas >= MG_CMAP_REPLICAS_MAX)
        return mg_error_set(err, MG_ETOOBIG, "a group has at most %d replicas",
                            MG_CMAP_REPLICAS_MAX);
    if (n->raft_port + group_id > PORT_MAX)
        return mg_error_set(err, MG_EINVAL, "node %llu: raft port of group %llu passes 65535",
                            (unsigned long long)node_id, (unsigned long long)group_id);
    g->replicas[g->n_replicas++] = node_id;
    return MG_OK;
}

int mg_cmap_remove_replica(mg_cmap *m, uint64_t group_id, uint64_t node_id, mg_error *err)
{
    mg_cmap_group *g = mg_cmap_group_mut(m, group_id);
    if (g == NULL)
        return mg_error_set(err, MG_ENOTFOUND, "no group %llu in the map",
                            (unsigned long long)group_id);
    uint32_t i = 0;
    while (i < g->n_replicas && g->replicas[i] != node_id)
        i++;
    if (i == g->n_replicas)
        return mg_error_set(err, MG_ENOTFOUND, "group %llu has no replica on node %llu",
                            (unsigned long long)group_id, (unsigned long long)node_id);
    if (g->n_replicas == 1)
        return mg_error_set(err, MG_EINVAL, "node %llu holds the last replica of group %llu",
                            (unsigned long long)node_id, (unsigned long long)group_id);
    memmove(&g->replicas[i], &g->replicas[i + 1], (g->n_replicas - i - 1) * sizeof g->replicas[0]);
    g->replicas[--g->n_replicas] = 0;
    return MG_OK;
}

/* ---- placement ---------------------------------------------------------- */

struct candidate {
    uint64_t id;
    uint32_t load;
};

static int candidate_cmp(const void *a, const void *b)
{
    const struct candidate *x = a, *y = b;
    if (x->load != y->load)
        return x->load < y->load ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

int mg_cmap_place(const mg_cmap *m, uint32_t n, const uint64_t *exclude, size_t n_exclude,
                  uint64_t *out, mg_error *err)
{
    struct candidate c[MG_CMAP_NODES_MAX];
    uint32_t nc = 0;
    for (uint32_t i = 0; i < m->n_nodes && i < MG_CMAP_NODES_MAX; i++) {
        const mg_cmap_node *node = &m->nodes[i];
        bool excluded = node->state != MG_CMAP_NODE_UP;
        for (size_t k = 0; k < n_exclude && !excluded; k++)
            excluded = exclude[k] == node->id;
        if (!excluded)
            c[nc++] = (struct candidate){node->id, mg_cmap_node_load(m, node->id)};
    }
    if (n == 0 || n > nc)
        return mg_error_set(err, MG_EINVAL, "cannot place %u replicas on %u eligible nodes", n,
                            nc);
    qsort(c, nc, sizeof c[0], candidate_cmp);
    for (uint32_t i = 0; i < n; i++)
        out[i] = c[i].id;
    return MG_OK;
}

int mg_cmap_initial(mg_cmap *m, const mg_cmap_node *nodes, uint32_t n_nodes, uint32_t n_groups,
                    uint32_t replicas, mg_error *err)
{
    if (n_nodes == 0 || n_nodes > MG_CMAP_NODES_MAX)
        return mg_error_set(err, MG_EINVAL, "init: %u nodes (1-%d)", n_nodes, MG_CMAP_NODES_MAX);
    if (replicas == 0 || replicas > MG_CMAP_REPLICAS_MAX || replicas > n_nodes)
        return mg_error_set(err, MG_EINVAL, "init: %u replicas per group on %u nodes (1-%d)",
                            replicas, n_nodes, MG_CMAP_REPLICAS_MAX);
    if (n_groups == 0 || n_groups >= MG_CMAP_GROUPS_MAX)
        return mg_error_set(err, MG_EINVAL, "init: %u data groups (1-%d)", n_groups,
                            MG_CMAP_GROUPS_MAX - 1);
    mg_cmap_init(m);
    int rc;
    for (uint32_t i = 0; i < n_nodes; i++) {
        mg_cmap_node n = nodes[i];
        n.state = MG_CMAP_NODE_UP;
        if ((rc = mg_cmap_add_node(m, &n, err)) != MG_OK)
            goto err_clear;
    }
    /* Replica k of the whole cluster (group g's j-th is k = g·R + j) goes to
     * node k mod n: loads differ by at most one, and R ≤ n consecutive
     * nodes are distinct. */
    for (uint32_t g = 0; g <= n_groups; g++) {
        uint64_t r[MG_CMAP_REPLICAS_MAX];
        for (uint32_t j = 0; j < replicas; j++)
            r[j] = nodes[((uint64_t)g * replicas + j) % n_nodes].id;
        if ((rc = mg_cmap_add_group(m, g, r, replicas, err)) != MG_OK)
            goto err_clear;
    }
    for (uint32_t g = 1; g <= n_groups; g++) {
        uint32_t first = (g - 1) * MG_SLOTS / n_groups, end = g * MG_SLOTS / n_groups;
        for (uint32_t s = first; s < end; s++)
            m->slot_group[s] = (uint16_t)g;
    }
    m->epoch = 1;
    if ((rc = mg_cmap_check(m, err)) != MG_OK)
        goto err_clear;
    return MG_OK;

err_clear:
    mg_cmap_init(m);
    return mg_error_wrap(err, rc, "init");
}

/* ---- rebalancing plans -------------------------------------------------- */

struct target {
    uint64_t id;
    uint32_t have;  /* slots owned now */
    uint32_t quota; /* slots it ends with */
    uint32_t order; /* position in the caller's list */
};

/* Most slots first (they keep the larger quotas), then the caller's order. */
static int target_by_have(const void *a, const void *b)
{
    const struct target *x = a, *y = b;
    if (x->have != y->have)
        return x->have > y->have ? -1 : 1;
    return x->order < y->order ? -1 : x->order > y->order;
}

int mg_cmap_plan_even(const mg_cmap *m, const uint64_t *targets, size_t n_targets,
                      uint16_t out[MG_SLOTS], mg_error *err)
{
    if (n_targets == 0 || n_targets >= MG_CMAP_GROUPS_MAX)
        return mg_error_set(err, MG_EINVAL, "rebalance: %zu target groups", n_targets);
    struct target t[MG_CMAP_GROUPS_MAX];
    for (size_t i = 0; i < n_targets; i++) {
        if (targets[i] == 0 || mg_cmap_group_get(m, targets[i]) == NULL)
            return mg_error_set(err, MG_EINVAL, "rebalance: %llu is not a data group",
                                (unsigned long long)targets[i]);
        for (size_t j = 0; j < i; j++)
            if (targets[j] == targets[i])
                return mg_error_set(err, MG_EINVAL, "rebalance: group %llu named twice",
                                    (unsigned long long)targets[i]);
        t[i] = (struct target){.id = targets[i],
                               .have = mg_cmap_group_slots(m, targets[i]),
                               .order = (uint32_t)i};
    }
    qsort(t, n_targets, sizeof t[0], target_by_have);
    uint32_t base = MG_SLOTS / (uint32_t)n_targets, extra = MG_SLOTS % (uint32_t)n_targets;
    for (size_t i = 0; i < n_targets; i++)
        t[i].quota = base + (i < extra ? 1 : 0);

    /* Who gives up what: non-targets everything, targets over quota their
     * highest slots (what stays is their lowest ones, runs kept whole). */
    bool give[MG_SLOTS];
    memset(give, 0, sizeof give);
    for (uint32_t s = 0; s < MG_SLOTS; s++) {
        bool is_target = false;
        for (size_t i = 0; i < n_targets && !is_target; i++)
            is_target = t[i].id == m->slot_group[s];
        give[s] = !is_target;
    }
    for (size_t i = 0; i < n_targets; i++) {
        uint32_t excess = t[i].have > t[i].quota ? t[i].have - t[i].quota : 0;
        for (uint32_t s = MG_SLOTS; s-- > 0 && excess > 0;) {
            if (m->slot_group[s] == t[i].id) {
                give[s] = true;
                excess--;
            }
        }
    }
    /* The freed slots, in slot order, fill the deficits in the caller's
     * order of targets. */
    struct target byorder[MG_CMAP_GROUPS_MAX];
    for (size_t i = 0; i < n_targets; i++)
        byorder[t[i].order] = t[i];
    size_t k = 0;
    uint32_t room = byorder[0].quota > byorder[0].have ? byorder[0].quota - byorder[0].have : 0;
    for (uint32_t s = 0; s < MG_SLOTS; s++) {
        out[s] = 0;
        if (!give[s])
            continue;
        while (room == 0 && ++k < n_targets)
            room = byorder[k].quota > byorder[k].have ? byorder[k].quota - byorder[k].have : 0;
        if (k >= n_targets)
            return mg_error_set(err, MG_EINTERNAL, "rebalance: slot %u has nowhere to go", s);
        out[s] = (uint16_t)byorder[k].id;
        room--;
    }
    return MG_OK;
}

/* ---- codec -------------------------------------------------------------- */

static const char *const state_names[] = {[MG_CMAP_NODE_UP] = "up",
                                          [MG_CMAP_NODE_REMOVING] = "removing"};

static int pack_str_bounded(msgpack_packer *pk, const char *s, size_t cap)
{
    return mg_mp_pack_strn(pk, s, strnlen(s, cap));
}

int mg_cmap_pack(msgpack_packer *pk, const mg_cmap *m)
{
    /* No "cluster" key without an id: such maps encode as older builds wrote
     * them. */
    bool has_id = m->cluster[0] != '\0';
    int rc = msgpack_pack_map(pk, has_id ? 6 : 5);
    rc |= mg_mp_pack_cstr(pk, "v") | msgpack_pack_uint32(pk, MG_CMAP_VERSION);
    rc |= mg_mp_pack_cstr(pk, "epoch") | msgpack_pack_uint64(pk, m->epoch);
    if (has_id)
        rc |= mg_mp_pack_cstr(pk, "cluster") | pack_str_bounded(pk, m->cluster, sizeof m->cluster);
    rc |= mg_mp_pack_cstr(pk, "nodes") | msgpack_pack_array(pk, m->n_nodes);
    for (uint32_t i = 0; i < m->n_nodes && rc == 0; i++) {
        const mg_cmap_node *n = &m->nodes[i];
        int st = n->state == MG_CMAP_NODE_REMOVING ? MG_CMAP_NODE_REMOVING : MG_CMAP_NODE_UP;
        rc |= msgpack_pack_map(pk, 6);
        rc |= mg_mp_pack_cstr(pk, "id") | msgpack_pack_uint64(pk, n->id);
        rc |= mg_mp_pack_cstr(pk, "rpc") | pack_str_bounded(pk, n->rpc, sizeof n->rpc);
        rc |= mg_mp_pack_cstr(pk, "survey") | pack_str_bounded(pk, n->survey, sizeof n->survey);
        rc |= mg_mp_pack_cstr(pk, "raft_host") |
              pack_str_bounded(pk, n->raft_host, sizeof n->raft_host);
        rc |= mg_mp_pack_cstr(pk, "raft_port") | msgpack_pack_uint32(pk, n->raft_port);
        rc |= mg_mp_pack_cstr(pk, "state") | mg_mp_pack_cstr(pk, state_names[st]);
    }
    rc |= mg_mp_pack_cstr(pk, "groups") | msgpack_pack_array(pk, m->n_groups);
    for (uint32_t i = 0; i < m->n_groups && rc == 0; i++) {
        const mg_cmap_group *g = &m->groups[i];
        uint32_t nr = g->n_replicas > MG_CMAP_REPLICAS_MAX ? MG_CMAP_REPLICAS_MAX : g->n_replicas;
        rc |= msgpack_pack_map(pk, 2);
        rc |= mg_mp_pack_cstr(pk, "id") | msgpack_pack_uint64(pk, g->id);
        rc |= mg_mp_pack_cstr(pk, "replicas") | msgpack_pack_array(pk, nr);
        for (uint32_t r = 0; r < nr; r++)
            rc |= msgpack_pack_uint64(pk, g->replicas[r]);
    }
    /* Runs of owned slots (group 0 = unowned, left out). */
    uint32_t n_runs = 0;
    for (uint32_t s = 0; s < MG_SLOTS; s++)
        if (m->slot_group[s] != 0 && (s == 0 || m->slot_group[s - 1] != m->slot_group[s]))
            n_runs++;
    rc |= mg_mp_pack_cstr(pk, "slots") | msgpack_pack_array(pk, n_runs);
    for (uint32_t s = 0; s < MG_SLOTS && rc == 0;) {
        uint32_t e = s;
        while (e + 1 < MG_SLOTS && m->slot_group[e + 1] == m->slot_group[s])
            e++;
        if (m->slot_group[s] != 0) {
            rc |= msgpack_pack_array(pk, 3) | msgpack_pack_uint32(pk, s) |
                  msgpack_pack_uint32(pk, e) | msgpack_pack_uint32(pk, m->slot_group[s]);
        }
        s = e + 1;
    }
    return rc == 0 ? MG_OK : MG_ENOMEM;
}

int mg_cmap_encode(const mg_cmap *m, void **buf, size_t *len, mg_error *err)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    if (mg_cmap_pack(&pk, m) != MG_OK || sb.size == 0) {
        msgpack_sbuffer_destroy(&sb);
        return mg_error_set(err, MG_ENOMEM, "out of memory encoding the cluster map");
    }
    *len = sb.size;
    *buf = msgpack_sbuffer_release(&sb);
    return MG_OK;
}

static int corrupt(mg_error *err, const char *what)
{
    return mg_error_set(err, MG_ECORRUPT, "cluster map: malformed %s", what);
}

#define KEY_IS(lit) (klen == sizeof(lit) - 1 && memcmp(key, lit, klen) == 0)

static int read_node(mg_mp_reader *r, mg_cmap_node *n, mg_error *err)
{
    uint32_t nf;
    if (mg_mp_read_map(r, &nf) != MG_OK)
        return corrupt(err, "node");
    for (uint32_t f = 0; f < nf; f++) {
        const char *key;
        uint32_t klen;
        int rc;
        if (mg_mp_read_str(r, &key, &klen) != MG_OK)
            return corrupt(err, "node key");
        if (KEY_IS("id")) {
            rc = mg_mp_read_u64(r, &n->id);
        } else if (KEY_IS("rpc")) {
            rc = mg_mp_read_strcpy(r, n->rpc, sizeof n->rpc);
        } else if (KEY_IS("survey")) {
            rc = mg_mp_read_strcpy(r, n->survey, sizeof n->survey);
        } else if (KEY_IS("raft_host")) {
            rc = mg_mp_read_strcpy(r, n->raft_host, sizeof n->raft_host);
        } else if (KEY_IS("raft_port")) {
            rc = mg_mp_read_u32(r, &n->raft_port);
        } else if (KEY_IS("state")) {
            const char *s;
            uint32_t sl;
            rc = mg_mp_read_str(r, &s, &sl);
            if (rc == MG_OK && sl == 2 && memcmp(s, "up", 2) == 0)
                n->state = MG_CMAP_NODE_UP;
            else if (rc == MG_OK && sl == 8 && memcmp(s, "removing", 8) == 0)
                n->state = MG_CMAP_NODE_REMOVING;
            else
                rc = MG_ECORRUPT;
        } else {
            rc = mg_mp_skip(r);
        }
        if (rc != MG_OK)
            return corrupt(err, "node field");
    }
    if (n->id == 0)
        return corrupt(err, "node (no id)");
    return MG_OK;
}

static int read_group(mg_mp_reader *r, mg_cmap_group *g, mg_error *err)
{
    uint32_t nf;
    bool have_id = false;
    if (mg_mp_read_map(r, &nf) != MG_OK)
        return corrupt(err, "group");
    for (uint32_t f = 0; f < nf; f++) {
        const char *key;
        uint32_t klen;
        if (mg_mp_read_str(r, &key, &klen) != MG_OK)
            return corrupt(err, "group key");
        if (KEY_IS("id")) {
            if (mg_mp_read_u64(r, &g->id) != MG_OK || g->id >= MG_CMAP_GROUPS_MAX)
                return corrupt(err, "group id");
            have_id = true;
        } else if (KEY_IS("replicas")) {
            uint32_t nr;
            if (mg_mp_read_array(r, &nr) != MG_OK || nr > MG_CMAP_REPLICAS_MAX)
                return corrupt(err, "group replicas");
            for (uint32_t i = 0; i < nr; i++)
                if (mg_mp_read_u64(r, &g->replicas[i]) != MG_OK)
                    return corrupt(err, "group replica");
            g->n_replicas = nr;
        } else if (mg_mp_skip(r) != MG_OK) {
            return corrupt(err, "group field");
        }
    }
    return have_id ? MG_OK : corrupt(err, "group (no id)");
}

static int read_slots(mg_mp_reader *r, mg_cmap *m, mg_error *err)
{
    uint32_t n;
    if (mg_mp_read_array(r, &n) != MG_OK || n > MG_SLOTS)
        return corrupt(err, "slots");
    uint32_t next = 0; /* runs are in slot order and do not overlap */
    for (uint32_t i = 0; i < n; i++) {
        uint32_t len, first, last, g;
        if (mg_mp_read_array(r, &len) != MG_OK || len != 3 || mg_mp_read_u32(r, &first) ||
            mg_mp_read_u32(r, &last) || mg_mp_read_u32(r, &g))
            return corrupt(err, "slot run");
        if (first < next || last < first || last >= MG_SLOTS || g == 0 ||
            g >= MG_CMAP_GROUPS_MAX)
            return corrupt(err, "slot run (out of order or range)");
        for (uint32_t s = first; s <= last; s++)
            m->slot_group[s] = (uint16_t)g;
        next = last + 1;
    }
    return MG_OK;
}

static int group_cmp(const void *a, const void *b)
{
    const mg_cmap_group *x = a, *y = b;
    return x->id < y->id ? -1 : x->id > y->id;
}

int mg_cmap_decode(const void *buf, size_t len, mg_cmap *out, mg_error *err)
{
    mg_mp_reader r;
    uint32_t nf, v = 0;
    bool have_nodes = false, have_groups = false, have_slots = false;
    int rc;
    mg_cmap_init(out);
    mg_mp_reader_init(&r, buf, len);
    if (mg_mp_read_map(&r, &nf) != MG_OK) {
        rc = corrupt(err, "map (not a msgpack map)");
        goto err_clear;
    }
    for (uint32_t f = 0; f < nf; f++) {
        const char *key;
        uint32_t klen, n;
        if (mg_mp_read_str(&r, &key, &klen) != MG_OK) {
            rc = corrupt(err, "key");
            goto err_clear;
        }
        rc = MG_OK;
        if (KEY_IS("v")) {
            if (mg_mp_read_u32(&r, &v) != MG_OK || v == 0)
                rc = corrupt(err, "version");
        } else if (KEY_IS("epoch")) {
            if (mg_mp_read_u64(&r, &out->epoch) != MG_OK)
                rc = corrupt(err, "epoch");
        } else if (KEY_IS("cluster")) {
            if (mg_mp_peek(&r) == MG_MP_NIL)
                rc = mg_mp_read_nil(&r) == MG_OK ? MG_OK : corrupt(err, "cluster id");
            else if (mg_mp_read_strcpy(&r, out->cluster, sizeof out->cluster) != MG_OK)
                rc = corrupt(err, "cluster id");
        } else if (KEY_IS("nodes")) {
            if (have_nodes || mg_mp_read_array(&r, &n) != MG_OK || n > MG_CMAP_NODES_MAX) {
                rc = corrupt(err, "nodes");
            } else {
                for (uint32_t i = 0; i < n && rc == MG_OK; i++)
                    rc = read_node(&r, &out->nodes[i], err);
                out->n_nodes = n;
                have_nodes = true;
            }
        } else if (KEY_IS("groups")) {
            if (have_groups || mg_mp_read_array(&r, &n) != MG_OK || n > MG_CMAP_GROUPS_MAX) {
                rc = corrupt(err, "groups");
            } else {
                for (uint32_t i = 0; i < n && rc == MG_OK; i++)
                    rc = read_group(&r, &out->groups[i], err);
                out->n_groups = n;
                have_groups = true;
            }
        } else if (KEY_IS("slots")) {
            rc = have_slots ? corrupt(err, "slots (given twice)") : read_slots(&r, out, err);
            have_slots = true;
        } else if (mg_mp_skip(&r) != MG_OK) {
            rc = corrupt(err, "value");
        }
        if (rc != MG_OK)
            goto err_clear;
    }
    if (mg_mp_remaining(&r) != 0) {
        rc = corrupt(err, "map (trailing bytes)");
        goto err_clear;
    }
    if (v == 0) {
        rc = corrupt(err, "map (no version)");
        goto err_clear;
    }
    if (v > MG_CMAP_VERSION) {
        rc = mg_error_set(err, MG_EVERSION, "cluster map version %u (this build reads up to %d)",
                          v, MG_CMAP_VERSION);
        goto err_clear;
    }
    qsort(out->groups, out->n_groups, sizeof out->groups[0], group_cmp);
    if (out->epoch != 0 && (rc = mg_cmap_check(out, err)) != MG_OK)
        goto err_clear;
    return MG_OK;

err_clear:
    mg_cmap_init(out);
    return rc;
}

#undef KEY_IS

/* ---- slot sets ---------------------------------------------------------- */

uint32_t mg_slotset_count(const mg_slotset *s)
{
    uint32_t n = 0;
    for (size_t i = 0; i < MG_SLOTS / 64; i++)
        n += (uint32_t)__builtin_popcountll(s->w[i]);
    return n;
}

void mg_cmap_group_slotset(const mg_cmap *m, uint64_t group_id, mg_slotset *out)
{
    memset(out, 0, sizeof *out);
    for (uint32_t s = 0; s < MG_SLOTS; s++)
        if (m->slot_group[s] == group_id)
            mg_slotset_add(out, s);
}

int mg_slotset_format(const mg_slotset *s, char *buf, size_t cap)
{
    if (cap == 0)
        return MG_ETOOBIG;
    size_t used = 0;
    buf[0] = '\0';
    for (uint32_t a = 0; a < MG_SLOTS;) {
        if (!mg_slotset_has(s, a)) {
            a++;
            continue;
        }
        uint32_t b = a;
        while (b + 1 < MG_SLOTS && mg_slotset_has(s, b + 1))
            b++;
        int n = a == b ? snprintf(buf + used, cap - used, "%s%u", used ? "," : "", a)
                       : snprintf(buf + used, cap - used, "%s%u-%u", used ? "," : "", a, b);
        if (n < 0 || (size_t)n >= cap - used) {
            buf[used] = '\0';
            return MG_ETOOBIG;
        }
        used += (size_t)n;
        a = b + 1;
    }
    return MG_OK;
}

/* A slot number of [p, end): digits only, < MG_SLOTS. */
static bool parse_slot(const char *p, const char *end, uint32_t *out)
{
    if (p == end || end - p > 4)
        return false;
    uint32_t v = 0;
    for (; p < end; p++) {
        if (*p < '0' || *p > '9')
            return false;
        v = v * 10 + (uint32_t)(*p - '0');
    }
    *out = v;
    return v < MG_SLOTS;
}

int mg_slotset_parse(const char *text, mg_slotset *out, mg_error *err)
{
    mg_slotset set;
    memset(&set, 0, sizeof set);
    if (text == NULL)
        return mg_error_set(err, MG_EINVAL, "slots: none given");
    const char *p = text;
    while (*p == ' ')
        p++;
    if (*p == '\0') {
        *out = set;
        return MG_OK;
    }
    for (;;) {
        const char *comma = strchr(p, ',');
        const char *end = comma != NULL ? comma : p + strlen(p);
        const char *a = p, *b = end;
        while (a < b && *a == ' ')
            a++;
        while (b > a && b[-1] == ' ')
            b--;
        const char *dash = memchr(a, '-', (size_t)(b - a));
        uint32_t lo, hi;
        bool ok = dash != NULL ? parse_slot(a, dash, &lo) && parse_slot(dash + 1, b, &hi) && lo <= hi
                               : parse_slot(a, b, &lo);
        if (!ok)
            return mg_error_set(err, MG_EINVAL, "slots: \"%.*s\" is not a slot or range 0-%d",
                                (int)(b - a > 40 ? 40 : b - a), a, MG_SLOTS - 1);
        if (dash == NULL)
            hi = lo;
        for (uint32_t s = lo; s <= hi; s++)
            mg_slotset_add(&set, s);
        if (comma == NULL)
            break;
        p = comma + 1;
    }
    *out = set;
    return MG_OK;
}
