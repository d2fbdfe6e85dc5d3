/*
 * POST /product/add (MEMOS_API.md): fast mode from `messages` (windows, see
 * fastmode.h), `memory_content` (one memory as it is), and the memgrid
 * extension `memories` (MemOS items as they are, with an optional
 * metadata.embedding). Every memory is embedded once as a document and put
 * into each writable cube with its own id. The write is acknowledged after it
 * is applied on the group leader, in both async modes.
 */
#include "api.h"

#include "../cluster/command.h"
#include "../lib/clock.h"
#include "../lib/uuid.h"
#include "embed_hash.h"
#include "fastmode.h"
#include "llm.h"

#include <stdlib.h>
#include <string.h>

typedef struct add_batch {
    mg_item *items;
    float **given_vecs;     /* per item: a client-supplied vector, or NULL */
    size_t n, cap;
} add_batch;

static void batch_clear(add_batch *b)
{
    for (size_t i = 0; i < b->n; i++) {
        mg_item_clear(&b->items[i]);
        free(b->given_vecs[i]);
    }
    free(b->items);
    free(b->given_vecs);
    memset(b, 0, sizeof *b);
}

static int batch_reserve(add_batch *b, size_t more)
{
    if (b->n + more <= b->cap)
        return MG_OK;
    size_t cap = b->cap ? b->cap : 8;
    while (cap < b->n + more)
        cap *= 2;
    mg_item *items = realloc(b->items, cap * sizeof *items);
    if (items == NULL)
        return MG_ENOMEM;
    b->items = items;
    float **vecs = realloc(b->given_vecs, cap * sizeof *vecs);
    if (vecs == NULL)
        return MG_ENOMEM;
    b->given_vecs = vecs;
    b->cap = cap;
    return MG_OK;
}

/* Takes the items (moved) into the batch. */
static int batch_take(add_batch *b, mg_item *items, size_t n)
{
    if (batch_reserve(b, n) != MG_OK)
        return MG_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        b->items[b->n] = items[i];
        b->given_vecs[b->n] = NULL;
        memset(&items[i], 0, sizeof items[i]);
        b->n++;
    }
    return MG_OK;
}

/* The memgrid extension: "memories": [{"id"?, "memory", "metadata"?}, ...]. */
static int read_memories(mg_router *r, const json_t *list, const mg_fast_params *fp,
                         add_batch *b, mg_api_resp *resp)
{
    if (!json_is_array(list)) {
        api_fail(resp, 422, "field \"memories\" must be a list of memory items");
        return MG_EINVAL;
    }
    size_t i;
    const json_t *obj;
    json_array_foreach(list, i, obj)
    {
        mg_item it;
        float *vec = NULL;
        uint32_t dim = 0;
        mg_error err;
        int rc = mg_item_from_json(obj, &it, &vec, &dim, &err);
        if (rc != MG_OK) {
            api_fail(resp, rc == MG_ETOOBIG ? 413 : rc == MG_ENAN ? 400 : 422, "memories[%zu]: %s",
                     i, err.msg);
            return rc;
        }
        if (vec != NULL && dim != r->dim) {
            api_fail(resp, 400,
                     "memories[%zu].metadata.embedding has dimension %u; this server's cubes use "
                     "%u",
                     i, dim, r->dim);
            free(vec);
            mg_item_clear(&it);
            return MG_EDIM;
        }
        /* Fill in what MemOS fills in when absent. */
        json_t *m = it.metadata;
        if (json_object_get(m, "user_id") == NULL)
            json_object_set_new(m, "user_id", json_string(fp->user_id));
        if (json_object_get(m, "session_id") == NULL)
            json_object_set_new(m, "session_id", json_string(fp->session_id));
        if (json_object_get(m, "status") == NULL)
            json_object_set_new(m, "status", json_string("activated"));
        if (json_object_get(m, "memory_type") == NULL)
            json_object_set_new(m, "memory_type", json_string("LongTermMemory"));
        if (json_object_get(m, "created_at") == NULL)
            json_object_set_new(m, "created_at", json_string(fp->now));
        if (json_object_get(m, "updated_at") == NULL)
            json_object_set_new(m, "updated_at", json_string(fp->now));
        if (batch_reserve(b, 1) != MG_OK) {
            free(vec);
            mg_item_clear(&it);
            api_fail(resp, 500, "out of memory");
            return MG_ENOMEM;
        }
        b->items[b->n] = it;
        b->given_vecs[b->n] = vec;
        b->n++;
    }
    return MG_OK;
}

/* Fine mode: replaces every window of the batch by the memories the chat
 * model extracts from it. They keep the window's sources, metadata and info;
 * memory_type, key and tags come from the model (tags plus custom_tags, no
 * "mode:fast"). A window the model finds nothing in adds nothing. */
static int fine_expand(mg_router *r, const mg_fast_params *fp, add_batch *b, mg_api_resp *resp)
{
    add_batch out;
    memset(&out, 0, sizeof out);
    for (size_t i = 0; i < b->n; i++) {
        mg_llm_memory *mems = NULL;
        size_t n = 0;
        mg_error err;
        int rc = mg_llm_extract_memories(r->llm, b->items[i].memory, b->items[i].memory_len, &mems,
                                         &n, &err);
        if (rc != MG_OK) {
            batch_clear(&out);
            api_fail(resp, rc == MG_EINVAL || rc == MG_ETOOBIG ? 400 : 502,
                     "fine mode: the chat model failed: %s", err.msg);
            return rc;
        }
        if (batch_reserve(&out, n) != MG_OK) {
            mg_llm_memories_free(mems, n);
            batch_clear(&out);
            api_fail(resp, 500, "out of memory");
            return MG_ENOMEM;
        }
        for (size_t j = 0; j < n; j++) {
            mg_item it;
            memset(&it, 0, sizeof it);
            size_t len = strlen(mems[j].memory);
            it.memory = strdup(mems[j].memory);
            it.memory_len = len;
            it.metadata = json_deep_copy(b->items[i].metadata);
            if (it.memory == NULL || it.metadata == NULL) {
                mg_item_clear(&it);
                continue;
            }
            mg_uuid_v4(it.id);
            json_t *tags = json_array();
            for (size_t t = 0; t < mems[j].n_tags; t++)
                json_array_append_new(tags, json_string(mems[j].tags[t]));
            size_t k;
            json_t *ct;
            if (fp->custom_tags != NULL)
                json_array_foreach(fp->custom_tags, k, ct) json_array_append(tags, ct);
            json_object_set_new(it.metadata, "tags", tags);
            const char *mt = mems[j].memory_type;
            json_object_set_new(it.metadata, "memory_type",
                                json_string(mt && strcmp(mt, "UserMemory") == 0 ? "UserMemory"
                                                                                : "LongTermMemory"));
            char *key = mems[j].key ? NULL : mg_fast_key(it.memory, len);
            json_object_set_new(it.metadata, "key",
                                json_string(mems[j].key ? mems[j].key : key ? key : ""));
            free(key);
            out.items[out.n] = it;
            out.given_vecs[out.n] = NULL;
            out.n++;
        }
        mg_llm_memories_free(mems, n);
    }
    batch_clear(b);
    *b = out;
    return MG_OK;
}

/* The cubes to write: writable_cube_ids, else mem_cube_id, else the user's. */
static int writable_cubes(mg_router *r, const json_t *body, const char *user,
                          const char ***cubes, size_t *n, mg_api_resp *resp)
{
    const json_t *list;
    const char *single;
    if (api_str_list(body, "writable_cube_ids", &list, resp) != MG_OK ||
        api_str(body, "mem_cube_id", false, &single, resp) != MG_OK)
        return MG_EINVAL;
    size_t count = list && json_array_size(list) ? json_array_size(list) : 1;
    if (count > r->limits.max_cubes) {
        api_fail(resp, 400, "%zu writable cubes (at most %zu)", count, r->limits.max_cubes);
        return MG_ETOOBIG;
    }
    const char **out = calloc(count, sizeof *out);
    if (out == NULL) {
        api_fail(resp, 500, "out of memory");
        return MG_ENOMEM;
    }
    size_t w = 0;
    if (list && json_array_size(list)) {
        for (size_t i = 0; i < count; i++) {
            const char *id = json_string_value(json_array_get(list, i));
            bool dup = false;
            for (size_t j = 0; j < w && !dup; j++)
                dup = strcmp(out[j], id) == 0;
            if (!dup)
                out[w++] = id;
        }
    } else {
        out[w++] = single ? single : user;
    }
    for (size_t i = 0; i < w; i++)
        if (api_cube_id_check("writable cube", out[i], resp) != MG_OK) {
            free(out);
            return MG_EINVAL;
        }
    *cubes = out;
    *n = w;
    return MG_OK;
}

/* Builds and sends the mem_put of every batch item into one cube, each with a
 * new id when it is not the first cube (ids are unique across cubes).
 * *scatter_ns grows by the time spent waiting for the cluster. */
static int put_into_cube(mg_router *r, const char *user, const char *cube_id, add_batch *b,
                         const float *vecs, bool fresh_ids, json_t *answer,
                         uint64_t *scatter_ns, mg_error *err)
{
    mg_cmd cmd;
    memset(&cmd, 0, sizeof cmd);
    cmd.kind = MG_CMD_MEM_PUT;
    snprintf(cmd.cube_id, sizeof cmd.cube_id, "%s", cube_id);
    int rc = MG_OK;
    for (size_t i = 0; i < b->n && rc == MG_OK; i++) {
        mg_item copy;
        memset(&copy, 0, sizeof copy);
        rc = mg_item_copy(&copy, &b->items[i]);
        if (rc != MG_OK) {
            rc = mg_error_set(err, MG_ENOMEM, "out of memory");
            break;
        }
        if (fresh_ids)
            mg_uuid_v4(copy.id);
        float *vec = malloc((size_t)r->dim * sizeof *vec);
        if (vec == NULL) {
            mg_item_clear(&copy);
            rc = mg_error_set(err, MG_ENOMEM, "out of memory");
            break;
        }
        memcpy(vec, b->given_vecs[i] ? b->given_vecs[i] : vecs + i * r->dim,
               (size_t)r->dim * sizeof *vec);
        char id[MG_UUID_STRLEN + 1];
        mg_uuid_format(copy.id, id);
        const json_t *mt = json_object_get(copy.metadata, "memory_type");
        json_t *entry = json_object();
        json_object_set_new(entry, "memory", json_stringn(copy.memory, copy.memory_len));
        json_object_set_new(entry, "memory_id", json_string(id));
        json_object_set_new(entry, "memory_type",
                            json_is_string(mt) ? json_copy((json_t *)mt) : json_null());
        json_object_set_new(entry, "cube_id", json_string(cube_id));
        json_array_append_new(answer, entry);
        rc = mg_cmd_add_item(&cmd, &copy, vec, r->dim, err);
        if (rc != MG_OK) {
            mg_item_clear(&copy);
            free(vec);
        }
    }
    if (rc == MG_OK) {
        uint64_t t = mg_clock_mono_ns();
        rc = cluster_write(r, user, &cmd, NULL, err);
        *scatter_ns += mg_clock_mono_ns() - t;
    }
    mg_cmd_clear(&cmd);
    return rc;
}

void api_add(mg_router *r, const mg_api_req *req, mg_api_resp *resp)
{
    const json_t *body = req->json;
    if (!json_is_object(body)) {
        api_fail(resp, 422, "the body must be a JSON object");
        return;
    }
    const char *user, *session, *async_mode, *mode, *memory_content, *source;
    const json_t *custom_tags, *info, *messages, *memories;
    if (api_user_id(body, "user_id", true, &user, resp) != MG_OK ||
        api_str(body, "session_id", false, &session, resp) != MG_OK ||
        api_str(body, "async_mode", false, &async_mode, resp) != MG_OK ||
        api_str(body, "mode", false, &mode, resp) != MG_OK ||
        api_str(body, "memory_content", false, &memory_content, resp) != MG_OK ||
        api_str(body, "source", false, &source, resp) != MG_OK ||
        api_str_list(body, "custom_tags", &custom_tags, resp) != MG_OK ||
        api_obj(body, "info", &info, resp) != MG_OK)
        return;
    if (async_mode && strcmp(async_mode, "async") != 0 && strcmp(async_mode, "sync") != 0) {
        api_fail(resp, 422, "field \"async_mode\" must be \"async\" or \"sync\"");
        return;
    }
    if (mode && strcmp(mode, "fast") != 0 && strcmp(mode, "fine") != 0) {
        api_fail(resp, 422, "field \"mode\" must be \"fast\" or \"fine\"");
        return;
    }
    bool fine = mode && strcmp(mode, "fine") == 0;
    if (fine && r->llm == NULL) {
        api_fail(resp, 400, "%s", MG_LLM_NOT_CONFIGURED_MSG);
        return;
    }
    if (json_object_get(body, "doc_path") && !json_is_null(json_object_get(body, "doc_path"))) {
        api_fail(resp, 400, "doc_path is not supported: send the document's text as "
                            "memory_content or messages");
        return;
    }
    messages = json_object_get(body, "messages");
    if (messages != NULL && json_is_null(messages))
        messages = NULL;
    memories = json_object_get(body, "memories");
    if (memories != NULL && json_is_null(memories))
        memories = NULL;
    if (messages == NULL && memory_content == NULL && memories == NULL) {
        api_fail(resp, 422, "nothing to add: give \"messages\", \"memory_content\" or "
                            "\"memories\"");
        return;
    }
    if (messages != NULL && !json_is_array(messages) && !json_is_string(messages)) {
        api_fail(resp, 422, "field \"messages\" must be a list of messages or a string");
        return;
    }
    if (custom_tags && json_array_size(custom_tags) > 256) {
        api_fail(resp, 400, "at most 256 custom_tags");
        return;
    }

    /* info, with the deprecated `source` folded in as MemOS does. */
    json_t *info_copy = info ? json_deep_copy(info) : json_object();
    if (info_copy == NULL) {
        api_fail(resp, 500, "out of memory");
        return;
    }
    if (source && json_object_get(info_copy, "source") == NULL)
        json_object_set_new(info_copy, "source", json_string(source));

    char now[MG_ISO8601_LEN + 1];
    mg_clock_iso8601(mg_clock_wall_us(), now);
    mg_fast_params fp = {.user_id = user,
                         .session_id = session && session[0] ? session : "default_session",
                         .custom_tags = custom_tags,
                         .info = info_copy,
                         .now = now,
                         .max_text_bytes = r->limits.max_text_bytes,
                         .max_messages = r->limits.max_items};
    add_batch b;
    memset(&b, 0, sizeof b);
    const char **cubes = NULL;
    size_t n_cubes = 0;
    float *vecs = NULL;
    const char **texts = NULL;
    size_t *lens = NULL;
    json_t *answer = NULL;
    mg_error err;
    int rc;

    if (writable_cubes(r, body, user, &cubes, &n_cubes, resp) != MG_OK)
        goto done;
    if (messages != NULL && json_is_array(messages)) {
        mg_item *items;
        size_t n;
        rc = mg_fast_windows(messages, &fp, &items, &n, &err);
        if (rc != MG_OK) {
            api_fail(resp, rc == MG_ETOOBIG ? 413 : rc == MG_EINVAL ? 422 : 500, "%s", err.msg);
            goto done;
        }
        rc = batch_take(&b, items, n);
        free(items);
        if (rc != MG_OK) {
            api_fail(resp, 500, "out of memory");
            goto done;
        }
    }
    const char *plain[2] = {messages && json_is_string(messages) ? json_string_value(messages)
                                                                 : NULL,
                            memory_content};
    size_t plain_len[2] = {messages && json_is_string(messages) ? json_string_length(messages)
                                                                : 0,
                           memory_content ? strlen(memory_content) : 0};
    for (int k = 0; k < 2; k++) {
        if (plain[k] == NULL || plain_len[k] == 0)
            continue;
        mg_item it;
        rc = mg_fast_text(plain[k], plain_len[k], &fp, &it, &err);
        if (rc == MG_OK)
            rc = batch_take(&b, &it, 1);
        if (rc != MG_OK) {
            api_fail(resp, rc == MG_ETOOBIG ? 413 : rc == MG_EINVAL ? 422 : 500, "%s%s",
                     k == 0 ? "messages: " : "memory_content: ", err.msg);
            goto done;
        }
    }
    if (fine && b.n > 0 && fine_expand(r, &fp, &b, resp) != MG_OK)
        goto done;
    if (memories != NULL && read_memories(r, memories, &fp, &b, resp) != MG_OK)
        goto done;
    if (b.n * n_cubes > r->limits.max_items) {
        api_fail(resp, 413, "this add makes %zu memories (at most %zu)", b.n * n_cubes,
                 r->limits.max_items);
        goto done;
    }
    for (size_t i = 0; i < b.n; i++) {
        rc = mg_item_validate(&b.items[i], &err);
        if (rc != MG_OK) {
            api_fail(resp, rc == MG_ETOOBIG ? 413 : 422, "memory %zu: %s", i, err.msg);
            goto done;
        }
    }

    uint64_t t = req->t0_ns;
    router_stage(r, ROUTER_OP_ADD, ROUTER_STAGE_PARSE, &t);

    /* Embed every text that came without a vector, in one batch. */
    vecs = malloc((b.n ? b.n : 1) * (size_t)r->dim * sizeof *vecs);
    texts = calloc(b.n ? b.n : 1, sizeof *texts);
    lens = calloc(b.n ? b.n : 1, sizeof *lens);
    answer = json_array();
    if (vecs == NULL || texts == NULL || lens == NULL || answer == NULL) {
        api_fail(resp, 500, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < b.n; i++) {
        texts[i] = b.given_vecs[i] ? "" : b.items[i].memory;
        lens[i] = b.given_vecs[i] ? 0 : b.items[i].memory_len;
    }
    if (b.n > 0 && router_embed(r, texts, lens, b.n, MG_EMBED_DOCUMENT, vecs, &err) != MG_OK) {
        api_fail(resp, 400, "embedding failed: %s", err.msg);
        goto done;
    }
    router_stage(r, ROUTER_OP_ADD, ROUTER_STAGE_EMBED, &t);

    for (size_t c = 0; c < n_cubes; c++) {
        rc = cube_ensure_writable(r, user, cubes[c], &err);
        if (rc != MG_OK) {
            api_fail_err(resp, &err);
            goto done;
        }
    }
    uint64_t scatter_ns = 0;
    for (size_t c = 0; c < n_cubes && b.n > 0; c++) {
        rc = put_into_cube(r, user, cubes[c], &b, vecs, c > 0, answer, &scatter_ns, &err);
        if (rc != MG_OK) {
            if (rc == MG_ENOTFOUND)
                cube_forget(r, cubes[c]);
            api_fail_err(resp, &err);
            goto done;
        }
    }
    /* route = cube checks and command building: the time not spent waiting
     * for the cluster */
    uint64_t routed = mg_clock_mono_ns();
    router_stage_ns(r, ROUTER_OP_ADD, ROUTER_STAGE_ROUTE, routed - t - scatter_ns);
    router_stage_ns(r, ROUTER_OP_ADD, ROUTER_STAGE_SCATTER, scatter_ns);
    t = routed;
    api_ok(resp, "Memory added successfully", answer);
    answer = NULL;
    router_stage(r, ROUTER_OP_ADD, ROUTER_STAGE_MERGE, &t);

done:
    json_decref(answer);
    json_decref(info_copy);
    batch_clear(&b);
    free(cubes);
    free(vecs);
    free(texts);
    free(lens);
}
