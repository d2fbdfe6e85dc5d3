/*
 * Integration-test harness for a memgrid cluster with a static topology:
 * `memgrid node` processes and one `memgrid router` on loopback, started
 * from a topology file written into a mkdtemp directory (cmd/topology.h).
 * Node N's replica of every group lives in <dir>/node-N. Ports: a block of
 * free loopback ports found at start (node N: rpc base+10N, survey
 * base+10N+1, raft base+10N+2+G); the router listens on a free port.
 *
 * Children get PR_SET_PDEATHSIG = SIGKILL (serve_harness.h); cluster_cleanup
 * kills every child still running by its pid and removes the directory.
 */
#ifndef MG_CLUSTER_HARNESS_H
#define MG_CLUSTER_HARNESS_H

#include "serve_harness.h"

#include <sys/types.h>

#define CLUSTER_NODES_MAX 5

typedef struct cluster {
    char dir[256];
    char config[300];
    unsigned base_port;
    int n_nodes;
    int n_data_groups;
    pid_t node_pid[CLUSTER_NODES_MAX + 1]; /* by node id; 0 when not running */
    serve router;                          /* pid and base URL of the router */
} cluster;

/* Writes the topology (n_nodes nodes, group 0 and data groups 1..n_data,
 * every group on every node), starts the nodes and the router (extra router
 * arguments may be NULL) and waits until a write goes through (at most
 * 20 s). 0, or -1 with a message (the caller still calls cluster_cleanup). */
int cluster_start(cluster *c, int n_nodes, int n_data_groups, unsigned election_ms,
                  const char *const *router_args);

/* Starts (or restarts) node `id`; 0 or -1. */
int cluster_node_start(cluster *c, int id);

/* Sends sig to node `id` and reaps it (SIGKILL after timeout_ms). */
void cluster_node_stop(cluster *c, int id, int sig, unsigned timeout_ms);

/* Kills everything still running and removes the directory. Twice is fine. */
void cluster_cleanup(cluster *c);

#endif
