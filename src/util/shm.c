/*
 * shm.c — the shared counters and their Prometheus exposition (shm.h).
 */
#include "util/shm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "util/config.h"
#include "util/strbuf.h"

_Static_assert(SHM_HTTP_WORKERS == CO_MAX_HTTP_WORKERS, "a request counter per http worker slot");

struct co_shm *co_shm;

const double shm_duration_bounds[SHM_DURATION_BUCKETS] = {
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
};

int shm_init(void)
{
    void *p = mmap(NULL, sizeof(struct co_shm), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                   -1, 0);
    if (p == MAP_FAILED)
        return -1;
    memset(p, 0, sizeof(struct co_shm)); /* atomics of all-zero bits are 0 */
    co_shm = p;
    atomic_store(&co_shm->events_pending, -1);
    return 0;
}

void shm_http_request(enum co_route route, int status, double seconds)
{
    if (co_shm == NULL || route < 0 || route >= RT_MAX)
        return;
    int cls = status / 100 - 1;
    if (cls < 0 || cls >= SHM_STATUS_CLASSES)
        cls = SHM_STATUS_CLASSES - 1;
    atomic_fetch_add_explicit(&co_shm->http_requests[route][cls], 1, memory_order_relaxed);
    int b = 0;
    while (b < SHM_DURATION_BUCKETS && seconds > shm_duration_bounds[b])
        b++;
    atomic_fetch_add_explicit(&co_shm->http_duration[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&co_shm->http_duration_sum_us, (uint_fast64_t)(seconds * 1e6),
                              memory_order_relaxed);
}

/* ------------------------------------------------------------ exposition */

static void family(struct strbuf *o, const char *name, const char *type, const char *help)
{
    strbuf_addf(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void labelled(struct strbuf *o, const char *name, const char *label,
                     const char *const *values, const enum co_counter *counters, int n)
{
    for (int i = 0; i < n; i++)
        strbuf_addf(o, "%s{%s=\"%s\"} %llu\n", name, label, values[i],
                    (unsigned long long)shm_get(counters[i]));
}

static void events_section(struct strbuf *o)
{
    family(o, "callorch_events_delivered_total", "counter",
           "Client events delivered (the receiver answered 2xx).");
    strbuf_addf(o, "callorch_events_delivered_total %llu\n",
                (unsigned long long)shm_get(CNT_EVENTS_DELIVERED));
    family(o, "callorch_events_failed_total", "counter",
           "Client events given up after [events] max_age.");
    strbuf_addf(o, "callorch_events_failed_total %llu\n",
                (unsigned long long)shm_get(CNT_EVENTS_FAILED));
    family(o, "callorch_events_pending", "gauge",
           "Client events waiting for delivery, as the events child last counted them.");
    long long pending = atomic_load(&co_shm->events_pending);
    if (pending >= 0)
        strbuf_addf(o, "callorch_events_pending %lld\n", pending);
}

static void counters_section(struct strbuf *o)
{
    family(o, "callorch_calls_created_total", "counter", "Calls accepted by POST /api/v1/calls.");
    strbuf_addf(o, "callorch_calls_created_total %llu\n",
                (unsigned long long)shm_get(CNT_CALLS_CREATED));

    static const char *const outcomes[] = { "started", "parked", "skipped", "suppressed" };
    static const enum co_counter oc[] = { CNT_DISPATCH_STARTED, CNT_DISPATCH_PARKED,
                                          CNT_DISPATCH_SKIPPED, CNT_DISPATCH_SUPPRESSED };
    family(o, "callorch_dispatch_total", "counter", "Kafka messages handled, by outcome.");
    labelled(o, "callorch_dispatch_total", "outcome", outcomes, oc, 4);

    static const char *const classes[] = { "connect", "5xx", "429", "4xx" };
    static const enum co_counter pc[] = { CNT_PROVIDER_ERR_CONNECT, CNT_PROVIDER_ERR_5XX,
                                          CNT_PROVIDER_ERR_429, CNT_PROVIDER_ERR_4XX };
    family(o, "callorch_provider_errors_total", "counter",
           "Call starts the provider did not accept, by class.");
    labelled(o, "callorch_provider_errors_total", "class", classes, pc, 4);

    family(o, "callorch_retries_total", "counter", "Attempts that ended with a retry planned.");
    strbuf_addf(o, "callorch_retries_total %llu\n",
                (unsigned long long)shm_get(CNT_RETRIES_SCHEDULED));

    static const char *const wstatus[] = { "COMPLETED", "FAILED",   "BUSY",           "NO_ANSWER",
                                           "VOICEMAIL", "REJECTED", "INVALID_NUMBER", "duplicate" };
    static const enum co_counter wc[] = { CNT_WEBHOOKS_COMPLETED,      CNT_WEBHOOKS_FAILED,
                                          CNT_WEBHOOKS_BUSY,           CNT_WEBHOOKS_NO_ANSWER,
                                          CNT_WEBHOOKS_VOICEMAIL,      CNT_WEBHOOKS_REJECTED,
                                          CNT_WEBHOOKS_INVALID_NUMBER, CNT_WEBHOOKS_DUPLICATE };
    family(o, "callorch_webhooks_total", "counter", "Provider webhooks accepted, by status.");
    labelled(o, "callorch_webhooks_total", "status", wstatus, wc, 8);

    static const char *const reasons[] = { "missing_header", "malformed", "stale_timestamp",
                                           "bad_signature", "api_key" };
    static const enum co_counter rc[] = { CNT_WEBHOOK_REJ_MISSING_HEADER, CNT_WEBHOOK_REJ_MALFORMED,
                                          CNT_WEBHOOK_REJ_STALE, CNT_WEBHOOK_REJ_SIGNATURE,
                                          CNT_WEBHOOK_REJ_API_KEY };
    family(o, "callorch_webhook_rejections_total", "counter",
           "Webhooks refused with 401, by reason.");
    labelled(o, "callorch_webhook_rejections_total", "reason", reasons, rc, 5);

    family(o, "callorch_reclaims_total", "counter",
           "IN_PROGRESS calls reclaimed after call_timeout without a webhook.");
    strbuf_addf(o, "callorch_reclaims_total %llu\n", (unsigned long long)shm_get(CNT_RECLAIMS));
    family(o, "callorch_scheduler_published_total", "counter",
           "Due calls the scheduler handed to Kafka.");
    strbuf_addf(o, "callorch_scheduler_published_total %llu\n",
                (unsigned long long)shm_get(CNT_SCHED_PUBLISHED));

    family(o, "callorch_calls_expired_total", "counter",
           "Calls ended EXPIRED: their expiresAt passed before they finished.");
    strbuf_addf(o, "callorch_calls_expired_total %llu\n",
                (unsigned long long)shm_get(CNT_CALLS_EXPIRED));
    static const char *const holds[] = { "window", "frequency" };
    static const enum co_counter hc[] = { CNT_DISPATCH_HELD_WINDOW, CNT_DISPATCH_HELD_FREQUENCY };
    family(o, "callorch_dispatch_held_total", "counter",
           "Calls held at dial time by the compliance rules, by holdReason.");
    labelled(o, "callorch_dispatch_held_total", "reason", holds, hc, 2);
    static const char *const defers[] = { "pacing", "campaign_full", "provider_429",
                                          "campaign_paused" };
    static const enum co_counter dc[] = { CNT_DEFERRED_PACING, CNT_DEFERRED_CAMPAIGN_FULL,
                                          CNT_DEFERRED_PROVIDER_429, CNT_DEFERRED_CAMPAIGN_PAUSED };
    family(o, "callorch_dispatch_deferred_total", "counter",
           "Calls parked by a limit (not an error: published again), by reason.");
    labelled(o, "callorch_dispatch_deferred_total", "reason", defers, dc, 4);

    events_section(o);
}

static const char *const route_names[RT_MAX] = {
    "calls_create", "calls_list", "call_get", "call_patch", "call_cancel", "webhook",
    "metrics_json", "metrics",    "healthz",  "readyz",     "other",
};

static void http_section(struct strbuf *o)
{
    family(o, "callorch_http_requests_total", "counter",
           "HTTP requests, by route and status class.");
    for (int r = 0; r < RT_MAX; r++)
        for (int c = 0; c < SHM_STATUS_CLASSES; c++)
            strbuf_addf(o, "callorch_http_requests_total{route=\"%s\",code=\"%dxx\"} %llu\n",
                        route_names[r], c + 1,
                        (unsigned long long)atomic_load(&co_shm->http_requests[r][c]));
    family(o, "callorch_http_request_duration_seconds", "histogram",
           "Time from a complete request to its answer.");
    unsigned long long cum = 0;
    for (int b = 0; b <= SHM_DURATION_BUCKETS; b++) {
        cum += atomic_load(&co_shm->http_duration[b]);
        if (b < SHM_DURATION_BUCKETS)
            strbuf_addf(o, "callorch_http_request_duration_seconds_bucket{le=\"%g\"} %llu\n",
                        shm_duration_bounds[b], cum);
        else
            strbuf_addf(o, "callorch_http_request_duration_seconds_bucket{le=\"+Inf\"} %llu\n",
                        cum);
    }
    strbuf_addf(o, "callorch_http_request_duration_seconds_sum %.6f\n",
                (double)atomic_load(&co_shm->http_duration_sum_us) / 1e6);
    strbuf_addf(o, "callorch_http_request_duration_seconds_count %llu\n", cum);
    /* only the slots that answered something: the count of workers is
     * the config's, which this segment does not know */
    family(o, "callorch_http_worker_requests_total", "counter",
           "HTTP requests answered, by http worker slot.");
    for (int w = 0; w < SHM_HTTP_WORKERS; w++) {
        unsigned long long n = atomic_load(&co_shm->http_worker_requests[w]);
        if (n > 0)
            strbuf_addf(o, "callorch_http_worker_requests_total{worker=\"%d\"} %llu\n", w, n);
    }
}

static void gauges_section(struct strbuf *o, const struct shm_gauges *g)
{
    static const char *const kinds[SHM_CHILD_KINDS] = { "http", "kafka", "sched", "events" };
    family(o, "callorch_child_restarts_total", "counter",
           "Children respawned by the master, by kind.");
    for (int k = 0; k < SHM_CHILD_KINDS; k++)
        strbuf_addf(o, "callorch_child_restarts_total{kind=\"%s\"} %llu\n", kinds[k],
                    (unsigned long long)atomic_load(&co_shm->child_restarts[k]));

    static const char *const st[] = { "PENDING",   "IN_PROGRESS", "COMPLETED", "FAILED",
                                      "CANCELLED", "SUPPRESSED",  "EXPIRED" };
    _Static_assert(sizeof(st) / sizeof(st[0]) >= SHM_STATUSES, "a name per status");
    family(o, "callorch_calls", "gauge", "Calls in PostgreSQL, by status.");
    for (int i = 0; i < SHM_STATUSES; i++)
        if (g->by_status[i] >= 0)
            strbuf_addf(o, "callorch_calls{status=\"%s\"} %lld\n", st[i], g->by_status[i]);
    family(o, "callorch_slots_in_use", "gauge", "Global call slots held in Redis.");
    if (g->slots_in_use >= 0)
        strbuf_addf(o, "callorch_slots_in_use %d\n", g->slots_in_use);
    family(o, "callorch_slots_max", "gauge", "[dispatch] max_concurrent_calls.");
    strbuf_addf(o, "callorch_slots_max %d\n", g->max_slots);
    family(o, "callorch_dispatch_paused", "gauge", "1 while callorchctl pause is in effect.");
    strbuf_addf(o, "callorch_dispatch_paused %d\n", shm_paused());
}

char *shm_prometheus(const struct shm_gauges *g, size_t *len)
{
    struct strbuf o = { 0 };
    if (co_shm == NULL)
        return NULL;
    counters_section(&o);
    http_section(&o);
    gauges_section(&o, g);
    *len = o.len;
    return strbuf_take(&o); /* NULL when out of memory */
}
