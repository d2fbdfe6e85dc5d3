/*
 * The vector index (index.h), all but search: the cube map and segment
 * allocation, create and destroy, the writer's add, remove, drop and compact,
 * and the calls any thread may make (count, dim, kernel name). The layout and
 * the multi-version scheme that lets searches run during writes are described
 * in index_internal.h; the search itself is in index_search.c.
 */
#include "index_internal.h"

#include "../lib/log.h"
#include "item.h"
#include "simd.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <xxhash.h>

#define MMAP_MIN ((size_t)4 << 20)  /* segments this big are mmap'ed ... */
#define HUGE_PAGE ((size_t)2 << 20) /* ... with transparent huge pages */

/* ---- open-addressing hash map (linear probing) ------------------------ */

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

cube *index_cube_find(const mg_index *ix, const char *name)
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

int index_vector_check(const float *v, uint32_t dim, const char *what, mg_error *err)
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

/* The norm is summed in double so that no finite float input overflows. */
void index_normalize(const float *v, uint32_t dim, uint32_t padded, float *out)
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
 * the id had. vec has passed index_vector_check. On error nothing is visible. */
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
    index_normalize(vec, c->dim, c->stride, f);
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
    cube *c = index_cube_find(ix, cube_id);
    if (c != NULL && c->dim != dim)
        return mg_error_set(err, MG_EDIM, "vector has dimension %u but cube %s holds dimension %u",
                            dim, cube_id, c->dim);
    int rc = index_vector_check(vec, dim, "vector", err);
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
    cube *c = index_cube_find(ix, cube_id);
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
    cube *c = index_cube_find(ix, cube_id);
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
    const cube *c = index_cube_find(ix, cube_id);
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
