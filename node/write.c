/*
 * WRITE: decoded on the nng thread, checked and proposed on the loop thread,
 * answered from the proposal's callback (also on the loop).
 *
 * Access is checked for the whole batch before anything is proposed, against
 * the leader's applied state plus the cube creations this leader has
 * proposed and not yet applied (pending creates). Without the latter, two
 * users racing to create the same cube could each pass the check and the
 * loser's mem_put would land in the winner's cube.
 */
#include "node_internal.h"

#include "../lib/clock.h"
#include "../lib/log.h"

#include <stdlib.h>
#include <string.h>

#define WRITE_CMDS_MAX 1024 /* commands in one WRITE */

struct pending_create {
    struct pending_create *next;
    uint64_t group;
    const node_ctx *by; /* the request whose proposal carries it */
    char cube_id[MG_CUBE_ID_MAX + 1];
    char owner[MG_USER_ID_MAX + 1];
};

/* ---- pending creates (loop thread) -------------------------------------- */

static const struct pending_create *pending_find(mg_node *n, uint64_t group, const char *cube)
{
    for (const struct pending_create *p = n->pending_creates; p != NULL; p = p->next)
        if (p->group == group && strcmp(p->cube_id, cube) == 0)
            return p;
    return NULL;
}

static bool pending_add(mg_node *n, uint64_t group, const node_ctx *by, const mg_cube *cube)
{
    struct pending_create *p = malloc(sizeof *p);
    if (p == NULL)
        return false;
    p->group = group;
    p->by = by;
    snprintf(p->cube_id, sizeof p->cube_id, "%s", cube->cube_id);
    snprintf(p->owner, sizeof p->owner, "%s", cube->owner_id);
    p->next = n->pending_creates;
    n->pending_creates = p;
    return true;
}

static void pending_forget(mg_node *n, const node_ctx *by)
{
    struct pending_create **pp = &n->pending_creates;
    while (*pp != NULL) {
        struct pending_create *p = *pp;
        if (p->by == by) {
            *pp = p->next;
            free(p);
        } else {
            pp = &p->next;
        }
    }
}

void node_write_forget_all(mg_node *n)
{
    while (n->pending_creates != NULL) {
        struct pending_create *p = n->pending_creates;
        n->pending_creates = p->next;
        free(p);
    }
}

void node_write_clear(node_ctx *c)
{
    for (size_t i = 0; i < c->n_cmds; i++)
        mg_cmd_clear(&c->cmds[i]);
    free(c->cmds);
    free(c->kinds);
    c->cmds = NULL;
    c->kinds = NULL;
    c->n_cmds = 0;
}

/* ---- access ------------------------------------------------------------- */

/* What this batch knows of a cube: as stored, as pending, or as changed by
 * earlier commands of the batch. */
typedef struct cube_view {
    const char *cube_id;
    bool exists;
    bool allowed;          /* the user may read and write it */
    bool owner;            /* the user owns it */
    bool created;          /* created by this batch (to register as pending) */
    const mg_cube *create; /* that cube_create's record */
} cube_view;

typedef struct access_check {
    mg_node *n;
    node_group *ng;
    const char *user; /* "" = internal */
    cube_view *views;
    size_t n_views;
} access_check;

static int view_of(access_check *a, const char *cube_id, cube_view **out, mg_error *err)
{
    for (size_t i = 0; i < a->n_views; i++) {
        if (strcmp(a->views[i].cube_id, cube_id) == 0) {
            *out = &a->views[i];
            return MG_OK;
        }
    }
    cube_view *v = &a->views[a->n_views++]; /* capacity: one per command */
    memset(v, 0, sizeof *v);
    v->cube_id = cube_id;
    bool internal = a->user[0] == '\0';
    mg_cube cube = {0};
    int rc = mg_store_cube_get(a->ng->store, cube_id, &cube, err);
    if (rc == MG_OK) {
        v->exists = true;
        v->owner = internal || strcmp(cube.owner_id, a->user) == 0;
        v->allowed = internal || mg_cube_allows(&cube, a->user);
        mg_cube_clear(&cube);
    } else if (rc == MG_ENOTFOUND) {
        const struct pending_create *p = pending_find(a->n, a->ng->group_id, cube_id);
        if (p != NULL) {
            v->exists = true;
            v->owner = v->allowed = internal || strcmp(p->owner, a->user) == 0;
        }
    } else {
        return mg_error_wrap(err, rc, "cube %s", cube_id);
    }
    *out = v;
    return MG_OK;
}

static int check_one(access_check *a, const mg_cmd *cmd, mg_error *err)
{
    bool internal = a->user[0] == '\0';
    cube_view *v;
    int rc;
    switch (cmd->kind) {
    case MG_CMD_CUBE_CREATE:
        if (!internal && strcmp(cmd->cube.owner_id, a->user) != 0)
            return mg_error_set(err, MG_EPERM, "user %s may not create cube %s for owner %s",
                                a->user, cmd->cube.cube_id, cmd->cube.owner_id);
        if ((rc = view_of(a, cmd->cube.cube_id, &v, err)) != MG_OK)
            return rc;
        if (!v->exists) { /* an existing one stays as it is: apply answers MG_EEXIST */
            v->exists = v->allowed = v->owner = true;
            v->created = true;
            v->create = &cmd->cube;
        }
        return MG_OK;
    case MG_CMD_CUBE_DELETE:
        if ((rc = view_of(a, cmd->cube_id, &v, err)) != MG_OK)
            return rc;
        if (!v->exists)
            return mg_error_set(err, MG_ENOTFOUND, "cube %s not found", cmd->cube_id);
        if (!v->owner)
            return mg_error_set(err, MG_EPERM, "only the owner of cube %s may delete it",
                                cmd->cube_id);
        v->exists = false;
        return MG_OK;
    case MG_CMD_MEM_PUT:
    case MG_CMD_MEM_UPDATE:
    case MG_CMD_MEM_DELETE:
    case MG_CMD_MEM_DELETE_WHERE:
        if ((rc = view_of(a, cmd->cube_id, &v, err)) != MG_OK)
            return rc;
        if (!v->exists)
            return mg_error_set(err, MG_ENOTFOUND, "cube %s not found", cmd->cube_id);
        if (!v->allowed)
            return mg_error_set(err, MG_EPERM, "user %s may not write to cube %s", a->user,
                                cmd->cube_id);
        return MG_OK;
    case MG_CMD_USER_PUT:
    case MG_CMD_USER_DELETE:
        if (!internal)
            return mg_error_set(err, MG_EPERM,
                                "user records are changed by internal "
                                "requests only");
        return MG_OK;
    case MG_CMD_META_SET:
    case MG_CMD_SLOTS_SET:
    case MG_CMD_SLOTS_DROP:
        if (!internal)
            return mg_error_set(err, MG_EPERM, "%s is an internal command", mg_cmd_name(cmd->kind));
        return MG_OK;
    default:
        return mg_error_set(err, MG_EINVAL, "unknown command kind %d", cmd->kind);
    }
}

/* ---- slot ownership ----------------------------------------------------- */

/* The cube a command is scoped to, or NULL (user and cluster commands). */
static const char *cmd_cube(const mg_cmd *cmd)
{
    switch (cmd->kind) {
    case MG_CMD_CUBE_CREATE:
        return cmd->cube.cube_id;
    case MG_CMD_CUBE_DELETE:
    case MG_CMD_MEM_PUT:
    case MG_CMD_MEM_UPDATE:
    case MG_CMD_MEM_DELETE:
    case MG_CMD_MEM_DELETE_WHERE:
        return cmd->cube_id;
    default:
        return NULL;
    }
}

/* Loop: answers MG_EWRONGGROUP and returns false when a command names a
 * cube whose slot the group does not own (as of its last applied entry;
 * apply checks again in log order). */
static bool check_owned(node_ctx *c, node_group *ng)
{
    c->write_cube[0] = '\0';
    for (size_t i = 0; i < c->n_cmds; i++) {
        const char *cube = cmd_cube(&c->cmds[i]);
        uint64_t epoch;
        if (cube == NULL)
            continue;
        if (c->write_cube[0] == '\0')
            snprintf(c->write_cube, sizeof c->write_cube, "%s", cube);
        if (!node_group_owns(ng, cube, &epoch)) {
            node_reply_wrong_group(c, ng->group_id, cube, epoch);
            return false;
        }
    }
    return true;
}

/* ---- the loop side ------------------------------------------------------ */

static void pack_outcome(msgpack_packer *pk, int kind, const mg_cmd_outcome *o)
{
    size_t count = 0, failed = 0, first = 0;
    for (size_t j = 0; j < o->n_ops; j++) {
        count += o->op_counts ? o->op_counts[j] : 0;
        if (o->op_codes && o->op_codes[j] != MG_OK && failed++ == 0)
            first = j;
    }
    char msg[160] = "";
    const char *name = mg_cmd_name(kind);
    if (o->code != MG_OK && o->n_ops > 1 && failed > 0)
        snprintf(msg, sizeof msg, "%s: %zu of %zu failed (first: #%zu, %s)", name ? name : "?",
                 failed, o->n_ops, first, mg_strerror(o->op_codes[first]));
    else if (o->code != MG_OK)
        snprintf(msg, sizeof msg, "%s: %s", name ? name : "?", mg_strerror(o->code));
    bool codes = o->code != MG_OK && o->n_ops > 1 && o->op_codes != NULL;
    msgpack_pack_map(pk, codes ? 4 : 3);
    mg_mp_pack_cstr(pk, "code");
    msgpack_pack_uint32(pk, (uint32_t)o->code);
    mg_mp_pack_cstr(pk, "msg");
    mg_mp_pack_cstr(pk, msg);
    mg_mp_pack_cstr(pk, "count");
    msgpack_pack_uint64(pk, count);
    if (codes) {
        mg_mp_pack_cstr(pk, "op_codes");
        msgpack_pack_array(pk, (uint32_t)o->n_ops);
        for (size_t j = 0; j < o->n_ops; j++)
            msgpack_pack_uint32(pk, (uint32_t)o->op_codes[j]);
    }
}

static void on_proposed(mg_group_proposal *p, int status, const mg_cmd_outcome *outcomes,
                        size_t n_out)
{
    node_ctx *c = p->data;
    mg_node *n = c->node;
    pending_forget(n, c);
    if (status == MG_OK)
        node_stats_commit(n, mg_clock_mono_ns() - c->propose_ns);
    if (status == MG_ESHUTDOWN && !n->host_closed)
        status = MG_EUNAVAIL; /* the group's replica was closed, not the node */
    if (status != MG_OK) {
        uint64_t lid = 0;
        const char *addr = NULL;
        const char *msg = mg_strerror(status);
        node_group *ng = node_group_find(n, c->env.group);
        if (status == MG_ENOTLEADER && ng != NULL && ng->g != NULL)
            mg_group_leader(ng->g, &lid, &addr);
        if (status == MG_EUNAVAIL)
            msg = "leadership was lost while the write was in flight: it may or may not be "
                  "applied; retry with the same ids";
        else if (status == MG_ESHUTDOWN)
            msg = "the node is stopping";
        mg_debug("node.write_failed", "rid=%llu group=%llu status=%s",
                 (unsigned long long)c->env.rid, (unsigned long long)c->env.group,
                 mg_errname(status));
        node_reply_error(c, status, msg, lid, addr);
        return;
    }
    size_t wrong = 0;
    for (size_t i = 0; i < n_out; i++)
        wrong += outcomes[i].code == MG_EWRONGGROUP;
    if (n_out > 0 && wrong == n_out) {
        /* Ownership moved between the check and the apply: nothing applied. */
        node_group *ng = node_group_find(n, c->env.group);
        uint64_t epoch = 0;
        if (ng != NULL && c->write_cube[0] != '\0')
            node_group_owns(ng, c->write_cube, &epoch);
        node_reply_wrong_group(c, c->env.group, c->write_cube, epoch);
        return;
    }
    msgpack_sbuffer sb;
    msgpack_packer pk;
    node_reply_begin(c, &sb, &pk);
    msgpack_pack_map(&pk, 1);
    mg_mp_pack_cstr(&pk, "outcomes");
    msgpack_pack_array(&pk, (uint32_t)n_out);
    for (size_t i = 0; i < n_out; i++)
        pack_outcome(&pk, i < c->n_cmds ? c->kinds[i] : 0, &outcomes[i]);
    node_reply(c, &sb);
}

static void write_on_loop(node_ctx *c)
{
    mg_node *n = c->node;
    mg_error err = {0};
    int rc;
    if (node_expired(c))
        return;
    if (n->host_closed) {
        node_reply_error(c, MG_ESHUTDOWN, "the node is stopping", 0, NULL);
        return;
    }
    node_group *ng = node_group_find(n, c->env.group);
    if (ng == NULL || ng->g == NULL) {
        char msg[128];
        snprintf(msg, sizeof msg, "group %llu is not hosted on node %llu",
                 (unsigned long long)c->env.group, (unsigned long long)n->cfg.node_id);
        node_reply_error(c, MG_ENOTFOUND, msg, 0, NULL);
        return;
    }
    if (!mg_group_is_leader(ng->g)) {
        uint64_t lid;
        const char *addr;
        char msg[160];
        mg_group_leader(ng->g, &lid, &addr);
        snprintf(msg, sizeof msg, "group %llu: replica %llu is not the leader (leader %llu at %s)",
                 (unsigned long long)ng->group_id, (unsigned long long)ng->replica_id,
                 (unsigned long long)lid, addr ? addr : "unknown");
        node_reply_error(c, MG_ENOTLEADER, msg, lid, addr);
        return;
    }
    if (!node_group_leads_ready(ng)) {
        /* Access is checked against the applied state, which a new leader
         * completes only once a barrier of its term applied. */
        node_reply_error(c, MG_EBUSY,
                         "the group's leader was just elected and is catching up; "
                         "retry",
                         ng->replica_id, NULL);
        return;
    }
    if (!check_owned(c, ng))
        return;
    access_check a = {.n = n, .ng = ng, .user = c->user};
    a.views = malloc(c->n_cmds * sizeof *a.views);
    if (a.views == NULL) {
        node_reply_error(c, MG_ENOMEM, "out of memory checking access", 0, NULL);
        return;
    }
    for (size_t i = 0; i < c->n_cmds; i++) {
        if ((rc = check_one(&a, &c->cmds[i], &err)) != MG_OK) {
            free(a.views);
            if (c->n_cmds > 1)
                mg_error_wrap(&err, rc, "cmds[%zu]", i);
            mg_debug("node.write_denied", "rid=%llu user=%s code=%s",
                     (unsigned long long)c->env.rid, c->user, mg_errname(rc));
            node_reply_err(c, &err);
            return;
        }
    }
    c->prop.data = c;
    c->propose_ns = mg_clock_mono_ns();
    rc = mg_group_propose(ng->g, &c->prop, c->cmds, c->n_cmds, on_proposed, &err);
    if (rc != MG_OK) {
        free(a.views);
        node_reply_err(c, &err);
        return;
    }
    for (size_t i = 0; i < a.n_views; i++)
        if (a.views[i].created && !pending_add(n, ng->group_id, c, a.views[i].create))
            mg_errlog("node.pending_nomem", "cube=%s", a.views[i].cube_id);
    free(a.views);
    /* The proposal holds its own encoding: the decoded commands can go. */
    for (size_t i = 0; i < c->n_cmds; i++)
        mg_cmd_clear(&c->cmds[i]);
}

/* ---- the nng side ------------------------------------------------------- */

void node_write_start(node_ctx *c)
{
    mg_error err = {0};
    mg_mp_reader r = mg_wire_body(c->env.body, c->env.body_len);
    uint32_t n_keys, n_cmds = 0;
    bool have_cmds = false;
    const uint8_t *cmds_start = NULL;
    if (mg_mp_read_map(&r, &n_keys) != MG_OK) {
        node_reply_error(c, MG_ECORRUPT, "write: the body is not a map", 0, NULL);
        return;
    }
    for (uint32_t i = 0; i < n_keys; i++) {
        bool is_cmds = mg_mp_peek_str_eq(&r, "cmds");
        if (mg_mp_skip(&r) != MG_OK)
            goto err_corrupt;
        if (is_cmds) {
            if (mg_mp_read_array(&r, &n_cmds) != MG_OK)
                goto err_corrupt;
            have_cmds = true;
            cmds_start = r.pos;
            for (uint32_t j = 0; j < n_cmds; j++)
                if (mg_mp_skip(&r) != MG_OK)
                    goto err_corrupt;
        } else if (mg_mp_skip(&r) != MG_OK) {
            goto err_corrupt;
        }
    }
    if (!have_cmds || n_cmds == 0) {
        node_reply_error(c, MG_EINVAL, "write: no commands", 0, NULL);
        return;
    }
    if (n_cmds > WRITE_CMDS_MAX) {
        mg_error_set(&err, MG_ETOOBIG, "write: %u commands (at most %d)", n_cmds, WRITE_CMDS_MAX);
        node_reply_err(c, &err);
        return;
    }
    c->cmds = calloc(n_cmds, sizeof *c->cmds);
    c->kinds = calloc(n_cmds, sizeof *c->kinds);
    if (c->cmds == NULL || c->kinds == NULL) {
        node_reply_error(c, MG_ENOMEM, "out of memory decoding a write", 0, NULL);
        return;
    }
    mg_mp_reader_init(&r, cmds_start, (size_t)(c->env.body + c->env.body_len - cmds_start));
    for (uint32_t j = 0; j < n_cmds; j++) {
        const uint8_t *start = r.pos;
        mg_mp_skip(&r); /* checked above */
        int rc = mg_cmd_decode(start, (size_t)(r.pos - start), &c->cmds[j], &err);
        if (rc != MG_OK) {
            mg_error_wrap(&err, rc, "write: cmds[%u]", j);
            node_reply_err(c, &err); /* frees the commands decoded so far */
            return;
        }
        c->n_cmds = j + 1;
        c->kinds[j] = c->cmds[j].kind;
    }
    if (!node_loop_post(c->node, c, write_on_loop))
        node_reply_error(c, MG_ESHUTDOWN, "the node is stopping", 0, NULL);
    return;

err_corrupt:
    node_reply_error(c, MG_ECORRUPT, "write: malformed body", 0, NULL);
}
