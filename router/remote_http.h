/*
 * Outbound JSON over HTTP for the remote embedders (embed_http.c) and the
 * chat client (llm.c): POST a JSON body, get a parsed JSON answer, with
 * timeouts, retries with backoff and connection reuse. Private to router/;
 * callers outside it use embed.h and llm.h.
 *
 * Connections. A client keeps a small pool of libcurl easy handles guarded by
 * a mutex. A request takes an idle handle (or makes a new one), and gives it
 * back afterwards with its open keep-alive connection; so sequential requests
 * reuse one TCP (and TLS) connection, and N concurrent requests use at most N.
 * At most MG_REMOTE_POOL_MAX idle handles are kept.
 *
 * Retries. An attempt that fails to connect, loses its connection, or gets
 * HTTP 5xx or 429 is retried up to `retries` times, after a delay of
 * backoff_ms * 2^attempt (halved to doubled at random, at most 5 s), or after
 * the server's Retry-After when it is longer (a Retry-After above 10 s is not
 * waited for: the call fails at once). Never retried: other 4xx answers (the
 * same request would fail again) and timeouts (timeout_ms bounds each
 * attempt; a server that is too slow once is likely to be too slow again,
 * and retrying would multiply the caller's wait).
 *
 * Errors (the message names the client, the HTTP status and the server's own
 * error text, cut to 120 bytes; never the API key):
 *   MG_ETIMEDOUT  an attempt took longer than timeout_ms;
 *   MG_EUNAVAIL   connection errors, 5xx or 429 after the last retry, TLS
 *                 failures;
 *   MG_EPERM      HTTP 401 or 403 (wrong or missing key);
 *   MG_EINVAL     any other 4xx (*http_status tells which), or a malformed URL;
 *   MG_ECORRUPT   a 2xx answer that is not JSON;
 *   MG_ENAN       a 2xx answer holding NaN, Infinity or a number beyond the
 *                 range of a double (JSON has no such values, but some servers
 *                 print them);
 *   MG_ETOOBIG    an answer over MG_REMOTE_REPLY_MAX bytes;
 *   MG_ENOMEM.
 */
#ifndef MG_REMOTE_HTTP_H
#define MG_REMOTE_HTTP_H

#include "../lib/error.h"

#include <jansson.h>

#include <stddef.h>
#include <stdint.h>

#define MG_REMOTE_POOL_MAX 16
#define MG_REMOTE_REPLY_MAX (64u << 20)

typedef struct mg_remote mg_remote;

typedef struct mg_remote_config {
    const char *what;    /* names the client in messages and logs, e.g.
                          * "embedder openai:text-embedding-3-small" */
    const char *api_key; /* sent as "Authorization: Bearer <key>"; NULL for
                          * none */
    uint32_t timeout_ms; /* per attempt, connecting included; > 0 */
    uint32_t retries;    /* extra attempts after the first */
    uint32_t backoff_ms; /* delay before the first retry; 0 = 100 */
} mg_remote_config;

/* Initializes libcurl once per process (thread-safe) and makes a client. The
 * strings in cfg are copied; the copy of the key is wiped at close. Errors:
 * MG_EINVAL (timeout_ms 0, a key with a line break), MG_EUNAVAIL (libcurl
 * failed to initialize), MG_ENOMEM. */
int mg_remote_open(const mg_remote_config *cfg, mg_remote **out, mg_error *err);

/* POSTs body[0..len) (JSON) to url and returns the parsed answer of a 2xx
 * reply in *reply (the caller owns it: json_decref). *http_status (may be
 * NULL) receives the status of the last attempt, 0 when no answer came.
 * Thread-safe; blocks for at most about (retries + 1) * timeout_ms plus the
 * backoff. On error *reply is NULL; see the header comment for the codes. */
int mg_remote_post_json(mg_remote *r, const char *url, const char *body, size_t len, json_t **reply,
                        long *http_status, mg_error *err);

/* Closes the idle connections and frees the client. No request may be running.
 * NULL is allowed. */
void mg_remote_close(mg_remote *r);

/* Joins base (an http:// or https:// URL, trailing slashes ignored) and the
 * OpenAI-style endpoint `suffix` ("/embeddings", "/chat/completions"):
 *   - a base that already ends with suffix is used as it is;
 *   - a base without a path ("http://host:port") gets "/v1" + suffix;
 *   - any other base ("http://host:port/v1", "https://host/openai/v1") gets
 *     suffix.
 * Writes a NUL-terminated URL to out[0..cap). Errors: MG_EINVAL (not http or
 * https, or does not fit). */
int mg_remote_openai_url(const char *base, const char *suffix, char *out, size_t cap,
                         mg_error *err);

/* Reads the API key from the environment variable `env_name` for the client
 * `what`. On success *key is a malloc'd copy (the caller frees it, after
 * wiping it). Errors: MG_EINVAL when the name is not a valid variable name
 * ([A-Za-z_][A-Za-z0-9_]*, at most 127 bytes) or the variable is unset or
 * empty (the message says which variable and names `setting`, the setting
 * that chooses another one); MG_ENOMEM. */
int mg_remote_key_from_env(const char *what, const char *env_name, const char *setting, char **key,
                           mg_error *err);

#endif
