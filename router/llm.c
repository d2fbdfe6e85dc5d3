#include "llm.h"

#include "../lib/clock.h"
#include "../lib/config.h"
#include "../lib/log.h"
#include "../lib/utf8.h"
#include "remote_http.h"

#include <jansson.h>

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define TIMEOUT_MAX_MS 600000u
#define RETRIES_MAX 10u
#define DEFAULT_MODEL "gpt-4o-mini"
#define DEFAULT_KEY_ENV "OPENAI_API_KEY"
#define TAGS_MAX 32
#define TAG_BYTES_MAX 256
#define QUOTE_MAX 80

struct mg_llm {
    char model[128];
    char url[600];
    char what[160];
    mg_remote *remote;
    /* set once the server refused response_format/temperature */
    atomic_bool plain;
};

/* The extraction instructions. Written for memgrid; the shape of the answer
 * (key, memory, memory_type, tags) matches what MemOS stores for a fine-mode
 * memory. */
static const char system_prompt[] =
    "You turn a conversation into memories for a long-term memory store.\n"
    "Write down every fact from the conversation that could be useful to remember later: "
    "facts about the user and the people they mention, their experiences, plans, decisions, "
    "preferences, opinions, feelings and relationships, and facts stated by the assistant "
    "that the user accepted.\n"
    "Rules:\n"
    "- Each memory is one self-contained statement that makes sense without the "
    "conversation: name people instead of using pronouns (\"the user\" when the user's name "
    "is unknown), and turn relative times such as \"yesterday\" or \"next week\" into dates "
    "when the message time allows it. Keep names, places, numbers and dates.\n"
    "- Write in the third person, in the language of the conversation.\n"
    "- Only what was said or is clearly implied; no guesses. Skip greetings and small talk.\n"
    "- memory_type is \"UserMemory\" for facts about the user as a person (identity, "
    "preferences, habits, relationships) and \"LongTermMemory\" for anything else.\n"
    "- key is a title of a few words; tags are 1 to 4 short lower-case topics.\n"
    "Answer with one JSON object and nothing else, of this form:\n"
    "{\"memories\": [{\"key\": \"...\", \"memory\": \"...\", \"memory_type\": \"UserMemory\", "
    "\"tags\": [\"...\"]}]}\n"
    "When nothing is worth remembering, answer {\"memories\": []}.";

void mg_llm_config_init(mg_llm_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->timeout_ms = MG_LLM_TIMEOUT_DEFAULT_MS;
    cfg->retries = 2;
}

int mg_llm_config_from_env(mg_llm_config *cfg, mg_error *err)
{
    mg_llm_config_init(cfg);
    int rc;
    if ((rc = mg_env_str("MEMGRID_CHAT_URL", cfg->url, sizeof cfg->url, err)) != MG_OK ||
        (rc = mg_env_str("MEMGRID_CHAT_MODEL", cfg->model, sizeof cfg->model, err)) != MG_OK ||
        (rc = mg_env_str("MEMGRID_CHAT_KEY_ENV", cfg->api_key_env, sizeof cfg->api_key_env, err)) !=
            MG_OK ||
        (rc = mg_env_u32("MEMGRID_CHAT_TIMEOUT_MS", 1, TIMEOUT_MAX_MS, &cfg->timeout_ms, err)) !=
            MG_OK ||
        (rc = mg_env_u32("MEMGRID_CHAT_RETRIES", 0, RETRIES_MAX, &cfg->retries, err)) != MG_OK)
        return rc;
    return MG_OK;
}

int mg_llm_open(const mg_llm_config *cfg, mg_llm **out, mg_error *err)
{
    *out = NULL;
    if (memchr(cfg->url, '\0', sizeof cfg->url) == NULL || cfg->url[0] == '\0')
        return mg_error_set(err, MG_EINVAL, "%s", MG_LLM_NOT_CONFIGURED_MSG);
    if (memchr(cfg->model, '\0', sizeof cfg->model) == NULL ||
        memchr(cfg->api_key_env, '\0', sizeof cfg->api_key_env) == NULL)
        return mg_error_set(err, MG_EINVAL, "chat model: a string is not NUL-terminated");
    uint32_t timeout_ms = cfg->timeout_ms != 0 ? cfg->timeout_ms : MG_LLM_TIMEOUT_DEFAULT_MS;
    if (timeout_ms > TIMEOUT_MAX_MS || cfg->retries > RETRIES_MAX)
        return mg_error_set(err, MG_EINVAL,
                            "chat model: timeout %u ms (at most %u) or %u retries (at most %u)",
                            timeout_ms, TIMEOUT_MAX_MS, cfg->retries, RETRIES_MAX);
    for (const char *p = cfg->model; *p != '\0'; p++)
        if ((unsigned char)*p <= ' ' || *p == '"' || *p == 0x7f)
            return mg_error_set(err, MG_EINVAL,
                                "chat model: the name has a blank, quote or control character");
    mg_llm *llm = calloc(1, sizeof *llm);
    if (llm == NULL)
        return mg_error_set(err, MG_ENOMEM, "chat model: out of memory");
    snprintf(llm->model, sizeof llm->model, "%s",
             cfg->model[0] != '\0' ? cfg->model : DEFAULT_MODEL);
    snprintf(llm->what, sizeof llm->what, "chat model %s", llm->model);
    atomic_init(&llm->plain, false);
    char *key = NULL;
    int rc = mg_remote_openai_url(cfg->url, "/chat/completions", llm->url, sizeof llm->url, err);
    if (rc != MG_OK) {
        mg_error_wrap(err, rc, "%s: MEMGRID_CHAT_URL", llm->what);
        goto err_free;
    }
    const char *key_env = cfg->api_key_env[0] != '\0' ? cfg->api_key_env : DEFAULT_KEY_ENV;
    if (strcasecmp(key_env, "none") != 0) {
        rc = mg_remote_key_from_env(llm->what, key_env, "MEMGRID_CHAT_KEY_ENV", &key, err);
        if (rc != MG_OK)
            goto err_free;
    }
    mg_remote_config rcfg = {
        .what = llm->what,
        .api_key = key,
        .timeout_ms = timeout_ms,
        .retries = cfg->retries,
        .backoff_ms = cfg->backoff_ms,
    };
    rc = mg_remote_open(&rcfg, &llm->remote, err);
    if (key != NULL) {
        explicit_bzero(key, strlen(key));
        free(key);
    }
    if (rc != MG_OK)
        goto err_free;
    *out = llm;
    return MG_OK;

err_free:
    free(llm);
    return rc;
}

void mg_llm_close(mg_llm *llm)
{
    if (llm == NULL)
        return;
    mg_remote_close(llm->remote);
    free(llm);
}

bool mg_llm_configured(const mg_llm *llm)
{
    return llm != NULL;
}

const char *mg_llm_model(const mg_llm *llm)
{
    return llm->model;
}

/* ---- parsing the reply ---- */

static bool is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* A copy of s without leading and trailing blanks, or NULL when nothing is left
 * (or no memory: the caller cannot tell, and treats both as "skip"). Stops at
 * an embedded NUL. */
static char *trimmed_copy(const char *s)
{
    while (is_blank(*s))
        s++;
    size_t n = strlen(s);
    while (n > 0 && is_blank(s[n - 1]))
        n--;
    return n > 0 ? strndup(s, n) : NULL;
}

/* The text of a string member among `names`, or NULL. */
static const char *member_string(json_t *obj, const char *const *names, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        json_t *v = json_object_get(obj, names[i]);
        if (json_is_string(v))
            return json_string_value(v);
    }
    return NULL;
}

static void memory_free(mg_llm_memory *m)
{
    free(m->memory);
    free(m->key);
    free(m->memory_type);
    for (size_t t = 0; t < m->n_tags; t++)
        free(m->tags[t]);
    free(m->tags);
    memset(m, 0, sizeof *m);
}

void mg_llm_memories_free(mg_llm_memory *memories, size_t n)
{
    if (memories == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        memory_free(&memories[i]);
    free(memories);
}

/* Fills m from one element of the list. Returns false to skip the element
 * (no text), or when an allocation failed (*nomem is then set and m holds
 * nothing). */
static bool memory_from_json(json_t *el, mg_llm_memory *m, bool *nomem)
{
    static const char *const text_names[] = {"memory", "value", "text", "content", "fact"};
    static const char *const key_names[] = {"key", "title"};
    memset(m, 0, sizeof *m);
    const char *text = json_is_string(el) ? json_string_value(el)
                       : json_is_object(el)
                           ? member_string(el, text_names, sizeof text_names / sizeof *text_names)
                           : NULL;
    if (text == NULL)
        return false;
    m->memory = trimmed_copy(text);
    if (m->memory == NULL)
        return false; /* blank, or no memory; an empty memory is skipped either way */
    if (!json_is_object(el))
        return true;
    const char *key = member_string(el, key_names, 2);
    if (key != NULL)
        m->key = trimmed_copy(key);
    const char *type = json_string_value(json_object_get(el, "memory_type"));
    if (type != NULL && (strcmp(type, "UserMemory") == 0 || strcmp(type, "LongTermMemory") == 0)) {
        m->memory_type = strdup(type);
        if (m->memory_type == NULL)
            goto err_nomem;
    }
    json_t *tags = json_object_get(el, "tags");
    size_t count = json_is_array(tags) ? json_array_size(tags) : 0;
    if (count > TAGS_MAX)
        count = TAGS_MAX;
    if (count > 0) {
        m->tags = calloc(count, sizeof *m->tags);
        if (m->tags == NULL)
            goto err_nomem;
    }
    for (size_t i = 0; i < count; i++) {
        json_t *t = json_array_get(tags, i);
        if (!json_is_string(t) || json_string_length(t) > TAG_BYTES_MAX)
            continue;
        char *tag = trimmed_copy(json_string_value(t));
        if (tag != NULL)
            m->tags[m->n_tags++] = tag;
    }
    return true;

err_nomem:
    memory_free(m);
    *nomem = true;
    return false;
}

/* The list of memories inside a parsed reply, or NULL. */
static json_t *memory_list(json_t *root)
{
    if (json_is_array(root))
        return root;
    if (!json_is_object(root))
        return NULL;
    static const char *const names[] = {"memories", "memory list", "memory_list", "facts"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        json_t *v = json_object_get(root, names[i]);
        if (json_is_array(v))
            return v;
    }
    /* the one list in an object with another name */
    json_t *only = NULL;
    const char *name;
    json_t *v;
    json_object_foreach(root, name, v)
    {
        (void)name;
        if (json_is_array(v)) {
            if (only != NULL)
                return NULL;
            only = v;
        }
    }
    return only;
}

/* The start of s, quoted in a message: control characters become spaces. */
static void quote_start(const char *s, size_t len, char *out, size_t cap)
{
    size_t o = 0;
    while (len > 0 && is_blank(*s)) {
        s++;
        len--;
    }
    for (size_t i = 0; i < len && o + 4 < cap && o < QUOTE_MAX; i++) {
        unsigned char c = (unsigned char)s[i];
        out[o++] = c < 0x20 ? ' ' : (char)c;
    }
    /* do not end inside a UTF-8 sequence */
    while (o > 0 && ((unsigned char)out[o - 1] & 0xC0) == 0x80)
        o--;
    if (o > 0 && ((unsigned char)out[o - 1] & 0xC0) == 0xC0)
        o--;
    if (o < len && o + 4 <= cap) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
}

/* Tries to read a JSON value from s[0..len); NULL when it is not JSON. */
static json_t *try_json(const char *s, size_t len)
{
    if (len == 0)
        return NULL;
    return json_loadb(s, len, 0, NULL);
}

/* Where the JSON of a reply may be, in order: the whole text; the inside of
 * the first ``` fence (its language tag skipped); from the first '{' to the
 * last '}'; from the first '[' to the last ']'. Returns the first candidate
 * that parses and holds a list; else the first that parses at all (so the
 * error can say "no list"); else NULL. */
static json_t *reply_json(const char *s, size_t len)
{
    const char *start[4];
    size_t lens[4];
    size_t k = 0;
    start[k] = s;
    lens[k++] = len;
    const char *fence = memmem(s, len, "```", 3);
    if (fence != NULL) {
        const char *body = fence + 3;
        const char *end = s + len;
        const char *eol = memchr(body, '\n', (size_t)(end - body));
        body = eol != NULL ? eol + 1 : body;
        const char *close = memmem(body, (size_t)(end - body), "```", 3);
        start[k] = body;
        lens[k++] = (size_t)((close != NULL ? close : end) - body);
    }
    static const char pairs[2][2] = {{'{', '}'}, {'[', ']'}};
    for (size_t p = 0; p < 2; p++) {
        const char *open = memchr(s, pairs[p][0], len);
        const char *close = NULL;
        for (const char *c = s + len; c > s; c--)
            if (c[-1] == pairs[p][1]) {
                close = c;
                break;
            }
        if (open != NULL && close != NULL && close > open) {
            start[k] = open;
            lens[k++] = (size_t)(close - open);
        }
    }
    json_t *any = NULL;
    for (size_t i = 0; i < k; i++) {
        json_t *j = try_json(start[i], lens[i]);
        if (j == NULL)
            continue;
        if (memory_list(j) != NULL) {
            json_decref(any);
            return j;
        }
        if (any == NULL)
            any = j;
        else
            json_decref(j);
    }
    return any;
}

int mg_llm_parse_memories(const char *reply, size_t len, mg_llm_memory **memories, size_t *n,
                          mg_error *err)
{
    *memories = NULL;
    *n = 0;
    char quote[QUOTE_MAX + 8];
    json_t *root = reply_json(reply, len);
    json_t *list = root != NULL ? memory_list(root) : NULL;
    if (list == NULL) {
        quote_start(reply, len, quote, sizeof quote);
        int rc = mg_error_set(
            err, MG_ECORRUPT, "%s: \"%s\"",
            root == NULL ? "the reply is not JSON" : "the reply holds no list of memories", quote);
        json_decref(root);
        return rc;
    }
    size_t count = json_array_size(list);
    if (count > MG_LLM_MEMORIES_MAX) {
        mg_warn("llm.parse", "memories=%zu kept=%d", count, MG_LLM_MEMORIES_MAX);
        count = MG_LLM_MEMORIES_MAX;
    }
    mg_llm_memory *out = calloc(count != 0 ? count : 1, sizeof *out);
    if (out == NULL) {
        json_decref(root);
        return mg_error_set(err, MG_ENOMEM, "out of memory");
    }
    size_t kept = 0;
    bool nomem = false;
    for (size_t i = 0; i < count && !nomem; i++)
        if (memory_from_json(json_array_get(list, i), &out[kept], &nomem))
            kept++;
    json_decref(root);
    if (nomem) {
        mg_llm_memories_free(out, kept);
        return mg_error_set(err, MG_ENOMEM, "out of memory");
    }
    *memories = out;
    *n = kept;
    return MG_OK;
}

/* ---- the request ---- */

static int request_body(const mg_llm *llm, const char *conversation, size_t len, bool plain,
                        char **body, mg_error *err)
{
    *body = NULL;
    char now[MG_ISO8601_LEN + 1];
    mg_clock_iso8601(mg_clock_wall_us(), now);
    static const char head[] = "Current time (UTC): %s\n\nConversation:\n";
    size_t cap = sizeof head + sizeof now + len;
    char *user = malloc(cap);
    if (user == NULL)
        return mg_error_set(err, MG_ENOMEM, "%s: out of memory", llm->what);
    int w = snprintf(user, cap, head, now);
    memcpy(user + w, conversation, len);
    user[(size_t)w + len] = '\0';

    json_t *req = json_pack("{s:s, s:[{s:s, s:s}, {s:s, s:s%}]}", "model", llm->model, "messages",
                            "role", "system", "content", system_prompt, "role", "user", "content",
                            user, (size_t)w + len);
    free(user);
    if (req == NULL)
        return mg_error_set(err, MG_ENOMEM, "%s: out of memory", llm->what);
    if (!plain && (json_object_set_new(req, "temperature", json_real(0.0)) != 0 ||
                   json_object_set_new(req, "response_format",
                                       json_pack("{s:s}", "type", "json_object")) != 0)) {
        json_decref(req);
        return mg_error_set(err, MG_ENOMEM, "%s: out of memory", llm->what);
    }
    *body = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    if (*body == NULL)
        return mg_error_set(err, MG_ENOMEM, "%s: out of memory", llm->what);
    return MG_OK;
}

/* POSTs one request. On a 400/422 to a request with the optional fields, asks
 * again without them; when that works, this server gets plain requests from
 * then on. */
static int chat(mg_llm *llm, const char *conversation, size_t len, json_t **reply, mg_error *err)
{
    bool plain = atomic_load(&llm->plain);
    bool fell_back = false;
    for (;;) {
        char *body;
        int rc = request_body(llm, conversation, len, plain, &body, err);
        if (rc != MG_OK)
            return rc;
        long status = 0;
        rc = mg_remote_post_json(llm->remote, llm->url, body, strlen(body), reply, &status, err);
        free(body);
        if (rc == MG_EINVAL && !plain && (status == 400 || status == 422)) {
            mg_warn("llm.plain",
                    "what=\"%s\" status=%ld msg=\"retrying without response_format and "
                    "temperature\"",
                    llm->what, status);
            plain = true;
            fell_back = true;
            continue;
        }
        if (fell_back && rc == MG_OK)
            atomic_store(&llm->plain, true);
        return rc;
    }
}

int mg_llm_extract_memories(mg_llm *llm, const char *conversation, size_t len,
                            mg_llm_memory **memories, size_t *n, mg_error *err)
{
    *memories = NULL;
    *n = 0;
    if (len > MG_LLM_INPUT_MAX)
        return mg_error_set(err, MG_ETOOBIG, "%s: conversation of %zu bytes, at most %u", llm->what,
                            len, MG_LLM_INPUT_MAX);
    if (!mg_utf8_valid(len != 0 ? conversation : "", len))
        return mg_error_set(err, MG_EINVAL, "%s: the conversation is not valid UTF-8", llm->what);
    json_t *reply;
    int rc = chat(llm, len != 0 ? conversation : "", len, &reply, err);
    if (rc != MG_OK)
        return rc;
    json_t *choice = json_array_get(json_object_get(reply, "choices"), 0);
    json_t *message = json_object_get(choice, "message");
    json_t *content = json_object_get(message, "content");
    const char *finish = json_string_value(json_object_get(choice, "finish_reason"));
    if (!json_is_string(content)) {
        const char *refusal = json_string_value(json_object_get(message, "refusal"));
        if (refusal != NULL)
            rc =
                mg_error_set(err, MG_ECORRUPT, "%s: the model refused: %.120s", llm->what, refusal);
        else
            rc = mg_error_set(err, MG_ECORRUPT,
                              "%s: the answer has no choices[0].message.content text", llm->what);
        json_decref(reply);
        return rc;
    }
    rc = mg_llm_parse_memories(json_string_value(content), json_string_length(content), memories, n,
                               err);
    if (rc == MG_ECORRUPT && finish != NULL && strcmp(finish, "length") == 0)
        mg_error_wrap(err, rc, "%s: the reply was cut off at the token limit", llm->what);
    else if (rc != MG_OK)
        mg_error_wrap(err, rc, "%s", llm->what);
    json_decref(reply);
    return rc;
}
