/*
 * Private to cluster/group*.c: the group's struct and what its files share.
 *
 *   group.c        lifecycle, state, proposals and batching, barriers,
 *                  leadership transfer, membership
 *   group_apply.c  the way back: raft's FSM callbacks hand entries to the
 *                  applier (applier.h), snapshots and restore, and the
 *                  answers to the proposals of each applied entry
 */
#ifndef MG_CLUSTER_GROUP_INTERNAL_H
#define MG_CLUSTER_GROUP_INTERNAL_H

#include "applier.h"
#include "group.h"

/* One Raft entry carrying the proposals coalesced into it. From raft_apply
 * until raft applies the entry it is on the group's `flying` list; then the
 * applier job of the entry owns it. It is freed once raft is done with `req`
 * (batch_done) and its proposals have their answer. */
typedef struct group_batch {
    struct raft_apply req;
    mg_group *g;
    struct group_batch *next; /* on `flying` */
    bool attached;            /* its entry went to the applier */
    bool raft_done;           /* batch_done has run */
    bool answered;            /* the proposals' callbacks have run */
    size_t n;
    mg_group_proposal *props[]; /* n, in command order */
} group_batch;

struct mg_group {
    uv_loop_t *loop;
    uint64_t group_id;
    uint64_t replica_id;
    char address[MG_ADDRESS_MAX];
    mg_group_tunables tun;
    mg_group_peer *bootstrap;
    size_t n_bootstrap;

    mg_store *store;
    char *store_dir;
    bool store_guarded; /* written without fsync, under store_guard.h */
    mg_fsm fsm;
    mg_applier *applier;   /* applies committed entries off the loop (applier.h) */
    struct raft_fsm rfsm;  /* what raft calls: hands entries to the applier */
    uint64_t snapshot_seq; /* applier jobs the snapshot being taken must hold */
    struct raft_uv_transport transport;
    struct raft_io io;
    struct raft raft;
    bool raft_inited;

    uv_idle_t flush; /* runs while proposals wait and the pipeline has room */
    mg_group_proposal *head, *tail;
    size_t queued;
    unsigned inflight;
    group_batch *flying; /* proposed, not yet applied by raft */

    struct raft_transfer transfer;
    bool transferring;
    mg_group_transfer_cb transfer_cb;
    void *transfer_arg;

    bool closing;
    int pending_closes;
    mg_group_close_cb close_cb;
    void *close_arg;
};

/* group_apply.c */

/* Fills g->rfsm, the FSM raft is given (FSM version 3: async snapshots). */
void group_fsm_init(mg_group *g);

/* The applier's done callback (arg: the group). */
void group_on_applied(const mg_applier_job *job, void *arg);

/* raft_apply's callback for a batch. */
void group_batch_done(struct raft_apply *req, int status, void *result);

/* Calls every proposal's callback of b with `code` (nothing applied). */
void group_fail_batch(group_batch *b, int code);

/* Puts a batch just given to raft_apply on the `flying` list. */
void group_flying_put(mg_group *g, group_batch *b);

/* group.c */

/* Starts the flush when proposals wait and the pipeline has room. */
void group_schedule_flush(mg_group *g);

#endif
