/* router/merge.h: k-way merge of per-group answers and MemOS's dedup modes. */
#include "router/merge.h"
#include "storage/item.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define DIM 8

typedef struct rec {
    char *buf;
    size_t len;
    float vec[DIM];
} rec;

static void make(rec *r, uint8_t idbyte, const char *text, const char *tag, const float *v)
{
    mg_item it;
    memset(&it, 0, sizeof it);
    memset(it.id, idbyte, sizeof it.id);
    it.memory = (char *)text;
    it.memory_len = strlen(text);
    it.metadata = json_pack("{s:s,s:[s]}", "session_id", "s", "tags", tag);
    assert_int_equal(mg_item_encode(&it, &r->buf, &r->len), MG_OK);
    json_decref(it.metadata);
    memcpy(r->vec, v, sizeof r->vec);
}

static mg_hit hit_of(const rec *r, double rank)
{
    mg_hit h = {.rank = rank, .relativity = rank, .record = (const uint8_t *)r->buf,
                .record_len = r->len, .vec = (const uint8_t *)r->vec, .dim = DIM};
    return h;
}

static void test_merge(void **state)
{
    (void)state;
    rec r[6];
    float v[DIM] = {1};
    for (int i = 0; i < 6; i++)
        make(&r[i], (uint8_t)i, "t", "x", v);
    mg_hit a[] = {hit_of(&r[0], 0.9), hit_of(&r[1], 0.5), hit_of(&r[2], 0.1)};
    mg_hit b[] = {hit_of(&r[3], 0.8), hit_of(&r[4], 0.7)};
    mg_hit c[] = {hit_of(&r[5], 0.6)};
    const mg_hit *lists[] = {a, b, c};
    size_t lens[] = {3, 2, 1}, heap[3];
    mg_hit out[4];
    assert_int_equal(mg_hits_merge(lists, lens, 3, 4, heap, out), 4);
    double want[] = {0.9, 0.8, 0.7, 0.6};
    for (int i = 0; i < 4; i++)
        assert_true(out[i].rank == want[i]);
    size_t empty_lens[] = {0, 0, 0};
    assert_int_equal(mg_hits_merge(lists, empty_lens, 3, 4, heap, out), 0);
    for (int i = 0; i < 6; i++)
        free(r[i].buf);
}

static void test_record_readers(void **state)
{
    (void)state;
    rec r;
    float v[DIM] = {1};
    make(&r, 7, "hello", "x", v);
    const char *s;
    uint32_t n;
    assert_true(mg_record_text((const uint8_t *)r.buf, r.len, &s, &n));
    assert_int_equal(n, 5);
    assert_memory_equal(s, "hello", 5);
    assert_true(mg_record_meta_str((const uint8_t *)r.buf, r.len, "session_id", &s, &n));
    assert_memory_equal(s, "s", 1);
    assert_false(mg_record_meta_str((const uint8_t *)r.buf, r.len, "nope", &s, &n));
    const uint8_t *id;
    assert_true(mg_record_id((const uint8_t *)r.buf, r.len, &id));
    assert_int_equal(id[0], 7);
    assert_false(mg_record_text((const uint8_t *)"\x01", 1, &s, &n));
    free(r.buf);
}

static void test_dedup_modes(void **state)
{
    (void)state;
    float same[DIM] = {1, 1, 0, 0, 0, 0, 0, 0};
    float near[DIM] = {1, 1, 0.1f, 0, 0, 0, 0, 0};
    float far[DIM] = {0, 0, 0, 0, 1, 1, 0, 0};
    rec r[4];
    make(&r[0], 1, "apple pie", "food", same);
    make(&r[1], 2, "apple pie", "food", same);    /* exact duplicate */
    make(&r[2], 3, "apple tart", "food", near);   /* near duplicate */
    make(&r[3], 4, "train times", "travel", far); /* different */
    mg_hit h[] = {hit_of(&r[0], 0.9), hit_of(&r[1], 0.89), hit_of(&r[2], 0.88),
                  hit_of(&r[3], 0.5)};
    size_t sel[4];
    double scratch[4];
    assert_int_equal(mg_dedup_select(MG_DEDUP_NO, h, 4, 3, DIM, scratch, sel), 3);
    assert_int_equal(sel[2], 2);
    assert_int_equal(mg_dedup_select(MG_DEDUP_EXACT, h, 4, 4, DIM, scratch, sel), 3);
    assert_int_equal(sel[1], 2);
    assert_int_equal(mg_dedup_select(MG_DEDUP_SIM, h, 4, 4, DIM, scratch, sel), 2);
    assert_int_equal(sel[0], 0);
    assert_int_equal(sel[1], 3);
    /* MMR: with k <= 5 the prefill takes the best ones as they are. */
    assert_int_equal(mg_dedup_select(MG_DEDUP_MMR, h, 4, 2, DIM, scratch, sel), 2);
    assert_int_equal(sel[1], 1);
    /* Beyond the prefill, diversity wins over a small relevance gap. */
    rec more[8];
    mg_hit hm[8];
    for (int i = 0; i < 7; i++) {
        make(&more[i], (uint8_t)(10 + i), "apple pie", "food", same);
        hm[i] = hit_of(&more[i], 0.90 - 0.001 * i);
    }
    make(&more[7], 20, "train times", "travel", far);
    hm[7] = hit_of(&more[7], 0.80);
    size_t sel8[8];
    double scratch8[8];
    assert_int_equal(mg_dedup_select(MG_DEDUP_MMR, hm, 8, 6, DIM, scratch8, sel8), 6);
    assert_int_equal(sel8[5], 7);
    assert_int_equal(mg_dedup_select(MG_DEDUP_NO, hm, 8, 6, DIM, scratch8, sel8), 6);
    assert_int_equal(sel8[5], 5);
    for (int i = 0; i < 8; i++)
        free(more[i].buf);
    for (int i = 0; i < 4; i++)
        free(r[i].buf);
    assert_int_equal(mg_dedup_parse("mmr"), MG_DEDUP_MMR);
    assert_int_equal(mg_dedup_parse(NULL), MG_DEDUP_EXACT);
    assert_int_equal(mg_dedup_parse("zzz"), -1);
}

static void test_cosine(void **state)
{
    (void)state;
    float a[4] = {1, 0, 0, 5}, b[4] = {1, 0, 0, -5}, z[4] = {0};
    assert_true(mg_vec_cosine((const uint8_t *)a, (const uint8_t *)b, 3) > 0.999);
    assert_true(mg_vec_cosine((const uint8_t *)a, (const uint8_t *)b, 4) < 0);
    assert_true(mg_vec_cosine((const uint8_t *)a, (const uint8_t *)z, 4) == 0.0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_merge),
        cmocka_unit_test(test_record_readers),
        cmocka_unit_test(test_dedup_modes),
        cmocka_unit_test(test_cosine),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
