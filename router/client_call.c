/*
 * The cluster client's request path (router/client.h): mg_client_run with
 * its leader and failover logic, one call to one node, one request to
 * several nodes.
 */
#include "client_internal.h"

#include "../lib/log.h"
#include "../lib/mp.h"

#include <stdlib.h>
#include <string.h>

/* ---- request / reply ---------------------------------------------------- */

/* One call in flight. */
typedef struct pending {
    mg_client_call *call;
    uint64_t group;  /* this try's */
    int node;
    int next;        /* the node a leader hint named for the next try, or -1 */
    slot *slot;
    uint64_t rid;
    uint64_t drops;  /* the node's drop count when the request was sent */
    bool sent;
    bool done;
    unsigned unreachable; /* tries in a row that found no connection */
    /* The nodes (by index) that answered "not hosted" for the group, while
     * the map had epoch nh_epoch: they are not asked again. */
    uint64_t not_hosted[NODES_WORDS];
    uint64_t nh_epoch;
} pending;

int client_build_request(const char *user, int op, uint64_t group, const void *body,
                         size_t body_len, uint64_t rid, uint32_t deadline_ms, nng_msg **out)
{
    nng_msg *m;
    if (nng_msg_alloc(&m, 0) != 0)
        return MG_ENOMEM;
    msgpack_packer pk;
    msgpack_packer_init(&pk, m, client_msg_write);
    int rc = mg_wire_req_begin(&pk, op, rid, 0, group, deadline_ms, user);
    if (rc == MG_OK && nng_msg_append(m, body, body_len) != 0)
        rc = MG_ENOMEM;
    if (rc != MG_OK) {
        nng_msg_free(m);
        return rc;
    }
    *out = m;
    return MG_OK;
}

static bool retryable(int status)
{
    return status == MG_ENOTLEADER || status == MG_ETIMEDOUT || status == MG_EUNAVAIL ||
           status == MG_EBUSY || status == MG_EWRONGGROUP;
}

static void call_fail(pending *q, size_t *left, int code, const char *msg)
{
    q->call->status = mg_error_set(&q->call->err, code, "%s", msg);
    q->done = true;
    (*left)--;
}

static bool nh_has(const pending *q, int i)
{
    return (q->not_hosted[i / 64] >> (i % 64)) & 1u;
}

/* The first candidate for q's group after node `from`, in candidate order,
 * that has not answered "not hosted": one that is not down when there is
 * such. -1 when every candidate answered so. */
static int nh_next(mg_client *c, const pending *q, int from)
{
    int cand[NODES_CAP];
    size_t n = client_group_candidates(c, q->group, cand);
    size_t pos = n - 1; /* the scan starts at cand[0] when from is not one */
    for (size_t k = 0; k < n; k++)
        if (cand[k] == from)
            pos = k;
    int any = -1;
    for (size_t k = 1; k <= n; k++) {
        int j = cand[(pos + k) % n];
        if (nh_has(q, j))
            continue;
        if (!client_node_down(c, j))
            return j;
        if (any < 0)
            any = j;
    }
    return any;
}

/* The node to send q to this try: the hinted one, else the leader guess;
 * never one that answered "not hosted" while another candidate has not. */
static int pick_node(mg_client *c, pending *q, bool *all_down)
{
    uint64_t epoch = mg_client_epoch(c);
    if (q->nh_epoch != epoch) {
        memset(q->not_hosted, 0, sizeof q->not_hosted);
        q->nh_epoch = epoch;
    }
    int node = q->next;
    q->next = -1;
    *all_down = false;
    if (node < 0)
        node = client_leader_pick(c, q->group, all_down);
    if (node >= 0 && nh_has(q, node)) {
        int other = nh_next(c, q, node);
        if (other >= 0)
            node = other;
        else /* every one said so (with the same map): ask again */
            memset(q->not_hosted, 0, sizeof q->not_hosted);
    }
    return node;
}

/* A node's error answer (rep->status not MG_OK) to q: sets the call's
 * status, moves the leader guess, and sets *refresh when the map may be
 * stale and *pause when the group is electing. True when the call is
 * done. */
static bool answer_error(mg_client *c, pending *q, const mg_wire_rep *rep, bool may_refresh,
                         bool *refresh, bool *pause)
{
    uint64_t epoch = mg_client_epoch(c);
    if (rep->status == MG_ENOTFOUND &&
        memmem(rep->msg, rep->msg_len, NOT_HOSTED, strlen(NOT_HOSTED)) != NULL) {
        /* The node hosts no replica of the group: a node asked without a
         * map (group 0), or a replica that moved away. Its answer does not
         * become the call's (the status stays that of the last node that
         * does host the group, or no answer): ask the candidates that have
         * not said so, then a newer map. */
        if (q->nh_epoch == epoch)
            q->not_hosted[q->node / 64] |= (uint64_t)1 << (q->node % 64);
        client_leader_moved(c, q->group, 0, q->node);
        if (epoch != 0)
            *refresh = true; /* a replica of our map moved away: learn where */
        q->next = nh_next(c, q, q->node);
        if (q->next >= 0)
            return false;
        /* Every candidate said so: the map is stale (retried after a
         * refresh until the deadline), or nothing hosts the group. */
        int cand[NODES_CAP];
        size_t n = client_group_candidates(c, q->group, cand);
        bool retry = may_refresh && epoch != 0;
        if (epoch != 0)
            q->call->status = mg_error_set(&q->call->err, retry ? MG_EUNAVAIL : MG_ENOTFOUND,
                                           "group %llu " NOT_HOSTED_ANY " of its %zu replicas in "
                                           "the cluster map (epoch %llu)",
                                           (unsigned long long)q->group, n,
                                           (unsigned long long)epoch);
        else
            q->call->status = mg_error_set(&q->call->err, MG_ENOTFOUND,
                                           "group %llu " NOT_HOSTED_ANY " of the %zu seed nodes",
                                           (unsigned long long)q->group, n);
        *pause = retry;
        return !retry;
    }
    q->call->status =
        mg_error_set(&q->call->err, rep->status, "%.*s", (int)rep->msg_len, rep->msg);
    if (rep->msg_len == 0)
        mg_error_set(&q->call->err, rep->status, "%s", mg_strerror(rep->status));
    if (rep->status == MG_ENOTLEADER) {
        q->next = client_leader_moved(c, q->group, rep->leader_id, q->node);
        if (q->next < 0)
            *pause = true; /* no leader known yet, or it is down */
    }
    if (rep->status == MG_EUNAVAIL || rep->status == MG_EBUSY)
        *pause = true;
    if (rep->status == MG_EWRONGGROUP) {
        /* A stale map, or a rebalance between its freeze and its flip:
         * refresh and retry until the flip. */
        *refresh = true;
        *pause = true;
    }
    return !retryable(rep->status) || (!may_refresh && rep->status == MG_EWRONGGROUP);
}

/* mg_client_run with its own deadline; may_refresh = false for the
 * refresh's own META_GET (which must not wait on itself). */
void client_run_calls(mg_client *c, const char *user, mg_client_call *calls, size_t n,
                      unsigned timeout_ms, bool may_refresh)
{
    pending local[8];
    pending *p = n <= 8 ? local : calloc(n, sizeof *p);
    if (p == NULL) {
        for (size_t i = 0; i < n; i++)
            calls[i].status = mg_error_set(&calls[i].err, MG_ENOMEM, "out of memory");
        return;
    }
    memset(p, 0, n * sizeof *p);
    uint64_t deadline = client_now_ms() + timeout_ms;
    bool need_map = false;
    for (size_t i = 0; i < n; i++) {
        p[i].call = &calls[i];
        p[i].next = -1;
        memset(&calls[i].reply, 0, sizeof calls[i].reply);
        calls[i].status = mg_error_set(&calls[i].err, MG_ETIMEDOUT, "no answer within %u ms",
                                       timeout_ms);
        need_map |= calls[i].cube_id != NULL || calls[i].group != 0;
    }
    /* Before any map only group 0 (and nodes) can be reached: fetch one now
     * rather than fail a router that started before `ctl init`. */
    if (need_map && may_refresh && mg_client_epoch(c) == 0)
        client_refresh_run(c, timeout_ms, NULL);
    mg_error why;
    if (need_map && mg_client_epoch(c) == 0)
        mg_client_no_map(c, &why);
    size_t left = n;
    for (size_t i = 0; need_map && i < n && mg_client_epoch(c) == 0; i++)
        if (calls[i].cube_id != NULL || calls[i].group != 0)
            call_fail(&p[i], &left, MG_EUNAVAIL, why.msg);
    while (left > 0) {
        uint64_t now = client_now_ms();
        if (now >= deadline)
            break;
        uint32_t remain = (uint32_t)(deadline - now);
        bool refresh = false;
        /* Send every call not yet done. */
        for (size_t i = 0; i < n; i++) {
            pending *q = &p[i];
            if (q->done)
                continue;
            q->sent = false;
            q->slot = NULL;
            const char *cube = q->call->cube_id;
            if (cube != NULL || q->call->group != 0) {
                if (mg_client_epoch(c) == 0) {
                    mg_client_no_map(c, &why);
                    call_fail(q, &left, MG_EUNAVAIL, why.msg);
                    continue;
                }
            }
            q->group = cube != NULL ? mg_client_group(c, cube, strlen(cube)) : q->call->group;
            bool all_down = false;
            q->node = pick_node(c, q, &all_down);
            if (q->node < 0) {
                /* The group is not in our map (any more): a newer map knows. */
                q->call->status = mg_error_set(&q->call->err, MG_EUNAVAIL,
                                               "group %llu has no replica in the cluster map "
                                               "(epoch %llu)",
                                               (unsigned long long)q->group,
                                               (unsigned long long)mg_client_epoch(c));
                refresh = true;
                continue;
            }
            if (all_down)
                refresh = true; /* the group may have moved */
            int rc = MG_OK;
            node_conn *nc = &c->nodes[q->node];
            q->slot = client_pool_get(&nc->req, &rc);
            if (q->slot == NULL) {
                q->call->status = mg_error_set(&q->call->err, rc, "no context: %s",
                                               mg_strerror(rc));
                q->done = true;
                left--;
                continue;
            }
            q->rid = atomic_fetch_add(&c->next_rid, 1);
            nng_msg *m;
            rc = client_build_request(user, q->call->op, q->group, q->call->body, q->call->body_len,
                               q->rid, remain, &m);
            if (rc != MG_OK) {
                client_pool_put(&nc->req, q->slot);
                q->slot = NULL;
                q->call->status = mg_error_set(&q->call->err, rc, "request: %s", mg_strerror(rc));
                q->done = true;
                left--;
                continue;
            }
            nng_aio_set_msg(q->slot->aio, m);
            /* A send waits for a connection to the node: a node that is down
             * has none, so give up on it soon and try the next one. */
            nng_aio_set_timeout(q->slot->aio,
                                (nng_duration)(remain < SEND_WAIT_MS ? remain : SEND_WAIT_MS));
            q->drops = atomic_load(&nc->drops);
            client_inflight_add(nc, q->slot);
            nng_ctx_send(q->slot->ctx, q->slot->aio);
            q->sent = true;
        }
        /* Wait for the sends, then post the receives. */
        for (size_t i = 0; i < n; i++) {
            pending *q = &p[i];
            if (!q->sent)
                continue;
            node_conn *nc = &c->nodes[q->node];
            nng_aio_wait(q->slot->aio);
            int rv = nng_aio_result(q->slot->aio);
            if (rv != 0) {
                client_inflight_remove(nc, q->slot);
                nng_msg_free(nng_aio_get_msg(q->slot->aio));
                q->sent = false;
                bool dropped = rv == NNG_ECONNRESET ||
                               (rv == NNG_ECANCELED && atomic_load(&nc->drops) != q->drops);
                char who[MG_CMAP_URL_MAX + 16];
                client_node_label(c, q->node, who, sizeof who);
                if (dropped)
                    q->call->status = mg_error_set(&q->call->err, MG_EUNAVAIL,
                                                   "connection to %s lost", who);
                else
                    q->call->status = mg_error_set(&q->call->err, client_nng_to_mg(rv),
                                                   "send to %s: %s", who, nng_strerror(rv));
                if (rv == NNG_ETIMEDOUT || dropped) {
                    client_leader_moved(c, q->group, 0, q->node); /* not connected */
                    int cand[NODES_CAP];
                    size_t nc_ = client_group_candidates(c, q->group, cand);
                    if (++q->unreachable >= (nc_ ? nc_ : 1))
                        refresh = true; /* no replica reachable: moved? */
                }
                continue;
            }
            now = client_now_ms();
            nng_aio_set_timeout(q->slot->aio,
                                now < deadline ? (nng_duration)(deadline - now) : 1);
            nng_ctx_recv(q->slot->ctx, q->slot->aio);
            /* A drop whose cancel pass ran before this receive was posted. */
            if (atomic_load(&nc->drops) != q->drops)
                nng_aio_cancel(q->slot->aio);
        }
        bool pause = false;
        for (size_t i = 0; i < n; i++) {
            pending *q = &p[i];
            if (q->done || q->slot == NULL)
                continue;
            node_conn *nc = &c->nodes[q->node];
            if (q->sent) {
                nng_aio_wait(q->slot->aio);
                client_inflight_remove(nc, q->slot);
                int rv = nng_aio_result(q->slot->aio);
                char who[MG_CMAP_URL_MAX + 16];
                client_node_label(c, q->node, who, sizeof who);
                if (rv == NNG_ECONNRESET ||
                    (rv == NNG_ECANCELED && atomic_load(&nc->drops) != q->drops)) {
                    /* The connection dropped with the request in flight (our
                     * cancel, or nng's own reset where it fails such requests
                     * instead of keeping them): the node may be dead, try the
                     * next one now (a re-sent write is safe, see client.h). */
                    q->call->status = mg_error_set(&q->call->err, MG_EUNAVAIL,
                                                   "connection to %s lost", who);
                    client_leader_moved(c, q->group, 0, q->node);
                } else if (rv != 0) {
                    q->call->status = mg_error_set(&q->call->err, client_nng_to_mg(rv),
                                                   "%s: %s", who, nng_strerror(rv));
                } else {
                    q->unreachable = 0;
                    mg_client_reply r = {.msg = nng_aio_get_msg(q->slot->aio)};
                    mg_error derr;
                    int rc = mg_wire_rep_decode(nng_msg_body(r.msg), nng_msg_len(r.msg), &r.rep,
                                                &derr);
                    if (rc == MG_OK && r.rep.rid != q->rid)
                        rc = mg_error_set(&derr, MG_ECORRUPT, "reply for another request");
                    if (rc != MG_OK) {
                        q->call->status = mg_error_set(&q->call->err, MG_EINTERNAL,
                                                       "%s: %s", who, derr.msg);
                        mg_client_reply_free(&r);
                        q->done = true;
                        left--;
                    } else if (r.rep.status == MG_OK) {
                        q->call->status = MG_OK;
                        q->call->reply = r;
                        q->done = true;
                        left--;
                    } else {
                        bool done = answer_error(c, q, &r.rep, may_refresh, &refresh, &pause);
                        mg_client_reply_free(&r);
                        if (done) {
                            q->done = true;
                            left--;
                        }
                    }
                }
            }
            client_pool_put(&nc->req, q->slot);
            q->slot = NULL;
            if (!q->done && q->call->status == MG_ESHUTDOWN) {
                q->done = true;
                left--;
            }
        }
        if (left > 0 && refresh) {
            uint64_t t = client_now_ms();
            if (may_refresh && t < deadline)
                client_refresh_run(c, (unsigned)(deadline - t), NULL);
            pause = true;
        }
        if (left > 0 && pause)
            client_sleep_ms(RETRY_PAUSE_MS);
    }
    if (p != local)
        free(p);
}

void mg_client_run(mg_client *c, const char *user, mg_client_call *calls, size_t n)
{
    client_run_calls(c, user, calls, n, c->call_timeout_ms, true);
}

int mg_client_call1(mg_client *c, const char *user, int op, uint64_t group, const void *body,
                    size_t body_len, mg_client_reply *out, mg_error *err)
{
    mg_client_call call = {.op = op, .group = group, .body = body, .body_len = body_len};
    mg_client_run(c, user, &call, 1);
    if (call.status != MG_OK) {
        if (err != NULL)
            *err = call.err;
        return call.status;
    }
    *out = call.reply;
    return MG_OK;
}

int mg_client_call_cube(mg_client *c, const char *user, int op, const char *cube_id,
                        const void *body, size_t body_len, mg_client_reply *out, mg_error *err)
{
    mg_client_call call = {.op = op, .cube_id = cube_id, .body = body, .body_len = body_len};
    mg_client_run(c, user, &call, 1);
    if (call.status != MG_OK) {
        if (err != NULL)
            *err = call.err;
        return call.status;
    }
    *out = call.reply;
    return MG_OK;
}

/* ---- requests to given nodes ------------------------------------------------ */

/* One request to node index `idx` without leader logic: re-sent on transport
 * errors (no connection yet, connection lost) until timeout_ms. */
static int call_index(mg_client *c, int idx, int op, uint64_t group, const void *body,
                      size_t body_len, unsigned timeout_ms, mg_client_reply *out, mg_error *err)
{
    node_conn *nc = &c->nodes[idx];
    uint64_t deadline = client_now_ms() + timeout_ms;
    int status = mg_error_set(err, MG_ETIMEDOUT, "node %llu: no answer within %u ms",
                              (unsigned long long)atomic_load(&nc->id), timeout_ms);
    for (;;) {
        uint64_t now = client_now_ms();
        if (now >= deadline)
            return status;
        uint32_t remain = (uint32_t)(deadline - now);
        int rc = MG_OK;
        slot *s = client_pool_get(&nc->req, &rc);
        if (s == NULL)
            return mg_error_set(err, rc, "no context: %s", mg_strerror(rc));
        uint64_t rid = atomic_fetch_add(&c->next_rid, 1);
        nng_msg *m;
        rc = client_build_request("", op, group, body, body_len, rid, remain, &m);
        if (rc != MG_OK) {
            client_pool_put(&nc->req, s);
            return mg_error_set(err, rc, "request: %s", mg_strerror(rc));
        }
        nng_aio_set_msg(s->aio, m);
        nng_aio_set_timeout(s->aio, (nng_duration)remain);
        uint64_t drops = atomic_load(&nc->drops);
        client_inflight_add(nc, s);
        nng_ctx_send(s->ctx, s->aio);
        nng_aio_wait(s->aio);
        int rv = nng_aio_result(s->aio);
        if (rv != 0) {
            nng_msg_free(nng_aio_get_msg(s->aio));
        } else {
            now = client_now_ms();
            nng_aio_set_timeout(s->aio, now < deadline ? (nng_duration)(deadline - now) : 1);
            nng_ctx_recv(s->ctx, s->aio);
            if (atomic_load(&nc->drops) != drops)
                nng_aio_cancel(s->aio);
            nng_aio_wait(s->aio);
            rv = nng_aio_result(s->aio);
        }
        client_inflight_remove(nc, s);
        uint64_t nid = atomic_load(&nc->id);
        if (rv == 0) {
            mg_client_reply r = {.msg = nng_aio_get_msg(s->aio)};
            client_pool_put(&nc->req, s);
            mg_error derr;
            rc = mg_wire_rep_decode(nng_msg_body(r.msg), nng_msg_len(r.msg), &r.rep, &derr);
            if (rc == MG_OK && r.rep.rid != rid)
                rc = mg_error_set(&derr, MG_ECORRUPT, "reply for another request");
            if (rc != MG_OK) {
                mg_client_reply_free(&r);
                return mg_error_set(err, MG_EINTERNAL, "node %llu: %s", (unsigned long long)nid,
                                    derr.msg);
            }
            if (r.rep.status != MG_OK) {
                status = mg_error_set(err, r.rep.status, "node %llu: %.*s",
                                      (unsigned long long)nid, (int)r.rep.msg_len, r.rep.msg);
                mg_client_reply_free(&r);
                return status;
            }
            *out = r;
            return MG_OK;
        }
        client_pool_put(&nc->req, s);
        if (rv == NNG_ECLOSED || (rv == NNG_ECANCELED && atomic_load(&nc->drops) == drops))
            return mg_error_set(err, MG_ESHUTDOWN, "client closing");
        status = mg_error_set(err, rv == NNG_ETIMEDOUT ? MG_ETIMEDOUT : MG_EUNAVAIL,
                              "node %llu (%s): %s", (unsigned long long)nid, nc->rpc,
                              rv == NNG_ECANCELED ? "connection lost" : nng_strerror(rv));
        if (client_now_ms() + RETRY_PAUSE_MS < deadline)
            client_sleep_ms(RETRY_PAUSE_MS);
    }
}

int mg_client_call_node(mg_client *c, uint64_t node_id, int op, uint64_t group,
                        const void *body, size_t body_len, unsigned timeout_ms,
                        mg_client_reply *out, mg_error *err)
{
    int i = client_node_index(c, node_id);
    if (i < 0)
        return mg_error_set(err, MG_EUNAVAIL, "node %llu is not known to this router",
                            (unsigned long long)node_id);
    return call_index(c, i, op, group, body, body_len, timeout_ms ? timeout_ms : 1, out, err);
}

bool mg_client_node_up(mg_client *c, uint64_t node_id)
{
    int i = client_node_index(c, node_id);
    return i >= 0 && atomic_load(&c->nodes[i].pipes) > 0;
}

/* ---- one request to several nodes (admin) ----------------------------------- */

/* Sends to the nodes idx[0..n) (-1: unknown, answered MG_EUNAVAIL) at once,
 * without retries, and collects within timeout_ms. */
void client_call_indices(mg_client *c, const int *idx, size_t n, int op, const void *body,
                         size_t body_len, unsigned timeout_ms, mg_client_call *calls)
{
    slot **slots = calloc(n ? n : 1, sizeof *slots);
    uint64_t *rids = calloc(n ? n : 1, sizeof *rids);
    for (size_t i = 0; i < n; i++) {
        calls[i] = (mg_client_call){.op = op, .body = body, .body_len = body_len};
        calls[i].status = mg_error_set(&calls[i].err, MG_ENOMEM, "out of memory");
    }
    if (slots == NULL || rids == NULL)
        goto done;
    uint64_t deadline = client_now_ms() + timeout_ms;
    /* Send to every node, then collect: the nodes answer concurrently. */
    for (size_t i = 0; i < n; i++) {
        if (idx[i] < 0) {
            calls[i].status = mg_error_set(&calls[i].err, MG_EUNAVAIL, "node not known");
            continue;
        }
        node_conn *nc = &c->nodes[idx[i]];
        int rc = MG_OK;
        nng_msg *m;
        slots[i] = client_pool_get(&nc->req, &rc);
        if (slots[i] == NULL) {
            calls[i].status = mg_error_set(&calls[i].err, rc, "no context: %s", mg_strerror(rc));
            continue;
        }
        rids[i] = atomic_fetch_add(&c->next_rid, 1);
        rc = client_build_request("", op, 0, body, body_len, rids[i], timeout_ms, &m);
        if (rc != MG_OK) {
            calls[i].status = mg_error_set(&calls[i].err, rc, "request: %s", mg_strerror(rc));
            client_pool_put(&nc->req, slots[i]);
            slots[i] = NULL;
            continue;
        }
        nng_aio_set_msg(slots[i]->aio, m);
        nng_aio_set_timeout(slots[i]->aio, (nng_duration)timeout_ms);
        nng_ctx_send(slots[i]->ctx, slots[i]->aio);
    }
    for (size_t i = 0; i < n; i++) {
        if (slots[i] == NULL)
            continue;
        node_conn *nc = &c->nodes[idx[i]];
        nng_aio_wait(slots[i]->aio);
        int rv = nng_aio_result(slots[i]->aio);
        if (rv != 0) {
            nng_msg_free(nng_aio_get_msg(slots[i]->aio));
            calls[i].status =
                mg_error_set(&calls[i].err, client_nng_to_mg(rv), "send to node %llu: %s",
                             (unsigned long long)atomic_load(&nc->id), nng_strerror(rv));
            client_pool_put(&nc->req, slots[i]);
            slots[i] = NULL;
            continue;
        }
        uint64_t now = client_now_ms();
        nng_aio_set_timeout(slots[i]->aio, now < deadline ? (nng_duration)(deadline - now) : 1);
        nng_ctx_recv(slots[i]->ctx, slots[i]->aio);
    }
    for (size_t i = 0; i < n; i++) {
        if (slots[i] == NULL)
            continue;
        node_conn *nc = &c->nodes[idx[i]];
        unsigned long long nid = (unsigned long long)atomic_load(&nc->id);
        nng_aio_wait(slots[i]->aio);
        int rv = nng_aio_result(slots[i]->aio);
        if (rv != 0) {
            calls[i].status = mg_error_set(&calls[i].err, client_nng_to_mg(rv), "node %llu: %s",
                                           nid, nng_strerror(rv));
        } else {
            mg_client_reply r = {.msg = nng_aio_get_msg(slots[i]->aio)};
            mg_error derr;
            int rc = mg_wire_rep_decode(nng_msg_body(r.msg), nng_msg_len(r.msg), &r.rep, &derr);
            if (rc == MG_OK && r.rep.rid != rids[i])
                rc = mg_error_set(&derr, MG_ECORRUPT, "reply for another request");
            if (rc != MG_OK)
                calls[i].status = mg_error_set(&calls[i].err, MG_EINTERNAL, "node %llu: %s", nid,
                                               derr.msg);
            else if (r.rep.status != MG_OK)
                calls[i].status = mg_error_set(&calls[i].err, r.rep.status, "node %llu: %.*s",
                                               nid, (int)r.rep.msg_len, r.rep.msg);
            if (rc == MG_OK && r.rep.status == MG_OK) {
                calls[i].status = MG_OK;
                mg_error_clear(&calls[i].err);
                calls[i].reply = r;
            } else {
                mg_client_reply_free(&r);
            }
        }
        client_pool_put(&nc->req, slots[i]);
    }
done:
    free(slots);
    free(rids);
}

void mg_client_call_each(mg_client *c, int op, const void *body, size_t body_len,
                         unsigned timeout_ms, mg_client_call *calls)
{
    size_t n = client_nodes_count(c);
    int idx[NODES_CAP];
    for (size_t i = 0; i < n; i++)
        idx[i] = (int)i;
    client_call_indices(c, idx, n, op, body, body_len, timeout_ms, calls);
}

void mg_client_call_nodes(mg_client *c, const uint64_t *ids, size_t n, int op, const void *body,
                          size_t body_len, unsigned timeout_ms, mg_client_call *calls)
{
    int *idx = calloc(n ? n : 1, sizeof *idx);
    if (idx == NULL) {
        for (size_t i = 0; i < n; i++) {
            calls[i] = (mg_client_call){.op = op};
            calls[i].status = mg_error_set(&calls[i].err, MG_ENOMEM, "out of memory");
        }
        return;
    }
    for (size_t i = 0; i < n; i++)
        idx[i] = client_node_index(c, ids[i]);
    client_call_indices(c, idx, n, op, body, body_len, timeout_ms, calls);
    free(idx);
}
