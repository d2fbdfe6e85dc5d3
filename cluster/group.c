#include "group_internal.h"

#include "../lib/log.h"
#include "store_guard.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

void mg_group_tunables_default(mg_group_tunables *t)
{
    *t = (mg_group_tunables){
        .election_timeout_ms = 400,
        .heartbeat_timeout_ms = 100,
        .install_snapshot_timeout_ms = 30000,
        .snapshot_threshold = 1024,
        .snapshot_trailing = 256,
        .pre_vote = true,
        .batch_max_bytes = (size_t)256 << 10,
        .max_inflight = 4,
        .connect_retry_ms = 200,
        .store_sync = MG_STORE_SYNC_NONE,
    };
}

static int raft_error(mg_error *err, int rv, const char *what, const char *detail)
{
    int code = mg_raft_to_mg(rv);
    return mg_error_set(err, code, "%s: %s%s%s", what, raft_strerror(rv),
                        detail && detail[0] ? ": " : "", detail ? detail : "");
}

static int make_dir(const char *path, mg_error *err)
{
    char buf[4096];
    size_t len = strlen(path);
    if (len == 0 || len >= sizeof buf)
        return mg_error_set(err, MG_EINVAL, "directory path too long or empty");
    memcpy(buf, path, len + 1);
    for (size_t i = 1; i <= len; i++) {
        if (buf[i] != '/' && buf[i] != '\0')
            continue;
        char c = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            return mg_error_set(err, MG_EIO, "mkdir %s: %s", buf, strerror(errno));
        buf[i] = c;
    }
    return MG_OK;
}

/* ---- lifecycle ---------------------------------------------------------- */

int mg_group_open(uv_loop_t *loop, const mg_group_config *cfg, mg_group **out, mg_error *err)
{
    int rc, rv;
    if (cfg->replica_id == 0 || cfg->address == NULL ||
        strlen(cfg->address) >= MG_ADDRESS_MAX || cfg->raft_dir == NULL ||
        cfg->store_dir == NULL)
        return mg_error_set(err, MG_EINVAL, "group config: replica_id, address, raft_dir "
                                            "and store_dir are required");
    mg_group *g = calloc(1, sizeof *g);
    if (g == NULL)
        return mg_error_set(err, MG_ENOMEM, "out of memory for a group");
    g->loop = loop;
    g->group_id = cfg->group_id;
    g->replica_id = cfg->replica_id;
    snprintf(g->address, sizeof g->address, "%s", cfg->address);
    if (cfg->tunables != NULL)
        g->tun = *cfg->tunables;
    else
        mg_group_tunables_default(&g->tun);
    if (g->tun.max_inflight == 0)
        g->tun.max_inflight = 1;
    if (cfg->n_bootstrap > 0) {
        g->bootstrap = malloc(cfg->n_bootstrap * sizeof *g->bootstrap);
        if (g->bootstrap == NULL) {
            rc = mg_error_set(err, MG_ENOMEM, "out of memory for a group");
            goto err_free;
        }
        memcpy(g->bootstrap, cfg->bootstrap, cfg->n_bootstrap * sizeof *g->bootstrap);
        g->n_bootstrap = cfg->n_bootstrap;
    }
    if ((rc = make_dir(cfg->raft_dir, err)) != MG_OK)
        goto err_free;
    if ((g->store_dir = strdup(cfg->store_dir)) == NULL) {
        rc = mg_error_set(err, MG_ENOMEM, "out of memory for a group");
        goto err_free;
    }
    mg_store_options so = {.sync = g->tun.store_sync};
    if (so.sync == MG_STORE_SYNC_NONE) {
        bool wiped;
        mg_error gerr = {0};
        rc = mg_store_guard_arm(cfg->store_dir, &wiped, &gerr);
        if (rc == MG_ENOTFOUND) {
            so.sync = MG_STORE_SYNC_META; /* no way to tell a machine restart */
            mg_warn("group.store_sync", "group=%llu msg=\"%s: the store syncs its commits\"",
                    (unsigned long long)g->group_id, gerr.msg);
        } else if (rc != MG_OK) {
            mg_error_set(err, rc, "%s", gerr.msg);
            goto err_free;
        } else {
            g->store_guarded = true;
        }
    }
    if ((rc = mg_store_open(cfg->store_dir, &so, &g->store, err)) != MG_OK)
        goto err_free;
    mg_fsm_init(&g->fsm, g->store);
    if ((rc = mg_applier_start(loop, &g->fsm, cfg->apply_hist, group_on_applied, g, &g->applier,
                               err)) != MG_OK)
        goto err_fsm;
    group_fsm_init(g);

    if ((rv = raft_uv_tcp_init(&g->transport, loop)) != 0) {
        rc = raft_error(err, rv, "raft_uv_tcp_init", NULL);
        goto err_applier;
    }
    if ((rv = raft_uv_init(&g->io, loop, cfg->raft_dir, &g->transport)) != 0) {
        rc = raft_error(err, rv, "raft_uv_init", g->io.errmsg);
        goto err_transport;
    }
    /* raft_uv 0.15 implements async_work (a thread-pool job it waits for on
     * close) but reports io version 1, which keeps raft from taking
     * snapshots asynchronously. */
    if (g->io.async_work != NULL && g->io.version < 2)
        g->io.version = 2;
    raft_uv_set_connect_retry_delay(&g->io, g->tun.connect_retry_ms);
    (void)raft_uv_set_snapshot_compression(&g->io, false); /* vectors do not compress */
    if ((rv = raft_init(&g->raft, &g->io, &g->rfsm, cfg->replica_id, cfg->address)) != 0) {
        rc = raft_error(err, rv, "raft_init", raft_errmsg(&g->raft));
        goto err_io;
    }
    g->raft_inited = true;
    g->raft.data = g;
    mg_fsm_attach(&g->fsm, &g->raft);
    raft_set_election_timeout(&g->raft, g->tun.election_timeout_ms);
    raft_set_heartbeat_timeout(&g->raft, g->tun.heartbeat_timeout_ms);
    raft_set_install_snapshot_timeout(&g->raft, g->tun.install_snapshot_timeout_ms);
    raft_set_snapshot_threshold(&g->raft, g->tun.snapshot_threshold);
    raft_set_snapshot_trailing(&g->raft, g->tun.snapshot_trailing);
    raft_set_pre_vote(&g->raft, g->tun.pre_vote);

    uv_idle_init(loop, &g->flush);
    g->flush.data = g;
    *out = g;
    return MG_OK;

err_io:
    raft_uv_close(&g->io);
err_transport:
    raft_uv_tcp_close(&g->transport);
err_applier:
    mg_applier_stop(g->applier, NULL, NULL); /* idle: joins now, frees at the next turn */
err_fsm:
    mg_fsm_close(&g->fsm);
    mg_store_close(g->store);
err_free:
    free(g->store_dir);
    free(g->bootstrap);
    free(g);
    return rc;
}

int mg_group_start(mg_group *g, mg_error *err)
{
    int rv;
    if (g->n_bootstrap > 0) {
        struct raft_configuration conf;
        raft_configuration_init(&conf);
        for (size_t i = 0; i < g->n_bootstrap; i++) {
            rv = raft_configuration_add(&conf, g->bootstrap[i].id, g->bootstrap[i].address,
                                        RAFT_VOTER);
            if (rv != 0) {
                raft_configuration_close(&conf);
                return raft_error(err, rv, "bootstrap configuration", NULL);
            }
        }
        rv = raft_bootstrap(&g->raft, &conf);
        raft_configuration_close(&conf);
        if (rv != 0 && rv != RAFT_CANTBOOTSTRAP) /* CANTBOOTSTRAP: a restart */
            return raft_error(err, rv, "raft_bootstrap", raft_errmsg(&g->raft));
        if (rv == RAFT_CANTBOOTSTRAP)
            mg_debug("group.restart", "group=%llu replica=%llu",
                     (unsigned long long)g->group_id, (unsigned long long)g->replica_id);
    }
    if ((rv = raft_start(&g->raft)) != 0)
        return raft_error(err, rv, "raft_start", raft_errmsg(&g->raft));
    mg_info("group.start", "group=%llu replica=%llu address=%s applied=%llu",
            (unsigned long long)g->group_id, (unsigned long long)g->replica_id, g->address,
            (unsigned long long)mg_store_applied(g->store));
    return MG_OK;
}

static void fail_queued(mg_group *g, int code)
{
    while (g->head != NULL) {
        mg_group_proposal *p = g->head;
        g->head = p->next;
        if (g->head == NULL)
            g->tail = NULL;
        g->queued--;
        free(p->buf);
        p->buf = NULL;
        p->cb(p, code, NULL, 0);
    }
}

static void group_free(mg_group *g)
{
    mg_group_close_cb cb = g->close_cb;
    void *arg = g->close_arg;
    raft_uv_close(&g->io);
    raft_uv_tcp_close(&g->transport);
    mg_fsm_close(&g->fsm);
    mg_error err = {0};
    int rc = g->store_guarded ? mg_store_sync(g->store, &err) : MG_OK;
    mg_store_close(g->store);
    if (g->store_guarded && rc == MG_OK)
        rc = mg_store_guard_disarm(g->store_dir, &err);
    if (rc != MG_OK) /* the next boot rebuilds the store: safe, if slow */
        mg_warn("group.store_unsynced", "group=%llu msg=\"%s\"",
                (unsigned long long)g->group_id, err.msg);
    if (cb != NULL)
        cb(g, arg);
    free(g->store_dir);
    free(g->bootstrap);
    free(g);
}

static void close_step(mg_group *g)
{
    if (--g->pending_closes == 0)
        group_free(g);
}

static void on_idle_closed(uv_handle_t *h)
{
    close_step(h->data);
}

static void on_applier_stopped(void *arg)
{
    close_step(arg);
}

/* Raft is closed: nothing more is pushed. The applier writes what it holds
 * (committed entries), answers their proposals and stops. */
static void on_raft_closed(struct raft *r)
{
    mg_group *g = r->data;
    mg_applier_stop(g->applier, on_applier_stopped, g);
}

void mg_group_close(mg_group *g, mg_group_close_cb cb, void *arg)
{
    if (g->closing)
        return;
    g->closing = true;
    g->close_cb = cb;
    g->close_arg = arg;
    fail_queued(g, MG_ESHUTDOWN);
    g->pending_closes = 2;
    uv_idle_stop(&g->flush);
    uv_close((uv_handle_t *)&g->flush, on_idle_closed);
    raft_close(&g->raft, on_raft_closed);
}

/* ---- state -------------------------------------------------------------- */

uint64_t mg_group_id(const mg_group *g) { return g->group_id; }
uint64_t mg_group_replica_id(const mg_group *g) { return g->replica_id; }
int mg_group_raft_state(mg_group *g) { return raft_state(&g->raft); }
bool mg_group_is_leader(mg_group *g) { return raft_state(&g->raft) == RAFT_LEADER; }
uint64_t mg_group_last_applied(mg_group *g)
{
    /* What the store holds: raft's index once the applier has caught up
     * (raft's also counts entries the store never sees, such as barriers). */
    if (mg_applier_idle(g->applier))
        return raft_last_applied(&g->raft);
    return mg_applier_last_done(g->applier);
}
mg_store *mg_group_store(mg_group *g) { return g->store; }
mg_fsm *mg_group_fsm(mg_group *g) { return &g->fsm; }
struct raft *mg_group_raft(mg_group *g) { return &g->raft; }
size_t mg_group_queued(const mg_group *g) { return g->queued; }
unsigned mg_group_inflight(const mg_group *g) { return g->inflight; }

void mg_group_leader(mg_group *g, uint64_t *id, const char **address)
{
    raft_id lid = 0;
    const char *addr = NULL;
    raft_leader(&g->raft, &lid, &addr);
    *id = lid;
    if (address != NULL)
        *address = addr;
}

static int not_leader(mg_group *g, mg_error *err)
{
    uint64_t lid;
    const char *addr;
    mg_group_leader(g, &lid, &addr);
    return mg_error_set(err, MG_ENOTLEADER, "group %llu: replica %llu is not the leader "
                        "(leader %llu at %s)", (unsigned long long)g->group_id,
                        (unsigned long long)g->replica_id, (unsigned long long)lid,
                        addr ? addr : "unknown");
}

/* ---- proposals and batching -------------------------------------------- */

/* Takes proposals off the queue up to the size limit (at least one) and
 * submits them as one entry. Returns false when nothing more can be sent. */
static bool flush_one(mg_group *g)
{
    size_t n = 0, bytes = MG_ENTRY_HEADER_LEN;
    uint32_t n_cmds = 0;
    for (mg_group_proposal *p = g->head; p != NULL; p = p->next) {
        if (n > 0 && (bytes + p->len > g->tun.batch_max_bytes || n_cmds + p->n_cmds < n_cmds))
            break;
        bytes += p->len;
        n_cmds += p->n_cmds;
        n++;
    }
    if (n == 0)
        return false;
    size_t padded = mg_entry_padded(bytes);
    group_batch *b = malloc(sizeof *b + n * sizeof b->props[0]);
    uint8_t *buf = raft_malloc(padded);
    if (b == NULL || buf == NULL) {
        free(b);
        raft_free(buf);
        mg_errlog("group.flush_nomem", "bytes=%zu", bytes);
        return false; /* retried at the next turn */
    }
    *b = (group_batch){.g = g, .n = n};
    b->req.data = b;
    size_t off = mg_entry_header(buf, n_cmds);
    for (size_t i = 0; i < n; i++) {
        mg_group_proposal *p = g->head;
        g->head = p->next;
        g->queued--;
        memcpy(buf + off, p->buf, p->len);
        off += p->len;
        free(p->buf);
        p->buf = NULL;
        p->next = NULL;
        b->props[i] = p;
    }
    if (g->head == NULL)
        g->tail = NULL;
    memset(buf + bytes, 0, padded - bytes);
    struct raft_buffer rb = {.base = buf, .len = padded};
    int rv = raft_apply(&g->raft, &b->req, &rb, 1, group_batch_done);
    if (rv != 0) {
        raft_free(buf);
        mg_debug("group.apply_refused", "group=%llu rv=%s", (unsigned long long)g->group_id,
                 raft_strerror(rv));
        group_fail_batch(b, mg_raft_to_mg(rv));
        free(b);
        return true;
    }
    g->inflight++;
    group_flying_put(g, b);
    return true;
}

static void flush_queue(mg_group *g)
{
    while (g->head != NULL && g->inflight < g->tun.max_inflight && !g->closing) {
        if (!flush_one(g))
            break;
    }
    if (g->head == NULL || g->inflight >= g->tun.max_inflight || g->closing)
        uv_idle_stop(&g->flush);
}

static void on_flush(uv_idle_t *h)
{
    flush_queue(h->data);
}

void group_schedule_flush(mg_group *g)
{
    if (!g->closing && g->head != NULL && g->inflight < g->tun.max_inflight)
        uv_idle_start(&g->flush, on_flush);
}

int mg_group_propose(mg_group *g, mg_group_proposal *p, const mg_cmd *cmds, size_t n,
                     mg_group_propose_cb cb, mg_error *err)
{
    if (g->closing)
        return mg_error_set(err, MG_ESHUTDOWN, "group %llu is closing",
                            (unsigned long long)g->group_id);
    if (n == 0 || n > UINT32_MAX)
        return mg_error_set(err, MG_EINVAL, "propose: no commands");
    if (raft_state(&g->raft) != RAFT_LEADER)
        return not_leader(g, err);
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    for (size_t i = 0; i < n; i++) {
        int rc = mg_cmd_validate(&cmds[i], err);
        if (rc == MG_OK && (rc = mg_cmd_pack(&pk, &cmds[i])) != MG_OK)
            mg_error_set(err, rc, "encoding a command failed");
        if (rc != MG_OK) {
            msgpack_sbuffer_destroy(&sb);
            return n > 1 ? mg_error_wrap(err, rc, "commands[%zu]", i) : rc;
        }
    }
    if (sb.size > MG_CMD_BYTES_MAX) {
        size_t size = sb.size;
        msgpack_sbuffer_destroy(&sb);
        return mg_error_set(err, MG_ETOOBIG, "proposal of %zu bytes (at most %u)", size,
                            MG_CMD_BYTES_MAX);
    }
    p->len = sb.size;
    p->buf = (uint8_t *)msgpack_sbuffer_release(&sb);
    p->n_cmds = (uint32_t)n;
    p->cb = cb;
    p->next = NULL;
    if (g->tail != NULL)
        g->tail->next = p;
    else
        g->head = p;
    g->tail = p;
    g->queued++;
    group_schedule_flush(g);
    return MG_OK;
}

/* ---- barrier ------------------------------------------------------------ */

/* Raft has applied the barrier: once the applier has written every entry
 * before it, reads see them all. */
static void barrier_done(struct raft_barrier *req, int status)
{
    mg_group_barrier_req *b = req->data;
    int rc = status != 0 ? mg_raft_to_mg(status) : mg_applier_mark(b->g->applier, req->index, b);
    if (rc != MG_OK)
        b->cb(b, rc);
}

int mg_group_barrier(mg_group *g, mg_group_barrier_req *b, mg_group_barrier_cb cb,
                     mg_error *err)
{
    if (g->closing)
        return mg_error_set(err, MG_ESHUTDOWN, "group is closing");
    if (raft_state(&g->raft) != RAFT_LEADER)
        return not_leader(g, err);
    b->g = g;
    b->cb = cb;
    b->req.data = b;
    int rv = raft_barrier(&g->raft, &b->req, barrier_done);
    if (rv != 0)
        return raft_error(err, rv, "raft_barrier", raft_errmsg(&g->raft));
    return MG_OK;
}

/* ---- leadership transfer ----------------------------------------------- */

static void transfer_done(struct raft_transfer *req)
{
    mg_group *g = req->data;
    g->transferring = false;
    if (g->transfer_cb != NULL)
        g->transfer_cb(g, g->transfer_arg);
}

int mg_group_transfer(mg_group *g, uint64_t target, mg_group_transfer_cb cb, void *arg,
                      mg_error *err)
{
    if (g->closing)
        return mg_error_set(err, MG_ESHUTDOWN, "group is closing");
    if (raft_state(&g->raft) != RAFT_LEADER)
        return not_leader(g, err);
    if (g->transferring)
        return mg_error_set(err, MG_EBUSY, "a leadership transfer is in progress");
    g->transfer.data = g;
    g->transfer_cb = cb;
    g->transfer_arg = arg;
    int rv = raft_transfer(&g->raft, &g->transfer, target, transfer_done);
    if (rv != 0)
        return raft_error(err, rv, "raft_transfer", raft_errmsg(&g->raft));
    g->transferring = true;
    return MG_OK;
}

/* ---- membership --------------------------------------------------------- */

static void change_done(struct raft_change *req, int status)
{
    mg_group_change *c = req->data;
    mg_group *g = c->g;
    if (status == 0 && c->assign_next) {
        c->assign_next = false;
        int rv = raft_assign(&g->raft, &c->req, c->id, RAFT_VOTER, change_done);
        if (rv == 0)
            return;
        mg_warn("group.assign_failed", "group=%llu id=%llu rv=\"%s\"",
                (unsigned long long)g->group_id, (unsigned long long)c->id, raft_strerror(rv));
        status = rv;
    }
    c->cb(c, mg_raft_to_mg(status));
}

int mg_group_add(mg_group *g, mg_group_change *c, uint64_t id, const char *address,
                 mg_group_change_cb cb, mg_error *err)
{
    if (g->closing)
        return mg_error_set(err, MG_ESHUTDOWN, "group is closing");
    if (raft_state(&g->raft) != RAFT_LEADER)
        return not_leader(g, err);
    c->g = g;
    c->id = id;
    c->cb = cb;
    c->assign_next = true;
    c->req.data = c;
    int rv = raft_add(&g->raft, &c->req, id, address, change_done);
    if (rv != 0)
        return raft_error(err, rv, "raft_add", raft_errmsg(&g->raft));
    return MG_OK;
}

int mg_group_remove(mg_group *g, mg_group_change *c, uint64_t id, mg_group_change_cb cb,
                    mg_error *err)
{
    if (g->closing)
        return mg_error_set(err, MG_ESHUTDOWN, "group is closing");
    if (raft_state(&g->raft) != RAFT_LEADER)
        return not_leader(g, err);
    c->g = g;
    c->id = id;
    c->cb = cb;
    c->assign_next = false;
    c->req.data = c;
    int rv = raft_remove(&g->raft, &c->req, id, change_done);
    if (rv != 0)
        return raft_error(err, rv, "raft_remove", raft_errmsg(&g->raft));
    return MG_OK;
}
