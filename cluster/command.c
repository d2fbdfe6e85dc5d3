#include "command.h"

#include "../lib/jsonmp.h"
#include "meta.h"
#include "../storage/filter.h"
#include "../storage/store.h"

#include <stdlib.h>
#include <string.h>

static const char *const cmd_names[MG_CMD_KIND_COUNT_] = {
    [MG_CMD_CUBE_CREATE] = "cube_create",
    [MG_CMD_CUBE_DELETE] = "cube_delete",
    [MG_CMD_MEM_PUT] = "mem_put",
    [MG_CMD_MEM_UPDATE] = "mem_update",
    [MG_CMD_MEM_DELETE] = "mem_delete",
    [MG_CMD_MEM_DELETE_WHERE] = "mem_delete_where",
    [MG_CMD_USER_PUT] = "user_put",
    [MG_CMD_USER_DELETE] = "user_delete",
    [MG_CMD_META_SET] = "meta_set",
    [MG_CMD_SLOTS_SET] = "slots_set",
    [MG_CMD_SLOTS_DROP] = "slots_drop",
};

const char *mg_cmd_name(int kind)
{
    if (kind <= 0 || kind >= MG_CMD_KIND_COUNT_)
        return NULL;
    return cmd_names[kind];
}

void mg_cmd_clear(mg_cmd *c)
{
    for (size_t i = 0; i < c->n_items; i++) {
        mg_item_clear(&c->items[i].item);
        free(c->items[i].vec);
    }
    free(c->items);
    free(c->ids);
    if (c->filter != NULL)
        json_decref(c->filter);
    mg_cube_clear(&c->cube);
    mg_user_clear(&c->user);
    free(c->map);
    memset(c, 0, sizeof *c);
}

int mg_cmd_add_item(mg_cmd *c, mg_item *item, float *vec, uint32_t dim, mg_error *err)
{
    if (c->n_items >= MG_CMD_ITEMS_MAX)
        return mg_error_set(err, MG_ETOOBIG, "a command holds at most %d memories",
                            MG_CMD_ITEMS_MAX);
    mg_cmd_item *grown = realloc(c->items, (c->n_items + 1) * sizeof *grown);
    if (grown == NULL)
        return mg_error_set(err, MG_ENOMEM, "out of memory adding a memory to a command");
    c->items = grown;
    mg_cmd_item *slot = &c->items[c->n_items++];
    slot->item = *item;
    memset(item, 0, sizeof *item);
    slot->vec = vec;
    slot->dim = vec != NULL ? dim : 0;
    return MG_OK;
}

/* ---- validation -------------------------------------------------------- */

static int check_cube_id(const char *id, mg_error *err)
{
    if (!mg_cube_id_valid(id, strlen(id)))
        return mg_error_set(err, MG_EINVAL,
                            "cube_id: 1-%d bytes of [A-Za-z0-9_.:@-] expected", MG_CUBE_ID_MAX);
    return MG_OK;
}

static int check_items(const mg_cmd *c, mg_error *err)
{
    if (c->n_items == 0)
        return mg_error_set(err, MG_EINVAL, "%s: no memories", mg_cmd_name(c->kind));
    if (c->kind == MG_CMD_MEM_UPDATE && c->n_items != 1)
        return mg_error_set(err, MG_EINVAL, "mem_update: exactly one memory expected");
    if (c->n_items > MG_CMD_ITEMS_MAX)
        return mg_error_set(err, MG_ETOOBIG, "%s: more than %d memories", mg_cmd_name(c->kind),
                            MG_CMD_ITEMS_MAX);
    uint32_t dim = 0;
    for (size_t i = 0; i < c->n_items; i++) {
        const mg_cmd_item *ci = &c->items[i];
        int rc = mg_item_validate(&ci->item, err);
        if (rc == MG_OK && ci->vec != NULL) {
            rc = mg_vector_check(ci->vec, ci->dim, err);
            if (rc == MG_OK && dim != 0 && ci->dim != dim)
                rc = mg_error_set(err, MG_EDIM, "vector of dimension %u, the others have %u",
                                  ci->dim, dim);
            dim = ci->dim;
        }
        if (rc != MG_OK)
            return mg_error_wrap(err, rc, "memories[%zu]", i);
    }
    return MG_OK;
}

/* meta_set: the map decodes (and is checked) and its epoch is expect + 1. */
static int check_map(const mg_cmd *c, mg_error *err)
{
    if (c->map == NULL || c->map_len == 0)
        return mg_error_set(err, MG_EINVAL, "meta_set: no map");
    if (c->expect == UINT64_MAX)
        return mg_error_set(err, MG_EINVAL, "meta_set: expect %llu has no next epoch",
                            (unsigned long long)c->expect);
    mg_cmap *m = malloc(sizeof *m);
    if (m == NULL)
        return mg_error_set(err, MG_ENOMEM, "out of memory checking a cluster map");
    int rc = mg_cmap_decode(c->map, c->map_len, m, err);
    if (rc == MG_ENOMEM) {
        free(m);
        return rc;
    }
    if (rc != MG_OK) {
        free(m);
        return mg_error_wrap(err, MG_EINVAL, "meta_set: map");
    }
    uint64_t epoch = m->epoch;
    free(m);
    if (epoch != c->expect + 1)
        return mg_error_set(err, MG_EINVAL, "meta_set: map epoch %llu after expected epoch %llu",
                            (unsigned long long)epoch, (unsigned long long)c->expect);
    return MG_OK;
}

int mg_cmd_validate(const mg_cmd *c, mg_error *err)
{
    int rc;
    switch (c->kind) {
    case MG_CMD_CUBE_CREATE:
        return mg_cube_validate(&c->cube, err);
    case MG_CMD_CUBE_DELETE:
        return check_cube_id(c->cube_id, err);
    case MG_CMD_MEM_PUT:
    case MG_CMD_MEM_UPDATE:
        if ((rc = check_cube_id(c->cube_id, err)) != MG_OK)
            return rc;
        return check_items(c, err);
    case MG_CMD_MEM_DELETE:
        if ((rc = check_cube_id(c->cube_id, err)) != MG_OK)
            return rc;
        if (c->n_ids == 0)
            return mg_error_set(err, MG_EINVAL, "mem_delete: no ids");
        if (c->n_ids > MG_CMD_ITEMS_MAX)
            return mg_error_set(err, MG_ETOOBIG, "mem_delete: more than %d ids",
                                MG_CMD_ITEMS_MAX);
        return MG_OK;
    case MG_CMD_MEM_DELETE_WHERE: {
        if ((rc = check_cube_id(c->cube_id, err)) != MG_OK)
            return rc;
        if (c->filter == NULL || !json_is_object(c->filter))
            return mg_error_set(err, MG_EFILTER, "mem_delete_where: filter must be an object");
        mg_filter *f = NULL;
        if ((rc = mg_filter_compile(c->filter, &f, err)) != MG_OK)
            return rc;
        mg_filter_free(f);
        return MG_OK;
    }
    case MG_CMD_USER_PUT:
        return mg_user_validate(&c->user, err);
    case MG_CMD_USER_DELETE:
        if (!mg_user_id_valid(c->user_id, strlen(c->user_id)))
            return mg_error_set(err, MG_EINVAL, "user_id: not a valid user id");
        return MG_OK;
    case MG_CMD_META_SET:
        return check_map(c, err);
    case MG_CMD_SLOTS_SET:
    case MG_CMD_SLOTS_DROP:
        return MG_OK; /* any set of slots is a valid set */
    default:
        return mg_error_set(err, MG_EINVAL, "unknown command kind %d", c->kind);
    }
}

/* ---- encoding ---------------------------------------------------------- */

static int pack_key(msgpack_packer *pk, const char *key)
{
    return mg_mp_pack_cstr(pk, key);
}

static int pack_items(msgpack_packer *pk, const mg_cmd *c)
{
    int rc = pack_key(pk, "items") | msgpack_pack_array(pk, c->n_items);
    for (size_t i = 0; i < c->n_items && rc == 0; i++)
        rc |= mg_item_pack(pk, &c->items[i].item);
    rc |= pack_key(pk, "vecs") | msgpack_pack_array(pk, c->n_items);
    for (size_t i = 0; i < c->n_items && rc == 0; i++) {
        const mg_cmd_item *ci = &c->items[i];
        if (ci->vec == NULL)
            rc |= msgpack_pack_nil(pk);
        else
            rc |= mg_mp_pack_binn(pk, ci->vec, (size_t)ci->dim * sizeof(float));
    }
    return rc;
}

int mg_cmd_pack(msgpack_packer *pk, const mg_cmd *c)
{
    const char *name = mg_cmd_name(c->kind);
    if (name == NULL)
        return MG_EINVAL;
    int rc = 0;
    switch (c->kind) {
    case MG_CMD_CUBE_CREATE:
        rc = msgpack_pack_map(pk, 2) | pack_key(pk, "op") | pack_key(pk, name);
        rc |= pack_key(pk, "cube") | mg_cube_pack(pk, &c->cube);
        break;
    case MG_CMD_CUBE_DELETE:
        rc = msgpack_pack_map(pk, 2) | pack_key(pk, "op") | pack_key(pk, name);
        rc |= pack_key(pk, "cube_id") | mg_mp_pack_cstr(pk, c->cube_id);
        break;
    case MG_CMD_MEM_PUT:
    case MG_CMD_MEM_UPDATE:
        rc = msgpack_pack_map(pk, 4) | pack_key(pk, "op") | pack_key(pk, name);
        rc |= pack_key(pk, "cube_id") | mg_mp_pack_cstr(pk, c->cube_id);
        rc |= pack_items(pk, c);
        break;
    case MG_CMD_MEM_DELETE:
        rc = msgpack_pack_map(pk, 3) | pack_key(pk, "op") | pack_key(pk, name);
        rc |= pack_key(pk, "cube_id") | mg_mp_pack_cstr(pk, c->cube_id);
        rc |= pack_key(pk, "ids") | msgpack_pack_array(pk, c->n_ids);
        for (size_t i = 0; i < c->n_ids && rc == 0; i++)
            rc |= mg_mp_pack_binn(pk, c->ids[i], 16);
        break;
    case MG_CMD_MEM_DELETE_WHERE:
        rc = msgpack_pack_map(pk, 3) | pack_key(pk, "op") | pack_key(pk, name);
        rc |= pack_key(pk, "cube_id") | mg_mp_pack_cstr(pk, c->cube_id);
        rc |= pack_key(pk, "filter");
        if (rc == 0)
            rc = mg_jsonmp_pack(pk, c->filter);
        break;
    case MG_CMD_USER_PUT:
        rc = msgpack_pack_map(pk, 2) | pack_key(pk, "op") | pack_key(pk, name);
        rc |= pack_key(pk, "user") | mg_user_pack(pk, &c->user);
        break;
    case MG_CMD_USER_DELETE:
        rc = msgpack_pack_map(pk, 2) | pack_key(pk, "op") | pack_key(pk, name);
        rc |= pack_key(pk, "user_id") | mg_mp_pack_cstr(pk, c->user_id);
        break;
    case MG_CMD_META_SET:
        rc = msgpack_pack_map(pk, 3) | pack_key(pk, "op") | pack_key(pk, name);
        rc |= pack_key(pk, "expect") | msgpack_pack_uint64(pk, c->expect);
        rc |= pack_key(pk, "map") | mg_mp_pack_binn(pk, c->map, c->map != NULL ? c->map_len : 0);
        break;
    case MG_CMD_SLOTS_SET:
    case MG_CMD_SLOTS_DROP: {
        uint8_t le[512];
        mg_slotset_to_le(&c->slots, le);
        bool set = c->kind == MG_CMD_SLOTS_SET;
        rc = msgpack_pack_map(pk, set ? 3 : 2) | pack_key(pk, "op") | pack_key(pk, name);
        if (set)
            rc |= pack_key(pk, "epoch") | msgpack_pack_uint64(pk, c->epoch);
        rc |= pack_key(pk, "slots") | mg_mp_pack_binn(pk, le, sizeof le);
        break;
    }
    }
    return rc == 0 ? MG_OK : (rc == MG_EINVAL ? MG_EINVAL : MG_ENOMEM);
}

int mg_cmd_encode(const mg_cmd *c, void **buf, size_t *len, mg_error *err)
{
    int rc = mg_cmd_validate(c, err);
    if (rc != MG_OK)
        return rc;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    rc = mg_cmd_pack(&pk, c);
    if (rc != MG_OK) {
        msgpack_sbuffer_destroy(&sb);
        return mg_error_set(err, rc, "encoding %s failed", mg_cmd_name(c->kind));
    }
    if (sb.size > MG_CMD_BYTES_MAX) {
        size_t size = sb.size;
        msgpack_sbuffer_destroy(&sb);
        return mg_error_set(err, MG_ETOOBIG, "%s encodes to %zu bytes (at most %u)",
                            mg_cmd_name(c->kind), size, MG_CMD_BYTES_MAX);
    }
    *len = sb.size;
    *buf = msgpack_sbuffer_release(&sb);
    return *buf != NULL ? MG_OK : mg_error_set(err, MG_EINTERNAL, "empty command encoding");
}

/* ---- decoding ---------------------------------------------------------- */

/* Bounds of the next element: [*start, r->pos after the call). */
static int read_element(mg_mp_reader *r, const uint8_t **start, size_t *len)
{
    *start = r->pos;
    if (mg_mp_skip(r) != MG_OK)
        return MG_ECORRUPT;
    *len = (size_t)(r->pos - *start);
    return MG_OK;
}

static int corrupt(mg_error *err, const char *what)
{
    return mg_error_set(err, MG_ECORRUPT, "command: malformed %s", what);
}

static int read_items(mg_mp_reader *r, mg_cmd *c, mg_error *err)
{
    uint32_t n;
    if (mg_mp_read_array(r, &n) != MG_OK || n > MG_CMD_ITEMS_MAX)
        return corrupt(err, "items");
    if (c->items != NULL) {
        /* "vecs" came first and sized the array. */
        if (n != c->n_items || (n > 0 && c->items[0].item.metadata != NULL))
            return corrupt(err, "items (given twice or count differs from vecs)");
    } else {
        c->items = calloc(n ? n : 1, sizeof *c->items);
        if (c->items == NULL)
            return mg_error_set(err, MG_ENOMEM, "out of memory decoding a command");
        c->n_items = n;
    }
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *start;
        size_t len;
        if (read_element(r, &start, &len) != MG_OK)
            return corrupt(err, "item");
        int rc = mg_item_decode(start, len, &c->items[i].item, err);
        if (rc != MG_OK)
            return mg_error_wrap(err, rc, "command items[%u]", i);
    }
    return MG_OK;
}

static int read_vecs(mg_mp_reader *r, mg_cmd *c, mg_error *err)
{
    uint32_t n;
    if (mg_mp_read_array(r, &n) != MG_OK)
        return corrupt(err, "vecs");
    /* "vecs" may come before "items": keep them until both are known. */
    if (c->items == NULL) {
        if (n > MG_CMD_ITEMS_MAX)
            return corrupt(err, "vecs");
        c->items = calloc(n ? n : 1, sizeof *c->items);
        if (c->items == NULL)
            return mg_error_set(err, MG_ENOMEM, "out of memory decoding a command");
        c->n_items = n;
    } else if (n != c->n_items) {
        return corrupt(err, "vecs (count differs from items)");
    }
    for (uint32_t i = 0; i < n; i++) {
        if (mg_mp_peek(r) == MG_MP_NIL) {
            (void)mg_mp_read_nil(r);
            continue;
        }
        const uint8_t *b;
        uint32_t blen;
        if (mg_mp_read_bin(r, &b, &blen) != MG_OK || blen == 0 || blen % sizeof(float) != 0 ||
            blen / sizeof(float) > MG_DIM_MAX)
            return corrupt(err, "vector");
        float *v = malloc(blen);
        if (v == NULL)
            return mg_error_set(err, MG_ENOMEM, "out of memory decoding a vector");
        memcpy(v, b, blen); /* the input is not aligned */
        free(c->items[i].vec);
        c->items[i].vec = v;
        c->items[i].dim = (uint32_t)(blen / sizeof(float));
    }
    return MG_OK;
}

static int read_ids(mg_mp_reader *r, mg_cmd *c, mg_error *err)
{
    uint32_t n;
    if (mg_mp_read_array(r, &n) != MG_OK || n > MG_CMD_ITEMS_MAX || c->ids != NULL)
        return corrupt(err, "ids");
    c->ids = malloc((n ? n : 1) * sizeof *c->ids);
    if (c->ids == NULL)
        return mg_error_set(err, MG_ENOMEM, "out of memory decoding a command");
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *b;
        uint32_t blen;
        if (mg_mp_read_bin(r, &b, &blen) != MG_OK || blen != 16)
            return corrupt(err, "id");
        memcpy(c->ids[i], b, 16);
        c->n_ids = i + 1;
    }
    return MG_OK;
}

static int read_op(mg_mp_reader *r, int *kind, mg_error *err)
{
    const char *s;
    uint32_t len;
    if (mg_mp_read_str(r, &s, &len) != MG_OK)
        return corrupt(err, "op");
    for (int k = 1; k < MG_CMD_KIND_COUNT_; k++) {
        if (strlen(cmd_names[k]) == len && memcmp(cmd_names[k], s, len) == 0) {
            *kind = k;
            return MG_OK;
        }
    }
    return mg_error_set(err, MG_EVERSION, "command op \"%.*s\" is unknown to this build",
                        (int)(len > 64 ? 64 : len), s);
}

/* Fields whose zero value is meaningful, so their presence is noted. */
enum { SEEN_SLOTS = 1, SEEN_MAP = 2 };

static int read_field(mg_mp_reader *r, mg_cmd *c, unsigned *seen, mg_error *err)
{
    const char *key;
    uint32_t klen;
    const uint8_t *start;
    size_t len;
    if (mg_mp_read_str(r, &key, &klen) != MG_OK)
        return corrupt(err, "key");
#define KEY_IS(lit) (klen == sizeof(lit) - 1 && memcmp(key, lit, klen) == 0)
    if (KEY_IS("op"))
        return read_op(r, &c->kind, err);
    if (KEY_IS("cube_id"))
        return mg_mp_read_strcpy(r, c->cube_id, sizeof c->cube_id) == MG_OK
                   ? MG_OK
                   : corrupt(err, "cube_id");
    if (KEY_IS("user_id"))
        return mg_mp_read_strcpy(r, c->user_id, sizeof c->user_id) == MG_OK
                   ? MG_OK
                   : corrupt(err, "user_id");
    if (KEY_IS("items"))
        return read_items(r, c, err);
    if (KEY_IS("vecs"))
        return read_vecs(r, c, err);
    if (KEY_IS("ids"))
        return read_ids(r, c, err);
    if (KEY_IS("filter")) {
        if (c->filter != NULL)
            return corrupt(err, "filter (given twice)");
        return mg_jsonmp_read(r, &c->filter) == MG_OK ? MG_OK : corrupt(err, "filter");
    }
    if (KEY_IS("cube")) {
        if (read_element(r, &start, &len) != MG_OK)
            return corrupt(err, "cube");
        mg_cube_clear(&c->cube);
        return mg_cube_decode(start, len, &c->cube, err);
    }
    if (KEY_IS("user")) {
        if (read_element(r, &start, &len) != MG_OK)
            return corrupt(err, "user");
        mg_user_clear(&c->user);
        return mg_user_decode(start, len, &c->user, err);
    }
    if (KEY_IS("expect"))
        return mg_mp_read_u64(r, &c->expect) == MG_OK ? MG_OK : corrupt(err, "expect");
    if (KEY_IS("epoch"))
        return mg_mp_read_u64(r, &c->epoch) == MG_OK ? MG_OK : corrupt(err, "epoch");
    if (KEY_IS("map")) {
        const uint8_t *b;
        uint32_t blen;
        if ((*seen & SEEN_MAP) || mg_mp_read_bin(r, &b, &blen) != MG_OK)
            return corrupt(err, "map");
        c->map = malloc(blen ? blen : 1);
        if (c->map == NULL)
            return mg_error_set(err, MG_ENOMEM, "out of memory decoding a command");
        memcpy(c->map, b, blen);
        c->map_len = blen;
        *seen |= SEEN_MAP;
        return MG_OK;
    }
    if (KEY_IS("slots")) {
        const uint8_t *b;
        uint32_t blen;
        if (mg_mp_read_bin(r, &b, &blen) != MG_OK || blen != 512)
            return corrupt(err, "slots");
        mg_slotset_from_le(b, &c->slots);
        *seen |= SEEN_SLOTS;
        return MG_OK;
    }
#undef KEY_IS
    return mg_mp_skip(r) == MG_OK ? MG_OK : corrupt(err, "value");
}

/* The fields each kind needs, checked once the whole map has been read. */
static int check_decoded(const mg_cmd *c, unsigned seen, mg_error *err)
{
    switch (c->kind) {
    case MG_CMD_CUBE_CREATE:
        return c->cube.cube_id[0] ? MG_OK : corrupt(err, "cube_create (no cube)");
    case MG_CMD_CUBE_DELETE:
        return c->cube_id[0] ? MG_OK : corrupt(err, "cube_delete (no cube_id)");
    case MG_CMD_MEM_PUT:
    case MG_CMD_MEM_UPDATE:
        if (!c->cube_id[0] || c->n_items == 0)
            return corrupt(err, "mem_put (no cube_id or items)");
        for (size_t i = 0; i < c->n_items; i++)
            if (c->items[i].item.metadata == NULL) /* vecs without items */
                return corrupt(err, "mem_put (vecs without items)");
        return MG_OK;
    case MG_CMD_MEM_DELETE:
        return c->cube_id[0] && c->ids != NULL ? MG_OK : corrupt(err, "mem_delete");
    case MG_CMD_MEM_DELETE_WHERE:
        return c->cube_id[0] && c->filter != NULL ? MG_OK : corrupt(err, "mem_delete_where");
    case MG_CMD_USER_PUT:
        return c->user.user_id[0] ? MG_OK : corrupt(err, "user_put (no user)");
    case MG_CMD_USER_DELETE:
        return c->user_id[0] ? MG_OK : corrupt(err, "user_delete (no user_id)");
    case MG_CMD_META_SET:
        return (seen & SEEN_MAP) ? MG_OK : corrupt(err, "meta_set (no map)");
    case MG_CMD_SLOTS_SET:
    case MG_CMD_SLOTS_DROP:
        return (seen & SEEN_SLOTS) ? MG_OK : corrupt(err, "slots command (no slots)");
    default:
        return corrupt(err, "command (no op)");
    }
}

int mg_cmd_decode(const void *buf, size_t len, mg_cmd *out, mg_error *err)
{
    mg_mp_reader r;
    uint32_t n;
    unsigned seen = 0;
    int rc;
    memset(out, 0, sizeof *out);
    mg_mp_reader_init(&r, buf, len);
    if (mg_mp_read_map(&r, &n) != MG_OK) {
        rc = corrupt(err, "command (not a map)");
        goto err_clear;
    }
    for (uint32_t i = 0; i < n; i++)
        if ((rc = read_field(&r, out, &seen, err)) != MG_OK)
            goto err_clear;
    if (mg_mp_remaining(&r) != 0) {
        rc = corrupt(err, "command (trailing bytes)");
        goto err_clear;
    }
    if ((rc = check_decoded(out, seen, err)) != MG_OK)
        goto err_clear;
    return MG_OK;

err_clear:
    mg_cmd_clear(out);
    return rc;
}

/* ---- reading puts in place --------------------------------------------- */

void mg_cmd_puts_clear(mg_cmd_puts *p)
{
    free(p->recs);
    memset(p, 0, sizeof *p);
}

/* "items" read in place: read_items' checks, records checked not decoded. */
static int read_item_recs(mg_mp_reader *r, mg_cmd_puts *p, bool *have_items, mg_error *err)
{
    uint32_t n;
    if (mg_mp_read_array(r, &n) != MG_OK || n > MG_CMD_ITEMS_MAX)
        return corrupt(err, "items");
    if (p->recs != NULL) {
        if (n != p->n || (n > 0 && *have_items))
            return corrupt(err, "items (given twice or count differs from vecs)");
    } else {
        p->recs = calloc(n ? n : 1, sizeof *p->recs);
        if (p->recs == NULL)
            return mg_error_set(err, MG_ENOMEM, "out of memory decoding a command");
        p->n = n;
    }
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *start;
        size_t len;
        if (read_element(r, &start, &len) != MG_OK)
            return corrupt(err, "item");
        int rc = mg_store_record_check(start, len, NULL, err);
        if (rc != MG_OK)
            return mg_error_wrap(err, rc, "command items[%u]", i);
        p->recs[i].record = start;
        p->recs[i].record_len = len;
    }
    *have_items = n > 0;
    return MG_OK;
}

/* "vecs" read in place: read_vecs' checks, vectors left where they are. */
static int read_vec_recs(mg_mp_reader *r, mg_cmd_puts *p, mg_error *err)
{
    uint32_t n;
    if (mg_mp_read_array(r, &n) != MG_OK)
        return corrupt(err, "vecs");
    if (p->recs == NULL) {
        if (n > MG_CMD_ITEMS_MAX)
            return corrupt(err, "vecs");
        p->recs = calloc(n ? n : 1, sizeof *p->recs);
        if (p->recs == NULL)
            return mg_error_set(err, MG_ENOMEM, "out of memory decoding a command");
        p->n = n;
    } else if (n != p->n) {
        return corrupt(err, "vecs (count differs from items)");
    }
    for (uint32_t i = 0; i < n; i++) {
        if (mg_mp_peek(r) == MG_MP_NIL) {
            (void)mg_mp_read_nil(r);
            continue; /* as read_vecs: an earlier vecs' vector stays */
        }
        const uint8_t *b;
        uint32_t blen;
        if (mg_mp_read_bin(r, &b, &blen) != MG_OK || blen == 0 || blen % sizeof(float) != 0 ||
            blen / sizeof(float) > MG_DIM_MAX)
            return corrupt(err, "vector");
        p->recs[i].vec = b;
        p->recs[i].dim = (uint32_t)(blen / sizeof(float));
    }
    return MG_OK;
}

int mg_cmd_read_puts(const void *buf, size_t len, mg_cmd_puts *out, mg_error *err)
{
    mg_mp_reader r;
    uint32_t n;
    int rc;
    bool have_items = false;
    unsigned seen = 0;
    /* Every other field goes through mg_cmd_decode's own reader, so that it
     * is accepted or refused the same way. */
    mg_cmd other = {0};
    memset(out, 0, sizeof *out);
    mg_mp_reader_init(&r, buf, len);
    if (mg_mp_read_map(&r, &n) != MG_OK) {
        rc = corrupt(err, "command (not a map)");
        goto err_clear;
    }
    for (uint32_t i = 0; i < n; i++) {
        if (mg_mp_peek_str_eq(&r, "items")) {
            (void)mg_mp_skip(&r);
            rc = read_item_recs(&r, out, &have_items, err);
        } else if (mg_mp_peek_str_eq(&r, "vecs")) {
            (void)mg_mp_skip(&r);
            rc = read_vec_recs(&r, out, err);
        } else {
            rc = read_field(&r, &other, &seen, err);
        }
        if (rc != MG_OK)
            goto err_clear;
    }
    if (mg_mp_remaining(&r) != 0) {
        rc = corrupt(err, "command (trailing bytes)");
        goto err_clear;
    }
    if (other.kind != MG_CMD_MEM_PUT && other.kind != MG_CMD_MEM_UPDATE) {
        rc = mg_error_set(err, MG_EINVAL, "command is not a mem_put or mem_update");
        goto err_clear;
    }
    /* check_decoded for puts */
    if (!other.cube_id[0] || out->n == 0) {
        rc = corrupt(err, "mem_put (no cube_id or items)");
        goto err_clear;
    }
    if (!have_items) {
        rc = corrupt(err, "mem_put (vecs without items)");
        goto err_clear;
    }
    out->kind = other.kind;
    memcpy(out->cube_id, other.cube_id, sizeof out->cube_id);
    mg_cmd_clear(&other);
    return MG_OK;

err_clear:
    mg_cmd_clear(&other);
    mg_cmd_puts_clear(out);
    return rc;
}

/* ---- entries ----------------------------------------------------------- */

size_t mg_entry_header(uint8_t *hdr, uint32_t n_cmds)
{
    size_t i = 0;
    hdr[i++] = 0x82; /* fixmap, 2 entries */
    hdr[i++] = 0xa1; /* "v" */
    hdr[i++] = 'v';
    hdr[i++] = MG_ENTRY_VERSION; /* positive fixint */
    hdr[i++] = 0xa4;             /* "cmds" */
    memcpy(hdr + i, "cmds", 4);
    i += 4;
    hdr[i++] = 0xdd; /* array32, big-endian count */
    hdr[i++] = (uint8_t)(n_cmds >> 24);
    hdr[i++] = (uint8_t)(n_cmds >> 16);
    hdr[i++] = (uint8_t)(n_cmds >> 8);
    hdr[i++] = (uint8_t)n_cmds;
    return i;
}

int mg_entry_open(const void *buf, size_t len, mg_mp_reader *cmds, uint32_t *n_cmds,
                  mg_error *err)
{
    mg_mp_reader r;
    uint32_t n;
    bool have_v = false, have_cmds = false;
    mg_mp_reader_init(&r, buf, len);
    if (mg_mp_read_map(&r, &n) != MG_OK)
        return mg_error_set(err, MG_ECORRUPT, "entry: not a map");
    for (uint32_t i = 0; i < n; i++) {
        if (mg_mp_peek_str_eq(&r, "v")) {
            uint32_t v;
            (void)mg_mp_skip(&r);
            if (mg_mp_read_u32(&r, &v) != MG_OK)
                return mg_error_set(err, MG_ECORRUPT, "entry: version is not an integer");
            if (v == 0 || v > MG_ENTRY_VERSION)
                return mg_error_set(err, MG_EVERSION,
                                    "entry version %u (this build reads up to %u)", v,
                                    MG_ENTRY_VERSION);
            have_v = true;
        } else if (mg_mp_peek_str_eq(&r, "cmds")) {
            (void)mg_mp_skip(&r);
            mg_mp_reader at = r;
            if (mg_mp_read_array(&at, n_cmds) != MG_OK || mg_mp_skip(&r) != MG_OK)
                return mg_error_set(err, MG_ECORRUPT, "entry: malformed cmds");
            /* The commands span [at.pos, r.pos). */
            cmds->pos = at.pos;
            cmds->end = r.pos;
            have_cmds = true;
        } else if (mg_mp_skip(&r) != MG_OK || mg_mp_skip(&r) != MG_OK) {
            return mg_error_set(err, MG_ECORRUPT, "entry: malformed field");
        }
    }
    if (!have_v || !have_cmds)
        return mg_error_set(err, MG_ECORRUPT, "entry: %s missing", have_v ? "cmds" : "v");
    return MG_OK;
}
