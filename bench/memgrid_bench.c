/* Standalone `memgrid bench` (the same as the subcommand of build/memgrid). */
#include "bench.h"

int main(int argc, char **argv)
{
    return mg_bench_main(argc, argv);
}
