/*
 * memgrid node: one data node of a cluster with a static topology
 * (cmd/topology.h, docs/OPERATIONS.md). It hosts its replica of every group
 * the topology places on it, listens for routers on the node's rpc and
 * survey URLs, and runs until SIGINT/SIGTERM, when it drains the requests in
 * flight and closes its groups. A first start bootstraps every group with
 * the replicas listed; a restart with the same topology reopens them.
 */
#include "memgrid.h"
#include "common.h"
#include "topology.h"

#include "../lib/log.h"
#include "../node/node.h"

#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NODE_CONTEXTS 256

static void node_usage(FILE *out)
{
    fprintf(out,
            "usage: memgrid node --config FILE --id N [--data DIR] [--log LEVEL]\n\n"
            "Runs one data node of a memgrid cluster: its replica of every shard group the\n"
            "topology file places on it (Raft over TCP with the other replicas), and the\n"
            "nng servers routers talk to. SIGINT/SIGTERM stop it cleanly; after a crash a\n"
            "restart with the same --config, --id and --data catches up from its peers.\n\n"
            "options (each also read from the environment variable shown):\n"
            "  --config FILE   the cluster topology, JSON (MEMGRID_CONFIG; required); the\n"
            "                  format is in docs/OPERATIONS.md\n"
            "  --id N          this node's id in the topology (MEMGRID_NODE_ID; required)\n"
            "  --data DIR      data directory (MEMGRID_DATA; default ./memgrid-node-N)\n"
            "  --log LEVEL     debug|info|warn|error|off (MEMGRID_LOG; default info)\n"
            "  -h, --help      this help\n\n"
            "Listens on the node's \"rpc\" and \"survey\" URLs and, for group G, on\n"
            "raft_host:(raft_port + G). A group's replica on node N has raft id N.\n\n"
            "When listening it prints one line:\n"
            "  memgrid node: node 1 listening on tcp://127.0.0.1:7110 (4 groups, data DIR)\n"
            "Groups elect their leaders once a majority of their replicas is up.\n\n"
            "exit codes: 0 stopped cleanly, 1 runtime failure, 2 usage error\n");
}

typedef struct node_opts {
    const char *config;
    const char *data;
    const char *log;
    unsigned long long id;
} node_opts;

static int parse_id(const char *s, unsigned long long *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end != '\0' || v == 0)
        return -1;
    *out = v;
    return 0;
}

/* 0 ok, 1 help printed, -1 usage error (printed). */
static int node_parse(int argc, char **argv, node_opts *o)
{
    memset(o, 0, sizeof *o);
    const char *v;
    if ((v = getenv("MEMGRID_CONFIG")) != NULL && *v)
        o->config = v;
    if ((v = getenv("MEMGRID_DATA")) != NULL && *v)
        o->data = v;
    if ((v = getenv("MEMGRID_NODE_ID")) != NULL && *v && parse_id(v, &o->id) != 0) {
        fprintf(stderr, "memgrid node: MEMGRID_NODE_ID=\"%s\" is not a node id (> 0)\n", v);
        return -1;
    }
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            node_usage(stdout);
            return 1;
        }
        char flag[32];
        const char *val;
        a = mg_cmd_split_flag(a, flag, sizeof flag, &val);
        if (strcmp(a, "--config") != 0 && strcmp(a, "--id") != 0 && strcmp(a, "--data") != 0 &&
            strcmp(a, "--log") != 0) {
            fprintf(stderr, "memgrid node: unknown option \"%s\" (see memgrid node --help)\n",
                    argv[i]);
            return -1;
        }
        if ((val = mg_cmd_flag_value("node", a, val, argc, argv, &i)) == NULL)
            return -1;
        bool bad = *val == '\0';
        if (strcmp(a, "--config") == 0)
            o->config = val;
        else if (strcmp(a, "--data") == 0)
            o->data = val;
        else if (strcmp(a, "--id") == 0)
            bad = parse_id(val, &o->id) != 0;
        else
            bad = mg_log_parse_level(val) < 0, o->log = val;
        if (bad) {
            fprintf(stderr, "memgrid node: bad value \"%s\" for %s (see memgrid node --help)\n",
                    val, a);
            return -1;
        }
    }
    if (o->config == NULL || o->id == 0) {
        fprintf(stderr, "memgrid node: --config and --id are required (see memgrid node "
                        "--help)\n");
        return -1;
    }
    return 0;
}

int mg_cmd_node(int argc, char **argv)
{
    node_opts o;
    int pr = node_parse(argc, argv, &o);
    if (pr != 0)
        return pr > 0 ? MG_EXIT_OK : MG_EXIT_USAGE;
    mg_cmd_apply_log(o.log);

    static mg_topology topo; /* large: not on the stack */
    int rc = mg_cmd_load_topology("node", o.config, &topo);
    if (rc != MG_EXIT_OK)
        return rc;
    const mg_topo_node *self = mg_topology_node(&topo, o.id);
    if (self == NULL) {
        fprintf(stderr, "memgrid node: node %llu is not in %s\n", o.id, o.config);
        return MG_EXIT_USAGE;
    }
    char default_data[64];
    if (o.data == NULL) {
        snprintf(default_data, sizeof default_data, "./memgrid-node-%llu", o.id);
        o.data = default_data;
    }

    /* Signals are taken by sigwait: block them before any thread starts. */
    sigset_t stop_set;
    mg_cmd_block_stop_signals(&stop_set);

    if (mg_cmd_make_data_dir("node", o.data) != 0)
        return MG_EXIT_FAILURE;

    /* This node's replicas: raft id = node id, peers from the topology. */
    static mg_node_group groups[MG_TOPO_GROUPS_MAX];
    static char addresses[MG_TOPO_GROUPS_MAX][MG_ADDRESS_MAX];
    static mg_group_peer peers[MG_TOPO_GROUPS_MAX][MG_TOPO_NODES_MAX];
    size_t n_groups = 0;
    for (size_t i = 0; i < topo.n_groups; i++) {
        const mg_topo_group *g = &topo.groups[i];
        bool hosted = false;
        for (size_t r = 0; r < g->n_replicas; r++) {
            const mg_topo_node *peer = mg_topology_node(&topo, g->replicas[r]);
            peers[n_groups][r].id = peer->id;
            mg_topology_raft_address(peer, g->id, peers[n_groups][r].address);
            hosted |= peer->id == self->id;
        }
        if (!hosted)
            continue;
        mg_topology_raft_address(self, g->id, addresses[n_groups]);
        groups[n_groups] = (mg_node_group){.group_id = g->id,
                                           .replica_id = self->id,
                                           .address = addresses[n_groups],
                                           .bootstrap = peers[n_groups],
                                           .n_bootstrap = g->n_replicas};
        n_groups++;
    }
    mg_group_tunables tun;
    mg_group_tunables_default(&tun);
    if (topo.election_timeout_ms)
        tun.election_timeout_ms = topo.election_timeout_ms;
    mg_node_config nc = {.data_dir = o.data,
                         .node_id = self->id,
                         .rep_url = self->rpc,
                         .respondent_url = self->survey,
                         .groups = groups,
                         .n_groups = n_groups,
                         .tunables = &tun,
                         .rep_contexts = NODE_CONTEXTS,
                         .respondent_contexts = NODE_CONTEXTS};
    mg_node *node = NULL;
    mg_error err;
    if (mg_node_start(&nc, &node, &err) != MG_OK) {
        fprintf(stderr, "memgrid node: %s\n", err.msg);
        return MG_EXIT_FAILURE;
    }
    mg_cmd_ready("memgrid node: node %llu listening on %s (%zu groups, data %s)\n",
                 (unsigned long long)self->id, self->rpc, n_groups, o.data);

    mg_cmd_wait_stop(&stop_set, "node.stop");
    mg_node_stop(node);
    fprintf(stderr, "memgrid node: stopped\n");
    return MG_EXIT_OK;
}
