/*
 * memgrid's one error space. 0 is success; every failing function returns one
 * of these codes and, when given an mg_error, a message that says what was
 * wrong in words a user can act on. Codes from LMDB, libuv, nng, curl and raft
 * are translated at the boundary where they are met; their text goes into the
 * message.
 */
#ifndef MG_ERROR_H
#define MG_ERROR_H

#include <stddef.h>

enum mg_errcode {
    MG_OK = 0,
    MG_EINVAL,       /* malformed or out-of-range input */
    MG_ENOMEM,       /* allocation failed */
    MG_ENOTFOUND,    /* no such cube, memory, user, group */
    MG_EEXIST,       /* already exists */
    MG_ETOOBIG,      /* a size limit was exceeded */
    MG_EDIM,         /* vector dimension does not match the cube */
    MG_ENAN,         /* NaN or Inf in a vector */
    MG_EFILTER,      /* malformed filter */
    MG_ECORRUPT,     /* stored or received data fails to decode */
    MG_EVERSION,     /* written by a newer/foreign format version */
    MG_EIO,          /* disk or system call failure */
    MG_EFULL,        /* storage full even after growing */
    MG_EPERM,        /* not allowed */
    MG_EBUSY,        /* try again */
    MG_ETIMEDOUT,    /* deadline passed */
    MG_ENOTLEADER,   /* this replica cannot take writes; see leader hint */
    MG_EWRONGGROUP,  /* slot not owned by this group (stale map) */
    MG_EUNAVAIL,     /* peer or group unavailable */
    MG_ESHUTDOWN,    /* closing */
    MG_EINTERNAL,    /* a bug: an invariant did not hold */
    MG_ERR_COUNT_
};

/* Fixed-size so that it can live on the stack and travel up without
 * allocation. `code` repeats the returned code. */
#define MG_ERRMSG_MAX 256
typedef struct mg_error {
    int code;
    char msg[MG_ERRMSG_MAX];
} mg_error;

/* Static text for a code; never NULL (unknown codes give "unknown error"). */
const char *mg_strerror(int code);

/* Stable upper-case name of a code ("EINVAL", ...), for wire and logs. */
const char *mg_errname(int code);

/* Records code and a printf-style message in *err (which may be NULL) and
 * returns code, so that `return mg_error_set(err, MG_EINVAL, "...")` reads as
 * one statement. A message already longer than MG_ERRMSG_MAX is truncated. */
int mg_error_set(mg_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prefixes the existing message with context ("store open: ...") and returns
 * `code` (whatever err is, NULL included), so that
 * `return mg_error_wrap(err, rc, "cube %s", id)` cannot turn a failure into
 * success. */
int mg_error_wrap(mg_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Clears *err to success. */
void mg_error_clear(mg_error *err);

#endif
