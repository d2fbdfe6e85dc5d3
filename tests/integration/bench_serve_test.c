/*
 * `memgrid bench` against the real `memgrid serve` (a free port, --data in a
 * temporary directory): ingest (--target-kind memgrid) and search
 * (--target-kind memos) with exact request counts, the
 * memories the server holds afterwards counted with /product/get_all, a
 * --compare of serve (memgrid) against memos_fake (memos) in one run, and a
 * short LoCoMo pass. serve is stopped on every exit path.
 */
#include "bench_test_util.h"

#include <stdio.h>
#include <string.h>

static bt_proc *serve, *fake;

static int run_bench(const char *const *args)
{
    return bt_run_bench(MG_BENCH_BIN, args);
}

/* Memories serve holds in cubes prefix-c0 .. prefix-c<n-1>. */
static long long memories_in(const char *prefix, int ncubes)
{
    long long total = 0;
    for (int i = 0; i < ncubes; i++) {
        char body[256];
        snprintf(body, sizeof body,
                 "{\"user_id\":\"%s-c%d\",\"memory_type\":\"text_mem\","
                 "\"mem_cube_ids\":[\"%s-c%d\"]}",
                 prefix, i, prefix, i);
        json_t *ans = bt_request(serve->url, "/product/get_all", body);
        if (bt_jint(ans, "code") != 200)
            bt_fail("get_all %s-c%d: %s", prefix, i,
                    json_string_value(json_object_get(ans, "message")));
        json_t *cube = json_array_get(json_object_get(ans, "data"), 0);
        total += (long long)json_array_size(json_object_get(cube, "memories"));
        json_decref(ans);
    }
    return total;
}

static json_t *target(json_t *root, size_t i)
{
    return json_array_get(json_object_get(root, "targets"), i);
}

int main(void)
{
    bt_init(280);
    const char *json = bt_path("out.json"), *html = bt_path("report.html");
    const char *serve_argv[] = {
        MG_MEMGRID_BIN, "serve", "--data", bt_path("serve-data"), "--listen", "127.0.0.1:0",
        "--log",        "warn",  NULL};
    serve = bt_start(serve_argv, "serve.log");
    const char *fake_argv[] = {MG_MEMOS_FAKE_BIN, NULL};
    fake = bt_start(fake_argv, "fake.log");

    /* ingest: 150 measured adds, every one a memory on the server */
    {
        const char *args[] = {
            "--target",      serve->url, "--workload", "ingest", "--requests", "150",
            "--concurrency", "4",        "--cubes",    "3",      "--warmup",   "0.3",
            "--cube-prefix", "bi",       "--json",     json,     NULL};
        if (run_bench(args) != 0)
            bt_fail("ingest against serve failed");
        json_t *root = bt_load_json(json);
        json_t *t = target(root, 0);
        if (bt_check_op(json_object_get(t, "operations"), "add", true) != 150)
            bt_fail("ingest: expected 150 measured adds");
        long long sent = 150 + bt_jint(t, "warmup_requests");
        long long held = memories_in("bi", 3);
        if (held != sent)
            bt_fail("ingest: %lld adds made, serve holds %lld memories", sent, held);
        printf("  ingest: %lld adds, %lld memories held\n", sent, held);
        json_decref(root);
    }

    /* search: 300 memories loaded, 200 measured searches; as a MemOS client
     * would (--target-kind memos sends the same requests) */
    {
        const char *args[] = {"--target",
                              serve->url,
                              "--target-kind",
                              "memos",
                              "--workload",
                              "search",
                              "--memories",
                              "300",
                              "--cubes",
                              "3",
                              "--requests",
                              "200",
                              "--concurrency",
                              "4",
                              "--warmup",
                              "0.3",
                              "--cube-prefix",
                              "bs",
                              "--json",
                              json,
                              "--report",
                              html,
                              NULL};
        if (run_bench(args) != 0)
            bt_fail("search against serve failed");
        json_t *root = bt_load_json(json);
        json_t *t = target(root, 0);
        if (bt_check_op(json_object_get(t, "operations"), "search", true) != 200)
            bt_fail("search: expected 200 measured searches");
        if (bt_jint(t, "setup_requests") != 300 || bt_jint(t, "setup_errors") != 0)
            bt_fail("search: expected 300 loading adds without error");
        long long held = memories_in("bs", 3);
        if (held != 300)
            bt_fail("search: serve holds %lld memories, 300 were loaded", held);
        json_decref(root);
        bt_check_html(html);
    }

    /* --compare: memgrid and a MemOS-shaped server, interleaved */
    {
        const char *args[] = {"--target",
                              serve->url,
                              "--target-kind",
                              "memgrid",
                              "--target",
                              fake->url,
                              "--target-kind",
                              "memos",
                              "--compare",
                              "--workload",
                              "search",
                              "--memories",
                              "100",
                              "--cubes",
                              "2",
                              "--requests",
                              "100",
                              "--concurrency",
                              "2",
                              "--warmup",
                              "0.2",
                              "--cube-prefix",
                              "bc",
                              "--json",
                              json,
                              "--report",
                              html,
                              NULL};
        if (run_bench(args) != 0)
            bt_fail("compare serve vs memos_fake failed");
        json_t *root = bt_load_json(json);
        for (size_t i = 0; i < 2; i++)
            if (bt_check_op(json_object_get(target(root, i), "operations"), "search", true) != 100)
                bt_fail("compare: target %zu did not get 100 searches", i);
        json_decref(root);
        bt_check_html(html);
    }

#ifdef MG_LOCOMO_DIR
    /* LoCoMo, 20 questions: recall comes out of serve's answers */
    {
        const char *args[] = {"--target",
                              serve->url,
                              "--workload",
                              "locomo",
                              "--data",
                              MG_LOCOMO_DIR,
                              "--limit",
                              "20",
                              "--concurrency",
                              "4",
                              "--cube-prefix",
                              "bl",
                              "--json",
                              json,
                              NULL};
        if (run_bench(args) != 0)
            bt_fail("locomo against serve failed");
        json_t *root = bt_load_json(json);
        bt_check_op(json_object_get(root, "operations"), "add", true);
        if (bt_check_op(json_object_get(root, "operations"), "search", true) != 20)
            bt_fail("locomo: expected 20 searches");
        double r10 = bt_jnum(root, "recall_at_10");
        if (!(r10 > 0 && r10 <= 1))
            bt_fail("locomo: recall@10 %g", r10);
        if (bt_jint(target(root, 0), "unmatched_memories") != 0)
            bt_fail("locomo: returned memories that match no turn");
        printf("  locomo (20 questions) recall@10 %.3f\n", r10);
        json_decref(root);
    }
#endif

    bt_finish();
    printf("PASS\n");
    return 0;
}
