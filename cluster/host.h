/*
 * A host runs the replicas of several shard groups on one libuv loop (the
 * node process builds on it). Every group's files live under one data
 * directory:
 *
 *   <data>/group-<id>/raft/    raft_uv log segments, metadata, snapshots
 *   <data>/group-<id>/store/   the LMDB store (data.mdb, lock.mdb)
 *
 * Each replica listens on its own address (raft_uv_tcp binds one socket per
 * raft instance).
 *
 * Threads: every function on the loop thread. Close is asynchronous.
 */
#ifndef MG_CLUSTER_HOST_H
#define MG_CLUSTER_HOST_H

#include "../lib/error.h"
#include "group.h"

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct mg_host mg_host;

/* Creates `data_dir` when missing. The loop is borrowed and must outlive the
 * host. */
int mg_host_open(uv_loop_t *loop, const char *data_dir, mg_host **out, mg_error *err);

/* Groups added from now on record the apply time of each entry into `hist`
 * (mg_group_config.apply_hist; NULL = none, the default). Borrowed: it must
 * outlive every group of the host, i.e. until mg_host_close's callback. */
void mg_host_set_apply_hist(mg_host *h, mg_hist *hist);

/* Opens and starts a replica of group `group_id` under the data directory.
 * bootstrap/n_bootstrap as in mg_group_config (NULL to join an existing
 * group); tunables NULL = defaults. MG_EEXIST when the group is already
 * hosted. *out (may be NULL) gets the borrowed group. */
int mg_host_add_group(mg_host *h, uint64_t group_id, uint64_t replica_id, const char *address,
                      const mg_group_peer *bootstrap, size_t n_bootstrap,
                      const mg_group_tunables *tunables, mg_group **out, mg_error *err);

/* The hosted replica of a group, or NULL. */
mg_group *mg_host_group(mg_host *h, uint64_t group_id);

/* Number of groups hosted and the i'th one. */
size_t mg_host_n_groups(const mg_host *h);
mg_group *mg_host_group_at(mg_host *h, size_t i);

/* Closes one group (async) and forgets it. */
int mg_host_remove_group(mg_host *h, uint64_t group_id, mg_error *err);

typedef void (*mg_host_group_closed_cb)(void *arg);

/* The same, and cb(arg) once the replica has closed (raft, its I/O, the
 * store: its files may then be removed). cb fires on the loop, also when
 * the host is closed before the group's close completed (it fires first).
 * On error (MG_ENOTFOUND: not hosted) cb never fires. */
int mg_host_remove_group_cb(mg_host *h, uint64_t group_id, mg_host_group_closed_cb cb, void *arg,
                            mg_error *err);

/* Removes "<data>/group-<id>" and everything under it (a replica that is not
 * hosted: closed first). MG_OK also when it does not exist; MG_EIO naming
 * the path that could not be removed. Any thread. */
int mg_host_destroy_group(const char *data_dir, uint64_t group_id, mg_error *err);

/* Writes "<data>/group-<id>/<sub>" into buf. */
int mg_host_group_path(const char *data_dir, uint64_t group_id, const char *sub, char *buf,
                       size_t cap);

typedef void (*mg_host_close_cb)(void *arg);

/* Closes every group; cb(arg) once all are closed, then the host is freed. */
void mg_host_close(mg_host *h, mg_host_close_cb cb, void *arg);

#endif
