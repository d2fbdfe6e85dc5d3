/* Pieces the memgrid subcommands (cmd/serve.c, cmd/router.c, cmd/node.c,
 * cmd/ctl.c) share: option parsing, the stop signals, the data directory,
 * the embedder and chat model, the config file and the ready line. `cmd` is
 * the subcommand's name ("serve", "router", ...) as it appears in the
 * messages "memgrid <cmd>: ..." these helpers print to stderr. */
#ifndef MG_CMD_COMMON_H
#define MG_CMD_COMMON_H

#include "../router/embed.h"
#include "../router/llm.h"

#include <signal.h>
#include <stddef.h>

/* Parses a decimal number in min..max into *out; -1 (out untouched) for
 * anything else: empty, trailing characters, out of range. */
int mg_cmd_parse_uint(const char *s, unsigned min, unsigned max, unsigned *out);

/* Parses HOST:PORT (IPv4; an empty host or "localhost" is 127.0.0.1, port
 * 0..65535) into host (size host_size) and *port; -1 when malformed, with
 * host possibly overwritten. */
int mg_cmd_parse_listen(const char *s, char *host, size_t host_size, unsigned *port);

/* Splits "--flag=value": copies the flag into flag (size flag_size), points
 * *val at the value and returns flag. Any other argument (or a flag too long
 * for the buffer) is returned as is with *val = NULL. */
const char *mg_cmd_split_flag(const char *arg, char *flag, size_t flag_size, const char **val);

/* The value of the option `flag` at argv[*i]: val when it came as
 * "--flag=value", else the next argument (advancing *i). NULL, after printing
 * "memgrid <cmd>: <flag> needs a value", when there is none. */
const char *mg_cmd_flag_value(const char *cmd, const char *flag, const char *val, int argc,
                              char **argv, int *i);

/* Applies --log LEVEL when given (level already validated). */
void mg_cmd_apply_log(const char *level);

/* Blocks SIGINT and SIGTERM (filling *stop_set) so that every thread
 * started afterwards inherits the mask and mg_cmd_wait_stop takes them; also
 * ignores SIGPIPE. Call before any thread starts. */
void mg_cmd_block_stop_signals(sigset_t *stop_set);

/* Waits for a signal of stop_set and logs it as event `event`; returns it. */
int mg_cmd_wait_stop(const sigset_t *stop_set, const char *event);

/* Creates the data directory dir (0755) unless it exists; -1 after printing
 * why not. */
int mg_cmd_make_data_dir(const char *cmd, const char *dir);

/* Fills the embedder and chat model configurations from the environment;
 * MG_EXIT_OK, else MG_EXIT_USAGE after printing the error. */
int mg_cmd_models_from_env(const char *cmd, mg_embedder_config *ec, mg_llm_config *lc);

/* Opens the embedder and, when lc has a URL, the chat model (*llm stays NULL
 * otherwise). MG_EXIT_OK with both owned by the caller (mg_embedder_close,
 * mg_llm_close), else MG_EXIT_FAILURE after printing the error, with
 * nothing left open. */
int mg_cmd_models_open(const char *cmd, const mg_embedder_config *ec, const mg_llm_config *lc,
                       mg_embedder **emb, mg_llm **llm);

/* The optional config file (docs/OPERATIONS.md "Config file"): when argv
 * holds "--config FILE" / "--config=FILE" (or, without it, MEMGRID_CONFIG
 * is set), reads FILE — lines "key = value" where key is a long option
 * name without "--" (e.g. "raft-port = 7120"), "#" comments and blank lines
 * ignored, values optionally in double quotes, a flag without value written
 * "key = true" — and rewrites *argc and *argv to the file's options followed by
 * the command line's (without --config), so the command line wins over the
 * file and the file over the environment. The new argv is malloc'd with its
 * strings and lives until exit (*argv is replaced only when a file was read).
 * MG_EXIT_OK; MG_EXIT_USAGE after printing "memgrid <cmd>: FILE[:LINE]: why"
 * for a file that is missing or unreadable, a malformed line or a key that
 * is not in `known` (a NULL-terminated list of long option names);
 * MG_EXIT_FAILURE only when out of memory. */
int mg_cmd_config_expand(const char *cmd, const char *const *known, int *argc, char ***argv);

/* Prints the one "ready" line on stdout and flushes it (scripts wait on it). */
void mg_cmd_ready(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
