/*
 * campaigns.c — the campaign API's and replay's statements (campaigns.h).
 *
 * Owns: the SQL text calling the functions of sql/017_campaign_api.sql,
 * the two list statements, their parameters and row decoding.  Most
 * statements answer one row (kind, body): the kind says what happened
 * (sql/017 documents the letters), the body is the JSON the client gets.
 */
#include "store/campaigns.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/validate.h"
#include "store/store_job.h"

/* ------------------------------------------------------ (kind, body) */

static enum store_op_kind op_kind(char k)
{
    switch (k) {
    case 'C':
    case 'O': return STORE_OP_OK;
    case 'F': return STORE_OP_FINAL;
    case 'R': return STORE_OP_REPLAYED;
    case 'X': return STORE_OP_KEY_CONFLICT;
    case 'S': return STORE_OP_NOT_DEAD;
    case 'L': return STORE_OP_LISTED;
    case 'K': return STORE_OP_CANCELLED;
    case 'E': return STORE_OP_BAD_SCHEDULE;
    default: return STORE_OP_NOT_FOUND;
    }
}

static void op_row(const PGresult *res, int r, void *out)
{
    struct store_op *op = out;
    op->kind = op_kind(PQgetvalue(res, r, 0)[0]);
    op->body.text = PQgetisnull(res, r, 1) ? NULL : PQgetvalue(res, r, 1);
    op->body.len = (size_t)PQgetlength(res, r, 1);
}

static void deliver_op(store_cb cb, void *ctx, const struct store_err *e, const void *rows, int n)
{
    static const struct store_op none = { .kind = STORE_OP_NOT_FOUND };
    ((store_op_fn)cb)(ctx, e, e != NULL ? NULL : n > 0 ? rows : &none);
}

static const struct store_rows op_rows = { sizeof(struct store_op), op_row, deliver_op };

static int op_query(struct pg_pool *pg, const char *sql, int n, const char *const *values,
                    store_op_fn cb, void *ctx)
{
    return store_query_rows(pg, sql, n, values, &op_rows, (store_cb)cb, ctx);
}

/* ------------------------------------------------- create, add, get */

static const char CREATE_SQL[] = "SELECT r_kind, r_body FROM campaign_create($1::json, $2::json,"
                                 " $3::json, $4::int, $5::text, $6::text)";

int store_campaign_create(struct pg_pool *pg, const char *settings, const char *calls,
                          const char *rejected, int max_attempts, const char *key, const char *hash,
                          store_op_fn cb, void *ctx)
{
    struct store_num ma;
    const char *values[] = { settings, calls, rejected, store_int(&ma, max_attempts), key, hash };
    return op_query(pg, CREATE_SQL, 6, values, cb, ctx);
}

static const char DEFAULTS_SQL[] = "SELECT status, script_id, calling_window, not_before_us,"
                                   " expires_at_us, priority FROM campaign_defaults($1::uuid)";

static int64_t us_at(const PGresult *res, int r, int c)
{
    return PQgetisnull(res, r, c) ? 0 : strtoll(PQgetvalue(res, r, c), NULL, 10);
}

static void defaults_row(const PGresult *res, int r, void *out)
{
    struct store_campaign_defaults *d = out;
    d->status = PQgetvalue(res, r, 0);
    d->script_id = PQgetvalue(res, r, 1);
    d->window_json = PQgetisnull(res, r, 2) ? NULL : PQgetvalue(res, r, 2);
    d->not_before_us = us_at(res, r, 3);
    d->expires_at_us = us_at(res, r, 4);
    d->priority = atoi(PQgetvalue(res, r, 5));
}

static void deliver_defaults(store_cb cb, void *ctx, const struct store_err *e, const void *rows,
                             int n)
{
    ((store_defaults_fn)cb)(ctx, e, e == NULL && n > 0 ? rows : NULL);
}

static const struct store_rows defaults_rows = { sizeof(struct store_campaign_defaults),
                                                 defaults_row, deliver_defaults };

int store_campaign_defaults(struct pg_pool *pg, const char *id, store_defaults_fn cb, void *ctx)
{
    const char *values[] = { id };
    return store_query_rows(pg, DEFAULTS_SQL, 1, values, &defaults_rows, (store_cb)cb, ctx);
}

static const char ADD_SQL[] =
    "SELECT r_kind, r_body FROM campaign_add_calls($1::uuid, $2::json, $3::json, $4::int)";

int store_campaign_add_calls(struct pg_pool *pg, const char *id, const char *calls,
                             const char *rejected, int max_attempts, store_op_fn cb, void *ctx)
{
    struct store_num ma;
    const char *values[] = { id, calls, rejected, store_int(&ma, max_attempts) };
    return op_query(pg, ADD_SQL, 4, values, cb, ctx);
}

static const char GET_SQL[] = "SELECT 'O', campaign_json(c) FROM campaigns c WHERE c.id = $1";

int store_campaign_get(struct pg_pool *pg, const char *id, store_op_fn cb, void *ctx)
{
    const char *values[] = { id };
    return op_query(pg, GET_SQL, 1, values, cb, ctx);
}

static const char STATUS_SQL[] =
    "SELECT r_kind, r_body FROM campaign_set_status($1::uuid, $2::text)";

int store_campaign_set_status(struct pg_pool *pg, const char *id, const char *action,
                              store_op_fn cb, void *ctx)
{
    const char *values[] = { id, action };
    return op_query(pg, STATUS_SQL, 2, values, cb, ctx);
}

/* ----------------------------------------------------------------- lists */

/* Both lists answer (found, total, body, µs, id), one row at least; the
 * page columns NULL when the page is empty.  One row more than the page
 * says whether a next one exists. */
#define KEYSET(t, p1, p2)                                         \
    "($" #p1 "::bigint IS NULL OR (" t ".created_at, " t ".id) <" \
    " ('epoch'::timestamptz + $" #p1 "::bigint * interval '1 microsecond', $" #p2 "::uuid))"

static const char LIST_SQL[] =
    "SELECT true, 0, p.body, p.us, p.id FROM (SELECT 1) one "
    "LEFT JOIN LATERAL ("
    "  SELECT campaign_json(c)::text AS body,"
    "         ((extract(epoch FROM c.created_at) * 1000000)::bigint)::text AS us, c.id::text AS id"
    "  FROM campaigns c WHERE " KEYSET("c", 1, 2) " ORDER BY c.created_at DESC, c.id DESC"
                                                  "  LIMIT $3::int"
                                                  ") p ON true";

/* The total is the campaign's counters (campaign_status_counts), not a
 * count of its calls. */
static const char CALLS_SQL[] =
    "SELECT EXISTS (SELECT 1 FROM campaigns WHERE id = $4::uuid),"
    " (SELECT COALESCE(sum(n), 0) FROM campaign_status_counts"
    "   WHERE campaign_id = $4::uuid AND ($5::text IS NULL OR status = $5::text)),"
    " p.body, p.us, p.id FROM (SELECT 1) one "
    "LEFT JOIN LATERAL ("
    "  SELECT call_json(c)::text AS body,"
    "         ((extract(epoch FROM c.created_at) * 1000000)::bigint)::text AS us, c.id::text AS id"
    "  FROM calls c WHERE c.campaign_id = $4::uuid AND ($5::text IS NULL OR c.status = $5::text)"
    "   AND " KEYSET("c", 1, 2) " ORDER BY c.created_at DESC, c.id DESC"
                                "  LIMIT $3::int OFFSET $6::bigint"
                                ") p ON true";

struct cpage_job {
    store_cpage_fn cb;
    void *ctx;
    int page_size;
};

static void decode_cpage(const PGresult *res, const struct store_err *e, store_cb cb, void *ctx)
{
    struct cpage_job *j = ctx;
    struct store_err oom = { .msg = "out of memory", .answered = true };
    struct store_page page = { 0 };
    struct store_list_row *rows = NULL;
    int n = e == NULL ? PQntuples(res) : 0;
    (void)cb;
    if (e == NULL && (rows = calloc((size_t)n + 1, sizeof(*rows))) == NULL)
        e = &oom;
    for (int r = 0; e == NULL && r < n && page.n < j->page_size; r++) {
        if (PQgetisnull(res, r, 2))
            continue;
        struct store_list_row *row = &rows[page.n++];
        row->doc.text = PQgetvalue(res, r, 2);
        row->doc.len = (size_t)PQgetlength(res, r, 2);
        row->created_us = strtoll(PQgetvalue(res, r, 3), NULL, 10);
        row->id = PQgetvalue(res, r, 4);
    }
    int found = e == NULL && n > 0 && PQgetvalue(res, 0, 0)[0] == 't';
    if (e == NULL) {
        page.total = n > 0 ? strtoll(PQgetvalue(res, 0, 1), NULL, 10) : 0;
        page.rows = rows;
        page.more = n > j->page_size && page.n == j->page_size;
    }
    j->cb(j->ctx, e, found, e == NULL ? &page : NULL);
    free(rows);
    free(j);
}

int store_campaigns_list(struct pg_pool *pg, const char *campaign_id, const struct list_query *q,
                         store_cpage_fn cb, void *ctx)
{
    struct store_num limit, offset, us;
    struct cpage_job *j = malloc(sizeof(*j));
    if (j == NULL)
        return -1;
    j->cb = cb;
    j->ctx = ctx;
    j->page_size = q->page_size;
    const char *values[] = {
        q->has_cursor ? store_int(&us, q->cursor_created_us) : NULL,
        q->has_cursor ? q->cursor_id : NULL,
        store_int(&limit, q->page_size + 1),
        campaign_id,
        q->status,
        store_int(&offset, q->has_cursor ? 0LL : (long long)(q->page - 1) * q->page_size),
    };
    const char *sql = campaign_id != NULL ? CALLS_SQL : LIST_SQL;
    if (store_query(pg, sql, campaign_id != NULL ? 6 : 3, values, decode_cpage, NULL, j) < 0) {
        free(j);
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------- replay */

static const char RETRY_SQL[] = "SELECT r_kind, r_body FROM call_retry($1::uuid, $2::int, $3::int,"
                                " $4::timestamptz, $5::bool, $6::timestamptz)";

/* An instant parameter: its text in BUF when SET, else NULL. */
static const char *instant_param(const struct call_instant *t, char buf[INSTANT_TEXT_MAX])
{
    if (!t->set)
        return NULL;
    instant_format(t->us, buf);
    return buf;
}

int store_call_retry(struct pg_pool *pg, const char *id, const struct retry_input *r,
                     int default_attempts, store_op_fn cb, void *ctx)
{
    struct store_num budget, def;
    char nb[INSTANT_TEXT_MAX], ex[INSTANT_TEXT_MAX];
    const char *values[] = {
        id,
        r->max_attempts > 0 ? store_int(&budget, r->max_attempts) : NULL,
        store_int(&def, default_attempts),
        instant_param(&r->not_before, nb),
        r->expires_at.given ? "t" : "f",
        instant_param(&r->expires_at, ex),
    };
    return op_query(pg, RETRY_SQL, 6, values, cb, ctx);
}

static const char BULK_SQL[] = "SELECT calls_retry_bulk($1::text, $2::uuid, $3::text,"
                               " $4::timestamptz, $5::int, $6::int, $7::int)";

static void decode_count(const PGresult *res, const struct store_err *e, store_cb cb, void *ctx)
{
    long long n = e == NULL && PQntuples(res) > 0 ? strtoll(PQgetvalue(res, 0, 0), NULL, 10) : 0;
    ((store_count_fn)cb)(ctx, e, n);
}

int store_calls_retry_bulk(struct pg_pool *pg, const struct retry_input *r, int default_attempts,
                           store_count_fn cb, void *ctx)
{
    struct store_num limit, budget, def;
    char cb_[INSTANT_TEXT_MAX];
    const char *values[] = {
        r->status,
        r->has_campaign ? r->campaign_id : NULL,
        r->last_error,
        instant_param(&r->created_before, cb_),
        store_int(&limit, r->limit),
        r->max_attempts > 0 ? store_int(&budget, r->max_attempts) : NULL,
        store_int(&def, default_attempts),
    };
    return store_query(pg, BULK_SQL, 7, values, decode_count, (store_cb)cb, ctx);
}
