#include "client.h"

#include "../lib/log.h"
#include "../lib/mp.h"

#include <nng/protocol/reqrep0/req.h>
#include <nng/protocol/survey0/survey.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <xxhash.h>

/* A context and its aio, reused across calls. */
typedef struct slot {
    nng_ctx ctx;
    nng_aio *aio;
    struct slot *next;
    /* On its node's in-flight list while a request waits on it (req sockets
     * only; node_conn.lock). */
    struct slot *iprev, *inext;
} slot;

typedef struct slot_pool {
    nng_socket sock;
    pthread_mutex_t lock;
    slot *free;
    bool closed;
} slot_pool;

/* A node's req socket. nng keeps a request whose connection dropped pending
 * until it can re-send it on a new one (so until the call's deadline when
 * the node died): a pipe-removal notification cancels the requests in flight
 * on the socket instead, and mg_client_run retries them elsewhere at once.
 * "lost" (a connection dropped and none is up again) marks the node as down:
 * leader guesses skip it rather than wait SEND_WAIT_MS for a connection. */
typedef struct node_conn {
    uint64_t id;
    slot_pool req;
    pthread_mutex_t lock;        /* inflight */
    slot *inflight;
    _Atomic uint64_t drops;      /* connections lost so far */
    _Atomic int pipes;           /* connections up */
    _Atomic bool lost;
    bool lock_init;
} node_conn;

/* nng's surveyor queues at most 8 surveys per pipe that are waiting to go
 * on the wire and silently drops the next ones (best-effort broadcast). A
 * burst of concurrent searches would lose surveys. So the client spreads
 * surveys over several surveyor sockets (each with its own pipes) and lets
 * each carry at most SURVEY_INFLIGHT surveys at a time; more wait for a
 * free place rather than be dropped. */
#define SURVEY_SOCKETS 4

/* How long a request waits for a connection to its node before the node is
 * taken as down and the next one is tried (mg_client_run). */
#define SEND_WAIT_MS 300
#define SURVEY_INFLIGHT 8

struct mg_client {
    node_conn *nodes;
    size_t n_nodes;
    slot_pool survey[SURVEY_SOCKETS];
    int survey_inflight[SURVEY_SOCKETS];
    unsigned survey_next;
    pthread_mutex_t survey_lock;
    pthread_cond_t survey_free;
    uint64_t slot_group[MG_ROUTER_SLOTS];
    _Atomic int leader[MG_ROUTER_GROUPS_MAX]; /* group → index in nodes */
    _Atomic uint64_t next_rid;
    unsigned call_timeout_ms;
    unsigned survey_timeout_ms;
};

/* ---- helpers ------------------------------------------------------------ */

static int nng_to_mg(int rv)
{
    switch (rv) {
    case 0:
        return MG_OK;
    case NNG_ENOMEM:
        return MG_ENOMEM;
    case NNG_ETIMEDOUT:
        return MG_ETIMEDOUT;
    case NNG_ECLOSED:
    case NNG_ECANCELED:
        return MG_ESHUTDOWN;
    default:
        return MG_EUNAVAIL;
    }
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* msgpack writer appending to an nng message: the request is packed straight
 * into the buffer nng sends. */
static int msg_write(void *data, const char *buf, size_t len)
{
    return nng_msg_append((nng_msg *)data, buf, len) == 0 ? 0 : -1;
}

static int pool_init(slot_pool *p)
{
    p->free = NULL;
    p->closed = false;
    return pthread_mutex_init(&p->lock, NULL) == 0 ? MG_OK : MG_ENOMEM;
}

static slot *pool_get(slot_pool *p, int *rc)
{
    pthread_mutex_lock(&p->lock);
    if (p->closed) {
        pthread_mutex_unlock(&p->lock);
        *rc = MG_ESHUTDOWN;
        return NULL;
    }
    slot *s = p->free;
    if (s != NULL) {
        p->free = s->next;
        pthread_mutex_unlock(&p->lock);
        return s;
    }
    pthread_mutex_unlock(&p->lock);
    s = calloc(1, sizeof *s);
    if (s == NULL) {
        *rc = MG_ENOMEM;
        return NULL;
    }
    int rv = nng_ctx_open(&s->ctx, p->sock);
    if (rv == 0) {
        rv = nng_aio_alloc(&s->aio, NULL, NULL);
        if (rv != 0)
            nng_ctx_close(s->ctx);
    }
    if (rv != 0) {
        free(s);
        *rc = nng_to_mg(rv);
        return NULL;
    }
    return s;
}

static void pool_put(slot_pool *p, slot *s)
{
    pthread_mutex_lock(&p->lock);
    s->next = p->free;
    p->free = s;
    pthread_mutex_unlock(&p->lock);
}

/* Frees the pooled slots; the socket must be closed already (so no aio is
 * pending). */
static void pool_destroy(slot_pool *p)
{
    pthread_mutex_lock(&p->lock);
    slot *s = p->free;
    p->free = NULL;
    p->closed = true;
    pthread_mutex_unlock(&p->lock);
    while (s != NULL) {
        slot *next = s->next;
        nng_aio_free(s->aio);
        free(s);
        s = next;
    }
    pthread_mutex_destroy(&p->lock);
}

static int node_index(const mg_client *c, uint64_t node_id)
{
    for (size_t i = 0; i < c->n_nodes; i++)
        if (c->nodes[i].id == node_id)
            return (int)i;
    return -1;
}

static int leader_of(mg_client *c, uint64_t group)
{
    if (group >= MG_ROUTER_GROUPS_MAX)
        return 0;
    int i = atomic_load_explicit(&c->leader[group], memory_order_relaxed);
    return i >= 0 && (size_t)i < c->n_nodes ? i : 0;
}

/* The connection to node i dropped and none is up again. */
static bool node_down(mg_client *c, int i)
{
    node_conn *n = &c->nodes[i];
    return atomic_load(&n->lost) && atomic_load(&n->pipes) == 0;
}

/* Moves the guess for `group` to the hinted node, or to the next node that
 * is not down when the hint names none we know or a node that is down (a
 * follower names the old leader until it notices it is gone). false when
 * the hint was not used. */
static bool leader_moved(mg_client *c, uint64_t group, uint64_t hint_id, int tried)
{
    if (group >= MG_ROUTER_GROUPS_MAX)
        return false;
    int i = hint_id ? node_index(c, hint_id) : -1;
    bool used = i >= 0 && !node_down(c, i);
    if (!used) {
        i = (int)(((size_t)tried + 1) % c->n_nodes);
        for (size_t k = 1; k <= c->n_nodes; k++) {
            int j = (int)(((size_t)tried + k) % c->n_nodes);
            if (!node_down(c, j)) {
                i = j;
                break;
            }
        }
    }
    atomic_store_explicit(&c->leader[group], i, memory_order_relaxed);
    return used;
}

/* ---- connection drops (nng pipe notifications) --------------------------- */

static void inflight_add(node_conn *n, slot *s)
{
    pthread_mutex_lock(&n->lock);
    s->iprev = NULL;
    s->inext = n->inflight;
    if (n->inflight != NULL)
        n->inflight->iprev = s;
    n->inflight = s;
    pthread_mutex_unlock(&n->lock);
}

static void inflight_remove(node_conn *n, slot *s)
{
    pthread_mutex_lock(&n->lock);
    if (s->iprev != NULL)
        s->iprev->inext = s->inext;
    else
        n->inflight = s->inext;
    if (s->inext != NULL)
        s->inext->iprev = s->iprev;
    s->iprev = s->inext = NULL;
    pthread_mutex_unlock(&n->lock);
}

/* nng's thread. The count goes up before the cancels: a caller that posts
 * its receive after a cancel pass compares the count it saw at send time and
 * cancels itself (mg_client_run), so no request is left waiting. */
static void pipe_event(nng_pipe p, nng_pipe_ev ev, void *arg)
{
    (void)p;
    node_conn *n = arg;
    if (ev == NNG_PIPE_EV_ADD_POST) {
        atomic_fetch_add(&n->pipes, 1);
        atomic_store(&n->lost, false);
        return;
    }
    if (ev != NNG_PIPE_EV_REM_POST)
        return;
    int left = atomic_fetch_sub(&n->pipes, 1) - 1;
    if (left <= 0)
        atomic_store(&n->lost, true);
    atomic_fetch_add(&n->drops, 1);
    pthread_mutex_lock(&n->lock);
    for (slot *s = n->inflight; s != NULL; s = s->inext)
        nng_aio_cancel(s->aio);
    pthread_mutex_unlock(&n->lock);
    mg_debug("router.node_dropped", "node=%llu", (unsigned long long)n->id);
}

/* ---- open / close ------------------------------------------------------- */

int mg_client_open(const mg_client_config *cfg, mg_client **out, mg_error *err)
{
    if (cfg->n_nodes == 0 || cfg->n_nodes > MG_ROUTER_NODES_MAX || cfg->slot_group == NULL ||
        cfg->call_timeout_ms == 0 || cfg->survey_timeout_ms == 0)
        return mg_error_set(err, MG_EINVAL, "client: bad configuration");
    mg_client *c = calloc(1, sizeof *c);
    if (c == NULL)
        return mg_error_set(err, MG_ENOMEM, "client: out of memory");
    c->nodes = calloc(cfg->n_nodes, sizeof *c->nodes);
    if (c->nodes == NULL) {
        free(c);
        return mg_error_set(err, MG_ENOMEM, "client: out of memory");
    }
    c->call_timeout_ms = cfg->call_timeout_ms;
    c->survey_timeout_ms = cfg->survey_timeout_ms;
    memcpy(c->slot_group, cfg->slot_group, sizeof c->slot_group);
    for (size_t g = 0; g < MG_ROUTER_GROUPS_MAX; g++) {
        int i = 0;
        if (cfg->group_nodes != NULL && g < cfg->n_group_nodes) {
            i = -1;
            for (size_t n = 0; n < cfg->n_nodes; n++)
                if (cfg->nodes[n].node_id == cfg->group_nodes[g])
                    i = (int)n;
            if (i < 0)
                i = 0;
        }
        atomic_init(&c->leader[g], i);
    }
    atomic_init(&c->next_rid, 1);

    int rc = MG_OK, rv;
    pthread_mutex_init(&c->survey_lock, NULL);
    pthread_cond_init(&c->survey_free, NULL);
    for (int k = 0; k < SURVEY_SOCKETS; k++) {
        if (pool_init(&c->survey[k]) != MG_OK) {
            for (int j = 0; j < k; j++) {
                nng_close(c->survey[j].sock);
                pool_destroy(&c->survey[j]);
            }
            free(c->nodes);
            free(c);
            return mg_error_set(err, MG_ENOMEM, "client: mutex");
        }
        rv = nng_surveyor0_open(&c->survey[k].sock);
        if (rv != 0) {
            pool_destroy(&c->survey[k]);
            for (int j = 0; j < k; j++) {
                nng_close(c->survey[j].sock);
                pool_destroy(&c->survey[j]);
            }
            free(c->nodes);
            free(c);
            return mg_error_set(err, MG_EUNAVAIL, "client: surveyor: %s", nng_strerror(rv));
        }
        nng_socket_set_size(c->survey[k].sock, NNG_OPT_RECVMAXSZ, 0);
    }
    for (size_t i = 0; i < cfg->n_nodes; i++) {
        node_conn *n = &c->nodes[i];
        n->id = cfg->nodes[i].node_id;
        if (pool_init(&n->req) != MG_OK) {
            rc = mg_error_set(err, MG_ENOMEM, "client: mutex");
            break;
        }
        c->n_nodes = i + 1;
        if (pthread_mutex_init(&n->lock, NULL) != 0) {
            rc = mg_error_set(err, MG_ENOMEM, "client: mutex");
            break;
        }
        n->lock_init = true;
        atomic_init(&n->drops, 0);
        atomic_init(&n->pipes, 0);
        atomic_init(&n->lost, false);
        rv = nng_req0_open(&n->req.sock);
        if (rv != 0) {
            rc = mg_error_set(err, MG_EUNAVAIL, "client: req socket: %s", nng_strerror(rv));
            break;
        }
        rv = nng_pipe_notify(n->req.sock, NNG_PIPE_EV_ADD_POST, pipe_event, n);
        if (rv == 0)
            rv = nng_pipe_notify(n->req.sock, NNG_PIPE_EV_REM_POST, pipe_event, n);
        if (rv != 0) {
            rc = mg_error_set(err, MG_EUNAVAIL, "client: pipe notify: %s", nng_strerror(rv));
            break;
        }
        /* We retry ourselves, with the call's deadline. */
        nng_socket_set_ms(n->req.sock, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
        nng_socket_set_size(n->req.sock, NNG_OPT_RECVMAXSZ, 0);
        nng_socket_set_int(n->req.sock, NNG_OPT_SENDBUF, 1024);
        nng_socket_set_ms(n->req.sock, NNG_OPT_RECONNMINT, 20);
        nng_socket_set_ms(n->req.sock, NNG_OPT_RECONNMAXT, 500);
        rv = nng_dial(n->req.sock, cfg->nodes[i].rpc_url, NULL, NNG_FLAG_NONBLOCK);
        if (rv != 0) {
            rc = mg_error_set(err, MG_EUNAVAIL, "client: dial %s: %s", cfg->nodes[i].rpc_url,
                              nng_strerror(rv));
            break;
        }
        for (int k = 0; cfg->nodes[i].survey_url != NULL && k < SURVEY_SOCKETS; k++) {
            rv = nng_dial(c->survey[k].sock, cfg->nodes[i].survey_url, NULL, NNG_FLAG_NONBLOCK);
            if (rv != 0) {
                rc = mg_error_set(err, MG_EUNAVAIL, "client: dial %s: %s",
                                  cfg->nodes[i].survey_url, nng_strerror(rv));
                break;
            }
        }
        if (rc != MG_OK)
            break;
    }
    if (rc != MG_OK) {
        mg_client_close(c);
        return rc;
    }
    *out = c;
    return MG_OK;
}

void mg_client_close(mg_client *c)
{
    if (c == NULL)
        return;
    for (int k = 0; k < SURVEY_SOCKETS; k++)
        nng_close(c->survey[k].sock);
    for (size_t i = 0; i < c->n_nodes; i++)
        nng_close(c->nodes[i].req.sock);
    for (int k = 0; k < SURVEY_SOCKETS; k++)
        pool_destroy(&c->survey[k]);
    pthread_cond_destroy(&c->survey_free);
    pthread_mutex_destroy(&c->survey_lock);
    for (size_t i = 0; i < c->n_nodes; i++) {
        pool_destroy(&c->nodes[i].req);
        if (c->nodes[i].lock_init)
            pthread_mutex_destroy(&c->nodes[i].lock);
    }
    free(c->nodes);
    free(c);
}

uint64_t mg_client_group(const mg_client *c, const char *cube_id, size_t len)
{
    return c->slot_group[XXH3_64bits(cube_id, len) % MG_ROUTER_SLOTS];
}

void mg_client_reply_free(mg_client_reply *r)
{
    if (r->msg != NULL)
        nng_msg_free(r->msg);
    memset(r, 0, sizeof *r);
}

/* ---- request / reply ---------------------------------------------------- */

/* One call in flight. */
typedef struct pending {
    mg_client_call *call;
    int node;
    slot *slot;
    uint64_t rid;
    uint64_t drops; /* the node's drop count when the request was sent */
    bool sent;
    bool done;
    int tries;
} pending;

static int build_request(mg_client *c, const char *user, const mg_client_call *call, uint64_t rid,
                         uint32_t deadline_ms, nng_msg **out)
{
    nng_msg *m;
    if (nng_msg_alloc(&m, 0) != 0)
        return MG_ENOMEM;
    msgpack_packer pk;
    msgpack_packer_init(&pk, m, msg_write);
    int rc = mg_wire_req_begin(&pk, call->op, rid, 0, call->group, deadline_ms, user);
    if (rc == MG_OK && nng_msg_append(m, call->body, call->body_len) != 0)
        rc = MG_ENOMEM;
    (void)c;
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
           status == MG_EBUSY;
}

void mg_client_run(mg_client *c, const char *user, mg_client_call *calls, size_t n)
{
    pending local[8];
    pending *p = n <= 8 ? local : calloc(n, sizeof *p);
    if (p == NULL) {
        for (size_t i = 0; i < n; i++)
            calls[i].status = mg_error_set(&calls[i].err, MG_ENOMEM, "out of memory");
        return;
    }
    memset(p, 0, n * sizeof *p);
    uint64_t deadline = now_ms() + c->call_timeout_ms;
    for (size_t i = 0; i < n; i++) {
        p[i].call = &calls[i];
        memset(&calls[i].reply, 0, sizeof calls[i].reply);
        mg_error_clear(&calls[i].err);
        calls[i].status = MG_ETIMEDOUT;
    }
    size_t left = n;
    while (left > 0) {
        uint64_t now = now_ms();
        if (now >= deadline)
            break;
        uint32_t remain = (uint32_t)(deadline - now);
        /* Send every call not yet done. */
        for (size_t i = 0; i < n; i++) {
            pending *q = &p[i];
            if (q->done)
                continue;
            q->sent = false;
            q->node = leader_of(c, q->call->group);
            if (node_down(c, q->node)) {
                leader_moved(c, q->call->group, 0, q->node);
                q->node = leader_of(c, q->call->group);
            }
            q->tries++;
            int rc = MG_OK;
            q->slot = pool_get(&c->nodes[q->node].req, &rc);
            if (q->slot == NULL) {
                q->call->status = mg_error_set(&q->call->err, rc, "no context: %s",
                                               mg_strerror(rc));
                q->done = true;
                left--;
                continue;
            }
            q->rid = atomic_fetch_add(&c->next_rid, 1);
            nng_msg *m;
            rc = build_request(c, user, q->call, q->rid, remain, &m);
            if (rc != MG_OK) {
                pool_put(&c->nodes[q->node].req, q->slot);
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
            q->drops = atomic_load(&c->nodes[q->node].drops);
            inflight_add(&c->nodes[q->node], q->slot);
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
                inflight_remove(nc, q->slot);
                nng_msg_free(nng_aio_get_msg(q->slot->aio));
                q->sent = false;
                bool dropped = rv == NNG_ECONNRESET ||
                               (rv == NNG_ECANCELED && atomic_load(&nc->drops) != q->drops);
                if (dropped)
                    q->call->status = mg_error_set(&q->call->err, MG_EUNAVAIL,
                                                   "connection to node %llu lost",
                                                   (unsigned long long)nc->id);
                else
                    q->call->status = mg_error_set(&q->call->err, nng_to_mg(rv),
                                                   "send to node %llu: %s",
                                                   (unsigned long long)nc->id, nng_strerror(rv));
                if (rv == NNG_ETIMEDOUT || dropped)
                    leader_moved(c, q->call->group, 0, q->node); /* not connected */
                continue;
            }
            now = now_ms();
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
            if (q->sent) {
                node_conn *nc = &c->nodes[q->node];
                nng_aio_wait(q->slot->aio);
                inflight_remove(nc, q->slot);
                int rv = nng_aio_result(q->slot->aio);
                if (rv == NNG_ECONNRESET ||
                    (rv == NNG_ECANCELED && atomic_load(&nc->drops) != q->drops)) {
                    /* The connection dropped with the request in flight (our
                     * cancel, or nng's own reset where it fails such requests
                     * instead of keeping them): the node may be dead, try the
                     * next one now (a re-sent write is safe, see client.h). */
                    q->call->status = mg_error_set(&q->call->err, MG_EUNAVAIL,
                                                   "connection to node %llu lost",
                                                   (unsigned long long)nc->id);
                    leader_moved(c, q->call->group, 0, q->node);
                } else if (rv != 0) {
                    q->call->status = mg_error_set(&q->call->err, nng_to_mg(rv),
                                                   "node %llu: %s",
                                                   (unsigned long long)c->nodes[q->node].id,
                                                   nng_strerror(rv));
                } else {
                    mg_client_reply r = {.msg = nng_aio_get_msg(q->slot->aio)};
                    mg_error derr;
                    int rc = mg_wire_rep_decode(nng_msg_body(r.msg), nng_msg_len(r.msg), &r.rep,
                                                &derr);
                    if (rc == MG_OK && r.rep.rid != q->rid)
                        rc = mg_error_set(&derr, MG_ECORRUPT, "reply for another request");
                    if (rc != MG_OK) {
                        q->call->status = mg_error_set(&q->call->err, MG_EINTERNAL,
                                                       "node %llu: %s",
                                                       (unsigned long long)c->nodes[q->node].id,
                                                       derr.msg);
                        mg_client_reply_free(&r);
                        q->done = true;
                        left--;
                    } else if (r.rep.status == MG_OK) {
                        q->call->status = MG_OK;
                        q->call->reply = r;
                        q->done = true;
                        left--;
                    } else {
                        q->call->status = mg_error_set(&q->call->err, r.rep.status, "%.*s",
                                                       (int)r.rep.msg_len, r.rep.msg);
                        if (r.rep.msg_len == 0)
                            mg_error_set(&q->call->err, r.rep.status, "%s",
                                         mg_strerror(r.rep.status));
                        if (r.rep.status == MG_ENOTLEADER &&
                            !leader_moved(c, q->call->group, r.rep.leader_id, q->node))
                            pause = true; /* no leader known yet, or the named one is down */
                        if (r.rep.status == MG_EUNAVAIL || r.rep.status == MG_EBUSY)
                            pause = true;
                        mg_client_reply_free(&r);
                        if (!retryable(q->call->status)) {
                            q->done = true;
                            left--;
                        }
                    }
                }
            }
            pool_put(&c->nodes[q->node].req, q->slot);
            q->slot = NULL;
            if (!q->done && q->call->status == MG_ESHUTDOWN) {
                q->done = true;
                left--;
            }
        }
        if (left > 0 && pause)
            sleep_ms(20);
    }
    if (p != local)
        free(p);
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

/* ---- one request to every node (admin) ----------------------------------- */

size_t mg_client_n_nodes(const mg_client *c)
{
    return c->n_nodes;
}

uint64_t mg_client_node_id(const mg_client *c, size_t i)
{
    return i < c->n_nodes ? c->nodes[i].id : 0;
}

void mg_client_call_each(mg_client *c, int op, const void *body, size_t body_len,
                         unsigned timeout_ms, mg_client_call *calls)
{
    size_t n = c->n_nodes;
    slot **slots = calloc(n ? n : 1, sizeof *slots);
    uint64_t *rids = calloc(n ? n : 1, sizeof *rids);
    for (size_t i = 0; i < n; i++) {
        calls[i] = (mg_client_call){.op = op, .body = body, .body_len = body_len};
        calls[i].status = mg_error_set(&calls[i].err, MG_ENOMEM, "out of memory");
    }
    if (slots == NULL || rids == NULL)
        goto done;
    uint64_t deadline = now_ms() + timeout_ms;
    /* Send to every node, then collect: the nodes answer concurrently. */
    for (size_t i = 0; i < n; i++) {
        int rc = MG_OK;
        nng_msg *m;
        slots[i] = pool_get(&c->nodes[i].req, &rc);
        if (slots[i] == NULL) {
            calls[i].status = mg_error_set(&calls[i].err, rc, "no context: %s", mg_strerror(rc));
            continue;
        }
        rids[i] = atomic_fetch_add(&c->next_rid, 1);
        rc = build_request(c, "", &calls[i], rids[i], timeout_ms, &m);
        if (rc != MG_OK) {
            calls[i].status = mg_error_set(&calls[i].err, rc, "request: %s", mg_strerror(rc));
            pool_put(&c->nodes[i].req, slots[i]);
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
        nng_aio_wait(slots[i]->aio);
        int rv = nng_aio_result(slots[i]->aio);
        if (rv != 0) {
            nng_msg_free(nng_aio_get_msg(slots[i]->aio));
            calls[i].status = mg_error_set(&calls[i].err, nng_to_mg(rv), "send to node %llu: %s",
                                           (unsigned long long)c->nodes[i].id, nng_strerror(rv));
            pool_put(&c->nodes[i].req, slots[i]);
            slots[i] = NULL;
            continue;
        }
        uint64_t now = now_ms();
        nng_aio_set_timeout(slots[i]->aio, now < deadline ? (nng_duration)(deadline - now) : 1);
        nng_ctx_recv(slots[i]->ctx, slots[i]->aio);
    }
    for (size_t i = 0; i < n; i++) {
        if (slots[i] == NULL)
            continue;
        nng_aio_wait(slots[i]->aio);
        int rv = nng_aio_result(slots[i]->aio);
        if (rv != 0) {
            calls[i].status = mg_error_set(&calls[i].err, nng_to_mg(rv), "node %llu: %s",
                                           (unsigned long long)c->nodes[i].id, nng_strerror(rv));
        } else {
            mg_client_reply r = {.msg = nng_aio_get_msg(slots[i]->aio)};
            mg_error derr;
            int rc = mg_wire_rep_decode(nng_msg_body(r.msg), nng_msg_len(r.msg), &r.rep, &derr);
            if (rc == MG_OK && r.rep.rid != rids[i])
                rc = mg_error_set(&derr, MG_ECORRUPT, "reply for another request");
            if (rc != MG_OK)
                calls[i].status = mg_error_set(&calls[i].err, MG_EINTERNAL, "node %llu: %s",
                                               (unsigned long long)c->nodes[i].id, derr.msg);
            else if (r.rep.status != MG_OK)
                calls[i].status = mg_error_set(&calls[i].err, r.rep.status, "node %llu: %.*s",
                                               (unsigned long long)c->nodes[i].id,
                                               (int)r.rep.msg_len, r.rep.msg);
            if (rc == MG_OK && r.rep.status == MG_OK) {
                calls[i].status = MG_OK;
                mg_error_clear(&calls[i].err);
                calls[i].reply = r;
            } else {
                mg_client_reply_free(&r);
            }
        }
        pool_put(&c->nodes[i].req, slots[i]);
    }
done:
    free(slots);
    free(rids);
}

/* ---- survey ------------------------------------------------------------- */

void mg_client_survey_clear(mg_client_survey *s)
{
    for (size_t i = 0; i < s->n_replies; i++)
        mg_client_reply_free(&s->replies[i]);
    free(s->replies);
    free(s->missing);
    s->replies = NULL;
    s->missing = NULL;
    s->n_replies = s->n_missing = 0;
}

/* Reads the "groups" answered and applies the leader hints of "missing". */
static void survey_reply_groups(mg_client *c, mg_client_survey *s, const mg_wire_rep *rep,
                                bool *answered, bool *heard, const uint64_t *want, size_t n_want)
{
    mg_mp_reader r = mg_wire_body(rep->body, rep->body_len);
    uint32_t n;
    if (mg_mp_read_map(&r, &n) != MG_OK)
        return;
    for (uint32_t i = 0; i < n; i++) {
        if (mg_mp_peek_str_eq(&r, "groups")) {
            uint32_t m;
            mg_mp_skip(&r);
            if (mg_mp_read_array(&r, &m) != MG_OK)
                return;
            for (uint32_t j = 0; j < m; j++) {
                uint64_t g;
                if (mg_mp_read_u64(&r, &g) != MG_OK)
                    return;
                for (size_t k = 0; k < n_want; k++)
                    if (want[k] == g)
                        answered[k] = true;
            }
        } else if (mg_mp_peek_str_eq(&r, "missing")) {
            uint32_t m;
            mg_mp_skip(&r);
            if (mg_mp_read_array(&r, &m) != MG_OK)
                return;
            for (uint32_t j = 0; j < m; j++) {
                uint32_t f;
                uint64_t group = UINT64_MAX, leader = 0, status = 0;
                const char *msg = "";
                uint32_t msg_len = 0;
                if (mg_mp_read_map(&r, &f) != MG_OK)
                    return;
                for (uint32_t k = 0; k < f; k++) {
                    const char *key;
                    uint32_t klen;
                    if (mg_mp_read_str(&r, &key, &klen) != MG_OK)
                        return;
                    int rc;
                    if (klen == 5 && memcmp(key, "group", 5) == 0)
                        rc = mg_mp_read_u64(&r, &group);
                    else if (klen == 9 && memcmp(key, "leader_id", 9) == 0)
                        rc = mg_mp_read_u64(&r, &leader);
                    else if (klen == 6 && memcmp(key, "status", 6) == 0)
                        rc = mg_mp_read_u64(&r, &status);
                    else if (klen == 3 && memcmp(key, "msg", 3) == 0)
                        rc = mg_mp_read_str(&r, &msg, &msg_len);
                    else
                        rc = mg_mp_skip(&r);
                    if (rc != MG_OK)
                        return;
                }
                if (group == UINT64_MAX)
                    continue;
                for (size_t k = 0; k < n_want; k++)
                    if (want[k] == group)
                        heard[k] = true;
                if (status == MG_ENOTLEADER)
                    leader_moved(c, group, leader, leader_of(c, group));
                snprintf(s->missing_why, sizeof s->missing_why, "group %llu: %s%s%.*s",
                         (unsigned long long)group, mg_errname((int)status),
                         msg_len ? ": " : "", (int)msg_len, msg);
            }
        } else {
            mg_mp_skip(&r);
            if (mg_mp_skip(&r) != MG_OK)
                return;
        }
    }
}

/* A surveyor socket with room for one more survey (waits for one). */
static int survey_sock_acquire(mg_client *c)
{
    pthread_mutex_lock(&c->survey_lock);
    for (;;) {
        for (unsigned i = 0; i < SURVEY_SOCKETS; i++) {
            unsigned k = (c->survey_next + i) % SURVEY_SOCKETS;
            if (c->survey_inflight[k] < SURVEY_INFLIGHT) {
                c->survey_inflight[k]++;
                c->survey_next = k + 1;
                pthread_mutex_unlock(&c->survey_lock);
                return (int)k;
            }
        }
        pthread_cond_wait(&c->survey_free, &c->survey_lock);
    }
}

static void survey_sock_release(mg_client *c, int k)
{
    pthread_mutex_lock(&c->survey_lock);
    c->survey_inflight[k]--;
    pthread_cond_signal(&c->survey_free);
    pthread_mutex_unlock(&c->survey_lock);
}

/* One survey round: group want[i] assigned to node index assign[i]. */
typedef struct survey_round_args {
    const uint64_t *want;
    const int *assign;
    size_t n_want;
    bool follower;          /* add "follower": true (replicas answer from their state) */
    bool *answered;         /* out: a reply covered want[i] */
    bool *heard;            /* out: the assigned node answered for want[i], even with an error */
} survey_round_args;

static int survey_round_on(mg_client *c, slot_pool *pool, const char *user, mg_client_survey *s,
                           const survey_round_args *a, mg_error *err);

/* One survey round; fills answered[] and heard[] and appends replies. */
static int survey_round(mg_client *c, const char *user, mg_client_survey *s,
                        const survey_round_args *a, mg_error *err)
{
    int k = survey_sock_acquire(c);
    int rc = survey_round_on(c, &c->survey[k], user, s, a, err);
    survey_sock_release(c, k);
    return rc;
}

static int survey_round_on(mg_client *c, slot_pool *pool, const char *user, mg_client_survey *s,
                           const survey_round_args *a, mg_error *err)
{
    const uint64_t *want = a->want;
    size_t n_want = a->n_want;
    bool *answered = a->answered, *heard = a->heard;
    int rc = MG_OK;
    slot *sl = pool_get(pool, &rc);
    if (sl == NULL)
        return mg_error_set(err, rc, "survey: %s", mg_strerror(rc));
    nng_msg *m = NULL;
    if (nng_msg_alloc(&m, 0) != 0) {
        pool_put(pool, sl);
        return mg_error_set(err, MG_ENOMEM, "survey: out of memory");
    }
    uint64_t rid = atomic_fetch_add(&c->next_rid, 1);
    msgpack_packer pk;
    msgpack_packer_init(&pk, m, msg_write);
    rc = mg_wire_req_begin(&pk, MG_OP_SEARCH, rid, 0, 0, c->survey_timeout_ms, user);
    if (rc == MG_OK && msgpack_pack_map(&pk, s->n_fields + 1 + (a->follower ? 1 : 0)))
        rc = MG_ENOMEM;
    if (rc == MG_OK && nng_msg_append(m, s->fields, s->fields_len) != 0)
        rc = MG_ENOMEM;
    if (rc == MG_OK && a->follower &&
        (mg_mp_pack_cstr(&pk, "follower") || msgpack_pack_true(&pk)))
        rc = MG_ENOMEM;
    if (rc == MG_OK && (mg_mp_pack_cstr(&pk, "assign") || msgpack_pack_array(&pk, (uint32_t)n_want)))
        rc = MG_ENOMEM;
    for (size_t i = 0; rc == MG_OK && i < n_want; i++) {
        int ni = a->assign[i];
        if (msgpack_pack_map(&pk, 2) || mg_mp_pack_cstr(&pk, "group") ||
            msgpack_pack_uint64(&pk, want[i]) || mg_mp_pack_cstr(&pk, "node") ||
            msgpack_pack_uint64(&pk, c->nodes[ni].id))
            rc = MG_ENOMEM;
    }
    if (rc != MG_OK) {
        nng_msg_free(m);
        pool_put(pool, sl);
        return mg_error_set(err, rc, "survey: out of memory");
    }
    nng_ctx_set_ms(sl->ctx, NNG_OPT_SURVEYOR_SURVEYTIME, (nng_duration)c->survey_timeout_ms);
    nng_aio_set_msg(sl->aio, m);
    nng_aio_set_timeout(sl->aio, (nng_duration)c->survey_timeout_ms);
    nng_ctx_send(sl->ctx, sl->aio);
    nng_aio_wait(sl->aio);
    int rv = nng_aio_result(sl->aio);
    if (rv != 0) {
        nng_msg_free(nng_aio_get_msg(sl->aio));
        pool_put(pool, sl);
        return mg_error_set(err, nng_to_mg(rv), "survey send: %s", nng_strerror(rv));
    }
    size_t n_answered = 0;
    for (size_t i = 0; i < n_want; i++)
        n_answered += answered[i];
    while (n_answered < n_want) {
        nng_aio_set_timeout(sl->aio, NNG_DURATION_DEFAULT);
        nng_ctx_recv(sl->ctx, sl->aio);
        nng_aio_wait(sl->aio);
        rv = nng_aio_result(sl->aio);
        if (rv != 0)
            break; /* NNG_ETIMEDOUT at the survey deadline, NNG_ESTATE after it */
        mg_client_reply r = {.msg = nng_aio_get_msg(sl->aio)};
        mg_error derr;
        if (mg_wire_rep_decode(nng_msg_body(r.msg), nng_msg_len(r.msg), &r.rep, &derr) != MG_OK ||
            r.rep.rid != rid) {
            mg_client_reply_free(&r);
            continue;
        }
        if (r.rep.status != MG_OK) {
            /* Every group assigned to that node failed; the envelope has the
             * first failure and its leader hint. */
            snprintf(s->missing_why, sizeof s->missing_why, "%s%s%.*s",
                     mg_errname(r.rep.status), r.rep.msg_len ? ": " : "", (int)r.rep.msg_len,
                     r.rep.msg);
            survey_reply_groups(c, s, &r.rep, answered, heard, want, n_want);
            mg_client_reply_free(&r);
            continue;
        }
        survey_reply_groups(c, s, &r.rep, answered, heard, want, n_want);
        mg_client_reply *grown = realloc(s->replies, (s->n_replies + 1) * sizeof *grown);
        if (grown == NULL) {
            mg_client_reply_free(&r);
            pool_put(pool, sl);
            return mg_error_set(err, MG_ENOMEM, "survey: out of memory");
        }
        s->replies = grown;
        s->replies[s->n_replies++] = r;
        n_answered = 0;
        for (size_t i = 0; i < n_want; i++)
            n_answered += answered[i];
    }
    pool_put(pool, sl);
    if (rv == NNG_ECLOSED)
        return mg_error_set(err, MG_ESHUTDOWN, "survey: router closing");
    return MG_OK;
}

int mg_client_search(mg_client *c, const char *user, mg_client_survey *s, mg_error *err)
{
    s->replies = NULL;
    s->missing = NULL;
    s->n_replies = s->n_missing = 0;
    s->missing_why[0] = '\0';
    s->follower_read = false;
    size_t n = s->n_groups;
    if (n == 0)
        return MG_OK;
    /* Per group: round-1 node, answered, heard; round-2 lists. */
    int *assign = calloc(n, sizeof *assign);
    int *assign2 = calloc(n, sizeof *assign2);
    bool *answered = calloc(n, sizeof *answered);
    bool *heard = calloc(n, sizeof *heard);
    bool *answered2 = calloc(n, sizeof *answered2);
    uint64_t *again = calloc(n, sizeof *again);
    int rc = MG_OK;
    if (assign == NULL || assign2 == NULL || answered == NULL || heard == NULL ||
        answered2 == NULL || again == NULL) {
        rc = mg_error_set(err, MG_ENOMEM, "survey: out of memory");
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        assign[i] = leader_of(c, s->groups[i]);
        if (node_down(c, assign[i])) {
            leader_moved(c, s->groups[i], 0, assign[i]);
            assign[i] = leader_of(c, s->groups[i]);
        }
    }
    survey_round_args a1 = {.want = s->groups, .assign = assign, .n_want = n,
                            .answered = answered, .heard = heard};
    rc = survey_round(c, user, s, &a1, err);
    if (rc != MG_OK)
        goto done;
    /* Round 2, twice at most: groups whose node named another leader are
     * asked there (a leader read); groups whose node did not answer at all
     * (down, or failing over) are asked of the next replica, which may
     * answer from its own state ("follower": true; flagged in the survey).
     * A group whose node answered without a usable hint goes the follower
     * way too, on that same (live) node. */
    for (int pass = 0; pass < 2 && rc == MG_OK; pass++) {
        bool follower = pass == 1;
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
            if (answered[i])
                continue;
            uint64_t g = s->groups[i];
            int now = leader_of(c, g);
            bool hinted = heard[i] && now != assign[i];
            if (!heard[i] && now == assign[i]) {
                /* Silent node: move the guess on for later requests too. */
                leader_moved(c, g, 0, assign[i]);
                now = leader_of(c, g);
            }
            if (hinted == follower)
                continue;
            again[k] = g;
            assign2[k] = follower && heard[i] ? assign[i] : now;
            k++;
        }
        if (k == 0)
            continue;
        memset(answered2, 0, k * sizeof *answered2);
        bool heard2[16];
        bool *h2 = k <= 16 ? heard2 : calloc(k, sizeof *h2);
        if (h2 == NULL) {
            rc = mg_error_set(err, MG_ENOMEM, "survey: out of memory");
            break;
        }
        memset(h2, 0, k * sizeof *h2);
        survey_round_args a2 = {.want = again, .assign = assign2, .n_want = k,
                                .follower = follower, .answered = answered2, .heard = h2};
        rc = survey_round(c, user, s, &a2, err);
        if (h2 != heard2)
            free(h2);
        for (size_t j = 0; rc == MG_OK && j < k; j++)
            for (size_t i = 0; i < n; i++)
                if (answered2[j] && s->groups[i] == again[j]) {
                    answered[i] = true;
                    s->follower_read |= follower;
                }
    }
    if (rc == MG_OK) {
        size_t k = 0;
        for (size_t i = 0; i < n; i++)
            if (!answered[i])
                again[k++] = s->groups[i];
        if (k > 0) {
            s->missing = again;
            s->n_missing = k;
            again = NULL;
            if (s->missing_why[0] == '\0')
                snprintf(s->missing_why, sizeof s->missing_why, "no answer within %u ms",
                         c->survey_timeout_ms);
            mg_warn("router.survey_partial", "missing=%zu why=\"%s\"", k, s->missing_why);
        }
    }
done:
    free(assign);
    free(assign2);
    free(answered);
    free(heard);
    free(answered2);
    free(again);
    if (rc != MG_OK)
        mg_client_survey_clear(s);
    return rc;
}
