/*
 * memgrid node: one data node of a cluster. It is started with its identity
 * only (id, nng URLs, raft host and base port, data directory) and hosts
 * nothing until `memgrid ctl init` (or a move/rebalance) opens replicas on
 * it over the wire (GROUP_OPEN); a restart reopens every replica its data
 * directory holds. It runs until SIGINT/SIGTERM, when it drains the requests
 * in flight and closes its groups.
 */
#include "memgrid.h"
#include "common.h"

#include "../lib/log.h"
#include "../node/node.h"

#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NODE_CONTEXTS 256
#define DEFAULT_RPC "tcp://127.0.0.1:7110"
#define DEFAULT_RAFT_HOST "127.0.0.1"
#define DEFAULT_ELECTION_MS 400
#define URL_CAP 256

static void node_usage(FILE *out)
{
    fprintf(out,
            "usage: memgrid node --id N [--data DIR] [--rpc URL] [--survey URL]\n"
            "                    [--raft-host IP] [--raft-port P] [--advertise-rpc URL]\n"
            "                    [--advertise-survey URL] [--election-ms N] [--log LEVEL]\n"
            "                    [--config FILE]\n\n"
            "Runs one data node of a memgrid cluster. A new node hosts nothing: `memgrid ctl\n"
            "init` (or a move-replica / rebalance) opens replicas of shard groups on it, and\n"
            "their files live under --data. A restart with the same --data reopens every\n"
            "replica it hosted and catches up from its peers. SIGINT/SIGTERM stop it cleanly.\n\n"
            "options (each also read from the environment variable shown):\n"
            "  --id N                 this node's id, > 0 (MEMGRID_NODE_ID; required); its\n"
            "                         replicas have raft id N\n"
            "  --data DIR             data directory (MEMGRID_DATA; default ./memgrid-node-N)\n"
            "  --rpc URL              nng URL routers send requests to (MEMGRID_RPC;\n"
            "                         default " DEFAULT_RPC ")\n"
            "  --survey URL           nng URL for searches (MEMGRID_SURVEY; default: the rpc\n"
            "                         URL with port + 1)\n"
            "  --raft-host IP         IPv4 address the replicas listen on (MEMGRID_RAFT_HOST;\n"
            "                         default " DEFAULT_RAFT_HOST ")\n"
            "  --raft-port P          raft base port (MEMGRID_RAFT_PORT; default: the rpc port\n"
            "                         + 2): the replica of group G listens on P + G\n"
            "  --advertise-rpc URL    rpc URL other processes dial, when not --rpc\n"
            "                         (MEMGRID_ADVERTISE_RPC)\n"
            "  --advertise-survey URL the same for --survey (MEMGRID_ADVERTISE_SURVEY)\n"
            "  --election-ms N        raft election timeout in ms (MEMGRID_ELECTION_MS;\n"
            "                         default 400)\n"
            "  --log LEVEL            debug|info|warn|error|off (MEMGRID_LOG; default info)\n"
            "  --config FILE          read options from FILE, lines \"key = value\" with the\n"
            "                         long option names (MEMGRID_CONFIG); the command line\n"
            "                         wins over the file, the file over the environment\n"
            "  -h, --help             this help\n\n"
            "When listening it prints one line:\n"
            "  memgrid node: node 1 listening on tcp://127.0.0.1:7110 (0 groups, data DIR)\n\n"
            "exit codes: 0 stopped cleanly, 1 runtime failure, 2 usage error\n");
}

typedef struct node_opts {
    const char *data;
    const char *log;
    const char *rpc;
    const char *survey;
    const char *raft_host;
    const char *advertise_rpc;
    const char *advertise_survey;
    unsigned long long id;
    unsigned raft_port; /* 0 = rpc port + 2 */
    unsigned election_ms;
} node_opts;

static const char *const known_keys[] = {
    "id",
    "data",
    "rpc",
    "survey",
    "raft-host",
    "raft-port",
    "advertise-rpc",
    "advertise-survey",
    "election-ms",
    "log",
    NULL,
};

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

/* The port at the end of an URL ("tcp://host:port"), or -1. */
static int url_port(const char *url)
{
    const char *colon = strrchr(url, ':');
    unsigned port;
    if (colon == NULL || strncmp(url, "tcp://", 6) != 0 ||
        mg_cmd_parse_uint(colon + 1, 1, 65535, &port) != 0)
        return -1;
    return (int)port;
}

/* Sets one option from its value; false when the value is bad. */
static bool node_set(node_opts *o, const char *opt, const char *val)
{
    if (*val == '\0')
        return false;
    if (strcmp(opt, "--id") == 0)
        return parse_id(val, &o->id) == 0;
    if (strcmp(opt, "--data") == 0)
        o->data = val;
    else if (strcmp(opt, "--rpc") == 0)
        o->rpc = val;
    else if (strcmp(opt, "--survey") == 0)
        o->survey = val;
    else if (strcmp(opt, "--raft-host") == 0)
        o->raft_host = val;
    else if (strcmp(opt, "--raft-port") == 0)
        return mg_cmd_parse_uint(val, 1, 65535, &o->raft_port) == 0;
    else if (strcmp(opt, "--advertise-rpc") == 0)
        o->advertise_rpc = val;
    else if (strcmp(opt, "--advertise-survey") == 0)
        o->advertise_survey = val;
    else if (strcmp(opt, "--election-ms") == 0)
        return mg_cmd_parse_uint(val, 10, 600000, &o->election_ms) == 0;
    else if (strcmp(opt, "--log") == 0) {
        o->log = val;
        return mg_log_parse_level(val) >= 0;
    } else
        return false;
    return true;
}

static bool known_option(const char *opt)
{
    if (strncmp(opt, "--", 2) != 0)
        return false;
    for (size_t i = 0; known_keys[i] != NULL; i++)
        if (strcmp(opt + 2, known_keys[i]) == 0)
            return true;
    return false;
}

/* 0 ok, 1 help printed, -1 usage error (printed). */
static int node_parse(int argc, char **argv, node_opts *o)
{
    static const struct {
        const char *env, *opt;
    } envs[] = {
        {"MEMGRID_NODE_ID", "--id"},
        {"MEMGRID_DATA", "--data"},
        {"MEMGRID_RPC", "--rpc"},
        {"MEMGRID_SURVEY", "--survey"},
        {"MEMGRID_RAFT_HOST", "--raft-host"},
        {"MEMGRID_RAFT_PORT", "--raft-port"},
        {"MEMGRID_ADVERTISE_RPC", "--advertise-rpc"},
        {"MEMGRID_ADVERTISE_SURVEY", "--advertise-survey"},
        {"MEMGRID_ELECTION_MS", "--election-ms"},
        {"MEMGRID_LOG", "--log"},
    };
    memset(o, 0, sizeof *o);
    o->election_ms = DEFAULT_ELECTION_MS;
    for (size_t i = 0; i < sizeof envs / sizeof envs[0]; i++) {
        const char *v = getenv(envs[i].env);
        if (v != NULL && *v != '\0' && !node_set(o, envs[i].opt, v)) {
            fprintf(stderr, "memgrid node: bad value %s=\"%s\" (see memgrid node --help)\n",
                    envs[i].env, v);
            return -1;
        }
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
        if (!known_option(a)) {
            fprintf(stderr, "memgrid node: unknown option \"%s\" (see memgrid node --help)\n",
                    argv[i]);
            return -1;
        }
        if ((val = mg_cmd_flag_value("node", a, val, argc, argv, &i)) == NULL)
            return -1;
        if (!node_set(o, a, val)) {
            fprintf(stderr, "memgrid node: bad value \"%s\" for %s (see memgrid node --help)\n",
                    val, a);
            return -1;
        }
    }
    if (o->id == 0) {
        fprintf(stderr, "memgrid node: --id is required (see memgrid node --help)\n");
        return -1;
    }
    return 0;
}

int mg_cmd_node(int argc, char **argv)
{
    for (int i = 0; i < argc; i++) /* help even when the config file is broken */
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            node_usage(stdout);
            return MG_EXIT_OK;
        }
    int rc = mg_cmd_config_expand("node", known_keys, &argc, &argv);
    if (rc != MG_EXIT_OK)
        return rc;
    node_opts o;
    int pr = node_parse(argc, argv, &o);
    if (pr != 0)
        return pr > 0 ? MG_EXIT_OK : MG_EXIT_USAGE;
    mg_cmd_apply_log(o.log);

    char default_data[64], survey[URL_CAP];
    if (o.data == NULL) {
        snprintf(default_data, sizeof default_data, "./memgrid-node-%llu", o.id);
        o.data = default_data;
    }
    if (o.rpc == NULL)
        o.rpc = DEFAULT_RPC;
    if (o.raft_host == NULL)
        o.raft_host = DEFAULT_RAFT_HOST;
    int port = url_port(o.rpc);
    if (o.survey == NULL) {
        const char *colon = strrchr(o.rpc, ':');
        if (port < 0 || port + 1 > 65535 || (size_t)(colon - o.rpc) + 8 > sizeof survey) {
            fprintf(stderr, "memgrid node: --survey is required when --rpc is not "
                            "tcp://HOST:PORT\n");
            return MG_EXIT_USAGE;
        }
        snprintf(survey, sizeof survey, "%.*s:%d", (int)(colon - o.rpc), o.rpc, port + 1);
        o.survey = survey;
    }
    if (o.raft_port == 0) {
        if (port < 0 || port + 2 > 65535) {
            fprintf(stderr, "memgrid node: --raft-port is required when --rpc is not "
                            "tcp://HOST:PORT\n");
            return MG_EXIT_USAGE;
        }
        o.raft_port = (unsigned)port + 2;
    }

    /* Signals are taken by sigwait: block them before any thread starts. */
    sigset_t stop_set;
    mg_cmd_block_stop_signals(&stop_set);

    if (mg_cmd_make_data_dir("node", o.data) != 0)
        return MG_EXIT_FAILURE;

    mg_group_tunables tun;
    mg_group_tunables_default(&tun);
    tun.election_timeout_ms = o.election_ms;
    if (tun.heartbeat_timeout_ms * 2 > tun.election_timeout_ms)
        tun.heartbeat_timeout_ms = tun.election_timeout_ms / 4 ? tun.election_timeout_ms / 4 : 1;
    mg_node_config nc = {.data_dir = o.data,
                         .node_id = o.id,
                         .rep_url = o.rpc,
                         .respondent_url = o.survey,
                         .raft_host = o.raft_host,
                         .raft_port = o.raft_port,
                         .advertise_rpc = o.advertise_rpc,
                         .advertise_survey = o.advertise_survey,
                         .tunables = &tun,
                         .rep_contexts = NODE_CONTEXTS,
                         .respondent_contexts = NODE_CONTEXTS};
    mg_node *node = NULL;
    mg_error err = {0};
    if (mg_node_start(&nc, &node, &err) != MG_OK) {
        fprintf(stderr, "memgrid node: %s\n", err.msg);
        return MG_EXIT_FAILURE;
    }
    mg_cmd_ready("memgrid node: node %llu listening on %s (%zu groups, data %s)\n", o.id, o.rpc,
                 mg_node_n_groups(node), o.data);

    mg_cmd_wait_stop(&stop_set, "node.stop");
    mg_node_stop(node);
    fprintf(stderr, "memgrid node: stopped\n");
    return MG_EXIT_OK;
}
