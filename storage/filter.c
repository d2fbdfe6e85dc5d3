/*
 * The filter language of filter.h: compiled once from JSON into an immutable
 * tree that lives in one arena, then evaluated straight on the msgpack bytes
 * of each record with the bounded reader of lib/mp.h. Matching allocates
 * nothing and never trusts the record: it is checked as a whole first, so a
 * record that fails to decode never matches, whatever the filter asks for.
 */
#include "filter.h"

#include "../lib/clock.h"
#include "../lib/mp.h"
#include "../lib/uuid.h"
#include "item.h"

#include <math.h>
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

/* ---- compiled form ------------------------------------------------------ */

typedef struct span {
    const char *s;
    uint32_t len;
} span;

/* Kinds shared by filter constants and record values, so that equality is a
 * comparison of kinds first. */
enum vkind { V_OTHER = 0, V_NULL, V_BOOL, V_NUM, V_STR, V_LIST };

typedef struct constant {
    uint8_t kind; /* enum vkind */
    bool b;
    bool is_time; /* str that parsed as a time stamp: .time holds it */
    double num;
    span str;
    mg_instant time;
    uint32_t n_items; /* V_LIST: scalars only */
    struct constant *items;
} constant;

enum field_root { FIELD_ID, FIELD_MEMORY, FIELD_METADATA };

typedef struct field {
    uint8_t root;       /* enum field_root */
    bool info_fallback; /* look in metadata.info when metadata lacks parts[0] */
    uint32_t n_parts;
    span *parts; /* the dotted name, split */
} field;

enum node_kind { NODE_AND, NODE_OR, NODE_COND };

/* like patterns are compiled to tokens: a byte (already lower-cased) or one
 * of these wildcards. */
enum { LIKE_ANY = -1, LIKE_ONE = -2 };

typedef struct node {
    uint8_t kind;     /* enum node_kind */
    uint8_t op;       /* enum filter_op, for NODE_COND */
    uint8_t cmp_mask; /* the op's, for ordering operators */
    uint32_t n_kids;
    struct node *kids;
    field field;
    constant value;
    int16_t *pattern;
    uint32_t pattern_len;
} node;

struct mg_filter {
    arena_block *arena;
    node *root;
};

/* ---- records ------------------------------------------------------------ */

typedef struct record {
    char id[MG_UUID_STRLEN + 1];
    const char *memory;
    uint32_t memory_len;
    bool has_metadata;
    mg_mp_reader metadata; /* at the metadata map */
} record;

typedef struct scalar {
    uint8_t kind; /* enum vkind, never V_LIST */
    bool b;
    double num;
    const char *s;
    uint32_t len;
} scalar;

/* Where a field was found: a value held here (id, memory) or a reader at its
 * msgpack value inside the metadata. */
typedef struct field_value {
    bool held;
    scalar sc;
    mg_mp_reader r;
} field_value;

/* Checks a metadata value the way mg_jsonmp_read would accept it (string map
 * keys, no bin/ext, finite floats), without building anything. */
static bool value_ok(mg_mp_reader *r, int depth)
{
    uint32_t n;
    double d;
    if (depth > MG_MP_MAX_DEPTH)
        return false;
    switch (mg_mp_peek(r)) {
    case MG_MP_MAP:
        if (mg_mp_read_map(r, &n))
            return false;
        for (uint32_t i = 0; i < n; i++)
            if (mg_mp_peek(r) != MG_MP_STR || mg_mp_skip(r) || !value_ok(r, depth + 1))
                return false;
        return true;
    case MG_MP_ARRAY:
        if (mg_mp_read_array(r, &n))
            return false;
        for (uint32_t i = 0; i < n; i++)
            if (!value_ok(r, depth + 1))
                return false;
        return true;
    case MG_MP_FLOAT:
        return mg_mp_read_double(r, &d) == MG_OK && isfinite(d);
    case MG_MP_NIL:
    case MG_MP_BOOL:
    case MG_MP_UINT:
    case MG_MP_INT:
    case MG_MP_STR:
        return mg_mp_skip(r) == MG_OK;
    default:
        return false;
    }
}

/* Checks the whole record and notes where its parts are. Accepts what
 * mg_item_decode accepts structurally: keys in any order, unknown keys
 * skipped, "v" optional but 1..MG_ITEM_VERSION when present, "id" a 16-byte
 * bin, "memory" a str, "metadata" (optional) a map, nothing after the map. */
static bool record_open(record *rec, const void *buf, size_t len)
{
    mg_mp_reader r;
    uint32_t n, version;
    bool have_id = false, have_memory = false;
    memset(rec, 0, sizeof *rec);
    mg_mp_reader_init(&r, buf, len);
    if (mg_mp_read_map(&r, &n))
        return false;
    for (uint32_t i = 0; i < n; i++) {
        const char *key;
        uint32_t klen;
        if (mg_mp_read_str(&r, &key, &klen))
            return false;
#define KEY(s) (klen == sizeof(s) - 1 && memcmp(key, s, klen) == 0)
        if (KEY("v")) {
            if (mg_mp_read_u32(&r, &version) || version == 0 || version > MG_ITEM_VERSION)
                return false;
        } else if (KEY("id")) {
            const uint8_t *id;
            uint32_t idlen;
            if (mg_mp_read_bin(&r, &id, &idlen) || idlen != 16)
                return false;
            mg_uuid_format(id, rec->id);
            have_id = true;
        } else if (KEY("memory") && !have_memory) {
            if (mg_mp_read_str(&r, &rec->memory, &rec->memory_len))
                return false;
            have_memory = true;
        } else if (KEY("metadata") && !rec->has_metadata) {
            rec->metadata = r;
            if (mg_mp_peek(&r) != MG_MP_MAP || !value_ok(&r, 0))
                return false;
            rec->has_metadata = true;
        } else if (mg_mp_skip(&r)) {
            return false;
        }
#undef KEY
    }
    return have_id && have_memory && mg_mp_remaining(&r) == 0;
}

/* Reads one element as a scalar; containers are skipped and come back as
 * V_OTHER, which equals nothing. */
static bool read_scalar(mg_mp_reader *r, scalar *v)
{
    memset(v, 0, sizeof *v);
    switch (mg_mp_peek(r)) {
    case MG_MP_NIL:
        v->kind = V_NULL;
        return mg_mp_read_nil(r) == MG_OK;
    case MG_MP_BOOL:
        v->kind = V_BOOL;
        return mg_mp_read_bool(r, &v->b) == MG_OK;
    case MG_MP_UINT:
    case MG_MP_INT:
    case MG_MP_FLOAT:
        v->kind = V_NUM;
        return mg_mp_read_double(r, &v->num) == MG_OK;
    case MG_MP_STR:
        v->kind = V_STR;
        return mg_mp_read_str(r, &v->s, &v->len) == MG_OK;
    default:
        return mg_mp_skip(r) == MG_OK;
    }
}

/* With r at a map, moves r to the value of `key`. */
static bool map_find(mg_mp_reader *r, const span *key)
{
    uint32_t n;
    if (mg_mp_peek(r) != MG_MP_MAP || mg_mp_read_map(r, &n))
        return false;
    for (uint32_t i = 0; i < n; i++) {
        const char *k;
        uint32_t klen;
        if (mg_mp_read_str(r, &k, &klen))
            return false;
        if (klen == key->len && memcmp(k, key->s, klen) == 0)
            return true;
        if (mg_mp_skip(r))
            return false;
    }
    return false;
}

static bool walk(mg_mp_reader *r, const span *parts, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        if (!map_find(r, &parts[i]))
            return false;
    return true;
}

static bool field_lookup(const field *fd, const record *rec, field_value *out)
{
    static const span info = {"info", 4};
    memset(out, 0, sizeof *out);
    if (fd->root != FIELD_METADATA) {
        out->held = true;
        out->sc.kind = V_STR;
        out->sc.s = fd->root == FIELD_ID ? rec->id : rec->memory;
        out->sc.len = fd->root == FIELD_ID ? MG_UUID_STRLEN : rec->memory_len;
        return true;
    }
    if (!rec->has_metadata)
        return false;
    /* A bare name is a metadata key, or else an info key: MemOS flattens info
     * into the node, keeping metadata's own keys where both have one. */
    out->r = rec->metadata;
    if (map_find(&out->r, &fd->parts[0]))
        return walk(&out->r, fd->parts + 1, fd->n_parts - 1);
    out->r = rec->metadata;
    return fd->info_fallback && map_find(&out->r, &info) && walk(&out->r, fd->parts, fd->n_parts);
}

/* ---- operators ---------------------------------------------------------- */

static int bytes_cmp(const char *a, uint32_t alen, const char *b, uint32_t blen)
{
    int c = memcmp(a, b, alen < blen ? alen : blen);
    if (c != 0)
        return c < 0 ? -1 : 1;
    return (alen > blen) - (alen < blen);
}

static bool scalar_equal(const constant *k, const scalar *v)
{
    if (k->kind != v->kind)
        return false;
    switch (k->kind) {
    case V_NULL:
        return true;
    case V_BOOL:
        return k->b == v->b;
    case V_NUM:
        return k->num == v->num;
    case V_STR:
        return k->str.len == v->len && memcmp(k->str.s, v->s, v->len) == 0;
    default:
        return false;
    }
}

static size_t utf8_next(const char *s, size_t len, size_t i)
{
    for (i++; i < len && ((unsigned char)s[i] & 0xc0) == 0x80; i++)
        ;
    return i;
}

static int ascii_lower(unsigned char c)
{
    return c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c;
}

/* SQL LIKE over the compiled tokens: greedy with one backtrack point, which is
 * exact when '%' is the only variable-length token. '_' takes one UTF-8
 * character. */
static bool like_match(const int16_t *tok, uint32_t n, const char *s, size_t len)
{
    size_t p = 0, i = 0, star_p = SIZE_MAX, star_i = 0;
    while (i < len) {
        if (p < n && tok[p] == LIKE_ANY) {
            star_p = ++p;
            star_i = i;
        } else if (p < n && tok[p] == LIKE_ONE) {
            p++;
            i = utf8_next(s, len, i);
        } else if (p < n && tok[p] == ascii_lower((unsigned char)s[i])) {
            p++;
            i++;
        } else if (star_p != SIZE_MAX) {
            p = star_p;
            i = star_i = utf8_next(s, len, star_i);
        } else {
            return false;
        }
    }
    while (p < n && tok[p] == LIKE_ANY)
        p++;
    return p == n;
}

/* Tests for one scalar of the field (the field itself, or one element when it
 * is a list: in_list says which). */
typedef bool (*elem_test)(const node *c, const scalar *v, bool in_list);

static bool elem_eq(const node *c, const scalar *v, bool in_list)
{
    (void)in_list;
    return scalar_equal(&c->value, v);
}

/* Which outcomes of a three-way comparison an ordering operator accepts. */
#define CMP_LT 1u
#define CMP_EQ 2u
#define CMP_GT 4u

static bool elem_order(const node *c, const scalar *v, bool in_list)
{
    const constant *k = &c->value;
    int cmp;
    mg_instant t;
    (void)in_list;
    if (v->kind == V_NUM && k->kind == V_NUM && !isnan(v->num)) {
        cmp = (v->num > k->num) - (v->num < k->num);
    } else if (v->kind == V_STR && k->kind == V_STR) {
        if (k->is_time && mg_clock_parse_iso8601(v->s, v->len, &t))
            cmp = mg_instant_cmp(&t, &k->time);
        else
            cmp = bytes_cmp(v->s, v->len, k->str.s, k->str.len);
    } else {
        return false;
    }
    return (c->cmp_mask & (1u << (cmp + 1))) != 0;
}

static bool elem_in(const node *c, const scalar *v, bool in_list)
{
    (void)in_list;
    for (uint32_t i = 0; i < c->value.n_items; i++)
        if (scalar_equal(&c->value.items[i], v))
            return true;
    return false;
}

static bool elem_contains(const node *c, const scalar *v, bool in_list)
{
    if (in_list)
        return scalar_equal(&c->value, v);
    return v->kind == V_STR && c->value.kind == V_STR &&
           memmem(v->s, v->len, c->value.str.s, c->value.str.len) != NULL;
}

static bool elem_like(const node *c, const scalar *v, bool in_list)
{
    (void)in_list;
    return v->kind == V_STR && like_match(c->pattern, c->pattern_len, v->s, v->len);
}

/* Applies `test` to the field, or to each element of a list field until one
 * passes. */
static bool any_elem(const node *c, field_value *f, elem_test test)
{
    scalar v;
    uint32_t n;
    if (f->held)
        return test(c, &f->sc, false);
    if (mg_mp_peek(&f->r) != MG_MP_ARRAY)
        return read_scalar(&f->r, &v) && test(c, &v, false);
    if (mg_mp_read_array(&f->r, &n))
        return false;
    for (uint32_t i = 0; i < n; i++) {
        if (!read_scalar(&f->r, &v))
            return false;
        if (test(c, &v, true))
            return true;
    }
    return false;
}

/* Equality with a list value compares the whole field, element by element in
 * order, as MemOS's backends compare arrays. */
static bool whole_list_eq(const node *c, field_value *f)
{
    uint32_t n;
    scalar v;
    if (f->held || mg_mp_peek(&f->r) != MG_MP_ARRAY || mg_mp_read_array(&f->r, &n) ||
        n != c->value.n_items)
        return false;
    for (uint32_t i = 0; i < n; i++)
        if (!read_scalar(&f->r, &v) || !scalar_equal(&c->value.items[i], &v))
            return false;
    return true;
}

enum filter_op { OP_EQ, OP_GT, OP_GTE, OP_LT, OP_LTE, OP_IN, OP_CONTAINS, OP_LIKE, OP_COUNT_ };

/* What an operator accepts as its value. */
enum value_rule {
    RULE_EQ,      /* a scalar, or a list of scalars */
    RULE_ORDERED, /* a number or a string */
    RULE_LIST,    /* a list of scalars */
    RULE_SCALAR,  /* a string, number, bool or null */
    RULE_STRING,
};

/* The one table of operators: name on the wire, the value it takes, the
 * comparison outcomes it accepts (ordering operators) and its test. */
static const struct op_def {
    const char *name;
    uint8_t rule; /* enum value_rule */
    uint8_t cmp_mask;
    elem_test test;
} ops[OP_COUNT_] = {
    [OP_EQ] = {"=", RULE_EQ, 0, elem_eq},
    [OP_GT] = {"gt", RULE_ORDERED, CMP_GT, elem_order},
    [OP_GTE] = {"gte", RULE_ORDERED, CMP_GT | CMP_EQ, elem_order},
    [OP_LT] = {"lt", RULE_ORDERED, CMP_LT, elem_order},
    [OP_LTE] = {"lte", RULE_ORDERED, CMP_LT | CMP_EQ, elem_order},
    [OP_IN] = {"in", RULE_LIST, 0, elem_in},
    [OP_CONTAINS] = {"contains", RULE_SCALAR, 0, elem_contains},
    [OP_LIKE] = {"like", RULE_STRING, 0, elem_like},
};

/* ---- evaluation --------------------------------------------------------- */

static bool eval_node(const node *nd, const record *rec)
{
    field_value fv;
    switch (nd->kind) {
    case NODE_AND:
        for (uint32_t i = 0; i < nd->n_kids; i++)
            if (!eval_node(&nd->kids[i], rec))
                return false;
        return true;
    case NODE_OR:
        for (uint32_t i = 0; i < nd->n_kids; i++)
            if (eval_node(&nd->kids[i], rec))
                return true;
        return false;
    default:
        if (!field_lookup(&nd->field, rec, &fv))
            return false;
        if (nd->value.kind == V_LIST && nd->op == OP_EQ)
            return whole_list_eq(nd, &fv);
        return any_elem(nd, &fv, ops[nd->op].test);
    }
}

bool mg_filter_match(const mg_filter *f, const void *record_buf, size_t len)
{
    record rec;
    if (f == NULL || record_buf == NULL || !record_open(&rec, record_buf, len))
        return false;
    return eval_node(f->root, &rec);
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
    out->cmp_mask = ops[op].cmp_mask;
    out->field = *fd;
    switch (ops[op].rule) {
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
        if (strlen(ops[op].name) == len && memcmp(ops[op].name, name, len) == 0) {
            size_t mark = path_push(cc, ".%s", ops[op].name);
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
                                 ops[op].name);
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
