#include "common.h"

#include "memgrid.h"

#include "../lib/log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int mg_cmd_parse_uint(const char *s, unsigned min, unsigned max, unsigned *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || end == s || *end != '\0' || v < min || v > max)
        return -1;
    *out = (unsigned)v;
    return 0;
}

int mg_cmd_parse_listen(const char *s, char *host, size_t host_size, unsigned *port)
{
    const char *colon = strrchr(s, ':');
    if (colon == NULL)
        return -1;
    size_t hl = (size_t)(colon - s);
    if (hl >= host_size)
        return -1;
    if (hl == 0 || (hl == 9 && strncmp(s, "localhost", 9) == 0))
        snprintf(host, host_size, "127.0.0.1");
    else
        snprintf(host, host_size, "%.*s", (int)hl, s);
    struct in_addr a;
    if (inet_pton(AF_INET, host, &a) != 1)
        return -1;
    return mg_cmd_parse_uint(colon + 1, 0, 65535, port);
}

const char *mg_cmd_split_flag(const char *arg, char *flag, size_t flag_size, const char **val)
{
    const char *eq = strchr(arg, '=');
    *val = NULL;
    if (strncmp(arg, "--", 2) == 0 && eq != NULL && (size_t)(eq - arg) < flag_size) {
        snprintf(flag, flag_size, "%.*s", (int)(eq - arg), arg);
        *val = eq + 1;
        return flag;
    }
    return arg;
}

const char *mg_cmd_flag_value(const char *cmd, const char *flag, const char *val, int argc,
                              char **argv, int *i)
{
    if (val != NULL)
        return val;
    if (*i + 1 >= argc) {
        fprintf(stderr, "memgrid %s: %s needs a value\n", cmd, flag);
        return NULL;
    }
    return argv[++*i];
}

void mg_cmd_apply_log(const char *level)
{
    if (level != NULL)
        mg_log_set_level(mg_log_parse_level(level));
}

void mg_cmd_block_stop_signals(sigset_t *stop_set)
{
    sigemptyset(stop_set);
    sigaddset(stop_set, SIGINT);
    sigaddset(stop_set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, stop_set, NULL);
    signal(SIGPIPE, SIG_IGN);
}

int mg_cmd_wait_stop(const sigset_t *stop_set, const char *event)
{
    int sig = 0;
    while (sigwait(stop_set, &sig) != 0)
        ;
    mg_info(event, "signal=%d", sig);
    return sig;
}

int mg_cmd_make_data_dir(const char *cmd, const char *dir)
{
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "memgrid %s: cannot create data directory %s: %s\n", cmd, dir,
                strerror(errno));
        return -1;
    }
    return 0;
}

int mg_cmd_models_from_env(const char *cmd, mg_embedder_config *ec, mg_llm_config *lc)
{
    mg_error err;
    if (mg_embedder_config_from_env(ec, &err) != MG_OK ||
        mg_llm_config_from_env(lc, &err) != MG_OK) {
        fprintf(stderr, "memgrid %s: %s\n", cmd, err.msg);
        return MG_EXIT_USAGE;
    }
    return MG_EXIT_OK;
}

int mg_cmd_models_open(const char *cmd, const mg_embedder_config *ec, const mg_llm_config *lc,
                       mg_embedder **emb, mg_llm **llm)
{
    mg_error err;
    *emb = NULL;
    *llm = NULL;
    if (mg_embedder_open(ec, emb, &err) != MG_OK) {
        fprintf(stderr, "memgrid %s: embedder: %s\n", cmd, err.msg);
        *emb = NULL;
        return MG_EXIT_FAILURE;
    }
    if (lc->url[0] != '\0' && mg_llm_open(lc, llm, &err) != MG_OK) {
        fprintf(stderr, "memgrid %s: chat model: %s\n", cmd, err.msg);
        mg_embedder_close(*emb);
        *emb = NULL;
        *llm = NULL;
        return MG_EXIT_FAILURE;
    }
    return MG_EXIT_OK;
}

void mg_cmd_ready(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    fflush(stdout);
}
