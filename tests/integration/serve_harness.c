#include "serve_harness.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef MG_MEMGRID_BIN
#error "MG_MEMGRID_BIN must name the memgrid binary"
#endif

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Reads the child's ready line from fd within timeout_ms. */
static int read_ready_line(int fd, char *line, size_t cap, unsigned timeout_ms)
{
    size_t n = 0;
    double end = now_ms() + timeout_ms;
    while (n + 1 < cap) {
        double left = end - now_ms();
        if (left <= 0)
            return -1;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int pr = poll(&p, 1, (int)left);
        if (pr <= 0)
            continue;
        ssize_t got = read(fd, line + n, 1);
        if (got <= 0)
            return -1;
        if (line[n] == '\n') {
            line[n] = '\0';
            return 0;
        }
        n++;
    }
    return -1;
}

const char *harness_memgrid_bin(void)
{
    return MG_MEMGRID_BIN;
}

int harness_spawn(const char *const *argv, char *line, size_t cap, unsigned timeout_ms,
                  pid_t *pid_out)
{
    *pid_out = 0;
    int pipefd[2];
    if (pipe(pipefd) != 0) {
        perror("pipe");
        return -1;
    }
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        close(pipefd[0]);
        close(pipefd[1]);
        return -1;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        dup2(pipefd[1], STDOUT_FILENO);
        close(pipefd[0]);
        close(pipefd[1]);
        setenv("MEMGRID_LOG", getenv("MEMGRID_LOG") ? getenv("MEMGRID_LOG") : "warn", 1);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(pipefd[1]);
    *pid_out = pid;
    int rc = read_ready_line(pipefd[0], line, cap, timeout_ms);
    close(pipefd[0]);
    return rc;
}

int serve_start(serve *s, const char *dir, const char *const *extra_args)
{
    if (dir == NULL) {
        memset(s, 0, sizeof *s);
        snprintf(s->dir, sizeof s->dir, "/tmp/memgrid-it-XXXXXX");
        if (mkdtemp(s->dir) == NULL) {
            perror("mkdtemp");
            return -1;
        }
        s->own_dir = true;
    } else if (dir != s->dir) {
        snprintf(s->dir, sizeof s->dir, "%s", dir);
    }
    s->pid = 0;
    const char *argv[32];
    int argc = 0;
    argv[argc++] = MG_MEMGRID_BIN;
    argv[argc++] = "serve";
    argv[argc++] = "--data";
    argv[argc++] = s->dir;
    argv[argc++] = "--listen";
    argv[argc++] = "127.0.0.1:0";
    for (int i = 0; extra_args && extra_args[i] && argc < 31; i++)
        argv[argc++] = extra_args[i];
    argv[argc] = NULL;
    double t0 = now_ms();
    char line[256];
    if (harness_spawn(argv, line, sizeof line, 15000, &s->pid) != 0) {
        fprintf(stderr, "serve_start: no ready line from memgrid serve\n");
        serve_stop(s, SIGKILL, 1000);
        return -1;
    }
    const char *p = strstr(line, "http://127.0.0.1:");
    if (p == NULL || sscanf(p, "http://127.0.0.1:%u", &s->port) != 1) {
        fprintf(stderr, "serve_start: unexpected ready line: %s\n", line);
        serve_stop(s, SIGKILL, 1000);
        return -1;
    }
    snprintf(s->base, sizeof s->base, "http://127.0.0.1:%u", s->port);
    for (int i = 0; i < 200; i++) {
        http_res r;
        if (http_get(s, "/health", &r) == 0 && r.status == 200) {
            http_res_clear(&r);
            s->ready_ms = now_ms() - t0;
            return 0;
        }
        http_res_clear(&r);
        usleep(10000);
    }
    fprintf(stderr, "serve_start: /health never answered 200\n");
    serve_stop(s, SIGKILL, 1000);
    return -1;
}

int serve_stop(serve *s, int sig, unsigned timeout_ms)
{
    if (s->pid <= 0)
        return -1;
    kill(s->pid, sig);
    int status = 0;
    double end = now_ms() + timeout_ms;
    for (;;) {
        pid_t w = waitpid(s->pid, &status, WNOHANG);
        if (w == s->pid)
            break;
        if (w < 0 && errno != EINTR) {
            s->pid = 0;
            return -1;
        }
        if (now_ms() > end) {
            fprintf(stderr, "serve_stop: no exit after %u ms: SIGKILL\n", timeout_ms);
            kill(s->pid, SIGKILL);
            waitpid(s->pid, &status, 0);
            s->pid = 0;
            return 128 + SIGKILL;
        }
        usleep(5000);
    }
    s->pid = 0;
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    return 128 + WTERMSIG(status);
}

static void remove_tree(const char *dir)
{
    /* The directory is one we made under /tmp; nftw would do, but rm keeps
     * this short and handles every file type. */
    if (strncmp(dir, "/tmp/memgrid-it-", 16) != 0)
        return;
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "serve_cleanup: could not remove %s\n", dir);
}

void serve_cleanup(serve *s)
{
    if (s->pid > 0)
        serve_stop(s, SIGKILL, 2000);
    if (s->own_dir && s->dir[0]) {
        remove_tree(s->dir);
        s->dir[0] = '\0';
    }
}

/* ---- HTTP ----------------------------------------------------------------- */

void http_res_clear(http_res *r)
{
    free(r->body);
    json_decref(r->json);
    memset(r, 0, sizeof *r);
}

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *ud)
{
    http_res *r = ud;
    size_t n = size * nmemb;
    char *grown = realloc(r->body, r->len + n + 1);
    if (grown == NULL)
        return 0;
    r->body = grown;
    memcpy(r->body + r->len, ptr, n);
    r->len += n;
    r->body[r->len] = '\0';
    return n;
}

static size_t on_header(char *buf, size_t size, size_t nitems, void *ud)
{
    http_res *r = ud;
    size_t n = size * nitems;
    if (n > 6 && strncasecmp(buf, "Allow:", 6) == 0) {
        size_t i = 6;
        while (i < n && buf[i] == ' ')
            i++;
        size_t len = n - i;
        while (len > 0 && (buf[i + len - 1] == '\r' || buf[i + len - 1] == '\n'))
            len--;
        snprintf(r->allow, sizeof r->allow, "%.*s", (int)len, buf + i);
    }
    return n;
}

int http_do(CURL *c, const serve *s, const char *method, const char *path, const char *body,
            size_t body_len, http_res *out)
{
    memset(out, 0, sizeof *out);
    char url[512];
    snprintf(url, sizeof url, "%s%s", s->base, path);
    curl_easy_reset(c); /* options only: the connection stays open */
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 30000L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, out);
    struct curl_slist *hdrs = NULL;
    if (body != NULL) {
        hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
        hdrs = curl_slist_append(hdrs, "Expect:");
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    CURLcode cc = curl_easy_perform(c);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(hdrs);
    if (cc != CURLE_OK)
        return -1;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &out->status);
    if (out->body != NULL) {
        json_error_t e;
        out->json = json_loadb(out->body, out->len, 0, &e);
    }
    return 0;
}

int http_post(const serve *s, const char *path, const char *json_body, http_res *out)
{
    CURL *c = curl_easy_init();
    int rc = http_do(c, s, "POST", path, json_body, strlen(json_body), out);
    curl_easy_cleanup(c);
    return rc;
}

int http_get(const serve *s, const char *path, http_res *out)
{
    CURL *c = curl_easy_init();
    int rc = http_do(c, s, "GET", path, NULL, 0, out);
    curl_easy_cleanup(c);
    return rc;
}

int http_post_json(const serve *s, const char *path, const json_t *body, http_res *out)
{
    char *text = json_dumps(body, JSON_COMPACT);
    int rc = http_post(s, path, text, out);
    free(text);
    return rc;
}

bool is_envelope(const http_res *r)
{
    const json_t *j = r->json;
    return json_is_object(j) && json_is_integer(json_object_get(j, "code")) &&
           json_integer_value(json_object_get(j, "code")) == r->status &&
           json_is_string(json_object_get(j, "message")) && json_object_get(j, "data") != NULL;
}

/* ---- shapes ----------------------------------------------------------------- */

static bool has(const json_t *obj, const char *key, int type, const char *where)
{
    const json_t *v = json_object_get(obj, key);
    if (v == NULL) {
        fprintf(stderr, "shape: %s has no \"%s\"\n", where, key);
        return false;
    }
    if (type >= 0 && json_typeof(v) != (json_type)type &&
        !(type == JSON_REAL && json_is_integer(v))) {
        fprintf(stderr, "shape: %s.%s has JSON type %d, not %d\n", where, key, json_typeof(v),
                type);
        return false;
    }
    return true;
}

static bool str_or_null(const json_t *obj, const char *key, const char *where)
{
    const json_t *v = json_object_get(obj, key);
    if (v == NULL || !(json_is_string(v) || json_is_null(v))) {
        fprintf(stderr, "shape: %s.%s is missing or not a string/null\n", where, key);
        return false;
    }
    return true;
}

bool check_item_shape(const json_t *item, bool from_search)
{
    bool ok = json_is_object(item);
    ok = ok && has(item, "id", JSON_STRING, "item") && has(item, "memory", JSON_STRING, "item") &&
         has(item, "metadata", JSON_OBJECT, "item");
    if (!ok)
        return false;
    const char *id = json_string_value(json_object_get(item, "id"));
    if (strlen(id) != 36 || id[8] != '-') {
        fprintf(stderr, "shape: id \"%s\" is not a UUID\n", id);
        return false;
    }
    const json_t *m = json_object_get(item, "metadata");
    static const char *const strs[] = {"user_id", "session_id", "status", "type", "memory_type",
                                       "key", "background", "created_at", "updated_at"};
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++)
        ok = ok && has(m, strs[i], JSON_STRING, "metadata");
    ok = ok && has(m, "tags", JSON_ARRAY, "metadata") && has(m, "sources", JSON_ARRAY, "metadata") &&
         has(m, "usage", JSON_ARRAY, "metadata") && has(m, "embedding", JSON_ARRAY, "metadata") &&
         has(m, "info", JSON_OBJECT, "metadata") && has(m, "confidence", JSON_REAL, "metadata") &&
         str_or_null(m, "source", "metadata") && str_or_null(m, "visibility", "metadata");
    if (!ok)
        return false;
    if (json_array_size(json_object_get(m, "embedding")) != 0) {
        fprintf(stderr, "shape: metadata.embedding is not emptied\n");
        return false;
    }
    if (from_search) {
        ok = has(item, "ref_id", JSON_STRING, "item") && has(m, "ref_id", JSON_STRING, "metadata") &&
             has(m, "relativity", JSON_REAL, "metadata") && has(m, "id", JSON_STRING, "metadata") &&
             has(m, "memory", JSON_STRING, "metadata");
        if (!ok)
            return false;
        char want[16];
        snprintf(want, sizeof want, "[%.8s]", id);
        if (strcmp(json_string_value(json_object_get(item, "ref_id")), want) != 0) {
            fprintf(stderr, "shape: ref_id %s, expected %s\n",
                    json_string_value(json_object_get(item, "ref_id")), want);
            return false;
        }
        if (json_array_size(json_object_get(m, "usage")) != 0) {
            fprintf(stderr, "shape: metadata.usage is not emptied\n");
            return false;
        }
    }
    return true;
}
