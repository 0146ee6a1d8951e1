/*
 * retention.c — pruning old rows, a batch per tick (retention.h).
 *
 * Owns: the round over the three kinds of rows and each kind's next due
 * time.  Each tick sends at most one DELETE of at most RETENTION_BATCH
 * rows (the next kind that is due, in turn); a full batch keeps its kind
 * due at once, so a backlog drains at one batch per tick while dispatch
 * goes on between them.
 */
#include "dispatch/retention.h"

#include <stdlib.h>

#include "store/sched.h"
#include "util/log.h"
#include "util/timeutil.h"

#define N_KINDS 3

static const char *const KIND_NAME[N_KINDS] = {
    [STORE_PRUNE_WEBHOOK_EVENTS] = "webhook_events",
    [STORE_PRUNE_IDEMPOTENCY_KEYS] = "idempotency_keys",
    [STORE_PRUNE_FINISHED_CALLS] = "finished_calls",
};

struct retention {
    struct ev_loop *loop;
    const struct co_config *cfg;
    struct pg_pool *pg;
    int busy;               /* a DELETE is in flight */
    int next;               /* the kind to look at first */
    ev_tstamp due[N_KINDS]; /* ev_now() when the kind is looked at again */
};

/* [retention] for KIND in s; 0: keep forever. */
static double keep_for(const struct retention *rt, int kind)
{
    switch (kind) {
    case STORE_PRUNE_WEBHOOK_EVENTS: return rt->cfg->retain_webhook_events;
    case STORE_PRUNE_IDEMPOTENCY_KEYS: return rt->cfg->retain_idempotency_keys;
    default: return rt->cfg->retain_finished_calls;
    }
}

struct prune_job {
    struct retention *rt;
    int kind;
};

static void pruned(void *ctx, const struct store_err *e, int deleted)
{
    struct prune_job *j = ctx;
    struct retention *rt = j->rt;
    int kind = j->kind;
    free(j);
    rt->busy = 0;
    if (e != NULL) {
        co_warn("retention: delete failed; tried again later", "table=%s error=%s", KIND_NAME[kind],
                CO_LOG_Q(e->msg));
        rt->due[kind] = ev_now(rt->loop) + rt->cfg->reconcile_interval;
        return;
    }
    if (deleted > 0)
        co_info("retention: old rows deleted", "table=%s count=%d", KIND_NAME[kind], deleted);
    /* a full batch: more may be waiting, next tick; else caught up */
    rt->due[kind] = deleted >= RETENTION_BATCH ? 0 : ev_now(rt->loop) + rt->cfg->reconcile_interval;
}

void retention_kick(struct retention *rt)
{
    ev_tstamp now = ev_now(rt->loop);
    if (rt->busy)
        return;
    for (int i = 0; i < N_KINDS; i++) {
        int kind = (rt->next + i) % N_KINDS;
        double keep = keep_for(rt, kind);
        if (keep <= 0 || now < rt->due[kind])
            continue;
        struct prune_job *j = malloc(sizeof(*j));
        if (j == NULL)
            return;
        j->rt = rt;
        j->kind = kind;
        rt->next = (kind + 1) % N_KINDS;
        if (store_prune(rt->pg, kind, co_ms(keep), RETENTION_BATCH, pruned, j) < 0) {
            free(j);
            return;
        }
        rt->busy = 1;
        return;
    }
}

struct retention *retention_new(struct ev_loop *loop, const struct co_config *cfg,
                                struct pg_pool *pg)
{
    struct retention *rt = calloc(1, sizeof(*rt));
    if (rt == NULL)
        return NULL;
    rt->loop = loop;
    rt->cfg = cfg;
    rt->pg = pg;
    return rt;
}

void retention_free(struct retention *rt)
{
    free(rt);
}
