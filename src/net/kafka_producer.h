/*
 * kafka_producer.h — an idempotent librdkafka producer on a libev loop.
 *
 * Owns: the rd_kafka_t producer of one child (http children publish new
 * calls, the scheduler republishes due ones), delivery reports delivered on
 * the loop through the main queue's event fd, and an orderly flush on stop.
 * Producing never blocks and never fails a caller because the brokers are
 * down: the message waits in librdkafka's queue until message.timeout.ms,
 * and PostgreSQL (not Kafka) remains the source of truth.
 */
#ifndef CO_KAFKA_PRODUCER_H
#define CO_KAFKA_PRODUCER_H

#include <stddef.h>

#include <ev.h>

#include "util/config.h"

struct kafka_producer;

/* Delivery report: ERR is NULL when the brokers acknowledged the message. */
typedef void (*kafka_delivery_fn)(void *arg, const char *err);

struct kafka_producer *kafka_producer_new(struct ev_loop *loop, const struct co_config *cfg,
                                          char *err, size_t errlen);

/*
 * Queue VALUE with KEY (the phone number: one partition per number keeps a
 * number's messages in order) on [kafka] topic.  Returns 0 (DONE, if not
 * NULL, runs once with the delivery report) or -1 when librdkafka refused it
 * at once (queue full); DONE is not called then.
 */
int kafka_producer_send(struct kafka_producer *kp, const char *key, const char *value, size_t len,
                        kafka_delivery_fn done, void *arg);

/* Messages queued or in flight. */
int kafka_producer_pending(const struct kafka_producer *kp);

/* Wait (on the loop) for pending messages, at most TIMEOUT seconds, then
 * call DONE(ARG). */
void kafka_producer_flush(struct kafka_producer *kp, double timeout, void (*done)(void *),
                          void *arg);

void kafka_producer_free(struct kafka_producer *kp);

/* The {"id":…,"attempt":…} message of DESIGN.md section 3; returns the length
 * written to BUF (always NUL-terminated), or -1 when BUF is too small. */
int kafka_call_message(char *buf, size_t size, const char *call_id, int attempt);

#endif
