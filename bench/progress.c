/*
 * The progress line: once a second while a phase runs, on stderr,
 *   [  12s measure] A 5123 req/s p50 0.41 ms p99 1.30 ms err 0 | B ...
 * rewritten in place on a terminal, one line per second otherwise.
 * It reads the clients' counters and histograms while they record
 * (lib/histogram.h allows that).
 */
#include "harness_internal.h"
#include "lib/clock.h"

#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int main_op(const run *r, const phase *ph)
{
    if (ph->kind == PH_LOAD || ph->kind == PH_LOCOMO_ADD)
        return BENCH_OP_ADD;
    if (ph->kind == PH_WORKLOAD && r->cfg->workload == BENCH_INGEST)
        return BENCH_OP_ADD;
    return BENCH_OP_SEARCH;
}

static uint64_t phase_requests(const run *r, const phase *ph, size_t ti, bool errors)
{
    uint64_t n = 0;
    for (unsigned c = 0; c < r->nclients; c++)
        for (int op = 0; op < BENCH_OPS; op++)
            n += atomic_load_explicit(errors ? &r->clients[c].err[ti][ph->counting][op]
                                             : &r->clients[c].req[ti][ph->counting][op],
                                      memory_order_relaxed);
    return n;
}

static void print_line(run *r, phase *ph, mg_hist *scratch, uint64_t *last_n, double dt, bool tty)
{
    char line[512];
    size_t len = 0;
    double elapsed = (double)(mg_clock_mono_ns() - ph->t0) / 1e9;
    len += (size_t)snprintf(line + len, sizeof line - len, "[%5.0fs %s]", elapsed, ph->name);
    uint64_t done = atomic_load_explicit(&ph->done, memory_order_relaxed);
    if (ph->nops != UINT64_MAX && len < sizeof line)
        len +=
            (size_t)snprintf(line + len, sizeof line - len, " %llu/%llu", (unsigned long long)done,
                             (unsigned long long)(ph->nops / (ph->interval_ns > 0 ? r->nt : 1)));
    int op = main_op(r, ph);
    for (size_t ti = 0; ti < r->nt && len < sizeof line; ti++) {
        uint64_t n = phase_requests(r, ph, ti, false);
        uint64_t e = phase_requests(r, ph, ti, true);
        double rate = dt > 0 ? (double)(n - last_n[ti]) / dt : 0.0;
        last_n[ti] = n;
        len += (size_t)snprintf(line + len, sizeof line - len, "%s %s %.0f req/s", ti ? " |" : "",
                                r->t[ti]->label, rate);
        if (ph->counting == COUNT_MEASURE && len < sizeof line) {
            mg_hist_reset(scratch);
            for (unsigned c = 0; c < r->nclients; c++)
                mg_hist_merge(scratch, r->clients[c].hist[ti][op]);
            static const double qs[2] = {0.5, 0.99};
            uint64_t v[2];
            mg_hist_quantiles(scratch, qs, 2, v);
            len += (size_t)snprintf(line + len, sizeof line - len, " %s p50 %.2f ms p99 %.2f ms",
                                    bench_op_names[op], (double)v[0] / 1e6, (double)v[1] / 1e6);
        }
        if (len < sizeof line)
            len +=
                (size_t)snprintf(line + len, sizeof line - len, " err %llu", (unsigned long long)e);
    }
    if (tty)
        fprintf(stderr, "\r\033[K%s", line);
    else
        fprintf(stderr, "%s\n", line);
    fflush(stderr);
}

static void *progress_main(void *arg)
{
    run *r = arg;
    phase *ph = r->ph;
    bool tty = isatty(STDERR_FILENO) != 0;
    mg_hist *scratch = mg_hist_new();
    if (scratch == NULL)
        return NULL;
    uint64_t last_n[2] = {0, 0};
    uint64_t last = ph->t0, next = ph->t0 + 1000000000u;
    while (!atomic_load(&ph->finished)) {
        uint64_t now = mg_clock_mono_ns();
        if (now < next) {
            uint64_t wait = next - now;
            if (wait > 100000000u)
                wait = 100000000u; /* notice the end of the phase within 0.1 s */
            struct timespec ts = {0, (long)wait};
            nanosleep(&ts, NULL);
            continue;
        }
        print_line(r, ph, scratch, last_n, (double)(now - last) / 1e9, tty);
        last = now;
        next += 1000000000u;
    }
    if (tty)
        fprintf(stderr, "\r\033[K");
    mg_hist_free(scratch);
    return NULL;
}

void progress_start(run *r, phase *ph)
{
    (void)ph;
    r->progress_running = false;
    if (r->progress == 0)
        return;
    if (r->progress < 0 && !isatty(STDERR_FILENO))
        return;
    r->progress_running = pthread_create(&r->progress_thread, NULL, progress_main, r) == 0;
}

void progress_stop(run *r)
{
    if (r->progress_running)
        pthread_join(r->progress_thread, NULL);
    r->progress_running = false;
}
