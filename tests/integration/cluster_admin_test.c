/*
 * Cluster membership and rebalancing with writes running (real processes:
 * 3 `memgrid node`s made into a cluster by POST /admin/init with 3 data
 * groups x 3 replicas, `memgrid router`s, `memgrid ctl`).
 *
 * While 3 writers add memories to 32 cubes through router 1 (recording every
 * acknowledged id):
 *  (a) a 4th node is started and added (`ctl add-node --rpc`);
 *  (b) `ctl move-replica --group 1 --from 1 --to 4`;
 *  (c) `ctl rebalance --new-group`: group 4 is created on the least-loaded
 *      nodes and receives an even share of the slots.
 * Then: every acknowledged id is readable, each cube counts exactly its
 * acknowledged adds (plus at most its failed ones, which may have been
 * applied after their answer timed out), `ctl status` is healthy with group
 * 1 on nodes {2,3,4} (node 1's files of it destroyed), group 4 owns 1024 slots and holds the cubes
 * (and their memories) of those slots, and searches over cubes of old and new groups return the
 * acknowledged memories. (d) a second router started with --map-cache before (a)-(c) and stopped is
 * restarted with the same (stale) cache: its first requests for cubes of moved slots succeed, and
 * its map epoch then equals router 1's (as does its cache file). A third router, left running idle
 * through (a)-(c) with the old map in memory, does the same. (e) `ctl remove-node --id 4` (writers
 * running again) moves node 4's replicas away: status healthy without node 4, data intact, and the
 *      cluster keeps working once node 4's process is gone.
 */
#include "cluster_harness.h"

#include "lib/cmap.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#define N_CUBES 32
#define N_WRITERS 3
#define N_DATA_GROUPS 3

static cluster cl;
static serve r2; /* restarted on its map cache file */
static serve r3; /* left running, idle, while the map changes */
static char cache_path[320];
static double t_begin;

/* ---- the writers ---------------------------------------------------------- */

typedef struct ack {
    char id[40];
    int cube;
    int writer;
    int k;
} ack;

typedef struct writer {
    int idx;
    pthread_t th;
    ack *acks;
    size_t n, cap;
    int k; /* next note number (kept across runs) */
    int failed;
    int failed_cube[N_CUBES]; /* failed adds per cube: may have been applied */
    double max_ms;
} writer;

static atomic_bool stop_load;
static bool writers_running; /* so that teardown stops them after a failure */
static writer writers[N_WRITERS];

/* A word of its own for every (writer, note), so that a memory's exact text
 * finds it first in a search. */
static void note_word(int w, int k, char *out, size_t cap)
{
    static const char *const syl[] = {"ka", "ri", "mo", "tu", "ne", "sa", "lo", "vi",
                                      "pe", "da", "gu", "ho", "zi", "fa", "be", "wo"};
    size_t len = (size_t)snprintf(out, cap, "%s", syl[w % 16]);
    int v = k;
    do {
        len += (size_t)snprintf(out + len, cap - len, "%s", syl[v % 16]);
        v /= 16;
    } while (v > 0 && len + 3 < cap);
}

static void note_text(int w, int k, int cube, char *out, size_t cap)
{
    char word[64];
    note_word(w, k, word, sizeof word);
    snprintf(out, cap, "Rebalance drill %s: writer %d wrote note %d into cube %d", word, w, k,
             cube);
}

static void cube_id(int i, char *out, size_t cap)
{
    snprintf(out, cap, "ad-cube-%02d", i);
}

static void record_ack(writer *w, const char *id, int cube, int k)
{
    if (w->n == w->cap) {
        w->cap = w->cap ? 2 * w->cap : 1024;
        w->acks = realloc(w->acks, w->cap * sizeof *w->acks);
        if (w->acks == NULL)
            abort();
    }
    snprintf(w->acks[w->n].id, sizeof w->acks[w->n].id, "%s", id);
    w->acks[w->n].cube = cube;
    w->acks[w->n].writer = w->idx;
    w->acks[w->n].k = k;
    w->n++;
}

/* One add of note k of writer w to cube through router s; true when
 * acknowledged (recorded in w). */
static bool add_note(CURL *h, const serve *s, writer *w, int cube, int k)
{
    char cid[32], text[200], body[512];
    cube_id(cube, cid, sizeof cid);
    note_text(w->idx, k, cube, text, sizeof text);
    snprintf(body, sizeof body,
             "{\"user_id\":\"u\",\"writable_cube_ids\":[\"%s\"],\"memory_content\":\"%s\"}", cid,
             text);
    http_res r;
    double t0 = cluster_now_ms();
    int rc = http_do(h, s, "POST", "/product/add", body, strlen(body), &r);
    double ms = cluster_now_ms() - t0;
    if (ms > w->max_ms)
        w->max_ms = ms;
    json_t *data = rc == 0 && r.status == 200 ? json_object_get(r.json, "data") : NULL;
    const char *id = json_string_value(json_object_get(json_array_get(data, 0), "memory_id"));
    bool ok = json_array_size(data) == 1 && id != NULL;
    if (ok) {
        record_ack(w, id, cube, k);
    } else {
        w->failed++;
        w->failed_cube[cube]++;
        if (w->failed <= 5)
            fprintf(stderr, "writer %d: add to %s failed after %.0f ms: %ld %.200s\n", w->idx, cid,
                    ms, rc == 0 ? r.status : -1L, rc == 0 && r.body ? r.body : "");
    }
    http_res_clear(&r);
    return ok;
}

static void *writer_main(void *arg)
{
    writer *w = arg;
    CURL *h = curl_easy_init();
    while (!atomic_load(&stop_load)) {
        int k = w->k++;
        add_note(h, &cl.router, w, (k * N_WRITERS + w->idx) % N_CUBES, k);
        usleep(3000);
    }
    curl_easy_cleanup(h);
    return NULL;
}

static void writers_start(void)
{
    atomic_store(&stop_load, false);
    for (int i = 0; i < N_WRITERS; i++) {
        writers[i].idx = i;
        if (pthread_create(&writers[i].th, NULL, writer_main, &writers[i]) != 0)
            abort();
    }
    writers_running = true;
}

static void writers_stop(void)
{
    atomic_store(&stop_load, true);
    writers_running = false;
    size_t n = 0;
    int failed = 0;
    double slowest = 0;
    for (int i = 0; i < N_WRITERS; i++) {
        pthread_join(writers[i].th, NULL);
        n += writers[i].n;
        failed += writers[i].failed;
        if (writers[i].max_ms > slowest)
            slowest = writers[i].max_ms;
    }
    fprintf(stderr,
            "[%6.1f s] writers stopped: %zu adds acknowledged, %d failed, slowest %.0f ms\n",
            (cluster_now_ms() - t_begin) / 1e3, n, failed, slowest);
}

/* ---- checks --------------------------------------------------------------- */

static void phase(const char *what, double t0)
{
    fprintf(stderr, "[%6.1f s] %s (%.0f ms)\n", (cluster_now_ms() - t_begin) / 1e3, what,
            cluster_now_ms() - t0);
}

static void post_ok(const serve *s, const char *path, const char *body)
{
    http_res r;
    int rc = http_post(s, path, body, &r);
    if (rc != 0 || r.status != 200)
        fprintf(stderr, "%s %s -> %ld %s\n", s->base, path, rc == 0 ? r.status : -1L,
                rc == 0 && r.body ? r.body : "");
    assert_int_equal(rc, 0);
    assert_int_equal(r.status, 200);
    http_res_clear(&r);
}

/* The data group a cube lives in, by `ctl slots --cube`. */
static int cube_group(const char *cid)
{
    int rc;
    json_t *d = cluster_ctl_json(&cl.router, &rc, "slots", "--cube", cid, NULL);
    assert_int_equal(rc, 0);
    json_t *cube = json_object_get(d, "cube");
    assert_string_equal(json_string_value(json_object_get(cube, "id")), cid);
    int g = (int)json_integer_value(json_object_get(cube, "group"));
    json_decref(d);
    assert_true(g >= 1);
    return g;
}

/* Every acknowledged id is readable through router s. */
static void check_acked_readable(const serve *s)
{
    size_t checked = 0, total = 0;
    for (int i = 0; i < N_WRITERS; i++) {
        total += writers[i].n;
        for (size_t j = 0; j < writers[i].n; j += 200) {
            size_t m = writers[i].n - j < 200 ? writers[i].n - j : 200;
            json_t *ids = json_array();
            for (size_t k = 0; k < m; k++)
                json_array_append_new(ids, json_string(writers[i].acks[j + k].id));
            json_t *req = json_pack("{s:o}", "memory_ids", ids);
            http_res r;
            assert_int_equal(http_post_json(s, "/product/get_memory_by_ids", req, &r), 0);
            json_decref(req);
            json_t *mems = json_object_get(json_object_get(r.json, "data"), "memories");
            if (r.status != 200 || json_array_size(mems) != m)
                fprintf(stderr, "get_memory_by_ids: %ld, %zu of %zu found: %.300s\n", r.status,
                        json_array_size(mems), m, r.body ? r.body : "");
            assert_int_equal(r.status, 200);
            assert_int_equal(json_array_size(mems), m);
            checked += m;
            http_res_clear(&r);
        }
    }
    assert_int_equal(checked, total);
    assert_true(total > 0);
}

/* The number of memories of cube i (get_memory total_nodes). */
static long cube_count(const serve *s, int i)
{
    char cid[32], body[256];
    cube_id(i, cid, sizeof cid);
    snprintf(body, sizeof body,
             "{\"mem_cube_id\":\"%s\",\"user_id\":\"u\",\"page\":1,\"page_size\":1}", cid);
    http_res r;
    assert_int_equal(http_post(s, "/product/get_memory", body, &r), 0);
    if (r.status != 200)
        fprintf(stderr, "get_memory %s: %ld %.300s\n", cid, r.status, r.body ? r.body : "");
    assert_int_equal(r.status, 200);
    json_t *tm = json_object_get(json_object_get(r.json, "data"), "text_mem");
    json_t *n = json_object_get(json_array_get(tm, 0), "total_nodes");
    assert_true(json_is_integer(n));
    long v = (long)json_integer_value(n);
    http_res_clear(&r);
    return v;
}

/* Each cube holds its acknowledged adds, and at most its failed ones more. */
static long check_counts(const serve *s, long *per_cube)
{
    long acked[N_CUBES] = {0}, failed[N_CUBES] = {0}, total = 0;
    for (int i = 0; i < N_WRITERS; i++) {
        for (size_t j = 0; j < writers[i].n; j++)
            acked[writers[i].acks[j].cube]++;
        for (int c = 0; c < N_CUBES; c++)
            failed[c] += writers[i].failed_cube[c];
    }
    for (int c = 0; c < N_CUBES; c++) {
        long got = cube_count(s, c);
        if (got < acked[c] || got > acked[c] + failed[c])
            fail_msg("cube %d holds %ld memories: %ld acknowledged adds, %ld failed", c, got,
                     acked[c], failed[c]);
        if (per_cube != NULL)
            per_cube[c] = got;
        total += got;
    }
    return total;
}

/* The last acknowledged note of cube c (NULL when none). */
static const ack *last_ack(int c)
{
    const ack *best = NULL;
    for (int i = 0; i < N_WRITERS; i++)
        for (size_t j = 0; j < writers[i].n; j++)
            if (writers[i].acks[j].cube == c)
                best = &writers[i].acks[j];
    return best;
}

/* A search through s over `cubes` with a's exact text finds a's id among
 * the hits of a's cube. */
static void search_finds(const serve *s, const ack *a, const int *cubes, int n_cubes)
{
    char text[200], body[2048];
    note_text(a->writer, a->k, a->cube, text, sizeof text);
    int len =
        snprintf(body, sizeof body,
                 "{\"user_id\":\"u\",\"query\":\"%s\",\"top_k\":5,\"readable_cube_ids\":[", text);
    for (int i = 0; i < n_cubes; i++) {
        char cid[32];
        cube_id(cubes[i], cid, sizeof cid);
        len += snprintf(body + len, sizeof body - (size_t)len, "%s\"%s\"", i ? "," : "", cid);
    }
    snprintf(body + len, sizeof body - (size_t)len, "]}");
    http_res r;
    assert_int_equal(http_post(s, "/product/search", body, &r), 0);
    if (r.status != 200)
        fprintf(stderr, "search: %ld %.300s\n", r.status, r.body ? r.body : "");
    assert_int_equal(r.status, 200);
    bool found = false;
    size_t i, j;
    json_t *entry, *m;
    json_array_foreach(json_object_get(json_object_get(r.json, "data"), "text_mem"), i, entry)
    {
        json_array_foreach(json_object_get(entry, "memories"), j, m)
        {
            const char *id = json_string_value(json_object_get(m, "id"));
            found = found || (id != NULL && strcmp(id, a->id) == 0);
        }
    }
    if (!found)
        fprintf(stderr, "search for \"%s\" did not find %s: %.600s\n", text, a->id,
                r.body ? r.body : "");
    http_res_clear(&r);
    assert_true(found);
}

static bool id_set_equal(const json_t *arr, const int *want, size_t n)
{
    if (json_array_size(arr) != n)
        return false;
    for (size_t i = 0; i < n; i++) {
        bool has = false;
        size_t k;
        json_t *v;
        json_array_foreach(arr, k, v) has = has || json_integer_value(v) == want[i];
        if (!has)
            return false;
    }
    return true;
}

/* The entry of group id in GET /admin/groups (borrowed from groups). */
static json_t *group_entry(json_t *groups, int id)
{
    size_t i;
    json_t *g;
    json_array_foreach(groups, i, g)
    {
        if (json_integer_value(json_object_get(g, "id")) == id)
            return g;
    }
    return NULL;
}

static uint64_t map_epoch(const serve *s)
{
    json_t *m = cluster_admin_get(s, "/admin/map");
    assert_non_null(m);
    uint64_t e = (uint64_t)json_integer_value(json_object_get(m, "epoch"));
    json_decref(m);
    return e;
}

/* The epoch in the map cache file (0 when missing or unreadable). */
static uint64_t cache_epoch(void)
{
    FILE *f = fopen(cache_path, "rb");
    if (f == NULL)
        return 0;
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    mg_cmap *m = malloc(sizeof *m);
    assert_non_null(m);
    mg_error err;
    uint64_t e = mg_cmap_decode(buf, n, m, &err) == MG_OK ? m->epoch : 0;
    if (e == 0)
        fprintf(stderr, "map cache %s (%zu bytes) does not decode\n", cache_path, n);
    free(m);
    return e;
}

/* Whether node n's data directory holds a replica of group g (the node
 * keeps group G in <data>/group-G; GROUP_CLOSE with destroy removes it). */
static bool replica_dir_exists(int n, int g)
{
    char path[400];
    snprintf(path, sizeof path, "%s/node-%d/group-%d", cl.dir, n, g);
    struct stat st;
    return stat(path, &st) == 0;
}

/* The first requests a router makes for a cube of moved slots: a search
 * finding the cube's last note, an add, the cube's count (one more than
 * *count, updated) through it and through router 1, and a search finding the
 * new note. */
static void first_requests_on_moved(const serve *s, int cube, long *count)
{
    double t0 = cluster_now_ms();
    search_finds(s, last_ack(cube), &cube, 1);
    double t_search = cluster_now_ms();
    CURL *h = curl_easy_init();
    writer *w = &writers[0];
    size_t before = w->n;
    assert_true(add_note(h, s, w, cube, w->k++));
    assert_int_equal(w->n, before + 1);
    curl_easy_cleanup(h);
    double t_add = cluster_now_ms();
    (*count)++;
    assert_int_equal(cube_count(s, cube), *count);
    assert_int_equal(cube_count(&cl.router, cube), *count);
    search_finds(s, &w->acks[w->n - 1], &cube, 1);
    fprintf(stderr, "%s: first search %.0f ms, add %.0f ms, counts and search %.0f ms\n", s->base,
            t_search - t0, t_add - t_search, cluster_now_ms() - t_add);
}

static void wait_healthy(const char *when)
{
    bool healthy;
    json_t *st = cluster_wait_healthy(&cl.router, 20000, &healthy);
    if (!healthy) {
        char *dump = st ? json_dumps(st, JSON_COMPACT) : NULL;
        fprintf(stderr, "status %s not healthy: %s\n", when, dump ? dump : "(none)");
        free(dump);
    }
    json_decref(st);
    assert_true(healthy);
    /* ctl agrees (exit 0 when healthy). */
    int rc;
    json_t *cs = cluster_ctl_json(&cl.router, &rc, "status", NULL);
    assert_int_equal(rc, 0);
    assert_true(json_is_true(json_object_get(cs, "healthy")));
    json_decref(cs);
}

/* ---- the test ------------------------------------------------------------- */

static int setup(void **state)
{
    (void)state;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    t_begin = cluster_now_ms();
    if (cluster_start(&cl, 3, N_DATA_GROUPS, 300, NULL) != 0)
        return -1;
    snprintf(cache_path, sizeof cache_path, "%s/router2.map", cl.dir);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    if (writers_running)
        writers_stop();
    if (r2.pid > 0)
        serve_stop(&r2, SIGKILL, 2000);
    if (r3.pid > 0)
        serve_stop(&r3, SIGKILL, 2000);
    cluster_cleanup(&cl);
    for (int i = 0; i < N_WRITERS; i++)
        free(writers[i].acks);
    return 0;
}

static void test_membership_and_rebalance_under_load(void **state)
{
    (void)state;
    double t0 = cluster_now_ms();
    char body[256];
    for (int i = 0; i < N_CUBES; i++) {
        char cid[32];
        cube_id(i, cid, sizeof cid);
        snprintf(body, sizeof body, "{\"cube_name\":\"a%d\",\"owner_id\":\"u\",\"cube_id\":\"%s\"}",
                 i, cid);
        post_ok(&cl.router, "/product/create_cube", body);
    }
    phase("cubes created", t0);

    /* Router 2 with a map cache, while the map is the initial one. */
    t0 = cluster_now_ms();
    uint64_t epoch0 = map_epoch(&cl.router);
    assert_true(epoch0 >= 1);
    assert_int_equal(cluster_router_start(&cl, &r2, cache_path, NULL), 0);
    uint64_t e2 = 0;
    for (int i = 0; i < 100 && (e2 = map_epoch(&r2)) != epoch0; i++)
        usleep(50000);
    assert_int_equal(e2, epoch0);
    for (int i = 0; i < 100 && cache_epoch() != epoch0; i++)
        usleep(50000);
    assert_int_equal(cache_epoch(), epoch0);
    serve_stop(&r2, SIGTERM, 5000);
    phase("router 2 started with --map-cache, cached the map, stopped", t0);
    /* Router 3 stays up, idle, with the initial map. */
    assert_int_equal(cluster_router_start(&cl, &r3, NULL, NULL), 0);
    for (int i = 0; i < 100 && (e2 = map_epoch(&r3)) != epoch0; i++)
        usleep(50000);
    assert_int_equal(e2, epoch0);

    writers_start();
    usleep(1500000);

    /* (a) a 4th node joins. */
    t0 = cluster_now_ms();
    assert_int_equal(cluster_node_start(&cl, 4), 0);
    char rpc4[48];
    cluster_node_rpc(&cl, 4, rpc4, sizeof rpc4);
    int rc;
    json_t *d = cluster_ctl_json(&cl.router, &rc, "add-node", "--rpc", rpc4, NULL);
    assert_int_equal(rc, 0);
    assert_int_equal(json_integer_value(json_object_get(d, "id")), 4);
    assert_string_equal(json_string_value(json_object_get(d, "rpc")), rpc4);
    json_decref(d);
    d = cluster_admin_get(&cl.router, "/admin/nodes");
    assert_int_equal(json_array_size(d), 4);
    json_decref(d);
    phase("(a) node 4 started and added", t0);

    /* (b) group 1's replica moves from node 1 to node 4. */
    t0 = cluster_now_ms();
    d = cluster_ctl_json(&cl.router, &rc, "move-replica", "--group", "1", "--from", "1", "--to",
                         "4", NULL);
    assert_int_equal(rc, 0);
    assert_int_equal(json_integer_value(json_object_get(d, "group")), 1);
    static const int g1_after[] = {2, 3, 4};
    assert_true(id_set_equal(json_object_get(d, "replicas"), g1_after, 3));
    json_decref(d);
    /* Node 4 now has group 1's files; node 1's were destroyed. */
    assert_true(replica_dir_exists(4, 1));
    assert_true(replica_dir_exists(2, 1));
    assert_false(replica_dir_exists(1, 1));
    assert_true(replica_dir_exists(1, 2));
    phase("(b) move-replica group 1 from node 1 to node 4", t0);
    usleep(1000000); /* more data before the rebalance */

    /* (c) slots move to a new group. */
    t0 = cluster_now_ms();
    d = cluster_ctl_json(&cl.router, &rc, "rebalance", "--new-group", NULL);
    assert_int_equal(rc, 0);
    char *dump = json_dumps(d, JSON_COMPACT);
    fprintf(stderr, "rebalance: %s\n", dump ? dump : "?");
    free(dump);
    assert_int_equal(json_integer_value(json_object_get(d, "new_group")), 4);
    long moved_slots = 0;
    size_t i;
    json_t *mv;
    json_array_foreach(json_object_get(d, "moved"), i, mv)
    {
        assert_int_equal(json_integer_value(json_object_get(mv, "to")), 4);
        moved_slots += (long)json_integer_value(json_object_get(mv, "slots"));
    }
    assert_int_equal(moved_slots, 4096 / 4);
    json_decref(d);
    phase("(c) rebalance --new-group", t0);

    usleep(1000000);
    writers_stop();

    /* The cluster after (a)-(c). */
    t0 = cluster_now_ms();
    wait_healthy("after the rebalance");
    json_t *groups = cluster_admin_get(&cl.router, "/admin/groups");
    assert_non_null(groups);
    json_t *g1 = group_entry(groups, 1), *g4 = group_entry(groups, 4);
    assert_non_null(g1);
    assert_non_null(g4);
    assert_true(id_set_equal(json_object_get(g1, "replicas"), g1_after, 3));
    /* Least-loaded placement: node 4 (1 replica), node 1 (3), node 2 (4, lower id). */
    static const int g4_nodes[] = {4, 1, 2};
    if (!id_set_equal(json_object_get(g4, "replicas"), g4_nodes, 3)) {
        dump = json_dumps(g4, JSON_COMPACT);
        fprintf(stderr, "group 4: %s\n", dump ? dump : "?");
        free(dump);
    }
    assert_true(id_set_equal(json_object_get(g4, "replicas"), g4_nodes, 3));
    assert_int_equal(json_integer_value(json_object_get(g4, "slots")), 1024);
    json_decref(groups);
    d = cluster_admin_get(&cl.router, "/admin/slots");
    assert_non_null(d);
    json_t *sg;
    long slots_total = 0;
    json_array_foreach(json_object_get(d, "groups"), i, sg)
    {
        long n = (long)json_integer_value(json_object_get(sg, "slots"));
        assert_int_equal(n, 1024);
        slots_total += n;
    }
    assert_int_equal(slots_total, 4096);
    json_decref(d);

    /* Which cubes went to group 4. */
    int group_of[N_CUBES];
    int in_new = 0, in_old = 0;
    for (int c = 0; c < N_CUBES; c++) {
        char cid[32];
        cube_id(c, cid, sizeof cid);
        group_of[c] = cube_group(cid);
        assert_true(group_of[c] >= 1 && group_of[c] <= 4);
        in_new += group_of[c] == 4;
        in_old += group_of[c] != 4;
    }
    fprintf(stderr, "%d of %d cubes are in the new group 4\n", in_new, N_CUBES);
    assert_true(in_new > 0 && in_old > 0);

    /* Nothing acknowledged is lost; each cube counts its adds. */
    check_acked_readable(&cl.router);
    long per_cube[N_CUBES];
    long total = check_counts(&cl.router, per_cube);

    /* Group 4 holds the cubes of its slots and their memories (the figures
     * come from the nodes' gauges, refreshed at most once a second). */
    long want_cubes = in_new, want_mems = 0;
    for (int c = 0; c < N_CUBES; c++)
        want_mems += group_of[c] == 4 ? per_cube[c] : 0;
    if (cube_group("cluster-probe") == 4) {
        want_cubes++;
        want_mems++;
    }
    long got_cubes = -1, got_mems = -1;
    for (int attempt = 0; attempt < 50; attempt++) {
        if (attempt > 0)
            usleep(200000);
        groups = cluster_admin_get(&cl.router, "/admin/groups");
        g4 = group_entry(groups, 4);
        got_cubes = (long)json_integer_value(json_object_get(g4, "cubes"));
        got_mems = (long)json_integer_value(json_object_get(g4, "memories"));
        json_decref(groups);
        if (got_cubes == want_cubes && got_mems == want_mems)
            break;
    }
    fprintf(stderr, "group 4 holds %ld cubes and %ld memories (want %ld, %ld); %ld in all\n",
            got_cubes, got_mems, want_cubes, want_mems, total);
    assert_int_equal(got_cubes, want_cubes);
    assert_int_equal(got_mems, want_mems);

    /* Searches find the acknowledged memories in every cube, and across
     * cubes of old and new groups at once. */
    int mixed[8], n_mixed = 0, new_cube = -1, old_cube = -1;
    for (int c = 0; c < N_CUBES; c++) {
        const ack *a = last_ack(c);
        assert_non_null(a);
        search_finds(&cl.router, a, &c, 1);
        if (group_of[c] == 4 && new_cube < 0)
            new_cube = c;
        if (group_of[c] != 4 && old_cube < 0)
            old_cube = c;
    }
    assert_true(new_cube >= 0 && old_cube >= 0);
    /* Both of them and cubes of every group. */
    mixed[n_mixed++] = new_cube;
    mixed[n_mixed++] = old_cube;
    for (int g = 1; g <= 4; g++)
        for (int c = 0, taken = 0; c < N_CUBES && taken < 2 && n_mixed < 8; c++)
            if (group_of[c] == g && c != new_cube && c != old_cube) {
                mixed[n_mixed++] = c;
                taken++;
            }
    search_finds(&cl.router, last_ack(new_cube), mixed, n_mixed);
    search_finds(&cl.router, last_ack(old_cube), mixed, n_mixed);
    phase("checked: healthy, group 1 on {2,3,4}, group 4 owns 1024 slots, every ack readable "
          "and counted, searches",
          t0);

    /* (d) router 2 restarts on its stale cache. */
    t0 = cluster_now_ms();
    uint64_t epoch1 = map_epoch(&cl.router);
    assert_true(epoch1 > epoch0);
    assert_int_equal(cache_epoch(), epoch0);
    assert_int_equal(cluster_router_start(&cl, &r2, cache_path, NULL), 0);
    long count = per_cube[new_cube];
    first_requests_on_moved(&r2, new_cube, &count);
    assert_int_equal(map_epoch(&r2), epoch1);
    for (int k = 0; k < 100 && cache_epoch() != epoch1; k++)
        usleep(50000);
    assert_int_equal(cache_epoch(), epoch1);
    phase("(d) router 2 on a stale map cache: moved cubes answered, epoch caught up", t0);
    /* Router 3's map is stale in memory (no push): it corrects itself on the
     * first misrouted request. */
    t0 = cluster_now_ms();
    first_requests_on_moved(&r3, new_cube, &count);
    assert_int_equal(map_epoch(&r3), epoch1);
    phase("router 3, idle through (a)-(c): moved cubes answered, epoch caught up", t0);

    /* (e) node 4 leaves, writers running. */
    writers_start();
    usleep(500000);
    t0 = cluster_now_ms();
    d = cluster_ctl_json(&cl.router, &rc, "remove-node", "--id", "4", NULL);
    assert_int_equal(rc, 0);
    dump = json_dumps(d, JSON_COMPACT);
    fprintf(stderr, "remove-node: %s\n", dump ? dump : "?");
    free(dump);
    bool moved_g1 = false, moved_g4 = false;
    json_array_foreach(json_object_get(d, "moved"), i, mv)
    {
        int g = (int)json_integer_value(json_object_get(mv, "group"));
        assert_int_equal(json_integer_value(json_object_get(mv, "from")), 4);
        assert_int_not_equal(json_integer_value(json_object_get(mv, "to")), 4);
        moved_g1 = moved_g1 || g == 1;
        moved_g4 = moved_g4 || g == 4;
    }
    assert_true(moved_g1 && moved_g4);
    json_decref(d);
    phase("(e) remove-node 4", t0);
    usleep(500000);
    writers_stop();

    t0 = cluster_now_ms();
    wait_healthy("after remove-node");
    d = cluster_admin_get(&cl.router, "/admin/nodes");
    assert_int_equal(json_array_size(d), 3);
    json_t *nd;
    json_array_foreach(d, i, nd)
        assert_int_not_equal(json_integer_value(json_object_get(nd, "id")), 4);
    json_decref(d);
    groups = cluster_admin_get(&cl.router, "/admin/groups");
    json_t *gr;
    json_array_foreach(groups, i, gr)
    {
        json_t *reps = json_object_get(gr, "replicas");
        int want_n = 3;
        assert_int_equal(json_array_size(reps), want_n);
        size_t k;
        json_t *v;
        json_array_foreach(reps, k, v) assert_int_not_equal(json_integer_value(v), 4);
    }
    json_decref(groups);
    assert_false(replica_dir_exists(4, 1));
    assert_false(replica_dir_exists(4, 4));
    assert_true(replica_dir_exists(1, 1));
    assert_true(replica_dir_exists(3, 4));
    check_acked_readable(&cl.router);
    check_counts(&cl.router, NULL);

    /* Node 4's process is not needed any more. */
    cluster_node_stop(&cl, 4, SIGTERM, 5000);
    wait_healthy("with node 4 stopped");
    for (int c = 0; c < N_CUBES; c++)
        search_finds(&cl.router, last_ack(c), &c, 1);
    check_counts(&r2, NULL);
    phase("checked after remove-node: healthy without node 4, data intact", t0);
    fprintf(stderr, "cluster_admin took %.1f s\n", (cluster_now_ms() - t_begin) / 1e3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_membership_and_rebalance_under_load),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
