/*
 * The MemOS filter language (MEMOS_API.md), compiled once and evaluated
 * against encoded memory records during a scan.
 *
 *   filter := {"and": [filter|cond, ...]} | {"or": [filter|cond, ...]} | cond
 *   cond   := {"field": value}                      equality
 *           | {"field": {"op": value, ...}}        op in gt lt gte lte in contains like
 *                                                  (several ops in one object are AND-ed)
 *   An object with several fields is the AND of one cond per field.
 *
 * Fields: "id" and "memory" (the record's own), any metadata key
 * ("memory_type", "created_at", "tags", "session_id", ...), and any key of
 * metadata.info ("info.key" or just "key" when metadata has no such field).
 * A dotted name "a.b" walks nested objects.
 *
 * Semantics: equality compares numbers numerically, strings byte-wise, and
 * bools/null by kind; against a list field, equality holds when any element is
 * equal. gt/lt/gte/lte compare numbers with numbers and strings with strings
 * (ISO time stamps compare correctly as strings); mixed kinds are false.
 * "in" takes a list and holds when the field (or, for a list field, any of its
 * elements) equals one of its values. "contains" holds for a list field that
 * has an element equal to the value, or a string field that has the value as
 * a substring. "like" is SQL LIKE on strings ('%' any run, '_' one character),
 * ASCII case-insensitive. A missing field makes every cond on it false.
 */
#ifndef MG_FILTER_H
#define MG_FILTER_H

#include "../lib/error.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#define MG_FILTER_MAX_DEPTH 16   /* nesting of and/or */
#define MG_FILTER_MAX_NODES 1024 /* conditions in one filter */

typedef struct mg_filter mg_filter;

/* Compiles `json` (not retained). On success *out is a new filter that the
 * caller frees with mg_filter_free. On failure returns MG_EFILTER with a
 * message that names the bad part ("filter.and[1].created_at: unknown
 * operator \"after\""). An empty object compiles to a filter that matches
 * everything. */
int mg_filter_compile(const json_t *json, mg_filter **out, mg_error *err);

void mg_filter_free(mg_filter *f);

/* True when the encoded memory record (mg_item_pack's output) satisfies the
 * filter. A record that fails to decode never matches. Thread-safe: a compiled
 * filter is immutable and may be shared by concurrent scans. */
bool mg_filter_match(const mg_filter *f, const void *record, size_t len);

#endif
