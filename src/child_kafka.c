/*
 * child_kafka.c — a Kafka child: a consumer-group member that dispatches
 * the calls it is handed.
 *
 * Owns the wiring of one Kafka worker: the consumer on the child's loop and
 * the orderly stop (finish in-flight work, commit, leave the group).
 */
#include <stdlib.h>

#include "child.h"
#include "kafka_consumer.h"
#include "log.h"

struct kafka_state {
    struct child_ctx *ctx;
    struct kafka_consumer *consumer;
};

static void on_message(const rd_kafka_message_t *msg, void *arg)
{
    co_debug("kafka message", "partition=%d offset=%lld bytes=%zu", (int)msg->partition,
             (long long)msg->offset, msg->len);
}

static int kafka_start(struct child_ctx *ctx, void **state)
{
    char err[512];
    struct kafka_state *st = calloc(1, sizeof(*st));
    if (st == NULL)
        return 1;
    st->ctx = ctx;
    st->consumer = kafka_consumer_new(ctx->loop, ctx->cfg, on_message, st, err, sizeof(err));
    if (st->consumer == NULL) {
        co_error("cannot create kafka consumer", "error=\"%s\"", err);
        free(st);
        return CHILD_EXIT_FATAL;
    }
    *state = st;
    child_notify_ready(ctx);
    return 0;
}

static void on_closed(void *arg)
{
    struct kafka_state *st = arg;
    co_info("kafka consumer closed", NULL);
    child_done(st->ctx);
}

static void kafka_stop(void *state, struct child_ctx *ctx)
{
    struct kafka_state *st = state;
    kafka_consumer_close(st->consumer, on_closed, st);
}

static void kafka_cleanup(void *state)
{
    struct kafka_state *st = state;
    kafka_consumer_free(st->consumer);
    free(st);
}

const struct child_ops child_kafka_ops = {
    .start = kafka_start,
    .stop = kafka_stop,
    .cleanup = kafka_cleanup,
};
