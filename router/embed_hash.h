/*
 * The built-in `hash` embedder (DESIGN §9): deterministic feature hashing of
 * words, word pairs and character trigrams into a fixed dimension. No model,
 * no corpus statistics, no state: a few microseconds per text, and the same
 * floats on every machine. The router embeds a memory before its write is
 * proposed and a query before its search is scattered, so every replica
 * stores the same vector and search compares by inner product.
 *
 * COMPATIBILITY CONTRACT. Every stored vector depends on the exact algorithm
 * below. Any change to it (tokenizer, word lists, stemmer, seeds, weights,
 * probes, reserved dimensions) must bump MG_EMBED_HASH_VERSION, and cubes
 * embedded with another version must be re-embedded.
 *
 * Algorithm, version 1 (D = dim):
 *  1. Input must be valid UTF-8 without NUL (mg_utf8_valid).
 *  2. Tokens: maximal runs of word characters, decoded per code point. Word
 *     characters are ASCII letters and digits and every code point from
 *     U+00C0 up except U+00D7, U+00F7, U+2000-U+2BFF (punctuation, symbols,
 *     arrows, shapes), U+3000-U+303F, U+FE00-U+FE0F, U+FE30-U+FE4F, the
 *     fullwidth ASCII punctuation in U+FF00-U+FF65, U+1F000-U+1FAFF (emoji)
 *     and U+E0000 up. Everything else (ASCII punctuation and the apostrophe
 *     included: "don't" is "don" "t") separates tokens. A run longer than
 *     64 bytes is cut into pieces of at most 64 bytes at code-point
 *     boundaries.
 *  3. Lower-casing, locale-free: A-Z, U+00C0-U+00DE (not U+00D7), Latin
 *     Extended-A pairs, U+0178, Greek U+0391-U+03A9, Cyrillic U+0400-U+042F
 *     map to their small letters (each keeps its UTF-8 length); nothing else
 *     changes.
 *  4. Stop words (a fixed list of ~150 English function words and contraction
 *     pieces, see embed_hash.c) are dropped. If that leaves no token, the
 *     stop words are kept instead.
 *  5. Term: a token of ASCII letters only, 3 bytes or longer, is stemmed by
 *     Porter's step 1 (1a plurals, 1b -ed/-ing with its e/double-consonant
 *     repairs, 1c final y -> i); any other token is its own term.
 *  6. Features of the kept tokens, in order, each hashed with XXH3-64:
 *     - word:   XXH3(term, SEED_WORD); kind WORD, weight 8, or kind COMMON,
 *               weight 2, when the lower-cased token is in the fixed list of
 *               common conversational words (see embed_hash.c);
 *     - pair:   XXH3(term, seed = hash of the previous kept token's word
 *               feature XOR SEED_PAIR), weight 1;
 *     - trigram (not for COMMON words): every 3 consecutive code points of
 *               "^" + token + "$" (the lower-cased token, not the term),
 *               XXH3(bytes, SEED_TRIGRAM), weight 1.
 *     If no token exists at all (empty or punctuation-only text), the one
 *     feature is XXH3(text trimmed of ASCII blanks, SEED_RAW), weight 8; the
 *     empty text thus has a fixed, well-defined vector.
 *  7. key = (hash & ~7) | kind. Identical keys are merged; tf is their count.
 *     Integer value of a feature: weight * TF[min(tf, 16)], TF[t] =
 *     round(1000 * (1 + ln t)) from a fixed table (sublinear tf).
 *  8. Reserved dimensions: R = D / 32 (R = 1 for 2 <= D < 32, R = 0 for
 *     D = 1); features go to the first F = D - R dimensions. Each feature is
 *     added with 4 signed probes: for j = 1..4, z = mix64(key + j * 0x9E3779B97F4A7C15)
 *     (the splitmix64 finalizer), bucket = ((z >> 32) * F) >> 32, sign =
 *     minus when bit 31 of z is set. Sums are 64-bit integers, exact.
 *  9. Role. A MG_EMBED_DOCUMENT vector gets isqrt(PIVOT / R) (integer
 *     division, floor square root) in each of the R reserved dimensions,
 *     PIVOT = 160 * 8000^2 (40 words' worth); a MG_EMBED_QUERY vector
 *     gets 0 there. Since queries have no mass in the reserved dimensions, the
 *     score of a document is q.d / (|q| sqrt(|d|^2 + PIVOT)): a pivoted
 *     length normalization that stops short memories sharing one word with
 *     the query from outranking long ones sharing several (the weakness of
 *     plain cosine; worth +0.2 evidence recall@10 on LoCoMo).
 * 10. If every dimension is 0 (all probes cancelled), dimension 0 is set to 1.
 *     out[i] = (float)(x[i] / sqrt(sum of x[j]^2)) computed in double: each
 *     operation is exactly rounded IEEE, so the result is bit-identical on
 *     every conforming machine (the library is built with -ffp-contract=off).
 *
 * Use: store memories as MG_EMBED_DOCUMENT, search with MG_EMBED_QUERY. Two
 * document vectors share the reserved mass, so their mutual cosine is high;
 * to compare a new text with stored memories (duplicate checks), embed the new
 * text as a query.
 */
#ifndef MG_EMBED_HASH_H
#define MG_EMBED_HASH_H

#include "../lib/error.h"

#include <stddef.h>
#include <stdint.h>

#define MG_EMBED_HASH_VERSION 1
#define MG_EMBED_HASH_DIM_DEFAULT 384
#define MG_EMBED_HASH_DIM_MAX 4096

/* What a text is embedded for (step 9 above). */
enum mg_embed_role { MG_EMBED_DOCUMENT = 0, MG_EMBED_QUERY = 1 };

/* Writes the L2-normalized embedding of text[0..len) (UTF-8; text may be NULL
 * when len is 0) to out[0..dim). Errors: MG_EINVAL for dim outside
 * 1..MG_EMBED_HASH_DIM_MAX, an unknown role, a NULL out, or text that is not
 * valid UTF-8 (out is then untouched); MG_ENOMEM. Thread-safe; keeps no
 * pointer to its arguments. Uses about 40 KB of stack (64-bit accumulators
 * for up to MG_EMBED_HASH_DIM_MAX dimensions); allocates only for long
 * texts. */
int mg_embed_hash(const char *text, size_t len, int role, float *out, uint32_t dim, mg_error *err);

/* Embeds n texts (texts[i] of lens[i] bytes) into out[i * dim .. (i + 1) * dim).
 * Stops at the first failing text with its error, the message naming its
 * index; the vectors before it are written. */
int mg_embed_hash_batch(const char *const *texts, const size_t *lens, size_t n, int role,
                        float *out, uint32_t dim, mg_error *err);

/* Calls fn once per term of the text, in order: the tokens of steps 2-5
 * (lower-cased, stop words dropped - or kept when nothing else is left -,
 * stemmed). `term` is not NUL-terminated and lives only during the call.
 * For lexical scorers (BM25) that must tokenize exactly like the embedder.
 * Errors as for mg_embed_hash. */
typedef void (*mg_embed_term_fn)(const char *term, size_t len, void *ctx);
int mg_embed_hash_terms(const char *text, size_t len, mg_embed_term_fn fn, void *ctx,
                        mg_error *err);

#endif
