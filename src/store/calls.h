/*
 * calls.h — the API's reads and writes of calls (DESIGN.md section 4).
 *
 * Owns: the statements behind GET, PATCH, cancel and list of
 * /api/v1/calls, the counts by status for the metrics endpoints, and the
 * group-commit statement that stores created calls (intake_calls() of
 * sql/003_intake.sql, replaced in sql/007_dnc.sql to refuse numbers on the
 * do-not-call list, as PATCH does, and in sql/017_campaign_api.sql to
 * store priority and events_url).  PostgreSQL renders the call JSON (call_json() in
 * sql/001_schema.sql); the text is handed on as the database produced it.
 * The rules of store.h apply.
 */
#ifndef CO_STORE_CALLS_H
#define CO_STORE_CALLS_H

#include <stddef.h>
#include <stdint.h>

#include "net/pg_pool.h"
#include "store/store.h"

struct call_input;
struct list_query;

/* A call rendered as JSON text (not NUL-terminated for sure: use LEN). */
struct store_json {
    const char *text;
    size_t len;
};

/* GET: DOC is NULL when no call has that id. */
typedef void (*store_call_fn)(void *ctx, const struct store_err *e, const struct store_json *doc);
int store_call_get(struct pg_pool *pg, const char *id, store_call_fn cb, void *ctx);

/* What a conditional update (PATCH, cancel) found. */
enum store_update_result {
    STORE_UPDATE_NOT_FOUND, /* no call with that id */
    STORE_UPDATED,          /* doc is the call after the change */
    STORE_NOT_PENDING,      /* the call exists but was not PENDING */
    STORE_TO_LISTED,        /* the new `to` is on the do-not-call list: unchanged */
    STORE_CHANGED           /* PENDING, but no longer the version read: unchanged */
};

struct store_update {
    enum store_update_result result;
    struct store_json doc; /* the call (after the change when UPDATED) */
    const char *status;    /* its status as read */
};

/* U is NULL when E != NULL. */
typedef void (*store_update_fn)(void *ctx, const struct store_err *e, const struct store_update *u);

/* What the rules of DESIGN.md section 9 need of a stored call to decide a
 * PATCH (store_call_read_rules).  Strings point into the result: valid
 * during the callback. */
struct store_call_rules {
    const char *status;
    const char *to;
    const char *timezone;    /* NULL: none */
    const char *window_json; /* NULL: none ([compliance]) */
    int64_t not_before_us;   /* 0: none */
    int64_t expires_at_us;   /* 0: none */
    int64_t next_attempt_us; /* 0: none */
    const char *hold_reason; /* NULL: none */
    const char *version;     /* the row version (xmin) */
};

/* RULES is NULL when no call has that id (or E != NULL). */
typedef void (*store_rules_fn)(void *ctx, const struct store_err *e,
                               const struct store_call_rules *rules);
int store_call_read_rules(struct pg_pool *pg, const char *id, store_rules_fn cb, void *ctx);

/* The columns a PATCH sets besides IN's own fields, decided by the API
 * from the call as read: only the row of that VERSION is changed (else
 * STORE_CHANGED, and the API reads again). */
struct store_patch_rules {
    const char *version;
    int set_zones; /* timezones := ZONES (to or timezone changed) */
    const char *const *zones;
    size_t nzones;
    int set_hold;            /* next_attempt_at and hold_reason := these */
    int64_t hold_until_us;   /* 0: due now */
    const char *hold_reason; /* NULL when due now; a retry wait keeps NULL */
};

/* Change the fields IN has of a PENDING call; RULES (NULL: none) sets the
 * section 9 columns the rules decided, for the version read. */
int store_call_patch(struct pg_pool *pg, const char *id, const struct call_input *in,
                     const struct store_patch_rules *rules, store_update_fn cb, void *ctx);

/* Cancel a PENDING call. */
int store_call_cancel(struct pg_pool *pg, const char *id, store_update_fn cb, void *ctx);

/* One page of GET /api/v1/calls, newest first. */
struct store_list_row {
    struct store_json doc;
    int64_t created_us; /* createdAt, µs since the epoch (the cursor) */
    const char *id;
};

struct store_page {
    long long total; /* calls matching the status filter (the
                      * status counters, not a count(*)) */
    int n;           /* rows on this page, at most the page size */
    const struct store_list_row *rows;
    int more; /* a row exists after this page */
};

/* PAGE is NULL when E != NULL. */
typedef void (*store_page_fn)(void *ctx, const struct store_err *e, const struct store_page *page);
int store_calls_list(struct pg_pool *pg, const struct list_query *q, store_page_fn cb, void *ctx);

/* Calls by status, in this order: PENDING, IN_PROGRESS, COMPLETED, FAILED,
 * CANCELLED, SUPPRESSED, EXPIRED.  COUNTS is NULL when E != NULL.  Exact,
 * and cheap however many calls are stored: the sums of the counters of
 * sql/005_status_counts.sql. */
#define STORE_STATUSES 7
typedef void (*store_counts_fn)(void *ctx, const struct store_err *e,
                                const long long counts[STORE_STATUSES]);
int store_calls_count(struct pg_pool *pg, store_counts_fn cb, void *ctx);

/* --- creating calls with group commit ------------------------------------ */

/* One answer row of a batch: the request at ORD in the batch JSON. */
enum store_intake_outcome {
    STORE_INTAKE_CREATED,      /* stored now: 201 with BODY */
    STORE_INTAKE_REPLAYED,     /* same key, same body: 200 with the stored BODY */
    STORE_INTAKE_KEY_CONFLICT, /* same key, another body */
    STORE_INTAKE_LISTED        /* `to` is on the do-not-call list: nothing stored */
};

struct store_intake_row {
    int ord;
    enum store_intake_outcome outcome;
    const char *body; /* NUL-terminated JSON */
};

/*
 * Called when a connection is free, right before sending: return the
 * batch as a JSON array (see intake_calls()), which must stay valid until
 * DONE; or NULL when there is nothing to send any more.
 */
typedef const char *(*store_intake_build_fn)(void *ctx);

/*
 * Exactly once per submitted job.  BUILT is 0 when the pool gave up on the
 * job before a connection took it (E says why); then BUILD never ran.
 * When BUILD returned NULL: E NULL and N 0.  A request of the batch with no
 * row lost an idempotency-key race and may go again.
 */
typedef void (*store_intake_done_fn)(void *ctx, int built, const struct store_err *e,
                                     const struct store_intake_row *rows, int n);

/* Queue a group-commit job (pg_pool_submit()); MAX_ATTEMPTS is stored with
 * each created call. */
int store_intake_submit(struct pg_pool *pg, int max_attempts, store_intake_build_fn build,
                        store_intake_done_fn done, void *ctx);

#endif
