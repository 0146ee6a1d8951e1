/*
 * migrate.c — applies the numbered SQL migrations (see migrate.h).
 *
 * Owns: the migration file list, the schema_migrations table and the
 * advisory lock around a run.  Blocking libpq on purpose: this is the
 * callorchctl side, where waiting for the server is what the user asked for.
 */
#include <auto-config.h>

#include "store/migrate.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <libpq-fe.h>

#include "util/err.h"
#include "util/strbuf.h"


/* Copy libpq's message onto one line: "\n\t" and friends become one space. */
static void oneline(const char *msg, char *buf, size_t buflen)
{
    size_t o = 0;
    int space = 0;

    for (const char *p = msg ? msg : ""; *p != '\0' && o + 1 < buflen; p++) {
        if (isspace((unsigned char)*p)) {
            space = 1;
            continue;
        }
        if (space && o > 0 && o + 2 < buflen)
            buf[o++] = ' ';
        space = 0;
        buf[o++] = *p;
    }
    if (buflen > 0)
        buf[o] = '\0';
}

/* ------------------------------------------------------------ file list --- */

/* NNN_anything.sql → length of the digit prefix, or 0 when NAME is no migration. */
static size_t migration_prefix(const char *name)
{
    size_t d = strspn(name, "0123456789");
    size_t len = strlen(name);

    if (d == 0 || name[d] != '_' || len < d + 1 + 4)
        return 0;
    if (strcmp(name + len - 4, ".sql") != 0)
        return 0;
    return d;
}

static int cmp_migration(const void *a, const void *b)
{
    const struct co_migration *x = a, *y = b;
    unsigned long long nx = strtoull(x->version, NULL, 10);
    unsigned long long ny = strtoull(y->version, NULL, 10);

    if (nx != ny)
        return nx < ny ? -1 : 1;
    return strcmp(x->file, y->file);
}

void co_migrations_free(struct co_migration *list, int n)
{
    for (int i = 0; list != NULL && i < n; i++) {
        free(list[i].version);
        free(list[i].file);
        free(list[i].path);
    }
    free(list);
}

/* Append DIR/NAME to the list if it is a regular file.  -1 on ENOMEM. */
static int add_migration(struct co_migration **list, int *n, int *cap, const char *dir,
                         const char *name, size_t digits)
{
    struct co_migration m = { 0 };
    struct stat st;
    size_t plen = strlen(dir) + strlen(name) + 2;

    if (*n == *cap) {
        int ncap = *cap ? *cap * 2 : 16;
        struct co_migration *nl = realloc(*list, (size_t)ncap * sizeof(*nl));
        if (nl == NULL)
            return -1;
        *list = nl;
        *cap = ncap;
    }
    if ((m.path = malloc(plen)) == NULL)
        return -1;
    snprintf(m.path, plen, "%s/%s", dir, name);
    if (stat(m.path, &st) != 0 || !S_ISREG(st.st_mode)) {
        free(m.path);
        return 0;
    }
    m.version = strndup(name, digits);
    m.file = strdup(name);
    if (m.version == NULL || m.file == NULL) {
        free(m.version);
        free(m.file);
        free(m.path);
        return -1;
    }
    (*list)[(*n)++] = m;
    return 0;
}

int co_migrations_list(const char *dir, struct co_migration **out, int *n, char *err, size_t errlen)
{
    struct co_migration *list = NULL;
    int count = 0, cap = 0;
    struct dirent *de;
    DIR *d = opendir(dir);

    if (d == NULL) {
        co_seterr(err, errlen, "cannot open migration directory %s: %s", dir, strerror(errno));
        return -1;
    }
    while ((de = readdir(d)) != NULL) {
        size_t digits = migration_prefix(de->d_name);
        if (digits > 0 && add_migration(&list, &count, &cap, dir, de->d_name, digits) != 0) {
            closedir(d);
            co_migrations_free(list, count);
            co_seterr(err, errlen, "out of memory");
            return -1;
        }
    }
    closedir(d);
    if (count > 1)
        qsort(list, (size_t)count, sizeof(*list), cmp_migration);
    for (int i = 1; i < count; i++) {
        if (strtoull(list[i].version, NULL, 10) == strtoull(list[i - 1].version, NULL, 10)) {
            co_seterr(err, errlen, "%s: %s and %s have the same number", dir, list[i - 1].file,
                      list[i].file);
            co_migrations_free(list, count);
            return -1;
        }
    }
    *out = list;
    *n = count;
    return 0;
}

/* ------------------------------------------------------------- conninfo --- */

/* Append S to buf, quoted as libpq's conninfo syntax wants when necessary. */
static void append_value(char *buf, size_t buflen, size_t *o, const char *s)
{
    int quote = *s == '\0' || strpbrk(s, " \t\n\r\f\v'\\") != NULL;

    if (quote && *o + 1 < buflen)
        buf[(*o)++] = '\'';
    for (; *s != '\0' && *o + 2 < buflen; s++) {
        if (quote && (*s == '\'' || *s == '\\'))
            buf[(*o)++] = '\\';
        buf[(*o)++] = *s;
    }
    if (quote && *o + 1 < buflen)
        buf[(*o)++] = '\'';
    buf[*o] = '\0';
}

void co_conninfo_mask(const char *conninfo, char *buf, size_t buflen)
{
    char *perr = NULL;
    PQconninfoOption *opts;
    size_t o = 0;

    if (buflen == 0)
        return;
    buf[0] = '\0';
    /* A bare word is a database name to libpq (expand_dbname): no secret. */
    if (strchr(conninfo, '=') == NULL && strstr(conninfo, "://") == NULL) {
        snprintf(buf, buflen, "dbname=");
        o = strlen(buf);
        append_value(buf, buflen, &o, conninfo);
        return;
    }
    /* Rebuilt from libpq's own parse, so URIs ("postgresql://u:pw@h/db")
     * and key=value strings are masked alike. */
    if ((opts = PQconninfoParse(conninfo, &perr)) == NULL) {
        PQfreemem(perr);
        snprintf(buf, buflen, "(unparsable)");
        return;
    }
    for (PQconninfoOption *op = opts; op->keyword != NULL; op++) {
        if (op->val == NULL)
            continue;
        int w = snprintf(buf + o, buflen - o, "%s%s=", o ? " " : "", op->keyword);
        if (w < 0 || (size_t)w >= buflen - o)
            break;
        o += (size_t)w;
        append_value(buf, buflen, &o, strcmp(op->keyword, "password") == 0 ? "***" : op->val);
    }
    PQconninfoFree(opts);
}

/* ------------------------------------------------------------ migrating --- */

static PGconn *connect_db(const char *conninfo, char *err, size_t errlen)
{
    /* expand_dbname: CONNINFO is a whole conninfo string or URI; the
     * fallback name shows up in pg_stat_activity unless the user set one. */
    const char *keys[] = { "dbname", "fallback_application_name", NULL };
    const char *vals[] = { conninfo, "callorchctl", NULL };
    PGconn *pg = PQconnectdbParams(keys, vals, 1);
    char masked[512], msg[512];

    if (pg != NULL && PQstatus(pg) == CONNECTION_OK)
        return pg;
    co_conninfo_mask(conninfo, masked, sizeof(masked));
    oneline(pg ? PQerrorMessage(pg) : "out of memory", msg, sizeof(msg));
    co_seterr(err, errlen, "cannot connect to PostgreSQL (conninfo %s): %s", masked, msg);
    PQfinish(pg);
    return NULL;
}

/* Describe a failed result R (or the connection's error) as "WHAT: message". */
static void result_err(PGconn *pg, const PGresult *r, const char *what, char *err, size_t errlen)
{
    char msg[512];

    oneline(r ? PQresultErrorMessage(r) : PQerrorMessage(pg), msg, sizeof(msg));
    co_seterr(err, errlen, "%s: %s", what, msg);
}

static int result_ok(const PGresult *r)
{
    ExecStatusType st = PQresultStatus(r);

    return st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK || st == PGRES_EMPTY_QUERY;
}

/* Run SQL (no parameters); on failure describe it as "WHAT: message". */
static int exec_ok(PGconn *pg, const char *sql, const char *what, char *err, size_t errlen)
{
    PGresult *r = PQexec(pg, sql);
    int ok = result_ok(r);

    if (!ok)
        result_err(pg, r, what, err, errlen);
    PQclear(r);
    return ok ? 0 : -1;
}

/* The whole file as a malloc'd string ("" when empty), or NULL and why. */
static char *read_file(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    struct strbuf b = { 0 };
    char chunk[8192];
    size_t got;

    if (f == NULL) {
        co_seterr(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    while ((got = fread(chunk, 1, sizeof(chunk), f)) > 0)
        strbuf_add(&b, chunk, got);
    int read_error = ferror(f);
    fclose(f);
    char *text = NULL;
    if (read_error)
        co_seterr(err, errlen, "%s: read error", path);
    else if (b.failed || (text = b.len > 0 ? strbuf_take(&b) : strdup("")) == NULL)
        co_seterr(err, errlen, "%s: out of memory", path);
    strbuf_free(&b);
    return text;
}

/* Line of the 1-based character POSITION (PostgreSQL counts characters). */
static int line_of(const char *sql, long position)
{
    int line = 1;

    for (const unsigned char *p = (const unsigned char *)sql; *p != '\0'; p++) {
        if ((*p & 0xC0) != 0x80 && --position <= 0)
            break;
        if (*p == '\n')
            line++;
    }
    return line;
}

/* "path:line: message (SQLSTATE)" from a failed migration statement. */
static void describe_failure(const struct co_migration *m, const char *sql, PGconn *pg,
                             const PGresult *r, char *err, size_t errlen)
{
    const char *pos = r ? PQresultErrorField(r, PG_DIAG_STATEMENT_POSITION) : NULL;
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    const char *primary = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    const char *detail = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_DETAIL) : NULL;
    char msg[512], line[32] = "";

    oneline(primary ? primary : PQerrorMessage(pg), msg, sizeof(msg));
    if (pos != NULL)
        snprintf(line, sizeof(line), ":%d", line_of(sql, atol(pos)));
    co_seterr(err, errlen, "%s%s: %s%s%s%s%s%s", m->path, line, msg, state ? " (" : "",
              state ? state : "", state ? ")" : "", detail ? " DETAIL: " : "",
              detail ? detail : "");
}

/* Apply one migration and record it, in one transaction. */
static int apply_one(PGconn *pg, const struct co_migration *m, char *err, size_t errlen)
{
    const char *params[2] = { m->version, m->file };
    char *sql = read_file(m->path, err, errlen);
    PGresult *r;
    int rc = -1;

    if (sql == NULL)
        return -1;
    if (exec_ok(pg, "BEGIN", m->path, err, errlen) != 0)
        goto out;
    r = PQexec(pg, sql);
    if (!result_ok(r)) {
        describe_failure(m, sql, pg, r, err, errlen);
        PQclear(r);
        goto rollback;
    }
    PQclear(r);
    r = PQexecParams(pg, "INSERT INTO schema_migrations (version, file) VALUES ($1, $2)", 2, NULL,
                     params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        describe_failure(m, "", pg, r, err, errlen);
        PQclear(r);
        goto rollback;
    }
    PQclear(r);
    rc = exec_ok(pg, "COMMIT", m->path, err, errlen);
    goto out;
rollback:
    PQclear(PQexec(pg, "ROLLBACK"));
out:
    free(sql);
    return rc;
}

/* Lock, create the bookkeeping table, and learn which versions are applied. */
static PGresult *prepare_run(PGconn *pg, char *err, size_t errlen)
{
    static const char create[] = "CREATE TABLE IF NOT EXISTS schema_migrations ("
                                 " version text PRIMARY KEY,"
                                 " file text NOT NULL,"
                                 " applied_at timestamptz NOT NULL DEFAULT now())";
    char lock[96];
    PGresult *r;

    /* NOTICEs such as "relation already exists, skipping" are noise here;
     * warnings and errors still show. */
    if (exec_ok(pg, "SET client_min_messages = warning", "set client_min_messages", err, errlen) !=
        0)
        return NULL;
    /* Session lock, released when the connection closes: a second run waits
     * here, then sees the first run's versions as present. */
    snprintf(lock, sizeof(lock), "SELECT pg_advisory_lock(%lld)", CO_MIGRATE_LOCK_KEY);
    if (exec_ok(pg, lock, "pg_advisory_lock", err, errlen) != 0)
        return NULL;
    if (exec_ok(pg, create, "create schema_migrations", err, errlen) != 0)
        return NULL;
    r = PQexec(pg, "SELECT version FROM schema_migrations");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        result_err(pg, r, "read schema_migrations", err, errlen);
        PQclear(r);
        return NULL;
    }
    return r;
}

static int is_recorded(const PGresult *applied, const char *version)
{
    for (int i = 0; i < PQntuples(applied); i++)
        if (strcmp(PQgetvalue(applied, i, 0), version) == 0)
            return 1;
    return 0;
}

int co_migrate_run(const char *conninfo, const char *dir, struct co_migrate_result *res,
                   co_migrate_progress_fn progress, void *arg, char *err, size_t errlen)
{
    struct co_migration *list = NULL;
    PGresult *applied = NULL;
    PGconn *pg = NULL;
    int n = 0, rc = -1;

    res->applied = res->present = 0;
    if (co_migrations_list(dir, &list, &n, err, errlen) != 0)
        return -1;
    if (n == 0) {
        co_seterr(err, errlen, "no migrations (NNN_name.sql) in %s", dir);
        goto out;
    }
    if ((pg = connect_db(conninfo, err, errlen)) == NULL)
        goto out;
    if ((applied = prepare_run(pg, err, errlen)) == NULL)
        goto out;
    for (int i = 0; i < n; i++) {
        if (is_recorded(applied, list[i].version)) {
            res->present++;
            continue;
        }
        if (apply_one(pg, &list[i], err, errlen) != 0)
            goto out;
        res->applied++;
        if (progress != NULL)
            progress(&list[i], arg);
    }
    rc = 0;
out:
    PQclear(applied);
    PQfinish(pg); /* also releases the advisory lock */
    co_migrations_free(list, n);
    return rc;
}
