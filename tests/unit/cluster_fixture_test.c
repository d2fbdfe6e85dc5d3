/*
 * Deterministic replication tests: raft_fixture clusters whose servers run
 * the real FSM over real LMDB stores in temp directories.
 */
#include "cluster_harness.h"

/* Leader elected, cube created, `batches` puts of `per` memories applied
 * everywhere. Returns the leader. */
static unsigned write_and_converge(harness *h, unsigned batches, size_t per)
{
    unsigned l = h_leader(h);
    assert_true(l < h->n);
    raft_index idx = 0;
    if (!h->cube_created) {
        assert_int_equal(h_create_cube(h, l, &idx), 0);
        h->cube_created = true;
    }
    for (unsigned b = 0; b < batches; b++)
        assert_int_equal(h_put(h, l, per, &idx), 0);
    assert_true(h_converge(h));
    assert_int_equal(h->pending, 0);
    return l;
}

static void test_three_replicas_converge(void **state)
{
    (void)state;
    harness *h = calloc(1, sizeof *h);
    h_setup(h, 3, 1024, 128);
    write_and_converge(h, 20, 10);
    assert_int_equal(h_n_acked(h), 200);
    for (unsigned i = 0; i < 3; i++) {
        assert_int_equal(h_count(h, i), 200);
        assert_int_equal(h->fsms[i].stats.entries_applied, 21);
    }
    h_check_all(h);
    h_teardown(h);
    free(h);
}

static bool other_leader(struct raft_fixture *f, void *arg)
{
    unsigned old = *(unsigned *)arg;
    unsigned l = raft_fixture_leader_index(f);
    return l < raft_fixture_n(f) && l != old;
}

static void test_leader_killed(void **state)
{
    (void)state;
    harness *h = calloc(1, sizeof *h);
    h_setup(h, 3, 1024, 128);
    unsigned l = write_and_converge(h, 10, 5);
    /* Entries proposed but not yet committed when the leader dies may or may
     * not survive; the acknowledged ones must. */
    assert_int_equal(h_put(h, l, 5, NULL), 0);
    raft_fixture_kill(&h->f, l);
    assert_true(raft_fixture_step_until(&h->f, other_leader, &l, 20000));
    unsigned nl = raft_fixture_leader_index(&h->f);
    assert_true(nl < h->n);
    assert_int_not_equal(nl, l);
    raft_index idx;
    for (int b = 0; b < 10; b++)
        assert_int_equal(h_put(h, nl, 5, &idx), 0);
    assert_true(h_wait_applied(h, nl, idx));
    assert_true(h_n_acked(h) >= 100);
    assert_true(h_converge(h));
    h_check_all(h); /* the two alive replicas */
    raft_fixture_revive(&h->f, l);
    assert_true(h_converge(h));
    h_check_all(h);
    h_teardown(h);
    free(h);
}

static void disconnect(harness *h, unsigned i)
{
    for (unsigned j = 0; j < h->n; j++) {
        if (j == i)
            continue;
        raft_fixture_disconnect(&h->f, i, j);
        raft_fixture_disconnect(&h->f, j, i);
    }
}

static void reconnect(harness *h, unsigned i)
{
    for (unsigned j = 0; j < h->n; j++) {
        if (j == i)
            continue;
        raft_fixture_reconnect(&h->f, i, j);
        raft_fixture_reconnect(&h->f, j, i);
    }
}

static void follower_catch_up(unsigned threshold, unsigned trailing, bool want_snapshot)
{
    harness *h = calloc(1, sizeof *h);
    h_setup(h, 3, threshold, trailing);
    unsigned l = write_and_converge(h, 2, 5);
    unsigned f = (l + 1) % 3;
    disconnect(h, f);
    raft_index idx = 0;
    for (int b = 0; b < 40; b++)
        assert_int_equal(h_put(h, l, 5, &idx), 0);
    assert_true(h_wait_applied(h, l, idx));
    assert_true(raft_last_applied(raft_fixture_get(&h->f, f)) < idx);
    reconnect(h, f);
    assert_true(h_wait_applied(h, f, idx));
    assert_int_equal(h_count(h, f), h->next_k);
    if (want_snapshot)
        assert_true(h->fsms[f].stats.restores >= 1);
    else
        assert_int_equal(h->fsms[f].stats.restores, 0);
    h_check_all(h);
    h_teardown(h);
    free(h);
}

static void test_follower_catches_up_by_log(void **state)
{
    (void)state;
    follower_catch_up(1024, 512, false);
}

static void test_follower_catches_up_by_snapshot(void **state)
{
    (void)state;
    follower_catch_up(8, 2, true);
}

static void test_restart_replays_without_applying_twice(void **state)
{
    (void)state;
    harness *h = calloc(1, sizeof *h);
    h_setup(h, 3, 16, 4); /* snapshots happen, and a log tail follows them */
    unsigned l = write_and_converge(h, 30, 4);
    unsigned f = (l + 1) % 3;
    uint64_t digest = h_digest(h, f), count = h_count(h, f);
    uint64_t applied = mg_store_applied(h->stores[f]);
    unsigned nf = h_restart(h, f);
    assert_true(h_converge(h));
    /* Nothing new yet: same digest, count and index, nothing applied. */
    assert_int_equal(h_digest(h, nf), digest);
    assert_int_equal(h_count(h, nf), count);
    assert_int_equal(mg_store_applied(h->stores[nf]), applied);
    assert_int_equal(h->fsms[nf].stats.entries_applied, 0);
    /* The store is ahead of the snapshot the replica is sent: the install is
     * skipped, and so are the entries after it that the store has. */
    assert_int_equal(h->fsms[nf].stats.restores, 0);
    assert_true(h->fsms[nf].stats.restores_skipped >= 1);

    raft_index idx;
    l = h_leader(h);
    assert_int_equal(h_put(h, l, 4, &idx), 0);
    assert_true(h_wait_applied(h, nf, idx));
    assert_int_equal(h->fsms[nf].stats.entries_applied, 1); /* only the new entry */
    assert_int_equal(h_count(h, nf), count + 4);
    h_check_all(h);
    h_teardown(h);
    free(h);
}


static void test_add_fourth_replica_gets_snapshot(void **state)
{
    (void)state;
    harness *h = calloc(1, sizeof *h);
    h_setup(h, 3, 8, 2);
    unsigned l = write_and_converge(h, 30, 4);
    h_grow(h); /* server 3, id 4, empty store */
    struct raft *r4 = raft_fixture_get(&h->f, 3);
    assert_int_equal(raft_start(r4), 0);
    h_change(h, H_ADD, r4);
    h_change(h, H_ASSIGN, r4);
    assert_int_equal(raft_fixture_get(&h->f, l)->configuration.n, 4);
    raft_index idx;
    assert_int_equal(h_put(h, l, 4, &idx), 0);
    assert_true(h_wait_applied(h, 3, idx));
    assert_true(h->fsms[3].stats.restores >= 1);
    assert_int_equal(h_count(h, 3), h->next_k);
    h_check_all(h);
    h_teardown(h);
    free(h);
}

/* The slot record travels by log and by snapshot: a replica added after a
 * slots_set learns its group's ownership from the snapshot it installs, and
 * every replica refuses the same unowned write. */
static void test_slot_record_reaches_new_replica(void **state)
{
    (void)state;
    harness *h = calloc(1, sizeof *h);
    h_setup(h, 3, 8, 2);
    unsigned l = write_and_converge(h, 2, 4);
    const char *other = "elsewhere";
    uint32_t own_slot = mg_slot_of(H_CUBE, strlen(H_CUBE));
    assert_true(mg_slot_of(other, strlen(other)) != own_slot);
    mg_cmd set = {.kind = MG_CMD_SLOTS_SET, .epoch = 12};
    mg_slotset_add(&set.slots, own_slot);
    raft_index idx = 0;
    assert_int_equal(h_propose_cmd(h, l, &set, 0, 0, &idx), 0);
    assert_true(h_converge(h));
    for (unsigned i = 0; i < 3; i++) {
        uint64_t epoch = 0;
        assert_false(mg_fsm_owns(&h->fsms[i], other, strlen(other), &epoch));
        assert_int_equal(epoch, 12);
        assert_true(mg_fsm_owns(&h->fsms[i], H_CUBE, strlen(H_CUBE), NULL));
    }
    /* enough entries for a snapshot, then a fourth replica */
    write_and_converge(h, 12, 2);
    h_grow(h);
    struct raft *r4 = raft_fixture_get(&h->f, 3);
    assert_true(mg_fsm_owns(&h->fsms[3], other, strlen(other), NULL)); /* no record yet */
    assert_int_equal(raft_start(r4), 0);
    h_change(h, H_ADD, r4);
    h_change(h, H_ASSIGN, r4);
    mg_cmd c = {0};
    mg_error err = {0};
    assert_int_equal(mg_workload_cube_cmd(&c, other, H_DIM, &err), MG_OK);
    assert_int_equal(h_propose_cmd(h, l, &c, 0, 0, &idx), 0);
    mg_cmd_clear(&c);
    assert_true(h_wait_applied(h, 3, idx));
    assert_true(h->fsms[3].stats.restores >= 1);
    uint64_t epoch = 0;
    assert_false(mg_fsm_owns(&h->fsms[3], other, strlen(other), &epoch));
    assert_int_equal(epoch, 12);
    assert_true(h_converge(h));
    for (unsigned i = 0; i < 4; i++) {
        mg_cube cube = {0};
        assert_int_equal(mg_store_cube_get(h->stores[i], other, &cube, NULL), MG_ENOTFOUND);
    }
    assert_int_equal(h_count(h, 3), h->next_k);
    h_check_all(h);
    h_teardown(h);
    free(h);
}

static void test_remove_replica(void **state)
{
    (void)state;
    harness *h = calloc(1, sizeof *h);
    h_setup(h, 3, 1024, 128);
    unsigned l = write_and_converge(h, 5, 4);
    unsigned f = (l + 1) % 3;
    struct raft *lr = raft_fixture_get(&h->f, l);
    int status = -1;
    struct raft_change req = {.data = &status};
    assert_int_equal(raft_remove(lr, &req, raft_fixture_get(&h->f, f)->id, h_change_cb), 0);
    assert_true(raft_fixture_step_until(&h->f, h_change_done, &status, 20000));
    assert_int_equal(status, 0);
    assert_int_equal(lr->configuration.n, 2);
    /* The removed replica no longer receives writes; the other two commit. */
    uint64_t before = h_count(h, f);
    raft_index idx;
    assert_int_equal(h_put(h, l, 4, &idx), 0);
    unsigned other = 3 - l - f;
    assert_true(h_wait_applied(h, other, idx));
    raft_fixture_step_until_elapsed(&h->f, 2000);
    assert_int_equal(h_count(h, f), before);
    assert_int_equal(h_count(h, other), h->next_k);
    assert_int_equal(h_digest(h, other), h_digest(h, l));
    h_teardown(h);
    free(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_three_replicas_converge),
        cmocka_unit_test(test_leader_killed),
        cmocka_unit_test(test_follower_catches_up_by_log),
        cmocka_unit_test(test_follower_catches_up_by_snapshot),
        cmocka_unit_test(test_restart_replays_without_applying_twice),
        cmocka_unit_test(test_add_fourth_replica_gets_snapshot),
        cmocka_unit_test(test_remove_replica),
        cmocka_unit_test(test_slot_record_reaches_new_replica),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
