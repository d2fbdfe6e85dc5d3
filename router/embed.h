/*
 * Embedders (DESIGN §9): the one interface through which the router turns
 * texts into vectors, whatever computes them.
 *
 *   hash    built in, the default: deterministic feature hashing
 *           (embed_hash.h), offline, the same floats on every machine.
 *   openai  any server speaking OpenAI's embeddings API
 *           (POST {base}/embeddings): OpenAI, vLLM, llama.cpp, LM Studio,
 *           LocalAI, Together, ... and Ollama's /v1 endpoint.
 *   ollama  Ollama's native API (POST {base}/api/embed).
 *
 * Remote embedders send the texts in batches of at most batch_max per HTTP
 * request, reuse connections (keep-alive) from a small pool shared by all
 * threads, retry connection failures, 5xx and 429 with backoff (never other
 * 4xx nor timeouts), and check what comes back: one vector per text, each of
 * the right dimension, every value a finite float. They do not normalize:
 * the index does.
 *
 * Configuration from the environment (mg_embedder_config_from_env):
 *
 *   MEMGRID_EMBEDDER          hash | openai | ollama                  [hash]
 *   MEMGRID_EMBED_URL         base URL of the server. openai: a URL with no
 *                             path gets /v1/embeddings ("http://h:8080" ->
 *                             "http://h:8080/v1/embeddings"), a URL with a
 *                             path gets /embeddings ("https://h/v1" ->
 *                             "https://h/v1/embeddings"), a URL that already
 *                             ends with /embeddings is used as it is
 *                             [https://api.openai.com/v1]. ollama: gets
 *                             /api/embed unless it already ends with it
 *                             [http://127.0.0.1:11434].
 *   MEMGRID_EMBED_MODEL       model name          [openai: text-embedding-3-small,
 *                                                  ollama: nomic-embed-text]
 *   MEMGRID_EMBED_DIM         hash: the dimension, 1..4096 [384]. remote:
 *                             the dimension the model must answer (another is
 *                             MG_EDIM); unset: learned from the first answer
 *   MEMGRID_EMBED_KEY_ENV     name of the variable holding the API key, sent as
 *                             "Authorization: Bearer <key>"; "none": send no
 *                             key            [openai: OPENAI_API_KEY, ollama: none]
 *   MEMGRID_EMBED_TIMEOUT_MS  per HTTP attempt, 1..600000            [10000]
 *   MEMGRID_EMBED_RETRIES     retries after a failed attempt, 0..10  [2]
 *   MEMGRID_EMBED_BATCH       texts per HTTP request, 1..2048        [64]
 *
 * Errors of mg_embedder_embed for remote embedders (the message says which
 * server, the HTTP status and the server's own error text, cut short):
 *   MG_EINVAL     a text that is not valid UTF-8; an HTTP 4xx answer other
 *                 than 401/403/429 (e.g. unknown model, text too long);
 *   MG_EPERM      HTTP 401/403: the key is wrong or missing;
 *   MG_ETIMEDOUT  no complete answer within timeout_ms;
 *   MG_EUNAVAIL   cannot connect, or 5xx/429 after the last retry;
 *   MG_ECORRUPT   an answer that is not JSON or not of the protocol's shape,
 *                 or with the wrong number of vectors;
 *   MG_EDIM       a vector of another dimension than configured or learned;
 *   MG_ENAN       a NaN or infinite value, or one beyond float range;
 *   MG_ETOOBIG    an answer over 64 MiB;  MG_ENOMEM.
 */
#ifndef MG_EMBED_H
#define MG_EMBED_H

#include "../lib/error.h"
#include "embed_hash.h"

#include <stddef.h>
#include <stdint.h>

enum mg_embedder_kind { MG_EMBEDDER_HASH = 0, MG_EMBEDDER_OPENAI, MG_EMBEDDER_OLLAMA };

#define MG_EMBEDDER_NAME_MAX 64 /* mg_embedder_name, NUL included */
#define MG_EMBEDDER_DIM_MAX 65536
#define MG_EMBEDDER_TIMEOUT_DEFAULT_MS 10000
#define MG_EMBEDDER_RETRIES_DEFAULT 2
#define MG_EMBEDDER_BATCH_DEFAULT 64

typedef struct mg_embedder_config {
    int kind;              /* enum mg_embedder_kind */
    char url[512];         /* base URL; "" = the kind's default */
    char model[128];       /* "" = the kind's default */
    uint32_t dim;          /* 0 = hash: 384, remote: learned */
    char api_key_env[128]; /* "" = the kind's default, "none" = no key */
    uint32_t timeout_ms;   /* per attempt; 0 = default */
    uint32_t retries;      /* extra attempts after a retryable failure */
    uint32_t batch_max;    /* texts per request; 0 = default */
    uint32_t backoff_ms;   /* first retry delay; 0 = 100 ms */
} mg_embedder_config;

typedef struct mg_embedder mg_embedder;

/* Fills *cfg with the defaults: kind hash, dim 0, timeout 10 s, 2 retries,
 * batches of 64, every string empty. */
void mg_embedder_config_init(mg_embedder_config *cfg);

/* mg_embedder_config_init, then the MEMGRID_EMBED* variables listed above.
 * Errors: MG_EINVAL naming the variable whose value is unknown, out of range,
 * or too long for its field (cfg then holds what was read before it). */
int mg_embedder_config_from_env(mg_embedder_config *cfg, mg_error *err);

/* Makes an embedder from cfg (copied; cfg may go away). Does no network I/O:
 * an unreachable server shows up at the first embed or probe. Reads the API
 * key from its environment variable now, so that a missing key fails here.
 * Errors: MG_EINVAL (unknown kind; hash dim outside 1..4096; remote dim above
 * MG_EMBEDDER_DIM_MAX; a URL that is not http(s); timeout above 600000 ms;
 * batch_max above 2048; a name "kind:model" of 64 bytes or more; the key
 * variable unset or empty, the message naming it), MG_EUNAVAIL (libcurl
 * cannot start), MG_ENOMEM. On error *out is NULL. */
int mg_embedder_open(const mg_embedder_config *cfg, mg_embedder **out, mg_error *err);

/* Embeds n texts, texts[i] of lens[i] bytes of UTF-8 (texts[i] may be NULL
 * when lens[i] is 0), into out[i * dim .. (i + 1) * dim), dim =
 * mg_embedder_dim(emb). role is MG_EMBED_DOCUMENT or MG_EMBED_QUERY: the hash
 * embedder weighs them differently (embed_hash.h), remote ones ignore it.
 * Remote: the texts go out in ceil(n / batch_max) requests, one after the
 * other, and must not be empty for most servers. A remote embedder whose
 * dimension is still unknown refuses with MG_EINVAL: call mg_embedder_probe
 * first. On error the contents of out are unspecified. Thread-safe: any
 * number of threads may embed at once; keeps no pointer to its arguments. */
int mg_embedder_embed(mg_embedder *emb, const char *const *texts, const size_t *lens, size_t n,
                      int role, float *out, mg_error *err);

/* The dimension of the vectors, learning it when not yet known: a remote
 * embedder configured without dim sends one short text and keeps the length
 * of the answer (a probe that fails teaches nothing; the next call tries
 * again). No I/O when the dimension is known. Errors as for
 * mg_embedder_embed. Thread-safe. */
int mg_embedder_probe(mg_embedder *emb, uint32_t *dim, mg_error *err);

/* The dimension, or 0 while a remote embedder has not learned it. Once
 * non-zero it never changes. */
uint32_t mg_embedder_dim(const mg_embedder *emb);

/* "hash", "openai:<model>" or "ollama:<model>", under MG_EMBEDDER_NAME_MAX
 * bytes: what a cube records as its embedder. Valid until close. */
const char *mg_embedder_name(const mg_embedder *emb);

/* Frees the embedder and its connections; no call may be running. NULL is
 * allowed. */
void mg_embedder_close(mg_embedder *emb);

/* "hash", "openai", "ollama"; NULL for an unknown kind. */
const char *mg_embedder_kind_name(int kind);

#endif
