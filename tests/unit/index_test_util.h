/*
 * Helpers shared by index_test.c and index_concurrency_test.c (header-only,
 * static): seeded randomness, and memories whose id encodes their key
 * (big-endian, so id order is key order) and whose vector is a pure function
 * of (key, version), so that a test can recompute what any returned score
 * must be.
 */
#ifndef MG_TEST_INDEX_TEST_UTIL_H
#define MG_TEST_INDEX_TEST_UTIL_H

#include "storage/index.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

/* The run's seed: each test binary has its own (one translation unit). */
static uint64_t seed;

static inline uint64_t rnd(uint64_t *s) /* splitmix64 */
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Roughly normal (sum of four uniforms), unit variance. */
static inline float gauss(uint64_t *s)
{
    uint64_t r = rnd(s);
    double sum = (double)(r & 0xffff) + (double)((r >> 16) & 0xffff) +
                 (double)((r >> 32) & 0xffff) + (double)(r >> 48);
    return (float)((sum - 131070.0) / 37837.2);
}

static inline void make_id(uint64_t key, uint8_t id[16])
{
    for (int i = 0; i < 8; i++)
        id[i] = (uint8_t)(key >> (56 - 8 * i));
    memset(id + 8, 0xa5, 8);
}

static inline uint64_t id_key(const uint8_t id[16])
{
    uint64_t key = 0;
    for (int i = 0; i < 8; i++)
        key = key << 8 | id[i];
    return key;
}

/* The vector of (key, version) in domain `dom`: not normalized, on purpose. */
static inline void make_vec(uint64_t dom, uint64_t key, unsigned version, uint32_t dim, float *out)
{
    uint64_t s = seed ^ (dom * 0x100000001b3ULL) ^ (key * 2 + version) * 0x9e3779b97f4a7c15ULL;
    for (uint32_t i = 0; i < dim; i++)
        out[i] = 3.0f * gauss(&s);
}

static inline double dot_normalized(const float *a, const float *b, uint32_t dim)
{
    double ab = 0, aa = 0, bb = 0;
    for (uint32_t i = 0; i < dim; i++) {
        ab += (double)a[i] * b[i];
        aa += (double)a[i] * a[i];
        bb += (double)b[i] * b[i];
    }
    return ab / sqrt(aa * bb);
}

/* Sets the seed from MG_TEST_SEED, or else the clock, and prints it so that a
 * failing run of `binary` can be replayed. */
static inline void seed_init(const char *binary)
{
    const char *env = getenv("MG_TEST_SEED");
    seed = env ? strtoull(env, NULL, 0) : (uint64_t)time(NULL);
    print_message("%s seed %llu (replay with MG_TEST_SEED)\n", binary, (unsigned long long)seed);
}

#define FAIL(...) fail_msg(__VA_ARGS__)
#define SEED (unsigned long long)seed

static inline mg_index *new_index(bool int8)
{
    mg_index_options o = {.int8 = int8};
    mg_index *ix = NULL;
    mg_error err;
    assert_int_equal(mg_index_create(&o, &ix, &err), MG_OK);
    return ix;
}

static inline void add(mg_index *ix, const char *cube, uint64_t key, const float *v, uint32_t dim)
{
    uint8_t id[16];
    mg_error err;
    make_id(key, id);
    int rc = mg_index_add(ix, cube, id, v, dim, &err);
    if (rc != MG_OK)
        FAIL("add %s/%llu: %s", cube, (unsigned long long)key, err.msg);
}

#endif
