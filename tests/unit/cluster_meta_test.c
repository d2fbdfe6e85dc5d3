/*
 * The cluster commands at apply (cluster/fsm.c over a real LMDB store,
 * without raft): meta_set's compare-and-set, slot ownership (slots_set) in
 * log order, slots_drop, the slot record through reopen and snapshot
 * restore, and the records of cluster/meta.h.
 */
#include "../../cluster/command.h"
#include "../../cluster/fsm.h"
#include "../../cluster/meta.h"
#include "../../cluster/workload.h"
#include "../../storage/store.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

typedef struct env {
    char root[64];
    mg_store *store;
    mg_fsm fsm;
    uint64_t index; /* last entry applied */
} env;

static void env_open(env *e, const char *sub)
{
    char dir[128];
    snprintf(dir, sizeof dir, "%s/%s", e->root, sub);
    mg_store_options so = {.sync = MG_STORE_SYNC_NONE};
    assert_int_equal(mg_store_open(dir, &so, &e->store, NULL), MG_OK);
    mg_fsm_init(&e->fsm, e->store);
}

static void env_close(env *e)
{
    mg_fsm_close(&e->fsm);
    mg_store_close(e->store);
}

static int setup(void **state)
{
    env *e = calloc(1, sizeof *e);
    snprintf(e->root, sizeof e->root, "/tmp/mg-meta-XXXXXX");
    assert_non_null(mkdtemp(e->root));
    env_open(e, "a");
    *state = e;
    return 0;
}

static int teardown(void **state)
{
    env *e = *state;
    env_close(e);
    nftw(e->root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(e);
    return 0;
}

/* Packs commands into an entry without validating them (apply must not
 * trust what the proposer checked). */
static void *entry_raw(const mg_cmd *const *cmds, size_t n, size_t *len)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    uint8_t hdr[MG_ENTRY_HEADER_LEN];
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    size_t hl = mg_entry_header(hdr, (uint32_t)n);
    msgpack_sbuffer_write(&sb, (const char *)hdr, hl);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(mg_cmd_pack(&pk, cmds[i]), MG_OK);
    *len = sb.size;
    return msgpack_sbuffer_release(&sb);
}

/* Applies an entry of n commands at the next index; the result. */
static mg_fsm_result *apply(env *e, const mg_cmd *const *cmds, size_t n)
{
    size_t len;
    void *buf = entry_raw(cmds, n, &len);
    mg_fsm_result *res = NULL;
    mg_error err = {0};
    assert_int_equal(mg_fsm_apply_at(&e->fsm, ++e->index, buf, len, &res, &err), MG_OK);
    free(buf);
    assert_int_equal(res->code, MG_OK);
    assert_int_equal(res->n_cmds, n);
    return res;
}

static mg_fsm_result *apply1(env *e, const mg_cmd *c)
{
    return apply(e, &c, 1);
}

/* A checked map of `epoch`, encoded (malloc'd). */
static void map_cmd(mg_cmd *c, uint64_t expect, uint64_t epoch)
{
    mg_cmap_node n = {.id = 1, .raft_port = 9000};
    strcpy(n.rpc, "inproc://n1");
    strcpy(n.survey, "inproc://n1s");
    strcpy(n.raft_host, "127.0.0.1");
    mg_cmap *m = malloc(sizeof *m);
    assert_int_equal(mg_cmap_initial(m, &n, 1, 2, 1, NULL), MG_OK);
    m->epoch = epoch;
    memset(c, 0, sizeof *c);
    c->kind = MG_CMD_META_SET;
    c->expect = expect;
    assert_int_equal(mg_cmap_encode(m, &c->map, &c->map_len, NULL), MG_OK);
    free(m);
}

static uint64_t stored_epoch(env *e)
{
    mg_cmap *m = malloc(sizeof *m);
    int rc = mg_meta_read_map(e->store, m, NULL, NULL, NULL);
    uint64_t epoch = m->epoch;
    free(m);
    assert_true(rc == MG_OK || rc == MG_ENOTFOUND);
    return epoch;
}

static uint64_t digest(env *e)
{
    uint64_t d;
    assert_int_equal(mg_store_digest(e->store, &d, NULL), MG_OK);
    return d;
}

static void test_meta_set_cas(void **state)
{
    env *e = *state;
    mg_cmd c1, c1again, c2, c3, c4, bad;
    assert_int_equal(stored_epoch(e), 0);
    mg_cmap *m = malloc(sizeof *m);
    void *raw = (void *)1;
    size_t raw_len = 1;
    assert_int_equal(mg_meta_read_map(e->store, m, &raw, &raw_len, NULL), MG_ENOTFOUND);
    assert_null(raw);

    map_cmd(&c1, 0, 1);
    mg_fsm_result *res = apply1(e, &c1);
    assert_int_equal(res->cmds[0].code, MG_OK);
    assert_int_equal(res->cmds[0].n_ops, 1);
    assert_int_equal(mg_meta_read_map(e->store, m, &raw, &raw_len, NULL), MG_OK);
    assert_int_equal(m->epoch, 1);
    assert_int_equal(raw_len, c1.map_len);
    assert_memory_equal(raw, c1.map, raw_len);
    free(raw);

    /* a stale expect: MG_EBUSY, the map unchanged */
    uint64_t d = digest(e);
    map_cmd(&c1again, 0, 1);
    res = apply1(e, &c1again);
    assert_int_equal(res->cmds[0].code, MG_EBUSY);
    assert_int_equal(res->cmds[0].n_ops, 0);
    assert_int_equal(stored_epoch(e), 1);
    assert_true(digest(e) == d);

    /* a map whose epoch is not expect + 1 (never validated): MG_EINVAL */
    map_cmd(&bad, 1, 5);
    res = apply1(e, &bad);
    assert_int_equal(res->cmds[0].code, MG_EINVAL);
    free(bad.map);
    bad.map = malloc(3);
    memcpy(bad.map, "\x93\x01\x02", 3);
    bad.map_len = 3;
    bad.expect = 1;
    res = apply1(e, &bad);
    assert_int_equal(res->cmds[0].code, MG_EINVAL);
    assert_int_equal(stored_epoch(e), 1);
    assert_true(digest(e) == d);

    /* in one entry, the second meta_set sees the first */
    map_cmd(&c2, 1, 2);
    map_cmd(&c3, 2, 3);
    const mg_cmd *pair[3] = {&c2, &c3, &c3};
    res = apply(e, pair, 3);
    assert_int_equal(res->cmds[0].code, MG_OK);
    assert_int_equal(res->cmds[1].code, MG_OK);
    assert_int_equal(res->cmds[2].code, MG_EBUSY);
    assert_int_equal(stored_epoch(e), 3);
    map_cmd(&c4, 3, 4);
    assert_int_equal(apply1(e, &c4)->cmds[0].code, MG_OK);
    assert_int_equal(stored_epoch(e), 4);

    /* a replayed entry changes nothing */
    size_t len;
    void *buf = entry_raw((const mg_cmd *[]){&c1}, 1, &len);
    mg_fsm_result *rr;
    assert_int_equal(mg_fsm_apply_at(&e->fsm, 1, buf, len, &rr, NULL), MG_OK);
    assert_false(rr->applied);
    assert_int_equal(stored_epoch(e), 4);
    free(buf);

    free(m);
    mg_cmd_clear(&c1);
    mg_cmd_clear(&c1again);
    mg_cmd_clear(&c2);
    mg_cmd_clear(&c3);
    mg_cmd_clear(&c4);
    mg_cmd_clear(&bad);
}

/* Cube ids of distinct slots. */
static const char *const cube_ids[] = {"alpha", "bravo", "charlie", "delta", "echo"};
#define A 0
#define B 1
#define C 2
#define D 3
#define E 4

static uint32_t slot(int i)
{
    return mg_slot_of(cube_ids[i], strlen(cube_ids[i]));
}

static void slots_cmd(mg_cmd *c, int kind, uint64_t epoch, const int *cubes, size_t n)
{
    memset(c, 0, sizeof *c);
    c->kind = kind;
    c->epoch = epoch;
    for (size_t i = 0; i < n; i++)
        mg_slotset_add(&c->slots, slot(cubes[i]));
}

static bool owns(mg_fsm *fsm, int i, uint64_t *epoch)
{
    return mg_fsm_owns(fsm, cube_ids[i], strlen(cube_ids[i]), epoch);
}

static uint64_t mem_count(env *e, int i)
{
    uint64_t n;
    assert_int_equal(mg_store_mem_count(e->store, cube_ids[i], &n, NULL), MG_OK);
    return n;
}

static bool cube_exists(env *e, int i)
{
    mg_cube c = {0};
    int rc = mg_store_cube_get(e->store, cube_ids[i], &c, NULL);
    mg_cube_clear(&c);
    assert_true(rc == MG_OK || rc == MG_ENOTFOUND);
    return rc == MG_OK;
}

static void create_cubes(env *e, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        mg_cmd c = {0};
        assert_int_equal(mg_workload_cube_cmd(&c, cube_ids[i], 4, NULL), MG_OK);
        assert_int_equal(apply1(e, &c)->cmds[0].code, MG_OK);
        mg_cmd_clear(&c);
    }
}

static void test_distinct_slots(void **state)
{
    (void)state;
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < i; j++)
            assert_true(slot(i) != slot(j));
}

static void test_ownership(void **state)
{
    env *e = *state;
    uint64_t epoch = 99;
    /* no record: everything is owned and accepted */
    assert_true(owns(&e->fsm, B, &epoch));
    assert_int_equal(epoch, 0);
    mg_slot_record rec;
    assert_int_equal(mg_meta_read_slots(e->store, &rec, NULL), MG_ENOTFOUND);
    create_cubes(e, 3);

    mg_cmd own_a;
    slots_cmd(&own_a, MG_CMD_SLOTS_SET, 7, (int[]){A}, 1);
    mg_fsm_result *res = apply1(e, &own_a);
    assert_int_equal(res->cmds[0].code, MG_OK);
    assert_int_equal(res->cmds[0].n_ops, 1);
    assert_true(owns(&e->fsm, A, &epoch));
    assert_int_equal(epoch, 7);
    assert_false(owns(&e->fsm, B, NULL));
    assert_int_equal(mg_meta_read_slots(e->store, &rec, NULL), MG_OK);
    assert_int_equal(rec.epoch, 7);
    assert_memory_equal(&rec.owned, &own_a.slots, sizeof rec.owned);

    /* a put to an unowned cube: refused, nothing stored; the owned one and
     * a user command in the same entry apply */
    mg_cmd put_b = {0}, put_a = {0}, del_b = {0}, user = {0};
    assert_int_equal(mg_workload_put_cmd(&put_b, cube_ids[B], 0, 5, 4, NULL), MG_OK);
    assert_int_equal(mg_workload_put_cmd(&put_a, cube_ids[A], 100, 3, 4, NULL), MG_OK);
    del_b.kind = MG_CMD_CUBE_DELETE;
    strcpy(del_b.cube_id, cube_ids[B]);
    user.kind = MG_CMD_USER_DELETE;
    strcpy(user.user_id, "nobody");
    res = apply(e, (const mg_cmd *[]){&put_b, &put_a, &del_b, &user}, 4);
    assert_int_equal(res->cmds[0].code, MG_EWRONGGROUP);
    assert_int_equal(res->cmds[0].n_ops, 0);
    assert_int_equal(res->cmds[1].code, MG_OK);
    assert_int_equal(res->cmds[1].n_ops, 3);
    assert_int_equal(res->cmds[2].code, MG_EWRONGGROUP);
    assert_int_equal(res->cmds[3].code, MG_ENOTFOUND); /* applied: no such user */
    assert_int_equal(mem_count(e, B), 0);
    assert_int_equal(mem_count(e, A), 3);
    assert_true(cube_exists(e, B));

    /* log order inside one entry: put (owned), slots_set without B, put
     * (refused), slots_set with B, delete (owned again) */
    mg_cmd own_ab, put_b2 = {0}, create_d = {0};
    slots_cmd(&own_ab, MG_CMD_SLOTS_SET, 8, (int[]){A, B}, 2);
    mg_cmd own_a9;
    slots_cmd(&own_a9, MG_CMD_SLOTS_SET, 9, (int[]){A}, 1);
    assert_int_equal(mg_workload_put_cmd(&put_b2, cube_ids[B], 200, 2, 4, NULL), MG_OK);
    assert_int_equal(mg_workload_cube_cmd(&create_d, cube_ids[D], 4, NULL), MG_OK);
    res = apply(e, (const mg_cmd *[]){&own_ab, &put_b, &own_a9, &put_b2, &create_d}, 5);
    assert_int_equal(res->cmds[1].code, MG_OK);
    assert_int_equal(res->cmds[3].code, MG_EWRONGGROUP);
    assert_int_equal(res->cmds[4].code, MG_EWRONGGROUP);
    assert_int_equal(mem_count(e, B), 5);
    assert_false(cube_exists(e, D));
    assert_false(owns(&e->fsm, B, &epoch));
    assert_int_equal(epoch, 9);

    /* the record is there after a reopen */
    env_close(e);
    env_open(e, "a");
    assert_true(owns(&e->fsm, A, &epoch));
    assert_false(owns(&e->fsm, B, NULL));
    assert_int_equal(epoch, 9);
    e->index = mg_store_applied(e->store);

    /* an empty record owns nothing */
    mg_cmd none;
    slots_cmd(&none, MG_CMD_SLOTS_SET, 10, NULL, 0);
    apply1(e, &none);
    assert_false(owns(&e->fsm, A, NULL));
    res = apply1(e, &put_a);
    assert_int_equal(res->cmds[0].code, MG_EWRONGGROUP);
    assert_int_equal(mem_count(e, A), 3);

    mg_cmd_clear(&put_b);
    mg_cmd_clear(&put_a);
    mg_cmd_clear(&put_b2);
    mg_cmd_clear(&create_d);
}

static void test_slot_record_snapshot(void **state)
{
    env *e = *state;
    create_cubes(e, 2);
    mg_cmd own_b;
    slots_cmd(&own_b, MG_CMD_SLOTS_SET, 3, (int[]){B}, 1);
    apply1(e, &own_b);
    void *snap;
    size_t len;
    assert_int_equal(mg_fsm_snapshot_buf(&e->fsm, &snap, &len, NULL), MG_OK);

    /* a fresh replica: owns everything until the snapshot is installed */
    env f = {0};
    memcpy(f.root, e->root, sizeof f.root);
    env_open(&f, "fresh");
    assert_true(owns(&f.fsm, A, NULL));
    bool installed = false;
    assert_int_equal(mg_fsm_restore_buf(&f.fsm, snap, len, &installed, NULL), MG_OK);
    assert_true(installed);
    uint64_t epoch = 0;
    assert_false(owns(&f.fsm, A, &epoch));
    assert_true(owns(&f.fsm, B, NULL));
    assert_int_equal(epoch, 3);
    assert_true(digest(&f) == digest(e));
    /* and it refuses what the source refuses */
    f.index = mg_store_applied(f.store);
    mg_cmd put_a = {0};
    assert_int_equal(mg_workload_put_cmd(&put_a, cube_ids[A], 0, 2, 4, NULL), MG_OK);
    assert_int_equal(apply1(&f, &put_a)->cmds[0].code, MG_EWRONGGROUP);
    assert_int_equal(apply1(e, &put_a)->cmds[0].code, MG_EWRONGGROUP);
    assert_true(digest(&f) == digest(e));
    mg_cmd_clear(&put_a);
    env_close(&f);
    free(snap);
}

static void test_slots_drop(void **state)
{
    env *e = *state;
    create_cubes(e, 4);
    mg_cmd put_b = {0};
    assert_int_equal(mg_workload_put_cmd(&put_b, cube_ids[B], 0, 6, 4, NULL), MG_OK);
    apply1(e, &put_b);
    assert_int_equal(mem_count(e, B), 6);

    /* unrestricted: a drop removes nothing */
    mg_cmd drop;
    slots_cmd(&drop, MG_CMD_SLOTS_DROP, 0, (int[]){A, B, C, D}, 4);
    uint64_t d = digest(e);
    mg_fsm_result *res = apply1(e, &drop);
    assert_int_equal(res->cmds[0].code, MG_OK);
    assert_int_equal(res->cmds[0].n_ops, 1);
    assert_int_equal(res->cmds[0].op_counts[0], 0);
    assert_true(digest(e) == d);

    /* owns A only; drop {A, B, C}: B and C go (with B's memories), A is
     * owned and D is not in the set */
    mg_cmd own_a;
    slots_cmd(&own_a, MG_CMD_SLOTS_SET, 2, (int[]){A}, 1);
    apply1(e, &own_a);
    slots_cmd(&drop, MG_CMD_SLOTS_DROP, 0, (int[]){A, B, C}, 3);
    res = apply1(e, &drop);
    assert_int_equal(res->cmds[0].code, MG_OK);
    assert_int_equal(res->cmds[0].n_ops, 1);
    assert_int_equal(res->cmds[0].op_counts[0], 2);
    assert_true(cube_exists(e, A));
    assert_false(cube_exists(e, B));
    assert_false(cube_exists(e, C));
    assert_true(cube_exists(e, D));
    assert_int_equal(mem_count(e, B), 0);
    mg_item it = {0};
    assert_int_equal(mg_store_mem_get(e->store, cube_ids[B], put_b.items[0].item.id, &it, NULL,
                                      NULL, NULL),
                     MG_ENOTFOUND);
    uint8_t *id = put_b.items[0].item.id;
    char holder[MG_CUBE_ID_MAX + 1];
    assert_int_equal(mg_store_mem_find(e->store, id, holder, NULL), MG_ENOTFOUND);
    /* again: nothing left to drop */
    res = apply1(e, &drop);
    assert_int_equal(res->cmds[0].op_counts[0], 0);

    /* a cube created earlier in the same entry is dropped too */
    mg_cmd own_ae, create_e = {0}, drop_e;
    slots_cmd(&own_ae, MG_CMD_SLOTS_SET, 3, (int[]){A, E}, 2);
    assert_int_equal(mg_workload_cube_cmd(&create_e, cube_ids[E], 4, NULL), MG_OK);
    slots_cmd(&drop_e, MG_CMD_SLOTS_DROP, 0, (int[]){E}, 1);
    res = apply(e, (const mg_cmd *[]){&own_ae, &create_e, &own_a, &drop_e}, 4);
    assert_int_equal(res->cmds[1].code, MG_OK);
    assert_int_equal(res->cmds[3].code, MG_OK);
    assert_int_equal(res->cmds[3].op_counts[0], 1);
    assert_false(cube_exists(e, E));
    assert_true(cube_exists(e, A));
    mg_cmd_clear(&put_b);
    mg_cmd_clear(&create_e);
}

static void test_slot_record_codec(void **state)
{
    (void)state;
    mg_slot_record r = {.epoch = 0x0102030405060708ull}, d;
    mg_slotset_add(&r.owned, 0);
    mg_slotset_add(&r.owned, 63);
    mg_slotset_add(&r.owned, 64);
    mg_slotset_add(&r.owned, 4095);
    uint8_t buf[MG_SLOT_RECORD_MAX];
    size_t len = mg_slot_record_encode(&r, buf);
    assert_true(len <= MG_SLOT_RECORD_MAX);
    assert_int_equal(mg_slot_record_decode(buf, len, &d, NULL), MG_OK);
    assert_int_equal(d.epoch, r.epoch);
    assert_memory_equal(&d.owned, &r.owned, sizeof d.owned);
    for (size_t cut = 0; cut < len; cut++)
        assert_int_equal(mg_slot_record_decode(buf, cut, &d, NULL), MG_ECORRUPT);
    buf[len - 515] = 0xc4; /* bin 8 header: the length byte is now 0x02 */
    assert_int_equal(mg_slot_record_decode(buf, len, &d, NULL), MG_ECORRUPT);

    uint8_t le[512];
    mg_slotset_to_le(&r.owned, le);
    assert_int_equal(le[0], 0x01);
    assert_int_equal(le[7], 0x80); /* slot 63: top bit of word 0, little-endian */
    assert_int_equal(le[8], 0x01);
    assert_int_equal(le[511], 0x80);
    mg_slotset back;
    mg_slotset_from_le(le, &back);
    assert_memory_equal(&back, &r.owned, sizeof back);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_distinct_slots),
        cmocka_unit_test(test_slot_record_codec),
        cmocka_unit_test_setup_teardown(test_meta_set_cas, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ownership, setup, teardown),
        cmocka_unit_test_setup_teardown(test_slot_record_snapshot, setup, teardown),
        cmocka_unit_test_setup_teardown(test_slots_drop, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
