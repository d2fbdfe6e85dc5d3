/*
 * mg_store_record_check: an encoded memory record checked without decoding
 * it, for puts that arrive already encoded (MG_STORE_MEM_PUT_ENCODED).
 */
#include "store_internal.h"

#include "../lib/mp.h"
#include "../lib/utf8.h"

#include <math.h>
#include <string.h>

/* mg_store_record_check accepts exactly the records mg_item_decode accepts,
 * without building them: the metadata walk below mirrors mg_jsonmp_read, the
 * field rules mirror mg_item_validate (storage/item.c). Keep them in step;
 * tests/unit/store_encoded_test.c compares the two on valid and invalid
 * records. */

/* UTF-8 as jansson takes it for strings and keys: mg_utf8_valid's rules,
 * except that NUL is a character. */
static bool json_text_ok(const char *s, size_t len)
{
    while (len > 0) {
        const char *nul = memchr(s, '\0', len);
        size_t seg = nul != NULL ? (size_t)(nul - s) : len;
        if (!mg_utf8_valid(s, seg))
            return false;
        if (nul == NULL)
            break;
        s += seg + 1;
        len -= seg + 1;
    }
    return true;
}

/* One element as mg_jsonmp_read reads it; MG_ECORRUPT where it would fail. */
static int json_walk(mg_mp_reader *r, int depth)
{
    if (depth > MG_MP_MAX_DEPTH)
        return MG_ECORRUPT;
    const char *str;
    uint32_t n;
    switch (mg_mp_peek(r)) {
    case MG_MP_NIL:
        return mg_mp_read_nil(r);
    case MG_MP_BOOL: {
        bool v;
        return mg_mp_read_bool(r, &v);
    }
    case MG_MP_UINT:
    case MG_MP_INT: {
        int64_t v;
        return mg_mp_read_i64(r, &v); /* a uint above INT64_MAX fails */
    }
    case MG_MP_FLOAT: {
        double v;
        if (mg_mp_read_double(r, &v) || !isfinite(v))
            return MG_ECORRUPT;
        return MG_OK;
    }
    case MG_MP_STR:
        if (mg_mp_read_str(r, &str, &n) || !json_text_ok(str, n))
            return MG_ECORRUPT;
        return MG_OK;
    case MG_MP_ARRAY:
        if (mg_mp_read_array(r, &n))
            return MG_ECORRUPT;
        for (uint32_t i = 0; i < n; i++)
            if (json_walk(r, depth + 1))
                return MG_ECORRUPT;
        return MG_OK;
    case MG_MP_MAP:
        if (mg_mp_read_map(r, &n))
            return MG_ECORRUPT;
        for (uint32_t i = 0; i < n; i++) {
            uint32_t klen;
            if (mg_mp_read_str(r, &str, &klen) || !json_text_ok(str, klen) ||
                json_walk(r, depth + 1))
                return MG_ECORRUPT;
        }
        return MG_OK;
    default: /* bin, ext, reserved, end of input */
        return MG_ECORRUPT;
    }
}

/* The MemOS metadata fields whose type is fixed (item.c's typed_fields); nil
 * is accepted for each. */
enum md_type { MD_STRING, MD_LIST, MD_OBJECT, MD_NUMBER };
#define MD_FIELD(name, type, word)                                                                 \
    {                                                                                              \
        name, sizeof name - 1, type, word                                                          \
    }
static const struct {
    const char *key;
    uint32_t len;
    int type;
    const char *word;
} md_fields[] = {
    MD_FIELD("user_id", MD_STRING, "a string"),     MD_FIELD("session_id", MD_STRING, "a string"),
    MD_FIELD("status", MD_STRING, "a string"),      MD_FIELD("type", MD_STRING, "a string"),
    MD_FIELD("memory_type", MD_STRING, "a string"), MD_FIELD("key", MD_STRING, "a string"),
    MD_FIELD("source", MD_STRING, "a string"),      MD_FIELD("visibility", MD_STRING, "a string"),
    MD_FIELD("created_at", MD_STRING, "a string"),  MD_FIELD("updated_at", MD_STRING, "a string"),
    MD_FIELD("background", MD_STRING, "a string"),  MD_FIELD("tags", MD_LIST, "a list"),
    MD_FIELD("confidence", MD_NUMBER, "a number"),  MD_FIELD("info", MD_OBJECT, "an object"),
    MD_FIELD("sources", MD_LIST, "a list"),         MD_FIELD("usage", MD_LIST, "a list"),
};
#undef MD_FIELD
#define MD_FIELDS (sizeof md_fields / sizeof md_fields[0])
#define MD_TAGS 11 /* index of "tags" in md_fields */

static bool md_type_ok(int type, int mp)
{
    switch (type) {
    case MD_STRING:
        return mp == MG_MP_STR;
    case MD_LIST:
        return mp == MG_MP_ARRAY;
    case MD_OBJECT:
        return mp == MG_MP_MAP;
    default:
        return mp == MG_MP_UINT || mp == MG_MP_INT || mp == MG_MP_FLOAT;
    }
}

/* What the rules need to know of a metadata value, gathered while reading it. */
struct md_seen {
    bool present, is_map, embedding;
    mg_mp_reader last[MD_FIELDS]; /* a typed field's last value (pos NULL: absent) */
};

/* Reads the metadata value at *r as mg_jsonmp_read would (MG_ECORRUPT where
 * it fails), noting what md_rules needs. */
static int md_read(mg_mp_reader *r, struct md_seen *md)
{
    uint32_t n;
    md->present = true;
    if (mg_mp_peek(r) != MG_MP_MAP)
        return json_walk(r, 0);
    md->is_map = true;
    (void)mg_mp_read_map(r, &n);
    for (uint32_t i = 0; i < n; i++) {
        const char *key;
        uint32_t klen;
        if (mg_mp_read_str(r, &key, &klen) || !json_text_ok(key, klen))
            return MG_ECORRUPT;
        for (size_t f = 0; f < MD_FIELDS; f++)
            if (md_fields[f].len == klen && memcmp(md_fields[f].key, key, klen) == 0)
                md->last[f] = *r;
        if (klen == 9 && memcmp(key, "embedding", 9) == 0)
            md->embedding = true;
        if (json_walk(r, 1))
            return MG_ECORRUPT;
    }
    return MG_OK;
}

/* check_metadata's rules on a metadata value md_read accepted. As in a JSON
 * object, a key given twice counts by its last value. */
static int md_rules(const struct md_seen *md, mg_error *err)
{
    if (!md->is_map)
        return mg_error_set(err, MG_EINVAL, "metadata must be an object");
    for (size_t f = 0; f < MD_FIELDS; f++) {
        int type = md->last[f].pos != NULL ? mg_mp_peek(&md->last[f]) : MG_MP_NIL;
        if (type != MG_MP_NIL && !md_type_ok(md_fields[f].type, type))
            return mg_error_set(err, MG_EINVAL, "metadata.%s must be %s", md_fields[f].key,
                                md_fields[f].word);
    }
    if (md->last[MD_TAGS].pos != NULL && mg_mp_peek(&md->last[MD_TAGS]) == MG_MP_ARRAY) {
        mg_mp_reader t = md->last[MD_TAGS];
        uint32_t n;
        (void)mg_mp_read_array(&t, &n);
        for (uint32_t i = 0; i < n; i++) {
            if (mg_mp_peek(&t) != MG_MP_STR)
                return mg_error_set(err, MG_EINVAL, "metadata.tags[%u] must be a string", i);
            (void)mg_mp_skip(&t);
        }
    }
    if (md->embedding)
        return mg_error_set(err, MG_EINVAL, "metadata.embedding is stored beside the item");
    return MG_OK;
}

int mg_store_record_check(const void *rec, size_t len, const uint8_t **id, mg_error *err)
{
    mg_mp_reader r;
    uint32_t n;
    const uint8_t *the_id = NULL;
    const char *text = NULL;
    uint32_t text_len = 0;
    const uint8_t *md = NULL, *md_end = NULL;
    struct md_seen seen = {0};
    if (rec == NULL)
        return mg_error_set(err, MG_ECORRUPT, "memory record is not a map");
    mg_mp_reader_init(&r, rec, len);
    if (mg_mp_read_map(&r, &n))
        return mg_error_set(err, MG_ECORRUPT, "memory record is not a map");
    for (uint32_t i = 0; i < n; i++) {
        const char *key;
        uint32_t klen;
        int rc;
        if (mg_mp_read_str(&r, &key, &klen))
            return mg_error_set(err, MG_ECORRUPT, "memory record is malformed");
#define KEY(s) (klen == sizeof(s) - 1 && memcmp(key, s, klen) == 0)
        if (KEY("v")) {
            uint32_t v;
            if (mg_mp_read_u32(&r, &v))
                return mg_error_set(err, MG_ECORRUPT, "memory record: version is not an integer");
            if (v == 0 || v > MG_ITEM_VERSION)
                return mg_error_set(err, MG_EVERSION,
                                    "memory record version %u (this build reads up to %u)", v,
                                    MG_ITEM_VERSION);
            rc = MG_OK;
        } else if (KEY("id")) {
            uint32_t idlen;
            rc = mg_mp_read_bin(&r, &the_id, &idlen);
            if (rc == MG_OK && idlen != 16)
                rc = MG_ECORRUPT;
        } else if (KEY("memory") && text == NULL) {
            rc = mg_mp_read_str(&r, &text, &text_len);
        } else if (KEY("metadata") && md == NULL) {
            md = r.pos;
            rc = md_read(&r, &seen);
            md_end = r.pos;
        } else {
            rc = mg_mp_skip(&r);
        }
#undef KEY
        if (rc)
            return mg_error_set(err, MG_ECORRUPT, "memory record is malformed");
    }
    if (the_id == NULL || text == NULL || mg_mp_remaining(&r) != 0)
        return mg_error_set(err, MG_ECORRUPT, "memory record is malformed");
    /* mg_item_validate's checks, in its order */
    if (text_len > MG_MEMORY_TEXT_MAX)
        return mg_error_set(err, MG_ETOOBIG, "memory text is %u bytes, the limit is %d", text_len,
                            MG_MEMORY_TEXT_MAX);
    if (!mg_utf8_valid(text, text_len))
        return mg_error_set(err, MG_EINVAL, "memory text is not valid UTF-8");
    if (md != NULL) {
        int rc = md_rules(&seen, err);
        if (rc)
            return rc;
        if ((size_t)(md_end - md) > MG_METADATA_MAX)
            return mg_error_set(err, MG_ETOOBIG, "metadata is %zu bytes encoded, the limit is %d",
                                (size_t)(md_end - md), MG_METADATA_MAX);
    }
    if (id != NULL)
        *id = the_id;
    return MG_OK;
}
