/*
 * attempt.c — the end of a dispatch attempt (attempt.h).
 *
 * Owns: the order of the end — signal, release, then settle or count — and
 * the logging of a release that failed.
 */
#include "dispatch/attempt.h"

#include <stdlib.h>
#include <string.h>

#include "dispatch/slots.h"
#include "util/log.h"
#include "util/shm.h"

struct settling {
    attempt_settled_fn done;
    void *ctx;
};

static void release_done(void *arg, int released, const char *err)
{
    const char *why = arg;
    if (err != NULL)
        co_warn("slot release failed; the lease will expire", "after=\"%s\" error=\"%s\"", why,
                err);
}

void attempt_release(struct redis_slots *redis, const char *call_id, int attempt,
                     const char *to, const char *owner, const char *why)
{
    /* WHY is a string literal: it outlives the asynchronous release */
    if (redis_slots_release(redis, owner, attempt, to, release_done, (void *)why) < 0)
        co_warn("slot release refused; the lease will expire", "call=%s attempt=%d after=\"%s\"",
                call_id, attempt, why);
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

int attempt_finished(struct pg_pool *pg, struct redis_slots *redis,
                     const struct attempt_end *end, attempt_settled_fn done, void *ctx)
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
