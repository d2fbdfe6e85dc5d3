/* Envelopes, request field readers and item helpers shared by the handlers. */
#include "api.h"

#include "../lib/log.h"
#include "../storage/item.h"
#include "embed.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- answers ------------------------------------------------------------ */

static void set_body(mg_api_resp *resp, unsigned status, json_t *doc)
{
    free(resp->body);
    resp->body = NULL;
    resp->len = 0;
    resp->status = status;
    char *text = doc ? json_dumps(doc, JSON_COMPACT | JSON_REAL_PRECISION(16)) : NULL;
    json_decref(doc);
    if (text == NULL) {
        static const char oom[] =
            "{\"code\":500,\"message\":\"internal error: out of memory\",\"data\":null}";
        text = strdup(oom);
        resp->status = 500;
    }
    if (text != NULL) {
        resp->body = text;
        resp->len = strlen(text);
    }
}

void api_ok(mg_api_resp *resp, const char *message, json_t *data)
{
    json_t *doc = json_object();
    if (doc != NULL) {
        json_object_set_new(doc, "code", json_integer(200));
        json_object_set_new(doc, "message", json_string(message));
        json_object_set_new(doc, "data", data ? data : json_null());
    } else {
        json_decref(data);
    }
    set_body(resp, 200, doc);
}

void api_fail(mg_api_resp *resp, unsigned status, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_t *doc = json_object();
    if (doc != NULL) {
        json_object_set_new(doc, "code", json_integer(status));
        /* Messages may quote input: keep the answer valid UTF-8 JSON. */
        json_t *m = json_string(msg);
        json_object_set_new(doc, "message", m ? m : json_string("invalid request"));
        json_object_set_new(doc, "data", json_null());
    }
    set_body(resp, status, doc);
    if (status == 500 || status > 503)
        mg_warn("router.error", "status=%u msg=\"%s\"", status, msg);
}

unsigned api_status_of(int code)
{
    switch (code) {
    case MG_OK:
        return 200;
    case MG_EINVAL:
    case MG_EDIM:
    case MG_ENAN:
    case MG_EFILTER:
    case MG_EVERSION:
        return 400;
    case MG_EPERM:
        return 403;
    case MG_ENOTFOUND:
        return 404;
    case MG_EEXIST:
        return 409;
    case MG_ETOOBIG:
        return 413;
    case MG_EFULL:
        return 507;
    case MG_ETIMEDOUT:
        return 504;
    case MG_EBUSY:
    case MG_EUNAVAIL:
    case MG_ENOTLEADER:
    case MG_EWRONGGROUP:
    case MG_ESHUTDOWN:
        return 503;
    default:
        return 500;
    }
}

void api_fail_err(mg_api_resp *resp, const mg_error *err)
{
    api_fail(resp, api_status_of(err->code), "%s", err->msg[0] ? err->msg : mg_strerror(err->code));
}

void api_raw(mg_api_resp *resp, unsigned status, char *text, size_t len)
{
    free(resp->body);
    resp->status = status;
    resp->body = text;
    resp->len = len;
}

void api_json(mg_api_resp *resp, unsigned status, json_t *value)
{
    set_body(resp, status, value);
}

/* ---- field readers ------------------------------------------------------ */

static const json_t *field(const json_t *body, const char *key)
{
    const json_t *v = json_object_get(body, key);
    return v == NULL || json_is_null(v) ? NULL : v;
}

int api_str(const json_t *body, const char *key, bool required, const char **out,
            mg_api_resp *resp)
{
    const json_t *v = field(body, key);
    *out = NULL;
    if (v == NULL) {
        if (required) {
            api_fail(resp, 422, "field \"%s\" is required", key);
            return MG_EINVAL;
        }
        return MG_OK;
    }
    if (!json_is_string(v)) {
        api_fail(resp, 422, "field \"%s\" must be a string", key);
        return MG_EINVAL;
    }
    *out = json_string_value(v);
    return MG_OK;
}

int api_user_id(const json_t *body, const char *key, bool required, const char **out,
                mg_api_resp *resp)
{
    if (api_str(body, key, required, out, resp) != MG_OK)
        return MG_EINVAL;
    if (*out != NULL && !mg_user_id_valid(*out, strlen(*out))) {
        api_fail(resp, 422,
                 "field \"%s\": a user id is 1-%d bytes of UTF-8 without control characters",
                 key, MG_USER_ID_MAX);
        return MG_EINVAL;
    }
    return MG_OK;
}

int api_cube_id_check(const char *fieldname, const char *id, mg_api_resp *resp)
{
    if (!mg_cube_id_valid(id, strlen(id))) {
        api_fail(resp, 422, "%s: \"%.64s\" is not a valid cube id (1-%d characters of "
                            "A-Z a-z 0-9 _ . : @ -)",
                 fieldname, id, MG_CUBE_ID_MAX);
        return MG_EINVAL;
    }
    return MG_OK;
}

int api_str_list(const json_t *body, const char *key, const json_t **out, mg_api_resp *resp)
{
    const json_t *v = field(body, key);
    *out = NULL;
    if (v == NULL)
        return MG_OK;
    if (!json_is_array(v)) {
        api_fail(resp, 422, "field \"%s\" must be a list of strings", key);
        return MG_EINVAL;
    }
    size_t i;
    const json_t *e;
    json_array_foreach(v, i, e)
    {
        if (!json_is_string(e)) {
            api_fail(resp, 422, "field \"%s\"[%zu] must be a string", key, i);
            return MG_EINVAL;
        }
    }
    *out = v;
    return MG_OK;
}

int api_int(const json_t *body, const char *key, long long def, long long min, long long max,
            long long *out, mg_api_resp *resp)
{
    const json_t *v = field(body, key);
    if (v == NULL) {
        *out = def;
        return MG_OK;
    }
    long long x;
    if (json_is_integer(v)) {
        x = (long long)json_integer_value(v);
    } else if (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)) &&
               fabs(json_real_value(v)) < 9e15) {
        x = (long long)json_real_value(v); /* 10.0 is an integer to pydantic too */
    } else {
        api_fail(resp, 422, "field \"%s\" must be an integer", key);
        return MG_EINVAL;
    }
    if (x < min) {
        api_fail(resp, 422, "field \"%s\" must be at least %lld (got %lld)", key, min, x);
        return MG_EINVAL;
    }
    if (x > max) {
        api_fail(resp, 400, "field \"%s\" is %lld; this server allows at most %lld", key, x, max);
        return MG_ETOOBIG;
    }
    *out = x;
    return MG_OK;
}

int api_num(const json_t *body, const char *key, double def, double min, double max, double *out,
            mg_api_resp *resp)
{
    const json_t *v = field(body, key);
    if (v == NULL) {
        *out = def;
        return MG_OK;
    }
    if (!json_is_number(v)) {
        api_fail(resp, 422, "field \"%s\" must be a number", key);
        return MG_EINVAL;
    }
    double x = json_number_value(v);
    if (!(x >= min && x <= max)) {
        api_fail(resp, 422, "field \"%s\" must be between %g and %g (got %g)", key, min, max, x);
        return MG_EINVAL;
    }
    *out = x;
    return MG_OK;
}

int api_bool(const json_t *body, const char *key, bool def, bool *out, mg_api_resp *resp)
{
    const json_t *v = field(body, key);
    if (v == NULL) {
        *out = def;
        return MG_OK;
    }
    if (!json_is_boolean(v)) {
        api_fail(resp, 422, "field \"%s\" must be true or false", key);
        return MG_EINVAL;
    }
    *out = json_is_true(v);
    return MG_OK;
}

int api_obj(const json_t *body, const char *key, const json_t **out, mg_api_resp *resp)
{
    const json_t *v = field(body, key);
    *out = NULL;
    if (v == NULL)
        return MG_OK;
    if (!json_is_object(v)) {
        api_fail(resp, 422, "field \"%s\" must be an object", key);
        return MG_EINVAL;
    }
    *out = v;
    return MG_OK;
}

/* ---- items -------------------------------------------------------------- */

json_t *api_item_json(const uint8_t *record, size_t len)
{
    mg_item it;
    mg_error err;
    if (mg_item_decode(record, len, &it, &err) != MG_OK) {
        mg_warn("router.bad_record", "msg=\"%s\"", err.msg);
        return NULL;
    }
    json_t *j = mg_item_to_json(&it);
    mg_item_clear(&it);
    return j;
}

api_bucket api_bucket_of(const char *t, size_t len)
{
#define IS(s) (len == sizeof(s) - 1 && memcmp(t, s, len) == 0)
    if (t == NULL)
        return API_BUCKET_TEXT;
    if (IS("PreferenceMemory"))
        return API_BUCKET_PREF;
    if (IS("ToolSchemaMemory") || IS("ToolTrajectoryMemory"))
        return API_BUCKET_TOOL;
    if (IS("SkillMemory"))
        return API_BUCKET_SKILL;
    return API_BUCKET_TEXT;
#undef IS
}

/* ---- embedding ---------------------------------------------------------- */

int router_embed(mg_router *r, const char *const *texts, const size_t *lens, size_t n, int role,
                 float *out, mg_error *err)
{
    return mg_embedder_embed(r->emb, texts, lens, n, role, out, err);
}

double router_relativity(const mg_router *r, double raw)
{
    if (raw <= 0.0)
        return 0.0;
    if (r->relativity_scale <= 0.0)
        return raw > 1.0 ? 1.0 : raw;
    return 1.0 - exp(-raw / r->relativity_scale);
}

/* ---- the cluster map ------------------------------------------------------ */

int router_need_map(mg_router *r, mg_error *err)
{
    return mg_client_need_map(r->client, err);
}

int mg_router_need_map(mg_router *r, mg_error *err)
{
    return router_need_map(r, err);
}

int router_data_groups(mg_router *r, uint64_t **out, size_t *n, mg_error *err)
{
    *out = NULL;
    *n = 0;
    int rc = router_need_map(r, err);
    if (rc != MG_OK)
        return rc;
    uint64_t *groups = malloc(MG_CMAP_GROUPS_MAX * sizeof *groups);
    if (groups == NULL)
        return mg_error_set(err, MG_ENOMEM, "out of memory");
    *n = mg_client_data_groups(r->client, groups, MG_CMAP_GROUPS_MAX);
    *out = groups;
    return MG_OK;
}
