/*
 * The cluster client's NODE_INFO probes (router/client.h): a node's id and
 * survey URL, whether it hosts the meta group, the cluster it belongs to
 * and, while the client has no map, the meta group's nodes it names, which
 * become seeds (so that a router seeded with nodes that host no replica of
 * the meta group still finds it).
 */
#include "client_internal.h"

#include "../lib/log.h"
#include "../lib/mp.h"

#include <nng/protocol/reqrep0/req.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const uint8_t client_empty_body[1] = {0x80};

/* A NODE_INFO answer. Nodes older than "groups", "cluster" and "meta" leave
 * them out: read as none. */
typedef struct node_info {
    mg_cmap_node node;
    bool hosts_meta;                   /* "groups" has 0 */
    char cluster[MG_CMAP_CLUSTER_MAX]; /* "" = none */
    uint32_t n_meta;
    char meta[MG_CMAP_REPLICAS_MAX][MG_CMAP_URL_MAX];
} node_info;

static int read_groups(mg_mp_reader *r, node_info *info)
{
    uint32_t n;
    if (mg_mp_read_array(r, &n) != MG_OK)
        return MG_ECORRUPT;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t g;
        if (mg_mp_read_u64(r, &g) != MG_OK)
            return MG_ECORRUPT;
        info->hosts_meta |= g == 0;
    }
    return MG_OK;
}

static int read_cluster(mg_mp_reader *r, node_info *info)
{
    if (mg_mp_peek(r) == MG_MP_NIL)
        return mg_mp_read_nil(r);
    return mg_mp_read_strcpy(r, info->cluster, sizeof info->cluster);
}

/* The meta URLs are hints: one that is empty or too long is left out. */
static int read_meta(mg_mp_reader *r, node_info *info)
{
    uint32_t n;
    if (mg_mp_read_array(r, &n) != MG_OK)
        return MG_ECORRUPT;
    for (uint32_t i = 0; i < n; i++) {
        const char *url;
        uint32_t len;
        if (mg_mp_read_str(r, &url, &len) != MG_OK)
            return MG_ECORRUPT;
        if (len == 0 || len >= MG_CMAP_URL_MAX || info->n_meta == MG_CMAP_REPLICAS_MAX)
            continue;
        memcpy(info->meta[info->n_meta], url, len);
        info->meta[info->n_meta][len] = '\0';
        info->n_meta++;
    }
    return MG_OK;
}

static int node_info_read(const mg_wire_rep *rep, node_info *info, mg_error *err)
{
    memset(info, 0, sizeof *info);
    mg_cmap_node *node = &info->node;
    node->state = MG_CMAP_NODE_UP;
    mg_mp_reader r = mg_wire_body(rep->body, rep->body_len);
    uint32_t n;
    if (mg_mp_read_map(&r, &n) != MG_OK)
        goto bad;
    for (uint32_t i = 0; i < n; i++) {
        int rc;
        if (mg_mp_peek_str_eq(&r, "node")) {
            mg_mp_skip(&r);
            rc = mg_mp_read_u64(&r, &node->id);
        } else if (mg_mp_peek_str_eq(&r, "rpc")) {
            mg_mp_skip(&r);
            rc = mg_mp_read_strcpy(&r, node->rpc, sizeof node->rpc);
        } else if (mg_mp_peek_str_eq(&r, "survey")) {
            mg_mp_skip(&r);
            rc = mg_mp_read_strcpy(&r, node->survey, sizeof node->survey);
        } else if (mg_mp_peek_str_eq(&r, "raft_host")) {
            mg_mp_skip(&r);
            rc = mg_mp_read_strcpy(&r, node->raft_host, sizeof node->raft_host);
        } else if (mg_mp_peek_str_eq(&r, "raft_port")) {
            mg_mp_skip(&r);
            rc = mg_mp_read_u32(&r, &node->raft_port);
        } else if (mg_mp_peek_str_eq(&r, "groups")) {
            mg_mp_skip(&r);
            rc = read_groups(&r, info);
        } else if (mg_mp_peek_str_eq(&r, "cluster")) {
            mg_mp_skip(&r);
            rc = read_cluster(&r, info);
        } else if (mg_mp_peek_str_eq(&r, "meta")) {
            mg_mp_skip(&r);
            rc = read_meta(&r, info);
        } else {
            rc = mg_mp_skip(&r) != MG_OK || mg_mp_skip(&r) != MG_OK ? MG_ECORRUPT : MG_OK;
        }
        if (rc != MG_OK)
            goto bad;
    }
    if (node->id == 0)
        goto bad;
    return MG_OK;
bad:
    return mg_error_set(err, MG_ECORRUPT, "malformed NODE_INFO answer");
}

/* What an answer tells beyond the node itself: the cluster it belongs to
 * (kept when the client has heard of none) and, while the client has no
 * map, the meta group's nodes it names, added (and dialed) as seeds. A
 * seed is trusted for both; a node probed otherwise (mg_client_probe: an
 * admin checking a node before adding it, which may belong to another
 * cluster) only when it belongs to the cluster the client knows already,
 * so that probing a foreign node never makes the client find, and route
 * by, the foreign cluster's map. */
static void node_info_learn(mg_client *c, const node_info *info, bool seed)
{
    bool same = false;
    if (info->cluster[0] != '\0') {
        pthread_mutex_lock(&c->info_lock);
        if (c->cluster[0] == '\0' && seed)
            snprintf(c->cluster, sizeof c->cluster, "%s", info->cluster);
        same = strcmp(c->cluster, info->cluster) == 0;
        pthread_mutex_unlock(&c->info_lock);
        if (!same && seed)
            mg_warn("router.seed_cluster", "node %llu belongs to cluster %s, not to the one "
                    "another seed named", (unsigned long long)info->node.id, info->cluster);
    }
    if (mg_client_epoch(c) != 0 || (!seed && !same))
        return;
    for (uint32_t i = 0; i < info->n_meta; i++)
        client_seed_add(c, info->meta[i]);
}

/* Node i answered: its id (when the entry had none and no other entry has
 * it: a second URL of a known node stays unnamed), survey URL and meta
 * flag, and what it tells (node_info_learn). */
static void node_info_apply(mg_client *c, int i, const node_info *info, bool seed)
{
    node_conn *nc = &c->nodes[i];
    atomic_store(&nc->hosts_meta, info->hosts_meta);
    pthread_mutex_lock(&c->nodes_lock);
    if (client_node_id_at(c, (size_t)i) == 0 && client_node_index(c, info->node.id) < 0)
        atomic_store_explicit(&nc->id, info->node.id, memory_order_release);
    if (client_node_id_at(c, (size_t)i) == info->node.id)
        client_survey_dial_locked(c, nc, info->node.survey);
    pthread_mutex_unlock(&c->nodes_lock);
    node_info_learn(c, info, seed);
}

/* Appends url to a ", "-separated list, ending it with "..." when full. */
static void append_url(char *list, size_t cap, const char *url)
{
    size_t len = strlen(list);
    const char *sep = len > 0 ? ", " : "";
    if (len + strlen(sep) + strlen(url) + sizeof ", ..." <= cap)
        snprintf(list + len, cap - len, "%s%s", sep, url);
    else if ((len < 3 || strcmp(list + len - 3, "...") != 0) && len + sizeof ", ..." <= cap)
        snprintf(list + len, cap - len, "%s...", sep);
}

void client_probe_seeds(mg_client *c, unsigned timeout_ms, bool all,
                        client_seed_report *report)
{
    client_seed_report local;
    if (report == NULL)
        report = &local;
    memset(report, 0, sizeof *report);
    size_t from = 0;
    /* Seeds, then the meta nodes they name, then those the latter name. */
    for (int pass = 0; pass < 3; pass++) {
        size_t n = client_nodes_count(c);
        int idx[NODES_CAP];
        size_t k = 0;
        for (size_t i = from; i < n; i++)
            if (all ? atomic_load(&c->nodes[i].seed) : client_node_id_at(c, i) == 0)
                idx[k++] = (int)i;
        from = n;
        if (k == 0)
            break;
        mg_client_call *calls = calloc(k, sizeof *calls);
        if (calls == NULL)
            break;
        client_call_indices(c, idx, k, MG_OP_NODE_INFO, client_empty_body,
                            sizeof client_empty_body, timeout_ms, calls);
        for (size_t j = 0; j < k; j++) {
            const char *url = c->nodes[idx[j]].rpc;
            node_info info;
            mg_error err;
            report->asked++;
            if (calls[j].status != MG_OK) {
                mg_debug("router.seed_probe", "seed=%s err=\"%s\"", url, calls[j].err.msg);
                append_url(report->silent, sizeof report->silent, url);
                continue;
            }
            report->answered++;
            if (node_info_read(&calls[j].reply.rep, &info, &err) == MG_OK) {
                node_info_apply(c, idx[j], &info, true);
                report->hosts_meta |= info.hosts_meta;
                if (report->cluster[0] == '\0')
                    snprintf(report->cluster, sizeof report->cluster, "%s", info.cluster);
            } else {
                mg_warn("router.seed_probe", "seed=%s: %s", url, err.msg);
            }
            mg_client_reply_free(&calls[j].reply);
        }
        free(calls);
    }
}

int mg_client_probe(mg_client *c, const char *rpc_url, unsigned timeout_ms, mg_cmap_node *out,
                    mg_error *err)
{
    nng_socket sock;
    int rv = nng_req0_open(&sock);
    if (rv != 0)
        return mg_error_set(err, MG_EUNAVAIL, "probe: req socket: %s", nng_strerror(rv));
    nng_socket_set_ms(sock, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
    nng_socket_set_size(sock, NNG_OPT_RECVMAXSZ, 0);
    nng_socket_set_ms(sock, NNG_OPT_RECONNMINT, 20);
    nng_socket_set_ms(sock, NNG_OPT_RECONNMAXT, 200);
    nng_socket_set_ms(sock, NNG_OPT_SENDTIMEO, (nng_duration)timeout_ms);
    nng_socket_set_ms(sock, NNG_OPT_RECVTIMEO, (nng_duration)timeout_ms);
    rv = nng_dial(sock, rpc_url, NULL, NNG_FLAG_NONBLOCK);
    if (rv != 0) {
        nng_close(sock);
        return mg_error_set(err, MG_EUNAVAIL, "probe: dial %s: %s", rpc_url, nng_strerror(rv));
    }
    uint64_t rid = atomic_fetch_add(&c->next_rid, 1);
    nng_msg *m;
    int rc = client_build_request("", MG_OP_NODE_INFO, 0, client_empty_body,
                                  sizeof client_empty_body, rid, timeout_ms, &m);
    if (rc != MG_OK) {
        nng_close(sock);
        return mg_error_set(err, rc, "probe: %s", mg_strerror(rc));
    }
    rv = nng_sendmsg(sock, m, 0);
    if (rv != 0) {
        nng_msg_free(m);
        nng_close(sock);
        return mg_error_set(err, MG_EUNAVAIL, "node %s does not answer: %s", rpc_url,
                            nng_strerror(rv));
    }
    nng_msg *reply = NULL;
    rv = nng_recvmsg(sock, &reply, 0);
    if (rv != 0) {
        nng_close(sock);
        return mg_error_set(err, MG_EUNAVAIL, "node %s does not answer: %s", rpc_url,
                            nng_strerror(rv));
    }
    node_info *info = malloc(sizeof *info);
    mg_client_reply r = {.msg = reply};
    rc = info == NULL ? mg_error_set(err, MG_ENOMEM, "probe: out of memory")
                      : mg_wire_rep_decode(nng_msg_body(reply), nng_msg_len(reply), &r.rep, err);
    if (rc == MG_OK && r.rep.status != MG_OK)
        rc = mg_error_set(err, r.rep.status, "node %s: %.*s", rpc_url, (int)r.rep.msg_len,
                          r.rep.msg);
    if (rc == MG_OK)
        rc = node_info_read(&r.rep, info, err);
    mg_client_reply_free(&r);
    nng_close(sock);
    if (rc != MG_OK)
        goto done;
    if (out != NULL)
        *out = info->node;
    /* Dial it where we reached it (its advertised URL may name another
     * interface), unless we know it already. */
    int i = client_node_index(c, info->node.id);
    if (i < 0)
        i = client_node_add(c, info->node.id, rpc_url, info->node.survey);
    if (i < 0) {
        rc = mg_error_set(err, MG_ENOMEM, "router: too many nodes (at most %d)", NODES_CAP);
        goto done;
    }
    node_info_apply(c, i, info, false);
done:
    free(info);
    return rc;
}

bool mg_client_cluster(mg_client *c, char *buf, size_t cap)
{
    char id[MG_CMAP_CLUSTER_MAX] = "";
    pthread_rwlock_rdlock(&c->map_lock);
    if (c->map->epoch != 0)
        snprintf(id, sizeof id, "%s", c->map->cluster);
    pthread_rwlock_unlock(&c->map_lock);
    if (id[0] == '\0') {
        pthread_mutex_lock(&c->info_lock);
        snprintf(id, sizeof id, "%s", c->cluster);
        pthread_mutex_unlock(&c->info_lock);
    }
    if (cap > 0)
        snprintf(buf, cap, "%s", id);
    return id[0] != '\0';
}
