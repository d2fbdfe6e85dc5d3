#include "log.h"

#include "clock.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static atomic_int level_now = -1;

static const char *const level_names[] = {"debug", "info", "warn", "error", "off"};

int mg_log_parse_level(const char *name)
{
    if (name == NULL)
        return -1;
    for (int i = 0; i <= MG_LOG_OFF; i++)
        if (strcmp(name, level_names[i]) == 0)
            return i;
    if (strcmp(name, "warning") == 0)
        return MG_LOG_WARN;
    return -1;
}

int mg_log_level(void)
{
    int level = atomic_load_explicit(&level_now, memory_order_relaxed);
    if (level >= 0)
        return level;
    level = mg_log_parse_level(getenv("MEMGRID_LOG"));
    if (level < 0)
        level = MG_LOG_INFO;
    atomic_store(&level_now, level);
    return level;
}

void mg_log_set_level(int level)
{
    atomic_store(&level_now, level);
}

char *mg_log_quote(const char *s, char *buf, unsigned cap)
{
    if (cap == 0)
        return buf;
    int bare = s[0] != '\0';
    for (const char *p = s; *p && bare; p++)
        if (*p == ' ' || *p == '"' || *p == '=' || (unsigned char)*p < 0x20)
            bare = 0;
    unsigned n = 0;
    if (bare) {
        while (s[n] && n + 1 < cap) {
            buf[n] = s[n];
            n++;
        }
        buf[n] = '\0';
        return buf;
    }
    buf[n++] = '"';
    for (const char *p = s; *p && n + 4 < cap; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '"' || c == '\\') {
            buf[n++] = '\\';
            buf[n++] = (char)c;
        } else if (c == '\n') {
            buf[n++] = '\\';
            buf[n++] = 'n';
        } else if (c < 0x20) {
            buf[n++] = ' ';
        } else {
            buf[n++] = (char)c;
        }
    }
    if (n < cap - 1)
        buf[n++] = '"';
    buf[n < cap ? n : cap - 1] = '\0';
    return buf;
}

void mg_log_write(int level, const char *event, const char *fmt, ...)
{
    char line[2048];
    char ts[MG_ISO8601_LEN + 1];
    if (level < 0 || level > MG_LOG_ERROR)
        level = MG_LOG_ERROR;
    int n = snprintf(line, sizeof line, "ts=%sZ level=%s event=%s ",
                     mg_clock_iso8601(mg_clock_wall_us(), ts), level_names[level], event);
    if (n < 0)
        return;
    if ((size_t)n < sizeof line) {
        va_list ap;
        va_start(ap, fmt);
        int m = vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
        va_end(ap);
        if (m > 0)
            n += m;
    }
    if ((size_t)n >= sizeof line - 1)
        n = (int)sizeof line - 2;
    line[n++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, (size_t)n);
    (void)w;
}
