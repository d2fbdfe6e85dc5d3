#include "item.h"

#include "../lib/jsonmp.h"
#include "../lib/mp.h"
#include "../lib/utf8.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- validation helpers ------------------------------------------------ */

bool mg_cube_id_valid(const char *s, size_t len)
{
    if (s == NULL || len == 0 || len > MG_CUBE_ID_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == ':' || c == '@' || c == '-'))
            return false;
    }
    return true;
}

bool mg_user_id_valid(const char *s, size_t len)
{
    if (s == NULL || len == 0 || len > MG_USER_ID_MAX || !mg_utf8_valid(s, len))
        return false;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return false;
    return true;
}

static bool text_ok(const char *s, size_t max)
{
    size_t len = strlen(s);
    return len <= max && mg_utf8_valid(s, len);
}

/* Packs the "v" key and version: every record starts with it. */
static int pack_version(msgpack_packer *pk)
{
    if (mg_mp_pack_cstr(pk, "v") || msgpack_pack_uint32(pk, MG_ITEM_VERSION))
        return MG_ENOMEM;
    return MG_OK;
}

/* Reads the value of "v" and checks it. */
static int read_version(mg_mp_reader *r, const char *what, mg_error *err)
{
    uint32_t v;
    if (mg_mp_read_u32(r, &v))
        return mg_error_set(err, MG_ECORRUPT, "%s record: version is not an integer", what);
    if (v == 0 || v > MG_ITEM_VERSION)
        return mg_error_set(err, MG_EVERSION, "%s record version %u (this build reads up to %u)",
                            what, v, MG_ITEM_VERSION);
    return MG_OK;
}

/* Finishes an encoding into a malloc'd buffer. */
static int sbuffer_take(msgpack_sbuffer *sb, int rc, char **buf, size_t *len)
{
    if (rc != MG_OK) {
        msgpack_sbuffer_destroy(sb);
        return rc;
    }
    *len = sb->size;
    *buf = msgpack_sbuffer_release(sb);
    if (*buf == NULL) { /* an empty sbuffer never happens for a record */
        return MG_EINTERNAL;
    }
    return MG_OK;
}

/* ---- vectors ------------------------------------------------------------ */

int mg_vector_check(const float *vec, uint32_t dim, mg_error *err)
{
    if (dim == 0 || dim > MG_DIM_MAX)
        return mg_error_set(err, MG_EDIM, "vector dimension %u is outside 1..%u", dim,
                            MG_DIM_MAX);
    for (uint32_t i = 0; i < dim; i++)
        if (!isfinite(vec[i]))
            return mg_error_set(err, MG_ENAN, "vector element %u is NaN or infinite", i);
    return MG_OK;
}

/* ---- cube --------------------------------------------------------------- */

void mg_cube_clear(mg_cube *c)
{
    free(c->name);
    for (size_t i = 0; i < c->n_shared; i++)
        free(c->shared_with[i]);
    free(c->shared_with);
    memset(c, 0, sizeof *c);
}

int mg_cube_validate(const mg_cube *c, mg_error *err)
{
    if (!mg_cube_id_valid(c->cube_id, strlen(c->cube_id)))
        return mg_error_set(err, MG_EINVAL,
                            "cube_id must be 1-%d characters of A-Z a-z 0-9 _ . : @ -",
                            MG_CUBE_ID_MAX);
    if (!mg_user_id_valid(c->owner_id, strlen(c->owner_id)))
        return mg_error_set(err, MG_EINVAL,
                            "owner_id must be 1-%d bytes of UTF-8 without control characters",
                            MG_USER_ID_MAX);
    if (c->name && !text_ok(c->name, MG_NAME_MAX))
        return mg_error_set(err, MG_EINVAL, "cube name must be UTF-8 of at most %d bytes",
                            MG_NAME_MAX);
    if (!text_ok(c->created_at, sizeof c->created_at - 1) ||
        !text_ok(c->embedder, MG_EMBEDDER_MAX))
        return mg_error_set(err, MG_EINVAL, "cube created_at or embedder is not valid text");
    if (c->dim > MG_DIM_MAX)
        return mg_error_set(err, MG_EDIM, "cube dimension %u is above %u", c->dim, MG_DIM_MAX);
    if (c->metric != MG_METRIC_COSINE)
        return mg_error_set(err, MG_EINVAL, "unknown metric %u", c->metric);
    if (c->n_shared > MG_SHARED_MAX)
        return mg_error_set(err, MG_ETOOBIG, "a cube is shared with at most %d users",
                            MG_SHARED_MAX);
    for (size_t i = 0; i < c->n_shared; i++)
        if (!mg_user_id_valid(c->shared_with[i], strlen(c->shared_with[i])))
            return mg_error_set(err, MG_EINVAL, "shared_with[%zu] is not a valid user id", i);
    return MG_OK;
}

int mg_cube_share(mg_cube *c, const char *user_id, mg_error *err)
{
    if (!mg_user_id_valid(user_id, strlen(user_id)))
        return mg_error_set(err, MG_EINVAL, "not a valid user id");
    if (mg_cube_allows(c, user_id))
        return MG_OK;
    if (c->n_shared >= MG_SHARED_MAX)
        return mg_error_set(err, MG_ETOOBIG, "a cube is shared with at most %d users",
                            MG_SHARED_MAX);
    char **grown = realloc(c->shared_with, (c->n_shared + 1) * sizeof *grown);
    if (grown == NULL)
        return mg_error_set(err, MG_ENOMEM, "out of memory");
    c->shared_with = grown;
    if ((grown[c->n_shared] = strdup(user_id)) == NULL)
        return mg_error_set(err, MG_ENOMEM, "out of memory");
    c->n_shared++;
    return MG_OK;
}

bool mg_cube_allows(const mg_cube *c, const char *user_id)
{
    if (strcmp(c->owner_id, user_id) == 0)
        return true;
    for (size_t i = 0; i < c->n_shared; i++)
        if (strcmp(c->shared_with[i], user_id) == 0)
            return true;
    return false;
}

int mg_cube_pack(msgpack_packer *pk, const mg_cube *c)
{
    int rc = MG_OK;
    if (msgpack_pack_map(pk, 9) || pack_version(pk))
        return MG_ENOMEM;
    rc |= mg_mp_pack_cstr(pk, "cube_id") | mg_mp_pack_cstr(pk, c->cube_id);
    rc |= mg_mp_pack_cstr(pk, "owner_id") | mg_mp_pack_cstr(pk, c->owner_id);
    rc |= mg_mp_pack_cstr(pk, "name") | mg_mp_pack_cstr(pk, c->name);
    rc |= mg_mp_pack_cstr(pk, "created_at") | mg_mp_pack_cstr(pk, c->created_at);
    rc |= mg_mp_pack_cstr(pk, "embedder") | mg_mp_pack_cstr(pk, c->embedder);
    rc |= mg_mp_pack_cstr(pk, "dim") | msgpack_pack_uint32(pk, c->dim);
    rc |= mg_mp_pack_cstr(pk, "metric") | msgpack_pack_uint8(pk, c->metric);
    rc |= mg_mp_pack_cstr(pk, "shared_with") | msgpack_pack_array(pk, c->n_shared);
    for (size_t i = 0; i < c->n_shared; i++)
        rc |= mg_mp_pack_cstr(pk, c->shared_with[i]);
    return rc ? MG_ENOMEM : MG_OK;
}

/* Reads a str-or-nil into a malloc'd copy (*out stays NULL for nil). */
static int read_opt_strdup(mg_mp_reader *r, char **out)
{
    if (mg_mp_peek(r) == MG_MP_NIL)
        return mg_mp_read_nil(r);
    free(*out);
    *out = NULL;
    return mg_mp_read_strdup(r, out, NULL);
}

static int read_shared(mg_mp_reader *r, mg_cube *c)
{
    uint32_t n;
    if (mg_mp_read_array(r, &n) || n > MG_SHARED_MAX)
        return MG_ECORRUPT;
    c->shared_with = calloc(n ? n : 1, sizeof *c->shared_with);
    if (c->shared_with == NULL)
        return MG_ENOMEM;
    for (uint32_t i = 0; i < n; i++) {
        int rc = mg_mp_read_strdup(r, &c->shared_with[i], NULL);
        if (rc)
            return rc;
        c->n_shared++;
    }
    return MG_OK;
}

int mg_cube_decode(const void *buf, size_t len, mg_cube *out, mg_error *err)
{
    mg_mp_reader r;
    uint32_t n;
    int rc = MG_OK;
    bool have_id = false, have_owner = false;
    memset(out, 0, sizeof *out);
    mg_mp_reader_init(&r, buf, len);
    if (mg_mp_read_map(&r, &n)) {
        rc = mg_error_set(err, MG_ECORRUPT, "cube record is not a map");
        goto err_clear;
    }
    for (uint32_t i = 0; i < n && rc == MG_OK; i++) {
        const char *key;
        uint32_t klen;
        if (mg_mp_read_str(&r, &key, &klen)) {
            rc = MG_ECORRUPT;
            break;
        }
#define KEY(s) (klen == sizeof(s) - 1 && memcmp(key, s, klen) == 0)
        if (KEY("v")) {
            if ((rc = read_version(&r, "cube", err)))
                goto err_clear;
        } else if (KEY("cube_id")) {
            rc = mg_mp_read_strcpy(&r, out->cube_id, sizeof out->cube_id);
            have_id = true;
        } else if (KEY("owner_id")) {
            rc = mg_mp_read_strcpy(&r, out->owner_id, sizeof out->owner_id);
            have_owner = true;
        } else if (KEY("name")) {
            rc = read_opt_strdup(&r, &out->name);
        } else if (KEY("created_at")) {
            rc = mg_mp_read_strcpy(&r, out->created_at, sizeof out->created_at);
        } else if (KEY("embedder")) {
            rc = mg_mp_read_strcpy(&r, out->embedder, sizeof out->embedder);
        } else if (KEY("dim")) {
            rc = mg_mp_read_u32(&r, &out->dim);
        } else if (KEY("metric")) {
            uint32_t m = 0;
            rc = mg_mp_read_u32(&r, &m);
            out->metric = (uint8_t)(m > 255 ? 255 : m);
        } else if (KEY("shared_with") && out->shared_with == NULL) {
            rc = read_shared(&r, out);
        } else {
            rc = mg_mp_skip(&r);
        }
#undef KEY
    }
    if (rc == MG_ENOMEM) {
        mg_error_set(err, MG_ENOMEM, "out of memory decoding a cube");
        goto err_clear;
    }
    if (rc || !have_id || !have_owner || mg_mp_remaining(&r) != 0) {
        rc = mg_error_set(err, MG_ECORRUPT, "cube record is malformed");
        goto err_clear;
    }
    if ((rc = mg_cube_validate(out, err))) {
        mg_error_wrap(err, rc, "cube record");
        goto err_clear;
    }
    return MG_OK;

err_clear:
    mg_cube_clear(out);
    return rc;
}

json_t *mg_cube_to_json(const mg_cube *c)
{
    json_t *shared = json_array();
    for (size_t i = 0; shared && i < c->n_shared; i++)
        json_array_append_new(shared, json_string(c->shared_with[i]));
    return json_pack("{s:s, s:s?, s:s, s:s, s:s, s:I, s:o*}", "cube_id", c->cube_id,
                     "cube_name", c->name, "owner_id", c->owner_id, "created_at",
                     c->created_at, "embedder", c->embedder, "dim", (json_int_t)c->dim,
                     "shared_with", shared);
}

/* ---- memory item -------------------------------------------------------- */

void mg_item_clear(mg_item *it)
{
    free(it->memory);
    json_decref(it->metadata);
    memset(it, 0, sizeof *it);
}

int mg_item_copy(mg_item *out, const mg_item *it)
{
    memset(out, 0, sizeof *out);
    memcpy(out->id, it->id, sizeof out->id);
    out->memory = malloc(it->memory_len + 1);
    out->metadata = json_deep_copy(it->metadata);
    if (out->memory == NULL || out->metadata == NULL) {
        mg_item_clear(out);
        return MG_ENOMEM;
    }
    memcpy(out->memory, it->memory, it->memory_len + 1);
    out->memory_len = it->memory_len;
    return MG_OK;
}

/* Metadata fields of MemOS whose type is fixed; null is accepted for each,
 * since older MemOS files carry nulls. */
static const struct {
    const char *key;
    json_type type;
} typed_fields[] = {
    {"user_id", JSON_STRING},    {"session_id", JSON_STRING}, {"status", JSON_STRING},
    {"type", JSON_STRING},       {"memory_type", JSON_STRING}, {"key", JSON_STRING},
    {"source", JSON_STRING},     {"visibility", JSON_STRING}, {"created_at", JSON_STRING},
    {"updated_at", JSON_STRING}, {"background", JSON_STRING}, {"tags", JSON_ARRAY},
    {"confidence", JSON_REAL},   {"info", JSON_OBJECT},       {"sources", JSON_ARRAY},
    {"usage", JSON_ARRAY},
};

static const char *type_word(json_type t)
{
    switch (t) {
    case JSON_STRING: return "a string";
    case JSON_ARRAY: return "a list";
    case JSON_OBJECT: return "an object";
    default: return "a number";
    }
}

static int check_metadata(const json_t *md, mg_error *err)
{
    if (!json_is_object(md))
        return mg_error_set(err, MG_EINVAL, "metadata must be an object");
    for (size_t i = 0; i < sizeof typed_fields / sizeof typed_fields[0]; i++) {
        const json_t *v = json_object_get(md, typed_fields[i].key);
        if (v == NULL || json_is_null(v))
            continue;
        bool ok = typed_fields[i].type == JSON_REAL ? json_is_number(v)
                                                    : json_typeof(v) == typed_fields[i].type;
        if (!ok)
            return mg_error_set(err, MG_EINVAL, "metadata.%s must be %s", typed_fields[i].key,
                                type_word(typed_fields[i].type));
    }
    const json_t *tags = json_object_get(md, "tags");
    size_t i;
    const json_t *tag;
    json_array_foreach(tags, i, tag)
    {
        if (!json_is_string(tag))
            return mg_error_set(err, MG_EINVAL, "metadata.tags[%zu] must be a string", i);
    }
    if (json_object_get(md, "embedding"))
        return mg_error_set(err, MG_EINVAL, "metadata.embedding is stored beside the item");
    return MG_OK;
}

int mg_item_validate(const mg_item *it, mg_error *err)
{
    if (it->memory == NULL)
        return mg_error_set(err, MG_EINVAL, "memory text is missing");
    if (it->memory_len > MG_MEMORY_TEXT_MAX)
        return mg_error_set(err, MG_ETOOBIG, "memory text is %zu bytes, the limit is %d",
                            it->memory_len, MG_MEMORY_TEXT_MAX);
    if (!mg_utf8_valid(it->memory, it->memory_len))
        return mg_error_set(err, MG_EINVAL, "memory text is not valid UTF-8");
    int rc = check_metadata(it->metadata, err);
    if (rc)
        return rc;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    rc = mg_jsonmp_pack(&pk, it->metadata);
    size_t size = sb.size;
    msgpack_sbuffer_destroy(&sb);
    if (rc == MG_EINVAL)
        return mg_error_set(err, MG_EINVAL, "metadata is nested too deeply");
    if (rc)
        return mg_error_set(err, rc, "encoding metadata: %s", mg_strerror(rc));
    if (size > MG_METADATA_MAX)
        return mg_error_set(err, MG_ETOOBIG, "metadata is %zu bytes encoded, the limit is %d",
                            size, MG_METADATA_MAX);
    return MG_OK;
}

int mg_item_pack(msgpack_packer *pk, const mg_item *it)
{
    int rc = 0;
    if (msgpack_pack_map(pk, 4) || pack_version(pk))
        return MG_ENOMEM;
    rc |= mg_mp_pack_cstr(pk, "id") | mg_mp_pack_binn(pk, it->id, sizeof it->id);
    rc |= mg_mp_pack_cstr(pk, "memory") | mg_mp_pack_strn(pk, it->memory, it->memory_len);
    rc |= mg_mp_pack_cstr(pk, "metadata");
    if (rc)
        return MG_ENOMEM;
    if (it->metadata == NULL)
        return msgpack_pack_map(pk, 0) ? MG_ENOMEM : MG_OK;
    return mg_jsonmp_pack(pk, it->metadata);
}

int mg_item_encode(const mg_item *it, char **buf, size_t *len)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    return sbuffer_take(&sb, mg_item_pack(&pk, it), buf, len);
}

int mg_item_decode(const void *buf, size_t len, mg_item *out, mg_error *err)
{
    mg_mp_reader r;
    uint32_t n;
    int rc = MG_OK;
    bool have_id = false;
    memset(out, 0, sizeof *out);
    mg_mp_reader_init(&r, buf, len);
    if (mg_mp_read_map(&r, &n)) {
        rc = mg_error_set(err, MG_ECORRUPT, "memory record is not a map");
        goto err_clear;
    }
    for (uint32_t i = 0; i < n && rc == MG_OK; i++) {
        const char *key;
        uint32_t klen;
        if (mg_mp_read_str(&r, &key, &klen)) {
            rc = MG_ECORRUPT;
            break;
        }
#define KEY(s) (klen == sizeof(s) - 1 && memcmp(key, s, klen) == 0)
        if (KEY("v")) {
            if ((rc = read_version(&r, "memory", err)))
                goto err_clear;
        } else if (KEY("id")) {
            const uint8_t *id;
            uint32_t idlen;
            rc = mg_mp_read_bin(&r, &id, &idlen);
            if (rc == MG_OK && idlen != sizeof out->id)
                rc = MG_ECORRUPT;
            if (rc == MG_OK)
                memcpy(out->id, id, sizeof out->id);
            have_id = true;
        } else if (KEY("memory") && out->memory == NULL) {
            uint32_t mlen;
            rc = mg_mp_read_strdup(&r, &out->memory, &mlen);
            out->memory_len = mlen;
        } else if (KEY("metadata") && out->metadata == NULL) {
            rc = mg_jsonmp_read(&r, &out->metadata);
        } else {
            rc = mg_mp_skip(&r);
        }
#undef KEY
    }
    if (rc == MG_ENOMEM) {
        mg_error_set(err, MG_ENOMEM, "out of memory decoding a memory");
        goto err_clear;
    }
    if (rc || !have_id || out->memory == NULL || mg_mp_remaining(&r) != 0) {
        rc = mg_error_set(err, MG_ECORRUPT, "memory record is malformed");
        goto err_clear;
    }
    if (out->metadata == NULL && (out->metadata = json_object()) == NULL) {
        rc = mg_error_set(err, MG_ENOMEM, "out of memory decoding a memory");
        goto err_clear;
    }
    if ((rc = mg_item_validate(out, err))) {
        mg_error_wrap(err, rc, "memory record");
        goto err_clear;
    }
    return MG_OK;

err_clear:
    mg_item_clear(out);
    return rc;
}

/* Moves metadata.embedding out into a float array. */
static int take_embedding(json_t *md, float **vec, uint32_t *dim, mg_error *err)
{
    json_t *emb = json_object_get(md, "embedding");
    *vec = NULL;
    *dim = 0;
    if (emb == NULL)
        return MG_OK;
    if (!json_is_null(emb) && !json_is_array(emb))
        return mg_error_set(err, MG_EINVAL, "metadata.embedding must be a list of numbers");
    size_t n = json_is_array(emb) ? json_array_size(emb) : 0;
    if (n > MG_DIM_MAX)
        return mg_error_set(err, MG_EDIM, "embedding dimension %zu is above %d", n, MG_DIM_MAX);
    if (n > 0) {
        float *v = malloc(n * sizeof *v);
        if (v == NULL)
            return mg_error_set(err, MG_ENOMEM, "out of memory");
        for (size_t i = 0; i < n; i++) {
            const json_t *x = json_array_get(emb, i);
            if (!json_is_number(x)) {
                free(v);
                return mg_error_set(err, MG_EINVAL, "metadata.embedding[%zu] is not a number",
                                    i);
            }
            v[i] = (float)json_number_value(x);
        }
        int rc = mg_vector_check(v, (uint32_t)n, err);
        if (rc) {
            free(v);
            return rc;
        }
        *vec = v;
        *dim = (uint32_t)n;
    }
    json_object_del(md, "embedding");
    return MG_OK;
}

int mg_item_from_json(const json_t *obj, mg_item *out, float **vec, uint32_t *dim, mg_error *err)
{
    int rc;
    memset(out, 0, sizeof *out);
    *vec = NULL;
    *dim = 0;
    if (!json_is_object(obj))
        return mg_error_set(err, MG_EINVAL, "a memory item must be an object");
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)obj, key, value)
    {
        if (strcmp(key, "id") && strcmp(key, "memory") && strcmp(key, "metadata"))
            return mg_error_set(err, MG_EINVAL,
                                "unknown field \"%.64s\" in a memory item (allowed: id, "
                                "memory, metadata)",
                                key);
    }
    const json_t *id = json_object_get(obj, "id");
    if (id == NULL || json_is_null(id)) {
        mg_uuid_v4(out->id);
    } else if (!json_is_string(id) ||
               !mg_uuid_parse(json_string_value(id), json_string_length(id), out->id)) {
        return mg_error_set(err, MG_EINVAL, "id must be a UUID (8-4-4-4-12 hex digits)");
    }
    const json_t *memory = json_object_get(obj, "memory");
    if (!json_is_string(memory))
        return mg_error_set(err, MG_EINVAL, "memory must be a string");
    if (json_string_length(memory) > MG_MEMORY_TEXT_MAX)
        return mg_error_set(err, MG_ETOOBIG, "memory text is %zu bytes, the limit is %d",
                            json_string_length(memory), MG_MEMORY_TEXT_MAX);
    const json_t *md = json_object_get(obj, "metadata");
    if (md != NULL && !json_is_null(md) && !json_is_object(md))
        return mg_error_set(err, MG_EINVAL, "metadata must be an object");
    out->memory_len = json_string_length(memory);
    out->memory = malloc(out->memory_len + 1);
    out->metadata = md && json_is_object(md) ? json_deep_copy(md) : json_object();
    if (out->memory == NULL || out->metadata == NULL) {
        rc = mg_error_set(err, MG_ENOMEM, "out of memory");
        goto err_clear;
    }
    memcpy(out->memory, json_string_value(memory), out->memory_len + 1);
    if ((rc = take_embedding(out->metadata, vec, dim, err)))
        goto err_clear;
    if ((rc = mg_item_validate(out, err)))
        goto err_free_vec;
    return MG_OK;

err_free_vec:
    free(*vec);
    *vec = NULL;
    *dim = 0;
err_clear:
    mg_item_clear(out);
    return rc;
}

json_t *mg_item_to_json(const mg_item *it)
{
    char id[MG_UUID_STRLEN + 1];
    json_t *md = it->metadata ? json_deep_copy(it->metadata) : json_object();
    if (md == NULL || json_object_set_new(md, "embedding", json_array())) {
        json_decref(md);
        return NULL;
    }
    return json_pack("{s:s, s:s%, s:o}", "id", mg_uuid_format(it->id, id), "memory",
                     it->memory, it->memory_len, "metadata", md);
}

/* ---- user --------------------------------------------------------------- */

void mg_user_clear(mg_user *u)
{
    free(u->name);
    for (size_t i = 0; i < u->n_keys; i++)
        free(u->keys[i].scopes);
    free(u->keys);
    memset(u, 0, sizeof *u);
}

int mg_user_validate(const mg_user *u, mg_error *err)
{
    if (!mg_user_id_valid(u->user_id, strlen(u->user_id)))
        return mg_error_set(err, MG_EINVAL,
                            "user_id must be 1-%d bytes of UTF-8 without control characters",
                            MG_USER_ID_MAX);
    if (u->name && !text_ok(u->name, MG_NAME_MAX))
        return mg_error_set(err, MG_EINVAL, "user name must be UTF-8 of at most %d bytes",
                            MG_NAME_MAX);
    if (u->role != MG_ROLE_USER && u->role != MG_ROLE_ADMIN)
        return mg_error_set(err, MG_EINVAL, "role must be user or admin");
    if (!text_ok(u->created_at, sizeof u->created_at - 1))
        return mg_error_set(err, MG_EINVAL, "user created_at is not valid text");
    if (u->n_keys > MG_APIKEYS_MAX)
        return mg_error_set(err, MG_ETOOBIG, "a user has at most %d API keys", MG_APIKEYS_MAX);
    for (size_t i = 0; i < u->n_keys; i++)
        if (u->keys[i].scopes && !text_ok(u->keys[i].scopes, MG_NAME_MAX))
            return mg_error_set(err, MG_EINVAL, "API key %zu: scopes are not valid text", i);
    return MG_OK;
}

int mg_user_pack(msgpack_packer *pk, const mg_user *u)
{
    int rc = 0;
    if (msgpack_pack_map(pk, 6) || pack_version(pk))
        return MG_ENOMEM;
    rc |= mg_mp_pack_cstr(pk, "user_id") | mg_mp_pack_cstr(pk, u->user_id);
    rc |= mg_mp_pack_cstr(pk, "name") | mg_mp_pack_cstr(pk, u->name);
    rc |= mg_mp_pack_cstr(pk, "role") | msgpack_pack_uint8(pk, u->role);
    rc |= mg_mp_pack_cstr(pk, "created_at") | mg_mp_pack_cstr(pk, u->created_at);
    rc |= mg_mp_pack_cstr(pk, "keys") | msgpack_pack_array(pk, u->n_keys);
    for (size_t i = 0; i < u->n_keys; i++) {
        rc |= msgpack_pack_map(pk, 2);
        rc |= mg_mp_pack_cstr(pk, "hash") | mg_mp_pack_binn(pk, u->keys[i].hash, 32);
        rc |= mg_mp_pack_cstr(pk, "scopes") | mg_mp_pack_cstr(pk, u->keys[i].scopes);
    }
    return rc ? MG_ENOMEM : MG_OK;
}

static int read_key(mg_mp_reader *r, mg_apikey *k)
{
    uint32_t n;
    if (mg_mp_read_map(r, &n))
        return MG_ECORRUPT;
    bool have_hash = false;
    for (uint32_t i = 0; i < n; i++) {
        int rc;
        if (mg_mp_peek_str_eq(r, "hash")) {
            const uint8_t *h;
            uint32_t hlen;
            mg_mp_skip(r);
            if (mg_mp_read_bin(r, &h, &hlen) || hlen != 32)
                return MG_ECORRUPT;
            memcpy(k->hash, h, 32);
            have_hash = true;
        } else if (mg_mp_peek_str_eq(r, "scopes")) {
            mg_mp_skip(r);
            if ((rc = read_opt_strdup(r, &k->scopes)))
                return rc;
        } else if (mg_mp_skip(r) || mg_mp_skip(r)) {
            return MG_ECORRUPT;
        }
    }
    return have_hash ? MG_OK : MG_ECORRUPT;
}

static int read_keys(mg_mp_reader *r, mg_user *u)
{
    uint32_t n;
    if (mg_mp_read_array(r, &n) || n > MG_APIKEYS_MAX)
        return MG_ECORRUPT;
    u->keys = calloc(n ? n : 1, sizeof *u->keys);
    if (u->keys == NULL)
        return MG_ENOMEM;
    for (uint32_t i = 0; i < n; i++) {
        u->n_keys++;
        int rc = read_key(r, &u->keys[i]);
        if (rc)
            return rc;
    }
    return MG_OK;
}

int mg_user_decode(const void *buf, size_t len, mg_user *out, mg_error *err)
{
    mg_mp_reader r;
    uint32_t n;
    int rc = MG_OK;
    bool have_id = false;
    memset(out, 0, sizeof *out);
    mg_mp_reader_init(&r, buf, len);
    if (mg_mp_read_map(&r, &n)) {
        rc = mg_error_set(err, MG_ECORRUPT, "user record is not a map");
        goto err_clear;
    }
    for (uint32_t i = 0; i < n && rc == MG_OK; i++) {
        const char *key;
        uint32_t klen;
        if (mg_mp_read_str(&r, &key, &klen)) {
            rc = MG_ECORRUPT;
            break;
        }
#define KEY(s) (klen == sizeof(s) - 1 && memcmp(key, s, klen) == 0)
        if (KEY("v")) {
            if ((rc = read_version(&r, "user", err)))
                goto err_clear;
        } else if (KEY("user_id")) {
            rc = mg_mp_read_strcpy(&r, out->user_id, sizeof out->user_id);
            have_id = true;
        } else if (KEY("name")) {
            rc = read_opt_strdup(&r, &out->name);
        } else if (KEY("role")) {
            uint32_t role = 0;
            rc = mg_mp_read_u32(&r, &role);
            out->role = (uint8_t)(role > 255 ? 255 : role);
        } else if (KEY("created_at")) {
            rc = mg_mp_read_strcpy(&r, out->created_at, sizeof out->created_at);
        } else if (KEY("keys") && out->keys == NULL) {
            rc = read_keys(&r, out);
        } else {
            rc = mg_mp_skip(&r);
        }
#undef KEY
    }
    if (rc == MG_ENOMEM) {
        mg_error_set(err, MG_ENOMEM, "out of memory decoding a user");
        goto err_clear;
    }
    if (rc || !have_id || mg_mp_remaining(&r) != 0) {
        rc = mg_error_set(err, MG_ECORRUPT, "user record is malformed");
        goto err_clear;
    }
    if ((rc = mg_user_validate(out, err))) {
        mg_error_wrap(err, rc, "user record");
        goto err_clear;
    }
    return MG_OK;

err_clear:
    mg_user_clear(out);
    return rc;
}
