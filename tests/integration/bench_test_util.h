/*
 * Helpers of the `memgrid bench` integration tests: servers started as child
 * processes on free loopback ports, memgrid_bench runs, and checks of its
 * JSON and HTML output. A failed check prints why, stops every server
 * started and exits 1.
 */
#ifndef MG_BENCH_TEST_UTIL_H
#define MG_BENCH_TEST_UTIL_H

#include <jansson.h>
#include <stdbool.h>
#include <sys/types.h>

typedef struct bt_proc {
    pid_t pid;
    unsigned port;
    char url[64];
} bt_proc;

/* Makes a temporary directory and arms a watchdog of `timeout_s` seconds
 * that kills the servers and exits 1. */
void bt_init(unsigned timeout_s);

/* The path of `name` inside the temporary directory; the string lives until
 * bt_finish. */
const char *bt_path(const char *name);

/* Starts argv (NULL-terminated) with stdout and stderr in the temporary
 * directory, and waits up to 15 s for it to print its address: a line
 * "port N" or one holding "http://127.0.0.1:N". Stopped by bt_stop. */
bt_proc *bt_start(const char *const *argv, const char *log_name);

/* SIGTERM, then SIGKILL after 10 s; waits for it. */
void bt_stop(bt_proc *p);

/* Stops every server and removes the temporary directory. */
void bt_finish(void);

void bt_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* Runs the bench binary with the NULL-terminated arguments (after argv[0]);
 * returns its exit status. */
int bt_run_bench(const char *bench_bin, const char *const *args);

long long bt_jint(const json_t *obj, const char *key);
double bt_jnum(const json_t *obj, const char *key);

/* Checks one op of an "operations" object: no errors, min <= p50 <= p90 <=
 * p99 <= p99.9 <= max, requests and throughput > 0. Returns its requests (0
 * when absent and not required). */
long long bt_check_op(const json_t *ops, const char *name, bool required);

/* Checks that an HTML report holds an SVG plot. */
void bt_check_html(const char *path);

/* The JSON of a file (caller decrefs). */
json_t *bt_load_json(const char *path);

/* Sends one request to url + path with libc sockets (bench/http.h); returns
 * the parsed JSON answer (caller decrefs). body may be NULL (GET). */
json_t *bt_request(const char *url, const char *path, const char *body);

#endif
