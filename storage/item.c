#include "item.h"

#include <string.h>

bool mg_cube_id_valid(const char *s, size_t len)
{
    if (s == NULL || len == 0 || len > MG_CUBE_ID_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == ':' || c == '@' || c == '-'))
            return false;
    }
    return true;
}
