/*
 * memgrid serve durability and lifecycle: SIGKILL during writes loses no
 * acknowledged write; SIGTERM stops cleanly (exit 0) and a restart keeps the
 * data; start-up is quick (reported; asserted only loosely, since timing on
 * a shared machine is not a test's business).
 */
#include "serve_harness.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#define WRITERS 4
#define MAX_ACKED 200000

static serve S;
static char (*acked_ids)[40];
static atomic_long n_acked;
static atomic_int writers_stop;

static int group_setup(void **state)
{
    (void)state;
    curl_global_init(CURL_GLOBAL_ALL);
    acked_ids = calloc(MAX_ACKED, sizeof *acked_ids);
    return acked_ids ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    serve_cleanup(&S);
    free(acked_ids);
    curl_global_cleanup();
    return 0;
}

static void *writer_main(void *arg)
{
    int t = (int)(intptr_t)arg;
    CURL *c = curl_easy_init();
    for (long i = 0; !atomic_load(&writers_stop); i++) {
        char body[256];
        snprintf(body, sizeof body,
                 "{\"user_id\":\"crash_u%d\",\"memory_content\":\"writer %d entry %ld\"}", t % 2, t,
                 i);
        http_res r;
        if (http_do(c, &S, "POST", "/product/add", body, strlen(body), &r) != 0) {
            http_res_clear(&r);
            break; /* the server is gone */
        }
        if (r.status == 200) {
            const char *id = json_string_value(
                json_object_get(json_array_get(json_object_get(r.json, "data"), 0), "memory_id"));
            long k = atomic_fetch_add(&n_acked, 1);
            if (id != NULL && k < MAX_ACKED)
                snprintf(acked_ids[k], sizeof acked_ids[k], "%s", id);
        }
        http_res_clear(&r);
    }
    curl_easy_cleanup(c);
    return NULL;
}

/* Every acknowledged id is readable (get_memory_by_ids, in chunks). */
static void check_all_present(long n)
{
    const long chunk = 500;
    for (long from = 0; from < n; from += chunk) {
        json_t *ids = json_array();
        long to = from + chunk < n ? from + chunk : n;
        for (long i = from; i < to; i++)
            json_array_append_new(ids, json_string(acked_ids[i]));
        http_res r;
        assert_int_equal(http_post_json(&S, "/product/get_memory_by_ids", ids, &r), 0);
        json_decref(ids);
        assert_int_equal(r.status, 200);
        size_t got = json_array_size(json_object_get(json_object_get(r.json, "data"), "memories"));
        if ((long)got != to - from)
            fprintf(stderr, "ids %ld..%ld: %zu of %ld present\n", from, to, got, to - from);
        assert_int_equal((long)got, to - from);
        http_res_clear(&r);
    }
}

static void test_sigkill_during_writes(void **state)
{
    (void)state;
    assert_int_equal(serve_start(&S, NULL, NULL), 0);
    fprintf(stderr, "serve_crash_test: first start ready in %.0f ms\n", S.ready_ms);
    assert_true(S.ready_ms < 5000);
    pthread_t th[WRITERS];
    for (int t = 0; t < WRITERS; t++)
        assert_int_equal(pthread_create(&th[t], NULL, writer_main, (void *)(intptr_t)t), 0);
    usleep(2500 * 1000);
    long before_kill = atomic_load(&n_acked);
    assert_true(before_kill > 0);
    assert_int_equal(serve_stop(&S, SIGKILL, 5000), 128 + SIGKILL);
    atomic_store(&writers_stop, 1);
    for (int t = 0; t < WRITERS; t++)
        pthread_join(th[t], NULL);
    long n = atomic_load(&n_acked);
    if (n > MAX_ACKED)
        n = MAX_ACKED;
    fprintf(stderr, "serve_crash_test: %ld writes acknowledged before SIGKILL\n", n);

    assert_int_equal(serve_start(&S, S.dir, NULL), 0);
    fprintf(stderr, "serve_crash_test: restart ready in %.0f ms\n", S.ready_ms);
    check_all_present(n);

    /* Counting agrees: at least the acknowledged ones (a write in flight at
     * the kill may have been applied without its answer arriving). */
    long total = 0;
    for (int u = 0; u < 2; u++) {
        char body[128];
        snprintf(body, sizeof body, "{\"mem_cube_id\":\"crash_u%d\",\"page\":1,\"page_size\":1}", u);
        http_res r;
        assert_int_equal(http_post(&S, "/product/get_memory", body, &r), 0);
        assert_int_equal(r.status, 200);
        total += (long)json_integer_value(json_object_get(
            json_array_get(json_object_get(json_object_get(r.json, "data"), "text_mem"), 0),
            "total_nodes"));
        http_res_clear(&r);
    }
    assert_true(total >= n && total <= n + WRITERS);
    assert_int_equal(serve_stop(&S, SIGTERM, 15000), 0);
}

static void test_sigterm_restart_keeps_data(void **state)
{
    (void)state;
    /* Reuses the data directory of the test above. */
    assert_int_equal(serve_start(&S, S.dir, NULL), 0);
    http_res r;
    assert_int_equal(http_post(&S, "/product/add",
                               "{\"user_id\":\"term_u\",\"memory_content\":\"The boiler was "
                               "serviced in October\"}",
                               &r),
                     0);
    assert_int_equal(r.status, 200);
    char id[40];
    snprintf(id, sizeof id, "%s",
             json_string_value(json_object_get(
                 json_array_get(json_object_get(r.json, "data"), 0), "memory_id")));
    http_res_clear(&r);
    assert_int_equal(serve_stop(&S, SIGTERM, 15000), 0);

    assert_int_equal(serve_start(&S, S.dir, NULL), 0);
    assert_int_equal(http_post(&S, "/product/search",
                               "{\"user_id\":\"term_u\",\"query\":\"when was the boiler "
                               "serviced\"}",
                               &r),
                     0);
    assert_int_equal(r.status, 200);
    const json_t *mems = json_object_get(
        json_array_get(json_object_get(json_object_get(r.json, "data"), "text_mem"), 0),
        "memories");
    assert_int_equal(json_array_size(mems), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(mems, 0), "id")), id);
    http_res_clear(&r);
    /* The earlier acknowledged writes are still there too. */
    long n = atomic_load(&n_acked);
    check_all_present(n > MAX_ACKED ? MAX_ACKED : n);
    /* SIGINT stops it cleanly as well. */
    assert_int_equal(serve_stop(&S, SIGINT, 15000), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sigkill_during_writes),
        cmocka_unit_test(test_sigterm_restart_keeps_data),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
