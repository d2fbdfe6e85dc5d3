/*
 * Observability end to end against `memgrid serve`: GET /metrics parses as
 * Prometheus text (tests/fixtures/prom_text.h, strict) and its counters and
 * histogram counts move by exactly the requests made, errors included (the
 * node's FSM apply histogram by one entry per write);
 * GET /admin/stats; `memgrid ctl stats` (table and --json, percentiles in
 * order); ctl usage errors (exit 2) and an unreachable router (exit 1).
 */
#include "serve_harness.h"
#include "tests/fixtures/prom_text.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static serve S;

static int group_setup(void **state)
{
    (void)state;
    curl_global_init(CURL_GLOBAL_ALL);
    if (serve_start(&S, NULL, NULL) != 0)
        return -1;
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    int code = serve_stop(&S, SIGTERM, 10000);
    serve_cleanup(&S);
    curl_global_cleanup();
    return code == 0 ? 0 : -1;
}

/* GET /metrics, checked: 200, text/plain, strict Prometheus text. */
static void scrape(prom_doc *doc)
{
    CURL *c = curl_easy_init();
    http_res r;
    assert_int_equal(http_do(c, &S, "GET", "/metrics", NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);
    char *ct = NULL;
    curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &ct);
    assert_non_null(ct);
    assert_int_equal(strncmp(ct, "text/plain; version=0.0.4", 25), 0);
    char why[256] = "";
    if (prom_parse(r.body, r.len, doc, why, sizeof why) != 0) {
        fprintf(stderr, "%s\n", r.body);
        fail_msg("GET /metrics is not valid Prometheus text: %s", why);
    }
    http_res_clear(&r);
    curl_easy_cleanup(c);
}

static double get(const prom_doc *d, const char *name, const char *const *labels)
{
    return prom_sum(d, name, labels, NULL); /* absent (sparse) reads 0 */
}

#define L(...) ((const char *const[]){__VA_ARGS__, NULL})

static void post_expect(const char *path, const char *body, long status)
{
    http_res r;
    assert_int_equal(http_post(&S, path, body, &r), 0);
    if (r.status != status)
        fprintf(stderr, "POST %s %s -> %ld %s\n", path, body, r.status, r.body);
    assert_int_equal(r.status, status);
    http_res_clear(&r);
}

static void test_metrics_move(void **state)
{
    (void)state;
    enum { ADDS = 5, SEARCHES = 7 };
    prom_doc before, after;
    scrape(&before);
    assert_true(before.n_families >= 8);
    assert_true(get(&before, "memgrid_node_up", L("node", "1")) == 1);

    char body[512];
    for (int i = 0; i < ADDS; i++) {
        snprintf(body, sizeof body,
                 "{\"user_id\":\"metrics_u%d\",\"messages\":[{\"role\":\"user\","
                 "\"content\":\"I collect stamps from %d countries\"}]}",
                 i, i + 3);
        post_expect("/product/add", body, 200);
    }
    for (int i = 0; i < SEARCHES; i++) {
        snprintf(body, sizeof body, "{\"user_id\":\"metrics_u%d\",\"query\":\"stamps\"}", i % ADDS);
        post_expect("/product/search", body, 200);
    }
    post_expect("/product/search", "{\"user_id\":\"metrics_u0\"}", 422); /* no query */
    post_expect("/product/nope", "{}", 404);                             /* unmatched */
    scrape(&after);

    struct {
        const char *name;
        const char *const *labels;
        double delta;
    } exact[] = {
        {"memgrid_http_requests_total", L("endpoint", "/product/add", "status", "200"), ADDS},
        {"memgrid_http_request_seconds_count", L("endpoint", "/product/add"), ADDS},
        {"memgrid_http_errors_total", L("endpoint", "/product/add"), 0},
        {"memgrid_http_requests_total", L("endpoint", "/product/search", "status", "200"),
         SEARCHES},
        {"memgrid_http_requests_total", L("endpoint", "/product/search", "status", "422"), 1},
        {"memgrid_http_errors_total", L("endpoint", "/product/search"), 1},
        {"memgrid_http_request_seconds_count", L("endpoint", "/product/search"), SEARCHES + 1},
        {"memgrid_http_requests_total", L("endpoint", "unmatched", "status", "404"), 1},
        {"memgrid_http_errors_total", L("endpoint", "unmatched"), 1},
        /* the first scrape is counted once its answer was queued */
        {"memgrid_http_requests_total", L("endpoint", "/metrics", "status", "200"), 1},
        /* every stage of a successful add ran once per add */
        {"memgrid_router_stage_seconds_count", L("endpoint", "/product/add", "stage", "parse"),
         ADDS},
        {"memgrid_router_stage_seconds_count", L("endpoint", "/product/add", "stage", "embed"),
         ADDS},
        {"memgrid_router_stage_seconds_count", L("endpoint", "/product/add", "stage", "route"),
         ADDS},
        {"memgrid_router_stage_seconds_count", L("endpoint", "/product/add", "stage", "scatter"),
         ADDS},
        {"memgrid_router_stage_seconds_count", L("endpoint", "/product/add", "stage", "merge"),
         ADDS},
        /* and of a successful search; the one refused in parse records none */
        {"memgrid_router_stage_seconds_count", L("endpoint", "/product/search", "stage", "parse"),
         SEARCHES},
        {"memgrid_router_stage_seconds_count", L("endpoint", "/product/search", "stage", "embed"),
         SEARCHES},
        {"memgrid_router_stage_seconds_count", L("endpoint", "/product/search", "stage", "route"),
         SEARCHES},
        {"memgrid_router_stage_seconds_count", L("endpoint", "/product/search", "stage", "scatter"),
         SEARCHES},
        {"memgrid_router_stage_seconds_count", L("endpoint", "/product/search", "stage", "merge"),
         SEARCHES},
    };
    for (size_t i = 0; i < sizeof exact / sizeof exact[0]; i++) {
        double d = get(&after, exact[i].name, exact[i].labels) -
                   get(&before, exact[i].name, exact[i].labels);
        if (d != exact[i].delta)
            fail_msg("%s{%s=%s...} moved by %.0f, expected %.0f", exact[i].name, exact[i].labels[0],
                     exact[i].labels[1], d, exact[i].delta);
    }
    /* the histogram sums move with the counts */
    assert_true(get(&after, "memgrid_http_request_seconds_sum", L("endpoint", "/product/add")) >
                get(&before, "memgrid_http_request_seconds_sum", L("endpoint", "/product/add")));

    /* node side: each add is at least one write, each search at least one
     * survey answered; the proposals were timed; the gauges count them */
    const char *const *n1 = L("node", "1");
    double writes =
        get(&after, "memgrid_node_requests_total", L("node", "1", "op", "write", "status", "OK")) -
        get(&before, "memgrid_node_requests_total", L("node", "1", "op", "write", "status", "OK"));
    assert_true(writes >= ADDS);
    double searches = get(&after, "memgrid_node_op_seconds_count", L("node", "1", "op", "search")) -
                      get(&before, "memgrid_node_op_seconds_count", L("node", "1", "op", "search"));
    assert_true(searches >= SEARCHES);
    assert_true(
        get(&after, "memgrid_node_stage_seconds_count", L("node", "1", "stage", "scan")) -
            get(&before, "memgrid_node_stage_seconds_count", L("node", "1", "stage", "scan")) >=
        SEARCHES);
    assert_true(
        get(&after, "memgrid_node_stage_seconds_count", L("node", "1", "stage", "propose_commit")) -
            get(&before, "memgrid_node_stage_seconds_count",
                L("node", "1", "stage", "propose_commit")) >=
        ADDS);
    /* the FSM apply, timed on the groups' applier threads: the adds ran one
     * after another and every write waits for its entry's apply, so no two
     * writes shared an entry and each one applied exactly one (the same
     * count as the writes answered OK, at least one per add) */
    const char *const *apply = L("node", "1", "stage", "apply");
    double applies = get(&after, "memgrid_node_stage_seconds_count", apply) -
                     get(&before, "memgrid_node_stage_seconds_count", apply);
    if (applies != writes)
        fail_msg("the node applied %.0f entries for %.0f writes", applies, writes);
    assert_true(applies >= ADDS);
    assert_true(get(&after, "memgrid_node_stage_seconds_sum", apply) >
                get(&before, "memgrid_node_stage_seconds_sum", apply));
    assert_true(get(&after, "memgrid_node_groups", n1) == 5);
    assert_true(get(&after, "memgrid_node_leaders", n1) == 5);
    prom_doc_free(&before);
    /* the memory and cube gauges are refreshed at most once a second */
    for (int tries = 0; get(&after, "memgrid_node_memories", n1) < ADDS; tries++) {
        assert_true(tries < 20);
        prom_doc_free(&after);
        usleep(200000);
        scrape(&after);
    }
    assert_true(get(&after, "memgrid_node_cubes", n1) >= ADDS);
    prom_doc_free(&after);
}

static void test_openapi_lists(void **state)
{
    (void)state;
    http_res r;
    assert_int_equal(http_get(&S, "/openapi.json", &r), 0);
    assert_int_equal(r.status, 200);
    const json_t *paths = json_object_get(r.json, "paths");
    assert_non_null(json_object_get(json_object_get(paths, "/metrics"), "get"));
    assert_non_null(json_object_get(json_object_get(paths, "/admin/stats"), "get"));
    http_res_clear(&r);
}

/* ---- memgrid ctl ----------------------------------------------------------- */

/* Runs build/memgrid with args (NULL-terminated); *out (may be NULL) gets
 * its stdout, malloc'd. Returns the exit status. */
static int run_memgrid(const char *const *args, char **out)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        const char *argv[32] = {MG_MEMGRID_BIN};
        size_t n = 1;
        for (; args[n - 1] != NULL && n < 31; n++)
            argv[n] = args[n - 1];
        argv[n] = NULL;
        execv(MG_MEMGRID_BIN, (char *const *)argv);
        _exit(127);
    }
    close(fds[1]);
    size_t len = 0, cap = 4096;
    char *buf = malloc(cap);
    ssize_t k;
    while ((k = read(fds[0], buf + len, cap - len - 1)) > 0) {
        len += (size_t)k;
        if (cap - len < 2)
            buf = realloc(buf, cap *= 2);
    }
    buf[len] = '\0';
    close(fds[0]);
    int st;
    waitpid(pid, &st, 0);
    if (out != NULL)
        *out = buf;
    else
        free(buf);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void check_rows(const json_t *rows, const char *key, const char *name, double min_count)
{
    size_t i;
    const json_t *row;
    json_array_foreach(rows, i, row)
    {
        const char *v = json_string_value(json_object_get(row, key));
        if (v == NULL || strcmp(v, name) != 0)
            continue;
        double c = json_number_value(json_object_get(row, "count"));
        if (c < min_count)
            fail_msg("%s %s: count %.0f < %.0f", key, name, c, min_count);
        static const char *const qs[] = {"p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms"};
        double prev = 0;
        for (size_t q = 0; q < 5; q++) {
            const json_t *jv = json_object_get(row, qs[q]);
            assert_true(json_is_number(jv));
            double x = json_number_value(jv);
            if (!(x >= prev) || !(x > 0))
                fail_msg("%s %s: %s = %f out of order", key, name, qs[q], x);
            prev = x;
        }
        return;
    }
    fail_msg("no row with %s = %s", key, name);
}

static void test_ctl_stats_json(void **state)
{
    (void)state;
    post_expect("/product/add",
                "{\"user_id\":\"ctl_u\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
                200);
    post_expect("/product/search", "{\"user_id\":\"ctl_u\",\"query\":\"x\"}", 200);
    usleep(1100000); /* the node's gauges are at most a second old */
    char *out;
    int rc = run_memgrid(L("ctl", "--router", S.base, "stats", "--json"), &out);
    assert_int_equal(rc, 0);
    json_error_t e;
    json_t *d = json_loads(out, 0, &e);
    if (d == NULL)
        fail_msg("ctl stats --json printed no JSON: %s\n%s", e.text, out);
    check_rows(json_object_get(d, "endpoints"), "endpoint", "/product/add", 1);
    check_rows(json_object_get(d, "endpoints"), "endpoint", "/product/search", 1);
    check_rows(json_object_get(d, "ops"), "op", "write", 1);
    check_rows(json_object_get(d, "ops"), "op", "search", 1);
    check_rows(json_object_get(d, "node_stages"), "stage", "propose_commit", 1);
    check_rows(json_object_get(d, "node_stages"), "stage", "scan", 1);
    check_rows(json_object_get(d, "node_stages"), "stage", "apply", 1);
    check_rows(json_object_get(d, "stages"), "stage", "embed", 1);
    const json_t *cluster = json_object_get(d, "cluster");
    assert_int_equal(json_integer_value(json_object_get(cluster, "nodes_up")), 1);
    assert_true(json_integer_value(json_object_get(cluster, "memories")) >= 1);
    json_decref(d);
    free(out);

    /* the table, the same figures; MEMGRID_ROUTER instead of --router */
    setenv("MEMGRID_ROUTER", S.base, 1);
    rc = run_memgrid(L("ctl", "stats"), &out);
    unsetenv("MEMGRID_ROUTER");
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out, "/product/add"));
    assert_non_null(strstr(out, "p99.9 ms"));
    assert_non_null(strstr(out, "propose_commit"));
    assert_non_null(strstr(out, "\n  apply "));
    free(out);

    /* /admin/stats itself is enveloped */
    http_res r;
    assert_int_equal(http_get(&S, "/admin/stats", &r), 0);
    assert_int_equal(r.status, 200);
    assert_true(is_envelope(&r));
    assert_true(json_is_array(json_object_get(json_object_get(r.json, "data"), "endpoints")));
    http_res_clear(&r);
}

static void test_ctl_usage(void **state)
{
    (void)state;
    const char *const *const bad[] = {
        L("ctl"),
        L("ctl", "bogus"),
        L("ctl", "stats", "--bogus"),
        L("ctl", "--timeout", "x", "stats"),
        L("ctl", "--router", "ftp://x", "stats"),
        L("ctl", "--router"),
        L("ctl", "stats", "extra"),
        L("ctl", "status", "--bogus"),
        L("ctl", "nodes", "extra"),
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = run_memgrid(bad[i], NULL);
        if (rc != 2)
            fail_msg("memgrid %s %s: exit %d, expected 2", bad[i][0], bad[i][1] ? bad[i][1] : "",
                     rc);
    }
    char *out;
    assert_int_equal(run_memgrid(L("ctl", "--help"), &out), 0);
    assert_non_null(strstr(out, "stats"));
    assert_non_null(strstr(out, "MEMGRID_ROUTER"));
    free(out);
}

static void test_ctl_unreachable(void **state)
{
    (void)state;
    /* a port nobody listens on: bound, then closed */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    socklen_t len = sizeof sa;
    getsockname(fd, (struct sockaddr *)&sa, &len);
    close(fd);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%u", (unsigned)ntohs(sa.sin_port));
    assert_int_equal(run_memgrid(L("ctl", "--router", url, "--timeout", "3", "stats"), NULL), 1);
}

/* `memgrid bench` as a subcommand, against this server: the /product
 * requests the client says it sent (measured + warm-up + loading) are exactly
 * what the server's counters saw. */
static void test_bench_subcommand(void **state)
{
    (void)state;
    prom_doc before, after;
    scrape(&before);
    char *out;
    int rc = run_memgrid(L("bench", "--target", S.base, "--workload", "mixed", "--memories", "60",
                           "--cubes", "3", "--concurrency", "2", "--requests", "40", "--warmup",
                           "0", "--cube-prefix", "metrics-bench", "--json", "-"),
                         &out);
    assert_int_equal(rc, 0);
    json_error_t e;
    json_t *j = json_loads(out, 0, &e); /* with --json -, stdout is the JSON alone */
    if (j == NULL)
        fail_msg("bench --json - printed no JSON: %s", e.text);
    const json_t *t = json_array_get(json_object_get(j, "targets"), 0);
    double sent = json_number_value(json_object_get(t, "requests")) +
                  json_number_value(json_object_get(t, "warmup_requests")) +
                  json_number_value(json_object_get(t, "setup_requests"));
    assert_true(json_integer_value(json_object_get(t, "errors")) == 0);
    json_decref(j);
    free(out);
    scrape(&after);
    const char *const *add = L("endpoint", "/product/add");
    const char *const *search = L("endpoint", "/product/search");
    double seen = get(&after, "memgrid_http_request_seconds_count", add) -
                  get(&before, "memgrid_http_request_seconds_count", add) +
                  get(&after, "memgrid_http_request_seconds_count", search) -
                  get(&before, "memgrid_http_request_seconds_count", search);
    if (seen != sent)
        fail_msg("the bench sent %.0f /product requests, /metrics counted %.0f", sent, seen);
    prom_doc_free(&before);
    prom_doc_free(&after);
    assert_int_equal(run_memgrid(L("bench", "--help"), NULL), 0);
    assert_int_equal(run_memgrid(L("bench", "--bogus"), NULL), 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_metrics_move),    cmocka_unit_test(test_openapi_lists),
        cmocka_unit_test(test_ctl_stats_json),  cmocka_unit_test(test_ctl_usage),
        cmocka_unit_test(test_ctl_unreachable), cmocka_unit_test(test_bench_subcommand),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
