/*
 * Cluster records kept in a group's store beside the data (written only by
 * the cluster commands of command.h, read by the node):
 *
 *   the cluster map   in the meta group (group 0): the lib/cmap.h encoding
 *                     that the last meta_set stored;
 *   the slot record   in a data group: {"epoch": uint, "slots": bin(512)},
 *                     the slots the group owns, from the last slots_set.
 *
 * They live in the store's "sys" table (storage/store.h MG_STORE_SYS_PUT,
 * mg_store_sys_get), so snapshots, digests and restores carry them.
 *
 * Threads: any (store reads are LMDB read transactions).
 */
#ifndef MG_CLUSTER_META_H
#define MG_CLUSTER_META_H

#include "../lib/cmap.h"
#include "../lib/error.h"
#include "../storage/store.h"

#include <stdbool.h>
#include <stdint.h>

#define MG_META_KEY_MAP "cmap"
#define MG_META_KEY_SLOTS "slots"

typedef struct mg_slot_record {
    uint64_t epoch;
    mg_slotset owned;
} mg_slot_record;

/* The stored cluster map: MG_OK with *out decoded, or MG_ENOTFOUND (*out
 * zeroed, epoch 0) when none was stored yet; MG_ECORRUPT/MG_EIO otherwise.
 * `raw`/`raw_len`, when not NULL, get a malloc'd copy of the encoding (the
 * caller frees; NULL when none). */
int mg_meta_read_map(mg_store *s, mg_cmap *out, void **raw, size_t *raw_len, mg_error *err);

/* The stored slot record: MG_OK, or MG_ENOTFOUND when the group never had
 * one (it owns every slot). */
int mg_meta_read_slots(mg_store *s, mg_slot_record *out, mg_error *err);

/* Encodes a slot record value (the bytes stored under MG_META_KEY_SLOTS);
 * buf must hold MG_SLOT_RECORD_MAX bytes; returns the length. */
#define MG_SLOT_RECORD_MAX 600
size_t mg_slot_record_encode(const mg_slot_record *r, uint8_t *buf);
int mg_slot_record_decode(const void *buf, size_t len, mg_slot_record *out, mg_error *err);

/* slotset <-> 512 bytes (64 little-endian u64 words), as commands carry it. */
void mg_slotset_to_le(const mg_slotset *s, uint8_t out[512]);
void mg_slotset_from_le(const uint8_t in[512], mg_slotset *out);

#endif
