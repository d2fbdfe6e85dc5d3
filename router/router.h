/*
 * The router (DESIGN §2, §5, §7, §10): the MemOS-compatible HTTP API in
 * front of the cluster. It parses and validates requests, embeds texts,
 * builds write commands (cluster/command.h) and sends them to the leader of
 * the cube's shard group, scatters searches to the nodes with an nng survey
 * and merges the answers. It keeps no data of its own: any number of routers
 * may front one cluster.
 *
 * Threads: libmicrohttpd runs the HTTP connections on its own threads and
 * never waits for the cluster: a request that needs the cluster is handed to
 * a fixed pool of router workers while its connection is suspended, and the
 * connection is resumed when the answer is ready. nng runs its own threads.
 *
 * Placement: slot = XXH3_64bits(cube_id) % MG_ROUTER_SLOTS; the cluster map
 * (lib/cmap.h, fetched from the meta group through the seeds) gives the data
 * group and its replicas, the first of them the node first asked (its
 * presumed leader); NOT_LEADER answers move that guess, MG_EWRONGGROUP
 * refreshes the map (router/client.h).
 */
#ifndef MG_ROUTER_H
#define MG_ROUTER_H

#include "../lib/error.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MG_ROUTER_SLOTS 4096
#define MG_ROUTER_GROUPS_MAX 1024   /* group ids 0 .. MG_ROUTER_GROUPS_MAX - 1 */
#define MG_ROUTER_NODES_MAX 256

/* One node the router talks to. */
typedef struct mg_router_node {
    uint64_t node_id;        /* as in the node's config and SEARCH "assign" */
    const char *rpc_url;     /* the node's nng rep URL */
    const char *survey_url;  /* the node's nng respondent URL */
} mg_router_node;

/* Request limits (DESIGN §10); 0 means the default given. */
typedef struct mg_router_limits {
    size_t max_body_bytes;   /* HTTP request body: 8 MiB */
    size_t max_text_bytes;   /* one memory's text: MG_MEMORY_TEXT_MAX (64 KiB) */
    size_t max_query_bytes;  /* a search query: 16 KiB */
    uint32_t max_top_k;      /* search top_k: 1000 */
    size_t max_items;        /* messages / memories of one add, ids of one request: 10000 */
    size_t max_cubes;        /* cubes of one search or delete: 64 */
    uint32_t max_page_size;  /* get_memory page_size and get_all pages: 10000 */
} mg_router_limits;

typedef struct mg_router_config {
    const char *listen_host;        /* IPv4 literal; NULL = "127.0.0.1" */
    uint16_t listen_port;           /* 0 = any free port (see mg_router_port) */

    /* Where the cluster is (router/client.h): rpc URLs of some nodes, used to
     * find the meta group and its map; the map names every other node. */
    const char *const *seeds;       /* copied */
    size_t n_seeds;
    const char *map_cache;          /* NULL = none (client.h) */

    /* The embedder (router/embed.h), borrowed: it must outlive the router.
     * NULL = the router opens the built-in hash embedder at embed_dim. */
    struct mg_embedder *embedder;
    uint32_t embed_dim;             /* hash dimension when embedder is NULL; 0 = 384 */
    /* Score calibration of the hash embedder: the reported relativity is
     * 1 - exp(-raw / scale) (docs/API.md, "relativity"); 0 = 0.25. Other
     * embedders report the cosine as it is. */
    double relativity_scale;
    /* Chat model for mode "fine" (router/llm.h), borrowed; NULL = fine mode
     * answers 400. */
    struct mg_llm *llm;

    unsigned http_threads;          /* libmicrohttpd thread pool; 0 = 2 */
    unsigned workers;               /* router workers (requests waiting on the cluster
                                     * at once); 0 = 64 */
    unsigned call_timeout_ms;       /* a request to the cluster, retries included; 0 = 5000 */
    unsigned survey_timeout_ms;     /* one search survey round; 0 = 2000 */
    mg_router_limits limits;
    const char *version;            /* reported by /health; NULL = the build's */
} mg_router_config;

typedef struct mg_router mg_router;

/* Initializes the cluster as POST /admin/init does (router/admin.h) when
 * the meta group holds no map yet: data groups 1..groups with `replicas`
 * replicas each on the nodes the router knows (its seeds). *created says
 * whether it did (false: there was a map already, which is kept). `memgrid
 * serve` calls it at every start. Any thread but the router's own. */
int mg_router_init_cluster(mg_router *r, uint32_t groups, uint32_t replicas, bool *created,
                           mg_error *err);

/* Fills *cfg with zeros and the defaults above (no nodes). */
void mg_router_config_default(mg_router_config *cfg);

/* Opens the nng sockets (dialing does not wait for the nodes), starts the
 * workers and listens for HTTP. cfg is copied. Errors: MG_EINVAL for a bad
 * config, MG_EUNAVAIL when the address cannot be listened on (in use), MG_EIO,
 * MG_ENOMEM; on error nothing is left running. Released with mg_router_stop. */
int mg_router_start(const mg_router_config *cfg, mg_router **out, mg_error *err);

/* The TCP port the router listens on (the chosen one when 0 was asked). */
uint16_t mg_router_port(const mg_router *r);

/* Epoch of the cluster map the router holds (0: none yet). */
uint64_t mg_router_epoch(mg_router *r);

/* MG_OK when the router has a cluster map (asking the seeds for one when it
 * has none), else MG_EUNAVAIL with the reason in err: no seed answered, the
 * cluster's meta group is not reachable, or the cluster is not initialized. */
int mg_router_need_map(mg_router *r, mg_error *err);

/* Stops accepting, finishes the requests in flight (their cluster calls end
 * at their deadline at the latest), stops the workers, closes the sockets and
 * frees. Any thread but a router or nng one; NULL is a no-op. */
void mg_router_stop(mg_router *r);

#endif
