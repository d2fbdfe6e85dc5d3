/*
 * Randomized replication test on raft_fixture with the real FSM and LMDB:
 * seeded runs interleave writes, kills, revivals, disconnections and
 * restarts (a replica replaced over its own store), then heal everything and
 * check that every replica holds exactly the acknowledged writes (acked ⊆
 * stored ⊆ proposed) with equal digests.
 *
 * The seed comes from MEMGRID_SEED or the clock and is printed first:
 *   MEMGRID_SEED=<seed> ./cluster_random_test   replays a run.
 * MEMGRID_RUNS (default 3) runs seeds seed, seed+1, ...
 */
#include "cluster_harness.h"

#include <time.h>

#define STEPS 250

static uint64_t rng_state;

static uint32_t rnd(uint32_t n)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state % n);
}

typedef struct world {
    harness h;
    bool gone[RAFT_FIXTURE_MAX_SERVERS]; /* replaced by a restart */
    bool cut[RAFT_FIXTURE_MAX_SERVERS][RAFT_FIXTURE_MAX_SERVERS];
    unsigned restarts;
} world;

static unsigned n_dead_members(world *w)
{
    unsigned n = 0;
    for (unsigned i = 0; i < w->h.n; i++)
        if (!w->gone[i] && !raft_fixture_alive(&w->h.f, i))
            n++;
    return n;
}

static void set_cut(world *w, unsigned i, unsigned j, bool cut)
{
    if (cut) {
        raft_fixture_disconnect(&w->h.f, i, j);
        raft_fixture_disconnect(&w->h.f, j, i);
    } else {
        raft_fixture_reconnect(&w->h.f, i, j);
        raft_fixture_reconnect(&w->h.f, j, i);
    }
    w->cut[i][j] = w->cut[j][i] = cut;
}

static bool any_cut(world *w)
{
    for (unsigned i = 0; i < w->h.n; i++)
        for (unsigned j = 0; j < w->h.n; j++)
            if (w->cut[i][j])
                return true;
    return false;
}

static void heal(world *w)
{
    for (unsigned i = 0; i < w->h.n; i++)
        for (unsigned j = i + 1; j < w->h.n; j++)
            if (w->cut[i][j])
                set_cut(w, i, j, false);
    for (unsigned i = 0; i < w->h.n; i++)
        if (!w->gone[i] && !raft_fixture_alive(&w->h.f, i))
            raft_fixture_revive(&w->h.f, i);
}

static unsigned pick_member(world *w)
{
    for (;;) {
        unsigned i = rnd(w->h.n);
        if (!w->gone[i])
            return i;
    }
}

static void run(uint64_t seed)
{
    world *w = calloc(1, sizeof *w);
    harness *h = &w->h;
    rng_state = seed * 2654435761u + 0x9E3779B97F4A7C15ULL;
    h_setup(h, 3, 32, 8);
    unsigned l = h_leader(h);
    assert_true(l < h->n);
    raft_index idx;
    assert_int_equal(h_create_cube(h, l, &idx), 0);
    assert_true(h_converge(h));
    unsigned writes = 0, kills = 0, cuts = 0;

    for (int step = 0; step < STEPS; step++) {
        uint32_t r = rnd(100);
        if (r < 50) {
            unsigned li = raft_fixture_leader_index(&h->f);
            if (li < h->n && raft_fixture_alive(&h->f, li) && !w->gone[li] &&
                raft_state(raft_fixture_get(&h->f, li)) == RAFT_LEADER &&
                h->next_k + 8 < H_MAX_K) {
                if (h_put(h, li, 1 + rnd(5), NULL) == 0)
                    writes++;
            }
        } else if (r < 58) {
            if (n_dead_members(w) == 0) {
                raft_fixture_kill(&h->f, pick_member(w));
                kills++;
            }
        } else if (r < 66) {
            for (unsigned i = 0; i < h->n; i++)
                if (!w->gone[i] && !raft_fixture_alive(&h->f, i)) {
                    raft_fixture_revive(&h->f, i);
                    /* revive reconnects everything: forget our cuts on it */
                    for (unsigned j = 0; j < h->n; j++)
                        if (w->cut[i][j])
                            set_cut(w, i, j, true);
                    break;
                }
        } else if (r < 73) {
            if (!any_cut(w)) {
                unsigned i = pick_member(w), j = pick_member(w);
                if (i != j) {
                    set_cut(w, i, j, true);
                    cuts++;
                }
            }
        } else if (r < 80) {
            heal(w);
        } else if (r < 82) {
            if (w->restarts < 2 && n_dead_members(w) == 0 && !any_cut(w) &&
                h->n < RAFT_FIXTURE_MAX_SERVERS) {
                unsigned i = pick_member(w);
                assert_true(h_converge(h));
                if (i == raft_fixture_leader_index(&h->f))
                    continue; /* restart followers: the fixture reports a killed
                               * leader as leader until another is elected */
                h_restart(h, i);
                w->gone[i] = true;
                w->restarts++;
            }
        }
        raft_fixture_step_until_elapsed(&h->f, 10 + rnd(200));
    }

    heal(w);
    l = h_leader(h);
    assert_true(l < h->n);
    /* A write in the current term commits whatever earlier terms left. */
    for (int tries = 0; tries < 20; tries++) {
        l = h_leader(h);
        if (l < h->n && h_put(h, l, 1, &idx) == 0 && h_wait_applied(h, l, idx))
            break;
        raft_fixture_step_until_elapsed(&h->f, 500);
    }
    assert_true(h_converge(h));
    print_message("seed %llu: %u writes, %llu acked, %u kills, %u cuts, %u restarts\n",
                  (unsigned long long)seed, writes, (unsigned long long)h_n_acked(h), kills,
                  cuts, w->restarts);
    h_check_all(h);
    h_teardown(h);
    free(w);
}

static void test_random_interleavings(void **state)
{
    (void)state;
    const char *env = getenv("MEMGRID_SEED");
    uint64_t seed = env ? strtoull(env, NULL, 10) : (uint64_t)time(NULL);
    const char *runs_env = getenv("MEMGRID_RUNS");
    unsigned runs = runs_env ? (unsigned)strtoul(runs_env, NULL, 10) : (env ? 1 : 3);
    for (unsigned i = 0; i < runs; i++) {
        print_message("MEMGRID_SEED=%llu\n", (unsigned long long)(seed + i));
        run(seed + i);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random_interleavings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
