/*
 * storage/filter: every operator both ways, the field rules (id, memory,
 * metadata, info, dotted names), and/or nesting, every compile error with
 * the part it names, and records that are truncated, corrupt or random.
 *
 * Filters are written with ' for " to keep them readable; none of the
 * filters here needs a literal '.
 */
#include "storage/filter.h"
#include "storage/item.h"
#include "lib/jsonmp.h"
#include "lib/uuid.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#define ID "0f8fad5b-d9cb-469f-a165-70867728950e"

static const char *const metadata_json =
    "{'user_id': 'u1', 'session_id': 's1', 'status': 'activated',"
    " 'memory_type': 'LongTermMemory', 'key': 'coffee preference',"
    " 'tags': ['mode:fast', 'drinks', 'morning'], 'confidence': 0.99,"
    " 'created_at': '2026-01-01T10:00:00.000000', 'updated_at': '2026-01-02 08:30:00',"
    " 'usage': [], 'count': 3, 'ratio': 2.5, 'active': true, 'deleted_at': null,"
    " 'scores': [1, 2.5, 7], 'pair': ['a', 'b'], 'emoji': 'caf\\u00e9 \\u2615 ok',"
    " 'info': {'biz_id': 'order_123', 'scene': 'Payment', 'key': 'shadowed', 'level': 4,"
    "          'nested': {'x': 'deep'}},"
    " 'sources': [{'type': 'chat', 'role': 'user'}],"
    " 'a': {'b': {'c': 'abc', 'n': 7}, 'flat': 1}}";

/* The record every test matches against. */
static char *rec;
static size_t rec_len;

/* Replaces ' with " so that JSON can be written inside C strings. */
static json_t *json_of(const char *text)
{
    char *copy = strdup(text);
    assert_non_null(copy);
    for (char *p = copy; *p; p++)
        if (*p == '\'')
            *p = '"';
    json_error_t jerr;
    json_t *j = json_loads(copy, JSON_DECODE_ANY, &jerr);
    if (j == NULL)
        fail_msg("bad test JSON %s: %s", copy, jerr.text);
    free(copy);
    return j;
}

static char *encode_item(const char *id, const char *memory, const char *md, size_t *len)
{
    mg_item it = {0};
    char *buf = NULL;
    assert_true(mg_uuid_parse(id, strlen(id), it.id));
    it.memory = strdup(memory);
    it.memory_len = strlen(memory);
    it.metadata = json_of(md);
    assert_int_equal(mg_item_encode(&it, &buf, len), MG_OK);
    mg_item_clear(&it);
    return buf;
}

static int setup(void **state)
{
    (void)state;
    rec = encode_item(ID, "User prefers dark roast Coffee in the morning", metadata_json,
                      &rec_len);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    free(rec);
    return 0;
}

static mg_filter *compile_ok(const char *text)
{
    json_t *j = json_of(text);
    mg_filter *f = NULL;
    mg_error err = {0};
    int rc = mg_filter_compile(j, &f, &err);
    json_decref(j);
    if (rc != MG_OK)
        fail_msg("compiling %s: %s %s", text, mg_errname(rc), err.msg);
    assert_non_null(f);
    return f;
}

static bool match_buf(const char *text, const void *buf, size_t len)
{
    mg_filter *f = compile_ok(text);
    bool m = mg_filter_match(f, buf, len);
    mg_filter_free(f);
    return m;
}

#define MATCH(text) assert_true(match_buf(text, rec, rec_len))
#define NO_MATCH(text) assert_false(match_buf(text, rec, rec_len))

/* Expects compiling `text` to fail with `code` and a message containing
 * `names`; *out must stay untouched. */
static void expect_bad(const char *text, int code, const char *names)
{
    json_t *j = text ? json_of(text) : NULL;
    mg_filter *f = (mg_filter *)&expect_bad; /* a sentinel that must survive */
    mg_error err = {0};
    int rc = mg_filter_compile(j, &f, &err);
    json_decref(j);
    if (rc != code || strstr(err.msg, names) == NULL)
        fail_msg("%s: got %s \"%s\", wanted %s naming \"%s\"", text ? text : "(NULL)",
                 mg_errname(rc), err.msg, mg_errname(code), names);
    assert_int_equal(err.code, code);
    assert_ptr_equal(f, (mg_filter *)&expect_bad);
}

/* ---- operators ---------------------------------------------------------- */

static void test_empty_filter(void **state)
{
    (void)state;
    MATCH("{}");
    MATCH("{'and': []}");
    MATCH("{'or': []}");
}

static void test_equality(void **state)
{
    (void)state;
    MATCH("{'memory_type': 'LongTermMemory'}");
    NO_MATCH("{'memory_type': 'longtermmemory'}");
    NO_MATCH("{'memory_type': 'LongTermMemor'}");
    MATCH("{'memory_type': {'=': 'LongTermMemory'}}");
    NO_MATCH("{'memory_type': {'=': 'WorkingMemory'}}");
    MATCH("{'active': true}");
    NO_MATCH("{'active': false}");
    NO_MATCH("{'active': 1}");
    MATCH("{'deleted_at': null}");
    NO_MATCH("{'status': null}");
    MATCH("{'memory': 'User prefers dark roast Coffee in the morning'}");
    NO_MATCH("{'memory': 'User prefers'}");
    MATCH("{'emoji': 'caf\\u00e9 \\u2615 ok'}");
}

static void test_numbers(void **state)
{
    (void)state;
    MATCH("{'count': 3}");
    MATCH("{'count': 3.0}");
    NO_MATCH("{'count': 3.5}");
    NO_MATCH("{'count': '3'}");
    MATCH("{'ratio': 2.5}");
    MATCH("{'confidence': 0.99}");
    MATCH("{'count': {'gt': 2.5}}");
    NO_MATCH("{'count': {'gt': 3}}");
    MATCH("{'count': {'gte': 3.0}}");
    MATCH("{'count': {'lte': 3}}");
    NO_MATCH("{'count': {'lt': 3}}");
    MATCH("{'ratio': {'lt': 3}}");
    NO_MATCH("{'ratio': {'gt': 3}}");
    MATCH("{'confidence': {'gt': 0.98, 'lt': 1}}");
    NO_MATCH("{'count': {'gt': '2'}}"); /* mixed kinds */
    NO_MATCH("{'key': {'gt': 1}}");
    MATCH("{'count': {'in': [1, 3.0, 'x']}}");
    NO_MATCH("{'count': {'in': [1, 2, '3']}}");
    MATCH("{'info.level': {'gte': 4}}");
}

static void test_strings_ordered(void **state)
{
    (void)state;
    MATCH("{'key': {'gt': 'coffee'}}");
    MATCH("{'key': {'lt': 'd'}}");
    NO_MATCH("{'key': {'lt': 'coffee'}}");
    MATCH("{'key': {'gte': 'coffee preference', 'lte': 'coffee preference'}}");
    NO_MATCH("{'key': {'gt': 'coffee preference'}}");
    MATCH("{'user_id': {'lt': 'u2'}}");
}

static void test_time_stamps(void **state)
{
    (void)state;
    /* created_at is "2026-01-01T10:00:00.000000" */
    MATCH("{'created_at': {'gt': '2026-01-01'}}");
    MATCH("{'created_at': {'lt': '2026-01-02'}}");
    NO_MATCH("{'created_at': {'gt': '2026-01-02'}}");
    MATCH("{'and': [{'created_at': {'gte': '2025-12-01'}}, {'created_at': {'lt': '2026-02-01'}}]}");
    /* Equal instants written differently: byte-wise this would fail. */
    MATCH("{'created_at': {'lte': '2026-01-01T10:00:00'}}");
    MATCH("{'created_at': {'gte': '2026-01-01T10:00:00'}}");
    NO_MATCH("{'created_at': {'gt': '2026-01-01T10:00:00'}}");
    MATCH("{'created_at': {'lt': '2026-01-01T10:00:00.000001'}}");
    NO_MATCH("{'created_at': {'gt': '2026-01-01T10:00:00.5'}}");
    /* Zones: 12:00+01:00 is 11:00Z, 12:00+03:00 is 09:00Z. */
    MATCH("{'created_at': {'lt': '2026-01-01T12:00:00+01:00'}}");
    MATCH("{'created_at': {'gt': '2026-01-01T12:00:00+03:00'}}");
    MATCH("{'created_at': {'gte': '2026-01-01T10:00:00Z', 'lte': '2026-01-01T10:00Z'}}");
    MATCH("{'created_at': {'lt': '2026-01-01T05:30:00-0500'}}");
    /* updated_at uses a space: byte-wise ' ' < 'T' would say the opposite. */
    MATCH("{'updated_at': {'gt': '2026-01-02T08:00:00'}}");
    NO_MATCH("{'updated_at': {'gt': '2026-01-02T09:00:00'}}");
    /* Not a time stamp: plain byte order. */
    MATCH("{'created_at': {'gt': '2026'}}");
    NO_MATCH("{'created_at': {'lt': '2026-01-01T'}}");
    /* Invalid dates are not time stamps either. */
    MATCH("{'created_at': {'lt': '2026-02-30'}}");
    NO_MATCH("{'created_at': {'lt': '2026-01-01T10:00:00.'}}");
}

static void test_lists(void **state)
{
    (void)state;
    MATCH("{'tags': 'drinks'}");
    NO_MATCH("{'tags': 'drink'}");
    MATCH("{'tags': {'contains': 'morning'}}");
    NO_MATCH("{'tags': {'contains': 'morn'}}"); /* elements, not substrings */
    MATCH("{'tags': {'in': ['evening', 'drinks']}}");
    NO_MATCH("{'tags': {'in': ['evening', 'night']}}");
    NO_MATCH("{'tags': {'in': []}}");
    MATCH("{'tags': ['mode:fast', 'drinks', 'morning']}");
    NO_MATCH("{'tags': ['drinks', 'mode:fast', 'morning']}"); /* order counts */
    NO_MATCH("{'tags': ['mode:fast', 'drinks']}");
    MATCH("{'pair': {'=': ['a', 'b']}}");
    NO_MATCH("{'memory_type': ['LongTermMemory']}");
    MATCH("{'usage': []}");
    NO_MATCH("{'usage': 'x'}");
    MATCH("{'scores': 2.5}");
    MATCH("{'scores': {'contains': 7}}");
    NO_MATCH("{'scores': {'contains': 8}}");
    MATCH("{'scores': {'gt': 6}}");
    NO_MATCH("{'scores': {'gt': 7}}");
    MATCH("{'tags': {'like': 'MODE:%'}}");
    NO_MATCH("{'tags': {'like': 'evening'}}");
    NO_MATCH("{'sources': 'chat'}"); /* objects equal nothing */
}

static void test_contains_and_like(void **state)
{
    (void)state;
    MATCH("{'memory': {'contains': 'dark roast'}}");
    NO_MATCH("{'memory': {'contains': 'Dark roast'}}");
    MATCH("{'memory': {'contains': ''}}");
    NO_MATCH("{'count': {'contains': 3}}");
    MATCH("{'memory': {'like': 'coffee'}}"); /* anywhere, any case */
    MATCH("{'memory': {'like': 'DARK%coffee'}}");
    NO_MATCH("{'memory': {'like': 'coffee%dark'}}");
    MATCH("{'memory': {'like': 'd_rk'}}");
    NO_MATCH("{'memory': {'like': 'd_k'}}");
    MATCH("{'memory': {'like': '%'}}");
    MATCH("{'memory': {'like': ''}}");
    MATCH("{'memory': {'like': 'user%morning'}}");
    NO_MATCH("{'memory': {'like': 'user%evening'}}");
    MATCH("{'key': {'like': 'coffee_preference'}}");
    NO_MATCH("{'key': {'like': 'coffee\\\\_preference'}}"); /* \_ is a literal _ */
    MATCH("{'info.biz_id': {'like': 'order\\\\_1'}}");
    MATCH("{'emoji': {'like': 'caf_ _ OK'}}"); /* _ takes a whole UTF-8 character */
    NO_MATCH("{'emoji': {'like': 'caf__ _ ok'}}");
    NO_MATCH("{'count': {'like': '3'}}");
}

/* ---- fields ------------------------------------------------------------- */

static void test_id_field(void **state)
{
    (void)state;
    MATCH("{'id': '" ID "'}");
    MATCH("{'id': '0F8FAD5B-D9CB-469F-A165-70867728950E'}");
    MATCH("{'id': {'in': ['x', '0F8FAD5B-D9CB-469F-A165-70867728950E']}}");
    NO_MATCH("{'id': '0f8fad5b-d9cb-469f-a165-70867728950f'}");
    MATCH("{'id': {'like': '0f8fad5b%'}}");
    MATCH("{'id': {'gt': '0f8fad5a'}}");
}

static void test_info_keys(void **state)
{
    (void)state;
    MATCH("{'info.biz_id': 'order_123'}");
    MATCH("{'biz_id': 'order_123'}");
    NO_MATCH("{'biz_id': 'order_124'}");
    MATCH("{'and': [{'scene': 'Payment'}, {'info.scene': 'Payment'}]}");
    /* metadata's own key wins over the info key of the same name */
    MATCH("{'key': 'coffee preference'}");
    NO_MATCH("{'key': 'shadowed'}");
    MATCH("{'info.key': 'shadowed'}");
    MATCH("{'nested.x': 'deep'}");
    MATCH("{'info.nested.x': 'deep'}");
    NO_MATCH("{'info.user_id': 'u1'}");
    NO_MATCH("{'info.missing': null}");
}

static void test_dotted_names(void **state)
{
    (void)state;
    MATCH("{'a.b.c': 'abc'}");
    MATCH("{'a.b.n': {'gt': 6}}");
    MATCH("{'a.flat': 1}");
    NO_MATCH("{'a.b.c.d': 'abc'}"); /* walks into a string */
    NO_MATCH("{'a.x.c': 'abc'}");
    NO_MATCH("{'a.b': 'abc'}"); /* an object equals nothing */
    NO_MATCH("{'a.flat.x': {'in': [1]}}");
}

static void test_missing_fields(void **state)
{
    (void)state;
    NO_MATCH("{'nope': 'x'}");
    NO_MATCH("{'nope': null}");
    NO_MATCH("{'nope': {'gt': 0}}");
    NO_MATCH("{'nope': {'lt': 'z'}}");
    NO_MATCH("{'nope': {'in': [null, 1, 'x']}}");
    NO_MATCH("{'nope': {'contains': ''}}");
    NO_MATCH("{'nope': {'like': '%'}}");
    NO_MATCH("{'nope': []}");
    MATCH("{'or': [{'nope': 1}, {'count': 3}]}");
}

/* ---- and / or ----------------------------------------------------------- */

static void test_nesting(void **state)
{
    (void)state;
    MATCH("{'and': [{'user_id': 'u1'}, {'count': 3}]}");
    NO_MATCH("{'and': [{'user_id': 'u1'}, {'count': 4}]}");
    MATCH("{'or': [{'user_id': 'u2'}, {'count': 3}]}");
    NO_MATCH("{'or': [{'user_id': 'u2'}, {'count': 4}]}");
    MATCH("{'or': [{'and': [{'user_id': 'u2'}, {'count': 3}]},"
          "        {'and': [{'user_id': 'u1'}, {'or': [{'tags': 'x'}, {'tags': 'drinks'}]}]}]}");
    NO_MATCH("{'or': [{'and': [{'user_id': 'u2'}, {'count': 3}]},"
             "        {'and': [{'user_id': 'u1'}, {'or': [{'tags': 'x'}, {'tags': 'y'}]}]}]}");
    MATCH("{'and': [{'or': [{'and': [{'or': [{'count': 1}, {'and': [{'ratio': 2.5},"
          " {'scene': 'Payment'}]}]}]}]}]}");
    NO_MATCH("{'and': [{'or': [{'and': [{'or': [{'count': 1}, {'and': [{'ratio': 2.5},"
             " {'scene': 'Bill'}]}]}]}]}]}");
    /* implicit AND of several fields, and of fields beside a group */
    MATCH("{'user_id': 'u1', 'session_id': 's1', 'count': {'gte': 3}}");
    NO_MATCH("{'user_id': 'u1', 'session_id': 's2', 'count': {'gte': 3}}");
    MATCH("{'or': [{'count': 9}, {'count': 3}], 'user_id': 'u1'}");
    NO_MATCH("{'or': [{'count': 9}, {'count': 3}], 'user_id': 'u9'}");
    /* several ops in one object are AND-ed */
    MATCH("{'count': {'gt': 1, 'lt': 4, 'in': [3]}}");
    NO_MATCH("{'count': {'gt': 1, 'lt': 3}}");
    /* an empty object inside a list matches everything, as at the top */
    MATCH("{'and': [{}, {'count': 3}]}");
}

static void test_record_layout(void **state)
{
    (void)state;
    /* Keys in another order, unknown keys, no "v": still a record. */
    uint8_t id[16];
    msgpack_sbuffer sb;
    msgpack_packer pk;
    json_t *md = json_of("{'tags': ['t1'], 'n': 1}");
    assert_true(mg_uuid_parse(ID, strlen(ID), id));
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 5);
    mg_mp_pack_cstr(&pk, "extra");
    msgpack_pack_array(&pk, 2);
    msgpack_pack_bin(&pk, 2);
    msgpack_pack_bin_body(&pk, "xy", 2);
    msgpack_pack_nil(&pk);
    mg_mp_pack_cstr(&pk, "metadata");
    assert_int_equal(mg_jsonmp_pack(&pk, md), MG_OK);
    mg_mp_pack_cstr(&pk, "memory");
    mg_mp_pack_cstr(&pk, "hello");
    mg_mp_pack_cstr(&pk, "later");
    msgpack_pack_map(&pk, 1);
    mg_mp_pack_cstr(&pk, "tags");
    mg_mp_pack_cstr(&pk, "not these");
    mg_mp_pack_cstr(&pk, "id");
    mg_mp_pack_binn(&pk, id, 16);
    assert_true(match_buf("{'and': [{'tags': 't1'}, {'memory': 'hello'}, {'id': '" ID "'}]}",
                          sb.data, sb.size));
    assert_false(match_buf("{'tags': 'not these'}", sb.data, sb.size));
    msgpack_sbuffer_destroy(&sb);
    json_decref(md);
}

/* ---- bad filters -------------------------------------------------------- */

static void test_bad_filters(void **state)
{
    (void)state;
    expect_bad(NULL, MG_EFILTER, "filter: must be an object");
    expect_bad("[]", MG_EFILTER, "filter: must be an object");
    expect_bad("'x'", MG_EFILTER, "filter: must be an object");
    expect_bad("null", MG_EFILTER, "filter: must be an object");
    expect_bad("{'and': {'a': 1}}", MG_EFILTER, "filter.and: needs a list");
    expect_bad("{'or': 'x'}", MG_EFILTER, "filter.or: needs a list");
    expect_bad("{'and': [{'a': 1}, 5]}", MG_EFILTER, "filter.and[1]: must be an object");
    expect_bad("{'or': [[]]}", MG_EFILTER, "filter.or[0]: must be an object");
    expect_bad("{'': 1}", MG_EFILTER, "filter: empty field name");
    expect_bad("{'and': [{'a..b': 1}]}", MG_EFILTER, "filter.and[0].a..b: empty part");
    expect_bad("{'a.': 1}", MG_EFILTER, "filter.a.: empty part");
    expect_bad("{'.a': 1}", MG_EFILTER, "filter..a: empty part");
    expect_bad("{'and': [{'a': 1}, {'created_at': {'after': '2026'}}]}", MG_EFILTER,
               "filter.and[1].created_at: unknown operator \"after\"");
    expect_bad("{'x': {'eq': 1}}", MG_EFILTER, "filter.x: unknown operator \"eq\"");
    expect_bad("{'x': {}}", MG_EFILTER, "filter.x: needs at least one operator");
    expect_bad("{'tags': {'in': 'x'}}", MG_EFILTER, "filter.tags.in: needs a list");
    expect_bad("{'tags': {'in': {'a': 1}}}", MG_EFILTER, "filter.tags.in: needs a list");
    expect_bad("{'tags': {'in': ['a', ['b']]}}", MG_EFILTER, "filter.tags.in[1]: list elements");
    expect_bad("{'tags': {'in': [{'a': 1}]}}", MG_EFILTER, "filter.tags.in[0]: list elements");
    expect_bad("{'count': {'gt': []}}", MG_EFILTER, "filter.count.gt: needs a number or a string");
    expect_bad("{'count': {'lt': {}}}", MG_EFILTER, "filter.count.lt: needs a number");
    expect_bad("{'count': {'gte': true}}", MG_EFILTER, "filter.count.gte: needs a number");
    expect_bad("{'count': {'lte': null}}", MG_EFILTER, "filter.count.lte: needs a number");
    expect_bad("{'memory': {'like': 3}}", MG_EFILTER, "filter.memory.like: needs a string");
    expect_bad("{'memory': {'like': ['a']}}", MG_EFILTER, "filter.memory.like: needs a string");
    expect_bad("{'tags': {'contains': ['a']}}", MG_EFILTER, "filter.tags.contains: needs a single");
    expect_bad("{'tags': {'contains': {'a': 1}}}", MG_EFILTER, "filter.tags.contains:");
    expect_bad("{'a': {'=': {'b': 1}}}", MG_EFILTER, "filter.a.=: a list or an object");
    expect_bad("{'tags': [['a']]}", MG_EFILTER, "filter.tags[0]: list elements");
    expect_bad("{'or': [{'and': [{'x': 1}, {'y': {'gt': 1, 'like': 2}}]}]}", MG_EFILTER,
               "filter.or[0].and[1].y.like: needs a string");
    expect_bad("{'ok': 1, 'and': [{'x': {'in': 1}}]}", MG_EFILTER, "filter.and[0].x.in:");
}

/* Builds {"and": [{"and": [... {"k": 1} ...]}]} with `levels` groups. */
static char *nested(int levels)
{
    size_t cap = (size_t)levels * 24 + 32, used = 0;
    char *s = malloc(cap);
    assert_non_null(s);
    for (int i = 0; i < levels; i++)
        used += (size_t)snprintf(s + used, cap - used, "{'%s': [", i % 2 ? "or" : "and");
    used += (size_t)snprintf(s + used, cap - used, "{'count': 3}");
    for (int i = 0; i < levels; i++)
        used += (size_t)snprintf(s + used, cap - used, "]}");
    return s;
}

/* {"or": [{"count": 0}, {"count": 1}, ..., {"count": n - 1}]} */
static char *wide(int n)
{
    size_t cap = (size_t)n * 20 + 32, used = 0;
    char *s = malloc(cap);
    assert_non_null(s);
    used += (size_t)snprintf(s + used, cap - used, "{'or': [");
    for (int i = 0; i < n; i++)
        used += (size_t)snprintf(s + used, cap - used, "%s{'count': %d}", i ? ", " : "", i);
    snprintf(s + used, cap - used, "]}");
    return s;
}

static void test_limits(void **state)
{
    (void)state;
    char *s = nested(MG_FILTER_MAX_DEPTH);
    MATCH(s);
    free(s);
    s = nested(MG_FILTER_MAX_DEPTH + 1);
    expect_bad(s, MG_EFILTER, "nested deeper than 16");
    expect_bad(s, MG_EFILTER, "filter.and[0].or[0].and[0]");
    free(s);
    s = wide(MG_FILTER_MAX_NODES - 1); /* the "or" group is a node too */
    MATCH(s);
    free(s);
    s = wide(MG_FILTER_MAX_NODES);
    expect_bad(s, MG_EFILTER, "more than 1024");
    free(s);
    s = wide(100000);
    expect_bad(s, MG_EFILTER, "filter.or: more than 1024");
    free(s);
}

/* xorshift64*: reproducible from the printed seed. */
static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}

static uint64_t test_seed(void)
{
    const char *env = getenv("MG_TEST_SEED");
    uint64_t seed = env ? strtoull(env, NULL, 0) : (uint64_t)time(NULL);
    print_message("filter_test seed %llu (replay with MG_TEST_SEED)\n",
                  (unsigned long long)seed);
    return seed ? seed : 1;
}

/* ---- against references ----------------------------------------------- */

static int lower(int c)
{
    return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

/* A plain recursive LIKE, anchored; the caller wraps the pattern in '%'. */
static bool like_ref(const char *p, const char *s)
{
    if (*p == '\0')
        return *s == '\0';
    if (*p == '%')
        return like_ref(p + 1, s) || (*s && like_ref(p, s + 1));
    if (*s == '\0')
        return false;
    if (*p == '_' || lower(*p) == lower(*s))
        return like_ref(p + 1, s + 1);
    return false;
}

static void random_text(uint64_t *s, const char *alphabet, char *out, size_t max)
{
    size_t len = (size_t)(rng_next(s) % (max + 1)), n = strlen(alphabet);
    for (size_t i = 0; i < len; i++)
        out[i] = alphabet[rng_next(s) % n];
    out[len] = '\0';
}

static void test_like_against_reference(void **state)
{
    (void)state;
    uint64_t seed = test_seed(), s = seed;
    for (int round = 0; round < 3000; round++) {
        char text[16], pat[10], wrapped[16], filter[64];
        size_t len;
        random_text(&s, "aAbB", text, 12);
        random_text(&s, "abB%_", pat, 7);
        snprintf(wrapped, sizeof wrapped, "%%%s%%", pat);
        snprintf(filter, sizeof filter, "{'memory': {'like': '%s'}}", pat);
        char *r = encode_item(ID, text, "{}", &len);
        bool got = match_buf(filter, r, len), want = like_ref(wrapped, text);
        free(r);
        if (got != want)
            fail_msg("like '%s' on '%s': got %d (seed %llu)", pat, text, got,
                     (unsigned long long)seed);
    }
}

/* Time stamps at random instants, written with random zones and separators,
 * must order as the instants do (libc's timegm/gmtime_r as the reference). */
static void test_time_against_reference(void **state)
{
    (void)state;
    static const char *const ops3[] = {"lt", "gt", "gte"};
    uint64_t seed = test_seed(), s = seed;
    for (int round = 0; round < 3000; round++) {
        time_t a = (time_t)(rng_next(&s) % 8000000000ull) - 2000000000; /* 1906..2160 */
        time_t b = rng_next(&s) % 4 ? a + (time_t)(rng_next(&s) % 200000) - 100000 : a;
        int offset_min = (int)(rng_next(&s) % 1681) - 840; /* -14:00 .. +14:00 */
        time_t b_local = b + offset_min * 60;
        struct tm ta, tb;
        char md[96], ts[48], filter[128];
        size_t len;
        assert_non_null(gmtime_r(&a, &ta));
        assert_non_null(gmtime_r(&b_local, &tb));
        snprintf(md, sizeof md, "{'created_at': '%04d-%02d-%02d%c%02d:%02d:%02d.000000'}",
                 ta.tm_year + 1900, ta.tm_mon + 1, ta.tm_mday, round % 2 ? 'T' : ' ',
                 ta.tm_hour, ta.tm_min, ta.tm_sec);
        int abs_off = offset_min < 0 ? -offset_min : offset_min;
        snprintf(ts, sizeof ts, "%04d-%02d-%02dT%02d:%02d:%02d%c%02d:%02d", tb.tm_year + 1900,
                 tb.tm_mon + 1, tb.tm_mday, tb.tm_hour, tb.tm_min, tb.tm_sec,
                 offset_min < 0 ? '-' : '+', abs_off / 60, abs_off % 60);
        const char *op = ops3[round % 3];
        bool want = op[0] == 'l' ? a < b : op[2] == 'e' ? a >= b : a > b;
        snprintf(filter, sizeof filter, "{'created_at': {'%s': '%s'}}", op, ts);
        char *r = encode_item(ID, "t", md, &len);
        bool got = match_buf(filter, r, len);
        free(r);
        if (got != want)
            fail_msg("%s %s %s: got %d (seed %llu)", md, op, ts, got, (unsigned long long)seed);
    }
}

/* ---- corrupt records ---------------------------------------------------- */

/* Filters that the fixture record satisfies, each reaching a different part. */
static const char *const probes[] = {
    "{}",
    "{'memory': {'like': 'coffee'}}",
    "{'id': '" ID "'}",
    "{'tags': 'drinks'}",
    "{'or': [{'info.nested.x': 'deep'}, {'count': 3}]}",
    "{'created_at': {'gt': '2025-01-01'}}",
};
#define N_PROBES (sizeof probes / sizeof probes[0])

static void compile_probes(mg_filter **fs)
{
    for (size_t i = 0; i < N_PROBES; i++)
        fs[i] = compile_ok(probes[i]);
}

static void free_probes(mg_filter **fs)
{
    for (size_t i = 0; i < N_PROBES; i++)
        mg_filter_free(fs[i]);
}

static void test_truncated_records(void **state)
{
    (void)state;
    mg_filter *fs[N_PROBES];
    compile_probes(fs);
    for (size_t i = 0; i < N_PROBES; i++)
        if (!mg_filter_match(fs[i], rec, rec_len))
            fail_msg("the whole record does not match %s", probes[i]);
    /* Every prefix is a copy on the heap so that ASan sees any overread. */
    for (size_t len = 0; len < rec_len; len++) {
        char *prefix = malloc(len ? len : 1);
        assert_non_null(prefix);
        memcpy(prefix, rec, len);
        for (size_t i = 0; i < N_PROBES; i++)
            if (mg_filter_match(fs[i], prefix, len))
                fail_msg("prefix of %zu/%zu bytes matched %s", len, rec_len, probes[i]);
        free(prefix);
    }
    char *longer = malloc(rec_len + 1);
    assert_non_null(longer);
    memcpy(longer, rec, rec_len);
    longer[rec_len] = 0x00;
    for (size_t i = 0; i < N_PROBES; i++)
        assert_false(mg_filter_match(fs[i], longer, rec_len + 1));
    free(longer);
    assert_false(mg_filter_match(fs[0], NULL, 0));
    free_probes(fs);
}

/* Records that are well-formed msgpack but not well-formed records. */
static void test_malformed_records(void **state)
{
    (void)state;
    static const char *const cases[] = {
        "v2",      "vstr",     "id15",   "idstr", "memint", "mdarray",
        "mdbin",   "mdintkey", "mdnan",  "noid",  "nomem",  "notmap",
    };
    mg_filter *all = compile_ok("{}");
    uint8_t id[16] = {1};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const char *k = cases[c];
        msgpack_sbuffer sb;
        msgpack_packer pk;
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        if (strcmp(k, "notmap") == 0) {
            msgpack_pack_array(&pk, 0);
        } else {
            bool noid = strcmp(k, "noid") == 0, nomem = strcmp(k, "nomem") == 0;
            msgpack_pack_map(&pk, 4 - noid - nomem);
            mg_mp_pack_cstr(&pk, "v");
            if (strcmp(k, "vstr") == 0)
                mg_mp_pack_cstr(&pk, "1");
            else
                msgpack_pack_uint32(&pk, strcmp(k, "v2") == 0 ? 2 : 1);
            if (!noid) {
                mg_mp_pack_cstr(&pk, "id");
                if (strcmp(k, "idstr") == 0)
                    mg_mp_pack_strn(&pk, (const char *)id, 16);
                else
                    mg_mp_pack_binn(&pk, id, strcmp(k, "id15") == 0 ? 15 : 16);
            }
            if (!nomem) {
                mg_mp_pack_cstr(&pk, "memory");
                if (strcmp(k, "memint") == 0)
                    msgpack_pack_int(&pk, 5);
                else
                    mg_mp_pack_cstr(&pk, "text");
            }
            mg_mp_pack_cstr(&pk, "metadata");
            if (strcmp(k, "mdarray") == 0) {
                msgpack_pack_array(&pk, 0);
            } else {
                msgpack_pack_map(&pk, 1);
                if (strcmp(k, "mdintkey") == 0)
                    msgpack_pack_int(&pk, 7);
                else
                    mg_mp_pack_cstr(&pk, "x");
                if (strcmp(k, "mdbin") == 0)
                    mg_mp_pack_binn(&pk, "ab", 2);
                else if (strcmp(k, "mdnan") == 0)
                    msgpack_pack_double(&pk, NAN);
                else
                    msgpack_pack_int(&pk, 1);
            }
        }
        if (mg_filter_match(all, sb.data, sb.size))
            fail_msg("malformed record \"%s\" matched", k);
        msgpack_sbuffer_destroy(&sb);
    }
    mg_filter_free(all);
}

static void test_random_records(void **state)
{
    (void)state;
    uint64_t seed = test_seed(), s = seed;
    mg_filter *fs[N_PROBES];
    compile_probes(fs);
    /* Random bytes, some starting like a record so that the walk goes deeper. */
    for (int round = 0; round < 20000; round++) {
        size_t len = (size_t)(rng_next(&s) % 96);
        uint8_t *buf = malloc(len ? len : 1);
        assert_non_null(buf);
        for (size_t i = 0; i < len; i++)
            buf[i] = (uint8_t)rng_next(&s);
        if (len > 0 && round % 2)
            buf[0] = (uint8_t)(0x80 | (buf[0] & 0x0f));
        for (size_t i = 0; i < N_PROBES; i++)
            if (mg_filter_match(fs[i], buf, len))
                fail_msg("random record matched %s (seed %llu, round %d)", probes[i],
                         (unsigned long long)seed, round);
        free(buf);
    }
    /* Mutations of the valid record: may still decode, must never crash. */
    for (int round = 0; round < 20000; round++) {
        uint8_t *buf = malloc(rec_len);
        assert_non_null(buf);
        memcpy(buf, rec, rec_len);
        int flips = 1 + (int)(rng_next(&s) % 4);
        for (int k = 0; k < flips; k++)
            buf[rng_next(&s) % rec_len] = (uint8_t)rng_next(&s);
        size_t len = round % 3 ? rec_len : (size_t)(rng_next(&s) % rec_len);
        for (size_t i = 0; i < N_PROBES; i++)
            (void)mg_filter_match(fs[i], buf, len);
        free(buf);
    }
    free_probes(fs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_filter),
        cmocka_unit_test(test_equality),
        cmocka_unit_test(test_numbers),
        cmocka_unit_test(test_strings_ordered),
        cmocka_unit_test(test_time_stamps),
        cmocka_unit_test(test_lists),
        cmocka_unit_test(test_contains_and_like),
        cmocka_unit_test(test_id_field),
        cmocka_unit_test(test_info_keys),
        cmocka_unit_test(test_dotted_names),
        cmocka_unit_test(test_missing_fields),
        cmocka_unit_test(test_nesting),
        cmocka_unit_test(test_record_layout),
        cmocka_unit_test(test_bad_filters),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_like_against_reference),
        cmocka_unit_test(test_time_against_reference),
        cmocka_unit_test(test_truncated_records),
        cmocka_unit_test(test_malformed_records),
        cmocka_unit_test(test_random_records),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
