#include "histogram.h"

#include <assert.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* Bucket counts first; the summary fields sit on a cache line of their own so
 * that recorders updating `sum` do not also invalidate the busiest counts. */
struct mg_hist {
    _Atomic uint64_t counts[MG_HIST_BUCKETS];
    _Alignas(64) _Atomic uint64_t sum;
    _Atomic uint64_t min; /* UINT64_MAX when empty */
    _Atomic uint64_t max;
};

size_t mg_hist_bucket_index(uint64_t ns)
{
    if (ns > MG_HIST_MAX_VALUE)
        ns = MG_HIST_MAX_VALUE;
    if (ns < 2 * MG_HIST_SUB_COUNT)
        return (size_t)ns;
    /* ns in [2^m, 2^(m+1)), m >= 8: shift so the top 8 bits remain, which
     * lie in [128, 256); the octave adds 128 indices per step. */
    unsigned m = 63u - (unsigned)__builtin_clzll(ns);
    unsigned shift = m - MG_HIST_SUB_BITS;
    return (size_t)shift * MG_HIST_SUB_COUNT + (size_t)(ns >> shift);
}

void mg_hist_bucket_range(size_t index, uint64_t *lo, uint64_t *hi)
{
    assert(index < MG_HIST_BUCKETS);
    if (index < 2 * MG_HIST_SUB_COUNT) {
        *lo = *hi = index;
        return;
    }
    unsigned shift = (unsigned)(index / MG_HIST_SUB_COUNT) - 1u;
    uint64_t top = (uint64_t)(index % MG_HIST_SUB_COUNT) + MG_HIST_SUB_COUNT;
    *lo = top << shift;
    *hi = *lo + ((UINT64_C(1) << shift) - 1);
}

/* The value a bucket reads back as: its midpoint (rounded down). */
static uint64_t bucket_mid(size_t index)
{
    uint64_t lo, hi;
    mg_hist_bucket_range(index, &lo, &hi);
    return lo + (hi - lo) / 2;
}

mg_hist *mg_hist_new(void)
{
    mg_hist *h = aligned_alloc(64, sizeof *h);
    if (h == NULL)
        return NULL;
    mg_hist_reset(h);
    return h;
}

void mg_hist_free(mg_hist *h)
{
    free(h);
}

void mg_hist_reset(mg_hist *h)
{
    for (size_t i = 0; i < MG_HIST_BUCKETS; i++)
        atomic_store_explicit(&h->counts[i], 0, memory_order_relaxed);
    atomic_store_explicit(&h->sum, 0, memory_order_relaxed);
    atomic_store_explicit(&h->min, UINT64_MAX, memory_order_relaxed);
    atomic_store_explicit(&h->max, 0, memory_order_relaxed);
}

/* min/max: a plain load settles almost every call; the CAS loop runs only
 * when the value is a new extreme. */
static void update_min(mg_hist *h, uint64_t v)
{
    uint64_t cur = atomic_load_explicit(&h->min, memory_order_relaxed);
    while (v < cur && !atomic_compare_exchange_weak_explicit(&h->min, &cur, v, memory_order_relaxed,
                                                             memory_order_relaxed))
        ;
}

static void update_max(mg_hist *h, uint64_t v)
{
    uint64_t cur = atomic_load_explicit(&h->max, memory_order_relaxed);
    while (v > cur && !atomic_compare_exchange_weak_explicit(&h->max, &cur, v, memory_order_relaxed,
                                                             memory_order_relaxed))
        ;
}

void mg_hist_record_n(mg_hist *h, uint64_t ns, uint64_t n)
{
    if (n == 0)
        return;
    update_min(h, ns);
    update_max(h, ns);
    atomic_fetch_add_explicit(&h->sum, ns * n, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->counts[mg_hist_bucket_index(ns)], n, memory_order_relaxed);
}

void mg_hist_record(mg_hist *h, uint64_t ns)
{
    mg_hist_record_n(h, ns, 1);
}

void mg_hist_record_local(mg_hist *h, uint64_t ns)
{
    /* Relaxed loads and stores compile to plain moves: no locked
     * instruction, and readers on other threads never see a torn value. */
    if (ns < atomic_load_explicit(&h->min, memory_order_relaxed))
        atomic_store_explicit(&h->min, ns, memory_order_relaxed);
    if (ns > atomic_load_explicit(&h->max, memory_order_relaxed))
        atomic_store_explicit(&h->max, ns, memory_order_relaxed);
    atomic_store_explicit(&h->sum, atomic_load_explicit(&h->sum, memory_order_relaxed) + ns,
                          memory_order_relaxed);
    _Atomic uint64_t *c = &h->counts[mg_hist_bucket_index(ns)];
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1,
                          memory_order_relaxed);
}

void mg_hist_merge(mg_hist *dst, const mg_hist *src)
{
    assert(dst != src);
    uint64_t any = 0;
    for (size_t i = 0; i < MG_HIST_BUCKETS; i++) {
        uint64_t c = atomic_load_explicit(&src->counts[i], memory_order_relaxed);
        if (c != 0) {
            atomic_fetch_add_explicit(&dst->counts[i], c, memory_order_relaxed);
            any += c;
        }
    }
    if (any == 0)
        return;
    atomic_fetch_add_explicit(&dst->sum, atomic_load_explicit(&src->sum, memory_order_relaxed),
                              memory_order_relaxed);
    update_min(dst, atomic_load_explicit(&src->min, memory_order_relaxed));
    update_max(dst, atomic_load_explicit(&src->max, memory_order_relaxed));
}

/* One consistent reading: the counts copied once, and min/max made to agree
 * with them. A recorder updates min/max before the bucket, but with relaxed
 * ordering a reader may still see a bucket count before the extreme that goes
 * with it, so an extreme outside the first/last non-empty bucket is replaced
 * by that bucket's bound. */
typedef struct hist_view {
    uint64_t counts[MG_HIST_BUCKETS];
    uint64_t total;
    size_t first, last; /* non-empty bucket range, valid when total > 0 */
    uint64_t min, max, sum;
} hist_view;

static void view_take(const mg_hist *h, hist_view *v)
{
    v->total = 0;
    v->first = MG_HIST_BUCKETS;
    v->last = 0;
    for (size_t i = 0; i < MG_HIST_BUCKETS; i++) {
        uint64_t c = atomic_load_explicit(&h->counts[i], memory_order_relaxed);
        v->counts[i] = c;
        if (c != 0) {
            v->total += c;
            if (v->first == MG_HIST_BUCKETS)
                v->first = i;
            v->last = i;
        }
    }
    v->sum = atomic_load_explicit(&h->sum, memory_order_relaxed);
    v->min = atomic_load_explicit(&h->min, memory_order_relaxed);
    v->max = atomic_load_explicit(&h->max, memory_order_relaxed);
    if (v->total == 0) {
        v->min = v->max = v->sum = 0;
        return;
    }
    uint64_t lo, hi;
    if (mg_hist_bucket_index(v->min) != v->first) {
        mg_hist_bucket_range(v->first, &lo, &hi);
        v->min = lo;
    }
    if (mg_hist_bucket_index(v->max) != v->last) {
        mg_hist_bucket_range(v->last, &lo, &hi);
        v->max = hi;
    }
}

/* The totals alone, without copying the buckets. */
uint64_t mg_hist_count(const mg_hist *h)
{
    uint64_t total = 0;
    for (size_t i = 0; i < MG_HIST_BUCKETS; i++)
        total += atomic_load_explicit(&h->counts[i], memory_order_relaxed);
    return total;
}

uint64_t mg_hist_min(const mg_hist *h)
{
    uint64_t v = atomic_load_explicit(&h->min, memory_order_relaxed);
    return v == UINT64_MAX ? 0 : v;
}

uint64_t mg_hist_max(const mg_hist *h)
{
    return atomic_load_explicit(&h->max, memory_order_relaxed);
}

uint64_t mg_hist_sum(const mg_hist *h)
{
    return atomic_load_explicit(&h->sum, memory_order_relaxed);
}

double mg_hist_mean(const mg_hist *h)
{
    uint64_t n = mg_hist_count(h);
    return n ? (double)mg_hist_sum(h) / (double)n : 0.0;
}

static uint64_t rank_of(double q, uint64_t total)
{
    if (!(q > 0.0)) /* also NaN */
        return 1;
    if (q >= 1.0)
        return total;
    double r = ceil(q * (double)total);
    if (r < 1.0)
        return 1;
    if (r >= (double)total)
        return total;
    return (uint64_t)r;
}

static uint64_t view_value_at_rank(const hist_view *v, uint64_t rank, size_t *pos, uint64_t *cum)
{
    while (*pos < MG_HIST_BUCKETS) {
        if (*cum + v->counts[*pos] >= rank)
            break;
        *cum += v->counts[*pos];
        (*pos)++;
    }
    if (rank >= v->total)
        return v->max; /* the largest value is known exactly */
    if (rank <= 1)
        return v->min;
    uint64_t value = bucket_mid(*pos);
    if (value < v->min)
        value = v->min;
    if (value > v->max)
        value = v->max;
    return value;
}

void mg_hist_quantiles(const mg_hist *h, const double *qs, size_t n, uint64_t *out)
{
    hist_view *v = malloc(sizeof *v);
    if (v == NULL) { /* out of memory: no figures rather than wrong ones */
        for (size_t i = 0; i < n; i++)
            out[i] = 0;
        return;
    }
    view_take(h, v);
    size_t pos = 0;
    uint64_t cum = 0;
    for (size_t i = 0; i < n; i++) {
        if (v->total == 0) {
            out[i] = 0;
            continue;
        }
        uint64_t rank = rank_of(qs[i], v->total);
        if (i > 0 && qs[i] < qs[i - 1]) { /* not ascending: start over */
            pos = 0;
            cum = 0;
        }
        out[i] = view_value_at_rank(v, rank, &pos, &cum);
    }
    free(v);
}

uint64_t mg_hist_quantile(const mg_hist *h, double q)
{
    uint64_t out;
    mg_hist_quantiles(h, &q, 1, &out);
    return out;
}

bool mg_hist_next(const mg_hist *h, size_t *pos, mg_hist_bucket *out)
{
    for (size_t i = *pos; i < MG_HIST_BUCKETS; i++) {
        uint64_t c = atomic_load_explicit(&h->counts[i], memory_order_relaxed);
        if (c == 0)
            continue;
        mg_hist_bucket_range(i, &out->lo, &out->hi);
        out->count = c;
        *pos = i + 1;
        return true;
    }
    *pos = MG_HIST_BUCKETS;
    return false;
}

void mg_hist_cumulative(const mg_hist *h, const uint64_t *bounds, size_t n, uint64_t *le,
                        uint64_t *total)
{
    uint64_t cum = 0;
    size_t b = 0;
    for (size_t i = 0; i < MG_HIST_BUCKETS; i++) {
        uint64_t c = atomic_load_explicit(&h->counts[i], memory_order_relaxed);
        if (c == 0)
            continue;
        uint64_t lo, hi;
        mg_hist_bucket_range(i, &lo, &hi);
        while (b < n && bounds[b] < lo)
            le[b++] = cum;
        cum += c;
    }
    while (b < n)
        le[b++] = cum;
    if (total != NULL)
        *total = cum;
}

/* ---- msgpack ---------------------------------------------------------- */

int mg_hist_pack(const mg_hist *h, msgpack_packer *pk)
{
    hist_view *v = malloc(sizeof *v);
    if (v == NULL)
        return MG_ENOMEM;
    view_take(h, v);
    size_t nonempty = 0;
    for (size_t i = 0; i < MG_HIST_BUCKETS; i++)
        nonempty += v->counts[i] != 0;
    int rc = 0;
    rc |= msgpack_pack_map(pk, 7);
    rc |= mg_mp_pack_cstr(pk, "v");
    rc |= msgpack_pack_uint32(pk, MG_HIST_FORMAT);
    rc |= mg_mp_pack_cstr(pk, "sub_bits");
    rc |= msgpack_pack_uint32(pk, MG_HIST_SUB_BITS);
    rc |= mg_mp_pack_cstr(pk, "max_bits");
    rc |= msgpack_pack_uint32(pk, MG_HIST_MAX_BITS);
    rc |= mg_mp_pack_cstr(pk, "min");
    rc |= msgpack_pack_uint64(pk, v->min);
    rc |= mg_mp_pack_cstr(pk, "max");
    rc |= msgpack_pack_uint64(pk, v->max);
    rc |= mg_mp_pack_cstr(pk, "sum");
    rc |= msgpack_pack_uint64(pk, v->sum);
    rc |= mg_mp_pack_cstr(pk, "buckets");
    rc |= msgpack_pack_array(pk, 2 * nonempty);
    size_t prev = 0;
    for (size_t i = 0; i < MG_HIST_BUCKETS && rc == 0; i++) {
        if (v->counts[i] == 0)
            continue;
        rc |= msgpack_pack_uint64(pk, (uint64_t)(i - prev));
        rc |= msgpack_pack_uint64(pk, v->counts[i]);
        prev = i;
    }
    free(v);
    return rc == 0 ? MG_OK : MG_ENOMEM;
}

/* What a validated encoding holds. Buckets are applied from the reader in a
 * second pass, so only the summary is kept here. */
typedef struct hist_header {
    uint64_t min, max, sum;
    mg_mp_reader buckets; /* positioned at the buckets array */
} hist_header;

enum {
    KEY_V = 1 << 0,
    KEY_SUB_BITS = 1 << 1,
    KEY_MAX_BITS = 1 << 2,
    KEY_MIN = 1 << 3,
    KEY_MAX = 1 << 4,
    KEY_SUM = 1 << 5,
    KEY_BUCKETS = 1 << 6,
    KEYS_ALL = (1 << 7) - 1,
};

static int key_of(const char *s, uint32_t len)
{
    static const struct {
        const char *name;
        int key;
    } keys[] = {
        {"v", KEY_V},     {"sub_bits", KEY_SUB_BITS}, {"max_bits", KEY_MAX_BITS}, {"min", KEY_MIN},
        {"max", KEY_MAX}, {"sum", KEY_SUM},           {"buckets", KEY_BUCKETS}};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        if (strlen(keys[i].name) == len && memcmp(keys[i].name, s, len) == 0)
            return keys[i].key;
    return 0;
}

/* Walks the buckets array; when `into` is non-NULL, adds the counts to it
 * (the walk has been validated before). Reports the total and the first and
 * last indices. */
static int walk_buckets(mg_mp_reader *r, mg_hist *into, uint64_t *total, size_t *first,
                        size_t *last, mg_error *err)
{
    uint32_t n;
    if (mg_mp_read_array(r, &n) != MG_OK)
        return mg_error_set(err, MG_ECORRUPT, "histogram: buckets is not an array");
    if (n % 2 != 0 || n / 2 > MG_HIST_BUCKETS)
        return mg_error_set(err, MG_ECORRUPT, "histogram: buckets has %u entries", n);
    uint64_t sum = 0;
    size_t index = 0;
    for (uint32_t i = 0; i < n / 2; i++) {
        uint64_t gap, count;
        if (mg_mp_read_u64(r, &gap) != MG_OK || mg_mp_read_u64(r, &count) != MG_OK)
            return mg_error_set(err, MG_ECORRUPT, "histogram: bucket %u is not two integers", i);
        if ((i > 0 && gap == 0) || gap >= MG_HIST_BUCKETS ||
            (uint64_t)index + gap >= MG_HIST_BUCKETS)
            return mg_error_set(err, MG_ECORRUPT, "histogram: bucket %u: bad index gap %llu", i,
                                (unsigned long long)gap);
        if (count == 0)
            return mg_error_set(err, MG_ECORRUPT, "histogram: bucket %u has count 0", i);
        if (__builtin_add_overflow(sum, count, &sum))
            return mg_error_set(err, MG_ECORRUPT, "histogram: total count overflows");
        index += (size_t)gap;
        if (i == 0)
            *first = index;
        *last = index;
        if (into != NULL)
            atomic_store_explicit(&into->counts[index], count, memory_order_relaxed);
    }
    *total = sum;
    return MG_OK;
}

static int read_header(mg_mp_reader *r, hist_header *hd, mg_error *err)
{
    uint32_t n;
    if (mg_mp_read_map(r, &n) != MG_OK)
        return mg_error_set(err, MG_ECORRUPT, "histogram: not a msgpack map");
    int seen = 0;
    uint64_t version = 0, sub_bits = 0, max_bits = 0;
    for (uint32_t i = 0; i < n; i++) {
        const char *k;
        uint32_t klen;
        if (mg_mp_read_str(r, &k, &klen) != MG_OK)
            return mg_error_set(err, MG_ECORRUPT, "histogram: map key is not a string");
        int key = key_of(k, klen);
        if (key == 0) {
            if (mg_mp_skip(r) != MG_OK)
                return mg_error_set(err, MG_ECORRUPT, "histogram: malformed value");
            continue;
        }
        if (seen & key)
            return mg_error_set(err, MG_ECORRUPT, "histogram: key %.*s repeated", (int)klen, k);
        seen |= key;
        int rc = MG_OK;
        switch (key) {
        case KEY_V:
            rc = mg_mp_read_u64(r, &version);
            break;
        case KEY_SUB_BITS:
            rc = mg_mp_read_u64(r, &sub_bits);
            break;
        case KEY_MAX_BITS:
            rc = mg_mp_read_u64(r, &max_bits);
            break;
        case KEY_MIN:
            rc = mg_mp_read_u64(r, &hd->min);
            break;
        case KEY_MAX:
            rc = mg_mp_read_u64(r, &hd->max);
            break;
        case KEY_SUM:
            rc = mg_mp_read_u64(r, &hd->sum);
            break;
        case KEY_BUCKETS:
            hd->buckets = *r;
            rc = mg_mp_skip(r);
            break;
        }
        if (rc != MG_OK)
            return mg_error_set(err, MG_ECORRUPT, "histogram: bad value for %.*s", (int)klen, k);
    }
    if (seen != KEYS_ALL)
        return mg_error_set(err, MG_ECORRUPT, "histogram: required keys missing");
    if (version != MG_HIST_FORMAT)
        return mg_error_set(err, MG_EVERSION, "histogram: format %llu, this build reads %u",
                            (unsigned long long)version, MG_HIST_FORMAT);
    if (sub_bits != MG_HIST_SUB_BITS || max_bits != MG_HIST_MAX_BITS)
        return mg_error_set(err, MG_EVERSION,
                            "histogram: layout %llu/%llu bits, this build uses %u/%u",
                            (unsigned long long)sub_bits, (unsigned long long)max_bits,
                            MG_HIST_SUB_BITS, MG_HIST_MAX_BITS);
    return MG_OK;
}

/* The summary must agree with the buckets: min and max in the first and last
 * non-empty buckets, and the mean between them. */
static int check_summary(const hist_header *hd, uint64_t total, size_t first, size_t last,
                         mg_error *err)
{
    if (total == 0) {
        if (hd->min != 0 || hd->max != 0 || hd->sum != 0)
            return mg_error_set(err, MG_ECORRUPT, "histogram: empty but min/max/sum not 0");
        return MG_OK;
    }
    if (hd->min > hd->max || mg_hist_bucket_index(hd->min) != first ||
        mg_hist_bucket_index(hd->max) != last)
        return mg_error_set(err, MG_ECORRUPT, "histogram: min/max do not match the buckets");
    uint64_t lowest, highest;
    bool low_overflows = __builtin_mul_overflow(hd->min, total, &lowest);
    bool high_overflows = __builtin_mul_overflow(hd->max, total, &highest);
    if (low_overflows || hd->sum < lowest || (!high_overflows && hd->sum > highest))
        return mg_error_set(err, MG_ECORRUPT, "histogram: sum does not fit count, min and max");
    return MG_OK;
}

int mg_hist_read(mg_mp_reader *r, mg_hist *h, mg_error *err)
{
    mg_mp_reader cur = *r;
    hist_header hd = {0};
    int rc = read_header(&cur, &hd, err);
    if (rc != MG_OK)
        return rc;
    uint64_t total = 0;
    size_t first = 0, last = 0;
    mg_mp_reader walk = hd.buckets;
    rc = walk_buckets(&walk, NULL, &total, &first, &last, err);
    if (rc != MG_OK)
        return rc;
    rc = check_summary(&hd, total, first, last, err);
    if (rc != MG_OK)
        return rc;

    /* Validated: now apply. */
    mg_hist_reset(h);
    walk = hd.buckets;
    rc = walk_buckets(&walk, h, &total, &first, &last, err);
    assert(rc == MG_OK);
    if (total > 0) {
        atomic_store_explicit(&h->min, hd.min, memory_order_relaxed);
        atomic_store_explicit(&h->max, hd.max, memory_order_relaxed);
        atomic_store_explicit(&h->sum, hd.sum, memory_order_relaxed);
    }
    *r = cur;
    return MG_OK;
}
