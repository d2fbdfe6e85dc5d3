/*
 * The optional config file of the long-running subcommands (cmd/common.h,
 * docs/OPERATIONS.md "Config file"): "key = value" lines turned into
 * "--key value" arguments placed before the command line's, so that the
 * subcommand's own parser sees one argument list and the command line wins
 * (the last occurrence of an option is the one that counts).
 */
#include "common.h"

#include "memgrid.h"

#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A growing argument list whose strings are all malloc'd. */
typedef struct arg_list {
    char **v;
    int n;
    int cap;
} arg_list;

/* Room for one more string and the NULL after it; -1 when out of memory. */
static int args_reserve(arg_list *a)
{
    if (a->n + 2 > a->cap) {
        int cap = a->cap ? a->cap * 2 : 16;
        char **grown = realloc(a->v, (size_t)cap * sizeof *grown);
        if (grown == NULL)
            return -1;
        a->v = grown;
        a->cap = cap;
    }
    a->v[a->n] = NULL;
    return 0;
}

static int args_push(arg_list *a, const char *s, size_t len)
{
    if (args_reserve(a) != 0)
        return -1;
    char *copy = malloc(len + 1);
    if (copy == NULL)
        return -1;
    memcpy(copy, s, len);
    copy[len] = '\0';
    a->v[a->n++] = copy;
    a->v[a->n] = NULL;
    return 0;
}

static void args_free(arg_list *a)
{
    for (int i = 0; i < a->n; i++)
        free(a->v[i]);
    free(a->v);
    memset(a, 0, sizeof *a);
}

static bool is_known(const char *const *known, const char *key)
{
    for (size_t i = 0; known != NULL && known[i] != NULL; i++)
        if (strcmp(known[i], key) == 0)
            return true;
    return false;
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
    return s;
}

/* Unquotes a double-quoted value in place ("\"" and "\\" are the escapes);
 * what may follow the closing quote is blanks and a "#" comment. NULL when
 * the quotes are unbalanced or something else follows. */
static char *unquote(char *v)
{
    char *out = v;
    const char *p = v + 1;
    for (; *p != '\0' && *p != '"'; p++) {
        if (*p == '\\' && (p[1] == '"' || p[1] == '\\'))
            p++;
        *out++ = *p;
    }
    if (*p != '"')
        return NULL;
    for (p++; isspace((unsigned char)*p); p++)
        ;
    if (*p != '\0' && *p != '#')
        return NULL;
    *out = '\0';
    return v;
}

/* Drops a "#" comment (at the start or after a blank) of an unquoted value, and
 * the blanks before it. v starts with a non-blank. */
static void strip_comment(char *v)
{
    for (char *p = v; *p != '\0'; p++) {
        if (*p == '#' && (p == v || isspace((unsigned char)p[-1]))) {
            *p = '\0';
            break;
        }
    }
    size_t n = strlen(v);
    while (n > 0 && isspace((unsigned char)v[n - 1]))
        v[--n] = '\0';
}

/* Appends the options of `path` to a; MG_EXIT_OK, else an exit code after
 * printing "memgrid <cmd>: FILE[:LINE]: why". A file that is missing or
 * cannot be read is a configuration error like a malformed line
 * (MG_EXIT_USAGE: restarting will not help, and the systemd units stop
 * retrying on it); only running out of memory is MG_EXIT_FAILURE. */
static int read_file(const char *cmd, const char *path, const char *const *known, arg_list *a)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        fprintf(stderr, "memgrid %s: %s: %s\n", cmd, path, strerror(errno));
        return MG_EXIT_USAGE;
    }
    int code = MG_EXIT_OK;
    char *line = NULL;
    size_t line_cap = 0;
    unsigned lineno = 0;
    for (;;) {
        errno = 0;
        ssize_t got = getline(&line, &line_cap, f);
        if (got < 0) {
            if (ferror(f)) {
                fprintf(stderr, "memgrid %s: %s:%u: %s\n", cmd, path, lineno + 1,
                        strerror(errno ? errno : EIO));
                code = MG_EXIT_USAGE;
            }
            break;
        }
        lineno++;
        if ((size_t)got != strlen(line)) {
            fprintf(stderr, "memgrid %s: %s:%u: a NUL byte in the line\n", cmd, path, lineno);
            code = MG_EXIT_USAGE;
            break;
        }
        char *s = trim(line);
        if (*s == '\0' || *s == '#')
            continue;
        char *eq = strchr(s, '=');
        if (eq == NULL) {
            fprintf(stderr, "memgrid %s: %s:%u: expected \"key = value\", got \"%s\"\n", cmd, path,
                    lineno, s);
            code = MG_EXIT_USAGE;
            break;
        }
        *eq = '\0';
        char *key = trim(s);
        char *val = trim(eq + 1);
        if (*key == '\0') {
            fprintf(stderr, "memgrid %s: %s:%u: a key is missing before \"=\"\n", cmd, path,
                    lineno);
            code = MG_EXIT_USAGE;
            break;
        }
        if (strcmp(key, "config") == 0) {
            fprintf(stderr, "memgrid %s: %s:%u: a config file cannot name another (\"config\")\n",
                    cmd, path, lineno);
            code = MG_EXIT_USAGE;
            break;
        }
        if (!is_known(known, key)) {
            fprintf(stderr, "memgrid %s: %s:%u: unknown key \"%s\" (see memgrid %s --help)\n", cmd,
                    path, lineno, key, cmd);
            code = MG_EXIT_USAGE;
            break;
        }
        bool quoted = *val == '"';
        if (quoted) {
            if (unquote(val) == NULL) {
                fprintf(stderr,
                        "memgrid %s: %s:%u: the value of \"%s\" has an unbalanced quote or "
                        "text after its closing quote\n",
                        cmd, path, lineno, key);
                code = MG_EXIT_USAGE;
                break;
            }
        } else {
            strip_comment(val);
            if (*val == '\0') {
                fprintf(stderr,
                        "memgrid %s: %s:%u: \"%s\" has no value (write \"%s = true\" for a "
                        "flag, \"\" for an empty value)\n",
                        cmd, path, lineno, key, key);
                code = MG_EXIT_USAGE;
                break;
            }
        }
        /* "--key" then its value, as two arguments: the subcommands take
         * either form, and no flag buffer limits the key's length. An
         * unquoted true is a flag without value. */
        char opt[256];
        if (strlen(key) + 3 > sizeof opt) {
            fprintf(stderr, "memgrid %s: %s:%u: unknown key \"%s\"\n", cmd, path, lineno, key);
            code = MG_EXIT_USAGE;
            break;
        }
        snprintf(opt, sizeof opt, "--%s", key);
        bool flag = !quoted && strcmp(val, "true") == 0;
        if (args_push(a, opt, strlen(opt)) != 0 || (!flag && args_push(a, val, strlen(val)) != 0)) {
            fprintf(stderr, "memgrid %s: out of memory\n", cmd);
            code = MG_EXIT_FAILURE;
            break;
        }
    }
    free(line);
    fclose(f);
    return code;
}

int mg_cmd_config_expand(const char *cmd, const char *const *known, int *argc, char ***argv)
{
    /* The last --config of the command line names the file; every one is
     * removed. Nothing after "--" is an option. */
    const char *path = NULL;
    for (int i = 0; i < *argc; i++) {
        const char *arg = (*argv)[i];
        if (strcmp(arg, "--") == 0)
            break;
        if (strcmp(arg, "--config") == 0) {
            if (i + 1 >= *argc) {
                fprintf(stderr, "memgrid %s: --config needs a value (see memgrid %s --help)\n", cmd,
                        cmd);
                return MG_EXIT_USAGE;
            }
            path = (*argv)[++i];
        } else if (strncmp(arg, "--config=", 9) == 0) {
            path = arg + 9;
        }
    }
    if (path == NULL) {
        const char *env = getenv("MEMGRID_CONFIG");
        if (env == NULL || *env == '\0')
            return MG_EXIT_OK;
        path = env;
    }
    if (*path == '\0') {
        fprintf(stderr, "memgrid %s: --config needs a file name (see memgrid %s --help)\n", cmd,
                cmd);
        return MG_EXIT_USAGE;
    }

    arg_list a = {0};
    if (args_reserve(&a) != 0) {
        fprintf(stderr, "memgrid %s: out of memory\n", cmd);
        return MG_EXIT_FAILURE;
    }
    int code = read_file(cmd, path, known, &a);
    bool options = true;
    for (int i = 0; code == MG_EXIT_OK && i < *argc; i++) {
        const char *arg = (*argv)[i];
        if (options && strcmp(arg, "--") == 0) {
            options = false;
        } else if (options && strcmp(arg, "--config") == 0) {
            i++;
            continue;
        } else if (options && strncmp(arg, "--config=", 9) == 0) {
            continue;
        }
        if (args_push(&a, arg, strlen(arg)) != 0) {
            fprintf(stderr, "memgrid %s: out of memory\n", cmd);
            code = MG_EXIT_FAILURE;
        }
    }
    if (code != MG_EXIT_OK) {
        args_free(&a);
        return code;
    }
    *argc = a.n;
    *argv = a.v;
    return MG_EXIT_OK;
}
