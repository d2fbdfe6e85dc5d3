/*
 * Private to storage/store*.c: the store's struct and the helpers its files
 * share. Nothing outside storage/ includes this.
 *
 * Locks (taken in this order, never the other way round):
 *
 *   write_mu    serializes writers (apply, install). Every thread that takes
 *               env_lock or index_lock exclusively holds write_mu first.
 *   env_lock    rwlock around the LMDB environment. Every read transaction is
 *               opened and closed while it is held shared; map growth
 *               (mdb_env_set_mapsize needs no live transaction in the
 *               process) and install (closes and reopens the env) hold it
 *               exclusively. The writer's own transaction does not take it:
 *               only write_mu holders ever take it exclusively.
 *   index_lock  rwlock that makes a batch atomic for searches: the writer
 *               holds it exclusively from just before commit until the
 *               index has caught up, and a search holds it shared while it
 *               reads filter sets and scans, so the DB state it filters with
 *               and the index it scans are the same committed state.
 *
 * Both rwlocks prefer writers, so a stream of readers cannot starve apply;
 * the price is that a thread must never take either of them shared twice.
 */
#ifndef MG_STORE_INTERNAL_H
#define MG_STORE_INTERNAL_H

#include "store.h"

#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>

#define STORE_MAGIC "memgrid-store"
#define STORE_DATA_FILE "data.mdb"
#define STORE_INSTALL_FILE "install.mdb.tmp"
/* meta key prefix of a cube's memory count: "count/" cube_id → u64 LE */
#define STORE_COUNT_PREFIX "count/"
/* Limits of a "sys" record (MG_STORE_SYS_PUT). */
#define STORE_SYS_KEY_MAX 64
#define STORE_SYS_VALUE_MAX ((size_t)1 << 20)
/* cube_id '\0' id[16] */
#define STORE_MEM_KEY_MAX (MG_CUBE_ID_MAX + 1 + 16)

/* Named databases, in the order the digest visits them (meta is not hashed). */
enum store_db {
    STORE_DB_META = 0,
    STORE_DB_CUBES,
    STORE_DB_MEMORIES,
    STORE_DB_VECTORS,
    STORE_DB_MEMIDS,
    STORE_DB_USERS,
    STORE_DB_SYS, /* cluster records (MG_STORE_SYS_PUT): key → value as given */
    STORE_DB_COUNT_
};

extern const char *const store_db_names[STORE_DB_COUNT_];

/* Dead rows the writer has left in one cube's index arena (see
 * store_dead_note). */
struct store_dead {
    char cube_id[MG_CUBE_ID_MAX + 1];
    uint64_t rows;
};

struct mg_store {
    char *dir;
    char *data_path; /* dir/data.mdb, for messages and install */
    MDB_env *env;
    MDB_dbi dbi[STORE_DB_COUNT_];
    unsigned env_flags;
    size_t map_size; /* current */
    size_t map_max;  /* growth ceiling */
    bool int8;
    mg_index *index;
    _Atomic uint64_t applied; /* mirror of meta "applied", read without a txn */
    struct store_dead *dead;  /* sorted by cube id; only touched under write_mu */
    size_t n_dead, cap_dead;
    pthread_mutex_t write_mu;
    pthread_rwlock_t env_lock;
    pthread_rwlock_t index_lock;
};

/* Translates an LMDB (or errno) code met while doing `what` on the file
 * `path` into the error space, with mdb_strerror's text and the path in the
 * message. Returns the code. */
int store_lmdb_error(mg_error *err, int rc, const char *what, const char *path);

/* Opens env (already created and configured) in s->dir, checks or creates the
 * meta records and fills dbi[] and *applied. `path` names the file in
 * messages. `create` allows initializing an empty environment. */
int store_env_check(MDB_env *env, const char *path, bool create, MDB_dbi dbi[STORE_DB_COUNT_],
                    uint64_t *applied, mg_error *err);

/* Builds a new index from the `vectors` database of env (a read transaction
 * is opened inside; the caller makes that safe). */
int store_index_build(MDB_env *env, MDB_dbi vectors, bool int8, const char *path, mg_index **out,
                      mg_error *err);

/* Reloads one cube's vectors into the index from txn (drops it first). */
int store_index_reload_cube(mg_index *ix, MDB_txn *txn, MDB_dbi vectors, const char *cube_id,
                            mg_error *err);

/* The index does not compact by itself: the writer counts the rows it kills
 * (removals and replacements) per cube and, after a batch, compacts the cubes
 * where they outnumber the live ones. All under write_mu. */
void store_dead_note(mg_store *s, const char *cube_id, uint64_t rows);
void store_dead_forget(mg_store *s, const char *cube_id);
void store_dead_clear(mg_store *s);
/* Compacts the cubes that are due; call with index_lock released. */
void store_dead_compact(mg_store *s);

/* Key of a memory or its vector: cube_id '\0' id. Returns the key length. */
size_t store_mem_key(uint8_t key[STORE_MEM_KEY_MAX], const char *cube_id, size_t cube_len,
                     const uint8_t id[16]);

/* Checks a stored vector (msgpack bin of little-endian float32) and finds its
 * bytes (*raw, inside val, unaligned) and dimension. MG_ECORRUPT when
 * malformed. */
int store_vector_parse(const MDB_val *val, const uint8_t **raw, uint32_t *dim);

/* Copies dim little-endian floats from raw into out (aligned, host order). */
void store_vector_copy(float *out, const uint8_t *raw, uint32_t dim);

/* Packs a vector as the store keeps it. */
int store_vector_pack(msgpack_packer *pk, const float *vec, uint32_t dim);

/* Visits the memories of one cube in id order, starting after `after` (16
 * bytes or NULL). visit returns 0 to go on, 1 to stop, or an error code
 * (returned as is). An LMDB failure is translated. */
typedef int (*store_mem_visit_fn)(void *arg, const uint8_t id[16], const MDB_val *record);
int store_cube_scan(const mg_store *s, MDB_txn *txn, const char *cube_id, const uint8_t *after,
                    store_mem_visit_fn visit, void *arg, mg_error *err);

/* The key of meta's count record of a cube: "count/" cube_id. */
size_t store_count_key(char key[sizeof STORE_COUNT_PREFIX + MG_CUBE_ID_MAX], const char *cube_id);

/* MG_EIO when a failed install left the store without an environment (only
 * another install can bring it back). Call with env_lock or write_mu held. */
int store_env_lost(const mg_store *s, mg_error *err);

/* A read transaction under env_lock (shared). store_read_end aborts it and
 * releases the lock. */
int store_read_begin(mg_store *s, MDB_txn **txn, mg_error *err);
void store_read_end(mg_store *s, MDB_txn *txn);

/* MG_EINVAL unless cube_id is a valid cube id (NULL is not). */
int store_check_cube_id(const char *cube_id, mg_error *err);

/* u64 little-endian, for meta values. */
void store_put_u64le(uint8_t out[8], uint64_t v);
uint64_t store_get_u64le(const uint8_t in[8]);

/* Opens the live environment of s->dir with s's flags and map size into
 * s->env, s->dbi, s->applied and s->map_size. `create` allows initializing a
 * new store. On failure s->env is NULL. */
int store_env_open(mg_store *s, bool create, mg_error *err);

#endif
