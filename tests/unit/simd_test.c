/*
 * storage/simd: every kernel table this CPU can run (not only the active
 * one) against a double-precision / int64 reference on seeded random data,
 * for the dimensions embedders use and the awkward ones around them; the
 * batch contract (a row's score does not depend on its batch neighbours, and
 * nothing past `dim` in a row is read into the result); quantization; and the
 * choice of table (MEMGRID_SIMD values, mg_simd_select).
 */
#include "storage/simd.h"
#include "lib/error.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

static const size_t dims[] = {1,   7,   8,   15,  16,  17,  31,   33,   63,   64,  65,
                              100, 128, 383, 384, 385, 768, 1000, 1536, 4095, 4096};
#define N_DIMS (sizeof dims / sizeof dims[0])
#define N_ROWS 11 /* two groups of four and a remainder of three */

static uint64_t seed;

/* splitmix64: reproducible from the printed seed. */
static uint64_t rnd(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static float rnd_f32(uint64_t *s) /* in [-1, 1) */
{
    return (float)((double)(rnd(s) >> 11) * 0x1p-52 - 1.0);
}

static int8_t rnd_i8(uint64_t *s) /* in [-127, 127] */
{
    return (int8_t)((int)(rnd(s) % 255) - 127);
}

static int setup_seed(void **state)
{
    (void)state;
    const char *env = getenv("MG_TEST_SEED");
    seed = env ? strtoull(env, NULL, 0) : (uint64_t)time(NULL);
    print_message("simd_test seed %llu (replay with MG_TEST_SEED)\n", (unsigned long long)seed);
    return 0;
}

/* The tables this CPU can run; always at least "scalar". */
static size_t available(const mg_simd **out)
{
    size_t n = 0;
    for (const char *const *name = mg_simd_names(); *name != NULL; name++) {
        const mg_simd *t = mg_simd_get(*name);
        if (t != NULL)
            out[n++] = t;
        else
            print_message("simd_test: %s not available on this CPU, skipped\n", *name);
    }
    return n;
}

static void test_tables(void **state)
{
    (void)state;
    const mg_simd *t[8];
    size_t n = available(t);
    assert_true(n >= 1);
    assert_ptr_equal(t[0], mg_simd_get("scalar"));
    assert_string_equal(t[0]->name, "scalar");
    for (size_t i = 0; i < n; i++) {
        assert_non_null(t[i]->dot_f32);
        assert_non_null(t[i]->dot_f32_batch);
        assert_non_null(t[i]->dot_i8);
        assert_non_null(t[i]->dot_i8_batch);
    }
    assert_null(mg_simd_get("sse9"));
    assert_null(mg_simd_get(NULL));
    assert_null(mg_simd_get(""));
}

static void test_choose(void **state)
{
    (void)state;
    const mg_simd *t[8];
    size_t n = available(t);
    const mg_simd *best = t[n - 1];
    assert_ptr_equal(mg_simd_choose(NULL), best);
    assert_ptr_equal(mg_simd_choose(""), best);
    assert_ptr_equal(mg_simd_choose("bogus"), best); /* logs a warning */
    assert_ptr_equal(mg_simd_choose("scalar"), mg_simd_get("scalar"));
    for (size_t i = 0; i < n; i++)
        assert_ptr_equal(mg_simd_choose(t[i]->name), t[i]);
    for (const char *const *name = mg_simd_names(); *name != NULL; name++)
        if (mg_simd_get(*name) == NULL)
            assert_ptr_equal(mg_simd_choose(*name), best);
}

static void test_select(void **state)
{
    (void)state;
    const mg_simd *t[8];
    size_t n = available(t);
    const mg_simd *before = mg_simd_active();
    assert_non_null(before);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(mg_simd_select(t[i]->name), MG_OK);
        assert_ptr_equal(mg_simd_active(), t[i]);
    }
    assert_int_equal(mg_simd_select("bogus"), MG_ENOTFOUND);
    assert_ptr_equal(mg_simd_active(), t[n - 1]); /* unchanged by the failure */
    assert_int_equal(mg_simd_select(before->name), MG_OK);
}

/* Rows of `dim` values at `stride`, the padding between them NaN: a kernel
 * that lets anything past dim into a score fails loudly. */
static float *f32_rows(uint64_t *s, size_t dim, size_t stride, size_t n)
{
    float *r = malloc(((n - 1) * stride + dim) * sizeof(float));
    assert_non_null(r);
    for (size_t j = 0; j < n; j++) {
        for (size_t i = 0; i < dim; i++)
            r[j * stride + i] = rnd_f32(s);
        for (size_t i = dim; i < stride && j + 1 < n; i++)
            r[j * stride + i] = NAN;
    }
    return r;
}

static void check_f32(const mg_simd *t, const float *q, const float *row, size_t dim, float got,
                      const char *what)
{
    double ref = 0.0, mag = 0.0;
    for (size_t i = 0; i < dim; i++) {
        ref += (double)q[i] * (double)row[i];
        mag += fabs((double)q[i] * (double)row[i]);
    }
    /* float accumulation: a few ulps per term in the worst case, here far
     * less; 1e-5 of the magnitude catches any wrong or missing term. */
    if (!(fabs((double)got - ref) <= 1e-5 * mag + 1e-7))
        fail_msg("%s %s dim %zu: got %.9g want %.9g (seed %llu)", t->name, what, dim, (double)got,
                 ref, (unsigned long long)seed);
}

static void test_f32_kernels(void **state)
{
    (void)state;
    const mg_simd *t[8];
    size_t n = available(t);
    uint64_t s = seed;
    for (size_t d = 0; d < N_DIMS; d++) {
        size_t dim = dims[d];
        size_t strides[2] = {dim + 3, (dim + 15) & ~(size_t)15};
        for (int si = 0; si < 2; si++) {
            size_t stride = strides[si];
            float *q = f32_rows(&s, dim, dim, 1);
            float *rows = f32_rows(&s, dim, stride, N_ROWS);
            for (size_t k = 0; k < n; k++) {
                float out[N_ROWS], one;
                check_f32(t[k], q, rows, dim, t[k]->dot_f32(q, rows, dim), "dot_f32");
                t[k]->dot_f32_batch(q, rows, stride, dim, N_ROWS, out);
                for (size_t j = 0; j < N_ROWS; j++) {
                    check_f32(t[k], q, rows + j * stride, dim, out[j], "dot_f32_batch");
                    /* the same row alone, and in a batch that starts with it */
                    t[k]->dot_f32_batch(q, rows + j * stride, stride, dim, 1, &one);
                    if (memcmp(&one, &out[j], sizeof one) != 0)
                        fail_msg("%s dim %zu row %zu: alone %.9g, in batch %.9g (seed %llu)",
                                 t[k]->name, dim, j, (double)one, (double)out[j],
                                 (unsigned long long)seed);
                    float tail[N_ROWS];
                    t[k]->dot_f32_batch(q, rows + j * stride, stride, dim, N_ROWS - j, tail);
                    assert_memory_equal(tail, out + j, (N_ROWS - j) * sizeof(float));
                    one = t[k]->dot_f32(q, rows + j * stride, dim);
                    assert_memory_equal(&one, &out[j], sizeof one);
                }
            }
            free(q);
            free(rows);
        }
    }
}

static void test_i8_kernels(void **state)
{
    (void)state;
    const mg_simd *t[8];
    size_t n = available(t);
    uint64_t s = seed ^ 0x5eed;
    for (size_t d = 0; d < N_DIMS; d++) {
        size_t dim = dims[d], stride = dim + 5;
        int8_t *q = malloc(dim);
        int8_t *rows = malloc((N_ROWS - 1) * stride + dim);
        assert_non_null(q);
        assert_non_null(rows);
        for (size_t i = 0; i < dim; i++)
            q[i] = rnd_i8(&s);
        memset(rows, 0x55, (N_ROWS - 1) * stride + dim); /* padding that must not count */
        for (size_t j = 0; j < N_ROWS; j++)
            for (size_t i = 0; i < dim; i++)
                rows[j * stride + i] = rnd_i8(&s);
        /* extremes: products of +-127 in every lane, the sums that come
         * closest to int16 saturation in the pairwise forms */
        for (size_t i = 0; i < dim; i++) {
            rows[i] = (int8_t)(q[i] < 0 ? -127 : 127);
            rows[stride + i] = (int8_t)(q[i] < 0 ? 127 : -127);
        }
        for (size_t k = 0; k < n; k++) {
            int32_t out[N_ROWS];
            t[k]->dot_i8_batch(q, rows, stride, dim, N_ROWS, out);
            for (size_t j = 0; j < N_ROWS; j++) {
                int64_t ref = 0;
                for (size_t i = 0; i < dim; i++)
                    ref += (int64_t)q[i] * rows[j * stride + i];
                if (out[j] != ref)
                    fail_msg("%s dot_i8_batch dim %zu row %zu: got %d want %lld (seed %llu)",
                             t[k]->name, dim, j, out[j], (long long)ref, (unsigned long long)seed);
                int32_t one = t[k]->dot_i8(q, rows + j * stride, dim);
                if (one != ref)
                    fail_msg("%s dot_i8 dim %zu row %zu: got %d want %lld (seed %llu)", t[k]->name,
                             dim, j, one, (long long)ref, (unsigned long long)seed);
            }
        }
        free(q);
        free(rows);
    }
}

static void test_quantize(void **state)
{
    (void)state;
    uint64_t s = seed ^ 0x9a7e;
    for (size_t d = 0; d < N_DIMS; d++) {
        size_t dim = dims[d];
        float *v = f32_rows(&s, dim, dim, 1);
        int8_t *q = malloc(dim);
        assert_non_null(q);
        float amax = 0.0f;
        for (size_t i = 0; i < dim; i++)
            amax = fmaxf(amax, fabsf(v[i]));
        float scale = mg_simd_quantize_i8(v, dim, q);
        assert_float_equal(scale, amax / 127.0f, 1e-9);
        int qmax = 0;
        for (size_t i = 0; i < dim; i++) {
            assert_true(q[i] >= -127 && q[i] <= 127);
            qmax = abs(q[i]) > qmax ? abs(q[i]) : qmax;
            if (fabsf((float)q[i] * scale - v[i]) > 0.5f * scale * 1.0001f)
                fail_msg("dim %zu [%zu]: %g quantized to %d * %g (seed %llu)", dim, i, (double)v[i],
                         q[i], (double)scale, (unsigned long long)seed);
        }
        assert_int_equal(qmax, 127); /* the full range is used */
        memset(v, 0, dim * sizeof(float));
        assert_true(mg_simd_quantize_i8(v, dim, q) == 0.0f);
        for (size_t i = 0; i < dim; i++)
            assert_int_equal(q[i], 0);
        free(v);
        free(q);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tables),     cmocka_unit_test(test_choose),
        cmocka_unit_test(test_select),     cmocka_unit_test(test_f32_kernels),
        cmocka_unit_test(test_i8_kernels), cmocka_unit_test(test_quantize),
    };
    return cmocka_run_group_tests(tests, setup_seed, NULL);
}
