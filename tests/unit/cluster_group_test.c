/*
 * The group runtime (cluster/group.c) with real raft_uv I/O on loopback and
 * real stores, three replicas on one loop in this process: the applier
 * (entries applied off the loop, in order), snapshots taken while applies
 * go on, a follower brought back by snapshot install, restarts, barriers.
 */
#include "../../cluster/group.h"
#include "../../cluster/store_guard.h"
#include "../../cluster/workload.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <ftw.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define N_REPLICAS 3
#define CUBE "c"
#define DIM 8

typedef struct cluster {
    uv_loop_t loop;
    char root[64];
    mg_group_peer peers[N_REPLICAS];
    mg_group *g[N_REPLICAS];
    mg_group_tunables tun;
    unsigned closing;
} cluster;

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

/* Runs the loop until cond(arg) holds; fails the test after timeout_ms. */
static void run_until(cluster *c, bool (*cond)(cluster *c, void *arg), void *arg, int timeout_ms)
{
    uint64_t end = uv_now(&c->loop) + (uint64_t)timeout_ms;
    while (!cond(c, arg)) {
        uv_update_time(&c->loop);
        if (uv_now(&c->loop) > end) {
            for (unsigned i = 0; i < N_REPLICAS; i++) {
                if (c->g[i] == NULL)
                    continue;
                uint64_t n = 0;
                (void)mg_store_mem_count(mg_group_store(c->g[i]), "c", &n, NULL);
                struct raft *r = mg_group_raft(c->g[i]);
                print_message(
                    "replica %u: state %d count %llu store applied %llu raft "
                    "applied %llu commit %llu last %llu stored %llu snap pending "
                    "%llu/%llu put %p\n",
                    i + 1, mg_group_raft_state(c->g[i]), (unsigned long long)n,
                    (unsigned long long)mg_store_applied(mg_group_store(c->g[i])),
                    (unsigned long long)raft_last_applied(r), (unsigned long long)r->commit_index,
                    (unsigned long long)raft_last_index(r), (unsigned long long)r->last_stored,
                    (unsigned long long)r->snapshot.pending.term,
                    (unsigned long long)r->snapshot.pending.index, r->snapshot.put.data);
            }
            fail_msg("timed out");
        }
        uv_run(&c->loop, UV_RUN_NOWAIT);
        usleep(200);
    }
}

static void replica_open(cluster *c, unsigned i)
{
    char raft_dir[128], store_dir[128];
    snprintf(raft_dir, sizeof raft_dir, "%s/r%u/raft", c->root, i + 1);
    snprintf(store_dir, sizeof store_dir, "%s/r%u/store", c->root, i + 1);
    mg_group_config cfg = {.group_id = 1,
                           .replica_id = i + 1,
                           .address = c->peers[i].address,
                           .raft_dir = raft_dir,
                           .store_dir = store_dir,
                           .bootstrap = c->peers,
                           .n_bootstrap = N_REPLICAS,
                           .tunables = &c->tun};
    mg_error err = {0};
    int rc = mg_group_open(&c->loop, &cfg, &c->g[i], &err);
    if (rc == MG_OK)
        rc = mg_group_start(c->g[i], &err);
    if (rc != MG_OK)
        fail_msg("replica %u: %s", i + 1, err.msg);
}

static void on_closed(mg_group *g, void *arg)
{
    (void)g;
    ((cluster *)arg)->closing--;
}

static bool none_closing(cluster *c, void *arg)
{
    (void)arg;
    return c->closing == 0;
}

static void replica_close(cluster *c, unsigned i)
{
    c->closing++;
    mg_group_close(c->g[i], on_closed, c);
    c->g[i] = NULL;
    run_until(c, none_closing, NULL, 10000);
}

static bool has_leader(cluster *c, void *arg)
{
    int *l = arg;
    for (unsigned i = 0; i < N_REPLICAS; i++)
        if (c->g[i] != NULL && mg_group_is_leader(c->g[i])) {
            *l = (int)i;
            return true;
        }
    return false;
}

static int leader(cluster *c)
{
    int l = -1;
    run_until(c, has_leader, &l, 15000);
    return l;
}

static cluster *cluster_new(unsigned snapshot_threshold)
{
    cluster *c = calloc(1, sizeof *c);
    assert_int_equal(uv_loop_init(&c->loop), 0);
    snprintf(c->root, sizeof c->root, "/tmp/mg-group-XXXXXX");
    assert_non_null(mkdtemp(c->root));
    mg_group_tunables_default(&c->tun);
    c->tun.snapshot_threshold = snapshot_threshold;
    c->tun.snapshot_trailing = 4;
    c->tun.batch_max_bytes = 4096; /* many entries */
    c->tun.store_sync = MG_STORE_SYNC_NONE;
    /* raft ignores an InstallSnapshot that arrives while the follower takes
     * its own snapshot, and the leader sends it again only after this */
    c->tun.install_snapshot_timeout_ms = 1000;
    for (unsigned i = 0; i < N_REPLICAS; i++) {
        int port = free_port();
        assert_true(port > 0);
        c->peers[i].id = i + 1;
        snprintf(c->peers[i].address, sizeof c->peers[i].address, "127.0.0.1:%d", port);
    }
    for (unsigned i = 0; i < N_REPLICAS; i++)
        replica_open(c, i);
    return c;
}

static void cluster_free(cluster *c)
{
    for (unsigned i = 0; i < N_REPLICAS; i++)
        if (c->g[i] != NULL)
            replica_close(c, i);
    uv_run(&c->loop, UV_RUN_NOWAIT);
    assert_int_equal(uv_loop_close(&c->loop), 0);
    nftw(c->root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(c);
}

/* ---- writes ------------------------------------------------------------- */

typedef struct put {
    mg_group_proposal p;
    int status;
    bool done;
    size_t n_ok;
} put;

static void put_done(mg_group_proposal *p, int status, const mg_cmd_outcome *o, size_t n)
{
    put *w = p->data;
    w->done = true;
    w->status = status;
    if (status == MG_OK && n == 1 && o[0].code == MG_OK)
        w->n_ok = o[0].n_ops;
}

typedef struct puts_state {
    put *w;
    size_t n;
} puts_state;

static bool all_done(cluster *c, void *arg)
{
    (void)c;
    puts_state *s = arg;
    for (size_t i = 0; i < s->n; i++)
        if (!s->w[i].done)
            return false;
    return true;
}

static void propose_cube(cluster *c, int l)
{
    mg_cmd cmd = {0};
    mg_error err = {0};
    put w = {.p.data = &w};
    assert_int_equal(mg_workload_cube_cmd(&cmd, CUBE, DIM, &err), MG_OK);
    assert_int_equal(mg_group_propose(c->g[l], &w.p, &cmd, 1, put_done, &err), MG_OK);
    mg_cmd_clear(&cmd);
    puts_state s = {&w, 1};
    run_until(c, all_done, &s, 10000);
    assert_int_equal(w.status, MG_OK);
}

/* Memories first..first+n-1, `per` to a proposal, all proposed at once. */
static void put_all(cluster *c, int l, uint64_t first, size_t n, size_t per)
{
    size_t n_props = (n + per - 1) / per;
    put *w = calloc(n_props, sizeof *w);
    mg_error err = {0};
    for (size_t i = 0; i < n_props; i++) {
        mg_cmd cmd = {0};
        size_t k = i * per, m = n - k < per ? n - k : per;
        assert_int_equal(mg_workload_put_cmd(&cmd, CUBE, first + k, m, DIM, &err), MG_OK);
        w[i].p.data = &w[i];
        assert_int_equal(mg_group_propose(c->g[l], &w[i].p, &cmd, 1, put_done, &err), MG_OK);
        mg_cmd_clear(&cmd);
    }
    puts_state s = {w, n_props};
    run_until(c, all_done, &s, 30000);
    size_t ok = 0;
    for (size_t i = 0; i < n_props; i++) {
        assert_int_equal(w[i].status, MG_OK);
        ok += w[i].n_ok;
    }
    assert_int_equal(ok, n);
    free(w);
}

static uint64_t count_of(mg_group *g)
{
    uint64_t n = 0;
    assert_int_equal(mg_store_mem_count(mg_group_store(g), CUBE, &n, NULL), MG_OK);
    return n;
}

static uint64_t digest_of(mg_group *g)
{
    uint64_t d = 0;
    assert_int_equal(mg_store_digest(mg_group_store(g), &d, NULL), MG_OK);
    return d;
}

/* Every open replica holds `n` memories and the same data. */
static bool converged(cluster *c, void *arg)
{
    uint64_t n = *(uint64_t *)arg, d0 = 0;
    bool first = true;
    for (unsigned i = 0; i < N_REPLICAS; i++) {
        if (c->g[i] == NULL)
            continue;
        if (count_of(c->g[i]) != n)
            return false;
        uint64_t d = digest_of(c->g[i]);
        if (!first && d != d0)
            return false;
        d0 = d;
        first = false;
    }
    return true;
}

/* ---- barrier ------------------------------------------------------------ */

typedef struct barrier_state {
    mg_group_barrier_req req;
    bool done;
    int status;
    uint64_t count_at_cb;
    mg_group *g;
} barrier_state;

static void barrier_cb(mg_group_barrier_req *b, int status)
{
    barrier_state *s = b->data;
    s->done = true;
    s->status = status;
    s->count_at_cb = count_of(s->g);
}

static bool barrier_done(cluster *c, void *arg)
{
    (void)c;
    return ((barrier_state *)arg)->done;
}

/* ---- tests -------------------------------------------------------------- */

/* Writes are acknowledged once applied on the leader; every replica ends up
 * with the same data; snapshots are taken while entries keep coming. */
static void test_replicate_with_snapshots(void **state)
{
    (void)state;
    cluster *c = cluster_new(16);
    int l = leader(c);
    propose_cube(c, l);
    put_all(c, l, 0, 600, 3);
    /* acknowledged means applied here */
    assert_int_equal(count_of(c->g[l]), 600);
    uint64_t n = 600;
    run_until(c, converged, &n, 20000);
    assert_true(mg_group_fsm(c->g[l])->stats.snapshots > 0);
    assert_true(mg_group_last_applied(c->g[l]) > 0);
    cluster_free(c);
}

/* A barrier answers once the store holds every entry before it. */
static void test_barrier_after_writes(void **state)
{
    (void)state;
    cluster *c = cluster_new(1024);
    int l = leader(c);
    propose_cube(c, l);
    put_all(c, l, 0, 200, 2);
    barrier_state b = {.req.data = &b, .g = c->g[l]};
    mg_error err = {0};
    assert_int_equal(mg_group_barrier(c->g[l], &b.req, barrier_cb, &err), MG_OK);
    run_until(c, barrier_done, &b, 10000);
    assert_int_equal(b.status, MG_OK);
    assert_int_equal(b.count_at_cb, 200);
    /* a follower refuses */
    unsigned f = (unsigned)(l + 1) % N_REPLICAS;
    assert_int_equal(mg_group_barrier(c->g[f], &b.req, barrier_cb, &err), MG_ENOTLEADER);
    cluster_free(c);
}

/* A follower that was away while the leader snapshotted and dropped the log
 * comes back by snapshot install; restarts replay nothing twice. */
static void test_catch_up_by_snapshot_and_restart(void **state)
{
    (void)state;
    cluster *c = cluster_new(16);
    int l = leader(c);
    propose_cube(c, l);
    put_all(c, l, 0, 100, 2);
    uint64_t n = 100;
    run_until(c, converged, &n, 20000);
    unsigned f = (unsigned)(l + 1) % N_REPLICAS;
    replica_close(c, f);
    put_all(c, l, 100, 1200, 2); /* several snapshots: the log it needs is gone */
    replica_open(c, f);
    n = 1300;
    run_until(c, converged, &n, 30000);
    assert_true(mg_group_fsm(c->g[f])->stats.restores > 0);

    /* everyone restarts from disk */
    uint64_t d = digest_of(c->g[l]);
    for (unsigned i = 0; i < N_REPLICAS; i++)
        replica_close(c, i);
    for (unsigned i = 0; i < N_REPLICAS; i++)
        replica_open(c, i);
    l = leader(c);
    put_all(c, l, 1300, 10, 1);
    n = 1310;
    run_until(c, converged, &n, 30000);
    for (unsigned i = 0; i < N_REPLICAS; i++)
        assert_int_equal(mg_group_fsm(c->g[i])->stats.entries_applied <= 10 + 2, true);
    assert_true(digest_of(c->g[l]) != d);
    cluster_free(c);
}

static bool file_exists(const char *path)
{
    return access(path, F_OK) == 0;
}

/* A store written without fsync carries this boot's marker while open; a
 * clean close syncs it and drops the marker; a marker from another boot (the
 * machine stopped) makes the replica rebuild its store from its own raft
 * snapshot and log. */
static void test_store_rebuilt_after_machine_stop(void **state)
{
    (void)state;
    cluster *c = cluster_new(16);
    int l = leader(c);
    propose_cube(c, l);
    put_all(c, l, 0, 300, 2);
    uint64_t n = 300;
    run_until(c, converged, &n, 20000);
    unsigned f = (unsigned)(l + 1) % N_REPLICAS;
    char marker[320], store[256];
    snprintf(store, sizeof store, "%s/r%u/store", c->root, f + 1);
    snprintf(marker, sizeof marker, "%s/%s", store, MG_STORE_GUARD_FILE);
    assert_true(file_exists(marker));
    uint64_t d = digest_of(c->g[f]);
    replica_close(c, f);
    assert_false(file_exists(marker)); /* synced and clean */

    /* the same boot (a process restart): the store is kept as it is */
    replica_open(c, f);
    assert_true(file_exists(marker));
    run_until(c, converged, &n, 20000);
    assert_int_equal(mg_group_fsm(c->g[f])->stats.restores, 0);
    assert_int_equal(mg_group_fsm(c->g[f])->stats.entries_applied, 0);
    replica_close(c, f);

    /* another boot left its marker: rebuilt from the snapshot and the log */
    FILE *m = fopen(marker, "w");
    assert_non_null(m);
    fputs("00000000-0000-0000-0000-000000000000", m);
    fclose(m);
    replica_open(c, f);
    run_until(c, converged, &n, 20000);
    assert_true(digest_of(c->g[f]) == d);
    /* rebuilt, not kept: by its snapshot when it had one, else by the log */
    const mg_fsm_stats *st = &mg_group_fsm(c->g[f])->stats;
    assert_true(st->restores == 1 || st->entries_applied > 0);
    char boot[37], now[37] = "";
    assert_true(mg_store_guard_boot_id(boot));
    m = fopen(marker, "r");
    assert_non_null(m);
    assert_non_null(fgets(now, sizeof now, m));
    fclose(m);
    assert_string_equal(now, boot);
    put_all(c, leader(c), 300, 10, 1);
    n = 310;
    run_until(c, converged, &n, 20000);
    cluster_free(c);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN); /* a closed replica's peers write to dead sockets */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_replicate_with_snapshots),
        cmocka_unit_test(test_barrier_after_writes),
        cmocka_unit_test(test_catch_up_by_snapshot_and_restart),
        cmocka_unit_test(test_store_rebuilt_after_machine_stop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
