/*
 * sched.c — the scheduler's statements (sched.h).
 *
 * Owns: the SQL text of the rebuild reads (IN_PROGRESS calls, and the
 * attempts the per-number cap counts), the reclaim (and, with status
 * lookups, the reclaim's "look up first" mark) and the publish query, the
 * reconcile's two reads, the retention deletes and the expiry sweep, their
 * parameters, and the decoding of their rows.
 */
#include "store/sched.h"

#include <stdlib.h>

#include <jansson.h>

#include "store/store_job.h"

/* Seconds left of an IN_PROGRESS call's lease ($1 = the lease in ms): from
 * its start, or from now while the outcome of its attempt is unknown (the
 * status lookups keep extending such a lease past call_timeout, and a
 * rebuilt one must not have expired already). */
#define LEASE_LEFT_SQL                                                               \
    "extract(epoch FROM CASE WHEN EXISTS (SELECT 1 FROM call_attempts a"             \
    "   WHERE a.call_id = calls.id AND a.attempt = calls.attempts"                   \
    "     AND a.outcome_unknown_since IS NOT NULL) THEN greatest(started_at, now())" \
    "  ELSE started_at END + $1::bigint * interval '1 ms' - now())"

/* The campaign of an IN_PROGRESS call when it has maxConcurrent (slots.h,
 * P camp:<id>), else NULL. */
#define CAMPAIGN_CAPPED_SQL                                              \
    "(SELECT g.id::text FROM campaigns g WHERE g.id = calls.campaign_id" \
    "   AND g.max_concurrent IS NOT NULL) AS capped_campaign"

static const char REBUILD_SQL[] =
    "SELECT COALESCE(slot_owner, id::text), attempts, to_number, " LEASE_LEFT_SQL
    ", " CAMPAIGN_CAPPED_SQL " FROM calls WHERE status = 'IN_PROGRESS'";

/* The row locks (SKIP LOCKED) keep two schedulers from reclaiming one call;
 * settle_attempt() keeps a webhook and a reclaim from both ending it. */
static const char RECLAIM_SQL[] =
    "SELECT c.id::text, c.attempts, s.status, s.to_number, COALESCE(s.slot_owner, c.id::text)"
    " FROM (SELECT id, attempts FROM calls"
    "        WHERE status = 'IN_PROGRESS' AND started_at < now() - $1::bigint * interval '1 ms'"
    "        ORDER BY started_at LIMIT $4::int FOR UPDATE SKIP LOCKED) c,"
    "      LATERAL settle_attempt(c.id, c.attempts, 'TIMEOUT',"
    "                             'timed out: no webhook within call_timeout', NULL, true,"
    "                             $2::bigint, $3::bigint, 0, $5::bigint) s";

/* Up to the free slots, less the calls already on their way to a consumer
 * (handed to Kafka within the grace, not yet started or parked): those take
 * the free slots first.  Without that, every tick until they arrive would
 * publish more calls for the same slots, only to have them parked again.
 * Counting them stops at the free slots: with a backlog of 300 000 calls
 * waiting in Kafka the full count took 50 ms a tick, the capped one 3 ms.
 *
 * Order (DESIGN.md section 10): priority 9 down to 0, each the oldest due
 * first.  Each priority is one range of calls_publish_prio_idx (018), read
 * only as far as the LIMIT needs; a single ORDER BY priority DESC, due_at
 * over all due rows would either sort them all or walk every not-yet-due
 * row of the higher priorities.  A campaign that is not RUNNING (PAUSED;
 * CANCELLED before its calls are) publishes nothing: its calls wait PENDING
 * and are published again within a tick of a resume.  Nor does one with
 * maxConcurrent calls IN_PROGRESS, or callsPerSecond calls started within
 * the last second: its backlog would otherwise take every free slot of
 * every tick, only to be parked by the acquire, and starve the calls
 * behind it (calls_campaign_in_progress_idx counts them).  Redis decides
 * the limits; this only keeps a full campaign from crowding the publish.  The ids go to the
 * UPDATE as an array: with "IN (subquery)" the planner, unable to estimate
 * the LIMIT, hashed the ids and read every row of calls (EXPLAIN ANALYZE
 * on 1 000 000 calls: 800 ms against 2 ms). */
static const char PUBLISH_SQL[] =
    "WITH lim AS (SELECT greatest($1::int - (SELECT count(*) FROM (SELECT 1 FROM calls"
    "                     WHERE status = 'PENDING'"
    "                       AND published_at >= now() - $2::bigint * interval '1 ms'"
    "                     LIMIT $1::int) on_the_way), 0) AS n),"
    " held AS (SELECT g.id FROM campaigns g WHERE g.status IN ('PAUSED', 'CANCELLED')"
    "   OR (g.status = 'RUNNING' AND g.max_concurrent <= (SELECT count(*) FROM calls x"
    "        WHERE x.campaign_id = g.id AND x.status = 'IN_PROGRESS'))"
    "   OR (g.status = 'RUNNING' AND ceil(g.calls_per_second) <= (SELECT count(*) FROM calls x"
    "        WHERE x.campaign_id = g.id AND x.status = 'IN_PROGRESS'"
    "          AND x.started_at > now() - interval '1 s' / least(g.calls_per_second, 1))))"
    " UPDATE calls SET published_at = now() WHERE id = ANY (ARRAY("
    "  SELECT d.id FROM generate_series(9, 0, -1) AS p(priority),"
    "   LATERAL (SELECT c.id FROM calls c"
    "   WHERE c.status = 'PENDING' AND c.priority = p.priority AND c.due_at <= now()"
    "     AND (c.published_at IS NULL OR c.published_at < now() - $2::bigint * interval '1 ms')"
    "     AND (c.campaign_id IS NULL OR c.campaign_id NOT IN (SELECT id FROM held))"
    "   ORDER BY c.due_at, c.id"
    "   LIMIT (SELECT n FROM lim)"
    "   FOR UPDATE OF c SKIP LOCKED) d"
    "  LIMIT (SELECT n FROM lim)))"
    " RETURNING id::text, attempts + 1, to_number";

static void in_progress_row(const PGresult *res, int r, void *out)
{
    struct store_in_progress *p = out;
    p->slot_owner = PQgetvalue(res, r, 0);
    p->attempt = atoi(PQgetvalue(res, r, 1));
    p->to = PQgetvalue(res, r, 2);
    p->lease_s = atof(PQgetvalue(res, r, 3));
    p->campaign_id = PQgetisnull(res, r, 4) ? NULL : PQgetvalue(res, r, 4);
}

static void deliver_in_progress(store_cb cb, void *ctx, const struct store_err *e, const void *rows,
                                int n)
{
    ((store_in_progress_fn)cb)(ctx, e, rows, n);
}

static const struct store_rows in_progress_rows = {
    sizeof(struct store_in_progress),
    in_progress_row,
    deliver_in_progress,
};

int store_in_progress(struct pg_pool *pg, long long lease_ms, store_in_progress_fn cb, void *ctx)
{
    struct store_num lease;
    const char *values[] = { store_int(&lease, lease_ms) };
    return store_query_rows(pg, REBUILD_SQL, 1, values, &in_progress_rows, (store_cb)cb, ctx);
}

/* The number is the call's now (a PATCH of "to" since the attempt is
 * rare, and counts the attempt against the new number: conservative). */
static const char RECENT_SQL[] = "SELECT a.call_id::text, a.attempt, c.to_number,"
                                 "       (extract(epoch FROM a.started_at) * 1000)::bigint"
                                 "  FROM call_attempts a JOIN calls c ON c.id = a.call_id"
                                 " WHERE (a.call_id, a.attempt) > (COALESCE(NULLIF($2, '')::uuid,"
                                 "         '00000000-0000-0000-0000-000000000000'), $3::int)"
                                 "   AND a.started_at > now() - $1::bigint * interval '1 ms'"
                                 " ORDER BY a.call_id, a.attempt LIMIT $4::int";

static void recent_row(const PGresult *res, int r, void *out)
{
    struct store_recent_attempt *p = out;
    p->call_id = PQgetvalue(res, r, 0);
    p->attempt = atoi(PQgetvalue(res, r, 1));
    p->to = PQgetvalue(res, r, 2);
    p->started_ms = atoll(PQgetvalue(res, r, 3));
}

static void deliver_recent(store_cb cb, void *ctx, const struct store_err *e, const void *rows,
                           int n)
{
    ((store_recent_fn)cb)(ctx, e, rows, n);
}

static const struct store_rows recent_rows = {
    sizeof(struct store_recent_attempt),
    recent_row,
    deliver_recent,
};

int store_recent_attempts(struct pg_pool *pg, long long period_ms, const char *after_id,
                          int after_attempt, int limit, store_recent_fn cb, void *ctx)
{
    struct store_num period, att, lim;
    const char *values[] = { store_int(&period, period_ms), after_id,
                             store_int(&att, after_attempt), store_int(&lim, limit) };
    return store_query_rows(pg, RECENT_SQL, 4, values, &recent_rows, (store_cb)cb, ctx);
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

static void deliver_reclaimed(store_cb cb, void *ctx, const struct store_err *e, const void *rows,
                              int n)
{
    ((store_reclaimed_fn)cb)(ctx, e, rows, n);
}

static const struct store_rows reclaimed_rows = {
    sizeof(struct store_reclaimed),
    reclaimed_row,
    deliver_reclaimed,
};

int store_reclaim(struct pg_pool *pg, long long timeout_ms, const struct store_backoff *b,
                  long long retry_ms, int limit, store_reclaimed_fn cb, void *ctx)
{
    struct store_num timeout, base, max, lim, rule;
    const char *values[] = {
        store_int(&timeout, timeout_ms), store_int(&base, b->base_ms), store_int(&max, b->max_ms),
        store_int(&lim, limit),          store_int(&rule, retry_ms),
    };
    return store_query_rows(pg, RECLAIM_SQL, 5, values, &reclaimed_rows, (store_cb)cb, ctx);
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

static void deliver_due(store_cb cb, void *ctx, const struct store_err *e, const void *rows, int n)
{
    ((store_due_fn)cb)(ctx, e, rows, n);
}

static const struct store_rows due_rows = { sizeof(struct store_due), due_row, deliver_due };

int store_publish_due(struct pg_pool *pg, int limit, long long grace_ms, store_due_fn cb, void *ctx)
{
    struct store_num lim, grace;
    const char *values[] = { store_int(&lim, limit), store_int(&grace, grace_ms) };
    return store_query_rows(pg, PUBLISH_SQL, 2, values, &due_rows, (store_cb)cb, ctx);
}

/* ------------------------------------------------------------ reconcile --- */
/* (the statements of dispatch/reconcile.c; kept apart from the above) */

/* Which of the tokens seen in Redis no IN_PROGRESS attempt owns.  A token
 * "<owner>:<attempt>" begins with its call id (see calls.slot_owner), so
 * each is one primary-key lookup; a token that does not is nobody's. */
static const char RC_STRAYS_SQL[] =
    "SELECT x.i FROM json_to_recordset($1::json) AS x(i int, t text, p text)"
    " WHERE NOT EXISTS (SELECT 1 FROM calls c"
    "   WHERE c.id = CASE WHEN x.t ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-"
    "[0-9a-f]{12}' THEN left(x.t, 36)::uuid END"
    "     AND c.status = 'IN_PROGRESS'"
    "     AND COALESCE(c.slot_owner, c.id::text) || ':' || c.attempts = x.t"
    "     AND (x.p IS NULL OR c.to_number = x.p))"
    " ORDER BY x.i";

static void stray_row(const PGresult *res, int r, void *out)
{
    *(int *)out = atoi(PQgetvalue(res, r, 0));
}

static void deliver_strays(store_cb cb, void *ctx, const struct store_err *e, const void *rows,
                           int n)
{
    ((store_rc_strays_fn)cb)(ctx, e, rows, n);
}

static const struct store_rows stray_rows = { sizeof(int), stray_row, deliver_strays };

int store_rc_strays(struct pg_pool *pg, const struct store_rc_token *t, int n,
                    store_rc_strays_fn cb, void *ctx)
{
    json_t *a = json_array();
    char *doc = NULL;
    int rc = -1;

    for (int i = 0; a != NULL && i < n; i++) {
        json_t *o = json_pack("{s:i, s:s, s:s?}", "i", i, "t", t[i].token, "p", t[i].phone);
        if (o == NULL || json_array_append_new(a, o) != 0)
            goto out;
    }
    if (a != NULL && (doc = json_dumps(a, JSON_COMPACT)) != NULL) {
        const char *values[] = { doc };
        rc = store_query_rows(pg, RC_STRAYS_SQL, 1, values, &stray_rows, (store_cb)cb, ctx);
    }
out:
    free(doc);
    json_decref(a);
    return rc;
}

/* IN_PROGRESS calls by id after $2 (keyset pages; calls_in_progress_id_idx). */
static const char RC_PAGE_SQL[] =
    "SELECT id::text, COALESCE(slot_owner, id::text), attempts, to_number, " LEASE_LEFT_SQL
    ", " CAMPAIGN_CAPPED_SQL " FROM calls WHERE status = 'IN_PROGRESS' AND id > $2::uuid"
    " ORDER BY id LIMIT $3::int";

static void rc_page_row(const PGresult *res, int r, void *out)
{
    struct store_rc_call *p = out;
    p->id = PQgetvalue(res, r, 0);
    p->slot_owner = PQgetvalue(res, r, 1);
    p->attempt = atoi(PQgetvalue(res, r, 2));
    p->to = PQgetvalue(res, r, 3);
    p->lease_s = atof(PQgetvalue(res, r, 4));
    p->campaign_id = PQgetisnull(res, r, 5) ? NULL : PQgetvalue(res, r, 5);
}

static void deliver_rc_page(store_cb cb, void *ctx, const struct store_err *e, const void *rows,
                            int n)
{
    ((store_rc_page_fn)cb)(ctx, e, rows, n);
}

static const struct store_rows rc_page_rows = {
    sizeof(struct store_rc_call),
    rc_page_row,
    deliver_rc_page,
};

int store_rc_in_progress_page(struct pg_pool *pg, const char *after_id, int limit,
                              long long lease_ms, store_rc_page_fn cb, void *ctx)
{
    struct store_num lease, lim;
    const char *values[] = {
        store_int(&lease, lease_ms),
        after_id != NULL && after_id[0] != '\0' ? after_id : "00000000-0000-0000-0000-000000000000",
        store_int(&lim, limit),
    };
    return store_query_rows(pg, RC_PAGE_SQL, 3, values, &rc_page_rows, (store_cb)cb, ctx);
}

/* ------------------------------------------------------------ retention --- */

/* One batch each: the oldest rows first, by the index on their time. */
static const char *const PRUNE_SQL[] = {
    [STORE_PRUNE_WEBHOOK_EVENTS] = "WITH d AS (DELETE FROM webhook_events WHERE id IN ("
                                   "  SELECT id FROM webhook_events"
                                   "   WHERE received_at < now() - $1::bigint * interval '1 ms'"
                                   "   ORDER BY received_at LIMIT $2::int) RETURNING 1)"
                                   " SELECT count(*)::int FROM d",
    [STORE_PRUNE_IDEMPOTENCY_KEYS] = "WITH d AS (DELETE FROM idempotency_keys WHERE key IN ("
                                     "  SELECT key FROM idempotency_keys"
                                     "   WHERE created_at < now() - $1::bigint * interval '1 ms'"
                                     "   ORDER BY created_at LIMIT $2::int) RETURNING 1)"
                                     " SELECT count(*)::int FROM d",
    /* terminal calls only (a terminal call never changes again); their
     * attempts and idempotency keys go with them (ON DELETE CASCADE) */
    [STORE_PRUNE_FINISHED_CALLS] =
        "WITH d AS (DELETE FROM calls WHERE id IN ("
        "  SELECT id FROM calls"
        "   WHERE status IN ('COMPLETED', 'FAILED', 'CANCELLED', 'SUPPRESSED', 'EXPIRED')"
        "     AND ended_at < now() - $1::bigint * interval '1 ms'"
        "   ORDER BY ended_at LIMIT $2::int FOR UPDATE SKIP LOCKED)"
        "   AND status IN ('COMPLETED', 'FAILED', 'CANCELLED', 'SUPPRESSED', 'EXPIRED') RETURNING "
        "1)"
        " SELECT count(*)::int FROM d",
};

static void count_row(const PGresult *res, int r, void *out)
{
    *(int *)out = atoi(PQgetvalue(res, r, 0));
}

static void deliver_pruned(store_cb cb, void *ctx, const struct store_err *e, const void *rows,
                           int n)
{
    ((store_pruned_fn)cb)(ctx, e, e == NULL && n > 0 ? *(const int *)rows : 0);
}

static const struct store_rows pruned_rows = { sizeof(int), count_row, deliver_pruned };

int store_prune(struct pg_pool *pg, enum store_prune_what what, long long older_than_ms, int limit,
                store_pruned_fn cb, void *ctx)
{
    struct store_num age, lim;
    const char *values[] = { store_int(&age, older_than_ms), store_int(&lim, limit) };
    if ((unsigned)what >= sizeof(PRUNE_SQL) / sizeof(PRUNE_SQL[0]))
        return -1;
    return store_query_rows(pg, PRUNE_SQL[what], 2, values, &pruned_rows, (store_cb)cb, ctx);
}

/* --------------------------------------------------------------- expiry --- */

static const char EXPIRE_SQL[] =
    "WITH e AS (SELECT id FROM expire_calls($1::int)) SELECT count(*)::int FROM e";

static void deliver_expired(store_cb cb, void *ctx, const struct store_err *e, const void *rows,
                            int n)
{
    ((store_expired_fn)cb)(ctx, e, e == NULL && n > 0 ? *(const int *)rows : 0);
}

static const struct store_rows expired_rows = { sizeof(int), count_row, deliver_expired };

int store_expire_due(struct pg_pool *pg, int limit, store_expired_fn cb, void *ctx)
{
    struct store_num lim;
    const char *values[] = { store_int(&lim, limit) };
    return store_query_rows(pg, EXPIRE_SQL, 1, values, &expired_rows, (store_cb)cb, ctx);
}
