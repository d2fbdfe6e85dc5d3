/* lib/cmap: rules, edits, initial placement, place, even slot plans, the
 * msgpack codec (round trip, every truncation, garbage) and slot sets. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "lib/cmap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static mg_cmap_node node_make(uint64_t id)
{
    mg_cmap_node n = {.id = id, .raft_port = 9000 + (uint32_t)id * 100};
    snprintf(n.rpc, sizeof n.rpc, "tcp://10.0.0.%llu:7000", (unsigned long long)id);
    snprintf(n.survey, sizeof n.survey, "tcp://10.0.0.%llu:7001", (unsigned long long)id);
    snprintf(n.raft_host, sizeof n.raft_host, "10.0.0.%llu", (unsigned long long)id);
    return n;
}

/* A map from mg_cmap_initial: n nodes with ids 1..n. */
static mg_cmap *initial(uint32_t n_nodes, uint32_t n_groups, uint32_t replicas)
{
    mg_cmap_node nodes[MG_CMAP_NODES_MAX];
    for (uint32_t i = 0; i < n_nodes; i++)
        nodes[i] = node_make(i + 1);
    mg_cmap *m = malloc(sizeof *m);
    assert_non_null(m);
    mg_error err = {0};
    assert_int_equal(mg_cmap_initial(m, nodes, n_nodes, n_groups, replicas, &err), MG_OK);
    return m;
}

static void test_initial_placement(void **state)
{
    (void)state;
    for (uint32_t n_nodes = 1; n_nodes <= 7; n_nodes++) {
        for (uint32_t r = 1; r <= n_nodes && r <= 3; r++) {
            for (uint32_t g = 1; g <= 9; g += 4) {
                mg_cmap *m = initial(n_nodes, g, r);
                assert_int_equal(m->epoch, 1);
                assert_int_equal(mg_cmap_check(m, NULL), MG_OK);
                assert_int_equal(m->n_nodes, n_nodes);
                assert_int_equal(m->n_groups, g + 1);
                /* meta group on nodes 0..R-1 of the order given */
                const mg_cmap_group *meta = mg_cmap_group_get(m, 0);
                assert_non_null(meta);
                assert_int_equal(mg_cmap_group_slots(m, 0), 0);
                for (uint32_t j = 0; j < r; j++)
                    assert_int_equal(meta->replicas[j], j + 1);
                /* every group R replicas on distinct nodes (check() says
                 * that too), loads even */
                uint32_t lo = UINT32_MAX, hi = 0;
                for (uint32_t i = 0; i < n_nodes; i++) {
                    uint32_t load = mg_cmap_node_load(m, i + 1);
                    lo = load < lo ? load : lo;
                    hi = load > hi ? load : hi;
                }
                assert_true(hi - lo <= 1);
                for (uint32_t k = 0; k <= g; k++)
                    assert_int_equal(mg_cmap_group_get(m, k)->n_replicas, r);
                /* slots split evenly, in order */
                uint32_t total = 0;
                for (uint32_t k = 1; k <= g; k++) {
                    uint32_t c = mg_cmap_group_slots(m, k);
                    assert_true(c == MG_SLOTS / g || c == MG_SLOTS / g + 1);
                    total += c;
                }
                assert_int_equal(total, MG_SLOTS);
                assert_int_equal(m->slot_group[0], 1);
                assert_int_equal(m->slot_group[MG_SLOTS - 1], g);
                for (uint32_t s = 1; s < MG_SLOTS; s++)
                    assert_true(m->slot_group[s] >= m->slot_group[s - 1]);
                free(m);
            }
        }
    }
    mg_cmap *m = initial(3, 4, 3);
    assert_int_equal(mg_cmap_group_slots(m, 1), 1024);
    free(m);
}

static void test_initial_errors(void **state)
{
    (void)state;
    mg_cmap_node nodes[3] = {node_make(1), node_make(2), node_make(3)};
    mg_cmap *m = malloc(sizeof *m);
    mg_error err = {0};
    mg_cmap_init(m);
    assert_int_equal(mg_cmap_initial(m, nodes, 3, 4, 4, &err), MG_EINVAL);
    assert_int_equal(mg_cmap_initial(m, nodes, 3, 4, 0, &err), MG_EINVAL);
    assert_int_equal(mg_cmap_initial(m, nodes, 3, 0, 1, &err), MG_EINVAL);
    assert_int_equal(mg_cmap_initial(m, nodes, 3, MG_CMAP_GROUPS_MAX, 1, &err), MG_EINVAL);
    assert_int_equal(mg_cmap_initial(m, nodes, 0, 1, 1, &err), MG_EINVAL);
    nodes[2].id = 1; /* twice */
    assert_int_equal(mg_cmap_initial(m, nodes, 3, 2, 1, &err), MG_EEXIST);
    assert_int_equal(m->epoch, 0);
    assert_int_equal(m->n_nodes, 0);
    nodes[2] = node_make(3);
    nodes[2].raft_port = 65535; /* group 1 would pass the last port */
    assert_int_equal(mg_cmap_initial(m, nodes, 3, 2, 3, &err), MG_EINVAL);
    free(m);
}

/* Breaks one rule at a time in a good map: check() refuses each. */
static void test_check_rules(void **state)
{
    (void)state;
    mg_cmap *good = initial(3, 2, 2);
    mg_cmap *m = malloc(sizeof *m);
    mg_error err = {0};
#define BROKEN(edit)                                                                               \
    do {                                                                                           \
        *m = *good;                                                                                \
        edit;                                                                                      \
        err.msg[0] = '\0';                                                                         \
        assert_int_equal(mg_cmap_check(m, &err), MG_EINVAL);                                       \
        assert_true(err.msg[0] != '\0');                                                           \
    } while (0)
    BROKEN(m->slot_group[7] = 0);                       /* slot without a group */
    BROKEN(m->slot_group[7] = 9);                       /* missing group */
    BROKEN(m->nodes[1].id = m->nodes[0].id);            /* node id twice */
    BROKEN(m->nodes[0].id = 0);                         /* node id 0 */
    BROKEN(m->groups[1].replicas[1] = m->groups[1].replicas[0]); /* two on one node */
    BROKEN(m->groups[1].replicas[0] = 77);              /* unknown node */
    BROKEN(m->groups[2].id = 1);                        /* group id twice */
    BROKEN(m->groups[1].n_replicas = 0);                /* no replicas */
    BROKEN(m->groups[0].id = 1; m->groups[1].id = 2; m->groups[2].id = 3); /* no meta group */
    BROKEN(m->nodes[2].raft_port = 65535);              /* port + group passes 65535 */
    BROKEN(m->nodes[2].raft_port = 0);
    BROKEN(m->nodes[0].rpc[0] = '\0');
    BROKEN(memset(m->nodes[0].raft_host, 'x', sizeof m->nodes[0].raft_host)); /* no NUL */
    BROKEN(m->nodes[0].state = 7);
    BROKEN(snprintf(m->cluster, sizeof m->cluster, "not-a-uuid")); /* cluster id */
    BROKEN(memset(m->cluster, 'a', sizeof m->cluster));            /* no NUL */
#undef BROKEN
    *m = *good;
    assert_int_equal(mg_cmap_check(m, NULL), MG_OK);
    /* The cluster id is optional (maps of older builds have none). */
    assert_string_equal(m->cluster, "");
    snprintf(m->cluster, sizeof m->cluster, "%s", "0b7c4a3e-5f1d-4c2a-9e8b-1d2c3b4a5f6e");
    assert_int_equal(mg_cmap_check(m, NULL), MG_OK);
    free(m);
    free(good);
}

static void test_edits_and_lookups(void **state)
{
    (void)state;
    mg_cmap *m = initial(3, 2, 2);
    mg_error err = {0};
    mg_cmap_node n4 = node_make(4);
    assert_int_equal(mg_cmap_add_node(m, &n4, &err), MG_OK);
    assert_int_equal(mg_cmap_add_node(m, &n4, &err), MG_EEXIST);
    assert_int_equal(m->n_nodes, 4);
    assert_int_equal(mg_cmap_node_load(m, 4), 0);

    assert_int_equal(mg_cmap_add_replica(m, 1, 4, &err), MG_OK);
    assert_true(mg_cmap_group_has(mg_cmap_group_get(m, 1), 4));
    assert_int_equal(mg_cmap_add_replica(m, 1, 4, &err), MG_EEXIST);
    assert_int_equal(mg_cmap_add_replica(m, 9, 4, &err), MG_ENOTFOUND);
    assert_int_equal(mg_cmap_add_replica(m, 1, 99, &err), MG_ENOTFOUND);
    assert_int_equal(mg_cmap_remove_node(m, 4, &err), MG_EINVAL); /* hosts a replica */
    assert_int_equal(mg_cmap_remove_replica(m, 1, 4, &err), MG_OK);
    assert_int_equal(mg_cmap_remove_replica(m, 1, 4, &err), MG_ENOTFOUND);
    assert_int_equal(mg_cmap_remove_node(m, 4, &err), MG_OK);
    assert_int_equal(mg_cmap_remove_node(m, 4, &err), MG_ENOTFOUND);
    assert_null(mg_cmap_node_get(m, 4));
    assert_int_equal(mg_cmap_check(m, NULL), MG_OK);

    /* a new group goes in id order; ids and replicas are checked */
    uint64_t r[2] = {3, 1};
    assert_int_equal(mg_cmap_add_group(m, 7, r, 2, &err), MG_OK);
    assert_int_equal(mg_cmap_add_group(m, 5, r, 1, &err), MG_OK);
    assert_int_equal(m->groups[3].id, 5);
    assert_int_equal(m->groups[4].id, 7);
    assert_int_equal(mg_cmap_add_group(m, 7, r, 2, &err), MG_EEXIST);
    assert_int_equal(mg_cmap_add_group(m, MG_CMAP_GROUPS_MAX, r, 2, &err), MG_EINVAL);
    uint64_t twice[2] = {2, 2};
    assert_int_equal(mg_cmap_add_group(m, 8, twice, 2, &err), MG_EINVAL);
    uint64_t unknown[1] = {42};
    assert_int_equal(mg_cmap_add_group(m, 8, unknown, 1, &err), MG_EINVAL);
    assert_null(mg_cmap_group_get(m, 8));
    assert_int_equal(mg_cmap_group_slots(m, 7), 0);
    assert_int_equal(mg_cmap_check(m, NULL), MG_OK);

    /* the last replica cannot go */
    assert_int_equal(mg_cmap_remove_replica(m, 5, 3, &err), MG_EINVAL);
    assert_int_equal(mg_cmap_group_get(m, 5)->n_replicas, 1);

    char addr[64];
    const mg_cmap_node *n1 = mg_cmap_node_get(m, 1);
    assert_int_equal(mg_cmap_raft_address(n1, 3, addr, sizeof addr, &err), MG_OK);
    assert_string_equal(addr, "10.0.0.1:9103");
    mg_cmap_node high = node_make(9);
    high.raft_port = 65530;
    assert_int_equal(mg_cmap_raft_address(&high, 5, addr, sizeof addr, &err), MG_OK);
    assert_string_equal(addr, "10.0.0.9:65535");
    assert_int_equal(mg_cmap_raft_address(&high, 6, addr, sizeof addr, &err), MG_EINVAL);

    assert_int_equal(mg_cmap_cube_group(m, "abc", 3), m->slot_group[mg_slot_of("abc", 3)]);
    assert_true(mg_slot_of("abc", 3) < MG_SLOTS);
    assert_int_equal(mg_slot_of("abc", 3), mg_slot_of("abcdef", 3));
    free(m);
}

static void test_place(void **state)
{
    (void)state;
    mg_cmap *m = initial(5, 2, 3); /* 9 replicas on 5 nodes: loads 2,2,2,2,1 */
    assert_int_equal(mg_cmap_node_load(m, 5), 1);
    uint64_t out[5];
    mg_error err = {0};
    assert_int_equal(mg_cmap_place(m, 3, NULL, 0, out, &err), MG_OK);
    assert_int_equal(out[0], 5); /* least loaded first, then lower ids */
    assert_int_equal(out[1], 1);
    assert_int_equal(out[2], 2);
    uint64_t ex[2] = {5, 1};
    assert_int_equal(mg_cmap_place(m, 3, ex, 2, out, &err), MG_OK);
    assert_int_equal(out[0], 2);
    assert_int_equal(out[1], 3);
    assert_int_equal(out[2], 4);
    /* removing nodes are not eligible */
    m->nodes[1].state = MG_CMAP_NODE_REMOVING; /* node 2 */
    assert_int_equal(mg_cmap_place(m, 3, ex, 2, out, &err), MG_EINVAL);
    assert_non_null(strstr(err.msg, "cannot place 3 replicas on 2 eligible nodes"));
    assert_int_equal(mg_cmap_place(m, 2, ex, 2, out, &err), MG_OK);
    assert_int_equal(out[0], 3);
    assert_int_equal(out[1], 4);
    assert_int_equal(mg_cmap_place(m, 6, NULL, 0, out, &err), MG_EINVAL);
    free(m);
}

/* Applies a plan to a copy and checks what moved. */
static void check_plan(const mg_cmap *m, const uint64_t *targets, size_t n, uint32_t want_moves)
{
    uint16_t out[MG_SLOTS];
    mg_error err = {0};
    assert_int_equal(mg_cmap_plan_even(m, targets, n, out, &err), MG_OK);
    uint32_t moves = 0;
    uint32_t count[MG_CMAP_GROUPS_MAX] = {0};
    for (uint32_t s = 0; s < MG_SLOTS; s++) {
        uint16_t g = m->slot_group[s];
        if (out[s] != 0) {
            moves++;
            assert_true(out[s] != g);
            g = out[s];
        }
        count[g]++;
    }
    for (size_t i = 0; i < n; i++) {
        uint32_t c = count[targets[i]];
        assert_true(c == MG_SLOTS / n || c == MG_SLOTS / n + 1);
    }
    uint32_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += count[targets[i]];
    assert_int_equal(total, MG_SLOTS); /* non-targets gave up everything */
    assert_int_equal(moves, want_moves);
}

static void test_plan_even(void **state)
{
    (void)state;
    mg_cmap *m = initial(3, 4, 1); /* 1024 slots each */
    uint64_t r[1] = {1};
    mg_error err = {0};
    assert_int_equal(mg_cmap_add_group(m, 5, r, 1, &err), MG_OK);
    /* already even: nothing moves */
    check_plan(m, (uint64_t[]){1, 2, 3, 4}, 4, 0);
    /* a new empty group gets its share (819 or 820) from the others only */
    uint16_t out[MG_SLOTS];
    check_plan(m, (uint64_t[]){1, 2, 3, 4, 5}, 5, 819);
    assert_int_equal(mg_cmap_plan_even(m, (uint64_t[]){1, 2, 3, 4, 5}, 5, out, &err), MG_OK);
    for (uint32_t s = 0; s < MG_SLOTS; s++)
        assert_true(out[s] == 0 || out[s] == 5);
    /* dropping a group: its slots, and only those, spread over the rest */
    check_plan(m, (uint64_t[]){1, 2, 3}, 3, 1024);
    assert_int_equal(mg_cmap_plan_even(m, (uint64_t[]){1, 2, 3}, 3, out, &err), MG_OK);
    for (uint32_t s = 0; s < MG_SLOTS; s++)
        assert_true((out[s] != 0) == (m->slot_group[s] == 4));
    /* uneven: 1 has 2048 + 1024, moves exactly the excess */
    for (uint32_t s = 0; s < MG_SLOTS; s++)
        if (m->slot_group[s] == 2)
            m->slot_group[s] = 1;
    check_plan(m, (uint64_t[]){1, 2, 3, 4}, 4, 1024);
    check_plan(m, (uint64_t[]){4, 2}, 2, 1024 + 1024 + 1024);

    /* errors: the meta group, a missing group, twice, none */
    assert_int_equal(mg_cmap_plan_even(m, (uint64_t[]){0, 1}, 2, out, &err), MG_EINVAL);
    assert_int_equal(mg_cmap_plan_even(m, (uint64_t[]){1, 9}, 2, out, &err), MG_EINVAL);
    assert_int_equal(mg_cmap_plan_even(m, (uint64_t[]){1, 1}, 2, out, &err), MG_EINVAL);
    assert_int_equal(mg_cmap_plan_even(m, NULL, 0, out, &err), MG_EINVAL);
    free(m);

    /* 3 groups of 4096: 1366, 1365, 1365 */
    m = initial(2, 2, 1);
    check_plan(m, (uint64_t[]){1, 2}, 2, 0);
    assert_int_equal(mg_cmap_add_group(m, 3, r, 1, &err), MG_OK);
    check_plan(m, (uint64_t[]){1, 2, 3}, 3, 1365);
    free(m);
}

static void assert_maps_equal(const mg_cmap *a, const mg_cmap *b)
{
    assert_int_equal(a->epoch, b->epoch);
    assert_string_equal(a->cluster, b->cluster);
    assert_int_equal(a->n_nodes, b->n_nodes);
    assert_int_equal(a->n_groups, b->n_groups);
    assert_memory_equal(a->nodes, b->nodes, a->n_nodes * sizeof a->nodes[0]);
    assert_memory_equal(a->groups, b->groups, a->n_groups * sizeof a->groups[0]);
    assert_memory_equal(a->slot_group, b->slot_group, sizeof a->slot_group);
}

static void test_codec(void **state)
{
    (void)state;
    mg_cmap *m = initial(4, 3, 3);
    m->epoch = 17;
    m->nodes[2].state = MG_CMAP_NODE_REMOVING;
    /* some scattered runs */
    for (uint32_t s = 100; s < 4000; s += 37)
        m->slot_group[s] = (uint16_t)(1 + s % 3);
    assert_int_equal(mg_cmap_check(m, NULL), MG_OK);
    void *buf;
    size_t len;
    mg_error err = {0};
    assert_int_equal(mg_cmap_encode(m, &buf, &len, &err), MG_OK);
    mg_cmap *d = malloc(sizeof *d);
    assert_int_equal(mg_cmap_decode(buf, len, d, &err), MG_OK);
    assert_maps_equal(m, d);

    /* every truncation fails and leaves an empty map */
    for (size_t cut = 0; cut < len; cut++) {
        assert_int_equal(mg_cmap_decode(buf, cut, d, &err), MG_ECORRUPT);
        assert_int_equal(d->epoch, 0);
        assert_int_equal(d->n_nodes, 0);
    }
    /* garbage: bit flips never crash; each either decodes to a checked map
     * or fails cleanly */
    uint8_t *g = malloc(len);
    for (size_t i = 0; i < len; i++) {
        memcpy(g, buf, len);
        g[i] ^= 0x5a;
        int rc = mg_cmap_decode(g, len, d, &err);
        if (rc == MG_OK && d->epoch != 0)
            assert_int_equal(mg_cmap_check(d, NULL), MG_OK);
        else if (rc != MG_OK)
            assert_int_equal(d->n_groups, 0);
    }
    free(g);
    free(buf);
    const uint8_t junk[] = {0x93, 0x01, 0x02, 0x03};
    assert_int_equal(mg_cmap_decode(junk, sizeof junk, d, &err), MG_ECORRUPT);

    /* hand-built inputs: newer version, missing version, broken map, an
     * unknown key skipped, epoch 0 unchecked, overlapping runs */
    msgpack_sbuffer sb;
    msgpack_packer pk;
#define ENCODE(body)                                                                               \
    do {                                                                                           \
        msgpack_sbuffer_init(&sb);                                                                 \
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);                                      \
        body;                                                                                      \
    } while (0)
    ENCODE(msgpack_pack_map(&pk, 2); mg_mp_pack_cstr(&pk, "v"); msgpack_pack_uint32(&pk, 2);
           mg_mp_pack_cstr(&pk, "epoch"); msgpack_pack_uint64(&pk, 1));
    assert_int_equal(mg_cmap_decode(sb.data, sb.size, d, &err), MG_EVERSION);
    msgpack_sbuffer_destroy(&sb);
    ENCODE(msgpack_pack_map(&pk, 1); mg_mp_pack_cstr(&pk, "epoch"); msgpack_pack_uint64(&pk, 0));
    assert_int_equal(mg_cmap_decode(sb.data, sb.size, d, &err), MG_ECORRUPT);
    msgpack_sbuffer_destroy(&sb);
    ENCODE(msgpack_pack_map(&pk, 3); mg_mp_pack_cstr(&pk, "v"); msgpack_pack_uint32(&pk, 1);
           mg_mp_pack_cstr(&pk, "future"); msgpack_pack_array(&pk, 1); msgpack_pack_nil(&pk);
           mg_mp_pack_cstr(&pk, "epoch"); msgpack_pack_uint64(&pk, 0));
    assert_int_equal(mg_cmap_decode(sb.data, sb.size, d, &err), MG_OK);
    assert_int_equal(d->epoch, 0);
    msgpack_sbuffer_destroy(&sb);
    /* epoch 1 with no groups: decodes, then fails the rules */
    ENCODE(msgpack_pack_map(&pk, 2); mg_mp_pack_cstr(&pk, "v"); msgpack_pack_uint32(&pk, 1);
           mg_mp_pack_cstr(&pk, "epoch"); msgpack_pack_uint64(&pk, 1));
    assert_int_equal(mg_cmap_decode(sb.data, sb.size, d, &err), MG_EINVAL);
    msgpack_sbuffer_destroy(&sb);
    ENCODE(msgpack_pack_map(&pk, 2); mg_mp_pack_cstr(&pk, "v"); msgpack_pack_uint32(&pk, 1);
           mg_mp_pack_cstr(&pk, "slots"); msgpack_pack_array(&pk, 2);
           msgpack_pack_array(&pk, 3); msgpack_pack_uint32(&pk, 0); msgpack_pack_uint32(&pk, 10);
           msgpack_pack_uint32(&pk, 1); msgpack_pack_array(&pk, 3);
           msgpack_pack_uint32(&pk, 5); msgpack_pack_uint32(&pk, 20);
           msgpack_pack_uint32(&pk, 2));
    assert_int_equal(mg_cmap_decode(sb.data, sb.size, d, &err), MG_ECORRUPT);
    msgpack_sbuffer_destroy(&sb);

    /* The cluster id round-trips; a map without one encodes without the key
     * (as older builds wrote it) and decodes to ""; a key that is not a UUID
     * fails the rules; nil reads as none. */
    mg_cmap *c = initial(3, 2, 3);
    void *plain;
    size_t plain_len;
    assert_int_equal(mg_cmap_encode(c, &plain, &plain_len, &err), MG_OK);
    assert_null(memmem(plain, plain_len, "cluster", 7));
    assert_int_equal(mg_cmap_decode(plain, plain_len, d, &err), MG_OK);
    assert_string_equal(d->cluster, "");
    free(plain);
    snprintf(c->cluster, sizeof c->cluster, "%s", "0b7c4a3e-5f1d-4c2a-9e8b-1d2c3b4a5f6e");
    assert_int_equal(mg_cmap_encode(c, &buf, &len, &err), MG_OK);
    assert_non_null(memmem(buf, len, "cluster", 7));
    assert_int_equal(mg_cmap_decode(buf, len, d, &err), MG_OK);
    assert_string_equal(d->cluster, "0b7c4a3e-5f1d-4c2a-9e8b-1d2c3b4a5f6e");
    assert_maps_equal(c, d);
    free(buf);
    ENCODE(msgpack_pack_map(&pk, 3); mg_mp_pack_cstr(&pk, "v"); msgpack_pack_uint32(&pk, 1);
           mg_mp_pack_cstr(&pk, "epoch"); msgpack_pack_uint64(&pk, 0);
           mg_mp_pack_cstr(&pk, "cluster"); msgpack_pack_nil(&pk));
    assert_int_equal(mg_cmap_decode(sb.data, sb.size, d, &err), MG_OK);
    assert_string_equal(d->cluster, "");
    msgpack_sbuffer_destroy(&sb);
    snprintf(c->cluster, sizeof c->cluster, "%s", "not-a-uuid");
    assert_int_equal(mg_cmap_encode(c, &buf, &len, &err), MG_OK);
    assert_int_equal(mg_cmap_decode(buf, len, d, &err), MG_EINVAL);
    assert_string_equal(d->cluster, "");
    free(buf);
    ENCODE(msgpack_pack_map(&pk, 2); mg_mp_pack_cstr(&pk, "v"); msgpack_pack_uint32(&pk, 1);
           mg_mp_pack_cstr(&pk, "cluster"); msgpack_pack_uint32(&pk, 7));
    assert_int_equal(mg_cmap_decode(sb.data, sb.size, d, &err), MG_ECORRUPT);
    msgpack_sbuffer_destroy(&sb);
    free(c);
#undef ENCODE

    /* the empty map round-trips */
    mg_cmap_init(m);
    assert_int_equal(mg_cmap_encode(m, &buf, &len, &err), MG_OK);
    assert_int_equal(mg_cmap_decode(buf, len, d, &err), MG_OK);
    assert_maps_equal(m, d);
    free(buf);
    free(d);
    free(m);
}

static void test_slotsets(void **state)
{
    (void)state;
    mg_slotset s;
    mg_error err = {0};
    char buf[256];
    assert_int_equal(mg_slotset_parse("0-1365,2000,2048-4095", &s, &err), MG_OK);
    assert_int_equal(mg_slotset_count(&s), 1366 + 1 + 2048);
    assert_true(mg_slotset_has(&s, 1365));
    assert_false(mg_slotset_has(&s, 1366));
    assert_true(mg_slotset_has(&s, 2000));
    assert_int_equal(mg_slotset_format(&s, buf, sizeof buf), MG_OK);
    assert_string_equal(buf, "0-1365,2000,2048-4095");
    assert_int_equal(mg_slotset_parse(" 5 , 3-4 ,7", &s, &err), MG_OK);
    assert_int_equal(mg_slotset_format(&s, buf, sizeof buf), MG_OK);
    assert_string_equal(buf, "3-5,7");
    assert_int_equal(mg_slotset_parse("", &s, &err), MG_OK);
    assert_int_equal(mg_slotset_count(&s), 0);
    assert_int_equal(mg_slotset_format(&s, buf, sizeof buf), MG_OK);
    assert_string_equal(buf, "");
    assert_int_equal(mg_slotset_format(&s, buf, 0), MG_ETOOBIG);

    /* errors name the part and change nothing */
    const char *bad[] = {"4096", "1,,2", "1-", "-1", "5-3", "a", "1-2-3", "1,", "12345",
                         "0-4096", "1 - 2"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        mg_slotset keep;
        memset(&keep, 0xab, sizeof keep);
        s = keep;
        err.msg[0] = '\0';
        assert_int_equal(mg_slotset_parse(bad[i], &s, &err), MG_EINVAL);
        assert_memory_equal(&s, &keep, sizeof s);
        assert_non_null(strstr(err.msg, "slots"));
    }
    assert_int_equal(mg_slotset_parse(NULL, &s, &err), MG_EINVAL);

    /* a set that does not fit */
    assert_int_equal(mg_slotset_parse("0,2,4,6,8,10,12", &s, &err), MG_OK);
    assert_int_equal(mg_slotset_format(&s, buf, 8), MG_ETOOBIG);
    assert_int_equal(mg_slotset_format(&s, buf, 15), MG_ETOOBIG);
    assert_int_equal(mg_slotset_format(&s, buf, 16), MG_OK);
    assert_string_equal(buf, "0,2,4,6,8,10,12");

    /* the group's slots in a map */
    mg_cmap *m = initial(1, 3, 1);
    mg_cmap_group_slotset(m, 2, &s);
    assert_int_equal(mg_slotset_count(&s), mg_cmap_group_slots(m, 2));
    assert_int_equal(mg_slotset_format(&s, buf, sizeof buf), MG_OK);
    assert_string_equal(buf, "1365-2729");
    free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_initial_placement), cmocka_unit_test(test_initial_errors),
        cmocka_unit_test(test_check_rules),       cmocka_unit_test(test_edits_and_lookups),
        cmocka_unit_test(test_place),             cmocka_unit_test(test_plan_even),
        cmocka_unit_test(test_codec),             cmocka_unit_test(test_slotsets),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
