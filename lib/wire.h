/*
 * The router ↔ node protocol (DESIGN §7): msgpack messages over nng.
 *
 * Every request and reply is one msgpack map. The envelope is decoded here;
 * the body is one msgpack element whose shape depends on the op (below) and
 * is read by the op's handler with the bounded reader of mp.h.
 *
 *   request := {"v": 1, "op": uint, "rid": uint, "epoch": uint, "group": uint,
 *               "deadline_ms": uint, "user": str, "body": <op body>}
 *   reply   := {"v": 1, "rid": uint, "status": uint (enum mg_errcode),
 *               "msg": str, "leader_id": uint, "leader": str, "epoch": uint,
 *               "body": <op reply body or nil>}
 *
 * "deadline_ms" is relative (milliseconds the router is still willing to
 * wait); 0 means the node's default. "user" is the caller on whose behalf the
 * request is made ("" for internal requests): the node checks cube access for
 * it (owner or shared). "leader_id"/"leader" are set with MG_ENOTLEADER when
 * the node knows the group's leader; "epoch" with MG_EWRONGGROUP.
 *
 * Op bodies (records are the msgpack records of storage/item.h, commands the
 * entries of cluster/command.h; ids are 16-byte bins):
 *
 *   WRITE      {"cmds": [cmd, ...]}          → {"outcomes": [{"code": uint, "msg": str,
 *                                                             "count": uint}, ...]}
 *   CUBE_GET   {"cube_id": str}              → cube record
 *   CUBE_LIST  {}                            → [cube record, ...]
 *   MEM_GET    {"cube_id": str|nil, "ids": [bin16, ...]}
 *                                            → [{"cube_id": str, "record": bin,
 *                                                "vec": bin|nil}, ...] (found ones only)
 *   MEM_LIST   {"cube_id": str, "filter": map|nil, "after": bin16|nil, "limit": uint,
 *               "vecs": bool (optional)}     → {"records": [bin, ...], "more": bool,
 *                                               "vecs": [bin f32 | nil, ...] (with
 *                                               "vecs": true; as stored)} in id order
 *   MEM_COUNT  {"cube_id": str}              → uint
 *   USER_GET   {"user_id": str}              → user record
 *   SEARCH     {"vec": bin f32, "k": uint, "scan": uint, "strong": bool, "vecs": bool,
 *               "cubes": [{"cube_id": str, "group": uint, "filter": map|nil}, ...],
 *               "assign": [{"group": uint, "node": uint}, ...]}
 *                                            → {"groups": [uint, ...] (answered),
 *                                               "hits": [{"cube": uint (index in
 *                                               "cubes"), "score": float, "record": bin,
 *                                               "vec": bin f32|nil (only when the request
 *                                               had "vecs": true; as the index holds it,
 *                                               i.e. L2-normalized)}, ...] best first}
 *   STATUS     {"digest": bool (optional)}   → {"node": uint, "groups": [{"group": uint,
 *                                               "replica": uint, "state": str, "leader_id":
 *                                               uint, "leader": str, "term": uint, "commit":
 *                                               uint, "applied": uint (last applied index),
 *                                               "read_ready": bool, "digest": uint|nil (only
 *                                               with "digest": true: mg_store_digest of the
 *                                               replica's store, nil when unreadable)}, ...]}
 *                                              (the digest walks the whole store; equal
 *                                               digests at equal "applied" = equal replicas)
 *   STATS      {}                            → {"node": uint, "hist": <the node's metrics
 *                                               registry, lib/metrics.h mg_metrics_pack>,
 *                                               "gauges": {"groups": int, "leaders": int,
 *                                               "memories": int, "cubes": int}}
 *                                              (memories and cubes of the groups the node
 *                                               leads; see node/node.h)
 *
 * Cluster ops (the meta group and membership; docs/ARCHITECTURE.md "Meta
 * group"). All are internal (user ""); "group" in the envelope is the
 * group concerned (0 for NODE_INFO).
 *
 *   META_GET   {"follower": bool (optional)} to group 0's leader
 *                                            → {"epoch": uint, "map": bin (lib/cmap.h
 *                                               encoding) | nil before `ctl init`}
 *   NODE_INFO  {"claim": {"cluster": str, "meta": [str, ...]} (optional)} to one node
 *                                            → {"node": uint, "rpc": str, "survey": str,
 *                                               "raft_host": str, "raft_port": uint,
 *                                               "groups": [uint, ...] (hosted),
 *                                               "cluster": str | nil (the cluster id the
 *                                               node belongs to, nil for none),
 *                                               "meta": [str, ...] (rpc URLs of the nodes
 *                                               hosting the meta group when the node was
 *                                               last claimed: hints, maybe stale; empty
 *                                               for none)}
 *                                              A claim (a UUID and at most 7 URLs, else
 *                                              MG_EINVAL) is made durable before the
 *                                              answer, which then shows it: the node
 *                                              belonged to no cluster, or to the same
 *                                              id (the hints are replaced). A node of
 *                                              another cluster answers MG_EEXIST "node N
 *                                              belongs to cluster <id>" and keeps its
 *                                              record (node/node.h "Membership").
 *   GROUP_OPEN {"replica": uint, "address": str, "bootstrap": [{"id": uint,
 *               "address": str}, ...] | nil (join: wait to be added)} to one node
 *                                            → {} ; MG_OK too when already hosted
 *   GROUP_CLOSE {"destroy": bool} to one node → {} ; closes the replica and, with
 *                                               destroy, removes its files; MG_OK
 *                                               when not hosted
 *   GROUP_MEMBER {"action": "add"|"remove"|"transfer", "id": uint,
 *                 "address": str (add)} to the group's leader
 *                                            → {"voters": [uint, ...]} after the change
 *                                               is committed (add: once the new voter
 *                                               has caught up; transfer: once the
 *                                               target leads, else MG_EBUSY). add of a
 *                                               voter / remove of a non-member: MG_OK.
 *   BARRIER    {} to the group's leader      → {"applied": uint} once every entry
 *                                               before it is applied on the leader
 *
 * A node answers MG_EWRONGGROUP (envelope "epoch" = the epoch of the
 * group's slot record) for a cube-scoped request whose cube's slot the group
 * does not own, and a WRITE command outcome MG_EWRONGGROUP for the same
 * reason decided at apply; SEARCH lists such cubes in "cube_errors" with
 * status MG_EWRONGGROUP.
 *
 * A search travels as an nng survey to every node; a node answers for the
 * groups "assign" gives it and ignores the survey when it has none.
 */
#ifndef MG_WIRE_H
#define MG_WIRE_H

#include "error.h"
#include "mp.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MG_WIRE_VERSION 1

enum mg_wire_op {
    MG_OP_WRITE = 1,
    MG_OP_CUBE_GET,
    MG_OP_CUBE_LIST,
    MG_OP_MEM_GET,
    MG_OP_MEM_LIST,
    MG_OP_MEM_COUNT,
    MG_OP_USER_GET,
    MG_OP_SEARCH,
    MG_OP_STATUS,
    MG_OP_STATS,
    MG_OP_META_GET,
    MG_OP_NODE_INFO,
    MG_OP_GROUP_OPEN,
    MG_OP_GROUP_CLOSE,
    MG_OP_GROUP_MEMBER,
    MG_OP_BARRIER,
    MG_OP_COUNT_
};

/* Stable lower-case name of an op ("write", "search", ...), or NULL. */
const char *mg_wire_op_name(int op);

/* A decoded request envelope. Strings and the body point into the message
 * buffer and live as long as it does (not NUL-terminated). */
typedef struct mg_wire_req {
    int op;
    uint64_t rid;
    uint64_t epoch;
    uint64_t group;
    uint32_t deadline_ms;
    const char *user;
    uint32_t user_len;
    const uint8_t *body; /* exactly one msgpack element */
    size_t body_len;
} mg_wire_req;

typedef struct mg_wire_rep {
    uint64_t rid;
    int status;          /* enum mg_errcode */
    const char *msg;     /* error detail, "" on success */
    uint32_t msg_len;
    uint64_t leader_id;
    const char *leader;  /* leader address, "" when unknown */
    uint32_t leader_len;
    uint64_t epoch;
    const uint8_t *body; /* one msgpack element (nil when none) */
    size_t body_len;
} mg_wire_rep;

/* Packs the envelope of a request up to and including the "body" key; the
 * caller packs exactly one element (the body) right after. `user` may be
 * NULL (""). MG_ENOMEM. */
int mg_wire_req_begin(msgpack_packer *pk, int op, uint64_t rid, uint64_t epoch, uint64_t group,
                      uint32_t deadline_ms, const char *user);

/* Same for a reply: pack the body (or nil) right after. msg and leader may
 * be NULL (""). */
int mg_wire_rep_begin(msgpack_packer *pk, uint64_t rid, int status, const char *msg,
                      uint64_t leader_id, const char *leader, uint64_t epoch);

/* Decode an envelope. Unknown keys are skipped; a missing body reads as nil;
 * MG_EVERSION for a newer "v", MG_ECORRUPT (with a message) for anything
 * malformed, an unknown op or a status outside the error space. */
int mg_wire_req_decode(const void *buf, size_t len, mg_wire_req *out, mg_error *err);
int mg_wire_rep_decode(const void *buf, size_t len, mg_wire_rep *out, mg_error *err);

/* A reader positioned on the body. */
static inline mg_mp_reader mg_wire_body(const uint8_t *body, size_t len)
{
    mg_mp_reader r;
    mg_mp_reader_init(&r, body, len);
    return r;
}

#endif
