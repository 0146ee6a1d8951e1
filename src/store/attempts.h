/*
 * attempts.h — the state changes of a dispatch attempt (DESIGN.md section 3,
 * steps 2 to 4).
 *
 * Owns: the statements that load a call for a Kafka message, move it to
 * IN_PROGRESS (the conditional update that makes a redelivered message
 * harmless) or to SUPPRESSED when its number is on the do-not-call list,
 * re-read it when that update's answer was lost, park it for
 * the scheduler, hold it for its calling window or its number's attempt
 * cap, end it EXPIRED when the load finds it past its expiry, record the provider's call id, and end an attempt — settle_attempt() for a provider that did not start the
 * call, apply_webhook() for the provider's webhook (sql/002_dispatch.sql and
 * later migrations) — and the unknown outcomes of sql/004_unknown_outcomes.sql:
 * mark an attempt's outcome unknown, record a callId learnt later, claim
 * the attempts due for a status lookup.  The rules of store.h apply.
 */
#ifndef CO_STORE_ATTEMPTS_H
#define CO_STORE_ATTEMPTS_H

#include <stdbool.h>

#include "net/pg_pool.h"
#include "store/store.h"

/* What a dispatch job needs to know of its call. */
struct store_call_state {
    const char *status;
    int attempts; /* attempts started so far */
    const char *to;
    bool due;                    /* due_at has come */
    bool listed;                 /* TO is on the do-not-call list */
    bool expired;                /* expires_at has passed */
    const char *zones;           /* calls.timezones as a JSON array ("[]": no zone data) */
    const char *window_json;     /* calls.calling_window; NULL: [compliance] */
    const char *campaign_id;     /* NULL: a single call */
    const char *campaign_status; /* RUNNING, PAUSED, …; NULL: no campaign */
    int campaign_max;            /* its maxConcurrent; 0: none */
    double campaign_cps;         /* its callsPerSecond; 0: unpaced */
};

/* STATE is NULL when E != NULL or no call has that id. */
typedef void (*store_call_state_fn)(void *ctx, const struct store_err *e,
                                    const struct store_call_state *state);
int store_call_load(struct pg_pool *pg, const char *id, store_call_state_fn cb, void *ctx);

/* What the start update did to a call that qualified. */
enum store_start_outcome {
    STORE_START_STARTED,   /* IN_PROGRESS, attempt recorded: dial it */
    STORE_START_SUPPRESSED /* TO is on the do-not-call list: SUPPRESSED,
                                  * no attempt recorded, nothing to dial */
};

/* The call as the provider needs it, once it is IN_PROGRESS. */
struct store_started {
    enum store_start_outcome outcome;
    const char *script_id; /* NULL when SUPPRESSED */
    const char *metadata;  /* JSON text; NULL when SUPPRESSED */
};

/*
 * Move a due PENDING call to IN_PROGRESS as attempt ATTEMPT, for phone TO
 * (a PATCH since may have changed it), with OWNER as the lease token of the
 * slot — or to SUPPRESSED when TO is on the do-not-call list
 * (start_attempt(), sql/008_suppressed.sql).  S is NULL when E != NULL or
 * when the call did not qualify (lost a race).
 */
typedef void (*store_started_fn)(void *ctx, const struct store_err *e,
                                 const struct store_started *s);
int store_attempt_start(struct pg_pool *pg, const char *id, int attempt, const char *to,
                        const char *owner, store_started_fn cb, void *ctx);

/* The call as it is now, to act on after a start update whose answer was
 * lost (the commit may or may not have happened). */
struct store_reread {
    const char *status;
    int attempts;
    const char *slot_owner; /* "" when none */
    struct store_started started;
};

/* R is NULL when E != NULL or no call has that id. */
typedef void (*store_reread_fn)(void *ctx, const struct store_err *e, const struct store_reread *r);
int store_call_reread(struct pg_pool *pg, const char *id, store_reread_fn cb, void *ctx);

/* The load found TO listed: suppress the call before any slot is taken
 * (suppress_if_listed(), sql/008_suppressed.sql), if it could start
 * attempt ATTEMPT now and TO is still listed.  SUPPRESSED: whether it did. */
typedef void (*store_suppressed_fn)(void *ctx, const struct store_err *e, bool suppressed);
int store_call_suppress(struct pg_pool *pg, const char *id, int attempt, const char *to,
                        store_suppressed_fn cb, void *ctx);

/* The load found the call past its expires_at: end it EXPIRED if it is
 * still the PENDING call of attempt ATTEMPT and still expired (what
 * expire_calls() of sql/009_compliance.sql does for the sweep).
 * DONE: whether it did. */
typedef void (*store_flag_fn)(void *ctx, const struct store_err *e, bool done);
int store_call_expire(struct pg_pool *pg, const char *id, int attempt, store_flag_fn cb, void *ctx);

/* The compliance rules say not yet: hold the PENDING call of attempt
 * ATTEMPT until UNTIL_MS (ms since the epoch) for REASON ("window",
 * "frequency"), with hold_call() of sql/009_compliance.sql.  DONE: whether
 * it did (false: cancelled, changed or started since the load). */
int store_call_hold(struct pg_pool *pg, const char *id, int attempt, long long until_ms,
                    const char *reason, store_flag_fn cb, void *ctx);

/* Hand a PENDING call back to the scheduler (published_at cleared). */
int store_call_park(struct pg_pool *pg, const char *id, store_done_fn cb, void *ctx);

/* Record the provider's call id for attempt ATTEMPT. */
int store_attempt_record(struct pg_pool *pg, const char *id, int attempt, const char *external_id,
                         store_done_fn cb, void *ctx);

/* Record the provider's callId for the open attempt ATTEMPT; KNOWN: its
 * outcome is known from now on (no more status lookups). */
int store_attempt_learnt(struct pg_pool *pg, const char *id, int attempt, const char *external_id,
                         bool known, store_done_fn cb, void *ctx);

/* The start request of open attempt ATTEMPT got no answer to trust (WHY):
 * the call stays IN_PROGRESS; the scheduler looks its status up. */
int store_attempt_unknown(struct pg_pool *pg, const char *id, int attempt, const char *why,
                          store_done_fn cb, void *ctx);

/* An attempt due for a status lookup (claimed: looked_up_at = now()). */
struct store_lookup {
    const char *id;
    int attempt;
    const char *to;
    const char *script_id;
    const char *metadata;   /* JSON text */
    const char *slot_owner; /* the lease token of its slot */
    bool past_deadline;     /* started more than call_timeout ago */
};

typedef void (*store_lookups_fn)(void *ctx, const struct store_err *e,
                                 const struct store_lookup *rows, int n);

/* Claim up to LIMIT open attempts with an unknown outcome not looked up for
 * EVERY_MS; PAST_DEADLINE against TIMEOUT_MS (call_timeout). */
int store_lookups_claim(struct pg_pool *pg, long long every_ms, long long timeout_ms, int limit,
                        store_lookups_fn cb, void *ctx);

/* Backoff bounds of a retry, ms. */
struct store_backoff {
    long long base_ms;
    long long max_ms;
};

/* The retry rule of an outcome, as settle_attempt() takes it
 * (sql/010_retry_rules.sql): STORE_RETRY_NEVER ends the call FAILED,
 * STORE_RETRY_BACKOFF retries by store_backoff, a positive value retries
 * after that many ms. */
#define STORE_RETRY_NEVER (-1LL)
#define STORE_RETRY_BACKOFF 0LL

/* Why attempt ATTEMPT of call ID ended without a webhook: the provider did
 * not start it, or it timed out. */
struct store_settle {
    const char *id;
    int attempt;
    const char *reason; /* PROVIDER_ERROR, PROVIDER_REJECTED, TIMEOUT */
    const char *error;
    bool retry;             /* may be retried (max_attempts permitting) */
    long long min_delay_ms; /* the provider's Retry-After */
    struct store_backoff backoff;
    long long retry_ms; /* the rule when RETRY; 0 (backoff) unless set */
};

/* STATUS: the call's status after settling (PENDING when a retry was
 * planned); NULL when E != NULL or the attempt had ended already. */
typedef void (*store_settled_fn)(void *ctx, const struct store_err *e, const char *status);
int store_attempt_settle(struct pg_pool *pg, const struct store_settle *s, store_settled_fn cb,
                         void *ctx);

/* A webhook, validated. */
struct store_webhook {
    const char *webhook_id; /* the webhook-id header (dedupe), or NULL */
    const char *ref_id;     /* reference "<call id>:<attempt>", or NULL */
    int ref_attempt;
    const char *call_id;     /* the provider's callId */
    const char *outcome;     /* COMPLETED, FAILED, BUSY, NO_ANSWER, VOICEMAIL,
                                REJECTED, INVALID_NUMBER */
    const char *disposition; /* "OPT_OUT" or NULL */
    struct store_backoff backoff;
    long long retry_ms; /* OUTCOME's rule (STORE_RETRY_*, or ms) */
};

/* What apply_webhook() did. */
struct store_webhook_result {
    const char *result; /* "applied", "unknown", or why nothing changed */
    const char *call_id;
    int attempt;
    const char *status; /* the call's status now */
    const char *to;
    const char *slot_owner; /* the lease token of the attempt's slot */
    int opted_out;          /* OPT_OUT: the number's other PENDING calls
                                  * suppressed; -1 without an opt-out */
};

/* R is NULL when E != NULL (and, against apply_webhook()'s contract of one
 * row, when no row came). */
typedef void (*store_webhook_fn)(void *ctx, const struct store_err *e,
                                 const struct store_webhook_result *r);
int store_webhook_apply(struct pg_pool *pg, const struct store_webhook *w, store_webhook_fn cb,
                        void *ctx);

#endif
