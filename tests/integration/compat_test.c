/*
 * MemOS compatibility: replays the exchanges of tests/fixtures/memos_compat
 * (MemOS-shaped requests and the answers MemOS gives) in order against a
 * fresh `memgrid serve` and compares every answer to the expected one key by
 * key (rules: compat_match.h, the fixture's README.md). Each difference is
 * printed with the exchange, the JSON path, and expected vs got. An exchange
 * marked "known_difference" is still sent and compared, but its differences
 * are printed, not failed; once it matches, the stale mark fails the test.
 *
 * MEMGRID_COMPAT_URL=http://host:port replays against that server instead
 * (a fresh one: the fixture's counts assume empty cubes), e.g. Python MemOS
 * side by side.
 */
#include "compat_match.h"
#include "serve_harness.h"

#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#ifndef MG_COMPAT_FIXTURE_DIR
#error "MG_COMPAT_FIXTURE_DIR must name tests/fixtures/memos_compat"
#endif

/* ---- the comparator on its own: it must be able to fail --------------------- */

typedef struct found {
    size_t n;
    char paths[16][160];
} found;

static void collect(void *ud, const char *path, const char *want, const char *got)
{
    found *f = ud;
    (void)want;
    (void)got;
    if (f->n < 16)
        snprintf(f->paths[f->n], sizeof f->paths[0], "%s", path);
    f->n++;
}

/* Matches two JSON texts and returns the number of differences; the paths
 * reported land in *f. */
static size_t match_texts(const char *want, const char *got, found *f)
{
    json_error_t e;
    json_t *w = json_loads(want, JSON_DECODE_ANY, &e);
    json_t *g = json_loads(got, JSON_DECODE_ANY, &e);
    assert_non_null(w);
    assert_non_null(g);
    memset(f, 0, sizeof *f);
    size_t n = compat_match(w, g, "$", collect, f);
    json_decref(w);
    json_decref(g);
    return n;
}

static void test_match_keys_and_types(void **state)
{
    (void)state;
    found f;
    assert_int_equal(match_texts("{\"a\":1,\"b\":[true,null]}", "{\"b\":[true,null],\"a\":1}", &f),
                     0);
    /* A missing and an extra key are both reported, where they are. */
    assert_int_equal(match_texts("{\"d\":{\"a\":1,\"b\":2}}", "{\"d\":{\"a\":1,\"c\":2}}", &f), 2);
    assert_string_equal(f.paths[0], "$.d.b");
    assert_string_equal(f.paths[1], "$.d.c");
    /* int and float are different types, as in Python. */
    assert_int_equal(match_texts("{\"code\":200}", "{\"code\":200.0}", &f), 1);
    assert_int_equal(match_texts("{\"r\":0.5}", "{\"r\":1}", &f), 1);
    assert_int_equal(match_texts("{\"r\":1.0}", "{\"r\":1.0}", &f), 0);
    assert_int_equal(match_texts("[1,2]", "[1,2,3]", &f), 1);
    assert_int_equal(match_texts("[\"x\"]", "[\"y\"]", &f), 1);
    assert_string_equal(f.paths[0], "$[0]");
    assert_int_equal(match_texts("null", "{}", &f), 1);
}

static void test_match_placeholders(void **state)
{
    (void)state;
    found f;
    assert_int_equal(match_texts("[\"<uuid>\",\"<timestamp>\",\"<timestamp>\",\"<ref_id>\","
                                 "\"<float>\",\"<int>\",\"<number>\",\"<any>\",\"<re:a+b>\"]",
                                 "[\"0dc8bcf9-3674-4138-b1e6-b30092fdbb75\","
                                 "\"2026-01-02T10:00:00.123456\",\"2026-01-02T10:00:00\","
                                 "\"[0dc8bcf9]\",0.5,3,3,null,\"aaab\"]",
                                 &f),
                     0);
    assert_int_equal(match_texts("[\"<uuid>\",\"<timestamp>\",\"<float>\",\"<int>\",\"<re:a+b>\","
                                 "\"<string>\"]",
                                 "[\"0DC8BCF9-3674-4138-B1E6-B30092FDBB75\","
                                 "\"2026-01-02T10:00:00Z\",1,1.5,\"xaab\",7]",
                                 &f),
                     6);
    /* "<...>" that names no placeholder is a plain string. */
    assert_int_equal(match_texts("\"<b>\"", "\"<b>\"", &f), 0);
}

static void test_match_each(void **state)
{
    (void)state;
    found f;
    const char *spec = "{\"$each\":{\"id\":\"<uuid>\"},\"$min\":2,\"$max\":3}";
    const char *one = "{\"id\":\"0dc8bcf9-3674-4138-b1e6-b30092fdbb75\"}";
    char got[512];
    snprintf(got, sizeof got, "[%s,%s]", one, one);
    assert_int_equal(match_texts(spec, got, &f), 0);
    snprintf(got, sizeof got, "[%s]", one);
    assert_int_equal(match_texts(spec, got, &f), 1);
    snprintf(got, sizeof got, "[%s,{\"id\":\"x\",\"more\":1}]", one);
    assert_int_equal(match_texts(spec, got, &f), 2);
    assert_string_equal(f.paths[0], "$[1].id");
    assert_string_equal(f.paths[1], "$[1].more");
    /* $head: the first ones exactly, the rest by shape. */
    assert_int_equal(match_texts("{\"$head\":[1],\"$each\":\"<int>\"}", "[1,5,6]", &f), 0);
    assert_int_equal(match_texts("{\"$head\":[1],\"$each\":\"<int>\"}", "[2,5]", &f), 1);
    assert_int_equal(match_texts("{\"$head\":[1],\"$each\":\"<int>\"}", "[]", &f), 1);
    assert_int_equal(match_texts("{\"$head\":[1]}", "[1,2]", &f), 1);
}

static void test_expand(void **state)
{
    (void)state;
    json_error_t e;
    json_t *shapes = json_loads("{\"item\":{\"id\":\"<uuid>\",\"memory\":\"<string>\","
                                "\"metadata\":{\"$like\":\"meta\"}},\"meta\":{\"a\":1,\"b\":2}}",
                                0, &e);
    json_t *refs = json_loads("{\"add\":{\"data\":[{\"memory_id\":\"0dc8bcf9-3674-4138-b1e6-"
                              "b30092fdbb75\"}]}}",
                              0, &e);
    json_t *tmpl = json_loads(
        "{\"x\":{\"$like\":\"item\",\"id\":\"$ref:add.data.0.memory_id\",\"memory\":\"$absent\","
        "\"ref\":\"$ref_id:add.data.0.memory_id\"},"
        "\"path\":\"/product/get_memory/{$ref:add.data.0.memory_id}\"}",
        0, &e);
    char err[256] = "";
    json_t *out = compat_expand(tmpl, shapes, refs, err, sizeof err);
    assert_non_null(out);
    json_t *want = json_loads(
        "{\"x\":{\"id\":\"0dc8bcf9-3674-4138-b1e6-b30092fdbb75\",\"metadata\":{\"a\":1,\"b\":2},"
        "\"ref\":\"[0dc8bcf9]\"},\"path\":\"/product/get_memory/"
        "0dc8bcf9-3674-4138-b1e6-b30092fdbb75\"}",
        0, &e);
    assert_true(json_equal(out, want));
    json_decref(want);
    json_decref(out);
    json_decref(tmpl);

    tmpl = json_string("$ref:add.data.1.memory_id");
    assert_null(compat_expand(tmpl, shapes, refs, err, sizeof err));
    assert_non_null(strstr(err, "nothing at \"1\""));
    json_decref(tmpl);
    tmpl = json_pack("{s:s}", "$like", "nope");
    assert_null(compat_expand(tmpl, shapes, refs, err, sizeof err));
    assert_non_null(strstr(err, "unknown shape nope"));
    json_decref(tmpl);
    json_decref(shapes);
    json_decref(refs);
}

/* ---- the fixture -------------------------------------------------------------- */

static const char *const exchange_keys[] = {
    "name", "method", "path", "body", "raw_body", "status", "response", "note", "known_difference"};

/* Fails the test on an exchange that is not well formed: a fixture error,
 * not a difference. `seen` collects the names so far. */
static void check_exchange(const char *file, size_t index, const json_t *x, json_t *seen)
{
    const char *name = json_string_value(json_object_get(x, "name"));
    if (name == NULL || name[0] == '\0' || strchr(name, '.') != NULL)
        fail_msg("%s[%zu]: \"name\" must be a string without dots", file, index);
    if (json_object_get(seen, name) != NULL)
        fail_msg("%s: exchange name %s used twice", file, name);
    json_object_set_new(seen, name, json_true());
    const size_t n_keys = sizeof exchange_keys / sizeof exchange_keys[0];
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)x, k, v)
    {
        size_t m = 0;
        while (m < n_keys && strcmp(k, exchange_keys[m]) != 0)
            m++;
        if (m == n_keys)
            fail_msg("%s: exchange %s has an unknown key \"%s\"", file, name, k);
    }
    if (!json_is_string(json_object_get(x, "method")) ||
        !json_is_string(json_object_get(x, "path")) ||
        !json_is_integer(json_object_get(x, "status")) || json_object_get(x, "response") == NULL)
        fail_msg("%s: exchange %s needs method, path, status and response", file, name);
    if (json_object_get(x, "raw_body") != NULL &&
        (json_object_get(x, "body") != NULL || !json_is_string(json_object_get(x, "raw_body"))))
        fail_msg("%s: exchange %s: raw_body is a string, instead of body", file, name);
}

/* Loads every *.json of the fixture directory but shapes.json, in name order,
 * each a list of exchanges, into one list (returned; *shapes gets
 * shapes.json). The caller decrefs both. */
static json_t *load_exchanges(json_t **shapes)
{
    json_error_t e;
    *shapes = json_load_file(MG_COMPAT_FIXTURE_DIR "/shapes.json", 0, &e);
    if (*shapes == NULL)
        fail_msg("shapes.json: %s (line %d)", e.text, e.line);
    struct dirent **names;
    int n = scandir(MG_COMPAT_FIXTURE_DIR, &names, NULL, alphasort);
    assert_true(n > 0);
    json_t *all = json_array();
    json_t *seen = json_object();
    for (int i = 0; i < n; i++) {
        const char *f = names[i]->d_name;
        size_t len = strlen(f);
        if (len > 5 && strcmp(f + len - 5, ".json") == 0 && strcmp(f, "shapes.json") != 0) {
            char path[1024];
            snprintf(path, sizeof path, "%s/%s", MG_COMPAT_FIXTURE_DIR, f);
            json_t *list = json_load_file(path, 0, &e);
            if (!json_is_array(list))
                fail_msg("%s: not a list of exchanges (%s, line %d)", f, e.text, e.line);
            size_t j;
            json_t *x;
            json_array_foreach(list, j, x)
            {
                check_exchange(f, j, x, seen);
                json_array_append(all, x);
            }
            json_decref(list);
        }
        free(names[i]);
    }
    free(names);
    json_decref(seen);
    return all;
}

/* Differences of one exchange, printed under its name. */
typedef struct printer {
    const char *name;
    const char *label; /* "MISMATCH" or "known difference" */
} printer;

static void print_diff(void *ud, const char *path, const char *want, const char *got)
{
    const printer *p = ud;
    printf("  %s %s at %s\n      expected: %s\n      got:      %s\n", p->label, p->name, path, want,
           got);
}

typedef struct tally {
    size_t exchanges, passed, known, failed, stale;
} tally;

/* Sends one exchange and compares the answer; stores the answer (null when
 * none came) in refs under the exchange's name for later $refs. */
static void replay_one(CURL *curl, const serve *s, const json_t *x, const json_t *shapes,
                       json_t *refs, tally *t)
{
    const char *name = json_string_value(json_object_get(x, "name"));
    const char *method = json_string_value(json_object_get(x, "method"));
    const char *known = json_string_value(json_object_get(x, "known_difference"));
    printer p = {.name = name, .label = known ? "known difference" : "MISMATCH"};
    char err[512] = "";
    char *text = NULL;
    http_res r;
    memset(&r, 0, sizeof r);
    t->exchanges++;

    json_t *path = compat_expand(json_object_get(x, "path"), shapes, refs, err, sizeof err);
    const json_t *body_t = json_object_get(x, "body");
    json_t *body = body_t ? compat_expand(body_t, shapes, refs, err, sizeof err) : NULL;
    json_t *want = compat_expand(json_object_get(x, "response"), shapes, refs, err, sizeof err);
    if (path == NULL || (body_t != NULL && body == NULL) || want == NULL) {
        printf("  FAILED %s: fixture: %s\n", name, err);
        t->failed++;
        goto done;
    }
    const char *raw = json_string_value(json_object_get(x, "raw_body"));
    if (body != NULL)
        text = json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY);
    const char *send = text ? text : raw;
    if (http_do(curl, s, method, json_string_value(path), send, send ? strlen(send) : 0, &r) != 0) {
        printf("  FAILED %s: %s %s: no HTTP answer\n", name, method, json_string_value(path));
        t->failed++;
        goto done;
    }

    size_t diffs = 0;
    long want_status = (long)json_integer_value(json_object_get(x, "status"));
    if (r.status != want_status) {
        char ws[32], gs[32];
        snprintf(ws, sizeof ws, "%ld", want_status);
        snprintf(gs, sizeof gs, "%ld", r.status);
        print_diff(&p, "HTTP status", ws, gs);
        diffs++;
    }
    if (r.json == NULL) {
        char got[200];
        snprintf(got, sizeof got, "not JSON: %.150s", r.body ? r.body : "(empty)");
        print_diff(&p, "$", "a JSON answer", got);
        diffs++;
    } else {
        diffs += compat_match(want, r.json, "$", print_diff, &p);
    }

    if (known != NULL) {
        if (diffs == 0) {
            printf("  STALE %s: marked known_difference (\"%s\") but now matches: remove the "
                   "mark\n",
                   name, known);
            t->stale++;
        } else {
            printf("  known difference %s: %s\n", name, known);
            t->known++;
        }
    } else if (diffs != 0) {
        printf("  FAILED %s: %s %s -> %ld %.300s\n", name, method, json_string_value(path),
               r.status, r.body ? r.body : "");
        t->failed++;
    } else {
        t->passed++;
    }
done:
    json_object_set_new(refs, name, r.json ? json_incref(r.json) : json_null());
    http_res_clear(&r);
    free(text);
    json_decref(body);
    json_decref(path);
    json_decref(want);
}

static void test_replay(void **state)
{
    (void)state;
    json_t *shapes;
    json_t *exchanges = load_exchanges(&shapes);
    assert_true(json_array_size(exchanges) > 0);

    serve s;
    memset(&s, 0, sizeof s);
    const char *url = getenv("MEMGRID_COMPAT_URL");
    if (url != NULL && url[0] != '\0') {
        snprintf(s.base, sizeof s.base, "%s", url);
        printf("compat_test: replaying against %s\n", s.base);
    } else {
        assert_int_equal(serve_start(&s, NULL, NULL), 0);
        printf("compat_test: memgrid serve ready in %.0f ms on %s\n", s.ready_ms, s.base);
    }

    CURL *curl = curl_easy_init();
    json_t *refs = json_object();
    tally t = {0};
    size_t i;
    json_t *x;
    json_array_foreach(exchanges, i, x)
    {
        replay_one(curl, &s, x, shapes, refs, &t);
    }
    curl_easy_cleanup(curl);
    printf("compat_test: %zu exchanges: %zu match, %zu known differences, %zu failed, %zu stale "
           "marks\n",
           t.exchanges, t.passed, t.known, t.failed, t.stale);
    fflush(stdout);

    if (s.pid > 0)
        assert_int_equal(serve_stop(&s, SIGTERM, 10000), 0);
    serve_cleanup(&s);
    json_decref(refs);
    json_decref(exchanges);
    json_decref(shapes);
    assert_int_equal(t.failed, 0);
    assert_int_equal(t.stale, 0);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_ALL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_match_keys_and_types),
        cmocka_unit_test(test_match_placeholders),
        cmocka_unit_test(test_match_each),
        cmocka_unit_test(test_expand),
        cmocka_unit_test(test_replay),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
