#include "cluster_harness.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

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

/* A base port whose block (base+10 .. base+10*n+9) is free right now. The
 * blocks lie below Linux's ephemeral range (32768 and up by default), where
 * the tests that bind port 0 get theirs, so a port checked free here cannot
 * be handed to another test before the node binds it. Cluster tests do not
 * run at the same time as each other (RESOURCE_LOCK in CMakeLists.txt). */
static unsigned find_base(int n_nodes)
{
    srand((unsigned)time(NULL) ^ (unsigned)getpid());
    for (int attempt = 0; attempt < 200; attempt++) {
        unsigned base = 20000 + (unsigned)(rand() % 1200) * 10; /* ..31990: below 32768 */
        bool ok = true;
        for (unsigned p = base + 10; ok && p < base + 10 * (unsigned)n_nodes + 10; p++)
            ok = port_free(p);
        if (ok)
            return base;
    }
    return 0;
}

static int write_topology(cluster *c, unsigned election_ms)
{
    FILE *f = fopen(c->config, "w");
    if (f == NULL)
        return -1;
    fprintf(f, "{\"election_timeout_ms\": %u, \"nodes\": [", election_ms);
    for (int n = 1; n <= c->n_nodes; n++)
        fprintf(f,
                "%s{\"id\": %d, \"rpc\": \"tcp://127.0.0.1:%u\", \"survey\": "
                "\"tcp://127.0.0.1:%u\", \"raft_host\": \"127.0.0.1\", \"raft_port\": %u}",
                n > 1 ? ", " : "", n, c->base_port + 10u * (unsigned)n,
                c->base_port + 10u * (unsigned)n + 1, c->base_port + 10u * (unsigned)n + 2);
    fprintf(f, "], \"groups\": [");
    for (int g = 0; g <= c->n_data_groups; g++) {
        fprintf(f, "%s{\"id\": %d, \"replicas\": [", g ? ", " : "", g);
        for (int n = 1; n <= c->n_nodes; n++)
            fprintf(f, "%s%d", n > 1 ? ", " : "", n);
        fprintf(f, "]}");
    }
    fprintf(f, "]}\n");
    return fclose(f) == 0 ? 0 : -1;
}

int cluster_node_start(cluster *c, int id)
{
    char sid[16], data[300];
    snprintf(sid, sizeof sid, "%d", id);
    snprintf(data, sizeof data, "%s/node-%d", c->dir, id);
    const char *argv[] = {harness_memgrid_bin(), "node", "--config", c->config, "--id", sid,
                          "--data", data, NULL};
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

int cluster_start(cluster *c, int n_nodes, int n_data_groups, unsigned election_ms,
                  const char *const *router_args)
{
    memset(c, 0, sizeof *c);
    if (n_nodes < 1 || n_nodes > CLUSTER_NODES_MAX)
        return -1;
    c->n_nodes = n_nodes;
    c->n_data_groups = n_data_groups;
    snprintf(c->dir, sizeof c->dir, "/tmp/memgrid-cluster-it-XXXXXX");
    if (mkdtemp(c->dir) == NULL) {
        perror("mkdtemp");
        c->dir[0] = '\0';
        return -1;
    }
    snprintf(c->config, sizeof c->config, "%s/cluster.json", c->dir);
    c->base_port = find_base(n_nodes);
    if (c->base_port == 0 || write_topology(c, election_ms) != 0) {
        fprintf(stderr, "cluster: no free ports or cannot write %s\n", c->config);
        return -1;
    }
    for (int n = 1; n <= n_nodes; n++)
        if (cluster_node_start(c, n) != 0)
            return -1;
    const char *argv[24] = {harness_memgrid_bin(), "router", "--config", c->config, "--listen",
                            "127.0.0.1:0"};
    int argc = 6;
    for (int i = 0; router_args && router_args[i] && argc < 23; i++)
        argv[argc++] = router_args[i];
    argv[argc] = NULL;
    char line[256];
    if (harness_spawn(argv, line, sizeof line, 15000, &c->router.pid) != 0) {
        fprintf(stderr, "cluster: the router did not start\n");
        return -1;
    }
    const char *p = strstr(line, "http://127.0.0.1:");
    if (p == NULL || sscanf(p, "http://127.0.0.1:%u", &c->router.port) != 1) {
        fprintf(stderr, "cluster: unexpected router line: %s\n", line);
        return -1;
    }
    snprintf(c->router.base, sizeof c->router.base, "http://127.0.0.1:%u", c->router.port);
    /* Ready when a write to each group goes through (elections done). */
    for (int i = 0; i < 400; i++) {
        http_res r;
        bool ok = http_post(&c->router, "/product/add",
                            "{\"user_id\":\"cluster-probe\",\"memory_content\":\"probe\"}",
                            &r) == 0 &&
                  r.status == 200;
        http_res_clear(&r);
        if (ok)
            return 0;
        usleep(50000);
    }
    fprintf(stderr, "cluster: no write went through within 20 s\n");
    return -1;
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
