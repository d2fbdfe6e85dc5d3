#include "mp.h"

#include "error.h"

#include <stdlib.h>
#include <string.h>

static uint64_t load_be(const uint8_t *p, unsigned n)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

/* Decoded header of the next element, without trusting any length. */
typedef struct header {
    int type;
    unsigned head;    /* bytes of the header itself */
    uint64_t len;     /* str/bin/ext payload bytes, or container count */
    uint64_t u;       /* uint value / bool */
    int64_t i;        /* int value */
    double d;         /* float value */
} header;

static int decode_header(const mg_mp_reader *r, header *h)
{
    size_t left = mg_mp_remaining(r);
    if (left == 0)
        return MG_ECORRUPT;
    const uint8_t *p = r->pos;
    uint8_t b = p[0];
    memset(h, 0, sizeof *h);
    h->head = 1;
#define NEED(n)                                                                                    \
    do {                                                                                           \
        if (left < (size_t)(n))                                                                    \
            return MG_ECORRUPT;                                                                    \
    } while (0)
    if (b <= 0x7f) {
        h->type = MG_MP_UINT;
        h->u = b;
    } else if (b >= 0xe0) {
        h->type = MG_MP_INT;
        h->i = (int8_t)b;
    } else if ((b & 0xf0) == 0x80) {
        h->type = MG_MP_MAP;
        h->len = b & 0x0f;
    } else if ((b & 0xf0) == 0x90) {
        h->type = MG_MP_ARRAY;
        h->len = b & 0x0f;
    } else if ((b & 0xe0) == 0xa0) {
        h->type = MG_MP_STR;
        h->len = b & 0x1f;
    } else {
        switch (b) {
        case 0xc0: h->type = MG_MP_NIL; break;
        case 0xc2: h->type = MG_MP_BOOL; h->u = 0; break;
        case 0xc3: h->type = MG_MP_BOOL; h->u = 1; break;
        case 0xc4: case 0xc5: case 0xc6: {
            unsigned n = 1u << (b - 0xc4);
            NEED(1 + n);
            h->type = MG_MP_BIN; h->head = 1 + n; h->len = load_be(p + 1, n);
            break;
        }
        case 0xc7: case 0xc8: case 0xc9: {
            unsigned n = 1u << (b - 0xc7);
            NEED(2 + n);
            h->type = MG_MP_EXT; h->head = 2 + n; h->len = load_be(p + 1, n);
            break;
        }
        case 0xca: {
            NEED(5);
            uint32_t bits = (uint32_t)load_be(p + 1, 4);
            float f;
            memcpy(&f, &bits, 4);
            h->type = MG_MP_FLOAT; h->head = 5; h->d = f;
            break;
        }
        case 0xcb: {
            NEED(9);
            uint64_t bits = load_be(p + 1, 8);
            double d;
            memcpy(&d, &bits, 8);
            h->type = MG_MP_FLOAT; h->head = 9; h->d = d;
            break;
        }
        case 0xcc: case 0xcd: case 0xce: case 0xcf: {
            unsigned n = 1u << (b - 0xcc);
            NEED(1 + n);
            h->type = MG_MP_UINT; h->head = 1 + n; h->u = load_be(p + 1, n);
            break;
        }
        case 0xd0: case 0xd1: case 0xd2: case 0xd3: {
            unsigned n = 1u << (b - 0xd0);
            NEED(1 + n);
            uint64_t raw = load_be(p + 1, n);
            int64_t v;
            if (n == 1) v = (int8_t)raw;
            else if (n == 2) v = (int16_t)raw;
            else if (n == 4) v = (int32_t)raw;
            else v = (int64_t)raw;
            if (v >= 0) { h->type = MG_MP_UINT; h->u = (uint64_t)v; }
            else { h->type = MG_MP_INT; h->i = v; }
            h->head = 1 + n;
            break;
        }
        case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8:
            NEED(2);
            h->type = MG_MP_EXT; h->head = 2; h->len = 1u << (b - 0xd4);
            break;
        case 0xd9: case 0xda: case 0xdb: {
            unsigned n = 1u << (b - 0xd9);
            NEED(1 + n);
            h->type = MG_MP_STR; h->head = 1 + n; h->len = load_be(p + 1, n);
            break;
        }
        case 0xdc: case 0xdd: {
            unsigned n = b == 0xdc ? 2 : 4;
            NEED(1 + n);
            h->type = MG_MP_ARRAY; h->head = 1 + n; h->len = load_be(p + 1, n);
            break;
        }
        case 0xde: case 0xdf: {
            unsigned n = b == 0xde ? 2 : 4;
            NEED(1 + n);
            h->type = MG_MP_MAP; h->head = 1 + n; h->len = load_be(p + 1, n);
            break;
        }
        default:
            return MG_ECORRUPT; /* 0xc1 is never used */
        }
    }
#undef NEED
    left -= h->head;
    switch (h->type) {
    case MG_MP_STR: case MG_MP_BIN: case MG_MP_EXT:
        if (h->len > left) return MG_ECORRUPT;
        break;
    case MG_MP_ARRAY:
        if (h->len > left) return MG_ECORRUPT;
        break;
    case MG_MP_MAP:
        if (h->len > left / 2) return MG_ECORRUPT;
        break;
    default:
        break;
    }
    return MG_OK;
}

int mg_mp_peek(const mg_mp_reader *r)
{
    header h;
    return decode_header(r, &h) == MG_OK ? h.type : 0;
}

static int read_typed(mg_mp_reader *r, int type, header *h)
{
    if (decode_header(r, h) != MG_OK || h->type != type)
        return MG_ECORRUPT;
    r->pos += h->head;
    return MG_OK;
}

int mg_mp_read_nil(mg_mp_reader *r)
{
    header h;
    return read_typed(r, MG_MP_NIL, &h);
}

int mg_mp_read_bool(mg_mp_reader *r, bool *v)
{
    header h;
    if (read_typed(r, MG_MP_BOOL, &h))
        return MG_ECORRUPT;
    *v = h.u != 0;
    return MG_OK;
}

int mg_mp_read_u64(mg_mp_reader *r, uint64_t *v)
{
    header h;
    if (read_typed(r, MG_MP_UINT, &h))
        return MG_ECORRUPT;
    *v = h.u;
    return MG_OK;
}

int mg_mp_read_u32(mg_mp_reader *r, uint32_t *v)
{
    header h;
    if (decode_header(r, &h) || h.type != MG_MP_UINT || h.u > UINT32_MAX)
        return MG_ECORRUPT;
    r->pos += h.head;
    *v = (uint32_t)h.u;
    return MG_OK;
}

int mg_mp_read_i64(mg_mp_reader *r, int64_t *v)
{
    header h;
    if (decode_header(r, &h))
        return MG_ECORRUPT;
    if (h.type == MG_MP_UINT && h.u <= INT64_MAX)
        *v = (int64_t)h.u;
    else if (h.type == MG_MP_INT)
        *v = h.i;
    else
        return MG_ECORRUPT;
    r->pos += h.head;
    return MG_OK;
}

int mg_mp_read_double(mg_mp_reader *r, double *v)
{
    header h;
    if (decode_header(r, &h))
        return MG_ECORRUPT;
    if (h.type == MG_MP_FLOAT)
        *v = h.d;
    else if (h.type == MG_MP_UINT)
        *v = (double)h.u;
    else if (h.type == MG_MP_INT)
        *v = (double)h.i;
    else
        return MG_ECORRUPT;
    r->pos += h.head;
    return MG_OK;
}

int mg_mp_read_str(mg_mp_reader *r, const char **s, uint32_t *len)
{
    header h;
    if (decode_header(r, &h) || h.type != MG_MP_STR)
        return MG_ECORRUPT;
    *s = (const char *)r->pos + h.head;
    *len = (uint32_t)h.len;
    r->pos += h.head + h.len;
    return MG_OK;
}

int mg_mp_read_strcpy(mg_mp_reader *r, char *buf, size_t cap)
{
    mg_mp_reader save = *r;
    const char *s;
    uint32_t len;
    if (mg_mp_read_str(r, &s, &len))
        return MG_ECORRUPT;
    if ((size_t)len + 1 > cap) {
        *r = save;
        return MG_ECORRUPT;
    }
    memcpy(buf, s, len);
    buf[len] = '\0';
    return MG_OK;
}

int mg_mp_read_strdup(mg_mp_reader *r, char **out, uint32_t *lenp)
{
    mg_mp_reader save = *r;
    const char *s;
    uint32_t len;
    if (mg_mp_read_str(r, &s, &len))
        return MG_ECORRUPT;
    char *copy = malloc((size_t)len + 1);
    if (copy == NULL) {
        *r = save;
        return MG_ENOMEM;
    }
    memcpy(copy, s, len);
    copy[len] = '\0';
    *out = copy;
    if (lenp)
        *lenp = len;
    return MG_OK;
}

int mg_mp_read_bin(mg_mp_reader *r, const uint8_t **b, uint32_t *len)
{
    header h;
    if (decode_header(r, &h) || h.type != MG_MP_BIN)
        return MG_ECORRUPT;
    *b = r->pos + h.head;
    *len = (uint32_t)h.len;
    r->pos += h.head + h.len;
    return MG_OK;
}

int mg_mp_read_array(mg_mp_reader *r, uint32_t *count)
{
    header h;
    if (read_typed(r, MG_MP_ARRAY, &h))
        return MG_ECORRUPT;
    *count = (uint32_t)h.len;
    return MG_OK;
}

int mg_mp_read_map(mg_mp_reader *r, uint32_t *count)
{
    header h;
    if (read_typed(r, MG_MP_MAP, &h))
        return MG_ECORRUPT;
    *count = (uint32_t)h.len;
    return MG_OK;
}

static int skip_depth(mg_mp_reader *r, int depth)
{
    header h;
    if (depth > MG_MP_MAX_DEPTH || decode_header(r, &h))
        return MG_ECORRUPT;
    const uint8_t *start = r->pos;
    r->pos += h.head;
    switch (h.type) {
    case MG_MP_STR: case MG_MP_BIN:
        r->pos += h.len;
        break;
    case MG_MP_EXT: /* the type byte is part of the header */
        r->pos += h.len;
        break;
    case MG_MP_ARRAY: case MG_MP_MAP: {
        uint64_t n = h.type == MG_MP_MAP ? h.len * 2 : h.len;
        for (uint64_t k = 0; k < n; k++) {
            if (skip_depth(r, depth + 1)) {
                r->pos = start;
                return MG_ECORRUPT;
            }
        }
        break;
    }
    default:
        break;
    }
    return MG_OK;
}

int mg_mp_skip(mg_mp_reader *r)
{
    return skip_depth(r, 0);
}

bool mg_mp_peek_str_eq(const mg_mp_reader *r, const char *s)
{
    mg_mp_reader tmp = *r;
    const char *v;
    uint32_t len;
    if (mg_mp_read_str(&tmp, &v, &len))
        return false;
    return strlen(s) == len && memcmp(v, s, len) == 0;
}

int mg_mp_pack_strn(msgpack_packer *pk, const char *s, size_t len)
{
    if (msgpack_pack_str(pk, len) != 0)
        return MG_ENOMEM;
    return msgpack_pack_str_body(pk, s, len) == 0 ? MG_OK : MG_ENOMEM;
}

int mg_mp_pack_cstr(msgpack_packer *pk, const char *s)
{
    if (s == NULL)
        return msgpack_pack_nil(pk) == 0 ? MG_OK : MG_ENOMEM;
    return mg_mp_pack_strn(pk, s, strlen(s));
}

int mg_mp_pack_binn(msgpack_packer *pk, const void *b, size_t len)
{
    if (msgpack_pack_bin(pk, len) != 0)
        return MG_ENOMEM;
    return msgpack_pack_bin_body(pk, b, len) == 0 ? MG_OK : MG_ENOMEM;
}
