/* router/embed: the embedder interface, with the remote embedders talking to
 * an in-process server (mock_http.h) that speaks the OpenAI and Ollama
 * protocols and misbehaves on request. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "lib/clock.h"
#include "lib/error.h"
#include "router/embed.h"
#include "router/embed_hash.h"
#include "mock_http.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define DIM 8
#define KEY_ENV "MG_TEST_EMBED_KEY"

static mock_server *srv;

static int setup(void **state)
{
    (void)state;
    srv = mock_start(DIM);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    mock_stop(srv);
    srv = NULL;
    return 0;
}

static void config_remote(mg_embedder_config *cfg, int kind, const char *url_suffix)
{
    mg_embedder_config_init(cfg);
    cfg->kind = kind;
    mock_url(srv, url_suffix, cfg->url, sizeof cfg->url);
    snprintf(cfg->model, sizeof cfg->model, "test-embed");
    snprintf(cfg->api_key_env, sizeof cfg->api_key_env, "%s",
             kind == MG_EMBEDDER_OPENAI ? KEY_ENV : "");
    cfg->backoff_ms = 5;
    cfg->timeout_ms = 5000;
}

static mg_embedder *open_ok(const mg_embedder_config *cfg)
{
    mg_embedder *emb;
    mg_error err = {0};
    int rc = mg_embedder_open(cfg, &emb, &err);
    if (rc != MG_OK)
        fail_msg("open: %s: %s", mg_errname(rc), err.msg);
    return emb;
}

static mg_embedder *open_remote(int kind, const char *url_suffix, uint32_t dim)
{
    mg_embedder_config cfg;
    config_remote(&cfg, kind, url_suffix);
    cfg.dim = dim;
    return open_ok(&cfg);
}

static void probe_ok(mg_embedder *emb, uint32_t expect)
{
    uint32_t dim = 0;
    mg_error err = {0};
    int rc = mg_embedder_probe(emb, &dim, &err);
    if (rc != MG_OK)
        fail_msg("probe: %s: %s", mg_errname(rc), err.msg);
    assert_int_equal(dim, expect);
    assert_int_equal(mg_embedder_dim(emb), expect);
}

/* Embeds texts; returns the code and leaves the message in err. */
static int embed(mg_embedder *emb, const char *const *texts, size_t n, float *out, mg_error *err)
{
    size_t lens[64];
    assert_true(n <= 64);
    for (size_t i = 0; i < n; i++)
        lens[i] = strlen(texts[i]);
    mg_error_clear(err);
    return mg_embedder_embed(emb, texts, lens, n, MG_EMBED_DOCUMENT, out, err);
}

static void check_vectors(const char *const *texts, size_t n, uint32_t dim, const float *out)
{
    for (size_t i = 0; i < n; i++)
        for (uint32_t j = 0; j < dim; j++) {
            float want = mock_value(texts[i], strlen(texts[i]), j);
            if (out[i * dim + j] != want)
                fail_msg("text %zu (%s) value %u: got %g, want %g", i, texts[i], j,
                         (double)out[i * dim + j], (double)want);
        }
}

static void embed_ok(mg_embedder *emb, const char *const *texts, size_t n)
{
    uint32_t dim = mg_embedder_dim(emb);
    float *out = malloc(n * dim * sizeof *out);
    assert_non_null(out);
    mg_error err;
    int rc = embed(emb, texts, n, out, &err);
    if (rc != MG_OK)
        fail_msg("embed: %s: %s", mg_errname(rc), err.msg);
    check_vectors(texts, n, dim, out);
    free(out);
}

/* Expects code and a message containing each of the NULL-terminated words. */
static void expect_error(int rc, const mg_error *err, int code, ...)
{
    if (rc != code)
        fail_msg("got %s (%s), want %s", mg_errname(rc), err->msg, mg_errname(code));
    assert_int_equal(err->code, code);
    va_list ap;
    va_start(ap, code);
    for (const char *w = va_arg(ap, const char *); w != NULL; w = va_arg(ap, const char *))
        if (strstr(err->msg, w) == NULL)
            fail_msg("message \"%s\" lacks \"%s\"", err->msg, w);
    va_end(ap);
}

static const char *const three[] = {"alpha", "beta gamma", "Ünïcode 東京"};

/* ---- hash through the interface ---- */

static void test_hash_equals_embed_hash(void **state)
{
    (void)state;
    mg_embedder_config cfg;
    mg_embedder_config_init(&cfg);
    mg_embedder *emb = open_ok(&cfg);
    assert_string_equal(mg_embedder_name(emb), "hash");
    assert_int_equal(mg_embedder_dim(emb), MG_EMBED_HASH_DIM_DEFAULT);
    uint32_t dim = 0;
    mg_error err = {0};
    assert_int_equal(mg_embedder_probe(emb, &dim, &err), MG_OK);
    assert_int_equal(dim, 384);

    float got[3 * 384], want[384];
    for (int role = MG_EMBED_DOCUMENT; role <= MG_EMBED_QUERY; role++) {
        size_t lens[3];
        for (size_t i = 0; i < 3; i++)
            lens[i] = strlen(three[i]);
        assert_int_equal(mg_embedder_embed(emb, three, lens, 3, role, got, &err), MG_OK);
        for (size_t i = 0; i < 3; i++) {
            assert_int_equal(mg_embed_hash(three[i], lens[i], role, want, 384, &err), MG_OK);
            assert_memory_equal(got + i * 384, want, sizeof want);
        }
    }
    /* bad UTF-8 and unknown roles are refused */
    const char *bad[1] = {"\xff"};
    size_t bad_len[1] = {1};
    assert_int_equal(mg_embedder_embed(emb, bad, bad_len, 1, MG_EMBED_DOCUMENT, got, &err),
                     MG_EINVAL);
    assert_int_equal(mg_embedder_embed(emb, three, bad_len, 1, 7, got, &err), MG_EINVAL);
    mg_embedder_close(emb);

    cfg.dim = 64;
    emb = open_ok(&cfg);
    assert_int_equal(mg_embedder_dim(emb), 64);
    size_t len = strlen(three[0]);
    assert_int_equal(mg_embedder_embed(emb, three, &len, 1, MG_EMBED_QUERY, got, &err), MG_OK);
    assert_int_equal(mg_embed_hash(three[0], len, MG_EMBED_QUERY, want, 64, &err), MG_OK);
    assert_memory_equal(got, want, 64 * sizeof(float));
    mg_embedder_close(emb);

    cfg.dim = MG_EMBED_HASH_DIM_MAX + 1;
    mg_embedder *none = (mg_embedder *)&cfg;
    expect_error(mg_embedder_open(&cfg, &none, &err), &err, MG_EINVAL, "dimension", NULL);
    assert_null(none);
}

/* ---- the protocols ---- */

static void test_openai_learns_dim_and_sends_key(void **state)
{
    (void)state;
    setenv(KEY_ENV, "sk-test-123", 1);
    mg_embedder *emb = open_remote(MG_EMBEDDER_OPENAI, "", 0);
    assert_string_equal(mg_embedder_name(emb), "openai:test-embed");
    assert_int_equal(mg_embedder_dim(emb), 0);
    float out[3 * DIM];
    mg_error err;
    expect_error(embed(emb, three, 3, out, &err), &err, MG_EINVAL, "mg_embedder_probe", NULL);
    probe_ok(emb, DIM);
    embed_ok(emb, three, 3);

    struct mock_stats st;
    mock_get_stats(srv, &st);
    assert_string_equal(st.last_path, "/v1/embeddings");
    assert_string_equal(st.last_auth, "Bearer sk-test-123");
    assert_string_equal(st.last_model, "test-embed");
    assert_int_equal(st.embed_requests, 2); /* the probe, then one batch */
    assert_int_equal(st.batches[1], 3);
    char *body = mock_last_body(srv);
    assert_non_null(strstr(body, "\"input\":[\"alpha\",\"beta gamma\",\"Ünïcode 東京\"]"));
    free(body);
    /* a second probe needs no request */
    probe_ok(emb, DIM);
    mock_get_stats(srv, &st);
    assert_int_equal(st.requests, 2);
    mg_embedder_close(emb);
}

static void test_openai_url_forms(void **state)
{
    (void)state;
    setenv(KEY_ENV, "k", 1);
    static const struct {
        const char *suffix;
        const char *path;
    } forms[] = {
        {"", "/v1/embeddings"},
        {"/", "/v1/embeddings"},
        {"/v1", "/v1/embeddings"},
        {"/v1/", "/v1/embeddings"},
        {"/v1/embeddings", "/v1/embeddings"},
        {"/openai/v1", "/openai/v1/embeddings"},
    };
    for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
        mg_embedder *emb = open_remote(MG_EMBEDDER_OPENAI, forms[i].suffix, DIM);
        embed_ok(emb, three, 1);
        struct mock_stats st;
        mock_get_stats(srv, &st);
        if (strcmp(st.last_path, forms[i].path) != 0)
            fail_msg("base ...%s: POST %s, want %s", forms[i].suffix, st.last_path, forms[i].path);
        mg_embedder_close(emb);
    }
}

static void test_ollama(void **state)
{
    (void)state;
    static const char *const suffixes[] = {"", "/", "/api", "/api/embed"};
    for (size_t i = 0; i < 4; i++) {
        mg_embedder_config cfg;
        config_remote(&cfg, MG_EMBEDDER_OLLAMA, suffixes[i]);
        snprintf(cfg.model, sizeof cfg.model, "nomic-embed-text");
        mg_embedder *emb = open_ok(&cfg);
        assert_string_equal(mg_embedder_name(emb), "ollama:nomic-embed-text");
        probe_ok(emb, DIM);
        embed_ok(emb, three, 3);
        struct mock_stats st;
        mock_get_stats(srv, &st);
        assert_string_equal(st.last_path, "/api/embed");
        assert_string_equal(st.last_auth, ""); /* ollama sends no key by default */
        assert_string_equal(st.last_model, "nomic-embed-text");
        mg_embedder_close(emb);
    }
}

static void test_batching_keeps_order(void **state)
{
    (void)state;
    setenv(KEY_ENV, "k", 1);
    static const char *const ten[] = {"t0", "t1", "t2", "t3", "t4", "t5", "t6", "t7", "t8", "t9"};
    for (int kind = MG_EMBEDDER_OPENAI; kind <= MG_EMBEDDER_OLLAMA; kind++) {
        mg_embedder_config cfg;
        config_remote(&cfg, kind, "");
        cfg.dim = DIM;
        cfg.batch_max = 4;
        mg_embedder *emb = open_ok(&cfg);
        mock_reset_stats(srv);
        embed_ok(emb, ten, 10);
        struct mock_stats st;
        mock_get_stats(srv, &st);
        assert_int_equal(st.embed_requests, 3); /* ceil(10 / 4) */
        assert_int_equal(st.batches[0], 4);
        assert_int_equal(st.batches[1], 4);
        assert_int_equal(st.batches[2], 2);
        /* exactly a multiple */
        mock_reset_stats(srv);
        embed_ok(emb, ten, 8);
        mock_get_stats(srv, &st);
        assert_int_equal(st.embed_requests, 2);
        mg_embedder_close(emb);
    }
}

static void test_connection_reuse(void **state)
{
    (void)state;
    setenv(KEY_ENV, "k", 1);
    mg_embedder *emb = open_remote(MG_EMBEDDER_OPENAI, "/v1", DIM);
    mock_reset_stats(srv);
    for (int i = 0; i < 10; i++)
        embed_ok(emb, three, 3);
    /* a 500 answer does not cost the connection either */
    mock_push_fault(srv, MOCK_500);
    embed_ok(emb, three, 2);
    struct mock_stats st;
    mock_get_stats(srv, &st);
    assert_int_equal(st.requests, 12);
    assert_int_equal(st.connections, 1);
    mg_embedder_close(emb);
}

struct worker {
    mg_embedder *emb;
    int id;
    int failures;
};

static void *worker_run(void *arg)
{
    struct worker *w = arg;
    for (int i = 0; i < 25; i++) {
        char a[32], b[32];
        snprintf(a, sizeof a, "w%d-%d", w->id, i);
        snprintf(b, sizeof b, "other %d %d", i, w->id);
        const char *texts[2] = {a, b};
        size_t lens[2] = {strlen(a), strlen(b)};
        float out[2 * DIM];
        mg_error err;
        if (mg_embedder_embed(w->emb, texts, lens, 2, MG_EMBED_QUERY, out, &err) != MG_OK) {
            w->failures++;
            continue;
        }
        for (size_t t = 0; t < 2; t++)
            for (uint32_t j = 0; j < DIM; j++)
                if (out[t * DIM + j] != mock_value(texts[t], lens[t], j))
                    w->failures++;
    }
    return NULL;
}

static void test_concurrent_threads(void **state)
{
    (void)state;
    setenv(KEY_ENV, "k", 1);
    mg_embedder *emb = open_remote(MG_EMBEDDER_OPENAI, "", DIM);
    mock_reset_stats(srv);
    enum { THREADS = 4 };
    pthread_t tid[THREADS];
    struct worker w[THREADS];
    for (int i = 0; i < THREADS; i++) {
        w[i] = (struct worker){.emb = emb, .id = i};
        assert_int_equal(pthread_create(&tid[i], NULL, worker_run, &w[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(tid[i], NULL);
        assert_int_equal(w[i].failures, 0);
    }
    struct mock_stats st;
    mock_get_stats(srv, &st);
    assert_int_equal(st.requests, THREADS * 25);
    /* at most one connection per concurrent request */
    assert_true(st.connections >= 1 && st.connections <= THREADS);
    mg_embedder_close(emb);
}

/* ---- misbehaving servers ---- */

static void test_wrong_dimension(void **state)
{
    (void)state;
    setenv(KEY_ENV, "k", 1);
    float out[3 * 16];
    mg_error err;
    /* configured 8, the model answers 16 */
    mock_set_dim(srv, 16);
    mg_embedder *emb = open_remote(MG_EMBEDDER_OPENAI, "", DIM);
    expect_error(embed(emb, three, 3, out, &err), &err, MG_EDIM, "16", "expected 8", "configured",
                 NULL);
    uint32_t dim;
    assert_int_equal(mg_embedder_probe(emb, &dim, &err), MG_OK); /* known: no I/O */
    assert_int_equal(dim, DIM);
    mg_embedder_close(emb);

    /* learned 8, then one answer has 9 */
    mock_set_dim(srv, DIM);
    emb = open_remote(MG_EMBEDDER_OLLAMA, "", 0);
    probe_ok(emb, DIM);
    mock_push_fault(srv, MOCK_WRONG_DIM);
    expect_error(embed(emb, three, 3, out, &err), &err, MG_EDIM, "9", "first answer", NULL);
    embed_ok(emb, three, 3); /* the next answer is right again */
    mg_embedder_close(emb);
}

static void test_nan_and_overflow(void **state)
{
    (void)state;
    setenv(KEY_ENV, "k", 1);
    float out[3 * DIM];
    mg_error err;
    for (int kind = MG_EMBEDDER_OPENAI; kind <= MG_EMBEDDER_OLLAMA; kind++) {
        mg_embedder *emb = open_remote(kind, "", DIM);
        mock_reset_stats(srv);
        mock_push_fault(srv, MOCK_NAN);
        expect_error(embed(emb, three, 3, out, &err), &err, MG_ENAN, "NaN", NULL);
        mock_push_fault(srv, MOCK_HUGE);
        expect_error(embed(emb, three, 3, out, &err), &err, MG_ENAN, NULL);
        struct mock_stats st;
        mock_get_stats(srv, &st);
        assert_int_equal(st.requests, 2); /* not retried */
        mg_embedder_close(emb);
    }
}

static void test_5xx_is_retried(void **state)
{
    (void)state;
    setenv(KEY_ENV, "k", 1);
    mg_embedder *emb = open_remote(MG_EMBEDDER_OPENAI, "", DIM);
    struct mock_stats st;

    mock_reset_stats(srv);
    mock_push_fault(srv, MOCK_500);
    embed_ok(emb, three, 3);
    mock_get_stats(srv, &st);
    assert_int_equal(st.requests, 2);

    /* retries 2: three attempts, then the error names status and text */
    mock_reset_stats(srv);
    for (int i = 0; i < 3; i++)
        mock_push_fault(srv, MOCK_500);
    float out[3 * DIM];
    mg_error err;
    expect_error(embed(emb, three, 3, out, &err), &err, MG_EUNAVAIL, "HTTP 500",
                 "the model crashed", "3 attempts", NULL);
    mock_get_stats(srv, &st);
    assert_int_equal(st.requests, 3);
    embed_ok(emb, three, 3);
    mg_embedder_close(emb);
}

static void test_429_is_retried(void **state)
{
    (void)state;
    setenv(KEY_ENV, "k", 1);
    mg_embedder *emb = open_remote(MG_EMBEDDER_OPENAI, "", DIM);
    mock_reset_stats(srv);
    mock_push_fault(srv, MOCK_429);
    mock_push_fault(srv, MOCK_429);
    embed_ok(emb, three, 3);
    struct mock_stats st;
    mock_get_stats(srv, &st);
    assert_int_equal(st.requests, 3);
    mg_embedder_close(emb);
}

static void test_dropped_connection_is_retried(void **state)
{
    (void)state;
    setenv(KEY_ENV, "k", 1);
    mg_embedder *emb = open_remote(MG_EMBEDDER_OLLAMA, "", DIM);
    mock_reset_stats(srv);
    mock_push_fault(srv, MOCK_DROP);
    embed_ok(emb, three, 3);
    struct mock_stats st;
    mock_get_stats(srv, &st);
    assert_int_equal(st.requests, 2);
    mg_embedder_close(emb);
}

static void test_4xx_is_not_retried(void **state)
{
    (void)state;
    setenv(KEY_ENV, "k", 1);
    mg_embedder *emb = open_remote(MG_EMBEDDER_OPENAI, "", DIM);
    float out[3 * DIM];
    mg_error err;
    struct mock_stats st;

    mock_reset_stats(srv);
    mock_push_fault(srv, MOCK_401);
    expect_error(embed(emb, three, 3, out, &err), &err, MG_EPERM, "HTTP 401",
                 "Incorrect API key provided", NULL);
    assert_null(strstr(err.msg, "sk-")); /* never the key itself */
    mock_get_stats(srv, &st);
    assert_int_equal(st.requests, 1);

    mock_reset_stats(srv);
    mock_push_fault(srv, MOCK_400);
    expect_error(embed(emb, three, 3, out, &err), &err, MG_EINVAL, "HTTP 400", "input is too long",
                 NULL);
    mock_get_stats(srv, &st);
    assert_int_equal(st.requests, 1);
    mg_embedder_close(emb);
}

static void test_timeout(void **state)
{
    (void)state;
    setenv(KEY_ENV, "k", 1);
    mg_embedder_config cfg;
    config_remote(&cfg, MG_EMBEDDER_OPENAI, "");
    cfg.dim = DIM;
    cfg.timeout_ms = 200;
    mg_embedder *emb = open_ok(&cfg);
    mock_set_slow_ms(srv, 1000);
    mock_reset_stats(srv);
    mock_push_fault(srv, MOCK_SLOW);
    float out[3 * DIM];
    mg_error err;
    uint64_t t0 = mg_clock_mono_ns();
    expect_error(embed(emb, three, 3, out, &err), &err, MG_ETIMEDOUT, "200 ms", NULL);
    uint64_t took_ms = (mg_clock_mono_ns() - t0) / 1000000;
    assert_true(took_ms >= 150 && took_ms < 900);
    struct mock_stats st;
    mock_get_stats(srv, &st);
    assert_int_equal(st.requests, 1); /* a timeout is not retried */
    mg_embedder_close(emb);
}

static void test_malformed_answers(void **state)
{
    (void)state;
    setenv(KEY_ENV, "k", 1);
    float out[5 * DIM];
    mg_error err;
    static const char *const five[] = {"one", "two", "three", "four", "five"};
    for (int kind = MG_EMBEDDER_OPENAI; kind <= MG_EMBEDDER_OLLAMA; kind++) {
        mg_embedder *emb = open_remote(kind, "", DIM);
        mock_reset_stats(srv);
        mock_push_fault(srv, MOCK_GARBAGE);
        expect_error(embed(emb, five, 5, out, &err), &err, MG_ECORRUPT, "not JSON", "<html>", NULL);
        mock_push_fault(srv, MOCK_SHORT);
        expect_error(embed(emb, five, 5, out, &err), &err, MG_ECORRUPT,
                     "4 vectors in the answer for 5 texts", NULL);
        struct mock_stats st;
        mock_get_stats(srv, &st);
        assert_int_equal(st.requests, 2);
        mg_embedder_close(emb);
    }
    /* out of order, put back in place by index */
    mg_embedder *emb = open_remote(MG_EMBEDDER_OPENAI, "", DIM);
    mock_push_fault(srv, MOCK_SHUFFLE);
    embed_ok(emb, five, 5);
    mg_embedder_close(emb);
}

static void test_bad_input_sends_nothing(void **state)
{
    (void)state;
    setenv(KEY_ENV, "k", 1);
    mg_embedder *emb = open_remote(MG_EMBEDDER_OPENAI, "", DIM);
    mock_reset_stats(srv);
    const char *texts[2] = {"fine", "bad \xc3"};
    float out[2 * DIM];
    mg_error err;
    expect_error(embed(emb, texts, 2, out, &err), &err, MG_EINVAL, "text 1", "UTF-8", NULL);
    assert_int_equal(embed(emb, texts, 0, out, &err), MG_OK);
    struct mock_stats st;
    mock_get_stats(srv, &st);
    assert_int_equal(st.requests, 0);
    mg_embedder_close(emb);
}

static void test_unreachable_server(void **state)
{
    (void)state;
    /* a port that was free a moment ago */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t alen = sizeof a;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
    close(fd);

    mg_embedder_config cfg;
    config_remote(&cfg, MG_EMBEDDER_OLLAMA, "");
    snprintf(cfg.url, sizeof cfg.url, "http://127.0.0.1:%u", ntohs(a.sin_port));
    mg_embedder *emb = open_ok(&cfg); /* no I/O at open */
    uint32_t dim;
    mg_error err;
    uint64_t t0 = mg_clock_mono_ns();
    expect_error(mg_embedder_probe(emb, &dim, &err), &err, MG_EUNAVAIL, "3 attempts", NULL);
    assert_true((mg_clock_mono_ns() - t0) / 1000000 < 2000);
    assert_int_equal(mg_embedder_dim(emb), 0); /* a failed probe teaches nothing */
    mg_embedder_close(emb);
}

/* ---- configuration ---- */

static void test_key_from_env(void **state)
{
    (void)state;
    mg_embedder_config cfg;
    mg_embedder *emb = NULL;
    mg_error err;

    config_remote(&cfg, MG_EMBEDDER_OPENAI, "");
    cfg.dim = DIM;
    snprintf(cfg.api_key_env, sizeof cfg.api_key_env, "MG_TEST_NO_SUCH_KEY");
    unsetenv("MG_TEST_NO_SUCH_KEY");
    expect_error(mg_embedder_open(&cfg, &emb, &err), &err, MG_EINVAL, "MG_TEST_NO_SUCH_KEY",
                 "not set", NULL);
    assert_null(emb);
    setenv("MG_TEST_NO_SUCH_KEY", "", 1); /* empty is missing */
    expect_error(mg_embedder_open(&cfg, &emb, &err), &err, MG_EINVAL, "MG_TEST_NO_SUCH_KEY", NULL);
    unsetenv("MG_TEST_NO_SUCH_KEY");

    /* openai's default variable */
    char *saved = getenv("OPENAI_API_KEY") != NULL ? strdup(getenv("OPENAI_API_KEY")) : NULL;
    unsetenv("OPENAI_API_KEY");
    cfg.api_key_env[0] = '\0';
    expect_error(mg_embedder_open(&cfg, &emb, &err), &err, MG_EINVAL, "OPENAI_API_KEY", NULL);
    setenv("OPENAI_API_KEY", "sk-default", 1);
    emb = open_ok(&cfg);
    embed_ok(emb, three, 1);
    struct mock_stats st;
    mock_get_stats(srv, &st);
    assert_string_equal(st.last_auth, "Bearer sk-default");
    mg_embedder_close(emb);
    if (saved != NULL)
        setenv("OPENAI_API_KEY", saved, 1);
    else
        unsetenv("OPENAI_API_KEY");
    free(saved);

    /* "none": a local server without keys */
    snprintf(cfg.api_key_env, sizeof cfg.api_key_env, "none");
    emb = open_ok(&cfg);
    embed_ok(emb, three, 1);
    mock_get_stats(srv, &st);
    assert_string_equal(st.last_auth, "");
    mg_embedder_close(emb);

    /* a key for ollama when named (behind an authenticating proxy) */
    config_remote(&cfg, MG_EMBEDDER_OLLAMA, "");
    cfg.dim = DIM;
    snprintf(cfg.api_key_env, sizeof cfg.api_key_env, KEY_ENV);
    setenv(KEY_ENV, "proxy-key", 1);
    emb = open_ok(&cfg);
    embed_ok(emb, three, 1);
    mock_get_stats(srv, &st);
    assert_string_equal(st.last_auth, "Bearer proxy-key");
    mg_embedder_close(emb);

    snprintf(cfg.api_key_env, sizeof cfg.api_key_env, "1BAD-NAME");
    expect_error(mg_embedder_open(&cfg, &emb, &err), &err, MG_EINVAL, "1BAD-NAME", NULL);
}

static void test_open_refuses_bad_config(void **state)
{
    (void)state;
    setenv(KEY_ENV, "k", 1);
    mg_embedder_config cfg;
    mg_embedder *emb = NULL;
    mg_error err;

    config_remote(&cfg, MG_EMBEDDER_OPENAI, "");
    snprintf(cfg.url, sizeof cfg.url, "ftp://example.com");
    expect_error(mg_embedder_open(&cfg, &emb, &err), &err, MG_EINVAL, "http://", NULL);

    config_remote(&cfg, MG_EMBEDDER_OPENAI, "");
    memset(cfg.model, 'm', 60);
    cfg.model[60] = '\0';
    expect_error(mg_embedder_open(&cfg, &emb, &err), &err, MG_EINVAL, "64 bytes", NULL);

    config_remote(&cfg, MG_EMBEDDER_OPENAI, "");
    cfg.kind = 9;
    expect_error(mg_embedder_open(&cfg, &emb, &err), &err, MG_EINVAL, "kind", NULL);

    config_remote(&cfg, MG_EMBEDDER_OPENAI, "");
    cfg.batch_max = 5000;
    expect_error(mg_embedder_open(&cfg, &emb, &err), &err, MG_EINVAL, "batch", NULL);
    assert_null(emb);

    /* the defaults of a kind */
    config_remote(&cfg, MG_EMBEDDER_OLLAMA, "");
    cfg.url[0] = '\0';
    cfg.model[0] = '\0';
    emb = open_ok(&cfg);
    assert_string_equal(mg_embedder_name(emb), "ollama:nomic-embed-text");
    mg_embedder_close(emb);
}

static const char *const env_names[] = {
    "MEMGRID_EMBEDDER",      "MEMGRID_EMBED_URL",     "MEMGRID_EMBED_MODEL",
    "MEMGRID_EMBED_DIM",     "MEMGRID_EMBED_KEY_ENV", "MEMGRID_EMBED_TIMEOUT_MS",
    "MEMGRID_EMBED_RETRIES", "MEMGRID_EMBED_BATCH",
};

static void clear_env(void)
{
    for (size_t i = 0; i < sizeof env_names / sizeof env_names[0]; i++)
        unsetenv(env_names[i]);
}

static void test_config_from_env(void **state)
{
    (void)state;
    mg_embedder_config cfg;
    mg_error err;
    clear_env();
    assert_int_equal(mg_embedder_config_from_env(&cfg, &err), MG_OK);
    assert_int_equal(cfg.kind, MG_EMBEDDER_HASH);
    assert_int_equal(cfg.dim, 0);
    assert_int_equal(cfg.timeout_ms, MG_EMBEDDER_TIMEOUT_DEFAULT_MS);
    assert_int_equal(cfg.retries, 2);
    assert_int_equal(cfg.batch_max, 64);

    setenv("MEMGRID_EMBEDDER", "ollama", 1);
    setenv("MEMGRID_EMBED_URL", "http://gpu-box:11434", 1);
    setenv("MEMGRID_EMBED_MODEL", "mxbai-embed-large", 1);
    setenv("MEMGRID_EMBED_DIM", "1024", 1);
    setenv("MEMGRID_EMBED_KEY_ENV", "MY_KEY", 1);
    setenv("MEMGRID_EMBED_TIMEOUT_MS", "2500", 1);
    setenv("MEMGRID_EMBED_RETRIES", "0", 1);
    setenv("MEMGRID_EMBED_BATCH", "16", 1);
    assert_int_equal(mg_embedder_config_from_env(&cfg, &err), MG_OK);
    assert_int_equal(cfg.kind, MG_EMBEDDER_OLLAMA);
    assert_string_equal(cfg.url, "http://gpu-box:11434");
    assert_string_equal(cfg.model, "mxbai-embed-large");
    assert_int_equal(cfg.dim, 1024);
    assert_string_equal(cfg.api_key_env, "MY_KEY");
    assert_int_equal(cfg.timeout_ms, 2500);
    assert_int_equal(cfg.retries, 0);
    assert_int_equal(cfg.batch_max, 16);

    static const struct {
        const char *name, *value;
    } bad[] = {
        {"MEMGRID_EMBEDDER", "bert"},      {"MEMGRID_EMBED_DIM", "0"},
        {"MEMGRID_EMBED_DIM", "12x"},      {"MEMGRID_EMBED_DIM", "-3"},
        {"MEMGRID_EMBED_TIMEOUT_MS", "0"}, {"MEMGRID_EMBED_RETRIES", "11"},
        {"MEMGRID_EMBED_BATCH", "99999"},  {"MEMGRID_EMBED_DIM", "99999999999999999999"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        clear_env();
        setenv(bad[i].name, bad[i].value, 1);
        expect_error(mg_embedder_config_from_env(&cfg, &err), &err, MG_EINVAL, bad[i].name, NULL);
    }
    clear_env();
    char long_url[700];
    memset(long_url, 'a', sizeof long_url - 1);
    long_url[sizeof long_url - 1] = '\0';
    setenv("MEMGRID_EMBED_URL", long_url, 1);
    expect_error(mg_embedder_config_from_env(&cfg, &err), &err, MG_EINVAL, "MEMGRID_EMBED_URL",
                 NULL);
    clear_env();
    setenv("MEMGRID_EMBEDDER", "OpenAI", 1);
    assert_int_equal(mg_embedder_config_from_env(&cfg, &err), MG_OK);
    assert_int_equal(cfg.kind, MG_EMBEDDER_OPENAI);
    clear_env();
}

int main(void)
{
    /* the mock is on loopback: keep any proxy of the environment out of it */
    static const char *const proxies[] = {"http_proxy",  "HTTP_PROXY", "https_proxy",
                                          "HTTPS_PROXY", "all_proxy",  "ALL_PROXY"};
    for (size_t i = 0; i < sizeof proxies / sizeof proxies[0]; i++)
        unsetenv(proxies[i]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hash_equals_embed_hash),
        cmocka_unit_test_setup_teardown(test_openai_learns_dim_and_sends_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_openai_url_forms, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ollama, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batching_keeps_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connection_reuse, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_threads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_dimension, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nan_and_overflow, setup, teardown),
        cmocka_unit_test_setup_teardown(test_5xx_is_retried, setup, teardown),
        cmocka_unit_test_setup_teardown(test_429_is_retried, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dropped_connection_is_retried, setup, teardown),
        cmocka_unit_test_setup_teardown(test_4xx_is_not_retried, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed_answers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_input_sends_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unreachable_server, setup, teardown),
        cmocka_unit_test_setup_teardown(test_key_from_env, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_refuses_bad_config, setup, teardown),
        cmocka_unit_test(test_config_from_env),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
