/*
 * Snapshots (export and atomic install of a compact copy of the environment)
 * and the digest that says whether two stores hold the same data.
 */
#include "store_internal.h"

#include "../lib/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

/* ---- digest ------------------------------------------------------------- */

static void hash_u64(XXH3_state_t *h, uint64_t v)
{
    uint8_t b[8];
    store_put_u64le(b, v);
    XXH3_64bits_update(h, b, sizeof b);
}

/* Hashes (db name, then each key and value with their lengths) of every data
 * database of env in key order. Reading every page of them, it doubles as
 * the structural check of a snapshot before install. */
static int env_digest(MDB_env *env, const MDB_dbi dbi[STORE_DB_COUNT_], const char *path,
                      uint64_t *digest, mg_error *err)
{
    XXH3_state_t *h = XXH3_createState();
    if (h == NULL)
        return mg_error_set(err, MG_ENOMEM, "out of memory");
    XXH3_64bits_reset(h);
    MDB_txn *txn;
    int ret = MG_OK;
    int rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &txn);
    if (rc) {
        ret = store_lmdb_error(err, rc, "beginning a read transaction", path);
        goto done_free_state;
    }
    for (int i = STORE_DB_META + 1; i < STORE_DB_COUNT_ && ret == MG_OK; i++) {
        XXH3_64bits_update(h, store_db_names[i], strlen(store_db_names[i]) + 1);
        MDB_cursor *cur;
        rc = mdb_cursor_open(txn, dbi[i], &cur);
        if (rc) {
            ret = store_lmdb_error(err, rc, "opening a cursor", path);
            break;
        }
        MDB_val k, v;
        for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
             rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
            hash_u64(h, k.mv_size);
            XXH3_64bits_update(h, k.mv_data, k.mv_size);
            hash_u64(h, v.mv_size);
            XXH3_64bits_update(h, v.mv_data, v.mv_size);
        }
        mdb_cursor_close(cur);
        if (rc != MDB_NOTFOUND)
            ret = store_lmdb_error(err, rc, "reading records", path);
    }
    mdb_txn_abort(txn);
    if (ret == MG_OK)
        *digest = XXH3_64bits_digest(h);
done_free_state:
    XXH3_freeState(h);
    return ret;
}

int mg_store_digest(mg_store *s, uint64_t *digest, mg_error *err)
{
    pthread_rwlock_rdlock(&s->env_lock);
    int ret = store_env_lost(s, err);
    if (ret == MG_OK)
        ret = env_digest(s->env, s->dbi, s->data_path, digest, err);
    pthread_rwlock_unlock(&s->env_lock);
    return ret;
}

/* ---- export ------------------------------------------------------------- */

int mg_store_export_fd(mg_store *s, int fd, mg_error *err)
{
    /* The copy runs in one read transaction; holding env_lock shared keeps
     * map growth (and with it the writer) waiting until it is done. */
    pthread_rwlock_rdlock(&s->env_lock);
    if (store_env_lost(s, err) != MG_OK) {
        pthread_rwlock_unlock(&s->env_lock);
        return MG_EIO;
    }
    int rc = mdb_env_copyfd2(s->env, fd, MDB_CP_COMPACT);
    pthread_rwlock_unlock(&s->env_lock);
    if (rc)
        return store_lmdb_error(err, rc, "exporting a snapshot", s->data_path);
    return MG_OK;
}

int mg_store_export_buf(mg_store *s, void **buf, size_t *len, mg_error *err)
{
    *buf = NULL;
    *len = 0;
    /* LMDB writes copies to a descriptor; an anonymous memory file takes it
     * without a pipe-draining thread and tells its size afterwards. */
    int fd = memfd_create("memgrid-export", MFD_CLOEXEC);
    if (fd < 0)
        return mg_error_set(err, MG_EIO, "export: memfd_create: %s", strerror(errno));
    int ret = mg_store_export_fd(s, fd, err);
    if (ret)
        goto done_close_fd;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        ret = mg_error_set(err, MG_EIO, "export: fstat: %s", strerror(errno));
        goto done_close_fd;
    }
    size_t size = (size_t)st.st_size;
    uint8_t *out = malloc(size ? size : 1);
    if (out == NULL) {
        ret = mg_error_set(err, MG_ENOMEM, "export: out of memory for %zu bytes", size);
        goto done_close_fd;
    }
    for (size_t off = 0; off < size;) {
        ssize_t r = pread(fd, out + off, size - off, (off_t)off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            ret = mg_error_set(err, MG_EIO, "export: reading the copy back: %s",
                               r < 0 ? strerror(errno) : "short file");
            free(out);
            goto done_close_fd;
        }
        off += (size_t)r;
    }
    *buf = out;
    *len = size;
done_close_fd:
    close(fd);
    return ret;
}

/* ---- install ------------------------------------------------------------ */

static int write_file(const char *path, const void *buf, size_t len, mg_error *err)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return mg_error_set(err, MG_EIO, "creating %s: %s", path, strerror(errno));
    const uint8_t *p = buf;
    for (size_t off = 0; off < len;) {
        ssize_t w = write(fd, p + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            int e = errno;
            close(fd);
            return mg_error_set(err, e == ENOSPC ? MG_EFULL : MG_EIO, "writing %s: %s", path,
                                strerror(e));
        }
        off += (size_t)w;
    }
    if (fsync(fd) != 0) {
        int e = errno;
        close(fd);
        return mg_error_set(err, MG_EIO, "syncing %s: %s", path, strerror(e));
    }
    if (close(fd) != 0)
        return mg_error_set(err, MG_EIO, "closing %s: %s", path, strerror(errno));
    return MG_OK;
}

static int sync_dir(const char *dir, mg_error *err)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return mg_error_set(err, MG_EIO, "opening %s: %s", dir, strerror(errno));
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    if (rc != 0)
        return mg_error_set(err, MG_EIO, "syncing %s: %s", dir, strerror(e));
    return MG_OK;
}

/* Opens the copy at `path` read-only and checks that it is a whole memgrid
 * store this build reads: its pages lie inside the file, magic and schema
 * are right, every record can be read, every vector loads. On success *ix is
 * its index. */
static int snapshot_check(mg_store *s, const char *path, size_t len, mg_index **ix, mg_error *err)
{
    MDB_env *env;
    int rc = mdb_env_create(&env);
    if (rc)
        return store_lmdb_error(err, rc, "creating an environment", path);
    int ret;
    rc = mdb_env_set_maxdbs(env, STORE_DB_COUNT_ + 2);
    if (rc == 0)
        rc = mdb_env_open(env, path, MDB_RDONLY | MDB_NOSUBDIR | MDB_NOLOCK, 0644);
    if (rc) {
        ret = store_lmdb_error(err, rc, "opening the snapshot", path);
        goto done_close_env;
    }
    MDB_envinfo info;
    MDB_stat st;
    mdb_env_info(env, &info);
    mdb_env_stat(env, &st);
    /* A truncated copy opens fine and then faults on the missing pages. */
    if ((info.me_last_pgno + 1) * (size_t)st.ms_psize > len) {
        ret =
            mg_error_set(err, MG_ECORRUPT, "%s: snapshot is truncated (%zu bytes, pages up to %zu)",
                         path, len, (info.me_last_pgno + 1) * (size_t)st.ms_psize);
        goto done_close_env;
    }
    MDB_dbi dbi[STORE_DB_COUNT_];
    uint64_t applied, digest;
    ret = store_env_check(env, path, false, dbi, &applied, err);
    if (ret == MG_OK)
        ret = env_digest(env, dbi, path, &digest, err);
    if (ret == MG_OK)
        ret = store_index_build(env, dbi[STORE_DB_VECTORS], s->int8, path, ix, err);
    if (ret == MG_OK)
        mg_info("store.install.check", "path=%s applied=%llu digest=%016llx", path,
                (unsigned long long)applied, (unsigned long long)digest);
done_close_env:
    mdb_env_close(env);
    return ret;
}

/* After a failed install: the old file is back at data.mdb; open it again. */
static void reopen_old(mg_store *s, const char *bak_path)
{
    mg_error e = {0};
    if (store_env_open(s, false, &e) != MG_OK)
        mg_errlog("store.install.reopen", "path=%s msg=\"%s\"", s->data_path, e.msg);
    if (bak_path != NULL)
        unlink(bak_path);
}

int mg_store_install_buf(mg_store *s, const void *buf, size_t len, mg_error *err)
{
    if (buf == NULL || len == 0)
        return mg_error_set(err, MG_EINVAL, "store install: empty snapshot");
    char *tmp_path = NULL, *bak_path = NULL;
    if (asprintf(&tmp_path, "%s/%s", s->dir, STORE_INSTALL_FILE) < 0) {
        tmp_path = NULL;
        return mg_error_set(err, MG_ENOMEM, "out of memory");
    }
    if (asprintf(&bak_path, "%s/%s", s->dir, STORE_DATA_FILE ".bak") < 0) {
        free(tmp_path);
        return mg_error_set(err, MG_ENOMEM, "out of memory");
    }
    mg_index *ix = NULL;
    pthread_mutex_lock(&s->write_mu);
    int ret = write_file(tmp_path, buf, len, err);
    if (ret)
        goto err_unlink_tmp;
    ret = snapshot_check(s, tmp_path, len, &ix, err);
    if (ret)
        goto err_unlink_tmp;

    /* Every reader out: the env is about to be closed and reopened. */
    pthread_rwlock_wrlock(&s->env_lock);
    pthread_rwlock_wrlock(&s->index_lock);
    /* A hard link keeps the old file reachable until the new one has opened,
     * so a failure past the rename can still be undone. */
    unlink(bak_path);
    bool have_bak = s->env != NULL && link(s->data_path, bak_path) == 0;
    if (s->env != NULL) /* NULL after an earlier install failed to restore it */
        mdb_env_close(s->env);
    s->env = NULL;
    if (rename(tmp_path, s->data_path) != 0) {
        ret = mg_error_set(err, MG_EIO, "renaming %s: %s", tmp_path, strerror(errno));
        goto err_reopen_old;
    }
    ret = sync_dir(s->dir, err);
    if (ret == MG_OK)
        ret = store_env_open(s, false, err);
    if (ret) {
        if (!have_bak || rename(bak_path, s->data_path) != 0) {
            mg_errlog("store.install.lost", "path=%s msg=\"cannot restore the old file\"",
                      s->data_path);
            goto err_unlock;
        }
        sync_dir(s->dir, NULL);
        goto err_reopen_old;
    }
    mg_index *old = s->index;
    s->index = ix;
    ix = NULL;
    store_dead_clear(s);
    pthread_rwlock_unlock(&s->index_lock);
    pthread_rwlock_unlock(&s->env_lock);
    if (have_bak)
        unlink(bak_path);
    pthread_mutex_unlock(&s->write_mu);
    mg_index_destroy(old); /* no search can hold it: they read s->index under index_lock */
    mg_info("store.install", "path=%s applied=%llu bytes=%zu", s->data_path,
            (unsigned long long)atomic_load(&s->applied), len);
    free(tmp_path);
    free(bak_path);
    return MG_OK;

err_reopen_old:
    reopen_old(s, have_bak ? bak_path : NULL);
err_unlock:
    pthread_rwlock_unlock(&s->index_lock);
    pthread_rwlock_unlock(&s->env_lock);
err_unlink_tmp:
    unlink(tmp_path);
    pthread_mutex_unlock(&s->write_mu);
    if (ix != NULL)
        mg_index_destroy(ix);
    free(tmp_path);
    free(bak_path);
    return mg_error_wrap(err, ret, "store install");
}
