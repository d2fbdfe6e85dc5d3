/*
 * The records memgrid stores (DESIGN §4, MEMOS_API.md): cubes, memory items
 * and users; their validation; their msgpack encoding (what LMDB and Raft
 * carry) and the JSON form the API speaks.
 *
 * Encodings are versioned maps ({"v": 1, ...}); a decoder skips keys it does
 * not know, so a newer writer's extra fields do not break an older reader, and
 * refuses a version newer than it knows with MG_EVERSION.
 *
 * Ownership: every struct here owns what its pointers point to and is
 * released with its *_clear function, which leaves it zeroed (safe to clear
 * twice). Decoders fill a zeroed struct; on error they leave it cleared.
 */
#ifndef MG_ITEM_H
#define MG_ITEM_H

#include "../lib/error.h"
#include "../lib/uuid.h"

#include <jansson.h>
#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Limits (DESIGN §10). */
#define MG_CUBE_ID_MAX 128        /* bytes of [A-Za-z0-9_.:@-] */
#define MG_USER_ID_MAX 128        /* bytes of UTF-8 without control characters */
#define MG_NAME_MAX 256           /* cube and user names */
#define MG_MEMORY_TEXT_MAX 65536  /* bytes of a memory's text */
#define MG_METADATA_MAX 65536     /* bytes of a memory's encoded metadata */
#define MG_DIM_MAX 4096           /* vector dimension */
#define MG_SHARED_MAX 1024        /* users a cube may be shared with */
#define MG_APIKEYS_MAX 64         /* API keys per user */
#define MG_EMBEDDER_MAX 64        /* embedder name bytes */

#define MG_ITEM_VERSION 1

enum mg_metric { MG_METRIC_COSINE = 0 };

/* Validation: true when `s` (len bytes) is an acceptable id. */
bool mg_cube_id_valid(const char *s, size_t len);
bool mg_user_id_valid(const char *s, size_t len);

/* ---- cube -------------------------------------------------------------- */

typedef struct mg_cube {
    char cube_id[MG_CUBE_ID_MAX + 1];
    char owner_id[MG_USER_ID_MAX + 1];
    char *name;                 /* may be NULL (no name given) */
    char created_at[32];        /* ISO 8601, assigned before proposing */
    char embedder[MG_EMBEDDER_MAX + 1]; /* "hash", "openai:<model>", ... */
    uint32_t dim;               /* 0 = fixed by the first vector */
    uint8_t metric;             /* enum mg_metric */
    char **shared_with;         /* user ids that may read and write */
    size_t n_shared;
} mg_cube;

void mg_cube_clear(mg_cube *c);
/* Checks ids, lengths and dimension. MG_EINVAL with a message naming the
 * field. */
int mg_cube_validate(const mg_cube *c, mg_error *err);
/* Adds a user to shared_with (no-op when present). MG_ETOOBIG past
 * MG_SHARED_MAX, MG_EINVAL for a bad user id. */
int mg_cube_share(mg_cube *c, const char *user_id, mg_error *err);
/* True when user may read and write the cube (owner or shared). */
bool mg_cube_allows(const mg_cube *c, const char *user_id);
int mg_cube_pack(msgpack_packer *pk, const mg_cube *c);
int mg_cube_decode(const void *buf, size_t len, mg_cube *out, mg_error *err);
/* {"cube_id","cube_name","owner_id","created_at","embedder","dim","shared_with"} */
json_t *mg_cube_to_json(const mg_cube *c);

/* ---- memory item ------------------------------------------------------- */

typedef struct mg_item {
    uint8_t id[16];             /* UUID */
    char *memory;               /* UTF-8 text, NUL-terminated */
    size_t memory_len;
    json_t *metadata;           /* a JSON object, owned reference; never NULL
                                 * in a valid item. Holds every MemOS field and
                                 * any unknown keys, but never "embedding": the
                                 * vector is stored beside the item. */
} mg_item;

void mg_item_clear(mg_item *it);
/* Deep copy (out must be zeroed). */
int mg_item_copy(mg_item *out, const mg_item *it);
/* Checks text (UTF-8, size), metadata (object, encoded size) and the types of
 * the MemOS fields that have a fixed type when present (strings for
 * user_id/session_id/status/type/memory_type/key/source/visibility/
 * created_at/updated_at/background, list of strings for tags, number for
 * confidence, object for info, list for sources/usage). */
int mg_item_validate(const mg_item *it, mg_error *err);

/* msgpack record: {"v":1, "id": bin16, "memory": str, "metadata": map}. */
int mg_item_pack(msgpack_packer *pk, const mg_item *it);
/* Encodes into a new malloc'd buffer (*buf, *len; caller frees). */
int mg_item_encode(const mg_item *it, char **buf, size_t *len);
int mg_item_decode(const void *buf, size_t len, mg_item *out, mg_error *err);

/* Builds an item from a MemOS JSON item {"id", "memory", "metadata"}.
 * `id` may be absent (the item gets a new UUID) but, when present, must be a
 * UUID. "metadata.embedding", when a non-empty list of numbers, is returned
 * as a malloc'd float array in *vec and *dim (caller frees; NULL/0 when absent or
 * empty) and removed from the item's metadata. Other unknown top-level keys
 * are refused (MemOS accepts only id, memory, metadata). Errors: MG_EINVAL
 * naming the field, MG_ENAN for non-finite vector values, MG_ETOOBIG. */
int mg_item_from_json(const json_t *obj, mg_item *out, float **vec, uint32_t *dim, mg_error *err);

/* The MemOS JSON form {"id","memory","metadata":{...,"embedding":[]}}; a new
 * reference, or NULL on allocation failure. */
json_t *mg_item_to_json(const mg_item *it);

/* ---- user -------------------------------------------------------------- */

enum mg_role { MG_ROLE_USER = 0, MG_ROLE_ADMIN = 1 };

typedef struct mg_apikey {
    uint8_t hash[32];           /* SHA-256 of the key; the key itself is never stored */
    char *scopes;               /* space-separated, e.g. "read write admin" */
} mg_apikey;

typedef struct mg_user {
    char user_id[MG_USER_ID_MAX + 1];
    char *name;                 /* may be NULL */
    uint8_t role;               /* enum mg_role */
    char created_at[32];
    mg_apikey *keys;
    size_t n_keys;
} mg_user;

void mg_user_clear(mg_user *u);
int mg_user_validate(const mg_user *u, mg_error *err);
int mg_user_pack(msgpack_packer *pk, const mg_user *u);
int mg_user_decode(const void *buf, size_t len, mg_user *out, mg_error *err);

/* ---- vectors ----------------------------------------------------------- */

/* MG_OK when every value is finite and 1 ≤ dim ≤ MG_DIM_MAX; MG_ENAN /
 * MG_EDIM with a message otherwise. */
int mg_vector_check(const float *vec, uint32_t dim, mg_error *err);

#endif
