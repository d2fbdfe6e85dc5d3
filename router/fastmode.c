#include "fastmode.h"

#include "../lib/utf8.h"
#include "../lib/uuid.h"

#include <stdlib.h>
#include <string.h>

/* Token count parts: code points in U+4E00..U+9FFF and the others. */
typedef struct tok_parts {
    size_t zh;
    size_t rest;
} tok_parts;

static tok_parts count_parts(const char *s, size_t len)
{
    tok_parts t = {0, 0};
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        unsigned c = p[i];
        size_t step = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
        if (step == 3 && i + 2 < len) {
            unsigned cp = ((c & 0x0Fu) << 12) | ((p[i + 1] & 0x3Fu) << 6) | (p[i + 2] & 0x3Fu);
            if (cp >= 0x4E00 && cp <= 0x9FFF) {
                t.zh++;
                i += 3;
                continue;
            }
        }
        t.rest++;
        i += step;
    }
    return t;
}

static size_t parts_tokens(tok_parts t)
{
    if (t.zh == 0 && t.rest == 0)
        return 0;
    size_t r = t.rest / 4;
    return t.zh + (r > 0 ? r : 1);
}

size_t mg_fast_tokens(const char *s, size_t len)
{
    return parts_tokens(count_parts(s, len));
}

char *mg_fast_key(const char *text, size_t len)
{
    static const char *const stops[] = {"\xE3\x80\x82", "\xEF\xBC\x81", "\xEF\xBC\x9F", "!", "?",
                                        "\n"};
    /* Leading blanks are stripped before splitting, as MemOS does. */
    size_t start = 0;
    while (start < len && (text[start] == ' ' || text[start] == '\t' || text[start] == '\n' ||
                           text[start] == '\r'))
        start++;
    size_t end = len;
    for (size_t i = start; i < len && end == len; i++)
        for (size_t s = 0; s < sizeof stops / sizeof stops[0]; s++) {
            size_t sl = strlen(stops[s]);
            if (i + sl <= len && memcmp(text + i, stops[s], sl) == 0) {
                end = i;
                break;
            }
        }
    /* At most MG_FAST_KEY_CHARS code points. */
    size_t i = start, cps = 0;
    while (i < end && cps < MG_FAST_KEY_CHARS) {
        unsigned char c = (unsigned char)text[i];
        i += c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
        cps++;
    }
    if (i > end)
        i = end;
    end = i;
    while (end > start && (text[end - 1] == ' ' || text[end - 1] == '\t' || text[end - 1] == '\r'))
        end--;
    char *key = malloc(end - start + 1);
    if (key == NULL)
        return NULL;
    memcpy(key, text + start, end - start);
    key[end - start] = '\0';
    return key;
}

/* The metadata shared by both kinds of fast memories. */
static json_t *base_metadata(const mg_fast_params *p, const char *memory_type, const char *text,
                             size_t len)
{
    json_t *m = json_object();
    json_t *tags = json_array();
    char *key = mg_fast_key(text, len);
    if (m == NULL || tags == NULL || key == NULL)
        goto err;
    json_array_append_new(tags, json_string("mode:fast"));
    if (p->custom_tags != NULL) {
        size_t i;
        json_t *t;
        json_array_foreach(p->custom_tags, i, t) json_array_append(tags, t);
    }
    int rc = 0;
    rc |= json_object_set_new(m, "user_id", json_string(p->user_id));
    rc |= json_object_set_new(m, "session_id", json_string(p->session_id));
    rc |= json_object_set_new(m, "status", json_string("activated"));
    rc |= json_object_set_new(m, "type", json_string("fact"));
    rc |= json_object_set_new(m, "memory_type", json_string(memory_type));
    rc |= json_object_set_new(m, "key", json_string(key));
    rc |= json_object_set_new(m, "tags", tags);
    tags = NULL;
    rc |= json_object_set_new(m, "confidence", json_real(0.99));
    rc |= json_object_set_new(m, "source", json_string("conversation"));
    rc |= json_object_set_new(m, "visibility", json_null());
    rc |= json_object_set_new(m, "sources", json_array());
    rc |= json_object_set_new(m, "background", json_string(""));
    rc |= json_object_set_new(m, "usage", json_array());
    rc |= json_object_set_new(m, "created_at", json_string(p->now));
    rc |= json_object_set_new(m, "updated_at", json_string(p->now));
    rc |= json_object_set_new(m, "info", p->info ? json_deep_copy(p->info) : json_object());
    rc |= json_object_set_new(m, "file_ids", json_array());
    free(key);
    if (rc != 0) {
        json_decref(m);
        return NULL;
    }
    return m;
err:
    json_decref(m);
    json_decref(tags);
    free(key);
    return NULL;
}

static int make_item(const mg_fast_params *p, const char *memory_type, char *text, size_t len,
                     json_t *sources, mg_item *out, mg_error *err)
{
    json_t *meta = base_metadata(p, memory_type, text, len);
    if (meta == NULL) {
        json_decref(sources);
        return mg_error_set(err, MG_ENOMEM, "out of memory");
    }
    if (sources != NULL)
        json_object_set_new(meta, "sources", sources);
    memset(out, 0, sizeof *out);
    mg_uuid_v4(out->id);
    out->memory = text;
    out->memory_len = len;
    out->metadata = meta;
    return MG_OK;
}

int mg_fast_text(const char *text, size_t len, const mg_fast_params *p, mg_item *out,
                 mg_error *err)
{
    size_t max = p->max_text_bytes ? p->max_text_bytes : MG_MEMORY_TEXT_MAX;
    if (len == 0)
        return mg_error_set(err, MG_EINVAL, "the memory text is empty");
    if (len > max)
        return mg_error_set(err, MG_ETOOBIG, "the memory text is %zu bytes (at most %zu)", len,
                            max);
    if (!mg_utf8_valid(text, len))
        return mg_error_set(err, MG_EINVAL, "the memory text is not valid UTF-8");
    char *copy = malloc(len + 1);
    if (copy == NULL)
        return mg_error_set(err, MG_ENOMEM, "out of memory");
    memcpy(copy, text, len);
    copy[len] = '\0';
    int rc = make_item(p, "LongTermMemory", copy, len, NULL, out, err);
    if (rc != MG_OK)
        free(copy);
    return rc;
}

/* One message of the list, checked. */
typedef struct line {
    const char *role;       /* NULL when absent */
    const char *content;
    size_t content_len;
    const char *chat_time;  /* NULL when absent or empty */
    size_t start;           /* offset of its text in the line buffer */
    size_t len;
    tok_parts parts;
} line;

static int check_message(const json_t *msg, size_t idx, line *ln, mg_error *err)
{
    if (!json_is_object(msg))
        return mg_error_set(err, MG_EINVAL, "messages[%zu] must be an object", idx);
    const json_t *role = json_object_get(msg, "role");
    const json_t *content = json_object_get(msg, "content");
    const json_t *chat_time = json_object_get(msg, "chat_time");
    if (role != NULL && !json_is_null(role) && !json_is_string(role))
        return mg_error_set(err, MG_EINVAL, "messages[%zu].role must be a string", idx);
    if (!json_is_string(content))
        return mg_error_set(err, MG_EINVAL, "messages[%zu].content must be a string", idx);
    if (chat_time != NULL && !json_is_null(chat_time) && !json_is_string(chat_time))
        return mg_error_set(err, MG_EINVAL, "messages[%zu].chat_time must be a string", idx);
    ln->role = json_is_string(role) ? json_string_value(role) : NULL;
    ln->content = json_string_value(content);
    ln->content_len = json_string_length(content);
    ln->chat_time = json_is_string(chat_time) && json_string_length(chat_time) > 0
                        ? json_string_value(chat_time)
                        : NULL;
    if (!mg_utf8_valid(ln->content, ln->content_len))
        return mg_error_set(err, MG_EINVAL, "messages[%zu].content is not valid UTF-8 (or holds NUL)",
                            idx);
    return MG_OK;
}

static bool role_is_user(const line *ln)
{
    return ln->role != NULL && strcmp(ln->role, "user") == 0;
}

static json_t *source_of(const line *ln, size_t idx)
{
    json_t *s = json_object();
    if (s == NULL)
        return NULL;
    int rc = json_object_set_new(s, "type", json_string("chat"));
    rc |= json_object_set_new(s, "role", ln->role ? json_string(ln->role) : json_null());
    rc |= json_object_set_new(s, "chat_time",
                              ln->chat_time ? json_string(ln->chat_time) : json_null());
    rc |= json_object_set_new(s, "content", json_stringn(ln->content, ln->content_len));
    rc |= json_object_set_new(s, "index", json_integer((json_int_t)idx));
    if (rc != 0) {
        json_decref(s);
        return NULL;
    }
    return s;
}

/* Emits the window of lines [from, to) as one item. */
static int emit_window(const mg_fast_params *p, const line *lines, const char *buf, size_t from,
                       size_t to, size_t max_text, mg_item *out, mg_error *err)
{
    size_t start = lines[from].start;
    size_t len = lines[to - 1].start + lines[to - 1].len - start;
    if (len > max_text)
        return mg_error_set(err, MG_ETOOBIG,
                            "messages[%zu] makes a memory of %zu bytes (at most %zu)", from, len,
                            max_text);
    char *text = malloc(len + 1);
    json_t *sources = json_array();
    if (text == NULL || sources == NULL) {
        free(text);
        json_decref(sources);
        return mg_error_set(err, MG_ENOMEM, "out of memory");
    }
    memcpy(text, buf + start, len);
    text[len] = '\0';
    bool all_user = true;
    for (size_t i = from; i < to; i++) {
        all_user &= role_is_user(&lines[i]);
        json_t *s = source_of(&lines[i], i);
        if (s == NULL || json_array_append_new(sources, s) != 0) {
            free(text);
            json_decref(sources);
            return mg_error_set(err, MG_ENOMEM, "out of memory");
        }
    }
    int rc = make_item(p, all_user ? "UserMemory" : "LongTermMemory", text, len, sources, out,
                       err);
    if (rc != MG_OK)
        free(text);
    return rc;
}

int mg_fast_windows(const json_t *messages, const mg_fast_params *p, mg_item **items, size_t *n,
                    mg_error *err)
{
    *items = NULL;
    *n = 0;
    if (!json_is_array(messages))
        return mg_error_set(err, MG_EINVAL, "messages must be a list or a string");
    size_t count = json_array_size(messages);
    if (p->max_messages && count > p->max_messages)
        return mg_error_set(err, MG_ETOOBIG, "%zu messages (at most %zu in one add)", count,
                            p->max_messages);
    if (count == 0)
        return MG_OK;
    size_t max_tokens = p->max_tokens ? p->max_tokens : MG_FAST_WINDOW_TOKENS;
    size_t overlap = p->overlap ? p->overlap : MG_FAST_OVERLAP_TOKENS;
    size_t max_text = p->max_text_bytes ? p->max_text_bytes : MG_MEMORY_TEXT_MAX;

    line *lines = calloc(count, sizeof *lines);
    char *buf = NULL;
    mg_item *out = NULL;
    size_t n_out = 0, cap_out = 0;
    int rc = MG_OK;
    if (lines == NULL)
        return mg_error_set(err, MG_ENOMEM, "out of memory");

    /* Render every line once into one buffer. */
    size_t total = 0;
    for (size_t i = 0; i < count && rc == MG_OK; i++) {
        rc = check_message(json_array_get(messages, i), i, &lines[i], err);
        if (rc == MG_OK) {
            const line *ln = &lines[i];
            bool show_role = ln->role && ln->role[0] && strcmp(ln->role, "mix") != 0;
            total += (show_role ? strlen(ln->role) + 2 : 0) +
                     (ln->chat_time ? strlen(ln->chat_time) + 4 : 0) + ln->content_len + 1;
        }
    }
    if (rc != MG_OK)
        goto done;
    buf = malloc(total + 1);
    if (buf == NULL) {
        rc = mg_error_set(err, MG_ENOMEM, "out of memory");
        goto done;
    }
    size_t off = 0;
    for (size_t i = 0; i < count; i++) {
        line *ln = &lines[i];
        ln->start = off;
        if (ln->role && ln->role[0] && strcmp(ln->role, "mix") != 0) {
            size_t rl = strlen(ln->role);
            memcpy(buf + off, ln->role, rl);
            memcpy(buf + off + rl, ": ", 2);
            off += rl + 2;
        }
        if (ln->chat_time) {
            size_t tl = strlen(ln->chat_time);
            buf[off++] = '[';
            memcpy(buf + off, ln->chat_time, tl);
            off += tl;
            memcpy(buf + off, "]: ", 3);
            off += 3;
        }
        memcpy(buf + off, ln->content, ln->content_len);
        off += ln->content_len;
        buf[off++] = '\n';
        ln->len = off - ln->start;
        ln->parts = count_parts(buf + ln->start, ln->len);
    }

    /* Slide: [from, i) is the current window, `sum` its token parts. */
    size_t from = 0;
    tok_parts sum = {0, 0};
    for (size_t i = 0; i < count; i++) {
        tok_parts with = {sum.zh + lines[i].parts.zh, sum.rest + lines[i].parts.rest};
        if (i > from && parts_tokens(with) > max_tokens) {
            if (n_out == cap_out) {
                size_t cap = cap_out ? cap_out * 2 : 8;
                mg_item *grown = realloc(out, cap * sizeof *grown);
                if (grown == NULL) {
                    rc = mg_error_set(err, MG_ENOMEM, "out of memory");
                    goto done;
                }
                out = grown;
                cap_out = cap;
            }
            rc = emit_window(p, lines, buf, from, i, max_text, &out[n_out], err);
            if (rc != MG_OK)
                goto done;
            n_out++;
            while (from < i && parts_tokens(sum) > overlap) {
                sum.zh -= lines[from].parts.zh;
                sum.rest -= lines[from].parts.rest;
                from++;
            }
        }
        sum.zh += lines[i].parts.zh;
        sum.rest += lines[i].parts.rest;
    }
    if (n_out == cap_out) {
        mg_item *grown = realloc(out, (cap_out + 1) * sizeof *grown);
        if (grown == NULL) {
            rc = mg_error_set(err, MG_ENOMEM, "out of memory");
            goto done;
        }
        out = grown;
    }
    rc = emit_window(p, lines, buf, from, count, max_text, &out[n_out], err);
    if (rc == MG_OK)
        n_out++;

done:
    if (rc != MG_OK) {
        for (size_t i = 0; i < n_out; i++)
            mg_item_clear(&out[i]);
        free(out);
        out = NULL;
        n_out = 0;
    }
    free(buf);
    free(lines);
    *items = out;
    *n = n_out;
    return rc;
}
