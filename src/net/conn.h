/*
 * conn.h — what the connection state machines of net/pg_pool.c and
 * net/redis.c have in common.
 *
 * Owns: the health a client shows its callers (CONNECTING, UP, DOWN) and the
 * rule that derives it, and the reconnect backoff (backoff_min doubling up
 * to backoff_max, jittered).  Each client keeps its own per-connection
 * phases (libpq's connect polling and hiredis's handshake differ) and its
 * own timers; it asks this module how long to wait and whether its health
 * changed.
 */
#ifndef CO_CONN_H
#define CO_CONN_H

#include <stdbool.h>
#include <stdint.h>

enum conn_health {
    CONN_HEALTH_CONNECTING, /* no connection made yet and none failed:
                               requests wait for the first one */
    CONN_HEALTH_UP,         /* a connection is ready */
    CONN_HEALTH_DOWN        /* none ready and the last attempt failed:
                               requests are refused until one is back */
};

struct conn_status {
    enum conn_health health; /* zero: CONNECTING */
    bool failed;             /* an attempt failed since the last success */
};

/*
 * Derive S->health from READY (a connection is usable now) and S->failed.
 * True when it changed: the caller logs and acts on a transition only, so a
 * server that stays away is reported once, not on every retry.
 */
bool conn_status_update(struct conn_status *s, bool ready);

struct conn_backoff {
    double min, max; /* s: the first delay, the cap of the doubling */
    double last;     /* the last delay before jitter; 0 after a success */
    uint32_t rnd;    /* jitter state (xorshift32), never 0 */
};

void conn_backoff_init(struct conn_backoff *b, double min, double max);

/* The wait before the next attempt: min after a success, else twice the
 * last, at most max, times a jitter in [50 %, 100 %] so that many processes
 * do not reconnect in step. */
double conn_backoff_next(struct conn_backoff *b);

/* A connection succeeded: the next wait starts again from min. */
void conn_backoff_reset(struct conn_backoff *b);

#endif
