/*
 * Internals of the node shared by its files: node.c (lifecycle, loop thread,
 * leader snapshots, the membership record), groups.c (the table of hosted groups, opening and
 * closing replicas at run time, their "replica" files), cluster.c (the
 * cluster ops: META_GET, NODE_INFO, GROUP_OPEN/CLOSE/MEMBER, BARRIER),
 * rpc.c (nng servers, envelope, dispatch, replies), write.c (WRITE on the
 * loop), read.c (point reads and STATUS on the workers), search.c (SEARCH),
 * workers.c (the thread pool).
 *
 * Hosted groups live in a table of fixed capacity whose slots are never
 * moved nor freed while the node runs, so a node_group pointer taken on any
 * thread stays valid. A slot keeps its group id for good (a group closed
 * and opened again reuses it); `hosted` says whether it holds a replica now.
 * A replica's store and FSM are published in the slot under store_lock
 * (write) and cleared under it before the replica closes: a reader checks
 * ng->store under node_stores_enter, never keeps it past node_stores_leave.
 */
#ifndef MG_NODE_INTERNAL_H
#define MG_NODE_INTERNAL_H

#include "../cluster/host.h"
#include "../lib/cmap.h"
#include "../lib/metrics.h"
#include "../lib/wire.h"
#include "node.h"
#include "workers.h"

#include <nng/nng.h>
#include <pthread.h>
#include <stdatomic.h>
#include <uv.h>

/* ---- hosted groups and their published state --------------------------- */

typedef struct node_ctx node_ctx;

typedef struct node_group {
    uint64_t group_id; /* fixed once the slot is taken */
    uint64_t replica_id;
    atomic_bool hosted; /* a replica is open in this slot (any thread) */
    mg_group *g;        /* loop thread only; NULL when not hosted */
    mg_store *store;    /* any thread, under node.store_lock (read); NULL
                         * when not hosted */
    mg_fsm *fsm;        /* the same (mg_fsm_owns) */
    /* loop only: a GROUP_CLOSE is closing the replica; the requests waiting
     * for it (answered once it closed) and whether to remove its files */
    bool closing;
    bool destroy;
    node_ctx *close_waiters;
    /* loop: removing the files of a closed replica runs on libuv's thread
     * pool (a store can be gigabytes; unlinking it must not stall Raft) */
    uv_work_t destroy_work;
    int destroy_rc;
    mg_error destroy_err;
    mg_node_group_status pub;  /* under node.snap_lock */
    mg_node_group_status seen; /* loop only: what was last published */
    /* loop only: the barrier a new leader appends before it serves reads */
    mg_group_barrier_req ready_barrier;
    bool barrier_pending;
    uint64_t barrier_term; /* term the last barrier was appended in */
    uint64_t ready_term;   /* term whose barrier applied */
    struct mg_node *node;
} node_group;

/* ---- the membership record (node.h "Membership") ------------------------ */

typedef struct node_membership {
    char cluster[MG_CMAP_CLUSTER_MAX];                /* "" = belongs to none */
    char meta[MG_CMAP_REPLICAS_MAX][MG_CMAP_URL_MAX]; /* meta group rpc URLs (hints) */
    uint32_t n_meta;
} node_membership;

/* ---- one request in flight, tied to one nng context --------------------- */

enum ctx_state { CTX_IDLE = 0, CTX_RECV, CTX_BUSY, CTX_SEND, CTX_DONE };

typedef void (*node_ctx_fn)(node_ctx *c);

typedef struct search_req search_req; /* search.c */

struct node_ctx {
    mg_node *node;
    nng_ctx ctx;
    nng_aio *aio;
    bool survey; /* respondent context (else rep) */
    bool opened;
    atomic_int state; /* enum ctx_state */

    /* the request being served */
    nng_msg *msg; /* request message; env points into it */
    mg_wire_req env;
    uint64_t recv_ns;
    uint64_t deadline_ns;          /* absolute, mg_clock_mono_ns() */
    char user[MG_USER_ID_MAX + 1]; /* env.user, NUL-terminated */

    /* hand-offs */
    node_ctx_fn loop_fn; /* what to run on the loop */
    node_ctx *loop_next;
    mg_worker_job job; /* what to run on a worker */

    /* WRITE (write.c) */
    mg_cmd *cmds;
    size_t n_cmds;
    int *kinds; /* kinds of the commands, kept for outcome messages */
    mg_group_proposal prop;
    uint64_t propose_ns;                 /* when it was proposed (stats.c) */
    char write_cube[MG_CUBE_ID_MAX + 1]; /* the first cube a command names ("" none) */

    /* SEARCH (search.c) */
    search_req *search;

    /* cluster ops (cluster.c) */
    uint64_t adm_id;                  /* GROUP_OPEN replica, GROUP_MEMBER id */
    char adm_address[MG_ADDRESS_MAX]; /* GROUP_OPEN / GROUP_MEMBER add address */
    mg_group_peer *adm_peers;         /* GROUP_OPEN bootstrap (malloc'd) */
    size_t adm_n_peers;
    bool adm_join;                         /* GROUP_OPEN without bootstrap */
    bool adm_destroy;                      /* GROUP_CLOSE */
    int adm_action;                        /* GROUP_MEMBER */
    char adm_cluster[MG_CMAP_CLUSTER_MAX]; /* GROUP_OPEN "cluster" ("" = not given) */
    node_membership *adm_claim;            /* NODE_INFO "claim" (malloc'd), or NULL */
    mg_group_change change;
    struct raft_change assign; /* promotion of an existing spare */
    mg_group_barrier_req barrier;
    uint64_t wait_until_ns; /* transfer: give up waiting then */
    node_ctx *wait_next;    /* node.waits, node_group.close_waiters */
};

/* ---- the node ----------------------------------------------------------- */

struct pending_create;                /* write.c: cube creations proposed and not yet applied */
typedef struct node_stats node_stats; /* stats.c */

struct mg_node {
    mg_node_config cfg; /* strings below are owned copies */
    char *data_dir, *rep_url, *respondent_url;
    mg_group_tunables tunables;

    char *raft_host, *advertise_rpc, *advertise_survey; /* owned copies */

    node_group *groups; /* groups_cap slots, fixed at start (see above) */
    size_t groups_cap;
    atomic_size_t n_groups; /* slots taken (only grows) */
    node_ctx *waits;        /* loop: requests waiting for a state (transfer) */

    /* loop thread */
    uv_loop_t loop;
    uv_async_t wake;
    uv_check_t publish;
    mg_host *host;
    pthread_t loop_thread;
    bool loop_started;
    bool host_closed;                       /* loop: groups closed (or closing) */
    struct pending_create *pending_creates; /* loop only */

    /* nng threads → loop */
    pthread_mutex_t q_lock;
    node_ctx *q_head, *q_tail;
    bool loop_open; /* under q_lock: uv_async_send allowed */
    int loop_cmd;   /* under q_lock: enum loop_cmd */

    /* published leader state */
    pthread_mutex_t snap_lock;
    pthread_cond_t snap_cond;

    /* stores, as seen from the workers */
    pthread_rwlock_t store_lock;
    bool stores_open; /* under store_lock */

    mg_workers *workers;

    /* nng */
    nng_socket rep, resp;
    bool rep_open, resp_open;
    node_ctx *ctxs;
    size_t n_ctxs;
    pthread_mutex_t ctx_lock;
    pthread_cond_t ctx_cond;
    size_t live_ctxs; /* under ctx_lock: contexts not yet CTX_DONE */
    atomic_bool stopping;

    node_stats *stats; /* metrics; set before the sockets open */

    /* The cluster this node belongs to, as in <data>/cluster. Held across
     * the file's write, so claims are serialized and readers never see a
     * record that is not on disk. */
    pthread_mutex_t member_lock;
    node_membership member; /* under member_lock */
};

enum loop_cmd { LOOP_RUN = 0, LOOP_CLOSE };

/* ---- node.c ------------------------------------------------------------- */

/* The hosted group with this id, or NULL. Any thread. */
node_group *node_group_find(mg_node *n, uint64_t group_id);
/* The slot of this group id, hosted or not, or NULL. Any thread. */
node_group *node_group_slot(mg_node *n, uint64_t group_id);
/* Slots taken (some may not be hosted: check `hosted`). Any thread. */
size_t node_group_slots(mg_node *n);
/* Republishes every group's state (loop thread). */
void node_publish(mg_node *n);

/* Loop thread: this replica leads the group and has applied a barrier of
 * its term (its state holds every acknowledged write). */
bool node_group_leads_ready(node_group *ng);

/* Copies the published state of a group (any thread). */
void node_group_snapshot(mg_node *n, const node_group *ng, mg_node_group_status *out);

/* Queues c to run fn on the loop thread. false when the loop is closing
 * (then the caller answers MG_ESHUTDOWN). Any thread. */
bool node_loop_post(mg_node *n, node_ctx *c, node_ctx_fn fn);

/* Queues c to run fn on a worker. Any thread. */
void node_worker_post(mg_node *n, node_ctx *c, node_ctx_fn fn);

/* Takes the store lock for reading; false (lock not held) when the stores
 * are closed. */
bool node_stores_enter(mg_node *n);
void node_stores_leave(mg_node *n);

/* Writes `text` to `path` so that a crash leaves the old file or the new
 * one, never a mix: <path>.tmp, fsync, rename over path, fsync of `dir`
 * (the directory holding path). MG_EIO naming the file. (groups.c's
 * "replica" file does the same with its own copy, from before this helper.) */
int node_file_write_atomic(const char *dir, const char *path, const char *text, mg_error *err);

/* Reads <data>/cluster into n->member at start: MG_OK (no file: belongs to
 * none), MG_ECORRUPT naming the file when it is not a record. */
int node_membership_load(mg_node *n, mg_error *err);

/* A copy of the record (any thread). */
void node_membership_get(mg_node *n, node_membership *out);

/* Applies a claim (any thread but the loop's: it writes and syncs a file):
 * no record yet or the same cluster id → the claim becomes the record
 * (written first, then published), MG_OK; another id → MG_EEXIST "node N
 * belongs to cluster <id>", nothing changed. MG_EIO when the file cannot be
 * written (the record is unchanged). */
int node_membership_claim(mg_node *n, const node_membership *claim, mg_error *err);

/* ---- rpc.c -------------------------------------------------------------- */

/* Opens the sockets and contexts and listens. On error everything opened is
 * closed again. */
int node_rpc_open(mg_node *n, mg_error *err);
/* Arms every context's first receive. */
void node_rpc_start(mg_node *n);
/* Stops taking requests: sets `stopping` and cancels the receives waiting;
 * requests in flight still get their answers. */
void node_rpc_quiesce(mg_node *n);
/* Waits up to timeout_ms until every context is done; true when they are. */
bool node_rpc_wait_idle(mg_node *n, unsigned timeout_ms);
/* Closes contexts and sockets and frees the aios; `idle` says whether every
 * context is done (else their memory is leaked rather than freed under a
 * request still in flight). */
void node_rpc_free(mg_node *n, bool idle);

/* Answers the request with an encoded reply (envelope + body) in sb, which
 * is consumed. Any thread. */
void node_reply(node_ctx *c, msgpack_sbuffer *sb);
/* Same, for a reply whose envelope carries `status` (packed by the caller
 * with mg_wire_rep_begin); only for logging. */
void node_reply_as(node_ctx *c, msgpack_sbuffer *sb, int status);
/* Same, for a reply already in an nng message (envelope + body), which is
 * consumed. */
void node_reply_msg(node_ctx *c, nng_msg *m, int status);
/* Answers with status `code` (not MG_OK), message and leader hint (0/NULL
 * when none). */
void node_reply_error(node_ctx *c, int code, const char *msg, uint64_t leader_id,
                      const char *leader);
/* Answers MG_EWRONGGROUP for a cube whose slot the group does not own, with
 * the group's slot-record epoch in the envelope. */
void node_reply_wrong_group(node_ctx *c, uint64_t group_id, const char *cube_id, uint64_t epoch);
/* Answers with err's code and message. */
void node_reply_err(node_ctx *c, const mg_error *err);
/* Ends a survey without answering. */
void node_reply_none(node_ctx *c);
/* Starts a reply with status MG_OK: the caller packs the body, then calls
 * node_reply. */
void node_reply_begin(node_ctx *c, msgpack_sbuffer *sb, msgpack_packer *pk);

/* True (and answers MG_ETIMEDOUT) when the request's deadline passed. */
bool node_expired(node_ctx *c);

/* Checks that the group of the request is hosted and, unless `follower`,
 * led by this replica; answers MG_ENOTFOUND / MG_ENOTLEADER and returns NULL
 * otherwise. Any thread (uses the snapshot). */
node_group *node_check_group(node_ctx *c, uint64_t group_id, bool follower);

/* "leader", "follower", "candidate" or "unavailable". */
const char *node_raft_state_name(int state);

/* Looks a top-level bool key up in a body map (false when absent or not a
 * bool). */
bool node_body_flag(const uint8_t *body, size_t len, const char *key);

/* ---- write.c / read.c / search.c ---------------------------------------- */

/* nng thread: decodes the WRITE body and queues it to the loop. */
void node_write_start(node_ctx *c);
/* Frees what a WRITE request holds. */
void node_write_clear(node_ctx *c);
/* Loop: forgets every pending creation (at close). */
void node_write_forget_all(mg_node *n);

/* Worker: CUBE_GET, CUBE_LIST, MEM_GET, MEM_LIST, MEM_COUNT, USER_GET. */
void node_read_run(node_ctx *c);
/* Worker: STATUS. */
void node_status_run(node_ctx *c);

/* Whether the group owns the cube's slot (mg_fsm_owns; true without an
 * FSM). Under node_stores_enter, or on the loop. */
bool node_group_owns(node_group *ng, const char *cube_id, uint64_t *epoch);

/* ---- groups.c ----------------------------------------------------------- */

/* Loop thread (or the starting thread before the loop runs): opens a
 * replica (bootstrap NULL to join), publishes it in the table and writes its
 * "replica" file. MG_EEXIST when hosted, MG_EBUSY while a close of it runs,
 * MG_EFULL when the table is full, else the host's errors. */
int node_group_open(mg_node *n, uint64_t group_id, uint64_t replica_id, const char *address,
                    const mg_group_peer *bootstrap, size_t n_bootstrap, mg_error *err);
/* Starting thread: opens every group of the data directory that has a
 * "replica" file and is not open yet (bootstrap NULL). */
int node_groups_reopen(mg_node *n, mg_error *err);
/* Loop: closes a hosted replica; `waiter` (may be NULL) is answered MG_OK
 * once it closed (and, with `destroy`, its directory was removed). A group
 * not hosted answers at once. The "replica" file is removed first, so a
 * restart does not reopen it. */
void node_group_close(mg_node *n, node_group *ng, bool destroy, node_ctx *waiter);

/* ---- cluster.c ---------------------------------------------------------- */

/* nng thread: start META_GET, NODE_INFO (a claim runs on a worker),
 * GROUP_OPEN, GROUP_CLOSE, GROUP_MEMBER, BARRIER. */
void node_cluster_start(node_ctx *c);
/* Frees what a cluster op holds. */
void node_cluster_clear(node_ctx *c);
/* Loop, every turn: answers waiting requests whose condition holds. */
void node_cluster_poll(mg_node *n);
/* Loop, at close: answers every waiting request MG_ESHUTDOWN. */
void node_cluster_fail_all(mg_node *n);

/* ---- stats.c ------------------------------------------------------------ */

/* Registers every series of the node's registry (groups must be filled in;
 * before the groups are opened, which record into the apply histogram).
 * MG_ENOMEM. */
int node_stats_open(mg_node *n, mg_error *err);
void node_stats_close(mg_node *n);
/* Counts the reply to c with `status` and records its service time (any
 * thread; lock-free). */
void node_stats_request(node_ctx *c, int status);
/* A write's proposal until applied on this leader; a search's scan. */
void node_stats_commit(mg_node *n, uint64_t ns);
void node_stats_scan(mg_node *n, uint64_t ns);
/* The histogram of stage "apply", which the node's groups record into from
 * their applier threads (mg_host_set_apply_hist); NULL before
 * node_stats_open. Lives until node_stats_close, which runs only after every
 * group has closed. */
mg_hist *node_stats_apply_hist(mg_node *n);
/* Worker: STATS. */
void node_stats_run(node_ctx *c);

/* nng thread: decodes a SEARCH and routes it (loop for strong, else worker). */
void node_search_start(node_ctx *c);
void node_search_clear(node_ctx *c);

#endif
