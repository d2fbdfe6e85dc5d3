/*
 * memgrid ctl: the answers as tables for people (cmd/ctl_internal.h). Each
 * printer takes the answer's data, whose shape (object or array) cmd/ctl.c
 * has checked, and prints aligned columns on stdout; a field that is absent
 * or of another type prints as "-" or 0 rather than failing.
 */
#include "ctl_internal.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- tables --------------------------------------------------------------- */

#define TABLE_COLS_MAX 10

/* Rows of text cells printed with aligned columns; the first row is the
 * header. Cells are malloc'd. */
typedef struct table {
    size_t cols;
    size_t n, cap; /* cells */
    char **cells;
} table;

static void table_cell(table *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void table_cell(table *t, const char *fmt, ...)
{
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 64;
        char **grown = realloc(t->cells, cap * sizeof *grown);
        if (grown == NULL)
            return; /* the cell is missing from the table; nothing worse */
        t->cells = grown;
        t->cap = cap;
    }
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0)
        s = NULL;
    va_end(ap);
    t->cells[t->n++] = s;
}

static void table_row(table *t, const char *const *cells)
{
    for (size_t i = 0; i < t->cols; i++)
        table_cell(t, "%s", cells[i]);
}

/* Prints and frees the table; "  (none)" when it has no row under the header. */
static void table_print(table *t)
{
    size_t width[TABLE_COLS_MAX] = {0};
    for (size_t i = 0; i < t->n; i++) {
        size_t l = t->cells[i] ? strlen(t->cells[i]) : 0;
        if (l > width[i % t->cols])
            width[i % t->cols] = l;
    }
    for (size_t i = 0; i < t->n; i++) {
        size_t col = i % t->cols;
        const char *s = t->cells[i] ? t->cells[i] : "";
        if (col + 1 == t->cols || i + 1 == t->n)
            printf("%s%s\n", col == 0 ? "  " : "", s);
        else
            printf("%s%-*s  ", col == 0 ? "  " : "", (int)width[col], s);
    }
    if (t->n <= t->cols)
        printf("  (none)\n");
    for (size_t i = 0; i < t->n; i++)
        free(t->cells[i]);
    free(t->cells);
    memset(t, 0, sizeof *t);
}

static long long jint(const json_t *obj, const char *key)
{
    return (long long)json_integer_value(json_object_get(obj, key));
}

static const char *jstr(const json_t *obj, const char *key)
{
    const char *s = json_string_value(json_object_get(obj, key));
    return s ? s : "-";
}

static const char *jbool(const json_t *obj, const char *key)
{
    const json_t *b = json_object_get(obj, key);
    return json_is_true(b) ? "yes" : json_is_false(b) ? "no" : "-";
}

/* An array of integers as "1,2,3" into buf. */
static const char *jlist(const json_t *obj, const char *key, char *buf, size_t cap)
{
    size_t i, len = 0;
    const json_t *x;
    buf[0] = '\0';
    json_array_foreach(json_object_get(obj, key), i, x)
    {
        int k = snprintf(buf + len, cap - len, "%s%lld", i ? "," : "",
                         (long long)json_integer_value(x));
        if (k < 0 || (size_t)k >= cap - len)
            break;
        len += (size_t)k;
    }
    return len ? buf : "-";
}

/* The noun for n things: "1 cube", "2 cubes". */
static const char *plural(long long n, const char *one, const char *many)
{
    return n == 1 ? one : many;
}

/* The leader column: a node id, "none" for 0. */
static void cell_leader(table *t, const json_t *g)
{
    if (jint(g, "leader") == 0)
        table_cell(t, "none");
    else
        table_cell(t, "%lld", jint(g, "leader"));
}

/* ---- status --------------------------------------------------------------- */

void ctl_print_status(const json_t *d)
{
    size_t i, j;
    const json_t *n, *g, *r;
    bool healthy = json_is_true(json_object_get(d, "healthy"));
    printf("cluster epoch %lld: %s\n", jint(d, "epoch"), healthy ? "healthy" : "NOT HEALTHY");
    if (jint(d, "epoch") == 0)
        printf("(not initialized: memgrid ctl init --groups G --replicas R)\n");
    printf("\nnodes\n");
    table t = {.cols = 6};
    table_row(&t, (const char *const[]){"ID", "RPC", "UP", "STATE", "REPLICAS", "LEADERS"});
    json_array_foreach(json_object_get(d, "nodes"), i, n)
    {
        table_cell(&t, "%lld", jint(n, "id"));
        table_cell(&t, "%s", jstr(n, "rpc"));
        table_cell(&t, "%s", jbool(n, "up"));
        table_cell(&t, "%s", jstr(n, "state"));
        table_cell(&t, "%lld", jint(n, "replicas"));
        table_cell(&t, "%lld", jint(n, "leaders"));
    }
    table_print(&t);
    printf("\ngroups\n");
    t = (table){.cols = 7};
    table_row(&t, (const char *const[]){"ID", "SLOTS", "LEADER", "TERM", "COMMIT", "APPLIED",
                                        "REPLICAS (node:state lag)"});
    json_array_foreach(json_object_get(d, "groups"), i, g)
    {
        table_cell(&t, "%lld", jint(g, "id"));
        table_cell(&t, "%lld", jint(g, "slots"));
        cell_leader(&t, g);
        table_cell(&t, "%lld", jint(g, "term"));
        table_cell(&t, "%lld", jint(g, "commit"));
        table_cell(&t, "%lld", jint(g, "applied"));
        char reps[1024] = "";
        size_t len = 0;
        json_array_foreach(json_object_get(g, "replicas"), j, r)
        {
            const char *st = jstr(r, "state");
            int k;
            if (strcmp(st, "leader") == 0 || strcmp(st, "down") == 0)
                k = snprintf(reps + len, sizeof reps - len, "%s%lld:%s", j ? " " : "",
                             jint(r, "node"), st);
            else
                k = snprintf(reps + len, sizeof reps - len, "%s%lld:%s %lld", j ? " " : "",
                             jint(r, "node"), st, jint(r, "lag"));
            if (k < 0 || (size_t)k >= sizeof reps - len)
                break;
            len += (size_t)k;
        }
        table_cell(&t, "%s", len ? reps : "-");
    }
    table_print(&t);
}

/* Why the cluster is not healthy, on stderr, from the same figures. */
void ctl_print_unhealthy(const json_t *d)
{
    size_t i, j;
    const json_t *n, *g, *r;
    fprintf(stderr, "memgrid ctl: the cluster is not healthy");
    const char *sep = ": ";
    json_array_foreach(json_object_get(d, "nodes"), i, n)
    {
        if (!json_is_true(json_object_get(n, "up"))) {
            fprintf(stderr, "%snode %lld is down", sep, jint(n, "id"));
            sep = "; ";
        }
    }
    json_array_foreach(json_object_get(d, "groups"), i, g)
    {
        if (jint(g, "leader") == 0) {
            fprintf(stderr, "%sgroup %lld has no leader", sep, jint(g, "id"));
            sep = "; ";
        }
        json_array_foreach(json_object_get(g, "replicas"), j, r)
        {
            if (jint(r, "lag") > 1000) {
                fprintf(stderr, "%sgroup %lld: node %lld is %lld %s behind", sep, jint(g, "id"),
                        jint(r, "node"), jint(r, "lag"),
                        plural(jint(r, "lag"), "entry", "entries"));
                sep = "; ";
            }
        }
    }
    fprintf(stderr, "\n");
}

/* ---- nodes, groups, slots ------------------------------------------------- */

void ctl_print_nodes(const ctl_opts *o, const json_t *d)
{
    (void)o;
    size_t i;
    const json_t *n;
    table t = {.cols = 7};
    table_row(&t, (const char *const[]){"ID", "RPC", "SURVEY", "RAFT", "STATE", "UP", "REPLICAS"});
    json_array_foreach(d, i, n)
    {
        char groups[512];
        table_cell(&t, "%lld", jint(n, "id"));
        table_cell(&t, "%s", jstr(n, "rpc"));
        table_cell(&t, "%s", jstr(n, "survey"));
        table_cell(&t, "%s", jstr(n, "raft"));
        table_cell(&t, "%s", jstr(n, "state"));
        table_cell(&t, "%s", jbool(n, "up"));
        table_cell(&t, "%s", jlist(n, "replicas", groups, sizeof groups));
    }
    table_print(&t);
}

void ctl_print_groups(const ctl_opts *o, const json_t *d)
{
    (void)o;
    size_t i;
    const json_t *g;
    table t = {.cols = 9};
    table_row(&t, (const char *const[]){"ID", "REPLICAS", "LEADER", "TERM", "APPLIED", "SLOTS",
                                        "RANGES", "MEMORIES", "CUBES"});
    json_array_foreach(d, i, g)
    {
        char reps[256];
        const char *ranges = jstr(g, "slot_ranges");
        table_cell(&t, "%lld", jint(g, "id"));
        table_cell(&t, "%s", jlist(g, "replicas", reps, sizeof reps));
        cell_leader(&t, g);
        table_cell(&t, "%lld", jint(g, "term"));
        table_cell(&t, "%lld", jint(g, "applied"));
        table_cell(&t, "%lld", jint(g, "slots"));
        table_cell(&t, "%s", ranges[0] ? ranges : "-");
        table_cell(&t, "%lld", jint(g, "memories"));
        table_cell(&t, "%lld", jint(g, "cubes"));
    }
    table_print(&t);
}

static void print_slot_ranges(const json_t *ranges)
{
    size_t i;
    const json_t *r;
    table t = {.cols = 3};
    table_row(&t, (const char *const[]){"FIRST", "LAST", "GROUP"});
    json_array_foreach(ranges, i, r)
    {
        table_cell(&t, "%lld", jint(r, "first"));
        table_cell(&t, "%lld", jint(r, "last"));
        table_cell(&t, "%lld", jint(r, "group"));
    }
    table_print(&t);
}

void ctl_print_slots(const ctl_opts *o, const json_t *d)
{
    (void)o;
    const json_t *cube = json_object_get(d, "cube");
    if (json_is_object(cube))
        printf("cube %s: slot %lld, group %lld\n\n", jstr(cube, "id"), jint(cube, "slot"),
               jint(cube, "group"));
    printf("epoch %lld\n\nranges\n", jint(d, "epoch"));
    print_slot_ranges(json_object_get(d, "ranges"));
    printf("\ngroups\n");
    size_t i;
    const json_t *g;
    table t = {.cols = 2};
    table_row(&t, (const char *const[]){"GROUP", "SLOTS"});
    json_array_foreach(json_object_get(d, "groups"), i, g)
    {
        table_cell(&t, "%lld", jint(g, "group"));
        table_cell(&t, "%lld", jint(g, "slots"));
    }
    table_print(&t);
}

/* ---- stats ---------------------------------------------------------------- */

static void print_ms(double ms)
{
    if (ms < 10)
        printf(" %9.3f", ms);
    else if (ms < 1000)
        printf(" %9.2f", ms);
    else
        printf(" %9.0f", ms);
}

/* The count columns of a stats table besides "count": the endpoints' and
 * the ops' errors, the ops' redirects (retried by the router by design, not
 * failures: router/stats.c). Stage rows leave them blank. */
enum {
    COLS_NONE = 0,
    COLS_ERRORS = 1,
    COLS_REDIRECTS = 2,
};

static void print_stats_row(const char *name, const json_t *row, unsigned cols, unsigned filled)
{
    static const char *const keys[] = {"p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms"};
    printf("  %-40s %9lld", name, jint(row, "count"));
    if (cols & COLS_ERRORS) {
        if (filled & COLS_ERRORS)
            printf(" %7lld", jint(row, "errors"));
        else
            printf(" %7s", "");
    }
    if (cols & COLS_REDIRECTS) {
        if (filled & COLS_REDIRECTS)
            printf(" %9lld", jint(row, "redirects"));
        else
            printf(" %9s", "");
    }
    for (size_t i = 0; i < 5; i++)
        print_ms(json_number_value(json_object_get(row, keys[i])));
    printf("\n");
}

static void print_stats_header(const char *title, unsigned cols)
{
    printf("%-42s %9s", title, "count");
    if (cols & COLS_ERRORS)
        printf(" %7s", "errors");
    if (cols & COLS_REDIRECTS)
        printf(" %9s", "redirects");
    printf(" %9s %9s %9s %9s %9s\n", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms");
}

void ctl_print_stats(const ctl_opts *o, const json_t *d)
{
    const json_t *cl = json_object_get(d, "cluster");
    long long nodes = jint(cl, "nodes"), leaders = jint(cl, "leaders");
    long long memories = jint(cl, "memories"), cubes = jint(cl, "cubes");
    printf("router %s: %lld of %lld %s answered; %lld %s led, %lld %s in %lld %s\n\n", o->router,
           jint(cl, "nodes_up"), nodes, plural(nodes, "node", "nodes"), leaders,
           plural(leaders, "group", "groups"), memories, plural(memories, "memory", "memories"),
           cubes, plural(cubes, "cube", "cubes"));
    const json_t *endpoints = json_object_get(d, "endpoints");
    const json_t *stages = json_object_get(d, "stages");
    size_t i, j;
    const json_t *row, *st;
    print_stats_header("endpoint (router)", COLS_ERRORS);
    if (json_array_size(endpoints) == 0)
        printf("  (no requests yet)\n");
    json_array_foreach(endpoints, i, row)
    {
        const char *ep = json_string_value(json_object_get(row, "endpoint"));
        print_stats_row(ep ? ep : "?", row, COLS_ERRORS, COLS_ERRORS);
        json_array_foreach(stages, j, st)
        {
            const char *sep = json_string_value(json_object_get(st, "endpoint"));
            const char *name = json_string_value(json_object_get(st, "stage"));
            if (sep == NULL || ep == NULL || strcmp(sep, ep) != 0 || name == NULL)
                continue;
            char label[64];
            snprintf(label, sizeof label, "  %s", name);
            print_stats_row(label, st, COLS_ERRORS, COLS_NONE);
        }
    }
    const json_t *ops = json_object_get(d, "ops");
    printf("\n");
    print_stats_header("op (nodes, merged)", COLS_ERRORS | COLS_REDIRECTS);
    if (json_array_size(ops) == 0)
        printf("  (none)\n");
    json_array_foreach(ops, i, row)
    {
        const char *op = json_string_value(json_object_get(row, "op"));
        print_stats_row(op ? op : "?", row, COLS_ERRORS | COLS_REDIRECTS,
                        COLS_ERRORS | COLS_REDIRECTS);
    }
    const json_t *ns = json_object_get(d, "node_stages");
    if (json_array_size(ns) > 0) {
        printf("\n");
        print_stats_header("node stage (merged)", COLS_NONE);
        json_array_foreach(ns, i, row)
        {
            const char *name = json_string_value(json_object_get(row, "stage"));
            print_stats_row(name ? name : "?", row, COLS_NONE, COLS_NONE);
        }
    }
}

void ctl_print_stats_missing(const json_t *d)
{
    size_t i;
    const json_t *n;
    json_array_foreach(json_object_get(d, "nodes"), i, n)
    {
        if (!json_is_true(json_object_get(n, "up")))
            fprintf(stderr,
                    "memgrid ctl: warning: node %lld did not answer (%s); its figures "
                    "are missing\n",
                    jint(n, "node"), jstr(n, "error"));
    }
}

/* ---- changes -------------------------------------------------------------- */

/* The map as /admin/map and /admin/init answer it. */
void ctl_print_map(const ctl_opts *o, const json_t *d)
{
    (void)o;
    size_t i;
    const json_t *n, *g;
    printf("cluster map, epoch %lld\n\nnodes\n", jint(d, "epoch"));
    table t = {.cols = 5};
    table_row(&t, (const char *const[]){"ID", "RPC", "SURVEY", "RAFT", "STATE"});
    json_array_foreach(json_object_get(d, "nodes"), i, n)
    {
        table_cell(&t, "%lld", jint(n, "id"));
        table_cell(&t, "%s", jstr(n, "rpc"));
        table_cell(&t, "%s", jstr(n, "survey"));
        table_cell(&t, "%s:%lld", jstr(n, "raft_host"), jint(n, "raft_port"));
        table_cell(&t, "%s", jstr(n, "state"));
    }
    table_print(&t);
    printf("\ngroups\n");
    t = (table){.cols = 3};
    table_row(&t, (const char *const[]){"ID", "REPLICAS", "SLOTS"});
    json_array_foreach(json_object_get(d, "groups"), i, g)
    {
        char reps[256];
        table_cell(&t, "%lld", jint(g, "id"));
        table_cell(&t, "%s", jlist(g, "replicas", reps, sizeof reps));
        table_cell(&t, "%lld", jint(g, "slots"));
    }
    table_print(&t);
    printf("\nslots\n");
    print_slot_ranges(json_object_get(d, "slots"));
}

void ctl_print_added(const ctl_opts *o, const json_t *d)
{
    (void)o;
    printf("added node %lld: rpc %s, survey %s, raft %s:%lld (%s)\n", jint(d, "id"), jstr(d, "rpc"),
           jstr(d, "survey"), jstr(d, "raft_host"), jint(d, "raft_port"), jstr(d, "state"));
}

void ctl_print_removed(const ctl_opts *o, const json_t *d)
{
    (void)o;
    size_t i;
    const json_t *m;
    printf("node removed; replicas moved:\n");
    table t = {.cols = 3};
    table_row(&t, (const char *const[]){"GROUP", "FROM", "TO"});
    json_array_foreach(json_object_get(d, "moved"), i, m)
    {
        table_cell(&t, "%lld", jint(m, "group"));
        table_cell(&t, "%lld", jint(m, "from"));
        table_cell(&t, "%lld", jint(m, "to"));
    }
    table_print(&t);
}

void ctl_print_leader(const ctl_opts *o, const json_t *d)
{
    (void)o;
    printf("group %lld: leader node %lld\n", jint(d, "group"), jint(d, "leader"));
}

void ctl_print_replicas(const ctl_opts *o, const json_t *d)
{
    (void)o;
    char reps[256];
    printf("group %lld: replicas on nodes %s\n", jint(d, "group"),
           jlist(d, "replicas", reps, sizeof reps));
}

void ctl_print_rebalanced(const ctl_opts *o, const json_t *d)
{
    (void)o;
    size_t i;
    const json_t *m;
    printf("rebalanced: map epoch %lld", jint(d, "epoch"));
    if (json_is_integer(json_object_get(d, "new_group")))
        printf(", new group %lld", jint(d, "new_group"));
    printf("\n");
    table t = {.cols = 5};
    table_row(&t, (const char *const[]){"FROM", "TO", "SLOTS", "CUBES", "MEMORIES"});
    json_array_foreach(json_object_get(d, "moved"), i, m)
    {
        table_cell(&t, "%lld", jint(m, "from"));
        table_cell(&t, "%lld", jint(m, "to"));
        table_cell(&t, "%lld", jint(m, "slots"));
        table_cell(&t, "%lld", jint(m, "cubes"));
        table_cell(&t, "%lld", jint(m, "memories"));
    }
    table_print(&t);
}

void ctl_print_transfers(const ctl_opts *o, const json_t *d)
{
    (void)o;
    size_t i;
    const json_t *m;
    const json_t *list = json_object_get(d, "transfers");
    if (json_array_size(list) == 0) {
        printf("no transfer: every group is led by its first replica, or that replica's node "
               "does not answer\n");
        return;
    }
    printf("leadership moved in %zu group%s:\n", json_array_size(list),
           json_array_size(list) == 1 ? "" : "s");
    table t = {.cols = 3};
    table_row(&t, (const char *const[]){"GROUP", "FROM", "TO"});
    json_array_foreach(list, i, m)
    {
        table_cell(&t, "%lld", jint(m, "group"));
        table_cell(&t, "%lld", jint(m, "from"));
        table_cell(&t, "%lld", jint(m, "to"));
    }
    table_print(&t);
}
