/*
 * The admin API end to end, in one process: three nodes on tcp:// URLs
 * hosting nothing, a router seeded with them, then over HTTP: init (and its
 * refusals), status, a cube written before a rebalance to a new group (its
 * memories readable after the slots moved), a move of the new group's
 * replica to another node, and refused operations that change nothing.
 * Then leadership and dead nodes: after init every group is led by its
 * first replica and those are spread over the nodes; balance-leaders undoes
 * a manual transfer; a move-replica and a remove-node whose source node is
 * stopped complete, and the map forgets the stopped node.
 * Cluster identity: a second init through a router seeded only with a node
 * of a live cluster that hosts no meta replica is refused and creates
 * nothing; init refuses nodes that host replicas or belong elsewhere, and
 * resumes an init that stopped after claiming some nodes; a move of group 0
 * updates the nodes' meta hints.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "lib/cmap.h"
#include "lib/wire.h"
#include "node/node.h"
#include "router/admin.h"
#include "router/router.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <ftw.h>
#include <jansson.h>
#include <netinet/in.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define N_NODES 3
#define RAFT_SPAN 8 /* groups 0..7 per node */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static bool port_free(unsigned port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bool ok = bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

/* A base port with `span` free ports from it on, below Linux's ephemeral
 * range (32768 and up): a port checked free here is bound only later (a
 * group's raft port when the group is opened), and in the ephemeral range an
 * outgoing connection could take it meanwhile. The cluster tests share this
 * range and run one at a time (RESOURCE_LOCK cluster_ports). */
static unsigned free_ports(unsigned span)
{
    for (unsigned tries = 0; tries < 1000; tries++) {
        unsigned base = 20000 + (unsigned)(rand() % (32768 - 20000 - span));
        bool ok = true;
        for (unsigned k = 0; k < span && ok; k++)
            ok = port_free(base + k);
        if (ok)
            return base;
    }
    fail_msg("no free ports");
    return 0;
}

typedef struct test_node {
    char dir[64];
    char rep[64], resp[64];
    mg_node *node;
} test_node;

/* Node i uses ports base .. base + 2 + RAFT_SPAN - 1 (rpc, survey, raft of
 * groups 0..RAFT_SPAN-1); the caller picks base for all nodes at once so
 * that their ranges do not overlap (raft ports are bound only later). */
static void node_up(test_node *t, uint64_t id, unsigned base)
{
    snprintf(t->dir, sizeof t->dir, "/tmp/mg-radmin-XXXXXX");
    assert_non_null(mkdtemp(t->dir));
    snprintf(t->rep, sizeof t->rep, "tcp://127.0.0.1:%u", base);
    snprintf(t->resp, sizeof t->resp, "tcp://127.0.0.1:%u", base + 1);
    mg_node_config cfg = {.data_dir = t->dir,
                          .node_id = id,
                          .rep_url = t->rep,
                          .respondent_url = t->resp,
                          .raft_host = "127.0.0.1",
                          .raft_port = base + 2};
    mg_error err = {0};
    if (mg_node_start(&cfg, &t->node, &err) != MG_OK)
        fail_msg("node %llu: %s", (unsigned long long)id, err.msg);
}

/* Stops the node (when running) and removes its data. */
static void node_down(test_node *t)
{
    if (t->node != NULL)
        mg_node_stop(t->node);
    t->node = NULL;
    nftw(t->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---- HTTP --------------------------------------------------------------- */

typedef struct answer {
    long status;
    json_t *doc;
} answer;

typedef struct text {
    char *p;
    size_t len;
} text;

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
    text *t = arg;
    t->p = realloc(t->p, t->len + size * n + 1);
    memcpy(t->p + t->len, p, size * n);
    t->len += size * n;
    t->p[t->len] = '\0';
    return size * n;
}

static answer http(unsigned port, const char *path, const char *post)
{
    char url[256];
    snprintf(url, sizeof url, "http://127.0.0.1:%u%s", port, path);
    text t = {0};
    CURL *c = curl_easy_init();
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &t);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 120L);
    if (post != NULL)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, post);
    assert_int_equal(curl_easy_perform(c), CURLE_OK);
    answer a = {0};
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &a.status);
    curl_easy_cleanup(c);
    json_error_t e;
    a.doc = json_loadb(t.p ? t.p : "", t.len, 0, &e);
    if (a.doc == NULL)
        fail_msg("%s: not JSON: %s", path, t.p ? t.p : "(empty)");
    free(t.p);
    return a;
}

/* The answer's data after checking its status. */
static json_t *expect(answer a, long status, const char *what)
{
    if (a.status != status)
        fail_msg("%s: HTTP %ld, expected %ld: %s", what, a.status, status,
                 json_string_value(json_object_get(a.doc, "message")));
    json_t *data = json_incref(json_object_get(a.doc, "data"));
    json_decref(a.doc);
    return data;
}

static json_int_t jint(const json_t *o, const char *key)
{
    return json_integer_value(json_object_get(o, key));
}

static json_int_t map_epoch(unsigned port)
{
    json_t *m = expect(http(port, "/admin/map", NULL), 200, "map");
    json_int_t e = jint(m, "epoch");
    json_decref(m);
    return e;
}

/* Memories of the user's cube, by get_all. */
static size_t count_memories(unsigned port, const char *user)
{
    char body[256];
    snprintf(body, sizeof body, "{\"user_id\":\"%s\",\"memory_type\":\"text_mem\"}", user);
    json_t *d = expect(http(port, "/product/get_all", body), 200, "get_all");
    size_t n = 0, i;
    json_t *c;
    json_array_foreach(d, i, c)
    {
        n += json_array_size(json_object_get(c, "memories"));
    }
    json_decref(d);
    return n;
}

static json_t *find_group(json_t *groups, json_int_t id)
{
    size_t i;
    json_t *g;
    json_array_foreach(groups, i, g)
    {
        if (jint(g, "id") == id)
            return g;
    }
    return NULL;
}

static void wait_healthy(unsigned port)
{
    for (int i = 0; i < 100; i++) {
        json_t *s = expect(http(port, "/admin/status", NULL), 200, "status");
        bool ok = json_is_true(json_object_get(s, "healthy"));
        json_decref(s);
        if (ok)
            return;
        usleep(100 * 1000);
    }
    fail_msg("the cluster did not become healthy");
}

static void test_admin(void **state)
{
    (void)state;
    srand((unsigned)getpid());
    test_node nodes[N_NODES];
    const char *seeds[N_NODES];
    unsigned base = free_ports(N_NODES * (2 + RAFT_SPAN));
    for (int i = 0; i < N_NODES; i++) {
        node_up(&nodes[i], (uint64_t)i + 1, base + (unsigned)i * (2 + RAFT_SPAN));
        seeds[i] = nodes[i].rep;
    }
    mg_router_config rc;
    mg_router_config_default(&rc);
    rc.listen_port = 0;
    rc.seeds = seeds;
    rc.n_seeds = N_NODES;
    rc.embed_dim = 32;
    rc.workers = 4;
    mg_router *r;
    mg_error err = {0};
    if (mg_router_start(&rc, &r, &err) != MG_OK)
        fail_msg("router: %s", err.msg);
    unsigned port = mg_router_port(r);

    /* Before init: epoch 0, nothing. */
    json_t *m = expect(http(port, "/admin/map", NULL), 200, "map before init");
    assert_int_equal(jint(m, "epoch"), 0);
    assert_int_equal(json_array_size(json_object_get(m, "groups")), 0);
    json_decref(m);

    /* More replicas than nodes: 409, still not initialized. */
    json_decref(expect(http(port, "/admin/init", "{\"groups\":2,\"replicas\":4}"), 409,
                       "init R > nodes"));
    assert_int_equal(map_epoch(port), 0);
    json_decref(expect(http(port, "/admin/init", "{\"groups\":0,\"replicas\":1}"), 400,
                       "init 0 groups"));

    /* init over the seeds: meta + 2 data groups, 3 replicas each. */
    m = expect(http(port, "/admin/init", "{\"groups\":2,\"replicas\":3}"), 200, "init");
    assert_int_equal(jint(m, "epoch"), 1);
    assert_int_equal(json_array_size(json_object_get(m, "nodes")), N_NODES);
    json_t *groups = json_object_get(m, "groups");
    assert_int_equal(json_array_size(groups), 3);
    assert_int_equal(json_array_size(json_object_get(find_group(groups, 1), "replicas")), 3);
    assert_int_equal(jint(find_group(groups, 1), "slots") + jint(find_group(groups, 2), "slots"),
                     MG_SLOTS);
    json_decref(m);

    /* Once only. */
    json_decref(expect(http(port, "/admin/init", "{\"groups\":2,\"replicas\":3}"), 409,
                       "init twice"));
    bool created = true;
    assert_int_equal(mg_router_init_cluster(r, 2, 3, &created, &err), MG_OK);
    assert_false(created);
    assert_int_equal(map_epoch(port), 1);
    wait_healthy(port);

    /* Status: every node up, every group led. */
    json_t *s = expect(http(port, "/admin/status", NULL), 200, "status");
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(s, "nodes"), i, e)
    {
        assert_true(json_is_true(json_object_get(e, "up")));
        assert_int_equal(jint(e, "replicas"), 3);
    }
    json_array_foreach(json_object_get(s, "groups"), i, e)
    {
        assert_true(jint(e, "leader") >= 1 && jint(e, "leader") <= N_NODES);
        assert_int_equal(json_array_size(json_object_get(e, "replicas")), 3);
    }
    json_decref(s);

    /* Data written before the rebalance. */
    const char *users[] = {"alice", "bob", "carol", "dave", "erin", "frank"};
    const size_t n_users = sizeof users / sizeof users[0];
    char body[512];
    for (size_t u = 0; u < n_users; u++)
        for (int k = 0; k < 3; k++) {
            snprintf(body, sizeof body,
                     "{\"user_id\":\"%s\",\"memory_content\":\"%s remembers fact number %d\"}",
                     users[u], users[u], k);
            json_decref(expect(http(port, "/product/add", body), 200, "add"));
        }
    size_t before[8];
    for (size_t u = 0; u < n_users; u++) {
        before[u] = count_memories(port, users[u]);
        assert_true(before[u] >= 1);
    }

    /* Refused operations change nothing. */
    json_int_t epoch = map_epoch(port);
    json_decref(expect(http(port, "/admin/move-replica", "{\"group\":1,\"from\":1,\"to\":2}"),
                       409, "move to a node hosting the group"));
    json_decref(expect(http(port, "/admin/move-replica", "{\"group\":9,\"from\":1,\"to\":2}"),
                       404, "move of an unknown group"));
    json_decref(expect(http(port, "/admin/rebalance", "{\"to_group\":1,\"new_group\":true}"),
                       400, "rebalance with two targets"));
    json_decref(expect(http(port, "/admin/nodes/remove", "{\"id\":1}"), 409,
                       "remove a node when the others host every group"));
    assert_int_equal(map_epoch(port), epoch);

    /* Rebalance to a new group of one replica: slots move, data follows. */
    json_t *rb = expect(http(port, "/admin/rebalance", "{\"new_group\":true,\"replicas\":1}"), 200,
                        "rebalance new group");
    assert_int_equal(jint(rb, "new_group"), 3);
    assert_true(jint(rb, "epoch") > epoch);
    json_int_t moved_slots = 0, moved_cubes = 0;
    json_array_foreach(json_object_get(rb, "moved"), i, e)
    {
        assert_int_equal(jint(e, "to"), 3);
        moved_slots += jint(e, "slots");
        moved_cubes += jint(e, "cubes");
    }
    json_decref(rb);
    assert_true(moved_slots >= MG_SLOTS / 3 - 1 && moved_slots <= MG_SLOTS / 3 + 1);
    json_t *sl = expect(http(port, "/admin/slots", NULL), 200, "slots");
    json_array_foreach(json_object_get(sl, "groups"), i, e)
    {
        assert_true(jint(e, "slots") >= MG_SLOTS / 3 && jint(e, "slots") <= MG_SLOTS / 3 + 1);
    }
    json_decref(sl);
    json_int_t in_new = 0;
    for (size_t u = 0; u < n_users; u++) {
        char path[128];
        snprintf(path, sizeof path, "/admin/slots/%s", users[u]);
        sl = expect(http(port, path, NULL), 200, "slots of a cube");
        json_t *c = json_object_get(sl, "cube");
        assert_string_equal(json_string_value(json_object_get(c, "id")), users[u]);
        in_new += jint(c, "group") == 3;
        json_decref(sl);
        assert_int_equal(count_memories(port, users[u]), before[u]);
    }
    assert_int_equal(in_new, moved_cubes);

    /* Writes to a moved cube go to the new group. */
    for (size_t u = 0; u < n_users; u++) {
        snprintf(body, sizeof body,
                 "{\"user_id\":\"%s\",\"memory_content\":\"%s learned a new thing\"}", users[u],
                 users[u]);
        json_decref(expect(http(port, "/product/add", body), 200, "add after rebalance"));
        assert_true(count_memories(port, users[u]) > before[u]);
        before[u] = count_memories(port, users[u]);
    }

    /* Move group 3's replica to another node. */
    m = expect(http(port, "/admin/map", NULL), 200, "map");
    json_t *g3 = find_group(json_object_get(m, "groups"), 3);
    assert_non_null(g3);
    assert_int_equal(json_array_size(json_object_get(g3, "replicas")), 1);
    json_int_t from = json_integer_value(json_array_get(json_object_get(g3, "replicas"), 0));
    json_int_t to = from % N_NODES + 1;
    json_decref(m);
    snprintf(body, sizeof body, "{\"group\":3,\"from\":%lld,\"to\":%lld}", (long long)from,
             (long long)to);
    json_t *mv = expect(http(port, "/admin/move-replica", body), 200, "move-replica");
    assert_int_equal(json_array_size(json_object_get(mv, "replicas")), 1);
    assert_int_equal(json_integer_value(json_array_get(json_object_get(mv, "replicas"), 0)), to);
    json_decref(mv);
    wait_healthy(port);
    for (size_t u = 0; u < n_users; u++)
        assert_int_equal(count_memories(port, users[u]), before[u]);

    /* Transfer leadership of group 1 to node 2. */
    json_t *tl = expect(http(port, "/admin/transfer-leader", "{\"group\":1,\"to\":2}"), 200,
                        "transfer-leader");
    assert_int_equal(jint(tl, "leader"), 2);
    json_decref(tl);
    json_t *gs = expect(http(port, "/admin/groups", NULL), 200, "groups");
    assert_int_equal(jint(find_group(gs, 1), "leader"), 2);
    json_decref(gs);

    mg_router_stop(r);
    for (int k = 0; k < N_NODES; k++)
        node_down(&nodes[k]);
}

/* ---- leadership and dead nodes ------------------------------------------------ */

/* group id -> its first replica in the map, for groups 0..n-1. */
static void first_replicas(unsigned port, json_int_t *first, size_t n)
{
    json_t *m = expect(http(port, "/admin/map", NULL), 200, "map");
    size_t i;
    json_t *g;
    json_array_foreach(json_object_get(m, "groups"), i, g)
    {
        if (jint(g, "id") >= 0 && (size_t)jint(g, "id") < n)
            first[jint(g, "id")] =
                json_integer_value(json_array_get(json_object_get(g, "replicas"), 0));
    }
    json_decref(m);
}

/* Waits (5 s at most) until /admin/status shows every group 0..n-1 led by
 * first[group]; fails naming a group that is not. */
static void wait_led_by(unsigned port, const json_int_t *first, size_t n)
{
    json_int_t group = -1, leader = 0;
    for (int tries = 0; tries < 50; tries++) {
        json_t *s = expect(http(port, "/admin/status", NULL), 200, "status");
        size_t i;
        json_t *g;
        group = -1;
        json_array_foreach(json_object_get(s, "groups"), i, g)
        {
            json_int_t id = jint(g, "id");
            if (group < 0 && id >= 0 && (size_t)id < n && jint(g, "leader") != first[id]) {
                group = id;
                leader = jint(g, "leader");
            }
        }
        json_decref(s);
        if (group < 0)
            return;
        usleep(100 * 1000);
    }
    fail_msg("group %lld is led by node %lld, not by its first replica %lld", (long long)group,
             (long long)leader, (long long)first[group]);
}

/* POST /admin/balance-leaders through the router's HTTP route: the answer's
 * data, after checking its status. */
static json_t *balance_leaders(unsigned port)
{
    return expect(http(port, "/admin/balance-leaders", ""), 200, "balance-leaders");
}

/* Whether the map lists node `node` among group's replicas. */
static bool map_hosts(unsigned port, json_int_t group, json_int_t node)
{
    json_t *m = expect(http(port, "/admin/map", NULL), 200, "map");
    json_t *g = find_group(json_object_get(m, "groups"), group);
    assert_non_null(g);
    bool found = false;
    size_t i;
    json_t *x;
    json_array_foreach(json_object_get(g, "replicas"), i, x)
    {
        found |= json_integer_value(x) == node;
    }
    json_decref(m);
    return found;
}

static void test_leaders_and_dead_nodes(void **state)
{
    (void)state;
    enum { N = N_NODES + 1, GROUPS = 3 }; /* nodes 1..3 are the seeds; 4 joins later */
    test_node nodes[N];
    const char *seeds[N_NODES];
    unsigned base = free_ports(N * (2 + RAFT_SPAN));
    for (int i = 0; i < N; i++)
        node_up(&nodes[i], (uint64_t)i + 1, base + (unsigned)i * (2 + RAFT_SPAN));
    for (int i = 0; i < N_NODES; i++)
        seeds[i] = nodes[i].rep;
    mg_router_config rc;
    mg_router_config_default(&rc);
    rc.listen_port = 0;
    rc.seeds = seeds;
    rc.n_seeds = N_NODES;
    rc.embed_dim = 32;
    rc.workers = 4;
    mg_router *r;
    mg_error err = {0};
    if (mg_router_start(&rc, &r, &err) != MG_OK)
        fail_msg("router: %s", err.msg);
    unsigned port = mg_router_port(r);

    /* Init: the groups' first replicas cover every node, and lead. */
    json_decref(expect(http(port, "/admin/init", "{\"groups\":3,\"replicas\":3}"), 200, "init"));
    json_int_t first[GROUPS + 1] = {0};
    first_replicas(port, first, GROUPS + 1);
    bool is_first[N_NODES + 1] = {false};
    for (size_t g = 0; g <= GROUPS; g++) {
        assert_true(first[g] >= 1 && first[g] <= N_NODES);
        is_first[first[g]] = true;
    }
    for (int n = 1; n <= N_NODES; n++)
        assert_true(is_first[n]);
    wait_led_by(port, first, GROUPS + 1);
    json_t *s = expect(http(port, "/admin/status", NULL), 200, "status");
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(s, "nodes"), i, e)
    {
        assert_true(jint(e, "leaders") >= 1 && jint(e, "leaders") <= 2);
    }
    json_decref(s);

    /* Balanced already: nothing to do. */
    json_t *b = balance_leaders(port);
    assert_int_equal(json_array_size(json_object_get(b, "transfers")), 0);
    json_decref(b);

    /* A manual transfer of group 1 away from its first replica; balance-leaders
     * moves it back. */
    json_int_t other = first[1] % N_NODES + 1;
    char body[256];
    snprintf(body, sizeof body, "{\"group\":1,\"to\":%lld}", (long long)other);
    json_t *tl = expect(http(port, "/admin/transfer-leader", body), 200, "transfer-leader");
    assert_int_equal(jint(tl, "leader"), other);
    json_decref(tl);
    b = balance_leaders(port);
    json_t *moves = json_object_get(b, "transfers");
    assert_int_equal(json_array_size(moves), 1);
    assert_int_equal(jint(json_array_get(moves, 0), "group"), 1);
    assert_int_equal(jint(json_array_get(moves, 0), "from"), other);
    assert_int_equal(jint(json_array_get(moves, 0), "to"), first[1]);
    json_decref(b);
    wait_led_by(port, first, GROUPS + 1);

    /* Node 4 joins; node 3 stops. Group 1's replica moves from the stopped
     * node to node 4 without waiting for it, and the map forgets it there. */
    snprintf(body, sizeof body, "{\"rpc\":\"%s\"}", nodes[N - 1].rep);
    json_decref(expect(http(port, "/admin/nodes", body), 200, "add-node"));
    mg_node_stop(nodes[N_NODES - 1].node);
    nodes[N_NODES - 1].node = NULL;
    snprintf(body, sizeof body, "{\"group\":1,\"from\":%d,\"to\":%d}", N_NODES, N);
    json_t *mv =
        expect(http(port, "/admin/move-replica", body), 200, "move-replica off a stopped node");
    assert_int_equal(json_array_size(json_object_get(mv, "replicas")), 3);
    json_decref(mv);
    assert_false(map_hosts(port, 1, N_NODES));
    assert_true(map_hosts(port, 1, N));

    /* remove-node of the stopped node: its other replicas go to node 4. */
    snprintf(body, sizeof body, "{\"id\":%d}", N_NODES);
    json_t *rm = expect(http(port, "/admin/nodes/remove", body), 200, "remove a stopped node");
    assert_int_equal(json_array_size(json_object_get(rm, "moved")), GROUPS);
    json_decref(rm);
    for (json_int_t g = 0; g <= GROUPS; g++) {
        assert_false(map_hosts(port, g, N_NODES));
        assert_true(map_hosts(port, g, N));
    }
    wait_healthy(port);

    mg_router_stop(r);
    for (int k = 0; k < N; k++)
        node_down(&nodes[k]);
}

/* ---- cluster identity ------------------------------------------------------ */

/* A node's answer to NODE_INFO (or a claim). */
typedef struct membership {
    int status;
    char msg[256];
    char cluster[MG_CMAP_CLUSTER_MAX]; /* "" for nil */
    char meta[MG_CMAP_REPLICAS_MAX][MG_CMAP_URL_MAX];
    uint32_t n_meta;
    uint32_t n_groups;
} membership;

/* One internal request straight to a node's rpc URL (as a router sends it):
 * the reply's status and message in *out; for NODE_INFO its membership. */
static void node_call(const char *url, int op, uint64_t group, const msgpack_sbuffer *body,
                      membership *out)
{
    memset(out, 0, sizeof *out);
    nng_socket s;
    assert_int_equal(nng_req0_open(&s), 0);
    assert_int_equal(nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, 10000), 0);
    assert_int_equal(nng_dial(s, url, NULL, 0), 0);
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    assert_int_equal(mg_wire_req_begin(&pk, op, 1, 0, group, 0, ""), MG_OK);
    msgpack_sbuffer_write(&sb, body->data, body->size);
    nng_msg *m, *reply;
    assert_int_equal(nng_msg_alloc(&m, sb.size), 0);
    memcpy(nng_msg_body(m), sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    assert_int_equal(nng_sendmsg(s, m, 0), 0);
    assert_int_equal(nng_recvmsg(s, &reply, 0), 0);
    mg_wire_rep rep;
    mg_error err = {0};
    assert_int_equal(mg_wire_rep_decode(nng_msg_body(reply), nng_msg_len(reply), &rep, &err),
                     MG_OK);
    out->status = rep.status;
    snprintf(out->msg, sizeof out->msg, "%.*s", (int)rep.msg_len, rep.msg);
    if (op == MG_OP_NODE_INFO && rep.status == MG_OK) {
        mg_mp_reader rd = mg_wire_body(rep.body, rep.body_len);
        uint32_t n, k;
        assert_int_equal(mg_mp_read_map(&rd, &n), MG_OK);
        for (uint32_t i = 0; i < n; i++) {
            bool is_cluster = mg_mp_peek_str_eq(&rd, "cluster"),
                 is_meta = mg_mp_peek_str_eq(&rd, "meta"),
                 is_groups = mg_mp_peek_str_eq(&rd, "groups");
            mg_mp_skip(&rd);
            if (is_cluster && mg_mp_peek(&rd) != MG_MP_NIL) {
                assert_int_equal(mg_mp_read_strcpy(&rd, out->cluster, sizeof out->cluster), MG_OK);
            } else if (is_meta) {
                assert_int_equal(mg_mp_read_array(&rd, &k), MG_OK);
                for (uint32_t j = 0; j < k; j++)
                    assert_int_equal(mg_mp_read_strcpy(&rd, out->meta[j], MG_CMAP_URL_MAX), MG_OK);
                out->n_meta = k;
            } else if (is_groups) {
                assert_int_equal(mg_mp_read_array(&rd, &out->n_groups), MG_OK);
                for (uint32_t j = 0; j < out->n_groups; j++)
                    mg_mp_skip(&rd);
            } else {
                mg_mp_skip(&rd);
            }
        }
    }
    nng_msg_free(reply);
    nng_close(s);
}

/* NODE_INFO to the node at url, with a claim when cluster is not NULL. */
static membership node_member(const char *url, const char *cluster, const char *const *meta,
                              uint32_t n_meta)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    if (cluster == NULL) {
        msgpack_pack_map(&pk, 0);
    } else {
        msgpack_pack_map(&pk, 1);
        mg_mp_pack_cstr(&pk, "claim");
        msgpack_pack_map(&pk, 2);
        mg_mp_pack_cstr(&pk, "cluster");
        mg_mp_pack_cstr(&pk, cluster);
        mg_mp_pack_cstr(&pk, "meta");
        msgpack_pack_array(&pk, n_meta);
        for (uint32_t i = 0; i < n_meta; i++)
            mg_mp_pack_cstr(&pk, meta[i]);
    }
    membership mb;
    node_call(url, MG_OP_NODE_INFO, 0, &sb, &mb);
    msgpack_sbuffer_destroy(&sb);
    return mb;
}

/* The map's cluster id (malloc'd; "" for none). */
static char *map_cluster(unsigned port)
{
    json_t *m = expect(http(port, "/admin/map", NULL), 200, "map");
    const char *id = json_string_value(json_object_get(m, "cluster"));
    char *copy = strdup(id ? id : "");
    json_decref(m);
    return copy;
}

/* An answer's status and message, checked. */
static void expect_refused(answer a, long status, const char *needle, const char *what)
{
    const char *msg = json_string_value(json_object_get(a.doc, "message"));
    if (a.status != status || msg == NULL || strstr(msg, needle) == NULL)
        fail_msg("%s: HTTP %ld \"%s\", expected %ld with \"%s\"", what, a.status, msg ? msg : "",
                 status, needle);
    json_decref(a.doc);
}

static bool has_meta(const membership *mb, const char *url)
{
    for (uint32_t i = 0; i < mb->n_meta; i++)
        if (strcmp(mb->meta[i], url) == 0)
            return true;
    return false;
}

/* A router seeded only with a node of a live cluster that hosts no meta
 * replica sees epoch 0; init through it must not build a second cluster. */
static void test_second_init_refused(void **state)
{
    (void)state;
    enum { N = N_NODES + 1 };
    test_node nodes[N];
    const char *seeds[N_NODES];
    unsigned base = free_ports(N * (2 + RAFT_SPAN));
    for (int i = 0; i < N; i++)
        node_up(&nodes[i], (uint64_t)i + 1, base + (unsigned)i * (2 + RAFT_SPAN));
    for (int i = 0; i < N_NODES; i++)
        seeds[i] = nodes[i].rep;
    mg_router_config rc;
    mg_router_config_default(&rc);
    rc.listen_port = 0;
    rc.seeds = seeds;
    rc.n_seeds = N_NODES;
    rc.embed_dim = 32;
    rc.workers = 4;
    mg_router *r, *r2;
    mg_error err = {0};
    if (mg_router_start(&rc, &r, &err) != MG_OK)
        fail_msg("router: %s", err.msg);
    unsigned port = mg_router_port(r);

    json_t *m = expect(http(port, "/admin/init", "{\"groups\":1,\"replicas\":3}"), 200, "init");
    const char *id = json_string_value(json_object_get(m, "cluster"));
    assert_non_null(id);
    assert_int_equal(strlen(id), 36);
    char *cluster = strdup(id);
    json_decref(m);
    for (int i = 0; i < N_NODES; i++) {
        membership mb = node_member(nodes[i].rep, NULL, NULL, 0);
        assert_int_equal(mb.status, MG_OK);
        assert_string_equal(mb.cluster, cluster);
        assert_int_equal(mb.n_meta, 3);
    }
    membership mb = node_member(nodes[N - 1].rep, NULL, NULL, 0);
    assert_string_equal(mb.cluster, ""); /* not a member yet */

    /* add-node claims node 4 with the meta group's nodes as hints. */
    char body[512];
    snprintf(body, sizeof body, "{\"rpc\":\"%s\"}", nodes[N - 1].rep);
    json_decref(expect(http(port, "/admin/nodes", body), 200, "add-node"));
    mb = node_member(nodes[N - 1].rep, NULL, NULL, 0);
    assert_string_equal(mb.cluster, cluster);
    assert_int_equal(mb.n_meta, 3);
    for (int i = 0; i < N_NODES; i++)
        assert_true(has_meta(&mb, nodes[i].rep));
    assert_int_equal(mb.n_groups, 0);
    json_int_t epoch = map_epoch(port);

    /* A second router whose only seed is node 4: it finds the map through
     * node 4's meta hints (router/client.h "Finding the cluster")... */
    const char *seeds2[] = {nodes[N - 1].rep};
    rc.seeds = seeds2;
    rc.n_seeds = 1;
    if (mg_router_start(&rc, &r2, &err) != MG_OK)
        fail_msg("router 2: %s", err.msg);
    unsigned port2 = mg_router_port(r2);
    assert_int_equal(map_epoch(port2), epoch);
    /* ...and its init is refused before anything is created. */
    char needle[128];
    snprintf(needle, sizeof needle, "cluster already initialized");
    expect_refused(http(port2, "/admin/init", "{\"groups\":1,\"replicas\":1}"), 409, needle,
                   "second init over node 4");
    snprintf(body, sizeof body, "{\"groups\":2,\"replicas\":1,\"nodes\":[\"%s\"]}",
             nodes[N - 1].rep);
    expect_refused(http(port2, "/admin/init", body), 409, needle, "second init with nodes");
    assert_int_equal(mg_node_n_groups(nodes[N - 1].node), 0);
    mb = node_member(nodes[N - 1].rep, NULL, NULL, 0);
    assert_string_equal(mb.cluster, cluster);
    assert_int_equal(mb.n_groups, 0);
    assert_int_equal(map_epoch(port), epoch);
    char *now = map_cluster(port);
    assert_string_equal(now, cluster);
    free(now);
    wait_healthy(port);

    /* Moving a meta replica to node 4 updates every node's hints. */
    snprintf(body, sizeof body, "{\"group\":0,\"from\":1,\"to\":%d}", N);
    json_decref(expect(http(port, "/admin/move-replica", body), 200, "move group 0"));
    for (int i = 1; i < N; i++) {
        mb = node_member(nodes[i].rep, NULL, NULL, 0);
        assert_string_equal(mb.cluster, cluster);
        assert_int_equal(mb.n_meta, 3);
        assert_true(has_meta(&mb, nodes[N - 1].rep));
        assert_false(has_meta(&mb, nodes[0].rep));
    }
    /* Router 2 now finds the map through node 4: init is "already done". */
    expect_refused(http(port2, "/admin/init", "{\"groups\":1,\"replicas\":1}"), 409,
                   "already initialized", "init after group 0 moved to node 4");

    free(cluster);
    mg_router_stop(r2);
    mg_router_stop(r);
    for (int k = 0; k < N; k++)
        node_down(&nodes[k]);
}

/* Init refuses nodes that host replicas or belong to a cluster whose meta
 * group is elsewhere, and resumes an init that stopped after claiming. */
static void test_init_refusals_and_resume(void **state)
{
    (void)state;
    test_node nodes[N_NODES];
    const char *seeds[N_NODES];
    unsigned base = free_ports(N_NODES * (2 + RAFT_SPAN));
    for (int i = 0; i < N_NODES; i++) {
        node_up(&nodes[i], (uint64_t)i + 1, base + (unsigned)i * (2 + RAFT_SPAN));
        seeds[i] = nodes[i].rep;
    }
    mg_router_config rc;
    mg_router_config_default(&rc);
    rc.listen_port = 0;
    rc.seeds = seeds;
    rc.n_seeds = N_NODES;
    rc.embed_dim = 32;
    rc.workers = 4;
    mg_router *r;
    mg_error err = {0};
    if (mg_router_start(&rc, &r, &err) != MG_OK)
        fail_msg("router: %s", err.msg);
    unsigned port = mg_router_port(r);
    const char *init = "{\"groups\":1,\"replicas\":3}";

    /* Node 3 hosts a replica (opened without a cluster): refused. */
    msgpack_sbuffer sb;
    msgpack_packer pk;
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%u", base + 2 * (2 + RAFT_SPAN) + 2 + 7);
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 3);
    mg_mp_pack_cstr(&pk, "replica");
    msgpack_pack_uint64(&pk, 3);
    mg_mp_pack_cstr(&pk, "address");
    mg_mp_pack_cstr(&pk, addr);
    mg_mp_pack_cstr(&pk, "bootstrap");
    msgpack_pack_array(&pk, 1);
    msgpack_pack_map(&pk, 2);
    mg_mp_pack_cstr(&pk, "id");
    msgpack_pack_uint64(&pk, 3);
    mg_mp_pack_cstr(&pk, "address");
    mg_mp_pack_cstr(&pk, addr);
    membership mb;
    node_call(nodes[2].rep, MG_OP_GROUP_OPEN, 7, &sb, &mb);
    msgpack_sbuffer_destroy(&sb);
    assert_int_equal(mb.status, MG_OK);
    expect_refused(http(port, "/admin/init", init), 409, "node 3 already hosts replicas (groups 7)",
                   "init over a node hosting a replica");
    for (int i = 0; i < N_NODES; i++) {
        mb = node_member(nodes[i].rep, NULL, NULL, 0);
        assert_string_equal(mb.cluster, "");
        assert_int_equal(mb.n_groups, i == 2 ? 1 : 0);
    }
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 1);
    mg_mp_pack_cstr(&pk, "destroy");
    msgpack_pack_true(&pk);
    node_call(nodes[2].rep, MG_OP_GROUP_CLOSE, 7, &sb, &mb);
    msgpack_sbuffer_destroy(&sb);
    assert_int_equal(mb.status, MG_OK);

    /* Node 1 claimed by a cluster whose meta group is elsewhere: refused. */
    const char *id = "6f1c2d3e-4b5a-4c6d-8e7f-0a1b2c3d4e5f";
    const char *elsewhere[] = {"tcp://127.0.0.1:1"};
    assert_int_equal(node_member(nodes[0].rep, id, elsewhere, 1).status, MG_OK);
    char needle[160];
    snprintf(needle, sizeof needle, "node 1 already belongs to cluster %s", id);
    expect_refused(http(port, "/admin/init", init), 409, needle, "init over a foreign node");
    assert_int_equal(map_epoch(port), 0);
    assert_string_equal(node_member(nodes[1].rep, NULL, NULL, 0).cluster, "");

    /* An init that stopped after claiming nodes 1 and 2 (hints: the meta
     * group's nodes, all three): a rerun adopts the id and finishes. */
    assert_int_equal(node_member(nodes[0].rep, id, seeds, N_NODES).status, MG_OK);
    assert_int_equal(node_member(nodes[1].rep, id, seeds, N_NODES).status, MG_OK);
    json_t *m = expect(http(port, "/admin/init", init), 200, "init resumed");
    assert_string_equal(json_string_value(json_object_get(m, "cluster")), id);
    assert_int_equal(jint(m, "epoch"), 1);
    json_decref(m);
    for (int i = 0; i < N_NODES; i++) {
        mb = node_member(nodes[i].rep, NULL, NULL, 0);
        assert_string_equal(mb.cluster, id);
        assert_int_equal(mb.n_groups, 2);
    }
    wait_healthy(port);

    mg_router_stop(r);
    for (int k = 0; k < N_NODES; k++)
        node_down(&nodes[k]);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_admin),
                                       cmocka_unit_test(test_leaders_and_dead_nodes),
                                       cmocka_unit_test(test_second_init_refused),
                                       cmocka_unit_test(test_init_refusals_and_resume)};
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
