/* storage/store: snapshot export and install (garbage and truncated copies
 * refused with the store unchanged, the same digest and search results after
 * an install, export to a file descriptor), map growth and a full map, and
 * files that are not a usable store (foreign LMDB data, garbage, a newer
 * schema). */
#include "store_test_util.h"

#include <fcntl.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_snapshot_install),
        cmocka_unit_test(test_map_growth_and_full),
        cmocka_unit_test(test_damaged_files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
