/*
 * memgrid ctl's internals, shared by cmd/ctl.c (the commands, their
 * arguments and the HTTP calls) and cmd/ctl_print.c (the tables).
 */
#ifndef MG_CMD_CTL_INTERNAL_H
#define MG_CMD_CTL_INTERNAL_H

#include <jansson.h>
#include <stdbool.h>

/* The global options of a command line. */
typedef struct ctl_opts {
    const char *router;
    long timeout_s; /* 0: the command's default */
    bool json;
} ctl_opts;

/* Printers of an answer's data as tables on stdout (cmd/ctl_print.c). The
 * caller has checked the data's shape: an object, or an array for nodes and
 * groups. o (the router's URL) is used only by ctl_print_stats; the others
 * take it so that every printer has the one signature ctl.c's ask() calls. */
void ctl_print_status(const json_t *d);
void ctl_print_nodes(const ctl_opts *o, const json_t *d);
void ctl_print_groups(const ctl_opts *o, const json_t *d);
void ctl_print_slots(const ctl_opts *o, const json_t *d);
void ctl_print_stats(const ctl_opts *o, const json_t *d);
void ctl_print_map(const ctl_opts *o, const json_t *d);
void ctl_print_added(const ctl_opts *o, const json_t *d);
void ctl_print_removed(const ctl_opts *o, const json_t *d);
void ctl_print_leader(const ctl_opts *o, const json_t *d);
void ctl_print_replicas(const ctl_opts *o, const json_t *d);
void ctl_print_rebalanced(const ctl_opts *o, const json_t *d);
void ctl_print_transfers(const ctl_opts *o, const json_t *d);

/* On stderr: why a status answer is not healthy (each node down, group
 * without a leader and replica lagging), and a warning for each node a
 * stats answer lacks. */
void ctl_print_unhealthy(const json_t *d);
void ctl_print_stats_missing(const json_t *d);

#endif
