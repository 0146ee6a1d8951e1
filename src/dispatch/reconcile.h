/*
 * reconcile.h — Redis and PostgreSQL agree again (DESIGN.md section 3):
 * every [dispatch] reconcile_interval the leading scheduler compares the
 * slot leases and phone locks in Redis with the IN_PROGRESS rows, removes
 * what no IN_PROGRESS attempt owns (a release that was lost: Redis paused,
 * the process died) and restores what is missing (Redis restarted from an
 * older snapshot, a replica promoted before it had every write).
 *
 * Owns: one pass (its steps, batches and fence, see reconcile.c) and when
 * the next one is due.  The scripts are slots.c's, the statements
 * store/sched.c's; a Redis that lost everything or restarted is rebuilt by
 * the scheduler's tick before this runs (scheduler.c).
 */
#ifndef CO_RECONCILE_H
#define CO_RECONCILE_H

#include <ev.h>

#include "dispatch/slots.h"
#include "net/pg_pool.h"
#include "util/config.h"

struct reconcile;

/* Entries per Redis scan page, PostgreSQL read and Redis write. */
#define RECONCILE_BATCH 500

/* A lease or lock that no IN_PROGRESS row owns is removed only once it was
 * taken more than this long ago (s): a dispatch job takes its lease before
 * its IN_PROGRESS update commits, and that update can wait in the pool's
 * queue (queue_timeout 5 s) and run (query_timeout) before it commits. */
#define RECONCILE_MIN_AGE 30.0

struct reconcile *reconcile_new(struct ev_loop *loop, const struct co_config *cfg,
                                struct pg_pool *pg, struct redis_slots *redis);

/* From the scheduler's tick, while it leads with fencing token TOKEN:
 * start a pass when one is due and none is running (it runs on by itself,
 * batch after batch, without holding up the tick). */
void reconcile_kick(struct reconcile *rc, long long token);

/* A pass is running. */
int reconcile_busy(const struct reconcile *rc);

/* Free after the pool and the Redis client it uses were freed (their
 * callbacks end the pass in flight). */
void reconcile_free(struct reconcile *rc);

#endif
