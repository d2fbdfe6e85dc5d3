/* lib/: the bounded msgpack reader, JSON<->msgpack, UUIDs, UTF-8, errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "lib/error.h"
#include "lib/jsonmp.h"
#include "lib/mp.h"
#include "lib/utf8.h"
#include "lib/uuid.h"

#include <stdlib.h>
#include <string.h>

static void test_scalars_round_trip(void **state)
{
    (void)state;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 2);
    mg_mp_pack_cstr(&pk, "k");
    msgpack_pack_uint64(&pk, UINT64_MAX);
    mg_mp_pack_cstr(&pk, "arr");
    msgpack_pack_array(&pk, 6);
    msgpack_pack_int64(&pk, INT64_MIN);
    msgpack_pack_double(&pk, 1.5);
    msgpack_pack_float(&pk, 2.25f);
    mg_mp_pack_binn(&pk, "\x00\x01\x02", 3);
    msgpack_pack_true(&pk);
    msgpack_pack_nil(&pk);

    mg_mp_reader r;
    mg_mp_reader_init(&r, sb.data, sb.size);
    uint32_t n;
    assert_int_equal(mg_mp_read_map(&r, &n), MG_OK);
    assert_int_equal(n, 2);
    assert_true(mg_mp_peek_str_eq(&r, "k"));
    assert_int_equal(mg_mp_skip(&r), MG_OK);
    uint64_t u;
    assert_int_equal(mg_mp_read_u64(&r, &u), MG_OK);
    assert_true(u == UINT64_MAX);
    const char *s;
    uint32_t len;
    assert_int_equal(mg_mp_read_str(&r, &s, &len), MG_OK);
    assert_int_equal(len, 3);
    assert_int_equal(mg_mp_read_array(&r, &n), MG_OK);
    assert_int_equal(n, 6);
    int64_t i;
    assert_int_equal(mg_mp_read_u64(&r, &u), MG_ECORRUPT); /* negative is not a u64 */
    assert_int_equal(mg_mp_read_i64(&r, &i), MG_OK);
    assert_true(i == INT64_MIN);
    double d;
    assert_int_equal(mg_mp_read_double(&r, &d), MG_OK);
    assert_true(d == 1.5);
    assert_int_equal(mg_mp_read_double(&r, &d), MG_OK);
    assert_true(d == 2.25);
    const uint8_t *b;
    assert_int_equal(mg_mp_read_bin(&r, &b, &len), MG_OK);
    assert_int_equal(len, 3);
    assert_memory_equal(b, "\x00\x01\x02", 3);
    bool t;
    assert_int_equal(mg_mp_read_bool(&r, &t), MG_OK);
    assert_true(t);
    assert_int_equal(mg_mp_read_nil(&r), MG_OK);
    assert_int_equal(mg_mp_remaining(&r), 0);
    assert_int_equal(mg_mp_peek(&r), 0);
    msgpack_sbuffer_destroy(&sb);
}

/* Lengths that claim more than the input holds are refused before anything
 * is allocated or read, and the cursor does not move. */
static void test_lying_lengths(void **state)
{
    (void)state;
    static const uint8_t array32[] = {0xdd, 0xff, 0xff, 0xff, 0xff, 0x01};
    static const uint8_t map32[] = {0xdf, 0x7f, 0xff, 0xff, 0xff, 0x01, 0x01};
    static const uint8_t str32[] = {0xdb, 0x00, 0x10, 0x00, 0x00, 'a'};
    static const uint8_t bin8[] = {0xc4, 0x05, 1, 2};
    static const uint8_t reserved[] = {0xc1};
    uint32_t n;
    const char *s;
    const uint8_t *b;
    mg_mp_reader r;

    mg_mp_reader_init(&r, array32, sizeof array32);
    assert_int_equal(mg_mp_read_array(&r, &n), MG_ECORRUPT);
    assert_ptr_equal(r.pos, array32);
    assert_int_equal(mg_mp_skip(&r), MG_ECORRUPT);
    mg_mp_reader_init(&r, map32, sizeof map32);
    assert_int_equal(mg_mp_read_map(&r, &n), MG_ECORRUPT);
    mg_mp_reader_init(&r, str32, sizeof str32);
    assert_int_equal(mg_mp_read_str(&r, &s, &n), MG_ECORRUPT);
    mg_mp_reader_init(&r, bin8, sizeof bin8);
    assert_int_equal(mg_mp_read_bin(&r, &b, &n), MG_ECORRUPT);
    mg_mp_reader_init(&r, reserved, sizeof reserved);
    assert_int_equal(mg_mp_peek(&r), 0);
    assert_int_equal(mg_mp_skip(&r), MG_ECORRUPT);
}

static void test_deep_nesting_refused(void **state)
{
    (void)state;
    uint8_t buf[200];
    memset(buf, 0x91, sizeof buf); /* [[[[...  */
    buf[sizeof buf - 1] = 0xc0;
    mg_mp_reader r;
    mg_mp_reader_init(&r, buf, sizeof buf);
    assert_int_equal(mg_mp_skip(&r), MG_ECORRUPT);
    json_t *v = NULL;
    mg_mp_reader_init(&r, buf, sizeof buf);
    assert_int_equal(mg_jsonmp_read(&r, &v), MG_ECORRUPT);
    assert_null(v);
}

static void test_json_round_trip(void **state)
{
    (void)state;
    const char *text = "{\"a\": 1, \"b\": [true, false, null, -5, 2.5, \"\xc3\xa9\xe2\x82\xac"
                       "\xf0\x9f\x98\x80\"], \"nested\": {\"z\": {}, \"y\": []}, \"\": \"\"}";
    json_error_t jerr;
    json_t *in = json_loads(text, 0, &jerr);
    assert_non_null(in);
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    assert_int_equal(mg_jsonmp_pack(&pk, in), MG_OK);
    mg_mp_reader r;
    mg_mp_reader_init(&r, sb.data, sb.size);
    json_t *out = NULL;
    assert_int_equal(mg_jsonmp_read(&r, &out), MG_OK);
    assert_true(json_equal(in, out));
    /* key order is kept */
    char *a = json_dumps(in, JSON_COMPACT), *b = json_dumps(out, JSON_COMPACT);
    assert_string_equal(a, b);
    free(a);
    free(b);
    /* every truncation fails cleanly */
    for (size_t cut = 0; cut < sb.size; cut++) {
        json_t *partial = NULL;
        mg_mp_reader_init(&r, sb.data, cut);
        assert_int_not_equal(mg_jsonmp_read(&r, &partial), MG_OK);
        assert_null(partial);
    }
    json_decref(in);
    json_decref(out);
    msgpack_sbuffer_destroy(&sb);
}

static void test_json_read_refuses_bad_utf8(void **state)
{
    (void)state;
    static const uint8_t bad[] = {0xa2, 0xc3, 0x28};
    mg_mp_reader r;
    json_t *v = NULL;
    mg_mp_reader_init(&r, bad, sizeof bad);
    assert_int_equal(mg_jsonmp_read(&r, &v), MG_ECORRUPT);
    assert_null(v);
}

static void test_garbage_never_crashes(void **state)
{
    (void)state;
    uint64_t seed = 0x9e3779b97f4a7c15u;
    uint8_t buf[64];
    for (int round = 0; round < 20000; round++) {
        for (size_t i = 0; i < sizeof buf; i++) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            buf[i] = (uint8_t)seed;
        }
        mg_mp_reader r;
        mg_mp_reader_init(&r, buf, (size_t)(seed % sizeof buf));
        json_t *v = NULL;
        if (mg_jsonmp_read(&r, &v) == MG_OK)
            json_decref(v);
        mg_mp_reader_init(&r, buf, (size_t)(seed % sizeof buf));
        while (mg_mp_skip(&r) == MG_OK && mg_mp_remaining(&r) > 0)
            ;
    }
}

static void test_uuid(void **state)
{
    (void)state;
    uint8_t id[16], back[16];
    char s[MG_UUID_STRLEN + 1];
    mg_uuid_v4(id);
    mg_uuid_format(id, s);
    assert_int_equal(strlen(s), 36);
    assert_int_equal(s[14], '4');
    assert_true(mg_uuid_parse(s, strlen(s), back));
    assert_memory_equal(id, back, 16);
    assert_true(mg_uuid_parse("A1B2C3D4-0000-4000-8000-00000000000F", 36, back));
    assert_false(mg_uuid_parse("a1b2c3d4-0000-4000-8000-00000000000", 35, back));
    assert_false(mg_uuid_parse("a1b2c3d4x0000-4000-8000-000000000000", 36, back));
    assert_false(mg_uuid_parse("g1b2c3d4-0000-4000-8000-000000000000", 36, back));
    assert_false(mg_uuid_parse(NULL, 0, back));
}

static void test_utf8(void **state)
{
    (void)state;
    assert_true(mg_utf8_valid("", 0));
    assert_true(mg_utf8_valid("h\xc3\xa9llo \xf0\x9f\x98\x80", 11));
    assert_false(mg_utf8_valid("\xc0\xaf", 2));         /* overlong */
    assert_false(mg_utf8_valid("\xed\xa0\x80", 3));     /* surrogate */
    assert_false(mg_utf8_valid("\xf4\x90\x80\x80", 4)); /* above U+10FFFF */
    assert_false(mg_utf8_valid("\xe2\x82", 2));         /* truncated */
    assert_false(mg_utf8_valid("a\0b", 3));             /* NUL */
}

static void test_errors(void **state)
{
    (void)state;
    mg_error err;
    assert_int_equal(mg_error_set(&err, MG_EINVAL, "field %s", "x"), MG_EINVAL);
    assert_int_equal(err.code, MG_EINVAL);
    assert_string_equal(err.msg, "field x");
    mg_error_wrap(&err, MG_EINVAL, "request");
    assert_string_equal(err.msg, "request: field x");
    assert_string_equal(mg_errname(MG_ENOTFOUND), "ENOTFOUND");
    assert_string_equal(mg_strerror(9999), "unknown error");
    for (int c = 0; c < MG_ERR_COUNT_; c++)
        assert_non_null(mg_strerror(c));
    assert_int_equal(mg_error_set(NULL, MG_EIO, "ignored"), MG_EIO);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scalars_round_trip),
        cmocka_unit_test(test_lying_lengths),
        cmocka_unit_test(test_deep_nesting_refused),
        cmocka_unit_test(test_json_round_trip),
        cmocka_unit_test(test_json_read_refuses_bad_utf8),
        cmocka_unit_test(test_garbage_never_crashes),
        cmocka_unit_test(test_uuid),
        cmocka_unit_test(test_utf8),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
