/*
 * Cubes as the router sees them: a short-lived cache of cube records (owner,
 * sharing, embedder) so that an add or a search does not first ask the
 * cluster whether the cube exists, the implicit creation of a user's default
 * cube, and the one way writes are sent (cluster_write).
 *
 * The cache keeps positive entries only, for CUBE_TTL_MS: a cube created by
 * another router is seen at once (a miss asks the cluster), and the only
 * change to an existing cube record — none today: cube_create is create-only
 * — would be seen within the TTL.
 */
#include "api.h"

#include "../cluster/command.h"
#include "../lib/clock.h"
#include "../lib/log.h"
#include "../lib/mp.h"

#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#define CUBE_TTL_MS 5000
#define CUBE_BUCKETS 4096
#define CUBE_MAX 65536

typedef struct cube_entry {
    mg_cube cube;
    uint64_t expires_ns;
    struct cube_entry *next;
} cube_entry;

struct cube_cache {
    pthread_mutex_t lock;
    cube_entry *buckets[CUBE_BUCKETS];
    size_t count;
};

int cube_cache_open(mg_router *r)
{
    r->cubes = calloc(1, sizeof *r->cubes);
    if (r->cubes == NULL)
        return MG_ENOMEM;
    pthread_mutex_init(&r->cubes->lock, NULL);
    return MG_OK;
}

static void entries_free(struct cube_cache *c)
{
    for (size_t b = 0; b < CUBE_BUCKETS; b++) {
        cube_entry *e = c->buckets[b];
        while (e != NULL) {
            cube_entry *next = e->next;
            mg_cube_clear(&e->cube);
            free(e);
            e = next;
        }
        c->buckets[b] = NULL;
    }
    c->count = 0;
}

void cube_cache_close(mg_router *r)
{
    if (r->cubes == NULL)
        return;
    entries_free(r->cubes);
    pthread_mutex_destroy(&r->cubes->lock);
    free(r->cubes);
    r->cubes = NULL;
}

/* Deep copy of a cube (out zeroed). */
static int cube_copy(mg_cube *out, const mg_cube *in)
{
    *out = *in;
    out->name = NULL;
    out->shared_with = NULL;
    out->n_shared = 0;
    if (in->name != NULL && (out->name = strdup(in->name)) == NULL)
        goto err;
    if (in->n_shared > 0) {
        out->shared_with = calloc(in->n_shared, sizeof *out->shared_with);
        if (out->shared_with == NULL)
            goto err;
        for (size_t i = 0; i < in->n_shared; i++) {
            if ((out->shared_with[i] = strdup(in->shared_with[i])) == NULL)
                goto err;
            out->n_shared = i + 1;
        }
    }
    return MG_OK;
err:
    mg_cube_clear(out);
    return MG_ENOMEM;
}

static size_t bucket_of(const char *id)
{
    return XXH3_64bits(id, strlen(id)) % CUBE_BUCKETS;
}

static bool cache_lookup(mg_router *r, const char *id, mg_cube *out)
{
    struct cube_cache *c = r->cubes;
    uint64_t now = mg_clock_mono_ns();
    bool found = false;
    pthread_mutex_lock(&c->lock);
    for (cube_entry *e = c->buckets[bucket_of(id)]; e != NULL; e = e->next)
        if (strcmp(e->cube.cube_id, id) == 0) {
            found = e->expires_ns > now && cube_copy(out, &e->cube) == MG_OK;
            break;
        }
    pthread_mutex_unlock(&c->lock);
    return found;
}

static void cache_store(mg_router *r, const mg_cube *cube)
{
    struct cube_cache *c = r->cubes;
    cube_entry *n = calloc(1, sizeof *n);
    if (n == NULL || cube_copy(&n->cube, cube) != MG_OK) {
        free(n);
        return;
    }
    n->expires_ns = mg_clock_mono_ns() + (uint64_t)CUBE_TTL_MS * 1000000u;
    size_t b = bucket_of(cube->cube_id);
    pthread_mutex_lock(&c->lock);
    if (c->count >= CUBE_MAX)
        entries_free(c); /* a crude bound: start over rather than track recency */
    cube_entry **pp = &c->buckets[b];
    while (*pp != NULL && strcmp((*pp)->cube.cube_id, cube->cube_id) != 0)
        pp = &(*pp)->next;
    if (*pp != NULL) {
        cube_entry *old = *pp;
        n->next = old->next;
        *pp = n;
        mg_cube_clear(&old->cube);
        free(old);
    } else {
        n->next = c->buckets[b];
        c->buckets[b] = n;
        c->count++;
    }
    pthread_mutex_unlock(&c->lock);
}

void cube_forget(mg_router *r, const char *cube_id)
{
    struct cube_cache *c = r->cubes;
    pthread_mutex_lock(&c->lock);
    for (cube_entry **pp = &c->buckets[bucket_of(cube_id)]; *pp != NULL; pp = &(*pp)->next)
        if (strcmp((*pp)->cube.cube_id, cube_id) == 0) {
            cube_entry *old = *pp;
            *pp = old->next;
            mg_cube_clear(&old->cube);
            free(old);
            c->count--;
            break;
        }
    pthread_mutex_unlock(&c->lock);
}

/* ---- cluster ------------------------------------------------------------ */

int cube_get(mg_router *r, const char *cube_id, mg_cube *out, mg_error *err)
{
    if (cache_lookup(r, cube_id, out))
        return MG_OK;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    if (msgpack_pack_map(&pk, 1) || mg_mp_pack_cstr(&pk, "cube_id") ||
        mg_mp_pack_cstr(&pk, cube_id)) {
        msgpack_sbuffer_destroy(&sb);
        return mg_error_set(err, MG_ENOMEM, "out of memory");
    }
    mg_client_reply rep;
    int rc = mg_client_call_cube(r->client, "", MG_OP_CUBE_GET, cube_id, sb.data, sb.size, &rep,
                                 err);
    msgpack_sbuffer_destroy(&sb);
    if (rc == MG_ENOTFOUND)
        return mg_error_set(err, MG_ENOTFOUND, "cube \"%s\" does not exist", cube_id);
    if (rc != MG_OK)
        return mg_error_wrap(err, rc, "cube \"%s\"", cube_id);
    rc = mg_cube_decode(rep.rep.body, rep.rep.body_len, out, err);
    mg_client_reply_free(&rep);
    if (rc != MG_OK)
        return mg_error_wrap(err, MG_EINTERNAL, "cube \"%s\" record", cube_id);
    cache_store(r, out);
    return MG_OK;
}

/* Reads the first outcome of a WRITE reply: {"outcomes": [{"code", "msg", "count"}]}. */
static int write_outcome(const mg_wire_rep *rep, size_t *count, mg_error *err)
{
    mg_mp_reader rd = mg_wire_body(rep->body, rep->body_len);
    uint32_t n, m, f;
    if (mg_mp_read_map(&rd, &n) != MG_OK)
        goto bad;
    for (uint32_t i = 0; i < n; i++) {
        if (!mg_mp_peek_str_eq(&rd, "outcomes")) {
            if (mg_mp_skip(&rd) != MG_OK || mg_mp_skip(&rd) != MG_OK)
                goto bad;
            continue;
        }
        mg_mp_skip(&rd);
        if (mg_mp_read_array(&rd, &m) != MG_OK || m < 1 || mg_mp_read_map(&rd, &f) != MG_OK)
            goto bad;
        uint64_t code = MG_OK, cnt = 0;
        const char *msg = "";
        uint32_t msg_len = 0;
        for (uint32_t k = 0; k < f; k++) {
            int rc;
            if (mg_mp_peek_str_eq(&rd, "code")) {
                mg_mp_skip(&rd);
                rc = mg_mp_read_u64(&rd, &code);
            } else if (mg_mp_peek_str_eq(&rd, "count")) {
                mg_mp_skip(&rd);
                rc = mg_mp_read_u64(&rd, &cnt);
            } else if (mg_mp_peek_str_eq(&rd, "msg")) {
                mg_mp_skip(&rd);
                rc = mg_mp_read_str(&rd, &msg, &msg_len);
            } else {
                rc = mg_mp_skip(&rd) || mg_mp_skip(&rd);
            }
            if (rc != MG_OK)
                goto bad;
        }
        if (count != NULL)
            *count = (size_t)cnt;
        if (code >= MG_ERR_COUNT_)
            goto bad;
        if (code != MG_OK)
            return mg_error_set(err, (int)code, "%.*s", (int)msg_len,
                                msg_len ? msg : mg_strerror((int)code));
        return MG_OK;
    }
bad:
    return mg_error_set(err, MG_EINTERNAL, "malformed WRITE reply from the node");
}

int cluster_write(mg_router *r, const char *user, const mg_cmd *cmd, size_t *count,
                  mg_error *err)
{
    int rc = mg_cmd_validate(cmd, err);
    if (rc != MG_OK)
        return rc;
    const char *cube_id = cmd->kind == MG_CMD_CUBE_CREATE ? cmd->cube.cube_id : cmd->cube_id;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    if (msgpack_pack_map(&pk, 1) || mg_mp_pack_cstr(&pk, "cmds") || msgpack_pack_array(&pk, 1) ||
        mg_cmd_pack(&pk, cmd) != MG_OK) {
        msgpack_sbuffer_destroy(&sb);
        return mg_error_set(err, MG_ENOMEM, "out of memory");
    }
    if (sb.size > MG_CMD_BYTES_MAX) {
        msgpack_sbuffer_destroy(&sb);
        return mg_error_set(err, MG_ETOOBIG, "the write is %zu bytes (at most %u)", sb.size,
                            (unsigned)MG_CMD_BYTES_MAX);
    }
    mg_client_reply rep;
    rc = mg_client_call_cube(r->client, user, MG_OP_WRITE, cube_id, sb.data, sb.size, &rep, err);
    msgpack_sbuffer_destroy(&sb);
    if (rc != MG_OK)
        return rc;
    rc = write_outcome(&rep.rep, count, err);
    mg_client_reply_free(&rep);
    return rc;
}

int cube_create(mg_router *r, const char *cube_id, const char *owner, const char *name,
                const json_t *shared, mg_error *err)
{
    mg_cmd cmd;
    memset(&cmd, 0, sizeof cmd);
    cmd.kind = MG_CMD_CUBE_CREATE;
    mg_cube *c = &cmd.cube;
    snprintf(c->cube_id, sizeof c->cube_id, "%s", cube_id);
    snprintf(c->owner_id, sizeof c->owner_id, "%s", owner);
    snprintf(c->embedder, sizeof c->embedder, "%s", r->embedder);
    c->dim = r->dim;
    c->metric = MG_METRIC_COSINE;
    mg_clock_iso8601(mg_clock_wall_us(), c->created_at);
    int rc = MG_OK;
    if (name != NULL && (c->name = strdup(name)) == NULL)
        rc = mg_error_set(err, MG_ENOMEM, "out of memory");
    size_t i;
    const json_t *u;
    if (shared != NULL)
        json_array_foreach(shared, i, u)
        {
            if (rc == MG_OK && strcmp(json_string_value(u), owner) != 0)
                rc = mg_cube_share(c, json_string_value(u), err);
        }
    if (rc == MG_OK)
        rc = mg_cube_validate(c, err);
    if (rc == MG_OK)
        rc = cluster_write(r, "", &cmd, NULL, err);
    if (rc == MG_OK) {
        cache_store(r, c);
        mg_info("router.cube_create", "cube=%s owner=%s shared=%zu", cube_id, owner, c->n_shared);
    }
    if (rc == MG_EEXIST)
        mg_error_set(err, MG_EEXIST, "cube \"%s\" already exists", cube_id);
    mg_cmd_clear(&cmd);
    return rc;
}

int cube_ensure_writable(mg_router *r, const char *user, const char *cube_id, mg_error *err)
{
    mg_cube cube;
    int rc = cube_get(r, cube_id, &cube, err);
    if (rc == MG_ENOTFOUND && strcmp(cube_id, user) == 0) {
        /* The user's default cube is made on the first add to it. */
        rc = cube_create(r, cube_id, user, NULL, NULL, err);
        if (rc != MG_OK && rc != MG_EEXIST)
            return rc;
        rc = cube_get(r, cube_id, &cube, err);
    }
    if (rc != MG_OK)
        return rc;
    if (!mg_cube_allows(&cube, user))
        rc = mg_error_set(err, MG_EPERM, "user \"%s\" may not write cube \"%s\"", user, cube_id);
    else if (strcmp(cube.embedder, r->embedder) != 0 || (cube.dim != 0 && cube.dim != r->dim))
        rc = mg_error_set(err, MG_EDIM,
                          "cube \"%s\" holds %s vectors of dimension %u; this router embeds "
                          "with %s at dimension %u",
                          cube_id, cube.embedder, cube.dim, r->embedder, r->dim);
    mg_cube_clear(&cube);
    return rc;
}
