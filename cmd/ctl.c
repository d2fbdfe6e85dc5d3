/*
 * memgrid ctl: the admin CLI (DESIGN §2). It talks to a router's native
 * admin API over HTTP (libcurl) and prints what it answers.
 *
 *   stats   GET /admin/stats: latency percentiles and counts per endpoint,
 *           router stage, node op and node stage, merged across the router
 *           and every node; a table, or the JSON with --json.
 *
 * The cluster commands (status, nodes, groups, ...) are named so that
 * --help describes the whole tool; they answer "not yet available".
 */
#include "memgrid.h"
#include "common.h"

#include <curl/curl.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CTL_DEFAULT_ROUTER "http://127.0.0.1:8000"
#define CTL_DEFAULT_TIMEOUT_S 10
#define CTL_MAX_ANSWER (64u << 20)

typedef struct ctl_opts {
    const char *router;
    long timeout_s;
    bool json;
    const char *command;
} ctl_opts;

typedef struct ctl_command {
    const char *name;
    const char *summary;
    int (*run)(const ctl_opts *o); /* NULL: not yet available */
} ctl_command;

static int ctl_stats(const ctl_opts *o);

static const ctl_command commands[] = {
    {"stats",
     "latency percentiles (p50/p90/p99/p99.9/max) and counts per endpoint, stage and node\n"
     "            op, merged across the router and every node",
     ctl_stats},
    {"status", "cluster health: nodes, groups, leaders", NULL},
    {"nodes", "list, add and remove data nodes", NULL},
    {"groups", "shard groups, their replicas and slots", NULL},
    {"rebalance", "move slots between groups", NULL},
};
#define N_COMMANDS (sizeof commands / sizeof commands[0])

static void ctl_usage(FILE *out)
{
    fprintf(out, "usage: memgrid ctl [--router URL] [--timeout S] <command> [--json]\n\n"
                 "The admin CLI: asks a router's admin API (/admin/*) and prints the answer.\n\n"
                 "commands:\n");
    for (size_t i = 0; i < N_COMMANDS; i++)
        fprintf(out, "  %-9s %s%s\n", commands[i].name, commands[i].summary,
                commands[i].run ? "" : " (not yet available)");
    fprintf(out,
            "\noptions (anywhere on the line):\n"
            "  --router URL  the router's base URL (MEMGRID_ROUTER; default %s)\n"
            "  --timeout S   seconds to wait for the answer (default %d)\n"
            "  --json        print the answer as JSON instead of a table\n"
            "  -h, --help    this help\n\n"
            "stats: one row per endpoint (the router, from a request's first byte to its\n"
            "answer), per stage of adds and searches on the router (parse, embed, route,\n"
            "scatter, merge), per wire op on the nodes (receipt to reply, all nodes merged)\n"
            "and per node stage (propose_commit: a write's proposal until applied on the\n"
            "leader; apply: the store apply of one Raft entry; scan: a search's scan).\n"
            "Times in milliseconds from log-linear\n"
            "histograms (under 0.4 %% error; max exact), counted since each process\n"
            "started. Only rows with requests are shown. --json prints the data of\n"
            "GET /admin/stats (docs/API.md).\n\n"
            "exit codes: 0 ok, 1 runtime failure (router unreachable or failing), 2 usage\n"
            "error (including commands not yet available)\n",
            CTL_DEFAULT_ROUTER, CTL_DEFAULT_TIMEOUT_S);
}

static int usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "memgrid ctl: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, " (see memgrid ctl --help)\n");
    return MG_EXIT_USAGE;
}

/* Fills o from the environment and argv; returns -1 after --help, an exit
 * code (> 0) on a usage error, 0 to go on. */
static int parse_args(int argc, char **argv, ctl_opts *o)
{
    memset(o, 0, sizeof *o);
    o->router = CTL_DEFAULT_ROUTER;
    o->timeout_s = CTL_DEFAULT_TIMEOUT_S;
    const char *env = getenv("MEMGRID_ROUTER");
    if (env != NULL && *env != '\0')
        o->router = env;
    for (int i = 0; i < argc; i++) {
        char flag[16];
        const char *val;
        const char *a = mg_cmd_split_flag(argv[i], flag, sizeof flag, &val);
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0 || strcmp(a, "help") == 0) {
            ctl_usage(stdout);
            return -1;
        }
        if (strcmp(a, "--json") == 0 && val == NULL) {
            o->json = true;
        } else if (strcmp(a, "--router") == 0 || strcmp(a, "--timeout") == 0) {
            if (val == NULL) {
                if (i + 1 >= argc)
                    return usage_error("%s needs a value", a);
                val = argv[++i];
            }
            if (strcmp(a, "--router") == 0) {
                if (strncmp(val, "http://", 7) != 0 && strncmp(val, "https://", 8) != 0)
                    return usage_error("--router \"%s\" is not an http:// URL", val);
                o->router = val;
            } else {
                char *end;
                o->timeout_s = strtol(val, &end, 10);
                if (*val == '\0' || *end != '\0' || o->timeout_s < 1 || o->timeout_s > 3600)
                    return usage_error("--timeout \"%s\" is not a number of seconds in 1..3600",
                                       val);
            }
        } else if (a[0] == '-') {
            return usage_error("unknown option \"%s\"", argv[i]);
        } else if (o->command == NULL) {
            o->command = a;
        } else {
            return usage_error("unexpected argument \"%s\"", a);
        }
    }
    if (o->command == NULL) {
        fprintf(stderr, "memgrid ctl: a command is required\n\n");
        ctl_usage(stderr);
        return MG_EXIT_USAGE;
    }
    return 0;
}

/* ---- HTTP ----------------------------------------------------------------- */

typedef struct body_buf {
    char *data;
    size_t len;
    bool too_big;
} body_buf;

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *arg)
{
    body_buf *b = arg;
    size_t n = size * nmemb;
    if (b->len + n > CTL_MAX_ANSWER) {
        b->too_big = true;
        return 0;
    }
    char *grown = realloc(b->data, b->len + n + 1);
    if (grown == NULL)
        return 0;
    memcpy(grown + b->len, ptr, n);
    b->data = grown;
    b->len += n;
    b->data[b->len] = '\0';
    return n;
}

/* GETs router + path and parses the MemOS-style envelope; *data is the
 * envelope's data (a new reference). Prints what went wrong and returns an
 * exit code. */
static int get_enveloped(const ctl_opts *o, const char *path, json_t **data, const char **message)
{
    static char msg[512];
    char url[1024];
    size_t rl = strlen(o->router);
    while (rl > 0 && o->router[rl - 1] == '/')
        rl--;
    if (rl + strlen(path) >= sizeof url)
        return usage_error("--router \"%s\" is too long", o->router);
    snprintf(url, sizeof url, "%.*s%s", (int)rl, o->router, path);

    CURL *curl = curl_easy_init();
    if (curl == NULL) {
        fprintf(stderr, "memgrid ctl: cannot initialise libcurl\n");
        return MG_EXIT_FAILURE;
    }
    body_buf b = {0};
    char curl_err[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, curl_err);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, o->timeout_s);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, o->timeout_s < 5 ? o->timeout_s : 5L);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_USERAGENT, "memgrid-ctl/" MEMGRID_VERSION);
    CURLcode cc = curl_easy_perform(curl);
    long status = 0;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(curl);
    int code = MG_EXIT_FAILURE;
    json_t *doc = NULL;
    if (cc != CURLE_OK) {
        if (b.too_big)
            fprintf(stderr, "memgrid ctl: the answer from %s is larger than %u bytes\n", url,
                    CTL_MAX_ANSWER);
        else
            fprintf(stderr,
                    "memgrid ctl: cannot reach the router at %.*s: %s\n"
                    "(is memgrid running there? set --router URL or MEMGRID_ROUTER)\n",
                    (int)rl, o->router, curl_err[0] ? curl_err : curl_easy_strerror(cc));
        goto done;
    }
    json_error_t jerr;
    doc = b.data ? json_loadb(b.data, b.len, 0, &jerr) : NULL;
    json_t *jc = json_object_get(doc, "code");
    if (!json_is_object(doc) || !json_is_integer(jc)) {
        fprintf(stderr, "memgrid ctl: %s answered HTTP %ld without a memgrid envelope%s\n", url,
                status, status == 404 ? " (is it a memgrid router of this version?)" : "");
        goto done;
    }
    const char *m = json_string_value(json_object_get(doc, "message"));
    snprintf(msg, sizeof msg, "%s", m ? m : "");
    if (json_integer_value(jc) != 200 || status != 200) {
        fprintf(stderr, "memgrid ctl: %s answered %ld: %s\n", url, status, msg);
        goto done;
    }
    *data = json_incref(json_object_get(doc, "data"));
    *message = msg;
    code = MG_EXIT_OK;
done:
    json_decref(doc);
    free(b.data);
    return code;
}

/* ---- stats ---------------------------------------------------------------- */

static void print_ms(double ms)
{
    if (ms < 10)
        printf(" %9.3f", ms);
    else if (ms < 1000)
        printf(" %9.2f", ms);
    else
        printf(" %9.0f", ms);
}

static void print_row(const char *name, const json_t *row, bool errors)
{
    static const char *const keys[] = {"p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms"};
    printf("  %-40s %9lld", name, (long long)json_integer_value(json_object_get(row, "count")));
    if (errors)
        printf(" %7lld", (long long)json_integer_value(json_object_get(row, "errors")));
    else
        printf(" %7s", "");
    for (size_t i = 0; i < 5; i++)
        print_ms(json_number_value(json_object_get(row, keys[i])));
    printf("\n");
}

static void print_header(const char *title)
{
    printf("%-42s %9s %7s %9s %9s %9s %9s %9s\n", title, "count", "errors", "p50 ms", "p90 ms",
           "p99 ms", "p99.9 ms", "max ms");
}

static void print_table(const ctl_opts *o, const json_t *d)
{
    const json_t *cl = json_object_get(d, "cluster");
    printf("router %s: %lld of %lld nodes answered; %lld groups led, %lld memories in %lld "
           "cubes\n\n",
           o->router, (long long)json_integer_value(json_object_get(cl, "nodes_up")),
           (long long)json_integer_value(json_object_get(cl, "nodes")),
           (long long)json_integer_value(json_object_get(cl, "leaders")),
           (long long)json_integer_value(json_object_get(cl, "memories")),
           (long long)json_integer_value(json_object_get(cl, "cubes")));
    const json_t *endpoints = json_object_get(d, "endpoints");
    const json_t *stages = json_object_get(d, "stages");
    size_t i, j;
    const json_t *row, *st;
    print_header("endpoint (router)");
    if (json_array_size(endpoints) == 0)
        printf("  (no requests yet)\n");
    json_array_foreach(endpoints, i, row)
    {
        const char *ep = json_string_value(json_object_get(row, "endpoint"));
        print_row(ep ? ep : "?", row, true);
        json_array_foreach(stages, j, st)
        {
            const char *sep = json_string_value(json_object_get(st, "endpoint"));
            const char *name = json_string_value(json_object_get(st, "stage"));
            if (sep == NULL || ep == NULL || strcmp(sep, ep) != 0 || name == NULL)
                continue;
            char label[64];
            snprintf(label, sizeof label, "  %s", name);
            print_row(label, st, false);
        }
    }
    const json_t *ops = json_object_get(d, "ops");
    printf("\n");
    print_header("op (nodes, merged)");
    if (json_array_size(ops) == 0)
        printf("  (none)\n");
    json_array_foreach(ops, i, row)
    {
        const char *op = json_string_value(json_object_get(row, "op"));
        print_row(op ? op : "?", row, true);
    }
    const json_t *ns = json_object_get(d, "node_stages");
    if (json_array_size(ns) > 0) {
        printf("\n");
        print_header("node stage (merged)");
        json_array_foreach(ns, i, row)
        {
            const char *name = json_string_value(json_object_get(row, "stage"));
            print_row(name ? name : "?", row, false);
        }
    }
}

static int ctl_stats(const ctl_opts *o)
{
    json_t *data = NULL;
    const char *message = NULL;
    int code = get_enveloped(o, "/admin/stats", &data, &message);
    if (code != MG_EXIT_OK)
        return code;
    if (!json_is_object(data)) {
        fprintf(stderr, "memgrid ctl: /admin/stats answered no stats\n");
        json_decref(data);
        return MG_EXIT_FAILURE;
    }
    const json_t *nodes = json_object_get(data, "nodes");
    size_t i;
    const json_t *n;
    json_array_foreach(nodes, i, n)
    {
        if (!json_is_true(json_object_get(n, "up")))
            fprintf(stderr,
                    "memgrid ctl: warning: node %lld did not answer (%s); its figures "
                    "are missing\n",
                    (long long)json_integer_value(json_object_get(n, "node")),
                    json_string_value(json_object_get(n, "error"))
                        ? json_string_value(json_object_get(n, "error"))
                        : "?");
    }
    if (o->json) {
        char *text = json_dumps(data, JSON_INDENT(2) | JSON_REAL_PRECISION(6));
        if (text == NULL) {
            fprintf(stderr, "memgrid ctl: out of memory\n");
            json_decref(data);
            return MG_EXIT_FAILURE;
        }
        printf("%s\n", text);
        free(text);
    } else {
        print_table(o, data);
    }
    json_decref(data);
    return fflush(stdout) == 0 ? MG_EXIT_OK : MG_EXIT_FAILURE;
}

int mg_cmd_ctl(int argc, char **argv)
{
    ctl_opts o;
    int rc = parse_args(argc, argv, &o);
    if (rc != 0)
        return rc < 0 ? MG_EXIT_OK : rc;
    for (size_t i = 0; i < N_COMMANDS; i++) {
        if (strcmp(o.command, commands[i].name) != 0)
            continue;
        if (commands[i].run == NULL) {
            fprintf(stderr,
                    "memgrid ctl %s: not yet available in this build (only `memgrid ctl stats` "
                    "is)\n",
                    o.command);
            return MG_EXIT_USAGE;
        }
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0) {
            fprintf(stderr, "memgrid ctl: cannot initialise libcurl\n");
            return MG_EXIT_FAILURE;
        }
        rc = commands[i].run(&o);
        curl_global_cleanup();
        return rc;
    }
    return usage_error("unknown command \"%s\"", o.command);
}
