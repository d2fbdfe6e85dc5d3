/*
 * The nng side of the node: a `rep` socket and a `respondent` socket, each
 * with a fixed set of contexts. Every context runs one request at a time
 * through a small state machine driven by its aio callback:
 *
 *   RECV --(message)--> BUSY --(node_reply*)--> SEND --(sent)--> RECV
 *     |                   `--(node_reply_none)----------------->'
 *     `--(closed, cancelled while stopping)--> DONE <--(sent while stopping)
 *
 * BUSY covers the time the request spends on the loop or a worker; whoever
 * finishes it calls node_reply* exactly once, from any thread (nng_aio_set_msg
 * and nng_ctx_send are thread-safe, and the hand-off queues order the
 * context's fields between threads).
 */
#include "node_internal.h"

#include "../lib/clock.h"
#include "../lib/log.h"

#include <errno.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/protocol/survey0/respond.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- dispatch table ------------------------------------------------------ */

static void start_on_worker_read(node_ctx *c)
{
    node_worker_post(c->node, c, node_read_run);
}

static void start_on_worker_status(node_ctx *c)
{
    node_worker_post(c->node, c, node_status_run);
}

static void start_on_worker_stats(node_ctx *c)
{
    node_worker_post(c->node, c, node_stats_run);
}

/* One row per op: where it may arrive and how it starts. */
static const struct op_route {
    bool on_rep;
    bool on_survey;
    node_ctx_fn start;
} routes[MG_OP_COUNT_] = {
    [MG_OP_WRITE] = {true, false, node_write_start},
    [MG_OP_CUBE_GET] = {true, false, start_on_worker_read},
    [MG_OP_CUBE_LIST] = {true, false, start_on_worker_read},
    [MG_OP_MEM_GET] = {true, false, start_on_worker_read},
    [MG_OP_MEM_LIST] = {true, false, start_on_worker_read},
    [MG_OP_MEM_COUNT] = {true, false, start_on_worker_read},
    [MG_OP_USER_GET] = {true, false, start_on_worker_read},
    [MG_OP_SEARCH] = {true, true, node_search_start},
    [MG_OP_STATUS] = {true, false, start_on_worker_status},
    [MG_OP_STATS] = {true, false, start_on_worker_stats},
    [MG_OP_META_GET] = {true, false, node_cluster_start},
    [MG_OP_NODE_INFO] = {true, false, node_cluster_start},
    [MG_OP_GROUP_OPEN] = {true, false, node_cluster_start},
    [MG_OP_GROUP_CLOSE] = {true, false, node_cluster_start},
    [MG_OP_GROUP_MEMBER] = {true, false, node_cluster_start},
    [MG_OP_BARRIER] = {true, false, node_cluster_start},
};

const char *node_raft_state_name(int state)
{
    switch (state) {
    case RAFT_LEADER:
        return "leader";
    case RAFT_FOLLOWER:
        return "follower";
    case RAFT_CANDIDATE:
        return "candidate";
    default:
        return "unavailable";
    }
}

/* ---- context state machine ----------------------------------------------- */

static void ctx_done(node_ctx *c)
{
    mg_node *n = c->node;
    c->state = CTX_DONE;
    pthread_mutex_lock(&n->ctx_lock);
    if (--n->live_ctxs == 0)
        pthread_cond_broadcast(&n->ctx_cond);
    pthread_mutex_unlock(&n->ctx_lock);
}

static void ctx_recv(node_ctx *c)
{
    if (atomic_load(&c->node->stopping)) {
        ctx_done(c);
        return;
    }
    c->state = CTX_RECV;
    nng_ctx_recv(c->ctx, c->aio);
}

/* Frees what the request held; the context is ready for the next one. */
static void ctx_clear_request(node_ctx *c)
{
    node_write_clear(c);
    node_search_clear(c);
    node_cluster_clear(c);
    if (c->msg != NULL) {
        nng_msg_free(c->msg);
        c->msg = NULL;
    }
    memset(&c->env, 0, sizeof c->env);
    c->user[0] = '\0';
}

static void dispatch(node_ctx *c)
{
    mg_node *n = c->node;
    mg_error err = {0};
    int rc = mg_wire_req_decode(nng_msg_body(c->msg), nng_msg_len(c->msg), &c->env, &err);
    if (rc != MG_OK) {
        mg_debug("node.bad_request", "survey=%d code=%s", c->survey, mg_errname(rc));
        node_reply_err(c, &err);
        return;
    }
    uint32_t ms = c->env.deadline_ms ? c->env.deadline_ms : n->cfg.default_deadline_ms;
    c->deadline_ns = c->recv_ns + (uint64_t)ms * 1000000u;
    if (c->env.user_len > 0 && !mg_user_id_valid(c->env.user, c->env.user_len)) {
        node_reply_error(c, MG_EINVAL, "request: invalid user id", 0, NULL);
        return;
    }
    memcpy(c->user, c->env.user, c->env.user_len);
    c->user[c->env.user_len] = '\0';
    const struct op_route *route = &routes[c->env.op];
    if (route->start == NULL || (c->survey ? !route->on_survey : !route->on_rep)) {
        char msg[96];
        snprintf(msg, sizeof msg, "op %s is not served on the %s socket",
                 mg_wire_op_name(c->env.op), c->survey ? "respondent" : "rep");
        node_reply_error(c, MG_EINVAL, msg, 0, NULL);
        return;
    }
    route->start(c);
}

static void ctx_cb(void *arg)
{
    node_ctx *c = arg;
    mg_node *n = c->node;
    int rv = nng_aio_result(c->aio);
    switch (c->state) {
    case CTX_RECV:
        if (rv != 0) {
            if (rv == NNG_ECLOSED || atomic_load(&n->stopping)) {
                ctx_done(c);
                return;
            }
            mg_warn("node.recv_failed", "survey=%d err=\"%s\"", c->survey, nng_strerror(rv));
            ctx_recv(c);
            return;
        }
        c->msg = nng_aio_get_msg(c->aio);
        nng_aio_set_msg(c->aio, NULL);
        c->recv_ns = mg_clock_mono_ns();
        c->state = CTX_BUSY;
        if (atomic_load(&n->stopping)) {
            memset(&c->env, 0, sizeof c->env);
            node_reply_error(c, MG_ESHUTDOWN, "the node is stopping", 0, NULL);
            return;
        }
        dispatch(c);
        return;
    case CTX_SEND:
        if (rv != 0) {
            nng_msg *m = nng_aio_get_msg(c->aio);
            nng_aio_set_msg(c->aio, NULL);
            if (m != NULL)
                nng_msg_free(m);
            if (rv != NNG_ECLOSED)
                mg_warn("node.send_failed", "survey=%d err=\"%s\"", c->survey, nng_strerror(rv));
        }
        ctx_recv(c);
        return;
    default:
        mg_errlog("node.ctx_state", "state=%d rv=%d", (int)c->state, rv);
        return;
    }
}

/* ---- replies ------------------------------------------------------------- */

static void log_request(node_ctx *c, int status)
{
    if (mg_log_level() > MG_LOG_DEBUG)
        return;
    const char *op = mg_wire_op_name(c->env.op);
    mg_log_write(MG_LOG_DEBUG, "node.request", "op=%s rid=%llu group=%llu status=%s us=%.1f",
                 op ? op : "-", (unsigned long long)c->env.rid, (unsigned long long)c->env.group,
                 mg_errname(status),
                 c->recv_ns ? (double)(mg_clock_mono_ns() - c->recv_ns) / 1e3 : 0.0);
}

void node_reply_msg(node_ctx *c, nng_msg *m, int status)
{
    log_request(c, status);
    node_stats_request(c, status);
    ctx_clear_request(c);
    c->state = CTX_SEND;
    nng_aio_set_msg(c->aio, m);
    nng_ctx_send(c->ctx, c->aio);
}

static void send_reply(node_ctx *c, const void *data, size_t len, int status)
{
    nng_msg *m;
    int rv = nng_msg_alloc(&m, len);
    if (rv != 0) {
        mg_errlog("node.reply_nomem", "bytes=%zu", len);
        log_request(c, status);
        node_stats_request(c, status);
        ctx_clear_request(c);
        ctx_recv(c); /* the caller times out */
        return;
    }
    memcpy(nng_msg_body(m), data, len);
    node_reply_msg(c, m, status);
}

void node_reply_begin(node_ctx *c, msgpack_sbuffer *sb, msgpack_packer *pk)
{
    msgpack_sbuffer_init(sb);
    msgpack_packer_init(pk, sb, msgpack_sbuffer_write);
    mg_wire_rep_begin(pk, c->env.rid, MG_OK, NULL, 0, NULL, 0);
}

void node_reply_as(node_ctx *c, msgpack_sbuffer *sb, int status)
{
    if (sb->data == NULL) { /* packing ran out of memory */
        msgpack_sbuffer_destroy(sb);
        node_reply_error(c, MG_ENOMEM, "out of memory encoding the reply", 0, NULL);
        return;
    }
    send_reply(c, sb->data, sb->size, status);
    msgpack_sbuffer_destroy(sb);
}

void node_reply(node_ctx *c, msgpack_sbuffer *sb)
{
    node_reply_as(c, sb, MG_OK);
}

void node_reply_error(node_ctx *c, int code, const char *msg, uint64_t leader_id,
                      const char *leader)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    if (mg_wire_rep_begin(&pk, c->env.rid, code, msg, leader_id, leader, 0) != MG_OK ||
        msgpack_pack_nil(&pk) != 0) {
        msgpack_sbuffer_destroy(&sb);
        mg_errlog("node.reply_nomem", "code=%s", mg_errname(code));
        log_request(c, code);
        node_stats_request(c, code);
        ctx_clear_request(c);
        ctx_recv(c);
        return;
    }
    send_reply(c, sb.data, sb.size, code);
    msgpack_sbuffer_destroy(&sb);
}

void node_reply_wrong_group(node_ctx *c, uint64_t group_id, const char *cube_id, uint64_t epoch)
{
    char msg[MG_CUBE_ID_MAX + 96];
    msgpack_sbuffer sb;
    msgpack_packer pk;
    snprintf(msg, sizeof msg, "group %llu does not own the slot of cube %s (epoch %llu)",
             (unsigned long long)group_id, cube_id, (unsigned long long)epoch);
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    if (mg_wire_rep_begin(&pk, c->env.rid, MG_EWRONGGROUP, msg, 0, NULL, epoch) != MG_OK ||
        msgpack_pack_nil(&pk) != 0) {
        msgpack_sbuffer_destroy(&sb);
        node_reply_error(c, MG_EWRONGGROUP, msg, 0, NULL);
        return;
    }
    node_reply_as(c, &sb, MG_EWRONGGROUP);
}

void node_reply_err(node_ctx *c, const mg_error *err)
{
    node_reply_error(c, err->code != MG_OK ? err->code : MG_EINTERNAL, err->msg, 0, NULL);
}

void node_reply_none(node_ctx *c)
{
    ctx_clear_request(c);
    ctx_recv(c);
}

bool node_expired(node_ctx *c)
{
    if (mg_clock_mono_ns() <= c->deadline_ns)
        return false;
    char msg[96];
    snprintf(msg, sizeof msg, "deadline passed (%.1f ms after the request arrived)",
             (double)(mg_clock_mono_ns() - c->recv_ns) / 1e6);
    node_reply_error(c, MG_ETIMEDOUT, msg, 0, NULL);
    return true;
}

node_group *node_check_group(node_ctx *c, uint64_t group_id, bool follower)
{
    mg_node *n = c->node;
    char msg[192];
    node_group *ng = node_group_find(n, group_id);
    if (ng == NULL) {
        snprintf(msg, sizeof msg, "group %llu is not hosted on node %llu",
                 (unsigned long long)group_id, (unsigned long long)n->cfg.node_id);
        node_reply_error(c, MG_ENOTFOUND, msg, 0, NULL);
        return NULL;
    }
    if (follower)
        return ng;
    mg_node_group_status st;
    node_group_snapshot(n, ng, &st);
    if (st.raft_state == RAFT_LEADER && st.read_ready)
        return ng;
    if (st.raft_state == RAFT_LEADER) {
        snprintf(msg, sizeof msg,
                 "group %llu: replica %llu was just elected and is catching "
                 "up; retry",
                 (unsigned long long)group_id, (unsigned long long)ng->replica_id);
        node_reply_error(c, MG_EBUSY, msg, st.leader_id, st.leader);
        return NULL;
    }
    if (st.leader_id != 0)
        snprintf(msg, sizeof msg, "group %llu: replica %llu is not the leader (leader %llu at %s)",
                 (unsigned long long)group_id, (unsigned long long)ng->replica_id,
                 (unsigned long long)st.leader_id, st.leader[0] ? st.leader : "?");
    else
        snprintf(msg, sizeof msg, "group %llu: replica %llu is not the leader (no leader known)",
                 (unsigned long long)group_id, (unsigned long long)ng->replica_id);
    node_reply_error(c, MG_ENOTLEADER, msg, st.leader_id, st.leader);
    return NULL;
}

bool node_body_flag(const uint8_t *body, size_t len, const char *key)
{
    mg_mp_reader r = mg_wire_body(body, len);
    uint32_t n;
    if (mg_mp_read_map(&r, &n) != MG_OK)
        return false;
    for (uint32_t i = 0; i < n; i++) {
        bool match = mg_mp_peek_str_eq(&r, key), v;
        if (mg_mp_skip(&r) != MG_OK)
            return false;
        if (match && mg_mp_peek(&r) == MG_MP_BOOL)
            return mg_mp_read_bool(&r, &v) == MG_OK && v;
        if (mg_mp_skip(&r) != MG_OK)
            return false;
    }
    return false;
}

/* ---- sockets ------------------------------------------------------------- */

static int nng_fail(mg_error *err, int rv, const char *what, const char *url)
{
    int code =
        rv == NNG_ENOMEM ? MG_ENOMEM
        : (rv == NNG_EADDRINUSE || rv == NNG_EADDRINVAL || rv == NNG_ENOTSUP || rv == NNG_EINVAL)
            ? MG_EUNAVAIL
            : MG_EIO;
    return mg_error_set(err, code, "%s %s: %s", what, url ? url : "", nng_strerror(rv));
}

static int open_socket(mg_node *n, bool survey, nng_socket *sock, mg_error *err)
{
    const char *url = survey ? n->respondent_url : n->rep_url;
    int rv = survey ? nng_respondent0_open(sock) : nng_rep0_open(sock);
    if (rv != 0)
        return nng_fail(err, rv,
                        survey ? "opening the respondent socket for" : "opening the rep socket for",
                        url);
    rv = nng_socket_set_size(*sock, NNG_OPT_RECVMAXSZ, n->cfg.max_message_bytes);
    if (rv != 0) {
        nng_close(*sock);
        return nng_fail(err, rv, "setting the receive limit on", url);
    }
    return MG_OK;
}

static int open_ctxs(mg_node *n, nng_socket sock, bool survey, size_t from, size_t count,
                     mg_error *err)
{
    for (size_t i = from; i < from + count; i++) {
        node_ctx *c = &n->ctxs[i];
        c->node = n;
        c->survey = survey;
        int rv = nng_aio_alloc(&c->aio, ctx_cb, c);
        if (rv != 0)
            return nng_fail(err, rv, "allocating an aio for",
                            survey ? n->respondent_url : n->rep_url);
        if ((rv = nng_ctx_open(&c->ctx, sock)) != 0)
            return nng_fail(err, rv, "opening a context for",
                            survey ? n->respondent_url : n->rep_url);
        c->opened = true;
    }
    return MG_OK;
}

int node_rpc_open(mg_node *n, mg_error *err)
{
    int rc, rv;
    size_t n_rep = n->cfg.rep_contexts;
    size_t n_resp = n->respondent_url ? n->cfg.respondent_contexts : 0;
    n->ctxs = calloc(n_rep + n_resp, sizeof *n->ctxs);
    if (n->ctxs == NULL)
        return mg_error_set(err, MG_ENOMEM, "out of memory for nng contexts");
    n->n_ctxs = n_rep + n_resp;
    if ((rc = open_socket(n, false, &n->rep, err)) != MG_OK)
        goto err_free;
    n->rep_open = true;
    if (n_resp > 0) {
        if ((rc = open_socket(n, true, &n->resp, err)) != MG_OK)
            goto err_free;
        n->resp_open = true;
    }
    if ((rc = open_ctxs(n, n->rep, false, 0, n_rep, err)) != MG_OK ||
        (rc = open_ctxs(n, n->resp, true, n_rep, n_resp, err)) != MG_OK)
        goto err_free;
    if ((rv = nng_listen(n->rep, n->rep_url, NULL, 0)) != 0) {
        rc = nng_fail(err, rv, "listening on", n->rep_url);
        goto err_free;
    }
    if (n_resp > 0 && (rv = nng_listen(n->resp, n->respondent_url, NULL, 0)) != 0) {
        rc = nng_fail(err, rv, "listening on", n->respondent_url);
        goto err_free;
    }
    return MG_OK;

err_free:
    node_rpc_free(n, true);
    return rc;
}

void node_rpc_start(mg_node *n)
{
    pthread_mutex_lock(&n->ctx_lock);
    n->live_ctxs = n->n_ctxs;
    pthread_mutex_unlock(&n->ctx_lock);
    for (size_t i = 0; i < n->n_ctxs; i++) {
        n->ctxs[i].state = CTX_RECV;
        nng_ctx_recv(n->ctxs[i].ctx, n->ctxs[i].aio);
    }
}

void node_rpc_quiesce(mg_node *n)
{
    atomic_store(&n->stopping, true);
    /* A context waiting for a request is cancelled; a busy one finishes its
     * request and then stops (ctx_recv sees `stopping`). A context may turn
     * from RECV to BUSY to SEND between the load and the cancel, in which
     * case that one reply can be lost: the router treats it as a node that
     * went away. */
    for (size_t i = 0; i < n->n_ctxs; i++)
        if (n->ctxs[i].state == CTX_RECV)
            nng_aio_cancel(n->ctxs[i].aio);
}

bool node_rpc_wait_idle(mg_node *n, unsigned timeout_ms)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&n->ctx_lock);
    while (n->live_ctxs > 0)
        if (pthread_cond_timedwait(&n->ctx_cond, &n->ctx_lock, &until) == ETIMEDOUT)
            break;
    bool idle = n->live_ctxs == 0;
    pthread_mutex_unlock(&n->ctx_lock);
    return idle;
}

void node_rpc_free(mg_node *n, bool idle)
{
    for (size_t i = 0; i < n->n_ctxs; i++)
        if (n->ctxs[i].opened)
            nng_ctx_close(n->ctxs[i].ctx);
    if (n->rep_open)
        nng_close(n->rep);
    if (n->resp_open)
        nng_close(n->resp);
    n->rep_open = n->resp_open = false;
    if (!idle)
        return; /* a context may still be used by a request in flight */
    for (size_t i = 0; i < n->n_ctxs; i++)
        if (n->ctxs[i].aio != NULL)
            nng_aio_free(n->ctxs[i].aio);
    free(n->ctxs);
    n->ctxs = NULL;
    n->n_ctxs = 0;
}
