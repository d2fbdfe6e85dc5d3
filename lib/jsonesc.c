#include "jsonesc.h"

size_t mg_json_escape(char *out, const char *s, size_t n, unsigned flags)
{
    static const char hex[] = "0123456789abcdef";
    char *o = out;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char short_esc = 0;
        switch (c) {
        case '"':
            short_esc = '"';
            break;
        case '\\':
            short_esc = '\\';
            break;
        case '\n':
            short_esc = 'n';
            break;
        case '\r':
            short_esc = 'r';
            break;
        case '\t':
            short_esc = 't';
            break;
        case '\b':
            short_esc = (flags & MG_JSONESC_SHORT_BF) ? 'b' : 0;
            break;
        case '\f':
            short_esc = (flags & MG_JSONESC_SHORT_BF) ? 'f' : 0;
            break;
        default:
            break;
        }
        if (short_esc != 0) {
            *o++ = '\\';
            *o++ = short_esc;
        } else if (c < 0x20 || (c == 0x7f && (flags & MG_JSONESC_DEL))) {
            *o++ = '\\';
            *o++ = 'u';
            *o++ = '0';
            *o++ = '0';
            *o++ = hex[c >> 4];
            *o++ = hex[c & 15];
        } else {
            *o++ = (char)c;
        }
    }
    return (size_t)(o - out);
}
