/* lib/histogram: bucket layout, accuracy against exact sample quantiles,
 * merge, concurrent recording, msgpack round trip and hostile encodings. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "lib/histogram.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SEED 0x5eed1234abcdULL
#define NSAMPLES 200000

/* ---- seeded samples ---- */

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static double uniform01(uint64_t *s)
{
    return (double)(splitmix64(s) >> 11) * 0x1.0p-53;
}

static double gaussian(uint64_t *s)
{
    double u1 = uniform01(s), u2 = uniform01(s);
    if (u1 < 1e-300)
        u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

static uint64_t clamp_ns(double v)
{
    if (v < 1000.0)
        return 1000; /* 1 us */
    if (v > 6e11)
        return 600000000000ULL; /* 10 min */
    return (uint64_t)v;
}

enum dist { DIST_UNIFORM, DIST_LOGNORMAL, DIST_BIMODAL, DIST_WIDE };

static const char *dist_name[] = {"uniform", "lognormal", "bimodal", "wide"};

static uint64_t sample(enum dist d, uint64_t *s)
{
    switch (d) {
    case DIST_UNIFORM: /* 1 us .. 100 ms */
        return clamp_ns(1e3 + uniform01(s) * (1e8 - 1e3));
    case DIST_LOGNORMAL: /* median 500 us, sigma 1.5 */
        return clamp_ns(5e5 * exp(1.5 * gaussian(s)));
    case DIST_BIMODAL: /* 90 % around 200 us, 10 % around 50 ms */
        if (uniform01(s) < 0.9)
            return clamp_ns(2e5 + 3e4 * gaussian(s));
        return clamp_ns(5e7 + 1e7 * gaussian(s));
    case DIST_WIDE: /* log-uniform over the whole range 1 us .. 10 min */
        return clamp_ns(exp(log(1e3) + uniform01(s) * (log(6e11) - log(1e3))));
    }
    return 0;
}

static int u64_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static void assert_same(const mg_hist *a, const mg_hist *b)
{
    assert_true(mg_hist_count(a) == mg_hist_count(b));
    assert_true(mg_hist_min(a) == mg_hist_min(b));
    assert_true(mg_hist_max(a) == mg_hist_max(b));
    assert_true(mg_hist_sum(a) == mg_hist_sum(b));
    size_t pa = 0, pb = 0;
    mg_hist_bucket ba, bb;
    for (;;) {
        bool more_a = mg_hist_next(a, &pa, &ba);
        bool more_b = mg_hist_next(b, &pb, &bb);
        assert_int_equal(more_a, more_b);
        if (!more_a)
            break;
        assert_true(ba.lo == bb.lo && ba.hi == bb.hi && ba.count == bb.count);
    }
}

/* ---- layout ---- */

static void test_layout(void **state)
{
    (void)state;
    uint64_t prev_hi = 0;
    for (size_t i = 0; i < MG_HIST_BUCKETS; i++) {
        uint64_t lo, hi;
        mg_hist_bucket_range(i, &lo, &hi);
        if (i > 0)
            assert_true(lo == prev_hi + 1); /* contiguous, no gaps */
        assert_true(hi >= lo);
        assert_int_equal(mg_hist_bucket_index(lo), i);
        assert_int_equal(mg_hist_bucket_index(hi), i);
        /* A bucket is at most 1/128 of its lowest value wide. */
        assert_true((hi - lo + 1) * 128 <= (lo > 0 ? lo : 1) || hi == lo);
        prev_hi = hi;
    }
    assert_true(prev_hi == MG_HIST_MAX_VALUE);
    assert_true(MG_HIST_MAX_VALUE >= 600000000000ULL); /* 10 minutes fit */
    assert_int_equal(mg_hist_bucket_index(UINT64_MAX), MG_HIST_BUCKETS - 1);
}

/* ---- accuracy ---- */

static void check_accuracy(enum dist d)
{
    uint64_t seed = SEED + (uint64_t)d;
    uint64_t *values = malloc(NSAMPLES * sizeof *values);
    assert_non_null(values);
    mg_hist *h = mg_hist_new();
    assert_non_null(h);
    uint64_t sum = 0;
    for (size_t i = 0; i < NSAMPLES; i++) {
        values[i] = sample(d, &seed);
        sum += values[i];
        mg_hist_record(h, values[i]);
    }
    qsort(values, NSAMPLES, sizeof *values, u64_cmp);
    assert_true(mg_hist_count(h) == NSAMPLES);
    assert_true(mg_hist_min(h) == values[0]);
    assert_true(mg_hist_max(h) == values[NSAMPLES - 1]);
    assert_true(mg_hist_sum(h) == sum);
    assert_true(fabs(mg_hist_mean(h) - (double)sum / NSAMPLES) < 1e-6 * (double)sum / NSAMPLES);

    static const double qs[] = {0,    1e-5, 0.001, 0.01,  0.1,    0.25,    0.5,
                                0.75, 0.9,  0.99,  0.999, 0.9999, 0.99999, 1};
    size_t nq = sizeof qs / sizeof qs[0];
    uint64_t got[sizeof qs / sizeof qs[0]];
    mg_hist_quantiles(h, qs, nq, got);
    double worst = 0;
    for (size_t i = 0; i < nq; i++) {
        size_t rank = qs[i] <= 0 ? 1 : (size_t)ceil(qs[i] * NSAMPLES);
        if (rank < 1)
            rank = 1;
        if (rank > NSAMPLES)
            rank = NSAMPLES;
        uint64_t exact = values[rank - 1];
        double rel = fabs((double)got[i] - (double)exact) / (double)exact;
        if (rel > worst)
            worst = rel;
        if (rel > 0.01)
            fail_msg("%s: q=%g exact %llu got %llu (%.3f %%), seed %llx", dist_name[d], qs[i],
                     (unsigned long long)exact, (unsigned long long)got[i], rel * 100,
                     (unsigned long long)(SEED + (uint64_t)d));
        assert_true(got[i] == mg_hist_quantile(h, qs[i]));
        if (i > 0)
            assert_true(got[i] >= got[i - 1]);
    }
    /* The documented bound is tighter than the 1 % asked for. */
    assert_true(worst <= 1.0 / 256 + 1e-9);
    assert_true(got[0] == values[0] && got[nq - 1] == values[NSAMPLES - 1]);
    mg_hist_free(h);
    free(values);
}

static void test_accuracy_uniform(void **state)
{
    (void)state;
    check_accuracy(DIST_UNIFORM);
}

static void test_accuracy_lognormal(void **state)
{
    (void)state;
    check_accuracy(DIST_LOGNORMAL);
}

static void test_accuracy_bimodal(void **state)
{
    (void)state;
    check_accuracy(DIST_BIMODAL);
}

static void test_accuracy_wide(void **state)
{
    (void)state;
    check_accuracy(DIST_WIDE);
}

static void test_empty_and_extremes(void **state)
{
    (void)state;
    mg_hist *h = mg_hist_new();
    assert_non_null(h);
    assert_true(mg_hist_count(h) == 0 && mg_hist_min(h) == 0 && mg_hist_max(h) == 0);
    assert_true(mg_hist_quantile(h, 0.5) == 0);
    assert_true(mg_hist_mean(h) == 0.0);
    size_t pos = 0;
    mg_hist_bucket b;
    assert_false(mg_hist_next(h, &pos, &b));

    /* Past the range: counted in the last bucket, max kept exactly. */
    uint64_t huge = MG_HIST_MAX_VALUE * 4;
    mg_hist_record(h, 0);
    mg_hist_record(h, huge);
    assert_true(mg_hist_count(h) == 2);
    assert_true(mg_hist_min(h) == 0);
    assert_true(mg_hist_max(h) == huge);
    assert_true(mg_hist_quantile(h, 1.0) == huge);
    assert_true(mg_hist_quantile(h, 0.0) == 0);
    pos = 0;
    assert_true(mg_hist_next(h, &pos, &b) && b.lo == 0 && b.count == 1);
    assert_true(mg_hist_next(h, &pos, &b) && b.hi == MG_HIST_MAX_VALUE && b.count == 1);
    assert_false(mg_hist_next(h, &pos, &b));

    /* A single value is every quantile. */
    mg_hist_reset(h);
    mg_hist_record_n(h, 123456789, 7);
    assert_true(mg_hist_count(h) == 7);
    assert_true(mg_hist_quantile(h, 0.5) == 123456789);
    assert_true(mg_hist_quantile(h, 0.999) == 123456789);
    mg_hist_free(h);
}

/* Cumulative counts at bucket boundaries are exact. */
static void test_cumulative(void **state)
{
    (void)state;
    uint64_t seed = SEED;
    mg_hist *h = mg_hist_new();
    assert_non_null(h);
    uint64_t *values = malloc(NSAMPLES * sizeof *values);
    assert_non_null(values);
    for (size_t i = 0; i < NSAMPLES; i++) {
        values[i] = sample(DIST_WIDE, &seed);
        mg_hist_record_local(h, values[i]);
    }
    uint64_t bounds[30];
    size_t n = 0;
    for (unsigned j = 8; j < 38; j++)
        bounds[n++] = (UINT64_C(1) << j) - 1;
    uint64_t le[30], total = 0;
    mg_hist_cumulative(h, bounds, n, le, &total);
    assert_true(total == NSAMPLES);
    for (size_t b = 0; b < n; b++) {
        uint64_t exact = 0;
        for (size_t i = 0; i < NSAMPLES; i++)
            exact += values[i] <= bounds[b];
        assert_true(le[b] == exact);
    }
    /* Any bound: the count lies between exact and exact-at-bound*1.008. */
    uint64_t ms[3] = {1000000, 10000000, 1000000000};
    mg_hist_cumulative(h, ms, 3, le, NULL);
    for (size_t b = 0; b < 3; b++) {
        uint64_t exact = 0, upper = 0;
        for (size_t i = 0; i < NSAMPLES; i++) {
            exact += values[i] <= ms[b];
            upper += (double)values[i] <= (double)ms[b] * 1.008;
        }
        assert_true(le[b] >= exact && le[b] <= upper);
    }
    free(values);
    mg_hist_free(h);
}

/* ---- merge ---- */

static void test_merge(void **state)
{
    (void)state;
    uint64_t seed = SEED ^ 0x77;
    mg_hist *all = mg_hist_new(), *merged = mg_hist_new(), *parts[4];
    assert_non_null(all);
    assert_non_null(merged);
    for (int p = 0; p < 4; p++) {
        parts[p] = mg_hist_new();
        assert_non_null(parts[p]);
    }
    for (size_t i = 0; i < NSAMPLES; i++) {
        uint64_t v = sample((enum dist)(i % 4), &seed);
        mg_hist_record(all, v);
        mg_hist_record_local(parts[i % 4], v);
    }
    mg_hist *empty = mg_hist_new();
    assert_non_null(empty);
    mg_hist_merge(merged, empty); /* merging nothing leaves min/max alone */
    assert_true(mg_hist_count(merged) == 0 && mg_hist_max(merged) == 0);
    for (int p = 0; p < 4; p++)
        mg_hist_merge(merged, parts[p]);
    mg_hist_merge(merged, empty);
    assert_same(all, merged);
    static const double qs[] = {0.5, 0.9, 0.99, 0.999};
    for (size_t i = 0; i < 4; i++)
        assert_true(mg_hist_quantile(all, qs[i]) == mg_hist_quantile(merged, qs[i]));
    for (int p = 0; p < 4; p++)
        mg_hist_free(parts[p]);
    mg_hist_free(empty);
    mg_hist_free(all);
    mg_hist_free(merged);
}

/* ---- threads ---- */

#define THREADS 4
#define PER_THREAD 250000

struct worker {
    mg_hist *shared;
    mg_hist *local;
    unsigned id;
};

static uint64_t thread_value(unsigned id, size_t i)
{
    return 1000 + ((uint64_t)id * 7919u + i * 104729u) % 50000000u;
}

static void *record_thread(void *arg)
{
    struct worker *w = arg;
    for (size_t i = 0; i < PER_THREAD; i++) {
        uint64_t v = thread_value(w->id, i);
        mg_hist_record(w->shared, v);
        mg_hist_record_local(w->local, v);
    }
    return NULL;
}

static void test_concurrent_recording(void **state)
{
    (void)state;
    mg_hist *shared = mg_hist_new(), *expect = mg_hist_new(), *merged = mg_hist_new();
    assert_non_null(shared);
    assert_non_null(expect);
    assert_non_null(merged);
    struct worker w[THREADS];
    pthread_t t[THREADS];
    for (unsigned i = 0; i < THREADS; i++) {
        w[i] = (struct worker){shared, mg_hist_new(), i};
        assert_non_null(w[i].local);
        assert_int_equal(pthread_create(&t[i], NULL, record_thread, &w[i]), 0);
    }
    /* Read while they record: counts only grow. */
    uint64_t last = 0;
    for (int k = 0; k < 50; k++) {
        uint64_t c = mg_hist_count(shared);
        assert_true(c >= last);
        last = c;
        (void)mg_hist_quantile(shared, 0.99);
    }
    for (unsigned i = 0; i < THREADS; i++)
        assert_int_equal(pthread_join(t[i], NULL), 0);
    for (unsigned i = 0; i < THREADS; i++)
        for (size_t j = 0; j < PER_THREAD; j++)
            mg_hist_record_local(expect, thread_value(i, j));
    assert_true(mg_hist_count(shared) == (uint64_t)THREADS * PER_THREAD);
    assert_same(shared, expect);
    for (unsigned i = 0; i < THREADS; i++) {
        mg_hist_merge(merged, w[i].local);
        mg_hist_free(w[i].local);
    }
    assert_same(merged, expect);
    mg_hist_free(shared);
    mg_hist_free(expect);
    mg_hist_free(merged);
}

/* ---- encoding ---- */

static void pack(const mg_hist *h, msgpack_sbuffer *sb)
{
    msgpack_packer pk;
    msgpack_sbuffer_init(sb);
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    assert_int_equal(mg_hist_pack(h, &pk), MG_OK);
}

static void test_round_trip(void **state)
{
    (void)state;
    uint64_t seed = SEED ^ 0x99;
    mg_hist *h = mg_hist_new(), *back = mg_hist_new();
    assert_non_null(h);
    assert_non_null(back);
    msgpack_sbuffer sb;
    mg_error err;

    /* Empty. */
    pack(h, &sb);
    mg_hist_record(back, 5); /* replaced by the read */
    mg_mp_reader r;
    mg_mp_reader_init(&r, sb.data, sb.size);
    assert_int_equal(mg_hist_read(&r, back, &err), MG_OK);
    assert_int_equal(mg_mp_remaining(&r), 0);
    assert_same(h, back);
    msgpack_sbuffer_destroy(&sb);

    for (int d = 0; d < 4; d++)
        for (size_t i = 0; i < 50000; i++)
            mg_hist_record(h, sample((enum dist)d, &seed));
    mg_hist_record(h, MG_HIST_MAX_VALUE * 3);
    pack(h, &sb);
    /* Sparse: far smaller than 4352 buckets of 8 bytes. */
    assert_true(sb.size < MG_HIST_BUCKETS * 6);
    mg_mp_reader_init(&r, sb.data, sb.size);
    assert_int_equal(mg_hist_read(&r, back, &err), MG_OK);
    assert_int_equal(mg_mp_remaining(&r), 0);
    assert_same(h, back);
    assert_true(mg_hist_quantile(h, 0.999) == mg_hist_quantile(back, 0.999));
    msgpack_sbuffer_destroy(&sb);
    mg_hist_free(h);
    mg_hist_free(back);
}

/* Refused input leaves the histogram and the reader as they were. */
static void expect_refused(const void *buf, size_t len, int code)
{
    mg_hist *h = mg_hist_new(), *before = mg_hist_new();
    assert_non_null(h);
    assert_non_null(before);
    mg_hist_record(h, 4242);
    mg_hist_record(before, 4242);
    mg_mp_reader r;
    mg_mp_reader_init(&r, buf, len);
    mg_error err;
    mg_error_clear(&err);
    int rc = mg_hist_read(&r, h, &err);
    if (rc != code)
        fail_msg("expected %s, got %s (%s), %zu bytes", mg_errname(code), mg_errname(rc), err.msg,
                 len);
    assert_true(err.msg[0] != '\0');
    assert_true(r.pos == (const uint8_t *)buf);
    assert_same(h, before);
    mg_hist_free(h);
    mg_hist_free(before);
}

static void test_truncated(void **state)
{
    (void)state;
    uint64_t seed = SEED ^ 0x55;
    mg_hist *h = mg_hist_new();
    assert_non_null(h);
    for (size_t i = 0; i < 2000; i++)
        mg_hist_record(h, sample(DIST_BIMODAL, &seed));
    msgpack_sbuffer sb;
    pack(h, &sb);
    for (size_t len = 0; len < sb.size; len++)
        expect_refused(sb.data, len, MG_ECORRUPT);
    msgpack_sbuffer_destroy(&sb);
    mg_hist_free(h);
}

static void test_garbage(void **state)
{
    (void)state;
    uint64_t seed = SEED ^ 0x33;
    mg_hist *h = mg_hist_new();
    assert_non_null(h);
    uint8_t buf[256];
    /* Random bytes never decode to a histogram (or if one ever did, it
     * would have passed every check): mostly the map header is wrong. */
    for (int round = 0; round < 2000; round++) {
        size_t len = (size_t)(splitmix64(&seed) % sizeof buf);
        for (size_t i = 0; i < len; i++)
            buf[i] = (uint8_t)splitmix64(&seed);
        mg_mp_reader r;
        mg_mp_reader_init(&r, buf, len);
        mg_error err;
        int rc = mg_hist_read(&r, h, &err);
        assert_true(rc == MG_ECORRUPT || rc == MG_EVERSION || rc == MG_OK);
        if (rc != MG_OK)
            assert_true(r.pos == buf);
    }
    mg_hist_free(h);
}

/* Builds an encoding field by field; each test breaks one thing. */
struct enc {
    uint64_t v, sub_bits, max_bits, min, max, sum;
    const uint64_t *buckets;
    size_t nbuckets;
    bool dup_key, drop_sum, extra_key, buckets_not_array;
};

static void build(const struct enc *e, msgpack_sbuffer *sb)
{
    msgpack_packer pk;
    msgpack_sbuffer_init(sb);
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk,
                     7 + (e->dup_key ? 1 : 0) - (e->drop_sum ? 1 : 0) + (e->extra_key ? 1 : 0));
    if (e->extra_key) {
        mg_mp_pack_cstr(&pk, "future");
        msgpack_pack_array(&pk, 2);
        msgpack_pack_nil(&pk);
        mg_mp_pack_cstr(&pk, "x");
    }
    mg_mp_pack_cstr(&pk, "v");
    msgpack_pack_uint64(&pk, e->v);
    mg_mp_pack_cstr(&pk, "sub_bits");
    msgpack_pack_uint64(&pk, e->sub_bits);
    mg_mp_pack_cstr(&pk, "max_bits");
    msgpack_pack_uint64(&pk, e->max_bits);
    mg_mp_pack_cstr(&pk, "min");
    msgpack_pack_uint64(&pk, e->min);
    if (e->dup_key) {
        mg_mp_pack_cstr(&pk, "min");
        msgpack_pack_uint64(&pk, e->min);
    }
    mg_mp_pack_cstr(&pk, "max");
    msgpack_pack_uint64(&pk, e->max);
    if (!e->drop_sum) {
        mg_mp_pack_cstr(&pk, "sum");
        msgpack_pack_uint64(&pk, e->sum);
    }
    mg_mp_pack_cstr(&pk, "buckets");
    if (e->buckets_not_array) {
        msgpack_pack_uint64(&pk, 3);
        return;
    }
    msgpack_pack_array(&pk, e->nbuckets);
    for (size_t i = 0; i < e->nbuckets; i++)
        msgpack_pack_uint64(&pk, e->buckets[i]);
}

static int decode(const struct enc *e)
{
    msgpack_sbuffer sb;
    build(e, &sb);
    mg_hist *h = mg_hist_new();
    assert_non_null(h);
    mg_mp_reader r;
    mg_mp_reader_init(&r, sb.data, sb.size);
    mg_error err;
    int rc = mg_hist_read(&r, h, &err);
    if (rc != MG_OK) {
        expect_refused(sb.data, sb.size, rc);
    }
    msgpack_sbuffer_destroy(&sb);
    mg_hist_free(h);
    return rc;
}

static void test_crafted(void **state)
{
    (void)state;
    /* 1000 ns three times and 2000 ns once. */
    size_t i1 = mg_hist_bucket_index(1000), i2 = mg_hist_bucket_index(2000);
    uint64_t ok_b[] = {i1, 3, i2 - i1, 1};
    struct enc good = {1, 7, 40, 1000, 2000, 5000, ok_b, 4, false, false, false, false};
    assert_int_equal(decode(&good), MG_OK);

    struct enc e = good;
    e.extra_key = true; /* unknown keys are skipped */
    assert_int_equal(decode(&e), MG_OK);

    e = good;
    e.v = 2;
    assert_int_equal(decode(&e), MG_EVERSION);
    e = good;
    e.sub_bits = 6;
    assert_int_equal(decode(&e), MG_EVERSION);
    e = good;
    e.max_bits = 41;
    assert_int_equal(decode(&e), MG_EVERSION);
    e = good;
    e.dup_key = true;
    assert_int_equal(decode(&e), MG_ECORRUPT);
    e = good;
    e.drop_sum = true;
    assert_int_equal(decode(&e), MG_ECORRUPT);
    e = good;
    e.buckets_not_array = true;
    assert_int_equal(decode(&e), MG_ECORRUPT);

    uint64_t zero_gap[] = {i1, 3, 0, 1};
    e = good;
    e.buckets = zero_gap;
    assert_int_equal(decode(&e), MG_ECORRUPT);
    uint64_t zero_count[] = {i1, 0, i2 - i1, 1};
    e = good;
    e.buckets = zero_count;
    assert_int_equal(decode(&e), MG_ECORRUPT);
    uint64_t past_end[] = {i1, 3, MG_HIST_BUCKETS - i1, 1};
    e = good;
    e.buckets = past_end;
    assert_int_equal(decode(&e), MG_ECORRUPT);
    uint64_t huge_gap[] = {i1, 3, UINT64_MAX, 1};
    e = good;
    e.buckets = huge_gap;
    assert_int_equal(decode(&e), MG_ECORRUPT);
    uint64_t overflow[] = {i1, UINT64_MAX, i2 - i1, 2};
    e = good;
    e.buckets = overflow;
    assert_int_equal(decode(&e), MG_ECORRUPT);
    e = good;
    e.nbuckets = 3; /* odd */
    assert_int_equal(decode(&e), MG_ECORRUPT);

    e = good;
    e.min = 900; /* not in the first bucket */
    assert_int_equal(decode(&e), MG_ECORRUPT);
    e = good;
    e.max = 5000; /* not in the last bucket */
    assert_int_equal(decode(&e), MG_ECORRUPT);
    e = good;
    e.sum = 3999; /* below 4 x min */
    assert_int_equal(decode(&e), MG_ECORRUPT);
    e = good;
    e.sum = 8001; /* above 4 x max */
    assert_int_equal(decode(&e), MG_ECORRUPT);
    e = good;
    e.nbuckets = 0; /* empty, but min/max/sum say otherwise */
    assert_int_equal(decode(&e), MG_ECORRUPT);
    e = (struct enc){1, 7, 40, 0, 0, 0, NULL, 0, false, false, false, false};
    assert_int_equal(decode(&e), MG_OK);

    /* A container header that claims more than the input holds. */
    static const uint8_t lying[] = {0xdf, 0xff, 0xff, 0xff, 0xff, 0xa1, 'v', 0x01};
    expect_refused(lying, sizeof lying, MG_ECORRUPT);
    static const uint8_t not_map[] = {0x93, 0x01, 0x02, 0x03};
    expect_refused(not_map, sizeof not_map, MG_ECORRUPT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layout),
        cmocka_unit_test(test_accuracy_uniform),
        cmocka_unit_test(test_accuracy_lognormal),
        cmocka_unit_test(test_accuracy_bimodal),
        cmocka_unit_test(test_accuracy_wide),
        cmocka_unit_test(test_empty_and_extremes),
        cmocka_unit_test(test_cumulative),
        cmocka_unit_test(test_merge),
        cmocka_unit_test(test_concurrent_recording),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_garbage),
        cmocka_unit_test(test_crafted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
