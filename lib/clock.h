/* Time: a monotonic clock for durations and a wall clock for time stamps. */
#ifndef MG_CLOCK_H
#define MG_CLOCK_H

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

#endif
