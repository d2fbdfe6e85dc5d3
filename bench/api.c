#include "api.h"

#include "../lib/jsonesc.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- buffer ---- */

static bool buf_reserve(bench_buf *b, size_t extra)
{
    if (b->oom)
        return false;
    if (b->len + extra + 1 <= b->cap)
        return true;
    size_t ncap = b->cap ? b->cap : 1024;
    while (ncap < b->len + extra + 1)
        ncap *= 2;
    char *grown = realloc(b->data, ncap);
    if (grown == NULL) {
        b->oom = true;
        return false;
    }
    b->data = grown;
    b->cap = ncap;
    return true;
}

void bench_buf_reset(bench_buf *b)
{
    b->len = 0;
    b->oom = false;
    if (b->data != NULL)
        b->data[0] = '\0';
}

void bench_buf_free(bench_buf *b)
{
    free(b->data);
    memset(b, 0, sizeof *b);
}

void bench_buf_putn(bench_buf *b, const char *s, size_t n)
{
    if (!buf_reserve(b, n))
        return;
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void bench_buf_puts(bench_buf *b, const char *s)
{
    bench_buf_putn(b, s, strlen(s));
}

void bench_buf_printf(bench_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || !buf_reserve(b, (size_t)n))
        return;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* Plain \u00XX for '\b', '\f' and no escape for 0x7f: the bytes these
 * request bodies have always carried. */
void bench_buf_json_str(bench_buf *b, const char *s, size_t n)
{
    if (!buf_reserve(b, MG_JSONESC_MAX(n) + 2))
        return;
    char *o = b->data + b->len;
    *o++ = '"';
    o += mg_json_escape(o, s, n, 0);
    *o++ = '"';
    b->len = (size_t)(o - b->data);
    b->data[b->len] = '\0';
}

/* ---- requests ---- */

void bench_api_add_body(bench_buf *b, const bench_add_req *req)
{
    size_t cube_len = strlen(req->cube);
    bench_buf_reset(b);
    bench_buf_puts(b, "{\"user_id\":");
    bench_buf_json_str(b, req->cube, cube_len);
    bench_buf_puts(b, ",\"writable_cube_ids\":[");
    bench_buf_json_str(b, req->cube, cube_len);
    bench_buf_puts(b, "],");
    if (req->content) {
        bench_buf_puts(b, "\"memory_content\":");
        bench_buf_json_str(b, req->texts[0], strlen(req->texts[0]));
    } else {
        bench_buf_puts(b, "\"messages\":[");
        for (size_t i = 0; i < req->ntexts; i++) {
            bench_buf_puts(b, i ? ",{\"role\":\"user\",\"content\":"
                                : "{\"role\":\"user\",\"content\":");
            bench_buf_json_str(b, req->texts[i], strlen(req->texts[i]));
            bench_buf_puts(b, "}");
        }
        bench_buf_puts(b, "]");
    }
    if (req->dia_id != NULL) {
        bench_buf_puts(b, ",\"info\":{\"dia_id\":");
        bench_buf_json_str(b, req->dia_id, strlen(req->dia_id));
        bench_buf_puts(b, "}");
    }
    bench_buf_puts(b, req->async ? ",\"async_mode\":\"async\",\"mode\":\"fast\"}"
                                 : ",\"async_mode\":\"sync\",\"mode\":\"fast\"}");
}

void bench_api_search_body(bench_buf *b, const char *cube, const char *query, unsigned top_k,
                           const char *extra)
{
    size_t cube_len = strlen(cube);
    bench_buf_reset(b);
    bench_buf_puts(b, "{\"query\":");
    bench_buf_json_str(b, query, strlen(query));
    bench_buf_puts(b, ",\"user_id\":");
    bench_buf_json_str(b, cube, cube_len);
    bench_buf_puts(b, ",\"readable_cube_ids\":[");
    bench_buf_json_str(b, cube, cube_len);
    bench_buf_printf(b, "],\"top_k\":%u%s}", top_k, extra ? extra : "");
}

/* ---- answers ---- */

/* The envelope code from the first bytes: `{"code": 200` (spaces allowed). */
static bool quick_code(const char *body, size_t len, long *code)
{
    size_t n = len < 64 ? len : 64;
    size_t i = 0;
    while (i < n && (body[i] == ' ' || body[i] == '\n' || body[i] == '\r' || body[i] == '\t'))
        i++;
    if (i >= n || body[i] != '{')
        return false;
    i++;
    while (i < n && (body[i] == ' ' || body[i] == '\n' || body[i] == '\r' || body[i] == '\t'))
        i++;
    if (n - i < 7 || memcmp(body + i, "\"code\"", 6) != 0)
        return false;
    i += 6;
    while (i < n && (body[i] == ' ' || body[i] == ':' || body[i] == '\t'))
        i++;
    if (i >= n || body[i] < '0' || body[i] > '9')
        return false;
    long v = 0;
    while (i < n && body[i] >= '0' && body[i] <= '9' && v < 100000)
        v = v * 10 + (body[i++] - '0');
    if (i >= n || (body[i] != ',' && body[i] != '}' && body[i] != ' '))
        return false;
    *code = v;
    return true;
}

bool bench_api_ok(const mg_http_response *resp, char *msg, size_t cap)
{
    long code = -1;
    json_t *root = NULL;
    if (!quick_code(resp->body, resp->body_len, &code)) {
        root = json_loadb(resp->body, resp->body_len, 0, NULL);
        json_t *c = json_object_get(root, "code");
        if (json_is_integer(c))
            code = (long)json_integer_value(c);
    }
    bool ok = resp->status == 200 && code == 200;
    if (!ok) {
        if (root == NULL)
            root = json_loadb(resp->body, resp->body_len, 0, NULL);
        const char *m = json_string_value(json_object_get(root, "message"));
        if (m == NULL)
            m = json_string_value(json_object_get(root, "detail"));
        if (code < 0)
            snprintf(msg, cap, "HTTP %d, no MemOS envelope: %.80s", resp->status,
                     resp->body ? resp->body : "");
        else
            snprintf(msg, cap, "HTTP %d, code %ld: %.160s", resp->status, code, m ? m : "");
    }
    json_decref(root);
    return ok;
}

bool bench_api_add_id(const char *body, size_t len, char *id, size_t cap)
{
    json_t *root = json_loadb(body, len, 0, NULL);
    json_t *data = json_object_get(root, "data");
    const char *s = json_string_value(json_object_get(json_array_get(data, 0), "memory_id"));
    if (s == NULL) /* some versions answer the item itself */
        s = json_string_value(json_object_get(json_array_get(data, 0), "id"));
    bool found = s != NULL && strlen(s) < cap;
    if (found)
        memcpy(id, s, strlen(s) + 1);
    json_decref(root);
    return found;
}

long bench_api_search_memories(const char *body, size_t len, bench_memory_fn fn, void *ctx)
{
    json_t *root = json_loadb(body, len, 0, NULL);
    json_t *data = json_object_get(root, "data");
    json_t *text_mem = json_object_get(data, "text_mem");
    if (!json_is_array(text_mem)) {
        json_decref(root);
        return -1;
    }
    size_t rank = 0, i;
    json_t *cube;
    json_array_foreach(text_mem, i, cube)
    {
        size_t j;
        json_t *item;
        json_array_foreach(json_object_get(cube, "memories"), j, item)
        {
            json_t *meta = json_object_get(item, "metadata");
            const char *id = json_string_value(json_object_get(item, "id"));
            const char *memory = json_string_value(json_object_get(item, "memory"));
            const char *dia =
                json_string_value(json_object_get(json_object_get(meta, "info"), "dia_id"));
            if (dia == NULL) /* MemOS may flatten info keys into metadata */
                dia = json_string_value(json_object_get(meta, "dia_id"));
            fn(ctx, rank++, id, memory, dia);
        }
    }
    json_decref(root);
    return (long)rank;
}

bool bench_api_health(const char *body, size_t len, char *service, size_t scap, char *version,
                      size_t vcap)
{
    service[0] = version[0] = '\0';
    json_t *root = json_loadb(body, len, 0, NULL);
    if (root == NULL)
        return false;
    const char *s = json_string_value(json_object_get(root, "service"));
    const char *v = json_string_value(json_object_get(root, "version"));
    snprintf(service, scap, "%s", s ? s : "");
    snprintf(version, vcap, "%s", v ? v : "");
    json_decref(root);
    return true;
}
