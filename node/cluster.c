/*
 * The cluster ops (lib/wire.h "Cluster ops"), all internal (user ""):
 *
 *   NODE_INFO     answered on the nng thread from the configuration, the
 *                 table of hosted groups and the membership record; one
 *                 that carries a claim is applied on a worker (it writes
 *                 and syncs <data>/cluster) and answered the same way;
 *   META_GET      a worker reads the map from group 0's store;
 *   GROUP_OPEN    decoded (and checked against the membership record) on
 *                 the nng thread, opened on the loop;
 *   GROUP_CLOSE   on the loop, answered once the replica closed;
 *   GROUP_MEMBER  on the loop, on the group's leader, answered from the
 *                 membership change's callback (add/remove) or once the
 *                 target leads (transfer, polled every loop turn);
 *   BARRIER       on the loop, answered from the barrier's callback.
 *
 * A callback that fires because the group is being closed answers
 * MG_EUNAVAIL (the change may or may not have been committed) and never
 * touches the closing group.
 */
#include "node_internal.h"

#include "../cluster/meta.h"
#include "../lib/clock.h"
#include "../lib/log.h"
#include "../lib/uuid.h"

#include <stdlib.h>
#include <string.h>

enum member_action { MEMBER_ADD = 1, MEMBER_REMOVE, MEMBER_TRANSFER };

#define TRANSFER_WAIT_MIN_MS 2000

/* ---- helpers ------------------------------------------------------------ */

static void reply_empty(node_ctx *c)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    node_reply_begin(c, &sb, &pk);
    msgpack_pack_map(&pk, 0);
    node_reply(c, &sb);
}

/* Loop: the group's current voters. */
static void reply_voters(node_ctx *c, mg_group *g)
{
    const struct raft_configuration *conf = &mg_group_raft(g)->configuration;
    uint32_t voters = 0;
    for (unsigned i = 0; i < conf->n; i++)
        voters += conf->servers[i].role == RAFT_VOTER;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    node_reply_begin(c, &sb, &pk);
    msgpack_pack_map(&pk, 1);
    mg_mp_pack_cstr(&pk, "voters");
    msgpack_pack_array(&pk, voters);
    for (unsigned i = 0; i < conf->n; i++)
        if (conf->servers[i].role == RAFT_VOTER)
            msgpack_pack_uint64(&pk, conf->servers[i].id);
    node_reply(c, &sb);
}

/* Loop: the hosted, open group of the request, or NULL (answered). */
static node_group *loop_group(node_ctx *c)
{
    mg_node *n = c->node;
    if (n->host_closed) {
        node_reply_error(c, MG_ESHUTDOWN, "the node is stopping", 0, NULL);
        return NULL;
    }
    node_group *ng = node_group_find(n, c->env.group);
    if (ng == NULL || ng->g == NULL) {
        char msg[128];
        snprintf(msg, sizeof msg, "group %llu is not hosted on node %llu",
                 (unsigned long long)c->env.group, (unsigned long long)n->cfg.node_id);
        node_reply_error(c, MG_ENOTFOUND, msg, 0, NULL);
        return NULL;
    }
    return ng;
}

/* Loop: the leader of the request's group, or NULL (answered, with the
 * leader hint when known). */
static node_group *loop_leader(node_ctx *c)
{
    node_group *ng = loop_group(c);
    if (ng == NULL)
        return NULL;
    if (mg_group_is_leader(ng->g))
        return ng;
    uint64_t lid = 0;
    const char *addr = NULL;
    char msg[160];
    mg_group_leader(ng->g, &lid, &addr);
    snprintf(msg, sizeof msg, "group %llu: replica %llu is not the leader (leader %llu at %s)",
             (unsigned long long)ng->group_id, (unsigned long long)ng->replica_id,
             (unsigned long long)lid, addr ? addr : "unknown");
    node_reply_error(c, MG_ENOTLEADER, msg, lid, addr);
    return NULL;
}

/* A callback's failure: a group closed under it is MG_EUNAVAIL. */
static void reply_failed(node_ctx *c, const char *what, int status)
{
    char msg[192];
    if (status == MG_ESHUTDOWN && !c->node->host_closed) {
        snprintf(msg, sizeof msg,
                 "group %llu: the replica was closed while the %s was in flight; it may or may "
                 "not have taken effect",
                 (unsigned long long)c->env.group, what);
        node_reply_error(c, MG_EUNAVAIL, msg, 0, NULL);
        return;
    }
    snprintf(msg, sizeof msg, "group %llu: %s: %s", (unsigned long long)c->env.group, what,
             mg_strerror(status));
    node_reply_error(c, status, msg, 0, NULL);
}

/* ---- NODE_INFO (nng thread) --------------------------------------------- */

static void node_info(node_ctx *c)
{
    mg_node *n = c->node;
    size_t slots = node_group_slots(n);
    uint64_t *ids = malloc((slots ? slots : 1) * sizeof *ids);
    node_membership *rec = malloc(sizeof *rec);
    if (ids == NULL || rec == NULL) {
        free(ids);
        free(rec);
        node_reply_error(c, MG_ENOMEM, "out of memory answering node_info", 0, NULL);
        return;
    }
    uint32_t hosted = 0;
    for (size_t i = 0; i < slots; i++)
        if (atomic_load(&n->groups[i].hosted))
            ids[hosted++] = n->groups[i].group_id;
    node_membership_get(n, rec);
    msgpack_sbuffer sb;
    msgpack_packer pk;
    node_reply_begin(c, &sb, &pk);
    msgpack_pack_map(&pk, 8);
    mg_mp_pack_cstr(&pk, "node");
    msgpack_pack_uint64(&pk, n->cfg.node_id);
    mg_mp_pack_cstr(&pk, "rpc");
    mg_mp_pack_cstr(&pk, n->advertise_rpc);
    mg_mp_pack_cstr(&pk, "survey");
    mg_mp_pack_cstr(&pk, n->advertise_survey);
    mg_mp_pack_cstr(&pk, "raft_host");
    mg_mp_pack_cstr(&pk, n->raft_host);
    mg_mp_pack_cstr(&pk, "raft_port");
    msgpack_pack_uint32(&pk, n->cfg.raft_port);
    mg_mp_pack_cstr(&pk, "groups");
    msgpack_pack_array(&pk, hosted);
    for (uint32_t i = 0; i < hosted; i++)
        msgpack_pack_uint64(&pk, ids[i]);
    mg_mp_pack_cstr(&pk, "cluster");
    if (rec->cluster[0] != '\0')
        mg_mp_pack_cstr(&pk, rec->cluster);
    else
        msgpack_pack_nil(&pk);
    mg_mp_pack_cstr(&pk, "meta");
    msgpack_pack_array(&pk, rec->n_meta);
    for (uint32_t i = 0; i < rec->n_meta; i++)
        mg_mp_pack_cstr(&pk, rec->meta[i]);
    free(ids);
    free(rec);
    node_reply(c, &sb);
}

/* Worker: applies the NODE_INFO claim, then answers as NODE_INFO. */
static void node_info_claim_run(node_ctx *c)
{
    mg_error err = {0};
    if (node_expired(c))
        return;
    if (node_membership_claim(c->node, c->adm_claim, &err) != MG_OK) {
        node_reply_err(c, &err);
        return;
    }
    node_info(c);
}

/* ---- META_GET (worker) -------------------------------------------------- */

static void meta_get_run(node_ctx *c)
{
    mg_node *n = c->node;
    mg_error err = {0};
    if (node_expired(c))
        return;
    bool follower = node_body_flag(c->env.body, c->env.body_len, "follower");
    node_group *ng = node_check_group(c, c->env.group, follower);
    if (ng == NULL)
        return;
    mg_cmap *map = malloc(sizeof *map);
    if (map == NULL) {
        node_reply_error(c, MG_ENOMEM, "out of memory reading the cluster map", 0, NULL);
        return;
    }
    if (!node_stores_enter(n)) {
        free(map);
        node_reply_error(c, MG_ESHUTDOWN, "the node is stopping", 0, NULL);
        return;
    }
    void *raw = NULL;
    size_t raw_len = 0;
    int rc = MG_ENOTFOUND;
    bool open = ng->store != NULL;
    if (open)
        rc = mg_meta_read_map(ng->store, map, &raw, &raw_len, &err);
    node_stores_leave(n);
    uint64_t epoch = rc == MG_OK ? map->epoch : 0;
    free(map);
    if (!open) {
        node_check_group(c, c->env.group, true); /* closed meanwhile: MG_ENOTFOUND */
        return;
    }
    if (rc != MG_OK && rc != MG_ENOTFOUND) {
        free(raw);
        node_reply_err(c, &err);
        return;
    }
    msgpack_sbuffer sb;
    msgpack_packer pk;
    node_reply_begin(c, &sb, &pk);
    msgpack_pack_map(&pk, 2);
    mg_mp_pack_cstr(&pk, "epoch");
    msgpack_pack_uint64(&pk, epoch);
    mg_mp_pack_cstr(&pk, "map");
    if (rc == MG_OK && raw != NULL)
        mg_mp_pack_binn(&pk, raw, raw_len);
    else
        msgpack_pack_nil(&pk);
    free(raw);
    node_reply(c, &sb);
}

/* ---- GROUP_OPEN / GROUP_CLOSE (loop) ------------------------------------ */

static void group_open_on_loop(node_ctx *c)
{
    mg_node *n = c->node;
    mg_error err = {0};
    if (node_expired(c))
        return;
    if (n->host_closed) {
        node_reply_error(c, MG_ESHUTDOWN, "the node is stopping", 0, NULL);
        return;
    }
    if (node_group_find(n, c->env.group) != NULL) {
        reply_empty(c); /* already hosted */
        return;
    }
    int rc =
        node_group_open(n, c->env.group, c->adm_id, c->adm_address,
                        c->adm_join ? NULL : c->adm_peers, c->adm_join ? 0 : c->adm_n_peers, &err);
    if (rc != MG_OK && rc != MG_EEXIST) {
        node_reply_err(c, &err);
        return;
    }
    node_publish(n);
    reply_empty(c);
}

static void group_close_on_loop(node_ctx *c)
{
    mg_node *n = c->node;
    mg_error err = {0};
    if (node_expired(c))
        return;
    if (n->host_closed) {
        node_reply_error(c, MG_ESHUTDOWN, "the node is stopping", 0, NULL);
        return;
    }
    node_group *ng = node_group_slot(n, c->env.group);
    if (ng != NULL) {
        node_group_close(n, ng, c->adm_destroy, c); /* answers c */
        return;
    }
    /* Files of a group this node has not hosted since it started (left by a
     * crash): removed here, on the loop — rare, and usually small. */
    int rc = c->adm_destroy ? mg_host_destroy_group(n->data_dir, c->env.group, &err) : MG_OK;
    if (rc != MG_OK)
        node_reply_err(c, &err);
    else
        reply_empty(c);
}

/* ---- GROUP_MEMBER (loop) ------------------------------------------------ */

static void on_member_changed(mg_group_change *ch, int status)
{
    node_ctx *c = ch->data;
    if (status != MG_OK) {
        reply_failed(c, "membership change", status);
        return;
    }
    node_group *ng = node_group_find(c->node, c->env.group);
    if (ng == NULL || ng->g == NULL) {
        reply_failed(c, "membership change", MG_ESHUTDOWN);
        return;
    }
    mg_info("node.member_changed", "group=%llu action=%d id=%llu", (unsigned long long)c->env.group,
            c->adm_action, (unsigned long long)c->adm_id);
    reply_voters(c, ng->g);
}

static void on_member_assigned(struct raft_change *req, int status)
{
    node_ctx *c = req->data;
    c->change.data = c;
    on_member_changed(&c->change, mg_raft_to_mg(status));
}

static void on_transferred(mg_group *g, void *arg)
{
    node_ctx *c = arg;
    mg_node *n = c->node;
    (void)g;
    /* Wait (polled every loop turn) until the target is known to lead. */
    uint64_t wait_ms = 4ull * n->tunables.election_timeout_ms;
    if (wait_ms < TRANSFER_WAIT_MIN_MS)
        wait_ms = TRANSFER_WAIT_MIN_MS;
    c->wait_until_ns = mg_clock_mono_ns() + wait_ms * 1000000u;
    if (c->wait_until_ns > c->deadline_ns)
        c->wait_until_ns = c->deadline_ns;
    c->wait_next = n->waits;
    n->waits = c;
}

static const struct raft_server *conf_server(mg_group *g, uint64_t id)
{
    const struct raft_configuration *conf = &mg_group_raft(g)->configuration;
    for (unsigned i = 0; i < conf->n; i++)
        if (conf->servers[i].id == id)
            return &conf->servers[i];
    return NULL;
}

static void group_member_on_loop(node_ctx *c)
{
    mg_error err = {0};
    int rc = MG_OK;
    if (node_expired(c))
        return;
    node_group *ng = loop_leader(c);
    if (ng == NULL)
        return;
    const struct raft_server *srv = conf_server(ng->g, c->adm_id);
    c->change.data = c;
    switch (c->adm_action) {
    case MEMBER_ADD:
        if (srv != NULL && srv->role == RAFT_VOTER) {
            reply_voters(c, ng->g);
            return;
        }
        if (srv != NULL) { /* a spare left by an add that stopped half-way */
            c->assign.data = c;
            int rv = raft_assign(mg_group_raft(ng->g), &c->assign, c->adm_id, RAFT_VOTER,
                                 on_member_assigned);
            if (rv != 0)
                rc = mg_error_set(&err, mg_raft_to_mg(rv), "group %llu: raft_assign: %s",
                                  (unsigned long long)ng->group_id, raft_strerror(rv));
            break;
        }
        rc = mg_group_add(ng->g, &c->change, c->adm_id, c->adm_address, on_member_changed, &err);
        break;
    case MEMBER_REMOVE:
        if (srv == NULL) {
            reply_voters(c, ng->g);
            return;
        }
        rc = mg_group_remove(ng->g, &c->change, c->adm_id, on_member_changed, &err);
        break;
    default: /* MEMBER_TRANSFER */
        if (c->adm_id == ng->replica_id) {
            reply_voters(c, ng->g); /* it leads already */
            return;
        }
        if (srv == NULL || srv->role != RAFT_VOTER) {
            rc = mg_error_set(&err, MG_ENOTFOUND, "group %llu: %llu is not a voter",
                              (unsigned long long)ng->group_id, (unsigned long long)c->adm_id);
            break;
        }
        rc = mg_group_transfer(ng->g, c->adm_id, on_transferred, c, &err);
        break;
    }
    if (rc != MG_OK)
        node_reply_err(c, &err);
}

void node_cluster_poll(mg_node *n)
{
    node_ctx **pp = &n->waits;
    uint64_t now = 0;
    while (*pp != NULL) {
        node_ctx *c = *pp;
        node_group *ng = node_group_find(n, c->env.group);
        uint64_t lid = 0;
        const char *addr = NULL;
        if (ng != NULL && ng->g != NULL)
            mg_group_leader(ng->g, &lid, &addr);
        if (now == 0)
            now = mg_clock_mono_ns();
        bool gone = ng == NULL || ng->g == NULL;
        if (!gone && lid != c->adm_id && now < c->wait_until_ns) {
            pp = &c->wait_next;
            continue;
        }
        *pp = c->wait_next;
        c->wait_next = NULL;
        if (gone) {
            reply_failed(c, "leadership transfer", MG_ESHUTDOWN);
        } else if (lid == c->adm_id) {
            reply_voters(c, ng->g);
        } else {
            char msg[160];
            snprintf(msg, sizeof msg, "group %llu: leadership did not move to %llu (leader %llu)",
                     (unsigned long long)ng->group_id, (unsigned long long)c->adm_id,
                     (unsigned long long)lid);
            node_reply_error(c, MG_EBUSY, msg, lid, addr);
        }
    }
}

void node_cluster_fail_all(mg_node *n)
{
    while (n->waits != NULL) {
        node_ctx *c = n->waits;
        n->waits = c->wait_next;
        c->wait_next = NULL;
        node_reply_error(c, MG_ESHUTDOWN, "the node is stopping", 0, NULL);
    }
}

/* ---- BARRIER (loop) ----------------------------------------------------- */

static void on_barrier(mg_group_barrier_req *b, int status)
{
    node_ctx *c = b->data;
    if (status != MG_OK) {
        reply_failed(c, "barrier", status);
        return;
    }
    node_group *ng = node_group_find(c->node, c->env.group);
    if (ng == NULL || ng->g == NULL) {
        reply_failed(c, "barrier", MG_ESHUTDOWN);
        return;
    }
    msgpack_sbuffer sb;
    msgpack_packer pk;
    node_reply_begin(c, &sb, &pk);
    msgpack_pack_map(&pk, 1);
    mg_mp_pack_cstr(&pk, "applied");
    msgpack_pack_uint64(&pk, mg_group_last_applied(ng->g));
    node_reply(c, &sb);
}

static void barrier_on_loop(node_ctx *c)
{
    mg_error err = {0};
    if (node_expired(c))
        return;
    node_group *ng = loop_leader(c);
    if (ng == NULL)
        return;
    c->barrier.data = c;
    if (mg_group_barrier(ng->g, &c->barrier, on_barrier, &err) != MG_OK)
        node_reply_err(c, &err);
}

/* ---- decoding (nng thread) ---------------------------------------------- */

/* Walks the body map: fn(c, key reader, value reader) for every key. A nil
 * body reads as an empty map. MG_OK or a code with err set. */
typedef int (*body_key_fn)(node_ctx *c, mg_mp_reader *key, mg_mp_reader *val, mg_error *err);

static int body_walk(node_ctx *c, body_key_fn fn, mg_error *err)
{
    mg_mp_reader r = mg_wire_body(c->env.body, c->env.body_len);
    uint32_t n;
    if (mg_mp_peek(&r) == MG_MP_NIL)
        return MG_OK;
    if (mg_mp_read_map(&r, &n) != MG_OK)
        return mg_error_set(err, MG_ECORRUPT, "%s: the body is not a map",
                            mg_wire_op_name(c->env.op));
    for (uint32_t i = 0; i < n; i++) {
        mg_mp_reader key = r;
        if (mg_mp_skip(&r) != MG_OK)
            return mg_error_set(err, MG_ECORRUPT, "malformed body");
        mg_mp_reader val = r;
        int rc = fn(c, &key, &val, err);
        if (rc != MG_OK)
            return rc;
        if (mg_mp_skip(&r) != MG_OK)
            return mg_error_set(err, MG_ECORRUPT, "malformed body");
    }
    return MG_OK;
}

static int read_address(mg_mp_reader *v, char *out, const char *what, mg_error *err)
{
    if (mg_mp_read_strcpy(v, out, MG_ADDRESS_MAX) != MG_OK || out[0] == '\0')
        return mg_error_set(err, MG_EINVAL, "%s: a raft address \"IPv4:port\" expected", what);
    return MG_OK;
}

static int read_peer(mg_mp_reader *r, mg_group_peer *p, mg_error *err)
{
    uint32_t n;
    bool have_id = false, have_addr = false;
    if (mg_mp_read_map(r, &n) != MG_OK)
        return mg_error_set(err, MG_EINVAL, "group_open: bootstrap entries are maps");
    for (uint32_t i = 0; i < n; i++) {
        bool is_id = mg_mp_peek_str_eq(r, "id"), is_addr = mg_mp_peek_str_eq(r, "address");
        if (mg_mp_skip(r) != MG_OK)
            return mg_error_set(err, MG_ECORRUPT, "group_open: malformed bootstrap");
        if (is_id) {
            if (mg_mp_read_u64(r, &p->id) != MG_OK || p->id == 0)
                return mg_error_set(err, MG_EINVAL, "group_open: bootstrap \"id\" must be > 0");
            have_id = true;
        } else if (is_addr) {
            int rc = read_address(r, p->address, "group_open: bootstrap \"address\"", err);
            if (rc != MG_OK)
                return rc;
            have_addr = true;
        } else if (mg_mp_skip(r) != MG_OK) {
            return mg_error_set(err, MG_ECORRUPT, "group_open: malformed bootstrap");
        }
    }
    if (!have_id || !have_addr)
        return mg_error_set(err, MG_EINVAL, "group_open: bootstrap entries need id and address");
    return MG_OK;
}

static int open_key(node_ctx *c, mg_mp_reader *key, mg_mp_reader *val, mg_error *err)
{
    mg_mp_reader v = *val;
    if (mg_mp_peek_str_eq(key, "replica")) {
        if (mg_mp_read_u64(&v, &c->adm_id) != MG_OK || c->adm_id == 0)
            return mg_error_set(err, MG_EINVAL, "group_open: \"replica\" must be an id > 0");
    } else if (mg_mp_peek_str_eq(key, "address")) {
        if (mg_mp_peek(&v) != MG_MP_NIL)
            return read_address(&v, c->adm_address, "group_open: \"address\"", err);
    } else if (mg_mp_peek_str_eq(key, "cluster")) {
        if (mg_mp_peek(&v) != MG_MP_NIL &&
            mg_mp_read_strcpy(&v, c->adm_cluster, sizeof c->adm_cluster) != MG_OK)
            return mg_error_set(err, MG_EINVAL, "group_open: \"cluster\" must be a cluster id");
    } else if (mg_mp_peek_str_eq(key, "bootstrap")) {
        uint32_t n;
        if (mg_mp_peek(&v) == MG_MP_NIL)
            return MG_OK;
        if (mg_mp_read_array(&v, &n) != MG_OK || n == 0 || n > MG_CMAP_REPLICAS_MAX)
            return mg_error_set(err, MG_EINVAL,
                                "group_open: \"bootstrap\" must be nil or 1-%d voters",
                                MG_CMAP_REPLICAS_MAX);
        free(c->adm_peers);
        c->adm_peers = calloc(n, sizeof *c->adm_peers);
        if (c->adm_peers == NULL)
            return mg_error_set(err, MG_ENOMEM, "out of memory decoding group_open");
        c->adm_n_peers = n;
        for (uint32_t i = 0; i < n; i++) {
            int rc = read_peer(&v, &c->adm_peers[i], err);
            if (rc != MG_OK)
                return rc;
        }
        c->adm_join = false;
    }
    return MG_OK;
}

/* NODE_INFO "claim": {"cluster": UUID, "meta": [rpc URL, ...]}. */
static int read_claim(mg_mp_reader *v, node_membership *claim, mg_error *err)
{
    uint32_t n;
    bool have_id = false;
    if (mg_mp_read_map(v, &n) != MG_OK)
        return mg_error_set(err, MG_EINVAL, "node_info: \"claim\" must be a map");
    for (uint32_t i = 0; i < n; i++) {
        bool is_id = mg_mp_peek_str_eq(v, "cluster"), is_meta = mg_mp_peek_str_eq(v, "meta");
        if (mg_mp_skip(v) != MG_OK)
            return mg_error_set(err, MG_ECORRUPT, "node_info: malformed claim");
        if (is_id) {
            if (mg_mp_read_strcpy(v, claim->cluster, sizeof claim->cluster) != MG_OK ||
                !mg_uuid_parse(claim->cluster, strlen(claim->cluster), NULL))
                return mg_error_set(err, MG_EINVAL, "node_info: claim \"cluster\" must be a UUID");
            have_id = true;
        } else if (is_meta) {
            uint32_t k;
            if (mg_mp_read_array(v, &k) != MG_OK || k > MG_CMAP_REPLICAS_MAX)
                return mg_error_set(err, MG_EINVAL,
                                    "node_info: claim \"meta\" must list at most %d URLs",
                                    MG_CMAP_REPLICAS_MAX);
            for (uint32_t j = 0; j < k; j++)
                if (mg_mp_read_strcpy(v, claim->meta[j], MG_CMAP_URL_MAX) != MG_OK ||
                    claim->meta[j][0] == '\0')
                    return mg_error_set(err, MG_EINVAL,
                                        "node_info: claim \"meta\" entries are rpc URLs of "
                                        "1-%d bytes",
                                        MG_CMAP_URL_MAX - 1);
            claim->n_meta = k;
        } else if (mg_mp_skip(v) != MG_OK) {
            return mg_error_set(err, MG_ECORRUPT, "node_info: malformed claim");
        }
    }
    if (!have_id)
        return mg_error_set(err, MG_EINVAL, "node_info: a claim needs \"cluster\"");
    return MG_OK;
}

static int info_key(node_ctx *c, mg_mp_reader *key, mg_mp_reader *val, mg_error *err)
{
    mg_mp_reader v = *val;
    if (!mg_mp_peek_str_eq(key, "claim") || mg_mp_peek(&v) == MG_MP_NIL)
        return MG_OK;
    free(c->adm_claim);
    c->adm_claim = calloc(1, sizeof *c->adm_claim);
    if (c->adm_claim == NULL)
        return mg_error_set(err, MG_ENOMEM, "out of memory decoding node_info");
    return read_claim(&v, c->adm_claim, err);
}

static int close_key(node_ctx *c, mg_mp_reader *key, mg_mp_reader *val, mg_error *err)
{
    mg_mp_reader v = *val;
    if (mg_mp_peek_str_eq(key, "destroy") && mg_mp_peek(&v) != MG_MP_NIL &&
        mg_mp_read_bool(&v, &c->adm_destroy) != MG_OK)
        return mg_error_set(err, MG_EINVAL, "group_close: \"destroy\" must be a bool");
    return MG_OK;
}

static int member_key(node_ctx *c, mg_mp_reader *key, mg_mp_reader *val, mg_error *err)
{
    mg_mp_reader v = *val;
    if (mg_mp_peek_str_eq(key, "action")) {
        char action[16];
        if (mg_mp_read_strcpy(&v, action, sizeof action) != MG_OK)
            action[0] = '\0';
        c->adm_action = strcmp(action, "add") == 0        ? MEMBER_ADD
                        : strcmp(action, "remove") == 0   ? MEMBER_REMOVE
                        : strcmp(action, "transfer") == 0 ? MEMBER_TRANSFER
                                                          : 0;
        if (c->adm_action == 0)
            return mg_error_set(err, MG_EINVAL,
                                "group_member: \"action\" must be add, remove or transfer");
    } else if (mg_mp_peek_str_eq(key, "id")) {
        if (mg_mp_read_u64(&v, &c->adm_id) != MG_OK || c->adm_id == 0)
            return mg_error_set(err, MG_EINVAL, "group_member: \"id\" must be > 0");
    } else if (mg_mp_peek_str_eq(key, "address")) {
        if (mg_mp_peek(&v) != MG_MP_NIL)
            return read_address(&v, c->adm_address, "group_member: \"address\"", err);
    }
    return MG_OK;
}

static int decode_open(node_ctx *c, mg_error *err)
{
    mg_node *n = c->node;
    c->adm_join = true;
    int rc = body_walk(c, open_key, err);
    if (rc != MG_OK)
        return rc;
    if (c->adm_id == 0)
        return mg_error_set(err, MG_EINVAL, "group_open: \"replica\" is required");
    /* A replica of another cluster's group must not start here: it could
     * form a second cluster on this node. Checked before "already hosted",
     * which would otherwise answer the other cluster MG_OK. Without an id on
     * either side (older routers, serve's node before init) it is allowed. */
    if (c->adm_cluster[0] != '\0') {
        node_membership rec;
        node_membership_get(n, &rec);
        if (rec.cluster[0] != '\0' && strcmp(rec.cluster, c->adm_cluster) != 0)
            return mg_error_set(err, MG_EEXIST, "node %llu belongs to cluster %s",
                                (unsigned long long)n->cfg.node_id, rec.cluster);
    }
    if (c->adm_address[0] == '\0') { /* the node's own: raft_host:(raft_port + G) */
        if (n->cfg.raft_port == 0 || n->cfg.raft_port + c->env.group > 65535)
            return mg_error_set(err, MG_EINVAL, "group_open: \"address\" is required");
        snprintf(c->adm_address, sizeof c->adm_address, "%s:%llu", n->raft_host,
                 (unsigned long long)(n->cfg.raft_port + c->env.group));
    }
    return MG_OK;
}

static int decode_member(node_ctx *c, mg_error *err)
{
    int rc = body_walk(c, member_key, err);
    if (rc != MG_OK)
        return rc;
    if (c->adm_action == 0 || c->adm_id == 0)
        return mg_error_set(err, MG_EINVAL, "group_member: \"action\" and \"id\" are required");
    if (c->adm_action == MEMBER_ADD && c->adm_address[0] == '\0')
        return mg_error_set(err, MG_EINVAL, "group_member: add needs \"address\"");
    return MG_OK;
}

void node_cluster_clear(node_ctx *c)
{
    free(c->adm_peers);
    c->adm_peers = NULL;
    c->adm_n_peers = 0;
    free(c->adm_claim);
    c->adm_claim = NULL;
    c->adm_cluster[0] = '\0';
    c->adm_id = 0;
    c->adm_address[0] = '\0';
    c->adm_join = c->adm_destroy = false;
    c->adm_action = 0;
    c->wait_next = NULL;
}

void node_cluster_start(node_ctx *c)
{
    mg_error err = {0};
    int rc = MG_OK;
    node_ctx_fn on_loop = NULL;
    if (c->user[0] != '\0') {
        node_reply_error(c, MG_EPERM, "cluster ops are internal", 0, NULL);
        return;
    }
    switch (c->env.op) {
    case MG_OP_NODE_INFO:
        rc = body_walk(c, info_key, &err);
        if (rc != MG_OK)
            node_reply_err(c, &err);
        else if (c->adm_claim != NULL)
            node_worker_post(c->node, c, node_info_claim_run);
        else
            node_info(c);
        return;
    case MG_OP_META_GET:
        node_worker_post(c->node, c, meta_get_run);
        return;
    case MG_OP_GROUP_OPEN:
        rc = decode_open(c, &err);
        on_loop = group_open_on_loop;
        break;
    case MG_OP_GROUP_CLOSE:
        rc = body_walk(c, close_key, &err);
        on_loop = group_close_on_loop;
        break;
    case MG_OP_GROUP_MEMBER:
        rc = decode_member(c, &err);
        on_loop = group_member_on_loop;
        break;
    case MG_OP_BARRIER:
        on_loop = barrier_on_loop;
        break;
    default:
        node_reply_error(c, MG_EINTERNAL, "not a cluster op", 0, NULL);
        return;
    }
    if (rc != MG_OK) {
        node_reply_err(c, &err);
        return;
    }
    if (!node_loop_post(c->node, c, on_loop))
        node_reply_error(c, MG_ESHUTDOWN, "the node is stopping", 0, NULL);
}
