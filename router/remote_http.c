#include "remote_http.h"

#include "../lib/clock.h"
#include "../lib/log.h"

#include <curl/curl.h>

#include <ctype.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define BACKOFF_DEFAULT_MS 100u
#define BACKOFF_MAX_MS 5000u
#define RETRY_AFTER_MAX_S 10
#define SERVER_TEXT_MAX 120

struct mg_remote {
    char what[160];
    char *auth_header; /* "Authorization: Bearer <key>", wiped at close */
    struct curl_slist *headers;
    uint32_t timeout_ms;
    uint32_t retries;
    uint32_t backoff_ms;
    pthread_mutex_t lock;
    CURL *idle[MG_REMOTE_POOL_MAX];
    size_t n_idle;
};

/* The answer of one attempt, grown by the write callback. */
struct reply_buf {
    char *data;
    size_t len;
    size_t cap;
    bool too_big;
    bool nomem;
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc = CURLE_FAILED_INIT;

static void curl_init(void)
{
    curl_init_rc = curl_global_init(CURL_GLOBAL_ALL);
}

static void wipe(char *s)
{
    if (s != NULL)
        explicit_bzero(s, strlen(s));
}

int mg_remote_open(const mg_remote_config *cfg, mg_remote **out, mg_error *err)
{
    *out = NULL;
    const char *what = cfg->what != NULL ? cfg->what : "remote";
    if (cfg->timeout_ms == 0)
        return mg_error_set(err, MG_EINVAL, "%s: timeout must be at least 1 ms", what);
    if (cfg->api_key != NULL && strpbrk(cfg->api_key, "\r\n") != NULL)
        return mg_error_set(err, MG_EINVAL, "%s: the API key contains a line break", what);
    pthread_once(&curl_once, curl_init);
    if (curl_init_rc != CURLE_OK)
        return mg_error_set(err, MG_EUNAVAIL, "%s: libcurl failed to initialize: %s", what,
                            curl_easy_strerror(curl_init_rc));

    mg_remote *r = calloc(1, sizeof *r);
    if (r == NULL)
        return mg_error_set(err, MG_ENOMEM, "%s: out of memory", what);
    snprintf(r->what, sizeof r->what, "%s", what);
    r->timeout_ms = cfg->timeout_ms;
    r->retries = cfg->retries;
    r->backoff_ms = cfg->backoff_ms != 0 ? cfg->backoff_ms : BACKOFF_DEFAULT_MS;

    static const char *const fixed[] = {
        "Content-Type: application/json", "Accept: application/json",
        "Expect:", /* no 100-continue round trip before large bodies */
    };
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) {
        struct curl_slist *l = curl_slist_append(r->headers, fixed[i]);
        if (l == NULL)
            goto err_free;
        r->headers = l;
    }
    if (cfg->api_key != NULL) {
        static const char prefix[] = "Authorization: Bearer ";
        size_t n = sizeof prefix + strlen(cfg->api_key);
        r->auth_header = malloc(n);
        if (r->auth_header == NULL)
            goto err_free;
        snprintf(r->auth_header, n, "%s%s", prefix, cfg->api_key);
        /* curl_slist_append copies; wiped again at close through the list */
        struct curl_slist *l = curl_slist_append(r->headers, r->auth_header);
        if (l == NULL)
            goto err_free;
        r->headers = l;
    }
    if (pthread_mutex_init(&r->lock, NULL) != 0)
        goto err_free;
    *out = r;
    return MG_OK;

err_free:
    for (struct curl_slist *l = r->headers; l != NULL; l = l->next)
        wipe(l->data);
    curl_slist_free_all(r->headers);
    wipe(r->auth_header);
    free(r->auth_header);
    free(r);
    return mg_error_set(err, MG_ENOMEM, "%s: out of memory", what);
}

void mg_remote_close(mg_remote *r)
{
    if (r == NULL)
        return;
    for (size_t i = 0; i < r->n_idle; i++)
        curl_easy_cleanup(r->idle[i]);
    for (struct curl_slist *l = r->headers; l != NULL; l = l->next)
        wipe(l->data);
    curl_slist_free_all(r->headers);
    wipe(r->auth_header);
    free(r->auth_header);
    pthread_mutex_destroy(&r->lock);
    free(r);
}

static size_t on_write(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct reply_buf *b = userdata;
    size_t n = size * nmemb;
    if (n > MG_REMOTE_REPLY_MAX - b->len) {
        b->too_big = true;
        return 0; /* aborts the transfer with CURLE_WRITE_ERROR */
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap != 0 ? b->cap : 16384;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *data = realloc(b->data, cap);
        if (data == NULL) {
            b->nomem = true;
            return 0;
        }
        b->data = data;
        b->cap = cap;
    }
    memcpy(b->data + b->len, ptr, n);
    b->len += n;
    b->data[b->len] = '\0';
    return n;
}

/* An easy handle with the options that never change, or NULL. */
static CURL *handle_new(const mg_remote *r)
{
    CURL *h = curl_easy_init();
    if (h == NULL)
        return NULL;
    bool ok = curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L) == CURLE_OK &&
              curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)r->timeout_ms) == CURLE_OK &&
              curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)r->timeout_ms) == CURLE_OK &&
              curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L) == CURLE_OK &&
              curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L) == CURLE_OK &&
              curl_easy_setopt(h, CURLOPT_HTTPHEADER, r->headers) == CURLE_OK &&
              curl_easy_setopt(h, CURLOPT_USERAGENT, "memgrid") == CURLE_OK &&
              curl_easy_setopt(h, CURLOPT_ACCEPT_ENCODING, "") == CURLE_OK &&
              curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L) == CURLE_OK &&
#if LIBCURL_VERSION_NUM >= 0x075500
              curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https") == CURLE_OK &&
#else
              curl_easy_setopt(h, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS)) ==
                  CURLE_OK &&
#endif
              curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_write) == CURLE_OK;
    if (!ok) {
        curl_easy_cleanup(h);
        return NULL;
    }
    return h;
}

static CURL *handle_take(mg_remote *r)
{
    CURL *h = NULL;
    pthread_mutex_lock(&r->lock);
    if (r->n_idle > 0)
        h = r->idle[--r->n_idle];
    pthread_mutex_unlock(&r->lock);
    return h != NULL ? h : handle_new(r);
}

static void handle_give(mg_remote *r, CURL *h)
{
    pthread_mutex_lock(&r->lock);
    if (r->n_idle < MG_REMOTE_POOL_MAX) {
        r->idle[r->n_idle++] = h;
        h = NULL;
    }
    pthread_mutex_unlock(&r->lock);
    if (h != NULL)
        curl_easy_cleanup(h);
}

/* The server's own words for a failure: error.message (OpenAI), error (Ollama),
 * message or detail when the body is JSON, else the body itself; control
 * characters become spaces, cut to SERVER_TEXT_MAX bytes. */
static void server_text(const char *body, size_t len, char *out, size_t cap)
{
    const char *text = body;
    size_t n = len;
    json_t *j = body != NULL ? json_loadb(body, len, 0, NULL) : NULL;
    if (j != NULL) {
        json_t *e = json_object_get(j, "error");
        if (json_is_object(e))
            e = json_object_get(e, "message");
        if (!json_is_string(e))
            e = json_object_get(j, "message");
        if (!json_is_string(e))
            e = json_object_get(j, "detail");
        if (json_is_string(e)) {
            text = json_string_value(e);
            n = json_string_length(e);
        }
    }
    size_t o = 0;
    for (size_t i = 0; i < n && o + 1 < cap && o < SERVER_TEXT_MAX; i++) {
        unsigned char c = (unsigned char)text[i];
        out[o++] = (c < 0x20 || c == 0x7f) ? ' ' : (char)c;
    }
    if (n > SERVER_TEXT_MAX && o + 4 < cap) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
    while (o > 0 && out[o - 1] == ' ')
        out[--o] = '\0';
    json_decref(j);
}

static bool curl_code_retryable(CURLcode c)
{
    switch (c) {
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
        return true;
    default:
        return false;
    }
}

/* JSON has no NaN or Infinity, but Python's json module and others print
 * them; say so rather than "invalid token". */
static bool parse_error_is_nonfinite(const json_error_t *je, const char *body, size_t len)
{
    if (strncmp(je->text, "real number overflow", 20) == 0)
        return true;
    const char *near = strstr(je->text, "near '");
    if (near == NULL)
        return false;
    near += 6;
    size_t n = strlen(near);
    if (n > 0 && near[n - 1] == '\'')
        n--;
    static const char *const words[] = {"nan", "-nan", "infinity", "-infinity", "inf", "-inf"};
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
        if (n == strlen(words[i]) && strncasecmp(near, words[i], n) == 0)
            return true;
    /* jansson stops at a lone '-' before Infinity */
    if (n == 1 && near[0] == '-' && je->position >= 0 && (size_t)je->position < len) {
        const char *p = body + je->position;
        size_t left = len - (size_t)je->position;
        return (left >= 3 && strncasecmp(p, "inf", 3) == 0) ||
               (left >= 3 && strncasecmp(p, "nan", 3) == 0);
    }
    return false;
}

/* Appends to the message in err, keeping its end when the message is full. */
__attribute__((format(printf, 2, 3))) static void msg_append(mg_error *err, const char *fmt, ...)
{
    if (err == NULL)
        return;
    char tail[64];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tail, sizeof tail, fmt, ap);
    va_end(ap);
    size_t n = strnlen(err->msg, sizeof err->msg - 1);
    size_t t = strlen(tail);
    if (n + t + 1 > sizeof err->msg)
        n = sizeof err->msg - 1 - t;
    memcpy(err->msg + n, tail, t + 1);
}

static void sleep_ms(uint64_t ms)
{
    struct timespec ts = {.tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

/* backoff * 2^attempt, scaled at random into [1/2, 1] of that (jitter keeps
 * many routers from retrying in step), at most BACKOFF_MAX_MS. */
static uint64_t backoff_delay_ms(const mg_remote *r, uint32_t attempt)
{
    uint64_t d = r->backoff_ms;
    for (uint32_t i = 0; i < attempt && d < BACKOFF_MAX_MS; i++)
        d *= 2;
    if (d > BACKOFF_MAX_MS)
        d = BACKOFF_MAX_MS;
    static _Thread_local unsigned seed;
    if (seed == 0)
        seed = (unsigned)mg_clock_mono_ns() | 1u;
    return d / 2 + (uint64_t)rand_r(&seed) % (d / 2 + 1);
}

int mg_remote_post_json(mg_remote *r, const char *url, const char *body, size_t len, json_t **reply,
                        long *http_status, mg_error *err)
{
    *reply = NULL;
    if (http_status != NULL)
        *http_status = 0;
    CURL *h = handle_take(r);
    if (h == NULL)
        return mg_error_set(err, MG_ENOMEM, "%s: cannot make a libcurl handle", r->what);

    struct reply_buf buf = {0};
    char curl_msg[CURL_ERROR_SIZE];
    int rc = MG_OK;
    uint32_t attempt = 0;
    for (;;) {
        buf.len = 0;
        buf.too_big = false;
        buf.nomem = false;
        curl_msg[0] = '\0';
        curl_easy_setopt(h, CURLOPT_URL, url);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, &buf);
        curl_easy_setopt(h, CURLOPT_ERRORBUFFER, curl_msg);

        uint64_t t0 = mg_clock_mono_ns();
        CURLcode cc = curl_easy_perform(h);
        long status = 0;
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
        if (http_status != NULL)
            *http_status = status;
        uint64_t took_us = (mg_clock_mono_ns() - t0) / 1000;
        mg_debug("remote.post", "what=\"%s\" attempt=%u curl=%d status=%ld bytes=%zu took_us=%llu",
                 r->what, attempt, (int)cc, status, buf.len, (unsigned long long)took_us);

        bool retryable = false;
        curl_off_t retry_after_s = 0;
        if (cc == CURLE_OK && status >= 200 && status < 300) {
            json_error_t je;
            *reply = json_loadb(buf.data != NULL ? buf.data : "", buf.len, 0, &je);
            if (*reply != NULL) {
                rc = MG_OK;
            } else if (parse_error_is_nonfinite(&je, buf.data, buf.len)) {
                rc = mg_error_set(err, MG_ENAN,
                                  "%s: the answer holds a NaN, Infinity or out-of-range number "
                                  "(%s, byte %d)",
                                  r->what, je.text, je.position);
            } else {
                char text[SERVER_TEXT_MAX + 4];
                server_text(buf.data, buf.len, text, sizeof text);
                rc = mg_error_set(err, MG_ECORRUPT,
                                  "%s: HTTP %ld answer is not JSON (%s at byte %d): %s", r->what,
                                  status, je.text, je.position, text);
            }
        } else if (cc == CURLE_OK) {
            char text[SERVER_TEXT_MAX + 4];
            server_text(buf.data, buf.len, text, sizeof text);
            if (status == 429 || status >= 500) {
                retryable = true;
                curl_easy_getinfo(h, CURLINFO_RETRY_AFTER, &retry_after_s);
                rc = mg_error_set(err, MG_EUNAVAIL, "%s: HTTP %ld from %s: %s", r->what, status,
                                  url, text);
            } else if (status == 401 || status == 403) {
                rc = mg_error_set(err, MG_EPERM, "%s: HTTP %ld from %s (check the API key): %s",
                                  r->what, status, url, text);
            } else {
                rc = mg_error_set(err, MG_EINVAL, "%s: HTTP %ld from %s: %s", r->what, status, url,
                                  text);
            }
        } else if (cc == CURLE_OPERATION_TIMEDOUT) {
            rc = mg_error_set(err, MG_ETIMEDOUT, "%s: no answer from %s within %u ms", r->what, url,
                              r->timeout_ms);
        } else if (cc == CURLE_WRITE_ERROR && buf.too_big) {
            rc = mg_error_set(err, MG_ETOOBIG, "%s: the answer from %s exceeds %u bytes", r->what,
                              url, MG_REMOTE_REPLY_MAX);
        } else if (cc == CURLE_WRITE_ERROR && buf.nomem) {
            rc = mg_error_set(err, MG_ENOMEM, "%s: out of memory for the answer from %s", r->what,
                              url);
        } else if (cc == CURLE_URL_MALFORMAT || cc == CURLE_UNSUPPORTED_PROTOCOL) {
            rc = mg_error_set(err, MG_EINVAL, "%s: bad URL %s: %s", r->what, url,
                              curl_msg[0] != '\0' ? curl_msg : curl_easy_strerror(cc));
        } else {
            retryable = curl_code_retryable(cc);
            rc = mg_error_set(err, MG_EUNAVAIL, "%s: %s: %s", r->what, url,
                              curl_msg[0] != '\0' ? curl_msg : curl_easy_strerror(cc));
        }

        if (rc == MG_OK || !retryable)
            break;
        if (retry_after_s > RETRY_AFTER_MAX_S) {
            msg_append(err, " (server asks to retry after %lld s)", (long long)retry_after_s);
            break;
        }
        if (attempt >= r->retries) {
            if (attempt > 0)
                msg_append(err, " (%u attempts)", attempt + 1);
            break;
        }
        uint64_t delay = backoff_delay_ms(r, attempt);
        if ((uint64_t)retry_after_s * 1000 > delay)
            delay = (uint64_t)retry_after_s * 1000;
        mg_warn("remote.retry", "what=\"%s\" attempt=%u curl=%d status=%ld delay_ms=%llu", r->what,
                attempt + 1, (int)cc, status, (unsigned long long)delay);
        sleep_ms(delay);
        attempt++;
    }
    free(buf.data);
    /* the error buffer lives on this stack */
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, NULL);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, NULL);
    handle_give(r, h);
    return rc;
}

int mg_remote_openai_url(const char *base, const char *suffix, char *out, size_t cap, mg_error *err)
{
    size_t n = strlen(base);
    while (n > 0 && base[n - 1] == '/')
        n--;
    size_t scheme;
    if (n >= 7 && strncasecmp(base, "http://", 7) == 0)
        scheme = 7;
    else if (n >= 8 && strncasecmp(base, "https://", 8) == 0)
        scheme = 8;
    else
        return mg_error_set(err, MG_EINVAL, "URL %.100s: must start with http:// or https://",
                            base);
    if (n == scheme)
        return mg_error_set(err, MG_EINVAL, "URL %.100s: no host", base);
    size_t slen = strlen(suffix);
    const char *mid = "";
    if (n >= slen && strncmp(base + n - slen, suffix, slen) == 0)
        suffix = "";
    else if (memchr(base + scheme, '/', n - scheme) == NULL)
        mid = "/v1";
    int w = snprintf(out, cap, "%.*s%s%s", (int)n, base, mid, suffix);
    if (w < 0 || (size_t)w >= cap)
        return mg_error_set(err, MG_EINVAL, "URL %.100s...: too long", base);
    return MG_OK;
}

int mg_remote_key_from_env(const char *what, const char *env_name, const char *setting, char **key,
                           mg_error *err)
{
    *key = NULL;
    size_t n = strlen(env_name);
    bool valid = n > 0 && n < 128 && !isdigit((unsigned char)env_name[0]);
    for (size_t i = 0; valid && i < n; i++)
        valid = isalnum((unsigned char)env_name[i]) || env_name[i] == '_';
    if (!valid)
        return mg_error_set(err, MG_EINVAL, "%s: %s=%.64s is not an environment variable name",
                            what, setting, env_name);
    const char *value = getenv(env_name);
    if (value == NULL || value[0] == '\0')
        return mg_error_set(err, MG_EINVAL,
                            "%s: the API key variable %s is not set (set it, name another "
                            "with %s, or %s=none for a server without keys)",
                            what, env_name, setting, setting);
    *key = strdup(value);
    if (*key == NULL)
        return mg_error_set(err, MG_ENOMEM, "%s: out of memory", what);
    return MG_OK;
}
