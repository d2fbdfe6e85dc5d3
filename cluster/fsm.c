#include "fsm.h"

#include "../lib/log.h"
#include "../storage/filter.h"
#include "command.h"
#include "meta.h"

#include <stdlib.h>
#include <string.h>

/* A sys record's largest value (storage/store.h MG_STORE_SYS_PUT). */
#define META_VALUE_MAX ((size_t)1 << 20)

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

/* ---- slot ownership ----------------------------------------------------- */

/* Publishes the store's slot record to own_* (mg_fsm_init, after a restore).
 * A record that cannot be read leaves the group unrestricted, loudly: the
 * data are still there and the next slots_set rewrites the record. */
static void own_load(mg_fsm *fsm)
{
    mg_slot_record rec;
    mg_error err = {0};
    int rc = mg_meta_read_slots(fsm->store, &rec, &err);
    if (rc != MG_OK && rc != MG_ENOTFOUND)
        mg_errlog("fsm.slots_unreadable", "code=%s msg=\"%s\"", mg_errname(rc), err.msg);
    pthread_mutex_lock(&fsm->own_lock);
    fsm->own_restricted = rc == MG_OK;
    fsm->own_epoch = rc == MG_OK ? rec.epoch : 0;
    if (rc == MG_OK)
        fsm->own = rec.owned;
    else
        memset(&fsm->own, 0, sizeof fsm->own);
    pthread_mutex_unlock(&fsm->own_lock);
}

bool mg_fsm_owns(mg_fsm *fsm, const char *cube_id, size_t len, uint64_t *epoch)
{
    uint32_t slot = mg_slot_of(cube_id, len);
    pthread_mutex_lock(&fsm->own_lock);
    bool owns = !fsm->own_restricted || mg_slotset_has(&fsm->own, slot);
    if (epoch != NULL)
        *epoch = fsm->own_epoch;
    pthread_mutex_unlock(&fsm->own_lock);
    return owns;
}

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
    pthread_mutex_init(&fsm->own_lock, NULL);
    own_load(fsm);
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
    pthread_mutex_destroy(&fsm->own_lock);
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
 * the entry); other commands are decoded (cmds[i]). Commands become store
 * ops in log order (entry_plan), with the cluster state they see as of the
 * commands before them: the slot ownership and the meta group's map epoch. */
typedef struct decoded_entry {
    uint32_t n;
    mg_cmd *cmds;        /* n */
    mg_cmd_puts *puts;   /* n: kind 0 when cmds[i] holds the command */
    int *codes;          /* n: MG_OK or why the command was refused */
    mg_filter **filters; /* n: compiled filters of mem_delete_where */
    uint8_t **sys_vals;  /* n: slots_set's encoded slot record, else NULL */
    size_t *op_start;    /* n: the command's first op in ops */
    size_t *op_n;        /* n: its ops */
    mg_store_op *ops;
    size_t n_ops, cap_ops;
    /* ownership as of the command being planned */
    bool own_restricted;
    uint64_t own_epoch;
    mg_slotset own;
    bool own_changed;    /* a slots_set is in the entry: publish after commit */
    /* the stored map's epoch (meta_set), read on first need */
    bool meta_loaded;
    uint64_t meta_epoch;
    /* the store's cubes (slots_drop), read on first need */
    bool cubes_loaded;
    mg_cube *cubes;
    size_t n_cubes;
} decoded_entry;

static void entry_clear(decoded_entry *e)
{
    for (uint32_t i = 0; i < e->n; i++) {
        mg_cmd_clear(&e->cmds[i]);
        mg_cmd_puts_clear(&e->puts[i]);
        if (e->filters[i] != NULL)
            mg_filter_free(e->filters[i]);
        free(e->sys_vals[i]);
    }
    for (size_t i = 0; i < e->n_cubes; i++)
        mg_cube_clear(&e->cubes[i]);
    free(e->cubes);
    free(e->cmds);
    free(e->puts);
    free(e->codes);
    free(e->filters);
    free(e->sys_vals);
    free(e->op_start);
    free(e->op_n);
    free(e->ops);
    memset(e, 0, sizeof *e);
}

static int entry_kind(const decoded_entry *e, uint32_t i)
{
    return e->puts[i].kind != 0 ? e->puts[i].kind : e->cmds[i].kind;
}

/* The cube a cube-scoped command names, or NULL for any other command. */
static const char *entry_cube(const decoded_entry *e, uint32_t i)
{
    if (e->puts[i].kind != 0)
        return e->puts[i].cube_id;
    const mg_cmd *c = &e->cmds[i];
    switch (c->kind) {
    case MG_CMD_CUBE_CREATE:
        return c->cube.cube_id;
    case MG_CMD_CUBE_DELETE:
    case MG_CMD_MEM_PUT:
    case MG_CMD_MEM_UPDATE:
    case MG_CMD_MEM_DELETE:
    case MG_CMD_MEM_DELETE_WHERE:
        return c->cube_id;
    default:
        return NULL;
    }
}

static bool entry_owns(const decoded_entry *e, const char *cube_id)
{
    return !e->own_restricted || mg_slotset_has(&e->own, mg_slot_of(cube_id, strlen(cube_id)));
}

/* Room for `more` ops after the current ones. */
static int ops_reserve(decoded_entry *e, size_t more, mg_error *err)
{
    if (e->n_ops + more <= e->cap_ops)
        return MG_OK;
    size_t cap = e->cap_ops ? e->cap_ops : 16;
    while (cap < e->n_ops + more)
        cap *= 2;
    mg_store_op *ops = realloc(e->ops, cap * sizeof *ops);
    if (ops == NULL)
        return mg_error_set(err, MG_ENOMEM, "out of memory building store ops");
    e->ops = ops;
    e->cap_ops = cap;
    return MG_OK;
}

/* Decodes every command; a command that does not decode gets its error in
 * codes[i] and no ops. Only allocation failure is an error. */
static int entry_decode(decoded_entry *e, mg_mp_reader *r, uint32_t n, mg_error *err)
{
    e->n = n;
    size_t cn = n ? n : 1;
    e->cmds = calloc(cn, sizeof *e->cmds);
    e->puts = calloc(cn, sizeof *e->puts);
    e->codes = calloc(cn, sizeof *e->codes);
    e->filters = calloc(cn, sizeof *e->filters);
    e->sys_vals = calloc(cn, sizeof *e->sys_vals);
    e->op_start = calloc(cn, sizeof *e->op_start);
    e->op_n = calloc(cn, sizeof *e->op_n);
    if (e->cmds == NULL || e->puts == NULL || e->codes == NULL || e->filters == NULL ||
        e->sys_vals == NULL || e->op_start == NULL || e->op_n == NULL)
        return mg_error_set(err, MG_ENOMEM, "out of memory decoding an entry");
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
        if (rc != MG_OK)
            mg_warn("fsm.cmd_refused", "cmd=%u code=%s", i, mg_errname(rc));
    }
    return MG_OK;
}

/* meta_set: compare-and-set of the stored map (meta.h). Returns the
 * command's code in *code (MG_OK: plan its SYS_PUT); an error only when the
 * stored map cannot be read for a reason that is not the state's own. */
static int plan_meta_set(mg_fsm *fsm, decoded_entry *e, const mg_cmd *c, int *code,
                         mg_error *err)
{
    mg_cmap *m = malloc(sizeof *m);
    if (m == NULL)
        return mg_error_set(err, MG_ENOMEM, "out of memory checking a cluster map");
    mg_error cerr = {0};
    int rc = mg_cmap_decode(c->map, c->map_len, m, &cerr);
    uint64_t epoch = m->epoch;
    if (rc == MG_ENOMEM) {
        free(m);
        return mg_error_set(err, MG_ENOMEM, "%s", cerr.msg);
    }
    if (rc != MG_OK || c->expect == UINT64_MAX || epoch != c->expect + 1 ||
        c->map_len > META_VALUE_MAX) {
        free(m);
        *code = MG_EINVAL;
        return MG_OK;
    }
    if (!e->meta_loaded) {
        rc = mg_meta_read_map(fsm->store, m, NULL, NULL, &cerr);
        if (rc == MG_OK || rc == MG_ENOTFOUND) {
            e->meta_epoch = m->epoch; /* 0 when none */
        } else if (rc == MG_ECORRUPT) {
            free(m);
            *code = MG_ECORRUPT; /* the same bytes on every replica */
            return MG_OK;
        } else {
            free(m);
            return mg_error_set(err, rc, "%s", cerr.msg);
        }
        e->meta_loaded = true;
    }
    free(m);
    if (e->meta_epoch != c->expect) {
        *code = MG_EBUSY;
        return MG_OK;
    }
    e->meta_epoch = epoch;
    *code = MG_OK;
    return MG_OK;
}

/* The store's cubes, read once per entry (slots_drop). */
static int load_cubes(mg_fsm *fsm, decoded_entry *e, mg_error *err)
{
    if (e->cubes_loaded)
        return MG_OK;
    int rc = mg_store_cube_list(fsm->store, &e->cubes, &e->n_cubes, err);
    if (rc != MG_OK)
        return rc;
    e->cubes_loaded = true;
    return MG_OK;
}

/* Appends a CUBE_DELETE for cube_id when slots_drop c drops it. */
static int plan_drop_cube(decoded_entry *e, const mg_cmd *c, const char *cube_id, mg_error *err)
{
    uint32_t slot = mg_slot_of(cube_id, strlen(cube_id));
    if (!mg_slotset_has(&c->slots, slot) || mg_slotset_has(&e->own, slot))
        return MG_OK;
    int rc = ops_reserve(e, 1, err);
    if (rc != MG_OK)
        return rc;
    e->ops[e->n_ops++] = (mg_store_op){.kind = MG_STORE_CUBE_DELETE, .cube_id = cube_id};
    return MG_OK;
}

/* slots_drop: every cube in the set and not owned — those stored, and those
 * created earlier in this entry (not in the store yet). A cube found twice
 * gets a second delete that finds nothing; only removals are counted. */
static int plan_slots_drop(mg_fsm *fsm, decoded_entry *e, uint32_t i, mg_error *err)
{
    const mg_cmd *c = &e->cmds[i];
    if (!e->own_restricted)
        return MG_OK; /* owns every slot: nothing to drop */
    int rc = load_cubes(fsm, e, err);
    for (size_t k = 0; k < e->n_cubes && rc == MG_OK; k++)
        rc = plan_drop_cube(e, c, e->cubes[k].cube_id, err);
    for (uint32_t j = 0; j < i && rc == MG_OK; j++)
        if (e->codes[j] == MG_OK && entry_kind(e, j) == MG_CMD_CUBE_CREATE)
            rc = plan_drop_cube(e, c, e->cmds[j].cube.cube_id, err);
    return rc;
}

/* Turns the commands into store ops in log order, refusing those the
 * cluster state as of their place in the log refuses (ownership, meta_set's
 * compare-and-set). Only allocation and store read failures are errors. */
static int entry_plan(mg_fsm *fsm, decoded_entry *e, mg_error *err)
{
    pthread_mutex_lock(&fsm->own_lock);
    e->own_restricted = fsm->own_restricted;
    e->own_epoch = fsm->own_epoch;
    e->own = fsm->own;
    pthread_mutex_unlock(&fsm->own_lock);
    int rc;
    for (uint32_t i = 0; i < e->n; i++) {
        e->op_start[i] = e->n_ops;
        if (e->codes[i] != MG_OK)
            continue;
        const char *cube = entry_cube(e, i);
        if (cube != NULL && !entry_owns(e, cube)) {
            e->codes[i] = MG_EWRONGGROUP;
            continue;
        }
        const mg_cmd *c = &e->cmds[i];
        switch (entry_kind(e, i)) {
        case MG_CMD_META_SET:
            if ((rc = plan_meta_set(fsm, e, c, &e->codes[i], err)) != MG_OK)
                return rc;
            if (e->codes[i] != MG_OK)
                continue;
            if ((rc = ops_reserve(e, 1, err)) != MG_OK)
                return rc;
            e->ops[e->n_ops++] = (mg_store_op){.kind = MG_STORE_SYS_PUT,
                                               .sys_key = MG_META_KEY_MAP,
                                               .record = c->map,
                                               .record_len = c->map_len};
            break;
        case MG_CMD_SLOTS_SET: {
            mg_slot_record rec = {.epoch = c->epoch, .owned = c->slots};
            if ((e->sys_vals[i] = malloc(MG_SLOT_RECORD_MAX)) == NULL ||
                (rc = ops_reserve(e, 1, err)) != MG_OK)
                return mg_error_set(err, MG_ENOMEM, "out of memory building store ops");
            size_t len = mg_slot_record_encode(&rec, e->sys_vals[i]);
            e->ops[e->n_ops++] = (mg_store_op){.kind = MG_STORE_SYS_PUT,
                                               .sys_key = MG_META_KEY_SLOTS,
                                               .record = e->sys_vals[i],
                                               .record_len = len};
            e->own_restricted = true;
            e->own_epoch = c->epoch;
            e->own = c->slots;
            e->own_changed = true;
            break;
        }
        case MG_CMD_SLOTS_DROP:
            if ((rc = plan_slots_drop(fsm, e, i, err)) != MG_OK)
                return rc;
            break;
        default: {
            size_t n = e->puts[i].kind != 0 ? e->puts[i].n : cmd_n_ops(c);
            if ((rc = ops_reserve(e, n, err)) != MG_OK)
                return rc;
            if (e->puts[i].kind != 0)
                puts_to_ops(&e->puts[i], e->ops + e->n_ops);
            else
                cmd_to_ops(c, e->filters[i], e->ops + e->n_ops);
            e->n_ops += n;
            break;
        }
        }
        e->op_n[i] = e->n_ops - e->op_start[i];
    }
    return MG_OK;
}

/* Lays out per-command outcomes over the store's per-op results
 * (res->codes_/counts_[0 .. e->n_ops)); a slots_drop's single outcome op
 * (the cubes it removed) lives after them, at e->n_ops + i. */
static void fill_outcomes(mg_fsm_result *res, const decoded_entry *e)
{
    for (uint32_t i = 0; i < e->n; i++) {
        mg_cmd_outcome *o = &res->cmds[i];
        size_t op = e->op_start[i];
        o->code = e->codes[i];
        o->n_ops = 0;
        o->op_codes = res->codes_ + op;
        o->op_counts = res->counts_ + op;
        if (e->codes[i] != MG_OK)
            continue;
        if (entry_kind(e, i) == MG_CMD_SLOTS_DROP) {
            size_t removed = 0;
            for (size_t k = 0; k < e->op_n[i]; k++)
                removed += res->codes_[op + k] == MG_OK;
            size_t at = e->n_ops + i;
            res->codes_[at] = MG_OK;
            res->counts_[at] = removed;
            o->op_codes = res->codes_ + at;
            o->op_counts = res->counts_ + at;
            o->n_ops = 1;
            continue;
        }
        o->n_ops = e->op_n[i];
        for (size_t k = 0; k < o->n_ops; k++) {
            if (o->code == MG_OK && res->codes_[op + k] != MG_OK)
                o->code = res->codes_[op + k];
        }
    }
    res->n_cmds = e->n;
}

/* After the entry's transaction committed: what its slots_set commands
 * decided becomes what readers see. */
static void own_publish(mg_fsm *fsm, const decoded_entry *e)
{
    if (!e->own_changed)
        return;
    pthread_mutex_lock(&fsm->own_lock);
    fsm->own_restricted = e->own_restricted;
    fsm->own_epoch = e->own_epoch;
    fsm->own = e->own;
    pthread_mutex_unlock(&fsm->own_lock);
    mg_info("fsm.slots", "epoch=%llu owned=%u", (unsigned long long)e->own_epoch,
            mg_slotset_count(&e->own));
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
    if ((rc = entry_decode(&e, &cmds, n_cmds, err)) != MG_OK ||
        (rc = entry_plan(fsm, &e, err)) != MG_OK)
        goto err_clear;
    if (result_reserve(res, n_cmds, e.n_ops + n_cmds) != MG_OK) {
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
    if (applied)
        own_publish(fsm, &e);
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
    own_load(fsm); /* the snapshot's slot record, not ours */
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
