/*
 * The cluster client's map (router/client.h): routing by it (candidates and
 * leader guesses), installing it and its cache file, fetching it from the
 * meta group, and learning nodes by NODE_INFO (seeds and probes).
 */
#include "client_internal.h"

#include "../lib/log.h"
#include "../lib/mp.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- the map and leader guesses -------------------------------------------- */

/* Node indices that may serve `group`: its replicas in the map, in order,
 * for the meta group (0) too: a node the map does not name as its replica
 * hosts none, and asking it would only make its "not hosted" the answer
 * while the replicas elect. Without a map, only group 0 has candidates:
 * the seeds (configured, and the meta nodes they named), those that said
 * they host a replica first. out has NODES_CAP room. */
size_t client_group_candidates(mg_client *c, uint64_t group, int *out)
{
    size_t k = 0;
    pthread_rwlock_rdlock(&c->map_lock);
    if (c->map->epoch == 0) {
        pthread_rwlock_unlock(&c->map_lock);
        if (group != 0)
            return 0;
        size_t n = client_nodes_count(c);
        for (int pass = 0; pass < 2; pass++)
            for (size_t i = 0; i < n; i++)
                if (atomic_load(&c->nodes[i].seed) &&
                    atomic_load(&c->nodes[i].hosts_meta) == (pass == 0))
                    out[k++] = (int)i;
        return k;
    }
    const mg_cmap_group *g = mg_cmap_group_get(c->map, group);
    for (uint32_t r = 0; g != NULL && r < g->n_replicas; r++) {
        int i = client_node_index(c, g->replicas[r]);
        if (i >= 0)
            out[k++] = i;
    }
    pthread_rwlock_unlock(&c->map_lock);
    return k;
}

static void leader_set(mg_client *c, uint64_t group, int i)
{
    if (group < MG_CMAP_GROUPS_MAX)
        atomic_store_explicit(&c->leader[group], i, memory_order_relaxed);
}

/* The node to ask for `group`: the guess when it is a candidate that is not
 * down, else the first candidate that is not down (remembered). -1 when the
 * group has no candidate. *all_down when every candidate is down. */
int client_leader_pick(mg_client *c, uint64_t group, bool *all_down)
{
    int cand[NODES_CAP];
    size_t n = client_group_candidates(c, group, cand);
    *all_down = false;
    if (n == 0)
        return -1;
    int g = group < MG_CMAP_GROUPS_MAX
                ? atomic_load_explicit(&c->leader[group], memory_order_relaxed)
                : -1;
    bool in = false;
    for (size_t k = 0; k < n && !in; k++)
        in = cand[k] == g;
    if (in && !client_node_down(c, g))
        return g;
    for (size_t k = 0; k < n; k++)
        if (!client_node_down(c, cand[k])) {
            leader_set(c, group, cand[k]);
            return cand[k];
        }
    *all_down = true;
    return in ? g : cand[0];
}

/* Moves the guess for `group` to the hinted node, or to the next candidate
 * after `tried` that is not down when the hint names none we know or a node
 * that is down (a follower names the old leader until it notices it is
 * gone). Returns the hinted node's index when the hint was used (it may
 * not be in our map yet: a newer one added it), else -1. */
int client_leader_moved(mg_client *c, uint64_t group, uint64_t hint_id, int tried)
{
    int i = hint_id ? client_node_index(c, hint_id) : -1;
    if (i >= 0 && !client_node_down(c, i)) {
        leader_set(c, group, i);
        return i;
    }
    int cand[NODES_CAP];
    size_t n = client_group_candidates(c, group, cand);
    if (n == 0)
        return -1;
    size_t pos = n - 1; /* so that the scan starts at cand[0] when tried is not one */
    for (size_t k = 0; k < n; k++)
        if (cand[k] == tried)
            pos = k;
    int next = cand[(pos + 1) % n];
    for (size_t k = 1; k <= n; k++) {
        int j = cand[(pos + k) % n];
        if (!client_node_down(c, j)) {
            next = j;
            break;
        }
    }
    leader_set(c, group, next);
    return -1;
}

uint64_t mg_client_group(mg_client *c, const char *cube_id, size_t len)
{
    pthread_rwlock_rdlock(&c->map_lock);
    uint64_t g = c->map->epoch == 0 ? 0 : mg_cmap_cube_group(c->map, cube_id, len);
    pthread_rwlock_unlock(&c->map_lock);
    return g;
}

uint64_t mg_client_epoch(mg_client *c)
{
    return atomic_load(&c->epoch);
}

void mg_client_map(mg_client *c, mg_cmap *out)
{
    pthread_rwlock_rdlock(&c->map_lock);
    memcpy(out, c->map, sizeof *out);
    pthread_rwlock_unlock(&c->map_lock);
}

size_t mg_client_data_groups(mg_client *c, uint64_t *out, size_t cap)
{
    size_t k = 0;
    pthread_rwlock_rdlock(&c->map_lock);
    for (uint32_t i = 0; c->map->epoch != 0 && i < c->map->n_groups && k < cap; i++)
        if (c->map->groups[i].id != 0)
            out[k++] = c->map->groups[i].id;
    pthread_rwlock_unlock(&c->map_lock);
    return k;
}

unsigned mg_client_call_timeout(const mg_client *c)
{
    return c->call_timeout_ms;
}

/* Saves m to the cache file (tmp + rename), unless a newer one was saved. */
static void cache_save(mg_client *c, const mg_cmap *m)
{
    if (c->map_cache == NULL)
        return;
    void *buf = NULL;
    size_t len = 0;
    mg_error err;
    if (mg_cmap_encode(m, &buf, &len, &err) != MG_OK) {
        mg_warn("router.map_cache", "encode: %s", err.msg);
        return;
    }
    pthread_mutex_lock(&c->cache_lock);
    if (m->epoch > c->cache_epoch) {
        size_t plen = strlen(c->map_cache) + 32;
        char *tmp = malloc(plen);
        FILE *f = tmp ? (snprintf(tmp, plen, "%s.tmp.%d", c->map_cache, (int)getpid()),
                         fopen(tmp, "wb"))
                      : NULL;
        bool ok = f != NULL && fwrite(buf, 1, len, f) == len && fflush(f) == 0 &&
                  fsync(fileno(f)) == 0;
        if (f != NULL && fclose(f) != 0)
            ok = false;
        if (ok && rename(tmp, c->map_cache) == 0) {
            c->cache_epoch = m->epoch;
        } else {
            mg_warn("router.map_cache", "cannot write %s: %s", c->map_cache, strerror(errno));
            if (tmp != NULL)
                unlink(tmp);
        }
        free(tmp);
    }
    pthread_mutex_unlock(&c->cache_lock);
    free(buf);
}

bool mg_client_set_map(mg_client *c, const mg_cmap *m)
{
    if (m->epoch <= atomic_load(&c->epoch))
        return false;
    /* Dial the nodes first, so that a request routed by the new map finds
     * its node in the table. */
    for (uint32_t i = 0; i < m->n_nodes; i++)
        client_node_add(c, m->nodes[i].id, m->nodes[i].rpc, m->nodes[i].survey);
    pthread_rwlock_wrlock(&c->map_lock);
    bool newer = m->epoch > c->map->epoch;
    if (newer) {
        memcpy(c->map, m, sizeof *m);
        atomic_store(&c->epoch, m->epoch);
    }
    pthread_rwlock_unlock(&c->map_lock);
    if (!newer)
        return false;
    mg_info("router.map", "epoch=%llu nodes=%u groups=%u", (unsigned long long)m->epoch,
            m->n_nodes, m->n_groups);
    cache_save(c, m);
    return true;
}

/* Loads the cache file when it exists (a bad one is logged and ignored). */
void client_cache_load(mg_client *c)
{
    FILE *f = fopen(c->map_cache, "rb");
    if (f == NULL) {
        if (errno != ENOENT)
            mg_warn("router.map_cache", "cannot read %s: %s", c->map_cache, strerror(errno));
        return;
    }
    size_t cap = 1 << 16, len = 0;
    uint8_t *buf = malloc(cap);
    while (buf != NULL) {
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0)
            break;
        if (len == cap) {
            uint8_t *grown = cap < (64u << 20) ? realloc(buf, cap * 2) : NULL;
            if (grown == NULL) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = grown;
            cap *= 2;
        }
    }
    fclose(f);
    mg_cmap *m = malloc(sizeof *m);
    mg_error err;
    if (buf == NULL || m == NULL) {
        mg_warn("router.map_cache", "%s: out of memory", c->map_cache);
    } else if (mg_cmap_decode(buf, len, m, &err) != MG_OK) {
        mg_warn("router.map_cache", "%s: %s (ignored)", c->map_cache, err.msg);
    } else {
        pthread_mutex_lock(&c->cache_lock);
        c->cache_epoch = m->epoch; /* it is on disk already */
        pthread_mutex_unlock(&c->cache_lock);
        mg_client_set_map(c, m);
    }
    free(m);
    free(buf);
}

/* ---- the map from the meta group --------------------------------------------- */

/* Why there is no map when the seeds answered as in *seeds and the meta
 * group's META_GET failed (call): a cluster a seed belongs to is never
 * called "not initialized". MG_OK when nothing hosts a meta group and no
 * seed belongs to a cluster: not initialized (*why says so). */
static int no_meta(const client_seed_report *seeds, const mg_client_call *call, mg_error *why)
{
    if (seeds->cluster[0] != '\0')
        return mg_error_set(why, MG_EUNAVAIL, "cluster %s: the meta group is not reachable (%s)",
                            seeds->cluster, call->err.msg);
    if (seeds->hosts_meta)
        return mg_error_set(why, MG_EUNAVAIL, "the meta group is not reachable (%s)",
                            call->err.msg);
    if (call->status == MG_ENOTFOUND && strstr(call->err.msg, NOT_HOSTED_ANY) != NULL) {
        mg_error_set(why, MG_EUNAVAIL, "%s", MG_CLIENT_NOT_INIT_MSG);
        return MG_OK;
    }
    *why = call->err;
    return mg_error_wrap(why, call->status, "cluster map (META_GET)");
}

/* One META_GET to group 0's leader; installs a newer map. Without a map,
 * the seeds are asked NODE_INFO first (learning the meta group's nodes),
 * and *why gets the reason when there is still none after (also when the
 * return is MG_OK: the cluster is not initialized). */
static int refresh_once(mg_client *c, unsigned timeout_ms, mg_error *err, mg_error *why)
{
    bool had_map = mg_client_epoch(c) != 0;
    client_seed_report seeds;
    if (!had_map) {
        client_probe_seeds(c, PROBE_REFRESH_MS, true, &seeds);
        if (seeds.answered == 0) {
            /* Nothing to ask META_GET: say so now, not at the deadline. */
            mg_error_set(why, MG_EUNAVAIL, "no seed node answered (%s)",
                         seeds.asked > 0 ? seeds.silent : "none configured");
            *err = *why;
            return MG_EUNAVAIL;
        }
    }
    mg_client_call call = {.op = MG_OP_META_GET, .group = 0, .body = client_empty_body,
                           .body_len = sizeof client_empty_body};
    client_run_calls(c, "", &call, 1, timeout_ms, false);
    if (call.status != MG_OK && !had_map && mg_client_epoch(c) == 0) {
        int rc = no_meta(&seeds, &call, why);
        if (rc != MG_OK)
            *err = *why;
        return rc;
    }
    if (call.status != MG_OK) {
        *err = call.err;
        return mg_error_wrap(err, call.status, "cluster map (META_GET)");
    }
    mg_mp_reader r = mg_wire_body(call.reply.rep.body, call.reply.rep.body_len);
    uint32_t n;
    const uint8_t *map = NULL;
    uint32_t map_len = 0;
    int rc = mg_mp_read_map(&r, &n);
    for (uint32_t i = 0; rc == MG_OK && i < n; i++) {
        if (mg_mp_peek_str_eq(&r, "map")) {
            mg_mp_skip(&r);
            if (mg_mp_peek(&r) == MG_MP_NIL)
                rc = mg_mp_read_nil(&r);
            else
                rc = mg_mp_read_bin(&r, &map, &map_len);
        } else {
            rc = mg_mp_skip(&r) != MG_OK || mg_mp_skip(&r) != MG_OK ? MG_ECORRUPT : MG_OK;
        }
    }
    if (rc != MG_OK) {
        mg_client_reply_free(&call.reply);
        return mg_error_set(err, MG_ECORRUPT, "malformed META_GET answer");
    }
    if (map != NULL) {
        mg_cmap *m = malloc(sizeof *m);
        if (m == NULL) {
            mg_client_reply_free(&call.reply);
            return mg_error_set(err, MG_ENOMEM, "out of memory");
        }
        rc = mg_cmap_decode(map, map_len, m, err);
        if (rc == MG_OK)
            mg_client_set_map(c, m);
        else
            mg_error_wrap(err, rc, "cluster map from the meta group");
        free(m);
    } else if (!had_map && seeds.cluster[0] != '\0') {
        mg_error_set(why, MG_EUNAVAIL,
                     "cluster %s: being initialized (the meta group has no map yet)",
                     seeds.cluster);
    } else {
        mg_error_set(why, MG_EUNAVAIL, "%s", MG_CLIENT_NOT_INIT_MSG);
    }
    mg_client_reply_free(&call.reply);
    if (rc != MG_OK && mg_client_epoch(c) == 0)
        *why = *err;
    return rc;
}

int client_refresh_run(mg_client *c, unsigned timeout_ms, mg_error *err)
{
    pthread_mutex_lock(&c->refresh_lock);
    if (c->refreshing) {
        uint64_t gen = c->refresh_gen;
        while (c->refreshing && c->refresh_gen == gen)
            pthread_cond_wait(&c->refresh_cond, &c->refresh_lock);
    } else if (c->refresh_done_ms == 0 ||
               client_now_ms() - c->refresh_done_ms >= REFRESH_REUSE_MS) {
        c->refreshing = true;
        pthread_mutex_unlock(&c->refresh_lock);
        mg_error e, why;
        mg_error_clear(&e);
        mg_error_set(&why, MG_EUNAVAIL, "%s", MG_CLIENT_NOT_INIT_MSG);
        int rc = refresh_once(c, timeout_ms, &e, &why);
        pthread_mutex_lock(&c->refresh_lock);
        c->refreshing = false;
        c->refresh_gen++;
        c->refresh_rc = rc;
        c->refresh_err = e;
        if (mg_client_epoch(c) == 0)
            c->no_map = why;
        c->refresh_done_ms = client_now_ms();
        pthread_cond_broadcast(&c->refresh_cond);
    }
    int rc = c->refresh_rc;
    if (err != NULL && rc != MG_OK)
        *err = c->refresh_err;
    pthread_mutex_unlock(&c->refresh_lock);
    return rc;
}

int mg_client_no_map(mg_client *c, mg_error *err)
{
    pthread_mutex_lock(&c->refresh_lock);
    mg_error why = c->no_map;
    pthread_mutex_unlock(&c->refresh_lock);
    if (why.msg[0] == '\0')
        return mg_error_set(err, MG_EUNAVAIL, "%s", MG_CLIENT_NOT_INIT_MSG);
    return mg_error_set(err, MG_EUNAVAIL, "%s", why.msg);
}

int mg_client_need_map(mg_client *c, mg_error *err)
{
    if (mg_client_epoch(c) != 0)
        return MG_OK;
    client_refresh_run(c, c->call_timeout_ms, NULL);
    if (mg_client_epoch(c) != 0)
        return MG_OK;
    return mg_client_no_map(c, err);
}

int mg_client_refresh(mg_client *c, mg_error *err)
{
    return client_refresh_run(c, c->call_timeout_ms, err);
}

int mg_client_refresh_for(mg_client *c, unsigned timeout_ms, mg_error *err)
{
    return client_refresh_run(c, timeout_ms ? timeout_ms : 1, err);
}

