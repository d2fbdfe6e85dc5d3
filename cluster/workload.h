/*
 * Synthetic memories for tests, tools and benchmarks of shard groups: memory
 * number k always has the same id, text, metadata and vector, so replicas,
 * test drivers and replays agree on what "memory k" is without shipping it.
 */
#ifndef MG_CLUSTER_WORKLOAD_H
#define MG_CLUSTER_WORKLOAD_H

#include "../lib/error.h"
#include "command.h"

#include <stddef.h>
#include <stdint.h>

/* A version-4-shaped UUID whose first 6 bytes are k (big-endian, k < 2^48). */
void mg_workload_id(uint64_t k, uint8_t id[16]);

/* The k of an id made by mg_workload_id (UINT64_MAX when it is not one). */
uint64_t mg_workload_k(const uint8_t id[16]);

/* A cube_create command for `cube_id` with dimension dim (owner "bench").
 * *c must be zeroed; clear it with mg_cmd_clear. */
int mg_workload_cube_cmd(mg_cmd *c, const char *cube_id, uint32_t dim, mg_error *err);

/* A mem_put of memories first .. first+count-1 into cube_id, each with a
 * dim-dimensional vector (dim 0: no vectors). *c must be zeroed. */
int mg_workload_put_cmd(mg_cmd *c, const char *cube_id, uint64_t first, size_t count,
                        uint32_t dim, mg_error *err);

/* A mem_delete of memories first .. first+count-1. */
int mg_workload_delete_cmd(mg_cmd *c, const char *cube_id, uint64_t first, size_t count,
                           mg_error *err);

#endif
