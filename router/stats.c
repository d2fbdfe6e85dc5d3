/*
 * The router's metrics (DESIGN §11), GET /metrics and GET /admin/stats.
 *
 * Recorded into the router's registry (lib/metrics.h), every series
 * registered at start-up, so a request costs two clock reads, one
 * histogram record and two or three atomic adds:
 *
 *   memgrid_http_request_seconds{endpoint}        first byte of the request
 *                                                 until its answer is queued
 *   memgrid_http_requests_total{endpoint,status}  answers by HTTP status (200
 *                                                 dense, the others sparse)
 *   memgrid_http_errors_total{endpoint}           answers with status >= 400
 *   memgrid_router_stage_seconds{endpoint,stage}  add and search: parse, embed,
 *                                                 route, scatter, merge
 *
 * `endpoint` is the route's path, a prefix route's with its parameter
 * ("/product/get_memory/{memory_id}", "/admin/slots/{cube_id}"), "unmatched"
 * for 404/405 answers to unknown paths.
 *
 * /metrics renders the router's registry, then memgrid_node_up{node} and each
 * node's registry (fetched with the STATS op) labelled node="<id>". A node
 * that does not answer in time reads memgrid_node_up 0 and its series are
 * absent from that scrape.
 *
 * /admin/stats merges the router's and every node's registries (histograms
 * bucket by bucket, counters added) and answers percentiles per endpoint,
 * stage, node op and node stage, plus the nodes' gauges. A node op's replies
 * other than OK are "redirects" when the router's client re-sends them by
 * design (ENOTLEADER, EWRONGGROUP, EBUSY: router/client.h, "Retries"), else
 * "errors".
 */
#include "api.h"

#include "../lib/clock.h"
#include "../lib/log.h"
#include "../lib/metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STATS_TIMEOUT_MS 2000

static const char *const stage_names[ROUTER_STAGE_COUNT_] = {"parse", "embed", "route", "scatter",
                                                             "merge"};
static const char *const op_endpoints[ROUTER_OP_COUNT_] = {"/product/add", "/product/search"};

/* The statuses the API answers; any other counts as "other". */
static const unsigned known_statuses[] = {200, 400, 403, 404, 405, 409,
                                          413, 422, 500, 502, 503, 504};
#define N_STATUS (sizeof known_statuses / sizeof known_statuses[0] + 1)

typedef struct endpoint_stats {
    mg_hist *latency;
    mg_counter *by_status[N_STATUS];
    mg_counter *errors;
} endpoint_stats;

typedef struct router_stats router_stats;

struct router_stats {
    mg_metrics *reg;
    endpoint_stats *endpoints; /* mg_n_routes + 1 ("unmatched" last) */
    mg_hist *stage[ROUTER_OP_COUNT_][ROUTER_STAGE_COUNT_];
};

static size_t status_index(unsigned status)
{
    for (size_t i = 0; i + 1 < N_STATUS; i++)
        if (known_statuses[i] == status)
            return i;
    return N_STATUS - 1;
}

/* The endpoint label of a route (NULL: unmatched) into buf. A prefix route
 * is named with its parameter as /openapi.json names it (router/api_meta.c):
 * the admin one ends with a cube id, the other with a memory id. */
static const char *endpoint_label(const mg_route *rt, char *buf, size_t cap)
{
    if (rt == NULL)
        return "unmatched";
    const char *param = "";
    if (rt->prefix)
        param = strncmp(rt->path, "/admin/", 7) == 0 ? "{cube_id}" : "{memory_id}";
    snprintf(buf, cap, "%s%s", rt->path, param);
    return buf;
}

/* Every endpoint has a dense 200 series but "unmatched" (only 404/405). */
static bool register_endpoint(mg_metrics *reg, const char *endpoint, bool matched,
                              endpoint_stats *es)
{
    const char *const labels[] = {"endpoint", endpoint, NULL};
    es->latency = mg_metrics_histogram(
        reg, "memgrid_http_request_seconds",
        "HTTP request time by endpoint, from the request's first byte to its answer queued.",
        labels, 0);
    es->errors =
        mg_metrics_counter(reg, "memgrid_http_errors",
                           "HTTP answers with a status of 400 or more, by endpoint.", labels, 0);
    if (es->latency == NULL || es->errors == NULL)
        return false;
    for (size_t i = 0; i < N_STATUS; i++) {
        char status[8];
        if (i + 1 < N_STATUS)
            snprintf(status, sizeof status, "%u", known_statuses[i]);
        else
            snprintf(status, sizeof status, "other");
        es->by_status[i] =
            mg_metrics_counter(reg, "memgrid_http_requests", "HTTP answers by endpoint and status.",
                               (const char *const[]){"endpoint", endpoint, "status", status, NULL},
                               i == 0 && matched ? 0 : MG_METRIC_SPARSE);
        if (es->by_status[i] == NULL)
            return false;
    }
    return true;
}

int router_stats_open(mg_router *r)
{
    router_stats *s = calloc(1, sizeof *s);
    if (s == NULL)
        return MG_ENOMEM;
    r->stats = s;
    s->reg = mg_metrics_new();
    s->endpoints = calloc(mg_n_routes + 1, sizeof *s->endpoints);
    if (s->reg == NULL || s->endpoints == NULL)
        return MG_ENOMEM;
    for (size_t i = 0; i <= mg_n_routes; i++) {
        char buf[128];
        const char *ep = endpoint_label(i < mg_n_routes ? &mg_routes[i] : NULL, buf, sizeof buf);
        if (!register_endpoint(s->reg, ep, i < mg_n_routes, &s->endpoints[i]))
            return MG_ENOMEM;
    }
    for (int op = 0; op < ROUTER_OP_COUNT_; op++)
        for (int st = 0; st < ROUTER_STAGE_COUNT_; st++) {
            s->stage[op][st] = mg_metrics_histogram(
                s->reg, "memgrid_router_stage_seconds",
                "Stages of adds and searches on the router: parse (JSON and validation), "
                "embed, route (cube lookups and command building), scatter (the cluster "
                "round trips), merge (top-k, dedup and the answer).",
                (const char *const[]){"endpoint", op_endpoints[op], "stage", stage_names[st], NULL},
                0);
            if (s->stage[op][st] == NULL)
                return MG_ENOMEM;
        }
    return MG_OK;
}

void router_stats_close(mg_router *r)
{
    router_stats *s = r->stats;
    if (s == NULL)
        return;
    mg_metrics_free(s->reg);
    free(s->endpoints);
    free(s);
    r->stats = NULL;
}

void router_stats_request(mg_router *r, const mg_route *route, unsigned status, uint64_t ns)
{
    router_stats *s = r->stats;
    size_t i = route != NULL ? (size_t)(route - mg_routes) : mg_n_routes;
    endpoint_stats *es = &s->endpoints[i];
    mg_hist_record(es->latency, ns);
    mg_counter_inc(es->by_status[status_index(status)]);
    if (status >= 400)
        mg_counter_inc(es->errors);
}

void router_stage_ns(mg_router *r, int op, int stage, uint64_t ns)
{
    mg_hist_record(r->stats->stage[op][stage], ns);
}

void router_stage(mg_router *r, int op, int stage, uint64_t *t)
{
    uint64_t now = mg_clock_mono_ns();
    mg_hist_record(r->stats->stage[op][stage], now - *t);
    *t = now;
}

/* ---- the nodes' registries ------------------------------------------------- */

typedef struct node_answer {
    uint64_t id;
    bool up;
    char why[MG_ERRMSG_MAX]; /* when not up */
    mg_metrics *reg;         /* decoded "hist" */
    int64_t groups, leaders, memories, cubes;
} node_answer;

static int read_gauges(mg_mp_reader *rd, node_answer *a)
{
    uint32_t n;
    if (mg_mp_read_map(rd, &n) != MG_OK)
        return MG_ECORRUPT;
    for (uint32_t i = 0; i < n; i++) {
        int64_t *dst = mg_mp_peek_str_eq(rd, "groups")     ? &a->groups
                       : mg_mp_peek_str_eq(rd, "leaders")  ? &a->leaders
                       : mg_mp_peek_str_eq(rd, "memories") ? &a->memories
                       : mg_mp_peek_str_eq(rd, "cubes")    ? &a->cubes
                                                           : NULL;
        if (mg_mp_skip(rd) != MG_OK)
            return MG_ECORRUPT;
        if (dst == NULL ? mg_mp_skip(rd) != MG_OK : mg_mp_read_i64(rd, dst) != MG_OK)
            return MG_ECORRUPT;
    }
    return MG_OK;
}

/* Decodes a STATS reply body into a. */
static int read_stats_body(const mg_wire_rep *rep, node_answer *a, mg_error *err)
{
    mg_mp_reader rd = mg_wire_body(rep->body, rep->body_len);
    uint32_t n;
    if (mg_mp_read_map(&rd, &n) != MG_OK)
        return mg_error_set(err, MG_ECORRUPT, "STATS reply is not a map");
    for (uint32_t i = 0; i < n; i++) {
        bool hist = mg_mp_peek_str_eq(&rd, "hist"), gauges = mg_mp_peek_str_eq(&rd, "gauges");
        if (mg_mp_skip(&rd) != MG_OK)
            return mg_error_set(err, MG_ECORRUPT, "STATS reply: malformed map");
        int rc;
        if (hist && a->reg == NULL)
            rc = mg_metrics_read(&rd, &a->reg, err);
        else if (gauges)
            rc = read_gauges(&rd, a) == MG_OK
                     ? MG_OK
                     : mg_error_set(err, MG_ECORRUPT, "STATS reply: bad \"gauges\"");
        else
            rc = mg_mp_skip(&rd) == MG_OK
                     ? MG_OK
                     : mg_error_set(err, MG_ECORRUPT, "STATS reply: malformed map");
        if (rc != MG_OK)
            return rc;
    }
    return a->reg != NULL ? MG_OK : mg_error_set(err, MG_ECORRUPT, "STATS reply: no \"hist\"");
}

/* The nodes to ask: those of the current map, or before any map every node
 * the router knows by id (its seeds). *ids malloc'd. */
static int stats_node_ids(mg_router *r, uint64_t **ids, size_t *n)
{
    mg_cmap *m = malloc(sizeof *m);
    size_t cap = MG_CMAP_NODES_MAX + mg_client_n_nodes(r->client);
    uint64_t *out = malloc(cap * sizeof *out);
    if (m == NULL || out == NULL) {
        free(m);
        free(out);
        return MG_ENOMEM;
    }
    mg_client_map(r->client, m);
    size_t k = 0;
    if (m->epoch != 0) {
        for (uint32_t i = 0; i < m->n_nodes && k < cap; i++)
            out[k++] = m->nodes[i].id;
    } else {
        size_t known = mg_client_n_nodes(r->client);
        for (size_t i = 0; i < known && k < cap; i++) {
            uint64_t id = mg_client_node_id(r->client, i);
            bool dup = id == 0;
            for (size_t j = 0; j < k && !dup; j++)
                dup = out[j] == id;
            if (!dup)
                out[k++] = id;
        }
    }
    free(m);
    *ids = out;
    *n = k;
    return MG_OK;
}

/* Asks every node of the map for STATS at once. *out is a malloc'd array of
 * *n answers (free with answers_free); nodes that failed are there with
 * up = false. */
static int fetch_nodes(mg_router *r, node_answer **out, size_t *n)
{
    static const uint8_t empty_map[1] = {0x80};
    uint64_t *ids;
    size_t count;
    if (stats_node_ids(r, &ids, &count) != MG_OK)
        return MG_ENOMEM;
    node_answer *ans = calloc(count ? count : 1, sizeof *ans);
    mg_client_call *calls = calloc(count ? count : 1, sizeof *calls);
    if (ans == NULL || calls == NULL) {
        free(ans);
        free(calls);
        free(ids);
        return MG_ENOMEM;
    }
    mg_client_call_nodes(r->client, ids, count, MG_OP_STATS, empty_map, sizeof empty_map,
                         STATS_TIMEOUT_MS, calls);
    for (size_t i = 0; i < count; i++) {
        node_answer *a = &ans[i];
        a->id = ids[i];
        mg_error err = {0};
        int rc = calls[i].status;
        if (rc == MG_OK)
            rc = read_stats_body(&calls[i].reply.rep, a, &err);
        else
            err = calls[i].err;
        a->up = rc == MG_OK;
        if (!a->up) {
            snprintf(a->why, sizeof a->why, "%s", err.msg[0] ? err.msg : mg_strerror(rc));
            mg_debug("router.stats_node", "node=%llu code=%s err=\"%s\"", (unsigned long long)a->id,
                     mg_errname(rc), a->why);
        }
        mg_client_reply_free(&calls[i].reply);
    }
    free(calls);
    free(ids);
    *out = ans;
    *n = count;
    return MG_OK;
}

static void answers_free(node_answer *ans, size_t n)
{
    for (size_t i = 0; ans != NULL && i < n; i++)
        mg_metrics_free(ans[i].reg);
    free(ans);
}

/* ---- GET /metrics ------------------------------------------------------------ */

void api_metrics(mg_router *r, const mg_api_req *req, mg_api_resp *resp)
{
    (void)req;
    node_answer *ans = NULL;
    size_t n = 0;
    mg_metrics *scrape = mg_metrics_new();
    mg_metrics_source *src = NULL;
    char(*ids)[24] = NULL;
    if (scrape == NULL || fetch_nodes(r, &ans, &n) != MG_OK)
        goto err_nomem;
    src = calloc(n + 2, sizeof *src);
    ids = calloc(n ? n : 1, sizeof *ids);
    if (src == NULL || ids == NULL)
        goto err_nomem;
    size_t k = 0;
    src[k++] = (mg_metrics_source){.m = r->stats->reg};
    src[k++] = (mg_metrics_source){.m = scrape};
    for (size_t i = 0; i < n; i++) {
        snprintf(ids[i], sizeof ids[i], "%llu", (unsigned long long)ans[i].id);
        mg_gauge *up = mg_metrics_gauge(scrape, "memgrid_node_up",
                                        "1 when the node answered this scrape's STATS request.",
                                        (const char *const[]){"node", ids[i], NULL}, 0);
        if (up == NULL)
            goto err_nomem;
        mg_gauge_set(up, ans[i].up);
        if (ans[i].up)
            src[k++] =
                (mg_metrics_source){.m = ans[i].reg, .label_key = "node", .label_value = ids[i]};
    }
    char *text;
    size_t len;
    if (mg_metrics_render(src, k, &text, &len) != MG_OK)
        goto err_nomem;
    free(resp->body);
    resp->status = 200;
    resp->body = text;
    resp->len = len;
    resp->content_type = "text/plain; version=0.0.4; charset=utf-8";
    goto done;

err_nomem:
    api_fail(resp, 500, "out of memory rendering metrics");
done:
    free(src);
    free(ids);
    mg_metrics_free(scrape);
    answers_free(ans, n);
}

/* ---- GET /admin/stats ------------------------------------------------------- */

static const double quantiles[] = {0.5, 0.9, 0.99, 0.999, 1.0};
static const char *const quantile_keys[] = {"p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms"};

/* Adds "count", "errors" when `errors` and "redirects" when `redirects` (0
 * until add_errors fills them: they hold their place in the key order),
 * "mean_ms", "p50_ms", ..., "max_ms" of a histogram to row. */
static void hist_fill(json_t *row, const mg_hist *h, bool errors, bool redirects)
{
    uint64_t q[5];
    mg_hist_quantiles(h, quantiles, 5, q);
    json_object_set_new(row, "count", json_integer((json_int_t)mg_hist_count(h)));
    if (errors)
        json_object_set_new(row, "errors", json_integer(0));
    if (redirects)
        json_object_set_new(row, "redirects", json_integer(0));
    json_object_set_new(row, "mean_ms", json_real(mg_hist_mean(h) / 1e6));
    for (size_t i = 0; i < 5; i++)
        json_object_set_new(row, quantile_keys[i], json_real((double)q[i] / 1e6));
}

typedef struct stats_doc {
    json_t *endpoints, *stages, *ops, *node_stages;
    const mg_metrics *merged;
} stats_doc;

/* Node replies that send the router's client to another replica or group,
 * or back after a pause, and that it re-sends by itself within the call's
 * deadline (router/client.h, "Retries"): the leader is elsewhere, the map
 * is stale, a leader just elected is catching up (or a leadership or
 * membership change is in progress). A call that still fails counts in its
 * endpoint's errors. */
static const int redirect_codes[] = {MG_ENOTLEADER, MG_EWRONGGROUP, MG_EBUSY};

static bool is_redirect(const char *status)
{
    for (size_t i = 0; i < sizeof redirect_codes / sizeof redirect_codes[0]; i++)
        if (strcmp(status, mg_errname(redirect_codes[i])) == 0)
            return true;
    return false;
}

/* Errors (and, for ops, redirects) of an endpoint or an op, from the merged
 * counters. */
typedef struct error_sum {
    const char *family; /* counter family */
    const char *key;    /* label to match */
    const char *value;
    uint64_t errors;
    uint64_t redirects;
} error_sum;

static void sum_errors(const mg_metric_view *v, void *arg)
{
    error_sum *e = arg;
    if (v->type != MG_METRIC_COUNTER || strcmp(v->name, e->family) != 0)
        return;
    const char *l = mg_metric_label(v, e->key);
    if (l == NULL || strcmp(l, e->value) != 0)
        return;
    const char *status = mg_metric_label(v, "status");
    if (strcmp(e->family, "memgrid_node_requests") == 0 && status != NULL) {
        if (strcmp(status, mg_errname(MG_OK)) == 0)
            return;
        if (is_redirect(status)) {
            e->redirects += mg_counter_get(v->counter);
            return;
        }
    }
    e->errors += mg_counter_get(v->counter);
}

static void collect_row(const mg_metric_view *v, void *arg)
{
    stats_doc *d = arg;
    if (v->type != MG_METRIC_HISTOGRAM || mg_hist_count(v->hist) == 0)
        return;
    const char *endpoint = mg_metric_label(v, "endpoint");
    const char *stage = mg_metric_label(v, "stage");
    const char *op = mg_metric_label(v, "op");
    json_t *into = NULL;
    const char *k1 = NULL, *v1 = NULL, *k2 = NULL, *v2 = NULL;
    if (strcmp(v->name, "memgrid_http_request_seconds") == 0 && endpoint != NULL) {
        into = d->endpoints;
        k1 = "endpoint", v1 = endpoint;
    } else if (strcmp(v->name, "memgrid_router_stage_seconds") == 0 && endpoint && stage) {
        into = d->stages;
        k1 = "endpoint", v1 = endpoint, k2 = "stage", v2 = stage;
    } else if (strcmp(v->name, "memgrid_node_op_seconds") == 0 && op != NULL) {
        into = d->ops;
        k1 = "op", v1 = op;
    } else if (strcmp(v->name, "memgrid_node_stage_seconds") == 0 && stage != NULL) {
        into = d->node_stages;
        k1 = "stage", v1 = stage;
    } else {
        return;
    }
    json_t *row = json_object();
    json_object_set_new(row, k1, json_string(v1));
    if (k2 != NULL)
        json_object_set_new(row, k2, json_string(v2));
    hist_fill(row, v->hist, into == d->endpoints || into == d->ops, into == d->ops);
    json_array_append_new(into, row);
}

/* The "errors" of each endpoint and op row and the "redirects" of each op
 * row, once the walk that built them is over (the walk holds the registry's
 * lock). */
static void add_errors(const stats_doc *d)
{
    size_t i;
    json_t *row;
    json_array_foreach(d->endpoints, i, row)
    {
        error_sum e = {.family = "memgrid_http_errors",
                       .key = "endpoint",
                       .value = json_string_value(json_object_get(row, "endpoint"))};
        mg_metrics_walk(d->merged, sum_errors, &e);
        json_object_set_new(row, "errors", json_integer((json_int_t)e.errors));
    }
    json_array_foreach(d->ops, i, row)
    {
        error_sum e = {.family = "memgrid_node_requests",
                       .key = "op",
                       .value = json_string_value(json_object_get(row, "op"))};
        mg_metrics_walk(d->merged, sum_errors, &e);
        json_object_set_new(row, "errors", json_integer((json_int_t)e.errors));
        json_object_set_new(row, "redirects", json_integer((json_int_t)e.redirects));
    }
}

void api_admin_stats(mg_router *r, const mg_api_req *req, mg_api_resp *resp)
{
    (void)req;
    node_answer *ans = NULL;
    size_t n = 0;
    mg_metrics *merged = mg_metrics_new();
    if (merged == NULL || fetch_nodes(r, &ans, &n) != MG_OK ||
        mg_metrics_merge(merged, r->stats->reg) == MG_ENOMEM) {
        api_fail(resp, 500, "out of memory collecting stats");
        goto done;
    }
    json_t *nodes = json_array();
    int64_t up = 0, replicas = 0, leaders = 0, memories = 0, cubes = 0;
    for (size_t i = 0; i < n; i++) {
        const node_answer *a = &ans[i];
        json_t *o = json_pack("{s:I,s:b}", "node", (json_int_t)a->id, "up", a->up);
        if (a->up) {
            if (mg_metrics_merge(merged, a->reg) == MG_ENOMEM) {
                json_decref(o);
                json_decref(nodes);
                api_fail(resp, 500, "out of memory collecting stats");
                goto done;
            }
            json_object_set_new(o, "groups", json_integer(a->groups));
            json_object_set_new(o, "leaders", json_integer(a->leaders));
            json_object_set_new(o, "memories", json_integer(a->memories));
            json_object_set_new(o, "cubes", json_integer(a->cubes));
            up++;
            replicas += a->groups;
            leaders += a->leaders;
            memories += a->memories;
            cubes += a->cubes;
        } else {
            json_object_set_new(o, "error", json_string(a->why));
        }
        json_array_append_new(nodes, o);
    }
    stats_doc d = {.endpoints = json_array(),
                   .stages = json_array(),
                   .ops = json_array(),
                   .node_stages = json_array(),
                   .merged = merged};
    mg_metrics_walk(merged, collect_row, &d);
    add_errors(&d);
    json_t *data = json_object();
    json_object_set_new(data, "endpoints", d.endpoints);
    json_object_set_new(data, "stages", d.stages);
    json_object_set_new(data, "ops", d.ops);
    json_object_set_new(data, "node_stages", d.node_stages);
    json_object_set_new(data, "nodes", nodes);
    json_object_set_new(data, "cluster",
                        json_pack("{s:I,s:I,s:I,s:I,s:I,s:I}", "nodes", (json_int_t)n, "nodes_up",
                                  (json_int_t)up, "replicas", (json_int_t)replicas, "leaders",
                                  (json_int_t)leaders, "memories", (json_int_t)memories, "cubes",
                                  (json_int_t)cubes));
    api_ok(resp, up == (int64_t)n ? "ok" : "some nodes did not answer: their figures are missing",
           data);
done:
    mg_metrics_free(merged);
    answers_free(ans, n);
}
