#include "http.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/uio.h>
#include <unistd.h>

#define RECV_CHUNK (16u << 10)
#define MAX_HEADER (64u << 10)

struct mg_http_conn {
    const mg_http_target *t;
    unsigned timeout_ms;
    int fd;
    uint64_t opens;
    uint64_t answers_on_fd; /* answers read on the current socket */
    char *head;             /* request line and headers */
    size_t head_cap;
    char *buf; /* received bytes of the current answer */
    size_t cap, len;
    char *dechunked; /* body of a chunked answer */
    size_t dcap;
};

/* ---- URL ---- */

int mg_http_target_parse(const char *url, mg_http_target *t, mg_error *err)
{
    memset(t, 0, sizeof *t);
    size_t url_len = strlen(url);
    if (url_len >= sizeof t->url)
        return mg_error_set(err, MG_EINVAL, "URL too long: %.64s...", url);
    memcpy(t->url, url, url_len + 1);
    if (strncasecmp(url, "http://", 7) != 0)
        return mg_error_set(err, MG_EINVAL,
                            "%s: only http:// URLs are supported (e.g. http://127.0.0.1:8000)",
                            url);
    const char *p = url + 7;
    const char *slash = strchr(p, '/');
    size_t hostport_len = slash ? (size_t)(slash - p) : strlen(p);
    if (hostport_len == 0 || hostport_len >= sizeof t->host)
        return mg_error_set(err, MG_EINVAL, "%s: no host", url);
    char hostport[sizeof t->host];
    memcpy(hostport, p, hostport_len);
    hostport[hostport_len] = '\0';
    snprintf(t->host, sizeof t->host, "%s", hostport);

    char host[sizeof t->host];
    const char *port = "80";
    if (hostport[0] == '[') { /* [v6]:port */
        char *close = strchr(hostport, ']');
        if (close == NULL)
            return mg_error_set(err, MG_EINVAL, "%s: unbalanced '['", url);
        *close = '\0';
        snprintf(host, sizeof host, "%s", hostport + 1);
        if (close[1] == ':')
            port = close + 2;
        else if (close[1] != '\0')
            return mg_error_set(err, MG_EINVAL, "%s: junk after ']'", url);
    } else {
        char *colon = strrchr(hostport, ':');
        if (colon != NULL) {
            *colon = '\0';
            port = colon + 1;
        }
        snprintf(host, sizeof host, "%s", hostport);
    }
    char *end;
    unsigned long portnum = strtoul(port, &end, 10);
    if (*port == '\0' || *end != '\0' || portnum == 0 || portnum > 65535)
        return mg_error_set(err, MG_EINVAL, "%s: bad port \"%s\"", url, port);
    if (host[0] == '\0')
        return mg_error_set(err, MG_EINVAL, "%s: no host", url);

    if (slash != NULL) {
        size_t plen = strlen(slash);
        while (plen > 0 && slash[plen - 1] == '/')
            plen--;
        if (plen >= sizeof t->prefix)
            return mg_error_set(err, MG_EINVAL, "%s: path prefix too long", url);
        memcpy(t->prefix, slash, plen);
        t->prefix[plen] = '\0';
    }

    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int gai = getaddrinfo(host, port, &hints, &res);
    if (gai != 0 || res == NULL)
        return mg_error_set(err, MG_EUNAVAIL, "%s: cannot resolve %s: %s", url, host,
                            gai_strerror(gai));
    memcpy(&t->addr, res->ai_addr, res->ai_addrlen);
    t->addrlen = res->ai_addrlen;
    freeaddrinfo(res);
    return MG_OK;
}

/* ---- connection ---- */

mg_http_conn *mg_http_conn_new(const mg_http_target *t, unsigned timeout_ms)
{
    mg_http_conn *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->t = t;
    c->timeout_ms = timeout_ms ? timeout_ms : 10000;
    c->fd = -1;
    c->cap = 4 * RECV_CHUNK;
    c->buf = malloc(c->cap);
    c->head_cap = 1024;
    c->head = malloc(c->head_cap);
    if (c->buf == NULL || c->head == NULL) {
        mg_http_conn_free(c);
        return NULL;
    }
    return c;
}

static void conn_close(mg_http_conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->answers_on_fd = 0;
}

void mg_http_conn_free(mg_http_conn *c)
{
    if (c == NULL)
        return;
    conn_close(c);
    free(c->head);
    free(c->buf);
    free(c->dechunked);
    free(c);
}

uint64_t mg_http_conn_opens(const mg_http_conn *c)
{
    return c->opens;
}

static int conn_open(mg_http_conn *c, mg_error *err)
{
    const mg_http_target *t = c->t;
    int fd = socket(t->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return mg_error_set(err, MG_EIO, "%s: socket: %s", t->url, strerror(errno));
    if (connect(fd, (const struct sockaddr *)&t->addr, t->addrlen) != 0) {
        if (errno != EINPROGRESS) {
            int e = errno;
            close(fd);
            return mg_error_set(err, MG_EUNAVAIL, "%s: connect: %s", t->url, strerror(e));
        }
        struct pollfd pfd = {fd, POLLOUT, 0};
        int n;
        do
            n = poll(&pfd, 1, (int)c->timeout_ms);
        while (n < 0 && errno == EINTR);
        int soerr = 0;
        socklen_t slen = sizeof soerr;
        if (n == 0) {
            close(fd);
            return mg_error_set(err, MG_ETIMEDOUT, "%s: connect timed out", t->url);
        }
        if (n < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &slen) != 0 || soerr != 0) {
            int e = soerr ? soerr : errno;
            close(fd);
            return mg_error_set(err, MG_EUNAVAIL, "%s: connect: %s", t->url, strerror(e));
        }
    }
    /* Blocking from here on, with kernel timeouts on each wait: no poll
     * call per request. */
    int flags = fcntl(fd, F_GETFL);
    int one = 1;
    struct timeval tv = {(time_t)(c->timeout_ms / 1000),
                         (suseconds_t)(c->timeout_ms % 1000) * 1000};
    if (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) != 0) {
        int e = errno;
        close(fd);
        return mg_error_set(err, MG_EIO, "%s: socket options: %s", t->url, strerror(e));
    }
    c->fd = fd;
    c->opens++;
    c->answers_on_fd = 0;
    return MG_OK;
}

/* ---- sending ---- */

static int build_head(mg_http_conn *c, const char *method, const char *path, size_t len,
                      bool has_body, size_t *head_len, mg_error *err)
{
    for (;;) {
        int n;
        if (has_body)
            n = snprintf(c->head, c->head_cap,
                         "%s %s%s HTTP/1.1\r\nHost: %s\r\nUser-Agent: memgrid-bench\r\n"
                         "Accept: application/json\r\nContent-Type: application/json\r\n"
                         "Content-Length: %zu\r\n\r\n",
                         method, c->t->prefix, path, c->t->host, len);
        else
            n = snprintf(c->head, c->head_cap,
                         "%s %s%s HTTP/1.1\r\nHost: %s\r\nUser-Agent: memgrid-bench\r\n"
                         "Accept: application/json\r\n\r\n",
                         method, c->t->prefix, path, c->t->host);
        if (n < 0)
            return mg_error_set(err, MG_EINVAL, "cannot format the request");
        if ((size_t)n < c->head_cap) {
            *head_len = (size_t)n;
            return MG_OK;
        }
        char *grown = realloc(c->head, (size_t)n + 1);
        if (grown == NULL)
            return mg_error_set(err, MG_ENOMEM, "out of memory");
        c->head = grown;
        c->head_cap = (size_t)n + 1;
    }
}

static int send_all(mg_http_conn *c, const char *head, size_t head_len, const char *body,
                    size_t len, mg_error *err)
{
    struct iovec iov[2] = {{(void *)head, head_len}, {(void *)body, len}};
    struct msghdr msg = {0};
    msg.msg_iov = iov;
    msg.msg_iovlen = len ? 2 : 1;
    while (msg.msg_iovlen > 0) {
        ssize_t n = sendmsg(c->fd, &msg, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return mg_error_set(err, MG_ETIMEDOUT, "%s: send timed out", c->t->url);
            return mg_error_set(err, MG_EIO, "%s: send: %s", c->t->url, strerror(errno));
        }
        size_t done = (size_t)n;
        while (msg.msg_iovlen > 0 && done >= msg.msg_iov[0].iov_len) {
            done -= msg.msg_iov[0].iov_len;
            msg.msg_iov++;
            msg.msg_iovlen--;
        }
        if (msg.msg_iovlen > 0) {
            msg.msg_iov[0].iov_base = (char *)msg.msg_iov[0].iov_base + done;
            msg.msg_iov[0].iov_len -= done;
        }
    }
    return MG_OK;
}

/* ---- receiving ---- */

/* Reads more bytes into buf. Returns MG_OK with *eof set at the end of the
 * connection. Keeps one byte spare for the NUL that ends a body. */
static int recv_more(mg_http_conn *c, bool *eof, mg_error *err)
{
    *eof = false;
    if (c->cap - c->len < RECV_CHUNK + 1) {
        size_t ncap = c->cap * 2;
        if (ncap > MG_HTTP_MAX_BODY + MAX_HEADER + 2 * RECV_CHUNK)
            return mg_error_set(err, MG_ETOOBIG, "%s: answer larger than %u bytes", c->t->url,
                                MG_HTTP_MAX_BODY);
        char *grown = realloc(c->buf, ncap);
        if (grown == NULL)
            return mg_error_set(err, MG_ENOMEM, "out of memory");
        c->buf = grown;
        c->cap = ncap;
    }
    for (;;) {
        ssize_t n = recv(c->fd, c->buf + c->len, c->cap - c->len - 1, 0);
        if (n > 0) {
            c->len += (size_t)n;
            return MG_OK;
        }
        if (n == 0) {
            *eof = true;
            return MG_OK;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return mg_error_set(err, MG_ETIMEDOUT, "%s: no answer within %u ms", c->t->url,
                                c->timeout_ms);
        return mg_error_set(err, MG_EIO, "%s: receive: %s", c->t->url, strerror(errno));
    }
}

/* Reads until at least `need` bytes are buffered. */
static int recv_until(mg_http_conn *c, size_t need, mg_error *err)
{
    while (c->len < need) {
        bool eof;
        int rc = recv_more(c, &eof, err);
        if (rc != MG_OK)
            return rc;
        if (eof)
            return mg_error_set(err, MG_EIO, "%s: connection closed mid-answer", c->t->url);
    }
    return MG_OK;
}

struct head_info {
    int status;
    int minor; /* HTTP/1.minor */
    size_t header_len;
    bool has_length;
    uint64_t length;
    bool chunked;
    bool close;
    bool keep_alive;
};

static bool header_is(const char *line, size_t len, const char *name, const char **value,
                      size_t *vlen)
{
    size_t n = strlen(name);
    if (len <= n || line[n] != ':' || strncasecmp(line, name, n) != 0)
        return false;
    const char *v = line + n + 1;
    const char *end = line + len;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    *value = v;
    *vlen = (size_t)(end - v);
    return true;
}

static bool token_in(const char *v, size_t vlen, const char *token)
{
    size_t n = strlen(token);
    for (size_t i = 0; i + n <= vlen; i++)
        if (strncasecmp(v + i, token, n) == 0)
            return true;
    return false;
}

static int parse_head(mg_http_conn *c, size_t header_len, struct head_info *h, mg_error *err)
{
    memset(h, 0, sizeof *h);
    h->header_len = header_len;
    const char *p = c->buf, *end = c->buf + header_len;
    int major = 0, minor = 0, status = 0, used = 0;
    if (sscanf(p, "HTTP/%d.%d %3d%n", &major, &minor, &status, &used) != 3 || major != 1 ||
        status < 100 || status > 999)
        return mg_error_set(err, MG_ECORRUPT, "%s: not an HTTP/1.x answer", c->t->url);
    h->status = status;
    h->minor = minor;
    const char *line = memchr(p, '\n', (size_t)(end - p));
    while (line != NULL && line + 1 < end) {
        line++;
        const char *eol = memchr(line, '\n', (size_t)(end - line));
        if (eol == NULL)
            break;
        size_t len = (size_t)(eol - line);
        if (len > 0 && line[len - 1] == '\r')
            len--;
        const char *v;
        size_t vlen;
        if (header_is(line, len, "Content-Length", &v, &vlen)) {
            char num[24];
            if (vlen == 0 || vlen >= sizeof num)
                return mg_error_set(err, MG_ECORRUPT, "%s: bad Content-Length", c->t->url);
            memcpy(num, v, vlen);
            num[vlen] = '\0';
            char *nend;
            unsigned long long cl = strtoull(num, &nend, 10);
            if (*nend != '\0' || num[0] == '-')
                return mg_error_set(err, MG_ECORRUPT, "%s: bad Content-Length", c->t->url);
            h->has_length = true;
            h->length = cl;
        } else if (header_is(line, len, "Transfer-Encoding", &v, &vlen)) {
            h->chunked = token_in(v, vlen, "chunked");
        } else if (header_is(line, len, "Connection", &v, &vlen)) {
            h->close = token_in(v, vlen, "close");
            h->keep_alive = token_in(v, vlen, "keep-alive");
        }
        line = eol;
    }
    if (h->has_length && h->length > MG_HTTP_MAX_BODY)
        return mg_error_set(err, MG_ETOOBIG, "%s: answer of %llu bytes", c->t->url,
                            (unsigned long long)h->length);
    return MG_OK;
}

/* Decodes a chunked body that starts at c->buf[start] into c->dechunked. */
static int read_chunked(mg_http_conn *c, size_t start, size_t *body_len, mg_error *err)
{
    size_t pos = start, out = 0;
    for (;;) {
        /* chunk-size [; ext] CRLF */
        char *eol;
        while ((eol = memchr(c->buf + pos, '\n', c->len - pos)) == NULL) {
            if (c->len - pos > 1024)
                return mg_error_set(err, MG_ECORRUPT, "%s: bad chunk header", c->t->url);
            int rc = recv_until(c, c->len + 1, err);
            if (rc != MG_OK)
                return rc;
        }
        char *nend;
        unsigned long long size = strtoull(c->buf + pos, &nend, 16);
        if (nend == c->buf + pos || (*nend != '\r' && *nend != ';' && *nend != '\n'))
            return mg_error_set(err, MG_ECORRUPT, "%s: bad chunk size", c->t->url);
        if (size > MG_HTTP_MAX_BODY || out + size > MG_HTTP_MAX_BODY)
            return mg_error_set(err, MG_ETOOBIG, "%s: chunked answer too large", c->t->url);
        pos = (size_t)(eol - c->buf) + 1;
        if (size == 0) {
            /* Trailers, then an empty line. */
            for (;;) {
                while ((eol = memchr(c->buf + pos, '\n', c->len - pos)) == NULL) {
                    int rc = recv_until(c, c->len + 1, err);
                    if (rc != MG_OK)
                        return rc;
                }
                size_t llen = (size_t)(eol - (c->buf + pos));
                pos += llen + 1;
                if (llen == 0 || (llen == 1 && c->buf[pos - 2] == '\r'))
                    break;
            }
            break;
        }
        int rc = recv_until(c, pos + (size_t)size + 2, err);
        if (rc != MG_OK)
            return rc;
        if (c->dcap < out + (size_t)size + 1) {
            size_t ncap = c->dcap ? c->dcap : 4096;
            while (ncap < out + (size_t)size + 1)
                ncap *= 2;
            char *grown = realloc(c->dechunked, ncap);
            if (grown == NULL)
                return mg_error_set(err, MG_ENOMEM, "out of memory");
            c->dechunked = grown;
            c->dcap = ncap;
        }
        memcpy(c->dechunked + out, c->buf + pos, (size_t)size);
        out += (size_t)size;
        pos += (size_t)size;
        if (c->buf[pos] == '\r')
            pos++;
        if (c->buf[pos] != '\n')
            return mg_error_set(err, MG_ECORRUPT, "%s: chunk not followed by CRLF", c->t->url);
        pos++;
    }
    if (c->dechunked == NULL) {
        c->dechunked = malloc(1);
        if (c->dechunked == NULL)
            return mg_error_set(err, MG_ENOMEM, "out of memory");
        c->dcap = 1;
    }
    c->dechunked[out] = '\0';
    *body_len = out;
    return MG_OK;
}

/* Reads one answer. *got_bytes tells whether the server sent anything (a
 * request that got nothing back on a reused connection may be resent). */
static int read_answer(mg_http_conn *c, mg_http_response *resp, bool *keep, bool *got_bytes,
                       mg_error *err)
{
    c->len = 0;
    *got_bytes = false;
    struct head_info h;
    for (;;) {
        char *hend = NULL;
        size_t scanned = 0;
        while ((hend = memmem(c->buf + scanned, c->len - scanned, "\r\n\r\n", 4)) == NULL) {
            if (c->len > MAX_HEADER)
                return mg_error_set(err, MG_ECORRUPT, "%s: answer header too long", c->t->url);
            scanned = c->len > 3 ? c->len - 3 : 0;
            bool eof;
            int rc = recv_more(c, &eof, err);
            if (rc != MG_OK)
                return rc;
            if (eof)
                return mg_error_set(err, MG_EIO, "%s: connection closed %s", c->t->url,
                                    c->len ? "mid-answer" : "before an answer");
            *got_bytes = true;
        }
        size_t header_len = (size_t)(hend - c->buf) + 4;
        int rc = parse_head(c, header_len, &h, err);
        if (rc != MG_OK)
            return rc;
        if (h.status != 100)
            break;
        /* 100 Continue: drop it and read the real answer. */
        memmove(c->buf, c->buf + header_len, c->len - header_len);
        c->len -= header_len;
    }
    *keep = h.minor >= 1 ? !h.close : h.keep_alive;
    resp->status = h.status;
    bool no_body = h.status == 204 || h.status == 304 || (h.status >= 100 && h.status < 200);
    if (no_body) {
        c->buf[h.header_len] = '\0';
        resp->body = c->buf + h.header_len;
        resp->body_len = 0;
        return MG_OK;
    }
    if (h.chunked) {
        size_t body_len = 0;
        int rc = read_chunked(c, h.header_len, &body_len, err);
        if (rc != MG_OK)
            return rc;
        resp->body = c->dechunked;
        resp->body_len = body_len;
        return MG_OK;
    }
    if (h.has_length) {
        int rc = recv_until(c, h.header_len + (size_t)h.length, err);
        if (rc != MG_OK)
            return rc;
        c->buf[h.header_len + (size_t)h.length] = '\0';
        resp->body = c->buf + h.header_len;
        resp->body_len = (size_t)h.length;
        return MG_OK;
    }
    /* Framed by the end of the connection. */
    for (;;) {
        bool eof;
        int rc = recv_more(c, &eof, err);
        if (rc != MG_OK)
            return rc;
        if (eof)
            break;
    }
    *keep = false;
    c->buf[c->len] = '\0';
    resp->body = c->buf + h.header_len;
    resp->body_len = c->len - h.header_len;
    return MG_OK;
}

int mg_http_request(mg_http_conn *c, const char *method, const char *path, const char *body,
                    size_t len, mg_http_response *resp, mg_error *err)
{
    size_t head_len = 0;
    bool has_body = body != NULL || strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0;
    int rc = build_head(c, method, path, len, has_body, &head_len, err);
    if (rc != MG_OK)
        return rc;
    for (int attempt = 0;; attempt++) {
        if (c->fd < 0) {
            rc = conn_open(c, err);
            if (rc != MG_OK)
                return rc;
        }
        bool reused = c->answers_on_fd > 0;
        rc = send_all(c, c->head, head_len, body, body ? len : 0, err);
        bool keep = false, got_bytes = false;
        if (rc == MG_OK)
            rc = read_answer(c, resp, &keep, &got_bytes, err);
        if (rc == MG_OK) {
            c->answers_on_fd++;
            if (!keep)
                conn_close(c);
            return MG_OK;
        }
        conn_close(c);
        /* The server closed an idle keep-alive connection before it read
         * the request: nothing was served, so sending again is safe. */
        if (rc == MG_EIO && reused && !got_bytes && attempt == 0) {
            mg_error_clear(err);
            continue;
        }
        return rc;
    }
}
