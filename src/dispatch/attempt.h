/*
 * attempt.h — the end of a dispatch attempt, wherever it is noticed.
 *
 * Owns: the one path an attempt takes when it is over — the provider did
 * not start the call (dispatch.c), the provider's webhook said how it ended
 * (api_webhook.c), or no webhook came within call_timeout (scheduler.c):
 * settle it in PostgreSQL (unless the statement that noticed the end did
 * that already), release its slot and phone lock in Redis, and count it:
 * a planned retry in the metrics, the freed slot in the signal the
 * scheduler watches (shm_slot_freed()).  Also owns how long a slot's lease
 * outlives the call's timeout, and which [retry] rule an outcome gets.
 */
#ifndef CO_ATTEMPT_H
#define CO_ATTEMPT_H

#include "net/pg_pool.h"
#include "store/attempts.h"

struct redis_slots;
struct co_config;

/* An attempt that is over. */
struct attempt_end {
    const char *call_id;
    int attempt;
    const char *to;                    /* the phone locked for it */
    const char *owner;                 /* the lease token of its slot */
    const char *noticed_by;            /* for logs: "webhook", "reclaim", "provider answer" */
    const char *status;                /* the call's status once settled (PENDING: a
                                          retry is planned); NULL: settle it now */
    const struct store_settle *settle; /* how, when status is NULL */
};

/* The attempt is settled (STATUS as in store_settled_fn). */
typedef void (*attempt_settled_fn)(void *ctx, const struct store_err *e, const char *status);

/*
 * Finish attempt END: release its slot and phone lock, count it, and
 * settle it in PostgreSQL when END->status is NULL.  Settled already: the
 * whole work is done on return, 0, and DONE is not used.  Settling now:
 * 0 and DONE(CTX, …) runs later, exactly once; or -1 when the pool refused
 * the statement at once (DONE is not called; pg_pool_error() says why).
 */
int attempt_finished(struct pg_pool *pg, struct redis_slots *redis, const struct attempt_end *end,
                     attempt_settled_fn done, void *ctx);

/*
 * The [retry] rule of CFG for an attempt that ended with OUTCOME (a webhook
 * or status lookup status, or "TIMEOUT"), as settle_attempt() takes it:
 * STORE_RETRY_NEVER, STORE_RETRY_BACKOFF or a delay in ms.  COMPLETED and
 * anything [retry] has no rule for: STORE_RETRY_BACKOFF.  Read at settle
 * time from the running config (a reload respawns the children with the
 * new one), never from a copy.
 */
long long attempt_retry_ms(const struct co_config *cfg, const char *outcome);

/* Release a slot and phone lock that no finished attempt holds (a job that
 * lost the race to start its call).  A release with no answer is retried
 * (slots.h, redis_slots_release_retried()); the reconcile covers the rest. */
void attempt_release(struct redis_slots *redis, const char *call_id, int attempt, const char *to,
                     const char *owner, const char *why);

#endif
