/*
 * SEARCH: a survey to every node (or a request to one). The body is decoded
 * on the nng thread; a node answers only for the groups "assign" gives it
 * (and stays silent on a survey that gives it none). A strong search first
 * appends a Raft barrier to each of those groups on the loop; the scan and
 * the record fetches run on a worker, or, for a small search, right on the
 * nng thread that received it (search_is_small). The hits' records travel
 * as stored (never decoded here) and their vectors, when asked for, come
 * from the index, copied by the scan itself.
 *
 * Per-cube problems (no such cube, not the caller's, bad filter, other
 * dimension) skip the cube and are reported in "cube_errors"; per-group
 * problems (not hosted, not the leader, barrier failed) in "missing". Nothing
 * the caller may not read is ever returned.
 */
#include "node_internal.h"

#include "../lib/clock.h"
#include "../lib/jsonmp.h"
#include "../lib/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SEARCH_K_MAX 10000
#define SEARCH_CUBES_MAX 4096
#define SEARCH_ASSIGN_MAX 4096
#define SEARCH_VECS_FLOATS (4u << 20)

typedef struct search_cube {
    char cube_id[MG_CUBE_ID_MAX + 1];
    uint64_t group;
    const uint8_t *filter; /* msgpack map in the request, or NULL */
    size_t filter_len;
} search_cube;

typedef struct search_group {
    uint64_t group_id;
    node_group *ng; /* NULL when not hosted */
    int status;     /* MG_OK, or why it is not answered */
    char msg[MG_ERRMSG_MAX + 64];
    uint64_t leader_id;
    char leader[MG_ADDRESS_MAX];
    mg_group_barrier_req barrier;
    node_ctx *c;
} search_group;

typedef struct cube_error {
    uint32_t cube;
    int status;
    char msg[MG_CUBE_ID_MAX + MG_USER_ID_MAX + 64];
} cube_error;

struct search_req {
    float *vec;
    uint32_t dim;
    uint32_t k;
    int scan;
    bool strong, vecs, follower;
    search_cube *cubes;
    uint32_t n_cubes;
    search_group *groups; /* the groups assigned to this node */
    size_t n_groups;
    size_t barriers_pending;
    cube_error *errors;
    size_t n_errors;
};

/* A hit with where to fetch it. */
typedef struct node_hit {
    float score;
    uint32_t cube; /* index in the request's cubes */
    uint8_t id[16];
    node_group *ng;
    const float *vec; /* its vector from the index (normalized), or NULL: read it from
                       * the store */
} node_hit;

void node_search_clear(node_ctx *c)
{
    search_req *s = c->search;
    if (s == NULL)
        return;
    free(s->vec);
    free(s->cubes);
    free(s->groups);
    free(s->errors);
    free(s);
    c->search = NULL;
}

/* ---- decoding (nng thread) ---------------------------------------------- */

#define KEY(s) (klen == sizeof(s) - 1 && memcmp(key, s, klen) == 0)

static int decode_cube(mg_mp_reader *r, search_cube *sc, mg_error *err, uint32_t i)
{
    uint32_t n;
    bool have_id = false, have_group = false;
    if (mg_mp_read_map(r, &n) != MG_OK)
        return mg_error_set(err, MG_ECORRUPT, "search: cubes[%u] is not a map", i);
    for (uint32_t j = 0; j < n; j++) {
        const char *key;
        uint32_t klen;
        if (mg_mp_read_str(r, &key, &klen) != MG_OK)
            return mg_error_set(err, MG_ECORRUPT, "search: cubes[%u]: bad key", i);
        if (KEY("cube_id")) {
            if (mg_mp_read_strcpy(r, sc->cube_id, sizeof sc->cube_id) != MG_OK ||
                !mg_cube_id_valid(sc->cube_id, strlen(sc->cube_id)))
                return mg_error_set(err, MG_EINVAL,
                                    "search: cubes[%u].cube_id is not a "
                                    "valid cube id",
                                    i);
            have_id = true;
        } else if (KEY("group")) {
            if (mg_mp_read_u64(r, &sc->group) != MG_OK)
                return mg_error_set(err, MG_EINVAL, "search: cubes[%u].group", i);
            have_group = true;
        } else if (KEY("filter")) {
            const uint8_t *start = r->pos;
            if (mg_mp_peek(r) == MG_MP_NIL) {
                mg_mp_read_nil(r);
            } else if (mg_mp_peek(r) != MG_MP_MAP || mg_mp_skip(r) != MG_OK) {
                return mg_error_set(err, MG_EFILTER, "search: cubes[%u].filter must be a map", i);
            } else {
                sc->filter = start;
                sc->filter_len = (size_t)(r->pos - start);
            }
        } else if (mg_mp_skip(r) != MG_OK) {
            return mg_error_set(err, MG_ECORRUPT, "search: cubes[%u]: malformed value", i);
        }
    }
    if (!have_id || !have_group)
        return mg_error_set(err, MG_EINVAL, "search: cubes[%u] needs cube_id and group", i);
    return MG_OK;
}

static int decode_cubes(mg_mp_reader *r, search_req *s, mg_error *err)
{
    uint32_t n;
    if (mg_mp_read_array(r, &n) != MG_OK)
        return mg_error_set(err, MG_ECORRUPT, "search: \"cubes\" must be a list");
    if (n > SEARCH_CUBES_MAX)
        return mg_error_set(err, MG_ETOOBIG, "search: at most %d cubes", SEARCH_CUBES_MAX);
    free(s->cubes);
    s->cubes = calloc(n ? n : 1, sizeof *s->cubes);
    if (s->cubes == NULL)
        return mg_error_set(err, MG_ENOMEM, "out of memory decoding a search");
    s->n_cubes = n;
    for (uint32_t i = 0; i < n; i++) {
        int rc = decode_cube(r, &s->cubes[i], err, i);
        if (rc != MG_OK)
            return rc;
    }
    return MG_OK;
}

/* Keeps the distinct groups assigned to node `self`. */
static int decode_assign(mg_mp_reader *r, search_req *s, uint64_t self, mg_error *err)
{
    uint32_t n;
    if (mg_mp_read_array(r, &n) != MG_OK)
        return mg_error_set(err, MG_ECORRUPT, "search: \"assign\" must be a list");
    if (n > SEARCH_ASSIGN_MAX)
        return mg_error_set(err, MG_ETOOBIG, "search: at most %d assignments", SEARCH_ASSIGN_MAX);
    free(s->groups);
    s->n_groups = 0;
    s->groups = calloc(n ? n : 1, sizeof *s->groups);
    if (s->groups == NULL)
        return mg_error_set(err, MG_ENOMEM, "out of memory decoding a search");
    for (uint32_t i = 0; i < n; i++) {
        uint32_t m;
        uint64_t group = 0, node = 0;
        bool have_group = false, have_node = false;
        if (mg_mp_read_map(r, &m) != MG_OK)
            return mg_error_set(err, MG_ECORRUPT, "search: assign[%u] is not a map", i);
        for (uint32_t j = 0; j < m; j++) {
            const char *key;
            uint32_t klen;
            if (mg_mp_read_str(r, &key, &klen) != MG_OK)
                return mg_error_set(err, MG_ECORRUPT, "search: assign[%u]: bad key", i);
            if (KEY("group")) {
                if (mg_mp_read_u64(r, &group) != MG_OK)
                    return mg_error_set(err, MG_EINVAL, "search: assign[%u].group", i);
                have_group = true;
            } else if (KEY("node")) {
                if (mg_mp_read_u64(r, &node) != MG_OK)
                    return mg_error_set(err, MG_EINVAL, "search: assign[%u].node", i);
                have_node = true;
            } else if (mg_mp_skip(r) != MG_OK) {
                return mg_error_set(err, MG_ECORRUPT, "search: assign[%u]: malformed", i);
            }
        }
        if (!have_group || !have_node)
            return mg_error_set(err, MG_EINVAL, "search: assign[%u] needs group and node", i);
        if (node != self)
            continue;
        bool dup = false;
        for (size_t j = 0; j < s->n_groups && !dup; j++)
            dup = s->groups[j].group_id == group;
        if (!dup)
            s->groups[s->n_groups++].group_id = group;
    }
    return MG_OK;
}

static int decode_search(const node_ctx *c, search_req *s, mg_error *err)
{
    mg_mp_reader r = mg_wire_body(c->env.body, c->env.body_len);
    uint32_t n;
    bool have_vec = false, have_k = false, have_cubes = false, have_assign = false;
    if (mg_mp_read_map(&r, &n) != MG_OK)
        return mg_error_set(err, MG_ECORRUPT, "search: the body is not a map");
    for (uint32_t i = 0; i < n; i++) {
        const char *key;
        uint32_t klen;
        int rc = MG_OK;
        uint64_t u;
        if (mg_mp_read_str(&r, &key, &klen) != MG_OK)
            return mg_error_set(err, MG_ECORRUPT, "search: a key is not a string");
        if (KEY("vec")) {
            const uint8_t *b;
            uint32_t len;
            if (mg_mp_read_bin(&r, &b, &len) != MG_OK || len == 0 || len % 4 != 0 ||
                len / 4 > MG_DIM_MAX)
                return mg_error_set(err, MG_EINVAL,
                                    "search: \"vec\" must be a bin of 1-%d "
                                    "float32",
                                    MG_DIM_MAX);
            free(s->vec);
            if ((s->vec = malloc(len)) == NULL)
                return mg_error_set(err, MG_ENOMEM, "out of memory decoding a search");
            memcpy(s->vec, b, len); /* unaligned in the message */
            s->dim = len / 4;
            have_vec = true;
        } else if (KEY("k")) {
            if (mg_mp_read_u64(&r, &u) != MG_OK || u == 0 || u > SEARCH_K_MAX)
                return mg_error_set(err, MG_EINVAL, "search: \"k\" must be 1-%d", SEARCH_K_MAX);
            s->k = (uint32_t)u;
            have_k = true;
        } else if (KEY("scan")) {
            if (mg_mp_read_u64(&r, &u) != MG_OK || u > MG_SCAN_INT8)
                return mg_error_set(err, MG_EINVAL, "search: \"scan\" must be 0 or 1");
            s->scan = (int)u;
        } else if (KEY("strong")) {
            rc = mg_mp_peek(&r) == MG_MP_NIL ? mg_mp_read_nil(&r) : mg_mp_read_bool(&r, &s->strong);
        } else if (KEY("vecs")) {
            rc = mg_mp_peek(&r) == MG_MP_NIL ? mg_mp_read_nil(&r) : mg_mp_read_bool(&r, &s->vecs);
        } else if (KEY("follower")) {
            rc = mg_mp_peek(&r) == MG_MP_NIL ? mg_mp_read_nil(&r)
                                             : mg_mp_read_bool(&r, &s->follower);
        } else if (KEY("cubes")) {
            if ((rc = decode_cubes(&r, s, err)) != MG_OK)
                return rc;
            have_cubes = true;
        } else if (KEY("assign")) {
            if ((rc = decode_assign(&r, s, c->node->cfg.node_id, err)) != MG_OK)
                return rc;
            have_assign = true;
        } else {
            rc = mg_mp_skip(&r);
        }
        if (rc != MG_OK)
            return mg_error_set(err, MG_ECORRUPT, "search: bad value for \"%.*s\"", (int)klen, key);
    }
    if (!have_vec || !have_k || !have_cubes || !have_assign)
        return mg_error_set(err, MG_EINVAL, "search: vec, k, cubes and assign are required");
    return mg_vector_check(s->vec, s->dim, err);
}

#undef KEY

/* ---- scanning (worker) -------------------------------------------------- */

static void cube_fail(search_req *s, uint32_t cube, int status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void cube_fail(search_req *s, uint32_t cube, int status, const char *fmt, ...)
{
    cube_error *e = &s->errors[s->n_errors++]; /* capacity: one per cube */
    va_list ap;
    e->cube = cube;
    e->status = status;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
}

/* Checks the cubes of group sg and fills the query lists; returns how many
 * may be searched. */
static size_t prepare_cubes(node_ctx *c, search_req *s, search_group *sg, const char **ids,
                            mg_filter **filters, uint32_t *map)
{
    size_t n = 0;
    for (uint32_t i = 0; i < s->n_cubes; i++) {
        search_cube *sc = &s->cubes[i];
        if (sc->group != sg->group_id)
            continue;
        mg_cube cube = {0};
        mg_error err = {0};
        uint64_t epoch;
        if (!node_group_owns(sg->ng, sc->cube_id, &epoch)) {
            cube_fail(s, i, MG_EWRONGGROUP,
                      "group %llu does not own the slot of cube %s (epoch %llu)",
                      (unsigned long long)sg->group_id, sc->cube_id, (unsigned long long)epoch);
            continue;
        }
        int rc = mg_store_cube_get(sg->ng->store, sc->cube_id, &cube, &err);
        if (rc == MG_ENOTFOUND) {
            cube_fail(s, i, MG_ENOTFOUND, "cube %s not found", sc->cube_id);
            continue;
        }
        if (rc != MG_OK) {
            cube_fail(s, i, rc, "%s", err.msg);
            continue;
        }
        bool allowed = c->user[0] == '\0' || mg_cube_allows(&cube, c->user);
        uint32_t cube_dim = cube.dim;
        mg_cube_clear(&cube);
        if (!allowed) {
            cube_fail(s, i, MG_EPERM, "user %s may not read cube %s", c->user, sc->cube_id);
            continue;
        }
        if (cube_dim != 0 && cube_dim != s->dim) {
            cube_fail(s, i, MG_EDIM, "cube %s holds vectors of %u dimensions, the query %u",
                      sc->cube_id, cube_dim, s->dim);
            continue;
        }
        mg_filter *f = NULL;
        if (sc->filter != NULL) {
            mg_mp_reader fr;
            json_t *json = NULL;
            mg_mp_reader_init(&fr, sc->filter, sc->filter_len);
            if (mg_jsonmp_read(&fr, &json) != MG_OK) {
                cube_fail(s, i, MG_EFILTER, "cube %s: malformed filter", sc->cube_id);
                continue;
            }
            rc = mg_filter_compile(json, &f, &err);
            json_decref(json);
            if (rc != MG_OK) {
                cube_fail(s, i, rc, "%s", err.msg);
                continue;
            }
        }
        ids[n] = sc->cube_id;
        filters[n] = f;
        map[n] = i;
        n++;
    }
    return n;
}

/* Scans one group into out[*n_out..]; per-cube retries when the index
 * refuses the dimension of a cube whose record did not fix it. */
static int scan_group(search_req *s, search_group *sg, const char **ids, mg_filter **filters,
                      const uint32_t *map, size_t n, node_hit *out, size_t *n_out,
                      mg_index_hit *hits, float *vecs)
{
    float *out_vecs = vecs != NULL ? vecs + *n_out * s->dim : NULL;
    mg_error err = {0};
    mg_store_query q = {.vec = s->vec,
                        .dim = s->dim,
                        .cube_ids = ids,
                        .n_cubes = n,
                        .filters = (const mg_filter *const *)filters,
                        .k = s->k,
                        .scan = s->scan,
                        .vecs = out_vecs};
    size_t nh = 0;
    int rc = mg_store_search(sg->ng->store, &q, hits, &nh, &err);
    if (rc == MG_EDIM && n > 1) {
        for (size_t i = 0; i < n; i++)
            scan_group(s, sg, ids + i, filters + i, map + i, 1, out, n_out, hits, vecs);
        return MG_OK;
    }
    if (rc == MG_EDIM) {
        cube_fail(s, map[0], MG_EDIM,
                  "cube %s holds vectors of another dimension than the "
                  "query's %u",
                  ids[0], s->dim);
        return MG_OK;
    }
    if (rc != MG_OK) {
        sg->status = rc;
        snprintf(sg->msg, sizeof sg->msg, "group %llu: %s", (unsigned long long)sg->group_id,
                 err.msg);
        return rc;
    }
    for (size_t i = 0; i < nh; i++) {
        node_hit *h = &out[(*n_out)++];
        h->score = hits[i].score;
        h->cube = map[hits[i].cube];
        memcpy(h->id, hits[i].id, 16);
        h->ng = sg->ng;
        h->vec = out_vecs != NULL ? out_vecs + i * s->dim : NULL;
    }
    return MG_OK;
}

static int hit_order(const void *a, const void *b)
{
    const node_hit *x = a, *y = b;
    if (x->score != y->score)
        return x->score > y->score ? -1 : 1;
    return memcmp(x->id, y->id, 16);
}

/* The reply is packed straight into the nng message that carries it. */
typedef struct msg_out {
    nng_msg *m;
    bool failed; /* an append ran out of memory */
} msg_out;

/* msgpack writer: appends to o->m, growing it by doubling (nng grows a
 * message to the exact length asked, which many small appends would make
 * quadratic). */
static int msg_write(void *data, const char *buf, size_t len)
{
    msg_out *o = data;
    size_t need = nng_msg_len(o->m) + len, cap = nng_msg_capacity(o->m);
    if (o->failed || (need > cap && nng_msg_reserve(o->m, need > 2 * cap ? need : 2 * cap) != 0) ||
        nng_msg_append(o->m, buf, len) != 0) {
        o->failed = true;
        return -1;
    }
    return 0;
}

typedef struct hit_packer {
    msgpack_packer *pk;
    const node_hit *hits;
    bool vecs;
    uint32_t dim;
    uint32_t packed;
} hit_packer;

/* mg_store_mem_visit callback: one hit, its record forwarded as stored. */
static int pack_hit(void *arg, size_t i, const void *record, size_t record_len, const void *vec_le,
                    uint32_t dim)
{
    hit_packer *hp = arg;
    msgpack_packer *pk = hp->pk;
    int rc = msgpack_pack_map(pk, hp->vecs ? 4 : 3);
    rc |= mg_mp_pack_cstr(pk, "cube") | msgpack_pack_uint32(pk, hp->hits[i].cube);
    rc |= mg_mp_pack_cstr(pk, "score") | msgpack_pack_float(pk, hp->hits[i].score);
    rc |= mg_mp_pack_cstr(pk, "record") | mg_mp_pack_binn(pk, record, record_len);
    if (hp->vecs && hp->hits[i].vec != NULL) {
        rc |= mg_mp_pack_cstr(pk, "vec");
        rc |= mg_mp_pack_binn(pk, hp->hits[i].vec, (size_t)hp->dim * sizeof(float));
    } else if (hp->vecs) {
        rc |= mg_mp_pack_cstr(pk, "vec");
        rc |= vec_le != NULL ? mg_mp_pack_binn(pk, vec_le, (size_t)dim * sizeof(float))
                             : msgpack_pack_nil(pk);
    }
    hp->packed++;
    return rc ? MG_ENOMEM : MG_OK;
}

/* Packs the hits' records (and vectors), best first; a memory deleted since
 * the scan is left out. The records are copied from the store as they are,
 * never decoded: this fetch was most of a small search's time. The array
 * header is written as array32 and its count patched at the end. */
static int pack_hits(msg_out *o, msgpack_packer *pk, search_req *s, const node_hit *hits, size_t n)
{
    static const uint8_t array32[5] = {0xdd, 0, 0, 0, 0};
    size_t at = nng_msg_len(o->m);
    if (pk->callback(pk->data, (const char *)array32, sizeof array32) != 0)
        return MG_ENOMEM;
    hit_packer hp = {.pk = pk, .hits = hits, .vecs = s->vecs, .dim = s->dim};
    /* Consecutive hits of one group are read in one transaction. */
    mg_store_mem_ref refs[64];
    for (size_t i = 0; i < n;) {
        node_group *ng = hits[i].ng;
        size_t j = i;
        while (j < n && j - i < 64 && hits[j].ng == ng &&
               (hits[j].vec == NULL) == (hits[i].vec == NULL)) {
            refs[j - i].cube_id = s->cubes[hits[j].cube].cube_id;
            refs[j - i].id = hits[j].id;
            j++;
        }
        hp.hits = hits + i;
        /* Vectors come from the store only for hits the index gave none. */
        bool store_vecs = s->vecs && hits[i].vec == NULL;
        int rc = mg_store_mem_visit(ng->store, refs, j - i, store_vecs, pack_hit, &hp, NULL);
        if (rc == MG_ENOMEM)
            return rc;
        /* Any other failure (a damaged store): those hits are left out. */
        i = j;
    }
    if (o->failed)
        return MG_ENOMEM;
    uint8_t *count = (uint8_t *)nng_msg_body(o->m) + at + 1;
    count[0] = (uint8_t)(hp.packed >> 24);
    count[1] = (uint8_t)(hp.packed >> 16);
    count[2] = (uint8_t)(hp.packed >> 8);
    count[3] = (uint8_t)hp.packed;
    return MG_OK;
}

static void pack_reply(node_ctx *c, search_req *s, const node_hit *hits, size_t n_hits)
{
    size_t answered = 0, failed = 0;
    const search_group *first_fail = NULL;
    for (size_t i = 0; i < s->n_groups; i++) {
        if (s->groups[i].status == MG_OK) {
            answered++;
        } else {
            failed++;
            if (first_fail == NULL)
                first_fail = &s->groups[i];
        }
    }
    /* Sized for records of ~1 KB; msg_write doubles past it. */
    size_t guess = 1024 + n_hits * (1024 + (s->vecs ? (size_t)s->dim * sizeof(float) : 0));
    msg_out o = {0};
    if (nng_msg_alloc(&o.m, 0) != 0) {
        node_reply_error(c, MG_ENOMEM, "out of memory encoding the reply", 0, NULL);
        return;
    }
    nng_msg_reserve(o.m, guess); /* a hint: msg_write grows it as needed */
    msgpack_packer pk;
    msgpack_packer_init(&pk, &o, msg_write);
    int status = MG_OK;
    if (answered == 0 && first_fail != NULL) {
        status = first_fail->status;
        mg_wire_rep_begin(&pk, c->env.rid, status, first_fail->msg, first_fail->leader_id,
                          first_fail->leader, 0);
    } else {
        mg_wire_rep_begin(&pk, c->env.rid, MG_OK, NULL, 0, NULL, 0);
    }
    msgpack_pack_map(&pk, 4);
    mg_mp_pack_cstr(&pk, "groups");
    msgpack_pack_array(&pk, (uint32_t)answered);
    for (size_t i = 0; i < s->n_groups; i++)
        if (s->groups[i].status == MG_OK)
            msgpack_pack_uint64(&pk, s->groups[i].group_id);
    mg_mp_pack_cstr(&pk, "hits");
    pack_hits(&o, &pk, s, hits, n_hits);
    mg_mp_pack_cstr(&pk, "missing");
    msgpack_pack_array(&pk, (uint32_t)failed);
    for (size_t i = 0; i < s->n_groups; i++) {
        const search_group *sg = &s->groups[i];
        if (sg->status == MG_OK)
            continue;
        msgpack_pack_map(&pk, 5);
        mg_mp_pack_cstr(&pk, "group");
        msgpack_pack_uint64(&pk, sg->group_id);
        mg_mp_pack_cstr(&pk, "status");
        msgpack_pack_uint32(&pk, (uint32_t)sg->status);
        mg_mp_pack_cstr(&pk, "msg");
        mg_mp_pack_cstr(&pk, sg->msg);
        mg_mp_pack_cstr(&pk, "leader_id");
        msgpack_pack_uint64(&pk, sg->leader_id);
        mg_mp_pack_cstr(&pk, "leader");
        mg_mp_pack_cstr(&pk, sg->leader);
    }
    mg_mp_pack_cstr(&pk, "cube_errors");
    msgpack_pack_array(&pk, (uint32_t)s->n_errors);
    for (size_t i = 0; i < s->n_errors; i++) {
        msgpack_pack_map(&pk, 3);
        mg_mp_pack_cstr(&pk, "cube");
        msgpack_pack_uint32(&pk, s->errors[i].cube);
        mg_mp_pack_cstr(&pk, "status");
        msgpack_pack_uint32(&pk, (uint32_t)s->errors[i].status);
        mg_mp_pack_cstr(&pk, "msg");
        mg_mp_pack_cstr(&pk, s->errors[i].msg);
    }
    if (o.failed) {
        nng_msg_free(o.m);
        node_reply_error(c, MG_ENOMEM, "out of memory encoding the reply", 0, NULL);
        return;
    }
    node_reply_msg(c, o.m, status);
}

static void search_run(node_ctx *c)
{
    mg_node *n = c->node;
    search_req *s = c->search;
    if (node_expired(c))
        return;
    uint64_t t0 = mg_clock_mono_ns();
    if (!node_stores_enter(n)) {
        node_reply_error(c, MG_ESHUTDOWN, "the node is stopping", 0, NULL);
        return;
    }
    size_t cap = s->n_cubes ? s->n_cubes : 1;
    const char **ids = malloc(cap * sizeof *ids);
    mg_filter **filters = malloc(cap * sizeof *filters);
    uint32_t *map = malloc(cap * sizeof *map);
    mg_index_hit *hits = malloc(s->k * sizeof *hits);
    size_t groups_ok = 0;
    for (size_t i = 0; i < s->n_groups; i++)
        groups_ok += s->groups[i].status == MG_OK;
    size_t n_cand = (groups_ok ? groups_ok : 1) * s->k;
    node_hit *all = malloc(n_cand * sizeof *all);
    /* The candidates' vectors are copied out of the index by the scan (no
     * store read per hit), unless that would take more than 16 MiB. */
    float *vecs = NULL;
    if (s->vecs && n_cand * s->dim <= SEARCH_VECS_FLOATS)
        vecs = malloc(n_cand * s->dim * sizeof *vecs);
    s->errors = malloc(cap * sizeof *s->errors);
    if (ids == NULL || filters == NULL || map == NULL || hits == NULL || all == NULL ||
        s->errors == NULL) {
        node_stores_leave(n);
        node_reply_error(c, MG_ENOMEM, "out of memory running a search", 0, NULL);
        goto done;
    }
    size_t n_all = 0;
    for (size_t i = 0; i < s->n_groups; i++) {
        search_group *sg = &s->groups[i];
        if (sg->status == MG_OK && sg->ng->store == NULL) {
            sg->status = MG_ENOTFOUND; /* closed since the request arrived */
            snprintf(sg->msg, sizeof sg->msg, "group %llu is not hosted on node %llu",
                     (unsigned long long)sg->group_id, (unsigned long long)n->cfg.node_id);
        }
        if (sg->status != MG_OK)
            continue;
        size_t nc = prepare_cubes(c, s, sg, ids, filters, map);
        if (nc > 0)
            scan_group(s, sg, ids, filters, map, nc, all, &n_all, hits, vecs);
        for (size_t j = 0; j < nc; j++)
            mg_filter_free(filters[j]);
    }
    qsort(all, n_all, sizeof *all, hit_order);
    node_stats_scan(n, mg_clock_mono_ns() - t0);
    pack_reply(c, s, all, n_all < s->k ? n_all : s->k);
    node_stores_leave(n);
done:
    free(ids);
    free(filters);
    free(map);
    free(hits);
    free(all);
    free(vecs);
}

/* ---- barriers (loop) ---------------------------------------------------- */

static void barrier_group_fail(search_group *sg, int status, const char *msg)
{
    sg->status = status;
    snprintf(sg->msg, sizeof sg->msg, "group %llu: barrier: %s", (unsigned long long)sg->group_id,
             msg);
    if (status == MG_ENOTLEADER && sg->ng != NULL && sg->ng->g != NULL) {
        const char *addr = NULL;
        mg_group_leader(sg->ng->g, &sg->leader_id, &addr);
        snprintf(sg->leader, sizeof sg->leader, "%s", addr ? addr : "");
    }
}

static void on_barrier(mg_group_barrier_req *b, int status)
{
    search_group *sg = b->data;
    node_ctx *c = sg->c;
    if (status == MG_ESHUTDOWN && !c->node->host_closed)
        barrier_group_fail(sg, MG_ENOTFOUND, "the group's replica was closed on this node");
    else if (status != MG_OK)
        barrier_group_fail(sg, status, mg_strerror(status));
    if (--c->search->barriers_pending == 0)
        node_worker_post(c->node, c, search_run);
}

static void search_barriers(node_ctx *c)
{
    search_req *s = c->search;
    if (node_expired(c))
        return;
    s->barriers_pending = 1; /* held until every barrier is appended */
    for (size_t i = 0; i < s->n_groups; i++) {
        search_group *sg = &s->groups[i];
        mg_error err = {0};
        if (sg->status != MG_OK)
            continue;
        if (sg->ng->g == NULL) {
            if (c->node->host_closed)
                barrier_group_fail(sg, MG_ESHUTDOWN, "the node is stopping");
            else
                barrier_group_fail(sg, MG_ENOTFOUND, "the group is not hosted on this node");
            continue;
        }
        sg->c = c;
        sg->barrier.data = sg;
        int rc = mg_group_barrier(sg->ng->g, &sg->barrier, on_barrier, &err);
        if (rc != MG_OK)
            barrier_group_fail(sg, rc, err.msg);
        else
            s->barriers_pending++;
    }
    if (--s->barriers_pending == 0)
        node_worker_post(c->node, c, search_run);
}

/* ---- start (nng thread) ------------------------------------------------- */

/* A search over at most this many vector floats (memories × dimension) runs
 * on the nng thread that received it instead of on a worker: about 10k
 * memories of 384 dimensions, a scan of ~0.2 ms. For such searches the hop to
 * a worker (a wake-up, and a context switch on a busy 2-core box) cost as much
 * as the scan. Larger ones go to the workers so that nng's few threads are
 * never held for long. The Raft loop is not involved either way. */
#define SEARCH_INLINE_FLOATS (4u << 20)

static bool search_is_small(mg_node *n, const search_req *s)
{
    if (s->n_cubes > 8 || !node_stores_enter(n))
        return false;
    uint64_t floats = 0;
    for (uint32_t i = 0; i < s->n_cubes && floats <= SEARCH_INLINE_FLOATS; i++) {
        node_group *ng = NULL;
        for (size_t j = 0; j < s->n_groups && ng == NULL; j++)
            if (s->groups[j].group_id == s->cubes[i].group && s->groups[j].status == MG_OK)
                ng = s->groups[j].ng;
        uint64_t count = 0;
        if (ng != NULL && ng->store == NULL)
            continue;
        if (ng != NULL &&
            (mg_store_mem_count(ng->store, s->cubes[i].cube_id, &count, NULL) != MG_OK ||
             count > SEARCH_INLINE_FLOATS))
            count = SEARCH_INLINE_FLOATS; /* unknown or large: not inline */
        floats += count * s->dim;
    }
    node_stores_leave(n);
    return floats <= SEARCH_INLINE_FLOATS;
}

void node_search_start(node_ctx *c)
{
    mg_node *n = c->node;
    mg_error err = {0};
    search_req *s = calloc(1, sizeof *s);
    if (s == NULL) {
        node_reply_error(c, MG_ENOMEM, "out of memory decoding a search", 0, NULL);
        return;
    }
    c->search = s;
    int rc = decode_search(c, s, &err);
    if (rc != MG_OK) {
        node_reply_err(c, &err);
        return;
    }
    if (s->n_groups == 0 && c->survey) {
        node_reply_none(c); /* not this node's survey */
        return;
    }
    bool any = false;
    for (size_t i = 0; i < s->n_groups; i++) {
        search_group *sg = &s->groups[i];
        sg->ng = node_group_find(n, sg->group_id);
        if (sg->ng == NULL) {
            sg->status = MG_ENOTFOUND;
            snprintf(sg->msg, sizeof sg->msg, "group %llu is not hosted on node %llu",
                     (unsigned long long)sg->group_id, (unsigned long long)n->cfg.node_id);
            continue;
        }
        if (!s->follower) {
            mg_node_group_status st;
            node_group_snapshot(n, sg->ng, &st);
            if (st.raft_state != RAFT_LEADER || !st.read_ready) {
                bool leads = st.raft_state == RAFT_LEADER;
                sg->status = leads ? MG_EBUSY : MG_ENOTLEADER;
                sg->leader_id = st.leader_id;
                memcpy(sg->leader, st.leader, sizeof sg->leader);
                snprintf(sg->msg, sizeof sg->msg, "group %llu: replica %llu %s",
                         (unsigned long long)sg->group_id, (unsigned long long)st.replica_id,
                         leads ? "was just elected and is catching up; retry"
                               : "is not the leader");
                continue;
            }
        }
        any = true;
    }
    if (any && s->strong) {
        if (!node_loop_post(n, c, search_barriers))
            node_reply_error(c, MG_ESHUTDOWN, "the node is stopping", 0, NULL);
        return;
    }
    if (search_is_small(n, s))
        search_run(c);
    else
        node_worker_post(n, c, search_run);
}
