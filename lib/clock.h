/* Time: a monotonic clock for durations and a wall clock for time stamps. */
#ifndef MG_CLOCK_H
#define MG_CLOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Nanoseconds from CLOCK_MONOTONIC; only differences are meaningful. */
uint64_t mg_clock_mono_ns(void);

/* Microseconds since the Unix epoch (CLOCK_REALTIME). */
uint64_t mg_clock_wall_us(void);

/* Writes `us` (microseconds since the epoch, UTC) as MemOS writes time stamps,
 * ISO 8601 without a zone: "2026-01-01T10:00:00.000000". `buf` must hold
 * MG_ISO8601_LEN + 1 bytes. Returns buf. */
#define MG_ISO8601_LEN 26
char *mg_clock_iso8601(uint64_t us, char *buf);

/* A point in time: seconds since the epoch (UTC) and nanoseconds. */
typedef struct mg_instant {
    int64_t sec;
    int32_t nsec;
} mg_instant;

/* Parses an ISO 8601 time stamp, the whole of s[0..len):
 * YYYY-MM-DD[(T|t| )hh:mm[:ss[(.|,)fraction]][Z|+hh[:]mm|-hh[:]mm|+hh|-hh]].
 * A date alone is midnight; no zone means UTC (as Neo4j's datetime(), which
 * MemOS filters use). Returns false for anything else. */
bool mg_clock_parse_iso8601(const char *s, size_t len, mg_instant *out);

/* -1, 0 or 1 as a is before, at or after b. */
int mg_instant_cmp(const mg_instant *a, const mg_instant *b);

#endif
