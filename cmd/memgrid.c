/*
 * memgrid: one binary, subcommands (DESIGN §2). `serve` runs a node and a
 * router in one process; `node` and `router` run a cluster with a static
 * topology (docs/OPERATIONS.md); subcommands not in this build are listed so
 * that --help describes the whole tool, and say plainly that they are missing.
 */
#include "memgrid.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

typedef struct subcommand {
    const char *name;
    const char *summary;
    int (*run)(int argc, char **argv);   /* NULL: not in this build */
} subcommand;

static const subcommand subcommands[] = {
    {"serve", "router and node in one process: the MemOS-compatible API on one machine",
     mg_cmd_serve},
    {"node", "a data node hosting replicas of shard groups", mg_cmd_node},
    {"router", "a stateless API front end for a cluster", mg_cmd_router},
    {"ctl", "the cluster admin CLI: status, nodes, groups, slots, init, membership, rebalance", mg_cmd_ctl},
    {"bench", "the benchmark harness (memgrid or Python MemOS)", mg_cmd_bench},
    {"migrate", "import, export, pull and verify MemOS cubes", NULL},
};
#define N_SUBCOMMANDS (sizeof subcommands / sizeof subcommands[0])

static void usage(FILE *out)
{
    fprintf(out, "usage: memgrid <command> [options]\n"
                 "       memgrid <command> --help\n"
                 "       memgrid --version\n\n"
                 "A sharded, replicated memory store for LLM agents that speaks the MemOS REST "
                 "API.\n\ncommands:\n");
    for (size_t i = 0; i < N_SUBCOMMANDS; i++)
        fprintf(out, "  %-8s %s%s\n", subcommands[i].name, subcommands[i].summary,
                subcommands[i].run ? "" : " (not yet available)");
    fprintf(out, "\nenvironment: MEMGRID_DATA, MEMGRID_LISTEN, MEMGRID_LOG (see `memgrid serve "
                 "--help`)\n"
                 "exit codes: 0 ok, 1 runtime failure, 2 usage error\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return MG_EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        usage(stdout);
        return MG_EXIT_OK;
    }
    if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "version") == 0) {
        printf("memgrid %s\n", MEMGRID_VERSION);
        return MG_EXIT_OK;
    }
    for (size_t i = 0; i < N_SUBCOMMANDS; i++) {
        const subcommand *s = &subcommands[i];
        if (strcmp(cmd, s->name) != 0)
            continue;
        if (s->run != NULL)
            return s->run(argc - 2, argv + 2);
        bool help = false;
        for (int a = 2; a < argc; a++)
            help |= strcmp(argv[a], "--help") == 0 || strcmp(argv[a], "-h") == 0;
        if (help) {
            printf("usage: memgrid %s ...\n\n%s.\n\nNot yet available in this build; "
                   "`memgrid serve` runs a complete single-machine memgrid.\n",
                   s->name, s->summary);
            return MG_EXIT_OK;
        }
        fprintf(stderr, "memgrid %s: not yet available in this build (use `memgrid serve`)\n",
                s->name);
        return MG_EXIT_USAGE;
    }
    fprintf(stderr, "memgrid: unknown command \"%s\"\n\n", cmd);
    usage(stderr);
    return MG_EXIT_USAGE;
}
