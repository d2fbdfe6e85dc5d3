#include "metrics.h"

#include "log.h"
#include "utf8.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A series: labels and the value. Allocated one by one so that the pointer
 * handed out at registration never moves. */
typedef struct series {
    size_t n_labels;
    char *keys[MG_METRICS_LABELS_MAX];
    char *values[MG_METRICS_LABELS_MAX];
    unsigned flags;
    mg_hist *hist;
    mg_counter counter;
    mg_gauge gauge;
} series;

typedef struct family {
    char *name;
    char *help;
    int type;
    series **series;
    size_t n, cap;
} family;

struct mg_metrics {
    pthread_mutex_t lock;
    family **fams;
    size_t n, cap;
};

/* Readers take the lock of a registry they were handed as const: the lock
 * guards the structure, which they do not change. */
static pthread_mutex_t *lock_of(const mg_metrics *m)
{
    return &((mg_metrics *)m)->lock;
}

/* ---- validation ---------------------------------------------------------- */

static bool name_ok(const char *s, size_t len)
{
    if (len == 0 || len > MG_METRICS_NAME_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
        if (!alpha && !(i > 0 && c >= '0' && c <= '9'))
            return false;
    }
    return true;
}

static bool label_key_ok(const char *s, size_t len)
{
    if (!name_ok(s, len) || memchr(s, ':', len) != NULL)
        return false;
    if (len == 2 && memcmp(s, "le", 2) == 0)
        return false; /* reserved for histogram buckets */
    return !(len >= 2 && s[0] == '_' && s[1] == '_');
}

static bool text_ok(const char *s, size_t len, size_t max)
{
    return len <= max && mg_utf8_valid(s, len);
}

/* ---- structure (lock held) ----------------------------------------------- */

static void series_free(series *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < s->n_labels; i++) {
        free(s->keys[i]);
        free(s->values[i]);
    }
    mg_hist_free(s->hist);
    free(s);
}

static void family_free(family *f)
{
    for (size_t i = 0; i < f->n; i++)
        series_free(f->series[i]);
    free(f->series);
    free(f->name);
    free(f->help);
    free(f);
}

static family *family_find(const mg_metrics *m, const char *name)
{
    for (size_t i = 0; i < m->n; i++)
        if (strcmp(m->fams[i]->name, name) == 0)
            return m->fams[i];
    return NULL;
}

static bool labels_equal(const series *s, const char *const *keys, const char *const *values,
                         size_t n)
{
    if (s->n_labels != n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (strcmp(s->keys[i], keys[i]) != 0 || strcmp(s->values[i], values[i]) != 0)
            return false;
    return true;
}

static bool grow(void **arr, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return true;
    size_t cap2 = *cap ? *cap * 2 : 8;
    while (cap2 < need)
        cap2 *= 2;
    void *p = realloc(*arr, cap2 * elem);
    if (p == NULL)
        return false;
    *arr = p;
    *cap = cap2;
    return true;
}

/* The series (found or made), or NULL: out of memory, or the family exists
 * with another type (*type_clash set). Inputs already validated. */
static series *series_get(mg_metrics *m, const char *name, const char *help, int type,
                          const char *const *keys, const char *const *values, size_t n_labels,
                          unsigned flags, bool *type_clash)
{
    *type_clash = false;
    family *f = family_find(m, name);
    if (f != NULL && f->type != type) {
        *type_clash = true;
        return NULL;
    }
    if (f != NULL)
        for (size_t i = 0; i < f->n; i++)
            if (labels_equal(f->series[i], keys, values, n_labels))
                return f->series[i];
    series *s = calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    s->flags = flags;
    for (size_t i = 0; i < n_labels; i++) {
        s->keys[i] = strdup(keys[i]);
        s->values[i] = strdup(values[i]);
        s->n_labels = i + 1;
        if (s->keys[i] == NULL || s->values[i] == NULL)
            goto err_series;
    }
    if (type == MG_METRIC_HISTOGRAM && (s->hist = mg_hist_new()) == NULL)
        goto err_series;
    if (f == NULL) {
        if (!grow((void **)&m->fams, &m->cap, m->n + 1, sizeof *m->fams))
            goto err_series;
        f = calloc(1, sizeof *f);
        if (f == NULL)
            goto err_series;
        f->type = type;
        f->name = strdup(name);
        f->help = strdup(help ? help : "");
        if (f->name == NULL || f->help == NULL) {
            family_free(f);
            goto err_series;
        }
        m->fams[m->n++] = f;
    }
    if (!grow((void **)&f->series, &f->cap, f->n + 1, sizeof *f->series))
        goto err_series; /* a new family stays, empty: harmless */
    f->series[f->n++] = s;
    return s;

err_series:
    series_free(s);
    return NULL;
}

/* ---- registry ------------------------------------------------------------ */

mg_metrics *mg_metrics_new(void)
{
    mg_metrics *m = calloc(1, sizeof *m);
    if (m == NULL)
        return NULL;
    if (pthread_mutex_init(&m->lock, NULL) != 0) {
        free(m);
        return NULL;
    }
    return m;
}

void mg_metrics_free(mg_metrics *m)
{
    if (m == NULL)
        return;
    for (size_t i = 0; i < m->n; i++)
        family_free(m->fams[i]);
    free(m->fams);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

static series *register_series(mg_metrics *m, const char *name, const char *help, int type,
                               const char *const *labels, unsigned flags)
{
    const char *keys[MG_METRICS_LABELS_MAX], *values[MG_METRICS_LABELS_MAX];
    size_t n = 0;
    const char *bad = NULL;
    if (!name_ok(name, strlen(name)))
        bad = "name";
    else if (help != NULL && !text_ok(help, strlen(help), MG_METRICS_HELP_MAX))
        bad = "help";
    for (size_t i = 0; bad == NULL && labels != NULL && labels[i] != NULL; i += 2) {
        if (n == MG_METRICS_LABELS_MAX || labels[i + 1] == NULL)
            bad = "label count";
        else if (!label_key_ok(labels[i], strlen(labels[i])))
            bad = "label name";
        else if (!text_ok(labels[i + 1], strlen(labels[i + 1]), MG_METRICS_VALUE_MAX))
            bad = "label value";
        for (size_t j = 0; bad == NULL && j < n; j++)
            if (strcmp(keys[j], labels[i]) == 0)
                bad = "repeated label";
        if (bad == NULL) {
            keys[n] = labels[i];
            values[n++] = labels[i + 1];
        }
    }
    if (bad != NULL) {
        mg_errlog("metrics.register", "name=%.128s bad=\"%s\"", name, bad);
        return NULL;
    }
    bool clash;
    pthread_mutex_lock(&m->lock);
    series *s = series_get(m, name, help, type, keys, values, n, flags, &clash);
    pthread_mutex_unlock(&m->lock);
    if (clash)
        mg_errlog("metrics.register", "name=%s bad=\"registered with another type\"", name);
    return s;
}

mg_hist *mg_metrics_histogram(mg_metrics *m, const char *name, const char *help,
                              const char *const *labels, unsigned flags)
{
    series *s = register_series(m, name, help, MG_METRIC_HISTOGRAM, labels, flags);
    return s ? s->hist : NULL;
}

mg_counter *mg_metrics_counter(mg_metrics *m, const char *name, const char *help,
                               const char *const *labels, unsigned flags)
{
    series *s = register_series(m, name, help, MG_METRIC_COUNTER, labels, flags);
    return s ? &s->counter : NULL;
}

mg_gauge *mg_metrics_gauge(mg_metrics *m, const char *name, const char *help,
                           const char *const *labels, unsigned flags)
{
    series *s = register_series(m, name, help, MG_METRIC_GAUGE, labels, flags);
    return s ? &s->gauge : NULL;
}

/* ---- reading ------------------------------------------------------------- */

const char *mg_metric_label(const mg_metric_view *v, const char *key)
{
    for (size_t i = 0; i < v->n_labels; i++)
        if (strcmp(v->keys[i], key) == 0)
            return v->values[i];
    return NULL;
}

static void view_of(const family *f, series *s, mg_metric_view *v)
{
    v->name = f->name;
    v->help = f->help;
    v->type = f->type;
    v->flags = s->flags;
    v->n_labels = s->n_labels;
    v->keys = (const char *const *)s->keys;
    v->values = (const char *const *)s->values;
    v->hist = s->hist;
    v->counter = f->type == MG_METRIC_COUNTER ? &s->counter : NULL;
    v->gauge = f->type == MG_METRIC_GAUGE ? &s->gauge : NULL;
}

void mg_metrics_walk(const mg_metrics *m, void (*fn)(const mg_metric_view *v, void *arg), void *arg)
{
    pthread_mutex_lock(lock_of(m));
    for (size_t i = 0; i < m->n; i++) {
        const family *f = m->fams[i];
        for (size_t j = 0; j < f->n; j++) {
            mg_metric_view v;
            view_of(f, f->series[j], &v);
            fn(&v, arg);
        }
    }
    pthread_mutex_unlock(lock_of(m));
}

/* A sparse series that is still zero is neither rendered nor packed. */
static bool series_hidden(int type, const series *s)
{
    if (!(s->flags & MG_METRIC_SPARSE))
        return false;
    switch (type) {
    case MG_METRIC_COUNTER:
        return mg_counter_get(&s->counter) == 0;
    case MG_METRIC_GAUGE:
        return mg_gauge_get(&s->gauge) == 0;
    default:
        return mg_hist_count(s->hist) == 0;
    }
}

/* ---- Prometheus text ----------------------------------------------------- */

const char *const mg_metrics_le[] = {"0.00001", "0.000025", "0.00005", "0.0001", "0.00025",
                                     "0.0005",  "0.001",    "0.0025",  "0.005",  "0.01",
                                     "0.025",   "0.05",     "0.1",     "0.25",   "0.5",
                                     "1",       "2.5",      "5",       "10"};
const size_t mg_metrics_n_le = sizeof mg_metrics_le / sizeof mg_metrics_le[0];

/* The same boundaries in ns. */
static const uint64_t le_ns[] = {10000,      25000,      50000,      100000,     250000,
                                 500000,     1000000,    2500000,    5000000,    10000000,
                                 25000000,   50000000,   100000000,  250000000,  500000000,
                                 1000000000, 2500000000, 5000000000, 10000000000};
_Static_assert(sizeof le_ns / sizeof le_ns[0] == sizeof mg_metrics_le / sizeof mg_metrics_le[0],
               "one ns boundary per le label");
#define N_LE (sizeof le_ns / sizeof le_ns[0])

/* A boundary moved down to the last value of the bucket below it unless it
 * already ends a bucket: mg_hist_cumulative is exact there. */
static uint64_t le_edge(uint64_t ns)
{
    uint64_t lo, hi;
    mg_hist_bucket_range(mg_hist_bucket_index(ns), &lo, &hi);
    return hi == ns || lo == 0 ? ns : lo - 1;
}

typedef struct sbuf {
    char *p;
    size_t len, cap;
    bool oom;
} sbuf;

static void sb_reserve(sbuf *b, size_t more)
{
    if (b->oom || b->len + more + 1 <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more + 1)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (p == NULL) {
        b->oom = true;
        return;
    }
    b->p = p;
    b->cap = cap;
}

static void sb_put(sbuf *b, const char *s, size_t n)
{
    sb_reserve(b, n);
    if (b->oom)
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_str(sbuf *b, const char *s)
{
    sb_put(b, s, strlen(s));
}

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...)
{
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0)
        sb_put(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* Escapes as the text format wants: \\ and \n always, \" in label values. */
static void sb_escaped(sbuf *b, const char *s, bool quote)
{
    for (; *s; s++) {
        if (*s == '\\')
            sb_put(b, "\\\\", 2);
        else if (*s == '\n')
            sb_put(b, "\\n", 2);
        else if (*s == '"' && quote)
            sb_put(b, "\\\"", 2);
        else
            sb_put(b, s, 1);
    }
}

static void sb_label(sbuf *b, bool *first, const char *key, const char *value)
{
    sb_str(b, *first ? "{" : ",");
    *first = false;
    sb_str(b, key);
    sb_str(b, "=\"");
    sb_escaped(b, value, true);
    sb_str(b, "\"");
}

/* name+suffix{extra, labels, le} — the part of a sample line before the value. */
static void sample_head(sbuf *b, const char *name, const char *suffix, const mg_metrics_source *src,
                        const series *s, const char *le)
{
    bool first = true;
    sb_str(b, name);
    sb_str(b, suffix);
    if (src->label_key != NULL)
        sb_label(b, &first, src->label_key, src->label_value ? src->label_value : "");
    for (size_t i = 0; i < s->n_labels; i++)
        sb_label(b, &first, s->keys[i], s->values[i]);
    if (le != NULL)
        sb_label(b, &first, "le", le);
    if (!first)
        sb_str(b, "}");
    sb_str(b, " ");
}

static void render_series(sbuf *b, const family *f, const mg_metrics_source *src, const series *s,
                          const uint64_t *edges)
{
    switch (f->type) {
    case MG_METRIC_COUNTER:
        sample_head(b, f->name, "_total", src, s, NULL);
        sb_printf(b, "%llu\n", (unsigned long long)mg_counter_get(&s->counter));
        return;
    case MG_METRIC_GAUGE:
        sample_head(b, f->name, "", src, s, NULL);
        sb_printf(b, "%lld\n", (long long)mg_gauge_get(&s->gauge));
        return;
    default: {
        uint64_t cum[N_LE], total;
        mg_hist_cumulative(s->hist, edges, N_LE, cum, &total);
        for (size_t i = 0; i < N_LE; i++) {
            sample_head(b, f->name, "_bucket", src, s, mg_metrics_le[i]);
            sb_printf(b, "%llu\n", (unsigned long long)cum[i]);
        }
        sample_head(b, f->name, "_bucket", src, s, "+Inf");
        sb_printf(b, "%llu\n", (unsigned long long)total);
        uint64_t sum = mg_hist_sum(s->hist);
        sample_head(b, f->name, "_sum", src, s, NULL);
        sb_printf(b, "%llu.%09llu\n", (unsigned long long)(sum / 1000000000u),
                  (unsigned long long)(sum % 1000000000u));
        sample_head(b, f->name, "_count", src, s, NULL);
        sb_printf(b, "%llu\n", (unsigned long long)total);
        return;
    }
    }
}

static const char *type_name(int type)
{
    return type == MG_METRIC_COUNTER ? "counter" : type == MG_METRIC_GAUGE ? "gauge" : "histogram";
}

/* Families named earlier than source `k`'s family `f` (already rendered). */
static bool rendered_before(const mg_metrics_source *sources, size_t k, const char *name)
{
    for (size_t j = 0; j < k; j++)
        if (sources[j].m != NULL && family_find(sources[j].m, name) != NULL)
            return true;
    return false;
}

static int cmp_addr(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t) * (const mg_metrics *const *)a;
    uintptr_t y = (uintptr_t) * (const mg_metrics *const *)b;
    return x < y ? -1 : x > y;
}

int mg_metrics_render(const mg_metrics_source *sources, size_t n, char **out, size_t *len)
{
    uint64_t edges[N_LE];
    for (size_t i = 0; i < N_LE; i++)
        edges[i] = le_edge(le_ns[i]);
    sbuf b = {0};
    sb_reserve(&b, 0);
    /* Every source's structure must hold still while it is rendered: lock
     * them all, each once, in address order (as merge does, so that no two
     * threads wait for each other). */
    const mg_metrics **locked = calloc(n ? n : 1, sizeof *locked);
    size_t n_locked = 0;
    if (locked == NULL) {
        free(b.p);
        return MG_ENOMEM;
    }
    for (size_t k = 0; k < n; k++) {
        bool dup = sources[k].m == NULL;
        for (size_t j = 0; j < n_locked && !dup; j++)
            dup = locked[j] == sources[k].m;
        if (!dup)
            locked[n_locked++] = sources[k].m;
    }
    qsort(locked, n_locked, sizeof *locked, cmp_addr);
    for (size_t k = 0; k < n_locked; k++)
        pthread_mutex_lock(lock_of(locked[k]));
    for (size_t k = 0; k < n; k++) {
        const mg_metrics *m = sources[k].m;
        for (size_t i = 0; m != NULL && i < m->n; i++) {
            const family *f = m->fams[i];
            if (rendered_before(sources, k, f->name))
                continue;
            sb_str(&b, "# HELP ");
            sb_str(&b, f->name);
            if (f->type == MG_METRIC_COUNTER)
                sb_str(&b, "_total");
            sb_str(&b, " ");
            sb_escaped(&b, f->help, false);
            sb_str(&b, "\n# TYPE ");
            sb_str(&b, f->name);
            if (f->type == MG_METRIC_COUNTER)
                sb_str(&b, "_total");
            sb_printf(&b, " %s\n", type_name(f->type));
            for (size_t j = k; j < n; j++) {
                const family *g = sources[j].m ? family_find(sources[j].m, f->name) : NULL;
                if (g == NULL || g->type != f->type)
                    continue;
                if (j > k && sources[j].m == m)
                    continue; /* the same registry twice */
                for (size_t s = 0; s < g->n; s++)
                    if (!series_hidden(g->type, g->series[s]))
                        render_series(&b, g, &sources[j], g->series[s], edges);
            }
        }
    }
    for (size_t k = n_locked; k-- > 0;)
        pthread_mutex_unlock(lock_of(locked[k]));
    free(locked);
    if (b.oom) {
        free(b.p);
        return MG_ENOMEM;
    }
    *out = b.p;
    if (len != NULL)
        *len = b.len;
    return MG_OK;
}

/* ---- msgpack ------------------------------------------------------------- */

int mg_metrics_pack(const mg_metrics *m, msgpack_packer *pk)
{
    int rc = 0;
    pthread_mutex_lock(lock_of(m));
    size_t count = 0;
    for (size_t i = 0; i < m->n; i++)
        for (size_t j = 0; j < m->fams[i]->n; j++)
            count += !series_hidden(m->fams[i]->type, m->fams[i]->series[j]);
    rc |= msgpack_pack_map(pk, 2);
    rc |= mg_mp_pack_cstr(pk, "v");
    rc |= msgpack_pack_uint32(pk, MG_METRICS_FORMAT);
    rc |= mg_mp_pack_cstr(pk, "series");
    rc |= msgpack_pack_array(pk, (uint32_t)count);
    for (size_t i = 0; i < m->n && rc == 0; i++) {
        const family *f = m->fams[i];
        for (size_t j = 0; j < f->n && rc == 0; j++) {
            const series *s = f->series[j];
            if (series_hidden(f->type, s))
                continue;
            rc |= msgpack_pack_map(pk, 6);
            rc |= mg_mp_pack_cstr(pk, "name");
            rc |= mg_mp_pack_cstr(pk, f->name);
            rc |= mg_mp_pack_cstr(pk, "help");
            rc |= mg_mp_pack_cstr(pk, f->help);
            rc |= mg_mp_pack_cstr(pk, "type");
            rc |= msgpack_pack_uint32(pk, (uint32_t)f->type);
            rc |= mg_mp_pack_cstr(pk, "flags");
            rc |= msgpack_pack_uint32(pk, s->flags);
            rc |= mg_mp_pack_cstr(pk, "labels");
            rc |= msgpack_pack_array(pk, (uint32_t)(2 * s->n_labels));
            for (size_t l = 0; l < s->n_labels; l++) {
                rc |= mg_mp_pack_cstr(pk, s->keys[l]);
                rc |= mg_mp_pack_cstr(pk, s->values[l]);
            }
            rc |= mg_mp_pack_cstr(pk, "value");
            if (f->type == MG_METRIC_COUNTER)
                rc |= msgpack_pack_uint64(pk, mg_counter_get(&s->counter));
            else if (f->type == MG_METRIC_GAUGE)
                rc |= msgpack_pack_int64(pk, mg_gauge_get(&s->gauge));
            else
                rc |= mg_hist_pack(s->hist, pk) != MG_OK;
        }
    }
    pthread_mutex_unlock(lock_of(m));
    return rc == 0 ? MG_OK : MG_ENOMEM;
}

/* A str copied into buf (NUL-terminated) and checked: names when `name`,
 * else UTF-8 text of at most max bytes. */
static int read_text(mg_mp_reader *r, char *buf, size_t max, int kind)
{
    const char *s;
    uint32_t len;
    if (mg_mp_read_str(r, &s, &len) != MG_OK)
        return MG_ECORRUPT;
    bool ok = kind == 0 ? name_ok(s, len) : kind == 1 ? label_key_ok(s, len) : text_ok(s, len, max);
    if (!ok || len > max)
        return MG_ECORRUPT;
    memcpy(buf, s, len);
    buf[len] = '\0';
    return MG_OK;
}

enum { TEXT_NAME = 0, TEXT_LABEL_KEY = 1, TEXT_FREE = 2 };

/* One encoded series, added to m. */
static int read_series(mg_mp_reader *r, mg_metrics *m, size_t *n_hists, mg_error *err)
{
    char name[MG_METRICS_NAME_MAX + 1] = "", help[MG_METRICS_HELP_MAX + 1] = "";
    char kbuf[MG_METRICS_LABELS_MAX][MG_METRICS_NAME_MAX + 1];
    char vbuf[MG_METRICS_LABELS_MAX][MG_METRICS_VALUE_MAX + 1];
    const char *keys[MG_METRICS_LABELS_MAX], *values[MG_METRICS_LABELS_MAX];
    size_t n_labels = 0;
    uint64_t type = 0;
    uint32_t flags = 0, n_keys;
    mg_mp_reader value = {0};
    bool have_value = false;
    if (mg_mp_read_map(r, &n_keys) != MG_OK)
        return mg_error_set(err, MG_ECORRUPT, "a series is not a map");
    for (uint32_t i = 0; i < n_keys; i++) {
        const char *key;
        uint32_t klen;
        if (mg_mp_read_str(r, &key, &klen) != MG_OK)
            return mg_error_set(err, MG_ECORRUPT, "a series key is not a string");
#define KEY_IS(lit) (klen == sizeof(lit) - 1 && memcmp(key, lit, klen) == 0)
        int rc = MG_OK;
        if (KEY_IS("name")) {
            rc = read_text(r, name, MG_METRICS_NAME_MAX, TEXT_NAME);
        } else if (KEY_IS("help")) {
            rc = read_text(r, help, MG_METRICS_HELP_MAX, TEXT_FREE);
        } else if (KEY_IS("type")) {
            rc = mg_mp_read_u64(r, &type);
        } else if (KEY_IS("flags")) {
            rc = mg_mp_read_u32(r, &flags);
        } else if (KEY_IS("labels")) {
            uint32_t n;
            rc = mg_mp_read_array(r, &n);
            if (rc == MG_OK && (n % 2 != 0 || n / 2 > MG_METRICS_LABELS_MAX))
                return mg_error_set(err, MG_ECORRUPT, "series %s: %u label strings", name, n);
            for (uint32_t l = 0; rc == MG_OK && l < n / 2; l++) {
                rc = read_text(r, kbuf[l], MG_METRICS_NAME_MAX, TEXT_LABEL_KEY);
                if (rc == MG_OK)
                    rc = read_text(r, vbuf[l], MG_METRICS_VALUE_MAX, TEXT_FREE);
                keys[l] = kbuf[l];
                values[l] = vbuf[l];
                n_labels = l + 1;
            }
        } else if (KEY_IS("value")) {
            value = *r;
            have_value = true;
            rc = mg_mp_skip(r);
        } else {
            rc = mg_mp_skip(r);
        }
#undef KEY_IS
        if (rc != MG_OK)
            return mg_error_set(err, MG_ECORRUPT, "series %s: bad field \"%.*s\"", name,
                                (int)(klen > 32 ? 32 : klen), key);
    }
    if (name[0] == '\0' || !have_value || type < MG_METRIC_COUNTER || type > MG_METRIC_HISTOGRAM)
        return mg_error_set(err, MG_ECORRUPT, "series %s: name, type or value missing", name);
    for (size_t i = 0; i < n_labels; i++)
        for (size_t j = 0; j < i; j++)
            if (strcmp(keys[i], keys[j]) == 0)
                return mg_error_set(err, MG_ECORRUPT, "series %s: label %s repeated", name,
                                    keys[i]);
    if (type == MG_METRIC_HISTOGRAM && ++*n_hists > MG_METRICS_HISTS_MAX)
        return mg_error_set(err, MG_ECORRUPT, "more than %d histograms", MG_METRICS_HISTS_MAX);
    bool clash;
    series *s = series_get(m, name, help, (int)type, keys, values, n_labels,
                           flags & MG_METRIC_SPARSE, &clash);
    if (s == NULL)
        return clash ? mg_error_set(err, MG_ECORRUPT, "family %s has two types", name)
                     : mg_error_set(err, MG_ENOMEM, "out of memory");
    int rc = MG_OK;
    if (type == MG_METRIC_COUNTER) {
        uint64_t v;
        rc = mg_mp_read_u64(&value, &v);
        if (rc == MG_OK)
            mg_counter_add(&s->counter, v);
    } else if (type == MG_METRIC_GAUGE) {
        int64_t v;
        rc = mg_mp_read_i64(&value, &v);
        if (rc == MG_OK)
            mg_gauge_add(&s->gauge, v);
    } else {
        mg_hist *h = mg_hist_new();
        if (h == NULL)
            return mg_error_set(err, MG_ENOMEM, "out of memory");
        rc = mg_hist_read(&value, h, err);
        if (rc == MG_OK)
            mg_hist_merge(s->hist, h);
        mg_hist_free(h);
        if (rc != MG_OK)
            return mg_error_wrap(err, rc, "series %s", name);
    }
    if (rc != MG_OK)
        return mg_error_set(err, MG_ECORRUPT, "series %s: bad value", name);
    return MG_OK;
}

int mg_metrics_read(mg_mp_reader *r, mg_metrics **out, mg_error *err)
{
    mg_mp_reader start = *r;
    uint32_t n_keys;
    bool have_series = false;
    size_t n_hists = 0;
    int rc = MG_OK;
    mg_metrics *m = mg_metrics_new();
    if (m == NULL)
        return mg_error_set(err, MG_ENOMEM, "out of memory");
    if (mg_mp_read_map(r, &n_keys) != MG_OK) {
        rc = mg_error_set(err, MG_ECORRUPT, "metrics: not a map");
        goto err_free;
    }
    for (uint32_t i = 0; i < n_keys && rc == MG_OK; i++) {
        if (mg_mp_peek_str_eq(r, "v")) {
            uint64_t v;
            mg_mp_skip(r);
            if (mg_mp_read_u64(r, &v) != MG_OK)
                rc = mg_error_set(err, MG_ECORRUPT, "metrics: bad \"v\"");
            else if (v != MG_METRICS_FORMAT)
                rc = mg_error_set(err, MG_EVERSION, "metrics: format %llu (this build reads %d)",
                                  (unsigned long long)v, MG_METRICS_FORMAT);
        } else if (mg_mp_peek_str_eq(r, "series")) {
            uint32_t n;
            mg_mp_skip(r);
            have_series = true;
            if (mg_mp_read_array(r, &n) != MG_OK || n > MG_METRICS_SERIES_MAX) {
                rc = mg_error_set(err, MG_ECORRUPT,
                                  "metrics: \"series\" is not a list of at "
                                  "most %d",
                                  MG_METRICS_SERIES_MAX);
                break;
            }
            for (uint32_t j = 0; j < n && rc == MG_OK; j++)
                rc = read_series(r, m, &n_hists, err);
        } else if (mg_mp_skip(r) != MG_OK || mg_mp_skip(r) != MG_OK) {
            rc = mg_error_set(err, MG_ECORRUPT, "metrics: malformed map");
        }
    }
    if (rc == MG_OK && !have_series)
        rc = mg_error_set(err, MG_ECORRUPT, "metrics: no \"series\"");
    if (rc != MG_OK)
        goto err_free;
    *out = m;
    return MG_OK;

err_free:
    mg_metrics_free(m);
    *r = start;
    return rc;
}

/* ---- merging ------------------------------------------------------------- */

int mg_metrics_merge(mg_metrics *dst, const mg_metrics *src)
{
    if (dst == src)
        return MG_EINVAL;
    /* Both locked, in address order, so two merges in opposite directions
     * cannot deadlock. */
    pthread_mutex_t *a = lock_of(dst), *b = lock_of(src);
    if ((uintptr_t)a > (uintptr_t)b) {
        pthread_mutex_t *t = a;
        a = b;
        b = t;
    }
    pthread_mutex_lock(a);
    pthread_mutex_lock(b);
    int rc = MG_OK;
    for (size_t i = 0; i < src->n; i++) {
        const family *f = src->fams[i];
        for (size_t j = 0; j < f->n; j++) {
            series *from = f->series[j];
            bool clash;
            series *to =
                series_get(dst, f->name, f->help, f->type, (const char *const *)from->keys,
                           (const char *const *)from->values, from->n_labels, from->flags, &clash);
            if (to == NULL) {
                if (!clash) {
                    rc = MG_ENOMEM;
                    goto done;
                }
                rc = MG_EINVAL;
                break; /* the whole family is of the other type */
            }
            if (f->type == MG_METRIC_COUNTER)
                mg_counter_add(&to->counter, mg_counter_get(&from->counter));
            else if (f->type == MG_METRIC_GAUGE)
                mg_gauge_add(&to->gauge, mg_gauge_get(&from->gauge));
            else
                mg_hist_merge(to->hist, from->hist);
        }
    }
done:
    pthread_mutex_unlock(b);
    pthread_mutex_unlock(a);
    return rc;
}
