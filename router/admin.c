/*
 * Admin API: the helpers every operation uses (router/admin.h) and the
 * read-only endpoints: /admin/map, /admin/status, /admin/nodes,
 * /admin/groups, /admin/slots.
 */
#include "admin.h"

#include "../cluster/meta.h"
#include "../lib/clock.h"
#include "../lib/jsonmp.h"
#include "../lib/log.h"
#include "../lib/metrics.h"

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
        for (uint32_t i = 0; i < n; i++) {
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
    int prc = msgpack_pack_map(&b.pk, 3) | mg_mp_pack_cstr(&b.pk, "replica") |
              msgpack_pack_uint64(&b.pk, node) | mg_mp_pack_cstr(&b.pk, "address") |
              mg_mp_pack_cstr(&b.pk, addr) | mg_mp_pack_cstr(&b.pk, "bootstrap");
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

/* ---- the map ------------------------------------------------------------ */

int admin_map_read(mg_router *r, mg_cmap *out, mg_error *err)
{
    int rc = mg_client_refresh(r->client, err);
    if (rc != MG_OK && mg_client_epoch(r->client) == 0) {
        /* No map known and none to be had: before init no node hosts the
         * meta group. Reads show the empty map; edits refuse it. */
        mg_cmap_init(out);
        return MG_OK;
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

/* ---- JSON forms ------------------------------------------------------------ */

static const char *state_name(int state)
{
    return state == MG_CMAP_NODE_REMOVING ? "removing" : "up";
}

json_t *admin_node_json(const mg_cmap_node *n)
{
    return json_pack("{s:I,s:s,s:s,s:s,s:I,s:s}", "id", (json_int_t)n->id, "rpc", n->rpc,
                     "survey", n->survey, "raft_host", n->raft_host, "raft_port",
                     (json_int_t)n->raft_port, "state", state_name(n->state));
}

static json_t *ranges_json(const mg_cmap *m)
{
    json_t *a = json_array();
    if (m->epoch == 0)
        return a;
    for (uint32_t s = 0; s < MG_SLOTS;) {
        uint32_t e = s;
        while (e + 1 < MG_SLOTS && m->slot_group[e + 1] == m->slot_group[s])
            e++;
        json_array_append_new(a, json_pack("{s:I,s:I,s:I}", "first", (json_int_t)s, "last",
                                           (json_int_t)e, "group",
                                           (json_int_t)m->slot_group[s]));
        s = e + 1;
    }
    return a;
}

static json_t *replicas_json(const mg_cmap_group *g)
{
    json_t *a = json_array();
    for (uint32_t k = 0; k < g->n_replicas; k++)
        json_array_append_new(a, json_integer((json_int_t)g->replicas[k]));
    return a;
}

json_t *admin_map_json(const mg_cmap *m)
{
    json_t *nodes = json_array(), *groups = json_array();
    for (uint32_t i = 0; i < m->n_nodes; i++)
        json_array_append_new(nodes, admin_node_json(&m->nodes[i]));
    for (uint32_t i = 0; i < m->n_groups; i++) {
        const mg_cmap_group *g = &m->groups[i];
        json_array_append_new(groups,
                              json_pack("{s:I,s:o,s:I}", "id", (json_int_t)g->id, "replicas",
                                        replicas_json(g), "slots",
                                        (json_int_t)mg_cmap_group_slots(m, g->id)));
    }
    return json_pack("{s:I,s:o,s:o,s:o}", "epoch", (json_int_t)m->epoch, "nodes", nodes,
                     "groups", groups, "slots", ranges_json(m));
}

/* ---- the status view -------------------------------------------------------- */

void admin_view_load(mg_router *r, const mg_cmap *m, admin_view *v)
{
    memset(v, 0, sizeof *v);
    v->map = m;
    for (uint32_t i = 0; i < m->n_nodes; i++) {
        mg_client_reply rep;
        mg_error e = {0};
        if (admin_node_call(r, m->nodes[i].id, MG_OP_STATUS, 0, NULL, ADMIN_NODE_MS, &rep, &e) !=
            MG_OK)
            continue;
        mg_mp_reader rd = mg_wire_body(rep.rep.body, rep.rep.body_len);
        json_t *doc = NULL;
        if (mg_jsonmp_read(&rd, &doc) == MG_OK && json_is_object(doc)) {
            v->up[i] = true;
            v->status[i] = doc;
        } else {
            json_decref(doc);
        }
        mg_client_reply_free(&rep);
    }
}

void admin_view_free(admin_view *v)
{
    for (size_t i = 0; i < MG_CMAP_NODES_MAX; i++)
        json_decref(v->status[i]);
    memset(v, 0, sizeof *v);
}

static uint64_t jint(const json_t *o, const char *key)
{
    json_int_t x = json_integer_value(json_object_get(o, key));
    return x > 0 ? (uint64_t)x : 0;
}

const json_t *admin_view_entry(const admin_view *v, size_t i, uint64_t group)
{
    if (i >= MG_CMAP_NODES_MAX || v->status[i] == NULL)
        return NULL;
    size_t k;
    const json_t *e;
    json_array_foreach(json_object_get(v->status[i], "groups"), k, e)
    {
        if (jint(e, "group") == group)
            return e;
    }
    return NULL;
}

static size_t node_index(const mg_cmap *m, uint64_t id)
{
    for (uint32_t i = 0; i < m->n_nodes; i++)
        if (m->nodes[i].id == id)
            return i;
    return MG_CMAP_NODES_MAX;
}

uint64_t admin_view_leader(const admin_view *v, uint64_t group, const json_t **entry)
{
    const mg_cmap_group *g = mg_cmap_group_get(v->map, group);
    uint64_t best = 0, best_term = 0;
    *entry = NULL;
    for (uint32_t k = 0; g != NULL && k < g->n_replicas; k++) {
        const json_t *e = admin_view_entry(v, node_index(v->map, g->replicas[k]), group);
        const char *st = json_string_value(json_object_get(e, "state"));
        if (st != NULL && strcmp(st, "leader") == 0 && (best == 0 || jint(e, "term") > best_term)) {
            best = g->replicas[k];
            best_term = jint(e, "term");
            *entry = e;
        }
    }
    return best;
}

/* ---- read-only handlers ---------------------------------------------------- */

/* The map for a read-only handler, or an answer in resp (NULL returned). */
static mg_cmap *read_map(mg_router *r, mg_api_resp *resp)
{
    mg_cmap *m = malloc(sizeof *m);
    mg_error err = {0};
    if (m == NULL) {
        api_fail(resp, 500, "out of memory");
        return NULL;
    }
    if (admin_map_read(r, m, &err) != MG_OK) {
        admin_fail(resp, &err);
        free(m);
        return NULL;
    }
    return m;
}

void api_admin_map(mg_router *r, const mg_api_req *req, mg_api_resp *resp)
{
    (void)req;
    mg_cmap *m = read_map(r, resp);
    if (m == NULL)
        return;
    api_ok(resp, "ok", admin_map_json(m));
    free(m);
}

void api_admin_status(mg_router *r, const mg_api_req *req, mg_api_resp *resp)
{
    (void)req;
    mg_cmap *m = read_map(r, resp);
    if (m == NULL)
        return;
    admin_view v;
    admin_view_load(r, m, &v);
    bool healthy = true;
    uint32_t leaders[MG_CMAP_NODES_MAX] = {0};
    json_t *groups = json_array();
    for (uint32_t gi = 0; gi < m->n_groups; gi++) {
        const mg_cmap_group *g = &m->groups[gi];
        const json_t *le = NULL;
        uint64_t leader = admin_view_leader(&v, g->id, &le);
        uint64_t lapplied = jint(le, "applied");
        if (leader == 0)
            healthy = false;
        else
            leaders[node_index(m, leader)]++;
        json_t *reps = json_array();
        for (uint32_t k = 0; k < g->n_replicas; k++) {
            size_t ni = node_index(m, g->replicas[k]);
            const json_t *e = admin_view_entry(&v, ni, g->id);
            const char *st = json_string_value(json_object_get(e, "state"));
            if (st == NULL || strcmp(st, "unavailable") == 0)
                st = "down";
            uint64_t applied = jint(e, "applied");
            uint64_t lag = e != NULL && le != NULL && lapplied > applied ? lapplied - applied : 0;
            if (e == NULL || lag > 1000)
                healthy = false;
            json_array_append_new(reps, json_pack("{s:I,s:s,s:I,s:I}", "node",
                                                  (json_int_t)g->replicas[k], "state", st,
                                                  "applied", (json_int_t)applied, "lag",
                                                  (json_int_t)lag));
        }
        json_array_append_new(
            groups, json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:o}", "id", (json_int_t)g->id, "slots",
                              (json_int_t)mg_cmap_group_slots(m, g->id), "leader",
                              (json_int_t)leader, "term", (json_int_t)jint(le, "term"), "commit",
                              (json_int_t)jint(le, "commit"), "applied", (json_int_t)lapplied,
                              "replicas", reps));
    }
    json_t *nodes = json_array();
    for (uint32_t i = 0; i < m->n_nodes; i++) {
        const mg_cmap_node *n = &m->nodes[i];
        if (!v.up[i])
            healthy = false;
        json_array_append_new(
            nodes, json_pack("{s:I,s:s,s:b,s:s,s:I,s:I}", "id", (json_int_t)n->id, "rpc", n->rpc,
                             "up", v.up[i], "state", state_name(n->state), "replicas",
                             (json_int_t)mg_cmap_node_load(m, n->id), "leaders",
                             (json_int_t)leaders[i]));
    }
    if (m->epoch == 0)
        healthy = false;
    api_ok(resp, "ok",
           json_pack("{s:I,s:o,s:o,s:b}", "epoch", (json_int_t)m->epoch, "nodes", nodes,
                     "groups", groups, "healthy", healthy));
    admin_view_free(&v);
    free(m);
}

void api_admin_nodes(mg_router *r, const mg_api_req *req, mg_api_resp *resp)
{
    (void)req;
    mg_cmap *m = read_map(r, resp);
    if (m == NULL)
        return;
    admin_view v;
    admin_view_load(r, m, &v);
    json_t *out = json_array();
    for (uint32_t i = 0; i < m->n_nodes; i++) {
        const mg_cmap_node *n = &m->nodes[i];
        json_t *groups = json_array();
        for (uint32_t g = 0; g < m->n_groups; g++)
            if (mg_cmap_group_has(&m->groups[g], n->id))
                json_array_append_new(groups, json_integer((json_int_t)m->groups[g].id));
        char raft[MG_CMAP_HOST_MAX + 16];
        snprintf(raft, sizeof raft, "%s:%u", n->raft_host, (unsigned)n->raft_port);
        json_array_append_new(out, json_pack("{s:I,s:s,s:s,s:s,s:s,s:b,s:o}", "id",
                                             (json_int_t)n->id, "rpc", n->rpc, "survey",
                                             n->survey, "raft", raft, "state",
                                             state_name(n->state), "up", v.up[i], "replicas",
                                             groups));
    }
    api_ok(resp, "ok", out);
    admin_view_free(&v);
    free(m);
}

/* memgrid_node_memories{group} / memgrid_node_cubes{group} of one group
 * from a node's registry. */
typedef struct gauge_pick {
    char group[24];
    int64_t memories, cubes;
    bool found;
} gauge_pick;

static void pick_gauge(const mg_metric_view *mv, void *arg)
{
    gauge_pick *p = arg;
    const char *g = mg_metric_label(mv, "group");
    if (mv->gauge == NULL || g == NULL || strcmp(g, p->group) != 0)
        return;
    if (strcmp(mv->name, "memgrid_node_memories") == 0) {
        p->memories = mg_gauge_get(mv->gauge);
        p->found = true;
    } else if (strcmp(mv->name, "memgrid_node_cubes") == 0) {
        p->cubes = mg_gauge_get(mv->gauge);
        p->found = true;
    }
}

/* A node's registry from STATS (NULL when it does not answer). */
static mg_metrics *node_registry(mg_router *r, uint64_t node)
{
    mg_client_reply rep;
    mg_error e = {0};
    if (admin_node_call(r, node, MG_OP_STATS, 0, NULL, ADMIN_NODE_MS, &rep, &e) != MG_OK)
        return NULL;
    mg_metrics *reg = NULL;
    mg_mp_reader rd = mg_wire_body(rep.rep.body, rep.rep.body_len);
    uint32_t n;
    if (mg_mp_read_map(&rd, &n) == MG_OK)
        for (uint32_t i = 0; i < n && reg == NULL; i++) {
            bool hist = mg_mp_peek_str_eq(&rd, "hist");
            if (mg_mp_skip(&rd) != MG_OK)
                break;
            if (hist ? mg_metrics_read(&rd, &reg, &e) != MG_OK : mg_mp_skip(&rd) != MG_OK)
                break;
        }
    mg_client_reply_free(&rep);
    return reg;
}

void api_admin_groups(mg_router *r, const mg_api_req *req, mg_api_resp *resp)
{
    (void)req;
    mg_cmap *m = read_map(r, resp);
    if (m == NULL)
        return;
    admin_view v;
    admin_view_load(r, m, &v);
    mg_metrics *regs[MG_CMAP_NODES_MAX] = {0};
    bool asked[MG_CMAP_NODES_MAX] = {0};
    json_t *out = json_array();
    for (uint32_t gi = 0; gi < m->n_groups; gi++) {
        const mg_cmap_group *g = &m->groups[gi];
        const json_t *le = NULL;
        uint64_t leader = admin_view_leader(&v, g->id, &le);
        mg_slotset set;
        mg_cmap_group_slotset(m, g->id, &set);
        char ranges[8192];
        if (mg_slotset_format(&set, ranges, sizeof ranges) != MG_OK)
            snprintf(ranges, sizeof ranges, "(too many ranges)");
        /* Memories and cubes: the gauges of the node that leads the group
         * (null when it does not report them). */
        json_t *mems = json_null(), *cubes = json_null();
        size_t li = leader ? node_index(m, leader) : MG_CMAP_NODES_MAX;
        if (li < MG_CMAP_NODES_MAX) {
            if (!asked[li]) {
                regs[li] = node_registry(r, leader);
                asked[li] = true;
            }
            gauge_pick p = {.found = false};
            snprintf(p.group, sizeof p.group, "%llu", (unsigned long long)g->id);
            if (regs[li] != NULL)
                mg_metrics_walk(regs[li], pick_gauge, &p);
            if (p.found) {
                json_decref(mems);
                json_decref(cubes);
                mems = json_integer(p.memories);
                cubes = json_integer(p.cubes);
            }
        }
        json_array_append_new(
            out, json_pack("{s:I,s:o,s:I,s:I,s:I,s:I,s:s,s:o,s:o}", "id", (json_int_t)g->id,
                           "replicas", replicas_json(g), "leader", (json_int_t)leader, "term",
                           (json_int_t)jint(le, "term"), "applied",
                           (json_int_t)jint(le, "applied"), "slots",
                           (json_int_t)mg_slotset_count(&set), "slot_ranges", ranges,
                           "memories", mems, "cubes", cubes));
    }
    for (size_t i = 0; i < MG_CMAP_NODES_MAX; i++)
        mg_metrics_free(regs[i]);
    api_ok(resp, "ok", out);
    admin_view_free(&v);
    free(m);
}

void api_admin_slots(mg_router *r, const mg_api_req *req, mg_api_resp *resp)
{
    const char *cube = req->arg != NULL && req->arg[0] ? req->arg : NULL;
    if (cube != NULL && !mg_cube_id_valid(cube, strlen(cube))) {
        api_fail(resp, 400, "cube: not a valid cube id");
        return;
    }
    mg_cmap *m = read_map(r, resp);
    if (m == NULL)
        return;
    json_t *groups = json_array();
    for (uint32_t gi = 0; gi < m->n_groups; gi++)
        if (m->groups[gi].id != 0)
            json_array_append_new(groups,
                                  json_pack("{s:I,s:I}", "group", (json_int_t)m->groups[gi].id,
                                            "slots",
                                            (json_int_t)mg_cmap_group_slots(m, m->groups[gi].id)));
    json_t *data = json_pack("{s:I,s:o,s:o}", "epoch", (json_int_t)m->epoch, "ranges",
                             ranges_json(m), "groups", groups);
    if (cube != NULL) {
        uint32_t slot = mg_slot_of(cube, strlen(cube));
        json_object_set_new(data, "cube",
                            json_pack("{s:s,s:I,s:I}", "id", cube, "slot", (json_int_t)slot,
                                      "group",
                                      (json_int_t)(m->epoch ? m->slot_group[slot] : 0)));
    }
    api_ok(resp, "ok", data);
    free(m);
}
