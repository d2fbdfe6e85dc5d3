/*
 * AVX-512 kernels: two tables that share the float32 kernels and differ in
 * int8, "avx512" (VNNI: vpdpbusd, one instruction per 64 bytes and row) and
 * "avx512bw" (vpmaddubsw + vpmaddwd, for AVX-512 CPUs without VNNI).
 * Per-function target attributes keep the file buildable for baseline x86-64.
 */
#include "simd.h"

#if defined(__x86_64__)

#include <immintrin.h>

#define MG_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma")))
#define MG_AVX512VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")))

/* Rows are scored one after the other, each with several accumulators, not
 * several rows interleaved: interleaving four rows saves query loads but
 * hands the hardware prefetchers four short streams instead of one long one,
 * and measured 13-21 GB/s against 29-34 GB/s for this order (2-vCPU AVX-512
 * machine of DESIGN §14, 1M x 384). The scan is bound by memory, not by
 * arithmetic, so the order of reads is what counts. */

/* ---- float32 ----------------------------------------------------------- */

/* The one code path for a row, used by the single and the batch form alike,
 * so that a row's value never depends on how it was called. */
MG_AVX512 static inline float dot_row(const float *q, const float *r, size_t dim)
{
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    __m512 a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 64 <= dim; i += 64) {
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(q + i), _mm512_loadu_ps(r + i), a0);
        a1 = _mm512_fmadd_ps(_mm512_loadu_ps(q + i + 16), _mm512_loadu_ps(r + i + 16), a1);
        a2 = _mm512_fmadd_ps(_mm512_loadu_ps(q + i + 32), _mm512_loadu_ps(r + i + 32), a2);
        a3 = _mm512_fmadd_ps(_mm512_loadu_ps(q + i + 48), _mm512_loadu_ps(r + i + 48), a3);
    }
    for (; i + 16 <= dim; i += 16)
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(q + i), _mm512_loadu_ps(r + i), a0);
    if (i < dim) {
        __mmask16 m = (__mmask16)((1u << (dim - i)) - 1u);
        a1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, q + i), _mm512_maskz_loadu_ps(m, r + i), a1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}

MG_AVX512 static float avx512_dot_f32(const float *a, const float *b, size_t n)
{
    return dot_row(a, b, n);
}

MG_AVX512 static void avx512_dot_f32_batch(const float *q, const float *rows, size_t stride,
                                           size_t dim, size_t n, float *out)
{
    for (size_t j = 0; j < n; j++)
        out[j] = dot_row(q, rows + j * stride, dim);
}

/* ---- int8 -------------------------------------------------------------- */

/* Both int8 forms multiply |q| (unsigned) by the row with q's sign moved onto
 * it: q*v = |q| * (sign(q) v), exact for bytes in [-127, 127]. The sign is
 * applied by a masked subtraction from zero (AVX-512 has no vpsignb). */
MG_AVX512 static inline __m512i signed_row(__m512i v, __mmask64 qneg)
{
    return _mm512_mask_sub_epi8(v, qneg, _mm512_setzero_si512(), v);
}

MG_AVX512VNNI static inline __m512i step_vnni(__m512i acc, __m512i qabs, __mmask64 qneg, __m512i v)
{
    return _mm512_dpbusd_epi32(acc, qabs, signed_row(v, qneg));
}

/* Without VNNI: pairwise int16 sums (below 2 * 127 * 127, no saturation),
 * then widened to int32 by a multiply-add with ones. */
MG_AVX512 static inline __m512i step_bw(__m512i acc, __m512i qabs, __mmask64 qneg, __m512i v)
{
    __m512i p16 = _mm512_maddubs_epi16(qabs, signed_row(v, qneg));
    return _mm512_add_epi32(acc, _mm512_madd_epi16(p16, _mm512_set1_epi16(1)));
}

/* The query is turned into |q| and sign masks once per call, 64 bytes per
 * chunk, the last chunk being the masked tail. That table is bounded by
 * I8_SLAB bytes of query; longer vectors (the index never has them) are
 * summed slab by slab. */
#define I8_SLAB 4096
#define I8_CHUNKS (I8_SLAB / 64)

/* The batch body, instantiated once per step function (a VNNI step cannot be
 * inlined into a function compiled without VNNI, so one body per target). */
#define DEFINE_I8_BATCH(fname, TARGET, step)                                                       \
    TARGET static void fname(const int8_t *q, const int8_t *rows, size_t stride, size_t dim,       \
                             size_t n, int32_t *out)                                               \
    {                                                                                              \
        if (dim > I8_SLAB) {                                                                       \
            for (size_t j = 0; j < n; j++) {                                                       \
                int32_t sum = 0, part;                                                             \
                for (size_t s0 = 0; s0 < dim; s0 += I8_SLAB) {                                     \
                    size_t d = dim - s0 < I8_SLAB ? dim - s0 : I8_SLAB;                            \
                    fname(q + s0, rows + j * stride + s0, stride, d, 1, &part);                    \
                    sum += part;                                                                   \
                }                                                                                  \
                out[j] = sum;                                                                      \
            }                                                                                      \
            return;                                                                                \
        }                                                                                          \
        __m512i qabs[I8_CHUNKS];                                                                   \
        __mmask64 qneg[I8_CHUNKS];                                                                 \
        size_t full = dim / 64, chunks = (dim + 63) / 64;                                          \
        __mmask64 m = (dim % 64) ? (__mmask64)(~0ULL >> (64 - dim % 64)) : (__mmask64)0;           \
        for (size_t c = 0; c < chunks; c++) {                                                      \
            __m512i v = c < full ? _mm512_loadu_si512(q + 64 * c)                                  \
                                 : _mm512_maskz_loadu_epi8(m, q + 64 * c);                         \
            qabs[c] = _mm512_abs_epi8(v);                                                          \
            qneg[c] = _mm512_movepi8_mask(v);                                                      \
        }                                                                                          \
        for (size_t j = 0; j < n; j++) {                                                           \
            const int8_t *r = rows + j * stride;                                                   \
            __m512i a0 = _mm512_setzero_si512(), a1 = _mm512_setzero_si512();                      \
            size_t c = 0;                                                                          \
            for (; c + 2 <= full; c += 2) {                                                        \
                a0 = step(a0, qabs[c], qneg[c], _mm512_loadu_si512(r + 64 * c));                   \
                a1 = step(a1, qabs[c + 1], qneg[c + 1], _mm512_loadu_si512(r + 64 * c + 64));      \
            }                                                                                      \
            if (c < full) {                                                                        \
                a0 = step(a0, qabs[c], qneg[c], _mm512_loadu_si512(r + 64 * c));                   \
                c++;                                                                               \
            }                                                                                      \
            if (m)                                                                                 \
                a1 = step(a1, qabs[c], qneg[c], _mm512_maskz_loadu_epi8(m, r + 64 * c));           \
            out[j] = _mm512_reduce_add_epi32(_mm512_add_epi32(a0, a1));                            \
        }                                                                                          \
    }

DEFINE_I8_BATCH(avx512vnni_dot_i8_batch, MG_AVX512VNNI, step_vnni)
DEFINE_I8_BATCH(avx512bw_dot_i8_batch, MG_AVX512, step_bw)

MG_AVX512VNNI static int32_t avx512vnni_dot_i8(const int8_t *a, const int8_t *b, size_t n)
{
    int32_t s;
    avx512vnni_dot_i8_batch(a, b, n, n, 1, &s);
    return s;
}

MG_AVX512 static int32_t avx512bw_dot_i8(const int8_t *a, const int8_t *b, size_t n)
{
    int32_t s;
    avx512bw_dot_i8_batch(a, b, n, n, 1, &s);
    return s;
}

const mg_simd mg_simd_avx512bw_table = {
    .name = "avx512bw",
    .dot_f32 = avx512_dot_f32,
    .dot_f32_batch = avx512_dot_f32_batch,
    .dot_i8 = avx512bw_dot_i8,
    .dot_i8_batch = avx512bw_dot_i8_batch,
};

const mg_simd mg_simd_avx512_table = {
    .name = "avx512",
    .dot_f32 = avx512_dot_f32,
    .dot_f32_batch = avx512_dot_f32_batch,
    .dot_i8 = avx512vnni_dot_i8,
    .dot_i8_batch = avx512vnni_dot_i8_batch,
};

#endif /* __x86_64__ */
