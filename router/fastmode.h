/*
 * MemOS "fast" add mode without an LLM (MEMOS_API.md): a conversation is cut
 * into sliding windows of lines "<role>: [<chat_time>]: <content>\n"; each
 * window becomes one memory, stored as it is.
 *
 * Windows follow MemOS's reader: a line is added to the window unless the
 * window is not empty and would pass max_tokens with it; then the window is
 * emitted and lines are dropped from its front until what is left is at most
 * `overlap` tokens, and those stay as the next window's start. A line longer
 * than max_tokens is a window of its own.
 *
 * Tokens are counted as MemOS does when tiktoken is not installed: every
 * code point in U+4E00..U+9FFF is one token, the other code points count one
 * token per four (at least one for a non-empty text). The real tokenizer
 * (cl100k) gives counts within about 20% of this on English chat.
 *
 * Each memory: memory_type "UserMemory" when every message of the window is
 * from the user, else "LongTermMemory"; tags ["mode:fast"] + custom_tags;
 * sources one {"type": "chat", "role", "chat_time", "content", "index"} per
 * message of the window; metadata user_id, session_id, status "activated",
 * type "fact", key (the first sentence, at most 80 characters), confidence
 * 0.99, source "conversation", visibility null, background "", usage [],
 * created_at/updated_at (given), info (copied), file_ids [].
 *
 * Pure: no I/O; ids come from mg_uuid_v4.
 */
#ifndef MG_ROUTER_FASTMODE_H
#define MG_ROUTER_FASTMODE_H

#include "../lib/error.h"
#include "../storage/item.h"

#include <jansson.h>
#include <stddef.h>

#define MG_FAST_WINDOW_TOKENS 1024
#define MG_FAST_OVERLAP_TOKENS 200
#define MG_FAST_KEY_CHARS 80

typedef struct mg_fast_params {
    const char *user_id;        /* required */
    const char *session_id;     /* required ("default_session" when the request has none) */
    const json_t *custom_tags;  /* array of strings, or NULL */
    const json_t *info;         /* object, or NULL */
    const char *now;            /* ISO 8601 stamp for created_at/updated_at */
    size_t max_tokens;          /* 0 = MG_FAST_WINDOW_TOKENS */
    size_t overlap;             /* 0 = MG_FAST_OVERLAP_TOKENS */
    size_t max_text_bytes;      /* a window's text; 0 = MG_MEMORY_TEXT_MAX */
    size_t max_messages;        /* 0 = no limit */
} mg_fast_params;

/* Tokens of s[0..len) (UTF-8) by the rule above. */
size_t mg_fast_tokens(const char *s, size_t len);

/* MemOS's default key of a text: up to the first of 。！？!? or a newline,
 * at most MG_FAST_KEY_CHARS code points, blanks trimmed. A new string
 * (caller frees), or NULL on allocation failure. */
char *mg_fast_key(const char *text, size_t len);

/* Cuts `messages` (a JSON array of {"role": str, "content": str,
 * "chat_time"?: str}) into memories. *items is a malloc'd array of *n items
 * (mg_item_clear each, then free). Errors: MG_EINVAL naming the bad message
 * ("messages[2].content must be a string"), MG_ETOOBIG for too many messages
 * or a window over max_text_bytes, MG_ENOMEM. An empty list gives 0 items. */
int mg_fast_windows(const json_t *messages, const mg_fast_params *p, mg_item **items, size_t *n,
                    mg_error *err);

/* One memory holding `text` as it is (memory_content, or messages given as a
 * plain string): memory_type "LongTermMemory", sources [], other metadata as
 * above. MG_EINVAL (not UTF-8, empty), MG_ETOOBIG, MG_ENOMEM. */
int mg_fast_text(const char *text, size_t len, const mg_fast_params *p, mg_item *out,
                 mg_error *err);

#endif
