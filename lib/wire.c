#include "wire.h"

#include <string.h>

static const char *const op_names[MG_OP_COUNT_] = {
    [MG_OP_WRITE] = "write",         [MG_OP_CUBE_GET] = "cube_get",
    [MG_OP_CUBE_LIST] = "cube_list", [MG_OP_MEM_GET] = "mem_get",
    [MG_OP_MEM_LIST] = "mem_list",   [MG_OP_MEM_COUNT] = "mem_count",
    [MG_OP_USER_GET] = "user_get",   [MG_OP_SEARCH] = "search",
    [MG_OP_STATUS] = "status",       [MG_OP_STATS] = "stats",
    [MG_OP_META_GET] = "meta_get",   [MG_OP_NODE_INFO] = "node_info",
    [MG_OP_GROUP_OPEN] = "group_open", [MG_OP_GROUP_CLOSE] = "group_close",
    [MG_OP_GROUP_MEMBER] = "group_member", [MG_OP_BARRIER] = "barrier",
};

const char *mg_wire_op_name(int op)
{
    return op > 0 && op < MG_OP_COUNT_ ? op_names[op] : NULL;
}

static int pack_key_u64(msgpack_packer *pk, const char *key, uint64_t v)
{
    return mg_mp_pack_cstr(pk, key) || msgpack_pack_uint64(pk, v) ? MG_ENOMEM : MG_OK;
}

static int pack_key_str(msgpack_packer *pk, const char *key, const char *v)
{
    return mg_mp_pack_cstr(pk, key) || mg_mp_pack_cstr(pk, v ? v : "") ? MG_ENOMEM : MG_OK;
}

int mg_wire_req_begin(msgpack_packer *pk, int op, uint64_t rid, uint64_t epoch, uint64_t group,
                      uint32_t deadline_ms, const char *user)
{
    if (msgpack_pack_map(pk, 8))
        return MG_ENOMEM;
    int rc = pack_key_u64(pk, "v", MG_WIRE_VERSION);
    rc |= pack_key_u64(pk, "op", (uint64_t)op);
    rc |= pack_key_u64(pk, "rid", rid);
    rc |= pack_key_u64(pk, "epoch", epoch);
    rc |= pack_key_u64(pk, "group", group);
    rc |= pack_key_u64(pk, "deadline_ms", deadline_ms);
    rc |= pack_key_str(pk, "user", user);
    rc |= mg_mp_pack_cstr(pk, "body");
    return rc ? MG_ENOMEM : MG_OK;
}

int mg_wire_rep_begin(msgpack_packer *pk, uint64_t rid, int status, const char *msg,
                      uint64_t leader_id, const char *leader, uint64_t epoch)
{
    if (msgpack_pack_map(pk, 8))
        return MG_ENOMEM;
    int rc = pack_key_u64(pk, "v", MG_WIRE_VERSION);
    rc |= pack_key_u64(pk, "rid", rid);
    rc |= pack_key_u64(pk, "status", (uint64_t)status);
    rc |= pack_key_str(pk, "msg", msg);
    rc |= pack_key_u64(pk, "leader_id", leader_id);
    rc |= pack_key_str(pk, "leader", leader);
    rc |= pack_key_u64(pk, "epoch", epoch);
    rc |= mg_mp_pack_cstr(pk, "body");
    return rc ? MG_ENOMEM : MG_OK;
}

static const uint8_t nil_body[1] = {0xc0};

/* Walks the envelope map, handing each key to `field`; the body is captured
 * here. */
typedef int (*field_fn)(void *out, const char *key, uint32_t klen, mg_mp_reader *r);

static int decode_envelope(const void *buf, size_t len, void *out, field_fn field,
                           const uint8_t **body, size_t *body_len, const char *what,
                           mg_error *err)
{
    mg_mp_reader r;
    uint32_t n;
    mg_mp_reader_init(&r, buf, len);
    *body = nil_body;
    *body_len = sizeof nil_body;
    if (mg_mp_read_map(&r, &n))
        return mg_error_set(err, MG_ECORRUPT, "%s is not a msgpack map", what);
    for (uint32_t i = 0; i < n; i++) {
        const char *key;
        uint32_t klen;
        if (mg_mp_read_str(&r, &key, &klen))
            return mg_error_set(err, MG_ECORRUPT, "%s: a key is not a string", what);
        if (klen == 1 && key[0] == 'v') {
            uint64_t v;
            if (mg_mp_read_u64(&r, &v))
                return mg_error_set(err, MG_ECORRUPT, "%s: bad version", what);
            if (v == 0 || v > MG_WIRE_VERSION)
                return mg_error_set(err, MG_EVERSION, "%s version %llu (this node speaks %d)",
                                    what, (unsigned long long)v, MG_WIRE_VERSION);
        } else if (klen == 4 && memcmp(key, "body", 4) == 0) {
            const uint8_t *start = r.pos;
            if (mg_mp_skip(&r))
                return mg_error_set(err, MG_ECORRUPT, "%s: malformed body", what);
            *body = start;
            *body_len = (size_t)(r.pos - start);
        } else {
            int rc = field(out, key, klen, &r);
            if (rc > 0)
                return mg_error_set(err, MG_ECORRUPT, "%s: bad value for \"%.*s\"", what,
                                    (int)klen, key);
            if (rc < 0 && mg_mp_skip(&r))
                return mg_error_set(err, MG_ECORRUPT, "%s: malformed value", what);
        }
    }
    if (mg_mp_remaining(&r) != 0)
        return mg_error_set(err, MG_ECORRUPT, "%s: trailing bytes", what);
    return MG_OK;
}

#define KEY(s) (klen == sizeof(s) - 1 && memcmp(key, s, klen) == 0)

/* Returns 0 when handled, 1 on a bad value, -1 for an unknown key. */
static int req_field(void *p, const char *key, uint32_t klen, mg_mp_reader *r)
{
    mg_wire_req *q = p;
    uint64_t v;
    if (KEY("op")) {
        if (mg_mp_read_u64(r, &v) || v == 0 || v >= MG_OP_COUNT_)
            return 1;
        q->op = (int)v;
    } else if (KEY("rid")) {
        return mg_mp_read_u64(r, &q->rid) ? 1 : 0;
    } else if (KEY("epoch")) {
        return mg_mp_read_u64(r, &q->epoch) ? 1 : 0;
    } else if (KEY("group")) {
        return mg_mp_read_u64(r, &q->group) ? 1 : 0;
    } else if (KEY("deadline_ms")) {
        return mg_mp_read_u32(r, &q->deadline_ms) ? 1 : 0;
    } else if (KEY("user")) {
        return mg_mp_read_str(r, &q->user, &q->user_len) ? 1 : 0;
    } else {
        return -1;
    }
    return 0;
}

static int rep_field(void *p, const char *key, uint32_t klen, mg_mp_reader *r)
{
    mg_wire_rep *q = p;
    uint64_t v;
    if (KEY("rid")) {
        return mg_mp_read_u64(r, &q->rid) ? 1 : 0;
    } else if (KEY("status")) {
        if (mg_mp_read_u64(r, &v) || v >= MG_ERR_COUNT_)
            return 1;
        q->status = (int)v;
    } else if (KEY("msg")) {
        return mg_mp_read_str(r, &q->msg, &q->msg_len) ? 1 : 0;
    } else if (KEY("leader_id")) {
        return mg_mp_read_u64(r, &q->leader_id) ? 1 : 0;
    } else if (KEY("leader")) {
        return mg_mp_read_str(r, &q->leader, &q->leader_len) ? 1 : 0;
    } else if (KEY("epoch")) {
        return mg_mp_read_u64(r, &q->epoch) ? 1 : 0;
    } else {
        return -1;
    }
    return 0;
}

#undef KEY

int mg_wire_req_decode(const void *buf, size_t len, mg_wire_req *out, mg_error *err)
{
    memset(out, 0, sizeof *out);
    out->user = "";
    int rc = decode_envelope(buf, len, out, req_field, &out->body, &out->body_len, "request",
                             err);
    if (rc == MG_OK && out->op == 0)
        rc = mg_error_set(err, MG_ECORRUPT, "request: no op");
    return rc;
}

int mg_wire_rep_decode(const void *buf, size_t len, mg_wire_rep *out, mg_error *err)
{
    memset(out, 0, sizeof *out);
    out->msg = "";
    out->leader = "";
    return decode_envelope(buf, len, out, rep_field, &out->body, &out->body_len, "reply", err);
}
