/*
 * The vector index (DESIGN §8): per cube, a 64-byte-aligned arena of
 * L2-normalized float32 vectors, an id table and tombstones; optionally an
 * int8 copy for quantized scans. Search is an exact top-k by inner product
 * (= cosine, since vectors are normalized at insert) over one or several
 * cubes, with the SIMD kernel chosen at start from the CPU's features.
 *
 * Concurrency: one writer and many readers. mg_index_search may run on any
 * number of threads while one thread adds, removes, compacts or drops; a
 * search sees each cube either before or after a write, never half of it.
 * Writers must be serialized by the caller. Adds and removes never wait for
 * searches (rows are versioned and published atomically); compact and drop
 * wait for the searches already scanning that cube, and creating a cube for
 * those only looking cubes up. mg_index_count and mg_index_dim may be called
 * from any thread.
 */
#ifndef MG_INDEX_H
#define MG_INDEX_H

#include "../lib/error.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct mg_index mg_index;

typedef struct mg_index_options {
    bool int8;             /* keep an int8 copy of every vector for MG_SCAN_INT8 */
} mg_index_options;

/* New empty index. opts may be NULL (defaults: int8 off). */
int mg_index_create(const mg_index_options *opts, mg_index **out, mg_error *err);
void mg_index_destroy(mg_index *ix);

/* Adds or replaces the vector of memory `id` in `cube_id`. The vector is
 * copied and normalized. The first vector of a cube fixes its dimension; a
 * different one is MG_EDIM. NaN/Inf is MG_ENAN, an all-zero vector MG_EINVAL;
 * on any error nothing changes. Also MG_EDIM for a dimension outside
 * 1..MG_DIM_MAX, MG_EINVAL for a cube id mg_cube_id_valid refuses, MG_ENOMEM,
 * and MG_EFULL when a cube has written ~2^32 rows since its last compaction. */
int mg_index_add(mg_index *ix, const char *cube_id, const uint8_t id[16], const float *vec,
                 uint32_t dim, mg_error *err);

/* Tombstones memory `id`; MG_ENOTFOUND when it is not there. */
int mg_index_remove(mg_index *ix, const char *cube_id, const uint8_t id[16]);

/* Forgets a whole cube (no-op when absent). */
void mg_index_drop_cube(mg_index *ix, const char *cube_id);

/* Rewrites a cube's arena without its tombstones (removed and replaced rows
 * keep their space until then). MG_ENOTFOUND when the cube is absent,
 * MG_ENOMEM (nothing changed) when the copy cannot be allocated. */
int mg_index_compact(mg_index *ix, const char *cube_id, mg_error *err);

/* Live vectors in a cube (0 when absent); dimension of a cube (0 when absent). */
size_t mg_index_count(const mg_index *ix, const char *cube_id);
uint32_t mg_index_dim(const mg_index *ix, const char *cube_id);

enum mg_scan { MG_SCAN_F32 = 0, MG_SCAN_INT8 = 1 };

/* Called for each live candidate before it is scored; return false to skip
 * it. `cube` is the position in the query's cube list. Runs on the searching
 * thread, possibly while the index is read-locked: it must not call back into
 * the index. */
typedef bool (*mg_index_accept_fn)(void *arg, size_t cube, const uint8_t id[16]);

typedef struct mg_index_query {
    const float *vec;            /* not normalized needed: the index normalizes a copy */
    uint32_t dim;
    const char *const *cube_ids; /* cubes to search; absent cubes are skipped */
    size_t n_cubes;
    size_t k;                    /* hits wanted */
    int scan;                    /* enum mg_scan; INT8 on an index without int8
                                    copies scans float32 (exact) */
    size_t rescore;              /* INT8: candidates rescored in f32; 0 = max(4k, 64) */
    mg_index_accept_fn accept;   /* NULL = accept all */
    void *accept_arg;
    float *vecs;                 /* NULL, or room for k × dim floats: receives hit i's
                                    normalized vector at vecs + i × dim (the row that
                                    was scored, copied before the search returns) */
} mg_index_query;

typedef struct mg_index_hit {
    float score;                 /* inner product of normalized vectors, in [-1, 1] */
    uint32_t cube;               /* position in the query's cube list */
    uint8_t id[16];
} mg_index_hit;

/* Fills hits[0..*n_hits) (capacity q->k) with the best hits, best first
 * (ties broken by id, so results are deterministic). A query dimension that
 * differs from a cube's is MG_EDIM; NaN/Inf in the query MG_ENAN. */
int mg_index_search(const mg_index *ix, const mg_index_query *q, mg_index_hit *hits,
                    size_t *n_hits, mg_error *err);

/* Name of the kernel table in use ("scalar", "avx2", "avx512bw", "avx512";
 * see storage/simd.h). */
const char *mg_index_kernel_name(void);

#endif
