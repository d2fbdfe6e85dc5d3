/*
 * Integration-test harness for a memgrid cluster: `memgrid node` processes
 * started with their identity (no topology file), one `memgrid router`
 * with --seeds, and the cluster created through the router's admin API
 * (POST /admin/init), all on loopback in a mkdtemp directory. Node N's
 * replicas live in <dir>/node-N.
 *
 * Ports: a block of free loopback ports found at start, below the
 * ephemeral range (the cluster tests share RESOURCE_LOCK cluster_ports):
 * node N has rpc base+20N, survey base+20N+1 and raft base port
 * base+20N+2 (group G listens on base+20N+2+G: room for groups 0..17).
 * Routers listen on a free port (--listen 127.0.0.1:0).
 *
 * Children get PR_SET_PDEATHSIG = SIGKILL (serve_harness.h); cluster_cleanup
 * kills every child still running by its pid and removes the directory.
 */
#ifndef MG_CLUSTER_HARNESS_H
#define MG_CLUSTER_HARNESS_H

#include "serve_harness.h"

#include <sys/types.h>

#define CLUSTER_NODES_MAX 5
#define CLUSTER_PORTS_PER_NODE 20u

typedef struct cluster {
    char dir[256];
    unsigned base_port;
    unsigned election_ms; /* 0 = the node's default */
    int n_nodes;          /* nodes started by cluster_start (the seeds) */
    int n_data_groups;
    int replicas;
    pid_t node_pid[CLUSTER_NODES_MAX + 1]; /* by node id; 0 when not running */
    serve router;                          /* pid and base URL of the first router */
} cluster;

/* Starts nodes 1..n_nodes, the router (seeds = those nodes; extra router
 * arguments may be NULL), POSTs /admin/init {"groups": n_data_groups,
 * "replicas": min(3, n_nodes)} and waits until a write goes through (at
 * most 20 s). 0, or -1 with a message (the caller still calls
 * cluster_cleanup). */
int cluster_start(cluster *c, int n_nodes, int n_data_groups, unsigned election_ms,
                  const char *const *router_args);

/* Starts (or restarts) node `id` (1..CLUSTER_NODES_MAX; ids above n_nodes
 * are extra nodes, not in init, to be added with `ctl add-node`); 0 or -1. */
int cluster_node_start(cluster *c, int id);

/* Sends sig to node `id` and reaps it (SIGKILL after timeout_ms). */
void cluster_node_stop(cluster *c, int id, int sig, unsigned timeout_ms);

/* Node id's rpc URL ("tcp://127.0.0.1:PORT"). cap ≥ 40. */
void cluster_node_rpc(const cluster *c, int id, char *out, size_t cap);

/* Starts a router (seeds = nodes 1..n_nodes) into *r, with --map-cache
 * map_cache unless NULL and extra arguments (may be NULL); 0 or -1. Stop it
 * with serve_stop(r, ...). cluster_start uses it for c->router. */
int cluster_router_start(const cluster *c, serve *r, const char *map_cache,
                         const char *const *extra);

/* Runs `memgrid ctl --router <router> ARGS...` (NULL-terminated), waits for
 * it and returns its exit status (128 + signal when killed); *out (may be
 * NULL) gets its stdout, malloc'd. stderr goes to the test's stderr. */
int cluster_ctl(const serve *router, char **out, ...) __attribute__((sentinel));

/* As cluster_ctl, with "--json" appended: the parsed stdout (a new
 * reference; NULL when it is not JSON, after printing it). *exit_code gets
 * the exit status. */
json_t *cluster_ctl_json(const serve *router, int *exit_code, ...) __attribute__((sentinel));

/* GET path on the router: the envelope's "data" (a new reference) when the
 * answer is 200, else NULL after printing the answer. */
json_t *cluster_admin_get(const serve *router, const char *path);

/* Polls GET /admin/status until "healthy" is true (at most timeout_ms): the
 * last status data (a new reference; NULL when none came), and *healthy. */
json_t *cluster_wait_healthy(const serve *router, unsigned timeout_ms, bool *healthy);

/* Milliseconds on the monotonic clock. */
double cluster_now_ms(void);

/* Kills everything still running and removes the directory. Twice is fine. */
void cluster_cleanup(cluster *c);

#endif
