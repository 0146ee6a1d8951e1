/*
 * retention.h — the scheduler deletes what [retention] says is old enough
 * (DESIGN.md section 6): processed webhook ids, idempotency keys and, when
 * finished_calls is set, terminal calls with their attempts.
 *
 * Owns: which table is pruned when, in batches of RETENTION_BATCH rows, one
 * statement at a time, so that dispatch never waits for a large delete.
 * The statements are store/sched.c's.
 */
#ifndef CO_RETENTION_H
#define CO_RETENTION_H

#include <ev.h>

#include "net/pg_pool.h"
#include "util/config.h"

struct retention;

/* Rows per DELETE. */
#define RETENTION_BATCH 1000

struct retention *retention_new(struct ev_loop *loop, const struct co_config *cfg,
                                struct pg_pool *pg);

/* From the scheduler's tick (leader only): send the next batch when none
 * is in flight.  A table whose last batch was short is caught up and is
 * looked at again after [dispatch] reconcile_interval. */
void retention_kick(struct retention *rt);

/* Free after the pool it uses was freed. */
void retention_free(struct retention *rt);

#endif
