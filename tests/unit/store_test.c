/* storage/store: cube and user CRUD, memory CRUD, pagination, delete cube and
 * delete where, reopen and idempotent apply, per-op errors and bad input.
 * Snapshots, map growth and damaged files are in store_snapshot_test.c;
 * search against brute force and concurrency in store_search_test.c. */
#include "store_test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int id_cmp(const void *a, const void *b)
{
    return memcmp(((const mem *)a)->id, ((const mem *)b)->id, 16);
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

/* mg_store_mem_visit: records exactly as stored, vectors as given, absent
 * memories skipped, the callback's code returned; and a search's vecs
 * output: each hit's normalized vector. */
typedef struct visit_log {
    size_t n, idx[8], rec_len[8];
    uint32_t dim[8];
    float vec0[DIM];
    uint8_t rec1[4096]; /* the record of refs[2] */
    int stop_after;     /* 0: never */
} visit_log;

static int visit_cb(void *arg, size_t i, const void *record, size_t record_len, const void *vec_le,
                    uint32_t dim)
{
    visit_log *v = arg;
    v->idx[v->n] = i;
    v->rec_len[v->n] = record_len;
    v->dim[v->n] = dim;
    if (i == 0 && vec_le != NULL)
        memcpy(v->vec0, vec_le, sizeof v->vec0);
    if (i == 2 && record_len <= sizeof v->rec1) /* refs[2]: m[1] */
        memcpy(v->rec1, record, record_len);
    v->n++;
    return v->stop_after && v->n == (size_t)v->stop_after ? MG_EBUSY : MG_OK;
}

static void test_mem_visit_and_search_vecs(void **state)
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

    mem absent;
    mem_make(&absent, 7);
    mg_store_mem_ref refs[4] = {{"c", m[0].id}, {"c", absent.id}, {"c", m[1].id}, {"c", m[2].id}};
    visit_log v = {0};
    assert_int_equal(mg_store_mem_visit(s, refs, 4, true, visit_cb, &v, NULL), MG_OK);
    assert_int_equal(v.n, 3);
    assert_int_equal(v.idx[0], 0);
    assert_int_equal(v.idx[1], 2);
    assert_int_equal(v.idx[2], 3);
    assert_int_equal(v.dim[0], DIM);
    assert_int_equal(v.dim[2], 0); /* m[2] has no vector */
    assert_memory_equal(v.vec0, m[0].vec, sizeof v.vec0);
    /* Record bytes: what mg_item_encode gives for the memory. */
    mg_item it = {0};
    char *enc;
    size_t enc_len;
    assert_int_equal(mg_store_mem_get(s, "c", m[1].id, &it, NULL, NULL, NULL), MG_OK);
    assert_int_equal(mg_item_encode(&it, &enc, &enc_len), MG_OK);
    assert_int_equal(v.rec_len[1], enc_len);
    assert_memory_equal(v.rec1, enc, enc_len);
    free(enc);
    mg_item_clear(&it);

    /* Without vectors; a callback's error stops the walk and is returned. */
    memset(&v, 0, sizeof v);
    v.stop_after = 1;
    assert_int_equal(mg_store_mem_visit(s, refs, 4, false, visit_cb, &v, NULL), MG_EBUSY);
    assert_int_equal(v.n, 1);
    assert_int_equal(v.dim[0], 0);
    /* An invalid cube id reads nothing. */
    mg_store_mem_ref bad = {"bad id!", m[0].id};
    memset(&v, 0, sizeof v);
    assert_int_equal(mg_store_mem_visit(s, &bad, 1, true, visit_cb, &v, NULL), MG_EINVAL);
    assert_int_equal(v.n, 0);

    /* The search copies out each hit's normalized vector. */
    const char *cubes[] = {"c"};
    mg_index_hit hits[2];
    float vecs[2 * DIM];
    size_t nh = 0;
    mg_store_query q = {
        .vec = m[1].vec, .dim = DIM, .cube_ids = cubes, .n_cubes = 1, .k = 2, .vecs = vecs};
    assert_int_equal(mg_store_search(s, &q, hits, &nh, NULL), MG_OK);
    assert_int_equal(nh, 2);
    assert_memory_equal(hits[0].id, m[1].id, 16);
    for (size_t h = 0; h < nh; h++) {
        const mem *src = memcmp(hits[h].id, m[0].id, 16) == 0 ? &m[0] : &m[1];
        double n = norm(src->vec);
        for (uint32_t d = 0; d < DIM; d++)
            assert_true(fabs((double)vecs[h * DIM + d] - src->vec[d] / n) < 1e-5);
    }
    mg_store_close(s);
    tmpdir_free(dir);
}

/* The "sys" table: put, get, replace, limits, applied-index idempotence,
 * export + install and the digest. */
static int sys_put(mg_store *s, uint64_t index, const char *key, const void *val, size_t len,
                   int flags)
{
    mg_store_op op = {.kind = MG_STORE_SYS_PUT, .flags = flags, .sys_key = key,
                      .record = val, .record_len = len};
    int res = -1;
    assert_int_equal(mg_store_apply(s, index, &op, 1, &res, NULL, NULL, NULL), MG_OK);
    return res;
}

static void assert_sys(mg_store *s, const char *key, const char *want)
{
    void *val = NULL;
    size_t len = 0;
    assert_int_equal(mg_store_sys_get(s, key, &val, &len, NULL), MG_OK);
    assert_int_equal(len, strlen(want));
    assert_memory_equal(val, want, len);
    free(val);
}

static void test_sys_records(void **state)
{
    (void)state;
    char *dir = tmpdir_new();
    mg_store *s = store_open(dir, NULL);
    void *val = (void *)1;
    size_t len = 7;
    mg_error err = {0};
    assert_int_equal(mg_store_sys_get(s, "cmap", &val, &len, &err), MG_ENOTFOUND);
    assert_null(val);
    assert_int_equal(len, 0);

    uint64_t d0 = digest(s);
    assert_int_equal(sys_put(s, 1, "cmap", "first", 5, 0), MG_OK);
    assert_sys(s, "cmap", "first");
    uint64_t d1 = digest(s);
    assert_true(d1 != d0);
    /* replace */
    assert_int_equal(sys_put(s, 2, "cmap", "second", 6, 0), MG_OK);
    assert_sys(s, "cmap", "second");
    uint64_t d2 = digest(s);
    assert_true(d2 != d1);
    assert_int_equal(sys_put(s, 3, "cmap", "x", 1, MG_STORE_CREATE_ONLY), MG_EEXIST);
    assert_int_equal(sys_put(s, 4, "other", "x", 1, MG_STORE_UPDATE_ONLY), MG_ENOTFOUND);
    /* a replay at or below the applied index changes nothing */
    assert_int_equal(sys_put(s, 2, "cmap", "replayed", 8, 0), MG_OK);
    assert_sys(s, "cmap", "second");
    assert_true(mg_store_applied(s) == 4);

    /* limits: key ≤ 64 bytes, value ≤ 1 MiB; refused ops change nothing */
    char key65[66];
    memset(key65, 'k', 65);
    key65[65] = '\0';
    assert_int_equal(sys_put(s, 0, key65, "v", 1, 0), MG_EINVAL);
    assert_int_equal(sys_put(s, 0, "", "v", 1, 0), MG_EINVAL);
    assert_int_equal(sys_put(s, 0, NULL, "v", 1, 0), MG_EINVAL);
    size_t big_len = ((size_t)1 << 20) + 1;
    char *big = calloc(1, big_len);
    assert_non_null(big);
    assert_int_equal(sys_put(s, 0, "cmap", big, big_len, 0), MG_ETOOBIG);
    assert_int_equal(sys_put(s, 0, "big", big, big_len - 1, 0), MG_OK); /* exactly 1 MiB */
    free(big);
    assert_sys(s, "cmap", "second");
    assert_int_equal(mg_store_sys_get(s, key65, &val, &len, NULL), MG_EINVAL);
    uint64_t d3 = digest(s);
    assert_true(d3 != d2);

    /* a key of exactly 64 bytes works */
    key65[64] = '\0';
    assert_int_equal(sys_put(s, 0, key65, "k64", 3, 0), MG_OK);
    assert_sys(s, key65, "k64");
    uint64_t d4 = digest(s);

    /* carried by export + install into another store, and by reopening */
    void *copy;
    size_t copy_len;
    assert_int_equal(mg_store_export_buf(s, &copy, &copy_len, NULL), MG_OK);
    char *dir2 = tmpdir_new();
    mg_store *s2 = store_open(dir2, NULL);
    assert_int_equal(mg_store_sys_get(s2, "cmap", &val, &len, NULL), MG_ENOTFOUND);
    assert_int_equal(mg_store_install_buf(s2, copy, copy_len, NULL), MG_OK);
    free(copy);
    assert_sys(s2, "cmap", "second");
    assert_sys(s2, key65, "k64");
    assert_true(digest(s2) == d4);
    mg_store_close(s2);
    tmpdir_free(dir2);
    mg_store_close(s);
    s = store_open(dir, NULL);
    assert_sys(s, "cmap", "second");
    assert_true(digest(s) == d4);
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
        cmocka_unit_test(test_mem_visit_and_search_vecs),
        cmocka_unit_test(test_sys_records),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
