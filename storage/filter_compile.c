/*
 * Compilation of the filter language of filter.h: JSON in, the immutable tree
 * of filter_internal.h out, with every part of it in one arena. An error
 * names the bad part by its path ("filter.and[1].created_at"). Evaluation is
 * in filter_match.c.
 */
#include "filter_internal.h"

#include "../lib/uuid.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- arena -------------------------------------------------------------- */

/* Everything a compiled filter owns comes from these blocks, so that freeing
 * it is one walk and a failed compile cannot leak a half-built tree. */
typedef struct arena_block {
    struct arena_block *next;
    size_t used, cap;
    max_align_t data[];
} arena_block;

#define ARENA_CHUNK 4096

static void *arena_alloc(arena_block **head, size_t size)
{
    size = (size + sizeof(max_align_t) - 1) / sizeof(max_align_t) * sizeof(max_align_t);
    arena_block *b = *head;
    if (b == NULL || b->cap - b->used < size) {
        size_t cap = size > ARENA_CHUNK ? size : ARENA_CHUNK;
        if ((b = malloc(sizeof *b + cap)) == NULL)
            return NULL;
        b->next = *head;
        b->used = 0;
        b->cap = cap;
        *head = b;
    }
    void *p = (char *)b->data + b->used;
    b->used += size;
    return memset(p, 0, size);
}

static void arena_free(arena_block *b)
{
    while (b) {
        arena_block *next = b->next;
        free(b);
        b = next;
    }
}

void mg_filter_free(mg_filter *f)
{
    if (f == NULL)
        return;
    arena_free(f->arena);
    free(f);
}

/* ---- compilation -------------------------------------------------------- */

typedef struct compiler {
    arena_block **arena;
    mg_error *err;
    unsigned nodes;
    size_t path_len;
    char path[160]; /* "filter.and[1].created_at" for messages */
} compiler;

static int fail(compiler *cc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int fail(compiler *cc, const char *fmt, ...)
{
    char msg[MG_ERRMSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return mg_error_set(cc->err, MG_EFILTER, "%s: %s", cc->path, msg);
}

static int out_of_memory(compiler *cc)
{
    return mg_error_set(cc->err, MG_ENOMEM, "%s: out of memory compiling the filter", cc->path);
}

/* Appends to the path and returns the old length, for path_pop. */
static size_t path_push(compiler *cc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static size_t path_push(compiler *cc, const char *fmt, ...)
{
    size_t mark = cc->path_len, room = sizeof cc->path - mark;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(cc->path + mark, room, fmt, ap);
    va_end(ap);
    cc->path_len = n < 0 ? mark : (size_t)n >= room ? sizeof cc->path - 1 : mark + (size_t)n;
    return mark;
}

static void path_pop(compiler *cc, size_t mark)
{
    cc->path_len = mark;
    cc->path[mark] = '\0';
}

static void *cc_alloc(compiler *cc, size_t n, size_t size)
{
    return n > SIZE_MAX / size ? NULL : arena_alloc(cc->arena, n * size);
}

static int count_node(compiler *cc)
{
    if (++cc->nodes > MG_FILTER_MAX_NODES)
        return fail(cc, "more than %d conditions and groups", MG_FILTER_MAX_NODES);
    return MG_OK;
}

/* Makes *out a group of n children (their slots zeroed) and returns the
 * slots, or NULL with the error set. */
static node *make_group(compiler *cc, node *out, uint8_t kind, size_t n, int *rc)
{
    if ((*rc = count_node(cc)))
        return NULL;
    if (n > MG_FILTER_MAX_NODES) {
        *rc = fail(cc, "more than %d conditions and groups", MG_FILTER_MAX_NODES);
        return NULL;
    }
    out->kind = kind;
    out->n_kids = (uint32_t)n;
    if ((out->kids = cc_alloc(cc, n ? n : 1, sizeof *out->kids)) == NULL)
        *rc = out_of_memory(cc);
    return out->kids;
}

static int copy_str(compiler *cc, const json_t *j, span *out)
{
    size_t len = json_string_length(j);
    if (len > UINT32_MAX)
        return fail(cc, "string too long");
    char *s = cc_alloc(cc, len + 1, 1);
    if (s == NULL)
        return out_of_memory(cc);
    memcpy(s, json_string_value(j), len);
    out->s = s;
    out->len = (uint32_t)len;
    return MG_OK;
}

/* Converts a scalar JSON value; lists and objects are the caller's to refuse.
 * A UUID compared with "id" is made canonical (lower case) here, once. */
static int compile_scalar(compiler *cc, const json_t *j, const field *fd, constant *k)
{
    uint8_t id[16];
    char canon[MG_UUID_STRLEN + 1];
    switch (json_typeof(j)) {
    case JSON_NULL:
        k->kind = V_NULL;
        return MG_OK;
    case JSON_TRUE:
    case JSON_FALSE:
        k->kind = V_BOOL;
        k->b = json_is_true(j);
        return MG_OK;
    case JSON_INTEGER:
    case JSON_REAL:
        k->kind = V_NUM;
        k->num = json_number_value(j);
        return MG_OK;
    case JSON_STRING: {
        k->kind = V_STR;
        int rc = copy_str(cc, j, &k->str);
        if (rc)
            return rc;
        if (fd->root == FIELD_ID && mg_uuid_parse(k->str.s, k->str.len, id))
            memcpy((char *)k->str.s, mg_uuid_format(id, canon), MG_UUID_STRLEN);
        k->is_time = mg_clock_parse_iso8601(k->str.s, k->str.len, &k->time);
        return MG_OK;
    }
    default:
        return fail(cc, "a list or an object is not a value to compare with");
    }
}

static int compile_list(compiler *cc, const json_t *j, const field *fd, constant *k)
{
    size_t n = json_array_size(j);
    if (n > UINT32_MAX)
        return fail(cc, "list too long");
    k->kind = V_LIST;
    k->n_items = (uint32_t)n;
    if ((k->items = cc_alloc(cc, n ? n : 1, sizeof *k->items)) == NULL)
        return out_of_memory(cc);
    for (size_t i = 0; i < n; i++) {
        const json_t *item = json_array_get(j, i);
        size_t mark = path_push(cc, "[%zu]", i);
        int rc = json_is_array(item) || json_is_object(item)
                     ? fail(cc, "list elements must be strings, numbers, booleans or null")
                     : compile_scalar(cc, item, fd, &k->items[i]);
        if (rc)
            return rc;
        path_pop(cc, mark);
    }
    return MG_OK;
}

/* Turns a like value into tokens: it matches anywhere in the string, as MemOS
 * runs like as CONTAINS / LIKE '%v%', so it is wrapped in '%'. */
static int compile_like(compiler *cc, node *c)
{
    const span *p = &c->value.str;
    int16_t *tok = cc_alloc(cc, (size_t)p->len + 2, sizeof *tok);
    uint32_t n = 0;
    if (tok == NULL)
        return out_of_memory(cc);
    tok[n++] = LIKE_ANY;
    for (uint32_t i = 0; i < p->len; i++) {
        unsigned char ch = (unsigned char)p->s[i];
        if (ch == '%') {
            if (tok[n - 1] != LIKE_ANY)
                tok[n++] = LIKE_ANY;
        } else if (ch == '_') {
            tok[n++] = LIKE_ONE;
        } else {
            if (ch == '\\' && i + 1 < p->len)
                ch = (unsigned char)p->s[++i];
            tok[n++] = (int16_t)ascii_lower(ch);
        }
    }
    if (tok[n - 1] != LIKE_ANY)
        tok[n++] = LIKE_ANY;
    c->pattern = tok;
    c->pattern_len = n;
    return MG_OK;
}

static int compile_cond(compiler *cc, const field *fd, enum filter_op op, const json_t *v,
                        node *out)
{
    int rc = count_node(cc);
    if (rc)
        return rc;
    out->kind = NODE_COND;
    out->op = (uint8_t)op;
    out->cmp_mask = filter_ops[op].cmp_mask;
    out->field = *fd;
    switch (filter_ops[op].rule) {
    case RULE_EQ:
        if (json_is_array(v))
            return compile_list(cc, v, fd, &out->value);
        break;
    case RULE_ORDERED:
        if (!json_is_number(v) && !json_is_string(v))
            return fail(cc, "needs a number or a string");
        break;
    case RULE_LIST:
        if (!json_is_array(v))
            return fail(cc, "needs a list of values");
        return compile_list(cc, v, fd, &out->value);
    case RULE_SCALAR:
        if (json_is_array(v) || json_is_object(v))
            return fail(cc, "needs a single value, not a list or an object");
        break;
    case RULE_STRING:
        if (!json_is_string(v))
            return fail(cc, "needs a string");
        break;
    }
    if ((rc = compile_scalar(cc, v, fd, &out->value)))
        return rc;
    return op == OP_LIKE ? compile_like(cc, out) : MG_OK;
}

/* Splits a field name into its dotted parts and finds its root. */
static int compile_field_name(compiler *cc, const char *name, size_t len, field *fd)
{
    uint32_t n = 1;
    if (len == 0)
        return fail(cc, "empty field name");
    if (len > UINT32_MAX)
        return fail(cc, "field name too long");
    if ((len == 2 && memcmp(name, "id", 2) == 0) || (len == 6 && memcmp(name, "memory", 6) == 0)) {
        fd->root = len == 2 ? FIELD_ID : FIELD_MEMORY;
        return MG_OK;
    }
    for (size_t i = 0; i < len; i++)
        n += name[i] == '.';
    fd->root = FIELD_METADATA;
    char *copy = cc_alloc(cc, len + 1, 1); /* the JSON is not retained */
    if (copy == NULL || (fd->parts = cc_alloc(cc, n, sizeof *fd->parts)) == NULL)
        return out_of_memory(cc);
    const char *start = memcpy(copy, name, len), *end = copy + len;
    for (uint32_t k = 0; k < n; k++) {
        const char *dot = memchr(start, '.', (size_t)(end - start));
        const char *stop = dot ? dot : end;
        if (stop == start)
            return fail(cc, "empty part in a dotted field name");
        fd->parts[k] = (span){start, (uint32_t)(stop - start)};
        start = stop + 1;
    }
    fd->n_parts = n;
    fd->info_fallback = !(fd->parts[0].len == 4 && memcmp(fd->parts[0].s, "info", 4) == 0);
    return MG_OK;
}

static int compile_op(compiler *cc, const field *fd, const char *name, size_t len,
                      const json_t *v, node *out)
{
    for (int op = 0; op < OP_COUNT_; op++) {
        if (strlen(filter_ops[op].name) == len && memcmp(filter_ops[op].name, name, len) == 0) {
            size_t mark = path_push(cc, ".%s", filter_ops[op].name);
            int rc = compile_cond(cc, fd, (enum filter_op)op, v, out);
            if (rc == MG_OK)
                path_pop(cc, mark);
            return rc;
        }
    }
    char known[96];
    size_t used = 0;
    for (int op = 0; op < OP_COUNT_; op++)
        used += (size_t)snprintf(known + used, sizeof known - used, "%s%s", op ? " " : "",
                                 filter_ops[op].name);
    return fail(cc, "unknown operator \"%.*s\" (known: %s)", (int)(len > 64 ? 64 : len), name,
                known);
}

/* {"field": value} or {"field": {"op": value, ...}} (the ops AND-ed). */
static int compile_field(compiler *cc, const char *name, size_t len, const json_t *v, node *out)
{
    field fd = {0};
    int rc = compile_field_name(cc, name, len, &fd);
    if (rc)
        return rc;
    if (!json_is_object(v))
        return compile_cond(cc, &fd, OP_EQ, v, out);
    size_t n = json_object_size(v);
    if (n == 0)
        return fail(cc, "needs at least one operator");
    node *slot = n == 1 ? out : make_group(cc, out, NODE_AND, n, &rc);
    if (slot == NULL)
        return rc;
    for (void *it = json_object_iter((json_t *)v); it; it = json_object_iter_next((json_t *)v, it))
        if ((rc = compile_op(cc, &fd, json_object_iter_key(it), json_object_iter_key_len(it),
                             json_object_iter_value(it), slot++)))
            return rc;
    return MG_OK;
}

static int compile_object(compiler *cc, const json_t *obj, unsigned depth, node *out);

/* {"and": [...]} / {"or": [...]}. An empty list is dropped, as MemOS drops
 * it, so it matches everything. */
static int compile_group(compiler *cc, bool is_or, const json_t *list, unsigned depth,
                         node *out)
{
    int rc;
    if (!json_is_array(list))
        return fail(cc, "needs a list of conditions");
    if (depth >= MG_FILTER_MAX_DEPTH)
        return fail(cc, "and/or nested deeper than %d levels", MG_FILTER_MAX_DEPTH);
    size_t n = json_array_size(list);
    node *kids = make_group(cc, out, n > 0 && is_or ? NODE_OR : NODE_AND, n, &rc);
    if (kids == NULL)
        return rc;
    for (size_t i = 0; i < n; i++) {
        const json_t *item = json_array_get(list, i);
        size_t mark = path_push(cc, "[%zu]", i);
        rc = json_is_object(item) ? compile_object(cc, item, depth + 1, &kids[i])
                                  : fail(cc, "must be an object");
        if (rc)
            return rc;
        path_pop(cc, mark);
    }
    return MG_OK;
}

/* An object is the AND of its entries; one entry stands for itself. */
static int compile_object(compiler *cc, const json_t *obj, unsigned depth, node *out)
{
    size_t n = json_object_size(obj);
    int rc = MG_OK;
    node *slot = n == 1 ? out : make_group(cc, out, NODE_AND, n, &rc);
    if (slot == NULL)
        return rc;
    for (void *it = json_object_iter((json_t *)obj); it;
         it = json_object_iter_next((json_t *)obj, it)) {
        const char *key = json_object_iter_key(it);
        size_t klen = json_object_iter_key_len(it);
        const json_t *v = json_object_iter_value(it);
        bool is_and = klen == 3 && memcmp(key, "and", 3) == 0;
        bool is_or = klen == 2 && memcmp(key, "or", 2) == 0;
        size_t mark = path_push(cc, "%s%.*s", klen ? "." : "", (int)(klen > 64 ? 64 : klen), key);
        rc = is_and || is_or ? compile_group(cc, is_or, v, depth, slot++)
                             : compile_field(cc, key, klen, v, slot++);
        if (rc)
            return rc;
        path_pop(cc, mark);
    }
    return MG_OK;
}

int mg_filter_compile(const json_t *json, mg_filter **out, mg_error *err)
{
    int rc;
    compiler cc = {.err = err, .path = "filter", .path_len = 6};
    mg_filter *f = calloc(1, sizeof *f);
    if (f == NULL)
        return mg_error_set(err, MG_ENOMEM, "out of memory compiling a filter");
    cc.arena = &f->arena;
    if (!json_is_object(json)) {
        rc = fail(&cc, "must be an object");
        goto err_free_filter;
    }
    if ((f->root = cc_alloc(&cc, 1, sizeof *f->root)) == NULL) {
        rc = out_of_memory(&cc);
        goto err_free_filter;
    }
    if ((rc = compile_object(&cc, json, 0, f->root)))
        goto err_free_filter;
    *out = f;
    return MG_OK;

err_free_filter:
    mg_filter_free(f);
    return rc;
}
