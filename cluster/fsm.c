#include "fsm.h"

#include "../lib/log.h"
#include "../storage/filter.h"
#include "command.h"

#include <stdlib.h>
#include <string.h>

static const char snapshot_magic[8] = {'M', 'G', 'S', 'N', 'A', 'P', '0', '1'};

/* ---- error translation -------------------------------------------------- */

int mg_fsm_raft_code(int mg_code)
{
    switch (mg_code) {
    case MG_OK:
        return 0;
    case MG_ENOMEM:
        return RAFT_NOMEM;
    case MG_EFULL:
        return RAFT_NOSPACE;
    case MG_ECORRUPT:
    case MG_EVERSION:
        return RAFT_CORRUPT;
    case MG_EBUSY:
        return RAFT_BUSY;
    case MG_EINVAL:
        return RAFT_INVALID;
    default:
        return RAFT_IOERR;
    }
}

int mg_raft_to_mg(int raft_code)
{
    switch (raft_code) {
    case 0:
        return MG_OK;
    case RAFT_NOMEM:
        return MG_ENOMEM;
    case RAFT_NOTLEADER:
        return MG_ENOTLEADER;
    case RAFT_LEADERSHIPLOST:
    case RAFT_NOCONNECTION:
        return MG_EUNAVAIL;
    case RAFT_SHUTDOWN:
    case RAFT_CANCELED:
        return MG_ESHUTDOWN;
    case RAFT_TOOBIG:
        return MG_ETOOBIG;
    case RAFT_BUSY:
    case RAFT_CANTCHANGE:
        return MG_EBUSY;
    case RAFT_IOERR:
        return MG_EIO;
    case RAFT_NOSPACE:
        return MG_EFULL;
    case RAFT_CORRUPT:
    case RAFT_MALFORMED:
        return MG_ECORRUPT;
    case RAFT_NOTFOUND:
    case RAFT_BADID:
        return MG_ENOTFOUND;
    case RAFT_DUPLICATEID:
    case RAFT_DUPLICATEADDRESS:
        return MG_EEXIST;
    case RAFT_BADROLE:
    case RAFT_INVALID:
    case RAFT_NAMETOOLONG:
        return MG_EINVAL;
    case RAFT_UNAUTHORIZED:
        return MG_EPERM;
    default:
        return MG_EINTERNAL;
    }
}

/* ---- results ------------------------------------------------------------ */

static int result_reserve(mg_fsm_result *res, size_t n_cmds, size_t n_ops)
{
    if (n_cmds > res->cap_cmds_) {
        mg_cmd_outcome *c = realloc(res->cmds, n_cmds * sizeof *c);
        if (c == NULL)
            return MG_ENOMEM;
        res->cmds = c;
        res->cap_cmds_ = n_cmds;
    }
    if (n_ops > res->cap_ops_) {
        int *codes = realloc(res->codes_, n_ops * sizeof *codes);
        if (codes == NULL)
            return MG_ENOMEM;
        res->codes_ = codes;
        size_t *counts = realloc(res->counts_, n_ops * sizeof *counts);
        if (counts == NULL)
            return MG_ENOMEM;
        res->counts_ = counts;
        res->cap_ops_ = n_ops;
    }
    return MG_OK;
}

static int fsm_apply(struct raft_fsm *rf, const struct raft_buffer *buf, void **result);
static int fsm_snapshot(struct raft_fsm *rf, struct raft_buffer *bufs[], unsigned *n_bufs);
static int fsm_restore(struct raft_fsm *rf, struct raft_buffer *buf);

void mg_fsm_init(mg_fsm *fsm, mg_store *store)
{
    memset(fsm, 0, sizeof *fsm);
    fsm->store = store;
    fsm->raft_fsm.version = 1;
    fsm->raft_fsm.data = fsm;
    fsm->raft_fsm.apply = fsm_apply;
    fsm->raft_fsm.snapshot = fsm_snapshot;
    fsm->raft_fsm.restore = fsm_restore;
    fsm->snapshot_warn_bytes = (size_t)1 << 30;
}

void mg_fsm_attach(mg_fsm *fsm, struct raft *r)
{
    fsm->raft = r;
}

void mg_fsm_result_clear(mg_fsm_result *res)
{
    free(res->cmds);
    free(res->codes_);
    free(res->counts_);
    memset(res, 0, sizeof *res);
}

void mg_fsm_close(mg_fsm *fsm)
{
    for (unsigned i = 0; i < MG_FSM_RESULTS; i++)
        mg_fsm_result_clear(&fsm->results[i]);
}

/* ---- apply -------------------------------------------------------------- */

/* Number of store ops a decoded command becomes. */
static size_t cmd_n_ops(const mg_cmd *c)
{
    switch (c->kind) {
    case MG_CMD_MEM_PUT:
    case MG_CMD_MEM_UPDATE:
        return c->n_items;
    case MG_CMD_MEM_DELETE:
        return c->n_ids;
    default:
        return 1;
    }
}

/* Fills ops[0 .. p->n) for puts read in place: the store keeps the records
 * as they came, without decoding and encoding them again. */
static void puts_to_ops(const mg_cmd_puts *p, mg_store_op *ops)
{
    for (size_t i = 0; i < p->n; i++)
        ops[i] = (mg_store_op){
            .kind = MG_STORE_MEM_PUT_ENCODED,
            .flags = p->kind == MG_CMD_MEM_UPDATE ? MG_STORE_UPDATE_ONLY : 0,
            .cube_id = p->cube_id,
            .record = p->recs[i].record,
            .record_len = p->recs[i].record_len,
            .vec_le = p->recs[i].vec,
            .dim = p->recs[i].dim,
        };
}

/* Fills ops[0 .. cmd_n_ops(c)) for a decoded command. */
static void cmd_to_ops(const mg_cmd *c, const mg_filter *filter, mg_store_op *ops)
{
    size_t n = cmd_n_ops(c);
    memset(ops, 0, n * sizeof *ops);
    switch (c->kind) {
    case MG_CMD_CUBE_CREATE:
        ops[0].kind = MG_STORE_CUBE_PUT;
        ops[0].flags = MG_STORE_CREATE_ONLY;
        ops[0].cube_id = c->cube.cube_id;
        ops[0].cube = &c->cube;
        break;
    case MG_CMD_CUBE_DELETE:
        ops[0].kind = MG_STORE_CUBE_DELETE;
        ops[0].cube_id = c->cube_id;
        break;
    case MG_CMD_MEM_PUT:
    case MG_CMD_MEM_UPDATE:
        for (size_t i = 0; i < n; i++) {
            ops[i].kind = MG_STORE_MEM_PUT;
            ops[i].flags = c->kind == MG_CMD_MEM_UPDATE ? MG_STORE_UPDATE_ONLY : 0;
            ops[i].cube_id = c->cube_id;
            ops[i].item = &c->items[i].item;
            ops[i].vec = c->items[i].vec;
            ops[i].dim = c->items[i].dim;
            ops[i].mem_id = c->items[i].item.id;
        }
        break;
    case MG_CMD_MEM_DELETE:
        for (size_t i = 0; i < n; i++) {
            ops[i].kind = MG_STORE_MEM_DELETE;
            ops[i].cube_id = c->cube_id;
            ops[i].mem_id = c->ids[i];
        }
        break;
    case MG_CMD_MEM_DELETE_WHERE:
        ops[0].kind = MG_STORE_MEM_DELETE_WHERE;
        ops[0].cube_id = c->cube_id;
        ops[0].filter = filter;
        break;
    case MG_CMD_USER_PUT:
        ops[0].kind = MG_STORE_USER_PUT;
        ops[0].user = &c->user;
        ops[0].user_id = c->user.user_id;
        break;
    case MG_CMD_USER_DELETE:
        ops[0].kind = MG_STORE_USER_DELETE;
        ops[0].user_id = c->user_id;
        break;
    }
}

/* The decoded form of an entry, freed by entry_clear. Puts (mem_put,
 * mem_update: nearly every entry) are read in place (puts[i], pointing into
 * the entry); other commands are decoded (cmds[i]). */
typedef struct decoded_entry {
    uint32_t n;
    mg_cmd *cmds;        /* n */
    mg_cmd_puts *puts;   /* n: kind 0 when cmds[i] holds the command */
    int *codes;          /* n: MG_OK or why the command was refused */
    mg_filter **filters; /* n: compiled filters of mem_delete_where */
    mg_store_op *ops;
    size_t n_ops;
} decoded_entry;

static void entry_clear(decoded_entry *e)
{
    for (uint32_t i = 0; i < e->n; i++) {
        mg_cmd_clear(&e->cmds[i]);
        mg_cmd_puts_clear(&e->puts[i]);
        if (e->filters[i] != NULL)
            mg_filter_free(e->filters[i]);
    }
    free(e->cmds);
    free(e->puts);
    free(e->codes);
    free(e->filters);
    free(e->ops);
    memset(e, 0, sizeof *e);
}

/* Store ops command i of a decoded entry becomes (0 when refused). */
static size_t entry_cmd_ops(const decoded_entry *e, uint32_t i)
{
    if (e->codes[i] != MG_OK)
        return 0;
    return e->puts[i].kind != 0 ? e->puts[i].n : cmd_n_ops(&e->cmds[i]);
}

/* Decodes every command; a command that does not decode gets its error in
 * codes[i] and no ops. Only allocation failure is an error. */
static int entry_decode(decoded_entry *e, mg_mp_reader *r, uint32_t n, mg_error *err)
{
    e->n = n;
    e->cmds = calloc(n ? n : 1, sizeof *e->cmds);
    e->puts = calloc(n ? n : 1, sizeof *e->puts);
    e->codes = calloc(n ? n : 1, sizeof *e->codes);
    e->filters = calloc(n ? n : 1, sizeof *e->filters);
    if (e->cmds == NULL || e->puts == NULL || e->codes == NULL || e->filters == NULL)
        return mg_error_set(err, MG_ENOMEM, "out of memory decoding an entry");
    size_t n_ops = 0;
    for (uint32_t i = 0; i < n; i++) {
        mg_error cerr = {0};
        const uint8_t *start = r->pos;
        if (mg_mp_skip(r) != MG_OK) {
            /* The rest of the entry cannot be delimited: refuse it all. */
            for (uint32_t j = i; j < n; j++)
                e->codes[j] = MG_ECORRUPT;
            break;
        }
        size_t len = (size_t)(r->pos - start);
        /* Puts are read in place; anything else (or a put read_puts does
         * not take) is decoded, and mg_cmd_decode's answer counts. */
        int rc = mg_cmd_read_puts(start, len, &e->puts[i], &cerr);
        if (rc != MG_OK && rc != MG_ENOMEM) {
            rc = mg_cmd_decode(start, len, &e->cmds[i], &cerr);
            if (rc == MG_OK && e->cmds[i].kind == MG_CMD_MEM_DELETE_WHERE)
                rc = mg_filter_compile(e->cmds[i].filter, &e->filters[i], &cerr);
        }
        if (rc == MG_ENOMEM)
            return mg_error_set(err, MG_ENOMEM, "%s", cerr.msg);
        e->codes[i] = rc;
        if (rc == MG_OK)
            n_ops += entry_cmd_ops(e, i);
        else
            mg_warn("fsm.cmd_refused", "cmd=%u code=%s", i, mg_errname(rc));
    }
    e->ops = malloc((n_ops ? n_ops : 1) * sizeof *e->ops);
    if (e->ops == NULL)
        return mg_error_set(err, MG_ENOMEM, "out of memory building store ops");
    for (uint32_t i = 0; i < n; i++) {
        if (e->codes[i] != MG_OK)
            continue;
        if (e->puts[i].kind != 0)
            puts_to_ops(&e->puts[i], e->ops + e->n_ops);
        else
            cmd_to_ops(&e->cmds[i], e->filters[i], e->ops + e->n_ops);
        e->n_ops += entry_cmd_ops(e, i);
    }
    return MG_OK;
}

/* Lays out per-command outcomes over the store's per-op results. */
static void fill_outcomes(mg_fsm_result *res, const decoded_entry *e)
{
    size_t op = 0;
    for (uint32_t i = 0; i < e->n; i++) {
        mg_cmd_outcome *o = &res->cmds[i];
        o->code = e->codes[i];
        o->n_ops = 0;
        o->op_codes = res->codes_ + op;
        o->op_counts = res->counts_ + op;
        if (e->codes[i] != MG_OK)
            continue;
        o->n_ops = entry_cmd_ops(e, i);
        for (size_t k = 0; k < o->n_ops; k++) {
            if (o->code == MG_OK && res->codes_[op + k] != MG_OK)
                o->code = res->codes_[op + k];
        }
        op += o->n_ops;
    }
    res->n_cmds = e->n;
}

int mg_fsm_apply_at(mg_fsm *fsm, uint64_t index, const void *buf, size_t len,
                    mg_fsm_result **result, mg_error *err)
{
    mg_fsm_result *res = &fsm->results[fsm->next_result];
    int rc = mg_fsm_apply_into(fsm, index, buf, len, res, err);
    if (rc != MG_OK)
        return rc;
    fsm->next_result = (fsm->next_result + 1) % MG_FSM_RESULTS;
    if (result != NULL)
        *result = res;
    return MG_OK;
}

int mg_fsm_apply_into(mg_fsm *fsm, uint64_t index, const void *buf, size_t len,
                      mg_fsm_result *res, mg_error *err)
{
    mg_mp_reader cmds;
    uint32_t n_cmds = 0;
    decoded_entry e = {0};
    bool applied = false;
    int rc;

    res->index = index;
    res->applied = false;
    res->code = MG_OK;
    res->n_cmds = 0;

    mg_error eerr = {0};
    rc = mg_entry_open(buf, len, &cmds, &n_cmds, &eerr);
    if (rc != MG_OK) {
        /* Every replica refuses the same bytes the same way. */
        char quoted[MG_ERRMSG_MAX + 8];
        mg_errlog("fsm.entry_refused", "index=%llu len=%zu code=%s msg=%s",
                  (unsigned long long)index, len, mg_errname(rc),
                  mg_log_quote(eerr.msg, quoted, sizeof quoted));
        res->code = rc;
        fsm->stats.entries_refused++;
        goto out;
    }
    if (index != 0 && index <= mg_store_applied(fsm->store)) {
        /* Replayed after a restart or a skipped restore: already in the store. */
        if (result_reserve(res, n_cmds, 0) != MG_OK)
            return mg_error_set(err, MG_ENOMEM, "out of memory for an apply result");
        for (uint32_t i = 0; i < n_cmds; i++)
            res->cmds[i] = (mg_cmd_outcome){.code = MG_OK};
        res->n_cmds = n_cmds;
        fsm->stats.entries_skipped++;
        goto out;
    }
    if ((rc = entry_decode(&e, &cmds, n_cmds, err)) != MG_OK)
        goto err_clear;
    if (result_reserve(res, n_cmds, e.n_ops) != MG_OK) {
        rc = mg_error_set(err, MG_ENOMEM, "out of memory for an apply result");
        goto err_clear;
    }
    if (e.n_ops > 0) {
        rc = mg_store_apply(fsm->store, index, e.ops, e.n_ops, res->codes_, res->counts_,
                            &applied, err);
        if (rc != MG_OK) {
            mg_errlog("fsm.apply_failed", "index=%llu code=%s msg=\"%s\"",
                      (unsigned long long)index, mg_errname(rc), err ? err->msg : "");
            goto err_clear;
        }
    }
    fill_outcomes(res, &e);
    res->applied = applied;
    if (applied) {
        fsm->stats.entries_applied++;
        fsm->stats.ops_applied += e.n_ops;
    } else if (e.n_ops > 0) {
        fsm->stats.entries_skipped++;
    }
    entry_clear(&e);

out:
    return MG_OK;

err_clear:
    entry_clear(&e);
    return rc;
}

static int fsm_apply(struct raft_fsm *rf, const struct raft_buffer *buf, void **result)
{
    mg_fsm *fsm = rf->data;
    mg_error err = {0};
    mg_fsm_result *res = NULL;
    uint64_t index = fsm->raft != NULL ? (uint64_t)raft_last_applied(fsm->raft) + 1 : 0;
    int rc = mg_fsm_apply_at(fsm, index, buf->base, buf->len, &res, &err);
    if (rc != MG_OK)
        return mg_fsm_raft_code(rc);
    *result = res;
    return 0;
}

/* ---- snapshots ---------------------------------------------------------- */

static void put_u64le(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_u64le(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static void snapshot_header(uint8_t *hdr, uint64_t applied)
{
    memcpy(hdr, snapshot_magic, sizeof snapshot_magic);
    put_u64le(hdr + 8, applied);
}

static int export_store(mg_fsm *fsm, uint8_t *hdr, void **buf, size_t *len, mg_error *err)
{
    /* The copy holds at least what was applied when it starts: with applies
     * running on another thread, it may hold more than the header says
     * (restore allows that). */
    uint64_t applied = mg_store_applied(fsm->store);
    int rc = mg_store_export_buf(fsm->store, buf, len, err);
    if (rc != MG_OK)
        return rc;
    snapshot_header(hdr, applied);
    fsm->stats.snapshots++;
    if (*len > fsm->snapshot_warn_bytes)
        mg_warn("fsm.snapshot_large", "bytes=%zu applied=%llu msg=\"keep groups small: "
                "snapshots are held in memory\"", *len, (unsigned long long)applied);
    return MG_OK;
}

int mg_fsm_snapshot_export(mg_fsm *fsm, uint8_t hdr[MG_SNAPSHOT_HEADER_LEN], void **data,
                           size_t *len, mg_error *err)
{
    return export_store(fsm, hdr, data, len, err);
}

int mg_fsm_snapshot_buf(mg_fsm *fsm, void **buf, size_t *len, mg_error *err)
{
    uint8_t hdr[MG_SNAPSHOT_HEADER_LEN];
    void *data;
    size_t dlen;
    int rc = export_store(fsm, hdr, &data, &dlen, err);
    if (rc != MG_OK)
        return rc;
    uint8_t *out = malloc(sizeof hdr + dlen);
    if (out == NULL) {
        free(data);
        return mg_error_set(err, MG_ENOMEM, "out of memory for a snapshot of %zu bytes", dlen);
    }
    memcpy(out, hdr, sizeof hdr);
    memcpy(out + sizeof hdr, data, dlen);
    free(data);
    *buf = out;
    *len = sizeof hdr + dlen;
    return MG_OK;
}

static int fsm_snapshot(struct raft_fsm *rf, struct raft_buffer *bufs[], unsigned *n_bufs)
{
    mg_fsm *fsm = rf->data;
    mg_error err = {0};
    struct raft_buffer *out = raft_malloc(2 * sizeof *out);
    uint8_t *hdr = raft_malloc(MG_SNAPSHOT_HEADER_LEN);
    void *data = NULL;
    size_t dlen = 0;
    if (out == NULL || hdr == NULL) {
        raft_free(out);
        raft_free(hdr);
        return RAFT_NOMEM;
    }
    int rc = export_store(fsm, hdr, &data, &dlen, &err);
    if (rc != MG_OK) {
        mg_errlog("fsm.snapshot_failed", "code=%s msg=\"%s\"", mg_errname(rc), err.msg);
        raft_free(out);
        raft_free(hdr);
        return mg_fsm_raft_code(rc);
    }
    /* raft frees both with raft_free: the default raft heap is malloc/free,
     * which is what the store allocated with. */
    out[0] = (struct raft_buffer){.base = hdr, .len = MG_SNAPSHOT_HEADER_LEN};
    out[1] = (struct raft_buffer){.base = data, .len = dlen};
    *bufs = out;
    *n_bufs = 2;
    mg_info("fsm.snapshot", "applied=%llu bytes=%zu",
            (unsigned long long)get_u64le(hdr + 8), dlen);
    return 0;
}

int mg_fsm_restore_buf(mg_fsm *fsm, const void *buf, size_t len, bool *installed,
                       mg_error *err)
{
    const uint8_t *p = buf;
    *installed = false;
    if (len < MG_SNAPSHOT_HEADER_LEN || memcmp(p, snapshot_magic, sizeof snapshot_magic) != 0)
        return mg_error_set(err, MG_ECORRUPT, "snapshot: bad header (%zu bytes)", len);
    uint64_t snap_applied = get_u64le(p + 8);
    uint64_t local = mg_store_applied(fsm->store);
    if (local >= snap_applied) {
        fsm->stats.restores_skipped++;
        mg_info("fsm.restore_skipped", "store_applied=%llu snapshot_applied=%llu",
                (unsigned long long)local, (unsigned long long)snap_applied);
        return MG_OK;
    }
    int rc = mg_store_install_buf(fsm->store, p + MG_SNAPSHOT_HEADER_LEN,
                                  len - MG_SNAPSHOT_HEADER_LEN, err);
    if (rc != MG_OK)
        return rc;
    /* A copy taken while applies went on may be further than its header:
     * committed entries never change, so that is still the group's state. */
    if (mg_store_applied(fsm->store) < snap_applied)
        return mg_error_set(err, MG_ECORRUPT,
                            "snapshot: header says index %llu, the store inside %llu",
                            (unsigned long long)snap_applied,
                            (unsigned long long)mg_store_applied(fsm->store));
    fsm->stats.restores++;
    *installed = true;
    mg_info("fsm.restore", "applied=%llu bytes=%zu", (unsigned long long)snap_applied, len);
    return MG_OK;
}

static int fsm_restore(struct raft_fsm *rf, struct raft_buffer *buf)
{
    mg_fsm *fsm = rf->data;
    mg_error err = {0};
    bool installed;
    int rc = mg_fsm_restore_buf(fsm, buf->base, buf->len, &installed, &err);
    if (rc != MG_OK) {
        mg_errlog("fsm.restore_failed", "code=%s msg=\"%s\"", mg_errname(rc), err.msg);
        return mg_fsm_raft_code(rc); /* raft keeps and frees the buffer */
    }
    raft_free(buf->base); /* on success the buffer is ours */
    return 0;
}
