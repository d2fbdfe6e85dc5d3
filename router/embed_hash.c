/* The built-in `hash` embedder; the algorithm (a compatibility contract) is
 * specified step by step in embed_hash.h, and the step numbers below refer to
 * it. */
#include "embed_hash.h"

#include "../lib/utf8.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

/* ---- parameters of version 1 (changing any changes every vector) ---- */

#define TOKEN_MAX 64 /* bytes per token (step 2) */
#define STEM_MIN 3   /* shortest token that is stemmed (step 5) */
#define TRIGRAM 3    /* code points per character n-gram (step 6) */
#define PROBES 4     /* signed buckets per feature (step 8) */
#define TF_CAP 16

enum feature_kind { KIND_WORD = 0, KIND_COMMON = 1, KIND_PAIR = 2, KIND_TRIGRAM = 3, KIND_RAW = 4 };
#define KIND_MASK 7u

static const int64_t kind_weight[5] = {8, 2, 1, 1, 8};

#define SEED_WORD 0x6d67776f72640001ull
#define SEED_PAIR 0x6d67706169720002ull
#define SEED_TRIGRAM 0x6d67747269670003ull
#define SEED_RAW 0x6d67726177000004ull

/* 1 + ln(tf), times 1000, rounded (step 7). A table, not logf: libm's result
 * may differ between machines in the last bit. */
static const int64_t tf_weight[TF_CAP + 1] = {0,    1000, 1693, 2099, 2386, 2609, 2792, 2946, 3079,
                                              3197, 3303, 3398, 3485, 3565, 3639, 3708, 3773};

/* Length prior of documents (step 9): 40 words of weight 8 at tf 1. */
#define PIVOT ((int64_t)160 * 8000 * 8000)

/* ---- code points (steps 2 and 3) ---- */

/* Decodes one code point of valid UTF-8 at s[0..len); *n gets its length. */
static uint32_t utf8_decode(const unsigned char *s, size_t len, size_t *n)
{
    uint32_t c = s[0];
    if (c < 0x80 || len < 2) {
        *n = 1;
        return c;
    }
    if ((c & 0xe0) == 0xc0) {
        *n = 2;
        return ((c & 0x1f) << 6) | (s[1] & 0x3fu);
    }
    if ((c & 0xf0) == 0xe0) {
        *n = 3;
        return ((c & 0x0f) << 12) | ((s[1] & 0x3fu) << 6) | (s[2] & 0x3fu);
    }
    *n = 4;
    return ((c & 0x07) << 18) | ((s[1] & 0x3fu) << 12) | ((s[2] & 0x3fu) << 6) | (s[3] & 0x3fu);
}

/* Writes cp as `n` bytes of UTF-8; n is the length cp had before
 * lower-casing, which every mapping of cp_lower keeps. */
static void utf8_encode(uint32_t cp, unsigned char *d, size_t n)
{
    switch (n) {
    case 1:
        d[0] = (unsigned char)cp;
        break;
    case 2:
        d[0] = (unsigned char)(0xc0 | (cp >> 6));
        d[1] = (unsigned char)(0x80 | (cp & 0x3f));
        break;
    case 3:
        d[0] = (unsigned char)(0xe0 | (cp >> 12));
        d[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
        d[2] = (unsigned char)(0x80 | (cp & 0x3f));
        break;
    default:
        d[0] = (unsigned char)(0xf0 | (cp >> 18));
        d[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
        d[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
        d[3] = (unsigned char)(0x80 | (cp & 0x3f));
        break;
    }
}

static uint32_t cp_lower(uint32_t c)
{
    if (c >= 'A' && c <= 'Z')
        return c + 32;
    if (c < 0xc0)
        return c;
    if (c <= 0xde)
        return c == 0xd7 ? c : c + 32;
    if (c >= 0x100 && c <= 0x17f) {
        /* dotted/dotless i, kra, 'n and long s have no simple pair */
        if (c == 0x130 || c == 0x131 || c == 0x138 || c == 0x149 || c == 0x17f)
            return c;
        if (c == 0x178)
            return 0xff;
        if ((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17e))
            return (c & 1) ? c + 1 : c; /* capitals at odd code points */
        return (c & 1) ? c : c + 1;     /* capitals at even code points */
    }
    if (c >= 0x391 && c <= 0x3a9 && c != 0x3a2)
        return c + 32;
    if (c >= 0x410 && c <= 0x42f)
        return c + 32;
    if (c >= 0x400 && c <= 0x40f)
        return c + 80;
    return c;
}

static bool cp_is_word(uint32_t c)
{
    if (c < 0x80)
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    if (c < 0xc0 || c == 0xd7 || c == 0xf7)
        return false;
    if (c >= 0x2000 && c <= 0x2bff)
        return false;
    if ((c >= 0x3000 && c <= 0x303f) || (c >= 0xfe00 && c <= 0xfe0f) ||
        (c >= 0xfe30 && c <= 0xfe4f))
        return false;
    if ((c >= 0xff00 && c <= 0xff0f) || (c >= 0xff1a && c <= 0xff20) ||
        (c >= 0xff3b && c <= 0xff40) || (c >= 0xff5b && c <= 0xff65))
        return false;
    if (c >= 0x1f000 && c <= 0x1faff)
        return false;
    return c < 0xe0000;
}

/* ---- word lists (steps 4 and 6), each sorted in strcmp order ---- */

static const char *const stop_words[] = {
    "a",          "about",   "above",      "after",  "again",   "against", "ain",       "all",
    "also",       "am",      "an",         "and",    "any",     "are",     "aren",      "as",
    "at",         "be",      "because",    "been",   "before",  "being",   "below",     "between",
    "both",       "but",     "by",         "can",    "could",   "couldn",  "d",         "did",
    "didn",       "do",      "does",       "doesn",  "doing",   "don",     "down",      "during",
    "each",       "few",     "for",        "from",   "further", "had",     "hadn",      "has",
    "hasn",       "have",    "haven",      "having", "he",      "her",     "here",      "hers",
    "herself",    "hey",     "hi",         "him",    "himself", "his",     "how",       "i",
    "if",         "in",      "into",       "is",     "isn",     "it",      "its",       "itself",
    "just",       "ll",      "m",          "me",     "more",    "most",    "my",        "myself",
    "no",         "nor",     "not",        "now",    "of",      "off",     "oh",        "on",
    "once",       "only",    "or",         "other",  "our",     "ours",    "ourselves", "out",
    "over",       "own",     "re",         "s",      "same",    "she",     "should",    "shouldn",
    "so",         "some",    "such",       "t",      "than",    "that",    "the",       "their",
    "theirs",     "them",    "themselves", "then",   "there",   "these",   "they",      "this",
    "those",      "through", "to",         "too",    "under",   "until",   "up",        "ve",
    "very",       "was",     "wasn",       "we",     "were",    "weren",   "what",      "when",
    "where",      "which",   "while",      "who",    "whom",    "why",     "will",      "with",
    "won",        "would",   "wouldn",     "yeah",   "you",     "your",    "yours",     "yourself",
    "yourselves",
};

/* Frequent words of everyday conversation: kept, but weighted like a quarter
 * of a word and without trigrams, a fixed stand-in for the low idf that a
 * stateless embedder cannot compute. */
static const char *const common_words[] = {
    "able",       "actually", "always",  "amazing", "another", "anyway",    "awesome",
    "back",       "bad",      "best",    "better",  "big",     "bit",       "came",
    "come",       "comes",    "coming",  "cool",    "day",     "days",      "definitely",
    "different",  "done",     "enjoy",   "even",    "ever",    "every",     "everyone",
    "everything", "feel",     "feeling", "feels",   "felt",    "find",      "first",
    "fun",        "gave",     "get",     "gets",    "getting", "give",      "glad",
    "go",         "goes",     "going",   "gone",    "good",    "got",       "great",
    "happy",      "hard",     "help",    "hope",    "idea",    "important", "keep",
    "kind",       "know",     "last",    "let",     "life",    "like",      "little",
    "long",       "look",     "looked",  "looking", "looks",   "lot",       "lots",
    "love",       "loved",    "make",    "makes",   "making",  "many",      "maybe",
    "mean",       "means",    "much",    "need",    "new",     "next",      "nice",
    "one",        "ones",     "people",  "pretty",  "really",  "right",     "said",
    "say",        "see",      "seen",    "sounds",  "special", "still",     "sure",
    "take",       "taking",   "tell",    "thank",   "thanks",  "thing",     "things",
    "think",      "time",     "times",   "told",    "took",    "totally",   "tough",
    "try",        "trying",   "want",    "wanted",  "way",     "well",      "went",
    "wonderful",  "work",     "working", "world",   "wow",     "year",      "years",
    "yes",
};

static int word_cmp(const void *key, const void *elem)
{
    return strcmp((const char *)key, *(const char *const *)elem);
}

static bool in_list(const char *const *list, size_t n, const unsigned char *w, size_t len)
{
    char buf[16];
    if (len >= sizeof buf)
        return false; /* no listed word is that long */
    memcpy(buf, w, len);
    buf[len] = '\0';
    return bsearch(buf, list, n, sizeof list[0], word_cmp) != NULL;
}

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static bool is_stop_word(const unsigned char *w, size_t len)
{
    return in_list(stop_words, COUNT(stop_words), w, len);
}

static bool is_common_word(const unsigned char *w, size_t len)
{
    return in_list(common_words, COUNT(common_words), w, len);
}

/* ---- Porter's step 1 (step 5) on ASCII lower-case letters ---- */

static bool is_consonant(const char *w, size_t i)
{
    switch (w[i]) {
    case 'a':
    case 'e':
    case 'i':
    case 'o':
    case 'u':
        return false;
    case 'y':
        return i == 0 || !is_consonant(w, i - 1);
    default:
        return true;
    }
}

static bool has_vowel(const char *w, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!is_consonant(w, i))
            return true;
    return false;
}

/* Porter's measure of w[0..n): the number of vowel-consonant sequences. */
static int measure(const char *w, size_t n)
{
    int m = 0;
    size_t i = 0;
    while (i < n && is_consonant(w, i))
        i++;
    while (i < n) {
        while (i < n && !is_consonant(w, i))
            i++;
        if (i >= n)
            break;
        while (i < n && is_consonant(w, i))
            i++;
        m++;
    }
    return m;
}

static bool ends_with(const char *w, size_t n, const char *suffix)
{
    size_t k = strlen(suffix);
    return n >= k && memcmp(w + n - k, suffix, k) == 0;
}

/* consonant-vowel-consonant at the end, the last not w, x or y ("hop") */
static bool ends_cvc(const char *w, size_t n)
{
    if (n < 3 || !is_consonant(w, n - 1) || is_consonant(w, n - 2) || !is_consonant(w, n - 3))
        return false;
    return w[n - 1] != 'w' && w[n - 1] != 'x' && w[n - 1] != 'y';
}

/* Stems w[0..n) in place; returns the new length, never more than n. */
static size_t porter_step1(char *w, size_t n)
{
    /* 1a */
    if (ends_with(w, n, "sses") || ends_with(w, n, "ies"))
        n -= 2;
    else if (!ends_with(w, n, "ss") && w[n - 1] == 's')
        n -= 1;
    /* 1b */
    bool repair = false;
    if (ends_with(w, n, "eed")) {
        if (measure(w, n - 3) > 0)
            n -= 1;
    } else if (ends_with(w, n, "ed") && has_vowel(w, n - 2)) {
        n -= 2;
        repair = true;
    } else if (ends_with(w, n, "ing") && has_vowel(w, n - 3)) {
        n -= 3;
        repair = true;
    }
    if (repair) {
        char last = w[n - 1];
        if (ends_with(w, n, "at") || ends_with(w, n, "bl") || ends_with(w, n, "iz"))
            w[n++] = 'e';
        else if (n >= 2 && last == w[n - 2] && is_consonant(w, n - 1) && last != 'l' &&
                 last != 's' && last != 'z')
            n -= 1;
        else if (measure(w, n) == 1 && ends_cvc(w, n))
            w[n++] = 'e';
    }
    /* 1c */
    if (n > 1 && w[n - 1] == 'y' && has_vowel(w, n - 1))
        w[n - 1] = 'i';
    return n;
}

/* ---- tokens and terms (steps 2-5) ---- */

struct token {
    size_t off, len; /* into the lower-cased copy */
};

/* The lower-cased copy of a text and its tokens. Small texts stay on the
 * stack. */
struct scan {
    unsigned char *low;
    struct token *toks;
    size_t ntok;
    unsigned char low_local[1024];
    struct token toks_local[256];
};

static void scan_free(struct scan *sc)
{
    if (sc->low != sc->low_local)
        free(sc->low);
    if (sc->toks != sc->toks_local)
        free(sc->toks);
}

static int scan_text(const char *text, size_t len, struct scan *sc)
{
    /* a token takes at least one byte and is followed by a separator, or is
     * cut at TOKEN_MAX: at most len / 2 + 1 of them */
    size_t maxtok = len / 2 + 1;
    sc->low = len <= sizeof sc->low_local ? sc->low_local : malloc(len);
    sc->toks = maxtok <= COUNT(sc->toks_local) ? sc->toks_local : malloc(maxtok * sizeof *sc->toks);
    sc->ntok = 0;
    if (sc->low == NULL || sc->toks == NULL) {
        scan_free(sc);
        return MG_ENOMEM;
    }
    const unsigned char *s = (const unsigned char *)text;
    bool in_token = false;
    for (size_t i = 0; i < len;) {
        size_t k;
        uint32_t cp = utf8_decode(s + i, len - i, &k);
        utf8_encode(cp_lower(cp), sc->low + i, k);
        if (!cp_is_word(cp)) {
            in_token = false;
        } else {
            if (!in_token || sc->toks[sc->ntok - 1].len + k > TOKEN_MAX) {
                sc->toks[sc->ntok].off = i;
                sc->toks[sc->ntok].len = 0;
                sc->ntok++;
                in_token = true;
            }
            sc->toks[sc->ntok - 1].len += k;
        }
        i += k;
    }
    return MG_OK;
}

/* True when every token is a stop word (then they are all kept, step 4). */
static bool only_stop_words(const struct scan *sc)
{
    for (size_t t = 0; t < sc->ntok; t++)
        if (!is_stop_word(sc->low + sc->toks[t].off, sc->toks[t].len))
            return false;
    return true;
}

struct term {
    char buf[TOKEN_MAX];
    size_t len;
};

static void make_term(const unsigned char *w, size_t n, struct term *t)
{
    memcpy(t->buf, w, n);
    t->len = n;
    if (n < STEM_MIN)
        return;
    for (size_t i = 0; i < n; i++)
        if (w[i] < 'a' || w[i] > 'z')
            return;
    t->len = porter_step1(t->buf, n);
}

/* ---- features (steps 6 and 7) ---- */

struct features {
    uint64_t *keys;
    size_t n, cap;
    uint64_t local[512];
};

static int features_push(struct features *f, uint64_t hash, enum feature_kind kind)
{
    if (f->n == f->cap) {
        uint64_t *grown = malloc(2 * f->cap * sizeof *grown);
        if (grown == NULL)
            return MG_ENOMEM;
        memcpy(grown, f->keys, f->n * sizeof *grown);
        if (f->keys != f->local)
            free(f->keys);
        f->keys = grown;
        f->cap *= 2;
    }
    f->keys[f->n++] = (hash & ~(uint64_t)KIND_MASK) | (uint64_t)kind;
    return MG_OK;
}

static int add_trigrams(struct features *f, const unsigned char *w, size_t n)
{
    unsigned char buf[TOKEN_MAX + 2];
    size_t start[TOKEN_MAX + 3]; /* byte offset of each code point, and the end */
    size_t ncp = 0, total = n + 2;
    buf[0] = '^';
    memcpy(buf + 1, w, n);
    buf[n + 1] = '$';
    for (size_t i = 0; i < total;) {
        size_t k;
        start[ncp++] = i;
        (void)utf8_decode(buf + i, total - i, &k);
        i += k;
    }
    start[ncp] = total;
    for (size_t i = 0; i + TRIGRAM <= ncp; i++) {
        uint64_t h =
            XXH3_64bits_withSeed(buf + start[i], start[i + TRIGRAM] - start[i], SEED_TRIGRAM);
        int rc = features_push(f, h, KIND_TRIGRAM);
        if (rc != MG_OK)
            return rc;
    }
    return MG_OK;
}

static int gather_features(const char *text, size_t len, struct features *f)
{
    struct scan sc;
    int rc = scan_text(text, len, &sc);
    if (rc != MG_OK)
        return rc;
    bool keep_stop = only_stop_words(&sc);
    uint64_t prev = 0;
    bool have_prev = false;
    for (size_t t = 0; t < sc.ntok && rc == MG_OK; t++) {
        const unsigned char *w = sc.low + sc.toks[t].off;
        size_t n = sc.toks[t].len;
        if (!keep_stop && is_stop_word(w, n))
            continue;
        struct term term;
        make_term(w, n, &term);
        bool common = is_common_word(w, n);
        uint64_t hw = XXH3_64bits_withSeed(term.buf, term.len, SEED_WORD);
        rc = features_push(f, hw, common ? KIND_COMMON : KIND_WORD);
        if (rc == MG_OK && have_prev)
            rc = features_push(f, XXH3_64bits_withSeed(term.buf, term.len, prev ^ SEED_PAIR),
                               KIND_PAIR);
        if (rc == MG_OK && !common)
            rc = add_trigrams(f, w, n);
        prev = hw;
        have_prev = true;
    }
    if (rc == MG_OK && sc.ntok == 0) {
        size_t b = 0, e = len;
        while (b < e && (text[b] == ' ' || (text[b] >= '\t' && text[b] <= '\r')))
            b++;
        while (e > b && (text[e - 1] == ' ' || (text[e - 1] >= '\t' && text[e - 1] <= '\r')))
            e--;
        rc = features_push(f, XXH3_64bits_withSeed(text + b, e - b, SEED_RAW), KIND_RAW);
    }
    scan_free(&sc);
    return rc;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* ---- vector (steps 8-10) ---- */

/* The splitmix64 finalizer: a fixed integer bijection with good avalanche. */
static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint32_t reserved_dims(uint32_t dim)
{
    if (dim >= 32)
        return dim / 32;
    return dim >= 2 ? 1 : 0;
}

static int64_t isqrt64(int64_t v)
{
    int64_t r = (int64_t)sqrt((double)v);
    while (r * r > v)
        r--;
    while ((r + 1) * (r + 1) <= v)
        r++;
    return r;
}

static int check_text(const char *text, size_t len, mg_error *err)
{
    if (text == NULL && len > 0)
        return mg_error_set(err, MG_EINVAL, "hash embedder: no text");
    if (len > 0 && !mg_utf8_valid(text, len))
        return mg_error_set(err, MG_EINVAL, "hash embedder: text is not valid UTF-8");
    return MG_OK;
}

int mg_embed_hash(const char *text, size_t len, int role, float *out, uint32_t dim, mg_error *err)
{
    if (dim < 1 || dim > MG_EMBED_HASH_DIM_MAX)
        return mg_error_set(err, MG_EINVAL, "hash embedder: dimension %u is outside 1..%u", dim,
                            (unsigned)MG_EMBED_HASH_DIM_MAX);
    if (role != MG_EMBED_DOCUMENT && role != MG_EMBED_QUERY)
        return mg_error_set(err, MG_EINVAL, "hash embedder: unknown role %d", role);
    if (out == NULL)
        return mg_error_set(err, MG_EINVAL, "hash embedder: no output buffer");
    int rc = check_text(text, len, err);
    if (rc != MG_OK)
        return rc;

    struct features f;
    f.keys = f.local;
    f.n = 0;
    f.cap = COUNT(f.local);
    rc = gather_features(text, len, &f);
    if (rc != MG_OK) {
        if (f.keys != f.local)
            free(f.keys);
        return mg_error_set(err, rc, "hash embedder: out of memory");
    }
    qsort(f.keys, f.n, sizeof f.keys[0], cmp_u64);

    int64_t acc[MG_EMBED_HASH_DIM_MAX];
    memset(acc, 0, dim * sizeof acc[0]);
    uint32_t reserved = reserved_dims(dim);
    uint64_t buckets = dim - reserved;
    for (size_t i = 0; i < f.n;) {
        size_t j = i + 1;
        while (j < f.n && f.keys[j] == f.keys[i])
            j++;
        uint64_t key = f.keys[i];
        int64_t value = kind_weight[key & KIND_MASK] * tf_weight[j - i > TF_CAP ? TF_CAP : j - i];
        for (uint64_t p = 1; p <= PROBES; p++) {
            uint64_t z = mix64(key + p * 0x9e3779b97f4a7c15ull);
            size_t bucket = (size_t)(((z >> 32) * buckets) >> 32);
            acc[bucket] += (z >> 31) & 1 ? -value : value;
        }
        i = j;
    }
    if (f.keys != f.local)
        free(f.keys);

    if (role == MG_EMBED_DOCUMENT && reserved > 0) {
        int64_t mass = isqrt64(PIVOT / reserved);
        for (uint32_t i = dim - reserved; i < dim; i++)
            acc[i] = mass;
    }
    bool all_zero = true;
    for (uint32_t i = 0; i < dim && all_zero; i++)
        all_zero = acc[i] == 0;
    if (all_zero)
        acc[0] = 1;

    /* One rounding per operation, in a fixed order: the same on every
     * machine (no FMA contraction: see router/CMakeLists.txt). The values
     * stay far below 2^53, so the conversions to double are exact. */
    double sumsq = 0.0;
    for (uint32_t i = 0; i < dim; i++) {
        double x = (double)acc[i];
        double sq = x * x;
        sumsq += sq;
    }
    double norm = sqrt(sumsq);
    for (uint32_t i = 0; i < dim; i++)
        out[i] = (float)((double)acc[i] / norm);
    return MG_OK;
}

int mg_embed_hash_batch(const char *const *texts, const size_t *lens, size_t n, int role,
                        float *out, uint32_t dim, mg_error *err)
{
    if (n > 0 && (texts == NULL || lens == NULL || out == NULL))
        return mg_error_set(err, MG_EINVAL, "hash embedder: no texts or output buffer");
    for (size_t i = 0; i < n; i++) {
        int rc = mg_embed_hash(texts[i], lens[i], role, out + i * (size_t)dim, dim, err);
        if (rc != MG_OK)
            return mg_error_wrap(err, rc, "text %zu", i);
    }
    return MG_OK;
}

int mg_embed_hash_terms(const char *text, size_t len, mg_embed_term_fn fn, void *ctx, mg_error *err)
{
    int rc = check_text(text, len, err);
    if (rc != MG_OK)
        return rc;
    if (fn == NULL)
        return mg_error_set(err, MG_EINVAL, "hash embedder: no callback");
    struct scan sc;
    if (scan_text(text, len, &sc) != MG_OK)
        return mg_error_set(err, MG_ENOMEM, "hash embedder: out of memory");
    bool keep_stop = only_stop_words(&sc);
    for (size_t t = 0; t < sc.ntok; t++) {
        const unsigned char *w = sc.low + sc.toks[t].off;
        if (!keep_stop && is_stop_word(w, sc.toks[t].len))
            continue;
        struct term term;
        make_term(w, sc.toks[t].len, &term);
        fn(term.buf, term.len, ctx);
    }
    scan_free(&sc);
    return MG_OK;
}
