/*
 * Private to the cluster client (router/client*.c): the client's state and
 * the functions its parts share. Nothing outside router/client*.c includes
 * it; router/client.h is the client's face.
 *
 *   client.c         helpers, context pools, the node table and its
 *                    connection notifications, open/close
 *   client_call.c    the request path (mg_client_run), calls to given nodes
 *   client_map.c     routing by the map, the map and its cache, refresh and
 *                    why there is no map
 *   client_probe.c   NODE_INFO: probes, seeds, meta hints, the cluster id
 *   client_survey.c  searches (surveys)
 */
#ifndef MG_ROUTER_CLIENT_INTERNAL_H
#define MG_ROUTER_CLIENT_INTERNAL_H

#include "client.h"

#include <nng/nng.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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
 * name plus the seeds and the meta group's nodes they name, so that a
 * node_conn never moves: threads index it without a lock, a new one is set
 * up under nodes_lock and published by a release store of n_nodes, and
 * none is freed before mg_client_close. */
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
     * waiting for a node whose pipe went (client_survey_pipe_event). */
    _Atomic int sdialer[SURVEY_SOCKETS];
    _Atomic uint32_t spipe[SURVEY_SOCKETS];
    _Atomic uint64_t sdrops[SURVEY_SOCKETS];
    /* A survey gave up waiting for a connection on some surveyor and none
     * has come up since: later surveys do not wait for it again. */
    _Atomic bool survey_gone;
    /* A configured seed, or a meta node a seed named: without a map, only
     * these are asked for the meta group (not a node an admin merely
     * probed, which may belong to another cluster). */
    _Atomic bool seed;
    /* Its NODE_INFO said it hosts a replica of the meta group: without a
     * map, group 0 is asked of such nodes first. */
    _Atomic bool hosts_meta;
} node_conn;

#define SURVEY_INFLIGHT 8
#define SEEDS_MAX 16
/* The map's nodes, the seeds and the meta hints of seeds (client_probe.c). */
#define NODES_CAP (MG_CMAP_NODES_MAX + SEEDS_MAX + MG_CMAP_REPLICAS_MAX)
#define NODES_WORDS ((NODES_CAP + 63) / 64)
#define REFRESH_REUSE_MS 20
#define RETRY_PAUSE_MS 20
#define PROBE_OPEN_MS 250
#define PROBE_REFRESH_MS 200

struct survey_wait;

/* A surveyor socket's pipe notifications (client_survey_pipe_event's argument) and
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
    mg_error no_map;             /* why the last refresh found no map (epoch 0) */

    /* The map cache file. */
    char *map_cache;
    pthread_mutex_t cache_lock;
    uint64_t cache_epoch;        /* epoch of the map last saved */

    /* The cluster id a seed named in NODE_INFO ("" = none heard); the map's
     * own id takes precedence (mg_client_cluster). */
    pthread_mutex_t info_lock;
    char cluster[MG_CMAP_CLUSTER_MAX];
};

/* What a node answers (MG_ENOTFOUND) for a group it does not host, and
 * how mg_client_run words the same status once every candidate said it
 * (it names no node: none of them hosts the group). */
#define NOT_HOSTED "is not hosted on node"
#define NOT_HOSTED_ANY "is not hosted on any"

/* An empty msgpack map: the body of NODE_INFO and META_GET. */
extern const uint8_t client_empty_body[1];

/* ---- helpers (client.c) ------------------------------------------------- */

/* An nng error as an mg one (0 → MG_OK). */
int client_nng_to_mg(int rv);
uint64_t client_now_ms(void);
void client_sleep_ms(unsigned ms);
/* msgpack writer appending to an nng message (data): the request is packed
 * straight into the buffer nng sends. */
int client_msg_write(void *data, const char *buf, size_t len);

/* Context pools: a slot (context + aio) of p's socket, reused across calls;
 * client_pool_get opens one when none is free (*rc: MG_ESHUTDOWN once the
 * pool is destroyed, MG_ENOMEM, an nng error). client_pool_destroy frees
 * the pooled slots; the socket must be closed already. */
int client_pool_init(slot_pool *p);
slot *client_pool_get(slot_pool *p, int *rc);
void client_pool_put(slot_pool *p, slot *s);
void client_pool_destroy(slot_pool *p);

/* ---- the node table (client.c) ------------------------------------------ */

/* Entries published so far (acquire); an index below it stays valid. */
size_t client_nodes_count(const mg_client *c);
/* Node i's id (0: a seed whose id is not known yet). */
uint64_t client_node_id_at(const mg_client *c, size_t i);
/* The index of a node by id, -1 when unknown (or id 0). */
int client_node_index(const mg_client *c, uint64_t node_id);
/* The connection to node i dropped and none is up again. */
bool client_node_down(mg_client *c, int i);
/* "node N", or "node at URL" while its id is not known; into buf. */
const char *client_node_label(const mg_client *c, int i, char *buf, size_t cap);
/* A request waits on s for node n (cancelled when its connection drops). */
void client_inflight_add(node_conn *n, slot *s);
void client_inflight_remove(node_conn *n, slot *s);
/* Dials node n's survey URL on every surveyor with no dialer to it yet
 * (nodes_lock held). */
void client_survey_dial_locked(mg_client *c, node_conn *n, const char *survey);
/* The node's index, adding (and dialing) it when new: found by id, else a
 * seed of unknown id dialed at the same rpc URL takes the id. id 0 adds a
 * seed (found by its URL). -1 when the table is full or the dial fails. */
int client_node_add(mg_client *c, uint64_t id, const char *rpc, const char *survey);
/* client_node_add of a seed (id unknown) at rpc, marked as a seed. */
int client_seed_add(mg_client *c, const char *rpc);

/* ---- routing by the map (client_map.c) ---------------------------------- */

/* Node indices that may serve `group`: its replicas in the map; without a
 * map, the seeds for group 0 (out has NODES_CAP room). */
size_t client_group_candidates(mg_client *c, uint64_t group, int *out);
/* The node to ask for `group`, -1 when it has no candidate; *all_down when
 * every candidate is down. */
int client_leader_pick(mg_client *c, uint64_t group, bool *all_down);
/* Moves the guess for `group` after a NOT_LEADER (hint_id, 0 = none) or a
 * failure of node `tried`; the hinted node's index when the hint was used,
 * else -1. */
int client_leader_moved(mg_client *c, uint64_t group, uint64_t hint_id, int tried);
/* Loads the map cache file when it exists (a bad one is logged, ignored). */
void client_cache_load(mg_client *c);
/* mg_client_refresh with its own deadline; concurrent callers share one. */
int client_refresh_run(mg_client *c, unsigned timeout_ms, mg_error *err);
/* ---- NODE_INFO (client_probe.c) ----------------------------------------- */

/* What the seeds' NODE_INFO answers said (client_probe_seeds). */
typedef struct client_seed_report {
    size_t asked, answered;
    bool hosts_meta;                   /* some seed hosts a meta-group replica */
    char cluster[MG_CMAP_CLUSTER_MAX]; /* the first cluster id named, "" = none */
    char silent[160];                  /* the rpc URLs that did not answer, ", "
                                        * between, cut short when long */
} client_seed_report;

/* NODE_INFO, at once, to the nodes whose id is not known yet, or to every
 * seed when `all`, waiting at most timeout_ms: learns their ids, survey
 * URLs, whether they host the meta group and the cluster they belong to,
 * and, while the client has no map, adds the meta group's nodes that they
 * name as seeds and asks those too. *report (may be NULL) gets the
 * outcome. */
void client_probe_seeds(mg_client *c, unsigned timeout_ms, bool all,
                        client_seed_report *report);

/* ---- the request path (client_call.c) ----------------------------------- */

/* A request message: envelope (internal when user is "" or NULL) + body. */
int client_build_request(const char *user, int op, uint64_t group, const void *body,
                         size_t body_len, uint64_t rid, uint32_t deadline_ms, nng_msg **out);
/* mg_client_run with its own deadline; may_refresh = false for the
 * refresh's own META_GET (which must not wait on itself). */
void client_run_calls(mg_client *c, const char *user, mg_client_call *calls, size_t n,
                      unsigned timeout_ms, bool may_refresh);
/* One request to each of the nodes idx[0..n) (-1: unknown, answered
 * MG_EUNAVAIL) at once, without retries, collected within timeout_ms;
 * calls[i] (overwritten) answers idx[i], its reply the caller's on MG_OK. */
void client_call_indices(mg_client *c, const int *idx, size_t n, int op, const void *body,
                         size_t body_len, unsigned timeout_ms, mg_client_call *calls);

/* ---- surveys (client_survey.c) ------------------------------------------ */

/* nng's thread: a surveyor socket's pipe came or went (arg: its
 * survey_watch). */
void client_survey_pipe_event(nng_pipe p, nng_pipe_ev ev, void *arg);

#endif
