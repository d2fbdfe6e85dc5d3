#include "clock.h"

#include <stdbool.h>
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

static bool digits(const char *s, size_t len, size_t *i, unsigned n, unsigned *out)
{
    unsigned v = 0;
    if (len - *i < n)
        return false;
    for (unsigned k = 0; k < n; k++) {
        char c = s[*i + k];
        if (c < '0' || c > '9')
            return false;
        v = v * 10 + (unsigned)(c - '0');
    }
    *i += n;
    *out = v;
    return true;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (year 0..9999). */
static int64_t days_from_civil(unsigned y, unsigned m, unsigned d)
{
    int64_t yy = (int64_t)y - (m <= 2);
    int64_t era = (yy >= 0 ? yy : yy - 399) / 400;
    int64_t yoe = yy - era * 400;
    int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static unsigned days_in_month(unsigned y, unsigned m)
{
    static const unsigned char mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m == 2 && leap ? 29 : mdays[m - 1];
}

/* Parses YYYY-MM-DD[(T|t| )hh:mm[:ss[(.|,)fraction]][Z|±hh[:]mm|±hh]] as a whole
 * string. A date alone is midnight; no zone is UTC (as Neo4j's datetime()). */
bool mg_clock_parse_iso8601(const char *s, size_t len, mg_instant *out)
{
    unsigned y, mo, d, h = 0, mi = 0, sec = 0, zh = 0, zm = 0;
    int32_t nsec = 0;
    int64_t offset = 0;
    size_t i = 0;
    if (!digits(s, len, &i, 4, &y) || i >= len || s[i++] != '-' ||
        !digits(s, len, &i, 2, &mo) || i >= len || s[i++] != '-' || !digits(s, len, &i, 2, &d))
        return false;
    if (mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo))
        return false;
    if (i < len) {
        if (s[i] != 'T' && s[i] != 't' && s[i] != ' ')
            return false;
        i++;
        if (!digits(s, len, &i, 2, &h) || i >= len || s[i++] != ':' ||
            !digits(s, len, &i, 2, &mi) || h > 23 || mi > 59)
            return false;
        if (i < len && s[i] == ':') {
            i++;
            if (!digits(s, len, &i, 2, &sec) || sec > 60)
                return false;
            if (i < len && (s[i] == '.' || s[i] == ',')) {
                size_t start = ++i;
                for (; i < len && s[i] >= '0' && s[i] <= '9'; i++)
                    if (i - start < 9)
                        nsec = nsec * 10 + (s[i] - '0');
                if (i == start)
                    return false;
                for (size_t k = i - start; k < 9; k++)
                    nsec *= 10;
            }
        }
        if (i < len && (s[i] == 'Z' || s[i] == 'z')) {
            i++;
        } else if (i < len && (s[i] == '+' || s[i] == '-')) {
            int sign = s[i++] == '-' ? -1 : 1;
            if (!digits(s, len, &i, 2, &zh) || zh > 23)
                return false;
            if (i < len) {
                if (s[i] == ':')
                    i++;
                if (!digits(s, len, &i, 2, &zm) || zm > 59)
                    return false;
            }
            offset = sign * (int64_t)(zh * 3600 + zm * 60);
        }
        if (i != len)
            return false;
    }
    out->sec = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - offset;
    out->nsec = nsec;
    return true;
}

int mg_instant_cmp(const mg_instant *a, const mg_instant *b)
{
    if (a->sec != b->sec)
        return a->sec < b->sec ? -1 : 1;
    return (a->nsec > b->nsec) - (a->nsec < b->nsec);
}
