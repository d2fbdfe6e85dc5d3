/* UTF-8 validation for text that arrives from outside. */
#ifndef MG_UTF8_H
#define MG_UTF8_H

#include <stdbool.h>
#include <stddef.h>

/* True when s[0..len) is well-formed UTF-8 (no overlongs, no surrogates, no
 * code point above U+10FFFF). NUL bytes are refused too: every text memgrid
 * stores is also a C string. */
bool mg_utf8_valid(const char *s, size_t len);

#endif
