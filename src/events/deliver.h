/*
 * deliver.h — client event delivery (DESIGN.md section 10), run by the
 * events child.
 *
 * Owns: claiming events from the outbox, sending each one as a signed
 * Standard Webhooks POST to its URL, and recording the results with the
 * retry schedule; the pending gauge; the events_settings switch that tells
 * the outbox trigger whether [events] url is set.  The outbox rows are
 * written by the trigger of sql/016_events.sql in the transaction of each
 * state change, so the dispatch path never waits for a delivery.
 *
 *   outbox row (pending, due)
 *     │ claim: first pending event of its call, lease = timeout + margin
 *     ▼
 *   POST url  (webhook-id evt_<seq>, webhook-timestamp, webhook-signature)
 *     ├─ 2xx ───────────────► delivered
 *     └─ other / timeout ───► pending, next try after 1 s × 2^(attempts−1)
 *                             (≤ 5 min); failed once past created + max_age
 *
 * At most DELIVER_MAX_IN_FLIGHT events are in flight at once, each of its
 * own call: a receiver that never answers holds one of them for at most
 * [events] timeout per try, and the other calls' events go on.
 */
#ifndef CO_EVENTS_DELIVER_H
#define CO_EVENTS_DELIVER_H

#include <ev.h>
#include <stddef.h>

#include "util/config.h"

#define DELIVER_MAX_IN_FLIGHT 64

struct deliverer;

/* Set up on LOOP with CFG (which must outlive it); starts claiming at once.
 * NULL with a message in ERR when the setup failed (a bad conninfo, no
 * memory): an unreachable database is not an error, it is retried. */
struct deliverer *deliverer_new(struct ev_loop *loop, const struct co_config *cfg, char *err,
                                size_t errlen);

/* Claim nothing more; call DONE(ARG) once the tries in flight ended and
 * their results were recorded (or could not be: their leases expire). */
void deliverer_stop(struct deliverer *d, void (*done)(void *arg), void *arg);

void deliverer_free(struct deliverer *d);

#endif
