/*
 * HTTP with libmicrohttpd, and the router's lifecycle.
 *
 * A request is answered on the access handler's second call (after the body
 * has been read), never on the first, so that keep-alive survives. A route
 * that needs the cluster suspends its connection and hands the request to a
 * router worker; the worker runs the handler (blocking on nng), stores the
 * answer and resumes the connection, whose next access-handler call queues
 * it. The HTTP threads therefore never wait for the cluster.
 */
#include "api.h"

#include "../lib/clock.h"
#include "../lib/log.h"
#include "embed.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifndef MEMGRID_VERSION
#define MEMGRID_VERSION "0.1.0"
#endif

/* How long mg_router_start waits for the cluster map (a cluster that is not
 * up yet does not hold the start longer). */
#define START_REFRESH_MS 1000

struct http_job {
    mg_router *r;
    struct MHD_Connection *conn;
    const mg_route *route;
    const char *method;
    char *path;
    const char *arg;
    char *body;
    size_t len, cap;
    uint64_t start_ns;      /* the request's first access-handler call */
    unsigned early;         /* 404, 405, 413: answer without running a handler */
    bool ready;             /* resp is filled */
    bool queued;
    mg_api_resp resp;
    http_job *next;
};

static void job_free(http_job *j)
{
    free(j->path);
    free(j->body);
    free(j->resp.body);
    free(j);
}

/* ---- answering ---------------------------------------------------------- */

static enum MHD_Result queue_resp(struct MHD_Connection *conn, mg_api_resp *resp)
{
    if (resp->body == NULL)
        api_fail(resp, 500, "internal error: no answer");
    struct MHD_Response *m =
        MHD_create_response_from_buffer(resp->len, resp->body, MHD_RESPMEM_MUST_FREE);
    if (m == NULL)
        return MHD_NO;
    resp->body = NULL; /* MHD frees it */
    MHD_add_response_header(m, MHD_HTTP_HEADER_CONTENT_TYPE,
                            resp->content_type ? resp->content_type : "application/json");
    if (resp->allow != NULL)
        MHD_add_response_header(m, MHD_HTTP_HEADER_ALLOW, resp->allow);
    enum MHD_Result rc = MHD_queue_response(conn, resp->status, m);
    MHD_destroy_response(m);
    return rc;
}

/* The Allow header for a known path asked with the wrong method. */
static const char *allow_for(const char *path)
{
    bool get = false, post = false;
    for (size_t i = 0; i < mg_n_routes; i++) {
        const mg_route *rt = &mg_routes[i];
        bool match = rt->prefix ? strncmp(path, rt->path, strlen(rt->path)) == 0 &&
                                      path[strlen(rt->path)] != '\0'
                                : strcmp(path, rt->path) == 0;
        if (!match)
            continue;
        if (strcmp(rt->method, "GET") == 0)
            get = true;
        else
            post = true;
    }
    return get && post ? "GET, POST" : get ? "GET" : "POST";
}

static void early_answer(http_job *j)
{
    switch (j->early) {
    case 405:
        api_fail(&j->resp, 405, "method %s is not allowed on %s", j->method, j->path);
        j->resp.allow = allow_for(j->path);
        break;
    case 413:
        api_fail(&j->resp, 413, "request body is larger than %zu bytes",
                 j->r->limits.max_body_bytes);
        break;
    default:
        api_fail(&j->resp, 404, "no such endpoint: %s %s (see GET /openapi.json)", j->method,
                 j->path);
        break;
    }
    j->ready = true;
}

/* Queues the job's answer, counting it and recording its time from the
 * request's first byte (DESIGN §11). */
static enum MHD_Result answer(http_job *j)
{
    if (j->resp.body == NULL)
        api_fail(&j->resp, 500, "internal error: no answer");
    j->queued = true;
    router_stats_request(j->r, j->route, j->resp.status, mg_clock_mono_ns() - j->start_ns);
    return queue_resp(j->conn, &j->resp);
}

/* Runs the job's handler (on a worker or inline). */
static void run_handler(http_job *j)
{
    mg_api_req req = {.method = j->method,
                      .path = j->path,
                      .arg = j->arg ? j->arg : "",
                      .body = j->body ? j->body : "",
                      .body_len = j->len,
                      .t0_ns = mg_clock_mono_ns()};
    memset(&j->resp, 0, sizeof j->resp);
    if (j->route->json_body) {
        json_error_t jerr;
        if (j->len == 0) {
            api_fail(&j->resp, 422, "request body is empty: a JSON body is required");
            j->ready = true;
            return;
        }
        req.json = json_loadb(req.body, j->len, 0, &jerr);
        if (req.json == NULL) {
            api_fail(&j->resp, 422,
                     "malformed JSON at line %d column %d: %s (NaN and Infinity are not JSON)",
                     jerr.line, jerr.column, jerr.text);
            j->ready = true;
            return;
        }
    }
    j->route->fn(j->r, &req, &j->resp);
    json_decref(req.json);
    if (j->resp.body == NULL)
        api_fail(&j->resp, 500, "internal error: the handler gave no answer");
    j->ready = true;
}

/* ---- worker pool -------------------------------------------------------- */

static void *worker_main(void *arg)
{
    mg_router *r = arg;
    pthread_setname_np(pthread_self(), "mg-router");
    for (;;) {
        pthread_mutex_lock(&r->lock);
        while (r->head == NULL && !r->stopping)
            pthread_cond_wait(&r->cond, &r->lock);
        http_job *j = r->head;
        if (j == NULL) {
            pthread_mutex_unlock(&r->lock);
            return NULL;
        }
        r->head = j->next;
        if (r->head == NULL)
            r->tail = NULL;
        pthread_mutex_unlock(&r->lock);
        run_handler(j);
        MHD_resume_connection(j->conn);
    }
}

/* Suspends the job's connection and queues the job for a worker; false
 * (nothing done) when the router is stopping. */
static bool submit(mg_router *r, http_job *j)
{
    j->next = NULL;
    pthread_mutex_lock(&r->lock);
    if (r->stopping) {
        pthread_mutex_unlock(&r->lock);
        return false;
    }
    MHD_suspend_connection(j->conn);
    if (r->tail)
        r->tail->next = j;
    else
        r->head = j;
    r->tail = j;
    pthread_cond_signal(&r->cond);
    pthread_mutex_unlock(&r->lock);
    return true;
}

/* ---- libmicrohttpd callbacks -------------------------------------------- */

static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version,
                                 const char *upload_data, size_t *upload_data_size,
                                 void **con_cls)
{
    mg_router *r = cls;
    http_job *j = *con_cls;
    (void)version;
    if (j == NULL) {
        j = calloc(1, sizeof *j);
        if (j == NULL)
            return MHD_NO;
        j->r = r;
        j->conn = conn;
        j->start_ns = mg_clock_mono_ns();
        j->path = strdup(url);
        if (j->path == NULL) {
            free(j);
            return MHD_NO;
        }
        bool known = false;
        j->route = mg_route_find(method, j->path, &known, &j->arg);
        j->method = j->route ? j->route->method
                             : strcmp(method, "GET") == 0    ? "GET"
                             : strcmp(method, "POST") == 0   ? "POST"
                             : strcmp(method, "PUT") == 0    ? "PUT"
                             : strcmp(method, "DELETE") == 0 ? "DELETE"
                             : strcmp(method, "HEAD") == 0   ? "HEAD"
                                                             : "OTHER";
        if (j->route == NULL)
            j->early = known ? 405 : 404;
        *con_cls = j;
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                     MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl != NULL && strtoull(cl, NULL, 10) > r->limits.max_body_bytes) {
            /* Refuse now rather than read a body we will not keep; the
             * connection is closed after this answer. */
            j->early = 413;
            early_answer(j);
            return answer(j);
        }
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (j->queued || j->early)
            return MHD_YES;
        if (j->len + n > r->limits.max_body_bytes) {
            j->early = 413;
            free(j->body);
            j->body = NULL;
            j->len = j->cap = 0;
            return MHD_YES;
        }
        if (j->len + n + 1 > j->cap) {
            size_t cap = j->cap ? j->cap : 1024;
            while (cap < j->len + n + 1)
                cap *= 2;
            char *grown = realloc(j->body, cap);
            if (grown == NULL)
                return MHD_NO;
            j->body = grown;
            j->cap = cap;
        }
        memcpy(j->body + j->len, upload_data, n);
        j->len += n;
        j->body[j->len] = '\0';
        return MHD_YES;
    }
    if (j->queued)
        return MHD_YES;
    if (!j->ready) {
        if (j->early) {
            early_answer(j);
        } else if (j->route->inline_) {
            run_handler(j);
        } else {
            if (submit(r, j))
                return MHD_YES;
            api_fail(&j->resp, 503, "the server is shutting down");
            j->ready = true;
        }
    }
    return answer(j);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)conn;
    (void)toe;
    if (*con_cls != NULL)
        job_free(*con_cls);
    *con_cls = NULL;
}

/* ---- lifecycle ---------------------------------------------------------- */

void mg_router_config_default(mg_router_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->listen_host = "127.0.0.1";
    cfg->listen_port = 8000;
    cfg->embed_dim = MG_EMBED_HASH_DIM_DEFAULT;
    cfg->relativity_scale = 0.25;
    cfg->http_threads = 2;
    cfg->workers = 64;
    cfg->call_timeout_ms = 5000;
    cfg->survey_timeout_ms = 2000;
}

static void resolve_limits(mg_router_limits *l, const mg_router_limits *in)
{
    *l = *in;
    if (!l->max_body_bytes)
        l->max_body_bytes = 8u << 20;
    if (!l->max_text_bytes || l->max_text_bytes > MG_MEMORY_TEXT_MAX)
        l->max_text_bytes = MG_MEMORY_TEXT_MAX;
    if (!l->max_query_bytes)
        l->max_query_bytes = 16384;
    if (!l->max_top_k)
        l->max_top_k = 1000;
    if (!l->max_items)
        l->max_items = 10000;
    if (!l->max_cubes)
        l->max_cubes = 64;
    if (!l->max_page_size)
        l->max_page_size = 10000;
}

static void stop_workers(mg_router *r)
{
    pthread_mutex_lock(&r->lock);
    r->stopping = true;
    pthread_cond_broadcast(&r->cond);
    pthread_mutex_unlock(&r->lock);
    for (unsigned i = 0; i < r->n_workers; i++)
        pthread_join(r->workers[i], NULL);
    r->n_workers = 0;
}

static void router_free(mg_router *r)
{
    if (r->n_workers)
        stop_workers(r);
    if (r->mhd)
        MHD_stop_daemon(r->mhd);
    mg_client_close(r->client);
    cube_cache_close(r);
    router_stats_close(r);
    if (r->own_emb)
        mg_embedder_close(r->emb);
    pthread_cond_destroy(&r->cond);
    pthread_mutex_destroy(&r->lock);
    free(r->workers);
    for (size_t i = 0; i < r->n_seeds; i++)
        free(r->seeds[i]);
    free(r->seeds);
    free(r);
}

int mg_router_start(const mg_router_config *cfg, mg_router **out, mg_error *err)
{
    if ((cfg->n_seeds == 0 || cfg->seeds == NULL) && cfg->map_cache == NULL)
        return mg_error_set(err, MG_EINVAL, "router: no seed nodes configured");
    mg_router *r = calloc(1, sizeof *r);
    if (r == NULL)
        return mg_error_set(err, MG_ENOMEM, "router: out of memory");
    pthread_mutex_init(&r->lock, NULL);
    pthread_cond_init(&r->cond, NULL);
    resolve_limits(&r->limits, &cfg->limits);
    if (router_stats_open(r) != MG_OK) {
        router_free(r);
        return mg_error_set(err, MG_ENOMEM, "router: out of memory");
    }
    snprintf(r->version, sizeof r->version, "%s", cfg->version ? cfg->version : MEMGRID_VERSION);
    r->llm = cfg->llm;

    /* The embedder: the given one, or the built-in hash. Its dimension must
     * be known before cubes are made (a remote one learns it by a probe). */
    r->emb = cfg->embedder;
    if (r->emb == NULL) {
        mg_embedder_config ec;
        mg_embedder_config_init(&ec);
        ec.kind = MG_EMBEDDER_HASH;
        ec.dim = cfg->embed_dim ? cfg->embed_dim : MG_EMBED_HASH_DIM_DEFAULT;
        int rc = mg_embedder_open(&ec, &r->emb, err);
        if (rc != MG_OK) {
            router_free(r);
            return mg_error_wrap(err, rc, "router: embedder");
        }
        r->own_emb = true;
    }
    int prc = mg_embedder_probe(r->emb, &r->dim, err);
    if (prc != MG_OK) {
        router_free(r);
        return mg_error_wrap(err, prc,
                             "router: cannot learn the embedding dimension (set "
                             "MEMGRID_EMBED_DIM, or start the embedding server first)");
    }
    if (r->dim == 0 || r->dim > MG_DIM_MAX) {
        router_free(r);
        return mg_error_set(err, MG_EINVAL, "router: embedding dimension %u is outside 1..%d",
                            r->dim, MG_DIM_MAX);
    }
    snprintf(r->embedder, sizeof r->embedder, "%s", mg_embedder_name(r->emb));
    bool hash = strcmp(r->embedder, "hash") == 0;
    uint32_t dim = r->dim;
    /* Dedup compares the hash embedder's feature part only: its reserved
     * dimensions carry a length prior that makes any two documents look
     * alike (embed_hash.h, step 9). */
    r->sim_dims = !hash ? dim : dim >= 32 ? dim - dim / 32 : dim > 1 ? dim - 1 : dim;
    r->relativity_scale = !hash ? 0.0 : cfg->relativity_scale > 0 ? cfg->relativity_scale : 0.25;

    /* The cluster: the seeds, the cached map, then the meta group's map. */
    r->seeds = calloc(cfg->n_seeds ? cfg->n_seeds : 1, sizeof *r->seeds);
    if (r->seeds == NULL) {
        router_free(r);
        return mg_error_set(err, MG_ENOMEM, "router: out of memory");
    }
    for (size_t i = 0; i < cfg->n_seeds; i++) {
        if (cfg->seeds[i] == NULL || (r->seeds[i] = strdup(cfg->seeds[i])) == NULL) {
            router_free(r);
            return mg_error_set(err, cfg->seeds[i] ? MG_ENOMEM : MG_EINVAL,
                                "router: seed %zu", i + 1);
        }
        r->n_seeds = i + 1;
    }
    r->call_timeout_ms = cfg->call_timeout_ms ? cfg->call_timeout_ms : 5000;
    mg_client_config cc = {.seeds = (const char *const *)r->seeds,
                           .n_seeds = r->n_seeds,
                           .map_cache = cfg->map_cache,
                           .call_timeout_ms = r->call_timeout_ms,
                           .survey_timeout_ms =
                               cfg->survey_timeout_ms ? cfg->survey_timeout_ms : 2000};
    int rc = mg_client_open(&cc, &r->client, err);
    if (rc != MG_OK) {
        r->client = NULL;
        router_free(r);
        return rc;
    }
    /* One try at the current map; a cluster that is not up (or not
     * initialized) does not stop the router: requests fetch it later. */
    mg_error merr;
    if (mg_client_refresh_for(r->client, START_REFRESH_MS, &merr) != MG_OK)
        mg_warn("router.map", "no cluster map yet: %s", merr.msg);
    else if (mg_client_epoch(r->client) == 0)
        mg_info("router.map", "%s", "the cluster is not initialized yet (memgrid ctl init)");
    if (cube_cache_open(r) != MG_OK) {
        router_free(r);
        return mg_error_set(err, MG_ENOMEM, "router: out of memory");
    }

    unsigned n_workers = cfg->workers ? cfg->workers : 64;
    r->workers = calloc(n_workers, sizeof *r->workers);
    if (r->workers == NULL) {
        router_free(r);
        return mg_error_set(err, MG_ENOMEM, "router: out of memory");
    }
    for (unsigned i = 0; i < n_workers; i++) {
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        /* The hash embedder takes ~40 KB of stack; the rest is small. */
        pthread_attr_setstacksize(&attr, 512 * 1024);
        int trc = pthread_create(&r->workers[i], &attr, worker_main, r);
        pthread_attr_destroy(&attr);
        if (trc != 0) {
            router_free(r);
            return mg_error_set(err, MG_EIO, "router: cannot start worker threads");
        }
        r->n_workers = i + 1;
    }

    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons(cfg->listen_port);
    const char *host = cfg->listen_host ? cfg->listen_host : "127.0.0.1";
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        router_free(r);
        return mg_error_set(err, MG_EINVAL, "router: listen address \"%s\" is not an IPv4 address",
                            host);
    }
    unsigned threads = cfg->http_threads ? cfg->http_threads : 2;
    r->mhd = MHD_start_daemon(
        MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME, 0, NULL, NULL, on_access, r,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa, MHD_OPTION_THREAD_POOL_SIZE, threads,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, r, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)120, MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned)1024, MHD_OPTION_END);
    if (r->mhd == NULL) {
        router_free(r);
        return mg_error_set(err, MG_EUNAVAIL, "router: cannot listen on %s:%u (in use?)", host,
                            (unsigned)cfg->listen_port);
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(r->mhd, MHD_DAEMON_INFO_BIND_PORT);
    r->port = info ? info->port : cfg->listen_port;
    mg_info("router.start",
            "listen=%s:%u workers=%u http_threads=%u seeds=%zu epoch=%llu embedder=%s dim=%u "
            "fine_mode=%s",
            host, (unsigned)r->port, n_workers, threads, r->n_seeds,
            (unsigned long long)mg_client_epoch(r->client),
            r->embedder, r->dim, r->llm ? "on" : "off");
    *out = r;
    return MG_OK;
}

uint16_t mg_router_port(const mg_router *r)
{
    return r->port;
}

uint64_t mg_router_epoch(mg_router *r)
{
    return mg_client_epoch(r->client);
}

void mg_router_stop(mg_router *r)
{
    if (r == NULL)
        return;
    /* No new connections; the workers finish what is queued (each request's
     * cluster calls end at their deadline at the latest) and resume their
     * connections; give those a moment to be written out. */
    MHD_socket listen_fd = MHD_quiesce_daemon(r->mhd);
    stop_workers(r);
    for (int i = 0; i < 50; i++) {
        const union MHD_DaemonInfo *info =
            MHD_get_daemon_info(r->mhd, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
        if (info == NULL || info->num_connections == 0)
            break;
        usleep(10000);
    }
    router_free(r); /* stops the daemon first: only then may the socket close */
    if (listen_fd != MHD_INVALID_SOCKET)
        close(listen_fd);
    mg_info("router.stop", "%s", "");
}
