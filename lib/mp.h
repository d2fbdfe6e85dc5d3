/*
 * msgpack helpers. Writing uses msgpack-c's packer (msgpack_sbuffer +
 * msgpack_packer); a few wrappers here save repetition. Reading uses our own
 * bounded cursor rather than msgpack-c's unpacker, because the unpacker
 * allocates whatever an array or map header claims: here no length from input
 * is trusted until the bytes it needs are known to be there, and nesting is
 * limited. Every read either advances the cursor past one complete element and
 * returns MG_OK, or returns MG_ECORRUPT and leaves the cursor where it was.
 *
 * Pointers returned for str and bin point into the input buffer and live as
 * long as it does; they are not NUL-terminated and (for bin) not aligned.
 */
#ifndef MG_MP_H
#define MG_MP_H

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MG_MP_MAX_DEPTH 64

typedef struct mg_mp_reader {
    const uint8_t *pos;
    const uint8_t *end;
} mg_mp_reader;

enum mg_mp_type {
    MG_MP_NIL = 1,
    MG_MP_BOOL,
    MG_MP_UINT,  /* positive integer */
    MG_MP_INT,   /* negative integer */
    MG_MP_FLOAT, /* float32 or float64 */
    MG_MP_STR,
    MG_MP_BIN,
    MG_MP_ARRAY,
    MG_MP_MAP,
    MG_MP_EXT,
};

static inline void mg_mp_reader_init(mg_mp_reader *r, const void *buf, size_t len)
{
    r->pos = (const uint8_t *)buf;
    r->end = r->pos + len;
}

static inline size_t mg_mp_remaining(const mg_mp_reader *r)
{
    return (size_t)(r->end - r->pos);
}

/* Type of the next element, or 0 at the end of input or on a reserved byte
 * (0xc1). Does not advance. */
int mg_mp_peek(const mg_mp_reader *r);

int mg_mp_read_nil(mg_mp_reader *r);
int mg_mp_read_bool(mg_mp_reader *r, bool *v);
/* Any integer that fits; a negative value or a float is ECORRUPT. */
int mg_mp_read_u64(mg_mp_reader *r, uint64_t *v);
int mg_mp_read_u32(mg_mp_reader *r, uint32_t *v);
/* Any integer that fits in int64. */
int mg_mp_read_i64(mg_mp_reader *r, int64_t *v);
/* float32, float64 or any integer, as a double. */
int mg_mp_read_double(mg_mp_reader *r, double *v);
int mg_mp_read_str(mg_mp_reader *r, const char **s, uint32_t *len);
/* Reads a str into a NUL-terminated copy in buf (capacity cap, including the
 * NUL). ETOOBIG-free by design: a string that does not fit is ECORRUPT. */
int mg_mp_read_strcpy(mg_mp_reader *r, char *buf, size_t cap);
/* Reads a str into a new malloc'd, NUL-terminated copy (caller frees).
 * ENOMEM when allocation fails. */
int mg_mp_read_strdup(mg_mp_reader *r, char **s, uint32_t *len);
int mg_mp_read_bin(mg_mp_reader *r, const uint8_t **b, uint32_t *len);
/* Container headers: the count is checked against the bytes left (every
 * element takes at least one byte, every map entry two). */
int mg_mp_read_array(mg_mp_reader *r, uint32_t *count);
int mg_mp_read_map(mg_mp_reader *r, uint32_t *count);
/* Skips one complete element, nested ones included (to MG_MP_MAX_DEPTH). */
int mg_mp_skip(mg_mp_reader *r);

/* True when the next element is a str equal to `s` (does not advance). */
bool mg_mp_peek_str_eq(const mg_mp_reader *r, const char *s);

/* Packs a NUL-terminated string as a str (NULL packs nil). */
int mg_mp_pack_cstr(msgpack_packer *pk, const char *s);
/* Packs `len` bytes as a str. */
int mg_mp_pack_strn(msgpack_packer *pk, const char *s, size_t len);
/* Packs `len` bytes as a bin. */
int mg_mp_pack_binn(msgpack_packer *pk, const void *b, size_t len);

#endif
