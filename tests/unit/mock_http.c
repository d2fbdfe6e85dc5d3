#include "mock_http.h"

#include <jansson.h>
#include <microhttpd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define FAULTS_MAX 64
#define BODY_MAX (8u << 20)

struct mock_server {
    struct MHD_Daemon *daemon;
    unsigned port;
    pthread_mutex_t lock;
    uint32_t dim;
    unsigned slow_ms;
    enum mock_fault faults[FAULTS_MAX];
    size_t fault_head, fault_count;
    char *chat_content;
    char *chat_finish;
    bool reject_response_format;
    struct mock_stats stats;
    char *last_body;
};

/* A request body being received. */
struct upload {
    char *data;
    size_t len;
    bool too_big;
};

float mock_value(const char *text, size_t len, uint32_t j)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (uint8_t)text[i]) * 16777619u;
    /* multiples of 1/4 in [-64, 64): exact in decimal and in float */
    return (float)((int)((h >> (j % 24)) & 0x1ff) - 256) / 4.0f;
}

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    (void)c;
    (void)socket_context;
    mock_server *m = cls;
    if (code != MHD_CONNECTION_NOTIFY_STARTED)
        return;
    pthread_mutex_lock(&m->lock);
    m->stats.connections++;
    pthread_mutex_unlock(&m->lock);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)c;
    (void)toe;
    struct upload *u = *con_cls;
    if (u != NULL) {
        free(u->data);
        free(u);
        *con_cls = NULL;
    }
}

static enum MHD_Result respond(struct MHD_Connection *c, unsigned status, const char *body,
                               const char *retry_after)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_MUST_COPY);
    if (r == NULL)
        return MHD_NO;
    MHD_add_response_header(r, "Content-Type", "application/json");
    if (retry_after != NULL)
        MHD_add_response_header(r, "Retry-After", retry_after);
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

/* A growing string. */
struct sbuf {
    char *s;
    size_t len, cap;
};

__attribute__((format(printf, 2, 3))) static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
    va_list ap;
    for (;;) {
        size_t room = b->cap - b->len;
        va_start(ap, fmt);
        int n = vsnprintf(b->s != NULL ? b->s + b->len : NULL, room, fmt, ap);
        va_end(ap);
        if (n < 0)
            abort();
        if ((size_t)n < room) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap != 0 ? b->cap * 2 : 4096;
        while (cap < b->len + (size_t)n + 1)
            cap *= 2;
        b->s = realloc(b->s, cap);
        if (b->s == NULL)
            abort();
        b->cap = cap;
    }
}

static void sb_vector(struct sbuf *b, const char *text, size_t len, uint32_t dim,
                      enum mock_fault fault, bool first)
{
    sb_printf(b, "[");
    uint32_t n = fault == MOCK_WRONG_DIM ? dim + 1 : dim;
    for (uint32_t j = 0; j < n; j++) {
        const char *sep = j != 0 ? "," : "";
        if (first && j == n / 2 && fault == MOCK_NAN)
            sb_printf(b, "%sNaN", sep);
        else if (first && j == n / 2 && fault == MOCK_HUGE)
            sb_printf(b, "%s1e39", sep);
        else
            sb_printf(b, "%s%.9g", sep, (double)mock_value(text, len, j));
    }
    sb_printf(b, "]");
}

static enum MHD_Result answer_embed(mock_server *m, struct MHD_Connection *c, bool openai,
                                    json_t *req, enum mock_fault fault, uint32_t dim)
{
    json_t *input = json_object_get(req, "input");
    json_t *one = NULL;
    if (json_is_string(input)) {
        one = json_array();
        json_array_append(one, input);
        input = one;
    }
    if (!json_is_array(input) || !json_is_string(json_object_get(req, "model")))
        return respond(c, 400, "{\"error\":{\"message\":\"model and input required\"}}", NULL);
    size_t n = json_array_size(input);
    pthread_mutex_lock(&m->lock);
    if (m->stats.embed_requests < MOCK_BATCHES_MAX)
        m->stats.batches[m->stats.embed_requests] = (unsigned)n;
    m->stats.embed_requests++;
    snprintf(m->stats.last_model, sizeof m->stats.last_model, "%s",
             json_string_value(json_object_get(req, "model")));
    pthread_mutex_unlock(&m->lock);

    size_t count = fault == MOCK_SHORT && n > 0 ? n - 1 : n;
    struct sbuf b = {0};
    sb_printf(&b, openai ? "{\"object\":\"list\",\"data\":[" : "{\"model\":\"m\",\"embeddings\":[");
    for (size_t k = 0; k < count; k++) {
        size_t i = fault == MOCK_SHUFFLE ? count - 1 - k : k;
        json_t *t = json_array_get(input, i);
        if (k != 0)
            sb_printf(&b, ",");
        if (openai)
            sb_printf(&b, "{\"object\":\"embedding\",\"index\":%zu,\"embedding\":", i);
        sb_vector(&b, json_string_value(t), json_string_length(t), dim, fault, i == 0);
        if (openai)
            sb_printf(&b, "}");
    }
    sb_printf(&b, openai ? "],\"model\":\"m\",\"usage\":{\"prompt_tokens\":1,\"total_tokens\":1}}"
                         : "]}");
    json_decref(one);
    enum MHD_Result ret = respond(c, 200, b.s, NULL);
    free(b.s);
    return ret;
}

static enum MHD_Result answer_chat(mock_server *m, struct MHD_Connection *c, json_t *req)
{
    pthread_mutex_lock(&m->lock);
    m->stats.chat_requests++;
    snprintf(m->stats.last_model, sizeof m->stats.last_model, "%s",
             json_string_value(json_object_get(req, "model")) != NULL
                 ? json_string_value(json_object_get(req, "model"))
                 : "");
    bool reject = m->reject_response_format;
    json_t *reply = json_pack("{s:s, s:[{s:i, s:{s:s, s:s?}, s:s?}]}", "object", "chat.completion",
                              "choices", "index", 0, "message", "role", "assistant", "content",
                              m->chat_content, "finish_reason", m->chat_finish);
    pthread_mutex_unlock(&m->lock);
    if (reject && json_object_get(req, "response_format") != NULL) {
        json_decref(reply);
        return respond(c, 400,
                       "{\"error\":{\"message\":\"response_format is not supported by this "
                       "model\"}}",
                       NULL);
    }
    char *text = json_dumps(reply, JSON_COMPACT);
    json_decref(reply);
    enum MHD_Result ret = respond(c, 200, text, NULL);
    free(text);
    return ret;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    (void)version;
    mock_server *m = cls;
    struct upload *u = *con_cls;
    if (u == NULL) {
        u = calloc(1, sizeof *u);
        if (u == NULL)
            return MHD_NO;
        *con_cls = u;
        return MHD_YES;
    }
    if (*upload_data_size != 0) {
        if (u->len + *upload_data_size > BODY_MAX) {
            u->too_big = true;
        } else {
            char *d = realloc(u->data, u->len + *upload_data_size + 1);
            if (d == NULL)
                return MHD_NO;
            memcpy(d + u->len, upload_data, *upload_data_size);
            u->data = d;
            u->len += *upload_data_size;
            u->data[u->len] = '\0';
        }
        *upload_data_size = 0;
        return MHD_YES;
    }

    /* the whole request is here */
    const char *auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    pthread_mutex_lock(&m->lock);
    m->stats.requests++;
    snprintf(m->stats.last_path, sizeof m->stats.last_path, "%s", url);
    snprintf(m->stats.last_auth, sizeof m->stats.last_auth, "%s", auth != NULL ? auth : "");
    free(m->last_body);
    m->last_body = strdup(u->data != NULL ? u->data : "");
    enum mock_fault fault = MOCK_OK;
    if (m->fault_count > 0) {
        fault = m->faults[m->fault_head];
        m->fault_head = (m->fault_head + 1) % FAULTS_MAX;
        m->fault_count--;
    }
    uint32_t dim = m->dim;
    unsigned slow_ms = m->slow_ms;
    pthread_mutex_unlock(&m->lock);

    switch (fault) {
    case MOCK_500:
        return respond(c, 500, "{\"error\":{\"message\":\"the model crashed\"}}", NULL);
    case MOCK_429:
        return respond(c, 429, "{\"error\":{\"message\":\"rate limit reached\"}}", "0");
    case MOCK_401:
        return respond(c, 401, "{\"error\":{\"message\":\"Incorrect API key provided\"}}", NULL);
    case MOCK_400:
        return respond(c, 400, "{\"error\":\"input is too long\"}", NULL);
    case MOCK_GARBAGE:
        return respond(c, 200, "<html>not json {", NULL);
    case MOCK_DROP:
        return MHD_NO;
    case MOCK_SLOW: {
        struct timespec ts = {(time_t)(slow_ms / 1000), (long)(slow_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
        break;
    }
    default:
        break;
    }
    if (strcmp(method, "POST") != 0)
        return respond(c, 405, "{\"error\":\"POST only\"}", NULL);
    if (u->too_big)
        return respond(c, 413, "{\"error\":\"body too large\"}", NULL);
    json_t *req = json_loadb(u->data != NULL ? u->data : "", u->len, 0, NULL);
    if (req == NULL)
        return respond(c, 400, "{\"error\":\"body is not JSON\"}", NULL);
    enum MHD_Result ret;
    if (ends_with(url, "/api/embed"))
        ret = answer_embed(m, c, false, req, fault, dim);
    else if (ends_with(url, "/embeddings"))
        ret = answer_embed(m, c, true, req, fault, dim);
    else if (ends_with(url, "/chat/completions"))
        ret = answer_chat(m, c, req);
    else
        ret = respond(c, 404, "{\"error\":\"no such endpoint\"}", NULL);
    json_decref(req);
    return ret;
}

mock_server *mock_start(uint32_t dim)
{
    mock_server *m = calloc(1, sizeof *m);
    if (m == NULL)
        abort();
    pthread_mutex_init(&m->lock, NULL);
    m->dim = dim;
    m->slow_ms = 1000;
    m->chat_content = strdup("{\"memories\": []}");
    m->chat_finish = strdup("stop");
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = 0;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    m->daemon = MHD_start_daemon(
        MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, 0,
        NULL, NULL, on_request, m, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, m, MHD_OPTION_NOTIFY_COMPLETED, on_completed,
        m, MHD_OPTION_CONNECTION_TIMEOUT, 30u, MHD_OPTION_END);
    if (m->daemon == NULL) {
        fprintf(stderr, "mock_http: MHD_start_daemon failed\n");
        abort();
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(m->daemon, MHD_DAEMON_INFO_BIND_PORT);
    if (info == NULL || info->port == 0) {
        fprintf(stderr, "mock_http: no port\n");
        abort();
    }
    m->port = info->port;
    return m;
}

void mock_stop(mock_server *m)
{
    if (m == NULL)
        return;
    MHD_stop_daemon(m->daemon);
    pthread_mutex_destroy(&m->lock);
    free(m->chat_content);
    free(m->chat_finish);
    free(m->last_body);
    free(m);
}

unsigned mock_port(const mock_server *m)
{
    return m->port;
}

char *mock_url(const mock_server *m, const char *suffix, char *buf, size_t cap)
{
    snprintf(buf, cap, "http://127.0.0.1:%u%s", m->port, suffix);
    return buf;
}

void mock_set_dim(mock_server *m, uint32_t dim)
{
    pthread_mutex_lock(&m->lock);
    m->dim = dim;
    pthread_mutex_unlock(&m->lock);
}

void mock_set_slow_ms(mock_server *m, unsigned ms)
{
    pthread_mutex_lock(&m->lock);
    m->slow_ms = ms;
    pthread_mutex_unlock(&m->lock);
}

void mock_push_fault(mock_server *m, enum mock_fault f)
{
    pthread_mutex_lock(&m->lock);
    if (m->fault_count == FAULTS_MAX)
        abort();
    m->faults[(m->fault_head + m->fault_count) % FAULTS_MAX] = f;
    m->fault_count++;
    pthread_mutex_unlock(&m->lock);
}

void mock_set_chat_reply(mock_server *m, const char *content, const char *finish_reason)
{
    pthread_mutex_lock(&m->lock);
    free(m->chat_content);
    free(m->chat_finish);
    m->chat_content = content != NULL ? strdup(content) : NULL;
    m->chat_finish = finish_reason != NULL ? strdup(finish_reason) : NULL;
    pthread_mutex_unlock(&m->lock);
}

void mock_set_reject_response_format(mock_server *m, bool reject)
{
    pthread_mutex_lock(&m->lock);
    m->reject_response_format = reject;
    pthread_mutex_unlock(&m->lock);
}

void mock_get_stats(mock_server *m, struct mock_stats *out)
{
    pthread_mutex_lock(&m->lock);
    *out = m->stats;
    pthread_mutex_unlock(&m->lock);
}

void mock_reset_stats(mock_server *m)
{
    pthread_mutex_lock(&m->lock);
    memset(&m->stats, 0, sizeof m->stats);
    pthread_mutex_unlock(&m->lock);
}

char *mock_last_body(mock_server *m)
{
    pthread_mutex_lock(&m->lock);
    char *b = strdup(m->last_body != NULL ? m->last_body : "");
    pthread_mutex_unlock(&m->lock);
    return b;
}
