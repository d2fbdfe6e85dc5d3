/* router/fastmode.h: MemOS fast-mode windows, token counts and keys. */
#include "router/fastmode.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static mg_fast_params params(void)
{
    mg_fast_params p = {.user_id = "u1", .session_id = "s1", .now = "2026-01-01T10:00:00.000000"};
    return p;
}

static void test_tokens(void **state)
{
    (void)state;
    assert_int_equal(mg_fast_tokens("", 0), 0);
    assert_int_equal(mg_fast_tokens("abc", 3), 1);       /* max(1, 3 // 4) */
    assert_int_equal(mg_fast_tokens("abcdefgh", 8), 2);
    /* Two CJK code points count one each, plus max(1, 0 // 4) as in MemOS. */
    assert_int_equal(mg_fast_tokens("\xE4\xB8\xAD\xE6\x96\x87", 6), 3);
    /* Other multi-byte code points count as one character each. */
    assert_int_equal(mg_fast_tokens("\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9", 8), 1);
}

static void test_key(void **state)
{
    (void)state;
    char *k = mg_fast_key("  Hello world! And more", 23);
    assert_string_equal(k, "Hello world");
    free(k);
    k = mg_fast_key("line one\nline two", 17);
    assert_string_equal(k, "line one");
    free(k);
    char longtext[200];
    memset(longtext, 'x', sizeof longtext);
    k = mg_fast_key(longtext, sizeof longtext);
    assert_int_equal(strlen(k), MG_FAST_KEY_CHARS);
    free(k);
}

static void test_one_window(void **state)
{
    (void)state;
    json_error_t e;
    json_t *msgs = json_loads("[{\"role\":\"user\",\"content\":\"I like tea\",\"chat_time\":"
                              "\"2026-01-01\"},{\"role\":\"user\",\"content\":\"and biscuits\"}]",
                              0, &e);
    mg_fast_params p = params();
    json_t *tags = json_pack("[s]", "food");
    json_t *info = json_pack("{s:s}", "app", "x");
    p.custom_tags = tags;
    p.info = info;
    mg_item *items;
    size_t n;
    mg_error err;
    assert_int_equal(mg_fast_windows(msgs, &p, &items, &n, &err), MG_OK);
    assert_int_equal(n, 1);
    assert_string_equal(items[0].memory, "user: [2026-01-01]: I like tea\nuser: and biscuits\n");
    json_t *m = items[0].metadata;
    assert_string_equal(json_string_value(json_object_get(m, "memory_type")), "UserMemory");
    assert_string_equal(json_string_value(json_array_get(json_object_get(m, "tags"), 0)),
                        "mode:fast");
    assert_string_equal(json_string_value(json_array_get(json_object_get(m, "tags"), 1)), "food");
    assert_string_equal(json_string_value(json_object_get(json_object_get(m, "info"), "app")),
                        "x");
    assert_int_equal(json_array_size(json_object_get(m, "sources")), 2);
    assert_string_equal(json_string_value(json_object_get(m, "key")),
                        "user: [2026-01-01]: I like tea");
    assert_int_equal(mg_item_validate(&items[0], &err), MG_OK);
    mg_item_clear(&items[0]);
    free(items);
    json_decref(msgs);

    /* An assistant line makes it LongTermMemory; role "mix" is not shown. */
    msgs = json_loads("[{\"role\":\"mix\",\"content\":\"a\"},{\"role\":\"assistant\","
                      "\"content\":\"b\"}]",
                      0, &e);
    assert_int_equal(mg_fast_windows(msgs, &p, &items, &n, &err), MG_OK);
    assert_int_equal(n, 1);
    assert_string_equal(items[0].memory, "a\nassistant: b\n");
    assert_string_equal(json_string_value(json_object_get(items[0].metadata, "memory_type")),
                        "LongTermMemory");
    mg_item_clear(&items[0]);
    free(items);
    json_decref(msgs);
    json_decref(tags);
    json_decref(info);
}

static void test_sliding_windows(void **state)
{
    (void)state;
    json_t *msgs = json_array();
    char text[401];
    memset(text, 'w', 400);
    text[400] = '\0';
    for (int i = 0; i < 30; i++)
        json_array_append_new(msgs, json_pack("{s:s,s:s}", "role", "user", "content", text));
    mg_fast_params p = params();
    mg_item *items;
    size_t n;
    mg_error err;
    assert_int_equal(mg_fast_windows(msgs, &p, &items, &n, &err), MG_OK);
    /* Each line is ~101 tokens: 10 lines a window, then back to <= 200
     * tokens of overlap (one line), so windows advance by 9 lines. */
    assert_int_equal(n, 4);
    for (size_t i = 0; i < n; i++) {
        assert_true(mg_fast_tokens(items[i].memory, items[i].memory_len) <= MG_FAST_WINDOW_TOKENS);
        const json_t *src = json_object_get(items[i].metadata, "sources");
        if (i + 1 < n) {
            const json_t *next = json_object_get(items[i + 1].metadata, "sources");
            json_int_t last = json_integer_value(
                json_object_get(json_array_get(src, json_array_size(src) - 1), "index"));
            json_int_t first_next = json_integer_value(json_object_get(json_array_get(next, 0),
                                                                       "index"));
            assert_true(first_next <= last); /* overlap */
        }
    }
    for (size_t i = 0; i < n; i++)
        mg_item_clear(&items[i]);
    free(items);
    json_decref(msgs);
}

static void test_errors(void **state)
{
    (void)state;
    json_error_t e;
    json_t *msgs = json_loads("[{\"role\":\"user\",\"content\":\"ok\"},{\"role\":\"user\","
                              "\"content\":3}]",
                              0, &e);
    mg_fast_params p = params();
    mg_item *items = (mg_item *)1;
    size_t n = 7;
    mg_error err;
    assert_int_equal(mg_fast_windows(msgs, &p, &items, &n, &err), MG_EINVAL);
    assert_non_null(strstr(err.msg, "messages[1].content"));
    assert_null(items);
    assert_int_equal(n, 0);
    json_decref(msgs);
    p.max_messages = 1;
    msgs = json_loads("[{\"content\":\"a\"},{\"content\":\"b\"}]", 0, &e);
    assert_int_equal(mg_fast_windows(msgs, &p, &items, &n, &err), MG_ETOOBIG);
    json_decref(msgs);
    mg_item it;
    p = params();
    p.max_text_bytes = 4;
    assert_int_equal(mg_fast_text("hello", 5, &p, &it, &err), MG_ETOOBIG);
    assert_int_equal(mg_fast_text("", 0, &p, &it, &err), MG_EINVAL);
    assert_int_equal(mg_fast_text("\xff", 1, &p, &it, &err), MG_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tokens),          cmocka_unit_test(test_key),
        cmocka_unit_test(test_one_window),      cmocka_unit_test(test_sliding_windows),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
