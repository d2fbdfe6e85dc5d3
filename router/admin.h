/*
 * The router's admin API (docs/API.md "Admin API (cluster)") and the
 * orchestration of cluster changes (docs/ARCHITECTURE.md "Cluster: meta
 * group, slot ownership, membership"): init, add/remove node, move replica,
 * transfer and balance leadership, rebalance slots.
 *
 *   admin.c         shared helpers (request fields, calls to nodes and group
 *                   leaders, WRITEs and their outcomes, the nodes' membership
 *                   (NODE_INFO claims), reading the map and compare-and-set
 *                   map edits);
 *   admin_read.c    the map and the status view as JSON, and the read-only
 *                   handlers;
 *   admin_ops.c     init, add-node and rebalance, and their handlers;
 *   admin_member.c  a group's members and leadership: transfer-leader,
 *                   balance-leaders, move-replica, remove-node;
 *   admin_copy.c    moving a slot set from one data group to another (the
 *                   six steps of a rebalance: copy, freeze, delta, flip,
 *                   drop).
 *
 * Every operation is a sequence of idempotent steps whose state is the map
 * itself (and, for init, the nodes' membership records), so an operation
 * that failed half way can be rerun. One mutating
 * operation runs at a time per process (admin_lock_try); a second one
 * answers 409.
 *
 * Errors: functions return an mg_errcode with a message in *err naming the
 * step and group. MG_EEXIST stands for "cannot be done in the cluster's
 * current state" and MG_EBUSY for "the map changed concurrently": both
 * answer 409 (admin_fail).
 */
#ifndef MG_ROUTER_ADMIN_H
#define MG_ROUTER_ADMIN_H

#include "../cluster/command.h"
#include "../lib/cmap.h"
#include "api.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

/* Per-call timeouts. */
#define ADMIN_NODE_MS 1000        /* STATUS / NODE_INFO / STATS of one node */
#define ADMIN_GONE_MS 1000        /* GROUP_CLOSE on a node that is not connected */
#define ADMIN_STEP_MS 15000       /* a step that waits for a leader or a commit */
#define ADMIN_CATCHUP_MS 120000   /* GROUP_MEMBER add: the new replica catching up */

/* ---- handlers (route table in api_meta.c) -------------------------------- */

void api_admin_map(mg_router *r, const mg_api_req *req, mg_api_resp *resp);
void api_admin_status(mg_router *r, const mg_api_req *req, mg_api_resp *resp);
void api_admin_nodes(mg_router *r, const mg_api_req *req, mg_api_resp *resp);
void api_admin_groups(mg_router *r, const mg_api_req *req, mg_api_resp *resp);
void api_admin_slots(mg_router *r, const mg_api_req *req, mg_api_resp *resp);
void api_admin_init(mg_router *r, const mg_api_req *req, mg_api_resp *resp);
void api_admin_add_node(mg_router *r, const mg_api_req *req, mg_api_resp *resp);
void api_admin_remove_node(mg_router *r, const mg_api_req *req, mg_api_resp *resp);
void api_admin_transfer_leader(mg_router *r, const mg_api_req *req, mg_api_resp *resp);
void api_admin_move_replica(mg_router *r, const mg_api_req *req, mg_api_resp *resp);
void api_admin_rebalance(mg_router *r, const mg_api_req *req, mg_api_resp *resp);
/* POST /admin/balance-leaders. Its row in api_meta.c's table is still to be
 * added: {"POST", "/admin/balance-leaders", false, false, false, ...}. */
void api_admin_balance_leaders(mg_router *r, const mg_api_req *req, mg_api_resp *resp);

/* ---- shared helpers (admin.c) -------------------------------------------- */

/* A msgpack body under construction. */
typedef struct admin_buf {
    msgpack_sbuffer sb;
    msgpack_packer pk;
} admin_buf;

void admin_buf_init(admin_buf *b);
void admin_buf_free(admin_buf *b);

/* Request fields: false / MG_EINVAL with a 400 in resp when the body is
 * not an object or `key` is missing (when required) or not a non-negative
 * integer; *out = def when absent. */
bool admin_body_object(const mg_api_req *req, mg_api_resp *resp);
int admin_body_u64(const json_t *body, const char *key, bool required, uint64_t def,
                   uint64_t *out, mg_api_resp *resp);

/* The one-operation-at-a-time lock: false (and a 409 in resp when not NULL)
 * when another operation runs. admin_lock_wait blocks instead. */
bool admin_lock_try(mg_api_resp *resp);
void admin_lock_wait(void);
void admin_unlock(void);

/* Answers an admin error: 409 for MG_EEXIST and MG_EBUSY, else the API's
 * usual status for the code. */
void admin_fail(mg_api_resp *resp, const mg_error *err);

/* Monotonic milliseconds, for deadlines. */
uint64_t admin_now_ms(void);
void admin_sleep_ms(unsigned ms);

/* The current map from the meta group (refresh, then a copy). While the
 * router knows no map, every node is first asked at once whether it hosts
 * the meta group (ADMIN_NODE_MS): when none does (before init) the answer is
 * the empty map (epoch 0) at once; when one does, the leader read waits for
 * an election up to the call deadline, and still no leader gives the empty
 * map if no replica holds a map (an init that stopped half way), else
 * MG_EUNAVAIL. MG_EUNAVAIL / MG_ETIMEDOUT when a known meta group fails. */
int admin_map_read(mg_router *r, mg_cmap *out, mg_error *err);

/* An edit of a map copy: MG_OK with *changed telling whether it changed
 * anything (false: already done, nothing to write), or an error that stops
 * the edit. */
typedef int (*admin_edit_fn)(mg_cmap *m, void *arg, bool *changed, mg_error *err);

/* Read-modify-write of the map: reads the current map, applies edit, writes
 * it with epoch + 1 (meta_set expect = old epoch) and installs it in the
 * client. When the map changed meanwhile (MG_EBUSY) the edit is re-applied
 * to the new map, up to 3 times; then MG_EBUSY "map changed concurrently,
 * retry". *out (may be NULL) gets the resulting map. */
int admin_map_edit(mg_router *r, admin_edit_fn edit, void *arg, mg_cmap *out, mg_error *err);

/* Writes map `next` (epoch = expect + 1) to the meta group, whose replicas
 * are given. MG_EBUSY when the stored epoch is not `expect`. */
int admin_map_put(mg_router *r, const uint64_t *meta_nodes, uint32_t n, uint64_t expect,
                  const mg_cmap *next, mg_error *err);

/* One request to one node (no leader logic), at most timeout_ms. */
int admin_node_call(mg_router *r, uint64_t node, int op, uint64_t group, const admin_buf *body,
                    unsigned timeout_ms, mg_client_reply *out, mg_error *err);

/* The replica of `group` among `nodes` that leads it (a BARRIER answered;
 * replicas the client is connected to are asked first), polling until
 * timeout_ms. MG_EUNAVAIL "group G has no leader" after it. */
int admin_find_leader(mg_router *r, const uint64_t *nodes, uint32_t n, uint64_t group,
                      unsigned timeout_ms, uint64_t *leader, mg_error *err);

/* A request to the leader of `group` (replicas `nodes`), found as above and
 * found again when leadership moves, until timeout_ms. */
int admin_leader_call(mg_router *r, const uint64_t *nodes, uint32_t n, uint64_t group, int op,
                      const admin_buf *body, unsigned timeout_ms, mg_client_reply *out,
                      mg_error *err);

/* A WRITE of pre-packed commands (`body` is the whole {"cmds": [...]}) to
 * the group's leader; MG_OK when every outcome is MG_OK, MG_EEXIST /
 * MG_ENOTFOUND outcomes counted as success when `tolerate` says so, else the
 * first failing outcome with its message. counts[i] (may be NULL, n_cmds
 * long) gets the outcomes' counts. */
#define ADMIN_OK_EXIST 1u
#define ADMIN_OK_NOTFOUND 2u
int admin_write_body(mg_router *r, const uint64_t *nodes, uint32_t n, uint64_t group,
                     const admin_buf *body, size_t n_cmds, unsigned tolerate, uint64_t *counts,
                     mg_error *err);

/* One command as a WRITE (admin_write_body). */
int admin_write_cmd(mg_router *r, const uint64_t *nodes, uint32_t n, uint64_t group,
                    const mg_cmd *cmd, unsigned tolerate, uint64_t *count, mg_error *err);

/* slots_set / slots_drop on a data group. */
int admin_slots_set(mg_router *r, const mg_cmap *m, uint64_t group, const uint64_t *nodes,
                    uint32_t n, const mg_slotset *owned, mg_error *err);
int admin_slots_drop(mg_router *r, const uint64_t *nodes, uint32_t n, uint64_t group,
                     const mg_slotset *drop, uint64_t *cubes, mg_error *err);

/* GROUP_OPEN of group's replica on node (bootstrap voters = `voters` of the
 * map, or a join when voters is NULL). */
int admin_group_open(mg_router *r, const mg_cmap *m, uint64_t group, uint64_t node,
                     const uint64_t *voters, uint32_t n_voters, mg_error *err);

/* ---- cluster identity (admin.c) ------------------------------------------ */

/* What NODE_INFO says about a node's membership (node/node.h "Membership"). */
typedef struct admin_member {
    char cluster[MG_CMAP_CLUSTER_MAX];                /* "" = belongs to no cluster */
    char meta[MG_CMAP_REPLICAS_MAX][MG_CMAP_URL_MAX]; /* its meta group hints */
    uint32_t n_meta;
    uint32_t n_groups; /* replicas it hosts */
    char groups[64];   /* their ids for messages: "0,1,2" (cut short with "...") */
} admin_member;

/* NODE_INFO to `node` (known to the client by id): *out gets its
 * membership. With `cluster` (not NULL) the request claims the node for that
 * cluster with the meta hints meta[0..n_meta) (strings borrowed for the
 * call); the node answers MG_EEXIST "node N belongs to cluster X" when it
 * belongs to another, and *out shows the claim on MG_OK. A query waits
 * ADMIN_NODE_MS at most, a claim (a file sync on the node) ADMIN_STEP_MS.
 * Other errors as admin_node_call. */
int admin_node_member(mg_router *r, uint64_t node, const char *cluster, const char *const *meta,
                      uint32_t n_meta, admin_member *out, mg_error *err);

/* The rpc URLs of the nodes hosting group 0 in m, in replica order (pointers
 * into m); how many. */
uint32_t admin_meta_urls(const mg_cmap *m, const char *out[MG_CMAP_REPLICAS_MAX]);

/* Claims every node of m for m's cluster with m's meta hints (updating the
 * hints after group 0's replicas changed), all at once, ADMIN_NODE_MS at
 * most; best effort: a node that fails is logged (warn), a node of another
 * cluster loudly. Nothing to do for a map without a cluster id. */
void admin_claim_all(mg_router *r, const mg_cmap *m);

/* The cluster map as the admin API shows it. */
json_t *admin_map_json(const mg_cmap *m);
json_t *admin_node_json(const mg_cmap_node *n);

/* What every node of a map says about itself (STATUS, one short call each). */
typedef struct admin_view {
    const mg_cmap *map;
    bool up[MG_CMAP_NODES_MAX];       /* index as map->nodes */
    json_t *status[MG_CMAP_NODES_MAX]; /* the STATUS body as JSON, or NULL */
} admin_view;

void admin_view_load(mg_router *r, const mg_cmap *m, admin_view *v);
void admin_view_free(admin_view *v);
/* The STATUS entry of `group` on the node at index i, or NULL. */
const json_t *admin_view_entry(const admin_view *v, size_t i, uint64_t group);
/* Whether `node` answered STATUS (false for a node not in the map). */
bool admin_view_up(const admin_view *v, uint64_t node);
/* The node that leads `group` (a replica reporting "leader", the highest
 * term wins), 0 when none; *entry its STATUS entry. */
uint64_t admin_view_leader(const admin_view *v, uint64_t group, const json_t **entry);

/* ---- operations (admin_member.c, admin_copy.c) --------------------------- */

/* Moves group's replica from node `from` to node `to` (the ARCHITECTURE
 * steps, each skipped when already done). The last step, GROUP_CLOSE with
 * destroy on `from`, does not wait for a node that is not connected
 * (ADMIN_GONE_MS) and never fails the move: a node that cannot be reached
 * keeps the replica's directory (logged), which is no longer in the group's
 * configuration nor in the map. A move of group 0 then updates every node's
 * meta hints (admin_claim_all; remove-node moves through here too). */
int admin_move_replica(mg_router *r, uint64_t group, uint64_t from, uint64_t to, mg_error *err);

/* Makes each group of m with more than one replica led by its first replica
 * (replicas[0]) when that node answers STATUS and does not lead it yet:
 * GROUP_MEMBER transfer on the current leader. transfers (a JSON array, may
 * be NULL; borrowed) gets {"group", "from", "to"} for each transfer done.
 * With best_effort a failure is logged and the other groups are still done
 * (always MG_OK); otherwise the first failure stops it and is returned with
 * its message in *err (may be NULL). */
int admin_balance_leaders(mg_router *r, const mg_cmap *m, bool best_effort, json_t *transfers,
                          mg_error *err);

/* Totals of one slot move. */
typedef struct admin_move_stats {
    uint64_t cubes;
    uint64_t memories;
} admin_move_stats;

/* Moves the slots S (all owned by data group src in the current map) to data
 * group dst with writes running: the six steps of a rebalance. */
int admin_move_slots(mg_router *r, uint64_t src, uint64_t dst, const mg_slotset *S,
                     admin_move_stats *st, mg_error *err);

#endif
