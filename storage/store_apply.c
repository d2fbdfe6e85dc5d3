/*
 * mg_store_apply: a batch of operations in one LMDB write transaction, then
 * the same changes in the vector index.
 *
 * A failed op must change nothing while the others apply. Rather than a
 * nested transaction per op (each costs LMDB a 2 MiB dirty-list allocation
 * and a merge on commit), every op first does all its reads and checks, and
 * only then writes. After the first write an op can fail only through LMDB
 * itself or memory, and those fail the whole batch (the transaction is
 * poisoned anyway). Per-op outcomes therefore depend only on the stored state
 * and the op, which keeps them identical on every replica.
 *
 * Index changes are collected while the ops run and applied after commit, in
 * order, under index_lock held exclusively across commit and update, so a
 * search never sees the DB and the index at different points.
 */
#include "store_internal.h"

#include "../lib/log.h"
#include "../lib/mp.h"
#include "../lib/utf8.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Cubes whose count and dimension a batch caches before writing them out. */
#define BATCH_CUBES_MAX 64

/* What the batch knows about one cube it touched. */
struct batch_cube {
    char id[MG_CUBE_ID_MAX + 1];
    bool exists;
    uint32_t dim;
    uint64_t count;   /* memories */
    bool count_dirty; /* count differs from meta */
};

enum ix_kind { IX_ADD, IX_REMOVE, IX_DROP };

/* One change the index must make after commit. Pointers are borrowed from the
 * ops, which live for the whole mg_store_apply call. */
struct ix_change {
    int kind;
    const char *cube_id;
    uint8_t id[16];
    const float *vec;
    uint32_t dim;
    bool replaces; /* IX_ADD over a vector the index holds: one more dead row */
};

struct batch {
    mg_store *s;
    MDB_txn *txn;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    struct batch_cube cubes[BATCH_CUBES_MAX];
    size_t n_cubes;
    struct ix_change *changes;
    size_t n_changes, cap_changes;
    float *vecs;                /* aligned copies of MEM_PUT_ENCODED vectors, for the index */
    size_t vecs_used, vecs_cap; /* floats */
    int fatal;                  /* a batch-wide failure (code), 0 while all is well */
    bool map_full;              /* fatal was MDB_MAP_FULL: grow and retry */
    mg_error *err;              /* where a fatal error's message goes */
    mg_error op_err;            /* detail of the last failed op, for the debug log */
};

/* Records a batch-wide failure from LMDB (rc is an LMDB/errno code). */
static int batch_lmdb_fail(struct batch *b, int rc, const char *what)
{
    b->map_full = rc == MDB_MAP_FULL;
    b->fatal = store_lmdb_error(b->err, rc, what, b->s->data_path);
    return b->fatal;
}

/* Records a batch-wide failure with an error code of ours. */
static int batch_fail(struct batch *b, int code, const char *what)
{
    b->fatal = mg_error_set(b->err, code, "%s: %s", what, mg_strerror(code));
    return code;
}

static int change_add(struct batch *b, int kind, const char *cube_id, const uint8_t *id,
                      const float *vec, uint32_t dim, bool replaces)
{
    if (b->n_changes == b->cap_changes) {
        size_t cap = b->cap_changes ? 2 * b->cap_changes : 64;
        struct ix_change *c = realloc(b->changes, cap * sizeof *c);
        if (c == NULL)
            return batch_fail(b, MG_ENOMEM, "recording index changes");
        b->changes = c;
        b->cap_changes = cap;
    }
    struct ix_change *c = &b->changes[b->n_changes++];
    *c = (struct ix_change){
        .kind = kind, .cube_id = cube_id, .vec = vec, .dim = dim, .replaces = replaces};
    if (id != NULL)
        memcpy(c->id, id, 16);
    return MG_OK;
}

static MDB_val str_val(const char *s)
{
    return (MDB_val){strlen(s), (void *)s};
}

/* Packs into the batch's reusable buffer; the result is b->sb.data/size. */
static void pack_reset(struct batch *b)
{
    msgpack_sbuffer_clear(&b->sb);
}

/* ---- per-cube cache ----------------------------------------------------- */

static int flush_cubes(struct batch *b)
{
    for (size_t i = 0; i < b->n_cubes; i++) {
        struct batch_cube *bc = &b->cubes[i];
        if (!bc->count_dirty || !bc->exists)
            continue;
        char key[sizeof STORE_COUNT_PREFIX + MG_CUBE_ID_MAX];
        uint8_t val[8];
        store_put_u64le(val, bc->count);
        MDB_val k = {store_count_key(key, bc->id), key}, v = {8, val};
        int rc = mdb_put(b->txn, b->s->dbi[STORE_DB_META], &k, &v, 0);
        if (rc)
            return batch_lmdb_fail(b, rc, "writing a memory count");
        bc->count_dirty = false;
    }
    b->n_cubes = 0;
    return MG_OK;
}

/* The batch's view of cube_id, loaded from the transaction on first use.
 * NULL on a batch failure. */
static struct batch_cube *batch_cube(struct batch *b, const char *cube_id)
{
    for (size_t i = b->n_cubes; i-- > 0;)
        if (strcmp(b->cubes[i].id, cube_id) == 0)
            return &b->cubes[i];
    if (b->n_cubes == BATCH_CUBES_MAX && flush_cubes(b) != MG_OK)
        return NULL;
    struct batch_cube *bc = &b->cubes[b->n_cubes];
    memset(bc, 0, sizeof *bc);
    snprintf(bc->id, sizeof bc->id, "%s", cube_id);
    MDB_val k = str_val(cube_id), v;
    int rc = mdb_get(b->txn, b->s->dbi[STORE_DB_CUBES], &k, &v);
    if (rc == 0) {
        mg_cube c = {0};
        int dr = mg_cube_decode(v.mv_data, v.mv_size, &c, b->err);
        if (dr) {
            mg_error_wrap(b->err, rc, "cube %s (%s)", cube_id, b->s->data_path);
            b->fatal = dr;
            return NULL;
        }
        bc->exists = true;
        bc->dim = c.dim;
        mg_cube_clear(&c);
        char key[sizeof STORE_COUNT_PREFIX + MG_CUBE_ID_MAX];
        k = (MDB_val){store_count_key(key, cube_id), key};
        rc = mdb_get(b->txn, b->s->dbi[STORE_DB_META], &k, &v);
        if (rc == 0 && v.mv_size == 8)
            bc->count = store_get_u64le(v.mv_data);
        else if (rc == 0)
            rc = MDB_CORRUPTED;
    }
    if (rc != 0 && rc != MDB_NOTFOUND) {
        batch_lmdb_fail(b, rc, "reading a cube");
        return NULL;
    }
    b->n_cubes++;
    return bc;
}

/* ---- helpers for the ops ------------------------------------------------ */

/* Deletes a memory's records (memories, memids, vector) and queues the index
 * removal. The memory is known to exist. */
static int delete_memory(struct batch *b, const char *cube_id, const uint8_t id[16])
{
    uint8_t key[STORE_MEM_KEY_MAX];
    MDB_val k = {store_mem_key(key, cube_id, strlen(cube_id), id), key};
    MDB_val idk = {16, (void *)id};
    int rc = mdb_del(b->txn, b->s->dbi[STORE_DB_MEMORIES], &k, NULL);
    if (rc == 0)
        rc = mdb_del(b->txn, b->s->dbi[STORE_DB_MEMIDS], &idk, NULL);
    if (rc)
        return batch_lmdb_fail(b, rc, "deleting a memory");
    rc = mdb_del(b->txn, b->s->dbi[STORE_DB_VECTORS], &k, NULL);
    if (rc == 0)
        return change_add(b, IX_REMOVE, cube_id, id, NULL, 0, false);
    if (rc != MDB_NOTFOUND)
        return batch_lmdb_fail(b, rc, "deleting a vector");
    return MG_OK;
}

/* Deletes every key that starts with prefix from dbi; with memids set, the
 * keys are memory keys and their memids entries go too. */
static int delete_prefix(struct batch *b, MDB_dbi dbi, const uint8_t *prefix, size_t plen,
                         bool memids, size_t *n)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(b->txn, dbi, &cur);
    if (rc)
        return batch_lmdb_fail(b, rc, "opening a cursor");
    MDB_val k = {plen, (void *)prefix}, v;
    *n = 0;
    /* After mdb_cursor_del the cursor sits on the next key, which MDB_NEXT
     * then returns. */
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size < plen || memcmp(k.mv_data, prefix, plen) != 0)
            break;
        if (memids && k.mv_size == plen + 16) {
            MDB_val idk = {16, (uint8_t *)k.mv_data + plen};
            rc = mdb_del(b->txn, b->s->dbi[STORE_DB_MEMIDS], &idk, NULL);
            if (rc != 0 && rc != MDB_NOTFOUND)
                break;
        }
        rc = mdb_cursor_del(cur, 0);
        if (rc)
            break;
        (*n)++;
    }
    mdb_cursor_close(cur);
    if (rc != 0 && rc != MDB_NOTFOUND)
        return batch_lmdb_fail(b, rc, "deleting a cube's records");
    return MG_OK;
}

/* ---- the ops ------------------------------------------------------------ */

/* Each returns MG_OK, the op's own failure (nothing written), or b->fatal. */

static int op_cube_put(struct batch *b, const mg_store_op *op, size_t *count)
{
    const mg_cube *c = op->cube;
    if (c == NULL)
        return mg_error_set(&b->op_err, MG_EINVAL, "cube put without a cube");
    int rc = mg_cube_validate(c, &b->op_err);
    if (rc)
        return rc;
    if (op->cube_id != NULL && strcmp(op->cube_id, c->cube_id) != 0)
        return mg_error_set(&b->op_err, MG_EINVAL, "cube put: cube_id and cube disagree");
    struct batch_cube *bc = batch_cube(b, c->cube_id);
    if (bc == NULL)
        return b->fatal;
    if (bc->exists && (op->flags & MG_STORE_CREATE_ONLY))
        return mg_error_set(&b->op_err, MG_EEXIST, "cube %s exists", c->cube_id);
    if (!bc->exists && (op->flags & MG_STORE_UPDATE_ONLY))
        return mg_error_set(&b->op_err, MG_ENOTFOUND, "no cube %s", c->cube_id);
    /* A cube's dimension is fixed once known (by the record or its first
     * vector): a put may repeat it or leave it 0, not change it. */
    if (bc->exists && c->dim != 0 && bc->dim != 0 && c->dim != bc->dim)
        return mg_error_set(&b->op_err, MG_EDIM, "cube %s has dimension %u, not %u", c->cube_id,
                            bc->dim, c->dim);
    mg_cube stored = *c; /* shallow: only packed */
    if (stored.dim == 0)
        stored.dim = bc->dim;
    pack_reset(b);
    if (mg_cube_pack(&b->pk, &stored))
        return batch_fail(b, MG_ENOMEM, "encoding a cube");
    MDB_val k = str_val(c->cube_id), v = {b->sb.size, b->sb.data};
    int mrc = mdb_put(b->txn, b->s->dbi[STORE_DB_CUBES], &k, &v, 0);
    if (mrc)
        return batch_lmdb_fail(b, mrc, "writing a cube");
    if (!bc->exists) {
        bc->exists = true;
        bc->count = 0;
        bc->count_dirty = true;
    }
    bc->dim = stored.dim;
    *count = 1;
    return MG_OK;
}

static int op_cube_delete(struct batch *b, const mg_store_op *op, size_t *count)
{
    int rc = store_check_cube_id(op->cube_id, &b->op_err);
    if (rc)
        return rc;
    struct batch_cube *bc = batch_cube(b, op->cube_id);
    if (bc == NULL)
        return b->fatal;
    if (!bc->exists)
        return mg_error_set(&b->op_err, MG_ENOTFOUND, "no cube %s", op->cube_id);
    MDB_val k = str_val(op->cube_id);
    int mrc = mdb_del(b->txn, b->s->dbi[STORE_DB_CUBES], &k, NULL);
    if (mrc)
        return batch_lmdb_fail(b, mrc, "deleting a cube");
    char ckey[sizeof STORE_COUNT_PREFIX + MG_CUBE_ID_MAX];
    k = (MDB_val){store_count_key(ckey, op->cube_id), ckey};
    mrc = mdb_del(b->txn, b->s->dbi[STORE_DB_META], &k, NULL);
    if (mrc != 0 && mrc != MDB_NOTFOUND)
        return batch_lmdb_fail(b, mrc, "deleting a memory count");
    size_t cl = strlen(op->cube_id);
    uint8_t prefix[MG_CUBE_ID_MAX + 1];
    memcpy(prefix, op->cube_id, cl);
    prefix[cl] = '\0';
    size_t n_mem, n_vec;
    if (delete_prefix(b, b->s->dbi[STORE_DB_MEMORIES], prefix, cl + 1, true, &n_mem) ||
        delete_prefix(b, b->s->dbi[STORE_DB_VECTORS], prefix, cl + 1, false, &n_vec))
        return b->fatal;
    bc->exists = false;
    bc->dim = 0;
    bc->count = 0;
    bc->count_dirty = false;
    *count = n_mem;
    return change_add(b, IX_DROP, op->cube_id, NULL, NULL, 0, false);
}

/* Sets the dimension of a cube created with dim 0 from its first vector. */
static int cube_fix_dim(struct batch *b, struct batch_cube *bc, uint32_t dim)
{
    MDB_val k = str_val(bc->id), v;
    int rc = mdb_get(b->txn, b->s->dbi[STORE_DB_CUBES], &k, &v);
    if (rc)
        return batch_lmdb_fail(b, rc, "reading a cube");
    mg_cube c = {0};
    int dr = mg_cube_decode(v.mv_data, v.mv_size, &c, b->err);
    if (dr) {
        mg_error_wrap(b->err, rc, "cube %s (%s)", bc->id, b->s->data_path);
        b->fatal = dr;
        return dr;
    }
    c.dim = dim;
    pack_reset(b);
    int pr = mg_cube_pack(&b->pk, &c);
    mg_cube_clear(&c);
    if (pr)
        return batch_fail(b, MG_ENOMEM, "encoding a cube");
    v = (MDB_val){b->sb.size, b->sb.data};
    rc = mdb_put(b->txn, b->s->dbi[STORE_DB_CUBES], &k, &v, 0);
    if (rc)
        return batch_lmdb_fail(b, rc, "writing a cube");
    bc->dim = dim;
    return MG_OK;
}

/* The part of a memory put that both forms share: id and vector checked,
 * the record either packed from op->item (record NULL) or given encoded.
 * vec is aligned and lives until the index is updated. */
static int mem_put(struct batch *b, const mg_store_op *op, const uint8_t *id, const float *vec,
                   uint32_t dim, const void *record, size_t record_len, size_t *count)
{
    int rc = MG_OK;
    struct batch_cube *bc = batch_cube(b, op->cube_id);
    if (bc == NULL)
        return b->fatal;
    if (!bc->exists)
        return mg_error_set(&b->op_err, MG_ENOTFOUND, "no cube %s", op->cube_id);
    if (vec != NULL && bc->dim != 0 && dim != bc->dim)
        return mg_error_set(&b->op_err, MG_EDIM, "cube %s has dimension %u, the vector %u",
                            op->cube_id, bc->dim, dim);

    MDB_val idk = {16, (void *)id}, v;
    int mrc = mdb_get(b->txn, b->s->dbi[STORE_DB_MEMIDS], &idk, &v);
    if (mrc != 0 && mrc != MDB_NOTFOUND)
        return batch_lmdb_fail(b, mrc, "reading memids");
    size_t cl = strlen(op->cube_id);
    bool present = mrc == 0;
    if (present && (v.mv_size != cl || memcmp(v.mv_data, op->cube_id, cl) != 0))
        /* ids are global: one id, one cube */
        return mg_error_set(&b->op_err, MG_EEXIST, "memory id is taken by another cube");
    if (present && (op->flags & MG_STORE_CREATE_ONLY))
        return mg_error_set(&b->op_err, MG_EEXIST, "memory exists");
    if (!present && (op->flags & MG_STORE_UPDATE_ONLY))
        return mg_error_set(&b->op_err, MG_ENOTFOUND, "no such memory in cube %s", op->cube_id);

    uint8_t key[STORE_MEM_KEY_MAX];
    MDB_val k = {store_mem_key(key, op->cube_id, cl, id), key};
    bool had_vec = false;
    if (present) {
        mrc = mdb_get(b->txn, b->s->dbi[STORE_DB_VECTORS], &k, &v);
        if (mrc != 0 && mrc != MDB_NOTFOUND)
            return batch_lmdb_fail(b, mrc, "reading a vector");
        had_vec = mrc == 0;
    }

    /* Checks are done: from here on only a batch failure can stop the op. */
    if (record == NULL) {
        pack_reset(b);
        if (mg_item_pack(&b->pk, op->item))
            return batch_fail(b, MG_ENOMEM, "encoding a memory");
        v = (MDB_val){b->sb.size, b->sb.data};
    } else {
        v = (MDB_val){record_len, (void *)record};
    }
    mrc = mdb_put(b->txn, b->s->dbi[STORE_DB_MEMORIES], &k, &v, 0);
    if (mrc)
        return batch_lmdb_fail(b, mrc, "writing a memory");
    if (!present) {
        v = (MDB_val){cl, (void *)op->cube_id};
        mrc = mdb_put(b->txn, b->s->dbi[STORE_DB_MEMIDS], &idk, &v, 0);
        if (mrc)
            return batch_lmdb_fail(b, mrc, "writing memids");
        bc->count++;
        bc->count_dirty = true;
    }
    if (vec != NULL) {
        pack_reset(b);
        if (store_vector_pack(&b->pk, vec, dim))
            return batch_fail(b, MG_ENOMEM, "encoding a vector");
        v = (MDB_val){b->sb.size, b->sb.data};
        mrc = mdb_put(b->txn, b->s->dbi[STORE_DB_VECTORS], &k, &v, 0);
        if (mrc)
            return batch_lmdb_fail(b, mrc, "writing a vector");
        if (bc->dim == 0 && cube_fix_dim(b, bc, dim))
            return b->fatal;
        rc = change_add(b, IX_ADD, op->cube_id, id, vec, dim, had_vec);
    } else if (had_vec) {
        mrc = mdb_del(b->txn, b->s->dbi[STORE_DB_VECTORS], &k, NULL);
        if (mrc)
            return batch_lmdb_fail(b, mrc, "deleting a vector");
        rc = change_add(b, IX_REMOVE, op->cube_id, id, NULL, 0, false);
    }
    if (rc == MG_OK)
        *count = 1;
    return rc;
}

/* mg_vector_check and the zero test in one pass the compiler vectorizes
 * (mg_vector_check, called only to word a failure, tests element by
 * element). */
static int vector_ok(struct batch *b, const float *vec, uint32_t dim)
{
    uint32_t inf_nan = 0, nonzero = 0;
    for (uint32_t i = 0; i < dim; i++) {
        uint32_t u;
        memcpy(&u, &vec[i], 4);
        inf_nan |= (u & 0x7f800000u) == 0x7f800000u;
        nonzero |= u & 0x7fffffffu; /* -0.0 is zero */
    }
    if (dim == 0 || dim > MG_DIM_MAX || inf_nan)
        return mg_vector_check(vec, dim, &b->op_err);
    if (!nonzero)
        return mg_error_set(&b->op_err, MG_EINVAL, "an all-zero vector has no direction");
    return MG_OK;
}

static int op_mem_put(struct batch *b, const mg_store_op *op, size_t *count)
{
    int rc = store_check_cube_id(op->cube_id, &b->op_err);
    if (rc)
        return rc;
    if (op->item == NULL)
        return mg_error_set(&b->op_err, MG_EINVAL, "memory put without an item");
    rc = mg_item_validate(op->item, &b->op_err);
    if (rc)
        return rc;
    if (op->vec != NULL && (rc = vector_ok(b, op->vec, op->dim)) != MG_OK)
        return rc;
    return mem_put(b, op, op->item->id, op->vec, op->dim, NULL, 0, count);
}

static int op_mem_put_encoded(struct batch *b, const mg_store_op *op, size_t *count)
{
    int rc = store_check_cube_id(op->cube_id, &b->op_err);
    if (rc)
        return rc;
    const uint8_t *id;
    if (op->record == NULL)
        return mg_error_set(&b->op_err, MG_EINVAL, "memory put without a record");
    rc = mg_store_record_check(op->record, op->record_len, &id, &b->op_err);
    if (rc)
        return rc;
    if (op->mem_id != NULL && memcmp(op->mem_id, id, 16) != 0)
        return mg_error_set(&b->op_err, MG_EINVAL, "memory put: mem_id and record disagree");
    float *vec = NULL;
    if (op->vec_le != NULL) {
        if (op->dim == 0 || op->dim > MG_DIM_MAX)
            return mg_error_set(&b->op_err, MG_EDIM, "vector dimension %u is outside 1..%u",
                                op->dim, MG_DIM_MAX);
        if (b->vecs_cap - b->vecs_used < op->dim) /* sized by mg_store_apply */
            return batch_fail(b, MG_EINTERNAL, "vector space of a batch");
        vec = b->vecs + b->vecs_used;
        store_vector_copy(vec, op->vec_le, op->dim); /* aligned, host order */
        if ((rc = vector_ok(b, vec, op->dim)) != MG_OK)
            return rc;
    }
    rc = mem_put(b, op, id, vec, op->dim, op->record, op->record_len, count);
    if (rc == MG_OK && vec != NULL)
        b->vecs_used += op->dim; /* the index reads it after commit */
    return rc;
}

static int op_mem_delete(struct batch *b, const mg_store_op *op, size_t *count)
{
    int rc = store_check_cube_id(op->cube_id, &b->op_err);
    if (rc)
        return rc;
    if (op->mem_id == NULL)
        return mg_error_set(&b->op_err, MG_EINVAL, "memory delete without an id");
    struct batch_cube *bc = batch_cube(b, op->cube_id);
    if (bc == NULL)
        return b->fatal;
    if (!bc->exists)
        return mg_error_set(&b->op_err, MG_ENOTFOUND, "no cube %s", op->cube_id);
    uint8_t key[STORE_MEM_KEY_MAX];
    MDB_val k = {store_mem_key(key, op->cube_id, strlen(op->cube_id), op->mem_id), key}, v;
    int mrc = mdb_get(b->txn, b->s->dbi[STORE_DB_MEMORIES], &k, &v);
    if (mrc == MDB_NOTFOUND)
        return mg_error_set(&b->op_err, MG_ENOTFOUND, "no such memory in cube %s", op->cube_id);
    if (mrc)
        return batch_lmdb_fail(b, mrc, "reading a memory");
    if (delete_memory(b, op->cube_id, op->mem_id))
        return b->fatal;
    bc->count--;
    bc->count_dirty = true;
    *count = 1;
    return MG_OK;
}

/* Collects the ids that DELETE_WHERE removes. */
struct where_ids {
    const mg_filter *filter;
    uint8_t (*ids)[16];
    size_t n, cap;
};

static int where_visit(void *arg, const uint8_t id[16], const MDB_val *record)
{
    struct where_ids *w = arg;
    if (w->filter != NULL && !mg_filter_match(w->filter, record->mv_data, record->mv_size))
        return 0;
    if (w->n == w->cap) {
        size_t cap = w->cap ? 2 * w->cap : 64;
        void *p = realloc(w->ids, cap * 16);
        if (p == NULL)
            return MG_ENOMEM;
        w->ids = p;
        w->cap = cap;
    }
    memcpy(w->ids[w->n++], id, 16);
    return 0;
}

/* A NULL filter matches every memory of the cube, as it does for listing. */
static int op_mem_delete_where(struct batch *b, const mg_store_op *op, size_t *count)
{
    int rc = store_check_cube_id(op->cube_id, &b->op_err);
    if (rc)
        return rc;
    struct batch_cube *bc = batch_cube(b, op->cube_id);
    if (bc == NULL)
        return b->fatal;
    if (!bc->exists)
        return mg_error_set(&b->op_err, MG_ENOTFOUND, "no cube %s", op->cube_id);
    struct where_ids w = {.filter = op->filter};
    rc = store_cube_scan(b->s, b->txn, op->cube_id, NULL, where_visit, &w, b->err);
    if (rc) {
        free(w.ids);
        if (rc == MG_ENOMEM)
            return batch_fail(b, rc, "collecting memories to delete");
        b->fatal = rc;
        b->map_full = false;
        return rc;
    }
    for (size_t i = 0; i < w.n; i++) {
        if (delete_memory(b, op->cube_id, w.ids[i])) {
            free(w.ids);
            return b->fatal;
        }
    }
    free(w.ids);
    bc->count -= w.n;
    bc->count_dirty = bc->count_dirty || w.n > 0;
    *count = w.n;
    return MG_OK;
}

static int op_user_put(struct batch *b, const mg_store_op *op, size_t *count)
{
    const mg_user *u = op->user;
    if (u == NULL)
        return mg_error_set(&b->op_err, MG_EINVAL, "user put without a user");
    int rc = mg_user_validate(u, &b->op_err);
    if (rc)
        return rc;
    if (op->user_id != NULL && strcmp(op->user_id, u->user_id) != 0)
        return mg_error_set(&b->op_err, MG_EINVAL, "user put: user_id and user disagree");
    MDB_val k = str_val(u->user_id), v;
    int mrc = mdb_get(b->txn, b->s->dbi[STORE_DB_USERS], &k, &v);
    if (mrc != 0 && mrc != MDB_NOTFOUND)
        return batch_lmdb_fail(b, mrc, "reading a user");
    if (mrc == 0 && (op->flags & MG_STORE_CREATE_ONLY))
        return mg_error_set(&b->op_err, MG_EEXIST, "user exists");
    if (mrc == MDB_NOTFOUND && (op->flags & MG_STORE_UPDATE_ONLY))
        return mg_error_set(&b->op_err, MG_ENOTFOUND, "no such user");
    pack_reset(b);
    if (mg_user_pack(&b->pk, u))
        return batch_fail(b, MG_ENOMEM, "encoding a user");
    v = (MDB_val){b->sb.size, b->sb.data};
    mrc = mdb_put(b->txn, b->s->dbi[STORE_DB_USERS], &k, &v, 0);
    if (mrc)
        return batch_lmdb_fail(b, mrc, "writing a user");
    *count = 1;
    return MG_OK;
}

static int op_user_delete(struct batch *b, const mg_store_op *op, size_t *count)
{
    const char *uid = op->user_id;
    if (uid == NULL || !mg_user_id_valid(uid, strnlen(uid, MG_USER_ID_MAX + 1)))
        return mg_error_set(&b->op_err, MG_EINVAL, "user id is missing or not valid");
    MDB_val k = str_val(uid);
    int mrc = mdb_del(b->txn, b->s->dbi[STORE_DB_USERS], &k, NULL);
    if (mrc == MDB_NOTFOUND)
        return mg_error_set(&b->op_err, MG_ENOTFOUND, "no such user");
    if (mrc)
        return batch_lmdb_fail(b, mrc, "deleting a user");
    *count = 1;
    return MG_OK;
}

static int op_sys_put(struct batch *b, const mg_store_op *op, size_t *count)
{
    size_t klen = op->sys_key != NULL ? strnlen(op->sys_key, STORE_SYS_KEY_MAX + 1) : 0;
    if (klen == 0 || klen > STORE_SYS_KEY_MAX)
        return mg_error_set(&b->op_err, MG_EINVAL, "sys key: 1-%d bytes expected",
                            STORE_SYS_KEY_MAX);
    if (op->record == NULL && op->record_len > 0)
        return mg_error_set(&b->op_err, MG_EINVAL, "sys put without a value");
    if (op->record_len > STORE_SYS_VALUE_MAX)
        return mg_error_set(&b->op_err, MG_ETOOBIG, "sys value of %zu bytes (at most %zu)",
                            op->record_len, STORE_SYS_VALUE_MAX);
    MDB_val k = {klen, (void *)op->sys_key}, v;
    if (op->flags & (MG_STORE_CREATE_ONLY | MG_STORE_UPDATE_ONLY)) {
        int mrc = mdb_get(b->txn, b->s->dbi[STORE_DB_SYS], &k, &v);
        if (mrc != 0 && mrc != MDB_NOTFOUND)
            return batch_lmdb_fail(b, mrc, "reading a sys record");
        if (mrc == 0 && (op->flags & MG_STORE_CREATE_ONLY))
            return mg_error_set(&b->op_err, MG_EEXIST, "sys record exists");
        if (mrc == MDB_NOTFOUND && (op->flags & MG_STORE_UPDATE_ONLY))
            return mg_error_set(&b->op_err, MG_ENOTFOUND, "no such sys record");
    }
    v = (MDB_val){op->record_len, (void *)op->record};
    int mrc = mdb_put(b->txn, b->s->dbi[STORE_DB_SYS], &k, &v, 0);
    if (mrc)
        return batch_lmdb_fail(b, mrc, "writing a sys record");
    *count = 1;
    return MG_OK;
}

typedef int (*op_fn)(struct batch *b, const mg_store_op *op, size_t *count);

static const op_fn op_table[] = {
    [MG_STORE_CUBE_PUT] = op_cube_put,
    [MG_STORE_CUBE_DELETE] = op_cube_delete,
    [MG_STORE_MEM_PUT] = op_mem_put,
    [MG_STORE_MEM_DELETE] = op_mem_delete,
    [MG_STORE_MEM_DELETE_WHERE] = op_mem_delete_where,
    [MG_STORE_USER_PUT] = op_user_put,
    [MG_STORE_USER_DELETE] = op_user_delete,
    [MG_STORE_MEM_PUT_ENCODED] = op_mem_put_encoded,
    [MG_STORE_SYS_PUT] = op_sys_put,
};

/* ---- the batch ---------------------------------------------------------- */

/* One attempt: runs the ops in a new write transaction and commits it. On
 * MG_OK index_lock is held exclusively (the caller updates the index and
 * releases it); on failure nothing is held and nothing changed. */
static int batch_run(struct batch *b, uint64_t index, const mg_store_op *ops, size_t n,
                     int *results, size_t *counts)
{
    mg_store *s = b->s;
    b->fatal = 0;
    b->map_full = false;
    b->n_cubes = 0;
    b->n_changes = 0;
    b->vecs_used = 0;
    int rc = mdb_txn_begin(s->env, NULL, 0, &b->txn);
    if (rc)
        return batch_lmdb_fail(b, rc, "beginning a write transaction");
    for (size_t i = 0; i < n; i++) {
        size_t count = 0;
        const mg_store_op *op = &ops[i];
        size_t nk = sizeof op_table / sizeof op_table[0];
        int r;
        if (op->kind <= 0 || (size_t)op->kind >= nk || op_table[op->kind] == NULL)
            r = mg_error_set(&b->op_err, MG_EINVAL, "unknown op kind %d", op->kind);
        else
            r = op_table[op->kind](b, op, &count);
        /* Memory is not part of the replicated state: running out of it
         * must not become a per-op result that another replica would not
         * share. */
        if (r == MG_ENOMEM && b->fatal == 0)
            batch_fail(b, MG_ENOMEM, "applying a batch");
        if (b->fatal)
            goto err_abort_txn;
        if (r != MG_OK)
            mg_debug("store.apply.op", "op=%zu kind=%d code=%s msg=\"%s\"", i, op->kind,
                     mg_errname(r), b->op_err.msg);
        results[i] = r;
        if (counts != NULL)
            counts[i] = r == MG_OK ? count : 0;
    }
    if (flush_cubes(b))
        goto err_abort_txn;
    if (index != 0) {
        uint8_t val[8];
        store_put_u64le(val, index);
        MDB_val k = {7, "applied"}, v = {8, val};
        rc = mdb_put(b->txn, s->dbi[STORE_DB_META], &k, &v, 0);
        if (rc) {
            batch_lmdb_fail(b, rc, "writing the applied index");
            goto err_abort_txn;
        }
    }
    pthread_rwlock_wrlock(&s->index_lock);
    rc = mdb_txn_commit(b->txn); /* frees the transaction, also on failure */
    b->txn = NULL;
    if (rc) {
        pthread_rwlock_unlock(&s->index_lock);
        return batch_lmdb_fail(b, rc, "committing");
    }
    return MG_OK;

err_abort_txn:
    mdb_txn_abort(b->txn);
    b->txn = NULL;
    return b->fatal;
}

/* Brings the index up to the committed batch. A failure here means index and
 * DB disagree, which is a bug: the cube is reloaded from the DB. */
static void batch_update_index(struct batch *b)
{
    mg_store *s = b->s;
    for (size_t i = 0; i < b->n_changes; i++) {
        const struct ix_change *c = &b->changes[i];
        mg_error e = {0};
        int rc = MG_OK;
        switch (c->kind) {
        case IX_ADD:
            rc = mg_index_add(s->index, c->cube_id, c->id, c->vec, c->dim, &e);
            if (rc == MG_OK && c->replaces)
                store_dead_note(s, c->cube_id, 1);
            break;
        case IX_REMOVE:
            rc = mg_index_remove(s->index, c->cube_id, c->id);
            if (rc)
                mg_error_set(&e, rc, "removing a vector");
            else
                store_dead_note(s, c->cube_id, 1);
            break;
        case IX_DROP:
            mg_index_drop_cube(s->index, c->cube_id);
            store_dead_forget(s, c->cube_id);
            break;
        }
        if (rc == MG_OK)
            continue;
        mg_errlog("store.index.diverged", "cube=%s code=%s msg=\"%s\" action=reload", c->cube_id,
                  mg_errname(rc), e.msg);
        /* Holding write_mu, no one can grow the map or swap the env: a read
         * transaction is safe without env_lock. */
        MDB_txn *txn;
        store_dead_forget(s, c->cube_id);
        rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
        if (rc == 0) {
            rc = store_index_reload_cube(s->index, txn, s->dbi[STORE_DB_VECTORS], c->cube_id, &e);
            mdb_txn_abort(txn);
        } else {
            store_lmdb_error(&e, rc, "beginning a read transaction", s->data_path);
        }
        if (rc)
            mg_errlog("store.index.reload", "cube=%s code=%s msg=\"%s\"", c->cube_id,
                      mg_errname(rc), e.msg);
        /* The reload reflects the whole committed batch for this cube; later
         * changes to it are already in and are harmless to redo. */
    }
}

/* Doubles the map (up to map_max). Holding write_mu, only readers can have
 * transactions open; env_lock held exclusively waits them out. */
static int map_grow(mg_store *s, mg_error *err)
{
    if (s->map_size >= s->map_max)
        return mg_error_set(err, MG_EFULL,
                            "store full: the map is at its ceiling of %zu bytes (%s)", s->map_max,
                            s->data_path);
    size_t next = s->map_size > s->map_max / 2 ? s->map_max : s->map_size * 2;
    pthread_rwlock_wrlock(&s->env_lock);
    int rc = mdb_env_set_mapsize(s->env, next);
    MDB_envinfo info;
    mdb_env_info(s->env, &info);
    pthread_rwlock_unlock(&s->env_lock);
    if (rc)
        return store_lmdb_error(err, rc, "growing the map", s->data_path);
    mg_info("store.map.grow", "path=%s from=%zu to=%zu", s->data_path, s->map_size,
            info.me_mapsize);
    s->map_size = info.me_mapsize;
    return MG_OK;
}

int mg_store_apply(mg_store *s, uint64_t index, const mg_store_op *ops, size_t n, int *results,
                   size_t *counts, bool *applied, mg_error *err)
{
    if (applied != NULL)
        *applied = false;
    if (n > 0 && (ops == NULL || results == NULL))
        return mg_error_set(err, MG_EINVAL, "store apply: ops and results are required");
    pthread_mutex_lock(&s->write_mu);
    if (store_env_lost(s, err) != MG_OK) {
        pthread_mutex_unlock(&s->write_mu);
        return MG_EIO;
    }
    if (index != 0 && index <= atomic_load(&s->applied)) {
        pthread_mutex_unlock(&s->write_mu);
        for (size_t i = 0; i < n; i++) {
            results[i] = MG_OK;
            if (counts != NULL)
                counts[i] = 0;
        }
        return MG_OK;
    }
    struct batch b = {.s = s, .err = err};
    for (size_t i = 0; i < n; i++)
        if (ops[i].kind == MG_STORE_MEM_PUT_ENCODED && ops[i].vec_le != NULL &&
            ops[i].dim <= MG_DIM_MAX)
            b.vecs_cap += ops[i].dim;
    if (b.vecs_cap > 0 && (b.vecs = malloc(b.vecs_cap * sizeof *b.vecs)) == NULL) {
        pthread_mutex_unlock(&s->write_mu);
        return mg_error_set(err, MG_ENOMEM, "store apply: out of memory for %zu vector floats",
                            b.vecs_cap);
    }
    msgpack_sbuffer_init(&b.sb);
    msgpack_packer_init(&b.pk, &b.sb, msgpack_sbuffer_write);
    int rc;
    for (;;) {
        rc = batch_run(&b, index, ops, n, results, counts);
        if (rc == MG_OK || !b.map_full)
            break;
        rc = map_grow(s, err);
        if (rc)
            break;
    }
    if (rc == MG_OK) {
        batch_update_index(&b);
        if (index != 0)
            atomic_store(&s->applied, index);
        pthread_rwlock_unlock(&s->index_lock);
        store_dead_compact(s); /* searches run meanwhile: the index swaps arenas itself */
        if (applied != NULL)
            *applied = true;
    } else {
        mg_error_wrap(err, rc, "store apply");
    }
    msgpack_sbuffer_destroy(&b.sb);
    free(b.changes);
    free(b.vecs);
    pthread_mutex_unlock(&s->write_mu);
    return rc;
}
