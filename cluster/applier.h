/*
 * The applier of a group replica: applies committed entries to the store on
 * a thread of its own, in log order, so that the loop that runs raft never
 * waits for LMDB (the writes of an entry and the fdatasync of its commit).
 *
 * Why: raft 0.15 applies on the loop, and a follower applies the entries it
 * learns are committed before it acknowledges the entries it has just
 * persisted. With apply on the loop, every round trip of the leader waited
 * for a follower's apply of the previous entry and then for its own; with
 * the applier the follower acknowledges at once and both stores are written
 * while the loop replicates the next entry.
 *
 * The group pushes each entry from raft's apply callback (mg_applier_push
 * copies it: raft may free its log entries before the applier gets to them)
 * and markers (barriers); jobs complete in the order they were pushed, and
 * `done` is called for each on the loop. A job's result lives until `done`
 * returns.
 *
 * An apply that fails (MG_EIO, MG_EFULL, MG_ENOMEM: nothing was applied) is
 * retried after a pause until it succeeds or the applier stops, as raft
 * would retry an entry whose apply failed. Entries left unapplied at stop
 * complete with MG_ESHUTDOWN; raft's log still has them and replays them at
 * the next start.
 *
 * Threads: push, mark, drain, stop and the accessors on the loop thread;
 * mg_applier_wait on any thread but the applier's.
 */
#ifndef MG_CLUSTER_APPLIER_H
#define MG_CLUSTER_APPLIER_H

#include "../lib/error.h"
#include "../lib/histogram.h"
#include "fsm.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct mg_applier mg_applier;

enum mg_applier_job_kind { MG_APPLIER_APPLY = 1, MG_APPLIER_MARK };

/* What `done` sees of a job (read-only; valid during the call). */
typedef struct mg_applier_job {
    int kind;             /* enum mg_applier_job_kind */
    uint64_t index;       /* the entry's raft index (MARK: as pushed) */
    void *owner;          /* as pushed: who waits for this job, or NULL */
    int status;           /* MG_OK, or why the entry is not applied */
    mg_fsm_result result; /* APPLY with status MG_OK: the FSM's result */
} mg_applier_job;

typedef void (*mg_applier_done_cb)(const mg_applier_job *job, void *arg);

/* Starts the thread. fsm is borrowed (the applier is its only caller of
 * apply from then on). done(job, arg) runs on loop for every job, in order.
 * apply_hist (borrowed, NULL = none; must outlive the applier, i.e. until
 * the stop callback) gets the time of each entry the store applied, taken
 * around mg_fsm_apply_into on the applier's thread (mg_hist_record: other
 * appliers may share it). Entries the store skipped (already applied: a
 * replay after a restart), refused entries and failed attempts (retried)
 * are not recorded. */
int mg_applier_start(uv_loop_t *loop, mg_fsm *fsm, mg_hist *apply_hist, mg_applier_done_cb done,
                     void *arg, mg_applier **out, mg_error *err);

/* Queues the entry at `index` (buf is copied). When more than a bounded
 * amount is queued, waits (up to 100 ms) for the applier first, so that a
 * replica replaying a long log holds a few entries in memory, not all of
 * them. Nothing is queued on error: MG_EBUSY (no room in time: the applier
 * is stuck or slow), MG_ENOMEM, MG_ESHUTDOWN when stopping. */
int mg_applier_push(mg_applier *a, uint64_t index, const void *buf, size_t len, void *owner);

/* Queues a marker: it completes once every job queued before it has. */
int mg_applier_mark(mg_applier *a, uint64_t index, void *owner);

/* Number of jobs queued so far (a sequence: the n'th job pushed is n). */
uint64_t mg_applier_queued(const mg_applier *a);

/* True when every job queued has completed and been delivered to `done`. */
bool mg_applier_idle(const mg_applier *a);

/* Index of the last job delivered to `done` (0 before the first). */
uint64_t mg_applier_last_done(const mg_applier *a);

/* Waits until job number `seq` has been applied (not yet delivered). Returns
 * false when it was not applied (the applier stopped first). Any thread but
 * the applier's; the loop may call it (the applier does not need the loop). */
bool mg_applier_wait(mg_applier *a, uint64_t seq);

typedef void (*mg_applier_stop_cb)(void *arg);

/* Applies what is queued (stopping the retries of a failing apply), joins
 * the thread, delivers the remaining completions, closes its handle and
 * frees the applier; then cb(arg). No other call after this one. */
void mg_applier_stop(mg_applier *a, mg_applier_stop_cb cb, void *arg);

#endif
