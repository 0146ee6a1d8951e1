/*
 * child_sched.c — the scheduler child: one per daemon; scheduler.c does
 * the work of each tick.
 *
 * Owns the wiring of the scheduler on the child's loop and its stop.
 */
#include <stdlib.h>

#include "child/child.h"
#include "dispatch/scheduler.h"
#include "util/log.h"

struct sched_state {
    struct child_ctx *ctx;
    struct scheduler *scheduler;
};

static int sched_start(struct child_ctx *ctx, void **state)
{
    char err[512];
    struct sched_state *st = calloc(1, sizeof(*st));
    if (st == NULL)
        return 1;
    st->ctx = ctx;
    st->scheduler = scheduler_new(ctx->loop, ctx->cfg, err, sizeof(err));
    if (st->scheduler == NULL) {
        co_error("cannot set up the scheduler", "error=\"%s\"", err);
        free(st);
        return CHILD_EXIT_FATAL;
    }
    *state = st;
    child_notify_ready(ctx);
    return 0;
}

static void on_stopped(void *arg)
{
    struct sched_state *st = arg;
    child_done(st->ctx);
}

static void sched_stop(void *state, struct child_ctx *ctx)
{
    struct sched_state *st = state;
    scheduler_stop(st->scheduler, on_stopped, st);
}

static void sched_cleanup(void *state)
{
    struct sched_state *st = state;
    scheduler_free(st->scheduler);
    free(st);
}

const struct child_ops child_sched_ops = {
    .start = sched_start,
    .stop = sched_stop,
    .cleanup = sched_cleanup,
};
