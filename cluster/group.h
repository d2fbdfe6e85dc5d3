/*
 * One replica of a shard group at runtime: a canonical/raft instance with
 * raft_uv disk I/O and the raft_uv_tcp transport on a libuv loop, the FSM
 * (fsm.h) and the replica's store.
 *
 * Writes: mg_group_propose queues encoded commands; at the next loop turn the
 * queue is flushed — every proposal waiting is coalesced into as few Raft
 * entries as the size limit allows (tunables.batch_max_bytes), with at most
 * tunables.max_inflight entries between raft_apply and their apply callback.
 * While the pipeline is full, proposals keep queueing and the next entry
 * carries all of them, so batches grow with load and a lone write goes out
 * at once. A proposal's callback fires after its entry was applied on this
 * (the leader's) replica, with one outcome per command it proposed.
 *
 * Apply: committed entries are written to the store by the group's applier
 * thread (applier.h), in log order, not on the loop; callbacks (proposals,
 * barriers) still run on the loop, once the store holds what they wait for.
 * The store commits without fsync under the guard of store_guard.h.
 *
 * Lifecycle (libuv style): mg_group_open allocates and initializes,
 * mg_group_start bootstraps (when given a configuration; RAFT_CANTBOOTSTRAP
 * on a restart is normal) and starts Raft; mg_group_close is asynchronous and
 * frees the group after its callback returned. If a function that takes a
 * callback returns an error, the callback never fires.
 *
 * Threads: every function on the loop thread (the applier's thread is the
 * group's own).
 */
#ifndef MG_CLUSTER_GROUP_H
#define MG_CLUSTER_GROUP_H

#include "../lib/error.h"
#include "../lib/histogram.h"
#include "../storage/store.h"
#include "command.h"
#include "fsm.h"

#include <raft.h>
#include <raft/uv.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define MG_ADDRESS_MAX 64

typedef struct mg_group_tunables {
    unsigned election_timeout_ms;  /* 400: raft randomizes it to 1x-2x */
    unsigned heartbeat_timeout_ms; /* 100 */
    unsigned install_snapshot_timeout_ms; /* 30000 */
    unsigned snapshot_threshold;   /* 1024 entries applied since the last snapshot */
    unsigned snapshot_trailing;    /* 256 entries kept after a snapshot */
    bool pre_vote;                 /* true */
    size_t batch_max_bytes;        /* 256 KiB per entry (a larger single proposal goes
                                    * alone): entries this size pipeline (ARCHITECTURE.md) */
    unsigned max_inflight;         /* 4 entries proposed and not yet applied */
    unsigned connect_retry_ms;     /* 200 */
    int store_sync;                /* enum mg_store_sync: MG_STORE_SYNC_NONE (the Raft
                                    * log is the durable copy; a store the machine
                                    * stopped under is rebuilt from it: store_guard.h) */
} mg_group_tunables;

/* The defaults above. */
void mg_group_tunables_default(mg_group_tunables *t);

typedef struct mg_group_peer {
    uint64_t id;                    /* raft server id, > 0 */
    char address[MG_ADDRESS_MAX];   /* "IPv4:port" */
} mg_group_peer;

typedef struct mg_group_config {
    uint64_t group_id;
    uint64_t replica_id;            /* this replica's raft server id, > 0 */
    const char *address;            /* where this replica listens, "IPv4:port" */
    const char *raft_dir;           /* raft log and snapshots; created when missing */
    const char *store_dir;          /* the LMDB store; created when missing */
    const mg_group_peer *bootstrap; /* initial voters (this one included), or NULL to
                                     * start empty and wait to be added */
    size_t n_bootstrap;
    const mg_group_tunables *tunables; /* NULL = defaults */
    mg_hist *apply_hist;            /* NULL = none, or where the applier records the time
                                     * of each entry the store applied (applier.h);
                                     * borrowed: must outlive the group (until its close
                                     * callback). Several groups may share one. */
} mg_group_config;

typedef struct mg_group mg_group;

/* ---- lifecycle ---------------------------------------------------------- */

/* Opens the store and initializes raft on `loop` (not yet started). Copies
 * what it needs from cfg. */
int mg_group_open(uv_loop_t *loop, const mg_group_config *cfg, mg_group **out, mg_error *err);

/* Bootstraps when configured (an existing log gives RAFT_CANTBOOTSTRAP,
 * which is ignored) and starts raft. On error, close the group. */
int mg_group_start(mg_group *g, mg_error *err);

typedef void (*mg_group_close_cb)(mg_group *g, void *arg);

/* Fails queued proposals with MG_ESHUTDOWN, closes raft (in-flight entries
 * fail with MG_ESHUTDOWN or MG_EUNAVAIL), the I/O, the transport and the
 * store, calls cb (may be NULL) and frees g. */
void mg_group_close(mg_group *g, mg_group_close_cb cb, void *arg);

/* ---- state -------------------------------------------------------------- */

uint64_t mg_group_id(const mg_group *g);
uint64_t mg_group_replica_id(const mg_group *g);
bool mg_group_is_leader(mg_group *g);
/* RAFT_UNAVAILABLE, RAFT_FOLLOWER, RAFT_CANDIDATE or RAFT_LEADER. */
int mg_group_raft_state(mg_group *g);
/* Known leader (0 / NULL when none). The address lives until the next loop turn. */
void mg_group_leader(mg_group *g, uint64_t *id, const char **address);
uint64_t mg_group_last_applied(mg_group *g);
/* Borrowed pointers, valid until close. Reads may use the store directly. */
mg_store *mg_group_store(mg_group *g);
mg_fsm *mg_group_fsm(mg_group *g);
struct raft *mg_group_raft(mg_group *g);

/* ---- writes ------------------------------------------------------------- */

typedef struct mg_group_proposal mg_group_proposal;

/* status MG_OK: outcomes[0..n) match the proposed commands (check each
 * outcome's code). Otherwise nothing is known to be applied:
 *   MG_ENOTLEADER  refused before reaching the log (see mg_group_leader)
 *   MG_EUNAVAIL    leadership was lost while in flight: the write may or may
 *                  not be applied; retry with the same ids (puts are upserts)
 *   MG_ESHUTDOWN   the group is closing
 *   other          the entry could not be appended or was refused as a whole
 * `outcomes` lives for the duration of the call. */
typedef void (*mg_group_propose_cb)(mg_group_proposal *p, int status,
                                    const mg_cmd_outcome *outcomes, size_t n);

/* Caller-allocated; must stay valid until its callback has fired. */
struct mg_group_proposal {
    void *data;                     /* the caller's */
    /* private */
    mg_group_propose_cb cb;
    uint8_t *buf;                   /* encoded commands back to back (malloc'd) */
    size_t len;
    uint32_t n_cmds;
    mg_group_proposal *next;
};

/* Validates and encodes cmds[0..n) (not taken) and queues them as one
 * proposal. MG_ENOTLEADER when this replica is not the leader, MG_ESHUTDOWN
 * when closing, validation errors from mg_cmd_validate; then cb never fires. */
int mg_group_propose(mg_group *g, mg_group_proposal *p, const mg_cmd *cmds, size_t n,
                     mg_group_propose_cb cb, mg_error *err);

/* Proposals queued and entries in flight (for tests and stats). */
size_t mg_group_queued(const mg_group *g);
unsigned mg_group_inflight(const mg_group *g);

/* ---- barrier, leadership, membership ----------------------------------- */

typedef struct mg_group_barrier_req mg_group_barrier_req;
typedef void (*mg_group_barrier_cb)(mg_group_barrier_req *b, int status);
struct mg_group_barrier_req {
    void *data;
    /* private */
    struct raft_barrier req;
    mg_group *g;
    mg_group_barrier_cb cb;
};

/* Appends a barrier; cb(MG_OK) once every entry before it is applied here:
 * reads after that see every write acknowledged before the call (strong
 * reads). MG_ENOTLEADER when not the leader. */
int mg_group_barrier(mg_group *g, mg_group_barrier_req *b, mg_group_barrier_cb cb,
                     mg_error *err);

typedef void (*mg_group_transfer_cb)(mg_group *g, void *arg);

/* Hands leadership to replica `target` (0 = the most up-to-date voter); cb
 * fires when it took over or after an election timeout — check
 * mg_group_leader. MG_ENOTLEADER, MG_EBUSY (a transfer is running),
 * MG_ENOTFOUND (no such voter). */
int mg_group_transfer(mg_group *g, uint64_t target, mg_group_transfer_cb cb, void *arg,
                      mg_error *err);

typedef struct mg_group_change mg_group_change;
typedef void (*mg_group_change_cb)(mg_group_change *c, int status);
struct mg_group_change {
    void *data;
    /* private */
    struct raft_change req;
    mg_group *g;
    uint64_t id;
    bool assign_next;
    mg_group_change_cb cb;
};

/* Adds replica `id` at `address` as a voter: raft_add (it joins as a spare),
 * then raft_assign(RAFT_VOTER), which lets it catch up (log or snapshot)
 * before it counts for quorum. cb(MG_OK) when the voter configuration is
 * committed. MG_ENOTLEADER, MG_EBUSY (a change is in progress), MG_EEXIST. */
int mg_group_add(mg_group *g, mg_group_change *c, uint64_t id, const char *address,
                 mg_group_change_cb cb, mg_error *err);

/* Removes replica `id` from the configuration (the replica itself keeps
 * running until closed). */
int mg_group_remove(mg_group *g, mg_group_change *c, uint64_t id, mg_group_change_cb cb,
                    mg_error *err);

#endif
