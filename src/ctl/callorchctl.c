/*
 * callorchctl.c — main() of the admin command (DESIGN.md section 7).
 *
 * Owns: option parsing, the command table, the human-readable output and
 * the exit statuses:
 *   0  the command succeeded
 *   1  the command failed (database unreachable, invalid config, reload
 *      refused, no answer in time, …)
 *   2  usage error (unknown command or option), with the usage text
 *   3  callorchd is not running (no control socket, or nobody listens on it)
 *   4  permission denied on the control socket (its mode, or the master
 *      refusing a user that is neither root nor the [daemon] user)
 * status, reload, stop, pause and resume talk to the master over its control
 * socket (the protocol is control.c's); migrate and check-config work on
 * their own.  campaigns, and pause/resume with a campaign id, use the
 * daemon's HTTP API (DESIGN.md section 10) at the first [http] listen
 * address with the first [http] api_keys key, through libcurl's blocking
 * easy interface: callorchctl never talks to the databases itself.  Modules return errors; only this file prints and decides the
 * exit status.
 */
#include <auto-config.h>

#include <errno.h>
#include <getopt.h>
#include <ini.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>

#include "api/validate.h"
#include "master/control.h"
#include "store/migrate.h"
#include "util/config.h"

enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2, EXIT_NOT_RUNNING = 3, EXIT_DENIED = 4 };

#define CTL_TIMEOUT 10.0 /* seconds for connecting, sending, answering */
#define STOP_GRACE 10.0  /* waiting for a stop: shutdown_timeout + this */
#define SOCKET_PATH_MAX 4096

struct ctl_options {
    const char *config_path; /* -c; CO_DEFAULT_CONFIG otherwise */
    int config_given;
    const char *socket_path; /* -s; else [daemon] control_socket of the config */
    const char *sql_dir;     /* --sql-dir, $CALLORCH_SQLDIR or CO_SQLDIR */
    int json;                /* --json: print the master's answer as is */
    int no_wait;             /* --no-wait: stop returns once accepted */
};

struct ctl_command {
    const char *name;
    const char *summary;
    int (*run)(const struct ctl_options *o, int argc, char **argv);
};

static int cmd_status(const struct ctl_options *o, int argc, char **argv);
static int cmd_reload(const struct ctl_options *o, int argc, char **argv);
static int cmd_stop(const struct ctl_options *o, int argc, char **argv);
static int cmd_pause(const struct ctl_options *o, int argc, char **argv);
static int cmd_resume(const struct ctl_options *o, int argc, char **argv);
static int cmd_migrate(const struct ctl_options *o, int argc, char **argv);
static int cmd_check_config(const struct ctl_options *o, int argc, char **argv);
static int cmd_campaigns(const struct ctl_options *o, int argc, char **argv);

static const struct ctl_command commands[] = {
    { "status", "show the master, its children, slots in use and whether dispatch is paused",
      cmd_status },
    { "reload", "re-read the configuration and replace the children (like SIGHUP)", cmd_reload },
    { "stop", "stop gracefully (like SIGTERM) and wait until callorchd has exited", cmd_stop },
    { "pause", "start no new calls (calls in flight finish); pause ID: that campaign only",
      cmd_pause },
    { "resume", "start new calls again; resume ID: that campaign", cmd_resume },
    { "campaigns", "list the campaigns with their progress (over the HTTP API)", cmd_campaigns },
    { "migrate", "apply the SQL migrations not yet applied, in order", cmd_migrate },
    { "check-config", "validate the configuration file", cmd_check_config },
};

#define N_COMMANDS (sizeof(commands) / sizeof(commands[0]))

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: callorchctl [OPTIONS] COMMAND\n"
            "Options:\n"
            "  -c, --config FILE  configuration file (default %s)\n"
            "  -s, --socket PATH  control socket (default: [daemon] control_socket of FILE)\n"
            "      --json         print callorchd's answer as JSON, as received\n"
            "      --no-wait      stop: return once callorchd began to stop\n"
            "      --sql-dir DIR  migrations directory (default $CALLORCH_SQLDIR or %s)\n"
            "  -h, --help         print this help and exit\n"
            "  -V, --version      print the version and exit\n"
            "Commands:\n",
            CO_DEFAULT_CONFIG, CO_SQLDIR);
    for (size_t i = 0; i < N_COMMANDS; i++)
        fprintf(out, "  %-13s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "Exit status:\n"
                 "  0  success\n"
                 "  1  the command failed (e.g. reload refused: invalid configuration)\n"
                 "  2  usage error\n"
                 "  3  callorchd is not running (no control socket, or nobody listening)\n"
                 "  4  permission denied on the control socket\n");
}

static int no_arguments(const char *cmd, int argc, char **argv)
{
    if (argc == 0)
        return 0;
    fprintf(stderr, "callorchctl: %s: unexpected argument '%s'\n", cmd, argv[0]);
    usage(stderr);
    return -1;
}

/* ------------------------------------------------- talking to the master */

static int scan_socket(void *user, const char *section, const char *name, const char *value)
{
    char *path = user;
    if (strcmp(section, "daemon") == 0 && strcmp(name, "control_socket") == 0)
        snprintf(path, SOCKET_PATH_MAX, "%s", value);
    return 1;
}

/*
 * Where the control socket is: -s, else [daemon] control_socket of the
 * config.  The file is scanned, not validated: the daemon stays reachable
 * while the file holds an edit in progress (and a reload reports the error).
 * An unreadable default config means the default socket.
 */
static int socket_path(const struct ctl_options *o, char *path)
{
    snprintf(path, SOCKET_PATH_MAX, "%s", o->socket_path ? o->socket_path : CONTROL_DEFAULT_SOCKET);
    if (o->socket_path != NULL)
        return 0;
    FILE *f = fopen(o->config_path, "r");
    if (f == NULL && !o->config_given)
        return 0;
    if (f == NULL) {
        fprintf(stderr, "callorchctl: cannot read %s: %s (or give the socket with -s)\n",
                o->config_path, strerror(errno));
        return -1;
    }
    ini_parse_file(f, scan_socket, path); /* syntax errors elsewhere do not matter here */
    fclose(f);
    return 0;
}

static int result_status(enum control_result r)
{
    switch (r) {
    case CONTROL_OK: return EXIT_OK;
    case CONTROL_NOT_RUNNING: return EXIT_NOT_RUNNING;
    case CONTROL_DENIED: return EXIT_DENIED;
    default: return EXIT_FAIL;
    }
}

/* A decoded answer, and the connection (kept for "stop"). */
struct answer {
    json_t *json;
    int fd;
};

/* Decode LINE into A; print it for --json; report a refusal. */
static int decode_answer(const struct ctl_options *o, const char *command, const char *line,
                         struct answer *a)
{
    json_error_t jerr;
    a->json = json_loads(line, 0, &jerr);
    json_t *ok = json_object_get(a->json, "ok");
    if (!json_is_boolean(ok)) {
        fprintf(stderr, "callorchctl: malformed answer from callorchd: %s\n", line);
        return EXIT_FAIL;
    }
    if (o->json)
        printf("%s\n", line);
    if (!json_is_true(ok)) {
        const char *why = json_string_value(json_object_get(a->json, "error"));
        fprintf(stderr, "callorchctl: %s failed: %s\n", command, why ? why : "(no reason given)");
        /* refused for who we are (SO_PEERCRED): as when the socket's mode refuses us */
        return json_is_true(json_object_get(a->json, "denied")) ? EXIT_DENIED : EXIT_FAIL;
    }
    return EXIT_OK;
}

/* Send COMMAND to the master; on success A holds the answer (free with answer_free). */
static int ask(const struct ctl_options *o, const char *command, struct answer *a)
{
    char path[SOCKET_PATH_MAX], err[1024];
    char *line = NULL;

    a->json = NULL;
    a->fd = -1;
    if (socket_path(o, path) < 0)
        return EXIT_FAIL;
    enum control_result r = control_connect(path, CTL_TIMEOUT, &a->fd, err, sizeof(err));
    if (r == CONTROL_OK)
        r = control_exchange(a->fd, command, &line, err, sizeof(err));
    if (r != CONTROL_OK) {
        fprintf(stderr, "callorchctl: %s\n", err);
        return result_status(r);
    }
    int rc = decode_answer(o, command, line, a);
    free(line);
    return rc;
}

static void answer_free(struct answer *a)
{
    json_decref(a->json);
    if (a->fd >= 0)
        close(a->fd);
}

/* Run a control command with no arguments; PRINT shows a success. */
static int control_command(const struct ctl_options *o, const char *command, int argc, char **argv,
                           void (*print)(const json_t *answer))
{
    struct answer a;
    if (no_arguments(command, argc, argv) != 0)
        return EXIT_USAGE;
    int rc = ask(o, command, &a);
    if (rc == EXIT_OK && !o->json)
        print(a.json);
    answer_free(&a);
    return rc;
}

/* ------------------------------------------------------------- status */

static long jint(const json_t *obj, const char *key)
{
    return (long)json_integer_value(json_object_get(obj, key));
}

static const char *jstr(const json_t *obj, const char *key)
{
    const char *s = json_string_value(json_object_get(obj, key));
    return s != NULL ? s : "?";
}

/* "42s", "5m 03s", "2h 05m", "3d 04h" */
static const char *duration(double seconds, char *buf, size_t len)
{
    long t = seconds > 0 ? (long)seconds : 0;
    if (t < 60)
        snprintf(buf, len, "%lds", t);
    else if (t < 3600)
        snprintf(buf, len, "%ldm %02lds", t / 60, t % 60);
    else if (t < 86400)
        snprintf(buf, len, "%ldh %02ldm", t / 3600, t % 3600 / 60);
    else
        snprintf(buf, len, "%ldd %02ldh", t / 86400, t % 86400 / 3600);
    return buf;
}

#define CHILD_ROW "%-6s %4s  %-8s %-9s %9s %9s %4s\n"

static void print_child(const json_t *ch)
{
    char up[32], pid[16] = "-";
    const json_t *p = json_object_get(ch, "pid");
    char slot[16], restarts[16], gen[16];
    snprintf(slot, sizeof(slot), "%ld", jint(ch, "slot"));
    snprintf(restarts, sizeof(restarts), "%ld", jint(ch, "restarts"));
    snprintf(gen, sizeof(gen), "%ld", jint(ch, "generation"));
    if (json_is_integer(p))
        snprintf(pid, sizeof(pid), "%ld", (long)json_integer_value(p));
    printf(CHILD_ROW, jstr(ch, "kind"), slot, pid, jstr(ch, "state"),
           duration(json_number_value(json_object_get(ch, "uptime")), up, sizeof(up)), restarts,
           gen);
}

/* "http 2/2, kafka 2/2, sched 1/1, events 1/1 ready" over the current generation. */
static void print_ready(const json_t *children, long generation)
{
    static const char *const kinds[] = { "http", "kafka", "sched", "events" };
    size_t i;
    const json_t *ch;
    for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
        int want = 0, ready = 0;
        json_array_foreach(children, i, ch)
        {
            if (strcmp(jstr(ch, "kind"), kinds[k]) == 0 && jint(ch, "generation") == generation) {
                want++;
                ready += json_is_true(json_object_get(ch, "ready"));
            }
        }
        printf("%s%s %d/%d", k ? ", " : "", kinds[k], ready, want);
    }
    printf(" ready\n");
}

static void print_status(const json_t *st)
{
    char up[32];
    const json_t *children = json_object_get(st, "children");
    size_t i;
    const json_t *ch;
    int paused = json_is_true(json_object_get(st, "paused"));

    printf("callorchd %s, pid %ld, %s, up %s\n", jstr(st, "version"), jint(st, "pid"),
           jstr(st, "state"),
           duration(json_number_value(json_object_get(st, "uptime")), up, sizeof(up)));
    printf("config:     %s (generation %ld)\n", jstr(st, "config_file"), jint(st, "generation"));
    printf("dispatch:   %s\n", paused ? "PAUSED (no new call starts)" : "running");
    printf("slots:      %ld in use of %ld\n", jint(st, "slots_in_use"),
           jint(st, "max_concurrent_calls"));
    printf("children:   ");
    print_ready(children, jint(st, "generation"));
    printf("\n" CHILD_ROW, "KIND", "SLOT", "PID", "STATE", "UPTIME", "RESTARTS", "GEN");
    json_array_foreach(children, i, ch) print_child(ch);
}

static int cmd_status(const struct ctl_options *o, int argc, char **argv)
{
    return control_command(o, "status", argc, argv, print_status);
}

/* -------------------------------------------------- the other commands */

static void print_reloaded(const json_t *a)
{
    printf("configuration reloaded (generation %ld); new children are starting\n",
           jint(a, "generation"));
}

static int cmd_reload(const struct ctl_options *o, int argc, char **argv)
{
    int rc = control_command(o, "reload", argc, argv, print_reloaded);
    if (rc == EXIT_FAIL)
        fprintf(stderr, "callorchctl: callorchd keeps running with its current configuration\n");
    return rc;
}

static void print_paused(const json_t *a)
{
    int changed = json_is_true(json_object_get(a, "changed"));
    printf("%s\n", changed ? "dispatch paused: no new call starts; calls in flight finish"
                           : "dispatch was already paused");
}

static void print_resumed(const json_t *a)
{
    int changed = json_is_true(json_object_get(a, "changed"));
    printf("%s\n", changed ? "dispatch resumed" : "dispatch was not paused");
}

static int campaign_action(const struct ctl_options *o, const char *action, int argc, char **argv);

static int cmd_pause(const struct ctl_options *o, int argc, char **argv)
{
    if (argc > 0)
        return campaign_action(o, "pause", argc, argv);
    return control_command(o, "pause", argc, argv, print_paused);
}

static int cmd_resume(const struct ctl_options *o, int argc, char **argv)
{
    if (argc > 0)
        return campaign_action(o, "resume", argc, argv);
    return control_command(o, "resume", argc, argv, print_resumed);
}

/* The master keeps the connection of a "stop" open until it exits. */
static int cmd_stop(const struct ctl_options *o, int argc, char **argv)
{
    struct answer a;
    if (no_arguments("stop", argc, argv) != 0)
        return EXIT_USAGE;
    int rc = ask(o, "stop", &a);
    long pid = rc == EXIT_OK ? jint(a.json, "pid") : 0;
    double wait = json_number_value(json_object_get(a.json, "shutdown_timeout")) + STOP_GRACE;
    if (rc == EXIT_OK && !o->json)
        printf("callorchd (pid %ld) is stopping\n", pid);
    if (rc == EXIT_OK && !o->no_wait) {
        fflush(stdout);
        if (control_wait_closed(a.fd, wait) == 0) {
            if (!o->json)
                printf("callorchd stopped\n");
        } else {
            fprintf(stderr, "callorchctl: callorchd (pid %ld) has not exited after %.0f s\n", pid,
                    wait);
            rc = EXIT_FAIL;
        }
    }
    answer_free(&a);
    return rc;
}

/* --------------------------------------------------- offline commands */

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
    rc = co_migrate_run(cfg->pg_conninfo, o->sql_dir, &res, print_applied, NULL, err, sizeof(err));
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

/* ------------------------------------------------ the HTTP API (campaigns) */

static struct co_config *load_config(const struct ctl_options *o);

struct http_answer {
    long status; /* 0: no answer */
    char *body;  /* NUL-terminated */
    size_t len;
    char err[CURL_ERROR_SIZE];
};

static size_t gather(char *data, size_t size, size_t n, void *arg)
{
    struct http_answer *a = arg;
    char *p = realloc(a->body, a->len + size * n + 1);
    if (p == NULL)
        return 0;
    memcpy(p + a->len, data, size * n);
    a->len += size * n;
    p[a->len] = '\0';
    a->body = p;
    return size * n;
}

/* The base URL of the API from [http] listen: a wildcard address is
 * reached on loopback. */
static void api_base(const struct co_config *cfg, char *out, size_t n)
{
    const char *host = cfg->listen[0].host;
    if (strcmp(host, "") == 0 || strcmp(host, "0.0.0.0") == 0 || strcmp(host, "*") == 0)
        host = "127.0.0.1";
    else if (strcmp(host, "::") == 0)
        host = "::1";
    snprintf(out, n, strchr(host, ':') ? "http://[%s]:%s" : "http://%s:%s", host,
             cfg->listen[0].port);
}

/* METHOD PATH on the daemon's API; *A holds the answer (answer.body freed
 * by the caller).  Returns EXIT_OK when an HTTP answer came, else
 * EXIT_NOT_RUNNING (printed). */
static int api_request(const struct co_config *cfg, const char *method, const char *path,
                       struct http_answer *a)
{
    char url[512], auth[CO_MAX_CALLBACK_KEY_BYTES * 2 + 64];
    struct curl_slist *h = NULL;
    CURL *c = curl_easy_init();
    memset(a, 0, sizeof *a);
    api_base(cfg, url, sizeof url);
    snprintf(url + strlen(url), sizeof url - strlen(url), "%s", path);
    if (cfg->n_api_keys > 0) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", cfg->api_keys[0]);
        h = curl_slist_append(h, auth);
    }
    if (c == NULL)
        return EXIT_FAIL;
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, gather);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, a);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, a->err);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, (long)CTL_TIMEOUT);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    if (strcmp(method, "POST") == 0)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, "");
    CURLcode rc = curl_easy_perform(c);
    if (rc == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &a->status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    if (rc != CURLE_OK) {
        fprintf(stderr, "callorchctl: cannot reach the API at %s: %s\n", url,
                a->err[0] ? a->err : curl_easy_strerror(rc));
        return EXIT_NOT_RUNNING;
    }
    return EXIT_OK;
}

/* An answer that is not a 2xx: print its problem detail; EXIT_FAIL. */
static int api_failed(const char *what, const struct http_answer *a)
{
    json_t *j = a->body != NULL ? json_loads(a->body, 0, NULL) : NULL;
    fprintf(stderr, "callorchctl: %s: HTTP %ld: %s\n", what, a->status, jstr(j, "detail"));
    json_decref(j);
    return EXIT_FAIL;
}

/* pause ID / resume ID: one campaign. */
static int campaign_action(const struct ctl_options *o, const char *action, int argc, char **argv)
{
    char path[128];
    struct http_answer a;
    if (argc > 1) {
        fprintf(stderr, "callorchctl: %s: at most one campaign id\n", action);
        usage(stderr);
        return EXIT_USAGE;
    }
    if (!validate_uuid(argv[0])) {
        fprintf(stderr, "callorchctl: %s: '%s' is not a campaign id (a UUID)\n", action, argv[0]);
        return EXIT_USAGE;
    }
    struct co_config *cfg = load_config(o);
    if (cfg == NULL)
        return EXIT_FAIL;
    snprintf(path, sizeof path, "/api/v1/campaigns/%s/%s", argv[0], action);
    int rc = api_request(cfg, "POST", path, &a);
    if (rc == EXIT_OK && (a.status < 200 || a.status > 299)) {
        rc = api_failed(action, &a);
    } else if (rc == EXIT_OK) {
        json_t *j = json_loads(a.body != NULL ? a.body : "", 0, NULL);
        if (o->json)
            printf("%s\n", a.body);
        else
            printf("campaign %s is %s\n", argv[0], jstr(j, "status"));
        json_decref(j);
    }
    free(a.body);
    co_config_free(cfg);
    return rc;
}

static const char *const count_names[] = { "PENDING",   "IN_PROGRESS", "COMPLETED", "FAILED",
                                           "CANCELLED", "SUPPRESSED",  "EXPIRED" };

/* One row of the table: done = not PENDING nor IN_PROGRESS. */
static void print_campaign(const json_t *c)
{
    const json_t *counts = json_object_get(c, "counts");
    long long total = 0, n[7];
    char pct[16] = "-";
    for (size_t i = 0; i < 7; i++) {
        n[i] = json_integer_value(json_object_get(counts, count_names[i]));
        total += n[i];
    }
    if (total > 0)
        snprintf(pct, sizeof pct, "%lld%%", (total - n[0] - n[1]) * 100 / total);
    printf("%-36s  %-20.20s  %-9s  %7lld  %5s  %7lld  %7lld  %7lld  %7lld  %7lld\n", jstr(c, "id"),
           jstr(c, "name"), jstr(c, "status"), total, pct, n[0], n[1], n[2], n[3],
           n[4] + n[5] + n[6]);
}

/* Every page of GET /api/v1/campaigns, newest first. */
static int list_campaigns(const struct ctl_options *o, const struct co_config *cfg)
{
    char path[256] = "/api/v1/campaigns?pageSize=100";
    int rc = EXIT_OK;
    if (!o->json)
        printf("%-36s  %-20s  %-9s  %7s  %5s  %7s  %7s  %7s  %7s  %7s\n", "ID", "NAME", "STATUS",
               "CALLS", "DONE", "PENDING", "RUNNING", "OK", "FAILED", "OTHER");
    for (;;) {
        struct http_answer a;
        if ((rc = api_request(cfg, "GET", path, &a)) != EXIT_OK)
            return rc;
        if (a.status != 200) {
            rc = api_failed("campaigns", &a);
            free(a.body);
            return rc;
        }
        json_t *page = json_loads(a.body, 0, NULL);
        json_t *data = json_object_get(page, "data");
        for (size_t i = 0; i < json_array_size(data); i++) {
            if (o->json) {
                char *t = json_dumps(json_array_get(data, i), JSON_COMPACT);
                printf("%s\n", t != NULL ? t : "null");
                free(t);
            } else {
                print_campaign(json_array_get(data, i));
            }
        }
        const char *next = json_string_value(json_object_get(page, "nextCursor"));
        if (next != NULL)
            snprintf(path, sizeof path, "/api/v1/campaigns?pageSize=100&cursor=%s", next);
        json_decref(page);
        free(a.body);
        if (next == NULL)
            return EXIT_OK;
    }
}

static int cmd_campaigns(const struct ctl_options *o, int argc, char **argv)
{
    if (no_arguments("campaigns", argc, argv) != 0)
        return EXIT_USAGE;
    struct co_config *cfg = load_config(o);
    if (cfg == NULL)
        return EXIT_FAIL;
    int rc = list_campaigns(o, cfg);
    co_config_free(cfg);
    return rc;
}

/* ---------------------------------------------------------------- main */

/* Returns -1 to go on to the command, or an exit status. */
static int parse_options(int argc, char **argv, struct ctl_options *o)
{
    enum { OPT_SQL_DIR = 256, OPT_JSON, OPT_NO_WAIT };
    static const struct option longopts[] = {
        { "config", required_argument, NULL, 'c' },
        { "socket", required_argument, NULL, 's' },
        { "json", no_argument, NULL, OPT_JSON },
        { "no-wait", no_argument, NULL, OPT_NO_WAIT },
        { "sql-dir", required_argument, NULL, OPT_SQL_DIR },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { NULL, 0, NULL, 0 },
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
    while ((c = getopt_long(argc, argv, "c:s:hV", longopts, NULL)) != -1) {
        switch (c) {
        case 'c':
            o->config_path = optarg;
            o->config_given = 1;
            break;
        case 's': o->socket_path = optarg; break;
        case OPT_JSON: o->json = 1; break;
        case OPT_NO_WAIT: o->no_wait = 1; break;
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
    struct ctl_options o = { 0 };
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
