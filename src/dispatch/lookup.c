/*
 * lookup.c — status lookups of attempts with an unknown outcome (lookup.h).
 *
 * Owns: the claim round, one struct lk per attempt looked up (copies of its
 * row: the claim's rows live only during the callback), and the decision
 * table of lookup.h.
 */
#include "dispatch/lookup.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dispatch/attempt.h"
#include "dispatch/provider.h"
#include "dispatch/slots.h"
#include "store/attempts.h"
#include "util/log.h"
#include "util/timeutil.h"
#include "util/tunables.h"

struct lookups {
    struct ev_loop *loop;
    const struct co_config *cfg;
    struct pg_pool *pg;
    struct redis_slots *redis;
    struct provider *provider;
    int claiming;  /* a claim statement is in flight */
    int in_flight; /* attempts being looked up */
    int freeing;
};

struct lk {
    struct lookups *l;
    char *id, *to, *script_id, *metadata, *owner;
    int attempt;
    int past_deadline;
};

static void lk_free(struct lk *k)
{
    k->l->in_flight--;
    free(k->id);
    free(k->to);
    free(k->script_id);
    free(k->metadata);
    free(k->owner);
    free(k);
}

/* Keep what we hold: the slot and lock outlive the next lookup, however
 * long [provider] timeout makes the interval between two. */
static void keep_lease(struct lk *k)
{
    double lease = k->l->cfg->call_timeout + co_tunables.lease_margin;
    if (redis_slots_extend(k->l->redis, k->owner, k->attempt, k->to, lease, NULL, NULL) < 0)
        co_warn("cannot extend the lease of a call of unknown outcome", "call=%s attempt=%d", k->id,
                k->attempt);
}

/* ------------------------------------------------------------ outcomes */

static void ended(void *ctx, const struct store_err *e, const char *status)
{
    struct lk *k = ctx;
    if (e != NULL)
        co_warn("cannot settle a looked-up attempt; looked up again later",
                "call=%s attempt=%d error=%s", k->id, k->attempt, CO_LOG_Q(e->msg));
    else if (status != NULL)
        co_info("attempt of unknown outcome ended", "call=%s attempt=%d status=%s", k->id,
                k->attempt, status);
    lk_free(k);
}

/* Certainly not live at the provider: end the attempt, free slot and lock. */
static void give_up(struct lk *k, const char *reason, const char *error, int retry,
                    double retry_after)
{
    const struct co_config *cfg = k->l->cfg;
    struct store_settle how = {
        .id = k->id,
        .attempt = k->attempt,
        .reason = reason,
        .error = error,
        .retry = retry,
        .min_delay_ms = co_ms(retry_after),
        .backoff = { co_ms(cfg->backoff_base), co_ms(cfg->backoff_max) },
        /* TIMEOUT has a [retry] rule; a refused start keeps the backoff */
        .retry_ms = attempt_retry_ms(cfg, reason),
    };
    struct attempt_end end = {
        .call_id = k->id,
        .attempt = k->attempt,
        .to = k->to,
        .owner = k->owner,
        .noticed_by = "status lookup",
        .settle = &how,
    };
    if (attempt_finished(k->l->pg, k->l->redis, &end, ended, k) < 0)
        lk_free(k);
}

static void applied(void *ctx, const struct store_err *e, const struct store_webhook_result *r)
{
    struct lk *k = ctx;
    if (e != NULL || r == NULL) {
        co_warn("cannot settle a looked-up attempt; looked up again later",
                "call=%s attempt=%d error=%s", k->id, k->attempt, CO_LOG_Q(e ? e->msg : "no row"));
    } else if (strcmp(r->result, "applied") == 0) {
        co_info("attempt of unknown outcome settled by a status lookup",
                "call=%s attempt=%d status=%s", k->id, k->attempt, r->status);
        struct attempt_end end = {
            .call_id = k->id,
            .attempt = k->attempt,
            .to = k->to,
            .owner = k->owner,
            .noticed_by = "status lookup",
            .status = r->status,
        };
        attempt_finished(k->l->pg, k->l->redis, &end, NULL, NULL);
    }
    lk_free(k);
}

static void learnt(void *ctx, const struct store_err *e)
{
    struct lk *k = ctx;
    if (e != NULL)
        co_warn("cannot record the provider's call id", "call=%s attempt=%d error=%s", k->id,
                k->attempt, CO_LOG_Q(e->msg));
    lk_free(k);
}

/* The provider holds the call: record its id; a final status settles it. */
static void found(struct lk *k, const struct provider_lookup_result *r)
{
    if (r->final) {
        struct store_webhook w = {
            .ref_id = k->id,
            .ref_attempt = k->attempt,
            .call_id = r->call_id,
            .outcome = r->status,
            .backoff = { co_ms(k->l->cfg->backoff_base), co_ms(k->l->cfg->backoff_max) },
            .retry_ms = attempt_retry_ms(k->l->cfg, r->status),
        };
        if (store_webhook_apply(k->l->pg, &w, applied, k) < 0)
            lk_free(k);
        return;
    }
    co_info("call of unknown outcome is live at the provider",
            "call=%s attempt=%d externalCallId=%s status=%s", k->id, k->attempt,
            CO_LOG_Q(r->call_id), r->status);
    keep_lease(k);
    /* before call_timeout the webhook or the reclaim's lookup ends it;
     * past it, it stays unknown and is looked up again */
    if (store_attempt_learnt(k->l->pg, k->id, k->attempt, r->call_id, !k->past_deadline, learnt,
                             k) < 0)
        lk_free(k);
}

/* The lookups are being freed: K's answer is dropped (freed), true. */
static bool dropped(struct lk *k)
{
    if (!k->l->freeing)
        return false;
    lk_free(k);
    return true;
}

static void restarted(void *arg, const struct provider_result *r)
{
    struct lk *k = arg;
    if (dropped(k))
        return;
    switch (r->outcome) {
    case PROVIDER_STARTED:
        co_info("call started again after a lost answer", "call=%s attempt=%d externalCallId=%s",
                k->id, k->attempt, CO_LOG_Q(r->call_id));
        if (store_attempt_learnt(k->l->pg, k->id, k->attempt, r->call_id, 1, learnt, k) < 0)
            lk_free(k);
        return;
    case PROVIDER_RETRY:
    case PROVIDER_REJECTED:
        co_warn("provider did not start the call", "call=%s attempt=%d error=%s", k->id, k->attempt,
                CO_LOG_Q(r->error));
        give_up(k, r->outcome == PROVIDER_RETRY ? "PROVIDER_ERROR" : "PROVIDER_REJECTED", r->error,
                r->outcome == PROVIDER_RETRY, r->retry_after);
        return;
    case PROVIDER_UNKNOWN:
        co_warn("answer of a repeated start unknown; looked up again later",
                "call=%s attempt=%d error=%s", k->id, k->attempt, CO_LOG_Q(r->error));
        lk_free(k);
        return;
    }
}

static void looked_up(void *arg, const struct provider_lookup_result *r)
{
    struct lk *k = arg;
    if (dropped(k))
        return;
    switch (r->outcome) {
    case LOOKUP_FOUND: found(k, r); return;
    case LOOKUP_NOT_FOUND:
        if (k->past_deadline) {
            co_warn("call reclaimed: the provider has no call for it after call_timeout",
                    "call=%s attempt=%d", k->id, k->attempt);
            give_up(k, "TIMEOUT", "timed out: the provider has no call for this attempt", 1, 0);
            return;
        }
        co_info("provider has no call for an attempt of unknown outcome; starting it again",
                "call=%s attempt=%d", k->id, k->attempt);
        keep_lease(k);
        struct provider_call call = {
            .call_id = k->id,
            .attempt = k->attempt,
            .to = k->to,
            .script_id = k->script_id,
            .metadata = k->metadata,
        };
        if (provider_start(k->l->provider, &call, restarted, k) < 0)
            lk_free(k);
        return;
    case LOOKUP_FAILED:
        co_warn("status lookup failed; looked up again later", "call=%s attempt=%d error=%s", k->id,
                k->attempt, CO_LOG_Q(r->error));
        keep_lease(k);
        lk_free(k);
        return;
    }
}

/* ---------------------------------------------------------------- claim */

static void claimed(void *ctx, const struct store_err *e, const struct store_lookup *rows, int n)
{
    struct lookups *l = ctx;
    l->claiming = 0;
    if (l->freeing)
        return;
    if (e != NULL) {
        co_warn("claiming status lookups failed", "error=%s", CO_LOG_Q(e->msg));
        return;
    }
    for (int i = 0; i < n; i++) {
        struct lk *k = calloc(1, sizeof(*k));
        if (k == NULL)
            return;
        l->in_flight++;
        k->l = l;
        k->attempt = rows[i].attempt;
        k->past_deadline = rows[i].past_deadline;
        k->id = strdup(rows[i].id);
        k->to = strdup(rows[i].to);
        k->script_id = strdup(rows[i].script_id);
        k->metadata = strdup(rows[i].metadata);
        k->owner = strdup(rows[i].slot_owner);
        if (k->id == NULL || k->to == NULL || k->script_id == NULL || k->metadata == NULL ||
            k->owner == NULL || provider_lookup(l->provider, k->id, k->attempt, looked_up, k) < 0)
            lk_free(k);
    }
}

void lookups_run(struct lookups *l)
{
    if (l == NULL || l->claiming || l->freeing || !provider_can_look_up(l->provider))
        return;
    const struct co_config *cfg = l->cfg;
    /* one lookup (its timeout) and a tick between two of one attempt */
    long long every = co_ms(cfg->provider_timeout + cfg->scheduler_interval);
    l->claiming = 1;
    if (store_lookups_claim(l->pg, every, co_ms(cfg->call_timeout), LOOKUP_MAX_BATCH, claimed, l) <
        0)
        l->claiming = 0;
}

int lookups_enabled(const struct lookups *l)
{
    return l != NULL && provider_can_look_up(l->provider);
}

struct lookups *lookups_new(struct ev_loop *loop, const struct co_config *cfg, struct pg_pool *pg,
                            struct redis_slots *redis, char *err, size_t errlen)
{
    struct lookups *l = calloc(1, sizeof(*l));
    if (l == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    l->loop = loop;
    l->cfg = cfg;
    l->pg = pg;
    l->redis = redis;
    if ((l->provider = provider_new(loop, cfg, err, errlen)) == NULL) {
        free(l);
        return NULL;
    }
    return l;
}

void lookups_free(struct lookups *l)
{
    if (l == NULL)
        return;
    l->freeing = 1;
    provider_free(l->provider);
    free(l);
}
