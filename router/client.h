/*
 * The router's side of the router ↔ node protocol (lib/wire.h, DESIGN §7):
 * one nng req socket per node for writes and point reads, one surveyor dialed
 * to every node for searches, and the cache of which node leads which group.
 *
 * Contexts and aios are pooled per socket and reused; a call takes one for
 * its duration, so any number of threads may call at once without creating
 * threads or sockets per request. Surveys go out on a few surveyor sockets,
 * each carrying at most 8 surveys at a time (nng drops a survey that finds
 * 8 already queued on a pipe); further searches wait for a free place.
 *
 * Retries: a request answered NOT_LEADER is re-sent to the hinted leader (or
 * the next node when there is no hint, after a short pause); one that times
 * out at the transport, or is answered EUNAVAIL/EBUSY, is re-sent until the
 * call's deadline; one that finds no connection to its node within 300 ms
 * moves on to the next node (a node that is down has none). When the
 * connection to a node drops (nng pipe removal: the node died or closed),
 * the requests in flight to it are cancelled and re-sent to the next node at
 * once instead of waiting for the deadline, and until a connection is up
 * again leader guesses and hints naming that node are passed over, so writes
 * resume as soon as the group has elected a new leader. Writes are safe to
 * re-send: puts carry their ids (upserts)
 * and create/delete report EEXIST/ENOTFOUND the second time, which callers
 * accept.
 */
#ifndef MG_ROUTER_CLIENT_H
#define MG_ROUTER_CLIENT_H

#include "../lib/cmap.h"
#include "../lib/error.h"
#include "../lib/wire.h"
#include "router.h"

#include <nng/nng.h>
#include <stddef.h>
#include <stdint.h>

typedef struct mg_client mg_client;

/* A reply: owns the nng message that rep's pointers point into. */
typedef struct mg_client_reply {
    nng_msg *msg;
    mg_wire_rep rep;
} mg_client_reply;


/* The cluster map (lib/cmap.h) decides where everything goes: the client
 * holds the current one (epoch 0 = none yet: only group 0 and node calls
 * work, over the seeds) and replaces it with a newer one from the meta group
 * when a node answers MG_EWRONGGROUP, when a group's replicas are all
 * unreachable or unknown, or when asked (mg_client_refresh). A call that
 * names its cube (mg_client_call.cube_id) is routed by the current map at
 * every try, so after a refresh it goes to the new owner. Nodes are dialed
 * as the map (or a seed) names them; a node dropped from the map keeps its
 * sockets but is no longer asked. */
typedef struct mg_client_config {
    const char *const *seeds;       /* rpc URLs of some nodes (they are asked NODE_INFO
                                     * to learn their ids and survey URLs); used to find
                                     * the meta group before a map is known */
    size_t n_seeds;
    const char *map_cache;          /* file the current map is saved to on every change
                                     * and loaded from at open (a router restarted with
                                     * it routes at once and refreshes when told it is
                                     * stale); NULL = none */
    const mg_cmap *map;             /* an initial map (copied), e.g. `serve`'s; NULL = none */
    unsigned call_timeout_ms;       /* > 0 */
    unsigned survey_timeout_ms;     /* > 0 */
} mg_client_config;

/* Opens and dials the sockets (non-blocking dials: a node that is not up yet
 * is reached when it is). MG_EINVAL, MG_EUNAVAIL (nng error text in the
 * message), MG_ENOMEM. */
int mg_client_open(const mg_client_config *cfg, mg_client **out, mg_error *err);

/* Closes the sockets (calls in flight fail with MG_ESHUTDOWN) and frees. */
void mg_client_close(mg_client *c);

/* The data group of a cube in the current map (0 when there is no map). */
uint64_t mg_client_group(mg_client *c, const char *cube_id, size_t len);

/* Why there is no map, as the last refresh found (see "Finding the cluster"
 * below): MG_OK when the client has a map (fetching one first when it has
 * none), else MG_EUNAVAIL with the reason. */
int mg_client_need_map(mg_client *c, mg_error *err);

/* The reason of the seeds that answered, none belonging to a cluster or
 * hosting the meta group. */
#define MG_CLIENT_NOT_INIT_MSG "cluster not initialized: run memgrid ctl init"

/* MG_EUNAVAIL with the reason the last refresh found for having no map
 * (MG_CLIENT_NOT_INIT_MSG when none ran yet), without refreshing. */
int mg_client_no_map(mg_client *c, mg_error *err);

/* The id (a UUID) of the cluster the client talks to, NUL-terminated into
 * buf (cap bytes, MG_CMAP_CLUSTER_MAX is enough; "" when unknown): the
 * map's, else the one a seed named in its NODE_INFO answer (the first
 * heard). Whether one is known. */
bool mg_client_cluster(mg_client *c, char *buf, size_t cap);


/* ---- the map ------------------------------------------------------------ */

/* Epoch of the current map (0: none). */
uint64_t mg_client_epoch(mg_client *c);

/* Copies the current map into *out (epoch 0 and empty when none). */
void mg_client_map(mg_client *c, mg_cmap *out);

/* Installs m when its epoch is above the current one (true), dialing the
 * nodes it names that are not known yet and saving it to the map cache. */
bool mg_client_set_map(mg_client *c, const mg_cmap *m);

/* Asks the meta group (META_GET, leader read) for the map and installs it
 * when newer. Concurrent callers share one request; a refresh asked within
 * 20 ms of the last one completing reuses it. MG_OK (also when the cluster
 * is not initialized, or the meta group has no map yet: epoch stays 0), or
 * the error (MG_EUNAVAIL "no seed node answered (...)", "cluster <id>: the
 * meta group is not reachable (...)", or the call's error).
 *
 * Finding the cluster: once a map is known, META_GET goes only to the map's
 * replicas of the meta group, and while they elect (NOT_LEADER without a
 * hint, EBUSY, a connection lost) it is re-sent until the deadline, as for
 * any group; no other node is asked, so an error never names a node that
 * does not host the meta group. Without a map, the seeds are first asked
 * NODE_INFO (200 ms at most, all at once); the meta group's nodes their
 * answers name ("meta") become seeds too and are asked in turn, and
 * META_GET then goes to the seeds, those that said they host the meta
 * group first (a node that answers "not hosted" is not asked again in that
 * call; a node known only from mg_client_probe is never asked). When there
 * is still no map (mg_client_need_map's reason):
 *   - no seed answered: MG_EUNAVAIL "no seed node answered (URL, ...)",
 *     at once (no META_GET);
 *   - a seed belongs to a cluster ("cluster" in NODE_INFO) and the meta
 *     group could not be reached: MG_EUNAVAIL "cluster <id>: the meta group
 *     is not reachable (<last error>)" (never "not initialized");
 *   - the meta group answered without a map: MG_OK, "cluster <id>: being
 *     initialized (...)" or MG_CLIENT_NOT_INIT_MSG without a cluster id;
 *   - seeds answered, none belongs to a cluster or hosts the meta group,
 *     and every node said it hosts none: MG_OK, MG_CLIENT_NOT_INIT_MSG. */
int mg_client_refresh(mg_client *c, mg_error *err);

/* Learns a node by its rpc URL (NODE_INFO on a temporary socket, at most
 * timeout_ms) and dials it. *info (may be NULL) gets the node's answer:
 * id, rpc, survey, raft_host, raft_port (state UP). Whether it hosts the
 * meta group is kept; and when it belongs to the cluster the client knows
 * already (mg_client_cluster) and there is no map, the meta group's nodes
 * it names are added as seeds. A node of another cluster, or any node
 * while the client knows none, teaches nothing more: probing a node before
 * adding it must not lead the client to a foreign cluster's map.
 * MG_EUNAVAIL when it does not answer. */
int mg_client_probe(mg_client *c, const char *rpc_url, unsigned timeout_ms, mg_cmap_node *info,
                    mg_error *err);

/* One request to one node by id (dialed from the map or a probe), without
 * leader logic: re-sent on transport errors until timeout_ms. The reply's
 * status is returned (MG_OK: *out is the caller's). */
int mg_client_call_node(mg_client *c, uint64_t node_id, int op, uint64_t group,
                        const void *body, size_t body_len, unsigned timeout_ms,
                        mg_client_reply *out, mg_error *err);

/* Whether the client has a connection up to the node right now. */
bool mg_client_node_up(mg_client *c, uint64_t node_id);

/* mg_client_refresh with its own deadline (the router's start uses a short
 * one so that a cluster that is not up does not hold it). */
int mg_client_refresh_for(mg_client *c, unsigned timeout_ms, mg_error *err);

/* The data groups (id ≥ 1) of the current map, ascending, at most cap;
 * returns how many (0 when there is no map). */
size_t mg_client_data_groups(mg_client *c, uint64_t *out, size_t cap);

/* The call deadline of the configuration (ms). */
unsigned mg_client_call_timeout(const mg_client *c);

/* Frees the message (NULL-safe) and zeroes the reply. */
void mg_client_reply_free(mg_client_reply *r);

/* One request of mg_client_run. */
typedef struct mg_client_call {
    /* in */
    int op;                 /* enum mg_wire_op (not MG_OP_SEARCH) */
    uint64_t group;         /* used when cube_id is NULL */
    const char *cube_id;    /* NUL-terminated, or NULL: the group is looked up in the
                             * current map at every try; an MG_EWRONGGROUP answer
                             * refreshes the map and retries (until the deadline) */
    const void *body;       /* exactly one msgpack element; borrowed for the call */
    size_t body_len;
    /* out */
    int status;             /* MG_OK, the node's status, or a transport error */
    mg_error err;           /* message when status is not MG_OK */
    mg_client_reply reply;  /* set (caller frees) only when status is MG_OK */
} mg_client_call;

/* Runs the calls concurrently, each with the retries above, on behalf of
 * `user` ("" or NULL = internal). Returns when every call has its status. */
void mg_client_run(mg_client *c, const char *user, mg_client_call *calls, size_t n);

/* The nodes the client talks to: how many, and the i'th one's id. */
size_t mg_client_n_nodes(const mg_client *c);
uint64_t mg_client_node_id(const mg_client *c, size_t i);

/* Sends one request (op and body, group 0, internal user) to every node at
 * once, without retries, and waits at most timeout_ms for the answers:
 * calls[i] (mg_client_n_nodes entries, overwritten) gets node i's status,
 * error and, on MG_OK, its reply (the caller frees it). For admin requests
 * such as STATS. */
void mg_client_call_each(mg_client *c, int op, const void *body, size_t body_len,
                         unsigned timeout_ms, mg_client_call *calls);

/* One call: returns its status; *out (set only on MG_OK) is the caller's. */
int mg_client_call1(mg_client *c, const char *user, int op, uint64_t group, const void *body,
                    size_t body_len, mg_client_reply *out, mg_error *err);

/* mg_client_call1 for a cube-scoped op: routed by the cube's slot in the
 * current map at every try (mg_client_call.cube_id). */
int mg_client_call_cube(mg_client *c, const char *user, int op, const char *cube_id,
                        const void *body, size_t body_len, mg_client_reply *out, mg_error *err);

/* mg_client_call_each over the given nodes (by id; an unknown id gets
 * MG_EUNAVAIL): calls[i] answers ids[i]. */
void mg_client_call_nodes(mg_client *c, const uint64_t *ids, size_t n, int op, const void *body,
                          size_t body_len, unsigned timeout_ms, mg_client_call *calls);

/* A search survey. The caller packs the SEARCH body's key/value pairs other
 * than "assign" (n_fields pairs back to back, no map header); the client adds
 * the assignment of each group to its presumed leader. Groups that no reply
 * covers by the deadline are asked once more: on the leader a replica named
 * when there is such a hint, otherwise on a live replica (the one that
 * answered without a usable hint, or the next node when the assigned one was
 * silent) with "follower": true, so that searches keep answering while a
 * group fails over (follower_read says so). Those still missing are listed
 * in `missing`. */
typedef struct mg_client_survey {
    /* in */
    const uint8_t *fields;
    size_t fields_len;
    uint32_t n_fields;
    const uint64_t *groups;     /* groups to cover, distinct */
    size_t n_groups;
    bool follower;              /* assign each group to any live replica (spreading the
                                 * load) with "follower": true (the caller's fields must
                                 * not carry "follower") */
    /* out */
    mg_client_reply *replies;   /* malloc'd, n_replies; each envelope status MG_OK */
    size_t n_replies;
    uint64_t *missing;          /* malloc'd, n_missing groups nobody answered for */
    size_t n_missing;
    char missing_why[160];      /* the last reason heard for a missing group */
    bool follower_read;         /* some group was answered by a replica that may not
                                 * lead it (may miss the latest writes) */
} mg_client_survey;

/* Connections: nng sends a survey only on the connections up at the time,
 * so a survey first waits (at most 300 ms, as a request does) until every
 * node it assigns a group to is connected, e.g. right after a map named the
 * node; a group whose node is still not connected is not sent there but
 * asked of another replica at once (with "follower": true), or listed in
 * `missing` ("no connection to node N") when there is none. A node that
 * did not connect is not waited for again until it does. A survey round
 * ends as soon as nothing more can come: every group answered, or answered
 * for with an error, or assigned to a node whose connection dropped during
 * the round (a node that died), so those are asked elsewhere at once rather
 * than at the survey deadline; the deadline is left for nodes that are
 * connected but silent. */

/* MG_OK when the survey ran (check n_missing); MG_ENOMEM, MG_ESHUTDOWN,
 * MG_EUNAVAIL for transport failures. */
int mg_client_search(mg_client *c, const char *user, mg_client_survey *s, mg_error *err);

/* Frees the replies and lists of a survey (its inputs are untouched). */
void mg_client_survey_clear(mg_client_survey *s);

#endif
