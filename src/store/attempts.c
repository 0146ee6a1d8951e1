/*
 * attempts.c — the statements of a dispatch attempt's life (attempts.h).
 *
 * Owns: the SQL text of load, start (or suppress), the dial-time expire
 * and hold, park, record, settle, the webhook's apply_webhook(), the
 * unknown-outcome statements (mark unknown, record a callId learnt later,
 * claim the attempts due for a status lookup), their parameters, and the
 * decoding of their rows.
 */
#include "store/attempts.h"

#include <stdlib.h>
#include <string.h>

#include "store/store_job.h"

/* ------------------------------------------------------------- load */

/* The call with its campaign's status and limits (one statement: a change
 * applies to the next attempt), from load_call() of sql/018_limits.sql. */
static const char LOAD_SQL[] = "SELECT * FROM load_call($1)";

static void state_row(const PGresult *res, int r, void *out)
{
    struct store_call_state *s = out;
    s->status = PQgetvalue(res, r, 0);
    s->attempts = atoi(PQgetvalue(res, r, 1));
    s->to = PQgetvalue(res, r, 2);
    s->due = PQgetvalue(res, r, 3)[0] == 't';
    s->listed = PQgetvalue(res, r, 4)[0] == 't';
    s->expired = PQgetvalue(res, r, 5)[0] == 't';
    s->zones = PQgetvalue(res, r, 6);
    s->window_json = PQgetisnull(res, r, 7) ? NULL : PQgetvalue(res, r, 7);
    s->campaign_id = PQgetisnull(res, r, 8) ? NULL : PQgetvalue(res, r, 8);
    s->campaign_status = PQgetisnull(res, r, 9) ? NULL : PQgetvalue(res, r, 9);
    s->campaign_max = atoi(PQgetvalue(res, r, 10));
    s->campaign_cps = atof(PQgetvalue(res, r, 11));
}

static void deliver_state(store_cb cb, void *ctx, const struct store_err *e, const void *rows,
                          int n)
{
    ((store_call_state_fn)cb)(ctx, e, n > 0 ? rows : NULL);
}

static const struct store_rows state_rows = {
    sizeof(struct store_call_state),
    state_row,
    deliver_state,
};

int store_call_load(struct pg_pool *pg, const char *id, store_call_state_fn cb, void *ctx)
{
    const char *values[] = { id };
    return store_query_rows(pg, LOAD_SQL, 1, values, &state_rows, (store_cb)cb, ctx);
}

/* ------------------------------------------------------------ start */

/* Only a due PENDING call of exactly this attempt, still for the number we
 * locked (a PATCH may have changed it since we loaded it), moves: to
 * IN_PROGRESS, or to SUPPRESSED when that number is on the do-not-call
 * list (start_attempt(), sql/008_suppressed.sql). */
static const char START_SQL[] =
    "SELECT status, script_id, metadata FROM start_attempt($1, $2::int, $3, $4)";

static void started_row(const PGresult *res, int r, void *out)
{
    struct store_started *s = out;
    bool started = strcmp(PQgetvalue(res, r, 0), "IN_PROGRESS") == 0;
    s->outcome = started ? STORE_START_STARTED : STORE_START_SUPPRESSED;
    s->script_id = started ? PQgetvalue(res, r, 1) : NULL;
    s->metadata = started ? PQgetvalue(res, r, 2) : NULL;
}

static void deliver_started(store_cb cb, void *ctx, const struct store_err *e, const void *rows,
                            int n)
{
    ((store_started_fn)cb)(ctx, e, n > 0 ? rows : NULL);
}

static const struct store_rows started_rows = {
    sizeof(struct store_started),
    started_row,
    deliver_started,
};

int store_attempt_start(struct pg_pool *pg, const char *id, int attempt, const char *to,
                        const char *owner, store_started_fn cb, void *ctx)
{
    struct store_num att;
    const char *values[] = { id, store_int(&att, attempt), to, owner };
    return store_query_rows(pg, START_SQL, 4, values, &started_rows, (store_cb)cb, ctx);
}

/* ----------------------------------------------------------- reread */

/* FOR UPDATE: the lost statement may still be running in its backend (a
 * dropped connection does not stop it); the row lock waits for it to
 * commit or roll back, so what is read is its outcome, not the state
 * before it. */
static const char REREAD_SQL[] =
    "SELECT status, attempts, COALESCE(slot_owner, ''), script_id, metadata::text"
    " FROM calls WHERE id = $1 FOR UPDATE";

static void reread_row(const PGresult *res, int r, void *out)
{
    struct store_reread *s = out;
    s->status = PQgetvalue(res, r, 0);
    s->attempts = atoi(PQgetvalue(res, r, 1));
    s->slot_owner = PQgetvalue(res, r, 2);
    s->started.outcome = STORE_START_STARTED; /* used only when IN_PROGRESS */
    s->started.script_id = PQgetvalue(res, r, 3);
    s->started.metadata = PQgetvalue(res, r, 4);
}

static void deliver_reread(store_cb cb, void *ctx, const struct store_err *e, const void *rows,
                           int n)
{
    ((store_reread_fn)cb)(ctx, e, n > 0 ? rows : NULL);
}

static const struct store_rows reread_rows = {
    sizeof(struct store_reread),
    reread_row,
    deliver_reread,
};

int store_call_reread(struct pg_pool *pg, const char *id, store_reread_fn cb, void *ctx)
{
    const char *values[] = { id };
    return store_query_rows(pg, REREAD_SQL, 1, values, &reread_rows, (store_cb)cb, ctx);
}

/* --------------------------------------------------------- suppress */

static const char SUPPRESS_SQL[] = "SELECT suppress_if_listed($1, $2::int, $3)";

static void suppressed_row(const PGresult *res, int r, void *out)
{
    *(bool *)out = PQgetvalue(res, r, 0)[0] == 't';
}

static void deliver_suppressed(store_cb cb, void *ctx, const struct store_err *e, const void *rows,
                               int n)
{
    ((store_suppressed_fn)cb)(ctx, e, e == NULL && n > 0 && *(const bool *)rows);
}

static const struct store_rows suppressed_rows = {
    sizeof(bool),
    suppressed_row,
    deliver_suppressed,
};

int store_call_suppress(struct pg_pool *pg, const char *id, int attempt, const char *to,
                        store_suppressed_fn cb, void *ctx)
{
    struct store_num att;
    const char *values[] = { id, store_int(&att, attempt), to };
    return store_query_rows(pg, SUPPRESS_SQL, 3, values, &suppressed_rows, (store_cb)cb, ctx);
}

/* ------------------------------------------------------ expire, hold */

/* The same end as expire_calls() gives the sweep's calls.  "IS NOT DISTINCT
 * FROM", here and in PARK_SQL, keeps the primary key the only index these
 * by-id updates can use (sql/022_by_id_updates.sql says why). */
static const char EXPIRE_SQL[] =
    "UPDATE calls SET status = 'EXPIRED', ended_at = now(), next_attempt_at = NULL,"
    "       published_at = NULL, hold_reason = NULL,"
    "       last_error = 'expired before it could be completed'"
    " WHERE id = $1 AND status IS NOT DISTINCT FROM 'PENDING' AND attempts = $2::int - 1"
    "   AND expires_at <= now()"
    " RETURNING true";

static const char HOLD_SQL[] =
    "SELECT hold_call($1, $2::int, to_timestamp($3::bigint / 1000.0), $4)";

static void flag_row(const PGresult *res, int r, void *out)
{
    *(bool *)out = PQgetvalue(res, r, 0)[0] == 't';
}

static void deliver_flag(store_cb cb, void *ctx, const struct store_err *e, const void *rows, int n)
{
    ((store_flag_fn)cb)(ctx, e, e == NULL && n > 0 && *(const bool *)rows);
}

static const struct store_rows flag_rows = {
    sizeof(bool),
    flag_row,
    deliver_flag,
};

int store_call_expire(struct pg_pool *pg, const char *id, int attempt, store_flag_fn cb, void *ctx)
{
    struct store_num att;
    const char *values[] = { id, store_int(&att, attempt) };
    return store_query_rows(pg, EXPIRE_SQL, 2, values, &flag_rows, (store_cb)cb, ctx);
}

int store_call_hold(struct pg_pool *pg, const char *id, int attempt, long long until_ms,
                    const char *reason, store_flag_fn cb, void *ctx)
{
    struct store_num att, until;
    const char *values[] = { id, store_int(&att, attempt), store_int(&until, until_ms), reason };
    return store_query_rows(pg, HOLD_SQL, 4, values, &flag_rows, (store_cb)cb, ctx);
}

/* ------------------------------------------------------ park, record */

static const char PARK_SQL[] =
    "UPDATE calls SET published_at = NULL WHERE id = $1 AND status IS NOT DISTINCT FROM 'PENDING'";

int store_call_park(struct pg_pool *pg, const char *id, store_done_fn cb, void *ctx)
{
    const char *values[] = { id };
    return store_query(pg, PARK_SQL, 1, values, store_decode_none, (store_cb)cb, ctx);
}

/* calls, then call_attempts: the lock order of settle_attempt() */
static const char RECORD_SQL[] = "SELECT record_attempt_call_id($1, $2::int, $3, $4::bool)";

int store_attempt_record(struct pg_pool *pg, const char *id, int attempt, const char *external_id,
                         store_done_fn cb, void *ctx)
{
    return store_attempt_learnt(pg, id, attempt, external_id, true, cb, ctx);
}

int store_attempt_learnt(struct pg_pool *pg, const char *id, int attempt, const char *external_id,
                         bool known, store_done_fn cb, void *ctx)
{
    struct store_num att;
    const char *values[] = { id, store_int(&att, attempt), external_id, known ? "t" : "f" };
    return store_query(pg, RECORD_SQL, 4, values, store_decode_none, (store_cb)cb, ctx);
}

/* ---------------------------------------------------- unknown outcomes */

static const char UNKNOWN_SQL[] =
    "UPDATE call_attempts SET outcome_unknown_since = COALESCE(outcome_unknown_since, now()),"
    "       error = $3"
    " WHERE call_id = $1 AND attempt = $2::int AND ended_at IS NULL";

int store_attempt_unknown(struct pg_pool *pg, const char *id, int attempt, const char *why,
                          store_done_fn cb, void *ctx)
{
    struct store_num att;
    const char *values[] = { id, store_int(&att, attempt), why };
    return store_query(pg, UNKNOWN_SQL, 3, values, store_decode_none, (store_cb)cb, ctx);
}

/* Only call_attempts rows are locked (SKIP LOCKED: two schedulers never
 * claim one attempt); calls is read, not locked.  An attempt is due when
 * it was not looked up (or marked unknown) for $1 ms. */
static const char CLAIM_LOOKUPS_SQL[] =
    "UPDATE call_attempts a SET looked_up_at = now()"
    "  FROM calls c"
    " WHERE c.id = a.call_id AND c.attempts = a.attempt AND c.status = 'IN_PROGRESS'"
    "   AND (a.call_id, a.attempt) IN ("
    "     SELECT call_id, attempt FROM call_attempts"
    "      WHERE outcome_unknown_since IS NOT NULL AND ended_at IS NULL"
    "        AND COALESCE(looked_up_at, outcome_unknown_since)"
    "            < now() - $1::bigint * interval '1 ms'"
    "      ORDER BY outcome_unknown_since LIMIT $3::int FOR UPDATE SKIP LOCKED)"
    " RETURNING a.call_id::text, a.attempt, c.to_number, c.script_id, c.metadata::text,"
    "           COALESCE(c.slot_owner, c.id::text),"
    "           c.started_at < now() - $2::bigint * interval '1 ms'";

static void lookup_row(const PGresult *res, int r, void *out)
{
    struct store_lookup *l = out;
    l->id = PQgetvalue(res, r, 0);
    l->attempt = atoi(PQgetvalue(res, r, 1));
    l->to = PQgetvalue(res, r, 2);
    l->script_id = PQgetvalue(res, r, 3);
    l->metadata = PQgetvalue(res, r, 4);
    l->slot_owner = PQgetvalue(res, r, 5);
    l->past_deadline = PQgetvalue(res, r, 6)[0] == 't';
}

static void deliver_lookups(store_cb cb, void *ctx, const struct store_err *e, const void *rows,
                            int n)
{
    ((store_lookups_fn)cb)(ctx, e, rows, n);
}

static const struct store_rows lookup_rows = {
    sizeof(struct store_lookup),
    lookup_row,
    deliver_lookups,
};

int store_lookups_claim(struct pg_pool *pg, long long every_ms, long long timeout_ms, int limit,
                        store_lookups_fn cb, void *ctx)
{
    struct store_num every, timeout, lim;
    const char *values[] = { store_int(&every, every_ms), store_int(&timeout, timeout_ms),
                             store_int(&lim, limit) };
    return store_query_rows(pg, CLAIM_LOOKUPS_SQL, 3, values, &lookup_rows, (store_cb)cb, ctx);
}

/* ----------------------------------------------------------- settle */

static const char SETTLE_SQL[] =
    "SELECT status FROM settle_attempt($1, $2::int, $3, $4, NULL, $5::bool,"
    " $6::bigint, $7::bigint, $8::bigint, $9::bigint)";

/* The row settle_attempt() returns when this call ended the attempt. */
struct settled_row {
    const char *status;
};

static void settled_row(const PGresult *res, int r, void *out)
{
    struct settled_row *s = out;
    s->status = PQgetvalue(res, r, 0);
}

static void deliver_settled(store_cb cb, void *ctx, const struct store_err *e, const void *rows,
                            int n)
{
    const struct settled_row *s = rows;
    ((store_settled_fn)cb)(ctx, e, n == 1 ? s->status : NULL);
}

static const struct store_rows settled_rows = {
    sizeof(struct settled_row),
    settled_row,
    deliver_settled,
};

int store_attempt_settle(struct pg_pool *pg, const struct store_settle *s, store_settled_fn cb,
                         void *ctx)
{
    struct store_num att, base, max, min_delay, rule;
    const char *values[] = {
        s->id,
        store_int(&att, s->attempt),
        s->reason,
        s->error,
        s->retry ? "t" : "f",
        store_int(&base, s->backoff.base_ms),
        store_int(&max, s->backoff.max_ms),
        store_int(&min_delay, s->min_delay_ms),
        store_int(&rule, s->retry_ms),
    };
    return store_query_rows(pg, SETTLE_SQL, 9, values, &settled_rows, (store_cb)cb, ctx);
}

/* ---------------------------------------------------------- webhook */

static const char APPLY_SQL[] =
    "SELECT result, call_id::text, attempt, status, to_number,"
    "       COALESCE(slot_owner, call_id::text), COALESCE(opted_out, -1)"
    " FROM apply_webhook($1, $2::uuid, $3::int, $4, $5, $6::bigint, $7::bigint, $8,"
    "                    $9::bigint)";

static void applied_row(const PGresult *res, int r, void *out)
{
    struct store_webhook_result *w = out;
    w->result = PQgetvalue(res, r, 0);
    w->call_id = PQgetvalue(res, r, 1);
    w->attempt = atoi(PQgetvalue(res, r, 2));
    w->status = PQgetvalue(res, r, 3);
    w->to = PQgetvalue(res, r, 4);
    w->slot_owner = PQgetvalue(res, r, 5);
    w->opted_out = atoi(PQgetvalue(res, r, 6));
}

static void deliver_applied(store_cb cb, void *ctx, const struct store_err *e, const void *rows,
                            int n)
{
    ((store_webhook_fn)cb)(ctx, e, n > 0 ? rows : NULL);
}

static const struct store_rows applied_rows = {
    sizeof(struct store_webhook_result),
    applied_row,
    deliver_applied,
};

int store_webhook_apply(struct pg_pool *pg, const struct store_webhook *w, store_webhook_fn cb,
                        void *ctx)
{
    struct store_num att, base, max, rule;
    const char *values[] = {
        w->webhook_id,
        w->ref_id,
        w->ref_id != NULL ? store_int(&att, w->ref_attempt) : NULL,
        w->call_id,
        w->outcome,
        store_int(&base, w->backoff.base_ms),
        store_int(&max, w->backoff.max_ms),
        w->disposition,
        store_int(&rule, w->retry_ms),
    };
    return store_query_rows(pg, APPLY_SQL, 9, values, &applied_rows, (store_cb)cb, ctx);
}
