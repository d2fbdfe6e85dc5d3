/*
 * Point reads and STATUS, on the worker pool, straight against the group's
 * store (thread-safe; see storage/store.h). Leadership comes from the
 * snapshot the loop publishes; the store lock keeps the stores open for the
 * duration of a read.
 */
#include "node_internal.h"

#include "../lib/jsonmp.h"
#include "../lib/log.h"

#include <stdlib.h>
#include <string.h>

#define MEM_GET_IDS_MAX 10000
#define MEM_LIST_DEFAULT 100
#define MEM_LIST_MAX 10000

/* ---- body helpers ------------------------------------------------------- */

/* Positions *val on the value of top-level key `key` of the body map.
 * 1 found, 0 absent, -1 malformed body. */
static int body_find(const node_ctx *c, const char *key, mg_mp_reader *val)
{
    mg_mp_reader r = mg_wire_body(c->env.body, c->env.body_len);
    uint32_t n;
    if (mg_mp_peek(&r) == MG_MP_NIL)
        return 0; /* a nil body reads as an empty map */
    if (mg_mp_read_map(&r, &n) != MG_OK)
        return -1;
    for (uint32_t i = 0; i < n; i++) {
        bool match = mg_mp_peek_str_eq(&r, key);
        if (mg_mp_skip(&r) != MG_OK)
            return -1;
        if (match) {
            *val = r;
            return 1;
        }
        if (mg_mp_skip(&r) != MG_OK)
            return -1;
    }
    return 0;
}

/* Reads a required id string (cube or user) into buf. Answers and returns
 * false when missing or bad. */
static bool body_id(node_ctx *c, const char *key, char *buf, size_t cap, bool required)
{
    mg_mp_reader v;
    char msg[96];
    int found = body_find(c, key, &v);
    buf[0] = '\0';
    if (found < 0) {
        node_reply_error(c, MG_ECORRUPT, "malformed request body", 0, NULL);
        return false;
    }
    if (found == 0 || mg_mp_peek(&v) == MG_MP_NIL) {
        if (!required)
            return true;
        snprintf(msg, sizeof msg, "\"%s\" is required", key);
        node_reply_error(c, MG_EINVAL, msg, 0, NULL);
        return false;
    }
    if (mg_mp_read_strcpy(&v, buf, cap) != MG_OK || buf[0] == '\0') {
        snprintf(msg, sizeof msg, "\"%s\": a string of 1-%zu bytes expected", key, cap - 1);
        node_reply_error(c, MG_EINVAL, msg, 0, NULL);
        return false;
    }
    return true;
}

/* Checks that the cube exists and that the caller may read it. Answers and
 * returns false otherwise. *out (may be NULL) gets the cube. */
static bool cube_access(node_ctx *c, node_group *ng, const char *cube_id, mg_cube *out)
{
    mg_error err = {0};
    mg_cube cube = {0};
    char msg[MG_CUBE_ID_MAX + MG_USER_ID_MAX + 64];
    int rc = mg_store_cube_get(ng->store, cube_id, &cube, &err);
    if (rc == MG_ENOTFOUND) {
        snprintf(msg, sizeof msg, "cube %s not found", cube_id);
        node_reply_error(c, MG_ENOTFOUND, msg, 0, NULL);
        return false;
    }
    if (rc != MG_OK) {
        node_reply_err(c, &err);
        return false;
    }
    if (c->user[0] != '\0' && !mg_cube_allows(&cube, c->user)) {
        mg_cube_clear(&cube);
        snprintf(msg, sizeof msg, "user %s may not read cube %s", c->user, cube_id);
        node_reply_error(c, MG_EPERM, msg, 0, NULL);
        return false;
    }
    if (out != NULL)
        *out = cube;
    else
        mg_cube_clear(&cube);
    return true;
}

/* An internal read with "any_slot": true reads slots the group no longer
 * owns (the rebalance's copy from a frozen source, router/admin_copy.c). */
static bool any_slot(const node_ctx *c)
{
    return c->user[0] == '\0' && node_body_flag(c->env.body, c->env.body_len, "any_slot");
}

/* Answers MG_EWRONGGROUP and returns false when the group does not own the
 * cube's slot (checked before the cube itself: it may well not be here). */
static bool cube_owned(node_ctx *c, node_group *ng, const char *cube_id)
{
    uint64_t epoch;
    if (any_slot(c) || node_group_owns(ng, cube_id, &epoch))
        return true;
    node_reply_wrong_group(c, ng->group_id, cube_id, epoch);
    return false;
}

/* Packs an item's record as a bin. */
static int pack_record(msgpack_packer *pk, const mg_item *it)
{
    char *buf;
    size_t len;
    int rc = mg_item_encode(it, &buf, &len);
    if (rc != MG_OK)
        return rc;
    rc = mg_mp_pack_binn(pk, buf, len);
    free(buf);
    return rc;
}

/* ---- ops ---------------------------------------------------------------- */

static void op_cube_get(node_ctx *c, node_group *ng)
{
    char cube_id[MG_CUBE_ID_MAX + 1];
    mg_cube cube;
    if (!body_id(c, "cube_id", cube_id, sizeof cube_id, true) || !cube_owned(c, ng, cube_id) ||
        !cube_access(c, ng, cube_id, &cube))
        return;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    node_reply_begin(c, &sb, &pk);
    mg_cube_pack(&pk, &cube);
    mg_cube_clear(&cube);
    node_reply(c, &sb);
}

static void op_cube_list(node_ctx *c, node_group *ng)
{
    mg_error err = {0};
    mg_cube *cubes = NULL;
    size_t n = 0, shown = 0;
    if (mg_store_cube_list(ng->store, &cubes, &n, &err) != MG_OK) {
        node_reply_err(c, &err);
        return;
    }
    bool internal = c->user[0] == '\0', all_slots = any_slot(c);
    bool *show = calloc(n ? n : 1, sizeof *show);
    if (show == NULL) {
        for (size_t i = 0; i < n; i++)
            mg_cube_clear(&cubes[i]);
        free(cubes);
        node_reply_error(c, MG_ENOMEM, "out of memory listing cubes", 0, NULL);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        /* only the cubes whose slot the group owns (others are being moved
         * away or were left behind) */
        show[i] = (internal || mg_cube_allows(&cubes[i], c->user)) &&
                  (all_slots || node_group_owns(ng, cubes[i].cube_id, NULL));
        shown += show[i];
    }
    msgpack_sbuffer sb;
    msgpack_packer pk;
    node_reply_begin(c, &sb, &pk);
    msgpack_pack_array(&pk, (uint32_t)shown);
    for (size_t i = 0; i < n; i++) {
        if (show[i])
            mg_cube_pack(&pk, &cubes[i]);
        mg_cube_clear(&cubes[i]);
    }
    free(cubes);
    free(show);
    node_reply(c, &sb);
}

static void op_mem_get(node_ctx *c, node_group *ng)
{
    char cube_id[MG_CUBE_ID_MAX + 1], found_in[MG_CUBE_ID_MAX + 1];
    mg_mp_reader v;
    uint32_t n_ids;
    if (!body_id(c, "cube_id", cube_id, sizeof cube_id, false))
        return;
    if (body_find(c, "ids", &v) != 1 || mg_mp_read_array(&v, &n_ids) != MG_OK) {
        node_reply_error(c, MG_EINVAL, "mem_get: \"ids\" (a list of 16-byte ids) is required", 0,
                         NULL);
        return;
    }
    if (n_ids > MEM_GET_IDS_MAX) {
        node_reply_error(c, MG_ETOOBIG, "mem_get: too many ids", 0, NULL);
        return;
    }
    mg_mp_reader ids = v;
    for (uint32_t i = 0; i < n_ids; i++) { /* check them all before answering */
        const uint8_t *id;
        uint32_t len;
        if (mg_mp_read_bin(&v, &id, &len) != MG_OK || len != 16) {
            node_reply_error(c, MG_EINVAL, "mem_get: every id must be a 16-byte bin", 0, NULL);
            return;
        }
    }
    mg_mp_reader vf;
    bool vecs = true;
    if (body_find(c, "vecs", &vf) == 1 && mg_mp_peek(&vf) == MG_MP_BOOL)
        mg_mp_read_bool(&vf, &vecs);
    if (cube_id[0] != '\0' && (!cube_owned(c, ng, cube_id) || !cube_access(c, ng, cube_id, NULL)))
        return;

    /* Found records are packed into `body` as they come; the array header,
     * whose count is known only at the end, goes in front. */
    msgpack_sbuffer body;
    msgpack_packer bpk;
    msgpack_sbuffer_init(&body);
    msgpack_packer_init(&bpk, &body, msgpack_sbuffer_write);
    uint32_t found = 0;
    bool all_slots = any_slot(c);
    char allowed_cube[MG_CUBE_ID_MAX + 1] = "", denied_cube[MG_CUBE_ID_MAX + 1] = "";
    for (uint32_t i = 0; i < n_ids; i++) {
        const uint8_t *id;
        uint32_t len;
        mg_mp_read_bin(&ids, &id, &len);
        const char *cube = cube_id;
        if (cube_id[0] == '\0') {
            if (mg_store_mem_find(ng->store, id, found_in, NULL) != MG_OK)
                continue;
            cube = found_in;
            if (strcmp(cube, denied_cube) == 0)
                continue;
            if (!all_slots && strcmp(cube, allowed_cube) != 0 && !node_group_owns(ng, cube, NULL)) {
                snprintf(denied_cube, sizeof denied_cube, "%s", cube);
                continue; /* a cube left behind by a move: not this group's */
            }
            if (c->user[0] != '\0' && strcmp(cube, allowed_cube) != 0) {
                mg_cube cb = {0};
                bool ok = mg_store_cube_get(ng->store, cube, &cb, NULL) == MG_OK &&
                          mg_cube_allows(&cb, c->user);
                mg_cube_clear(&cb);
                snprintf(ok ? allowed_cube : denied_cube, MG_CUBE_ID_MAX + 1, "%s", cube);
                if (!ok)
                    continue; /* not the caller's: as if absent */
            }
        }
        mg_item item = {0};
        float *vec = NULL;
        uint32_t dim = 0;
        if (mg_store_mem_get(ng->store, cube, id, &item, vecs ? &vec : NULL, &dim, NULL) != MG_OK)
            continue;
        msgpack_pack_map(&bpk, 3);
        mg_mp_pack_cstr(&bpk, "cube_id");
        mg_mp_pack_cstr(&bpk, cube);
        mg_mp_pack_cstr(&bpk, "record");
        pack_record(&bpk, &item);
        mg_mp_pack_cstr(&bpk, "vec");
        if (vec != NULL)
            mg_mp_pack_binn(&bpk, vec, (size_t)dim * sizeof(float));
        else
            msgpack_pack_nil(&bpk);
        mg_item_clear(&item);
        free(vec);
        found++;
    }
    msgpack_sbuffer sb;
    msgpack_packer pk;
    node_reply_begin(c, &sb, &pk);
    msgpack_pack_array(&pk, found);
    if (body.size > 0)
        msgpack_sbuffer_write(&sb, body.data, body.size);
    msgpack_sbuffer_destroy(&body);
    node_reply(c, &sb);
}

/* The stored vectors of a page of MEM_LIST, copied out (a memory deleted
 * or without a vector since the list read: NULL). */
typedef struct list_vecs {
    void **vecs;
    size_t *lens;
} list_vecs;

static void list_vecs_free(list_vecs *lv, size_t n)
{
    for (size_t i = 0; lv->vecs != NULL && i < n; i++)
        free(lv->vecs[i]);
    free(lv->vecs);
    free(lv->lens);
    lv->vecs = NULL;
    lv->lens = NULL;
}

static int copy_vec(void *arg, size_t i, const void *record, size_t record_len, const void *vec_le,
                    uint32_t dim)
{
    list_vecs *lv = arg;
    (void)record, (void)record_len;
    if (vec_le == NULL || dim == 0)
        return MG_OK;
    size_t len = (size_t)dim * sizeof(float);
    if ((lv->vecs[i] = malloc(len)) == NULL)
        return MG_ENOMEM;
    memcpy(lv->vecs[i], vec_le, len);
    lv->lens[i] = len;
    return MG_OK;
}

static int list_read_vecs(mg_store *store, const char *cube_id, const mg_item *items, size_t n,
                          list_vecs *lv, mg_error *err)
{
    mg_store_mem_ref *refs = malloc((n ? n : 1) * sizeof *refs);
    lv->vecs = calloc(n ? n : 1, sizeof *lv->vecs);
    lv->lens = calloc(n ? n : 1, sizeof *lv->lens);
    if (refs == NULL || lv->vecs == NULL || lv->lens == NULL) {
        free(refs);
        list_vecs_free(lv, n);
        return mg_error_set(err, MG_ENOMEM, "out of memory reading vectors");
    }
    for (size_t i = 0; i < n; i++)
        refs[i] = (mg_store_mem_ref){.cube_id = cube_id, .id = items[i].id};
    int rc = mg_store_mem_visit(store, refs, n, true, copy_vec, lv, err);
    free(refs);
    if (rc != MG_OK) {
        list_vecs_free(lv, n);
        if (rc == MG_ENOMEM)
            mg_error_set(err, MG_ENOMEM, "out of memory reading vectors");
    }
    return rc;
}

static void op_mem_list(node_ctx *c, node_group *ng)
{
    char cube_id[MG_CUBE_ID_MAX + 1];
    mg_error err = {0};
    mg_mp_reader v;
    const uint8_t *after = NULL;
    uint64_t limit = MEM_LIST_DEFAULT;
    mg_filter *filter = NULL;
    if (!body_id(c, "cube_id", cube_id, sizeof cube_id, true))
        return;
    if (body_find(c, "after", &v) == 1 && mg_mp_peek(&v) != MG_MP_NIL) {
        uint32_t len;
        if (mg_mp_read_bin(&v, &after, &len) != MG_OK || len != 16) {
            node_reply_error(c, MG_EINVAL, "mem_list: \"after\" must be a 16-byte id", 0, NULL);
            return;
        }
    }
    if (body_find(c, "limit", &v) == 1 && mg_mp_peek(&v) != MG_MP_NIL) {
        if (mg_mp_read_u64(&v, &limit) != MG_OK) {
            node_reply_error(c, MG_EINVAL, "mem_list: \"limit\" must be an integer", 0, NULL);
            return;
        }
        if (limit == 0)
            limit = MEM_LIST_DEFAULT;
        if (limit > MEM_LIST_MAX)
            limit = MEM_LIST_MAX;
    }
    if (body_find(c, "filter", &v) == 1 && mg_mp_peek(&v) != MG_MP_NIL) {
        json_t *json = NULL;
        if (mg_jsonmp_read(&v, &json) != MG_OK) {
            node_reply_error(c, MG_EFILTER, "mem_list: malformed filter", 0, NULL);
            return;
        }
        int rc = mg_filter_compile(json, &filter, &err);
        json_decref(json);
        if (rc != MG_OK) {
            node_reply_err(c, &err);
            return;
        }
    }
    bool vecs = node_body_flag(c->env.body, c->env.body_len, "vecs");
    if (!cube_owned(c, ng, cube_id) || !cube_access(c, ng, cube_id, NULL)) {
        mg_filter_free(filter);
        return;
    }
    mg_item *items = NULL;
    size_t n = 0;
    bool more = false;
    int rc = mg_store_mem_list(ng->store, cube_id, filter, after, (size_t)limit, &items, &n, &more,
                               &err);
    mg_filter_free(filter);
    if (rc != MG_OK) {
        node_reply_err(c, &err);
        return;
    }
    list_vecs lv = {0};
    if (vecs && (rc = list_read_vecs(ng->store, cube_id, items, n, &lv, &err)) != MG_OK) {
        for (size_t i = 0; i < n; i++)
            mg_item_clear(&items[i]);
        free(items);
        node_reply_err(c, &err);
        return;
    }
    msgpack_sbuffer sb;
    msgpack_packer pk;
    node_reply_begin(c, &sb, &pk);
    msgpack_pack_map(&pk, vecs ? 3 : 2);
    mg_mp_pack_cstr(&pk, "records");
    msgpack_pack_array(&pk, (uint32_t)n);
    for (size_t i = 0; i < n; i++) {
        pack_record(&pk, &items[i]);
        mg_item_clear(&items[i]);
    }
    free(items);
    mg_mp_pack_cstr(&pk, "more");
    if (more)
        msgpack_pack_true(&pk);
    else
        msgpack_pack_false(&pk);
    if (vecs) {
        mg_mp_pack_cstr(&pk, "vecs");
        msgpack_pack_array(&pk, (uint32_t)n);
        for (size_t i = 0; i < n; i++) {
            if (lv.vecs[i] != NULL)
                mg_mp_pack_binn(&pk, lv.vecs[i], lv.lens[i]);
            else
                msgpack_pack_nil(&pk);
        }
    }
    list_vecs_free(&lv, n);
    node_reply(c, &sb);
}

static void op_mem_count(node_ctx *c, node_group *ng)
{
    char cube_id[MG_CUBE_ID_MAX + 1];
    mg_error err = {0};
    uint64_t count = 0;
    if (!body_id(c, "cube_id", cube_id, sizeof cube_id, true) || !cube_owned(c, ng, cube_id) ||
        !cube_access(c, ng, cube_id, NULL))
        return;
    if (mg_store_mem_count(ng->store, cube_id, &count, &err) != MG_OK) {
        node_reply_err(c, &err);
        return;
    }
    msgpack_sbuffer sb;
    msgpack_packer pk;
    node_reply_begin(c, &sb, &pk);
    msgpack_pack_uint64(&pk, count);
    node_reply(c, &sb);
}

static void op_user_get(node_ctx *c, node_group *ng)
{
    char user_id[MG_USER_ID_MAX + 1], msg[MG_USER_ID_MAX * 2 + 64];
    mg_error err = {0};
    mg_user user = {0};
    if (!body_id(c, "user_id", user_id, sizeof user_id, true))
        return;
    if (c->user[0] != '\0' && strcmp(c->user, user_id) != 0) {
        snprintf(msg, sizeof msg, "user %s may not read user %s", c->user, user_id);
        node_reply_error(c, MG_EPERM, msg, 0, NULL);
        return;
    }
    int rc = mg_store_user_get(ng->store, user_id, &user, &err);
    if (rc == MG_ENOTFOUND) {
        snprintf(msg, sizeof msg, "user %s not found", user_id);
        node_reply_error(c, MG_ENOTFOUND, msg, 0, NULL);
        return;
    }
    if (rc != MG_OK) {
        node_reply_err(c, &err);
        return;
    }
    msgpack_sbuffer sb;
    msgpack_packer pk;
    node_reply_begin(c, &sb, &pk);
    mg_user_pack(&pk, &user);
    mg_user_clear(&user);
    node_reply(c, &sb);
}

typedef void (*read_fn)(node_ctx *c, node_group *ng);
static const read_fn read_ops[MG_OP_COUNT_] = {
    [MG_OP_CUBE_GET] = op_cube_get,   [MG_OP_CUBE_LIST] = op_cube_list,
    [MG_OP_MEM_GET] = op_mem_get,     [MG_OP_MEM_LIST] = op_mem_list,
    [MG_OP_MEM_COUNT] = op_mem_count, [MG_OP_USER_GET] = op_user_get,
};

void node_read_run(node_ctx *c)
{
    mg_node *n = c->node;
    if (node_expired(c))
        return;
    read_fn fn = read_ops[c->env.op];
    if (fn == NULL) {
        node_reply_error(c, MG_EINTERNAL, "no reader for this op", 0, NULL);
        return;
    }
    bool follower = node_body_flag(c->env.body, c->env.body_len, "follower");
    node_group *ng = node_check_group(c, c->env.group, follower);
    if (ng == NULL)
        return;
    if (!node_stores_enter(n)) {
        node_reply_error(c, MG_ESHUTDOWN, "the node is stopping", 0, NULL);
        return;
    }
    if (ng->store == NULL) { /* closed since the check */
        node_stores_leave(n);
        node_check_group(c, c->env.group, true); /* answers MG_ENOTFOUND */
        return;
    }
    fn(c, ng);
    node_stores_leave(n);
}

void node_status_run(node_ctx *c)
{
    mg_node *n = c->node;
    /* "digest": true walks every hosted store (mg_store_digest): this runs on
     * the worker pool, never on the loop thread. */
    bool digest = node_body_flag(c->env.body, c->env.body_len, "digest");
    bool stores = digest && node_stores_enter(n);
    msgpack_sbuffer sb;
    msgpack_packer pk;
    node_reply_begin(c, &sb, &pk);
    msgpack_pack_map(&pk, 2);
    mg_mp_pack_cstr(&pk, "node");
    msgpack_pack_uint64(&pk, n->cfg.node_id);
    mg_mp_pack_cstr(&pk, "groups");
    size_t slots = node_group_slots(n);
    bool *hosted = calloc(slots ? slots : 1, sizeof *hosted);
    uint32_t n_hosted = 0;
    for (size_t i = 0; hosted != NULL && i < slots; i++)
        n_hosted += hosted[i] = atomic_load(&n->groups[i].hosted);
    msgpack_pack_array(&pk, n_hosted);
    for (size_t i = 0; i < slots; i++) {
        if (hosted == NULL || !hosted[i])
            continue;
        mg_node_group_status st;
        node_group_snapshot(n, &n->groups[i], &st);
        msgpack_pack_map(&pk, digest ? 10 : 9);
        mg_mp_pack_cstr(&pk, "group");
        msgpack_pack_uint64(&pk, st.group_id);
        mg_mp_pack_cstr(&pk, "replica");
        msgpack_pack_uint64(&pk, st.replica_id);
        mg_mp_pack_cstr(&pk, "state");
        mg_mp_pack_cstr(&pk, node_raft_state_name(st.raft_state));
        mg_mp_pack_cstr(&pk, "leader_id");
        msgpack_pack_uint64(&pk, st.leader_id);
        mg_mp_pack_cstr(&pk, "leader");
        mg_mp_pack_cstr(&pk, st.leader);
        mg_mp_pack_cstr(&pk, "term");
        msgpack_pack_uint64(&pk, st.term);
        mg_mp_pack_cstr(&pk, "commit");
        msgpack_pack_uint64(&pk, st.commit_index);
        mg_mp_pack_cstr(&pk, "applied");
        msgpack_pack_uint64(&pk, st.last_applied);
        mg_mp_pack_cstr(&pk, "read_ready");
        if (st.read_ready)
            msgpack_pack_true(&pk);
        else
            msgpack_pack_false(&pk);
        if (digest) {
            /* The digest is taken after the snapshot above: with writes
             * going on it may cover entries past "applied". nil when the
             * store is closed (node stopping) or unreadable. */
            uint64_t d = 0;
            mg_error derr = {0};
            mg_mp_pack_cstr(&pk, "digest");
            if (stores && n->groups[i].store != NULL &&
                mg_store_digest(n->groups[i].store, &d, &derr) == MG_OK)
                msgpack_pack_uint64(&pk, d);
            else
                msgpack_pack_nil(&pk);
        }
    }
    if (stores)
        node_stores_leave(n);
    free(hosted);
    node_reply(c, &sb);
}
