/*
 * The node's lifecycle: configuration, the loop thread that runs the groups,
 * the leader snapshots the loop publishes for the other threads, the
 * membership record, and the orderly stop.
 */
#include "node_internal.h"

#include "../lib/clock.h"
#include "../lib/log.h"
#include "../lib/uuid.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_SINGLE_VOTER_ELECTION_MS 50
#define DEFAULT_WORKERS 2
#define DEFAULT_REP_CONTEXTS 64
#define DEFAULT_RESP_CONTEXTS 16
#define DEFAULT_DEADLINE_MS 5000
#define DEFAULT_MAX_MESSAGE (64u << 20)
#define DEFAULT_DRAIN_MS 3000
#define FINAL_DRAIN_MS 10000
/* Slots for groups opened after start, beyond the configured ones: every
 * group id a cluster map can name. */
#define NODE_RUNTIME_GROUPS (MG_CMAP_GROUPS_MAX + 64)

/* ---- lookups and hand-offs (any thread) --------------------------------- */

size_t node_group_slots(mg_node *n)
{
    return atomic_load_explicit(&n->n_groups, memory_order_acquire);
}

node_group *node_group_slot(mg_node *n, uint64_t group_id)
{
    size_t slots = node_group_slots(n);
    for (size_t i = 0; i < slots; i++)
        if (n->groups[i].group_id == group_id)
            return &n->groups[i];
    return NULL;
}

node_group *node_group_find(mg_node *n, uint64_t group_id)
{
    node_group *ng = node_group_slot(n, group_id);
    return ng != NULL && atomic_load(&ng->hosted) ? ng : NULL;
}

void node_group_snapshot(mg_node *n, const node_group *ng, mg_node_group_status *out)
{
    pthread_mutex_lock(&n->snap_lock);
    *out = ng->pub;
    pthread_mutex_unlock(&n->snap_lock);
}

bool node_loop_post(mg_node *n, node_ctx *c, node_ctx_fn fn)
{
    c->loop_fn = fn;
    c->loop_next = NULL;
    pthread_mutex_lock(&n->q_lock);
    bool open = n->loop_open;
    if (open) {
        if (n->q_tail != NULL)
            n->q_tail->loop_next = c;
        else
            n->q_head = c;
        n->q_tail = c;
        /* Under the lock: the loop clears loop_open under it before it
         * closes the handle. */
        uv_async_send(&n->wake);
    }
    pthread_mutex_unlock(&n->q_lock);
    return open;
}

static void run_worker_job(mg_worker_job *job)
{
    node_ctx *c = (node_ctx *)((char *)job - offsetof(node_ctx, job));
    c->loop_fn(c);
}

void node_worker_post(mg_node *n, node_ctx *c, node_ctx_fn fn)
{
    c->loop_fn = fn; /* the same slot: a request is in one place at a time */
    c->job.fn = run_worker_job;
    mg_workers_submit(n->workers, &c->job);
}

bool node_stores_enter(mg_node *n)
{
    pthread_rwlock_rdlock(&n->store_lock);
    if (n->stores_open)
        return true;
    pthread_rwlock_unlock(&n->store_lock);
    return false;
}

void node_stores_leave(mg_node *n)
{
    pthread_rwlock_unlock(&n->store_lock);
}

/* ---- the membership record ---------------------------------------------- */

#define MEMBER_FILE "cluster"
#define MEMBER_PATH_CAP 4096

int node_file_write_atomic(const char *dir, const char *path, const char *text, mg_error *err)
{
    char tmp[MEMBER_PATH_CAP + 8];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
        return mg_error_set(err, MG_ETOOBIG, "path too long: %s", path);
    size_t len = strlen(text);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return mg_error_set(err, MG_EIO, "creating %s: %s", tmp, strerror(errno));
    ssize_t w = write(fd, text, len);
    int saved = errno;
    if (w != (ssize_t)len || fsync(fd) != 0) {
        if (w == (ssize_t)len)
            saved = errno;
        close(fd);
        unlink(tmp);
        return mg_error_set(err, MG_EIO, "writing %s: %s", tmp,
                            w >= 0 && w != (ssize_t)len ? "short write" : strerror(saved));
    }
    close(fd);
    if (rename(tmp, path) != 0) {
        saved = errno;
        unlink(tmp);
        return mg_error_set(err, MG_EIO, "renaming %s: %s", tmp, strerror(saved));
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || fsync(dfd) != 0) {
        saved = errno;
        if (dfd >= 0)
            close(dfd);
        return mg_error_set(err, MG_EIO, "syncing %s: %s", dir, strerror(saved));
    }
    close(dfd);
    return MG_OK;
}

static int member_path(const mg_node *n, char *buf, size_t cap, mg_error *err)
{
    int len = snprintf(buf, cap, "%s/%s", n->data_dir, MEMBER_FILE);
    if (len < 0 || (size_t)len >= cap)
        return mg_error_set(err, MG_ETOOBIG, "data directory path too long");
    return MG_OK;
}

int node_membership_load(mg_node *n, mg_error *err)
{
    char path[MEMBER_PATH_CAP];
    int rc = member_path(n, path, sizeof path, err);
    if (rc != MG_OK)
        return rc;
    struct stat st;
    if (stat(path, &st) != 0 && errno == ENOENT)
        return MG_OK; /* belongs to no cluster yet */
    json_error_t jerr;
    json_t *doc = json_load_file(path, 0, &jerr);
    if (doc == NULL)
        return mg_error_set(err, MG_ECORRUPT, "%s: %s", path, jerr.text);
    node_membership rec;
    memset(&rec, 0, sizeof rec);
    const json_t *id = json_object_get(doc, "cluster"), *meta = json_object_get(doc, "meta");
    bool ok = json_is_string(id) &&
              mg_uuid_parse(json_string_value(id), json_string_length(id), NULL) &&
              json_is_array(meta) && json_array_size(meta) <= MG_CMAP_REPLICAS_MAX;
    for (size_t i = 0; ok && i < json_array_size(meta); i++) {
        const json_t *url = json_array_get(meta, i);
        ok = json_is_string(url) && json_string_length(url) > 0 &&
             json_string_length(url) < MG_CMAP_URL_MAX;
        if (ok)
            snprintf(rec.meta[rec.n_meta++], MG_CMAP_URL_MAX, "%s", json_string_value(url));
    }
    if (ok)
        snprintf(rec.cluster, sizeof rec.cluster, "%s", json_string_value(id));
    json_decref(doc);
    if (!ok)
        return mg_error_set(err, MG_ECORRUPT,
                            "%s: {\"cluster\": UUID, \"meta\": [rpc URL, ... (at most %d)]} "
                            "expected",
                            path, MG_CMAP_REPLICAS_MAX);
    pthread_mutex_lock(&n->member_lock);
    n->member = rec;
    pthread_mutex_unlock(&n->member_lock);
    return MG_OK;
}

void node_membership_get(mg_node *n, node_membership *out)
{
    pthread_mutex_lock(&n->member_lock);
    *out = n->member;
    pthread_mutex_unlock(&n->member_lock);
}

/* The record as the file holds it: malloc'd text, or NULL (out of memory). */
static char *member_text(const node_membership *rec)
{
    json_t *meta = json_array();
    for (uint32_t i = 0; meta != NULL && i < rec->n_meta; i++)
        json_array_append_new(meta, json_string(rec->meta[i]));
    json_t *doc = json_pack("{s:s, s:o}", "cluster", rec->cluster, "meta", meta);
    char *text = doc != NULL ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    return text;
}

int node_membership_claim(mg_node *n, const node_membership *claim, mg_error *err)
{
    char path[MEMBER_PATH_CAP];
    int rc = member_path(n, path, sizeof path, err);
    if (rc != MG_OK)
        return rc;
    pthread_mutex_lock(&n->member_lock);
    bool first = n->member.cluster[0] == '\0';
    if (!first && strcmp(n->member.cluster, claim->cluster) != 0) {
        rc = mg_error_set(err, MG_EEXIST, "node %llu belongs to cluster %s",
                          (unsigned long long)n->cfg.node_id, n->member.cluster);
        goto done;
    }
    char *text = member_text(claim);
    if (text == NULL) {
        rc = mg_error_set(err, MG_ENOMEM, "out of memory writing %s", path);
        goto done;
    }
    rc = node_file_write_atomic(n->data_dir, path, text, err);
    free(text);
    if (rc != MG_OK)
        goto done;
    n->member = *claim;
    if (first)
        mg_info("node.claimed", "node=%llu cluster=%s meta=%u", (unsigned long long)n->cfg.node_id,
                claim->cluster, claim->n_meta);
done:
    pthread_mutex_unlock(&n->member_lock);
    return rc;
}

/* ---- leader snapshots (loop thread) ------------------------------------- */

static void publish_all(mg_node *n);

void node_publish(mg_node *n)
{
    publish_all(n);
}

static void read_group_state(node_group *ng, mg_node_group_status *st)
{
    memset(st, 0, sizeof *st);
    st->group_id = ng->group_id;
    st->replica_id = ng->replica_id;
    st->raft_state = RAFT_UNAVAILABLE;
    if (ng->g == NULL)
        return;
    struct raft *r = mg_group_raft(ng->g);
    const char *addr = NULL;
    st->raft_state = mg_group_raft_state(ng->g);
    mg_group_leader(ng->g, &st->leader_id, &addr);
    if (addr != NULL)
        snprintf(st->leader, sizeof st->leader, "%s", addr);
    st->term = r->current_term;
    st->commit_index = r->commit_index;
    st->last_applied = mg_group_last_applied(ng->g);
}

static void on_ready_barrier(mg_group_barrier_req *b, int status)
{
    node_group *ng = b->data;
    ng->barrier_pending = false;
    if (status == MG_OK)
        ng->ready_term = ng->barrier_term;
    else
        ng->barrier_term = 0; /* appended again at the next turn if still leading */
    publish_all(ng->node);
}

/* A replica that just became leader may not have applied every entry
 * committed under the previous leader; entries of its own term commit only
 * after all of those. Once a barrier appended in its term is applied here,
 * reads see every acknowledged write. */
static void ensure_ready_barrier(node_group *ng, const mg_node_group_status *st)
{
    if (ng->g == NULL || st->raft_state != RAFT_LEADER || ng->barrier_pending ||
        ng->barrier_term == st->term)
        return;
    mg_error err = {0};
    ng->ready_barrier.data = ng;
    ng->barrier_term = st->term;
    if (mg_group_barrier(ng->g, &ng->ready_barrier, on_ready_barrier, &err) == MG_OK) {
        ng->barrier_pending = true;
    } else {
        /* Leadership changed under us or the group is closing: try again at
         * the next turn if it still leads. */
        ng->barrier_term = 0;
        mg_debug("node.ready_barrier", "group=%llu err=\"%s\"", (unsigned long long)ng->group_id,
                 err.msg);
    }
}

bool node_group_leads_ready(node_group *ng)
{
    return ng->g != NULL && mg_group_is_leader(ng->g) &&
           ng->ready_term == mg_group_raft(ng->g)->current_term;
}

/* Publishes what changed since the last turn. Raft state only changes in
 * callbacks of this loop, and a check handle runs after every poll phase, so
 * the snapshot is never more than one loop turn behind. */
static void publish_all(mg_node *n)
{
    bool changed = false;
    size_t slots = node_group_slots(n);
    for (size_t i = 0; i < slots; i++) {
        node_group *ng = &n->groups[i];
        mg_node_group_status st;
        read_group_state(ng, &st);
        ensure_ready_barrier(ng, &st);
        st.read_ready = st.raft_state == RAFT_LEADER && ng->ready_term == st.term;
        if (memcmp(&st, &ng->seen, sizeof st) == 0)
            continue;
        if (st.leader_id != ng->seen.leader_id || st.raft_state != ng->seen.raft_state)
            mg_info("node.leader", "group=%llu replica=%llu state=%s leader=%llu term=%llu",
                    (unsigned long long)st.group_id, (unsigned long long)st.replica_id,
                    node_raft_state_name(st.raft_state), (unsigned long long)st.leader_id,
                    (unsigned long long)st.term);
        ng->seen = st;
        if (!changed)
            pthread_mutex_lock(&n->snap_lock);
        changed = true;
        ng->pub = st;
    }
    if (changed) {
        pthread_cond_broadcast(&n->snap_cond);
        pthread_mutex_unlock(&n->snap_lock);
    }
}

static void on_publish(uv_check_t *h)
{
    publish_all(h->data);
    node_cluster_poll(h->data);
}

/* ---- the loop ----------------------------------------------------------- */

static void on_host_closed(void *arg)
{
    mg_node *n = arg;
    n->host = NULL;
    mg_debug("node.groups_closed", "node=%llu", (unsigned long long)n->cfg.node_id);
}

/* Closes every group: the stores go first as seen from the workers (after
 * the write lock no job touches them), then raft and the stores themselves.
 * Proposals and barriers still waiting fail with MG_ESHUTDOWN through their
 * callbacks, which answer their requests. */
static void close_groups(mg_node *n)
{
    node_ctx *rest;
    pthread_mutex_lock(&n->q_lock);
    n->loop_open = false;
    rest = n->q_head;
    n->q_head = n->q_tail = NULL;
    pthread_mutex_unlock(&n->q_lock);
    n->host_closed = true;
    while (rest != NULL) {
        node_ctx *c = rest;
        rest = c->loop_next;
        node_reply_error(c, MG_ESHUTDOWN, "the node is stopping", 0, NULL);
    }

    size_t slots = node_group_slots(n);
    pthread_rwlock_wrlock(&n->store_lock);
    n->stores_open = false;
    for (size_t i = 0; i < slots; i++) {
        n->groups[i].store = NULL;
        n->groups[i].fsm = NULL;
    }
    pthread_rwlock_unlock(&n->store_lock);

    node_write_forget_all(n);
    node_cluster_fail_all(n);
    uv_check_stop(&n->publish);
    uv_close((uv_handle_t *)&n->publish, NULL);
    uv_close((uv_handle_t *)&n->wake, NULL);
    for (size_t i = 0; i < slots; i++)
        n->groups[i].g = NULL;
    publish_all(n); /* every group now reads as unavailable */
    if (n->host != NULL)
        mg_host_close(n->host, on_host_closed, n);
}

static void on_wake(uv_async_t *h)
{
    mg_node *n = h->data;
    pthread_mutex_lock(&n->q_lock);
    node_ctx *list = n->q_head;
    n->q_head = n->q_tail = NULL;
    int cmd = n->loop_cmd;
    pthread_mutex_unlock(&n->q_lock);
    while (list != NULL) {
        node_ctx *c = list;
        list = c->loop_next;
        c->loop_fn(c);
    }
    if (cmd == LOOP_CLOSE && !n->host_closed)
        close_groups(n);
}

static void *loop_main(void *arg)
{
    mg_node *n = arg;
    uv_run(&n->loop, UV_RUN_DEFAULT);
    return NULL;
}

/* Runs the loop on the calling thread until the handles are closed (start
 * failed before the loop thread existed). */
static void close_groups_inline(mg_node *n)
{
    close_groups(n);
    uv_run(&n->loop, UV_RUN_DEFAULT);
}

/* ---- configuration ------------------------------------------------------ */

static int check_config(const mg_node_config *cfg, mg_error *err)
{
    if (cfg->data_dir == NULL || cfg->data_dir[0] == '\0')
        return mg_error_set(err, MG_EINVAL, "node: data_dir is required");
    if (cfg->rep_url == NULL || cfg->rep_url[0] == '\0')
        return mg_error_set(err, MG_EINVAL, "node: rep_url is required");
    if (cfg->n_groups > 0 && cfg->groups == NULL)
        return mg_error_set(err, MG_EINVAL, "node: groups is NULL");
    for (size_t i = 0; i < cfg->n_groups; i++) {
        const mg_node_group *g = &cfg->groups[i];
        if (g->replica_id == 0 || g->address == NULL || g->address[0] == '\0')
            return mg_error_set(err, MG_EINVAL,
                                "node: group %llu needs a replica id and a "
                                "raft address",
                                (unsigned long long)g->group_id);
        if (g->n_bootstrap > 0 && g->bootstrap == NULL)
            return mg_error_set(err, MG_EINVAL, "node: group %llu: bootstrap is NULL",
                                (unsigned long long)g->group_id);
        for (size_t j = 0; j < i; j++)
            if (cfg->groups[j].group_id == g->group_id)
                return mg_error_set(err, MG_EINVAL, "node: group %llu is listed twice",
                                    (unsigned long long)g->group_id);
    }
    return MG_OK;
}

static void apply_defaults(mg_node_config *c)
{
    if (c->single_voter_election_ms == 0)
        c->single_voter_election_ms = DEFAULT_SINGLE_VOTER_ELECTION_MS;
    if (c->search_workers == 0)
        c->search_workers = DEFAULT_WORKERS;
    if (c->rep_contexts == 0)
        c->rep_contexts = DEFAULT_REP_CONTEXTS;
    if (c->respondent_contexts == 0)
        c->respondent_contexts = DEFAULT_RESP_CONTEXTS;
    if (c->default_deadline_ms == 0)
        c->default_deadline_ms = DEFAULT_DEADLINE_MS;
    if (c->max_message_bytes == 0)
        c->max_message_bytes = DEFAULT_MAX_MESSAGE;
    if (c->drain_timeout_ms == 0)
        c->drain_timeout_ms = DEFAULT_DRAIN_MS;
}

static void node_free(mg_node *n)
{
    node_stats_close(n);
    pthread_mutex_destroy(&n->member_lock);
    pthread_mutex_destroy(&n->q_lock);
    pthread_mutex_destroy(&n->snap_lock);
    pthread_cond_destroy(&n->snap_cond);
    pthread_rwlock_destroy(&n->store_lock);
    pthread_mutex_destroy(&n->ctx_lock);
    pthread_cond_destroy(&n->ctx_cond);
    free(n->groups);
    free(n->raft_host);
    free(n->advertise_rpc);
    free(n->advertise_survey);
    free(n->data_dir);
    free(n->rep_url);
    free(n->respondent_url);
    free(n);
}

static mg_node *node_alloc(const mg_node_config *cfg)
{
    mg_node *n = calloc(1, sizeof *n);
    if (n == NULL)
        return NULL;
    n->cfg = *cfg;
    apply_defaults(&n->cfg);
    if (cfg->tunables != NULL)
        n->tunables = *cfg->tunables;
    else
        mg_group_tunables_default(&n->tunables);
    n->cfg.tunables = &n->tunables;
    pthread_mutex_init(&n->member_lock, NULL);
    pthread_mutex_init(&n->q_lock, NULL);
    pthread_mutex_init(&n->snap_lock, NULL);
    pthread_cond_init(&n->snap_cond, NULL);
    pthread_rwlock_init(&n->store_lock, NULL);
    pthread_mutex_init(&n->ctx_lock, NULL);
    pthread_cond_init(&n->ctx_cond, NULL);
    n->data_dir = strdup(cfg->data_dir);
    n->rep_url = strdup(cfg->rep_url);
    n->respondent_url = cfg->respondent_url ? strdup(cfg->respondent_url) : NULL;
    n->raft_host = strdup(cfg->raft_host ? cfg->raft_host : "127.0.0.1");
    n->advertise_rpc = strdup(cfg->advertise_rpc ? cfg->advertise_rpc : cfg->rep_url);
    n->advertise_survey = strdup(cfg->advertise_survey ? cfg->advertise_survey
                                 : cfg->respondent_url ? cfg->respondent_url
                                                       : "");
    n->groups_cap = cfg->n_groups + NODE_RUNTIME_GROUPS;
    n->groups = calloc(n->groups_cap, sizeof *n->groups);
    if (n->data_dir == NULL || n->rep_url == NULL || n->groups == NULL || n->raft_host == NULL ||
        n->advertise_rpc == NULL || n->advertise_survey == NULL ||
        (cfg->respondent_url != NULL && n->respondent_url == NULL)) {
        node_free(n);
        return NULL;
    }
    n->cfg.data_dir = n->data_dir;
    n->cfg.rep_url = n->rep_url;
    n->cfg.respondent_url = n->respondent_url;
    n->cfg.raft_host = n->raft_host;
    n->cfg.advertise_rpc = n->advertise_rpc;
    n->cfg.advertise_survey = n->advertise_survey;
    n->cfg.groups = NULL; /* not kept: the table is the node's copy */
    n->cfg.n_groups = 0;
    for (size_t i = 0; i < n->groups_cap; i++)
        n->groups[i].node = n;
    return n;
}

/* ---- public API --------------------------------------------------------- */

/* raft_uv_tcp writes to peers that may have gone away: with SIGPIPE at its
 * default a closed peer connection kills the process. A handler the
 * application installed is left alone. */
static void ignore_sigpipe(void)
{
    struct sigaction old;
    if (sigaction(SIGPIPE, NULL, &old) == 0 && old.sa_handler == SIG_DFL &&
        !(old.sa_flags & SA_SIGINFO)) {
        struct sigaction ign = {0};
        ign.sa_handler = SIG_IGN;
        sigemptyset(&ign.sa_mask);
        sigaction(SIGPIPE, &ign, NULL);
    }
}

int mg_node_start(const mg_node_config *cfg, mg_node **out, mg_error *err)
{
    int rc, uvrc;
    uint64_t t0 = mg_clock_mono_ns();
    if ((rc = check_config(cfg, err)) != MG_OK)
        return rc;
    ignore_sigpipe();
    mg_node *n = node_alloc(cfg);
    if (n == NULL)
        return mg_error_set(err, MG_ENOMEM, "out of memory starting the node");
    /* Before the groups: their appliers record into the apply histogram. */
    if ((rc = node_stats_open(n, err)) != MG_OK)
        goto err_free;
    uvrc = uv_loop_init(&n->loop);
    if (uvrc != 0) {
        rc = mg_error_set(err, MG_EIO, "uv_loop_init: %s", uv_strerror(uvrc));
        goto err_free;
    }
    uv_async_init(&n->loop, &n->wake, on_wake);
    n->wake.data = n;
    uv_check_init(&n->loop, &n->publish);
    n->publish.data = n;
    uv_check_start(&n->publish, on_publish);
    n->loop_open = true;
    n->stores_open = true;

    if ((rc = mg_host_open(&n->loop, n->data_dir, &n->host, err)) != MG_OK)
        goto err_loop;
    if ((rc = node_membership_load(n, err)) != MG_OK)
        goto err_loop;
    mg_host_set_apply_hist(n->host, node_stats_apply_hist(n));
    for (size_t i = 0; i < cfg->n_groups; i++) {
        const mg_node_group *gc = &cfg->groups[i];
        rc = node_group_open(n, gc->group_id, gc->replica_id, gc->address, gc->bootstrap,
                             gc->n_bootstrap, err);
        if (rc != MG_OK)
            goto err_loop;
    }
    /* Every replica hosted before (opened at run time): raft has its
     * configuration on disk. */
    if ((rc = node_groups_reopen(n, err)) != MG_OK)
        goto err_loop;
    publish_all(n);

    if ((rc = mg_workers_start(n->cfg.search_workers, &n->workers, err)) != MG_OK)
        goto err_loop;
    if ((rc = node_rpc_open(n, err)) != MG_OK)
        goto err_workers;
    if ((rc = pthread_create(&n->loop_thread, NULL, loop_main, n)) != 0) {
        rc = mg_error_set(err, MG_EIO, "starting the loop thread: %s", strerror(rc));
        goto err_rpc;
    }
    n->loop_started = true;
    node_rpc_start(n);
    mg_info("node.start", "node=%llu groups=%zu rep=%s respondent=%s workers=%u ms=%.1f",
            (unsigned long long)n->cfg.node_id, mg_node_n_groups(n), n->rep_url,
            n->respondent_url ? n->respondent_url : "-", n->cfg.search_workers,
            (double)(mg_clock_mono_ns() - t0) / 1e6);
    *out = n;
    return MG_OK;

err_rpc:
    atomic_store(&n->stopping, true);
    node_rpc_free(n, true);
err_workers:
    mg_workers_stop(n->workers);
err_loop:
    close_groups_inline(n);
    uv_loop_close(&n->loop);
err_free:
    node_free(n);
    return rc;
}

static bool all_ready_locked(mg_node *n, uint64_t *missing)
{
    size_t slots = node_group_slots(n);
    for (size_t i = 0; i < slots; i++) {
        if (!atomic_load(&n->groups[i].hosted))
            continue;
        const mg_node_group_status *st = &n->groups[i].pub;
        if (st->leader_id == 0 || (st->leader_id == st->replica_id && !st->read_ready)) {
            *missing = n->groups[i].group_id;
            return false;
        }
    }
    return true;
}

bool mg_node_ready(mg_node *n)
{
    uint64_t missing;
    pthread_mutex_lock(&n->snap_lock);
    bool ready = all_ready_locked(n, &missing);
    pthread_mutex_unlock(&n->snap_lock);
    return ready;
}

int mg_node_wait_ready(mg_node *n, unsigned timeout_ms, mg_error *err)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    uint64_t missing = 0;
    int rc = MG_OK;
    pthread_mutex_lock(&n->snap_lock);
    while (!all_ready_locked(n, &missing)) {
        if (pthread_cond_timedwait(&n->snap_cond, &n->snap_lock, &until) == ETIMEDOUT &&
            !all_ready_locked(n, &missing)) {
            rc = mg_error_set(err, MG_ETIMEDOUT,
                              "group %llu is not ready (no leader, or its "
                              "leader has not caught up) after %u ms",
                              (unsigned long long)missing, timeout_ms);
            break;
        }
    }
    pthread_mutex_unlock(&n->snap_lock);
    return rc;
}

size_t mg_node_n_groups(const mg_node *n)
{
    mg_node *m = (mg_node *)n; /* atomics only */
    size_t slots = node_group_slots(m), hosted = 0;
    for (size_t i = 0; i < slots; i++)
        hosted += atomic_load(&m->groups[i].hosted);
    return hosted;
}

bool mg_node_group_status_at(mg_node *n, size_t i, mg_node_group_status *out)
{
    size_t slots = node_group_slots(n);
    for (size_t j = 0; j < slots; j++) {
        if (!atomic_load(&n->groups[j].hosted))
            continue;
        if (i-- == 0) {
            node_group_snapshot(n, &n->groups[j], out);
            return true;
        }
    }
    return false;
}

uint64_t mg_node_id(const mg_node *n)
{
    return n->cfg.node_id;
}

void mg_node_stop(mg_node *n)
{
    if (n == NULL)
        return;
    uint64_t t0 = mg_clock_mono_ns();
    node_rpc_quiesce(n);
    bool idle = node_rpc_wait_idle(n, n->cfg.drain_timeout_ms);
    if (!idle)
        mg_warn("node.drain_timeout",
                "node=%llu ms=%u: closing the groups under requests "
                "still in flight",
                (unsigned long long)n->cfg.node_id, n->cfg.drain_timeout_ms);
    pthread_mutex_lock(&n->q_lock);
    n->loop_cmd = LOOP_CLOSE;
    if (n->loop_open)
        uv_async_send(&n->wake);
    pthread_mutex_unlock(&n->q_lock);
    pthread_join(n->loop_thread, NULL);
    if (!idle && !(idle = node_rpc_wait_idle(n, FINAL_DRAIN_MS)))
        mg_errlog("node.stop_stuck",
                  "node=%llu: requests still in flight after the groups "
                  "closed; leaking their contexts",
                  (unsigned long long)n->cfg.node_id);
    /* Workers finish their queue first: a job may still answer a request. */
    mg_workers_stop(n->workers);
    node_rpc_free(n, idle);
    int uvrc = uv_loop_close(&n->loop);
    if (uvrc != 0)
        mg_warn("node.loop_close", "rc=%s", uv_strerror(uvrc));
    mg_info("node.stop", "node=%llu ms=%.1f", (unsigned long long)n->cfg.node_id,
            (double)(mg_clock_mono_ns() - t0) / 1e6);
    node_free(n);
}
