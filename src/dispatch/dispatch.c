/*
 * dispatch.c — one attempt from Kafka message to provider answer (see
 * dispatch.h).  Each message becomes a job that walks these steps, each a
 * callback of the non-blocking pool, Redis client or HTTP client:
 *
 *   load ─ skip (not a due PENDING call of this attempt)         → handled
 *        ├ its campaign is PAUSED or CANCELLED: park              → handled
 *        ├ past expires_at: EXPIRED, no slot taken                → handled
 *        ├ number listed: suppress ─ SUPPRESSED, no slot taken    → handled
 *        │                         └ no longer qualifies: go on ↓
 *        ├ calling window closed (or a zone unknown to tzdata):
 *        │   hold until it opens (holdReason "window")             → handled
 *        └ acquire slot+lock ─ none free / Redis down ─ park      → handled
 *                            ├ campaign full, pacing window full,
 *                            │ provider's 429 pause: park, counted
 *                            │ as a deferral                       → handled
 *                            ├ number over its attempt cap: hold
 *                            │ until the oldest attempt leaves the
 *                            │ period (holdReason "frequency")     → handled
 *                            └ mark IN_PROGRESS ─ lost the race   → handled
 *                                               ├ listed since the load: SUPPRESSED,
 *                                               │ slot and lock released  → handled
 *                                               └ no answer: re-read the call
 *                                               └ started         → handled
 *                                                 └ provider ─ 2xx + valid callId: record id
 *                                                            ├ certain refusal: settle, release
 *                                                            │ (a 429 pauses every daemon's starts)
 *                                                            └ unknown: mark it, keep slot
 *                                                              and lock (lookup.h resolves it)
 *
 * "handled" is when the message's offset may be committed (offsets.c keeps
 * the commits in order per partition).
 */
#include "dispatch/dispatch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "api/validate.h"
#include "compliance/rules.h"
#include "dispatch/attempt.h"
#include "dispatch/offsets.h"
#include "dispatch/provider.h"
#include "dispatch/slots.h"
#include "net/kafka_consumer.h"
#include "net/pg_pool.h"
#include "store/attempts.h"
#include "util/log.h"
#include "util/shm.h"
#include "util/timeutil.h"
#include "util/tunables.h"

/* A call whose window cannot be checked (a zone gone from tzdata, a
 * stored value unreadable) is held this long, s, then looked at again. */
#define DISPATCH_RULES_ERROR_HOLD (60 * 60)

/* The provider's 429: every daemon's starts pause for its Retry-After,
 * this long when it sent none, and never longer than the cap (a provider
 * that answers "Retry-After: 86400" stops one call for a day, not all). */
#define DISPATCH_429_PAUSE_DEFAULT 1.0
#define DISPATCH_429_PAUSE_MAX 300.0

/* Where a dispatcher is in its stop (dispatcher_stop()). */
enum dispatch_stop {
    DISPATCH_RUNNING,
    DISPATCH_DRAINING, /* no new messages; jobs in flight finish */
    DISPATCH_LEAVING   /* commits sent: leaving the consumer group */
};

struct dispatcher {
    struct ev_loop *loop;
    const struct co_config *cfg;
    struct pg_pool *pg;
    struct redis_slots *redis;
    struct provider *provider;
    struct kafka_consumer *consumer;
    struct offsets *offsets;
    int jobs; /* jobs alive, provider phase included */
    enum dispatch_stop stopping;
    int freeing;         /* clients are being freed: no new requests */
    struct job *waiting; /* jobs whose next re-read is on a timer */
    void (*stopped)(void *);
    void *stopped_arg;
};

struct job {
    struct dispatcher *d;
    struct job *next_waiting; /* in d->waiting while a re-read is delayed */
    ev_timer reread;          /* the next re-read of a lost start answer */
    int rereads;
    struct offset_mark *mark; /* NULL once handled */
    char id[UUID_LEN + 1];
    char owner[64]; /* "<id>.<pid>.<n>": this job's lease token */
    int attempt;
    char to[32];
    char campaign[UUID_LEN + 1]; /* "": a single call */
    int campaign_max;            /* its maxConcurrent; 0: none */
    double campaign_cps;         /* its callsPerSecond; 0: unpaced */
    char *script_id;
    char *metadata;
    const char *hold_reason; /* a string literal, while a hold is written */
};

static void maybe_stopped(struct dispatcher *d);

/* ------------------------------------------------------------ job life */

/* The message is handled durably: its offset may be committed. */
static void job_handled(struct job *j)
{
    struct dispatcher *d = j->d;
    if (j->mark == NULL)
        return;
    int32_t partition;
    int64_t commit = offsets_done(d->offsets, j->mark, &partition);
    j->mark = NULL;
    if (d->consumer == NULL) /* being freed: nothing to commit to */
        return;
    if (commit >= 0)
        kafka_consumer_commit(d->consumer, partition, commit);
    if (d->stopping == DISPATCH_RUNNING && offsets_in_flight(d->offsets) < DISPATCH_MAX_IN_FLIGHT)
        kafka_consumer_pause(d->consumer, 0);
}

static void job_end(struct job *j)
{
    struct dispatcher *d = j->d;
    job_handled(j);
    free(j->script_id);
    free(j->metadata);
    free(j);
    d->jobs--;
    maybe_stopped(d);
}

/* Release the slot and lock this job took for a call that did not start;
 * WHY is a string literal (see attempt_release()).  With a per-number cap
 * the acquire counted an attempt: a call not started does not count. */
static void job_release(struct job *j, const char *why)
{
    struct dispatcher *d = j->d;
    if (d->freeing)
        return; /* the lease expires; the scheduler reconciles */
    if (d->cfg->max_attempts_per_number > 0)
        redis_slots_release_unstarted(d->redis, j->owner, j->attempt, j->to, why);
    else
        attempt_release(d->redis, j->id, j->attempt, j->to, j->owner, why);
}

/* The call ended SUPPRESSED: its number is on the do-not-call list.
 * Nothing was dialled and no attempt is recorded. */
static void count_suppressed(struct job *j, const char *when)
{
    co_info("call suppressed: number on the do-not-call list", "call=%s attempt=%d checked=%s",
            j->id, j->attempt, when);
    shm_count(CNT_DISPATCH_SUPPRESSED);
}

/* ---------------------------------------------------- provider outcome */

static void settled(void *arg, const struct store_err *e, const char *status)
{
    struct job *j = arg;
    if (e != NULL)
        co_error("cannot record the failed attempt; it will be reclaimed",
                 "call=%s attempt=%d error=%s", j->id, j->attempt, CO_LOG_Q(e->msg));
    else if (status != NULL)
        co_info("attempt ended", "call=%s attempt=%d status=%s", j->id, j->attempt, status);
    job_end(j);
}

/* The provider answered 429: no daemon starts a call for RETRY_AFTER s
 * (slots.h, P pause).  Fire and forget: a pause that Redis never got
 * leaves this call's own retry to wait Retry-After still. */
static void pause_starts(struct job *j, double retry_after)
{
    double s = retry_after > 0 ? retry_after : DISPATCH_429_PAUSE_DEFAULT;
    if (s > DISPATCH_429_PAUSE_MAX)
        s = DISPATCH_429_PAUSE_MAX;
    co_info("provider rate limit: starts paused on every daemon", "call=%s pause_s=%.3f", j->id, s);
    if (redis_slots_pause(j->d->redis, s, NULL, NULL) < 0)
        co_warn("cannot pause starts after a 429", "error=%s",
                CO_LOG_Q(redis_slots_error(j->d->redis)));
}

static void settle(struct job *j, const struct provider_result *r)
{
    const struct co_config *cfg = j->d->cfg;
    if (j->d->freeing) { /* the scheduler reclaims it after call_timeout */
        job_end(j);
        return;
    }
    int retry = r->outcome == PROVIDER_RETRY;
    if (r->http_status == 429)
        pause_starts(j, r->retry_after);
    shm_count(r->http_status == 0     ? CNT_PROVIDER_ERR_CONNECT
              : r->http_status == 429 ? CNT_PROVIDER_ERR_429
              : r->http_status >= 500 ? CNT_PROVIDER_ERR_5XX
                                      : CNT_PROVIDER_ERR_4XX);
    struct store_settle how = {
        .id = j->id,
        .attempt = j->attempt,
        .reason = retry ? "PROVIDER_ERROR" : "PROVIDER_REJECTED",
        .error = r->error,
        .retry = retry,
        .min_delay_ms = co_ms(r->retry_after),
        .backoff = { co_ms(cfg->backoff_base), co_ms(cfg->backoff_max) },
    };
    /* the provider holds no call for this attempt: the slot is freed now */
    struct attempt_end end = {
        .call_id = j->id,
        .attempt = j->attempt,
        .to = j->to,
        .owner = j->owner,
        .noticed_by = "provider answer",
        .settle = &how,
    };
    co_warn("provider did not start the call", "call=%s attempt=%d error=%s", j->id, j->attempt,
            CO_LOG_Q(r->error));
    if (attempt_finished(j->d->pg, j->d->redis, &end, settled, j) < 0) {
        co_error("cannot record the failed attempt; it will be reclaimed",
                 "call=%s attempt=%d error=%s", j->id, j->attempt,
                 CO_LOG_Q(pg_pool_error(j->d->pg)));
        job_end(j);
    }
}

static void recorded(void *ctx, const struct store_err *e)
{
    struct job *j = ctx;
    if (e != NULL)
        co_warn("cannot record the provider's call id", "call=%s attempt=%d error=%s", j->id,
                j->attempt, CO_LOG_Q(e->msg));
    job_end(j);
}

static void marked(void *ctx, const struct store_err *e)
{
    struct job *j = ctx;
    if (e != NULL) /* still IN_PROGRESS: the webhook or the reclaim ends it */
        co_warn("cannot mark the attempt's outcome unknown", "call=%s attempt=%d error=%s", j->id,
                j->attempt, CO_LOG_Q(e->msg));
    job_end(j);
}

/* The provider may hold the call: it is not a failed attempt.  The call
 * stays IN_PROGRESS with its slot and phone lock (the lease runs until
 * call_timeout + the lease margin from the start, and the lookups extend
 * it); PostgreSQL records the outcome as unknown, and the scheduler's
 * lookups (lookup.h), the webhook or the reclaim resolve it. */
static void mark_unknown(struct job *j, const struct provider_result *r)
{
    shm_count(CNT_PROVIDER_ERR_CONNECT);
    co_warn("provider answer unknown; the call keeps its slot until it is resolved",
            "call=%s attempt=%d error=%s", j->id, j->attempt, CO_LOG_Q(r->error));
    if (store_attempt_unknown(j->d->pg, j->id, j->attempt, r->error, marked, j) < 0)
        job_end(j);
}

static void provider_answered(void *arg, const struct provider_result *r)
{
    struct job *j = arg;
    if (j->d->freeing) {
        job_end(j);
        return;
    }
    if (r->outcome == PROVIDER_UNKNOWN) {
        mark_unknown(j, r);
        return;
    }
    if (r->outcome != PROVIDER_STARTED) {
        settle(j, r);
        return;
    }
    co_info("call started", "call=%s attempt=%d externalCallId=%s", j->id, j->attempt,
            CO_LOG_Q(r->call_id));
    shm_count(CNT_DISPATCH_STARTED);
    if (store_attempt_record(j->d->pg, j->id, j->attempt, r->call_id, recorded, j) < 0)
        job_end(j);
}

static void start_provider(struct job *j)
{
    struct provider_call call = {
        .call_id = j->id,
        .attempt = j->attempt,
        .to = j->to,
        .script_id = j->script_id,
        .metadata = j->metadata,
    };
    if (provider_start(j->d->provider, &call, provider_answered, j) < 0) {
        struct provider_result r = { .outcome = PROVIDER_RETRY,
                                     .error = "cannot set up the provider request" };
        settle(j, &r);
    }
}

/* ------------------------------------------------ moving to IN_PROGRESS */

static void parked(void *ctx, const struct store_err *e)
{
    struct job *j = ctx;
    if (e != NULL)
        co_warn("cannot park call; the scheduler republishes it later", "call=%s error=%s", j->id,
                CO_LOG_Q(e->msg));
    job_end(j);
}

/* No slot or lock now: hand the call back to the scheduler. */
static void park(struct job *j, const char *why)
{
    if (j->d->freeing) {
        job_end(j);
        return;
    }
    co_debug("call parked", "call=%s attempt=%d reason=%s", j->id, j->attempt, why);
    shm_count(CNT_DISPATCH_PARKED);
    if (store_call_park(j->d->pg, j->id, parked, j) < 0)
        job_end(j);
}

static void reread_call(struct job *j);

/* The start was committed (or re-read as committed) for this job. */
static void proceed(struct job *j, const struct store_started *s)
{
    j->script_id = strdup(s->script_id);
    j->metadata = strdup(s->metadata);
    job_handled(j); /* IN_PROGRESS is committed: the message has done its job */
    if (j->script_id == NULL || j->metadata == NULL) {
        struct provider_result r = { .outcome = PROVIDER_RETRY, .error = "out of memory" };
        settle(j, &r);
        return;
    }
    start_provider(j);
}

static void waiting_remove(struct job *j)
{
    for (struct job **p = &j->d->waiting; *p != NULL; p = &(*p)->next_waiting)
        if (*p == j) {
            *p = j->next_waiting;
            break;
        }
}

static void on_reread_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct job *j = w->data;
    waiting_remove(j);
    reread_call(j);
}

/* What PostgreSQL says after a start update whose answer was lost. */
static void reread(void *ctx, const struct store_err *e, const struct store_reread *r)
{
    struct job *j = ctx;
    if (j->d->freeing) {
        job_end(j);
        return;
    }
    if (e != NULL) {
        /* keep what we hold: ask again shortly */
        if (++j->rereads > DISPATCH_REREADS) {
            co_error("cannot re-read a call after a lost start answer; its lease is kept "
                     "(the reclaim or the lease expiry ends it)",
                     "call=%s attempt=%d error=%s", j->id, j->attempt, CO_LOG_Q(e->msg));
            job_end(j);
            return;
        }
        ev_timer_init(&j->reread, on_reread_timer, DISPATCH_REREAD_DELAY, 0.);
        j->reread.data = j;
        j->next_waiting = j->d->waiting;
        j->d->waiting = j;
        ev_timer_start(j->d->loop, &j->reread);
        return;
    }
    if (r != NULL && strcmp(r->status, "IN_PROGRESS") == 0 && r->attempts == j->attempt &&
        strcmp(r->slot_owner, j->owner) == 0) {
        co_info("start update committed although its answer was lost", "call=%s attempt=%d", j->id,
                j->attempt);
        proceed(j, &r->started);
        return;
    }
    co_info("start update not committed (its answer was lost); slot released",
            "call=%s attempt=%d status=%s", j->id, j->attempt, r ? r->status : "(gone)");
    job_release(j, "call not started");
    job_end(j);
}

static void reread_call(struct job *j)
{
    if (store_call_reread(j->d->pg, j->id, reread, j) < 0) {
        struct store_err e = { .msg = pg_pool_error(j->d->pg) };
        reread(j, &e, NULL);
    }
}

static void started(void *ctx, const struct store_err *e, const struct store_started *s)
{
    struct job *j = ctx;
    if (s == NULL && e != NULL && !e->answered && !j->d->freeing) {
        /* the commit may have happened: act on what PostgreSQL says */
        reread_call(j);
        return;
    }
    if (s == NULL) {
        /* Lost the race (a cancel, a PATCH, or another job of this attempt
         * that was not stopped by the phone lock because its lease had
         * expired), or the phone is in progress already (23505), or the
         * database failed.  The lease is this job's own token (see
         * calls.slot_owner), so releasing it never frees another job's. */
        job_release(j, "call not started");
        if (e != NULL && e->answered)
            park(j, "update refused");
        else
            job_end(j);
        return;
    }
    if (s->outcome == STORE_START_SUPPRESSED) {
        /* listed between the load and the start: the provider is not called */
        count_suppressed(j, "start");
        job_release(j, "call suppressed");
        job_end(j);
        return;
    }
    proceed(j, s);
}

static void hold(struct job *j, long long until_ms, const char *reason);

/* The acquire took nothing: park the call (the scheduler publishes it
 * again, in priority order); a limit's deferral is counted by reason. */
static void park_refused(struct job *j, enum slot_result r)
{
    switch (r) {
    case SLOT_CAMPAIGN_FULL: shm_count(CNT_DEFERRED_CAMPAIGN_FULL); break;
    case SLOT_PACED: shm_count(CNT_DEFERRED_PACING); break;
    case SLOT_PROVIDER_PAUSED: shm_count(CNT_DEFERRED_PROVIDER_429); break;
    default: break;
    }
    park(j, r == SLOT_NO_SLOT           ? "no slot"
            : r == SLOT_PHONE_BUSY      ? "phone busy"
            : r == SLOT_NEEDS_REBUILD   ? "slots being rebuilt"
            : r == SLOT_CAMPAIGN_FULL   ? "campaign full"
            : r == SLOT_PACED           ? "pacing"
            : r == SLOT_PROVIDER_PAUSED ? "provider 429 pause"
                                        : "redis unavailable");
}

static void acquired(void *arg, const struct slot_grant *g, const char *err)
{
    struct job *j = arg;
    enum slot_result r = g->result;
    if (j->d->freeing) {
        job_end(j);
        return;
    }
    if (r == SLOT_FREQUENCY) {
        hold(j, g->free_at_ms, "frequency");
        return;
    }
    if (r != SLOT_OK) {
        park_refused(j, r);
        return;
    }
    if (store_attempt_start(j->d->pg, j->id, j->attempt, j->to, j->owner, started, j) < 0) {
        job_release(j, "call not started");
        job_end(j);
    }
}

/* Take a slot and the phone's lock for the call, then start it. */
static void acquire(struct job *j)
{
    struct dispatcher *d = j->d;
    struct slot_ask ask = {
        .call_id = j->owner,
        .attempt = j->attempt,
        .phone = j->to,
        .max_slots = d->cfg->max_concurrent_calls,
        .lease_s = d->cfg->call_timeout + co_tunables.lease_margin,
        .cap = d->cfg->max_attempts_per_number,
        .cap_period_s = d->cfg->attempts_period,
        .campaign_id = j->campaign[0] != '\0' ? j->campaign : NULL,
        .campaign_max = j->campaign_max,
        .calls_per_second = d->cfg->max_calls_per_second,
        .campaign_cps = j->campaign_cps,
    };
    if (redis_slots_take(d->redis, &ask, acquired, j) < 0)
        park(j, "redis unavailable");
}

/* The load found the number listed; SUPPRESSED says whether the call ended
 * so.  When it did not (taken off the list, cancelled or changed since
 * the load), the usual path decides: the start re-checks the list. */
static void suppressed_at_load(void *ctx, const struct store_err *e, bool suppressed)
{
    struct job *j = ctx;
    if (j->d->freeing) {
        job_end(j);
        return;
    }
    if (e != NULL) {
        /* PostgreSQL holds the call: the scheduler republishes it */
        co_warn("cannot suppress call; skipped for now", "call=%s error=%s", j->id,
                CO_LOG_Q(e->msg));
        job_end(j);
        return;
    }
    if (suppressed) {
        count_suppressed(j, "load");
        job_end(j);
        return;
    }
    acquire(j);
}

/* ------------------------------------------------- compliance at dial */

static void held(void *ctx, const struct store_err *e, bool done)
{
    struct job *j = ctx;
    if (e != NULL) /* still PENDING and due: the scheduler republishes it */
        co_warn("cannot hold call; the scheduler republishes it", "call=%s error=%s", j->id,
                CO_LOG_Q(e->msg));
    else if (done)
        shm_count(strcmp(j->hold_reason, "frequency") == 0 ? CNT_DISPATCH_HELD_FREQUENCY
                                                           : CNT_DISPATCH_HELD_WINDOW);
    job_end(j); /* not done: changed since the load; its next message decides */
}

/* The rules say not before UNTIL_MS (ms since the epoch): the call waits
 * PENDING with holdReason REASON (a string literal), unpublished until due. */
static void hold(struct job *j, long long until_ms, const char *reason)
{
    if (j->d->freeing) {
        job_end(j);
        return;
    }
    co_debug("call held", "call=%s attempt=%d reason=%s until_ms=%lld", j->id, j->attempt, reason,
             until_ms);
    j->hold_reason = reason;
    if (store_call_hold(j->d->pg, j->id, j->attempt, until_ms, reason, held, j) < 0)
        job_end(j); /* database down: the scheduler republishes it later */
}

static void expired_at_load(void *ctx, const struct store_err *e, bool done)
{
    struct job *j = ctx;
    if (e != NULL)
        co_warn("cannot expire call; the sweep ends it", "call=%s error=%s", j->id,
                CO_LOG_Q(e->msg));
    else if (done) {
        co_info("call expired before it could be dialled", "call=%s attempt=%d", j->id, j->attempt);
        shm_count(CNT_CALLS_EXPIRED);
    }
    job_end(j); /* not done: changed since the load; its next message decides */
}

/* The verdict of the calling window for call C at NOW (rules_check()),
 * from its stored zones (a JSON array) and window (JSON, or NULL for
 * [compliance]).  A malformed stored value is an error like a zone unknown
 * to tzdata: ERR says which. */
static enum rules_verdict window_verdict(const struct co_config *cfg,
                                         const struct store_call_state *c, time_t now,
                                         time_t *until, char *err, size_t errlen)
{
    const char *zones[RULES_MAX_ZONES];
    size_t n = 0;
    struct window w;
    enum rules_verdict v = RULES_ERROR;
    json_t *zj = json_loads(c->zones, 0, NULL);
    json_t *wj = c->window_json != NULL ? json_loads(c->window_json, 0, NULL) : NULL;

    snprintf(err, errlen, "stored timezones or callingWindow unreadable");
    if (!json_is_array(zj) || json_array_size(zj) > RULES_MAX_ZONES ||
        (c->window_json != NULL && wj == NULL))
        goto out;
    for (; n < json_array_size(zj); n++)
        if ((zones[n] = json_string_value(json_array_get(zj, n))) == NULL)
            goto out;
    if (wj != NULL && rules_window_from_json(wj, &w, err, errlen) < 0)
        goto out;
    v = rules_check(cfg, wj != NULL ? &w : NULL, zones, n, now, until, err, errlen);
out:
    json_decref(zj);
    json_decref(wj);
    return v;
}

/* Dial only inside the calling window, in every zone of the number. */
static void check_window(struct job *j, const struct store_call_state *c)
{
    char err[256];
    time_t now = time(NULL), until = now;
    enum rules_verdict v = window_verdict(j->d->cfg, c, now, &until, err, sizeof(err));
    if (v == RULES_DIAL) {
        acquire(j);
        return;
    }
    if (v == RULES_ERROR) {
        /* e.g. a zone removed from tzdata since the create: not dialled
         * blind; looked at again in an hour */
        co_warn("cannot check the calling window; call held for an hour", "call=%s error=%s", j->id,
                CO_LOG_Q(err));
        until = now + DISPATCH_RULES_ERROR_HOLD;
    }
    hold(j, (long long)until * 1000, "window");
}

/* A PAUSED campaign starts none of its calls, nor a CANCELLED one (its
 * PENDING calls are being cancelled); the publish query skips the same.
 * FINISHED is no hold: a call retried from its dead letters runs. */
static bool campaign_holds(const char *status)
{
    return status != NULL && (strcmp(status, "PAUSED") == 0 || strcmp(status, "CANCELLED") == 0);
}

static void loaded(void *ctx, const struct store_err *e, const struct store_call_state *c)
{
    struct job *j = ctx;
    struct dispatcher *d = j->d;
    if (e != NULL) {
        /* PostgreSQL holds the call: the scheduler republishes it */
        co_warn("cannot load call; skipped for now", "call=%s error=%s", j->id, CO_LOG_Q(e->msg));
        job_end(j);
        return;
    }
    if (c == NULL || strcmp(c->status, "PENDING") != 0 || c->attempts != j->attempt - 1 ||
        !c->due) {
        co_debug("message skipped: not a due PENDING call of this attempt", "call=%s attempt=%d",
                 j->id, j->attempt);
        shm_count(CNT_DISPATCH_SKIPPED);
        job_end(j);
        return;
    }
    if (shm_paused()) { /* callorchctl pause: nothing new starts */
        park(j, "dispatch paused");
        return;
    }
    if (campaign_holds(c->campaign_status)) {
        /* not started; the publish query leaves it alone until its
         * campaign runs again */
        shm_count(CNT_DEFERRED_CAMPAIGN_PAUSED);
        park(j, "campaign not running");
        return;
    }
    snprintf(j->to, sizeof(j->to), "%s", c->to);
    snprintf(j->campaign, sizeof(j->campaign), "%s", c->campaign_id ? c->campaign_id : "");
    j->campaign_max = c->campaign_max;
    j->campaign_cps = c->campaign_cps;
    if (c->expired) { /* the sweep would end it too; no slot for it meanwhile */
        if (store_call_expire(d->pg, j->id, j->attempt, expired_at_load, j) < 0)
            job_end(j); /* database down: the sweep ends it later */
        return;
    }
    if (c->listed) { /* no slot for a call that will not be dialled */
        if (store_call_suppress(d->pg, j->id, j->attempt, j->to, suppressed_at_load, j) < 0)
            job_end(j); /* database down: the scheduler republishes it later */
        return;
    }
    check_window(j, c);
}

/* ------------------------------------------------------------ messages */

/* {"id":"<uuid>","attempt":N}; 0 or -1 for a message nobody can use. */
static int parse_message(const rd_kafka_message_t *msg, struct job *j)
{
    json_t *doc = json_loadb(msg->payload, msg->len, 0, NULL);
    const char *id = json_string_value(json_object_get(doc, "id"));
    json_t *att = json_object_get(doc, "attempt");
    int ok = id != NULL && validate_uuid(id) && json_is_integer(att) &&
             json_integer_value(att) >= 1 && json_integer_value(att) <= 1000;
    if (ok) {
        snprintf(j->id, sizeof(j->id), "%s", id);
        j->attempt = (int)json_integer_value(att);
        /* a token of this job's own: see calls.slot_owner in 002_dispatch.sql */
        static unsigned long jobs_seen;
        snprintf(j->owner, sizeof(j->owner), "%s.%lx.%lx", id, (unsigned long)getpid(),
                 ++jobs_seen);
    }
    json_decref(doc);
    return ok ? 0 : -1;
}

static void on_message(const rd_kafka_message_t *msg, void *arg)
{
    struct dispatcher *d = arg;
    struct job *j = calloc(1, sizeof(*j));
    if (j == NULL) {
        co_error("out of memory for a message; it will be redelivered", NULL);
        return;
    }
    j->d = d;
    j->mark = offsets_track(d->offsets, msg->partition, msg->offset);
    d->jobs++;
    if (j->mark == NULL || parse_message(msg, j) < 0) {
        co_warn("malformed message skipped", "partition=%d offset=%lld", (int)msg->partition,
                (long long)msg->offset);
        job_end(j);
        return;
    }
    if (offsets_in_flight(d->offsets) >= DISPATCH_MAX_IN_FLIGHT)
        kafka_consumer_pause(d->consumer, 1);
    if (store_call_load(d->pg, j->id, loaded, j) < 0)
        job_end(j); /* database down: the scheduler republishes it later */
}

static void on_revoke(void *arg, int32_t partition)
{
    struct dispatcher *d = arg;
    offsets_forget(d->offsets, partition);
}

/* ------------------------------------------------------------ set up */

struct dispatcher *dispatcher_new(struct ev_loop *loop, const struct co_config *cfg, char *err,
                                  size_t errlen)
{
    struct pg_pool_opts opts;
    struct redis_opts ropts;
    struct dispatcher *d = calloc(1, sizeof(*d));
    if (d == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    d->loop = loop;
    d->cfg = cfg;
    pg_pool_opts_init(&opts);
    opts.size = cfg->pg_pool_size;
    opts.name = "dispatch";
    redis_opts_init(&ropts);
    ropts.name = "dispatch";
    if ((d->offsets = offsets_new()) == NULL ||
        (d->pg = pg_pool_new(loop, cfg->pg_conninfo, &opts, err, errlen)) == NULL ||
        (d->redis = redis_slots_new(loop, cfg, &ropts, err, errlen)) == NULL ||
        (d->provider = provider_new(loop, cfg, err, errlen)) == NULL ||
        (d->consumer = kafka_consumer_new(loop, cfg, on_message, d, err, errlen)) == NULL) {
        dispatcher_free(d);
        return NULL;
    }
    kafka_consumer_on_revoke(d->consumer, on_revoke, d);
    return d;
}

static void consumer_closed(void *arg)
{
    struct dispatcher *d = arg;
    if (d->stopped != NULL)
        d->stopped(d->stopped_arg);
}

static void maybe_stopped(struct dispatcher *d)
{
    if (d->stopping == DISPATCH_DRAINING && d->jobs == 0 && d->consumer != NULL) {
        d->stopping = DISPATCH_LEAVING; /* commits are sent: leave the group */
        kafka_consumer_close(d->consumer, consumer_closed, d);
    }
}

void dispatcher_stop(struct dispatcher *d, void (*done)(void *), void *arg)
{
    d->stopping = DISPATCH_DRAINING;
    d->stopped = done;
    d->stopped_arg = arg;
    kafka_consumer_pause(d->consumer, 1);
    co_info("dispatcher stopping", "jobs=%d", d->jobs);
    maybe_stopped(d);
}

void dispatcher_free(struct dispatcher *d)
{
    if (d == NULL)
        return;
    d->freeing = 1;
    while (d->waiting != NULL) { /* their leases expire; the scheduler reconciles */
        struct job *j = d->waiting;
        d->waiting = j->next_waiting;
        ev_timer_stop(d->loop, &j->reread);
        job_end(j);
    }
    /* the provider's in-flight requests fail through their callbacks, which
     * still need the pool, the Redis client and the offsets */
    provider_free(d->provider);
    kafka_consumer_free(d->consumer);
    d->consumer = NULL;
    redis_slots_free(d->redis);
    pg_pool_free(d->pg);
    offsets_free(d->offsets);
    free(d);
}
