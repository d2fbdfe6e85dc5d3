#include "locomo.h"

#include <dirent.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *dup_str(const char *s)
{
    size_t n = strlen(s);
    char *d = malloc(n + 1);
    if (d != NULL)
        memcpy(d, s, n + 1);
    return d;
}

struct session_ref {
    unsigned number;
    json_t *turns;
    const char *date;
};

static int session_cmp(const void *a, const void *b)
{
    const struct session_ref *x = a, *y = b;
    return (x->number > y->number) - (x->number < y->number);
}

/* "session_12" -> 12; anything else (session_12_date_time, ...) -> 0. */
static unsigned session_number(const char *key)
{
    unsigned n = 0;
    int used = 0;
    if (sscanf(key, "session_%u%n", &n, &used) != 1 || key[used] != '\0')
        return 0;
    return n;
}

static long find_turn(const mg_locomo_conv *c, unsigned session, unsigned turn)
{
    char id[32];
    snprintf(id, sizeof id, "D%u:%u", session, turn);
    for (size_t i = 0; i < c->nturns; i++)
        if (strcmp(c->turn_ids[i], id) == 0)
            return (long)i;
    return -1;
}

static void parse_evidence(const mg_locomo_conv *c, const char *ev, mg_locomo_question *q)
{
    const char *p = ev;
    while ((p = strchr(p, 'D')) != NULL) {
        unsigned num[2];
        int got = 0;
        p++;
        while (*p && *p != 'D' && got < 2) {
            if (*p >= '0' && *p <= '9') {
                unsigned v = 0;
                while (*p >= '0' && *p <= '9')
                    v = v * 10 + (unsigned)(*p++ - '0');
                num[got++] = v;
            } else {
                p++;
            }
        }
        if (got < 2)
            continue;
        long t = find_turn(c, num[0], num[1]);
        if (t < 0 || q->nevidence == MG_LOCOMO_MAX_EVIDENCE)
            continue;
        bool dup = false;
        for (size_t i = 0; i < q->nevidence; i++)
            dup |= q->evidence[i] == (size_t)t;
        if (!dup)
            q->evidence[q->nevidence++] = (size_t)t;
    }
}

/* The memory text of a turn; NULL when the turn lacks speaker or text
 * (*oom tells an allocation failure apart). */
static char *turn_text(const mg_locomo_options *o, json_t *turn, const char *date, bool *oom)
{
    const char *speaker = json_string_value(json_object_get(turn, "speaker"));
    const char *text = json_string_value(json_object_get(turn, "text"));
    const char *caption = json_string_value(json_object_get(turn, "blip_caption"));
    if (speaker == NULL || text == NULL)
        return NULL;
    if (!o->captions)
        caption = NULL;
    if (!o->dates)
        date = NULL;
    size_t n = strlen(speaker) + strlen(text) + (caption ? strlen(caption) : 0) +
               (date ? strlen(date) : 0) + 64;
    char *s = malloc(n);
    if (s == NULL) {
        *oom = true;
        return NULL;
    }
    snprintf(s, n, "%s: %s%s%s%s%s%s%s", speaker, text, caption ? " [shares a photo: " : "",
             caption ? caption : "", caption ? "]" : "", date ? " [" : "", date ? date : "",
             date ? "]" : "");
    return s;
}

static void conv_clear(mg_locomo_conv *c)
{
    for (size_t i = 0; i < c->nturns; i++) {
        free(c->turn_ids[i]);
        free(c->turns[i]);
    }
    for (size_t i = 0; i < c->nquestions; i++)
        free(c->questions[i].text);
    free(c->turn_ids);
    free(c->turns);
    free(c->questions);
    free(c->name);
    memset(c, 0, sizeof *c);
}

static int load_turns(const mg_locomo_options *o, json_t *root, mg_locomo_conv *c)
{
    size_t nsessions = 0, cap = json_object_size(root);
    struct session_ref *sessions = malloc((cap ? cap : 1) * sizeof *sessions);
    if (sessions == NULL)
        return MG_ENOMEM;
    const char *key;
    json_t *value;
    json_object_foreach(root, key, value)
    {
        unsigned n = session_number(key);
        if (n == 0 || !json_is_array(value))
            continue;
        char dkey[64];
        snprintf(dkey, sizeof dkey, "session_%u_date_time", n);
        sessions[nsessions].number = n;
        sessions[nsessions].turns = value;
        sessions[nsessions].date = json_string_value(json_object_get(root, dkey));
        nsessions++;
    }
    qsort(sessions, nsessions, sizeof *sessions, session_cmp);

    size_t total = 0;
    for (size_t s = 0; s < nsessions; s++)
        total += json_array_size(sessions[s].turns);
    c->turn_ids = malloc((total ? total : 1) * sizeof *c->turn_ids);
    c->turns = malloc((total ? total : 1) * sizeof *c->turns);
    if (c->turn_ids == NULL || c->turns == NULL)
        goto err_oom;
    for (size_t s = 0; s < nsessions; s++) {
        size_t i;
        json_t *turn;
        json_array_foreach(sessions[s].turns, i, turn)
        {
            const char *id = json_string_value(json_object_get(turn, "dia_id"));
            bool oom = false;
            char *text = turn_text(o, turn, sessions[s].date, &oom);
            if (oom)
                goto err_oom;
            if (id == NULL || text == NULL) {
                free(text);
                continue;
            }
            char *id_copy = dup_str(id);
            if (id_copy == NULL) {
                free(text);
                goto err_oom;
            }
            c->turn_ids[c->nturns] = id_copy;
            c->turns[c->nturns] = text;
            c->nturns++;
        }
    }
    free(sessions);
    return MG_OK;

err_oom:
    free(sessions);
    return MG_ENOMEM;
}

static int load_questions(json_t *root, mg_locomo_conv *c)
{
    json_t *qa = json_object_get(root, "qa");
    c->questions = malloc((json_array_size(qa) + 1) * sizeof *c->questions);
    if (c->questions == NULL)
        return MG_ENOMEM;
    size_t i;
    json_t *item;
    json_array_foreach(qa, i, item)
    {
        const char *text = json_string_value(json_object_get(item, "question"));
        json_t *evidence = json_object_get(item, "evidence");
        if (text == NULL || json_array_size(evidence) == 0)
            continue;
        mg_locomo_question *q = &c->questions[c->nquestions];
        q->nevidence = 0;
        size_t j;
        json_t *ev;
        json_array_foreach(evidence, j, ev)
        {
            if (json_is_string(ev))
                parse_evidence(c, json_string_value(ev), q);
        }
        if (q->nevidence == 0) {
            c->skipped++;
            continue;
        }
        q->text = dup_str(text);
        if (q->text == NULL)
            return MG_ENOMEM;
        c->nquestions++;
    }
    return MG_OK;
}

static int load_conversation(const mg_locomo_options *o, const char *path, mg_locomo_conv *c,
                             mg_error *err)
{
    memset(c, 0, sizeof *c);
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    if (root == NULL)
        return mg_error_set(err, MG_ECORRUPT, "%s:%d: %s", path, jerr.line, jerr.text);
    int rc = load_turns(o, root, c);
    if (rc == MG_OK)
        rc = load_questions(root, c);
    json_decref(root);
    if (rc != MG_OK) {
        conv_clear(c);
        return mg_error_set(err, rc, "%s: out of memory", path);
    }
    return MG_OK;
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The *.json names of dir, sorted. */
static int list_json(const char *dir, char ***names_out, size_t *count, mg_error *err)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return mg_error_set(err, MG_ENOTFOUND, "cannot open %s (use --data DIR)", dir);
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        size_t len = strlen(de->d_name);
        if (len < 6 || strcmp(de->d_name + len - 5, ".json") != 0)
            continue;
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            char **grown = realloc(names, ncap * sizeof *grown);
            if (grown == NULL)
                goto err_oom;
            names = grown;
            cap = ncap;
        }
        if ((names[n] = dup_str(de->d_name)) == NULL)
            goto err_oom;
        n++;
    }
    closedir(d);
    if (n == 0) {
        free(names);
        return mg_error_set(err, MG_ENOTFOUND, "no .json files in %s", dir);
    }
    qsort(names, n, sizeof *names, name_cmp);
    *names_out = names;
    *count = n;
    return MG_OK;

err_oom:
    closedir(d);
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return mg_error_set(err, MG_ENOMEM, "out of memory listing %s", dir);
}

int mg_locomo_load(const char *dir, const mg_locomo_options *o, mg_locomo_conv **convs_out,
                   size_t *count, mg_error *err)
{
    char **names = NULL;
    size_t n = 0;
    int rc = list_json(dir, &names, &n, err);
    if (rc != MG_OK)
        return rc;
    mg_locomo_conv *convs = calloc(n, sizeof *convs);
    if (convs == NULL) {
        rc = mg_error_set(err, MG_ENOMEM, "out of memory");
        goto err_free_names;
    }
    for (size_t i = 0; i < n; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        rc = load_conversation(o, path, &convs[i], err);
        if (rc != MG_OK) {
            mg_locomo_free(convs, i);
            goto err_free_names;
        }
        convs[i].name = names[i];
        names[i] = NULL;
    }
    free(names);
    *convs_out = convs;
    *count = n;
    return MG_OK;

err_free_names:
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return rc;
}

void mg_locomo_free(mg_locomo_conv *convs, size_t count)
{
    if (convs == NULL)
        return;
    for (size_t i = 0; i < count; i++)
        conv_clear(&convs[i]);
    free(convs);
}

char *mg_locomo_conv_id(const mg_locomo_conv *c, char *buf, size_t cap)
{
    const char *name = c->name ? c->name : "";
    size_t len = strlen(name);
    if (len > 5 && strcmp(name + len - 5, ".json") == 0)
        len -= 5;
    snprintf(buf, cap, "%.*s", (int)len, name);
    return buf;
}
