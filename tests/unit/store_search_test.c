/* storage/store: search against brute force (several cubes, per-cube
 * filters, an absent cube, a wrong dimension), and readers counting,
 * searching, listing and getting while a writer replaces every vector, the
 * index is compacted and the map grows. */
#include "store_test_util.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
        cmocka_unit_test(test_search_brute_force),
        cmocka_unit_test(test_concurrent_readers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
