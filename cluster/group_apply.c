/*
 * The way back from raft (see group_internal.h): applied entries go to the
 * applier, which writes the store off the loop and answers each entry's
 * proposals in log order; snapshots wait for it.
 */
#include "group_internal.h"

#include "../lib/log.h"

#include <stdlib.h>
#include <string.h>

/* ---- batches ------------------------------------------------------------ */

void group_fail_batch(group_batch *b, int code)
{
    for (size_t i = 0; i < b->n; i++) {
        mg_group_proposal *p = b->props[i];
        p->cb(p, code, NULL, 0);
    }
}

void group_flying_put(mg_group *g, group_batch *b)
{
    b->attached = false;
    b->next = g->flying;
    g->flying = b;
}

static void flying_unlink(mg_group *g, group_batch *b)
{
    for (group_batch **pp = &g->flying; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == b) {
            *pp = b->next;
            b->next = NULL;
            return;
        }
    }
}

/* The batch raft is applying at `index`, taken off `flying` for the
 * applier: a leader has at most max_inflight of them. */
static group_batch *flying_take(mg_group *g, uint64_t index)
{
    for (group_batch *b = g->flying; b != NULL; b = b->next) {
        if (b->req.index == index) {
            flying_unlink(g, b);
            b->attached = true;
            return b;
        }
    }
    return NULL;
}

/* Splits an entry's result back to its proposals (res NULL: status is not
 * MG_OK). */
static void answer_batch(group_batch *b, int status, const mg_fsm_result *res)
{
    b->answered = true;
    if (status == MG_OK && res->code != MG_OK)
        status = res->code; /* the entry was refused as a whole */
    if (status != MG_OK) {
        group_fail_batch(b, status);
        return;
    }
    size_t off = 0;
    for (size_t i = 0; i < b->n; i++) {
        mg_group_proposal *p = b->props[i];
        uint32_t n = p->n_cmds; /* the callback may free p */
        if (off + n > res->n_cmds) {
            p->cb(p, MG_EINTERNAL, NULL, 0);
            continue;
        }
        p->cb(p, MG_OK, res->cmds + off, n);
        off += n;
    }
}

/* Frees a batch once raft is done with its request and it is answered. */
static void batch_release(group_batch *b)
{
    if (b->raft_done && b->answered)
        free(b);
}

/* ---- the state machine as raft sees it ---------------------------------- */

/* Raft applies entries on the loop; these hand them to the applier, which
 * writes the store on its own thread (applier.h). The FSM itself (fsm.h)
 * stays synchronous: the applier calls it. */

static int group_fsm_apply(struct raft_fsm *rf, const struct raft_buffer *buf, void **result)
{
    mg_group *g = rf->data;
    /* raft 0.15 does not pass the index: see fsm.h */
    uint64_t index = (uint64_t)raft_last_applied(&g->raft) + 1;
    group_batch *b = raft_state(&g->raft) == RAFT_LEADER ? flying_take(g, index) : NULL;
    int rc = mg_applier_push(g->applier, index, buf->base, buf->len, b);
    if (rc != MG_OK) {
        if (b != NULL)
            group_flying_put(g, b);
        /* raft applies it again at its next turn (MG_EBUSY: the applier is
         * behind, the store cannot write) */
        mg_warn("group.apply_deferred", "group=%llu index=%llu code=%s",
                (unsigned long long)g->group_id, (unsigned long long)index, mg_errname(rc));
        return mg_fsm_raft_code(rc);
    }
    *result = b; /* batch_done recognizes its batch: the applier answers it */
    return 0;
}

/* FSM version 3: raft calls snapshot on the loop, then snapshot_async on its
 * thread pool, then (on the loop) snapshot_finalize. A snapshot must hold
 * every entry raft has applied (handed to the applier) when it starts: one
 * that missed an entry it claims would lose that entry on every replica that
 * installs it. So the loop part notes how far the applier must get, and the
 * thread-pool part waits for it and exports the store, while the loop goes
 * on replicating and applying (the copy may then hold later entries too,
 * which fsm.h allows). */
static int group_fsm_snapshot(struct raft_fsm *rf, struct raft_buffer *bufs[], unsigned *n_bufs)
{
    mg_group *g = rf->data;
    g->snapshot_seq = mg_applier_queued(g->applier);
    *bufs = NULL;
    *n_bufs = 0;
    return 0;
}

static int group_fsm_snapshot_async(struct raft_fsm *rf, struct raft_buffer *bufs[],
                                    unsigned *n_bufs)
{
    mg_group *g = rf->data;
    mg_error err = {0};
    if (!mg_applier_wait(g->applier, g->snapshot_seq))
        return RAFT_IOERR; /* stopping with entries unapplied: no snapshot */
    struct raft_buffer *out = malloc(2 * sizeof *out);
    uint8_t *hdr = malloc(MG_SNAPSHOT_HEADER_LEN);
    void *data = NULL;
    size_t len = 0;
    int rc = out != NULL && hdr != NULL ? mg_fsm_snapshot_export(&g->fsm, hdr, &data, &len, &err)
                                        : MG_ENOMEM;
    if (rc != MG_OK) {
        mg_errlog("group.snapshot_failed", "group=%llu code=%s msg=\"%s\"",
                  (unsigned long long)g->group_id, mg_errname(rc), err.msg);
        free(out);
        free(hdr);
        return mg_fsm_raft_code(rc);
    }
    out[0] = (struct raft_buffer){.base = hdr, .len = MG_SNAPSHOT_HEADER_LEN};
    out[1] = (struct raft_buffer){.base = data, .len = len};
    *bufs = out;
    *n_bufs = 2;
    mg_info("group.snapshot", "group=%llu bytes=%zu", (unsigned long long)g->group_id, len);
    return 0;
}

/* With snapshot_finalize set, raft leaves the buffers to us. */
static int group_fsm_snapshot_finalize(struct raft_fsm *rf, struct raft_buffer *bufs[],
                                       unsigned *n_bufs)
{
    (void)rf;
    for (unsigned i = 0; *bufs != NULL && i < *n_bufs; i++)
        free((*bufs)[i].base);
    free(*bufs);
    *bufs = NULL;
    *n_bufs = 0;
    return 0;
}

static int group_fsm_restore(struct raft_fsm *rf, struct raft_buffer *buf)
{
    mg_group *g = rf->data;
    mg_error err = {0};
    bool installed;
    /* Entries before the snapshot first, so the store never goes back. */
    (void)mg_applier_wait(g->applier, mg_applier_queued(g->applier));
    int rc = mg_fsm_restore_buf(&g->fsm, buf->base, buf->len, &installed, &err);
    if (rc != MG_OK) {
        mg_errlog("group.restore_failed", "group=%llu code=%s msg=\"%s\"",
                  (unsigned long long)g->group_id, mg_errname(rc), err.msg);
        return mg_fsm_raft_code(rc); /* raft keeps and frees the buffer */
    }
    raft_free(buf->base); /* on success the buffer is ours */
    return 0;
}

/* The applier's answer for a job, on the loop, in log order. */
void group_on_applied(const mg_applier_job *job, void *arg)
{
    (void)arg;
    if (job->kind == MG_APPLIER_MARK) {
        mg_group_barrier_req *br = job->owner;
        br->cb(br, job->status);
        return;
    }
    group_batch *b = job->owner;
    if (b == NULL)
        return; /* nobody here waits for this entry (a follower's, say) */
    if (job->status == MG_OK && job->result.index != b->req.index) {
        mg_errlog("group.result_mismatch", "index=%llu entry=%llu",
                  (unsigned long long)b->req.index, (unsigned long long)job->result.index);
        answer_batch(b, MG_EINTERNAL, NULL);
    } else {
        answer_batch(b, job->status, &job->result);
    }
    batch_release(b);
}

void group_fsm_init(mg_group *g)
{
    g->rfsm = (struct raft_fsm){
        .version = 3,
        .data = g,
        .apply = group_fsm_apply,
        .snapshot = group_fsm_snapshot,
        .restore = group_fsm_restore,
        .snapshot_finalize = group_fsm_snapshot_finalize,
        .snapshot_async = group_fsm_snapshot_async,
    };
}

/* ---- raft's answer for a batch ------------------------------------------- */

void group_batch_done(struct raft_apply *req, int status, void *result)
{
    group_batch *b = req->data;
    mg_group *g = b->g;
    g->inflight--;
    b->raft_done = true;
    if (b->attached) {
        /* Its entry went to the applier, which answers the proposals. */
        if (status != 0 || result != b)
            mg_errlog("group.applied_batch", "index=%llu status=%s", (unsigned long long)req->index,
                      raft_strerror(status));
    } else {
        flying_unlink(g, b);
        if (status == 0)
            mg_errlog("group.result_mismatch", "index=%llu", (unsigned long long)req->index);
        /* LEADERSHIPLOST: the entry may still commit under the next leader. */
        b->answered = true;
        group_fail_batch(b, status != 0 ? mg_raft_to_mg(status) : MG_EINTERNAL);
    }
    batch_release(b);
    group_schedule_flush(g);
}
