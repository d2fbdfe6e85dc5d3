/*
 * Inside the router: the state every handler shares, the route table, and
 * the helpers handlers use to read requests and write MemOS envelopes.
 *
 * A handler runs on a router worker (or, for routes marked `inline`, on the
 * HTTP thread) with the whole request body; it fills an mg_api_resp and
 * returns. Handlers block on the cluster through client.h; the HTTP
 * connection is suspended meanwhile (http.c).
 */
#ifndef MG_ROUTER_API_H
#define MG_ROUTER_API_H

#include "../lib/error.h"
#include "../storage/item.h"
#include "client.h"
#include "router.h"

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct MHD_Daemon;
typedef struct http_job http_job;

struct mg_router {
    mg_router_limits limits;        /* defaults resolved */
    mg_client *client;
    struct MHD_Daemon *mhd;
    uint16_t port;
    char version[32];

    /* Embedding (DESIGN §9). */
    struct mg_embedder *emb;
    bool own_emb;                   /* opened by the router (closed by it) */
    char embedder[64];              /* stored in cubes: "hash", "openai:<model>", ... */
    uint32_t dim;
    uint32_t sim_dims;              /* dimensions compared by dedup (hash: the feature part) */
    double relativity_scale;        /* > 0: relativity = 1 - exp(-raw / scale); 0: raw */
    struct mg_llm *llm;             /* fine mode; NULL = refused */
    unsigned call_timeout_ms;       /* a cluster call's deadline (resolved) */

    /* Where the cluster is: the seeds' rpc URLs (copies), e.g. for
     * POST /admin/init, which asks each of them NODE_INFO. */
    char **seeds;
    size_t n_seeds;

    /* Worker pool. */
    pthread_t *workers;
    unsigned n_workers;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    http_job *head, *tail;
    bool stopping;

    /* Cube cache (cubes.c). */
    struct cube_cache *cubes;

    /* Metrics (stats.c). */
    struct router_stats *stats;
};

/* ---- requests and answers ---------------------------------------------- */

typedef struct mg_api_req {
    const char *method;
    const char *path;
    const char *arg;        /* what follows a prefix route's path ("" otherwise) */
    const char *body;
    size_t body_len;
    json_t *json;           /* the parsed body for routes with json_body */
    uint64_t t0_ns;         /* when the handler began (before the JSON parse),
                             * mg_clock_mono_ns: where the "parse" stage starts */
} mg_api_req;

typedef struct mg_api_resp {
    unsigned status;        /* HTTP status */
    char *body;             /* malloc'd JSON text */
    size_t len;
    const char *allow;      /* Allow header for 405, or NULL */
    const char *content_type; /* static text, or NULL for application/json */
} mg_api_resp;

typedef void (*mg_api_handler)(mg_router *r, const mg_api_req *req, mg_api_resp *resp);

typedef struct mg_route {
    const char *method;
    const char *path;       /* exact path, or a prefix ending in '/' when `prefix` */
    bool prefix;
    bool inline_;           /* no cluster access: answered on the HTTP thread */
    bool json_body;         /* the body is JSON, parsed before the handler */
    mg_api_handler fn;
    const char *summary;
    const char *request_schema;  /* JSON Schema text of the body, or NULL */
    const char *response_schema; /* JSON Schema text of `data` (or of the answer
                                  * when not enveloped), or NULL */
    bool enveloped;         /* answer is {code, message, data} */
} mg_route;

extern const mg_route mg_routes[];
extern const size_t mg_n_routes;

/* The route for method+path: *out is the route, or NULL with *path_known
 * telling 405 (the path exists with another method) from 404. */
const mg_route *mg_route_find(const char *method, const char *path, bool *path_known,
                              const char **arg);

/* ---- answers ------------------------------------------------------------ */

/* {"code": 200, "message": message, "data": data} (data stolen; NULL = null). */
void api_ok(mg_api_resp *resp, const char *message, json_t *data);

/* {"code": status, "message": ..., "data": null} with HTTP status `status`. */
void api_fail(mg_api_resp *resp, unsigned status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* api_fail with the HTTP status for an error code (400, 403, 404, 413, 503,
 * ...) and the error's message. */
void api_fail_err(mg_api_resp *resp, const mg_error *err);
unsigned api_status_of(int code);

/* An answer already written as JSON text (malloc'd, taken). */
void api_raw(mg_api_resp *resp, unsigned status, char *text, size_t len);

/* A plain JSON answer (not enveloped), value stolen. */
void api_json(mg_api_resp *resp, unsigned status, json_t *value);

/* ---- reading request fields --------------------------------------------- */
/* Each returns MG_OK, or fills resp with a 422 naming the field and returns
 * MG_EINVAL. "Absent" includes JSON null. */

int api_str(const json_t *body, const char *key, bool required, const char **out,
            mg_api_resp *resp);
int api_user_id(const json_t *body, const char *key, bool required, const char **out,
                mg_api_resp *resp);
int api_cube_id_check(const char *field, const char *id, mg_api_resp *resp);
/* A list of strings (absent → *out NULL). */
int api_str_list(const json_t *body, const char *key, const json_t **out, mg_api_resp *resp);
int api_int(const json_t *body, const char *key, long long def, long long min, long long max,
            long long *out, mg_api_resp *resp);
int api_num(const json_t *body, const char *key, double def, double min, double max, double *out,
            mg_api_resp *resp);
int api_bool(const json_t *body, const char *key, bool def, bool *out, mg_api_resp *resp);
/* An object (absent → *out NULL). */
int api_obj(const json_t *body, const char *key, const json_t **out, mg_api_resp *resp);

/* ---- cluster helpers (cubes.c) ------------------------------------------ */

/* The cube record, from the cache or the cube's group (MG_ENOTFOUND when
 * absent). */
int cube_get(mg_router *r, const char *cube_id, mg_cube *out, mg_error *err);

/* Makes sure `user` may write `cube_id`: creates the user's own default cube
 * (cube_id == user) when absent; MG_ENOTFOUND for another absent cube,
 * MG_EPERM when the user may not write it, MG_EDIM when the cube was embedded
 * with another embedder or dimension. */
int cube_ensure_writable(mg_router *r, const char *user, const char *cube_id, mg_error *err);

/* Creates a cube (MG_EEXIST when present). shared may be NULL. */
int cube_create(mg_router *r, const char *cube_id, const char *owner, const char *name,
                const json_t *shared, mg_error *err);

/* The data groups of the current map (malloc'd, *n of them; refreshes the
 * map once when there is none): MG_EUNAVAIL "cluster not initialized" when
 * there is still none, MG_ENOMEM. */
int router_data_groups(mg_router *r, uint64_t **out, size_t *n, mg_error *err);

/* MG_OK when the router has a cluster map (fetching one when it has none),
 * else MG_EUNAVAIL with the reason (mg_client_need_map; HTTP 503). */
int router_need_map(mg_router *r, mg_error *err);

/* Forgets a cached cube. */
void cube_forget(mg_router *r, const char *cube_id);

int cube_cache_open(mg_router *r);
void cube_cache_close(mg_router *r);

/* Sends one write command to the cube's group; MG_OK when applied, else the
 * command's outcome code with its message. *count gets the outcome's count
 * (may be NULL). The command is not taken. */
struct mg_cmd;
int cluster_write(mg_router *r, const char *user, const struct mg_cmd *cmd, size_t *count,
                  mg_error *err);

/* Embeds texts with the router's embedder into out[n * r->dim]. */
int router_embed(mg_router *r, const char *const *texts, const size_t *lens, size_t n, int role,
                 float *out, mg_error *err);

/* The reported relativity of a raw score. */
double router_relativity(const mg_router *r, double raw);

/* ---- items -------------------------------------------------------------- */

/* The MemOS JSON form of a record (mg_item_to_json), or NULL (logged) when the
 * record does not decode. */
json_t *api_item_json(const uint8_t *record, size_t len);

/* Buckets of search and get_memory answers. */
typedef enum api_bucket {
    API_BUCKET_TEXT = 0,
    API_BUCKET_PREF,
    API_BUCKET_TOOL,
    API_BUCKET_SKILL,
    API_BUCKET_NONE,    /* types that no bucket shows (none today) */
} api_bucket;

/* The bucket of a memory_type (unknown and absent types go to text). */
api_bucket api_bucket_of(const char *memory_type, size_t len);

/* ---- metrics (stats.c) --------------------------------------------------- */

/* Stages of adds and searches (DESIGN §11), recorded per request. */
enum router_op { ROUTER_OP_ADD = 0, ROUTER_OP_SEARCH, ROUTER_OP_COUNT_ };
enum router_stage {
    ROUTER_STAGE_PARSE = 0, /* JSON parse and validation (fast-mode windows included) */
    ROUTER_STAGE_EMBED,     /* the embedder */
    ROUTER_STAGE_ROUTE,     /* cube lookups, access checks, building commands/surveys */
    ROUTER_STAGE_SCATTER,   /* the cluster round trips */
    ROUTER_STAGE_MERGE,     /* top-k merge, dedup, the answer */
    ROUTER_STAGE_COUNT_
};

/* Registers the router's series (MG_ENOMEM; the caller then frees with
 * router_stats_close, which also takes a partly opened one). */
int router_stats_open(mg_router *r);
void router_stats_close(mg_router *r);

/* One answered request: its route (NULL: none matched), HTTP status and time
 * from first byte to answer. Any thread; lock-free. */
void router_stats_request(mg_router *r, const mg_route *route, unsigned status, uint64_t ns);

/* Records now - *t as `stage` of `op` and sets *t to now. */
void router_stage(mg_router *r, int op, int stage, uint64_t *t);
/* Records a stage's time measured by the caller. */
void router_stage_ns(mg_router *r, int op, int stage, uint64_t ns);

/* Handlers. */
void api_metrics(mg_router *r, const mg_api_req *req, mg_api_resp *resp);
void api_admin_stats(mg_router *r, const mg_api_req *req, mg_api_resp *resp);
void api_add(mg_router *r, const mg_api_req *req, mg_api_resp *resp);
void api_search(mg_router *r, const mg_api_req *req, mg_api_resp *resp);
void api_get_all(mg_router *r, const mg_api_req *req, mg_api_resp *resp);
void api_get_memory(mg_router *r, const mg_api_req *req, mg_api_resp *resp);
void api_get_memory_by_id(mg_router *r, const mg_api_req *req, mg_api_resp *resp);
void api_get_memory_by_ids(mg_router *r, const mg_api_req *req, mg_api_resp *resp);
void api_delete_memory(mg_router *r, const mg_api_req *req, mg_api_resp *resp);
void api_create_cube(mg_router *r, const mg_api_req *req, mg_api_resp *resp);
void api_register_cube(mg_router *r, const mg_api_req *req, mg_api_resp *resp);
void api_exist_cube(mg_router *r, const mg_api_req *req, mg_api_resp *resp);
void api_health(mg_router *r, const mg_api_req *req, mg_api_resp *resp);
void api_openapi(mg_router *r, const mg_api_req *req, mg_api_resp *resp);
void api_chat(mg_router *r, const mg_api_req *req, mg_api_resp *resp);

#endif
