/*
 * scheduler.h — the work of the sched child on every tick (DESIGN.md
 * section 3 step 5).
 *
 * Owns, for one daemon: holding the cluster-wide scheduler lease in Redis
 * (several daemons may share one PostgreSQL, Redis and Kafka; only the
 * lease holder works, and the row locks below make a double tick harmless
 * anyway), rebuilding Redis's slot set from PostgreSQL when Redis lost it,
 * restarted or failed over, kicking the reconcile (reconcile.h) and the
 * retention (retention.h), the expiry sweep (PENDING calls past their
 * expiresAt end EXPIRED, a bounded batch a tick),
 * reclaiming IN_PROGRESS calls with no webhook after [dispatch]
 * call_timeout, and publishing due PENDING calls — parked ones, retries
 * whose time came, and any that never reached Kafka — up to the free
 * capacity, oldest first.
 */
#ifndef CO_SCHEDULER_H
#define CO_SCHEDULER_H

#include <ev.h>

#include "util/config.h"

struct scheduler;

/* How often the sched child looks whether a slot was freed in this daemon
 * (then it ticks at once, see on_wake_poll()); s.  Not when
 * scheduler_interval is this short already. */
#define SCHED_WAKE_POLL 0.02

/* At most this many calls are reclaimed or published per tick. */
#define SCHED_MAX_BATCH 1000

struct scheduler *scheduler_new(struct ev_loop *loop, const struct co_config *cfg, char *err,
                                size_t errlen);

/* Finish the tick in flight, give up the lease, flush Kafka, then DONE. */
void scheduler_stop(struct scheduler *s, void (*done)(void *), void *arg);

void scheduler_free(struct scheduler *s);

#endif
