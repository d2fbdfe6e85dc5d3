/*
 * memgrid serve under load: 64 concurrent clients (each its own keep-alive
 * connection) adding and searching for a while (SERVE_LOAD_SECONDS, default
 * 12). Every request must succeed, and afterwards each cube must hold exactly
 * the memories whose adds were acknowledged.
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
#include <time.h>

#include <cmocka.h>

#define CLIENTS 64
#define USERS 8

static serve S;
static atomic_long acked[USERS];
static atomic_long searches, errors;
static atomic_int stop_flag;

static const char *const words[] = {
    "garden", "coffee", "mountain", "piano",  "train",  "budget", "doctor", "sister",
    "recipe", "holiday", "meeting", "python", "soccer", "novel",  "bakery", "river",
};

static void *client_main(void *arg)
{
    int t = (int)(intptr_t)arg;
    CURL *c = curl_easy_init();
    unsigned seed = (unsigned)t * 2654435761u + 1;
    char user[32];
    snprintf(user, sizeof user, "load_u%d", t % USERS);
    long i = 0;
    while (!atomic_load(&stop_flag)) {
        char body[512];
        const char *path;
        seed = seed * 1103515245u + 12345u;
        bool add = (seed >> 16) % 2 == 0;
        const char *w1 = words[(seed >> 8) % 16], *w2 = words[(seed >> 20) % 16];
        if (add) {
            path = "/product/add";
            snprintf(body, sizeof body,
                     "{\"user_id\":\"%s\",\"async_mode\":\"sync\",\"memory_content\":\"client %d "
                     "note %ld about the %s and the %s\"}",
                     user, t, i, w1, w2);
        } else {
            path = "/product/search";
            snprintf(body, sizeof body,
                     "{\"user_id\":\"%s\",\"query\":\"what about the %s?\",\"top_k\":5}", user,
                     w1);
        }
        http_res r;
        int rc = http_do(c, &S, "POST", path, body, strlen(body), &r);
        if (rc != 0 || r.status != 200 || !is_envelope(&r)) {
            if (atomic_fetch_add(&errors, 1) < 5)
                fprintf(stderr, "client %d: %s -> rc %d status %ld %.300s\n", t, path, rc,
                        r.status, r.body ? r.body : "");
        } else if (add) {
            if (json_array_size(json_object_get(r.json, "data")) == 1)
                atomic_fetch_add(&acked[t % USERS], 1);
            else
                atomic_fetch_add(&errors, 1);
        } else {
            atomic_fetch_add(&searches, 1);
        }
        http_res_clear(&r);
        i++;
    }
    curl_easy_cleanup(c);
    return NULL;
}

static void test_concurrent_clients(void **state)
{
    (void)state;
    int seconds = getenv("SERVE_LOAD_SECONDS") ? atoi(getenv("SERVE_LOAD_SECONDS")) : 12;
    if (seconds < 1)
        seconds = 1;
    pthread_t th[CLIENTS];
    for (int t = 0; t < CLIENTS; t++)
        assert_int_equal(pthread_create(&th[t], NULL, client_main, (void *)(intptr_t)t), 0);
    sleep((unsigned)seconds);
    atomic_store(&stop_flag, 1);
    for (int t = 0; t < CLIENTS; t++)
        pthread_join(th[t], NULL);
    long total = 0;
    for (int u = 0; u < USERS; u++)
        total += atomic_load(&acked[u]);
    fprintf(stderr, "serve_load_test: %d clients, %d s: %ld adds, %ld searches (%.0f req/s), %ld "
                    "errors\n",
            CLIENTS, seconds, total, atomic_load(&searches),
            (double)(total + atomic_load(&searches)) / seconds, atomic_load(&errors));
    assert_int_equal(atomic_load(&errors), 0);
    assert_true(total > 0 && atomic_load(&searches) > 0);

    /* Each cube holds exactly the acknowledged adds. */
    for (int u = 0; u < USERS; u++) {
        char body[128];
        snprintf(body, sizeof body, "{\"mem_cube_id\":\"load_u%d\",\"page\":1,\"page_size\":1}",
                 u);
        http_res r;
        assert_int_equal(http_post(&S, "/product/get_memory", body, &r), 0);
        assert_int_equal(r.status, 200);
        const json_t *b = json_array_get(json_object_get(json_object_get(r.json, "data"), "text_mem"),
                                         0);
        long have = (long)json_integer_value(json_object_get(b, "total_nodes"));
        if (have != atomic_load(&acked[u]))
            fprintf(stderr, "cube load_u%d: %ld memories, %ld acknowledged adds\n", u, have,
                    atomic_load(&acked[u]));
        assert_int_equal(have, atomic_load(&acked[u]));
        http_res_clear(&r);
    }
}

static int group_setup(void **state)
{
    (void)state;
    curl_global_init(CURL_GLOBAL_ALL);
    return serve_start(&S, NULL, NULL);
}

static int group_teardown(void **state)
{
    (void)state;
    int code = serve_stop(&S, SIGTERM, 15000);
    serve_cleanup(&S);
    curl_global_cleanup();
    return code == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_concurrent_clients)};
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
