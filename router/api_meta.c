/*
 * The route table — the one list of endpoints, which drives dispatch, the
 * 404/405 answers and /openapi.json — and the endpoints that need no cluster:
 * /health, /openapi.json, and the chat endpoints (503 without a chat model,
 * as in MemOS).
 */
#include "admin.h"
#include "api.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* ---- schemas (JSON Schema, as OpenAPI 3.0 uses it) ---------------------- */

#define S_STR "{\"type\":\"string\"}"
#define S_STRS "{\"type\":\"array\",\"items\":{\"type\":\"string\"}}"
#define S_OBJ "{\"type\":\"object\"}"
#define S_ITEM                                                                                   \
    "{\"type\":\"object\",\"required\":[\"id\",\"memory\",\"metadata\"],\"properties\":{"       \
    "\"id\":{\"type\":\"string\",\"format\":\"uuid\"},\"memory\":" S_STR ",\"metadata\":" S_OBJ \
    "}}"
#define S_BUCKETS                                                                                \
    "{\"type\":\"array\",\"items\":{\"type\":\"object\",\"properties\":{\"cube_id\":" S_STR      \
    ",\"memories\":{\"type\":\"array\",\"items\":" S_ITEM "},\"total_nodes\":{\"type\":"        \
    "\"integer\"}}}}"

static const char add_req[] =
    "{\"type\":\"object\",\"required\":[\"user_id\"],\"properties\":{"
    "\"user_id\":" S_STR ",\"writable_cube_ids\":" S_STRS ",\"mem_cube_id\":{\"type\":\"string\","
    "\"deprecated\":true},\"session_id\":" S_STR ",\"task_id\":" S_STR
    ",\"async_mode\":{\"type\":\"string\",\"enum\":[\"async\",\"sync\"],\"default\":\"async\"},"
    "\"mode\":{\"type\":\"string\",\"enum\":[\"fast\",\"fine\"]},\"custom_tags\":" S_STRS
    ",\"info\":" S_OBJ ",\"messages\":{\"oneOf\":[" S_STR ",{\"type\":\"array\",\"items\":{"
    "\"type\":\"object\",\"required\":[\"role\",\"content\"],\"properties\":{\"role\":" S_STR
    ",\"content\":" S_STR ",\"chat_time\":" S_STR "}}}]},\"memory_content\":{\"type\":\"string\","
    "\"deprecated\":true},\"chat_history\":{\"type\":\"array\"},\"source\":" S_STR
    ",\"memories\":{\"type\":\"array\",\"items\":" S_ITEM
    ",\"description\":\"memgrid extension: MemOS items stored as they are; "
    "metadata.embedding, when given, must have the cube's dimension\"}}}";

static const char add_resp[] =
    "{\"type\":\"array\",\"items\":{\"type\":\"object\",\"properties\":{\"memory\":" S_STR
    ",\"memory_id\":" S_STR ",\"memory_type\":" S_STR ",\"cube_id\":" S_STR "}}}";

static const char search_req[] =
    "{\"type\":\"object\",\"required\":[\"query\",\"user_id\"],\"properties\":{"
    "\"query\":" S_STR ",\"user_id\":" S_STR ",\"readable_cube_ids\":" S_STRS
    ",\"mem_cube_id\":{\"type\":\"string\",\"deprecated\":true},\"mode\":{\"type\":\"string\","
    "\"enum\":[\"fast\",\"fine\",\"mixture\"],\"default\":\"fast\"},\"session_id\":" S_STR
    ",\"top_k\":{\"type\":\"integer\",\"minimum\":1,\"default\":10},\"relativity\":{\"type\":"
    "\"number\",\"minimum\":0,\"default\":0.45},\"dedup\":{\"type\":\"string\",\"nullable\":true,"
    "\"enum\":[\"no\",\"sim\",\"mmr\"],\"default\":\"mmr\"},\"rerank\":{},\"filter\":" S_OBJ
    ",\"search_memory_type\":{\"type\":\"string\",\"default\":\"All\"},\"include_preference\":{"
    "\"type\":\"boolean\",\"default\":true},\"pref_top_k\":{\"type\":\"integer\",\"default\":6},"
    "\"search_tool_memory\":{\"type\":\"boolean\",\"default\":true},\"tool_mem_top_k\":{\"type\":"
    "\"integer\",\"default\":6},\"include_skill_memory\":{\"type\":\"boolean\",\"default\":true},"
    "\"skill_mem_top_k\":{\"type\":\"integer\",\"default\":3},\"consistency\":{\"type\":"
    "\"string\",\"enum\":[\"leader\",\"strong\",\"follower\"],\"default\":\"leader\"}}}";

static const char search_resp[] =
    "{\"type\":\"object\",\"properties\":{\"text_mem\":" S_BUCKETS ",\"act_mem\":{\"type\":"
    "\"array\"},\"para_mem\":{\"type\":\"array\"},\"pref_mem\":" S_BUCKETS ",\"tool_mem\":" S_BUCKETS
    ",\"skill_mem\":" S_BUCKETS ",\"pref_note\":" S_STR ",\"partial\":{\"type\":\"boolean\","
    "\"description\":\"only when some cubes' groups did not answer\"},\"missing\":{\"type\":"
    "\"array\"}}}";

static const char get_all_req[] =
    "{\"type\":\"object\",\"required\":[\"user_id\",\"memory_type\"],\"properties\":{"
    "\"user_id\":" S_STR ",\"memory_type\":{\"type\":\"string\",\"enum\":[\"text_mem\","
    "\"act_mem\",\"param_mem\",\"para_mem\"]},\"mem_cube_ids\":" S_STRS ",\"search_query\":" S_STR
    "}}";

static const char get_all_resp[] =
    "{\"type\":\"array\",\"items\":{\"type\":\"object\",\"properties\":{\"cube_id\":" S_STR
    ",\"memories\":{\"type\":\"array\",\"items\":" S_ITEM "},\"memory_statistics\":" S_OBJ "}}}";

static const char get_memory_req[] =
    "{\"type\":\"object\",\"required\":[\"mem_cube_id\"],\"properties\":{\"mem_cube_id\":" S_STR
    ",\"user_id\":" S_STR ",\"filter\":" S_OBJ ",\"page\":{\"type\":\"integer\",\"minimum\":1},"
    "\"page_size\":{\"type\":\"integer\",\"minimum\":1},\"include_preference\":{\"type\":"
    "\"boolean\"},\"include_tool_memory\":{\"type\":\"boolean\"},\"include_skill_memory\":{"
    "\"type\":\"boolean\"}}}";

static const char get_memory_resp[] =
    "{\"type\":\"object\",\"properties\":{\"text_mem\":" S_BUCKETS ",\"pref_mem\":" S_BUCKETS
    ",\"tool_mem\":" S_BUCKETS ",\"skill_mem\":" S_BUCKETS "}}";

static const char by_ids_req[] = "{\"type\":\"array\",\"items\":{\"type\":\"string\","
                                 "\"format\":\"uuid\"}}";
static const char by_ids_resp[] =
    "{\"type\":\"object\",\"properties\":{\"memories\":{\"type\":\"array\",\"items\":" S_ITEM
    "}}}";

static const char delete_req[] =
    "{\"type\":\"object\",\"properties\":{\"writable_cube_ids\":" S_STRS ",\"memory_ids\":" S_STRS
    ",\"file_ids\":" S_STRS ",\"filter\":" S_OBJ ",\"user_id\":" S_STR ",\"session_id\":" S_STR
    "}}";
static const char delete_resp[] =
    "{\"type\":\"object\",\"properties\":{\"status\":{\"type\":\"string\",\"enum\":[\"success\","
    "\"failure\"]}}}";

static const char create_req[] =
    "{\"type\":\"object\",\"required\":[\"owner_id\"],\"properties\":{\"cube_name\":" S_STR
    ",\"owner_id\":" S_STR ",\"cube_id\":" S_STR ",\"cube_path\":" S_STR ",\"shared_with\":{"
    "\"type\":\"array\",\"items\":{\"type\":\"string\"},\"description\":\"memgrid extension: "
    "users who may read and write the cube\"}}}";
static const char create_resp[] =
    "{\"type\":\"object\",\"properties\":{\"cube_id\":" S_STR ",\"cube_name\":" S_STR
    ",\"owner_id\":" S_STR ",\"created\":{\"type\":\"boolean\"}}}";

static const char register_req[] =
    "{\"type\":\"object\",\"required\":[\"mem_cube_name_or_path\"],\"properties\":{"
    "\"mem_cube_name_or_path\":" S_STR ",\"mem_cube_id\":" S_STR ",\"user_id\":" S_STR "}}";
static const char register_resp[] =
    "{\"type\":\"object\",\"properties\":{\"cube_id\":" S_STR ",\"cube_name_or_path\":" S_STR
    "}}";

static const char exist_req[] =
    "{\"type\":\"object\",\"required\":[\"mem_cube_id\"],\"properties\":{\"mem_cube_id\":" S_STR
    "}}";
static const char exist_resp[] =
    "{\"type\":\"object\",\"additionalProperties\":{\"type\":\"boolean\"}}";

static const char health_resp[] =
    "{\"type\":\"object\",\"properties\":{\"status\":" S_STR ",\"service\":" S_STR
    ",\"version\":" S_STR "}}";

#define S_LATENCY                                                                                \
    "{\"type\":\"object\",\"properties\":{\"count\":{\"type\":\"integer\"},\"mean_ms\":{"      \
    "\"type\":\"number\"},\"p50_ms\":{\"type\":\"number\"},\"p90_ms\":{\"type\":\"number\"},"  \
    "\"p99_ms\":{\"type\":\"number\"},\"p999_ms\":{\"type\":\"number\"},\"max_ms\":{\"type\":"  \
    "\"number\"},\"errors\":{\"type\":\"integer\"},\"endpoint\":" S_STR ",\"stage\":" S_STR        \
    ",\"op\":" S_STR "}}"
#define S_ROWS "{\"type\":\"array\",\"items\":" S_LATENCY "}"

static const char stats_resp[] =
    "{\"type\":\"object\",\"properties\":{\"endpoints\":" S_ROWS ",\"stages\":" S_ROWS
    ",\"ops\":" S_ROWS ",\"node_stages\":" S_ROWS ",\"nodes\":{\"type\":\"array\",\"items\":{"
    "\"type\":\"object\",\"properties\":{\"node\":{\"type\":\"integer\"},\"up\":{\"type\":"
    "\"boolean\"},\"groups\":{\"type\":\"integer\"},\"leaders\":{\"type\":\"integer\"},"
    "\"memories\":{\"type\":\"integer\"},\"cubes\":{\"type\":\"integer\"},\"error\":" S_STR
    "}}},\"cluster\":" S_OBJ "}}";

#define S_ARR "{\"type\":\"array\"}"
#define S_INT "{\"type\":\"integer\"}"

static const char admin_map_resp[] =
    "{\"type\":\"object\",\"properties\":{\"epoch\":" S_INT ",\"nodes\":" S_ARR
    ",\"groups\":" S_ARR ",\"slots\":" S_ARR "}}";
static const char admin_init_req[] =
    "{\"type\":\"object\",\"required\":[\"groups\",\"replicas\"],\"properties\":{"
    "\"groups\":" S_INT ",\"replicas\":" S_INT ",\"nodes\":" S_STRS "}}";
static const char admin_add_node_req[] =
    "{\"type\":\"object\",\"required\":[\"rpc\"],\"properties\":{\"rpc\":" S_STR "}}";
static const char admin_id_req[] =
    "{\"type\":\"object\",\"required\":[\"id\"],\"properties\":{\"id\":" S_INT "}}";
static const char admin_transfer_req[] =
    "{\"type\":\"object\",\"required\":[\"group\"],\"properties\":{\"group\":" S_INT
    ",\"to\":" S_INT "}}";
static const char admin_move_req[] =
    "{\"type\":\"object\",\"required\":[\"group\",\"from\",\"to\"],\"properties\":{"
    "\"group\":" S_INT ",\"from\":" S_INT ",\"to\":" S_INT "}}";
static const char admin_rebalance_req[] =
    "{\"type\":\"object\",\"properties\":{\"to_group\":" S_INT
    ",\"new_group\":{\"type\":\"boolean\"},\"replicas\":" S_INT ",\"slots\":" S_STR "}}";

/* ---- the table ------------------------------------------------------------ */

const mg_route mg_routes[] = {
    {"GET", "/health", false, true, false, api_health, "Health check", NULL, health_resp, false},
    {"GET", "/openapi.json", false, true, false, api_openapi, "This document", NULL, NULL, false},
    {"POST", "/product/add", false, false, true, api_add,
     "Add memories (fast mode from messages, memory_content, or memories)", add_req, add_resp,
     true},
    {"POST", "/product/search", false, false, true, api_search, "Search memories", search_req,
     search_resp, true},
    {"POST", "/product/get_all", false, false, true, api_get_all,
     "Get all memories of a user's cubes", get_all_req, get_all_resp, true},
    {"POST", "/product/get_memory", false, false, true, api_get_memory,
     "Get a cube's memories by bucket, with filter and pages", get_memory_req, get_memory_resp,
     true},
    {"GET", "/product/get_memory/", true, false, false, api_get_memory_by_id,
     "Get one memory by id (data null when absent)", NULL, S_ITEM, true},
    {"POST", "/product/get_memory_by_ids", false, false, true, api_get_memory_by_ids,
     "Get memories by ids", by_ids_req, by_ids_resp, true},
    {"POST", "/product/delete_memory", false, false, true, api_delete_memory,
     "Delete memories by ids, file ids or filter", delete_req, delete_resp, true},
    {"POST", "/product/create_cube", false, false, true, api_create_cube, "Create a cube",
     create_req, create_resp, true},
    {"POST", "/product/register_cube", false, false, true, api_register_cube,
     "Register a cube for a user", register_req, register_resp, true},
    {"POST", "/product/exist_mem_cube_id", false, false, true, api_exist_cube,
     "Whether a cube exists", exist_req, exist_resp, true},
    {"POST", "/product/chat/complete", false, true, false, api_chat,
     "Chat (503: no chat model configured)", NULL, NULL, true},
    {"POST", "/product/chat/stream", false, true, false, api_chat,
     "Chat, streamed (503: no chat model configured)", NULL, NULL, true},
    {"GET", "/metrics", false, false, false, api_metrics,
     "Prometheus metrics (text format 0.0.4) of the router and every node", NULL, NULL, false},
    {"GET", "/admin/stats", false, false, false, api_admin_stats,
     "Latency percentiles and counts per endpoint, stage and node op, merged across the "
     "router and the nodes (memgrid ctl stats)",
     NULL, stats_resp, true},
    /* Admin API (cluster), router/admin*.c; docs/API.md "Admin API (cluster)". */
    {"GET", "/admin/map", false, false, false, api_admin_map, "The cluster map", NULL,
     admin_map_resp, true},
    {"POST", "/admin/init", false, false, true, api_admin_init,
     "Initialize the cluster: meta group and data groups placed on the nodes", admin_init_req,
     admin_map_resp, true},
    {"GET", "/admin/status", false, false, false, api_admin_status,
     "Nodes, groups, leaders and replica lag", NULL, S_OBJ, true},
    {"GET", "/admin/nodes", false, false, false, api_admin_nodes, "The nodes of the map", NULL,
     S_ARR, true},
    {"POST", "/admin/nodes", false, false, true, api_admin_add_node, "Add a node to the map",
     admin_add_node_req, S_OBJ, true},
    {"POST", "/admin/nodes/remove", false, false, true, api_admin_remove_node,
     "Remove a node: move its replicas elsewhere, then drop it", admin_id_req, S_OBJ, true},
    {"GET", "/admin/groups", false, false, false, api_admin_groups,
     "The groups: replicas, leader, slots, memories and cubes", NULL, S_ARR, true},
    {"GET", "/admin/slots", false, false, false, api_admin_slots, "The slot map", NULL, S_OBJ,
     true},
    {"GET", "/admin/slots/", true, false, false, api_admin_slots,
     "The slot map and the slot and group of one cube (the path ends with the cube id)", NULL,
     S_OBJ, true},
    {"POST", "/admin/transfer-leader", false, false, true, api_admin_transfer_leader,
     "Move a group's leadership", admin_transfer_req, S_OBJ, true},
    {"POST", "/admin/move-replica", false, false, true, api_admin_move_replica,
     "Move a group's replica from one node to another", admin_move_req, S_OBJ, true},
    {"POST", "/admin/rebalance", false, false, true, api_admin_rebalance,
     "Move slots between data groups (optionally to a new group) with writes running",
     admin_rebalance_req, S_OBJ, true},
    {"POST", "/admin/balance-leaders", false, false, false, api_admin_balance_leaders,
     "Make each group led by its first replica (leaders spread over the nodes)", NULL, S_OBJ,
     true},
};
const size_t mg_n_routes = sizeof mg_routes / sizeof mg_routes[0];

static bool path_matches(const mg_route *rt, const char *path, const char **arg)
{
    if (!rt->prefix)
        return strcmp(path, rt->path) == 0;
    size_t n = strlen(rt->path);
    if (strncmp(path, rt->path, n) != 0 || path[n] == '\0' || strchr(path + n, '/') != NULL)
        return false;
    *arg = path + n;
    return true;
}

const mg_route *mg_route_find(const char *method, const char *path, bool *path_known,
                              const char **arg)
{
    *path_known = false;
    for (size_t i = 0; i < mg_n_routes; i++) {
        const char *a = "";
        if (!path_matches(&mg_routes[i], path, &a))
            continue;
        *path_known = true;
        if (strcmp(mg_routes[i].method, method) == 0) {
            *arg = a;
            return &mg_routes[i];
        }
    }
    return NULL;
}

/* ---- /health, chat -------------------------------------------------------- */

void api_health(mg_router *r, const mg_api_req *req, mg_api_resp *resp)
{
    (void)req;
    api_json(resp, 200,
             json_pack("{s:s,s:s,s:s}", "status", "healthy", "service", "memos", "version",
                       r->version));
}

void api_chat(mg_router *r, const mg_api_req *req, mg_api_resp *resp)
{
    (void)r;
    (void)req;
    api_fail(resp, 503, "Chat service is not available. Chat handler not initialized. (memgrid: "
                        "no OpenAI-compatible chat endpoint is configured)");
}

/* ---- /openapi.json -------------------------------------------------------- */

static json_t *envelope_schema(json_t *data)
{
    return json_pack("{s:s,s:[s,s,s],s:{s:{s:s},s:{s:s},s:o}}", "type", "object", "required",
                     "code", "message", "data", "properties", "code", "type", "integer",
                     "message", "type", "string", "data",
                     data ? data : json_pack("{s:b}", "nullable", 1));
}

static json_t *schema(const char *text)
{
    json_error_t e;
    return text ? json_loads(text, 0, &e) : NULL;
}

static json_t *build_openapi(const mg_router *r)
{
    json_t *paths = json_object();
    for (size_t i = 0; i < mg_n_routes; i++) {
        const mg_route *rt = &mg_routes[i];
        /* The one prefix route besides get_memory/{memory_id}: admin/slots/{cube_id}. */
        bool by_cube = rt->prefix && strncmp(rt->path, "/admin/", 7) == 0;
        char path[128];
        snprintf(path, sizeof path, "%s%s", rt->path,
                 !rt->prefix ? "" : by_cube ? "{cube_id}" : "{memory_id}");
        json_t *item = json_object_get(paths, path);
        if (item == NULL) {
            item = json_object();
            json_object_set_new(paths, path, item);
        }
        json_t *op = json_object();
        json_object_set_new(op, "summary", json_string(rt->summary));
        if (by_cube)
            json_object_set_new(op, "parameters",
                                json_pack("[{s:s,s:s,s:b,s:{s:s}}]", "name", "cube_id", "in",
                                          "path", "required", 1, "schema", "type", "string"));
        else if (rt->prefix)
            json_object_set_new(op, "parameters",
                                json_pack("[{s:s,s:s,s:b,s:{s:s,s:s}}]", "name", "memory_id",
                                          "in", "path", "required", 1, "schema", "type", "string",
                                          "format", "uuid"));
        if (rt->request_schema)
            json_object_set_new(
                op, "requestBody",
                json_pack("{s:b,s:{s:{s:o}}}", "required", 1, "content", "application/json",
                          "schema", schema(rt->request_schema)));
        json_t *ok_schema = rt->enveloped ? envelope_schema(schema(rt->response_schema))
                                          : schema(rt->response_schema);
        json_t *ok = json_pack("{s:s}", "description", "success");
        if (ok_schema)
            json_object_set_new(ok, "content",
                                json_pack("{s:{s:o}}", "application/json", "schema", ok_schema));
        json_t *responses = json_object();
        json_object_set_new(responses, "200", ok);
        json_object_set_new(
            responses, "4XX",
            json_pack("{s:s,s:{s:{s:o}}}", "description",
                      "client error: {code, message, data: null} with code = the HTTP status "
                      "(400 bad request, 403 forbidden, 404 unknown cube or path, 405, 413 "
                      "too large, 422 validation)",
                      "content", "application/json", "schema", envelope_schema(NULL)));
        json_object_set_new(
            responses, "5XX",
            json_pack("{s:s,s:{s:{s:o}}}", "description",
                      "server or cluster error (503 unavailable, 504 timeout)", "content",
                      "application/json", "schema", envelope_schema(NULL)));
        json_object_set_new(op, "responses", responses);
        char method[8];
        size_t k = 0;
        for (; rt->method[k] && k < sizeof method - 1; k++)
            method[k] = (char)(rt->method[k] - 'A' + 'a');
        method[k] = '\0';
        json_object_set_new(item, method, op);
    }
    return json_pack(
        "{s:s,s:{s:s,s:s,s:s},s:o}", "openapi", "3.0.3", "info", "title", "memgrid", "version",
        r->version, "description",
        "MemOS-compatible memory API served by memgrid (see docs/API.md for what matches MemOS "
        "and what differs)",
        "paths", paths);
}

static pthread_once_t openapi_once = PTHREAD_ONCE_INIT;
static char *openapi_text;
static const mg_router *openapi_router;

static void openapi_init(void)
{
    json_t *doc = build_openapi(openapi_router);
    openapi_text = doc ? json_dumps(doc, JSON_COMPACT | JSON_REAL_PRECISION(16)) : NULL;
    json_decref(doc);
}

void api_openapi(mg_router *r, const mg_api_req *req, mg_api_resp *resp)
{
    (void)req;
    openapi_router = r;
    pthread_once(&openapi_once, openapi_init);
    if (openapi_text == NULL) {
        api_fail(resp, 500, "cannot build the OpenAPI document");
        return;
    }
    free(resp->body);
    resp->status = 200;
    resp->body = strdup(openapi_text);
    resp->len = resp->body ? strlen(resp->body) : 0;
}
