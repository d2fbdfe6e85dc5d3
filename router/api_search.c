/*
 * POST /product/search (MEMOS_API.md).
 *
 * Per readable cube: one survey asks the cube's group for its best
 * candidates; each hit's raw score becomes a calibrated relativity, a
 * same-session hit gets a small ranking boost, hits under `relativity` go,
 * the rest is split into MemOS's buckets by memory_type and the text bucket
 * is deduplicated (no / exact / sim / mmr) down to top_k.
 *
 * One survey per cube serves every bucket: it asks for top_k (×5 when
 * deduplicating, as MemOS does) plus the preference, tool and skill k's. A
 * cube whose non-text memories outrank its text ones may then return fewer
 * than top_k text memories; a specific search_memory_type filters exactly.
 */
#include "api.h"

#include "../lib/clock.h"
#include "../lib/jsonmp.h"
#include "../lib/mp.h"
#include "../storage/filter.h"
#include "embed_hash.h"
#include "jsonw.h"
#include "merge.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SESSION_BOOST 0.05      /* added to the rank of a hit of the request's session */
#define DEDUP_FETCH_FACTOR 5    /* MemOS fetches top_k × 5 before sim/mmr dedup */

static const char *const memory_types[] = {
    "All",          "WorkingMemory",        "LongTermMemory", "UserMemory",
    "OuterMemory",  "ToolSchemaMemory",     "ToolTrajectoryMemory", "RawFileMemory",
    "SkillMemory",  "PreferenceMemory",     "AllSummaryMemory",
};

typedef struct search_params {
    const char *user;
    const char *session;
    long long top_k, pref_k, tool_k, skill_k;
    double relativity;
    int dedup;
    const char *memory_type;   /* NULL for All */
    bool pref, tool, skill;
    int consistency;           /* enum consistency */
} search_params;

/* The read option of a search ("consistency"). */
enum consistency {
    CONSISTENCY_LEADER = 0, /* the group's leader: read-your-writes */
    CONSISTENCY_STRONG,     /* the leader after a Raft barrier ("strong": true) */
    CONSISTENCY_FOLLOWER,   /* any live replica ("follower": true): may be behind */
};

typedef struct hit_list {
    mg_hit *hits;
    size_t n, cap;
} hit_list;

/* What one cube's search found. The hits point into the survey's replies,
 * which live until the answer is written. */
typedef struct cube_result {
    const char *cube_id;
    mg_client_survey sv;
    hit_list hl;
    mg_hit *sel[4];            /* per bucket: the selected hits, in order */
    size_t n_sel[4];
    bool missing;              /* its group did not answer */
    bool follower_read;        /* answered by a replica that may not lead (failover) */
} cube_result;

static void cube_result_clear(cube_result *c)
{
    for (int b = 0; b < 4; b++)
        free(c->sel[b]);
    free(c->hl.hits);
    mg_client_survey_clear(&c->sv);
    memset(c, 0, sizeof *c);
}

/* ---- the filter --------------------------------------------------------- */

/* The filter for one cube: the request's (global or the cube's entry of a
 * per-cube map) and-ed with the memory_type of search_memory_type. A new
 * reference, or NULL for none. */
static json_t *cube_filter(const json_t *filter, bool per_cube, const char *cube_id,
                           const char *memory_type)
{
    const json_t *f = per_cube ? json_object_get(filter, cube_id) : filter;
    if (f != NULL && json_is_object(f) && json_object_size(f) == 0)
        f = NULL;
    if (memory_type == NULL)
        return f ? json_incref((json_t *)f) : NULL;
    json_t *type = json_pack("{s:s}", "memory_type", memory_type);
    if (f == NULL)
        return type;
    return json_pack("{s:[O,o]}", "and", f, type);
}

/* A map whose every key names a readable cube and every value is an object
 * is a per-cube filter ({cube_id: filter}). */
static bool filter_is_per_cube(const json_t *filter, const char *const *cubes, size_t n)
{
    if (!json_is_object(filter) || json_object_size(filter) == 0)
        return false;
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)filter, key, v)
    {
        if (!json_is_object(v))
            return false;
        bool known = false;
        for (size_t i = 0; i < n && !known; i++)
            known = strcmp(cubes[i], key) == 0;
        if (!known)
            return false;
    }
    return true;
}

/* ---- reading a survey reply --------------------------------------------- */

static int read_hit(mg_mp_reader *r, mg_hit *h)
{
    uint32_t f;
    memset(h, 0, sizeof *h);
    if (mg_mp_read_map(r, &f) != MG_OK)
        return MG_ECORRUPT;
    for (uint32_t i = 0; i < f; i++) {
        int rc;
        if (mg_mp_peek_str_eq(r, "cube")) {
            mg_mp_skip(r);
            rc = mg_mp_read_u32(r, &h->cube);
        } else if (mg_mp_peek_str_eq(r, "score")) {
            double s;
            mg_mp_skip(r);
            rc = mg_mp_read_double(r, &s);
            h->score = (float)s;
        } else if (mg_mp_peek_str_eq(r, "record")) {
            uint32_t len;
            mg_mp_skip(r);
            rc = mg_mp_read_bin(r, &h->record, &len);
            h->record_len = len;
        } else if (mg_mp_peek_str_eq(r, "vec")) {
            mg_mp_skip(r);
            if (mg_mp_peek(r) == MG_MP_NIL) {
                rc = mg_mp_read_nil(r);
            } else {
                uint32_t len;
                rc = mg_mp_read_bin(r, &h->vec, &len);
                h->dim = len / 4;
                if (len % 4 != 0)
                    rc = MG_ECORRUPT;
            }
        } else {
            rc = mg_mp_skip(r) || mg_mp_skip(r);
        }
        if (rc != MG_OK)
            return MG_ECORRUPT;
    }
    return h->record ? MG_OK : MG_ECORRUPT;
}

/* Appends the reply's hits; records the first cube error. */
static int read_reply(const mg_wire_rep *rep, hit_list *out, int *cube_status, char *cube_msg,
                      size_t msg_cap)
{
    mg_mp_reader r = mg_wire_body(rep->body, rep->body_len);
    uint32_t n, m;
    if (mg_mp_read_map(&r, &n) != MG_OK)
        return MG_ECORRUPT;
    for (uint32_t i = 0; i < n; i++) {
        if (mg_mp_peek_str_eq(&r, "hits")) {
            mg_mp_skip(&r);
            if (mg_mp_read_array(&r, &m) != MG_OK)
                return MG_ECORRUPT;
            if (out->n + m > out->cap) {
                size_t cap = out->n + m;
                mg_hit *grown = realloc(out->hits, cap * sizeof *grown);
                if (grown == NULL)
                    return MG_ENOMEM;
                out->hits = grown;
                out->cap = cap;
            }
            for (uint32_t j = 0; j < m; j++) {
                if (read_hit(&r, &out->hits[out->n]) != MG_OK)
                    return MG_ECORRUPT;
                out->n++;
            }
        } else if (mg_mp_peek_str_eq(&r, "cube_errors")) {
            mg_mp_skip(&r);
            if (mg_mp_read_array(&r, &m) != MG_OK)
                return MG_ECORRUPT;
            for (uint32_t j = 0; j < m; j++) {
                uint32_t f;
                uint64_t status = 0;
                const char *msg = "";
                uint32_t msg_len = 0;
                if (mg_mp_read_map(&r, &f) != MG_OK)
                    return MG_ECORRUPT;
                for (uint32_t k = 0; k < f; k++) {
                    int rc;
                    if (mg_mp_peek_str_eq(&r, "status")) {
                        mg_mp_skip(&r);
                        rc = mg_mp_read_u64(&r, &status);
                    } else if (mg_mp_peek_str_eq(&r, "msg")) {
                        mg_mp_skip(&r);
                        rc = mg_mp_read_str(&r, &msg, &msg_len);
                    } else {
                        rc = mg_mp_skip(&r) || mg_mp_skip(&r);
                    }
                    if (rc != MG_OK)
                        return MG_ECORRUPT;
                }
                if (*cube_status == MG_OK && status != MG_OK && status < MG_ERR_COUNT_) {
                    *cube_status = (int)status;
                    snprintf(cube_msg, msg_cap, "%.*s", (int)msg_len, msg);
                }
            }
        } else if (mg_mp_skip(&r) != MG_OK || mg_mp_skip(&r) != MG_OK) {
            return MG_ECORRUPT;
        }
    }
    return MG_OK;
}

/* ---- one cube ----------------------------------------------------------- */

/* Packs the SEARCH body fields other than "assign". */
static int pack_search(msgpack_packer *pk, const float *qvec, uint32_t dim, size_t k, bool vecs,
                       bool strong, const char *cube_id, uint64_t group, const json_t *filter)
{
    int rc = 0;
    rc |= mg_mp_pack_cstr(pk, "vec") | mg_mp_pack_binn(pk, qvec, (size_t)dim * 4);
    rc |= mg_mp_pack_cstr(pk, "k") | msgpack_pack_uint64(pk, k);
    rc |= mg_mp_pack_cstr(pk, "scan") | msgpack_pack_uint32(pk, 0);
    rc |= mg_mp_pack_cstr(pk, "strong");
    rc |= strong ? msgpack_pack_true(pk) : msgpack_pack_false(pk);
    rc |= mg_mp_pack_cstr(pk, "vecs");
    rc |= vecs ? msgpack_pack_true(pk) : msgpack_pack_false(pk);
    rc |= mg_mp_pack_cstr(pk, "cubes") | msgpack_pack_array(pk, 1) | msgpack_pack_map(pk, 3);
    rc |= mg_mp_pack_cstr(pk, "cube_id") | mg_mp_pack_cstr(pk, cube_id);
    rc |= mg_mp_pack_cstr(pk, "group") | msgpack_pack_uint64(pk, group);
    rc |= mg_mp_pack_cstr(pk, "filter");
    if (rc)
        return MG_ENOMEM;
    if (filter == NULL)
        return msgpack_pack_nil(pk) ? MG_ENOMEM : MG_OK;
    return mg_jsonmp_pack(pk, filter);
}

/* One cube's survey and its selection. stage_ns[ROUTER_STAGE_*] grows by the
 * time spent building the survey (route), waiting for it (scatter) and
 * merging and selecting (merge). */
static int search_cube(mg_router *r, const search_params *sp, const float *qvec,
                       const char *cube_id, const json_t *filter, cube_result *out,
                       uint64_t *stage_ns, mg_error *err)
{
    uint64_t t_stage = mg_clock_mono_ns();
    size_t text_fetch = (size_t)sp->top_k *
                        (sp->dedup == MG_DEDUP_SIM || sp->dedup == MG_DEDUP_MMR ? DEDUP_FETCH_FACTOR
                                                                                : 1);
    size_t k = text_fetch + (sp->pref ? (size_t)sp->pref_k : 0) + (sp->tool ? (size_t)sp->tool_k : 0) +
               (sp->skill ? (size_t)sp->skill_k : 0);
    bool want_vecs = sp->dedup == MG_DEDUP_SIM || sp->dedup == MG_DEDUP_MMR;
    uint64_t group = mg_client_group(r->client, cube_id, strlen(cube_id));
    if (group == 0)
        return mg_client_no_map(r->client, err);

    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    if (pack_search(&pk, qvec, r->dim, k, want_vecs, sp->consistency == CONSISTENCY_STRONG,
                    cube_id, group, filter) != MG_OK) {
        msgpack_sbuffer_destroy(&sb);
        return mg_error_set(err, MG_ENOMEM, "out of memory");
    }
    mg_client_survey *sv = &out->sv;
    *sv = (mg_client_survey){.fields = (const uint8_t *)sb.data,
                             .fields_len = sb.size,
                             .n_fields = 6,
                             .groups = &group,
                             .n_groups = 1,
                             .follower = sp->consistency == CONSISTENCY_FOLLOWER};
    uint64_t sent = mg_clock_mono_ns();
    stage_ns[ROUTER_STAGE_ROUTE] += sent - t_stage;
    int rc = mg_client_search(r->client, sp->user, sv, err);
    t_stage = mg_clock_mono_ns();
    stage_ns[ROUTER_STAGE_SCATTER] += t_stage - sent;
    msgpack_sbuffer_destroy(&sb);
    sv->fields = NULL;
    sv->groups = NULL;
    if (rc != MG_OK)
        return rc;
    out->follower_read = sv->follower_read;
    if (sv->n_missing > 0)
        return mg_error_set(err, MG_EUNAVAIL, "group %llu of cube \"%s\" did not answer (%s)",
                            (unsigned long long)group, cube_id, sv->missing_why);

    hit_list *hl = &out->hl;
    int cube_status = MG_OK;
    char cube_msg[256] = "";
    /* Each reply's hits come best first; several replies (one per node that
     * answered) are merged with a heap into the k best. */
    size_t starts[17];
    size_t n_lists = sv->n_replies < 16 ? sv->n_replies : 16;
    for (size_t i = 0; i < sv->n_replies && rc == MG_OK; i++) {
        if (i < 16)
            starts[i] = hl->n;
        rc = read_reply(&sv->replies[i].rep, hl, &cube_status, cube_msg, sizeof cube_msg);
    }
    if (rc != MG_OK)
        return mg_error_set(err, rc == MG_ENOMEM ? MG_ENOMEM : MG_EINTERNAL,
                            "malformed search reply from the node");
    if (n_lists > 1 && sv->n_replies <= 16) {
        starts[n_lists] = hl->n;
        const mg_hit *lists[16];
        size_t lens[16], heap[16];
        for (size_t i = 0; i < n_lists; i++) {
            lists[i] = hl->hits + starts[i];
            lens[i] = starts[i + 1] - starts[i];
            for (size_t j = 0; j < lens[i]; j++)
                hl->hits[starts[i] + j].rank = hl->hits[starts[i] + j].score;
        }
        mg_hit *merged = malloc((k ? k : 1) * sizeof *merged);
        if (merged == NULL)
            return mg_error_set(err, MG_ENOMEM, "out of memory");
        size_t m = mg_hits_merge(lists, lens, n_lists, k, heap, merged);
        free(hl->hits);
        hl->hits = merged;
        hl->n = m;
        hl->cap = k;
    }
    if (cube_status == MG_ENOTFOUND && strcmp(cube_id, sp->user) == 0)
        cube_status = MG_OK; /* the user's default cube, not made yet: empty */
    else if (cube_status != MG_OK)
        return mg_error_set(err, cube_status, "cube \"%s\": %s", cube_id,
                            cube_msg[0] ? cube_msg : mg_strerror(cube_status));

    /* Calibrate, boost the request's session, drop what is under the
     * threshold, order. */
    size_t w = 0;
    size_t sess_len = sp->session ? strlen(sp->session) : 0;
    for (size_t i = 0; i < hl->n; i++) {
        mg_hit *h = &hl->hits[i];
        h->relativity = router_relativity(r, h->score);
        h->rank = h->relativity;
        if (sp->relativity > 0 && h->relativity < sp->relativity)
            continue;
        if (sess_len) {
            const char *s;
            uint32_t n;
            if (mg_record_meta_str(h->record, h->record_len, "session_id", &s, &n) &&
                n == sess_len && memcmp(s, sp->session, n) == 0)
                h->rank += SESSION_BOOST;
        }
        hl->hits[w++] = *h;
    }
    hl->n = w;
    mg_hits_sort(hl->hits, hl->n);

    /* Split into buckets (keeping the order), then select per bucket. */
    mg_hit *bucket_hits[4] = {NULL};
    size_t bucket_n[4] = {0};
    rc = MG_OK;
    for (int b = 0; b < 4; b++) {
        bucket_hits[b] = malloc((hl->n ? hl->n : 1) * sizeof *bucket_hits[b]);
        if (bucket_hits[b] == NULL)
            rc = mg_error_set(err, MG_ENOMEM, "out of memory");
    }
    for (size_t i = 0; rc == MG_OK && i < hl->n; i++) {
        const char *t = NULL;
        uint32_t tn = 0;
        mg_record_meta_str(hl->hits[i].record, hl->hits[i].record_len, "memory_type", &t, &tn);
        api_bucket b = api_bucket_of(t, tn);
        if (b < 4)
            bucket_hits[b][bucket_n[b]++] = hl->hits[i];
    }
    const long long bucket_k[4] = {sp->top_k, sp->pref ? sp->pref_k : 0, sp->tool ? sp->tool_k : 0,
                                   sp->skill ? sp->skill_k : 0};
    for (int b = 0; b < 4 && rc == MG_OK; b++) {
        size_t kb = (size_t)bucket_k[b];
        size_t *sel = malloc((kb ? kb : 1) * sizeof *sel);
        double *scratch = malloc((bucket_n[b] ? bucket_n[b] : 1) * sizeof *scratch);
        out->sel[b] = malloc((kb ? kb : 1) * sizeof *out->sel[b]);
        if (sel == NULL || scratch == NULL || out->sel[b] == NULL) {
            free(sel);
            free(scratch);
            rc = mg_error_set(err, MG_ENOMEM, "out of memory");
            break;
        }
        int mode = b == API_BUCKET_TEXT ? sp->dedup : MG_DEDUP_NO;
        size_t ns = mg_dedup_select(mode, bucket_hits[b], bucket_n[b], kb, r->sim_dims, scratch,
                                    sel);
        for (size_t i = 0; i < ns; i++)
            out->sel[b][i] = bucket_hits[b][sel[i]];
        out->n_sel[b] = ns;
        free(sel);
        free(scratch);
    }
    for (int b = 0; b < 4; b++)
        free(bucket_hits[b]);
    stage_ns[ROUTER_STAGE_MERGE] += mg_clock_mono_ns() - t_stage;
    return rc;
}

/* ---- the answer --------------------------------------------------------- */

/* Writes one bucket list: [{"cube_id", "memories": [...], "total_nodes"}, ...]. */
static void write_bucket(jw *w, const cube_result *res, size_t n, int b)
{
    jw_raw(w, "[", 1);
    for (size_t i = 0; i < n; i++) {
        if (i)
            jw_raw(w, ",", 1);
        jw_lit(w, "{\"cube_id\":");
        jw_cstr(w, res[i].cube_id);
        jw_lit(w, ",\"memories\":[");
        size_t written = 0;
        for (size_t j = 0; j < res[i].n_sel[b]; j++) {
            const mg_hit *h = &res[i].sel[b][j];
            if (written)
                jw_raw(w, ",", 1);
            if (jw_item(w, h->record, h->record_len, true, h->relativity))
                written++;
            else if (written)
                w->len--; /* drop the comma of an undecodable record */
        }
        jw_lit(w, "],\"total_nodes\":");
        jw_u64(w, written);
        jw_raw(w, "}", 1);
    }
    jw_raw(w, "]", 1);
}

/* ---- handler ------------------------------------------------------------ */

void api_search(mg_router *r, const mg_api_req *req, mg_api_resp *resp)
{
    const json_t *body = req->json;
    if (!json_is_object(body)) {
        api_fail(resp, 422, "the body must be a JSON object");
        return;
    }
    search_params sp;
    memset(&sp, 0, sizeof sp);
    const char *query, *mode, *single, *session, *memory_type = NULL, *consistency;
    const json_t *cube_list, *filter;
    if (api_str(body, "query", true, &query, resp) != MG_OK ||
        api_user_id(body, "user_id", true, &sp.user, resp) != MG_OK ||
        api_str(body, "mode", false, &mode, resp) != MG_OK ||
        api_str(body, "mem_cube_id", false, &single, resp) != MG_OK ||
        api_str(body, "session_id", false, &session, resp) != MG_OK ||
        api_str(body, "search_memory_type", false, &memory_type, resp) != MG_OK ||
        api_str(body, "consistency", false, &consistency, resp) != MG_OK ||
        api_str_list(body, "readable_cube_ids", &cube_list, resp) != MG_OK ||
        api_int(body, "top_k", 10, 1, r->limits.max_top_k, &sp.top_k, resp) != MG_OK ||
        api_int(body, "pref_top_k", 6, 0, r->limits.max_top_k, &sp.pref_k, resp) != MG_OK ||
        api_int(body, "tool_mem_top_k", 6, 0, r->limits.max_top_k, &sp.tool_k, resp) != MG_OK ||
        api_int(body, "skill_mem_top_k", 3, 0, r->limits.max_top_k, &sp.skill_k, resp) != MG_OK ||
        api_num(body, "relativity", 0.45, 0.0, 1e9, &sp.relativity, resp) != MG_OK ||
        api_bool(body, "include_preference", true, &sp.pref, resp) != MG_OK ||
        api_bool(body, "search_tool_memory", true, &sp.tool, resp) != MG_OK ||
        api_bool(body, "include_skill_memory", true, &sp.skill, resp) != MG_OK)
        return;
    sp.session = session && session[0] ? session : NULL;
    if (mode && strcmp(mode, "fast") != 0 && strcmp(mode, "fine") != 0 &&
        strcmp(mode, "mixture") != 0) {
        api_fail(resp, 422, "field \"mode\" must be \"fast\", \"fine\" or \"mixture\"");
        return;
    }
    if (consistency == NULL || strcmp(consistency, "leader") == 0) {
        sp.consistency = CONSISTENCY_LEADER;
    } else if (strcmp(consistency, "strong") == 0) {
        sp.consistency = CONSISTENCY_STRONG;
    } else if (strcmp(consistency, "follower") == 0) {
        sp.consistency = CONSISTENCY_FOLLOWER;
    } else {
        api_fail(resp, 422,
                 "field \"consistency\" must be \"leader\", \"strong\" or \"follower\"");
        return;
    }
    size_t qlen = strlen(query);
    if (qlen > r->limits.max_query_bytes) {
        api_fail(resp, 413, "the query is %zu bytes (at most %zu)", qlen, r->limits.max_query_bytes);
        return;
    }
    const json_t *dedup = json_object_get(body, "dedup");
    if (dedup == NULL)
        sp.dedup = MG_DEDUP_MMR;
    else if (json_is_null(dedup))
        sp.dedup = MG_DEDUP_EXACT;
    else if (!json_is_string(dedup) || (sp.dedup = mg_dedup_parse(json_string_value(dedup))) < 0) {
        api_fail(resp, 422, "field \"dedup\" must be \"no\", \"sim\", \"mmr\" or null");
        return;
    }
    if (memory_type != NULL) {
        bool known = false;
        for (size_t i = 0; i < sizeof memory_types / sizeof memory_types[0] && !known; i++)
            known = strcmp(memory_type, memory_types[i]) == 0;
        if (!known) {
            api_fail(resp, 422, "field \"search_memory_type\": unknown memory type \"%.64s\"",
                     memory_type);
            return;
        }
        if (strcmp(memory_type, "All") == 0 || strcmp(memory_type, "AllSummaryMemory") == 0)
            memory_type = NULL;
    }
    sp.memory_type = memory_type;
    filter = json_object_get(body, "filter");
    if (filter != NULL && json_is_null(filter))
        filter = NULL;
    if (filter != NULL && !json_is_object(filter)) {
        api_fail(resp, 400, "filter must be an object ({\"and\": [...]}, {\"or\": [...]}, a "
                            "condition, or {cube_id: filter})");
        return;
    }

    /* The cubes: readable_cube_ids, else mem_cube_id, else the user's own. */
    size_t n_cubes = cube_list && json_array_size(cube_list) ? json_array_size(cube_list) : 1;
    if (n_cubes > r->limits.max_cubes) {
        api_fail(resp, 400, "%zu readable cubes (at most %zu)", n_cubes, r->limits.max_cubes);
        return;
    }
    const char **cubes = calloc(n_cubes, sizeof *cubes);
    cube_result *res = calloc(n_cubes, sizeof *res);
    float *qvec = malloc((size_t)r->dim * sizeof *qvec);
    json_t **filters = calloc(n_cubes, sizeof *filters);
    if (cubes == NULL || res == NULL || qvec == NULL || filters == NULL) {
        api_fail(resp, 500, "out of memory");
        goto done;
    }
    size_t nc = 0;
    if (cube_list && json_array_size(cube_list)) {
        for (size_t i = 0; i < n_cubes; i++) {
            const char *id = json_string_value(json_array_get(cube_list, i));
            bool dup = false;
            for (size_t j = 0; j < nc && !dup; j++)
                dup = strcmp(cubes[j], id) == 0;
            if (!dup)
                cubes[nc++] = id;
        }
    } else {
        cubes[nc++] = single ? single : sp.user;
    }
    for (size_t i = 0; i < nc; i++)
        if (api_cube_id_check("readable cube", cubes[i], resp) != MG_OK)
            goto done;

    /* Filters: compiled here only to answer a bad one with a clear 400. */
    bool per_cube = filter_is_per_cube(filter, cubes, nc);
    for (size_t i = 0; i < nc; i++) {
        filters[i] = cube_filter(filter, per_cube, cubes[i], memory_type);
        if (filters[i] != NULL) {
            mg_filter *f;
            mg_error ferr;
            if (mg_filter_compile(filters[i], &f, &ferr) != MG_OK) {
                api_fail(resp, 400, "%s", ferr.msg);
                goto done;
            }
            mg_filter_free(f);
        }
    }
    /* MemOS appends a cube's pref_mem entry only when include_preference is
     * true, whatever search_memory_type asks (formatters_handler.py,
     * post_process_pref_mem); tool_mem and skill_mem entries always appear. */
    const bool pref_entries = sp.pref;
    if (memory_type != NULL) {
        /* Only the asked type's bucket. */
        api_bucket b = api_bucket_of(memory_type, strlen(memory_type));
        sp.pref = b == API_BUCKET_PREF;
        sp.tool = b == API_BUCKET_TOOL;
        sp.skill = b == API_BUCKET_SKILL;
        if (b != API_BUCKET_TEXT) {
            long long k = b == API_BUCKET_PREF ? sp.pref_k : b == API_BUCKET_TOOL ? sp.tool_k
                                                                                  : sp.skill_k;
            if (b == API_BUCKET_PREF)
                sp.pref_k = k ? k : sp.top_k;
            else if (b == API_BUCKET_TOOL)
                sp.tool_k = k ? k : sp.top_k;
            else
                sp.skill_k = k ? k : sp.top_k;
        }
    }

    mg_error err;
    uint64_t t = req->t0_ns;
    router_stage(r, ROUTER_OP_SEARCH, ROUTER_STAGE_PARSE, &t);
    if (router_embed(r, &query, &qlen, 1, MG_EMBED_QUERY, qvec, &err) != MG_OK) {
        api_fail(resp, 422, "query: %s", err.msg);
        goto done;
    }
    router_stage(r, ROUTER_OP_SEARCH, ROUTER_STAGE_EMBED, &t);
    if (router_need_map(r, &err) != MG_OK) {
        api_fail_err(resp, &err);
        goto done;
    }
    uint64_t stage_ns[ROUTER_STAGE_COUNT_] = {0};
    size_t n_missing = 0;
    json_t *missing = NULL;
    /* A cube answered MG_EWRONGGROUP (its group no longer owns it: our map is
     * stale, or a rebalance is between its freeze and its flip), or missing
     * while the map changed: refresh and run the whole search again, until
     * the call deadline. */
    uint64_t deadline = mg_clock_mono_ns() + (uint64_t)r->call_timeout_ms * 1000000u;
again:
    n_missing = 0;
    json_decref(missing);
    missing = json_array();
    uint64_t epoch0 = mg_client_epoch(r->client);
    bool rerun = false;
    for (size_t i = 0; i < nc; i++) {
        cube_result_clear(&res[i]);
        res[i].cube_id = cubes[i];
        int rc = search_cube(r, &sp, qvec, cubes[i], filters[i], &res[i], stage_ns, &err);
        if (rc == MG_EWRONGGROUP) {
            rerun = true;
            break;
        }
        if ((rc == MG_EUNAVAIL || rc == MG_ETIMEDOUT) && mg_client_epoch(r->client) != epoch0) {
            rerun = true;
            break;
        }
        if (rc == MG_EUNAVAIL || rc == MG_ETIMEDOUT) {
            /* Its group did not answer: say so, never silently short. */
            for (int b = 0; b < 4; b++)
                res[i].n_sel[b] = 0;
            res[i].missing = true;
            n_missing++;
            json_array_append_new(missing, json_pack("{s:s,s:I,s:s}", "cube_id", cubes[i],
                                                     "group",
                                                     (json_int_t)mg_client_group(
                                                         r->client, cubes[i], strlen(cubes[i])),
                                                     "reason", err.msg));
            continue;
        }
        if (rc != MG_OK) {
            json_decref(missing);
            api_fail_err(resp, &err);
            goto done;
        }
    }
    if (rerun) {
        if (mg_clock_mono_ns() >= deadline) {
            json_decref(missing);
            api_fail_err(resp, &err);
            goto done;
        }
        mg_client_refresh(r->client, NULL);
        struct timespec ts = {.tv_sec = 0, .tv_nsec = 20 * 1000000L};
        nanosleep(&ts, NULL);
        goto again;
    }
    router_stage_ns(r, ROUTER_OP_SEARCH, ROUTER_STAGE_ROUTE, stage_ns[ROUTER_STAGE_ROUTE]);
    router_stage_ns(r, ROUTER_OP_SEARCH, ROUTER_STAGE_SCATTER, stage_ns[ROUTER_STAGE_SCATTER]);
    if (n_missing == nc) {
        json_decref(missing);
        api_fail_err(resp, &err);
        goto done;
    }
    t = mg_clock_mono_ns();
    jw w;
    jw_init(&w);
    jw_lit(&w, "{\"code\":200,\"message\":");
    jw_cstr(&w, n_missing ? "Search completed partially: some cubes' groups did not answer (see "
                            "data.missing)"
                          : "Search completed successfully");
    jw_lit(&w, ",\"data\":{\"text_mem\":");
    write_bucket(&w, res, nc, API_BUCKET_TEXT);
    jw_lit(&w, ",\"act_mem\":[],\"para_mem\":[],\"pref_mem\":");
    if (pref_entries)
        write_bucket(&w, res, nc, API_BUCKET_PREF);
    else
        jw_lit(&w, "[]");
    jw_lit(&w, ",\"tool_mem\":");
    write_bucket(&w, res, nc, API_BUCKET_TOOL);
    jw_lit(&w, ",\"skill_mem\":");
    write_bucket(&w, res, nc, API_BUCKET_SKILL);
    jw_lit(&w, ",\"pref_note\":\"\"");
    bool follower_read = false;
    for (size_t i = 0; i < nc; i++)
        follower_read |= res[i].follower_read;
    if (follower_read)
        jw_lit(&w, ",\"follower_read\":true");
    if (n_missing > 0) {
        char *m = json_dumps(missing, JSON_COMPACT);
        jw_lit(&w, ",\"partial\":true,\"missing\":");
        if (m != NULL)
            jw_lit(&w, m);
        else
            jw_lit(&w, "[]");
        free(m);
    }
    json_decref(missing);
    jw_lit(&w, "}}");
    size_t len;
    char *text = jw_take(&w, &len);
    if (text == NULL) {
        api_fail(resp, 500, "out of memory");
        goto done;
    }
    api_raw(resp, 200, text, len);
    router_stage_ns(r, ROUTER_OP_SEARCH, ROUTER_STAGE_MERGE,
                    stage_ns[ROUTER_STAGE_MERGE] + mg_clock_mono_ns() - t);

done:
    if (res != NULL)
        for (size_t i = 0; i < n_cubes; i++)
            cube_result_clear(&res[i]);
    if (filters != NULL)
        for (size_t i = 0; i < n_cubes; i++)
            json_decref(filters[i]);
    free(filters);
    free(cubes);
    free(res);
    free(qvec);
}
