/*
 * Inside the harness: the run configuration (filled from the command line
 * by bench.c), the results of each target (filled by harness.c), and the
 * parts that turn results into a table, JSON and HTML (report.c).
 */
#ifndef MG_BENCH_INTERNAL_H
#define MG_BENCH_INTERNAL_H

#include "http.h"
#include "lib/error.h"
#include "lib/histogram.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define BENCH_MAX_TARGETS 8
#define BENCH_MAX_CLIENTS 1024
#define BENCH_NUM_K 3 /* recall at 1, 5, 10 */

enum bench_kind { BENCH_KIND_MEMGRID = 0, BENCH_KIND_MEMOS };
enum bench_workload { BENCH_INGEST = 0, BENCH_SEARCH, BENCH_MIXED, BENCH_LOCOMO };
enum bench_op { BENCH_OP_ADD = 0, BENCH_OP_SEARCH, BENCH_OPS };
enum bench_add_format { BENCH_ADD_MESSAGES = 0, BENCH_ADD_CONTENT };

extern const char *const bench_kind_names[];     /* "memgrid", "memos" */
extern const char *const bench_workload_names[]; /* "ingest", ... */
extern const char *const bench_op_names[];       /* "add", "search" */
extern const unsigned bench_recall_k[BENCH_NUM_K];

typedef struct bench_config {
    const char *urls[BENCH_MAX_TARGETS];
    size_t ntargets;
    int kinds[BENCH_MAX_TARGETS]; /* per target, resolved */
    int workload;
    bool compare;         /* two targets interleaved in one run */
    unsigned concurrency; /* clients (closed loop) or connections (open loop) */
    double rate;          /* open loop: requests/s per target; 0 = closed loop */
    double duration_s;    /* measured time, when requests == 0 */
    uint64_t requests;    /* measured requests per target; 0 = by duration */
    double warmup_s;
    uint64_t seed;
    size_t cubes;
    size_t memories; /* preloaded before search/mixed */
    double zipf;
    unsigned batch; /* messages per add */
    unsigned top_k;
    double read_ratio;    /* mixed: share of searches */
    const char *data_dir; /* LoCoMo */
    size_t limit;         /* LoCoMo: questions asked (0 = all) */
    bool load;            /* preload the corpus (search, mixed) */
    unsigned load_concurrency;
    char cube_prefix[104];
    unsigned timeout_ms;
    const char *json_path; /* "-" = stdout */
    const char *report_path;
    int progress;   /* 1 on, 0 off, -1 when stderr is a terminal */
    bool quiet;     /* no table */
    bool async_add; /* async_mode "async" instead of "sync" */
    int add_format;
    char *search_extra;      /* ",\"key\":value..." appended to search bodies, or NULL */
    char *search_extra_json; /* the same as given, for the report */
} bench_config;

typedef struct bench_op_result {
    mg_hist *hist;     /* latencies of the successful requests */
    uint64_t requests; /* measured, failed ones included */
    uint64_t errors;
    /* Throughput = in_time / elapsed_s: requests (answered or failed) that
     * completed within the measured time, over that time. With --duration
     * the measured time ends at the deadline, and requests still in flight
     * then count in `requests` but not here. */
    uint64_t in_time;
    double elapsed_s;
} bench_op_result;

typedef struct bench_target {
    char label[4]; /* "A", "B", ... */
    const char *url;
    int kind;
    mg_http_target http;
    char server_service[64]; /* from /health, "" when absent */
    char server_version[64];

    bench_op_result ops[BENCH_OPS];
    uint64_t requests, errors; /* measured, all ops */
    uint64_t in_time;          /* as in bench_op_result, all ops */
    double elapsed_s;          /* measured time, all phases */
    uint64_t warmup_requests;
    uint64_t setup_requests, setup_errors;
    uint64_t messages;    /* messages sent in measured adds */
    uint64_t connections; /* TCP connections opened */
    char first_error[256];

    uint64_t *timeline; /* completions per second of measured time */
    size_t timeline_len;

    /* LoCoMo */
    uint64_t questions;
    uint64_t hits[BENCH_NUM_K];
    uint64_t unmatched; /* returned memories that matched no turn */
} bench_target;

typedef struct bench_results {
    const bench_config *cfg;
    bench_target targets[BENCH_MAX_TARGETS];
    size_t ntargets;
    char date[32]; /* ISO 8601, UTC */
    bool interrupted;
} bench_results;

/* Runs every target (one after the other, or both at once with --compare)
 * and fills res. Targets must be parsed (http) already. Returns MG_OK when
 * the run completed, else an error (a target unreachable, the data not
 * loadable). */
int bench_run(const bench_config *cfg, bench_results *res, mg_error *err);

/* Set from a signal handler: ends the current measurement early. */
void bench_request_stop(void);
bool bench_stop_requested(void);

/* Frees what bench_run allocated in res. */
void bench_results_free(bench_results *res);

/* Output (report.c). */
void bench_print_table(const bench_results *res, FILE *out);
int bench_write_json(const bench_results *res, const char *path, mg_error *err);
int bench_write_html(const bench_results *res, const char *path, mg_error *err);

/* Throughput of one op, or of the target overall, in requests per second. */
double bench_op_throughput(const bench_op_result *op);
double bench_target_throughput(const bench_target *t);

#endif
