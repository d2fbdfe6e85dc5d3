/*
 * Integration-test harness for `memgrid serve`: starts the real binary on a
 * free loopback port (--listen 127.0.0.1:0, the port read from its ready
 * line) with --data in a mkdtemp directory, waits for /health, talks HTTP
 * with libcurl and JSON with jansson, and stops it.
 *
 * The child gets PR_SET_PDEATHSIG = SIGKILL, so it never outlives a test
 * process that crashes; serve_cleanup kills it if still running and removes
 * the data directory.
 */
#ifndef MG_SERVE_HARNESS_H
#define MG_SERVE_HARNESS_H

#include <curl/curl.h>
#include <jansson.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

typedef struct serve {
    pid_t pid;                  /* 0 when not running */
    char dir[256];              /* data directory */
    bool own_dir;               /* made by serve_start: removed by serve_cleanup */
    unsigned port;
    char base[64];              /* "http://127.0.0.1:PORT" */
    double ready_ms;            /* from fork to a healthy /health */
} serve;

/* Starts `memgrid serve`. dir NULL makes a new temporary data directory;
 * otherwise that directory is used (a restart). extra_args may be NULL.
 * Returns 0, or -1 with a message on stderr. */
int serve_start(serve *s, const char *dir, const char *const *extra_args);

/* Forks and execs argv (argv[0] a path), the child's stdout a pipe read
 * here up to its first line (its ready line, into line without the newline)
 * within timeout_ms. The child gets PR_SET_PDEATHSIG = SIGKILL and
 * MEMGRID_LOG=warn unless set. *pid is set as soon as the child exists (so
 * the caller can kill it on failure). Returns 0, or -1 when no line came. */
int harness_spawn(const char *const *argv, char *line, size_t cap, unsigned timeout_ms,
                  pid_t *pid);

/* The memgrid binary the tests run. */
const char *harness_memgrid_bin(void);

/* Sends `sig` and waits for the exit (at most timeout_ms, then SIGKILL).
 * Returns the exit status (WEXITSTATUS) or 128 + signal. */
int serve_stop(serve *s, int sig, unsigned timeout_ms);

/* Kills a running server and removes its directory when serve_start made
 * it. Safe to call twice. */
void serve_cleanup(serve *s);

/* An HTTP answer: status, the body, and the body parsed as JSON (NULL when
 * it is not JSON). */
typedef struct http_res {
    long status;
    char *body;
    size_t len;
    json_t *json;
    char allow[64];             /* Allow header, "" when absent */
} http_res;

void http_res_clear(http_res *r);

/* One request on a (reusable, per-thread) curl handle; body may be NULL.
 * Returns 0 when an HTTP answer came. */
int http_do(CURL *c, const serve *s, const char *method, const char *path, const char *body,
            size_t body_len, http_res *out);

/* Shorthands with a handle of their own (not for hot loops). */
int http_post(const serve *s, const char *path, const char *json_body, http_res *out);
int http_get(const serve *s, const char *path, http_res *out);

/* POST with a jansson value (not stolen). */
int http_post_json(const serve *s, const char *path, const json_t *body, http_res *out);

/* True when the answer is the MemOS envelope with code == HTTP status. */
bool is_envelope(const http_res *r);

/* Checks a MemOS memory item's keys and types (search adds ref_id,
 * metadata.relativity/id/memory/ref_id); prints what is wrong and returns
 * false. */
bool check_item_shape(const json_t *item, bool from_search);

#endif
