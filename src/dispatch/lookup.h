/*
 * lookup.h — resolving attempts whose outcome at the provider is unknown
 * (DESIGN.md section 5, "Unknown outcomes").
 *
 * Owns: the status lookups of [provider] status_url and what follows from
 * their answer, for every open attempt that PostgreSQL marks as of unknown
 * outcome (call_attempts.outcome_unknown_since, sql/004_unknown_outcomes.sql):
 * the start answer was lost (dispatch.c marks it), or the attempt reached
 * call_timeout and the reclaim looks it up before giving it up
 * (scheduler.c marks it).  For each claimed attempt:
 *
 *   found, final     → settled as its webhook would (apply_webhook()), slot
 *                      and phone lock released
 *   found, live      → its callId recorded, its lease extended; past
 *                      call_timeout it is looked up again later
 *   404              → before call_timeout: the start is sent again with the
 *                      same Idempotency-Key (lease extended); past it:
 *                      reclaimed (TIMEOUT)
 *   no usable answer → nothing is given up, the lease is extended; looked
 *                      up again later
 *
 * Driven by the scheduler (the leader only), so there is one driver for
 * every daemon and an attempt's state survives the crash of the kafka child
 * that started it: PostgreSQL holds it, claims are row-locked (SKIP LOCKED)
 * and each attempt is claimed at most once per LOOKUP interval.  Nothing
 * here blocks: the claim is one pool statement, the lookups are curl_ev
 * requests, many in flight.
 */
#ifndef CO_LOOKUP_H
#define CO_LOOKUP_H

#include <ev.h>

#include "net/pg_pool.h"
#include "util/config.h"

struct redis_slots;
struct lookups;

/* Most attempts claimed per round. */
#define LOOKUP_MAX_BATCH 100

/* PG and REDIS are the scheduler's (borrowed).  NULL on failure (ERR). */
struct lookups *lookups_new(struct ev_loop *loop, const struct co_config *cfg, struct pg_pool *pg,
                            struct redis_slots *redis, char *err, size_t errlen);

/* 1 when [provider] status_url is set. */
int lookups_enabled(const struct lookups *l);

/* Claim the attempts due for a lookup and start them; returns at once.  A
 * round still claiming is not doubled. */
void lookups_run(struct lookups *l);

/* Lookups in flight fail first (nothing is changed for them). */
void lookups_free(struct lookups *l);

#endif
