/*
 * The guard of a store written without fsync (MG_STORE_SYNC_NONE).
 *
 * A group replica's Raft log is its durable copy: raft_uv syncs every
 * append, and snapshots are synced files. The store can therefore skip
 * fsync on its commits, which took about a millisecond per entry on the path
 * of every write — as long as a store that may have lost writes is never
 * trusted. A process that crashes loses nothing (its writes are in the page
 * cache); only a machine that stops (crash, power loss) can leave a store
 * whose last pages never reached the disk, and with MDB_NOSYNC such a store
 * may be damaged, not just behind.
 *
 * So while a store is open it carries a marker file naming the boot (Linux
 * boot_id) it is written in. Opening a store whose marker names another boot
 * means the machine stopped with the store open: the store is removed and
 * the replica rebuilds it from its Raft snapshot and log (raft restores the
 * snapshot, the log replays on top), exactly as a new replica would. A clean
 * close syncs the store file and removes the marker, so a planned reboot
 * keeps the store.
 *
 * Files: <store_dir>/unsynced (the marker), next to data.mdb and lock.mdb.
 */
#ifndef MG_CLUSTER_STORE_GUARD_H
#define MG_CLUSTER_STORE_GUARD_H

#include "../lib/error.h"

#include <stdbool.h>

#define MG_STORE_GUARD_FILE "unsynced"

/* Before opening the store in store_dir (created when missing): removes a
 * store left unsynced by an earlier boot (*wiped says so) and writes this
 * boot's marker durably. MG_ENOTFOUND when this system has no boot id (the
 * caller then syncs the store instead), MG_EIO. */
int mg_store_guard_arm(const char *store_dir, bool *wiped, mg_error *err);

/* Once the store is synced (mg_store_sync) and closed: removes the marker.
 * On error the marker stays (the next boot rebuilds the store: safe). */
int mg_store_guard_disarm(const char *store_dir, mg_error *err);

/* This boot's id into buf (37 bytes). false when the system has none. */
bool mg_store_guard_boot_id(char buf[37]);

#endif
