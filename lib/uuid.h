/* UUIDs: memory ids are UUID strings on the API and 16 bytes inside. */
#ifndef MG_UUID_H
#define MG_UUID_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MG_UUID_STRLEN 36

/* A new random (version 4) UUID as 16 bytes, from getrandom(2). */
void mg_uuid_v4(uint8_t out[16]);

/* Parses the canonical 8-4-4-4-12 hex form (either case) of exactly `len`
 * bytes. Returns true and fills out (may be NULL) when valid. */
bool mg_uuid_parse(const char *s, size_t len, uint8_t out[16]);

/* Formats as lower-case 8-4-4-4-12; `buf` holds MG_UUID_STRLEN + 1 bytes. */
char *mg_uuid_format(const uint8_t id[16], char *buf);

#endif
