/*
 * locomo_recall: evidence recall@k of the built-in `hash` embedder on the
 * LoCoMo conversations, next to a plain BM25 over the same turns and the same
 * tokenizer, measured in one run.
 *
 *   locomo_recall [--data DIR] [--dim N] [--json] [--no-captions] [--dates]
 *
 * One "cube" per conversation file, one memory per turn: "Speaker: text", and
 * when the turn shared a photo, " [shares a photo: caption]" (unless
 * --no-captions); --dates appends the session's date, " [1:56 pm on 8 May,
 * 2023]". Every question whose evidence names at least one existing turn is a
 * query; a hit at k is any evidence turn among the top k (ties broken by turn
 * order). Evidence recall@k = hits / questions.
 *
 * Embedder: memories embedded as MG_EMBED_DOCUMENT, questions as
 * MG_EMBED_QUERY, exact brute-force inner product (= cosine: the vectors are
 * normalized). BM25: terms from mg_embed_hash_terms (the embedder's own
 * tokenizer, stop words and stemmer), k1 = 1.2, b = 0.75,
 * idf = ln(1 + (N - df + 0.5) / (df + 0.5)), each query term occurrence summed.
 */
#include "bench/locomo.h"
#include "lib/clock.h"
#include "lib/error.h"
#include "router/embed_hash.h"

#include <jansson.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NUM_K 3
static const size_t k_values[NUM_K] = {1, 5, 10};

struct options {
    const char *data_dir;
    uint32_t dim;
    bool json;
    bool captions;
    bool dates;
};

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL) {
        fprintf(stderr, "locomo_recall: out of memory\n");
        exit(2);
    }
    return p;
}

/* ---- ranking ---- */

/* Position of turn `d` when turns are sorted by score descending, ties by
 * index ascending. */
static size_t rank_of(const double *score, size_t n, size_t d)
{
    size_t r = 0;
    for (size_t i = 0; i < n; i++)
        if (score[i] > score[d] || (score[i] == score[d] && i < d))
            r++;
    return r;
}

static void count_hits(const mg_locomo_question *q, const double *score, size_t n,
                       size_t hits[NUM_K])
{

    size_t best = n;
    for (size_t e = 0; e < q->nevidence; e++) {
        size_t r = rank_of(score, n, q->evidence[e]);
        if (r < best)
            best = r;
    }
    for (int k = 0; k < NUM_K; k++)
        if (best < k_values[k])
            hits[k]++;
}

/* ---- the hash embedder ---- */

struct hash_result {
    size_t hits[NUM_K];
    uint64_t embed_ns;
    size_t embedded;
};

static void embed_or_die(const char *text, int role, float *out, uint32_t dim)
{
    mg_error err;
    mg_error_clear(&err);
    if (mg_embed_hash(text, strlen(text), role, out, dim, &err) != MG_OK) {
        fprintf(stderr, "locomo_recall: embed: %s\n", err.msg);
        exit(2);
    }
}

static void eval_hash(const mg_locomo_conv *c, uint32_t dim, struct hash_result *res)
{
    float *docs = xmalloc(c->nturns * dim * sizeof *docs);
    float *query = xmalloc(dim * sizeof *query);
    double *score = xmalloc(c->nturns * sizeof *score);
    uint64_t t0 = mg_clock_mono_ns();
    for (size_t i = 0; i < c->nturns; i++)
        embed_or_die(c->turns[i], MG_EMBED_DOCUMENT, docs + i * dim, dim);
    res->embed_ns += mg_clock_mono_ns() - t0;
    res->embedded += c->nturns;
    for (size_t qi = 0; qi < c->nquestions; qi++) {
        t0 = mg_clock_mono_ns();
        embed_or_die(c->questions[qi].text, MG_EMBED_QUERY, query, dim);
        res->embed_ns += mg_clock_mono_ns() - t0;
        res->embedded++;
        for (size_t i = 0; i < c->nturns; i++) {
            const float *v = docs + i * dim;
            double dot = 0.0;
            for (uint32_t j = 0; j < dim; j++)
                dot += (double)v[j] * (double)query[j];
            score[i] = dot;
        }
        count_hits(&c->questions[qi], score, c->nturns, res->hits);
    }
    free(docs);
    free(query);
    free(score);
}

/* ---- BM25 ---- */

#define BM25_K1 1.2
#define BM25_B 0.75

/* A vocabulary: open addressing over term strings, ids in insertion order. */
struct vocab {
    char **terms;
    size_t *slots; /* id + 1, 0 = empty */
    size_t nterms, nslots;
};

static uint64_t term_hash(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

/* Id of the term, added when `add`; SIZE_MAX when absent and not added. */
static size_t vocab_id(struct vocab *v, const char *s, size_t n, bool add)
{
    if (v->nslots == 0 || (add && (v->nterms + 1) * 2 > v->nslots)) {
        size_t nslots = v->nslots ? v->nslots * 2 : 1024;
        size_t *slots = calloc(nslots, sizeof *slots);
        if (slots == NULL)
            exit(2);
        for (size_t i = 0; i < v->nslots; i++) {
            if (v->slots[i] == 0)
                continue;
            const char *t = v->terms[v->slots[i] - 1];
            size_t j = term_hash(t, strlen(t)) & (nslots - 1);
            while (slots[j] != 0)
                j = (j + 1) & (nslots - 1);
            slots[j] = v->slots[i];
        }
        free(v->slots);
        v->slots = slots;
        v->nslots = nslots;
        char **terms = xmalloc(nslots / 2 * sizeof *terms);
        if (v->nterms)
            memcpy(terms, v->terms, v->nterms * sizeof *terms);
        free(v->terms);
        v->terms = terms;
    }
    size_t j = term_hash(s, n) & (v->nslots - 1);
    while (v->slots[j] != 0) {
        const char *t = v->terms[v->slots[j] - 1];
        if (strlen(t) == n && memcmp(t, s, n) == 0)
            return v->slots[j] - 1;
        j = (j + 1) & (v->nslots - 1);
    }
    if (!add)
        return SIZE_MAX;
    char *copy = xmalloc(n + 1);
    memcpy(copy, s, n);
    copy[n] = '\0';
    v->terms[v->nterms] = copy;
    v->slots[j] = ++v->nterms;
    return v->nterms - 1;
}

static void vocab_free(struct vocab *v)
{
    for (size_t i = 0; i < v->nterms; i++)
        free(v->terms[i]);
    free(v->terms);
    free(v->slots);
}

struct term_list {
    struct vocab *vocab;
    bool add;
    size_t *ids;
    size_t n, cap;
};

static void collect_term(const char *term, size_t len, void *ctx)
{
    struct term_list *l = ctx;
    size_t id = vocab_id(l->vocab, term, len, l->add);
    if (id == SIZE_MAX)
        return;
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 32;
        size_t *ids = xmalloc(l->cap * sizeof *ids);
        if (l->n)
            memcpy(ids, l->ids, l->n * sizeof *ids);
        free(l->ids);
        l->ids = ids;
    }
    l->ids[l->n++] = id;
}

static int size_cmp(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return (x > y) - (x < y);
}

static void terms_of(const char *text, struct term_list *l)
{
    mg_error err;
    mg_error_clear(&err);
    l->n = 0;
    if (mg_embed_hash_terms(text, strlen(text), collect_term, l, &err) != MG_OK) {
        fprintf(stderr, "locomo_recall: terms: %s\n", err.msg);
        exit(2);
    }
}

/* Term frequency of `id` in a sorted id list. */
static size_t tf_in(const size_t *ids, size_t n, size_t id)
{
    const size_t *p = bsearch(&id, ids, n, sizeof *ids, size_cmp);
    if (p == NULL)
        return 0;
    size_t lo = (size_t)(p - ids), hi = lo;
    while (lo > 0 && ids[lo - 1] == id)
        lo--;
    while (hi + 1 < n && ids[hi + 1] == id)
        hi++;
    return hi - lo + 1;
}

static void eval_bm25(const mg_locomo_conv *c, size_t hits[NUM_K])
{
    struct vocab vocab = {0};
    size_t **doc_ids = xmalloc(c->nturns * sizeof *doc_ids);
    size_t *doc_len = xmalloc(c->nturns * sizeof *doc_len);
    struct term_list list = {&vocab, true, NULL, 0, 0};
    double total_len = 0;
    for (size_t i = 0; i < c->nturns; i++) {
        terms_of(c->turns[i], &list);
        qsort(list.ids, list.n, sizeof *list.ids, size_cmp);
        doc_ids[i] = xmalloc(list.n * sizeof **doc_ids);
        if (list.n)
            memcpy(doc_ids[i], list.ids, list.n * sizeof **doc_ids);
        doc_len[i] = list.n;
        total_len += (double)list.n;
    }
    double avgdl = c->nturns ? total_len / (double)c->nturns : 1.0;
    size_t *df = calloc(vocab.nterms + 1, sizeof *df);
    if (df == NULL)
        exit(2);
    for (size_t i = 0; i < c->nturns; i++)
        for (size_t j = 0; j < doc_len[i]; j++)
            if (j == 0 || doc_ids[i][j] != doc_ids[i][j - 1])
                df[doc_ids[i][j]]++;

    double *score = xmalloc(c->nturns * sizeof *score);
    list.add = false;
    double n = (double)c->nturns;
    for (size_t qi = 0; qi < c->nquestions; qi++) {
        terms_of(c->questions[qi].text, &list);
        for (size_t i = 0; i < c->nturns; i++) {
            double s = 0;
            double norm = BM25_K1 * (1 - BM25_B + BM25_B * (double)doc_len[i] / avgdl);
            for (size_t t = 0; t < list.n; t++) {
                size_t tf = tf_in(doc_ids[i], doc_len[i], list.ids[t]);
                if (tf == 0)
                    continue;
                double d = (double)df[list.ids[t]];
                double idf = log(1 + (n - d + 0.5) / (d + 0.5));
                s += idf * (double)tf * (BM25_K1 + 1) / ((double)tf + norm);
            }
            score[i] = s;
        }
        count_hits(&c->questions[qi], score, c->nturns, hits);
    }
    for (size_t i = 0; i < c->nturns; i++)
        free(doc_ids[i]);
    free(doc_ids);
    free(doc_len);
    free(df);
    free(score);
    free(list.ids);
    vocab_free(&vocab);
}

/* ---- main ---- */

static void usage(void)
{
    fprintf(stderr,
            "usage: locomo_recall [--data DIR] [--dim N] [--json] [--no-captions] "
            "[--dates]\n"
            "  --data DIR     LoCoMo conversation files (default ../shared/data/locomo)\n"
            "  --dim N        embedding dimension, 1..%u (default %u)\n"
            "  --json         print one JSON object instead of a table\n"
            "  --no-captions  leave shared-photo captions out of the memories\n"
            "  --dates        prefix each memory with its session's date\n",
            (unsigned)MG_EMBED_HASH_DIM_MAX, (unsigned)MG_EMBED_HASH_DIM_DEFAULT);
}

static int parse_args(int argc, char **argv, struct options *o)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--data") == 0 && i + 1 < argc) {
            o->data_dir = argv[++i];
        } else if (strcmp(a, "--dim") == 0 && i + 1 < argc) {
            char *end;
            unsigned long v = strtoul(argv[++i], &end, 10);
            if (*end != '\0' || v < 1 || v > MG_EMBED_HASH_DIM_MAX) {
                fprintf(stderr, "locomo_recall: --dim must be 1..%u\n",
                        (unsigned)MG_EMBED_HASH_DIM_MAX);
                return -1;
            }
            o->dim = (uint32_t)v;
        } else if (strcmp(a, "--json") == 0) {
            o->json = true;
        } else if (strcmp(a, "--no-captions") == 0) {
            o->captions = false;
        } else if (strcmp(a, "--dates") == 0) {
            o->dates = true;
        } else {
            usage();
            return -1;
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct options o = {"../shared/data/locomo", MG_EMBED_HASH_DIM_DEFAULT, false, true, false};
    if (parse_args(argc, argv, &o) != 0)
        return 1;
    size_t nconv = 0;
    mg_locomo_conv *convs = NULL;
    mg_locomo_options lo = {o.captions, o.dates};
    mg_error err;
    mg_error_clear(&err);
    if (mg_locomo_load(o.data_dir, &lo, &convs, &nconv, &err) != MG_OK) {
        fprintf(stderr, "locomo_recall: %s\n", err.msg);
        return 1;
    }

    struct hash_result hr = {{0}, 0, 0};
    size_t bm25_hits[NUM_K] = {0};
    size_t questions = 0, turns = 0, skipped = 0;
    for (size_t i = 0; i < nconv; i++) {
        eval_hash(&convs[i], o.dim, &hr);
        eval_bm25(&convs[i], bm25_hits);
        questions += convs[i].nquestions;
        turns += convs[i].nturns;
        skipped += convs[i].skipped;
    }
    double us_per_text = hr.embedded ? (double)hr.embed_ns / 1e3 / (double)hr.embedded : 0.0;
    double hash_recall[NUM_K], bm25_recall[NUM_K];
    for (int k = 0; k < NUM_K; k++) {
        hash_recall[k] = questions ? (double)hr.hits[k] / (double)questions : 0.0;
        bm25_recall[k] = questions ? (double)bm25_hits[k] / (double)questions : 0.0;
    }

    if (o.json) {
        json_t *obj = json_pack(
            "{s:f,s:f,s:f,s:f,s:f,s:f,s:I,s:I,s:I,s:I,s:f,s:i,s:b,s:b}", "hash_recall_at_1",
            hash_recall[0], "hash_recall_at_5", hash_recall[1], "hash_recall_at_10", hash_recall[2],
            "bm25_recall_at_1", bm25_recall[0], "bm25_recall_at_5", bm25_recall[1],
            "bm25_recall_at_10", bm25_recall[2], "questions", (json_int_t)questions, "turns",
            (json_int_t)turns, "conversations", (json_int_t)nconv, "dim", (json_int_t)o.dim,
            "embed_us_per_text", us_per_text, "embedder_version", MG_EMBED_HASH_VERSION, "captions",
            o.captions, "dates", o.dates);
        char *s = obj ? json_dumps(obj, JSON_COMPACT | JSON_REAL_PRECISION(6)) : NULL;
        if (s == NULL) {
            fprintf(stderr, "locomo_recall: cannot build JSON\n");
            return 2;
        }
        printf("%s\n", s);
        free(s);
        json_decref(obj);
    } else {
        printf("LoCoMo evidence recall: %zu conversations, %zu turns, %zu questions "
               "(%zu without a resolvable evidence turn left out)\n",
               nconv, turns, questions, skipped);
        printf("%-22s %10s %10s %10s\n", "method", "recall@1", "recall@5", "recall@10");
        char label[64];
        snprintf(label, sizeof label, "hash v%d (dim %u)", MG_EMBED_HASH_VERSION, o.dim);
        printf("%-22s %10.3f %10.3f %10.3f\n", label, hash_recall[0], hash_recall[1],
               hash_recall[2]);
        printf("%-22s %10.3f %10.3f %10.3f\n", "bm25 (k1=1.2, b=0.75)", bm25_recall[0],
               bm25_recall[1], bm25_recall[2]);
        printf("hash embedder: %.2f us per text (%zu texts)\n", us_per_text, hr.embedded);
    }
    mg_locomo_free(convs, nconv);
    return 0;
}
