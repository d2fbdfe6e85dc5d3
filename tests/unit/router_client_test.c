/*
 * The router's cluster client without nodes (router/client.h): the map it
 * is given or loads from its cache decides the group of a cube, a newer map
 * replaces it (and the cache file, atomically), an older or equal one
 * changes nothing, a broken cache is ignored, and without a map cube calls
 * fail "cluster not initialized" instead of going anywhere.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "lib/cmap.h"
#include "router/client.h"

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
    assert_non_null(strstr(err.msg, "no cluster map")); /* the seed is not up */
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_map_routes_and_is_saved, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_map, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
