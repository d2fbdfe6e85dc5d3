/*
 * Scalar kernels (the reference and the fallback for any CPU), the choice of
 * kernel table at start, and int8 quantization.
 */
#include "simd.h"

#include "../lib/error.h"
#include "../lib/log.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* ---- scalar kernels ---------------------------------------------------- */

/* Four partial sums break the add dependency chain; the compiler may not
 * reorder float adds itself (no -ffast-math), so this is as fast as portable
 * C gets without intrinsics. */
static float scalar_dot_f32(const float *a, const float *b, size_t n)
{
    float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += a[i] * b[i];
        s1 += a[i + 1] * b[i + 1];
        s2 += a[i + 2] * b[i + 2];
        s3 += a[i + 3] * b[i + 3];
    }
    for (; i < n; i++)
        s0 += a[i] * b[i];
    return (s0 + s1) + (s2 + s3);
}

static void scalar_dot_f32_batch(const float *q, const float *rows, size_t stride, size_t dim,
                                 size_t n, float *out)
{
    for (size_t j = 0; j < n; j++)
        out[j] = scalar_dot_f32(q, rows + j * stride, dim);
}

static int32_t scalar_dot_i8(const int8_t *a, const int8_t *b, size_t n)
{
    int32_t s = 0;
    for (size_t i = 0; i < n; i++)
        s += (int32_t)a[i] * (int32_t)b[i];
    return s;
}

static void scalar_dot_i8_batch(const int8_t *q, const int8_t *rows, size_t stride, size_t dim,
                                size_t n, int32_t *out)
{
    for (size_t j = 0; j < n; j++)
        out[j] = scalar_dot_i8(q, rows + j * stride, dim);
}

const mg_simd mg_simd_scalar_table = {
    .name = "scalar",
    .dot_f32 = scalar_dot_f32,
    .dot_f32_batch = scalar_dot_f32_batch,
    .dot_i8 = scalar_dot_i8,
    .dot_i8_batch = scalar_dot_i8_batch,
};

/* ---- CPU features and the choice of table ------------------------------ */

#if defined(__x86_64__)
/* __builtin_cpu_supports also checks (through XGETBV) that the OS saves the
 * YMM/ZMM state, so a "yes" here means the instructions can really run. */
static bool cpu_has_avx2(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

static bool cpu_has_avx512bw(void)
{
    return cpu_has_avx2() && __builtin_cpu_supports("avx512f") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
}

static bool cpu_has_avx512(void)
{
    return cpu_has_avx512bw() && __builtin_cpu_supports("avx512vnni");
}
#endif

static bool cpu_has_scalar(void)
{
    return true;
}

/* One row per table, slowest first; mg_simd_names, mg_simd_get and the
 * default choice (the last supported row) all read it. */
static const struct kernel_entry {
    const char *name;
    const mg_simd *table;
    bool (*supported)(void);
} kernels[] = {
    {"scalar", &mg_simd_scalar_table, cpu_has_scalar},
#if defined(__x86_64__)
    {"avx2", &mg_simd_avx2_table, cpu_has_avx2},
    {"avx512bw", &mg_simd_avx512bw_table, cpu_has_avx512bw},
    {"avx512", &mg_simd_avx512_table, cpu_has_avx512},
#endif
};
#define N_KERNELS (sizeof kernels / sizeof kernels[0])

static const char *const kernel_names[] = {
    "scalar",
#if defined(__x86_64__)
    "avx2",   "avx512bw", "avx512",
#endif
    NULL,
};

const char *const *mg_simd_names(void)
{
    return kernel_names;
}

const mg_simd *mg_simd_get(const char *name)
{
    if (name == NULL)
        return NULL;
    for (size_t i = 0; i < N_KERNELS; i++)
        if (strcmp(kernels[i].name, name) == 0)
            return kernels[i].supported() ? kernels[i].table : NULL;
    return NULL;
}

static const mg_simd *best_table(void)
{
    for (size_t i = N_KERNELS; i-- > 0;)
        if (kernels[i].supported())
            return kernels[i].table;
    return &mg_simd_scalar_table;
}

const mg_simd *mg_simd_choose(const char *request)
{
    const mg_simd *best = best_table();
    if (request == NULL || request[0] == '\0')
        return best;
    const mg_simd *asked = mg_simd_get(request);
    if (asked != NULL)
        return asked;
    char quoted[64];
    bool known = false;
    for (size_t i = 0; i < N_KERNELS; i++)
        known = known || strcmp(kernels[i].name, request) == 0;
    mg_warn("simd.fallback", "requested=%s kernel=%s msg=\"%s\"",
            mg_log_quote(request, quoted, sizeof quoted), best->name,
            known ? "this CPU lacks the requested instruction set"
                  : "unknown MEMGRID_SIMD value (scalar|avx2|avx512bw|avx512)");
    return best;
}

static _Atomic(const mg_simd *) active_table;
static pthread_once_t active_once = PTHREAD_ONCE_INIT;

static void active_init(void)
{
    const mg_simd *t = mg_simd_choose(getenv("MEMGRID_SIMD"));
    atomic_store_explicit(&active_table, t, memory_order_release);
    mg_info("simd.select", "kernel=%s", t->name);
}

const mg_simd *mg_simd_active(void)
{
    pthread_once(&active_once, active_init);
    return atomic_load_explicit(&active_table, memory_order_acquire);
}

int mg_simd_select(const char *name)
{
    const mg_simd *t = mg_simd_get(name);
    if (t == NULL)
        return MG_ENOTFOUND;
    pthread_once(&active_once, active_init); /* so a later first use cannot undo this */
    atomic_store_explicit(&active_table, t, memory_order_release);
    return MG_OK;
}

/* ---- quantization ------------------------------------------------------ */

/* Plain compares and truncation rather than fmaxf and lrintf: without
 * -ffast-math those are library calls, and this runs on every insert. Rounds
 * half away from zero; inputs are finite (the index checks them first). */
float mg_simd_quantize_i8(const float *v, size_t n, int8_t *out)
{
    float amax = 0.0f;
    for (size_t i = 0; i < n; i++) {
        float a = fabsf(v[i]);
        amax = a > amax ? a : amax;
    }
    if (amax == 0.0f) {
        memset(out, 0, n);
        return 0.0f;
    }
    float inv = 127.0f / amax;
    for (size_t i = 0; i < n; i++) {
        float x = v[i] * inv;
        int r = x >= 0.0f ? (int)(x + 0.5f) : -(int)(0.5f - x);
        out[i] = (int8_t)(r > 127 ? 127 : r < -127 ? -127 : r);
    }
    return amax / 127.0f;
}
