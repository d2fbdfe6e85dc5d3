/*
 * A small JSON text writer for the hot answers (search): memory records go
 * from their msgpack encoding straight to JSON text, without building
 * jansson trees. Output matches what mg_item_to_json + json_dumps produce
 * (same escaping: UTF-8 as it is, control characters escaped; reals in their
 * shortest round-trip form).
 *
 * Errors are sticky: after an allocation failure every call is a no-op and
 * jw_take returns NULL.
 */
#ifndef MG_ROUTER_JSONW_H
#define MG_ROUTER_JSONW_H

#include "../lib/mp.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct jw {
    char *buf;
    size_t len, cap;
    bool failed;
} jw;

void jw_init(jw *w);
void jw_free(jw *w);
/* The text (NUL-terminated, malloc'd, the caller frees) and its length; the
 * writer is reset. NULL after a failure. */
char *jw_take(jw *w, size_t *len);

void jw_raw(jw *w, const char *s, size_t n);
void jw_lit(jw *w, const char *s);          /* NUL-terminated raw text */
void jw_str(jw *w, const char *s, size_t n); /* a JSON string: quotes and escapes */
void jw_cstr(jw *w, const char *s);
void jw_double(jw *w, double v);            /* shortest form that reads back the same */
void jw_u64(jw *w, uint64_t v);

/* Writes one msgpack element as JSON (maps with string keys, arrays,
 * strings, numbers, bools, nil; bin/ext become null). Returns false (and
 * writes nothing sensible) on malformed input; the reader then stands after
 * whatever was consumed. */
bool jw_mp(jw *w, mg_mp_reader *r);

/* A memory record (mg_item_pack) as a MemOS item:
 *   {"id": "<uuid>", "memory": "...", "metadata": {..., "embedding": []}}
 * and, when `search` is true, the search form: "ref_id" at the top level and
 * metadata.id, metadata.memory, metadata.relativity, metadata.ref_id added,
 * metadata.usage emptied. False on a malformed record (nothing written). */
bool jw_item(jw *w, const uint8_t *rec, size_t len, bool search, double relativity);

#endif
