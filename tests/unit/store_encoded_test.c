/* storage/store: MG_STORE_MEM_PUT_ENCODED (a memory given as its encoded
 * record and raw little-endian vector) and mg_store_record_check.
 *
 * The encoded put must leave exactly what MEM_PUT leaves (same records, same
 * digest, same index) with the same per-op outcomes; the record check must
 * accept exactly what mg_item_decode accepts, with the same codes. */
#include "store_test_util.h"

#include "lib/jsonmp.h"
#include "lib/mp.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers ------------------------------------------------------------ */

/* The record of an item as the command codec carries it (malloc'd). */
static void record_of(const mg_item *it, char **buf, size_t *len)
{
    assert_int_equal(mg_item_encode(it, buf, len), MG_OK);
}

/* An encoded put of mems[0..n) (vectors copied at an odd offset, so that
 * they are unaligned as they are inside a command). Returns the batch code;
 * per-op results go to res. */
static int put_encoded(mg_store *s, uint64_t index, const char *cube, const mem *mems, size_t n,
                       bool with_vec, int *res, mg_error *err)
{
    mg_store_op *ops = calloc(n, sizeof *ops);
    char **recs = calloc(n, sizeof *recs);
    uint8_t *raw = malloc(n * sizeof mems[0].vec + 1);
    for (size_t i = 0; i < n; i++) {
        mg_item it;
        item_make(&it, &mems[i]);
        size_t len;
        record_of(&it, &recs[i], &len);
        mg_item_clear(&it);
        uint8_t *v = raw + 1 + i * sizeof mems[0].vec;
        memcpy(v, mems[i].vec, sizeof mems[i].vec);
        ops[i] = (mg_store_op){.kind = MG_STORE_MEM_PUT_ENCODED,
                               .cube_id = cube,
                               .record = recs[i],
                               .record_len = len,
                               .vec_le = with_vec ? v : NULL,
                               .dim = DIM};
    }
    int rc = mg_store_apply(s, index, ops, n, res, NULL, NULL, err);
    for (size_t i = 0; i < n; i++)
        free(recs[i]);
    free(recs), free(raw), free(ops);
    return rc;
}

static void put_encoded_ok(mg_store *s, uint64_t index, const char *cube, const mem *mems, size_t n,
                           bool with_vec)
{
    int *res = calloc(n, sizeof *res);
    mg_error err = {0};
    int rc = put_encoded(s, index, cube, mems, n, with_vec, res, &err);
    if (rc)
        print_error("apply: %s\n", err.msg);
    assert_int_equal(rc, MG_OK);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(res[i], MG_OK);
    free(res);
}

/* One encoded op over a hand-made record; returns its per-op result. */
static int put_record(mg_store *s, const char *cube, const void *rec, size_t len, const float *vec,
                      uint32_t dim, int flags, const uint8_t *mem_id)
{
    mg_store_op op = {.kind = MG_STORE_MEM_PUT_ENCODED,
                      .flags = flags,
                      .cube_id = cube,
                      .record = rec,
                      .record_len = len,
                      .vec_le = vec,
                      .dim = dim,
                      .mem_id = mem_id};
    return apply1(s, &op);
}

/* ---- encoded puts leave what decoded puts leave -------------------------- */

static void test_same_as_decoded(void **state)
{
    (void)state;
    char *d1 = tmpdir_new(), *d2 = tmpdir_new();
    mg_store *a = store_open(d1, NULL), *b = store_open(d2, NULL);
    enum { N = 300 };
    mem *m = calloc(N, sizeof *m);
    for (uint32_t i = 0; i < N; i++)
        mem_make(&m[i], i);
    put_cube(a, "c", 0); /* dimension fixed by the first vector */
    put_cube(b, "c", 0);
    put_cube(a, "other", DIM);
    put_cube(b, "other", DIM);
    assert_int_equal(put_mems(a, 10, "c", m, N - 50, true, NULL), MG_OK);
    put_encoded_ok(b, 10, "c", m, N - 50, true);
    /* memories without vectors, and replacements with and without one */
    assert_int_equal(put_mems(a, 11, "c", m + N - 50, 50, false, NULL), MG_OK);
    put_encoded_ok(b, 11, "c", m + N - 50, 50, false);
    assert_int_equal(put_mems(a, 12, "c", m, 20, false, NULL), MG_OK);
    put_encoded_ok(b, 12, "c", m, 20, false);
    assert_int_equal(put_mems(a, 13, "c", m + N - 10, 10, true, NULL), MG_OK);
    put_encoded_ok(b, 13, "c", m + N - 10, 10, true);

    assert_int_equal(mg_store_applied(b), 13);
    assert_true(digest(a) == digest(b));
    assert_int_equal(count(b, "c"), N);
    mg_cube c = {0};
    assert_int_equal(mg_store_cube_get(b, "c", &c, NULL), MG_OK);
    assert_int_equal(c.dim, DIM);
    mg_cube_clear(&c);

    mg_item it = {0};
    float *vec;
    uint32_t dim;
    assert_int_equal(mg_store_mem_get(b, "c", m[100].id, &it, &vec, &dim, NULL), MG_OK);
    assert_string_equal(it.memory, "memory number 100");
    assert_int_equal(json_integer_value(json_object_get(it.metadata, "rank")), 100);
    assert_int_equal(dim, DIM);
    assert_memory_equal(vec, m[100].vec, sizeof m[100].vec);
    free(vec);
    mg_item_clear(&it);
    assert_int_equal(mg_store_mem_get(b, "c", m[5].id, &it, &vec, &dim, NULL), MG_OK);
    assert_null(vec); /* replaced without a vector */
    mg_item_clear(&it);

    /* the index holds the same vectors in both */
    for (uint32_t q = 0; q < N; q += 37) {
        uint8_t ia[16 * 8], ib[16 * 8];
        size_t na, nb;
        search_ids(a, "c", m[q].vec, 8, ia, &na);
        search_ids(b, "c", m[q].vec, 8, ib, &nb);
        assert_int_equal(na, nb);
        assert_memory_equal(ia, ib, 16 * na);
    }

    /* a reopened store rebuilds the same index from what was written */
    mg_store_close(b);
    b = store_open(d2, NULL);
    uint8_t ia[16 * 8], ib[16 * 8];
    size_t na, nb;
    search_ids(a, "c", m[200].vec, 8, ia, &na);
    search_ids(b, "c", m[200].vec, 8, ib, &nb);
    assert_int_equal(na, nb);
    assert_memory_equal(ia, ib, 16 * na);
    assert_true(digest(a) == digest(b));

    free(m);
    mg_store_close(a);
    mg_store_close(b);
    tmpdir_free(d1);
    tmpdir_free(d2);
}

/* ---- per-op outcomes ----------------------------------------------------- */

static void test_per_op_errors(void **state)
{
    (void)state;
    char *dir = tmpdir_new();
    mg_store *s = store_open(dir, NULL);
    put_cube(s, "c", DIM);
    put_cube(s, "d", DIM);
    mem m[3];
    for (uint32_t i = 0; i < 3; i++)
        mem_make(&m[i], i);
    mg_item it;
    item_make(&it, &m[0]);
    char *rec;
    size_t len;
    record_of(&it, &rec, &len);
    mg_item_clear(&it);
    uint64_t before = digest(s);

    assert_int_equal(put_record(s, "nocube", rec, len, m[0].vec, DIM, 0, NULL), MG_ENOTFOUND);
    assert_int_equal(put_record(s, "bad cube!", rec, len, m[0].vec, DIM, 0, NULL), MG_EINVAL);
    assert_int_equal(put_record(s, "c", NULL, 0, m[0].vec, DIM, 0, NULL), MG_EINVAL);
    assert_int_equal(put_record(s, "c", rec, len, m[0].vec, DIM - 1, 0, NULL), MG_EDIM);
    assert_int_equal(put_record(s, "c", rec, len, m[0].vec, 0, 0, NULL), MG_EDIM);
    assert_int_equal(put_record(s, "c", rec, len, m[0].vec, MG_DIM_MAX + 1, 0, NULL), MG_EDIM);
    float bad[DIM];
    memcpy(bad, m[0].vec, sizeof bad);
    bad[3] = NAN;
    assert_int_equal(put_record(s, "c", rec, len, bad, DIM, 0, NULL), MG_ENAN);
    bad[3] = INFINITY;
    assert_int_equal(put_record(s, "c", rec, len, bad, DIM, 0, NULL), MG_ENAN);
    float zero[DIM] = {0};
    zero[1] = -0.0f;
    assert_int_equal(put_record(s, "c", rec, len, zero, DIM, 0, NULL), MG_EINVAL);
    assert_int_equal(put_record(s, "c", rec, len, m[0].vec, DIM, 0, m[1].id), MG_EINVAL);
    assert_int_equal(put_record(s, "c", rec, len - 1, m[0].vec, DIM, 0, NULL), MG_ECORRUPT);
    assert_int_equal(put_record(s, "c", rec, len, m[0].vec, DIM, MG_STORE_UPDATE_ONLY, NULL),
                     MG_ENOTFOUND);
    assert_true(digest(s) == before); /* nothing written by a failed op */
    assert_int_equal(count(s, "c"), 0);

    assert_int_equal(put_record(s, "c", rec, len, m[0].vec, DIM, MG_STORE_CREATE_ONLY, m[0].id),
                     MG_OK);
    assert_int_equal(put_record(s, "c", rec, len, m[0].vec, DIM, MG_STORE_CREATE_ONLY, NULL),
                     MG_EEXIST);
    assert_int_equal(put_record(s, "c", rec, len, NULL, 0, MG_STORE_UPDATE_ONLY, NULL), MG_OK);
    /* ids are global: another cube may not take it */
    assert_int_equal(put_record(s, "d", rec, len, m[0].vec, DIM, 0, NULL), MG_EEXIST);
    assert_int_equal(count(s, "c"), 1);
    assert_int_equal(count(s, "d"), 0);

    /* in one batch a failed op changes nothing and the others apply */
    int res[3];
    mg_error err = {0};
    mem two[3] = {m[1], m[2], m[2]};
    two[2].vec[0] = NAN;
    assert_int_equal(put_encoded(s, 0, "c", two, 3, true, res, &err), MG_OK);
    assert_int_equal(res[0], MG_OK);
    assert_int_equal(res[1], MG_OK);
    assert_int_equal(res[2], MG_ENAN);
    assert_int_equal(count(s, "c"), 3);
    float *vec;
    uint32_t dim;
    assert_int_equal(mg_store_mem_get(s, "c", m[2].id, &it, &vec, &dim, NULL), MG_OK);
    assert_memory_equal(vec, m[2].vec, sizeof m[2].vec); /* the failed op's vector is not in */
    free(vec);
    mg_item_clear(&it);
    uint8_t ids[16 * 4];
    size_t nh;
    search_ids(s, "c", m[2].vec, 1, ids, &nh);
    assert_int_equal(nh, 1);
    assert_memory_equal(ids, m[2].id, 16);

    free(rec);
    mg_store_close(s);
    tmpdir_free(dir);
}

/* Map growth retries a whole batch: the vectors kept for the index must still
 * be the right ones after the retry. */
static void test_map_growth(void **state)
{
    (void)state;
    char *dir = tmpdir_new();
    mg_store_options o = {.sync = MG_STORE_SYNC_NONE, .map_size = 1 << 20};
    mg_store *s = store_open(dir, &o);
    put_cube(s, "c", DIM);
    enum { N = 4000 };
    mem *m = calloc(N, sizeof *m);
    for (uint32_t i = 0; i < N; i++)
        mem_make(&m[i], i);
    put_encoded_ok(s, 1, "c", m, N, true);
    assert_int_equal(count(s, "c"), N);
    for (uint32_t q = 0; q < N; q += 397) {
        uint8_t ids[16];
        size_t nh;
        search_ids(s, "c", m[q].vec, 1, ids, &nh);
        assert_int_equal(nh, 1);
        assert_memory_equal(ids, m[q].id, 16);
    }
    free(m);
    mg_store_close(s);
    tmpdir_free(dir);
}

/* ---- mg_store_record_check agrees with mg_item_decode ------------------- */

typedef struct rec_buf {
    msgpack_sbuffer sb;
    msgpack_packer pk;
} rec_buf;

static void rb_init(rec_buf *b)
{
    msgpack_sbuffer_init(&b->sb);
    msgpack_packer_init(&b->pk, &b->sb, msgpack_sbuffer_write);
}

static void rb_str(rec_buf *b, const char *s)
{
    assert_int_equal(mg_mp_pack_strn(&b->pk, s, strlen(s)), MG_OK);
}

static void rb_strn(rec_buf *b, const char *s, size_t n)
{
    assert_int_equal(mg_mp_pack_strn(&b->pk, s, n), MG_OK);
}

static const uint8_t an_id[16] = {1, 2, 3, 4, 5, 6, 0x40, 8, 0x80, 10, 11, 12, 13, 14, 15, 16};

/* {"v":1,"id":..,"memory":text,"metadata":} — the caller packs the
 * metadata value next (or, with extra > 0, extra more key/value pairs). */
static void rb_head(rec_buf *b, const char *text, uint32_t extra)
{
    rb_init(b);
    msgpack_pack_map(&b->pk, 4 + extra);
    rb_str(b, "v");
    msgpack_pack_uint32(&b->pk, 1);
    rb_str(b, "id");
    mg_mp_pack_binn(&b->pk, an_id, 16);
    rb_str(b, "memory");
    rb_str(b, text);
    rb_str(b, "metadata");
}

static void check_agrees(const char *what, const void *rec, size_t len, int want)
{
    mg_item it;
    mg_error e1 = {0}, e2 = {0};
    int dec = mg_item_decode(rec, len, &it, &e1);
    if (dec == MG_OK)
        mg_item_clear(&it);
    const uint8_t *id = NULL;
    int chk = mg_store_record_check(rec, len, &id, &e2);
    if (dec != want || chk != want)
        print_error("%s: mg_item_decode %s (%s), mg_store_record_check %s (%s), want %s\n", what,
                    mg_errname(dec), e1.msg, mg_errname(chk), e2.msg, mg_errname(want));
    assert_int_equal(dec, want);
    assert_int_equal(chk, want);
    if (chk == MG_OK)
        assert_memory_equal(id, an_id, 16);
}

static void check_rb(const char *what, rec_buf *b, int want)
{
    check_agrees(what, b->sb.data, b->sb.size, want);
    msgpack_sbuffer_destroy(&b->sb);
}

/* A record whose metadata is the JSON text md (packed as the codec does). */
static void check_md_json(const char *md, int want)
{
    json_error_t je;
    json_t *j = json_loads(md, JSON_DECODE_ANY, &je);
    assert_non_null(j);
    rec_buf b;
    rb_head(&b, "some text", 0);
    assert_int_equal(mg_jsonmp_pack(&b.pk, j), MG_OK);
    json_decref(j);
    check_rb(md, &b, want);
}

static void test_record_check_agrees(void **state)
{
    (void)state;
    /* the codec's own records */
    mem m;
    mem_make(&m, 7);
    mg_item it;
    item_make(&it, &m);
    memcpy(it.id, an_id, 16);
    char *rec;
    size_t len;
    record_of(&it, &rec, &len);
    check_agrees("item_make", rec, len, MG_OK);
    for (size_t cut = 0; cut < len; cut++)
        check_agrees("truncated", rec, cut, MG_ECORRUPT);
    free(rec);
    mg_item_clear(&it);

    /* metadata: valid values of every kind, and each rule of validation */
    check_md_json("{}", MG_OK);
    check_md_json("{\"user_id\":\"u\",\"session_id\":null,\"status\":\"activated\","
                  "\"type\":\"fact\",\"memory_type\":\"LongTermMemory\",\"key\":\"k\","
                  "\"source\":\"conversation\",\"visibility\":\"private\","
                  "\"created_at\":\"2026\",\"updated_at\":\"2026\",\"background\":\"b\","
                  "\"tags\":[\"a\",\"b\"],\"confidence\":0.5,\"info\":{\"x\":[1,{}]},"
                  "\"sources\":[{\"a\":1}],\"usage\":[],\"custom\":{\"deep\":[true,false,null]},"
                  "\"n\":-5,\"big\":9223372036854775807,\"r\":1e300}",
                  MG_OK);
    check_md_json("{\"confidence\":3}", MG_OK);
    check_md_json("{\"tags\":null,\"info\":null}", MG_OK);
    static const char *const typed[] = {"user_id",     "session_id", "status",    "type",
                                        "memory_type", "key",        "source",    "visibility",
                                        "created_at",  "updated_at", "background"};
    for (size_t i = 0; i < sizeof typed / sizeof typed[0]; i++) {
        char md[128];
        snprintf(md, sizeof md, "{\"%s\":5}", typed[i]);
        check_md_json(md, MG_EINVAL);
        snprintf(md, sizeof md, "{\"%s\":[\"x\"]}", typed[i]);
        check_md_json(md, MG_EINVAL);
        snprintf(md, sizeof md, "{\"%s\":true}", typed[i]);
        check_md_json(md, MG_EINVAL);
    }
    check_md_json("{\"tags\":\"a\"}", MG_EINVAL);
    check_md_json("{\"tags\":[\"a\",1]}", MG_EINVAL);
    check_md_json("{\"sources\":{}}", MG_EINVAL);
    check_md_json("{\"usage\":\"x\"}", MG_EINVAL);
    check_md_json("{\"info\":[]}", MG_EINVAL);
    check_md_json("{\"confidence\":\"high\"}", MG_EINVAL);
    check_md_json("{\"confidence\":false}", MG_EINVAL);
    check_md_json("{\"embedding\":[0.1]}", MG_EINVAL);
    check_md_json("{\"embedding\":null}", MG_EINVAL);
    check_md_json("\"not an object\"", MG_EINVAL);
    check_md_json("null", MG_EINVAL);
    check_md_json("[1,2]", MG_EINVAL);

    rec_buf b;
    /* a key given twice counts by its last value, as in a JSON object */
    rb_head(&b, "t", 0);
    msgpack_pack_map(&b.pk, 2);
    rb_str(&b, "user_id");
    msgpack_pack_int(&b.pk, 1);
    rb_str(&b, "user_id");
    rb_str(&b, "u");
    check_rb("duplicate key, last valid", &b, MG_OK);
    rb_head(&b, "t", 0);
    msgpack_pack_map(&b.pk, 2);
    rb_str(&b, "user_id");
    rb_str(&b, "u");
    rb_str(&b, "user_id");
    msgpack_pack_int(&b.pk, 1);
    check_rb("duplicate key, last invalid", &b, MG_EINVAL);
    /* NUL is a character in a JSON string, not in the memory text */
    rb_head(&b, "t", 0);
    msgpack_pack_map(&b.pk, 1);
    rb_strn(&b, "k\0y", 3);
    rb_strn(&b, "a\0b", 3);
    check_rb("NUL in metadata", &b, MG_OK);
    rb_init(&b);
    msgpack_pack_map(&b.pk, 3);
    rb_str(&b, "id");
    mg_mp_pack_binn(&b.pk, an_id, 16);
    rb_str(&b, "memory");
    rb_strn(&b, "a\0b", 3);
    rb_str(&b, "metadata");
    msgpack_pack_map(&b.pk, 0);
    check_rb("NUL in text", &b, MG_EINVAL);
    /* malformed metadata values */
    rb_head(&b, "t", 0);
    msgpack_pack_map(&b.pk, 1);
    rb_str(&b, "k");
    mg_mp_pack_binn(&b.pk, "xy", 2);
    check_rb("bin in metadata", &b, MG_ECORRUPT);
    rb_head(&b, "t", 0);
    msgpack_pack_map(&b.pk, 1);
    rb_str(&b, "k");
    msgpack_pack_ext(&b.pk, 1, 1);
    msgpack_pack_ext_body(&b.pk, "x", 1);
    check_rb("ext in metadata", &b, MG_ECORRUPT);
    rb_head(&b, "t", 0);
    msgpack_pack_map(&b.pk, 1);
    rb_str(&b, "k");
    rb_str(&b, "\xff\xfe");
    check_rb("bad UTF-8 value", &b, MG_ECORRUPT);
    rb_head(&b, "t", 0);
    msgpack_pack_map(&b.pk, 1);
    rb_str(&b, "\xc0\x80");
    rb_str(&b, "v");
    check_rb("bad UTF-8 key", &b, MG_ECORRUPT);
    rb_head(&b, "t", 0);
    msgpack_pack_map(&b.pk, 1);
    msgpack_pack_int(&b.pk, 1);
    rb_str(&b, "v");
    check_rb("integer key", &b, MG_ECORRUPT);
    rb_head(&b, "t", 0);
    msgpack_pack_map(&b.pk, 1);
    rb_str(&b, "k");
    msgpack_pack_uint64(&b.pk, UINT64_MAX);
    check_rb("uint above INT64_MAX", &b, MG_ECORRUPT);
    rb_head(&b, "t", 0);
    msgpack_pack_map(&b.pk, 1);
    rb_str(&b, "k");
    msgpack_pack_double(&b.pk, NAN);
    check_rb("NaN", &b, MG_ECORRUPT);
    rb_head(&b, "t", 0);
    msgpack_pack_map(&b.pk, 1);
    rb_str(&b, "k");
    msgpack_pack_float(&b.pk, 1.5f);
    check_rb("float32", &b, MG_OK);
    for (int depth = MG_MP_MAX_DEPTH - 1; depth <= MG_MP_MAX_DEPTH + 1; depth++) {
        rb_head(&b, "t", 0);
        msgpack_pack_map(&b.pk, 1);
        rb_str(&b, "k");
        for (int i = 0; i < depth; i++)
            msgpack_pack_array(&b.pk, 1);
        msgpack_pack_nil(&b.pk);
        check_rb("deep", &b, depth + 1 <= MG_MP_MAX_DEPTH ? MG_OK : MG_ECORRUPT);
    }
    /* sizes */
    char *big = malloc(MG_METADATA_MAX + 16);
    memset(big, 'a', MG_METADATA_MAX + 16);
    rb_head(&b, "t", 0);
    msgpack_pack_map(&b.pk, 1);
    rb_str(&b, "k");
    rb_strn(&b, big, MG_METADATA_MAX - 10);
    check_rb("metadata at the limit", &b, MG_OK);
    rb_head(&b, "t", 0);
    msgpack_pack_map(&b.pk, 1);
    rb_str(&b, "k");
    rb_strn(&b, big, MG_METADATA_MAX);
    check_rb("metadata past the limit", &b, MG_ETOOBIG);
    big[MG_MEMORY_TEXT_MAX + 1] = '\0';
    rb_head(&b, big, 0);
    msgpack_pack_map(&b.pk, 0);
    check_rb("text past the limit", &b, MG_ETOOBIG);
    big[MG_MEMORY_TEXT_MAX] = '\0';
    rb_head(&b, big, 0);
    msgpack_pack_map(&b.pk, 0);
    check_rb("text at the limit", &b, MG_OK);
    free(big);
    rb_head(&b, "\xe2\x82", 0);
    msgpack_pack_map(&b.pk, 0);
    check_rb("text not UTF-8", &b, MG_EINVAL);

    /* the record's own fields */
    rb_init(&b);
    msgpack_pack_array(&b.pk, 0);
    check_rb("not a map", &b, MG_ECORRUPT);
    rb_init(&b);
    msgpack_pack_map(&b.pk, 1);
    rb_str(&b, "memory");
    rb_str(&b, "t");
    check_rb("no id", &b, MG_ECORRUPT);
    rb_init(&b);
    msgpack_pack_map(&b.pk, 1);
    rb_str(&b, "id");
    mg_mp_pack_binn(&b.pk, an_id, 16);
    check_rb("no text", &b, MG_ECORRUPT);
    rb_init(&b);
    msgpack_pack_map(&b.pk, 2);
    rb_str(&b, "id");
    mg_mp_pack_binn(&b.pk, an_id, 15);
    rb_str(&b, "memory");
    rb_str(&b, "t");
    check_rb("short id", &b, MG_ECORRUPT);
    rb_init(&b);
    msgpack_pack_map(&b.pk, 2);
    rb_str(&b, "id");
    rb_str(&b, "0123456789abcdef");
    rb_str(&b, "memory");
    rb_str(&b, "t");
    check_rb("id as str", &b, MG_ECORRUPT);
    rb_init(&b);
    msgpack_pack_map(&b.pk, 2);
    rb_str(&b, "id");
    mg_mp_pack_binn(&b.pk, an_id, 16);
    rb_str(&b, "memory");
    msgpack_pack_int(&b.pk, 3);
    check_rb("text as int", &b, MG_ECORRUPT);
    rb_init(&b);
    msgpack_pack_map(&b.pk, 2);
    msgpack_pack_int(&b.pk, 1);
    mg_mp_pack_binn(&b.pk, an_id, 16);
    check_rb("integer key", &b, MG_ECORRUPT);
    /* a second "memory" is skipped, whatever it holds; unknown keys too */
    rb_head(&b, "t", 2);
    msgpack_pack_map(&b.pk, 0);
    rb_str(&b, "memory");
    msgpack_pack_int(&b.pk, 3);
    rb_str(&b, "future_field");
    mg_mp_pack_binn(&b.pk, "xyz", 3);
    check_rb("extra keys", &b, MG_OK);
    /* versions */
    for (uint32_t v = 0; v <= 2; v++) {
        rb_init(&b);
        msgpack_pack_map(&b.pk, 3);
        rb_str(&b, "id");
        mg_mp_pack_binn(&b.pk, an_id, 16);
        rb_str(&b, "v");
        msgpack_pack_uint32(&b.pk, v);
        rb_str(&b, "memory");
        rb_str(&b, "t");
        check_rb("version", &b, v == 1 ? MG_OK : MG_EVERSION);
    }
    rb_init(&b);
    msgpack_pack_map(&b.pk, 3);
    rb_str(&b, "v");
    rb_str(&b, "1");
    rb_str(&b, "id");
    mg_mp_pack_binn(&b.pk, an_id, 16);
    rb_str(&b, "memory");
    rb_str(&b, "t");
    check_rb("version as str", &b, MG_ECORRUPT);
    /* trailing bytes */
    rb_head(&b, "t", 0);
    msgpack_pack_map(&b.pk, 0);
    msgpack_pack_nil(&b.pk);
    check_rb("trailing", &b, MG_ECORRUPT);
    check_agrees("empty", "", 0, MG_ECORRUPT);
}

/* mg_store_sync and mg_store_remove (the group's store guard uses them). */
static void test_sync_and_remove(void **state)
{
    (void)state;
    char *dir = tmpdir_new();
    mg_store *s = store_open(dir, NULL); /* MG_STORE_SYNC_NONE */
    put_cube(s, "c", DIM);
    mem m[4];
    for (uint32_t i = 0; i < 4; i++)
        mem_make(&m[i], i);
    put_encoded_ok(s, 7, "c", m, 4, true);
    mg_error err = {0};
    assert_int_equal(mg_store_sync(s, &err), MG_OK);
    uint64_t d = digest(s);
    mg_store_close(s);
    s = store_open(dir, NULL);
    assert_true(digest(s) == d);
    assert_int_equal(mg_store_applied(s), 7);
    mg_store_close(s);
    assert_int_equal(mg_store_remove(dir, &err), MG_OK);
    assert_int_equal(mg_store_remove(dir, &err), MG_OK); /* nothing left: fine */
    s = store_open(dir, NULL);
    assert_int_equal(mg_store_applied(s), 0);
    assert_int_equal(count(s, "c"), 0);
    mg_cube c = {0};
    assert_int_equal(mg_store_cube_get(s, "c", &c, &err), MG_ENOTFOUND);
    mg_store_close(s);
    tmpdir_free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_same_as_decoded), cmocka_unit_test(test_per_op_errors),
        cmocka_unit_test(test_map_growth),      cmocka_unit_test(test_record_check_agrees),
        cmocka_unit_test(test_sync_and_remove),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
