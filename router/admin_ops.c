/*
 * Admin API: the operations that change the cluster's shape — init,
 * add-node, rebalance — and mg_router_init_cluster (router/router.h); the
 * operations on a group's members and leadership are in admin_member.c.
 * Steps as in docs/ARCHITECTURE.md "Cluster: meta group, slot ownership,
 * membership"; each one checks whether it was already done, so an operation
 * that failed can be rerun.
 */
#include "admin.h"

#include "../lib/log.h"
#include "../lib/uuid.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- init ------------------------------------------------------------------ */

/* Orders each group's replicas so that the first ones — the leaders init
 * asks for (admin_balance_leaders) and the router's first guess — spread
 * over the nodes: group by group, the replica put first is, in placement
 * order, the first of those on a node that is first in the fewest groups so
 * far. Round-robin placement alone does not spread them when the replica
 * count shares a factor with the node count (3 replicas on 3 nodes put every
 * group's first replica on the first node). Rotating keeps the placement
 * order otherwise. */
static void spread_first_replicas(mg_cmap *m)
{
    uint32_t firsts[MG_CMAP_NODES_MAX] = {0}; /* by index in m->nodes */
    for (uint32_t gi = 0; gi < m->n_groups; gi++) {
        mg_cmap_group *g = &m->groups[gi];
        uint32_t best = 0, best_count = UINT32_MAX;
        for (uint32_t k = 0; k < g->n_replicas; k++) {
            size_t ni = (size_t)(mg_cmap_node_get(m, g->replicas[k]) - m->nodes);
            if (firsts[ni] < best_count) {
                best = k;
                best_count = firsts[ni];
            }
        }
        uint64_t rotated[MG_CMAP_REPLICAS_MAX];
        for (uint32_t k = 0; k < g->n_replicas; k++)
            rotated[k] = g->replicas[(best + k) % g->n_replicas];
        memcpy(g->replicas, rotated, g->n_replicas * sizeof *rotated);
        firsts[mg_cmap_node_get(m, g->replicas[0]) - m->nodes]++;
    }
}

static bool map_has_rpc(const mg_cmap *m, const char *rpc)
{
    for (uint32_t i = 0; i < m->n_nodes; i++)
        if (strcmp(m->nodes[i].rpc, rpc) == 0)
            return true;
    return false;
}

/* Decides the cluster id of the map init is about to create (m, placed, no
 * id yet) from what each of its nodes says about itself (NODE_INFO), and
 * sets m->cluster; nothing is changed anywhere. Refused with MG_EEXIST:
 *   - a node claimed by a cluster whose meta group may live on nodes that
 *     are not m's (a hint names one, or it has no hints): that cluster may
 *     hold a map this router cannot see — the node is part of a live
 *     cluster (a router seeded only with nodes that host no meta replica
 *     sees epoch 0);
 *   - nodes claimed by two different clusters;
 *   - a node that hosts replicas and belongs to no cluster (data of another
 *     cluster from before cluster ids, or anything else), unless
 *     allow_hosted (serve: its node opens its groups before init).
 * Otherwise the id the claimed nodes share — every hint of it names one of
 * m's nodes, none of which holds a map (the caller read none), so it is an
 * init that stopped half way on these nodes, and re-running it carries on
 * under the same id (its replicas included) — or a new one. */
static int init_identity(mg_router *r, mg_cmap *m, bool allow_hosted, mg_error *err)
{
    admin_member *info = calloc(m->n_nodes, sizeof *info);
    if (info == NULL)
        return mg_error_set(err, MG_ENOMEM, "out of memory");
    int rc = MG_OK;
    const char *adopt = NULL;
    uint64_t adopt_node = 0;
    for (uint32_t i = 0; i < m->n_nodes && rc == MG_OK; i++) {
        uint64_t id = m->nodes[i].id;
        rc = admin_node_member(r, id, NULL, NULL, 0, &info[i], err);
        if (rc != MG_OK) {
            mg_error_wrap(err, rc, "asking node %llu which cluster it belongs to",
                          (unsigned long long)id);
            break;
        }
        const admin_member *mi = &info[i];
        if (mi->cluster[0] == '\0') {
            if (mi->n_groups > 0 && !allow_hosted)
                rc = mg_error_set(err, MG_EEXIST,
                                  "node %llu already hosts replicas (groups %s) and belongs to "
                                  "no cluster: data from another cluster? (docs/OPERATIONS.md "
                                  "\"Initializing\")",
                                  (unsigned long long)id, mi->groups);
            continue;
        }
        if (adopt != NULL && strcmp(adopt, mi->cluster) != 0) {
            rc = mg_error_set(err, MG_EEXIST,
                              "node %llu already belongs to cluster %s (and node %llu to "
                              "cluster %s)",
                              (unsigned long long)id, mi->cluster, (unsigned long long)adopt_node,
                              adopt);
            break;
        }
        adopt = mi->cluster;
        adopt_node = id;
        if (mi->n_meta == 0)
            rc = mg_error_set(err, MG_EEXIST,
                              "node %llu already belongs to cluster %s (its meta group is "
                              "unknown)",
                              (unsigned long long)id, mi->cluster);
        for (uint32_t k = 0; k < mi->n_meta && rc == MG_OK; k++)
            if (!map_has_rpc(m, mi->meta[k]))
                rc = mg_error_set(err, MG_EEXIST,
                                  "node %llu already belongs to cluster %s (its meta group is "
                                  "on %s, not among the nodes of this init: point the router "
                                  "at that cluster's nodes)",
                                  (unsigned long long)id, mi->cluster, mi->meta[k]);
    }
    if (rc == MG_OK && adopt != NULL) {
        snprintf(m->cluster, sizeof m->cluster, "%s", adopt);
        mg_info("admin.init",
                "cluster %s: resuming an init that stopped half way (node %llu is claimed, no map "
                "yet)",
                m->cluster, (unsigned long long)adopt_node);
    } else if (rc == MG_OK) {
        uint8_t raw[16];
        mg_uuid_v4(raw);
        mg_uuid_format(raw, m->cluster);
    }
    free(info);
    return rc;
}

/* Claims every node of m for m's cluster, with the meta group's nodes as
 * hints, before anything is opened on them. */
static int claim_nodes(mg_router *r, const mg_cmap *m, mg_error *err)
{
    const char *meta[MG_CMAP_REPLICAS_MAX];
    uint32_t n_meta = admin_meta_urls(m, meta);
    for (uint32_t i = 0; i < m->n_nodes; i++) {
        admin_member mi;
        int rc = admin_node_member(r, m->nodes[i].id, m->cluster, meta, n_meta, &mi, err);
        if (rc != MG_OK)
            return mg_error_wrap(err, rc,
                                 "claiming node %llu for cluster %s (init stopped; nodes "
                                 "claimed so far stay claimed: re-run init with the same nodes)",
                                 (unsigned long long)m->nodes[i].id, m->cluster);
    }
    return MG_OK;
}

/* Creates the cluster on the nodes at `urls`. *already is set when a map
 * exists (MG_EEXIST "cluster already initialized"). *out gets the map.
 * allow_hosted: see init_identity. */
static int cluster_init(mg_router *r, uint32_t groups, uint32_t replicas, const char *const *urls,
                        size_t n_urls, bool allow_hosted, mg_cmap *out, bool *already,
                        mg_error *err)
{
    *already = false;
    if (n_urls == 0)
        return mg_error_set(err, MG_EINVAL, "no nodes: give \"nodes\" or start the router "
                                            "with seeds");
    if (n_urls > MG_CMAP_NODES_MAX)
        return mg_error_set(err, MG_EINVAL, "at most %d nodes", MG_CMAP_NODES_MAX);
    mg_cmap_node *nodes = calloc(n_urls, sizeof *nodes);
    if (nodes == NULL)
        return mg_error_set(err, MG_ENOMEM, "out of memory");
    int rc = MG_OK;
    for (size_t i = 0; i < n_urls && rc == MG_OK; i++) {
        rc = mg_client_probe(r->client, urls[i], 2000, &nodes[i], err);
        if (rc != MG_OK) {
            mg_error_wrap(err, MG_EUNAVAIL, "node at %s does not answer", urls[i]);
            rc = MG_EUNAVAIL;
        }
        for (size_t j = 0; j < i && rc == MG_OK; j++)
            if (nodes[j].id == nodes[i].id)
                rc = mg_error_set(err, MG_EINVAL, "%s and %s are the same node (id %llu)",
                                  urls[j], urls[i], (unsigned long long)nodes[i].id);
    }
    if (rc != MG_OK)
        goto done;
    /* A meta group that answers with a map: initialized already. None that
     * answers and no map known is expected before the first init. */
    if ((rc = admin_map_read(r, out, err)) != MG_OK)
        goto done; /* a map is known but the meta group does not answer */
    if (out->epoch > 0) {
        *already = true;
        rc = mg_error_set(err, MG_EEXIST, "cluster already initialized (epoch %llu)",
                          (unsigned long long)out->epoch);
        goto done;
    }
    if (replicas > n_urls) {
        rc = mg_error_set(err, MG_EEXIST, "cannot place %u replicas on %zu nodes", replicas,
                          n_urls);
        goto done;
    }
    if ((rc = mg_cmap_initial(out, nodes, (uint32_t)n_urls, groups, replicas, err)) != MG_OK)
        goto done;
    spread_first_replicas(out);
    /* Nothing is created before every node is known to be free for it. */
    if ((rc = init_identity(r, out, allow_hosted, err)) != MG_OK ||
        (rc = claim_nodes(r, out, err)) != MG_OK)
        goto done;
    for (uint32_t gi = 0; gi < out->n_groups && rc == MG_OK; gi++) {
        const mg_cmap_group *g = &out->groups[gi];
        for (uint32_t k = 0; k < g->n_replicas && rc == MG_OK; k++)
            rc = admin_group_open(r, out, g->id, g->replicas[k], g->replicas, g->n_replicas,
                                  err);
    }
    if (rc != MG_OK)
        goto done;
    const mg_cmap_group *meta = mg_cmap_group_get(out, 0);
    uint64_t leader;
    if ((rc = admin_find_leader(r, meta->replicas, meta->n_replicas, 0, ADMIN_STEP_MS, &leader,
                                err)) != MG_OK)
        goto done;
    rc = admin_map_put(r, meta->replicas, meta->n_replicas, 0, out, err);
    if (rc == MG_EBUSY) {
        mg_cmap *now = malloc(sizeof *now);
        if (now != NULL && admin_map_read(r, now, NULL) == MG_OK && now->epoch > 0) {
            *already = true;
            rc = mg_error_set(err, MG_EEXIST, "cluster already initialized (epoch %llu)",
                              (unsigned long long)now->epoch);
        }
        free(now);
    }
    if (rc != MG_OK)
        goto done;
    for (uint32_t gi = 0; gi < out->n_groups && rc == MG_OK; gi++) {
        const mg_cmap_group *g = &out->groups[gi];
        if (g->id == 0)
            continue;
        mg_slotset owned;
        mg_cmap_group_slotset(out, g->id, &owned);
        rc = admin_slots_set(r, out, g->id, g->replicas, g->n_replicas, &owned, err);
    }
    if (rc != MG_OK)
        goto done;
    /* Each group led by its first replica, so that one lost node does not
     * take the leaders of most groups with it. Best effort: a group whose
     * transfer fails keeps the leader it elected. */
    admin_balance_leaders(r, out, true, NULL, NULL);
    mg_info("admin.init", "cluster %s initialized: %u nodes, %u data groups, %u replicas",
            out->cluster, out->n_nodes, groups, replicas);
done:
    free(nodes);
    return rc;
}

int mg_router_init_cluster(mg_router *r, uint32_t groups, uint32_t replicas, bool *created,
                           mg_error *err)
{
    *created = false;
    mg_cmap *m = malloc(sizeof *m);
    if (m == NULL)
        return mg_error_set(err, MG_ENOMEM, "out of memory");
    admin_lock_wait();
    bool already = false;
    /* serve's node hosts its groups before init (opened from its
     * configuration): they are the ones init places there. */
    int rc = cluster_init(r, groups, replicas, (const char *const *)r->seeds, r->n_seeds, true, m,
                          &already, err);
    admin_unlock();
    free(m);
    if (already)
        return MG_OK;
    *created = rc == MG_OK;
    return rc;
}

void api_admin_init(mg_router *r, const mg_api_req *req, mg_api_resp *resp)
{
    uint64_t groups, replicas;
    if (!admin_body_object(req, resp) ||
        admin_body_u64(req->json, "groups", true, 0, &groups, resp) ||
        admin_body_u64(req->json, "replicas", true, 0, &replicas, resp))
        return;
    if (groups < 1 || groups >= MG_CMAP_GROUPS_MAX || replicas < 1 ||
        replicas > MG_CMAP_REPLICAS_MAX) {
        api_fail(resp, 400, "groups must be 1..%d and replicas 1..%d", MG_CMAP_GROUPS_MAX - 1,
                 MG_CMAP_REPLICAS_MAX);
        return;
    }
    const json_t *list = json_object_get(req->json, "nodes");
    const char **urls = NULL;
    size_t n_urls = 0;
    if (list != NULL && !json_is_null(list)) {
        if (!json_is_array(list) || json_array_size(list) == 0) {
            api_fail(resp, 400, "field \"nodes\" must be a non-empty list of rpc URLs");
            return;
        }
        urls = calloc(json_array_size(list), sizeof *urls);
        size_t i;
        const json_t *u;
        json_array_foreach(list, i, u)
        {
            if (!json_is_string(u) || json_string_length(u) == 0 ||
                json_string_length(u) >= MG_CMAP_URL_MAX) {
                api_fail(resp, 400, "field \"nodes\"[%zu] must be an rpc URL", i);
                free(urls);
                return;
            }
            urls[n_urls++] = json_string_value(u);
        }
    }
    mg_cmap *m = malloc(sizeof *m);
    if (m == NULL) {
        free(urls);
        api_fail(resp, 500, "out of memory");
        return;
    }
    if (!admin_lock_try(resp)) {
        free(urls);
        free(m);
        return;
    }
    mg_error err = {0};
    bool already;
    int rc =
        urls ? cluster_init(r, (uint32_t)groups, (uint32_t)replicas, urls, n_urls, false, m,
                            &already, &err)
             : cluster_init(r, (uint32_t)groups, (uint32_t)replicas, (const char *const *)r->seeds,
                            r->n_seeds, false, m, &already, &err);
    admin_unlock();
    if (rc == MG_OK)
        api_ok(resp, "cluster initialized", admin_map_json(m));
    else
        admin_fail(resp, &err);
    free(urls);
    free(m);
}

/* ---- add-node -------------------------------------------------------------- */

static bool node_same(const mg_cmap_node *a, const mg_cmap_node *b)
{
    return a->id == b->id && strcmp(a->rpc, b->rpc) == 0 && strcmp(a->survey, b->survey) == 0 &&
           strcmp(a->raft_host, b->raft_host) == 0 && a->raft_port == b->raft_port;
}

static int add_node_edit(mg_cmap *m, void *arg, bool *changed, mg_error *err)
{
    const mg_cmap_node *n = arg;
    const mg_cmap_node *old = mg_cmap_node_get(m, n->id);
    if (old != NULL) {
        if (node_same(old, n))
            return MG_OK;
        return mg_error_set(err, MG_EEXIST,
                            "node %llu is already in the map with another address (%s)",
                            (unsigned long long)n->id, old->rpc);
    }
    for (uint32_t i = 0; i < m->n_nodes; i++)
        if (strcmp(m->nodes[i].rpc, n->rpc) == 0)
            return mg_error_set(err, MG_EEXIST, "%s is node %llu in the map, not %llu", n->rpc,
                                (unsigned long long)m->nodes[i].id, (unsigned long long)n->id);
    int rc = mg_cmap_add_node(m, n, err);
    if (rc != MG_OK)
        return mg_error_wrap(err, rc == MG_EINVAL ? MG_EINVAL : MG_EEXIST, "add-node");
    *changed = true;
    return MG_OK;
}

/* Gives a map of an older build (no cluster id) the id in arg, unless it got
 * one meanwhile. */
static int set_cluster_edit(mg_cmap *m, void *arg, bool *changed, mg_error *err)
{
    (void)err;
    if (m->cluster[0] != '\0')
        return MG_OK;
    snprintf(m->cluster, sizeof m->cluster, "%s", (const char *)arg);
    *changed = true;
    return MG_OK;
}

/* The cluster's map, given an id when it has none (an older build made it):
 * *upgraded says whether this call did that. */
static int map_with_id(mg_router *r, mg_cmap *m, bool *upgraded, mg_error *err)
{
    *upgraded = false;
    int rc = admin_map_read(r, m, err);
    if (rc != MG_OK)
        return rc;
    if (m->epoch == 0)
        return mg_error_set(err, MG_EEXIST, "the cluster is not initialized (POST /admin/init)");
    if (m->cluster[0] != '\0')
        return MG_OK;
    char id[MG_UUID_STRLEN + 1];
    uint8_t raw[16];
    mg_uuid_v4(raw);
    mg_uuid_format(raw, id);
    if ((rc = admin_map_edit(r, set_cluster_edit, id, m, err)) != MG_OK)
        return mg_error_wrap(err, rc, "giving the cluster an id");
    *upgraded = true;
    mg_info("admin.add_node", "the map had no cluster id (older build): cluster %s", m->cluster);
    return MG_OK;
}

/* add-node: the node is claimed for the cluster (the node refuses when it
 * belongs to another: 409) before it enters the map, so a node is never in
 * two clusters' maps and never in a map it does not know about. A claimed
 * node whose map edit failed is in no map yet; a rerun finishes it. */
void api_admin_add_node(mg_router *r, const mg_api_req *req, mg_api_resp *resp)
{
    if (!admin_body_object(req, resp))
        return;
    const json_t *v = json_object_get(req->json, "rpc");
    if (!json_is_string(v) || json_string_length(v) == 0 ||
        json_string_length(v) >= MG_CMAP_URL_MAX) {
        api_fail(resp, 400, "field \"rpc\" must be the node's rpc URL");
        return;
    }
    mg_cmap *m = malloc(sizeof *m);
    if (m == NULL) {
        api_fail(resp, 500, "out of memory");
        return;
    }
    if (!admin_lock_try(resp)) {
        free(m);
        return;
    }
    mg_error err = {0};
    mg_cmap_node info;
    memset(&info, 0, sizeof info);
    bool upgraded = false;
    int rc = mg_client_probe(r->client, json_string_value(v), 2000, &info, &err);
    if (rc != MG_OK)
        rc = mg_error_wrap(&err, MG_EUNAVAIL, "node at %s does not answer", json_string_value(v));
    if (rc == MG_OK)
        rc = map_with_id(r, m, &upgraded, &err);
    if (rc == MG_OK) {
        const char *meta[MG_CMAP_REPLICAS_MAX];
        uint32_t n_meta = admin_meta_urls(m, meta);
        admin_member mi;
        rc = admin_node_member(r, info.id, m->cluster, meta, n_meta, &mi, &err);
    }
    if (rc == MG_OK)
        rc = admin_map_edit(r, add_node_edit, &info, m, &err);
    /* A map that had no id: its other nodes learn it too (best effort). */
    if (rc == MG_OK && upgraded)
        admin_claim_all(r, m);
    admin_unlock();
    free(m);
    if (rc != MG_OK) {
        admin_fail(resp, &err);
        return;
    }
    mg_info("admin.add_node", "node %llu at %s", (unsigned long long)info.id, info.rpc);
    api_ok(resp, "node added", admin_node_json(&info));
}

/* ---- rebalance ------------------------------------------------------------------- */

typedef struct group_arg {
    uint64_t id;
    const uint64_t *replicas;
    uint32_t n;
} group_arg;

static int add_group_edit(mg_cmap *m, void *arg, bool *changed, mg_error *err)
{
    const group_arg *a = arg;
    const mg_cmap_group *g = mg_cmap_group_get(m, a->id);
    if (g != NULL) {
        if (g->n_replicas == a->n && memcmp(g->replicas, a->replicas, a->n * sizeof *a->replicas) == 0)
            return MG_OK;
        return mg_error_set(err, MG_EBUSY, "group %llu was created meanwhile: map changed "
                            "concurrently", (unsigned long long)a->id);
    }
    int rc = mg_cmap_add_group(m, a->id, a->replicas, a->n, err);
    if (rc != MG_OK)
        return mg_error_wrap(err, MG_EEXIST, "adding group %llu", (unsigned long long)a->id);
    *changed = true;
    return MG_OK;
}

/* A new data group: placed, started, owning no slot, in the map. */
static int new_group(mg_router *r, uint32_t replicas, uint64_t *id, mg_error *err)
{
    mg_cmap *m = malloc(sizeof *m);
    if (m == NULL)
        return mg_error_set(err, MG_ENOMEM, "out of memory");
    int rc = admin_map_read(r, m, err);
    if (rc == MG_OK && m->epoch == 0)
        rc = mg_error_set(err, MG_EEXIST, "the cluster is not initialized (POST /admin/init)");
    if (rc != MG_OK)
        goto done;
    const mg_cmap_group *g1 = mg_cmap_group_get(m, 1);
    if (replicas == 0)
        replicas = g1 != NULL ? g1->n_replicas : 1;
    *id = m->n_groups > 0 ? m->groups[m->n_groups - 1].id + 1 : 1;
    if (*id >= MG_CMAP_GROUPS_MAX) {
        rc = mg_error_set(err, MG_EEXIST, "no group id left (at most %d groups)",
                          MG_CMAP_GROUPS_MAX);
        goto done;
    }
    uint64_t placed[MG_CMAP_REPLICAS_MAX];
    if (replicas > MG_CMAP_REPLICAS_MAX ||
        mg_cmap_place(m, replicas, NULL, 0, placed, err) != MG_OK) {
        rc = mg_error_set(err, MG_EEXIST, "cannot place %u replicas of a new group (%s)",
                          replicas, err->msg);
        goto done;
    }
    for (uint32_t k = 0; k < replicas && rc == MG_OK; k++)
        rc = admin_group_open(r, m, *id, placed[k], placed, replicas, err);
    uint64_t leader;
    if (rc == MG_OK)
        rc = admin_find_leader(r, placed, replicas, *id, ADMIN_STEP_MS, &leader, err);
    mg_slotset none;
    memset(&none, 0, sizeof none);
    if (rc == MG_OK)
        rc = admin_slots_set(r, m, *id, placed, replicas, &none, err);
    group_arg ga = {.id = *id, .replicas = placed, .n = replicas};
    if (rc == MG_OK)
        rc = admin_map_edit(r, add_group_edit, &ga, NULL, err);
    if (rc == MG_OK)
        mg_info("admin.rebalance", "new group %llu with %u replicas", (unsigned long long)*id,
                replicas);
done:
    free(m);
    return rc;
}

/* The moves of a rebalance: plan[s] = destination group of slot s, or 0. */
static int plan_moves(const mg_cmap *m, uint64_t target, const mg_slotset *explicit_slots,
                      uint16_t *plan, mg_error *err)
{
    memset(plan, 0, MG_SLOTS * sizeof *plan);
    if (explicit_slots != NULL) {
        for (uint32_t s = 0; s < MG_SLOTS; s++)
            if (mg_slotset_has(explicit_slots, s) && m->slot_group[s] != target)
                plan[s] = (uint16_t)target;
        return MG_OK;
    }
    uint64_t targets[MG_CMAP_GROUPS_MAX];
    size_t n = 0;
    for (uint32_t gi = 0; gi < m->n_groups; gi++)
        if (m->groups[gi].id != 0)
            targets[n++] = m->groups[gi].id;
    int rc = mg_cmap_plan_even(m, targets, n, plan, err);
    if (rc != MG_OK)
        return rc;
    if (target != 0)
        for (uint32_t s = 0; s < MG_SLOTS; s++)
            if (plan[s] != target)
                plan[s] = 0;
    return MG_OK;
}

void api_admin_rebalance(mg_router *r, const mg_api_req *req, mg_api_resp *resp)
{
    uint64_t to_group, replicas;
    if (!admin_body_object(req, resp) ||
        admin_body_u64(req->json, "to_group", false, 0, &to_group, resp) ||
        admin_body_u64(req->json, "replicas", false, 0, &replicas, resp))
        return;
    const json_t *ng = json_object_get(req->json, "new_group");
    if (ng != NULL && !json_is_boolean(ng) && !json_is_null(ng)) {
        api_fail(resp, 400, "field \"new_group\" must be a boolean");
        return;
    }
    bool want_new = json_is_true(ng);
    if (want_new && to_group != 0) {
        api_fail(resp, 400, "give \"to_group\" or \"new_group\", not both");
        return;
    }
    if (replicas > MG_CMAP_REPLICAS_MAX) {
        api_fail(resp, 400, "field \"replicas\" must be 1..%d", MG_CMAP_REPLICAS_MAX);
        return;
    }
    const json_t *sv = json_object_get(req->json, "slots");
    mg_slotset slots;
    bool have_slots = sv != NULL && !json_is_null(sv);
    mg_error err = {0};
    if (have_slots) {
        if (!json_is_string(sv) || mg_slotset_parse(json_string_value(sv), &slots, &err) != MG_OK) {
            api_fail(resp, 400, "field \"slots\": %s",
                     err.msg[0] ? err.msg : "must be a slot list such as \"0-511,900\"");
            return;
        }
        if (!want_new && to_group == 0) {
            api_fail(resp, 400, "\"slots\" needs \"to_group\" or \"new_group\"");
            return;
        }
    }
    mg_cmap *m = malloc(sizeof *m);
    uint16_t *plan = malloc(MG_SLOTS * sizeof *plan);
    if (m == NULL || plan == NULL) {
        free(m);
        free(plan);
        api_fail(resp, 500, "out of memory");
        return;
    }
    if (!admin_lock_try(resp)) {
        free(m);
        free(plan);
        return;
    }
    json_t *moved = json_array();
    uint64_t created = 0;
    int rc = MG_OK;
    if (want_new) {
        rc = new_group(r, (uint32_t)replicas, &created, &err);
        to_group = created;
    }
    if (rc == MG_OK)
        rc = admin_map_read(r, m, &err);
    if (rc == MG_OK && to_group != 0 && mg_cmap_group_get(m, to_group) == NULL)
        rc = mg_error_set(&err, MG_ENOTFOUND, "no data group %llu", (unsigned long long)to_group);
    if (rc == MG_OK)
        rc = plan_moves(m, to_group, have_slots ? &slots : NULL, plan, &err);
    /* One move per (source, destination) pair. */
    while (rc == MG_OK) {
        uint32_t first = MG_SLOTS;
        for (uint32_t s = 0; s < MG_SLOTS && first == MG_SLOTS; s++)
            if (plan[s] != 0)
                first = s;
        if (first == MG_SLOTS)
            break;
        uint64_t src = m->slot_group[first], dst = plan[first];
        mg_slotset S;
        memset(&S, 0, sizeof S);
        for (uint32_t s = first; s < MG_SLOTS; s++)
            if (plan[s] == dst && m->slot_group[s] == src) {
                mg_slotset_add(&S, s);
                plan[s] = 0;
            }
        admin_move_stats st;
        rc = admin_move_slots(r, src, dst, &S, &st, &err);
        if (rc == MG_OK)
            json_array_append_new(moved, json_pack("{s:I,s:I,s:I,s:I,s:I}", "from",
                                                   (json_int_t)src, "to", (json_int_t)dst,
                                                   "slots", (json_int_t)mg_slotset_count(&S),
                                                   "cubes", (json_int_t)st.cubes, "memories",
                                                   (json_int_t)st.memories));
    }
    admin_unlock();
    if (rc != MG_OK) {
        json_decref(moved);
        admin_fail(resp, &err);
    } else {
        api_ok(resp, "rebalanced",
               json_pack("{s:I,s:o,s:o}", "epoch", (json_int_t)mg_client_epoch(r->client),
                         "moved", moved,
                         "new_group", created ? json_integer((json_int_t)created) : json_null()));
    }
    free(m);
    free(plan);
}
