/*
 * Cluster records in a group's store (meta.h): the map of the meta group and
 * the slot record of a data group, both in the store's "sys" table.
 */
#include "meta.h"

#include "../lib/mp.h"

#include <stdlib.h>
#include <string.h>

int mg_meta_read_map(mg_store *s, mg_cmap *out, void **raw, size_t *raw_len, mg_error *err)
{
    void *val = NULL;
    size_t len = 0;
    if (raw != NULL)
        *raw = NULL;
    if (raw_len != NULL)
        *raw_len = 0;
    int rc = mg_store_sys_get(s, MG_META_KEY_MAP, &val, &len, err);
    if (rc != MG_OK) {
        mg_cmap_init(out);
        return rc == MG_ENOTFOUND ? mg_error_set(err, MG_ENOTFOUND, "no cluster map stored yet")
                                  : rc;
    }
    rc = mg_cmap_decode(val, len, out, err);
    if (rc != MG_OK) {
        free(val);
        /* Whatever the reason, a stored map that does not read is damage. */
        return mg_error_wrap(err, rc == MG_ENOMEM ? rc : MG_ECORRUPT, "stored cluster map");
    }
    if (raw != NULL) {
        *raw = val;
        if (raw_len != NULL)
            *raw_len = len;
    } else {
        free(val);
    }
    return MG_OK;
}

int mg_meta_read_slots(mg_store *s, mg_slot_record *out, mg_error *err)
{
    void *val = NULL;
    size_t len = 0;
    memset(out, 0, sizeof *out);
    int rc = mg_store_sys_get(s, MG_META_KEY_SLOTS, &val, &len, err);
    if (rc != MG_OK)
        return rc == MG_ENOTFOUND ? mg_error_set(err, MG_ENOTFOUND, "no slot record") : rc;
    rc = mg_slot_record_decode(val, len, out, err);
    free(val);
    return rc;
}

void mg_slotset_to_le(const mg_slotset *s, uint8_t out[512])
{
    for (size_t w = 0; w < MG_SLOTS / 64; w++)
        for (size_t b = 0; b < 8; b++)
            out[w * 8 + b] = (uint8_t)(s->w[w] >> (8 * b));
}

void mg_slotset_from_le(const uint8_t in[512], mg_slotset *out)
{
    for (size_t w = 0; w < MG_SLOTS / 64; w++) {
        uint64_t v = 0;
        for (size_t b = 8; b-- > 0;)
            v = (v << 8) | in[w * 8 + b];
        out->w[w] = v;
    }
}

/* {"epoch": uint64 (0xcf, fixed width), "slots": bin 16 (512 bytes)}: 537
 * bytes, always the same layout. */
size_t mg_slot_record_encode(const mg_slot_record *r, uint8_t *buf)
{
    size_t i = 0;
    buf[i++] = 0x82; /* fixmap, 2 entries */
    buf[i++] = 0xa5;
    memcpy(buf + i, "epoch", 5);
    i += 5;
    buf[i++] = 0xcf;
    for (int b = 7; b >= 0; b--)
        buf[i++] = (uint8_t)(r->epoch >> (8 * b));
    buf[i++] = 0xa5;
    memcpy(buf + i, "slots", 5);
    i += 5;
    buf[i++] = 0xc5; /* bin 16 */
    buf[i++] = 0x02;
    buf[i++] = 0x00;
    mg_slotset_to_le(&r->owned, buf + i);
    i += 512;
    return i;
}

int mg_slot_record_decode(const void *buf, size_t len, mg_slot_record *out, mg_error *err)
{
    mg_mp_reader r;
    uint32_t n;
    bool have_epoch = false, have_slots = false;
    memset(out, 0, sizeof *out);
    mg_mp_reader_init(&r, buf, len);
    if (mg_mp_read_map(&r, &n) != MG_OK)
        goto corrupt;
    for (uint32_t i = 0; i < n; i++) {
        if (mg_mp_peek_str_eq(&r, "epoch")) {
            (void)mg_mp_skip(&r);
            if (mg_mp_read_u64(&r, &out->epoch) != MG_OK)
                goto corrupt;
            have_epoch = true;
        } else if (mg_mp_peek_str_eq(&r, "slots")) {
            const uint8_t *b;
            uint32_t blen;
            (void)mg_mp_skip(&r);
            if (mg_mp_read_bin(&r, &b, &blen) != MG_OK || blen != 512)
                goto corrupt;
            mg_slotset_from_le(b, &out->owned);
            have_slots = true;
        } else if (mg_mp_peek(&r) != MG_MP_STR || mg_mp_skip(&r) != MG_OK ||
                   mg_mp_skip(&r) != MG_OK) {
            goto corrupt;
        }
    }
    if (!have_epoch || !have_slots || mg_mp_remaining(&r) != 0)
        goto corrupt;
    return MG_OK;

corrupt:
    memset(out, 0, sizeof *out);
    return mg_error_set(err, MG_ECORRUPT, "slot record: malformed (%zu bytes)", len);
}
