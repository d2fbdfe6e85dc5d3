/*
 * Driver side of mg_group_replica (replica_main.c): starts a group's
 * replicas as child processes on free loopback ports with data in a temp
 * directory and talks to them over their stdin/stdout line protocol. Used by
 * the real-I/O integration test and bench/raft_bench; not part of the
 * server.
 *
 * Cleanup: mg_rcluster_destroy kills every child (they also die with the
 * driver: PR_SET_PDEATHSIG, and exit when their stdin closes) and removes
 * the temp directory.
 */
#ifndef MG_CLUSTER_REPLICA_CTL_H
#define MG_CLUSTER_REPLICA_CTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define MG_RCLUSTER_MAX 8

typedef struct mg_rproc {
    pid_t pid;               /* 0 when not running */
    int to_fd, from_fd;      /* its stdin, its stdout */
    char buf[1 << 16];       /* bytes read and not yet returned as lines */
    size_t len;
} mg_rproc;

typedef struct mg_rcluster {
    char root[256];          /* temp dir: <root>/r<id>/ per replica */
    char bin[512];
    unsigned n;
    unsigned election_ms;
    char peers[1024];        /* "1=127.0.0.1:p1,2=..." */
    mg_rproc procs[MG_RCLUSTER_MAX];
} mg_rcluster;

/* Makes the temp dir and picks n free loopback ports. 0 or -1. */
int mg_rcluster_init(mg_rcluster *c, const char *bin, unsigned n, unsigned election_ms);

/* Starts replica i (id i+1) and waits for its "ready" line. 0 or -1. */
int mg_rcluster_start(mg_rcluster *c, unsigned i);

/* Sends one line (printf-style, newline added). 0 or -1. */
int mg_rproc_send(mg_rproc *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Reads one line (without the newline) within timeout_ms. 0, or -1 on
 * timeout, EOF or error. */
int mg_rproc_readline(mg_rproc *p, char *line, size_t cap, int timeout_ms);

/* Sends a command and reads its one-line reply. */
int mg_rproc_call(mg_rproc *p, char *reply, size_t cap, int timeout_ms, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* Sends `sig` to replica i and reaps it (SIGKILL: a crash). */
void mg_rcluster_kill(mg_rcluster *c, unsigned i, int sig);

/* Polls "status" on the running replicas until one says it is the leader;
 * returns its index, or -1 after timeout_ms. */
int mg_rcluster_leader(mg_rcluster *c, int timeout_ms);

/* Kills every replica and removes the temp directory. */
void mg_rcluster_destroy(mg_rcluster *c);

#endif
