/* router/llm: the chat client of fine mode, against the in-process server of
 * mock_http.h, and the parser of its replies. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "lib/error.h"
#include "router/llm.h"
#include "mock_http.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KEY_ENV "MG_TEST_CHAT_KEY"

static mock_server *srv;

static int setup(void **state)
{
    (void)state;
    srv = mock_start(4);
    setenv(KEY_ENV, "sk-chat", 1);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    mock_stop(srv);
    srv = NULL;
    return 0;
}

static mg_llm *open_llm(const char *url_suffix)
{
    mg_llm_config cfg;
    mg_llm_config_init(&cfg);
    mock_url(srv, url_suffix, cfg.url, sizeof cfg.url);
    snprintf(cfg.model, sizeof cfg.model, "test-chat");
    snprintf(cfg.api_key_env, sizeof cfg.api_key_env, KEY_ENV);
    cfg.timeout_ms = 5000;
    cfg.backoff_ms = 5;
    mg_llm *llm;
    mg_error err = {0};
    int rc = mg_llm_open(&cfg, &llm, &err);
    if (rc != MG_OK)
        fail_msg("open: %s: %s", mg_errname(rc), err.msg);
    assert_true(mg_llm_configured(llm));
    return llm;
}

static const char conversation[] =
    "user: [2026-03-01T10:00:00]: I adopted a cat named Milo yesterday.\n"
    "assistant: [2026-03-01T10:00:05]: Congratulations! How is Milo settling in?\n"
    "user: [2026-03-01T10:01:00]: Great, but I'm allergic, so I take cetirizine.\n";

static int extract(mg_llm *llm, mg_llm_memory **m, size_t *n, mg_error *err)
{
    mg_error_clear(err);
    return mg_llm_extract_memories(llm, conversation, strlen(conversation), m, n, err);
}

static void expect_error(int rc, const mg_error *err, int code, const char *word)
{
    if (rc != code)
        fail_msg("got %s (%s), want %s", mg_errname(rc), err->msg, mg_errname(code));
    if (word != NULL && strstr(err->msg, word) == NULL)
        fail_msg("message \"%s\" lacks \"%s\"", err->msg, word);
}

static void test_fenced_reply(void **state)
{
    (void)state;
    mg_llm *llm = open_llm("/v1");
    mock_set_chat_reply(
        srv,
        "Sure! Here are the memories:\n```json\n"
        "{\"memories\": [\n"
        "  {\"key\": \"Adopted cat\", \"memory\": \"On 2026-02-28 the user adopted a cat "
        "named Milo.\", \"memory_type\": \"UserMemory\", \"tags\": [\"pets\", \"cat\"]},\n"
        "  {\"key\": \"Allergy\", \"memory\": \"  The user is allergic to cats and takes "
        "cetirizine.  \", \"memory_type\": \"Nonsense\", \"tags\": [\"health\", 3]}\n"
        "]}\n```\nLet me know if you need more.",
        "stop");
    mg_llm_memory *m;
    size_t n;
    mg_error err;
    int rc = extract(llm, &m, &n, &err);
    if (rc != MG_OK)
        fail_msg("extract: %s", err.msg);
    assert_int_equal(n, 2);
    assert_string_equal(m[0].memory, "On 2026-02-28 the user adopted a cat named Milo.");
    assert_string_equal(m[0].key, "Adopted cat");
    assert_string_equal(m[0].memory_type, "UserMemory");
    assert_int_equal(m[0].n_tags, 2);
    assert_string_equal(m[0].tags[0], "pets");
    assert_string_equal(m[0].tags[1], "cat");
    assert_string_equal(m[1].memory, "The user is allergic to cats and takes cetirizine.");
    assert_null(m[1].memory_type); /* not a MemOS type: left to the router */
    assert_int_equal(m[1].n_tags, 1);
    mg_llm_memories_free(m, n);

    /* what was asked */
    struct mock_stats st;
    mock_get_stats(srv, &st);
    assert_string_equal(st.last_path, "/v1/chat/completions");
    assert_string_equal(st.last_auth, "Bearer sk-chat");
    assert_string_equal(st.last_model, "test-chat");
    char *body = mock_last_body(srv);
    assert_non_null(strstr(body, "\"response_format\":{\"type\":\"json_object\"}"));
    assert_non_null(strstr(body, "\"role\":\"system\""));
    assert_non_null(strstr(body, "I adopted a cat named Milo yesterday."));
    assert_non_null(strstr(body, "Current time (UTC): "));
    free(body);
    mg_llm_close(llm);
}

static void test_reply_shapes(void **state)
{
    (void)state;
    static const struct {
        const char *reply;
        size_t n;
        const char *first;
        const char *key;
    } cases[] = {
        /* a bare list of strings */
        {"[\"The user likes tea.\", \"The user lives in Lyon.\"]", 2, "The user likes tea.", NULL},
        /* MemOS's own shape */
        {"{\"memory list\": [{\"key\": \"Tea\", \"memory_type\": \"UserMemory\", \"value\": "
         "\"The user likes tea.\", \"tags\": [\"drinks\"]}], \"summary\": \"tea\"}",
         1, "The user likes tea.", "Tea"},
        /* prose around an object, no fence */
        {"The JSON is {\"facts\": [{\"text\": \"A fact.\"}]} as requested.", 1, "A fact.", NULL},
        /* an object holding one list under another name */
        {"{\"items\": [{\"content\": \"X is 3.\", \"title\": \"X\"}]}", 1, "X is 3.", "X"},
        /* nothing worth keeping */
        {"{\"memories\": []}", 0, NULL, NULL},
        /* blank and text-less elements are skipped */
        {"{\"memories\": [\"  \", {\"key\": \"k\"}, 7, \"Kept.\"]}", 1, "Kept.", NULL},
        /* a fence without a language tag */
        {"```\n[\"Fenced.\"]\n```", 1, "Fenced.", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        mg_llm_memory *m;
        size_t n;
        mg_error err = {0};
        int rc = mg_llm_parse_memories(cases[i].reply, strlen(cases[i].reply), &m, &n, &err);
        if (rc != MG_OK)
            fail_msg("case %zu: %s", i, err.msg);
        assert_int_equal(n, cases[i].n);
        if (n > 0) {
            assert_string_equal(m[0].memory, cases[i].first);
            if (cases[i].key != NULL)
                assert_string_equal(m[0].key, cases[i].key);
            else
                assert_null(m[0].key);
        }
        mg_llm_memories_free(m, n);
    }
}

static void test_malformed_reply(void **state)
{
    (void)state;
    mg_llm *llm = open_llm("");
    mg_llm_memory *m;
    size_t n;
    mg_error err;

    mock_set_chat_reply(srv, "I'm sorry, I cannot help with that.", "stop");
    expect_error(extract(llm, &m, &n, &err), &err, MG_ECORRUPT, "not JSON");
    assert_non_null(strstr(err.msg, "I'm sorry, I cannot"));
    assert_null(m);
    assert_int_equal(n, 0);

    mock_set_chat_reply(srv, "{\"answer\": 42}", "stop");
    expect_error(extract(llm, &m, &n, &err), &err, MG_ECORRUPT, "no list of memories");

    mock_set_chat_reply(srv, "{\"memories\": [{\"memory\": \"The user adopt", "length");
    expect_error(extract(llm, &m, &n, &err), &err, MG_ECORRUPT, "cut off");

    mock_set_chat_reply(srv, NULL, "stop");
    expect_error(extract(llm, &m, &n, &err), &err, MG_ECORRUPT, "content");

    mock_push_fault(srv, MOCK_GARBAGE);
    expect_error(extract(llm, &m, &n, &err), &err, MG_ECORRUPT, "not JSON");
    mg_llm_close(llm);
}

static void test_response_format_fallback(void **state)
{
    (void)state;
    mg_llm *llm = open_llm("");
    mock_set_reject_response_format(srv, true);
    mock_set_chat_reply(srv, "[\"One.\"]", "stop");
    mg_llm_memory *m;
    size_t n;
    mg_error err;
    assert_int_equal(extract(llm, &m, &n, &err), MG_OK);
    assert_int_equal(n, 1);
    mg_llm_memories_free(m, n);
    struct mock_stats st;
    mock_get_stats(srv, &st);
    assert_int_equal(st.chat_requests, 2);
    /* remembered: the next request goes plain at once */
    mock_reset_stats(srv);
    assert_int_equal(extract(llm, &m, &n, &err), MG_OK);
    mg_llm_memories_free(m, n);
    mock_get_stats(srv, &st);
    assert_int_equal(st.chat_requests, 1);
    char *body = mock_last_body(srv);
    assert_null(strstr(body, "response_format"));
    free(body);
    mg_llm_close(llm);
}

static void test_transport_errors(void **state)
{
    (void)state;
    mg_llm *llm = open_llm("/v1/chat/completions");
    mock_set_chat_reply(srv, "[\"One.\"]", "stop");
    mg_llm_memory *m;
    size_t n;
    mg_error err;

    mock_reset_stats(srv);
    mock_push_fault(srv, MOCK_500);
    assert_int_equal(extract(llm, &m, &n, &err), MG_OK);
    mg_llm_memories_free(m, n);
    struct mock_stats st;
    mock_get_stats(srv, &st);
    assert_int_equal(st.requests, 2);
    assert_string_equal(st.last_path, "/v1/chat/completions");

    mock_reset_stats(srv);
    mock_push_fault(srv, MOCK_401);
    expect_error(extract(llm, &m, &n, &err), &err, MG_EPERM, "Incorrect API key");
    mock_get_stats(srv, &st);
    assert_int_equal(st.requests, 1);

    const char bad[] = "user: \xc3(";
    assert_int_equal(mg_llm_extract_memories(llm, bad, sizeof bad - 1, &m, &n, &err), MG_EINVAL);
    char *big = malloc(MG_LLM_INPUT_MAX + 1);
    assert_non_null(big);
    memset(big, 'a', MG_LLM_INPUT_MAX + 1);
    assert_int_equal(mg_llm_extract_memories(llm, big, MG_LLM_INPUT_MAX + 1, &m, &n, &err),
                     MG_ETOOBIG);
    free(big);
    mg_llm_close(llm);
}

static void test_not_configured(void **state)
{
    (void)state;
    unsetenv("MEMGRID_CHAT_URL");
    unsetenv("MEMGRID_CHAT_MODEL");
    unsetenv("MEMGRID_CHAT_KEY_ENV");
    unsetenv("MEMGRID_CHAT_TIMEOUT_MS");
    mg_llm_config cfg;
    mg_error err;
    assert_int_equal(mg_llm_config_from_env(&cfg, &err), MG_OK);
    assert_string_equal(cfg.url, "");
    mg_llm *llm = NULL;
    expect_error(mg_llm_open(&cfg, &llm, &err), &err, MG_EINVAL, "MEMGRID_CHAT_URL");
    assert_string_equal(err.msg, MG_LLM_NOT_CONFIGURED_MSG);
    assert_null(llm);
    assert_false(mg_llm_configured(NULL));

    setenv("MEMGRID_CHAT_URL", "http://127.0.0.1:11434/v1", 1);
    setenv("MEMGRID_CHAT_MODEL", "llama3.2", 1);
    setenv("MEMGRID_CHAT_KEY_ENV", "none", 1);
    setenv("MEMGRID_CHAT_TIMEOUT_MS", "1234", 1);
    assert_int_equal(mg_llm_config_from_env(&cfg, &err), MG_OK);
    assert_string_equal(cfg.url, "http://127.0.0.1:11434/v1");
    assert_int_equal(cfg.timeout_ms, 1234);
    assert_int_equal(mg_llm_open(&cfg, &llm, &err), MG_OK);
    assert_string_equal(mg_llm_model(llm), "llama3.2");
    mg_llm_close(llm);

    /* a named key that is missing fails at open, by name */
    snprintf(cfg.api_key_env, sizeof cfg.api_key_env, "MG_TEST_NO_CHAT_KEY");
    unsetenv("MG_TEST_NO_CHAT_KEY");
    expect_error(mg_llm_open(&cfg, &llm, &err), &err, MG_EINVAL, "MG_TEST_NO_CHAT_KEY");

    setenv("MEMGRID_CHAT_TIMEOUT_MS", "soon", 1);
    expect_error(mg_llm_config_from_env(&cfg, &err), &err, MG_EINVAL, "MEMGRID_CHAT_TIMEOUT_MS");
    unsetenv("MEMGRID_CHAT_URL");
    unsetenv("MEMGRID_CHAT_MODEL");
    unsetenv("MEMGRID_CHAT_KEY_ENV");
    unsetenv("MEMGRID_CHAT_TIMEOUT_MS");
}

int main(void)
{
    static const char *const proxies[] = {"http_proxy",  "HTTP_PROXY", "https_proxy",
                                          "HTTPS_PROXY", "all_proxy",  "ALL_PROXY"};
    for (size_t i = 0; i < sizeof proxies / sizeof proxies[0]; i++)
        unsetenv(proxies[i]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_fenced_reply, setup, teardown),
        cmocka_unit_test(test_reply_shapes),
        cmocka_unit_test_setup_teardown(test_malformed_reply, setup, teardown),
        cmocka_unit_test_setup_teardown(test_response_format_fallback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_transport_errors, setup, teardown),
        cmocka_unit_test(test_not_configured),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
