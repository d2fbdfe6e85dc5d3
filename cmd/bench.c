/* memgrid bench: the benchmark harness (bench/bench.h), as a subcommand. */
#include "memgrid.h"

#include "../bench/bench.h"

#include <stdio.h>
#include <stdlib.h>

int mg_cmd_bench(int argc, char **argv)
{
    /* mg_bench_main wants its own name first: "bench" reads as "memgrid
     * bench" in its messages. */
    char **args = calloc((size_t)argc + 2, sizeof *args);
    if (args == NULL) {
        fprintf(stderr, "memgrid bench: out of memory\n");
        return MG_EXIT_FAILURE;
    }
    static char name[] = "bench";
    args[0] = name;
    for (int i = 0; i < argc; i++)
        args[i + 1] = argv[i];
    int rc = mg_bench_main(argc + 1, args);
    free(args);
    return rc;
}
