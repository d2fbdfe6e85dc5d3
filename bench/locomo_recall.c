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
#include "lib/clock.h"
#include "lib/error.h"
#include "router/embed_hash.h"

#include <dirent.h>
#include <jansson.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_EVIDENCE 32
#define NUM_K 3
static const size_t k_values[NUM_K] = {1, 5, 10};

struct question {
    char *text;
    size_t evidence[MAX_EVIDENCE]; /* turn indices */
    size_t nevidence;
};

struct conversation {
    char *name;
    char **turn_ids; /* "D1:3" */
    char **turns;    /* memory text */
    size_t nturns;
    struct question *questions;
    size_t nquestions;
    size_t skipped; /* questions without a resolvable evidence turn */
};

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

static char *xstrdup(const char *s)
{
    size_t n = strlen(s);
    char *d = xmalloc(n + 1);
    memcpy(d, s, n + 1);
    return d;
}

/* ---- loading ---- */

struct session_ref {
    unsigned number;
    json_t *turns;
    const char *date;
};

static int session_cmp(const void *a, const void *b)
{
    const struct session_ref *x = a, *y = b;
    return (x->number > y->number) - (x->number < y->number);
}

/* "session_12" -> 12; anything else (session_12_date_time, ...) -> 0. */
static unsigned session_number(const char *key)
{
    unsigned n = 0;
    int used = 0;
    if (sscanf(key, "session_%u%n", &n, &used) != 1 || key[used] != '\0')
        return 0;
    return n;
}

static long find_turn(const struct conversation *c, unsigned session, unsigned turn)
{
    char id[32];
    snprintf(id, sizeof id, "D%u:%u", session, turn);
    for (size_t i = 0; i < c->nturns; i++)
        if (strcmp(c->turn_ids[i], id) == 0)
            return (long)i;
    return -1;
}

/* Evidence strings are mostly "D1:3", but some are malformed: "D8:6; D9:17",
 * "D:11:26", "D". Each 'D' starts an id made of the next two numbers. */
static void parse_evidence(struct conversation *c, const char *ev, struct question *q)
{
    const char *p = ev;
    while ((p = strchr(p, 'D')) != NULL) {
        unsigned num[2];
        int got = 0;
        p++;
        while (*p && *p != 'D' && got < 2) {
            if (*p >= '0' && *p <= '9') {
                unsigned v = 0;
                while (*p >= '0' && *p <= '9')
                    v = v * 10 + (unsigned)(*p++ - '0');
                num[got++] = v;
            } else {
                p++;
            }
        }
        if (got < 2)
            continue;
        long t = find_turn(c, num[0], num[1]);
        if (t < 0 || q->nevidence == MAX_EVIDENCE)
            continue;
        bool dup = false;
        for (size_t i = 0; i < q->nevidence; i++)
            dup |= q->evidence[i] == (size_t)t;
        if (!dup)
            q->evidence[q->nevidence++] = (size_t)t;
    }
}

static char *turn_text(const struct options *o, json_t *turn, const char *date)
{
    const char *speaker = json_string_value(json_object_get(turn, "speaker"));
    const char *text = json_string_value(json_object_get(turn, "text"));
    const char *caption = json_string_value(json_object_get(turn, "blip_caption"));
    if (speaker == NULL || text == NULL)
        return NULL;
    if (!o->captions)
        caption = NULL;
    if (!o->dates || date == NULL)
        date = NULL;
    size_t n = strlen(speaker) + strlen(text) + (caption ? strlen(caption) : 0) +
               (date ? strlen(date) : 0) + 64;
    char *s = xmalloc(n);
    snprintf(s, n, "%s: %s%s%s%s%s%s%s", speaker, text, caption ? " [shares a photo: " : "",
             caption ? caption : "", caption ? "]" : "", date ? " [" : "", date ? date : "",
             date ? "]" : "");
    return s;
}

static int load_conversation(const struct options *o, const char *path, struct conversation *c)
{
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    if (root == NULL) {
        fprintf(stderr, "locomo_recall: %s:%d: %s\n", path, jerr.line, jerr.text);
        return -1;
    }
    size_t nsessions = 0, cap = json_object_size(root);
    struct session_ref *sessions = xmalloc(cap * sizeof *sessions);
    const char *key;
    json_t *value;
    json_object_foreach(root, key, value)
    {
        unsigned n = session_number(key);
        if (n == 0 || !json_is_array(value))
            continue;
        char dkey[64];
        snprintf(dkey, sizeof dkey, "session_%u_date_time", n);
        sessions[nsessions].number = n;
        sessions[nsessions].turns = value;
        sessions[nsessions].date = json_string_value(json_object_get(root, dkey));
        nsessions++;
    }
    qsort(sessions, nsessions, sizeof *sessions, session_cmp);

    size_t total = 0;
    for (size_t s = 0; s < nsessions; s++)
        total += json_array_size(sessions[s].turns);
    c->turn_ids = xmalloc(total * sizeof *c->turn_ids);
    c->turns = xmalloc(total * sizeof *c->turns);
    c->nturns = 0;
    for (size_t s = 0; s < nsessions; s++) {
        size_t i;
        json_t *turn;
        json_array_foreach(sessions[s].turns, i, turn)
        {
            const char *id = json_string_value(json_object_get(turn, "dia_id"));
            char *text = turn_text(o, turn, sessions[s].date);
            if (id == NULL || text == NULL) {
                free(text);
                continue;
            }
            c->turn_ids[c->nturns] = xstrdup(id);
            c->turns[c->nturns] = text;
            c->nturns++;
        }
    }
    free(sessions);

    json_t *qa = json_object_get(root, "qa");
    c->questions = xmalloc((json_array_size(qa) + 1) * sizeof *c->questions);
    c->nquestions = 0;
    c->skipped = 0;
    size_t i;
    json_t *item;
    json_array_foreach(qa, i, item)
    {
        const char *text = json_string_value(json_object_get(item, "question"));
        json_t *evidence = json_object_get(item, "evidence");
        if (text == NULL || json_array_size(evidence) == 0)
            continue;
        struct question *q = &c->questions[c->nquestions];
        q->nevidence = 0;
        size_t j;
        json_t *ev;
        json_array_foreach(evidence, j, ev)
        {
            if (json_is_string(ev))
                parse_evidence(c, json_string_value(ev), q);
        }
        if (q->nevidence == 0) {
            c->skipped++;
            continue;
        }
        q->text = xstrdup(text);
        c->nquestions++;
    }
    json_decref(root);
    return 0;
}

static void free_conversation(struct conversation *c)
{
    for (size_t i = 0; i < c->nturns; i++) {
        free(c->turn_ids[i]);
        free(c->turns[i]);
    }
    for (size_t i = 0; i < c->nquestions; i++)
        free(c->questions[i].text);
    free(c->turn_ids);
    free(c->turns);
    free(c->questions);
    free(c->name);
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Loads every *.json in dir, in name order. */
static struct conversation *load_all(const struct options *o, size_t *count)
{
    DIR *d = opendir(o->data_dir);
    if (d == NULL) {
        fprintf(stderr, "locomo_recall: cannot open %s (use --data DIR)\n", o->data_dir);
        return NULL;
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        size_t len = strlen(de->d_name);
        if (len < 6 || strcmp(de->d_name + len - 5, ".json") != 0)
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            char **grown = xmalloc(cap * sizeof *grown);
            if (n)
                memcpy(grown, names, n * sizeof *grown);
            free(names);
            names = grown;
        }
        names[n++] = xstrdup(de->d_name);
    }
    closedir(d);
    if (n == 0) {
        fprintf(stderr, "locomo_recall: no .json files in %s\n", o->data_dir);
        free(names);
        return NULL;
    }
    qsort(names, n, sizeof *names, name_cmp);
    struct conversation *convs = xmalloc(n * sizeof *convs);
    for (size_t i = 0; i < n; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", o->data_dir, names[i]);
        if (load_conversation(o, path, &convs[i]) != 0) {
            for (size_t j = 0; j < i; j++)
                free_conversation(&convs[j]);
            for (size_t j = i; j < n; j++)
                free(names[j]);
            free(names);
            free(convs);
            return NULL;
        }
        convs[i].name = names[i];
    }
    free(names);
    *count = n;
    return convs;
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

static void count_hits(const struct question *q, const double *score, size_t n, size_t hits[NUM_K])
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

static void eval_hash(const struct conversation *c, uint32_t dim, struct hash_result *res)
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

static void eval_bm25(const struct conversation *c, size_t hits[NUM_K])
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
    struct conversation *convs = load_all(&o, &nconv);
    if (convs == NULL)
        return 1;

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
    for (size_t i = 0; i < nconv; i++)
        free_conversation(&convs[i]);
    free(convs);
    return 0;
}
