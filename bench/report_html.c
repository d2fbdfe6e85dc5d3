/*
 * The HTML report: one self-contained page (no scripts, no external files)
 * with the run's parameters, the table, and two inline SVG plots:
 *   - latency by percentile, x on HdrHistogram's scale log10(1/(1-p)) (0 %,
 *     90 %, 99 %, 99.9 %, ... equally spaced), y logarithmic in ms, one line
 *     per target and op (adds dashed);
 *   - throughput over time: measured requests completed in each second, one
 *     line per target.
 */
#include "bench_internal.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#define W 860.0
#define H 400.0
#define ML 72.0
#define MR 24.0
#define MT 28.0
#define MB 52.0
#define PW (W - ML - MR)
#define PH (H - MT - MB)
#define CURVE_POINTS 240
#define MAX_NINES 6.0 /* 99.9999 % */

static const char *const colors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e",
                                     "#9467bd", "#8c564b", "#e377c2", "#17becf"};

static void esc(FILE *f, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '<':
            fputs("&lt;", f);
            break;
        case '>':
            fputs("&gt;", f);
            break;
        case '&':
            fputs("&amp;", f);
            break;
        case '"':
            fputs("&quot;", f);
            break;
        default:
            fputc(*s, f);
        }
    }
}

/* Opens a plot: the frame is W x H; `legend` lines go below it. */
static void svg_open(FILE *f, const char *title, size_t legend)
{
    double height = H + 16.0 * (double)legend + 8.0;
    fprintf(f,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
            "viewBox=\"0 0 %.0f %.0f\" font-family=\"sans-serif\" font-size=\"12\">\n"
            "<rect x=\"0\" y=\"0\" width=\"%.0f\" height=\"%.0f\" fill=\"#fff\"/>\n"
            "<text x=\"%.0f\" y=\"18\" font-size=\"14\" font-weight=\"bold\">",
            W, height, W, height, W, height, ML);
    esc(f, title);
    fputs("</text>\n", f);
    fprintf(f,
            "<rect x=\"%.0f\" y=\"%.0f\" width=\"%.0f\" height=\"%.0f\" fill=\"none\" "
            "stroke=\"#888\"/>\n",
            ML, MT, PW, PH);
}

/* One legend line below the plot: a line sample and the start of a <text>
 * (the caller writes the label and closes it). */
static void legend_entry(FILE *f, size_t i, const char *color, bool dashed)
{
    double ly = H + 12.0 + 16.0 * (double)i;
    fprintf(f,
            "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
            "stroke-width=\"2\"%s/>\n<text x=\"%.1f\" y=\"%.1f\">",
            ML + 10, ly - 4, ML + 34, ly - 4, color, dashed ? " stroke-dasharray=\"6 3\"" : "",
            ML + 40, ly);
}

/* ---- latency by percentile ---- */

typedef struct series {
    const mg_hist *hist;
    char label[96];
    const char *color;
    bool dashed;
    double nines; /* log10(count): where the samples run out */
} series;

static double lat_ms(uint64_t ns)
{
    double ms = (double)ns / 1e6;
    return ms < 1e-3 ? 1e-3 : ms;
}

static void plot_latency(FILE *f, const bench_results *res)
{
    series s[BENCH_MAX_TARGETS * BENCH_OPS];
    size_t n = 0;
    double xmax = 1.0, ymin = INFINITY, ymax = 0;
    for (size_t i = 0; i < res->ntargets; i++) {
        const bench_target *t = &res->targets[i];
        for (int op = 0; op < BENCH_OPS; op++) {
            uint64_t count = t->ops[op].hist ? mg_hist_count(t->ops[op].hist) : 0;
            if (count == 0)
                continue;
            series *c = &s[n++];
            c->hist = t->ops[op].hist;
            snprintf(c->label, sizeof c->label, "%s %s %s (%s)", t->label, bench_op_names[op],
                     t->url, bench_kind_names[t->kind]);
            c->color = colors[i % (sizeof colors / sizeof colors[0])];
            c->dashed = op == BENCH_OP_ADD;
            c->nines = fmin(log10((double)count), MAX_NINES);
            xmax = fmax(xmax, ceil(c->nines));
            ymin = fmin(ymin, lat_ms(mg_hist_min(c->hist)));
            ymax = fmax(ymax, lat_ms(mg_hist_max(c->hist)));
        }
    }
    svg_open(f, "Latency by percentile", n);
    if (n == 0) {
        fprintf(f, "<text x=\"%.0f\" y=\"%.0f\">no measured requests</text>\n</svg>\n", ML + 20,
                MT + 40);
        return;
    }
    double lo = floor(log10(ymin)), hi = ceil(log10(ymax));
    if (hi <= lo)
        hi = lo + 1;
    /* y grid: decades labelled, 2 and 5 faint. */
    for (double d = lo; d <= hi; d += 1) {
        for (int m = 1; m < 10; m++) {
            double v = log10((double)m) + d;
            if (v > hi)
                break;
            double y = MT + PH - (v - lo) / (hi - lo) * PH;
            if (m == 1) {
                fprintf(f,
                        "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ccc\"/>\n"
                        "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n",
                        ML, y, ML + PW, y, ML - 6, y + 4, pow(10, d));
            } else if (m == 2 || m == 5) {
                fprintf(f,
                        "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#eee\"/>\n",
                        ML, y, ML + PW, y);
            }
        }
    }
    /* x grid: 0 %, 90 %, 99 %, ... */
    for (int k = 0; k <= (int)xmax; k++) {
        double x = ML + (double)k / xmax * PW;
        char label[32];
        if (k == 0)
            snprintf(label, sizeof label, "0%%");
        else
            snprintf(label, sizeof label, "%.*f%%", k > 2 ? k - 2 : 0, 100.0 - pow(10, 2 - k));
        fprintf(f,
                "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ccc\"/>\n"
                "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n",
                x, MT, x, MT + PH, x, MT + PH + 16, label);
    }
    fprintf(f,
            "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">percentile</text>\n"
            "<text x=\"16\" y=\"%.1f\" text-anchor=\"middle\" transform=\"rotate(-90 16 %.1f)\">"
            "latency (ms, log scale)</text>\n",
            ML + PW / 2, H - 12, MT + PH / 2, MT + PH / 2);
    for (size_t i = 0; i < n; i++) {
        series *c = &s[i];
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\"%s points=\"", c->color,
                c->dashed ? " stroke-dasharray=\"6 3\"" : "");
        for (int p = 0; p <= CURVE_POINTS; p++) {
            double xv = xmax * p / CURVE_POINTS;
            bool last = xv >= c->nines;
            if (last)
                xv = c->nines;
            double q = 1.0 - pow(10, -xv);
            double v = last ? lat_ms(mg_hist_max(c->hist)) : lat_ms(mg_hist_quantile(c->hist, q));
            double x = ML + xv / xmax * PW;
            double y = MT + PH - (log10(v) - lo) / (hi - lo) * PH;
            fprintf(f, "%.1f,%.1f ", x, y);
            if (last)
                break;
        }
        fputs("\"/>\n", f);
        legend_entry(f, i, c->color, c->dashed);
        esc(f, c->label);
        fputs("</text>\n", f);
    }
    fputs("</svg>\n", f);
}

/* ---- throughput over time ---- */

/* The smallest round figure (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8 times a power of
 * ten) that is >= v. */
static double nice_ceil(double v)
{
    static const double steps[] = {1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10};
    if (v <= 0)
        return 1;
    double e = pow(10, floor(log10(v)));
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++)
        if (steps[i] * e >= v)
            return steps[i] * e;
    return 10 * e;
}

/* Seconds of the timeline worth plotting: a last second that the measured
 * time only began would show as a drop to nearly nothing. */
static size_t whole_seconds(const bench_target *t)
{
    size_t n = t->timeline_len, full = (size_t)t->elapsed_s;
    if (n > 1 && n > full)
        n = full > 0 ? full : 1;
    return n;
}

static void plot_throughput(FILE *f, const bench_results *res)
{
    size_t seconds = 0;
    uint64_t peak = 0;
    for (size_t i = 0; i < res->ntargets; i++) {
        const bench_target *t = &res->targets[i];
        size_t n = whole_seconds(t);
        if (n > seconds)
            seconds = n;
        for (size_t s = 0; s < n; s++)
            if (t->timeline[s] > peak)
                peak = t->timeline[s];
    }
    svg_open(f, "Throughput over time (requests completed per second)", res->ntargets);
    if (seconds == 0) {
        fprintf(f, "<text x=\"%.0f\" y=\"%.0f\">no measured requests</text>\n</svg>\n", ML + 20,
                MT + 40);
        return;
    }
    double ytop = nice_ceil((double)peak * 1.05);
    double xspan = (double)seconds;
    for (int k = 0; k <= 5; k++) {
        double v = ytop * k / 5, y = MT + PH - (double)k / 5 * PH;
        fprintf(f,
                "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n"
                "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n",
                ML, y, ML + PW, y, ML - 6, y + 4, v);
    }
    double step = fmax(1.0, nice_ceil(xspan / 10));
    for (double sec = 0; sec <= xspan + 1e-9; sec += step) {
        double x = ML + sec / xspan * PW;
        fprintf(f,
                "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#eee\"/>\n"
                "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%g</text>\n",
                x, MT, x, MT + PH, x, MT + PH + 16, sec);
    }
    fprintf(f,
            "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">seconds of measured time</text>\n"
            "<text x=\"16\" y=\"%.1f\" text-anchor=\"middle\" transform=\"rotate(-90 16 %.1f)\">"
            "requests / s</text>\n",
            ML + PW / 2, H - 12, MT + PH / 2, MT + PH / 2);
    for (size_t i = 0; i < res->ntargets; i++) {
        const bench_target *t = &res->targets[i];
        const char *color = colors[i % (sizeof colors / sizeof colors[0])];
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"", color);
        for (size_t s = 0; s < whole_seconds(t); s++)
            fprintf(f, "%.1f,%.1f ", ML + ((double)s + 0.5) / xspan * PW,
                    MT + PH - (double)t->timeline[s] / ytop * PH);
        fputs("\"/>\n", f);
        legend_entry(f, i, color, false);
        fprintf(f, "%s ", t->label);
        esc(f, t->url);
        fputs("</text>\n", f);
    }
    fputs("</svg>\n", f);
}

/* ---- page ---- */

static void table_html(FILE *f, const bench_results *res)
{
    fputs("<table>\n<tr><th></th><th>target</th><th>kind</th><th>op</th><th>requests</th>"
          "<th>errors</th><th>req/s</th><th>mean</th><th>p50</th><th>p90</th><th>p99</th>"
          "<th>p99.9</th><th>max (ms)</th></tr>\n",
          f);
    static const double qs[6] = {0.5, 0.9, 0.99, 0.999, 1.0, 0.0};
    for (size_t i = 0; i < res->ntargets; i++) {
        const bench_target *t = &res->targets[i];
        for (int op = 0; op < BENCH_OPS; op++) {
            const bench_op_result *o = &t->ops[op];
            if (o->requests == 0)
                continue;
            uint64_t v[5] = {0};
            if (o->hist != NULL)
                mg_hist_quantiles(o->hist, qs, 5, v);
            fprintf(f, "<tr><td>%s</td><td>", t->label);
            esc(f, t->url);
            fprintf(f,
                    "</td><td>%s</td><td>%s</td><td>%llu</td><td>%llu</td><td>%.1f</td>"
                    "<td>%.3f</td><td>%.3f</td><td>%.3f</td><td>%.3f</td><td>%.3f</td>"
                    "<td>%.3f</td></tr>\n",
                    bench_kind_names[t->kind], bench_op_names[op], (unsigned long long)o->requests,
                    (unsigned long long)o->errors, bench_op_throughput(o),
                    o->hist ? mg_hist_mean(o->hist) / 1e6 : 0.0, (double)v[0] / 1e6,
                    (double)v[1] / 1e6, (double)v[2] / 1e6, (double)v[3] / 1e6, (double)v[4] / 1e6);
        }
    }
    fputs("</table>\n", f);
    for (size_t i = 0; i < res->ntargets; i++) {
        const bench_target *t = &res->targets[i];
        if (res->cfg->workload == BENCH_LOCOMO && t->questions > 0)
            fprintf(f,
                    "<p>%s: LoCoMo evidence recall@1 %.3f, @5 %.3f, @10 %.3f over %llu "
                    "questions.</p>\n",
                    t->label, (double)t->hits[0] / (double)t->questions,
                    (double)t->hits[1] / (double)t->questions,
                    (double)t->hits[2] / (double)t->questions, (unsigned long long)t->questions);
        if (t->first_error[0]) {
            fprintf(f, "<p>%s: first error: ", t->label);
            esc(f, t->first_error);
            fputs("</p>\n", f);
        }
    }
}

int bench_write_html(const bench_results *res, const char *path, mg_error *err)
{
    FILE *f = fopen(path, "w");
    if (f == NULL)
        return mg_error_set(err, MG_EIO, "cannot write %s: %s", path, strerror(errno));
    const bench_config *cfg = res->cfg;
    fputs("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">\n<title>memgrid bench: ", f);
    fputs(bench_workload_names[cfg->workload], f);
    fputs("</title>\n<style>body{font-family:sans-serif;margin:24px;max-width:920px}"
          "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;"
          "padding:3px 7px;text-align:right}td:nth-child(2),th:nth-child(2){text-align:left}"
          "svg{display:block;margin:16px 0}</style>\n</head><body>\n",
          f);
    fprintf(f, "<h1>memgrid bench: %s</h1>\n<p>%s, ", bench_workload_names[cfg->workload],
            res->date);
    if (cfg->rate > 0)
        fprintf(f, "open loop at %g requests/s per target over %u connections", cfg->rate,
                cfg->concurrency);
    else
        fprintf(f, "closed loop with %u client%s", cfg->concurrency,
                cfg->concurrency == 1 ? "" : "s");
    if (cfg->workload == BENCH_LOCOMO)
        fputs(", one pass over the LoCoMo data", f);
    else if (cfg->requests > 0)
        fprintf(f, ", %llu requests per target", (unsigned long long)cfg->requests);
    else
        fprintf(f, ", %g s measured", cfg->duration_s);
    fprintf(f, " after %g s warm-up, seed %llu%s%s.</p>\n", cfg->warmup_s,
            (unsigned long long)cfg->seed, cfg->compare ? ", targets interleaved" : "",
            res->interrupted ? ", interrupted" : "");
    table_html(f, res);
    plot_latency(f, res);
    plot_throughput(f, res);
    fputs("<p>Latencies are client-side, from the moment a request was due (open loop) or "
          "sent (closed loop) to the end of its answer, over successful requests only; "
          "percentiles come from log-linear histograms with under 0.4 % error.</p>\n"
          "</body></html>\n",
          f);
    bool failed = ferror(f) != 0;
    if (fclose(f) != 0 || failed)
        return mg_error_set(err, MG_EIO, "cannot write %s", path);
    return MG_OK;
}
