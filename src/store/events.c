/*
 * events.c — the client events outbox's statements (events.h).
 *
 * Owns: the SQL text of claim, finish, pending count, settings and list,
 * their parameters and the decoding of their rows.
 *
 * Order per call is kept by the claim alone: it only takes the first
 * pending event of a call, and a claimed event stays pending (leased:
 * next_try_at in the future) until its result is recorded, so the next
 * event of that call cannot be claimed while it is in flight, by this
 * daemon or another.  FOR UPDATE SKIP LOCKED keeps two daemons claiming at
 * the same moment from taking the same row; the lease keeps them apart
 * afterwards.  A result is recorded for many tries in one statement
 * (unnest of arrays), so a busy deliverer costs one round trip per batch.
 */
#include "store/events.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/store_job.h"
#include "util/strbuf.h"

/* ---------------------------------------------------------------- claim */

/* The two NOT EXISTS each use their partial index (sql/016_events.sql). */
static const char CLAIM_SQL[] =
    "WITH c AS ("
    "  SELECT e.seq FROM call_events e"
    "  WHERE e.state = 'pending' AND e.next_try_at <= now()"
    "    AND (e.call_id IS NULL OR NOT EXISTS ("
    "      SELECT 1 FROM call_events p WHERE p.call_id = e.call_id"
    "        AND p.state = 'pending' AND p.seq < e.seq))"
    "    AND (e.call_id IS NOT NULL OR NOT EXISTS ("
    "      SELECT 1 FROM call_events p WHERE p.campaign_id = e.campaign_id"
    "        AND p.call_id IS NULL AND p.state = 'pending' AND p.seq < e.seq))"
    "  ORDER BY e.next_try_at, e.seq"
    "  LIMIT $1::int"
    "  FOR UPDATE OF e SKIP LOCKED"
    ") "
    "UPDATE call_events e SET next_try_at = now() + $2::float8 * interval '1 second',"
    "  attempts = e.attempts + 1, last_try_at = now() "
    "FROM c WHERE e.seq = c.seq "
    "RETURNING e.seq, e.call_id, e.type, e.payload, e.url, e.attempts,"
    "  extract(epoch FROM e.created_at)::float8";

static const char *value_or_null(const PGresult *res, int r, int c)
{
    return PQgetisnull(res, r, c) ? NULL : PQgetvalue(res, r, c);
}

static void claim_row(const PGresult *res, int r, void *out)
{
    struct store_event *ev = out;
    ev->seq = strtoll(PQgetvalue(res, r, 0), NULL, 10);
    ev->call_id = value_or_null(res, r, 1);
    ev->type = PQgetvalue(res, r, 2);
    ev->payload = PQgetvalue(res, r, 3);
    ev->payload_len = (size_t)PQgetlength(res, r, 3);
    ev->url = value_or_null(res, r, 4);
    ev->attempts = atoi(PQgetvalue(res, r, 5));
    ev->created_s = strtod(PQgetvalue(res, r, 6), NULL);
}

static void deliver_claim(store_cb cb, void *ctx, const struct store_err *e, const void *rows,
                          int n)
{
    ((store_events_claim_fn)cb)(ctx, e, rows, n);
}

static const struct store_rows claim_rows = { sizeof(struct store_event), claim_row,
                                              deliver_claim };

int store_events_claim(struct pg_pool *pg, int limit, double lease_s, store_events_claim_fn cb,
                       void *ctx)
{
    struct store_num l;
    char lease[32];
    snprintf(lease, sizeof(lease), "%.3f", lease_s);
    const char *values[] = { store_int(&l, limit), lease };
    return store_query_rows(pg, CLAIM_SQL, 2, values, &claim_rows, (store_cb)cb, ctx);
}

/* --------------------------------------------------------------- finish */

/* The delay of the next try, by the attempts made so far ($3 base, $4 cap). */
#define RETRY_DELAY                                                                    \
    "LEAST($3::float8 * power(2, LEAST(GREATEST(e.attempts - 1, 0), 30)), $4::float8)" \
    " * interval '1 second'"

/* A try succeeded when it has no error (r.err IS NULL). */
static const char FINISH_SQL[] =
    "UPDATE call_events e SET"
    "  state = CASE WHEN r.err IS NULL THEN 'delivered'"
    "    WHEN e.created_at + $5::float8 * interval '1 second' < now() + " RETRY_DELAY
    "    THEN 'failed' ELSE 'pending' END,"
    "  next_try_at = CASE WHEN r.err IS NULL THEN e.next_try_at ELSE now() + " RETRY_DELAY " END,"
    "  delivered_at = CASE WHEN r.err IS NULL THEN now() ELSE e.delivered_at END,"
    "  last_status = r.status, last_error = r.err "
    "FROM unnest($1::bigint[], $2::int[], $6::text[], $7::int[]) AS r(seq, status, err, n) "
    "WHERE e.seq = r.seq AND e.state = 'pending' AND e.attempts = r.n "
    "RETURNING e.state = 'failed'";

/* The four arrays of a batch of results: seqs, statuses, errors, attempts. */
static int build_arrays(const struct store_event_result *r, int n, struct strbuf *seqs,
                        struct strbuf *status, struct strbuf *errs, struct strbuf *tries)
{
    strbuf_addc(tries, '{');
    strbuf_addc(seqs, '{');
    strbuf_addc(status, '{');
    strbuf_addc(errs, '{');
    for (int i = 0; i < n; i++) {
        const char *sep = i > 0 ? "," : "";
        strbuf_addf(seqs, "%s%lld", sep, r[i].seq);
        strbuf_addf(tries, "%s%d", sep, r[i].attempts);
        if (r[i].status > 0)
            strbuf_addf(status, "%s%d", sep, r[i].status);
        else
            strbuf_addf(status, "%sNULL", sep);
        strbuf_adds(errs, sep);
        store_array_element(errs, r[i].delivered ? NULL : (r[i].error ? r[i].error : "failed"));
    }
    strbuf_addc(seqs, '}');
    strbuf_addc(status, '}');
    strbuf_addc(errs, '}');
    strbuf_addc(tries, '}');
    return seqs->failed || status->failed || errs->failed || tries->failed ? -1 : 0;
}

static void decode_finish(const PGresult *res, const struct store_err *e, store_cb cb, void *ctx)
{
    int failed = 0;
    for (int r = 0; e == NULL && r < PQntuples(res); r++)
        failed += PQgetvalue(res, r, 0)[0] == 't';
    ((store_events_finish_fn)cb)(ctx, e, failed);
}

int store_events_finish(struct pg_pool *pg, const struct store_event_result *r, int n,
                        const struct store_event_retry *retry, store_events_finish_fn cb, void *ctx)
{
    struct strbuf seqs = { 0 }, status = { 0 }, errs = { 0 }, tries = { 0 };
    char base[32], max[32], age[32];
    int rc = -1;
    snprintf(base, sizeof(base), "%.3f", retry->base_s);
    snprintf(max, sizeof(max), "%.3f", retry->max_s);
    snprintf(age, sizeof(age), "%.3f", retry->max_age_s);
    if (build_arrays(r, n, &seqs, &status, &errs, &tries) == 0) {
        const char *values[] = { seqs.p, status.p, base, max, age, errs.p, tries.p };
        rc = store_query(pg, FINISH_SQL, 7, values, decode_finish, (store_cb)cb, ctx);
    }
    strbuf_free(&seqs);
    strbuf_free(&status);
    strbuf_free(&errs);
    strbuf_free(&tries);
    return rc;
}

/* -------------------------------------------------------------- pending */

static const char PENDING_SQL[] = "SELECT count(*) FROM call_events WHERE state = 'pending'";

static void decode_count(const PGresult *res, const struct store_err *e, store_cb cb, void *ctx)
{
    long long n = e == NULL && PQntuples(res) > 0 ? strtoll(PQgetvalue(res, 0, 0), NULL, 10) : 0;
    ((store_events_count_fn)cb)(ctx, e, n);
}

int store_events_pending(struct pg_pool *pg, store_events_count_fn cb, void *ctx)
{
    return store_query(pg, PENDING_SQL, 0, NULL, decode_count, (store_cb)cb, ctx);
}

/* ------------------------------------------------------------- settings */

static const char SETTINGS_SQL[] =
    "UPDATE events_settings SET default_url_set = $1::boolean, updated_at = now()"
    " WHERE default_url_set IS DISTINCT FROM $1::boolean";

int store_events_settings(struct pg_pool *pg, bool default_url_set, store_done_fn cb, void *ctx)
{
    const char *values[] = { default_url_set ? "true" : "false" };
    return store_query(pg, SETTINGS_SQL, 1, values, store_decode_none, (store_cb)cb, ctx);
}

/* ----------------------------------------------------------------- list */

static const char LIST_SQL[] =
    "SELECT COALESCE((SELECT json_agg(json_build_object("
    "    'seq', e.seq, 'type', e.type, 'createdAt', callorch_ts(e.created_at),"
    "    'state', e.state, 'attempts', e.attempts, 'lastStatus', e.last_status,"
    "    'lastError', e.last_error, 'deliveredAt', callorch_ts(e.delivered_at),"
    "    'nextTryAt', CASE WHEN e.state = 'pending' THEN callorch_ts(e.next_try_at) END)"
    "  ORDER BY e.seq) FROM call_events e WHERE e.call_id = c.id), '[]'::json)"
    " FROM calls c WHERE c.id = $1::uuid";

static void list_row(const PGresult *res, int r, void *out)
{
    struct store_events_doc *d = out;
    d->text = PQgetvalue(res, r, 0);
    d->len = (size_t)PQgetlength(res, r, 0);
}

static void deliver_list(store_cb cb, void *ctx, const struct store_err *e, const void *rows, int n)
{
    ((store_events_list_fn)cb)(ctx, e, e == NULL && n > 0 ? rows : NULL);
}

static const struct store_rows list_rows = { sizeof(struct store_events_doc), list_row,
                                             deliver_list };

int store_events_list(struct pg_pool *pg, const char *call_id, store_events_list_fn cb, void *ctx)
{
    const char *values[] = { call_id };
    return store_query_rows(pg, LIST_SQL, 1, values, &list_rows, (store_cb)cb, ctx);
}
