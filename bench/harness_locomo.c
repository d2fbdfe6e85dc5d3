/*
 * --workload locomo: every turn of the used conversations is added to its
 * conversation's cube (one memory per turn, "Speaker: text"), timed as the
 * "add" op; then every question with evidence is asked against that cube,
 * timed as "search", and evidence recall@k is counted from the answers.
 *
 * A returned memory is matched to a turn by its id (the id the add answer
 * gave that turn), else by metadata.info.dia_id (sent with each add), else by
 * its text containing the turn's text (MemOS's fast mode wraps a message as
 * "user: [time]: text"). One pass, whatever --duration or --requests say.
 */
#include "harness_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- id map: open addressing, built once per round, then read-only ---- */

static uint64_t str_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ull;
    }
    return h;
}

static void idmap_free(locomo_idmap *m)
{
    free(m->keys);
    free(m->values);
    memset(m, 0, sizeof *m);
}

/* Keys are borrowed from ids[] (which outlive the map). */
static int idmap_build(locomo_idmap *m, char **ids, size_t n)
{
    size_t cap = 16;
    while (cap < 2 * n + 1)
        cap *= 2;
    m->keys = calloc(cap, sizeof *m->keys);
    m->values = calloc(cap, sizeof *m->values);
    m->cap = cap;
    if (m->keys == NULL || m->values == NULL) {
        idmap_free(m);
        return MG_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        if (ids[i] == NULL)
            continue;
        size_t j = str_hash(ids[i]) & (cap - 1);
        while (m->keys[j] != NULL && strcmp(m->keys[j], ids[i]) != 0)
            j = (j + 1) & (cap - 1);
        m->keys[j] = ids[i];
        m->values[j] = (uint32_t)i;
    }
    return MG_OK;
}

static long idmap_get(const locomo_idmap *m, const char *id)
{
    if (m->cap == 0)
        return -1;
    size_t j = str_hash(id) & (m->cap - 1);
    while (m->keys[j] != NULL) {
        if (strcmp(m->keys[j], id) == 0)
            return (long)m->values[j];
        j = (j + 1) & (m->cap - 1);
    }
    return -1;
}

/* ---- data ---- */

int locomo_prepare(run *r, mg_error *err)
{
    const bench_config *cfg = r->cfg;
    locomo_state *lo = &r->lo;
    mg_locomo_options o = {true, false};
    int rc = mg_locomo_load(cfg->data_dir, &o, &lo->convs, &lo->nconvs, err);
    if (rc != MG_OK)
        return mg_error_wrap(err, rc, "LoCoMo data");

    /* Questions in file order up to --limit; the conversations they need. */
    size_t total_q = 0, total_t = 0;
    lo->used = 0;
    for (size_t c = 0; c < lo->nconvs; c++) {
        if (cfg->limit > 0 && total_q >= cfg->limit)
            break;
        size_t take = lo->convs[c].nquestions;
        if (cfg->limit > 0 && take > cfg->limit - total_q)
            take = cfg->limit - total_q;
        total_q += take;
        total_t += lo->convs[c].nturns;
        lo->used++;
    }
    lo->cube_ids = calloc(lo->used ? lo->used : 1, sizeof *lo->cube_ids);
    lo->turns = calloc(total_t ? total_t : 1, sizeof *lo->turns);
    lo->questions = calloc(total_q ? total_q : 1, sizeof *lo->questions);
    if (lo->cube_ids == NULL || lo->turns == NULL || lo->questions == NULL)
        return mg_error_set(err, MG_ENOMEM, "out of memory");
    for (size_t c = 0; c < lo->used; c++) {
        const mg_locomo_conv *conv = &lo->convs[c];
        char name[64];
        mg_locomo_conv_id(conv, name, sizeof name);
        for (char *p = name; *p; p++) /* keep cube ids in [A-Za-z0-9_.:@-] */
            if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                  (*p >= '0' && *p <= '9') || *p == '_' || *p == '.' || *p == '-'))
                *p = '_';
        snprintf(lo->cube_ids[c], sizeof lo->cube_ids[c], "%.100s-locomo-%.19s", cfg->cube_prefix,
                 name);
        for (size_t t = 0; t < conv->nturns; t++)
            lo->turns[lo->nturns++] = (locomo_turn){(uint32_t)c, (uint32_t)t};
        for (size_t q = 0; q < conv->nquestions && lo->nquestions < total_q; q++)
            lo->questions[lo->nquestions++] = (locomo_turn){(uint32_t)c, (uint32_t)q};
    }
    return MG_OK;
}

void locomo_round_reset(run *r)
{
    locomo_state *lo = &r->lo;
    for (size_t ti = 0; ti < 2; ti++) {
        idmap_free(&lo->map[ti]);
        if (lo->ids[ti] != NULL)
            for (size_t i = 0; i < lo->nturns; i++)
                free(lo->ids[ti][i]);
        free(lo->ids[ti]);
        lo->ids[ti] = NULL;
        for (int k = 0; k < BENCH_NUM_K; k++)
            atomic_store(&lo->hits[ti][k], 0);
        atomic_store(&lo->unmatched[ti], 0);
    }
}

void locomo_release(run *r)
{
    locomo_round_reset(r);
    mg_locomo_free(r->lo.convs, r->lo.nconvs);
    free(r->lo.cube_ids);
    free(r->lo.turns);
    free(r->lo.questions);
    memset(&r->lo, 0, sizeof r->lo);
}

/* ---- ops ---- */

void locomo_build_op(run *r, const phase *ph, client *cl, uint64_t k, req_op *o)
{
    const bench_config *cfg = r->cfg;
    const locomo_state *lo = &r->lo;
    if (ph->kind == PH_LOCOMO_ADD) {
        locomo_turn t = lo->turns[k];
        const mg_locomo_conv *conv = &lo->convs[t.conv];
        const char *texts[1] = {conv->turns[t.turn]};
        bench_add_req add = {
            lo->cube_ids[t.conv],  texts, 1, cfg->add_format == BENCH_ADD_CONTENT, cfg->async_add,
            conv->turn_ids[t.turn]};
        bench_api_add_body(&cl->body, &add);
        return;
    }
    locomo_turn q = lo->questions[k];
    const mg_locomo_conv *conv = &lo->convs[q.conv];
    o->op = BENCH_OP_SEARCH;
    o->path = "/product/search";
    unsigned top_k = cfg->top_k < 10 ? 10 : cfg->top_k;
    bench_api_search_body(&cl->body, lo->cube_ids[q.conv], conv->questions[q.turn].text, top_k,
                          cfg->search_extra);
}

struct match_ctx {
    const locomo_state *lo;
    size_t ti;
    uint32_t conv_index;
    const mg_locomo_question *q;
    size_t best;
    uint64_t unmatched;
};

static long turn_of(const struct match_ctx *m, const char *id, const char *memory,
                    const char *dia_id)
{
    const mg_locomo_conv *conv = &m->lo->convs[m->conv_index];
    if (id != NULL) {
        long g = idmap_get(&m->lo->map[m->ti], id);
        if (g >= 0)
            return m->lo->turns[g].conv == m->conv_index ? (long)m->lo->turns[g].turn : -2;
    }
    if (dia_id != NULL)
        for (size_t t = 0; t < conv->nturns; t++)
            if (strcmp(conv->turn_ids[t], dia_id) == 0)
                return (long)t;
    if (memory != NULL)
        for (size_t t = 0; t < conv->nturns; t++)
            if (strstr(memory, conv->turns[t]) != NULL)
                return (long)t;
    return -1;
}

static void on_memory(void *ctx, size_t rank, const char *id, const char *memory,
                      const char *dia_id)
{
    struct match_ctx *m = ctx;
    long t = turn_of(m, id, memory, dia_id);
    if (t == -1) {
        m->unmatched++;
        return;
    }
    for (size_t e = 0; e < m->q->nevidence; e++)
        if (t >= 0 && m->q->evidence[e] == (size_t)t && rank < m->best)
            m->best = rank;
}

void locomo_answer(run *r, const phase *ph, size_t ti, const req_op *o, const char *body,
                   size_t len)
{
    locomo_state *lo = &r->lo;
    if (ph->kind == PH_LOCOMO_ADD) {
        char id[128];
        if (lo->ids[ti] != NULL && bench_api_add_id(body, len, id, sizeof id)) {
            free(lo->ids[ti][o->index]);
            lo->ids[ti][o->index] = strdup(id);
        }
        return;
    }
    locomo_turn q = lo->questions[o->index];
    struct match_ctx m = {lo, ti, q.conv, &lo->convs[q.conv].questions[q.turn], SIZE_MAX, 0};
    if (bench_api_search_memories(body, len, on_memory, &m) < 0)
        return; /* not a search answer: counted as asked, no hit */
    for (int k = 0; k < BENCH_NUM_K; k++)
        if (m.best < bench_recall_k[k])
            atomic_fetch_add_explicit(&lo->hits[ti][k], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&lo->unmatched[ti], m.unmatched, memory_order_relaxed);
}

/* ---- the round ---- */

int locomo_round(run *r, mg_error *err)
{
    locomo_state *lo = &r->lo;
    const bench_config *cfg = r->cfg;
    for (size_t ti = 0; ti < r->nt; ti++) {
        lo->ids[ti] = calloc(lo->nturns ? lo->nturns : 1, sizeof *lo->ids[ti]);
        if (lo->ids[ti] == NULL)
            return mg_error_set(err, MG_ENOMEM, "out of memory");
    }
    phase ph;
    phase_init(&ph, "locomo add", PH_LOCOMO_ADD, COUNT_MEASURE, cfg->concurrency, 0);
    phase_rate(r, &ph);
    ph.nops = (uint64_t)lo->nturns * (ph.interval_ns > 0 ? r->nt : 1);
    int rc = run_phase(r, &ph, err);
    if (rc != MG_OK)
        return rc;
    for (size_t ti = 0; ti < r->nt; ti++)
        if (idmap_build(&lo->map[ti], lo->ids[ti], lo->nturns) != MG_OK)
            return mg_error_set(err, MG_ENOMEM, "out of memory");

    phase_init(&ph, "locomo search", PH_LOCOMO_SEARCH, COUNT_MEASURE, cfg->concurrency, 0);
    phase_rate(r, &ph);
    ph.nops = (uint64_t)lo->nquestions * (ph.interval_ns > 0 ? r->nt : 1);
    rc = run_phase(r, &ph, err);
    for (size_t ti = 0; ti < r->nt; ti++) {
        bench_target *t = r->t[ti];
        /* Every question asked counts, answered or not: a failed search is a
         * miss. */
        t->questions = t->ops[BENCH_OP_SEARCH].requests;
        for (int k = 0; k < BENCH_NUM_K; k++)
            t->hits[k] = atomic_load(&lo->hits[ti][k]);
        t->unmatched = atomic_load(&lo->unmatched[ti]);
    }
    return rc;
}
