/*
 * The node process (DESIGN §2, §6, §7): one libuv loop thread hosting the
 * replicas of some shard groups (cluster/host.h), an nng `rep` server for
 * writes, point reads and STATUS, an nng `respondent` for searches, and a
 * pool of worker threads that run reads and scans against the replicas'
 * stores. The router talks to it only through nng and lib/wire.h; `memgrid
 * serve` and `memgrid node` start it in-process through this header.
 *
 * Threads: nng calls back on its own threads; a write is decoded there,
 * handed to the loop thread (queue + uv_async_send), access-checked and
 * proposed there, and answered from the proposal's callback. Reads and searches run on the
 * worker pool, never on the loop thread; whether this replica leads a group
 * comes from a per-group snapshot the loop refreshes on every loop turn.
 *
 * Reads are served by the group's leader (read-your-writes): a request for a
 * group this replica does not lead answers MG_ENOTLEADER with the leader's id
 * and raft address when known; a leader elected moments ago answers MG_EBUSY
 * (retry) until it has applied a barrier of its term. A read body (or the
 * SEARCH body) may carry "follower": true to accept this replica's state
 * even when it does not lead.
 *
 * Access: the envelope's "user" is the caller ("" = internal, allowed
 * everything). A cube-scoped op is allowed when the user owns the cube or
 * the cube is shared with the user (mg_cube_allows); user records only for
 * the user itself (USER_GET) or internal callers (user_put/user_delete).
 * See docs/ARCHITECTURE-node.md for the rules applied to WRITE batches.
 *
 * STATUS answers {"node": uint, "groups": [{"group", "replica", "state":
 * "leader"|"follower"|"candidate"|"unavailable", "leader_id", "leader",
 * "term", "commit", "applied", "read_ready": bool}, ...]}. With a body
 * {"digest": true} each group also carries "digest": uint (mg_store_digest
 * of the replica's store, taken on the worker pool after the other fields,
 * so under writes it may cover entries past "applied"; nil when the store
 * cannot be read). It walks every hosted store: for tests and operators.
 *
 * STATS answers {"node": uint, "hist": <the node's metrics registry,
 * mg_metrics_pack>, "gauges": {"groups", "leaders", "memories", "cubes"}}
 * (memories and cubes of the groups this node leads; the gauges are at most
 * a second old). The registry holds memgrid_node_op_seconds{op},
 * memgrid_node_requests_total{op,status}, memgrid_node_stage_seconds{stage}
 * (propose_commit, apply, scan) and the gauges memgrid_node_groups,
 * memgrid_node_leaders, memgrid_node_memories{group}, memgrid_node_cubes{group};
 * see node/stats.c.
 *
 * Groups at runtime: besides the groups of the config, the node reopens at
 * start every replica it hosted before (each group directory keeps a
 * "replica" file: {"replica": id, "address": str}), and GROUP_OPEN /
 * GROUP_CLOSE (lib/wire.h) open and close replicas while it runs (on the
 * loop thread; the request is answered once the replica is started or
 * closed). A closed replica's "replica" file is removed (its data stays
 * unless "destroy"), so a restart does not reopen it. GROUP_MEMBER and
 * BARRIER run on the group's leader; a membership change or barrier whose
 * replica is closed under it answers MG_EUNAVAIL, and requests for a group
 * closed while they were in flight MG_ENOTFOUND (reads, searches) or
 * MG_EUNAVAIL (writes already proposed).
 *
 * Membership: a node belongs to at most one cluster. <data>/cluster holds
 * {"cluster": UUID, "meta": [rpc URL, ...]} — the id of the cluster (the
 * map's "cluster", lib/cmap.h) and the rpc URLs of the nodes that hosted the
 * meta group when it was last claimed (hints for routers whose seeds host
 * no meta replica). It is read at start (MG_ECORRUPT naming the file when
 * malformed: the node does not start) and written by a NODE_INFO claim
 * (lib/wire.h; tmp + fsync + rename + directory fsync, on a worker): no
 * record yet → the claim becomes it; the same id → the hints are replaced;
 * another id → MG_EEXIST "node N belongs to cluster <id>", nothing changed.
 * The node does not check what it hosts: a node with replicas and no record
 * (data from before records existed, or `serve`'s groups opened before its
 * init) accepts the claim; refusing such nodes is the admin's job (init).
 * Nothing removes the record: a node removed from its cluster keeps it (to
 * reuse the node elsewhere, stop it and delete <data>/cluster, or its whole
 * data directory). A GROUP_OPEN whose "cluster" differs from the record
 * answers MG_EEXIST (same message) and opens nothing.
 *
 * Slot ownership: a cube-scoped request (WRITE commands, CUBE_GET,
 * MEM_GET/LIST/COUNT with a cube, SEARCH cubes) for a cube whose slot the
 * group does not own (mg_fsm_owns) answers MG_EWRONGGROUP with the slot
 * record's epoch; a WRITE whose commands all got the apply outcome
 * MG_EWRONGGROUP answers it too (nothing was applied).
 *
 * Wire extensions beyond lib/wire.h (readers skip unknown keys):
 *   GROUP_OPEN body "cluster": str|nil: the id of the cluster the replica
 *     belongs to (the admin sends the map's); refused with MG_EEXIST when
 *     the node's record names another (see Membership), checked before the
 *     "already hosted" answer; not checked when absent or either side has
 *     none.
 *   WRITE reply outcome: "op_codes": [uint, ...] (per item/id) when the
 *     command failed in part.
 *   MEM_GET body "vecs": bool (default true); MEM_LIST / MEM_GET / CUBE_* /
 *     MEM_COUNT / USER_GET body "follower": bool.
 *   CUBE_GET / CUBE_LIST / MEM_GET / MEM_LIST / MEM_COUNT body "any_slot":
 *     bool, honoured for internal callers only: skip the slot ownership
 *     check (the rebalance reads a source that no longer owns the slots).
 *   SEARCH body "follower": bool; reply body "missing": [{"group": uint,
 *     "status": uint, "msg": str, "leader_id": uint, "leader": str}] for
 *     assigned groups not answered (not hosted, not leader, barrier failed),
 *     and "cube_errors": [{"cube": uint (index in "cubes"), "status": uint,
 *     "msg": str}] for cubes skipped (MG_ENOTFOUND: no such cube; MG_EPERM:
 *     the user may not read it; MG_EFILTER: bad filter; MG_EDIM: the query's
 *     dimension is not the cube's). A survey reply's envelope status is
 *     MG_OK unless every assigned group failed (then the first failure, with
 *     its leader hint).
 */
#ifndef MG_NODE_H
#define MG_NODE_H

#include "../cluster/group.h"
#include "../lib/error.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One replica this node hosts. */
typedef struct mg_node_group {
    uint64_t group_id;              /* 0 is the meta group; any id is accepted */
    uint64_t replica_id;            /* this replica's raft id, > 0 */
    const char *address;            /* raft address this replica listens on, "IPv4:port" */
    const mg_group_peer *bootstrap; /* initial voters (this one included) for a new group,
                                     * or NULL to join an existing one (see host.h); a
                                     * restart with the same list is fine */
    size_t n_bootstrap;
} mg_node_group;

typedef struct mg_node_config {
    const char *data_dir;        /* created when missing; <data>/group-<id>/... */
    uint64_t node_id;            /* matched against SEARCH "assign" entries */
    const char *rep_url;         /* any nng URL: "inproc://memgrid-node",
                                  * "tcp://127.0.0.1:7401" */
    const char *respondent_url;  /* same; NULL = no search server */
    const mg_node_group *groups; /* copied; may be 0 groups */
    size_t n_groups;
    /* Identity reported by NODE_INFO (lib/wire.h) for the cluster map: the
     * replica of group G that GROUP_OPEN creates listens on
     * raft_host:(raft_port + G). raft_host NULL = "127.0.0.1". */
    const char *raft_host;
    unsigned raft_port;
    const char *advertise_rpc;    /* rpc URL others dial (NULL = rep_url) */
    const char *advertise_survey; /* (NULL = respondent_url) */
    const mg_group_tunables *tunables; /* NULL = mg_group_tunables_default() */
    /* Election timeout for a group bootstrapped with exactly one voter (this
     * replica). raft 0.15 makes a lone voter leader at start without an
     * election; this bounds any later one (such a group cannot be contested).
     * 0 = 50 ms; ignored for groups with several voters or joining ones. */
    unsigned single_voter_election_ms;
    unsigned search_workers;      /* worker threads for reads and scans; 0 = 2 */
    unsigned rep_contexts;        /* concurrent requests on `rep`; 0 = 64 */
    unsigned respondent_contexts; /* concurrent surveys being answered; 0 = 16 */
    uint32_t default_deadline_ms; /* when a request carries deadline_ms 0; 0 = 5000 */
    size_t max_message_bytes;     /* largest request accepted; 0 = 64 MiB */
    unsigned drain_timeout_ms;    /* mg_node_stop: wait this long for requests in
                                   * flight before closing the groups; 0 = 3000 */
} mg_node_config;

typedef struct mg_node mg_node;

/* Opens the data directory and every configured group, starts raft and the
 * loop thread, the worker pool, and listens on rep_url (and respondent_url):
 * when it returns MG_OK a client can dial right away, although groups may
 * still be electing (see mg_node_wait_ready). cfg is copied. Errors: MG_EINVAL
 * (bad config), MG_EIO/MG_ECORRUPT/... from opening a group (the message
 * names it), MG_EUNAVAIL when a URL cannot be listened on (e.g. address in
 * use); on error nothing is left running. *out is owned by the caller and
 * released with mg_node_stop. Sets SIGPIPE to SIG_IGN when it is at its
 * default (raft's TCP transport writes to peers that may have gone away). */
int mg_node_start(const mg_node_config *cfg, mg_node **out, mg_error *err);

/* Waits until every hosted group knows a leader (this replica or another)
 * and the groups this replica leads are read_ready, at most timeout_ms.
 * MG_OK, or MG_ETIMEDOUT naming a group that is not ready. Any thread but
 * the loop's. */
int mg_node_wait_ready(mg_node *n, unsigned timeout_ms, mg_error *err);

/* The same condition, without waiting (any thread). */
bool mg_node_ready(mg_node *n);

/* What the loop last published about a hosted group (any thread). */
typedef struct mg_node_group_status {
    uint64_t group_id;
    uint64_t replica_id;
    int raft_state;              /* RAFT_UNAVAILABLE/FOLLOWER/CANDIDATE/LEADER */
    uint64_t leader_id;          /* 0 when unknown */
    char leader[MG_ADDRESS_MAX]; /* "" when unknown */
    uint64_t term;
    uint64_t commit_index;
    uint64_t last_applied;
    /* This replica leads and has applied a barrier of its own term, so it
     * holds every write acknowledged before: only then does it serve reads
     * (before that they answer MG_EBUSY). */
    bool read_ready;
} mg_node_group_status;

/* Number of hosted groups; the i'th one's status (false when i is out of
 * range). The same data the STATUS op returns. */
size_t mg_node_n_groups(const mg_node *n);
bool mg_node_group_status_at(mg_node *n, size_t i, mg_node_group_status *out);

uint64_t mg_node_id(const mg_node *n);

struct mg_metrics;
/* The node's metrics registry (lib/metrics.h), what STATS ships: borrowed,
 * valid until mg_node_stop. Readable from any thread. */
struct mg_metrics *mg_node_metrics(mg_node *n);

/* Stops the node and frees it: closes the nng sockets (no new requests),
 * lets requests in flight finish (up to drain_timeout_ms, then they are
 * answered MG_ESHUTDOWN), closes every group on the loop, joins the loop and
 * worker threads. Call it from any thread that is not the node's own (not
 * from an nng callback), e.g. the main thread after a signal was noticed;
 * never from a signal handler. NULL is a no-op. */
void mg_node_stop(mg_node *n);

#endif
