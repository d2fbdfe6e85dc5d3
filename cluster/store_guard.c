#include "store_guard.h"

#include "../lib/log.h"
#include "../storage/store.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

bool mg_store_guard_boot_id(char buf[37])
{
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");
    if (f == NULL)
        return false;
    bool ok = fgets(buf, 37, f) != NULL && strlen(buf) == 36;
    fclose(f);
    return ok;
}

static int path_of(char *buf, size_t cap, const char *dir, const char *name, mg_error *err)
{
    if (snprintf(buf, cap, "%s/%s", dir, name) >= (int)cap)
        return mg_error_set(err, MG_EINVAL, "store path too long: %s", dir);
    return MG_OK;
}

static int sync_path(const char *path, int flags, mg_error *err)
{
    int fd = open(path, flags | O_CLOEXEC);
    if (fd < 0)
        return mg_error_set(err, MG_EIO, "open %s: %s", path, strerror(errno));
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    if (rc != 0)
        return mg_error_set(err, MG_EIO, "fsync %s: %s", path, strerror(e));
    return MG_OK;
}

/* The boot id a marker names ("" when there is no marker). */
static int read_marker(const char *path, char id[37], mg_error *err)
{
    id[0] = '\0';
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? MG_OK
                               : mg_error_set(err, MG_EIO, "open %s: %s", path, strerror(errno));
    ssize_t n = read(fd, id, 36);
    close(fd);
    id[n > 0 ? n : 0] = '\0';
    if (n < 0)
        return mg_error_set(err, MG_EIO, "read %s: %s", path, strerror(errno));
    return MG_OK;
}

static int write_marker(const char *dir, const char *path, const char id[37], mg_error *err)
{
    char tmp[4096];
    int rc = path_of(tmp, sizeof tmp, dir, MG_STORE_GUARD_FILE ".tmp", err);
    if (rc != MG_OK)
        return rc;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return mg_error_set(err, MG_EIO, "create %s: %s", tmp, strerror(errno));
    bool ok = write(fd, id, 36) == 36 && fsync(fd) == 0;
    int e = errno;
    close(fd);
    if (!ok || rename(tmp, path) != 0) {
        if (ok)
            e = errno;
        unlink(tmp);
        return mg_error_set(err, MG_EIO, "write %s: %s", path, strerror(e));
    }
    return sync_path(dir, O_RDONLY | O_DIRECTORY, err);
}

int mg_store_guard_arm(const char *store_dir, bool *wiped, mg_error *err)
{
    char boot[37], was[37], marker[4096];
    *wiped = false;
    if (!mg_store_guard_boot_id(boot))
        return mg_error_set(err, MG_ENOTFOUND, "this system has no boot id");
    if (mkdir(store_dir, 0755) != 0 && errno != EEXIST)
        return mg_error_set(err, MG_EIO, "mkdir %s: %s", store_dir, strerror(errno));
    int rc = path_of(marker, sizeof marker, store_dir, MG_STORE_GUARD_FILE, err);
    if (rc == MG_OK)
        rc = read_marker(marker, was, err);
    if (rc != MG_OK)
        return rc;
    if (was[0] != '\0' && strcmp(was, boot) != 0) {
        /* The machine stopped while this store was open without sync. */
        if ((rc = mg_store_remove(store_dir, err)) != MG_OK)
            return rc;
        *wiped = true;
        mg_warn("store.rebuild",
                "dir=%s boot_then=%s boot_now=%s msg=\"the machine stopped "
                "with this store unsynced: it is rebuilt from the raft snapshot and log\"",
                store_dir, was, boot);
    }
    if (strcmp(was, boot) == 0)
        return MG_OK; /* already this boot's: a process restart */
    return write_marker(store_dir, marker, boot, err);
}

int mg_store_guard_disarm(const char *store_dir, mg_error *err)
{
    char marker[4096];
    int rc = path_of(marker, sizeof marker, store_dir, MG_STORE_GUARD_FILE, err);
    if (rc != MG_OK)
        return rc;
    if (unlink(marker) != 0 && errno != ENOENT)
        return mg_error_set(err, MG_EIO, "unlink %s: %s", marker, strerror(errno));
    return sync_path(store_dir, O_RDONLY | O_DIRECTORY, err);
}
