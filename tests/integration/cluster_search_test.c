/*
 * A 3-node cluster (real processes on loopback, made by POST /admin/init
 * with 3 data groups) answers searches spanning cubes in several shard
 * groups exactly as one-process `memgrid serve` does on the same adds: same
 * memories, same order, same scores (the same built-in embedder on both).
 * Each cube's group is asked with `memgrid ctl slots --cube ID --json`; the
 * cubes span every data group, and each group holds exactly the cubes and
 * memories the slot map gives it (GET /admin/groups "cubes"/"memories").
 */
#include "cluster_harness.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#define N_CUBES 30
#define N_DATA_GROUPS 3

static cluster cl;
static serve one;

static const char *topics[] = {"hiking in the Alps", "baking sourdough bread",
                               "learning the cello", "training for a marathon",
                               "growing tomatoes",   "reading Russian novels"};

static void post_ok(const serve *s, const char *path, const char *body)
{
    http_res r;
    int rc = http_post(s, path, body, &r);
    if (rc != 0 || r.status != 200)
        fprintf(stderr, "%s %s -> %ld %s\n", s->base, path, r.status, r.body ? r.body : "");
    assert_int_equal(rc, 0);
    assert_int_equal(r.status, 200);
    http_res_clear(&r);
}

/* The same adds on both: N_CUBES cubes of user "u", a few memories each. */
static void load(const serve *s)
{
    char body[512];
    for (int i = 0; i < N_CUBES; i++) {
        snprintf(body, sizeof body,
                 "{\"cube_name\":\"c%02d\",\"owner_id\":\"u\",\"cube_id\":\"cube-%02d\"}", i, i);
        post_ok(s, "/product/create_cube", body);
        for (int j = 0; j < 3; j++) {
            snprintf(body, sizeof body,
                     "{\"user_id\":\"u\",\"writable_cube_ids\":[\"cube-%02d\"],"
                     "\"memory_content\":\"Note %d of cube %d: I enjoy %s with friend %d\"}",
                     i, j, i, topics[(i + j) % 6], (i * 7 + j) % 11);
            post_ok(s, "/product/add", body);
        }
    }
}

static int setup(void **state)
{
    (void)state;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (serve_start(&one, NULL, NULL) != 0)
        return -1;
    if (cluster_start(&cl, 3, N_DATA_GROUPS, 300, NULL) != 0)
        return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    cluster_cleanup(&cl);
    serve_cleanup(&one);
    return 0;
}

/* "memory|relativity" per hit of each cube entry of text_mem, in order. */
static char *summarize(const http_res *r)
{
    json_t *tm = json_object_get(json_object_get(r->json, "data"), "text_mem");
    size_t cap = 1 << 16, len = 0;
    char *out = calloc(1, cap);
    size_t i, j;
    json_t *entry, *m;
    json_array_foreach(tm, i, entry)
    {
        len += (size_t)snprintf(out + len, cap - len, "[%s]",
                                json_string_value(json_object_get(entry, "cube_id")));
        json_array_foreach(json_object_get(entry, "memories"), j, m)
        {
            json_t *md = json_object_get(m, "metadata");
            len += (size_t)snprintf(out + len, cap - len, " %s|%.6f;",
                                    json_string_value(json_object_get(m, "memory")),
                                    json_real_value(json_object_get(md, "relativity")));
        }
    }
    return out;
}

static void test_cluster_search_matches_serve(void **state)
{
    (void)state;
    load(&one);
    load(&cl.router);

    /* Where each cube lives, by the slot map (ctl slots --cube). The
     * probe's default cube ("cluster-probe", one memory) counts too. */
    int want_cubes[N_DATA_GROUPS + 1] = {0}, want_mems[N_DATA_GROUPS + 1] = {0};
    for (int i = 0; i <= N_CUBES; i++) {
        char id[16];
        if (i < N_CUBES)
            snprintf(id, sizeof id, "cube-%02d", i);
        else
            snprintf(id, sizeof id, "cluster-probe");
        int rc;
        json_t *d = cluster_ctl_json(&cl.router, &rc, "slots", "--cube", id, NULL);
        assert_int_equal(rc, 0);
        json_t *cube = json_object_get(d, "cube");
        assert_string_equal(json_string_value(json_object_get(cube, "id")), id);
        json_int_t slot = json_integer_value(json_object_get(cube, "slot"));
        json_int_t g = json_integer_value(json_object_get(cube, "group"));
        assert_true(slot >= 0 && slot < 4096);
        assert_true(g >= 1 && g <= N_DATA_GROUPS);
        /* The slot map's ranges say the same. */
        bool in_range = false;
        size_t k;
        json_t *run;
        json_array_foreach(json_object_get(d, "ranges"), k, run)
        {
            if (slot >= json_integer_value(json_object_get(run, "first")) &&
                slot <= json_integer_value(json_object_get(run, "last")))
                in_range = json_integer_value(json_object_get(run, "group")) == g;
        }
        assert_true(in_range);
        want_cubes[g]++;
        want_mems[g] += i < N_CUBES ? 3 : 1;
        json_decref(d);
    }
    for (int g = 1; g <= N_DATA_GROUPS; g++)
        assert_true(want_cubes[g] > 0);

    /* Each group holds exactly those (the figures come from the nodes'
     * gauges, refreshed at most once a second: poll). */
    bool same = false;
    int got_cubes[N_DATA_GROUPS + 1], got_mems[N_DATA_GROUPS + 1];
    for (int attempt = 0; attempt < 50 && !same; attempt++) {
        if (attempt > 0)
            usleep(200000);
        json_t *groups = cluster_admin_get(&cl.router, "/admin/groups");
        assert_true(json_is_array(groups));
        memset(got_cubes, 0xff, sizeof got_cubes);
        memset(got_mems, 0xff, sizeof got_mems);
        size_t k;
        json_t *gr;
        json_array_foreach(groups, k, gr)
        {
            json_int_t g = json_integer_value(json_object_get(gr, "id"));
            if (g >= 1 && g <= N_DATA_GROUPS) {
                got_cubes[g] = (int)json_integer_value(json_object_get(gr, "cubes"));
                got_mems[g] = (int)json_integer_value(json_object_get(gr, "memories"));
            }
        }
        json_decref(groups);
        same = true;
        for (int g = 1; g <= N_DATA_GROUPS; g++)
            same = same && got_cubes[g] == want_cubes[g] && got_mems[g] == want_mems[g];
    }
    for (int g = 1; g <= N_DATA_GROUPS; g++)
        fprintf(stderr, "group %d: %d cubes, %d memories (slot map says %d, %d)\n", g, got_cubes[g],
                got_mems[g], want_cubes[g], want_mems[g]);
    assert_true(same);

    const char *queries[] = {"who do I go hiking with", "bread baking", "music lessons",
                             "running a marathon", "garden vegetables"};
    int compared = 0;
    for (size_t q = 0; q < 5; q++) {
        for (int start = 0; start < N_CUBES; start += 10) {
            char body[1024];
            int len = snprintf(body, sizeof body,
                               "{\"user_id\":\"u\",\"query\":\"%s\","
                               "\"dedup\":\"no\",\"top_k\":5,\"relativity\":0.001,"
                               "\"readable_cube_ids\":[",
                               queries[q]);
            for (int i = start; i < start + 10; i++)
                len += snprintf(body + len, sizeof body - (size_t)len, "%s\"cube-%02d\"",
                                i > start ? "," : "", i);
            snprintf(body + len, sizeof body - (size_t)len, "]}");
            http_res a, b;
            assert_int_equal(http_post(&one, "/product/search", body, &a), 0);
            assert_int_equal(http_post(&cl.router, "/product/search", body, &b), 0);
            assert_int_equal(a.status, 200);
            assert_int_equal(b.status, 200);
            char *sa = summarize(&a), *sb = summarize(&b);
            /* Hits clipped to relativity 0 tie in an arbitrary order: they are left
             * out with relativity 0.001. */
            assert_true(strlen(sa) > 100);
            if (strcmp(sa, sb) != 0)
                fprintf(stderr, "serve:   %s\ncluster: %s\n", sa, sb);
            assert_string_equal(sa, sb);
            free(sa);
            free(sb);
            http_res_clear(&a);
            http_res_clear(&b);
            compared++;
        }
    }
    assert_int_equal(compared, 15);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cluster_search_matches_serve),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
