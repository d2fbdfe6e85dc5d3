/*
 * Admin API: the cluster map and the status view as JSON (router/admin.h)
 * and the read-only endpoints: /admin/map, /admin/status, /admin/nodes,
 * /admin/groups, /admin/slots.
 */
#include "admin.h"

#include "../lib/jsonmp.h"
#include "../lib/metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- JSON forms ------------------------------------------------------------ */

static const char *state_name(int state)
{
    return state == MG_CMAP_NODE_REMOVING ? "removing" : "up";
}

json_t *admin_node_json(const mg_cmap_node *n)
{
    return json_pack("{s:I,s:s,s:s,s:s,s:I,s:s}", "id", (json_int_t)n->id, "rpc", n->rpc,
                     "survey", n->survey, "raft_host", n->raft_host, "raft_port",
                     (json_int_t)n->raft_port, "state", state_name(n->state));
}

static json_t *ranges_json(const mg_cmap *m)
{
    json_t *a = json_array();
    if (m->epoch == 0)
        return a;
    for (uint32_t s = 0; s < MG_SLOTS;) {
        uint32_t e = s;
        while (e + 1 < MG_SLOTS && m->slot_group[e + 1] == m->slot_group[s])
            e++;
        json_array_append_new(a, json_pack("{s:I,s:I,s:I}", "first", (json_int_t)s, "last",
                                           (json_int_t)e, "group",
                                           (json_int_t)m->slot_group[s]));
        s = e + 1;
    }
    return a;
}

static json_t *replicas_json(const mg_cmap_group *g)
{
    json_t *a = json_array();
    for (uint32_t k = 0; k < g->n_replicas; k++)
        json_array_append_new(a, json_integer((json_int_t)g->replicas[k]));
    return a;
}

json_t *admin_map_json(const mg_cmap *m)
{
    json_t *nodes = json_array(), *groups = json_array();
    for (uint32_t i = 0; i < m->n_nodes; i++)
        json_array_append_new(nodes, admin_node_json(&m->nodes[i]));
    for (uint32_t i = 0; i < m->n_groups; i++) {
        const mg_cmap_group *g = &m->groups[i];
        json_array_append_new(groups,
                              json_pack("{s:I,s:o,s:I}", "id", (json_int_t)g->id, "replicas",
                                        replicas_json(g), "slots",
                                        (json_int_t)mg_cmap_group_slots(m, g->id)));
    }
    return json_pack("{s:I,s:o,s:o,s:o,s:o}", "epoch", (json_int_t)m->epoch, "cluster",
                     m->cluster[0] ? json_string(m->cluster) : json_null(), "nodes", nodes,
                     "groups", groups, "slots", ranges_json(m));
}

/* ---- the status view -------------------------------------------------------- */

void admin_view_load(mg_router *r, const mg_cmap *m, admin_view *v)
{
    memset(v, 0, sizeof *v);
    v->map = m;
    for (uint32_t i = 0; i < m->n_nodes; i++) {
        mg_client_reply rep;
        mg_error e = {0};
        if (admin_node_call(r, m->nodes[i].id, MG_OP_STATUS, 0, NULL, ADMIN_NODE_MS, &rep, &e) !=
            MG_OK)
            continue;
        mg_mp_reader rd = mg_wire_body(rep.rep.body, rep.rep.body_len);
        json_t *doc = NULL;
        if (mg_jsonmp_read(&rd, &doc) == MG_OK && json_is_object(doc)) {
            v->up[i] = true;
            v->status[i] = doc;
        } else {
            json_decref(doc);
        }
        mg_client_reply_free(&rep);
    }
}

void admin_view_free(admin_view *v)
{
    for (size_t i = 0; i < MG_CMAP_NODES_MAX; i++)
        json_decref(v->status[i]);
    memset(v, 0, sizeof *v);
}

static uint64_t jint(const json_t *o, const char *key)
{
    json_int_t x = json_integer_value(json_object_get(o, key));
    return x > 0 ? (uint64_t)x : 0;
}

const json_t *admin_view_entry(const admin_view *v, size_t i, uint64_t group)
{
    if (i >= MG_CMAP_NODES_MAX || v->status[i] == NULL)
        return NULL;
    size_t k;
    const json_t *e;
    json_array_foreach(json_object_get(v->status[i], "groups"), k, e)
    {
        if (jint(e, "group") == group)
            return e;
    }
    return NULL;
}

static size_t node_index(const mg_cmap *m, uint64_t id)
{
    for (uint32_t i = 0; i < m->n_nodes; i++)
        if (m->nodes[i].id == id)
            return i;
    return MG_CMAP_NODES_MAX;
}

bool admin_view_up(const admin_view *v, uint64_t node)
{
    size_t i = node_index(v->map, node);
    return i < MG_CMAP_NODES_MAX && v->up[i];
}

uint64_t admin_view_leader(const admin_view *v, uint64_t group, const json_t **entry)
{
    const mg_cmap_group *g = mg_cmap_group_get(v->map, group);
    uint64_t best = 0, best_term = 0;
    *entry = NULL;
    for (uint32_t k = 0; g != NULL && k < g->n_replicas; k++) {
        const json_t *e = admin_view_entry(v, node_index(v->map, g->replicas[k]), group);
        const char *st = json_string_value(json_object_get(e, "state"));
        if (st != NULL && strcmp(st, "leader") == 0 && (best == 0 || jint(e, "term") > best_term)) {
            best = g->replicas[k];
            best_term = jint(e, "term");
            *entry = e;
        }
    }
    return best;
}

/* ---- read-only handlers ---------------------------------------------------- */

/* The map for a read-only handler, or an answer in resp (NULL returned). */
static mg_cmap *read_map(mg_router *r, mg_api_resp *resp)
{
    mg_cmap *m = malloc(sizeof *m);
    mg_error err = {0};
    if (m == NULL) {
        api_fail(resp, 500, "out of memory");
        return NULL;
    }
    if (admin_map_read(r, m, &err) != MG_OK) {
        admin_fail(resp, &err);
        free(m);
        return NULL;
    }
    return m;
}

void api_admin_map(mg_router *r, const mg_api_req *req, mg_api_resp *resp)
{
    (void)req;
    mg_cmap *m = read_map(r, resp);
    if (m == NULL)
        return;
    api_ok(resp, "ok", admin_map_json(m));
    free(m);
}

void api_admin_status(mg_router *r, const mg_api_req *req, mg_api_resp *resp)
{
    (void)req;
    mg_cmap *m = read_map(r, resp);
    if (m == NULL)
        return;
    admin_view v;
    admin_view_load(r, m, &v);
    bool healthy = true;
    uint32_t leaders[MG_CMAP_NODES_MAX] = {0};
    json_t *groups = json_array();
    for (uint32_t gi = 0; gi < m->n_groups; gi++) {
        const mg_cmap_group *g = &m->groups[gi];
        const json_t *le = NULL;
        uint64_t leader = admin_view_leader(&v, g->id, &le);
        uint64_t lapplied = jint(le, "applied");
        if (leader == 0)
            healthy = false;
        else
            leaders[node_index(m, leader)]++;
        json_t *reps = json_array();
        for (uint32_t k = 0; k < g->n_replicas; k++) {
            size_t ni = node_index(m, g->replicas[k]);
            const json_t *e = admin_view_entry(&v, ni, g->id);
            const char *st = json_string_value(json_object_get(e, "state"));
            if (st == NULL || strcmp(st, "unavailable") == 0)
                st = "down";
            uint64_t applied = jint(e, "applied");
            uint64_t lag = e != NULL && le != NULL && lapplied > applied ? lapplied - applied : 0;
            if (e == NULL || lag > 1000)
                healthy = false;
            json_array_append_new(reps, json_pack("{s:I,s:s,s:I,s:I}", "node",
                                                  (json_int_t)g->replicas[k], "state", st,
                                                  "applied", (json_int_t)applied, "lag",
                                                  (json_int_t)lag));
        }
        json_array_append_new(
            groups, json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:o}", "id", (json_int_t)g->id, "slots",
                              (json_int_t)mg_cmap_group_slots(m, g->id), "leader",
                              (json_int_t)leader, "term", (json_int_t)jint(le, "term"), "commit",
                              (json_int_t)jint(le, "commit"), "applied", (json_int_t)lapplied,
                              "replicas", reps));
    }
    json_t *nodes = json_array();
    for (uint32_t i = 0; i < m->n_nodes; i++) {
        const mg_cmap_node *n = &m->nodes[i];
        if (!v.up[i])
            healthy = false;
        json_array_append_new(
            nodes, json_pack("{s:I,s:s,s:b,s:s,s:I,s:I}", "id", (json_int_t)n->id, "rpc", n->rpc,
                             "up", v.up[i], "state", state_name(n->state), "replicas",
                             (json_int_t)mg_cmap_node_load(m, n->id), "leaders",
                             (json_int_t)leaders[i]));
    }
    if (m->epoch == 0)
        healthy = false;
    api_ok(resp, "ok",
           json_pack("{s:I,s:o,s:o,s:b}", "epoch", (json_int_t)m->epoch, "nodes", nodes,
                     "groups", groups, "healthy", healthy));
    admin_view_free(&v);
    free(m);
}

void api_admin_nodes(mg_router *r, const mg_api_req *req, mg_api_resp *resp)
{
    (void)req;
    mg_cmap *m = read_map(r, resp);
    if (m == NULL)
        return;
    admin_view v;
    admin_view_load(r, m, &v);
    json_t *out = json_array();
    for (uint32_t i = 0; i < m->n_nodes; i++) {
        const mg_cmap_node *n = &m->nodes[i];
        json_t *groups = json_array();
        for (uint32_t g = 0; g < m->n_groups; g++)
            if (mg_cmap_group_has(&m->groups[g], n->id))
                json_array_append_new(groups, json_integer((json_int_t)m->groups[g].id));
        char raft[MG_CMAP_HOST_MAX + 16];
        snprintf(raft, sizeof raft, "%s:%u", n->raft_host, (unsigned)n->raft_port);
        json_array_append_new(out, json_pack("{s:I,s:s,s:s,s:s,s:s,s:b,s:o}", "id",
                                             (json_int_t)n->id, "rpc", n->rpc, "survey",
                                             n->survey, "raft", raft, "state",
                                             state_name(n->state), "up", v.up[i], "replicas",
                                             groups));
    }
    api_ok(resp, "ok", out);
    admin_view_free(&v);
    free(m);
}

/* memgrid_node_memories{group} / memgrid_node_cubes{group} of one group
 * from a node's registry. */
typedef struct gauge_pick {
    char group[24];
    int64_t memories, cubes;
    bool found;
} gauge_pick;

static void pick_gauge(const mg_metric_view *mv, void *arg)
{
    gauge_pick *p = arg;
    const char *g = mg_metric_label(mv, "group");
    if (mv->gauge == NULL || g == NULL || strcmp(g, p->group) != 0)
        return;
    if (strcmp(mv->name, "memgrid_node_memories") == 0) {
        p->memories = mg_gauge_get(mv->gauge);
        p->found = true;
    } else if (strcmp(mv->name, "memgrid_node_cubes") == 0) {
        p->cubes = mg_gauge_get(mv->gauge);
        p->found = true;
    }
}

/* A node's registry from STATS (NULL when it does not answer). */
static mg_metrics *node_registry(mg_router *r, uint64_t node)
{
    mg_client_reply rep;
    mg_error e = {0};
    if (admin_node_call(r, node, MG_OP_STATS, 0, NULL, ADMIN_NODE_MS, &rep, &e) != MG_OK)
        return NULL;
    mg_metrics *reg = NULL;
    mg_mp_reader rd = mg_wire_body(rep.rep.body, rep.rep.body_len);
    uint32_t n;
    if (mg_mp_read_map(&rd, &n) == MG_OK)
        for (uint32_t i = 0; i < n && reg == NULL; i++) {
            bool hist = mg_mp_peek_str_eq(&rd, "hist");
            if (mg_mp_skip(&rd) != MG_OK)
                break;
            if (hist ? mg_metrics_read(&rd, &reg, &e) != MG_OK : mg_mp_skip(&rd) != MG_OK)
                break;
        }
    mg_client_reply_free(&rep);
    return reg;
}

void api_admin_groups(mg_router *r, const mg_api_req *req, mg_api_resp *resp)
{
    (void)req;
    mg_cmap *m = read_map(r, resp);
    if (m == NULL)
        return;
    admin_view v;
    admin_view_load(r, m, &v);
    mg_metrics *regs[MG_CMAP_NODES_MAX] = {0};
    bool asked[MG_CMAP_NODES_MAX] = {0};
    json_t *out = json_array();
    for (uint32_t gi = 0; gi < m->n_groups; gi++) {
        const mg_cmap_group *g = &m->groups[gi];
        const json_t *le = NULL;
        uint64_t leader = admin_view_leader(&v, g->id, &le);
        mg_slotset set;
        mg_cmap_group_slotset(m, g->id, &set);
        char ranges[8192];
        if (mg_slotset_format(&set, ranges, sizeof ranges) != MG_OK)
            snprintf(ranges, sizeof ranges, "(too many ranges)");
        /* Memories and cubes: the gauges of the node that leads the group
         * (null when it does not report them). */
        json_t *mems = json_null(), *cubes = json_null();
        size_t li = leader ? node_index(m, leader) : MG_CMAP_NODES_MAX;
        if (li < MG_CMAP_NODES_MAX) {
            if (!asked[li]) {
                regs[li] = node_registry(r, leader);
                asked[li] = true;
            }
            gauge_pick p = {.found = false};
            snprintf(p.group, sizeof p.group, "%llu", (unsigned long long)g->id);
            if (regs[li] != NULL)
                mg_metrics_walk(regs[li], pick_gauge, &p);
            if (p.found) {
                json_decref(mems);
                json_decref(cubes);
                mems = json_integer(p.memories);
                cubes = json_integer(p.cubes);
            }
        }
        json_array_append_new(
            out, json_pack("{s:I,s:o,s:I,s:I,s:I,s:I,s:s,s:o,s:o}", "id", (json_int_t)g->id,
                           "replicas", replicas_json(g), "leader", (json_int_t)leader, "term",
                           (json_int_t)jint(le, "term"), "applied",
                           (json_int_t)jint(le, "applied"), "slots",
                           (json_int_t)mg_slotset_count(&set), "slot_ranges", ranges,
                           "memories", mems, "cubes", cubes));
    }
    for (size_t i = 0; i < MG_CMAP_NODES_MAX; i++)
        mg_metrics_free(regs[i]);
    api_ok(resp, "ok", out);
    admin_view_free(&v);
    free(m);
}

void api_admin_slots(mg_router *r, const mg_api_req *req, mg_api_resp *resp)
{
    const char *cube = req->arg != NULL && req->arg[0] ? req->arg : NULL;
    if (cube != NULL && !mg_cube_id_valid(cube, strlen(cube))) {
        api_fail(resp, 400, "cube: not a valid cube id");
        return;
    }
    mg_cmap *m = read_map(r, resp);
    if (m == NULL)
        return;
    json_t *groups = json_array();
    for (uint32_t gi = 0; gi < m->n_groups; gi++)
        if (m->groups[gi].id != 0)
            json_array_append_new(groups,
                                  json_pack("{s:I,s:I}", "group", (json_int_t)m->groups[gi].id,
                                            "slots",
                                            (json_int_t)mg_cmap_group_slots(m, m->groups[gi].id)));
    json_t *data = json_pack("{s:I,s:o,s:o}", "epoch", (json_int_t)m->epoch, "ranges",
                             ranges_json(m), "groups", groups);
    if (cube != NULL) {
        uint32_t slot = mg_slot_of(cube, strlen(cube));
        json_object_set_new(data, "cube",
                            json_pack("{s:s,s:I,s:I}", "id", cube, "slot", (json_int_t)slot,
                                      "group",
                                      (json_int_t)(m->epoch ? m->slot_group[slot] : 0)));
    }
    api_ok(resp, "ok", data);
    free(m);
}
