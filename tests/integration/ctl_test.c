/*
 * `memgrid ctl` against a fake router (libmicrohttpd in this process) that
 * answers canned admin envelopes and records each request: the method, path,
 * query and JSON body every command sends; tables (aligned columns) and
 * --json (exactly the envelope's data); status's exit code by health; an
 * error envelope's message on stderr with exit 1; an unreachable or silent
 * router (exit 1); and usage errors (exit 2, a reason and a pointer to
 * --help, nothing sent).
 */
#include <microhttpd.h>
#include <jansson.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- the fake router ------------------------------------------------------ */

typedef struct fake {
    struct MHD_Daemon *daemon;
    pthread_mutex_t lock;
    unsigned requests;
    char method[16];
    char path[256];
    char cube[256]; /* the decoded ?cube= of the last request, "" without */
    char *body;     /* the last request's body, "" without */
    unsigned status;
    char *answer;
    unsigned delay_ms;
} fake;

static fake F;
static char base[64];

typedef struct upload {
    char *data;
    size_t len;
} upload;

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    (void)cls;
    (void)version;
    upload *u = *con_cls;
    if (u == NULL) {
        *con_cls = u = calloc(1, sizeof *u);
        return u ? MHD_YES : MHD_NO;
    }
    if (*upload_data_size > 0) {
        char *grown = realloc(u->data, u->len + *upload_data_size + 1);
        if (grown == NULL)
            return MHD_NO;
        memcpy(grown + u->len, upload_data, *upload_data_size);
        u->data = grown;
        u->len += *upload_data_size;
        u->data[u->len] = '\0';
        *upload_data_size = 0;
        return MHD_YES;
    }
    const char *cube = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "cube");
    pthread_mutex_lock(&F.lock);
    F.requests++;
    snprintf(F.method, sizeof F.method, "%s", method);
    snprintf(F.path, sizeof F.path, "%s", url);
    snprintf(F.cube, sizeof F.cube, "%s", cube ? cube : "");
    free(F.body);
    F.body = strdup(u->data ? u->data : "");
    unsigned status = F.status;
    char *answer = strdup(F.answer ? F.answer : "");
    unsigned delay = F.delay_ms;
    pthread_mutex_unlock(&F.lock);
    if (delay)
        usleep(delay * 1000u);
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(answer), answer, MHD_RESPMEM_MUST_FREE);
    MHD_add_response_header(r, "Content-Type", "application/json");
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)c;
    (void)toe;
    upload *u = *con_cls;
    if (u != NULL) {
        free(u->data);
        free(u);
        *con_cls = NULL;
    }
}

/* The next answers: HTTP status and body. */
static void fake_answer(unsigned status, const char *answer)
{
    pthread_mutex_lock(&F.lock);
    F.status = status;
    free(F.answer);
    F.answer = strdup(answer);
    pthread_mutex_unlock(&F.lock);
}

/* An envelope of code 200 around data (JSON text). */
static void fake_data(const char *data)
{
    char *env = NULL;
    assert_true(asprintf(&env, "{\"code\":200,\"message\":\"ok\",\"data\":%s}", data) > 0);
    fake_answer(200, env);
    free(env);
}

static unsigned fake_requests(void)
{
    pthread_mutex_lock(&F.lock);
    unsigned n = F.requests;
    pthread_mutex_unlock(&F.lock);
    return n;
}

static int group_setup(void **state)
{
    (void)state;
    unsetenv("MEMGRID_ROUTER");
    pthread_mutex_init(&F.lock, NULL);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    F.daemon = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION, 0,
                                NULL, NULL, on_request, NULL, MHD_OPTION_SOCK_ADDR, &sa,
                                MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL, MHD_OPTION_END);
    if (F.daemon == NULL)
        return -1;
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(F.daemon, MHD_DAEMON_INFO_BIND_PORT);
    snprintf(base, sizeof base, "http://127.0.0.1:%u", (unsigned)info->port);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    MHD_stop_daemon(F.daemon);
    free(F.body);
    free(F.answer);
    return 0;
}

/* ---- running memgrid ------------------------------------------------------ */

typedef struct run_out {
    int code;
    char *out; /* stdout, malloc'd */
    char *err; /* stderr, malloc'd */
} run_out;

static char *slurp_fd(int fd)
{
    size_t len = 0, cap = 4096;
    char *buf = malloc(cap);
    lseek(fd, 0, SEEK_SET);
    ssize_t k;
    while ((k = read(fd, buf + len, cap - len - 1)) > 0) {
        len += (size_t)k;
        if (cap - len < 2)
            buf = realloc(buf, cap *= 2);
    }
    buf[len] = '\0';
    close(fd);
    return buf;
}

/* Runs build/memgrid with args (NULL-terminated). */
static run_out run_memgrid(const char *const *args)
{
    char out_path[] = "/tmp/mg_ctl_test_out_XXXXXX";
    char err_path[] = "/tmp/mg_ctl_test_err_XXXXXX";
    int out_fd = mkstemp(out_path), err_fd = mkstemp(err_path);
    assert_true(out_fd >= 0 && err_fd >= 0);
    unlink(out_path);
    unlink(err_path);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(out_fd, 1);
        dup2(err_fd, 2);
        const char *argv[40] = {MG_MEMGRID_BIN};
        size_t n = 1;
        for (; args[n - 1] != NULL && n < 39; n++)
            argv[n] = args[n - 1];
        argv[n] = NULL;
        execv(MG_MEMGRID_BIN, (char *const *)argv);
        _exit(127);
    }
    int st;
    waitpid(pid, &st, 0);
    run_out r = {WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st), slurp_fd(out_fd),
                 slurp_fd(err_fd)};
    return r;
}

static void run_free(run_out *r)
{
    free(r->out);
    free(r->err);
}

#define ARGS(...) ((const char *const[]){__VA_ARGS__, NULL})

/* Runs ctl against the fake; fails with both outputs unless it exits `code`. */
static run_out expect_exit(const char *const *args, int code)
{
    run_out r = run_memgrid(args);
    if (r.code != code)
        fail_msg("memgrid %s %s: exit %d, expected %d\nstdout: %s\nstderr: %s", args[0],
                 args[1] ? args[1] : "", r.code, code, r.out, r.err);
    return r;
}

/* stdout parsed as one JSON document equal to want (JSON text). */
static void assert_json_out(const char *out, const char *want)
{
    json_error_t e;
    json_t *got = json_loads(out, 0, &e);
    if (got == NULL)
        fail_msg("stdout is not one JSON document (%s): %s", e.text, out);
    json_t *w = json_loads(want, 0, &e);
    assert_non_null(w);
    if (!json_equal(got, w))
        fail_msg("stdout JSON differs from the data\n got: %s\nwant: %s", out, want);
    json_decref(got);
    json_decref(w);
}

/* The last request: method, path and (for POST) a body equal to want. */
static void assert_request(const char *method, const char *path, const char *want_body)
{
    pthread_mutex_lock(&F.lock);
    char m[16], p[256];
    snprintf(m, sizeof m, "%s", F.method);
    snprintf(p, sizeof p, "%s", F.path);
    char *body = strdup(F.body ? F.body : "");
    pthread_mutex_unlock(&F.lock);
    assert_string_equal(m, method);
    assert_string_equal(p, path);
    if (want_body == NULL) {
        assert_string_equal(body, "");
    } else {
        json_error_t e;
        json_t *got = json_loads(body, 0, &e), *w = json_loads(want_body, 0, &e);
        assert_non_null(w);
        if (got == NULL || !json_equal(got, w))
            fail_msg("%s %s sent %s, expected %s", method, path, body, want_body);
        json_decref(got);
        json_decref(w);
    }
    free(body);
}

/* The column of `word` in the first line of text containing `line_has`. */
static long column_of(const char *text, const char *line_has, const char *word)
{
    const char *hit = strstr(text, line_has);
    if (hit == NULL)
        fail_msg("no line with \"%s\" in:\n%s", line_has, text);
    const char *line = hit;
    while (line > text && line[-1] != '\n')
        line--;
    const char *end = strchr(hit, '\n');
    const char *w = strstr(line, word);
    if (w == NULL || (end != NULL && w > end))
        fail_msg("\"%s\" is not on the line of \"%s\" in:\n%s", word, line_has, text);
    return (long)(w - line);
}

/* The column just after `word` in the first line of text containing `line_has`. */
static long column_end(const char *text, const char *line_has, const char *word)
{
    return column_of(text, line_has, word) + (long)strlen(word);
}

/* ---- tests ---------------------------------------------------------------- */

static const char STATUS_HEALTHY[] =
    "{\"epoch\":7,\"healthy\":true,"
    "\"nodes\":[{\"id\":1,\"rpc\":\"tcp://127.0.0.1:7110\",\"up\":true,\"state\":\"up\","
    "\"replicas\":3,\"leaders\":2},"
    "{\"id\":12,\"rpc\":\"tcp://127.0.0.1:17120\",\"up\":true,\"state\":\"up\",\"replicas\":3,"
    "\"leaders\":1}],"
    "\"groups\":[{\"id\":0,\"slots\":0,\"leader\":1,\"term\":3,\"commit\":40,\"applied\":40,"
    "\"replicas\":[{\"node\":1,\"state\":\"leader\",\"applied\":40,\"lag\":0},"
    "{\"node\":12,\"state\":\"follower\",\"applied\":39,\"lag\":1}]},"
    "{\"id\":1,\"slots\":4096,\"leader\":12,\"term\":2,\"commit\":1234,\"applied\":1234,"
    "\"replicas\":[{\"node\":12,\"state\":\"leader\",\"applied\":1234,\"lag\":0}]}]}";

static void test_status(void **state)
{
    (void)state;
    fake_data(STATUS_HEALTHY);
    run_out r = expect_exit(ARGS("ctl", "--router", base, "status"), 0);
    assert_request("GET", "/admin/status", NULL);
    assert_non_null(strstr(r.out, "epoch 7: healthy"));
    assert_non_null(strstr(r.out, "tcp://127.0.0.1:17120"));
    assert_non_null(strstr(r.out, "1:leader 12:follower 1"));
    /* aligned: the UP and LEADERS columns start where their headers do */
    long up = column_of(r.out, "RPC", "UP");
    assert_int_equal(column_of(r.out, "tcp://127.0.0.1:7110", "yes"), up);
    assert_int_equal(column_of(r.out, "tcp://127.0.0.1:17120", "yes"), up);
    assert_int_equal(column_of(r.out, "12:follower", "1:leader"),
                     column_of(r.out, "COMMIT", "REPLICAS"));
    assert_string_equal(r.err, "");
    run_free(&r);

    /* --json: exactly the data, exit 0 */
    r = expect_exit(ARGS("ctl", "status", "--json", "--router", base), 0);
    assert_json_out(r.out, STATUS_HEALTHY);
    run_free(&r);

    /* not healthy: exit 1 with the reasons, the table or the JSON still printed */
    static const char sick[] =
        "{\"epoch\":7,\"healthy\":false,"
        "\"nodes\":[{\"id\":1,\"rpc\":\"tcp://a:1\",\"up\":true,\"state\":\"up\",\"replicas\":1,"
        "\"leaders\":0},{\"id\":3,\"rpc\":\"tcp://b:1\",\"up\":false,\"state\":\"up\","
        "\"replicas\":1,\"leaders\":0}],"
        "\"groups\":[{\"id\":2,\"slots\":10,\"leader\":0,\"term\":5,\"commit\":9,\"applied\":9,"
        "\"replicas\":[{\"node\":1,\"state\":\"candidate\",\"applied\":9,\"lag\":0},"
        "{\"node\":3,\"state\":\"down\",\"applied\":0,\"lag\":0}]}]}";
    fake_data(sick);
    r = expect_exit(ARGS("ctl", "--router", base, "status"), 1);
    assert_non_null(strstr(r.out, "NOT HEALTHY"));
    assert_non_null(strstr(r.out, "3:down"));
    assert_non_null(strstr(r.err, "memgrid ctl: the cluster is not healthy"));
    assert_non_null(strstr(r.err, "node 3 is down"));
    assert_non_null(strstr(r.err, "group 2 has no leader"));
    run_free(&r);
    r = expect_exit(ARGS("ctl", "--json", "--router", base, "status"), 1);
    assert_json_out(r.out, sick);
    run_free(&r);
}

static void test_reads(void **state)
{
    (void)state;
    static const char nodes[] =
        "[{\"id\":1,\"rpc\":\"tcp://127.0.0.1:7110\",\"survey\":\"tcp://127.0.0.1:7111\","
        "\"raft\":\"127.0.0.1:7112\",\"state\":\"up\",\"up\":true,\"replicas\":[0,1,2]},"
        "{\"id\":2,\"rpc\":\"tcp://127.0.0.1:7210\",\"survey\":\"tcp://127.0.0.1:7211\","
        "\"raft\":\"127.0.0.1:7212\",\"state\":\"removing\",\"up\":false,\"replicas\":[]}]";
    fake_data(nodes);
    run_out r = expect_exit(ARGS("ctl", "--router", base, "nodes"), 0);
    assert_request("GET", "/admin/nodes", NULL);
    assert_non_null(strstr(r.out, "0,1,2"));
    assert_int_equal(column_of(r.out, "tcp://127.0.0.1:7210", "removing"),
                     column_of(r.out, "SURVEY", "STATE"));
    run_free(&r);
    r = expect_exit(ARGS("ctl", "--router", base, "nodes", "--json"), 0);
    assert_json_out(r.out, nodes);
    run_free(&r);

    static const char groups[] =
        "[{\"id\":0,\"replicas\":[1,2,3],\"leader\":2,\"term\":4,\"applied\":50,\"slots\":0,"
        "\"slot_ranges\":\"\",\"memories\":0,\"cubes\":0},"
        "{\"id\":1,\"replicas\":[1,2,3],\"leader\":0,\"term\":4,\"applied\":900,\"slots\":1366,"
        "\"slot_ranges\":\"0-1365\",\"memories\":321,\"cubes\":12}]";
    fake_data(groups);
    r = expect_exit(ARGS("ctl", "--router", base, "groups"), 0);
    assert_request("GET", "/admin/groups", NULL);
    assert_non_null(strstr(r.out, "0-1365"));
    assert_non_null(strstr(r.out, "none")); /* group 1 has no leader */
    run_free(&r);
    r = expect_exit(ARGS("ctl", "--router", base, "--json", "groups"), 0);
    assert_json_out(r.out, groups);
    run_free(&r);

    static const char slots[] =
        "{\"epoch\":3,\"ranges\":[{\"first\":0,\"last\":2047,\"group\":1},"
        "{\"first\":2048,\"last\":4095,\"group\":2}],"
        "\"groups\":[{\"group\":1,\"slots\":2048},{\"group\":2,\"slots\":2048}],"
        "\"cube\":{\"id\":\"team.a:b@c-1\",\"slot\":77,\"group\":1}}";
    fake_data(slots);
    r = expect_exit(ARGS("ctl", "--router", base, "slots", "--cube", "team.a:b@c-1"), 0);
    /* the cube id travels as the last path segment (URL-encoded: ':' and '@') */
    assert_request("GET", "/admin/slots/team.a:b@c-1", NULL);
    assert_non_null(strstr(r.out, "cube team.a:b@c-1: slot 77, group 1"));
    assert_non_null(strstr(r.out, "2048"));
    run_free(&r);
    r = expect_exit(ARGS("ctl", "--router", base, "slots", "--json"), 0);
    pthread_mutex_lock(&F.lock);
    assert_string_equal(F.cube, "");
    pthread_mutex_unlock(&F.lock);
    assert_json_out(r.out, slots);
    run_free(&r);
}

static void test_changes(void **state)
{
    (void)state;
    static const char map[] =
        "{\"epoch\":1,\"nodes\":[{\"id\":1,\"rpc\":\"tcp://a:1\",\"survey\":\"tcp://a:2\","
        "\"raft_host\":\"127.0.0.1\",\"raft_port\":7112,\"state\":\"up\"}],"
        "\"groups\":[{\"id\":0,\"replicas\":[1],\"slots\":0},{\"id\":1,\"replicas\":[1],"
        "\"slots\":4096}],\"slots\":[{\"first\":0,\"last\":4095,\"group\":1}]}";
    fake_data(map);
    run_out r = expect_exit(ARGS("ctl", "--router", base, "init", "--groups", "2", "--replicas=3",
                                 "--nodes", "tcp://a:1, tcp://b:2"),
                            0);
    assert_request("POST", "/admin/init",
                   "{\"groups\":2,\"replicas\":3,\"nodes\":[\"tcp://a:1\",\"tcp://b:2\"]}");
    assert_non_null(strstr(r.out, "epoch 1"));
    assert_non_null(strstr(r.out, "127.0.0.1:7112"));
    run_free(&r);
    r = expect_exit(
        ARGS("ctl", "--router", base, "--json", "init", "--groups", "1", "--replicas", "1"), 0);
    assert_request("POST", "/admin/init", "{\"groups\":1,\"replicas\":1}");
    assert_json_out(r.out, map);
    run_free(&r);

    static const char node[] = "{\"id\":4,\"rpc\":\"tcp://c:1\",\"survey\":\"tcp://c:2\","
                               "\"raft_host\":\"127.0.0.1\",\"raft_port\":9000,\"state\":\"up\"}";
    fake_data(node);
    r = expect_exit(ARGS("ctl", "--router", base, "add-node", "--rpc", "tcp://c:1"), 0);
    assert_request("POST", "/admin/nodes", "{\"rpc\":\"tcp://c:1\"}");
    assert_non_null(strstr(r.out, "added node 4"));
    run_free(&r);

    fake_data("{\"moved\":[{\"group\":1,\"from\":4,\"to\":2}]}");
    r = expect_exit(ARGS("ctl", "--router", base, "remove-node", "--id", "4"), 0);
    assert_request("POST", "/admin/nodes/remove", "{\"id\":4}");
    run_free(&r);

    fake_data("{\"group\":0,\"leader\":3}");
    r = expect_exit(ARGS("ctl", "--router", base, "transfer-leader", "--group", "0"), 0);
    assert_request("POST", "/admin/transfer-leader", "{\"group\":0,\"to\":0}");
    assert_non_null(strstr(r.out, "group 0: leader node 3"));
    run_free(&r);
    r = expect_exit(ARGS("ctl", "--router", base, "transfer-leader", "--group", "2", "--to", "3"),
                    0);
    assert_request("POST", "/admin/transfer-leader", "{\"group\":2,\"to\":3}");
    run_free(&r);

    fake_data("{\"transfers\":[{\"group\":2,\"from\":1,\"to\":3}]}");
    r = expect_exit(ARGS("ctl", "--router", base, "balance-leaders"), 0);
    assert_request("POST", "/admin/balance-leaders", "{}");
    assert_non_null(strstr(r.out, "leadership moved in 1 group:"));
    run_free(&r);
    fake_data("{\"transfers\":[]}");
    r = expect_exit(ARGS("ctl", "--router", base, "balance-leaders", "--json"), 0);
    assert_non_null(strstr(r.out, "\"transfers\": []"));
    run_free(&r);

    fake_data("{\"group\":2,\"replicas\":[1,3,5]}");
    r = expect_exit(
        ARGS("ctl", "--router", base, "move-replica", "--group", "2", "--from", "4", "--to", "5"),
        0);
    assert_request("POST", "/admin/move-replica", "{\"group\":2,\"from\":4,\"to\":5}");
    assert_non_null(strstr(r.out, "1,3,5"));
    run_free(&r);

    static const char moved[] = "{\"epoch\":9,\"moved\":[{\"from\":1,\"to\":3,\"slots\":512,"
                                "\"cubes\":7,\"memories\":70}],\"new_group\":3}";
    fake_data(moved);
    r = expect_exit(ARGS("ctl", "--router", base, "rebalance", "--new-group", "--replicas", "3",
                         "--slots", "0-511"),
                    0);
    assert_request("POST", "/admin/rebalance",
                   "{\"new_group\":true,\"replicas\":3,\"slots\":\"0-511\"}");
    assert_non_null(strstr(r.out, "new group 3"));
    assert_int_equal(column_of(r.out, "512", "70"), column_of(r.out, "FROM", "MEMORIES"));
    run_free(&r);
    r = expect_exit(ARGS("ctl", "--router", base, "rebalance", "--json"), 0);
    assert_request("POST", "/admin/rebalance", "{}");
    assert_json_out(r.out, moved);
    run_free(&r);
    r = expect_exit(ARGS("ctl", "--router", base, "rebalance", "--to-group", "2"), 0);
    assert_request("POST", "/admin/rebalance", "{\"to_group\":2}");
    run_free(&r);
}

static void test_stats(void **state)
{
    (void)state;
    static const char stats[] =
        "{\"endpoints\":[{\"endpoint\":\"/product/add\",\"count\":5,\"errors\":1,"
        "\"mean_ms\":2.0,\"p50_ms\":1.5,\"p90_ms\":2.5,\"p99_ms\":3.0,\"p999_ms\":3.0,"
        "\"max_ms\":3.0},"
        "{\"endpoint\":\"/admin/slots/{cube_id}\",\"count\":1,\"errors\":0,\"mean_ms\":0.5,"
        "\"p50_ms\":0.5,\"p90_ms\":0.5,\"p99_ms\":0.5,\"p999_ms\":0.5,\"max_ms\":0.5}],"
        "\"stages\":[{\"endpoint\":\"/product/add\",\"stage\":\"embed\",\"count\":5,"
        "\"mean_ms\":0.1,\"p50_ms\":0.1,\"p90_ms\":0.1,\"p99_ms\":0.1,\"p999_ms\":0.1,"
        "\"max_ms\":0.1}],"
        "\"ops\":[{\"op\":\"meta_get\",\"count\":23,\"errors\":2,\"redirects\":17,"
        "\"mean_ms\":0.05,\"p50_ms\":0.05,\"p90_ms\":0.09,\"p99_ms\":0.2,\"p999_ms\":0.2,"
        "\"max_ms\":0.2}],"
        "\"node_stages\":[{\"stage\":\"apply\",\"count\":21,\"mean_ms\":0.08,"
        "\"p50_ms\":0.08,\"p90_ms\":0.16,\"p99_ms\":0.39,\"p999_ms\":0.39,\"max_ms\":0.39}],"
        "\"nodes\":[{\"node\":1,\"up\":true,\"groups\":1,\"leaders\":1,\"memories\":1,"
        "\"cubes\":1}],"
        "\"cluster\":{\"nodes\":1,\"nodes_up\":1,\"replicas\":1,\"leaders\":1,"
        "\"memories\":1,\"cubes\":1}}";
    fake_data(stats);
    run_out r = expect_exit(ARGS("ctl", "--router", base, "stats"), 0);
    assert_request("GET", "/admin/stats", NULL);
    /* one of each, in the singular */
    assert_non_null(strstr(r.out, "1 of 1 node answered; 1 group led, 1 memory in 1 cube\n"));
    /* the ops table has a redirects column after the errors; the numbers end
     * where their headers end */
    const char *head = "op (nodes, merged)";
    assert_true(column_of(r.out, head, "redirects") > column_of(r.out, head, "errors"));
    assert_int_equal(column_end(r.out, "meta_get", " 2 ") - 1, column_end(r.out, head, "errors"));
    assert_int_equal(column_end(r.out, "meta_get", "17"), column_end(r.out, head, "redirects"));
    assert_int_equal(column_end(r.out, "meta_get", "0.050"), column_end(r.out, head, "p50 ms"));
    assert_int_equal(column_end(r.out, "/product/add", "1.500"),
                     column_end(r.out, "endpoint (router)", "p50 ms"));
    /* the other tables have none */
    const char *ops = strstr(r.out, head);
    assert_non_null(ops);
    const char *rd = strstr(r.out, "redirects");
    assert_true(rd > ops && strstr(rd + 1, "redirects") == NULL);
    assert_non_null(strstr(r.out, "/admin/slots/{cube_id}"));
    assert_string_equal(r.err, "");
    run_free(&r);
    r = expect_exit(ARGS("ctl", "--router", base, "stats", "--json"), 0);
    assert_json_out(r.out, stats);
    run_free(&r);

    /* plural figures, and a node that did not answer */
    static const char two[] =
        "{\"endpoints\":[],\"stages\":[],\"ops\":[],\"node_stages\":[],"
        "\"nodes\":[{\"node\":1,\"up\":true},{\"node\":2,\"up\":false,"
        "\"error\":\"timed out\"}],"
        "\"cluster\":{\"nodes\":2,\"nodes_up\":1,\"replicas\":0,\"leaders\":0,"
        "\"memories\":0,\"cubes\":3}}";
    fake_data(two);
    r = expect_exit(ARGS("ctl", "--router", base, "stats"), 0);
    assert_non_null(strstr(r.out, "1 of 2 nodes answered; 0 groups led, 0 memories in 3 cubes\n"));
    assert_non_null(strstr(r.out, "(no requests yet)"));
    assert_non_null(strstr(r.err, "node 2 did not answer (timed out)"));
    run_free(&r);
}

static void test_router_errors(void **state)
{
    (void)state;
    fake_answer(409, "{\"code\":409,\"message\":\"cluster already initialized\",\"data\":null}");
    run_out r =
        expect_exit(ARGS("ctl", "--router", base, "init", "--groups", "2", "--replicas", "1"), 1);
    assert_string_equal(r.err, "memgrid ctl: cluster already initialized\n");
    assert_string_equal(r.out, "");
    run_free(&r);
    /* --json prints nothing on stdout either */
    r = expect_exit(ARGS("ctl", "--router", base, "--json", "nodes"), 1);
    assert_string_equal(r.out, "");
    assert_string_equal(r.err, "memgrid ctl: cluster already initialized\n");
    run_free(&r);

    fake_answer(404, "<html>not found</html>");
    r = expect_exit(ARGS("ctl", "--router", base, "groups"), 1);
    assert_non_null(strstr(r.err, "without a memgrid envelope"));
    run_free(&r);

    /* a router that does not answer within --timeout */
    fake_data("[]");
    pthread_mutex_lock(&F.lock);
    F.delay_ms = 2500;
    pthread_mutex_unlock(&F.lock);
    r = expect_exit(ARGS("ctl", "--router", base, "--timeout", "1", "nodes"), 1);
    assert_non_null(strstr(r.err, "no answer from"));
    run_free(&r);
    pthread_mutex_lock(&F.lock);
    F.delay_ms = 0;
    pthread_mutex_unlock(&F.lock);

    /* nobody listening: bound, then closed */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    socklen_t len = sizeof sa;
    getsockname(fd, (struct sockaddr *)&sa, &len);
    close(fd);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%u", (unsigned)ntohs(sa.sin_port));
    setenv("MEMGRID_ROUTER", url, 1); /* the default router */
    r = expect_exit(ARGS("ctl", "status"), 1);
    unsetenv("MEMGRID_ROUTER");
    assert_non_null(strstr(r.err, "cannot reach the router"));
    run_free(&r);
}

static void test_usage(void **state)
{
    (void)state;
    const struct {
        const char *const *args;
        const char *why;
    } bad[] = {
        {ARGS("ctl"), "a command is required"},
        {ARGS("ctl", "bogus"), "unknown command \"bogus\""},
        {ARGS("ctl", "stats", "--bogus"), "unknown option \"--bogus\""},
        {ARGS("ctl", "--timeout", "x", "stats"), "--timeout \"x\""},
        {ARGS("ctl", "--timeout", "0", "stats"), "--timeout \"0\""},
        {ARGS("ctl", "--router", "ftp://x", "stats"), "not an http:// URL"},
        {ARGS("ctl", "--router"), "--router needs a value"},
        {ARGS("ctl", "stats", "extra"), "unexpected argument \"extra\""},
        {ARGS("ctl", "--groups", "2", "init"), "unknown option \"--groups\""},
        {ARGS("ctl", "init", "--groups", "2"), "--replicas is required"},
        {ARGS("ctl", "init", "--groups", "0", "--replicas", "3"), "--groups \"0\" is not a number"},
        {ARGS("ctl", "init", "--groups", "2", "--replicas", "8"), "--replicas \"8\""},
        {ARGS("ctl", "init", "--groups", "2", "--replicas", "1", "--nodes", "tcp://a:1,,tcp://b:2"),
         "empty entry"},
        {ARGS("ctl", "add-node"), "--rpc is required"},
        {ARGS("ctl", "add-node", "--rpc"), "--rpc needs a value"},
        {ARGS("ctl", "remove-node", "--id", "-1"), "--id \"-1\""},
        {ARGS("ctl", "transfer-leader", "--group", "x"), "--group \"x\""},
        {ARGS("ctl", "transfer-leader", "--to", "2"), "--group is required"},
        {ARGS("ctl", "move-replica", "--group", "1", "--from", "2"), "--to is required"},
        {ARGS("ctl", "move-replica", "--group", "1", "--from", "2", "--to", "2"), "same node"},
        {ARGS("ctl", "rebalance", "--to-group", "2", "--new-group"), "exclude each other"},
        {ARGS("ctl", "rebalance", "--replicas", "3"), "only with --new-group"},
        {ARGS("ctl", "rebalance", "--new-group=yes"), "--new-group takes no value"},
        {ARGS("ctl", "rebalance", "--to-group", "0"), "--to-group \"0\""},
        {ARGS("ctl", "rebalance", "--slots", "4096"), "--slots \"4096\""},
        {ARGS("ctl", "slots", "--cube", ""), "--cube needs a value"},
    };
    fake_data("{}");
    unsigned before = fake_requests();
    char with_router[128];
    snprintf(with_router, sizeof with_router, "--router=%s", base);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *args[40] = {0};
        size_t n = 0;
        args[n++] = bad[i].args[0];
        if (strcmp(bad[i].why, "--router needs a value") != 0)
            args[n++] = with_router; /* anything sent would reach the fake */
        for (size_t k = 1; bad[i].args[k] != NULL; k++)
            args[n++] = bad[i].args[k];
        run_out r = run_memgrid(args);
        if (r.code != 2 || strstr(r.err, bad[i].why) == NULL || (strstr(r.err, "--help") == NULL))
            fail_msg("case %zu: exit %d (want 2), stderr \"%s\" (want \"%s\" and a pointer to "
                     "--help)",
                     i, r.code, r.err, bad[i].why);
        assert_string_equal(r.out, "");
        run_free(&r);
    }
    assert_int_equal(fake_requests(), before); /* nothing was sent */
}

static void test_help(void **state)
{
    (void)state;
    unsigned before = fake_requests();
    run_out r = expect_exit(ARGS("ctl", "--help"), 0);
    static const char *const names[] = {
        "status",   "nodes",       "groups",          "slots",        "stats",    "init",
        "add-node", "remove-node", "transfer-leader", "move-replica", "rebalance",
        "balance-leaders"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char line[64];
        snprintf(line, sizeof line, "\n  %s ", names[i]);
        if (strstr(r.out, line) == NULL)
            fail_msg("ctl --help does not list %s:\n%s", names[i], r.out);
    }
    assert_non_null(strstr(r.out, "MEMGRID_ROUTER"));
    run_free(&r);
    /* every command's own help, even with other mistakes on the line */
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        r = expect_exit(ARGS("ctl", names[i], "--bogus", "--help"), 0);
        char want[64];
        snprintf(want, sizeof want, "memgrid ctl [--router URL] [--timeout S] [--json] %s",
                 names[i]);
        assert_non_null(strstr(r.out, want));
        run_free(&r);
    }
    r = expect_exit(ARGS("ctl", "help", "rebalance"), 0);
    assert_non_null(strstr(r.out, "--new-group"));
    assert_non_null(strstr(r.out, "600"));
    run_free(&r);
    assert_int_equal(fake_requests(), before);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_status),        cmocka_unit_test(test_reads),
        cmocka_unit_test(test_changes),       cmocka_unit_test(test_stats),
        cmocka_unit_test(test_router_errors), cmocka_unit_test(test_usage),
        cmocka_unit_test(test_help),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
