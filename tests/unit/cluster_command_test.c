/*
 * Commands (encode/decode/versioning/validation) and the FSM without raft:
 * apply at explicit indexes, idempotence, per-item outcomes, refused
 * entries, snapshot and restore.
 */
#include "../../cluster/command.h"
#include "../../cluster/fsm.h"
#include "../../cluster/workload.h"
#include "../../storage/store.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

typedef struct env {
    char root[64];
    mg_store *store;
    mg_fsm fsm;
} env;

static void env_open_store(env *e, const char *sub)
{
    char dir[128];
    mg_error err = {0};
    snprintf(dir, sizeof dir, "%s/%s", e->root, sub);
    mg_store_options so = {.sync = MG_STORE_SYNC_NONE};
    assert_int_equal(mg_store_open(dir, &so, &e->store, &err), MG_OK);
    mg_fsm_init(&e->fsm, e->store);
}

static int setup(void **state)
{
    env *e = calloc(1, sizeof *e);
    snprintf(e->root, sizeof e->root, "/tmp/mg-cmd-XXXXXX");
    assert_non_null(mkdtemp(e->root));
    env_open_store(e, "a");
    *state = e;
    return 0;
}

static int teardown(void **state)
{
    env *e = *state;
    mg_fsm_close(&e->fsm);
    mg_store_close(e->store);
    nftw(e->root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(e);
    return 0;
}

/* Builds an entry from commands. */
static void *entry_of(const mg_cmd *cmds, size_t n, size_t *len)
{
    void *bufs[8];
    size_t lens[8], total = MG_ENTRY_HEADER_LEN;
    mg_error err = {0};
    assert_true(n <= 8);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(mg_cmd_encode(&cmds[i], &bufs[i], &lens[i], &err), MG_OK);
        total += lens[i];
    }
    uint8_t *out = malloc(total);
    size_t off = mg_entry_header(out, (uint32_t)n);
    for (size_t i = 0; i < n; i++) {
        memcpy(out + off, bufs[i], lens[i]);
        off += lens[i];
        free(bufs[i]);
    }
    *len = off;
    return out;
}

static void test_roundtrip(void **state)
{
    (void)state;
    mg_error err = {0};
    mg_cmd c = {0}, d = {0};
    void *buf;
    size_t len;
    assert_int_equal(mg_workload_put_cmd(&c, "cube-1", 10, 3, 16, &err), MG_OK);
    assert_int_equal(mg_cmd_encode(&c, &buf, &len, &err), MG_OK);
    assert_int_equal(mg_cmd_decode(buf, len, &d, &err), MG_OK);
    assert_int_equal(d.kind, MG_CMD_MEM_PUT);
    assert_string_equal(d.cube_id, "cube-1");
    assert_int_equal(d.n_items, 3);
    for (size_t i = 0; i < 3; i++) {
        assert_memory_equal(d.items[i].item.id, c.items[i].item.id, 16);
        assert_string_equal(d.items[i].item.memory, c.items[i].item.memory);
        assert_true(json_equal(d.items[i].item.metadata, c.items[i].item.metadata));
        assert_int_equal(d.items[i].dim, 16);
        assert_memory_equal(d.items[i].vec, c.items[i].vec, 16 * sizeof(float));
        assert_int_equal(mg_workload_k(d.items[i].item.id), 10 + i);
    }
    free(buf);
    mg_cmd_clear(&c);
    mg_cmd_clear(&d);

    /* every kind survives encode/decode */
    mg_cmd cmds[4] = {0};
    assert_int_equal(mg_workload_cube_cmd(&cmds[0], "k", 4, &err), MG_OK);
    assert_int_equal(mg_workload_delete_cmd(&cmds[1], "k", 0, 5, &err), MG_OK);
    cmds[2].kind = MG_CMD_MEM_DELETE_WHERE;
    strcpy(cmds[2].cube_id, "k");
    cmds[2].filter = json_pack("{s:s}", "memory_type", "LongTermMemory");
    cmds[3].kind = MG_CMD_USER_DELETE;
    strcpy(cmds[3].user_id, "alice");
    for (int i = 0; i < 4; i++) {
        assert_int_equal(mg_cmd_encode(&cmds[i], &buf, &len, &err), MG_OK);
        assert_int_equal(mg_cmd_decode(buf, len, &d, &err), MG_OK);
        assert_int_equal(d.kind, cmds[i].kind);
        free(buf);
        mg_cmd_clear(&d);
        mg_cmd_clear(&cmds[i]);
    }
}

/* A checked map of `epoch` (1 node, 2 data groups), encoded. */
static void *map_bytes(uint64_t epoch, size_t *len)
{
    mg_cmap_node n = {.id = 1, .raft_port = 9000};
    strcpy(n.rpc, "inproc://n1");
    strcpy(n.survey, "inproc://n1s");
    strcpy(n.raft_host, "127.0.0.1");
    mg_cmap *m = malloc(sizeof *m);
    void *buf;
    assert_int_equal(mg_cmap_initial(m, &n, 1, 2, 1, NULL), MG_OK);
    m->epoch = epoch;
    assert_int_equal(mg_cmap_encode(m, &buf, len, NULL), MG_OK);
    free(m);
    return buf;
}

static void test_cluster_cmds(void **state)
{
    (void)state;
    mg_error err = {0};
    assert_string_equal(mg_cmd_name(MG_CMD_META_SET), "meta_set");
    assert_string_equal(mg_cmd_name(MG_CMD_SLOTS_SET), "slots_set");
    assert_string_equal(mg_cmd_name(MG_CMD_SLOTS_DROP), "slots_drop");
    assert_null(mg_cmd_name(MG_CMD_KIND_COUNT_));

    /* round trips */
    mg_cmd c = {.kind = MG_CMD_META_SET, .expect = 4};
    c.map = map_bytes(5, &c.map_len);
    void *buf;
    size_t len;
    mg_cmd d;
    assert_int_equal(mg_cmd_encode(&c, &buf, &len, &err), MG_OK);
    assert_int_equal(mg_cmd_decode(buf, len, &d, &err), MG_OK);
    assert_int_equal(d.kind, MG_CMD_META_SET);
    assert_int_equal(d.expect, 4);
    assert_int_equal(d.map_len, c.map_len);
    assert_memory_equal(d.map, c.map, c.map_len);
    mg_cmd_clear(&d);
    /* every truncation is refused, with nothing left allocated */
    for (size_t cut = 0; cut < len; cut++) {
        assert_int_equal(mg_cmd_decode(buf, cut, &d, &err), MG_ECORRUPT);
        assert_null(d.map);
    }
    free(buf);

    mg_cmd ss = {.kind = MG_CMD_SLOTS_SET, .epoch = 9};
    mg_slotset_add(&ss.slots, 0);
    mg_slotset_add(&ss.slots, 4095);
    mg_slotset_add(&ss.slots, 100);
    mg_cmd sd = {.kind = MG_CMD_SLOTS_DROP};
    mg_slotset_add(&sd.slots, 77);
    const mg_cmd *each[2] = {&ss, &sd};
    for (int i = 0; i < 2; i++) {
        assert_int_equal(mg_cmd_encode(each[i], &buf, &len, &err), MG_OK);
        assert_int_equal(mg_cmd_decode(buf, len, &d, &err), MG_OK);
        assert_int_equal(d.kind, each[i]->kind);
        assert_int_equal(d.epoch, each[i]->epoch);
        assert_memory_equal(&d.slots, &each[i]->slots, sizeof d.slots);
        mg_cmd_clear(&d);
        free(buf);
    }
    /* an empty set is a set: it round-trips */
    mg_cmd empty = {.kind = MG_CMD_SLOTS_SET, .epoch = 1};
    assert_int_equal(mg_cmd_encode(&empty, &buf, &len, &err), MG_OK);
    assert_int_equal(mg_cmd_decode(buf, len, &d, &err), MG_OK);
    assert_int_equal(mg_slotset_count(&d.slots), 0);
    mg_cmd_clear(&d);
    free(buf);

    /* validation: the map must decode and follow expect */
    c.expect = 5; /* map epoch 5 is not 6 */
    assert_int_equal(mg_cmd_encode(&c, &buf, &len, &err), MG_EINVAL);
    assert_non_null(strstr(err.msg, "epoch"));
    c.expect = 4;
    ((uint8_t *)c.map)[0] = 0xc1; /* not msgpack */
    assert_int_equal(mg_cmd_validate(&c, &err), MG_EINVAL);
    mg_cmd nomap = {.kind = MG_CMD_META_SET};
    assert_int_equal(mg_cmd_validate(&nomap, &err), MG_EINVAL);
    mg_cmd_clear(&c); /* frees the map */
    assert_null(c.map);
    mg_cmd_clear(&c); /* twice is fine */

    /* corrupt inputs: slots of the wrong size, missing slots or map */
    msgpack_sbuffer sb;
    msgpack_packer pk;
    uint8_t few[511] = {0};
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 2);
    mg_mp_pack_cstr(&pk, "op");
    mg_mp_pack_cstr(&pk, "slots_drop");
    mg_mp_pack_cstr(&pk, "slots");
    mg_mp_pack_binn(&pk, few, sizeof few);
    assert_int_equal(mg_cmd_decode(sb.data, sb.size, &d, &err), MG_ECORRUPT);
    msgpack_sbuffer_clear(&sb);
    msgpack_pack_map(&pk, 2);
    mg_mp_pack_cstr(&pk, "op");
    mg_mp_pack_cstr(&pk, "slots_set");
    mg_mp_pack_cstr(&pk, "epoch");
    msgpack_pack_uint64(&pk, 3);
    assert_int_equal(mg_cmd_decode(sb.data, sb.size, &d, &err), MG_ECORRUPT);
    msgpack_sbuffer_clear(&sb);
    msgpack_pack_map(&pk, 2);
    mg_mp_pack_cstr(&pk, "op");
    mg_mp_pack_cstr(&pk, "meta_set");
    mg_mp_pack_cstr(&pk, "expect");
    msgpack_pack_uint64(&pk, 3);
    assert_int_equal(mg_cmd_decode(sb.data, sb.size, &d, &err), MG_ECORRUPT);
    msgpack_sbuffer_clear(&sb);
    msgpack_pack_map(&pk, 3);
    mg_mp_pack_cstr(&pk, "op");
    mg_mp_pack_cstr(&pk, "meta_set");
    mg_mp_pack_cstr(&pk, "map");
    mg_mp_pack_binn(&pk, few, 4);
    mg_mp_pack_cstr(&pk, "map");
    mg_mp_pack_binn(&pk, few, 4);
    assert_int_equal(mg_cmd_decode(sb.data, sb.size, &d, &err), MG_ECORRUPT);
    assert_null(d.map);
    msgpack_sbuffer_destroy(&sb);
}

static void test_validation_refuses_before_propose(void **state)
{
    (void)state;
    mg_error err = {0};
    mg_cmd c = {0};
    void *buf;
    size_t len;
    assert_int_equal(mg_workload_put_cmd(&c, "bad cube id!", 0, 1, 4, &err), MG_OK);
    assert_int_equal(mg_cmd_encode(&c, &buf, &len, &err), MG_EINVAL);
    mg_cmd_clear(&c);

    assert_int_equal(mg_workload_put_cmd(&c, "c", 0, 2, 4, &err), MG_OK);
    c.items[1].dim = 3; /* dimensions differ inside one command */
    assert_int_equal(mg_cmd_validate(&c, &err), MG_EDIM);
    c.items[1].dim = 4;
    c.items[1].vec[2] = NAN;
    assert_int_equal(mg_cmd_validate(&c, &err), MG_ENAN);
    mg_cmd_clear(&c);

    c.kind = MG_CMD_MEM_DELETE_WHERE;
    strcpy(c.cube_id, "c");
    c.filter = json_pack("{s:{s:i}}", "created_at", "after", 3);
    assert_int_equal(mg_cmd_validate(&c, &err), MG_EFILTER);
    mg_cmd_clear(&c);
}

static void test_versioning(void **state)
{
    (void)state;
    mg_error err = {0};
    mg_cmd d = {0};
    mg_mp_reader r;
    uint32_t n;
    /* {"op":"mem_teleport"} → unknown op */
    const uint8_t unknown_op[] = {0x81, 0xa2, 'o', 'p', 0xac, 'm', 'e', 'm', '_', 't', 'e',
                                  'l', 'e', 'p', 'o', 'r', 't'};
    assert_int_equal(mg_cmd_decode(unknown_op, sizeof unknown_op, &d, &err), MG_EVERSION);
    /* {"v":2,"cmds":[]} → newer entry */
    const uint8_t newer[] = {0x82, 0xa1, 'v', 0x02, 0xa4, 'c', 'm', 'd', 's', 0x90};
    assert_int_equal(mg_entry_open(newer, sizeof newer, &r, &n, &err), MG_EVERSION);
    /* {"x":1,"cmds":[],"v":1}: unknown key skipped, keys in any order */
    const uint8_t extra[] = {0x83, 0xa1, 'x', 0x01, 0xa4, 'c', 'm', 'd', 's', 0x90, 0xa1, 'v', 0x01};
    assert_int_equal(mg_entry_open(extra, sizeof extra, &r, &n, &err), MG_OK);
    assert_int_equal(n, 0);
    /* {"op":"user_delete","user_id":"bob","later":[1,2]}: newer field skipped */
    const uint8_t later[] = {0x83, 0xa2, 'o', 'p', 0xab, 'u', 's', 'e', 'r', '_', 'd', 'e',
                             'l', 'e', 't', 'e', 0xa7, 'u', 's', 'e', 'r', '_', 'i', 'd',
                             0xa3, 'b', 'o', 'b', 0xa5, 'l', 'a', 't', 'e', 'r', 0x92, 1, 2};
    assert_int_equal(mg_cmd_decode(later, sizeof later, &d, &err), MG_OK);
    assert_string_equal(d.user_id, "bob");
    mg_cmd_clear(&d);
    /* truncated input */
    assert_int_equal(mg_cmd_decode(later, sizeof later - 3, &d, &err), MG_ECORRUPT);
    assert_int_equal(mg_entry_open(extra, 6, &r, &n, &err), MG_ECORRUPT);
}

static void test_apply_idempotent_and_outcomes(void **state)
{
    env *e = *state;
    mg_error err = {0};
    mg_fsm_result *res;
    mg_cmd cmds[3] = {0};
    size_t len;
    assert_int_equal(mg_workload_cube_cmd(&cmds[0], "c", 8, &err), MG_OK);
    assert_int_equal(mg_workload_put_cmd(&cmds[1], "c", 0, 5, 8, &err), MG_OK);
    assert_int_equal(mg_workload_put_cmd(&cmds[2], "nope", 0, 2, 8, &err), MG_OK);
    void *entry = entry_of(cmds, 3, &len);

    assert_int_equal(mg_fsm_apply_at(&e->fsm, 5, entry, len, &res, &err), MG_OK);
    assert_true(res->applied);
    assert_int_equal(res->index, 5);
    assert_int_equal(res->n_cmds, 3);
    assert_int_equal(res->cmds[0].code, MG_OK);
    assert_int_equal(res->cmds[1].code, MG_OK);
    assert_int_equal(res->cmds[1].n_ops, 5);
    assert_int_equal(res->cmds[2].code, MG_ENOTFOUND); /* no such cube, per item */
    assert_int_equal(res->cmds[2].n_ops, 2);
    assert_int_equal(res->cmds[2].op_codes[1], MG_ENOTFOUND);
    assert_int_equal(mg_store_applied(e->store), 5);

    uint64_t d1, d2, count;
    assert_int_equal(mg_store_digest(e->store, &d1, &err), MG_OK);
    /* replay: skipped, nothing changes */
    assert_int_equal(mg_fsm_apply_at(&e->fsm, 5, entry, len, &res, &err), MG_OK);
    assert_false(res->applied);
    assert_int_equal(mg_fsm_apply_at(&e->fsm, 3, entry, len, &res, &err), MG_OK);
    assert_false(res->applied);
    assert_int_equal(mg_store_digest(e->store, &d2, &err), MG_OK);
    assert_int_equal(d1, d2);
    assert_int_equal(e->fsm.stats.entries_applied, 1);
    assert_int_equal(e->fsm.stats.entries_skipped, 2);
    assert_int_equal(mg_store_mem_count(e->store, "c", &count, &err), MG_OK);
    assert_int_equal(count, 5);
    free(entry);

    /* update of a missing memory fails alone; deletes count */
    mg_cmd upd = {0}, del = {0};
    assert_int_equal(mg_workload_put_cmd(&upd, "c", 100, 1, 8, &err), MG_OK);
    upd.kind = MG_CMD_MEM_UPDATE;
    assert_int_equal(mg_workload_delete_cmd(&del, "c", 0, 2, &err), MG_OK);
    mg_cmd two[2] = {upd, del};
    entry = entry_of(two, 2, &len);
    assert_int_equal(mg_fsm_apply_at(&e->fsm, 6, entry, len, &res, &err), MG_OK);
    assert_int_equal(res->cmds[0].code, MG_ENOTFOUND);
    assert_int_equal(res->cmds[1].code, MG_OK);
    assert_int_equal(res->cmds[1].n_ops, 2);
    assert_int_equal(mg_store_mem_count(e->store, "c", &count, &err), MG_OK);
    assert_int_equal(count, 3);
    free(entry);
    mg_cmd_clear(&upd);
    mg_cmd_clear(&del);
    for (int i = 0; i < 3; i++)
        mg_cmd_clear(&cmds[i]);
}

static void test_refused_entry_changes_nothing(void **state)
{
    env *e = *state;
    mg_error err = {0};
    mg_fsm_result *res;
    uint64_t d1, d2;
    assert_int_equal(mg_store_digest(e->store, &d1, &err), MG_OK);
    const uint8_t garbage[] = {0x82, 0xa1, 'v', 0x01, 0xa4, 'c', 'm', 'd', 's', 0x91, 0xc1};
    assert_int_equal(mg_fsm_apply_at(&e->fsm, 1, garbage, sizeof garbage, &res, &err), MG_OK);
    assert_int_equal(res->code, MG_ECORRUPT);
    assert_int_equal(res->n_cmds, 0);
    /* one bad command among good ones: only it is refused */
    mg_cmd good = {0};
    size_t len;
    assert_int_equal(mg_workload_cube_cmd(&good, "g", 4, &err), MG_OK);
    uint8_t *entry = entry_of(&good, 1, &len);
    /* header for 2 commands, then {"op": 7} (op not a string), then the good one */
    const uint8_t bad[] = {0x81, 0xa2, 'o', 'p', 0x07};
    size_t clen = len - MG_ENTRY_HEADER_LEN;
    uint8_t *buf = malloc(MG_ENTRY_HEADER_LEN + sizeof bad + clen);
    size_t off = mg_entry_header(buf, 2);
    memcpy(buf + off, bad, sizeof bad);
    memcpy(buf + off + sizeof bad, entry + MG_ENTRY_HEADER_LEN, clen);
    size_t blen = off + sizeof bad + clen;
    assert_int_equal(mg_fsm_apply_at(&e->fsm, 2, buf, blen, &res, &err), MG_OK);
    assert_int_equal(res->code, MG_OK);
    assert_int_equal(res->n_cmds, 2);
    assert_int_equal(res->cmds[0].code, MG_ECORRUPT);
    assert_int_equal(res->cmds[1].code, MG_OK);
    assert_int_equal(mg_store_digest(e->store, &d2, &err), MG_OK);
    assert_int_not_equal(d1, d2);
    free(buf);
    free(entry);
    mg_cmd_clear(&good);
}

static void test_snapshot_restore(void **state)
{
    env *e = *state;
    mg_error err = {0};
    mg_cmd cmds[2] = {0};
    size_t len;
    assert_int_equal(mg_workload_cube_cmd(&cmds[0], "c", 8, &err), MG_OK);
    assert_int_equal(mg_workload_put_cmd(&cmds[1], "c", 0, 50, 8, &err), MG_OK);
    void *entry = entry_of(cmds, 2, &len);
    assert_int_equal(mg_fsm_apply_at(&e->fsm, 10, entry, len, NULL, &err), MG_OK);
    void *snap;
    size_t slen;
    assert_int_equal(mg_fsm_snapshot_buf(&e->fsm, &snap, &slen, &err), MG_OK);
    uint64_t d1, d2;
    assert_int_equal(mg_store_digest(e->store, &d1, &err), MG_OK);

    /* a second, empty store restores it */
    env b = {0};
    memcpy(b.root, e->root, sizeof b.root);
    env_open_store(&b, "b");
    bool installed;
    assert_int_equal(mg_fsm_restore_buf(&b.fsm, snap, slen, &installed, &err), MG_OK);
    assert_true(installed);
    assert_int_equal(mg_store_applied(b.store), 10);
    assert_int_equal(mg_store_digest(b.store, &d2, &err), MG_OK);
    assert_int_equal(d1, d2);
    /* restoring again: the store is already there, the install is skipped */
    assert_int_equal(mg_fsm_restore_buf(&b.fsm, snap, slen, &installed, &err), MG_OK);
    assert_false(installed);
    assert_int_equal(b.fsm.stats.restores_skipped, 1);
    /* a damaged header is refused and changes nothing */
    ((uint8_t *)snap)[0] ^= 0xff;
    assert_int_equal(mg_fsm_restore_buf(&b.fsm, snap, slen, &installed, &err), MG_ECORRUPT);
    mg_fsm_close(&b.fsm);
    mg_store_close(b.store);
    free(snap);
    free(entry);
    mg_cmd_clear(&cmds[0]);
    mg_cmd_clear(&cmds[1]);
}

/* mg_cmd_read_puts must take exactly the puts mg_cmd_decode decodes (apply
 * decodes whatever it does not take), and point at the very memories
 * mg_cmd_decode decodes. */
static void check_puts_agree(const char *what, const void *buf, size_t len)
{
    mg_cmd c;
    mg_cmd_puts p;
    mg_error e1 = {0}, e2 = {0};
    int dec = mg_cmd_decode(buf, len, &c, &e1);
    bool is_put = dec == MG_OK && (c.kind == MG_CMD_MEM_PUT || c.kind == MG_CMD_MEM_UPDATE);
    int rd = mg_cmd_read_puts(buf, len, &p, &e2);
    if ((rd == MG_OK) != is_put)
        print_error("%s: mg_cmd_decode %s (%s), mg_cmd_read_puts %s (%s)\n", what,
                    mg_errname(dec), e1.msg, mg_errname(rd), e2.msg);
    assert_int_equal(rd == MG_OK, is_put);
    if (!is_put) {
        if (dec == MG_OK) {
            assert_int_equal(rd, MG_EINVAL); /* another kind */
            mg_cmd_clear(&c);
        }
        return;
    }
    assert_int_equal(p.kind, c.kind);
    assert_string_equal(p.cube_id, c.cube_id);
    assert_int_equal(p.n, c.n_items);
    for (size_t i = 0; i < p.n; i++) {
        /* the record in place holds the item mg_cmd_decode decoded (its bytes
         * may differ from a re-encoding: unknown keys, longer encodings) */
        mg_item it;
        char *rec, *want;
        size_t rlen, wlen;
        assert_int_equal(mg_item_decode(p.recs[i].record, p.recs[i].record_len, &it, &e2),
                         MG_OK);
        assert_int_equal(mg_item_encode(&it, &rec, &rlen), MG_OK);
        assert_int_equal(mg_item_encode(&c.items[i].item, &want, &wlen), MG_OK);
        assert_int_equal(rlen, wlen);
        assert_memory_equal(rec, want, wlen);
        free(rec);
        free(want);
        mg_item_clear(&it);
        assert_int_equal(p.recs[i].dim, c.items[i].dim);
        assert_int_equal(p.recs[i].vec == NULL, c.items[i].vec == NULL);
        if (c.items[i].vec != NULL)
            assert_memory_equal(p.recs[i].vec, c.items[i].vec, c.items[i].dim * sizeof(float));
    }
    mg_cmd_puts_clear(&p);
    mg_cmd_clear(&c);
}

/* A mem_put map written field by field (order and duplicates are the
 * test's), from a decoded mem_put's parts. */
static void *hand_put(const mg_cmd *c, const char *const *fields, size_t n_fields, size_t *len)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, (uint32_t)n_fields);
    for (size_t f = 0; f < n_fields; f++) {
        const char *k = fields[f];
        mg_mp_pack_cstr(&pk, k[0] == '!' ? k + 1 : k);
        if (strcmp(k, "op") == 0) {
            mg_mp_pack_cstr(&pk, mg_cmd_name(c->kind));
        } else if (strcmp(k, "cube_id") == 0) {
            mg_mp_pack_cstr(&pk, c->cube_id);
        } else if (strcmp(k, "items") == 0 || strcmp(k, "!items") == 0) {
            size_t n = k[0] == '!' ? c->n_items - 1 : c->n_items; /* "!": one short */
            msgpack_pack_array(&pk, (uint32_t)n);
            for (size_t i = 0; i < n; i++)
                mg_item_pack(&pk, &c->items[i].item);
        } else if (strcmp(k, "vecs") == 0) {
            msgpack_pack_array(&pk, (uint32_t)c->n_items);
            for (size_t i = 0; i < c->n_items; i++)
                if (c->items[i].vec != NULL && i % 3 != 1)
                    mg_mp_pack_binn(&pk, c->items[i].vec, c->items[i].dim * sizeof(float));
                else
                    msgpack_pack_nil(&pk);
        } else if (strcmp(k, "ids") == 0) {
            msgpack_pack_array(&pk, 1);
            mg_mp_pack_binn(&pk, c->items[0].item.id, 15); /* malformed */
        } else if (strcmp(k, "user_id") == 0) {
            mg_mp_pack_cstr(&pk, "someone");
        } else {
            msgpack_pack_nil(&pk); /* an unknown field */
        }
    }
    *len = sb.size;
    return sb.data;
}

static void test_read_puts_agrees(void **state)
{
    (void)state;
    mg_error err = {0};
    mg_cmd put = {0};
    assert_int_equal(mg_workload_put_cmd(&put, "cube-1", 10, 5, 8, &err), MG_OK);
    void *buf;
    size_t len;
    assert_int_equal(mg_cmd_encode(&put, &buf, &len, &err), MG_OK);
    check_puts_agree("mem_put", buf, len);
    /* every truncation and a bit flip at every byte */
    for (size_t cut = 0; cut < len; cut++)
        check_puts_agree("truncated", buf, cut);
    uint8_t *bad = malloc(len);
    for (size_t at = 0; at < len; at++) {
        memcpy(bad, buf, len);
        bad[at] ^= 0x41;
        check_puts_agree("flipped", bad, len);
    }
    free(bad);
    free(buf);

    /* field orders, duplicates, counts, extra and foreign fields */
    static const char *const layouts[][6] = {
        {"op", "cube_id", "items", "vecs"},
        {"vecs", "items", "cube_id", "op"},
        {"items", "op", "vecs", "cube_id"},
        {"op", "cube_id", "items"},
        {"op", "cube_id", "vecs"},
        {"op", "vecs", "cube_id", "vecs", "items"},
        {"op", "cube_id", "items", "items", "vecs"},
        {"op", "cube_id", "vecs", "!items"},
        {"op", "cube_id", "!items", "vecs"},
        {"op", "cube_id", "items", "vecs", "future"},
        {"op", "cube_id", "items", "vecs", "user_id"},
        {"op", "cube_id", "items", "vecs", "ids"},
        {"cube_id", "items", "vecs"},
        {"op", "items", "vecs"},
        {"op", "op", "cube_id", "items", "vecs"},
    };
    for (size_t l = 0; l < sizeof layouts / sizeof layouts[0]; l++) {
        size_t nf = 0;
        while (nf < 6 && layouts[l][nf] != NULL)
            nf++;
        for (int kind = MG_CMD_MEM_PUT; kind <= MG_CMD_MEM_UPDATE; kind++) {
            put.kind = kind;
            buf = hand_put(&put, layouts[l], nf, &len);
            check_puts_agree(layouts[l][0], buf, len);
            free(buf);
        }
    }
    put.kind = MG_CMD_MEM_PUT;
    mg_cmd_clear(&put);

    /* other kinds are not read in place */
    mg_cmd del = {0};
    assert_int_equal(mg_workload_delete_cmd(&del, "cube-1", 0, 3, &err), MG_OK);
    assert_int_equal(mg_cmd_encode(&del, &buf, &len, &err), MG_OK);
    check_puts_agree("mem_delete", buf, len);
    mg_cmd_puts p;
    assert_int_equal(mg_cmd_read_puts(buf, len, &p, &err), MG_EINVAL);
    free(buf);
    mg_cmd_clear(&del);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_cluster_cmds),
        cmocka_unit_test(test_validation_refuses_before_propose),
        cmocka_unit_test(test_versioning),
        cmocka_unit_test(test_read_puts_agrees),
        cmocka_unit_test_setup_teardown(test_apply_idempotent_and_outcomes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused_entry_changes_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_restore, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
