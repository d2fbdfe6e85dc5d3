/*
 * The router's cluster client without nodes (router/client.h): the map it
 * is given or loads from its cache decides the group of a cube, a newer map
 * replaces it (and the cache file, atomically), an older or equal one
 * changes nothing, a broken cache is ignored, and without a map cube calls
 * fail "cluster not initialized" instead of going anywhere.
 *
 * Surveys against fake nodes (a respondent thread each, on inproc): a survey
 * sent before its node's connection is up is held until it is (nng would
 * send it to nobody), a node that never connects is reported at once, and a
 * node whose connection drops with the survey in flight has its group asked
 * of another replica.
 *
 * Finding the cluster, against fake nodes' rpc sides (a rep thread each,
 * answering NODE_INFO and META_GET): seeds that do not answer are reported
 * as such, never as "not initialized"; seeds that answer and host nothing
 * are "not initialized"; a seed of a cluster whose meta group cannot be
 * reached says so; a seed that hosts no meta replica leads the client to
 * the meta nodes it names; and with a map, group-0 calls go only to the
 * map's meta replicas.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "lib/cmap.h"
#include "lib/mp.h"
#include "lib/wire.h"
#include "router/client.h"

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/protocol/survey0/respond.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *const seeds[] = {"inproc://router-client-test-nowhere"};

/* Two nodes, meta group on node 1, data groups 1..n_groups on both. */
static mg_cmap *make_map(uint32_t n_groups)
{
    mg_cmap *m = malloc(sizeof *m);
    assert_non_null(m);
    mg_cmap_node nodes[2];
    memset(nodes, 0, sizeof nodes);
    for (int i = 0; i < 2; i++) {
        nodes[i].id = (uint64_t)i + 1;
        snprintf(nodes[i].rpc, sizeof nodes[i].rpc, "inproc://router-client-test-%d", i + 1);
        snprintf(nodes[i].survey, sizeof nodes[i].survey, "inproc://router-client-test-s%d",
                 i + 1);
        snprintf(nodes[i].raft_host, sizeof nodes[i].raft_host, "127.0.0.1");
        nodes[i].raft_port = 20000 + 100 * (uint32_t)i;
    }
    mg_error err = {0};
    if (mg_cmap_initial(m, nodes, 2, n_groups, 1, &err) != MG_OK)
        fail_msg("mg_cmap_initial: %s", err.msg);
    return m;
}

static mg_client *open_client(const char *cache, const mg_cmap *map)
{
    mg_client_config cfg = {.seeds = seeds,
                            .n_seeds = 1,
                            .map_cache = cache,
                            .map = map,
                            .call_timeout_ms = 200,
                            .survey_timeout_ms = 200};
    mg_client *c = NULL;
    mg_error err = {0};
    if (mg_client_open(&cfg, &c, &err) != MG_OK)
        fail_msg("mg_client_open: %s", err.msg);
    return c;
}

/* The map in the cache file (epoch 0 when the file does not decode). */
static void read_cache(const char *path, mg_cmap *out)
{
    mg_cmap_init(out);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    static uint8_t buf[1 << 17];
    size_t len = fread(buf, 1, sizeof buf, f);
    fclose(f);
    mg_error err;
    assert_int_equal(mg_cmap_decode(buf, len, out, &err), MG_OK);
}

static char dir[64];
static char cache[128];

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/mg-rclient-XXXXXX");
    if (mkdtemp(dir) == NULL)
        return -1;
    snprintf(cache, sizeof cache, "%s/map.cache", dir);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    unlink(cache);
    rmdir(dir);
    return 0;
}

static const char *const cubes[] = {"alice", "bob", "carol", "dave", "erin", "cube-7", "x"};
#define N_CUBES (sizeof cubes / sizeof cubes[0])

static void test_map_routes_and_is_saved(void **state)
{
    (void)state;
    mg_cmap *m = make_map(4);
    mg_client *c = open_client(cache, m);
    assert_int_equal(mg_client_epoch(c), 1);
    for (size_t i = 0; i < N_CUBES; i++) {
        uint64_t g = mg_client_group(c, cubes[i], strlen(cubes[i]));
        assert_int_equal(g, mg_cmap_cube_group(m, cubes[i], strlen(cubes[i])));
        assert_true(g >= 1 && g <= 4);
    }
    uint64_t groups[8];
    assert_int_equal(mg_client_data_groups(c, groups, 8), 4);
    for (int i = 0; i < 4; i++)
        assert_int_equal(groups[i], (uint64_t)i + 1);

    /* the given map went to the cache */
    mg_cmap *saved = malloc(sizeof *saved);
    assert_non_null(saved);
    read_cache(cache, saved);
    assert_int_equal(saved->epoch, 1);
    assert_memory_equal(saved->slot_group, m->slot_group, sizeof m->slot_group);
    assert_int_equal(saved->n_nodes, 2);

    /* an equal or older epoch is refused and changes nothing */
    mg_cmap *other = make_map(2);
    assert_false(mg_client_set_map(c, other));
    assert_int_equal(mg_client_epoch(c), 1);
    assert_int_equal(mg_client_data_groups(c, groups, 8), 4);
    read_cache(cache, saved);
    assert_int_equal(saved->epoch, 1);
    assert_memory_equal(saved->slot_group, m->slot_group, sizeof m->slot_group);

    /* a newer one (slots over 2 groups) routes at once and is saved */
    other->epoch = 2;
    assert_true(mg_client_set_map(c, other));
    assert_int_equal(mg_client_epoch(c), 2);
    assert_int_equal(mg_client_data_groups(c, groups, 8), 2);
    for (size_t i = 0; i < N_CUBES; i++)
        assert_int_equal(mg_client_group(c, cubes[i], strlen(cubes[i])),
                         mg_cmap_cube_group(other, cubes[i], strlen(cubes[i])));
    mg_cmap *copy = malloc(sizeof *copy);
    assert_non_null(copy);
    mg_client_map(c, copy);
    assert_int_equal(copy->epoch, 2);
    assert_memory_equal(copy->slot_group, other->slot_group, sizeof other->slot_group);
    read_cache(cache, saved);
    assert_int_equal(saved->epoch, 2);
    assert_memory_equal(saved->slot_group, other->slot_group, sizeof other->slot_group);
    struct stat st;
    char tmp[160];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", cache, (int)getpid());
    assert_int_not_equal(stat(tmp, &st), 0); /* renamed, nothing left behind */
    mg_client_close(c);

    /* a restarted client routes by the cached map alone */
    c = open_client(cache, NULL);
    assert_int_equal(mg_client_epoch(c), 2);
    for (size_t i = 0; i < N_CUBES; i++)
        assert_int_equal(mg_client_group(c, cubes[i], strlen(cubes[i])),
                         mg_cmap_cube_group(other, cubes[i], strlen(cubes[i])));
    /* ... and an initial map older than the cache does not replace it */
    mg_client_close(c);
    c = open_client(cache, m);
    assert_int_equal(mg_client_epoch(c), 2);
    mg_client_close(c);
    read_cache(cache, saved);
    assert_int_equal(saved->epoch, 2);
    free(copy);
    free(saved);
    free(other);
    free(m);
}

static void test_no_map(void **state)
{
    (void)state;
    /* a cache that does not decode is ignored */
    FILE *f = fopen(cache, "wb");
    assert_non_null(f);
    fputs("not a map", f);
    fclose(f);
    mg_client *c = open_client(cache, NULL);
    assert_int_equal(mg_client_epoch(c), 0);
    assert_int_equal(mg_client_group(c, "alice", 5), 0);
    uint64_t groups[4];
    assert_int_equal(mg_client_data_groups(c, groups, 4), 0);

    /* cube calls fail without going anywhere */
    static const uint8_t body[] = {0x80};
    mg_client_reply rep = {0};
    mg_error err = {0};
    assert_int_equal(mg_client_call_cube(c, "", MG_OP_CUBE_GET, "alice", body, sizeof body, &rep,
                                         &err),
                     MG_EUNAVAIL);
    /* the seed is not up */
    assert_string_equal(err.msg, "no seed node answered (inproc://router-client-test-nowhere)");
    assert_null(rep.msg);
    /* the seed is not up: the refresh fails, the map stays empty */
    assert_int_not_equal(mg_client_refresh(c, &err), MG_OK);
    assert_int_equal(mg_client_epoch(c), 0);
    /* a node nobody answers for */
    mg_cmap_node info;
    assert_int_equal(mg_client_probe(c, "inproc://router-client-test-absent", 100, &info, &err),
                     MG_EUNAVAIL);
    assert_int_equal(mg_client_call_node(c, 99, MG_OP_STATUS, 0, body, sizeof body, 100, &rep,
                                         &err),
                     MG_EUNAVAIL);
    assert_false(mg_client_node_up(c, 99));
    mg_client_close(c);

    /* the bad cache file was not overwritten by the (absent) map */
    f = fopen(cache, "rb");
    char text[16] = {0};
    assert_non_null(f);
    assert_true(fread(text, 1, sizeof text - 1, f) > 0);
    fclose(f);
    assert_string_equal(text, "not a map");
}

/* ---- surveys against fake nodes ------------------------------------------ */

/* The survey deadline of these tests: long, so that a survey lost on the
 * way would show as a second (follower) survey or as "no answer", not as a
 * test that merely takes a while. */
#define LONG_SURVEY_MS 5000

/* A node's survey side: answers every survey that assigns it groups with
 * those groups (no hits), or, with drop_first, closes its socket on the
 * first one instead (the node died with the survey in flight). */
typedef struct fake_node {
    uint64_t id;
    char url[64];
    unsigned listen_after_ms; /* 0: listening before the thread starts */
    bool drop_first;
    nng_socket sock;
    bool listening;
    pthread_t th;
    atomic_bool stop;
    atomic_int surveys;          /* surveys that assigned it a group */
    atomic_int follower_surveys; /* ... with "follower": true */
    atomic_int bad;              /* surveys that did not decode, replies not sent */
} fake_node;

static int fake_write(void *data, const char *buf, size_t len)
{
    return nng_msg_append((nng_msg *)data, buf, len) == 0 ? 0 : -1;
}

/* The fake's thread does not use cmocka's asserts (they jump to the test's
 * thread): problems are counted in `bad`, which the tests check is 0. */
static bool fake_listen(fake_node *f)
{
    if (nng_respondent0_open(&f->sock) != 0)
        return false;
    if (nng_listen(f->sock, f->url, NULL, 0) != 0) {
        nng_close(f->sock);
        return false;
    }
    nng_socket_set_ms(f->sock, NNG_OPT_RECVTIMEO, 20);
    f->listening = true;
    return true;
}

/* Reads a SEARCH body: "follower" and the groups "assign" gives node `id`
 * (at most cap) into groups; how many, or -1 when it does not decode. */
static int fake_read_survey(const mg_wire_req *req, uint64_t id, uint64_t *groups, size_t cap,
                            bool *follower)
{
    mg_mp_reader r = mg_wire_body(req->body, req->body_len);
    uint32_t n, m, f;
    int k = 0;
    *follower = false;
    if (mg_mp_read_map(&r, &n) != MG_OK)
        return -1;
    for (uint32_t i = 0; i < n; i++) {
        if (mg_mp_peek_str_eq(&r, "follower")) {
            mg_mp_skip(&r);
            if (mg_mp_read_bool(&r, follower) != MG_OK)
                return -1;
        } else if (mg_mp_peek_str_eq(&r, "assign")) {
            mg_mp_skip(&r);
            if (mg_mp_read_array(&r, &m) != MG_OK)
                return -1;
            for (uint32_t j = 0; j < m; j++) {
                uint64_t group = 0, node = 0;
                if (mg_mp_read_map(&r, &f) != MG_OK)
                    return -1;
                for (uint32_t e = 0; e < f; e++) {
                    bool is_group = mg_mp_peek_str_eq(&r, "group");
                    mg_mp_skip(&r);
                    if (mg_mp_read_u64(&r, is_group ? &group : &node) != MG_OK)
                        return -1;
                }
                if (node == id && (size_t)k < cap)
                    groups[k++] = group;
            }
        } else if (mg_mp_skip(&r) != MG_OK || mg_mp_skip(&r) != MG_OK) {
            return -1;
        }
    }
    return k;
}

/* The reply of a node that answers for `groups` (no hits). */
static nng_msg *fake_reply(uint64_t rid, const uint64_t *groups, int k)
{
    nng_msg *rep;
    if (nng_msg_alloc(&rep, 0) != 0)
        return NULL;
    msgpack_packer pk;
    msgpack_packer_init(&pk, rep, fake_write);
    int rc = mg_wire_rep_begin(&pk, rid, MG_OK, NULL, 0, NULL, 0);
    rc |= msgpack_pack_map(&pk, 3) | mg_mp_pack_cstr(&pk, "groups") |
          msgpack_pack_array(&pk, (uint32_t)k);
    for (int i = 0; i < k; i++)
        rc |= msgpack_pack_uint64(&pk, groups[i]);
    rc |= mg_mp_pack_cstr(&pk, "hits") | msgpack_pack_array(&pk, 0) |
          mg_mp_pack_cstr(&pk, "missing") | msgpack_pack_array(&pk, 0);
    if (rc != 0) {
        nng_msg_free(rep);
        return NULL;
    }
    return rep;
}

static void *fake_main(void *arg)
{
    fake_node *f = arg;
    if (f->listen_after_ms > 0) {
        usleep(f->listen_after_ms * 1000u);
        if (!fake_listen(f)) {
            atomic_fetch_add(&f->bad, 1);
            return NULL;
        }
    }
    while (!atomic_load(&f->stop)) {
        nng_msg *m;
        if (nng_recvmsg(f->sock, &m, 0) != 0)
            continue;
        mg_wire_req req = {0};
        mg_error err;
        uint64_t groups[8];
        bool follower = false;
        int k = mg_wire_req_decode(nng_msg_body(m), nng_msg_len(m), &req, &err) == MG_OK
                    ? fake_read_survey(&req, f->id, groups, 8, &follower)
                    : -1;
        uint64_t rid = req.rid;
        nng_msg_free(m);
        if (k < 0)
            atomic_fetch_add(&f->bad, 1);
        if (k <= 0)
            continue; /* a node stays silent on a survey that gives it nothing */
        atomic_fetch_add(&f->surveys, 1);
        if (follower)
            atomic_fetch_add(&f->follower_surveys, 1);
        if (f->drop_first) {
            nng_close(f->sock);
            f->listening = false;
            break;
        }
        nng_msg *rep = fake_reply(rid, groups, k);
        if (rep == NULL || nng_sendmsg(f->sock, rep, 0) != 0) {
            atomic_fetch_add(&f->bad, 1);
            if (rep != NULL)
                nng_msg_free(rep);
        }
    }
    return NULL;
}

static void fake_start(fake_node *f, uint64_t id, const char *url, unsigned listen_after_ms,
                       bool drop_first)
{
    memset(f, 0, sizeof *f);
    f->id = id;
    snprintf(f->url, sizeof f->url, "%s", url);
    f->listen_after_ms = listen_after_ms;
    f->drop_first = drop_first;
    atomic_init(&f->stop, false);
    atomic_init(&f->surveys, 0);
    atomic_init(&f->follower_surveys, 0);
    atomic_init(&f->bad, 0);
    if (listen_after_ms == 0)
        assert_true(fake_listen(f));
    assert_int_equal(pthread_create(&f->th, NULL, fake_main, f), 0);
}

/* Stops the thread and checks that it met no problem. */
static void fake_stop(fake_node *f)
{
    atomic_store(&f->stop, true);
    pthread_join(f->th, NULL);
    if (f->listening)
        nng_close(f->sock);
    assert_int_equal(atomic_load(&f->bad), 0);
}

/* n nodes (ids 1..n, survey URLs inproc://<tag>-s<id>, rpc URLs nobody
 * listens on) and one data group with `replicas` replicas. */
static mg_cmap *make_survey_map(const char *tag, uint32_t n, uint32_t replicas)
{
    mg_cmap *m = malloc(sizeof *m);
    assert_non_null(m);
    mg_cmap_node nodes[4];
    memset(nodes, 0, sizeof nodes);
    for (uint32_t i = 0; i < n; i++) {
        nodes[i].id = i + 1;
        snprintf(nodes[i].rpc, sizeof nodes[i].rpc, "inproc://%s-r%u", tag, i + 1);
        snprintf(nodes[i].survey, sizeof nodes[i].survey, "inproc://%s-s%u", tag, i + 1);
        snprintf(nodes[i].raft_host, sizeof nodes[i].raft_host, "127.0.0.1");
        nodes[i].raft_port = 21000 + 100 * i;
    }
    mg_error err = {0};
    if (mg_cmap_initial(m, nodes, n, 1, replicas, &err) != MG_OK)
        fail_msg("mg_cmap_initial: %s", err.msg);
    return m;
}

static mg_client *open_survey_client(const mg_cmap *map)
{
    mg_client_config cfg = {.map = map, .call_timeout_ms = 300,
                            .survey_timeout_ms = LONG_SURVEY_MS};
    mg_client *c = NULL;
    mg_error err = {0};
    if (mg_client_open(&cfg, &c, &err) != MG_OK)
        fail_msg("mg_client_open: %s", err.msg);
    return c;
}

/* What a search of group 1 came to, and what the fake nodes saw of it:
 * taken before the client and the nodes are shut down, and checked after
 * (an assert must not leave a fake's thread running on a freed node). */
typedef struct survey_outcome {
    int rc;                 /* of mg_client_search (why has its message) */
    size_t n_replies, n_missing;
    uint64_t missing0;      /* the first group missing */
    bool follower_read;
    char why[256];
    int surveys[2], follower_surveys[2];
} survey_outcome;

static survey_outcome search_group1(mg_client *c, fake_node *nodes, size_t n_nodes)
{
    static const uint64_t group = 1;
    mg_client_survey s = {.groups = &group, .n_groups = 1};
    mg_error err = {0};
    int rc = mg_client_search(c, "", &s, &err);
    survey_outcome o = {.rc = rc, .n_replies = s.n_replies, .n_missing = s.n_missing,
                        .missing0 = s.n_missing > 0 ? s.missing[0] : 0,
                        .follower_read = s.follower_read};
    snprintf(o.why, sizeof o.why, "%s", rc == MG_OK ? s.missing_why : err.msg);
    for (size_t i = 0; i < n_nodes; i++) {
        o.surveys[i] = atomic_load(&nodes[i].surveys);
        o.follower_surveys[i] = atomic_load(&nodes[i].follower_surveys);
    }
    mg_client_survey_clear(&s);
    return o;
}

/* A node that starts listening just after the router took a map naming it
 * (a router that starts with the cluster, or a node added): the survey waits
 * for the connection and reaches it the first time, as a leader read (a
 * survey sent before the connection is up would be lost and the group asked
 * again of a follower at the deadline). The client waits at most 300 ms for
 * the connection: on a machine too loaded to connect an inproc pipe within
 * that, the group is reported missing ("no connection", nothing sent) and
 * the case is tried again, with a fresh client and node, up to 3 times. */
static void test_survey_waits_for_connection(void **state)
{
    (void)state;
    survey_outcome o;
    for (int attempt = 1;; attempt++) {
        mg_cmap *m = make_survey_map("rc-late", 1, 1);
        mg_client *c = open_survey_client(m);
        fake_node node;
        fake_start(&node, 1, m->nodes[0].survey, 20, false);
        o = search_group1(c, &node, 1);
        mg_client_close(c);
        fake_stop(&node);
        free(m);
        bool slow = o.n_missing == 1 && strstr(o.why, "no connection to node 1") != NULL &&
                    o.surveys[0] == 0;
        if (!slow)
            break;
        if (attempt == 3)
            fail_msg("no connection to the node within 300 ms, 3 times");
        print_message("no connection within 300 ms (a loaded machine?): again\n");
    }
    assert_int_equal(o.rc, MG_OK);
    assert_int_equal(o.n_missing, 0);
    assert_int_equal(o.n_replies, 1);
    assert_false(o.follower_read);
    assert_int_equal(o.surveys[0], 1); /* one round: none was lost */
    assert_int_equal(o.follower_surveys[0], 0);
}

/* A node that never comes up: its group is reported missing for that
 * reason (it was never sent), rather than as silent at the deadline. */
static void test_survey_unconnected_node_missing(void **state)
{
    (void)state;
    mg_cmap *m = make_survey_map("rc-never", 1, 1);
    mg_client *c = open_survey_client(m);
    survey_outcome o = search_group1(c, NULL, 0);
    mg_client_close(c);
    free(m);
    assert_int_equal(o.rc, MG_OK);
    assert_int_equal(o.n_replies, 0);
    assert_int_equal(o.n_missing, 1);
    assert_int_equal(o.missing0, 1);
    assert_non_null(strstr(o.why, "no connection to node 1"));
}

/* Two replicas: the one asked first dies with the survey in flight (its
 * connection drops), and the group is asked of the other replica with
 * "follower": true; nothing is missing. */
static void test_survey_connection_drop(void **state)
{
    (void)state;
    mg_cmap *m = make_survey_map("rc-drop", 2, 2);
    const mg_cmap_group *g = mg_cmap_group_get(m, 1);
    assert_non_null(g);
    assert_int_equal(g->n_replicas, 2);
    uint64_t first = g->replicas[0], second = g->replicas[1];
    fake_node nodes[2];
    fake_start(&nodes[0], first, m->nodes[first - 1].survey, 0, true);
    fake_start(&nodes[1], second, m->nodes[second - 1].survey, 0, false);
    mg_client *c = open_survey_client(m);
    survey_outcome o = search_group1(c, nodes, 2);
    mg_client_close(c);
    fake_stop(&nodes[0]);
    fake_stop(&nodes[1]);
    free(m);
    assert_int_equal(o.rc, MG_OK);
    assert_int_equal(o.n_missing, 0);
    assert_int_equal(o.n_replies, 1);
    assert_true(o.follower_read);
    assert_int_equal(o.surveys[0], 1);
    assert_int_equal(o.follower_surveys[0], 0);
    assert_int_equal(o.surveys[1], 1);
    assert_int_equal(o.follower_surveys[1], 1);
}

/* ---- finding the cluster: fake nodes' rpc sides ---------------------------- */

/* A node's rpc side (nng rep on inproc): NODE_INFO gets its id, "groups"
 * ([0] when it hosts the meta group), "cluster" and "meta"; META_GET gets,
 * when it hosts the meta group, `electing` NOT_LEADER answers without a
 * hint first (-1: only those), then its map (nil when none); any other
 * request, or META_GET when it hosts no meta replica, gets a node's
 * "group G is not hosted on node N". */
typedef struct fake_rpc {
    uint64_t id;
    char url[64];
    const char *cluster;      /* NULL: nil */
    const char *meta[2];
    uint32_t n_meta;
    bool hosts_meta;
    const mg_cmap *map;
    atomic_int electing;
    nng_socket sock;
    pthread_t th;
    atomic_bool stop;
    atomic_int node_infos, meta_gets, not_hosted, bad;
} fake_rpc;

static int fake_pack_node_info(fake_rpc *f, msgpack_packer *pk)
{
    int rc = msgpack_pack_map(pk, 8);
    rc |= mg_mp_pack_cstr(pk, "node") | msgpack_pack_uint64(pk, f->id);
    rc |= mg_mp_pack_cstr(pk, "rpc") | mg_mp_pack_cstr(pk, f->url);
    rc |= mg_mp_pack_cstr(pk, "survey") | mg_mp_pack_cstr(pk, "");
    rc |= mg_mp_pack_cstr(pk, "raft_host") | mg_mp_pack_cstr(pk, "127.0.0.1");
    rc |= mg_mp_pack_cstr(pk, "raft_port") | msgpack_pack_uint32(pk, 22000);
    rc |= mg_mp_pack_cstr(pk, "groups") | msgpack_pack_array(pk, f->hosts_meta ? 1 : 0);
    if (f->hosts_meta)
        rc |= msgpack_pack_uint64(pk, 0);
    rc |= mg_mp_pack_cstr(pk, "cluster");
    rc |= f->cluster != NULL ? mg_mp_pack_cstr(pk, f->cluster) : msgpack_pack_nil(pk);
    rc |= mg_mp_pack_cstr(pk, "meta") | msgpack_pack_array(pk, f->n_meta);
    for (uint32_t i = 0; i < f->n_meta; i++)
        rc |= mg_mp_pack_cstr(pk, f->meta[i]);
    return rc;
}

static int fake_pack_meta_get(fake_rpc *f, msgpack_packer *pk, uint64_t rid)
{
    int electing = atomic_load(&f->electing);
    if (electing != 0) {
        if (electing > 0)
            atomic_fetch_sub(&f->electing, 1);
        return mg_wire_rep_begin(pk, rid, MG_ENOTLEADER, "not the leader (electing)", 0, NULL,
                                 0) |
               msgpack_pack_nil(pk);
    }
    void *buf = NULL;
    size_t len = 0;
    mg_error err;
    if (f->map != NULL && mg_cmap_encode(f->map, &buf, &len, &err) != MG_OK)
        return -1;
    int rc = mg_wire_rep_begin(pk, rid, MG_OK, NULL, 0, NULL, 0) | msgpack_pack_map(pk, 2) |
             mg_mp_pack_cstr(pk, "epoch") |
             msgpack_pack_uint64(pk, f->map != NULL ? f->map->epoch : 0) |
             mg_mp_pack_cstr(pk, "map");
    rc |= buf != NULL ? mg_mp_pack_binn(pk, buf, len) : msgpack_pack_nil(pk);
    free(buf);
    return rc;
}

static void *fake_rpc_main(void *arg)
{
    fake_rpc *f = arg;
    while (!atomic_load(&f->stop)) {
        nng_msg *m;
        if (nng_recvmsg(f->sock, &m, 0) != 0)
            continue;
        mg_wire_req req = {0};
        mg_error err;
        int rc = mg_wire_req_decode(nng_msg_body(m), nng_msg_len(m), &req, &err);
        nng_msg *rep = NULL;
        if (rc == MG_OK && nng_msg_alloc(&rep, 0) != 0)
            rep = NULL;
        if (rep != NULL) {
            msgpack_packer pk;
            msgpack_packer_init(&pk, rep, fake_write);
            if (req.op == MG_OP_NODE_INFO) {
                atomic_fetch_add(&f->node_infos, 1);
                rc = mg_wire_rep_begin(&pk, req.rid, MG_OK, NULL, 0, NULL, 0) |
                     fake_pack_node_info(f, &pk);
            } else if (req.op == MG_OP_META_GET && f->hosts_meta) {
                atomic_fetch_add(&f->meta_gets, 1);
                rc = fake_pack_meta_get(f, &pk, req.rid);
            } else {
                char msg[80];
                snprintf(msg, sizeof msg, "group %llu is not hosted on node %llu",
                         (unsigned long long)req.group, (unsigned long long)f->id);
                atomic_fetch_add(&f->not_hosted, 1);
                if (req.op == MG_OP_META_GET)
                    atomic_fetch_add(&f->meta_gets, 1);
                rc = mg_wire_rep_begin(&pk, req.rid, MG_ENOTFOUND, msg, 0, NULL, 0) |
                     msgpack_pack_nil(&pk);
            }
        }
        nng_msg_free(m);
        if (rep == NULL || rc != 0 || nng_sendmsg(f->sock, rep, 0) != 0) {
            atomic_fetch_add(&f->bad, 1);
            if (rep != NULL)
                nng_msg_free(rep);
        }
    }
    return NULL;
}

/* Set the fields to answer with before starting. */
static void fake_rpc_init(fake_rpc *f, uint64_t id, const char *url)
{
    memset(f, 0, sizeof *f);
    f->id = id;
    snprintf(f->url, sizeof f->url, "%s", url);
    atomic_init(&f->electing, 0);
    atomic_init(&f->stop, false);
    atomic_init(&f->node_infos, 0);
    atomic_init(&f->meta_gets, 0);
    atomic_init(&f->not_hosted, 0);
    atomic_init(&f->bad, 0);
}

static void fake_rpc_start(fake_rpc *f)
{
    assert_int_equal(nng_rep0_open(&f->sock), 0);
    assert_int_equal(nng_listen(f->sock, f->url, NULL, 0), 0);
    nng_socket_set_ms(f->sock, NNG_OPT_RECVTIMEO, 20);
    assert_int_equal(pthread_create(&f->th, NULL, fake_rpc_main, f), 0);
}

/* Stops the thread; whether it met a problem is in `bad` (checked by the
 * caller after its own checks, so that an assert never leaves it running). */
static void fake_rpc_stop(fake_rpc *f)
{
    atomic_store(&f->stop, true);
    pthread_join(f->th, NULL);
    nng_close(f->sock);
}

static mg_client *open_seeded(const char *const *seed_urls, size_t n, const mg_cmap *map)
{
    mg_client_config cfg = {.seeds = seed_urls, .n_seeds = n, .map = map,
                            .call_timeout_ms = 300, .survey_timeout_ms = 300};
    mg_client *c = NULL;
    mg_error err = {0};
    if (mg_client_open(&cfg, &c, &err) != MG_OK)
        fail_msg("mg_client_open: %s", err.msg);
    return c;
}

/* (a) Seeds that nobody listens on: the refresh, the map check and a cube
 * call all say that no seed answered, naming them, and not that the cluster
 * is not initialized (which would invite `ctl init`). */
static void test_seeds_unreachable(void **state)
{
    (void)state;
    static const char *const dead[] = {"inproc://rc-dead-1", "inproc://rc-dead-2"};
    static const char want[] = "no seed node answered (inproc://rc-dead-1, inproc://rc-dead-2)";
    mg_client *c = open_seeded(dead, 2, NULL);
    mg_error err = {0};
    assert_int_equal(mg_client_refresh(c, &err), MG_EUNAVAIL);
    assert_string_equal(err.msg, want);
    assert_int_equal(mg_client_epoch(c), 0);
    mg_error_clear(&err);
    assert_int_equal(mg_client_no_map(c, &err), MG_EUNAVAIL);
    assert_string_equal(err.msg, want);
    mg_error_clear(&err);
    assert_int_equal(mg_client_need_map(c, &err), MG_EUNAVAIL);
    assert_string_equal(err.msg, want);
    static const uint8_t body[] = {0x80};
    mg_client_reply rep = {0};
    assert_int_equal(mg_client_call_cube(c, "", MG_OP_CUBE_GET, "alice", body, sizeof body, &rep,
                                         &err),
                     MG_EUNAVAIL);
    assert_string_equal(err.msg, want);
    char id[MG_CMAP_CLUSTER_MAX];
    assert_false(mg_client_cluster(c, id, sizeof id));
    assert_string_equal(id, "");
    mg_client_close(c);
}

/* A seed that answers, belongs to no cluster and hosts nothing: the cluster
 * is not initialized (the refresh itself succeeds, with no map). */
static void test_seed_not_initialized(void **state)
{
    (void)state;
    fake_rpc seed;
    fake_rpc_init(&seed, 1, "inproc://rc-fresh-1");
    fake_rpc_start(&seed);
    static const char *const urls[] = {"inproc://rc-fresh-1"};
    mg_client *c = open_seeded(urls, 1, NULL);
    mg_error err = {0};
    int rc = mg_client_refresh(c, &err);
    uint64_t epoch = mg_client_epoch(c);
    mg_error need = {0};
    int need_rc = mg_client_need_map(c, &need);
    mg_client_close(c);
    fake_rpc_stop(&seed);
    assert_int_equal(rc, MG_OK);
    assert_int_equal(epoch, 0);
    assert_int_equal(need_rc, MG_EUNAVAIL);
    assert_string_equal(need.msg, MG_CLIENT_NOT_INIT_MSG);
    assert_true(atomic_load(&seed.meta_gets) >= 1);
    assert_int_equal(atomic_load(&seed.bad), 0);
}

#define CLUSTER_ID "3f2a9c1e-7b4d-4e8a-9f60-2c5d8e1b7a44"

/* A seed of a cluster whose meta group cannot be reached (the node it names
 * is gone): the error says so and never "not initialized". */
static void test_seed_cluster_meta_unreachable(void **state)
{
    (void)state;
    fake_rpc seed;
    fake_rpc_init(&seed, 2, "inproc://rc-orphan-2");
    seed.cluster = CLUSTER_ID;
    seed.meta[0] = "inproc://rc-orphan-gone";
    seed.n_meta = 1;
    fake_rpc_start(&seed);
    static const char *const urls[] = {"inproc://rc-orphan-2"};
    mg_client *c = open_seeded(urls, 1, NULL);
    mg_error err = {0};
    int rc = mg_client_refresh(c, &err);
    mg_error need = {0};
    int need_rc = mg_client_need_map(c, &need);
    char id[MG_CMAP_CLUSTER_MAX];
    bool known = mg_client_cluster(c, id, sizeof id);
    mg_client_close(c);
    fake_rpc_stop(&seed);
    static const char want[] = "cluster " CLUSTER_ID ": the meta group is not reachable (";
    assert_int_equal(rc, MG_EUNAVAIL);
    assert_memory_equal(err.msg, want, strlen(want));
    assert_null(strstr(err.msg, "not initialized"));
    assert_null(strstr(err.msg, "not hosted")); /* the seed hosts no meta replica */
    assert_int_equal(need_rc, MG_EUNAVAIL);
    assert_memory_equal(need.msg, want, strlen(want));
    assert_true(known);
    assert_string_equal(id, CLUSTER_ID);
    assert_int_equal(atomic_load(&seed.bad), 0);
}

/* Two nodes on inproc rpc URLs <tag>-1 and <tag>-2, one data group, the
 * meta group on node 1 alone; the given epoch and cluster id. */
static mg_cmap *make_rpc_map(const char *tag, uint64_t epoch)
{
    mg_cmap *m = malloc(sizeof *m);
    assert_non_null(m);
    mg_cmap_node nodes[2];
    memset(nodes, 0, sizeof nodes);
    for (uint32_t i = 0; i < 2; i++) {
        nodes[i].id = i + 1;
        snprintf(nodes[i].rpc, sizeof nodes[i].rpc, "inproc://%s-%u", tag, i + 1);
        snprintf(nodes[i].survey, sizeof nodes[i].survey, "inproc://%s-s%u", tag, i + 1);
        snprintf(nodes[i].raft_host, sizeof nodes[i].raft_host, "127.0.0.1");
        nodes[i].raft_port = 23000 + 100 * i;
    }
    mg_error err = {0};
    if (mg_cmap_initial(m, nodes, 2, 1, 1, &err) != MG_OK)
        fail_msg("mg_cmap_initial: %s", err.msg);
    m->epoch = epoch;
    snprintf(m->cluster, sizeof m->cluster, "%s", CLUSTER_ID);
    for (uint32_t i = 0; i < m->n_groups; i++)
        if (m->groups[i].id == 0) {
            m->groups[i].n_replicas = 1;
            m->groups[i].replicas[0] = 1;
        }
    return m;
}

/* (b) The only seed hosts no meta replica but names the node that does:
 * the client asks that node and gets the map. */
static void test_seed_names_meta_nodes(void **state)
{
    (void)state;
    mg_cmap *m = make_rpc_map("rc-hint", 3);
    fake_rpc meta, seed;
    fake_rpc_init(&meta, 1, "inproc://rc-hint-1");
    meta.cluster = CLUSTER_ID;
    meta.hosts_meta = true;
    meta.map = m;
    fake_rpc_init(&seed, 2, "inproc://rc-hint-2");
    seed.cluster = CLUSTER_ID;
    seed.meta[0] = "inproc://rc-hint-1";
    seed.n_meta = 1;
    fake_rpc_start(&meta);
    fake_rpc_start(&seed);
    static const char *const urls[] = {"inproc://rc-hint-2"};
    mg_client *c = open_seeded(urls, 1, NULL);
    mg_error err = {0};
    int rc = mg_client_refresh(c, &err);
    uint64_t epoch = mg_client_epoch(c);
    char id[MG_CMAP_CLUSTER_MAX];
    bool known = mg_client_cluster(c, id, sizeof id);
    mg_client_close(c);
    fake_rpc_stop(&meta);
    fake_rpc_stop(&seed);
    free(m);
    if (rc != MG_OK)
        fail_msg("refresh: %s", err.msg);
    assert_int_equal(epoch, 3);
    assert_true(known);
    assert_string_equal(id, CLUSTER_ID);
    assert_true(atomic_load(&seed.node_infos) >= 1);
    assert_true(atomic_load(&meta.node_infos) >= 1); /* probed as a seed */
    assert_true(atomic_load(&meta.meta_gets) >= 1);
    /* the node that said it hosts the meta group was asked first */
    assert_int_equal(atomic_load(&seed.meta_gets), 0);
    assert_int_equal(atomic_load(&meta.bad), 0);
    assert_int_equal(atomic_load(&seed.bad), 0);
}

/* A node probed by an admin (mg_client_probe) that belongs to another
 * cluster and hosts its meta group teaches the client nothing: its map is
 * not fetched, its cluster id not taken, and the client's own seed still
 * says the cluster is not initialized. */
static void test_probe_of_foreign_node(void **state)
{
    (void)state;
    mg_cmap *m = make_rpc_map("rc-foreign", 5);
    fake_rpc seed, foreign;
    fake_rpc_init(&seed, 1, "inproc://rc-own-1");
    fake_rpc_init(&foreign, 7, "inproc://rc-foreign-1");
    foreign.cluster = CLUSTER_ID;
    foreign.hosts_meta = true;
    foreign.map = m;
    foreign.meta[0] = "inproc://rc-foreign-1";
    foreign.n_meta = 1;
    fake_rpc_start(&seed);
    fake_rpc_start(&foreign);
    static const char *const urls[] = {"inproc://rc-own-1"};
    mg_client *c = open_seeded(urls, 1, NULL);
    mg_cmap_node info;
    mg_error err = {0};
    int prc = mg_client_probe(c, "inproc://rc-foreign-1", 300, &info, &err);
    int rc = mg_client_refresh(c, &err);
    uint64_t epoch = mg_client_epoch(c);
    char id[MG_CMAP_CLUSTER_MAX];
    bool known = mg_client_cluster(c, id, sizeof id);
    mg_error need = {0};
    mg_client_need_map(c, &need);
    mg_client_close(c);
    fake_rpc_stop(&seed);
    fake_rpc_stop(&foreign);
    free(m);
    assert_int_equal(prc, MG_OK);
    assert_int_equal(info.id, 7);
    assert_int_equal(rc, MG_OK);
    assert_int_equal(epoch, 0);
    assert_false(known);
    assert_string_equal(need.msg, MG_CLIENT_NOT_INIT_MSG);
    assert_int_equal(atomic_load(&foreign.meta_gets), 0);
    assert_int_equal(atomic_load(&foreign.node_infos), 1); /* the probe only */
    assert_int_equal(atomic_load(&seed.bad), 0);
    assert_int_equal(atomic_load(&foreign.bad), 0);
}

/* (c) With a map whose meta group is on node 1 alone, group-0 calls never
 * go to node 2 (which would answer "not hosted"): while node 1 elects the
 * call keeps asking it until the deadline and fails with its answer; once
 * it leads, the refresh gets the newer map. */
static void test_meta_calls_stay_on_replicas(void **state)
{
    (void)state;
    mg_cmap *m1 = make_rpc_map("rc-meta", 1);
    mg_cmap *m2 = make_rpc_map("rc-meta", 2);
    fake_rpc a, b;
    fake_rpc_init(&a, 1, "inproc://rc-meta-1");
    a.hosts_meta = true;
    a.map = m2;
    atomic_store(&a.electing, -1);
    fake_rpc_init(&b, 2, "inproc://rc-meta-2");
    fake_rpc_start(&a);
    fake_rpc_start(&b);
    mg_client *c = open_seeded(NULL, 0, m1);
    static const uint8_t body[] = {0x80};
    mg_client_reply rep = {0};
    mg_error err = {0};
    int rc = mg_client_call1(c, "", MG_OP_META_GET, 0, body, sizeof body, &rep, &err);
    mg_client_reply_free(&rep);
    mg_error err1 = err;
    int electing_gets = atomic_load(&a.meta_gets);
    mg_error rerr = {0};
    int rrc = mg_client_refresh(c, &rerr);
    mg_error rerr1 = rerr;
    atomic_store(&a.electing, 0); /* node 1 leads now */
    usleep(30 * 1000);            /* past the refresh's reuse window */
    int rrc2 = mg_client_refresh(c, &rerr);
    uint64_t epoch = mg_client_epoch(c);
    mg_client_close(c);
    fake_rpc_stop(&a);
    fake_rpc_stop(&b);
    free(m1);
    free(m2);
    /* The deadline ends the retries: with node 1's answer, or (on a loaded
     * machine) while the last request to it is still out. Never node 2's. */
    if (rc == MG_ENOTLEADER)
        assert_string_equal(err1.msg, "not the leader (electing)");
    else
        assert_int_equal(rc, MG_ETIMEDOUT);
    assert_null(strstr(err1.msg, "not hosted"));
    assert_true(electing_gets >= 2); /* asked again, not given up on */
    assert_true(rrc == MG_ENOTLEADER || rrc == MG_ETIMEDOUT);
    assert_null(strstr(rerr1.msg, "not hosted"));
    if (rrc2 != MG_OK)
        fail_msg("refresh: %s", rerr.msg);
    assert_int_equal(epoch, 2);
    assert_int_equal(atomic_load(&b.meta_gets), 0);
    assert_int_equal(atomic_load(&b.not_hosted), 0);
    assert_int_equal(atomic_load(&a.bad), 0);
    assert_int_equal(atomic_load(&b.bad), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_map_routes_and_is_saved, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_map, setup, teardown),
        cmocka_unit_test(test_survey_waits_for_connection),
        cmocka_unit_test(test_survey_unconnected_node_missing),
        cmocka_unit_test(test_survey_connection_drop),
        cmocka_unit_test(test_seeds_unreachable),
        cmocka_unit_test(test_seed_not_initialized),
        cmocka_unit_test(test_seed_cluster_meta_unreachable),
        cmocka_unit_test(test_seed_names_meta_nodes),
        cmocka_unit_test(test_probe_of_foreign_node),
        cmocka_unit_test(test_meta_calls_stay_on_replicas),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
