/*
 * Moving a slot set S from data group X to data group Y with writes running
 * (docs/ARCHITECTURE.md "Cluster", rebalance):
 *
 *   (1) slots_set on Y: owned ∪ S
 *   (2) copy every cube of S from X to Y (X keeps taking writes)
 *   (3) slots_set on X: owned ∖ S — X refuses writes to S from here on
 *   (4) barrier on X, then the same copy again: a merge walk of X's and Y's
 *       memories in id order puts what differs and deletes what X no longer
 *       has; cubes of S that X no longer has are deleted on Y
 *   (5) meta_set flips S to Y
 *   (6) slots_drop S on X
 *
 * Steps (2) and (4) are one function (sync_cube): (2) is a walk against a
 * Y that is empty or holds a failed run's copy. After (3) X does not own S,
 * so its reads of S carry "any_slot": true (internal requests only; see the
 * final report / node.h): a node that does not honour it answers
 * MG_EWRONGGROUP, which is detected by a probe before anything is deleted.
 * A failure before (5) gives S back to X (slots_set with its old set), so
 * clients are not refused for long; the move can be rerun.
 */
#include "admin.h"

#include "../lib/log.h"
#include "../storage/store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PAGE 500
#define PUT_BYTES_MAX (8u << 20)
#define DEL_MAX 1000

/* One group and how to reach its leader. */
typedef struct grp {
    uint64_t id;
    const uint64_t *nodes;
    uint32_t n;
} grp;

/* ---- reading cubes ----------------------------------------------------- */

static int pack_any_slot(msgpack_packer *pk, bool any_slot)
{
    return any_slot ? mg_mp_pack_cstr(pk, "any_slot") | msgpack_pack_true(pk) : 0;
}

/* The cubes of group g whose slot is in S: *out (malloc'd, *n). */
static int list_cubes(mg_router *r, const grp *g, const mg_slotset *S, bool any_slot,
                      mg_cube **out, size_t *n, mg_error *err)
{
    *out = NULL;
    *n = 0;
    admin_buf b;
    admin_buf_init(&b);
    msgpack_pack_map(&b.pk, any_slot ? 1 : 0);
    pack_any_slot(&b.pk, any_slot);
    mg_client_reply rep;
    int rc = admin_leader_call(r, g->nodes, g->n, g->id, MG_OP_CUBE_LIST, &b, ADMIN_STEP_MS,
                               &rep, err);
    admin_buf_free(&b);
    if (rc != MG_OK)
        return mg_error_wrap(err, rc, "CUBE_LIST on group %llu", (unsigned long long)g->id);
    mg_mp_reader rd = mg_wire_body(rep.rep.body, rep.rep.body_len);
    uint32_t count;
    if (mg_mp_read_array(&rd, &count) != MG_OK) {
        rc = mg_error_set(err, MG_ECORRUPT, "CUBE_LIST reply of group %llu is not a list",
                          (unsigned long long)g->id);
        goto done;
    }
    *out = calloc(count ? count : 1, sizeof **out);
    if (*out == NULL) {
        rc = mg_error_set(err, MG_ENOMEM, "out of memory");
        goto done;
    }
    for (uint32_t i = 0; i < count; i++) {
        const uint8_t *rec = rd.pos;
        uint32_t len;
        if (mg_mp_peek(&rd) == MG_MP_BIN) {
            if (mg_mp_read_bin(&rd, &rec, &len) != MG_OK)
                goto corrupt;
        } else {
            if (mg_mp_skip(&rd) != MG_OK)
                goto corrupt;
            len = (uint32_t)(rd.pos - rec);
        }
        mg_cube c;
        memset(&c, 0, sizeof c);
        if (mg_cube_decode(rec, len, &c, err) != MG_OK)
            goto corrupt;
        if (mg_slotset_has(S, mg_slot_of(c.cube_id, strlen(c.cube_id))))
            (*out)[(*n)++] = c;
        else
            mg_cube_clear(&c);
    }
    goto done;
corrupt:
    rc = mg_error_set(err, MG_ECORRUPT, "CUBE_LIST reply of group %llu is malformed",
                      (unsigned long long)g->id);
done:
    if (rc != MG_OK) {
        for (size_t i = 0; i < *n; i++)
            mg_cube_clear(&(*out)[i]);
        free(*out);
        *out = NULL;
        *n = 0;
    }
    mg_client_reply_free(&rep);
    return rc;
}

static void cubes_free(mg_cube *c, size_t n)
{
    for (size_t i = 0; i < n; i++)
        mg_cube_clear(&c[i]);
    free(c);
}

/* ---- pages of MEM_LIST ------------------------------------------------- */

typedef struct lister {
    mg_router *r;
    const grp *g;
    const char *cube;
    bool any_slot;
    mg_client_reply rep;   /* the current page */
    const uint8_t **recs;
    uint32_t *rec_len;
    const uint8_t **vecs;  /* NULL entries: no vector */
    uint32_t *vec_len;
    size_t cap, cnt, i;
    bool more, started, ended;
    uint8_t after[16];
    bool has_after;
} lister;

static void lister_free(lister *l)
{
    mg_client_reply_free(&l->rep);
    free(l->recs);
    free(l->rec_len);
    free(l->vecs);
    free(l->vec_len);
}

static int read_page(lister *l, mg_error *err)
{
    mg_mp_reader rd = mg_wire_body(l->rep.rep.body, l->rep.rep.body_len);
    uint32_t n, cnt;
    l->cnt = l->i = 0;
    l->more = false;
    size_t n_vecs = 0;
    if (mg_mp_read_map(&rd, &n) != MG_OK)
        goto bad;
    for (uint32_t k = 0; k < n; k++) {
        bool recs = mg_mp_peek_str_eq(&rd, "records"), vecs = mg_mp_peek_str_eq(&rd, "vecs"),
             more = mg_mp_peek_str_eq(&rd, "more");
        if (mg_mp_skip(&rd) != MG_OK)
            goto bad;
        if (more) {
            if (mg_mp_read_bool(&rd, &l->more) != MG_OK)
                goto bad;
        } else if (recs || vecs) {
            if (mg_mp_read_array(&rd, &cnt) != MG_OK)
                goto bad;
            if (cnt > l->cap) {
                size_t cap = cnt;
                const uint8_t **a = realloc(l->recs, cap * sizeof *a);
                if (a != NULL)
                    l->recs = a;
                uint32_t *b = realloc(l->rec_len, cap * sizeof *b);
                if (b != NULL)
                    l->rec_len = b;
                const uint8_t **c = realloc(l->vecs, cap * sizeof *c);
                if (c != NULL)
                    l->vecs = c;
                uint32_t *d = realloc(l->vec_len, cap * sizeof *d);
                if (d != NULL)
                    l->vec_len = d;
                if (a == NULL || b == NULL || c == NULL || d == NULL)
                    return mg_error_set(err, MG_ENOMEM, "out of memory");
                l->cap = cap;
            }
            for (uint32_t j = 0; j < cnt; j++) {
                if (recs) {
                    if (mg_mp_read_bin(&rd, &l->recs[j], &l->rec_len[j]) != MG_OK)
                        goto bad;
                } else if (mg_mp_peek(&rd) == MG_MP_NIL) {
                    mg_mp_read_nil(&rd);
                    l->vecs[j] = NULL;
                    l->vec_len[j] = 0;
                } else if (mg_mp_read_bin(&rd, &l->vecs[j], &l->vec_len[j]) != MG_OK) {
                    goto bad;
                }
            }
            if (recs)
                l->cnt = cnt;
            else
                n_vecs = cnt;
        } else if (mg_mp_skip(&rd) != MG_OK) {
            goto bad;
        }
    }
    if (n_vecs != l->cnt)
        return mg_error_set(err, MG_ECORRUPT,
                            "MEM_LIST of cube \"%s\" on group %llu came without \"vecs\" (the "
                            "node must support \"vecs\": true)",
                            l->cube, (unsigned long long)l->g->id);
    return MG_OK;
bad:
    return mg_error_set(err, MG_ECORRUPT, "malformed MEM_LIST reply from group %llu",
                        (unsigned long long)l->g->id);
}

/* Makes the current record available (fetching the next page when the
 * current one is used up): MG_OK with l->ended when there is none left. */
static int lister_fill(lister *l, mg_error *err)
{
    if (l->ended || l->i < l->cnt)
        return MG_OK;
    if (l->started && !l->more) {
        l->ended = true;
        return MG_OK;
    }
    mg_client_reply_free(&l->rep);
    admin_buf b;
    admin_buf_init(&b);
    msgpack_pack_map(&b.pk, l->any_slot ? 6 : 5);
    mg_mp_pack_cstr(&b.pk, "cube_id");
    mg_mp_pack_cstr(&b.pk, l->cube);
    mg_mp_pack_cstr(&b.pk, "filter");
    msgpack_pack_nil(&b.pk);
    mg_mp_pack_cstr(&b.pk, "after");
    if (l->has_after)
        mg_mp_pack_binn(&b.pk, l->after, 16);
    else
        msgpack_pack_nil(&b.pk);
    mg_mp_pack_cstr(&b.pk, "limit");
    msgpack_pack_uint32(&b.pk, PAGE);
    mg_mp_pack_cstr(&b.pk, "vecs");
    msgpack_pack_true(&b.pk);
    pack_any_slot(&b.pk, l->any_slot);
    int rc = admin_leader_call(l->r, l->g->nodes, l->g->n, l->g->id, MG_OP_MEM_LIST, &b,
                               ADMIN_STEP_MS, &l->rep, err);
    admin_buf_free(&b);
    l->started = true;
    if (rc == MG_ENOTFOUND) { /* the cube is gone */
        l->ended = true;
        return MG_OK;
    }
    if (rc != MG_OK)
        return mg_error_wrap(err, rc, "MEM_LIST of cube \"%s\" on group %llu", l->cube,
                             (unsigned long long)l->g->id);
    if ((rc = read_page(l, err)) != MG_OK)
        return rc;
    if (l->cnt == 0)
        l->ended = true;
    return MG_OK;
}

/* The current record's id (NULL when it has none readable). */
static const uint8_t *lister_id(const lister *l, mg_error *err)
{
    const uint8_t *id = NULL;
    if (mg_store_record_check(l->recs[l->i], l->rec_len[l->i], &id, err) != MG_OK)
        return NULL;
    return id;
}

static void lister_next(lister *l, const uint8_t *id)
{
    memcpy(l->after, id, 16);
    l->has_after = true;
    l->i++;
}

/* ---- writing to the destination ---------------------------------------- */

typedef struct batch {
    const char *cube;
    const grp *dst;
    /* puts: pointers into the source's current page */
    const uint8_t **recs, **vecs;
    uint32_t *rec_len, *vec_len;
    size_t n_puts, cap_puts, put_bytes;
    uint8_t (*dels)[16];
    size_t n_dels;
} batch;

static int flush_puts(mg_router *r, batch *b, mg_error *err)
{
    if (b->n_puts == 0)
        return MG_OK;
    admin_buf w;
    admin_buf_init(&w);
    msgpack_packer *pk = &w.pk;
    int prc = msgpack_pack_map(pk, 1) | mg_mp_pack_cstr(pk, "cmds") | msgpack_pack_array(pk, 1) |
              msgpack_pack_map(pk, 4) | mg_mp_pack_cstr(pk, "op") |
              mg_mp_pack_cstr(pk, "mem_put") | mg_mp_pack_cstr(pk, "cube_id") |
              mg_mp_pack_cstr(pk, b->cube) | mg_mp_pack_cstr(pk, "items") |
              msgpack_pack_array(pk, (uint32_t)b->n_puts);
    /* The records go as they are: the store keeps what it is given, so the
     * copy is byte-identical. */
    for (size_t i = 0; i < b->n_puts; i++)
        prc |= msgpack_pack_bin_body(pk, b->recs[i], b->rec_len[i]);
    prc |= mg_mp_pack_cstr(pk, "vecs") | msgpack_pack_array(pk, (uint32_t)b->n_puts);
    for (size_t i = 0; i < b->n_puts; i++)
        prc |= b->vecs[i] ? mg_mp_pack_binn(pk, b->vecs[i], b->vec_len[i]) : msgpack_pack_nil(pk);
    int rc = prc ? mg_error_set(err, MG_ENOMEM, "out of memory")
                 : admin_write_body(r, b->dst->nodes, b->dst->n, b->dst->id, &w, 1, 0, NULL, err);
    admin_buf_free(&w);
    if (rc != MG_OK)
        return mg_error_wrap(err, rc, "mem_put of %zu memories of cube \"%s\" on group %llu",
                             b->n_puts, b->cube, (unsigned long long)b->dst->id);
    b->n_puts = 0;
    b->put_bytes = 0;
    return MG_OK;
}

static int add_put(mg_router *r, batch *b, const lister *src, mg_error *err)
{
    if (b->n_puts == b->cap_puts) {
        size_t cap = b->cap_puts ? 2 * b->cap_puts : 64;
        const uint8_t **x = realloc(b->recs, cap * sizeof *x);
        if (x != NULL)
            b->recs = x;
        const uint8_t **y = realloc(b->vecs, cap * sizeof *y);
        if (y != NULL)
            b->vecs = y;
        uint32_t *u = realloc(b->rec_len, cap * sizeof *u);
        if (u != NULL)
            b->rec_len = u;
        uint32_t *v = realloc(b->vec_len, cap * sizeof *v);
        if (v != NULL)
            b->vec_len = v;
        if (x == NULL || y == NULL || u == NULL || v == NULL)
            return mg_error_set(err, MG_ENOMEM, "out of memory");
        b->cap_puts = cap;
    }
    size_t i = src->i;
    b->recs[b->n_puts] = src->recs[i];
    b->rec_len[b->n_puts] = src->rec_len[i];
    b->vecs[b->n_puts] = src->vecs[i];
    b->vec_len[b->n_puts] = src->vec_len[i];
    b->n_puts++;
    b->put_bytes += src->rec_len[i] + src->vec_len[i];
    if (b->n_puts >= PAGE || b->put_bytes >= PUT_BYTES_MAX)
        return flush_puts(r, b, err);
    return MG_OK;
}

static int flush_dels(mg_router *r, batch *b, mg_error *err)
{
    if (b->n_dels == 0)
        return MG_OK;
    mg_cmd c;
    memset(&c, 0, sizeof c);
    c.kind = MG_CMD_MEM_DELETE;
    snprintf(c.cube_id, sizeof c.cube_id, "%s", b->cube);
    c.ids = b->dels; /* borrowed: not cleared with mg_cmd_clear */
    c.n_ids = b->n_dels;
    int rc = admin_write_cmd(r, b->dst->nodes, b->dst->n, b->dst->id, &c, ADMIN_OK_NOTFOUND, NULL,
                             err);
    if (rc != MG_OK)
        return mg_error_wrap(err, rc, "mem_delete on cube \"%s\" of group %llu", b->cube,
                             (unsigned long long)b->dst->id);
    b->n_dels = 0;
    return MG_OK;
}

static int add_del(mg_router *r, batch *b, const uint8_t *id, mg_error *err)
{
    memcpy(b->dels[b->n_dels++], id, 16);
    return b->n_dels >= DEL_MAX ? flush_dels(r, b, err) : MG_OK;
}

/* Makes Y's copy of one cube equal to X's: the merge walk. *n_src gets the
 * number of memories X holds. */
static int sync_cube(mg_router *r, const grp *x, const grp *y, const char *cube, bool any_slot,
                     uint64_t *n_src, mg_error *err)
{
    lister src = {.r = r, .g = x, .cube = cube, .any_slot = any_slot};
    lister dst = {.r = r, .g = y, .cube = cube};
    batch b = {.cube = cube, .dst = y};
    b.dels = malloc(DEL_MAX * sizeof *b.dels);
    int rc = b.dels ? MG_OK : mg_error_set(err, MG_ENOMEM, "out of memory");
    *n_src = 0;
    while (rc == MG_OK) {
        /* Puts point into the source's page: send them before it is replaced. */
        if (!src.ended && src.i == src.cnt && (rc = flush_puts(r, &b, err)) != MG_OK)
            break;
        if ((rc = lister_fill(&src, err)) != MG_OK || (rc = lister_fill(&dst, err)) != MG_OK)
            break;
        if (src.ended && dst.ended)
            break;
        const uint8_t *sid = src.ended ? NULL : lister_id(&src, err);
        const uint8_t *did = dst.ended ? NULL : lister_id(&dst, err);
        if ((!src.ended && sid == NULL) || (!dst.ended && did == NULL)) {
            rc = mg_error_wrap(err, MG_ECORRUPT, "a memory record of cube \"%s\"", cube);
            break;
        }
        int cmp = sid == NULL ? 1 : did == NULL ? -1 : memcmp(sid, did, 16);
        if (cmp < 0) {
            rc = add_put(r, &b, &src, err);
            (*n_src)++;
            lister_next(&src, sid);
        } else if (cmp > 0) {
            rc = add_del(r, &b, did, err);
            lister_next(&dst, did);
        } else {
            size_t i = src.i, j = dst.i;
            bool same = src.rec_len[i] == dst.rec_len[j] &&
                        memcmp(src.recs[i], dst.recs[j], src.rec_len[i]) == 0 &&
                        src.vec_len[i] == dst.vec_len[j] &&
                        (src.vec_len[i] == 0 ||
                         memcmp(src.vecs[i], dst.vecs[j], src.vec_len[i]) == 0);
            if (!same)
                rc = add_put(r, &b, &src, err);
            (*n_src)++;
            lister_next(&src, sid);
            lister_next(&dst, did);
        }
    }
    if (rc == MG_OK)
        rc = flush_puts(r, &b, err);
    if (rc == MG_OK)
        rc = flush_dels(r, &b, err);
    lister_free(&src);
    lister_free(&dst);
    free(b.recs);
    free(b.vecs);
    free(b.rec_len);
    free(b.vec_len);
    free(b.dels);
    return rc;
}

static int create_cube(mg_router *r, const grp *y, const mg_cube *cube, mg_error *err)
{
    mg_cmd c;
    memset(&c, 0, sizeof c);
    c.kind = MG_CMD_CUBE_CREATE;
    c.cube = *cube; /* borrowed: not cleared */
    int rc = admin_write_cmd(r, y->nodes, y->n, y->id, &c, ADMIN_OK_EXIST, NULL, err);
    if (rc != MG_OK)
        return mg_error_wrap(err, rc, "cube_create of \"%s\" on group %llu", cube->cube_id,
                             (unsigned long long)y->id);
    return MG_OK;
}

static int delete_cube(mg_router *r, const grp *y, const char *cube, mg_error *err)
{
    mg_cmd c;
    memset(&c, 0, sizeof c);
    c.kind = MG_CMD_CUBE_DELETE;
    snprintf(c.cube_id, sizeof c.cube_id, "%s", cube);
    int rc = admin_write_cmd(r, y->nodes, y->n, y->id, &c, ADMIN_OK_NOTFOUND, NULL, err);
    if (rc != MG_OK)
        return mg_error_wrap(err, rc, "cube_delete of \"%s\" on group %llu", cube,
                             (unsigned long long)y->id);
    return MG_OK;
}

/* A cube record read from group g: MG_OK, MG_ENOTFOUND, or the error. */
static int get_cube(mg_router *r, const grp *g, const char *cube, bool any_slot, mg_error *err)
{
    admin_buf b;
    admin_buf_init(&b);
    msgpack_pack_map(&b.pk, any_slot ? 2 : 1);
    mg_mp_pack_cstr(&b.pk, "cube_id");
    mg_mp_pack_cstr(&b.pk, cube);
    pack_any_slot(&b.pk, any_slot);
    mg_client_reply rep;
    int rc = admin_leader_call(r, g->nodes, g->n, g->id, MG_OP_CUBE_GET, &b, ADMIN_STEP_MS, &rep,
                               err);
    admin_buf_free(&b);
    if (rc == MG_OK)
        mg_client_reply_free(&rep);
    return rc;
}

/* Copies every cube of S from x to y (steps 2 and 4). */
static int copy_all(mg_router *r, const grp *x, const grp *y, const mg_slotset *S, bool frozen,
                    admin_move_stats *st, mg_error *err)
{
    mg_cube *xs = NULL, *ys = NULL;
    size_t nx = 0, ny = 0;
    int rc = list_cubes(r, x, S, true, &xs, &nx, err);
    if (rc == MG_OK && frozen)
        rc = list_cubes(r, y, S, false, &ys, &ny, err);
    st->cubes = 0;
    st->memories = 0;
    for (size_t i = 0; i < nx && rc == MG_OK; i++) {
        uint64_t n = 0;
        rc = create_cube(r, y, &xs[i], err);
        if (rc == MG_OK)
            rc = sync_cube(r, x, y, xs[i].cube_id, true, &n, err);
        st->cubes++;
        st->memories += n;
    }
    /* Cubes Y has and X does not: deleted on X since step 2, or created by
     * a failed earlier run. Only an explicit "not found" from X deletes. */
    for (size_t j = 0; j < ny && rc == MG_OK; j++) {
        bool in_x = false;
        for (size_t i = 0; i < nx && !in_x; i++)
            in_x = strcmp(xs[i].cube_id, ys[j].cube_id) == 0;
        if (in_x)
            continue;
        rc = get_cube(r, x, ys[j].cube_id, true, err);
        if (rc == MG_ENOTFOUND) {
            rc = delete_cube(r, y, ys[j].cube_id, err);
        } else if (rc == MG_OK) {
            rc = mg_error_set(err, MG_EINTERNAL,
                              "group %llu has cube \"%s\" but did not list it",
                              (unsigned long long)x->id, ys[j].cube_id);
        } else {
            mg_error_wrap(err, rc, "CUBE_GET of \"%s\" on group %llu", ys[j].cube_id,
                          (unsigned long long)x->id);
        }
    }
    cubes_free(xs, nx);
    cubes_free(ys, ny);
    return rc;
}

/* After step 3: X must still answer reads of S for internal callers. */
static int probe_any_slot(mg_router *r, const grp *x, const mg_slotset *S, mg_error *err)
{
    char id[64];
    for (unsigned k = 0;; k++) {
        snprintf(id, sizeof id, "mg-admin-probe-%u", k);
        if (mg_slotset_has(S, mg_slot_of(id, strlen(id))))
            break;
    }
    int rc = get_cube(r, x, id, true, err);
    if (rc == MG_ENOTFOUND || rc == MG_OK)
        return MG_OK;
    if (rc == MG_EWRONGGROUP)
        return mg_error_set(err, MG_EINTERNAL,
                            "group %llu refuses to read slots it no longer owns (its nodes do "
                            "not support \"any_slot\" reads)",
                            (unsigned long long)x->id);
    return mg_error_wrap(err, rc, "reading group %llu after freezing it",
                         (unsigned long long)x->id);
}

typedef struct flip_arg {
    uint64_t src, dst;
    const mg_slotset *S;
} flip_arg;

static int flip_edit(mg_cmap *m, void *arg, bool *changed, mg_error *err)
{
    const flip_arg *a = arg;
    for (uint32_t s = 0; s < MG_SLOTS; s++) {
        if (!mg_slotset_has(a->S, s) || m->slot_group[s] == a->dst)
            continue;
        if (m->slot_group[s] != a->src)
            return mg_error_set(err, MG_EBUSY,
                                "slot %u moved to group %u meanwhile: map changed concurrently",
                                s, (unsigned)m->slot_group[s]);
        m->slot_group[s] = (uint16_t)a->dst;
        *changed = true;
    }
    return MG_OK;
}

/* Gives S back to X after a failure between steps 3 and 5 (unless the map
 * already says Y). */
static void unfreeze(mg_router *r, const grp *x, const mg_slotset *owned_x, const mg_slotset *S)
{
    mg_cmap *m = malloc(sizeof *m);
    mg_error e = {0};
    if (m == NULL || admin_map_read(r, m, &e) != MG_OK) {
        mg_warn("admin.rebalance", "cannot re-read the map to unfreeze group %llu: %s",
                (unsigned long long)x->id, e.msg);
        free(m);
        return;
    }
    for (uint32_t s = 0; s < MG_SLOTS; s++)
        if (mg_slotset_has(S, s) && m->slot_group[s] != x->id) {
            free(m);
            return; /* the flip happened: X must stay frozen */
        }
    if (admin_slots_set(r, m, x->id, x->nodes, x->n, owned_x, &e) != MG_OK)
        mg_warn("admin.rebalance", "cannot give slots back to group %llu: %s",
                (unsigned long long)x->id, e.msg);
    free(m);
}

int admin_move_slots(mg_router *r, uint64_t src, uint64_t dst, const mg_slotset *S,
                     admin_move_stats *st, mg_error *err)
{
    memset(st, 0, sizeof *st);
    mg_cmap *m = malloc(sizeof *m);
    if (m == NULL)
        return mg_error_set(err, MG_ENOMEM, "out of memory");
    int rc = admin_map_read(r, m, err);
    if (rc != MG_OK)
        goto done;
    const mg_cmap_group *gx = mg_cmap_group_get(m, src), *gy = mg_cmap_group_get(m, dst);
    if (gx == NULL || gy == NULL || src == 0 || dst == 0 || src == dst) {
        rc = mg_error_set(err, MG_ENOTFOUND, "moving slots from group %llu to %llu: no such "
                          "data groups", (unsigned long long)src, (unsigned long long)dst);
        goto done;
    }
    /* Copies: m is re-read below, the group entries must not move under us. */
    uint64_t xn[MG_CMAP_REPLICAS_MAX], yn[MG_CMAP_REPLICAS_MAX];
    memcpy(xn, gx->replicas, sizeof xn);
    memcpy(yn, gy->replicas, sizeof yn);
    grp x = {.id = src, .nodes = xn, .n = gx->n_replicas};
    grp y = {.id = dst, .nodes = yn, .n = gy->n_replicas};
    mg_slotset owned_x, owned_y, left_x;
    mg_cmap_group_slotset(m, src, &owned_x);
    mg_cmap_group_slotset(m, dst, &owned_y);
    left_x = owned_x;
    uint32_t todo = 0;
    for (uint32_t s = 0; s < MG_SLOTS; s++) {
        if (!mg_slotset_has(S, s))
            continue;
        if (m->slot_group[s] == src) {
            todo++;
            mg_slotset_add(&owned_y, s);
            mg_slotset_del(&left_x, s);
        } else if (m->slot_group[s] != dst) {
            rc = mg_error_set(err, MG_EEXIST, "slot %u is owned by group %u, not %llu", s,
                              (unsigned)m->slot_group[s], (unsigned long long)src);
            goto done;
        }
    }
    mg_info("admin.rebalance", "move %u slots from group %llu to %llu (epoch %llu)", todo,
            (unsigned long long)src, (unsigned long long)dst, (unsigned long long)m->epoch);
    if (todo > 0) {
        /* (1) Y accepts S; (2) first copy while X takes writes. */
        if ((rc = admin_slots_set(r, m, dst, y.nodes, y.n, &owned_y, err)) != MG_OK)
            goto done;
        if ((rc = copy_all(r, &x, &y, S, false, st, err)) != MG_OK) {
            mg_error_wrap(err, rc, "copy (step 2)");
            goto done;
        }
        /* (3) freeze X for S. */
        if ((rc = admin_slots_set(r, m, src, x.nodes, x.n, &left_x, err)) != MG_OK)
            goto done;
        /* (4) barrier, then the delta. */
        mg_client_reply rep;
        rc = admin_leader_call(r, x.nodes, x.n, src, MG_OP_BARRIER, NULL, ADMIN_STEP_MS, &rep,
                               err);
        if (rc == MG_OK) {
            mg_client_reply_free(&rep);
            rc = probe_any_slot(r, &x, S, err);
        }
        if (rc == MG_OK && (rc = copy_all(r, &x, &y, S, true, st, err)) != MG_OK)
            mg_error_wrap(err, rc, "delta copy (step 4)");
        /* (5) flip. */
        flip_arg fa = {.src = src, .dst = dst, .S = S};
        if (rc == MG_OK)
            rc = admin_map_edit(r, flip_edit, &fa, NULL, err);
        if (rc != MG_OK) {
            unfreeze(r, &x, &owned_x, S);
            goto done;
        }
    }
    /* (6) X frees the space (also when a rerun finds the flip done). */
    uint64_t dropped = 0;
    rc = admin_slots_drop(r, x.nodes, x.n, src, S, &dropped, err);
    if (rc == MG_OK)
        mg_info("admin.rebalance",
                "moved %u slots from group %llu to %llu: %llu cubes, %llu memories (%llu "
                "cubes dropped)",
                todo, (unsigned long long)src, (unsigned long long)dst,
                (unsigned long long)st->cubes, (unsigned long long)st->memories,
                (unsigned long long)dropped);
done:
    free(m);
    return rc;
}
