/*
 * scheduler.c — one tick after the other (see scheduler.h).
 *
 * A tick is a chain of non-blocking steps; the next tick does not start
 * before the previous one ended:
 *
 *   lease ─ not ours → end
 *         └ Redis lost its state? → rebuild slots from IN_PROGRESS rows
 *           └ reclaim timed-out IN_PROGRESS calls (release their slots)
 *             └ count slots in use → publish up to the free capacity → end
 */
#include "dispatch/scheduler.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dispatch/dispatch.h"
#include "net/kafka_producer.h"
#include "util/log.h"
#include "net/pg_pool.h"
#include "net/redis_slots.h"
#include "util/shm.h"
#include "util/tunables.h"

/* A lease outlives a few missed ticks, so a slow tick does not hand over. */
#define LEASE_TICKS 5
#define LEASE_MIN 2.0

static const char REBUILD_SQL[] =
    "SELECT COALESCE(slot_owner, id::text), attempts, to_number,"
    "       extract(epoch FROM started_at + $1::bigint * interval '1 ms' - now())"
    " FROM calls WHERE status = 'IN_PROGRESS'";

/* The row locks (SKIP LOCKED) keep two schedulers from reclaiming one call;
 * settle_attempt() keeps a webhook and a reclaim from both ending it. */
static const char RECLAIM_SQL[] =
    "SELECT c.id::text, c.attempts, s.status, s.to_number, COALESCE(s.slot_owner, c.id::text)"
    " FROM (SELECT id, attempts FROM calls"
    "        WHERE status = 'IN_PROGRESS' AND started_at < now() - $1::bigint * interval '1 ms'"
    "        ORDER BY started_at LIMIT $4::int FOR UPDATE SKIP LOCKED) c,"
    "      LATERAL settle_attempt(c.id, c.attempts, 'TIMEOUT',"
    "                             'timed out: no webhook within call_timeout', NULL, true,"
    "                             $2::bigint, $3::bigint, 0) s";

/* Up to the free slots, less the calls already on their way to a consumer
 * (handed to Kafka within the grace, not yet started or parked): those take
 * the free slots first.  Without that, every tick until they arrive would
 * publish more calls for the same slots, only to have them parked again.
 * Counting them stops at the free slots: with a backlog of 300 000 calls
 * waiting in Kafka the full count took 50 ms a tick, the capped one 3 ms. */
static const char PUBLISH_SQL[] =
    "UPDATE calls SET published_at = now() WHERE id IN ("
    "  SELECT id FROM calls"
    "   WHERE status = 'PENDING' AND due_at <= now()"
    "     AND (published_at IS NULL OR published_at < now() - $2::bigint * interval '1 ms')"
    "   ORDER BY due_at, id"
    "   LIMIT greatest($1::int - (SELECT count(*) FROM (SELECT 1 FROM calls"
    "                     WHERE status = 'PENDING'"
    "                       AND published_at >= now() - $2::bigint * interval '1 ms'"
    "                     LIMIT $1::int) on_the_way), 0)"
    "   FOR UPDATE SKIP LOCKED)"
    " RETURNING id::text, attempts + 1, to_number";

struct scheduler {
    struct ev_loop *loop;
    const struct co_config *cfg;
    struct pg_pool *pg;
    struct redis_slots *redis;
    struct kafka_producer *producer;
    char owner[128];
    ev_timer tick;
    ev_timer wake;               /* watches for slots freed in this daemon */
    uint64_t releases_seen;
    int wake_pending;            /* slots were freed: tick at the next poll */
    int busy;                    /* a tick is in flight */
    int leader;
    int stopping;
    int freeing;                 /* callbacks fail while clients are freed */
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

static void published(void *arg, const PGresult *res, const char *err)
{
    struct scheduler *s = arg;
    if (s->freeing) {
        s->busy = 0;
        return;
    }
    if (err != NULL) {
        co_warn("publish query failed", "error=\"%s\"", err);
    } else {
        for (int r = 0; r < PQntuples(res); r++) {
            char msg[96];
            int n = kafka_call_message(msg, sizeof(msg), PQgetvalue(res, r, 0),
                                       atoi(PQgetvalue(res, r, 1)));
            if (n > 0)
                kafka_producer_send(s->producer, PQgetvalue(res, r, 2), msg, (size_t)n, NULL,
                                    NULL);
        }
        if (PQntuples(res) > 0)
            co_debug("published due calls", "count=%d", PQntuples(res));
        for (int r = 0; r < PQntuples(res); r++)
            shm_count(CNT_SCHED_PUBLISHED);
    }
    tick_end(s);
}

static void counted(void *arg, int in_use, const char *err)
{
    struct scheduler *s = arg;
    if (s->freeing) {
        s->busy = 0;
        return;
    }
    int free_slots = s->cfg->max_concurrent_calls - in_use;
    if (err == NULL && co_shm != NULL)
        atomic_store(&co_shm->slots_in_use, in_use);
    /* paused: nothing new is published (in-flight calls finish) */
    if (err != NULL || free_slots <= 0 || shm_paused()) {
        tick_end(s);
        return;
    }
    char limit[16], grace[32];
    snprintf(limit, sizeof(limit), "%d", free_slots < SCHED_MAX_BATCH ? free_slots : SCHED_MAX_BATCH);
    snprintf(grace, sizeof(grace), "%lld", dispatch_ms(co_tunables.republish_grace));
    const char *values[] = { limit, grace };
    if (pg_pool_query(s->pg, PUBLISH_SQL, 2, values, published, s) < 0)
        tick_end(s);
}

static void count_slots(struct scheduler *s)
{
    if (redis_slots_count(s->redis, counted, s) < 0)
        tick_end(s);
}

/* ------------------------------------------------------------ reclaim */

static void release_done(void *arg, int released, const char *err)
{
    if (err != NULL)
        co_warn("slot release after reclaim failed; the lease will expire", "error=\"%s\"", err);
}

static void reclaimed(void *arg, const PGresult *res, const char *err)
{
    struct scheduler *s = arg;
    if (tick_aborted(s, err, "reclaim query failed"))
        return;
    for (int r = 0; r < PQntuples(res); r++) {
        const char *id = PQgetvalue(res, r, 0);
        int attempt = atoi(PQgetvalue(res, r, 1));
        co_warn("call reclaimed: no webhook within call_timeout", "call=%s attempt=%d status=%s",
                id, attempt, PQgetvalue(res, r, 2));
        redis_slots_release(s->redis, PQgetvalue(res, r, 4), attempt, PQgetvalue(res, r, 3),
                            release_done, NULL);
        shm_count(CNT_RECLAIMS);
        if (strcmp(PQgetvalue(res, r, 2), "PENDING") == 0)
            shm_count(CNT_RETRIES_SCHEDULED);
    }
    count_slots(s);
}

static void reclaim(struct scheduler *s)
{
    char timeout[32], base[32], max[32], limit[16];
    snprintf(timeout, sizeof(timeout), "%lld", dispatch_ms(s->cfg->call_timeout));
    snprintf(base, sizeof(base), "%lld", dispatch_ms(s->cfg->backoff_base));
    snprintf(max, sizeof(max), "%lld", dispatch_ms(s->cfg->backoff_max));
    snprintf(limit, sizeof(limit), "%d", SCHED_MAX_BATCH);
    const char *values[] = { timeout, base, max, limit };
    if (pg_pool_query(s->pg, RECLAIM_SQL, 4, values, reclaimed, s) < 0)
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

static void in_progress_loaded(void *arg, const PGresult *res, const char *err)
{
    struct scheduler *s = arg;
    if (tick_aborted(s, err, "loading IN_PROGRESS calls failed"))
        return;
    int n = PQntuples(res);
    struct slot_entry *e = calloc((size_t)n + 1, sizeof(*e));
    if (e == NULL) {
        tick_end(s);
        return;
    }
    for (int r = 0; r < n; r++) {
        e[r].call_id = PQgetvalue(res, r, 0);
        e[r].attempt = atoi(PQgetvalue(res, r, 1));
        e[r].phone = PQgetvalue(res, r, 2);
        e[r].lease_s = atof(PQgetvalue(res, r, 3));
    }
    co_warn("Redis lost the slot set; rebuilding it from PostgreSQL", "in_progress=%d", n);
    /* the entries point into RES, which lives until this callback returns:
     * the Redis client copies them into its command at once */
    if (redis_slots_rebuild(s->redis, e, n, rebuilt, s) < 0)
        tick_end(s);
    free(e);
}

static void rebuild_checked(void *arg, int needs, const char *err)
{
    struct scheduler *s = arg;
    if (tick_aborted(s, err, NULL))
        return;
    if (!needs) {
        reclaim(s);
        return;
    }
    char lease[32];
    snprintf(lease, sizeof(lease), "%lld", dispatch_ms(s->cfg->call_timeout + 60.0));
    const char *values[] = { lease };
    if (pg_pool_query(s->pg, REBUILD_SQL, 1, values, in_progress_loaded, s) < 0)
        tick_end(s);
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
    if (redis_slots_needs_rebuild(s->redis, rebuild_checked, s) < 0)
        tick_end(s);
}

static void on_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct scheduler *s = w->data;
    if (s->busy || s->stopping)
        return;
    double ttl = s->cfg->scheduler_interval * LEASE_TICKS;
    s->busy = 1;
    s->wake_pending = 0;
    if (redis_leader_acquire(s->redis, s->owner, ttl < LEASE_MIN ? LEASE_MIN : ttl, leased, s) < 0)
        tick_end(s);
}

/* Attempts ended in this daemon so far, each of which released a slot:
 * settled by a webhook, refused by the provider, reclaimed. */
static uint64_t slot_releases(void)
{
    static const enum co_counter c[] = {
        CNT_WEBHOOKS_COMPLETED, CNT_WEBHOOKS_FAILED, CNT_WEBHOOKS_BUSY, CNT_WEBHOOKS_NO_ANSWER,
        CNT_PROVIDER_ERR_CONNECT, CNT_PROVIDER_ERR_5XX, CNT_PROVIDER_ERR_429, CNT_PROVIDER_ERR_4XX,
        CNT_RECLAIMS,
    };
    uint64_t n = 0;
    for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++)
        n += shm_get(c[i]);
    return n;
}

/* A slot freed here is used at once instead of at the next tick: under a
 * tight cap, a slot would otherwise idle for up to scheduler_interval after
 * every call (half the throughput with 1 s calls and the 1 s default).  The
 * counters move just before the release is sent to Redis, so the tick runs
 * one poll later, when Redis has it.  Only the lease holder publishes; in the
 * other daemons this is a lease check. */
static void on_wake_poll(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct scheduler *s = w->data;
    uint64_t n = slot_releases();
    if (n != s->releases_seen) {
        s->releases_seen = n;
        s->wake_pending = 1;
        return;
    }
    if (s->wake_pending && !s->busy && !s->stopping && !shm_paused())
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
    if (s->stopping != 1)
        return;
    s->stopping = 2;
    /* hand over at once instead of letting the others wait for expiry */
    if (!s->leader || redis_leader_release(s->redis, s->owner, lease_released, s) < 0)
        lease_released(s, 0, NULL);
}

struct scheduler *scheduler_new(struct ev_loop *loop, const struct co_config *cfg, char *err,
                                size_t errlen)
{
    struct pg_pool_opts opts;
    struct redis_slots_opts ropts;
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
    redis_slots_opts_init(&ropts);
    ropts.name = "sched";
    if ((s->pg = pg_pool_new(loop, cfg->pg_conninfo, &opts, err, errlen)) == NULL ||
        (s->redis = redis_slots_new(loop, cfg, &ropts, err, errlen)) == NULL ||
        (s->producer = kafka_producer_new(loop, cfg, err, errlen)) == NULL) {
        scheduler_free(s);
        return NULL;
    }
    ev_timer_init(&s->tick, on_tick, 0., cfg->scheduler_interval);
    s->tick.data = s;
    ev_timer_start(loop, &s->tick);
    if (SCHED_WAKE_POLL < cfg->scheduler_interval) {
        s->releases_seen = slot_releases();
        ev_timer_init(&s->wake, on_wake_poll, SCHED_WAKE_POLL, SCHED_WAKE_POLL);
        s->wake.data = s;
        ev_timer_start(loop, &s->wake);
    }
    return s;
}

void scheduler_stop(struct scheduler *s, void (*done)(void *), void *arg)
{
    s->stopping = 1;
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
    free(s);
}
