/*
 * The store: opening and checking the LMDB environment, the vector index
 * rebuilt from it, and the helpers the other store files share. Writes are in
 * store_apply.c, reads and search in store_read.c, snapshots and the digest
 * in store_snapshot.c. Locking is described in store_internal.h.
 */
#include "store_internal.h"

#include "../lib/log.h"
#include "../lib/mp.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DEFAULT_MAP_SIZE ((size_t)64 << 20)
#define DEFAULT_MAP_MAX ((size_t)1 << 40)
/* Readers are short read transactions on request threads; LMDB's default of
 * 126 slots is too few for a busy node. */
#define MAX_READERS 1024

const char *const store_db_names[STORE_DB_COUNT_] = {
    [STORE_DB_META] = "meta",       [STORE_DB_CUBES] = "cubes",   [STORE_DB_MEMORIES] = "memories",
    [STORE_DB_VECTORS] = "vectors", [STORE_DB_MEMIDS] = "memids", [STORE_DB_USERS] = "users",
    [STORE_DB_SYS] = "sys",
};

/* ---- shared helpers ----------------------------------------------------- */

int store_lmdb_error(mg_error *err, int rc, const char *what, const char *path)
{
    int code;
    switch (rc) {
    case MDB_MAP_FULL:
        code = MG_EFULL;
        break;
    case ENOMEM:
        code = MG_ENOMEM;
        break;
    case MDB_NOTFOUND:
        code = MG_ENOTFOUND;
        break;
    case MDB_INVALID:
    case MDB_VERSION_MISMATCH:
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
    case MDB_INCOMPATIBLE:
        code = MG_ECORRUPT;
        break;
    case MDB_READERS_FULL:
        code = MG_EBUSY;
        break;
    case MDB_TXN_FULL: /* a batch dirtied more pages than one transaction holds */
        code = MG_ETOOBIG;
        break;
    default:
        code = MG_EIO;
        break;
    }
    return mg_error_set(err, code, "%s: %s (%s)", what, mdb_strerror(rc), path);
}

int store_check_cube_id(const char *cube_id, mg_error *err)
{
    if (cube_id == NULL || !mg_cube_id_valid(cube_id, strnlen(cube_id, MG_CUBE_ID_MAX + 1)))
        return mg_error_set(err, MG_EINVAL, "cube id is missing or not valid");
    return MG_OK;
}

void store_put_u64le(uint8_t out[8], uint64_t v)
{
    for (int i = 0; i < 8; i++)
        out[i] = (uint8_t)(v >> (8 * i));
}

uint64_t store_get_u64le(const uint8_t in[8])
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | in[i];
    return v;
}

size_t store_mem_key(uint8_t key[STORE_MEM_KEY_MAX], const char *cube_id, size_t cube_len,
                     const uint8_t id[16])
{
    memcpy(key, cube_id, cube_len);
    key[cube_len] = '\0';
    memcpy(key + cube_len + 1, id, 16);
    return cube_len + 17;
}

size_t store_count_key(char key[sizeof STORE_COUNT_PREFIX + MG_CUBE_ID_MAX], const char *cube_id)
{
    size_t plen = sizeof STORE_COUNT_PREFIX - 1;
    size_t clen = strnlen(cube_id, MG_CUBE_ID_MAX);
    memcpy(key, STORE_COUNT_PREFIX, plen);
    memcpy(key + plen, cube_id, clen);
    return plen + clen;
}

int store_vector_pack(msgpack_packer *pk, const float *vec, uint32_t dim)
{
    size_t bytes = (size_t)dim * sizeof(float);
    if (msgpack_pack_bin(pk, bytes))
        return MG_ENOMEM;
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (msgpack_pack_bin_body(pk, vec, bytes))
        return MG_ENOMEM;
#else
    for (uint32_t i = 0; i < dim; i++) {
        uint32_t u;
        memcpy(&u, &vec[i], 4);
        uint8_t le[4] = {(uint8_t)u, (uint8_t)(u >> 8), (uint8_t)(u >> 16), (uint8_t)(u >> 24)};
        if (msgpack_pack_bin_body(pk, le, 4))
            return MG_ENOMEM;
    }
#endif
    return MG_OK;
}

int store_vector_parse(const MDB_val *val, const uint8_t **raw, uint32_t *dim)
{
    mg_mp_reader r;
    mg_mp_reader_init(&r, val->mv_data, val->mv_size);
    uint32_t len;
    if (mg_mp_read_bin(&r, raw, &len) || mg_mp_remaining(&r) != 0)
        return MG_ECORRUPT;
    if (len == 0 || len % sizeof(float) != 0 || len / sizeof(float) > MG_DIM_MAX)
        return MG_ECORRUPT;
    *dim = (uint32_t)(len / sizeof(float));
    return MG_OK;
}

void store_vector_copy(float *out, const uint8_t *raw, uint32_t dim)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    memcpy(out, raw, (size_t)dim * sizeof(float));
#else
    for (uint32_t i = 0; i < dim; i++) {
        const uint8_t *b = raw + 4 * (size_t)i;
        uint32_t u =
            (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
        memcpy(&out[i], &u, 4);
    }
#endif
}

int store_cube_scan(const mg_store *s, MDB_txn *txn, const char *cube_id, const uint8_t *after,
                    store_mem_visit_fn visit, void *arg, mg_error *err)
{
    size_t cl = strnlen(cube_id, MG_CUBE_ID_MAX + 1);
    if (cl > MG_CUBE_ID_MAX)
        return mg_error_set(err, MG_EINVAL, "cube id is longer than %d bytes", MG_CUBE_ID_MAX);
    uint8_t key[STORE_MEM_KEY_MAX];
    size_t klen;
    if (after != NULL) {
        klen = store_mem_key(key, cube_id, cl, after);
    } else {
        memcpy(key, cube_id, cl);
        key[cl] = '\0';
        klen = cl + 1;
    }
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, s->dbi[STORE_DB_MEMORIES], &cur);
    if (rc)
        return store_lmdb_error(err, rc, "opening a cursor", s->data_path);
    MDB_val k = {klen, key}, v;
    rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    if (rc == 0 && after != NULL && k.mv_size == klen && memcmp(k.mv_data, key, klen) == 0)
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    int ret = MG_OK;
    while (rc == 0) {
        const uint8_t *kb = k.mv_data;
        if (k.mv_size < cl + 1 || memcmp(kb, cube_id, cl) != 0 || kb[cl] != '\0')
            break; /* past the cube */
        if (k.mv_size != cl + 17) {
            ret = mg_error_set(err, MG_ECORRUPT, "memory key of %zu bytes in cube %s (%s)",
                               k.mv_size, cube_id, s->data_path);
            break;
        }
        int vr = visit(arg, kb + cl + 1, &v);
        if (vr == 1)
            break;
        if (vr != 0) {
            ret = vr;
            break;
        }
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    if (ret == MG_OK && rc != 0 && rc != MDB_NOTFOUND)
        ret = store_lmdb_error(err, rc, "scanning memories", s->data_path);
    mdb_cursor_close(cur);
    return ret;
}

int store_env_lost(const mg_store *s, mg_error *err)
{
    if (s->env != NULL)
        return MG_OK;
    return mg_error_set(err, MG_EIO, "%s: the store lost its file in a failed install",
                        s->data_path);
}

int store_read_begin(mg_store *s, MDB_txn **txn, mg_error *err)
{
    pthread_rwlock_rdlock(&s->env_lock);
    int ret = store_env_lost(s, err);
    if (ret) {
        pthread_rwlock_unlock(&s->env_lock);
        return ret;
    }
    int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, txn);
    if (rc) {
        pthread_rwlock_unlock(&s->env_lock);
        return store_lmdb_error(err, rc, "beginning a read transaction", s->data_path);
    }
    return MG_OK;
}

void store_read_end(mg_store *s, MDB_txn *txn)
{
    mdb_txn_abort(txn);
    pthread_rwlock_unlock(&s->env_lock);
}

/* ---- the index ---------------------------------------------------------- */

/* Adds every vector from the cursor's current position while keys start with
 * `prefix` (all of them when prefix_len is 0) to ix. */
static int index_load(mg_index *ix, MDB_cursor *cur, MDB_val *k, MDB_val *v, int rc,
                      const uint8_t *prefix, size_t prefix_len, const char *path, mg_error *err)
{
    float *buf = aligned_alloc(64, MG_DIM_MAX * sizeof(float));
    if (buf == NULL)
        return mg_error_set(err, MG_ENOMEM, "out of memory rebuilding the index");
    char cube_id[MG_CUBE_ID_MAX + 1];
    int ret = MG_OK;
    for (; rc == 0; rc = mdb_cursor_get(cur, k, v, MDB_NEXT)) {
        const uint8_t *kb = k->mv_data;
        if (prefix_len > 0 && (k->mv_size < prefix_len || memcmp(kb, prefix, prefix_len) != 0))
            break;
        size_t cl = k->mv_size >= 17 ? k->mv_size - 17 : 0;
        const uint8_t *raw;
        uint32_t dim;
        if (cl == 0 || cl > MG_CUBE_ID_MAX || kb[cl] != '\0' ||
            store_vector_parse(v, &raw, &dim) != MG_OK) {
            ret = mg_error_set(err, MG_ECORRUPT, "malformed vector record (%s)", path);
            break;
        }
        memcpy(cube_id, kb, cl);
        cube_id[cl] = '\0';
        store_vector_copy(buf, raw, dim);
        ret = mg_index_add(ix, cube_id, kb + cl + 1, buf, dim, err);
        if (ret) {
            mg_error_wrap(err, rc, "loading a vector of cube %s (%s)", cube_id, path);
            break;
        }
    }
    if (ret == MG_OK && rc != 0 && rc != MDB_NOTFOUND)
        ret = store_lmdb_error(err, rc, "reading vectors", path);
    free(buf);
    return ret;
}

int store_index_build(MDB_env *env, MDB_dbi vectors, bool int8, const char *path, mg_index **out,
                      mg_error *err)
{
    mg_index_options io = {.int8 = int8};
    mg_index *ix;
    int ret = mg_index_create(&io, &ix, err);
    if (ret)
        return ret;
    MDB_txn *txn;
    MDB_cursor *cur;
    int rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &txn);
    if (rc) {
        ret = store_lmdb_error(err, rc, "beginning a read transaction", path);
        goto err_destroy_index;
    }
    rc = mdb_cursor_open(txn, vectors, &cur);
    if (rc) {
        ret = store_lmdb_error(err, rc, "opening a cursor", path);
        goto err_abort_txn;
    }
    MDB_val k, v;
    rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
    ret = index_load(ix, cur, &k, &v, rc, NULL, 0, path, err);
    mdb_cursor_close(cur);
    if (ret)
        goto err_abort_txn;
    mdb_txn_abort(txn);
    *out = ix;
    return MG_OK;

err_abort_txn:
    mdb_txn_abort(txn);
err_destroy_index:
    mg_index_destroy(ix);
    return ret;
}

int store_index_reload_cube(mg_index *ix, MDB_txn *txn, MDB_dbi vectors, const char *cube_id,
                            mg_error *err)
{
    mg_index_drop_cube(ix, cube_id);
    size_t cl = strlen(cube_id);
    uint8_t prefix[MG_CUBE_ID_MAX + 1];
    memcpy(prefix, cube_id, cl);
    prefix[cl] = '\0';
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, vectors, &cur);
    if (rc)
        return store_lmdb_error(err, rc, "opening a cursor", cube_id);
    MDB_val k = {cl + 1, prefix}, v;
    rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    int ret = index_load(ix, cur, &k, &v, rc, prefix, cl + 1, cube_id, err);
    mdb_cursor_close(cur);
    return ret;
}

/* ---- index compaction ----------------------------------------------------- */

/* Below this many dead rows a cube is not worth rewriting. */
#define DEAD_MIN 256

static struct store_dead *dead_find(mg_store *s, const char *cube_id, size_t *pos)
{
    size_t lo = 0, hi = s->n_dead;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(s->dead[mid].cube_id, cube_id);
        if (c == 0) {
            *pos = mid;
            return &s->dead[mid];
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *pos = lo;
    return NULL;
}

void store_dead_note(mg_store *s, const char *cube_id, uint64_t rows)
{
    size_t pos = 0;
    struct store_dead *d = dead_find(s, cube_id, &pos);
    if (d == NULL) {
        if (s->n_dead == s->cap_dead) {
            size_t cap = s->cap_dead ? 2 * s->cap_dead : 16;
            struct store_dead *p = realloc(s->dead, cap * sizeof *p);
            if (p == NULL)
                return; /* only an optimization is lost */
            s->dead = p;
            s->cap_dead = cap;
        }
        memmove(&s->dead[pos + 1], &s->dead[pos], (s->n_dead - pos) * sizeof *s->dead);
        s->n_dead++;
        d = &s->dead[pos];
        snprintf(d->cube_id, sizeof d->cube_id, "%s", cube_id);
        d->rows = 0;
    }
    d->rows += rows;
}

void store_dead_forget(mg_store *s, const char *cube_id)
{
    size_t pos = 0;
    struct store_dead *d = dead_find(s, cube_id, &pos);
    if (d == NULL)
        return;
    memmove(d, d + 1, (s->n_dead - pos - 1) * sizeof *d);
    s->n_dead--;
}

void store_dead_clear(mg_store *s)
{
    s->n_dead = 0;
}

void store_dead_compact(mg_store *s)
{
    for (size_t i = 0; i < s->n_dead;) {
        struct store_dead *d = &s->dead[i];
        /* Half the arena dead: rewriting it costs about what the removals
         * since the last rewrite did, and scans stop paying for them. */
        if (d->rows < DEAD_MIN || d->rows < mg_index_count(s->index, d->cube_id)) {
            i++;
            continue;
        }
        mg_error e = {0};
        int rc = mg_index_compact(s->index, d->cube_id, &e);
        if (rc != MG_OK && rc != MG_ENOTFOUND) {
            mg_warn("store.index.compact", "cube=%s code=%s msg=\"%s\"", d->cube_id, mg_errname(rc),
                    e.msg);
            i++;
            continue;
        }
        memmove(d, d + 1, (s->n_dead - i - 1) * sizeof *d);
        s->n_dead--;
    }
}

/* ---- opening ------------------------------------------------------------ */

static int meta_put(MDB_txn *txn, MDB_dbi meta, const char *key, const void *val, size_t len)
{
    MDB_val k = {strlen(key), (void *)key}, v = {len, (void *)val};
    return mdb_put(txn, meta, &k, &v, 0);
}

/* Writes the meta records of a new store. */
static int meta_init(MDB_txn *txn, MDB_dbi meta)
{
    uint8_t schema[4] = {MG_STORE_SCHEMA & 0xff, 0, 0, 0};
    uint8_t applied[8] = {0};
    int rc = meta_put(txn, meta, "magic", STORE_MAGIC, strlen(STORE_MAGIC));
    if (rc == 0)
        rc = meta_put(txn, meta, "schema", schema, sizeof schema);
    if (rc == 0)
        rc = meta_put(txn, meta, "applied", applied, sizeof applied);
    return rc;
}

/* Checks magic and schema and reads the applied index. */
static int meta_check(MDB_txn *txn, MDB_dbi meta, const char *path, uint64_t *applied,
                      mg_error *err)
{
    MDB_val k = {5, "magic"}, v;
    int rc = mdb_get(txn, meta, &k, &v);
    if (rc == MDB_NOTFOUND || (rc == 0 && (v.mv_size != strlen(STORE_MAGIC) ||
                                           memcmp(v.mv_data, STORE_MAGIC, v.mv_size) != 0)))
        return mg_error_set(err, MG_ECORRUPT, "%s: not a memgrid store (no magic)", path);
    if (rc)
        return store_lmdb_error(err, rc, "reading meta", path);
    k = (MDB_val){6, "schema"};
    rc = mdb_get(txn, meta, &k, &v);
    if (rc == MDB_NOTFOUND || (rc == 0 && v.mv_size != 4))
        return mg_error_set(err, MG_ECORRUPT, "%s: memgrid store without a valid schema", path);
    if (rc)
        return store_lmdb_error(err, rc, "reading meta", path);
    const uint8_t *b = v.mv_data;
    uint32_t schema =
        (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
    if (schema == 0)
        return mg_error_set(err, MG_ECORRUPT, "%s: memgrid store with schema 0", path);
    if (schema > MG_STORE_SCHEMA)
        return mg_error_set(err, MG_EVERSION, "%s: store schema %u, this build reads up to %u",
                            path, schema, (unsigned)MG_STORE_SCHEMA);
    k = (MDB_val){7, "applied"};
    rc = mdb_get(txn, meta, &k, &v);
    if (rc == MDB_NOTFOUND) {
        *applied = 0;
        return MG_OK;
    }
    if (rc)
        return store_lmdb_error(err, rc, "reading meta", path);
    if (v.mv_size != 8)
        return mg_error_set(err, MG_ECORRUPT, "%s: malformed applied index", path);
    *applied = store_get_u64le(v.mv_data);
    return MG_OK;
}

int store_env_check(MDB_env *env, const char *path, bool create, MDB_dbi dbi[STORE_DB_COUNT_],
                    uint64_t *applied, mg_error *err)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(env, NULL, create ? 0 : MDB_RDONLY, &txn);
    if (rc)
        return store_lmdb_error(err, rc, "beginning a transaction", path);
    int ret;
    bool fresh = false;
    rc = mdb_dbi_open(txn, store_db_names[STORE_DB_META], 0, &dbi[STORE_DB_META]);
    if (rc == MDB_NOTFOUND && create) {
        /* No meta: a new environment, or somebody else's LMDB file. */
        MDB_dbi main_dbi;
        MDB_stat st;
        rc = mdb_dbi_open(txn, NULL, 0, &main_dbi);
        if (rc == 0)
            rc = mdb_stat(txn, main_dbi, &st);
        if (rc) {
            ret = store_lmdb_error(err, rc, "reading the main database", path);
            goto err_abort_txn;
        }
        if (st.ms_entries != 0) {
            ret =
                mg_error_set(err, MG_ECORRUPT, "%s: not a memgrid store (no meta database)", path);
            goto err_abort_txn;
        }
        rc = mdb_dbi_open(txn, store_db_names[STORE_DB_META], MDB_CREATE, &dbi[STORE_DB_META]);
        if (rc == 0)
            rc = meta_init(txn, dbi[STORE_DB_META]);
        if (rc) {
            ret = store_lmdb_error(err, rc, "creating the store", path);
            goto err_abort_txn;
        }
        fresh = true;
    } else if (rc == MDB_NOTFOUND || rc == MDB_INCOMPATIBLE) {
        ret = mg_error_set(err, MG_ECORRUPT, "%s: not a memgrid store (no meta database)", path);
        goto err_abort_txn;
    } else if (rc) {
        ret = store_lmdb_error(err, rc, "opening meta", path);
        goto err_abort_txn;
    }
    ret = meta_check(txn, dbi[STORE_DB_META], path, applied, err);
    if (ret)
        goto err_abort_txn;
    for (int i = STORE_DB_META + 1; i < STORE_DB_COUNT_; i++) {
        rc = mdb_dbi_open(txn, store_db_names[i], create ? MDB_CREATE : 0, &dbi[i]);
        if (rc == MDB_NOTFOUND || rc == MDB_INCOMPATIBLE) {
            ret = mg_error_set(err, MG_ECORRUPT, "%s: memgrid store without database %s", path,
                               store_db_names[i]);
            goto err_abort_txn;
        }
        if (rc) {
            ret = store_lmdb_error(err, rc, "opening a database", path);
            goto err_abort_txn;
        }
    }
    /* Commit even a read-only transaction: the dbi handles opened in it would
     * be closed by an abort. */
    rc = mdb_txn_commit(txn);
    if (rc)
        return store_lmdb_error(err, rc, fresh ? "creating the store" : "opening the store", path);
    return MG_OK;

err_abort_txn:
    mdb_txn_abort(txn);
    return ret;
}

static unsigned sync_flags(int sync)
{
    switch (sync) {
    case MG_STORE_SYNC_META:
        return MDB_NOMETASYNC;
    case MG_STORE_SYNC_NONE:
        return MDB_NOSYNC;
    default:
        return 0;
    }
}

int store_env_open(mg_store *s, bool create, mg_error *err)
{
    MDB_env *env;
    int rc = mdb_env_create(&env);
    if (rc)
        return store_lmdb_error(err, rc, "creating an environment", s->data_path);
    int ret;
    rc = mdb_env_set_maxdbs(env, STORE_DB_COUNT_ + 2);
    if (rc == 0)
        rc = mdb_env_set_maxreaders(env, MAX_READERS);
    if (rc == 0)
        rc = mdb_env_set_mapsize(env, s->map_size);
    if (rc) {
        ret = store_lmdb_error(err, rc, "configuring the environment", s->data_path);
        goto err_close_env;
    }
    rc = mdb_env_open(env, s->dir, s->env_flags, 0644);
    if (rc) {
        ret = store_lmdb_error(err, rc, "opening the environment", s->data_path);
        goto err_close_env;
    }
    uint64_t applied;
    ret = store_env_check(env, s->data_path, create, s->dbi, &applied, err);
    if (ret)
        goto err_close_env;
    MDB_envinfo info;
    mdb_env_info(env, &info);
    s->map_size = info.me_mapsize; /* the file may say more than we asked for */
    if (s->map_max < s->map_size)
        s->map_max = s->map_size;
    atomic_store(&s->applied, applied);
    s->env = env;
    return MG_OK;

err_close_env:
    mdb_env_close(env);
    return ret;
}

/* An install that stopped half-way leaves its copy or the old file's backup
 * link beside data.mdb; data.mdb itself is whole either way. */
static void remove_leftovers(const char *dir)
{
    static const char *const names[] = {STORE_INSTALL_FILE, STORE_DATA_FILE ".bak"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char path[4096];
        if (snprintf(path, sizeof path, "%s/%s", dir, names[i]) < (int)sizeof path)
            unlink(path);
    }
}

static int rwlock_init_writer_first(pthread_rwlock_t *lock)
{
    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    int rc = pthread_rwlock_init(lock, &attr);
    pthread_rwlockattr_destroy(&attr);
    return rc;
}

int mg_store_open(const char *dir, const mg_store_options *opts, mg_store **out, mg_error *err)
{
    mg_store_options o = {0};
    if (opts != NULL)
        o = *opts;
    if (dir == NULL || dir[0] == '\0')
        return mg_error_set(err, MG_EINVAL, "store open: no directory given");
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        return mg_error_set(err, MG_EIO, "store open: creating %s: %s", dir, strerror(errno));

    mg_store *s = calloc(1, sizeof *s);
    if (s == NULL)
        return mg_error_set(err, MG_ENOMEM, "out of memory");
    int ret;
    s->dir = strdup(dir);
    if (s->dir == NULL || asprintf(&s->data_path, "%s/%s", dir, STORE_DATA_FILE) < 0) {
        s->data_path = NULL;
        ret = mg_error_set(err, MG_ENOMEM, "out of memory");
        goto err_free_store;
    }
    s->map_size = o.map_size ? o.map_size : DEFAULT_MAP_SIZE;
    s->map_max = o.map_max ? o.map_max : DEFAULT_MAP_MAX;
    s->int8 = o.int8;
    s->env_flags = MDB_NOTLS | sync_flags(o.sync);
    if (pthread_mutex_init(&s->write_mu, NULL) != 0) {
        ret = mg_error_set(err, MG_ENOMEM, "store open: cannot create a mutex");
        goto err_free_store;
    }
    if (rwlock_init_writer_first(&s->env_lock) != 0) {
        ret = mg_error_set(err, MG_ENOMEM, "store open: cannot create a lock");
        goto err_destroy_mutex;
    }
    if (rwlock_init_writer_first(&s->index_lock) != 0) {
        ret = mg_error_set(err, MG_ENOMEM, "store open: cannot create a lock");
        goto err_destroy_env_lock;
    }
    remove_leftovers(s->dir);
    ret = store_env_open(s, true, err);
    if (ret)
        goto err_destroy_index_lock;
    ret =
        store_index_build(s->env, s->dbi[STORE_DB_VECTORS], s->int8, s->data_path, &s->index, err);
    if (ret)
        goto err_close_env;
    mg_debug("store.open", "path=%s applied=%llu map_size=%zu", s->data_path,
             (unsigned long long)atomic_load(&s->applied), s->map_size);
    *out = s;
    return MG_OK;

err_close_env:
    mdb_env_close(s->env);
err_destroy_index_lock:
    pthread_rwlock_destroy(&s->index_lock);
err_destroy_env_lock:
    pthread_rwlock_destroy(&s->env_lock);
err_destroy_mutex:
    pthread_mutex_destroy(&s->write_mu);
err_free_store:
    free(s->data_path);
    free(s->dir);
    free(s);
    return mg_error_wrap(err, ret, "store open");
}

void mg_store_close(mg_store *s)
{
    if (s == NULL)
        return;
    mg_index_destroy(s->index);
    mdb_env_close(s->env);
    free(s->dead);
    pthread_rwlock_destroy(&s->index_lock);
    pthread_rwlock_destroy(&s->env_lock);
    pthread_mutex_destroy(&s->write_mu);
    free(s->data_path);
    free(s->dir);
    free(s);
}

uint64_t mg_store_applied(mg_store *s)
{
    return atomic_load(&s->applied);
}

int mg_store_stat(mg_store *s, size_t *used, size_t *map_size, mg_error *err)
{
    pthread_rwlock_rdlock(&s->env_lock);
    int ret = store_env_lost(s, err);
    if (ret) {
        pthread_rwlock_unlock(&s->env_lock);
        return ret;
    }
    MDB_envinfo info;
    MDB_stat st;
    mdb_env_info(s->env, &info);
    mdb_env_stat(s->env, &st);
    pthread_rwlock_unlock(&s->env_lock);
    if (used != NULL)
        *used = (info.me_last_pgno + 1) * (size_t)st.ms_psize;
    if (map_size != NULL)
        *map_size = info.me_mapsize;
    return MG_OK;
}

/* ---- syncing and removing a store --------------------------------------- */

int mg_store_sync(mg_store *s, mg_error *err)
{
    pthread_rwlock_rdlock(&s->env_lock); /* install swaps the environment */
    int rc = store_env_lost(s, err);
    if (rc == MG_OK && (rc = mdb_env_sync(s->env, 1)) != 0)
        rc = store_lmdb_error(err, rc, "syncing", s->data_path);
    pthread_rwlock_unlock(&s->env_lock);
    return rc;
}

int mg_store_remove(const char *dir, mg_error *err)
{
    static const char *const names[] = {STORE_DATA_FILE, "lock.mdb", STORE_INSTALL_FILE,
                                        STORE_DATA_FILE ".bak"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char path[4096];
        if (snprintf(path, sizeof path, "%s/%s", dir, names[i]) >= (int)sizeof path)
            return mg_error_set(err, MG_EINVAL, "store path too long: %s", dir);
        if (unlink(path) != 0 && errno != ENOENT)
            return mg_error_set(err, MG_EIO, "unlink %s: %s", path, strerror(errno));
    }
    return MG_OK;
}
