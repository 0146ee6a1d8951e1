/*
 * attempt.c — the end of a dispatch attempt (attempt.h).
 *
 * Owns: the order of the end — signal, release, then settle or count.  A
 * release that gets no answer is retried by slots.c
 * (redis_slots_release_retried()), not dropped.
 */
#include "dispatch/attempt.h"

#include <stdlib.h>
#include <string.h>

#include "dispatch/slots.h"
#include "util/config.h"
#include "util/log.h"
#include "util/shm.h"
#include "util/timeutil.h"

struct settling {
    attempt_settled_fn done;
    void *ctx;
};

void attempt_release(struct redis_slots *redis, const char *call_id, int attempt, const char *to,
                     const char *owner, const char *why)
{
    /* an unanswered release is not a "no": slots.c sends it again until
     * Redis answers; the scheduler's reconcile covers what a dead process
     * held.  WHY is a string literal: it outlives the asynchronous release */
    (void)call_id;
    redis_slots_release_retried(redis, owner, attempt, to, why);
}

long long attempt_retry_ms(const struct co_config *cfg, const char *outcome)
{
    int o = co_outcome_from_status(outcome);
    if (o < 0)
        return STORE_RETRY_BACKOFF;
    double rule = co_retry_rule(cfg, (enum co_outcome)o);
    if (rule < 0) /* CO_RETRY_NEVER */
        return STORE_RETRY_NEVER;
    if (rule <= 0) /* CO_RETRY_BACKOFF; a fixed delay is at least 1 s (config.c) */
        return STORE_RETRY_BACKOFF;
    return co_ms(rule);
}

static void count_status(const char *status)
{
    if (status != NULL && strcmp(status, "PENDING") == 0)
        shm_count(CNT_RETRIES_SCHEDULED);
}

static void settled(void *arg, const struct store_err *e, const char *status)
{
    struct settling *s = arg;
    count_status(status);
    s->done(s->ctx, e, status);
    free(s);
}

int attempt_finished(struct pg_pool *pg, struct redis_slots *redis, const struct attempt_end *end,
                     attempt_settled_fn done, void *ctx)
{
    /* the signal moves before Redis hears of the release: the scheduler
     * looks one poll later, when Redis has it (scheduler.c) */
    shm_slot_freed();
    attempt_release(redis, end->call_id, end->attempt, end->to, end->owner, end->noticed_by);
    if (end->status != NULL) {
        count_status(end->status);
        return 0;
    }
    struct settling *s = malloc(sizeof(*s));
    if (s == NULL)
        return -1;
    s->done = done;
    s->ctx = ctx;
    if (store_attempt_settle(pg, end->settle, settled, s) < 0) {
        free(s);
        return -1;
    }
    return 0;
}
