/*
 * api_ops.c — the operational endpoints: /healthz, /readyz, the JSON
 * /api/v1/metrics and the Prometheus /metrics (counts by status, slots).
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api/api.h"
#include "dispatch/slots.h"
#include "net/kafka_producer.h"
#include "store/calls.h"
#include "util/shm.h"

void api_ops_healthz(struct api *api, struct http_request *req)
{
    char body[64];
    /* the pid tells operators (and tests) which worker answered */
    int n = snprintf(body, sizeof(body), "{\"status\":\"ok\",\"pid\":%ld}", (long)getpid());
    api_json(req, 200, body, (size_t)n, NULL);
}

void api_ops_readyz(struct api *api, struct http_request *req)
{
    char body[200];
    int up = pg_pool_is_up(api->pg);
    /* readiness is PostgreSQL's: a 201 needs only it; Redis and Kafka are
     * reported for the operator */
    int n = snprintf(body, sizeof(body),
                     "{\"status\":\"%s\",\"postgres\":\"%s\",\"redis\":\"%s\","
                     "\"kafkaPending\":%d}",
                     up ? "ready" : "unavailable", up ? "up" : "down",
                     redis_slots_is_up(api->redis) ? "up" : "down",
                     kafka_producer_pending(api->producer));
    if (up) {
        api_json(req, 200, body, (size_t)n, NULL);
    } else {
        char ra[32];
        snprintf(ra, sizeof(ra), "Retry-After: %d\r\n", API_RETRY_AFTER);
        api_json(req, 503, body, (size_t)n, ra);
    }
}

/*
 * Both metrics endpoints read the slots in Redis first (-1 while Redis is
 * down), then the counts by status from PostgreSQL (the counters the
 * triggers of sql/005_status_counts.sql keep: a few hundred rows, never a
 * count of the calls table), then RENDER answers.
 *
 * The counts query is shared: one at a time per process.  Requests that
 * arrive while it runs wait for the next one, sent when it returns, so
 * every answer still comes from a snapshot taken after its request
 * arrived, and clients polling in a loop hold one pool connection per
 * worker, not one each: the connections stay free for POSTs.
 */
struct metrics_req;
typedef void (*metrics_render_fn)(struct metrics_req *m, const long long counts[STORE_STATUSES]);

struct metrics_req {
    struct api *api;
    struct http_request *req;
    metrics_render_fn render;
    int in_flight;            /* slots in use; -1: unknown */
    struct metrics_req *next; /* in counts_queue */
};

/* This process's shared counts query (one struct api per http worker). */
static struct {
    bool sent;                   /* a query is out: RUNNING waits for it */
    struct metrics_req *running; /* answered by the query out */
    struct metrics_req *waiting; /* answered by the next query */
} counts_queue;

/* The Prometheus gauges are the counts by status, in the same order. */
_Static_assert(SHM_STATUSES == STORE_STATUSES, "the /metrics gauges are the statuses we count");

static void counted(struct metrics_req *m, const long long counts[STORE_STATUSES])
{
    char body[512], in_flight[16] = "null";
    if (m->in_flight >= 0)
        snprintf(in_flight, sizeof(in_flight), "%d", m->in_flight);
    int n = snprintf(body, sizeof(body),
                     "{\"PENDING\":%lld,\"IN_PROGRESS\":%lld,\"COMPLETED\":%lld,"
                     "\"FAILED\":%lld,\"CANCELLED\":%lld,\"SUPPRESSED\":%lld,"
                     "\"EXPIRED\":%lld,\"inFlight\":%s,\"maxConcurrent\":%d}",
                     counts[0], counts[1], counts[2], counts[3], counts[4], counts[5], counts[6],
                     in_flight, m->api->cfg->max_concurrent_calls);
    api_json(m->req, 200, body, (size_t)n, NULL);
}

static void prometheus_counted(struct metrics_req *m, const long long counts[STORE_STATUSES])
{
    struct shm_gauges g = { .slots_in_use = m->in_flight,
                            .max_slots = m->api->cfg->max_concurrent_calls };
    memcpy(g.by_status, counts, sizeof(g.by_status));
    size_t len;
    char *text = shm_prometheus(&g, &len);
    if (text == NULL) {
        api_internal_error(m->req, "metrics", "out of memory");
        return;
    }
    http_respond(m->req, 200, "text/plain; version=0.0.4; charset=utf-8", NULL, text, len);
    free(text);
}

static void counts_send(struct pg_pool *pg);

/* The shared query returned: answer every request that waited for it,
 * then send the next one if requests arrived meanwhile. */
/* Answer every request of the query that was out (detached first: an
 * answer may start another metrics request, which joins the waiting list
 * or sends a query of its own): with COUNTS, else the error E, else 503. */
static void answer_running(const struct store_err *e, const long long *counts)
{
    struct metrics_req *list = counts_queue.running;
    counts_queue.running = NULL;
    counts_queue.sent = false;
    while (list != NULL) {
        struct metrics_req *m = list;
        list = m->next;
        if (counts != NULL)
            m->render(m, counts);
        else if (e != NULL)
            api_store_failed(m->req, e, "query");
        else
            api_unavailable(m->req, API_DB_UNREACHABLE);
        free(m);
    }
}

/* The shared query returned: answer every request that waited for it,
 * then send the next one if requests arrived meanwhile. */
static void statuses_counted(void *ctx, const struct store_err *e,
                             const long long counts[STORE_STATUSES])
{
    struct pg_pool *pg = ctx;
    answer_running(e, e != NULL ? NULL : counts);
    if (counts_queue.waiting != NULL && !counts_queue.sent)
        counts_send(pg);
}

/* Send one counts query for every waiting request. */
static void counts_send(struct pg_pool *pg)
{
    counts_queue.running = counts_queue.waiting;
    counts_queue.waiting = NULL;
    counts_queue.sent = true;
    if (store_calls_count(pg, statuses_counted, pg) < 0)
        answer_running(NULL, NULL);
}

static void slots_counted(void *arg, int in_use, const char *err)
{
    struct metrics_req *m = arg;
    m->in_flight = err != NULL ? -1 : in_use;
    if (err == NULL && co_shm != NULL)
        atomic_store(&co_shm->slots_in_use, in_use);
    /* while the API is freed, Redis fails this request: answer it, and
     * leave the pool (maybe freed already) alone */
    if (m->api->closing) {
        api_unavailable(m->req, API_DB_UNREACHABLE);
        free(m);
        return;
    }
    m->next = counts_queue.waiting;
    counts_queue.waiting = m;
    if (!counts_queue.sent)
        counts_send(m->api->pg);
}

static void read_slots_then(struct api *api, struct http_request *req, metrics_render_fn render)
{
    struct metrics_req *m = malloc(sizeof(*m));
    if (m == NULL) {
        api_internal_error(req, "metrics", "out of memory");
        return;
    }
    m->api = api;
    m->req = req;
    m->render = render;
    if (redis_slots_count(api->redis, slots_counted, m) < 0)
        slots_counted(m, 0, "redis unavailable");
}

void api_ops_metrics_json(struct api *api, struct http_request *req)
{
    read_slots_then(api, req, counted);
}

void api_ops_prometheus(struct api *api, struct http_request *req)
{
    read_slots_then(api, req, prometheus_counted);
}
