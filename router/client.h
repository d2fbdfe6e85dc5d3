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

#include "../lib/error.h"
#include "../lib/wire.h"
#include "router.h"

#include <nng/nng.h>
#include <stddef.h>
#include <stdint.h>

typedef struct mg_client mg_client;

typedef struct mg_client_config {
    const mg_router_node *nodes;    /* copied */
    size_t n_nodes;
    const uint64_t *slot_group;     /* MG_ROUTER_SLOTS entries, copied */
    const uint64_t *group_nodes;    /* group id → node id, may be NULL */
    size_t n_group_nodes;
    unsigned call_timeout_ms;       /* > 0 */
    unsigned survey_timeout_ms;     /* > 0 */
} mg_client_config;

/* Opens and dials the sockets (non-blocking dials: a node that is not up yet
 * is reached when it is). MG_EINVAL, MG_EUNAVAIL (nng error text in the
 * message), MG_ENOMEM. */
int mg_client_open(const mg_client_config *cfg, mg_client **out, mg_error *err);

/* Closes the sockets (calls in flight fail with MG_ESHUTDOWN) and frees. */
void mg_client_close(mg_client *c);

/* The data group of a cube (slot map lookup). */
uint64_t mg_client_group(const mg_client *c, const char *cube_id, size_t len);

/* A reply: owns the nng message that rep's pointers point into. */
typedef struct mg_client_reply {
    nng_msg *msg;
    mg_wire_rep rep;
} mg_client_reply;

/* Frees the message (NULL-safe) and zeroes the reply. */
void mg_client_reply_free(mg_client_reply *r);

/* One request of mg_client_run. */
typedef struct mg_client_call {
    /* in */
    int op;                 /* enum mg_wire_op (not MG_OP_SEARCH) */
    uint64_t group;
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
    /* out */
    mg_client_reply *replies;   /* malloc'd, n_replies; each envelope status MG_OK */
    size_t n_replies;
    uint64_t *missing;          /* malloc'd, n_missing groups nobody answered for */
    size_t n_missing;
    char missing_why[160];      /* the last reason heard for a missing group */
    bool follower_read;         /* some group was answered by a replica that may not
                                 * lead it (may miss the latest writes) */
} mg_client_survey;

/* MG_OK when the survey ran (check n_missing); MG_ENOMEM, MG_ESHUTDOWN,
 * MG_EUNAVAIL for transport failures. */
int mg_client_search(mg_client *c, const char *user, mg_client_survey *s, mg_error *err);

/* Frees the replies and lists of a survey (its inputs are untouched). */
void mg_client_survey_clear(mg_client_survey *s);

#endif
