/*
 * Leveled logfmt logging: one line per event on stderr,
 *   ts=2026-01-01T10:00:00.000000Z level=info event=store.open path=/x msg="..."
 * The level comes from MEMGRID_LOG=debug|info|warn|error (default info), read
 * once on first use. Safe from any thread; a line is written with one write(2).
 */
#ifndef MG_LOG_H
#define MG_LOG_H

enum mg_log_level { MG_LOG_DEBUG = 0, MG_LOG_INFO, MG_LOG_WARN, MG_LOG_ERROR, MG_LOG_OFF };

/* The current threshold. */
int mg_log_level(void);

/* Overrides the threshold (tests, --log flags). */
void mg_log_set_level(int level);

/* Parses "debug|info|warn|error|off"; returns -1 for anything else. */
int mg_log_parse_level(const char *name);

/* Writes one line. `event` is a dotted name (module.what); `fmt` formats the
 * rest of the line, which should itself be logfmt (key=value ...). Values with
 * spaces must be quoted by the caller; mg_log_quote helps. */
void mg_log_write(int level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Copies `s` into `buf` (size `cap`) as a logfmt value: bare when it has no
 * space, quote, '=' or control character, else in double quotes with escapes.
 * Truncates to fit; returns buf. */
char *mg_log_quote(const char *s, char *buf, unsigned cap);

#define MG_LOG(level, event, ...)                                                                  \
    do {                                                                                           \
        if ((level) >= mg_log_level())                                                             \
            mg_log_write((level), (event), __VA_ARGS__);                                           \
    } while (0)
#define mg_debug(event, ...) MG_LOG(MG_LOG_DEBUG, event, __VA_ARGS__)
#define mg_info(event, ...) MG_LOG(MG_LOG_INFO, event, __VA_ARGS__)
#define mg_warn(event, ...) MG_LOG(MG_LOG_WARN, event, __VA_ARGS__)
#define mg_errlog(event, ...) MG_LOG(MG_LOG_ERROR, event, __VA_ARGS__)

#endif
