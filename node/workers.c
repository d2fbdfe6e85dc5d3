#include "workers.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

struct mg_workers {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    mg_worker_job *head, *tail;
    bool stopping;
    unsigned n;
    pthread_t threads[];
};

static void *worker_main(void *arg)
{
    mg_workers *w = arg;
    pthread_mutex_lock(&w->lock);
    for (;;) {
        while (w->head == NULL && !w->stopping)
            pthread_cond_wait(&w->cond, &w->lock);
        mg_worker_job *job = w->head;
        if (job == NULL)
            break; /* stopping and drained */
        w->head = job->next;
        if (w->head == NULL)
            w->tail = NULL;
        pthread_mutex_unlock(&w->lock);
        job->next = NULL;
        job->fn(job);
        pthread_mutex_lock(&w->lock);
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

int mg_workers_start(unsigned n, mg_workers **out, mg_error *err)
{
    if (n == 0)
        n = 1;
    mg_workers *w = calloc(1, sizeof *w + n * sizeof w->threads[0]);
    if (w == NULL)
        return mg_error_set(err, MG_ENOMEM, "out of memory for the worker pool");
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->cond, NULL);
    for (unsigned i = 0; i < n; i++) {
        int rv = pthread_create(&w->threads[i], NULL, worker_main, w);
        if (rv != 0) {
            mg_workers_stop(w); /* joins the w->n started so far */
            return mg_error_set(err, MG_EIO, "starting a worker thread: %s", strerror(rv));
        }
        w->n++;
    }
    *out = w;
    return MG_OK;
}

void mg_workers_submit(mg_workers *w, mg_worker_job *job)
{
    job->next = NULL;
    pthread_mutex_lock(&w->lock);
    if (w->tail != NULL)
        w->tail->next = job;
    else
        w->head = job;
    w->tail = job;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
}

void mg_workers_stop(mg_workers *w)
{
    if (w == NULL)
        return;
    pthread_mutex_lock(&w->lock);
    w->stopping = true;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->lock);
    for (unsigned i = 0; i < w->n; i++)
        pthread_join(w->threads[i], NULL);
    pthread_mutex_destroy(&w->lock);
    pthread_cond_destroy(&w->cond);
    free(w);
}
