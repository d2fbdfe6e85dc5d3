/*
 * Admin API: the helpers every operation uses (router/admin.h): request
 * fields, the operation lock, calls to nodes and group leaders, WRITEs and
 * their outcomes, the nodes' membership (NODE_INFO claims), and reading and
 * editing the cluster map.
 */
#include "admin.h"

#include "../lib/clock.h"
#include "../lib/log.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- small things ----------------------------------------------------------- */

void admin_buf_init(admin_buf *b)
{
    msgpack_sbuffer_init(&b->sb);
    msgpack_packer_init(&b->pk, &b->sb, msgpack_sbuffer_write);
}

void admin_buf_free(admin_buf *b)
{
    msgpack_sbuffer_destroy(&b->sb);
}

/* One lock per process: a process runs one router in practice (tests and
 * `serve` included); two routers in one process would only serialize their
 * admin operations. */
static pthread_mutex_t admin_mutex = PTHREAD_MUTEX_INITIALIZER;

bool admin_lock_try(mg_api_resp *resp)
{
    if (pthread_mutex_trylock(&admin_mutex) == 0)
        return true;
    if (resp != NULL)
        api_fail(resp, 409, "another admin operation is running");
    return false;
}

void admin_lock_wait(void)
{
    pthread_mutex_lock(&admin_mutex);
}

void admin_unlock(void)
{
    pthread_mutex_unlock(&admin_mutex);
}

void admin_fail(mg_api_resp *resp, const mg_error *err)
{
    unsigned status = err->code == MG_EEXIST || err->code == MG_EBUSY ? 409
                                                                      : api_status_of(err->code);
    api_fail(resp, status, "%s", err->msg[0] ? err->msg : mg_strerror(err->code));
}

uint64_t admin_now_ms(void)
{
    return mg_clock_mono_ns() / 1000000u;
}

void admin_sleep_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static unsigned left_ms(uint64_t deadline)
{
    uint64_t now = admin_now_ms();
    return now >= deadline ? 0 : (unsigned)(deadline - now);
}

/* ---- request fields ----------------------------------------------------- */

int admin_body_u64(const json_t *body, const char *key, bool required, uint64_t def,
                   uint64_t *out, mg_api_resp *resp)
{
    const json_t *v = json_object_get(body, key);
    *out = def;
    if (v == NULL || json_is_null(v)) {
        if (!required)
            return MG_OK;
        api_fail(resp, 400, "field \"%s\" is required", key);
        return MG_EINVAL;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 0) {
        api_fail(resp, 400, "field \"%s\" must be a non-negative integer", key);
        return MG_EINVAL;
    }
    *out = (uint64_t)json_integer_value(v);
    return MG_OK;
}

bool admin_body_object(const mg_api_req *req, mg_api_resp *resp)
{
    if (json_is_object(req->json))
        return true;
    api_fail(resp, 400, "the body must be a JSON object");
    return false;
}

/* ---- calls -------------------------------------------------------------- */

/* The body {} of STATUS, STATS, BARRIER and NODE_INFO. */
static admin_buf empty_map;

static void init_empty(void)
{
    admin_buf_init(&empty_map);
    msgpack_pack_map(&empty_map.pk, 0);
}

int admin_node_call(mg_router *r, uint64_t node, int op, uint64_t group, const admin_buf *body,
                    unsigned timeout_ms, mg_client_reply *out, mg_error *err)
{
    if (body == NULL) {
        static pthread_once_t once = PTHREAD_ONCE_INIT;
        pthread_once(&once, init_empty);
        body = &empty_map;
    }
    memset(out, 0, sizeof *out);
    return mg_client_call_node(r->client, node, op, group, body->sb.data, body->sb.size,
                               timeout_ms ? timeout_ms : 1, out, err);
}

int admin_find_leader(mg_router *r, const uint64_t *nodes, uint32_t n, uint64_t group,
                      unsigned timeout_ms, uint64_t *leader, mg_error *err)
{
    uint64_t deadline = admin_now_ms() + timeout_ms;
    mg_error last = {0};
    snprintf(last.msg, sizeof last.msg, "no replica answered");
    for (;;) {
        /* Connected replicas first: one that is down holds a round for
         * ADMIN_NODE_MS (its state may change meanwhile: one is asked twice
         * or not at all in a round, which the next round makes up for). */
        for (uint32_t k = 0; k < 2 * n; k++) {
            uint32_t i = k % n;
            if (mg_client_node_up(r->client, nodes[i]) != (k < n))
                continue;
            unsigned t = left_ms(deadline);
            if (t == 0)
                break;
            mg_client_reply rep;
            mg_error e = {0};
            int rc = admin_node_call(r, nodes[i], MG_OP_BARRIER, group, NULL,
                                     t < ADMIN_NODE_MS ? t : ADMIN_NODE_MS, &rep, &e);
            if (rc == MG_OK) {
                mg_client_reply_free(&rep);
                *leader = nodes[i];
                return MG_OK;
            }
            last = e;
        }
        if (left_ms(deadline) == 0)
            return mg_error_set(err, MG_EUNAVAIL, "group %llu has no leader (%s)",
                                (unsigned long long)group, last.msg);
        admin_sleep_ms(100);
    }
}

static bool transient(int rc)
{
    return rc == MG_ENOTLEADER || rc == MG_EUNAVAIL || rc == MG_EBUSY || rc == MG_ESHUTDOWN;
}

int admin_leader_call(mg_router *r, const uint64_t *nodes, uint32_t n, uint64_t group, int op,
                      const admin_buf *body, unsigned timeout_ms, mg_client_reply *out,
                      mg_error *err)
{
    uint64_t deadline = admin_now_ms() + timeout_ms;
    for (;;) {
        uint64_t leader = 0;
        unsigned t = left_ms(deadline);
        int rc = admin_find_leader(r, nodes, n, group, t < ADMIN_STEP_MS ? t : ADMIN_STEP_MS,
                                   &leader, err);
        if (rc != MG_OK)
            return rc;
        if ((t = left_ms(deadline)) == 0)
            return mg_error_set(err, MG_ETIMEDOUT, "group %llu: deadline passed",
                                (unsigned long long)group);
        rc = admin_node_call(r, leader, op, group, body, t, out, err);
        if (rc == MG_OK || !transient(rc) || left_ms(deadline) < 60)
            return rc;
        admin_sleep_ms(50);
    }
}

/* Reads the "outcomes" of a WRITE reply. */
static int read_outcomes(const mg_wire_rep *rep, size_t n_cmds, unsigned tolerate,
                         uint64_t *counts, mg_error *err)
{
    mg_mp_reader rd = mg_wire_body(rep->body, rep->body_len);
    uint32_t n, m;
    if (mg_mp_read_map(&rd, &n) != MG_OK)
        goto bad;
    for (uint32_t i = 0; i < n; i++) {
        if (!mg_mp_peek_str_eq(&rd, "outcomes")) {
            if (mg_mp_skip(&rd) != MG_OK || mg_mp_skip(&rd) != MG_OK)
                goto bad;
            continue;
        }
        mg_mp_skip(&rd);
        if (mg_mp_read_array(&rd, &m) != MG_OK || m < n_cmds)
            goto bad;
        int first = MG_OK;
        for (uint32_t k = 0; k < m; k++) {
            uint32_t f;
            uint64_t code = MG_OK, cnt = 0;
            const char *msg = "";
            uint32_t msg_len = 0;
            if (mg_mp_read_map(&rd, &f) != MG_OK)
                goto bad;
            for (uint32_t j = 0; j < f; j++) {
                int rc;
                if (mg_mp_peek_str_eq(&rd, "code")) {
                    mg_mp_skip(&rd);
                    rc = mg_mp_read_u64(&rd, &code);
                } else if (mg_mp_peek_str_eq(&rd, "count")) {
                    mg_mp_skip(&rd);
                    rc = mg_mp_read_u64(&rd, &cnt);
                } else if (mg_mp_peek_str_eq(&rd, "msg")) {
                    mg_mp_skip(&rd);
                    rc = mg_mp_read_str(&rd, &msg, &msg_len);
                } else {
                    rc = mg_mp_skip(&rd) || mg_mp_skip(&rd);
                }
                if (rc != MG_OK)
                    goto bad;
            }
            if (code >= MG_ERR_COUNT_)
                goto bad;
            if (counts != NULL && k < n_cmds)
                counts[k] = cnt;
            bool ok = code == MG_OK || (code == MG_EEXIST && (tolerate & ADMIN_OK_EXIST)) ||
                      (code == MG_ENOTFOUND && (tolerate & ADMIN_OK_NOTFOUND));
            if (!ok && first == MG_OK)
                first = mg_error_set(err, (int)code, "%.*s", (int)msg_len,
                                     msg_len ? msg : mg_strerror((int)code));
        }
        return first;
    }
bad:
    return mg_error_set(err, MG_EINTERNAL, "malformed WRITE reply from the node");
}

int admin_write_body(mg_router *r, const uint64_t *nodes, uint32_t n, uint64_t group,
                     const admin_buf *body, size_t n_cmds, unsigned tolerate, uint64_t *counts,
                     mg_error *err)
{
    mg_client_reply rep;
    int rc = admin_leader_call(r, nodes, n, group, MG_OP_WRITE, body, ADMIN_STEP_MS, &rep, err);
    if (rc != MG_OK)
        return rc;
    rc = read_outcomes(&rep.rep, n_cmds, tolerate, counts, err);
    mg_client_reply_free(&rep);
    return rc;
}

int admin_write_cmd(mg_router *r, const uint64_t *nodes, uint32_t n, uint64_t group,
                    const mg_cmd *cmd, unsigned tolerate, uint64_t *count, mg_error *err)
{
    admin_buf b;
    admin_buf_init(&b);
    int rc = MG_OK;
    if (msgpack_pack_map(&b.pk, 1) || mg_mp_pack_cstr(&b.pk, "cmds") ||
        msgpack_pack_array(&b.pk, 1) || mg_cmd_pack(&b.pk, cmd) != MG_OK)
        rc = mg_error_set(err, MG_ENOMEM, "out of memory");
    if (rc == MG_OK)
        rc = admin_write_body(r, nodes, n, group, &b, 1, tolerate, count, err);
    admin_buf_free(&b);
    return rc;
}

int admin_slots_set(mg_router *r, const mg_cmap *m, uint64_t group, const uint64_t *nodes,
                    uint32_t n, const mg_slotset *owned, mg_error *err)
{
    mg_cmd c;
    memset(&c, 0, sizeof c);
    c.kind = MG_CMD_SLOTS_SET;
    c.epoch = m->epoch;
    c.slots = *owned;
    int rc = admin_write_cmd(r, nodes, n, group, &c, 0, NULL, err);
    if (rc != MG_OK)
        mg_error_wrap(err, rc, "slots_set on group %llu", (unsigned long long)group);
    return rc;
}

int admin_slots_drop(mg_router *r, const uint64_t *nodes, uint32_t n, uint64_t group,
                     const mg_slotset *drop, uint64_t *cubes, mg_error *err)
{
    mg_cmd c;
    memset(&c, 0, sizeof c);
    c.kind = MG_CMD_SLOTS_DROP;
    c.slots = *drop;
    int rc = admin_write_cmd(r, nodes, n, group, &c, 0, cubes, err);
    if (rc != MG_OK)
        mg_error_wrap(err, rc, "slots_drop on group %llu", (unsigned long long)group);
    return rc;
}

int admin_group_open(mg_router *r, const mg_cmap *m, uint64_t group, uint64_t node,
                     const uint64_t *voters, uint32_t n_voters, mg_error *err)
{
    const mg_cmap_node *nd = mg_cmap_node_get(m, node);
    if (nd == NULL)
        return mg_error_set(err, MG_ENOTFOUND, "node %llu is not in the map",
                            (unsigned long long)node);
    char addr[96];
    int rc = mg_cmap_raft_address(nd, group, addr, sizeof addr, err);
    if (rc != MG_OK)
        return rc;
    admin_buf b;
    admin_buf_init(&b);
    bool has_id = m->cluster[0] != '\0'; /* maps of older builds have none */
    int prc = msgpack_pack_map(&b.pk, has_id ? 4 : 3) | mg_mp_pack_cstr(&b.pk, "replica") |
              msgpack_pack_uint64(&b.pk, node) | mg_mp_pack_cstr(&b.pk, "address") |
              mg_mp_pack_cstr(&b.pk, addr);
    if (has_id)
        prc |= mg_mp_pack_cstr(&b.pk, "cluster") | mg_mp_pack_cstr(&b.pk, m->cluster);
    prc |= mg_mp_pack_cstr(&b.pk, "bootstrap");
    if (voters == NULL) {
        prc |= msgpack_pack_nil(&b.pk);
    } else {
        prc |= msgpack_pack_array(&b.pk, n_voters);
        for (uint32_t i = 0; i < n_voters && rc == MG_OK; i++) {
            char va[96];
            const mg_cmap_node *vn = mg_cmap_node_get(m, voters[i]);
            if (vn == NULL) {
                rc = mg_error_set(err, MG_ENOTFOUND, "node %llu is not in the map",
                                  (unsigned long long)voters[i]);
                break;
            }
            rc = mg_cmap_raft_address(vn, group, va, sizeof va, err);
            prc |= msgpack_pack_map(&b.pk, 2) | mg_mp_pack_cstr(&b.pk, "id") |
                   msgpack_pack_uint64(&b.pk, voters[i]) | mg_mp_pack_cstr(&b.pk, "address") |
                   mg_mp_pack_cstr(&b.pk, va);
        }
    }
    if (rc == MG_OK && prc != 0)
        rc = mg_error_set(err, MG_ENOMEM, "out of memory");
    if (rc == MG_OK) {
        mg_client_reply rep;
        rc = admin_node_call(r, node, MG_OP_GROUP_OPEN, group, &b, ADMIN_STEP_MS, &rep, err);
        if (rc == MG_OK)
            mg_client_reply_free(&rep);
    }
    admin_buf_free(&b);
    if (rc != MG_OK)
        return mg_error_wrap(err, rc, "GROUP_OPEN of group %llu on node %llu",
                             (unsigned long long)group, (unsigned long long)node);
    return MG_OK;
}

/* ---- membership ----------------------------------------------------------- */

/* {"claim": {"cluster": id, "meta": [urls]}}, or {} without an id. */
static int pack_claim(admin_buf *b, const char *cluster, const char *const *meta, uint32_t n_meta)
{
    if (cluster == NULL)
        return msgpack_pack_map(&b->pk, 0);
    int rc = msgpack_pack_map(&b->pk, 1) | mg_mp_pack_cstr(&b->pk, "claim") |
             msgpack_pack_map(&b->pk, 2) | mg_mp_pack_cstr(&b->pk, "cluster") |
             mg_mp_pack_cstr(&b->pk, cluster) | mg_mp_pack_cstr(&b->pk, "meta") |
             msgpack_pack_array(&b->pk, n_meta);
    for (uint32_t i = 0; i < n_meta; i++)
        rc |= mg_mp_pack_cstr(&b->pk, meta[i]);
    return rc;
}

/* The membership fields of a NODE_INFO answer. */
static int read_member(const mg_wire_rep *rep, admin_member *out)
{
    mg_mp_reader rd = mg_wire_body(rep->body, rep->body_len);
    uint32_t n, k;
    memset(out, 0, sizeof *out);
    if (mg_mp_read_map(&rd, &n) != MG_OK)
        return MG_ECORRUPT;
    for (uint32_t i = 0; i < n; i++) {
        int rc = MG_OK;
        if (mg_mp_peek_str_eq(&rd, "cluster")) {
            mg_mp_skip(&rd);
            rc = mg_mp_peek(&rd) == MG_MP_NIL
                     ? mg_mp_read_nil(&rd)
                     : mg_mp_read_strcpy(&rd, out->cluster, sizeof out->cluster);
        } else if (mg_mp_peek_str_eq(&rd, "meta")) {
            mg_mp_skip(&rd);
            rc = mg_mp_read_array(&rd, &k);
            for (uint32_t j = 0; rc == MG_OK && j < k; j++) {
                if (out->n_meta < MG_CMAP_REPLICAS_MAX)
                    rc = mg_mp_read_strcpy(&rd, out->meta[out->n_meta++], MG_CMAP_URL_MAX);
                else
                    rc = mg_mp_skip(&rd);
            }
        } else if (mg_mp_peek_str_eq(&rd, "groups")) {
            mg_mp_skip(&rd);
            rc = mg_mp_read_array(&rd, &k);
            size_t used = 0, cap = sizeof out->groups;
            bool cut = false;
            for (uint32_t j = 0; rc == MG_OK && j < k; j++) {
                uint64_t g;
                if ((rc = mg_mp_read_u64(&rd, &g)) != MG_OK || cut)
                    continue;
                int len = snprintf(out->groups + used, cap - used, "%s%llu", j ? "," : "",
                                   (unsigned long long)g);
                if (len < 0 || used + (size_t)len > cap - 4) { /* room for "..." */
                    snprintf(out->groups + used, cap - used, "...");
                    cut = true;
                } else {
                    used += (size_t)len;
                }
            }
            out->n_groups = k;
        } else {
            rc = mg_mp_skip(&rd) != MG_OK || mg_mp_skip(&rd) != MG_OK ? MG_ECORRUPT : MG_OK;
        }
        if (rc != MG_OK)
            return MG_ECORRUPT;
    }
    return MG_OK;
}

int admin_node_member(mg_router *r, uint64_t node, const char *cluster, const char *const *meta,
                      uint32_t n_meta, admin_member *out, mg_error *err)
{
    admin_buf b;
    admin_buf_init(&b);
    int rc = pack_claim(&b, cluster, meta, n_meta) ? mg_error_set(err, MG_ENOMEM, "out of memory")
                                                   : MG_OK;
    mg_client_reply rep;
    if (rc == MG_OK)
        rc = admin_node_call(r, node, MG_OP_NODE_INFO, 0, &b,
                             cluster ? ADMIN_STEP_MS : ADMIN_NODE_MS, &rep, err);
    admin_buf_free(&b);
    if (rc != MG_OK)
        return rc;
    if (read_member(&rep.rep, out) != MG_OK)
        rc = mg_error_set(err, MG_EINTERNAL, "malformed NODE_INFO answer from node %llu",
                          (unsigned long long)node);
    mg_client_reply_free(&rep);
    return rc;
}

uint32_t admin_meta_urls(const mg_cmap *m, const char *out[MG_CMAP_REPLICAS_MAX])
{
    const mg_cmap_group *meta = mg_cmap_group_get(m, 0);
    uint32_t n = 0;
    for (uint32_t k = 0; meta != NULL && k < meta->n_replicas; k++) {
        const mg_cmap_node *nd = mg_cmap_node_get(m, meta->replicas[k]);
        if (nd != NULL)
            out[n++] = nd->rpc;
    }
    return n;
}

void admin_claim_all(mg_router *r, const mg_cmap *m)
{
    if (m->cluster[0] == '\0' || m->n_nodes == 0)
        return;
    const char *meta[MG_CMAP_REPLICAS_MAX];
    uint32_t n_meta = admin_meta_urls(m, meta);
    uint64_t ids[MG_CMAP_NODES_MAX];
    for (uint32_t i = 0; i < m->n_nodes; i++)
        ids[i] = m->nodes[i].id;
    mg_client_call *calls = calloc(m->n_nodes, sizeof *calls);
    admin_buf b;
    admin_buf_init(&b);
    if (calls == NULL || pack_claim(&b, m->cluster, meta, n_meta) != 0) {
        mg_warn("admin.claim", "cluster=%s: out of memory; the nodes keep their meta hints",
                m->cluster);
        goto done;
    }
    mg_client_call_nodes(r->client, ids, m->n_nodes, MG_OP_NODE_INFO, b.sb.data, b.sb.size,
                         ADMIN_NODE_MS, calls);
    for (uint32_t i = 0; i < m->n_nodes; i++) {
        if (calls[i].status == MG_OK)
            mg_client_reply_free(&calls[i].reply);
        else if (calls[i].status == MG_EEXIST)
            mg_errlog("admin.claim",
                      "node %llu is in the map of cluster %s but says: %s; check the node's "
                      "data directory (docs/OPERATIONS.md \"Initializing\")",
                      (unsigned long long)ids[i], m->cluster, calls[i].err.msg);
        else
            mg_warn("admin.claim",
                    "node %llu: its meta group hints were not updated (%s); the next change "
                    "of group 0 or add-node retries",
                    (unsigned long long)ids[i], calls[i].err.msg);
    }
done:
    admin_buf_free(&b);
    free(calls);
}

/* ---- the map ------------------------------------------------------------ */

/* What the nodes say about the meta group while the router knows no map. */
typedef struct meta_probe {
    bool hosted;    /* some node answered for a replica of group 0 */
    uint64_t epoch; /* the highest map epoch such a replica holds (0: none) */
} meta_probe;

/* The "epoch" of a META_GET answer (0 when absent or malformed). */
static uint64_t meta_reply_epoch(const mg_wire_rep *rep)
{
    mg_mp_reader rd = mg_wire_body(rep->body, rep->body_len);
    uint32_t n;
    uint64_t epoch = 0;
    if (mg_mp_read_map(&rd, &n) != MG_OK)
        return 0;
    for (uint32_t i = 0; i < n; i++) {
        if (mg_mp_peek_str_eq(&rd, "epoch")) {
            mg_mp_skip(&rd);
            return mg_mp_read_u64(&rd, &epoch) == MG_OK ? epoch : 0;
        }
        if (mg_mp_skip(&rd) != MG_OK || mg_mp_skip(&rd) != MG_OK)
            return 0;
    }
    return 0;
}

/* Asks every node the router knows, at once and for ADMIN_NODE_MS at most,
 * whether it hosts the meta group (META_GET with "follower": a replica
 * answers from its own store whether or not the group has a leader; a node
 * without one answers MG_ENOTFOUND). Seeds whose id the client has not
 * learned yet (they did not answer so far) are asked who they are first: a
 * refresh does that (NODE_INFO, 200 ms each at most) before its own
 * META_GET, which is given no time here. */
static void meta_probe_run(mg_router *r, meta_probe *p)
{
    memset(p, 0, sizeof *p);
    size_t n = mg_client_n_nodes(r->client);
    bool unknown = false;
    for (size_t i = 0; i < n && !unknown; i++)
        unknown = mg_client_node_id(r->client, i) == 0;
    if (unknown)
        mg_client_refresh_for(r->client, 1, NULL);
    if (mg_client_epoch(r->client) != 0) {
        p->hosted = true;
        return;
    }
    n = mg_client_n_nodes(r->client);
    uint64_t *ids = calloc(n ? n : 1, sizeof *ids);
    mg_client_call *calls = calloc(n ? n : 1, sizeof *calls);
    admin_buf b;
    admin_buf_init(&b);
    size_t k = 0;
    for (size_t i = 0; ids != NULL && i < n; i++)
        if ((ids[k] = mg_client_node_id(r->client, i)) != 0)
            k++;
    if (ids == NULL || calls == NULL || msgpack_pack_map(&b.pk, 1) ||
        mg_mp_pack_cstr(&b.pk, "follower") || msgpack_pack_true(&b.pk)) {
        p->hosted = true; /* cannot tell: take the leader read's path */
        goto done;
    }
    mg_client_call_nodes(r->client, ids, k, MG_OP_META_GET, b.sb.data, b.sb.size, ADMIN_NODE_MS,
                         calls);
    for (size_t i = 0; i < k; i++) {
        if (calls[i].status != MG_OK)
            continue;
        uint64_t e = meta_reply_epoch(&calls[i].reply.rep);
        p->hosted = true;
        p->epoch = e > p->epoch ? e : p->epoch;
        mg_client_reply_free(&calls[i].reply);
    }
done:
    admin_buf_free(&b);
    free(calls);
    free(ids);
}

/* mg_client_refresh until it succeeds or ms pass: a refresh that fails
 * while the meta group elects is asked again (a refresh asked right after
 * one that failed reuses its answer). */
static int refresh_until(mg_router *r, unsigned ms, mg_error *err)
{
    uint64_t deadline = admin_now_ms() + ms;
    for (;;) {
        int rc = mg_client_refresh_for(r->client, left_ms(deadline), err);
        if (rc == MG_OK || left_ms(deadline) < 100)
            return rc;
        admin_sleep_ms(50);
    }
}

int admin_map_read(mg_router *r, mg_cmap *out, mg_error *err)
{
    int rc;
    if (mg_client_epoch(r->client) == 0) {
        /* Before init no node hosts the meta group: answer at once rather
         * than wait a leader read's deadline for a group nobody has. */
        meta_probe p;
        meta_probe_run(r, &p);
        if (mg_client_epoch(r->client) == 0 && !p.hosted) {
            mg_cmap_init(out);
            return MG_OK;
        }
        /* The meta group exists: wait for its leader (it may be electing). */
        rc = refresh_until(r, mg_client_call_timeout(r->client), err);
        if (rc != MG_OK && mg_client_epoch(r->client) == 0 && p.epoch > 0)
            return mg_error_wrap(err, MG_EUNAVAIL,
                                 "the meta group holds map epoch %llu but has no leader",
                                 (unsigned long long)p.epoch);
        if (rc != MG_OK && mg_client_epoch(r->client) == 0) {
            /* Replicas of the meta group without a map and without a
             * leader: an init that stopped half way; it can be rerun. */
            mg_cmap_init(out);
            return MG_OK;
        }
    } else {
        rc = mg_client_refresh(r->client, err);
    }
    if (rc != MG_OK)
        return mg_error_wrap(err, rc == MG_ETIMEDOUT ? MG_ETIMEDOUT : MG_EUNAVAIL,
                             "reading the cluster map from the meta group");
    mg_client_map(r->client, out);
    return MG_OK;
}

int admin_map_put(mg_router *r, const uint64_t *meta_nodes, uint32_t n, uint64_t expect,
                  const mg_cmap *next, mg_error *err)
{
    mg_cmd c;
    memset(&c, 0, sizeof c);
    c.kind = MG_CMD_META_SET;
    c.expect = expect;
    int rc = mg_cmap_encode(next, &c.map, &c.map_len, err);
    if (rc == MG_OK)
        rc = admin_write_cmd(r, meta_nodes, n, 0, &c, 0, NULL, err);
    mg_cmd_clear(&c);
    if (rc == MG_EBUSY)
        return mg_error_set(err, MG_EBUSY, "map changed concurrently, retry");
    if (rc != MG_OK)
        return mg_error_wrap(err, rc, "writing the cluster map (epoch %llu)",
                             (unsigned long long)next->epoch);
    mg_client_set_map(r->client, next);
    return MG_OK;
}

/* Whether two maps encode the same. */
static bool map_same(const mg_cmap *a, const mg_cmap *b)
{
    void *ea = NULL, *eb = NULL;
    size_t la = 0, lb = 0;
    bool same = mg_cmap_encode(a, &ea, &la, NULL) == MG_OK &&
                mg_cmap_encode(b, &eb, &lb, NULL) == MG_OK && la == lb && memcmp(ea, eb, la) == 0;
    free(ea);
    free(eb);
    return same;
}

int admin_map_edit(mg_router *r, admin_edit_fn edit, void *arg, mg_cmap *out, mg_error *err)
{
    mg_cmap *cur = malloc(sizeof *cur), *next = malloc(sizeof *next);
    int rc = MG_OK;
    if (cur == NULL || next == NULL) {
        rc = mg_error_set(err, MG_ENOMEM, "out of memory");
        goto done;
    }
    for (int attempt = 0;; attempt++) {
        if ((rc = admin_map_read(r, cur, err)) != MG_OK)
            goto done;
        if (cur->epoch == 0) {
            rc = mg_error_set(err, MG_EEXIST, "the cluster is not initialized (POST /admin/init)");
            goto done;
        }
        *next = *cur;
        bool changed = false;
        if ((rc = edit(next, arg, &changed, err)) != MG_OK)
            goto done;
        if (!changed) {
            if (out != NULL)
                *out = *cur;
            goto done;
        }
        next->epoch = cur->epoch + 1;
        if ((rc = mg_cmap_check(next, err)) != MG_OK) {
            mg_error_wrap(err, MG_EEXIST, "the new map breaks a placement rule");
            rc = MG_EEXIST;
            goto done;
        }
        const mg_cmap_group *meta = mg_cmap_group_get(cur, 0);
        rc = meta ? admin_map_put(r, meta->replicas, meta->n_replicas, cur->epoch, next, err)
                  : mg_error_set(err, MG_EINTERNAL, "the map has no meta group");
        if (rc == MG_EBUSY) {
            /* Our own write may have been applied with its answer lost. */
            mg_cmap *now = cur;
            if (admin_map_read(r, now, NULL) == MG_OK && map_same(now, next))
                rc = MG_OK;
        }
        if (rc == MG_OK && out != NULL)
            *out = *next;
        if (rc != MG_EBUSY || attempt == 2)
            goto done;
    }
done:
    free(cur);
    free(next);
    return rc;
}
