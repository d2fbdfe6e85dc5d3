/*
 * Evaluation of a compiled filter (filter.h; the tree is in
 * filter_internal.h) straight on the msgpack bytes of each record with the
 * bounded reader of lib/mp.h. Matching allocates nothing and never trusts the
 * record: it is checked as a whole first, so a record that fails to decode
 * never matches, whatever the filter asks for. Compilation is in
 * filter_compile.c.
 */
#include "filter_internal.h"

#include "../lib/mp.h"
#include "../lib/uuid.h"
#include "item.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

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

static bool elem_eq(const node *c, const scalar *v, bool in_list)
{
    (void)in_list;
    return scalar_equal(&c->value, v);
}

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

/* The operator table of filter_internal.h. */
const struct op_def filter_ops[OP_COUNT_] = {
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
        return any_elem(nd, &fv, filter_ops[nd->op].test);
    }
}

bool mg_filter_match(const mg_filter *f, const void *record_buf, size_t len)
{
    record rec;
    if (f == NULL || record_buf == NULL || !record_open(&rec, record_buf, len))
        return false;
    return eval_node(f->root, &rec);
}
