/*
 * index_bench: how close the flat scan of the vector index comes to the
 * machine's memory bandwidth, kernel by kernel, and what the int8 scan with
 * float32 rescoring gains and loses (speed, recall@10). All in one process,
 * so the figures are from the same machine state:
 *
 *   1. single-thread streaming-read bandwidth: a SIMD sum over a buffer as
 *      big as the f32 arena (median and best of several passes);
 *   2. a top-10 f32 scan of N x D normalized vectors with each kernel this
 *      CPU can run (GB/s = vector bytes scanned / median query time);
 *   3. the int8 scan (default rescoring) on the same cube with each kernel,
 *      and its recall@10 against the exact f32 top-10;
 *   4. the latency of one query against a 10,000 x 768 cube.
 *
 * Data are clustered gaussian vectors (like text embeddings, near neighbours
 * are much closer than random pairs), from a seeded splitmix64.
 *
 *   index_bench [--vectors N] [--dim D] [--queries Q] [--quick] [--json]
 */
#include "lib/clock.h"
#include "lib/error.h"
#include "storage/index.h"
#include "storage/simd.h"

#include <immintrin.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define K 10
#define MAX_KERNELS 8

typedef struct options {
    size_t vectors, queries, bw_bytes, small_vectors;
    uint32_t dim, small_dim;
    int f32_reps, scalar_reps;
    bool json, quick;
} options;

/* ---- data ---------------------------------------------------------------- */

static uint64_t rnd(uint64_t *s) /* splitmix64 */
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Close to N(0, 1): a sum of four 16-bit uniforms from one draw; far cheaper
 * than Box-Muller, which would dominate building a 384M-value data set. */
static float gauss(uint64_t *s)
{
    uint64_t r = rnd(s);
    uint32_t sum = (uint32_t)(r & 0xffff) + (uint32_t)((r >> 16) & 0xffff) +
                   (uint32_t)((r >> 32) & 0xffff) + (uint32_t)(r >> 48);
    return ((float)sum - 131070.0f) * (1.0f / 37837.2f);
}

typedef struct clusters {
    float *centers;
    size_t n;
    uint32_t dim;
} clusters;

/* A point of a random cluster: its center plus noise of about the same norm
 * (same-cluster cosines near 0.6, different-cluster ones near 0). */
static void sample(const clusters *c, uint64_t *s, float *out)
{
    const float *ctr = c->centers + (rnd(s) % c->n) * c->dim;
    for (uint32_t i = 0; i < c->dim; i++)
        out[i] = ctr[i] + 0.8f * gauss(s);
}

static int clusters_init(clusters *c, size_t n, uint32_t dim, uint64_t *s)
{
    c->n = n;
    c->dim = dim;
    c->centers = malloc(n * dim * sizeof(float));
    if (c->centers == NULL)
        return -1;
    for (size_t i = 0; i < n * dim; i++)
        c->centers[i] = gauss(s);
    return 0;
}

static void make_id(uint64_t key, uint8_t id[16])
{
    memset(id, 0, 16);
    memcpy(id, &key, sizeof key);
}

/* ---- memory bandwidth ---------------------------------------------------- */

/* Eight independent accumulators: enough loads in flight that the adds never
 * limit a read stream. */
__attribute__((target("avx512f"))) static float sum_avx512(const float *p, size_t n)
{
    __m512 a[8];
    for (int k = 0; k < 8; k++)
        a[k] = _mm512_setzero_ps();
    for (size_t i = 0; i + 128 <= n; i += 128)
        for (int k = 0; k < 8; k++)
            a[k] = _mm512_add_ps(a[k], _mm512_load_ps(p + i + 16 * k));
    for (int k = 1; k < 8; k++)
        a[0] = _mm512_add_ps(a[0], a[k]);
    return _mm512_reduce_add_ps(a[0]);
}

__attribute__((target("avx2"))) static float sum_avx2(const float *p, size_t n)
{
    __m256 a[8];
    for (int k = 0; k < 8; k++)
        a[k] = _mm256_setzero_ps();
    for (size_t i = 0; i + 64 <= n; i += 64)
        for (int k = 0; k < 8; k++)
            a[k] = _mm256_add_ps(a[k], _mm256_load_ps(p + i + 8 * k));
    for (int k = 1; k < 8; k++)
        a[0] = _mm256_add_ps(a[0], a[k]);
    float l[8];
    _mm256_storeu_ps(l, a[0]);
    return l[0] + l[1] + l[2] + l[3] + l[4] + l[5] + l[6] + l[7];
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, size_t n)
{
    qsort(v, n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static double seconds_since(uint64_t t0)
{
    return (double)(mg_clock_mono_ns() - t0) * 1e-9;
}

/* Median GB/s of the best read method, and the best single pass. */
static int measure_bandwidth(const options *o, double *med_gbps, double *best_gbps)
{
    size_t bytes = o->bw_bytes;
    float *buf = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buf == MAP_FAILED)
        return -1;
    (void)madvise(buf, bytes, MADV_HUGEPAGE); /* as the index's arenas */
    for (size_t i = 0; i < bytes / sizeof(float); i++)
        buf[i] = (float)(i & 1023);
    __builtin_cpu_init();
    float (*methods[2])(const float *, size_t);
    int n_methods = 0;
    if (__builtin_cpu_supports("avx512f"))
        methods[n_methods++] = sum_avx512;
    if (__builtin_cpu_supports("avx2"))
        methods[n_methods++] = sum_avx2;
    const int passes = o->quick ? 3 : 7;
    double gbps[16];
    volatile float sink = 0;
    *med_gbps = *best_gbps = 0;
    for (int m = 0; m < n_methods; m++) {
        sink += methods[m](buf, bytes / sizeof(float)); /* warm-up */
        for (int p = 0; p < passes; p++) {
            uint64_t t0 = mg_clock_mono_ns();
            sink += methods[m](buf, bytes / sizeof(float));
            gbps[p] = (double)bytes / seconds_since(t0) * 1e-9;
            *best_gbps = fmax(*best_gbps, gbps[p]);
        }
        *med_gbps = fmax(*med_gbps, median(gbps, (size_t)passes));
    }
    (void)sink;
    munmap(buf, bytes);
    return n_methods > 0 ? 0 : -1;
}

/* ---- queries ------------------------------------------------------------- */

typedef struct cube_run {
    const mg_index *ix;
    const char *cube;
    uint32_t dim;
} cube_run;

static double timed_search(const cube_run *r, const float *q, int scan, mg_index_hit *hits)
{
    const char *names[] = {r->cube};
    mg_index_query query = {
        .vec = q, .dim = r->dim, .cube_ids = names, .n_cubes = 1, .k = K, .scan = scan};
    size_t n = 0;
    mg_error err;
    uint64_t t0 = mg_clock_mono_ns();
    int rc = mg_index_search(r->ix, &query, hits, &n, &err);
    double t = seconds_since(t0);
    if (rc != MG_OK || n != K) {
        fprintf(stderr, "index_bench: search failed: %s\n", rc ? err.msg : "short answer");
        exit(1);
    }
    return t;
}

/* Median seconds of `reps` queries (after one warm-up). */
static double median_query(const cube_run *r, const float *queries, int reps, int scan)
{
    double t[64];
    mg_index_hit hits[K];
    timed_search(r, queries, scan, hits);
    for (int i = 0; i < reps; i++)
        t[i] = timed_search(r, queries + (size_t)i * r->dim, scan, hits);
    return median(t, (size_t)reps);
}

typedef struct kernel_result {
    const char *name;
    int reps;
    double f32[64], int8[64]; /* seconds per query */
    double f32_s, int8_s;     /* medians */
} kernel_result;

/* Times every kernel on the same queries, round-robin: query i with each
 * kernel, then query i + 1. The machine is shared and noisy; interleaving
 * spreads a busy spell over all kernels instead of ruining one. */
static void time_kernels(const cube_run *r, const float *queries, kernel_result *kr, size_t n_kr)
{
    mg_index_hit hits[K];
    int reps = 0;
    for (size_t k = 0; k < n_kr; k++) {
        mg_simd_select(kr[k].name);
        timed_search(r, queries, MG_SCAN_F32, hits); /* warm-up */
        reps = kr[k].reps > reps ? kr[k].reps : reps;
    }
    for (int i = 0; i < reps; i++) {
        const float *q = queries + (size_t)i * r->dim;
        for (size_t k = 0; k < n_kr; k++) {
            if (i >= kr[k].reps)
                continue;
            mg_simd_select(kr[k].name);
            kr[k].f32[i] = timed_search(r, q, MG_SCAN_F32, hits);
            kr[k].int8[i] = timed_search(r, q, MG_SCAN_INT8, hits);
        }
    }
    for (size_t k = 0; k < n_kr; k++) {
        kr[k].f32_s = median(kr[k].f32, (size_t)kr[k].reps);
        kr[k].int8_s = median(kr[k].int8, (size_t)kr[k].reps);
    }
}

static int load_cube(mg_index *ix, const char *cube, size_t n, const clusters *c, uint64_t *s)
{
    float *v = malloc(c->dim * sizeof(float));
    uint8_t id[16];
    mg_error err;
    for (size_t i = 0; i < n; i++) {
        sample(c, s, v);
        make_id(i, id);
        if (mg_index_add(ix, cube, id, v, c->dim, &err) != MG_OK) {
            fprintf(stderr, "index_bench: add: %s\n", err.msg);
            free(v);
            return -1;
        }
    }
    free(v);
    return 0;
}

/* ---- main ---------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f, "usage: index_bench [--vectors N] [--dim D] [--queries Q] [--quick] [--json]\n"
               "  --vectors N  vectors in the scanned cube (default 1000000)\n"
               "  --dim D      their dimension, 1..4096 (default 384)\n"
               "  --queries Q  queries for recall@10 (default 50)\n"
               "  --quick      small sizes, a second or two (smoke test)\n"
               "  --json       one JSON object on stdout instead of a table\n");
}

static bool parse_size(const char *s, size_t lo, size_t hi, size_t *out)
{
    char *end;
    unsigned long long v = s ? strtoull(s, &end, 10) : 0;
    if (s == NULL || *s == '\0' || *end != '\0' || v < lo || v > hi)
        return false;
    *out = (size_t)v;
    return true;
}

static int parse_args(int argc, char **argv, options *o)
{
    *o = (options){.vectors = 1000000,
                   .queries = 50,
                   .bw_bytes = (size_t)1536 << 20,
                   .small_vectors = 10000,
                   .dim = 384,
                   .small_dim = 768,
                   .f32_reps = 15,
                   .scalar_reps = 5};
    bool vectors_set = false;
    for (int i = 1; i < argc; i++) {
        size_t v;
        if (strcmp(argv[i], "--json") == 0) {
            o->json = true;
        } else if (strcmp(argv[i], "--quick") == 0) {
            o->quick = true;
        } else if (strcmp(argv[i], "--vectors") == 0 &&
                   parse_size(argv[i + 1], 100, 1u << 30, &v)) {
            o->vectors = v;
            vectors_set = true;
            i++;
        } else if (strcmp(argv[i], "--dim") == 0 && parse_size(argv[i + 1], 1, 4096, &v)) {
            o->dim = (uint32_t)v;
            i++;
        } else if (strcmp(argv[i], "--queries") == 0 && parse_size(argv[i + 1], 1, 10000, &v)) {
            o->queries = v;
            i++;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            exit(0);
        } else {
            usage(stderr);
            return -1;
        }
    }
    if (o->quick) {
        if (!vectors_set)
            o->vectors = 20000;
        o->queries = o->queries < 20 ? o->queries : 20;
        o->bw_bytes = (size_t)64 << 20;
        o->small_vectors = 2000;
        o->f32_reps = 5;
        o->scalar_reps = 3;
    } else {
        /* the bandwidth buffer as big as the arena, at least 256 MiB so that
         * it is measured from memory and not from the caches */
        size_t arena = o->vectors * o->dim * sizeof(float);
        o->bw_bytes = arena > ((size_t)256 << 20) ? arena : (size_t)256 << 20;
    }
    o->bw_bytes &= ~(size_t)((2 << 20) - 1);
    return 0;
}

int main(int argc, char **argv)
{
    options o;
    if (parse_args(argc, argv, &o) != 0)
        return 2;
    const char *default_kernel = mg_simd_active()->name;
    double bw_med, bw_best;
    if (measure_bandwidth(&o, &bw_med, &bw_best) != 0) {
        fprintf(stderr, "index_bench: cannot measure bandwidth (no AVX2, or no memory)\n");
        return 1;
    }

    uint64_t s = 0x1dea5eed;
    clusters cl, cl_small;
    mg_index *ix = NULL, *small = NULL;
    mg_index_options iopt = {.int8 = true};
    mg_error err;
    if (clusters_init(&cl, o.quick ? 64 : 1024, o.dim, &s) != 0 ||
        clusters_init(&cl_small, 64, o.small_dim, &s) != 0 ||
        mg_index_create(&iopt, &ix, &err) != MG_OK || mg_index_create(NULL, &small, &err) != MG_OK)
        return 1;
    uint64_t t0 = mg_clock_mono_ns();
    if (load_cube(ix, "bench", o.vectors, &cl, &s) != 0)
        return 1;
    double load_s = seconds_since(t0);
    if (load_cube(small, "small", o.small_vectors, &cl_small, &s) != 0)
        return 1;

    size_t nq = o.queries > 64 ? o.queries : 64; /* timing uses up to 64 */
    float *queries = malloc(nq * o.dim * sizeof(float));
    float *small_q = malloc(64 * (size_t)o.small_dim * sizeof(float));
    for (size_t i = 0; i < nq; i++)
        sample(&cl, &s, queries + i * o.dim);
    for (size_t i = 0; i < 64; i++)
        sample(&cl_small, &s, small_q + i * o.small_dim);

    cube_run run = {ix, "bench", o.dim};
    kernel_result kr[MAX_KERNELS];
    size_t n_kr = 0, best = 0, best_i8 = 0;
    for (const char *const *name = mg_simd_names(); *name && n_kr < MAX_KERNELS; name++)
        if (mg_simd_get(*name) != NULL)
            kr[n_kr++] = (kernel_result){
                .name = *name, .reps = strcmp(*name, "scalar") == 0 ? o.scalar_reps : o.f32_reps};
    time_kernels(&run, queries, kr, n_kr);
    for (size_t k = 0; k < n_kr; k++) {
        best = kr[k].f32_s < kr[best].f32_s ? k : best;
        best_i8 = kr[k].int8_s < kr[best_i8].int8_s ? k : best_i8;
    }

    /* recall@10 of int8 + rescoring against the exact f32 top-10 */
    mg_simd_select(kr[best_i8].name);
    size_t found = 0;
    for (size_t qi = 0; qi < o.queries; qi++) {
        mg_index_hit exact[K], approx[K];
        timed_search(&run, queries + qi * o.dim, MG_SCAN_F32, exact);
        timed_search(&run, queries + qi * o.dim, MG_SCAN_INT8, approx);
        for (int i = 0; i < K; i++)
            for (int j = 0; j < K; j++)
                found += memcmp(approx[i].id, exact[j].id, 16) == 0;
    }
    double recall = (double)found / (double)(o.queries * K);

    mg_simd_select(kr[best].name);
    cube_run small_run = {small, "small", o.small_dim};
    double small_s = median_query(&small_run, small_q, 31, MG_SCAN_F32);

    double gb = (double)o.vectors * o.dim * sizeof(float) * 1e-9;
    double f32_best_gbps = gb / kr[best].f32_s;
    double int8_speedup = kr[best].f32_s / kr[best_i8].int8_s;
    char date[32];
    time_t now = time(NULL);
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));

    if (o.json) {
        printf("{\"bench\":\"index\",\"date\":\"%s\",\"quick\":%s,\"vectors\":%zu,\"dim\":%u,"
               "\"queries\":%zu,"
               "\"default_kernel\":\"%s\",\"bandwidth_gbps\":%.2f,\"bandwidth_best_gbps\":%.2f,"
               "\"kernels\":{",
               date, o.quick ? "true" : "false", o.vectors, o.dim, o.queries, default_kernel,
               bw_med, bw_best);
        for (size_t i = 0; i < n_kr; i++)
            printf("%s\"%s\":{\"f32_ms\":%.3f,\"f32_gbps\":%.2f,\"int8_ms\":%.3f}", i ? "," : "",
                   kr[i].name, kr[i].f32_s * 1e3, gb / kr[i].f32_s, kr[i].int8_s * 1e3);
        printf("},\"f32_best_kernel\":\"%s\",\"f32_best_ms\":%.3f,\"f32_best_gbps\":%.2f,"
               "\"f32_ratio\":%.3f,\"int8_kernel\":\"%s\",\"int8_ms\":%.3f,\"int8_speedup\":%.2f,"
               "\"int8_recall_at_10\":%.4f,\"int8_rescore\":%d,\"query_10k_768_us\":%.1f,"
               "\"small_vectors\":%zu,\"load_s\":%.2f,\"load_vectors_per_s\":%.0f}\n",
               kr[best].name, kr[best].f32_s * 1e3, f32_best_gbps, f32_best_gbps / bw_med,
               kr[best_i8].name, kr[best_i8].int8_s * 1e3, int8_speedup, recall, 64, small_s * 1e6,
               o.small_vectors, load_s, (double)o.vectors / load_s);
    } else {
        printf("index_bench %s: %zu x %u float32 (%.2f GB), top-%d, default kernel %s\n", date,
               o.vectors, o.dim, gb, K, default_kernel);
        printf("  memory read bandwidth, 1 thread   %8.2f GB/s median, %.2f best\n", bw_med,
               bw_best);
        printf("  %-10s %12s %10s %12s\n", "kernel", "f32 ms", "f32 GB/s", "int8 ms");
        for (size_t i = 0; i < n_kr; i++)
            printf("  %-10s %12.2f %10.2f %12.2f\n", kr[i].name, kr[i].f32_s * 1e3,
                   gb / kr[i].f32_s, kr[i].int8_s * 1e3);
        printf("  f32 best: %s %.2f GB/s = %.2f of bandwidth\n", kr[best].name, f32_best_gbps,
               f32_best_gbps / bw_med);
        printf("  int8 + rescore (%s): %.2fx faster than f32, recall@10 %.4f over %zu queries\n",
               kr[best_i8].name, int8_speedup, recall, o.queries);
        printf("  one query, %zu x %u cube: %.1f us\n", o.small_vectors, o.small_dim,
               small_s * 1e6);
        printf("  load: %.2f s (%.0f vectors/s)\n", load_s, (double)o.vectors / load_s);
        if (o.quick)
            printf("  (--quick: the data fit in the caches; the ratios mean nothing)\n");
    }
    mg_index_destroy(ix);
    mg_index_destroy(small);
    free(queries);
    free(small_q);
    free(cl.centers);
    free(cl_small.centers);
    return 0;
}
