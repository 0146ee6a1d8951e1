/*
 * dispatch.h — what a Kafka child does with each message (DESIGN.md
 * section 3, steps 2 and 3).
 *
 * Owns the life of one dispatch attempt: load the call, skip it unless it is
 * a due PENDING call of the message's attempt, take a global slot and the
 * phone's lock in Redis, move the call to IN_PROGRESS with a conditional
 * update (the step that makes a redelivered message harmless: only one
 * process can move attempt N out of PENDING), commit the offset, start the
 * call at the provider (Idempotency-Key "<id>:<attempt>"), and record what
 * the provider said — the provider's call id; a retry with backoff / a
 * failure, releasing slot and lock, only for a refusal the provider
 * certainly answered; or, when the answer is unknown (DESIGN.md section 5),
 * the attempt marked as such, keeping slot and lock (lookup.h resolves it).
 * A start update whose answer was lost is re-read before anything is done.
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

/* Re-reads of a call after a start update whose answer was lost, and the
 * delay between two when the database does not answer. */
#define DISPATCH_REREADS 10
#define DISPATCH_REREAD_DELAY 1.0

struct dispatcher *dispatcher_new(struct ev_loop *loop, const struct co_config *cfg, char *err,
                                  size_t errlen);

/* Stop taking messages, finish every attempt in flight (provider answers
 * recorded, offsets committed), leave the group, then DONE(ARG). */
void dispatcher_stop(struct dispatcher *d, void (*done)(void *), void *arg);

void dispatcher_free(struct dispatcher *d);

#endif
