/*
 * campaigns.h — the statements of the campaign API and of dead-letter
 * replay (DESIGN.md section 10).
 *
 * Owns: the SQL text that creates a campaign with its calls, adds calls,
 * reads, lists and changes the status of campaigns, lists a campaign's
 * calls, and puts dead letters back to PENDING (one, or in bulk), with
 * their parameters and row decoding.  The work itself is in PL/pgSQL
 * (sql/017_campaign_api.sql): each request is one statement and one
 * round trip, and PostgreSQL renders the JSON the client gets.  The rules
 * of store.h apply.
 */
#ifndef CO_STORE_CAMPAIGNS_H
#define CO_STORE_CAMPAIGNS_H

#include <stdint.h>

#include "net/pg_pool.h"
#include "store/calls.h"
#include "store/store.h"

struct list_query;
struct retry_input;

/* What a campaign statement answered: KIND, and the JSON the client gets
 * (BODY.text NULL when none). */
enum store_op_kind {
    STORE_OP_OK,           /* done: BODY is the answer */
    STORE_OP_NOT_FOUND,    /* no such campaign or call */
    STORE_OP_FINAL,        /* the campaign is FINISHED or CANCELLED: BODY is it */
    STORE_OP_REPLAYED,     /* same Idempotency-Key and body: BODY as first answered */
    STORE_OP_KEY_CONFLICT, /* same Idempotency-Key, another body */
    STORE_OP_NOT_DEAD,     /* retry: the call is not FAILED, EXPIRED or SUPPRESSED */
    STORE_OP_LISTED,       /* retry: its number is on the do-not-call list */
    STORE_OP_CANCELLED,    /* retry: its campaign is CANCELLED */
    STORE_OP_BAD_SCHEDULE  /* retry: expiresAt would not be after notBefore */
};

struct store_op {
    enum store_op_kind kind;
    struct store_json body;
};

/* OP is NULL when E != NULL. */
typedef void (*store_op_fn)(void *ctx, const struct store_err *e, const struct store_op *op);

/* Create a campaign: SETTINGS is a JSON object of its columns (see
 * campaign_create()), CALLS the valid items as input rows, REJECTED the
 * invalid ones' entries; KEY and HASH the Idempotency-Key (NULL: none). */
int store_campaign_create(struct pg_pool *pg, const char *settings, const char *calls,
                          const char *rejected, int max_attempts, const char *key, const char *hash,
                          store_op_fn cb, void *ctx);

/* The defaults a campaign gives the calls added to it. */
struct store_campaign_defaults {
    const char *status;
    const char *script_id;
    const char *window_json; /* NULL: none */
    int64_t not_before_us;   /* 0: none */
    int64_t expires_at_us;   /* 0: none */
    int priority;
};
/* D is NULL when no campaign has that id (or E != NULL). */
typedef void (*store_defaults_fn)(void *ctx, const struct store_err *e,
                                  const struct store_campaign_defaults *d);
int store_campaign_defaults(struct pg_pool *pg, const char *id, store_defaults_fn cb, void *ctx);

int store_campaign_add_calls(struct pg_pool *pg, const char *id, const char *calls,
                             const char *rejected, int max_attempts, store_op_fn cb, void *ctx);

int store_campaign_get(struct pg_pool *pg, const char *id, store_op_fn cb, void *ctx);

/* ACTION: "pause", "resume" or "cancel". */
int store_campaign_set_status(struct pg_pool *pg, const char *id, const char *action,
                              store_op_fn cb, void *ctx);

/* A page of campaigns (CAMPAIGN_ID NULL) or of one campaign's calls,
 * newest first, keyset by Q's cursor.  FOUND 0: no such campaign. */
typedef void (*store_cpage_fn)(void *ctx, const struct store_err *e, int found,
                               const struct store_page *page);
int store_campaigns_list(struct pg_pool *pg, const char *campaign_id, const struct list_query *q,
                         store_cpage_fn cb, void *ctx);

/* Replay one dead letter (R: maxAttempts, notBefore, expiresAt). */
int store_call_retry(struct pg_pool *pg, const char *id, const struct retry_input *r,
                     int default_attempts, store_op_fn cb, void *ctx);

/* Replay in bulk: N is how many. */
typedef void (*store_count_fn)(void *ctx, const struct store_err *e, long long n);
int store_calls_retry_bulk(struct pg_pool *pg, const struct retry_input *r, int default_attempts,
                           store_count_fn cb, void *ctx);

#endif
