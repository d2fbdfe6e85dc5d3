/*
 * Helpers shared by store_test.c, store_snapshot_test.c and
 * store_search_test.c (header-only, static): temporary directories, a
 * deterministic random source, deterministic memories and cubes, one-call
 * apply wrappers, and a brute-force check of the store's search.
 */
#ifndef MG_TEST_STORE_TEST_UTIL_H
#define MG_TEST_STORE_TEST_UTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "lib/error.h"
#include "storage/store.h"

#include <ftw.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DIM 16
#define TYPES 3
static const char *const types[TYPES] = {"LongTermMemory", "UserMemory", "WorkingMemory"};

/* ---- fixtures ----------------------------------------------------------- */

static inline char *tmpdir_new(void)
{
    char *d = strdup("/tmp/mg-store-test-XXXXXX");
    assert_non_null(mkdtemp(d));
    return d;
}

static inline int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static inline void tmpdir_free(char *d)
{
    nftw(d, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    free(d);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15u;
static inline uint64_t rng(void)
{
    uint64_t x = rng_state;
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    return rng_state = x;
}

/* A deterministic memory: id from n (scrambled so that id order is not insert
 * order), type types[n % TYPES], metadata.rank = n. */
typedef struct mem {
    uint8_t id[16];
    uint32_t n;
    float vec[DIM];
} mem;

static inline void mem_make(mem *m, uint32_t n)
{
    uint64_t h = (n + 1) * 0x9e3779b97f4a7c15u;
    h ^= h >> 29;
    memset(m, 0, sizeof *m);
    memcpy(m->id, &h, 8);
    memcpy(m->id + 8, &n, 4);
    m->n = n;
    for (int i = 0; i < DIM; i++)
        m->vec[i] = (float)((double)(rng() >> 11) / 9007199254740992.0 * 2 - 1);
}

static inline void item_make(mg_item *it, const mem *m)
{
    memset(it, 0, sizeof *it);
    memcpy(it->id, m->id, 16);
    char text[64];
    snprintf(text, sizeof text, "memory number %u", m->n);
    it->memory = strdup(text);
    it->memory_len = strlen(text);
    it->metadata = json_pack("{s:s, s:i, s:s}", "memory_type", types[m->n % TYPES], "rank",
                             (json_int_t)m->n, "user_id", "alice");
}

static inline void cube_make(mg_cube *c, const char *id, uint32_t dim)
{
    memset(c, 0, sizeof *c);
    snprintf(c->cube_id, sizeof c->cube_id, "%s", id);
    snprintf(c->owner_id, sizeof c->owner_id, "alice");
    snprintf(c->created_at, sizeof c->created_at, "2026-01-01T10:00:00.000000");
    snprintf(c->embedder, sizeof c->embedder, "hash");
    c->dim = dim;
}

static inline mg_store *store_open(const char *dir, const mg_store_options *o)
{
    mg_store_options def = {.sync = MG_STORE_SYNC_NONE};
    mg_store *s = NULL;
    mg_error err = {0};
    int rc = mg_store_open(dir, o ? o : &def, &s, &err);
    if (rc)
        print_error("open %s: %s\n", dir, err.msg);
    assert_int_equal(rc, MG_OK);
    return s;
}

/* Applies one op; returns its per-op result (the batch must commit). */
static inline int apply1(mg_store *s, const mg_store_op *op)
{
    int res = -1;
    mg_error err = {0};
    int rc = mg_store_apply(s, 0, op, 1, &res, NULL, NULL, &err);
    if (rc)
        print_error("apply: %s\n", err.msg);
    assert_int_equal(rc, MG_OK);
    return res;
}

static inline void put_cube(mg_store *s, const char *id, uint32_t dim)
{
    mg_cube c;
    cube_make(&c, id, dim);
    mg_store_op op = {.kind = MG_STORE_CUBE_PUT, .cube = &c};
    assert_int_equal(apply1(s, &op), MG_OK);
}

/* Puts mems[0..n) into cube in batches of `batch`, with vectors. */
static inline int put_mems(mg_store *s, uint64_t index, const char *cube, const mem *mems, size_t n,
                           bool with_vec, mg_error *err)
{
    mg_store_op *ops = calloc(n, sizeof *ops);
    mg_item *items = calloc(n, sizeof *items);
    int *res = calloc(n, sizeof *res);
    for (size_t i = 0; i < n; i++) {
        item_make(&items[i], &mems[i]);
        ops[i] = (mg_store_op){.kind = MG_STORE_MEM_PUT,
                               .cube_id = cube,
                               .item = &items[i],
                               .vec = with_vec ? mems[i].vec : NULL,
                               .dim = DIM};
    }
    int rc = mg_store_apply(s, index, ops, n, res, NULL, NULL, err);
    for (size_t i = 0; i < n; i++) {
        if (rc == MG_OK)
            assert_int_equal(res[i], MG_OK);
        mg_item_clear(&items[i]);
    }
    free(ops), free(items), free(res);
    return rc;
}

static inline uint64_t digest(mg_store *s)
{
    uint64_t d = 0;
    assert_int_equal(mg_store_digest(s, &d, NULL), MG_OK);
    return d;
}

static inline uint64_t count(mg_store *s, const char *cube)
{
    uint64_t n = 99999;
    assert_int_equal(mg_store_mem_count(s, cube, &n, NULL), MG_OK);
    return n;
}

static inline mg_filter *filter_of(const char *json)
{
    json_error_t je;
    json_t *j = json_loads(json, 0, &je);
    assert_non_null(j);
    mg_filter *f = NULL;
    mg_error err = {0};
    int rc = mg_filter_compile(j, &f, &err);
    if (rc)
        print_error("filter %s: %s\n", json, err.msg);
    assert_int_equal(rc, MG_OK);
    json_decref(j);
    return f;
}

/* ---- brute-force search --------------------------------------------------- */

typedef struct scored {
    float score;
    uint32_t cube;
    const uint8_t *id;
} scored;

static inline double norm(const float *v)
{
    double s = 0;
    for (int i = 0; i < DIM; i++)
        s += (double)v[i] * v[i];
    return sqrt(s);
}

static inline float cosine(const float *a, const float *b)
{
    double s = 0;
    for (int i = 0; i < DIM; i++)
        s += (double)a[i] * b[i];
    return (float)(s / (norm(a) * norm(b)));
}

static inline int scored_cmp(const void *pa, const void *pb)
{
    const scored *a = pa, *b = pb;
    if (a->score != b->score)
        return a->score > b->score ? -1 : 1;
    return memcmp(a->id, b->id, 16);
}

/* Checks the store's top-k against brute force over cubes[c] holding
 * mems[c][0..n[c]), with type_filter[c] (-1 = none) on memory_type. */
static inline void check_search(mg_store *s, const char *const *cubes, size_t n_cubes, mem **mems,
                                const size_t *n, const int *type_filter, const float *q, size_t k)
{
    mg_filter *filters[8] = {0};
    bool any = false;
    for (size_t c = 0; c < n_cubes; c++) {
        if (type_filter[c] < 0)
            continue;
        char js[96];
        snprintf(js, sizeof js, "{\"memory_type\": \"%s\"}", types[type_filter[c]]);
        filters[c] = filter_of(js);
        any = true;
    }
    mg_store_query sq = {.vec = q,
                         .dim = DIM,
                         .cube_ids = cubes,
                         .n_cubes = n_cubes,
                         .filters = any ? (const mg_filter *const *)filters : NULL,
                         .k = k};
    mg_index_hit *hits = calloc(k, sizeof *hits);
    size_t nh = 0;
    mg_error err = {0};
    int rc = mg_store_search(s, &sq, hits, &nh, &err);
    if (rc)
        print_error("search: %s\n", err.msg);
    assert_int_equal(rc, MG_OK);

    size_t total = 0;
    for (size_t c = 0; c < n_cubes; c++)
        total += n[c];
    scored *all = calloc(total + 1, sizeof *all);
    size_t m = 0;
    for (size_t c = 0; c < n_cubes; c++)
        for (size_t i = 0; i < n[c]; i++)
            if (type_filter[c] < 0 || (int)(mems[c][i].n % TYPES) == type_filter[c])
                all[m++] = (scored){cosine(q, mems[c][i].vec), (uint32_t)c, mems[c][i].id};
    qsort(all, m, sizeof *all, scored_cmp);
    assert_int_equal(nh, m < k ? m : k);
    for (size_t i = 0; i < nh; i++) {
        assert_true(fabsf(hits[i].score - all[i].score) < 1e-4f);
        /* the hit is real: its true score is the one reported, its filter holds */
        bool found = false;
        for (size_t j = 0; j < m && !found; j++)
            found = all[j].cube == hits[i].cube && memcmp(all[j].id, hits[i].id, 16) == 0 &&
                    fabsf(all[j].score - hits[i].score) < 1e-4f;
        assert_true(found);
    }
    free(all);
    free(hits);
    for (size_t c = 0; c < n_cubes; c++)
        mg_filter_free(filters[c]);
}

/* Search results as a comparable list (ids and rounded scores). */
static inline void search_ids(mg_store *s, const char *cube, const float *q, size_t k, uint8_t *out,
                              size_t *n)
{
    const char *cubes[1] = {cube};
    mg_store_query sq = {.vec = q, .dim = DIM, .cube_ids = cubes, .n_cubes = 1, .k = k};
    mg_index_hit hits[64];
    assert_true(k <= 64);
    assert_int_equal(mg_store_search(s, &sq, hits, n, NULL), MG_OK);
    for (size_t i = 0; i < *n; i++)
        memcpy(out + 16 * i, hits[i].id, 16);
}

#endif
