/*
 * slots.h — the Redis side of dispatch (DESIGN.md section 3): global call
 * slots, per-phone locks, the rebuild marker and the scheduler's leader
 * lease, over the one non-blocking Redis connection of net/redis.h.
 *
 * Owns: the slot rules: the key layout below, the Lua scripts that keep
 * every state change atomic inside Redis (the reconcile's scan, drop and
 * restore included), what their answers mean, and the bounded queue that
 * sends a release again until Redis answers it.  The
 * connection itself (handshake, reconnect, timeouts, the request queue) is
 * net/redis.c's; the redis_slots_* names are kept from when both lived in
 * one file.
 *
 * Lease tokens.  A slot and a phone lock are held by a token
 * "<owner>:<attempt>", where OWNER is what the caller passes as CALL_ID: the
 * token of the dispatch job that took them (calls.slot_owner, "<call
 * id>.<pid>.<n>", see sql/002_dispatch.sql), or the bare call id for a call
 * without one.  Two jobs of one attempt (a redelivered message) thus hold
 * different tokens, and a release or an extend changes only the lease of the
 * token it names.
 *
 * Key layout (P = [redis] key_prefix, e.g. "callorch:"):
 *
 *   P slots          sorted set; member a lease token, score = lease expiry
 *                    in ms since the epoch by Redis's own clock (TIME inside
 *                    the scripts, so hosts with skewed clocks agree).  Slots
 *                    are LEASES, never a counter: a member whose score
 *                    passed is dropped by the next script that looks, so a
 *                    crashed process cannot leak a slot for longer than its
 *                    lease.
 *   P phone:<E.164>  string, the lease token, PX = the same lease; the lock
 *                    that keeps one call per phone number.
 *   P epoch          string "<ms>:<run_id>": when the last rebuild was, and
 *                    the run_id (INFO server) of the Redis it was made on.
 *                    Its absence means Redis lost its data (restart
 *                    without persistence, FLUSHALL, eviction); another
 *                    run_id means Redis restarted (maybe from a snapshot
 *                    older than the calls in progress) or a replica took
 *                    over.  Either way nothing new may start until the
 *                    scheduler rebuilt slots and locks from PostgreSQL.  A
 *                    brand-new Redis therefore needs one (empty) rebuild
 *                    before the first acquire succeeds.
 *   P freq:<E.164>   sorted set, only with a per-number attempt cap
 *                    ([compliance] max_attempts_per_number > 0): member a
 *                    lease token that took a slot for that number, score =
 *                    when (Redis's TIME, ms); members older than the
 *                    attempts_period are trimmed by the acquire that looks,
 *                    and the key expires a period after its newest member.
 *                    Checked and added to in the same script that takes the
 *                    slot and the lock, so concurrent acquires by any number
 *                    of processes never exceed the cap.
 *   P camp:<id>      set, only for a campaign with maxConcurrent: the
 *                    tokens of its calls that took a slot.  A member counts
 *                    while it holds a lease in P slots; the acquire that
 *                    reads the set drops the others.  So every path that
 *                    ends a lease (release, expiry, reconcile drop,
 *                    rebuild) frees the campaign's slot with it, and none
 *                    of them needs the campaign id.  The rebuild and the
 *                    restore add the IN_PROGRESS calls of such campaigns
 *                    (their scripts build these key names from the slot
 *                    set's: one Redis, not a cluster, as the reconcile's
 *                    scan already assumes).  A finished campaign's set
 *                    keeps at most maxConcurrent stale tokens.  A call
 *                    that took a slot but was not started still counts
 *                    in the pacing logs (errs towards fewer starts).
 *   P rate           sorted set, only with [provider] max_calls_per_second:
 *   P rate:camp:<id> and a campaign's callsPerSecond: the pacing logs,
 *                    member a token that took a slot, score = when (TIME,
 *                    ms), trimmed to the window by the acquire that looks,
 *                    expiring a window after the newest.  At most N members
 *                    in any window: N starts.
 *   P pause          string with PX: the provider answered 429 with
 *                    Retry-After; no acquire succeeds until it expires
 *                    (redis_slots_pause()).
 *   P leader         string, the scheduler owner id, PX = leader ttl.
 *   P leader:token   integer, the fencing token: incremented on every new
 *                    leadership (seeded from TIME in ms when missing, so it
 *                    still grows after Redis lost its data).
 *
 * Redis must run with maxmemory-policy noeviction (the Debian default):
 * evicting a phone key would drop a lock.
 *
 * Rules for callers (the same as pg_pool.h):
 *  - Every request function returns 0 when the request was accepted; then
 *    its callback is called exactly once, later, from the loop (never from
 *    inside the request function).  It returns -1 when the request was
 *    refused at once: Redis is down, too many requests are pending, the
 *    arguments are invalid, or the handle is being freed; the callback is
 *    not called and redis_slots_error() says why.  While the very first
 *    connection is still being made (CONNECTING), requests wait for it.
 *  - A callback gets err == NULL on success.  err != NULL (and value 0,
 *    SLOT_ERROR for acquire) when Redis answered with an error, when no
 *    answer came in time (the connection is then dropped and re-made), when
 *    the connection was lost, or when the handle was freed.  After an error
 *    the outcome in Redis is unknown: an acquire may have taken the slot
 *    (its lease ends it), a release may not have happened (same).
 *  - Every callback may be NULL (fire and forget, e.g. a release).
 *  - Callbacks may issue new requests; they must not call redis_slots_free().
 */
#ifndef CO_DISPATCH_SLOTS_H
#define CO_DISPATCH_SLOTS_H

#include <stddef.h>

#include <ev.h>

#include "net/redis.h"
#include "util/config.h"

struct redis_slots;

enum slot_result {
    SLOT_OK = 1,              /* slot and phone lock held (newly or again) */
    SLOT_NO_SLOT = 0,         /* all max_slots slots are in use */
    SLOT_PHONE_BUSY = -1,     /* another call holds this phone number */
    SLOT_NEEDS_REBUILD = -2,  /* the epoch marker is missing: Redis lost its
                                data; the scheduler must rebuild first */
    SLOT_ERROR = -3,          /* no answer; see err */
    SLOT_FREQUENCY = -4,      /* the number used its attempt budget for the
                                period (struct slot_cap): nothing taken */
    SLOT_CAMPAIGN_FULL = -5,  /* the campaign's maxConcurrent slots are in use */
    SLOT_PACED = -6,          /* a pacing window is full until free_at_ms */
    SLOT_PROVIDER_PAUSED = -7 /* the provider's 429 pause runs until free_at_ms */
};

/* The pacing window is this much longer than the rate says (ms): it absorbs
 * the spread between Redis's clock at the acquire and the start request's
 * arrival at the provider, so that the provider too never sees more than N
 * starts in any one second. */
#define SLOT_PACE_GUARD_MS 50

enum redis_slots_state {
    REDIS_SLOTS_CONNECTING, /* first connection not made yet, none failed:
                               requests wait for it */
    REDIS_SLOTS_UP,         /* connected and ready */
    REDIS_SLOTS_DOWN        /* the last attempt failed or the connection
                               was lost: requests are refused until it is
                               back (reconnecting in the background) */
};

/* One IN_PROGRESS call for redis_slots_rebuild(). */
struct slot_entry {
    const char *call_id; /* the owner of the lease token (above) */
    int attempt;
    const char *phone;       /* E.164 */
    double lease_s;          /* remaining lease; below 1 s counts as 1 s,
                          so a call past its timeout stays counted
                          until the scheduler reclaims it */
    const char *campaign_id; /* its campaign when that has maxConcurrent,
                                else NULL */
};

/* IN_USE: slots in use after the call (expired leases dropped). */
typedef void (*slot_acquire_cb)(void *arg, enum slot_result r, int in_use, const char *err);

/* What redis_slots_take() asks for: a slot among MAX_SLOTS and PHONE's lock
 * for the token "<CALL_ID>:<ATTEMPT>", as a lease of LEASE_S seconds; and,
 * when CAP > 0, at most CAP attempts to PHONE (all calls together) per
 * CAP_PERIOD_S seconds ([compliance] max_attempts_per_number per
 * attempts_period).  CAP 0: no cap, and no freq key is read or written.
 * CAMPAIGN_MAX > 0: at most that many slots for CAMPAIGN_ID's calls.
 * CALLS_PER_SECOND ([provider] max_calls_per_second) and CAMPAIGN_CPS
 * (CAMPAIGN_ID's callsPerSecond) > 0: at most that many starts in any
 * second (below 1: one per 1/rate s); 0: unpaced. */
struct slot_ask {
    const char *call_id;
    int attempt;
    const char *phone;
    int max_slots;
    double lease_s;
    int cap;
    double cap_period_s;
    const char *campaign_id; /* NULL: no campaign */
    int campaign_max;
    double calls_per_second;
    double campaign_cps;
};

/* The answer of redis_slots_take(). */
struct slot_grant {
    enum slot_result result;
    int in_use;           /* slots in use after the call */
    long long free_at_ms; /* SLOT_FREQUENCY: when (Redis's clock, ms since
                              the epoch) the oldest counted attempt leaves
                              the period; SLOT_PACED: when the window has
                              room; SLOT_PROVIDER_PAUSED: when the pause
                              ends; 0 otherwise */
};

typedef void (*slot_grant_cb)(void *arg, const struct slot_grant *g, const char *err);

/* VALUE: what the request function documents (0 when err != NULL). */
typedef void (*slot_done_cb)(void *arg, int value, const char *err);

/* IS_LEADER: 1 when OWNER holds the lease now; TOKEN: the fencing token of
 * the current leadership (0 when not leader). */
typedef void (*slot_leader_cb)(void *arg, int is_leader, long long token, const char *err);

/*
 * Create the handle and start connecting to [redis] host:port of CFG (the
 * values are copied; CFG may go away).  OPTS are the connection's
 * (redis_opts_init(), net/redis.h; its errors name this module whatever
 * OPTS->client says); NULL for the defaults.
 * Fails only for invalid options; an unreachable Redis is not an error here
 * (the handle keeps retrying).  A host name is resolved asynchronously
 * (getaddrinfo_a), so a slow DNS never blocks the loop either.
 */
struct redis_slots *redis_slots_new(struct ev_loop *loop, const struct co_config *cfg,
                                    const struct redis_opts *opts, char *err, size_t errlen);

/*
 * Disconnect.  Requests still queued or in flight get their callback with
 * err "redis_slots closed" first.  Not from inside a callback.
 */
void redis_slots_free(struct redis_slots *rs);

/*
 * Atomically take a global slot (at most MAX_SLOTS held at once across every
 * process sharing this Redis) and the lock of PHONE for the lease token
 * "<CALL_ID>:<ATTEMPT>", both as a lease of LEASE_S seconds.  Idempotent:
 * when that token already holds both (the same request made twice) the
 * answer is SLOT_OK again, no second slot is taken, and the lease is extended
 * (never shortened).
 */
int redis_slots_acquire(struct redis_slots *rs, const char *call_id, int attempt, const char *phone,
                        int max_slots, double lease_s, slot_acquire_cb cb, void *arg);

/*
 * redis_slots_acquire() with the per-number attempt cap of A, in the same
 * script.  What counts as an attempt: a token that got SLOT_OK is counted
 * from that moment; the dispatcher takes it out again with
 * redis_slots_release_unstarted() when its call was not started after all
 * (lost the race, suppressed, refused by start_attempt()).  Once
 * start_attempt() committed, the attempt counts for the whole period, even
 * when the provider then refused or failed the call: a dial was tried, and
 * counting it keeps a number whose provider keeps failing from being tried
 * over and over.  A token whose process died before it knew stays counted
 * (conservative: the cap errs towards fewer calls).  SLOT_FREQUENCY when
 * the cap is reached (checked before the slot: nothing is taken), with
 * free_at_ms.  Idempotent like redis_slots_acquire(): the same token again
 * is not counted twice.
 */
int redis_slots_take(struct redis_slots *rs, const struct slot_ask *a, slot_grant_cb cb, void *arg);

/*
 * Give back the slot of the token "<CALL_ID>:<ATTEMPT>" and PHONE's lock if
 * (and only if) that token holds them.  VALUE: 1 when something was
 * released, 0 when that token held nothing (already released, expired, or
 * never acquired).
 */
int redis_slots_release(struct redis_slots *rs, const char *call_id, int attempt, const char *phone,
                        slot_done_cb cb, void *arg);

/*
 * Renew the lease of the token "<CALL_ID>:<ATTEMPT>" to LEASE_S seconds from
 * now (slot and phone lock), for calls that run longer than their first
 * lease.  VALUE: 1 when renewed, 0 when that token no longer holds the slot
 * or another token holds the phone (the lease was lost; nothing is changed).
 */
int redis_slots_extend(struct redis_slots *rs, const char *call_id, int attempt, const char *phone,
                       double lease_s, slot_done_cb cb, void *arg);

/*
 * The provider answered 429 with Retry-After: no acquire by any process
 * succeeds for SECONDS from now (SLOT_PROVIDER_PAUSED).  A pause is only
 * extended, never shortened.  VALUE: 1 set, 0 a longer one was in place.
 */
int redis_slots_pause(struct redis_slots *rs, double seconds, slot_done_cb cb, void *arg);

/* VALUE: slots in use, expired leases dropped first (metrics, free capacity). */
int redis_slots_count(struct redis_slots *rs, slot_done_cb cb, void *arg);

/* IN_USE as redis_slots_count(); PAUSED_MS: what is left of the provider's
 * 429 pause (redis_slots_pause()), 0 when none. */
typedef void (*slot_usage_cb)(void *arg, int in_use, long long paused_ms, const char *err);

/* The scheduler's view before it publishes: slots in use and the pause. */
int redis_slots_usage(struct redis_slots *rs, slot_usage_cb cb, void *arg);

/* VALUE: 1 when the epoch marker is missing or of another Redis run
 * (redis_slots_rebuild() needed). */
int redis_slots_needs_rebuild(struct redis_slots *rs, slot_done_cb cb, void *arg);

/*
 * Rebuild slots and phone locks from PostgreSQL's IN_PROGRESS rows (the N
 * entries E, copied), in one script, and set the epoch marker.  Only when the
 * marker is missing or of another run: a rebuild from a list read before other processes
 * acquired new slots would wipe those slots, so a rebuild never overwrites a
 * live state.  VALUE: 1 when rebuilt, 0 when the marker was present (someone
 * else rebuilt, or nothing was lost) and nothing was changed.  N may be 0.
 */
int redis_slots_rebuild(struct redis_slots *rs, const struct slot_entry *e, int n, slot_done_cb cb,
                        void *arg);

/* An attempt the per-number cap counts, for redis_slots_recount(). */
struct slot_counted {
    const char *call_id; /* its member is "<CALL_ID>:<ATTEMPT>" */
    int attempt;
    const char *phone;    /* E.164 */
    long long started_ms; /* when it started, ms since the epoch */
};

/*
 * Before a rebuild (while the epoch marker is missing or of another run,
 * so every acquire is refused): count the N attempts E, started within
 * PERIOD_S ([compliance] attempts_period) by PostgreSQL, in their numbers'
 * P freq: sets; any number of batches, then redis_slots_rebuild().  An
 * attempt a restored snapshot still counted under its job's token is
 * counted twice until it leaves the period: the cap then errs towards
 * fewer calls, never more.  VALUE: 1 written, 0 when the marker was this
 * run's (rebuilt by someone else meanwhile) and nothing was changed.
 */
int redis_slots_recount(struct redis_slots *rs, const struct slot_counted *e, int n,
                        double period_s, slot_done_cb cb, void *arg);

/*
 * Take the scheduler's leader lease for OWNER (unique per process, e.g.
 * "host:pid") for TTL_S seconds, or renew it when OWNER holds it already.
 * Call it more often than TTL_S; a new leadership gets a new, larger token.
 */
int redis_leader_acquire(struct redis_slots *rs, const char *owner, double ttl_s, slot_leader_cb cb,
                         void *arg);

/* Give the lease up if OWNER holds it (graceful stop).  VALUE: 1 if released. */
int redis_leader_release(struct redis_slots *rs, const char *owner, slot_done_cb cb, void *arg);

/*
 * Release like redis_slots_release(), fire and forget, but a release that
 * gets no answer (refused, error, timeout: the outcome is unknown) is queued
 * and sent again with backoff until Redis answers it; WHY (a string literal)
 * is for the logs.  The queue holds at most RELEASE_RETRY_QUEUE releases per
 * handle; what it drops, and what is queued when the handle is freed, the
 * scheduler's reconcile removes.
 */
#define RELEASE_RETRY_MIN 0.2       /* s before the first retry */
#define RELEASE_RETRY_MAX_DELAY 5.0 /* s cap of the doubling */
#define RELEASE_RETRY_QUEUE 10000
#define RELEASE_RETRY_BATCH 500 /* sent per timer run */
void redis_slots_release_retried(struct redis_slots *rs, const char *call_id, int attempt,
                                 const char *phone, const char *why);

/* redis_slots_release_retried() for a call that was not started after
 * its acquire: the token also leaves PHONE's attempt count (slot_ask). */
void redis_slots_release_unstarted(struct redis_slots *rs, const char *call_id, int attempt,
                                   const char *phone, const char *why);

/* Releases waiting in that queue now. */
int redis_slots_retry_queued(const struct redis_slots *rs);

/* ------------------------------------------------------- the reconcile --- */

/* TEXT: the epoch marker when it is this Redis run's, NULL when a rebuild
 * is needed (or on error). */
typedef void (*slot_text_cb)(void *arg, const char *text, const char *err);

/* The epoch marker, as the reconcile's fence (NULL: rebuild needed). */
int redis_slots_epoch(struct redis_slots *rs, slot_text_cb cb, void *arg);

/* A lease (PHONE NULL) or a phone lock seen in Redis. */
struct slot_seen {
    const char *token; /* "<owner>:<attempt>", as Redis holds it */
    const char *phone; /* the lock's E.164 number; NULL for a slot */
};

enum slot_scan_what { SLOT_SCAN_LEASES, SLOT_SCAN_PHONES };

/* One page of a scan: CURSOR for the next page ("0": done), SEEN[N]. */
typedef void (*slot_scan_cb)(void *arg, const char *cursor, const struct slot_seen *seen, int n,
                             const char *err);

/* One page (about COUNT entries; Redis's SCAN rules: an entry may be seen
 * twice, one present throughout is seen) of the slot leases or the phone
 * locks, from CURSOR ("0" to begin). */
int redis_slots_scan(struct redis_slots *rs, enum slot_scan_what what, const char *cursor,
                     int count, slot_scan_cb cb, void *arg);

/* What a reconcile write must find unchanged in Redis: the leadership that
 * read PostgreSQL, and the epoch marker read before it (so a rebuild, a
 * restart or a fail-over in between voids the write). */
struct slot_fence {
    long long leader_token;
    const char *epoch;
};

/* VALUE of redis_slots_drop() and redis_slots_restore() when the fence
 * did not hold (nothing was changed). */
#define SLOT_FENCE_LEADER (-1) /* another scheduler leads now */
#define SLOT_FENCE_EPOCH (-2)  /* rebuilt, restarted or failed over */

/* Entries per drop or restore. */
#define RECONCILE_MAX 10000

/*
 * Remove the leases and phone locks E[N] (which no IN_PROGRESS attempt
 * owned when PostgreSQL was read), each only while it still holds the same
 * token and was taken more than MIN_AGE_S ago (inferred from its expiry:
 * taken at expiry - LEASE_S).  VALUE: how many went, or SLOT_FENCE_*.
 */
int redis_slots_drop(struct redis_slots *rs, const struct slot_fence *f, const struct slot_seen *e,
                     int n, double min_age_s, double lease_s, slot_done_cb cb, void *arg);

/* Give the IN_PROGRESS attempts E[N] their lease and phone lock where
 * missing (leases as in redis_slots_rebuild()).  VALUE: leases and locks
 * written, or SLOT_FENCE_*. */
int redis_slots_restore(struct redis_slots *rs, const struct slot_fence *f,
                        const struct slot_entry *e, int n, slot_done_cb cb, void *arg);

/* Connected and ready (for /readyz and metrics). */
int redis_slots_is_up(const struct redis_slots *rs);

enum redis_slots_state redis_slots_state(const struct redis_slots *rs);

/* Nothing queued and nothing in flight (for a graceful stop). */
int redis_slots_idle(const struct redis_slots *rs);

/* Why the last request was refused, or the last connection error. */
const char *redis_slots_error(const struct redis_slots *rs);

#endif
