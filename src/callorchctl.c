/*
 * callorchctl.c — main() of the admin command (DESIGN.md section 7).
 *
 * Owns: option parsing, the command table and the exit statuses:
 *   0  the command succeeded
 *   1  the operation failed (database unreachable, invalid config, …)
 *   2  usage error (unknown command or option), with the usage text
 * Each command is one entry of the table below; the control-socket commands
 * (status, reload, stop, pause, resume) slot in there when the master grows
 * its control socket.  Modules return errors; only this file prints and
 * decides the exit status.
 */
#include <auto-config.h>

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "migrate.h"

enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2 };

struct ctl_options {
    const char *config_path;     /* -c; CO_DEFAULT_CONFIG otherwise */
    const char *sql_dir;         /* --sql-dir, $CALLORCH_SQLDIR or CO_SQLDIR */
};

struct ctl_command {
    const char *name;
    const char *summary;
    int (*run)(const struct ctl_options *o, int argc, char **argv);
};

static int cmd_migrate(const struct ctl_options *o, int argc, char **argv);
static int cmd_check_config(const struct ctl_options *o, int argc, char **argv);

static const struct ctl_command commands[] = {
    {"migrate", "apply the SQL migrations not yet applied, in order", cmd_migrate},
    {"check-config", "validate the configuration file", cmd_check_config},
};

#define N_COMMANDS (sizeof(commands) / sizeof(commands[0]))

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: callorchctl [-c FILE] [--sql-dir DIR] COMMAND\n"
            "Options:\n"
            "  -c, --config FILE  configuration file (default %s)\n"
            "      --sql-dir DIR  migrations directory (default $CALLORCH_SQLDIR or %s)\n"
            "  -h, --help         print this help and exit\n"
            "  -V, --version      print the version and exit\n"
            "Commands:\n",
            CO_DEFAULT_CONFIG, CO_SQLDIR);
    for (size_t i = 0; i < N_COMMANDS; i++)
        fprintf(out, "  %-13s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "Exit status: 0 success, 1 operation failed, 2 usage error.\n");
}

/* Load the config or print why not; NULL on failure. */
static struct co_config *load_config(const struct ctl_options *o)
{
    struct co_config *cfg = NULL;
    char err[1024];

    if (co_config_load(o->config_path, &cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "callorchctl: %s\n", err);
        return NULL;
    }
    return cfg;
}

static int no_arguments(const char *cmd, int argc, char **argv)
{
    if (argc == 0)
        return 0;
    fprintf(stderr, "callorchctl: %s: unexpected argument '%s'\n", cmd, argv[0]);
    usage(stderr);
    return -1;
}

static void print_applied(const struct co_migration *m, void *arg)
{
    printf("applied %s\n", m->file);
    fflush(stdout);
}

static int cmd_migrate(const struct ctl_options *o, int argc, char **argv)
{
    struct co_migrate_result res;
    struct co_config *cfg;
    char err[2048];
    int rc;

    if (no_arguments("migrate", argc, argv) != 0)
        return EXIT_USAGE;
    if ((cfg = load_config(o)) == NULL)
        return EXIT_FAIL;
    rc = co_migrate_run(cfg->pg_conninfo, o->sql_dir, &res, print_applied, NULL, err,
                        sizeof(err));
    co_config_free(cfg);
    if (rc != 0) {
        fprintf(stderr, "callorchctl: %s\n", err);
        if (res.applied > 0)
            fprintf(stderr, "callorchctl: %d migration(s) were applied before the failure\n",
                    res.applied);
        return EXIT_FAIL;
    }
    printf("migrations: %d applied, %d already present\n", res.applied, res.present);
    return EXIT_OK;
}

static int cmd_check_config(const struct ctl_options *o, int argc, char **argv)
{
    struct co_config *cfg;
    char err[1024];

    if (no_arguments("check-config", argc, argv) != 0)
        return EXIT_USAGE;
    if (co_config_load(o->config_path, &cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s\n", err); /* already "file:line: message" */
        return EXIT_FAIL;
    }
    co_config_free(cfg);
    printf("%s: ok\n", o->config_path);
    return EXIT_OK;
}

/* Returns -1 to go on to the command, or an exit status. */
static int parse_options(int argc, char **argv, struct ctl_options *o)
{
    enum { OPT_SQL_DIR = 256 };
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'},
        {"sql-dir", required_argument, NULL, OPT_SQL_DIR},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    const char *env = getenv("CALLORCH_SQLDIR");
    int c;

    o->config_path = CO_DEFAULT_CONFIG;
    o->sql_dir = env != NULL && *env != '\0' ? env : CO_SQLDIR;
    /* GNU getopt permutes: global options may also follow the command
     * ("callorchctl migrate -c FILE"), as operators tend to type them. */
    /* getopt's messages are precise ("option '--help' doesn't allow an
     * argument"); they start with argv[0], which should not be a path. */
    argv[0] = (char *)"callorchctl";
    while ((c = getopt_long(argc, argv, "c:hV", longopts, NULL)) != -1) {
        switch (c) {
        case 'c': o->config_path = optarg; break;
        case OPT_SQL_DIR: o->sql_dir = optarg; break;
        case 'h': usage(stdout); return EXIT_OK;
        case 'V': printf("callorchctl (%s) %s\n", PACKAGE_NAME, PACKAGE_VERSION); return EXIT_OK;
        default: usage(stderr); return EXIT_USAGE; /* getopt said why */
        }
    }
    return -1;
}

int main(int argc, char **argv)
{
    struct ctl_options o;
    int rc = parse_options(argc, argv, &o);

    if (rc >= 0)
        return rc;
    if (optind >= argc) {
        fprintf(stderr, "callorchctl: no command given\n");
        usage(stderr);
        return EXIT_USAGE;
    }
    for (size_t i = 0; i < N_COMMANDS; i++) {
        if (strcmp(argv[optind], commands[i].name) == 0)
            return commands[i].run(&o, argc - optind - 1, argv + optind + 1);
    }
    fprintf(stderr, "callorchctl: unknown command '%s'\n", argv[optind]);
    usage(stderr);
    return EXIT_USAGE;
}
