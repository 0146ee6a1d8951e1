/*
 * dnc.h — the do-not-call list (DESIGN.md section 9): its statements.
 *
 * Owns: the SQL of PUT, GET, DELETE and list of /api/v1/dnc, and the one
 * statement of a CSV import (every number of the request in one INSERT …
 * SELECT FROM unnest(…) ON CONFLICT DO NOTHING).  PostgreSQL renders an
 * entry as JSON (dnc_json() in sql/007_dnc.sql); the text is handed on as
 * the database produced it.  Numbers are validated E.164 by the caller.
 * The rules of store.h apply.
 */
#ifndef CO_STORE_DNC_H
#define CO_STORE_DNC_H

#include <stddef.h>

#include "net/pg_pool.h"
#include "store/store.h"

/* An entry rendered as JSON text (use LEN). */
struct store_dnc_doc {
    const char *text;
    size_t len;
};

/* What a PUT found. */
enum store_dnc_put_result {
    STORE_DNC_ADDED,    /* listed now: DOC is the new entry */
    STORE_DNC_EXISTING, /* listed already: DOC is the entry, unchanged */
    STORE_DNC_RACED     /* a concurrent insert and delete hid the entry:
                                    DOC is NULL, the statement may go again */
};

/* PUT: RESULT and DOC are meaningless when E != NULL. */
typedef void (*store_dnc_put_fn)(void *ctx, const struct store_err *e,
                                 enum store_dnc_put_result result, const struct store_dnc_doc *doc);
int store_dnc_put(struct pg_pool *pg, const char *number, const char *reason, const char *source,
                  store_dnc_put_fn cb, void *ctx);

/* GET: DOC is NULL when the number is not listed (or E != NULL). */
typedef void (*store_dnc_get_fn)(void *ctx, const struct store_err *e,
                                 const struct store_dnc_doc *doc);
int store_dnc_get(struct pg_pool *pg, const char *number, store_dnc_get_fn cb, void *ctx);

/* DELETE: DELETED is 1 when the number was listed. */
typedef void (*store_dnc_delete_fn)(void *ctx, const struct store_err *e, int deleted);
int store_dnc_delete(struct pg_pool *pg, const char *number, store_dnc_delete_fn cb, void *ctx);

/* One page of the list, by number ascending. */
struct store_dnc_page {
    int n;
    const struct store_dnc_doc *docs;
    const char *last; /* the number of the last entry, or NULL */
    int more;         /* an entry exists after this page */
};
typedef void (*store_dnc_page_fn)(void *ctx, const struct store_err *e,
                                  const struct store_dnc_page *page);
/* Entries with a number above AFTER (NULL: from the start), PAGE_SIZE at most. */
int store_dnc_list(struct pg_pool *pg, const char *after, int page_size, store_dnc_page_fn cb,
                   void *ctx);

/* Import: list the N numbers NUMBERS (REASONS[i] NULL for none) with
 * SOURCE in one statement; ADDED is how many were not listed before
 * (a number twice in NUMBERS counts once). */
typedef void (*store_dnc_import_fn)(void *ctx, const struct store_err *e, long long added);
int store_dnc_import(struct pg_pool *pg, const char *const *numbers, const char *const *reasons,
                     int n, const char *source, store_dnc_import_fn cb, void *ctx);

#endif
