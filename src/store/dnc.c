/*
 * dnc.c — the do-not-call list's statements (dnc.h).
 *
 * Owns: the SQL text of PUT, GET, DELETE, list and import, their
 * parameters, and the decoding of their rows.
 *
 * PUT is one statement: INSERT … ON CONFLICT DO NOTHING, and when that
 * inserted nothing, the stored entry.  The import sends the numbers and
 * reasons as two text arrays (array literals built here, every element
 * quoted) and inserts them with unnest(): one statement, one round trip,
 * whatever the size of the file.
 */
#include "store/dnc.h"

#include <stdlib.h>
#include <string.h>

#include "store/store_job.h"
#include "util/strbuf.h"

static struct store_dnc_doc doc_at(const PGresult *res, int r, int c)
{
    struct store_dnc_doc d = { PQgetvalue(res, r, c), (size_t)PQgetlength(res, r, c) };
    return d;
}

/* ------------------------------------------------------------------ put */

/* ('N', entry) when inserted now, else ('E', entry) when it was there.  A
 * row inserted by a transaction that committed after our snapshot makes
 * the INSERT do nothing and the SELECT see nothing: no row at all. */
static const char PUT_SQL[] =
    "WITH ins AS ("
    "  INSERT INTO dnc (number, reason, source) VALUES ($1, $2, $3)"
    "  ON CONFLICT (number) DO NOTHING"
    "  RETURNING dnc_json(dnc) AS body"
    ") "
    "SELECT 'N', body FROM ins "
    "UNION ALL "
    "SELECT 'E', dnc_json(d) FROM dnc d WHERE d.number = $1 AND NOT EXISTS (SELECT 1 FROM ins)";

struct put_row {
    enum store_dnc_put_result result;
    struct store_dnc_doc doc;
};

static void put_row(const PGresult *res, int r, void *out)
{
    struct put_row *p = out;
    p->result = PQgetvalue(res, r, 0)[0] == 'N' ? STORE_DNC_ADDED : STORE_DNC_EXISTING;
    p->doc = doc_at(res, r, 1);
}

static void deliver_put(store_cb cb, void *ctx, const struct store_err *e, const void *rows, int n)
{
    const struct put_row *p = rows;
    if (e != NULL || n == 0)
        ((store_dnc_put_fn)cb)(ctx, e, STORE_DNC_RACED, NULL);
    else
        ((store_dnc_put_fn)cb)(ctx, NULL, p->result, &p->doc);
}

static const struct store_rows put_rows = { sizeof(struct put_row), put_row, deliver_put };

int store_dnc_put(struct pg_pool *pg, const char *number, const char *reason, const char *source,
                  store_dnc_put_fn cb, void *ctx)
{
    const char *values[] = { number, reason, source };
    return store_query_rows(pg, PUT_SQL, 3, values, &put_rows, (store_cb)cb, ctx);
}

/* ------------------------------------------------------------------ get */

static const char GET_SQL[] = "SELECT dnc_json(d) FROM dnc d WHERE d.number = $1";

static void get_row(const PGresult *res, int r, void *out)
{
    *(struct store_dnc_doc *)out = doc_at(res, r, 0);
}

static void deliver_get(store_cb cb, void *ctx, const struct store_err *e, const void *rows, int n)
{
    ((store_dnc_get_fn)cb)(ctx, e, e == NULL && n > 0 ? rows : NULL);
}

static const struct store_rows get_rows = { sizeof(struct store_dnc_doc), get_row, deliver_get };

int store_dnc_get(struct pg_pool *pg, const char *number, store_dnc_get_fn cb, void *ctx)
{
    const char *values[] = { number };
    return store_query_rows(pg, GET_SQL, 1, values, &get_rows, (store_cb)cb, ctx);
}

/* --------------------------------------------------------------- delete */

static const char DELETE_SQL[] = "DELETE FROM dnc WHERE number = $1";

static void decode_delete(const PGresult *res, const struct store_err *e, store_cb cb, void *ctx)
{
    int deleted = e == NULL && atoi(PQcmdTuples((PGresult *)res)) > 0;
    ((store_dnc_delete_fn)cb)(ctx, e, deleted);
}

int store_dnc_delete(struct pg_pool *pg, const char *number, store_dnc_delete_fn cb, void *ctx)
{
    const char *values[] = { number };
    return store_query(pg, DELETE_SQL, 1, values, decode_delete, (store_cb)cb, ctx);
}

/* ----------------------------------------------------------------- list */

/* One row more than the page: it says whether a next page exists. */
static const char LIST_SQL[] = "SELECT dnc_json(d), d.number FROM dnc d"
                               " WHERE $1::text IS NULL OR d.number > $1"
                               " ORDER BY d.number LIMIT $2::int";

struct list_job {
    store_dnc_page_fn cb;
    void *ctx;
    int page_size;
};

static void decode_list(const PGresult *res, const struct store_err *e, store_cb cb, void *ctx)
{
    struct list_job *lj = ctx;
    struct store_err oom = { .msg = "out of memory", .answered = true };
    struct store_dnc_page page = { 0 };
    struct store_dnc_doc *docs = NULL;
    int n = e == NULL ? PQntuples(res) : 0;

    (void)cb;
    if (e == NULL && (docs = calloc((size_t)n + 1, sizeof(*docs))) == NULL)
        e = &oom;
    for (int r = 0; e == NULL && r < n && page.n < lj->page_size; r++) {
        docs[page.n++] = doc_at(res, r, 0);
        page.last = PQgetvalue(res, r, 1);
    }
    page.docs = docs;
    page.more = n > lj->page_size;
    lj->cb(lj->ctx, e, e == NULL ? &page : NULL);
    free(docs);
    free(lj);
}

int store_dnc_list(struct pg_pool *pg, const char *after, int page_size, store_dnc_page_fn cb,
                   void *ctx)
{
    struct store_num limit;
    struct list_job *lj = malloc(sizeof(*lj));
    if (lj == NULL)
        return -1;
    lj->cb = cb;
    lj->ctx = ctx;
    lj->page_size = page_size;
    const char *values[] = { after, store_int(&limit, page_size + 1) };
    if (store_query(pg, LIST_SQL, 2, values, decode_list, NULL, lj) < 0) {
        free(lj);
        return -1;
    }
    return 0;
}

/* --------------------------------------------------------------- import */

static const char IMPORT_SQL[] =
    "WITH ins AS ("
    "  INSERT INTO dnc (number, reason, source)"
    "  SELECT u.number, u.reason, $3 FROM unnest($1::text[], $2::text[]) AS u(number, reason)"
    "  ON CONFLICT (number) DO NOTHING"
    "  RETURNING 1"
    ") SELECT count(*) FROM ins";

static char *array_literal(const char *const *v, int n)
{
    struct strbuf b = { 0 };
    strbuf_addc(&b, '{');
    for (int i = 0; i < n && !b.failed; i++) {
        if (i > 0)
            strbuf_addc(&b, ',');
        store_array_element(&b, v[i]);
    }
    strbuf_addc(&b, '}');
    if (b.failed) {
        strbuf_free(&b);
        return NULL;
    }
    return strbuf_take(&b);
}

static void decode_import(const PGresult *res, const struct store_err *e, store_cb cb, void *ctx)
{
    long long added =
        e == NULL && PQntuples(res) > 0 ? strtoll(PQgetvalue(res, 0, 0), NULL, 10) : 0;
    ((store_dnc_import_fn)cb)(ctx, e, added);
}

int store_dnc_import(struct pg_pool *pg, const char *const *numbers, const char *const *reasons,
                     int n, const char *source, store_dnc_import_fn cb, void *ctx)
{
    char *nums = array_literal(numbers, n);
    char *why = nums != NULL ? array_literal(reasons, n) : NULL;
    int rc = -1;
    if (why != NULL) {
        const char *values[] = { nums, why, source };
        rc = store_query(pg, IMPORT_SQL, 3, values, decode_import, (store_cb)cb, ctx);
    }
    free(nums);
    free(why);
    return rc;
}
