/*
 * callorchd.c — main() of the daemon.
 *
 * Owns: the command line, the config path (made absolute before anything
 * moves the process to /), the start sequence (config check, sockets, pid
 * file, daemonizing, privileges) and handing over to the supervisor.
 *
 * The control socket is created here, before the privilege drop, and
 * removed here after the supervisor returned.  So is the time-zone prefix
 * table ([compliance] timezone_prefixes, restart-only): loaded once here,
 * checked by -t too, and inherited by the http children (api_tzprefix_set).
 *
 * This is the only place that decides the process exits; modules return
 * errors and the messages they carry are printed or logged here once.
 */
#include <auto-config.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api/api.h"
#include "compliance/tzprefix.h"
#include "master/control.h"
#include "master/listen.h"
#include "master/pidfile.h"
#include "master/supervisor.h"
#include "net/curl_ev.h"
#include "util/config.h"
#include "util/log.h"
#include "util/proctitle.h"
#include "util/shm.h"
#include "util/strbuf.h"
#include "util/tunables.h"

struct options {
    const char *config_path;
    bool test_only;
    bool foreground;
};

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: callorchd [-f] [-t] [-c FILE]\n"
            "  -c FILE  configuration file (default %s)\n"
            "  -t       check the configuration and exit (0 valid, 1 invalid)\n"
            "  -f       stay in the foreground (also the mode under systemd)\n"
            "  -V       print the version and exit\n"
            "  -h       print this help and exit\n",
            CO_DEFAULT_CONFIG);
}

/* Returns -1 to continue, or an exit status. */
static int parse_options(int argc, char **argv, struct options *o)
{
    int c;
    o->config_path = CO_DEFAULT_CONFIG;
    while ((c = getopt(argc, argv, "c:tfVh")) != -1) {
        switch (c) {
        case 'c': o->config_path = optarg; break;
        case 't': o->test_only = true; break;
        case 'f': o->foreground = true; break;
        case 'V': printf("callorchd %s\n", PACKAGE_VERSION); return 0;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "callorchd: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    return -1;
}

/*
 * PATH made absolute against the current directory, as a new string (NULL
 * when out of memory or the directory is unknown).  The master re-reads its
 * config on every reload, after daemonize() moved it to /, so a relative
 * -c must be pinned here, first.  Not realpath(): a missing file still gets
 * its "No such file" message, and a reload follows a replaced symlink.
 */
static char *absolute_path(const char *path)
{
    if (path[0] == '/')
        return strdup(path);
    char *cwd = getcwd(NULL, 0);
    if (cwd == NULL)
        return NULL;
    struct strbuf b = { 0 };
    strbuf_addf(&b, "%s%s%s", cwd, cwd[strlen(cwd) - 1] == '/' ? "" : "/", path);
    free(cwd);
    return strbuf_take(&b);
}

/* Leave the terminal: fork, new session, stdio to /dev/null. */
static int daemonize(void)
{
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid > 0)
        _exit(0);
    if (setsid() < 0)
        return -1;
    int fd = open("/dev/null", O_RDWR);
    if (fd < 0)
        return -1;
    dup2(fd, 0);
    dup2(fd, 1);
    if (isatty(2)) /* a redirected stderr stays: it may be the log */
        dup2(fd, 2);
    if (fd > 2)
        close(fd);
    return chdir("/");
}

/* The [daemon] user, or NULL with a message. */
static struct passwd *daemon_user(const struct co_config *cfg, char *err, size_t errlen)
{
    struct passwd *pw = getpwnam(cfg->user);
    if (pw == NULL)
        snprintf(err, errlen, "[daemon] user '%s' does not exist", cfg->user);
    return pw;
}

/* The control socket, owned by [daemon] user when we are root (so that the
 * master still owns it after the privilege drop). */
static struct control *open_control(const struct co_config *cfg, char *err, size_t errlen)
{
    uid_t uid = (uid_t)-1;
    gid_t gid = (gid_t)-1;
    if (geteuid() == 0) {
        struct passwd *pw = daemon_user(cfg, err, errlen);
        if (pw == NULL)
            return NULL;
        uid = pw->pw_uid;
        gid = pw->pw_gid;
    }
    return control_open(cfg->control_socket, uid, gid, err, errlen);
}

/* When started as root, become [daemon] user (unless that is root). */
static int drop_privileges(const struct co_config *cfg, char *err, size_t errlen)
{
    if (geteuid() != 0)
        return 0;
    struct passwd *pw = daemon_user(cfg, err, errlen);
    if (pw == NULL)
        return -1;
    if (pw->pw_uid == 0)
        return 0;
    if (initgroups(pw->pw_name, pw->pw_gid) < 0 || setgid(pw->pw_gid) < 0 ||
        setuid(pw->pw_uid) < 0) {
        snprintf(err, errlen, "cannot become user '%s': %s", cfg->user, strerror(errno));
        return -1;
    }
    return 0;
}

/* Everything between a valid config and the supervisor; returns status. */
static int start(struct co_config *cfg, const struct options *o)
{
    char err[1024];
    struct listen_set ls;
    struct control *ctl = NULL;

    if (co_log_open(cfg->log_target, cfg->log_level) < 0) {
        fprintf(stderr, "callorchd: cannot open log %s: %s\n", cfg->log_target,
                errno == ELOOP ? "it is a symbolic link; refusing to follow it" : strerror(errno));
        co_config_free(cfg);
        return 1;
    }
    ls.n_addr = 0;
    if (listen_open(cfg, &ls, err, sizeof(err)) < 0)
        goto fail;
    listen_reserve(&ls);
    if ((ctl = open_control(cfg, err, sizeof(err))) == NULL)
        goto fail;
    if (shm_init() < 0) {
        snprintf(err, sizeof(err), "cannot map the shared counters: %s", strerror(errno));
        goto fail;
    }
    if (!o->foreground && daemonize() < 0) {
        snprintf(err, sizeof(err), "cannot daemonize: %s", strerror(errno));
        goto fail;
    }
    if (pidfile_write(cfg->pid_file, err, sizeof(err)) < 0)
        goto fail;
    if (drop_privileges(cfg, err, sizeof(err)) < 0) {
        pidfile_remove(cfg->pid_file);
        goto fail;
    }
    char *pid_file = strdup(cfg->pid_file);
    co_proctitle_set("callorchd: master process -c %s", o->config_path);
    co_info("callorchd starting", "version=%s config=%s user=%s", PACKAGE_VERSION, o->config_path,
            cfg->user);
    /* owns cfg and ls now */
    int status = supervisor_run(cfg, &ls, ctl, o->config_path);
    if (pid_file != NULL)
        pidfile_remove(pid_file);
    free(pid_file);
    co_info("callorchd stopped", "status=%d", status);
    control_close(ctl); /* last: a waiting "callorchctl stop" returns now */
    return status;
fail:
    co_error("cannot start", "error=%s", CO_LOG_Q(err));
    if (co_log_enabled(CO_LOG_ERROR) && strcmp(cfg->log_target, "stderr") != 0)
        fprintf(stderr, "callorchd: %s\n", err);
    control_close(ctl);
    listen_close(&ls);
    co_config_free(cfg);
    return 1;
}

#ifdef CALLORCH_TEST_HOOKS
/* Test-only (t/callorchd-testhooks, never callorchd): shorten the timings
 * of util/tunables.h from CALLORCH_TEST_<NAME> (seconds, > 0), so tests
 * need not wait through production delays.  Returns -1 on a bad value. */
static int test_tunables_from_env(void)
{
    const struct {
        const char *env;
        double *value;
    } knobs[] = {
        { "CALLORCH_TEST_REPUBLISH_GRACE", &co_tunables.republish_grace },
        { "CALLORCH_TEST_RESPAWN_MIN", &co_tunables.respawn_min },
        { "CALLORCH_TEST_RESPAWN_MAX", &co_tunables.respawn_max },
        { "CALLORCH_TEST_RESPAWN_STABLE", &co_tunables.respawn_stable },
        { "CALLORCH_TEST_LEASE_MARGIN", &co_tunables.lease_margin },
        { "CALLORCH_TEST_PG_QUEUE_TIMEOUT", &co_tunables.pg_queue_timeout },
        { "CALLORCH_TEST_PG_BACKOFF_MAX", &co_tunables.pg_backoff_max },
        { "CALLORCH_TEST_REDIS_BACKOFF_MAX", &co_tunables.redis_backoff_max },
    };
    for (size_t i = 0; i < sizeof(knobs) / sizeof(knobs[0]); i++) {
        const char *v = getenv(knobs[i].env);
        if (v == NULL || *v == '\0')
            continue;
        char *end;
        double d = strtod(v, &end);
        if (*end != '\0' || !(d > 0)) {
            fprintf(stderr, "callorchd: %s=%s: not a positive number of seconds\n", knobs[i].env,
                    v);
            return -1;
        }
        *knobs[i].value = d;
    }
    return 0;
}
#else
static int test_tunables_from_env(void)
{
    return 0;
}
#endif

/* The prefix table of CFG, or NULL after printing why (a missing or
 * malformed file is a configuration error, as -t reports it). */
static struct tzprefix *load_tzprefix(const struct co_config *cfg)
{
    char err[1024];
    struct tzprefix *t;
    if (tzprefix_load(cfg->timezone_prefixes, &t, err, sizeof(err)) < 0) {
        fprintf(stderr, "callorchd: [compliance] timezone_prefixes: %s\n", err);
        return NULL;
    }
    return t;
}

int main(int argc, char **argv)
{
    struct options o = { 0 };
    struct co_config *cfg;
    char err[1024];

    int rc = parse_options(argc, argv, &o);
    if (rc >= 0)
        return rc;
    if (test_tunables_from_env() < 0)
        return 1;
    /* a copy, as argv is about to move; absolute, as a reload follows a chdir */
    char *config_path = absolute_path(o.config_path);
    if (config_path == NULL) {
        fprintf(stderr, "callorchd: cannot resolve %s: %s\n", o.config_path, strerror(errno));
        return 1;
    }
    if (co_proctitle_init(argc, argv) < 0) {
        fprintf(stderr, "callorchd: out of memory\n");
        free(config_path);
        return 1;
    }
    o.config_path = config_path;
    if (co_config_load(o.config_path, &cfg, err, sizeof(err)) < 0) {
        fprintf(stderr, "callorchd: %s\n", err);
        free(config_path);
        return 1;
    }
    struct tzprefix *tzp = load_tzprefix(cfg);
    if (tzp == NULL || o.test_only) {
        rc = tzp != NULL ? 0 : 1;
        if (rc == 0)
            printf("callorchd: configuration file %s test is successful\n", o.config_path);
        tzprefix_free(tzp);
        co_config_free(cfg);
        free(config_path);
        return rc;
    }
    api_tzprefix_set(tzp);
    /* once, before any fork or thread (libcurl's rule) */
    if (curl_ev_global_init() < 0) {
        fprintf(stderr, "callorchd: cannot initialise libcurl\n");
        tzprefix_free(tzp);
        co_config_free(cfg);
        free(config_path);
        return 1;
    }
    rc = start(cfg, &o);
    tzprefix_free(tzp);
    free(config_path);
    return rc;
}
