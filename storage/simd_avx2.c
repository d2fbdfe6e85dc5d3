/*
 * AVX2 + FMA kernels. Every function carries its own target attribute, so
 * this file is compiled for baseline x86-64 and mg_simd_get only hands the
 * table out on CPUs that have the instructions.
 */
#include "simd.h"

#if defined(__x86_64__)

#include <immintrin.h>

#define MG_AVX2 __attribute__((target("avx2,fma")))

/* Rows are scored one after the other, each with several accumulators,
 * rather than several rows interleaved: a scan is bound by memory, and one
 * sequential stream keeps the hardware prefetchers far busier than four
 * short ones (see simd_avx512.c for the figures). */

/* mask_src + 8 - rem loads as a mask of `rem` leading lanes (rem in 0..8). */
static const int32_t mask_src[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};

MG_AVX2 static inline __m256i tail_mask(size_t rem)
{
    return _mm256_loadu_si256((const __m256i *)(const void *)(mask_src + 8 - rem));
}

MG_AVX2 static inline float hsum_ps(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* The one code path for a row, used by the single and the batch form alike,
 * so that a row's value never depends on how it was called. */
MG_AVX2 static inline float dot_row(const float *q, const float *r, size_t dim)
{
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    __m256 a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 32 <= dim; i += 32) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), _mm256_loadu_ps(r + i), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i + 8), _mm256_loadu_ps(r + i + 8), a1);
        a2 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i + 16), _mm256_loadu_ps(r + i + 16), a2);
        a3 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i + 24), _mm256_loadu_ps(r + i + 24), a3);
    }
    for (; i + 8 <= dim; i += 8)
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), _mm256_loadu_ps(r + i), a0);
    if (i < dim) {
        __m256i m = tail_mask(dim - i);
        a1 = _mm256_fmadd_ps(_mm256_maskload_ps(q + i, m), _mm256_maskload_ps(r + i, m), a1);
    }
    return hsum_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
}

MG_AVX2 static float avx2_dot_f32(const float *a, const float *b, size_t n)
{
    return dot_row(a, b, n);
}

MG_AVX2 static void avx2_dot_f32_batch(const float *q, const float *rows, size_t stride, size_t dim,
                                       size_t n, float *out)
{
    for (size_t j = 0; j < n; j++)
        out[j] = dot_row(q, rows + j * stride, dim);
}

MG_AVX2 static inline int32_t hsum_epi32(__m256i v)
{
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

/* q.v over 32 bytes as eight int32 partial sums. vpmaddubsw multiplies
 * unsigned by signed bytes, so the query's sign moves onto the row:
 * q*v = |q| * (sign(q) v). With both in [-127, 127] the pairwise int16 sums
 * stay below 2 * 127 * 127 = 32258 and never saturate. */
MG_AVX2 static inline __m256i dot32_i8(const int8_t *q, const int8_t *qabs, const int8_t *r)
{
    __m256i qv = _mm256_loadu_si256((const __m256i *)(const void *)q);
    __m256i qa = _mm256_loadu_si256((const __m256i *)(const void *)qabs);
    __m256i v = _mm256_loadu_si256((const __m256i *)(const void *)r);
    __m256i p16 = _mm256_maddubs_epi16(qa, _mm256_sign_epi8(v, qv));
    return _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
}

/* |q| is computed once per call into a table bounded by I8_SLAB bytes;
 * longer vectors (the index never has them) are summed slab by slab. */
#define I8_SLAB 4096

MG_AVX2 static void avx2_dot_i8_batch(const int8_t *q, const int8_t *rows, size_t stride,
                                      size_t dim, size_t n, int32_t *out)
{
    if (dim > I8_SLAB) {
        for (size_t j = 0; j < n; j++) {
            int32_t sum = 0, part;
            for (size_t s0 = 0; s0 < dim; s0 += I8_SLAB) {
                size_t d = dim - s0 < I8_SLAB ? dim - s0 : I8_SLAB;
                avx2_dot_i8_batch(q + s0, rows + j * stride + s0, stride, d, 1, &part);
                sum += part;
            }
            out[j] = sum;
        }
        return;
    }
    _Alignas(32) int8_t qabs[I8_SLAB];
    size_t full = dim & ~(size_t)31;
    for (size_t i = 0; i < full; i += 32)
        _mm256_store_si256(
            (__m256i *)(void *)(qabs + i),
            _mm256_abs_epi8(_mm256_loadu_si256((const __m256i *)(const void *)(q + i))));
    for (size_t j = 0; j < n; j++) {
        const int8_t *r = rows + j * stride;
        __m256i a0 = _mm256_setzero_si256(), a1 = _mm256_setzero_si256();
        size_t i = 0;
        for (; i + 64 <= full; i += 64) {
            a0 = _mm256_add_epi32(a0, dot32_i8(q + i, qabs + i, r + i));
            a1 = _mm256_add_epi32(a1, dot32_i8(q + i + 32, qabs + i + 32, r + i + 32));
        }
        if (i < full)
            a0 = _mm256_add_epi32(a0, dot32_i8(q + i, qabs + i, r + i));
        int32_t sum = hsum_epi32(_mm256_add_epi32(a0, a1));
        for (i = full; i < dim; i++)
            sum += (int32_t)q[i] * (int32_t)r[i];
        out[j] = sum;
    }
}

MG_AVX2 static int32_t avx2_dot_i8(const int8_t *a, const int8_t *b, size_t n)
{
    int32_t s;
    avx2_dot_i8_batch(a, b, n, n, 1, &s);
    return s;
}

const mg_simd mg_simd_avx2_table = {
    .name = "avx2",
    .dot_f32 = avx2_dot_f32,
    .dot_f32_batch = avx2_dot_f32_batch,
    .dot_i8 = avx2_dot_i8,
    .dot_i8_batch = avx2_dot_i8_batch,
};

#endif /* __x86_64__ */
