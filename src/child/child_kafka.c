/*
 * child_kafka.c — a Kafka child: a consumer-group member that dispatches
 * the calls it is handed (dispatch.c does the work).
 *
 * Owns the wiring of one Kafka worker on the child's loop and its orderly
 * stop: finish in-flight attempts, commit, leave the group.
 */
#include <stdlib.h>

#include "child/child.h"
#include "dispatch/dispatch.h"
#include "util/log.h"

struct kafka_state {
    struct child_ctx *ctx;
    struct dispatcher *dispatcher;
};

static int kafka_start(struct child_ctx *ctx, void **state)
{
    char err[512];
    struct kafka_state *st = calloc(1, sizeof(*st));
    if (st == NULL)
        return 1;
    st->ctx = ctx;
    st->dispatcher = dispatcher_new(ctx->loop, ctx->cfg, err, sizeof(err));
    if (st->dispatcher == NULL) {
        co_error("cannot set up dispatch", "error=\"%s\"", err);
        free(st);
        return CHILD_EXIT_FATAL;
    }
    *state = st;
    child_notify_ready(ctx);
    return 0;
}

static void on_stopped(void *arg)
{
    struct kafka_state *st = arg;
    co_info("kafka consumer closed", NULL);
    child_done(st->ctx);
}

static void kafka_stop(void *state, struct child_ctx *ctx)
{
    struct kafka_state *st = state;
    dispatcher_stop(st->dispatcher, on_stopped, st);
}

static void kafka_cleanup(void *state)
{
    struct kafka_state *st = state;
    dispatcher_free(st->dispatcher);
    free(st);
}

const struct child_ops child_kafka_ops = {
    .start = kafka_start,
    .stop = kafka_stop,
    .cleanup = kafka_cleanup,
};
