/*
 * sched.c — the scheduler's statements (sched.h).
 *
 * Owns: the SQL text of the rebuild read, the reclaim (and, with status
 * lookups, the reclaim's "look up first" mark) and the publish query,
 * their parameters, and the decoding of their rows.
 */
#include "store/sched.h"

#include <stdlib.h>

#include "store/store_job.h"

static const char REBUILD_SQL[] =
    "SELECT COALESCE(slot_owner, id::text), attempts, to_number,"
    "       extract(epoch FROM started_at + $1::bigint * interval '1 ms' - now())"
    " FROM calls WHERE status = 'IN_PROGRESS'";

/* The row locks (SKIP LOCKED) keep two schedulers from reclaiming one call;
 * settle_attempt() keeps a webhook and a reclaim from both ending it. */
static const char RECLAIM_SQL[] =
    "SELECT c.id::text, c.attempts, s.status, s.to_number, COALESCE(s.slot_owner, c.id::text)"
    " FROM (SELECT id, attempts FROM calls"
    "        WHERE status = 'IN_PROGRESS' AND started_at < now() - $1::bigint * interval '1 ms'"
    "        ORDER BY started_at LIMIT $4::int FOR UPDATE SKIP LOCKED) c,"
    "      LATERAL settle_attempt(c.id, c.attempts, 'TIMEOUT',"
    "                             'timed out: no webhook within call_timeout', NULL, true,"
    "                             $2::bigint, $3::bigint, 0) s";

/* Up to the free slots, less the calls already on their way to a consumer
 * (handed to Kafka within the grace, not yet started or parked): those take
 * the free slots first.  Without that, every tick until they arrive would
 * publish more calls for the same slots, only to have them parked again.
 * Counting them stops at the free slots: with a backlog of 300 000 calls
 * waiting in Kafka the full count took 50 ms a tick, the capped one 3 ms. */
static const char PUBLISH_SQL[] =
    "UPDATE calls SET published_at = now() WHERE id IN ("
    "  SELECT id FROM calls"
    "   WHERE status = 'PENDING' AND due_at <= now()"
    "     AND (published_at IS NULL OR published_at < now() - $2::bigint * interval '1 ms')"
    "   ORDER BY due_at, id"
    "   LIMIT greatest($1::int - (SELECT count(*) FROM (SELECT 1 FROM calls"
    "                     WHERE status = 'PENDING'"
    "                       AND published_at >= now() - $2::bigint * interval '1 ms'"
    "                     LIMIT $1::int) on_the_way), 0)"
    "   FOR UPDATE SKIP LOCKED)"
    " RETURNING id::text, attempts + 1, to_number";

static void in_progress_row(const PGresult *res, int r, void *out)
{
    struct store_in_progress *p = out;
    p->slot_owner = PQgetvalue(res, r, 0);
    p->attempt = atoi(PQgetvalue(res, r, 1));
    p->to = PQgetvalue(res, r, 2);
    p->lease_s = atof(PQgetvalue(res, r, 3));
}

static void deliver_in_progress(store_cb cb, void *ctx, const struct store_err *e,
                                const void *rows, int n)
{
    ((store_in_progress_fn)cb)(ctx, e, rows, n);
}

static const struct store_rows in_progress_rows = {
    sizeof(struct store_in_progress), in_progress_row, deliver_in_progress,
};

int store_in_progress(struct pg_pool *pg, long long lease_ms, store_in_progress_fn cb,
                      void *ctx)
{
    struct store_num lease;
    const char *values[] = { store_int(&lease, lease_ms) };
    return store_query_rows(pg, REBUILD_SQL, 1, values, &in_progress_rows, (store_cb)cb, ctx);
}

static void reclaimed_row(const PGresult *res, int r, void *out)
{
    struct store_reclaimed *p = out;
    p->id = PQgetvalue(res, r, 0);
    p->attempt = atoi(PQgetvalue(res, r, 1));
    p->status = PQgetvalue(res, r, 2);
    p->to = PQgetvalue(res, r, 3);
    p->slot_owner = PQgetvalue(res, r, 4);
}

static void deliver_reclaimed(store_cb cb, void *ctx, const struct store_err *e,
                              const void *rows, int n)
{
    ((store_reclaimed_fn)cb)(ctx, e, rows, n);
}

static const struct store_rows reclaimed_rows = {
    sizeof(struct store_reclaimed), reclaimed_row, deliver_reclaimed,
};

int store_reclaim(struct pg_pool *pg, long long timeout_ms, const struct store_backoff *b,
                  int limit, store_reclaimed_fn cb, void *ctx)
{
    struct store_num timeout, base, max, lim;
    const char *values[] = {
        store_int(&timeout, timeout_ms), store_int(&base, b->base_ms),
        store_int(&max, b->max_ms), store_int(&lim, limit),
    };
    return store_query_rows(pg, RECLAIM_SQL, 4, values, &reclaimed_rows, (store_cb)cb, ctx);
}

/* With status lookups the reclaim does not end a timed-out attempt: it
 * marks its outcome unknown, and the lookup decides (store_lookups_claim()).
 * calls is locked first, then call_attempts (settle_attempt()'s order);
 * attempts already marked are not taken again.  Unknown since the start:
 * the first lookup is due at once. */
static const char RECLAIM_MARK_SQL[] =
    "UPDATE call_attempts a SET outcome_unknown_since = c.started_at, looked_up_at = NULL"
    "  FROM (SELECT id, attempts, started_at FROM calls"
    "         WHERE status = 'IN_PROGRESS' AND started_at < now() - $1::bigint * interval '1 ms'"
    "           AND NOT EXISTS (SELECT 1 FROM call_attempts u"
    "                            WHERE u.call_id = calls.id AND u.attempt = calls.attempts"
    "                              AND u.outcome_unknown_since IS NOT NULL)"
    "         ORDER BY started_at LIMIT $2::int FOR UPDATE SKIP LOCKED) c"
    " WHERE a.call_id = c.id AND a.attempt = c.attempts AND a.ended_at IS NULL";

int store_reclaim_mark(struct pg_pool *pg, long long timeout_ms, int limit, store_done_fn cb,
                       void *ctx)
{
    struct store_num timeout, lim;
    const char *values[] = { store_int(&timeout, timeout_ms), store_int(&lim, limit) };
    return store_query(pg, RECLAIM_MARK_SQL, 2, values, store_decode_none, (store_cb)cb, ctx);
}

static void due_row(const PGresult *res, int r, void *out)
{
    struct store_due *p = out;
    p->id = PQgetvalue(res, r, 0);
    p->attempt = atoi(PQgetvalue(res, r, 1));
    p->to = PQgetvalue(res, r, 2);
}

static void deliver_due(store_cb cb, void *ctx, const struct store_err *e, const void *rows,
                        int n)
{
    ((store_due_fn)cb)(ctx, e, rows, n);
}

static const struct store_rows due_rows = { sizeof(struct store_due), due_row, deliver_due };

int store_publish_due(struct pg_pool *pg, int limit, long long grace_ms, store_due_fn cb,
                      void *ctx)
{
    struct store_num lim, grace;
    const char *values[] = { store_int(&lim, limit), store_int(&grace, grace_ms) };
    return store_query_rows(pg, PUBLISH_SQL, 2, values, &due_rows, (store_cb)cb, ctx);
}
