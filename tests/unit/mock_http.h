/*
 * A small HTTP server for tests of the remote embedders and the chat client
 * (embed_remote_test.c, llm_test.c). It runs in-process on libmicrohttpd,
 * bound to 127.0.0.1 on a free port, one thread per connection, and speaks:
 *
 *   POST .../embeddings        OpenAI: {"model", "input": [...]} ->
 *                              {"data": [{"embedding": [...], "index": i}]}
 *   POST .../api/embed         Ollama: {"model", "input": [...]} ->
 *                              {"embeddings": [[...], ...]}
 *   POST .../chat/completions  OpenAI chat: answers the configured content
 *
 * The vector of a text is mock_value(text, j) for j < dim: a function of the
 * text, so a test can check which vector came back where. Each request takes
 * the next fault from a queue (none: answer normally), so a test can script
 * "500, then success". It counts TCP connections accepted (connection reuse),
 * requests, and the batch size of each embedding request, and keeps the last
 * Authorization header, model and body.
 */
#ifndef MG_TEST_MOCK_HTTP_H
#define MG_TEST_MOCK_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum mock_fault {
    MOCK_OK = 0,
    MOCK_WRONG_DIM, /* every vector has dim + 1 values */
    MOCK_NAN,       /* the first vector holds a NaN literal */
    MOCK_HUGE,      /* the first vector holds 1e39 (beyond float) */
    MOCK_500,       /* HTTP 500 with an OpenAI-style error */
    MOCK_429,       /* HTTP 429, Retry-After: 0 */
    MOCK_401,       /* HTTP 401 "Incorrect API key provided" */
    MOCK_400,       /* HTTP 400 "input is too long" */
    MOCK_SLOW,      /* sleeps slow_ms, then answers normally */
    MOCK_GARBAGE,   /* 200 with a body that is not JSON */
    MOCK_SHUFFLE,   /* OpenAI: data in reverse order, index still right */
    MOCK_SHORT,     /* one vector fewer than texts */
    MOCK_DROP,      /* closes the connection without an answer */
};

#define MOCK_BATCHES_MAX 256

struct mock_stats {
    unsigned connections;    /* TCP connections accepted */
    unsigned requests;       /* every request */
    unsigned embed_requests; /* OpenAI and Ollama embedding requests */
    unsigned chat_requests;
    unsigned batches[MOCK_BATCHES_MAX]; /* texts per embedding request */
    char last_path[128];
    char last_auth[256]; /* "" when no Authorization header came */
    char last_model[128];
};

typedef struct mock_server mock_server;

/* Starts the server (fails the test on error). dim: the vectors' dimension. */
mock_server *mock_start(uint32_t dim);
void mock_stop(mock_server *m);
unsigned mock_port(const mock_server *m);

/* Writes "http://127.0.0.1:<port>" + suffix to buf[0..cap); returns buf. */
char *mock_url(const mock_server *m, const char *suffix, char *buf, size_t cap);

void mock_set_dim(mock_server *m, uint32_t dim);
void mock_set_slow_ms(mock_server *m, unsigned ms);
/* Queues a fault for the next request without one. */
void mock_push_fault(mock_server *m, enum mock_fault f);
/* What a chat request answers: choices[0].message.content and finish_reason. */
void mock_set_chat_reply(mock_server *m, const char *content, const char *finish_reason);
/* When set, a chat request carrying response_format gets HTTP 400. */
void mock_set_reject_response_format(mock_server *m, bool reject);

/* A copy of the counters; reset clears them (not the faults). */
void mock_get_stats(mock_server *m, struct mock_stats *out);
void mock_reset_stats(mock_server *m);
/* The body of the last request, malloc'd (caller frees). */
char *mock_last_body(mock_server *m);

/* Component j of the mock's vector for text[0..len). */
float mock_value(const char *text, size_t len, uint32_t j);

#endif
