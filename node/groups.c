/*
 * The node's table of hosted groups at run time: opening a replica (at start
 * for the configured groups and those found on disk, later for GROUP_OPEN),
 * closing one (GROUP_CLOSE) and the "replica" file that lets a restart
 * reopen what the node hosted.
 *
 *   <data>/group-<id>/replica   {"replica": id, "address": "IPv4:port"}
 *
 * The file is written (tmp + fsync + rename + fsync of the directory) once
 * the replica is open, and removed before it is closed, so a restart reopens
 * exactly the replicas hosted when the node stopped.
 */
#include "node_internal.h"

#include "../lib/log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define REPLICA_FILE "replica"
#define PATH_CAP 4096

/* ---- the replica file --------------------------------------------------- */

static int replica_file_write(const char *data_dir, uint64_t group_id, uint64_t replica_id,
                              const char *address, mg_error *err)
{
    char dir[PATH_CAP], path[PATH_CAP];
    if (mg_host_group_path(data_dir, group_id, NULL, dir, sizeof dir) != MG_OK ||
        mg_host_group_path(data_dir, group_id, REPLICA_FILE, path, sizeof path) != MG_OK)
        return mg_error_set(err, MG_ETOOBIG, "data directory path too long");
    json_t *doc = json_pack("{s:I, s:s}", "replica", (json_int_t)replica_id, "address", address);
    char *text = doc != NULL ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    if (text == NULL)
        return mg_error_set(err, MG_ENOMEM, "out of memory writing %s", path);
    int rc = node_file_write_atomic(dir, path, text, err);
    free(text);
    return rc;
}

/* MG_OK with the file's contents, MG_ENOTFOUND when there is none,
 * MG_ECORRUPT naming the file. */
static int replica_file_read(const char *path, uint64_t *replica_id, char *address, size_t cap,
                             mg_error *err)
{
    json_error_t jerr;
    struct stat st;
    if (stat(path, &st) != 0 && errno == ENOENT)
        return MG_ENOTFOUND;
    json_t *doc = json_load_file(path, 0, &jerr);
    if (doc == NULL)
        return mg_error_set(err, MG_ECORRUPT, "%s: %s", path, jerr.text);
    json_t *id = json_object_get(doc, "replica"), *addr = json_object_get(doc, "address");
    int rc = MG_OK;
    if (!json_is_integer(id) || json_integer_value(id) <= 0 || !json_is_string(addr) ||
        json_string_length(addr) == 0 || json_string_length(addr) >= cap)
        rc = mg_error_set(err, MG_ECORRUPT,
                          "%s: {\"replica\": id > 0, \"address\": \"host:port\"} expected", path);
    else {
        *replica_id = (uint64_t)json_integer_value(id);
        snprintf(address, cap, "%s", json_string_value(addr));
    }
    json_decref(doc);
    return rc;
}

static int sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rv = fsync(fd);
    close(fd);
    return rv;
}

static void replica_file_remove(const char *data_dir, uint64_t group_id)
{
    char path[PATH_CAP], dir[PATH_CAP];
    if (mg_host_group_path(data_dir, group_id, REPLICA_FILE, path, sizeof path) != MG_OK ||
        mg_host_group_path(data_dir, group_id, NULL, dir, sizeof dir) != MG_OK)
        return;
    if (unlink(path) != 0 && errno != ENOENT)
        mg_warn("node.replica_file", "path=%s err=\"%s\"", path, strerror(errno));
    else
        sync_dir(dir);
}

/* ---- opening ------------------------------------------------------------ */

/* A group bootstrapped with this replica as its only voter cannot be
 * contested: a short election timeout only makes it lead sooner. */
static void group_tunables(const mg_node *n, uint64_t replica_id, const mg_group_peer *bootstrap,
                           size_t n_bootstrap, mg_group_tunables *t)
{
    *t = n->tunables;
    if (n_bootstrap == 1 && bootstrap[0].id == replica_id) {
        t->election_timeout_ms = n->cfg.single_voter_election_ms;
        if (t->heartbeat_timeout_ms >= t->election_timeout_ms)
            t->heartbeat_timeout_ms = t->election_timeout_ms > 1 ? t->election_timeout_ms / 2 : 1;
    }
}

bool node_group_owns(node_group *ng, const char *cube_id, uint64_t *epoch)
{
    if (epoch != NULL)
        *epoch = 0;
    if (ng->fsm == NULL)
        return true;
    return mg_fsm_owns(ng->fsm, cube_id, strlen(cube_id), epoch);
}

int node_group_open(mg_node *n, uint64_t group_id, uint64_t replica_id, const char *address,
                    const mg_group_peer *bootstrap, size_t n_bootstrap, mg_error *err)
{
    node_group *ng = node_group_slot(n, group_id);
    if (ng != NULL && atomic_load(&ng->hosted))
        return mg_error_set(err, MG_EEXIST, "group %llu is already hosted",
                            (unsigned long long)group_id);
    if (ng != NULL && ng->closing)
        return mg_error_set(err, MG_EBUSY, "group %llu is being closed; retry",
                            (unsigned long long)group_id);
    if (n->host == NULL || n->host_closed)
        return mg_error_set(err, MG_ESHUTDOWN, "the node is stopping");
    if (replica_id == 0 || address == NULL || address[0] == '\0' ||
        strlen(address) >= MG_ADDRESS_MAX)
        return mg_error_set(err, MG_EINVAL, "group %llu needs a replica id and a raft address",
                            (unsigned long long)group_id);
    size_t slots = node_group_slots(n);
    bool new_slot = ng == NULL;
    if (new_slot) {
        if (slots == n->groups_cap)
            return mg_error_set(err, MG_EFULL, "node: at most %zu groups", n->groups_cap);
        ng = &n->groups[slots];
        ng->group_id = group_id;
    }
    mg_group_tunables t;
    mg_group *g = NULL;
    group_tunables(n, replica_id, bootstrap, n_bootstrap, &t);
    int rc = mg_host_add_group(n->host, group_id, replica_id, address, bootstrap, n_bootstrap, &t,
                               &g, err);
    if (rc != MG_OK)
        return rc;
    if ((rc = replica_file_write(n->data_dir, group_id, replica_id, address, err)) != MG_OK) {
        mg_host_remove_group(n->host, group_id, NULL);
        return rc;
    }
    ng->replica_id = replica_id;
    ng->g = g;
    ng->barrier_pending = false;
    ng->barrier_term = ng->ready_term = 0;
    memset(&ng->seen, 0, sizeof ng->seen);
    pthread_rwlock_wrlock(&n->store_lock);
    ng->store = mg_group_store(g);
    ng->fsm = mg_group_fsm(g);
    pthread_rwlock_unlock(&n->store_lock);
    if (new_slot)
        atomic_store_explicit(&n->n_groups, slots + 1, memory_order_release);
    atomic_store(&ng->hosted, true);
    mg_info("node.group_open", "node=%llu group=%llu replica=%llu address=%s voters=%zu",
            (unsigned long long)n->cfg.node_id, (unsigned long long)group_id,
            (unsigned long long)replica_id, address, n_bootstrap);
    return MG_OK;
}

/* "group-<digits>" exactly; 0 when the name is something else. */
static bool group_dir_id(const char *name, uint64_t *id)
{
    if (strncmp(name, "group-", 6) != 0 || name[6] < '0' || name[6] > '9')
        return false;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(name + 6, &end, 10);
    if (errno != 0 || *end != '\0')
        return false;
    *id = v;
    return true;
}

int node_groups_reopen(mg_node *n, mg_error *err)
{
    DIR *d = opendir(n->data_dir);
    if (d == NULL)
        return mg_error_set(err, MG_EIO, "opening %s: %s", n->data_dir, strerror(errno));
    int rc = MG_OK;
    struct dirent *e;
    while (rc == MG_OK && (e = readdir(d)) != NULL) {
        uint64_t group_id, replica_id = 0;
        char path[PATH_CAP], address[MG_ADDRESS_MAX];
        if (!group_dir_id(e->d_name, &group_id) || node_group_find(n, group_id) != NULL)
            continue;
        if (mg_host_group_path(n->data_dir, group_id, REPLICA_FILE, path, sizeof path) != MG_OK) {
            rc = mg_error_set(err, MG_ETOOBIG, "data directory path too long");
            break;
        }
        int frc = replica_file_read(path, &replica_id, address, sizeof address, err);
        if (frc == MG_ENOTFOUND)
            continue; /* closed, or never finished opening */
        if (frc != MG_OK) {
            rc = frc;
            break;
        }
        rc = node_group_open(n, group_id, replica_id, address, NULL, 0, err);
    }
    closedir(d);
    return rc;
}

/* ---- closing ------------------------------------------------------------ */

static void answer_close_waiters(node_group *ng, int status, const mg_error *err)
{
    node_ctx *w = ng->close_waiters;
    ng->close_waiters = NULL;
    while (w != NULL) {
        node_ctx *c = w;
        w = c->wait_next;
        c->wait_next = NULL;
        if (status != MG_OK) {
            node_reply_err(c, err);
            continue;
        }
        msgpack_sbuffer sb;
        msgpack_packer pk;
        node_reply_begin(c, &sb, &pk);
        msgpack_pack_map(&pk, 0);
        node_reply(c, &sb);
    }
}

static void destroy_work(uv_work_t *w)
{
    node_group *ng = w->data;
    ng->destroy_rc = mg_host_destroy_group(ng->node->data_dir, ng->group_id, &ng->destroy_err);
}

static void destroy_done(uv_work_t *w, int status)
{
    node_group *ng = w->data;
    mg_node *n = ng->node;
    if (status != 0 && ng->destroy_rc == MG_OK)
        ng->destroy_rc = mg_error_set(&ng->destroy_err, MG_ESHUTDOWN,
                                      "removing the files of group %llu: %s",
                                      (unsigned long long)ng->group_id, uv_strerror(status));
    mg_info("node.group_closed", "node=%llu group=%llu destroyed=1 rc=%s",
            (unsigned long long)n->cfg.node_id, (unsigned long long)ng->group_id,
            mg_errname(ng->destroy_rc));
    ng->closing = false;
    ng->destroy = false;
    answer_close_waiters(ng, ng->destroy_rc, &ng->destroy_err);
    if (!n->host_closed)
        node_publish(n);
}

/* Removes the group's files off the loop thread, then answers the waiters;
 * the slot stays `closing` meanwhile, so a GROUP_OPEN of the same group
 * waits (MG_EBUSY) instead of opening files that are being removed. */
static void destroy_async(node_group *ng)
{
    ng->closing = true;
    ng->destroy_rc = MG_OK;
    mg_error_clear(&ng->destroy_err);
    ng->destroy_work.data = ng;
    int rv = uv_queue_work(&ng->node->loop, &ng->destroy_work, destroy_work, destroy_done);
    if (rv != 0) {
        ng->destroy_rc = mg_error_set(&ng->destroy_err, MG_EUNAVAIL,
                                      "removing the files of group %llu: %s",
                                      (unsigned long long)ng->group_id, uv_strerror(rv));
        destroy_done(&ng->destroy_work, 0);
    }
}

static void on_group_closed(void *arg)
{
    node_group *ng = arg;
    mg_node *n = ng->node;
    if (ng->destroy) {
        destroy_async(ng);
        return;
    }
    ng->closing = false;
    mg_info("node.group_closed", "node=%llu group=%llu destroyed=0 rc=OK",
            (unsigned long long)n->cfg.node_id, (unsigned long long)ng->group_id);
    answer_close_waiters(ng, MG_OK, NULL);
    if (!n->host_closed)
        node_publish(n);
}

static void push_waiter(node_group *ng, node_ctx *c)
{
    if (c == NULL)
        return;
    c->wait_next = ng->close_waiters;
    ng->close_waiters = c;
}

void node_group_close(mg_node *n, node_group *ng, bool destroy, node_ctx *waiter)
{
    mg_error err = {0};
    if (!atomic_load(&ng->hosted)) {
        if (ng->closing) { /* a close is running: answer with it */
            ng->destroy |= destroy;
            push_waiter(ng, waiter);
            return;
        }
        push_waiter(ng, waiter);
        if (destroy) {
            ng->destroy = true;
            destroy_async(ng);
        } else {
            answer_close_waiters(ng, MG_OK, NULL);
        }
        return;
    }
    /* Not reopened at the next start, whatever happens next. */
    replica_file_remove(n->data_dir, ng->group_id);
    atomic_store(&ng->hosted, false);
    /* From here no reader reaches the store: those inside see NULL. */
    pthread_rwlock_wrlock(&n->store_lock);
    ng->store = NULL;
    ng->fsm = NULL;
    pthread_rwlock_unlock(&n->store_lock);
    ng->g = NULL;
    ng->closing = true;
    ng->destroy = destroy;
    push_waiter(ng, waiter);
    int rc = mg_host_remove_group_cb(n->host, ng->group_id, on_group_closed, ng, &err);
    if (rc != MG_OK) {
        ng->closing = false;
        answer_close_waiters(ng, rc, &err);
    }
    node_publish(n);
}
