/*
 * Real I/O: a 3-replica shard group in 3 processes (mg_group_replica) on
 * loopback with raft_uv on disk. 10,000 memories with 384-d vectors are
 * proposed through the leader (ids assigned before proposing); the leader is
 * SIGKILLed mid-stream; the driver continues against the new leader with
 * everything not yet acknowledged; the killed replica is restarted and
 * catches up. Afterwards every acknowledged write is on every replica and the
 * replicas' digests are equal.
 *
 * Prints what it does; exits 0 on success, 1 on failure. Children are killed
 * on every exit path (and die with the driver in any case).
 */
#include "../../cluster/replica_ctl.h"

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define N_MEM 10000
#define DIM 384
#define KILL_AFTER 3000

static mg_rcluster C;
static unsigned char acked[N_MEM];

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "FAIL: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    mg_rcluster_destroy(&C);
    exit(1);
}

static void on_alarm(int sig)
{
    (void)sig;
    /* async-signal-safe enough: kill the children, leave */
    for (unsigned i = 0; i < C.n; i++)
        if (C.procs[i].pid > 0)
            kill(C.procs[i].pid, SIGKILL);
    _exit(1);
}

static void mark(const char *line, size_t *n_acked)
{
    unsigned long long k, n;
    if (sscanf(line, "ack %llu %llu", &k, &n) == 2)
        for (unsigned long long i = k; i < k + n && i < N_MEM; i++)
            if (!acked[i]) {
                acked[i] = 1;
                (*n_acked)++;
            }
}

/* Puts [first, N_MEM) through replica `l`, reading acks; stops early (returns
 * false) when kill_at is reached, having SIGKILLed the leader. */
static bool run_put(unsigned l, unsigned long long first, size_t *n_acked, size_t kill_at)
{
    char line[256];
    if (mg_rproc_send(&C.procs[l], "put %llu %llu 1 64 %d 1", first,
                      (unsigned long long)N_MEM - first, DIM) != 0)
        fail("send put");
    for (;;) {
        if (mg_rproc_readline(&C.procs[l], line, sizeof line, 30000) != 0)
            fail("no reply from the leader during put");
        if (strncmp(line, "done", 4) == 0) {
            printf("  %s\n", line);
            return true;
        }
        mark(line, n_acked);
        if (kill_at > 0 && *n_acked >= kill_at) {
            mg_rcluster_kill(&C, l, SIGKILL);
            printf("  SIGKILLed leader %u after %zu acknowledged writes\n", l + 1, *n_acked);
            return false;
        }
    }
}

int main(void)
{
    char reply[512];
    size_t n_acked = 0;
    signal(SIGALRM, on_alarm);
    alarm(170);
    if (mg_rcluster_init(&C, MG_REPLICA_BIN, 3, 400) != 0)
        fail("init");
    for (unsigned i = 0; i < 3; i++)
        if (mg_rcluster_start(&C, i) != 0)
            fail("start replica %u", i + 1);
    int l = mg_rcluster_leader(&C, 15000);
    if (l < 0)
        fail("no leader");
    printf("leader: replica %d\n", l + 1);
    if (mg_rproc_call(&C.procs[l], reply, sizeof reply, 10000, "cube bench %d", DIM) != 0 ||
        strcmp(reply, "ok") != 0)
        fail("cube create: %s", reply);

    bool finished = run_put((unsigned)l, 0, &n_acked, KILL_AFTER);
    if (finished)
        fail("the stream ended before the kill");
    unsigned killed = (unsigned)l;

    /* Continue against the new leader with everything not acknowledged. */
    for (int attempt = 0; attempt < 5 && n_acked < N_MEM; attempt++) {
        l = mg_rcluster_leader(&C, 15000);
        if (l < 0)
            fail("no new leader");
        unsigned long long first = 0;
        while (first < N_MEM && acked[first])
            first++;
        printf("new leader: replica %d, re-proposing from %llu\n", l + 1, first);
        run_put((unsigned)l, first, &n_acked, 0);
    }
    if (n_acked != N_MEM)
        fail("only %zu of %d writes acknowledged", n_acked, N_MEM);

    /* The killed replica comes back and catches up from its log. */
    if (mg_rcluster_start(&C, killed) != 0)
        fail("restart replica %u", killed + 1);
    l = mg_rcluster_leader(&C, 15000);
    if (l < 0 || mg_rproc_call(&C.procs[l], reply, sizeof reply, 10000, "barrier") != 0 ||
        strcmp(reply, "ok") != 0)
        fail("barrier");

    char digests[3][128];
    bool same = false;
    for (int t = 0; t < 600 && !same; t++) {
        for (unsigned i = 0; i < 3; i++)
            if (mg_rproc_call(&C.procs[i], digests[i], sizeof digests[i], 10000, "digest"))
                fail("digest from replica %u", i + 1);
        same = true;
        for (unsigned i = 0; i < 3; i++) {
            unsigned long long count = 0;
            if (sscanf(digests[i], "digest %*s %*s %llu", &count) != 1 || count != N_MEM)
                same = false;
        }
        /* the applied index may differ by entries that touch no data */
        for (unsigned i = 1; i < 3; i++)
            if (strncmp(digests[i], digests[0], 23) != 0)
                same = false;
        if (!same)
            usleep(100000);
    }
    for (unsigned i = 0; i < 3; i++)
        printf("replica %u: %s\n", i + 1, digests[i]);
    if (!same)
        fail("replicas did not converge to equal digests and %d memories", N_MEM);

    for (unsigned i = 0; i < 3; i++) {
        size_t lost = 0;
        if (mg_rproc_send(&C.procs[i], "missing 0 %d", N_MEM) != 0)
            fail("send missing");
        for (;;) {
            if (mg_rproc_readline(&C.procs[i], reply, sizeof reply, 30000) != 0)
                fail("missing: no reply");
            unsigned long long k;
            if (sscanf(reply, "missing %llu", &k) == 1) {
                if (k < N_MEM && acked[k])
                    lost++;
                continue;
            }
            break;
        }
        if (lost > 0)
            fail("replica %u lost %zu acknowledged writes", i + 1, lost);
    }
    printf("OK: %d acknowledged writes on all 3 replicas, digests equal\n", N_MEM);
    for (unsigned i = 0; i < 3; i++)
        (void)mg_rproc_send(&C.procs[i], "quit");
    mg_rcluster_destroy(&C);
    return 0;
}
