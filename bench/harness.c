/*
 * The run: rounds of phases executed by client threads.
 *
 * A round is one target, or with --compare two targets driven together. A
 * phase is a sequence of ops (numbered k = 0, 1, ...) that the clients take
 * in turn from a shared counter until the phase's op count or deadline is
 * reached:
 *   - closed loop: a client takes the next op, sends it, waits for the
 *     answer, and takes the next; latency = answer - send.
 *   - open loop: op k is due at t0 + k / rate; a client takes the next op,
 *     sleeps until it is due and sends it; latency = answer - due time, so
 *     time spent waiting for a free connection (the server being slow) is
 *     counted, which corrects for coordinated omission.
 * With two targets the ops are interleaved: closed loop sends each op to both
 * targets, one after the other, in an order that alternates; open loop gives
 * every op two slots, one per target, alternating which goes first. Both
 * targets thus see the same requests at the same time, under the same
 * machine conditions.
 *
 * Op k of a phase is a pure function of the seed, the phase and k (see
 * build_op), so runs and targets see the same data whichever client sends it.
 */
#include "api.h"
#include "bench_internal.h"
#include "corpus.h"
#include "harness_internal.h"
#include "lib/clock.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const char *const bench_kind_names[] = {"memgrid", "memos"};
const char *const bench_workload_names[] = {"ingest", "search", "mixed", "locomo"};
const char *const bench_op_names[] = {"add", "search"};
const unsigned bench_recall_k[BENCH_NUM_K] = {1, 5, 10};

static atomic_int stop_flag;

void bench_request_stop(void)
{
    atomic_store(&stop_flag, 1);
}

bool bench_stop_requested(void)
{
    return atomic_load_explicit(&stop_flag, memory_order_relaxed) != 0;
}

/* Sleeps until mono_ns, waking at least every 100 ms to notice a stop
 * request (a slow open-loop schedule would otherwise ignore ^C). */
static void sleep_until(uint64_t mono_ns)
{
    for (;;) {
        uint64_t now = mg_clock_mono_ns();
        if (now >= mono_ns || bench_stop_requested())
            return;
        uint64_t wake = mono_ns - now > 100000000u ? now + 100000000u : mono_ns;
        struct timespec ts = {(time_t)(wake / 1000000000u), (long)(wake % 1000000000u)};
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
    }
}

static void sleep_ms(unsigned ms)
{
    sleep_until(mg_clock_mono_ns() + (uint64_t)ms * 1000000u);
}

/* ---- ops ---- */

/* Builds op k of the phase into the client's body buffer. */
static int build_op(run *r, const phase *ph, client *cl, uint64_t k, req_op *o)
{
    const bench_config *cfg = r->cfg;
    o->path = "/product/add";
    o->op = BENCH_OP_ADD;
    o->index = k;
    o->messages = 1;
    bench_add_req add = {0};
    add.async = cfg->async_add;
    add.content = cfg->add_format == BENCH_ADD_CONTENT;

    switch (ph->kind) {
    case PH_LOAD: {
        size_t cube;
        mg_corpus_memory(r->corpus, (size_t)k, &cube, cl->texts[0], MG_CORPUS_TEXT_MAX);
        const char *texts[1] = {cl->texts[0]};
        add.cube = mg_corpus_cube_id(r->corpus, cube);
        add.texts = texts;
        add.ntexts = 1;
        bench_api_add_body(&cl->body, &add);
        break;
    }
    case PH_WORKLOAD: {
        uint64_t rng = mg_corpus_mix(cfg->seed ^ ph->salt, k);
        size_t cube = mg_corpus_pick_cube(r->corpus, mg_corpus_rand(&rng));
        const char *cube_id = mg_corpus_cube_id(r->corpus, cube);
        bool search = cfg->workload == BENCH_SEARCH ||
                      (cfg->workload == BENCH_MIXED &&
                       (double)(mg_corpus_rand(&rng) >> 11) * 0x1.0p-53 < cfg->read_ratio);
        if (search) {
            mg_corpus_question(&rng, cl->texts[0], MG_CORPUS_TEXT_MAX);
            o->op = BENCH_OP_SEARCH;
            o->path = "/product/search";
            bench_api_search_body(&cl->body, cube_id, cl->texts[0], cfg->top_k, cfg->search_extra);
            break;
        }
        unsigned n = add.content ? 1 : cfg->batch;
        for (unsigned i = 0; i < n; i++) {
            mg_corpus_sentence(&rng, cl->texts[i], MG_CORPUS_TEXT_MAX);
            cl->text_ptrs[i] = cl->texts[i];
        }
        add.cube = cube_id;
        add.texts = (const char *const *)cl->text_ptrs;
        add.ntexts = n;
        o->messages = n;
        bench_api_add_body(&cl->body, &add);
        break;
    }
    case PH_LOCOMO_ADD:
    case PH_LOCOMO_SEARCH:
        locomo_build_op(r, ph, cl, k, o);
        break;
    }
    return cl->body.oom ? MG_ENOMEM : MG_OK;
}

static void note_error(run *r, size_t ti, const char *msg)
{
    pthread_mutex_lock(&r->lock);
    if (r->t[ti]->first_error[0] == '\0')
        snprintf(r->t[ti]->first_error, sizeof r->t[ti]->first_error, "%.255s", msg);
    pthread_mutex_unlock(&r->lock);
}

/* Sends op o to target ti; `due` is the scheduled time (open loop) or 0. */
static void send_op(client *cl, size_t ti, const req_op *o, uint64_t due)
{
    run *r = cl->run;
    const phase *ph = r->ph;
    mg_http_response resp;
    mg_error err;
    mg_error_clear(&err);
    uint64_t start = due ? due : mg_clock_mono_ns();
    int rc =
        mg_http_request(cl->conns[ti], "POST", o->path, cl->body.data, cl->body.len, &resp, &err);
    uint64_t end = mg_clock_mono_ns();
    char msg[320];
    bool ok = rc == MG_OK && bench_api_ok(&resp, msg, sizeof msg);
    if (rc != MG_OK)
        snprintf(msg, sizeof msg, "%s", err.msg);
    if (ok && (ph->kind == PH_LOCOMO_ADD || ph->kind == PH_LOCOMO_SEARCH))
        locomo_answer(r, ph, ti, o, resp.body, resp.body_len);

    atomic_fetch_add_explicit(&cl->req[ti][ph->counting][o->op], 1, memory_order_relaxed);
    if (ph->counting == COUNT_MEASURE && (ph->deadline == 0 || end <= ph->deadline))
        atomic_fetch_add_explicit(&cl->in_time[ti][o->op], 1, memory_order_relaxed);
    if (!ok) {
        atomic_fetch_add_explicit(&cl->err[ti][ph->counting][o->op], 1, memory_order_relaxed);
        note_error(r, ti, msg);
        if (rc == MG_EUNAVAIL || rc == MG_ETIMEDOUT)
            sleep_ms(10); /* a dead target: do not spin */
        return;
    }
    if (ph->counting != COUNT_MEASURE)
        return;
    mg_hist_record_local(cl->hist[ti][o->op], end - start);
    if (o->op == BENCH_OP_ADD && (ph->deadline == 0 || end <= ph->deadline))
        atomic_fetch_add_explicit(&cl->messages[ti], o->messages, memory_order_relaxed);
    uint64_t sec = (end - r->origin) / 1000000000u;
    if (sec < TIMELINE_MAX) {
        atomic_fetch_add_explicit(&r->timeline[ti][sec], 1, memory_order_relaxed);
        uint64_t len = atomic_load_explicit(&r->timeline_len[ti], memory_order_relaxed);
        while (sec + 1 > len &&
               !atomic_compare_exchange_weak_explicit(&r->timeline_len[ti], &len, sec + 1,
                                                      memory_order_relaxed, memory_order_relaxed))
            ;
    }
}

static void *client_main(void *arg)
{
    client *cl = arg;
    run *r = cl->run;
    phase *ph = r->ph;
    bool open_loop = ph->interval_ns > 0;
    sleep_until(ph->t0); /* every client starts at t0, the start of the measured time */
    while (!bench_stop_requested()) {
        uint64_t k = atomic_fetch_add_explicit(&ph->next, 1, memory_order_relaxed);
        if (k >= ph->nops)
            break;
        uint64_t due = 0;
        if (open_loop) {
            due = ph->t0 + (uint64_t)((double)k * ph->interval_ns);
            if (ph->deadline && due >= ph->deadline)
                break;
            sleep_until(due);
            if (bench_stop_requested())
                break;
        } else if (ph->deadline && mg_clock_mono_ns() >= ph->deadline) {
            break;
        }
        size_t order[2] = {0, 1}, n_send = 1;
        uint64_t op_index = k;
        if (r->nt == 2 && open_loop) {
            op_index = k / 2;
            order[0] = (size_t)((k & 1) ^ (op_index & 1));
        } else if (r->nt == 2) {
            order[0] = (size_t)(k & 1);
            order[1] = order[0] ^ 1;
            n_send = 2;
        }
        req_op o;
        if (build_op(r, ph, cl, op_index, &o) != MG_OK) {
            note_error(r, 0, "out of memory building a request");
            break;
        }
        for (size_t i = 0; i < n_send; i++)
            send_op(cl, order[i], &o, due);
        atomic_fetch_add_explicit(&ph->done, 1, memory_order_relaxed);
    }
    return NULL;
}

/* ---- phases ---- */

/* Moves the clients' counters and histograms of the phase into the targets. */
static void collect_phase(run *r, const phase *ph, double elapsed_s)
{
    for (size_t ti = 0; ti < r->nt; ti++) {
        bench_target *t = r->t[ti];
        uint64_t op_requests[BENCH_OPS] = {0};
        for (unsigned c = 0; c < r->nclients; c++) {
            client *cl = &r->clients[c];
            for (int op = 0; op < BENCH_OPS; op++) {
                uint64_t req = atomic_exchange(&cl->req[ti][ph->counting][op], 0);
                uint64_t err = atomic_exchange(&cl->err[ti][ph->counting][op], 0);
                op_requests[op] += req;
                switch (ph->counting) {
                case COUNT_SETUP:
                    t->setup_requests += req;
                    t->setup_errors += err;
                    break;
                case COUNT_WARMUP:
                    t->warmup_requests += req;
                    break;
                case COUNT_MEASURE:
                    t->ops[op].requests += req;
                    t->ops[op].errors += err;
                    t->ops[op].in_time += atomic_exchange(&cl->in_time[ti][op], 0);
                    mg_hist_merge(t->ops[op].hist, cl->hist[ti][op]);
                    mg_hist_reset(cl->hist[ti][op]);
                    break;
                }
            }
            t->messages += atomic_exchange(&cl->messages[ti], 0);
        }
        if (ph->counting == COUNT_MEASURE) {
            t->elapsed_s += elapsed_s;
            for (int op = 0; op < BENCH_OPS; op++)
                if (op_requests[op] > 0)
                    t->ops[op].elapsed_s += elapsed_s;
        }
    }
}

int run_phase(run *r, phase *ph, mg_error *err)
{
    if (bench_stop_requested())
        return MG_OK;
    r->ph = ph;
    atomic_store(&ph->next, 0);
    atomic_store(&ph->done, 0);
    atomic_store(&ph->finished, false);
    ph->t0 = mg_clock_mono_ns() + 1000000u; /* clients start together */
    if (ph->counting == COUNT_MEASURE && r->origin == 0)
        r->origin = ph->t0;
    if (ph->duration_s > 0)
        ph->deadline = ph->t0 + (uint64_t)(ph->duration_s * 1e9);
    unsigned started = 0;
    int rc = MG_OK;
    for (unsigned c = 0; c < ph->nclients; c++) {
        if (pthread_create(&r->clients[c].thread, NULL, client_main, &r->clients[c]) != 0) {
            rc = mg_error_set(err, MG_EIO, "cannot start client thread %u", c);
            bench_request_stop();
            break;
        }
        started++;
    }
    progress_start(r, ph);
    for (unsigned c = 0; c < started; c++)
        pthread_join(r->clients[c].thread, NULL);
    uint64_t end = mg_clock_mono_ns();
    atomic_store(&ph->finished, true);
    progress_stop(r);
    /* A timed phase is measured up to its deadline (requests still in flight
     * then are not counted in throughput); a counted one until its last
     * answer. */
    if (ph->deadline != 0 && end > ph->deadline)
        end = ph->deadline;
    collect_phase(r, ph, end > ph->t0 ? (double)(end - ph->t0) / 1e9 : 0.0);
    return rc;
}

/* ---- rounds ---- */

static int check_health(run *r, size_t ti, mg_error *err)
{
    bench_target *t = r->t[ti];
    mg_http_conn *conn = mg_http_conn_new(&t->http, r->cfg->timeout_ms);
    if (conn == NULL)
        return mg_error_set(err, MG_ENOMEM, "out of memory");
    mg_http_response resp;
    int rc = mg_http_request(conn, "GET", "/health", NULL, 0, &resp, err);
    if (rc != MG_OK) {
        mg_http_conn_free(conn);
        return mg_error_wrap(err, rc, "target %s (%s) is not answering", t->label, t->url);
    }
    if (resp.status != 200) {
        int status = resp.status;
        mg_http_conn_free(conn);
        return mg_error_set(err, MG_EUNAVAIL, "target %s: GET %s/health answered HTTP %d", t->label,
                            t->url, status);
    }
    bench_api_health(resp.body, resp.body_len, t->server_service, sizeof t->server_service,
                     t->server_version, sizeof t->server_version);
    mg_http_conn_free(conn);
    return MG_OK;
}

static void clients_free(run *r)
{
    if (r->clients == NULL)
        return;
    for (unsigned c = 0; c < r->nclients; c++) {
        client *cl = &r->clients[c];
        for (size_t ti = 0; ti < 2; ti++) {
            if (cl->conns[ti] != NULL && ti < r->nt)
                r->t[ti]->connections += mg_http_conn_opens(cl->conns[ti]);
            mg_http_conn_free(cl->conns[ti]);
            for (int op = 0; op < BENCH_OPS; op++)
                mg_hist_free(cl->hist[ti][op]);
        }
        bench_buf_free(&cl->body);
        free(cl->texts);
        free(cl->text_ptrs);
    }
    free(r->clients);
    r->clients = NULL;
}

static int clients_new(run *r, unsigned n, mg_error *err)
{
    r->clients = calloc(n, sizeof *r->clients);
    if (r->clients == NULL)
        return mg_error_set(err, MG_ENOMEM, "out of memory");
    r->nclients = n;
    unsigned batch = r->cfg->batch ? r->cfg->batch : 1;
    for (unsigned c = 0; c < n; c++) {
        client *cl = &r->clients[c];
        cl->run = r;
        cl->index = c;
        cl->texts = malloc(batch * sizeof *cl->texts);
        cl->text_ptrs = malloc(batch * sizeof *cl->text_ptrs);
        if (cl->texts == NULL || cl->text_ptrs == NULL)
            return mg_error_set(err, MG_ENOMEM, "out of memory");
        for (size_t ti = 0; ti < r->nt; ti++) {
            cl->conns[ti] = mg_http_conn_new(&r->t[ti]->http, r->cfg->timeout_ms);
            if (cl->conns[ti] == NULL)
                return mg_error_set(err, MG_ENOMEM, "out of memory");
            for (int op = 0; op < BENCH_OPS; op++)
                if ((cl->hist[ti][op] = mg_hist_new()) == NULL)
                    return mg_error_set(err, MG_ENOMEM, "out of memory");
        }
    }
    return MG_OK;
}

void phase_init(phase *ph, const char *name, int kind, int counting, unsigned nclients,
                uint64_t salt)
{
    memset(ph, 0, sizeof *ph);
    ph->name = name;
    ph->kind = kind;
    ph->counting = counting;
    ph->nclients = nclients;
    ph->salt = salt;
    ph->nops = UINT64_MAX; /* until the deadline */
}

/* Open loop at cfg->rate per target: with two targets, two slots per op. */
void phase_rate(const run *r, phase *ph)
{
    if (r->cfg->rate > 0)
        ph->interval_ns = 1e9 / (r->cfg->rate * (double)r->nt);
}

static int run_round(run *r, mg_error *err)
{
    const bench_config *cfg = r->cfg;
    for (size_t ti = 0; ti < r->nt; ti++) {
        int rc = check_health(r, ti, err);
        if (rc != MG_OK)
            return rc;
    }
    unsigned nclients = cfg->concurrency;
    bool load = cfg->load && (cfg->workload == BENCH_SEARCH || cfg->workload == BENCH_MIXED);
    if (load && cfg->load_concurrency > nclients)
        nclients = cfg->load_concurrency;
    int rc = clients_new(r, nclients, err);
    if (rc != MG_OK)
        goto done;
    for (size_t ti = 0; ti < r->nt; ti++)
        atomic_store(&r->timeline_len[ti], 0);
    r->origin = 0;

    phase ph;
    if (cfg->workload == BENCH_LOCOMO) {
        rc = locomo_round(r, err);
        goto done;
    }
    if (load) {
        phase_init(&ph, "load", PH_LOAD, COUNT_SETUP, cfg->load_concurrency, 0);
        ph.nops = r->corpus_memories;
        if ((rc = run_phase(r, &ph, err)) != MG_OK)
            goto done;
        for (size_t ti = 0; ti < r->nt; ti++)
            if (r->t[ti]->setup_errors > 0)
                fprintf(stderr,
                        "bench: warning: target %s: %llu of %llu loading adds failed (%s)\n",
                        r->t[ti]->label, (unsigned long long)r->t[ti]->setup_errors,
                        (unsigned long long)r->t[ti]->setup_requests, r->t[ti]->first_error);
    }
    if (cfg->warmup_s > 0) {
        phase_init(&ph, "warm-up", PH_WORKLOAD, COUNT_WARMUP, cfg->concurrency, 0x7761726dULL);
        phase_rate(r, &ph);
        ph.duration_s = cfg->warmup_s;
        if ((rc = run_phase(r, &ph, err)) != MG_OK)
            goto done;
    }
    phase_init(&ph, "measure", PH_WORKLOAD, COUNT_MEASURE, cfg->concurrency, 0x6d656173ULL);
    phase_rate(r, &ph);
    if (cfg->requests > 0)
        ph.nops = cfg->requests * (ph.interval_ns > 0 ? r->nt : 1);
    else
        ph.duration_s = cfg->duration_s;
    rc = run_phase(r, &ph, err);

done:
    clients_free(r);
    for (size_t ti = 0; ti < r->nt; ti++) {
        bench_target *t = r->t[ti];
        size_t len = (size_t)atomic_load(&r->timeline_len[ti]);
        free(t->timeline);
        t->timeline = malloc((len ? len : 1) * sizeof *t->timeline);
        t->timeline_len = t->timeline ? len : 0;
        for (size_t s = 0; s < t->timeline_len; s++)
            t->timeline[s] = atomic_load(&r->timeline[ti][s]);
        for (size_t s = 0; s < len; s++) /* the next round starts from zero */
            atomic_store(&r->timeline[ti][s], 0);
    }
    return rc;
}

int bench_run(const bench_config *cfg, bench_results *res, mg_error *err)
{
    run r;
    memset(&r, 0, sizeof r);
    r.cfg = cfg;
    pthread_mutex_init(&r.lock, NULL);
    int rc = MG_OK;
    res->cfg = cfg;
    mg_clock_iso8601(mg_clock_wall_us(), res->date);
    res->date[19] = 'Z';
    res->date[20] = '\0';

    for (size_t i = 0; i < 2; i++) {
        r.timeline[i] = calloc(TIMELINE_MAX, sizeof *r.timeline[i]);
        if (r.timeline[i] == NULL) {
            rc = mg_error_set(err, MG_ENOMEM, "out of memory");
            goto done;
        }
    }
    if (cfg->workload == BENCH_LOCOMO) {
        rc = locomo_prepare(&r, err);
    } else {
        mg_corpus_config cc = {cfg->seed, cfg->cubes,
                               (cfg->workload == BENCH_INGEST) ? 0 : cfg->memories, cfg->zipf,
                               cfg->cube_prefix};
        rc = mg_corpus_new(&cc, &r.corpus, err);
        if (rc == MG_OK) {
            r.corpus_memories = 0;
            for (size_t i = 0; i < mg_corpus_cubes(r.corpus); i++)
                r.corpus_memories += mg_corpus_cube_size(r.corpus, i);
        }
    }
    if (rc != MG_OK)
        goto done;

    r.progress = cfg->progress;
    size_t per_round = cfg->compare ? 2 : 1;
    for (size_t first = 0; first < res->ntargets && !bench_stop_requested(); first += per_round) {
        r.nt = per_round;
        for (size_t i = 0; i < per_round; i++)
            r.t[i] = &res->targets[first + i];
        locomo_round_reset(&r);
        rc = run_round(&r, err);
        if (rc != MG_OK)
            break;
    }
    for (size_t i = 0; i < res->ntargets; i++) {
        bench_target *t = &res->targets[i];
        t->requests = t->errors = t->in_time = 0;
        for (int op = 0; op < BENCH_OPS; op++) {
            t->requests += t->ops[op].requests;
            t->errors += t->ops[op].errors;
            t->in_time += t->ops[op].in_time;
        }
    }
    res->interrupted = bench_stop_requested();

done:
    locomo_release(&r);
    mg_corpus_free(r.corpus);
    for (size_t i = 0; i < 2; i++)
        free(r.timeline[i]);
    pthread_mutex_destroy(&r.lock);
    return rc;
}

void bench_results_free(bench_results *res)
{
    for (size_t i = 0; i < res->ntargets; i++) {
        for (int op = 0; op < BENCH_OPS; op++)
            mg_hist_free(res->targets[i].ops[op].hist);
        free(res->targets[i].timeline);
    }
}

double bench_op_throughput(const bench_op_result *op)
{
    return op->elapsed_s > 0 ? (double)op->in_time / op->elapsed_s : 0.0;
}

double bench_target_throughput(const bench_target *t)
{
    return t->elapsed_s > 0 ? (double)t->in_time / t->elapsed_s : 0.0;
}
