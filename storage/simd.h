/*
 * SIMD kernels for the vector index (DESIGN §8): float32 and int8 dot
 * products, one at a time and in batches (one query against n rows laid out
 * at a fixed stride, which is what a flat scan does).
 *
 * A kernel table exists per instruction set: "scalar" (any CPU), "avx2"
 * (AVX2 + FMA), "avx512bw" (AVX-512 F/BW/VL, int8 through vpmaddubsw) and
 * "avx512" (the same plus VNNI, int8 through vpdpbusd). The SIMD tables are
 * compiled with per-function target attributes, so one binary runs on any
 * x86-64 and uses the best table the CPU has. The environment variable
 * MEMGRID_SIMD=scalar|avx2|avx512bw|avx512 overrides the choice at start; an
 * unknown or unsupported value logs a warning and falls back to the best.
 *
 * All kernels take unaligned pointers (the index's are 64-byte aligned, which
 * is faster) and any length from 1 up (the index uses 1..MG_DIM_MAX).
 */
#ifndef MG_SIMD_H
#define MG_SIMD_H

#include <stddef.h>
#include <stdint.h>

typedef struct mg_simd {
    const char *name;

    /* sum of a[i] * b[i] for i < n. Agrees with an exact sum within float
     * rounding (about n * 2^-24 * sum |a[i] * b[i]|). */
    float (*dot_f32)(const float *a, const float *b, size_t n);

    /* out[j] = sum of q[i] * rows[j * stride + i] for i < dim, j < n; stride
     * (in floats) >= dim. The value for a row depends only on q, that row and
     * dim: it is bit for bit what dot_f32 gives, and what the row gets alone
     * or in any batch, so a rescore agrees exactly with the scan that found
     * it. Rows are read in order, one stream, which is what the hardware
     * prefetchers follow best. */
    void (*dot_f32_batch)(const float *q, const float *rows, size_t stride, size_t dim, size_t n,
                          float *out);

    /* Exact int8 dot products. Elements must be in [-127, 127] (what
     * mg_simd_quantize_i8 produces): the SIMD tables negate bytes, and -128
     * has no negation. */
    int32_t (*dot_i8)(const int8_t *a, const int8_t *b, size_t n);

    /* The int8 batch form, as dot_f32_batch; stride in bytes >= dim. */
    void (*dot_i8_batch)(const int8_t *q, const int8_t *rows, size_t stride, size_t dim, size_t n,
                         int32_t *out);
} mg_simd;

/* The table in use: chosen on first call from the CPU's features and
 * MEMGRID_SIMD, or set by mg_simd_select. Never NULL; static storage. Safe
 * from any thread. */
const mg_simd *mg_simd_active(void);

/* The table called `name` when this CPU can run it, else NULL (also for an
 * unknown name). Static storage. */
const mg_simd *mg_simd_get(const char *name);

/* The known table names, slowest first, NULL-terminated (static storage).
 * Not every name is available on every CPU: see mg_simd_get. */
const char *const *mg_simd_names(void);

/* The table a start-up request names (the value of MEMGRID_SIMD, or NULL for
 * none): that table when this CPU has it, else the best available, with a
 * warning logged when `request` was given but cannot be honoured. */
const mg_simd *mg_simd_choose(const char *request);

/* Makes `name` the active table for every later search (benchmarks, tests,
 * operators comparing kernels). Returns 0, or MG_ENOTFOUND when the name is
 * unknown or the CPU lacks it (the active table is then unchanged). Searches
 * already running finish with the table they started with. */
int mg_simd_select(const char *name);

/* Symmetric per-vector quantization: out[i] = round(v[i] / scale) with
 * scale = max |v[i]| / 127, so out is in [-127, 127] and v[i] ~ out[i] * scale.
 * Returns scale (0 when v is all zeros, which gives all-zero out). */
float mg_simd_quantize_i8(const float *v, size_t n, int8_t *out);

/* The tables themselves, defined in simd.c, simd_avx2.c and simd_avx512.c.
 * Use mg_simd_get, which checks that the CPU can run them. */
extern const mg_simd mg_simd_scalar_table;
#if defined(__x86_64__)
extern const mg_simd mg_simd_avx2_table;
extern const mg_simd mg_simd_avx512bw_table;
extern const mg_simd mg_simd_avx512_table;
#endif

#endif
