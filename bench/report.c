/*
 * What a run produced, three ways: a table on stdout, a JSON file, and a
 * self-contained HTML page with two inline SVG plots (latency by percentile
 * on HdrHistogram's log scale of 1/(1-p), and throughput per second).
 */
#include "bench_internal.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NQ 7
static const double quantiles[NQ] = {0.0, 0.5, 0.9, 0.99, 0.999, 1.0, 0.0};
enum { Q_MIN, Q_P50, Q_P90, Q_P99, Q_P999, Q_MAX };

static void op_quantiles(const bench_op_result *op, double ms[NQ])
{
    uint64_t v[6];
    if (op->hist == NULL) {
        memset(ms, 0, NQ * sizeof *ms);
        return;
    }
    mg_hist_quantiles(op->hist, quantiles, 6, v);
    for (int i = 0; i < 6; i++)
        ms[i] = (double)v[i] / 1e6;
    ms[6] = mg_hist_mean(op->hist) / 1e6;
}

static const char *mode_text(const bench_config *cfg, char *buf, size_t cap)
{
    if (cfg->rate > 0)
        snprintf(buf, cap, "open loop at %g req/s per target over %u connection%s", cfg->rate,
                 cfg->concurrency, cfg->concurrency == 1 ? "" : "s");
    else
        snprintf(buf, cap, "closed loop, %u client%s", cfg->concurrency,
                 cfg->concurrency == 1 ? "" : "s");
    return buf;
}

static const char *length_text(const bench_config *cfg, char *buf, size_t cap)
{
    if (cfg->workload == BENCH_LOCOMO)
        snprintf(buf, cap, "one pass over the LoCoMo turns and questions");
    else if (cfg->requests > 0)
        snprintf(buf, cap, "%llu requests per target after %g s warm-up",
                 (unsigned long long)cfg->requests, cfg->warmup_s);
    else
        snprintf(buf, cap, "%g s after %g s warm-up", cfg->duration_s, cfg->warmup_s);
    return buf;
}

/* ---- table ---- */

void bench_print_table(const bench_results *res, FILE *out)
{
    const bench_config *cfg = res->cfg;
    char mode[160], length[128];
    fprintf(out, "memgrid bench: %s, %s, %s%s, seed %llu (%s)%s\n",
            bench_workload_names[cfg->workload], mode_text(cfg, mode, sizeof mode),
            length_text(cfg, length, sizeof length), cfg->compare ? ", targets interleaved" : "",
            (unsigned long long)cfg->seed, res->date, res->interrupted ? " INTERRUPTED" : "");
    fprintf(out, "%-2s %-28s %-8s %-7s %9s %7s %9s %8s %8s %8s %8s %8s %8s\n", "", "target", "kind",
            "op", "requests", "errors", "req/s", "mean", "p50", "p90", "p99", "p99.9", "max ms");
    for (size_t i = 0; i < res->ntargets; i++) {
        const bench_target *t = &res->targets[i];
        for (int op = 0; op < BENCH_OPS; op++) {
            const bench_op_result *o = &t->ops[op];
            if (o->requests == 0)
                continue;
            double ms[NQ];
            op_quantiles(o, ms);
            fprintf(out,
                    "%-2s %-28.28s %-8s %-7s %9llu %7llu %9.1f %8.3f %8.3f %8.3f %8.3f %8.3f "
                    "%8.3f\n",
                    t->label, t->url, bench_kind_names[t->kind], bench_op_names[op],
                    (unsigned long long)o->requests, (unsigned long long)o->errors,
                    bench_op_throughput(o), ms[6], ms[Q_P50], ms[Q_P90], ms[Q_P99], ms[Q_P999],
                    ms[Q_MAX]);
        }
        if (t->requests == 0)
            fprintf(out, "%-2s %-28.28s %-8s (no measured requests)\n", t->label, t->url,
                    bench_kind_names[t->kind]);
        if (cfg->workload == BENCH_LOCOMO && t->questions > 0)
            fprintf(out, "   evidence recall@1 %.3f  @5 %.3f  @10 %.3f  (%llu questions)\n",
                    (double)t->hits[0] / (double)t->questions,
                    (double)t->hits[1] / (double)t->questions,
                    (double)t->hits[2] / (double)t->questions, (unsigned long long)t->questions);
        if (cfg->workload != BENCH_SEARCH && t->ops[BENCH_OP_ADD].elapsed_s > 0 && cfg->batch > 1)
            fprintf(out, "   messages added: %.1f /s\n",
                    (double)t->messages / t->ops[BENCH_OP_ADD].elapsed_s);
        if (t->errors > 0 || t->setup_errors > 0)
            fprintf(out, "   first error: %s\n", t->first_error);
    }
}

/* ---- JSON ---- */

static json_t *op_json(const bench_op_result *o)
{
    double ms[NQ];
    op_quantiles(o, ms);
    return json_pack("{s:I,s:I,s:I,s:f,s:f,s:f,s:f,s:f,s:f,s:f,s:f,s:f}", "requests",
                     (json_int_t)o->requests, "errors", (json_int_t)o->errors, "requests_in_time",
                     (json_int_t)o->in_time, "throughput_per_s", bench_op_throughput(o),
                     "elapsed_s", o->elapsed_s, "mean_ms", ms[6], "min_ms", ms[Q_MIN], "p50_ms",
                     ms[Q_P50], "p90_ms", ms[Q_P90], "p99_ms", ms[Q_P99], "p999_ms", ms[Q_P999],
                     "max_ms", ms[Q_MAX]);
}

static void add_recall(json_t *obj, const bench_target *t)
{
    double q = t->questions ? (double)t->questions : 1.0;
    json_object_set_new(obj, "questions", json_integer((json_int_t)t->questions));
    json_object_set_new(obj, "recall_at_1", json_real((double)t->hits[0] / q));
    json_object_set_new(obj, "recall_at_5", json_real((double)t->hits[1] / q));
    json_object_set_new(obj, "recall_at_10", json_real((double)t->hits[2] / q));
    json_object_set_new(obj, "unmatched_memories", json_integer((json_int_t)t->unmatched));
}

static json_t *target_json(const bench_results *res, const bench_target *t)
{
    json_t *obj = json_object();
    json_t *ops = json_object();
    json_t *timeline = json_array();
    if (obj == NULL || ops == NULL || timeline == NULL) {
        json_decref(obj);
        json_decref(ops);
        json_decref(timeline);
        return NULL;
    }
    json_object_set_new(obj, "label", json_string(t->label));
    json_object_set_new(obj, "url", json_string(t->url));
    json_object_set_new(obj, "kind", json_string(bench_kind_names[t->kind]));
    json_object_set_new(
        obj, "server",
        json_pack("{s:s,s:s}", "service", t->server_service, "version", t->server_version));
    json_object_set_new(obj, "requests", json_integer((json_int_t)t->requests));
    json_object_set_new(obj, "errors", json_integer((json_int_t)t->errors));
    json_object_set_new(obj, "throughput_per_s", json_real(bench_target_throughput(t)));
    json_object_set_new(obj, "elapsed_s", json_real(t->elapsed_s));
    json_object_set_new(obj, "warmup_requests", json_integer((json_int_t)t->warmup_requests));
    json_object_set_new(obj, "setup_requests", json_integer((json_int_t)t->setup_requests));
    json_object_set_new(obj, "setup_errors", json_integer((json_int_t)t->setup_errors));
    json_object_set_new(obj, "connections", json_integer((json_int_t)t->connections));
    json_object_set_new(obj, "messages_in_time", json_integer((json_int_t)t->messages));
    json_object_set_new(obj, "first_error",
                        t->first_error[0] ? json_string(t->first_error) : json_null());
    for (int op = 0; op < BENCH_OPS; op++)
        if (t->ops[op].requests > 0)
            json_object_set_new(ops, bench_op_names[op], op_json(&t->ops[op]));
    json_object_set_new(obj, "operations", ops);
    if (res->cfg->workload == BENCH_LOCOMO)
        add_recall(obj, t);
    for (size_t s = 0; s < t->timeline_len; s++)
        json_array_append_new(timeline, json_integer((json_int_t)t->timeline[s]));
    json_object_set_new(obj, "timeline_per_s", timeline);
    return obj;
}

static json_t *results_json(const bench_results *res)
{
    const bench_config *cfg = res->cfg;
    json_t *root = json_object();
    json_t *targets = json_array();
    if (root == NULL || targets == NULL) {
        json_decref(root);
        json_decref(targets);
        return NULL;
    }
    json_object_set_new(root, "bench", json_string("memgrid-bench"));
    json_object_set_new(root, "format", json_integer(1));
    json_object_set_new(root, "date", json_string(res->date));
    json_object_set_new(root, "workload", json_string(bench_workload_names[cfg->workload]));
    json_object_set_new(root, "mode", json_string(cfg->rate > 0 ? "open" : "closed"));
    json_object_set_new(root, "concurrency", json_integer(cfg->concurrency));
    json_object_set_new(root, "rate_per_s", cfg->rate > 0 ? json_real(cfg->rate) : json_null());
    json_object_set_new(root, "duration_s",
                        cfg->requests == 0 && cfg->workload != BENCH_LOCOMO
                            ? json_real(cfg->duration_s)
                            : json_null());
    json_object_set_new(root, "requests_per_target",
                        cfg->requests > 0 ? json_integer((json_int_t)cfg->requests) : json_null());
    json_object_set_new(root, "warmup_s", json_real(cfg->warmup_s));
    json_object_set_new(root, "compare", json_boolean(cfg->compare));
    json_object_set_new(root, "seed", json_integer((json_int_t)cfg->seed));
    json_object_set_new(root, "cube_prefix", json_string(cfg->cube_prefix));
    if (cfg->workload != BENCH_LOCOMO) {
        json_object_set_new(root, "cubes", json_integer((json_int_t)cfg->cubes));
        json_object_set_new(root, "memories",
                            json_integer(cfg->workload == BENCH_INGEST || !cfg->load
                                             ? 0
                                             : (json_int_t)cfg->memories));
        json_object_set_new(root, "zipf", json_real(cfg->zipf));
    }
    json_object_set_new(root, "batch", json_integer(cfg->batch));
    json_object_set_new(root, "top_k", json_integer(cfg->top_k));
    if (cfg->workload == BENCH_MIXED)
        json_object_set_new(root, "read_ratio", json_real(cfg->read_ratio));
    if (cfg->workload == BENCH_LOCOMO)
        json_object_set_new(root, "limit", json_integer((json_int_t)cfg->limit));
    json_object_set_new(root, "search_extra",
                        cfg->search_extra_json ? json_string(cfg->search_extra_json) : json_null());
    json_object_set_new(root, "interrupted", json_boolean(res->interrupted));

    uint64_t requests = 0, errors = 0;
    double throughput = 0;
    for (size_t i = 0; i < res->ntargets; i++) {
        const bench_target *t = &res->targets[i];
        requests += t->requests;
        errors += t->errors;
        throughput += bench_target_throughput(t);
        json_array_append_new(targets, target_json(res, t));
    }
    json_object_set_new(root, "requests", json_integer((json_int_t)requests));
    json_object_set_new(root, "errors", json_integer((json_int_t)errors));
    json_object_set_new(root, "throughput_per_s", json_real(throughput));
    /* One target: its figures at the top level too, for simple scripts. */
    if (res->ntargets == 1) {
        json_t *t0 = json_array_get(targets, 0);
        json_object_set(root, "operations", json_object_get(t0, "operations"));
        if (cfg->workload == BENCH_LOCOMO)
            add_recall(root, &res->targets[0]);
    }
    json_object_set_new(root, "targets", targets);
    return root;
}

int bench_write_json(const bench_results *res, const char *path, mg_error *err)
{
    json_t *root = results_json(res);
    if (root == NULL)
        return mg_error_set(err, MG_ENOMEM, "out of memory");
    size_t flags = JSON_INDENT(2) | JSON_REAL_PRECISION(6);
    int rc;
    if (strcmp(path, "-") == 0)
        rc = json_dumpf(root, stdout, flags) == 0 && fputc('\n', stdout) != EOF ? 0 : -1;
    else
        rc = json_dump_file(root, path, flags);
    json_decref(root);
    if (rc != 0)
        return mg_error_set(err, MG_EIO, "cannot write %s: %s", path, strerror(errno));
    return MG_OK;
}
