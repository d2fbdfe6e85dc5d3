/*
 * The remote embedders' protocols (OpenAI embeddings, Ollama /api/embed) on
 * top of remote_http.h. Private to embed.c, which owns the dimension and the
 * public interface (embed.h); documented there.
 */
#ifndef MG_EMBED_HTTP_H
#define MG_EMBED_HTTP_H

#include "../lib/error.h"
#include "embed.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct mg_embed_http mg_embed_http;

/* cfg->kind is MG_EMBEDDER_OPENAI or MG_EMBEDDER_OLLAMA; url and model are
 * final (defaults already applied); api_key is NULL for none (copied). `what`
 * names the embedder in messages (copied). Errors as for mg_embedder_open. */
int mg_embed_http_open(const mg_embedder_config *cfg, const char *what, const char *api_key,
                       mg_embed_http **out, mg_error *err);

/* Embeds n texts in requests of at most batch_max texts into out (n * dim
 * floats). Every vector must have dim values (dim > 0); dim_configured says
 * whether dim was configured or learned, for the message. Thread-safe. */
int mg_embed_http_embed(mg_embed_http *h, const char *const *texts, const size_t *lens, size_t n,
                        uint32_t dim, bool dim_configured, float *out, mg_error *err);

/* Embeds one short text and returns the dimension of the answer, after
 * checking that the vector is finite. */
int mg_embed_http_probe(mg_embed_http *h, uint32_t *dim, mg_error *err);

void mg_embed_http_close(mg_embed_http *h);

#endif
