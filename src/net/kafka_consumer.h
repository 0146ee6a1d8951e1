/*
 * kafka_consumer.h — a librdkafka consumer-group member on a libev loop.
 *
 * Owns the rd_kafka_t consumer, its configuration ([kafka] keys plus the
 * rdkafka.* pass-through), the queue event fd that wakes the loop, the
 * rebalance and error logging, and a non-blocking close.  Offsets are
 * committed only by the caller (enable.auto.commit=false): a message counts
 * as handled when its owner says so.
 */
#ifndef CO_KAFKA_CONSUMER_H
#define CO_KAFKA_CONSUMER_H

#include <ev.h>
#include <librdkafka/rdkafka.h>

#include "util/config.h"

struct kafka_consumer;

/* Called for each message; the consumer destroys MSG after it returns. */
typedef void (*kafka_message_fn)(const rd_kafka_message_t *msg, void *arg);

/* Create and subscribe.  Returns NULL with a message in err (a config the
 * library rejects: a fatal setup error). */
struct kafka_consumer *kafka_consumer_new(struct ev_loop *loop, const struct co_config *cfg,
                                          kafka_message_fn on_message, void *arg, char *err,
                                          size_t errlen);

/* Commit OFFSET (the next message to read) of PARTITION asynchronously. */
void kafka_consumer_commit(struct kafka_consumer *kc, int32_t partition, int64_t offset);

/* Stop (1) or resume (0) handing messages to the callback; librdkafka keeps
 * fetching into its bounded queue meanwhile.  For backpressure and pause. */
void kafka_consumer_pause(struct kafka_consumer *kc, int paused);

/* FN(ARG, partition) runs for each partition taken away by a rebalance. */
void kafka_consumer_on_revoke(struct kafka_consumer *kc, void (*fn)(void *, int32_t), void *arg);

/* Leave the group without blocking the loop; DONE runs once closed. */
void kafka_consumer_close(struct kafka_consumer *kc, void (*done)(void *), void *arg);

void kafka_consumer_free(struct kafka_consumer *kc);

/* Apply [kafka] and rdkafka.* settings to CONF; 0 or -1 with err. */
int kafka_conf_apply(rd_kafka_conf_t *conf, const struct co_config *cfg, char *err, size_t errlen);

#endif
