#include "workload.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void mg_workload_id(uint64_t k, uint8_t id[16])
{
    /* k's low 48 bits in bytes 0-5; then the version (4) and variant (10xx)
     * bits in their places and a fixed pattern. */
    static const uint8_t tail[10] = {0x40, 0x00, 0x80, 0x4d, 0x47, 0x6d, 0x65, 0x6d, 0x67, 0x21};
    for (int i = 0; i < 6; i++)
        id[i] = (uint8_t)(k >> (40 - 8 * i));
    memcpy(id + 6, tail, sizeof tail);
}

uint64_t mg_workload_k(const uint8_t id[16])
{
    uint8_t probe[16];
    uint64_t k = 0;
    for (int i = 0; i < 6; i++)
        k = (k << 8) | id[i];
    mg_workload_id(k, probe);
    return memcmp(probe, id, 16) == 0 ? k : UINT64_MAX;
}

int mg_workload_cube_cmd(mg_cmd *c, const char *cube_id, uint32_t dim, mg_error *err)
{
    c->kind = MG_CMD_CUBE_CREATE;
    if (snprintf(c->cube.cube_id, sizeof c->cube.cube_id, "%s", cube_id) >=
        (int)sizeof c->cube.cube_id)
        return mg_error_set(err, MG_EINVAL, "cube id too long");
    snprintf(c->cube.owner_id, sizeof c->cube.owner_id, "bench");
    snprintf(c->cube.created_at, sizeof c->cube.created_at, "2026-01-01T00:00:00.000000");
    snprintf(c->cube.embedder, sizeof c->cube.embedder, "hash");
    c->cube.dim = dim;
    return mg_cmd_validate(c, err);
}

/* xorshift64*: a cheap deterministic stream per memory. */
static uint64_t mix(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545F4914F6CDD1DULL;
}

static int make_item(uint64_t k, uint32_t dim, mg_item *it, float **vec, mg_error *err)
{
    char text[96];
    int len = snprintf(text, sizeof text, "memory %llu: the agent noted fact number %llu",
                       (unsigned long long)k, (unsigned long long)(k * 7919 % 100003));
    mg_workload_id(k, it->id);
    it->memory = strdup(text);
    it->memory_len = (size_t)len;
    it->metadata = json_pack("{s:s, s:s, s:s, s:[s]}", "user_id", "bench", "memory_type",
                             "LongTermMemory", "status", "activated", "tags", "synthetic");
    *vec = NULL;
    if (it->memory == NULL || it->metadata == NULL)
        return mg_error_set(err, MG_ENOMEM, "out of memory making memory %llu",
                            (unsigned long long)k);
    if (dim > 0) {
        float *v = malloc(dim * sizeof *v);
        if (v == NULL)
            return mg_error_set(err, MG_ENOMEM, "out of memory making a vector");
        uint64_t s = k * 0x9E3779B97F4A7C15ULL + 1;
        for (uint32_t i = 0; i < dim; i++)
            v[i] = (float)((double)(mix(&s) >> 11) / 9007199254740992.0 - 0.5);
        v[0] += 1.0f; /* never all zero */
        *vec = v;
    }
    return MG_OK;
}

int mg_workload_put_cmd(mg_cmd *c, const char *cube_id, uint64_t first, size_t count,
                        uint32_t dim, mg_error *err)
{
    c->kind = MG_CMD_MEM_PUT;
    snprintf(c->cube_id, sizeof c->cube_id, "%s", cube_id);
    for (size_t i = 0; i < count; i++) {
        mg_item it = {0};
        float *vec = NULL;
        int rc = make_item(first + i, dim, &it, &vec, err);
        if (rc == MG_OK)
            rc = mg_cmd_add_item(c, &it, vec, dim, err);
        if (rc != MG_OK) {
            mg_item_clear(&it);
            free(vec);
            return rc;
        }
    }
    return MG_OK;
}

int mg_workload_delete_cmd(mg_cmd *c, const char *cube_id, uint64_t first, size_t count,
                           mg_error *err)
{
    c->kind = MG_CMD_MEM_DELETE;
    snprintf(c->cube_id, sizeof c->cube_id, "%s", cube_id);
    c->ids = malloc((count ? count : 1) * sizeof *c->ids);
    if (c->ids == NULL)
        return mg_error_set(err, MG_ENOMEM, "out of memory for ids");
    for (size_t i = 0; i < count; i++)
        mg_workload_id(first + i, c->ids[i]);
    c->n_ids = count;
    return MG_OK;
}
