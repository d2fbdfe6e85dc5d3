/*
 * A 3-node cluster (static topology, real processes on loopback) answers
 * searches spanning cubes in several shard groups exactly as one-process
 * `memgrid serve` does on the same adds: same memories, same order, same
 * scores (the same built-in embedder on both).
 */
#include "cluster_harness.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#define N_CUBES 30
#define N_DATA_GROUPS 3

static cluster cl;
static serve one;

static const char *topics[] = {"hiking in the Alps", "baking sourdough bread",
                               "learning the cello", "training for a marathon",
                               "growing tomatoes", "reading Russian novels"};

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
    json_array_foreach(tm, i, entry) {
        len += (size_t)snprintf(out + len, cap - len, "[%s]",
                                json_string_value(json_object_get(entry, "cube_id")));
        json_array_foreach(json_object_get(entry, "memories"), j, m) {
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

    /* The cubes span every data group of the cluster's even slot split. */
    bool group_seen[N_DATA_GROUPS + 1] = {false};
    for (int i = 0; i < N_CUBES; i++) {
        char id[16];
        snprintf(id, sizeof id, "cube-%02d", i);
        uint64_t slot = XXH3_64bits(id, strlen(id)) % 4096;
        group_seen[1 + slot * N_DATA_GROUPS / 4096] = true; /* router/http.c */
    }
    for (int g = 1; g <= N_DATA_GROUPS; g++)
        assert_true(group_seen[g]);

    const char *queries[] = {"who do I go hiking with", "bread baking", "music lessons",
                             "running a marathon", "garden vegetables"};
    int compared = 0;
    for (size_t q = 0; q < 5; q++) {
        for (int start = 0; start < N_CUBES; start += 10) {
            char body[1024];
            int len = snprintf(body, sizeof body, "{\"user_id\":\"u\",\"query\":\"%s\","
                               "\"dedup\":\"no\",\"top_k\":5,\"relativity\":0.001,"
                               "\"readable_cube_ids\":[", queries[q]);
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
