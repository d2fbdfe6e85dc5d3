/*
 * A seeded synthetic corpus for the benchmark: many cubes of mixed sizes
 * (Zipf-distributed, like the users of a real service: a few large, many
 * small), memories that read like what an agent remembers about people
 * ("Maya adopted a beagle named Pepper last spring."), and questions in the
 * same vocabulary. Everything is a pure function of the seed: memory j of
 * cube i and op k of a run are the same text on every run and every machine,
 * so two targets, or two runs, see the same data.
 */
#ifndef MG_BENCH_CORPUS_H
#define MG_BENCH_CORPUS_H

#include "lib/error.h"

#include <stddef.h>
#include <stdint.h>

/* Longest text the generators write (NUL included). */
#define MG_CORPUS_TEXT_MAX 512

typedef struct mg_corpus_config {
    uint64_t seed;
    size_t cubes;       /* >= 1 */
    size_t memories;    /* preloaded memories over all cubes (each cube gets >= 1) */
    double zipf;        /* size skew: cube i's share is proportional to 1/(i+1)^zipf; 0 = equal */
    const char *prefix; /* cube ids are "<prefix>-c<i>" (copied) */
} mg_corpus_config;

typedef struct mg_corpus mg_corpus;

/* Builds the corpus layout (not the texts, which are generated on demand).
 * MG_EINVAL for 0 cubes, a cube prefix that would make ids outside
 * [A-Za-z0-9_.:@-] or longer than 128 bytes, or zipf < 0; MG_ENOMEM. */
int mg_corpus_new(const mg_corpus_config *cfg, mg_corpus **out, mg_error *err);

void mg_corpus_free(mg_corpus *c);

size_t mg_corpus_cubes(const mg_corpus *c);

/* Cube i's id (borrowed, lives as long as the corpus) and preload size. */
const char *mg_corpus_cube_id(const mg_corpus *c, size_t i);
size_t mg_corpus_cube_size(const mg_corpus *c, size_t i);

/* Preloaded memory number k (0 .. memories-1) over all cubes, in cube order:
 * its cube in *cube and its text in buf (cap bytes; MG_CORPUS_TEXT_MAX is
 * enough). Returns the text length. */
size_t mg_corpus_memory(const mg_corpus *c, size_t k, size_t *cube, char *buf, size_t cap);

/* The cube an op with random number r works on: drawn with the cubes' sizes
 * as weights, so large cubes get more traffic. */
size_t mg_corpus_pick_cube(const mg_corpus *c, uint64_t r);

/* A new memory (for ingest) or a question (for search) made from the random
 * stream *rng; returns the text length. */
size_t mg_corpus_sentence(uint64_t *rng, char *buf, size_t cap);
size_t mg_corpus_question(uint64_t *rng, char *buf, size_t cap);

/* splitmix64: the generator behind everything here; also a good hash to
 * derive one stream per (seed, op) pair. */
uint64_t mg_corpus_rand(uint64_t *state);
uint64_t mg_corpus_mix(uint64_t a, uint64_t b);

#endif
