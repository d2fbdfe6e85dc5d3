/* The static topology file (topology.h), parsed with jansson. */
#include "topology.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

static int copy_str(const char *path, const char *what, const char *s, char *out, size_t cap,
                    mg_error *err)
{
    if (s == NULL || *s == '\0' || strlen(s) >= cap)
        return mg_error_set(err, MG_EINVAL, "%s: %s must be a non-empty string under %zu bytes",
                            path, what, cap);
    memcpy(out, s, strlen(s) + 1);
    return MG_OK;
}

static int load_node(const char *path, size_t i, json_t *jn, mg_topo_node *n, mg_error *err)
{
    json_error_t je;
    json_int_t id = 0, port = 0;
    const char *rpc = NULL, *survey = NULL, *host = NULL;
    if (json_unpack_ex(jn, &je, JSON_STRICT, "{s:I,s:s,s:s,s:s,s:I}", "id", &id, "rpc", &rpc,
                       "survey", &survey, "raft_host", &host, "raft_port", &port) != 0)
        return mg_error_set(err, MG_EINVAL,
                            "%s: nodes[%zu]: %s (each node is {\"id\", \"rpc\", \"survey\", "
                            "\"raft_host\", \"raft_port\"})",
                            path, i, je.text);
    if (id <= 0)
        return mg_error_set(err, MG_EINVAL, "%s: nodes[%zu]: \"id\" must be > 0", path, i);
    if (port <= 0 || port + MG_TOPO_GROUPS_MAX > 65536)
        return mg_error_set(err, MG_EINVAL, "%s: nodes[%zu]: \"raft_port\" must leave room for "
                            "%d group ports below 65536", path, i, MG_TOPO_GROUPS_MAX);
    struct in_addr a;
    if (inet_pton(AF_INET, host, &a) != 1)
        return mg_error_set(err, MG_EINVAL, "%s: nodes[%zu]: \"raft_host\" must be an IPv4 "
                            "literal", path, i);
    n->id = (uint64_t)id;
    n->raft_port = (unsigned)port;
    int rc = copy_str(path, "\"rpc\"", rpc, n->rpc, sizeof n->rpc, err);
    if (rc == MG_OK)
        rc = copy_str(path, "\"survey\"", survey, n->survey, sizeof n->survey, err);
    if (rc == MG_OK)
        rc = copy_str(path, "\"raft_host\"", host, n->raft_host, sizeof n->raft_host, err);
    return rc;
}

static int load_group(const char *path, size_t i, json_t *jg, const mg_topology *t,
                      mg_topo_group *g, mg_error *err)
{
    json_error_t je;
    json_int_t id = -1;
    json_t *reps = NULL;
    if (json_unpack_ex(jg, &je, JSON_STRICT, "{s:I,s:o}", "id", &id, "replicas", &reps) != 0)
        return mg_error_set(err, MG_EINVAL,
                            "%s: groups[%zu]: %s (each group is {\"id\", \"replicas\": [node "
                            "ids]})",
                            path, i, je.text);
    if (id < 0 || id >= MG_TOPO_GROUPS_MAX)
        return mg_error_set(err, MG_EINVAL, "%s: groups[%zu]: \"id\" must be 0..%d", path, i,
                            MG_TOPO_GROUPS_MAX - 1);
    if (!json_is_array(reps) || json_array_size(reps) == 0 ||
        json_array_size(reps) > MG_TOPO_NODES_MAX)
        return mg_error_set(err, MG_EINVAL, "%s: groups[%zu]: \"replicas\" must be a non-empty "
                            "array of node ids", path, i);
    g->id = (uint64_t)id;
    g->n_replicas = 0;
    size_t k;
    json_t *v;
    json_array_foreach(reps, k, v) {
        json_int_t nid = json_is_integer(v) ? json_integer_value(v) : 0;
        if (nid <= 0 || mg_topology_node(t, (uint64_t)nid) == NULL)
            return mg_error_set(err, MG_EINVAL, "%s: groups[%zu]: replica %zu is not the id of "
                                "a node in \"nodes\"", path, i, k);
        for (size_t j = 0; j < g->n_replicas; j++)
            if (g->replicas[j] == (uint64_t)nid)
                return mg_error_set(err, MG_EINVAL, "%s: groups[%zu]: node %lld listed twice",
                                    path, i, (long long)nid);
        g->replicas[g->n_replicas++] = (uint64_t)nid;
    }
    return MG_OK;
}

int mg_topology_load(const char *path, mg_topology *t, mg_error *err)
{
    memset(t, 0, sizeof *t);
    json_error_t je;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (root == NULL)
        return mg_error_set(err, je.line < 0 ? MG_EIO : MG_EINVAL, "%s:%d: %s", path, je.line,
                            je.text);
    json_t *nodes = NULL, *groups = NULL;
    json_int_t election = 0;
    int rc = MG_OK;
    if (json_unpack_ex(root, &je, JSON_STRICT, "{s:o,s:o,s?I}", "nodes", &nodes, "groups",
                       &groups, "election_timeout_ms", &election) != 0) {
        rc = mg_error_set(err, MG_EINVAL, "%s: %s (the file is {\"nodes\": [...], \"groups\": "
                          "[...], \"election_timeout_ms\"?})", path, je.text);
        goto done;
    }
    if (election < 0 || election > 60000) {
        rc = mg_error_set(err, MG_EINVAL, "%s: \"election_timeout_ms\" must be 0..60000", path);
        goto done;
    }
    t->election_timeout_ms = (unsigned)election;
    if (!json_is_array(nodes) || json_array_size(nodes) == 0 ||
        json_array_size(nodes) > MG_TOPO_NODES_MAX) {
        rc = mg_error_set(err, MG_EINVAL, "%s: \"nodes\" must be an array of 1..%d nodes", path,
                          MG_TOPO_NODES_MAX);
        goto done;
    }
    if (!json_is_array(groups) || json_array_size(groups) < 2 ||
        json_array_size(groups) > MG_TOPO_GROUPS_MAX) {
        rc = mg_error_set(err, MG_EINVAL, "%s: \"groups\" must be an array of the meta group 0 "
                          "and at least one data group", path);
        goto done;
    }
    size_t i;
    json_t *v;
    json_array_foreach(nodes, i, v) {
        if ((rc = load_node(path, i, v, &t->nodes[i], err)) != MG_OK)
            goto done;
        for (size_t j = 0; j < i; j++)
            if (t->nodes[j].id == t->nodes[i].id) {
                rc = mg_error_set(err, MG_EINVAL, "%s: node id %llu listed twice", path,
                                  (unsigned long long)t->nodes[i].id);
                goto done;
            }
        t->n_nodes = i + 1;
    }
    bool seen[MG_TOPO_GROUPS_MAX] = {false};
    json_array_foreach(groups, i, v) {
        if ((rc = load_group(path, i, v, t, &t->groups[i], err)) != MG_OK)
            goto done;
        if (seen[t->groups[i].id]) {
            rc = mg_error_set(err, MG_EINVAL, "%s: group %llu listed twice", path,
                              (unsigned long long)t->groups[i].id);
            goto done;
        }
        seen[t->groups[i].id] = true;
        t->n_groups = i + 1;
    }
    /* Group 0 and data groups 1..D with no gap: the slot map splits the
     * slots evenly over 1..D. */
    for (size_t g = 0; g < t->n_groups; g++)
        if (!seen[g]) {
            rc = mg_error_set(err, MG_EINVAL, "%s: group ids must be 0 (meta) and 1..%zu (data) "
                              "without gaps; group %zu is missing", path, t->n_groups - 1, g);
            goto done;
        }
    t->n_data_groups = (uint32_t)(t->n_groups - 1);
done:
    json_decref(root);
    return rc;
}

const mg_topo_node *mg_topology_node(const mg_topology *t, uint64_t id)
{
    for (size_t i = 0; i < t->n_nodes; i++)
        if (t->nodes[i].id == id)
            return &t->nodes[i];
    return NULL;
}

void mg_topology_raft_address(const mg_topo_node *node, uint64_t group,
                              char out[MG_ADDRESS_MAX])
{
    snprintf(out, MG_ADDRESS_MAX, "%s:%u", node->raft_host, node->raft_port + (unsigned)group);
}
