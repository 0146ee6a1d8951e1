/*
 * events.h — the client events outbox (DESIGN.md section 10): its
 * statements.
 *
 * Owns: the SQL that claims deliverable events (the first pending event of
 * each call, due, not leased by anyone), records the results of a batch of
 * tries with the retry schedule, counts what is pending, writes the
 * events_settings switch the outbox trigger reads, and lists one call's
 * events for GET /api/v1/calls/{id}/events.  The outbox rows themselves are
 * written by the trigger of sql/016_events.sql, in the transaction of the
 * state change.  The rules of store.h apply.
 */
#ifndef CO_STORE_EVENTS_H
#define CO_STORE_EVENTS_H

#include <stdbool.h>
#include <stddef.h>

#include "net/pg_pool.h"
#include "store/store.h"

/* One claimed event.  Strings live during the callback only. */
struct store_event {
    long long seq;
    const char *call_id; /* NULL for an event without a call (campaign.finished) */
    const char *type;
    const char *payload; /* the POST body, exactly as stored */
    size_t payload_len;
    const char *url;  /* NULL: [events] url */
    int attempts;     /* counting this try */
    double created_s; /* unix seconds */
};

typedef void (*store_events_claim_fn)(void *ctx, const struct store_err *e,
                                      const struct store_event *ev, int n);

/*
 * Claim at most LIMIT events: the first pending event of each call whose
 * next_try_at has come, oldest due first.  Each claimed row gets a lease:
 * next_try_at moves LEASE_S seconds ahead (so no one, in this daemon or
 * another, claims it or a later event of its call meanwhile), attempts + 1
 * and last_try_at now.  A deliverer that dies leaves the lease to expire:
 * the event is tried again (at-least-once).
 */
int store_events_claim(struct pg_pool *pg, int limit, double lease_s, store_events_claim_fn cb,
                       void *ctx);

/* The outcome of one try. */
struct store_event_result {
    long long seq;
    int attempts;      /* the claim's count: a stale result (the event was
                       claimed again since) changes nothing */
    bool delivered;    /* 2xx */
    int status;        /* HTTP status; 0: none came */
    const char *error; /* NULL when delivered */
};

/* How a failed try is retried: BASE_S × 2^(attempts−1), at most MAX_S; an
 * event whose next try would come after created_at + MAX_AGE_S fails. */
struct store_event_retry {
    double base_s, max_s, max_age_s;
};

/* Record the N results R in one statement; only rows still pending and
 * not claimed again change.  FAILED is how many of them ran out of time. */
typedef void (*store_events_finish_fn)(void *ctx, const struct store_err *e, int failed);
int store_events_finish(struct pg_pool *pg, const struct store_event_result *r, int n,
                        const struct store_event_retry *retry, store_events_finish_fn cb,
                        void *ctx);

/* The events pending now (for the gauge). */
typedef void (*store_events_count_fn)(void *ctx, const struct store_err *e, long long n);
int store_events_pending(struct pg_pool *pg, store_events_count_fn cb, void *ctx);

/* Tell the outbox trigger whether [events] url is set. */
int store_events_settings(struct pg_pool *pg, bool default_url_set, store_done_fn cb, void *ctx);

/* GET /api/v1/calls/{id}/events: DOC is the JSON array, NULL when no such
 * call (or E != NULL). */
struct store_events_doc {
    const char *text;
    size_t len;
};
typedef void (*store_events_list_fn)(void *ctx, const struct store_err *e,
                                     const struct store_events_doc *doc);
int store_events_list(struct pg_pool *pg, const char *call_id, store_events_list_fn cb, void *ctx);

#endif
