/*
 * child_events.c — the events child: one per daemon; events/deliver.c
 * delivers the client events (DESIGN.md section 10).
 *
 * Owns the wiring of the deliverer on the child's loop and its stop.
 * Several daemons sharing one database each run one: the claim keeps them
 * from delivering the same event at once (store/events.c).
 */
#include <stdlib.h>

#include "child/child.h"
#include "events/deliver.h"
#include "util/log.h"

struct events_state {
    struct child_ctx *ctx;
    struct deliverer *deliverer;
};

static int events_start(struct child_ctx *ctx, void **state)
{
    char err[512];
    struct events_state *st = calloc(1, sizeof(*st));
    if (st == NULL)
        return 1;
    st->ctx = ctx;
    st->deliverer = deliverer_new(ctx->loop, ctx->cfg, err, sizeof(err));
    if (st->deliverer == NULL) {
        co_error("cannot set up event delivery", "error=%s", CO_LOG_Q(err));
        free(st);
        return CHILD_EXIT_FATAL;
    }
    *state = st;
    child_notify_ready(ctx);
    return 0;
}

static void on_stopped(void *arg)
{
    struct events_state *st = arg;
    child_done(st->ctx);
}

static void events_stop(void *state, struct child_ctx *ctx)
{
    struct events_state *st = state;
    deliverer_stop(st->deliverer, on_stopped, st);
}

static void events_cleanup(void *state)
{
    struct events_state *st = state;
    deliverer_free(st->deliverer);
    free(st);
}

const struct child_ops child_events_ops = {
    .start = events_start,
    .stop = events_stop,
    .cleanup = events_cleanup,
};
