/*
 * The store of one group replica: one LMDB environment in its own directory
 * (data.mdb, lock.mdb) with named databases
 *
 *   meta      "magic" → "memgrid-store", "schema" → u32, "applied" → u64
 *             (last applied Raft index, written in the same transaction as
 *             the data it covers), "count/" cube_id → u64 (memories in the
 *             cube, kept by apply so that counting is one read); integers
 *             little-endian
 *   cubes     cube_id                → mg_cube record
 *   memories  cube_id '\0' id[16]    → mg_item record
 *   vectors   cube_id '\0' id[16]    → msgpack bin of float32 (as given)
 *   memids    id[16]                 → cube_id (find a memory by id alone)
 *   users     user_id                → mg_user record
 *
 * and a vector index (index.h) rebuilt from `vectors` when the store opens
 * and kept in step by every apply.
 *
 * Threads: every function may be called from any thread. Writes (apply,
 * install) are serialized inside; reads and searches run concurrently with
 * them and see a committed state, never part of a batch.
 *
 * Read results are copies the caller owns (mg_*_clear, free for arrays).
 */
#ifndef MG_STORE_H
#define MG_STORE_H

#include "../lib/error.h"
#include "filter.h"
#include "index.h"
#include "item.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MG_STORE_SCHEMA 1

typedef struct mg_store mg_store;

enum mg_store_sync {
    MG_STORE_SYNC_FULL = 0,  /* fsync on every commit (default) */
    MG_STORE_SYNC_META,      /* MDB_NOMETASYNC: a system crash may lose the last commits */
    MG_STORE_SYNC_NONE,      /* MDB_NOSYNC: only for stores whose Raft log is the durable copy */
};

typedef struct mg_store_options {
    size_t map_size;   /* initial map size; 0 = 64 MiB. Grows by doubling on MDB_MAP_FULL */
    size_t map_max;    /* growth ceiling; 0 = 1 TiB; past it writes fail with MG_EFULL */
    int sync;          /* enum mg_store_sync */
    bool int8;         /* keep int8 vectors for quantized scans (default false here:
                        * set it to use MG_SCAN_INT8) */
} mg_store_options;

/* Opens (creating when absent) the store in directory `dir` (created when
 * missing). A file that is not a memgrid store, is damaged, or has a newer
 * schema fails with MG_ECORRUPT / MG_EVERSION and a message naming the path.
 * opts may be NULL. */
int mg_store_open(const char *dir, const mg_store_options *opts, mg_store **out, mg_error *err);

/* Closes and frees. No call may be running on the store. */
void mg_store_close(mg_store *s);

/* Forces every committed write to disk (what MG_STORE_SYNC_NONE skips at
 * commit). MG_EIO. */
int mg_store_sync(mg_store *s, mg_error *err);

/* Removes the files of the (closed) store in `dir`, leaving the directory:
 * the next mg_store_open starts empty. Absent files are fine. MG_EIO. */
int mg_store_remove(const char *dir, mg_error *err);

/* Last applied Raft index (0 for a new store). */
uint64_t mg_store_applied(mg_store *s);

/* ---- writes ------------------------------------------------------------- */

enum mg_store_op_kind {
    MG_STORE_CUBE_PUT = 1,     /* cube (a known dimension stays: dim 0 keeps it, another
                                * one is MG_EDIM) */
    MG_STORE_CUBE_DELETE,      /* cube_id: removes the cube, its memories and vectors
                                * (its count: the memories removed) */
    MG_STORE_MEM_PUT,          /* cube_id, item, vec/dim (vec may be NULL); an id that
                                * another cube holds is MG_EEXIST */
    MG_STORE_MEM_DELETE,       /* cube_id, mem_id */
    MG_STORE_MEM_DELETE_WHERE, /* cube_id, filter: every memory of the cube that matches
                                * (a NULL filter matches all, as in mem_list) */
    MG_STORE_USER_PUT,         /* user */
    MG_STORE_USER_DELETE,      /* user_id */
    MG_STORE_MEM_PUT_ENCODED,  /* as MEM_PUT, with the memory already encoded: cube_id,
                                * record/record_len (an mg_item record as mg_item_pack
                                * writes it, stored as is), vec_le/dim (dim float32
                                * little-endian, any alignment; NULL for none). The
                                * record is checked (mg_store_record_check: the result
                                * is its code) but never decoded. mem_id, when not NULL,
                                * must be the record's id (else MG_EINVAL). */
    MG_STORE_SYS_PUT,          /* sys_key (≤ 64 bytes), record/record_len (≤ 1 MiB):
                                * replaces a record of the "sys" table (cluster
                                * records, cluster/meta.h); in snapshots and digests */
};

enum mg_store_op_flags {
    MG_STORE_CREATE_ONLY = 1,  /* *_PUT: MG_EEXIST when already present */
    MG_STORE_UPDATE_ONLY = 2,  /* *_PUT: MG_ENOTFOUND when absent */
};

/* One operation of a batch. Pointers are borrowed for the call only. */
typedef struct mg_store_op {
    int kind;                  /* enum mg_store_op_kind */
    int flags;                 /* enum mg_store_op_flags */
    const char *cube_id;
    const mg_cube *cube;
    const mg_item *item;
    const float *vec;
    uint32_t dim;
    const uint8_t *mem_id;     /* 16 bytes */
    const mg_filter *filter;
    const mg_user *user;
    const char *user_id;
    const void *record;        /* MEM_PUT_ENCODED */
    size_t record_len;
    const void *vec_le;        /* MEM_PUT_ENCODED: dim float32, little-endian, unaligned */
    const char *sys_key;       /* SYS_PUT */
} mg_store_op;

/* Checks an encoded memory record (mg_item_pack's format) without decoding
 * it: accepts what mg_item_decode accepts and gives the same code otherwise
 * (MG_ECORRUPT malformed, MG_EVERSION newer record version, MG_EINVAL /
 * MG_ETOOBIG what mg_item_validate refuses), allocating nothing. A record
 * whose metadata is not in its shortest encoding is measured as encoded here
 * (mg_item_validate measures the re-encoding). On MG_OK *id, when id is not
 * NULL, points at the record's 16-byte id inside rec. */
int mg_store_record_check(const void *rec, size_t len, const uint8_t **id, mg_error *err);

/* Applies ops in order in one LMDB transaction together with Raft `index`.
 *
 * Each op gets its own outcome in results[i] (MG_OK, or MG_ENOTFOUND for a
 * missing cube or memory, MG_EEXIST, MG_EDIM for a vector whose dimension is
 * not the cube's, MG_EINVAL for an invalid record); `counts[i]`, when counts
 * is not NULL, gets the number of records the op removed or wrote. A failed
 * op changes nothing; the others still apply. This is deterministic: the same
 * batch on the same state gives the same results on every replica.
 *
 * When index is not 0 and not above mg_store_applied(), nothing changes,
 * every results[i] is MG_OK and *applied (when not NULL) is false: replaying
 * a log after a restart is safe. index 0 applies without touching the stored
 * index (stores used without Raft).
 *
 * Returns MG_OK when the transaction committed. Any other return (MG_EIO,
 * MG_EFULL past map_max, MG_ENOMEM) means nothing was applied, neither data
 * nor index. MDB_MAP_FULL grows the map and retries the whole batch. */
int mg_store_apply(mg_store *s, uint64_t index, const mg_store_op *ops, size_t n, int *results,
                   size_t *counts, bool *applied, mg_error *err);

/* ---- reads -------------------------------------------------------------- */

/* MG_ENOTFOUND when absent. */
int mg_store_cube_get(mg_store *s, const char *cube_id, mg_cube *out, mg_error *err);

/* Every cube, sorted by id: *cubes is a malloc'd array of *n cubes; free each
 * with mg_cube_clear and the array with free. */
int mg_store_cube_list(mg_store *s, mg_cube **cubes, size_t *n, mg_error *err);

/* Memories in a cube (0 when the cube is absent or empty). */
int mg_store_mem_count(mg_store *s, const char *cube_id, uint64_t *count, mg_error *err);

/* One memory. vec/dim may be NULL; when given, *vec is a malloc'd copy of the
 * stored vector (NULL, 0 when it has none). MG_ENOTFOUND when absent. */
int mg_store_mem_get(mg_store *s, const char *cube_id, const uint8_t id[16], mg_item *out,
                     float **vec, uint32_t *dim, mg_error *err);

/* Which memory mg_store_mem_visit reads. */
typedef struct mg_store_mem_ref {
    const char *cube_id;
    const uint8_t *id; /* 16 bytes */
} mg_store_mem_ref;

/* Called by mg_store_mem_visit for each memory found, in the order asked (i:
 * its index in refs). record/record_len: the encoded mg_item record exactly
 * as stored (written by apply, which checked it); vec_le/dim: its vector as
 * stored (dim float32, little-endian, unaligned), NULL/0 when vectors were not
 * asked for or it has none. Every pointer is borrowed from the store's memory
 * map and valid only during the call: copy what must outlive it. The call
 * runs inside a read transaction and must not call into the store. Return
 * MG_OK to go on; anything else stops the walk and is returned. */
typedef int (*mg_store_mem_fn)(void *arg, size_t i, const void *record, size_t record_len,
                               const void *vec_le, uint32_t dim);

/* Reads n memories, with their vectors when `vecs`, in one read transaction
 * (one committed state), without decoding them: the fast path for forwarding
 * records (the search's fetch of its hits). A memory that is absent is
 * skipped (fn is not called for it). MG_EINVAL for an invalid cube id (then
 * nothing is read), MG_ECORRUPT for a malformed stored vector, an LMDB
 * failure translated, or fn's own code. */
int mg_store_mem_visit(mg_store *s, const mg_store_mem_ref *refs, size_t n, bool vecs,
                       mg_store_mem_fn fn, void *arg, mg_error *err);

/* The cube that holds memory `id`, copied into cube_id (MG_CUBE_ID_MAX + 1
 * bytes). MG_ENOTFOUND when no cube does. */
int mg_store_mem_find(mg_store *s, const uint8_t id[16], char *cube_id, mg_error *err);

/* A page of a cube's memories in id order: those after `after` (16 bytes, or
 * NULL to start), matching `filter` (NULL = all), at most `limit`. *items is
 * a malloc'd array of *n items (free each with mg_item_clear, then the
 * array). *more says whether more remain; pass the last item's id as `after`
 * to continue. */
int mg_store_mem_list(mg_store *s, const char *cube_id, const mg_filter *filter,
                      const uint8_t *after, size_t limit, mg_item **items, size_t *n, bool *more,
                      mg_error *err);

int mg_store_user_get(mg_store *s, const char *user_id, mg_user *out, mg_error *err);

/* A record of the "sys" table: *val malloc'd (the caller frees), *len bytes.
 * MG_ENOTFOUND when absent. */
int mg_store_sys_get(mg_store *s, const char *key, void **val, size_t *len, mg_error *err);

/* ---- search ------------------------------------------------------------- */

typedef struct mg_store_query {
    const float *vec;
    uint32_t dim;
    const char *const *cube_ids;
    size_t n_cubes;
    const mg_filter *const *filters; /* per cube (parallel to cube_ids, entries may be
                                      * NULL), or NULL for none */
    size_t k;
    int scan;                        /* enum mg_scan (MG_SCAN_INT8 needs opts.int8) */
    float *vecs;                     /* NULL, or room for k × dim floats: hit i's vector,
                                      * as the index holds it (normalized), at
                                      * vecs + i × dim (mg_index_query.vecs) */
} mg_store_query;

/* Top-k over the cubes (absent cubes give nothing), filters applied during
 * the scan. hits has capacity q->k; best first. */
int mg_store_search(mg_store *s, const mg_store_query *q, mg_index_hit *hits, size_t *n_hits,
                    mg_error *err);

/* ---- snapshots ---------------------------------------------------------- */

/* Writes a compact, consistent copy of the environment (mdb_env_copyfd2 with
 * MDB_CP_COMPACT) to `fd`, which must be a regular file or pipe. */
int mg_store_export_fd(mg_store *s, int fd, mg_error *err);

/* The same copy into a new malloc'd buffer (*buf, *len; caller frees). */
int mg_store_export_buf(mg_store *s, void **buf, size_t *len, mg_error *err);

/* Replaces the whole store with an exported copy, atomically: the copy is
 * written beside the live file, checked (opens, right magic and schema),
 * synced and renamed over it, and the index is rebuilt. On any error the
 * store is unchanged. Concurrent reads wait for it. */
int mg_store_install_buf(mg_store *s, const void *buf, size_t len, mg_error *err);

/* XXH3-64 over every record of cubes, memories, vectors, memids and users in
 * key order (not meta): equal digests mean equal data. */
int mg_store_digest(mg_store *s, uint64_t *digest, mg_error *err);

/* Bytes in use and map size, for stats. */
int mg_store_stat(mg_store *s, size_t *used, size_t *map_size, mg_error *err);

#endif
