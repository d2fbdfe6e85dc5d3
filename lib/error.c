#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const struct {
    const char *name;
    const char *text;
} codes[MG_ERR_COUNT_] = {
    [MG_OK] = {"OK", "success"},
    [MG_EINVAL] = {"EINVAL", "invalid argument"},
    [MG_ENOMEM] = {"ENOMEM", "out of memory"},
    [MG_ENOTFOUND] = {"ENOTFOUND", "not found"},
    [MG_EEXIST] = {"EEXIST", "already exists"},
    [MG_ETOOBIG] = {"ETOOBIG", "too large"},
    [MG_EDIM] = {"EDIM", "vector dimension mismatch"},
    [MG_ENAN] = {"ENAN", "vector contains NaN or Inf"},
    [MG_EFILTER] = {"EFILTER", "malformed filter"},
    [MG_ECORRUPT] = {"ECORRUPT", "corrupt data"},
    [MG_EVERSION] = {"EVERSION", "unsupported format version"},
    [MG_EIO] = {"EIO", "I/O error"},
    [MG_EFULL] = {"EFULL", "storage full"},
    [MG_EPERM] = {"EPERM", "permission denied"},
    [MG_EBUSY] = {"EBUSY", "busy, try again"},
    [MG_ETIMEDOUT] = {"ETIMEDOUT", "timed out"},
    [MG_ENOTLEADER] = {"ENOTLEADER", "not the leader"},
    [MG_EWRONGGROUP] = {"EWRONGGROUP", "slot not owned by this group"},
    [MG_EUNAVAIL] = {"EUNAVAIL", "unavailable"},
    [MG_ESHUTDOWN] = {"ESHUTDOWN", "shutting down"},
    [MG_EINTERNAL] = {"EINTERNAL", "internal error"},
};

const char *mg_strerror(int code)
{
    if (code < 0 || code >= MG_ERR_COUNT_)
        return "unknown error";
    return codes[code].text;
}

const char *mg_errname(int code)
{
    if (code < 0 || code >= MG_ERR_COUNT_)
        return "EUNKNOWN";
    return codes[code].name;
}

int mg_error_set(mg_error *err, int code, const char *fmt, ...)
{
    if (err == NULL)
        return code;
    err->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    return code;
}

int mg_error_wrap(mg_error *err, int code, const char *fmt, ...)
{
    if (err == NULL)
        return code;
    err->code = code;
    char prefix[MG_ERRMSG_MAX];
    char old[MG_ERRMSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    old[sizeof old - 1] = '\0';
    size_t n = strnlen(prefix, sizeof prefix - 1);
    memcpy(err->msg, prefix, n);
    if (n + 2 < sizeof err->msg) {
        err->msg[n++] = ':';
        err->msg[n++] = ' ';
    }
    size_t m = strnlen(old, sizeof err->msg - 1 - n);
    memcpy(err->msg + n, old, m);
    err->msg[n + m] = '\0';
    return code;
}

void mg_error_clear(mg_error *err)
{
    if (err == NULL)
        return;
    err->code = MG_OK;
    err->msg[0] = '\0';
}
