/*
 * The cluster map (DESIGN §5): the nodes, the shard groups and where their
 * replicas live, and the slot map (slot → data group), with an epoch that
 * grows on every change. The meta group (group 0) holds the authoritative
 * copy (cluster/command.h "meta_set"); routers cache it and refresh it on
 * MG_EWRONGGROUP / MG_ENOTLEADER. Pure data and functions: used by cluster/
 * (apply), node/ and router/ alike.
 *
 * Placement rules (mg_cmap_check enforces them):
 *   - group 0 is the meta group: it has replicas but owns no slot;
 *   - every slot is owned by exactly one data group (id ≥ 1) that exists;
 *   - a group never has two replicas on one node; every replica names a
 *     node of the map;
 *   - node ids and group ids are unique; a group's replica on node N has
 *     raft id N and listens on node N's raft_host:(raft_port + group id).
 *
 * Cluster identity: `cluster` is the cluster's id, a UUID string made by
 * `ctl init` (router/admin_ops.c), "" before init. Maps written before ids
 * existed have none and stay valid: mg_cmap_check accepts "" at any epoch
 * (requiring it would refuse every stored map and fixture of older builds);
 * a non-empty id must be a UUID. The first add-node on such a map gives it
 * one. Nodes record the id they belong to (node/node.h "Membership").
 *
 * Encoding (msgpack, versioned; readers skip unknown keys):
 *   {"v": 1, "epoch": uint, "cluster": str (absent or "" = none),
 *    "nodes":  [{"id": uint, "rpc": str, "survey": str, "raft_host": str,
 *                "raft_port": uint, "state": "up"|"removing"}, ...],
 *    "groups": [{"id": uint, "replicas": [node id, ...]}, ...],
 *    "slots":  [[first slot, last slot, group id], ...]}   (runs, in slot order)
 */
#ifndef MG_CMAP_H
#define MG_CMAP_H

#include "error.h"
#include "mp.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MG_SLOTS 4096
#define MG_CMAP_NODES_MAX 64
#define MG_CMAP_GROUPS_MAX 256     /* group ids 0 .. MG_CMAP_GROUPS_MAX - 1 */
#define MG_CMAP_REPLICAS_MAX 7
#define MG_CMAP_URL_MAX 128
#define MG_CMAP_HOST_MAX 48
#define MG_CMAP_CLUSTER_MAX 40 /* a UUID string (36) and its NUL, with room */
#define MG_CMAP_VERSION 1

enum mg_cmap_node_state {
    MG_CMAP_NODE_UP = 0,
    MG_CMAP_NODE_REMOVING,  /* remove-node in progress: place nothing new on it */
};

typedef struct mg_cmap_node {
    uint64_t id;                      /* > 0 */
    char rpc[MG_CMAP_URL_MAX];        /* nng rep URL */
    char survey[MG_CMAP_URL_MAX];     /* nng respondent URL */
    char raft_host[MG_CMAP_HOST_MAX]; /* IPv4 literal */
    uint32_t raft_port;               /* group G listens on raft_port + G */
    int state;                        /* enum mg_cmap_node_state */
} mg_cmap_node;

typedef struct mg_cmap_group {
    uint64_t id;
    uint64_t replicas[MG_CMAP_REPLICAS_MAX]; /* node ids, in the order placed */
    uint32_t n_replicas;
} mg_cmap_group;

/* About 38 KiB: allocate it, do not put it on a small stack. */
typedef struct mg_cmap {
    uint64_t epoch;                    /* 0 = no map yet (cluster not initialized) */
    char cluster[MG_CMAP_CLUSTER_MAX]; /* the cluster's id (UUID), "" = none (above) */
    mg_cmap_node nodes[MG_CMAP_NODES_MAX];
    uint32_t n_nodes;
    mg_cmap_group groups[MG_CMAP_GROUPS_MAX]; /* sorted by id */
    uint32_t n_groups;
    uint16_t slot_group[MG_SLOTS];    /* slot → data group id */
} mg_cmap;

/* slot = XXH3_64bits(cube_id) % MG_SLOTS. */
uint32_t mg_slot_of(const char *cube_id, size_t len);

/* Zeroes the map (epoch 0, nothing in it). */
void mg_cmap_init(mg_cmap *m);

/* Checks the rules above (and that `cluster` is "" or a UUID): MG_EINVAL
 * with the first broken one in err. */
int mg_cmap_check(const mg_cmap *m, mg_error *err);

/* Lookups: NULL when absent. */
const mg_cmap_node *mg_cmap_node_get(const mg_cmap *m, uint64_t node_id);
const mg_cmap_group *mg_cmap_group_get(const mg_cmap *m, uint64_t group_id);
mg_cmap_group *mg_cmap_group_mut(mg_cmap *m, uint64_t group_id);
bool mg_cmap_group_has(const mg_cmap_group *g, uint64_t node_id);

/* The data group that owns a cube. */
static inline uint64_t mg_cmap_cube_group(const mg_cmap *m, const char *cube_id, size_t len)
{
    return m->slot_group[mg_slot_of(cube_id, len)];
}

/* "host:port" of node's replica of group (MG_EINVAL when the port would pass
 * 65535). cap ≥ 64. */
int mg_cmap_raft_address(const mg_cmap_node *n, uint64_t group_id, char *out, size_t cap,
                         mg_error *err);

/* Slots a group owns. */
uint32_t mg_cmap_group_slots(const mg_cmap *m, uint64_t group_id);

/* Edits (no epoch change; the caller bumps epoch once per committed change).
 * MG_EEXIST / MG_ENOTFOUND / MG_ETOOBIG / MG_EINVAL as apt. */
int mg_cmap_add_node(mg_cmap *m, const mg_cmap_node *n, mg_error *err);
int mg_cmap_remove_node(mg_cmap *m, uint64_t node_id, mg_error *err); /* must host nothing */
int mg_cmap_add_group(mg_cmap *m, uint64_t group_id, const uint64_t *replicas, uint32_t n,
                      mg_error *err);
int mg_cmap_add_replica(mg_cmap *m, uint64_t group_id, uint64_t node_id, mg_error *err);
int mg_cmap_remove_replica(mg_cmap *m, uint64_t group_id, uint64_t node_id, mg_error *err);

/* Placement. Picks n distinct nodes for a new group: state UP, not in
 * `exclude` (may be NULL), fewest replicas hosted first, ties by lower id.
 * MG_EINVAL ("cannot place R replicas on N eligible nodes") when too few. */
int mg_cmap_place(const mg_cmap *m, uint32_t n, const uint64_t *exclude, size_t n_exclude,
                  uint64_t *out, mg_error *err);

/* Replicas hosted by a node (all groups, meta included). */
uint32_t mg_cmap_node_load(const mg_cmap *m, uint64_t node_id);

/* The initial map of `ctl init`: nodes[0..n_nodes) as given, the meta group
 * and data groups 1..n_groups with `replicas` replicas each, placed
 * round-robin over the whole cluster (replica j of group g on node
 * (g * replicas + j) mod n_nodes; the meta group on nodes 0..R-1), so that
 * every node's load is within one of the others and no group has two
 * replicas on one node; the slots split evenly in order
 * (group 1 gets the first 4096/n_groups, ...). epoch = 1. MG_EINVAL when
 * replicas > n_nodes, replicas == 0 or > MG_CMAP_REPLICAS_MAX, n_groups == 0
 * or ≥ MG_CMAP_GROUPS_MAX. The cluster id is left "" (the caller sets it). */
int mg_cmap_initial(mg_cmap *m, const mg_cmap_node *nodes, uint32_t n_nodes, uint32_t n_groups,
                    uint32_t replicas, mg_error *err);

/* Slot moves that even out the slot counts over the given target groups
 * (each ends with ⌊4096/n⌋ or ⌈4096/n⌉): for every slot whose owner must
 * give it up, out[slot] = new group, else 0. Groups not in `targets` give up
 * all their slots. Moves as few slots as possible. MG_EINVAL when a target is
 * not a data group of the map. */
int mg_cmap_plan_even(const mg_cmap *m, const uint64_t *targets, size_t n_targets,
                      uint16_t out[MG_SLOTS], mg_error *err);

/* msgpack codec (format above). Decoding trusts nothing: MG_ECORRUPT for
 * malformed input, MG_EVERSION for a newer "v"; the decoded map is checked
 * with mg_cmap_check (MG_EINVAL) unless its epoch is 0. */
int mg_cmap_pack(msgpack_packer *pk, const mg_cmap *m);
int mg_cmap_encode(const mg_cmap *m, void **buf, size_t *len, mg_error *err); /* malloc'd */
int mg_cmap_decode(const void *buf, size_t len, mg_cmap *out, mg_error *err);

/* ---- slot sets (the data groups' ownership records) -------------------- */

/* 4096 bits, bit s set = slot s. */
typedef struct mg_slotset {
    uint64_t w[MG_SLOTS / 64];
} mg_slotset;

static inline bool mg_slotset_has(const mg_slotset *s, uint32_t slot)
{
    return (s->w[slot / 64] >> (slot % 64)) & 1u;
}
static inline void mg_slotset_add(mg_slotset *s, uint32_t slot)
{
    s->w[slot / 64] |= (uint64_t)1 << (slot % 64);
}
static inline void mg_slotset_del(mg_slotset *s, uint32_t slot)
{
    s->w[slot / 64] &= ~((uint64_t)1 << (slot % 64));
}
uint32_t mg_slotset_count(const mg_slotset *s);

/* The slots a group owns in a map. */
void mg_cmap_group_slotset(const mg_cmap *m, uint64_t group_id, mg_slotset *out);

/* Text form for people and the admin API: "0-1365,2000,2048-4095" ("" for
 * none). mg_slotset_parse accepts the same (spaces allowed around commas,
 * ranges inclusive), MG_EINVAL with the offending part otherwise. */
int mg_slotset_format(const mg_slotset *s, char *buf, size_t cap); /* MG_ETOOBIG */
int mg_slotset_parse(const char *text, mg_slotset *out, mg_error *err);

#endif
