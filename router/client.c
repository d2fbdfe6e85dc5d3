/*
 * The cluster client's core (router/client.h): helpers shared by its parts,
 * the context pools, the node table and its connection notifications, and
 * open/close. The request path is in client_call.c, the map and seeds in
 * client_map.c, searches in client_survey.c.
 */
#include "client_internal.h"

#include "../lib/log.h"
#include "../lib/mp.h"

#include <nng/protocol/reqrep0/req.h>
#include <nng/protocol/survey0/survey.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- helpers ------------------------------------------------------------ */

int client_nng_to_mg(int rv)
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

uint64_t client_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void client_sleep_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* msgpack writer appending to an nng message: the request is packed straight
 * into the buffer nng sends. */
int client_msg_write(void *data, const char *buf, size_t len)
{
    return nng_msg_append((nng_msg *)data, buf, len) == 0 ? 0 : -1;
}

int client_pool_init(slot_pool *p)
{
    p->free = NULL;
    p->closed = false;
    return pthread_mutex_init(&p->lock, NULL) == 0 ? MG_OK : MG_ENOMEM;
}

slot *client_pool_get(slot_pool *p, int *rc)
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
        *rc = client_nng_to_mg(rv);
        return NULL;
    }
    return s;
}

void client_pool_put(slot_pool *p, slot *s)
{
    pthread_mutex_lock(&p->lock);
    s->next = p->free;
    p->free = s;
    pthread_mutex_unlock(&p->lock);
}

/* Frees the pooled slots; the socket must be closed already (so no aio is
 * pending). */
void client_pool_destroy(slot_pool *p)
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

size_t client_nodes_count(const mg_client *c)
{
    return atomic_load_explicit(&((mg_client *)c)->n_nodes, memory_order_acquire);
}

uint64_t client_node_id_at(const mg_client *c, size_t i)
{
    return atomic_load_explicit(&c->nodes[i].id, memory_order_acquire);
}

int client_node_index(const mg_client *c, uint64_t node_id)
{
    if (node_id == 0)
        return -1;
    size_t n = client_nodes_count(c);
    for (size_t i = 0; i < n; i++)
        if (client_node_id_at(c, i) == node_id)
            return (int)i;
    return -1;
}

const char *client_node_label(const mg_client *c, int i, char *buf, size_t cap)
{
    uint64_t id = client_node_id_at(c, (size_t)i);
    if (id != 0)
        snprintf(buf, cap, "node %llu", (unsigned long long)id);
    else
        snprintf(buf, cap, "node at %s", c->nodes[i].rpc);
    return buf;
}

/* The connection to node i dropped and none is up again. */
bool client_node_down(mg_client *c, int i)
{
    node_conn *n = &c->nodes[i];
    return atomic_load(&n->lost) && atomic_load(&n->pipes) == 0;
}

/* ---- connection drops (nng pipe notifications) --------------------------- */

void client_inflight_add(node_conn *n, slot *s)
{
    pthread_mutex_lock(&n->lock);
    s->iprev = NULL;
    s->inext = n->inflight;
    if (n->inflight != NULL)
        n->inflight->iprev = s;
    n->inflight = s;
    pthread_mutex_unlock(&n->lock);
}

void client_inflight_remove(node_conn *n, slot *s)
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

/* ---- the node table --------------------------------------------------------- */

/* Dials node n's survey URL on every surveyor that has no dialer to it yet
 * (nodes_lock held; n published in the table, so that client_survey_pipe_event
 * finds it). The dialer's id is stored before it starts: its first pipe may
 * come up before nng_dialer_start returns. */
void client_survey_dial_locked(mg_client *c, node_conn *n, const char *survey)
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
    atomic_init(&n->seed, false);
    atomic_init(&n->hosts_meta, false);
    for (int k = 0; k < SURVEY_SOCKETS; k++) {
        atomic_init(&n->sdialer[k], 0);
        atomic_init(&n->spipe[k], 0);
        atomic_init(&n->sdrops[k], 0);
    }
    snprintf(n->rpc, sizeof n->rpc, "%s", rpc);
    if (client_pool_init(&n->req) != MG_OK)
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
int client_node_add(mg_client *c, uint64_t id, const char *rpc, const char *survey)
{
    pthread_mutex_lock(&c->nodes_lock);
    size_t n = client_nodes_count(c);
    int found = -1;
    for (size_t i = 0; i < n && found < 0 && id != 0; i++)
        if (client_node_id_at(c, i) == id)
            found = (int)i;
    for (size_t i = 0; i < n && found < 0 && rpc != NULL; i++)
        if (strcmp(c->nodes[i].rpc, rpc) == 0 && (id == 0 || client_node_id_at(c, i) == 0)) {
            found = (int)i;
            if (id != 0)
                atomic_store_explicit(&c->nodes[i].id, id, memory_order_release);
        }
    if (found >= 0) {
        client_survey_dial_locked(c, &c->nodes[found], survey);
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
    client_survey_dial_locked(c, nc, survey);
    pthread_mutex_unlock(&c->nodes_lock);
    mg_debug("router.node_added", "node=%llu rpc=%s", (unsigned long long)id, rpc);
    return (int)n;
}

int client_seed_add(mg_client *c, const char *rpc)
{
    int i = client_node_add(c, 0, rpc, NULL);
    if (i >= 0)
        atomic_store(&c->nodes[i].seed, true);
    return i;
}

/* ---- open / close ------------------------------------------------------- */

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
    pthread_mutex_init(&c->info_lock, NULL);
    pthread_mutex_init(&c->survey_lock, NULL);
    pthread_cond_init(&c->survey_free, NULL);

    int rc = MG_OK;
    for (int k = 0; k < SURVEY_SOCKETS && rc == MG_OK; k++) {
        if (client_pool_init(&c->survey[k]) != MG_OK) {
            rc = mg_error_set(err, MG_ENOMEM, "client: mutex");
            break;
        }
        int rv = nng_surveyor0_open(&c->survey[k].sock);
        if (rv != 0) {
            client_pool_destroy(&c->survey[k]);
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
        rv = nng_pipe_notify(c->survey[k].sock, NNG_PIPE_EV_ADD_POST, client_survey_pipe_event, sw);
        if (rv == 0)
            rv = nng_pipe_notify(c->survey[k].sock, NNG_PIPE_EV_REM_POST, client_survey_pipe_event,
                                 sw);
        if (rv != 0)
            rc = mg_error_set(err, MG_EUNAVAIL, "client: pipe notify: %s", nng_strerror(rv));
    }
    for (size_t i = 0; rc == MG_OK && i < cfg->n_seeds; i++)
        if (client_seed_add(c, cfg->seeds[i]) < 0)
            rc = mg_error_set(err, MG_EUNAVAIL, "client: cannot dial seed %s", cfg->seeds[i]);
    if (rc != MG_OK) {
        mg_client_close(c);
        return rc;
    }
    if (c->map_cache != NULL)
        client_cache_load(c);
    if (cfg->map != NULL && cfg->map->epoch > 0)
        mg_client_set_map(c, cfg->map);
    /* Learn the seeds' ids, and without a map the meta group's nodes they
     * name (a seed that is not up yet is asked again at the next refresh). */
    client_probe_seeds(c, PROBE_OPEN_MS, mg_client_epoch(c) == 0, NULL);
    *out = c;
    return MG_OK;
}

void mg_client_close(mg_client *c)
{
    if (c == NULL)
        return;
    size_t n = client_nodes_count(c);
    for (int k = 0; k < SURVEY_SOCKETS; k++)
        if (c->survey_open[k])
            nng_close(c->survey[k].sock);
    for (size_t i = 0; i < n; i++)
        nng_close(c->nodes[i].req.sock);
    for (int k = 0; k < SURVEY_SOCKETS; k++) {
        if (c->survey_open[k])
            client_pool_destroy(&c->survey[k]);
        if (c->watch[k].init) {
            pthread_cond_destroy(&c->watch[k].changed);
            pthread_mutex_destroy(&c->watch[k].lock);
        }
    }
    for (size_t i = 0; i < n; i++) {
        client_pool_destroy(&c->nodes[i].req);
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
    pthread_mutex_destroy(&c->info_lock);
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

/* ---- the nodes ---------------------------------------------------------- */

size_t mg_client_n_nodes(const mg_client *c)
{
    return client_nodes_count(c);
}

uint64_t mg_client_node_id(const mg_client *c, size_t i)
{
    return i < client_nodes_count(c) ? client_node_id_at(c, i) : 0;
}

