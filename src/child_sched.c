/*
 * child_sched.c — the scheduler child: one per daemon, ticks every
 * [dispatch] scheduler_interval.
 *
 * Owns the tick.  The work done on a tick (publishing due calls, reclaiming
 * stuck ones, reconciling Redis) belongs to the dispatch modules.
 */
#include <stdlib.h>

#include "child.h"
#include "log.h"

struct sched_state {
    struct child_ctx *ctx;
    ev_timer tick;
    unsigned long ticks;
};

static void on_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct sched_state *st = w->data;
    st->ticks++;
    co_debug("scheduler tick", "tick=%lu", st->ticks);
}

static int sched_start(struct child_ctx *ctx, void **state)
{
    struct sched_state *st = calloc(1, sizeof(*st));
    if (st == NULL)
        return 1;
    st->ctx = ctx;
    ev_timer_init(&st->tick, on_tick, ctx->cfg->scheduler_interval, ctx->cfg->scheduler_interval);
    st->tick.data = st;
    ev_timer_start(ctx->loop, &st->tick);
    *state = st;
    child_notify_ready(ctx);
    return 0;
}

static void sched_stop(void *state, struct child_ctx *ctx)
{
    struct sched_state *st = state;
    ev_timer_stop(ctx->loop, &st->tick);
    child_done(ctx);
}

static void sched_cleanup(void *state)
{
    free(state);
}

const struct child_ops child_sched_ops = {
    .start = sched_start,
    .stop = sched_stop,
    .cleanup = sched_cleanup,
};
