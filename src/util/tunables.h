/*
 * tunables.h — the timings the daemon waits on that are not configuration
 * keys, in one place.
 *
 * Owns: struct co_tunables and its one instance, co_tunables, holding the
 * production values.  The code reads these fields instead of compile-time
 * constants, so that the test build (t/callorchd-testhooks, compiled with
 * CALLORCH_TEST_HOOKS) can shorten them from the environment
 * (CALLORCH_TEST_<NAME>, in seconds; see callorchd.c) and the tests need
 * not sleep through production delays.  callorchd never changes them.
 * Set before the first fork; children inherit them.
 */
#ifndef CO_TUNABLES_H
#define CO_TUNABLES_H

struct co_tunables {
    /* s; a call handed to Kafka is not published again for this long,
     * unless a consumer parks it first (published_at cleared) */
    double republish_grace;
    /* s; first delay before respawning a child that exited early; it then
     * doubles up to respawn_max; a child that stayed up respawn_stable
     * seconds resets it */
    double respawn_min;
    double respawn_max;
    double respawn_stable;
    /* s; a slot lease outlives the reclaim deadline (call_timeout) by this
     * much, so the scheduler's reclaim, not the expiry, normally frees it */
    double lease_margin;
    /* s; the PostgreSQL pools: how long a job may wait for a connection,
     * and the cap of the doubling reconnect backoff */
    double pg_queue_timeout;
    double pg_backoff_max;
    /* s; the cap of the Redis client's doubling reconnect backoff */
    double redis_backoff_max;
};

extern struct co_tunables co_tunables;

#endif
