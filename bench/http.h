/*
 * A minimal HTTP/1.1 client for load generation: one keep-alive connection
 * per virtual client, plain blocking sockets, no library underneath, so that
 * a request costs one send and usually one receive system call and the
 * client adds microseconds, not the tens of microseconds of a general
 * purpose library, to sub-millisecond latencies.
 *
 * Supported: http:// URLs (IPv4/IPv6, names resolved once when parsed),
 * responses framed by Content-Length, chunked transfer encoding, or the end
 * of the connection; "Connection: close" and HTTP/1.0 answers (the next
 * request reconnects). A connection that the server closed while idle is
 * reopened and the request sent again, once, only when the server had sent
 * no byte of an answer. Not supported: TLS, redirects, 1xx answers other
 * than 100 Continue, pipelining.
 *
 * A connection is used by one thread at a time.
 */
#ifndef MG_BENCH_HTTP_H
#define MG_BENCH_HTTP_H

#include "lib/error.h"

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* Largest answer body accepted (MG_ETOOBIG beyond). */
#define MG_HTTP_MAX_BODY (64u << 20)

typedef struct mg_http_target {
    char url[512];    /* as given, for messages */
    char host[256];   /* Host header value (with the port) */
    char prefix[256]; /* path prefix, no trailing '/' ("" for none) */
    struct sockaddr_storage addr;
    socklen_t addrlen;
} mg_http_target;

/* Parses "http://host[:port][/prefix]" (port 80 by default) and resolves the
 * host. MG_EINVAL for a malformed URL or another scheme, MG_EUNAVAIL when the
 * name does not resolve. */
int mg_http_target_parse(const char *url, mg_http_target *t, mg_error *err);

typedef struct mg_http_conn mg_http_conn;

typedef struct mg_http_response {
    int status;       /* HTTP status code */
    const char *body; /* borrowed: valid until the next request on the connection;
                       * NUL-terminated for convenience */
    size_t body_len;
} mg_http_response;

/* A new connection object for target t (which must outlive it); the socket
 * is opened by the first request. timeout_ms bounds connecting and each wait
 * for the server to accept or send bytes. NULL when out of memory. */
mg_http_conn *mg_http_conn_new(const mg_http_target *t, unsigned timeout_ms);

/* Closes the socket and frees; NULL is a no-op. */
void mg_http_conn_free(mg_http_conn *c);

/* Sends one request (`path` is appended to the target's prefix; body may be
 * NULL with len 0; a body is sent as application/json) and reads the whole
 * answer into *resp. Any HTTP status is MG_OK here: the caller judges it.
 * Errors: MG_EUNAVAIL (cannot connect), MG_ETIMEDOUT, MG_EIO (connection
 * reset or closed mid-answer), MG_ECORRUPT (not HTTP), MG_ETOOBIG, MG_ENOMEM;
 * after an error the connection is closed and the next request reconnects. */
int mg_http_request(mg_http_conn *c, const char *method, const char *path, const char *body,
                    size_t len, mg_http_response *resp, mg_error *err);

/* Connections opened so far by this object (1 when keep-alive held). */
uint64_t mg_http_conn_opens(const mg_http_conn *c);

#endif
