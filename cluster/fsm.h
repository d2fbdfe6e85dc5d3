/*
 * The state machine of a shard-group replica: canonical/raft's struct
 * raft_fsm over one mg_store.
 *
 * apply    decodes an entry (command.h), turns its commands into store ops
 *          and applies them in one store transaction tagged with the entry's
 *          Raft index. The store skips an index at or below the one it has
 *          already applied, so replaying the log after a restart never
 *          applies twice. An entry or command that fails to decode is
 *          refused as a whole (per command) on every replica alike: apply
 *          never half-applies a command and never depends on anything but
 *          the entry bytes and the store state.
 * snapshot exports the store (mg_store_export_buf) behind a 16-byte header
 *          {"MGSNAP01", u64 LE store applied index}.
 * restore  installs an exported store atomically — unless the local store
 *          has already applied at least as far as the snapshot's header, in
 *          which case the install is skipped (committed entries never change, so
 *          a store further along the same log already holds everything the
 *          snapshot holds; Raft then replays the entries after the snapshot
 *          and the store skips those it has).
 *
 * The entry's index: raft 0.15's apply callback is not given the index.
 * The library applies committed entries in order and sets last_applied only
 * after apply returns (barrier and configuration entries advance it too), so
 * inside apply the entry's index is raft_last_applied(r) + 1. The FSM must
 * therefore be attached to its raft instance (mg_fsm_attach) before the
 * instance starts.
 *
 * Results: apply hands raft a pointer to an mg_fsm_result that the FSM owns
 * (a ring of MG_FSM_RESULTS slots reused in turn): it stays valid until that
 * many more entries have been applied. raft 0.15 calls the proposer's
 * callback right after apply, so a callback reads it in time; a callback
 * must copy what it keeps. Followers' results are never leaked because
 * nothing is allocated per entry.
 *
 * Threads: all calls on the loop thread that runs the raft instance.
 */
#ifndef MG_CLUSTER_FSM_H
#define MG_CLUSTER_FSM_H

#include "../lib/cmap.h"
#include "../lib/error.h"
#include "../storage/store.h"

#include <pthread.h>
#include <raft.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MG_FSM_RESULTS 256
#define MG_SNAPSHOT_HEADER_LEN 16

/* Outcome of one command of an entry.
 *
 * Cluster rules at apply (command.h), evaluated in log order, a slots_set
 * earlier in the same entry counting for the commands after it:
 *   - a cube-scoped command (cube_*, mem_*) for a slot the group does not
 *     own: code MG_EWRONGGROUP, n_ops 0, nothing of it applied;
 *   - meta_set whose expect is not the stored map's epoch: MG_EBUSY, n_ops 0;
 *     a map that does not decode or whose epoch is not expect + 1: MG_EINVAL;
 *     else one op (the map written);
 *   - slots_set: one op (the record written);
 *   - slots_drop: one op whose count is the number of cubes removed. */
typedef struct mg_cmd_outcome {
    int code;                /* MG_OK when every op applied; else the first failing
                              * op's code, or why the command was refused */
    size_t n_ops;            /* ops of the command: its items (mem_put/update), ids
                              * (mem_delete), else 1; 0 when refused undecoded */
    const int *op_codes;     /* per op: MG_OK, MG_ENOTFOUND, MG_EEXIST, MG_EDIM, ... */
    const size_t *op_counts; /* per op: records written or removed */
} mg_cmd_outcome;

typedef struct mg_fsm_result {
    uint64_t index;          /* the entry's Raft index */
    bool applied;            /* false when the store had applied it before */
    int code;                /* MG_OK, or why the whole entry was refused
                              * (MG_ECORRUPT, MG_EVERSION): then n_cmds is 0 */
    size_t n_cmds;
    mg_cmd_outcome *cmds;
    /* storage, reused between entries */
    int *codes_;
    size_t *counts_;
    size_t cap_ops_, cap_cmds_;
} mg_fsm_result;

typedef struct mg_fsm_stats {
    uint64_t entries_applied;   /* entries that changed the store */
    uint64_t entries_skipped;   /* entries at or below the store's index */
    uint64_t entries_refused;   /* entries that did not decode */
    uint64_t ops_applied;       /* store ops in applied entries */
    uint64_t snapshots;         /* snapshots taken */
    uint64_t restores;          /* snapshots installed */
    uint64_t restores_skipped;  /* snapshots not installed: store already further */
} mg_fsm_stats;

typedef struct mg_fsm {
    struct raft_fsm raft_fsm; /* give &fsm->raft_fsm to raft_init; data = this */
    mg_store *store;          /* borrowed; outlives the FSM */
    struct raft *raft;        /* set by mg_fsm_attach */
    size_t snapshot_warn_bytes; /* log a warning past this snapshot size (0 = 1 GiB) */
    mg_fsm_stats stats;
    mg_fsm_result results[MG_FSM_RESULTS];
    unsigned next_result;
    /* The slot record (meta.h) as of the last applied entry, for apply's
     * ownership check and for readers on other threads: published under
     * own_lock by apply (slots_set) and restore; loaded by mg_fsm_init. */
    pthread_mutex_t own_lock;
    bool own_restricted;      /* false: no slot record, every slot owned */
    uint64_t own_epoch;
    mg_slotset own;
} mg_fsm;

/* Whether the group owns the cube's slot as of the last applied entry
 * (always true for a group without a slot record); *epoch (may be NULL) gets
 * the record's epoch (0 without one). Any thread. */
bool mg_fsm_owns(mg_fsm *fsm, const char *cube_id, size_t len, uint64_t *epoch);

/* Initializes *fsm over `store` (borrowed). */
void mg_fsm_init(mg_fsm *fsm, mg_store *store);

/* Tells the FSM which raft instance it serves (for the entry index). Call
 * after raft_init and before raft_start. */
void mg_fsm_attach(mg_fsm *fsm, struct raft *r);

/* Frees the result storage. The store is not closed. */
void mg_fsm_close(mg_fsm *fsm);

/* Applies an entry at an explicit index (what the raft apply callback does
 * with raft_last_applied + 1; also for tests and tools). *result, when not
 * NULL, points to the FSM-owned result described above. Returns MG_OK when
 * the entry was consumed (applied, skipped or refused — see result->code);
 * an error (MG_EIO, MG_EFULL, MG_ENOMEM) means nothing changed and the entry
 * must be applied again later. */
int mg_fsm_apply_at(mg_fsm *fsm, uint64_t index, const void *buf, size_t len,
                    mg_fsm_result **result, mg_error *err);

/* The same with a result the caller owns (zeroed before first use, reused
 * across calls; its storage is freed with mg_fsm_result_clear). This does
 * not touch the FSM's ring, so it may run on another thread than the one
 * that reads earlier results. */
int mg_fsm_apply_into(mg_fsm *fsm, uint64_t index, const void *buf, size_t len,
                      mg_fsm_result *res, mg_error *err);

/* Frees a caller-owned result's storage and zeroes it. */
void mg_fsm_result_clear(mg_fsm_result *res);

/* The snapshot as a header (MG_SNAPSHOT_HEADER_LEN bytes into hdr) and the
 * exported store (*data, malloc'd, *len bytes). Safe while applies run on
 * another thread: the copy is then at or past the index in the header. */
int mg_fsm_snapshot_export(mg_fsm *fsm, uint8_t hdr[MG_SNAPSHOT_HEADER_LEN], void **data,
                           size_t *len, mg_error *err);

/* Snapshot of the store in the format described above, as a malloc'd buffer
 * (caller frees; raft's default allocator is malloc). */
int mg_fsm_snapshot_buf(mg_fsm *fsm, void **buf, size_t *len, mg_error *err);

/* Restores from a snapshot buffer (not taken); *installed says whether the
 * store was replaced or already further along. */
int mg_fsm_restore_buf(mg_fsm *fsm, const void *buf, size_t len, bool *installed,
                       mg_error *err);

/* Translates an mg_errcode to the nearest raft code (for returning from raft
 * callbacks), and a raft code to an mg_errcode. */
int mg_fsm_raft_code(int mg_code);
int mg_raft_to_mg(int raft_code);

#endif
