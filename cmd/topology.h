/*
 * The static cluster topology shared by `memgrid node` and `memgrid router`
 * (docs/OPERATIONS.md): a JSON file naming the nodes, the shard groups and
 * their replicas. Nothing here is replicated: every process reads the same
 * file at start (the meta group that will own this comes later).
 *
 *   {
 *     "nodes": [{"id": 1, "rpc": "tcp://127.0.0.1:7110",
 *                "survey": "tcp://127.0.0.1:7111",
 *                "raft_host": "127.0.0.1", "raft_port": 7120}, ...],
 *     "groups": [{"id": 0, "replicas": [1, 2, 3]}, ...],
 *     "election_timeout_ms": 400          (optional)
 *   }
 *
 * Conventions: group 0 is the meta group (reserved: hosted, not used for
 * data); the data groups are 1..D, all present, and the 4096 slots are split
 * evenly over them in order. A group's replica on node N has raft replica id
 * N, so a leader hint (a raft id) names the node directly. Node N's replica
 * of group G listens for raft on raft_host:(raft_port + G).
 */
#ifndef MG_CMD_TOPOLOGY_H
#define MG_CMD_TOPOLOGY_H

#include "../cluster/group.h"
#include "../lib/error.h"

#include <stddef.h>
#include <stdint.h>

#define MG_TOPO_NODES_MAX 64
#define MG_TOPO_GROUPS_MAX 256
#define MG_TOPO_URL_MAX 256

typedef struct mg_topo_node {
    uint64_t id;                   /* > 0 */
    char rpc[MG_TOPO_URL_MAX];     /* nng rep URL */
    char survey[MG_TOPO_URL_MAX];  /* nng respondent URL */
    char raft_host[48];            /* IPv4 literal */
    unsigned raft_port;            /* group G listens on raft_port + G */
} mg_topo_node;

typedef struct mg_topo_group {
    uint64_t id;
    uint64_t replicas[MG_TOPO_NODES_MAX]; /* node ids */
    size_t n_replicas;
} mg_topo_group;

typedef struct mg_topology {
    mg_topo_node nodes[MG_TOPO_NODES_MAX];
    size_t n_nodes;
    mg_topo_group groups[MG_TOPO_GROUPS_MAX];
    size_t n_groups;
    uint32_t n_data_groups;        /* groups 1..n_data_groups */
    unsigned election_timeout_ms;  /* 0 = the group default */
} mg_topology;

/* Reads and checks the file (unknown keys are errors, so typos are seen).
 * MG_EINVAL with the path and the reason in err; MG_EIO when unreadable. */
int mg_topology_load(const char *path, mg_topology *t, mg_error *err);

/* The node with that id, or NULL. */
const mg_topo_node *mg_topology_node(const mg_topology *t, uint64_t id);

/* The raft address of node `node`'s replica of group `group` ("host:port"). */
void mg_topology_raft_address(const mg_topo_node *node, uint64_t group,
                              char out[MG_ADDRESS_MAX]);

#endif
