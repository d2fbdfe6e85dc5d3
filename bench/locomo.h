/*
 * The LoCoMo conversations (../shared/data/locomo/README.md) as benchmarks
 * use them: one conversation per file, one memory per dialog turn with the
 * speaker's name in the text, and the questions whose evidence names turns
 * of the conversation. Shared by locomo_recall (the embedder's retrieval
 * quality) and `memgrid bench --workload locomo` (the same over HTTP).
 *
 * A turn's memory text is "Speaker: text", then " [shares a photo: caption]"
 * when the turn shared a photo (unless captions are off) and " [date]" with
 * the session's date when dates are on. Evidence ids are mostly "D1:3", but
 * some are malformed ("D8:6; D9:17", "D:11:26"): each 'D' starts an id made
 * of the next two numbers; ids naming no turn are dropped, and a question
 * left with no evidence is not kept (it is counted in `skipped`).
 */
#ifndef MG_BENCH_LOCOMO_H
#define MG_BENCH_LOCOMO_H

#include "lib/error.h"

#include <stdbool.h>
#include <stddef.h>

#define MG_LOCOMO_MAX_EVIDENCE 32

typedef struct mg_locomo_question {
    char *text;
    size_t evidence[MG_LOCOMO_MAX_EVIDENCE]; /* turn indices, distinct */
    size_t nevidence;                        /* >= 1 */
} mg_locomo_question;

typedef struct mg_locomo_conv {
    char *name;      /* file name, "26.json" */
    char **turn_ids; /* "D1:3", in session order */
    char **turns;    /* memory text of each turn */
    size_t nturns;
    mg_locomo_question *questions;
    size_t nquestions;
    size_t skipped; /* questions with evidence but no resolvable turn */
} mg_locomo_conv;

typedef struct mg_locomo_options {
    bool captions; /* append shared-photo captions (the usual setting) */
    bool dates;    /* append the session's date */
} mg_locomo_options;

/* Loads every *.json file of `dir` in name order into a new array *convs of
 * *count conversations (free with mg_locomo_free). Errors: MG_ENOTFOUND when
 * the directory cannot be opened or holds no .json file, MG_ECORRUPT for a
 * file that is not JSON ("path:line: reason"), MG_ENOMEM; nothing is left
 * allocated on error. */
int mg_locomo_load(const char *dir, const mg_locomo_options *o, mg_locomo_conv **convs,
                   size_t *count, mg_error *err);

/* Frees what mg_locomo_load returned; NULL is a no-op. */
void mg_locomo_free(mg_locomo_conv *convs, size_t count);

/* The conversation's base name without ".json" ("26"), written to buf
 * (capacity cap); returns buf. */
char *mg_locomo_conv_id(const mg_locomo_conv *c, char *buf, size_t cap);

#endif
