/*
 * dispatch.h — what a Kafka child does with each message (DESIGN.md
 * section 3, steps 2 and 3).
 *
 * Owns the life of one dispatch attempt: load the call, skip it unless it is
 * a due PENDING call of the message's attempt, take a global slot and the
 * phone's lock in Redis, move the call to IN_PROGRESS with a conditional
 * update (the step that makes a redelivered message harmless: only one
 * process can move attempt N out of PENDING), commit the offset, start the
 * call at the provider, and record what the provider said — the provider's
 * call id, or a retry with backoff / a failure, releasing slot and lock.
 * A call that finds no slot or lock is parked: it stays PENDING in
 * PostgreSQL with published_at cleared, so the scheduler publishes it again.
 */
#ifndef CO_DISPATCH_H
#define CO_DISPATCH_H

#include <ev.h>

#include "util/config.h"

struct dispatcher;

/* Messages a child works on at once before it stops taking more. */
#define DISPATCH_MAX_IN_FLIGHT 2000

struct dispatcher *dispatcher_new(struct ev_loop *loop, const struct co_config *cfg, char *err,
                                  size_t errlen);

/* Stop taking messages, finish every attempt in flight (provider answers
 * recorded, offsets committed), leave the group, then DONE(ARG). */
void dispatcher_stop(struct dispatcher *d, void (*done)(void *), void *arg);

void dispatcher_free(struct dispatcher *d);

#endif
