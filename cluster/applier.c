#include "applier.h"

#include "../lib/clock.h"
#include "../lib/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Bounds of what may wait for the applier before mg_applier_push waits, and
 * how long it waits for room before answering MG_EBUSY. */
#define QUEUE_MAX_JOBS 16
#define QUEUE_MAX_BYTES ((size_t)64 << 20)
#define QUEUE_WAIT_MS 100
/* Finished jobs kept for reuse with their buffers (the loop's only). */
#define CACHE_MAX_JOBS 8
#define CACHE_MAX_BYTES ((size_t)4 << 20)
/* Pause before retrying a failed apply, doubled up to the maximum. */
#define RETRY_FIRST_MS 10
#define RETRY_MAX_MS 1000

typedef struct job {
    mg_applier_job pub;
    uint64_t seq;
    uint8_t *buf; /* the entry (APPLY) */
    size_t len, cap;
    struct job *next;
} job;

struct mg_applier {
    uv_loop_t *loop;
    uv_async_t async;
    mg_fsm *fsm;
    mg_hist *apply_hist; /* borrowed, or NULL */
    mg_applier_done_cb done;
    void *arg;
    pthread_t thread;

    pthread_mutex_t mu;
    pthread_cond_t work;     /* the applier waits here for jobs (and stop) */
    pthread_cond_t progress; /* others wait here for `applied` to move */
    /* under mu */
    job *head, *tail;           /* queued; head is the one being applied */
    job *done_head, *done_tail; /* applied, not yet delivered */
    size_t queued_jobs, queued_bytes;
    uint64_t applied;    /* seq of the last job applied (or given up) */
    uint64_t failed_seq; /* first job not applied at stop (0: none) */
    bool stopping, exited;

    /* loop only */
    uint64_t pushed;    /* seq of the last job pushed */
    uint64_t delivered; /* seq of the last job delivered */
    uint64_t last_done_index;
    job *cache;
    size_t n_cache;
    mg_applier_stop_cb stop_cb;
    void *stop_arg;
};

/* ---- the applier's thread ------------------------------------------------ */

/* The absolute time ms from now, for pthread_cond_timedwait. */
static struct timespec deadline_in(unsigned ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

/* Waits up to ms on `work` (woken early by stop). Called with mu held. */
static void pause_locked(mg_applier *a, unsigned ms)
{
    struct timespec ts = deadline_in(ms);
    if (!a->stopping)
        (void)pthread_cond_timedwait(&a->work, &a->mu, &ts);
}

static void apply_job(mg_applier *a, job *j)
{
    unsigned pause_ms = RETRY_FIRST_MS;
    if (j->pub.kind != MG_APPLIER_APPLY) {
        j->pub.status = MG_OK;
        return;
    }
    for (;;) {
        pthread_mutex_lock(&a->mu);
        bool give_up = a->failed_seq != 0; /* never apply past a hole */
        pthread_mutex_unlock(&a->mu);
        if (give_up) {
            j->pub.status = MG_ESHUTDOWN;
            return;
        }
        mg_error err = {0};
        uint64_t t0 = a->apply_hist != NULL ? mg_clock_mono_ns() : 0;
        int rc = mg_fsm_apply_into(a->fsm, j->pub.index, j->buf, j->len, &j->pub.result, &err);
        if (rc == MG_OK) {
            /* Recorded before the job is handed back, so a proposal's
             * answer comes after its entry's record. */
            if (a->apply_hist != NULL && j->pub.result.applied)
                mg_hist_record(a->apply_hist, mg_clock_mono_ns() - t0);
            j->pub.status = MG_OK;
            return;
        }
        /* Nothing was applied: as raft would, apply the entry again later. */
        mg_errlog("applier.retry", "index=%llu code=%s msg=\"%s\" pause_ms=%u",
                  (unsigned long long)j->pub.index, mg_errname(rc), err.msg, pause_ms);
        pthread_mutex_lock(&a->mu);
        if (!a->stopping)
            pause_locked(a, pause_ms);
        if (a->stopping && a->failed_seq == 0)
            a->failed_seq = j->seq;
        pthread_mutex_unlock(&a->mu);
        pause_ms = pause_ms * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : pause_ms * 2;
    }
}

static void *applier_main(void *arg)
{
    mg_applier *a = arg;
    pthread_mutex_lock(&a->mu);
    for (;;) {
        while (a->head == NULL && !a->stopping)
            pthread_cond_wait(&a->work, &a->mu);
        if (a->head == NULL)
            break; /* stopping, and everything queued is done */
        job *j = a->head;
        pthread_mutex_unlock(&a->mu);
        apply_job(a, j);
        pthread_mutex_lock(&a->mu);
        a->head = j->next;
        if (a->head == NULL)
            a->tail = NULL;
        a->queued_jobs--;
        a->queued_bytes -= j->len;
        j->next = NULL;
        if (a->done_tail != NULL)
            a->done_tail->next = j;
        else
            a->done_head = j;
        a->done_tail = j;
        a->applied = j->seq;
        pthread_cond_broadcast(&a->progress);
        pthread_mutex_unlock(&a->mu);
        uv_async_send(&a->async);
        pthread_mutex_lock(&a->mu);
    }
    a->exited = true;
    pthread_cond_broadcast(&a->progress);
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

/* ---- the loop's side ----------------------------------------------------- */

static void job_free(job *j)
{
    mg_fsm_result_clear(&j->pub.result);
    free(j->buf);
    free(j);
}

static void recycle(mg_applier *a, job *j)
{
    if (a->n_cache >= CACHE_MAX_JOBS || j->cap > CACHE_MAX_BYTES) {
        job_free(j);
        return;
    }
    j->next = a->cache;
    a->cache = j;
    a->n_cache++;
}

static job *job_get(mg_applier *a, size_t len)
{
    job *j = a->cache;
    if (j != NULL) {
        a->cache = j->next;
        a->n_cache--;
    } else if ((j = calloc(1, sizeof *j)) == NULL) {
        return NULL;
    }
    if (len > j->cap) {
        uint8_t *b = realloc(j->buf, len);
        if (b == NULL) {
            recycle(a, j);
            return NULL;
        }
        j->buf = b;
        j->cap = len;
    }
    j->len = len;
    j->next = NULL;
    return j;
}

static void deliver(mg_applier *a)
{
    pthread_mutex_lock(&a->mu);
    job *list = a->done_head;
    a->done_head = a->done_tail = NULL;
    pthread_mutex_unlock(&a->mu);
    while (list != NULL) {
        job *j = list;
        list = j->next;
        a->delivered = j->seq;
        a->last_done_index = j->pub.index;
        a->done(&j->pub, a->arg);
        recycle(a, j);
    }
}

static void on_async(uv_async_t *h)
{
    deliver(h->data);
}

static int enqueue(mg_applier *a, job *j)
{
    pthread_mutex_lock(&a->mu);
    if (a->stopping) {
        pthread_mutex_unlock(&a->mu);
        return MG_ESHUTDOWN;
    }
    /* Bounded memory: wait a little for room (the applier needs nothing
     * from the loop to make it), but never hold the loop for an applier that
     * is stuck (a full disk): raft applies the entry again later. */
    struct timespec until = deadline_in(QUEUE_WAIT_MS);
    while (a->queued_jobs > 0 &&
           (a->queued_jobs >= QUEUE_MAX_JOBS || a->queued_bytes + j->len > QUEUE_MAX_BYTES)) {
        if (pthread_cond_timedwait(&a->progress, &a->mu, &until) == ETIMEDOUT) {
            pthread_mutex_unlock(&a->mu);
            return MG_EBUSY;
        }
    }
    j->seq = ++a->pushed;
    if (a->tail != NULL)
        a->tail->next = j;
    else
        a->head = j;
    a->tail = j;
    a->queued_jobs++;
    a->queued_bytes += j->len;
    pthread_cond_signal(&a->work);
    pthread_mutex_unlock(&a->mu);
    return MG_OK;
}

int mg_applier_push(mg_applier *a, uint64_t index, const void *buf, size_t len, void *owner)
{
    job *j = job_get(a, len);
    if (j == NULL)
        return MG_ENOMEM;
    memcpy(j->buf, buf, len);
    j->pub.kind = MG_APPLIER_APPLY;
    j->pub.index = index;
    j->pub.owner = owner;
    j->pub.status = MG_OK;
    int rc = enqueue(a, j);
    if (rc != MG_OK)
        recycle(a, j);
    return rc;
}

int mg_applier_mark(mg_applier *a, uint64_t index, void *owner)
{
    job *j = job_get(a, 0);
    if (j == NULL)
        return MG_ENOMEM;
    j->pub.kind = MG_APPLIER_MARK;
    j->pub.index = index;
    j->pub.owner = owner;
    j->pub.status = MG_OK;
    int rc = enqueue(a, j);
    if (rc != MG_OK)
        recycle(a, j);
    return rc;
}

uint64_t mg_applier_queued(const mg_applier *a)
{
    return a->pushed;
}

bool mg_applier_idle(const mg_applier *a)
{
    return a->delivered == a->pushed;
}

uint64_t mg_applier_last_done(const mg_applier *a)
{
    return a->last_done_index;
}

bool mg_applier_wait(mg_applier *a, uint64_t seq)
{
    pthread_mutex_lock(&a->mu);
    while (a->applied < seq && !a->exited)
        pthread_cond_wait(&a->progress, &a->mu);
    bool ok = a->applied >= seq && (a->failed_seq == 0 || seq < a->failed_seq);
    pthread_mutex_unlock(&a->mu);
    return ok;
}

/* ---- lifecycle ----------------------------------------------------------- */

static void applier_free(mg_applier *a)
{
    while (a->cache != NULL) {
        job *j = a->cache;
        a->cache = j->next;
        job_free(j);
    }
    pthread_cond_destroy(&a->progress);
    pthread_cond_destroy(&a->work);
    pthread_mutex_destroy(&a->mu);
    free(a);
}

int mg_applier_start(uv_loop_t *loop, mg_fsm *fsm, mg_hist *apply_hist, mg_applier_done_cb done,
                     void *arg, mg_applier **out, mg_error *err)
{
    mg_applier *a = calloc(1, sizeof *a);
    if (a == NULL)
        return mg_error_set(err, MG_ENOMEM, "out of memory for an applier");
    a->loop = loop;
    a->fsm = fsm;
    a->apply_hist = apply_hist;
    a->done = done;
    a->arg = arg;
    pthread_mutex_init(&a->mu, NULL);
    pthread_cond_init(&a->work, NULL);
    pthread_cond_init(&a->progress, NULL);
    /* The thread touches the handle only once there is work. */
    int rc = pthread_create(&a->thread, NULL, applier_main, a);
    if (rc != 0) {
        applier_free(a);
        return mg_error_set(err, MG_EIO, "applier: pthread_create: %s", strerror(rc));
    }
    rc = uv_async_init(loop, &a->async, on_async);
    if (rc != 0) {
        pthread_mutex_lock(&a->mu);
        a->stopping = true;
        pthread_cond_broadcast(&a->work);
        pthread_mutex_unlock(&a->mu);
        pthread_join(a->thread, NULL);
        applier_free(a);
        return mg_error_set(err, MG_EIO, "applier: uv_async_init: %s", uv_strerror(rc));
    }
    a->async.data = a;
    *out = a;
    return MG_OK;
}

static void on_async_closed(uv_handle_t *h)
{
    mg_applier *a = h->data;
    mg_applier_stop_cb cb = a->stop_cb;
    void *arg = a->stop_arg;
    applier_free(a);
    if (cb != NULL)
        cb(arg);
}

void mg_applier_stop(mg_applier *a, mg_applier_stop_cb cb, void *arg)
{
    pthread_mutex_lock(&a->mu);
    a->stopping = true;
    pthread_cond_broadcast(&a->work);
    pthread_mutex_unlock(&a->mu);
    pthread_join(a->thread, NULL);
    deliver(a);
    a->stop_cb = cb;
    a->stop_arg = arg;
    uv_close((uv_handle_t *)&a->async, on_async_closed);
}
