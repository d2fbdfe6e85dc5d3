#include "merge.h"

#include "../lib/mp.h"

#include <math.h>
#include <xxhash.h>
#include <stdlib.h>
#include <string.h>

/* ---- ordering ----------------------------------------------------------- */

/* Negative when a ranks before b. */
static int hit_cmp(const mg_hit *a, const mg_hit *b)
{
    if (a->rank > b->rank)
        return -1;
    if (a->rank < b->rank)
        return 1;
    size_t n = a->record_len < b->record_len ? a->record_len : b->record_len;
    int c = n ? memcmp(a->record, b->record, n) : 0;
    if (c != 0)
        return c;
    return a->record_len < b->record_len ? -1 : a->record_len > b->record_len;
}

static int hit_qsort_cmp(const void *a, const void *b)
{
    return hit_cmp(a, b);
}

void mg_hits_sort(mg_hit *hits, size_t n)
{
    if (n > 1)
        qsort(hits, n, sizeof *hits, hit_qsort_cmp);
}

/* Binary heap of list indices, ordered by each list's current head. */
typedef struct merge_state {
    const mg_hit *const *lists;
    size_t *pos;
    size_t *heap;
    size_t n;
} merge_state;

static bool heap_before(const merge_state *m, size_t a, size_t b)
{
    return hit_cmp(&m->lists[a][m->pos[a]], &m->lists[b][m->pos[b]]) < 0;
}

static void heap_down(merge_state *m, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, best = i;
        if (l < m->n && heap_before(m, m->heap[l], m->heap[best]))
            best = l;
        if (r < m->n && heap_before(m, m->heap[r], m->heap[best]))
            best = r;
        if (best == i)
            return;
        size_t t = m->heap[i];
        m->heap[i] = m->heap[best];
        m->heap[best] = t;
        i = best;
    }
}

size_t mg_hits_merge(const mg_hit *const *lists, const size_t *lens, size_t n_lists, size_t k,
                     size_t *heap, mg_hit *out)
{
    /* The positions live after the heap entries' values: callers give
     * n_lists slots of scratch, so positions are kept in a small local array
     * when possible and allocated otherwise. */
    size_t local_pos[32];
    size_t *pos = n_lists <= 32 ? local_pos : calloc(n_lists, sizeof *pos);
    if (pos == NULL)
        return 0;
    merge_state m = {.lists = lists, .pos = pos, .heap = heap, .n = 0};
    for (size_t i = 0; i < n_lists; i++) {
        pos[i] = 0;
        if (lens[i] > 0)
            heap[m.n++] = i;
    }
    for (size_t i = m.n / 2; i-- > 0;)
        heap_down(&m, i);
    size_t w = 0;
    while (w < k && m.n > 0) {
        size_t li = heap[0];
        out[w++] = lists[li][pos[li]];
        if (++pos[li] < lens[li]) {
            heap_down(&m, 0);
        } else {
            heap[0] = heap[--m.n];
            heap_down(&m, 0);
        }
    }
    if (pos != local_pos)
        free(pos);
    return w;
}

/* ---- record readers ----------------------------------------------------- */

/* Positions r on the value of top-level `key` of a record map. */
static bool record_seek(mg_mp_reader *r, const uint8_t *rec, size_t len, const char *key)
{
    uint32_t n;
    mg_mp_reader_init(r, rec, len);
    if (mg_mp_read_map(r, &n) != 0)
        return false;
    for (uint32_t i = 0; i < n; i++) {
        if (mg_mp_peek_str_eq(r, key)) {
            mg_mp_skip(r);
            return true;
        }
        if (mg_mp_skip(r) != 0 || mg_mp_skip(r) != 0)
            return false;
    }
    return false;
}

/* Positions r on metadata[key]. */
static bool meta_seek(mg_mp_reader *r, const uint8_t *rec, size_t len, const char *key)
{
    uint32_t n;
    if (!record_seek(r, rec, len, "metadata") || mg_mp_read_map(r, &n) != 0)
        return false;
    for (uint32_t i = 0; i < n; i++) {
        if (mg_mp_peek_str_eq(r, key)) {
            mg_mp_skip(r);
            return true;
        }
        if (mg_mp_skip(r) != 0 || mg_mp_skip(r) != 0)
            return false;
    }
    return false;
}

bool mg_record_text(const uint8_t *rec, size_t len, const char **s, uint32_t *n)
{
    mg_mp_reader r;
    return record_seek(&r, rec, len, "memory") && mg_mp_read_str(&r, s, n) == 0;
}

bool mg_record_meta_str(const uint8_t *rec, size_t len, const char *key, const char **s,
                        uint32_t *n)
{
    mg_mp_reader r;
    return meta_seek(&r, rec, len, key) && mg_mp_read_str(&r, s, n) == 0;
}

bool mg_record_id(const uint8_t *rec, size_t len, const uint8_t **id16)
{
    mg_mp_reader r;
    uint32_t n;
    if (!record_seek(&r, rec, len, "id") || mg_mp_read_bin(&r, id16, &n) != 0)
        return false;
    return n == 16;
}

/* A candidate's tags as hashes (distinct, at most TAGS_MAX), read once. */
#define TAGS_MAX 32
typedef struct tag_set {
    uint64_t h[TAGS_MAX];
    uint32_t n;
} tag_set;

static void tags_read(const mg_hit *hit, tag_set *t)
{
    mg_mp_reader r;
    uint32_t n;
    t->n = 0;
    if (!meta_seek(&r, hit->record, hit->record_len, "tags") || mg_mp_read_array(&r, &n) != 0)
        return;
    for (uint32_t i = 0; i < n && t->n < TAGS_MAX; i++) {
        const char *s;
        uint32_t len;
        if (mg_mp_read_str(&r, &s, &len) != 0) {
            if (mg_mp_skip(&r) != 0)
                return;
            continue;
        }
        uint64_t h = XXH3_64bits(s, len);
        bool dup = false;
        for (uint32_t j = 0; j < t->n && !dup; j++)
            dup = t->h[j] == h;
        if (!dup)
            t->h[t->n++] = h;
    }
}

/* Jaccard index of two tag sets. */
static double tag_jaccard(const tag_set *a, const tag_set *b)
{
    if (a->n == 0 || b->n == 0)
        return 0.0;
    uint32_t common = 0;
    for (uint32_t i = 0; i < a->n; i++)
        for (uint32_t j = 0; j < b->n; j++)
            if (a->h[i] == b->h[j]) {
                common++;
                break;
            }
    return common == 0 ? 0.0 : (double)common / (double)(a->n + b->n - common);
}

/* ---- similarity --------------------------------------------------------- */

double mg_vec_cosine(const uint8_t *a, const uint8_t *b, uint32_t dims)
{
    double dot = 0.0, na = 0.0, nb = 0.0;
    for (uint32_t i = 0; i < dims; i++) {
        float x, y;
        memcpy(&x, a + (size_t)i * 4, 4);
        memcpy(&y, b + (size_t)i * 4, 4);
        dot += (double)x * (double)y;
        na += (double)x * (double)x;
        nb += (double)y * (double)y;
    }
    if (na <= 0.0 || nb <= 0.0)
        return 0.0;
    return dot / (sqrt(na) * sqrt(nb));
}

/* Dot product of two float rows. Cloned per instruction set (the shipped
 * build targets any x86-64; DESIGN §8): the eight partial sums map onto one
 * AVX register, or two SSE ones. */
__attribute__((target_clones("avx2", "default"))) static float dot_rows(const float *x,
                                                                        const float *y,
                                                                        size_t n)
{
    float acc[8] = {0};
    size_t j = 0;
    for (; j + 8 <= n; j += 8) {
        const float *a = x + j, *b = y + j;
        for (size_t l = 0; l < 8; l++)
            acc[l] += a[l] * b[l];
    }
    float sum = 0.0f;
    for (; j < n; j++)
        sum += x[j] * y[j];
    for (size_t l = 0; l < 8; l++)
        sum += acc[l];
    return sum;
}

/* Unit-length float copies of the first `dims` dimensions of the candidate
 * vectors, so that similarity is one dot product; NULL rows for hits without
 * a (usable) vector. Returns the row length, 0 when none. */
typedef struct unit_vecs {
    float *data;
    bool *ok;
    uint32_t dims;
} unit_vecs;

static int unit_vecs_make(unit_vecs *u, const mg_hit *cands, size_t n, uint32_t sim_dims)
{
    u->data = NULL;
    u->ok = NULL;
    u->dims = 0;
    uint32_t dim = 0;
    for (size_t i = 0; i < n && dim == 0; i++)
        if (cands[i].vec != NULL)
            dim = cands[i].dim;
    if (dim == 0)
        return 0;
    uint32_t d = sim_dims && sim_dims < dim ? sim_dims : dim;
    u->data = malloc(n * (size_t)d * sizeof *u->data);
    u->ok = calloc(n, sizeof *u->ok);
    if (u->data == NULL || u->ok == NULL) {
        free(u->data);
        free(u->ok);
        u->data = NULL;
        u->ok = NULL;
        return -1;
    }
    u->dims = d;
    for (size_t i = 0; i < n; i++) {
        if (cands[i].vec == NULL || cands[i].dim != dim)
            continue;
        float *row = u->data + i * d;
        memcpy(row, cands[i].vec, (size_t)d * sizeof *row);
        double norm = (double)dot_rows(row, row, d);
        if (!(norm > 0.0))
            continue;
        float inv = (float)(1.0 / sqrt(norm));
        for (uint32_t j = 0; j < d; j++)
            row[j] *= inv;
        u->ok[i] = true;
    }
    return 0;
}

static void unit_vecs_free(unit_vecs *u)
{
    free(u->data);
    free(u->ok);
}

/* Cosine of candidates a and b (0 when either has no vector). */
static double unit_sim(const unit_vecs *u, size_t a, size_t b)
{
    if (u->data == NULL || !u->ok[a] || !u->ok[b])
        return 0.0;
    return (double)dot_rows(u->data + a * u->dims, u->data + b * u->dims, u->dims);
}

/* ---- dedup -------------------------------------------------------------- */

int mg_dedup_parse(const char *s)
{
    if (s == NULL)
        return MG_DEDUP_EXACT;
    if (strcmp(s, "no") == 0)
        return MG_DEDUP_NO;
    if (strcmp(s, "sim") == 0)
        return MG_DEDUP_SIM;
    if (strcmp(s, "mmr") == 0)
        return MG_DEDUP_MMR;
    return -1;
}

static bool same_text(const mg_hit *a, const mg_hit *b)
{
    const char *sa, *sb;
    uint32_t na, nb;
    if (!mg_record_text(a->record, a->record_len, &sa, &na) ||
        !mg_record_text(b->record, b->record_len, &sb, &nb))
        return false;
    return na == nb && memcmp(sa, sb, na) == 0;
}

size_t mg_dedup_select(int mode, const mg_hit *cands, size_t n, size_t k, uint32_t sim_dims,
                       double *scratch, size_t *sel)
{
    size_t w = 0;
    if (k == 0 || n == 0)
        return 0;
    switch (mode) {
    case MG_DEDUP_NO:
        for (size_t i = 0; i < n && w < k; i++)
            sel[w++] = i;
        return w;
    case MG_DEDUP_EXACT:
        for (size_t i = 0; i < n && w < k; i++) {
            bool dup = false;
            for (size_t j = 0; j < w && !dup; j++)
                dup = same_text(&cands[i], &cands[sel[j]]);
            if (!dup)
                sel[w++] = i;
        }
        return w;
    case MG_DEDUP_SIM: {
        unit_vecs u;
        unit_vecs_make(&u, cands, n, sim_dims);
        for (size_t i = 0; i < n && w < k; i++) {
            bool near = false;
            for (size_t j = 0; j < w && !near; j++)
                near = unit_sim(&u, i, sel[j]) > MG_DEDUP_SIM_MAX;
            if (!near)
                sel[w++] = i;
        }
        unit_vecs_free(&u);
        return w;
    }
    case MG_DEDUP_MMR:
        break;
    default:
        return 0;
    }

    /* MMR as MemOS runs it: the best MG_MMR_PREFILL by relevance as they are,
     * then repeatedly the candidate maximizing
     *   λ·relevance − (1 − λ)·max similarity to the selected − α·max tag Jaccard.
     * scratch[i] keeps candidate i's max similarity to the selection so far
     * (-1 once selected) and tag_max[i] its max tag Jaccard; both are updated
     * against each newly selected candidate only, so the whole selection is
     * O(n·k) similarity and Jaccard computations. */
    tag_set tags_local[64];
    double tag_local[64];
    tag_set *tags = n <= 64 ? tags_local : malloc(n * sizeof *tags);
    double *tag_max = n <= 64 ? tag_local : malloc(n * sizeof *tag_max);
    if (tags == NULL || tag_max == NULL) {
        if (tags != tags_local)
            free(tags);
        if (tag_max != tag_local)
            free(tag_max);
        /* Out of memory: fall back to plain relevance order. */
        for (size_t i = 0; i < n && w < k; i++)
            sel[w++] = i;
        return w;
    }
    unit_vecs u;
    unit_vecs_make(&u, cands, n, sim_dims);
    size_t prefill = k < MG_MMR_PREFILL ? k : MG_MMR_PREFILL;
    for (size_t i = 0; i < n; i++) {
        scratch[i] = 0.0;
        tag_max[i] = 0.0;
        tags_read(&cands[i], &tags[i]);
    }
    for (size_t i = 0; i < n && w < prefill; i++) {
        sel[w++] = i;
        scratch[i] = -1.0;
    }
    if (w < k && w < n) {
        for (size_t i = 0; i < n; i++) {
            if (scratch[i] < 0.0)
                continue;
            for (size_t j = 0; j < w; j++) {
                double sm = unit_sim(&u, i, sel[j]);
                if (sm > scratch[i])
                    scratch[i] = sm;
                double t = tag_jaccard(&tags[i], &tags[sel[j]]);
                if (t > tag_max[i])
                    tag_max[i] = t;
            }
        }
    }
    while (w < k && w < n) {
        size_t best = SIZE_MAX;
        double best_score = 0.0;
        for (size_t i = 0; i < n; i++) {
            if (scratch[i] < 0.0)
                continue;
            double score = MG_MMR_LAMBDA * cands[i].rank - (1.0 - MG_MMR_LAMBDA) * scratch[i] -
                           MG_MMR_TAG_ALPHA * tag_max[i];
            if (best == SIZE_MAX || score > best_score) {
                best = i;
                best_score = score;
            }
        }
        if (best == SIZE_MAX)
            break;
        sel[w++] = best;
        scratch[best] = -1.0;
        if (w >= k)
            break;
        for (size_t i = 0; i < n; i++) {
            if (scratch[i] < 0.0)
                continue;
            double sm = unit_sim(&u, i, best);
            if (sm > scratch[i])
                scratch[i] = sm;
            double t = tag_jaccard(&tags[i], &tags[best]);
            if (t > tag_max[i])
                tag_max[i] = t;
        }
    }
    unit_vecs_free(&u);
    if (tags != tags_local)
        free(tags);
    if (tag_max != tag_local)
        free(tag_max);
    return w;
}
