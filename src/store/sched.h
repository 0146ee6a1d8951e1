/*
 * sched.h — the scheduler's statements (DESIGN.md section 3 step 5).
 *
 * Owns: reading the IN_PROGRESS calls to rebuild Redis's slot set, the
 * reclaim of timed-out IN_PROGRESS calls (settle_attempt() on each, under
 * row locks that keep two schedulers off one call; with [provider]
 * status_url, marking them for a status lookup instead), and the publish
 * query that marks due PENDING calls as handed to Kafka; the reconcile's
 * reads (which tokens seen in Redis no IN_PROGRESS attempt owns,
 * IN_PROGRESS calls page by page), the retention deletes and the expiry
 * sweep (PENDING calls past expires_at end EXPIRED), one bounded batch
 * each.  The rules of store.h
 * apply; rows handed to a callback live only during the callback.
 */
#ifndef CO_STORE_SCHED_H
#define CO_STORE_SCHED_H

#include "net/pg_pool.h"
#include "store/attempts.h"
#include "store/store.h"

/* An IN_PROGRESS call, as the slot set holds it. */
struct store_in_progress {
    const char *slot_owner; /* lease token */
    int attempt;
    const char *to;
    double lease_s;          /* lease left: LEASE_MS after the start, less
                       the time since */
    const char *campaign_id; /* its campaign when that has maxConcurrent,
                                else NULL */
};

/* ROWS is NULL when E != NULL. */
typedef void (*store_in_progress_fn)(void *ctx, const struct store_err *e,
                                     const struct store_in_progress *rows, int n);
int store_in_progress(struct pg_pool *pg, long long lease_ms, store_in_progress_fn cb, void *ctx);

/* An attempt started within the attempt cap's period, for rebuilding the
 * per-number counts in Redis (slots.h, P freq:<phone>). */
struct store_recent_attempt {
    const char *call_id;
    int attempt;
    const char *to;
    long long started_ms; /* ms since the epoch */
};

/* ROWS is NULL when E != NULL; fewer than LIMIT rows: the last batch. */
typedef void (*store_recent_fn)(void *ctx, const struct store_err *e,
                                const struct store_recent_attempt *rows, int n);

/* Up to LIMIT attempts started in the last PERIOD_MS, after the attempt
 * (AFTER_ID, AFTER_ATTEMPT) in key order ("" and 0 to begin): one batch
 * of a walk over call_attempts' primary key. */
int store_recent_attempts(struct pg_pool *pg, long long period_ms, const char *after_id,
                          int after_attempt, int limit, store_recent_fn cb, void *ctx);

/* An IN_PROGRESS call reclaimed: its attempt timed out. */
struct store_reclaimed {
    const char *id;
    int attempt;
    const char *status; /* after settling: PENDING when retried */
    const char *to;
    const char *slot_owner;
};

typedef void (*store_reclaimed_fn)(void *ctx, const struct store_err *e,
                                   const struct store_reclaimed *rows, int n);

/* End up to LIMIT attempts that started more than TIMEOUT_MS ago, with
 * outcome TIMEOUT, retried by RETRY_MS ([retry] timeout: STORE_RETRY_NEVER,
 * STORE_RETRY_BACKOFF by B, or a delay in ms). */
int store_reclaim(struct pg_pool *pg, long long timeout_ms, const struct store_backoff *b,
                  long long retry_ms, int limit, store_reclaimed_fn cb, void *ctx);

/* With [provider] status_url: mark up to LIMIT attempts that started more
 * than TIMEOUT_MS ago as of unknown outcome, for a status lookup before
 * they are reclaimed (store_lookups_claim() in attempts.h). */
int store_reclaim_mark(struct pg_pool *pg, long long timeout_ms, int limit, store_done_fn cb,
                       void *ctx);

/* A due call marked as published: send it to Kafka. */
struct store_due {
    const char *id;
    int attempt; /* the attempt the message starts */
    const char *to;
};

typedef void (*store_due_fn)(void *ctx, const struct store_err *e, const struct store_due *rows,
                             int n);

/* Mark up to LIMIT due PENDING calls published, fewer by the calls handed
 * to Kafka within GRACE_MS and not started or parked yet. */
int store_publish_due(struct pg_pool *pg, int limit, long long grace_ms, store_due_fn cb,
                      void *ctx);

/* ------------------------------------------------------------ reconcile --- */

/* A lease token seen in Redis: a slot (PHONE NULL) or a phone lock. */
struct store_rc_token {
    const char *token; /* "<owner>:<attempt>" */
    const char *phone;
};

/* STRAYS[N]: the indexes (ascending) of the tokens no IN_PROGRESS attempt
 * owns (for a phone lock: not on that number). */
typedef void (*store_rc_strays_fn)(void *ctx, const struct store_err *e, const int *strays, int n);
int store_rc_strays(struct pg_pool *pg, const struct store_rc_token *t, int n,
                    store_rc_strays_fn cb, void *ctx);

/* An IN_PROGRESS call, as its lease should be. */
struct store_rc_call {
    const char *id; /* the page's keyset position */
    const char *slot_owner;
    int attempt;
    const char *to;
    double lease_s;          /* as struct store_in_progress */
    const char *campaign_id; /* as struct store_in_progress */
};

typedef void (*store_rc_page_fn)(void *ctx, const struct store_err *e,
                                 const struct store_rc_call *rows, int n);

/* Up to LIMIT IN_PROGRESS calls with an id after AFTER_ID (NULL or "":
 * from the first), by id. */
int store_rc_in_progress_page(struct pg_pool *pg, const char *after_id, int limit,
                              long long lease_ms, store_rc_page_fn cb, void *ctx);

/* ------------------------------------------------------------ retention --- */

enum store_prune_what {
    STORE_PRUNE_WEBHOOK_EVENTS,   /* processed webhook ids, by received_at */
    STORE_PRUNE_IDEMPOTENCY_KEYS, /* by created_at */
    STORE_PRUNE_FINISHED_CALLS    /* terminal calls by ended_at, with their
                                     attempts and idempotency keys */
};

/* DELETED: rows deleted by this batch. */
typedef void (*store_pruned_fn)(void *ctx, const struct store_err *e, int deleted);

/* Delete up to LIMIT rows of WHAT older than OLDER_THAN_MS, oldest first. */
int store_prune(struct pg_pool *pg, enum store_prune_what what, long long older_than_ms, int limit,
                store_pruned_fn cb, void *ctx);

/* ---------------------------------------------------------------- expiry --- */

/* EXPIRED: calls this batch ended EXPIRED. */
typedef void (*store_expired_fn)(void *ctx, const struct store_err *e, int expired);

/* End up to LIMIT PENDING calls past their expires_at EXPIRED, oldest
 * expiry first (expire_calls(), sql/009_compliance.sql). */
int store_expire_due(struct pg_pool *pg, int limit, store_expired_fn cb, void *ctx);

#endif
