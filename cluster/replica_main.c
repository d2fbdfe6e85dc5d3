/*
 * mg_group_replica: one replica of one shard group as a process, for the
 * real-I/O integration test and bench/raft_bench. It hosts group 1 under
 * --data with raft_uv on disk and raft_uv_tcp on loopback, and is driven by
 * a line protocol on stdin; replies go to stdout, one line each:
 *
 *   status                      → status <L|F|C|U> <leader id> <raft applied> <store count>
 *   cube <cube_id> <dim>        → ok | err <ERRNAME>
 *   put <first> <count> <per> <conc> <dim> <acks>
 *       proposes synthetic memories first..first+count-1 (cluster/workload.h)
 *       into cube "bench", <per> per proposal, at most <conc> proposals in
 *       flight; with acks=1 prints "ack <k> <n>" / "nack <k> <n> <ERR>" per
 *       proposal; finally
 *                               → done <ok> <failed> <elapsed ns> <p50 us> <p99 us>
 *       The memories are built before the clock starts: making them is the
 *       client's work (a node receives them built); validating and encoding
 *       them (mg_group_propose) is timed.
 *   missing <first> <count>     → "missing <k>" per absent memory, then "end <n>"
 *   digest                      → digest <hex> <store applied> <store count>
 *   barrier                     → ok | err <ERRNAME>
 *   quit                        → closes everything and exits 0
 *
 * It exits when stdin closes, and dies with its parent (PR_SET_PDEATHSIG).
 *
 * Usage: mg_group_replica --id N --data DIR --peers 1=IP:PORT,2=IP:PORT,...
 *                         [--election-ms MS] [--join]
 */
#include "../lib/clock.h"
#include "../lib/log.h"
#include "host.h"
#include "workload.h"

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#define CUBE "bench"
#define MAX_PEERS 8

typedef struct put_req {
    mg_group_proposal p;
    uint64_t first;
    size_t n;
    uint64_t t0;
} put_req;

typedef struct put_job {
    bool active;
    uint64_t first, next, end;
    mg_cmd *cmds;            /* built before timing: cmds[(k - first) / per] */
    size_t per;
    unsigned conc, outstanding;
    uint32_t dim;
    bool acks;
    uint64_t ok, failed, t0;
    uint32_t *lat_us;
    size_t n_lat, cap_lat;
    int gen_rc;              /* building the memories (gen_work) */
} put_job;

static struct {
    uv_loop_t *loop;
    uv_pipe_t in;
    char line[4096];
    size_t line_len;
    mg_host *host;
    mg_group *g;
    put_job job;
    uv_work_t gen;           /* builds a put job's memories off the loop */
    mg_group_barrier_req barrier;
    bool quitting;
} R;

static void out(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void out(const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n > sizeof buf - 2)
        n = (int)sizeof buf - 2;
    buf[n++] = '\n';
    size_t off = 0;
    while (off < (size_t)n) {
        ssize_t w = write(1, buf + off, (size_t)n - off);
        if (w <= 0)
            return;
        off += (size_t)w;
    }
}

static uint64_t store_count(void)
{
    uint64_t n = 0;
    (void)mg_store_mem_count(mg_group_store(R.g), CUBE, &n, NULL);
    return n;
}

/* ---- put jobs ----------------------------------------------------------- */

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static void job_finish(void)
{
    put_job *j = &R.job;
    uint64_t ns = mg_clock_mono_ns() - j->t0;
    uint32_t p50 = 0, p99 = 0;
    if (j->n_lat > 0) {
        qsort(j->lat_us, j->n_lat, sizeof *j->lat_us, cmp_u32);
        p50 = j->lat_us[j->n_lat / 2];
        p99 = j->lat_us[(j->n_lat * 99) / 100];
    }
    out("done %llu %llu %llu %u %u", (unsigned long long)j->ok, (unsigned long long)j->failed,
        (unsigned long long)ns, p50, p99);
    free(j->lat_us);
    free(j->cmds); /* each was cleared once proposed */
    memset(j, 0, sizeof *j);
}

static void job_pump(void);

/* Builds the job's memories (thread pool): only the loop's own fields of
 * R.job are read (nothing else touches them until gen_done). */
static void gen_work(uv_work_t *w)
{
    put_job *j = w->data;
    mg_error err = {0};
    size_t n_cmds = (size_t)((j->end - j->first + j->per - 1) / j->per);
    j->gen_rc = MG_OK;
    for (size_t i = 0; i < n_cmds && j->gen_rc == MG_OK; i++) {
        uint64_t k = j->first + i * j->per;
        size_t n = j->end - k < j->per ? (size_t)(j->end - k) : j->per;
        j->gen_rc = mg_workload_put_cmd(&j->cmds[i], CUBE, k, n, j->dim, &err);
    }
    if (j->gen_rc != MG_OK)
        mg_errlog("replica.put", "code=%s msg=\"%s\"", mg_errname(j->gen_rc), err.msg);
}

/* The memories are built: the clock starts. */
static void gen_done(uv_work_t *w, int status)
{
    put_job *j = w->data;
    if (status != 0 || j->gen_rc != MG_OK || R.quitting) {
        size_t n_cmds = (size_t)((j->end - j->first + j->per - 1) / j->per);
        for (size_t i = 0; i < n_cmds; i++)
            mg_cmd_clear(&j->cmds[i]);
        j->failed = j->end - j->first;
        j->next = j->end;
        j->t0 = mg_clock_mono_ns();
        job_finish();
        return;
    }
    j->t0 = mg_clock_mono_ns();
    job_pump();
}

static void put_done(mg_group_proposal *p, int status, const mg_cmd_outcome *o, size_t n)
{
    put_req *pr = p->data;
    put_job *j = &R.job;
    int code = status;
    if (code == MG_OK && (n != 1 || o[0].code != MG_OK))
        code = n == 1 ? o[0].code : MG_EINTERNAL;
    if (code == MG_OK) {
        j->ok += pr->n;
        if (j->n_lat == j->cap_lat) {
            j->cap_lat = j->cap_lat ? 2 * j->cap_lat : 4096;
            j->lat_us = realloc(j->lat_us, j->cap_lat * sizeof *j->lat_us);
        }
        uint64_t us = (mg_clock_mono_ns() - pr->t0) / 1000;
        j->lat_us[j->n_lat++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
        if (j->acks)
            out("ack %llu %zu", (unsigned long long)pr->first, pr->n);
    } else {
        if (j->failed == 0)
            mg_warn("replica.put_failed", "first=%llu code=%s", (unsigned long long)pr->first,
                    mg_errname(code));
        j->failed += pr->n;
        if (j->acks)
            out("nack %llu %zu %s", (unsigned long long)pr->first, pr->n, mg_errname(code));
    }
    free(pr);
    j->outstanding--;
    job_pump();
}

static void job_pump(void)
{
    put_job *j = &R.job;
    if (!j->active)
        return;
    while (j->outstanding < j->conc && j->next < j->end && !R.quitting) {
        size_t n = j->end - j->next < j->per ? (size_t)(j->end - j->next) : j->per;
        mg_cmd *c = &j->cmds[(j->next - j->first) / j->per];
        mg_error err = {0};
        put_req *pr = calloc(1, sizeof *pr);
        int rc = pr ? MG_OK : MG_ENOMEM;
        if (rc == MG_OK) {
            pr->first = j->next;
            pr->n = n;
            pr->t0 = mg_clock_mono_ns();
            pr->p.data = pr;
            rc = mg_group_propose(R.g, &pr->p, c, 1, put_done, &err);
        }
        mg_cmd_clear(c);
        if (rc != MG_OK) {
            free(pr);
            j->failed += n;
            if (j->acks)
                out("nack %llu %zu %s", (unsigned long long)j->next, n, mg_errname(rc));
        } else {
            j->outstanding++;
        }
        j->next += n;
    }
    if (j->outstanding == 0 && j->next >= j->end)
        job_finish();
}

/* ---- commands ----------------------------------------------------------- */

static void cube_done(mg_group_proposal *p, int status, const mg_cmd_outcome *o, size_t n)
{
    int code = status == MG_OK && n == 1 ? o[0].code : status;
    if (code == MG_OK || code == MG_EEXIST)
        out("ok");
    else
        out("err %s", mg_errname(code));
    free(p);
}

static void barrier_done(mg_group_barrier_req *b, int status)
{
    (void)b;
    if (status == MG_OK)
        out("ok");
    else
        out("err %s", mg_errname(status));
}

static void on_host_closed(void *arg)
{
    (void)arg;
    R.host = NULL;
}

static void quit(void)
{
    if (R.quitting)
        return;
    R.quitting = true;
    if (!uv_is_closing((uv_handle_t *)&R.in))
        uv_close((uv_handle_t *)&R.in, NULL);
    mg_host_close(R.host, on_host_closed, NULL);
}

static void handle_line(char *line)
{
    char word[32] = "";
    mg_error err = {0};
    if (sscanf(line, "%31s", word) != 1)
        return;
    if (strcmp(word, "status") == 0) {
        int st = mg_group_raft_state(R.g);
        uint64_t lid;
        mg_group_leader(R.g, &lid, NULL);
        out("status %c %llu %llu %llu", "UFCL"[st >= 0 && st <= 3 ? st : 0],
            (unsigned long long)lid, (unsigned long long)mg_group_last_applied(R.g),
            (unsigned long long)store_count());
    } else if (strcmp(word, "cube") == 0) {
        char cube[MG_CUBE_ID_MAX + 1];
        unsigned dim;
        mg_cmd c = {0};
        if (sscanf(line, "%*s %128s %u", cube, &dim) != 2) {
            out("err EINVAL");
            return;
        }
        mg_group_proposal *p = calloc(1, sizeof *p);
        int rc = mg_workload_cube_cmd(&c, cube, dim, &err);
        if (rc == MG_OK)
            rc = mg_group_propose(R.g, p, &c, 1, cube_done, &err);
        mg_cmd_clear(&c);
        if (rc != MG_OK) {
            free(p);
            out("err %s", mg_errname(rc));
        }
    } else if (strcmp(word, "put") == 0) {
        unsigned long long first, count;
        unsigned per, conc, dim, acks;
        if (R.job.active ||
            sscanf(line, "%*s %llu %llu %u %u %u %u", &first, &count, &per, &conc, &dim,
                   &acks) != 6 ||
            per == 0 || conc == 0) {
            out("done 0 0 0 0 0");
            return;
        }
        size_t n_cmds = (size_t)((count + per - 1) / per);
        mg_cmd *cmds = calloc(n_cmds ? n_cmds : 1, sizeof *cmds);
        if (cmds == NULL) {
            out("done 0 %llu 0 0 0", count);
            return;
        }
        R.job = (put_job){.active = true, .first = first, .next = first, .end = first + count,
                          .cmds = cmds, .per = per, .conc = conc, .dim = dim,
                          .acks = acks != 0};
        /* Built on the thread pool: built here, tens of thousands of
         * memories would hold the loop long enough to lose leadership. */
        R.gen.data = &R.job;
        if (uv_queue_work(R.loop, &R.gen, gen_work, gen_done) != 0) {
            free(cmds);
            memset(&R.job, 0, sizeof R.job);
            out("done 0 %llu 0 0 0", count);
        }
    } else if (strcmp(word, "missing") == 0) {
        unsigned long long first, count, n = 0;
        if (sscanf(line, "%*s %llu %llu", &first, &count) != 2) {
            out("end 0");
            return;
        }
        for (uint64_t k = first; k < first + count; k++) {
            uint8_t id[16];
            mg_item it = {0};
            mg_workload_id(k, id);
            int rc = mg_store_mem_get(mg_group_store(R.g), CUBE, id, &it, NULL, NULL, NULL);
            mg_item_clear(&it);
            if (rc != MG_OK) {
                out("missing %llu", (unsigned long long)k);
                n++;
            }
        }
        out("end %llu", n);
    } else if (strcmp(word, "digest") == 0) {
        uint64_t d = 0;
        int rc = mg_store_digest(mg_group_store(R.g), &d, &err);
        out("digest %016llx %llu %llu rc=%d", (unsigned long long)d,
            (unsigned long long)mg_store_applied(mg_group_store(R.g)),
            (unsigned long long)store_count(), rc);
    } else if (strcmp(word, "barrier") == 0) {
        int rc = mg_group_barrier(R.g, &R.barrier, barrier_done, &err);
        if (rc != MG_OK)
            out("err %s", mg_errname(rc));
    } else if (strcmp(word, "quit") == 0) {
        quit();
    } else {
        out("err EINVAL unknown command");
    }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    static char chunk[65536];
    (void)h;
    (void)suggested;
    buf->base = chunk;
    buf->len = sizeof chunk;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    (void)s;
    if (nread < 0) { /* EOF or error: the driver is gone */
        quit();
        return;
    }
    for (ssize_t i = 0; i < nread; i++) {
        char c = buf->base[i];
        if (c == '\n') {
            R.line[R.line_len] = '\0';
            handle_line(R.line);
            R.line_len = 0;
        } else if (R.line_len + 1 < sizeof R.line) {
            R.line[R.line_len++] = c;
        }
    }
}

/* ---- main --------------------------------------------------------------- */

static int parse_peers(const char *s, mg_group_peer *peers, size_t *n)
{
    *n = 0;
    while (*s != '\0') {
        unsigned long long id;
        char addr[MG_ADDRESS_MAX];
        int used = 0;
        if (*n == MAX_PEERS || sscanf(s, "%llu=%63[^,]%n", &id, addr, &used) != 2 || id == 0)
            return -1;
        peers[*n].id = id;
        snprintf(peers[*n].address, sizeof peers[*n].address, "%s", addr);
        (*n)++;
        s += used;
        if (*s == ',')
            s++;
    }
    return *n > 0 ? 0 : -1;
}

int main(int argc, char **argv)
{
    unsigned long long id = 0;
    const char *data = NULL, *peers_arg = NULL;
    bool join = false;
    mg_group_tunables tun;
    mg_group_tunables_default(&tun);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--id") == 0 && i + 1 < argc)
            id = strtoull(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--data") == 0 && i + 1 < argc)
            data = argv[++i];
        else if (strcmp(argv[i], "--peers") == 0 && i + 1 < argc)
            peers_arg = argv[++i];
        else if (strcmp(argv[i], "--election-ms") == 0 && i + 1 < argc)
            tun.election_timeout_ms = (unsigned)strtoul(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--join") == 0)
            join = true;
        else {
            fprintf(stderr, "usage: mg_group_replica --id N --data DIR --peers "
                            "1=IP:PORT,... [--election-ms MS] [--join]\n");
            return 2;
        }
    }
    /* Tunable overrides for experiments (defaults otherwise). */
    const char *env;
    if ((env = getenv("MEMGRID_MAX_INFLIGHT")) != NULL)
        tun.max_inflight = (unsigned)strtoul(env, NULL, 10);
    if ((env = getenv("MEMGRID_BATCH_BYTES")) != NULL)
        tun.batch_max_bytes = strtoul(env, NULL, 10);
    if ((env = getenv("MEMGRID_SNAPSHOT_THRESHOLD")) != NULL)
        tun.snapshot_threshold = (unsigned)strtoul(env, NULL, 10);
    if ((env = getenv("MEMGRID_STORE_SYNC")) != NULL)
        tun.store_sync = (int)strtol(env, NULL, 10);
    mg_group_peer peers[MAX_PEERS];
    size_t n_peers;
    if (id == 0 || data == NULL || peers_arg == NULL || parse_peers(peers_arg, peers, &n_peers)) {
        fprintf(stderr, "mg_group_replica: --id, --data and --peers are required\n");
        return 2;
    }
    const char *address = NULL;
    for (size_t i = 0; i < n_peers; i++)
        if (peers[i].id == id)
            address = peers[i].address;
    if (address == NULL) {
        fprintf(stderr, "mg_group_replica: id %llu is not in --peers\n", id);
        return 2;
    }
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    signal(SIGPIPE, SIG_IGN);

    mg_error err = {0};
    R.loop = uv_default_loop();
    if (mg_host_open(R.loop, data, &R.host, &err) != MG_OK ||
        mg_host_add_group(R.host, 1, id, address, join ? NULL : peers, join ? 0 : n_peers, &tun,
                          &R.g, &err) != MG_OK) {
        fprintf(stderr, "mg_group_replica: %s\n", err.msg);
        return 1;
    }
    uv_pipe_init(R.loop, &R.in, 0);
    if (uv_pipe_open(&R.in, 0) != 0 || uv_read_start((uv_stream_t *)&R.in, on_alloc, on_read)) {
        fprintf(stderr, "mg_group_replica: cannot read stdin\n");
        return 1;
    }
    out("ready %llu", id);
    uv_run(R.loop, UV_RUN_DEFAULT);
    uv_loop_close(R.loop);
    return 0;
}
