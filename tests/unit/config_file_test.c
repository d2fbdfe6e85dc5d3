/*
 * mg_cmd_config_expand (cmd/config_file.c): "key = value" files turned into
 * arguments before the command line's; comments, blank lines, quotes, flags
 * ("key = true"), MEMGRID_CONFIG, and every refusal with its FILE:LINE
 * message and the argument list left untouched.
 */
#include "cmd/common.h"
#include "cmd/memgrid.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

static const char *const known[] = {"data", "listen",         "raft-port", "seeds",
                                    "log",  "follower-reads", NULL};

static char dir[] = "/tmp/mg_config_file_test_XXXXXX";

static int setup(void **state)
{
    (void)state;
    unsetenv("MEMGRID_CONFIG");
    return mkdtemp(dir) == NULL ? -1 : 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Writes text to dir/name; the path goes to path[0..cap). */
static void write_file(const char *name, const char *text, char *path, size_t cap)
{
    snprintf(path, cap, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

/* Runs mg_cmd_config_expand on a copy of args (NULL-terminated) with stderr
 * captured into err[0..cap); *out_argc and *out_argv get the result. */
static int expand(const char *const *args, int *out_argc, char ***out_argv, char *err, size_t cap)
{
    static char *copy[32];
    int n = 0;
    for (; args[n] != NULL; n++)
        copy[n] = (char *)args[n];
    copy[n] = NULL;
    *out_argc = n;
    *out_argv = copy;

    char errpath[128];
    snprintf(errpath, sizeof errpath, "%s/stderr", dir);
    fflush(stderr);
    int saved = dup(2);
    FILE *f = fopen(errpath, "w+");
    assert_non_null(f);
    dup2(fileno(f), 2);
    int code = mg_cmd_config_expand("node", known, out_argc, out_argv);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    rewind(f);
    size_t got = fread(err, 1, cap - 1, f);
    err[got] = '\0';
    fclose(f);
    return code;
}

static void free_argv(int argc, char **argv)
{
    for (int i = 0; i < argc; i++)
        free(argv[i]);
    free(argv);
}

static void assert_argv(int argc, char **argv, const char *const *want)
{
    int n = 0;
    for (; want[n] != NULL; n++) {
        if (n >= argc)
            fail_msg("argv has %d arguments, expected more (next \"%s\")", argc, want[n]);
        if (strcmp(argv[n], want[n]) != 0)
            fail_msg("argv[%d] = \"%s\", expected \"%s\"", n, argv[n], want[n]);
    }
    assert_int_equal(argc, n);
    assert_null(argv[argc]);
}

#define ARGS(...) ((const char *const[]){__VA_ARGS__, NULL})

static void test_full_file(void **state)
{
    (void)state;
    char path[256], flag[300], err[1024];
    write_file("node.conf",
               "# a node\n"
               "\n"
               "   data = /var/lib/memgrid   \n"
               "\tlisten=127.0.0.1:7000\n"
               "raft-port = 7120 # trailing comment\n"
               "seeds = \"tcp://a:1, tcp://b:2 # not a comment\"\n"
               "log = \"\"\n"
               "follower-reads = true\n"
               "  # indented comment\n"
               "data = \"say \\\"hi\\\"\" # after quotes\n",
               path, sizeof path);
    snprintf(flag, sizeof flag, "--config=%s", path);
    int argc;
    char **argv;
    assert_int_equal(
        expand(ARGS("--id", "3", flag, "--log", "debug"), &argc, &argv, err, sizeof err),
        MG_EXIT_OK);
    assert_string_equal(err, "");
    assert_argv(argc, argv,
                ARGS("--data", "/var/lib/memgrid", "--listen", "127.0.0.1:7000", "--raft-port",
                     "7120", "--seeds", "tcp://a:1, tcp://b:2 # not a comment", "--log", "",
                     "--follower-reads", "--data", "say \"hi\"", "--id", "3", "--log", "debug"));
    free_argv(argc, argv);
}

/* The command line comes after the file, so a parser that keeps the last
 * value of an option gives the command line precedence; "--config FILE" as
 * two arguments is removed too; a quoted "true" stays a value. */
static void test_precedence_and_separate_flag(void **state)
{
    (void)state;
    char path[256], err[1024];
    write_file("p.conf", "listen = 127.0.0.1:1\nlog = \"true\"\n", path, sizeof path);
    int argc;
    char **argv;
    assert_int_equal(expand(ARGS("--listen", "127.0.0.1:2", "--config", path, "-x"), &argc, &argv,
                            err, sizeof err),
                     MG_EXIT_OK);
    assert_argv(argc, argv,
                ARGS("--listen", "127.0.0.1:1", "--log", "true", "--listen", "127.0.0.1:2", "-x"));
    free_argv(argc, argv);
}

static void test_env(void **state)
{
    (void)state;
    char path[256], other[256], err[1024];
    write_file("env.conf", "data = /from/env\n", path, sizeof path);
    write_file("cli.conf", "data = /from/cli\n", other, sizeof other);
    setenv("MEMGRID_CONFIG", path, 1);
    int argc;
    char **argv;
    assert_int_equal(expand(ARGS("--id", "1"), &argc, &argv, err, sizeof err), MG_EXIT_OK);
    assert_argv(argc, argv, ARGS("--data", "/from/env", "--id", "1"));
    free_argv(argc, argv);
    /* --config wins over MEMGRID_CONFIG */
    assert_int_equal(expand(ARGS("--config", other), &argc, &argv, err, sizeof err), MG_EXIT_OK);
    assert_argv(argc, argv, ARGS("--data", "/from/cli"));
    free_argv(argc, argv);
    /* an empty file and no arguments: an empty list */
    write_file("empty.conf", "# nothing\n\n", path, sizeof path);
    setenv("MEMGRID_CONFIG", path, 1);
    assert_int_equal(expand(ARGS(NULL), &argc, &argv, err, sizeof err), MG_EXIT_OK);
    assert_argv(argc, argv, ARGS(NULL));
    free_argv(argc, argv);
    unsetenv("MEMGRID_CONFIG");
}

static void test_no_file(void **state)
{
    (void)state;
    const char *const args[] = {"--data", "x", NULL};
    int argc;
    char **argv;
    char err[256];
    assert_int_equal(expand(args, &argc, &argv, err, sizeof err), MG_EXIT_OK);
    /* nothing read: the very same list */
    assert_int_equal(argc, 2);
    assert_ptr_equal(argv[0], args[0]);
    assert_ptr_equal(argv[1], args[1]);
    assert_string_equal(err, "");
}

/* A refusal: the exit code, the message, and argc/argv as they were. */
static void expect_refused(const char *text, int want_code, const char *want_msg)
{
    char path[256], flag[300], err[1024];
    write_file("bad.conf", text, path, sizeof path);
    snprintf(flag, sizeof flag, "--config=%s", path);
    int argc;
    char **argv;
    const char *const *args = ARGS("--id", "2", flag);
    int code = expand(args, &argc, &argv, err, sizeof err);
    if (code != want_code || strstr(err, want_msg) == NULL)
        fail_msg("%s: exit %d (want %d), message \"%s\" (want \"%s\")", text, code, want_code, err,
                 want_msg);
    assert_int_equal(argc, 3);
    assert_string_equal(argv[0], "--id");
    assert_string_equal(argv[2], flag);
    assert_non_null(strstr(err, "memgrid node: "));
}

static void test_refusals(void **state)
{
    (void)state;
    char want[512];
    snprintf(want, sizeof want, "memgrid node: %s/bad.conf:3: unknown key \"raft_port\"", dir);
    expect_refused("data = x\n# c\nraft_port = 1\n", MG_EXIT_USAGE, want);
    snprintf(want, sizeof want, "%s/bad.conf:2: expected \"key = value\"", dir);
    expect_refused("data = x\nlisten 127.0.0.1:1\n", MG_EXIT_USAGE, want);
    snprintf(want, sizeof want, "%s/bad.conf:1: a key is missing", dir);
    expect_refused(" = x\n", MG_EXIT_USAGE, want);
    snprintf(want, sizeof want, "%s/bad.conf:1: \"data\" has no value", dir);
    expect_refused("data =   # nothing\n", MG_EXIT_USAGE, want);
    snprintf(want, sizeof want, "%s/bad.conf:2: the value of \"data\" has an unbalanced quote",
             dir);
    expect_refused("\n data = \"x\n", MG_EXIT_USAGE, want);
    expect_refused("data = \"x\" y\n", MG_EXIT_USAGE, "bad.conf:1: the value of \"data\"");
    expect_refused("config = other.conf\n", MG_EXIT_USAGE,
                   "bad.conf:1: a config file cannot name another");
    expect_refused("--data = x\n", MG_EXIT_USAGE, "bad.conf:1: unknown key \"--data\"");
}

static void test_missing_file_and_flag(void **state)
{
    (void)state;
    char path[256], err[1024];
    snprintf(path, sizeof path, "%s/does-not-exist.conf", dir);
    int argc;
    char **argv;
    /* a configuration error (exit 2), so that systemd does not restart in a loop */
    assert_int_equal(expand(ARGS("--config", path), &argc, &argv, err, sizeof err), MG_EXIT_USAGE);
    char want[512];
    snprintf(want, sizeof want, "memgrid node: %s: No such file or directory\n", path);
    assert_string_equal(err, want);
    assert_int_equal(argc, 2);
    /* from the environment as well */
    setenv("MEMGRID_CONFIG", path, 1);
    assert_int_equal(expand(ARGS("--id", "1"), &argc, &argv, err, sizeof err), MG_EXIT_USAGE);
    assert_string_equal(err, want);
    unsetenv("MEMGRID_CONFIG");
    assert_int_equal(argc, 2);
    assert_string_equal(argv[0], "--id");
    /* --config without its value; with an empty one */
    assert_int_equal(expand(ARGS("--id", "1", "--config"), &argc, &argv, err, sizeof err),
                     MG_EXIT_USAGE);
    assert_non_null(strstr(err, "memgrid node: --config needs a value"));
    assert_int_equal(argc, 3);
    assert_int_equal(expand(ARGS("--config="), &argc, &argv, err, sizeof err), MG_EXIT_USAGE);
    assert_non_null(strstr(err, "--config needs a file name"));
    /* a directory is unreadable as a file */
    assert_int_equal(expand(ARGS("--config", dir), &argc, &argv, err, sizeof err), MG_EXIT_USAGE);
    snprintf(want, sizeof want, "memgrid node: %s:1: Is a directory\n", dir);
    assert_string_equal(err, want);
    assert_int_equal(argc, 2);
    /* a file without read permission (root reads it anyway) */
    if (geteuid() != 0) {
        write_file("secret.conf", "data = x\n", path, sizeof path);
        assert_int_equal(chmod(path, 0200), 0);
        assert_int_equal(expand(ARGS("--config", path), &argc, &argv, err, sizeof err),
                         MG_EXIT_USAGE);
        snprintf(want, sizeof want, "memgrid node: %s: Permission denied\n", path);
        assert_string_equal(err, want);
        assert_int_equal(argc, 2);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_file), cmocka_unit_test(test_precedence_and_separate_flag),
        cmocka_unit_test(test_env),       cmocka_unit_test(test_no_file),
        cmocka_unit_test(test_refusals),  cmocka_unit_test(test_missing_file_and_flag),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
