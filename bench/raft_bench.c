/*
 * raft_bench: a 3-replica shard group in 3 processes (mg_group_replica) on
 * loopback with raft_uv on real disk, default tunables. Measures
 *   - memory puts per second (384-d vectors), one proposal at a time
 *     (sequential) and with many concurrent proposals that the group
 *     coalesces into batched entries;
 *   - commit latency (propose → applied on the leader) p50/p99, sequential;
 *   - failover time: SIGKILL of the leader → the first write acknowledged by
 *     a new leader (median of --rounds).
 * Prints a table, or one JSON object with --json.
 *
 * Usage: raft_bench [--json] [--seq N] [--batched N] [--conc C] [--rounds R]
 */
#include "../cluster/replica_ctl.h"
#include "../lib/clock.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DIM 384

static mg_rcluster C;

static void die(const char *what)
{
    fprintf(stderr, "raft_bench: %s\n", what);
    mg_rcluster_destroy(&C);
    exit(1);
}

typedef struct put_result {
    unsigned long long ok, failed, ns;
    unsigned p50_us, p99_us;
} put_result;

static int run_put(unsigned l, unsigned long long first, unsigned long long count,
                   unsigned conc, put_result *r)
{
    char line[256];
    if (mg_rproc_send(&C.procs[l], "put %llu %llu 1 %u %d 0", first, count, conc, DIM) != 0)
        return -1;
    for (;;) {
        if (mg_rproc_readline(&C.procs[l], line, sizeof line, 120000) != 0)
            return -1;
        if (sscanf(line, "done %llu %llu %llu %u %u", &r->ok, &r->failed, &r->ns, &r->p50_us,
                   &r->p99_us) == 5)
            return 0;
    }
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Waits until replica i reports at least `applied` applied entries. */
static void wait_caught_up(unsigned i, unsigned long long applied)
{
    for (int t = 0; t < 3000; t++) {
        char reply[256];
        unsigned long long a = 0;
        if (mg_rproc_call(&C.procs[i], reply, sizeof reply, 5000, "status") == 0 &&
            sscanf(reply, "status %*c %*u %llu", &a) == 1 && a >= applied)
            return;
        usleep(10000);
    }
}

int main(int argc, char **argv)
{
    bool json = false;
    unsigned long long n_seq = 2000, n_batched = 40000;
    unsigned conc = 256, rounds = 5;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            json = true;
        else if (strcmp(argv[i], "--seq") == 0 && i + 1 < argc)
            n_seq = strtoull(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--batched") == 0 && i + 1 < argc)
            n_batched = strtoull(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--conc") == 0 && i + 1 < argc)
            conc = (unsigned)strtoul(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc)
            rounds = (unsigned)strtoul(argv[++i], NULL, 10);
        else {
            fprintf(stderr, "usage: raft_bench [--json] [--seq N] [--batched N] [--conc C] "
                            "[--rounds R]\n");
            return 2;
        }
    }
    if (rounds == 0 || rounds > 50 || conc == 0)
        return 2;
    signal(SIGPIPE, SIG_IGN);
    /* 0: the replica's default election timeout (400 ms) */
    if (mg_rcluster_init(&C, MG_REPLICA_BIN, 3, 0) != 0)
        die("init");
    for (unsigned i = 0; i < 3; i++)
        if (mg_rcluster_start(&C, i) != 0)
            die("start");
    int l = mg_rcluster_leader(&C, 15000);
    char reply[256];
    if (l < 0 || mg_rproc_call(&C.procs[l], reply, sizeof reply, 10000, "cube bench %d", DIM) ||
        strcmp(reply, "ok") != 0)
        die("leader / cube");

    put_result seq, bat;
    unsigned long long next = 0;
    if (run_put((unsigned)l, next, n_seq, 1, &seq) != 0 || seq.failed)
        die("sequential puts");
    next += n_seq;
    if (run_put((unsigned)l, next, n_batched, conc, &bat) != 0 || bat.failed)
        die("batched puts");
    next += n_batched;

    double failover_ms[50];
    for (unsigned r = 0; r < rounds; r++) {
        l = mg_rcluster_leader(&C, 15000);
        if (l < 0)
            die("no leader before failover");
        unsigned long long applied = 0;
        if (mg_rproc_call(&C.procs[l], reply, sizeof reply, 5000, "status") == 0)
            sscanf(reply, "status %*c %*u %llu", &applied);
        for (unsigned i = 0; i < 3; i++)
            if ((int)i != l)
                wait_caught_up(i, applied);
        uint64_t t0 = mg_clock_mono_ns();
        mg_rcluster_kill(&C, (unsigned)l, SIGKILL);
        uint64_t t1 = 0;
        while (t1 == 0 && mg_clock_mono_ns() - t0 < 30000000000ull) {
            int nl = mg_rcluster_leader(&C, 30000);
            put_result one;
            if (nl < 0)
                break;
            if (run_put((unsigned)nl, next, 1, 1, &one) == 0 && one.ok == 1)
                t1 = mg_clock_mono_ns();
            next++;
        }
        if (t1 == 0)
            die("no write acknowledged after failover");
        failover_ms[r] = (double)(t1 - t0) / 1e6;
        if (mg_rcluster_start(&C, (unsigned)l) != 0)
            die("restart");
    }
    qsort(failover_ms, rounds, sizeof failover_ms[0], cmp_double);
    double median = rounds % 2 ? failover_ms[rounds / 2]
                               : (failover_ms[rounds / 2 - 1] + failover_ms[rounds / 2]) / 2;
    double seq_ps = (double)seq.ok / ((double)seq.ns / 1e9);
    double bat_ps = (double)bat.ok / ((double)bat.ns / 1e9);

    if (json) {
        printf("{\"replicas\":3,\"dim\":%d,\"puts_sequential\":%llu,\"puts_batched\":%llu,"
               "\"concurrency\":%u,\"puts_per_s_sequential\":%.0f,\"puts_per_s_batched\":%.0f,"
               "\"commit_p50_ms\":%.3f,\"commit_p99_ms\":%.3f,\"batched_commit_p50_ms\":%.3f,"
               "\"batched_commit_p99_ms\":%.3f,\"failover_rounds\":%u,"
               "\"failover_ms_median\":%.0f,\"failover_ms_min\":%.0f,"
               "\"failover_ms_max\":%.0f}\n",
               DIM, n_seq, n_batched, conc, seq_ps, bat_ps, seq.p50_us / 1e3, seq.p99_us / 1e3,
               bat.p50_us / 1e3, bat.p99_us / 1e3, rounds, median, failover_ms[0],
               failover_ms[rounds - 1]);
    } else {
        printf("shard group: 3 replicas, 3 processes, loopback, raft_uv on disk, %d-d vectors\n",
               DIM);
        printf("%-36s %12s\n", "measure", "value");
        printf("%-36s %12.0f\n", "puts/s sequential (1 in flight)", seq_ps);
        printf("%-36s %12.0f\n", "puts/s batched (concurrent)", bat_ps);
        printf("%-36s %12u\n", "  concurrent proposals", conc);
        printf("%-36s %12.3f\n", "commit p50 ms (sequential)", seq.p50_us / 1e3);
        printf("%-36s %12.3f\n", "commit p99 ms (sequential)", seq.p99_us / 1e3);
        printf("%-36s %12.3f\n", "commit p50 ms (batched)", bat.p50_us / 1e3);
        printf("%-36s %12.3f\n", "commit p99 ms (batched)", bat.p99_us / 1e3);
        printf("%-36s %12.0f\n", "failover ms median", median);
        printf("%-36s %6.0f..%-5.0f\n", "failover ms min..max", failover_ms[0],
               failover_ms[rounds - 1]);
    }
    for (unsigned i = 0; i < 3; i++)
        (void)mg_rproc_send(&C.procs[i], "quit");
    mg_rcluster_destroy(&C);
    return 0;
}
