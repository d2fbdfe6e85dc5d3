#include "host.h"

#include "../lib/log.h"

#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct mg_host {
    uv_loop_t *loop;
    char *data_dir;
    mg_hist *apply_hist; /* borrowed, given to every group added */
    mg_group **groups;
    size_t n, cap;
    int closing_groups; /* groups whose close callback has not fired yet */
    bool closing;
    mg_host_close_cb close_cb;
    void *close_arg;
};

int mg_host_group_path(const char *data_dir, uint64_t group_id, const char *sub, char *buf,
                       size_t cap)
{
    int n = snprintf(buf, cap, "%s/group-%llu%s%s", data_dir, (unsigned long long)group_id,
                     sub && sub[0] ? "/" : "", sub ? sub : "");
    return n < 0 || (size_t)n >= cap ? MG_ETOOBIG : MG_OK;
}

int mg_host_open(uv_loop_t *loop, const char *data_dir, mg_host **out, mg_error *err)
{
    if (mkdir(data_dir, 0755) != 0 && errno != EEXIST)
        return mg_error_set(err, MG_EIO, "mkdir %s: %s", data_dir, strerror(errno));
    mg_host *h = calloc(1, sizeof *h);
    if (h == NULL || (h->data_dir = strdup(data_dir)) == NULL) {
        free(h);
        return mg_error_set(err, MG_ENOMEM, "out of memory for a host");
    }
    h->loop = loop;
    *out = h;
    return MG_OK;
}

void mg_host_set_apply_hist(mg_host *h, mg_hist *hist)
{
    h->apply_hist = hist;
}

mg_group *mg_host_group(mg_host *h, uint64_t group_id)
{
    for (size_t i = 0; i < h->n; i++)
        if (mg_group_id(h->groups[i]) == group_id)
            return h->groups[i];
    return NULL;
}

size_t mg_host_n_groups(const mg_host *h)
{
    return h->n;
}
mg_group *mg_host_group_at(mg_host *h, size_t i)
{
    return i < h->n ? h->groups[i] : NULL;
}

static void on_group_closed(mg_group *g, void *arg)
{
    mg_host *h = arg;
    (void)g;
    if (--h->closing_groups > 0 || !h->closing)
        return;
    mg_host_close_cb cb = h->close_cb;
    void *cb_arg = h->close_arg;
    free(h->groups);
    free(h->data_dir);
    free(h);
    if (cb != NULL)
        cb(cb_arg);
}

int mg_host_add_group(mg_host *h, uint64_t group_id, uint64_t replica_id, const char *address,
                      const mg_group_peer *bootstrap, size_t n_bootstrap,
                      const mg_group_tunables *tunables, mg_group **out, mg_error *err)
{
    char raft_dir[4096], store_dir[4096];
    mg_group *g;
    int rc;
    if (h->closing)
        return mg_error_set(err, MG_ESHUTDOWN, "host is closing");
    if (mg_host_group(h, group_id) != NULL)
        return mg_error_set(err, MG_EEXIST, "group %llu is already hosted",
                            (unsigned long long)group_id);
    if (mg_host_group_path(h->data_dir, group_id, "raft", raft_dir, sizeof raft_dir) ||
        mg_host_group_path(h->data_dir, group_id, "store", store_dir, sizeof store_dir))
        return mg_error_set(err, MG_ETOOBIG, "data directory path too long");
    if (h->n == h->cap) {
        size_t cap = h->cap ? 2 * h->cap : 8;
        mg_group **grown = realloc(h->groups, cap * sizeof *grown);
        if (grown == NULL)
            return mg_error_set(err, MG_ENOMEM, "out of memory adding a group");
        h->groups = grown;
        h->cap = cap;
    }
    mg_group_config cfg = {
        .group_id = group_id,
        .replica_id = replica_id,
        .address = address,
        .raft_dir = raft_dir,
        .store_dir = store_dir,
        .bootstrap = bootstrap,
        .n_bootstrap = n_bootstrap,
        .tunables = tunables,
        .apply_hist = h->apply_hist,
    };
    if ((rc = mg_group_open(h->loop, &cfg, &g, err)) != MG_OK)
        return mg_error_wrap(err, rc, "group %llu", (unsigned long long)group_id);
    if ((rc = mg_group_start(g, err)) != MG_OK) {
        h->closing_groups++;
        mg_group_close(g, on_group_closed, h);
        return mg_error_wrap(err, rc, "group %llu", (unsigned long long)group_id);
    }
    h->groups[h->n++] = g;
    if (out != NULL)
        *out = g;
    return MG_OK;
}

/* One mg_host_remove_group_cb in progress. */
typedef struct host_removal {
    mg_host *h;
    mg_host_group_closed_cb cb;
    void *arg;
} host_removal;

static void on_removed_group_closed(mg_group *g, void *arg)
{
    host_removal *rm = arg;
    mg_host *h = rm->h;
    if (rm->cb != NULL)
        rm->cb(rm->arg);
    free(rm);
    on_group_closed(g, h); /* may free the host: last */
}

int mg_host_remove_group_cb(mg_host *h, uint64_t group_id, mg_host_group_closed_cb cb, void *arg,
                            mg_error *err)
{
    for (size_t i = 0; i < h->n; i++) {
        if (mg_group_id(h->groups[i]) != group_id)
            continue;
        host_removal *rm = malloc(sizeof *rm);
        if (rm == NULL)
            return mg_error_set(err, MG_ENOMEM, "out of memory closing group %llu",
                                (unsigned long long)group_id);
        *rm = (host_removal){.h = h, .cb = cb, .arg = arg};
        mg_group *g = h->groups[i];
        memmove(&h->groups[i], &h->groups[i + 1], (h->n - i - 1) * sizeof h->groups[0]);
        h->n--;
        h->closing_groups++;
        mg_group_close(g, on_removed_group_closed, rm);
        return MG_OK;
    }
    return mg_error_set(err, MG_ENOTFOUND, "group %llu is not hosted",
                        (unsigned long long)group_id);
}

int mg_host_remove_group(mg_host *h, uint64_t group_id, mg_error *err)
{
    return mg_host_remove_group_cb(h, group_id, NULL, NULL, err);
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path) == 0 ? 0 : errno;
}

int mg_host_destroy_group(const char *data_dir, uint64_t group_id, mg_error *err)
{
    char dir[4096];
    struct stat st;
    if (mg_host_group_path(data_dir, group_id, NULL, dir, sizeof dir) != MG_OK)
        return mg_error_set(err, MG_ETOOBIG, "data directory path too long");
    if (lstat(dir, &st) != 0 && errno == ENOENT)
        return MG_OK;
    int rv = nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    if (rv != 0)
        return mg_error_set(err, MG_EIO, "removing %s: %s", dir, strerror(rv > 0 ? rv : errno));
    mg_info("host.group_destroyed", "dir=%s", dir);
    return MG_OK;
}

void mg_host_close(mg_host *h, mg_host_close_cb cb, void *arg)
{
    if (h->closing)
        return;
    h->closing = true;
    h->close_cb = cb;
    h->close_arg = arg;
    size_t n = h->n;
    h->n = 0;
    /* One extra count so that the host is not freed while still looping. */
    h->closing_groups += (int)n + 1;
    for (size_t i = 0; i < n; i++)
        mg_group_close(h->groups[i], on_group_closed, h);
    on_group_closed(NULL, h);
}
