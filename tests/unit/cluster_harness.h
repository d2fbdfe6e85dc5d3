/*
 * Test harness for shard-group replication on raft_fixture: every fixture
 * server runs the real FSM over a real LMDB store in a temp directory. Used by
 * cluster_fixture_test.c and cluster_random_test.c (header-only, static).
 *
 * Writes are mem_put entries of synthetic memories (cluster/workload.h) into
 * cube "c"; the harness records which memories were acknowledged (applied on
 * the leader that proposed them, outcome MG_OK) and which were proposed at
 * all, so a check can demand acked ⊆ stored ⊆ proposed on every replica.
 */
#ifndef MG_TEST_CLUSTER_HARNESS_H
#define MG_TEST_CLUSTER_HARNESS_H

#include "../../cluster/command.h"
#include "../../cluster/fsm.h"
#include "../../cluster/workload.h"
#include "../../storage/store.h"

#include <raft.h>
#include <raft/fixture.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define H_CUBE "c"
#define H_DIM 8
#define H_MAX_K 20000

typedef struct harness {
    struct raft_fixture f;
    char root[64];
    unsigned n;
    unsigned dir_of[RAFT_FIXTURE_MAX_SERVERS]; /* store directory s<k> of each server */
    mg_store *stores[RAFT_FIXTURE_MAX_SERVERS];
    mg_fsm fsms[RAFT_FIXTURE_MAX_SERVERS];
    unsigned threshold, trailing;
    uint8_t acked[H_MAX_K];
    uint8_t proposed[H_MAX_K];
    uint64_t next_k;
    unsigned pending;
    bool cube_created;
} harness;

typedef struct h_req {
    struct raft_apply req;
    harness *h;
    uint64_t first;
    size_t count;
} h_req;

static inline int h_rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static inline void h_store_open(harness *h, unsigned i)
{
    char dir[128];
    mg_error err = {0};
    snprintf(dir, sizeof dir, "%s/s%u", h->root, h->dir_of[i]);
    mg_store_options so = {.sync = MG_STORE_SYNC_NONE};
    int rc = mg_store_open(dir, &so, &h->stores[i], &err);
    if (rc != MG_OK)
        fail_msg("store open %s: %s", dir, err.msg);
}

static inline void h_tune(harness *h, unsigned i)
{
    struct raft *r = raft_fixture_get(&h->f, i);
    raft_set_snapshot_threshold(r, h->threshold);
    raft_set_snapshot_trailing(r, h->trailing);
    raft_set_pre_vote(r, true);
}

/* Adds server i (= h->n) to the fixture with a fresh store and FSM. */
static inline void h_grow(harness *h)
{
    unsigned i = h->n;
    h_store_open(h, i);
    mg_fsm_init(&h->fsms[i], h->stores[i]);
    assert_int_equal(raft_fixture_grow(&h->f, &h->fsms[i].raft_fsm), 0);
    mg_fsm_attach(&h->fsms[i], raft_fixture_get(&h->f, i));
    h_tune(h, i);
    h->n++;
}

static inline void h_setup(harness *h, unsigned n, unsigned threshold, unsigned trailing)
{
    memset(h, 0, sizeof *h);
    snprintf(h->root, sizeof h->root, "/tmp/mg-fixture-XXXXXX");
    assert_non_null(mkdtemp(h->root));
    h->threshold = threshold;
    h->trailing = trailing;
    assert_int_equal(raft_fixture_initialize(&h->f), 0);
    for (unsigned i = 0; i < RAFT_FIXTURE_MAX_SERVERS; i++)
        h->dir_of[i] = i;
    for (unsigned i = 0; i < n; i++)
        h_grow(h);
    struct raft_configuration conf;
    assert_int_equal(raft_fixture_configuration(&h->f, n, &conf), 0);
    assert_int_equal(raft_fixture_bootstrap(&h->f, &conf), 0);
    raft_configuration_close(&conf);
    assert_int_equal(raft_fixture_start(&h->f), 0);
}

static inline void h_teardown(harness *h)
{
    raft_fixture_close(&h->f);
    for (unsigned i = 0; i < h->n; i++) {
        mg_fsm_close(&h->fsms[i]);
        if (h->stores[i] != NULL)
            mg_store_close(h->stores[i]);
    }
    nftw(h->root, h_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static inline unsigned h_leader(harness *h)
{
    if (!raft_fixture_step_until_has_leader(&h->f, 20000))
        return h->n;
    return raft_fixture_leader_index(&h->f);
}

static void h_apply_cb(struct raft_apply *req, int status, void *result)
{
    h_req *hr = req->data;
    harness *h = hr->h;
    h->pending--;
    if (status == 0 && hr->count > 0) {
        const mg_fsm_result *res = result;
        assert_non_null(res);
        assert_int_equal(res->index, req->index);
        assert_int_equal(res->code, MG_OK);
        assert_int_equal(res->n_cmds, 1);
        const mg_cmd_outcome *o = &res->cmds[0];
        if (o->n_ops == hr->count) { /* skipped entries report no ops */
            for (size_t i = 0; i < hr->count; i++)
                if (o->op_codes[i] == MG_OK)
                    h->acked[hr->first + i] = 1;
        }
    }
    free(hr);
}

/* Proposes one entry holding `cmd` on server i; count > 0 marks a put of
 * memories first..first+count-1. Returns the raft code of raft_apply. */
static inline int h_propose_cmd(harness *h, unsigned i, const mg_cmd *cmd, uint64_t first,
                                size_t count, raft_index *index)
{
    mg_error err = {0};
    void *cbuf;
    size_t clen;
    assert_int_equal(mg_cmd_encode(cmd, &cbuf, &clen, &err), MG_OK);
    size_t padded = mg_entry_padded(MG_ENTRY_HEADER_LEN + clen);
    uint8_t *buf = raft_calloc(1, padded);
    assert_non_null(buf);
    size_t off = mg_entry_header(buf, 1);
    memcpy(buf + off, cbuf, clen);
    free(cbuf);
    clen = padded - off;
    h_req *hr = calloc(1, sizeof *hr);
    hr->h = h;
    hr->first = first;
    hr->count = count;
    hr->req.data = hr;
    struct raft_buffer rb = {.base = buf, .len = off + clen};
    int rv = raft_apply(raft_fixture_get(&h->f, i), &hr->req, &rb, 1, h_apply_cb);
    if (rv != 0) {
        raft_free(buf);
        free(hr);
        return rv;
    }
    h->pending++;
    if (index != NULL)
        *index = hr->req.index;
    return 0;
}

static inline int h_create_cube(harness *h, unsigned i, raft_index *index)
{
    mg_cmd c = {0};
    mg_error err = {0};
    assert_int_equal(mg_workload_cube_cmd(&c, H_CUBE, H_DIM, &err), MG_OK);
    int rv = h_propose_cmd(h, i, &c, 0, 0, index);
    mg_cmd_clear(&c);
    return rv;
}

/* Proposes a put of `count` new memories on server i. */
static inline int h_put(harness *h, unsigned i, size_t count, raft_index *index)
{
    mg_cmd c = {0};
    mg_error err = {0};
    assert_true(h->next_k + count <= H_MAX_K);
    assert_int_equal(mg_workload_put_cmd(&c, H_CUBE, h->next_k, count, H_DIM, &err), MG_OK);
    int rv = h_propose_cmd(h, i, &c, h->next_k, count, index);
    mg_cmd_clear(&c);
    if (rv == 0) {
        for (size_t k = 0; k < count; k++)
            h->proposed[h->next_k + k] = 1;
        h->next_k += count;
    }
    return rv;
}

/* Steps until server i has applied `index`. */
static inline bool h_wait_applied(harness *h, unsigned i, raft_index index)
{
    return raft_fixture_step_until_applied(&h->f, i, index, 30000);
}

/* Steps until every alive server has applied the leader's last index. */
static inline bool h_converge(harness *h)
{
    unsigned l = h_leader(h);
    if (l == h->n)
        return false;
    raft_index last = raft_last_index(raft_fixture_get(&h->f, l));
    for (unsigned i = 0; i < h->n; i++) {
        if (!raft_fixture_alive(&h->f, i))
            continue;
        if (!h_wait_applied(h, i, last))
            return false;
    }
    return true;
}

static inline uint64_t h_count(harness *h, unsigned i)
{
    uint64_t n = 0;
    mg_error err = {0};
    assert_int_equal(mg_store_mem_count(h->stores[i], H_CUBE, &n, &err), MG_OK);
    return n;
}

static inline uint64_t h_digest(harness *h, unsigned i)
{
    uint64_t d = 0;
    mg_error err = {0};
    assert_int_equal(mg_store_digest(h->stores[i], &d, &err), MG_OK);
    return d;
}

/* acked ⊆ stored ⊆ proposed on server i. */
static inline void h_check_replica(harness *h, unsigned i)
{
    mg_error err = {0};
    uint64_t stored = 0;
    for (uint64_t k = 0; k < h->next_k; k++) {
        uint8_t id[16];
        mg_item it = {0};
        mg_workload_id(k, id);
        int rc = mg_store_mem_get(h->stores[i], H_CUBE, id, &it, NULL, NULL, &err);
        mg_item_clear(&it);
        if (h->acked[k] && rc != MG_OK)
            fail_msg("server %u lost acknowledged memory %llu (%s)", i, (unsigned long long)k,
                     mg_errname(rc));
        if (rc == MG_OK) {
            assert_true(h->proposed[k]);
            stored++;
        }
    }
    assert_int_equal(stored, h_count(h, i));
}

static inline uint64_t h_n_acked(harness *h)
{
    uint64_t n = 0;
    for (uint64_t k = 0; k < h->next_k; k++)
        n += h->acked[k];
    return n;
}

/* Every alive server passes h_check_replica and has the same digest. */
static inline void h_check_all(harness *h)
{
    uint64_t d0 = 0;
    bool first = true;
    for (unsigned i = 0; i < h->n; i++) {
        if (!raft_fixture_alive(&h->f, i) || h->stores[i] == NULL)
            continue;
        h_check_replica(h, i);
        uint64_t d = h_digest(h, i);
        if (first)
            d0 = d;
        else if (d != d0)
            fail_msg("server %u digest %016llx differs from %016llx", i,
                     (unsigned long long)d, (unsigned long long)d0);
        first = false;
    }
}

/* "Restarts" server i the way the fixture allows: raft 0.15's in-memory I/O
 * cannot be reopened, so server i is killed for good, its store is closed,
 * and a new server (a new raft id) is started over the same store directory
 * and added to the configuration by the leader. It comes back like a replica
 * whose raft directory was lost but whose store survived: the leader sends it
 * a snapshot (or the log), and the FSM must neither reinstall what the store
 * already has nor apply anything twice. (A restart that reloads a real
 * raft_uv log and snapshot is in cluster_group_test.) Returns the new
 * server's index. */
typedef struct h_change_req {
    struct raft_change req;
    int status;
} h_change_req;

static void h_change_cb(struct raft_change *req, int status)
{
    *(int *)req->data = status;
}

static bool h_change_done(struct raft_fixture *f, void *arg)
{
    (void)f;
    return *(int *)arg != -1;
}

enum { H_ADD, H_ASSIGN, H_REMOVE };

/* Runs one membership change on whoever leads, retrying across leader
 * changes. An answer that says the change is already in place counts as
 * done. A request that timed out is leaked on purpose: raft may still call
 * it back. */
static inline void h_change(harness *h, int op, struct raft *target)
{
    for (int attempt = 0; attempt < 20; attempt++) {
        /* Not raft_fixture_leader_index: the fixture only names a leader
         * that every connected server acknowledges, and the new, empty
         * server does not until it is added. */
        unsigned l = h->n;
        raft_term best = 0;
        for (unsigned i = 0; i < h->n; i++) {
            struct raft *ri = raft_fixture_get(&h->f, i);
            if (raft_fixture_alive(&h->f, i) && raft_state(ri) == RAFT_LEADER &&
                ri->current_term > best) {
                best = ri->current_term;
                l = i;
            }
        }
        if (l >= h->n) {
            raft_fixture_step_until_elapsed(&h->f, 300);
            continue;
        }
        struct raft *lr = raft_fixture_get(&h->f, l);
        h_change_req *c = calloc(1, sizeof *c);
        c->status = -1;
        c->req.data = &c->status;
        int rv = op == H_ADD      ? raft_add(lr, &c->req, target->id, target->address, h_change_cb)
                 : op == H_ASSIGN ? raft_assign(lr, &c->req, target->id, RAFT_VOTER, h_change_cb)
                                  : raft_remove(lr, &c->req, target->id, h_change_cb);
        if ((op == H_ADD && rv == RAFT_DUPLICATEID) || (op == H_ASSIGN && rv == RAFT_BADROLE) ||
            (op == H_REMOVE && rv == RAFT_BADID)) {
            free(c);
            return;
        }
        if (rv != 0) {
            free(c);
            raft_fixture_step_until_elapsed(&h->f, 300);
            continue;
        }
        if (!raft_fixture_step_until(&h->f, h_change_done, &c->status, 10000)) {
            continue; /* leaked: see above */
        }
        int status = c->status;
        free(c);
        if (status == 0)
            return;
        raft_fixture_step_until_elapsed(&h->f, 300);
    }
    for (unsigned i = 0; i < h->n; i++) {
        struct raft *ri = raft_fixture_get(&h->f, i);
        print_message("server %u id %llu alive %d state %d term %llu applied %llu last %llu "
                      "conf_n %u\n", i, ri->id, raft_fixture_alive(&h->f, i), raft_state(ri),
                      ri->current_term, raft_last_applied(ri), raft_last_index(ri),
                      ri->configuration.n);
    }
    fail_msg("membership change %d of server %llu did not complete", op,
             (unsigned long long)target->id);
}

static inline unsigned h_restart(harness *h, unsigned i)
{
    raft_fixture_kill(&h->f, i);
    mg_fsm_close(&h->fsms[i]);
    mg_store_close(h->stores[i]);
    h->stores[i] = NULL;
    unsigned n = h->n;
    h->dir_of[n] = h->dir_of[i];
    h_grow(h);
    struct raft *nr = raft_fixture_get(&h->f, n);
    assert_int_equal(raft_start(nr), 0);
    h_change(h, H_REMOVE, raft_fixture_get(&h->f, i));
    h_change(h, H_ADD, nr);
    h_change(h, H_ASSIGN, nr);
    return n;
}

#endif
