#include "uuid.h"

#include <stdlib.h>
#include <sys/random.h>

void mg_uuid_v4(uint8_t out[16])
{
    size_t got = 0;
    while (got < 16) {
        ssize_t n = getrandom(out + got, 16 - got, 0);
        if (n > 0)
            got += (size_t)n;
        else
            abort(); /* getrandom on Linux ≥ 3.17 does not fail for 16 bytes */
    }
    out[6] = (uint8_t)((out[6] & 0x0f) | 0x40);
    out[8] = (uint8_t)((out[8] & 0x3f) | 0x80);
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

bool mg_uuid_parse(const char *s, size_t len, uint8_t out[16])
{
    if (s == NULL || len != MG_UUID_STRLEN)
        return false;
    uint8_t bytes[16];
    size_t k = 0;
    for (size_t i = 0; i < MG_UUID_STRLEN;) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-')
                return false;
            i++;
            continue;
        }
        int hi = hexval(s[i]), lo = hexval(s[i + 1]);
        if (hi < 0 || lo < 0)
            return false;
        bytes[k++] = (uint8_t)(hi << 4 | lo);
        i += 2;
    }
    if (out)
        for (int i = 0; i < 16; i++)
            out[i] = bytes[i];
    return true;
}

char *mg_uuid_format(const uint8_t id[16], char *buf)
{
    static const char hex[] = "0123456789abcdef";
    size_t n = 0;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            buf[n++] = '-';
        buf[n++] = hex[id[i] >> 4];
        buf[n++] = hex[id[i] & 15];
    }
    buf[n] = '\0';
    return buf;
}
