#include "compat_match.h"

#include <ctype.h>
#include <inttypes.h>
#include <math.h>
#include <regex.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 64 /* $like chains and nesting; stops a shape that uses itself */

/* ---- expansion -------------------------------------------------------------- */

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* The value at "name.part.part..." in refs, borrowed; NULL with err set. */
static const json_t *resolve_ref(const char *spec, size_t spec_len, const json_t *refs, char *err,
                                 size_t errlen)
{
    char buf[512];
    if (spec_len == 0 || spec_len >= sizeof buf) {
        set_err(err, errlen, "bad reference \"%.*s\"", (int)spec_len, spec);
        return NULL;
    }
    memcpy(buf, spec, spec_len);
    buf[spec_len] = '\0';
    char *save = NULL;
    char *part = strtok_r(buf, ".", &save);
    const json_t *v = part ? json_object_get(refs, part) : NULL;
    if (v == NULL) {
        set_err(err, errlen, "reference \"%.*s\": no earlier exchange named \"%s\"", (int)spec_len,
                spec, part ? part : "");
        return NULL;
    }
    while ((part = strtok_r(NULL, ".", &save)) != NULL) {
        const json_t *next = NULL;
        if (json_is_object(v)) {
            next = json_object_get(v, part);
        } else if (json_is_array(v) && isdigit((unsigned char)part[0])) {
            char *end;
            unsigned long i = strtoul(part, &end, 10);
            if (*end == '\0')
                next = json_array_get(v, (size_t)i);
        }
        if (next == NULL) {
            set_err(err, errlen, "reference \"%.*s\": nothing at \"%s\"", (int)spec_len, spec,
                    part);
            return NULL;
        }
        v = next;
    }
    return v;
}

/* A growing string for interpolation. */
typedef struct strbuf {
    char *p;
    size_t len, cap;
} strbuf;

static bool sb_add(strbuf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = (b->len + n + 1) * 2;
        char *grown = realloc(b->p, cap);
        if (grown == NULL)
            return false;
        b->p = grown;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
    return true;
}

/* "...{$ref:a.b}..." with each reference replaced by its text. */
static json_t *interpolate(const char *s, const json_t *refs, char *err, size_t errlen)
{
    static const char open[] = "{$ref:";
    strbuf b = {0};
    json_t *out = NULL;
    const char *at;
    while ((at = strstr(s, open)) != NULL) {
        const char *spec = at + sizeof open - 1;
        const char *close = strchr(spec, '}');
        if (close == NULL) {
            set_err(err, errlen, "unterminated \"{$ref:\" in \"%s\"", s);
            goto done;
        }
        const json_t *v = resolve_ref(spec, (size_t)(close - spec), refs, err, errlen);
        if (v == NULL)
            goto done;
        char num[64];
        const char *text;
        if (json_is_string(v)) {
            text = json_string_value(v);
        } else if (json_is_integer(v)) {
            snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
            text = num;
        } else if (json_is_real(v)) {
            snprintf(num, sizeof num, "%.17g", json_real_value(v));
            text = num;
        } else {
            set_err(err, errlen, "reference \"%.*s\" is not a string or a number",
                    (int)(close - spec), spec);
            goto done;
        }
        if (!sb_add(&b, s, (size_t)(at - s)) || !sb_add(&b, text, strlen(text)))
            goto oom;
        s = close + 1;
    }
    if (!sb_add(&b, s, strlen(s)))
        goto oom;
    out = json_string(b.p);
    goto done;
oom:
    set_err(err, errlen, "out of memory");
done:
    free(b.p);
    return out;
}

static json_t *expand_string(const char *s, const json_t *refs, char *err, size_t errlen)
{
    if (strncmp(s, "$ref:", 5) == 0) {
        const json_t *v = resolve_ref(s + 5, strlen(s + 5), refs, err, errlen);
        return v ? json_deep_copy(v) : NULL;
    }
    if (strncmp(s, "$ref_id:", 8) == 0) {
        const json_t *v = resolve_ref(s + 8, strlen(s + 8), refs, err, errlen);
        if (v == NULL)
            return NULL;
        if (!json_is_string(v)) {
            set_err(err, errlen, "\"%s\" is not a string id", s);
            return NULL;
        }
        const char *id = json_string_value(v);
        char ref[80];
        snprintf(ref, sizeof ref, "[%.*s]", (int)strcspn(id, "-"), id);
        return json_string(ref);
    }
    if (strstr(s, "{$ref:") != NULL)
        return interpolate(s, refs, err, errlen);
    return json_string(s);
}

static json_t *expand(const json_t *t, const json_t *shapes, const json_t *refs, int depth,
                      char *err, size_t errlen);

/* {"$like": name, k: v...}: the shape with the keys set (or removed) on top. */
static json_t *expand_like(const json_t *t, const json_t *shapes, const json_t *refs, int depth,
                           char *err, size_t errlen)
{
    const json_t *name = json_object_get(t, "$like");
    const json_t *shape =
        json_is_string(name) ? json_object_get(shapes, json_string_value(name)) : NULL;
    if (shape == NULL) {
        set_err(err, errlen, "unknown shape %s in \"$like\"",
                json_is_string(name) ? json_string_value(name) : "(not a string)");
        return NULL;
    }
    json_t *out = expand(shape, shapes, refs, depth + 1, err, errlen);
    if (out == NULL)
        return NULL;
    if (!json_is_object(out)) {
        set_err(err, errlen, "shape %s is not an object", json_string_value(name));
        json_decref(out);
        return NULL;
    }
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)t, k, v)
    {
        if (strcmp(k, "$like") == 0)
            continue;
        if (json_is_string(v) && strcmp(json_string_value(v), "$absent") == 0) {
            json_object_del(out, k);
            continue;
        }
        json_t *e = expand(v, shapes, refs, depth + 1, err, errlen);
        if (e == NULL) {
            json_decref(out);
            return NULL;
        }
        json_object_set_new(out, k, e);
    }
    return out;
}

static json_t *expand(const json_t *t, const json_t *shapes, const json_t *refs, int depth,
                      char *err, size_t errlen)
{
    if (depth > MAX_DEPTH) {
        set_err(err, errlen, "templates nested more than %d deep (a shape using itself?)",
                MAX_DEPTH);
        return NULL;
    }
    if (json_is_string(t))
        return expand_string(json_string_value(t), refs, err, errlen);
    if (json_is_object(t)) {
        if (json_object_get(t, "$like") != NULL)
            return expand_like(t, shapes, refs, depth, err, errlen);
        json_t *out = json_object();
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)t, k, v)
        {
            json_t *e = expand(v, shapes, refs, depth + 1, err, errlen);
            if (e == NULL) {
                json_decref(out);
                return NULL;
            }
            json_object_set_new(out, k, e);
        }
        return out;
    }
    if (json_is_array(t)) {
        json_t *out = json_array();
        size_t i;
        json_t *v;
        json_array_foreach(t, i, v)
        {
            json_t *e = expand(v, shapes, refs, depth + 1, err, errlen);
            if (e == NULL) {
                json_decref(out);
                return NULL;
            }
            json_array_append_new(out, e);
        }
        return out;
    }
    return json_deep_copy(t);
}

json_t *compat_expand(const json_t *tmpl, const json_t *shapes, const json_t *refs, char *err,
                      size_t errlen)
{
    return expand(tmpl, shapes, refs, 0, err, errlen);
}

/* ---- matching --------------------------------------------------------------- */

typedef struct match_ctx {
    compat_report_fn *fn;
    void *ud;
    size_t n;
} match_ctx;

static const char *type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "a list";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an int";
    case JSON_REAL:
        return "a float";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a bool";
    case JSON_NULL:
        return "null";
    }
    return "?";
}

/* Reports one difference; `got` may be NULL (a missing key). */
static void differ(match_ctx *c, const char *path, const char *want, const json_t *got)
{
    c->n++;
    if (c->fn == NULL)
        return;
    char text[200] = "(missing key)";
    if (got != NULL) {
        /* 15 digits: 0.99 shows as 0.99, not 0.98999999999999999. */
        char *dump = json_dumps(got, JSON_ENCODE_ANY | JSON_COMPACT | JSON_REAL_PRECISION(15));
        const char *body = dump ? dump : "?";
        if (strlen(body) > 150)
            snprintf(text, sizeof text, "%s %.150s...", type_name(got), body);
        else
            snprintf(text, sizeof text, "%s %s", type_name(got), body);
        free(dump);
    }
    c->fn(c->ud, path, want, text);
}

static void differ_value(match_ctx *c, const char *path, const json_t *want, const json_t *got)
{
    char text[200];
    char *dump = json_dumps(want, JSON_ENCODE_ANY | JSON_COMPACT | JSON_REAL_PRECISION(15));
    const char *body = dump ? dump : "?";
    snprintf(text, sizeof text, "%s %.150s%s", type_name(want), body,
             strlen(body) > 150 ? "..." : "");
    free(dump);
    differ(c, path, text, got);
}

/* True when the whole of s matches the POSIX extended regular expression. */
static bool full_match(const char *re, const char *s, bool *bad_re)
{
    char anchored[1024];
    snprintf(anchored, sizeof anchored, "^(%s)$", re);
    regex_t rx;
    if (regcomp(&rx, anchored, REG_EXTENDED | REG_NOSUB) != 0) {
        *bad_re = true;
        return false;
    }
    bool ok = regexec(&rx, s, 0, NULL, 0) == 0;
    regfree(&rx);
    return ok;
}

static const struct {
    const char *name;
    const char *re; /* for strings; NULL: a type check */
} patterns[] = {
    {"<uuid>", "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"},
    {"<timestamp>", "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,6})?"},
    {"<ref_id>", "\\[[0-9a-f]{8}\\]"},
};

/* A placeholder's verdict: -1 when `want` is no placeholder, else 1 when
 * `got` fits it and 0 when not (reported). */
static int match_placeholder(match_ctx *c, const char *want, const json_t *got, const char *path)
{
    size_t n = strlen(want);
    if (n < 3 || want[0] != '<' || want[n - 1] != '>')
        return -1;
    bool ok;
    if (strcmp(want, "<any>") == 0)
        ok = true;
    else if (strcmp(want, "<string>") == 0)
        ok = json_is_string(got);
    else if (strcmp(want, "<int>") == 0)
        ok = json_is_integer(got);
    else if (strcmp(want, "<float>") == 0)
        ok = json_is_real(got);
    else if (strcmp(want, "<number>") == 0)
        ok = json_is_number(got);
    else if (strcmp(want, "<bool>") == 0)
        ok = json_is_boolean(got);
    else if (strcmp(want, "<object>") == 0)
        ok = json_is_object(got);
    else if (strcmp(want, "<array>") == 0)
        ok = json_is_array(got);
    else if (strncmp(want, "<re:", 4) == 0) {
        char re[1000];
        snprintf(re, sizeof re, "%.*s", (int)(n - 5), want + 4);
        bool bad = false;
        ok = json_is_string(got) && full_match(re, json_string_value(got), &bad);
        if (bad) {
            char msg[1100];
            snprintf(msg, sizeof msg, "%s (not a valid POSIX extended regular expression)", want);
            differ(c, path, msg, got);
            return 0;
        }
    } else {
        size_t i;
        for (i = 0; i < sizeof patterns / sizeof patterns[0]; i++)
            if (strcmp(want, patterns[i].name) == 0)
                break;
        if (i == sizeof patterns / sizeof patterns[0])
            return -1; /* "<...>" that names no placeholder: a plain string */
        bool bad = false;
        ok = json_is_string(got) && full_match(patterns[i].re, json_string_value(got), &bad);
    }
    if (!ok)
        differ(c, path, want, got);
    return ok ? 1 : 0;
}

static void match(match_ctx *c, const json_t *want, const json_t *got, const char *path);

static bool is_list_form(const json_t *want)
{
    return json_is_object(want) &&
           (json_object_get(want, "$each") != NULL || json_object_get(want, "$head") != NULL);
}

/* {"$each": shape, "$min": n, "$max": m, "$head": [...]} against a list. */
static void match_list_form(match_ctx *c, const json_t *spec, const json_t *got, const char *path)
{
    const json_t *each = json_object_get(spec, "$each");
    const json_t *head = json_object_get(spec, "$head");
    const json_t *min = json_object_get(spec, "$min");
    const json_t *max = json_object_get(spec, "$max");
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)spec, k, v)
    {
        if (strcmp(k, "$each") && strcmp(k, "$head") && strcmp(k, "$min") && strcmp(k, "$max")) {
            char msg[160];
            snprintf(msg, sizeof msg, "(fixture error) unknown key \"%s\" in a $each form", k);
            differ(c, path, msg, got);
            return;
        }
    }
    if ((head && !json_is_array(head)) || (min && !json_is_integer(min)) ||
        (max && !json_is_integer(max))) {
        differ(c, path, "(fixture error) $head must be a list, $min and $max integers", got);
        return;
    }
    if (!json_is_array(got)) {
        differ(c, path, "a list", got);
        return;
    }
    size_t n = json_array_size(got);
    size_t hn = json_array_size(head);
    size_t lo = min ? (size_t)json_integer_value(min) : hn;
    size_t hi = max ? (size_t)json_integer_value(max) : each ? SIZE_MAX : hn;
    if (n < lo || n > hi) {
        char msg[160];
        if (hi == SIZE_MAX)
            snprintf(msg, sizeof msg, "a list of at least %zu elements (got %zu)", lo, n);
        else if (lo == hi)
            snprintf(msg, sizeof msg, "a list of %zu elements (got %zu)", lo, n);
        else
            snprintf(msg, sizeof msg, "a list of %zu to %zu elements (got %zu)", lo, hi, n);
        differ(c, path, msg, got);
    }
    char sub[1024];
    for (size_t i = 0; i < n; i++) {
        snprintf(sub, sizeof sub, "%s[%zu]", path, i);
        if (i < hn)
            match(c, json_array_get(head, i), json_array_get(got, i), sub);
        else if (each != NULL)
            match(c, each, json_array_get(got, i), sub);
    }
}

static void match_object(match_ctx *c, const json_t *want, const json_t *got, const char *path)
{
    if (!json_is_object(got)) {
        differ(c, path, "an object", got);
        return;
    }
    char sub[1024];
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)want, k, v)
    {
        snprintf(sub, sizeof sub, "%s.%s", path, k);
        const json_t *g = json_object_get(got, k);
        if (g == NULL)
            differ(c, sub, "this key", NULL);
        else
            match(c, v, g, sub);
    }
    json_object_foreach((json_t *)got, k, v)
    {
        if (json_object_get(want, k) == NULL) {
            snprintf(sub, sizeof sub, "%s.%s", path, k);
            differ(c, sub, "no such key (an extra key)", v);
        }
    }
}

static void match(match_ctx *c, const json_t *want, const json_t *got, const char *path)
{
    if (is_list_form(want)) {
        match_list_form(c, want, got, path);
        return;
    }
    switch (json_typeof(want)) {
    case JSON_OBJECT:
        match_object(c, want, got, path);
        return;
    case JSON_ARRAY: {
        if (!json_is_array(got)) {
            differ(c, path, "a list", got);
            return;
        }
        size_t wn = json_array_size(want), gn = json_array_size(got);
        if (wn != gn) {
            char msg[96];
            snprintf(msg, sizeof msg, "a list of %zu elements (got %zu)", wn, gn);
            differ(c, path, msg, got);
        }
        char sub[1024];
        for (size_t i = 0; i < wn && i < gn; i++) {
            snprintf(sub, sizeof sub, "%s[%zu]", path, i);
            match(c, json_array_get(want, i), json_array_get(got, i), sub);
        }
        return;
    }
    case JSON_STRING: {
        const char *w = json_string_value(want);
        if (match_placeholder(c, w, got, path) >= 0)
            return;
        if (!json_is_string(got) || strcmp(w, json_string_value(got)) != 0)
            differ_value(c, path, want, got);
        return;
    }
    case JSON_INTEGER:
        if (!json_is_integer(got) || json_integer_value(got) != json_integer_value(want))
            differ_value(c, path, want, got);
        return;
    case JSON_REAL: {
        double w = json_real_value(want);
        if (!json_is_real(got) ||
            fabs(json_real_value(got) - w) > 1e-9 * (fabs(w) > 1.0 ? fabs(w) : 1.0))
            differ_value(c, path, want, got);
        return;
    }
    case JSON_TRUE:
    case JSON_FALSE:
    case JSON_NULL:
        if (got == NULL || json_typeof(got) != json_typeof(want))
            differ_value(c, path, want, got);
        return;
    }
}

size_t compat_match(const json_t *want, const json_t *got, const char *path, compat_report_fn *fn,
                    void *ud)
{
    match_ctx c = {.fn = fn, .ud = ud, .n = 0};
    match(&c, want, got, path);
    return c.n;
}
