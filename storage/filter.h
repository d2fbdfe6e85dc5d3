/*
 * The MemOS filter language (MEMOS_API.md), compiled once and evaluated
 * against encoded memory records during a scan.
 *
 *   filter := {"and": [filter|cond, ...]} | {"or": [filter|cond, ...]} | cond
 *   cond   := {"field": value}                      equality
 *           | {"field": {"op": value, ...}}        op in = gt lt gte lte in contains like
 *                                                  (several ops in one object are AND-ed)
 *   An object with several fields (and/or included) is the AND of one cond per
 *   field. An empty object, and an empty and/or list (MemOS drops those), match
 *   everything. and/or may nest (MemOS allows one level; this is a superset).
 *
 * Fields: "id" and "memory" (the record's own), any metadata key
 * ("memory_type", "created_at", "tags", "session_id", ...), and any key of
 * metadata.info ("info.key" or just "key" when metadata has no such field:
 * MemOS flattens info into the node the same way). A dotted name "a.b" walks
 * nested objects. "id" compares as the canonical lower-case UUID string; a
 * UUID given in upper case is made canonical when the filter is compiled.
 *
 * Semantics: equality ("field": value, or the "=" operator MemOS also takes)
 * compares numbers numerically (3 equals 3.0), strings byte-wise, and
 * bools/null by kind; a list value (["a", "b"]) equals a list field with the
 * same elements in the same order, as in MemOS. Every other comparison,
 * against a list field, holds when any element satisfies it ({"tags": "x"}
 * holds when "x" is one of the tags). gt/lt/gte/lte compare numbers with
 * numbers and strings with strings byte-wise, except that two ISO 8601 time
 * stamps compare as instants, as MemOS's datetime() comparison does: a date
 * alone is midnight, 'T' or a space separates the time, fractions count, a
 * zone offset is applied and no zone means UTC ("2026-01-01T00:00:00" lte
 * "2026-01-01" holds); mixed kinds are false. "in" takes a list and holds when
 * the field (or, for a list field, any of its elements) equals one of its
 * values; an empty list matches nothing. "contains" holds for a list field
 * that has an element equal to the value, or a string field that has the
 * value as a substring (case-sensitive). "like" holds for a string field that
 * contains the pattern anywhere, as MemOS runs it (CONTAINS / LIKE '%v%');
 * in the pattern '%' is any run, '_' one character and '\' makes the next
 * character literal; ASCII letters match case-insensitively. A missing field
 * makes every cond on it false.
 *
 * Values: gt/lt/gte/lte take a number or a string, in a list, like a string,
 * contains a single value; lists hold only strings, numbers, bools and null.
 * Objects are never values: {"field": {...}} is always a set of operators.
 */
#ifndef MG_FILTER_H
#define MG_FILTER_H

#include "../lib/error.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#define MG_FILTER_MAX_DEPTH 16   /* nesting of and/or */
#define MG_FILTER_MAX_NODES 1024 /* conditions and and/or groups in one filter */

typedef struct mg_filter mg_filter;

/* Compiles `json` (not retained). On success *out is a new filter that the
 * caller frees with mg_filter_free. On failure *out is untouched and the
 * result is MG_EFILTER with a message that names the bad part
 * ("filter.and[1].created_at: unknown operator \"after\""): not an object,
 * and/or without a list, an empty field name or dotted part, an unknown
 * operator, a value the operator does not take, nesting deeper than
 * MG_FILTER_MAX_DEPTH or more than MG_FILTER_MAX_NODES conditions and groups;
 * or MG_ENOMEM. An empty object compiles to a filter that matches everything. */
int mg_filter_compile(const json_t *json, mg_filter **out, mg_error *err);

void mg_filter_free(mg_filter *f);

/* True when the encoded memory record (mg_item_pack's output) satisfies the
 * filter. A record that fails to decode never matches: the whole record is
 * checked as mg_item_decode reads it (a map with "id" a 16-byte bin, "memory"
 * a str, "metadata" a map of JSON-like values, "v" 1..MG_ITEM_VERSION if
 * present, nothing after it), though text is not checked for UTF-8. Allocates
 * nothing. Thread-safe: a compiled filter is immutable and may be shared by
 * concurrent scans. */
bool mg_filter_match(const mg_filter *f, const void *record, size_t len);

#endif
