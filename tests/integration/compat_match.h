/*
 * The comparison rules of the MemOS compatibility fixture
 * (tests/fixtures/memos_compat/README.md): expanding an exchange's templates
 * ($like shapes, $ref values from earlier answers) and matching an answer
 * against the expected shape key by key. Pure logic on jansson values, no
 * I/O: compat_test.c does the HTTP.
 */
#ifndef MG_COMPAT_MATCH_H
#define MG_COMPAT_MATCH_H

#include <jansson.h>
#include <stddef.h>

/* Called once per difference: `path` is where ("$.data.text_mem[0].cube_id"),
 * `want` and `got` say what was expected and what came (short texts, never
 * NULL; "(absent)" for a missing key). The strings live only for the call. */
typedef void compat_report_fn(void *ud, const char *path, const char *want, const char *got);

/* Returns a new value (the caller decrefs it) with every template resolved:
 *  - an object with "$like": "<shape>" becomes a copy of shapes[<shape>]
 *    (itself expanded) with the object's other keys set on top; a key set to
 *    "$absent" is removed;
 *  - the string "$ref:name.path" becomes (a copy of) the value at `path` in
 *    the answer stored under refs[name]; path parts are object keys or array
 *    indexes separated by dots;
 *  - the string "$ref_id:name.path" becomes MemOS's ref_id of the id found
 *    there: "[" + its text up to the first dash + "]";
 *  - inside any other string, "{$ref:name.path}" is replaced by the text of
 *    that value (a string as it is, a number in decimal).
 * Everything else is copied. Returns NULL with a message in err (at most
 * errlen bytes) for an unknown shape or a reference that does not resolve. */
json_t *compat_expand(const json_t *tmpl, const json_t *shapes, const json_t *refs, char *err,
                      size_t errlen);

/* Matches `got` against the expanded `want` and returns the number of
 * differences, each reported through fn (may be NULL). Rules:
 *  - objects: exactly the expected keys (missing and extra keys are both
 *    differences), values matched recursively;
 *  - arrays: same length, element by element; an object
 *    {"$each": shape, "$min": n, "$max": m, "$head": [...]} instead matches a
 *    list whose first elements match $head in order and whose other elements
 *    match $each, with n <= length <= m ($min defaults to the length of
 *    $head, $max to unbounded; without $each no element may follow $head);
 *  - placeholders (whole strings): "<any>", "<string>", "<int>" (a JSON
 *    integer), "<float>" (a JSON real: Python's float), "<number>" (either),
 *    "<bool>", "<object>", "<array>", "<uuid>" (lower-case 8-4-4-4-12 hex),
 *    "<timestamp>" (ISO 8601 without a zone, optional fraction of up to 6
 *    digits), "<ref_id>" ("[" + 8 hex digits + "]"), "<re:ERE>" (a string
 *    matching the POSIX extended regular expression);
 *  - numbers: an integer matches only an equal integer and a real only a
 *    real (within 1e-9 relative), as Python's json tells int from float;
 *  - strings, booleans and null by value.
 * `path` names the root in reports (e.g. "$"). */
size_t compat_match(const json_t *want, const json_t *got, const char *path, compat_report_fn *fn,
                    void *ud);

#endif
