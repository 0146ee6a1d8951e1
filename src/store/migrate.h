/*
 * migrate.h — applies the numbered SQL migrations (sql/NNN_name.sql).
 *
 * Owns: finding the migration files of a directory and ordering them by
 * number, the schema_migrations table that records which ones were applied,
 * and the advisory lock that makes concurrent runs take turns.  Each file
 * runs in its own transaction together with its schema_migrations row, so a
 * file is applied entirely and recorded, or not at all.
 *
 * A migration file must not contain transaction control (BEGIN, COMMIT) or
 * statements that cannot run inside a transaction block (CREATE INDEX
 * CONCURRENTLY, VACUUM, ALTER SYSTEM …).
 *
 * Blocking libpq: this runs from callorchctl, never from a daemon child.
 */
#ifndef CO_MIGRATE_H
#define CO_MIGRATE_H

#include <stddef.h>

/* The session advisory lock key that serializes concurrent runs. */
#define CO_MIGRATE_LOCK_KEY 0x63616c6c6f7263LL /* "callorc" */

struct co_migration {
    char *version; /* the NNN prefix as written, e.g. "001" */
    char *file;    /* the file name, e.g. "001_schema.sql" */
    char *path;    /* dir + "/" + file */
};

struct co_migrate_result {
    int applied; /* files applied by this run */
    int present; /* files already recorded before this run */
};

/* Called after each file was applied and committed (for progress output). */
typedef void (*co_migrate_progress_fn)(const struct co_migration *m, void *arg);

/*
 * List the migrations in DIR: files named <digits>_<anything>.sql, sorted by
 * their number.  Other files are ignored; two files with the same number are
 * an error.  Returns 0 with *out (free with co_migrations_free) and *n set, or
 * -1 with a message in err.
 */
int co_migrations_list(const char *dir, struct co_migration **out, int *n, char *err,
                       size_t errlen);

void co_migrations_free(struct co_migration *list, int n);

/*
 * Connect with CONNINFO and apply the migrations of DIR that are not recorded
 * yet, in order.  Stops at the first failing file (its transaction is rolled
 * back) and reports the file and PostgreSQL's message.  Returns 0 or -1 with
 * a message in err; res is filled in either case.  A connection failure is
 * reported as "cannot connect to PostgreSQL (conninfo …): …" with any
 * password masked.
 */
int co_migrate_run(const char *conninfo, const char *dir, struct co_migrate_result *res,
                   co_migrate_progress_fn progress, void *arg, char *err, size_t errlen);

/*
 * Write CONNINFO into buf with the password replaced by "***", for messages.
 * A conninfo libpq cannot parse is shown as "(unparsable)", since we cannot
 * know where a password in it would be.
 */
void co_conninfo_mask(const char *conninfo, char *buf, size_t buflen);

#endif
