/*
 * storage/index: top-k against a double-precision brute force (one cube and
 * several, with every kernel this CPU has), ties, tombstones, replace,
 * compaction, int8 scans with rescoring (recall), the accept filter, bad
 * input refused with nothing changed, and drop. Readers searching while a
 * writer adds, replaces, removes, compacts and drops are in
 * index_concurrency_test.c.
 *
 * A memory's id encodes its key and its vector is a pure function of (key,
 * version) (index_test_util.h), so the brute force can recompute what any
 * returned score must be.
 */
#include "index_test_util.h"

#include "storage/index.h"
#include "storage/simd.h"

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int setup_seed(void **state)
{
    (void)state;
    seed_init("index_test");
    return 0;
}

/* ---- brute force -------------------------------------------------------- */

typedef struct ref_hit {
    double score;
    uint32_t cube;
    uint64_t key;
} ref_hit;

static int ref_cmp(const void *pa, const void *pb)
{
    const ref_hit *a = pa, *b = pb;
    if (a->score != b->score)
        return a->score < b->score ? 1 : -1;
    if (a->key != b->key)
        return a->key < b->key ? -1 : 1;
    return a->cube < b->cube ? -1 : a->cube > b->cube;
}

/* A model of one cube: what is live in it, by key and version. */
typedef struct model {
    uint64_t dom;
    uint32_t dim;
    size_t n;
    uint64_t *keys;
    unsigned *version;
    bool *live;
} model;

static void model_fill(mg_index *ix, const char *name, model *m, uint64_t dom, uint32_t dim,
                       size_t n)
{
    *m = (model){dom, dim, n, calloc(n, 8), calloc(n, sizeof(unsigned)), calloc(n, 1)};
    float *v = malloc(dim * sizeof(float));
    for (size_t i = 0; i < n; i++) {
        m->keys[i] = dom << 32 | i;
        m->live[i] = true;
        make_vec(dom, m->keys[i], 0, dim, v);
        add(ix, name, m->keys[i], v, dim);
    }
    free(v);
}

static void model_free(model *m)
{
    free(m->keys);
    free(m->version);
    free(m->live);
}

/* The exact ranking of all live rows of the models for query q; cube i of
 * the query is models[i] (NULL = absent). Returns the count; *out malloc'ed. */
static size_t brute(model *const *models, size_t n_models, const float *q, ref_hit **out)
{
    size_t total = 0, n = 0;
    for (size_t c = 0; c < n_models; c++)
        total += models[c] ? models[c]->n : 0;
    ref_hit *r = malloc((total + 1) * sizeof *r);
    for (size_t c = 0; c < n_models; c++) {
        const model *m = models[c];
        if (m == NULL)
            continue;
        float *v = malloc(m->dim * sizeof(float));
        for (size_t i = 0; i < m->n; i++) {
            if (!m->live[i])
                continue;
            make_vec(m->dom, m->keys[i], m->version[i], m->dim, v);
            r[n++] = (ref_hit){dot_normalized(q, v, m->dim), (uint32_t)c, m->keys[i]};
        }
        free(v);
    }
    qsort(r, n, sizeof *r, ref_cmp);
    *out = r;
    return n;
}

/* hits must be the first min(k, n) of the exact ranking: every score within
 * float rounding of the exact one at its rank, and the same memory at each
 * rank except where the exact scores are closer than that rounding. */
static void check_hits(const mg_index_hit *hits, size_t n_hits, const ref_hit *ref, size_t n_ref,
                       size_t k, const char *what)
{
    const double tol = 2e-6;
    size_t want = k < n_ref ? k : n_ref;
    if (n_hits != want)
        FAIL("%s: %zu hits, want %zu (seed %llu)", what, n_hits, want, SEED);
    for (size_t i = 0; i < n_hits; i++) {
        if (fabs(hits[i].score - ref[i].score) > tol)
            FAIL("%s: rank %zu score %.9f, exact %.9f (seed %llu)", what, i, (double)hits[i].score,
                 ref[i].score, SEED);
        bool close = (i > 0 && ref[i - 1].score - ref[i].score <= tol) ||
                     (i + 1 < n_ref && ref[i].score - ref[i + 1].score <= tol);
        if (!close && (id_key(hits[i].id) != ref[i].key || hits[i].cube != ref[i].cube))
            FAIL("%s: rank %zu is %u/%llx, exact %u/%llx (seed %llu)", what, i, hits[i].cube,
                 (unsigned long long)id_key(hits[i].id), ref[i].cube,
                 (unsigned long long)ref[i].key, SEED);
        if (i > 0 &&
            (hits[i].score > hits[i - 1].score ||
             (hits[i].score == hits[i - 1].score && memcmp(hits[i].id, hits[i - 1].id, 16) < 0)))
            FAIL("%s: rank %zu out of order (seed %llu)", what, i, SEED);
    }
}

static size_t search(const mg_index *ix, const char *const *cubes, size_t n_cubes, const float *q,
                     uint32_t dim, size_t k, int scan, mg_index_hit *hits)
{
    mg_index_query query = {
        .vec = q, .dim = dim, .cube_ids = cubes, .n_cubes = n_cubes, .k = k, .scan = scan};
    size_t n = 0;
    mg_error err;
    int rc = mg_index_search(ix, &query, hits, &n, &err);
    if (rc != MG_OK)
        FAIL("search: %s (seed %llu)", err.msg, SEED);
    return n;
}

static void check_query(const mg_index *ix, const char *const *names, model *const *models,
                        size_t n_cubes, const float *q, size_t k, int scan, const char *what)
{
    uint32_t dim = 0;
    for (size_t c = 0; c < n_cubes; c++)
        dim = models[c] ? models[c]->dim : dim;
    mg_index_hit *hits = malloc((k + 1) * sizeof *hits);
    size_t n = search(ix, names, n_cubes, q, dim, k, scan, hits);
    ref_hit *ref;
    size_t n_ref = brute(models, n_cubes, q, &ref);
    check_hits(hits, n, ref, n_ref, k, what);
    free(ref);
    free(hits);
}

/* ---- tests -------------------------------------------------------------- */

static void test_basics(void **state)
{
    (void)state;
    mg_index *ix = new_index(false);
    float v[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    add(ix, "c1", 1, v, 8);
    add(ix, "c1", 2, v, 8);
    add(ix, "c1", 1, v, 8); /* replace: same count */
    assert_int_equal(mg_index_count(ix, "c1"), 2);
    assert_int_equal(mg_index_dim(ix, "c1"), 8);
    assert_int_equal(mg_index_count(ix, "nope"), 0);
    assert_int_equal(mg_index_dim(ix, "nope"), 0);
    assert_non_null(mg_index_kernel_name());
    assert_ptr_equal(mg_simd_get(mg_index_kernel_name()), mg_simd_active());
    mg_index_destroy(ix);
    mg_index_destroy(NULL);
}

static void test_topk_every_kernel(void **state)
{
    (void)state;
    const mg_simd *before = mg_simd_active();
    mg_index *ix = new_index(false);
    model m;
    model_fill(ix, "c", &m, 1, 100, 3000); /* dim 100: padded rows, 8 segments */
    const char *names[] = {"c"};
    model *models[] = {&m};
    uint64_t s = seed;
    float q[100];
    for (const char *const *kn = mg_simd_names(); *kn != NULL; kn++) {
        if (mg_simd_select(*kn) != MG_OK)
            continue;
        char what[64];
        snprintf(what, sizeof what, "one cube, %s", *kn);
        for (int t = 0; t < 8; t++) {
            for (int i = 0; i < 100; i++)
                q[i] = gauss(&s);
            static const size_t ks[] = {1, 10, 100, 5000};
            check_query(ix, names, models, 1, q, ks[t % 4], MG_SCAN_F32, what);
        }
    }
    assert_int_equal(mg_simd_select(before->name), MG_OK);
    model_free(&m);
    mg_index_destroy(ix);
}

static void test_multi_cube(void **state)
{
    (void)state;
    mg_index *ix = new_index(true);
    model a, b, c;
    model_fill(ix, "a", &a, 2, 64, 1);
    model_fill(ix, "b", &b, 3, 64, 700);
    model_fill(ix, "c", &c, 4, 64, 1500);
    /* absent cubes are skipped; a cube named twice is searched once, under
     * its first position */
    const char *names[] = {"a", "missing", "b", "c", "a", "b"};
    model *models[] = {&a, NULL, &b, &c, NULL, NULL};
    uint64_t s = seed ^ 2;
    float q[64];
    for (int t = 0; t < 10; t++) {
        for (int i = 0; i < 64; i++)
            q[i] = gauss(&s);
        check_query(ix, names, models, 6, q, t % 2 ? 7 : 60, MG_SCAN_F32, "multi-cube f32");
        check_query(ix, names, models, 6, q, 5000, MG_SCAN_F32, "multi-cube all");
        check_query(ix, names, models, 6, q, t % 2 ? 7 : 60, MG_SCAN_INT8, "multi-cube int8");
    }
    model_free(&a);
    model_free(&b);
    model_free(&c);
    mg_index_destroy(ix);
}

static void test_ties_by_id(void **state)
{
    (void)state;
    mg_index *ix = new_index(false);
    float v[5] = {1, -2, 3, 0.5f, 0};
    for (uint64_t key = 9; key >= 5; key--) /* inserted in descending id order */
        add(ix, "t", key, v, 5);
    mg_index_hit hits[5];
    const char *names[] = {"t"};
    assert_int_equal(search(ix, names, 1, v, 5, 5, MG_SCAN_F32, hits), 5);
    for (size_t i = 0; i < 5; i++) {
        assert_int_equal(id_key(hits[i].id), 5 + i);
        assert_true(hits[i].score == hits[0].score);
        assert_float_equal(hits[i].score, 1.0, 1e-6);
    }
    assert_int_equal(search(ix, names, 1, v, 5, 2, MG_SCAN_F32, hits), 2);
    assert_int_equal(id_key(hits[0].id), 5);
    assert_int_equal(id_key(hits[1].id), 6);
    mg_index_destroy(ix);
}

static void test_tombstones(void **state)
{
    (void)state;
    mg_index *ix = new_index(true);
    model m;
    model_fill(ix, "c", &m, 5, 48, 2000);
    uint8_t id[16];
    for (size_t i = 0; i < m.n; i++) {
        /* every third row, and all of rows 496..1007 (whole scan blocks) */
        if (i % 3 == 0 || (i >= 496 && i < 1008)) {
            make_id(m.keys[i], id);
            assert_int_equal(mg_index_remove(ix, "c", id), MG_OK);
            m.live[i] = false;
        }
    }
    size_t live = 0;
    for (size_t i = 0; i < m.n; i++)
        live += m.live[i];
    assert_int_equal(mg_index_count(ix, "c"), live);
    make_id(m.keys[0], id);
    assert_int_equal(mg_index_remove(ix, "c", id), MG_ENOTFOUND);
    assert_int_equal(mg_index_remove(ix, "absent", id), MG_ENOTFOUND);
    const char *names[] = {"c"};
    model *models[] = {&m};
    uint64_t s = seed ^ 5;
    float q[48];
    for (int t = 0; t < 6; t++) {
        for (int i = 0; i < 48; i++)
            q[i] = gauss(&s);
        check_query(ix, names, models, 1, q, 10, MG_SCAN_F32, "tombstones f32");
        check_query(ix, names, models, 1, q, 3000, MG_SCAN_F32, "tombstones all");
        check_query(ix, names, models, 1, q, 3000, MG_SCAN_INT8, "tombstones int8 all");
    }
    model_free(&m);
    mg_index_destroy(ix);
}

static void test_replace(void **state)
{
    (void)state;
    mg_index *ix = new_index(true);
    model m;
    model_fill(ix, "c", &m, 6, 32, 300);
    float v0[32], v1[32];
    make_vec(6, m.keys[17], 0, 32, v0);
    make_vec(6, m.keys[17], 1, 32, v1);
    add(ix, "c", m.keys[17], v1, 32);
    m.version[17] = 1;
    assert_int_equal(mg_index_count(ix, "c"), 300);
    const char *names[] = {"c"};
    model *models[] = {&m};
    mg_index_hit hits[400];
    size_t n = search(ix, names, 1, v1, 32, 1, MG_SCAN_F32, hits);
    assert_int_equal(n, 1);
    assert_int_equal(id_key(hits[0].id), m.keys[17]);
    assert_float_equal(hits[0].score, 1.0, 1e-6);
    /* the old vector is gone: the id is found only once, with its new score */
    for (int scan = MG_SCAN_F32; scan <= MG_SCAN_INT8; scan++) {
        n = search(ix, names, 1, v0, 32, 400, scan, hits);
        assert_int_equal(n, 300);
        size_t seen = 0;
        for (size_t i = 0; i < n; i++) {
            if (id_key(hits[i].id) != m.keys[17])
                continue;
            seen++;
            assert_float_equal(hits[i].score, dot_normalized(v0, v1, 32), 1e-5);
        }
        assert_int_equal(seen, 1);
        check_query(ix, names, models, 1, v0, 20, scan, "replace");
    }
    model_free(&m);
    mg_index_destroy(ix);
}

static void test_compact(void **state)
{
    (void)state;
    mg_index *ix = new_index(true);
    model m;
    model_fill(ix, "c", &m, 7, 384, 3000);
    uint64_t s = seed ^ 7;
    uint8_t id[16];
    float v[384];
    mg_error err;
    assert_int_equal(mg_index_compact(ix, "c", &err), MG_OK); /* nothing dead: no-op */
    for (size_t i = 0; i < m.n; i++) {
        uint64_t r = rnd(&s) % 10;
        if (r < 3) {
            make_id(m.keys[i], id);
            assert_int_equal(mg_index_remove(ix, "c", id), MG_OK);
            m.live[i] = false;
        } else if (r == 3) {
            m.version[i] = 1;
            make_vec(7, m.keys[i], 1, 384, v);
            add(ix, "c", m.keys[i], v, 384);
        }
    }
    size_t count = mg_index_count(ix, "c");
    enum { NQ = 12, K = 25 };
    static float q[NQ][384];
    static mg_index_hit before[2][NQ][K], after[2][NQ][K];
    size_t nb[2][NQ], na[2][NQ];
    const char *names[] = {"c"};
    for (int t = 0; t < NQ; t++)
        for (int i = 0; i < 384; i++)
            q[t][i] = gauss(&s);
    for (int scan = 0; scan < 2; scan++)
        for (int t = 0; t < NQ; t++)
            nb[scan][t] = search(ix, names, 1, q[t], 384, K, scan, before[scan][t]);
    assert_int_equal(mg_index_compact(ix, "c", &err), MG_OK);
    assert_int_equal(mg_index_count(ix, "c"), count);
    for (int scan = 0; scan < 2; scan++)
        for (int t = 0; t < NQ; t++) {
            na[scan][t] = search(ix, names, 1, q[t], 384, K, scan, after[scan][t]);
            assert_int_equal(na[scan][t], nb[scan][t]);
            /* bit for bit: same rows, same kernel, same scores */
            assert_memory_equal(after[scan][t], before[scan][t],
                                nb[scan][t] * sizeof(mg_index_hit));
        }
    model *models[] = {&m};
    check_query(ix, names, models, 1, q[0], 50, MG_SCAN_F32, "compacted");
    /* the compacted cube takes writes as before */
    for (size_t i = 0; i < 40; i++) {
        make_id(m.keys[i], id);
        if (m.live[i]) {
            assert_int_equal(mg_index_remove(ix, "c", id), MG_OK);
            m.live[i] = false;
        } else {
            make_vec(7, m.keys[i], m.version[i], 384, v);
            add(ix, "c", m.keys[i], v, 384);
            m.live[i] = true;
        }
    }
    check_query(ix, names, models, 1, q[1], 50, MG_SCAN_F32, "compacted, then written");
    assert_int_equal(mg_index_compact(ix, "absent", &err), MG_ENOTFOUND);
    model_free(&m);
    mg_index_destroy(ix);
}

/* Clustered data, like text embeddings: near neighbours are much closer than
 * random pairs, which is what makes int8 ranking non-trivial. */
static void test_int8_recall(void **state)
{
    (void)state;
    enum { N = 20000, DIM = 384, NQ = 50, K = 10, CLUSTERS = 200 };
    mg_index *ix = new_index(true);
    mg_index *plain = new_index(false);
    uint64_t s = seed ^ 8;
    float *centers = malloc((size_t)CLUSTERS * DIM * sizeof(float));
    for (size_t i = 0; i < (size_t)CLUSTERS * DIM; i++)
        centers[i] = gauss(&s);
    float v[DIM];
    for (uint64_t key = 0; key < N; key++) {
        const float *c = centers + (rnd(&s) % CLUSTERS) * DIM;
        for (int i = 0; i < DIM; i++)
            v[i] = c[i] + 0.8f * gauss(&s);
        add(ix, "c", key, v, DIM);
        if (key < 2000)
            add(plain, "c", key, v, DIM);
    }
    const char *names[] = {"c"};
    mg_index_hit exact[K], approx[K];
    size_t found = 0;
    for (int t = 0; t < NQ; t++) {
        const float *c = centers + (rnd(&s) % CLUSTERS) * DIM;
        for (int i = 0; i < DIM; i++)
            v[i] = c[i] + 0.8f * gauss(&s);
        assert_int_equal(search(ix, names, 1, v, DIM, K, MG_SCAN_F32, exact), K);
        assert_int_equal(search(ix, names, 1, v, DIM, K, MG_SCAN_INT8, approx), K);
        for (int i = 0; i < K; i++)
            for (int j = 0; j < K; j++)
                if (memcmp(approx[i].id, exact[j].id, 16) == 0) {
                    found++;
                    /* rescored with the scan's own kernel: identical scores */
                    assert_true(approx[i].score == exact[j].score);
                }
        /* an index without int8 copies answers an int8 query exactly */
        mg_index_hit a[K], b[K];
        size_t na = search(plain, names, 1, v, DIM, K, MG_SCAN_INT8, a);
        size_t nb = search(plain, names, 1, v, DIM, K, MG_SCAN_F32, b);
        assert_int_equal(na, nb);
        assert_memory_equal(a, b, na * sizeof a[0]);
    }
    double recall = (double)found / (NQ * K);
    print_message("index_test int8 recall@10 %.4f over %d queries\n", recall, NQ);
    if (recall < 0.99)
        FAIL("int8 recall@10 %.4f < 0.99 (seed %llu)", recall, SEED);
    free(centers);
    mg_index_destroy(ix);
    mg_index_destroy(plain);
}

typedef struct filter_arg {
    size_t calls;
    bool bad_cube;
} filter_arg;

static bool accept_even(void *arg, size_t cube, const uint8_t id[16])
{
    filter_arg *f = arg;
    f->calls++;
    f->bad_cube = f->bad_cube || cube != 1;
    return id_key(id) % 2 == 0;
}

static void test_accept_filter(void **state)
{
    (void)state;
    mg_index *ix = new_index(true);
    model m;
    model_fill(ix, "c", &m, 9, 40, 1000);
    uint8_t id[16];
    make_id(m.keys[10], id);
    assert_int_equal(mg_index_remove(ix, "c", id), MG_OK);
    m.live[10] = false;
    model filtered = m;
    filtered.live = calloc(m.n, 1);
    for (size_t i = 0; i < m.n; i++)
        filtered.live[i] = m.live[i] && m.keys[i] % 2 == 0;
    const char *names[] = {"missing", "c"};
    model *models[] = {NULL, &filtered};
    uint64_t s = seed ^ 9;
    float q[40];
    mg_index_hit hits[50];
    for (int scan = 0; scan < 2; scan++) {
        for (int i = 0; i < 40; i++)
            q[i] = gauss(&s);
        filter_arg f = {0, false};
        mg_index_query query = {.vec = q,
                                .dim = 40,
                                .cube_ids = names,
                                .n_cubes = 2,
                                .k = 50,
                                .scan = scan,
                                .accept = accept_even,
                                .accept_arg = &f};
        size_t n = 0;
        mg_error err;
        assert_int_equal(mg_index_search(ix, &query, hits, &n, &err), MG_OK);
        assert_int_equal(f.calls, 999); /* once per live row, removed ones not offered */
        assert_false(f.bad_cube);
        ref_hit *ref;
        size_t n_ref = brute(models, 2, q, &ref);
        check_hits(hits, n, ref, n_ref, 50, scan ? "filter int8" : "filter f32");
        free(ref);
    }
    free(filtered.live);
    model_free(&m);
    mg_index_destroy(ix);
}

static void test_bad_input(void **state)
{
    (void)state;
    mg_index *ix = new_index(true);
    model m;
    model_fill(ix, "c", &m, 10, 16, 100);
    const char *names[] = {"c"};
    float q[16], v[16];
    for (int i = 0; i < 16; i++)
        q[i] = (float)(i - 7);
    mg_index_hit base[20], hits[20];
    size_t n_base = search(ix, names, 1, q, 16, 20, MG_SCAN_F32, base);
    uint8_t id[16], fresh[16];
    make_id(m.keys[3], id);
    make_id(999999, fresh);
    mg_error err;

    /* bad vectors, for an existing id, a new id and a new cube */
    static const struct {
        int pos;
        float val;
        uint32_t dim;
        int code;
    } cases[] = {
        {0, NAN, 16, MG_ENAN},  {15, INFINITY, 16, MG_ENAN}, {7, -INFINITY, 16, MG_ENAN},
        {-1, 0, 15, MG_EDIM},   {-1, 0, 17, MG_EDIM},        {-1, 0, 0, MG_EDIM},
        {-1, 0, 4097, MG_EDIM}, {-2, 0, 16, MG_EINVAL},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        float *big = calloc(4097, sizeof(float));
        make_vec(10, 1, 0, 16, big);
        if (cases[c].pos >= 0)
            big[cases[c].pos] = cases[c].val;
        if (cases[c].pos == -2)
            memset(big, 0, 16 * sizeof(float));
        const uint8_t *ids[] = {id, fresh};
        for (int w = 0; w < 2; w++) {
            err.msg[0] = 0;
            assert_int_equal(mg_index_add(ix, "c", ids[w], big, cases[c].dim, &err), cases[c].code);
            assert_int_equal(err.code, cases[c].code);
            assert_true(strlen(err.msg) > 0);
        }
        int code =
            cases[c].dim >= 1 && cases[c].dim <= 4096 && cases[c].pos != -2 && cases[c].pos < 0
                ? MG_OK /* a new cube may take any valid dimension */
                : cases[c].code;
        if (code != MG_OK) {
            assert_int_equal(mg_index_add(ix, "newcube", fresh, big, cases[c].dim, &err), code);
            assert_int_equal(mg_index_dim(ix, "newcube"), 0); /* not created */
        }
        free(big);
    }
    assert_int_equal(mg_index_add(ix, "bad cube!", fresh, q, 16, &err), MG_EINVAL);
    assert_int_equal(mg_index_add(ix, "", fresh, q, 16, &err), MG_EINVAL);
    assert_int_equal(mg_index_add(ix, NULL, fresh, q, 16, &err), MG_EINVAL);
    assert_int_equal(mg_index_add(ix, "c", NULL, q, 16, &err), MG_EINVAL);
    assert_int_equal(mg_index_add(ix, "c", fresh, NULL, 16, &err), MG_EINVAL);
    assert_int_equal(mg_index_remove(ix, "c", fresh), MG_ENOTFOUND);
    assert_int_equal(mg_index_remove(ix, "absent", id), MG_ENOTFOUND);
    assert_int_equal(mg_index_compact(ix, "absent", &err), MG_ENOTFOUND);

    /* nothing changed */
    assert_int_equal(mg_index_count(ix, "c"), 100);
    assert_int_equal(mg_index_dim(ix, "c"), 16);
    assert_int_equal(search(ix, names, 1, q, 16, 20, MG_SCAN_F32, hits), n_base);
    assert_memory_equal(hits, base, n_base * sizeof hits[0]);

    /* bad queries */
    size_t n = 99;
    mg_index_query query = {.vec = q, .dim = 16, .cube_ids = names, .n_cubes = 1, .k = 5};
    memcpy(v, q, sizeof v);
    v[4] = NAN;
    query.vec = v;
    assert_int_equal(mg_index_search(ix, &query, hits, &n, &err), MG_ENAN);
    assert_int_equal(n, 0);
    v[4] = INFINITY;
    assert_int_equal(mg_index_search(ix, &query, hits, &n, &err), MG_ENAN);
    memset(v, 0, sizeof v);
    assert_int_equal(mg_index_search(ix, &query, hits, &n, &err), MG_EINVAL);
    query.vec = q;
    query.dim = 12;
    assert_int_equal(mg_index_search(ix, &query, hits, &n, &err), MG_EDIM);
    assert_non_null(strstr(err.msg, "dimension"));
    query.dim = 16;
    query.scan = 7;
    assert_int_equal(mg_index_search(ix, &query, hits, &n, &err), MG_EINVAL);
    query.scan = MG_SCAN_F32;
    assert_int_equal(mg_index_search(ix, &query, NULL, &n, &err), MG_EINVAL);
    assert_int_equal(mg_index_search(NULL, &query, hits, &n, &err), MG_EINVAL);
    /* an absent cube is skipped, k = 0 finds nothing: both fine */
    const char *absent[] = {"absent"};
    query.cube_ids = absent;
    assert_int_equal(mg_index_search(ix, &query, hits, &n, &err), MG_OK);
    assert_int_equal(n, 0);
    query.cube_ids = names;
    query.k = 0;
    assert_int_equal(mg_index_search(ix, &query, hits, &n, &err), MG_OK);
    assert_int_equal(n, 0);
    model_free(&m);
    mg_index_destroy(ix);
}

static void test_drop(void **state)
{
    (void)state;
    mg_index *ix = new_index(false);
    model m;
    model_fill(ix, "c", &m, 11, 24, 50);
    mg_index_drop_cube(ix, "c");
    mg_index_drop_cube(ix, "c");
    mg_index_drop_cube(ix, "never");
    assert_int_equal(mg_index_count(ix, "c"), 0);
    assert_int_equal(mg_index_dim(ix, "c"), 0);
    const char *names[] = {"c"};
    float q[32] = {1};
    mg_index_hit hits[4];
    assert_int_equal(search(ix, names, 1, q, 24, 4, MG_SCAN_F32, hits), 0);
    add(ix, "c", 1, q, 32); /* a new cube of that name may have another dim */
    assert_int_equal(mg_index_dim(ix, "c"), 32);
    model_free(&m);
    mg_index_destroy(ix);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_basics),        cmocka_unit_test(test_topk_every_kernel),
        cmocka_unit_test(test_multi_cube),    cmocka_unit_test(test_ties_by_id),
        cmocka_unit_test(test_tombstones),    cmocka_unit_test(test_replace),
        cmocka_unit_test(test_compact),       cmocka_unit_test(test_int8_recall),
        cmocka_unit_test(test_accept_filter), cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_drop),
    };
    return cmocka_run_group_tests(tests, setup_seed, NULL);
}
