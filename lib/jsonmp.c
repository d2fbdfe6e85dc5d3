#include "jsonmp.h"

#include "error.h"

#include <math.h>

static int pack_depth(msgpack_packer *pk, const json_t *v, int depth)
{
    if (depth > MG_MP_MAX_DEPTH)
        return MG_EINVAL;
    int rc = 0;
    switch (json_typeof(v)) {
    case JSON_NULL:
        rc = msgpack_pack_nil(pk);
        break;
    case JSON_TRUE:
        rc = msgpack_pack_true(pk);
        break;
    case JSON_FALSE:
        rc = msgpack_pack_false(pk);
        break;
    case JSON_INTEGER:
        rc = msgpack_pack_int64(pk, json_integer_value(v));
        break;
    case JSON_REAL:
        rc = msgpack_pack_double(pk, json_real_value(v));
        break;
    case JSON_STRING:
        return mg_mp_pack_strn(pk, json_string_value(v), json_string_length(v));
    case JSON_ARRAY: {
        size_t n = json_array_size(v);
        if (msgpack_pack_array(pk, n))
            return MG_ENOMEM;
        for (size_t i = 0; i < n; i++) {
            int err = pack_depth(pk, json_array_get(v, i), depth + 1);
            if (err)
                return err;
        }
        return MG_OK;
    }
    case JSON_OBJECT: {
        if (msgpack_pack_map(pk, json_object_size(v)))
            return MG_ENOMEM;
        const char *key;
        json_t *item;
        void *iter = json_object_iter((json_t *)v);
        while (iter) {
            key = json_object_iter_key(iter);
            item = json_object_iter_value(iter);
            int err = mg_mp_pack_strn(pk, key, json_object_iter_key_len(iter));
            if (err)
                return err;
            err = pack_depth(pk, item, depth + 1);
            if (err)
                return err;
            iter = json_object_iter_next((json_t *)v, iter);
        }
        return MG_OK;
    }
    }
    return rc == 0 ? MG_OK : MG_ENOMEM;
}

int mg_jsonmp_pack(msgpack_packer *pk, const json_t *value)
{
    return pack_depth(pk, value, 0);
}

static int read_depth(mg_mp_reader *r, json_t **out, int depth)
{
    if (depth > MG_MP_MAX_DEPTH)
        return MG_ECORRUPT;
    json_t *v = NULL;
    switch (mg_mp_peek(r)) {
    case MG_MP_NIL:
        mg_mp_read_nil(r);
        v = json_null();
        break;
    case MG_MP_BOOL: {
        bool b;
        mg_mp_read_bool(r, &b);
        v = json_boolean(b);
        break;
    }
    case MG_MP_UINT:
    case MG_MP_INT: {
        int64_t i;
        if (mg_mp_read_i64(r, &i))
            return MG_ECORRUPT; /* uint above INT64_MAX */
        v = json_integer(i);
        break;
    }
    case MG_MP_FLOAT: {
        double d;
        mg_mp_read_double(r, &d);
        if (!isfinite(d))
            return MG_ECORRUPT;
        v = json_real(d);
        break;
    }
    case MG_MP_STR: {
        const char *s;
        uint32_t len;
        mg_mp_reader save = *r;
        mg_mp_read_str(r, &s, &len);
        v = json_stringn(s, len);
        if (v == NULL) {
            *r = save;
            return MG_ECORRUPT; /* not UTF-8 (or out of memory) */
        }
        break;
    }
    case MG_MP_ARRAY: {
        mg_mp_reader save = *r;
        uint32_t n;
        mg_mp_read_array(r, &n);
        v = json_array();
        for (uint32_t i = 0; v && i < n; i++) {
            json_t *item;
            int err = read_depth(r, &item, depth + 1);
            if (err || json_array_append_new(v, item)) {
                json_decref(v);
                *r = save;
                return err ? err : MG_ENOMEM;
            }
        }
        break;
    }
    case MG_MP_MAP: {
        mg_mp_reader save = *r;
        uint32_t n;
        mg_mp_read_map(r, &n);
        v = json_object();
        for (uint32_t i = 0; v && i < n; i++) {
            const char *key;
            uint32_t klen;
            json_t *item;
            int err = mg_mp_read_str(r, &key, &klen);
            if (err == MG_OK)
                err = read_depth(r, &item, depth + 1);
            if (err == MG_OK && json_object_setn_new(v, key, klen, item)) {
                err = MG_ECORRUPT; /* key not UTF-8 */
            }
            if (err) {
                json_decref(v);
                *r = save;
                return err;
            }
        }
        break;
    }
    default:
        return MG_ECORRUPT;
    }
    if (v == NULL)
        return MG_ENOMEM;
    *out = v;
    return MG_OK;
}

int mg_jsonmp_read(mg_mp_reader *r, json_t **out)
{
    return read_depth(r, out, 0);
}
