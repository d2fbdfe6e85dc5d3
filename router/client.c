#include "client.h"

#include "../lib/log.h"
#include "../lib/mp.h"

#include <errno.h>
#include <nng/protocol/reqrep0/req.h>
#include <nng/protocol/survey0/survey.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

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

/* A node's req socket. nng keeps a request whose connection dropped pending
 * until it can re-send it on a new one (so until the call's deadline when
 * the node died): a pipe-removal notification cancels the requests in flight
 * on the socket instead, and mg_client_run retries them elsewhere at once.
 * "lost" (a connection dropped and none is up again) marks the node as down:
 * leader guesses skip it rather than wait SEND_WAIT_MS for a connection.
 *
 * Nodes live in an array allocated once with room for every node a map may
 * name plus the seeds, so that a node_conn never moves: threads index it
 * without a lock, a new one is set up under nodes_lock and published by a
 * release store of n_nodes, and none is freed before mg_client_close. */
typedef struct node_conn {
    _Atomic uint64_t id;         /* 0: a seed whose id is not known yet */
    char rpc[MG_CMAP_URL_MAX];   /* the URL dialed (fixed once published) */
    char survey[MG_CMAP_URL_MAX]; /* "" until known; nodes_lock */
    bool survey_dialed;          /* nodes_lock */
    slot_pool req;
    pthread_mutex_t lock;        /* inflight */
    slot *inflight;
    _Atomic uint64_t drops;      /* connections lost so far */
    _Atomic int pipes;           /* connections up */
    _Atomic bool lost;
    bool lock_init;
    bool sock_open;
    /* Per surveyor socket: the id of the dialer to the node's survey URL
     * (0: none), the id of its pipe that is up (0: none) and how many of its
     * pipes have gone. nng only sends a survey on the pipes up at the time,
     * so a survey waits for these (survey_connect), and a round stops
     * waiting for a node whose pipe went (survey_pipe_event). */
    _Atomic int sdialer[SURVEY_SOCKETS];
    _Atomic uint32_t spipe[SURVEY_SOCKETS];
    _Atomic uint64_t sdrops[SURVEY_SOCKETS];
    /* A survey gave up waiting for a connection on some surveyor and none
     * has come up since: later surveys do not wait for it again. */
    _Atomic bool survey_gone;
} node_conn;

#define SURVEY_INFLIGHT 8
#define SEEDS_MAX 16
#define NODES_CAP (MG_CMAP_NODES_MAX + SEEDS_MAX)
#define REFRESH_REUSE_MS 20
#define RETRY_PAUSE_MS 20
#define PROBE_OPEN_MS 250

struct survey_wait;

/* A surveyor socket's pipe notifications (survey_pipe_event's argument) and
 * the survey rounds waiting for replies on it. */
typedef struct survey_watch {
    mg_client *c;
    int k;                       /* index of the surveyor socket */
    pthread_mutex_t lock;        /* rounds, and each round's posted/answered */
    pthread_cond_t changed;      /* a pipe of this socket came up */
    struct survey_wait *rounds;
    bool init;
} survey_watch;

struct mg_client {
    node_conn *nodes;            /* NODES_CAP entries */
    _Atomic size_t n_nodes;      /* published (release) after the entry is set up */
    pthread_mutex_t nodes_lock;  /* adding nodes, survey dials */
    slot_pool survey[SURVEY_SOCKETS];
    survey_watch watch[SURVEY_SOCKETS];
    bool survey_open[SURVEY_SOCKETS];
    int survey_inflight[SURVEY_SOCKETS];
    unsigned survey_next;
    pthread_mutex_t survey_lock;
    pthread_cond_t survey_free;

    /* The map: read by every request, replaced rarely. */
    pthread_rwlock_t map_lock;
    mg_cmap *map;
    _Atomic uint64_t epoch;

    _Atomic int leader[MG_CMAP_GROUPS_MAX]; /* group → index in nodes, -1 = none */
    _Atomic unsigned spread;                /* follower reads: round robin */
    _Atomic uint64_t next_rid;
    unsigned call_timeout_ms;
    unsigned survey_timeout_ms;

    /* Refresh: one META_GET at a time, reused for REFRESH_REUSE_MS. */
    pthread_mutex_t refresh_lock;
    pthread_cond_t refresh_cond;
    bool refreshing;
    uint64_t refresh_gen;
    uint64_t refresh_done_ms;
    int refresh_rc;
    mg_error refresh_err;

    /* The map cache file. */
    char *map_cache;
    pthread_mutex_t cache_lock;
    uint64_t cache_epoch;        /* epoch of the map last saved */
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

static size_t nodes_count(const mg_client *c)
{
    return atomic_load_explicit(&((mg_client *)c)->n_nodes, memory_order_acquire);
}

static uint64_t node_id_at(const mg_client *c, size_t i)
{
    return atomic_load_explicit(&c->nodes[i].id, memory_order_acquire);
}

static int node_index(const mg_client *c, uint64_t node_id)
{
    if (node_id == 0)
        return -1;
    size_t n = nodes_count(c);
    for (size_t i = 0; i < n; i++)
        if (node_id_at(c, i) == node_id)
            return (int)i;
    return -1;
}

/* The connection to node i dropped and none is up again. */
static bool node_down(mg_client *c, int i)
{
    node_conn *n = &c->nodes[i];
    return atomic_load(&n->lost) && atomic_load(&n->pipes) == 0;
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
    mg_debug("router.node_dropped", "node=%llu", (unsigned long long)atomic_load(&n->id));
}

/* A survey round waiting for replies on surveyor socket k (on its
 * survey_watch's list while it waits). It is settled when every group it
 * wants is answered, or its node answered for it with an error (a node
 * replies once to a survey), or it was not sent (no connection to its
 * node), or it went to a node whose pipe has gone since (sdrops moved past
 * drops0): nothing more can come for those, so the round ends and
 * mg_client_search asks again elsewhere at once instead of at the survey
 * deadline. */
typedef struct survey_wait {
    int k;
    size_t n;
    const int *assign;           /* node index per group */
    const bool *answered;        /* these two are read only while posted (the */
    const bool *heard;           /* caller's thread writes them only while not) */
    const bool *unreached;
    const uint64_t *drops0;      /* the node's sdrops[k] before the send */
    nng_aio *aio;
    bool posted;                 /* a receive is pending on aio */
    struct survey_wait *prev, *next;
} survey_wait;

static bool survey_settled(mg_client *c, const survey_wait *w)
{
    for (size_t i = 0; i < w->n; i++) {
        if (w->answered[i] || w->heard[i] || w->unreached[i])
            continue;
        if (atomic_load(&c->nodes[w->assign[i]].sdrops[w->k]) == w->drops0[i])
            return false;
    }
    return true;
}

/* nng's thread, for every surveyor socket: keeps each node's spipe and
 * sdrops (a pipe is matched to its node by the dialer that made it) and
 * wakes the rounds a drop settles by cancelling their receive (which ends
 * their survey: nothing more is wanted from it). Never blocks: the locks
 * taken are held only by short sections that do not wait on nng. */
static void survey_pipe_event(nng_pipe p, nng_pipe_ev ev, void *arg)
{
    survey_watch *sw = arg;
    mg_client *c = sw->c;
    int k = sw->k;
    uint32_t pid = (uint32_t)nng_pipe_id(p);
    size_t n = nodes_count(c);
    node_conn *nc = NULL;
    bool dropped = false;
    if (ev == NNG_PIPE_EV_ADD_POST) {
        int did = nng_dialer_id(nng_pipe_dialer(p));
        for (size_t i = 0; i < n && did > 0 && nc == NULL; i++)
            if (atomic_load(&c->nodes[i].sdialer[k]) == did)
                nc = &c->nodes[i];
        if (nc == NULL)
            return;
        /* A pipe replaced before its removal was reported counts as gone. */
        dropped = atomic_exchange(&nc->spipe[k], pid) != 0;
        atomic_store(&nc->survey_gone, false);
    } else if (ev == NNG_PIPE_EV_REM_POST) {
        for (size_t i = 0; i < n && nc == NULL; i++) {
            uint32_t cur = pid;
            if (atomic_compare_exchange_strong(&c->nodes[i].spipe[k], &cur, 0))
                nc = &c->nodes[i];
        }
        if (nc == NULL)
            return; /* not a pipe we counted, or replaced already */
        dropped = true;
    } else {
        return;
    }
    if (dropped)
        atomic_fetch_add(&nc->sdrops[k], 1);
    pthread_mutex_lock(&sw->lock);
    if (ev == NNG_PIPE_EV_ADD_POST)
        pthread_cond_broadcast(&sw->changed);
    for (survey_wait *w = sw->rounds; dropped && w != NULL; w = w->next)
        if (w->posted && survey_settled(c, w))
            nng_aio_cancel(w->aio);
    pthread_mutex_unlock(&sw->lock);
    if (dropped)
        mg_debug("router.survey_dropped", "node=%llu socket=%d",
                 (unsigned long long)atomic_load(&nc->id), k);
}

/* ---- the node table --------------------------------------------------------- */

/* Dials node n's survey URL on every surveyor that has no dialer to it yet
 * (nodes_lock held; n published in the table, so that survey_pipe_event
 * finds it). The dialer's id is stored before it starts: its first pipe may
 * come up before nng_dialer_start returns. */
static void survey_dial_locked(mg_client *c, node_conn *n, const char *survey)
{
    if (n->survey_dialed || survey == NULL || survey[0] == '\0')
        return;
    snprintf(n->survey, sizeof n->survey, "%s", survey);
    bool all = true;
    for (int k = 0; k < SURVEY_SOCKETS; k++) {
        if (atomic_load(&n->sdialer[k]) != 0)
            continue;
        nng_dialer d;
        int rv = nng_dialer_create(&d, c->survey[k].sock, n->survey);
        if (rv == 0) {
            atomic_store(&n->sdialer[k], nng_dialer_id(d));
            rv = nng_dialer_start(d, NNG_FLAG_NONBLOCK);
            if (rv != 0) {
                atomic_store(&n->sdialer[k], 0);
                nng_dialer_close(d);
            }
        }
        if (rv != 0) {
            mg_warn("router.dial_failed", "url=%s err=\"%s\"", n->survey, nng_strerror(rv));
            all = false;
        }
    }
    n->survey_dialed = all;
}

/* Sets up nodes[i] and dials rpc (nodes_lock held). */
static int node_conn_init(mg_client *c, node_conn *n, uint64_t id, const char *rpc, mg_error *err)
{
    memset(n, 0, sizeof *n);
    atomic_init(&n->id, id);
    atomic_init(&n->drops, 0);
    atomic_init(&n->pipes, 0);
    atomic_init(&n->lost, false);
    atomic_init(&n->survey_gone, false);
    for (int k = 0; k < SURVEY_SOCKETS; k++) {
        atomic_init(&n->sdialer[k], 0);
        atomic_init(&n->spipe[k], 0);
        atomic_init(&n->sdrops[k], 0);
    }
    snprintf(n->rpc, sizeof n->rpc, "%s", rpc);
    if (pool_init(&n->req) != MG_OK)
        return mg_error_set(err, MG_ENOMEM, "client: mutex");
    if (pthread_mutex_init(&n->lock, NULL) != 0) {
        pthread_mutex_destroy(&n->req.lock);
        return mg_error_set(err, MG_ENOMEM, "client: mutex");
    }
    n->lock_init = true;
    int rv = nng_req0_open(&n->req.sock);
    if (rv != 0) {
        pthread_mutex_destroy(&n->req.lock);
        pthread_mutex_destroy(&n->lock);
        n->lock_init = false;
        return mg_error_set(err, MG_EUNAVAIL, "client: req socket: %s", nng_strerror(rv));
    }
    n->sock_open = true;
    rv = nng_pipe_notify(n->req.sock, NNG_PIPE_EV_ADD_POST, pipe_event, n);
    if (rv == 0)
        rv = nng_pipe_notify(n->req.sock, NNG_PIPE_EV_REM_POST, pipe_event, n);
    if (rv != 0)
        return mg_error_set(err, MG_EUNAVAIL, "client: pipe notify: %s", nng_strerror(rv));
    /* We retry ourselves, with the call's deadline. */
    nng_socket_set_ms(n->req.sock, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
    nng_socket_set_size(n->req.sock, NNG_OPT_RECVMAXSZ, 0);
    nng_socket_set_int(n->req.sock, NNG_OPT_SENDBUF, 1024);
    nng_socket_set_ms(n->req.sock, NNG_OPT_RECONNMINT, 20);
    nng_socket_set_ms(n->req.sock, NNG_OPT_RECONNMAXT, 500);
    rv = nng_dial(n->req.sock, rpc, NULL, NNG_FLAG_NONBLOCK);
    if (rv != 0)
        return mg_error_set(err, MG_EUNAVAIL, "client: dial %s: %s", rpc, nng_strerror(rv));
    (void)c;
    return MG_OK;
}

/* The node's index, adding (and dialing) it when new: found by id, else a
 * seed of unknown id dialed at the same rpc URL takes the id. id 0 adds a
 * seed (found by its URL). -1 when the table is full or the dial fails. */
static int node_add(mg_client *c, uint64_t id, const char *rpc, const char *survey)
{
    pthread_mutex_lock(&c->nodes_lock);
    size_t n = nodes_count(c);
    int found = -1;
    for (size_t i = 0; i < n && found < 0 && id != 0; i++)
        if (node_id_at(c, i) == id)
            found = (int)i;
    for (size_t i = 0; i < n && found < 0 && rpc != NULL; i++)
        if (strcmp(c->nodes[i].rpc, rpc) == 0 && (id == 0 || node_id_at(c, i) == 0)) {
            found = (int)i;
            if (id != 0)
                atomic_store_explicit(&c->nodes[i].id, id, memory_order_release);
        }
    if (found >= 0) {
        survey_dial_locked(c, &c->nodes[found], survey);
        pthread_mutex_unlock(&c->nodes_lock);
        return found;
    }
    if (n >= NODES_CAP || rpc == NULL || rpc[0] == '\0' || strlen(rpc) >= MG_CMAP_URL_MAX) {
        pthread_mutex_unlock(&c->nodes_lock);
        mg_warn("router.node_table", "cannot add node %llu (%s): %s", (unsigned long long)id,
                rpc ? rpc : "", n >= NODES_CAP ? "table full" : "bad URL");
        return -1;
    }
    node_conn *nc = &c->nodes[n];
    mg_error err;
    if (node_conn_init(c, nc, id, rpc, &err) != MG_OK) {
        if (nc->sock_open)
            nng_close(nc->req.sock);
        if (nc->lock_init) {
            pthread_mutex_destroy(&nc->lock);
            pthread_mutex_destroy(&nc->req.lock);
        }
        memset(nc, 0, sizeof *nc);
        pthread_mutex_unlock(&c->nodes_lock);
        mg_warn("router.node_table", "node %llu: %s", (unsigned long long)id, err.msg);
        return -1;
    }
    atomic_store_explicit(&c->n_nodes, n + 1, memory_order_release);
    survey_dial_locked(c, nc, survey);
    pthread_mutex_unlock(&c->nodes_lock);
    mg_debug("router.node_added", "node=%llu rpc=%s", (unsigned long long)id, rpc);
    return (int)n;
}

/* ---- the map and leader guesses -------------------------------------------- */

/* Node indices that may serve `group`: its replicas in the map, in order;
 * for group 0 then every other known node (without a map, or when the meta
 * group moved since our map, any node may be the one to ask). out has
 * NODES_CAP room. */
static size_t group_candidates(mg_client *c, uint64_t group, int *out)
{
    size_t k = 0;
    pthread_rwlock_rdlock(&c->map_lock);
    if (c->map->epoch == 0) {
        pthread_rwlock_unlock(&c->map_lock);
        if (group != 0)
            return 0;
        size_t n = nodes_count(c);
        for (size_t i = 0; i < n; i++)
            out[k++] = (int)i;
        return k;
    }
    const mg_cmap_group *g = mg_cmap_group_get(c->map, group);
    for (uint32_t r = 0; g != NULL && r < g->n_replicas; r++) {
        int i = node_index(c, g->replicas[r]);
        if (i >= 0)
            out[k++] = i;
    }
    pthread_rwlock_unlock(&c->map_lock);
    if (group == 0) {
        size_t n = nodes_count(c), first = k;
        for (size_t i = 0; i < n; i++) {
            bool dup = false;
            for (size_t j = 0; j < first && !dup; j++)
                dup = out[j] == (int)i;
            if (!dup)
                out[k++] = (int)i;
        }
    }
    return k;
}

static void leader_set(mg_client *c, uint64_t group, int i)
{
    if (group < MG_CMAP_GROUPS_MAX)
        atomic_store_explicit(&c->leader[group], i, memory_order_relaxed);
}

/* The node to ask for `group`: the guess when it is a candidate that is not
 * down, else the first candidate that is not down (remembered). -1 when the
 * group has no candidate. *all_down when every candidate is down. */
static int leader_pick(mg_client *c, uint64_t group, bool *all_down)
{
    int cand[NODES_CAP];
    size_t n = group_candidates(c, group, cand);
    *all_down = false;
    if (n == 0)
        return -1;
    int g = group < MG_CMAP_GROUPS_MAX
                ? atomic_load_explicit(&c->leader[group], memory_order_relaxed)
                : -1;
    bool in = false;
    for (size_t k = 0; k < n && !in; k++)
        in = cand[k] == g;
    if (in && !node_down(c, g))
        return g;
    for (size_t k = 0; k < n; k++)
        if (!node_down(c, cand[k])) {
            leader_set(c, group, cand[k]);
            return cand[k];
        }
    *all_down = true;
    return in ? g : cand[0];
}

/* Moves the guess for `group` to the hinted node, or to the next candidate
 * after `tried` that is not down when the hint names none we know or a node
 * that is down (a follower names the old leader until it notices it is
 * gone). Returns the hinted node's index when the hint was used (it may
 * not be in our map yet: a newer one added it), else -1. */
static int leader_moved(mg_client *c, uint64_t group, uint64_t hint_id, int tried)
{
    int i = hint_id ? node_index(c, hint_id) : -1;
    if (i >= 0 && !node_down(c, i)) {
        leader_set(c, group, i);
        return i;
    }
    int cand[NODES_CAP];
    size_t n = group_candidates(c, group, cand);
    if (n == 0)
        return -1;
    size_t pos = n - 1; /* so that the scan starts at cand[0] when tried is not one */
    for (size_t k = 0; k < n; k++)
        if (cand[k] == tried)
            pos = k;
    int next = cand[(pos + 1) % n];
    for (size_t k = 1; k <= n; k++) {
        int j = cand[(pos + k) % n];
        if (!node_down(c, j)) {
            next = j;
            break;
        }
    }
    leader_set(c, group, next);
    return -1;
}

uint64_t mg_client_group(mg_client *c, const char *cube_id, size_t len)
{
    pthread_rwlock_rdlock(&c->map_lock);
    uint64_t g = c->map->epoch == 0 ? 0 : mg_cmap_cube_group(c->map, cube_id, len);
    pthread_rwlock_unlock(&c->map_lock);
    return g;
}

uint64_t mg_client_epoch(mg_client *c)
{
    return atomic_load(&c->epoch);
}

void mg_client_map(mg_client *c, mg_cmap *out)
{
    pthread_rwlock_rdlock(&c->map_lock);
    memcpy(out, c->map, sizeof *out);
    pthread_rwlock_unlock(&c->map_lock);
}

size_t mg_client_data_groups(mg_client *c, uint64_t *out, size_t cap)
{
    size_t k = 0;
    pthread_rwlock_rdlock(&c->map_lock);
    for (uint32_t i = 0; c->map->epoch != 0 && i < c->map->n_groups && k < cap; i++)
        if (c->map->groups[i].id != 0)
            out[k++] = c->map->groups[i].id;
    pthread_rwlock_unlock(&c->map_lock);
    return k;
}

unsigned mg_client_call_timeout(const mg_client *c)
{
    return c->call_timeout_ms;
}

/* Saves m to the cache file (tmp + rename), unless a newer one was saved. */
static void cache_save(mg_client *c, const mg_cmap *m)
{
    if (c->map_cache == NULL)
        return;
    void *buf = NULL;
    size_t len = 0;
    mg_error err;
    if (mg_cmap_encode(m, &buf, &len, &err) != MG_OK) {
        mg_warn("router.map_cache", "encode: %s", err.msg);
        return;
    }
    pthread_mutex_lock(&c->cache_lock);
    if (m->epoch > c->cache_epoch) {
        size_t plen = strlen(c->map_cache) + 32;
        char *tmp = malloc(plen);
        FILE *f = tmp ? (snprintf(tmp, plen, "%s.tmp.%d", c->map_cache, (int)getpid()),
                         fopen(tmp, "wb"))
                      : NULL;
        bool ok = f != NULL && fwrite(buf, 1, len, f) == len && fflush(f) == 0 &&
                  fsync(fileno(f)) == 0;
        if (f != NULL && fclose(f) != 0)
            ok = false;
        if (ok && rename(tmp, c->map_cache) == 0) {
            c->cache_epoch = m->epoch;
        } else {
            mg_warn("router.map_cache", "cannot write %s: %s", c->map_cache, strerror(errno));
            if (tmp != NULL)
                unlink(tmp);
        }
        free(tmp);
    }
    pthread_mutex_unlock(&c->cache_lock);
    free(buf);
}

bool mg_client_set_map(mg_client *c, const mg_cmap *m)
{
    if (m->epoch <= atomic_load(&c->epoch))
        return false;
    /* Dial the nodes first, so that a request routed by the new map finds
     * its node in the table. */
    for (uint32_t i = 0; i < m->n_nodes; i++)
        node_add(c, m->nodes[i].id, m->nodes[i].rpc, m->nodes[i].survey);
    pthread_rwlock_wrlock(&c->map_lock);
    bool newer = m->epoch > c->map->epoch;
    if (newer) {
        memcpy(c->map, m, sizeof *m);
        atomic_store(&c->epoch, m->epoch);
    }
    pthread_rwlock_unlock(&c->map_lock);
    if (!newer)
        return false;
    mg_info("router.map", "epoch=%llu nodes=%u groups=%u", (unsigned long long)m->epoch,
            m->n_nodes, m->n_groups);
    cache_save(c, m);
    return true;
}

/* Loads the cache file when it exists (a bad one is logged and ignored). */
static void cache_load(mg_client *c)
{
    FILE *f = fopen(c->map_cache, "rb");
    if (f == NULL) {
        if (errno != ENOENT)
            mg_warn("router.map_cache", "cannot read %s: %s", c->map_cache, strerror(errno));
        return;
    }
    size_t cap = 1 << 16, len = 0;
    uint8_t *buf = malloc(cap);
    while (buf != NULL) {
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0)
            break;
        if (len == cap) {
            uint8_t *grown = cap < (64u << 20) ? realloc(buf, cap * 2) : NULL;
            if (grown == NULL) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = grown;
            cap *= 2;
        }
    }
    fclose(f);
    mg_cmap *m = malloc(sizeof *m);
    mg_error err;
    if (buf == NULL || m == NULL) {
        mg_warn("router.map_cache", "%s: out of memory", c->map_cache);
    } else if (mg_cmap_decode(buf, len, m, &err) != MG_OK) {
        mg_warn("router.map_cache", "%s: %s (ignored)", c->map_cache, err.msg);
    } else {
        pthread_mutex_lock(&c->cache_lock);
        c->cache_epoch = m->epoch; /* it is on disk already */
        pthread_mutex_unlock(&c->cache_lock);
        mg_client_set_map(c, m);
    }
    free(m);
    free(buf);
}

/* ---- open / close ------------------------------------------------------- */

static void probe_unknown(mg_client *c, unsigned timeout_ms);

int mg_client_open(const mg_client_config *cfg, mg_client **out, mg_error *err)
{
    if ((cfg->n_seeds == 0 && (cfg->map == NULL || cfg->map->epoch == 0) &&
         cfg->map_cache == NULL) ||
        cfg->n_seeds > SEEDS_MAX || cfg->call_timeout_ms == 0 || cfg->survey_timeout_ms == 0)
        return mg_error_set(err, MG_EINVAL, "client: bad configuration (seeds: 1..%d)",
                            SEEDS_MAX);
    for (size_t i = 0; i < cfg->n_seeds; i++)
        if (cfg->seeds[i] == NULL || cfg->seeds[i][0] == '\0' ||
            strlen(cfg->seeds[i]) >= MG_CMAP_URL_MAX)
            return mg_error_set(err, MG_EINVAL, "client: seed %zu is empty or too long", i + 1);
    mg_client *c = calloc(1, sizeof *c);
    if (c == NULL)
        return mg_error_set(err, MG_ENOMEM, "client: out of memory");
    c->nodes = calloc(NODES_CAP, sizeof *c->nodes);
    c->map = calloc(1, sizeof *c->map);
    if (cfg->map_cache != NULL)
        c->map_cache = strdup(cfg->map_cache);
    if (c->nodes == NULL || c->map == NULL || (cfg->map_cache != NULL && c->map_cache == NULL)) {
        free(c->nodes);
        free(c->map);
        free(c->map_cache);
        free(c);
        return mg_error_set(err, MG_ENOMEM, "client: out of memory");
    }
    mg_cmap_init(c->map);
    atomic_init(&c->n_nodes, 0);
    atomic_init(&c->epoch, 0);
    atomic_init(&c->spread, 0);
    atomic_init(&c->next_rid, 1);
    for (size_t g = 0; g < MG_CMAP_GROUPS_MAX; g++)
        atomic_init(&c->leader[g], -1);
    c->call_timeout_ms = cfg->call_timeout_ms;
    c->survey_timeout_ms = cfg->survey_timeout_ms;
    pthread_mutex_init(&c->nodes_lock, NULL);
    pthread_rwlock_init(&c->map_lock, NULL);
    pthread_mutex_init(&c->refresh_lock, NULL);
    pthread_cond_init(&c->refresh_cond, NULL);
    pthread_mutex_init(&c->cache_lock, NULL);
    pthread_mutex_init(&c->survey_lock, NULL);
    pthread_cond_init(&c->survey_free, NULL);

    int rc = MG_OK;
    for (int k = 0; k < SURVEY_SOCKETS && rc == MG_OK; k++) {
        if (pool_init(&c->survey[k]) != MG_OK) {
            rc = mg_error_set(err, MG_ENOMEM, "client: mutex");
            break;
        }
        int rv = nng_surveyor0_open(&c->survey[k].sock);
        if (rv != 0) {
            pool_destroy(&c->survey[k]);
            rc = mg_error_set(err, MG_EUNAVAIL, "client: surveyor: %s", nng_strerror(rv));
            break;
        }
        c->survey_open[k] = true;
        nng_socket_set_size(c->survey[k].sock, NNG_OPT_RECVMAXSZ, 0);
        /* As the req sockets: a node that comes up is connected within a
         * few tens of ms (nng's default waits up to 1 s between tries),
         * which survey_connect waits for. */
        nng_socket_set_ms(c->survey[k].sock, NNG_OPT_RECONNMINT, 20);
        nng_socket_set_ms(c->survey[k].sock, NNG_OPT_RECONNMAXT, 500);
        survey_watch *sw = &c->watch[k];
        sw->c = c;
        sw->k = k;
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        if (pthread_mutex_init(&sw->lock, NULL) != 0) {
            pthread_condattr_destroy(&ca);
            rc = mg_error_set(err, MG_ENOMEM, "client: mutex");
            break;
        }
        if (pthread_cond_init(&sw->changed, &ca) != 0) {
            pthread_condattr_destroy(&ca);
            pthread_mutex_destroy(&sw->lock);
            rc = mg_error_set(err, MG_ENOMEM, "client: condition variable");
            break;
        }
        pthread_condattr_destroy(&ca);
        sw->init = true;
        rv = nng_pipe_notify(c->survey[k].sock, NNG_PIPE_EV_ADD_POST, survey_pipe_event, sw);
        if (rv == 0)
            rv = nng_pipe_notify(c->survey[k].sock, NNG_PIPE_EV_REM_POST, survey_pipe_event, sw);
        if (rv != 0)
            rc = mg_error_set(err, MG_EUNAVAIL, "client: pipe notify: %s", nng_strerror(rv));
    }
    for (size_t i = 0; rc == MG_OK && i < cfg->n_seeds; i++)
        if (node_add(c, 0, cfg->seeds[i], NULL) < 0)
            rc = mg_error_set(err, MG_EUNAVAIL, "client: cannot dial seed %s", cfg->seeds[i]);
    if (rc != MG_OK) {
        mg_client_close(c);
        return rc;
    }
    if (c->map_cache != NULL)
        cache_load(c);
    if (cfg->map != NULL && cfg->map->epoch > 0)
        mg_client_set_map(c, cfg->map);
    /* Learn the seeds' ids (a seed that is not up yet is asked again at the
     * next refresh). */
    probe_unknown(c, PROBE_OPEN_MS);
    *out = c;
    return MG_OK;
}

void mg_client_close(mg_client *c)
{
    if (c == NULL)
        return;
    size_t n = nodes_count(c);
    for (int k = 0; k < SURVEY_SOCKETS; k++)
        if (c->survey_open[k])
            nng_close(c->survey[k].sock);
    for (size_t i = 0; i < n; i++)
        nng_close(c->nodes[i].req.sock);
    for (int k = 0; k < SURVEY_SOCKETS; k++) {
        if (c->survey_open[k])
            pool_destroy(&c->survey[k]);
        if (c->watch[k].init) {
            pthread_cond_destroy(&c->watch[k].changed);
            pthread_mutex_destroy(&c->watch[k].lock);
        }
    }
    for (size_t i = 0; i < n; i++) {
        pool_destroy(&c->nodes[i].req);
        if (c->nodes[i].lock_init)
            pthread_mutex_destroy(&c->nodes[i].lock);
    }
    pthread_cond_destroy(&c->survey_free);
    pthread_mutex_destroy(&c->survey_lock);
    pthread_mutex_destroy(&c->nodes_lock);
    pthread_rwlock_destroy(&c->map_lock);
    pthread_mutex_destroy(&c->refresh_lock);
    pthread_cond_destroy(&c->refresh_cond);
    pthread_mutex_destroy(&c->cache_lock);
    free(c->nodes);
    free(c->map);
    free(c->map_cache);
    free(c);
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
    uint64_t group;  /* this try's */
    int node;
    int next;        /* the node a leader hint named for the next try, or -1 */
    slot *slot;
    uint64_t rid;
    uint64_t drops;  /* the node's drop count when the request was sent */
    bool sent;
    bool done;
    unsigned unreachable; /* tries in a row that found no connection */
    unsigned not_hosted;  /* "not hosted" answers */
} pending;

static int build_request(const char *user, int op, uint64_t group, const void *body,
                         size_t body_len, uint64_t rid, uint32_t deadline_ms, nng_msg **out)
{
    nng_msg *m;
    if (nng_msg_alloc(&m, 0) != 0)
        return MG_ENOMEM;
    msgpack_packer pk;
    msgpack_packer_init(&pk, m, msg_write);
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

static int refresh_run(mg_client *c, unsigned timeout_ms, mg_error *err);

/* What a node answers (MG_ENOTFOUND) for a group it does not host. */
#define NOT_HOSTED "is not hosted on node"

static void call_fail(pending *q, size_t *left, int code, const char *msg)
{
    q->call->status = mg_error_set(&q->call->err, code, "%s", msg);
    q->done = true;
    (*left)--;
}

/* mg_client_run with its own deadline; may_refresh = false for the
 * refresh's own META_GET (which must not wait on itself). */
static void run_calls(mg_client *c, const char *user, mg_client_call *calls, size_t n,
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
    uint64_t deadline = now_ms() + timeout_ms;
    bool need_map = false;
    for (size_t i = 0; i < n; i++) {
        p[i].call = &calls[i];
        p[i].next = -1;
        memset(&calls[i].reply, 0, sizeof calls[i].reply);
        mg_error_clear(&calls[i].err);
        calls[i].status = MG_ETIMEDOUT;
        need_map |= calls[i].cube_id != NULL || calls[i].group != 0;
    }
    /* Before any map only group 0 (and nodes) can be reached: fetch one now
     * rather than fail a router that started before `ctl init`. */
    mg_error rerr;
    int rrc = MG_OK;
    if (need_map && may_refresh && mg_client_epoch(c) == 0)
        rrc = refresh_run(c, timeout_ms, &rerr);
    size_t left = n;
    for (size_t i = 0; need_map && i < n && mg_client_epoch(c) == 0; i++)
        if (calls[i].cube_id != NULL || calls[i].group != 0) {
            call_fail(&p[i], &left, MG_EUNAVAIL, MG_CLIENT_NO_MAP_MSG);
            if (rrc != MG_OK)
                mg_error_set(&calls[i].err, MG_EUNAVAIL, "no cluster map (%s)", rerr.msg);
        }
    while (left > 0) {
        uint64_t now = now_ms();
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
                    call_fail(q, &left, MG_EUNAVAIL, MG_CLIENT_NO_MAP_MSG);
                    continue;
                }
            }
            q->group = cube != NULL ? mg_client_group(c, cube, strlen(cube)) : q->call->group;
            bool all_down = false;
            if (q->next >= 0) {
                q->node = q->next;
                q->next = -1;
            } else {
                q->node = leader_pick(c, q->group, &all_down);
            }
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
            q->slot = pool_get(&nc->req, &rc);
            if (q->slot == NULL) {
                q->call->status = mg_error_set(&q->call->err, rc, "no context: %s",
                                               mg_strerror(rc));
                q->done = true;
                left--;
                continue;
            }
            q->rid = atomic_fetch_add(&c->next_rid, 1);
            nng_msg *m;
            rc = build_request(user, q->call->op, q->group, q->call->body, q->call->body_len,
                               q->rid, remain, &m);
            if (rc != MG_OK) {
                pool_put(&nc->req, q->slot);
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
            inflight_add(nc, q->slot);
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
                                                   (unsigned long long)atomic_load(&nc->id));
                else
                    q->call->status = mg_error_set(&q->call->err, nng_to_mg(rv),
                                                   "send to node %llu: %s",
                                                   (unsigned long long)atomic_load(&nc->id),
                                                   nng_strerror(rv));
                if (rv == NNG_ETIMEDOUT || dropped) {
                    leader_moved(c, q->group, 0, q->node); /* not connected */
                    int cand[NODES_CAP];
                    size_t nc_ = group_candidates(c, q->group, cand);
                    if (++q->unreachable >= (nc_ ? nc_ : 1))
                        refresh = true; /* no replica reachable: moved? */
                }
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
            node_conn *nc = &c->nodes[q->node];
            if (q->sent) {
                nng_aio_wait(q->slot->aio);
                inflight_remove(nc, q->slot);
                int rv = nng_aio_result(q->slot->aio);
                uint64_t nid = atomic_load(&nc->id);
                if (rv == NNG_ECONNRESET ||
                    (rv == NNG_ECANCELED && atomic_load(&nc->drops) != q->drops)) {
                    /* The connection dropped with the request in flight (our
                     * cancel, or nng's own reset where it fails such requests
                     * instead of keeping them): the node may be dead, try the
                     * next one now (a re-sent write is safe, see client.h). */
                    q->call->status = mg_error_set(&q->call->err, MG_EUNAVAIL,
                                                   "connection to node %llu lost",
                                                   (unsigned long long)nid);
                    leader_moved(c, q->group, 0, q->node);
                } else if (rv != 0) {
                    q->call->status = mg_error_set(&q->call->err, nng_to_mg(rv),
                                                   "node %llu: %s", (unsigned long long)nid,
                                                   nng_strerror(rv));
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
                                                       "node %llu: %s", (unsigned long long)nid,
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
                        if (r.rep.status == MG_ENOTLEADER) {
                            q->next = leader_moved(c, q->group, r.rep.leader_id, q->node);
                            if (q->next < 0)
                                pause = true; /* no leader known yet, or it is down */
                        }
                        if (r.rep.status == MG_EUNAVAIL || r.rep.status == MG_EBUSY)
                            pause = true;
                        bool not_hosted =
                            r.rep.status == MG_ENOTFOUND &&
                            memmem(r.rep.msg, r.rep.msg_len, NOT_HOSTED, strlen(NOT_HOSTED));
                        int cand[NODES_CAP];
                        if (not_hosted &&
                            (++q->not_hosted < group_candidates(c, q->group, cand) ||
                             (may_refresh && mg_client_epoch(c) != 0))) {
                            /* The replica moved away: another one, or a newer map. */
                            leader_moved(c, q->group, 0, q->node);
                            q->call->status = MG_EUNAVAIL;
                            q->call->err.code = MG_EUNAVAIL;
                            refresh = true;
                            pause = true;
                        }
                        if (r.rep.status == MG_EWRONGGROUP) {
                            /* A stale map, or a rebalance between its freeze
                             * and its flip: refresh and retry until the flip. */
                            refresh = true;
                            pause = true;
                        }
                        mg_client_reply_free(&r);
                        if (!retryable(q->call->status) ||
                            (!may_refresh && q->call->status == MG_EWRONGGROUP)) {
                            q->done = true;
                            left--;
                        }
                    }
                }
            }
            pool_put(&nc->req, q->slot);
            q->slot = NULL;
            if (!q->done && q->call->status == MG_ESHUTDOWN) {
                q->done = true;
                left--;
            }
        }
        if (left > 0 && refresh) {
            uint64_t t = now_ms();
            if (may_refresh && t < deadline)
                refresh_run(c, (unsigned)(deadline - t), NULL);
            pause = true;
        }
        if (left > 0 && pause)
            sleep_ms(RETRY_PAUSE_MS);
    }
    if (p != local)
        free(p);
}

void mg_client_run(mg_client *c, const char *user, mg_client_call *calls, size_t n)
{
    run_calls(c, user, calls, n, c->call_timeout_ms, true);
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
    uint64_t deadline = now_ms() + timeout_ms;
    int status = mg_error_set(err, MG_ETIMEDOUT, "node %llu: no answer within %u ms",
                              (unsigned long long)atomic_load(&nc->id), timeout_ms);
    for (;;) {
        uint64_t now = now_ms();
        if (now >= deadline)
            return status;
        uint32_t remain = (uint32_t)(deadline - now);
        int rc = MG_OK;
        slot *s = pool_get(&nc->req, &rc);
        if (s == NULL)
            return mg_error_set(err, rc, "no context: %s", mg_strerror(rc));
        uint64_t rid = atomic_fetch_add(&c->next_rid, 1);
        nng_msg *m;
        rc = build_request("", op, group, body, body_len, rid, remain, &m);
        if (rc != MG_OK) {
            pool_put(&nc->req, s);
            return mg_error_set(err, rc, "request: %s", mg_strerror(rc));
        }
        nng_aio_set_msg(s->aio, m);
        nng_aio_set_timeout(s->aio, (nng_duration)remain);
        uint64_t drops = atomic_load(&nc->drops);
        inflight_add(nc, s);
        nng_ctx_send(s->ctx, s->aio);
        nng_aio_wait(s->aio);
        int rv = nng_aio_result(s->aio);
        if (rv != 0) {
            nng_msg_free(nng_aio_get_msg(s->aio));
        } else {
            now = now_ms();
            nng_aio_set_timeout(s->aio, now < deadline ? (nng_duration)(deadline - now) : 1);
            nng_ctx_recv(s->ctx, s->aio);
            if (atomic_load(&nc->drops) != drops)
                nng_aio_cancel(s->aio);
            nng_aio_wait(s->aio);
            rv = nng_aio_result(s->aio);
        }
        inflight_remove(nc, s);
        uint64_t nid = atomic_load(&nc->id);
        if (rv == 0) {
            mg_client_reply r = {.msg = nng_aio_get_msg(s->aio)};
            pool_put(&nc->req, s);
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
        pool_put(&nc->req, s);
        if (rv == NNG_ECLOSED || (rv == NNG_ECANCELED && atomic_load(&nc->drops) == drops))
            return mg_error_set(err, MG_ESHUTDOWN, "client closing");
        status = mg_error_set(err, rv == NNG_ETIMEDOUT ? MG_ETIMEDOUT : MG_EUNAVAIL,
                              "node %llu (%s): %s", (unsigned long long)nid, nc->rpc,
                              rv == NNG_ECANCELED ? "connection lost" : nng_strerror(rv));
        if (now_ms() + RETRY_PAUSE_MS < deadline)
            sleep_ms(RETRY_PAUSE_MS);
    }
}

int mg_client_call_node(mg_client *c, uint64_t node_id, int op, uint64_t group,
                        const void *body, size_t body_len, unsigned timeout_ms,
                        mg_client_reply *out, mg_error *err)
{
    int i = node_index(c, node_id);
    if (i < 0)
        return mg_error_set(err, MG_EUNAVAIL, "node %llu is not known to this router",
                            (unsigned long long)node_id);
    return call_index(c, i, op, group, body, body_len, timeout_ms ? timeout_ms : 1, out, err);
}

bool mg_client_node_up(mg_client *c, uint64_t node_id)
{
    int i = node_index(c, node_id);
    return i >= 0 && atomic_load(&c->nodes[i].pipes) > 0;
}

/* Reads a NODE_INFO answer. */
static int node_info_read(const mg_wire_rep *rep, mg_cmap_node *info, mg_error *err)
{
    memset(info, 0, sizeof *info);
    info->state = MG_CMAP_NODE_UP;
    mg_mp_reader r = mg_wire_body(rep->body, rep->body_len);
    uint32_t n;
    if (mg_mp_read_map(&r, &n) != MG_OK)
        goto bad;
    for (uint32_t i = 0; i < n; i++) {
        int rc;
        if (mg_mp_peek_str_eq(&r, "node")) {
            mg_mp_skip(&r);
            rc = mg_mp_read_u64(&r, &info->id);
        } else if (mg_mp_peek_str_eq(&r, "rpc")) {
            mg_mp_skip(&r);
            rc = mg_mp_read_strcpy(&r, info->rpc, sizeof info->rpc);
        } else if (mg_mp_peek_str_eq(&r, "survey")) {
            mg_mp_skip(&r);
            rc = mg_mp_read_strcpy(&r, info->survey, sizeof info->survey);
        } else if (mg_mp_peek_str_eq(&r, "raft_host")) {
            mg_mp_skip(&r);
            rc = mg_mp_read_strcpy(&r, info->raft_host, sizeof info->raft_host);
        } else if (mg_mp_peek_str_eq(&r, "raft_port")) {
            mg_mp_skip(&r);
            rc = mg_mp_read_u32(&r, &info->raft_port);
        } else {
            rc = mg_mp_skip(&r) != MG_OK || mg_mp_skip(&r) != MG_OK ? MG_ECORRUPT : MG_OK;
        }
        if (rc != MG_OK)
            goto bad;
    }
    if (info->id == 0)
        goto bad;
    return MG_OK;
bad:
    return mg_error_set(err, MG_ECORRUPT, "malformed NODE_INFO answer");
}

static const uint8_t empty_map[] = {0x80};

/* NODE_INFO to every node whose id is not known yet (seeds), timeout_ms
 * each at most: a seed that is up answers at once. */
static void probe_unknown(mg_client *c, unsigned timeout_ms)
{
    size_t n = nodes_count(c);
    for (size_t i = 0; i < n; i++) {
        if (node_id_at(c, i) != 0)
            continue;
        mg_client_reply rep;
        mg_error err;
        if (call_index(c, (int)i, MG_OP_NODE_INFO, 0, empty_map, sizeof empty_map, timeout_ms,
                       &rep, &err) != MG_OK) {
            mg_debug("router.seed_probe", "seed=%s err=\"%s\"", c->nodes[i].rpc, err.msg);
            continue;
        }
        mg_cmap_node info;
        if (node_info_read(&rep.rep, &info, &err) == MG_OK && node_index(c, info.id) < 0) {
            pthread_mutex_lock(&c->nodes_lock);
            atomic_store_explicit(&c->nodes[i].id, info.id, memory_order_release);
            survey_dial_locked(c, &c->nodes[i], info.survey);
            pthread_mutex_unlock(&c->nodes_lock);
        }
        mg_client_reply_free(&rep);
    }
}

int mg_client_probe(mg_client *c, const char *rpc_url, unsigned timeout_ms, mg_cmap_node *info,
                    mg_error *err)
{
    mg_cmap_node local;
    if (info == NULL)
        info = &local;
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
    int rc = build_request("", MG_OP_NODE_INFO, 0, empty_map, sizeof empty_map, rid, timeout_ms,
                           &m);
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
    mg_client_reply r = {.msg = reply};
    rc = mg_wire_rep_decode(nng_msg_body(reply), nng_msg_len(reply), &r.rep, err);
    if (rc == MG_OK && r.rep.status != MG_OK)
        rc = mg_error_set(err, r.rep.status, "node %s: %.*s", rpc_url, (int)r.rep.msg_len,
                          r.rep.msg);
    if (rc == MG_OK)
        rc = node_info_read(&r.rep, info, err);
    mg_client_reply_free(&r);
    nng_close(sock);
    if (rc != MG_OK)
        return rc;
    /* Dial it where we reached it (its advertised URL may name another
     * interface), unless we know it already. */
    if (node_index(c, info->id) < 0 && node_add(c, info->id, rpc_url, info->survey) < 0)
        return mg_error_set(err, MG_ENOMEM, "router: too many nodes (at most %d)", NODES_CAP);
    if (node_index(c, info->id) >= 0) {
        int i = node_index(c, info->id);
        pthread_mutex_lock(&c->nodes_lock);
        survey_dial_locked(c, &c->nodes[i], info->survey);
        pthread_mutex_unlock(&c->nodes_lock);
    }
    return MG_OK;
}

/* ---- the map from the meta group --------------------------------------------- */

/* One META_GET to group 0's leader; installs a newer map. */
static int refresh_once(mg_client *c, unsigned timeout_ms, mg_error *err)
{
    if (mg_client_epoch(c) == 0)
        probe_unknown(c, 200);
    mg_client_call call = {.op = MG_OP_META_GET, .group = 0, .body = empty_map,
                           .body_len = sizeof empty_map};
    run_calls(c, "", &call, 1, timeout_ms, false);
    if (call.status == MG_ENOTFOUND && mg_client_epoch(c) == 0 &&
        strstr(call.err.msg, NOT_HOSTED) != NULL)
        return MG_OK; /* no node hosts a meta group yet: not initialized */
    if (call.status != MG_OK) {
        if (err != NULL)
            *err = call.err;
        return mg_error_wrap(err, call.status, "cluster map (META_GET)");
    }
    mg_mp_reader r = mg_wire_body(call.reply.rep.body, call.reply.rep.body_len);
    uint32_t n;
    const uint8_t *map = NULL;
    uint32_t map_len = 0;
    int rc = mg_mp_read_map(&r, &n);
    for (uint32_t i = 0; rc == MG_OK && i < n; i++) {
        if (mg_mp_peek_str_eq(&r, "map")) {
            mg_mp_skip(&r);
            if (mg_mp_peek(&r) == MG_MP_NIL)
                rc = mg_mp_read_nil(&r);
            else
                rc = mg_mp_read_bin(&r, &map, &map_len);
        } else {
            rc = mg_mp_skip(&r) != MG_OK || mg_mp_skip(&r) != MG_OK ? MG_ECORRUPT : MG_OK;
        }
    }
    if (rc != MG_OK) {
        mg_client_reply_free(&call.reply);
        return mg_error_set(err, MG_ECORRUPT, "malformed META_GET answer");
    }
    if (map != NULL) {
        mg_cmap *m = malloc(sizeof *m);
        if (m == NULL) {
            mg_client_reply_free(&call.reply);
            return mg_error_set(err, MG_ENOMEM, "out of memory");
        }
        rc = mg_cmap_decode(map, map_len, m, err);
        if (rc == MG_OK)
            mg_client_set_map(c, m);
        else
            mg_error_wrap(err, rc, "cluster map from the meta group");
        free(m);
    }
    mg_client_reply_free(&call.reply);
    return rc;
}

static int refresh_run(mg_client *c, unsigned timeout_ms, mg_error *err)
{
    pthread_mutex_lock(&c->refresh_lock);
    if (c->refreshing) {
        uint64_t gen = c->refresh_gen;
        while (c->refreshing && c->refresh_gen == gen)
            pthread_cond_wait(&c->refresh_cond, &c->refresh_lock);
    } else if (c->refresh_done_ms == 0 || now_ms() - c->refresh_done_ms >= REFRESH_REUSE_MS) {
        c->refreshing = true;
        pthread_mutex_unlock(&c->refresh_lock);
        mg_error e;
        mg_error_clear(&e);
        int rc = refresh_once(c, timeout_ms, &e);
        pthread_mutex_lock(&c->refresh_lock);
        c->refreshing = false;
        c->refresh_gen++;
        c->refresh_rc = rc;
        c->refresh_err = e;
        c->refresh_done_ms = now_ms();
        pthread_cond_broadcast(&c->refresh_cond);
    }
    int rc = c->refresh_rc;
    if (err != NULL && rc != MG_OK)
        *err = c->refresh_err;
    pthread_mutex_unlock(&c->refresh_lock);
    return rc;
}

int mg_client_refresh(mg_client *c, mg_error *err)
{
    return refresh_run(c, c->call_timeout_ms, err);
}

int mg_client_refresh_for(mg_client *c, unsigned timeout_ms, mg_error *err)
{
    return refresh_run(c, timeout_ms ? timeout_ms : 1, err);
}

/* ---- one request to several nodes (admin) ----------------------------------- */

size_t mg_client_n_nodes(const mg_client *c)
{
    return nodes_count(c);
}

uint64_t mg_client_node_id(const mg_client *c, size_t i)
{
    return i < nodes_count(c) ? node_id_at(c, i) : 0;
}

/* Sends to the nodes idx[0..n) (-1: unknown, answered MG_EUNAVAIL) at once,
 * without retries, and collects within timeout_ms. */
static void call_indices(mg_client *c, const int *idx, size_t n, int op, const void *body,
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
    uint64_t deadline = now_ms() + timeout_ms;
    /* Send to every node, then collect: the nodes answer concurrently. */
    for (size_t i = 0; i < n; i++) {
        if (idx[i] < 0) {
            calls[i].status = mg_error_set(&calls[i].err, MG_EUNAVAIL, "node not known");
            continue;
        }
        node_conn *nc = &c->nodes[idx[i]];
        int rc = MG_OK;
        nng_msg *m;
        slots[i] = pool_get(&nc->req, &rc);
        if (slots[i] == NULL) {
            calls[i].status = mg_error_set(&calls[i].err, rc, "no context: %s", mg_strerror(rc));
            continue;
        }
        rids[i] = atomic_fetch_add(&c->next_rid, 1);
        rc = build_request("", op, 0, body, body_len, rids[i], timeout_ms, &m);
        if (rc != MG_OK) {
            calls[i].status = mg_error_set(&calls[i].err, rc, "request: %s", mg_strerror(rc));
            pool_put(&nc->req, slots[i]);
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
            calls[i].status = mg_error_set(&calls[i].err, nng_to_mg(rv), "send to node %llu: %s",
                                           (unsigned long long)atomic_load(&nc->id),
                                           nng_strerror(rv));
            pool_put(&nc->req, slots[i]);
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
        node_conn *nc = &c->nodes[idx[i]];
        unsigned long long nid = (unsigned long long)atomic_load(&nc->id);
        nng_aio_wait(slots[i]->aio);
        int rv = nng_aio_result(slots[i]->aio);
        if (rv != 0) {
            calls[i].status = mg_error_set(&calls[i].err, nng_to_mg(rv), "node %llu: %s", nid,
                                           nng_strerror(rv));
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
        pool_put(&nc->req, slots[i]);
    }
done:
    free(slots);
    free(rids);
}

void mg_client_call_each(mg_client *c, int op, const void *body, size_t body_len,
                         unsigned timeout_ms, mg_client_call *calls)
{
    size_t n = nodes_count(c);
    int idx[NODES_CAP];
    for (size_t i = 0; i < n; i++)
        idx[i] = (int)i;
    call_indices(c, idx, n, op, body, body_len, timeout_ms, calls);
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
        idx[i] = node_index(c, ids[i]);
    call_indices(c, idx, n, op, body, body_len, timeout_ms, calls);
    free(idx);
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
                if (status == MG_ENOTLEADER) {
                    bool all_down;
                    leader_moved(c, group, leader, leader_pick(c, group, &all_down));
                }
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
    bool *unreached;        /* out: want[i] was not sent: its node had no connection on the
                             * round's surveyor (survey_connect), or it has no node */
} survey_round_args;

static int survey_round_on(mg_client *c, int k, const char *user, mg_client_survey *s,
                           const survey_round_args *a, mg_error *err);

/* One survey round; fills answered[], heard[] and unreached[] and appends
 * replies. */
static int survey_round(mg_client *c, const char *user, mg_client_survey *s,
                        const survey_round_args *a, mg_error *err)
{
    int k = survey_sock_acquire(c);
    int rc = survey_round_on(c, k, user, s, a, err);
    survey_sock_release(c, k);
    return rc;
}

/* Whether node i may still get a connection on surveyor k soon: dialed
 * there, not known to be down, and not given up on by an earlier survey. */
static bool survey_may_connect(mg_client *c, int i, int k)
{
    node_conn *n = &c->nodes[i];
    return atomic_load(&n->sdialer[k]) != 0 && !atomic_load(&n->survey_gone) && !node_down(c, i);
}

/* Waits until every node assigned a group has a pipe on surveyor k, at most
 * SEND_WAIT_MS: nng sends a survey only on the pipes up at the time, and
 * right after a map named a node (router start, a node added) its dials are
 * a few ms from connecting. Then notes each group's node drop count and
 * marks unreached the groups whose node has no pipe: they are not sent (a
 * node that did not connect is given up on by later surveys until it
 * does), and mg_client_search asks another replica at once. */
static void survey_connect(mg_client *c, int k, const survey_round_args *a, uint64_t *drops0)
{
    survey_watch *sw = &c->watch[k];
    unsigned wait_ms = c->survey_timeout_ms < SEND_WAIT_MS ? c->survey_timeout_ms : SEND_WAIT_MS;
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += wait_ms / 1000;
    until.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&sw->lock);
    for (;;) {
        bool waiting = false;
        for (size_t i = 0; i < a->n_want && !waiting; i++) {
            int ni = a->assign[i];
            waiting = ni >= 0 && atomic_load(&c->nodes[ni].spipe[k]) == 0 &&
                      survey_may_connect(c, ni, k);
        }
        if (!waiting || pthread_cond_timedwait(&sw->changed, &sw->lock, &until) != 0)
            break;
    }
    pthread_mutex_unlock(&sw->lock);
    for (size_t i = 0; i < a->n_want; i++) {
        int ni = a->assign[i];
        drops0[i] = 0;
        a->unreached[i] = true;
        if (ni < 0)
            continue;
        node_conn *n = &c->nodes[ni];
        /* The count first: a pipe that goes after it was read moves it. */
        drops0[i] = atomic_load(&n->sdrops[k]);
        a->unreached[i] = atomic_load(&n->spipe[k]) == 0;
        if (a->unreached[i] && survey_may_connect(c, ni, k)) {
            atomic_store(&n->survey_gone, true);
            mg_warn("router.survey_unreached", "node=%llu socket=%d: no connection within %u ms",
                    (unsigned long long)atomic_load(&n->id), k, wait_ms);
        }
    }
}

static void survey_watch_add(survey_watch *sw, survey_wait *w)
{
    pthread_mutex_lock(&sw->lock);
    w->prev = NULL;
    w->next = sw->rounds;
    if (sw->rounds != NULL)
        sw->rounds->prev = w;
    sw->rounds = w;
    pthread_mutex_unlock(&sw->lock);
}

static void survey_watch_remove(survey_watch *sw, survey_wait *w)
{
    pthread_mutex_lock(&sw->lock);
    if (w->prev != NULL)
        w->prev->next = w->next;
    else
        sw->rounds = w->next;
    if (w->next != NULL)
        w->next->prev = w->prev;
    w->prev = w->next = NULL;
    pthread_mutex_unlock(&sw->lock);
}

/* Packs and sends the survey of the groups not unreached; *rid gets its id.
 * The slot's aio is free again on return. */
static int survey_send(mg_client *c, slot *sl, const char *user, mg_client_survey *s,
                       const survey_round_args *a, size_t n_sent, uint64_t *rid, mg_error *err)
{
    nng_msg *m = NULL;
    if (nng_msg_alloc(&m, 0) != 0)
        return mg_error_set(err, MG_ENOMEM, "survey: out of memory");
    *rid = atomic_fetch_add(&c->next_rid, 1);
    msgpack_packer pk;
    msgpack_packer_init(&pk, m, msg_write);
    int rc = mg_wire_req_begin(&pk, MG_OP_SEARCH, *rid, 0, 0, c->survey_timeout_ms, user);
    if (rc == MG_OK && msgpack_pack_map(&pk, s->n_fields + 1 + (a->follower ? 1 : 0)))
        rc = MG_ENOMEM;
    if (rc == MG_OK && nng_msg_append(m, s->fields, s->fields_len) != 0)
        rc = MG_ENOMEM;
    if (rc == MG_OK && a->follower &&
        (mg_mp_pack_cstr(&pk, "follower") || msgpack_pack_true(&pk)))
        rc = MG_ENOMEM;
    if (rc == MG_OK &&
        (mg_mp_pack_cstr(&pk, "assign") || msgpack_pack_array(&pk, (uint32_t)n_sent)))
        rc = MG_ENOMEM;
    for (size_t i = 0; rc == MG_OK && i < a->n_want; i++) {
        if (a->unreached[i])
            continue;
        if (msgpack_pack_map(&pk, 2) || mg_mp_pack_cstr(&pk, "group") ||
            msgpack_pack_uint64(&pk, a->want[i]) || mg_mp_pack_cstr(&pk, "node") ||
            msgpack_pack_uint64(&pk, node_id_at(c, (size_t)a->assign[i])))
            rc = MG_ENOMEM;
    }
    if (rc != MG_OK) {
        nng_msg_free(m);
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
        return mg_error_set(err, nng_to_mg(rv), "survey send: %s", nng_strerror(rv));
    }
    return MG_OK;
}

static int survey_round_on(mg_client *c, int k, const char *user, mg_client_survey *s,
                           const survey_round_args *a, mg_error *err)
{
    slot_pool *pool = &c->survey[k];
    survey_watch *sw = &c->watch[k];
    const uint64_t *want = a->want;
    size_t n_want = a->n_want;
    bool *answered = a->answered, *heard = a->heard;
    uint64_t drops_local[16];
    uint64_t *drops0 = n_want <= 16 ? drops_local : calloc(n_want, sizeof *drops0);
    if (drops0 == NULL)
        return mg_error_set(err, MG_ENOMEM, "survey: out of memory");
    survey_connect(c, k, a, drops0);
    size_t n_sent = 0;
    for (size_t i = 0; i < n_want; i++) {
        if (!a->unreached[i])
            n_sent++;
        else if (a->assign[i] >= 0)
            snprintf(s->missing_why, sizeof s->missing_why,
                     "group %llu: no connection to node %llu", (unsigned long long)want[i],
                     (unsigned long long)node_id_at(c, (size_t)a->assign[i]));
    }
    int rc = MG_OK;
    slot *sl = n_sent > 0 ? pool_get(pool, &rc) : NULL;
    if (sl == NULL) {
        if (n_sent > 0)
            mg_error_set(err, rc, "survey: %s", mg_strerror(rc));
        goto done;
    }
    uint64_t rid = 0;
    rc = survey_send(c, sl, user, s, a, n_sent, &rid, err);
    if (rc != MG_OK)
        goto done_put;
    survey_wait w = {.k = k, .n = n_want, .assign = a->assign, .answered = answered,
                     .heard = heard, .unreached = a->unreached, .drops0 = drops0,
                     .aio = sl->aio};
    survey_watch_add(sw, &w);
    int rv = 0;
    for (;;) {
        /* Settled (or a receive posted) under the lock: a drop reported after
         * this check finds the receive and cancels it. */
        pthread_mutex_lock(&sw->lock);
        bool settled = survey_settled(c, &w);
        if (!settled) {
            w.posted = true;
            nng_aio_set_timeout(sl->aio, NNG_DURATION_DEFAULT);
            nng_ctx_recv(sl->ctx, sl->aio);
        }
        pthread_mutex_unlock(&sw->lock);
        if (settled)
            break;
        nng_aio_wait(sl->aio);
        pthread_mutex_lock(&sw->lock);
        w.posted = false;
        pthread_mutex_unlock(&sw->lock);
        rv = nng_aio_result(sl->aio);
        if (rv != 0)
            break; /* NNG_ETIMEDOUT at the survey deadline, NNG_ESTATE after it,
                    * NNG_ECANCELED when a dropped pipe settled the round */
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
            rc = mg_error_set(err, MG_ENOMEM, "survey: out of memory");
            break;
        }
        s->replies = grown;
        s->replies[s->n_replies++] = r;
    }
    survey_watch_remove(sw, &w);
    for (size_t i = 0; rc == MG_OK && i < n_want; i++)
        if (!answered[i] && !a->unreached[i] &&
            atomic_load(&c->nodes[a->assign[i]].sdrops[k]) != drops0[i])
            snprintf(s->missing_why, sizeof s->missing_why,
                     "group %llu: connection to node %llu lost", (unsigned long long)want[i],
                     (unsigned long long)node_id_at(c, (size_t)a->assign[i]));
    if (rc == MG_OK && rv == NNG_ECLOSED)
        rc = mg_error_set(err, MG_ESHUTDOWN, "survey: router closing");
done_put:
    pool_put(pool, sl);
done:
    if (drops0 != drops_local)
        free(drops0);
    return rc;
}

/* Follower reads: any live replica of the group, in turn. */
static int spread_pick(mg_client *c, uint64_t group, bool *all_down)
{
    int cand[NODES_CAP];
    size_t n = group_candidates(c, group, cand);
    *all_down = false;
    if (n == 0)
        return -1;
    unsigned start = atomic_fetch_add_explicit(&c->spread, 1, memory_order_relaxed);
    for (size_t k = 0; k < n; k++) {
        int i = cand[(start + k) % n];
        if (!node_down(c, i))
            return i;
    }
    *all_down = true;
    return cand[start % n];
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
    bool *unreached = calloc(n, sizeof *unreached);
    uint64_t *again = calloc(n, sizeof *again);
    int rc = MG_OK;
    if (assign == NULL || assign2 == NULL || answered == NULL || heard == NULL ||
        answered2 == NULL || unreached == NULL || again == NULL) {
        rc = mg_error_set(err, MG_ENOMEM, "survey: out of memory");
        goto done;
    }
    bool refreshed = false;
    for (size_t i = 0; i < n; i++) {
        bool all_down = false;
        if (s->groups[i] == 0) {
            rc = mg_error_set(err, MG_EUNAVAIL, MG_CLIENT_NO_MAP_MSG);
            goto done;
        }
        assign[i] = s->follower ? spread_pick(c, s->groups[i], &all_down)
                                : leader_pick(c, s->groups[i], &all_down);
        if ((assign[i] < 0 || all_down) && !refreshed) {
            /* Not in our map, or nobody reachable: the group may have moved. */
            refresh_run(c, c->call_timeout_ms, NULL);
            refreshed = true;
            assign[i] = s->follower ? spread_pick(c, s->groups[i], &all_down)
                                    : leader_pick(c, s->groups[i], &all_down);
        }
    }
    survey_round_args a1 = {.want = s->groups, .assign = assign, .n_want = n,
                            .follower = s->follower, .answered = answered, .heard = heard,
                            .unreached = unreached};
    rc = survey_round(c, user, s, &a1, err);
    if (rc != MG_OK)
        goto done;
    for (size_t i = 0; i < n && s->follower; i++)
        s->follower_read |= answered[i]; /* asked of any replica */
    /* Round 2, twice at most: groups whose node named another leader are
     * asked there (a leader read); groups whose node did not answer at all
     * (down, or failing over), or that were not sent to it (no connection),
     * or whose connection to it dropped during the round, are asked of the
     * next replica, which may answer from its own state ("follower": true;
     * flagged in the survey). A group whose node answered without a usable
     * hint goes the follower way too, on that same (live) node, and so does
     * one that the named leader did not answer either (a round ends as soon
     * as every node asked has answered, so during an election the named
     * leader may not lead yet). */
    for (int pass = 0; pass < 2 && rc == MG_OK; pass++) {
        bool follower = pass == 1;
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
            if (answered[i])
                continue;
            uint64_t g = s->groups[i];
            bool all_down;
            int now = leader_pick(c, g, &all_down);
            bool hinted = heard[i] && now != assign[i];
            if (!heard[i] && now == assign[i]) {
                /* Silent node: move the guess on for later requests too. */
                leader_moved(c, g, 0, assign[i]);
                now = leader_pick(c, g, &all_down);
            }
            if (now < 0 || (unreached[i] && now == assign[i]))
                continue; /* no replica in the map, or no other: missing */
            if (!follower && !hinted)
                continue; /* the first pass is for hinted groups only */
            again[k] = g;
            assign2[k] = follower && heard[i] && assign[i] >= 0 ? assign[i] : now;
            k++;
        }
        if (k == 0)
            continue;
        memset(answered2, 0, k * sizeof *answered2);
        bool flags2[32];
        bool *h2 = k <= 16 ? flags2 : calloc(2 * k, sizeof *h2);
        if (h2 == NULL) {
            rc = mg_error_set(err, MG_ENOMEM, "survey: out of memory");
            break;
        }
        memset(h2, 0, 2 * k * sizeof *h2);
        survey_round_args a2 = {.want = again, .assign = assign2, .n_want = k,
                                .follower = follower || s->follower, .answered = answered2,
                                .heard = h2, .unreached = h2 + k};
        rc = survey_round(c, user, s, &a2, err);
        if (h2 != flags2)
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
            /* A group that moved is missing too: learn where it went (the
             * caller may ask again when the epoch changed). */
            refresh_run(c, c->call_timeout_ms, NULL);
        }
    }
done:
    free(assign);
    free(assign2);
    free(answered);
    free(heard);
    free(answered2);
    free(unreached);
    free(again);
    if (rc != MG_OK)
        mg_client_survey_clear(s);
    return rc;
}
