/*
 * The router's /metrics and /admin/stats over two nodes, in one process:
 * node 1 hosts groups 0 and 1, node 2 group 2, and both host group 3 (two
 * replicas); a router in front of both, which knows the cluster map from its
 * map cache (the meta group holds none: no `ctl init` here) and node 1 as its
 * seed. Every node's series appear labelled by node, /admin/stats merges them
 * (the merged count of an op is the sum of the nodes' counts), the map lists
 * group 3's follower first so that the router's first request there is
 * redirected (ENOTLEADER): a "redirect" of its op row, not an "error"; the
 * prefix routes are labelled with their parameter; and a node that stops
 * reads memgrid_node_up 0 and "up": false while the rest still answers.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "lib/clock.h"
#include "lib/cmap.h"
#include "node/node.h"
#include "router/router.h"
#include "tests/fixtures/prom_text.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <ftw.h>
#include <jansson.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <xxhash.h>

#define L(...) ((const char *const[]){__VA_ARGS__, NULL})

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static unsigned free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t len = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &len);
    close(fd);
    return ntohs(a.sin_port);
}

/* A loopback port p with p .. p + n - 1 free. */
static unsigned free_run(unsigned n)
{
    for (;;) {
        unsigned p = free_port();
        bool ok = p + n - 1 <= 65535;
        for (unsigned i = 1; ok && i < n; i++) {
            int fd = socket(AF_INET, SOCK_STREAM, 0);
            struct sockaddr_in a = {.sin_family = AF_INET,
                                    .sin_port = htons((uint16_t)(p + i)),
                                    .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
            ok = bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
            close(fd);
        }
        if (ok)
            return p;
    }
}

#define NODE_GROUPS_MAX 3
#define GROUP_REPLICAS_MAX 2

typedef struct test_node {
    uint64_t id;
    char dir[64];
    char rep[64], resp[64];
    unsigned raft_port; /* group G listens on raft_port + G (G <= 3) */
    char addrs[NODE_GROUPS_MAX][MG_ADDRESS_MAX];
    mg_group_peer peers[NODE_GROUPS_MAX][GROUP_REPLICAS_MAX];
    mg_node_group groups[NODE_GROUPS_MAX];
    size_t n_groups;
    mg_node *node;
} test_node;

/* Picks the node's directory, URLs and raft ports (apart from `other`'s,
 * when given: neither node listens yet). */
static void node_plan(test_node *t, uint64_t id, const test_node *other)
{
    memset(t, 0, sizeof *t);
    t->id = id;
    snprintf(t->dir, sizeof t->dir, "/tmp/mg-rstats-XXXXXX");
    assert_non_null(mkdtemp(t->dir));
    snprintf(t->rep, sizeof t->rep, "inproc://rstats-rep-%llu", (unsigned long long)id);
    snprintf(t->resp, sizeof t->resp, "inproc://rstats-resp-%llu", (unsigned long long)id);
    do
        t->raft_port = free_run(4);
    while (other != NULL && t->raft_port + 4 > other->raft_port &&
           other->raft_port + 4 > t->raft_port);
}

/* Hosts `group` on t with the replicas (t among them) as its bootstrap. */
static void node_host(test_node *t, uint64_t group, const test_node *const *replicas, size_t n)
{
    size_t i = t->n_groups++;
    assert_true(i < NODE_GROUPS_MAX && n <= GROUP_REPLICAS_MAX);
    snprintf(t->addrs[i], MG_ADDRESS_MAX, "127.0.0.1:%u", t->raft_port + (unsigned)group);
    for (size_t k = 0; k < n; k++) {
        t->peers[i][k].id = replicas[k]->id; /* raft id = node id */
        snprintf(t->peers[i][k].address, MG_ADDRESS_MAX, "127.0.0.1:%u",
                 replicas[k]->raft_port + (unsigned)group);
    }
    t->groups[i] = (mg_node_group){.group_id = group,
                                   .replica_id = t->id,
                                   .address = t->addrs[i],
                                   .bootstrap = t->peers[i],
                                   .n_bootstrap = n};
}

static void node_start(test_node *t)
{
    mg_node_config cfg = {.data_dir = t->dir,
                          .node_id = t->id,
                          .rep_url = t->rep,
                          .respondent_url = t->resp,
                          .groups = t->groups,
                          .n_groups = t->n_groups};
    mg_error err = {0};
    if (mg_node_start(&cfg, &t->node, &err) != MG_OK)
        fail_msg("node %llu: %s", (unsigned long long)t->id, err.msg);
}

static void node_wait(test_node *t)
{
    mg_error err = {0};
    if (mg_node_wait_ready(t->node, 10000, &err) != MG_OK)
        fail_msg("node %llu: %s", (unsigned long long)t->id, err.msg);
}

/* The node id of the leader of a hosted group, as t knows it. */
static uint64_t group_leader(test_node *t, uint64_t group)
{
    mg_node_group_status st;
    for (size_t i = 0; mg_node_group_status_at(t->node, i, &st); i++)
        if (st.group_id == group)
            return st.leader_id;
    fail_msg("group %llu is not hosted on node %llu", (unsigned long long)group,
             (unsigned long long)t->id);
    return 0;
}

static void node_down(test_node *t)
{
    mg_node_stop(t->node);
    t->node = NULL;
    nftw(t->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---- HTTP --------------------------------------------------------------- */

typedef struct answer {
    long status;
    char *body;
    size_t len;
} answer;

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
    answer *a = arg;
    a->body = realloc(a->body, a->len + size * n + 1);
    memcpy(a->body + a->len, p, size * n);
    a->len += size * n;
    a->body[a->len] = '\0';
    return size * n;
}

static answer http(unsigned port, const char *path, const char *post)
{
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%u%s", port, path);
    answer a = {0};
    CURL *c = curl_easy_init();
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &a);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
    if (post != NULL)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, post);
    assert_int_equal(curl_easy_perform(c), CURLE_OK);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &a.status);
    curl_easy_cleanup(c);
    return a;
}

static void scrape(unsigned port, prom_doc *doc)
{
    answer a = http(port, "/metrics", NULL);
    assert_int_equal(a.status, 200);
    char why[256];
    if (prom_parse(a.body, a.len, doc, why, sizeof why) != 0)
        fail_msg("/metrics: %s", why);
    free(a.body);
}

static json_t *admin_stats(unsigned port)
{
    answer a = http(port, "/admin/stats", NULL);
    assert_int_equal(a.status, 200);
    json_error_t e;
    json_t *doc = json_loads(a.body, 0, &e);
    assert_non_null(doc);
    free(a.body);
    return doc;
}

/* A cube id whose slot falls in data group `group` of the map. */
static void cube_in_group(const mg_cmap *m, uint64_t group, char *out, size_t cap)
{
    for (unsigned i = 0;; i++) {
        snprintf(out, cap, "rstats-%u", i);
        if (mg_cmap_cube_group(m, out, strlen(out)) == group)
            return;
    }
}

/* The map of the two nodes: group 0 and 1 on node 1, group 2 on node 2,
 * group 3 on both (the one that is not its leader first), the slots in
 * thirds to groups 1, 2 and 3; saved where the router loads its map cache
 * from. */
static void write_map(const test_node *n1, const test_node *n2, uint64_t leader3, const char *path,
                      mg_cmap *m)
{
    mg_error err = {0};
    mg_cmap_init(m);
    const test_node *tn[2] = {n1, n2};
    for (int i = 0; i < 2; i++) {
        mg_cmap_node node = {.id = (uint64_t)i + 1, .raft_port = tn[i]->raft_port};
        snprintf(node.rpc, sizeof node.rpc, "%s", tn[i]->rep);
        snprintf(node.survey, sizeof node.survey, "%s", tn[i]->resp);
        snprintf(node.raft_host, sizeof node.raft_host, "127.0.0.1");
        assert_int_equal(mg_cmap_add_node(m, &node, &err), MG_OK);
    }
    assert_int_equal(mg_cmap_add_group(m, 0, (const uint64_t[]){1}, 1, &err), MG_OK);
    assert_int_equal(mg_cmap_add_group(m, 1, (const uint64_t[]){1}, 1, &err), MG_OK);
    assert_int_equal(mg_cmap_add_group(m, 2, (const uint64_t[]){2}, 1, &err), MG_OK);
    const uint64_t follower_first[] = {leader3 == 1 ? 2 : 1, leader3};
    assert_int_equal(mg_cmap_add_group(m, 3, follower_first, 2, &err), MG_OK);
    for (unsigned s = 0; s < MG_SLOTS; s++)
        m->slot_group[s] = s < MG_SLOTS / 3 ? 1 : s < 2 * MG_SLOTS / 3 ? 2 : 3;
    m->epoch = 1;
    if (mg_cmap_check(m, &err) != MG_OK)
        fail_msg("map: %s", err.msg);
    void *buf;
    size_t len;
    assert_int_equal(mg_cmap_encode(m, &buf, &len, &err), MG_OK);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(buf, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
    free(buf);
}

/* A figure ("count", "errors", "redirects") of an op's row; 0 without one. */
static double op_figure(const json_t *stats, const char *op, const char *key)
{
    size_t i;
    const json_t *row;
    json_array_foreach(json_object_get(json_object_get(stats, "data"), "ops"), i, row)
    {
        if (strcmp(json_string_value(json_object_get(row, "op")), op) == 0)
            return json_number_value(json_object_get(row, key));
    }
    return 0;
}

static double op_row(const json_t *stats, const char *op)
{
    return op_figure(stats, op, "count");
}

/* The row of an endpoint in /admin/stats, or NULL. */
static const json_t *endpoint_row(const json_t *stats, const char *endpoint)
{
    size_t i;
    const json_t *row;
    json_array_foreach(json_object_get(json_object_get(stats, "data"), "endpoints"), i, row)
    {
        if (strcmp(json_string_value(json_object_get(row, "endpoint")), endpoint) == 0)
            return row;
    }
    return NULL;
}

/* An op's replies in a scrape, all nodes: those the router re-sends by
 * design (*redirects) and the other non-OK ones (*errors). */
static void scrape_op_replies(const prom_doc *doc, const char *op, double *errors,
                              double *redirects)
{
    *errors = *redirects = 0;
    for (size_t i = 0; i < doc->n; i++) {
        const prom_sample *s = &doc->samples[i];
        const char *o = prom_label(s, "op"), *status = prom_label(s, "status");
        if (strcmp(s->name, "memgrid_node_requests_total") != 0 || o == NULL ||
            strcmp(o, op) != 0 || status == NULL || strcmp(status, "OK") == 0)
            continue;
        if (strcmp(status, "ENOTLEADER") == 0 || strcmp(status, "EWRONGGROUP") == 0 ||
            strcmp(status, "EBUSY") == 0)
            *redirects += s->value;
        else
            *errors += s->value;
    }
}

static void test_two_nodes(void **state)
{
    (void)state;
    test_node n1, n2;
    node_plan(&n1, 1, NULL);
    node_plan(&n2, 2, &n1);
    const test_node *both[] = {&n1, &n2};
    node_host(&n1, 0, both, 1);
    node_host(&n1, 1, both, 1);
    node_host(&n1, 3, both, 2);
    node_host(&n2, 2, both + 1, 1);
    node_host(&n2, 3, both, 2);
    node_start(&n1);
    node_start(&n2);
    node_wait(&n1);
    node_wait(&n2);
    uint64_t leader3 = group_leader(&n1, 3);
    assert_true(leader3 == 1 || leader3 == 2);
    char cache[96];
    snprintf(cache, sizeof cache, "%s/map.cache", n1.dir);
    mg_cmap *map = malloc(sizeof *map);
    assert_non_null(map);
    write_map(&n1, &n2, leader3, cache, map);
    const char *seeds[] = {n1.rep};
    mg_router_config rc;
    mg_router_config_default(&rc);
    rc.listen_port = 0;
    rc.seeds = seeds;
    rc.n_seeds = 1;
    rc.map_cache = cache;
    rc.embed_dim = 32;
    rc.workers = 4;
    mg_router *r;
    mg_error err = {0};
    if (mg_router_start(&rc, &r, &err) != MG_OK)
        fail_msg("router: %s", err.msg);
    unsigned port = mg_router_port(r);
    assert_int_equal(mg_router_epoch(r), 1);

    char a[32], b[32], c3[32], body[256];
    cube_in_group(map, 1, a, sizeof a);
    cube_in_group(map, 2, b, sizeof b);
    cube_in_group(map, 3, c3, sizeof c3);
    free(map);
    const char *cubes[] = {a, b};
    for (int i = 0; i < 2; i++) {
        snprintf(body, sizeof body,
                 "{\"user_id\":\"%s\",\"memory_content\":\"the cat sat on the mat\"}", cubes[i]);
        answer ans = http(port, "/product/add", body);
        assert_int_equal(ans.status, 200);
        free(ans.body);
        snprintf(body, sizeof body, "{\"user_id\":\"%s\",\"query\":\"cat\"}", cubes[i]);
        ans = http(port, "/product/search", body);
        assert_int_equal(ans.status, 200);
        free(ans.body);
    }

    /* the read options of a search */
    const char *modes[] = {"leader", "strong", "follower"};
    for (int i = 0; i < 3; i++) {
        snprintf(body, sizeof body,
                 "{\"user_id\":\"%s\",\"query\":\"cat\",\"relativity\":0,\"consistency\":\"%s\"}",
                 b, modes[i]);
        answer ans = http(port, "/product/search", body);
        assert_int_equal(ans.status, 200);
        json_t *doc = json_loads(ans.body, 0, NULL);
        assert_non_null(doc);
        const json_t *data = json_object_get(doc, "data");
        const json_t *text = json_array_get(json_object_get(data, "text_mem"), 0);
        assert_int_equal(json_array_size(json_object_get(text, "memories")), 1);
        assert_int_equal(json_is_true(json_object_get(data, "follower_read")), i == 2);
        json_decref(doc);
        free(ans.body);
    }
    snprintf(body, sizeof body,
             "{\"user_id\":\"%s\",\"query\":\"cat\",\"consistency\":\"eventual\"}", b);
    answer bad = http(port, "/product/search", body);
    assert_int_equal(bad.status, 422);
    assert_non_null(strstr(bad.body, "consistency"));
    free(bad.body);

    /* both nodes in /metrics, each with its own series */
    prom_doc doc;
    scrape(port, &doc);
    assert_true(prom_sum(&doc, "memgrid_node_up", L("node", "1"), NULL) == 1);
    assert_true(prom_sum(&doc, "memgrid_node_up", L("node", "2"), NULL) == 1);
    assert_true(prom_sum(&doc, "memgrid_node_groups", L("node", "1"), NULL) == 3);
    assert_true(prom_sum(&doc, "memgrid_node_groups", L("node", "2"), NULL) == 2);
    double w1 =
        prom_sum(&doc, "memgrid_node_op_seconds_count", L("node", "1", "op", "write"), NULL);
    double w2 =
        prom_sum(&doc, "memgrid_node_op_seconds_count", L("node", "2", "op", "write"), NULL);
    double s1 =
        prom_sum(&doc, "memgrid_node_op_seconds_count", L("node", "1", "op", "search"), NULL);
    double s2 =
        prom_sum(&doc, "memgrid_node_op_seconds_count", L("node", "2", "op", "search"), NULL);
    assert_true(w1 >= 1 && w2 >= 1); /* each add went to its own group's node */
    assert_true(s1 >= 1 && s2 >= 1);
    prom_doc_free(&doc);

    /* /admin/stats merges them: no write or search happened since */
    json_t *st = admin_stats(port);
    const json_t *cl = json_object_get(json_object_get(st, "data"), "cluster");
    assert_int_equal(json_integer_value(json_object_get(cl, "nodes_up")), 2);
    assert_int_equal(json_integer_value(json_object_get(cl, "leaders")), 4);
    assert_true(op_row(st, "write") == w1 + w2);
    assert_true(op_row(st, "search") == s1 + s2);
    /* groups 1 and 2 have one replica each: nothing was redirected yet */
    assert_true(op_figure(st, "write", "redirects") == 0);
    assert_true(op_figure(st, "cube_get", "redirects") == 0);
    json_decref(st);

    /* an add to group 3 goes to its follower first (listed first in the
     * map): ENOTLEADER, re-sent to the leader, and the add succeeds */
    snprintf(body, sizeof body,
             "{\"user_id\":\"%s\",\"memory_content\":\"the dog sat on the log\"}", c3);
    answer ans = http(port, "/product/add", body);
    assert_int_equal(ans.status, 200);
    free(ans.body);
    scrape(port, &doc);
    assert_true(prom_sum(&doc, "memgrid_node_requests_total",
                         L("node", leader3 == 1 ? "2" : "1", "status", "ENOTLEADER"), NULL) >= 1);
    st = admin_stats(port);
    double redirected = 0;
    const char *data_ops[] = {"cube_get", "write"};
    for (int i = 0; i < 2; i++) {
        /* the row splits the op's non-OK replies as the nodes counted them */
        double errors, redirects;
        scrape_op_replies(&doc, data_ops[i], &errors, &redirects);
        if (op_figure(st, data_ops[i], "errors") != errors ||
            op_figure(st, data_ops[i], "redirects") != redirects)
            fail_msg("%s: errors %g redirects %g in /admin/stats, %g and %g in /metrics",
                     data_ops[i], op_figure(st, data_ops[i], "errors"),
                     op_figure(st, data_ops[i], "redirects"), errors, redirects);
        redirected += redirects;
    }
    assert_true(redirected >= 1);
    /* a redirect is not an error of the write (every write succeeded) */
    assert_true(op_figure(st, "write", "errors") == 0);
    prom_doc_free(&doc);
    json_decref(st);

    /* prefix routes are labelled with their own parameter */
    snprintf(body, sizeof body, "/admin/slots/%s", c3);
    ans = http(port, body, NULL);
    assert_int_equal(ans.status, 200);
    free(ans.body);
    scrape(port, &doc);
    assert_true(prom_sum(&doc, "memgrid_http_request_seconds_count",
                         L("endpoint", "/admin/slots/{cube_id}"), NULL) == 1);
    size_t matches;
    prom_sum(&doc, "memgrid_http_requests_total",
             L("endpoint", "/product/get_memory/{memory_id}", "status", "200"), &matches);
    assert_int_equal(matches, 1);
    prom_sum(&doc, "memgrid_http_requests_total", L("endpoint", "/admin/slots/{memory_id}"),
             &matches);
    assert_int_equal(matches, 0);
    prom_doc_free(&doc);
    st = admin_stats(port);
    const json_t *slots_row = endpoint_row(st, "/admin/slots/{cube_id}");
    assert_non_null(slots_row);
    assert_int_equal(json_integer_value(json_object_get(slots_row, "count")), 1);
    assert_null(json_object_get(slots_row, "redirects")); /* an ops figure only */
    json_decref(st);

    /* node 2 goes away: the rest still answers, and says so */
    node_down(&n2);
    uint64_t t0 = mg_clock_mono_ns();
    scrape(port, &doc);
    assert_true(prom_sum(&doc, "memgrid_node_up", L("node", "1"), NULL) == 1);
    assert_true(prom_sum(&doc, "memgrid_node_up", L("node", "2"), NULL) == 0);
    size_t n;
    prom_sum(&doc, "memgrid_node_groups", L("node", "2"), &n);
    assert_int_equal(n, 0);
    assert_true(prom_sum(&doc, "memgrid_node_groups", L("node", "1"), NULL) == 3);
    prom_doc_free(&doc);
    assert_true(mg_clock_mono_ns() - t0 < 10000000000ull); /* bounded by the STATS timeout */
    st = admin_stats(port);
    const json_t *data = json_object_get(st, "data");
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(data, "cluster"), "nodes_up")), 1);
    const json_t *down = json_array_get(json_object_get(data, "nodes"), 1);
    assert_false(json_is_true(json_object_get(down, "up")));
    assert_non_null(json_string_value(json_object_get(down, "error")));
    assert_non_null(strstr(json_string_value(json_object_get(st, "message")), "did not answer"));
    json_decref(st);

    mg_router_stop(r);
    node_down(&n1);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_ALL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_two_nodes),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
