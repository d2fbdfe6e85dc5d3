/*
 * A fixed pool of worker threads that run jobs in FIFO order. Reads and
 * searches run here so that no scan ever runs on the loop thread that drives
 * Raft.
 */
#ifndef MG_NODE_WORKERS_H
#define MG_NODE_WORKERS_H

#include "../lib/error.h"

#include <stddef.h>

typedef struct mg_worker_job mg_worker_job;
typedef void (*mg_worker_fn)(mg_worker_job *job);

/* Caller-allocated (usually embedded in a larger struct); must stay valid
 * until fn has returned. */
struct mg_worker_job {
    mg_worker_fn fn;
    mg_worker_job *next; /* private */
};

typedef struct mg_workers mg_workers;

/* Starts n (≥ 1) threads. MG_ENOMEM, MG_EIO (thread creation). */
int mg_workers_start(unsigned n, mg_workers **out, mg_error *err);

/* Queues a job (any thread). Jobs submitted after mg_workers_stop began are
 * still run. */
void mg_workers_submit(mg_workers *w, mg_worker_job *job);

/* Runs every job queued, then joins the threads and frees the pool. No job
 * may be submitted once it returned. */
void mg_workers_stop(mg_workers *w);

#endif
