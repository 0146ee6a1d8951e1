/*
 * calls.c — the API's statements on calls (calls.h).
 *
 * Owns: the SQL text of GET, PATCH, cancel, list, the counts by status and
 * the intake batch, their parameters, and the decoding of their rows.
 * Counts (metrics, the list's total) come from call_status_counts, which
 * triggers keep exact (sql/005_status_counts.sql): no statement here
 * counts the calls table.
 *
 * PATCH and cancel are conditional updates ("… WHERE status = 'PENDING'"):
 * a concurrent dispatch or cancel that got there first makes ours match
 * nothing, and the caller learns the call was no longer PENDING instead of
 * overwriting it.  They say it "IS NOT DISTINCT FROM 'PENDING'", which
 * keeps the primary key the only index they can use
 * (sql/022_by_id_updates.sql says why).
 */
#include "store/calls.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/validate.h"
#include "store/store_job.h"
#include "util/strbuf.h"

/* ------------------------------------------------------------------ get */

static const char GET_SQL[] = "SELECT call_detail_json(c) FROM calls c WHERE c.id = $1";

static struct store_json json_at(const PGresult *res, int r, int c)
{
    struct store_json j = { PQgetvalue(res, r, c), (size_t)PQgetlength(res, r, c) };
    return j;
}

static void call_row(const PGresult *res, int r, void *out)
{
    *(struct store_json *)out = json_at(res, r, 0);
}

static void deliver_call(store_cb cb, void *ctx, const struct store_err *e, const void *rows, int n)
{
    ((store_call_fn)cb)(ctx, e, n > 0 ? rows : NULL);
}

static const struct store_rows call_rows = { sizeof(struct store_json), call_row, deliver_call };

int store_call_get(struct pg_pool *pg, const char *id, store_call_fn cb, void *ctx)
{
    const char *values[] = { id };
    return store_query_rows(pg, GET_SQL, 1, values, &call_rows, (store_cb)cb, ctx);
}

/* ------------------------------------------------- patch and cancel */

/* A conditional update of a PENDING call: SET is the change.  Rows: ('U',
 * call) when updated, else ('X', call) when the call exists. */
#define UPDATE_PENDING_SQL(set)                                                           \
    "WITH upd AS ("                                                                       \
    "  UPDATE calls SET " set "  WHERE id = $1 AND status IS NOT DISTINCT FROM 'PENDING'" \
    "  RETURNING call_json(calls) AS body, status"                                        \
    ") "                                                                                  \
    "SELECT 'U', body, status FROM upd "                                                  \
    "UNION ALL "                                                                          \
    "SELECT 'X', call_json(c), c.status FROM calls c "                                    \
    "WHERE c.id = $1 AND NOT EXISTS (SELECT 1 FROM upd)"

/* PATCH is the same update, but a new `to` on the do-not-call list
 * (sql/007_dnc.sql) changes nothing and answers ('D', call) for a PENDING
 * call: one primary-key lookup in the same statement.  With $21 (the row
 * version read, for a change the rules decided from that row) a PENDING
 * row of another version changes nothing and answers ('C', call).  A call
 * held by the change is not published until due (published_at NULL: the
 * scheduler publishes it then, and a message already in Kafka finds it
 * not due). */
static const char PATCH_SQL[] =
    "WITH listed AS ("
    "  SELECT $2::bool AND EXISTS (SELECT 1 FROM dnc WHERE number = $3::text) AS l"
    "), upd AS ("
    "  UPDATE calls SET"
    "   to_number = CASE WHEN $2::bool THEN $3::text ELSE to_number END,"
    "   script_id = CASE WHEN $4::bool THEN $5::text ELSE script_id END,"
    "   metadata = CASE WHEN $6::bool THEN COALESCE($7::jsonb, '{}') ELSE metadata END,"
    "   timezone = CASE WHEN $8::bool THEN $9::text ELSE timezone END,"
    "   calling_window = CASE WHEN $10::bool THEN $11::jsonb ELSE calling_window END,"
    "   not_before = CASE WHEN $12::bool THEN $13::timestamptz ELSE not_before END,"
    "   expires_at = CASE WHEN $14::bool THEN $15::timestamptz ELSE expires_at END,"
    "   timezones = CASE WHEN $16::bool THEN $17::text[] ELSE timezones END,"
    "   next_attempt_at = CASE WHEN $18::bool THEN $19::timestamptz ELSE next_attempt_at END,"
    "   hold_reason = CASE WHEN $18::bool THEN $20::text ELSE hold_reason END,"
    "   published_at = CASE WHEN $18::bool AND $19::timestamptz IS NOT NULL THEN NULL"
    "                  ELSE published_at END,"
    "   priority = CASE WHEN $22::bool THEN $23::smallint ELSE priority END"
    "  WHERE id = $1 AND status IS NOT DISTINCT FROM 'PENDING' AND NOT (SELECT l FROM listed)"
    "    AND ($21::text IS NULL OR xmin::text = $21::text)"
    "  RETURNING call_json(calls) AS body, status"
    ") "
    "SELECT 'U', body, status FROM upd "
    "UNION ALL "
    "SELECT CASE WHEN c.status <> 'PENDING' THEN 'X'"
    "            WHEN (SELECT l FROM listed) THEN 'D' ELSE 'C' END,"
    " call_json(c), c.status FROM calls c "
    "WHERE c.id = $1 AND NOT EXISTS (SELECT 1 FROM upd)";

/* The columns the rules read, instants as µs since the epoch. */
static const char RULES_SQL[] = "SELECT c.status, c.to_number, c.timezone, c.calling_window::text,"
                                " (extract(epoch FROM c.not_before) * 1000000)::bigint,"
                                " (extract(epoch FROM c.expires_at) * 1000000)::bigint,"
                                " (extract(epoch FROM c.next_attempt_at) * 1000000)::bigint,"
                                " c.hold_reason, c.xmin::text "
                                "FROM calls c WHERE c.id = $1";

static const char CANCEL_SQL[] =
    UPDATE_PENDING_SQL("status = 'CANCELLED', ended_at = now(), next_attempt_at = NULL");

static void update_row(const PGresult *res, int r, void *out)
{
    struct store_update *u = out;
    char k = PQgetvalue(res, r, 0)[0];
    u->result = k == 'U'   ? STORE_UPDATED
                : k == 'D' ? STORE_TO_LISTED
                : k == 'C' ? STORE_CHANGED
                           : STORE_NOT_PENDING;
    u->doc = json_at(res, r, 1);
    u->status = PQgetvalue(res, r, 2);
}

static void deliver_update(store_cb cb, void *ctx, const struct store_err *e, const void *rows,
                           int n)
{
    static const struct store_update not_found = { .result = STORE_UPDATE_NOT_FOUND };
    ((store_update_fn)cb)(ctx, e, e != NULL ? NULL : n > 0 ? rows : &not_found);
}

static const struct store_rows update_rows = {
    sizeof(struct store_update),
    update_row,
    deliver_update,
};

static const char *null_if_empty(const PGresult *res, int r, int c)
{
    return PQgetisnull(res, r, c) ? NULL : PQgetvalue(res, r, c);
}

static int64_t us_at(const PGresult *res, int r, int c)
{
    return PQgetisnull(res, r, c) ? 0 : strtoll(PQgetvalue(res, r, c), NULL, 10);
}

static void rules_row(const PGresult *res, int r, void *out)
{
    struct store_call_rules *cr = out;
    cr->status = PQgetvalue(res, r, 0);
    cr->to = PQgetvalue(res, r, 1);
    cr->timezone = null_if_empty(res, r, 2);
    cr->window_json = null_if_empty(res, r, 3);
    cr->not_before_us = us_at(res, r, 4);
    cr->expires_at_us = us_at(res, r, 5);
    cr->next_attempt_us = us_at(res, r, 6);
    cr->hold_reason = null_if_empty(res, r, 7);
    cr->version = PQgetvalue(res, r, 8);
}

static void deliver_rules(store_cb cb, void *ctx, const struct store_err *e, const void *rows,
                          int n)
{
    ((store_rules_fn)cb)(ctx, e, e == NULL && n > 0 ? rows : NULL);
}

static const struct store_rows rules_rows = { sizeof(struct store_call_rules), rules_row,
                                              deliver_rules };

int store_call_read_rules(struct pg_pool *pg, const char *id, store_rules_fn cb, void *ctx)
{
    const char *values[] = { id };
    return store_query_rows(pg, RULES_SQL, 1, values, &rules_rows, (store_cb)cb, ctx);
}

/* ZONES as a text[] literal ("{"A/B","C/D"}"): zone names are checked to
 * letters, digits and "_+-/." (compliance/window.h), nothing to escape.
 * No zones is NULL, as intake stores it (sql/009: NULL = no zone data). */
static char *zones_literal(const struct store_patch_rules *r)
{
    struct strbuf b = { 0 };
    if (r->nzones == 0)
        return NULL;
    strbuf_addc(&b, '{');
    for (size_t i = 0; i < r->nzones; i++)
        strbuf_addf(&b, "%s\"%s\"", i ? "," : "", r->zones[i]);
    strbuf_addc(&b, '}');
    if (b.failed) {
        strbuf_free(&b);
        return NULL;
    }
    return strbuf_take(&b);
}

static const char *flag(int b)
{
    return b ? "t" : "f";
}

/* An instant parameter: its text in BUF when SET, else NULL. */
static const char *instant_param(const struct call_instant *t, char buf[INSTANT_TEXT_MAX])
{
    if (!t->set)
        return NULL;
    instant_format(t->us, buf);
    return buf;
}

int store_call_patch(struct pg_pool *pg, const char *id, const struct call_input *in,
                     const struct store_patch_rules *rules, store_update_fn cb, void *ctx)
{
    static const struct store_patch_rules none = { 0 };
    const struct store_patch_rules *r = rules != NULL ? rules : &none;
    char nb[INSTANT_TEXT_MAX], ex[INSTANT_TEXT_MAX], hold[INSTANT_TEXT_MAX];
    struct store_num prio;
    char *zones = r->set_zones ? zones_literal(r) : NULL;
    if (r->set_zones && r->nzones > 0 && zones == NULL)
        return -1;
    if (r->hold_until_us != 0)
        instant_format(r->hold_until_us, hold);
    const char *values[] = {
        id,
        flag(in->has_to),
        in->has_to ? in->to : NULL,
        flag(in->has_script_id),
        in->has_script_id ? in->script_id : NULL,
        flag(in->has_metadata),
        in->metadata,
        flag(in->has_timezone),
        in->has_timezone && in->timezone[0] != '\0' ? in->timezone : NULL,
        flag(in->has_window),
        in->window_json,
        flag(in->not_before.given),
        instant_param(&in->not_before, nb),
        flag(in->expires_at.given),
        instant_param(&in->expires_at, ex),
        flag(r->set_zones),
        zones,
        flag(r->set_hold),
        r->hold_until_us != 0 ? hold : NULL,
        r->hold_reason,
        r->version,
        flag(in->has_priority),
        store_int(&prio, in->priority),
    };
    int rc = store_query_rows(pg, PATCH_SQL, 23, values, &update_rows, (store_cb)cb, ctx);
    free(zones);
    return rc;
}

int store_call_cancel(struct pg_pool *pg, const char *id, store_update_fn cb, void *ctx)
{
    const char *values[] = { id };
    return store_query_rows(pg, CANCEL_SQL, 1, values, &update_rows, (store_cb)cb, ctx);
}

/* ----------------------------------------------------------------- list */

/* One row at least (the total); page columns NULL when the page is empty.
 * The LIMIT asks one row more than the page: it says whether a next page
 * exists, so a full last page gets no cursor to an empty one.  The total
 * is the sum of the status counters (sql/005_status_counts.sql), read in
 * the page's snapshot: what count(*) would say, without reading the
 * calls. */
static const char LIST_SQL[] =
    "SELECT t.total, p.body, p.us, p.id "
    "FROM (SELECT COALESCE(sum(n), 0) AS total FROM call_status_counts"
    "      WHERE $1::text IS NULL OR status = $1) t "
    "LEFT JOIN LATERAL ("
    "  SELECT call_json(c)::text AS body,"
    "         ((extract(epoch FROM c.created_at) * 1000000)::bigint)::text AS us,"
    "         c.id::text AS id"
    "  FROM calls c"
    "  WHERE ($1::text IS NULL OR c.status = $1)"
    "    AND ($4::bigint IS NULL OR (c.created_at, c.id) <"
    "         ('epoch'::timestamptz + $4::bigint * interval '1 microsecond', $5::uuid))"
    "  ORDER BY c.created_at DESC, c.id DESC"
    "  LIMIT $2::int OFFSET $3::bigint"
    ") p ON true";

/* The page size travels with the job: the decoder needs it to tell the
 * extra row from the page. */
struct list_job {
    store_page_fn cb;
    void *ctx;
    int page_size;
};

static void decode_page(const PGresult *res, const struct store_err *e, store_cb cb, void *ctx)
{
    struct list_job *lj = ctx;
    struct store_err oom = { .msg = "out of memory", .answered = true };
    struct store_page page = { 0 };
    struct store_list_row *rows = NULL;
    int n = e == NULL ? PQntuples(res) : 0;

    if (e == NULL && (rows = calloc((size_t)n + 1, sizeof(*rows))) == NULL)
        e = &oom;
    for (int r = 0; e == NULL && r < n && page.n < lj->page_size; r++) {
        if (PQgetisnull(res, r, 1))
            continue;
        struct store_list_row *row = &rows[page.n++];
        row->doc = json_at(res, r, 1);
        row->created_us = strtoll(PQgetvalue(res, r, 2), NULL, 10);
        row->id = PQgetvalue(res, r, 3);
    }
    if (e == NULL) {
        page.total = n > 0 ? strtoll(PQgetvalue(res, 0, 0), NULL, 10) : 0;
        page.rows = rows;
        page.more = n > lj->page_size && page.n == lj->page_size;
    }
    lj->cb(lj->ctx, e, e == NULL ? &page : NULL);
    free(rows);
    free(lj);
}

int store_calls_list(struct pg_pool *pg, const struct list_query *q, store_page_fn cb, void *ctx)
{
    struct store_num limit, offset, us;
    struct list_job *lj = malloc(sizeof(*lj));
    if (lj == NULL)
        return -1;
    lj->cb = cb;
    lj->ctx = ctx;
    lj->page_size = q->page_size;
    const char *values[] = {
        q->status,
        store_int(&limit, q->page_size + 1),
        store_int(&offset, q->has_cursor ? 0LL : (long long)(q->page - 1) * q->page_size),
        q->has_cursor ? store_int(&us, q->cursor_created_us) : NULL,
        q->has_cursor ? q->cursor_id : NULL,
    };
    if (store_query(pg, LIST_SQL, 5, values, decode_page, NULL, lj) < 0) {
        free(lj);
        return -1;
    }
    return 0;
}

/* --------------------------------------------------------------- counts */

/* The counters the triggers on calls keep (sql/005_status_counts.sql): a
 * few rows per status, however many calls are stored. */
static const char COUNTS_SQL[] = "SELECT status, sum(n) FROM call_status_counts GROUP BY status";

static const char *const statuses[STORE_STATUSES] = { "PENDING", "IN_PROGRESS", "COMPLETED",
                                                      "FAILED",  "CANCELLED",   "SUPPRESSED",
                                                      "EXPIRED" };

static void decode_counts(const PGresult *res, const struct store_err *e, store_cb cb, void *ctx)
{
    store_counts_fn fn = (store_counts_fn)cb;
    long long counts[STORE_STATUSES] = { 0 };
    if (e != NULL) {
        fn(ctx, e, NULL);
        return;
    }
    for (int r = 0; r < PQntuples(res); r++)
        for (int i = 0; i < STORE_STATUSES; i++)
            if (strcmp(PQgetvalue(res, r, 0), statuses[i]) == 0)
                counts[i] = strtoll(PQgetvalue(res, r, 1), NULL, 10);
    fn(ctx, NULL, counts);
}

int store_calls_count(struct pg_pool *pg, store_counts_fn cb, void *ctx)
{
    return store_query(pg, COUNTS_SQL, 0, NULL, decode_counts, (store_cb)cb, ctx);
}

/* --------------------------------------------------------------- intake */

/* The statement lives in intake_calls() (sql/003_intake.sql, replaced by
 * sql/007_dnc.sql: a listed number answers (ord, 'D')), where
 * PostgreSQL plans it once per connection instead of once per batch. */
static const char INTAKE_SQL[] =
    "SELECT r_ord, r_outcome, r_body FROM intake_calls($1::json, $2::int)";

struct intake_job {
    store_intake_build_fn build;
    store_intake_done_fn done;
    void *ctx;
    int built; /* build ran: the pool had a connection */
    struct store_num max_attempts;
    const char *values[2];
};

static int intake_build(void *arg, struct pg_query *q)
{
    struct intake_job *ij = arg;
    ij->built = 1;
    ij->values[0] = ij->build(ij->ctx);
    if (ij->values[0] == NULL)
        return 1;
    ij->values[1] = ij->max_attempts.s;
    q->sql = INTAKE_SQL;
    q->nparams = 2;
    q->values = ij->values;
    return 0;
}

static enum store_intake_outcome intake_outcome(const char *s)
{
    return s[0] == 'C'   ? STORE_INTAKE_CREATED
           : s[0] == 'R' ? STORE_INTAKE_REPLAYED
           : s[0] == 'D' ? STORE_INTAKE_LISTED
                         : STORE_INTAKE_KEY_CONFLICT;
}

static void intake_done(void *arg, const PGresult *res, const char *err)
{
    struct intake_job *ij = arg;
    struct store_err e, oom = { .msg = "out of memory", .answered = true };
    const struct store_err *ep = NULL;
    struct store_intake_row *rows = NULL;
    int n = 0;

    if (res != NULL || err != NULL)
        ep = store_err_from(&e, res, err);
    if (ep == NULL && res != NULL) {
        n = PQntuples(res);
        if ((rows = calloc((size_t)n + 1, sizeof(*rows))) == NULL)
            ep = &oom;
        for (int r = 0; ep == NULL && r < n; r++) {
            rows[r].ord = atoi(PQgetvalue(res, r, 0));
            rows[r].outcome = intake_outcome(PQgetvalue(res, r, 1));
            rows[r].body = PQgetvalue(res, r, 2);
        }
    }
    ij->done(ij->ctx, ij->built, ep, ep == NULL ? rows : NULL, ep == NULL ? n : 0);
    free(rows);
    free(ij);
}

int store_intake_submit(struct pg_pool *pg, int max_attempts, store_intake_build_fn build,
                        store_intake_done_fn done, void *ctx)
{
    struct intake_job *ij = calloc(1, sizeof(*ij));
    if (ij == NULL)
        return -1;
    ij->build = build;
    ij->done = done;
    ij->ctx = ctx;
    store_int(&ij->max_attempts, max_attempts);
    if (pg_pool_submit(pg, intake_build, intake_done, ij) < 0) {
        free(ij);
        return -1;
    }
    return 0;
}
