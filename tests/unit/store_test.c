/* storage/store: CRUD, pagination, idempotent apply, per-op errors, map
 * growth, snapshots, damaged files, search against brute force, concurrency. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "lib/error.h"
#include "storage/store.h"

#include <fcntl.h>
#include <ftw.h>
#include <lmdb.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DIM 16
#define TYPES 3
static const char *const types[TYPES] = {"LongTermMemory", "UserMemory", "WorkingMemory"};

/* ---- fixtures ----------------------------------------------------------- */

static char *tmpdir_new(void)
{
    char *d = strdup("/tmp/mg-store-test-XXXXXX");
    assert_non_null(mkdtemp(d));
    return d;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static void tmpdir_free(char *d)
{
    nftw(d, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    free(d);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15u;
static uint64_t rng(void)
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

static void mem_make(mem *m, uint32_t n)
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

static void item_make(mg_item *it, const mem *m)
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

static void cube_make(mg_cube *c, const char *id, uint32_t dim)
{
    memset(c, 0, sizeof *c);
    snprintf(c->cube_id, sizeof c->cube_id, "%s", id);
    snprintf(c->owner_id, sizeof c->owner_id, "alice");
    snprintf(c->created_at, sizeof c->created_at, "2026-01-01T10:00:00.000000");
    snprintf(c->embedder, sizeof c->embedder, "hash");
    c->dim = dim;
}

static mg_store *store_open(const char *dir, const mg_store_options *o)
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
static int apply1(mg_store *s, const mg_store_op *op)
{
    int res = -1;
    mg_error err = {0};
    int rc = mg_store_apply(s, 0, op, 1, &res, NULL, NULL, &err);
    if (rc)
        print_error("apply: %s\n", err.msg);
    assert_int_equal(rc, MG_OK);
    return res;
}

static void put_cube(mg_store *s, const char *id, uint32_t dim)
{
    mg_cube c;
    cube_make(&c, id, dim);
    mg_store_op op = {.kind = MG_STORE_CUBE_PUT, .cube = &c};
    assert_int_equal(apply1(s, &op), MG_OK);
}

/* Puts mems[0..n) into cube in batches of `batch`, with vectors. */
static int put_mems(mg_store *s, uint64_t index, const char *cube, const mem *mems, size_t n,
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

static uint64_t digest(mg_store *s)
{
    uint64_t d = 0;
    assert_int_equal(mg_store_digest(s, &d, NULL), MG_OK);
    return d;
}

static uint64_t count(mg_store *s, const char *cube)
{
    uint64_t n = 99999;
    assert_int_equal(mg_store_mem_count(s, cube, &n, NULL), MG_OK);
    return n;
}

static mg_filter *filter_of(const char *json)
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

static int id_cmp(const void *a, const void *b)
{
    return memcmp(((const mem *)a)->id, ((const mem *)b)->id, 16);
}

/* ---- brute-force search --------------------------------------------------- */

typedef struct scored {
    float score;
    uint32_t cube;
    const uint8_t *id;
} scored;

static double norm(const float *v)
{
    double s = 0;
    for (int i = 0; i < DIM; i++)
        s += (double)v[i] * v[i];
    return sqrt(s);
}

static float cosine(const float *a, const float *b)
{
    double s = 0;
    for (int i = 0; i < DIM; i++)
        s += (double)a[i] * b[i];
    return (float)(s / (norm(a) * norm(b)));
}

static int scored_cmp(const void *pa, const void *pb)
{
    const scored *a = pa, *b = pb;
    if (a->score != b->score)
        return a->score > b->score ? -1 : 1;
    return memcmp(a->id, b->id, 16);
}

/* Checks the store's top-k against brute force over cubes[c] holding
 * mems[c][0..n[c]), with type_filter[c] (-1 = none) on memory_type. */
static void check_search(mg_store *s, const char *const *cubes, size_t n_cubes, mem **mems,
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
static void search_ids(mg_store *s, const char *cube, const float *q, size_t k, uint8_t *out,
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

/* ---- tests ---------------------------------------------------------------- */

static void test_cube_and_user_crud(void **state)
{
    (void)state;
    char *dir = tmpdir_new();
    mg_store *s = store_open(dir, NULL);
    put_cube(s, "c1", 0);
    put_cube(s, "c0", 8);

    mg_cube c;
    cube_make(&c, "c1", 0);
    mg_store_op op = {.kind = MG_STORE_CUBE_PUT, .flags = MG_STORE_CREATE_ONLY, .cube = &c};
    assert_int_equal(apply1(s, &op), MG_EEXIST);
    cube_make(&c, "c9", 0);
    op.flags = MG_STORE_UPDATE_ONLY;
    assert_int_equal(apply1(s, &op), MG_ENOTFOUND);

    mg_cube got = {0};
    assert_int_equal(mg_store_cube_get(s, "c0", &got, NULL), MG_OK);
    assert_string_equal(got.cube_id, "c0");
    assert_string_equal(got.owner_id, "alice");
    assert_int_equal(got.dim, 8);
    mg_cube_clear(&got);
    /* a known dimension stays: a put may leave it 0, not change it */
    cube_make(&c, "c0", 0);
    op.flags = 0;
    assert_int_equal(apply1(s, &op), MG_OK);
    assert_int_equal(mg_store_cube_get(s, "c0", &got, NULL), MG_OK);
    assert_int_equal(got.dim, 8);
    mg_cube_clear(&got);
    c.dim = 9;
    assert_int_equal(apply1(s, &op), MG_EDIM);
    mg_error err = {0};
    assert_int_equal(mg_store_cube_get(s, "c9", &got, &err), MG_ENOTFOUND);

    mg_cube *list;
    size_t n;
    assert_int_equal(mg_store_cube_list(s, &list, &n, NULL), MG_OK);
    assert_int_equal(n, 2);
    assert_string_equal(list[0].cube_id, "c0"); /* sorted */
    assert_string_equal(list[1].cube_id, "c1");
    for (size_t i = 0; i < n; i++)
        mg_cube_clear(&list[i]);
    free(list);

    op = (mg_store_op){.kind = MG_STORE_CUBE_DELETE, .cube_id = "c1"};
    assert_int_equal(apply1(s, &op), MG_OK);
    assert_int_equal(apply1(s, &op), MG_ENOTFOUND);
    assert_int_equal(mg_store_cube_get(s, "c1", &got, NULL), MG_ENOTFOUND);

    mg_user u = {0};
    snprintf(u.user_id, sizeof u.user_id, "bob");
    u.name = "Bob";
    u.role = MG_ROLE_ADMIN;
    snprintf(u.created_at, sizeof u.created_at, "2026-01-01T10:00:00.000000");
    op = (mg_store_op){.kind = MG_STORE_USER_PUT, .flags = MG_STORE_CREATE_ONLY, .user = &u};
    assert_int_equal(apply1(s, &op), MG_OK);
    assert_int_equal(apply1(s, &op), MG_EEXIST);
    mg_user gu = {0};
    assert_int_equal(mg_store_user_get(s, "bob", &gu, NULL), MG_OK);
    assert_string_equal(gu.name, "Bob");
    assert_int_equal(gu.role, MG_ROLE_ADMIN);
    mg_user_clear(&gu);
    op = (mg_store_op){.kind = MG_STORE_USER_DELETE, .user_id = "bob"};
    assert_int_equal(apply1(s, &op), MG_OK);
    assert_int_equal(apply1(s, &op), MG_ENOTFOUND);
    assert_int_equal(mg_store_user_get(s, "bob", &gu, NULL), MG_ENOTFOUND);
    mg_store_close(s);
    tmpdir_free(dir);
}

static void test_memory_crud(void **state)
{
    (void)state;
    char *dir = tmpdir_new();
    mg_store *s = store_open(dir, NULL);
    put_cube(s, "c", 0);
    mem m[3];
    for (uint32_t i = 0; i < 3; i++)
        mem_make(&m[i], i);
    assert_int_equal(put_mems(s, 0, "c", m, 2, true, NULL), MG_OK);
    assert_int_equal(put_mems(s, 0, "c", m + 2, 1, false, NULL), MG_OK);
    assert_int_equal(count(s, "c"), 3);

    mg_cube c = {0}; /* the first vector fixed the dimension */
    assert_int_equal(mg_store_cube_get(s, "c", &c, NULL), MG_OK);
    assert_int_equal(c.dim, DIM);
    mg_cube_clear(&c);

    mg_item it = {0};
    float *vec;
    uint32_t dim;
    assert_int_equal(mg_store_mem_get(s, "c", m[1].id, &it, &vec, &dim, NULL), MG_OK);
    assert_memory_equal(it.id, m[1].id, 16);
    assert_string_equal(it.memory, "memory number 1");
    assert_int_equal(json_integer_value(json_object_get(it.metadata, "rank")), 1);
    assert_int_equal(dim, DIM);
    assert_memory_equal(vec, m[1].vec, sizeof m[1].vec);
    free(vec);
    mg_item_clear(&it);
    assert_int_equal(mg_store_mem_get(s, "c", m[2].id, &it, &vec, &dim, NULL), MG_OK);
    assert_null(vec);
    assert_int_equal(dim, 0);
    mg_item_clear(&it);

    char cube[MG_CUBE_ID_MAX + 1];
    assert_int_equal(mg_store_mem_find(s, m[0].id, cube, NULL), MG_OK);
    assert_string_equal(cube, "c");

    /* a put without vector replaces the memory and drops its vector */
    assert_int_equal(put_mems(s, 0, "c", m, 1, false, NULL), MG_OK);
    assert_int_equal(count(s, "c"), 3);
    assert_int_equal(mg_store_mem_get(s, "c", m[0].id, &it, &vec, &dim, NULL), MG_OK);
    assert_null(vec);
    mg_item_clear(&it);
    uint8_t ids[16 * 4];
    size_t nh;
    search_ids(s, "c", m[0].vec, 4, ids, &nh);
    assert_int_equal(nh, 1);
    assert_memory_equal(ids, m[1].id, 16);

    mg_store_op op = {.kind = MG_STORE_MEM_DELETE, .cube_id = "c", .mem_id = m[1].id};
    assert_int_equal(apply1(s, &op), MG_OK);
    assert_int_equal(apply1(s, &op), MG_ENOTFOUND);
    assert_int_equal(count(s, "c"), 2);
    assert_int_equal(mg_store_mem_find(s, m[1].id, cube, NULL), MG_ENOTFOUND);
    search_ids(s, "c", m[0].vec, 4, ids, &nh);
    assert_int_equal(nh, 0);
    mg_store_close(s);
    tmpdir_free(dir);
}

static void test_pagination(void **state)
{
    (void)state;
    char *dir = tmpdir_new();
    mg_store *s = store_open(dir, NULL);
    put_cube(s, "a", 0);
    put_cube(s, "b", 0); /* neighbours must not leak into a's pages */
    put_cube(s, "a-", 0);
    enum { N = 1000, PAGE = 37 };
    mem *m = calloc(N, sizeof *m);
    for (uint32_t i = 0; i < N; i++)
        mem_make(&m[i], i);
    assert_int_equal(put_mems(s, 0, "a", m, N, false, NULL), MG_OK);
    mem extra[2];
    mem_make(&extra[0], N), mem_make(&extra[1], N + 1);
    assert_int_equal(put_mems(s, 0, "b", extra, 1, false, NULL), MG_OK);
    assert_int_equal(put_mems(s, 0, "a-", extra + 1, 1, false, NULL), MG_OK);
    assert_int_equal(count(s, "a"), N);
    qsort(m, N, sizeof *m, id_cmp);

    for (int pass = 0; pass < 2; pass++) {
        mg_filter *f = pass ? filter_of("{\"memory_type\": \"UserMemory\"}") : NULL;
        size_t seen = 0, pages = 0, want_i = 0;
        uint8_t after[16];
        bool more = true;
        while (more) {
            mg_item *items;
            size_t n;
            assert_int_equal(
                mg_store_mem_list(s, "a", f, pages ? after : NULL, PAGE, &items, &n, &more, NULL),
                MG_OK);
            assert_true(n <= PAGE);
            assert_true(!more || n == PAGE);
            if (n > 0)
                memcpy(after, items[n - 1].id, 16);
            for (size_t i = 0; i < n; i++, seen++) {
                while (pass && m[want_i].n % TYPES != 1)
                    want_i++;
                assert_memory_equal(items[i].id, m[want_i++].id, 16);
                mg_item_clear(&items[i]);
            }
            free(items);
            pages++;
        }
        size_t want = pass ? (N + 1) / 3 : N;
        assert_int_equal(seen, want);
        assert_int_equal(pages, (want + PAGE - 1) / PAGE);
        mg_filter_free(f);
    }
    free(m);
    mg_store_close(s);
    tmpdir_free(dir);
}

static void test_delete_cube_and_where(void **state)
{
    (void)state;
    char *dir = tmpdir_new(), *dir2 = tmpdir_new();
    mg_store *s = store_open(dir, NULL), *ref = store_open(dir2, NULL);
    enum { N = 300 };
    mem m[N];
    for (uint32_t i = 0; i < N; i++)
        mem_make(&m[i], i);
    put_cube(s, "gone", 0);
    put_cube(s, "kept", 0);
    put_cube(ref, "kept", 0);
    assert_int_equal(put_mems(s, 0, "gone", m, N / 2, true, NULL), MG_OK);
    assert_int_equal(put_mems(s, 0, "kept", m + N / 2, N / 2, true, NULL), MG_OK);
    assert_int_equal(put_mems(ref, 0, "kept", m + N / 2, N / 2, true, NULL), MG_OK);

    mg_store_op op = {.kind = MG_STORE_CUBE_DELETE, .cube_id = "gone"};
    int res;
    size_t cnt;
    assert_int_equal(mg_store_apply(s, 0, &op, 1, &res, &cnt, NULL, NULL), MG_OK);
    assert_int_equal(res, MG_OK);
    assert_int_equal(cnt, N / 2);
    /* memories, vectors, memids and the count are gone: equal to a store
     * that never had the cube */
    assert_true(digest(s) == digest(ref));
    assert_int_equal(count(s, "gone"), 0);
    char cube[MG_CUBE_ID_MAX + 1];
    assert_int_equal(mg_store_mem_find(s, m[0].id, cube, NULL), MG_ENOTFOUND);
    /* the cube can come back with another dimension */
    put_cube(s, "gone", DIM + 1);

    /* delete where rank < 200 in "kept" (ranks 150..299) */
    mg_filter *f = filter_of("{\"rank\": {\"lt\": 200}}");
    op = (mg_store_op){.kind = MG_STORE_MEM_DELETE_WHERE, .cube_id = "kept", .filter = f};
    assert_int_equal(mg_store_apply(s, 0, &op, 1, &res, &cnt, NULL, NULL), MG_OK);
    assert_int_equal(res, MG_OK);
    assert_int_equal(cnt, 50);
    assert_int_equal(count(s, "kept"), N / 2 - 50);
    assert_int_equal(mg_store_mem_find(s, m[150].id, cube, NULL), MG_ENOTFOUND);
    assert_int_equal(mg_store_mem_find(s, m[200].id, cube, NULL), MG_OK);
    mem *rest[1] = {m + 200};
    size_t nrest[1] = {N - 200};
    const char *cubes[1] = {"kept"};
    check_search(s, cubes, 1, rest, nrest, (int[]){-1}, m[160].vec, 20);
    assert_int_equal(mg_store_apply(s, 0, &op, 1, &res, &cnt, NULL, NULL), MG_OK);
    assert_int_equal(cnt, 0);
    op.cube_id = "nope";
    assert_int_equal(apply1(s, &op), MG_ENOTFOUND);
    mg_filter_free(f);
    mg_store_close(s);
    mg_store_close(ref);
    tmpdir_free(dir);
    tmpdir_free(dir2);
}

static void test_reopen_and_idempotence(void **state)
{
    (void)state;
    char *dir = tmpdir_new();
    mg_store *s = store_open(dir, NULL);
    assert_true(mg_store_applied(s) == 0);
    put_cube(s, "c", 0);
    enum { N = 200 };
    mem m[N];
    for (uint32_t i = 0; i < N; i++)
        mem_make(&m[i], i);
    assert_int_equal(put_mems(s, 3, "c", m, 100, true, NULL), MG_OK);
    assert_int_equal(put_mems(s, 5, "c", m + 100, 100, true, NULL), MG_OK);
    assert_true(mg_store_applied(s) == 5);
    uint64_t d = digest(s);

    /* replays at or below the applied index change nothing */
    mg_store_op op = {.kind = MG_STORE_CUBE_DELETE, .cube_id = "c"};
    for (uint64_t idx = 3; idx <= 5; idx += 2) {
        int res = -1;
        bool applied = true;
        assert_int_equal(mg_store_apply(s, idx, &op, 1, &res, NULL, &applied, NULL), MG_OK);
        assert_false(applied);
        assert_int_equal(res, MG_OK);
    }
    assert_true(digest(s) == d);
    assert_true(mg_store_applied(s) == 5);

    uint8_t before[16 * 10], after[16 * 10];
    size_t nb, na;
    search_ids(s, "c", m[7].vec, 10, before, &nb);
    mg_store_close(s);
    s = store_open(dir, NULL);
    assert_true(mg_store_applied(s) == 5);
    assert_true(digest(s) == d);
    assert_int_equal(count(s, "c"), N);
    search_ids(s, "c", m[7].vec, 10, after, &na);
    assert_int_equal(na, 10);
    assert_int_equal(nb, na);
    assert_memory_equal(before, after, 16 * na);
    mem *all[1] = {m};
    size_t n_all[1] = {N};
    const char *cubes[1] = {"c"};
    check_search(s, cubes, 1, all, n_all, (int[]){-1}, m[9].vec, 10);

    bool applied = false;
    int res;
    assert_int_equal(mg_store_apply(s, 6, &op, 1, &res, NULL, &applied, NULL), MG_OK);
    assert_true(applied);
    assert_true(mg_store_applied(s) == 6);
    /* index 0 applies without touching the stored index */
    put_cube(s, "z", 0);
    assert_true(mg_store_applied(s) == 6);
    mg_store_close(s);
    tmpdir_free(dir);
}

static void test_per_op_errors(void **state)
{
    (void)state;
    char *dir = tmpdir_new(), *dir2 = tmpdir_new();
    mg_store *s = store_open(dir, NULL), *ref = store_open(dir2, NULL);
    put_cube(s, "c", DIM);
    put_cube(ref, "c", DIM);
    mem m[4];
    for (uint32_t i = 0; i < 4; i++)
        mem_make(&m[i], i);
    assert_int_equal(put_mems(s, 0, "c", m, 1, true, NULL), MG_OK);
    assert_int_equal(put_mems(ref, 0, "c", m, 1, true, NULL), MG_OK);
    assert_int_equal(put_mems(ref, 0, "c", m + 1, 1, true, NULL), MG_OK);
    uint64_t d_before = digest(s);

    mg_item good, dup, big, badmeta;
    item_make(&good, &m[1]);
    item_make(&dup, &m[0]);
    item_make(&big, &m[2]);
    free(big.memory);
    big.memory_len = MG_MEMORY_TEXT_MAX + 1;
    big.memory = malloc(big.memory_len + 1);
    memset(big.memory, 'x', big.memory_len);
    big.memory[big.memory_len] = '\0';
    item_make(&badmeta, &m[3]);
    json_object_set_new(badmeta.metadata, "tags", json_integer(3));
    float nan_vec[DIM], zero_vec[DIM] = {0};
    memcpy(nan_vec, m[1].vec, sizeof nan_vec);
    nan_vec[3] = NAN;
    mg_cube again, badcube;
    cube_make(&again, "c", DIM);
    cube_make(&badcube, "bad/id", 0);
    mg_user baduser = {0};
    snprintf(baduser.user_id, sizeof baduser.user_id, "bad\x01user");

    const mg_store_op ops[] = {
        {.kind = MG_STORE_MEM_PUT, .cube_id = "nope", .item = &good, .vec = m[1].vec, .dim = DIM},
        {.kind = MG_STORE_MEM_PUT, .cube_id = "c", .item = &good, .vec = m[1].vec, .dim = DIM - 1},
        {.kind = MG_STORE_CUBE_PUT, .flags = MG_STORE_CREATE_ONLY, .cube = &again},
        {.kind = MG_STORE_MEM_PUT, .cube_id = "c", .item = &good, .vec = nan_vec, .dim = DIM},
        {.kind = MG_STORE_MEM_PUT, .cube_id = "c", .item = &good, .vec = zero_vec, .dim = DIM},
        {.kind = MG_STORE_MEM_PUT, .cube_id = "c", .item = &big, .vec = m[2].vec, .dim = DIM},
        {.kind = MG_STORE_MEM_PUT, .cube_id = "c", .item = &badmeta},
        {.kind = MG_STORE_MEM_PUT, .flags = MG_STORE_CREATE_ONLY, .cube_id = "c", .item = &dup},
        {.kind = MG_STORE_MEM_PUT, .flags = MG_STORE_UPDATE_ONLY, .cube_id = "c", .item = &good},
        {.kind = MG_STORE_MEM_PUT, .cube_id = "c", .item = &good, .vec = m[1].vec, .dim = DIM},
        {.kind = MG_STORE_MEM_DELETE, .cube_id = "c", .mem_id = m[3].id},
        {.kind = MG_STORE_CUBE_PUT, .cube = &badcube},
        {.kind = MG_STORE_USER_PUT, .user = &baduser},
        {.kind = MG_STORE_MEM_PUT, .cube_id = "bad id", .item = &good},
        {.kind = 99},
    };
    const int want[] = {MG_ENOTFOUND, MG_EDIM,   MG_EEXIST, MG_ENAN,      MG_EINVAL,
                        MG_ETOOBIG,   MG_EINVAL, MG_EEXIST, MG_ENOTFOUND, MG_OK,
                        MG_ENOTFOUND, MG_EINVAL, MG_EINVAL, MG_EINVAL,    MG_EINVAL};
    enum { NOPS = sizeof ops / sizeof ops[0] };
    int res[NOPS];
    size_t cnt[NOPS];
    assert_int_equal(mg_store_apply(s, 0, ops, NOPS, res, cnt, NULL, NULL), MG_OK);
    for (size_t i = 0; i < NOPS; i++) {
        if (res[i] != want[i])
            print_error("op %zu: %s, want %s\n", i, mg_errname(res[i]), mg_errname(want[i]));
        assert_int_equal(res[i], want[i]);
        assert_int_equal(cnt[i], want[i] == MG_OK ? 1 : 0);
    }
    /* only the good put landed: same data as a store that got just it */
    assert_true(digest(s) != d_before);
    assert_true(digest(s) == digest(ref));
    assert_int_equal(count(s, "c"), 2);
    mg_item_clear(&good), mg_item_clear(&dup), mg_item_clear(&big), mg_item_clear(&badmeta);
    mg_store_close(s);
    mg_store_close(ref);
    tmpdir_free(dir);
    tmpdir_free(dir2);
}

static void test_snapshot_install(void **state)
{
    (void)state;
    char *da = tmpdir_new(), *db = tmpdir_new();
    mg_store *a = store_open(da, NULL), *b = store_open(db, NULL);
    enum { N = 400 };
    mem m[N];
    for (uint32_t i = 0; i < N; i++)
        mem_make(&m[i], i);
    put_cube(a, "c", 0);
    assert_int_equal(put_mems(a, 7, "c", m, N, true, NULL), MG_OK);
    put_cube(b, "other", 0);
    assert_int_equal(put_mems(b, 2, "other", m, 10, true, NULL), MG_OK);
    uint64_t da_digest = digest(a), db_digest = digest(b);
    assert_true(da_digest != db_digest);

    void *buf;
    size_t len;
    assert_int_equal(mg_store_export_buf(a, &buf, &len, NULL), MG_OK);
    assert_true(len > 0);

    /* garbage, then a truncated copy: refused, b unchanged and usable */
    uint8_t junk[8192];
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = (uint8_t)rng();
    mg_error err = {0};
    assert_int_equal(mg_store_install_buf(b, junk, sizeof junk, &err), MG_ECORRUPT);
    assert_non_null(strstr(err.msg, "install"));
    assert_int_equal(mg_store_install_buf(b, buf, len / 2, NULL), MG_ECORRUPT);
    assert_true(digest(b) == db_digest);
    assert_true(mg_store_applied(b) == 2);
    assert_int_equal(count(b, "other"), 10);
    assert_int_equal(access(db, F_OK), 0);
    char leftover[512];
    snprintf(leftover, sizeof leftover, "%s/install.mdb.tmp", db);
    assert_int_not_equal(access(leftover, F_OK), 0);

    assert_int_equal(mg_store_install_buf(b, buf, len, NULL), MG_OK);
    free(buf);
    assert_true(digest(b) == da_digest);
    assert_true(mg_store_applied(b) == 7);
    assert_int_not_equal(access(leftover, F_OK), 0);
    snprintf(leftover, sizeof leftover, "%s/data.mdb.bak", db);
    assert_int_not_equal(access(leftover, F_OK), 0);
    assert_int_equal(count(b, "c"), N);
    assert_int_equal(count(b, "other"), 0);
    for (int t = 0; t < 5; t++) {
        uint8_t ia[16 * 10], ib[16 * 10];
        size_t na, nb;
        search_ids(a, "c", m[t * 31].vec, 10, ia, &na);
        search_ids(b, "c", m[t * 31].vec, 10, ib, &nb);
        assert_int_equal(na, nb);
        assert_memory_equal(ia, ib, 16 * na);
    }
    uint8_t none[16 * 10];
    size_t n_none;
    search_ids(b, "other", m[0].vec, 10, none, &n_none);
    assert_int_equal(n_none, 0);
    /* b keeps working after the install and after a reopen */
    put_cube(b, "later", 0);
    mg_store_close(b);
    b = store_open(db, NULL);
    assert_int_equal(count(b, "c"), N);

    /* export to a file descriptor gives an installable copy too */
    char path[512];
    snprintf(path, sizeof path, "%s/export.mdb", da);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(mg_store_export_fd(a, fd, NULL), MG_OK);
    off_t size = lseek(fd, 0, SEEK_END);
    void *copy = malloc((size_t)size);
    assert_int_equal(pread(fd, copy, (size_t)size, 0), size);
    close(fd);
    assert_int_equal(mg_store_install_buf(b, copy, (size_t)size, NULL), MG_OK);
    free(copy);
    assert_true(digest(b) == da_digest);
    mg_store_close(a);
    mg_store_close(b);
    tmpdir_free(da);
    tmpdir_free(db);
}

static void test_map_growth_and_full(void **state)
{
    (void)state;
    char *dir = tmpdir_new();
    mg_store_options o = {.map_size = 1 << 20, .sync = MG_STORE_SYNC_NONE};
    mg_store *s = store_open(dir, &o);
    put_cube(s, "c", 0);
    enum { N = 20000, BATCH = 1000 };
    mem *m = calloc(N, sizeof *m);
    for (uint32_t i = 0; i < N; i++)
        mem_make(&m[i], i);
    for (size_t i = 0; i < N; i += BATCH)
        assert_int_equal(put_mems(s, 0, "c", m + i, BATCH, true, NULL), MG_OK);
    size_t used, map;
    assert_int_equal(mg_store_stat(s, &used, &map, NULL), MG_OK);
    assert_true(used > 4u << 20);
    assert_true(map >= used);
    assert_int_equal(count(s, "c"), N);
    mg_store_close(s);
    tmpdir_free(dir);

    dir = tmpdir_new();
    o.map_max = 2 << 20;
    s = store_open(dir, &o);
    put_cube(s, "c", 0);
    uint64_t before_n = 0, before_d = 0;
    int rc = MG_OK;
    mg_error err = {0};
    for (size_t i = 0; i < N && rc == MG_OK; i += BATCH) {
        before_n = count(s, "c");
        before_d = digest(s);
        rc = put_mems(s, 0, "c", m + i, BATCH, true, &err);
    }
    assert_int_equal(rc, MG_EFULL);
    assert_non_null(strstr(err.msg, "full"));
    assert_true(count(s, "c") == before_n);
    assert_true(digest(s) == before_d);
    assert_true(before_n > 0);
    /* still readable and searchable */
    uint8_t ids[16 * 5];
    size_t nh;
    search_ids(s, "c", m[0].vec, 5, ids, &nh);
    assert_int_equal(nh, 5);
    free(m);
    mg_store_close(s);
    tmpdir_free(dir);
}

static void test_damaged_files(void **state)
{
    (void)state;
    /* plain LMDB with a key in the main database */
    char *dir = tmpdir_new();
    MDB_env *env;
    MDB_txn *txn;
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_open(env, dir, 0, 0644), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    MDB_dbi dbi;
    assert_int_equal(mdb_dbi_open(txn, NULL, 0, &dbi), 0);
    MDB_val k = {5, "hello"}, v = {5, "world"};
    assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
    mg_store *s = NULL;
    mg_error err = {0};
    assert_int_equal(mg_store_open(dir, NULL, &s, &err), MG_ECORRUPT);
    assert_null(s);
    assert_non_null(strstr(err.msg, "not a memgrid store"));
    assert_non_null(strstr(err.msg, dir));
    tmpdir_free(dir);

    /* garbage in data.mdb */
    dir = tmpdir_new();
    char path[512];
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    FILE *f = fopen(path, "wb");
    for (int i = 0; i < 65536; i++)
        fputc((int)(rng() & 0xff), f);
    fclose(f);
    err = (mg_error){0};
    assert_int_equal(mg_store_open(dir, NULL, &s, &err), MG_ECORRUPT);
    assert_non_null(strstr(err.msg, dir));
    tmpdir_free(dir);

    /* a newer schema */
    dir = tmpdir_new();
    s = store_open(dir, NULL);
    mg_store_close(s);
    assert_int_equal(mdb_env_create(&env), 0);
    mdb_env_set_maxdbs(env, 8);
    assert_int_equal(mdb_env_open(env, dir, 0, 0644), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "meta", 0, &dbi), 0);
    k = (MDB_val){6, "schema"};
    v = (MDB_val){4, (uint8_t[4]){MG_STORE_SCHEMA + 1, 0, 0, 0}};
    assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
    err = (mg_error){0};
    assert_int_equal(mg_store_open(dir, NULL, &s, &err), MG_EVERSION);
    assert_non_null(strstr(err.msg, dir));
    tmpdir_free(dir);
}

static void test_search_brute_force(void **state)
{
    (void)state;
    char *dir = tmpdir_new();
    mg_store *s = store_open(dir, NULL);
    enum { C = 3, N = 300 };
    const char *cubes[C] = {"s0", "s1", "s2"};
    mem *m[C];
    size_t n[C];
    for (size_t c = 0; c < C; c++) {
        put_cube(s, cubes[c], 0);
        m[c] = calloc(N, sizeof(mem));
        n[c] = N - 50 * c;
        for (uint32_t i = 0; i < n[c]; i++)
            mem_make(&m[c][i], (uint32_t)(c * N + i));
        assert_int_equal(put_mems(s, 0, cubes[c], m[c], n[c], true, NULL), MG_OK);
    }
    const int filter_sets[][C] = {{-1, -1, -1}, {0, -1, 2}, {1, 1, 1}, {-1, 2, -1}};
    for (size_t t = 0; t < sizeof filter_sets / sizeof filter_sets[0]; t++) {
        for (int r = 0; r < 4; r++) {
            float q[DIM];
            for (int i = 0; i < DIM; i++)
                q[i] = (float)((double)(rng() >> 11) / 9007199254740992.0 - 0.5);
            check_search(s, cubes, C, m, n, filter_sets[t], q, (size_t)(1 + r * 7));
            check_search(s, cubes + 1, 1, m + 1, n + 1, filter_sets[t] + 1, q, 10);
        }
    }
    /* an absent cube gives nothing; a wrong query dimension is refused */
    const char *absent[2] = {"s0", "nope"};
    check_search(s, absent, 2, m, (size_t[]){n[0], 0}, (int[]){-1, -1}, m[0][0].vec, 5);
    mg_store_query bad = {
        .vec = m[0][0].vec, .dim = DIM - 1, .cube_ids = cubes, .n_cubes = 1, .k = 3};
    mg_index_hit hits[3];
    size_t nh;
    assert_int_equal(mg_store_search(s, &bad, hits, &nh, NULL), MG_EDIM);
    for (size_t c = 0; c < C; c++)
        free(m[c]);
    mg_store_close(s);
    tmpdir_free(dir);
}

/* ---- concurrency ------------------------------------------------------------ */

struct conc {
    mg_store *s;
    mem *m[2]; /* the same memories with two sets of vectors */
    size_t n, batch, passes;
    const mg_filter *filter; /* memory_type == types[1] */
    atomic_bool done;
    atomic_int failures, overlapped;
};

/* Puts m[0], then replaces every vector with m[1]'s, then back: the
 * replacements leave dead rows, which get the index compacted under the
 * readers. */
static void *conc_writer(void *arg)
{
    struct conc *c = arg;
    uint64_t index = 1;
    for (size_t pass = 0; pass < c->passes; pass++) {
        for (size_t i = 0; i < c->n; i += c->batch) {
            mg_error err = {0};
            if (put_mems(c->s, index++, "c", c->m[pass % 2] + i, c->batch, true, &err) != MG_OK)
                atomic_fetch_add(&c->failures, 1);
        }
    }
    atomic_store(&c->done, true);
    return NULL;
}

static void conc_fail_at(struct conc *c, bool failed, int line)
{
    if (failed && atomic_fetch_add(&c->failures, 1) == 0)
        print_error("reader check at line %d failed\n", line);
}
#define conc_fail(c, failed) conc_fail_at((c), (failed), __LINE__)

static void *conc_reader(void *arg)
{
    struct conc *c = arg;
    mg_index_hit *all = calloc(c->n, sizeof *all);
    uint64_t last = 0;
    for (int round = 0; !atomic_load(&c->done) || round < 3; round++) {
        if (!atomic_load(&c->done))
            atomic_fetch_add(&c->overlapped, 1);
        uint64_t n = 0;
        /* monotonic, and a batch is seen whole or not at all */
        conc_fail(c, mg_store_mem_count(c->s, "c", &n, NULL) != MG_OK || n < last ||
                         n % c->batch != 0);
        last = n;
        const char *cubes[1] = {"c"};
        const mg_filter *filters[1] = {c->filter};
        mg_store_query q = {
            .vec = c->m[0][round % 50].vec, .dim = DIM, .cube_ids = cubes, .n_cubes = 1, .k = 5};
        mg_index_hit hits[5];
        size_t nh;
        /* the index is at least as new as the count read before */
        conc_fail(c, mg_store_search(c->s, &q, hits, &nh, NULL) != MG_OK || nh < (n < 5 ? n : 5) ||
                         nh > 5);
        /* every vector: the index, too, shows whole batches */
        q.k = c->n;
        conc_fail(c, mg_store_search(c->s, &q, all, &nh, NULL) != MG_OK || nh % c->batch != 0);
        q.k = 5;
        q.filters = filters;
        conc_fail(c, mg_store_search(c->s, &q, hits, &nh, NULL) != MG_OK);
        for (size_t i = 0; i < nh; i++) {
            uint32_t idn;
            memcpy(&idn, hits[i].id + 8, 4); /* mem_make puts n there */
            conc_fail(c, idn % TYPES != 1);
        }
        mg_item *items;
        size_t ni;
        bool more;
        conc_fail(c, mg_store_mem_list(c->s, "c", c->filter, NULL, 10, &items, &ni, &more, NULL) !=
                         MG_OK);
        for (size_t i = 0; i < ni; i++)
            mg_item_clear(&items[i]);
        free(items);
        mg_item it = {0};
        int rc = mg_store_mem_get(c->s, "c", c->m[0][0].id, &it, NULL, NULL, NULL);
        conc_fail(c, rc != MG_OK && rc != MG_ENOTFOUND);
        mg_item_clear(&it);
    }
    free(all);
    return NULL;
}

static void test_concurrent_readers(void **state)
{
    (void)state;
    char *dir = tmpdir_new();
    /* a small map so that growth (exclusive lock) happens under the readers */
    mg_store_options o = {.map_size = 1 << 20, .sync = MG_STORE_SYNC_NONE};
    mg_store *s = store_open(dir, &o);
    put_cube(s, "c", 0);
    struct conc c = {.s = s, .n = 2000, .batch = 50, .passes = 3};
    mg_filter *f = filter_of("{\"memory_type\": \"UserMemory\"}");
    c.filter = f;
    for (int v = 0; v < 2; v++) {
        c.m[v] = calloc(c.n, sizeof(mem));
        for (uint32_t i = 0; i < c.n; i++)
            mem_make(&c.m[v][i], i);
    }
    pthread_t w, r[3];
    for (int i = 0; i < 3; i++)
        pthread_create(&r[i], NULL, conc_reader, &c);
    pthread_create(&w, NULL, conc_writer, &c);
    pthread_join(w, NULL);
    for (int i = 0; i < 3; i++)
        pthread_join(r[i], NULL);
    assert_int_equal(atomic_load(&c.failures), 0);
    assert_true(atomic_load(&c.overlapped) > 0);
    assert_int_equal(count(s, "c"), c.n);
    assert_true(mg_store_applied(s) == c.passes * c.n / c.batch);
    /* after the replacements (and compaction) the index holds the last vectors */
    const char *cubes[1] = {"c"};
    check_search(s, cubes, 1, &c.m[0], &c.n, (int[]){-1}, c.m[1][5].vec, 10);
    check_search(s, cubes, 1, &c.m[0], &c.n, (int[]){1}, c.m[1][6].vec, 10);
    mg_filter_free(f);
    free(c.m[0]);
    free(c.m[1]);
    mg_store_close(s);
    tmpdir_free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cube_and_user_crud),
        cmocka_unit_test(test_memory_crud),
        cmocka_unit_test(test_pagination),
        cmocka_unit_test(test_delete_cube_and_where),
        cmocka_unit_test(test_reopen_and_idempotence),
        cmocka_unit_test(test_per_op_errors),
        cmocka_unit_test(test_snapshot_install),
        cmocka_unit_test(test_map_growth_and_full),
        cmocka_unit_test(test_damaged_files),
        cmocka_unit_test(test_search_brute_force),
        cmocka_unit_test(test_concurrent_readers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
