/* The memgrid binary's subcommands (DESIGN §2). Each takes the arguments
 * after its name and returns the process exit code: 0 ok, 1 runtime failure,
 * 2 usage error. */
#ifndef MG_CMD_MEMGRID_H
#define MG_CMD_MEMGRID_H

#ifndef MEMGRID_VERSION
#define MEMGRID_VERSION "0.1.0"
#endif

#define MG_EXIT_OK 0
#define MG_EXIT_FAILURE 1
#define MG_EXIT_USAGE 2

int mg_cmd_serve(int argc, char **argv);
int mg_cmd_node(int argc, char **argv);   /* cmd/node.c */
int mg_cmd_router(int argc, char **argv); /* cmd/router.c */
int mg_cmd_ctl(int argc, char **argv);   /* cmd/ctl.c */
int mg_cmd_bench(int argc, char **argv); /* cmd/bench.c */

#endif
