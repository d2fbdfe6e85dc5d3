/*
 * memgrid ctl: the admin CLI (DESIGN §2). It talks to a router's admin API
 * (docs/API.md "Admin API (cluster)") over HTTP with libcurl and prints the
 * answer as tables for people or, with --json, the answer's "data" as one
 * pretty JSON document for scripts.
 *
 * One table describes every command: its options (parsed and checked here,
 * so a malformed argument exits 2 before anything is sent), its help text,
 * its default timeout (10 s for reads, 600 s for long operations) and the
 * function that asks the router and prints the answer (the tables are in
 * cmd/ctl_print.c).
 */
#include "memgrid.h"
#include "common.h"
#include "ctl_internal.h"

#include "../lib/cmap.h"

#include <curl/curl.h>
#include <jansson.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CTL_DEFAULT_ROUTER "http://127.0.0.1:8000"
#define CTL_READ_TIMEOUT_S 10
#define CTL_BALANCE_TIMEOUT_S 60
#define CTL_LONG_TIMEOUT_S 600
#define CTL_MAX_ANSWER (64u << 20)
#define CTL_OPTS_MAX 4

enum ctl_kind { CTL_UINT, CTL_TEXT, CTL_FLAG };

typedef struct ctl_optspec {
    const char *flag; /* NULL ends the list */
    enum ctl_kind kind;
    bool required;
    unsigned min, max; /* CTL_UINT */
    const char *help;  /* "--flag X  what" line of the command's help */
} ctl_optspec;

/* The parsed options of a command, by position in its optspec list. */
typedef struct ctl_vals {
    bool set[CTL_OPTS_MAX];
    unsigned num[CTL_OPTS_MAX];
    const char *text[CTL_OPTS_MAX];
} ctl_vals;

typedef struct ctl_command ctl_command;
struct ctl_command {
    const char *name;
    const char *synopsis; /* the arguments after the name */
    const char *summary;  /* one line for `memgrid ctl --help` */
    const char *help;     /* the rest of `memgrid ctl <name> --help` */
    long timeout_s;       /* the default --timeout */
    ctl_optspec opts[CTL_OPTS_MAX + 1];
    int (*run)(const ctl_opts *o, const ctl_command *c, const ctl_vals *v);
};

static int ctl_status(const ctl_opts *o, const ctl_command *c, const ctl_vals *v);
static int ctl_nodes(const ctl_opts *o, const ctl_command *c, const ctl_vals *v);
static int ctl_groups(const ctl_opts *o, const ctl_command *c, const ctl_vals *v);
static int ctl_slots(const ctl_opts *o, const ctl_command *c, const ctl_vals *v);
static int ctl_stats(const ctl_opts *o, const ctl_command *c, const ctl_vals *v);
static int ctl_init(const ctl_opts *o, const ctl_command *c, const ctl_vals *v);
static int ctl_add_node(const ctl_opts *o, const ctl_command *c, const ctl_vals *v);
static int ctl_remove_node(const ctl_opts *o, const ctl_command *c, const ctl_vals *v);
static int ctl_transfer_leader(const ctl_opts *o, const ctl_command *c, const ctl_vals *v);
static int ctl_move_replica(const ctl_opts *o, const ctl_command *c, const ctl_vals *v);
static int ctl_rebalance(const ctl_opts *o, const ctl_command *c, const ctl_vals *v);
static int ctl_balance_leaders(const ctl_opts *o, const ctl_command *c, const ctl_vals *v);

#define GROUP_MAX (MG_CMAP_GROUPS_MAX - 1)

static const ctl_command commands[] = {
    {"status",
     "",
     "cluster health: nodes, groups, leaders, replica lag; exit 1 unless healthy",
     "GET /admin/status. Prints the nodes (id, rpc URL, up, replicas, leaders) and the groups\n"
     "(id, slots, leader, term, applied index, each replica's state and lag behind the\n"
     "leader). Exits 0 when the cluster is healthy (every node up, every group has a leader,\n"
     "no replica more than 1000 entries behind) and 1 otherwise, so scripts can wait on it:\n"
     "  until memgrid ctl status >/dev/null; do sleep 1; done\n",
     CTL_READ_TIMEOUT_S,
     {{NULL}},
     ctl_status},
    {"nodes",
     "",
     "the data nodes of the cluster map",
     "GET /admin/nodes: id, rpc and survey URLs, raft address, state (up or removing),\n"
     "whether it answers, and the groups it hosts replicas of.\n",
     CTL_READ_TIMEOUT_S,
     {{NULL}},
     ctl_nodes},
    {"groups",
     "",
     "the shard groups: replicas, leader, slots, memories",
     "GET /admin/groups: id, replica nodes, leader, term, applied index, slots owned (count\n"
     "and ranges), memories and cubes. Group 0 is the meta group (it owns no slot).\n",
     CTL_READ_TIMEOUT_S,
     {{NULL}},
     ctl_groups},
    {"slots",
     "[--cube ID]",
     "the slot map; with --cube, where a cube lives",
     "GET /admin/slots: the map's epoch, its slot ranges (first, last, group) and the slots\n"
     "per group. With --cube ID also the cube's slot and the group that owns it.\n",
     CTL_READ_TIMEOUT_S,
     {{"--cube", CTL_TEXT, false, 0, 0,
       "  --cube ID          a cube id (any text; sent URL-encoded)"},
      {NULL}},
     ctl_slots},
    {"stats",
     "",
     "latency percentiles and counts per endpoint, stage and node op (all nodes merged)",
     "GET /admin/stats: one row per endpoint (the router, from a request's first byte to its\n"
     "answer), per stage of adds and searches on the router (parse, embed, route, scatter,\n"
     "merge), per wire op on the nodes (receipt to reply, all nodes merged) and per node\n"
     "stage (propose_commit: a write's proposal until applied on the leader; apply: the store\n"
     "apply of one Raft entry; scan: a search's scan). Times in milliseconds from log-linear\n"
     "histograms (under 0.4 % error; max exact), counted since each process started. Only\n"
     "rows with requests are shown. An op's REDIRECTS are replies the router re-sends by\n"
     "design (ENOTLEADER, EWRONGGROUP, EBUSY: the leader is elsewhere, the map was stale, a\n"
     "new leader is catching up); its errors are the other replies that are not OK.\n",
     CTL_READ_TIMEOUT_S,
     {{NULL}},
     ctl_stats},
    {"init",
     "--groups G --replicas R [--nodes URL,URL...]",
     "initialize a new cluster: the meta group and G data groups of R replicas",
     "POST /admin/init: asks every node who it is, places group 0 (meta) and groups 1..G with\n"
     "R replicas each (never two on one node), splits the 4096 slots evenly over the data\n"
     "groups, opens the replicas and stores the map. Refused (exit 1) when the cluster is\n"
     "already initialized or R is more than the nodes. Prints the new map.\n",
     CTL_LONG_TIMEOUT_S,
     {{"--groups", CTL_UINT, true, 1, GROUP_MAX, "  --groups G         data groups, 1..255"},
      {"--replicas", CTL_UINT, true, 1, MG_CMAP_REPLICAS_MAX,
       "  --replicas R       replicas per group, 1..7"},
      {"--nodes", CTL_TEXT, false, 0, 0,
       "  --nodes URL,...    the nodes' rpc URLs (tcp://host:port); default the router's seeds"},
      {NULL}},
     ctl_init},
    {"add-node",
     "--rpc URL",
     "add a running node to the cluster map",
     "POST /admin/nodes: asks the node at URL who it is (its id, survey URL and raft address)\n"
     "and adds it to the map. It hosts nothing until move-replica or rebalance places\n"
     "replicas on it.\n",
     CTL_READ_TIMEOUT_S,
     {{"--rpc", CTL_TEXT, true, 0, 0, "  --rpc URL          the node's rpc URL (tcp://host:port)"},
      {NULL}},
     ctl_add_node},
    {"remove-node",
     "--id N",
     "move every replica off a node, then drop it from the map",
     "POST /admin/nodes/remove: marks the node removing, moves each replica it hosts to the\n"
     "least-loaded node not hosting that group, then drops it from the map. Answers when\n"
     "done (refused when some replica has nowhere to go). Prints the moves.\n",
     CTL_LONG_TIMEOUT_S,
     {{"--id", CTL_UINT, true, 1, UINT_MAX, "  --id N             the node's id"}, {NULL}},
     ctl_remove_node},
    {"transfer-leader",
     "--group G [--to N]",
     "make another replica the leader of a group",
     "POST /admin/transfer-leader: asks the group's leader to hand leadership to node N (any\n"
     "other voter when --to is absent). Prints the new leader.\n",
     CTL_READ_TIMEOUT_S,
     {{"--group", CTL_UINT, true, 0, GROUP_MAX, "  --group G          the group (0 = meta)"},
      {"--to", CTL_UINT, false, 1, UINT_MAX, "  --to N             the node to lead it"},
      {NULL}},
     ctl_transfer_leader},
    {"move-replica",
     "--group G --from N --to M",
     "move a group's replica from one node to another",
     "POST /admin/move-replica: opens a replica of G on node M, adds it to the group (it\n"
     "catches up by log or snapshot before it votes), then removes the replica on node N\n"
     "(moving leadership away first). Answers when done; prints the group's replicas.\n",
     CTL_LONG_TIMEOUT_S,
     {{"--group", CTL_UINT, true, 0, GROUP_MAX, "  --group G          the group (0 = meta)"},
      {"--from", CTL_UINT, true, 1, UINT_MAX,
       "  --from N           the node giving up its replica"},
      {"--to", CTL_UINT, true, 1, UINT_MAX, "  --to M             the node receiving it"},
      {NULL}},
     ctl_move_replica},
    {"rebalance",
     "[--to-group G | --new-group [--replicas R]] [--slots SPEC]",
     "move slots between data groups while writes keep running",
     "POST /admin/rebalance: moves slots and the cubes in them to another group with writes\n"
     "running (writes to a moving slot wait for the switch; none is lost). Without a target,\n"
     "spreads the slots evenly over all data groups; --to-group G gives G an even share (or\n"
     "--slots); --new-group creates a group (R replicas, default the others') and gives it a\n"
     "share. Answers when done; prints what moved.\n",
     CTL_LONG_TIMEOUT_S,
     {{"--to-group", CTL_UINT, false, 1, GROUP_MAX, "  --to-group G       an existing data group"},
      {"--new-group", CTL_FLAG, false, 0, 0, "  --new-group        a new data group"},
      {"--replicas", CTL_UINT, false, 1, MG_CMAP_REPLICAS_MAX,
       "  --replicas R       replicas of the new group, 1..7"},
      {"--slots", CTL_TEXT, false, 0, 0,
       "  --slots SPEC       the slots to move, e.g. 0-511,900 (ranges inclusive, 0..4095)"},
      {NULL}},
     ctl_rebalance},
    {"balance-leaders",
     "",
     "make each group led by its first replica, spreading leaders over the nodes",
     "POST /admin/balance-leaders: for each group with more than one replica whose leader\n"
     "is not its first replica (the first node in its replica list, as init placed them:\n"
     "spread over the nodes) and whose first replica's node answers, asks the leader to hand\n"
     "leadership to it. Init does this by itself; run it after a failover or a restart left\n"
     "one node leading most groups. Prints the transfers made.\n",
     CTL_BALANCE_TIMEOUT_S,
     {{NULL}},
     ctl_balance_leaders},
};
#define N_COMMANDS (sizeof commands / sizeof commands[0])

/* ---- usage ---------------------------------------------------------------- */

static void ctl_usage(FILE *out)
{
    fprintf(out, "usage: memgrid ctl [--router URL] [--timeout S] [--json] <command> [options]\n"
                 "       memgrid ctl <command> --help\n\n"
                 "The admin CLI: asks a router's admin API (/admin/*) and prints the answer.\n\n"
                 "commands:\n");
    for (size_t i = 0; i < N_COMMANDS; i++)
        fprintf(out, "  %-16s %s\n", commands[i].name, commands[i].summary);
    fprintf(out,
            "\noptions (anywhere on the line):\n"
            "  --router URL  the router's base URL (MEMGRID_ROUTER; default %s)\n"
            "  --timeout S   seconds to wait for the answer, 1..3600 (default %d; %d for\n"
            "                balance-leaders; %d for init, remove-node, move-replica and\n"
            "                rebalance)\n"
            "  --json        print the answer's data as JSON instead of tables\n"
            "  -h, --help    this help; after a command, the command's\n\n"
            "exit codes: 0 ok, 1 the router answered an error or is unreachable (or, for\n"
            "status, the cluster is not healthy), 2 usage error\n",
            CTL_DEFAULT_ROUTER, CTL_READ_TIMEOUT_S, CTL_BALANCE_TIMEOUT_S, CTL_LONG_TIMEOUT_S);
}

static void command_usage(const ctl_command *c, FILE *out)
{
    fprintf(out, "usage: memgrid ctl [--router URL] [--timeout S] [--json] %s%s%s\n\n%s", c->name,
            c->synopsis[0] ? " " : "", c->synopsis, c->help);
    if (c->opts[0].flag != NULL) {
        fprintf(out, "\noptions:\n");
        for (const ctl_optspec *s = c->opts; s->flag != NULL; s++)
            fprintf(out, "%s\n", s->help);
    }
    fprintf(out,
            "\n--json prints the answer's data as one JSON document. Default timeout %ld s.\n"
            "Exit codes: 0 ok, 1 failure, 2 usage error.\n",
            c->timeout_s);
}

/* Prints "memgrid ctl: <why> (see memgrid ctl [cmd] --help)"; MG_EXIT_USAGE. */
static int usage_error(const ctl_command *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int usage_error(const ctl_command *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "memgrid ctl: ");
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (see memgrid ctl %s%s--help)\n", c ? c->name : "", c ? " " : "");
    return MG_EXIT_USAGE;
}

static const ctl_command *find_command(const char *name)
{
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (strcmp(name, commands[i].name) == 0)
            return &commands[i];
    return NULL;
}

/* ---- arguments ------------------------------------------------------------ */

/* A global option at argv[*i] (advancing *i past its value); 1 when it was
 * one, 0 when not, or an exit code (> 1) after a usage error. */
static int global_option(int argc, char **argv, int *i, ctl_opts *o, const ctl_command *c)
{
    char flag[16];
    const char *val;
    const char *a = mg_cmd_split_flag(argv[*i], flag, sizeof flag, &val);
    if (strcmp(a, "--json") == 0 && val == NULL) {
        o->json = true;
        return 1;
    }
    if (strcmp(a, "--router") != 0 && strcmp(a, "--timeout") != 0)
        return 0;
    if (val == NULL) {
        if (*i + 1 >= argc)
            return usage_error(c, "%s needs a value", a);
        val = argv[++*i];
    }
    if (strcmp(a, "--router") == 0) {
        if (strncmp(val, "http://", 7) != 0 && strncmp(val, "https://", 8) != 0)
            return usage_error(c, "--router \"%s\" is not an http:// URL", val);
        o->router = val;
    } else {
        unsigned t;
        if (mg_cmd_parse_uint(val, 1, 3600, &t) != 0)
            return usage_error(c, "--timeout \"%s\" is not a number of seconds in 1..3600", val);
        o->timeout_s = (long)t;
    }
    return 1;
}

/* A command option at argv[*i] into v; MG_EXIT_OK or MG_EXIT_USAGE. */
static int command_option(const ctl_command *c, int argc, char **argv, int *i, ctl_vals *v)
{
    char flag[32];
    const char *val;
    const char *a = mg_cmd_split_flag(argv[*i], flag, sizeof flag, &val);
    if (a[0] != '-')
        return usage_error(c, "unexpected argument \"%s\"", a);
    for (size_t k = 0; c->opts[k].flag != NULL; k++) {
        const ctl_optspec *s = &c->opts[k];
        if (strcmp(a, s->flag) != 0)
            continue;
        if (s->kind == CTL_FLAG) {
            if (val != NULL)
                return usage_error(c, "%s takes no value", s->flag);
            v->set[k] = true;
            return MG_EXIT_OK;
        }
        if (val == NULL) {
            if (*i + 1 >= argc)
                return usage_error(c, "%s needs a value", s->flag);
            val = argv[++*i];
        }
        if (s->kind == CTL_UINT && mg_cmd_parse_uint(val, s->min, s->max, &v->num[k]) != 0)
            return usage_error(c, "%s \"%s\" is not a number in %u..%u", s->flag, val, s->min,
                               s->max);
        if (s->kind == CTL_TEXT && val[0] == '\0')
            return usage_error(c, "%s needs a value", s->flag);
        v->text[k] = val;
        v->set[k] = true;
        return MG_EXIT_OK;
    }
    return usage_error(c, "unknown option \"%s\"", argv[*i]);
}

/* Fills o, *cmd and v from the environment and argv; -1 after printing
 * help, an exit code (> 0) on a usage error, 0 to go on. Global options
 * may come anywhere; the command's own options come after its name. */
static int parse_args(int argc, char **argv, ctl_opts *o, const ctl_command **cmd, ctl_vals *v)
{
    memset(o, 0, sizeof *o);
    memset(v, 0, sizeof *v);
    *cmd = NULL;
    o->router = CTL_DEFAULT_ROUTER;
    const char *env = getenv("MEMGRID_ROUTER");
    if (env != NULL && *env != '\0')
        o->router = env;
    /* help wins over any other mistake on the line */
    const ctl_command *c = NULL;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (c == NULL && a[0] != '-' &&
            (i == 0 ||
             (strcmp(argv[i - 1], "--router") != 0 && strcmp(argv[i - 1], "--timeout") != 0)))
            c = find_command(a);
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0 ||
            (c == NULL && strcmp(a, "help") == 0)) {
            if (c != NULL)
                command_usage(c, stdout);
            else if (strcmp(a, "help") == 0 && i + 1 < argc && find_command(argv[i + 1]))
                command_usage(find_command(argv[i + 1]), stdout);
            else
                ctl_usage(stdout);
            return -1;
        }
    }
    c = NULL;
    for (int i = 0; i < argc; i++) {
        int rc = global_option(argc, argv, &i, o, c);
        if (rc > 1)
            return rc;
        if (rc == 1)
            continue;
        if (c != NULL) {
            rc = command_option(c, argc, argv, &i, v);
            if (rc != MG_EXIT_OK)
                return rc;
        } else if (argv[i][0] == '-') {
            return usage_error(NULL, "unknown option \"%s\"", argv[i]);
        } else if ((c = find_command(argv[i])) == NULL) {
            return usage_error(NULL, "unknown command \"%s\"", argv[i]);
        }
    }
    if (c == NULL) {
        fprintf(stderr, "memgrid ctl: a command is required\n\n");
        ctl_usage(stderr);
        return MG_EXIT_USAGE;
    }
    for (size_t k = 0; c->opts[k].flag != NULL; k++)
        if (c->opts[k].required && !v->set[k])
            return usage_error(c, "%s is required", c->opts[k].flag);
    if (o->timeout_s == 0)
        o->timeout_s = c->timeout_s;
    *cmd = c;
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

/* Asks router + path (GET, or POST with body as JSON when body is not NULL)
 * and unwraps the envelope: *data is its data (a new reference, maybe JSON
 * null). Otherwise prints what went wrong — "memgrid ctl: <the envelope's
 * message>" for an error answer — and returns the exit code. */
static int call_router(const ctl_opts *o, const char *path, const json_t *body, json_t **data)
{
    char url[1024];
    size_t rl = strlen(o->router);
    while (rl > 0 && o->router[rl - 1] == '/')
        rl--;
    size_t pl = strlen(path);
    if (rl + pl >= sizeof url)
        return usage_error(NULL, "--router \"%s\" is too long", o->router);
    memcpy(url, o->router, rl);
    memcpy(url + rl, path, pl + 1);

    char *text = NULL;
    if (body != NULL && (text = json_dumps(body, JSON_COMPACT)) == NULL) {
        fprintf(stderr, "memgrid ctl: out of memory\n");
        return MG_EXIT_FAILURE;
    }
    CURL *curl = curl_easy_init();
    if (curl == NULL) {
        fprintf(stderr, "memgrid ctl: cannot initialise libcurl\n");
        free(text);
        return MG_EXIT_FAILURE;
    }
    struct curl_slist *headers = NULL;
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
    if (text != NULL) {
        headers = curl_slist_append(headers, "Content-Type: application/json");
        curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, text);
    }
    CURLcode cc = curl_easy_perform(curl);
    long status = 0;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(curl);
    curl_slist_free_all(headers);
    free(text);

    int code = MG_EXIT_FAILURE;
    json_t *doc = NULL;
    if (cc != CURLE_OK) {
        if (b.too_big)
            fprintf(stderr, "memgrid ctl: the answer from %s is larger than %u bytes\n", url,
                    CTL_MAX_ANSWER);
        else if (cc == CURLE_OPERATION_TIMEDOUT)
            fprintf(stderr, "memgrid ctl: no answer from %s within %ld s (see --timeout)\n", url,
                    o->timeout_s);
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
    if (json_integer_value(jc) != 200 || status != 200) {
        const char *m = json_string_value(json_object_get(doc, "message"));
        if (m != NULL && m[0] != '\0')
            fprintf(stderr, "memgrid ctl: %s\n", m);
        else
            fprintf(stderr, "memgrid ctl: %s answered HTTP %ld\n", url, status);
        goto done;
    }
    json_t *d = json_object_get(doc, "data");
    *data = d != NULL ? json_incref(d) : json_null();
    code = MG_EXIT_OK;
done:
    json_decref(doc);
    free(b.data);
    return code;
}

/* Prints data as one pretty JSON document; the exit code. */
static int print_json(const json_t *data, size_t flags)
{
    char *text = json_dumps(data, JSON_INDENT(2) | JSON_ENCODE_ANY | flags);
    if (text == NULL) {
        fprintf(stderr, "memgrid ctl: out of memory\n");
        return MG_EXIT_FAILURE;
    }
    printf("%s\n", text);
    free(text);
    return MG_EXIT_OK;
}

static int finish(int code)
{
    if (fflush(stdout) != 0 && code == MG_EXIT_OK)
        return MG_EXIT_FAILURE;
    return code;
}

/* A data object whose shape is not what the API promises. */
static int bad_answer(const char *path, json_t *data)
{
    fprintf(stderr, "memgrid ctl: %s answered data of an unexpected shape\n", path);
    json_decref(data);
    return MG_EXIT_FAILURE;
}

/* GET (body NULL) or POST body (taken), then print the JSON or call print;
 * the exit code. */
static int ask(const ctl_opts *o, const char *path, json_t *body, bool want_object,
               void (*print)(const ctl_opts *o, const json_t *data))
{
    json_t *data = NULL;
    int code = call_router(o, path, body, &data);
    json_decref(body);
    if (code != MG_EXIT_OK)
        return code;
    if (want_object ? !json_is_object(data) : !json_is_array(data))
        return bad_answer(path, data);
    code = o->json ? print_json(data, 0) : MG_EXIT_OK;
    if (!o->json)
        print(o, data);
    json_decref(data);
    return finish(code);
}

/* ---- commands ------------------------------------------------------------- */

static int ctl_status(const ctl_opts *o, const ctl_command *c, const ctl_vals *v)
{
    (void)c;
    (void)v;
    json_t *data = NULL;
    int code = call_router(o, "/admin/status", NULL, &data);
    if (code != MG_EXIT_OK)
        return code;
    if (!json_is_object(data))
        return bad_answer("/admin/status", data);
    if (o->json)
        code = print_json(data, 0);
    else
        ctl_print_status(data);
    if (code == MG_EXIT_OK && !json_is_true(json_object_get(data, "healthy"))) {
        ctl_print_unhealthy(data);
        code = MG_EXIT_FAILURE;
    }
    json_decref(data);
    return finish(code);
}

static int ctl_nodes(const ctl_opts *o, const ctl_command *c, const ctl_vals *v)
{
    (void)c;
    (void)v;
    return ask(o, "/admin/nodes", NULL, false, ctl_print_nodes);
}

static int ctl_groups(const ctl_opts *o, const ctl_command *c, const ctl_vals *v)
{
    (void)c;
    (void)v;
    return ask(o, "/admin/groups", NULL, false, ctl_print_groups);
}

static int ctl_slots(const ctl_opts *o, const ctl_command *c, const ctl_vals *v)
{
    (void)c;
    if (!v->set[0])
        return ask(o, "/admin/slots", NULL, true, ctl_print_slots);
    CURL *curl = curl_easy_init();
    char *esc = curl ? curl_easy_escape(curl, v->text[0], 0) : NULL;
    char path[512];
    int n = esc ? snprintf(path, sizeof path, "/admin/slots/%s", esc) : -1;
    curl_free(esc);
    curl_easy_cleanup(curl);
    if (n < 0)
        return MG_EXIT_FAILURE;
    if ((size_t)n >= sizeof path)
        return usage_error(c, "--cube \"%s\" is too long", v->text[0]);
    return ask(o, path, NULL, true, ctl_print_slots);
}

static int ctl_stats(const ctl_opts *o, const ctl_command *c, const ctl_vals *v)
{
    (void)c;
    (void)v;
    json_t *data = NULL;
    int code = call_router(o, "/admin/stats", NULL, &data);
    if (code != MG_EXIT_OK)
        return code;
    if (!json_is_object(data))
        return bad_answer("/admin/stats", data);
    ctl_print_stats_missing(data);
    if (o->json)
        code = print_json(data, JSON_REAL_PRECISION(6));
    else
        ctl_print_stats(o, data);
    json_decref(data);
    return finish(code);
}

static int ctl_init(const ctl_opts *o, const ctl_command *c, const ctl_vals *v)
{
    json_t *body =
        json_pack("{s:I, s:I}", "groups", (json_int_t)v->num[0], "replicas", (json_int_t)v->num[1]);
    if (body == NULL)
        return MG_EXIT_FAILURE;
    if (v->set[2]) {
        json_t *nodes = json_array();
        json_object_set_new(body, "nodes", nodes);
        for (const char *p = v->text[2];; p++) {
            const char *end = strchr(p, ',');
            size_t len = end ? (size_t)(end - p) : strlen(p);
            while (len > 0 && (*p == ' ' || *p == '\t'))
                p++, len--;
            while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t'))
                len--;
            if (len == 0) {
                json_decref(body);
                return usage_error(c, "--nodes \"%s\" has an empty entry", v->text[2]);
            }
            if (json_array_append_new(nodes, json_stringn(p, len)) != 0) {
                json_decref(body);
                return usage_error(c, "--nodes \"%s\" is not UTF-8 text", v->text[2]);
            }
            if (end == NULL)
                break;
            p = end;
        }
    }
    return ask(o, "/admin/init", body, true, ctl_print_map);
}

static int ctl_add_node(const ctl_opts *o, const ctl_command *c, const ctl_vals *v)
{
    json_t *body = json_pack("{s:s}", "rpc", v->text[0]);
    if (body == NULL)
        return usage_error(c, "--rpc \"%s\" is not UTF-8 text", v->text[0]);
    return ask(o, "/admin/nodes", body, true, ctl_print_added);
}

static int ctl_remove_node(const ctl_opts *o, const ctl_command *c, const ctl_vals *v)
{
    (void)c;
    return ask(o, "/admin/nodes/remove", json_pack("{s:I}", "id", (json_int_t)v->num[0]), true,
               ctl_print_removed);
}

static int ctl_transfer_leader(const ctl_opts *o, const ctl_command *c, const ctl_vals *v)
{
    (void)c;
    json_t *body = json_pack("{s:I, s:I}", "group", (json_int_t)v->num[0], "to",
                             (json_int_t)(v->set[1] ? v->num[1] : 0));
    return ask(o, "/admin/transfer-leader", body, true, ctl_print_leader);
}

static int ctl_move_replica(const ctl_opts *o, const ctl_command *c, const ctl_vals *v)
{
    if (v->num[1] == v->num[2])
        return usage_error(c, "--from and --to name the same node (%u)", v->num[1]);
    json_t *body = json_pack("{s:I, s:I, s:I}", "group", (json_int_t)v->num[0], "from",
                             (json_int_t)v->num[1], "to", (json_int_t)v->num[2]);
    return ask(o, "/admin/move-replica", body, true, ctl_print_replicas);
}

static int ctl_rebalance(const ctl_opts *o, const ctl_command *c, const ctl_vals *v)
{
    enum { TO_GROUP, NEW_GROUP, REPLICAS, SLOTS };
    if (v->set[TO_GROUP] && v->set[NEW_GROUP])
        return usage_error(c, "--to-group and --new-group exclude each other");
    if (v->set[REPLICAS] && !v->set[NEW_GROUP])
        return usage_error(c, "--replicas applies only with --new-group");
    if (v->set[SLOTS]) {
        mg_slotset s;
        mg_error err;
        if (mg_slotset_parse(v->text[SLOTS], &s, &err) != MG_OK)
            return usage_error(c, "--slots \"%s\": %s", v->text[SLOTS], err.msg);
        if (mg_slotset_count(&s) == 0)
            return usage_error(c, "--slots \"%s\" names no slot", v->text[SLOTS]);
    }
    json_t *body = json_object();
    if (v->set[TO_GROUP])
        json_object_set_new(body, "to_group", json_integer((json_int_t)v->num[TO_GROUP]));
    if (v->set[NEW_GROUP])
        json_object_set_new(body, "new_group", json_true());
    if (v->set[REPLICAS])
        json_object_set_new(body, "replicas", json_integer((json_int_t)v->num[REPLICAS]));
    if (v->set[SLOTS])
        json_object_set_new(body, "slots", json_string(v->text[SLOTS]));
    return ask(o, "/admin/rebalance", body, true, ctl_print_rebalanced);
}

static int ctl_balance_leaders(const ctl_opts *o, const ctl_command *c, const ctl_vals *v)
{
    (void)c;
    (void)v;
    return ask(o, "/admin/balance-leaders", json_object(), true, ctl_print_transfers);
}

/* ---- main ----------------------------------------------------------------- */

int mg_cmd_ctl(int argc, char **argv)
{
    ctl_opts o;
    ctl_vals v;
    const ctl_command *c;
    int rc = parse_args(argc, argv, &o, &c, &v);
    if (rc != 0)
        return rc < 0 ? MG_EXIT_OK : rc;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0) {
        fprintf(stderr, "memgrid ctl: cannot initialise libcurl\n");
        return MG_EXIT_FAILURE;
    }
    rc = c->run(&o, c, &v);
    curl_global_cleanup();
    return rc;
}
