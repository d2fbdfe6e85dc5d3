/*
 * The readers' side of the vector index: mg_index_search (index.h). A search
 * reads each cube's generation once and sees exactly the rows visible at it
 * (see index_internal.h). Runs of visible, accepted rows are scored by the
 * SIMD kernel in batches of up to BLOCK and offered to a bounded heap of the
 * best k; an int8 scan only picks candidates, which are rescored in float32,
 * so the hits and their order are always those of float32 scores.
 */
#include "index_internal.h"

#include "item.h"
#include "simd.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

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
        cube *c = q->cube_ids[i] ? index_cube_find(ix, q->cube_ids[i]) : NULL;
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
    int rc = index_vector_check(q->vec, q->dim, "query vector", err);
    if (rc != MG_OK || q->k == 0 || q->n_cubes == 0)
        return rc;

    _Alignas(64) float qf[MG_DIM_MAX];
    _Alignas(64) int8_t qi[MG_DIM_MAX];
    uint32_t stride = (uint32_t)align_up(q->dim, 16), stride8 = (uint32_t)align_up(q->dim, 64);
    index_normalize(q->vec, q->dim, stride, qf);
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
        if (q->vecs != NULL)
            memcpy(q->vecs + i * q->dim, top.h[i].vec, q->dim * sizeof(float));
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
