/*
 * Private to storage/index.c and storage/index_search.c: the index's structs
 * and the helpers both need. index.c holds the cube map, the segments and
 * the writer's side (add, remove, drop, compact); index_search.c the
 * readers' side (mg_index_search). Nothing outside storage/ includes this.
 *
 * Layout. A cube's rows live in up to SEG_MAX segments; segment s holds
 * SEG_BASE << s rows, so a cube grows by adding a segment twice the size of
 * the last one and rows never move (no copy of a large arena, no pointer a
 * reader holds going stale). A segment is one 64-byte-aligned allocation
 * holding, per row, the normalized float32 vector (stride padded to 16
 * floats, padding zero), optionally its int8 copy (stride padded to 64 bytes)
 * and scale, the 16-byte id, and the generations below.
 *
 * Concurrency (one writer, many readers) is multi-version, so that an add or
 * a remove never waits for a running scan, and a scan never sees half of a
 * write. Every write publishes a new generation of its cube. A row carries
 * `born` (the generation that added it) and `dead` (the one that removed or
 * replaced it, GEN_NEVER while live); a search reads the generation G once
 * and sees exactly the rows with born <= G < dead. The writer fills a row,
 * marks the row it replaces dead, and only then publishes the row count and
 * the generation with release stores; readers load them with acquire. Per
 * block of BLOCK rows, `dead_min` keeps the least `dead`, so a block without
 * deaths visible at G is scored without looking at its rows one by one.
 *
 * Locks are left for what changes the structure: the index's rwlock guards
 * the cube map (readers hold it only to look cubes up and lock them), a
 * cube's rwlock is read-held by searches for the whole scan and write-held
 * only to swap in a compacted arena or before freeing a dropped cube. Both
 * prefer writers, so a stream of searches cannot starve compaction.
 */
#ifndef MG_INDEX_INTERNAL_H
#define MG_INDEX_INTERNAL_H

#include "index.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SEG_BASE 16u         /* rows in segment 0 */
#define SEG_MAX 28           /* SEG_BASE * (2^28 - 1) rows: just under 2^32 */
#define BLOCK 256u           /* rows per scan step and per dead_min entry */
#define GEN_NEVER UINT64_MAX /* `dead` of a live row */

/* Open-addressing hash map (linear probing; its functions are in index.c).
 * Maps a 64-bit hash to a non-zero value; the key itself is found through
 * the value (a row's id, a cube's name) by the caller's eq function, so the
 * map stores no copy of it. */
typedef struct hslot {
    uint64_t hash;
    uint64_t val; /* 0 = empty */
} hslot;

typedef struct hmap {
    hslot *slots;
    size_t cap; /* 0 or a power of two */
    size_t used;
} hmap;

typedef struct segment {
    void *mem; /* NULL until the segment is first needed */
    size_t mem_size;
    bool mapped;
    float *f32;
    int8_t *i8;   /* NULL when the index keeps no int8 copy */
    float *scale; /* int8 dequantization scale per row */
    uint8_t (*ids)[16];
    uint64_t *born;
    _Atomic uint64_t *dead;
    _Atomic uint64_t *dead_min; /* per BLOCK rows */
} segment;

typedef struct cube {
    char *id;
    size_t id_len;
    uint32_t dim, stride, stride8; /* stride in floats, stride8 in bytes */
    bool int8;
    pthread_rwlock_t lock;
    _Atomic uint64_t gen;  /* last published generation */
    _Atomic uint64_t rows; /* rows written and published, live or dead */
    _Atomic uint64_t live;
    segment seg[SEG_MAX];
    hmap ids; /* id -> row + 1; used by the writer only */
} cube;

struct mg_index {
    pthread_rwlock_t lock; /* guards `cubes` */
    hmap cubes;            /* cube name -> (uintptr_t)cube */
    bool int8;
};

static inline size_t align_up(size_t x, size_t a)
{
    return (x + a - 1) & ~(a - 1);
}

/* First row of segment s, and how many rows it holds. */
static inline uint64_t seg_start(unsigned s)
{
    return (uint64_t)SEG_BASE * ((UINT64_C(1) << s) - 1);
}

static inline uint32_t seg_cap(unsigned s)
{
    return SEG_BASE << s;
}

/* Segment of `row`, and the row's offset in it. */
static inline unsigned seg_of(uint64_t row, uint32_t *off)
{
    unsigned s = 63u - (unsigned)__builtin_clzll(row / SEG_BASE + 1);
    *off = (uint32_t)(row - seg_start(s));
    return s;
}

/* The cube called `name`, or NULL. Callers hold ix->lock (shared is
 * enough), or are the writer (the only thread that changes the map). The
 * cube is the map's: it stays valid while the caller holds ix->lock or the
 * cube's own lock, and for the writer until it drops the cube. */
cube *index_cube_find(const mg_index *ix, const char *name);

/* MG_OK when v[0..dim) is finite and not all zeros; else MG_ENAN or
 * MG_EINVAL with a message naming `what` ("query vector"). */
int index_vector_check(const float *v, uint32_t dim, const char *what, mg_error *err);

/* out[0..dim) = v / |v|, out[dim..padded) = 0. v has passed
 * index_vector_check. */
void index_normalize(const float *v, uint32_t dim, uint32_t padded, float *out);

#endif
