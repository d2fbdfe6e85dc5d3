/*
 * Search results: merging the per-group answers of a survey, and MemOS's
 * dedup modes. Pure functions over plain data (no I/O, no allocation beyond
 * what they document), so they are unit-tested directly.
 *
 * A hit points into the reply message it came from (record and vector are
 * borrowed): the replies must outlive the hits.
 */
#ifndef MG_ROUTER_MERGE_H
#define MG_ROUTER_MERGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct mg_hit {
    uint32_t cube;          /* index in the search's cube list */
    float score;            /* raw inner product, as the node scored it */
    double relativity;      /* calibrated score reported as metadata.relativity */
    double rank;            /* ordering key: relativity plus any ranking hint */
    const uint8_t *record;  /* mg_item msgpack record (borrowed) */
    size_t record_len;
    const uint8_t *vec;     /* float32 values, unaligned (borrowed); NULL when absent */
    uint32_t dim;
} mg_hit;

/* Sorts by rank, best first; ties by record bytes so the order is stable
 * across runs. */
void mg_hits_sort(mg_hit *hits, size_t n);

/* k-way merge of lists that are each sorted best first (by rank) into out
 * (capacity k) with a heap: O(total + k log lists). Returns the number
 * written. `heap` is scratch space of n_lists entries. */
size_t mg_hits_merge(const mg_hit *const *lists, const size_t *lens, size_t n_lists, size_t k,
                     size_t *heap, mg_hit *out);

enum mg_dedup {
    MG_DEDUP_NO = 0,    /* "no": plain top-k */
    MG_DEDUP_EXACT,     /* null: drop memories whose text equals a better one's */
    MG_DEDUP_SIM,       /* "sim": skip a memory more similar than MG_DEDUP_SIM_MAX to a
                         * selected one */
    MG_DEDUP_MMR,       /* "mmr": maximal marginal relevance (MemOS's weights) */
};

/* Parses "no" | "sim" | "mmr" (and NULL for MG_DEDUP_EXACT); -1 otherwise. */
int mg_dedup_parse(const char *s);

#define MG_DEDUP_SIM_MAX 0.92     /* MemOS's threshold for "sim" */
#define MG_MMR_LAMBDA 0.8         /* weight of relevance against similarity */
#define MG_MMR_TAG_ALPHA 0.2      /* weight of the tag Jaccard penalty */
#define MG_MMR_PREFILL 5          /* best hits taken as they are before MMR starts */

/* Selects up to k of the n candidates (sorted best first) by `mode`; writes
 * their indices, in selection order, to sel (capacity k) and returns how many.
 * Similarity is the cosine of the first sim_dims dimensions of the hit
 * vectors (hits without a vector count as dissimilar); tags and texts are read
 * from the records. `scratch` holds n doubles. */
size_t mg_dedup_select(int mode, const mg_hit *cands, size_t n, size_t k, uint32_t sim_dims,
                       double *scratch, size_t *sel);

/* Cosine of the first `dims` dimensions of two unaligned float32 vectors
 * (0 when either part is zero). */
double mg_vec_cosine(const uint8_t *a, const uint8_t *b, uint32_t dims);

/* Record readers (mg_item msgpack records); pointers point into the record.
 * False when the record or the field is malformed or absent. */
bool mg_record_text(const uint8_t *rec, size_t len, const char **s, uint32_t *n);
bool mg_record_meta_str(const uint8_t *rec, size_t len, const char *key, const char **s,
                        uint32_t *n);
bool mg_record_id(const uint8_t *rec, size_t len, const uint8_t **id16);

#endif
