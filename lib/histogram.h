/*
 * Latency histograms (DESIGN §11): HdrHistogram-style log-linear buckets.
 *
 * Values are unsigned nanoseconds. Every power of two from 128 ns up is cut
 * into MG_HIST_SUB_COUNT (128) equal buckets, and values below 256 ns each
 * have a bucket of their own, so a bucket is never wider than 1/128 of its
 * lowest value: a value read back from a bucket (its midpoint) is within
 * 0.4 % of every value recorded in it. The range is 0 to MG_HIST_MAX_VALUE
 * (2^40 - 1 ns, about 18.3 minutes); larger values are counted in the last
 * bucket (min, max and sum still take them as they are). 4,352 buckets,
 * 34 KiB per histogram.
 *
 * Threads: mg_hist_record and mg_hist_merge (into the destination) may run
 * from any number of threads at once on one histogram; each is a handful of
 * relaxed atomic operations, no lock. mg_hist_record_local is cheaper (no
 * locked instruction) but allows one writing thread at a time; it is meant
 * for per-thread histograms that are merged later. Every reader (count,
 * quantile, next, pack, merge from it) may run while others record; it sees
 * each recorded value either whole or not at all in the bucket counts, and
 * its figures are taken from one pass over the buckets. mg_hist_reset and
 * mg_hist_read must not run while others record into the same histogram.
 *
 * Encoding: a msgpack map (mg_hist_pack), sparse: only non-empty buckets.
 */
#ifndef MG_HISTOGRAM_H
#define MG_HISTOGRAM_H

#include "error.h"
#include "mp.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MG_HIST_SUB_BITS 7
#define MG_HIST_SUB_COUNT (1u << MG_HIST_SUB_BITS)
#define MG_HIST_MAX_BITS 40
#define MG_HIST_MAX_VALUE ((UINT64_C(1) << MG_HIST_MAX_BITS) - 1)
#define MG_HIST_BUCKETS ((MG_HIST_MAX_BITS - MG_HIST_SUB_BITS + 1) * MG_HIST_SUB_COUNT)
/* Version of the msgpack encoding. */
#define MG_HIST_FORMAT 1

typedef struct mg_hist mg_hist;

/* One bucket: the values lo..hi (inclusive) and how many were recorded. */
typedef struct mg_hist_bucket {
    uint64_t lo;
    uint64_t hi;
    uint64_t count;
} mg_hist_bucket;

/* A new empty histogram (free with mg_hist_free), or NULL when out of memory. */
mg_hist *mg_hist_new(void);

/* Frees; NULL is a no-op. */
void mg_hist_free(mg_hist *h);

/* Records one value (ns). Any number of threads at once. */
void mg_hist_record(mg_hist *h, uint64_t ns);

/* Records `n` occurrences of one value. Any number of threads at once. */
void mg_hist_record_n(mg_hist *h, uint64_t ns, uint64_t n);

/* Records one value when this thread is the histogram's only writer (readers
 * may still read it meanwhile). Mixing with mg_hist_record from other
 * threads loses counts. */
void mg_hist_record_local(mg_hist *h, uint64_t ns);

/* Adds every value of src into dst (src unchanged; src == dst is refused as a
 * programmer error). Other threads may record into dst, and into src, while
 * this runs. */
void mg_hist_merge(mg_hist *dst, const mg_hist *src);

/* Empties the histogram. No other thread may write it meanwhile. */
void mg_hist_reset(mg_hist *h);

/* Number of values recorded. */
uint64_t mg_hist_count(const mg_hist *h);

/* Smallest and largest value recorded, exactly (0 when empty). */
uint64_t mg_hist_min(const mg_hist *h);
uint64_t mg_hist_max(const mg_hist *h);

/* Sum of the values recorded (wraps past 2^64 ns, about 584 years). */
uint64_t mg_hist_sum(const mg_hist *h);

/* Mean value, 0 when empty. */
double mg_hist_mean(const mg_hist *h);

/* The value at quantile q (0..1, clamped): the recorded value of rank
 * ceil(q * count) (rank 1 for q = 0) in ascending order, read back as the
 * midpoint of its bucket and clamped to [min, max]; so q = 0 gives min and
 * q = 1 gives max exactly, and any other q is within 0.4 % of the exact
 * sample quantile. 0 when empty. Takes a consistent copy of the counts
 * (34 KiB from the heap); should that allocation fail, answers 0. */
uint64_t mg_hist_quantile(const mg_hist *h, double q);

/* Several quantiles in one pass: qs ascending, out[i] as mg_hist_quantile(qs[i]). */
void mg_hist_quantiles(const mg_hist *h, const double *qs, size_t n, uint64_t *out);

/* Iterates over the non-empty buckets in ascending order: start with
 * *pos = 0; each call fills *out and returns true, or returns false when no
 * bucket is left. */
bool mg_hist_next(const mg_hist *h, size_t *pos, mg_hist_bucket *out);

/* Cumulative counts at chosen boundaries, as Prometheus histograms want them:
 * le[i] = number of values in buckets whose lowest value is <= bounds[i]
 * (bounds ascending, in ns), *total = all values, from the same pass. Exact
 * when bounds[i] + 1 starts a bucket (mg_hist_bucket_range; e.g. any bound
 * below 256 ns, or 2^j - 1); otherwise the bucket holding
 * bounds[i] counts whole, which may count values up to 0.8 % above the bound.
 * total may be NULL. */
void mg_hist_cumulative(const mg_hist *h, const uint64_t *bounds, size_t n, uint64_t *le,
                        uint64_t *total);

/* Bucket layout, for exporters: the index of the bucket holding `ns`, and the
 * range of bucket `index` (< MG_HIST_BUCKETS). */
size_t mg_hist_bucket_index(uint64_t ns);
void mg_hist_bucket_range(size_t index, uint64_t *lo, uint64_t *hi);

/* Appends the histogram to pk as one msgpack map:
 *   {"v": 1, "sub_bits": 7, "max_bits": 40, "min": u, "max": u, "sum": u,
 *    "buckets": [gap, count, gap, count, ...]}
 * where each non-empty bucket's index is the previous one's plus gap (the
 * first: gap itself) and count >= 1. Returns MG_OK or MG_ENOMEM. */
int mg_hist_pack(const mg_hist *h, msgpack_packer *pk);

/* Reads one encoded histogram into h, replacing its contents. Nothing is
 * trusted: counts, indices, gaps, min/max against the buckets and the sum
 * against count, min and max are checked before h is touched. On error h and
 * the reader are left as they were; MG_ECORRUPT for malformed input,
 * MG_EVERSION for another format version or bucket layout. Unknown map keys
 * are skipped. No other thread may write h meanwhile. */
int mg_hist_read(mg_mp_reader *r, mg_hist *h, mg_error *err);

#endif
