/*
 * Private to storage/filter_compile.c and storage/filter_match.c: the
 * compiled form of a filter (filter.h) and the one table of operators.
 * filter_compile.c builds the tree from JSON, filter_match.c evaluates it on
 * encoded records. Nothing outside storage/ includes this.
 */
#ifndef MG_FILTER_INTERNAL_H
#define MG_FILTER_INTERNAL_H

#include "filter.h"

#include "../lib/clock.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- compiled form ------------------------------------------------------ */

typedef struct span {
    const char *s;
    uint32_t len;
} span;

/* Kinds shared by filter constants and record values, so that equality is a
 * comparison of kinds first. */
enum vkind { V_OTHER = 0, V_NULL, V_BOOL, V_NUM, V_STR, V_LIST };

typedef struct constant {
    uint8_t kind; /* enum vkind */
    bool b;
    bool is_time; /* str that parsed as a time stamp: .time holds it */
    double num;
    span str;
    mg_instant time;
    uint32_t n_items; /* V_LIST: scalars only */
    struct constant *items;
} constant;

enum field_root { FIELD_ID, FIELD_MEMORY, FIELD_METADATA };

typedef struct field {
    uint8_t root;       /* enum field_root */
    bool info_fallback; /* look in metadata.info when metadata lacks parts[0] */
    uint32_t n_parts;
    span *parts; /* the dotted name, split */
} field;

enum node_kind { NODE_AND, NODE_OR, NODE_COND };

/* like patterns are compiled to tokens: a byte (already lower-cased) or one
 * of these wildcards. */
enum { LIKE_ANY = -1, LIKE_ONE = -2 };

typedef struct node {
    uint8_t kind;     /* enum node_kind */
    uint8_t op;       /* enum filter_op, for NODE_COND */
    uint8_t cmp_mask; /* the op's, for ordering operators */
    uint32_t n_kids;
    struct node *kids;
    field field;
    constant value;
    int16_t *pattern;
    uint32_t pattern_len;
} node;

/* The tree and everything it points to live in the arena (its blocks are
 * private to filter_compile.c). */
struct arena_block;

struct mg_filter {
    struct arena_block *arena;
    node *root;
};

/* ---- operators ---------------------------------------------------------- */

enum filter_op { OP_EQ, OP_GT, OP_GTE, OP_LT, OP_LTE, OP_IN, OP_CONTAINS, OP_LIKE, OP_COUNT_ };

/* What an operator accepts as its value. */
enum value_rule {
    RULE_EQ,      /* a scalar, or a list of scalars */
    RULE_ORDERED, /* a number or a string */
    RULE_LIST,    /* a list of scalars */
    RULE_SCALAR,  /* a string, number, bool or null */
    RULE_STRING,
};

/* Which outcomes of a three-way comparison an ordering operator accepts. */
#define CMP_LT 1u
#define CMP_EQ 2u
#define CMP_GT 4u

/* One scalar of a record's field (defined in filter_match.c). */
struct scalar;

/* Tests for one scalar of the field (the field itself, or one element when it
 * is a list: in_list says which). */
typedef bool (*elem_test)(const node *c, const struct scalar *v, bool in_list);

/* The one table of operators: name on the wire, the value it takes, the
 * comparison outcomes it accepts (ordering operators) and its test. Indexed
 * by enum filter_op; defined in filter_match.c, beside the tests. */
struct op_def {
    const char *name;
    uint8_t rule; /* enum value_rule */
    uint8_t cmp_mask;
    elem_test test;
};

extern const struct op_def filter_ops[OP_COUNT_];

/* like patterns and the text they match are compared with ASCII letters
 * folded to lower case. */
static inline int ascii_lower(unsigned char c)
{
    return c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c;
}

#endif
