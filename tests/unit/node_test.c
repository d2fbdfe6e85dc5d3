/* node/: a real node in-process (inproc:// nng, loopback raft, temp dirs),
 * driven as the router drives it: real req and surveyor sockets and the
 * lib/wire.h envelope. Writes, every read, searches over several cubes and
 * groups, NOT_LEADER with a hint (two nodes sharing a group), unknown group
 * and cube, access control, malformed messages, concurrent writes, restart,
 * the cluster ops and the membership record (NODE_INFO claims). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "cluster/command.h"
#include "lib/cmap.h"
#include "lib/clock.h"
#include "lib/jsonmp.h"
#include "lib/wire.h"
#include "node/node.h"

#include <arpa/inet.h>
#include <ftw.h>
#include <math.h>
#include <netinet/in.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <nng/protocol/survey0/survey.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define DIM 8

/* ---- fixtures ----------------------------------------------------------- */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static char *tmpdir_new(void)
{
    char *d = strdup("/tmp/mg-node-test-XXXXXX");
    assert_non_null(mkdtemp(d));
    return d;
}

static void tmpdir_free(char *d)
{
    nftw(d, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(d);
}

/* A loopback port nobody listens on right now. */
static unsigned free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t len = sizeof a;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static unsigned url_seq;

/* One node with single-voter groups `ids` (replica 1 each). */
typedef struct fixture {
    char *dir;
    char rep_url[64], resp_url[64];
    char addrs[4][MG_ADDRESS_MAX];
    mg_group_peer peers[4];
    mg_node_group groups[4];
    size_t n_groups;
    mg_node *node;
    nng_socket req, surv;
    unsigned workers; /* 0 = default */
    const mg_group_tunables *tunables; /* NULL = default */
} fixture;

static void node_start(fixture *f, uint64_t node_id)
{
    mg_node_config cfg = {
        .data_dir = f->dir,
        .node_id = node_id,
        .rep_url = f->rep_url,
        .respondent_url = f->resp_url,
        .groups = f->groups,
        .n_groups = f->n_groups,
        .search_workers = f->workers,
        .tunables = f->tunables,
    };
    mg_error err = {0};
    uint64_t t0 = mg_clock_mono_ns();
    int rc = mg_node_start(&cfg, &f->node, &err);
    if (rc != MG_OK)
        fail_msg("mg_node_start: %s", err.msg);
    rc = mg_node_wait_ready(f->node, 5000, &err);
    if (rc != MG_OK)
        fail_msg("mg_node_wait_ready: %s", err.msg);
    printf("# node %llu ready in %.1f ms\n", (unsigned long long)node_id,
           (double)(mg_clock_mono_ns() - t0) / 1e6);
}

static void clients_open(fixture *f)
{
    assert_int_equal(nng_req0_open(&f->req), 0);
    assert_int_equal(nng_socket_set_ms(f->req, NNG_OPT_RECVTIMEO, 10000), 0);
    assert_int_equal(nng_dial(f->req, f->rep_url, NULL, 0), 0);
    assert_int_equal(nng_surveyor0_open(&f->surv), 0);
    assert_int_equal(nng_socket_set_ms(f->surv, NNG_OPT_SURVEYOR_SURVEYTIME, 500), 0);
    assert_int_equal(nng_dial(f->surv, f->resp_url, NULL, 0), 0);
}

static void clients_close(fixture *f)
{
    nng_close(f->req);
    nng_close(f->surv);
}

static fixture *fixture_new_workers(const uint64_t *ids, size_t n, unsigned workers)
{
    fixture *f = calloc(1, sizeof *f);
    f->workers = workers;
    f->dir = tmpdir_new();
    unsigned seq = ++url_seq;
    snprintf(f->rep_url, sizeof f->rep_url, "inproc://node-test-rep-%u", seq);
    snprintf(f->resp_url, sizeof f->resp_url, "inproc://node-test-resp-%u", seq);
    f->n_groups = n;
    for (size_t i = 0; i < n; i++) {
        snprintf(f->addrs[i], MG_ADDRESS_MAX, "127.0.0.1:%u", free_port());
        f->peers[i].id = 1;
        snprintf(f->peers[i].address, MG_ADDRESS_MAX, "%s", f->addrs[i]);
        f->groups[i] = (mg_node_group){.group_id = ids[i],
                                       .replica_id = 1,
                                       .address = f->addrs[i],
                                       .bootstrap = &f->peers[i],
                                       .n_bootstrap = 1};
    }
    node_start(f, 1);
    clients_open(f);
    return f;
}

static fixture *fixture_new(const uint64_t *ids, size_t n)
{
    return fixture_new_workers(ids, n, 0);
}

static void fixture_free(fixture *f)
{
    clients_close(f);
    mg_node_stop(f->node);
    tmpdir_free(f->dir);
    free(f);
}

/* ---- requests ----------------------------------------------------------- */

typedef struct reply {
    nng_msg *msg;
    mg_wire_rep rep;
} reply;

static void reply_free(reply *r)
{
    if (r->msg != NULL)
        nng_msg_free(r->msg);
    r->msg = NULL;
}

static _Atomic uint64_t next_rid = 1;

/* Sends raw bytes on the req socket and decodes the reply's envelope. */
static void call_raw(nng_socket s, const void *buf, size_t len, reply *out)
{
    nng_msg *m;
    assert_int_equal(nng_msg_alloc(&m, len), 0);
    memcpy(nng_msg_body(m), buf, len);
    assert_int_equal(nng_sendmsg(s, m, 0), 0);
    int rv = nng_recvmsg(s, &out->msg, 0);
    if (rv != 0)
        fail_msg("recv: %s", nng_strerror(rv));
    mg_error err = {0};
    int rc = mg_wire_rep_decode(nng_msg_body(out->msg), nng_msg_len(out->msg), &out->rep, &err);
    if (rc != MG_OK)
        fail_msg("reply does not decode: %s", err.msg);
}

/* A request: envelope + the body packed in `body` (NULL = nil). */
static void request_deadline(nng_socket s, int op, uint64_t group, const char *user,
                             const msgpack_sbuffer *body, uint32_t deadline_ms, reply *out);

static void request(nng_socket s, int op, uint64_t group, const char *user,
                    const msgpack_sbuffer *body, reply *out)
{
    request_deadline(s, op, group, user, body, 0, out);
}

static void request_deadline(nng_socket s, int op, uint64_t group, const char *user,
                             const msgpack_sbuffer *body, uint32_t deadline_ms, reply *out)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    uint64_t rid = next_rid++;
    assert_int_equal(mg_wire_req_begin(&pk, op, rid, 0, group, deadline_ms, user), MG_OK);
    if (body != NULL)
        msgpack_sbuffer_write(&sb, body->data, body->size);
    else
        msgpack_pack_nil(&pk);
    call_raw(s, sb.data, sb.size, out);
    assert_int_equal(out->rep.rid, rid);
    msgpack_sbuffer_destroy(&sb);
}

static void expect_status(const reply *r, int status)
{
    if (r->rep.status != status)
        fail_msg("status %s (%.*s), expected %s", mg_errname(r->rep.status), (int)r->rep.msg_len,
                 r->rep.msg, mg_errname(status));
}

static bool msg_has(const reply *r, const char *s)
{
    char buf[512];
    snprintf(buf, sizeof buf, "%.*s", (int)r->rep.msg_len, r->rep.msg);
    return strstr(buf, s) != NULL;
}

/* Body builders. */
typedef struct body {
    msgpack_sbuffer sb;
    msgpack_packer pk;
} body;

static void body_init(body *b)
{
    msgpack_sbuffer_init(&b->sb);
    msgpack_packer_init(&b->pk, &b->sb, msgpack_sbuffer_write);
}

static void body_free(body *b)
{
    msgpack_sbuffer_destroy(&b->sb);
}

static void kv_str(body *b, const char *k, const char *v)
{
    mg_mp_pack_cstr(&b->pk, k);
    mg_mp_pack_cstr(&b->pk, v);
}

/* A deterministic vector: mostly axis (seed % DIM), a little noise. */
static void make_vec(float *v, unsigned seed)
{
    for (unsigned i = 0; i < DIM; i++)
        v[i] = 0.05f * (float)((seed * 7 + i * 3) % 5);
    v[seed % DIM] += 1.0f;
}

static void make_id(uint8_t id[16], unsigned cube, unsigned n)
{
    memset(id, 0, 16);
    id[0] = (uint8_t)cube;
    id[1] = (uint8_t)(n >> 8);
    id[2] = (uint8_t)n;
    id[6] = 0x40; /* version 4 */
    id[8] = 0x80;
}

static void cmd_cube_create(mg_cmd *c, const char *cube_id, const char *owner, const char *shared)
{
    memset(c, 0, sizeof *c);
    c->kind = MG_CMD_CUBE_CREATE;
    snprintf(c->cube.cube_id, sizeof c->cube.cube_id, "%s", cube_id);
    snprintf(c->cube.owner_id, sizeof c->cube.owner_id, "%s", owner);
    snprintf(c->cube.created_at, sizeof c->cube.created_at, "2026-01-01T10:00:00.000000");
    snprintf(c->cube.embedder, sizeof c->cube.embedder, "hash");
    c->cube.dim = DIM;
    if (shared != NULL)
        assert_int_equal(mg_cube_share(&c->cube, shared, NULL), MG_OK);
}

/* mem_put of items [from, from+n) of cube number `cube`; metadata.rank = i,
 * memory_type alternating. */
static void cmd_mem_put(mg_cmd *c, const char *cube_id, unsigned cube, unsigned from, unsigned n)
{
    memset(c, 0, sizeof *c);
    c->kind = MG_CMD_MEM_PUT;
    snprintf(c->cube_id, sizeof c->cube_id, "%s", cube_id);
    for (unsigned i = from; i < from + n; i++) {
        mg_item it = {0};
        char text[64];
        make_id(it.id, cube, i);
        snprintf(text, sizeof text, "memory %u of %s", i, cube_id);
        it.memory = strdup(text);
        it.memory_len = strlen(text);
        it.metadata =
            json_pack("{s:s, s:i, s:s}", "memory_type", i % 2 ? "LongTermMemory" : "UserMemory",
                      "rank", (int)i, "user_id", "alice");
        float *vec = malloc(DIM * sizeof *vec);
        make_vec(vec, i);
        assert_int_equal(mg_cmd_add_item(c, &it, vec, DIM, NULL), MG_OK);
    }
}

/* WRITE of cmds (cleared afterwards). */
static void write_cmds(nng_socket s, uint64_t group, const char *user, mg_cmd *cmds, size_t n,
                       reply *out)
{
    body b;
    body_init(&b);
    msgpack_pack_map(&b.pk, 1);
    mg_mp_pack_cstr(&b.pk, "cmds");
    msgpack_pack_array(&b.pk, (uint32_t)n);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(mg_cmd_pack(&b.pk, &cmds[i]), MG_OK);
        mg_cmd_clear(&cmds[i]);
    }
    request(s, MG_OP_WRITE, group, user, &b.sb, out);
    body_free(&b);
}

/* Reads the outcomes of a WRITE reply: codes[i], counts[i]. Returns n. */
static size_t outcomes(const reply *r, int *codes, uint64_t *counts, size_t cap)
{
    mg_mp_reader rd = mg_wire_body(r->rep.body, r->rep.body_len);
    uint32_t n, m, arr;
    assert_int_equal(mg_mp_read_map(&rd, &n), MG_OK);
    assert_int_equal(n, 1);
    assert_true(mg_mp_peek_str_eq(&rd, "outcomes"));
    mg_mp_skip(&rd);
    assert_int_equal(mg_mp_read_array(&rd, &arr), MG_OK);
    assert_true(arr <= cap);
    for (uint32_t i = 0; i < arr; i++) {
        assert_int_equal(mg_mp_read_map(&rd, &m), MG_OK);
        for (uint32_t j = 0; j < m; j++) {
            const char *k;
            uint32_t kl;
            uint64_t v;
            assert_int_equal(mg_mp_read_str(&rd, &k, &kl), MG_OK);
            if (kl == 4 && memcmp(k, "code", 4) == 0) {
                assert_int_equal(mg_mp_read_u64(&rd, &v), MG_OK);
                codes[i] = (int)v;
            } else if (kl == 5 && memcmp(k, "count", 5) == 0) {
                assert_int_equal(mg_mp_read_u64(&rd, &v), MG_OK);
                counts[i] = v;
            } else {
                assert_int_equal(mg_mp_skip(&rd), MG_OK);
            }
        }
    }
    return arr;
}

/* Creates cube `cube_id` (owner) and puts n items into it; asserts success. */
static void seed_cube(fixture *f, uint64_t group, const char *cube_id, unsigned cube,
                      const char *owner, const char *shared, unsigned n)
{
    mg_cmd cmds[2];
    reply r = {0};
    int codes[2];
    uint64_t counts[2];
    cmd_cube_create(&cmds[0], cube_id, owner, shared);
    cmd_mem_put(&cmds[1], cube_id, cube, 0, n);
    write_cmds(f->req, group, owner, cmds, 2, &r);
    expect_status(&r, MG_OK);
    assert_int_equal(outcomes(&r, codes, counts, 2), 2);
    assert_int_equal(codes[0], MG_OK);
    assert_int_equal(counts[0], 1);
    assert_int_equal(codes[1], MG_OK);
    assert_int_equal(counts[1], n);
    reply_free(&r);
}

static uint64_t mem_count(nng_socket s, uint64_t group, const char *user, const char *cube,
                          int expect)
{
    body b;
    reply r = {0};
    uint64_t count = UINT64_MAX;
    body_init(&b);
    msgpack_pack_map(&b.pk, 1);
    kv_str(&b, "cube_id", cube);
    request(s, MG_OP_MEM_COUNT, group, user, &b.sb, &r);
    expect_status(&r, expect);
    if (expect == MG_OK) {
        mg_mp_reader rd = mg_wire_body(r.rep.body, r.rep.body_len);
        assert_int_equal(mg_mp_read_u64(&rd, &count), MG_OK);
    }
    reply_free(&r);
    body_free(&b);
    return count;
}

/* ---- search helpers ----------------------------------------------------- */

typedef struct search_cube_arg {
    const char *cube_id;
    uint64_t group;
    const char *filter_json; /* NULL = none */
} search_cube_arg;

static void search_body(body *b, const float *vec, unsigned k, bool strong, bool vecs,
                        const search_cube_arg *cubes, size_t n_cubes, const uint64_t *assign,
                        size_t n_assign, uint64_t node)
{
    body_init(b);
    msgpack_pack_map(&b->pk, 7);
    mg_mp_pack_cstr(&b->pk, "vec");
    mg_mp_pack_binn(&b->pk, vec, DIM * sizeof(float));
    mg_mp_pack_cstr(&b->pk, "k");
    msgpack_pack_uint32(&b->pk, k);
    mg_mp_pack_cstr(&b->pk, "strong");
    strong ? msgpack_pack_true(&b->pk) : msgpack_pack_false(&b->pk);
    mg_mp_pack_cstr(&b->pk, "vecs");
    vecs ? msgpack_pack_true(&b->pk) : msgpack_pack_false(&b->pk);
    mg_mp_pack_cstr(&b->pk, "scan");
    msgpack_pack_uint32(&b->pk, 0);
    mg_mp_pack_cstr(&b->pk, "cubes");
    msgpack_pack_array(&b->pk, (uint32_t)n_cubes);
    for (size_t i = 0; i < n_cubes; i++) {
        msgpack_pack_map(&b->pk, 3);
        kv_str(b, "cube_id", cubes[i].cube_id);
        mg_mp_pack_cstr(&b->pk, "group");
        msgpack_pack_uint64(&b->pk, cubes[i].group);
        mg_mp_pack_cstr(&b->pk, "filter");
        if (cubes[i].filter_json != NULL) {
            json_t *j = json_loads(cubes[i].filter_json, 0, NULL);
            assert_non_null(j);
            assert_int_equal(mg_jsonmp_pack(&b->pk, j), MG_OK);
            json_decref(j);
        } else {
            msgpack_pack_nil(&b->pk);
        }
    }
    mg_mp_pack_cstr(&b->pk, "assign");
    msgpack_pack_array(&b->pk, (uint32_t)n_assign);
    for (size_t i = 0; i < n_assign; i++) {
        msgpack_pack_map(&b->pk, 2);
        mg_mp_pack_cstr(&b->pk, "group");
        msgpack_pack_uint64(&b->pk, assign[i]);
        mg_mp_pack_cstr(&b->pk, "node");
        msgpack_pack_uint64(&b->pk, node);
    }
}

typedef struct hit {
    uint32_t cube;
    double score;
    mg_item item;
    bool has_vec;
} hit;

typedef struct search_result {
    uint64_t groups[8];
    size_t n_groups;
    hit hits[64];
    size_t n_hits;
    size_t n_missing;
    int missing_status[8];
    uint64_t missing_leader[8];
    uint32_t err_cube[8];
    int err_status[8];
    size_t n_errors;
} search_result;

static void result_free(search_result *s)
{
    for (size_t i = 0; i < s->n_hits; i++)
        mg_item_clear(&s->hits[i].item);
}

#define KEYIS(s) (kl == sizeof(s) - 1 && memcmp(k, s, kl) == 0)

static void decode_result(const reply *r, search_result *out)
{
    memset(out, 0, sizeof *out);
    mg_mp_reader rd = mg_wire_body(r->rep.body, r->rep.body_len);
    uint32_t n, arr, m;
    assert_int_equal(mg_mp_read_map(&rd, &n), MG_OK);
    for (uint32_t i = 0; i < n; i++) {
        const char *k;
        uint32_t kl;
        assert_int_equal(mg_mp_read_str(&rd, &k, &kl), MG_OK);
        assert_int_equal(mg_mp_read_array(&rd, &arr), MG_OK);
        for (uint32_t j = 0; j < arr; j++) {
            if (KEYIS("groups")) {
                assert_int_equal(mg_mp_read_u64(&rd, &out->groups[out->n_groups++]), MG_OK);
                continue;
            }
            assert_int_equal(mg_mp_read_map(&rd, &m), MG_OK);
            hit *h = KEYIS("hits") ? &out->hits[out->n_hits++] : NULL;
            size_t mi = out->n_missing, ei = out->n_errors;
            if (KEYIS("missing"))
                out->n_missing++;
            if (KEYIS("cube_errors"))
                out->n_errors++;
            for (uint32_t q = 0; q < m; q++) {
                const char *f;
                uint32_t fl;
                uint64_t u;
                assert_int_equal(mg_mp_read_str(&rd, &f, &fl), MG_OK);
#define FIELD(s) (fl == sizeof(s) - 1 && memcmp(f, s, fl) == 0)
                if (h != NULL && FIELD("cube")) {
                    assert_int_equal(mg_mp_read_u32(&rd, &h->cube), MG_OK);
                } else if (h != NULL && FIELD("score")) {
                    assert_int_equal(mg_mp_read_double(&rd, &h->score), MG_OK);
                } else if (h != NULL && FIELD("record")) {
                    const uint8_t *b;
                    uint32_t bl;
                    assert_int_equal(mg_mp_read_bin(&rd, &b, &bl), MG_OK);
                    assert_int_equal(mg_item_decode(b, bl, &h->item, NULL), MG_OK);
                } else if (h != NULL && FIELD("vec")) {
                    const uint8_t *b;
                    uint32_t bl;
                    assert_int_equal(mg_mp_read_bin(&rd, &b, &bl), MG_OK);
                    assert_int_equal(bl, DIM * sizeof(float));
                    h->has_vec = true;
                } else if (KEYIS("missing") && FIELD("status")) {
                    assert_int_equal(mg_mp_read_u64(&rd, &u), MG_OK);
                    out->missing_status[mi] = (int)u;
                } else if (KEYIS("missing") && FIELD("leader_id")) {
                    assert_int_equal(mg_mp_read_u64(&rd, &out->missing_leader[mi]), MG_OK);
                } else if (KEYIS("cube_errors") && FIELD("cube")) {
                    assert_int_equal(mg_mp_read_u32(&rd, &out->err_cube[ei]), MG_OK);
                } else if (KEYIS("cube_errors") && FIELD("status")) {
                    assert_int_equal(mg_mp_read_u64(&rd, &u), MG_OK);
                    out->err_status[ei] = (int)u;
                } else {
                    assert_int_equal(mg_mp_skip(&rd), MG_OK);
                }
#undef FIELD
            }
        }
    }
}

/* Sends a survey; collects up to `cap` replies until the survey time ends. */
static size_t survey(nng_socket s, int op, const char *user, const msgpack_sbuffer *b, reply *out,
                     size_t cap)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    assert_int_equal(mg_wire_req_begin(&pk, op, next_rid++, 0, 0, 0, user), MG_OK);
    msgpack_sbuffer_write(&sb, b->data, b->size);
    nng_msg *m;
    assert_int_equal(nng_msg_alloc(&m, sb.size), 0);
    memcpy(nng_msg_body(m), sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    assert_int_equal(nng_sendmsg(s, m, 0), 0);
    size_t n = 0;
    for (;;) {
        nng_msg *rm;
        int rv = nng_recvmsg(s, &rm, 0);
        if (rv == NNG_ETIMEDOUT || rv == NNG_ESTATE)
            break;
        assert_int_equal(rv, 0);
        assert_true(n < cap);
        out[n].msg = rm;
        assert_int_equal(mg_wire_rep_decode(nng_msg_body(rm), nng_msg_len(rm), &out[n].rep, NULL),
                         MG_OK);
        n++;
    }
    return n;
}

/* ---- tests -------------------------------------------------------------- */

static void test_write_and_reads(void **state)
{
    (void)state;
    const uint64_t ids[] = {1, 2};
    fixture *f = fixture_new(ids, 2);
    seed_cube(f, 1, "c1", 1, "alice", NULL, 20);

    /* STATUS: both groups led by replica 1, applied > 0. */
    reply r = {0};
    request(f->req, MG_OP_STATUS, 0, "", NULL, &r);
    expect_status(&r, MG_OK);
    {
        mg_mp_reader rd = mg_wire_body(r.rep.body, r.rep.body_len);
        json_t *j = NULL;
        assert_int_equal(mg_jsonmp_read(&rd, &j), MG_OK);
        assert_int_equal(json_integer_value(json_object_get(j, "node")), 1);
        json_t *gs = json_object_get(j, "groups");
        assert_int_equal(json_array_size(gs), 2);
        for (size_t i = 0; i < 2; i++) {
            json_t *g = json_array_get(gs, i);
            assert_string_equal(json_string_value(json_object_get(g, "state")), "leader");
            assert_int_equal(json_integer_value(json_object_get(g, "leader_id")), 1);
            assert_true(json_integer_value(json_object_get(g, "applied")) > 0);
            assert_true(json_is_true(json_object_get(g, "read_ready")));
        }
        json_t *g1 = json_array_get(gs, 0);
        assert_string_equal(json_string_value(json_object_get(g1, "leader")), f->addrs[0]);
        json_decref(j);
    }
    reply_free(&r);

    /* CUBE_GET */
    body b;
    body_init(&b);
    msgpack_pack_map(&b.pk, 1);
    kv_str(&b, "cube_id", "c1");
    request(f->req, MG_OP_CUBE_GET, 1, "alice", &b.sb, &r);
    expect_status(&r, MG_OK);
    mg_cube cube = {0};
    assert_int_equal(mg_cube_decode(r.rep.body, r.rep.body_len, &cube, NULL), MG_OK);
    assert_string_equal(cube.cube_id, "c1");
    assert_string_equal(cube.owner_id, "alice");
    mg_cube_clear(&cube);
    reply_free(&r);
    body_free(&b);

    /* CUBE_LIST: alice sees c1; bob sees nothing; internal sees c1. */
    const char *users[] = {"alice", "bob", ""};
    const uint32_t expect_n[] = {1, 0, 1};
    for (int u = 0; u < 3; u++) {
        body_init(&b);
        msgpack_pack_map(&b.pk, 0);
        request(f->req, MG_OP_CUBE_LIST, 1, users[u], &b.sb, &r);
        expect_status(&r, MG_OK);
        mg_mp_reader rd = mg_wire_body(r.rep.body, r.rep.body_len);
        uint32_t n;
        assert_int_equal(mg_mp_read_array(&rd, &n), MG_OK);
        assert_int_equal(n, expect_n[u]);
        reply_free(&r);
        body_free(&b);
    }

    /* MEM_COUNT */
    assert_int_equal(mem_count(f->req, 1, "alice", "c1", MG_OK), 20);

    /* MEM_GET with and without the cube; one absent id is left out. */
    for (int with_cube = 0; with_cube < 2; with_cube++) {
        body_init(&b);
        msgpack_pack_map(&b.pk, 2);
        mg_mp_pack_cstr(&b.pk, "cube_id");
        with_cube ? mg_mp_pack_cstr(&b.pk, "c1") : msgpack_pack_nil(&b.pk);
        mg_mp_pack_cstr(&b.pk, "ids");
        msgpack_pack_array(&b.pk, 3);
        uint8_t id[16];
        make_id(id, 1, 3);
        mg_mp_pack_binn(&b.pk, id, 16);
        make_id(id, 1, 999);
        mg_mp_pack_binn(&b.pk, id, 16);
        make_id(id, 1, 7);
        mg_mp_pack_binn(&b.pk, id, 16);
        request(f->req, MG_OP_MEM_GET, 1, "alice", &b.sb, &r);
        expect_status(&r, MG_OK);
        mg_mp_reader rd = mg_wire_body(r.rep.body, r.rep.body_len);
        json_t *j = NULL;
        uint32_t n;
        mg_mp_reader peek = rd;
        assert_int_equal(mg_mp_read_array(&peek, &n), MG_OK);
        assert_int_equal(n, 2);
        for (uint32_t i = 0; i < n; i++) {
            uint32_t m;
            assert_int_equal(mg_mp_read_map(&peek, &m), MG_OK);
            assert_int_equal(m, 3);
            for (uint32_t q = 0; q < m; q++) {
                const char *k;
                uint32_t kl;
                assert_int_equal(mg_mp_read_str(&peek, &k, &kl), MG_OK);
                if (KEYIS("record")) {
                    const uint8_t *rec;
                    uint32_t rl;
                    mg_item it = {0};
                    assert_int_equal(mg_mp_read_bin(&peek, &rec, &rl), MG_OK);
                    assert_int_equal(mg_item_decode(rec, rl, &it, NULL), MG_OK);
                    assert_string_equal(it.memory, i == 0 ? "memory 3 of c1" : "memory 7 of c1");
                    mg_item_clear(&it);
                } else if (KEYIS("vec")) {
                    const uint8_t *v;
                    uint32_t vl;
                    float vec[DIM], want[DIM];
                    assert_int_equal(mg_mp_read_bin(&peek, &v, &vl), MG_OK);
                    assert_int_equal(vl, sizeof vec);
                    memcpy(vec, v, sizeof vec);
                    make_vec(want, i == 0 ? 3 : 7);
                    assert_memory_equal(vec, want, sizeof vec);
                } else if (KEYIS("cube_id")) {
                    char cid[16];
                    assert_int_equal(mg_mp_read_strcpy(&peek, cid, sizeof cid), MG_OK);
                    assert_string_equal(cid, "c1");
                } else {
                    fail_msg("unexpected key");
                }
            }
        }
        (void)j;
        reply_free(&r);
        body_free(&b);
    }

    /* MEM_LIST: pages of 8 in id order, then a filter. */
    uint8_t after[16];
    bool have_after = false, more = true;
    size_t listed = 0;
    while (more) {
        body_init(&b);
        msgpack_pack_map(&b.pk, 3);
        kv_str(&b, "cube_id", "c1");
        mg_mp_pack_cstr(&b.pk, "limit");
        msgpack_pack_uint32(&b.pk, 8);
        mg_mp_pack_cstr(&b.pk, "after");
        have_after ? mg_mp_pack_binn(&b.pk, after, 16) : msgpack_pack_nil(&b.pk);
        request(f->req, MG_OP_MEM_LIST, 1, "alice", &b.sb, &r);
        expect_status(&r, MG_OK);
        mg_mp_reader rd = mg_wire_body(r.rep.body, r.rep.body_len);
        uint32_t n, arr;
        assert_int_equal(mg_mp_read_map(&rd, &n), MG_OK);
        for (uint32_t i = 0; i < n; i++) {
            const char *k;
            uint32_t kl;
            assert_int_equal(mg_mp_read_str(&rd, &k, &kl), MG_OK);
            if (KEYIS("records")) {
                assert_int_equal(mg_mp_read_array(&rd, &arr), MG_OK);
                assert_true(arr <= 8);
                for (uint32_t q = 0; q < arr; q++) {
                    const uint8_t *rec;
                    uint32_t rl;
                    mg_item it = {0};
                    assert_int_equal(mg_mp_read_bin(&rd, &rec, &rl), MG_OK);
                    assert_int_equal(mg_item_decode(rec, rl, &it, NULL), MG_OK);
                    if (have_after)
                        assert_true(memcmp(it.id, after, 16) > 0);
                    memcpy(after, it.id, 16);
                    have_after = true;
                    mg_item_clear(&it);
                    listed++;
                }
            } else {
                assert_int_equal(mg_mp_read_bool(&rd, &more), MG_OK);
            }
        }
        reply_free(&r);
        body_free(&b);
    }
    assert_int_equal(listed, 20);

    body_init(&b);
    msgpack_pack_map(&b.pk, 2);
    kv_str(&b, "cube_id", "c1");
    mg_mp_pack_cstr(&b.pk, "filter");
    json_t *flt = json_pack("{s:{s:i}}", "rank", "gte", 15);
    mg_jsonmp_pack(&b.pk, flt);
    json_decref(flt);
    request(f->req, MG_OP_MEM_LIST, 1, "alice", &b.sb, &r);
    expect_status(&r, MG_OK);
    {
        mg_mp_reader rd = mg_wire_body(r.rep.body, r.rep.body_len);
        uint32_t n, arr;
        assert_int_equal(mg_mp_read_map(&rd, &n), MG_OK);
        assert_true(mg_mp_peek_str_eq(&rd, "records"));
        mg_mp_skip(&rd);
        assert_int_equal(mg_mp_read_array(&rd, &arr), MG_OK);
        assert_int_equal(arr, 5);
    }
    reply_free(&r);
    body_free(&b);

    /* USER_GET after an internal user_put; users may read only themselves. */
    mg_cmd uc = {.kind = MG_CMD_USER_PUT};
    snprintf(uc.user.user_id, sizeof uc.user.user_id, "alice");
    snprintf(uc.user.created_at, sizeof uc.user.created_at, "2026-01-01T10:00:00.000000");
    write_cmds(f->req, 1, "", &uc, 1, &r);
    expect_status(&r, MG_OK);
    reply_free(&r);
    snprintf(uc.user.user_id, sizeof uc.user.user_id, "mallory");
    uc.kind = MG_CMD_USER_PUT;
    snprintf(uc.user.created_at, sizeof uc.user.created_at, "2026-01-01T10:00:00.000000");
    write_cmds(f->req, 1, "mallory", &uc, 1, &r); /* not internal */
    expect_status(&r, MG_EPERM);
    reply_free(&r);
    const char *readers[] = {"alice", "", "bob"};
    const int expect_user[] = {MG_OK, MG_OK, MG_EPERM};
    for (int u = 0; u < 3; u++) {
        body_init(&b);
        msgpack_pack_map(&b.pk, 1);
        kv_str(&b, "user_id", "alice");
        request(f->req, MG_OP_USER_GET, 1, readers[u], &b.sb, &r);
        expect_status(&r, expect_user[u]);
        if (expect_user[u] == MG_OK) {
            mg_user usr = {0};
            assert_int_equal(mg_user_decode(r.rep.body, r.rep.body_len, &usr, NULL), MG_OK);
            assert_string_equal(usr.user_id, "alice");
            mg_user_clear(&usr);
        }
        reply_free(&r);
        body_free(&b);
    }
    body_init(&b);
    msgpack_pack_map(&b.pk, 1);
    kv_str(&b, "user_id", "mallory");
    request(f->req, MG_OP_USER_GET, 1, "", &b.sb, &r);
    expect_status(&r, MG_ENOTFOUND);
    reply_free(&r);
    body_free(&b);

    /* mem_delete, then the count drops; mem_update of an absent memory is a
     * per-command ENOTFOUND outcome. */
    mg_cmd del = {.kind = MG_CMD_MEM_DELETE};
    snprintf(del.cube_id, sizeof del.cube_id, "c1");
    del.ids = malloc(2 * 16);
    del.n_ids = 2;
    make_id(del.ids[0], 1, 0);
    make_id(del.ids[1], 1, 500);
    mg_cmd upd;
    cmd_mem_put(&upd, "c1", 1, 600, 1);
    upd.kind = MG_CMD_MEM_UPDATE;
    mg_cmd two[2] = {del, upd};
    write_cmds(f->req, 1, "alice", two, 2, &r);
    expect_status(&r, MG_OK);
    int codes[2];
    uint64_t counts[2];
    assert_int_equal(outcomes(&r, codes, counts, 2), 2);
    assert_int_equal(codes[0], MG_ENOTFOUND); /* one of the two ids is absent */
    assert_int_equal(counts[0], 1);
    assert_int_equal(codes[1], MG_ENOTFOUND);
    reply_free(&r);
    assert_int_equal(mem_count(f->req, 1, "alice", "c1", MG_OK), 19);

    fixture_free(f);
}

static void test_search(void **state)
{
    (void)state;
    const uint64_t ids[] = {1, 2};
    fixture *f = fixture_new(ids, 2);
    seed_cube(f, 1, "c1", 1, "alice", NULL, 30);
    seed_cube(f, 1, "c2", 2, "alice", NULL, 30);
    seed_cube(f, 2, "c3", 3, "alice", NULL, 30);
    seed_cube(f, 2, "bobs", 4, "bob", NULL, 30);

    float q[DIM];
    make_vec(q, 5); /* item 5 of every cube is this exact vector */
    const search_cube_arg cubes[] = {
        {"c1", 1, NULL}, {"c2", 1, NULL}, {"c3", 2, NULL}, {"bobs", 2, NULL}, {"nope", 2, NULL}};
    const uint64_t assign[] = {1, 2};
    body b;
    reply reps[4];
    search_result res;

    /* Survey: one answer, from node 1, for both groups. */
    search_body(&b, q, 10, false, true, cubes, 5, assign, 2, 1);
    size_t n = survey(f->surv, MG_OP_SEARCH, "alice", &b.sb, reps, 4);
    body_free(&b);
    assert_int_equal(n, 1);
    expect_status(&reps[0], MG_OK);
    decode_result(&reps[0], &res);
    assert_int_equal(res.n_groups, 2);
    assert_int_equal(res.n_missing, 0);
    assert_int_equal(res.n_hits, 10);
    /* The three exact matches come first (score ~1), from c1, c2 and c3. */
    bool seen[3] = {false, false, false};
    for (size_t i = 0; i < 3; i++) {
        assert_true(res.hits[i].score > 0.999);
        assert_true(res.hits[i].cube < 3);
        seen[res.hits[i].cube] = true;
        char want[32];
        snprintf(want, sizeof want, "memory 5 of %s", cubes[res.hits[i].cube].cube_id);
        assert_string_equal(res.hits[i].item.memory, want);
        assert_true(res.hits[i].has_vec);
    }
    assert_true(seen[0] && seen[1] && seen[2]);
    for (size_t i = 1; i < res.n_hits; i++) {
        assert_true(res.hits[i - 1].score >= res.hits[i].score);
        assert_true(res.hits[i].cube != 3); /* bob's cube is never searched for alice */
    }
    /* bob's cube: EPERM; "nope": ENOTFOUND. */
    assert_int_equal(res.n_errors, 2);
    assert_int_equal(res.err_cube[0], 3);
    assert_int_equal(res.err_status[0], MG_EPERM);
    assert_int_equal(res.err_cube[1], 4);
    assert_int_equal(res.err_status[1], MG_ENOTFOUND);
    result_free(&res);
    reply_free(&reps[0]);

    /* A filter per cube, strong read, no vectors, k = 4, only group 1. */
    const search_cube_arg filtered[] = {{"c1", 1, "{\"memory_type\": \"UserMemory\"}"},
                                        {"c2", 1, "{\"and\": [{\"rank\": {\"lt\": 5}}]}"}};
    search_body(&b, q, 4, true, false, filtered, 2, assign, 1, 1);
    n = survey(f->surv, MG_OP_SEARCH, "alice", &b.sb, reps, 4);
    body_free(&b);
    assert_int_equal(n, 1);
    expect_status(&reps[0], MG_OK);
    decode_result(&reps[0], &res);
    assert_int_equal(res.n_groups, 1);
    assert_int_equal(res.groups[0], 1);
    assert_int_equal(res.n_hits, 4);
    for (size_t i = 0; i < res.n_hits; i++) {
        assert_false(res.hits[i].has_vec);
        json_t *rank = json_object_get(res.hits[i].item.metadata, "rank");
        const char *type =
            json_string_value(json_object_get(res.hits[i].item.metadata, "memory_type"));
        if (res.hits[i].cube == 0)
            assert_string_equal(type, "UserMemory");
        else
            assert_true(json_integer_value(rank) < 5);
    }
    result_free(&res);
    reply_free(&reps[0]);

    /* A bad filter is reported for its cube only. */
    const search_cube_arg bad_filter[] = {{"c1", 1, "{\"rank\": {\"after\": 3}}"}, {"c2", 1, NULL}};
    search_body(&b, q, 3, false, false, bad_filter, 2, assign, 1, 1);
    n = survey(f->surv, MG_OP_SEARCH, "alice", &b.sb, reps, 4);
    body_free(&b);
    assert_int_equal(n, 1);
    decode_result(&reps[0], &res);
    assert_int_equal(res.n_errors, 1);
    assert_int_equal(res.err_cube[0], 0);
    assert_int_equal(res.err_status[0], MG_EFILTER);
    assert_int_equal(res.n_hits, 3);
    for (size_t i = 0; i < res.n_hits; i++)
        assert_int_equal(res.hits[i].cube, 1);
    result_free(&res);
    reply_free(&reps[0]);

    /* Assigned to another node: this node stays silent. */
    search_body(&b, q, 3, false, false, cubes, 3, assign, 2, 7);
    n = survey(f->surv, MG_OP_SEARCH, "alice", &b.sb, reps, 4);
    assert_int_equal(n, 0);
    /* Over rep the same request gets an empty answer. */
    request(f->req, MG_OP_SEARCH, 0, "alice", &b.sb, &reps[0]);
    expect_status(&reps[0], MG_OK);
    decode_result(&reps[0], &res);
    assert_int_equal(res.n_groups, 0);
    assert_int_equal(res.n_hits, 0);
    reply_free(&reps[0]);
    body_free(&b);

    /* A group this node does not host: missing, and the envelope says so. */
    const uint64_t other[] = {42};
    const search_cube_arg c42[] = {{"x", 42, NULL}};
    search_body(&b, q, 3, false, false, c42, 1, other, 1, 1);
    n = survey(f->surv, MG_OP_SEARCH, "alice", &b.sb, reps, 4);
    body_free(&b);
    assert_int_equal(n, 1);
    expect_status(&reps[0], MG_ENOTFOUND);
    decode_result(&reps[0], &res);
    assert_int_equal(res.n_missing, 1);
    assert_int_equal(res.missing_status[0], MG_ENOTFOUND);
    reply_free(&reps[0]);

    /* Node time for k = 10 over 1,000 memories of one cube (informative:
     * performance is measured by bench/, not asserted here). */
    for (unsigned from = 0; from < 1000; from += 250) {
        mg_cmd put;
        reply r = {0};
        if (from == 0) {
            mg_cmd both[2];
            cmd_cube_create(&both[0], "big", "alice", NULL);
            cmd_mem_put(&both[1], "big", 9, 0, 250);
            write_cmds(f->req, 1, "alice", both, 2, &r);
        } else {
            cmd_mem_put(&put, "big", 9, from, 250);
            write_cmds(f->req, 1, "alice", &put, 1, &r);
        }
        expect_status(&r, MG_OK);
        reply_free(&r);
    }
    const search_cube_arg big[] = {{"big", 1, NULL}};
    search_body(&b, q, 10, false, false, big, 1, assign, 1, 1);
    uint64_t best = UINT64_MAX;
    for (int i = 0; i < 50; i++) {
        uint64_t t0 = mg_clock_mono_ns();
        request(f->req, MG_OP_SEARCH, 0, "alice", &b.sb, &reps[0]);
        uint64_t dt = mg_clock_mono_ns() - t0;
        best = dt < best ? dt : best;
        expect_status(&reps[0], MG_OK);
        if (i == 0) {
            decode_result(&reps[0], &res);
            assert_int_equal(res.n_hits, 10);
            result_free(&res);
        }
        reply_free(&reps[0]);
    }
    printf("# search k=10 over 1000 memories (dim %d), round trip incl. inproc: best %.1f us\n",
           DIM, (double)best / 1e3);
    body_free(&b);
    fixture_free(f);
}

static void test_unknown_and_access(void **state)
{
    (void)state;
    const uint64_t ids[] = {1};
    fixture *f = fixture_new(ids, 1);
    seed_cube(f, 1, "c1", 1, "alice", "carol", 5);
    reply r = {0};
    mg_cmd cmds[2];

    /* Unknown group, for a write and a read. */
    cmd_mem_put(&cmds[0], "c1", 1, 100, 1);
    write_cmds(f->req, 99, "alice", cmds, 1, &r);
    expect_status(&r, MG_ENOTFOUND);
    assert_true(msg_has(&r, "group 99"));
    reply_free(&r);
    mem_count(f->req, 99, "alice", "c1", MG_ENOTFOUND);

    /* Unknown cube: reads and writes, nothing created. */
    body b;
    body_init(&b);
    msgpack_pack_map(&b.pk, 1);
    kv_str(&b, "cube_id", "nope");
    request(f->req, MG_OP_MEM_COUNT, 1, "alice", &b.sb, &r);
    expect_status(&r, MG_ENOTFOUND);
    assert_true(msg_has(&r, "cube nope not found"));
    reply_free(&r);
    request(f->req, MG_OP_CUBE_GET, 1, "", &b.sb, &r);
    expect_status(&r, MG_ENOTFOUND);
    reply_free(&r);
    body_free(&b);
    cmd_mem_put(&cmds[0], "nope", 1, 100, 1);
    write_cmds(f->req, 1, "alice", cmds, 1, &r);
    expect_status(&r, MG_ENOTFOUND);
    assert_true(msg_has(&r, "cube nope not found"));
    reply_free(&r);

    /* bob may not write to, read or delete alice's cube; nothing changes. */
    cmd_mem_put(&cmds[0], "c1", 1, 100, 3);
    write_cmds(f->req, 1, "bob", cmds, 1, &r);
    expect_status(&r, MG_EPERM);
    reply_free(&r);
    mg_cmd cd = {.kind = MG_CMD_CUBE_DELETE};
    snprintf(cd.cube_id, sizeof cd.cube_id, "c1");
    write_cmds(f->req, 1, "bob", &cd, 1, &r);
    expect_status(&r, MG_EPERM);
    reply_free(&r);
    /* ... nor create a cube for alice, nor put after creating his own cube
     * in a batch that also touches hers: the whole batch is refused. */
    cmd_cube_create(&cmds[0], "bob-new", "alice", NULL);
    write_cmds(f->req, 1, "bob", cmds, 1, &r);
    expect_status(&r, MG_EPERM);
    reply_free(&r);
    cmd_cube_create(&cmds[0], "bob", "bob", NULL);
    cmd_mem_put(&cmds[1], "c1", 1, 200, 1);
    write_cmds(f->req, 1, "bob", cmds, 2, &r);
    expect_status(&r, MG_EPERM);
    reply_free(&r);
    mem_count(f->req, 1, "bob", "c1", MG_EPERM);
    assert_int_equal(mem_count(f->req, 1, "alice", "c1", MG_OK), 5);
    body_init(&b);
    msgpack_pack_map(&b.pk, 1);
    kv_str(&b, "cube_id", "bob");
    request(f->req, MG_OP_CUBE_GET, 1, "", &b.sb, &r);
    expect_status(&r, MG_ENOTFOUND); /* the refused batch created nothing */
    reply_free(&r);
    body_free(&b);

    /* carol (shared with) may write; the owner may delete. */
    cmd_mem_put(&cmds[0], "c1", 1, 300, 2);
    write_cmds(f->req, 1, "carol", cmds, 1, &r);
    expect_status(&r, MG_OK);
    reply_free(&r);
    assert_int_equal(mem_count(f->req, 1, "carol", "c1", MG_OK), 7);

    /* The default-cube pattern: [cube_create{bob, owner bob}, mem_put]; the
     * second time the create is a per-command EEXIST and the put applies. */
    for (int round = 0; round < 2; round++) {
        int codes[2];
        uint64_t counts[2];
        cmd_cube_create(&cmds[0], "bob", "bob", NULL);
        cmd_mem_put(&cmds[1], "bob", 4, (unsigned)round * 10, 2);
        write_cmds(f->req, 1, "bob", cmds, 2, &r);
        expect_status(&r, MG_OK);
        assert_int_equal(outcomes(&r, codes, counts, 2), 2);
        assert_int_equal(codes[0], round == 0 ? MG_OK : MG_EEXIST);
        assert_int_equal(codes[1], MG_OK);
        reply_free(&r);
    }
    assert_int_equal(mem_count(f->req, 1, "bob", "bob", MG_OK), 4);

    snprintf(cd.cube_id, sizeof cd.cube_id, "c1");
    cd.kind = MG_CMD_CUBE_DELETE;
    write_cmds(f->req, 1, "carol", &cd, 1, &r); /* shared is not owner */
    expect_status(&r, MG_EPERM);
    reply_free(&r);
    cd.kind = MG_CMD_CUBE_DELETE;
    snprintf(cd.cube_id, sizeof cd.cube_id, "c1");
    write_cmds(f->req, 1, "alice", &cd, 1, &r);
    expect_status(&r, MG_OK);
    reply_free(&r);
    mem_count(f->req, 1, "alice", "c1", MG_ENOTFOUND);
    fixture_free(f);
}

static void test_malformed(void **state)
{
    (void)state;
    const uint64_t ids[] = {1};
    fixture *f = fixture_new(ids, 1);
    seed_cube(f, 1, "c1", 1, "alice", NULL, 3);
    reply r = {0};

    /* Not msgpack at all. */
    call_raw(f->req, "garbage!", 8, &r);
    expect_status(&r, MG_ECORRUPT);
    reply_free(&r);
    /* Empty message. */
    call_raw(f->req, "", 0, &r);
    expect_status(&r, MG_ECORRUPT);
    reply_free(&r);
    /* An envelope with an unknown op, and one from a newer version. */
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 2);
    mg_mp_pack_cstr(&pk, "op");
    msgpack_pack_uint32(&pk, 99);
    mg_mp_pack_cstr(&pk, "rid");
    msgpack_pack_uint32(&pk, 5);
    call_raw(f->req, sb.data, sb.size, &r);
    expect_status(&r, MG_ECORRUPT);
    reply_free(&r);
    msgpack_sbuffer_clear(&sb);
    msgpack_pack_map(&pk, 2);
    mg_mp_pack_cstr(&pk, "v");
    msgpack_pack_uint32(&pk, 9);
    mg_mp_pack_cstr(&pk, "op");
    msgpack_pack_uint32(&pk, MG_OP_STATUS);
    call_raw(f->req, sb.data, sb.size, &r);
    expect_status(&r, MG_EVERSION);
    reply_free(&r);
    msgpack_sbuffer_destroy(&sb);

    /* Bodies: a write whose body is not a map, whose command is garbage, or
     * has no commands; reads with missing or mistyped fields. */
    body b;
    body_init(&b);
    msgpack_pack_uint32(&b.pk, 7);
    request(f->req, MG_OP_WRITE, 1, "alice", &b.sb, &r);
    expect_status(&r, MG_ECORRUPT);
    reply_free(&r);
    body_free(&b);
    body_init(&b);
    msgpack_pack_map(&b.pk, 1);
    mg_mp_pack_cstr(&b.pk, "cmds");
    msgpack_pack_array(&b.pk, 1);
    msgpack_pack_map(&b.pk, 1);
    kv_str(&b, "op", "mem_put");
    request(f->req, MG_OP_WRITE, 1, "alice", &b.sb, &r);
    assert_true(r.rep.status == MG_ECORRUPT || r.rep.status == MG_EINVAL);
    reply_free(&r);
    body_free(&b);
    body_init(&b);
    msgpack_pack_map(&b.pk, 1);
    mg_mp_pack_cstr(&b.pk, "cmds");
    msgpack_pack_array(&b.pk, 0);
    request(f->req, MG_OP_WRITE, 1, "alice", &b.sb, &r);
    expect_status(&r, MG_EINVAL);
    reply_free(&r);
    body_free(&b);
    body_init(&b);
    msgpack_pack_map(&b.pk, 1);
    mg_mp_pack_cstr(&b.pk, "cube_id");
    msgpack_pack_uint32(&b.pk, 12);
    request(f->req, MG_OP_MEM_COUNT, 1, "alice", &b.sb, &r);
    expect_status(&r, MG_EINVAL);
    reply_free(&r);
    body_free(&b);
    body_init(&b);
    msgpack_pack_map(&b.pk, 2);
    kv_str(&b, "cube_id", "c1");
    mg_mp_pack_cstr(&b.pk, "ids");
    msgpack_pack_array(&b.pk, 1);
    mg_mp_pack_binn(&b.pk, "short", 5);
    request(f->req, MG_OP_MEM_GET, 1, "alice", &b.sb, &r);
    expect_status(&r, MG_EINVAL);
    reply_free(&r);
    body_free(&b);
    body_init(&b);
    msgpack_pack_map(&b.pk, 2);
    kv_str(&b, "cube_id", "c1");
    mg_mp_pack_cstr(&b.pk, "filter");
    json_t *flt = json_pack("{s:{s:i}}", "rank", "bogus", 1);
    mg_jsonmp_pack(&b.pk, flt);
    json_decref(flt);
    request(f->req, MG_OP_MEM_LIST, 1, "alice", &b.sb, &r);
    expect_status(&r, MG_EFILTER);
    reply_free(&r);
    body_free(&b);

    /* Searches: a vector that is not float32s, NaN, k = 0; a write over the
     * respondent socket. */
    float q[DIM];
    make_vec(q, 1);
    const search_cube_arg cubes[] = {{"c1", 1, NULL}};
    const uint64_t assign[] = {1};
    body_init(&b);
    msgpack_pack_map(&b.pk, 4);
    mg_mp_pack_cstr(&b.pk, "vec");
    mg_mp_pack_binn(&b.pk, q, 7);
    mg_mp_pack_cstr(&b.pk, "k");
    msgpack_pack_uint32(&b.pk, 3);
    mg_mp_pack_cstr(&b.pk, "cubes");
    msgpack_pack_array(&b.pk, 0);
    mg_mp_pack_cstr(&b.pk, "assign");
    msgpack_pack_array(&b.pk, 0);
    request(f->req, MG_OP_SEARCH, 0, "alice", &b.sb, &r);
    expect_status(&r, MG_EINVAL);
    reply_free(&r);
    body_free(&b);
    q[2] = NAN;
    search_body(&b, q, 3, false, false, cubes, 1, assign, 1, 1);
    request(f->req, MG_OP_SEARCH, 0, "alice", &b.sb, &r);
    expect_status(&r, MG_ENAN);
    reply_free(&r);
    body_free(&b);
    make_vec(q, 1);
    search_body(&b, q, 0, false, false, cubes, 1, assign, 1, 1);
    request(f->req, MG_OP_SEARCH, 0, "alice", &b.sb, &r);
    expect_status(&r, MG_EINVAL);
    reply_free(&r);
    reply reps[2];
    size_t n = survey(f->surv, MG_OP_WRITE, "alice", &b.sb, reps, 2);
    assert_int_equal(n, 1);
    expect_status(&reps[0], MG_EINVAL);
    reply_free(&reps[0]);
    body_free(&b);

    /* Still fine afterwards, and nothing was written. */
    assert_int_equal(mem_count(f->req, 1, "alice", "c1", MG_OK), 3);
    fixture_free(f);
}

/* Two nodes share group 5 (two voters): the follower answers NOT_LEADER with
 * the leader's id and address; follower reads are allowed when asked. */
static void *start_any_thread(void *arg);

static void test_not_leader(void **state)
{
    (void)state;
    fixture *f[2];
    mg_group_peer peers[2];
    /* This test needs one leader for its whole length: on a loaded machine
     * (CI runs tests two at a time on two cores) a late heartbeat under the
     * default 400 ms election timeout can move leadership mid-test. */
    static mg_group_tunables steady;
    mg_group_tunables_default(&steady);
    steady.election_timeout_ms = 1500;
    steady.heartbeat_timeout_ms = 100;
    for (int i = 0; i < 2; i++) {
        f[i] = calloc(1, sizeof *f[i]);
        f[i]->tunables = &steady;
        f[i]->dir = tmpdir_new();
        unsigned seq = ++url_seq;
        snprintf(f[i]->rep_url, sizeof f[i]->rep_url, "inproc://node-test-rep-%u", seq);
        snprintf(f[i]->resp_url, sizeof f[i]->resp_url, "inproc://node-test-resp-%u", seq);
        snprintf(f[i]->addrs[0], MG_ADDRESS_MAX, "127.0.0.1:%u", free_port());
        peers[i].id = (uint64_t)i + 1;
        snprintf(peers[i].address, MG_ADDRESS_MAX, "%s", f[i]->addrs[0]);
    }
    for (int i = 0; i < 2; i++) {
        f[i]->n_groups = 1;
        f[i]->groups[0] = (mg_node_group){.group_id = 5,
                                          .replica_id = (uint64_t)i + 1,
                                          .address = f[i]->addrs[0],
                                          .bootstrap = peers,
                                          .n_bootstrap = 2};
    }
    /* Both start together: each waits until the group has a leader. */
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, start_any_thread, f[1]), 0);
    node_start(f[0], 1);
    pthread_join(th, NULL);
    for (int i = 0; i < 2; i++)
        clients_open(f[i]);

    mg_node_group_status st[2];
    for (int i = 0; i < 2; i++)
        assert_true(mg_node_group_status_at(f[i]->node, 0, &st[i]));
    int leader = st[0].raft_state == RAFT_LEADER ? 0 : 1, follower = 1 - leader;
    /* The follower's snapshot may lag one loop turn behind the election. */
    for (int tries = 0; st[follower].leader_id == 0 && tries < 100; tries++) {
        usleep(10000);
        mg_node_group_status_at(f[follower]->node, 0, &st[follower]);
    }
    assert_int_equal(st[leader].raft_state, RAFT_LEADER);
    assert_int_equal(st[follower].leader_id, (uint64_t)leader + 1);

    /* Write to the follower: NOT_LEADER with the hint, nothing applied. */
    reply r = {0};
    mg_cmd cmds[2];
    cmd_cube_create(&cmds[0], "c5", "alice", NULL);
    cmd_mem_put(&cmds[1], "c5", 5, 0, 4);
    write_cmds(f[follower]->req, 5, "alice", cmds, 2, &r);
    expect_status(&r, MG_ENOTLEADER);
    assert_int_equal(r.rep.leader_id, (uint64_t)leader + 1);
    assert_int_equal(r.rep.leader_len, strlen(peers[leader].address));
    assert_memory_equal(r.rep.leader, peers[leader].address, r.rep.leader_len);
    reply_free(&r);

    /* To the leader: applied (after replication to the follower: quorum 2). */
    cmd_cube_create(&cmds[0], "c5", "alice", NULL);
    cmd_mem_put(&cmds[1], "c5", 5, 0, 4);
    write_cmds(f[leader]->req, 5, "alice", cmds, 2, &r);
    expect_status(&r, MG_OK);
    reply_free(&r);

    /* Reads: the follower refuses by default, answers when told follower. */
    mem_count(f[follower]->req, 5, "alice", "c5", MG_ENOTLEADER);
    assert_int_equal(mem_count(f[leader]->req, 5, "alice", "c5", MG_OK), 4);
    uint64_t count = 0;
    for (int tries = 0; tries < 200 && count != 4; tries++) {
        body b;
        body_init(&b);
        msgpack_pack_map(&b.pk, 2);
        kv_str(&b, "cube_id", "c5");
        mg_mp_pack_cstr(&b.pk, "follower");
        msgpack_pack_true(&b.pk);
        request(f[follower]->req, MG_OP_MEM_COUNT, 5, "alice", &b.sb, &r);
        if (r.rep.status == MG_OK) {
            mg_mp_reader rd = mg_wire_body(r.rep.body, r.rep.body_len);
            assert_int_equal(mg_mp_read_u64(&rd, &count), MG_OK);
        } else {
            expect_status(&r, MG_ENOTFOUND); /* not replicated yet */
            usleep(10000);
        }
        reply_free(&r);
        body_free(&b);
    }
    assert_int_equal(count, 4);

    /* A search assigned to the follower: missing with the hint. */
    float q[DIM];
    make_vec(q, 1);
    const search_cube_arg cubes[] = {{"c5", 5, NULL}};
    const uint64_t assign[] = {5};
    body b;
    search_body(&b, q, 2, false, false, cubes, 1, assign, 1, (uint64_t)follower + 1);
    reply reps[2];
    size_t n = survey(f[follower]->surv, MG_OP_SEARCH, "alice", &b.sb, reps, 2);
    body_free(&b);
    assert_int_equal(n, 1);
    expect_status(&reps[0], MG_ENOTLEADER);
    assert_int_equal(reps[0].rep.leader_id, (uint64_t)leader + 1);
    search_result res;
    decode_result(&reps[0], &res);
    assert_int_equal(res.n_missing, 1);
    assert_int_equal(res.missing_leader[0], (uint64_t)leader + 1);
    reply_free(&reps[0]);
    /* Strong search on the leader finds them. */
    search_body(&b, q, 2, true, false, cubes, 1, assign, 1, (uint64_t)leader + 1);
    n = survey(f[leader]->surv, MG_OP_SEARCH, "alice", &b.sb, reps, 2);
    body_free(&b);
    assert_int_equal(n, 1);
    expect_status(&reps[0], MG_OK);
    decode_result(&reps[0], &res);
    assert_int_equal(res.n_hits, 2);
    assert_string_equal(res.hits[0].item.memory, "memory 1 of c5");
    result_free(&res);
    reply_free(&reps[0]);

    for (int i = 0; i < 2; i++) {
        clients_close(f[i]);
        mg_node_stop(f[i]->node);
        tmpdir_free(f[i]->dir);
        free(f[i]);
    }
}

/* Three nodes share group 7; the leader's node stops; a new leader is elected
 * and serves every acknowledged write (a new leader reads only after its
 * catch-up barrier). */
static void *start_any_thread(void *arg)
{
    node_start(arg, ((fixture *)arg)->groups[0].replica_id);
    return NULL;
}

static void test_failover(void **state)
{
    (void)state;
    fixture *f[3];
    mg_group_peer peers[3];
    for (int i = 0; i < 3; i++) {
        f[i] = calloc(1, sizeof *f[i]);
        f[i]->dir = tmpdir_new();
        unsigned seq = ++url_seq;
        snprintf(f[i]->rep_url, sizeof f[i]->rep_url, "inproc://node-test-rep-%u", seq);
        snprintf(f[i]->resp_url, sizeof f[i]->resp_url, "inproc://node-test-resp-%u", seq);
        snprintf(f[i]->addrs[0], MG_ADDRESS_MAX, "127.0.0.1:%u", free_port());
        peers[i].id = (uint64_t)i + 1;
        snprintf(peers[i].address, MG_ADDRESS_MAX, "%s", f[i]->addrs[0]);
    }
    pthread_t th[3];
    for (int i = 0; i < 3; i++) {
        f[i]->n_groups = 1;
        f[i]->groups[0] = (mg_node_group){.group_id = 7,
                                          .replica_id = (uint64_t)i + 1,
                                          .address = f[i]->addrs[0],
                                          .bootstrap = peers,
                                          .n_bootstrap = 3};
        assert_int_equal(pthread_create(&th[i], NULL, start_any_thread, f[i]), 0);
    }
    for (int i = 0; i < 3; i++) {
        pthread_join(th[i], NULL);
        clients_open(f[i]);
    }
    int leader = -1;
    for (int i = 0; i < 3; i++) {
        mg_node_group_status st;
        mg_node_group_status_at(f[i]->node, 0, &st);
        if (st.raft_state == RAFT_LEADER)
            leader = i;
    }
    assert_true(leader >= 0);
    reply r = {0};
    mg_cmd cmds[2];
    cmd_cube_create(&cmds[0], "c7", "alice", NULL);
    cmd_mem_put(&cmds[1], "c7", 7, 0, 5);
    write_cmds(f[leader]->req, 7, "alice", cmds, 2, &r);
    expect_status(&r, MG_OK);
    reply_free(&r);
    for (unsigned i = 1; i < 6; i++) {
        cmd_mem_put(&cmds[0], "c7", 7, i * 10, 5);
        write_cmds(f[leader]->req, 7, "alice", cmds, 1, &r);
        expect_status(&r, MG_OK);
        reply_free(&r);
    }
    clients_close(f[leader]);
    mg_node_stop(f[leader]->node);
    f[leader]->node = NULL;

    /* A survivor takes over; its first answer already holds all 30. */
    uint64_t t0 = mg_clock_mono_ns();
    int next = -1;
    while (next < 0 && mg_clock_mono_ns() - t0 < 10000000000u) {
        for (int i = 0; i < 3; i++) {
            mg_node_group_status st;
            if (i != leader && mg_node_group_status_at(f[i]->node, 0, &st) &&
                st.raft_state == RAFT_LEADER)
                next = i;
        }
        usleep(5000);
    }
    assert_true(next >= 0);
    printf("# new leader after %.0f ms\n", (double)(mg_clock_mono_ns() - t0) / 1e6);
    uint64_t count = UINT64_MAX;
    for (int tries = 0; tries < 500; tries++) {
        body b;
        body_init(&b);
        msgpack_pack_map(&b.pk, 1);
        kv_str(&b, "cube_id", "c7");
        request(f[next]->req, MG_OP_MEM_COUNT, 7, "alice", &b.sb, &r);
        body_free(&b);
        if (r.rep.status == MG_OK) {
            mg_mp_reader rd = mg_wire_body(r.rep.body, r.rep.body_len);
            assert_int_equal(mg_mp_read_u64(&rd, &count), MG_OK);
            reply_free(&r);
            break;
        }
        expect_status(&r, MG_EBUSY); /* catching up: the only other answer allowed */
        reply_free(&r);
        usleep(2000);
    }
    assert_int_equal(count, 30);
    /* And the new leader takes writes. */
    cmd_mem_put(&cmds[0], "c7", 7, 100, 1);
    write_cmds(f[next]->req, 7, "alice", cmds, 1, &r);
    expect_status(&r, MG_OK);
    reply_free(&r);
    for (int i = 0; i < 3; i++) {
        if (i != leader) {
            clients_close(f[i]);
            mg_node_stop(f[i]->node);
        }
        tmpdir_free(f[i]->dir);
        free(f[i]);
    }
}

/* A group with two voters where the other one never shows up: no leader. */
static void test_no_quorum(void **state)
{
    (void)state;
    fixture *f = calloc(1, sizeof *f);
    f->dir = tmpdir_new();
    unsigned seq = ++url_seq;
    snprintf(f->rep_url, sizeof f->rep_url, "inproc://node-test-rep-%u", seq);
    snprintf(f->resp_url, sizeof f->resp_url, "inproc://node-test-resp-%u", seq);
    mg_group_peer peers[2] = {{.id = 1}, {.id = 2}};
    snprintf(peers[0].address, MG_ADDRESS_MAX, "127.0.0.1:%u", free_port());
    snprintf(peers[1].address, MG_ADDRESS_MAX, "127.0.0.1:%u", free_port());
    f->groups[0] = (mg_node_group){.group_id = 3,
                                   .replica_id = 1,
                                   .address = peers[0].address,
                                   .bootstrap = peers,
                                   .n_bootstrap = 2};
    mg_node_config cfg = {.data_dir = f->dir,
                          .node_id = 1,
                          .rep_url = f->rep_url,
                          .groups = f->groups,
                          .n_groups = 1};
    mg_error err = {0};
    assert_int_equal(mg_node_start(&cfg, &f->node, &err), MG_OK);
    assert_int_equal(mg_node_wait_ready(f->node, 300, &err), MG_ETIMEDOUT);
    assert_non_null(strstr(err.msg, "group 3"));
    assert_false(mg_node_ready(f->node));
    assert_int_equal(nng_req0_open(&f->req), 0);
    assert_int_equal(nng_socket_set_ms(f->req, NNG_OPT_RECVTIMEO, 10000), 0);
    assert_int_equal(nng_dial(f->req, f->rep_url, NULL, 0), 0);
    reply r = {0};
    mg_cmd c;
    cmd_cube_create(&c, "c", "alice", NULL);
    write_cmds(f->req, 3, "alice", &c, 1, &r);
    expect_status(&r, MG_ENOTLEADER);
    assert_int_equal(r.rep.leader_id, 0);
    reply_free(&r);
    nng_close(f->req);
    mg_node_stop(f->node);
    tmpdir_free(f->dir);
    free(f);
}

/* Concurrent writers over their own req sockets: every write acknowledged,
 * every memory there (exercises batching on the loop). */
typedef struct writer_arg {
    fixture *f;
    unsigned w;
    int failures;
} writer_arg;

static void *writer_main(void *p)
{
    writer_arg *a = p;
    nng_socket s;
    if (nng_req0_open(&s) != 0 || nng_dial(s, a->f->rep_url, NULL, 0) != 0) {
        a->failures++;
        return NULL;
    }
    nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, 10000);
    for (unsigned i = 0; i < 25; i++) {
        mg_cmd c;
        reply r = {0};
        cmd_mem_put(&c, "shared", 1, a->w * 100 + i, 1);
        write_cmds(s, 1, "alice", &c, 1, &r);
        if (r.rep.status != MG_OK)
            a->failures++;
        reply_free(&r);
    }
    nng_close(s);
    return NULL;
}

static void test_concurrent_writes(void **state)
{
    (void)state;
    const uint64_t ids[] = {1};
    fixture *f = fixture_new(ids, 1);
    seed_cube(f, 1, "shared", 1, "alice", NULL, 1); /* item 0 */
    pthread_t th[4];
    writer_arg args[4];
    for (unsigned i = 0; i < 4; i++) {
        args[i] = (writer_arg){.f = f, .w = i + 1};
        assert_int_equal(pthread_create(&th[i], NULL, writer_main, &args[i]), 0);
    }
    for (unsigned i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(args[i].failures, 0);
    }
    assert_int_equal(mem_count(f->req, 1, "alice", "shared", MG_OK), 101);
    fixture_free(f);
}

/* Every acknowledged write survives a stop and a start on the same data. */
static void test_restart(void **state)
{
    (void)state;
    const uint64_t ids[] = {1, 2};
    fixture *f = fixture_new(ids, 2);
    seed_cube(f, 1, "c1", 1, "alice", NULL, 10);
    seed_cube(f, 2, "c2", 2, "alice", NULL, 10);
    for (unsigned i = 0; i < 10; i++) {
        mg_cmd c;
        reply r = {0};
        cmd_mem_put(&c, i % 2 ? "c2" : "c1", i % 2 ? 2 : 1, 100 + i * 10, 3);
        write_cmds(f->req, i % 2 ? 2 : 1, "alice", &c, 1, &r);
        expect_status(&r, MG_OK);
        reply_free(&r);
    }
    assert_int_equal(mem_count(f->req, 1, "alice", "c1", MG_OK), 25);
    clients_close(f);
    mg_node_stop(f->node);
    f->node = NULL;

    node_start(f, 1);
    clients_open(f);
    assert_int_equal(mem_count(f->req, 1, "alice", "c1", MG_OK), 25);
    assert_int_equal(mem_count(f->req, 2, "alice", "c2", MG_OK), 25);
    float q[DIM];
    make_vec(q, 3);
    const search_cube_arg cubes[] = {{"c1", 1, NULL}, {"c2", 2, NULL}};
    const uint64_t assign[] = {1, 2};
    body b;
    reply reps[2];
    search_result res;
    search_body(&b, q, 5, false, false, cubes, 2, assign, 2, 1);
    size_t n = survey(f->surv, MG_OP_SEARCH, "alice", &b.sb, reps, 2);
    body_free(&b);
    assert_int_equal(n, 1);
    decode_result(&reps[0], &res);
    assert_int_equal(res.n_groups, 2);
    assert_int_equal(res.n_hits, 5);
    assert_true(res.hits[0].score > 0.999);
    result_free(&res);
    reply_free(&reps[0]);
    /* And it still takes writes. */
    mg_cmd c;
    reply r = {0};
    cmd_mem_put(&c, "c1", 1, 900, 1);
    write_cmds(f->req, 1, "alice", &c, 1, &r);
    expect_status(&r, MG_OK);
    reply_free(&r);
    assert_int_equal(mem_count(f->req, 1, "alice", "c1", MG_OK), 26);
    fixture_free(f);
}

static void test_bad_config(void **state)
{
    (void)state;
    mg_node *n = NULL;
    mg_error err = {0};
    mg_node_config cfg = {.data_dir = "/tmp", .rep_url = NULL};
    assert_int_equal(mg_node_start(&cfg, &n, &err), MG_EINVAL);
    /* A URL that cannot be listened on: nothing is left running. */
    char *dir = tmpdir_new();
    cfg = (mg_node_config){.data_dir = dir, .rep_url = "bogus://nowhere"};
    assert_int_not_equal(mg_node_start(&cfg, &n, &err), MG_OK);
    assert_non_null(strstr(err.msg, "bogus://nowhere"));
    /* A group listed twice; two groups on one raft address (the second
     * cannot listen): errors, and the first group is closed again. */
    char addr[MG_ADDRESS_MAX];
    snprintf(addr, sizeof addr, "127.0.0.1:%u", free_port());
    mg_group_peer p1 = {.id = 1}, p2 = {.id = 1};
    snprintf(p1.address, sizeof p1.address, "%s", addr);
    snprintf(p2.address, sizeof p2.address, "%s", addr);
    mg_node_group groups[2] = {
        {.group_id = 1, .replica_id = 1, .address = addr, .bootstrap = &p1, .n_bootstrap = 1},
        {.group_id = 1, .replica_id = 1, .address = addr, .bootstrap = &p2, .n_bootstrap = 1}};
    cfg = (mg_node_config){
        .data_dir = dir, .rep_url = "inproc://node-test-bad", .groups = groups, .n_groups = 2};
    assert_int_equal(mg_node_start(&cfg, &n, &err), MG_EINVAL);
    groups[1].group_id = 2;
    assert_int_not_equal(mg_node_start(&cfg, &n, &err), MG_OK);
    assert_non_null(strstr(err.msg, "group 2"));
    /* The same data directory opens fine afterwards. */
    cfg.n_groups = 1;
    assert_int_equal(mg_node_start(&cfg, &n, &err), MG_OK);
    assert_int_equal(mg_node_wait_ready(n, 5000, &err), MG_OK);
    mg_node_stop(n);
    mg_node_stop(NULL);
    tmpdir_free(dir);
}

/* A request still queued when its deadline passes is answered ETIMEDOUT:
 * one worker is kept busy listing 10,000 memories while a count with a 1 ms
 * deadline waits behind it. */
typedef struct lister_arg {
    fixture *f;
    int status;
} lister_arg;

static void *lister_main(void *p)
{
    lister_arg *a = p;
    nng_socket s;
    reply r = {0};
    body b;
    assert_int_equal(nng_req0_open(&s), 0);
    nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, 10000);
    assert_int_equal(nng_dial(s, a->f->rep_url, NULL, 0), 0);
    body_init(&b);
    msgpack_pack_map(&b.pk, 2);
    kv_str(&b, "cube_id", "big");
    mg_mp_pack_cstr(&b.pk, "limit");
    msgpack_pack_uint32(&b.pk, 10000);
    request(s, MG_OP_MEM_LIST, 1, "alice", &b.sb, &r);
    a->status = r.rep.status;
    reply_free(&r);
    body_free(&b);
    nng_close(s);
    return NULL;
}

static void test_deadline(void **state)
{
    (void)state;
    const uint64_t ids[] = {1};
    fixture *f = fixture_new_workers(ids, 1, 1);
    seed_cube(f, 1, "big", 1, "alice", NULL, 2500);
    for (unsigned from = 2500; from < 10000; from += 2500) {
        mg_cmd c;
        reply r = {0};
        cmd_mem_put(&c, "big", 1, from, 2500);
        write_cmds(f->req, 1, "alice", &c, 1, &r);
        expect_status(&r, MG_OK);
        reply_free(&r);
    }
    bool timed_out = false;
    for (int attempt = 0; attempt < 5 && !timed_out; attempt++) {
        pthread_t th;
        lister_arg la = {.f = f};
        assert_int_equal(pthread_create(&th, NULL, lister_main, &la), 0);
        usleep(3000); /* the listing is running on the only worker */
        body b;
        reply r = {0};
        body_init(&b);
        msgpack_pack_map(&b.pk, 1);
        kv_str(&b, "cube_id", "big");
        request_deadline(f->req, MG_OP_MEM_COUNT, 1, "alice", &b.sb, 1, &r);
        assert_true(r.rep.status == MG_OK || r.rep.status == MG_ETIMEDOUT);
        timed_out = r.rep.status == MG_ETIMEDOUT;
        reply_free(&r);
        body_free(&b);
        pthread_join(th, NULL);
        assert_int_equal(la.status, MG_OK);
    }
    assert_true(timed_out);
    assert_int_equal(mem_count(f->req, 1, "alice", "big", MG_OK), 10000);
    fixture_free(f);
}

/* ---- cluster ops: runtime groups, membership, meta, ownership ----------- */

/* GROUP_OPEN of `group` as replica `replica` at addr; bootstrap = this
 * replica alone, or nil (join). */
static void group_open(nng_socket s, uint64_t group, uint64_t replica, const char *addr,
                       bool bootstrap, reply *out)
{
    body b;
    body_init(&b);
    msgpack_pack_map(&b.pk, 3);
    mg_mp_pack_cstr(&b.pk, "replica");
    msgpack_pack_uint64(&b.pk, replica);
    kv_str(&b, "address", addr);
    mg_mp_pack_cstr(&b.pk, "bootstrap");
    if (bootstrap) {
        msgpack_pack_array(&b.pk, 1);
        msgpack_pack_map(&b.pk, 2);
        mg_mp_pack_cstr(&b.pk, "id");
        msgpack_pack_uint64(&b.pk, replica);
        kv_str(&b, "address", addr);
    } else {
        msgpack_pack_nil(&b.pk);
    }
    request(s, MG_OP_GROUP_OPEN, group, "", &b.sb, out);
    body_free(&b);
}

static void group_close(nng_socket s, uint64_t group, bool destroy, reply *out)
{
    body b;
    body_init(&b);
    msgpack_pack_map(&b.pk, 1);
    mg_mp_pack_cstr(&b.pk, "destroy");
    destroy ? msgpack_pack_true(&b.pk) : msgpack_pack_false(&b.pk);
    request(s, MG_OP_GROUP_CLOSE, group, "", &b.sb, out);
    body_free(&b);
}

/* GROUP_MEMBER; on MG_OK returns the number of voters (ids in voters). */
static size_t member_change(nng_socket s, uint64_t group, const char *action, uint64_t id,
                           const char *addr, int expect, uint64_t *voters, size_t cap)
{
    body b;
    reply r = {0};
    body_init(&b);
    msgpack_pack_map(&b.pk, addr ? 3 : 2);
    kv_str(&b, "action", action);
    mg_mp_pack_cstr(&b.pk, "id");
    msgpack_pack_uint64(&b.pk, id);
    if (addr)
        kv_str(&b, "address", addr);
    request_deadline(s, MG_OP_GROUP_MEMBER, group, "", &b.sb, 20000, &r);
    body_free(&b);
    expect_status(&r, expect);
    uint32_t n = 0;
    if (expect == MG_OK) {
        mg_mp_reader rd = mg_wire_body(r.rep.body, r.rep.body_len);
        uint32_t m;
        assert_int_equal(mg_mp_read_map(&rd, &m), MG_OK);
        assert_int_equal(m, 1);
        assert_true(mg_mp_peek_str_eq(&rd, "voters"));
        mg_mp_skip(&rd);
        assert_int_equal(mg_mp_read_array(&rd, &n), MG_OK);
        assert_true(n <= cap);
        for (uint32_t i = 0; i < n; i++)
            assert_int_equal(mg_mp_read_u64(&rd, &voters[i]), MG_OK);
    }
    reply_free(&r);
    return n;
}

/* BARRIER on the group's leader: the applied index. */
static uint64_t barrier(nng_socket s, uint64_t group)
{
    reply r = {0};
    uint64_t applied = 0;
    uint32_t m;
    request(s, MG_OP_BARRIER, group, "", NULL, &r);
    expect_status(&r, MG_OK);
    mg_mp_reader rd = mg_wire_body(r.rep.body, r.rep.body_len);
    assert_int_equal(mg_mp_read_map(&rd, &m), MG_OK);
    assert_true(mg_mp_peek_str_eq(&rd, "applied"));
    mg_mp_skip(&rd);
    assert_int_equal(mg_mp_read_u64(&rd, &applied), MG_OK);
    reply_free(&r);
    return applied;
}

/* NODE_INFO: the hosted group ids (sorted by the caller's expectations). */
static size_t node_info_groups(nng_socket s, uint64_t node_id, uint64_t *groups, size_t cap)
{
    reply r = {0};
    uint32_t m, n = 0;
    request(s, MG_OP_NODE_INFO, 0, "", NULL, &r);
    expect_status(&r, MG_OK);
    mg_mp_reader rd = mg_wire_body(r.rep.body, r.rep.body_len);
    assert_int_equal(mg_mp_read_map(&rd, &m), MG_OK);
    assert_int_equal(m, 8);
    for (uint32_t i = 0; i < m; i++) {
        bool is_node = mg_mp_peek_str_eq(&rd, "node"), is_groups = mg_mp_peek_str_eq(&rd, "groups");
        mg_mp_skip(&rd);
        if (is_node) {
            uint64_t id;
            assert_int_equal(mg_mp_read_u64(&rd, &id), MG_OK);
            assert_int_equal(id, node_id);
        } else if (is_groups) {
            assert_int_equal(mg_mp_read_array(&rd, &n), MG_OK);
            assert_true(n <= cap);
            for (uint32_t j = 0; j < n; j++)
                assert_int_equal(mg_mp_read_u64(&rd, &groups[j]), MG_OK);
        } else {
            assert_int_equal(mg_mp_skip(&rd), MG_OK);
        }
    }
    reply_free(&r);
    return n;
}

static bool group_file_exists(const char *dir, uint64_t group, const char *sub)
{
    char path[512];
    struct stat st;
    snprintf(path, sizeof path, "%s/group-%llu%s%s", dir, (unsigned long long)group,
             sub ? "/" : "", sub ? sub : "");
    return stat(path, &st) == 0;
}

/* Status of `group` on node n; false when not hosted. */
static bool group_status(mg_node *n, uint64_t group, mg_node_group_status *st)
{
    for (size_t i = 0; mg_node_group_status_at(n, i, st); i++)
        if (st->group_id == group)
            return true;
    return false;
}

/* MEM_COUNT with "follower": true (a replica that does not lead). */
static uint64_t follower_count(nng_socket s, uint64_t group, const char *cube)
{
    body b;
    reply r = {0};
    uint64_t count = UINT64_MAX;
    body_init(&b);
    msgpack_pack_map(&b.pk, 2);
    kv_str(&b, "cube_id", cube);
    mg_mp_pack_cstr(&b.pk, "follower");
    msgpack_pack_true(&b.pk);
    request(s, MG_OP_MEM_COUNT, group, "", &b.sb, &r);
    expect_status(&r, MG_OK);
    mg_mp_reader rd = mg_wire_body(r.rep.body, r.rep.body_len);
    assert_int_equal(mg_mp_read_u64(&rd, &count), MG_OK);
    reply_free(&r);
    body_free(&b);
    return count;
}

static void test_group_open_close(void **state)
{
    (void)state;
    fixture *f = fixture_new(NULL, 0);
    uint64_t groups[8];
    reply r = {0};
    char addr[MG_ADDRESS_MAX];
    snprintf(addr, sizeof addr, "127.0.0.1:%u", free_port());
    assert_int_equal(mg_node_n_groups(f->node), 0);
    assert_int_equal(node_info_groups(f->req, 1, groups, 8), 0);
    /* Not hosted yet: reads answer MG_ENOTFOUND. */
    mem_count(f->req, 3, "alice", "c3", MG_ENOTFOUND);

    group_open(f->req, 3, 1, addr, true, &r);
    expect_status(&r, MG_OK);
    reply_free(&r);
    group_open(f->req, 3, 1, addr, true, &r); /* again: already hosted */
    expect_status(&r, MG_OK);
    reply_free(&r);
    /* Cluster ops are internal. */
    request(f->req, MG_OP_GROUP_CLOSE, 3, "alice", NULL, &r);
    expect_status(&r, MG_EPERM);
    reply_free(&r);
    mg_error err = {0};
    assert_int_equal(mg_node_wait_ready(f->node, 5000, &err), MG_OK);
    assert_int_equal(node_info_groups(f->req, 1, groups, 8), 1);
    assert_int_equal(groups[0], 3);
    assert_true(group_file_exists(f->dir, 3, "replica"));
    seed_cube(f, 3, "c3", 3, "alice", NULL, 6);

    /* MEM_LIST "vecs": the stored vector of every record, in id order. */
    body b;
    body_init(&b);
    msgpack_pack_map(&b.pk, 2);
    kv_str(&b, "cube_id", "c3");
    mg_mp_pack_cstr(&b.pk, "vecs");
    msgpack_pack_true(&b.pk);
    request(f->req, MG_OP_MEM_LIST, 3, "alice", &b.sb, &r);
    body_free(&b);
    expect_status(&r, MG_OK);
    mg_mp_reader rd = mg_wire_body(r.rep.body, r.rep.body_len);
    uint32_t m, n_rec = 0, n_vec = 0;
    bool saw_vecs = false;
    assert_int_equal(mg_mp_read_map(&rd, &m), MG_OK);
    assert_int_equal(m, 3);
    for (uint32_t i = 0; i < m; i++) {
        bool is_rec = mg_mp_peek_str_eq(&rd, "records"), is_vecs = mg_mp_peek_str_eq(&rd, "vecs");
        mg_mp_skip(&rd);
        if (is_rec) {
            assert_int_equal(mg_mp_read_array(&rd, &n_rec), MG_OK);
            for (uint32_t j = 0; j < n_rec; j++)
                mg_mp_skip(&rd);
        } else if (is_vecs) {
            saw_vecs = true;
            assert_int_equal(mg_mp_read_array(&rd, &n_vec), MG_OK);
            for (uint32_t j = 0; j < n_vec; j++) {
                const uint8_t *v;
                uint32_t vl;
                float want[DIM], got[DIM];
                assert_int_equal(mg_mp_read_bin(&rd, &v, &vl), MG_OK);
                assert_int_equal(vl, DIM * sizeof(float));
                memcpy(got, v, sizeof got);
                make_vec(want, j); /* ids are in put order: memory j */
                for (unsigned d = 0; d < DIM; d++)
                    assert_true(fabsf(got[d] - want[d]) < 1e-6f);
            }
        } else {
            mg_mp_skip(&rd);
        }
    }
    assert_true(saw_vecs);
    assert_int_equal(n_rec, 6);
    assert_int_equal(n_vec, 6);
    reply_free(&r);

    /* A restart reopens the replica from its "replica" file. */
    clients_close(f);
    mg_node_stop(f->node);
    node_start(f, 1);
    clients_open(f);
    assert_int_equal(mg_node_n_groups(f->node), 1);
    assert_int_equal(mem_count(f->req, 3, "alice", "c3", MG_OK), 6);

    /* Close without destroy: not hosted, files kept, not reopened. */
    group_close(f->req, 3, false, &r);
    expect_status(&r, MG_OK);
    reply_free(&r);
    mem_count(f->req, 3, "alice", "c3", MG_ENOTFOUND);
    assert_int_equal(node_info_groups(f->req, 1, groups, 8), 0);
    assert_true(group_file_exists(f->dir, 3, "store"));
    assert_false(group_file_exists(f->dir, 3, "replica"));
    clients_close(f);
    mg_node_stop(f->node);
    node_start(f, 1);
    clients_open(f);
    assert_int_equal(mg_node_n_groups(f->node), 0);
    /* Open it again (same slot): the data is still there. */
    group_open(f->req, 3, 1, addr, true, &r);
    expect_status(&r, MG_OK);
    reply_free(&r);
    assert_int_equal(mg_node_wait_ready(f->node, 5000, &err), MG_OK);
    assert_int_equal(mem_count(f->req, 3, "alice", "c3", MG_OK), 6);
    /* Close with destroy: the directory is gone; closing again is fine. */
    group_close(f->req, 3, true, &r);
    expect_status(&r, MG_OK);
    reply_free(&r);
    assert_false(group_file_exists(f->dir, 3, NULL));
    group_close(f->req, 3, true, &r);
    expect_status(&r, MG_OK);
    reply_free(&r);
    /* Malformed: GROUP_OPEN without a replica id; nothing opened. */
    body_init(&b);
    msgpack_pack_map(&b.pk, 1);
    kv_str(&b, "address", addr);
    request(f->req, MG_OP_GROUP_OPEN, 4, "", &b.sb, &r);
    body_free(&b);
    expect_status(&r, MG_EINVAL);
    reply_free(&r);
    assert_int_equal(mg_node_n_groups(f->node), 0);
    assert_false(group_file_exists(f->dir, 4, NULL));
    fixture_free(f);
}

static void test_group_membership(void **state)
{
    (void)state;
    fixture *a = fixture_new(NULL, 0);
    fixture *b = calloc(1, sizeof *b);
    b->dir = tmpdir_new();
    unsigned seq = ++url_seq;
    snprintf(b->rep_url, sizeof b->rep_url, "inproc://node-test-rep-%u", seq);
    snprintf(b->resp_url, sizeof b->resp_url, "inproc://node-test-resp-%u", seq);
    node_start(b, 2);
    clients_open(b);
    char addr_a[MG_ADDRESS_MAX], addr_b[MG_ADDRESS_MAX];
    snprintf(addr_a, sizeof addr_a, "127.0.0.1:%u", free_port());
    snprintf(addr_b, sizeof addr_b, "127.0.0.1:%u", free_port());
    reply r = {0};
    mg_error err = {0};
    uint64_t voters[4];

    group_open(a->req, 5, 1, addr_a, true, &r);
    expect_status(&r, MG_OK);
    reply_free(&r);
    assert_int_equal(mg_node_wait_ready(a->node, 5000, &err), MG_OK);
    seed_cube(a, 5, "c5", 5, "alice", NULL, 20);

    /* B joins (no bootstrap), then A's leader adds it. */
    group_open(b->req, 5, 2, addr_b, false, &r);
    expect_status(&r, MG_OK);
    reply_free(&r);
    member_change(b->req, 5, "add", 2, addr_b, MG_ENOTLEADER, voters, 4);
    assert_int_equal(member_change(a->req, 5, "add", 2, addr_b, MG_OK, voters, 4), 2);
    assert_true((voters[0] == 1 && voters[1] == 2) || (voters[0] == 2 && voters[1] == 1));
    /* Again: already a voter. */
    assert_int_equal(member_change(a->req, 5, "add", 2, addr_b, MG_OK, voters, 4), 2);

    /* B catches up: same applied index, same data. */
    uint64_t applied = barrier(a->req, 5);
    mg_node_group_status st;
    uint64_t t0 = mg_clock_mono_ns();
    while (!(group_status(b->node, 5, &st) && st.last_applied >= applied)) {
        assert_true(mg_clock_mono_ns() - t0 < 10000000000ull);
        usleep(10000);
    }
    assert_int_equal(follower_count(b->req, 5, "c5"), 20);

    /* Transfer to B: A no longer leads, B does. */
    assert_int_equal(member_change(a->req, 5, "transfer", 2, NULL, MG_OK, voters, 4), 2);
    mg_cmd c;
    cmd_mem_put(&c, "c5", 5, 100, 2);
    write_cmds(a->req, 5, "alice", &c, 1, &r);
    expect_status(&r, MG_ENOTLEADER);
    assert_int_equal(r.rep.leader_id, 2);
    reply_free(&r);
    t0 = mg_clock_mono_ns();
    while (mg_node_wait_ready(b->node, 100, &err) != MG_OK)
        assert_true(mg_clock_mono_ns() - t0 < 10000000000ull);
    cmd_mem_put(&c, "c5", 5, 100, 2);
    write_cmds(b->req, 5, "alice", &c, 1, &r);
    expect_status(&r, MG_OK);
    reply_free(&r);

    /* Remove A on the new leader, twice; then A's replica is destroyed. */
    assert_int_equal(member_change(b->req, 5, "remove", 1, NULL, MG_OK, voters, 4), 1);
    assert_int_equal(voters[0], 2);
    assert_int_equal(member_change(b->req, 5, "remove", 1, NULL, MG_OK, voters, 4), 1);
    assert_true(group_file_exists(a->dir, 5, "raft"));
    group_close(a->req, 5, true, &r);
    expect_status(&r, MG_OK);
    reply_free(&r);
    assert_false(group_file_exists(a->dir, 5, NULL));
    mem_count(a->req, 5, "alice", "c5", MG_ENOTFOUND);
    /* B alone still takes writes and holds everything. */
    cmd_mem_put(&c, "c5", 5, 200, 3);
    write_cmds(b->req, 5, "alice", &c, 1, &r);
    expect_status(&r, MG_OK);
    reply_free(&r);
    assert_int_equal(mem_count(b->req, 5, "alice", "c5", MG_OK), 25);
    fixture_free(a);
    fixture_free(b);
}

static void test_meta_get(void **state)
{
    (void)state;
    fixture *f = fixture_new(NULL, 0);
    char addr[MG_ADDRESS_MAX];
    snprintf(addr, sizeof addr, "127.0.0.1:%u", free_port());
    reply r = {0};
    mg_error err = {0};
    group_open(f->req, 0, 1, addr, true, &r);
    expect_status(&r, MG_OK);
    reply_free(&r);
    assert_int_equal(mg_node_wait_ready(f->node, 5000, &err), MG_OK);

    /* Before any meta_set: epoch 0, no map. */
    request(f->req, MG_OP_META_GET, 0, "", NULL, &r);
    expect_status(&r, MG_OK);
    mg_mp_reader rd = mg_wire_body(r.rep.body, r.rep.body_len);
    uint32_t m;
    uint64_t epoch = 99;
    assert_int_equal(mg_mp_read_map(&rd, &m), MG_OK);
    assert_int_equal(m, 2);
    for (uint32_t i = 0; i < m; i++) {
        bool is_epoch = mg_mp_peek_str_eq(&rd, "epoch");
        mg_mp_skip(&rd);
        if (is_epoch) {
            assert_int_equal(mg_mp_read_u64(&rd, &epoch), MG_OK);
        } else {
            assert_int_equal(mg_mp_peek(&rd), MG_MP_NIL);
            mg_mp_skip(&rd);
        }
    }
    assert_int_equal(epoch, 0);
    reply_free(&r);
    request(f->req, MG_OP_META_GET, 0, "alice", NULL, &r);
    expect_status(&r, MG_EPERM);
    reply_free(&r);

    /* meta_set (internal only) stores the map; META_GET returns it. */
    mg_cmap *map = calloc(1, sizeof *map);
    mg_cmap_node node = {.id = 1, .raft_host = "127.0.0.1", .raft_port = 7000};
    snprintf(node.rpc, sizeof node.rpc, "%s", f->rep_url);
    snprintf(node.survey, sizeof node.survey, "%s", f->resp_url);
    assert_int_equal(mg_cmap_initial(map, &node, 1, 2, 1, &err), MG_OK);
    void *enc;
    size_t enc_len;
    assert_int_equal(mg_cmap_encode(map, &enc, &enc_len, &err), MG_OK);
    mg_cmd c = {.kind = MG_CMD_META_SET, .expect = 0};
    c.map = malloc(enc_len);
    memcpy(c.map, enc, enc_len);
    c.map_len = enc_len;
    write_cmds(f->req, 0, "alice", &c, 1, &r);
    expect_status(&r, MG_EPERM);
    reply_free(&r);
    c = (mg_cmd){.kind = MG_CMD_META_SET, .expect = 0, .map = malloc(enc_len), .map_len = enc_len};
    memcpy(c.map, enc, enc_len);
    write_cmds(f->req, 0, "", &c, 1, &r);
    expect_status(&r, MG_OK);
    int codes[1];
    uint64_t counts[1];
    assert_int_equal(outcomes(&r, codes, counts, 1), 1);
    assert_int_equal(codes[0], MG_OK);
    reply_free(&r);

    request(f->req, MG_OP_META_GET, 0, "", NULL, &r);
    expect_status(&r, MG_OK);
    rd = mg_wire_body(r.rep.body, r.rep.body_len);
    bool saw_map = false;
    assert_int_equal(mg_mp_read_map(&rd, &m), MG_OK);
    for (uint32_t i = 0; i < m; i++) {
        bool is_epoch = mg_mp_peek_str_eq(&rd, "epoch");
        mg_mp_skip(&rd);
        if (is_epoch) {
            assert_int_equal(mg_mp_read_u64(&rd, &epoch), MG_OK);
        } else {
            const uint8_t *bin;
            uint32_t bl;
            assert_int_equal(mg_mp_read_bin(&rd, &bin, &bl), MG_OK);
            assert_int_equal(bl, enc_len);
            assert_memory_equal(bin, enc, enc_len);
            saw_map = true;
        }
    }
    assert_int_equal(epoch, 1);
    assert_true(saw_map);
    reply_free(&r);
    free(enc);
    free(map);
    fixture_free(f);
}

/* Two cube ids whose slots differ. */
static void pick_cubes(char *own, char *gone, size_t cap)
{
    snprintf(own, cap, "owned-cube");
    for (unsigned i = 0;; i++) {
        snprintf(gone, cap, "moved-cube-%u", i);
        if (mg_slot_of(gone, strlen(gone)) != mg_slot_of(own, strlen(own)))
            return;
    }
}

static void slots_set(fixture *f, uint64_t group, uint64_t epoch, const char *drop)
{
    mg_cmd c = {.kind = MG_CMD_SLOTS_SET, .epoch = epoch};
    reply r = {0};
    int codes[1];
    uint64_t counts[1];
    memset(&c.slots, 0xff, sizeof c.slots);
    if (drop != NULL)
        mg_slotset_del(&c.slots, mg_slot_of(drop, strlen(drop)));
    write_cmds(f->req, group, "", &c, 1, &r);
    expect_status(&r, MG_OK);
    assert_int_equal(outcomes(&r, codes, counts, 1), 1);
    assert_int_equal(codes[0], MG_OK);
    reply_free(&r);
}

static void test_ownership(void **state)
{
    (void)state;
    const uint64_t ids[] = {1};
    fixture *f = fixture_new(ids, 1);
    char own[32], gone[32];
    pick_cubes(own, gone, sizeof own);
    seed_cube(f, 1, own, 1, "alice", NULL, 5);
    seed_cube(f, 1, gone, 2, "alice", NULL, 7);
    slots_set(f, 1, 7, gone);

    /* Each BARRIER appends one entry: a second one right after the refused
     * write lands one index later exactly when nothing else was proposed. */
    uint64_t before = barrier(f->req, 1);
    /* Every cube-scoped read of the unowned cube: MG_EWRONGGROUP, epoch 7. */
    static const int ops[] = {MG_OP_CUBE_GET, MG_OP_MEM_COUNT, MG_OP_MEM_LIST, MG_OP_MEM_GET};
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        body b;
        reply r = {0};
        uint8_t id[16];
        make_id(id, 2, 0);
        body_init(&b);
        msgpack_pack_map(&b.pk, ops[i] == MG_OP_MEM_GET ? 2 : 1);
        kv_str(&b, "cube_id", gone);
        if (ops[i] == MG_OP_MEM_GET) {
            mg_mp_pack_cstr(&b.pk, "ids");
            msgpack_pack_array(&b.pk, 1);
            mg_mp_pack_binn(&b.pk, id, 16);
        }
        request(f->req, ops[i], 1, "alice", &b.sb, &r);
        body_free(&b);
        expect_status(&r, MG_EWRONGGROUP);
        assert_int_equal(r.rep.epoch, 7);
        reply_free(&r);
    }
    /* A write to it is refused before proposing: nothing applied. */
    mg_cmd c;
    reply r = {0};
    cmd_mem_put(&c, gone, 2, 100, 3);
    write_cmds(f->req, 1, "alice", &c, 1, &r);
    expect_status(&r, MG_EWRONGGROUP);
    assert_int_equal(r.rep.epoch, 7);
    reply_free(&r);
    assert_int_equal(barrier(f->req, 1), before + 1);
    /* The owned cube works as before. */
    assert_int_equal(mem_count(f->req, 1, "alice", own, MG_OK), 5);
    /* CUBE_LIST shows only the owned cube. */
    request(f->req, MG_OP_CUBE_LIST, 1, "alice", NULL, &r);
    expect_status(&r, MG_OK);
    mg_mp_reader rd = mg_wire_body(r.rep.body, r.rep.body_len);
    uint32_t n;
    assert_int_equal(mg_mp_read_array(&rd, &n), MG_OK);
    assert_int_equal(n, 1);
    reply_free(&r);
    /* MEM_GET by id across the group leaves the unowned cube's out. */
    body b;
    uint8_t id_own[16], id_gone[16];
    make_id(id_own, 1, 0);
    make_id(id_gone, 2, 0);
    body_init(&b);
    msgpack_pack_map(&b.pk, 1);
    mg_mp_pack_cstr(&b.pk, "ids");
    msgpack_pack_array(&b.pk, 2);
    mg_mp_pack_binn(&b.pk, id_own, 16);
    mg_mp_pack_binn(&b.pk, id_gone, 16);
    request(f->req, MG_OP_MEM_GET, 1, "", &b.sb, &r);
    body_free(&b);
    expect_status(&r, MG_OK);
    rd = mg_wire_body(r.rep.body, r.rep.body_len);
    assert_int_equal(mg_mp_read_array(&rd, &n), MG_OK);
    assert_int_equal(n, 1);
    reply_free(&r);
    /* SEARCH: the unowned cube is a cube error, the owned one answers. */
    float q[DIM];
    make_vec(q, 1);
    const search_cube_arg cubes[] = {{own, 1, NULL}, {gone, 1, NULL}};
    const uint64_t assign[] = {1};
    reply reps[2];
    search_result res;
    search_body(&b, q, 3, false, false, cubes, 2, assign, 1, 1);
    size_t got = survey(f->surv, MG_OP_SEARCH, "alice", &b.sb, reps, 2);
    body_free(&b);
    assert_int_equal(got, 1);
    decode_result(&reps[0], &res);
    assert_int_equal(res.n_hits, 3);
    for (size_t i = 0; i < res.n_hits; i++)
        assert_int_equal(res.hits[i].cube, 0);
    assert_int_equal(res.n_errors, 1);
    assert_int_equal(res.err_cube[0], 1);
    assert_int_equal(res.err_status[0], MG_EWRONGGROUP);
    result_free(&res);
    reply_free(&reps[0]);
    /* Internal reads with "any_slot": true still see it (the rebalance's copy
     * from a frozen source); a user's "any_slot" is ignored. */
    body_init(&b);
    msgpack_pack_map(&b.pk, 2);
    kv_str(&b, "cube_id", gone);
    mg_mp_pack_cstr(&b.pk, "any_slot");
    msgpack_pack_true(&b.pk);
    request(f->req, MG_OP_MEM_LIST, 1, "", &b.sb, &r);
    expect_status(&r, MG_OK);
    reply_free(&r);
    request(f->req, MG_OP_CUBE_GET, 1, "", &b.sb, &r);
    expect_status(&r, MG_OK);
    reply_free(&r);
    request(f->req, MG_OP_MEM_COUNT, 1, "alice", &b.sb, &r);
    expect_status(&r, MG_EWRONGGROUP);
    reply_free(&r);
    body_free(&b);
    body_init(&b);
    msgpack_pack_map(&b.pk, 1);
    mg_mp_pack_cstr(&b.pk, "any_slot");
    msgpack_pack_true(&b.pk);
    request(f->req, MG_OP_CUBE_LIST, 1, "", &b.sb, &r);
    body_free(&b);
    expect_status(&r, MG_OK);
    rd = mg_wire_body(r.rep.body, r.rep.body_len);
    assert_int_equal(mg_mp_read_array(&rd, &n), MG_OK);
    assert_int_equal(n, 2);
    reply_free(&r);
    /* Owning it again: the cube is unchanged (the refused put left nothing). */
    slots_set(f, 1, 8, NULL);
    assert_int_equal(mem_count(f->req, 1, "alice", gone, MG_OK), 7);
    fixture_free(f);
}

/* Requests racing with GROUP_CLOSE / GROUP_OPEN of their group: each one is
 * answered, with success or a clean refusal, and the node keeps working. */
typedef struct churn_arg {
    fixture *f;
    atomic_bool stop;
    int bad;      /* statuses outside the allowed set */
    int ok;
    int refused;
} churn_arg;

static void *churn_main(void *p)
{
    churn_arg *a = p;
    nng_socket s;
    if (nng_req0_open(&s) != 0 || nng_dial(s, a->f->rep_url, NULL, 0) != 0) {
        a->bad++;
        return NULL;
    }
    nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, 10000);
    float q[DIM];
    make_vec(q, 2);
    const search_cube_arg cubes[] = {{"churn", 3, NULL}};
    const uint64_t assign[] = {3};
    for (unsigned i = 0; !atomic_load(&a->stop); i++) {
        reply r = {0};
        if (i % 3 == 0) {
            mg_cmd c;
            cmd_mem_put(&c, "churn", 3, 1000 + i, 1);
            write_cmds(s, 3, "alice", &c, 1, &r);
        } else if (i % 3 == 1) {
            body b;
            body_init(&b);
            msgpack_pack_map(&b.pk, 1);
            kv_str(&b, "cube_id", "churn");
            request(s, MG_OP_MEM_COUNT, 3, "alice", &b.sb, &r);
            body_free(&b);
        } else {
            body b;
            search_body(&b, q, 3, i % 2 == 0, false, cubes, 1, assign, 1, 1);
            request(s, MG_OP_SEARCH, 0, "alice", &b.sb, &r);
            body_free(&b);
        }
        int st = r.rep.status;
        if (st == MG_OK)
            a->ok++;
        else if (st == MG_ENOTFOUND || st == MG_EUNAVAIL || st == MG_ENOTLEADER ||
                 st == MG_EBUSY)
            a->refused++;
        else {
            a->bad++;
            printf("# churn: op %u answered %s (%.*s)\n", i % 3, mg_errname(st),
                   (int)r.rep.msg_len, r.rep.msg);
        }
        reply_free(&r);
    }
    nng_close(s);
    return NULL;
}

static void test_group_close_under_load(void **state)
{
    (void)state;
    fixture *f = fixture_new(NULL, 0);
    char addr[MG_ADDRESS_MAX];
    snprintf(addr, sizeof addr, "127.0.0.1:%u", free_port());
    reply r = {0};
    mg_error err = {0};
    group_open(f->req, 3, 1, addr, true, &r);
    expect_status(&r, MG_OK);
    reply_free(&r);
    assert_int_equal(mg_node_wait_ready(f->node, 5000, &err), MG_OK);
    seed_cube(f, 3, "churn", 3, "alice", NULL, 50);
    churn_arg args[2] = {{.f = f}, {.f = f}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&th[i], NULL, churn_main, &args[i]), 0);
    for (int round = 0; round < 6; round++) {
        usleep(30000);
        group_close(f->req, 3, false, &r);
        expect_status(&r, MG_OK);
        reply_free(&r);
        usleep(10000);
        group_open(f->req, 3, 1, addr, true, &r);
        expect_status(&r, MG_OK);
        reply_free(&r);
        assert_int_equal(mg_node_wait_ready(f->node, 5000, &err), MG_OK);
    }
    usleep(30000);
    for (int i = 0; i < 2; i++) {
        atomic_store(&args[i].stop, true);
        pthread_join(th[i], NULL);
        printf("# churn thread %d: ok=%d refused=%d bad=%d\n", i, args[i].ok, args[i].refused,
               args[i].bad);
        assert_int_equal(args[i].bad, 0);
        assert_true(args[i].ok > 0);
    }
    assert_true(args[0].refused + args[1].refused > 0);
    /* Still serving, with every seeded memory. */
    assert_true(mem_count(f->req, 3, "alice", "churn", MG_OK) >= 50);
    fixture_free(f);
}

/* ---- membership: NODE_INFO claims and the <data>/cluster record --------- */

#define CLUSTER_A "6f1c2d3e-4b5a-4c6d-8e7f-0a1b2c3d4e5f"
#define CLUSTER_B "0b7c4a3e-5f1d-4c2a-9e8b-1d2c3b4a5f6e"

typedef struct membership {
    char cluster[MG_CMAP_CLUSTER_MAX]; /* "" for nil */
    char meta[MG_CMAP_REPLICAS_MAX][MG_CMAP_URL_MAX];
    uint32_t n_meta;
} membership;

/* NODE_INFO as `user`, claiming for `cluster` with hints meta[0..n) when
 * cluster is not NULL; expects `status`, and on MG_OK fills *out. */
static void node_info_claim(nng_socket s, const char *user, const char *cluster,
                            const char *const *meta, uint32_t n_meta, int status, membership *out)
{
    body b;
    reply r = {0};
    body_init(&b);
    if (cluster == NULL) {
        msgpack_pack_map(&b.pk, 0);
    } else {
        msgpack_pack_map(&b.pk, 1);
        mg_mp_pack_cstr(&b.pk, "claim");
        msgpack_pack_map(&b.pk, 2);
        kv_str(&b, "cluster", cluster);
        mg_mp_pack_cstr(&b.pk, "meta");
        msgpack_pack_array(&b.pk, n_meta);
        for (uint32_t i = 0; i < n_meta; i++)
            mg_mp_pack_cstr(&b.pk, meta[i]);
    }
    request(s, MG_OP_NODE_INFO, 0, user, &b.sb, &r);
    body_free(&b);
    expect_status(&r, status);
    if (status == MG_OK) {
        memset(out, 0, sizeof *out);
        mg_mp_reader rd = mg_wire_body(r.rep.body, r.rep.body_len);
        uint32_t m, k;
        bool saw_cluster = false, saw_meta = false;
        assert_int_equal(mg_mp_read_map(&rd, &m), MG_OK);
        for (uint32_t i = 0; i < m; i++) {
            bool is_cluster = mg_mp_peek_str_eq(&rd, "cluster"),
                 is_meta = mg_mp_peek_str_eq(&rd, "meta");
            mg_mp_skip(&rd);
            if (is_cluster) {
                saw_cluster = true;
                if (mg_mp_peek(&rd) == MG_MP_NIL)
                    assert_int_equal(mg_mp_read_nil(&rd), MG_OK);
                else
                    assert_int_equal(mg_mp_read_strcpy(&rd, out->cluster, sizeof out->cluster),
                                     MG_OK);
            } else if (is_meta) {
                saw_meta = true;
                assert_int_equal(mg_mp_read_array(&rd, &k), MG_OK);
                assert_true(k <= MG_CMAP_REPLICAS_MAX);
                for (uint32_t j = 0; j < k; j++)
                    assert_int_equal(mg_mp_read_strcpy(&rd, out->meta[j], MG_CMAP_URL_MAX), MG_OK);
                out->n_meta = k;
            } else {
                assert_int_equal(mg_mp_skip(&rd), MG_OK);
            }
        }
        assert_true(saw_cluster && saw_meta);
    }
    reply_free(&r);
}

/* GROUP_OPEN of a one-voter group with a "cluster" field. */
static void group_open_in(nng_socket s, uint64_t group, const char *addr, const char *cluster,
                          reply *out)
{
    body b;
    body_init(&b);
    msgpack_pack_map(&b.pk, 4);
    mg_mp_pack_cstr(&b.pk, "replica");
    msgpack_pack_uint64(&b.pk, 1);
    kv_str(&b, "address", addr);
    kv_str(&b, "cluster", cluster);
    mg_mp_pack_cstr(&b.pk, "bootstrap");
    msgpack_pack_array(&b.pk, 1);
    msgpack_pack_map(&b.pk, 2);
    mg_mp_pack_cstr(&b.pk, "id");
    msgpack_pack_uint64(&b.pk, 1);
    kv_str(&b, "address", addr);
    request(s, MG_OP_GROUP_OPEN, group, "", &b.sb, out);
    body_free(&b);
}

/* The record file's bytes (malloc'd, NUL-terminated), or NULL when absent. */
static char *record_text(const char *dir)
{
    char path[512];
    snprintf(path, sizeof path, "%s/cluster", dir);
    FILE *fp = fopen(path, "rb");
    if (fp == NULL)
        return NULL;
    char *buf = calloc(1, 4096);
    size_t n = fread(buf, 1, 4095, fp);
    buf[n] = '\0';
    fclose(fp);
    return buf;
}

static void test_membership(void **state)
{
    (void)state;
    fixture *f = fixture_new(NULL, 0);
    membership mb;
    const char *hints_1[] = {"tcp://10.0.0.1:7120", "tcp://10.0.0.2:7120"};
    const char *hints_2[] = {"tcp://10.0.0.3:7120"};

    /* A new node belongs to no cluster. */
    node_info_claim(f->req, "", NULL, NULL, 0, MG_OK, &mb);
    assert_string_equal(mb.cluster, "");
    assert_int_equal(mb.n_meta, 0);
    assert_null(record_text(f->dir));

    /* Claims are internal; a malformed one is refused; neither changes anything. */
    node_info_claim(f->req, "alice", CLUSTER_A, hints_1, 2, MG_EPERM, NULL);
    node_info_claim(f->req, "", "not-a-uuid", hints_1, 2, MG_EINVAL, NULL);
    node_info_claim(f->req, "", NULL, NULL, 0, MG_OK, &mb);
    assert_string_equal(mb.cluster, "");
    assert_null(record_text(f->dir));

    /* The first claim is recorded (file and answer). */
    node_info_claim(f->req, "", CLUSTER_A, hints_1, 2, MG_OK, &mb);
    assert_string_equal(mb.cluster, CLUSTER_A);
    assert_int_equal(mb.n_meta, 2);
    assert_string_equal(mb.meta[0], hints_1[0]);
    assert_string_equal(mb.meta[1], hints_1[1]);
    char *text = record_text(f->dir);
    assert_non_null(text);
    assert_non_null(strstr(text, CLUSTER_A));
    free(text);

    /* The same id again: the hints are replaced. */
    node_info_claim(f->req, "", CLUSTER_A, hints_2, 1, MG_OK, &mb);
    assert_string_equal(mb.cluster, CLUSTER_A);
    assert_int_equal(mb.n_meta, 1);
    assert_string_equal(mb.meta[0], hints_2[0]);
    char *before = record_text(f->dir);
    assert_non_null(before);
    assert_null(strstr(before, hints_1[0]));

    /* Another id: MG_EEXIST naming the cluster, record unchanged. */
    body b;
    reply r = {0};
    body_init(&b);
    msgpack_pack_map(&b.pk, 1);
    mg_mp_pack_cstr(&b.pk, "claim");
    msgpack_pack_map(&b.pk, 2);
    kv_str(&b, "cluster", CLUSTER_B);
    mg_mp_pack_cstr(&b.pk, "meta");
    msgpack_pack_array(&b.pk, 0);
    request(f->req, MG_OP_NODE_INFO, 0, "", &b.sb, &r);
    body_free(&b);
    expect_status(&r, MG_EEXIST);
    assert_true(msg_has(&r, "node 1 belongs to cluster " CLUSTER_A));
    reply_free(&r);
    node_info_claim(f->req, "", NULL, NULL, 0, MG_OK, &mb);
    assert_string_equal(mb.cluster, CLUSTER_A);
    assert_int_equal(mb.n_meta, 1);
    assert_string_equal(mb.meta[0], hints_2[0]);
    char *after = record_text(f->dir);
    assert_string_equal(before, after);
    free(after);

    /* GROUP_OPEN for another cluster: MG_EEXIST, nothing opened; for this
     * one: opened; for another again: still refused (not "already hosted"). */
    char addr[MG_ADDRESS_MAX];
    snprintf(addr, sizeof addr, "127.0.0.1:%u", free_port());
    group_open_in(f->req, 3, addr, CLUSTER_B, &r);
    expect_status(&r, MG_EEXIST);
    assert_true(msg_has(&r, "belongs to cluster " CLUSTER_A));
    reply_free(&r);
    assert_int_equal(mg_node_n_groups(f->node), 0);
    assert_false(group_file_exists(f->dir, 3, NULL));
    group_open_in(f->req, 3, addr, CLUSTER_A, &r);
    expect_status(&r, MG_OK);
    reply_free(&r);
    assert_int_equal(mg_node_n_groups(f->node), 1);
    group_open_in(f->req, 3, addr, CLUSTER_B, &r);
    expect_status(&r, MG_EEXIST);
    reply_free(&r);

    /* The record survives a restart. */
    clients_close(f);
    mg_node_stop(f->node);
    node_start(f, 1);
    clients_open(f);
    node_info_claim(f->req, "", NULL, NULL, 0, MG_OK, &mb);
    assert_string_equal(mb.cluster, CLUSTER_A);
    assert_int_equal(mb.n_meta, 1);
    assert_string_equal(mb.meta[0], hints_2[0]);
    assert_int_equal(mg_node_n_groups(f->node), 1);

    /* A malformed record stops the node from starting, naming the file. */
    clients_close(f);
    mg_node_stop(f->node);
    f->node = NULL;
    char path[512];
    snprintf(path, sizeof path, "%s/cluster", f->dir);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs("{\"cluster\": 7}", fp);
    fclose(fp);
    mg_node_config cfg = {.data_dir = f->dir, .node_id = 1, .rep_url = f->rep_url};
    mg_error err = {0};
    mg_node *bad = NULL;
    assert_int_equal(mg_node_start(&cfg, &bad, &err), MG_ECORRUPT);
    assert_non_null(strstr(err.msg, "cluster"));
    /* Put the good record back for the fixture's own stop. */
    fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(before, fp);
    fclose(fp);
    free(before);
    node_start(f, 1);
    clients_open(f);
    node_info_claim(f->req, "", NULL, NULL, 0, MG_OK, &mb);
    assert_string_equal(mb.cluster, CLUSTER_A);
    fixture_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_config),
        cmocka_unit_test(test_write_and_reads),
        cmocka_unit_test(test_search),
        cmocka_unit_test(test_unknown_and_access),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_not_leader),
        cmocka_unit_test(test_failover),
        cmocka_unit_test(test_no_quorum),
        cmocka_unit_test(test_concurrent_writes),
        cmocka_unit_test(test_deadline),
        cmocka_unit_test(test_restart),
        cmocka_unit_test(test_group_open_close),
        cmocka_unit_test(test_group_membership),
        cmocka_unit_test(test_meta_get),
        cmocka_unit_test(test_ownership),
        cmocka_unit_test(test_group_close_under_load),
        cmocka_unit_test(test_membership),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
