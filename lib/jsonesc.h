/* JSON string escaping shared by the router's writer (router/jsonw.c) and the
 * bench's request builder (bench/api.c). */
#ifndef MG_JSONESC_H
#define MG_JSONESC_H

#include <stddef.h>

/* Flags for mg_json_escape. Without any, '"', '\\', '\n', '\r' and '\t' get
 * their two-character escapes, every other byte below 0x20 becomes \u00XX
 * (lowercase hex) and all other bytes (0x7f and UTF-8 included) are copied. */
#define MG_JSONESC_SHORT_BF 1u /* '\b' and '\f' as \b and \f instead of \u0008, \u000c */
#define MG_JSONESC_DEL 2u      /* 0x7f as \u007f instead of copied */

/* The most bytes mg_json_escape writes for n input bytes (each as \u00XX). */
#define MG_JSONESC_MAX(n) ((n) * 6)

/* Writes the escaped form of s[0..n) (no quotes, no terminating NUL) to out,
 * which must have room for MG_JSONESC_MAX(n) bytes; returns the bytes
 * written. The caller owns both buffers; s need not be NUL-terminated. */
size_t mg_json_escape(char *out, const char *s, size_t n, unsigned flags);

#endif
