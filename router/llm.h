/*
 * A client for an OpenAI-compatible chat endpoint (POST {base}/chat/completions),
 * used by MemOS "fine" mode: /product/add asks the model to turn a
 * conversation into standalone factual memories. Without a configured chat
 * model, fine mode is refused (MG_LLM_NOT_CONFIGURED_MSG, HTTP 400).
 *
 * Configuration from the environment (mg_llm_config_from_env):
 *
 *   MEMGRID_CHAT_URL         base URL; unset or empty = not configured. Formed
 *                            as for the openai embedder: no path gets
 *                            /v1/chat/completions, a path gets
 *                            /chat/completions, a URL ending with
 *                            /chat/completions is used as it is
 *                            (Ollama: http://127.0.0.1:11434/v1)
 *   MEMGRID_CHAT_MODEL       model name                         [gpt-4o-mini]
 *   MEMGRID_CHAT_KEY_ENV     variable holding the API key, sent as
 *                            "Authorization: Bearer <key>"; "none": no key
 *                                                               [OPENAI_API_KEY]
 *   MEMGRID_CHAT_TIMEOUT_MS  per HTTP attempt, 1..600000         [60000]
 *   MEMGRID_CHAT_RETRIES     retries after 5xx/429/connection errors [2]
 *
 * Requests ask for a JSON object (response_format json_object) at
 * temperature 0. A request refused with HTTP 400/422 is sent again without
 * these two fields; when that works, later requests go without them.
 */
#ifndef MG_LLM_H
#define MG_LLM_H

#include "../lib/error.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What the router answers (HTTP 400) to a fine-mode request without a chat model. */
#define MG_LLM_NOT_CONFIGURED_MSG                                                                  \
    "fine mode needs a chat model: set MEMGRID_CHAT_URL (and MEMGRID_CHAT_MODEL, "                 \
    "MEMGRID_CHAT_KEY_ENV) to an OpenAI-compatible endpoint, or use mode \"fast\""

#define MG_LLM_TIMEOUT_DEFAULT_MS 60000
#define MG_LLM_INPUT_MAX (256u << 10) /* conversation bytes per extraction */
#define MG_LLM_MEMORIES_MAX 256       /* memories kept per extraction */

typedef struct mg_llm_config {
    char url[512];         /* "" = not configured */
    char model[128];       /* "" = gpt-4o-mini */
    char api_key_env[128]; /* "" = OPENAI_API_KEY, "none" = no key */
    uint32_t timeout_ms;   /* per attempt; 0 = default */
    uint32_t retries;
    uint32_t backoff_ms; /* first retry delay; 0 = 100 ms */
} mg_llm_config;

typedef struct mg_llm mg_llm;

/* One extracted memory. Strings are UTF-8 and NUL-terminated. */
typedef struct mg_llm_memory {
    char *memory;      /* the standalone statement; never NULL or empty */
    char *key;         /* a short title, or NULL */
    char *memory_type; /* "UserMemory" or "LongTermMemory", or NULL */
    char **tags;       /* n_tags strings */
    size_t n_tags;
} mg_llm_memory;

/* Defaults: empty URL (not configured), timeout 60 s, 2 retries. */
void mg_llm_config_init(mg_llm_config *cfg);

/* mg_llm_config_init, then the MEMGRID_CHAT_* variables above. Errors:
 * MG_EINVAL naming a variable whose value is out of range or too long. */
int mg_llm_config_from_env(mg_llm_config *cfg, mg_error *err);

/* Makes a client; no network I/O. Reads the API key now. Errors: MG_EINVAL
 * (no URL: the message is MG_LLM_NOT_CONFIGURED_MSG; not http(s); timeout
 * above 600000 ms; the key variable unset or empty, named in the message),
 * MG_EUNAVAIL (libcurl cannot start), MG_ENOMEM. On error *out is NULL. */
int mg_llm_open(const mg_llm_config *cfg, mg_llm **out, mg_error *err);

/* True when llm is an open client, i.e. fine mode can run. NULL is allowed
 * (the router keeps NULL when MEMGRID_CHAT_URL is unset). */
bool mg_llm_configured(const mg_llm *llm);

/* "<model>", valid until close. */
const char *mg_llm_model(const mg_llm *llm);

/* Asks the model for the memories in conversation[0..len) (UTF-8: typically
 * the lines "<role>: [<time>]: <content>" of fast mode). On success *memories
 * is an array of *n (possibly 0: nothing worth keeping) that the caller frees
 * with mg_llm_memories_free. Thread-safe. Errors: MG_EINVAL (not UTF-8, or a
 * 4xx from the server), MG_ETOOBIG (over MG_LLM_INPUT_MAX), MG_ECORRUPT (the
 * reply holds no usable JSON list of memories, or was cut off at the token
 * limit; the message quotes its start), the transport errors of embed.h
 * (MG_EPERM, MG_ETIMEDOUT, MG_EUNAVAIL), MG_ENOMEM. On error *memories is
 * NULL and *n 0. */
int mg_llm_extract_memories(mg_llm *llm, const char *conversation, size_t len,
                            mg_llm_memory **memories, size_t *n, mg_error *err);

/* Parses a chat reply's text as mg_llm_extract_memories does (pure; exposed
 * for tests and fuzzing): a JSON object {"memories": [...]} (or "memory list",
 * "memory_list", "facts"), or a JSON list, possibly inside ``` fences or
 * surrounded by prose; each element is a string or an object with "memory"
 * (or "value", "text", "content", "fact"), optional "key", "tags",
 * "memory_type". Elements without text are skipped; at most
 * MG_LLM_MEMORIES_MAX are kept. Errors: MG_ECORRUPT, MG_ENOMEM. */
int mg_llm_parse_memories(const char *reply, size_t len, mg_llm_memory **memories, size_t *n,
                          mg_error *err);

/* Frees what mg_llm_extract_memories returned. NULL is allowed. */
void mg_llm_memories_free(mg_llm_memory *memories, size_t n);

/* Frees the client; no call may be running. NULL is allowed. */
void mg_llm_close(mg_llm *llm);

#endif
