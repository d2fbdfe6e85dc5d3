/*
 * The vector index (index.h).
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
#include "index.h"

#include "../lib/log.h"
#include "item.h"
#include "simd.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <xxhash.h>

#define SEG_BASE 16u                /* rows in segment 0 */
#define SEG_MAX 28                  /* SEG_BASE * (2^28 - 1) rows: just under 2^32 */
#define BLOCK 256u                  /* rows per scan step and per dead_min entry */
#define GEN_NEVER UINT64_MAX        /* `dead` of a live row */
#define MMAP_MIN ((size_t)4 << 20)  /* segments this big are mmap'ed ... */
#define HUGE_PAGE ((size_t)2 << 20) /* ... with transparent huge pages */

/* ---- open-addressing hash map (linear probing) ------------------------ */

/* Maps a 64-bit hash to a non-zero value; the key itself is found through
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

typedef bool (*hmap_eq_fn)(const void *ctx, uint64_t val, const void *key);

static hslot *hmap_find(const hmap *m, uint64_t h, hmap_eq_fn eq, const void *ctx, const void *key)
{
    if (m->cap == 0)
        return NULL;
    for (size_t i = h & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        hslot *s = &m->slots[i];
        if (s->val == 0)
            return NULL;
        if (s->hash == h && eq(ctx, s->val, key))
            return s;
    }
}

static void hmap_put_new(hmap *m, uint64_t h, uint64_t val)
{
    size_t i = h & (m->cap - 1);
    while (m->slots[i].val != 0)
        i = (i + 1) & (m->cap - 1);
    m->slots[i] = (hslot){h, val};
    m->used++;
}

/* Room for n entries at a load of at most 1/2; on MG_ENOMEM m is unchanged. */
static int hmap_reserve(hmap *m, size_t n)
{
    if (2 * n <= m->cap)
        return MG_OK;
    size_t cap = m->cap ? m->cap : 16;
    while (cap < 2 * n)
        cap *= 2;
    hmap grown = {calloc(cap, sizeof(hslot)), cap, 0};
    if (grown.slots == NULL)
        return MG_ENOMEM;
    for (size_t i = 0; i < m->cap; i++)
        if (m->slots[i].val != 0)
            hmap_put_new(&grown, m->slots[i].hash, m->slots[i].val);
    free(m->slots);
    *m = grown;
    return MG_OK;
}

/* Backward-shift deletion: linear probing needs no tombstones if every entry
 * after the hole that may move closer to its home slot does. */
static void hmap_erase(hmap *m, hslot *s)
{
    size_t mask = m->cap - 1, hole = (size_t)(s - m->slots);
    for (size_t j = (hole + 1) & mask; m->slots[j].val != 0; j = (j + 1) & mask) {
        size_t home = m->slots[j].hash & mask;
        bool stays = hole <= j ? (hole < home && home <= j) : (hole < home || home <= j);
        if (!stays) {
            m->slots[hole] = m->slots[j];
            hole = j;
        }
    }
    m->slots[hole] = (hslot){0, 0};
    m->used--;
}

/* ---- cubes and segments ----------------------------------------------- */

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

static size_t align_up(size_t x, size_t a)
{
    return (x + a - 1) & ~(a - 1);
}

static uint64_t seg_start(unsigned s)
{
    return (uint64_t)SEG_BASE * ((UINT64_C(1) << s) - 1);
}

static uint32_t seg_cap(unsigned s)
{
    return SEG_BASE << s;
}

/* Segment of `row`, and the row's offset in it. */
static unsigned seg_of(uint64_t row, uint32_t *off)
{
    unsigned s = 63u - (unsigned)__builtin_clzll(row / SEG_BASE + 1);
    *off = (uint32_t)(row - seg_start(s));
    return s;
}

#define MAX_ROWS seg_start(SEG_MAX)

static int segment_alloc(segment *sg, uint32_t cap, const cube *c)
{
    size_t nblocks = (cap + BLOCK - 1) / BLOCK;
    size_t o_i8 = align_up((size_t)cap * c->stride * sizeof(float), 64);
    size_t o_scale = align_up(o_i8 + (c->int8 ? (size_t)cap * c->stride8 : 0), 64);
    size_t o_ids = align_up(o_scale + (c->int8 ? (size_t)cap * sizeof(float) : 0), 64);
    size_t o_born = align_up(o_ids + (size_t)cap * 16, 64);
    size_t o_dead = align_up(o_born + (size_t)cap * sizeof(uint64_t), 64);
    size_t o_min = align_up(o_dead + (size_t)cap * sizeof(uint64_t), 64);
    size_t size = align_up(o_min + nblocks * sizeof(uint64_t), 64);
    char *mem;
    sg->mapped = size >= MMAP_MIN;
    if (sg->mapped) {
        size = align_up(size, HUGE_PAGE);
        mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (mem == MAP_FAILED)
            return MG_ENOMEM;
        /* A scan streams through the whole segment: 2 MiB pages spare it a
         * TLB miss every 4 KiB and make first-touch faults far cheaper.
         * Advice only; without THP the kernel ignores it. */
        (void)madvise(mem, size, MADV_HUGEPAGE);
    } else {
        mem = aligned_alloc(64, size);
        if (mem == NULL)
            return MG_ENOMEM;
    }
    sg->mem = mem;
    sg->mem_size = size;
    sg->f32 = (float *)(void *)mem;
    sg->i8 = c->int8 ? (int8_t *)(mem + o_i8) : NULL;
    sg->scale = c->int8 ? (float *)(void *)(mem + o_scale) : NULL;
    sg->ids = (uint8_t(*)[16])(void *)(mem + o_ids);
    sg->born = (uint64_t *)(void *)(mem + o_born);
    sg->dead = (_Atomic uint64_t *)(void *)(mem + o_dead);
    sg->dead_min = (_Atomic uint64_t *)(void *)(mem + o_min);
    for (size_t i = 0; i < nblocks; i++)
        atomic_init(&sg->dead_min[i], GEN_NEVER);
    return MG_OK;
}

static void segments_free(segment *segs)
{
    for (unsigned s = 0; s < SEG_MAX; s++) {
        if (segs[s].mem == NULL)
            continue;
        if (segs[s].mapped)
            munmap(segs[s].mem, segs[s].mem_size);
        else
            free(segs[s].mem);
        segs[s].mem = NULL;
    }
}

static bool id_eq(const void *ctx, uint64_t val, const void *key)
{
    const segment *segs = ctx;
    uint32_t off;
    unsigned s = seg_of(val - 1, &off);
    return memcmp(segs[s].ids[off], key, 16) == 0;
}

static uint64_t id_hash(const uint8_t id[16])
{
    return XXH3_64bits(id, 16);
}

typedef struct name_key {
    const char *s;
    size_t len;
} name_key;

static bool cube_eq(const void *ctx, uint64_t val, const void *key)
{
    (void)ctx;
    const cube *c = (const cube *)(uintptr_t)val;
    const name_key *k = key;
    return c->id_len == k->len && memcmp(c->id, k->s, k->len) == 0;
}

/* The map slot of the cube called `name`, or NULL. Callers hold ix->lock,
 * or are the writer (the only thread that changes the map). */
static hslot *cube_slot(const mg_index *ix, const char *name)
{
    name_key k = {name, strlen(name)};
    return hmap_find(&ix->cubes, XXH3_64bits(name, k.len), cube_eq, NULL, &k);
}

static cube *cube_find(const mg_index *ix, const char *name)
{
    hslot *s = cube_slot(ix, name);
    return s ? (cube *)(uintptr_t)s->val : NULL;
}

static int rwlock_init_writer_first(pthread_rwlock_t *lock)
{
    pthread_rwlockattr_t attr;
    if (pthread_rwlockattr_init(&attr) != 0)
        return MG_ENOMEM;
    /* glibc prefers readers by default: back-to-back searches would then
     * hold off a compaction or a new cube forever. */
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    int rc = pthread_rwlock_init(lock, &attr);
    pthread_rwlockattr_destroy(&attr);
    return rc == 0 ? MG_OK : MG_ENOMEM;
}

static void cube_destroy(cube *c)
{
    segments_free(c->seg);
    free(c->ids.slots);
    pthread_rwlock_destroy(&c->lock);
    free(c->id);
    free(c);
}

static cube *cube_create(const char *name, uint32_t dim, bool int8)
{
    cube *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->id_len = strlen(name);
    c->id = strdup(name);
    if (c->id == NULL)
        goto err_free_cube;
    if (rwlock_init_writer_first(&c->lock) != MG_OK)
        goto err_free_id;
    c->dim = dim;
    c->stride = (uint32_t)align_up(dim, 16);
    c->stride8 = (uint32_t)align_up(dim, 64);
    c->int8 = int8;
    atomic_init(&c->gen, 0);
    atomic_init(&c->rows, 0);
    atomic_init(&c->live, 0);
    return c;

err_free_id:
    free(c->id);
err_free_cube:
    free(c);
    return NULL;
}

/* ---- validation and normalization ------------------------------------- */

static int vector_check(const float *v, uint32_t dim, const char *what, mg_error *err)
{
    double ss = 0.0;
    for (uint32_t i = 0; i < dim; i++) {
        if (!isfinite(v[i]))
            return mg_error_set(err, MG_ENAN, "%s has %s at position %u", what,
                                isnan(v[i]) ? "NaN" : "an infinite value", i);
        ss += (double)v[i] * (double)v[i];
    }
    if (ss == 0.0)
        return mg_error_set(err, MG_EINVAL, "%s is all zeros and has no direction", what);
    return MG_OK;
}

/* out[0..dim) = v / |v|, out[dim..padded) = 0. v has passed vector_check.
 * The norm is summed in double so that no finite float input overflows. */
static void normalize(const float *v, uint32_t dim, uint32_t padded, float *out)
{
    double ss = 0.0;
    for (uint32_t i = 0; i < dim; i++)
        ss += (double)v[i] * (double)v[i];
    double inv = 1.0 / sqrt(ss);
    for (uint32_t i = 0; i < dim; i++)
        out[i] = (float)((double)v[i] * inv);
    memset(out + dim, 0, (size_t)(padded - dim) * sizeof(float));
}

/* ---- writes (one writer) ---------------------------------------------- */

/* Marks `row` dead from generation g on. Visible to readers once g is. */
static void row_kill(cube *c, uint64_t row, uint64_t g)
{
    uint32_t off;
    segment *sg = &c->seg[seg_of(row, &off)];
    atomic_store_explicit(&sg->dead[off], g, memory_order_relaxed);
    _Atomic uint64_t *m = &sg->dead_min[off / BLOCK];
    if (atomic_load_explicit(m, memory_order_relaxed) > g)
        atomic_store_explicit(m, g, memory_order_relaxed);
}

/* Appends the vector of `id` to c as one new generation, replacing the row
 * the id had. vec has passed vector_check. On error nothing is visible. */
static int cube_append(cube *c, const uint8_t id[16], const float *vec, mg_error *err)
{
    uint64_t row = atomic_load_explicit(&c->rows, memory_order_relaxed);
    if (row >= MAX_ROWS)
        return mg_error_set(err, MG_EFULL,
                            "cube %s has %llu rows, the most it can hold; compact it", c->id,
                            (unsigned long long)row);
    uint32_t off;
    unsigned s = seg_of(row, &off);
    segment *sg = &c->seg[s];
    if (sg->mem == NULL && segment_alloc(sg, seg_cap(s), c) != MG_OK)
        return mg_error_set(err, MG_ENOMEM, "cube %s: no memory for %u more rows", c->id,
                            seg_cap(s));
    uint64_t h = id_hash(id);
    hslot *old = hmap_find(&c->ids, h, id_eq, c->seg, id);
    if (old == NULL && hmap_reserve(&c->ids, c->ids.used + 1) != MG_OK)
        return mg_error_set(err, MG_ENOMEM, "cube %s: no memory for the id map", c->id);

    uint64_t g = atomic_load_explicit(&c->gen, memory_order_relaxed) + 1;
    float *f = sg->f32 + (size_t)off * c->stride;
    normalize(vec, c->dim, c->stride, f);
    if (c->int8) {
        int8_t *q = sg->i8 + (size_t)off * c->stride8;
        sg->scale[off] = mg_simd_quantize_i8(f, c->dim, q);
        memset(q + c->dim, 0, c->stride8 - c->dim);
    }
    memcpy(sg->ids[off], id, 16);
    sg->born[off] = g;
    atomic_store_explicit(&sg->dead[off], GEN_NEVER, memory_order_relaxed);
    if (old != NULL)
        row_kill(c, old->val - 1, g);
    atomic_store_explicit(&c->rows, row + 1, memory_order_release);
    atomic_store_explicit(&c->gen, g, memory_order_release);

    if (old != NULL) {
        old->val = row + 1;
    } else {
        hmap_put_new(&c->ids, h, row + 1);
        atomic_fetch_add_explicit(&c->live, 1, memory_order_relaxed);
    }
    return MG_OK;
}

int mg_index_create(const mg_index_options *opts, mg_index **out, mg_error *err)
{
    if (out == NULL)
        return mg_error_set(err, MG_EINVAL, "index create: NULL out");
    mg_index *ix = calloc(1, sizeof *ix);
    if (ix == NULL)
        return mg_error_set(err, MG_ENOMEM, "index create: out of memory");
    if (rwlock_init_writer_first(&ix->lock) != MG_OK) {
        free(ix);
        return mg_error_set(err, MG_ENOMEM, "index create: cannot initialize its lock");
    }
    ix->int8 = opts != NULL && opts->int8;
    (void)mg_simd_active(); /* choose (and log) the kernel now, not in the first search */
    *out = ix;
    return MG_OK;
}

void mg_index_destroy(mg_index *ix)
{
    if (ix == NULL)
        return;
    for (size_t i = 0; i < ix->cubes.cap; i++)
        if (ix->cubes.slots[i].val != 0)
            cube_destroy((cube *)(uintptr_t)ix->cubes.slots[i].val);
    free(ix->cubes.slots);
    pthread_rwlock_destroy(&ix->lock);
    free(ix);
}

int mg_index_add(mg_index *ix, const char *cube_id, const uint8_t id[16], const float *vec,
                 uint32_t dim, mg_error *err)
{
    if (ix == NULL || cube_id == NULL || id == NULL || vec == NULL)
        return mg_error_set(err, MG_EINVAL, "index add: NULL argument");
    if (!mg_cube_id_valid(cube_id, strlen(cube_id)))
        return mg_error_set(err, MG_EINVAL, "index add: invalid cube id");
    if (dim == 0 || dim > MG_DIM_MAX)
        return mg_error_set(err, MG_EDIM, "vector dimension %u is outside 1..%d", dim, MG_DIM_MAX);
    cube *c = cube_find(ix, cube_id);
    if (c != NULL && c->dim != dim)
        return mg_error_set(err, MG_EDIM, "vector has dimension %u but cube %s holds dimension %u",
                            dim, cube_id, c->dim);
    int rc = vector_check(vec, dim, "vector", err);
    if (rc != MG_OK)
        return rc;
    if (c != NULL)
        return cube_append(c, id, vec, err);

    /* A new cube is filled while still private and then published, so that
     * a failure leaves no empty cube behind. */
    c = cube_create(cube_id, dim, ix->int8);
    if (c == NULL)
        return mg_error_set(err, MG_ENOMEM, "index add: no memory for cube %s", cube_id);
    rc = cube_append(c, id, vec, err);
    if (rc != MG_OK)
        goto err_destroy_cube;
    pthread_rwlock_wrlock(&ix->lock);
    rc = hmap_reserve(&ix->cubes, ix->cubes.used + 1);
    if (rc == MG_OK)
        hmap_put_new(&ix->cubes, XXH3_64bits(c->id, c->id_len), (uintptr_t)c);
    pthread_rwlock_unlock(&ix->lock);
    if (rc != MG_OK) {
        mg_error_set(err, rc, "index add: no memory for cube %s", cube_id);
        goto err_destroy_cube;
    }
    return MG_OK;

err_destroy_cube:
    cube_destroy(c);
    return rc;
}

int mg_index_remove(mg_index *ix, const char *cube_id, const uint8_t id[16])
{
    if (ix == NULL || cube_id == NULL || id == NULL)
        return MG_EINVAL;
    cube *c = cube_find(ix, cube_id);
    if (c == NULL)
        return MG_ENOTFOUND;
    hslot *slot = hmap_find(&c->ids, id_hash(id), id_eq, c->seg, id);
    if (slot == NULL)
        return MG_ENOTFOUND;
    uint64_t g = atomic_load_explicit(&c->gen, memory_order_relaxed) + 1;
    row_kill(c, slot->val - 1, g);
    atomic_store_explicit(&c->gen, g, memory_order_release);
    hmap_erase(&c->ids, slot);
    atomic_fetch_sub_explicit(&c->live, 1, memory_order_relaxed);
    return MG_OK;
}

void mg_index_drop_cube(mg_index *ix, const char *cube_id)
{
    if (ix == NULL || cube_id == NULL)
        return;
    pthread_rwlock_wrlock(&ix->lock);
    hslot *s = cube_slot(ix, cube_id);
    cube *c = s ? (cube *)(uintptr_t)s->val : NULL;
    if (s != NULL)
        hmap_erase(&ix->cubes, s);
    pthread_rwlock_unlock(&ix->lock);
    if (c == NULL)
        return;
    /* Searches that locked the cube before it left the map still scan it;
     * the write lock waits for them. */
    pthread_rwlock_wrlock(&c->lock);
    pthread_rwlock_unlock(&c->lock);
    cube_destroy(c);
}

/* Copies the live rows of c into fresh segments and a fresh id map, then
 * swaps them in under the cube's write lock: readers scan either the old
 * arena or the new one, and the copy itself runs while they scan. */
int mg_index_compact(mg_index *ix, const char *cube_id, mg_error *err)
{
    if (ix == NULL || cube_id == NULL)
        return mg_error_set(err, MG_EINVAL, "index compact: NULL argument");
    cube *c = cube_find(ix, cube_id);
    if (c == NULL)
        return mg_error_set(err, MG_ENOTFOUND, "index compact: no cube %s", cube_id);
    uint64_t rows = atomic_load_explicit(&c->rows, memory_order_relaxed);
    uint64_t live = atomic_load_explicit(&c->live, memory_order_relaxed);
    if (live == rows)
        return MG_OK;

    segment fresh[SEG_MAX];
    memset(fresh, 0, sizeof fresh);
    hmap ids = {NULL, 0, 0};
    int rc = hmap_reserve(&ids, (size_t)live);
    if (rc != MG_OK)
        goto err_nomem;
    uint64_t n = 0;
    for (unsigned s = 0; s < SEG_MAX && seg_start(s) < rows; s++) {
        const segment *src = &c->seg[s];
        uint64_t n_seg = rows - seg_start(s) < seg_cap(s) ? rows - seg_start(s) : seg_cap(s);
        for (uint32_t off = 0; off < n_seg; off++) {
            if (atomic_load_explicit(&src->dead[off], memory_order_relaxed) != GEN_NEVER)
                continue;
            uint32_t to;
            unsigned ds = seg_of(n, &to);
            segment *dst = &fresh[ds];
            if (dst->mem == NULL && (rc = segment_alloc(dst, seg_cap(ds), c)) != MG_OK)
                goto err_nomem;
            memcpy(dst->f32 + (size_t)to * c->stride, src->f32 + (size_t)off * c->stride,
                   (size_t)c->stride * sizeof(float));
            if (c->int8) {
                memcpy(dst->i8 + (size_t)to * c->stride8, src->i8 + (size_t)off * c->stride8,
                       c->stride8);
                dst->scale[to] = src->scale[off];
            }
            memcpy(dst->ids[to], src->ids[off], 16);
            dst->born[to] = 0; /* visible at every generation from now on */
            atomic_init(&dst->dead[to], GEN_NEVER);
            hmap_put_new(&ids, id_hash(src->ids[off]), n + 1);
            n++;
        }
    }

    pthread_rwlock_wrlock(&c->lock);
    segment old[SEG_MAX];
    memcpy(old, c->seg, sizeof old);
    memcpy(c->seg, fresh, sizeof fresh);
    hmap old_ids = c->ids;
    c->ids = ids;
    atomic_store_explicit(&c->rows, n, memory_order_release);
    pthread_rwlock_unlock(&c->lock);

    segments_free(old);
    free(old_ids.slots);
    mg_debug("index.compact", "cube=%s rows=%llu live=%llu", c->id, (unsigned long long)rows,
             (unsigned long long)n);
    return MG_OK;

err_nomem:
    segments_free(fresh);
    free(ids.slots);
    return mg_error_set(err, MG_ENOMEM, "index compact: no memory to rewrite cube %s", cube_id);
}

/* Live count and dimension of a cube, zeros when absent; any thread. */
static void cube_stat(const mg_index *ix, const char *cube_id, size_t *live, uint32_t *dim)
{
    *live = 0;
    *dim = 0;
    if (ix == NULL || cube_id == NULL)
        return;
    pthread_rwlock_rdlock((pthread_rwlock_t *)&ix->lock);
    const cube *c = cube_find(ix, cube_id);
    if (c != NULL) {
        *live = (size_t)atomic_load_explicit(&c->live, memory_order_relaxed);
        *dim = c->dim;
    }
    pthread_rwlock_unlock((pthread_rwlock_t *)&ix->lock);
}

size_t mg_index_count(const mg_index *ix, const char *cube_id)
{
    size_t live;
    uint32_t dim;
    cube_stat(ix, cube_id, &live, &dim);
    return live;
}

uint32_t mg_index_dim(const mg_index *ix, const char *cube_id)
{
    size_t live;
    uint32_t dim;
    cube_stat(ix, cube_id, &live, &dim);
    return dim;
}

const char *mg_index_kernel_name(void)
{
    return mg_simd_active()->name;
}

/* ---- search ------------------------------------------------------------ */

typedef struct hit_ref {
    float score;
    uint32_t cube;     /* position in the query's cube list */
    const uint8_t *id; /* into a segment: valid while the cube is read-locked */
    const float *vec;  /* the row's float32 copy, for rescoring */
} hit_ref;

/* a ranks after b: lower score, then (equal scores) larger id, then larger
 * cube position, so that the order is total and results deterministic. */
static bool hit_worse(const hit_ref *a, const hit_ref *b)
{
    if (a->score != b->score)
        return a->score < b->score;
    int c = memcmp(a->id, b->id, 16);
    return c != 0 ? c > 0 : a->cube > b->cube;
}

static int hit_cmp(const void *a, const void *b)
{
    return hit_worse(a, b) ? 1 : hit_worse(b, a) ? -1 : 0;
}

/* The best `cap` hits seen so far, as a heap with the worst on top. */
typedef struct topk {
    hit_ref *h;
    size_t n, cap;
    float floor; /* a score below this cannot get in: -inf until full */
} topk;

static void topk_push(topk *t, const hit_ref *x)
{
    size_t i;
    if (t->n < t->cap) {
        for (i = t->n++; i > 0 && hit_worse(x, &t->h[(i - 1) / 2]); i = (i - 1) / 2)
            t->h[i] = t->h[(i - 1) / 2];
    } else {
        if (!hit_worse(&t->h[0], x))
            return;
        for (i = 0;;) {
            size_t l = 2 * i + 1, w = l;
            if (l >= t->n)
                break;
            if (l + 1 < t->n && hit_worse(&t->h[l + 1], &t->h[l]))
                w = l + 1;
            if (!hit_worse(&t->h[w], x))
                break;
            t->h[i] = t->h[w];
            i = w;
        }
    }
    t->h[i] = *x;
    if (t->n == t->cap)
        t->floor = t->h[0].score;
}

typedef struct scan {
    const mg_simd *kern;
    const cube *c;
    uint32_t pos;
    uint64_t gen;
    bool int8;
    const float *qf;
    const int8_t *qi;
    float qscale;
    topk *top; /* the hits (f32) or the candidates to rescore (int8) */
    mg_index_accept_fn accept;
    void *accept_arg;
} scan;

/* Scores rows [off, off + n) of a segment (n <= BLOCK), all of them visible
 * and accepted, and offers them to the heap. */
static void scan_run(const scan *sc, const segment *sg, uint32_t off, uint32_t n)
{
    const cube *c = sc->c;
    float score[BLOCK];
    if (sc->int8) {
        int32_t dot[BLOCK];
        sc->kern->dot_i8_batch(sc->qi, sg->i8 + (size_t)off * c->stride8, c->stride8, c->stride8, n,
                               dot);
        for (uint32_t j = 0; j < n; j++)
            score[j] = (float)dot[j] * (sg->scale[off + j] * sc->qscale);
    } else {
        sc->kern->dot_f32_batch(sc->qf, sg->f32 + (size_t)off * c->stride, c->stride, c->stride, n,
                                score);
    }
    topk *t = sc->top;
    for (uint32_t j = 0; j < n; j++) {
        if (score[j] < t->floor)
            continue;
        hit_ref h = {score[j], sc->pos, sg->ids[off + j], sg->f32 + (size_t)(off + j) * c->stride};
        topk_push(t, &h);
    }
}

/* Scans the first `rows` rows of the cube as of generation sc->gen. Runs of
 * consecutive visible, accepted rows go to the kernel in one batch. */
static void scan_cube(const scan *sc, uint64_t rows)
{
    for (unsigned s = 0; s < SEG_MAX && seg_start(s) < rows; s++) {
        const segment *sg = &sc->c->seg[s];
        uint64_t left = rows - seg_start(s);
        uint32_t n_seg = left < seg_cap(s) ? (uint32_t)left : seg_cap(s);
        for (uint32_t b = 0; b < n_seg; b += BLOCK) {
            uint32_t end = n_seg - b < BLOCK ? n_seg : b + BLOCK;
            if (sc->accept == NULL &&
                atomic_load_explicit(&sg->dead_min[b / BLOCK], memory_order_relaxed) > sc->gen) {
                scan_run(sc, sg, b, end - b);
                continue;
            }
            uint32_t run = UINT32_MAX;
            for (uint32_t r = b; r < end; r++) {
                bool ok = atomic_load_explicit(&sg->dead[r], memory_order_relaxed) > sc->gen &&
                          (sc->accept == NULL || sc->accept(sc->accept_arg, sc->pos, sg->ids[r]));
                if (ok && run == UINT32_MAX) {
                    run = r;
                } else if (!ok && run != UINT32_MAX) {
                    scan_run(sc, sg, run, r - run);
                    run = UINT32_MAX;
                }
            }
            if (run != UINT32_MAX)
                scan_run(sc, sg, run, end - run);
        }
    }
}

/* The generation a search sees and the rows it covers: rows published after
 * that generation (born later) sit at the end and are left out. */
static uint64_t cube_snapshot(const cube *c, uint64_t *gen)
{
    uint64_t g = atomic_load_explicit(&c->gen, memory_order_acquire);
    uint64_t n = atomic_load_explicit(&c->rows, memory_order_acquire);
    for (uint32_t off; n > 0 && c->seg[seg_of(n - 1, &off)].born[off] > g;)
        n--;
    *gen = g;
    return n;
}

typedef struct locked_cube {
    const cube *c;
    uint32_t pos;
    uint64_t gen, rows; /* what the search sees of it */
} locked_cube;

/* Looks the query's cubes up and read-locks them (absent ones are skipped, a
 * cube named twice is searched once). On MG_EDIM nothing stays locked. */
static int cubes_lock(const mg_index *ix, const mg_index_query *q, locked_cube *out, size_t *n_out,
                      mg_error *err)
{
    pthread_rwlock_t *lock = (pthread_rwlock_t *)&ix->lock;
    size_t n = 0;
    int rc = MG_OK;
    pthread_rwlock_rdlock(lock);
    for (size_t i = 0; i < q->n_cubes; i++) {
        cube *c = q->cube_ids[i] ? cube_find(ix, q->cube_ids[i]) : NULL;
        bool seen = false;
        for (size_t j = 0; j < n && !seen; j++)
            seen = out[j].c == c;
        if (c == NULL || seen)
            continue;
        if (c->dim != q->dim) {
            rc = mg_error_set(err, MG_EDIM, "query has dimension %u but cube %s holds dimension %u",
                              q->dim, c->id, c->dim);
            break;
        }
        pthread_rwlock_rdlock(&c->lock);
        out[n++] = (locked_cube){c, (uint32_t)i, 0, 0};
    }
    pthread_rwlock_unlock(lock);
    if (rc != MG_OK)
        while (n > 0)
            pthread_rwlock_unlock((pthread_rwlock_t *)&out[--n].c->lock);
    *n_out = n;
    return rc;
}

int mg_index_search(const mg_index *ix, const mg_index_query *q, mg_index_hit *hits, size_t *n_hits,
                    mg_error *err)
{
    if (ix == NULL || q == NULL || n_hits == NULL || q->vec == NULL || (q->k > 0 && hits == NULL) ||
        (q->n_cubes > 0 && q->cube_ids == NULL))
        return mg_error_set(err, MG_EINVAL, "index search: NULL argument");
    *n_hits = 0;
    if (q->dim == 0 || q->dim > MG_DIM_MAX)
        return mg_error_set(err, MG_EDIM, "query dimension %u is outside 1..%d", q->dim,
                            MG_DIM_MAX);
    if (q->scan != MG_SCAN_F32 && q->scan != MG_SCAN_INT8)
        return mg_error_set(err, MG_EINVAL, "index search: unknown scan mode %d", q->scan);
    int rc = vector_check(q->vec, q->dim, "query vector", err);
    if (rc != MG_OK || q->k == 0 || q->n_cubes == 0)
        return rc;

    _Alignas(64) float qf[MG_DIM_MAX];
    _Alignas(64) int8_t qi[MG_DIM_MAX];
    uint32_t stride = (uint32_t)align_up(q->dim, 16), stride8 = (uint32_t)align_up(q->dim, 64);
    normalize(q->vec, q->dim, stride, qf);
    bool int8 = q->scan == MG_SCAN_INT8 && ix->int8;
    float qscale = 0.0f;
    if (int8) {
        qscale = mg_simd_quantize_i8(qf, q->dim, qi);
        memset(qi + q->dim, 0, stride8 - q->dim);
    }

    locked_cube *cubes = malloc(q->n_cubes * sizeof *cubes);
    if (cubes == NULL)
        return mg_error_set(err, MG_ENOMEM, "index search: out of memory");
    size_t n_cubes;
    rc = cubes_lock(ix, q, cubes, &n_cubes, err);
    if (rc != MG_OK)
        goto err_free_cubes;
    uint64_t total = 0;
    for (size_t i = 0; i < n_cubes; i++)
        total += cubes[i].rows = cube_snapshot(cubes[i].c, &cubes[i].gen);

    /* Heaps no larger than what there is to rank: k may be huge. */
    size_t k = q->k < total ? q->k : (size_t)total;
    size_t n_cand = 0;
    if (int8) {
        size_t want = q->rescore ? q->rescore : (q->k > 16 ? 4 * q->k : 64);
        want = want < q->k ? q->k : want;
        n_cand = want < total ? want : (size_t)total;
    }
    topk top = {malloc((k + n_cand + 1) * sizeof(hit_ref)), 0, k, -INFINITY};
    topk cand = {top.h + k, 0, n_cand, -INFINITY};
    if (top.h == NULL) {
        rc = mg_error_set(err, MG_ENOMEM, "index search: out of memory for %zu hits", k);
        goto err_unlock_cubes;
    }
    scan sc = {mg_simd_active(), NULL,         0, 0, int8, qf, qi, qscale, int8 ? &cand : &top,
               q->accept,        q->accept_arg};
    if (k > 0) {
        for (size_t i = 0; i < n_cubes; i++) {
            sc.c = cubes[i].c;
            sc.pos = cubes[i].pos;
            sc.gen = cubes[i].gen;
            scan_cube(&sc, cubes[i].rows);
        }
    }
    /* int8 scores only choose candidates; the hits and their order come
     * from float32 scores, computed exactly as a float32 scan would. */
    for (size_t i = 0; i < cand.n; i++) {
        hit_ref h = cand.h[i];
        sc.kern->dot_f32_batch(qf, h.vec, stride, stride, 1, &h.score);
        topk_push(&top, &h);
    }
    qsort(top.h, top.n, sizeof(hit_ref), hit_cmp);
    for (size_t i = 0; i < top.n; i++) {
        hits[i].score = top.h[i].score;
        hits[i].cube = top.h[i].cube;
        memcpy(hits[i].id, top.h[i].id, 16);
    }
    *n_hits = top.n;
    free(top.h);

err_unlock_cubes:
    for (size_t i = 0; i < n_cubes; i++)
        pthread_rwlock_unlock((pthread_rwlock_t *)&cubes[i].c->lock);
err_free_cubes:
    free(cubes);
    return rc;
}
