#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int mg_env_str(const char *name, char *buf, size_t cap, mg_error *err)
{
    const char *v = getenv(name);
    if (v == NULL)
        return MG_OK;
    size_t len = strlen(v);
    if (len >= cap)
        return mg_error_set(err, MG_EINVAL, "%s: longer than %zu bytes", name, cap - 1);
    memcpy(buf, v, len + 1);
    return MG_OK;
}

int mg_env_u32(const char *name, uint32_t min, uint32_t max, uint32_t *out, mg_error *err)
{
    const char *v = getenv(name);
    if (v == NULL || v[0] == '\0')
        return MG_OK;
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (v[0] < '0' || v[0] > '9' || *end != '\0' || errno != 0 || x < min || x > max)
        return mg_error_set(err, MG_EINVAL, "%s=%.32s: expected a whole number in %u..%u", name, v,
                            min, max);
    *out = (uint32_t)x;
    return MG_OK;
}
