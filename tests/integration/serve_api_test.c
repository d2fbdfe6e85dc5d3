/*
 * memgrid serve end to end, the API as a MemOS client sees it: add (fast mode
 * from messages, memory_content), search (shapes and types, filters, dedup,
 * relativity, multi-cube, session hint), get / get_by_ids / get_all /
 * get_memory / delete, unknown cubes and sharing between users. One server
 * for the whole file; every test uses its own users and cubes.
 */
#include "serve_harness.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static serve S;

static int group_setup(void **state)
{
    (void)state;
    curl_global_init(CURL_GLOBAL_ALL);
    if (serve_start(&S, NULL, NULL) != 0)
        return -1;
    fprintf(stderr, "serve_api_test: server ready in %.0f ms on %s\n", S.ready_ms, S.base);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    int code = serve_stop(&S, SIGTERM, 10000);
    serve_cleanup(&S);
    curl_global_cleanup();
    return code == 0 ? 0 : -1;
}

/* POSTs a JSON text built with printf and checks the HTTP status. */
static http_res post(const char *path, long want_status, const char *fmt, ...)
{
    char body[16384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(body, sizeof body, fmt, ap);
    va_end(ap);
    http_res r;
    assert_int_equal(http_post(&S, path, body, &r), 0);
    if (r.status != want_status)
        fprintf(stderr, "POST %s %s\n -> %ld %s\n", path, body, r.status, r.body);
    assert_int_equal(r.status, want_status);
    assert_true(is_envelope(&r));
    return r;
}

static const json_t *data_of(const http_res *r)
{
    return json_object_get(r->json, "data");
}

/* The text_mem memories of the first (or the named) cube of a search. */
static const json_t *text_mems(const http_res *r, const char *cube_id)
{
    const json_t *list = json_object_get(data_of(r), "text_mem");
    size_t i;
    const json_t *b;
    json_array_foreach(list, i, b)
    {
        if (cube_id == NULL ||
            strcmp(json_string_value(json_object_get(b, "cube_id")), cube_id) == 0)
            return json_object_get(b, "memories");
    }
    return NULL;
}

static const char *first_id(const http_res *add)
{
    return json_string_value(json_object_get(json_array_get(data_of(add), 0), "memory_id"));
}

/* ---- tests -------------------------------------------------------------------- */

static void test_health_and_openapi(void **state)
{
    (void)state;
    http_res r;
    assert_int_equal(http_get(&S, "/health", &r), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(json_string_value(json_object_get(r.json, "status")), "healthy");
    assert_string_equal(json_string_value(json_object_get(r.json, "service")), "memos");
    assert_true(json_is_string(json_object_get(r.json, "version")));
    http_res_clear(&r);

    assert_int_equal(http_get(&S, "/openapi.json", &r), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(json_string_value(json_object_get(r.json, "openapi")), "3.0.3");
    const json_t *paths = json_object_get(r.json, "paths");
    static const char *const want[] = {
        "/product/add",           "/product/search",          "/product/get_all",
        "/product/get_memory",    "/product/get_memory/{memory_id}",
        "/product/get_memory_by_ids", "/product/delete_memory", "/product/create_cube",
        "/product/register_cube", "/product/exist_mem_cube_id", "/health", "/openapi.json"};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        if (json_object_get(paths, want[i]) == NULL)
            fprintf(stderr, "openapi: no %s\n", want[i]);
        assert_non_null(json_object_get(paths, want[i]));
    }
    assert_non_null(json_object_get(json_object_get(paths, "/product/search"), "post"));
    assert_non_null(json_object_get(json_object_get(paths, "/health"), "get"));
    http_res_clear(&r);
}

static void test_add_messages_and_search(void **state)
{
    (void)state;
    http_res add = post("/product/add", 200,
                        "{\"user_id\":\"u_add\",\"session_id\":\"s1\",\"custom_tags\":[\"travel\"],"
                        "\"info\":{\"agent_id\":\"a7\"},\"messages\":["
                        "{\"role\":\"user\",\"content\":\"I love hiking in the Swiss Alps every "
                        "summer with my sister\",\"chat_time\":\"2026-01-02T10:00:00\"},"
                        "{\"role\":\"assistant\",\"content\":\"That sounds wonderful!\"}]}");
    const json_t *d = data_of(&add);
    assert_int_equal(json_array_size(d), 1);
    const json_t *e = json_array_get(d, 0);
    assert_string_equal(json_string_value(json_object_get(e, "cube_id")), "u_add");
    assert_string_equal(json_string_value(json_object_get(e, "memory_type")), "LongTermMemory");
    assert_string_equal(json_string_value(json_object_get(e, "memory")),
                        "user: [2026-01-02T10:00:00]: I love hiking in the Swiss Alps every summer "
                        "with my sister\nassistant: That sounds wonderful!\n");
    char id[64];
    snprintf(id, sizeof id, "%s", first_id(&add));

    /* A user-only conversation is UserMemory; an unrelated memory too. */
    http_res add2 = post("/product/add", 200,
                         "{\"user_id\":\"u_add\",\"messages\":[{\"role\":\"user\",\"content\":"
                         "\"My favourite dish is a spicy green curry\"}]}");
    assert_string_equal(
        json_string_value(json_object_get(json_array_get(data_of(&add2), 0), "memory_type")),
        "UserMemory");
    http_res_clear(&add2);

    http_res s = post("/product/search", 200,
                      "{\"user_id\":\"u_add\",\"query\":\"Where do I go hiking in summer?\"}");
    const json_t *data = data_of(&s);
    static const char *const keys[] = {"text_mem", "act_mem",  "para_mem", "pref_mem",
                                       "tool_mem", "skill_mem"};
    for (size_t i = 0; i < 6; i++)
        assert_true(json_is_array(json_object_get(data, keys[i])));
    assert_true(json_is_string(json_object_get(data, "pref_note")));
    const json_t *bucket = json_array_get(json_object_get(data, "text_mem"), 0);
    assert_string_equal(json_string_value(json_object_get(bucket, "cube_id")), "u_add");
    assert_true(json_is_integer(json_object_get(bucket, "total_nodes")));
    const char *bk[] = {"pref_mem", "tool_mem", "skill_mem"};
    for (size_t i = 0; i < 3; i++) {
        const json_t *b = json_array_get(json_object_get(data, bk[i]), 0);
        assert_string_equal(json_string_value(json_object_get(b, "cube_id")), "u_add");
        assert_int_equal(json_array_size(json_object_get(b, "memories")), 0);
    }
    const json_t *mems = text_mems(&s, NULL);
    assert_true(json_array_size(mems) >= 1);
    const json_t *top = json_array_get(mems, 0);
    assert_string_equal(json_string_value(json_object_get(top, "id")), id);
    assert_true(check_item_shape(top, true));
    const json_t *m = json_object_get(top, "metadata");
    assert_string_equal(json_string_value(json_object_get(m, "user_id")), "u_add");
    assert_string_equal(json_string_value(json_object_get(m, "session_id")), "s1");
    assert_string_equal(json_string_value(json_object_get(m, "status")), "activated");
    assert_string_equal(json_string_value(json_object_get(m, "memory_type")), "LongTermMemory");
    const json_t *tags = json_object_get(m, "tags");
    assert_string_equal(json_string_value(json_array_get(tags, 0)), "mode:fast");
    assert_string_equal(json_string_value(json_array_get(tags, 1)), "travel");
    assert_string_equal(json_string_value(json_object_get(json_object_get(m, "info"), "agent_id")),
                        "a7");
    const json_t *sources = json_object_get(m, "sources");
    assert_int_equal(json_array_size(sources), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(sources, 0), "role")),
                        "user");
    assert_int_equal(json_integer_value(json_object_get(json_array_get(sources, 1), "index")), 1);
    double rel = json_number_value(json_object_get(m, "relativity"));
    assert_true(rel >= 0.45 && rel <= 1.0);
    http_res_clear(&s);
    http_res_clear(&add);
}

static void test_memory_content(void **state)
{
    (void)state;
    http_res add = post("/product/add", 200,
                        "{\"user_id\":\"u_mc\",\"mem_cube_id\":\"u_mc\",\"memory_content\":"
                        "\"The wifi password at the cabin is purple-otter-42\"}");
    assert_string_equal(
        json_string_value(json_object_get(json_array_get(data_of(&add), 0), "memory")),
        "The wifi password at the cabin is purple-otter-42");
    char id[64];
    snprintf(id, sizeof id, "%s", first_id(&add));
    http_res s = post("/product/search", 200,
                      "{\"user_id\":\"u_mc\",\"mem_cube_id\":\"u_mc\",\"query\":\"cabin wifi "
                      "password\"}");
    const json_t *mems = text_mems(&s, "u_mc");
    assert_int_equal(json_array_size(mems), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(mems, 0), "id")), id);
    assert_true(check_item_shape(json_array_get(mems, 0), true));
    http_res_clear(&s);
    http_res_clear(&add);
}

static void test_fast_windows(void **state)
{
    (void)state;
    /* 40 messages of ~400 characters (~100 tokens each) make several
     * ~1024-token windows that overlap. */
    json_t *msgs = json_array();
    for (int i = 0; i < 40; i++) {
        char text[512];
        int n = snprintf(text, sizeof text, "message %d: ", i);
        while (n < 400)
            n += snprintf(text + n, sizeof text - (size_t)n, "lorem ipsum dolor sit amet ");
        json_array_append_new(msgs, json_pack("{s:s,s:s}", "role", i % 2 ? "assistant" : "user",
                                              "content", text));
    }
    json_t *body = json_pack("{s:s,s:o}", "user_id", "u_win", "messages", msgs);
    http_res r;
    assert_int_equal(http_post_json(&S, "/product/add", body, &r), 0);
    json_decref(body);
    assert_int_equal(r.status, 200);
    const json_t *d = data_of(&r);
    size_t n = json_array_size(d);
    assert_true(n >= 4 && n <= 8);
    for (size_t i = 0; i < n; i++) {
        const char *text = json_string_value(json_object_get(json_array_get(d, i), "memory"));
        assert_true(strlen(text) <= 4 * 1024 + 512); /* ~1024 tokens at ~4 chars a token */
        if (i + 1 < n) {
            /* Consecutive windows overlap: the next starts with a line of this one. */
            const char *next = json_string_value(json_object_get(json_array_get(d, i + 1), "memory"));
            const char *nl = strchr(next, '\n');
            char first_line[600];
            snprintf(first_line, sizeof first_line, "%.*s", (int)(nl - next), next);
            assert_non_null(strstr(text, first_line));
        }
    }
    http_res_clear(&r);
}

static void add_text(const char *user, const char *text, const char *extra)
{
    http_res r = post("/product/add", 200,
                      "{\"user_id\":\"%s\",\"memory_content\":\"%s\"%s%s}", user, text,
                      extra ? "," : "", extra ? extra : "");
    http_res_clear(&r);
}

static void test_filters(void **state)
{
    (void)state;
    add_text("u_flt", "Quarterly budget review with the finance team",
             "\"info\":{\"topic\":\"work\",\"prio\":3},\"custom_tags\":[\"office\"]");
    add_text("u_flt", "Budget for the family holiday in Portugal",
             "\"info\":{\"topic\":\"home\",\"prio\":1}");
    const char *q = "\"user_id\":\"u_flt\",\"query\":\"budget\",\"relativity\":0";
    http_res r = post("/product/search", 200, "{%s}", q);
    assert_int_equal(json_array_size(text_mems(&r, NULL)), 2);
    http_res_clear(&r);

    r = post("/product/search", 200, "{%s,\"filter\":{\"topic\":\"home\"}}", q);
    const json_t *m = text_mems(&r, NULL);
    assert_int_equal(json_array_size(m), 1);
    assert_non_null(strstr(json_string_value(json_object_get(json_array_get(m, 0), "memory")),
                           "Portugal"));
    http_res_clear(&r);

    r = post("/product/search", 200,
             "{%s,\"filter\":{\"and\":[{\"prio\":{\"gte\":2}},{\"tags\":{\"contains\":"
             "\"office\"}}]}}",
             q);
    m = text_mems(&r, NULL);
    assert_int_equal(json_array_size(m), 1);
    assert_non_null(strstr(json_string_value(json_object_get(json_array_get(m, 0), "memory")),
                           "finance"));
    http_res_clear(&r);

    r = post("/product/search", 200,
             "{%s,\"filter\":{\"or\":[{\"topic\":\"none\"},{\"created_at\":{\"gt\":"
             "\"2000-01-01\"}}]}}",
             q);
    assert_int_equal(json_array_size(text_mems(&r, NULL)), 2);
    http_res_clear(&r);

    /* Per-cube form {cube_id: filter}. */
    r = post("/product/search", 200, "{%s,\"filter\":{\"u_flt\":{\"topic\":\"work\"}}}", q);
    assert_int_equal(json_array_size(text_mems(&r, NULL)), 1);
    http_res_clear(&r);

    /* search_memory_type narrows to one type. */
    r = post("/product/search", 200, "{%s,\"search_memory_type\":\"UserMemory\"}", q);
    assert_int_equal(json_array_size(text_mems(&r, NULL)), 0);
    http_res_clear(&r);
    r = post("/product/search", 200, "{%s,\"search_memory_type\":\"LongTermMemory\"}", q);
    assert_int_equal(json_array_size(text_mems(&r, NULL)), 2);
    http_res_clear(&r);
}

static void test_dedup(void **state)
{
    (void)state;
    for (int i = 0; i < 7; i++)
        add_text("u_dd", "The spare house key is under the blue flower pot", NULL);
    add_text("u_dd", "The car key hangs on the hook by the house door", NULL);
    const char *q = "\"user_id\":\"u_dd\",\"query\":\"where is the spare house key\","
                    "\"relativity\":0,\"top_k\":6";
    /* no: the six best, all the same text. */
    http_res r = post("/product/search", 200, "{%s,\"dedup\":\"no\"}", q);
    const json_t *m = text_mems(&r, NULL);
    assert_int_equal(json_array_size(m), 6);
    for (size_t i = 0; i < 6; i++)
        assert_non_null(
            strstr(json_string_value(json_object_get(json_array_get(m, i), "memory")), "spare"));
    http_res_clear(&r);
    /* sim and exact (null): one of each text. */
    static const char *const modes[] = {"\"sim\"", "null"};
    for (int k = 0; k < 2; k++) {
        r = post("/product/search", 200, "{%s,\"dedup\":%s}", q, modes[k]);
        assert_int_equal(json_array_size(text_mems(&r, NULL)), 2);
        http_res_clear(&r);
    }
    /* mmr (the default): MemOS takes the best five as they are, then trades
     * relevance for diversity: the sixth is the different memory. */
    r = post("/product/search", 200, "{%s}", q);
    m = text_mems(&r, NULL);
    assert_int_equal(json_array_size(m), 6);
    assert_non_null(strstr(json_string_value(json_object_get(json_array_get(m, 5), "memory")), "car"));
    http_res_clear(&r);
}

static void test_relativity(void **state)
{
    (void)state;
    add_text("u_rel", "Grandma's birthday is on the fourth of March", NULL);
    http_res r = post("/product/search", 200,
                      "{\"user_id\":\"u_rel\",\"query\":\"quantum chromodynamics lattice\"}");
    assert_int_equal(json_array_size(text_mems(&r, NULL)), 0); /* default 0.45 drops it */
    http_res_clear(&r);
    r = post("/product/search", 200,
             "{\"user_id\":\"u_rel\",\"query\":\"quantum chromodynamics lattice\",\"relativity\":0}");
    assert_int_equal(json_array_size(text_mems(&r, NULL)), 1);
    http_res_clear(&r);
    r = post("/product/search", 200,
             "{\"user_id\":\"u_rel\",\"query\":\"When is grandma's birthday?\",\"relativity\":0.99}");
    assert_int_equal(json_array_size(text_mems(&r, NULL)), 0);
    http_res_clear(&r);
    r = post("/product/search", 200,
             "{\"user_id\":\"u_rel\",\"query\":\"When is grandma's birthday?\"}");
    assert_int_equal(json_array_size(text_mems(&r, NULL)), 1);
    http_res_clear(&r);
}

static void test_multi_cube_and_session(void **state)
{
    (void)state;
    http_res r = post("/product/create_cube", 200,
                      "{\"cube_name\":\"Recipes\",\"owner_id\":\"u_mc2\",\"cube_id\":\"u_mc2_recipes\"}");
    const json_t *d = data_of(&r);
    assert_string_equal(json_string_value(json_object_get(d, "cube_id")), "u_mc2_recipes");
    assert_string_equal(json_string_value(json_object_get(d, "cube_name")), "Recipes");
    assert_string_equal(json_string_value(json_object_get(d, "owner_id")), "u_mc2");
    http_res_clear(&r);
    r = post("/product/add", 200,
             "{\"user_id\":\"u_mc2\",\"writable_cube_ids\":[\"u_mc2\",\"u_mc2_recipes\"],"
             "\"memory_content\":\"Pancakes need flour, eggs and milk\"}");
    assert_int_equal(json_array_size(data_of(&r)), 2);
    assert_string_not_equal(first_id(&r), json_string_value(json_object_get(
                                              json_array_get(data_of(&r), 1), "memory_id")));
    http_res_clear(&r);
    r = post("/product/add", 200,
             "{\"user_id\":\"u_mc2\",\"writable_cube_ids\":[\"u_mc2_recipes\"],\"session_id\":"
             "\"s2\",\"memory_content\":\"Pancakes need flour, eggs and milk\"}");
    http_res_clear(&r);

    r = post("/product/search", 200,
             "{\"user_id\":\"u_mc2\",\"readable_cube_ids\":[\"u_mc2\",\"u_mc2_recipes\"],"
             "\"query\":\"what do pancakes need\",\"dedup\":\"no\",\"session_id\":\"s2\"}");
    const json_t *tm = json_object_get(data_of(&r), "text_mem");
    assert_int_equal(json_array_size(tm), 2);
    assert_int_equal(json_array_size(text_mems(&r, "u_mc2")), 1);
    const json_t *rec = text_mems(&r, "u_mc2_recipes");
    assert_int_equal(json_array_size(rec), 2);
    /* The session hint ranks the s2 memory first among equals. */
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(json_array_get(rec, 0), "metadata"), "session_id")),
                        "s2");
    http_res_clear(&r);
}

static void test_get_and_delete(void **state)
{
    (void)state;
    http_res a = post("/product/add", 200,
                      "{\"user_id\":\"u_gd\",\"memory_content\":\"Dentist appointment on Friday\","
                      "\"info\":{\"kind\":\"health\"}}");
    char id1[64];
    snprintf(id1, sizeof id1, "%s", first_id(&a));
    http_res_clear(&a);
    a = post("/product/add", 200,
             "{\"user_id\":\"u_gd\",\"memory_content\":\"Buy oat milk and bread\","
             "\"info\":{\"kind\":\"shopping\"}}");
    char id2[64];
    snprintf(id2, sizeof id2, "%s", first_id(&a));
    http_res_clear(&a);

    char path[128];
    snprintf(path, sizeof path, "/product/get_memory/%s", id1);
    http_res r;
    assert_int_equal(http_get(&S, path, &r), 0);
    assert_int_equal(r.status, 200);
    assert_true(check_item_shape(data_of(&r), false));
    assert_string_equal(json_string_value(json_object_get(data_of(&r), "id")), id1);
    http_res_clear(&r);

    r = post("/product/get_memory_by_ids", 200, "[\"%s\",\"%s\"]", id2, id1);
    const json_t *mems = json_object_get(data_of(&r), "memories");
    assert_int_equal(json_array_size(mems), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(mems, 0), "id")), id2);
    assert_true(check_item_shape(json_array_get(mems, 1), false));
    http_res_clear(&r);

    r = post("/product/get_all", 200, "{\"user_id\":\"u_gd\",\"memory_type\":\"text_mem\"}");
    const json_t *entry = json_array_get(data_of(&r), 0);
    assert_string_equal(json_string_value(json_object_get(entry, "cube_id")), "u_gd");
    assert_int_equal(json_array_size(json_object_get(entry, "memories")), 2);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(entry, "memory_statistics"),
                                                        "LongTermMemory")),
                     2);
    http_res_clear(&r);

    r = post("/product/get_memory", 200,
             "{\"mem_cube_id\":\"u_gd\",\"user_id\":\"u_gd\",\"page\":2,\"page_size\":1}");
    const json_t *tb = json_array_get(json_object_get(data_of(&r), "text_mem"), 0);
    assert_int_equal(json_integer_value(json_object_get(tb, "total_nodes")), 2);
    assert_int_equal(json_array_size(json_object_get(tb, "memories")), 1);
    assert_non_null(json_object_get(data_of(&r), "pref_mem"));
    assert_non_null(json_object_get(data_of(&r), "tool_mem"));
    assert_non_null(json_object_get(data_of(&r), "skill_mem"));
    http_res_clear(&r);
    r = post("/product/get_memory", 200,
             "{\"mem_cube_id\":\"u_gd\",\"filter\":{\"kind\":\"shopping\"}}");
    tb = json_array_get(json_object_get(data_of(&r), "text_mem"), 0);
    assert_int_equal(json_integer_value(json_object_get(tb, "total_nodes")), 1);
    http_res_clear(&r);

    /* Delete: exactly one mode, else a MemOS-style failure. */
    r = post("/product/delete_memory", 200, "{\"writable_cube_ids\":[\"u_gd\"]}");
    assert_string_equal(json_string_value(json_object_get(data_of(&r), "status")), "failure");
    http_res_clear(&r);
    r = post("/product/delete_memory", 200,
             "{\"writable_cube_ids\":[\"u_gd\"],\"memory_ids\":[\"%s\"]}", id1);
    assert_string_equal(json_string_value(json_object_get(data_of(&r), "status")), "success");
    http_res_clear(&r);
    assert_int_equal(http_get(&S, path, &r), 0);
    assert_int_equal(r.status, 200);
    assert_true(json_is_null(data_of(&r)));
    http_res_clear(&r);
    r = post("/product/delete_memory", 200,
             "{\"writable_cube_ids\":[\"u_gd\"],\"filter\":{\"kind\":\"shopping\"}}");
    assert_string_equal(json_string_value(json_object_get(data_of(&r), "status")), "success");
    http_res_clear(&r);
    r = post("/product/get_memory_by_ids", 200, "[\"%s\",\"%s\"]", id1, id2);
    assert_int_equal(json_array_size(json_object_get(data_of(&r), "memories")), 0);
    http_res_clear(&r);

    /* Delete by ids without cubes finds their cube. */
    a = post("/product/add", 200, "{\"user_id\":\"u_gd\",\"memory_content\":\"third\"}");
    char id3[64];
    snprintf(id3, sizeof id3, "%s", first_id(&a));
    http_res_clear(&a);
    r = post("/product/delete_memory", 200, "{\"memory_ids\":[\"%s\"]}", id3);
    http_res_clear(&r);
    r = post("/product/get_memory_by_ids", 200, "[\"%s\"]", id3);
    assert_int_equal(json_array_size(json_object_get(data_of(&r), "memories")), 0);
    http_res_clear(&r);
}

static void test_unknown_cube(void **state)
{
    (void)state;
    http_res r = post("/product/search", 404,
                      "{\"user_id\":\"u_uc\",\"readable_cube_ids\":[\"no_such_cube\"],\"query\":\"x\"}");
    assert_true(json_is_null(data_of(&r)));
    assert_non_null(strstr(json_string_value(json_object_get(r.json, "message")), "no_such_cube"));
    http_res_clear(&r);
    r = post("/product/add", 404,
             "{\"user_id\":\"u_uc\",\"writable_cube_ids\":[\"no_such_cube\"],\"memory_content\":"
             "\"x\"}");
    http_res_clear(&r);
    /* The user's own cube before any add: an empty answer, not an error. */
    r = post("/product/search", 200, "{\"user_id\":\"u_uc\",\"query\":\"anything\"}");
    assert_int_equal(json_array_size(text_mems(&r, "u_uc")), 0);
    http_res_clear(&r);
    r = post("/product/exist_mem_cube_id", 200, "{\"mem_cube_id\":\"no_such_cube\"}");
    assert_true(json_is_false(json_object_get(data_of(&r), "no_such_cube")));
    http_res_clear(&r);
}

static void test_sharing(void **state)
{
    (void)state;
    http_res r = post("/product/create_cube", 200,
                      "{\"cube_name\":\"Team\",\"owner_id\":\"alice_sh\",\"cube_id\":\"team_sh\","
                      "\"shared_with\":[\"bob_sh\"]}");
    http_res_clear(&r);
    r = post("/product/create_cube", 200,
             "{\"cube_name\":\"Team\",\"owner_id\":\"alice_sh\",\"cube_id\":\"team_sh\"}");
    assert_true(json_is_false(json_object_get(data_of(&r), "created")));
    http_res_clear(&r);
    r = post("/product/create_cube", 409, "{\"owner_id\":\"eve_sh\",\"cube_id\":\"team_sh\"}");
    http_res_clear(&r);
    r = post("/product/exist_mem_cube_id", 200, "{\"mem_cube_id\":\"team_sh\"}");
    assert_true(json_is_true(json_object_get(data_of(&r), "team_sh")));
    http_res_clear(&r);

    r = post("/product/add", 200,
             "{\"user_id\":\"bob_sh\",\"writable_cube_ids\":[\"team_sh\"],\"memory_content\":"
             "\"The team offsite is in Lisbon in May\"}");
    http_res_clear(&r);
    r = post("/product/search", 200,
             "{\"user_id\":\"alice_sh\",\"readable_cube_ids\":[\"team_sh\"],\"query\":\"where is "
             "the team offsite\"}");
    assert_int_equal(json_array_size(text_mems(&r, "team_sh")), 1);
    http_res_clear(&r);
    r = post("/product/search", 403,
             "{\"user_id\":\"carol_sh\",\"readable_cube_ids\":[\"team_sh\"],\"query\":\"offsite\"}");
    http_res_clear(&r);
    r = post("/product/add", 403,
             "{\"user_id\":\"carol_sh\",\"writable_cube_ids\":[\"team_sh\"],\"memory_content\":"
             "\"sneaky\"}");
    http_res_clear(&r);
    r = post("/product/get_all", 403,
             "{\"user_id\":\"carol_sh\",\"memory_type\":\"text_mem\",\"mem_cube_ids\":[\"team_sh\"]}");
    http_res_clear(&r);
    r = post("/product/register_cube", 403,
             "{\"mem_cube_name_or_path\":\"team_sh\",\"user_id\":\"carol_sh\"}");
    http_res_clear(&r);
    r = post("/product/register_cube", 200,
             "{\"mem_cube_name_or_path\":\"team_sh\",\"user_id\":\"bob_sh\"}");
    assert_string_equal(json_string_value(json_object_get(data_of(&r), "cube_id")), "team_sh");
    http_res_clear(&r);
    /* Nothing carol tried changed the cube. */
    r = post("/product/get_all", 200,
             "{\"user_id\":\"alice_sh\",\"memory_type\":\"text_mem\",\"mem_cube_ids\":[\"team_sh\"]}");
    assert_int_equal(json_array_size(json_object_get(json_array_get(data_of(&r), 0), "memories")),
                     1);
    http_res_clear(&r);
}

static void test_fine_mode_and_chat(void **state)
{
    (void)state;
    http_res r = post("/product/add", 400,
                      "{\"user_id\":\"u_fine\",\"mode\":\"fine\",\"async_mode\":\"sync\","
                      "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}");
    assert_non_null(strstr(json_string_value(json_object_get(r.json, "message")), "fine"));
    http_res_clear(&r);
    r = post("/product/chat/complete", 503, "{\"user_id\":\"u_fine\",\"query\":\"hi\"}");
    http_res_clear(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_health_and_openapi),
        cmocka_unit_test(test_add_messages_and_search),
        cmocka_unit_test(test_memory_content),
        cmocka_unit_test(test_fast_windows),
        cmocka_unit_test(test_filters),
        cmocka_unit_test(test_dedup),
        cmocka_unit_test(test_relativity),
        cmocka_unit_test(test_multi_cube_and_session),
        cmocka_unit_test(test_get_and_delete),
        cmocka_unit_test(test_unknown_cube),
        cmocka_unit_test(test_sharing),
        cmocka_unit_test(test_fine_mode_and_chat),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
