/* storage/item: records, validation, msgpack and JSON forms. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "storage/item.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Every MemOS field, an unknown key, unicode, nested info. */
static const char *full_item =
    "{\"id\": \"3f2b8c1e-9d4a-4e2f-8b1c-0a1b2c3d4e5f\","
    " \"memory\": \"Caroline went to the LGBTQ support group \xf0\x9f\x8f\xb3\xef\xb8\x8f\"," 
    " \"metadata\": {\"user_id\": \"caroline\", \"session_id\": \"s1\", \"status\": \"activated\","
    "  \"type\": \"fact\", \"memory_type\": \"LongTermMemory\", \"key\": \"support group\","
    "  \"tags\": [\"mode:fast\", \"\xe6\x97\xa5\xe6\x9c\xac\"], \"confidence\": 0.99,"
    "  \"source\": \"conversation\", \"visibility\": \"private\","
    "  \"sources\": [{\"type\": \"chat\", \"role\": \"user\", \"chat_time\": \"1:56 pm\","
    "                \"content\": \"hi\", \"index\": 0}],"
    "  \"background\": \"\", \"usage\": [], \"created_at\": \"2026-01-01T10:00:00.000000\","
    "  \"updated_at\": \"2026-01-01T10:00:00.000000\", \"info\": {\"topic\": \"x\", \"n\": 3},"
    "  \"memory_time\": \"2023-05-08\", \"entities\": [\"Caroline\"], \"future_key\": null,"
    "  \"embedding\": [0.5, -0.25, 1e-3]}}";

static json_t *load(const char *text)
{
    json_error_t jerr;
    json_t *v = json_loads(text, 0, &jerr);
    if (v == NULL)
        fail_msg("bad test JSON: %s", jerr.text);
    return v;
}

static void test_item_json_msgpack_round_trip(void **state)
{
    (void)state;
    json_t *in = load(full_item);
    mg_item it, back;
    float *vec;
    uint32_t dim;
    mg_error err;
    assert_int_equal(mg_item_from_json(in, &it, &vec, &dim, &err), MG_OK);
    assert_int_equal(dim, 3);
    assert_true(vec[0] == 0.5f && vec[1] == -0.25f && vec[2] == 1e-3f);
    assert_null(json_object_get(it.metadata, "embedding"));

    char *buf;
    size_t len;
    assert_int_equal(mg_item_encode(&it, &buf, &len), MG_OK);
    assert_int_equal(mg_item_decode(buf, len, &back, &err), MG_OK);
    assert_memory_equal(it.id, back.id, 16);
    assert_int_equal(it.memory_len, back.memory_len);
    assert_string_equal(it.memory, back.memory);
    assert_true(json_equal(it.metadata, back.metadata));

    json_t *out = mg_item_to_json(&back);
    assert_non_null(out);
    json_t *expect = json_deep_copy(in);
    json_object_set_new(json_object_get(expect, "metadata"), "embedding", json_array());
    assert_true(json_equal(expect, out));
    /* unknown keys keep their order and their bytes */
    char *a = json_dumps(expect, JSON_COMPACT), *b = json_dumps(out, JSON_COMPACT);
    assert_string_equal(a, b);

    free(a);
    free(b);
    json_decref(expect);
    json_decref(out);
    free(buf);
    free(vec);
    mg_item_clear(&it);
    mg_item_clear(&back);
    mg_item_clear(&back); /* clearing twice is safe */
    json_decref(in);
}

static void test_item_minimal_and_maximal(void **state)
{
    (void)state;
    mg_item it, back;
    float *vec;
    uint32_t dim;
    mg_error err;
    json_t *in = load("{\"memory\": \"\"}");
    assert_int_equal(mg_item_from_json(in, &it, &vec, &dim, &err), MG_OK);
    assert_null(vec);
    assert_true(json_is_object(it.metadata) && json_object_size(it.metadata) == 0);
    uint8_t zero[16] = {0};
    assert_memory_not_equal(it.id, zero, 16); /* an id was assigned */
    char *buf;
    size_t len;
    assert_int_equal(mg_item_encode(&it, &buf, &len), MG_OK);
    assert_int_equal(mg_item_decode(buf, len, &back, &err), MG_OK);
    assert_int_equal(back.memory_len, 0);
    free(buf);
    mg_item_clear(&back);
    mg_item_clear(&it);
    json_decref(in);

    /* exactly the maximal text is accepted, one byte more is not */
    char *text = malloc(MG_MEMORY_TEXT_MAX + 2);
    memset(text, 'x', MG_MEMORY_TEXT_MAX + 1);
    text[MG_MEMORY_TEXT_MAX] = '\0';
    in = json_pack("{s:s}", "memory", text);
    assert_int_equal(mg_item_from_json(in, &it, &vec, &dim, &err), MG_OK);
    assert_int_equal(mg_item_encode(&it, &buf, &len), MG_OK);
    assert_int_equal(mg_item_decode(buf, len, &back, &err), MG_OK);
    assert_int_equal(back.memory_len, MG_MEMORY_TEXT_MAX);
    free(buf);
    mg_item_clear(&back);
    mg_item_clear(&it);
    json_decref(in);
    text[MG_MEMORY_TEXT_MAX] = 'x';
    text[MG_MEMORY_TEXT_MAX + 1] = '\0';
    in = json_pack("{s:s}", "memory", text);
    assert_int_equal(mg_item_from_json(in, &it, &vec, &dim, &err), MG_ETOOBIG);
    assert_non_null(strstr(err.msg, "limit"));
    assert_null(it.memory);
    json_decref(in);
    free(text);
}

static void expect_refused(const char *text, int code, const char *words)
{
    json_t *in = load(text);
    mg_item it;
    float *vec = (float *)1;
    uint32_t dim = 7;
    mg_error err = {0};
    assert_int_equal(mg_item_from_json(in, &it, &vec, &dim, &err), code);
    if (strstr(err.msg, words) == NULL)
        fail_msg("message \"%s\" lacks \"%s\"", err.msg, words);
    assert_null(vec);
    assert_int_equal(dim, 0);
    assert_null(it.memory);
    assert_null(it.metadata);
    json_decref(in);
}

static void test_item_bad_input(void **state)
{
    (void)state;
    expect_refused("{\"id\": \"not-a-uuid\", \"memory\": \"x\"}", MG_EINVAL, "UUID");
    expect_refused("{\"id\": 5, \"memory\": \"x\"}", MG_EINVAL, "UUID");
    expect_refused("{\"memory\": 5}", MG_EINVAL, "memory");
    expect_refused("{\"id\": \"3f2b8c1e-9d4a-4e2f-8b1c-0a1b2c3d4e5f\"}", MG_EINVAL, "memory");
    expect_refused("{\"memory\": \"x\", \"metadata\": []}", MG_EINVAL, "metadata");
    expect_refused("{\"memory\": \"x\", \"extra\": 1}", MG_EINVAL, "extra");
    expect_refused("{\"memory\": \"x\", \"metadata\": {\"tags\": \"t\"}}", MG_EINVAL,
                   "metadata.tags");
    expect_refused("{\"memory\": \"x\", \"metadata\": {\"tags\": [1]}}", MG_EINVAL,
                   "metadata.tags[0]");
    expect_refused("{\"memory\": \"x\", \"metadata\": {\"confidence\": \"high\"}}", MG_EINVAL,
                   "confidence");
    expect_refused("{\"memory\": \"x\", \"metadata\": {\"info\": [1]}}", MG_EINVAL, "info");
    expect_refused("{\"memory\": \"x\", \"metadata\": {\"embedding\": [1, \"a\"]}}", MG_EINVAL,
                   "embedding[1]");
    expect_refused("{\"memory\": \"x\", \"metadata\": {\"embedding\": [1, 1e300]}}", MG_ENAN,
                   "NaN or infinite");
    expect_refused("{\"memory\": \"x\", \"metadata\": {\"embedding\": \"v\"}}", MG_EINVAL,
                   "embedding");
    /* nulls in typed fields are fine (older MemOS files carry them) */
    json_t *in = load("{\"memory\": \"x\", \"metadata\": {\"tags\": null, \"info\": null}}");
    mg_item it;
    float *vec;
    uint32_t dim;
    assert_int_equal(mg_item_from_json(in, &it, &vec, &dim, NULL), MG_OK);
    mg_item_clear(&it);
    json_decref(in);
}

static void test_item_decode_garbage(void **state)
{
    (void)state;
    json_t *in = load(full_item);
    mg_item it, back;
    float *vec;
    uint32_t dim;
    mg_error err;
    assert_int_equal(mg_item_from_json(in, &it, &vec, &dim, &err), MG_OK);
    char *buf;
    size_t len;
    assert_int_equal(mg_item_encode(&it, &buf, &len), MG_OK);
    for (size_t cut = 0; cut < len; cut++) {
        assert_int_not_equal(mg_item_decode(buf, cut, &back, &err), MG_OK);
        assert_null(back.memory);
        assert_null(back.metadata);
    }
    /* flipped bytes: either a clean error or a valid item, never a crash */
    for (size_t i = 0; i < len; i++) {
        char saved = buf[i];
        buf[i] = (char)(buf[i] ^ 0x5a);
        if (mg_item_decode(buf, len, &back, &err) == MG_OK)
            mg_item_clear(&back);
        else
            assert_null(back.memory);
        buf[i] = saved;
    }
    assert_int_equal(mg_item_decode("\xc1", 1, &back, &err), MG_ECORRUPT);
    assert_int_equal(mg_item_decode("", 0, &back, &err), MG_ECORRUPT);
    free(buf);
    free(vec);
    mg_item_clear(&it);
    json_decref(in);
}

static void test_item_newer_version_refused(void **state)
{
    (void)state;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 3);
    msgpack_pack_str_with_body(&pk, "v", 1);
    msgpack_pack_uint32(&pk, MG_ITEM_VERSION + 1);
    msgpack_pack_str_with_body(&pk, "id", 2);
    msgpack_pack_bin_with_body(&pk, "0123456789abcdef", 16);
    msgpack_pack_str_with_body(&pk, "memory", 6);
    msgpack_pack_str_with_body(&pk, "m", 1);
    mg_item back;
    mg_error err;
    assert_int_equal(mg_item_decode(sb.data, sb.size, &back, &err), MG_EVERSION);
    assert_non_null(strstr(err.msg, "version"));
    msgpack_sbuffer_destroy(&sb);
}

static void test_cube_round_trip(void **state)
{
    (void)state;
    mg_cube c = {0}, back;
    mg_error err;
    strcpy(c.cube_id, "user-1@team.a:b_c");
    strcpy(c.owner_id, "user-\xc3\xa9");
    c.name = strdup("My cube \xe2\x82\xac");
    strcpy(c.created_at, "2026-01-01T10:00:00.000000");
    strcpy(c.embedder, "hash");
    c.dim = 384;
    assert_int_equal(mg_cube_share(&c, "bob", &err), MG_OK);
    assert_int_equal(mg_cube_share(&c, "bob", &err), MG_OK);
    assert_int_equal(c.n_shared, 1);
    assert_int_equal(mg_cube_share(&c, "bad\nid", &err), MG_EINVAL);
    assert_true(mg_cube_allows(&c, "bob"));
    assert_true(mg_cube_allows(&c, "user-\xc3\xa9"));
    assert_false(mg_cube_allows(&c, "eve"));
    assert_int_equal(mg_cube_validate(&c, &err), MG_OK);

    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    assert_int_equal(mg_cube_pack(&pk, &c), MG_OK);
    assert_int_equal(mg_cube_decode(sb.data, sb.size, &back, &err), MG_OK);
    assert_string_equal(back.cube_id, c.cube_id);
    assert_string_equal(back.owner_id, c.owner_id);
    assert_string_equal(back.name, c.name);
    assert_string_equal(back.created_at, c.created_at);
    assert_string_equal(back.embedder, "hash");
    assert_int_equal(back.dim, 384);
    assert_int_equal(back.n_shared, 1);
    assert_string_equal(back.shared_with[0], "bob");
    json_t *j = mg_cube_to_json(&back);
    assert_string_equal(json_string_value(json_object_get(j, "cube_name")), c.name);
    json_decref(j);
    mg_cube_clear(&back);
    for (size_t cut = 0; cut < sb.size; cut++)
        assert_int_not_equal(mg_cube_decode(sb.data, cut, &back, &err), MG_OK);
    msgpack_sbuffer_destroy(&sb);
    mg_cube_clear(&c);
}

static void test_cube_ids(void **state)
{
    (void)state;
    char long_id[MG_CUBE_ID_MAX + 2];
    memset(long_id, 'a', sizeof long_id);
    assert_true(mg_cube_id_valid(long_id, MG_CUBE_ID_MAX));
    assert_false(mg_cube_id_valid(long_id, MG_CUBE_ID_MAX + 1));
    assert_false(mg_cube_id_valid("", 0));
    assert_false(mg_cube_id_valid("a b", 3));
    assert_false(mg_cube_id_valid("a/b", 3));
    assert_false(mg_cube_id_valid("caf\xc3\xa9", 5));
    assert_true(mg_cube_id_valid("A-z_0.9:x@y", 11));
    mg_cube c = {0};
    mg_error err;
    strcpy(c.cube_id, "bad id");
    strcpy(c.owner_id, "u");
    assert_int_equal(mg_cube_validate(&c, &err), MG_EINVAL);
    assert_non_null(strstr(err.msg, "cube_id"));
    strcpy(c.cube_id, "ok");
    c.dim = MG_DIM_MAX + 1;
    assert_int_equal(mg_cube_validate(&c, &err), MG_EDIM);
}

static void test_user_round_trip(void **state)
{
    (void)state;
    mg_user u = {0}, back;
    mg_error err;
    strcpy(u.user_id, "alice");
    u.name = strdup("Alice");
    u.role = MG_ROLE_ADMIN;
    strcpy(u.created_at, "2026-01-01T10:00:00.000000");
    u.keys = calloc(2, sizeof *u.keys);
    u.n_keys = 2;
    memset(u.keys[0].hash, 0xab, 32);
    u.keys[0].scopes = strdup("read write");
    memset(u.keys[1].hash, 0x01, 32);
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    assert_int_equal(mg_user_pack(&pk, &u), MG_OK);
    assert_int_equal(mg_user_decode(sb.data, sb.size, &back, &err), MG_OK);
    assert_string_equal(back.user_id, "alice");
    assert_string_equal(back.name, "Alice");
    assert_int_equal(back.role, MG_ROLE_ADMIN);
    assert_int_equal(back.n_keys, 2);
    assert_memory_equal(back.keys[0].hash, u.keys[0].hash, 32);
    assert_string_equal(back.keys[0].scopes, "read write");
    assert_null(back.keys[1].scopes);
    mg_user_clear(&back);
    for (size_t cut = 0; cut < sb.size; cut++)
        assert_int_not_equal(mg_user_decode(sb.data, cut, &back, &err), MG_OK);
    u.role = 7;
    assert_int_equal(mg_user_validate(&u, &err), MG_EINVAL);
    msgpack_sbuffer_destroy(&sb);
    mg_user_clear(&u);
}

static void test_vector_check(void **state)
{
    (void)state;
    float v[3] = {1, 2, 3};
    mg_error err;
    assert_int_equal(mg_vector_check(v, 3, &err), MG_OK);
    assert_int_equal(mg_vector_check(v, 0, &err), MG_EDIM);
    assert_int_equal(mg_vector_check(v, MG_DIM_MAX + 1, &err), MG_EDIM);
    v[1] = NAN;
    assert_int_equal(mg_vector_check(v, 3, &err), MG_ENAN);
    assert_non_null(strstr(err.msg, "element 1"));
    v[1] = INFINITY;
    assert_int_equal(mg_vector_check(v, 3, &err), MG_ENAN);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_item_json_msgpack_round_trip),
        cmocka_unit_test(test_item_minimal_and_maximal),
        cmocka_unit_test(test_item_bad_input),
        cmocka_unit_test(test_item_decode_garbage),
        cmocka_unit_test(test_item_newer_version_refused),
        cmocka_unit_test(test_cube_round_trip),
        cmocka_unit_test(test_cube_ids),
        cmocka_unit_test(test_user_round_trip),
        cmocka_unit_test(test_vector_check),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
