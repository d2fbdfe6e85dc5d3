#include "cluster_harness.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

double cluster_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static bool port_free(unsigned port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return false;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool ok = bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    close(fd);
    return ok;
}

/* A base port whose block (base+20 .. base+20*(CLUSTER_NODES_MAX+1)-1: every
 * node that may be started, extra ones included) is free right now. The
 * blocks lie below Linux's ephemeral range (32768 and up by default), where
 * the tests that bind port 0 get theirs, so a port checked free here cannot
 * be handed to another test before the node binds it. Cluster tests do not
 * run at the same time as each other (RESOURCE_LOCK in CMakeLists.txt). */
static unsigned find_base(void)
{
    srand((unsigned)time(NULL) ^ (unsigned)getpid());
    unsigned span = CLUSTER_PORTS_PER_NODE * (CLUSTER_NODES_MAX + 1);
    for (int attempt = 0; attempt < 200; attempt++) {
        unsigned base = 20000 + (unsigned)(rand() % 500) * CLUSTER_PORTS_PER_NODE;
        bool ok = base + span < 32768;
        for (unsigned p = base + CLUSTER_PORTS_PER_NODE; ok && p < base + span; p++)
            ok = port_free(p);
        if (ok)
            return base;
    }
    return 0;
}

static unsigned node_port(const cluster *c, int id, unsigned off)
{
    return c->base_port + CLUSTER_PORTS_PER_NODE * (unsigned)id + off;
}

void cluster_node_rpc(const cluster *c, int id, char *out, size_t cap)
{
    snprintf(out, cap, "tcp://127.0.0.1:%u", node_port(c, id, 0));
}

int cluster_node_start(cluster *c, int id)
{
    if (id < 1 || id > CLUSTER_NODES_MAX)
        return -1;
    char sid[16], data[300], rpc[48], survey[48], raft[16], elect[16];
    snprintf(sid, sizeof sid, "%d", id);
    snprintf(data, sizeof data, "%s/node-%d", c->dir, id);
    cluster_node_rpc(c, id, rpc, sizeof rpc);
    snprintf(survey, sizeof survey, "tcp://127.0.0.1:%u", node_port(c, id, 1));
    snprintf(raft, sizeof raft, "%u", node_port(c, id, 2));
    snprintf(elect, sizeof elect, "%u", c->election_ms);
    const char *argv[20] = {harness_memgrid_bin(),
                            "node",
                            "--id",
                            sid,
                            "--data",
                            data,
                            "--rpc",
                            rpc,
                            "--survey",
                            survey,
                            "--raft-host",
                            "127.0.0.1",
                            "--raft-port",
                            raft,
                            NULL};
    int argc = 14;
    if (c->election_ms > 0) {
        argv[argc++] = "--election-ms";
        argv[argc++] = elect;
    }
    argv[argc] = NULL;
    char line[256];
    if (harness_spawn(argv, line, sizeof line, 15000, &c->node_pid[id]) != 0 ||
        strstr(line, "listening") == NULL) {
        fprintf(stderr, "cluster: node %d did not start\n", id);
        return -1;
    }
    return 0;
}

void cluster_node_stop(cluster *c, int id, int sig, unsigned timeout_ms)
{
    serve s = {.pid = c->node_pid[id]};
    serve_stop(&s, sig, timeout_ms);
    c->node_pid[id] = 0;
}

int cluster_router_start(const cluster *c, serve *r, const char *map_cache,
                         const char *const *extra)
{
    memset(r, 0, sizeof *r);
    char seeds[CLUSTER_NODES_MAX * 48] = "";
    size_t len = 0;
    for (int n = 1; n <= c->n_nodes; n++) {
        char rpc[48];
        cluster_node_rpc(c, n, rpc, sizeof rpc);
        len += (size_t)snprintf(seeds + len, sizeof seeds - len, "%s%s", n > 1 ? "," : "", rpc);
    }
    const char *argv[32] = {harness_memgrid_bin(), "router", "--seeds", seeds, "--listen",
                            "127.0.0.1:0"};
    int argc = 6;
    if (map_cache != NULL) {
        argv[argc++] = "--map-cache";
        argv[argc++] = map_cache;
    }
    for (int i = 0; extra && extra[i] && argc < 31; i++)
        argv[argc++] = extra[i];
    argv[argc] = NULL;
    char line[256];
    if (harness_spawn(argv, line, sizeof line, 15000, &r->pid) != 0) {
        fprintf(stderr, "cluster: the router did not start\n");
        return -1;
    }
    const char *p = strstr(line, "http://127.0.0.1:");
    if (p == NULL || sscanf(p, "http://127.0.0.1:%u", &r->port) != 1) {
        fprintf(stderr, "cluster: unexpected router line: %s\n", line);
        return -1;
    }
    snprintf(r->base, sizeof r->base, "http://127.0.0.1:%u", r->port);
    return 0;
}

int cluster_start(cluster *c, int n_nodes, int n_data_groups, unsigned election_ms,
                  const char *const *router_args)
{
    memset(c, 0, sizeof *c);
    if (n_nodes < 1 || n_nodes > CLUSTER_NODES_MAX - 1)
        return -1;
    double t0 = cluster_now_ms();
    c->n_nodes = n_nodes;
    c->n_data_groups = n_data_groups;
    c->replicas = n_nodes < 3 ? n_nodes : 3;
    c->election_ms = election_ms;
    snprintf(c->dir, sizeof c->dir, "/tmp/memgrid-cluster-it-XXXXXX");
    if (mkdtemp(c->dir) == NULL) {
        perror("mkdtemp");
        c->dir[0] = '\0';
        return -1;
    }
    c->base_port = find_base();
    if (c->base_port == 0) {
        fprintf(stderr, "cluster: no free block of ports\n");
        return -1;
    }
    for (int n = 1; n <= n_nodes; n++)
        if (cluster_node_start(c, n) != 0)
            return -1;
    if (cluster_router_start(c, &c->router, NULL, router_args) != 0)
        return -1;

    char body[128];
    snprintf(body, sizeof body, "{\"groups\": %d, \"replicas\": %d}", n_data_groups, c->replicas);
    http_res r;
    int rc = http_post(&c->router, "/admin/init", body, &r);
    if (rc != 0 || r.status != 200) {
        fprintf(stderr, "cluster: POST /admin/init %s -> %ld %s\n", body, rc == 0 ? r.status : -1L,
                rc == 0 && r.body ? r.body : "(no answer)");
        http_res_clear(&r);
        return -1;
    }
    http_res_clear(&r);
    double t_init = cluster_now_ms();

    /* Ready when a write goes through (elections done, map installed). */
    for (int i = 0; i < 400; i++) {
        bool ok =
            http_post(&c->router, "/product/add",
                      "{\"user_id\":\"cluster-probe\",\"memory_content\":\"probe\"}", &r) == 0 &&
            r.status == 200;
        http_res_clear(&r);
        if (ok) {
            fprintf(stderr,
                    "cluster: %d nodes, %d data groups x %d replicas: init took %.0f ms, "
                    "ready after %.0f ms\n",
                    n_nodes, n_data_groups, c->replicas, t_init - t0, cluster_now_ms() - t0);
            return 0;
        }
        usleep(50000);
    }
    fprintf(stderr, "cluster: no write went through within 20 s\n");
    return -1;
}

/* ---- memgrid ctl ---------------------------------------------------------- */

static int run_ctl(const serve *router, char **out, bool json, va_list ap)
{
    const char *argv[40] = {harness_memgrid_bin(), "ctl", "--router", router->base};
    int argc = 4;
    const char *a;
    while ((a = va_arg(ap, const char *)) != NULL && argc < 37)
        argv[argc++] = a;
    if (json)
        argv[argc++] = "--json";
    argv[argc] = NULL;
    if (out != NULL)
        *out = NULL;
    int fds[2];
    if (pipe(fds) != 0) {
        perror("pipe");
        return -1;
    }
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        dup2(fds[1], STDOUT_FILENO);
        close(fds[0]);
        close(fds[1]);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(fds[1]);
    size_t len = 0, cap = 4096;
    char *buf = malloc(cap);
    ssize_t k;
    while (buf != NULL && (k = read(fds[0], buf + len, cap - len - 1)) > 0) {
        len += (size_t)k;
        if (cap - len < 2) {
            char *nb = realloc(buf, cap *= 2);
            if (nb == NULL)
                free(buf);
            buf = nb;
        }
    }
    close(fds[0]);
    if (buf != NULL)
        buf[len] = '\0';
    int st = 0;
    while (waitpid(pid, &st, 0) < 0)
        ;
    if (out != NULL)
        *out = buf;
    else
        free(buf);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

int cluster_ctl(const serve *router, char **out, ...)
{
    va_list ap;
    va_start(ap, out);
    int rc = run_ctl(router, out, false, ap);
    va_end(ap);
    return rc;
}

json_t *cluster_ctl_json(const serve *router, int *exit_code, ...)
{
    va_list ap;
    va_start(ap, exit_code);
    char *out = NULL;
    *exit_code = run_ctl(router, &out, true, ap);
    va_end(ap);
    json_error_t e;
    json_t *j = out != NULL ? json_loads(out, JSON_DECODE_ANY, &e) : NULL;
    if (j == NULL)
        fprintf(stderr, "cluster: ctl (exit %d) printed no JSON: %s\n", *exit_code,
                out ? out : "(nothing)");
    free(out);
    return j;
}

json_t *cluster_admin_get(const serve *router, const char *path)
{
    http_res r;
    int rc = http_get(router, path, &r);
    json_t *data = NULL;
    if (rc == 0 && r.status == 200 && r.json != NULL)
        data = json_incref(json_object_get(r.json, "data"));
    if (data == NULL)
        fprintf(stderr, "cluster: GET %s%s -> %ld %.400s\n", router->base, path,
                rc == 0 ? r.status : -1L, rc == 0 && r.body ? r.body : "(no answer)");
    http_res_clear(&r);
    return data;
}

json_t *cluster_wait_healthy(const serve *router, unsigned timeout_ms, bool *healthy)
{
    double end = cluster_now_ms() + timeout_ms;
    json_t *last = NULL;
    *healthy = false;
    for (;;) {
        http_res r;
        if (http_get(router, "/admin/status", &r) == 0 && r.status == 200 && r.json != NULL) {
            json_decref(last);
            last = json_incref(json_object_get(r.json, "data"));
            *healthy = json_is_true(json_object_get(last, "healthy"));
        }
        http_res_clear(&r);
        if (*healthy || cluster_now_ms() > end)
            return last;
        usleep(100000);
    }
}

void cluster_cleanup(cluster *c)
{
    if (c->router.pid > 0)
        serve_stop(&c->router, SIGKILL, 2000);
    for (int n = 1; n <= CLUSTER_NODES_MAX; n++)
        if (c->node_pid[n] > 0)
            cluster_node_stop(c, n, SIGKILL, 2000);
    if (c->dir[0] != '\0') {
        char cmd[320];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", c->dir);
        if (system(cmd) != 0)
            fprintf(stderr, "cluster: could not remove %s\n", c->dir);
        c->dir[0] = '\0';
    }
}
