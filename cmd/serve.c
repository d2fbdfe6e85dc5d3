/*
 * memgrid serve: the embedded default (DESIGN §2). One node hosting the meta
 * group (0) and the data groups 1..4, one replica each, and the router, in
 * one process over inproc:// nng URLs. SIGINT/SIGTERM stop it cleanly: the
 * router finishes the requests in flight, then the node drains and closes
 * its groups. Every acknowledged write was applied on the group's Raft log
 * and store before it was acknowledged, so a restart (even after SIGKILL)
 * has it.
 *
 * Raft (raft_uv_tcp) listens on a loopback TCP port per group even in one
 * process: group G on base + G (the cluster map's rule, lib/cmap.h), five
 * contiguous ports remembered in <data>/serve.ports and reused when still
 * free, and otherwise picked anew (a single-voter group does not dial its
 * own address).
 *
 * The router finds the node through its rpc URL (its seed) and, at the
 * first start, initializes the cluster as `memgrid ctl init` would (one
 * replica per group, the slots split over groups 1..4); later starts find
 * the map in the meta group and keep it.
 */
#include "memgrid.h"
#include "common.h"

#include "../lib/error.h"
#include "../lib/log.h"
#include "../node/node.h"
#include "../storage/item.h"
#include "../router/embed.h"
#include "../router/llm.h"
#include "../router/router.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <malloc.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define SERVE_GROUPS 5          /* 0 = meta, 1..4 = data */
#define SERVE_DATA_GROUPS 4
#define SERVE_NODE_ID 1
#define SERVE_ROUTER_WORKERS 64
#define SERVE_NODE_CONTEXTS 256

typedef struct serve_opts {
    const char *data;
    char host[64];
    unsigned port;
    unsigned embed_dim;             /* 0 = the embedder's default or MEMGRID_EMBED_DIM */
    const char *embedder;
    const char *embed_url;
    const char *embed_model;
    const char *chat_url;
    const char *chat_model;
    unsigned workers;
    unsigned http_threads;
    const char *log;
} serve_opts;

static void serve_usage(FILE *out)
{
    fprintf(out,
            "usage: memgrid serve [--data DIR] [--listen HOST:PORT] [options]\n\n"
            "Runs memgrid on one machine: the MemOS-compatible HTTP API (router) and one\n"
            "node hosting the meta group and %d data groups, one replica each, in one\n"
            "process. Data survives restarts; SIGINT/SIGTERM stop it cleanly.\n\n"
            "options (each also read from the environment variable shown):\n"
            "  --data DIR          data directory (MEMGRID_DATA; default ./memgrid-data)\n"
            "  --listen HOST:PORT  HTTP address (MEMGRID_LISTEN; default 127.0.0.1:8000);\n"
            "                      port 0 picks a free port (printed when ready)\n"
            "  --log LEVEL         debug|info|warn|error|off (MEMGRID_LOG; default info)\n"
            "  --embedder KIND     hash | openai | ollama (MEMGRID_EMBEDDER; default hash)\n"
            "  --embed-url URL     embedding server (MEMGRID_EMBED_URL)\n"
            "  --embed-model NAME  embedding model (MEMGRID_EMBED_MODEL)\n"
            "  --embed-dim N       vector dimension (MEMGRID_EMBED_DIM; hash default %d,\n"
            "                      remote: learned from the server). A cube keeps the\n"
            "                      embedder and dimension it was created with.\n"
            "                      Also: MEMGRID_EMBED_KEY_ENV, MEMGRID_EMBED_TIMEOUT_MS,\n"
            "                      MEMGRID_EMBED_RETRIES, MEMGRID_EMBED_BATCH.\n"
            "  --chat-url URL      OpenAI-compatible chat endpoint for add mode \"fine\"\n"
            "                      (MEMGRID_CHAT_URL; unset: fine mode answers 400)\n"
            "  --chat-model NAME   chat model (MEMGRID_CHAT_MODEL; default gpt-4o-mini)\n"
            "                      Also: MEMGRID_CHAT_KEY_ENV, MEMGRID_CHAT_TIMEOUT_MS.\n"
            "  --workers N         router workers: requests waiting on the cluster at once\n"
            "                      (MEMGRID_WORKERS; default 64)\n"
            "  --http-threads N    HTTP threads (MEMGRID_HTTP_THREADS; default 2)\n"
            "  -h, --help          this help\n\n"
            "Embedding: by default the built-in `hash` embedder (offline, deterministic),\n"
            "whose search scores are calibrated so that MemOS's default relativity 0.45\n"
            "keeps good matches (see docs/API.md).\n\n"
            "When ready it prints one line:\n"
            "  memgrid serve: listening on http://127.0.0.1:8000 (data ./memgrid-data)\n\n"
            "exit codes: 0 stopped cleanly, 1 runtime failure, 2 usage error\n",
            SERVE_DATA_GROUPS, MG_EMBED_HASH_DIM_DEFAULT);
}

/* A loopback TCP port that can be bound right now (0 on failure); `want`
 * first when not 0. */
static unsigned free_port(unsigned want)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0)
            return 0;
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        struct sockaddr_in sa = {.sin_family = AF_INET,
                                 .sin_port = htons((uint16_t)(attempt == 0 ? want : 0))};
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (attempt == 0 && want == 0) {
            close(fd);
            continue;
        }
        if (bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0) {
            socklen_t len = sizeof sa;
            getsockname(fd, (struct sockaddr *)&sa, &len);
            close(fd);
            return ntohs(sa.sin_port);
        }
        close(fd);
    }
    return 0;
}

/* Whether base .. base + SERVE_GROUPS - 1 can all be bound now. */
static bool ports_free(unsigned base)
{
    if (base == 0 || base + SERVE_GROUPS - 1 > 65535)
        return false;
    for (unsigned g = 0; g < SERVE_GROUPS; g++)
        if (free_port(base + g) != base + g)
            return false;
    return true;
}

/* Raft ports, base + G for group G: those remembered in <data>/serve.ports
 * when still free, else a new free run. */
static int raft_ports(const char *data, unsigned ports[SERVE_GROUPS], mg_error *err)
{
    char path[PATH_MAX];
    unsigned old[SERVE_GROUPS] = {0};
    snprintf(path, sizeof path, "%s/serve.ports", data);
    FILE *f = fopen(path, "r");
    if (f != NULL) {
        for (int i = 0; i < SERVE_GROUPS; i++)
            if (fscanf(f, "%u", &old[i]) != 1 || old[i] > 65535)
                old[i] = 0;
        fclose(f);
    }
    bool contiguous = true;
    for (int i = 1; i < SERVE_GROUPS; i++)
        contiguous &= old[i] == old[0] + (unsigned)i;
    unsigned base = contiguous && ports_free(old[0]) ? old[0] : 0;
    for (int attempt = 0; base == 0 && attempt < 64; attempt++) {
        unsigned p = free_port(0);
        if (p != 0 && ports_free(p))
            base = p;
    }
    if (base == 0)
        return mg_error_set(err, MG_EIO, "no %d free contiguous loopback ports for raft",
                            SERVE_GROUPS);
    for (int i = 0; i < SERVE_GROUPS; i++)
        ports[i] = base + (unsigned)i;
    f = fopen(path, "w");
    if (f == NULL)
        return mg_error_set(err, MG_EIO, "cannot write %s: %s", path, strerror(errno));
    for (int i = 0; i < SERVE_GROUPS; i++)
        fprintf(f, "%u%c", ports[i], i + 1 < SERVE_GROUPS ? ' ' : '\n');
    if (fclose(f) != 0)
        return mg_error_set(err, MG_EIO, "cannot write %s: %s", path, strerror(errno));
    return MG_OK;
}

static int env_uint(const char *name, unsigned min, unsigned max, unsigned *out)
{
    const char *v = getenv(name);
    if (v == NULL || *v == '\0')
        return 0;
    if (mg_cmd_parse_uint(v, min, max, out) != 0) {
        fprintf(stderr, "memgrid serve: %s=\"%s\" is not a number in %u..%u\n", name, v, min,
                max);
        return -1;
    }
    return 0;
}

static int parse_args(int argc, char **argv, serve_opts *o)
{
    memset(o, 0, sizeof *o);
    o->data = "./memgrid-data";
    snprintf(o->host, sizeof o->host, "127.0.0.1");
    o->port = 8000;
    const char *v;
    if ((v = getenv("MEMGRID_DATA")) != NULL && *v)
        o->data = v;
    if ((v = getenv("MEMGRID_LISTEN")) != NULL && *v &&
        mg_cmd_parse_listen(v, o->host, sizeof o->host, &o->port) != 0) {
        fprintf(stderr, "memgrid serve: MEMGRID_LISTEN=\"%s\" is not HOST:PORT\n", v);
        return -1;
    }
    if (env_uint("MEMGRID_WORKERS", 1, 4096, &o->workers) ||
        env_uint("MEMGRID_HTTP_THREADS", 1, 256, &o->http_threads))
        return -1;
    for (int i = 0; i < argc; i++) {
        char flag[32];
        const char *val;
        const char *a = mg_cmd_split_flag(argv[i], flag, sizeof flag, &val);
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            serve_usage(stdout);
            return 1;
        }
        bool takes = strcmp(a, "--data") == 0 || strcmp(a, "--listen") == 0 ||
                     strcmp(a, "--log") == 0 || strcmp(a, "--embed-dim") == 0 ||
                     strcmp(a, "--workers") == 0 || strcmp(a, "--http-threads") == 0 ||
                     strcmp(a, "--embedder") == 0 || strcmp(a, "--embed-url") == 0 ||
                     strcmp(a, "--embed-model") == 0 || strcmp(a, "--chat-url") == 0 ||
                     strcmp(a, "--chat-model") == 0;
        if (!takes) {
            fprintf(stderr, "memgrid serve: unknown option \"%s\" (see memgrid serve --help)\n",
                    argv[i]);
            return -1;
        }
        if ((val = mg_cmd_flag_value("serve", a, val, argc, argv, &i)) == NULL)
            return -1;
        int bad = 0;
        if (strcmp(a, "--data") == 0)
            bad = *val == '\0';
        if (strcmp(a, "--data") == 0)
            o->data = val;
        else if (strcmp(a, "--listen") == 0)
            bad = mg_cmd_parse_listen(val, o->host, sizeof o->host, &o->port);
        else if (strcmp(a, "--log") == 0)
            bad = mg_log_parse_level(val) < 0, o->log = val;
        else if (strcmp(a, "--embed-dim") == 0)
            bad = mg_cmd_parse_uint(val, 1, MG_DIM_MAX, &o->embed_dim);
        else if (strcmp(a, "--embedder") == 0)
            o->embedder = val;
        else if (strcmp(a, "--embed-url") == 0)
            o->embed_url = val;
        else if (strcmp(a, "--embed-model") == 0)
            o->embed_model = val;
        else if (strcmp(a, "--chat-url") == 0)
            o->chat_url = val;
        else if (strcmp(a, "--chat-model") == 0)
            o->chat_model = val;
        else if (strcmp(a, "--workers") == 0)
            bad = mg_cmd_parse_uint(val, 1, 4096, &o->workers);
        else
            bad = mg_cmd_parse_uint(val, 1, 256, &o->http_threads);
        if (bad) {
            fprintf(stderr, "memgrid serve: bad value \"%s\" for %s (see memgrid serve --help)\n",
                    val, a);
            return -1;
        }
    }
    return 0;
}

int mg_cmd_serve(int argc, char **argv)
{
    serve_opts o;
    int pr = parse_args(argc, argv, &o);
    if (pr != 0)
        return pr > 0 ? MG_EXIT_OK : MG_EXIT_USAGE;
    mg_cmd_apply_log(o.log);

    /* A search with MMR moves ~150 KB messages (50+ records with their
     * vectors) between threads. With glibc's defaults each such buffer was
     * mmap'd and unmapped, or a thread's heap shrunk and regrown, so every
     * search paid ~12 page faults and the zeroing of fresh pages (~15 % of
     * the CPU at 32 clients). Keeping buffers up to 4 MiB on the heap and
     * trimming heaps only past 64 MiB of free top removes that. */
    mallopt(M_MMAP_THRESHOLD, 4 << 20);
    mallopt(M_TRIM_THRESHOLD, 64 << 20);

    /* Signals are taken by sigwait below: block them before any thread
     * starts so that every thread inherits the mask. */
    sigset_t stop_set;
    mg_cmd_block_stop_signals(&stop_set);

    /* Embedder and chat model: environment first, flags over it. */
    mg_embedder_config ec;
    mg_llm_config lc;
    if (mg_cmd_models_from_env("serve", &ec, &lc) != MG_EXIT_OK)
        return MG_EXIT_USAGE;
    if (o.embedder != NULL) {
        int kind = -1;
        for (int k = MG_EMBEDDER_HASH; k <= MG_EMBEDDER_OLLAMA; k++)
            if (strcmp(o.embedder, mg_embedder_kind_name(k)) == 0)
                kind = k;
        if (kind < 0) {
            fprintf(stderr, "memgrid serve: --embedder must be hash, openai or ollama\n");
            return MG_EXIT_USAGE;
        }
        ec.kind = kind;
    }
    if ((o.embed_url && strlen(o.embed_url) >= sizeof ec.url) ||
        (o.embed_model && strlen(o.embed_model) >= sizeof ec.model) ||
        (o.chat_url && strlen(o.chat_url) >= sizeof lc.url) ||
        (o.chat_model && strlen(o.chat_model) >= sizeof lc.model)) {
        fprintf(stderr, "memgrid serve: a URL or model name is too long\n");
        return MG_EXIT_USAGE;
    }
    if (o.embed_url)
        snprintf(ec.url, sizeof ec.url, "%s", o.embed_url);
    if (o.embed_model)
        snprintf(ec.model, sizeof ec.model, "%s", o.embed_model);
    if (o.embed_dim)
        ec.dim = o.embed_dim;
    if (o.chat_url)
        snprintf(lc.url, sizeof lc.url, "%s", o.chat_url);
    if (o.chat_model)
        snprintf(lc.model, sizeof lc.model, "%s", o.chat_model);
    mg_embedder *emb;
    mg_llm *llm;
    if (mg_cmd_models_open("serve", &ec, &lc, &emb, &llm) != MG_EXIT_OK)
        return MG_EXIT_FAILURE;
    mg_error err;
    int code = MG_EXIT_FAILURE;
    mg_node *node = NULL;
    mg_router *router = NULL;

    if (mg_cmd_make_data_dir("serve", o.data) != 0)
        goto done;
    unsigned ports[SERVE_GROUPS];
    if (raft_ports(o.data, ports, &err) != MG_OK) {
        fprintf(stderr, "memgrid serve: %s\n", err.msg);
        goto done;
    }

    char rep_url[64], survey_url[64];
    snprintf(rep_url, sizeof rep_url, "inproc://memgrid-serve-%d-rep", (int)getpid());
    snprintf(survey_url, sizeof survey_url, "inproc://memgrid-serve-%d-survey", (int)getpid());
    mg_group_peer peers[SERVE_GROUPS];
    mg_node_group groups[SERVE_GROUPS];
    for (int i = 0; i < SERVE_GROUPS; i++) {
        peers[i].id = SERVE_NODE_ID; /* raft id = node id (lib/cmap.h) */
        snprintf(peers[i].address, sizeof peers[i].address, "127.0.0.1:%u", ports[i]);
        groups[i] = (mg_node_group){.group_id = (uint64_t)i,
                                    .replica_id = SERVE_NODE_ID,
                                    .address = peers[i].address,
                                    .bootstrap = &peers[i],
                                    .n_bootstrap = 1};
    }
    unsigned workers = o.workers ? o.workers : SERVE_ROUTER_WORKERS;
    unsigned node_contexts = workers * 2 > SERVE_NODE_CONTEXTS ? workers * 2 : SERVE_NODE_CONTEXTS;
    mg_node_config nc = {.data_dir = o.data,
                         .node_id = SERVE_NODE_ID,
                         .rep_url = rep_url,
                         .respondent_url = survey_url,
                         .groups = groups,
                         .n_groups = SERVE_GROUPS,
                         .raft_host = "127.0.0.1",
                         .raft_port = ports[0],
                         /* One context per request the router may have in flight
                          * (its workers), with room: a survey that finds every
                          * respondent context busy waits in nng's pipe queue,
                          * which drops surveys once full. */
                         .rep_contexts = node_contexts,
                         .respondent_contexts = node_contexts};
    if (mg_node_start(&nc, &node, &err) != MG_OK) {
        node = NULL;
        fprintf(stderr, "memgrid serve: node: %s\n", err.msg);
        goto done;
    }
    if (mg_node_wait_ready(node, 10000, &err) != MG_OK) {
        fprintf(stderr, "memgrid serve: node: %s\n", err.msg);
        goto done;
    }

    const char *seeds[] = {rep_url};
    mg_router_config rc;
    mg_router_config_default(&rc);
    rc.listen_host = o.host;
    rc.listen_port = (uint16_t)o.port;
    rc.seeds = seeds;
    rc.n_seeds = 1;
    rc.embedder = emb;
    rc.llm = llm;
    rc.version = MEMGRID_VERSION;
    rc.workers = workers;
    if (o.http_threads)
        rc.http_threads = o.http_threads;
    if (mg_router_start(&rc, &router, &err) != MG_OK) {
        router = NULL;
        fprintf(stderr, "memgrid serve: %s\n", err.msg);
        goto done;
    }
    /* The cluster map: made at the first start, kept afterwards. */
    bool created = false;
    if (mg_router_init_cluster(router, SERVE_DATA_GROUPS, 1, &created, &err) != MG_OK) {
        fprintf(stderr, "memgrid serve: cluster init: %s\n", err.msg);
        goto done;
    }
    if (created)
        mg_info("serve.init", "groups=%d replicas=1", SERVE_DATA_GROUPS);
    mg_cmd_ready("memgrid serve: listening on http://%s:%u (data %s)\n", o.host,
                 (unsigned)mg_router_port(router), o.data);

    mg_cmd_wait_stop(&stop_set, "serve.stop");
    code = MG_EXIT_OK;
done:
    mg_router_stop(router);
    mg_node_stop(node);
    mg_llm_close(llm);
    mg_embedder_close(emb);
    if (code == MG_EXIT_OK)
        fprintf(stderr, "memgrid serve: stopped\n");
    return code;
}
