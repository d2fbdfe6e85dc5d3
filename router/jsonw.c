#include "jsonw.h"

#include "../lib/jsonesc.h"
#include "../lib/uuid.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void jw_init(jw *w)
{
    memset(w, 0, sizeof *w);
}

void jw_free(jw *w)
{
    free(w->buf);
    memset(w, 0, sizeof *w);
}

char *jw_take(jw *w, size_t *len)
{
    jw_raw(w, "", 0);
    if (w->failed || w->buf == NULL) {
        jw_free(w);
        return NULL;
    }
    char *out = w->buf;
    *len = w->len;
    memset(w, 0, sizeof *w);
    return out;
}

static bool reserve(jw *w, size_t n)
{
    if (w->failed)
        return false;
    if (w->len + n + 1 <= w->cap)
        return true;
    size_t cap = w->cap ? w->cap : 4096;
    while (cap < w->len + n + 1)
        cap *= 2;
    char *grown = realloc(w->buf, cap);
    if (grown == NULL) {
        w->failed = true;
        return false;
    }
    w->buf = grown;
    w->cap = cap;
    return true;
}

void jw_raw(jw *w, const char *s, size_t n)
{
    if (!reserve(w, n))
        return;
    memcpy(w->buf + w->len, s, n);
    w->len += n;
    w->buf[w->len] = '\0';
}

void jw_lit(jw *w, const char *s)
{
    jw_raw(w, s, strlen(s));
}

void jw_str(jw *w, const char *s, size_t n)
{
    if (!reserve(w, MG_JSONESC_MAX(n) + 2))
        return;
    char *o = w->buf + w->len;
    *o++ = '"';
    o += mg_json_escape(o, s, n, MG_JSONESC_SHORT_BF | MG_JSONESC_DEL);
    *o++ = '"';
    *o = '\0';
    w->len = (size_t)(o - w->buf);
}

void jw_cstr(jw *w, const char *s)
{
    jw_str(w, s, strlen(s));
}

void jw_double(jw *w, double v)
{
    char tmp[40];
    if (!isfinite(v)) {
        jw_lit(w, "null"); /* cannot happen for validated records */
        return;
    }
    /* The shortest of %.15g..%.17g that reads back as the same double. */
    int n = 0;
    for (int prec = 15; prec <= 17; prec++) {
        n = snprintf(tmp, sizeof tmp, "%.*g", prec, v);
        if (strtod(tmp, NULL) == v)
            break;
    }
    /* A real stays a real: "1" would read back as an integer. */
    if (strpbrk(tmp, ".eEn") == NULL && n + 2 < (int)sizeof tmp) {
        tmp[n++] = '.';
        tmp[n++] = '0';
        tmp[n] = '\0';
    }
    jw_raw(w, tmp, (size_t)n);
}

void jw_u64(jw *w, uint64_t v)
{
    char tmp[24];
    int n = snprintf(tmp, sizeof tmp, "%" PRIu64, v);
    jw_raw(w, tmp, (size_t)n);
}

static bool mp_value(jw *w, mg_mp_reader *r, int depth)
{
    if (depth > MG_MP_MAX_DEPTH)
        return false;
    uint32_t n;
    switch (mg_mp_peek(r)) {
    case MG_MP_NIL:
        mg_mp_read_nil(r);
        jw_lit(w, "null");
        return true;
    case MG_MP_BOOL: {
        bool b;
        mg_mp_read_bool(r, &b);
        jw_lit(w, b ? "true" : "false");
        return true;
    }
    case MG_MP_UINT: {
        uint64_t u;
        if (mg_mp_read_u64(r, &u) != 0)
            return false;
        jw_u64(w, u);
        return true;
    }
    case MG_MP_INT: {
        int64_t i;
        if (mg_mp_read_i64(r, &i) != 0)
            return false;
        char tmp[24];
        int len = snprintf(tmp, sizeof tmp, "%" PRId64, i);
        jw_raw(w, tmp, (size_t)len);
        return true;
    }
    case MG_MP_FLOAT: {
        double d;
        if (mg_mp_read_double(r, &d) != 0)
            return false;
        jw_double(w, d);
        return true;
    }
    case MG_MP_STR: {
        const char *s;
        if (mg_mp_read_str(r, &s, &n) != 0)
            return false;
        jw_str(w, s, n);
        return true;
    }
    case MG_MP_ARRAY:
        if (mg_mp_read_array(r, &n) != 0)
            return false;
        jw_raw(w, "[", 1);
        for (uint32_t i = 0; i < n; i++) {
            if (i)
                jw_raw(w, ",", 1);
            if (!mp_value(w, r, depth + 1))
                return false;
        }
        jw_raw(w, "]", 1);
        return true;
    case MG_MP_MAP:
        if (mg_mp_read_map(r, &n) != 0)
            return false;
        jw_raw(w, "{", 1);
        for (uint32_t i = 0; i < n; i++) {
            const char *k;
            uint32_t kl;
            if (mg_mp_read_str(r, &k, &kl) != 0)
                return false;
            if (i)
                jw_raw(w, ",", 1);
            jw_str(w, k, kl);
            jw_raw(w, ":", 1);
            if (!mp_value(w, r, depth + 1))
                return false;
        }
        jw_raw(w, "}", 1);
        return true;
    case MG_MP_BIN:
    case MG_MP_EXT:
        if (mg_mp_skip(r) != 0)
            return false;
        jw_lit(w, "null");
        return true;
    default:
        return false;
    }
}

bool jw_mp(jw *w, mg_mp_reader *r)
{
    return mp_value(w, r, 0);
}

static bool key_is(const char *k, uint32_t kl, const char *s)
{
    return kl == strlen(s) && memcmp(k, s, kl) == 0;
}

bool jw_item(jw *w, const uint8_t *rec, size_t len, bool search, double relativity)
{
    mg_mp_reader r;
    uint32_t n;
    const uint8_t *id = NULL;
    const char *text = NULL;
    uint32_t text_len = 0;
    mg_mp_reader meta;
    bool have_meta = false;
    mg_mp_reader_init(&r, rec, len);
    if (mg_mp_read_map(&r, &n) != 0)
        return false;
    for (uint32_t i = 0; i < n; i++) {
        const char *k;
        uint32_t kl;
        if (mg_mp_read_str(&r, &k, &kl) != 0)
            return false;
        if (key_is(k, kl, "id")) {
            uint32_t idl;
            if (mg_mp_read_bin(&r, &id, &idl) != 0 || idl != 16)
                return false;
        } else if (key_is(k, kl, "memory")) {
            if (mg_mp_read_str(&r, &text, &text_len) != 0)
                return false;
        } else if (key_is(k, kl, "metadata")) {
            meta = r;
            have_meta = true;
            if (mg_mp_skip(&r) != 0)
                return false;
        } else if (mg_mp_skip(&r) != 0) {
            return false;
        }
    }
    if (id == NULL || text == NULL)
        return false;
    char uuid[MG_UUID_STRLEN + 1];
    mg_uuid_format(id, uuid);
    char ref[12];
    snprintf(ref, sizeof ref, "[%.8s]", uuid);
    size_t mark = w->len;
    jw_lit(w, "{\"id\":");
    jw_str(w, uuid, MG_UUID_STRLEN);
    jw_lit(w, ",\"memory\":");
    jw_str(w, text, text_len);
    jw_lit(w, ",\"metadata\":{");
    bool first = true;
    uint32_t m = 0;
    if (have_meta && mg_mp_read_map(&meta, &m) != 0)
        goto bad;
    for (uint32_t i = 0; i < m; i++) {
        const char *k;
        uint32_t kl;
        if (mg_mp_read_str(&meta, &k, &kl) != 0)
            goto bad;
        /* Keys the answer sets itself are skipped here. */
        if (key_is(k, kl, "embedding") ||
            (search && (key_is(k, kl, "usage") || key_is(k, kl, "id") ||
                        key_is(k, kl, "memory") || key_is(k, kl, "relativity") ||
                        key_is(k, kl, "ref_id")))) {
            if (mg_mp_skip(&meta) != 0)
                goto bad;
            continue;
        }
        if (!first)
            jw_raw(w, ",", 1);
        first = false;
        jw_str(w, k, kl);
        jw_raw(w, ":", 1);
        if (!jw_mp(w, &meta))
            goto bad;
    }
    jw_lit(w, first ? "\"embedding\":[]" : ",\"embedding\":[]");
    if (search) {
        jw_lit(w, ",\"usage\":[],\"id\":");
        jw_str(w, uuid, MG_UUID_STRLEN);
        jw_lit(w, ",\"memory\":");
        jw_str(w, text, text_len);
        jw_lit(w, ",\"relativity\":");
        jw_double(w, round(relativity * 1e6) / 1e6);
        jw_lit(w, ",\"ref_id\":");
        jw_cstr(w, ref);
        jw_lit(w, "},\"ref_id\":");
        jw_cstr(w, ref);
        jw_raw(w, "}", 1);
    } else {
        jw_lit(w, "}}");
    }
    return !w->failed;
bad:
    if (!w->failed)
        w->len = mark;
    return false;
}
