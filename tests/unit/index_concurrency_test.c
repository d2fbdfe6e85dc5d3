/*
 * storage/index: readers searching while a writer adds, replaces, removes,
 * compacts and drops. Each answer is checked against what a reader can know
 * (see reader_main); vectors are a pure function of (key, version)
 * (index_test_util.h), so every returned score can be recomputed.
 */
#include "index_test_util.h"

#include "storage/index.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int setup_seed(void **state)
{
    (void)state;
    seed_init("index_concurrency_test");
    return 0;
}

/* ---- readers during writes ------------------------------------------------ */

enum { CDIM = 64, CK = 20, CALL = 4096, READERS = 3, PER_ROUND = 50, MAIN_LIVE = 2000 };

typedef struct shared {
    mg_index *ix;
    _Atomic uint64_t floor; /* every key below was removed for good before this was stored */
    atomic_bool stop;
    atomic_ulong searches;
    pthread_mutex_t mu;
    char failure[512]; /* the first failure a reader saw */
} shared;

typedef struct reader_arg {
    shared *sh;
    uint64_t seed;
} reader_arg;

static void reader_fail(shared *sh, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void reader_fail(shared *sh, const char *fmt, ...)
{
    pthread_mutex_lock(&sh->mu);
    if (sh->failure[0] == '\0') {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(sh->failure, sizeof sh->failure, fmt, ap);
        va_end(ap);
    }
    pthread_mutex_unlock(&sh->mu);
    atomic_store(&sh->stop, true);
}

/* Checks everything a reader can know about an answer given concurrently
 * with writes: complete (main never holds fewer than MAIN_LIVE), ordered,
 * no memory twice (that would be both sides of a replace), nothing removed
 * for good before the search began, and every score the dot product with one
 * of the two vectors that id ever had (a half-written row would match none).
 * A quarter of the searches ask for all rows, so that every visible row is
 * checked, not only those that make a top-k. Ordering bugs that open windows
 * of nanoseconds are found by this test built with MEMGRID_SANITIZE=thread. */
static void *reader_main(void *p)
{
    reader_arg *ra = p;
    shared *sh = ra->sh;
    uint64_t s = ra->seed;
    const char *names[] = {"main", "side"};
    float q[CDIM], v[CDIM];
    mg_index_hit *hits = malloc(CALL * sizeof *hits);
    for (unsigned long iter = 0; !atomic_load(&sh->stop); iter++) {
        for (int i = 0; i < CDIM; i++)
            q[i] = gauss(&s);
        uint64_t floor = atomic_load_explicit(&sh->floor, memory_order_acquire);
        mg_index_query query = {.vec = q,
                                .dim = CDIM,
                                .cube_ids = names,
                                .n_cubes = 2,
                                .k = iter % 8 < 6 ? CK : CALL,
                                .scan = (int)(iter % 2)};
        size_t n = 0;
        mg_error err;
        int rc = mg_index_search(sh->ix, &query, hits, &n, &err);
        if (rc != MG_OK || n < (query.k == CK ? CK : MAIN_LIVE)) {
            reader_fail(sh, "search: rc %d, %zu hits: %s", rc, n, rc ? err.msg : "");
            break;
        }
        for (size_t i = 0; i < n; i++) {
            uint64_t key = id_key(hits[i].id);
            if (hits[i].cube == 0 && key < floor)
                reader_fail(sh, "key %llu returned, removed before the search (floor %llu)",
                            (unsigned long long)key, (unsigned long long)floor);
            for (size_t j = 0; j < i; j++)
                if (hits[j].cube == hits[i].cube && memcmp(hits[j].id, hits[i].id, 16) == 0)
                    reader_fail(sh, "key %llu returned twice", (unsigned long long)key);
            if (i > 0 && hits[i].score > hits[i - 1].score)
                reader_fail(sh, "hits out of order at %zu", i);
            double best = INFINITY;
            for (unsigned ver = 0; ver < 2 && best > 1e-4; ver++) {
                make_vec(20 + hits[i].cube, key, ver, CDIM, v);
                best = fmin(best, fabs(hits[i].score - dot_normalized(q, v, CDIM)));
            }
            if (best > 1e-4)
                reader_fail(sh, "cube %u key %llu: score %.7f matches no vector it ever had",
                            hits[i].cube, (unsigned long long)key, (double)hits[i].score);
        }
        atomic_fetch_add(&sh->searches, 1);
    }
    free(hits);
    return NULL;
}

static void writer_add(mg_index *ix, const char *cube, uint64_t dom, uint64_t key, unsigned ver)
{
    float v[CDIM];
    make_vec(dom, key, ver, CDIM, v);
    add(ix, cube, key, v, CDIM);
}

static void test_concurrent_readers(void **state)
{
    (void)state;
    static shared sh;
    memset(&sh, 0, sizeof sh);
    pthread_mutex_init(&sh.mu, NULL);
    sh.ix = new_index(true);
    enum { ROUNDS = 1200 };
    uint64_t next = 0, floor = 0, s = seed ^ 12;
    unsigned long writes = 0;
    unsigned char *version = calloc(MAIN_LIVE + (size_t)ROUNDS * PER_ROUND, 1);
    for (; next < MAIN_LIVE; next++)
        writer_add(sh.ix, "main", 20, next, 0);
    for (uint64_t key = 0; key < 100; key++)
        writer_add(sh.ix, "side", 21, key, 0);

    pthread_t th[READERS];
    reader_arg ra[READERS];
    for (int i = 0; i < READERS; i++) {
        ra[i] = (reader_arg){&sh, seed * 31 + (uint64_t)i};
        assert_int_equal(pthread_create(&th[i], NULL, reader_main, &ra[i]), 0);
    }
    struct timespec pause = {0, 200000};
    mg_error err;
    uint8_t id[16];
    for (int round = 0; round < ROUNDS && !atomic_load(&sh.stop); round++) {
        for (int i = 0; i < PER_ROUND; i++, next++)
            writer_add(sh.ix, "main", 20, next, 0);
        for (int i = 0; i < 20; i++) {
            uint64_t key = floor + rnd(&s) % (next - floor);
            version[key] ^= 1;
            writer_add(sh.ix, "main", 20, key, version[key]);
        }
        for (int i = 0; i < PER_ROUND; i++, floor++) {
            make_id(floor, id);
            assert_int_equal(mg_index_remove(sh.ix, "main", id), MG_OK);
        }
        atomic_store_explicit(&sh.floor, floor, memory_order_release);
        if (round % 10 == 9)
            assert_int_equal(mg_index_compact(sh.ix, "main", &err), MG_OK);
        if (round % 7 == 6) {
            mg_index_drop_cube(sh.ix, "side");
            for (uint64_t key = 0; key < 100; key++)
                writer_add(sh.ix, "side", 21, key, 0);
        }
        writes += 2 * PER_ROUND + 20;
        nanosleep(&pause, NULL);
    }
    atomic_store(&sh.stop, true);
    for (int i = 0; i < READERS; i++)
        pthread_join(th[i], NULL);
    print_message("index_test concurrent: %lu searches during %lu writes\n",
                  (unsigned long)atomic_load(&sh.searches), writes);
    if (sh.failure[0] != '\0')
        FAIL("reader: %s (seed %llu)", sh.failure, SEED);
    assert_true(atomic_load(&sh.searches) > 100);
    assert_int_equal(mg_index_count(sh.ix, "main"), next - floor);
    free(version);
    mg_index_destroy(sh.ix);
    pthread_mutex_destroy(&sh.mu);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_concurrent_readers),
    };
    return cmocka_run_group_tests(tests, setup_seed, NULL);
}
