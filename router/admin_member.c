/*
 * Admin API: the operations on a group's members and leadership —
 * transfer-leader, balance-leaders (also run by init), move-replica and
 * remove-node. Steps as in docs/ARCHITECTURE.md "Cluster: meta group, slot
 * ownership, membership"; each one checks whether it was already done, so an
 * operation that failed can be rerun.
 */
#include "admin.h"

#include "../lib/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- transfer-leader ------------------------------------------------------- */

static int pack_member(admin_buf *b, const char *action, uint64_t id, const char *address)
{
    return msgpack_pack_map(&b->pk, address ? 3 : 2) | mg_mp_pack_cstr(&b->pk, "action") |
           mg_mp_pack_cstr(&b->pk, action) | mg_mp_pack_cstr(&b->pk, "id") |
           msgpack_pack_uint64(&b->pk, id) |
           (address ? mg_mp_pack_cstr(&b->pk, "address") | mg_mp_pack_cstr(&b->pk, address)
                    : 0);
}

/* GROUP_MEMBER on the group's leader (replicas `nodes`). */
static int member_call(mg_router *r, const uint64_t *nodes, uint32_t n, uint64_t group,
                       const char *action, uint64_t id, const char *address, unsigned timeout_ms,
                       mg_error *err)
{
    admin_buf b;
    admin_buf_init(&b);
    int rc = pack_member(&b, action, id, address) ? mg_error_set(err, MG_ENOMEM, "out of memory")
                                                  : MG_OK;
    mg_client_reply rep;
    if (rc == MG_OK)
        rc = admin_leader_call(r, nodes, n, group, MG_OP_GROUP_MEMBER, &b, timeout_ms, &rep, err);
    if (rc == MG_OK)
        mg_client_reply_free(&rep);
    admin_buf_free(&b);
    if (rc != MG_OK)
        return mg_error_wrap(err, rc, "GROUP_MEMBER %s of node %llu in group %llu", action,
                             (unsigned long long)id, (unsigned long long)group);
    return MG_OK;
}

/* Makes `to` (0: any other replica) lead the group; *from (may be NULL) the
 * leader found first, *leader the result. */
static int transfer_leader(mg_router *r, const mg_cmap_group *g, uint64_t to, uint64_t *from,
                           uint64_t *leader, mg_error *err)
{
    int rc = admin_find_leader(r, g->replicas, g->n_replicas, g->id, ADMIN_STEP_MS, leader, err);
    if (rc != MG_OK)
        return rc;
    if (from != NULL)
        *from = *leader;
    if (to == 0) {
        for (uint32_t k = 0; k < g->n_replicas && to == 0; k++)
            if (g->replicas[k] != *leader)
                to = g->replicas[k];
        if (to == 0)
            return MG_OK; /* one replica: it leads */
    }
    if (*leader == to)
        return MG_OK;
    rc = member_call(r, g->replicas, g->n_replicas, g->id, "transfer", to, NULL, ADMIN_STEP_MS,
                     err);
    if (rc == MG_OK)
        *leader = to;
    return rc;
}

void api_admin_transfer_leader(mg_router *r, const mg_api_req *req, mg_api_resp *resp)
{
    uint64_t group, to;
    if (!admin_body_object(req, resp) ||
        admin_body_u64(req->json, "group", true, 0, &group, resp) ||
        admin_body_u64(req->json, "to", false, 0, &to, resp))
        return;
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
    uint64_t leader = 0;
    int rc = admin_map_read(r, m, &err);
    const mg_cmap_group *g = rc == MG_OK ? mg_cmap_group_get(m, group) : NULL;
    if (rc == MG_OK && g == NULL)
        rc = mg_error_set(&err, MG_ENOTFOUND, "no group %llu", (unsigned long long)group);
    if (rc == MG_OK && to != 0 && !mg_cmap_group_has(g, to))
        rc = mg_error_set(&err, MG_EEXIST, "node %llu does not host group %llu",
                          (unsigned long long)to, (unsigned long long)group);
    if (rc == MG_OK)
        rc = transfer_leader(r, g, to, NULL, &leader, &err);
    admin_unlock();
    free(m);
    if (rc != MG_OK) {
        admin_fail(resp, &err);
        return;
    }
    api_ok(resp, "ok",
           json_pack("{s:I,s:I}", "group", (json_int_t)group, "leader", (json_int_t)leader));
}

/* ---- balance-leaders ------------------------------------------------------- */

int admin_balance_leaders(mg_router *r, const mg_cmap *m, bool best_effort, json_t *transfers,
                          mg_error *err)
{
    bool replicated = false;
    for (uint32_t gi = 0; gi < m->n_groups && !replicated; gi++)
        replicated = m->groups[gi].n_replicas > 1;
    if (!replicated)
        return MG_OK; /* one replica each (serve): each leads its group */
    admin_view v;
    admin_view_load(r, m, &v);
    int rc = MG_OK;
    for (uint32_t gi = 0; gi < m->n_groups && rc == MG_OK; gi++) {
        const mg_cmap_group *g = &m->groups[gi];
        const json_t *entry;
        uint64_t first = g->replicas[0], from = 0, leader = 0;
        if (g->n_replicas < 2 || !admin_view_up(&v, first) ||
            admin_view_leader(&v, g->id, &entry) == first)
            continue;
        mg_error e = {0};
        int grc = transfer_leader(r, g, first, &from, &leader, &e);
        if (grc == MG_OK && from != first) {
            mg_info("admin.balance_leaders", "group %llu: leader node %llu -> %llu",
                    (unsigned long long)g->id, (unsigned long long)from, (unsigned long long)first);
            if (transfers != NULL)
                json_array_append_new(transfers,
                                      json_pack("{s:I,s:I,s:I}", "group", (json_int_t)g->id, "from",
                                                (json_int_t)from, "to", (json_int_t)first));
        } else if (grc != MG_OK && best_effort) {
            mg_warn("admin.balance_leaders",
                    "group %llu: leader stays (not moved to node %llu): %s",
                    (unsigned long long)g->id, (unsigned long long)first, e.msg);
        } else if (grc != MG_OK) {
            rc = grc;
            if (err != NULL)
                *err = e;
        }
    }
    admin_view_free(&v);
    return rc;
}

void api_admin_balance_leaders(mg_router *r, const mg_api_req *req, mg_api_resp *resp)
{
    (void)req;
    mg_cmap *m = malloc(sizeof *m);
    json_t *transfers = json_array();
    if (m == NULL || transfers == NULL) {
        free(m);
        json_decref(transfers);
        api_fail(resp, 500, "out of memory");
        return;
    }
    if (!admin_lock_try(resp)) {
        free(m);
        json_decref(transfers);
        return;
    }
    mg_error err = {0};
    int rc = admin_map_read(r, m, &err);
    if (rc == MG_OK && m->epoch == 0)
        rc = mg_error_set(&err, MG_EEXIST, "the cluster is not initialized (POST /admin/init)");
    if (rc == MG_OK)
        rc = admin_balance_leaders(r, m, false, transfers, &err);
    admin_unlock();
    free(m);
    if (rc != MG_OK) {
        json_decref(transfers);
        admin_fail(resp, &err);
        return;
    }
    api_ok(resp, "leaders balanced", json_pack("{s:o}", "transfers", transfers));
}

/* ---- move-replica ------------------------------------------------------------ */

typedef struct replica_arg {
    uint64_t group, node;
    bool add;
} replica_arg;

static int replica_edit(mg_cmap *m, void *arg, bool *changed, mg_error *err)
{
    const replica_arg *a = arg;
    const mg_cmap_group *g = mg_cmap_group_get(m, a->group);
    if (g == NULL)
        return mg_error_set(err, MG_EBUSY, "group %llu left the map: map changed concurrently",
                            (unsigned long long)a->group);
    if (mg_cmap_group_has(g, a->node) == a->add)
        return MG_OK;
    int rc = a->add ? mg_cmap_add_replica(m, a->group, a->node, err)
                    : mg_cmap_remove_replica(m, a->group, a->node, err);
    if (rc != MG_OK)
        return mg_error_wrap(err, MG_EEXIST, "%s replica of group %llu on node %llu",
                             a->add ? "adding" : "removing", (unsigned long long)a->group,
                             (unsigned long long)a->node);
    *changed = true;
    return MG_OK;
}

/* GROUP_CLOSE with destroy of the replica on `node`, which is no longer in
 * the group's configuration nor in the map; it never fails the move. A node
 * that is not connected gets ADMIN_GONE_MS instead of a step's deadline: it
 * would only make the operation wait (remove-node of a dead node once per
 * group). */
static void close_replica(mg_router *r, uint64_t group, uint64_t node)
{
    bool up = mg_client_node_up(r->client, node);
    admin_buf b;
    admin_buf_init(&b);
    msgpack_pack_map(&b.pk, 1);
    mg_mp_pack_cstr(&b.pk, "destroy");
    msgpack_pack_true(&b.pk);
    mg_client_reply rep;
    mg_error e = {0};
    int rc = admin_node_call(r, node, MG_OP_GROUP_CLOSE, group, &b,
                             up ? ADMIN_STEP_MS : ADMIN_GONE_MS, &rep, &e);
    if (rc == MG_OK)
        mg_client_reply_free(&rep);
    else if (rc == MG_ENOTFOUND) /* closed already: a rerun */
        mg_debug("admin.move_replica", "GROUP_CLOSE of group %llu on node %llu: %s",
                 (unsigned long long)group, (unsigned long long)node, e.msg);
    else if (!up || rc == MG_ETIMEDOUT || rc == MG_EUNAVAIL || rc == MG_ESHUTDOWN)
        mg_warn("admin.move_replica",
                "node %llu is not reachable (%s): its replica of group %llu stays on its disk "
                "(directory group-%llu of its data dir), no longer in the group's configuration "
                "nor in the map; the node reopens it as a non-voter if it comes back; delete "
                "the directory while the node is stopped (docs/OPERATIONS.md \"Repairing\")",
                (unsigned long long)node, e.msg, (unsigned long long)group,
                (unsigned long long)group);
    else
        mg_warn("admin.move_replica", "GROUP_CLOSE of group %llu on node %llu: %s",
                (unsigned long long)group, (unsigned long long)node, e.msg);
    admin_buf_free(&b);
}

int admin_move_replica(mg_router *r, uint64_t group, uint64_t from, uint64_t to, mg_error *err)
{
    mg_cmap *m = malloc(sizeof *m);
    if (m == NULL)
        return mg_error_set(err, MG_ENOMEM, "out of memory");
    int rc = admin_map_read(r, m, err);
    if (rc != MG_OK)
        goto done;
    const mg_cmap_group *g = mg_cmap_group_get(m, group);
    const mg_cmap_node *nb = mg_cmap_node_get(m, to);
    if (g == NULL || mg_cmap_node_get(m, from) == NULL || nb == NULL) {
        rc = mg_error_set(err, MG_ENOTFOUND, "%s",
                          g == NULL ? "no such group" : "no such node in the map");
        goto done;
    }
    if (from == to) {
        rc = mg_error_set(err, MG_EINVAL, "\"from\" and \"to\" are the same node");
        goto done;
    }
    bool has_from = mg_cmap_group_has(g, from), has_to = mg_cmap_group_has(g, to);
    if (!has_from && !has_to) {
        rc = mg_error_set(err, MG_EEXIST, "node %llu does not host group %llu",
                          (unsigned long long)from, (unsigned long long)group);
        goto done;
    }
    if (has_from && has_to) {
        rc = mg_error_set(err, MG_EEXIST, "node %llu already hosts group %llu",
                          (unsigned long long)to, (unsigned long long)group);
        goto done;
    }
    mg_info("admin.move_replica", "group %llu from node %llu to %llu", (unsigned long long)group,
            (unsigned long long)from, (unsigned long long)to);
    if (!has_to) {
        if (nb->state != MG_CMAP_NODE_UP) {
            rc = mg_error_set(err, MG_EEXIST, "node %llu is being removed",
                              (unsigned long long)to);
            goto done;
        }
        if (g->n_replicas >= MG_CMAP_REPLICAS_MAX) {
            rc = mg_error_set(err, MG_EEXIST, "group %llu has %d replicas already",
                              (unsigned long long)group, MG_CMAP_REPLICAS_MAX);
            goto done;
        }
        mg_client_reply rep;
        mg_error e = {0};
        if (admin_node_call(r, to, MG_OP_NODE_INFO, 0, NULL, ADMIN_NODE_MS, &rep, &e) != MG_OK) {
            rc = mg_error_set(err, MG_EEXIST, "node %llu is not up (%s)", (unsigned long long)to,
                              e.msg);
            goto done;
        }
        mg_client_reply_free(&rep);
        char addr[96];
        if ((rc = mg_cmap_raft_address(nb, group, addr, sizeof addr, err)) != MG_OK)
            goto done;
        /* Join on B, add B (the node answers once B caught up), map +B. */
        if ((rc = admin_group_open(r, m, group, to, NULL, 0, err)) != MG_OK)
            goto done;
        rc = member_call(r, g->replicas, g->n_replicas, group, "add", to, addr, ADMIN_CATCHUP_MS,
                         err);
        replica_arg add = {.group = group, .node = to, .add = true};
        if (rc == MG_OK)
            rc = admin_map_edit(r, replica_edit, &add, m, err);
        if (rc != MG_OK)
            goto done;
        g = mg_cmap_group_get(m, group);
    }
    if (has_from) {
        /* Leadership away from A, remove A, map −A. */
        uint64_t others[MG_CMAP_REPLICAS_MAX], leader = 0;
        uint32_t n_others = 0;
        for (uint32_t k = 0; k < g->n_replicas; k++)
            if (g->replicas[k] != from)
                others[n_others++] = g->replicas[k];
        rc = admin_find_leader(r, g->replicas, g->n_replicas, group, ADMIN_STEP_MS, &leader, err);
        if (rc == MG_OK && leader == from)
            rc = member_call(r, g->replicas, g->n_replicas, group, "transfer", to, NULL,
                             ADMIN_STEP_MS, err);
        if (rc == MG_OK)
            rc = member_call(r, others, n_others, group, "remove", from, NULL, ADMIN_STEP_MS,
                             err);
        replica_arg del = {.group = group, .node = from, .add = false};
        if (rc == MG_OK)
            rc = admin_map_edit(r, replica_edit, &del, m, err);
        if (rc != MG_OK) {
            mg_error_wrap(err, rc, "group %llu has a replica on node %llu and still one on "
                          "node %llu", (unsigned long long)group, (unsigned long long)to,
                          (unsigned long long)from);
            goto done;
        }
    }
    close_replica(r, group, from);
    /* The nodes' meta group hints follow group 0 (routers seeded with nodes
     * that host no meta replica find it through them). */
    if (group == 0)
        admin_claim_all(r, m);
done:
    free(m);
    return rc;
}

void api_admin_move_replica(mg_router *r, const mg_api_req *req, mg_api_resp *resp)
{
    uint64_t group, from, to;
    if (!admin_body_object(req, resp) ||
        admin_body_u64(req->json, "group", true, 0, &group, resp) ||
        admin_body_u64(req->json, "from", true, 0, &from, resp) ||
        admin_body_u64(req->json, "to", true, 0, &to, resp))
        return;
    if (!admin_lock_try(resp))
        return;
    mg_error err = {0};
    int rc = admin_move_replica(r, group, from, to, &err);
    admin_unlock();
    if (rc != MG_OK) {
        admin_fail(resp, &err);
        return;
    }
    mg_cmap *m = malloc(sizeof *m);
    const mg_cmap_group *g = NULL;
    if (m != NULL) {
        mg_client_map(r->client, m);
        g = mg_cmap_group_get(m, group);
    }
    json_t *reps = json_array();
    for (uint32_t k = 0; g != NULL && k < g->n_replicas; k++)
        json_array_append_new(reps, json_integer((json_int_t)g->replicas[k]));
    api_ok(resp, "replica moved",
           json_pack("{s:I,s:o}", "group", (json_int_t)group, "replicas", reps));
    free(m);
}

/* ---- remove-node --------------------------------------------------------------- */

static int mark_removing(mg_cmap *m, void *arg, bool *changed, mg_error *err)
{
    uint64_t id = *(const uint64_t *)arg;
    for (uint32_t i = 0; i < m->n_nodes; i++)
        if (m->nodes[i].id == id) {
            *changed = m->nodes[i].state != MG_CMAP_NODE_REMOVING;
            m->nodes[i].state = MG_CMAP_NODE_REMOVING;
            return MG_OK;
        }
    return mg_error_set(err, MG_ENOTFOUND, "no node %llu in the map", (unsigned long long)id);
}

static int drop_node(mg_cmap *m, void *arg, bool *changed, mg_error *err)
{
    uint64_t id = *(const uint64_t *)arg;
    if (mg_cmap_node_get(m, id) == NULL)
        return MG_OK;
    int rc = mg_cmap_remove_node(m, id, err);
    if (rc != MG_OK)
        return mg_error_wrap(err, MG_EBUSY, "dropping node %llu", (unsigned long long)id);
    *changed = true;
    return MG_OK;
}

/* Where a replica of g on `node` goes: the least-loaded eligible node not
 * hosting g. */
static int place_away(const mg_cmap *m, const mg_cmap_group *g, uint64_t node, uint64_t *to,
                      mg_error *err)
{
    uint64_t ex[MG_CMAP_REPLICAS_MAX + 1];
    memcpy(ex, g->replicas, g->n_replicas * sizeof *ex);
    ex[g->n_replicas] = node;
    int rc = mg_cmap_place(m, 1, ex, g->n_replicas + 1, to, err);
    if (rc != MG_OK)
        return mg_error_wrap(err, MG_EEXIST, "cannot move group %llu's replica off node %llu",
                             (unsigned long long)g->id, (unsigned long long)node);
    return MG_OK;
}

void api_admin_remove_node(mg_router *r, const mg_api_req *req, mg_api_resp *resp)
{
    uint64_t id;
    if (!admin_body_object(req, resp) || admin_body_u64(req->json, "id", true, 0, &id, resp))
        return;
    mg_cmap *m = malloc(sizeof *m), *sim = malloc(sizeof *sim);
    if (m == NULL || sim == NULL) {
        free(m);
        free(sim);
        api_fail(resp, 500, "out of memory");
        return;
    }
    if (!admin_lock_try(resp)) {
        free(m);
        free(sim);
        return;
    }
    mg_error err = {0};
    json_t *moved = json_array();
    int rc = admin_map_read(r, m, &err);
    if (rc == MG_OK && mg_cmap_node_get(m, id) == NULL)
        rc = mg_error_set(&err, MG_ENOTFOUND, "no node %llu in the map", (unsigned long long)id);
    /* Every replica must have somewhere to go before anything changes. */
    if (rc == MG_OK) {
        *sim = *m;
        mark_removing(sim, &id, &(bool){false}, &err);
        for (uint32_t gi = 0; gi < sim->n_groups && rc == MG_OK; gi++) {
            uint64_t to;
            mg_cmap_group *g = &sim->groups[gi];
            if (!mg_cmap_group_has(g, id))
                continue;
            rc = place_away(sim, g, id, &to, &err);
            if (rc == MG_OK)
                rc = mg_cmap_add_replica(sim, g->id, to, &err);
        }
    }
    if (rc == MG_OK)
        rc = admin_map_edit(r, mark_removing, &id, m, &err);
    for (uint32_t gi = 0; rc == MG_OK && gi < m->n_groups; gi++) {
        const mg_cmap_group *g = &m->groups[gi];
        if (!mg_cmap_group_has(g, id))
            continue;
        uint64_t to, gid = g->id;
        rc = place_away(m, g, id, &to, &err);
        if (rc == MG_OK)
            rc = admin_move_replica(r, gid, id, to, &err);
        if (rc == MG_OK) {
            json_array_append_new(moved, json_pack("{s:I,s:I,s:I}", "group", (json_int_t)gid,
                                                   "from", (json_int_t)id, "to",
                                                   (json_int_t)to));
            rc = admin_map_read(r, m, &err); /* the map changed: start over */
            gi = (uint32_t)-1;
        }
    }
    if (rc == MG_OK)
        rc = admin_map_edit(r, drop_node, &id, NULL, &err);
    admin_unlock();
    free(m);
    free(sim);
    if (rc != MG_OK) {
        json_decref(moved);
        admin_fail(resp, &err);
        return;
    }
    mg_info("admin.remove_node", "node %llu removed", (unsigned long long)id);
    api_ok(resp, "node removed", json_pack("{s:o}", "moved", moved));
}
