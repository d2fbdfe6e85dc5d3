/*
 * The MemOS /product requests the harness sends and what it reads from the
 * answers (MEMOS_API.md). Both target kinds get the same requests: memgrid
 * speaks MemOS's API, and comparing like with like is the point.
 *
 *   POST /product/add     {"user_id", "writable_cube_ids": [cube], "messages":
 *                          [{"role": "user", "content"}...] | "memory_content",
 *                          "async_mode": "sync"|"async", "mode": "fast",
 *                          "info"?: {"dia_id"}}
 *   POST /product/search  {"query", "user_id", "readable_cube_ids": [cube],
 *                          "top_k", ...extra fields}
 *
 * Every cube is its user's own cube (user_id = cube id), which both MemOS and
 * memgrid accept without creating cubes first.
 */
#ifndef MG_BENCH_API_H
#define MG_BENCH_API_H

#include "http.h"

#include <stdbool.h>
#include <stddef.h>

/* A growable text buffer. Appends never fail: on allocation failure `oom`
 * is set and later appends do nothing. */
typedef struct bench_buf {
    char *data; /* NUL-terminated when not oom */
    size_t len, cap;
    bool oom;
} bench_buf;

void bench_buf_reset(bench_buf *b);
void bench_buf_free(bench_buf *b);
void bench_buf_putn(bench_buf *b, const char *s, size_t n);
void bench_buf_puts(bench_buf *b, const char *s);
void bench_buf_printf(bench_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A JSON string literal (quotes included) of s[0..n), escaped. */
void bench_buf_json_str(bench_buf *b, const char *s, size_t n);

typedef struct bench_add_req {
    const char *cube;         /* user_id and the one writable cube */
    const char *const *texts; /* one message each (or one memory_content: texts[0]) */
    size_t ntexts;
    bool content;       /* memory_content instead of messages */
    bool async;         /* async_mode "async" */
    const char *dia_id; /* LoCoMo: info.dia_id, or NULL */
} bench_add_req;

/* Writes the body of a /product/add request into b (reset first). */
void bench_api_add_body(bench_buf *b, const bench_add_req *req);

/* Writes the body of a /product/search request. extra: "" or
 * ",\"key\":value..." appended inside the object. */
void bench_api_search_body(bench_buf *b, const char *cube, const char *query, unsigned top_k,
                           const char *extra);

/* Judges an answer: HTTP 200 with a MemOS envelope whose code is 200. On
 * failure returns false and writes a short reason into msg. Reads only the
 * first bytes of the body when the envelope starts with "code", as both
 * MemOS and memgrid write it; else parses the body. */
bool bench_api_ok(const mg_http_response *resp, char *msg, size_t cap);

/* The first memory_id of an add answer ({"data": [{"memory_id"}...]}) into
 * id (capacity cap); false when there is none. */
bool bench_api_add_id(const char *body, size_t len, char *id, size_t cap);

/* Calls fn for each memory of a search answer, text_mem of every cube first,
 * in the order given: its id, text and metadata.info.dia_id (each may be
 * NULL). Returns the number of memories, or -1 when the answer is not a
 * search answer. */
typedef void (*bench_memory_fn)(void *ctx, size_t rank, const char *id, const char *memory,
                                const char *dia_id);
long bench_api_search_memories(const char *body, size_t len, bench_memory_fn fn, void *ctx);

/* GET /health's "service" and "version" (empty strings when absent).
 * Returns false when the answer is not JSON. */
bool bench_api_health(const char *body, size_t len, char *service, size_t scap, char *version,
                      size_t vcap);

#endif
