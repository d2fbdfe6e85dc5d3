/* router/embed_hash: the built-in `hash` embedder. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "lib/error.h"
#include "router/embed_hash.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define DIM 384

static void embed(const char *text, int role, float *out, uint32_t dim)
{
    mg_error err;
    mg_error_clear(&err);
    assert_int_equal(mg_embed_hash(text, strlen(text), role, out, dim, &err), MG_OK);
}

static double dot(const float *a, const float *b, uint32_t dim)
{
    double s = 0;
    for (uint32_t i = 0; i < dim; i++)
        s += (double)a[i] * (double)b[i];
    return s;
}

static double score(const char *query, const char *doc)
{
    float q[DIM], d[DIM];
    embed(query, MG_EMBED_QUERY, q, DIM);
    embed(doc, MG_EMBED_DOCUMENT, d, DIM);
    return dot(q, d, DIM);
}

/* The first nonzero components of a vector, checked bit for bit: any change
 * to the algorithm must fail here and bump MG_EMBED_HASH_VERSION. */
struct golden {
    uint32_t index;
    float value;
};

static void check_golden(const char *text, int role, const struct golden *g, size_t n)
{
    float v[DIM];
    embed(text, role, v, DIM);
    size_t found = 0;
    for (uint32_t i = 0; i < DIM && found < n; i++) {
        if (v[i] == 0.0f)
            continue;
        if (i != g[found].index || memcmp(&v[i], &g[found].value, sizeof v[i]) != 0)
            fail_msg("%s: component %zu is v[%u] = %a, expected v[%u] = %a", text, found, i,
                     (double)v[i], g[found].index, (double)g[found].value);
        found++;
    }
    assert_int_equal(found, n);
}

static void test_golden_values(void **state)
{
    (void)state;
    assert_int_equal(MG_EMBED_HASH_VERSION, 1);
    static const struct golden doc[] = {
        {0, 0x1.305478p-7f},  {2, 0x1.305478p-6f},  {10, -0x1.305478p-7f},
        {12, 0x1.305478p-7f}, {14, 0x1.305478p-4f}, {15, -0x1.305478p-7f},
    };
    check_golden("Caroline: I went to a LGBTQ support group yesterday.", MG_EMBED_DOCUMENT, doc, 6);
    static const struct golden query[] = {
        {6, -0x1.1d094p-5f}, {7, 0x1.40aa68p-2f},  {8, -0x1.1d094p-5f},
        {15, 0x1.1d094p-5f}, {28, -0x1.1d094p-5f}, {35, -0x1.1d094p-4f},
    };
    check_golden("Ünïcode straße 東京 🎉", MG_EMBED_QUERY, query, 6);
    /* the empty text: one feature in four signed probes, and nothing else */
    static const struct golden empty[] = {
        {13, -0x1p-1f},
        {71, -0x1p-1f},
        {268, 0x1p-1f},
        {327, -0x1p-1f},
    };
    check_golden("", MG_EMBED_QUERY, empty, 4);
    /* a document's reserved dimensions (the last 384 / 32) carry its length prior */
    float v[DIM];
    embed("Caroline: I went to a LGBTQ support group yesterday.", MG_EMBED_DOCUMENT, v, DIM);
    for (uint32_t i = DIM - DIM / 32; i < DIM; i++)
        assert_true(v[i] == 0x1.15ce42p-2f);
    assert_true(v[DIM - DIM / 32 - 1] != 0x1.15ce42p-2f);
}

static void test_normalized(void **state)
{
    (void)state;
    static const char *const texts[] = {
        "Caroline: I went to a LGBTQ support group yesterday and it was so powerful.",
        "a",
        "the of and",
        "",
        "!!!",
        "東京で寿司を食べました。",
        "Straße, Ærø, Ελλάδα, Москва 🎉",
    };
    static const uint32_t dims[] = {1, 2, 7, 31, 32, 384, 768, MG_EMBED_HASH_DIM_MAX};
    static float v[MG_EMBED_HASH_DIM_MAX];
    for (size_t t = 0; t < sizeof texts / sizeof texts[0]; t++)
        for (size_t d = 0; d < sizeof dims / sizeof dims[0]; d++)
            for (int role = MG_EMBED_DOCUMENT; role <= MG_EMBED_QUERY; role++) {
                embed(texts[t], role, v, dims[d]);
                double norm = sqrt(dot(v, v, dims[d]));
                if (fabs(norm - 1.0) > 1e-5)
                    fail_msg("\"%s\" dim %u role %d: norm %.9f", texts[t], dims[d], role, norm);
            }
}

static void test_deterministic(void **state)
{
    (void)state;
    const char *text = "Melanie: I painted a lake sunrise last year! It's special to me.";
    float a[DIM], b[DIM];
    embed(text, MG_EMBED_DOCUMENT, a, DIM);
    embed(text, MG_EMBED_DOCUMENT, b, DIM);
    assert_memory_equal(a, b, sizeof a);
    /* the roles differ only in the reserved dimensions (the last DIM / 32) */
    embed(text, MG_EMBED_QUERY, b, DIM);
    uint32_t reserved = DIM / 32;
    for (uint32_t i = DIM - reserved; i < DIM; i++) {
        assert_true(a[i] > 0.0f);
        assert_true(b[i] == 0.0f);
    }
    double ca = 0, cb = 0;
    for (uint32_t i = 0; i < DIM - reserved; i++) {
        ca += (double)a[i] * (double)a[i];
        cb += (double)b[i] * (double)b[i];
        /* same direction: a[i] / |a_content| == b[i] / |b_content| */
    }
    for (uint32_t i = 0; i < DIM - reserved; i++)
        assert_true(fabs((double)a[i] / sqrt(ca) - (double)b[i] / sqrt(cb)) < 1e-6);
}

static void test_similar_beats_unrelated(void **state)
{
    (void)state;
    const char *q = "When did Caroline go to the LGBTQ support group?";
    double hit = score(q, "Caroline: I went to a LGBTQ support group yesterday and it was "
                          "so powerful.");
    double miss = score(q, "Melanie: I painted that lake sunrise last year! It's special.");
    double other = score(q, "John: The donations even helped get a brand new fire truck!");
    assert_true(hit > miss);
    assert_true(hit > other);
    assert_true(hit > 0.1);

    /* inflections meet through the stemmer and the character trigrams */
    assert_true(score("painting sunsets", "Melanie: I painted a sunset last week.") >
                score("painting sunsets", "Melanie: I baked a cake last week."));
    /* a long memory that shares two words with the query beats a short one
     * that shares one (the document length prior) */
    assert_true(score("Melanie museum kids",
                      "Melanie: Yesterday I took the kids to the museum - it was so cool "
                      "spending time with them and seeing their eyes light up!") >
                score("Melanie museum kids", "Melanie: Wow, looks awesome! Did you join in?"));
}

static void test_case_insensitive(void **state)
{
    (void)state;
    static const char *const pairs[][2] = {
        {"HELLO World", "hello world"},
        {"ÉCOLE Ærø ŁÓDŹ", "école ærø łódź"},
        {"ΑΘΗΝΑ", "αθηνα"},
        {"МОСКВА ЁЖ", "москва ёж"},
    };
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        float a[DIM], b[DIM];
        embed(pairs[i][0], MG_EMBED_DOCUMENT, a, DIM);
        embed(pairs[i][1], MG_EMBED_DOCUMENT, b, DIM);
        if (memcmp(a, b, sizeof a) != 0)
            fail_msg("\"%s\" and \"%s\" differ", pairs[i][0], pairs[i][1]);
    }
}

static void test_unicode(void **state)
{
    (void)state;
    float a[DIM], b[DIM];
    /* text without spaces still yields trigram features */
    double self = score("東京で寿司を食べました", "東京で寿司を食べました。とても美味しかった");
    double other = score("東京で寿司を食べました", "大阪でラーメンを作った");
    assert_true(self > other);
    assert_true(self > 0.1 && other < 0.05);
    /* emoji and punctuation separate words: these two are the same words */
    embed("party🎉time", MG_EMBED_QUERY, a, DIM);
    embed("party time", MG_EMBED_QUERY, b, DIM);
    assert_memory_equal(a, b, sizeof a);
    /* a curly apostrophe splits like a straight one */
    embed("Caroline’s book", MG_EMBED_QUERY, a, DIM);
    embed("Caroline's book", MG_EMBED_QUERY, b, DIM);
    assert_memory_equal(a, b, sizeof a);
    /* emoji alone: no word, but a defined vector distinct from the empty one */
    embed("🎉🎉", MG_EMBED_QUERY, a, DIM);
    embed("", MG_EMBED_QUERY, b, DIM);
    assert_memory_not_equal(a, b, sizeof a);
}

static void test_invalid_utf8_refused(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "\xff",             /* not a lead byte */
        "caf\xc3",          /* truncated */
        "\xc0\xaf",         /* overlong '/' */
        "\xed\xa0\x80",     /* surrogate */
        "\xf4\x90\x80\x80", /* above U+10FFFF */
    };
    float v[DIM];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(v, 0x7f, sizeof v);
        mg_error err;
        mg_error_clear(&err);
        assert_int_equal(mg_embed_hash(bad[i], strlen(bad[i]), MG_EMBED_DOCUMENT, v, DIM, &err),
                         MG_EINVAL);
        assert_int_equal(err.code, MG_EINVAL);
        assert_non_null(strstr(err.msg, "UTF-8"));
        for (size_t j = 0; j < DIM; j++)
            assert_int_equal(((unsigned char *)v)[j], 0x7f); /* untouched */
    }
    /* an embedded NUL is refused too: every stored text is a C string */
    mg_error err;
    assert_int_equal(mg_embed_hash("a\0b", 3, MG_EMBED_QUERY, v, DIM, &err), MG_EINVAL);
}

static void test_bad_arguments(void **state)
{
    (void)state;
    static float v[MG_EMBED_HASH_DIM_MAX + 1];
    mg_error err;
    assert_int_equal(mg_embed_hash("x", 1, MG_EMBED_QUERY, v, 0, &err), MG_EINVAL);
    assert_non_null(strstr(err.msg, "dimension"));
    assert_int_equal(mg_embed_hash("x", 1, MG_EMBED_QUERY, v, MG_EMBED_HASH_DIM_MAX + 1, &err),
                     MG_EINVAL);
    assert_int_equal(mg_embed_hash("x", 1, MG_EMBED_QUERY, v, 1, &err), MG_OK);
    assert_true(v[0] == 1.0f || v[0] == -1.0f);
    assert_int_equal(mg_embed_hash("x", 1, MG_EMBED_QUERY, v, MG_EMBED_HASH_DIM_MAX, &err), MG_OK);
    assert_int_equal(mg_embed_hash("x", 1, 7, v, DIM, &err), MG_EINVAL);
    assert_int_equal(mg_embed_hash("x", 1, MG_EMBED_QUERY, NULL, DIM, &err), MG_EINVAL);
    assert_int_equal(mg_embed_hash(NULL, 3, MG_EMBED_QUERY, v, DIM, &err), MG_EINVAL);
    assert_int_equal(mg_embed_hash("x", 1, MG_EMBED_QUERY, v, DIM, NULL), MG_OK);
}

static void test_empty_text(void **state)
{
    (void)state;
    float a[DIM], b[DIM], c[DIM];
    mg_error err;
    assert_int_equal(mg_embed_hash(NULL, 0, MG_EMBED_QUERY, a, DIM, &err), MG_OK);
    embed("", MG_EMBED_QUERY, b, DIM);
    assert_memory_equal(a, b, sizeof a);
    embed(" \t\n ", MG_EMBED_QUERY, c, DIM); /* blanks are trimmed: same as empty */
    assert_memory_equal(a, c, sizeof a);
    assert_true(fabs(dot(a, a, DIM) - 1.0) < 1e-5);
    /* punctuation-only text is its own feature */
    embed("?!", MG_EMBED_QUERY, c, DIM);
    assert_memory_not_equal(a, c, sizeof a);
    /* only stop words: they are kept, so such texts still differ */
    embed("what is it", MG_EMBED_QUERY, b, DIM);
    embed("who are you", MG_EMBED_QUERY, c, DIM);
    assert_memory_not_equal(b, c, sizeof b);
    assert_memory_not_equal(a, b, sizeof a);
}

struct terms {
    char buf[256];
};

static void collect(const char *term, size_t len, void *ctx)
{
    struct terms *t = ctx;
    size_t used = strlen(t->buf);
    snprintf(t->buf + used, sizeof t->buf - used, "%s%.*s", used ? " " : "", (int)len, term);
}

static void test_terms(void **state)
{
    (void)state;
    struct terms t = {""};
    mg_error err;
    const char *text = "The cats were RUNNING to Caroline's houses; she hoped-agreed. Ünïcode 2023";
    assert_int_equal(mg_embed_hash_terms(text, strlen(text), collect, &t, &err), MG_OK);
    assert_string_equal(t.buf, "cat run caroline house hope agree ünïcode 2023");
    t.buf[0] = '\0';
    assert_int_equal(mg_embed_hash_terms("what is it", 10, collect, &t, &err), MG_OK);
    assert_string_equal(t.buf, "what is it");
    assert_int_equal(mg_embed_hash_terms("\xff", 1, collect, &t, &err), MG_EINVAL);
}

static void test_batch(void **state)
{
    (void)state;
    const char *texts[] = {"first memory", "second one", "caf\xc3"};
    size_t lens[] = {12, 10, 4};
    float batch[2 * DIM], single[DIM];
    mg_error err;
    assert_int_equal(mg_embed_hash_batch(texts, lens, 2, MG_EMBED_DOCUMENT, batch, DIM, &err),
                     MG_OK);
    embed(texts[1], MG_EMBED_DOCUMENT, single, DIM);
    assert_memory_equal(batch + DIM, single, sizeof single);
    float three[3 * DIM];
    assert_int_equal(mg_embed_hash_batch(texts, lens, 3, MG_EMBED_DOCUMENT, three, DIM, &err),
                     MG_EINVAL);
    assert_non_null(strstr(err.msg, "text 2"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden_values),
        cmocka_unit_test(test_normalized),
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_similar_beats_unrelated),
        cmocka_unit_test(test_case_insensitive),
        cmocka_unit_test(test_unicode),
        cmocka_unit_test(test_invalid_utf8_refused),
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_empty_text),
        cmocka_unit_test(test_terms),
        cmocka_unit_test(test_batch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
