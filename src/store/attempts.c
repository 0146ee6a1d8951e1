/*
 * attempts.c — the statements of a dispatch attempt's life (attempts.h).
 *
 * Owns: the SQL text of load, start, park, record, settle and the webhook's
 * apply_webhook(), their parameters, and the decoding of their rows.
 */
#include "store/attempts.h"

#include <stdlib.h>
#include <string.h>

#include "store/store_job.h"

/* ------------------------------------------------------------- load */

static const char LOAD_SQL[] =
    "SELECT status, attempts, to_number, due_at <= now() FROM calls WHERE id = $1";

static void decode_state(const PGresult *res, const struct store_err *e, store_cb cb, void *ctx)
{
    store_call_state_fn fn = (store_call_state_fn)cb;
    if (e != NULL || PQntuples(res) == 0) {
        fn(ctx, e, NULL);
        return;
    }
    struct store_call_state s = {
        .status = PQgetvalue(res, 0, 0),
        .attempts = atoi(PQgetvalue(res, 0, 1)),
        .to = PQgetvalue(res, 0, 2),
        .due = PQgetvalue(res, 0, 3)[0] == 't',
    };
    fn(ctx, NULL, &s);
}

int store_call_load(struct pg_pool *pg, const char *id, store_call_state_fn cb, void *ctx)
{
    const char *values[] = { id };
    return store_query(pg, LOAD_SQL, 1, values, decode_state, (store_cb)cb, ctx);
}

/* ------------------------------------------------------------ start */

/* Only a due PENDING call of exactly this attempt, still for the number we
 * locked (a PATCH may have changed it since we loaded it), moves. */
static const char START_SQL[] =
    "WITH upd AS ("
    "  UPDATE calls SET status = 'IN_PROGRESS', attempts = attempts + 1, started_at = now(),"
    "         ended_at = NULL, next_attempt_at = NULL, published_at = NULL, slot_owner = $4"
    "  WHERE id = $1 AND status = 'PENDING' AND attempts = $2::int - 1"
    "    AND due_at <= now() AND to_number = $3"
    "  RETURNING id, attempts, script_id, metadata"
    "), att AS ("
    "  INSERT INTO call_attempts (call_id, attempt) SELECT id, attempts FROM upd"
    ") "
    "SELECT script_id, metadata::text FROM upd";

static void decode_started(const PGresult *res, const struct store_err *e, store_cb cb,
                           void *ctx)
{
    store_started_fn fn = (store_started_fn)cb;
    if (e != NULL || PQntuples(res) == 0) {
        fn(ctx, e, NULL);
        return;
    }
    struct store_started s = { PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1) };
    fn(ctx, NULL, &s);
}

int store_attempt_start(struct pg_pool *pg, const char *id, int attempt, const char *to,
                        const char *owner, store_started_fn cb, void *ctx)
{
    struct store_num att;
    const char *values[] = { id, store_int(&att, attempt), to, owner };
    return store_query(pg, START_SQL, 4, values, decode_started, (store_cb)cb, ctx);
}

/* ------------------------------------------------------ park, record */

static const char PARK_SQL[] =
    "UPDATE calls SET published_at = NULL WHERE id = $1 AND status = 'PENDING'";

int store_call_park(struct pg_pool *pg, const char *id, store_done_fn cb, void *ctx)
{
    const char *values[] = { id };
    return store_query(pg, PARK_SQL, 1, values, store_decode_none, (store_cb)cb, ctx);
}

static const char RECORD_SQL[] =
    "WITH c AS ("
    "  UPDATE calls SET external_call_id = $3 WHERE id = $1 AND attempts = $2::int"
    ") "
    "UPDATE call_attempts SET external_call_id = $3"
    " WHERE call_id = $1 AND attempt = $2::int AND external_call_id IS NULL";

int store_attempt_record(struct pg_pool *pg, const char *id, int attempt,
                         const char *external_id, store_done_fn cb, void *ctx)
{
    struct store_num att;
    const char *values[] = { id, store_int(&att, attempt), external_id };
    return store_query(pg, RECORD_SQL, 3, values, store_decode_none, (store_cb)cb, ctx);
}

/* ----------------------------------------------------------- settle */

static const char SETTLE_SQL[] =
    "SELECT status FROM settle_attempt($1, $2::int, $3, $4, NULL, $5::bool,"
    " $6::bigint, $7::bigint, $8::bigint)";

static void decode_settled(const PGresult *res, const struct store_err *e, store_cb cb,
                           void *ctx)
{
    store_settled_fn fn = (store_settled_fn)cb;
    fn(ctx, e, e == NULL && PQntuples(res) == 1 ? PQgetvalue(res, 0, 0) : NULL);
}

int store_attempt_settle(struct pg_pool *pg, const struct store_settle *s, store_settled_fn cb,
                         void *ctx)
{
    struct store_num att, base, max, min_delay;
    const char *values[] = {
        s->id, store_int(&att, s->attempt), s->reason, s->error, s->retry ? "t" : "f",
        store_int(&base, s->backoff.base_ms), store_int(&max, s->backoff.max_ms),
        store_int(&min_delay, s->min_delay_ms),
    };
    return store_query(pg, SETTLE_SQL, 8, values, decode_settled, (store_cb)cb, ctx);
}

/* ---------------------------------------------------------- webhook */

static const char APPLY_SQL[] =
    "SELECT result, call_id::text, attempt, status, to_number,"
    "       COALESCE(slot_owner, call_id::text)"
    " FROM apply_webhook($1, $2::uuid, $3::int, $4, $5, $6::bigint, $7::bigint)";

static void decode_applied(const PGresult *res, const struct store_err *e, store_cb cb,
                           void *ctx)
{
    store_webhook_fn fn = (store_webhook_fn)cb;
    if (e != NULL) {
        fn(ctx, e, NULL);
        return;
    }
    struct store_webhook_result r = {
        .result = PQgetvalue(res, 0, 0),
        .call_id = PQgetvalue(res, 0, 1),
        .attempt = atoi(PQgetvalue(res, 0, 2)),
        .status = PQgetvalue(res, 0, 3),
        .to = PQgetvalue(res, 0, 4),
        .slot_owner = PQgetvalue(res, 0, 5),
    };
    fn(ctx, NULL, &r);
}

int store_webhook_apply(struct pg_pool *pg, const struct store_webhook *w, store_webhook_fn cb,
                        void *ctx)
{
    struct store_num att, base, max;
    const char *values[] = {
        w->webhook_id,
        w->ref_id,
        w->ref_id != NULL ? store_int(&att, w->ref_attempt) : NULL,
        w->call_id, w->outcome,
        store_int(&base, w->backoff.base_ms), store_int(&max, w->backoff.max_ms),
    };
    return store_query(pg, APPLY_SQL, 7, values, decode_applied, (store_cb)cb, ctx);
}
