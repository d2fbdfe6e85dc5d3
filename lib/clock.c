#include "clock.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

uint64_t mg_clock_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t mg_clock_wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

char *mg_clock_iso8601(uint64_t us, char *buf)
{
    time_t secs = (time_t)(us / 1000000u);
    struct tm tm;
    gmtime_r(&secs, &tm);
    /* Every field is range-limited by gmtime_r; years past 9999 are clamped. */
    unsigned year = (unsigned)(tm.tm_year + 1900) % 10000u;
    char tmp[64];
    snprintf(tmp, sizeof tmp, "%04u-%02u-%02uT%02u:%02u:%02u.%06u", year,
             (unsigned)(tm.tm_mon + 1) % 100u, (unsigned)tm.tm_mday % 100u,
             (unsigned)tm.tm_hour % 100u, (unsigned)tm.tm_min % 100u, (unsigned)tm.tm_sec % 100u,
             (unsigned)(us % 1000000u));
    memcpy(buf, tmp, MG_ISO8601_LEN);
    buf[MG_ISO8601_LEN] = '\0';
    return buf;
}
