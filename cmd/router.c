/*
 * memgrid router: the MemOS-compatible HTTP API in front of a cluster. It is
 * started with the rpc URLs of some nodes (seeds); from them it learns the
 * cluster map (lib/cmap.h) held by the meta group: which nodes exist, where
 * each group's replicas are and which group owns each of the 4096 slots. It
 * routes every request by that map and refreshes it when a node says it is
 * stale. It keeps no data: run as many as you like.
 */
#include "memgrid.h"
#include "common.h"

#include "../lib/log.h"
#include "../router/embed.h"
#include "../router/llm.h"
#include "../router/router.h"

#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ROUTER_SEEDS_MAX 16

static void router_usage(FILE *out)
{
    fprintf(out,
            "usage: memgrid router --seeds URL[,URL...] [--listen HOST:PORT] [options]\n\n"
            "Runs a stateless API front end for a memgrid cluster: the MemOS-compatible\n"
            "HTTP API, placing each cube on its shard group and sending writes to the\n"
            "group's leader and searches to the nodes. Any number of routers may front one\n"
            "cluster. SIGINT/SIGTERM stop it after the requests in flight.\n\n"
            "The router finds the cluster through its seeds, the rpc URLs of some of its\n"
            "nodes (`memgrid node --rpc`): it asks them for the cluster map, which the meta\n"
            "group holds and which names every node, every shard group's replicas and the\n"
            "group owning each of the 4096 slots. It routes by that map and fetches a new\n"
            "one whenever a node says it is stale (after `memgrid ctl` moved a replica or\n"
            "rebalanced slots), so the seeds only need to be reachable at start. Until the\n"
            "cluster is initialized (`memgrid ctl init`), the product endpoints answer 503\n"
            "\"cluster not initialized\"; the router picks the map up as soon as it exists.\n\n"
            "options (each also read from the environment variable shown):\n"
            "  --seeds URL[,URL...]   rpc URLs of nodes, e.g. tcp://10.0.0.1:7110\n"
            "                         (MEMGRID_SEEDS; required, at most %d)\n"
            "  --listen HOST:PORT     HTTP address (MEMGRID_LISTEN; default 127.0.0.1:8000);\n"
            "                         port 0 picks a free port (printed when ready)\n"
            "  --map-cache FILE       keep a copy of the cluster map in FILE (MEMGRID_MAP_CACHE):\n"
            "                         loaded at start, so a restarted router routes at once\n"
            "                         even when the meta group is slow to answer; replaced\n"
            "                         (atomically) whenever the map changes\n"
            "  --log LEVEL            debug|info|warn|error|off (MEMGRID_LOG; default info)\n"
            "  --workers N            requests waiting on the cluster at once\n"
            "                         (MEMGRID_WORKERS; default 64)\n"
            "  --http-threads N       HTTP threads (MEMGRID_HTTP_THREADS; default 2)\n"
            "  --call-timeout-ms N    a write or read, retries included\n"
            "                         (MEMGRID_CALL_TIMEOUT_MS; default 5000)\n"
            "  --survey-timeout-ms N  one search survey round; a group not answered is\n"
            "                         asked once more on another replica\n"
            "                         (MEMGRID_SURVEY_TIMEOUT_MS; default 2000)\n"
            "  --config FILE          read options from FILE, lines \"key = value\" with the\n"
            "                         long option names (MEMGRID_CONFIG); the command line\n"
            "                         wins over the file, the file over the environment\n"
            "  -h, --help             this help\n\n"
            "The embedder and chat model come from the environment, as for `memgrid serve`\n"
            "(MEMGRID_EMBEDDER, MEMGRID_EMBED_URL, MEMGRID_EMBED_MODEL, MEMGRID_EMBED_DIM,\n"
            "MEMGRID_CHAT_URL, ...; docs/EMBEDDERS.md). Every router of a cluster must use\n"
            "the same embedder.\n\n"
            "When ready it prints one line:\n"
            "  memgrid router: listening on http://127.0.0.1:8000 (2 seeds, map epoch 3)\n\n"
            "exit codes: 0 stopped cleanly, 1 runtime failure, 2 usage error\n",
            ROUTER_SEEDS_MAX);
}

typedef struct router_opts {
    char *seeds_text;               /* malloc'd copy, split in place */
    const char *seeds[ROUTER_SEEDS_MAX];
    size_t n_seeds;
    const char *map_cache;
    const char *log;
    char host[64];
    unsigned port;
    unsigned workers, http_threads, call_timeout_ms, survey_timeout_ms;
} router_opts;

/* One option: its flag, environment variable and how to set it. */
typedef struct router_flag {
    const char *flag;
    const char *env;
    int (*set)(router_opts *o, const char *v);
} router_flag;

/* "URL[,URL...]": spaces around commas allowed, empty entries refused. */
static int set_seeds(router_opts *o, const char *v)
{
    free(o->seeds_text);
    o->n_seeds = 0;
    o->seeds_text = strdup(v);
    if (o->seeds_text == NULL)
        return -1;
    for (char *tok = o->seeds_text, *next; tok != NULL; tok = next) {
        next = strchr(tok, ',');
        if (next != NULL)
            *next++ = '\0';
        while (*tok == ' ' || *tok == '\t')
            tok++;
        size_t len = strlen(tok);
        while (len > 0 && (tok[len - 1] == ' ' || tok[len - 1] == '\t'))
            tok[--len] = '\0';
        if (len == 0 || strstr(tok, "://") == NULL || o->n_seeds == ROUTER_SEEDS_MAX)
            return -1;
        o->seeds[o->n_seeds++] = tok;
    }
    return o->n_seeds > 0 ? 0 : -1;
}
static int set_map_cache(router_opts *o, const char *v)
{
    o->map_cache = v;
    return *v ? 0 : -1;
}
static int set_listen(router_opts *o, const char *v)
{
    return mg_cmd_parse_listen(v, o->host, sizeof o->host, &o->port);
}
static int set_log(router_opts *o, const char *v)
{
    o->log = v;
    return mg_log_parse_level(v) < 0 ? -1 : 0;
}
static int set_workers(router_opts *o, const char *v)
{
    return mg_cmd_parse_uint(v, 1, 4096, &o->workers);
}
static int set_http_threads(router_opts *o, const char *v)
{
    return mg_cmd_parse_uint(v, 1, 256, &o->http_threads);
}
static int set_call_timeout(router_opts *o, const char *v)
{
    return mg_cmd_parse_uint(v, 10, 600000, &o->call_timeout_ms);
}
static int set_survey_timeout(router_opts *o, const char *v)
{
    return mg_cmd_parse_uint(v, 10, 600000, &o->survey_timeout_ms);
}

static const router_flag router_flags[] = {
    {"--seeds", "MEMGRID_SEEDS", set_seeds},
    {"--listen", "MEMGRID_LISTEN", set_listen},
    {"--map-cache", "MEMGRID_MAP_CACHE", set_map_cache},
    {"--log", NULL, set_log}, /* MEMGRID_LOG is read by lib/log itself */
    {"--workers", "MEMGRID_WORKERS", set_workers},
    {"--http-threads", "MEMGRID_HTTP_THREADS", set_http_threads},
    {"--call-timeout-ms", "MEMGRID_CALL_TIMEOUT_MS", set_call_timeout},
    {"--survey-timeout-ms", "MEMGRID_SURVEY_TIMEOUT_MS", set_survey_timeout},
};
#define N_ROUTER_FLAGS (sizeof router_flags / sizeof router_flags[0])

/* Keys of the config file: the long options without "--". */
static const char *const known_keys[] = {
    "seeds",        "listen",          "map-cache",         "log",
    "workers",      "http-threads",    "call-timeout-ms",   "survey-timeout-ms",
    NULL,
};

/* 0 ok, 1 help printed, -1 usage error (printed). */
static int router_parse(int argc, char **argv, router_opts *o)
{
    memset(o, 0, sizeof *o);
    snprintf(o->host, sizeof o->host, "127.0.0.1");
    o->port = 8000;
    for (size_t f = 0; f < N_ROUTER_FLAGS; f++) {
        const char *v = router_flags[f].env ? getenv(router_flags[f].env) : NULL;
        if (v != NULL && *v && router_flags[f].set(o, v) != 0) {
            fprintf(stderr, "memgrid router: bad value %s=\"%s\" (see memgrid router --help)\n",
                    router_flags[f].env, v);
            return -1;
        }
    }
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            router_usage(stdout);
            return 1;
        }
        char flag[32];
        const char *val;
        a = mg_cmd_split_flag(a, flag, sizeof flag, &val);
        const router_flag *rf = NULL;
        for (size_t f = 0; f < N_ROUTER_FLAGS; f++)
            if (strcmp(a, router_flags[f].flag) == 0)
                rf = &router_flags[f];
        if (rf == NULL) {
            fprintf(stderr, "memgrid router: unknown option \"%s\" (see memgrid router --help)\n",
                    argv[i]);
            return -1;
        }
        if ((val = mg_cmd_flag_value("router", a, val, argc, argv, &i)) == NULL)
            return -1;
        if (rf->set(o, val) != 0) {
            fprintf(stderr, "memgrid router: bad value \"%s\" for %s (see memgrid router "
                            "--help)\n",
                    val, a);
            return -1;
        }
    }
    if (o->n_seeds == 0) {
        fprintf(stderr, "memgrid router: --seeds is required (see memgrid router --help)\n");
        return -1;
    }
    return 0;
}

int mg_cmd_router(int argc, char **argv)
{
    for (int i = 0; i < argc; i++) /* help even when the config file is broken */
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            router_usage(stdout);
            return MG_EXIT_OK;
        }
    int erc = mg_cmd_config_expand("router", known_keys, &argc, &argv);
    if (erc != MG_EXIT_OK)
        return erc;
    router_opts o;
    int pr = router_parse(argc, argv, &o);
    if (pr != 0) {
        free(o.seeds_text);
        return pr > 0 ? MG_EXIT_OK : MG_EXIT_USAGE;
    }
    mg_cmd_apply_log(o.log);

    sigset_t stop_set;
    mg_cmd_block_stop_signals(&stop_set);

    mg_embedder_config ec;
    mg_llm_config lc;
    if (mg_cmd_models_from_env("router", &ec, &lc) != MG_EXIT_OK) {
        free(o.seeds_text);
        return MG_EXIT_USAGE;
    }
    mg_embedder *emb;
    mg_llm *llm;
    if (mg_cmd_models_open("router", &ec, &lc, &emb, &llm) != MG_EXIT_OK) {
        free(o.seeds_text);
        return MG_EXIT_FAILURE;
    }
    mg_error err;
    mg_router *router = NULL;
    int code = MG_EXIT_FAILURE;

    mg_router_config rc_;
    mg_router_config_default(&rc_);
    rc_.listen_host = o.host;
    rc_.listen_port = (uint16_t)o.port;
    rc_.seeds = o.seeds;
    rc_.n_seeds = o.n_seeds;
    rc_.map_cache = o.map_cache;
    rc_.embedder = emb;
    rc_.llm = llm;
    rc_.version = MEMGRID_VERSION;
    if (o.workers)
        rc_.workers = o.workers;
    if (o.http_threads)
        rc_.http_threads = o.http_threads;
    if (o.call_timeout_ms)
        rc_.call_timeout_ms = o.call_timeout_ms;
    if (o.survey_timeout_ms)
        rc_.survey_timeout_ms = o.survey_timeout_ms;
    if (mg_router_start(&rc_, &router, &err) != MG_OK) {
        router = NULL;
        fprintf(stderr, "memgrid router: %s\n", err.msg);
        goto done;
    }
    unsigned long long epoch = (unsigned long long)mg_router_epoch(router);
    mg_error why = {0};
    if (epoch == 0 && mg_router_need_map(router, &why) != MG_OK)
        mg_cmd_ready("memgrid router: listening on http://%s:%u (%zu seed%s, no cluster map: "
                     "%s)\n",
                     o.host, (unsigned)mg_router_port(router), o.n_seeds,
                     o.n_seeds == 1 ? "" : "s", why.msg);
    else
        epoch = (unsigned long long)mg_router_epoch(router);
    if (epoch != 0)
        mg_cmd_ready("memgrid router: listening on http://%s:%u (%zu seed%s, map epoch %llu)\n",
                     o.host, (unsigned)mg_router_port(router), o.n_seeds,
                     o.n_seeds == 1 ? "" : "s", epoch);

    mg_cmd_wait_stop(&stop_set, "router.stop");
    code = MG_EXIT_OK;
done:
    mg_router_stop(router);
    mg_llm_close(llm);
    mg_embedder_close(emb);
    free(o.seeds_text);
    if (code == MG_EXIT_OK)
        fprintf(stderr, "memgrid router: stopped\n");
    return code;
}
