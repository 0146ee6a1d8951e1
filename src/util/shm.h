/*
 * shm.h — the shared-memory segment the master maps before it forks.
 *
 * Owns: the counters and histograms every child adds to (summed across all
 * children by construction: there is one copy, updated with relaxed atomic
 * additions), the per-kind child restart counts the master keeps, and the
 * "dispatch paused" switch that `callorchctl pause` flips in the master and
 * every Kafka and scheduler child reads, and the count of slots freed by
 * finished attempts, which wakes the scheduler (metrics counters are for
 * people; this one is the scheduler's signal).  The segment is MAP_SHARED |
 * MAP_ANONYMOUS: it lives as long as the master and the children it forks,
 * survives reloads (new children inherit it), and is never written to disk.
 */
#ifndef CO_SHM_H
#define CO_SHM_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* Monotonic counters, exposed by GET /metrics. */
enum co_counter {
    CNT_CALLS_CREATED,
    CNT_DISPATCH_STARTED,     /* provider accepted the call (2xx) */
    CNT_DISPATCH_PARKED,      /* no slot / lock: back to the scheduler */
    CNT_DISPATCH_SKIPPED,     /* message for a call not due / not PENDING */
    CNT_DISPATCH_SUPPRESSED,  /* number on the do-not-call list: SUPPRESSED */
    CNT_PROVIDER_ERR_CONNECT, /* connection error or timeout */
    CNT_PROVIDER_ERR_5XX,
    CNT_PROVIDER_ERR_429,
    CNT_PROVIDER_ERR_4XX,  /* rejected: the call fails at once */
    CNT_RETRIES_SCHEDULED, /* an attempt ended and a retry was planned */
    CNT_WEBHOOKS_COMPLETED,
    CNT_WEBHOOKS_FAILED,
    CNT_WEBHOOKS_BUSY,
    CNT_WEBHOOKS_NO_ANSWER,
    CNT_WEBHOOKS_VOICEMAIL,
    CNT_WEBHOOKS_REJECTED,
    CNT_WEBHOOKS_INVALID_NUMBER,
    CNT_WEBHOOKS_DUPLICATE, /* webhook-id seen before, or attempt already ended */
    CNT_WEBHOOK_REJ_MISSING_HEADER,
    CNT_WEBHOOK_REJ_MALFORMED,
    CNT_WEBHOOK_REJ_STALE,
    CNT_WEBHOOK_REJ_SIGNATURE,
    CNT_WEBHOOK_REJ_API_KEY,
    CNT_RECLAIMS,
    CNT_SCHED_PUBLISHED,
    CNT_CALLS_EXPIRED,            /* ended EXPIRED: by the sweep or at dial time */
    CNT_DISPATCH_HELD_WINDOW,     /* held: outside the calling window */
    CNT_DISPATCH_HELD_FREQUENCY,  /* held: the number's attempt cap */
    CNT_DEFERRED_PACING,          /* parked: a pacing window was full */
    CNT_DEFERRED_CAMPAIGN_FULL,   /* parked: its campaign's maxConcurrent */
    CNT_DEFERRED_PROVIDER_429,    /* parked: the provider's 429 pause */
    CNT_DEFERRED_CAMPAIGN_PAUSED, /* parked: its campaign is not RUNNING */
    CNT_EVENTS_DELIVERED,         /* client events answered 2xx */
    CNT_EVENTS_FAILED,            /* client events given up after [events] max_age */
    CNT_MAX
};

/* HTTP requests by route and status class. */
enum co_route {
    RT_CALLS_CREATE,
    RT_CALLS_LIST,
    RT_CALL_GET,
    RT_CALL_PATCH,
    RT_CALL_CANCEL,
    RT_WEBHOOK,
    RT_METRICS_JSON,
    RT_METRICS,
    RT_HEALTHZ,
    RT_READYZ,
    RT_OTHER,
    RT_MAX
};
#define SHM_STATUS_CLASSES 5 /* 1xx..5xx */

/* Request duration buckets, upper bounds in seconds (Prometheus "le"). */
#define SHM_DURATION_BUCKETS 12
extern const double shm_duration_bounds[SHM_DURATION_BUCKETS];

#define SHM_CHILD_KINDS 4   /* http, kafka, sched, events (child.h) */
#define SHM_HTTP_WORKERS 64 /* CO_MAX_HTTP_WORKERS (asserted in shm.c) */

struct co_shm {
    atomic_int paused;                /* 1: no new call starts anywhere */
    atomic_int slots_in_use;          /* last value a child read from Redis */
    atomic_uint_fast64_t slots_freed; /* attempts finished (attempt.c): each freed a slot */
    atomic_uint_fast64_t counters[CNT_MAX];
    atomic_uint_fast64_t http_requests[RT_MAX][SHM_STATUS_CLASSES];
    atomic_uint_fast64_t http_duration[SHM_DURATION_BUCKETS + 1]; /* last: +Inf */
    atomic_uint_fast64_t http_duration_sum_us;
    atomic_uint_fast64_t http_worker_requests[SHM_HTTP_WORKERS]; /* by slot: the spread */
    atomic_uint_fast64_t child_restarts[SHM_CHILD_KINDS];
    atomic_llong events_pending; /* client events pending, as the events child last
                                    counted them; -1 unknown */
};

/* The process's segment; NULL before shm_init() (then updates are no-ops,
 * which keeps unit tests and tools that never map it simple). */
extern struct co_shm *co_shm;

/* Map the segment (master, before the first fork).  0 or -1 with errno. */
int shm_init(void);

static inline void shm_count(enum co_counter c)
{
    if (co_shm != NULL)
        atomic_fetch_add_explicit(&co_shm->counters[c], 1, memory_order_relaxed);
}

static inline uint64_t shm_get(enum co_counter c)
{
    return co_shm ? atomic_load_explicit(&co_shm->counters[c], memory_order_relaxed) : 0;
}

/* A finished attempt freed its slot (the scheduler's wake-up signal). */
static inline void shm_slot_freed(void)
{
    if (co_shm != NULL)
        atomic_fetch_add_explicit(&co_shm->slots_freed, 1, memory_order_relaxed);
}

/* Slots freed by finished attempts since the segment was mapped. */
static inline uint64_t shm_slots_freed(void)
{
    return co_shm ? atomic_load_explicit(&co_shm->slots_freed, memory_order_relaxed) : 0;
}

/* The events child's count of pending client events (-1: unknown). */
static inline void shm_set_events_pending(long long n)
{
    if (co_shm != NULL)
        atomic_store_explicit(&co_shm->events_pending, n, memory_order_relaxed);
}

static inline int shm_paused(void)
{
    return co_shm != NULL && atomic_load_explicit(&co_shm->paused, memory_order_relaxed);
}

/* Record one HTTP request: ROUTE, STATUS, SECONDS it took. */
void shm_http_request(enum co_route route, int status, double seconds);

/* Count one request answered by the http worker of SLOT. */
static inline void shm_http_worker_request(int slot)
{
    if (co_shm != NULL && slot >= 0 && slot < SHM_HTTP_WORKERS)
        atomic_fetch_add_explicit(&co_shm->http_worker_requests[slot], 1, memory_order_relaxed);
}

/* The Prometheus text exposition of everything above plus the gauges the
 * caller read (calls by status, max slots).  Returns a malloc'd string. */
/* STORE_STATUSES (asserted in api_ops.c). */
#define SHM_STATUSES 7
struct shm_gauges {
    long long by_status[SHM_STATUSES]; /* PENDING, IN_PROGRESS, COMPLETED, FAILED, CANCELLED,
                                        * SUPPRESSED, EXPIRED; -1 unknown */
    int slots_in_use;                  /* -1 unknown */
    int max_slots;
};
char *shm_prometheus(const struct shm_gauges *g, size_t *len);

#endif
