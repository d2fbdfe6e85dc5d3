/*
 * The cluster client's searches (router/client.h): survey rounds over the
 * surveyor sockets, their connection notifications, and the follow-up
 * rounds of mg_client_search.
 */
#include "client_internal.h"

#include "../lib/log.h"
#include "../lib/mp.h"

#include <nng/protocol/survey0/survey.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* A survey round waiting for replies on surveyor socket k (on its
 * survey_watch's list while it waits). It is settled when every group it
 * wants is answered, or its node answered for it with an error (a node
 * replies once to a survey), or it was not sent (no connection to its
 * node), or it went to a node whose pipe has gone since (sdrops moved past
 * drops0): nothing more can come for those, so the round ends and
 * mg_client_search asks again elsewhere at once instead of at the survey
 * deadline. */
typedef struct survey_wait {
    int k;
    size_t n;
    const int *assign;           /* node index per group */
    const bool *answered;        /* these two are read only while posted (the */
    const bool *heard;           /* caller's thread writes them only while not) */
    const bool *unreached;
    const uint64_t *drops0;      /* the node's sdrops[k] before the send */
    nng_aio *aio;
    bool posted;                 /* a receive is pending on aio */
    struct survey_wait *prev, *next;
} survey_wait;

static bool survey_settled(mg_client *c, const survey_wait *w)
{
    for (size_t i = 0; i < w->n; i++) {
        if (w->answered[i] || w->heard[i] || w->unreached[i])
            continue;
        if (atomic_load(&c->nodes[w->assign[i]].sdrops[w->k]) == w->drops0[i])
            return false;
    }
    return true;
}

/* nng's thread, for every surveyor socket: keeps each node's spipe and
 * sdrops (a pipe is matched to its node by the dialer that made it) and
 * wakes the rounds a drop settles by cancelling their receive (which ends
 * their survey: nothing more is wanted from it). Never blocks: the locks
 * taken are held only by short sections that do not wait on nng. */
void client_survey_pipe_event(nng_pipe p, nng_pipe_ev ev, void *arg)
{
    survey_watch *sw = arg;
    mg_client *c = sw->c;
    int k = sw->k;
    uint32_t pid = (uint32_t)nng_pipe_id(p);
    size_t n = client_nodes_count(c);
    node_conn *nc = NULL;
    bool dropped = false;
    if (ev == NNG_PIPE_EV_ADD_POST) {
        int did = nng_dialer_id(nng_pipe_dialer(p));
        for (size_t i = 0; i < n && did > 0 && nc == NULL; i++)
            if (atomic_load(&c->nodes[i].sdialer[k]) == did)
                nc = &c->nodes[i];
        if (nc == NULL)
            return;
        /* A pipe replaced before its removal was reported counts as gone. */
        dropped = atomic_exchange(&nc->spipe[k], pid) != 0;
        atomic_store(&nc->survey_gone, false);
    } else if (ev == NNG_PIPE_EV_REM_POST) {
        for (size_t i = 0; i < n && nc == NULL; i++) {
            uint32_t cur = pid;
            if (atomic_compare_exchange_strong(&c->nodes[i].spipe[k], &cur, 0))
                nc = &c->nodes[i];
        }
        if (nc == NULL)
            return; /* not a pipe we counted, or replaced already */
        dropped = true;
    } else {
        return;
    }
    if (dropped)
        atomic_fetch_add(&nc->sdrops[k], 1);
    pthread_mutex_lock(&sw->lock);
    if (ev == NNG_PIPE_EV_ADD_POST)
        pthread_cond_broadcast(&sw->changed);
    for (survey_wait *w = sw->rounds; dropped && w != NULL; w = w->next)
        if (w->posted && survey_settled(c, w))
            nng_aio_cancel(w->aio);
    pthread_mutex_unlock(&sw->lock);
    if (dropped)
        mg_debug("router.survey_dropped", "node=%llu socket=%d",
                 (unsigned long long)atomic_load(&nc->id), k);
}

/* ---- survey ------------------------------------------------------------- */

void mg_client_survey_clear(mg_client_survey *s)
{
    for (size_t i = 0; i < s->n_replies; i++)
        mg_client_reply_free(&s->replies[i]);
    free(s->replies);
    free(s->missing);
    s->replies = NULL;
    s->missing = NULL;
    s->n_replies = s->n_missing = 0;
}

/* Reads the "groups" answered and applies the leader hints of "missing". */
static void survey_reply_groups(mg_client *c, mg_client_survey *s, const mg_wire_rep *rep,
                                bool *answered, bool *heard, const uint64_t *want, size_t n_want)
{
    mg_mp_reader r = mg_wire_body(rep->body, rep->body_len);
    uint32_t n;
    if (mg_mp_read_map(&r, &n) != MG_OK)
        return;
    for (uint32_t i = 0; i < n; i++) {
        if (mg_mp_peek_str_eq(&r, "groups")) {
            uint32_t m;
            mg_mp_skip(&r);
            if (mg_mp_read_array(&r, &m) != MG_OK)
                return;
            for (uint32_t j = 0; j < m; j++) {
                uint64_t g;
                if (mg_mp_read_u64(&r, &g) != MG_OK)
                    return;
                for (size_t k = 0; k < n_want; k++)
                    if (want[k] == g)
                        answered[k] = true;
            }
        } else if (mg_mp_peek_str_eq(&r, "missing")) {
            uint32_t m;
            mg_mp_skip(&r);
            if (mg_mp_read_array(&r, &m) != MG_OK)
                return;
            for (uint32_t j = 0; j < m; j++) {
                uint32_t f;
                uint64_t group = UINT64_MAX, leader = 0, status = 0;
                const char *msg = "";
                uint32_t msg_len = 0;
                if (mg_mp_read_map(&r, &f) != MG_OK)
                    return;
                for (uint32_t k = 0; k < f; k++) {
                    const char *key;
                    uint32_t klen;
                    if (mg_mp_read_str(&r, &key, &klen) != MG_OK)
                        return;
                    int rc;
                    if (klen == 5 && memcmp(key, "group", 5) == 0)
                        rc = mg_mp_read_u64(&r, &group);
                    else if (klen == 9 && memcmp(key, "leader_id", 9) == 0)
                        rc = mg_mp_read_u64(&r, &leader);
                    else if (klen == 6 && memcmp(key, "status", 6) == 0)
                        rc = mg_mp_read_u64(&r, &status);
                    else if (klen == 3 && memcmp(key, "msg", 3) == 0)
                        rc = mg_mp_read_str(&r, &msg, &msg_len);
                    else
                        rc = mg_mp_skip(&r);
                    if (rc != MG_OK)
                        return;
                }
                if (group == UINT64_MAX)
                    continue;
                for (size_t k = 0; k < n_want; k++)
                    if (want[k] == group)
                        heard[k] = true;
                if (status == MG_ENOTLEADER) {
                    bool all_down;
                    client_leader_moved(c, group, leader, client_leader_pick(c, group, &all_down));
                }
                snprintf(s->missing_why, sizeof s->missing_why, "group %llu: %s%s%.*s",
                         (unsigned long long)group, mg_errname((int)status),
                         msg_len ? ": " : "", (int)msg_len, msg);
            }
        } else {
            mg_mp_skip(&r);
            if (mg_mp_skip(&r) != MG_OK)
                return;
        }
    }
}

/* A surveyor socket with room for one more survey (waits for one). */
static int survey_sock_acquire(mg_client *c)
{
    pthread_mutex_lock(&c->survey_lock);
    for (;;) {
        for (unsigned i = 0; i < SURVEY_SOCKETS; i++) {
            unsigned k = (c->survey_next + i) % SURVEY_SOCKETS;
            if (c->survey_inflight[k] < SURVEY_INFLIGHT) {
                c->survey_inflight[k]++;
                c->survey_next = k + 1;
                pthread_mutex_unlock(&c->survey_lock);
                return (int)k;
            }
        }
        pthread_cond_wait(&c->survey_free, &c->survey_lock);
    }
}

static void survey_sock_release(mg_client *c, int k)
{
    pthread_mutex_lock(&c->survey_lock);
    c->survey_inflight[k]--;
    pthread_cond_signal(&c->survey_free);
    pthread_mutex_unlock(&c->survey_lock);
}

/* One survey round: group want[i] assigned to node index assign[i]. */
typedef struct survey_round_args {
    const uint64_t *want;
    const int *assign;
    size_t n_want;
    bool follower;          /* add "follower": true (replicas answer from their state) */
    bool *answered;         /* out: a reply covered want[i] */
    bool *heard;            /* out: the assigned node answered for want[i], even with an error */
    bool *unreached;        /* out: want[i] was not sent: its node had no connection on the
                             * round's surveyor (survey_connect), or it has no node */
} survey_round_args;

static int survey_round_on(mg_client *c, int k, const char *user, mg_client_survey *s,
                           const survey_round_args *a, mg_error *err);

/* One survey round; fills answered[], heard[] and unreached[] and appends
 * replies. */
static int survey_round(mg_client *c, const char *user, mg_client_survey *s,
                        const survey_round_args *a, mg_error *err)
{
    int k = survey_sock_acquire(c);
    int rc = survey_round_on(c, k, user, s, a, err);
    survey_sock_release(c, k);
    return rc;
}

/* Whether node i may still get a connection on surveyor k soon: dialed
 * there, not known to be down, and not given up on by an earlier survey. */
static bool survey_may_connect(mg_client *c, int i, int k)
{
    node_conn *n = &c->nodes[i];
    return atomic_load(&n->sdialer[k]) != 0 && !atomic_load(&n->survey_gone) &&
           !client_node_down(c, i);
}

/* Waits until every node assigned a group has a pipe on surveyor k, at most
 * SEND_WAIT_MS: nng sends a survey only on the pipes up at the time, and
 * right after a map named a node (router start, a node added) its dials are
 * a few ms from connecting. Then notes each group's node drop count and
 * marks unreached the groups whose node has no pipe: they are not sent (a
 * node that did not connect is given up on by later surveys until it
 * does), and mg_client_search asks another replica at once. */
static void survey_connect(mg_client *c, int k, const survey_round_args *a, uint64_t *drops0)
{
    survey_watch *sw = &c->watch[k];
    unsigned wait_ms = c->survey_timeout_ms < SEND_WAIT_MS ? c->survey_timeout_ms : SEND_WAIT_MS;
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += wait_ms / 1000;
    until.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&sw->lock);
    for (;;) {
        bool waiting = false;
        for (size_t i = 0; i < a->n_want && !waiting; i++) {
            int ni = a->assign[i];
            waiting = ni >= 0 && atomic_load(&c->nodes[ni].spipe[k]) == 0 &&
                      survey_may_connect(c, ni, k);
        }
        if (!waiting || pthread_cond_timedwait(&sw->changed, &sw->lock, &until) != 0)
            break;
    }
    pthread_mutex_unlock(&sw->lock);
    for (size_t i = 0; i < a->n_want; i++) {
        int ni = a->assign[i];
        drops0[i] = 0;
        a->unreached[i] = true;
        if (ni < 0)
            continue;
        node_conn *n = &c->nodes[ni];
        /* The count first: a pipe that goes after it was read moves it. */
        drops0[i] = atomic_load(&n->sdrops[k]);
        a->unreached[i] = atomic_load(&n->spipe[k]) == 0;
        if (a->unreached[i] && survey_may_connect(c, ni, k)) {
            atomic_store(&n->survey_gone, true);
            mg_warn("router.survey_unreached", "node=%llu socket=%d: no connection within %u ms",
                    (unsigned long long)atomic_load(&n->id), k, wait_ms);
        }
    }
}

static void survey_watch_add(survey_watch *sw, survey_wait *w)
{
    pthread_mutex_lock(&sw->lock);
    w->prev = NULL;
    w->next = sw->rounds;
    if (sw->rounds != NULL)
        sw->rounds->prev = w;
    sw->rounds = w;
    pthread_mutex_unlock(&sw->lock);
}

static void survey_watch_remove(survey_watch *sw, survey_wait *w)
{
    pthread_mutex_lock(&sw->lock);
    if (w->prev != NULL)
        w->prev->next = w->next;
    else
        sw->rounds = w->next;
    if (w->next != NULL)
        w->next->prev = w->prev;
    w->prev = w->next = NULL;
    pthread_mutex_unlock(&sw->lock);
}

/* Packs and sends the survey of the groups not unreached; *rid gets its id.
 * The slot's aio is free again on return. */
static int survey_send(mg_client *c, slot *sl, const char *user, mg_client_survey *s,
                       const survey_round_args *a, size_t n_sent, uint64_t *rid, mg_error *err)
{
    nng_msg *m = NULL;
    if (nng_msg_alloc(&m, 0) != 0)
        return mg_error_set(err, MG_ENOMEM, "survey: out of memory");
    *rid = atomic_fetch_add(&c->next_rid, 1);
    msgpack_packer pk;
    msgpack_packer_init(&pk, m, client_msg_write);
    int rc = mg_wire_req_begin(&pk, MG_OP_SEARCH, *rid, 0, 0, c->survey_timeout_ms, user);
    if (rc == MG_OK && msgpack_pack_map(&pk, s->n_fields + 1 + (a->follower ? 1 : 0)))
        rc = MG_ENOMEM;
    if (rc == MG_OK && nng_msg_append(m, s->fields, s->fields_len) != 0)
        rc = MG_ENOMEM;
    if (rc == MG_OK && a->follower &&
        (mg_mp_pack_cstr(&pk, "follower") || msgpack_pack_true(&pk)))
        rc = MG_ENOMEM;
    if (rc == MG_OK &&
        (mg_mp_pack_cstr(&pk, "assign") || msgpack_pack_array(&pk, (uint32_t)n_sent)))
        rc = MG_ENOMEM;
    for (size_t i = 0; rc == MG_OK && i < a->n_want; i++) {
        if (a->unreached[i])
            continue;
        if (msgpack_pack_map(&pk, 2) || mg_mp_pack_cstr(&pk, "group") ||
            msgpack_pack_uint64(&pk, a->want[i]) || mg_mp_pack_cstr(&pk, "node") ||
            msgpack_pack_uint64(&pk, client_node_id_at(c, (size_t)a->assign[i])))
            rc = MG_ENOMEM;
    }
    if (rc != MG_OK) {
        nng_msg_free(m);
        return mg_error_set(err, rc, "survey: out of memory");
    }
    nng_ctx_set_ms(sl->ctx, NNG_OPT_SURVEYOR_SURVEYTIME, (nng_duration)c->survey_timeout_ms);
    nng_aio_set_msg(sl->aio, m);
    nng_aio_set_timeout(sl->aio, (nng_duration)c->survey_timeout_ms);
    nng_ctx_send(sl->ctx, sl->aio);
    nng_aio_wait(sl->aio);
    int rv = nng_aio_result(sl->aio);
    if (rv != 0) {
        nng_msg_free(nng_aio_get_msg(sl->aio));
        return mg_error_set(err, client_nng_to_mg(rv), "survey send: %s", nng_strerror(rv));
    }
    return MG_OK;
}

static int survey_round_on(mg_client *c, int k, const char *user, mg_client_survey *s,
                           const survey_round_args *a, mg_error *err)
{
    slot_pool *pool = &c->survey[k];
    survey_watch *sw = &c->watch[k];
    const uint64_t *want = a->want;
    size_t n_want = a->n_want;
    bool *answered = a->answered, *heard = a->heard;
    uint64_t drops_local[16];
    uint64_t *drops0 = n_want <= 16 ? drops_local : calloc(n_want, sizeof *drops0);
    if (drops0 == NULL)
        return mg_error_set(err, MG_ENOMEM, "survey: out of memory");
    survey_connect(c, k, a, drops0);
    size_t n_sent = 0;
    for (size_t i = 0; i < n_want; i++) {
        if (!a->unreached[i])
            n_sent++;
        else if (a->assign[i] >= 0)
            snprintf(s->missing_why, sizeof s->missing_why,
                     "group %llu: no connection to node %llu", (unsigned long long)want[i],
                     (unsigned long long)client_node_id_at(c, (size_t)a->assign[i]));
    }
    int rc = MG_OK;
    slot *sl = n_sent > 0 ? client_pool_get(pool, &rc) : NULL;
    if (sl == NULL) {
        if (n_sent > 0)
            mg_error_set(err, rc, "survey: %s", mg_strerror(rc));
        goto done;
    }
    uint64_t rid = 0;
    rc = survey_send(c, sl, user, s, a, n_sent, &rid, err);
    if (rc != MG_OK)
        goto done_put;
    survey_wait w = {.k = k, .n = n_want, .assign = a->assign, .answered = answered,
                     .heard = heard, .unreached = a->unreached, .drops0 = drops0,
                     .aio = sl->aio};
    survey_watch_add(sw, &w);
    int rv = 0;
    for (;;) {
        /* Settled (or a receive posted) under the lock: a drop reported after
         * this check finds the receive and cancels it. */
        pthread_mutex_lock(&sw->lock);
        bool settled = survey_settled(c, &w);
        if (!settled) {
            w.posted = true;
            nng_aio_set_timeout(sl->aio, NNG_DURATION_DEFAULT);
            nng_ctx_recv(sl->ctx, sl->aio);
        }
        pthread_mutex_unlock(&sw->lock);
        if (settled)
            break;
        nng_aio_wait(sl->aio);
        pthread_mutex_lock(&sw->lock);
        w.posted = false;
        pthread_mutex_unlock(&sw->lock);
        rv = nng_aio_result(sl->aio);
        if (rv != 0)
            break; /* NNG_ETIMEDOUT at the survey deadline, NNG_ESTATE after it,
                    * NNG_ECANCELED when a dropped pipe settled the round */
        mg_client_reply r = {.msg = nng_aio_get_msg(sl->aio)};
        mg_error derr;
        if (mg_wire_rep_decode(nng_msg_body(r.msg), nng_msg_len(r.msg), &r.rep, &derr) != MG_OK ||
            r.rep.rid != rid) {
            mg_client_reply_free(&r);
            continue;
        }
        if (r.rep.status != MG_OK) {
            /* Every group assigned to that node failed; the envelope has the
             * first failure and its leader hint. */
            snprintf(s->missing_why, sizeof s->missing_why, "%s%s%.*s",
                     mg_errname(r.rep.status), r.rep.msg_len ? ": " : "", (int)r.rep.msg_len,
                     r.rep.msg);
            survey_reply_groups(c, s, &r.rep, answered, heard, want, n_want);
            mg_client_reply_free(&r);
            continue;
        }
        survey_reply_groups(c, s, &r.rep, answered, heard, want, n_want);
        mg_client_reply *grown = realloc(s->replies, (s->n_replies + 1) * sizeof *grown);
        if (grown == NULL) {
            mg_client_reply_free(&r);
            rc = mg_error_set(err, MG_ENOMEM, "survey: out of memory");
            break;
        }
        s->replies = grown;
        s->replies[s->n_replies++] = r;
    }
    survey_watch_remove(sw, &w);
    for (size_t i = 0; rc == MG_OK && i < n_want; i++)
        if (!answered[i] && !a->unreached[i] &&
            atomic_load(&c->nodes[a->assign[i]].sdrops[k]) != drops0[i])
            snprintf(s->missing_why, sizeof s->missing_why,
                     "group %llu: connection to node %llu lost", (unsigned long long)want[i],
                     (unsigned long long)client_node_id_at(c, (size_t)a->assign[i]));
    if (rc == MG_OK && rv == NNG_ECLOSED)
        rc = mg_error_set(err, MG_ESHUTDOWN, "survey: router closing");
done_put:
    client_pool_put(pool, sl);
done:
    if (drops0 != drops_local)
        free(drops0);
    return rc;
}

/* Follower reads: any live replica of the group, in turn. */
static int spread_pick(mg_client *c, uint64_t group, bool *all_down)
{
    int cand[NODES_CAP];
    size_t n = client_group_candidates(c, group, cand);
    *all_down = false;
    if (n == 0)
        return -1;
    unsigned start = atomic_fetch_add_explicit(&c->spread, 1, memory_order_relaxed);
    for (size_t k = 0; k < n; k++) {
        int i = cand[(start + k) % n];
        if (!client_node_down(c, i))
            return i;
    }
    *all_down = true;
    return cand[start % n];
}

int mg_client_search(mg_client *c, const char *user, mg_client_survey *s, mg_error *err)
{
    s->replies = NULL;
    s->missing = NULL;
    s->n_replies = s->n_missing = 0;
    s->missing_why[0] = '\0';
    s->follower_read = false;
    size_t n = s->n_groups;
    if (n == 0)
        return MG_OK;
    /* Per group: round-1 node, answered, heard; round-2 lists. */
    int *assign = calloc(n, sizeof *assign);
    int *assign2 = calloc(n, sizeof *assign2);
    bool *answered = calloc(n, sizeof *answered);
    bool *heard = calloc(n, sizeof *heard);
    bool *answered2 = calloc(n, sizeof *answered2);
    bool *unreached = calloc(n, sizeof *unreached);
    uint64_t *again = calloc(n, sizeof *again);
    int rc = MG_OK;
    if (assign == NULL || assign2 == NULL || answered == NULL || heard == NULL ||
        answered2 == NULL || unreached == NULL || again == NULL) {
        rc = mg_error_set(err, MG_ENOMEM, "survey: out of memory");
        goto done;
    }
    bool refreshed = false;
    for (size_t i = 0; i < n; i++) {
        bool all_down = false;
        if (s->groups[i] == 0) {
            rc = mg_client_no_map(c, err);
            goto done;
        }
        assign[i] = s->follower ? spread_pick(c, s->groups[i], &all_down)
                                : client_leader_pick(c, s->groups[i], &all_down);
        if ((assign[i] < 0 || all_down) && !refreshed) {
            /* Not in our map, or nobody reachable: the group may have moved. */
            client_refresh_run(c, c->call_timeout_ms, NULL);
            refreshed = true;
            assign[i] = s->follower ? spread_pick(c, s->groups[i], &all_down)
                                    : client_leader_pick(c, s->groups[i], &all_down);
        }
    }
    survey_round_args a1 = {.want = s->groups, .assign = assign, .n_want = n,
                            .follower = s->follower, .answered = answered, .heard = heard,
                            .unreached = unreached};
    rc = survey_round(c, user, s, &a1, err);
    if (rc != MG_OK)
        goto done;
    for (size_t i = 0; i < n && s->follower; i++)
        s->follower_read |= answered[i]; /* asked of any replica */
    /* Round 2, twice at most: groups whose node named another leader are
     * asked there (a leader read); groups whose node did not answer at all
     * (down, or failing over), or that were not sent to it (no connection),
     * or whose connection to it dropped during the round, are asked of the
     * next replica, which may answer from its own state ("follower": true;
     * flagged in the survey). A group whose node answered without a usable
     * hint goes the follower way too, on that same (live) node, and so does
     * one that the named leader did not answer either (a round ends as soon
     * as every node asked has answered, so during an election the named
     * leader may not lead yet). */
    for (int pass = 0; pass < 2 && rc == MG_OK; pass++) {
        bool follower = pass == 1;
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
            if (answered[i])
                continue;
            uint64_t g = s->groups[i];
            bool all_down;
            int now = client_leader_pick(c, g, &all_down);
            bool hinted = heard[i] && now != assign[i];
            if (!heard[i] && now == assign[i]) {
                /* Silent node: move the guess on for later requests too. */
                client_leader_moved(c, g, 0, assign[i]);
                now = client_leader_pick(c, g, &all_down);
            }
            if (now < 0 || (unreached[i] && now == assign[i]))
                continue; /* no replica in the map, or no other: missing */
            if (!follower && !hinted)
                continue; /* the first pass is for hinted groups only */
            again[k] = g;
            assign2[k] = follower && heard[i] && assign[i] >= 0 ? assign[i] : now;
            k++;
        }
        if (k == 0)
            continue;
        memset(answered2, 0, k * sizeof *answered2);
        bool flags2[32];
        bool *h2 = k <= 16 ? flags2 : calloc(2 * k, sizeof *h2);
        if (h2 == NULL) {
            rc = mg_error_set(err, MG_ENOMEM, "survey: out of memory");
            break;
        }
        memset(h2, 0, 2 * k * sizeof *h2);
        survey_round_args a2 = {.want = again, .assign = assign2, .n_want = k,
                                .follower = follower || s->follower, .answered = answered2,
                                .heard = h2, .unreached = h2 + k};
        rc = survey_round(c, user, s, &a2, err);
        if (h2 != flags2)
            free(h2);
        for (size_t j = 0; rc == MG_OK && j < k; j++)
            for (size_t i = 0; i < n; i++)
                if (answered2[j] && s->groups[i] == again[j]) {
                    answered[i] = true;
                    s->follower_read |= follower;
                }
    }
    if (rc == MG_OK) {
        size_t k = 0;
        for (size_t i = 0; i < n; i++)
            if (!answered[i])
                again[k++] = s->groups[i];
        if (k > 0) {
            s->missing = again;
            s->n_missing = k;
            again = NULL;
            if (s->missing_why[0] == '\0')
                snprintf(s->missing_why, sizeof s->missing_why, "no answer within %u ms",
                         c->survey_timeout_ms);
            mg_warn("router.survey_partial", "missing=%zu why=\"%s\"", k, s->missing_why);
            /* A group that moved is missing too: learn where it went (the
             * caller may ask again when the epoch changed). */
            client_refresh_run(c, c->call_timeout_ms, NULL);
        }
    }
done:
    free(assign);
    free(assign2);
    free(answered);
    free(heard);
    free(answered2);
    free(unreached);
    free(again);
    if (rc != MG_OK)
        mg_client_survey_clear(s);
    return rc;
}
