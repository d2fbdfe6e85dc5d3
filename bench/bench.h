/*
 * `memgrid bench`: the benchmark harness (DESIGN §12). It drives memgrid, or
 * any MemOS /product endpoint (Python MemOS), over HTTP with the same
 * requests, closed loop (N clients, each waiting for its answer) or open loop
 * (a fixed request rate, latency measured from each request's scheduled
 * time), with seeded synthetic data or the LoCoMo conversations, and reports
 * throughput and latency percentiles from client-side histograms
 * (lib/histogram.h) as a table, JSON and an HTML/SVG report.
 *
 * It uses only the public HTTP API and lib/: nothing of the server's insides.
 */
#ifndef MG_BENCH_H
#define MG_BENCH_H

/* Runs the harness with command-line arguments: argv[0] is the program name
 * used in messages ("bench", the subcommand's name, reads as "memgrid bench",
 * so `memgrid` can pass mg_bench_main(argc - 1, argv + 1)), the options
 * follow. `--help` prints the usage. Returns the
 * process exit code: 0 when the run completed (request errors are reported,
 * not fatal), 1 on a runtime failure (a target unreachable, a file that
 * cannot be written, every request failing), 2 on a usage error. Prints the
 * table on stdout and progress and diagnostics on stderr. Installs a SIGINT
 * handler for the run (the first ^C ends the measurement early and still
 * reports) and restores the previous one before returning. */
int mg_bench_main(int argc, char **argv);

#endif
