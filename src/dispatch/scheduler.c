/*
 * scheduler.c — one tick after the other (see scheduler.h).
 *
 * A tick is a chain of non-blocking steps; the next tick does not start
 * before the previous one ended:
 *
 *   lease ─ not ours → end
 *         └ (kick the reconcile and the retention: each runs on by itself,
 *            reconcile.c, retention.c; and the expiry sweep: one
 *            expire_calls() batch unless one is in flight, not waited for)
 *         └ Redis lost its state, restarted or failed over? → (with a
 *           per-number cap: restore its counts from the recent attempts,
 *           a batch at a time) → rebuild slots from IN_PROGRESS rows
 *           └ reclaim timed-out IN_PROGRESS calls (release their slots; with
 *             [provider] status_url: mark them for a lookup first, lookup.h)
 *             └ start the due status lookups (not waited for)
 *               └ count slots in use, read the provider's 429 pause
 *                 → publish up to the free capacity (and the pacing's
 *                   worth of a tick), in priority order; none while the
 *                   pause runs → end
 */
#include "dispatch/scheduler.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dispatch/attempt.h"
#include "dispatch/lookup.h"
#include "dispatch/reconcile.h"
#include "dispatch/retention.h"
#include "dispatch/slots.h"
#include "net/kafka_producer.h"
#include "net/pg_pool.h"
#include "store/sched.h"
#include "util/log.h"
#include "util/shm.h"
#include "util/timeutil.h"
#include "util/tunables.h"

/* Attempts per batch of the per-number counts' restore. */
#define SCHED_RECOUNT_BATCH 5000

/* Calls ended EXPIRED per sweep (one sweep per tick). */
#define SCHED_EXPIRE_BATCH 500

/* A lease outlives a few missed ticks, so a slow tick does not hand over. */
#define LEASE_TICKS 5
#define LEASE_MIN 2.0

/* Where a scheduler is in its stop (scheduler_stop()). */
enum sched_stop {
    SCHED_RUNNING,
    SCHED_FINISHING,   /* the tick in flight ends, then the hand-over */
    SCHED_HANDING_OVER /* lease given up, Kafka flushing */
};

struct scheduler {
    struct ev_loop *loop;
    const struct co_config *cfg;
    struct pg_pool *pg;
    struct redis_slots *redis;
    struct kafka_producer *producer;
    struct reconcile *reconcile;
    struct retention *retention;
    struct lookups *lookups; /* unknown outcomes: status lookups */
    char owner[128];
    ev_timer tick;
    ev_timer wake; /* watches for slots freed in this daemon */
    uint64_t releases_seen;
    int wake_pending; /* slots were freed: tick at the next poll */
    int busy;         /* a tick is in flight */
    int expiring;     /* an expiry sweep is in flight */
    /* where the restore of the per-number counts is (rebuild_checked()) */
    char recount_after[64];
    int recount_after_attempt;
    int recount_more;
    int leader;
    enum sched_stop stopping;
    int freeing; /* callbacks fail while clients are freed */
    void (*stopped)(void *);
    void *stopped_arg;
};

static void tick_end(struct scheduler *s);

/* The common head of each step's callback: 1 when the tick ends here
 * (the scheduler is being freed, or the step failed: logged as WHAT). */
static int tick_aborted(struct scheduler *s, const char *err, const char *what)
{
    if (s->freeing) {
        s->busy = 0;
        return 1;
    }
    if (err == NULL)
        return 0;
    if (what != NULL)
        co_warn(what, "error=\"%s\"", err);
    tick_end(s);
    return 1;
}

/* ------------------------------------------------------------ publish */

static void published(void *ctx, const struct store_err *e, const struct store_due *rows, int n)
{
    struct scheduler *s = ctx;
    if (tick_aborted(s, e ? e->msg : NULL, "publish query failed"))
        return;
    for (int r = 0; r < n; r++) {
        char msg[96];
        int len = kafka_call_message(msg, sizeof(msg), rows[r].id, rows[r].attempt);
        if (len > 0)
            kafka_producer_send(s->producer, rows[r].to, msg, (size_t)len, NULL, NULL);
    }
    if (n > 0)
        co_debug("published due calls", "count=%d", n);
    for (int r = 0; r < n; r++)
        shm_count(CNT_SCHED_PUBLISHED);
    tick_end(s);
}

/* The most one tick publishes: the free slots, and with [provider]
 * max_calls_per_second what the pacing lets start within a tick (at least
 * a second's worth): the rest would only be parked by the acquire and
 * published again at every tick. */
static int publish_limit(const struct co_config *cfg, int free_slots)
{
    int limit = free_slots < SCHED_MAX_BATCH ? free_slots : SCHED_MAX_BATCH;
    double tick = cfg->scheduler_interval > 1 ? cfg->scheduler_interval : 1;
    double paced = ceil(cfg->max_calls_per_second * tick);
    if (cfg->max_calls_per_second > 0 && paced < limit)
        limit = (int)paced;
    return limit;
}

static void counted(void *arg, int in_use, long long paused_ms, const char *err)
{
    struct scheduler *s = arg;
    if (s->freeing) {
        s->busy = 0;
        return;
    }
    int free_slots = s->cfg->max_concurrent_calls - in_use;
    if (err == NULL && co_shm != NULL)
        atomic_store(&co_shm->slots_in_use, in_use);
    /* paused (callorchctl, or the provider's 429 on any daemon): nothing
     * new is published (in-flight calls finish) */
    if (err != NULL || free_slots <= 0 || shm_paused() || paused_ms > 0) {
        tick_end(s);
        return;
    }
    if (store_publish_due(s->pg, publish_limit(s->cfg, free_slots),
                          co_ms(co_tunables.republish_grace), published, s) < 0)
        tick_end(s);
}

static void count_slots(struct scheduler *s)
{
    if (redis_slots_usage(s->redis, counted, s) < 0)
        tick_end(s);
}

/* ------------------------------------------------------------ reclaim */

static void reclaimed(void *ctx, const struct store_err *e, const struct store_reclaimed *rows,
                      int n)
{
    struct scheduler *s = ctx;
    if (tick_aborted(s, e ? e->msg : NULL, "reclaim query failed"))
        return;
    for (int r = 0; r < n; r++) {
        const struct store_reclaimed *c = &rows[r];
        co_warn("call reclaimed: no webhook within call_timeout", "call=%s attempt=%d status=%s",
                c->id, c->attempt, c->status);
        struct attempt_end end = {
            .call_id = c->id,
            .attempt = c->attempt,
            .to = c->to,
            .owner = c->slot_owner,
            .noticed_by = "reclaim",
            .status = c->status,
        };
        attempt_finished(s->pg, s->redis, &end, NULL, NULL);
        shm_count(CNT_RECLAIMS);
    }
    count_slots(s);
}

/* With status lookups: the timed-out attempts are marked, and the lookup
 * decides (lookup.h); the lookups of this tick start either way. */
static void reclaim_marked(void *ctx, const struct store_err *e)
{
    struct scheduler *s = ctx;
    if (tick_aborted(s, e ? e->msg : NULL, "reclaim query failed"))
        return;
    lookups_run(s->lookups);
    count_slots(s);
}

static void reclaim(struct scheduler *s)
{
    const struct co_config *cfg = s->cfg;
    struct store_backoff b = { co_ms(cfg->backoff_base), co_ms(cfg->backoff_max) };
    if (lookups_enabled(s->lookups)) {
        if (store_reclaim_mark(s->pg, co_ms(cfg->call_timeout), SCHED_MAX_BATCH, reclaim_marked,
                               s) < 0)
            tick_end(s);
        return;
    }
    if (store_reclaim(s->pg, co_ms(cfg->call_timeout), &b, attempt_retry_ms(cfg, "TIMEOUT"),
                      SCHED_MAX_BATCH, reclaimed, s) < 0)
        tick_end(s);
}

/* ------------------------------------------------------------ rebuild */

static void rebuilt(void *arg, int done, const char *err)
{
    struct scheduler *s = arg;
    if (tick_aborted(s, err, "rebuilding the Redis slot set failed"))
        return;
    if (done)
        co_warn("Redis slot set rebuilt from PostgreSQL", NULL);
    else
        co_info("Redis slot set already rebuilt by another scheduler", NULL);
    reclaim(s);
}

static void in_progress_loaded(void *ctx, const struct store_err *e,
                               const struct store_in_progress *rows, int n)
{
    struct scheduler *s = ctx;
    if (tick_aborted(s, e ? e->msg : NULL, "loading IN_PROGRESS calls failed"))
        return;
    struct slot_entry *slots = calloc((size_t)n + 1, sizeof(*slots));
    if (slots == NULL) {
        tick_end(s);
        return;
    }
    for (int r = 0; r < n; r++) {
        slots[r].call_id = rows[r].slot_owner;
        slots[r].attempt = rows[r].attempt;
        slots[r].phone = rows[r].to;
        slots[r].lease_s = rows[r].lease_s;
        slots[r].campaign_id = rows[r].campaign_id;
    }
    co_warn("Redis lost the slot set; rebuilding it from PostgreSQL", "in_progress=%d", n);
    /* the entries point into ROWS, which live until this callback returns:
     * the Redis client copies them into its command at once */
    if (redis_slots_rebuild(s->redis, slots, n, rebuilt, s) < 0)
        tick_end(s);
    free(slots);
}

static void load_in_progress(struct scheduler *s)
{
    long long lease_ms = co_ms(s->cfg->call_timeout + co_tunables.lease_margin);
    if (store_in_progress(s->pg, lease_ms, in_progress_loaded, s) < 0)
        tick_end(s);
}

static void recount_batch(struct scheduler *s);

static void recounted(void *arg, int done, const char *err)
{
    struct scheduler *s = arg;
    if (tick_aborted(s, err, "restoring the per-number attempt counts failed"))
        return;
    if (done && s->recount_more) {
        recount_batch(s);
        return;
    }
    load_in_progress(s);
}

static void recent_loaded(void *ctx, const struct store_err *e,
                          const struct store_recent_attempt *rows, int n)
{
    struct scheduler *s = ctx;
    if (tick_aborted(s, e ? e->msg : NULL, "loading the recent attempts failed"))
        return;
    struct slot_counted *c = calloc((size_t)n + 1, sizeof(*c));
    if (c == NULL) {
        tick_end(s);
        return;
    }
    for (int r = 0; r < n; r++)
        c[r] = (struct slot_counted){ rows[r].call_id, rows[r].attempt, rows[r].to,
                                      rows[r].started_ms };
    s->recount_more = n == SCHED_RECOUNT_BATCH;
    if (n > 0) {
        snprintf(s->recount_after, sizeof(s->recount_after), "%s", rows[n - 1].call_id);
        s->recount_after_attempt = rows[n - 1].attempt;
    }
    /* the entries point into ROWS: the command copies them at once */
    if (redis_slots_recount(s->redis, c, n, s->cfg->attempts_period, recounted, s) < 0)
        tick_end(s);
    free(c);
}

static void recount_batch(struct scheduler *s)
{
    if (store_recent_attempts(s->pg, co_ms(s->cfg->attempts_period), s->recount_after,
                              s->recount_after_attempt, SCHED_RECOUNT_BATCH, recent_loaded, s) < 0)
        tick_end(s);
}

/* Redis lost its state: with a per-number cap, its counts come back from
 * the attempts PostgreSQL recorded within the period, batch by batch, while
 * acquires are still refused; then slots and locks (the rebuild sets the
 * epoch marker, and acquires go on). */
static void rebuild_checked(void *arg, int needs, const char *err)
{
    struct scheduler *s = arg;
    if (tick_aborted(s, err, NULL))
        return;
    if (!needs) {
        reclaim(s);
        return;
    }
    if (s->cfg->max_attempts_per_number > 0) {
        co_warn("Redis lost its state; restoring the per-number attempt counts", NULL);
        s->recount_after[0] = '\0';
        s->recount_after_attempt = 0;
        recount_batch(s);
        return;
    }
    load_in_progress(s);
}

/* ------------------------------------------------------------- expiry */

static void expired(void *ctx, const struct store_err *e, int n)
{
    struct scheduler *s = ctx;
    s->expiring = 0;
    if (s->freeing)
        return;
    if (e != NULL) {
        co_warn("expiry sweep failed; tried again next tick", "error=%s", CO_LOG_Q(e->msg));
        return;
    }
    if (n > 0)
        co_info("calls expired: expiresAt passed before they finished", "count=%d", n);
    for (int i = 0; i < n; i++)
        shm_count(CNT_CALLS_EXPIRED);
}

/* One statement per tick, like the retention: a backlog drains a batch a
 * tick while dispatch goes on between them. */
static void expire_kick(struct scheduler *s)
{
    if (s->expiring)
        return;
    if (store_expire_due(s->pg, SCHED_EXPIRE_BATCH, expired, s) == 0)
        s->expiring = 1;
}

/* -------------------------------------------------------------- lease */

static void leased(void *arg, int is_leader, long long token, const char *err)
{
    struct scheduler *s = arg;
    if (s->freeing) {
        s->busy = 0;
        return;
    }
    if (err != NULL || !is_leader) {
        if (s->leader)
            co_info("scheduler lease lost", "owner=%s", s->owner);
        s->leader = 0;
        tick_end(s);
        return;
    }
    if (!s->leader)
        co_info("scheduler lease taken: this daemon schedules", "owner=%s token=%lld", s->owner,
                token);
    s->leader = 1;
    reconcile_kick(s->reconcile, token);
    retention_kick(s->retention);
    expire_kick(s);
    if (redis_slots_needs_rebuild(s->redis, rebuild_checked, s) < 0)
        tick_end(s);
}

static void on_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct scheduler *s = w->data;
    if (s->busy || s->stopping != SCHED_RUNNING)
        return;
    double ttl = s->cfg->scheduler_interval * LEASE_TICKS;
    s->busy = 1;
    s->wake_pending = 0;
    if (redis_leader_acquire(s->redis, s->owner, ttl < LEASE_MIN ? LEASE_MIN : ttl, leased, s) < 0)
        tick_end(s);
}

/* A slot freed here is used at once instead of at the next tick: under a
 * tight cap, a slot would otherwise idle for up to scheduler_interval after
 * every call (half the throughput with 1 s calls and the 1 s default).  The
 * signal (shm_slot_freed(), bumped by attempt_finished()) moves just before
 * the release is sent to Redis, so the tick runs one poll later, when Redis
 * has it.  Only the lease holder publishes; in the
 * other daemons this is a lease check. */
static void on_wake_poll(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct scheduler *s = w->data;
    uint64_t n = shm_slots_freed();
    if (n != s->releases_seen) {
        s->releases_seen = n;
        s->wake_pending = 1;
        return;
    }
    if (s->wake_pending && !s->busy && s->stopping == SCHED_RUNNING && !shm_paused())
        on_tick(loop, &s->tick, revents);
}

/* ------------------------------------------------------------- set up */

static void lease_released(void *arg, int unused, const char *err)
{
    struct scheduler *s = arg;
    if (s->freeing)
        return;
    kafka_producer_flush(s->producer, 5.0, s->stopped, s->stopped_arg);
}

static void tick_end(struct scheduler *s)
{
    s->busy = 0;
    if (s->stopping != SCHED_FINISHING)
        return;
    s->stopping = SCHED_HANDING_OVER;
    /* hand over at once instead of letting the others wait for expiry */
    if (!s->leader || redis_leader_release(s->redis, s->owner, lease_released, s) < 0)
        lease_released(s, 0, NULL);
}

struct scheduler *scheduler_new(struct ev_loop *loop, const struct co_config *cfg, char *err,
                                size_t errlen)
{
    struct pg_pool_opts opts;
    struct redis_opts ropts;
    char host[64] = "localhost";
    struct scheduler *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->loop = loop;
    s->cfg = cfg;
    gethostname(host, sizeof(host) - 1);
    snprintf(s->owner, sizeof(s->owner), "%s:%ld", host, (long)getpid());
    pg_pool_opts_init(&opts);
    opts.size = 2;
    opts.name = "sched";
    redis_opts_init(&ropts);
    ropts.name = "sched";
    if ((s->pg = pg_pool_new(loop, cfg->pg_conninfo, &opts, err, errlen)) == NULL ||
        (s->redis = redis_slots_new(loop, cfg, &ropts, err, errlen)) == NULL ||
        (s->producer = kafka_producer_new(loop, cfg, err, errlen)) == NULL ||
        (s->lookups = lookups_new(loop, cfg, s->pg, s->redis, err, errlen)) == NULL) {
        scheduler_free(s);
        return NULL;
    }
    if ((s->reconcile = reconcile_new(loop, cfg, s->pg, s->redis)) == NULL ||
        (s->retention = retention_new(loop, cfg, s->pg)) == NULL) {
        snprintf(err, errlen, "out of memory");
        scheduler_free(s);
        return NULL;
    }
    ev_timer_init(&s->tick, on_tick, 0., cfg->scheduler_interval);
    s->tick.data = s;
    ev_timer_start(loop, &s->tick);
    if (SCHED_WAKE_POLL < cfg->scheduler_interval) {
        s->releases_seen = shm_slots_freed();
        ev_timer_init(&s->wake, on_wake_poll, SCHED_WAKE_POLL, SCHED_WAKE_POLL);
        s->wake.data = s;
        ev_timer_start(loop, &s->wake);
    }
    return s;
}

void scheduler_stop(struct scheduler *s, void (*done)(void *), void *arg)
{
    s->stopping = SCHED_FINISHING;
    s->stopped = done;
    s->stopped_arg = arg;
    ev_timer_stop(s->loop, &s->tick);
    ev_timer_stop(s->loop, &s->wake);
    if (!s->busy)
        tick_end(s);
}

void scheduler_free(struct scheduler *s)
{
    if (s == NULL)
        return;
    s->freeing = 1;
    ev_timer_stop(s->loop, &s->tick);
    ev_timer_stop(s->loop, &s->wake);
    if (s->pg != NULL)
        pg_pool_free(s->pg);
    if (s->redis != NULL)
        redis_slots_free(s->redis);
    if (s->producer != NULL)
        kafka_producer_free(s->producer);
    /* after the clients: their freeing ended what the two had in flight */
    reconcile_free(s->reconcile);
    retention_free(s->retention);
    /* last: the callbacks the pool and Redis fail above still use it */
    lookups_free(s->lookups);
    free(s);
}
