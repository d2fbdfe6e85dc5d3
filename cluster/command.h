/*
 * Shard-group commands: what a Raft entry of a data group carries.
 *
 * A command is one write a client asked for (create a cube, put a batch of
 * memories, ...). Commands are built and validated by the proposer, encoded
 * to msgpack, and several of them — from concurrent proposals — are joined
 * into one Raft entry:
 *
 *   entry := {"v": 1, "cmds": [cmd, ...]}
 *   cmd   := {"op": "cube_create",      "cube": <mg_cube record>}
 *          | {"op": "cube_delete",      "cube_id": str}
 *          | {"op": "mem_put",          "cube_id": str, "items": [<mg_item record>...],
 *                                       "vecs": [bin f32 | nil, ...]}
 *          | {"op": "mem_update",       (as mem_put, exactly one item; the memory must exist)}
 *          | {"op": "mem_delete",       "cube_id": str, "ids": [bin16, ...]}
 *          | {"op": "mem_delete_where", "cube_id": str, "filter": <JSON filter as msgpack>}
 *          | {"op": "user_put",         "user": <mg_user record>}
 *          | {"op": "user_delete",      "user_id": str}
 *          | {"op": "meta_set",         "expect": uint, "map": bin}
 *          | {"op": "slots_set",        "epoch": uint, "slots": bin (512 bytes)}
 *          | {"op": "slots_drop",       "slots": bin (512 bytes)}
 *
 * Cluster commands (docs/ARCHITECTURE.md "Meta group"):
 *   meta_set    (meta group) replaces the cluster map (lib/cmap.h encoding)
 *               when the stored one has epoch `expect` (0: none yet) and the
 *               new one has epoch expect + 1; otherwise the outcome is
 *               MG_EBUSY ("map changed") and nothing changes.
 *   slots_set   (data group) replaces the group's slot record: the slots it
 *               owns (mg_slotset, 64 little-endian u64 words) and the map
 *               epoch they come from. From that entry on, a cube-scoped
 *               command (cube_*, mem_*) whose cube's slot is not owned gets
 *               the outcome MG_EWRONGGROUP and changes nothing. A group that
 *               never had a slot record owns every slot.
 *   slots_drop  (data group) removes every cube, with its memories, whose
 *               slot is in the set and not owned (owned slots are never
 *               dropped); its count is the number of cubes removed.
 *
 * Versioning: readers skip keys they do not know, so a newer writer may add
 * fields; an entry whose "v" is newer than MG_ENTRY_VERSION, or a command
 * whose "op" this build does not know, is refused with MG_EVERSION (the same
 * way on every replica of the same build, so apply stays deterministic).
 * Time stamps, ids and vectors are inside the records: they are assigned
 * before proposing, never at apply.
 *
 * Ownership: an mg_cmd owns everything it points to and is released with
 * mg_cmd_clear (safe on a zeroed or already cleared command).
 */
#ifndef MG_CLUSTER_COMMAND_H
#define MG_CLUSTER_COMMAND_H

#include "../lib/cmap.h"
#include "../lib/error.h"
#include "../lib/mp.h"
#include "../storage/item.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define MG_ENTRY_VERSION 1

/* Limits checked by mg_cmd_validate (a command is refused before it is
 * proposed rather than failing at apply). */
#define MG_CMD_ITEMS_MAX 10000          /* items of one mem_put, ids of one mem_delete */
#define MG_CMD_BYTES_MAX (32u << 20)    /* encoded size of one command */
/* Entries are padded with zero bytes to a multiple of 8: raft_uv's batch
 * encoding pads entry data to 8 bytes and 0.15 decodes entries received or
 * loaded from disk at padded offsets, so an unpadded entry shifts the ones
 * after it. Readers ignore what follows the entry map. */
#define MG_ENTRY_ALIGN 8
static inline size_t mg_entry_padded(size_t len)
{
    return (len + MG_ENTRY_ALIGN - 1) & ~(size_t)(MG_ENTRY_ALIGN - 1);
}

/* Bytes of the header mg_entry_header writes. */
#define MG_ENTRY_HEADER_LEN 14

enum mg_cmd_kind {
    MG_CMD_CUBE_CREATE = 1,
    MG_CMD_CUBE_DELETE,
    MG_CMD_MEM_PUT,
    MG_CMD_MEM_UPDATE,
    MG_CMD_MEM_DELETE,
    MG_CMD_MEM_DELETE_WHERE,
    MG_CMD_USER_PUT,
    MG_CMD_USER_DELETE,
    MG_CMD_META_SET,
    MG_CMD_SLOTS_SET,
    MG_CMD_SLOTS_DROP,
    MG_CMD_KIND_COUNT_
};

/* One memory of a mem_put / mem_update, with its vector (vec may be NULL:
 * a memory without an embedding). */
typedef struct mg_cmd_item {
    mg_item item;
    float *vec;   /* malloc'd, dim floats */
    uint32_t dim;
} mg_cmd_item;

typedef struct mg_cmd {
    int kind;                          /* enum mg_cmd_kind */
    char cube_id[MG_CUBE_ID_MAX + 1];  /* every mem_* op and cube_delete */
    mg_cube cube;                      /* cube_create */
    mg_cmd_item *items;                /* mem_put (n_items), mem_update (1); malloc'd */
    size_t n_items;
    uint8_t (*ids)[16];                /* mem_delete; malloc'd */
    size_t n_ids;
    json_t *filter;                    /* mem_delete_where: owned reference */
    mg_user user;                      /* user_put */
    char user_id[MG_USER_ID_MAX + 1];  /* user_delete */
    uint64_t expect;                   /* meta_set: the stored map's epoch */
    void *map;                         /* meta_set: encoded mg_cmap (malloc'd) */
    size_t map_len;
    uint64_t epoch;                    /* slots_set */
    mg_slotset slots;                  /* slots_set, slots_drop */
} mg_cmd;

/* Stable wire name of a kind ("mem_put"), or NULL for an unknown kind. */
const char *mg_cmd_name(int kind);

/* Frees what the command owns and zeroes it. */
void mg_cmd_clear(mg_cmd *c);

/* Appends a memory to a mem_put/mem_update command, taking ownership of
 * *item (left zeroed) and of vec (malloc'd, may be NULL) on success only.
 * MG_ETOOBIG past MG_CMD_ITEMS_MAX, MG_ENOMEM. */
int mg_cmd_add_item(mg_cmd *c, mg_item *item, float *vec, uint32_t dim, mg_error *err);

/* Checks everything apply would otherwise refuse for reasons visible to the
 * proposer: ids, records (mg_*_validate), vectors (finite, one dimension per
 * command), item and id counts, that a filter compiles. MG_EINVAL, MG_EDIM,
 * MG_ENAN, MG_EFILTER, MG_ETOOBIG with a message naming the part. */
int mg_cmd_validate(const mg_cmd *c, mg_error *err);

/* Packs the command (no validation). MG_ENOMEM. */
int mg_cmd_pack(msgpack_packer *pk, const mg_cmd *c);

/* Validates and encodes into a new malloc'd buffer (*buf, *len; the caller
 * frees). MG_ETOOBIG past MG_CMD_BYTES_MAX. */
int mg_cmd_encode(const mg_cmd *c, void **buf, size_t *len, mg_error *err);

/* Decodes one command from exactly `len` bytes into a zeroed *out. Nothing
 * is trusted: MG_ECORRUPT for malformed input, MG_EVERSION for an unknown
 * op. On error *out is left cleared. */
int mg_cmd_decode(const void *buf, size_t len, mg_cmd *out, mg_error *err);

/* ---- reading puts in place -------------------------------------------- */

/* One memory of a mem_put / mem_update as it lies in the encoded command. */
typedef struct mg_cmd_rec {
    const uint8_t *record;  /* its mg_item record (as mg_item_pack wrote it) */
    size_t record_len;
    const uint8_t *vec;     /* dim float32 little-endian, unaligned; NULL: none */
    uint32_t dim;
} mg_cmd_rec;

/* A mem_put or mem_update read without decoding its memories (what apply
 * needs: the store keeps the records as they come). */
typedef struct mg_cmd_puts {
    int kind;                          /* MG_CMD_MEM_PUT or MG_CMD_MEM_UPDATE */
    char cube_id[MG_CUBE_ID_MAX + 1];
    mg_cmd_rec *recs;                  /* n, malloc'd; pointers into the command */
    size_t n;
} mg_cmd_puts;

/* Reads a mem_put or mem_update command from exactly `len` bytes into
 * *out: MG_OK exactly when mg_cmd_decode would decode it as such a command,
 * with the same memories; its records are checked (mg_store_record_check)
 * instead of decoded. *out points into buf, which must outlive it. Any other
 * command, or a malformed one, is an error (MG_EINVAL for another kind, else
 * mostly mg_cmd_decode's code): decode it with mg_cmd_decode, whose answer
 * counts. On error *out is left cleared. */
int mg_cmd_read_puts(const void *buf, size_t len, mg_cmd_puts *out, mg_error *err);

/* Frees what mg_cmd_read_puts allocated and zeroes *p. */
void mg_cmd_puts_clear(mg_cmd_puts *p);

/* Writes the header of an entry of n_cmds commands into hdr (at least
 * MG_ENTRY_HEADER_LEN bytes) and returns its length; the encoded commands
 * follow it back to back. */
size_t mg_entry_header(uint8_t *hdr, uint32_t n_cmds);

/* Opens an entry: checks its version and positions *cmds at the first
 * command, with *n_cmds commands to read (each one element; bound it with
 * mg_mp_skip). MG_ECORRUPT, MG_EVERSION. */
int mg_entry_open(const void *buf, size_t len, mg_mp_reader *cmds, uint32_t *n_cmds,
                  mg_error *err);

#endif
