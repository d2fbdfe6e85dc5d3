/*
 * JSON (jansson) ↔ msgpack for free-form values such as memory metadata.
 * Strings are carried byte for byte, object keys keep their order, integers
 * stay integers and reals become float64.
 */
#ifndef MG_JSONMP_H
#define MG_JSONMP_H

#include "mp.h"

#include <jansson.h>

/* Packs a JSON value. Returns MG_OK, or MG_EINVAL for a value nested deeper
 * than MG_MP_MAX_DEPTH, or MG_ENOMEM. */
int mg_jsonmp_pack(msgpack_packer *pk, const json_t *value);

/* Reads one msgpack element into a new JSON value (*out; the caller owns the
 * reference). MG_ECORRUPT for malformed input, a str that is not UTF-8, a map
 * key that is not a str, bin or ext values, NaN/Inf floats, or nesting deeper
 * than MG_MP_MAX_DEPTH; the reader is left where it was on error. */
int mg_jsonmp_read(mg_mp_reader *r, json_t **out);

#endif
