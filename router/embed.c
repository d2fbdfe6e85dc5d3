#include "embed.h"

#include "../lib/config.h"
#include "embed_http.h"
#include "remote_http.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define TIMEOUT_MAX_MS 600000u
#define RETRIES_MAX 10u
#define BATCH_MAX 2048u

struct mg_embedder {
    int kind;
    char name[MG_EMBEDDER_NAME_MAX];
    _Atomic uint32_t dim; /* 0 until a remote embedder learns it */
    bool dim_configured;
    mg_embed_http *http; /* remote kinds only */
};

/* What each kind needs when the configuration leaves it out. */
static const struct {
    const char *name;
    const char *url;
    const char *model;
    const char *key_env; /* NULL: no key */
} kinds[] = {
    [MG_EMBEDDER_HASH] = {"hash", NULL, NULL, NULL},
    [MG_EMBEDDER_OPENAI] = {"openai", "https://api.openai.com/v1", "text-embedding-3-small",
                            "OPENAI_API_KEY"},
    [MG_EMBEDDER_OLLAMA] = {"ollama", "http://127.0.0.1:11434", "nomic-embed-text", NULL},
};
#define KIND_COUNT (sizeof kinds / sizeof kinds[0])

const char *mg_embedder_kind_name(int kind)
{
    if (kind < 0 || (size_t)kind >= KIND_COUNT)
        return NULL;
    return kinds[kind].name;
}

void mg_embedder_config_init(mg_embedder_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->kind = MG_EMBEDDER_HASH;
    cfg->timeout_ms = MG_EMBEDDER_TIMEOUT_DEFAULT_MS;
    cfg->retries = MG_EMBEDDER_RETRIES_DEFAULT;
    cfg->batch_max = MG_EMBEDDER_BATCH_DEFAULT;
}

int mg_embedder_config_from_env(mg_embedder_config *cfg, mg_error *err)
{
    mg_embedder_config_init(cfg);
    const char *kind = getenv("MEMGRID_EMBEDDER");
    if (kind != NULL && kind[0] != '\0') {
        size_t k = 0;
        while (k < KIND_COUNT && strcasecmp(kind, kinds[k].name) != 0)
            k++;
        if (k == KIND_COUNT)
            return mg_error_set(err, MG_EINVAL,
                                "MEMGRID_EMBEDDER=%.32s: expected hash, openai or ollama", kind);
        cfg->kind = (int)k;
    }
    int rc;
    if ((rc = mg_env_str("MEMGRID_EMBED_URL", cfg->url, sizeof cfg->url, err)) != MG_OK ||
        (rc = mg_env_str("MEMGRID_EMBED_MODEL", cfg->model, sizeof cfg->model, err)) != MG_OK ||
        (rc = mg_env_str("MEMGRID_EMBED_KEY_ENV", cfg->api_key_env, sizeof cfg->api_key_env,
                         err)) != MG_OK ||
        (rc = mg_env_u32("MEMGRID_EMBED_DIM", 1, MG_EMBEDDER_DIM_MAX, &cfg->dim, err)) != MG_OK ||
        (rc = mg_env_u32("MEMGRID_EMBED_TIMEOUT_MS", 1, TIMEOUT_MAX_MS, &cfg->timeout_ms, err)) !=
            MG_OK ||
        (rc = mg_env_u32("MEMGRID_EMBED_RETRIES", 0, RETRIES_MAX, &cfg->retries, err)) != MG_OK ||
        (rc = mg_env_u32("MEMGRID_EMBED_BATCH", 1, BATCH_MAX, &cfg->batch_max, err)) != MG_OK)
        return rc;
    return MG_OK;
}

/* Checks cfg and fills in the kind's defaults. */
static int config_resolve(const mg_embedder_config *in, mg_embedder_config *cfg, mg_error *err)
{
    *cfg = *in;
    const char *kind = mg_embedder_kind_name(cfg->kind);
    if (kind == NULL)
        return mg_error_set(err, MG_EINVAL, "embedder: unknown kind %d", cfg->kind);
    if (cfg->timeout_ms == 0)
        cfg->timeout_ms = MG_EMBEDDER_TIMEOUT_DEFAULT_MS;
    if (cfg->batch_max == 0)
        cfg->batch_max = MG_EMBEDDER_BATCH_DEFAULT;
    if (cfg->kind == MG_EMBEDDER_HASH) {
        if (cfg->dim == 0)
            cfg->dim = MG_EMBED_HASH_DIM_DEFAULT;
        if (cfg->dim > MG_EMBED_HASH_DIM_MAX)
            return mg_error_set(err, MG_EINVAL, "embedder hash: dimension %u outside 1..%u",
                                cfg->dim, MG_EMBED_HASH_DIM_MAX);
        return MG_OK;
    }
    if (cfg->dim > MG_EMBEDDER_DIM_MAX)
        return mg_error_set(err, MG_EINVAL, "embedder %s: dimension %u above %u", kind, cfg->dim,
                            MG_EMBEDDER_DIM_MAX);
    if (cfg->timeout_ms > TIMEOUT_MAX_MS)
        return mg_error_set(err, MG_EINVAL, "embedder %s: timeout %u ms above %u", kind,
                            cfg->timeout_ms, TIMEOUT_MAX_MS);
    if (cfg->retries > RETRIES_MAX)
        return mg_error_set(err, MG_EINVAL, "embedder %s: %u retries, at most %u", kind,
                            cfg->retries, RETRIES_MAX);
    if (cfg->batch_max > BATCH_MAX)
        return mg_error_set(err, MG_EINVAL, "embedder %s: batch of %u texts, at most %u", kind,
                            cfg->batch_max, BATCH_MAX);
    if (cfg->url[0] == '\0')
        snprintf(cfg->url, sizeof cfg->url, "%s", kinds[cfg->kind].url);
    if (cfg->model[0] == '\0')
        snprintf(cfg->model, sizeof cfg->model, "%s", kinds[cfg->kind].model);
    if (memchr(cfg->url, '\0', sizeof cfg->url) == NULL ||
        memchr(cfg->model, '\0', sizeof cfg->model) == NULL ||
        memchr(cfg->api_key_env, '\0', sizeof cfg->api_key_env) == NULL)
        return mg_error_set(err, MG_EINVAL, "embedder %s: a string is not NUL-terminated", kind);
    for (const char *p = cfg->model; *p != '\0'; p++)
        if ((unsigned char)*p <= ' ' || *p == '"' || *p == 0x7f)
            return mg_error_set(err, MG_EINVAL,
                                "embedder %s: model name has a blank, quote or control character",
                                kind);
    return MG_OK;
}

int mg_embedder_open(const mg_embedder_config *config, mg_embedder **out, mg_error *err)
{
    *out = NULL;
    mg_embedder_config cfg;
    int rc = config_resolve(config, &cfg, err);
    if (rc != MG_OK)
        return rc;
    mg_embedder *emb = calloc(1, sizeof *emb);
    if (emb == NULL)
        return mg_error_set(err, MG_ENOMEM, "embedder: out of memory");
    emb->kind = cfg.kind;
    atomic_init(&emb->dim, cfg.dim);
    emb->dim_configured = cfg.dim != 0;
    const char *kind = kinds[cfg.kind].name;
    if (cfg.kind == MG_EMBEDDER_HASH) {
        snprintf(emb->name, sizeof emb->name, "%s", kind);
        *out = emb;
        return MG_OK;
    }

    int w = snprintf(emb->name, sizeof emb->name, "%s:%s", kind, cfg.model);
    if (w < 0 || (size_t)w >= sizeof emb->name) {
        rc = mg_error_set(err, MG_EINVAL, "embedder %s: the name %s:%.80s must be under %d bytes",
                          kind, kind, cfg.model, MG_EMBEDDER_NAME_MAX);
        goto err_free;
    }
    char what[96];
    snprintf(what, sizeof what, "embedder %s", emb->name);

    const char *key_env = cfg.api_key_env[0] != '\0' ? cfg.api_key_env : kinds[cfg.kind].key_env;
    char *key = NULL;
    if (key_env != NULL && strcasecmp(key_env, "none") != 0) {
        rc = mg_remote_key_from_env(what, key_env, "MEMGRID_EMBED_KEY_ENV", &key, err);
        if (rc != MG_OK)
            goto err_free;
    }
    rc = mg_embed_http_open(&cfg, what, key, &emb->http, err);
    if (key != NULL) {
        explicit_bzero(key, strlen(key));
        free(key);
    }
    if (rc != MG_OK)
        goto err_free;
    *out = emb;
    return MG_OK;

err_free:
    free(emb);
    return rc;
}

void mg_embedder_close(mg_embedder *emb)
{
    if (emb == NULL)
        return;
    mg_embed_http_close(emb->http);
    free(emb);
}

uint32_t mg_embedder_dim(const mg_embedder *emb)
{
    return atomic_load(&emb->dim);
}

const char *mg_embedder_name(const mg_embedder *emb)
{
    return emb->name;
}

int mg_embedder_embed(mg_embedder *emb, const char *const *texts, const size_t *lens, size_t n,
                      int role, float *out, mg_error *err)
{
    if (role != MG_EMBED_DOCUMENT && role != MG_EMBED_QUERY)
        return mg_error_set(err, MG_EINVAL, "embedder %s: unknown role %d", emb->name, role);
    if (n == 0)
        return MG_OK;
    uint32_t dim = atomic_load(&emb->dim);
    if (emb->kind == MG_EMBEDDER_HASH)
        return mg_embed_hash_batch(texts, lens, n, role, out, dim, err);
    if (dim == 0)
        return mg_error_set(err, MG_EINVAL,
                            "embedder %s: dimension not known yet (call mg_embedder_probe)",
                            emb->name);
    return mg_embed_http_embed(emb->http, texts, lens, n, dim, emb->dim_configured, out, err);
}

int mg_embedder_probe(mg_embedder *emb, uint32_t *dim, mg_error *err)
{
    uint32_t known = atomic_load(&emb->dim);
    if (known == 0) {
        uint32_t got;
        int rc = mg_embed_http_probe(emb->http, &got, err);
        if (rc != MG_OK)
            return rc;
        /* another thread may have learned it meanwhile: the first one wins */
        if (!atomic_compare_exchange_strong(&emb->dim, &known, got) && known != got)
            return mg_error_set(err, MG_EDIM,
                                "embedder %s: the model answered %u values, earlier %u", emb->name,
                                got, known);
        known = got;
    }
    *dim = known;
    return MG_OK;
}
