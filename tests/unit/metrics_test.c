/* lib/metrics: registration, Prometheus text (checked by a strict parser),
 * sparse series, several sources side by side, msgpack round trip, merge,
 * hostile encodings and recording from many threads while rendering. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "lib/metrics.h"
#include "tests/fixtures/prom_text.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LABELS(...) ((const char *const[]){__VA_ARGS__, NULL})

/* Renders sources, parses strictly (failing the test with the reason). */
static void render_parse(const mg_metrics_source *src, size_t n, prom_doc *doc, char **text)
{
    char *out = NULL;
    size_t len = 0;
    assert_int_equal(mg_metrics_render(src, n, &out, &len), MG_OK);
    assert_non_null(out);
    assert_int_equal(strlen(out), len);
    char why[256] = "";
    if (prom_parse(out, len, doc, why, sizeof why) != 0) {
        fprintf(stderr, "%s\n---\n%s\n", why, out);
        fail_msg("not valid Prometheus text: %s", why);
    }
    if (text != NULL)
        *text = out;
    else
        free(out);
}

static double value_of(const prom_doc *doc, const char *name, const char *const *labels)
{
    size_t n;
    double v = prom_sum(doc, name, labels, &n);
    if (n != 1)
        fail_msg("%zu samples of %s match", n, name);
    return v;
}

static void test_register(void **state)
{
    (void)state;
    mg_metrics *m = mg_metrics_new();
    assert_non_null(m);
    mg_hist *a = mg_metrics_histogram(m, "t_seconds", "help", LABELS("op", "write"), 0);
    mg_hist *b = mg_metrics_histogram(m, "t_seconds", "help", LABELS("op", "write"), 0);
    mg_hist *c = mg_metrics_histogram(m, "t_seconds", "help", LABELS("op", "read"), 0);
    assert_non_null(a);
    assert_ptr_equal(a, b);
    assert_ptr_not_equal(a, c);
    /* another type under the same family, bad names and labels */
    assert_null(mg_metrics_counter(m, "t_seconds", "x", NULL, 0));
    assert_null(mg_metrics_counter(m, "1bad", "x", NULL, 0));
    assert_null(mg_metrics_counter(m, "ok", "x", LABELS("le", "1"), 0));
    assert_null(mg_metrics_counter(m, "ok", "x", LABELS("__x", "1"), 0));
    assert_null(mg_metrics_counter(m, "ok", "x", LABELS("a:b", "1"), 0));
    assert_null(mg_metrics_counter(m, "ok", "x", LABELS("a", "1", "a", "2"), 0));
    assert_null(mg_metrics_counter(m, "ok", "x",
                                   LABELS("a", "1", "b", "2", "c", "3", "d", "4", "e", "5"), 0));
    assert_null(mg_metrics_counter(m, "ok", "x", LABELS("a", "\xff"), 0));
    mg_counter *k = mg_metrics_counter(m, "ok", "x", NULL, 0);
    assert_non_null(k);
    mg_counter_add(k, 3);
    mg_counter_inc(k);
    assert_int_equal(mg_counter_get(k), 4);
    mg_gauge *g = mg_metrics_gauge(m, "level", "x", NULL, 0);
    mg_gauge_set(g, -5);
    mg_gauge_add(g, 2);
    assert_int_equal(mg_gauge_get(g), -3);
    mg_metrics_free(m);
}

typedef struct walk_count {
    size_t hists, counters, gauges;
    bool saw_op_read;
} walk_count;

static void count_fn(const mg_metric_view *v, void *arg)
{
    walk_count *w = arg;
    w->hists += v->type == MG_METRIC_HISTOGRAM;
    w->counters += v->type == MG_METRIC_COUNTER;
    w->gauges += v->type == MG_METRIC_GAUGE;
    const char *op = mg_metric_label(v, "op");
    if (op != NULL && strcmp(op, "read") == 0)
        w->saw_op_read = true;
}

static void test_walk(void **state)
{
    (void)state;
    mg_metrics *m = mg_metrics_new();
    mg_metrics_histogram(m, "h", "x", LABELS("op", "write"), 0);
    mg_metrics_histogram(m, "h", "x", LABELS("op", "read"), 0);
    mg_metrics_counter(m, "c", "x", NULL, 0);
    mg_metrics_gauge(m, "g", "x", NULL, 0);
    walk_count w = {0};
    mg_metrics_walk(m, count_fn, &w);
    assert_int_equal(w.hists, 2);
    assert_int_equal(w.counters, 1);
    assert_int_equal(w.gauges, 1);
    assert_true(w.saw_op_read);
    mg_metrics_free(m);
}

static void test_render(void **state)
{
    (void)state;
    mg_metrics *m = mg_metrics_new();
    mg_hist *h = mg_metrics_histogram(m, "mg_request_seconds", "Request time.",
                                      LABELS("endpoint", "/product/add"), 0);
    mg_hist *empty = mg_metrics_histogram(m, "mg_request_seconds", "Request time.",
                                          LABELS("endpoint", "/product/search"), 0);
    mg_counter *c = mg_metrics_counter(m, "mg_requests", "Requests.",
                                       LABELS("endpoint", "/product/add", "status", "200"), 0);
    mg_gauge *g = mg_metrics_gauge(m, "mg_groups", "Groups.", NULL, 0);
    (void)empty;
    /* 3 values under 10 us, 2 around 30 us, 1 at 0.7 ms, 1 at 3 s, 1 past 10 s */
    const uint64_t vals[] = {1000, 5000, 9000, 30000, 31000, 700000, 3000000000ull, 20000000000ull};
    uint64_t sum = 0;
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
        mg_hist_record(h, vals[i]);
        sum += vals[i];
    }
    mg_counter_add(c, 7);
    mg_gauge_set(g, 5);

    prom_doc doc;
    char *text;
    mg_metrics_source src = {.m = m};
    render_parse(&src, 1, &doc, &text);
    assert_int_equal(doc.n_families, 3);
    assert_non_null(strstr(text, "# TYPE mg_request_seconds histogram\n"));
    assert_non_null(strstr(text, "# TYPE mg_requests_total counter\n"));
    assert_non_null(strstr(text, "# TYPE mg_groups gauge\n"));
    assert_non_null(strstr(text, "# HELP mg_request_seconds Request time.\n"));

    const char *const *add = LABELS("endpoint", "/product/add");
    assert_true(value_of(&doc, "mg_requests_total", add) == 7);
    assert_true(value_of(&doc, "mg_groups", NULL) == 5);
    assert_true(value_of(&doc, "mg_request_seconds_count", add) == 8);
    assert_true(fabs(value_of(&doc, "mg_request_seconds_sum", add) - (double)sum / 1e9) < 1e-9);
    struct {
        const char *le;
        double want;
    } expect[] = {{"0.00001", 3}, {"0.000025", 3}, {"0.00005", 5}, {"0.0005", 5}, {"0.001", 6},
                  {"2.5", 6},     {"5", 7},        {"10", 7},      {"+Inf", 8}};
    for (size_t i = 0; i < sizeof expect / sizeof expect[0]; i++) {
        const char *const lab[] = {"endpoint", "/product/add", "le", expect[i].le, NULL};
        double got = value_of(&doc, "mg_request_seconds_bucket", lab);
        if (got != expect[i].want)
            fail_msg("le=%s: %.0f, want %.0f", expect[i].le, got, expect[i].want);
    }
    /* every boundary is rendered, for the empty series too */
    size_t n;
    prom_sum(&doc, "mg_request_seconds_bucket", LABELS("endpoint", "/product/search"), &n);
    assert_int_equal(n, mg_metrics_n_le + 1);
    assert_true(value_of(&doc, "mg_request_seconds_count", LABELS("endpoint", "/product/search")) ==
                0);
    prom_doc_free(&doc);
    free(text);
    mg_metrics_free(m);
}

/* A value on a boundary's edge: never counted in a bucket whose le is below
 * it, and the bucket boundaries never count a value above them. */
static void test_render_edges(void **state)
{
    (void)state;
    mg_metrics *m = mg_metrics_new();
    mg_hist *h = mg_metrics_histogram(m, "e_seconds", "x", NULL, 0);
    mg_hist_record(h, 1000001); /* just over 1 ms */
    mg_hist_record(h, 995000);  /* 0.5 % under 1 ms */
    prom_doc doc;
    mg_metrics_source src = {.m = m};
    render_parse(&src, 1, &doc, NULL);
    double le1ms = value_of(&doc, "e_seconds_bucket", LABELS("le", "0.001"));
    assert_true(le1ms == 1); /* the value above 1 ms is not in it */
    assert_true(value_of(&doc, "e_seconds_bucket", LABELS("le", "0.0025")) == 2);
    prom_doc_free(&doc);
    mg_metrics_free(m);
}

static void test_escaping(void **state)
{
    (void)state;
    mg_metrics *m = mg_metrics_new();
    const char *odd = "a \"quoted\" back\\slash\nnew line é";
    mg_counter *c = mg_metrics_counter(m, "odd", "help with \\ and\nnewline", LABELS("v", odd), 0);
    mg_counter_inc(c);
    prom_doc doc;
    char *text;
    mg_metrics_source src = {.m = m};
    render_parse(&src, 1, &doc, &text);
    assert_non_null(strstr(text, "# HELP odd_total help with \\\\ and\\nnewline\n"));
    assert_true(value_of(&doc, "odd_total", LABELS("v", odd)) == 1);
    prom_doc_free(&doc);
    free(text);
    mg_metrics_free(m);
}

static void test_sparse(void **state)
{
    (void)state;
    mg_metrics *m = mg_metrics_new();
    mg_counter *ok = mg_metrics_counter(m, "req", "x", LABELS("status", "200"), 0);
    mg_counter *bad = mg_metrics_counter(m, "req", "x", LABELS("status", "404"), MG_METRIC_SPARSE);
    mg_hist *h = mg_metrics_histogram(m, "lat", "x", NULL, MG_METRIC_SPARSE);
    (void)ok;
    prom_doc doc;
    char *text;
    mg_metrics_source src = {.m = m};
    render_parse(&src, 1, &doc, &text);
    size_t n;
    prom_sum(&doc, "req_total", NULL, &n);
    assert_int_equal(n, 1); /* only the dense one */
    prom_sum(&doc, "lat_count", NULL, &n);
    assert_int_equal(n, 0);
    prom_doc_free(&doc);
    free(text);
    mg_counter_inc(bad);
    mg_hist_record(h, 5000);
    render_parse(&src, 1, &doc, NULL);
    assert_true(value_of(&doc, "req_total", LABELS("status", "404")) == 1);
    assert_true(value_of(&doc, "lat_count", NULL) == 1);
    prom_doc_free(&doc);
    mg_metrics_free(m);
}

/* Two "nodes" and a router rendered together: each family once, series
 * labelled by source. */
static void test_render_sources(void **state)
{
    (void)state;
    mg_metrics *router = mg_metrics_new(), *n1 = mg_metrics_new(), *n2 = mg_metrics_new();
    mg_counter_add(mg_metrics_counter(router, "http", "x", LABELS("endpoint", "/a"), 0), 2);
    mg_hist_record(mg_metrics_histogram(n1, "op_seconds", "x", LABELS("op", "write"), 0), 5000);
    mg_gauge_set(mg_metrics_gauge(n1, "groups", "x", NULL, 0), 2);
    mg_hist_record(mg_metrics_histogram(n2, "op_seconds", "x", LABELS("op", "write"), 0), 6000);
    mg_hist_record(mg_metrics_histogram(n2, "op_seconds", "x", LABELS("op", "search"), 0), 7000);
    mg_gauge_set(mg_metrics_gauge(n2, "groups", "x", NULL, 0), 3);
    /* a family of another type than the router's: left out of n2 */
    mg_gauge_set(mg_metrics_gauge(n2, "http", "x", NULL, 0), 9);
    mg_metrics_source src[] = {{.m = router},
                               {.m = n1, .label_key = "node", .label_value = "1"},
                               {.m = n2, .label_key = "node", .label_value = "2"}};
    prom_doc doc;
    char *text;
    render_parse(src, 3, &doc, &text);
    assert_int_equal(doc.n_families, 3);
    assert_true(value_of(&doc, "op_seconds_count", LABELS("node", "1", "op", "write")) == 1);
    assert_true(value_of(&doc, "op_seconds_count", LABELS("node", "2", "op", "write")) == 1);
    assert_true(value_of(&doc, "op_seconds_count", LABELS("node", "2", "op", "search")) == 1);
    assert_true(value_of(&doc, "groups", LABELS("node", "1")) == 2);
    assert_true(value_of(&doc, "groups", LABELS("node", "2")) == 3);
    assert_true(value_of(&doc, "http_total", NULL) == 2);
    size_t n;
    prom_sum(&doc, "http", NULL, &n);
    assert_int_equal(n, 0);
    /* the node label comes first */
    assert_non_null(strstr(text, "op_seconds_count{node=\"2\",op=\"search\"} 1\n"));
    prom_doc_free(&doc);
    free(text);
    mg_metrics_free(router);
    mg_metrics_free(n1);
    mg_metrics_free(n2);
}

/* ---- msgpack ----------------------------------------------------------- */

static mg_metrics *sample_registry(uint64_t seed)
{
    mg_metrics *m = mg_metrics_new();
    static const char *const ops[] = {"write", "search", "mem_get"};
    for (size_t i = 0; i < 3; i++) {
        mg_hist *h =
            mg_metrics_histogram(m, "node_op_seconds", "Op time.", LABELS("op", ops[i]), 0);
        for (uint64_t k = 0; k < 1000; k++)
            mg_hist_record(h, 1000 + ((k * 7919 + seed * 31 + i) % 5000000));
        mg_counter_add(mg_metrics_counter(m, "node_requests", "Requests.",
                                          LABELS("op", ops[i], "status", "OK"), 0),
                       1000 + seed);
    }
    mg_metrics_counter(m, "node_requests", "Requests.", LABELS("op", "write", "status", "EIO"),
                       MG_METRIC_SPARSE);
    mg_gauge_set(mg_metrics_gauge(m, "node_memories", "Memories.", LABELS("group", "1"), 0),
                 (int64_t)(10 + seed));
    return m;
}

static void pack(const mg_metrics *m, msgpack_sbuffer *sb)
{
    msgpack_packer pk;
    msgpack_sbuffer_init(sb);
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    assert_int_equal(mg_metrics_pack(m, &pk), MG_OK);
}

static char *render1(const mg_metrics *m)
{
    mg_metrics_source src = {.m = m};
    char *out;
    assert_int_equal(mg_metrics_render(&src, 1, &out, NULL), MG_OK);
    return out;
}

static void test_round_trip(void **state)
{
    (void)state;
    mg_metrics *m = sample_registry(1);
    msgpack_sbuffer sb;
    pack(m, &sb);
    mg_mp_reader r;
    mg_mp_reader_init(&r, sb.data, sb.size);
    mg_metrics *back = NULL;
    mg_error err = {0};
    assert_int_equal(mg_metrics_read(&r, &back, &err), MG_OK);
    assert_int_equal(mg_mp_remaining(&r), 0);
    char *a = render1(m), *b = render1(back);
    assert_string_equal(a, b); /* the zero sparse series is in neither */
    free(a);
    free(b);
    mg_metrics_free(back);
    msgpack_sbuffer_destroy(&sb);
    mg_metrics_free(m);
}

static void test_merge(void **state)
{
    (void)state;
    mg_metrics *a = sample_registry(1), *b = sample_registry(2);
    /* b also has a series a lacks */
    mg_hist_record(mg_metrics_histogram(b, "node_op_seconds", "Op time.", LABELS("op", "stats"), 0),
                   42000);
    /* the merged registry, built by decoding both, equals a by-hand union */
    mg_metrics *all = mg_metrics_new();
    msgpack_sbuffer sb;
    mg_metrics *regs[2] = {a, b};
    for (int i = 0; i < 2; i++) {
        pack(regs[i], &sb);
        mg_mp_reader r;
        mg_mp_reader_init(&r, sb.data, sb.size);
        mg_metrics *d;
        mg_error err;
        assert_int_equal(mg_metrics_read(&r, &d, &err), MG_OK);
        assert_int_equal(mg_metrics_merge(all, d), MG_OK);
        mg_metrics_free(d);
        msgpack_sbuffer_destroy(&sb);
    }
    assert_int_equal(mg_metrics_merge(all, all), MG_EINVAL);
    mg_hist *union_h = mg_hist_new();
    mg_hist_merge(union_h,
                  mg_metrics_histogram(a, "node_op_seconds", "", LABELS("op", "write"), 0));
    mg_hist_merge(union_h,
                  mg_metrics_histogram(b, "node_op_seconds", "", LABELS("op", "write"), 0));
    mg_hist *merged = mg_metrics_histogram(all, "node_op_seconds", "", LABELS("op", "write"), 0);
    assert_int_equal(mg_hist_count(merged), 2000);
    const double qs[] = {0.5, 0.9, 0.99, 0.999, 1.0};
    for (size_t i = 0; i < 5; i++)
        assert_int_equal(mg_hist_quantile(merged, qs[i]), mg_hist_quantile(union_h, qs[i]));
    assert_int_equal(mg_hist_sum(merged), mg_hist_sum(union_h));
    assert_int_equal(
        mg_hist_count(mg_metrics_histogram(all, "node_op_seconds", "", LABELS("op", "stats"), 0)),
        1);
    assert_int_equal(mg_counter_get(mg_metrics_counter(all, "node_requests", "",
                                                       LABELS("op", "search", "status", "OK"), 0)),
                     1001 + 1002);
    assert_int_equal(
        mg_gauge_get(mg_metrics_gauge(all, "node_memories", "", LABELS("group", "1"), 0)), 11 + 12);
    /* a family of another type in dst is skipped, the rest merged */
    mg_metrics *clash = mg_metrics_new();
    mg_gauge_set(mg_metrics_gauge(clash, "node_requests", "", NULL, 0), 1);
    mg_counter_inc(mg_metrics_counter(clash, "fresh", "", NULL, 0));
    assert_int_equal(mg_metrics_merge(all, clash), MG_EINVAL);
    assert_int_equal(mg_counter_get(mg_metrics_counter(all, "fresh", "", NULL, 0)), 1);
    mg_metrics_free(clash);
    mg_hist_free(union_h);
    mg_metrics_free(all);
    mg_metrics_free(a);
    mg_metrics_free(b);
}

static void test_hostile(void **state)
{
    (void)state;
    mg_metrics *m = sample_registry(3);
    msgpack_sbuffer sb;
    pack(m, &sb);
    mg_metrics_free(m);
    /* every truncation fails cleanly and leaves the reader where it was */
    for (size_t len = 0; len < sb.size; len += 1 + len / 64) {
        mg_mp_reader r;
        mg_mp_reader_init(&r, sb.data, len);
        mg_metrics *out = (mg_metrics *)&r; /* must stay untouched */
        mg_error err = {0};
        int rc = mg_metrics_read(&r, &out, &err);
        assert_int_equal(rc, MG_ECORRUPT);
        assert_ptr_equal(out, (mg_metrics *)&r);
        assert_ptr_equal(r.pos, (const uint8_t *)sb.data);
    }
    msgpack_sbuffer_destroy(&sb);

    /* a newer format, a bad name, too many labels, a wrong value type */
    msgpack_packer pk;
    const char *names[] = {"1bad", "ok"};
    for (int k = 0; k < 5; k++) {
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        msgpack_pack_map(&pk, 2);
        mg_mp_pack_cstr(&pk, "v");
        msgpack_pack_uint32(&pk, k == 0 ? 2 : 1);
        mg_mp_pack_cstr(&pk, "series");
        msgpack_pack_array(&pk, 1);
        msgpack_pack_map(&pk, 4);
        mg_mp_pack_cstr(&pk, "name");
        mg_mp_pack_cstr(&pk, names[k == 1 ? 0 : 1]);
        mg_mp_pack_cstr(&pk, "type");
        msgpack_pack_uint32(&pk, k == 4 ? 9 : MG_METRIC_COUNTER);
        mg_mp_pack_cstr(&pk, "labels");
        if (k == 2) {
            msgpack_pack_array(&pk, 2 * (MG_METRICS_LABELS_MAX + 1));
            for (int l = 0; l <= MG_METRICS_LABELS_MAX; l++) {
                char key[8];
                snprintf(key, sizeof key, "k%d", l);
                mg_mp_pack_cstr(&pk, key);
                mg_mp_pack_cstr(&pk, "v");
            }
        } else {
            msgpack_pack_array(&pk, 0);
        }
        mg_mp_pack_cstr(&pk, "value");
        if (k == 3)
            mg_mp_pack_cstr(&pk, "seven");
        else
            msgpack_pack_uint32(&pk, 7);
        mg_mp_reader r;
        mg_mp_reader_init(&r, sb.data, sb.size);
        mg_metrics *out = NULL;
        mg_error err = {0};
        int rc = mg_metrics_read(&r, &out, &err);
        assert_int_equal(rc, k == 0 ? MG_EVERSION : MG_ECORRUPT);
        assert_null(out);
        assert_true(err.msg[0] != '\0');
        msgpack_sbuffer_destroy(&sb);
    }
}

/* ---- threads ------------------------------------------------------------ */

#define THREADS 4
#define PER_THREAD 50000

typedef struct rec_arg {
    mg_hist *h;
    mg_counter *c;
} rec_arg;

static void *recorder(void *p)
{
    rec_arg *a = p;
    for (uint64_t i = 0; i < PER_THREAD; i++) {
        mg_hist_record(a->h, 1000 + i);
        mg_counter_inc(a->c);
    }
    return NULL;
}

static void test_concurrent(void **state)
{
    (void)state;
    mg_metrics *m = mg_metrics_new();
    rec_arg a = {.h = mg_metrics_histogram(m, "c_seconds", "x", NULL, 0),
                 .c = mg_metrics_counter(m, "c", "x", NULL, 0)};
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, recorder, &a), 0);
    /* renders and packs while they record: always valid text */
    for (int k = 0; k < 20; k++) {
        prom_doc doc;
        mg_metrics_source src = {.m = m};
        render_parse(&src, 1, &doc, NULL);
        prom_doc_free(&doc);
        msgpack_sbuffer sb;
        pack(m, &sb);
        msgpack_sbuffer_destroy(&sb);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(mg_counter_get(a.c), THREADS * PER_THREAD);
    assert_int_equal(mg_hist_count(a.h), THREADS * PER_THREAD);
    mg_metrics_free(m);
}

/* The parser itself refuses what it should (so the other tests mean
 * something). */
static void test_parser_strict(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "x 1",                              /* no newline */
        "x{a=\"1\"} 1 123\n",               /* time stamp */
        "x{a=1} 1\n",                       /* unquoted */
        "x{a=\"\\t\"} 1\n",                 /* bad escape */
        "x 1\ny 1\nx 2\n",                  /* not contiguous */
        "x 1\nx 2\n",                       /* repeated */
        "x 1\n# TYPE x gauge\n",            /* TYPE after samples */
        "# TYPE x gauge\n# TYPE x gauge\n", /* TYPE twice */
        "\n",                               /* empty line */
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 0\n"
        "h_count 1\n", /* falling */
        "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 0\n"
        "h_count 3\n",                                                    /* +Inf != count */
        "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 0\nh_count 1\n", /* no +Inf */
        "# TYPE h histogram\nh_bucket{le=\"2\"} 1\nh_bucket{le=\"1\"} 1\n"
        "h_bucket{le=\"+Inf\"} 1\nh_sum 0\nh_count 1\n", /* le order */
        "x one\n",                                       /* value */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        prom_doc doc;
        char why[200];
        if (prom_parse(bad[i], strlen(bad[i]), &doc, why, sizeof why) == 0)
            fail_msg("accepted bad text #%zu: %s", i, bad[i]);
    }
    const char *good = "# HELP h x\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\n"
                       "h_bucket{le=\"+Inf\"} 2\nh_sum 3.5\nh_count 2\n# a comment\nu 1\n";
    prom_doc doc;
    char why[200];
    assert_int_equal(prom_parse(good, strlen(good), &doc, why, sizeof why), 0);
    assert_int_equal(doc.n, 5);
    prom_doc_free(&doc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_register),       cmocka_unit_test(test_walk),
        cmocka_unit_test(test_render),         cmocka_unit_test(test_render_edges),
        cmocka_unit_test(test_escaping),       cmocka_unit_test(test_sparse),
        cmocka_unit_test(test_render_sources), cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_merge),          cmocka_unit_test(test_hostile),
        cmocka_unit_test(test_concurrent),     cmocka_unit_test(test_parser_strict),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
