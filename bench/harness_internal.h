/*
 * Shared by the parts of the run (harness.c, harness_locomo.c,
 * progress.c): the state of a round, its phases and its client threads.
 */
#ifndef MG_BENCH_HARNESS_INTERNAL_H
#define MG_BENCH_HARNESS_INTERNAL_H

#include "api.h"
#include "bench_internal.h"
#include "corpus.h"
#include "locomo.h"

#include <pthread.h>
#include <stdatomic.h>

/* Seconds of measured time the throughput timeline covers (a day). */
#define TIMELINE_MAX 86400u

enum phase_kind { PH_LOAD, PH_WORKLOAD, PH_LOCOMO_ADD, PH_LOCOMO_SEARCH };
enum phase_counting { COUNT_SETUP = 0, COUNT_WARMUP, COUNT_MEASURE, COUNTINGS };

typedef struct phase {
    const char *name;
    int kind;
    int counting;       /* where its requests are counted; only MEASURE records latency */
    uint64_t nops;      /* ops in the phase (UINT64_MAX: until the deadline) */
    double duration_s;  /* > 0: ends after this long */
    double interval_ns; /* open loop: time between slots; 0 = closed loop */
    unsigned nclients;
    uint64_t salt; /* separates the random streams of phases */
    /* set by run_phase */
    uint64_t t0;           /* mono ns */
    uint64_t deadline;     /* mono ns, 0 = none */
    _Atomic uint64_t next; /* next op (slot) to take */
    _Atomic uint64_t done; /* ops finished */
    _Atomic bool finished;
} phase;

/* One op, built into the client's body buffer. */
typedef struct req_op {
    int op; /* BENCH_OP_ADD, BENCH_OP_SEARCH */
    const char *path;
    uint64_t index;    /* k */
    unsigned messages; /* messages of an add */
} req_op;

struct run;

typedef struct client {
    struct run *run;
    unsigned index;
    pthread_t thread;
    mg_http_conn *conns[2];      /* one keep-alive connection per target */
    mg_hist *hist[2][BENCH_OPS]; /* written by this client only */
    _Atomic uint64_t req[2][COUNTINGS][BENCH_OPS];
    _Atomic uint64_t err[2][COUNTINGS][BENCH_OPS];
    _Atomic uint64_t in_time[2][BENCH_OPS]; /* measured, completed by the deadline */
    _Atomic uint64_t messages[2];
    bench_buf body;
    char (*texts)[MG_CORPUS_TEXT_MAX]; /* batch texts */
    char **text_ptrs;
} client;

/* LoCoMo data of the run and the ids each target gave its turns. */
typedef struct locomo_turn {
    uint32_t conv;
    uint32_t turn;
} locomo_turn;

typedef struct locomo_idmap {
    char **keys;      /* memory ids */
    uint32_t *values; /* flattened turn index */
    size_t cap;       /* power of two */
} locomo_idmap;

typedef struct locomo_state {
    mg_locomo_conv *convs;
    size_t nconvs;         /* loaded */
    size_t used;           /* conversations the run uses */
    char (*cube_ids)[128]; /* per used conversation */
    locomo_turn *turns;    /* every turn of the used conversations */
    size_t nturns;
    locomo_turn *questions; /* (conversation, question) asked */
    size_t nquestions;
    char **ids[2]; /* per round target: memory id of each turn (or NULL) */
    locomo_idmap map[2];
    _Atomic uint64_t hits[2][BENCH_NUM_K];
    _Atomic uint64_t unmatched[2];
} locomo_state;

typedef struct run {
    const bench_config *cfg;
    bench_target *t[2]; /* the round's targets */
    size_t nt;
    mg_corpus *corpus;
    size_t corpus_memories;
    locomo_state lo;
    client *clients;
    unsigned nclients;
    phase *ph;       /* the phase running */
    uint64_t origin; /* mono ns: start of the round's first measured phase */
    _Atomic uint64_t *timeline[2];
    _Atomic uint64_t timeline_len[2];
    pthread_mutex_t lock; /* first_error */
    int progress;         /* as bench_config.progress */
    pthread_t progress_thread;
    bool progress_running;
} run;

/* harness.c */
int run_phase(run *r, phase *ph, mg_error *err);
void phase_init(phase *ph, const char *name, int kind, int counting, unsigned nclients,
                uint64_t salt);
void phase_rate(const run *r, phase *ph);

/* harness_locomo.c */
int locomo_prepare(run *r, mg_error *err);
void locomo_round_reset(run *r);
int locomo_round(run *r, mg_error *err);
void locomo_build_op(run *r, const phase *ph, client *cl, uint64_t k, req_op *o);
void locomo_answer(run *r, const phase *ph, size_t ti, const req_op *o, const char *body,
                   size_t len);
void locomo_release(run *r);

/* progress.c: a line on stderr once a second while a phase runs. */
void progress_start(run *r, phase *ph);
void progress_stop(run *r);

#endif
