/*
 * `memgrid bench --target-kind memos` against memos_fake (MemOS's answer
 * shapes, tests/fixtures/memos_fake.c) on loopback: every workload, closed
 * and open loop, --compare of two fakes (one answering chunked and closing
 * every 7th connection), usage errors and an unreachable target.
 *
 * For each run: the exit status is 0; the JSON's counts match what the fakes
 * served (measured + warm-up + loading requests = the fake's /product count),
 * errors are 0, p50 <= p90 <= p99 <= p99.9 <= max, and the HTML report holds
 * an <svg>. Open loop and --requests runs make exactly the requests asked.
 *
 *   bench_memos_test   (paths of memos_fake, memgrid_bench and the LoCoMo
 *                       data are compiled in)
 *
 * Prints what it does; exits 0 on success, 1 on failure; the fakes are
 * stopped on every exit path.
 */
#include "bench_test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static bt_proc *fakes[2];

static int run_bench(const char *const *args)
{
    return bt_run_bench(MG_BENCH_BIN, args);
}

/* /product requests the fake has served. */
static long long fake_count(const bt_proc *f)
{
    json_t *obj = bt_request(f->url, "/_count", NULL);
    long long n = bt_jint(obj, "product");
    json_decref(obj);
    return n;
}

struct expect {
    long long add, search; /* exact measured counts, or -1 */
};

/* Loads the JSON, checks it against the fakes' counts (deltas since
 * before[]), and returns it (caller decrefs). */
static json_t *check_json(const char *path, const long long *before, size_t ntargets,
                          const struct expect *want)
{
    json_t *root = bt_load_json(path);
    json_t *targets = json_object_get(root, "targets");
    if (json_array_size(targets) != ntargets)
        bt_fail("JSON: %zu targets, expected %zu", json_array_size(targets), ntargets);
    if (bt_jint(root, "errors") != 0)
        bt_fail("JSON: errors %lld", bt_jint(root, "errors"));
    for (size_t i = 0; i < ntargets; i++) {
        json_t *t = json_array_get(targets, i);
        json_t *ops = json_object_get(t, "operations");
        long long add = bt_check_op(ops, "add", want->add > 0);
        long long search = bt_check_op(ops, "search", want->search > 0);
        long long requests = bt_jint(t, "requests");
        if (requests != add + search)
            bt_fail("target %zu: requests %lld != add %lld + search %lld", i, requests, add,
                    search);
        if (want->add >= 0 && add != want->add)
            bt_fail("target %zu: %lld adds measured, expected %lld", i, add, want->add);
        if (want->search >= 0 && search != want->search)
            bt_fail("target %zu: %lld searches measured, expected %lld", i, search, want->search);
        if (bt_jint(t, "setup_errors") != 0)
            bt_fail("target %zu: setup errors", i);
        long long sent = requests + bt_jint(t, "warmup_requests") + bt_jint(t, "setup_requests");
        long long served = fake_count(fakes[i]) - before[i];
        if (sent != served)
            bt_fail("target %zu: JSON says %lld requests sent, the fake served %lld", i, sent,
                    served);
        printf("  target %zu: %lld measured (+%lld warm-up, +%lld loading) = %lld served\n", i,
               requests, bt_jint(t, "warmup_requests"), bt_jint(t, "setup_requests"), served);
    }
    return root;
}

static void counts_now(long long *before, size_t n)
{
    for (size_t i = 0; i < n; i++)
        before[i] = fake_count(fakes[i]);
}

int main(void)
{
    bt_init(240);
    const char *json = bt_path("out.json"), *html = bt_path("report.html");
    const char *fake_a[] = {MG_MEMOS_FAKE_BIN, NULL};
    const char *fake_b[] = {MG_MEMOS_FAKE_BIN, "--chunked", "--close-every", "7", NULL};
    fakes[0] = bt_start(fake_a, "fake_a.log");
    fakes[1] = bt_start(fake_b, "fake_b.log");
    long long before[2];

    /* search, closed loop, with loading, warm-up and a report */
    counts_now(before, 1);
    {
        const char *args[] = {"--target",
                              fakes[0]->url,
                              "--target-kind",
                              "memos",
                              "--workload",
                              "search",
                              "--cubes",
                              "5",
                              "--memories",
                              "200",
                              "--concurrency",
                              "4",
                              "--duration",
                              "1",
                              "--warmup",
                              "0.5",
                              "--cube-prefix",
                              "t-search",
                              "--json",
                              json,
                              "--report",
                              html,
                              NULL};
        if (run_bench(args) != 0)
            bt_fail("search run failed");
        struct expect want = {-1, -1};
        json_t *root = check_json(json, before, 1, &want);
        if (bt_jint(json_array_get(json_object_get(root, "targets"), 0), "setup_requests") != 200)
            bt_fail("search: expected 200 loading adds");
        if (bt_jint(root, "requests") <= 0 || bt_jnum(root, "throughput_per_s") <= 0)
            bt_fail("search: top-level totals missing");
        if (json_object_get(json_object_get(root, "operations"), "search") == NULL)
            bt_fail("search: no top-level operations for a single target");
        json_decref(root);
        bt_check_html(html);
    }

    /* ingest, open loop: 200 req/s for 1 s is exactly 200 requests */
    counts_now(before, 1);
    {
        unlink(html);
        const char *args[] = {"--target",
                              fakes[0]->url,
                              "--target-kind",
                              "memos",
                              "--workload",
                              "ingest",
                              "--rate",
                              "200",
                              "--duration",
                              "1",
                              "--warmup",
                              "0.3",
                              "--batch",
                              "3",
                              "--concurrency",
                              "8",
                              "--cube-prefix",
                              "t-ingest",
                              "--json",
                              json,
                              "--report",
                              html,
                              NULL};
        if (run_bench(args) != 0)
            bt_fail("ingest run failed");
        struct expect want = {200, -1};
        json_t *root = check_json(json, before, 1, &want);
        if (strcmp(json_string_value(json_object_get(root, "mode")), "open") != 0)
            bt_fail("ingest: mode is not open");
        json_t *t = json_array_get(json_object_get(root, "targets"), 0);
        if (bt_jint(t, "messages_in_time") < 500 || bt_jint(t, "messages_in_time") > 600)
            bt_fail("ingest: expected about 600 messages, got %lld",
                    bt_jint(t, "messages_in_time"));
        json_decref(root);
        bt_check_html(html);
    }

    /* mixed, closed loop, a fixed number of requests */
    counts_now(before, 1);
    {
        const char *args[] = {"--target",
                              fakes[0]->url,
                              "--target-kind",
                              "memos",
                              "--workload",
                              "mixed",
                              "--requests",
                              "300",
                              "--read-ratio",
                              "0.5",
                              "--concurrency",
                              "3",
                              "--memories",
                              "100",
                              "--cubes",
                              "3",
                              "--warmup",
                              "0.2",
                              "--cube-prefix",
                              "t-mixed",
                              "--json",
                              json,
                              NULL};
        if (run_bench(args) != 0)
            bt_fail("mixed run failed");
        struct expect want = {-1, -1};
        json_t *root = check_json(json, before, 1, &want);
        json_t *ops =
            json_object_get(json_array_get(json_object_get(root, "targets"), 0), "operations");
        long long add = bt_jint(json_object_get(ops, "add"), "requests");
        long long search = bt_jint(json_object_get(ops, "search"), "requests");
        if (add + search != 300 || add == 0 || search == 0)
            bt_fail("mixed: %lld adds + %lld searches, expected 300 of both kinds", add, search);
        json_decref(root);
    }

    /* locomo with a small --limit */
#ifdef MG_LOCOMO_DIR
    counts_now(before, 1);
    {
        const char *args[] = {"--target",
                              fakes[0]->url,
                              "--target-kind",
                              "memos",
                              "--workload",
                              "locomo",
                              "--data",
                              MG_LOCOMO_DIR,
                              "--limit",
                              "30",
                              "--concurrency",
                              "4",
                              "--cube-prefix",
                              "t-locomo",
                              "--json",
                              json,
                              "--report",
                              html,
                              NULL};
        if (run_bench(args) != 0)
            bt_fail("locomo run failed");
        struct expect want = {-1, 30};
        json_t *root = check_json(json, before, 1, &want);
        double r1 = bt_jnum(root, "recall_at_1"), r5 = bt_jnum(root, "recall_at_5"),
               r10 = bt_jnum(root, "recall_at_10");
        if (!(0 <= r1 && r1 <= r5 && r5 <= r10 && r10 <= 1) || r10 <= 0)
            bt_fail("locomo: recall %g %g %g", r1, r5, r10);
        if (bt_jint(root, "questions") != 30)
            bt_fail("locomo: %lld questions", bt_jint(root, "questions"));
        json_t *t = json_array_get(json_object_get(root, "targets"), 0);
        if (bt_jint(t, "unmatched_memories") != 0)
            bt_fail("locomo: %lld returned memories matched no turn",
                    bt_jint(t, "unmatched_memories"));
        printf("  locomo recall@1/5/10 against keyword search: %.3f %.3f %.3f\n", r1, r5, r10);
        json_decref(root);
        bt_check_html(html);
    }
#endif

    /* --compare, closed loop: every request to both fakes */
    counts_now(before, 2);
    {
        const char *args[] = {"--target",
                              fakes[0]->url,
                              "--target",
                              fakes[1]->url,
                              "--target-kind",
                              "memos",
                              "--compare",
                              "--workload",
                              "search",
                              "--requests",
                              "200",
                              "--concurrency",
                              "4",
                              "--memories",
                              "100",
                              "--cubes",
                              "4",
                              "--warmup",
                              "0.2",
                              "--cube-prefix",
                              "t-cmp",
                              "--json",
                              json,
                              "--report",
                              html,
                              NULL};
        if (run_bench(args) != 0)
            bt_fail("compare run failed");
        struct expect want = {-1, 200};
        json_t *root = check_json(json, before, 2, &want);
        if (bt_jint(json_array_get(json_object_get(root, "targets"), 1), "connections") < 2)
            bt_fail("compare: the closing fake should have made the client reconnect");
        json_decref(root);
        bt_check_html(html);
    }

    /* --compare, open loop: 100 req/s per target for 1 s */
    counts_now(before, 2);
    {
        const char *args[] = {
            "--target",      fakes[0]->url, "--target",   fakes[1]->url, "--target-kind",
            "memos",         "--compare",   "--workload", "ingest",      "--rate",
            "100",           "--duration",  "1",          "--warmup",    "0",
            "--cube-prefix", "t-cmp-open",  "--json",     json,          NULL};
        if (run_bench(args) != 0)
            bt_fail("compare open-loop run failed");
        struct expect want = {100, -1};
        json_decref(check_json(json, before, 2, &want));
    }

    /* Usage errors exit 2, --help 0, an unreachable target 1. */
    {
        const char *bad1[] = {"--workload", "nope", NULL};
        const char *bad2[] = {"--compare", "--target", fakes[0]->url, NULL};
        const char *bad3[] = {"--concurrency", "0", NULL};
        const char *bad4[] = {"--duration", "1", "--requests", "5", NULL};
        const char *bad5[] = {"--target", "ftp://x", NULL};
        const char *help[] = {"--help", NULL};
        const char *down[] = {"--target", "http://127.0.0.1:1", "--duration", "0.2", NULL};
        if (run_bench(bad1) != 2 || run_bench(bad2) != 2 || run_bench(bad3) != 2 ||
            run_bench(bad4) != 2 || run_bench(bad5) != 2)
            bt_fail("a usage error did not exit 2");
        if (run_bench(help) != 0)
            bt_fail("--help did not exit 0");
        if (run_bench(down) != 1)
            bt_fail("an unreachable target did not exit 1");
    }

    bt_finish();
    printf("PASS\n");
    return 0;
}
