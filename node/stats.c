/*
 * The node's metrics (DESIGN §11) and the STATS op.
 *
 * Recorded into the node's own registry (lib/metrics.h), every series
 * registered at start-up so that recording is a clock read plus a lock-free
 * histogram record or an atomic add:
 *
 *   memgrid_node_op_seconds{op}             a request's service time, from its
 *                                           receipt by the node to its reply
 *                                           handed to nng (queueing on the loop
 *                                           or a worker included)
 *   memgrid_node_requests_total{op,status}  replies by op and status (OK dense,
 *                                           error codes sparse)
 *   memgrid_node_stage_seconds{stage}       propose_commit: a WRITE's proposal
 *                                           until the group applied it on this
 *                                           leader; scan: a SEARCH's scan of
 *                                           its groups, before the reply is
 *                                           packed; apply: the FSM apply of one
 *                                           entry by any hosted replica (leader
 *                                           or follower), recorded by the
 *                                           group's applier thread (cluster/
 *                                           applier.h) into the histogram the
 *                                           node hands to its host
 *   memgrid_node_groups, memgrid_node_leaders, memgrid_node_memories{group},
 *   memgrid_node_cubes{group}                gauges, refreshed at most once a
 *                                           second when STATS asks
 *
 * STATS (on a worker) answers {"node": id, "hist": <the registry,
 * mg_metrics_pack>, "gauges": {"groups", "leaders", "memories", "cubes"}}
 * where memories and cubes add up the groups this node leads (each group
 * once across the cluster when leaders are unique).
 */
#include "node_internal.h"

#include "../lib/clock.h"
#include "../lib/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GAUGE_REFRESH_NS 1000000000ull

enum { STAGE_PROPOSE_COMMIT = 0, STAGE_SCAN, STAGE_APPLY, STAGE_COUNT_ };

static const char *const stage_names[STAGE_COUNT_] = {"propose_commit", "scan", "apply"};

struct node_stats {
    mg_metrics *reg;
    mg_hist *op[MG_OP_COUNT_];                         /* index 0 unused */
    mg_counter *requests[MG_OP_COUNT_][MG_ERR_COUNT_]; /* op 0: undecodable */
    mg_hist *stage[STAGE_COUNT_];
    mg_gauge *groups, *leaders;
    mg_gauge **memories, **cubes; /* per hosted group, in node.groups order */
    /* gauges: refreshed by one STATS at a time */
    pthread_mutex_t refresh_lock;
    uint64_t refreshed_ns;
    int64_t lead_memories, lead_cubes; /* under refresh_lock */
};

static const char *op_label(int op)
{
    const char *name = mg_wire_op_name(op);
    return name ? name : "unknown";
}

int node_stats_open(mg_node *n, mg_error *err)
{
    node_stats *s = calloc(1, sizeof *s);
    if (s == NULL)
        return mg_error_set(err, MG_ENOMEM, "out of memory for the node's metrics");
    pthread_mutex_init(&s->refresh_lock, NULL);
    n->stats = s;
    s->reg = mg_metrics_new();
    /* per group slot, registered when the slot is first seen (groups open
     * after this, and at run time) */
    s->memories = calloc(n->groups_cap ? n->groups_cap : 1, sizeof *s->memories);
    s->cubes = calloc(n->groups_cap ? n->groups_cap : 1, sizeof *s->cubes);
    bool ok = s->reg != NULL && s->memories != NULL && s->cubes != NULL;
    for (int op = 0; ok && op < MG_OP_COUNT_; op++) {
        const char *name = op_label(op);
        if (op > 0)
            ok = (s->op[op] = mg_metrics_histogram(
                      s->reg, "memgrid_node_op_seconds",
                      "Service time of a router request on the node by wire op, from its "
                      "receipt to its reply handed to nng.",
                      (const char *const[]){"op", name, NULL}, 0)) != NULL;
        for (int code = 0; ok && code < MG_ERR_COUNT_; code++)
            ok = (s->requests[op][code] = mg_metrics_counter(
                      s->reg, "memgrid_node_requests",
                      "Requests answered by the node, by wire op and status.",
                      (const char *const[]){"op", name, "status", mg_errname(code), NULL},
                      code == MG_OK && op > 0 ? 0 : MG_METRIC_SPARSE)) != NULL;
    }
    for (int st = 0; ok && st < STAGE_COUNT_; st++)
        ok = (s->stage[st] = mg_metrics_histogram(
                  s->reg, "memgrid_node_stage_seconds",
                  "Stages of node work: propose_commit = a write's proposal until applied on "
                  "this leader; scan = a search's scan of its groups, before its reply is packed; "
                  "apply = the state machine's apply of one Raft entry on a replica here.",
                  (const char *const[]){"stage", stage_names[st], NULL}, 0)) != NULL;
    if (ok)
        ok = (s->groups = mg_metrics_gauge(s->reg, "memgrid_node_groups",
                                           "Shard group replicas hosted by the node.", NULL, 0)) !=
                 NULL &&
             (s->leaders = mg_metrics_gauge(s->reg, "memgrid_node_leaders",
                                            "Shard groups this node leads.", NULL, 0)) != NULL;
    if (!ok) {
        node_stats_close(n);
        return mg_error_set(err, MG_ENOMEM, "out of memory for the node's metrics");
    }
    return MG_OK;
}

void node_stats_close(mg_node *n)
{
    node_stats *s = n->stats;
    if (s == NULL)
        return;
    mg_metrics_free(s->reg);
    free(s->memories);
    free(s->cubes);
    pthread_mutex_destroy(&s->refresh_lock);
    free(s);
    n->stats = NULL;
}

void node_stats_request(node_ctx *c, int status)
{
    node_stats *s = c->node->stats;
    int op = c->env.op > 0 && c->env.op < MG_OP_COUNT_ ? c->env.op : 0;
    int code = status >= 0 && status < MG_ERR_COUNT_ ? status : MG_EINTERNAL;
    if (s == NULL)
        return;
    mg_counter_inc(s->requests[op][code]);
    if (op > 0 && c->recv_ns != 0)
        mg_hist_record(s->op[op], mg_clock_mono_ns() - c->recv_ns);
}

void node_stats_commit(mg_node *n, uint64_t ns)
{
    if (n->stats != NULL)
        mg_hist_record(n->stats->stage[STAGE_PROPOSE_COMMIT], ns);
}

void node_stats_scan(mg_node *n, uint64_t ns)
{
    if (n->stats != NULL)
        mg_hist_record(n->stats->stage[STAGE_SCAN], ns);
}

mg_hist *node_stats_apply_hist(mg_node *n)
{
    return n->stats != NULL ? n->stats->stage[STAGE_APPLY] : NULL;
}

mg_metrics *mg_node_metrics(mg_node *n)
{
    return n->stats ? n->stats->reg : NULL;
}

/* ---- gauges and STATS ----------------------------------------------------- */

/* Registers the gauges of group slot i (under refresh_lock). */
static bool group_gauges(mg_node *n, size_t i)
{
    node_stats *s = n->stats;
    if (s->memories[i] != NULL && s->cubes[i] != NULL)
        return true;
    char group[24];
    snprintf(group, sizeof group, "%llu", (unsigned long long)n->groups[i].group_id);
    const char *const labels[] = {"group", group, NULL};
    s->memories[i] =
        mg_metrics_gauge(s->reg, "memgrid_node_memories",
                         "Memories held by the replica of a group on this node.", labels, 0);
    s->cubes[i] = mg_metrics_gauge(s->reg, "memgrid_node_cubes",
                                   "Cubes held by the replica of a group on this node.", labels, 0);
    return s->memories[i] != NULL && s->cubes[i] != NULL;
}

/* Counts a group's cubes and memories (cube list + one count read each). */
static int count_group(mg_store *store, int64_t *cubes, int64_t *memories, mg_error *err)
{
    mg_cube *list = NULL;
    size_t n = 0;
    int rc = mg_store_cube_list(store, &list, &n, err);
    if (rc != MG_OK)
        return rc;
    int64_t total = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t count = 0;
        if (rc == MG_OK && (rc = mg_store_mem_count(store, list[i].cube_id, &count, err)) == MG_OK)
            total += (int64_t)count;
        mg_cube_clear(&list[i]);
    }
    free(list);
    *cubes = (int64_t)n;
    *memories = total;
    return rc;
}

/* Worker: brings the gauges up to date unless they are under a second old
 * (or another STATS is refreshing them right now). */
static void refresh_gauges(mg_node *n)
{
    node_stats *s = n->stats;
    uint64_t now = mg_clock_mono_ns();
    pthread_mutex_lock(&s->refresh_lock);
    if (s->refreshed_ns != 0 && now - s->refreshed_ns < GAUGE_REFRESH_NS) {
        pthread_mutex_unlock(&s->refresh_lock);
        return;
    }
    int64_t leaders = 0, lead_memories = 0, lead_cubes = 0, hosted = 0;
    bool open = node_stores_enter(n);
    size_t slots = node_group_slots(n);
    for (size_t i = 0; i < slots; i++) {
        node_group *ng = &n->groups[i];
        mg_node_group_status st;
        node_group_snapshot(n, ng, &st);
        hosted += atomic_load(&ng->hosted);
        bool leads = st.raft_state == RAFT_LEADER && atomic_load(&ng->hosted);
        leaders += leads;
        int64_t cubes = 0, memories = 0;
        mg_error err = {0};
        if (open && ng->store != NULL && count_group(ng->store, &cubes, &memories, &err) != MG_OK)
            mg_warn("node.stats_count", "group=%llu err=\"%s\"", (unsigned long long)ng->group_id,
                    err.msg);
        if (group_gauges(n, i)) {
            mg_gauge_set(s->cubes[i], cubes);
            mg_gauge_set(s->memories[i], memories);
        }
        if (leads) {
            lead_cubes += cubes;
            lead_memories += memories;
        }
    }
    if (open)
        node_stores_leave(n);
    mg_gauge_set(s->leaders, leaders);
    mg_gauge_set(s->groups, hosted);
    s->lead_cubes = lead_cubes;
    s->lead_memories = lead_memories;
    s->refreshed_ns = mg_clock_mono_ns();
    pthread_mutex_unlock(&s->refresh_lock);
}

void node_stats_run(node_ctx *c)
{
    mg_node *n = c->node;
    node_stats *s = n->stats;
    if (node_expired(c))
        return;
    refresh_gauges(n);
    pthread_mutex_lock(&s->refresh_lock);
    int64_t memories = s->lead_memories, cubes = s->lead_cubes;
    pthread_mutex_unlock(&s->refresh_lock);
    msgpack_sbuffer sb;
    msgpack_packer pk;
    node_reply_begin(c, &sb, &pk);
    int rc = msgpack_pack_map(&pk, 3);
    rc |= mg_mp_pack_cstr(&pk, "node");
    rc |= msgpack_pack_uint64(&pk, n->cfg.node_id);
    rc |= mg_mp_pack_cstr(&pk, "hist");
    rc |= mg_metrics_pack(s->reg, &pk) != MG_OK;
    rc |= mg_mp_pack_cstr(&pk, "gauges");
    rc |= msgpack_pack_map(&pk, 4);
    rc |= mg_mp_pack_cstr(&pk, "groups");
    rc |= msgpack_pack_int64(&pk, mg_gauge_get(s->groups));
    rc |= mg_mp_pack_cstr(&pk, "leaders");
    rc |= msgpack_pack_int64(&pk, mg_gauge_get(s->leaders));
    rc |= mg_mp_pack_cstr(&pk, "memories");
    rc |= msgpack_pack_int64(&pk, memories);
    rc |= mg_mp_pack_cstr(&pk, "cubes");
    rc |= msgpack_pack_int64(&pk, cubes);
    if (rc != 0) {
        msgpack_sbuffer_destroy(&sb);
        node_reply_error(c, MG_ENOMEM, "out of memory encoding the node's metrics", 0, NULL);
        return;
    }
    node_reply(c, &sb);
}
