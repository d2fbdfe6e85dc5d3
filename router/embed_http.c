#include "embed_http.h"

#include "../lib/utf8.h"
#include "remote_http.h"

#include <jansson.h>

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct mg_embed_http {
    int kind;
    char what[96];
    char url[600];
    char model[128];
    uint32_t batch_max;
    mg_remote *remote;
};

/* Ollama's native endpoint: {base}/api/embed, accepting a base that already
 * names /api or /api/embed. */
static int ollama_url(const char *base, char *out, size_t cap, mg_error *err)
{
    size_t n = strlen(base);
    while (n > 0 && base[n - 1] == '/')
        n--;
    if (strncasecmp(base, "http://", 7) != 0 && strncasecmp(base, "https://", 8) != 0)
        return mg_error_set(err, MG_EINVAL, "URL %.100s: must start with http:// or https://",
                            base);
    const char *suffix = "/api/embed";
    if (n >= 10 && strncmp(base + n - 10, "/api/embed", 10) == 0)
        suffix = "";
    else if (n >= 4 && strncmp(base + n - 4, "/api", 4) == 0)
        suffix = "/embed";
    int w = snprintf(out, cap, "%.*s%s", (int)n, base, suffix);
    if (w < 0 || (size_t)w >= cap)
        return mg_error_set(err, MG_EINVAL, "URL %.100s...: too long", base);
    return MG_OK;
}

int mg_embed_http_open(const mg_embedder_config *cfg, const char *what, const char *api_key,
                       mg_embed_http **out, mg_error *err)
{
    *out = NULL;
    mg_embed_http *h = calloc(1, sizeof *h);
    if (h == NULL)
        return mg_error_set(err, MG_ENOMEM, "%s: out of memory", what);
    h->kind = cfg->kind;
    snprintf(h->what, sizeof h->what, "%s", what);
    snprintf(h->model, sizeof h->model, "%s", cfg->model);
    h->batch_max = cfg->batch_max;
    int rc = cfg->kind == MG_EMBEDDER_OPENAI
                 ? mg_remote_openai_url(cfg->url, "/embeddings", h->url, sizeof h->url, err)
                 : ollama_url(cfg->url, h->url, sizeof h->url, err);
    if (rc != MG_OK) {
        free(h);
        return mg_error_wrap(err, rc, "%s", what);
    }
    mg_remote_config rc_cfg = {
        .what = what,
        .api_key = api_key,
        .timeout_ms = cfg->timeout_ms,
        .retries = cfg->retries,
        .backoff_ms = cfg->backoff_ms,
    };
    rc = mg_remote_open(&rc_cfg, &h->remote, err);
    if (rc != MG_OK) {
        free(h);
        return rc;
    }
    *out = h;
    return MG_OK;
}

void mg_embed_http_close(mg_embed_http *h)
{
    if (h == NULL)
        return;
    mg_remote_close(h->remote);
    free(h);
}

/* {"model": ..., "input": [texts...]}: the same request in both protocols. */
static int request_body(const mg_embed_http *h, const char *const *texts, const size_t *lens,
                        size_t n, size_t first, char **body, mg_error *err)
{
    *body = NULL;
    json_t *req = json_object();
    json_t *input = json_array();
    int rc = MG_OK;
    /* json_object_set (not _new) keeps our reference to input */
    if (req == NULL || input == NULL ||
        json_object_set_new(req, "model", json_string(h->model)) != 0 ||
        json_object_set(req, "input", input) != 0) {
        rc = mg_error_set(err, MG_ENOMEM, "%s: out of memory", h->what);
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        const char *t = lens[i] != 0 ? texts[i] : "";
        if (!mg_utf8_valid(t, lens[i])) {
            rc =
                mg_error_set(err, MG_EINVAL, "%s: text %zu is not valid UTF-8", h->what, first + i);
            goto done;
        }
        if (json_array_append_new(input, json_stringn_nocheck(t, lens[i])) != 0) {
            rc = mg_error_set(err, MG_ENOMEM, "%s: out of memory", h->what);
            goto done;
        }
    }
    *body = json_dumps(req, JSON_COMPACT);
    if (*body == NULL)
        rc = mg_error_set(err, MG_ENOMEM, "%s: out of memory", h->what);
done:
    json_decref(input);
    json_decref(req);
    return rc;
}

/* The n embedding arrays of an answer, in the order of the texts (borrowed
 * from reply). OpenAI: {"data": [{"embedding": [...], "index": i}, ...]},
 * placed by "index" (servers may answer out of order; a missing index means
 * the position). Ollama: {"embeddings": [[...], ...]}. */
static int answer_vectors(const mg_embed_http *h, json_t *reply, size_t n, json_t **vecs,
                          mg_error *err)
{
    const char *field = h->kind == MG_EMBEDDER_OPENAI ? "data" : "embeddings";
    json_t *list = json_object_get(reply, field);
    if (!json_is_array(list)) {
        json_t *e = json_object_get(reply, "error");
        if (json_is_object(e))
            e = json_object_get(e, "message");
        if (json_is_string(e))
            return mg_error_set(err, MG_ECORRUPT, "%s: the server answered an error: %.120s",
                                h->what, json_string_value(e));
        return mg_error_set(err, MG_ECORRUPT, "%s: the answer has no \"%s\" list", h->what, field);
    }
    if (json_array_size(list) != n)
        return mg_error_set(err, MG_ECORRUPT, "%s: %zu vectors in the answer for %zu texts",
                            h->what, json_array_size(list), n);
    memset(vecs, 0, n * sizeof *vecs);
    for (size_t i = 0; i < n; i++) {
        json_t *item = json_array_get(list, i);
        json_t *vec = item;
        size_t at = i;
        if (h->kind == MG_EMBEDDER_OPENAI) {
            vec = json_object_get(item, "embedding");
            json_t *index = json_object_get(item, "index");
            if (index != NULL) {
                if (!json_is_integer(index) || json_integer_value(index) < 0 ||
                    (uint64_t)json_integer_value(index) >= n)
                    return mg_error_set(err, MG_ECORRUPT,
                                        "%s: answer item %zu has an index outside 0..%zu", h->what,
                                        i, n - 1);
                at = (size_t)json_integer_value(index);
            }
            if (json_is_string(vec))
                return mg_error_set(err, MG_ECORRUPT,
                                    "%s: answer item %zu is a string (base64?), not a list of "
                                    "numbers",
                                    h->what, i);
        }
        if (!json_is_array(vec))
            return mg_error_set(err, MG_ECORRUPT, "%s: answer item %zu has no embedding list",
                                h->what, i);
        if (vecs[at] != NULL)
            return mg_error_set(err, MG_ECORRUPT, "%s: the answer has index %zu twice", h->what,
                                at);
        vecs[at] = vec;
    }
    return MG_OK;
}

/* Copies a JSON array of dim numbers to out as floats. */
static int vector_floats(const mg_embed_http *h, json_t *vec, size_t text, uint32_t dim,
                         bool dim_configured, float *out, mg_error *err)
{
    if (json_array_size(vec) != dim)
        return mg_error_set(err, MG_EDIM,
                            "%s: text %zu got a vector of %zu values, expected %u (%s)", h->what,
                            text, json_array_size(vec), dim,
                            dim_configured ? "the configured dimension"
                                           : "the dimension of the model's first answer");
    for (uint32_t j = 0; j < dim; j++) {
        json_t *x = json_array_get(vec, j);
        if (!json_is_number(x))
            return mg_error_set(err, MG_ECORRUPT, "%s: text %zu: value %u is not a number", h->what,
                                text, j);
        double v = json_number_value(x);
        if (!isfinite(v) || fabs(v) > (double)FLT_MAX)
            return mg_error_set(err, MG_ENAN, "%s: text %zu: value %u (%g) is not a finite float",
                                h->what, text, j, v);
        out[j] = (float)v;
    }
    return MG_OK;
}

/* One request for texts[0..n) (n <= batch_max); *reply and vecs[0..n) on
 * success. */
static int embed_request(mg_embed_http *h, const char *const *texts, const size_t *lens, size_t n,
                         size_t first, json_t **reply, json_t **vecs, mg_error *err)
{
    *reply = NULL;
    char *body;
    int rc = request_body(h, texts, lens, n, first, &body, err);
    if (rc != MG_OK)
        return rc;
    rc = mg_remote_post_json(h->remote, h->url, body, strlen(body), reply, NULL, err);
    free(body);
    if (rc != MG_OK)
        return rc;
    rc = answer_vectors(h, *reply, n, vecs, err);
    if (rc != MG_OK) {
        json_decref(*reply);
        *reply = NULL;
    }
    return rc;
}

int mg_embed_http_embed(mg_embed_http *h, const char *const *texts, const size_t *lens, size_t n,
                        uint32_t dim, bool dim_configured, float *out, mg_error *err)
{
    size_t batch = h->batch_max < n ? h->batch_max : n;
    json_t **vecs = malloc((batch != 0 ? batch : 1) * sizeof *vecs);
    if (vecs == NULL)
        return mg_error_set(err, MG_ENOMEM, "%s: out of memory", h->what);
    int rc = MG_OK;
    for (size_t first = 0; first < n && rc == MG_OK; first += batch) {
        size_t m = n - first < batch ? n - first : batch;
        json_t *reply;
        rc = embed_request(h, texts + first, lens + first, m, first, &reply, vecs, err);
        for (size_t i = 0; i < m && rc == MG_OK; i++)
            rc = vector_floats(h, vecs[i], first + i, dim, dim_configured, out + (first + i) * dim,
                               err);
        json_decref(reply);
    }
    free(vecs);
    return rc;
}

int mg_embed_http_probe(mg_embed_http *h, uint32_t *dim, mg_error *err)
{
    static const char probe[] = "memgrid dimension probe";
    const char *texts[1] = {probe};
    size_t lens[1] = {sizeof probe - 1};
    json_t *reply;
    json_t *vec;
    int rc = embed_request(h, texts, lens, 1, 0, &reply, &vec, err);
    if (rc != MG_OK)
        return rc;
    size_t got = json_array_size(vec);
    if (got == 0 || got > MG_EMBEDDER_DIM_MAX) {
        json_decref(reply);
        return mg_error_set(err, MG_EDIM, "%s: the model answered a vector of %zu values", h->what,
                            got);
    }
    float *tmp = malloc(got * sizeof *tmp);
    if (tmp == NULL) {
        json_decref(reply);
        return mg_error_set(err, MG_ENOMEM, "%s: out of memory", h->what);
    }
    rc = vector_floats(h, vec, 0, (uint32_t)got, false, tmp, err);
    free(tmp);
    json_decref(reply);
    if (rc == MG_OK)
        *dim = (uint32_t)got;
    return rc;
}
