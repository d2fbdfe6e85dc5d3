/*
 * `memgrid bench` command line: one table of options drives parsing, the
 * MEMGRID_BENCH_* environment variables and --help.
 */
#include "bench.h"
#include "bench_internal.h"
#include "lib/clock.h"

#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DEFAULT_TARGET "http://127.0.0.1:8000"
#define DEFAULT_LOCOMO "../shared/data/locomo"

static const char usage_head[] =
    "usage: %s [--target URL]... [--target-kind memgrid|memos]... [--workload W] [options]\n"
    "\n"
    "Drives memgrid, or any MemOS /product endpoint (Python MemOS), over HTTP with the\n"
    "same requests and reports throughput and latency percentiles measured by the client.\n"
    "\n"
    "Workloads (--workload):\n"
    "  search  (default) loads a seeded synthetic corpus (--memories over --cubes, sizes\n"
    "          Zipf-distributed) into the target, then times /product/search on random\n"
    "          cubes (large cubes asked more often) with questions in the corpus's words.\n"
    "  ingest  times /product/add: --batch messages per request into random cubes.\n"
    "  mixed   loads the corpus like search, then times a mix: --read-ratio searches,\n"
    "          the rest adds.\n"
    "  locomo  adds every turn of the LoCoMo conversations in --data (one cube per\n"
    "          conversation, one memory per turn, \"Speaker: text\"), timed as \"add\", then\n"
    "          asks every question with evidence, timed as \"search\", and reports evidence\n"
    "          recall@1/5/10 (a hit: an evidence turn among the top k). One pass; no\n"
    "          warm-up; --duration and --requests do not apply.\n"
    "\n"
    "Load: closed loop by default: --concurrency clients, each sending its next request\n"
    "when the previous one is answered. With --rate R it is open loop: requests are due at\n"
    "a fixed rate of R per second per target, sent over --concurrency connections, and\n"
    "latency is counted from the moment a request was due, so a slow server cannot hide\n"
    "its queueing (no coordinated omission). A run is --duration seconds or --requests\n"
    "requests per target, after --warmup seconds that are not measured.\n"
    "\n"
    "Targets: every --target is run in turn, each with the same seed and so the same\n"
    "requests. With --compare, exactly two targets are driven in one run, interleaved:\n"
    "each request goes to both (closed loop, alternating which first) or gets one slot\n"
    "per target (open loop). Requests are MemOS's (kind does not change them): add\n"
    "{user_id, writable_cube_ids, messages|memory_content, async_mode \"sync\", mode\n"
    "\"fast\"} and search {query, user_id, readable_cube_ids, top_k}; every cube is its\n"
    "user's own cube (user_id = cube id), so no cube is created beforehand. A request\n"
    "is an error unless it answers HTTP 200 with envelope code 200.\n"
    "\n"
    "Options (each also read from the environment as MEMGRID_BENCH_<NAME>, e.g.\n"
    "MEMGRID_BENCH_CONCURRENCY=8; the command line wins):\n";

static const char usage_tail[] =
    "\n"
    "Output: a table on stdout (requests and errors counted over the measured time;\n"
    "req/s = requests / measured seconds; latency percentiles in ms over successful\n"
    "requests, from histograms with under 0.4 %% error); --json FILE with the same per\n"
    "target and per op (requests, errors, throughput_per_s, mean/min/p50/p90/p99/p999/\n"
    "max_ms) plus warmup_requests, setup_requests (loading), connections, timeline_per_s\n"
    "and recall_at_1/5/10 for locomo; --report FILE.html with the latency-by-percentile\n"
    "and throughput-over-time plots. Exit status: 0 done, 1 runtime failure (target not\n"
    "answering /health, every request failing, file not writable), 2 usage error.\n"
    "\n"
    "Examples:\n"
    "  %s --target http://127.0.0.1:8000 --workload search --concurrency 32 --duration 20\n"
    "  %s --workload ingest --batch 16 --rate 2000 --duration 30 --json ingest.json\n"
    "  %s --target http://127.0.0.1:8000 --target-kind memgrid \\\n"
    "      --target http://memos-host:8000 --target-kind memos --compare \\\n"
    "      --workload search --concurrency 8 --duration 60 --report compare.html\n"
    "  %s --workload locomo --data ../shared/data/locomo --json locomo.json\n";

enum opt_id {
    O_TARGET,
    O_KIND,
    O_WORKLOAD,
    O_COMPARE,
    O_CONCURRENCY,
    O_RATE,
    O_DURATION,
    O_REQUESTS,
    O_WARMUP,
    O_SEED,
    O_CUBES,
    O_MEMORIES,
    O_ZIPF,
    O_BATCH,
    O_TOPK,
    O_READ_RATIO,
    O_DATA,
    O_LIMIT,
    O_NO_LOAD,
    O_LOAD_CONCURRENCY,
    O_CUBE_PREFIX,
    O_TIMEOUT,
    O_ADD_FORMAT,
    O_ASYNC,
    O_SEARCH_JSON,
    O_JSON,
    O_REPORT,
    O_PROGRESS,
    O_NO_PROGRESS,
    O_QUIET,
    O_HELP,
};

typedef struct option_def {
    int id;
    const char *name; /* without "--" */
    const char *arg;  /* NULL for a flag */
    const char *help;
} option_def;

static const option_def options[] = {
    {O_TARGET, "target", "URL",
     "server to drive, http://host:port[/prefix]; repeatable "
     "(default " DEFAULT_TARGET ")"},
    {O_KIND, "target-kind", "KIND",
     "memgrid (default) or memos; the n-th applies to the n-th "
     "--target, a single one to all"},
    {O_WORKLOAD, "workload", "W", "ingest, search (default), mixed or locomo"},
    {O_COMPARE, "compare", NULL, "run the two targets interleaved in one run"},
    {O_CONCURRENCY, "concurrency", "N",
     "clients (closed loop; default 1) or connections (open "
     "loop; default 32)"},
    {O_RATE, "rate", "R", "open loop: R requests per second per target"},
    {O_DURATION, "duration", "S", "measured seconds (default 10)"},
    {O_REQUESTS, "requests", "N", "measure N requests per target instead of a duration"},
    {O_WARMUP, "warmup", "S", "unmeasured seconds first, same load (default 2; 0 = none)"},
    {O_SEED, "seed", "N", "seed of the corpus and the requests (default 42)"},
    {O_CUBES, "cubes", "N", "cubes of the synthetic corpus (default 16)"},
    {O_MEMORIES, "memories", "N", "memories loaded before search/mixed (default 4000)"},
    {O_ZIPF, "zipf", "S",
     "cube size skew: cube i gets a share ~ 1/(i+1)^S (default 1; 0 = "
     "equal)"},
    {O_BATCH, "batch", "N", "messages per add request (default 1)"},
    {O_TOPK, "top-k", "K", "top_k of searches (default 10; locomo asks at least 10)"},
    {O_READ_RATIO, "read-ratio", "F", "mixed: share of searches, 0..1 (default 0.9)"},
    {O_DATA, "data", "DIR", "LoCoMo conversations (default " DEFAULT_LOCOMO ")"},
    {O_LIMIT, "limit", "N",
     "locomo: ask only the first N questions (and add only the "
     "conversations they need)"},
    {O_NO_LOAD, "no-load", NULL,
     "search/mixed: skip loading (the cubes of --cube-prefix and "
     "--seed are already there)"},
    {O_LOAD_CONCURRENCY, "load-concurrency", "N",
     "clients that load the corpus (default "
     "max(8, concurrency))"},
    {O_CUBE_PREFIX, "cube-prefix", "P",
     "cube ids are P-c<i> (locomo: P-locomo-<conv>); default "
     "bench-<time>, new every run"},
    {O_TIMEOUT, "timeout", "S", "seconds to wait for the server, per request (default 10)"},
    {O_ADD_FORMAT, "add-format", "F",
     "messages (default: [{role: user, content}]) or content "
     "(memory_content, one memory as it is)"},
    {O_ASYNC, "async", NULL,
     "send async_mode \"async\" (MemOS then answers before the memory "
     "is searchable)"},
    {O_SEARCH_JSON, "search-json", "OBJ",
     "extra fields for every search, a JSON object (locomo "
     "default {\"relativity\":0,\"dedup\":\"no\"})"},
    {O_JSON, "json", "FILE",
     "write the results as JSON (\"-\" = stdout; the table then goes to "
     "stderr)"},
    {O_REPORT, "report", "FILE", "write an HTML report with SVG plots"},
    {O_PROGRESS, "progress", NULL,
     "a progress line on stderr every second (default: when stderr "
     "is a terminal)"},
    {O_NO_PROGRESS, "no-progress", NULL, "no progress line"},
    {O_QUIET, "quiet", NULL, "no table"},
    {O_HELP, "help", NULL, "this text"},
};
#define NOPTIONS (sizeof options / sizeof options[0])

typedef struct cli {
    bench_config cfg;
    const char *prog;
    bool have_duration, have_requests, have_concurrency, have_warmup, have_load_concurrency,
        have_prefix, targets_from_argv, kinds_from_argv;
    size_t nkinds;
    int kinds[BENCH_MAX_TARGETS];
    const char *search_json;
    char *env_targets; /* MEMGRID_BENCH_TARGET, split in place */
} cli;

static int usage_error(const cli *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int usage_error(const cli *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", c->prog);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (see %s --help)\n", c->prog);
    va_end(ap);
    return 2;
}

static void print_help(const char *prog)
{
    printf(usage_head, prog);
    for (size_t i = 0; i < NOPTIONS; i++) {
        char left[48];
        snprintf(left, sizeof left, "--%s%s%s", options[i].name, options[i].arg ? " " : "",
                 options[i].arg ? options[i].arg : "");
        printf("  %-24s %s\n", left, options[i].help);
    }
    printf(usage_tail, prog, prog, prog, prog);
}

static bool parse_double(const char *s, double min, double max, double *out)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end != '\0' || !isfinite(v) || v < min || v > max)
        return false;
    *out = v;
    return true;
}

static bool parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    char *end;
    if (*s == '-' || *s == '\0')
        return false;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end != '\0' || v < min || v > max)
        return false;
    *out = v;
    return true;
}

static int parse_kind(const char *s)
{
    for (int k = 0; k < 2; k++)
        if (strcmp(s, bench_kind_names[k]) == 0)
            return k;
    return -1;
}

/* Applies one option. from_env: the value came from MEMGRID_BENCH_*. */
static int apply(cli *c, const option_def *o, const char *v, bool from_env)
{
    bench_config *cfg = &c->cfg;
    uint64_t u;
    double d;
    char name[40];
    snprintf(name, sizeof name, "--%s", o->name);
    switch (o->id) {
    case O_TARGET:
        if (!from_env && !c->targets_from_argv) {
            c->targets_from_argv = true;
            cfg->ntargets = 0; /* the command line replaces the environment's list */
        }
        if (cfg->ntargets == BENCH_MAX_TARGETS)
            return usage_error(c, "at most %d targets", BENCH_MAX_TARGETS);
        cfg->urls[cfg->ntargets++] = v;
        return 0;
    case O_KIND: {
        int k = parse_kind(v);
        if (k < 0)
            return usage_error(c, "--target-kind must be memgrid or memos, not \"%s\"", v);
        if (!from_env && !c->kinds_from_argv) {
            c->kinds_from_argv = true;
            c->nkinds = 0;
        }
        if (c->nkinds == BENCH_MAX_TARGETS)
            return usage_error(c, "at most %d --target-kind", BENCH_MAX_TARGETS);
        c->kinds[c->nkinds++] = k;
        return 0;
    }
    case O_WORKLOAD:
        for (int w = 0; w < 4; w++)
            if (strcmp(v, bench_workload_names[w]) == 0) {
                cfg->workload = w;
                return 0;
            }
        return usage_error(c, "--workload must be ingest, search, mixed or locomo, not \"%s\"", v);
    case O_COMPARE:
        cfg->compare = true;
        return 0;
    case O_CONCURRENCY:
        if (!parse_u64(v, 1, BENCH_MAX_CLIENTS, &u))
            return usage_error(c, "%s must be 1..1024", name);
        cfg->concurrency = (unsigned)u;
        c->have_concurrency = true;
        return 0;
    case O_RATE:
        if (!parse_double(v, 1e-3, 1e7, &d))
            return usage_error(c, "%s must be a rate > 0 (requests per second)", name);
        cfg->rate = d;
        return 0;
    case O_DURATION:
        if (!parse_double(v, 1e-3, 86400, &d))
            return usage_error(c, "%s must be seconds, > 0 and at most a day", name);
        cfg->duration_s = d;
        c->have_duration = true;
        return 0;
    case O_REQUESTS:
        if (!parse_u64(v, 1, UINT64_C(1) << 40, &u))
            return usage_error(c, "%s must be a positive count", name);
        cfg->requests = u;
        c->have_requests = true;
        return 0;
    case O_WARMUP:
        if (!parse_double(v, 0, 3600, &d))
            return usage_error(c, "%s must be seconds, 0..3600", name);
        cfg->warmup_s = d;
        c->have_warmup = true;
        return 0;
    case O_SEED:
        if (!parse_u64(v, 0, UINT64_MAX, &u))
            return usage_error(c, "%s must be an unsigned integer", name);
        cfg->seed = u;
        return 0;
    case O_CUBES:
        if (!parse_u64(v, 1, 1000000, &u))
            return usage_error(c, "%s must be 1..1000000", name);
        cfg->cubes = (size_t)u;
        return 0;
    case O_MEMORIES:
        if (!parse_u64(v, 0, 100000000, &u))
            return usage_error(c, "%s must be 0..100000000", name);
        cfg->memories = (size_t)u;
        return 0;
    case O_ZIPF:
        if (!parse_double(v, 0, 10, &d))
            return usage_error(c, "%s must be 0..10", name);
        cfg->zipf = d;
        return 0;
    case O_BATCH:
        if (!parse_u64(v, 1, 1000, &u))
            return usage_error(c, "%s must be 1..1000", name);
        cfg->batch = (unsigned)u;
        return 0;
    case O_TOPK:
        if (!parse_u64(v, 1, 1000, &u))
            return usage_error(c, "%s must be 1..1000", name);
        cfg->top_k = (unsigned)u;
        return 0;
    case O_READ_RATIO:
        if (!parse_double(v, 0, 1, &d))
            return usage_error(c, "%s must be 0..1", name);
        cfg->read_ratio = d;
        return 0;
    case O_DATA:
        cfg->data_dir = v;
        return 0;
    case O_LIMIT:
        if (!parse_u64(v, 0, SIZE_MAX, &u))
            return usage_error(c, "%s must be a count (0 = all)", name);
        cfg->limit = (size_t)u;
        return 0;
    case O_NO_LOAD:
        cfg->load = false;
        return 0;
    case O_LOAD_CONCURRENCY:
        if (!parse_u64(v, 1, BENCH_MAX_CLIENTS, &u))
            return usage_error(c, "%s must be 1..1024", name);
        cfg->load_concurrency = (unsigned)u;
        c->have_load_concurrency = true;
        return 0;
    case O_CUBE_PREFIX:
        if (strlen(v) == 0 || strlen(v) > 100 ||
            strspn(v, "abcdefghijklmnopqrstuvwxyz"
                      "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                      "0123456789_.:@-") != strlen(v))
            return usage_error(c, "--cube-prefix \"%s\": 1..100 bytes of [A-Za-z0-9_.:@-]", v);
        snprintf(cfg->cube_prefix, sizeof cfg->cube_prefix, "%s", v);
        c->have_prefix = true;
        return 0;
    case O_TIMEOUT:
        if (!parse_double(v, 0.001, 3600, &d))
            return usage_error(c, "%s must be seconds, 0.001..3600", name);
        cfg->timeout_ms = (unsigned)ceil(d * 1000);
        return 0;
    case O_ADD_FORMAT:
        if (strcmp(v, "messages") == 0)
            cfg->add_format = BENCH_ADD_MESSAGES;
        else if (strcmp(v, "content") == 0)
            cfg->add_format = BENCH_ADD_CONTENT;
        else
            return usage_error(c, "--add-format must be messages or content, not \"%s\"", v);
        return 0;
    case O_ASYNC:
        cfg->async_add = true;
        return 0;
    case O_SEARCH_JSON:
        c->search_json = v;
        return 0;
    case O_JSON:
        cfg->json_path = v;
        return 0;
    case O_REPORT:
        cfg->report_path = v;
        return 0;
    case O_PROGRESS:
        cfg->progress = 1;
        return 0;
    case O_NO_PROGRESS:
        cfg->progress = 0;
        return 0;
    case O_QUIET:
        cfg->quiet = true;
        return 0;
    }
    return 0;
}

static const option_def *find_option(const char *name, size_t len)
{
    for (size_t i = 0; i < NOPTIONS; i++)
        if (strlen(options[i].name) == len && strncmp(options[i].name, name, len) == 0)
            return &options[i];
    return NULL;
}

/* MEMGRID_BENCH_<NAME> for every option but --help; a flag is on when its
 * value is 1, true or yes; MEMGRID_BENCH_TARGET may list URLs split by
 * commas. */
static int read_env(cli *c)
{
    for (size_t i = 0; i < NOPTIONS; i++) {
        const option_def *o = &options[i];
        if (o->id == O_HELP)
            continue;
        char var[64] = "MEMGRID_BENCH_";
        size_t n = strlen(var);
        for (const char *p = o->name; *p && n + 1 < sizeof var; p++)
            var[n++] = *p == '-' ? '_' : (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
        var[n] = '\0';
        const char *v = getenv(var);
        if (v == NULL || *v == '\0')
            continue;
        if (o->arg == NULL) {
            if (strcmp(v, "1") == 0 || strcmp(v, "true") == 0 || strcmp(v, "yes") == 0) {
                int rc = apply(c, o, "", true);
                if (rc != 0)
                    return rc;
            }
            continue;
        }
        if (o->id == O_TARGET || o->id == O_KIND) {
            char *copy = strdup(v);
            if (copy == NULL)
                return 1;
            if (o->id == O_TARGET) {
                free(c->env_targets);
                c->env_targets = copy;
            }
            char *save = NULL;
            for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
                int rc = apply(c, o, tok, true);
                if (rc != 0) {
                    if (o->id == O_KIND)
                        free(copy);
                    return rc;
                }
            }
            if (o->id == O_KIND)
                free(copy); /* kinds are parsed, not kept */
            continue;
        }
        int rc = apply(c, o, v, true);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* Returns 0 to run, 2 on a usage error, -1 after --help. */
static int parse_args(cli *c, int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0)
            return usage_error(c, "unexpected argument \"%s\"", a);
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        const option_def *o = find_option(name, len);
        if (o == NULL)
            return usage_error(c, "unknown option \"%s\"", a);
        if (o->id == O_HELP) {
            print_help(c->prog);
            return -1;
        }
        const char *v = "";
        if (o->arg != NULL) {
            if (eq != NULL)
                v = eq + 1;
            else if (i + 1 < argc)
                v = argv[++i];
            else
                return usage_error(c, "%s needs a value", a);
        } else if (eq != NULL) {
            return usage_error(c, "%s takes no value", a);
        }
        int rc = apply(c, o, v, false);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* ",\"k\":v,..." from a JSON object given by the user. */
static int build_search_extra(cli *c, const char *text)
{
    json_error_t jerr;
    json_t *obj = json_loads(text, 0, &jerr);
    if (!json_is_object(obj)) {
        json_decref(obj);
        return usage_error(c, "--search-json must be a JSON object, got \"%s\"", text);
    }
    char *compact = json_dumps(obj, JSON_COMPACT);
    json_decref(obj);
    if (compact == NULL)
        return 1;
    /* compact is "{...}": keep what is inside the braces. */
    size_t n = strlen(compact);
    c->cfg.search_extra_json = compact;
    c->cfg.search_extra = malloc(n + 1);
    if (c->cfg.search_extra == NULL)
        return 1;
    if (n > 2)
        snprintf(c->cfg.search_extra, n + 1, ",%.*s", (int)(n - 2), compact + 1);
    else
        c->cfg.search_extra[0] = '\0';
    return 0;
}

/* Defaults that depend on other options, and the checks across options. */
static int resolve(cli *c)
{
    bench_config *cfg = &c->cfg;
    if (cfg->ntargets == 0)
        cfg->urls[cfg->ntargets++] = DEFAULT_TARGET;
    if (c->nkinds > 1 && c->nkinds != cfg->ntargets)
        return usage_error(c, "%zu --target-kind for %zu --target: give one for all or one each",
                           c->nkinds, cfg->ntargets);
    for (size_t i = 0; i < cfg->ntargets; i++)
        cfg->kinds[i] = c->nkinds == 0 ? BENCH_KIND_MEMGRID : c->kinds[c->nkinds == 1 ? 0 : i];
    if (cfg->compare && cfg->ntargets != 2)
        return usage_error(c, "--compare needs exactly two --target, got %zu", cfg->ntargets);
    if (c->have_duration && c->have_requests)
        return usage_error(c, "give --duration or --requests, not both");
    if (cfg->workload == BENCH_LOCOMO && (c->have_duration || c->have_requests))
        return usage_error(c, "--workload locomo makes one pass; --duration and --requests do "
                              "not apply");
    if (!c->have_concurrency)
        cfg->concurrency = cfg->rate > 0 ? 32 : 1;
    if (!c->have_load_concurrency)
        cfg->load_concurrency = cfg->concurrency > 8 ? cfg->concurrency : 8;
    if (cfg->workload == BENCH_LOCOMO)
        cfg->warmup_s = 0;
    if (cfg->add_format == BENCH_ADD_CONTENT && cfg->batch > 1)
        return usage_error(c, "--batch needs --add-format messages (memory_content is one "
                              "memory)");
    if (!c->have_prefix) {
        char tag[32];
        unsigned long long t = (unsigned long long)(mg_clock_wall_us() / 1000u);
        size_t n = 0;
        char digits[32];
        do {
            digits[n++] = "0123456789abcdefghijklmnopqrstuvwxyz"[t % 36];
            t /= 36;
        } while (t && n < sizeof digits);
        for (size_t i = 0; i < n; i++)
            tag[i] = digits[n - 1 - i];
        tag[n] = '\0';
        snprintf(cfg->cube_prefix, sizeof cfg->cube_prefix, "bench-%s", tag);
    }
    if (!cfg->load && !c->have_prefix && cfg->workload != BENCH_INGEST &&
        cfg->workload != BENCH_LOCOMO)
        return usage_error(c, "--no-load needs the --cube-prefix (and --seed) of the run that "
                              "loaded the cubes");
    const char *extra = c->search_json;
    if (extra == NULL && cfg->workload == BENCH_LOCOMO)
        extra = "{\"relativity\":0,\"dedup\":\"no\"}";
    if (extra != NULL)
        return build_search_extra(c, extra);
    return 0;
}

static void config_defaults(bench_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->workload = BENCH_SEARCH;
    cfg->duration_s = 10;
    cfg->warmup_s = 2;
    cfg->seed = 42;
    cfg->cubes = 16;
    cfg->memories = 4000;
    cfg->zipf = 1.0;
    cfg->batch = 1;
    cfg->top_k = 10;
    cfg->read_ratio = 0.9;
    cfg->data_dir = DEFAULT_LOCOMO;
    cfg->load = true;
    cfg->timeout_ms = 10000;
    cfg->progress = -1;
}

static void on_sigint(int sig)
{
    (void)sig;
    bench_request_stop();
}

/* Judges the run after the fact: 1 when a target could not be measured. */
static int judge(const bench_results *res, const char *prog)
{
    int rc = 0;
    for (size_t i = 0; i < res->ntargets; i++) {
        const bench_target *t = &res->targets[i];
        if (t->requests > 0 && t->errors == t->requests) {
            fprintf(stderr, "%s: every measured request to %s failed: %s\n", prog, t->url,
                    t->first_error);
            rc = 1;
        } else if (t->requests == 0 && !res->interrupted) {
            fprintf(stderr, "%s: no request to %s was measured\n", prog, t->url);
            rc = 1;
        }
    }
    return rc;
}

int mg_bench_main(int argc, char **argv)
{
    cli c;
    memset(&c, 0, sizeof c);
    /* `memgrid` hands over its arguments from the subcommand's name on. */
    c.prog = argc > 0 && argv[0] && strcmp(argv[0], "bench") != 0 ? argv[0] : "memgrid bench";
    config_defaults(&c.cfg);
    int rc = read_env(&c);
    if (rc == 0)
        rc = parse_args(&c, argc, argv);
    if (rc == 0)
        rc = resolve(&c);
    if (rc != 0) {
        free(c.env_targets);
        free(c.cfg.search_extra);
        free(c.cfg.search_extra_json);
        return rc < 0 ? 0 : rc;
    }
    bench_config *cfg = &c.cfg;
    bench_results res;
    memset(&res, 0, sizeof res);
    res.ntargets = cfg->ntargets;
    mg_error err;
    mg_error_clear(&err);
    for (size_t i = 0; i < cfg->ntargets; i++) {
        bench_target *t = &res.targets[i];
        snprintf(t->label, sizeof t->label, "%c", (char)('A' + i));
        t->url = cfg->urls[i];
        t->kind = cfg->kinds[i];
        int prc = mg_http_target_parse(cfg->urls[i], &t->http, &err);
        if (prc != MG_OK) {
            fprintf(stderr, "%s: %s\n", c.prog, err.msg);
            rc = prc == MG_EINVAL ? 2 : 1;
            goto done;
        }
        for (int op = 0; op < BENCH_OPS; op++)
            if ((t->ops[op].hist = mg_hist_new()) == NULL) {
                fprintf(stderr, "%s: out of memory\n", c.prog);
                rc = 1;
                goto done;
            }
    }

    struct sigaction sa, old_sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_sa);
    int run_rc = bench_run(cfg, &res, &err);
    sigaction(SIGINT, &old_sa, NULL);
    if (run_rc != MG_OK) {
        fprintf(stderr, "%s: %s\n", c.prog, err.msg);
        rc = 1;
        goto done;
    }

    bool json_stdout = cfg->json_path != NULL && strcmp(cfg->json_path, "-") == 0;
    if (!cfg->quiet)
        bench_print_table(&res, json_stdout ? stderr : stdout);
    if (cfg->json_path != NULL && bench_write_json(&res, cfg->json_path, &err) != MG_OK) {
        fprintf(stderr, "%s: %s\n", c.prog, err.msg);
        rc = 1;
    }
    if (cfg->report_path != NULL && bench_write_html(&res, cfg->report_path, &err) != MG_OK) {
        fprintf(stderr, "%s: %s\n", c.prog, err.msg);
        rc = 1;
    }
    if (rc == 0)
        rc = judge(&res, c.prog);

done:
    bench_results_free(&res);
    free(c.env_targets);
    free(cfg->search_extra);
    free(cfg->search_extra_json);
    return rc;
}
