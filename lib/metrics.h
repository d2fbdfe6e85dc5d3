/*
 * A metrics registry (DESIGN §11): latency histograms (lib/histogram.h),
 * counters and gauges, each a *series* — a metric family name plus labels
 * fixed when the series is registered (endpoint, stage, op, status, ...).
 *
 * Recording is what runs on every request, so it takes no lock and
 * allocates nothing: a series is registered once, at start-up, and the
 * caller keeps the pointer it got; recording is then mg_hist_record (a
 * handful of relaxed atomics) or mg_counter_add (one atomic add).
 *
 * A registry renders as Prometheus text (exposition format 0.0.4), and
 * encodes to / decodes from msgpack so that a process can ship its whole
 * registry to another (the node's STATS op, lib/wire.h), which merges
 * registries (histograms merged bucket by bucket, counters and gauges
 * added) or renders several side by side, each with a label of its own
 * (node="2").
 *
 * Threads: registering, rendering, packing, merging and walking take the
 * registry's mutex, so they may run at any time from any thread; recording
 * into a series never does. A series lives as long as its registry.
 */
#ifndef MG_METRICS_H
#define MG_METRICS_H

#include "error.h"
#include "histogram.h"
#include "mp.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Version of the msgpack encoding. */
#define MG_METRICS_FORMAT 1
/* Limits, checked at registration and when decoding. */
#define MG_METRICS_LABELS_MAX 4    /* labels per series */
#define MG_METRICS_NAME_MAX 128    /* bytes of a family or label name */
#define MG_METRICS_VALUE_MAX 256   /* bytes of a label value */
#define MG_METRICS_HELP_MAX 512    /* bytes of a help text */
#define MG_METRICS_SERIES_MAX 4096 /* series in one decoded registry */
#define MG_METRICS_HISTS_MAX 256   /* histogram series in one decoded registry */

enum mg_metric_type {
    MG_METRIC_COUNTER = 1, /* only goes up; rendered as <name>_total */
    MG_METRIC_GAUGE,       /* a value set from time to time */
    MG_METRIC_HISTOGRAM,   /* latencies in ns, rendered in seconds */
};

/* Registration flags. */
enum {
    /* Rendered and packed only once it is not zero (a counter nobody has
     * touched, a histogram with no value). For label combinations that are
     * possible but rare, such as an error status per endpoint: Prometheus
     * client libraries create those on first use, which reads the same. */
    MG_METRIC_SPARSE = 1u << 0,
};

typedef struct mg_counter {
    _Atomic uint64_t value;
} mg_counter;

typedef struct mg_gauge {
    _Atomic int64_t value;
} mg_gauge;

static inline void mg_counter_add(mg_counter *c, uint64_t n)
{
    atomic_fetch_add_explicit(&c->value, n, memory_order_relaxed);
}

static inline void mg_counter_inc(mg_counter *c)
{
    mg_counter_add(c, 1);
}

static inline uint64_t mg_counter_get(const mg_counter *c)
{
    return atomic_load_explicit(&c->value, memory_order_relaxed);
}

static inline void mg_gauge_set(mg_gauge *g, int64_t v)
{
    atomic_store_explicit(&g->value, v, memory_order_relaxed);
}

static inline void mg_gauge_add(mg_gauge *g, int64_t d)
{
    atomic_fetch_add_explicit(&g->value, d, memory_order_relaxed);
}

static inline int64_t mg_gauge_get(const mg_gauge *g)
{
    return atomic_load_explicit(&g->value, memory_order_relaxed);
}

typedef struct mg_metrics mg_metrics;

/* A new empty registry (free with mg_metrics_free), or NULL when out of
 * memory. */
mg_metrics *mg_metrics_new(void);

/* Frees the registry and every series in it; NULL is a no-op. No thread may
 * record into its series any more. */
void mg_metrics_free(mg_metrics *m);

/* ---- registration ------------------------------------------------------- */

/* Registers a series and returns it; it lives as long as the registry.
 *
 * name:   the family, [a-zA-Z_:][a-zA-Z0-9_:]* (a counter's without "_total":
 *         it is added when rendering).
 * help:   one line saying what it measures (the first registration of a
 *         family sets it).
 * labels: NULL, or a NULL-terminated list of key, value, key, value, ... (at
 *         most MG_METRICS_LABELS_MAX pairs; keys are names as above, not
 *         "le" and not starting with "__"; values any UTF-8 text). Copied.
 * flags:  MG_METRIC_SPARSE or 0.
 *
 * Registering the same name and labels again returns the same series. A name
 * already registered with another type, or a bad name, label or help, is a
 * programmer error: NULL (with a log line). NULL when out of memory. */
mg_hist *mg_metrics_histogram(mg_metrics *m, const char *name, const char *help,
                              const char *const *labels, unsigned flags);
mg_counter *mg_metrics_counter(mg_metrics *m, const char *name, const char *help,
                               const char *const *labels, unsigned flags);
mg_gauge *mg_metrics_gauge(mg_metrics *m, const char *name, const char *help,
                           const char *const *labels, unsigned flags);

/* ---- reading ------------------------------------------------------------ */

/* One series as mg_metrics_walk shows it. Pointers borrowed from the
 * registry; valid during the callback. */
typedef struct mg_metric_view {
    const char *name;
    const char *help;
    int type; /* enum mg_metric_type */
    unsigned flags;
    size_t n_labels;
    const char *const *keys; /* n_labels each */
    const char *const *values;
    mg_hist *hist;       /* HISTOGRAM */
    mg_counter *counter; /* COUNTER */
    mg_gauge *gauge;     /* GAUGE */
} mg_metric_view;

/* The value of label `key`, or NULL when the series has none. */
const char *mg_metric_label(const mg_metric_view *v, const char *key);

/* Calls fn for every series, families in registration order and series in
 * registration order within a family. fn must not register into m. */
void mg_metrics_walk(const mg_metrics *m, void (*fn)(const mg_metric_view *v, void *arg),
                     void *arg);

/* ---- Prometheus text ---------------------------------------------------- */

/* The bucket boundaries of rendered histograms, in seconds ("le" labels),
 * ascending, without "+Inf". */
extern const char *const mg_metrics_le[];
extern const size_t mg_metrics_n_le;

/* One registry to render, with an optional extra label put first on each of
 * its series (label_key NULL: none). */
typedef struct mg_metrics_source {
    const mg_metrics *m;
    const char *label_key;
    const char *label_value;
} mg_metrics_source;

/* Renders the registries as one Prometheus text exposition (format 0.0.4):
 * each family once, with "# HELP" and "# TYPE", then its series from every
 * source in order. Histograms (ns recorded) are rendered in seconds:
 * cumulative "_bucket{le=...}" at mg_metrics_le and "+Inf", "_sum" and
 * "_count" (= the +Inf bucket). A boundary that does not fall on an edge of
 * the log-linear buckets counts the values up to the edge just below it
 * (at most 0.8 % below the boundary), so a bucket never holds a value above
 * its "le". A family whose sources disagree on its type is rendered as
 * the first one has it; the other sources' series of it are left out.
 * *out is malloc'd text (caller frees), NUL-terminated, *len bytes (len may
 * be NULL). MG_OK or MG_ENOMEM. */
int mg_metrics_render(const mg_metrics_source *sources, size_t n, char **out, size_t *len);

/* ---- msgpack ------------------------------------------------------------ */

/* Appends the registry to pk as one msgpack map:
 *   {"v": 1, "series": [{"name": str, "help": str, "type": uint (enum
 *    mg_metric_type), "flags": uint, "labels": [key, value, ...],
 *    "value": uint (counter) | int (gauge) | <mg_hist_pack> (histogram)},
 *    ...]}
 * Sparse series that are still zero are left out. MG_OK or MG_ENOMEM. */
int mg_metrics_pack(const mg_metrics *m, msgpack_packer *pk);

/* Decodes one encoded registry into a new registry (*out, caller frees).
 * Nothing is trusted: names, labels and help are checked as registration
 * checks them, counts against the MG_METRICS_*_MAX limits, histograms with
 * mg_hist_read. Unknown keys are skipped. On error *out is untouched and
 * the reader unmoved: MG_ECORRUPT (message says what), MG_EVERSION,
 * MG_ENOMEM. */
int mg_metrics_read(mg_mp_reader *r, mg_metrics **out, mg_error *err);

/* ---- merging ------------------------------------------------------------ */

/* Adds every series of src into dst: a series with the same family, type
 * and labels is merged (histograms bucket by bucket, counters and gauges
 * summed), any other is registered in dst first. A family registered with
 * another type in dst is skipped (MG_EINVAL after the rest is merged).
 * src == dst is refused (MG_EINVAL). MG_OK, MG_EINVAL or MG_ENOMEM (then
 * part of src may be merged). */
int mg_metrics_merge(mg_metrics *dst, const mg_metrics *src);

#endif
