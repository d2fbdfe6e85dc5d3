/*
 * The router's /metrics and /admin/stats over two nodes, in one process:
 * node 1 hosts groups 0 and 1, node 2 group 2; a router in front of both,
 * which knows the cluster map from its map cache (the meta group holds none:
 * no `ctl init` here) and node 1 as its seed.
 * Every node's series appear labelled by node, /admin/stats merges them
 * (the merged count of an op is the sum of the nodes' counts), and a node
 * that stops reads memgrid_node_up 0 and "up": false while the rest still
 * answers.
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

typedef struct test_node {
    char dir[64];
    char rep[64], resp[64];
    unsigned raft_port; /* group G listens on raft_port + G */
    char addrs[2][MG_ADDRESS_MAX];
    mg_group_peer peers[2];
    mg_node_group groups[2];
    mg_node *node;
} test_node;

static void node_up(test_node *t, uint64_t id, const uint64_t *groups, size_t n)
{
    snprintf(t->dir, sizeof t->dir, "/tmp/mg-rstats-XXXXXX");
    assert_non_null(mkdtemp(t->dir));
    snprintf(t->rep, sizeof t->rep, "inproc://rstats-rep-%llu", (unsigned long long)id);
    snprintf(t->resp, sizeof t->resp, "inproc://rstats-resp-%llu", (unsigned long long)id);
    t->raft_port = free_run(3);
    for (size_t i = 0; i < n; i++) {
        snprintf(t->addrs[i], MG_ADDRESS_MAX, "127.0.0.1:%u",
                 t->raft_port + (unsigned)groups[i]);
        t->peers[i].id = id; /* raft id = node id */
        snprintf(t->peers[i].address, MG_ADDRESS_MAX, "%s", t->addrs[i]);
        t->groups[i] = (mg_node_group){.group_id = groups[i],
                                       .replica_id = id,
                                       .address = t->addrs[i],
                                       .bootstrap = &t->peers[i],
                                       .n_bootstrap = 1};
    }
    mg_node_config cfg = {.data_dir = t->dir,
                          .node_id = id,
                          .rep_url = t->rep,
                          .respondent_url = t->resp,
                          .groups = t->groups,
                          .n_groups = n};
    mg_error err = {0};
    if (mg_node_start(&cfg, &t->node, &err) != MG_OK ||
        mg_node_wait_ready(t->node, 10000, &err) != MG_OK)
        fail_msg("node %llu: %s", (unsigned long long)id, err.msg);
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
 * the first half of the slots to group 1, the rest to group 2; saved where
 * the router loads its map cache from. */
static void write_map(const test_node *n1, const test_node *n2, const char *path, mg_cmap *m)
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
    for (unsigned s = 0; s < MG_SLOTS; s++)
        m->slot_group[s] = s < MG_SLOTS / 2 ? 1 : 2;
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

static double op_row(const json_t *stats, const char *op)
{
    size_t i;
    const json_t *row;
    json_array_foreach(json_object_get(json_object_get(stats, "data"), "ops"), i, row)
    {
        if (strcmp(json_string_value(json_object_get(row, "op")), op) == 0)
            return json_number_value(json_object_get(row, "count"));
    }
    return 0;
}

static void test_two_nodes(void **state)
{
    (void)state;
    test_node n1, n2;
    node_up(&n1, 1, (const uint64_t[]){0, 1}, 2);
    node_up(&n2, 2, (const uint64_t[]){2}, 1);
    char cache[96];
    snprintf(cache, sizeof cache, "%s/map.cache", n1.dir);
    mg_cmap *map = malloc(sizeof *map);
    assert_non_null(map);
    write_map(&n1, &n2, cache, map);
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

    char a[32], b[32], body[256];
    cube_in_group(map, 1, a, sizeof a);
    cube_in_group(map, 2, b, sizeof b);
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
    assert_true(prom_sum(&doc, "memgrid_node_groups", L("node", "1"), NULL) == 2);
    assert_true(prom_sum(&doc, "memgrid_node_groups", L("node", "2"), NULL) == 1);
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
    assert_int_equal(json_integer_value(json_object_get(cl, "leaders")), 3);
    assert_true(op_row(st, "write") == w1 + w2);
    assert_true(op_row(st, "search") == s1 + s2);
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
    assert_true(prom_sum(&doc, "memgrid_node_groups", L("node", "1"), NULL) == 2);
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
