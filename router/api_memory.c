/*
 * Reading and deleting memories (MEMOS_API.md "Other /product endpoints"):
 * get_all, get_memory (paged, by bucket), get_memory/{id},
 * get_memory_by_ids and delete_memory.
 *
 * A memory id names no cube, so lookups by id ask every data group at once
 * (MEM_GET with no cube). Like MemOS, the id lookups and delete_memory without
 * a user_id check no access: ids are unguessable UUIDs, and the MemOS API
 * carries no user for them.
 */
#include "api.h"

#include "../cluster/command.h"
#include "../lib/jsonmp.h"
#include "../lib/mp.h"
#include "../lib/uuid.h"
#include "../storage/filter.h"
#include "merge.h"

#include <stdlib.h>
#include <string.h>

#define LIST_PAGE 1000          /* records asked per MEM_LIST */
#define SCAN_MAX 200000         /* records one get_memory walks at most */

/* ---- access ------------------------------------------------------------- */

/* Whether `user` (NULL: no check) may read `cube_id`. MG_ENOTFOUND for an
 * absent cube unless it is the user's own default cube (then *absent). */
static int check_readable(mg_router *r, const char *user, const char *cube_id, bool *absent,
                          mg_error *err)
{
    mg_cube cube;
    *absent = false;
    int rc = cube_get(r, cube_id, &cube, err);
    if (rc == MG_ENOTFOUND && user != NULL && strcmp(user, cube_id) == 0) {
        *absent = true;
        return MG_OK;
    }
    if (rc != MG_OK)
        return rc;
    if (user != NULL && !mg_cube_allows(&cube, user))
        rc = mg_error_set(err, MG_EPERM, "user \"%s\" may not access cube \"%s\"", user, cube_id);
    mg_cube_clear(&cube);
    return rc;
}

/* ---- listing ------------------------------------------------------------ */

typedef int (*record_fn)(void *ctx, const uint8_t *rec, size_t len);

/* Walks the cube's memories (matching filter, may be NULL) in id order and
 * hands each record to fn, at most `max`; *truncated when more remain. */
static int list_cube(mg_router *r, const char *user, const char *cube_id, const json_t *filter,
                     size_t max, record_fn fn, void *ctx, bool *truncated, mg_error *err)
{
    uint8_t after[16];
    bool have_after = false, more = true;
    size_t seen = 0;
    *truncated = false;
    while (more) {
        if (seen >= max) {
            *truncated = true;
            return MG_OK;
        }
        size_t limit = max - seen < LIST_PAGE ? max - seen : LIST_PAGE;
        msgpack_sbuffer sb;
        msgpack_packer pk;
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        int rc = 0;
        rc |= msgpack_pack_map(&pk, 4);
        rc |= mg_mp_pack_cstr(&pk, "cube_id") | mg_mp_pack_cstr(&pk, cube_id);
        rc |= mg_mp_pack_cstr(&pk, "filter");
        rc |= filter ? mg_jsonmp_pack(&pk, filter) : msgpack_pack_nil(&pk);
        rc |= mg_mp_pack_cstr(&pk, "after");
        rc |= have_after ? mg_mp_pack_binn(&pk, after, 16) : msgpack_pack_nil(&pk);
        rc |= mg_mp_pack_cstr(&pk, "limit") | msgpack_pack_uint64(&pk, limit);
        if (rc) {
            msgpack_sbuffer_destroy(&sb);
            return mg_error_set(err, MG_ENOMEM, "out of memory");
        }
        mg_client_reply rep;
        rc = mg_client_call_cube(r->client, user ? user : "", MG_OP_MEM_LIST, cube_id, sb.data,
                                 sb.size, &rep, err);
        msgpack_sbuffer_destroy(&sb);
        if (rc != MG_OK)
            return mg_error_wrap(err, rc, "cube \"%s\"", cube_id);
        mg_mp_reader rd = mg_wire_body(rep.rep.body, rep.rep.body_len);
        uint32_t n, m;
        bool got_more = false;
        rc = mg_mp_read_map(&rd, &n);
        for (uint32_t i = 0; rc == MG_OK && i < n; i++) {
            if (mg_mp_peek_str_eq(&rd, "records")) {
                mg_mp_skip(&rd);
                rc = mg_mp_read_array(&rd, &m);
                for (uint32_t j = 0; rc == MG_OK && j < m; j++) {
                    const uint8_t *rec;
                    uint32_t len;
                    rc = mg_mp_read_bin(&rd, &rec, &len);
                    if (rc != MG_OK)
                        break;
                    const uint8_t *id;
                    if (mg_record_id(rec, len, &id)) {
                        memcpy(after, id, 16);
                        have_after = true;
                    }
                    seen++;
                    rc = fn(ctx, rec, len);
                }
            } else if (mg_mp_peek_str_eq(&rd, "more")) {
                mg_mp_skip(&rd);
                rc = mg_mp_read_bool(&rd, &got_more);
            } else {
                rc = mg_mp_skip(&rd) || mg_mp_skip(&rd);
            }
        }
        mg_client_reply_free(&rep);
        if (rc == MG_ENOMEM)
            return mg_error_set(err, MG_ENOMEM, "out of memory");
        if (rc != MG_OK)
            return mg_error_set(err, MG_EINTERNAL, "malformed MEM_LIST reply from the node");
        more = got_more && have_after;
    }
    return MG_OK;
}

/* ---- get_all ------------------------------------------------------------ */

typedef struct all_ctx {
    json_t *memories;
    json_t *stats;
} all_ctx;

static int collect_all(void *p, const uint8_t *rec, size_t len)
{
    all_ctx *c = p;
    json_t *it = api_item_json(rec, len);
    if (it == NULL)
        return MG_OK;
    const char *t = json_string_value(json_object_get(json_object_get(it, "metadata"),
                                                      "memory_type"));
    t = t ? t : "Unknown";
    json_object_set_new(c->stats, t,
                        json_integer(json_integer_value(json_object_get(c->stats, t)) + 1));
    return json_array_append_new(c->memories, it) == 0 ? MG_OK : MG_ENOMEM;
}

void api_get_all(mg_router *r, const mg_api_req *req, mg_api_resp *resp)
{
    const json_t *body = req->json;
    if (!json_is_object(body)) {
        api_fail(resp, 422, "the body must be a JSON object");
        return;
    }
    const char *user, *memory_type, *query;
    const json_t *cube_list;
    if (api_user_id(body, "user_id", true, &user, resp) != MG_OK ||
        api_str(body, "memory_type", true, &memory_type, resp) != MG_OK ||
        api_str(body, "search_query", false, &query, resp) != MG_OK ||
        api_str_list(body, "mem_cube_ids", &cube_list, resp) != MG_OK)
        return;
    if (strcmp(memory_type, "text_mem") != 0 && strcmp(memory_type, "act_mem") != 0 &&
        strcmp(memory_type, "param_mem") != 0 && strcmp(memory_type, "para_mem") != 0) {
        api_fail(resp, 422, "field \"memory_type\" must be \"text_mem\", \"act_mem\", "
                            "\"param_mem\" or \"para_mem\"");
        return;
    }
    json_t *data = json_array();
    if (strcmp(memory_type, "text_mem") != 0) {
        /* No activation or parametric memory here, as in MemOS's server. */
        api_ok(resp, "Memories retrieved successfully", data);
        return;
    }
    size_t n = cube_list && json_array_size(cube_list) ? json_array_size(cube_list) : 1;
    if (n > r->limits.max_cubes) {
        json_decref(data);
        api_fail(resp, 400, "%zu cubes (at most %zu)", n, r->limits.max_cubes);
        return;
    }
    bool any_truncated = false;
    for (size_t i = 0; i < n; i++) {
        const char *cube_id =
            cube_list && json_array_size(cube_list) ? json_string_value(json_array_get(cube_list, i))
                                                    : user;
        mg_error err;
        bool absent, truncated = false;
        if (api_cube_id_check("mem_cube_ids", cube_id, resp) != MG_OK) {
            json_decref(data);
            return;
        }
        int rc = check_readable(r, user, cube_id, &absent, &err);
        all_ctx c = {.memories = json_array(), .stats = json_object()};
        if (rc == MG_OK && !absent)
            rc = list_cube(r, user, cube_id, NULL, r->limits.max_page_size, collect_all, &c,
                           &truncated, &err);
        if (rc != MG_OK) {
            json_decref(c.memories);
            json_decref(c.stats);
            json_decref(data);
            api_fail_err(resp, &err);
            return;
        }
        any_truncated |= truncated;
        json_array_append_new(data, json_pack("{s:s,s:o,s:o}", "cube_id", cube_id, "memories",
                                              c.memories, "memory_statistics", c.stats));
    }
    (void)query; /* the whole cube is listed; MemOS's query subgraph is not reproduced */
    api_ok(resp,
           any_truncated ? "Memories retrieved (truncated: use /product/get_memory with page and "
                           "page_size for the rest)"
                         : "Memories retrieved successfully",
           data);
}

/* ---- get_memory ---------------------------------------------------------- */

typedef struct page_ctx {
    size_t offset;          /* first index of the page in each bucket */
    size_t size;            /* page size */
    size_t seen[4];         /* per bucket: memories met so far (= total_nodes) */
    json_t *lists[4];
    bool want[4];
} page_ctx;

static int collect_page(void *p, const uint8_t *rec, size_t len)
{
    page_ctx *c = p;
    const char *t = NULL;
    uint32_t tn = 0;
    mg_record_meta_str(rec, len, "memory_type", &t, &tn);
    api_bucket b = api_bucket_of(t, tn);
    if (b >= 4 || !c->want[b])
        return MG_OK;
    size_t idx = c->seen[b]++;
    if (idx < c->offset || idx - c->offset >= c->size)
        return MG_OK;
    json_t *it = api_item_json(rec, len);
    if (it == NULL)
        return MG_OK;
    return json_array_append_new(c->lists[b], it) == 0 ? MG_OK : MG_ENOMEM;
}

void api_get_memory(mg_router *r, const mg_api_req *req, mg_api_resp *resp)
{
    const json_t *body = req->json;
    if (!json_is_object(body)) {
        api_fail(resp, 422, "the body must be a JSON object");
        return;
    }
    const char *cube_id, *user;
    const json_t *filter;
    long long page, page_size;
    bool pref, tool, skill;
    if (api_str(body, "mem_cube_id", true, &cube_id, resp) != MG_OK ||
        api_user_id(body, "user_id", false, &user, resp) != MG_OK ||
        api_obj(body, "filter", &filter, resp) != MG_OK ||
        api_int(body, "page", 0, 1, 1000000000, &page, resp) != MG_OK ||
        api_int(body, "page_size", 0, 1, r->limits.max_page_size, &page_size, resp) != MG_OK ||
        api_bool(body, "include_preference", true, &pref, resp) != MG_OK ||
        api_bool(body, "include_tool_memory", true, &tool, resp) != MG_OK ||
        api_bool(body, "include_skill_memory", true, &skill, resp) != MG_OK ||
        api_cube_id_check("mem_cube_id", cube_id, resp) != MG_OK)
        return;
    if (filter != NULL && json_object_size(filter) == 0)
        filter = NULL;
    if (filter != NULL) {
        mg_filter *f;
        mg_error ferr;
        if (mg_filter_compile(filter, &f, &ferr) != MG_OK) {
            api_fail(resp, 400, "%s", ferr.msg);
            return;
        }
        mg_filter_free(f);
    }
    page_ctx c = {.offset = 0, .size = SCAN_MAX, .want = {true, pref, tool, skill}};
    if (page_size > 0) {
        c.size = (size_t)page_size;
        c.offset = page > 0 ? (size_t)(page - 1) * (size_t)page_size : 0;
    } else if (page > 0) {
        api_fail(resp, 422, "field \"page\" needs \"page_size\"");
        return;
    }
    mg_error err;
    bool absent, truncated = false;
    int rc = check_readable(r, user, cube_id, &absent, &err);
    for (int b = 0; b < 4; b++)
        c.lists[b] = json_array();
    if (rc == MG_OK && !absent)
        rc = list_cube(r, user, cube_id, filter, SCAN_MAX, collect_page, &c, &truncated, &err);
    if (rc != MG_OK) {
        for (int b = 0; b < 4; b++)
            json_decref(c.lists[b]);
        api_fail_err(resp, &err);
        return;
    }
    static const char *const names[4] = {"text_mem", "pref_mem", "tool_mem", "skill_mem"};
    json_t *data = json_object();
    for (int b = 0; b < 4; b++) {
        json_t *list = json_array();
        if (c.want[b])
            json_array_append_new(list, json_pack("{s:s,s:O,s:I}", "cube_id", cube_id, "memories",
                                                  c.lists[b], "total_nodes",
                                                  (json_int_t)c.seen[b]));
        json_object_set_new(data, names[b], list);
        json_decref(c.lists[b]);
    }
    api_ok(resp,
           truncated ? "Memories retrieved (the cube has more than this server scans in one "
                       "request: totals are lower bounds)"
                     : "Memories retrieved successfully",
           data);
}

/* ---- by id ---------------------------------------------------------------- */

/* Asks every data group for the ids; sets found[i] (JSON item) and, when
 * cubes is not NULL, cubes[i] for each id found. */
static int lookup_ids(mg_router *r, const uint8_t (*ids)[16], size_t n, json_t **found,
                      char (*cubes)[MG_CUBE_ID_MAX + 1], mg_error *err)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    int rc = 0;
    rc |= msgpack_pack_map(&pk, 3);
    rc |= mg_mp_pack_cstr(&pk, "cube_id") | msgpack_pack_nil(&pk);
    rc |= mg_mp_pack_cstr(&pk, "vecs");
    rc |= msgpack_pack_false(&pk);
    rc |= mg_mp_pack_cstr(&pk, "ids") | msgpack_pack_array(&pk, (uint32_t)n);
    for (size_t i = 0; i < n; i++)
        rc |= mg_mp_pack_binn(&pk, ids[i], 16);
    if (rc) {
        msgpack_sbuffer_destroy(&sb);
        return mg_error_set(err, MG_ENOMEM, "out of memory");
    }
    uint64_t *groups;
    size_t ng;
    rc = router_data_groups(r, &groups, &ng, err);
    if (rc != MG_OK) {
        msgpack_sbuffer_destroy(&sb);
        return rc;
    }
    mg_client_call *calls = calloc(ng ? ng : 1, sizeof *calls);
    if (calls == NULL) {
        free(groups);
        msgpack_sbuffer_destroy(&sb);
        return mg_error_set(err, MG_ENOMEM, "out of memory");
    }
    for (size_t g = 0; g < ng; g++) {
        calls[g].op = MG_OP_MEM_GET;
        calls[g].group = groups[g];
        calls[g].body = sb.data;
        calls[g].body_len = sb.size;
    }
    mg_client_run(r->client, "", calls, ng);
    rc = MG_OK;
    for (size_t g = 0; g < ng; g++) {
        if (calls[g].status != MG_OK) {
            if (rc == MG_OK)
                rc = mg_error_set(err, calls[g].err.code, "group %llu: %s",
                                  (unsigned long long)calls[g].group, calls[g].err.msg);
            continue;
        }
        mg_mp_reader rd = mg_wire_body(calls[g].reply.rep.body, calls[g].reply.rep.body_len);
        uint32_t m, f;
        if (mg_mp_read_array(&rd, &m) != MG_OK)
            m = 0;
        for (uint32_t j = 0; j < m; j++) {
            const uint8_t *rec = NULL;
            uint32_t len = 0;
            const char *cube = "";
            uint32_t cube_len = 0;
            if (mg_mp_read_map(&rd, &f) != MG_OK)
                break;
            bool bad = false;
            for (uint32_t k = 0; k < f && !bad; k++) {
                if (mg_mp_peek_str_eq(&rd, "record")) {
                    mg_mp_skip(&rd);
                    bad = mg_mp_read_bin(&rd, &rec, &len) != MG_OK;
                } else if (mg_mp_peek_str_eq(&rd, "cube_id")) {
                    mg_mp_skip(&rd);
                    bad = mg_mp_read_str(&rd, &cube, &cube_len) != MG_OK ||
                          cube_len > MG_CUBE_ID_MAX;
                } else {
                    bad = mg_mp_skip(&rd) != MG_OK || mg_mp_skip(&rd) != MG_OK;
                }
            }
            const uint8_t *id;
            if (bad || rec == NULL || !mg_record_id(rec, len, &id))
                break;
            for (size_t i = 0; i < n; i++)
                if (found[i] == NULL && memcmp(ids[i], id, 16) == 0) {
                    found[i] = api_item_json(rec, len);
                    if (cubes != NULL) {
                        memcpy(cubes[i], cube, cube_len);
                        cubes[i][cube_len] = '\0';
                    }
                }
        }
        mg_client_reply_free(&calls[g].reply);
    }
    free(calls);
    free(groups);
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

void api_get_memory_by_id(mg_router *r, const mg_api_req *req, mg_api_resp *resp)
{
    uint8_t id[16];
    const char *s = req->arg;
    if (!mg_uuid_parse(s, strlen(s), id)) {
        api_fail(resp, 422, "\"%.64s\" is not a memory id (a UUID like "
                            "123e4567-e89b-12d3-a456-426614174000)",
                 s);
        return;
    }
    json_t *found = NULL;
    mg_error err;
    if (lookup_ids(r, (const uint8_t(*)[16])id, 1, &found, NULL, &err) != MG_OK) {
        json_decref(found);
        api_fail_err(resp, &err);
        return;
    }
    char msg[128];
    char canon[MG_UUID_STRLEN + 1];
    mg_uuid_format(id, canon);
    snprintf(msg, sizeof msg, found ? "Memory retrieved successfully"
                                    : "Memory with ID %s not found",
             canon);
    api_ok(resp, msg, found);
}

/* Reads a list of ids (strings) into a malloc'd array. */
static int read_ids(mg_router *r, const json_t *list, const char *what, uint8_t (**ids)[16],
                    size_t *n, mg_api_resp *resp)
{
    size_t count = json_array_size(list);
    if (count > r->limits.max_items) {
        api_fail(resp, 413, "%zu ids (at most %zu)", count, r->limits.max_items);
        return MG_ETOOBIG;
    }
    uint8_t(*out)[16] = malloc((count ? count : 1) * sizeof *out);
    if (out == NULL) {
        api_fail(resp, 500, "out of memory");
        return MG_ENOMEM;
    }
    for (size_t i = 0; i < count; i++) {
        const json_t *v = json_array_get(list, i);
        if (!json_is_string(v) ||
            !mg_uuid_parse(json_string_value(v), json_string_length(v), out[i])) {
            free(out);
            api_fail(resp, 422, "%s[%zu] is not a memory id (a UUID string)", what, i);
            return MG_EINVAL;
        }
    }
    *ids = out;
    *n = count;
    return MG_OK;
}

void api_get_memory_by_ids(mg_router *r, const mg_api_req *req, mg_api_resp *resp)
{
    const json_t *list = req->json;
    if (json_is_object(list))
        list = json_object_get(list, "memory_ids"); /* also accepted: {"memory_ids": [...]} */
    if (!json_is_array(list)) {
        api_fail(resp, 422, "the body must be a JSON list of memory ids");
        return;
    }
    uint8_t(*ids)[16];
    size_t n;
    if (read_ids(r, list, "memory_ids", &ids, &n, resp) != MG_OK)
        return;
    json_t **found = calloc(n ? n : 1, sizeof *found);
    if (found == NULL) {
        free(ids);
        api_fail(resp, 500, "out of memory");
        return;
    }
    mg_error err;
    int rc = n ? lookup_ids(r, (const uint8_t(*)[16])ids, n, found, NULL, &err) : MG_OK;
    json_t *memories = json_array();
    for (size_t i = 0; i < n; i++) {
        if (found[i] != NULL && rc == MG_OK) {
            /* The same id asked twice is answered once. */
            bool dup = false;
            for (size_t j = 0; j < i && !dup; j++)
                dup = memcmp(ids[i], ids[j], 16) == 0;
            if (!dup) {
                json_array_append_new(memories, found[i]);
                found[i] = NULL;
            }
        }
        json_decref(found[i]);
    }
    free(found);
    free(ids);
    if (rc != MG_OK) {
        json_decref(memories);
        api_fail_err(resp, &err);
        return;
    }
    api_ok(resp, "Memories retrieved successfully", json_pack("{s:o}", "memories", memories));
}

/* ---- delete -------------------------------------------------------------- */

static void delete_answer(mg_api_resp *resp, bool ok, const char *message)
{
    api_ok(resp, message, json_pack("{s:s}", "status", ok ? "success" : "failure"));
}

/* Deletes ids from one cube; ids that are not there are not an error. */
static int delete_ids_in(mg_router *r, const char *user, const char *cube_id,
                         const uint8_t (*ids)[16], size_t n, mg_error *err)
{
    mg_cmd cmd;
    memset(&cmd, 0, sizeof cmd);
    cmd.kind = MG_CMD_MEM_DELETE;
    snprintf(cmd.cube_id, sizeof cmd.cube_id, "%s", cube_id);
    cmd.ids = malloc((n ? n : 1) * sizeof *cmd.ids);
    if (cmd.ids == NULL)
        return mg_error_set(err, MG_ENOMEM, "out of memory");
    memcpy(cmd.ids, ids, n * sizeof *cmd.ids);
    cmd.n_ids = n;
    int rc = cluster_write(r, user, &cmd, NULL, err);
    mg_cmd_clear(&cmd);
    return rc == MG_ENOTFOUND ? MG_OK : rc;
}

static int delete_where_in(mg_router *r, const char *user, const char *cube_id,
                           const json_t *filter, mg_error *err)
{
    mg_cmd cmd;
    memset(&cmd, 0, sizeof cmd);
    cmd.kind = MG_CMD_MEM_DELETE_WHERE;
    snprintf(cmd.cube_id, sizeof cmd.cube_id, "%s", cube_id);
    cmd.filter = json_deep_copy(filter);
    if (cmd.filter == NULL)
        return mg_error_set(err, MG_ENOMEM, "out of memory");
    int rc = cluster_write(r, user, &cmd, NULL, err);
    mg_cmd_clear(&cmd);
    return rc == MG_ENOTFOUND ? MG_OK : rc;
}

/* Finds the cube of each id (MEM_GET over every group) and deletes them
 * there, checking `user` (NULL: no check) may write each such cube. */
static int delete_ids_anywhere(mg_router *r, const char *user, const uint8_t (*ids)[16], size_t n,
                               mg_error *err)
{
    json_t **found = calloc(n, sizeof *found);
    char(*cubes)[MG_CUBE_ID_MAX + 1] = calloc(n, sizeof *cubes);
    uint8_t(*batch)[16] = malloc(n * sizeof *batch);
    bool *done = calloc(n, sizeof *done);
    int rc = MG_OK;
    if (found == NULL || cubes == NULL || batch == NULL || done == NULL)
        rc = mg_error_set(err, MG_ENOMEM, "out of memory");
    if (rc == MG_OK)
        rc = lookup_ids(r, ids, n, found, cubes, err);
    for (size_t i = 0; rc == MG_OK && i < n; i++) {
        if (found[i] == NULL || done[i])
            continue;
        /* Every id of the same cube in one command. */
        size_t m = 0;
        for (size_t j = i; j < n; j++)
            if (found[j] != NULL && !done[j] && strcmp(cubes[j], cubes[i]) == 0) {
                memcpy(batch[m++], ids[j], 16);
                done[j] = true;
            }
        bool absent;
        if (user != NULL)
            rc = check_readable(r, user, cubes[i], &absent, err);
        if (rc == MG_OK)
            rc = delete_ids_in(r, user ? user : "", cubes[i], (const uint8_t(*)[16])batch, m,
                               err);
    }
    for (size_t i = 0; found != NULL && i < n; i++)
        json_decref(found[i]);
    free(found);
    free(cubes);
    free(batch);
    free(done);
    return rc;
}

/* Every listed cube exists and, with a user, is one the user may write. */
static int check_cubes(mg_router *r, const char *user, const json_t *cubes, mg_api_resp *resp)
{
    for (size_t i = 0; cubes != NULL && i < json_array_size(cubes); i++) {
        const char *cube_id = json_string_value(json_array_get(cubes, i));
        bool absent;
        mg_error err;
        if (check_readable(r, user, cube_id, &absent, &err) != MG_OK) {
            api_fail_err(resp, &err);
            return MG_EINVAL;
        }
    }
    return MG_OK;
}

void api_delete_memory(mg_router *r, const mg_api_req *req, mg_api_resp *resp)
{
    const json_t *body = req->json;
    if (!json_is_object(body)) {
        api_fail(resp, 422, "the body must be a JSON object");
        return;
    }
    const json_t *cubes, *memory_ids, *file_ids;
    const char *user, *session;
    if (api_str_list(body, "writable_cube_ids", &cubes, resp) != MG_OK ||
        api_str_list(body, "memory_ids", &memory_ids, resp) != MG_OK ||
        api_str_list(body, "file_ids", &file_ids, resp) != MG_OK ||
        api_user_id(body, "user_id", false, &user, resp) != MG_OK ||
        api_str(body, "session_id", false, &session, resp) != MG_OK)
        return;
    const json_t *filter = json_object_get(body, "filter");
    if (filter != NULL && json_is_null(filter))
        filter = NULL;
    if (filter != NULL && !json_is_object(filter)) {
        api_fail(resp, 400, "filter must be an object");
        return;
    }
    bool quick = memory_ids == NULL && file_ids == NULL && (user != NULL || session != NULL);
    bool filter_mode = (filter != NULL && json_object_size(filter) > 0) || quick;
    if (filter != NULL && json_object_size(filter) == 0 && !quick) {
        delete_answer(resp, false,
                      "filter cannot be empty. Provide a non-empty filter or user_id/session_id.");
        return;
    }
    int modes = (memory_ids != NULL) + (file_ids != NULL) + filter_mode;
    if (modes != 1) {
        delete_answer(resp, false,
                      "Exactly one delete mode must be provided: memory_ids, file_ids, or "
                      "filter/user_id/session_id.");
        return;
    }
    size_t nc = cubes ? json_array_size(cubes) : 0;
    if (nc > r->limits.max_cubes) {
        api_fail(resp, 400, "%zu writable cubes (at most %zu)", nc, r->limits.max_cubes);
        return;
    }
    for (size_t i = 0; i < nc; i++)
        if (api_cube_id_check("writable_cube_ids", json_string_value(json_array_get(cubes, i)),
                              resp) != MG_OK)
            return;
    mg_error err;
    if (memory_ids != NULL) {
        uint8_t(*ids)[16];
        size_t n;
        if (read_ids(r, memory_ids, "memory_ids", &ids, &n, resp) != MG_OK)
            return;
        if (check_cubes(r, user, cubes, resp) != MG_OK) {
            free(ids);
            return;
        }
        int rc = MG_OK;
        if (nc > 0) {
            for (size_t i = 0; i < nc && rc == MG_OK; i++)
                rc = delete_ids_in(r, user ? user : "", json_string_value(json_array_get(cubes, i)),
                                   (const uint8_t(*)[16])ids, n, &err);
        } else if (n > 0) {
            rc = delete_ids_anywhere(r, user, (const uint8_t(*)[16])ids, n, &err);
        }
        free(ids);
        if (rc != MG_OK) {
            api_fail_err(resp, &err);
            return;
        }
        delete_answer(resp, true, "Memories deleted successfully");
        return;
    }

    /* file_ids and filter modes delete by condition, cube by cube. */
    if (nc == 0) {
        api_fail(resp, 422, "field \"writable_cube_ids\" is required to delete by %s",
                 file_ids ? "file_ids" : "filter");
        return;
    }
    json_t *cond;
    if (file_ids != NULL) {
        cond = json_pack("{s:{s:O}}", "file_ids", "in", file_ids);
    } else {
        json_t *parts = json_array();
        if (filter != NULL && json_object_size(filter) > 0)
            json_array_append(parts, (json_t *)filter);
        if (user != NULL)
            json_array_append_new(parts, json_pack("{s:s}", "user_id", user));
        if (session != NULL)
            json_array_append_new(parts, json_pack("{s:s}", "session_id", session));
        cond = json_pack("{s:o}", "and", parts);
    }
    mg_filter *f;
    if (mg_filter_compile(cond, &f, &err) != MG_OK) {
        json_decref(cond);
        api_fail(resp, 400, "%s", err.msg);
        return;
    }
    mg_filter_free(f);
    if (check_cubes(r, user, cubes, resp) != MG_OK) {
        json_decref(cond);
        return;
    }
    int rc = MG_OK;
    for (size_t i = 0; i < nc && rc == MG_OK; i++)
        rc = delete_where_in(r, user ? user : "", json_string_value(json_array_get(cubes, i)),
                             cond, &err);
    json_decref(cond);
    if (rc != MG_OK) {
        api_fail_err(resp, &err);
        return;
    }
    delete_answer(resp, true, "Memories deleted successfully");
}
