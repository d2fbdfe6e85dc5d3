#include "bench_test_util.h"

#include "bench/http.h"

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>
#include <ftw.h>

#define MAX_PROCS 4
#define MAX_PATHS 64

static bt_proc procs[MAX_PROCS];
static size_t nprocs;
static char tmpdir[64];
static char *paths[MAX_PATHS];
static size_t npaths;

static void kill_all(int sig)
{
    for (size_t i = 0; i < nprocs; i++)
        if (procs[i].pid > 0)
            kill(procs[i].pid, sig);
}

static void on_alarm(int sig)
{
    (void)sig;
    kill_all(SIGKILL);
    _exit(1);
}

void bt_init(unsigned timeout_s)
{
    signal(SIGALRM, on_alarm);
    alarm(timeout_s);
    snprintf(tmpdir, sizeof tmpdir, "/tmp/mg_bench_test.XXXXXX");
    if (mkdtemp(tmpdir) == NULL)
        bt_fail("mkdtemp");
    setvbuf(stdout, NULL, _IOLBF, 0);
}

const char *bt_path(const char *name)
{
    if (npaths == MAX_PATHS)
        bt_fail("too many paths");
    size_t n = strlen(tmpdir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p == NULL)
        bt_fail("out of memory");
    snprintf(p, n, "%s/%s", tmpdir, name);
    paths[npaths++] = p;
    return p;
}

void bt_stop(bt_proc *p)
{
    if (p->pid <= 0)
        return;
    kill(p->pid, SIGTERM);
    for (int i = 0; i < 1000; i++) {
        if (waitpid(p->pid, NULL, WNOHANG) == p->pid) {
            p->pid = 0;
            return;
        }
        struct timespec ts = {0, 10000000};
        nanosleep(&ts, NULL);
    }
    kill(p->pid, SIGKILL);
    waitpid(p->pid, NULL, 0);
    p->pid = 0;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path); /* best effort: keep going */
    return 0;
}

static void remove_tree(void)
{
    if (tmpdir[0] != '\0')
        nftw(tmpdir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

void bt_finish(void)
{
    for (size_t i = 0; i < nprocs; i++)
        bt_stop(&procs[i]);
    remove_tree();
    for (size_t i = 0; i < npaths; i++)
        free(paths[i]);
    npaths = 0;
}

void bt_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "FAIL: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    for (size_t i = 0; i < nprocs; i++)
        bt_stop(&procs[i]);
    fprintf(stderr, "(logs kept in %s)\n", tmpdir);
    exit(1);
}

static bool parse_port(const char *line, unsigned *port)
{
    const char *p = strstr(line, "http://127.0.0.1:");
    if (p != NULL)
        return sscanf(p + strlen("http://127.0.0.1:"), "%u", port) == 1;
    return sscanf(line, "port %u", port) == 1;
}

bt_proc *bt_start(const char *const *argv, const char *log_name)
{
    if (nprocs == MAX_PROCS)
        bt_fail("too many servers");
    const char *log = bt_path(log_name);
    pid_t pid = fork();
    if (pid < 0)
        bt_fail("fork");
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0)
            _exit(127);
        dup2(fd, STDOUT_FILENO);
        dup2(fd, STDERR_FILENO);
        close(fd);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    bt_proc *p = &procs[nprocs++];
    p->pid = pid;
    for (int i = 0; i < 1500; i++) {
        FILE *f = fopen(log, "r");
        char line[512];
        while (f != NULL && fgets(line, sizeof line, f) != NULL)
            if (parse_port(line, &p->port)) {
                fclose(f);
                snprintf(p->url, sizeof p->url, "http://127.0.0.1:%u", p->port);
                printf("started %s (pid %d) on %s\n", argv[0], (int)pid, p->url);
                return p;
            }
        if (f != NULL)
            fclose(f);
        if (waitpid(pid, NULL, WNOHANG) == pid) {
            p->pid = 0;
            bt_fail("%s exited before listening (log %s)", argv[0], log);
        }
        struct timespec ts = {0, 10000000};
        nanosleep(&ts, NULL);
    }
    bt_fail("%s did not report its address within 15 s (log %s)", argv[0], log);
}

int bt_run_bench(const char *bench_bin, const char *const *args)
{
    const char *argv[64] = {bench_bin};
    int n = 1;
    printf("$ memgrid_bench");
    for (; *args && n < 63; args++) {
        argv[n++] = *args;
        printf(" %s", *args);
    }
    argv[n] = NULL;
    printf("\n");
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0)
        bt_fail("fork");
    if (pid == 0) {
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    int status;
    if (waitpid(pid, &status, 0) != pid)
        bt_fail("waitpid");
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

long long bt_jint(const json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    if (!json_is_integer(v))
        bt_fail("JSON: %s is not an integer", key);
    return (long long)json_integer_value(v);
}

double bt_jnum(const json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    if (!json_is_number(v))
        bt_fail("JSON: %s is not a number", key);
    return json_number_value(v);
}

long long bt_check_op(const json_t *ops, const char *name, bool required)
{
    json_t *op = json_object_get(ops, name);
    if (op == NULL) {
        if (required)
            bt_fail("JSON: no operation %s", name);
        return 0;
    }
    long long requests = bt_jint(op, "requests");
    if (bt_jint(op, "errors") != 0)
        bt_fail("%s: %lld errors", name, bt_jint(op, "errors"));
    double p50 = bt_jnum(op, "p50_ms"), p90 = bt_jnum(op, "p90_ms"), p99 = bt_jnum(op, "p99_ms"),
           p999 = bt_jnum(op, "p999_ms"), max = bt_jnum(op, "max_ms"), min = bt_jnum(op, "min_ms");
    if (!(min <= p50 && p50 <= p90 && p90 <= p99 && p99 <= p999 && p999 <= max) || min <= 0)
        bt_fail("%s: percentiles out of order: %g %g %g %g %g %g", name, min, p50, p90, p99, p999,
                max);
    if (requests <= 0 || bt_jnum(op, "throughput_per_s") <= 0)
        bt_fail("%s: no requests or no throughput", name);
    return requests;
}

void bt_check_html(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        bt_fail("no report %s", path);
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    if (strstr(buf, "<svg") == NULL || strstr(buf, "<polyline") == NULL ||
        strstr(buf, "</html>") == NULL)
        bt_fail("%s: no SVG plot", path);
}

json_t *bt_load_json(const char *path)
{
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    if (root == NULL)
        bt_fail("%s: %s", path, jerr.text);
    return root;
}

json_t *bt_request(const char *url, const char *path, const char *body)
{
    mg_http_target t;
    mg_error err;
    if (mg_http_target_parse(url, &t, &err) != MG_OK)
        bt_fail("%s", err.msg);
    mg_http_conn *c = mg_http_conn_new(&t, 10000);
    mg_http_response resp;
    if (c == NULL || mg_http_request(c, body ? "POST" : "GET", path, body, body ? strlen(body) : 0,
                                     &resp, &err) != MG_OK)
        bt_fail("%s%s: %s", url, path, err.msg);
    json_t *obj = json_loadb(resp.body, resp.body_len, 0, NULL);
    if (obj == NULL)
        bt_fail("%s%s: answer is not JSON: %.200s", url, path, resp.body);
    mg_http_conn_free(c);
    return obj;
}
