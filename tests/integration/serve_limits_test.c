/*
 * memgrid serve: every bad input of DESIGN §10 gets a clear 4xx in the
 * MemOS envelope ({code = HTTP status, message, data: null}), and nothing is
 * written by a refused request.
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
    return serve_start(&S, NULL, NULL);
}

static int group_teardown(void **state)
{
    (void)state;
    int code = serve_stop(&S, SIGTERM, 10000);
    serve_cleanup(&S);
    curl_global_cleanup();
    return code == 0 ? 0 : -1;
}

/* Sends a request and checks the status, the envelope, data null, and that
 * the message mentions `needle` (when not NULL). */
static void expect(const char *method, const char *path, const char *body, size_t len,
                   long status, const char *needle)
{
    CURL *c = curl_easy_init();
    http_res r;
    assert_int_equal(http_do(c, &S, method, path, body, body ? len : 0, &r), 0);
    curl_easy_cleanup(c);
    if (r.status != status || !is_envelope(&r) ||
        !json_is_null(json_object_get(r.json, "data")) ||
        (needle && !strstr(json_string_value(json_object_get(r.json, "message")), needle)))
        fprintf(stderr, "%s %s %.200s\n -> %ld %.400s\n", method, path, body ? body : "",
                r.status, r.body ? r.body : "");
    assert_int_equal(r.status, status);
    assert_true(is_envelope(&r));
    assert_true(json_is_null(json_object_get(r.json, "data")));
    if (needle)
        assert_non_null(strstr(json_string_value(json_object_get(r.json, "message")), needle));
    http_res_clear(&r);
}

static void post_expect(const char *path, long status, const char *needle, const char *fmt, ...)
{
    char body[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(body, sizeof body, fmt, ap);
    va_end(ap);
    expect("POST", path, body, strlen(body), status, needle);
}

/* Memories in the cube (get_all). */
static size_t count_of(const char *user)
{
    char body[256];
    snprintf(body, sizeof body, "{\"user_id\":\"%s\",\"memory_type\":\"text_mem\"}", user);
    http_res r;
    assert_int_equal(http_post(&S, "/product/get_all", body, &r), 0);
    assert_int_equal(r.status, 200);
    size_t n = json_array_size(
        json_object_get(json_array_get(json_object_get(r.json, "data"), 0), "memories"));
    http_res_clear(&r);
    return n;
}

static void test_body_size(void **state)
{
    (void)state;
    size_t n = (8u << 20) + 100;
    char *big = malloc(n + 64);
    assert_non_null(big);
    int off = snprintf(big, 64, "{\"user_id\":\"lim\",\"memory_content\":\"");
    memset(big + off, 'a', n - (size_t)off - 2);
    memcpy(big + n - 2, "\"}", 2);
    expect("POST", "/product/add", big, n, 413, "larger than");
    free(big);
    assert_int_equal(count_of("lim"), 0);
}

static void test_text_size(void **state)
{
    (void)state;
    size_t n = 70000;
    char *text = malloc(n + 1);
    memset(text, 'b', n);
    text[n] = '\0';
    json_t *body = json_pack("{s:s,s:s}", "user_id", "lim", "memory_content", text);
    char *s = json_dumps(body, JSON_COMPACT);
    expect("POST", "/product/add", s, strlen(s), 413, "bytes");
    free(s);
    json_decref(body);
    /* A message that alone makes a window past the limit. */
    body = json_pack("{s:s,s:[{s:s,s:s}]}", "user_id", "lim", "messages", "role", "user",
                     "content", text);
    s = json_dumps(body, JSON_COMPACT);
    expect("POST", "/product/add", s, strlen(s), 413, "bytes");
    free(s);
    json_decref(body);
    /* A query past its limit. */
    body = json_pack("{s:s,s:s}", "user_id", "lim", "query", text);
    s = json_dumps(body, JSON_COMPACT);
    expect("POST", "/product/search", s, strlen(s), 413, "query");
    free(s);
    json_decref(body);
    free(text);
    assert_int_equal(count_of("lim"), 0);
}

static void test_top_k(void **state)
{
    (void)state;
    const char *b = "\"user_id\":\"lim\",\"query\":\"x\"";
    post_expect("/product/search", 422, "top_k", "{%s,\"top_k\":0}", b);
    post_expect("/product/search", 422, "top_k", "{%s,\"top_k\":-3}", b);
    post_expect("/product/search", 400, "top_k", "{%s,\"top_k\":100000}", b);
    post_expect("/product/search", 422, "top_k", "{%s,\"top_k\":\"ten\"}", b);
    post_expect("/product/search", 422, "top_k", "{%s,\"top_k\":2.5}", b);
    post_expect("/product/search", 422, "relativity", "{%s,\"relativity\":-0.1}", b);
}

static void test_dimension_and_nan(void **state)
{
    (void)state;
    post_expect("/product/add", 400, "dimension",
                "{\"user_id\":\"lim\",\"memories\":[{\"memory\":\"v\",\"metadata\":{"
                "\"embedding\":[0.1,0.2,0.3]}}]}");
    /* JSON has no NaN or Infinity: both the literals and an overflowing
     * number are refused before anything else. */
    post_expect("/product/add", 422, "NaN",
                "{\"user_id\":\"lim\",\"memories\":[{\"memory\":\"v\",\"metadata\":{"
                "\"embedding\":[NaN,0.2]}}]}");
    post_expect("/product/add", 422, "JSON",
                "{\"user_id\":\"lim\",\"memories\":[{\"memory\":\"v\",\"metadata\":{"
                "\"embedding\":[1e999,0.2]}}]}");
    post_expect("/product/add", 422, "JSON",
                "{\"user_id\":\"lim\",\"memories\":[{\"memory\":\"v\",\"metadata\":{"
                "\"embedding\":[Infinity]}}]}");
    assert_int_equal(count_of("lim"), 0);
}

static void test_id_format(void **state)
{
    (void)state;
    expect("GET", "/product/get_memory/not-a-uuid", NULL, 0, 422, "not a memory id");
    post_expect("/product/get_memory_by_ids", 422, "memory_ids[1]",
                "[\"123e4567-e89b-12d3-a456-426614174000\",\"nope\"]");
    post_expect("/product/get_memory_by_ids", 422, "list", "{\"ids\":3}");
    post_expect("/product/delete_memory", 422, "memory_ids[0]",
                "{\"writable_cube_ids\":[\"lim\"],\"memory_ids\":[\"xyz\"]}");
    post_expect("/product/add", 422, "id",
                "{\"user_id\":\"lim\",\"memories\":[{\"id\":\"xyz\",\"memory\":\"v\"}]}");
    post_expect("/product/add", 422, "cube id",
                "{\"user_id\":\"lim\",\"writable_cube_ids\":[\"bad cube!\"],\"memory_content\":"
                "\"v\"}");
    post_expect("/product/search", 422, "user_id", "{\"user_id\":\"\",\"query\":\"x\"}");
    post_expect("/product/search", 422, "user_id", "{\"user_id\":\"a\\u0001b\",\"query\":\"x\"}");
    assert_int_equal(count_of("lim"), 0);
}

static void test_unknown_cube(void **state)
{
    (void)state;
    post_expect("/product/search", 404, "nosuch",
                "{\"user_id\":\"lim\",\"readable_cube_ids\":[\"nosuch\"],\"query\":\"x\"}");
    post_expect("/product/search", 404, "nosuch",
                "{\"user_id\":\"lim\",\"mem_cube_id\":\"nosuch\",\"query\":\"x\"}");
    post_expect("/product/add", 404, "nosuch",
                "{\"user_id\":\"lim\",\"writable_cube_ids\":[\"nosuch\"],\"memory_content\":\"v\"}");
    post_expect("/product/get_memory", 404, "nosuch", "{\"mem_cube_id\":\"nosuch\"}");
    post_expect("/product/get_all", 404, "nosuch",
                "{\"user_id\":\"lim\",\"memory_type\":\"text_mem\",\"mem_cube_ids\":[\"nosuch\"]}");
    post_expect("/product/delete_memory", 404, "nosuch",
                "{\"writable_cube_ids\":[\"nosuch\"],\"filter\":{\"a\":1}}");
}

static void test_malformed_json(void **state)
{
    (void)state;
    post_expect("/product/search", 422, "malformed JSON", "{\"user_id\":\"lim\",");
    post_expect("/product/add", 422, "malformed JSON", "not json at all");
    expect("POST", "/product/search", "", 0, 422, "empty");
    post_expect("/product/search", 422, "object", "[1,2,3]");
    post_expect("/product/search", 422, "query", "{\"user_id\":\"lim\"}");
    post_expect("/product/search", 422, "query", "{\"user_id\":\"lim\",\"query\":5}");
    post_expect("/product/add", 422, "user_id", "{\"memory_content\":\"v\"}");
    post_expect("/product/add", 422, "nothing to add", "{\"user_id\":\"lim\"}");
    post_expect("/product/add", 422, "messages[0].content",
                "{\"user_id\":\"lim\",\"messages\":[{\"role\":\"user\",\"content\":7}]}");
    post_expect("/product/add", 422, "async_mode",
                "{\"user_id\":\"lim\",\"async_mode\":\"later\",\"memory_content\":\"v\"}");
    post_expect("/product/search", 422, "dedup",
                "{\"user_id\":\"lim\",\"query\":\"x\",\"dedup\":\"maybe\"}");
    post_expect("/product/search", 422, "search_memory_type",
                "{\"user_id\":\"lim\",\"query\":\"x\",\"search_memory_type\":\"Dreams\"}");
    post_expect("/product/get_all", 422, "memory_type",
                "{\"user_id\":\"lim\",\"memory_type\":\"everything\"}");
    assert_int_equal(count_of("lim"), 0);
}

static void test_malformed_filter(void **state)
{
    (void)state;
    const char *b = "\"user_id\":\"lim\",\"query\":\"x\"";
    post_expect("/product/search", 400, "filter", "{%s,\"filter\":{\"and\":3}}", b);
    post_expect("/product/search", 400, "unknown operator",
                "{%s,\"filter\":{\"created_at\":{\"after\":\"2020-01-01\"}}}", b);
    post_expect("/product/search", 400, "filter", "{%s,\"filter\":\"topic = a\"}", b);
    post_expect("/product/get_memory", 400, "filter",
                "{\"mem_cube_id\":\"lim\",\"filter\":{\"or\":{}}}");
    post_expect("/product/delete_memory", 400, "filter",
                "{\"writable_cube_ids\":[\"lim\"],\"filter\":{\"x\":{\"gt\":[1]}}}");
}

static void test_method_and_path(void **state)
{
    (void)state;
    CURL *c = curl_easy_init();
    http_res r;
    assert_int_equal(http_do(c, &S, "GET", "/product/search", NULL, 0, &r), 0);
    assert_int_equal(r.status, 405);
    assert_true(is_envelope(&r));
    assert_string_equal(r.allow, "POST");
    http_res_clear(&r);
    assert_int_equal(http_do(c, &S, "POST", "/health", "{}", 2, &r), 0);
    assert_int_equal(r.status, 405);
    assert_string_equal(r.allow, "GET");
    http_res_clear(&r);
    assert_int_equal(http_do(c, &S, "DELETE", "/product/add", NULL, 0, &r), 0);
    assert_int_equal(r.status, 405);
    http_res_clear(&r);
    curl_easy_cleanup(c);
    expect("GET", "/nope", NULL, 0, 404, "no such endpoint");
    expect("POST", "/product/nope", "{}", 2, 404, "no such endpoint");
    expect("GET", "/product/get_memory/a/b", NULL, 0, 404, "no such endpoint");
}

static void test_fine_mode(void **state)
{
    (void)state;
    post_expect("/product/add", 400, "MEMGRID_CHAT_URL",
                "{\"user_id\":\"lim\",\"mode\":\"fine\",\"memory_content\":\"v\"}");
    post_expect("/product/add", 422, "mode",
                "{\"user_id\":\"lim\",\"mode\":\"slow\",\"memory_content\":\"v\"}");
    assert_int_equal(count_of("lim"), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_body_size),       cmocka_unit_test(test_text_size),
        cmocka_unit_test(test_top_k),           cmocka_unit_test(test_dimension_and_nan),
        cmocka_unit_test(test_id_format),       cmocka_unit_test(test_unknown_cube),
        cmocka_unit_test(test_malformed_json),  cmocka_unit_test(test_malformed_filter),
        cmocka_unit_test(test_method_and_path), cmocka_unit_test(test_fine_mode),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
